/* The verified-token cache (common/authz/token_cache.c; README.md, "Verified-token cache").
 *
 * White-box, the cache alone (it includes internal.h): a hit needs the exact bytes (every single-byte change,
 * a prefix and an extension miss even when forced into the same set), the same key-set generation; the
 * claims come back whole; the replacement order (empty or stale, expired, then the first to expire); what
 * does not fit is not cached; readers racing writers on one set never get another token's claims.
 *
 * Black-box, authorizers against the harness Redis (fixture "redis") with a clock the test moves: a cached
 * token is still refused once expired or before nbf, after its session or its principal is revoked, after
 * the rotation that drops its key, for another tenant, without the permission, for an enrolment token, and
 * without a relationship (whose window is judged by the same clock); a token one byte away from a cached
 * one is verified on its own; and threads get the same decisions from a cached, an uncached and a tiny
 * churning authorizer while keys are refreshed. Every decision is compared with an authorizer whose cache
 * is disabled (cache_entries -1). */
#include "authz_test.h"

#include "authz/internal.h"
#include "testenv.h"

#include <stdatomic.h>

static cache_config g_cfg;
static cache_conn *g_conn;
static acrypto_ed25519_key *g_k1, *g_k2, *g_k3;
static t_jwks_source g_src = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, false};
static authz *g_a;  /* the cache on (default size) */
static authz *g_nc; /* the cache off: the reference */
static char g_tenant[32];
static _Atomic int64_t g_clock; /* the time the authorizers see; 0: the real clock */

static const char *const g_perms[] = {"referral.review", "phi.read.clinical", NULL};

static int64_t test_clock(void *arg)
{
    (void)arg;
    int64_t t = atomic_load(&g_clock);
    return t ? t : t_now();
}

static authz *new_authz(t_jwks_source *src, int cache_entries)
{
    authz_config c = {.cache = &g_cfg,
                      .fetch_jwks = t_fetch,
                      .fetch_arg = src,
                      .cache_entries = cache_entries,
                      .now_s = test_clock};
    authz *a = NULL;
    OK(authz_new(&c, &a));
    OK(authz_wait_ready(a, 5000));
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
    g_a = new_authz(&g_src, 0);
    g_nc = new_authz(&g_src, -1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    authz_free(g_a);
    authz_free(g_nc);
    cache_conn_free(g_conn);
    cache_thread_conn_release();
    acrypto_ed25519_free(g_k1);
    acrypto_ed25519_free(g_k2);
    acrypto_ed25519_free(g_k3);
    free(g_src.jwks);
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------------------- */

static bool claims_equal(const authz_claims *x, const authz_claims *y)
{
    if (strcmp(x->iss, y->iss) || strcmp(x->aud, y->aud) || strcmp(x->sub, y->sub) ||
        strcmp(x->tid, y->tid) || strcmp(x->sid, y->sid) || strcmp(x->jti, y->jti) || x->iat != y->iat ||
        x->nbf != y->nbf || x->exp != y->exp || x->mfa != y->mfa || x->enr != y->enr ||
        x->role_count != y->role_count || x->perm_count != y->perm_count)
        return false;
    for (size_t i = 0; i < x->role_count; i++) {
        if (strcmp(x->roles[i], y->roles[i]) != 0)
            return false;
    }
    for (size_t i = 0; i < x->perm_count; i++) {
        if (strcmp(x->perm[i], y->perm[i]) != 0)
            return false;
    }
    return true;
}

static const char *bare(const char *token)
{
    return strncmp(token, "Bearer ", 7) == 0 ? token + 7 : token;
}

/* Whether the authorizer's cache holds exactly this token, valid for its current key set. */
static bool in_cache(authz *a, const char *token)
{
    const char *t = bare(token);
    size_t n = strlen(t);
    authz_claims c;
    return authz__tcache_get(&a->tcache, authz__tcache_hash(&a->tcache, t, n), t, n,
                             atomic_load(&a->keys_gen), &c);
}

typedef struct outcome {
    base_err err;
    authz_decision d;
    authz_claims c;
} outcome;

static outcome run(authz *a, const char *token, const char *perm, const char *tenant, const char *patient)
{
    outcome o;
    memset(&o, 0, sizeof o);
    authz_resource res = {.tenant_id = tenant, .patient_ref = patient};
    o.err = authz_authorize(a, token, perm, &res, &o.c, &o.d).err;
    return o;
}

static bool same_outcome(const outcome *x, const outcome *y)
{
    return x->err == y->err && x->d.code == y->d.code && x->d.authenticated == y->d.authenticated &&
           strcmp(x->d.reason, y->d.reason) == 0 && strcmp(x->d.decided_by, y->d.decided_by) == 0 &&
           (!x->d.authenticated || claims_equal(&x->c, &y->c));
}

/* The decision of the cached authorizer (called twice: the first call may fill the cache, the second is
 * then a hit) is the expected one, with the reason when given, and is what the uncached one decides. */
static void both(const char *token, const char *perm, const char *tenant, const char *patient,
                 authz_code code, const char *reason)
{
    outcome ref = run(g_nc, token, perm, tenant, patient);
    for (int i = 0; i < 2; i++) {
        outcome got = run(g_a, token, perm, tenant, patient);
        if (got.d.code != code || (reason && strcmp(got.d.reason, reason) != 0))
            fail_msg("%s: expected %d \"%s\", got %d \"%s\"", perm, code, reason ? reason : "*", got.d.code,
                     got.d.reason);
        if (!same_outcome(&got, &ref))
            fail_msg("%s: cached %d \"%s\" by \"%s\" (auth %d), uncached %d \"%s\" by \"%s\" (auth %d)", perm,
                     got.d.code, got.d.reason, got.d.decided_by, got.d.authenticated, ref.d.code,
                     ref.d.reason, ref.d.decided_by, ref.d.authenticated);
    }
}

static authz_code code_of(authz *a, const char *token, const char *perm)
{
    return run(a, token, perm, g_tenant, NULL).d.code;
}

/* Poll until a decision has `code`; the elapsed milliseconds, or -1 after timeout_ms. */
static int64_t wait_code(authz *a, const char *token, const char *perm, authz_code code, int64_t timeout_ms)
{
    int64_t t0 = t_mono_ms();
    for (;;) {
        if (code_of(a, token, perm) == code)
            return t_mono_ms() - t0;
        if (t_mono_ms() - t0 > timeout_ms)
            return -1;
        t_sleep_ms(5);
    }
}

/* A synthetic token (the cache does not parse it): n bytes of base64url characters from a seed. */
static char *fake_token(size_t n, unsigned seed)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    char *t = malloc(n + 1);
    assert_non_null(t);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        t[i] = alphabet[x % (sizeof alphabet - 1)];
    }
    t[n] = '\0';
    return t;
}

static void put(authz__tcache *c, const char *t, uint64_t gen, int64_t now, const authz_claims *cl)
{
    size_t n = strlen(t);
    authz__tcache_put(c, authz__tcache_hash(c, t, n), t, n, gen, now, cl);
}

static bool get(const authz__tcache *c, const char *t, uint64_t gen, authz_claims *cl)
{
    size_t n = strlen(t);
    return authz__tcache_get(c, authz__tcache_hash(c, t, n), t, n, gen, cl);
}

/* ---- white-box: the cache alone ------------------------------------------------------------------------ */

static void test_cache_exact_bytes(void **state)
{
    (void)state;
    authz__tcache c;
    OK(authz__tcache_init(&c, 16));
    assert_int_equal(authz__tcache_capacity(&c), 16);
    authz_claims cl, got;
    const char *const perms[] = {"referral.review", "phi.read.clinical", "a.b", NULL};
    t_claims(&cl, g_tenant, perms);
    cl.role_count = 2;
    snprintf(cl.roles[1], sizeof cl.roles[1], "care_coordinator");
    cl.enr = true;
    char *tok = t_token(&cl, g_k1, false);
    size_t n = strlen(tok);
    uint64_t h = authz__tcache_hash(&c, tok, n);
    int64_t now = t_now();

    assert_false(authz__tcache_get(&c, h, tok, n, 7, &got));
    authz__tcache_put(&c, h, tok, n, 7, now, &cl);
    assert_true(authz__tcache_get(&c, h, tok, n, 7, &got));
    assert_true(claims_equal(&got, &cl));
    /* another key-set generation: a miss */
    assert_false(authz__tcache_get(&c, h, tok, n, 8, &got));

    /* Every single-byte change misses, with its own hash and even looked up with the original's hash (the
     * same set and the same hash word: only the full comparison can refuse it). */
    char *t2 = malloc(n + 2);
    assert_non_null(t2);
    for (size_t i = 0; i < n; i++) {
        memcpy(t2, tok, n + 1);
        t2[i] = (char)(t2[i] == 'A' ? 'B' : 'A');
        assert_false(get(&c, t2, 7, &got));
        assert_false(authz__tcache_get(&c, h, t2, n, 7, &got));
    }
    /* a prefix and an extension miss too */
    assert_false(authz__tcache_get(&c, h, tok, n - 1, 7, &got));
    assert_false(authz__tcache_get(&c, h, tok, 8, 7, &got));
    memcpy(t2, tok, n);
    t2[n] = 'A';
    t2[n + 1] = '\0';
    assert_false(authz__tcache_get(&c, h, t2, n + 1, 7, &got));
    assert_true(authz__tcache_get(&c, h, tok, n, 7, &got));
    free(t2);
    free(tok);

    /* Every length around the word size round-trips, and one byte off at the end (inside the last, padded
     * word) misses. */
    for (size_t len = 1; len <= 41; len++) {
        char *ft = fake_token(len, (unsigned)len);
        t_id(cl.jti, sizeof cl.jti, "tok_");
        put(&c, ft, 1, now, &cl);
        assert_true(get(&c, ft, 1, &got));
        assert_true(claims_equal(&got, &cl));
        uint64_t fh = authz__tcache_hash(&c, ft, len);
        ft[len - 1] = (char)(ft[len - 1] == 'A' ? 'B' : 'A');
        assert_false(authz__tcache_get(&c, fh, ft, len, 1, &got));
        free(ft);
    }
    authz__tcache_destroy(&c);

    /* Sizes: disabled, rounding, bounds. */
    OK(authz__tcache_init(&c, -1));
    assert_false(authz__tcache_enabled(&c));
    assert_int_equal(authz__tcache_capacity(&c), 0);
    put(&c, "abc", 1, now, &cl);
    assert_false(get(&c, "abc", 1, &got));
    authz__tcache_destroy(&c);
    OK(authz__tcache_init(&c, 1));
    assert_int_equal(authz__tcache_capacity(&c), AUTHZ__TCACHE_WAYS);
    authz__tcache_destroy(&c);
    OK(authz__tcache_init(&c, 5));
    assert_int_equal(authz__tcache_capacity(&c), 8);
    authz__tcache_destroy(&c);
    OK(authz__tcache_init(&c, 0));
    assert_int_equal(authz__tcache_capacity(&c), AUTHZ__TCACHE_DEFAULT_ENTRIES);
    authz__tcache_destroy(&c);
    FAILS_WITH(authz__tcache_init(&c, -2), BASE_ERR_INVALID);
    FAILS_WITH(authz__tcache_init(&c, AUTHZ__TCACHE_MAX_ENTRIES + 1), BASE_ERR_INVALID);
}

static void test_cache_replacement(void **state)
{
    (void)state;
    authz__tcache c;
    OK(authz__tcache_init(&c, 4)); /* one set: every token competes for the same four entries */
    authz_claims cl[7], got;
    char *t[7];
    for (int i = 0; i < 7; i++) {
        t_claims(&cl[i], g_tenant, g_perms);
        cl[i].iat = 0;
        cl[i].nbf = 0;
        cl[i].exp = 1000 * (i + 1); /* t[0] expires first */
        t[i] = fake_token(300 + (size_t)i, 100u + (unsigned)i);
    }
    /* four fit; the same token again takes no second entry */
    for (int i = 0; i < 4; i++)
        put(&c, t[i], 1, 0, &cl[i]);
    put(&c, t[2], 1, 0, &cl[2]);
    for (int i = 0; i < 4; i++)
        assert_true(get(&c, t[i], 1, &got));
    /* a fifth evicts the one that expires first */
    put(&c, t[4], 1, 0, &cl[4]);
    assert_false(get(&c, t[0], 1, &got));
    for (int i = 1; i < 5; i++)
        assert_true(get(&c, t[i], 1, &got));
    /* an expired one goes before one that expires first (t[1] expired: now - leeway >= 2000) */
    put(&c, t[5], 1, 2000 + AUTHZ_LEEWAY_S, &cl[5]);
    assert_false(get(&c, t[1], 1, &got));
    for (int i = 2; i < 6; i++)
        assert_true(get(&c, t[i], 1, &got));
    /* an entry of an older key-set generation goes first of all */
    put(&c, t[6], 2, 0, &cl[6]);
    assert_true(get(&c, t[6], 2, &got));
    assert_true(claims_equal(&got, &cl[6]));
    int left = 0;
    for (int i = 2; i < 6; i++)
        left += get(&c, t[i], 1, &got);
    assert_int_equal(left, 3);
    for (int i = 0; i < 7; i++)
        free(t[i]);

    /* What does not fit is not cached: claims too big (128 permissions of 64 characters), a token too long.
     * A long token with small claims is. */
    authz_claims big;
    t_claims(&big, g_tenant, NULL);
    big.perm_count = AUTHZ_MAX_PERMS;
    for (size_t i = 0; i < big.perm_count; i++)
        snprintf(big.perm[i], sizeof big.perm[i], "p.%061zu", i);
    char *small = fake_token(900, 7);
    put(&c, small, 3, 0, &big);
    assert_false(get(&c, small, 3, &got));
    char *huge = fake_token(AUTHZ_MAX_TOKEN_LEN, 8);
    put(&c, huge, 3, 0, &cl[0]);
    assert_false(get(&c, huge, 3, &got));
    char *longer = fake_token(3000, 9);
    put(&c, longer, 3, 0, &cl[0]);
    assert_true(get(&c, longer, 3, &got));
    assert_true(claims_equal(&got, &cl[0]));
    char *over = fake_token(AUTHZ_MAX_TOKEN_LEN + 1, 10);
    put(&c, over, 3, 0, &cl[0]);
    assert_false(get(&c, over, 3, &got));
    free(small);
    free(huge);
    free(longer);
    free(over);
    authz__tcache_destroy(&c);
}

/* Readers racing writers on one set: a hit always returns the claims of the token looked up. */
enum { RACE_TOKENS = 12 };

typedef struct race {
    authz__tcache *c;
    char *tokens[RACE_TOKENS];
    authz_claims claims[RACE_TOKENS];
    _Atomic bool stop;
    _Atomic long hits, misses, wrong, puts;
} race;

typedef struct race_thread {
    pthread_t thread;
    race *r;
    unsigned seed;
    bool writer;
} race_thread;

static void *race_main(void *arg)
{
    race_thread *rt = arg;
    race *r = rt->r;
    uint32_t x = rt->seed * 2654435761u + 7;
    authz_claims got;
    long hits = 0, misses = 0, wrong = 0, puts = 0;
    while (!atomic_load(&r->stop)) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t i = x % RACE_TOKENS;
        if (rt->writer) {
            put(r->c, r->tokens[i], 1, 0, &r->claims[i]);
            puts++;
        } else if (get(r->c, r->tokens[i], 1, &got)) {
            hits++;
            wrong += !claims_equal(&got, &r->claims[i]);
        } else {
            misses++;
        }
    }
    atomic_fetch_add(&r->hits, hits);
    atomic_fetch_add(&r->misses, misses);
    atomic_fetch_add(&r->wrong, wrong);
    atomic_fetch_add(&r->puts, puts);
    return NULL;
}

static void test_cache_race(void **state)
{
    (void)state;
    authz__tcache c;
    OK(authz__tcache_init(&c, 4));
    static race r; /* large: the claims */
    memset(&r, 0, sizeof r);
    r.c = &c;
    for (int i = 0; i < RACE_TOKENS; i++) {
        const char *const perms[] = {"a.b", "c.d", "e.f", "g.h", "i.j", NULL};
        t_claims(&r.claims[i], g_tenant, perms + i % 5);
        r.claims[i].exp = 2000 + i; /* all distinct: every put has a victim */
        /* Tokens that differ in their first word only: a reader that compared the first word of one token
         * and then read the rest after a writer replaced it with another would see a match. Only the
         * sequence check can turn that into a miss. */
        r.tokens[i] = fake_token(700, 300u);
        snprintf(r.tokens[i], 9, "tok%05d", i);
        r.tokens[i][8] = 'x';
    }
    race_thread th[4];
    for (int i = 0; i < 4; i++) {
        th[i] = (race_thread){.r = &r, .seed = (unsigned)i + 1, .writer = i < 2};
        assert_int_equal(pthread_create(&th[i].thread, NULL, race_main, &th[i]), 0);
    }
    t_sleep_ms(1500);
    atomic_store(&r.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i].thread, NULL);
    printf("# race: %ld puts, %ld hits, %ld misses, %ld wrong\n", atomic_load(&r.puts), atomic_load(&r.hits),
           atomic_load(&r.misses), atomic_load(&r.wrong));
    assert_int_equal(atomic_load(&r.wrong), 0);
    assert_true(atomic_load(&r.hits) > 0);
    for (int i = 0; i < RACE_TOKENS; i++)
        free(r.tokens[i]);
    authz__tcache_destroy(&c);
}

/* ---- black-box: the authorizer ------------------------------------------------------------------------- */

static void test_config(void **state)
{
    (void)state;
    authz_config c = {.cache = &g_cfg, .fetch_jwks = t_fetch, .fetch_arg = &g_src, .cache_entries = -2};
    authz *a = NULL;
    FAILS_WITH(authz_new(&c, &a), BASE_ERR_INVALID);
    c.cache_entries = AUTHZ__TCACHE_MAX_ENTRIES + 1;
    FAILS_WITH(authz_new(&c, &a), BASE_ERR_INVALID);
    assert_int_equal(authz__tcache_capacity(&g_a->tcache), AUTHZ__TCACHE_DEFAULT_ENTRIES);
    assert_false(authz__tcache_enabled(&g_nc->tcache));
}

/* A cached token is judged by the clock on every call: exp and nbf with the leeway, relationship windows. */
static void test_cached_times(void **state)
{
    (void)state;
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *tok = t_token(&c, g_k1, true);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    assert_true(in_cache(g_a, tok));
    assert_false(in_cache(g_nc, tok));
    int64_t now = t_now();

    /* (Moves of a few minutes only: the revocation feed expires what it knows by this clock too.) */
    atomic_store(&g_clock, c.exp + AUTHZ_LEEWAY_S - 1);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    atomic_store(&g_clock, c.exp + AUTHZ_LEEWAY_S);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_EXPIRED);
    atomic_store(&g_clock, c.exp + 120);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_EXPIRED);
    assert_true(in_cache(g_a, tok)); /* still there: refused on the hit path itself */
    atomic_store(&g_clock, c.nbf - AUTHZ_LEEWAY_S - 1);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_NOT_YET);
    atomic_store(&g_clock, c.nbf - AUTHZ_LEEWAY_S);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    atomic_store(&g_clock, 0);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);

    /* A relationship that ends in 100 s: allowed now, not once the clock is past its end. */
    char patient[64];
    t_id(patient, sizeof patient, "pt_");
    OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_cache", "primary_care", now - 10,
                                 now + 100));
    both(tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK, NULL);
    atomic_store(&g_clock, now + 99);
    both(tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK, NULL);
    atomic_store(&g_clock, now + 100);
    both(tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED,
         "no treating relationship or break-glass grant for this patient");
    atomic_store(&g_clock, 0);
    OK(authz_unmirror_relationship(g_conn, g_tenant, c.sub, patient));
    assert_true(in_cache(g_a, tok));
    free(tok);

    /* An expired token is never cached (verification failed). */
    authz_claims old;
    t_claims(&old, g_tenant, g_perms);
    old.iat = now - 400;
    old.nbf = now - 400;
    old.exp = now - 100;
    char *expired = t_token(&old, g_k1, true);
    both(expired, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, AUTHZ_MSG_EXPIRED);
    assert_false(in_cache(g_a, expired));
    free(expired);
}

static void test_cached_revocation(void **state)
{
    (void)state;
    authz_claims s1, s2, other;
    t_claims(&s1, g_tenant, g_perms);
    s2 = s1; /* the same principal, another session */
    t_id(s2.sid, sizeof s2.sid, "ses_");
    t_id(s2.jti, sizeof s2.jti, "tok_");
    t_claims(&other, g_tenant, g_perms);
    char *t1 = t_token(&s1, g_k1, true);
    char *t2 = t_token(&s2, g_k1, true);
    char *t3 = t_token(&other, g_k1, true);
    both(t1, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    both(t2, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    both(t3, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    assert_true(in_cache(g_a, t1) && in_cache(g_a, t2) && in_cache(g_a, t3));

    OK(authz_revoke_session(g_conn, s1.sid, 0));
    assert_true(wait_code(g_a, t1, "referral.review", AUTHZ_UNAUTHENTICATED, 1000) >= 0);
    assert_true(wait_code(g_nc, t1, "referral.review", AUTHZ_UNAUTHENTICATED, 1000) >= 0);
    both(t1, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, "token revoked");
    assert_true(in_cache(g_a, t1));
    both(t2, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);

    OK(authz_revoke_principal(g_conn, s1.sub, t_now(), 0));
    assert_true(wait_code(g_a, t2, "referral.review", AUTHZ_UNAUTHENTICATED, 1000) >= 0);
    assert_true(wait_code(g_nc, t2, "referral.review", AUTHZ_UNAUTHENTICATED, 1000) >= 0);
    both(t2, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, "token revoked");
    assert_true(in_cache(g_a, t2));
    both(t3, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    free(t1);
    free(t2);
    free(t3);
}

static void test_cached_rotation(void **state)
{
    (void)state;
    t_jwks_source src = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, false};
    const acrypto_ed25519_key *k1_k2[] = {g_k1, g_k2, NULL};
    t_serve_keys(&src, k1_k2);
    authz *a = new_authz(&src, 0);
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *by_k1 = t_token(&c, g_k1, true);
    char *by_k2 = t_token(&c, g_k2, true);
    assert_int_equal(code_of(a, by_k1, "referral.review"), AUTHZ_OK);
    assert_int_equal(code_of(a, by_k2, "referral.review"), AUTHZ_OK);
    assert_true(in_cache(a, by_k1) && in_cache(a, by_k2));

    /* The same set again, or a set with a key added: the cache stays. */
    OK(authz_refresh_keys(a));
    assert_true(in_cache(a, by_k1) && in_cache(a, by_k2));
    const acrypto_ed25519_key *k3_k1_k2[] = {g_k3, g_k1, g_k2, NULL};
    t_serve_keys(&src, k3_k1_k2);
    OK(authz_refresh_keys(a));
    assert_true(in_cache(a, by_k1) && in_cache(a, by_k2));

    /* The rotation drops k1: its cached token is refused at once; k2's verifies again and is cached again. */
    const acrypto_ed25519_key *k3_k2[] = {g_k3, g_k2, NULL};
    t_serve_keys(&src, k3_k2);
    OK(authz_refresh_keys(a));
    assert_false(in_cache(a, by_k1));
    assert_false(in_cache(a, by_k2));
    authz_resource res = {.tenant_id = g_tenant};
    authz_decision d;
    FAILS_WITH_MSG(authz_authorize(a, by_k1, "referral.review", &res, NULL, &d), BASE_ERR_UNAUTH,
                   AUTHZ_MSG_KID_UNKNOWN);
    assert_false(in_cache(a, by_k1));
    OK(authz_authorize(a, by_k2, "referral.review", &res, NULL, &d));
    assert_true(in_cache(a, by_k2));
    authz_free(a);
    free(by_k1);
    free(by_k2);
    free(src.jwks);
}

static void test_cached_rules(void **state)
{
    (void)state;
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *tok = t_token(&c, g_k1, true);
    char other_tenant[32], patient[64];
    t_tenant(other_tenant, sizeof other_tenant);
    t_id(patient, sizeof patient, "pt_");
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_OK, "permission referral.review granted by role");
    assert_true(in_cache(g_a, tok));
    both(tok, "referral.review", other_tenant, NULL, AUTHZ_PERMISSION_DENIED,
         "resource belongs to another tenant");
    both(tok, "referral.review", NULL, NULL, AUTHZ_PERMISSION_DENIED, "resource belongs to another tenant");
    both(tok, "care.plans.write", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
         "permission care.plans.write not granted");
    both(tok, "bad perm", g_tenant, NULL, AUTHZ_PERMISSION_DENIED, "permission name malformed");
    both(tok, "phi.read.clinical", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
         "patient-scoped permission without a valid patient reference");
    both(tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED,
         "no treating relationship or break-glass grant for this patient");
    OK(authz_mirror_break_glass(g_conn, g_tenant, c.sub, patient, "bg_cache", t_now() + 60));
    both(tok, "phi.read.clinical", g_tenant, patient, AUTHZ_OK, NULL);
    outcome o = run(g_a, tok, "phi.read.clinical", g_tenant, patient);
    assert_string_equal(o.d.decided_by, "break_glass:bg_cache");
    assert_true(claims_equal(&o.c, &c)); /* the claims of a hit are the token's */
    OK(authz_unmirror_break_glass(g_conn, g_tenant, c.sub, patient));
    both(tok, "phi.read.clinical", g_tenant, patient, AUTHZ_PERMISSION_DENIED, NULL);
    free(tok);

    /* An enrolment token, cached by its one allowed use, is refused for anything else. */
    authz_claims e;
    const char *const enr_perms[] = {AUTHZ_PERM_MFA_ENROLL, "referral.review", NULL};
    t_claims(&e, g_tenant, enr_perms);
    e.enr = true;
    e.mfa = false;
    char *enr = t_token(&e, g_k1, true);
    both(enr, AUTHZ_PERM_MFA_ENROLL, g_tenant, NULL, AUTHZ_OK, NULL);
    assert_true(in_cache(g_a, enr));
    both(enr, "referral.review", g_tenant, NULL, AUTHZ_PERMISSION_DENIED, "token allows MFA enrolment only");
    free(enr);
}

/* Tokens one byte away from a cached one are verified on their own. */
static void test_near_tokens(void **state)
{
    (void)state;
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *tok = t_token(&c, g_k1, false);
    size_t n = strlen(tok);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    assert_true(in_cache(g_a, tok));

    /* Every byte changed (to another base64url character): refused, as the uncached authorizer refuses it. */
    char *t2 = malloc(n + 2);
    assert_non_null(t2);
    int refused = 0;
    for (size_t i = 0; i < n; i++) {
        if (tok[i] == '.')
            continue;
        memcpy(t2, tok, n + 1);
        t2[i] = (char)(t2[i] == 'A' ? 'B' : 'A');
        outcome got = run(g_a, t2, "referral.review", g_tenant, NULL);
        outcome ref = run(g_nc, t2, "referral.review", g_tenant, NULL);
        if (got.d.code != AUTHZ_UNAUTHENTICATED || !same_outcome(&got, &ref))
            fail_msg("byte %zu: cached %d \"%s\", uncached %d \"%s\"", i, got.d.code, got.d.reason,
                     ref.d.code, ref.d.reason);
        assert_false(in_cache(g_a, t2));
        refused++;
    }
    printf("# %d one-byte variants of a cached %zu-byte token refused\n", refused, n);
    /* one byte more or less */
    memcpy(t2, tok, n + 1);
    t2[n] = 'A';
    t2[n + 1] = '\0';
    both(t2, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, NULL);
    t2[n - 1] = '\0';
    both(t2, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, NULL);
    both(tok, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    free(t2);

    /* Validly signed neighbours (one character of the claims differs): each gets its own claims. */
    authz_claims c2 = c, c3 = c;
    c2.sub[strlen(c2.sub) - 1] = c2.sub[strlen(c2.sub) - 1] == '0' ? '1' : '0';
    char other_tenant[32];
    t_tenant(other_tenant, sizeof other_tenant);
    snprintf(c3.tid, sizeof c3.tid, "%s", other_tenant);
    char *tok2 = t_token(&c2, g_k1, false);
    char *tok3 = t_token(&c3, g_k1, false);
    both(tok2, "referral.review", g_tenant, NULL, AUTHZ_OK, NULL);
    outcome o1 = run(g_a, tok, "referral.review", g_tenant, NULL);
    outcome o2 = run(g_a, tok2, "referral.review", g_tenant, NULL);
    assert_true(claims_equal(&o1.c, &c));
    assert_true(claims_equal(&o2.c, &c2));
    assert_string_not_equal(o1.c.sub, o2.c.sub);
    both(tok3, "referral.review", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
         "resource belongs to another tenant");
    both(tok3, "referral.review", other_tenant, NULL, AUTHZ_OK, NULL);
    both(tok, "referral.review", other_tenant, NULL, AUTHZ_PERMISSION_DENIED, NULL);
    free(tok);
    free(tok2);
    free(tok3);
}

/* ---- many threads: the same decisions with and without the cache --------------------------------------- */

enum { THREADS = 4, LIVE = 10 };

typedef struct tcase {
    char *token;
    const char *perm;
    const char *tenant;
    const char *patient;
    authz_code code;
    bool by_k2;
} tcase;

typedef struct tshared {
    authz *cached, *uncached, *tiny;
    tcase cases[32];
    size_t ncases;
    _Atomic bool stop;
    _Atomic long calls, mismatches;
} tshared;

typedef struct tworker {
    pthread_t thread;
    tshared *s;
    size_t k;
    char first[4 * AUTHZ_REASON_LEN];
} tworker;

static void *tworker_main(void *arg)
{
    tworker *w = arg;
    tshared *s = w->s;
    long calls = 0, bad = 0;
    for (size_t i = w->k; !atomic_load(&s->stop); i += 3) {
        const tcase *tc = &s->cases[i % s->ncases];
        outcome ref = run(s->uncached, tc->token, tc->perm, tc->tenant, tc->patient);
        outcome a = run(s->cached, tc->token, tc->perm, tc->tenant, tc->patient);
        outcome b = run(s->tiny, tc->token, tc->perm, tc->tenant, tc->patient);
        bool ok = ref.d.code == tc->code && same_outcome(&a, &ref) && same_outcome(&b, &ref);
        if (!ok && bad++ == 0)
            snprintf(w->first, sizeof w->first,
                     "case %zu: want %d; uncached %d \"%s\", cached %d \"%s\", tiny %d \"%s\"", i % s->ncases,
                     tc->code, ref.d.code, ref.d.reason, a.d.code, a.d.reason, b.d.code, b.d.reason);
        calls++;
    }
    atomic_fetch_add(&s->calls, calls);
    atomic_fetch_add(&s->mismatches, bad);
    return NULL;
}

static void add_case(tshared *s, char *token, const char *perm, const char *tenant, const char *patient,
                     authz_code code, bool by_k2)
{
    assert_true(s->ncases < BASE_ARRAY_LEN(s->cases));
    s->cases[s->ncases++] = (tcase){token, perm, tenant, patient, code, by_k2};
}

static void start_workers(tshared *s, tworker *w)
{
    atomic_store(&s->stop, false);
    for (size_t i = 0; i < THREADS; i++) {
        w[i] = (tworker){.s = s, .k = i * 5};
        assert_int_equal(pthread_create(&w[i].thread, NULL, tworker_main, &w[i]), 0);
    }
}

static void stop_workers(tshared *s, tworker *w)
{
    atomic_store(&s->stop, true);
    for (size_t i = 0; i < THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        if (w[i].first[0])
            printf("# first mismatch: %s\n", w[i].first);
    }
}

static void test_threads_same_decisions(void **state)
{
    (void)state;
    t_jwks_source src = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, false};
    const acrypto_ed25519_key *k1_k2[] = {g_k1, g_k2, NULL}, *k1_k2_k3[] = {g_k1, g_k2, g_k3, NULL};
    const acrypto_ed25519_key *k1[] = {g_k1, NULL};
    t_serve_keys(&src, k1_k2);
    static tshared s;
    memset(&s, 0, sizeof s);
    s.cached = new_authz(&src, 0);
    s.uncached = new_authz(&src, -1);
    s.tiny = new_authz(&src, 4); /* one set of four entries for a dozen good tokens: constant replacement */

    char other_tenant[32], patient[64], lonely[64], rel_sub[AUTHZ_MAX_ID_LEN + 1];
    t_tenant(other_tenant, sizeof other_tenant);
    t_id(patient, sizeof patient, "pt_");
    t_id(lonely, sizeof lonely, "pt_");
    int64_t now = t_now();
    authz_claims c;
    for (int i = 0; i < LIVE; i++) {
        t_claims(&c, g_tenant, g_perms);
        add_case(&s, t_token(&c, i % 2 ? g_k2 : g_k1, true), "referral.review", g_tenant, NULL, AUTHZ_OK,
                 i % 2);
        if (i == 0) {
            snprintf(rel_sub, sizeof rel_sub, "%s", c.sub);
            OK(authz_mirror_relationship(g_conn, g_tenant, c.sub, patient, "rel_thr", "primary_care", now - 5,
                                         0));
            add_case(&s, t_token(&c, g_k1, true), "phi.read.clinical", g_tenant, patient, AUTHZ_OK, false);
            add_case(&s, t_token(&c, g_k1, true), "phi.read.clinical", g_tenant, lonely,
                     AUTHZ_PERMISSION_DENIED, false);
            add_case(&s, t_token(&c, g_k1, true), "referral.review", other_tenant, NULL,
                     AUTHZ_PERMISSION_DENIED, false);
            add_case(&s, t_token(&c, g_k1, true), "care.plans.write", g_tenant, NULL, AUTHZ_PERMISSION_DENIED,
                     false);
        }
    }
    /* expired; tampered; revoked; an enrolment token used for something else */
    t_claims(&c, g_tenant, g_perms);
    c.iat = now - 400;
    c.nbf = now - 400;
    c.exp = now - 100;
    add_case(&s, t_token(&c, g_k1, true), "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, false);
    t_claims(&c, g_tenant, g_perms);
    char *tampered = t_token(&c, g_k1, true);
    size_t tl = strlen(tampered);
    tampered[tl - 20] = (char)(tampered[tl - 20] == 'A' ? 'B' : 'A');
    add_case(&s, tampered, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, false);
    t_claims(&c, g_tenant, g_perms);
    char *revoked = t_token(&c, g_k1, true);
    OK(authz_revoke_session(g_conn, c.sid, 0));
    add_case(&s, revoked, "referral.review", g_tenant, NULL, AUTHZ_UNAUTHENTICATED, false);
    const char *const enr_perms[] = {AUTHZ_PERM_MFA_ENROLL, "referral.review", NULL};
    t_claims(&c, g_tenant, enr_perms);
    c.enr = true;
    add_case(&s, t_token(&c, g_k1, true), "referral.review", g_tenant, NULL, AUTHZ_PERMISSION_DENIED, false);
    assert_true(wait_code(s.cached, revoked, "referral.review", AUTHZ_UNAUTHENTICATED, 1000) >= 0);
    assert_true(wait_code(s.uncached, revoked, "referral.review", AUTHZ_UNAUTHENTICATED, 1000) >= 0);
    assert_true(wait_code(s.tiny, revoked, "referral.review", AUTHZ_UNAUTHENTICATED, 1000) >= 0);

    /* 1. While the workers run: refreshes that keep the keys (the cache stays), and refreshes that add and
     * drop k3, which no token uses (every drop invalidates every entry, racing the lookups and inserts; the
     * decisions do not change). */
    tworker w[THREADS];
    start_workers(&s, w);
    for (int i = 0; i < 30; i++) {
        t_serve_keys(&src, i % 3 == 1 ? k1_k2_k3 : k1_k2);
        OK(authz_refresh_keys(s.cached));
        OK(authz_refresh_keys(s.tiny));
        t_sleep_ms(40);
    }
    stop_workers(&s, w);
    long phase1 = atomic_load(&s.calls);

    /* 2. The rotation drops k2 (between two runs: a decision racing it may go either way, by design): k2's
     * cached tokens are refused by all three, k1's decide as before. */
    t_serve_keys(&src, k1);
    OK(authz_refresh_keys(s.cached));
    OK(authz_refresh_keys(s.uncached));
    OK(authz_refresh_keys(s.tiny));
    for (size_t i = 0; i < s.ncases; i++) {
        if (s.cases[i].by_k2)
            s.cases[i].code = AUTHZ_UNAUTHENTICATED;
    }
    start_workers(&s, w);
    t_sleep_ms(500);
    stop_workers(&s, w);
    printf("# %d threads, %ld + %ld calls to each of three authorizers, %ld mismatches\n", THREADS, phase1,
           atomic_load(&s.calls) - phase1, atomic_load(&s.mismatches));
    assert_int_equal(atomic_load(&s.mismatches), 0);
    assert_true(phase1 > (long)s.ncases && atomic_load(&s.calls) - phase1 > (long)s.ncases);

    OK(authz_unmirror_relationship(g_conn, g_tenant, rel_sub, patient));
    authz_free(s.cached);
    authz_free(s.uncached);
    authz_free(s.tiny);
    for (size_t i = 0; i < s.ncases; i++)
        free(s.cases[i].token);
    free(src.jwks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_exact_bytes), cmocka_unit_test(test_cache_replacement),
        cmocka_unit_test(test_cache_race),        cmocka_unit_test(test_config),
        cmocka_unit_test(test_cached_times),      cmocka_unit_test(test_cached_revocation),
        cmocka_unit_test(test_cached_rotation),   cmocka_unit_test(test_cached_rules),
        cmocka_unit_test(test_near_tokens),       cmocka_unit_test(test_threads_same_decisions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
