/* Identity: login, refresh, logout, passwords and TOTP enrolment. Every failed login answers the same
 * UNAUTHENTICATED "invalid credentials" (or RESOURCE_EXHAUSTED while locked out) whether the user exists, is
 * disabled, or gave a wrong password or second factor, and costs the same argon2id time. */
#include "service_internal.h"

#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD_CREDENTIALS "invalid credentials"

/* The source of a login for throttling: the end user's address when the gateway forwards it (the gateway
 * carries every end user over its own connection, so its service identity alone would make one source of
 * all of them), else the calling service. Only the gateway is trusted to name an address. */
static const char *login_source(rpc_ctx *ctx)
{
    const char *p = rpc_ctx_peer_service(ctx);
    const char *addr = rpc_ctx_client_addr(ctx);
    const char *from = p && p[0] ? p : "local";
    if (strcmp(from, "gateway") == 0 && addr[0]) {
        const char *src = rpc_ctx_printf(ctx, "addr:%s", addr);
        return src ? src : from;
    }
    return from;
}

static bool text_ok(const char *s, size_t min, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n >= min && n <= max;
}

/* argon2id under the concurrency cap. */
static base_result verify_password(idn_service *s, const char *encoded, const char *password, bool *rehash)
{
    sem_wait(&s->argon_slots);
    base_result r = encoded ? cred_password_verify(&s->argon, encoded, password, strlen(password), rehash)
                            : cred_password_verify_unknown(&s->argon, password, strlen(password));
    sem_post(&s->argon_slots);
    return r;
}

static base_result hash_password(idn_service *s, const char *password, char out[CRED_PASSWORD_HASH_MAX])
{
    sem_wait(&s->argon_slots);
    base_result r = cred_password_hash(&s->argon, password, strlen(password), out);
    sem_post(&s->argon_slots);
    return r;
}

/* The second factor: a TOTP code (replay-safe across replicas) or a one-time recovery code. */
static base_result verify_second_factor(idn_service *s, const char *tenant, const char *principal,
                                        const char *totp_code, const char *recovery_code)
{
    if (totp_code && totp_code[0]) {
        identity_totp t;
        BASE_GUARD(identity_store_totp_get(s->pool, tenant, principal, &t));
        BASE_ENSURE(t.confirmed, BASE_ERR_UNAUTH, BAD_CREDENTIALS);
        acrypto_secret *secret = NULL;
        BASE_GUARD(cred_totp_open(s->totp_key, tenant, principal, t.sealed_secret, t.sealed_len, &secret));
        int64_t step = 0;
        base_result r = cred_totp_verify(secret, totp_code, idn_now(), t.last_step, &step);
        acrypto_secret_free(secret);
        BASE_GUARD(r);
        bool ok = false;
        BASE_GUARD(identity_store_totp_use_step(s->pool, tenant, principal, step, &ok));
        BASE_ENSURE(ok, BASE_ERR_UNAUTH, BAD_CREDENTIALS);
        return BASE_OK_RESULT;
    }
    if (recovery_code && recovery_code[0]) {
        identity_recovery_codes codes;
        BASE_GUARD(identity_store_recovery_codes_list(s->pool, tenant, principal, &codes));
        char hex[IDENTITY_RECOVERY_CODES_MAX][CRED_RECOVERY_HASH_HEX + 1];
        const char *stored[IDENTITY_RECOVERY_CODES_MAX];
        for (size_t i = 0; i < codes.n; i++) {
            size_t len = 0;
            stored[i] = NULL;
            if (!codes.codes[i].used &&
                base_is_ok(acrypto_hex_encode(codes.codes[i].code_hmac, IDENTITY_RECOVERY_HMAC_LEN, hex[i],
                                              sizeof hex[i], &len)))
                stored[i] = hex[i];
        }
        size_t idx = 0;
        BASE_GUARD(
            cred_recovery_verify(s->pepper, recovery_code, strlen(recovery_code), stored, codes.n, &idx));
        bool ok = false;
        BASE_GUARD(identity_store_recovery_code_use(s->pool, tenant, principal, codes.codes[idx].idx,
                                                    codes.codes[idx].code_hmac, &ok));
        BASE_ENSURE(ok, BASE_ERR_UNAUTH, BAD_CREDENTIALS);
        return BASE_OK_RESULT;
    }
    return base_fail(BASE_ERR_UNAUTH, BAD_CREDENTIALS);
}

static rpc_code login_failed(rpc_ctx *ctx, cache_conn *conn, const char *tenant, const char *username,
                             const char *actor)
{
    idn_service *s = idn_of(ctx);
    throttle_decision d;
    base_result r = throttle_failure(conn, &s->throttle, tenant, username, login_source(ctx), idn_now(), &d);
    if (!base_is_ok(r))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "login temporarily unavailable");
    /* The tenant may not exist: the event is filed under the tenant asked for, which is not PHI. */
    idn_audit_event ev = {.tenant_id = tenant,
                          .actor = actor,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED,
                          .outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED,
                          .severity = d.locked ? ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH
                                               : ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                          .resource_type = "Session",
                          .details = (const char *const[]){"locked", d.locked ? "true" : "false", NULL}};
    if (!base_is_ok(idn_audit(ctx, &ev)))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "audit log unavailable");
    return rpc_fail(ctx, RPC_UNAUTHENTICATED, BAD_CREDENTIALS);
}

static rpc_code fill_login(rpc_ctx *ctx, Alma__Identity__V1__LoginResponse *resp, const char *jwt,
                           int64_t exp, const session_info *si, const char *secret, bool enrol)
{
    resp->access_token = rpc_ctx_strdup(ctx, jwt);
    resp->access_token_expire_time = idn_timestamp(ctx, exp * 1000000);
    resp->session_id = rpc_ctx_strdup(ctx, si->sid);
    resp->refresh_secret = secret ? rpc_ctx_strdup(ctx, secret) : (char *)"";
    resp->session_expire_time = idn_timestamp(ctx, si->abs_end * 1000000);
    resp->mfa_enrollment_required = enrol;
    if (!resp->access_token || !resp->access_token_expire_time || !resp->session_id ||
        !resp->refresh_secret || !resp->session_expire_time)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return RPC_OK;
}

rpc_code idn_h_login(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__LoginRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    if (!text_ok(req->tenant_id, 1, IDENTITY_TENANT_ID_MAX) ||
        !text_ok(req->username, 1, IDENTITY_USERNAME_MAX) || !text_ok(req->password, 1, IDN_MAX_PASSWORD) ||
        strlen(req->totp_code) > IDN_MAX_TOTP_CODE || strlen(req->recovery_code) > IDN_MAX_RECOVERY_CODE)
        return rpc_fail(
            ctx, RPC_INVALID_ARGUMENT,
            "tenant_id, username and password are required and bounded (password at most %d bytes)",
            IDN_MAX_PASSWORD);
    /* A malformed tenant id can name no tenant; refused here, it would make the throttle and the audit
     * event of the failure refuse it as well (UNAVAILABLE). */
    if (!authz_valid_tenant(req->tenant_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "tenant_id is malformed");
    cache_conn *conn = cache_thread_conn(&s->cache);
    if (!conn)
        return rpc_fail(ctx, RPC_UNAVAILABLE, "login temporarily unavailable");
    int64_t now = idn_now();
    throttle_decision td;
    base_result r =
        throttle_check(conn, &s->throttle, req->tenant_id, req->username, login_source(ctx), now, &td);
    if (r.err == BASE_ERR_LIMIT)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "too many failed logins; retry after %lld s",
                        (long long)td.retry_after_s);
    if (!base_is_ok(r))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "login temporarily unavailable");

    identity_principal p;
    r = identity_store_principal_get_by_username(s->pool, req->tenant_id, req->username, &p);
    if (!base_is_ok(r) && r.err != BASE_ERR_NOT_FOUND && r.err != BASE_ERR_INVALID)
        return rpc_fail(ctx, RPC_UNAVAILABLE, "login temporarily unavailable");
    bool known = base_is_ok(r) && p.state == IDENTITY_PRINCIPAL_ACTIVE && p.kind == IDENTITY_PRINCIPAL_USER;
    identity_password pw;
    if (known) {
        r = identity_store_password_get(s->pool, req->tenant_id, p.principal_id, &pw);
        known = base_is_ok(r);
    }
    bool rehash = false;
    r = verify_password(s, known ? pw.encoded : NULL, req->password, &rehash);
    if (!base_is_ok(r)) {
        if (r.err == BASE_ERR_INTERNAL)
            log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "stored password hash is malformed", NULL);
        return login_failed(ctx, conn, req->tenant_id, req->username, known ? p.principal_id : "unknown");
    }

    identity_effective eff = {0};
    r = identity_store_effective(s->pool, req->tenant_id, p.principal_id, &eff);
    if (!base_is_ok(r))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "login temporarily unavailable");
    bool mfa = false, enrol = false;
    bool factor_given = req->totp_code[0] || req->recovery_code[0];
    if (eff.totp_confirmed && (eff.requires_mfa || factor_given)) {
        r = verify_second_factor(s, req->tenant_id, p.principal_id, req->totp_code, req->recovery_code);
        if (!base_is_ok(r)) {
            identity_effective_free(&eff);
            return login_failed(ctx, conn, req->tenant_id, req->username, p.principal_id);
        }
        mfa = true;
    } else if (eff.requires_mfa) {
        enrol = true; /* MFA required, not enrolled: a token that may only enrol */
    }
    if (rehash) {
        char enc[CRED_PASSWORD_HASH_MAX];
        if (base_is_ok(hash_password(s, req->password, enc)))
            (void)identity_store_password_set(s->pool, req->tenant_id, p.principal_id, enc).err;
    }
    r = throttle_success(conn, &s->throttle, req->tenant_id, req->username, login_source(ctx), now);
    if (!base_is_ok(r))
        log_emit(LOG_WARN, rpc_ctx_request_id(ctx), "login throttle not cleared", NULL);

    session_info si;
    char secret[SESSION_SECRET_LEN + 1];
    r = session_create(conn, &s->sessions, req->tenant_id, p.principal_id, mfa, now, &si, secret);
    char *jwt = NULL;
    int64_t exp = 0;
    if (base_is_ok(r))
        r = idn_issue_token(s, req->tenant_id, p.principal_id, si.sid, &eff, mfa, enrol, now, si.abs_end,
                            &jwt, &exp);
    identity_effective_free(&eff);
    if (!base_is_ok(r)) {
        acrypto_wipe(secret, sizeof secret);
        return rpc_fail(ctx, RPC_UNAVAILABLE, "login temporarily unavailable");
    }
    idn_audit_event ev = {.tenant_id = req->tenant_id,
                          .actor = p.principal_id,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_LOGIN,
                          .resource_type = "Session",
                          .resource_id = si.sid,
                          .details = (const char *const[]){"mfa", mfa ? "true" : "false", "enrolment_only",
                                                           enrol ? "true" : "false", NULL}};
    rpc_code code = RPC_OK;
    if (!base_is_ok(idn_audit(ctx, &ev))) {
        /* No unaudited login: end the session we just made. */
        bool ended = false;
        (void)session_end(conn, si.sid, &ended).err;
        code = rpc_fail(ctx, RPC_UNAVAILABLE, "audit log unavailable");
    } else {
        code = fill_login(ctx, respp, jwt, exp, &si, secret, enrol);
    }
    free(jwt);
    acrypto_wipe(secret, sizeof secret);
    return code;
}

rpc_code idn_h_refresh(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__RefreshRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    cache_conn *conn = cache_thread_conn(&s->cache);
    if (!conn)
        return rpc_fail(ctx, RPC_UNAVAILABLE, "session store unavailable");
    int64_t now = idn_now();
    session_info si;
    base_result r = session_refresh(conn, &s->sessions, req->session_id, req->refresh_secret, now, &si);
    if (r.err == BASE_ERR_UNAUTH || r.err == BASE_ERR_INVALID)
        return rpc_fail(ctx, RPC_UNAUTHENTICATED, "session is not valid");
    if (!base_is_ok(r))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "session store unavailable");
    /* Current rights: a role change since the last token shows here; a disabled user is out. */
    identity_effective eff = {0};
    r = identity_store_effective(s->pool, si.tenant_id, si.principal_id, &eff);
    if (!base_is_ok(r))
        return rpc_fail(ctx, r.err == BASE_ERR_NOT_FOUND ? RPC_UNAUTHENTICATED : RPC_UNAVAILABLE,
                        "session is not valid");
    rpc_code code = RPC_OK;
    if (eff.state != IDENTITY_PRINCIPAL_ACTIVE || (eff.requires_mfa && eff.totp_confirmed && !si.mfa)) {
        /* Disabled, or now needs a second factor this session never gave: log in again. */
        bool ended = false;
        (void)session_end(conn, si.sid, &ended).err;
        code = rpc_fail(ctx, RPC_UNAUTHENTICATED, "session is not valid");
    } else {
        bool enrol = eff.requires_mfa && !eff.totp_confirmed;
        char *jwt = NULL;
        int64_t exp = 0;
        r = idn_issue_token(s, si.tenant_id, si.principal_id, si.sid, &eff, si.mfa, enrol, now, si.abs_end,
                            &jwt, &exp);
        if (!base_is_ok(r))
            code = rpc_fail(ctx, RPC_UNAUTHENTICATED, "session is not valid");
        else
            code = fill_login(ctx, respp, jwt, exp, &si, NULL, enrol);
        free(jwt);
    }
    identity_effective_free(&eff);
    return code;
}

rpc_code idn_h_logout(rpc_ctx *ctx, const void *reqp, void *respp)
{
    (void)respp;
    const Alma__Identity__V1__LogoutRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_authenticate(ctx, &c);
    if (code != RPC_OK)
        return code;
    const char *sid = req->session_id[0] ? req->session_id : c.sid;
    cache_conn *conn = cache_thread_conn(&s->cache);
    if (!conn)
        return rpc_fail(ctx, RPC_UNAVAILABLE, "session store unavailable");
    if (strcmp(sid, c.sid) != 0) {
        /* Only one's own sessions. */
        session_info si;
        base_result r = session_get(conn, sid, idn_now(), &si);
        if (!base_is_ok(r) || strcmp(si.principal_id, c.sub) != 0)
            return rpc_fail(ctx, RPC_PERMISSION_DENIED, "not a session of the caller");
    }
    bool ended = false;
    base_result r = session_end(conn, sid, &ended);
    if (base_is_ok(r))
        r = authz_revoke_session(conn, sid, 0);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_LOGOUT,
                          .resource_type = "Session",
                          .resource_id = sid};
    if (!base_is_ok(idn_audit(ctx, &ev)))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "audit log unavailable");
    return RPC_OK;
}

rpc_code idn_h_set_password(rpc_ctx *ctx, const void *reqp, void *respp)
{
    (void)respp;
    const Alma__Identity__V1__SetPasswordRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    bool self = !req->principal_id[0];
    rpc_code code = RPC_OK;
    if (!self) {
        code = idn_require(ctx, "identity.users.manage", NULL, &c);
        self = code == RPC_OK && strcmp(req->principal_id, c.sub) == 0;
    } else {
        code = idn_authenticate(ctx, &c);
    }
    if (code != RPC_OK)
        return code;
    const char *target = self ? c.sub : req->principal_id;
    identity_principal p;
    base_result r = identity_store_principal_get(s->pool, c.tid, target, &p);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    if (!text_ok(req->new_password, 1, IDN_MAX_PASSWORD))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "new_password is required (at most %d bytes)",
                        IDN_MAX_PASSWORD);
    r = cred_password_check_policy(req->new_password, strlen(req->new_password), p.username);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    if (self) {
        identity_password pw;
        bool rehash = false;
        r = identity_store_password_get(s->pool, c.tid, c.sub, &pw);
        if (base_is_ok(r))
            r = verify_password(s, pw.encoded, req->current_password, &rehash);
        if (!base_is_ok(r))
            return rpc_fail(ctx, RPC_PERMISSION_DENIED, "current_password does not match");
    }
    char enc[CRED_PASSWORD_HASH_MAX];
    if (!base_is_ok(r = hash_password(s, req->new_password, enc)))
        return idn_fail(ctx, r);
    /* Audited before the change (README, "Audit"). */
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .resource_type = "User",
                          .resource_id = p.principal_id,
                          .details = (const char *const[]){
                              "change",
                              self ? "password changed by the user" : "password reset by an administrator",
                              "sessions", self ? "kept" : "ended, tokens revoked", NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK) {
        acrypto_wipe(enc, sizeof enc);
        return code;
    }
    r = identity_store_password_set(s->pool, c.tid, p.principal_id, enc);
    acrypto_wipe(enc, sizeof enc);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "set password", r);
    /* An administrator's reset ends the user's sessions: whoever knew the old password is out. */
    if (!self && !base_is_ok(r = idn_end_principal(s, p.principal_id, true, NULL)))
        return rpc_fail(ctx, RPC_UNAVAILABLE,
                        "the password was reset, but the user's sessions could not be ended: call "
                        "RevokeSessions");
    return RPC_OK;
}

rpc_code idn_h_enroll_totp(rpc_ctx *ctx, const void *reqp, void *respp)
{
    (void)reqp;
    idn_service *s = idn_of(ctx);
    Alma__Identity__V1__EnrollTotpResponse *resp = respp;
    authz_claims c;
    rpc_code code = idn_authenticate(ctx, &c);
    if (code != RPC_OK)
        return code;
    identity_totp t;
    base_result r = identity_store_totp_get(s->pool, c.tid, c.sub, &t);
    if (base_is_ok(r) && t.confirmed)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION,
                        "TOTP is already enrolled (an administrator can reset it)");
    identity_principal p;
    r = identity_store_principal_get(s->pool, c.tid, c.sub, &p);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    acrypto_secret *secret = NULL, *uri = NULL;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    r = cred_totp_secret_new(&secret);
    if (base_is_ok(r))
        r = cred_totp_seal(s->totp_key, c.tid, c.sub, secret, &sealed, &sealed_len);
    if (base_is_ok(r))
        r = identity_store_totp_put(s->pool, c.tid, c.sub, sealed, sealed_len);
    if (base_is_ok(r))
        r = cred_totp_uri(secret, c.tid, p.username, &uri);
    free(sealed);
    acrypto_secret_free(secret);
    if (!base_is_ok(r)) {
        acrypto_secret_free(uri);
        return idn_fail(ctx, r);
    }
    resp->otpauth_uri = rpc_ctx_strdup(ctx, (const char *)acrypto_secret_bytes(uri));
    acrypto_secret_free(uri);
    if (!resp->otpauth_uri)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return RPC_OK;
}

rpc_code idn_h_confirm_totp(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__ConfirmTotpRequest *req = reqp;
    Alma__Identity__V1__ConfirmTotpResponse *resp = respp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_authenticate(ctx, &c);
    if (code != RPC_OK)
        return code;
    if (!text_ok(req->totp_code, 6, IDN_MAX_TOTP_CODE))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "totp_code must be the 6 digits the authenticator shows");
    identity_totp t;
    base_result r = identity_store_totp_get(s->pool, c.tid, c.sub, &t);
    if (r.err == BASE_ERR_NOT_FOUND)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "call EnrollTotp first");
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    if (t.confirmed)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "TOTP is already enrolled");
    acrypto_secret *secret = NULL;
    r = cred_totp_open(s->totp_key, c.tid, c.sub, t.sealed_secret, t.sealed_len, &secret);
    int64_t step = 0;
    if (base_is_ok(r))
        r = cred_totp_verify(secret, req->totp_code, idn_now(), t.last_step, &step);
    acrypto_secret_free(secret);
    if (!base_is_ok(r))
        return rpc_fail(ctx, RPC_PERMISSION_DENIED,
                        "the code does not match: check the authenticator's clock");
    cred_recovery_codes codes;
    r = cred_recovery_generate(s->pepper, &codes);
    unsigned char hmacs[CRED_RECOVERY_COUNT][IDENTITY_RECOVERY_HMAC_LEN];
    for (size_t i = 0; base_is_ok(r) && i < CRED_RECOVERY_COUNT; i++) {
        size_t len = 0;
        r = acrypto_hex_decode(codes.stored[i], CRED_RECOVERY_HASH_HEX, hmacs[i], IDENTITY_RECOVERY_HMAC_LEN,
                               &len);
    }
    if (!base_is_ok(r)) {
        cred_recovery_codes_wipe(&codes);
        return idn_fail(ctx, r);
    }
    /* Audited before the change (README, "Audit"). */
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .resource_type = "User",
                          .resource_id = c.sub,
                          .details =
                              (const char *const[]){"change", "TOTP enrolled, recovery codes issued", NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK) {
        cred_recovery_codes_wipe(&codes);
        return code;
    }
    bool ok = false;
    r = identity_store_totp_confirm(s->pool, c.tid, c.sub, step, (const unsigned char(*)[32])hmacs,
                                    CRED_RECOVERY_COUNT, &ok);
    if (base_is_ok(r) && !ok)
        r = base_fail(BASE_ERR_DENIED, "the code was already used");
    if (!base_is_ok(r)) {
        cred_recovery_codes_wipe(&codes);
        return idn_audit_failed(ctx, &ev, "confirm TOTP", r);
    }
    resp->recovery_codes = rpc_ctx_alloc(ctx, CRED_RECOVERY_COUNT * sizeof *resp->recovery_codes);
    for (size_t i = 0; resp->recovery_codes && i < CRED_RECOVERY_COUNT; i++)
        resp->recovery_codes[i] = rpc_ctx_strdup(ctx, codes.display[i]);
    resp->n_recovery_codes = resp->recovery_codes ? CRED_RECOVERY_COUNT : 0;
    cred_recovery_codes_wipe(&codes);
    if (!resp->recovery_codes)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return RPC_OK;
}
