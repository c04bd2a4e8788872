/* The identity service: settings, start-up (keys, pools, the authorizer, the audit client, the Redis
 * mirrors), shared helpers and the method table. Handlers are in auth.c and admin.c. */
#include "service.h"

#include "daemon/daemon.h"
#include "service_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIRROR_PAGE          500
#define MICROS_PER_SECOND    INT64_C(1000000)
#define MAX_TIMESTAMP_SECOND INT64_C(253402300799)

/* ---- Settings ------------------------------------------------------------------------------------------ */

static const char *set_pg_uri, *set_pg_owner_uri, *set_pg_schema, *set_redis_addr, *set_audit_addr,
    *set_master_key_file, *set_issuer;
static long set_pg_pool_size, set_token_ttl_s, set_idle_s, set_absolute_s, set_argon_m_kib, set_argon_t,
    set_argon_slots, set_key_reload_s;

const cfg_setting identity_settings[] = {
    {"pg-uri", CFG_STRING, NULL, &set_pg_uri, 1, 4096, "PostgreSQL URI of the runtime role", true},
    {"pg-owner-uri", CFG_STRING, "", &set_pg_owner_uri, 0, 4096,
     "PostgreSQL URI of the schema owner: runs the migrations and grants the runtime role (empty: the "
     "runtime "
     "role migrates, development only)",
     true},
    {"pg-schema", CFG_STRING, "identity", &set_pg_schema, 1, 63, "schema of the identity tables", false},
    {"pg-pool-size", CFG_INT, "16", &set_pg_pool_size, 2, 256, "database connections", false},
    {"redis-addr", CFG_STRING, "127.0.0.1:6379", &set_redis_addr, 3, 300,
     "Redis host:port (sessions, throttling, revocations, relationship mirrors)", false},
    {"audit-addr", CFG_STRING, NULL, &set_audit_addr, 3, 300,
     "the audit service's API host:port (mTLS with this service's certificate)", false},
    {"master-key-file", CFG_STRING, NULL, &set_master_key_file, 1, 4096,
     "file holding the base64 of 32 random bytes: seals TOTP secrets and token signing keys, keys recovery "
     "code hashes (openssl rand -base64 32)",
     false},
    {"issuer", CFG_STRING, AUTHZ_DEFAULT_ISSUER, &set_issuer, 1, AUTHZ_MAX_URI_LEN,
     "iss of the tokens issued", false},
    {"token-ttl-s", CFG_INT, "300", &set_token_ttl_s, 30, AUTHZ_DEFAULT_MAX_LIFETIME_S,
     "access token lifetime (seconds)", false},
    {"session-idle-s", CFG_INT, "900", &set_idle_s, 1, 86400,
     "automatic logoff: a session not refreshed for this long ends", false},
    {"session-absolute-s", CFG_INT, "43200", &set_absolute_s, 1, 604800,
     "a session ends this long after login, whatever happens", false},
    {"argon2-m-kib", CFG_INT, "65536", &set_argon_m_kib, 8, 4194304,
     "argon2id memory per password hash (KiB)", false},
    {"argon2-t", CFG_INT, "3", &set_argon_t, 1, 64, "argon2id passes", false},
    {"argon2-concurrency", CFG_INT, "2", &set_argon_slots, 1, 64,
     "password hashes computed at once (each holds argon2-m-kib and a core)", false},
    {"key-reload-s", CFG_INT, "30", &set_key_reload_s, 1, 3600,
     "how often the token signing keys are re-read, to pick up alma-admin rotate-signing-key (seconds)",
     false},
};
const size_t identity_setting_count = BASE_ARRAY_LEN(identity_settings);

/* ---- Helpers ------------------------------------------------------------------------------------------- */

idn_service *idn_of(rpc_ctx *ctx)
{
    return rpc_ctx_service_state(ctx);
}

int64_t idn_now(void)
{
    return (int64_t)time(NULL);
}

int64_t idn_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * MICROS_PER_SECOND + ts.tv_nsec / 1000;
}

Google__Protobuf__Timestamp *idn_timestamp(rpc_ctx *ctx, int64_t micros)
{
    Google__Protobuf__Timestamp *t = rpc_ctx_alloc(ctx, sizeof *t);
    if (!t)
        return NULL;
    google__protobuf__timestamp__init(t);
    t->seconds = micros / MICROS_PER_SECOND;
    t->nanos = (int32_t)((micros % MICROS_PER_SECOND) * 1000);
    return t;
}

bool idn_timestamp_micros(const Google__Protobuf__Timestamp *t, int64_t *ret)
{
    if (!t || t->seconds < 0 || t->seconds > MAX_TIMESTAMP_SECOND || t->nanos < 0 || t->nanos > 999999999)
        return false;
    *ret = t->seconds * MICROS_PER_SECOND + t->nanos / 1000;
    return true;
}

rpc_code idn_fail(rpc_ctx *ctx, base_result r)
{
    return rpc_fail_result(ctx, r);
}

static rpc_code decision_status(rpc_ctx *ctx, const authz_decision *d)
{
    return rpc_fail(ctx, (rpc_code)d->code, "%s", d->reason);
}

rpc_code idn_authenticate(rpc_ctx *ctx, authz_claims *claims)
{
    /* Signature (cached), expiry, revocation: the token's own claims, whatever it may do. */
    authz_decision d;
    base_result r = authz_authenticate(idn_of(ctx)->az, rpc_ctx_authorization(ctx), claims, &d);
    if (!base_is_ok(r))
        return decision_status(ctx, &d);
    return RPC_OK;
}

rpc_code idn_require(rpc_ctx *ctx, const char *permission, const char *patient_ref, authz_claims *claims)
{
    authz_claims self;
    rpc_code code = idn_authenticate(ctx, &self);
    if (code != RPC_OK)
        return code;
    idn_service *s = idn_of(ctx);
    authz_decision d;
    authz_resource res = {.tenant_id = self.tid, .patient_ref = patient_ref};
    base_result r = authz_authorize(s->az, rpc_ctx_authorization(ctx), permission, &res, claims, &d);
    if (!base_is_ok(r))
        return decision_status(ctx, &d);
    return RPC_OK;
}

void idn_random_id(const char *prefix, char *out, size_t cap)
{
    uint8_t b[16];
    if (!base_is_ok(acrypto_random(b, sizeof b)))
        memset(b, 0, sizeof b); /* acrypto_random only fails when the CSPRNG is broken: then sign fails too */
    size_t n = strlen(prefix), len = 0;
    snprintf(out, cap, "%s", prefix);
    if (!base_is_ok(acrypto_hex_encode(b, sizeof b, out + n, cap - n, &len)))
        out[n] = '\0';
}

base_result idn_issue_token(idn_service *s, const char *tenant_id, const char *principal_id, const char *sid,
                            const identity_effective *eff, bool mfa, bool enrol_only, int64_t now,
                            int64_t session_abs_end, char **ret_jwt, int64_t *ret_exp)
{
    authz_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, "%s", s->issuer);
    snprintf(c.aud, sizeof c.aud, "%s", AUTHZ_DEFAULT_AUDIENCE);
    snprintf(c.sub, sizeof c.sub, "%s", principal_id);
    snprintf(c.tid, sizeof c.tid, "%s", tenant_id);
    snprintf(c.sid, sizeof c.sid, "%s", sid);
    idn_random_id("tok_", c.jti, sizeof c.jti);
    c.iat = now;
    c.nbf = now;
    c.exp = now + s->token_ttl_s;
    if (c.exp > session_abs_end)
        c.exp = session_abs_end;
    if (c.exp <= now)
        return base_fail(BASE_ERR_UNAUTH, "session is not valid");
    c.mfa = mfa;
    c.enr = enrol_only;
    if (!enrol_only) {
        for (size_t i = 0; i < eff->nroles && c.role_count < AUTHZ_MAX_ROLES; i++)
            snprintf(c.roles[c.role_count++], AUTHZ_MAX_NAME_LEN + 1, "%s", eff->roles[i].role_id);
        for (size_t i = 0; i < eff->npermissions && c.perm_count < AUTHZ_MAX_PERMS - 1; i++)
            if (strlen(eff->permissions[i]) <= AUTHZ_MAX_NAME_LEN)
                snprintf(c.perm[c.perm_count++], AUTHZ_MAX_NAME_LEN + 1, "%s", eff->permissions[i]);
    }
    snprintf(c.perm[c.perm_count++], AUTHZ_MAX_NAME_LEN + 1, "%s", IDN_SELF_PERMISSION);
    pthread_rwlock_rdlock(&s->keys_lock);
    base_result r = authz_token_sign(&c, s->sign_key, s->kid, ret_jwt);
    pthread_rwlock_unlock(&s->keys_lock);
    BASE_GUARD(r);
    *ret_exp = c.exp;
    return BASE_OK_RESULT;
}

base_result idn_audit(rpc_ctx *ctx, const idn_audit_event *e)
{
    base_result r = audit_client_record(idn_of(ctx)->audit, e, ctx, NULL);
    if (!base_is_ok(r))
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "audit append failed", "error", base_error_message(),
                 NULL);
    return r;
}

static void revoke_one(void *arg, const char *sid)
{
    cache_conn *conn = arg;
    base_result r = authz_revoke_session(conn, sid, 0);
    if (!base_is_ok(r))
        log_emit(LOG_WARN, NULL, "session revocation not published", "error", base_error_message(), NULL);
}

rpc_code idn_audit_intent(rpc_ctx *ctx, const idn_audit_event *ev)
{
    return audit_client_require(idn_of(ctx)->audit, ev, ctx, "nothing was changed");
}

void idn_audit_error(rpc_ctx *ctx, const idn_audit_event *intent, const char *what, base_err err)
{
    char change[128];
    snprintf(change, sizeof change, "%s failed", what);
    audit_client_record_error(idn_of(ctx)->audit, intent, change, err, ctx);
}

rpc_code idn_audit_failed(rpc_ctx *ctx, const idn_audit_event *intent, const char *what, base_result r)
{
    /* The status first: the append below replaces the thread's error message. */
    rpc_code code = idn_fail(ctx, r);
    idn_audit_error(ctx, intent, what, r.err);
    return code;
}

base_result idn_revoke_principal(idn_service *s, const char *principal_id, bool end_sessions, int64_t at,
                                 int *ret_count)
{
    cache_conn *conn = cache_thread_conn(&s->cache);
    if (!conn)
        return base_fail(BASE_ERR_UNAVAILABLE, "session store unavailable");
    int count = 0;
    if (end_sessions)
        BASE_GUARD(session_end_all(conn, principal_id, revoke_one, conn, &count));
    /* Tokens issued until `at` are dead in every service within a second. */
    BASE_GUARD(authz_revoke_principal(conn, principal_id, at, 0));
    if (ret_count)
        *ret_count = count;
    return BASE_OK_RESULT;
}

void idn_wait_past(int64_t at)
{
    /* The revocation covers every token issued at or before second `at` (iat has one-second resolution), so
     * one issued later in that same second, e.g. by a Refresh or Login right after the caller answers, would
     * be dead on arrival. Return only once idn_now(), the clock iat is taken from, has passed `at` (at most a
     * second, on administrative calls): whatever is issued after the answer is then not caught. time() is
     * the coarse clock, a tick behind the precise one: sleep to the precise second, then poll. */
    int64_t left_us = (at + 1) * MICROS_PER_SECOND - idn_now_us();
    if (left_us > 0 && left_us <= MICROS_PER_SECOND) {
        struct timespec ts = {.tv_sec = left_us / MICROS_PER_SECOND,
                              .tv_nsec = (long)(left_us % MICROS_PER_SECOND) * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    for (int i = 0; i < 100 && idn_now() <= at; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

base_result idn_end_principal(idn_service *s, const char *principal_id, bool end_sessions, int *ret_count)
{
    int64_t at = idn_now();
    BASE_GUARD(idn_revoke_principal(s, principal_id, end_sessions, at, ret_count));
    idn_wait_past(at);
    return BASE_OK_RESULT;
}

/* ---- Start-up --------------------------------------------------------------------------------------------
 */

/* Load the current signing key (creating the first one) and the published key set. */
static base_result load_keys(idn_service *s)
{
    identity_signing_keys keys;
    BASE_GUARD(identity_store_signing_keys_list(s->pool, &keys));
    if (keys.n == 0) {
        acrypto_ed25519_key *key = NULL;
        char kid[AUTHZ_KID_BUF];
        uint8_t *sealed = NULL, pub[ACRYPTO_ED25519_PUBLIC_LEN];
        size_t sealed_len = 0;
        BASE_GUARD(idn_signing_key_new(s->key_seal_key, &key, kid, &sealed, &sealed_len, pub));
        base_result r = identity_store_signing_key_insert(s->pool, kid, sealed, sealed_len, pub);
        free(sealed);
        acrypto_ed25519_free(key);
        if (!base_is_ok(r) && r.err != BASE_ERR_EXISTS) /* EXISTS: another replica made the first one */
            return r;
        BASE_GUARD(identity_store_signing_keys_list(s->pool, &keys));
    }
    BASE_ENSURE(keys.n >= 1 && keys.keys[0].state == IDENTITY_KEY_CURRENT && keys.keys[0].sealed_len > 0,
                BASE_ERR_INTERNAL, "no current token signing key");
    acrypto_ed25519_key *sign = NULL;
    BASE_GUARD(idn_signing_key_open(s->key_seal_key, keys.keys[0].kid, keys.keys[0].sealed_private,
                                    keys.keys[0].sealed_len, &sign));
    authz_keyset *ks = NULL;
    char *jwks = NULL;
    base_result r = authz_keyset_new(&ks);
    if (base_is_ok(r))
        r = authz_keyset_add(ks, sign);
    for (size_t i = 1; base_is_ok(r) && i < keys.n; i++) {
        acrypto_ed25519_key *pub = NULL;
        r = acrypto_ed25519_from_public(keys.keys[i].public_key, IDENTITY_PUBLIC_KEY_LEN, &pub);
        if (base_is_ok(r))
            r = authz_keyset_add(ks, pub);
        acrypto_ed25519_free(pub);
    }
    if (base_is_ok(r))
        r = authz_keyset_to_jwks(ks, &jwks);
    char kid[AUTHZ_KID_BUF];
    if (base_is_ok(r))
        r = authz_kid_for_key(sign, kid);
    if (!base_is_ok(r)) {
        acrypto_ed25519_free(sign);
        authz_keyset_free(ks);
        free(jwks);
        return r;
    }
    pthread_rwlock_wrlock(&s->keys_lock);
    acrypto_ed25519_free(s->sign_key);
    authz_keyset_free(s->keyset);
    free(s->jwks);
    s->sign_key = sign;
    s->keyset = ks;
    s->jwks = jwks;
    memcpy(s->kid, kid, sizeof kid);
    pthread_rwlock_unlock(&s->keys_lock);
    return BASE_OK_RESULT;
}

static base_result fetch_own_jwks(void *arg, char **ret)
{
    idn_service *s = arg;
    pthread_rwlock_rdlock(&s->keys_lock);
    char *copy = s->jwks ? strdup(s->jwks) : NULL;
    pthread_rwlock_unlock(&s->keys_lock);
    if (!copy)
        return base_fail(BASE_ERR_UNAVAILABLE, "no verification keys yet");
    *ret = copy;
    return BASE_OK_RESULT;
}

/* One look at the stored keys: when the current kid is no longer ours (alma-admin rotate-signing-key), load
 * the new set, sign with the new key and have our own authorizer fetch it at once. Other services pick it up
 * at their next refresh, or on the first token with the new kid. */
static base_result reload_keys_if_rotated(idn_service *s)
{
    identity_signing_keys keys;
    BASE_GUARD(identity_store_signing_keys_list(s->pool, &keys));
    if (keys.n == 0)
        return base_fail(BASE_ERR_INTERNAL, "no token signing key stored");
    pthread_rwlock_rdlock(&s->keys_lock);
    bool same = strcmp(keys.keys[0].kid, s->kid) == 0;
    pthread_rwlock_unlock(&s->keys_lock);
    acrypto_wipe(&keys, sizeof keys);
    if (same)
        return BASE_OK_RESULT;
    BASE_GUARD(load_keys(s));
    char kid[AUTHZ_KID_BUF];
    pthread_rwlock_rdlock(&s->keys_lock);
    memcpy(kid, s->kid, sizeof kid);
    pthread_rwlock_unlock(&s->keys_lock);
    log_emit(LOG_INFO, NULL, "token signing key rotated: signing with the new key", "kid", kid, NULL);
    if (s->az && !base_is_ok(authz_refresh_keys(s->az)))
        log_emit(LOG_WARN, NULL, "own authorizer did not refresh its keys (it will on the next unknown kid)",
                 "error", base_error_message(), NULL);
    return BASE_OK_RESULT;
}

static void *reload_main(void *arg)
{
    idn_service *s = arg;
    pthread_mutex_lock(&s->reload_mu);
    while (!s->reload_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)s->key_reload_s;
        while (!s->reload_stop && pthread_cond_timedwait(&s->reload_cv, &s->reload_mu, &until) != ETIMEDOUT) {
        }
        if (s->reload_stop)
            break;
        pthread_mutex_unlock(&s->reload_mu);
        base_result r = reload_keys_if_rotated(s);
        if (!base_is_ok(r))
            log_emit(LOG_WARN, NULL, "token signing keys not re-read (the current ones stay in use)", "error",
                     base_error_message(), NULL);
        pthread_mutex_lock(&s->reload_mu);
    }
    pthread_mutex_unlock(&s->reload_mu);
    return NULL;
}

static base_result start_reload(idn_service *s)
{
    pthread_condattr_t ca;
    BASE_ENSURE(pthread_condattr_init(&ca) == 0, BASE_ERR_INTERNAL, "cannot make the key reload thread");
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&s->reload_cv, &ca);
    pthread_condattr_destroy(&ca);
    BASE_ENSURE(rc == 0, BASE_ERR_INTERNAL, "cannot make the key reload thread");
    if (pthread_mutex_init(&s->reload_mu, NULL) != 0) {
        pthread_cond_destroy(&s->reload_cv);
        return base_fail(BASE_ERR_INTERNAL, "cannot make the key reload thread");
    }
    if (pthread_create(&s->reload_thread, NULL, reload_main, s) != 0) {
        pthread_mutex_destroy(&s->reload_mu);
        pthread_cond_destroy(&s->reload_cv);
        return base_fail(BASE_ERR_INTERNAL, "cannot start the key reload thread");
    }
    s->reload_started = true;
    return BASE_OK_RESULT;
}

static void stop_reload(idn_service *s)
{
    if (!s->reload_started)
        return;
    pthread_mutex_lock(&s->reload_mu);
    s->reload_stop = true;
    pthread_cond_signal(&s->reload_cv);
    pthread_mutex_unlock(&s->reload_mu);
    pthread_join(s->reload_thread, NULL);
    pthread_mutex_destroy(&s->reload_mu);
    pthread_cond_destroy(&s->reload_cv);
    s->reload_started = false;
}

static const char *rel_kind_name(identity_relationship_kind k)
{
    switch (k) {
    case IDENTITY_REL_PRIMARY_CARE:
        return "primary_care";
    case IDENTITY_REL_SPECIALIST:
        return "specialist";
    case IDENTITY_REL_CARE_TEAM:
        return "care_team";
    case IDENTITY_REL_COVERING:
        return "covering";
    }
    return "care_team";
}

base_result idn_mirror_relationship(idn_service *s, cache_conn *conn, const identity_relationship *rel)
{
    (void)s;
    return authz_mirror_relationship(conn, rel->tenant_id, rel->clinician_id, rel->patient_ref,
                                     rel->relationship_id, rel_kind_name(rel->kind), rel->start_us / 1000000,
                                     rel->end_us ? rel->end_us / 1000000 : 0);
}

/* Redis may have lost everything: rebuild the relationship and break-glass mirrors from Postgres. */
static base_result rebuild_mirrors(idn_service *s)
{
    cache_conn *conn = cache_thread_conn(&s->cache);
    if (!conn)
        return base_fail(BASE_ERR_UNAVAILABLE, "Redis unavailable");
    char after[IDENTITY_ID_MAX + 1] = "";
    size_t mirrored = 0;
    for (;;) {
        identity_relationship_list l = {0};
        BASE_GUARD(identity_store_relationships_current_all(s->pool, after, MIRROR_PAGE, &l));
        base_result r = BASE_OK_RESULT;
        for (size_t i = 0; i < l.n && base_is_ok(r); i++)
            r = idn_mirror_relationship(s, conn, &l.items[i]);
        size_t n = l.n;
        if (n > 0)
            snprintf(after, sizeof after, "%s", l.items[n - 1].relationship_id);
        identity_relationship_list_free(&l);
        BASE_GUARD(r);
        mirrored += n;
        if (n < MIRROR_PAGE)
            break;
    }
    after[0] = '\0';
    for (;;) {
        identity_break_glass_list l = {0};
        BASE_GUARD(identity_store_break_glass_current_all(s->pool, after, MIRROR_PAGE, &l));
        base_result r = BASE_OK_RESULT;
        for (size_t i = 0; i < l.n && base_is_ok(r); i++)
            r = authz_mirror_break_glass(conn, l.items[i].tenant_id, l.items[i].clinician_id,
                                         l.items[i].patient_ref, l.items[i].grant_id,
                                         l.items[i].end_us / 1000000);
        bool more = l.more;
        if (l.n > 0)
            snprintf(after, sizeof after, "%s", l.items[l.n - 1].grant_id);
        mirrored += l.n;
        identity_break_glass_list_free(&l);
        BASE_GUARD(r);
        if (!more)
            break;
    }
    char count[24];
    snprintf(count, sizeof count, "%zu", mirrored);
    log_emit(LOG_INFO, NULL, "access mirrors rebuilt", "count", count, NULL);
    return BASE_OK_RESULT;
}

static base_result migrate(db_pool *runtime)
{
    if (!set_pg_owner_uri[0])
        return identity_store_migrate(runtime, set_pg_schema);
    return db_migrate_as_owner(runtime, set_pg_owner_uri, set_pg_schema, "alma-identity-migrate",
                               identity_store_migrate);
}

static base_result parse_host_port(const char *addr, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(addr, ':');
    BASE_ENSURE(colon && colon != addr && (size_t)(colon - addr) < cap, BASE_ERR_INVALID,
                "redis-addr must be host:port");
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    BASE_ENSURE(errno == 0 && end && *end == '\0' && p > 0 && p < 65536, BASE_ERR_INVALID,
                "redis-addr must be host:port");
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (int)p;
    return BASE_OK_RESULT;
}

base_result identity_service_init(void **ret_state)
{
    idn_service *s = calloc(1, sizeof *s);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    pthread_rwlock_init(&s->keys_lock, NULL);
    sem_init(&s->argon_slots, 0, (unsigned)set_argon_slots);
    s->sessions = (session_config){.idle_s = set_idle_s, .absolute_s = set_absolute_s};
    s->argon = (cred_argon2_params){.m_kib = (uint32_t)set_argon_m_kib, .t = (uint32_t)set_argon_t, .p = 1};
    s->token_ttl_s = set_token_ttl_s;
    s->key_reload_s = set_key_reload_s;
    snprintf(s->issuer, sizeof s->issuer, "%s", set_issuer);
    base_result r = BASE_OK_RESULT;
    acrypto_secret *master = NULL;
    BASE_GUARD_GOTO(r, idn_master_key_load(set_master_key_file, &master), fail);
    r = idn_derive_key(master, "alma identity totp-seal v1", &s->totp_key);
    if (base_is_ok(r))
        r = idn_derive_key(master, "alma identity recovery-pepper v1", &s->pepper);
    if (base_is_ok(r))
        r = idn_derive_key(master, IDN_SIGNING_SEAL_INFO, &s->key_seal_key);
    acrypto_secret_free(master);
    if (!base_is_ok(r))
        goto fail;
    if (s->sessions.absolute_s < s->sessions.idle_s) {
        r = base_fail(BASE_ERR_INVALID, "session-absolute-s must not be below session-idle-s");
        goto fail;
    }
    int port = 0;
    BASE_GUARD_GOTO(r, parse_host_port(set_redis_addr, s->redis_host, sizeof s->redis_host, &port), fail);
    s->cache = (cache_config){.host = s->redis_host, .port = port};

    db_pool_config pcfg = db_pool_config_default(set_pg_uri, (int)set_pg_pool_size, 5000);
    pcfg.search_path = set_pg_schema;
    pcfg.application_name = "alma-identity";
    BASE_GUARD_GOTO(r, db_pool_create_config(&pcfg, &s->pool), fail);
    BASE_GUARD_GOTO(r, migrate(s->pool), fail);
    BASE_GUARD_GOTO(r, load_keys(s), fail);

    authz_config acfg = {
        .issuer = s->issuer, .cache = &s->cache, .fetch_jwks = fetch_own_jwks, .fetch_arg = s};
    BASE_GUARD_GOTO(r, authz_new(&acfg, &s->az), fail);
    rpc_tls_files tls = daemon_tls_files();
    rpc_client_tls ctls = {.files = tls, .server_name = NULL};
    BASE_GUARD_GOTO(r, audit_client_open(set_audit_addr, &ctls, 5000, &s->audit), fail);
    BASE_GUARD_GOTO(r, rebuild_mirrors(s), fail);
    BASE_GUARD_GOTO(r, start_reload(s), fail);
    r = authz_wait_ready(s->az, 5000);
    if (!base_is_ok(r))
        log_emit(LOG_WARN, NULL, "revocation feed not ready yet: calls needing a token fail until it is",
                 NULL);
    *ret_state = s;
    return BASE_OK_RESULT;
fail:
    identity_service_fini(s);
    return r;
}

void identity_service_fini(void *state)
{
    idn_service *s = state;
    if (!s)
        return;
    stop_reload(s); /* first: it uses the pool, the keys and the authorizer */
    authz_free(s->az);
    audit_client_close(s->audit);
    db_pool_destroy(s->pool);
    acrypto_ed25519_free(s->sign_key);
    authz_keyset_free(s->keyset);
    free(s->jwks);
    acrypto_secret_free(s->totp_key);
    acrypto_secret_free(s->pepper);
    acrypto_secret_free(s->key_seal_key);
    pthread_rwlock_destroy(&s->keys_lock);
    sem_destroy(&s->argon_slots);
    cache_thread_conn_release();
    free(s);
}

/* ---- GetVerificationKeys ---------------------------------------------------------------------------------
 */

static rpc_code h_get_keys(rpc_ctx *ctx, const void *reqp, void *respp)
{
    (void)reqp;
    idn_service *s = idn_of(ctx);
    Alma__Identity__V1__GetVerificationKeysResponse *resp = respp;
    pthread_rwlock_rdlock(&s->keys_lock);
    resp->jwks_json = rpc_ctx_strdup(ctx, s->jwks);
    pthread_rwlock_unlock(&s->keys_lock);
    if (!resp->jwks_json)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return RPC_OK;
}

/* ---- Method table ----------------------------------------------------------------------------------------
 */

/* Users reach identity through the gateway; operators through alma-cli; tests and the load generator
 * directly. Every method below except the login family also checks the caller's token. */
static const char *const user_facing[] = {"gateway", "alma-cli", "test-client", "bench", NULL};
static const char *const any_peer[] = {RPC_ANY_PEER, NULL};
static const char *const services[] = {"vault", "guideline", "signaling",   "breach", "gateway",
                                       "audit", "alma-cli",  "test-client", "bench",  NULL};
static const char *const gateway_only[] = {"gateway", "test-client", NULL};

#define IDN_METHOD(n) "/alma.identity.v1.Identity/" n
#define UNARY(nm, req, resp, fn, peers)                                                                      \
    {                                                                                                        \
        .name = IDN_METHOD(nm), .kind = RPC_KIND_UNARY, .request = &req##__descriptor,                       \
        .response = &resp##__descriptor, .unary = fn, .allowed_peers = peers                                 \
    }

const rpc_method identity_methods[] = {
    UNARY("Login", alma__identity__v1__login_request, alma__identity__v1__login_response, idn_h_login,
          user_facing),
    UNARY("Refresh", alma__identity__v1__refresh_request, alma__identity__v1__login_response, idn_h_refresh,
          user_facing),
    UNARY("Logout", alma__identity__v1__logout_request, alma__identity__v1__logout_response, idn_h_logout,
          user_facing),
    UNARY("GetVerificationKeys", alma__identity__v1__get_verification_keys_request,
          alma__identity__v1__get_verification_keys_response, h_get_keys, any_peer),
    UNARY("CreateTenant", alma__identity__v1__create_tenant_request, alma__identity__v1__tenant,
          idn_h_create_tenant, user_facing),
    UNARY("CreateUser", alma__identity__v1__create_user_request, alma__identity__v1__user, idn_h_create_user,
          user_facing),
    UNARY("GetUser", alma__identity__v1__get_user_request, alma__identity__v1__user, idn_h_get_user,
          user_facing),
    UNARY("DisableUser", alma__identity__v1__disable_user_request, alma__identity__v1__user,
          idn_h_disable_user, user_facing),
    UNARY("SetPassword", alma__identity__v1__set_password_request, alma__identity__v1__set_password_response,
          idn_h_set_password, user_facing),
    UNARY("EnrollTotp", alma__identity__v1__enroll_totp_request, alma__identity__v1__enroll_totp_response,
          idn_h_enroll_totp, user_facing),
    UNARY("ConfirmTotp", alma__identity__v1__confirm_totp_request, alma__identity__v1__confirm_totp_response,
          idn_h_confirm_totp, user_facing),
    UNARY("RevokeSessions", alma__identity__v1__revoke_sessions_request,
          alma__identity__v1__revoke_sessions_response, idn_h_revoke_sessions, user_facing),
    UNARY("ListRoles", alma__identity__v1__list_roles_request, alma__identity__v1__list_roles_response,
          idn_h_list_roles, user_facing),
    UNARY("PutRole", alma__identity__v1__put_role_request, alma__identity__v1__role, idn_h_put_role,
          user_facing),
    UNARY("GrantRole", alma__identity__v1__grant_role_request, alma__identity__v1__user, idn_h_grant_role,
          user_facing),
    UNARY("RevokeRole", alma__identity__v1__revoke_role_request, alma__identity__v1__user, idn_h_revoke_role,
          user_facing),
    UNARY("CreateCareRelationship", alma__identity__v1__create_care_relationship_request,
          alma__identity__v1__care_relationship, idn_h_create_relationship, user_facing),
    UNARY("EndCareRelationship", alma__identity__v1__end_care_relationship_request,
          alma__identity__v1__care_relationship, idn_h_end_relationship, user_facing),
    UNARY("BreakGlass", alma__identity__v1__break_glass_request, alma__identity__v1__break_glass_grant,
          idn_h_break_glass, user_facing),
    UNARY("ListBreakGlassGrants", alma__identity__v1__list_break_glass_grants_request,
          alma__identity__v1__list_break_glass_grants_response, idn_h_list_break_glass, user_facing),
    UNARY("Check", alma__identity__v1__check_request, alma__identity__v1__check_response, idn_h_check,
          services),
    UNARY("RegisterPartnerClient", alma__identity__v1__register_partner_client_request,
          alma__identity__v1__partner_client, idn_h_register_partner, user_facing),
    UNARY("GetPartnerClient", alma__identity__v1__get_partner_client_request,
          alma__identity__v1__partner_client, idn_h_get_partner, gateway_only),
};
const size_t identity_method_count = BASE_ARRAY_LEN(identity_methods);
