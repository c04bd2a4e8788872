/* The authorizer against the real Redis of the harness (fixture "redis"): the README's rules, patient scope
 * through the relationship and break-glass mirrors, revocation seen by a second authorizer (two services in
 * one process), the SCAN reload at start, key rotation and the rate-limited refetch, Redis unreachable, and
 * many threads at once. Every id is fresh per run, so runs sharing the server never see each other's keys. */
#include "authz_test.h"

#include "rpc/rpc.h"
#include "testenv.h"

#include <stdatomic.h>

/* The decision codes are the gRPC status numbers of rpc.h, so a handler can return them as they are. */
_Static_assert((int)AUTHZ_OK == (int)RPC_OK, "AUTHZ_OK");
_Static_assert((int)AUTHZ_PERMISSION_DENIED == (int)RPC_PERMISSION_DENIED, "AUTHZ_PERMISSION_DENIED");
_Static_assert((int)AUTHZ_UNAVAILABLE == (int)RPC_UNAVAILABLE, "AUTHZ_UNAVAILABLE");
_Static_assert((int)AUTHZ_UNAUTHENTICATED == (int)RPC_UNAUTHENTICATED, "AUTHZ_UNAUTHENTICATED");

static cache_config g_cfg; /* the one config pointer every authorizer and thread connection uses */
static cache_conn *g_conn; /* the publisher (identity's side) */
static acrypto_ed25519_key *g_k1, *g_k2, *g_k3;
static t_jwks_source g_src = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, false};
static authz *g_a; /* "service A" */
static authz *g_b; /* "service B" */
static char g_tenant[32];

static const char *const g_perms[] = {"referral.review", "phi.read.clinical", "phi.break_glass", NULL};

static authz *new_authz(const cache_config *cfg, t_jwks_source *src, int refresh_ms, int refetch_ms)
{
    authz_config c = {.cache = cfg,
                      .fetch_jwks = t_fetch,
                      .fetch_arg = src,
                      .refresh_interval_ms = refresh_ms,
                      .refetch_min_interval_ms = refetch_ms};
    authz *a = NULL;
    OK(authz_new(&c, &a));
    return a;
}

static int setup(void **state)
{
    (void)state;
    g_cfg = (cache_config){.host = testenv_redis_host(), .port = testenv_redis_port()};
    if (!base_is_ok(cache_conn_new(&g_cfg, &g_conn)) || !base_is_ok(cache_conn_connect(g_conn))) {
        fprintf(stderr, "cannot reach the harness redis: %s\n", base_error_message());
        return -1;
    }
    if (!base_is_ok(acrypto_ed25519_generate(&g_k1)) || !base_is_ok(acrypto_ed25519_generate(&g_k2)) ||
        !base_is_ok(acrypto_ed25519_generate(&g_k3)))
        return -1;
    const acrypto_ed25519_key *keys[] = {g_k1, NULL};
    t_serve_keys(&g_src, keys);
    t_tenant(g_tenant, sizeof g_tenant);
    authz_config c = {.cache = &g_cfg, .fetch_jwks = t_fetch, .fetch_arg = &g_src};
    if (!base_is_ok(authz_new(&c, &g_a)) || !base_is_ok(authz_new(&c, &g_b)) ||
        !base_is_ok(authz_wait_ready(g_a, 5000)) || !base_is_ok(authz_wait_ready(g_b, 5000))) {
        fprintf(stderr, "authorizers not ready: %s\n", base_error_message());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    authz_free(g_a);
    authz_free(g_b);
    cache_conn_free(g_conn);
    cache_thread_conn_release();
    acrypto_ed25519_free(g_k1);
    acrypto_ed25519_free(g_k2);
    acrypto_ed25519_free(g_k3);
    free(g_src.jwks);
    return 0;
}

/* authorize and check code, reason (NULL: any) and decided_by (NULL: any). */
static void expect(authz *a, const char *token, const char *perm, const char *tenant, const char *patient,
                   authz_code code, const char *reason, const char *decided_by)
{
    authz_resource res = {.tenant_id = tenant, .patient_ref = patient};
    authz_decision d;
    authz_claims c;
    base_result r = authz_authorize(a, token, perm, &res, &c, &d);
    if (d.code != code || (reason && strcmp(d.reason, reason) != 0) ||
        (decided_by && strcmp(d.decided_by, decided_by) != 0))
        fail_msg("%s: expected %d \"%s\" by \"%s\", got %d \"%s\" by \"%s\"", perm, code,
                 reason ? reason : "*", decided_by ? decided_by : "*", d.code, d.reason, d.decided_by);
    base_err want = code == AUTHZ_OK                  ? BASE_OK
                    : code == AUTHZ_UNAUTHENTICATED   ? BASE_ERR_UNAUTH
                    : code == AUTHZ_PERMISSION_DENIED ? BASE_ERR_DENIED
                                                      : BASE_ERR_UNAVAILABLE;
    assert_int_equal(r.err, want);
    if (code != AUTHZ_OK)
        assert_string_equal(base_error_message(), d.reason);
    else
        assert_string_equal(d.decided_by[0] ? "ok" : "", "ok");
}

static authz_code decide(authz *a, const char *token, const char *perm, const char *patient)
{
    authz_resource res = {.tenant_id = g_tenant, .patient_ref = patient};
    authz_decision d;
    base_result r = authz_authorize(a, token, perm, &res, NULL, &d);
    (void)r;
    return d.code;
}

/* Poll until a decision has `code`; the elapsed milliseconds, or -1 after timeout_ms. */
static int64_t wait_code(authz *a, const char *token, const char *perm, authz_code code, int64_t timeout_ms)
{
    int64_t t0 = t_mono_ms();
    for (;;) {
        if (decide(a, token, perm, NULL) == code)
            return t_mono_ms() - t0;
        if (t_mono_ms() - t0 > timeout_ms)
            return -1;
        t_sleep_ms(5);
    }
}

/* ---- the rules ------------------------------------------------------------------------------------- */

static void test_rules(void **state)
{
    (void)state;
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *bearer = t_token(&c, g_k1, true);
    char *bare = t_token(&c, g_k1, false);

    expect(g_a, bearer, "referral.review", g_tenant, NULL, AUTHZ_OK,
           "permission referral.review granted by role", "role");
    expect(g_a, bare, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    char lower[AUTHZ_MAX_TOKEN_LEN + 16];
    snprintf(lower, sizeof lower, "bearer   %s", bare);
    expect(g_a, lower, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");

    /* The claims come back with the decision. */
    authz_resource res = {.tenant_id = g_tenant};
    authz_decision d;
    authz_claims got;
    OK(authz_authorize(g_a, bearer, "referral.review", &res, &got, &d));
    assert_true(d.authenticated);
    assert_string_equal(got.sub, c.sub);
    assert_string_equal(got.sid, c.sid);
    assert_int_equal(got.perm_count, 3);

    /* 1. no token / garbage / wrong scheme */
    expect(g_a, NULL, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_MISSING, "");
    expect(g_a, "", "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_MISSING, "");
    expect(g_a, "Bearer ", "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_MISSING, "");
    expect(g_a, "Bearer abc", "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_MALFORMED,
           "");
    snprintf(lower, sizeof lower, "Basic %s", bare);
    expect(g_a, lower, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_MALFORMED, "");
    OK(authz_authorize(g_a, bearer, "referral.review", &res, &got, &d));
    base_result r = authz_authorize(g_a, "x", "referral.review", &res, &got, &d);
    assert_int_equal(r.err, BASE_ERR_UNAUTH);
    assert_false(d.authenticated);

    /* 3. tenant, permission */
    expect(g_a, bearer, "referral.review", "another-clinic", NULL, AUTHZ_PERMISSION_DENIED,
           "resource belongs to another tenant", "");
    expect(g_a, bearer, "referral.review", NULL, NULL, AUTHZ_PERMISSION_DENIED,
           "resource belongs to another tenant", "");
    expect(g_a, bearer, "audit.read", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
           "permission audit.read not granted", "");
    expect(g_a, bearer, "referral.review ", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
           "permission name malformed", "");
    /* A denial after authentication still gives the claims (for the audit of the denial). */
    r = authz_authorize(g_a, bearer, "audit.read", &res, &got, &d);
    assert_int_equal(r.err, BASE_ERR_DENIED);
    assert_true(d.authenticated);
    assert_string_equal(got.sub, c.sub);

    /* an enrolment-only token: only the enrolment permission, and only when it carries it */
    authz_claims e;
    const char *const enr_perms[] = {AUTHZ_PERM_MFA_ENROLL, "referral.review", NULL};
    t_claims(&e, g_tenant, enr_perms);
    e.enr = true;
    char *enr = t_token(&e, g_k1, true);
    expect(g_a, enr, AUTHZ_PERM_MFA_ENROLL, g_tenant, NULL, AUTHZ_OK, NULL, "role");
    expect(g_a, enr, "referral.review", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
           "token allows MFA enrolment only", "");
    expect(g_a, bearer, AUTHZ_PERM_MFA_ENROLL, g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
           "permission " AUTHZ_PERM_MFA_ENROLL " not granted", "");
    free(enr);

    /* 1. time and issuer */
    authz_claims x;
    t_claims(&x, g_tenant, g_perms);
    x.iat = t_now() - 400;
    x.nbf = x.iat;
    x.exp = x.iat + 300;
    char *expired = t_token(&x, g_k1, true);
    expect(g_a, expired, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_EXPIRED, "");
    free(expired);
    t_claims(&x, g_tenant, g_perms);
    x.nbf = t_now() + 120;
    x.exp = x.nbf + 60;
    char *early = t_token(&x, g_k1, true);
    expect(g_a, early, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_NOT_YET, "");
    free(early);
    t_claims(&x, g_tenant, g_perms);
    snprintf(x.iss, sizeof x.iss, "evil-identity");
    char *iss = t_token(&x, g_k1, true);
    expect(g_a, iss, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_ISSUER, "");
    free(iss);
    t_claims(&x, g_tenant, g_perms);
    snprintf(x.aud, sizeof x.aud, "partner-gateway");
    char *aud = t_token(&x, g_k1, true);
    expect(g_a, aud, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_AUDIENCE, "");
    free(aud);

    /* An authorizer expecting another issuer and audience accepts only those. */
    authz_config oc = {.cache = &g_cfg,
                       .fetch_jwks = t_fetch,
                       .fetch_arg = &g_src,
                       .issuer = "https://idp.example",
                       .audience = "alma-billing"};
    authz *other = NULL;
    OK(authz_new(&oc, &other));
    OK(authz_wait_ready(other, 5000));
    expect(other, bearer, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_ISSUER, "");
    t_claims(&x, g_tenant, g_perms);
    snprintf(x.iss, sizeof x.iss, "https://idp.example");
    snprintf(x.aud, sizeof x.aud, "alma-billing");
    char *ok_other = t_token(&x, g_k1, true);
    expect(other, ok_other, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    expect(g_a, ok_other, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_ISSUER, "");
    free(ok_other);
    authz_free(other);

    /* Caller bugs. */
    FAILS_WITH(authz_authorize(g_a, bearer, NULL, &res, NULL, &d), BASE_ERR_INVALID);
    assert_int_equal(d.code, AUTHZ_PERMISSION_DENIED);
    FAILS_WITH(authz_authorize(NULL, bearer, "referral.review", &res, NULL, &d), BASE_ERR_INVALID);
    FAILS_WITH(authz_authorize(g_a, bearer, "referral.review", &res, NULL, NULL), BASE_ERR_INVALID);
    free(bearer);
    free(bare);
}

/* ---- patient scope --------------------------------------------------------------------------------- */

static void raw_set(const char *what, const authz_claims *c, const char *patient, const char *value)
{
    char key[256];
    snprintf(key, sizeof key, "authz:%s:%s:%s:%s", what, c->tid, c->sub, patient);
    OK(cache_set(g_conn, key, value, strlen(value), 60000, CACHE_SET_ALWAYS, NULL));
}

static void test_patient_scope(void **state)
{
    (void)state;
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *tok = t_token(&c, g_k1, true);
    char patient[64], other_patient[64];
    t_id(patient, sizeof patient, "pt_");
    t_id(other_patient, sizeof other_patient, "pt_");
    const char *none = "no treating relationship or break-glass grant for this patient";
    int64_t now = t_now();

    /* absent */
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED, none, "");
    /* no or a malformed patient ref */
    expect(g_a, tok, "phi.read.clinical", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
           "patient-scoped permission without a valid patient reference", "");
    expect(g_a, tok, "phi.read.clinical", g_tenant, "pt_1:*", AUTHZ_PERMISSION_DENIED,
           "patient-scoped permission without a valid patient reference", "");
    /* opening a grant is not patient-scoped */
    expect(g_a, tok, "phi.break_glass", g_tenant, patient, AUTHZ_OK, NULL, "role");

    /* an active, open-ended relationship */
    OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_active1", "primary_care", now - 60,
                                 0));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK,
           "permission phi.read.clinical granted by role; treating relationship", "relationship:rel_active1");
    /* ... which gives nothing for another patient, nor without the permission */
    expect(g_a, tok, "phi.read.clinical", g_tenant, other_patient, AUTHZ_PERMISSION_DENIED, none, "");
    expect(g_a, tok, "phi.write.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED,
           "permission phi.write.clinical not granted", "");
    /* ... nor to another clinician of the tenant */
    authz_claims c2;
    t_claims(&c2, g_tenant, g_perms);
    char *tok2 = t_token(&c2, g_k1, true);
    expect(g_a, tok2, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED, none, "");

    /* with an end in the future; ended (a stale mirror key, written raw); not started yet */
    OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_ending", "covering", now - 60,
                                 now + 600));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK, NULL, "relationship:rel_ending");
    char v[128];
    snprintf(v, sizeof v, "rel_ended specialist %lld %lld", (long long)(now - 600), (long long)(now - 1));
    raw_set("rel", &c, patient, v);
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED, none, "");
    OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_future", "care_team", now + 600, 0));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED, none, "");
    /* the mirror deletes a relationship that is already over */
    OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_over", "care_team", now - 600,
                                 now - 5));
    char key[256];
    bool found = true;
    snprintf(key, sizeof key, "authz:rel:%s:%s:%s", g_tenant, c.sub, patient);
    OK(cache_get(g_conn, key, NULL, &found));
    assert_false(found);

    /* break-glass: active (with no relationship), expired, and active while the relationship has not started
     */
    OK(authz_mirror_break_glass(g_conn, g_tenant, c.sub, patient, "bg_open1", now + 900));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK,
           "permission phi.read.clinical granted by role; break-glass grant", "break_glass:bg_open1");
    OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_future", "care_team", now + 600, 0));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK, NULL, "break_glass:bg_open1");
    snprintf(v, sizeof v, "bg_old %lld", (long long)(now - 1));
    raw_set("bg", &c, patient, v);
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED, none, "");
    /* the relationship wins over a grant when both are active */
    OK(authz_mirror_break_glass(g_conn, g_tenant, c.sub, patient, "bg_open2", now + 900));
    OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_active2", "primary_care", now - 5,
                                 0));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK, NULL, "relationship:rel_active2");
    OK(authz_unmirror_relationship(g_conn, g_tenant, c.sub, patient));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK, NULL, "break_glass:bg_open2");
    OK(authz_unmirror_break_glass(g_conn, g_tenant, c.sub, patient));
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED, none, "");

    /* malformed mirror values fail closed, as unavailable (identity wrote something we cannot read) */
    static const char *const bad_rel[] = {"rel_x primary_care",      "rel_x primary_care 1 0 extra",
                                          "rel_x  primary_care 1 0", "rel:x primary_care 1 0",
                                          "rel_x primary_care -1 0", "rel_x primary_care 1 x",
                                          "rel_x PRIMARY 1 0",       ""};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_rel); i++) {
        raw_set("rel", &c, patient, bad_rel[i]);
        expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_UNAVAILABLE,
               "care relationship lookup unavailable", "");
    }
    OK(authz_unmirror_relationship(g_conn, g_tenant, c.sub, patient));
    raw_set("bg", &c, patient, "bg_x");
    expect(g_a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_UNAVAILABLE,
           "break-glass lookup unavailable", "");
    OK(authz_unmirror_break_glass(g_conn, g_tenant, c.sub, patient));

    /* publisher argument checks: nothing malformed reaches a key */
    FAILS_WITH(authz_mirror_relationship(g_conn, "a:b", c.sub, patient, "rel_1", "primary_care", now, 0),
               BASE_ERR_INVALID);
    FAILS_WITH(authz_mirror_relationship(g_conn, g_tenant, "usr_*", patient, "rel_1", "primary_care", now, 0),
               BASE_ERR_INVALID);
    FAILS_WITH(authz_mirror_relationship(g_conn, g_tenant, c.sub, "pt_*", "rel_1", "primary_care", now, 0),
               BASE_ERR_INVALID);
    FAILS_WITH(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel 1", "primary_care", now, 0),
               BASE_ERR_INVALID);
    FAILS_WITH(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_1", "Primary", now, 0),
               BASE_ERR_INVALID);
    FAILS_WITH(
        authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_1", "primary_care", now, now - 1),
        BASE_ERR_INVALID);
    FAILS_WITH(authz_mirror_break_glass(g_conn, g_tenant, c.sub, patient, "bg 1", now + 10),
               BASE_ERR_INVALID);
    free(tok);
    free(tok2);
}

/* ---- revocation ------------------------------------------------------------------------------------- */

/* authz_authenticate: the token's own claims (any permission, any tenant), refused like authorize refuses a
 * bad or revoked token. */
static void test_authenticate(void **state)
{
    (void)state;
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    c.enr = true; /* an enrolment-only token still authenticates: what it may do is authorize's question */
    char *bearer = t_token(&c, g_k1, true);
    authz_decision d;
    OK(authz_authenticate(g_a, bearer, &got, &d));
    assert_true(d.authenticated);
    assert_int_equal(d.code, AUTHZ_OK);
    assert_string_equal(got.sub, c.sub);
    assert_string_equal(got.tid, g_tenant);
    assert_true(got.enr);
    assert_int_equal(authz_authenticate(g_a, NULL, &got, &d).err, BASE_ERR_UNAUTH);
    assert_false(d.authenticated);
    assert_int_equal(authz_authenticate(g_a, "Bearer abc", &got, &d).err, BASE_ERR_UNAUTH);
    assert_int_equal(authz_authenticate(g_a, bearer, NULL, &d).err, BASE_ERR_INVALID);
    OK(authz_revoke_session(g_conn, c.sid, 0));
    int64_t t = wait_code(g_a, bearer, "referral.review", AUTHZ_UNAUTHENTICATED, 1000);
    assert_true(t >= 0);
    assert_int_equal(authz_authenticate(g_a, bearer, &got, &d).err, BASE_ERR_UNAUTH);
    assert_string_equal(d.reason, "token revoked");
    free(bearer);
}

static void test_revocation_two_services(void **state)
{
    (void)state;
    authz_claims c, other_session;
    t_claims(&c, g_tenant, g_perms);
    other_session = c;
    t_id(other_session.sid, sizeof other_session.sid, "ses_");
    t_id(other_session.jti, sizeof other_session.jti, "tok_");
    char *tok = t_token(&c, g_k1, true);
    char *tok_other = t_token(&other_session, g_k1, true);
    expect(g_a, tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    expect(g_b, tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");

    /* Revoke the session: both services refuse the token within a second; the other session lives on. */
    OK(authz_revoke_session(g_conn, c.sid, 0));
    int64_t ta = wait_code(g_a, tok, "referral.review", AUTHZ_UNAUTHENTICATED, 1000);
    int64_t tb = wait_code(g_b, tok, "referral.review", AUTHZ_UNAUTHENTICATED, 1000);
    printf("# session revocation seen after %lld ms (A) and %lld ms (B)\n", (long long)ta, (long long)tb);
    assert_true(ta >= 0 && tb >= 0);
    expect(g_a, tok, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, "token revoked", "");
    expect(g_b, tok, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, "token revoked", "");
    expect(g_a, tok_other, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    /* it is in Redis too, with a TTL */
    char key[128];
    int64_t ttl = 0;
    snprintf(key, sizeof key, "authz:revoked:sid:%s", c.sid);
    OK(cache_ttl(g_conn, key, &ttl));
    assert_true(ttl > (AUTHZ_DEFAULT_REVOCATION_TTL_S - 10) * 1000 &&
                ttl <= AUTHZ_DEFAULT_REVOCATION_TTL_S * 1000);

    /* Revoke the principal as of now: every token issued at or before now is refused by both... */
    int64_t now = t_now();
    OK(authz_revoke_principal(g_conn, c.sub, now, 0));
    ta = wait_code(g_a, tok_other, "referral.review", AUTHZ_UNAUTHENTICATED, 1000);
    tb = wait_code(g_b, tok_other, "referral.review", AUTHZ_UNAUTHENTICATED, 1000);
    printf("# principal revocation seen after %lld ms (A) and %lld ms (B)\n", (long long)ta, (long long)tb);
    assert_true(ta >= 0 && tb >= 0);
    /* ...but a token issued after it (a new login) is fine. */
    authz_claims fresh = other_session;
    t_id(fresh.sid, sizeof fresh.sid, "ses_");
    fresh.iat = now + 1;
    fresh.nbf = now + 1;
    fresh.exp = now + 301;
    char *tok_fresh = t_token(&fresh, g_k1, true);
    expect(g_a, tok_fresh, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    expect(g_b, tok_fresh, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");

    /* A lower not-before later (an out-of-order publisher) never lowers what Redis keeps. */
    OK(authz_revoke_principal(g_conn, c.sub, now - 100, 0));
    cache_bytes v = {NULL, 0};
    bool found = false;
    snprintf(key, sizeof key, "authz:revoked:sub:%s", c.sub);
    OK(cache_get(g_conn, key, &v, &found));
    assert_true(found);
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)now);
    assert_string_equal((const char *)v.data, want);
    cache_bytes_free(&v);
    t_sleep_ms(100);
    expect(g_a, tok_other, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, "token revoked", "");

    /* Publisher argument checks. */
    FAILS_WITH(authz_revoke_session(g_conn, "ses_1", 0), BASE_ERR_INVALID);
    FAILS_WITH(authz_revoke_principal(g_conn, "usr_*", now, 0), BASE_ERR_INVALID);
    FAILS_WITH(authz_revoke_session(g_conn, c.sid, -1), BASE_ERR_INVALID);
    free(tok);
    free(tok_other);
    free(tok_fresh);
}

/* Revocations written while no authorizer listened are found by the SCAN of a new one. */
static void test_reload_at_start(void **state)
{
    (void)state;
    authz_claims s1, s2;
    t_claims(&s1, g_tenant, g_perms);
    t_claims(&s2, g_tenant, g_perms);
    char key[128];
    snprintf(key, sizeof key, "authz:revoked:sid:%s", s1.sid);
    OK(cache_set(g_conn, key, "1", 1, 60000, CACHE_SET_ALWAYS, NULL));
    snprintf(key, sizeof key, "authz:revoked:sub:%s", s2.sub);
    char epoch[32];
    snprintf(epoch, sizeof epoch, "%lld", (long long)t_now());
    OK(cache_set(g_conn, key, epoch, strlen(epoch), 60000, CACHE_SET_ALWAYS, NULL));
    char *t1 = t_token(&s1, g_k1, true);
    char *t2 = t_token(&s2, g_k1, true);

    authz *fresh = new_authz(&g_cfg, &g_src, 0, 0);
    OK(authz_wait_ready(fresh, 5000));
    expect(fresh, t1, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, "token revoked", "");
    expect(fresh, t2, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, "token revoked", "");
    authz_free(fresh);
    /* the long-running ones did not hear about them (no PUBLISH): the reload is what found them */
    expect(g_a, t1, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    free(t1);
    free(t2);
}

/* ---- keys -----------------------------------------------------------------------------------------------
 */

static void test_key_rotation(void **state)
{
    (void)state;
    t_jwks_source src = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, false};
    const acrypto_ed25519_key *only_k1[] = {g_k1, NULL};
    t_serve_keys(&src, only_k1);
    authz *a = new_authz(&g_cfg, &src, 0, 0); /* defaults: refresh 60 s, refetch at most every 5 s */
    OK(authz_wait_ready(a, 5000));
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *by_k1 = t_token(&c, g_k1, true);
    char *by_k2 = t_token(&c, g_k2, true);
    char *by_k3 = t_token(&c, g_k3, true);
    expect(a, by_k1, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    int f0 = t_fetches(&src);

    /* identity rotates: the JWKS now has k2 (current) and k1 (previous). The first k2 token triggers one
     * refetch and verifies; k1 tokens keep verifying. */
    const acrypto_ed25519_key *k2_k1[] = {g_k2, g_k1, NULL};
    t_serve_keys(&src, k2_k1);
    expect(a, by_k2, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    assert_int_equal(t_fetches(&src), f0 + 1);
    expect(a, by_k1, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    expect(a, by_k2, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    assert_int_equal(t_fetches(&src), f0 + 1);

    /* An unknown kid within the rate limit: refused, and no fetch (a flood of made-up kids costs nothing). */
    for (int i = 0; i < 20; i++)
        expect(a, by_k3, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_KID_UNKNOWN, "");
    assert_int_equal(t_fetches(&src), f0 + 1);

    /* The next rotation drops k1: after a refresh its tokens are refused. */
    const acrypto_ed25519_key *k3_k2[] = {g_k3, g_k2, NULL};
    t_serve_keys(&src, k3_k2);
    OK(authz_refresh_keys(a));
    expect(a, by_k1, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_KID_UNKNOWN, "");
    expect(a, by_k3, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    expect(a, by_k2, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");

    /* A JWKS that does not parse, or a failing fetch, keeps the keys we had. */
    pthread_mutex_lock(&src.lock);
    free(src.jwks);
    src.jwks = strdup("{\"keys\":[{\"kty\":\"RSA\"}]}");
    pthread_mutex_unlock(&src.lock);
    FAILS_WITH(authz_refresh_keys(a), BASE_ERR_INVALID);
    expect(a, by_k3, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    pthread_mutex_lock(&src.lock);
    src.fail = true;
    pthread_mutex_unlock(&src.lock);
    FAILS_WITH(authz_refresh_keys(a), BASE_ERR_UNAVAILABLE);
    expect(a, by_k3, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    authz_free(a);

    /* The refetch limit expires: with 300 ms, a second unknown kid refetches only after 300 ms. */
    pthread_mutex_lock(&src.lock);
    src.fail = false;
    pthread_mutex_unlock(&src.lock);
    t_serve_keys(&src, only_k1);
    a = new_authz(&g_cfg, &src, 0, 300);
    OK(authz_wait_ready(a, 5000));
    int f1 = t_fetches(&src);
    expect(a, by_k2, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_KID_UNKNOWN, "");
    assert_int_equal(t_fetches(&src), f1 + 1);
    t_serve_keys(&src, k2_k1);
    expect(a, by_k2, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_KID_UNKNOWN, "");
    assert_int_equal(t_fetches(&src), f1 + 1);
    t_sleep_ms(350);
    expect(a, by_k2, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    assert_int_equal(t_fetches(&src), f1 + 2);
    authz_free(a);

    /* The periodic refresh. */
    a = new_authz(&g_cfg, &src, 100, 0);
    OK(authz_wait_ready(a, 5000));
    int f2 = t_fetches(&src);
    t_sleep_ms(550);
    assert_true(t_fetches(&src) >= f2 + 3);
    authz_free(a);

    /* No keys yet (identity not reachable at start): unavailable, not unauthenticated. */
    pthread_mutex_lock(&src.lock);
    src.fail = true;
    pthread_mutex_unlock(&src.lock);
    a = new_authz(&g_cfg, &src, 0, 0);
    FAILS_WITH(authz_wait_ready(a, 500), BASE_ERR_UNAVAILABLE);
    expect(a, by_k1, "referral.review", g_tenant, NULL, AUTHZ_UNAVAILABLE, NULL, "");
    pthread_mutex_lock(&src.lock);
    src.fail = false;
    pthread_mutex_unlock(&src.lock);
    OK(authz_wait_ready(a, 3000)); /* retried every second while failing */
    expect(a, by_k1, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL, "role");
    authz_free(a);

    free(by_k1);
    free(by_k2);
    free(by_k3);
    free(src.jwks);
}

/* ---- Redis unreachable ----------------------------------------------------------------------------------
 */

static void test_redis_unreachable(void **state)
{
    (void)state;
    cache_config down = {.host = "127.0.0.1", .port = testenv_closed_port(), .connect_timeout_ms = 200};
    authz *a = new_authz(&down, &g_src, 0, 0);
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *tok = t_token(&c, g_k1, true);
    char patient[64];
    t_id(patient, sizeof patient, "pt_");
    FAILS_WITH(authz_wait_ready(a, 1500), BASE_ERR_UNAVAILABLE);
    expect(a, tok, "referral.review", g_tenant, NULL, AUTHZ_UNAVAILABLE, "revocation feed unavailable", "");
    expect(a, tok, "phi.read.clinical", g_tenant, patient, AUTHZ_UNAVAILABLE, "revocation feed unavailable",
           "");
    expect(a, NULL, "referral.review", g_tenant, NULL, AUTHZ_UNAVAILABLE, "revocation feed unavailable", "");
    assert_false(authz_ready(a));
    authz_free(a);
    free(tok);
}

/* ---- many threads ------------------------------------------------------------------------------------- */

typedef struct worker {
    pthread_t thread;
    const char *live;    /* never revoked: must always be allowed */
    const char *doomed;  /* revoked during the run */
    const char *patient; /* with a relationship */
    _Atomic bool *stop;
    long calls;
    long live_failures;
    bool doomed_denied_at_end;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    authz_resource res = {.tenant_id = g_tenant, .patient_ref = w->patient};
    authz_decision d;
    authz_claims c;
    while (!atomic_load(w->stop)) {
        base_result r = authz_authorize(
            g_a, w->live, (w->calls & 1) ? "phi.read.clinical" : "referral.review", &res, &c, &d);
        if (!base_is_ok(r))
            w->live_failures++;
        r = authz_authorize(g_b, w->doomed, "referral.review", &res, NULL, &d);
        w->doomed_denied_at_end = d.code == AUTHZ_UNAUTHENTICATED;
        w->calls++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    enum { N = 4 };
    authz_claims live, doomed;
    t_claims(&live, g_tenant, g_perms);
    t_claims(&doomed, g_tenant, g_perms);
    char *tl = t_token(&live, g_k1, true);
    char *td = t_token(&doomed, g_k1, true);
    char patient[64];
    t_id(patient, sizeof patient, "pt_");
    OK(authz_mirror_relationship(g_conn, g_tenant, live.sub, patient, "rel_threads", "primary_care",
                                 t_now() - 5, 0));
    _Atomic bool stop = false;
    worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker){.live = tl, .doomed = td, .patient = patient, .stop = &stop};
        assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    }
    /* Meanwhile: unrelated revocations, the doomed session, key refreshes. */
    char sid[64];
    for (int i = 0; i < 50; i++) {
        OK(authz_revoke_session(g_conn, t_id(sid, sizeof sid, "ses_"), 0));
        if (i % 10 == 0)
            OK(authz_refresh_keys(g_a));
        t_sleep_ms(10);
    }
    OK(authz_revoke_session(g_conn, doomed.sid, 0));
    t_sleep_ms(1000);
    atomic_store(&stop, true);
    long calls = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].thread, NULL);
        calls += w[i].calls;
        assert_int_equal(w[i].live_failures, 0);
        assert_true(w[i].doomed_denied_at_end);
    }
    printf("# %d threads, %ld call pairs\n", N, calls);
    assert_true(calls > N);
    free(tl);
    free(td);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_patient_scope),
        cmocka_unit_test(test_authenticate),
        cmocka_unit_test(test_revocation_two_services),
        cmocka_unit_test(test_reload_at_start),
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_redis_unreachable),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
