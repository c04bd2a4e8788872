/* The revocation feed when Redis goes away and comes back, on a private redis-server (tests/harness/redis.sh
 * with a directory of its own), so that stopping it cannot disturb other test programs:
 *   - Redis down: patient-scoped decisions are UNAVAILABLE at once (the GET fails); the others stay allowed
 *     for the rest of the grace period, and after AUTHZ_FEED_GRACE_MS every decision is UNAVAILABLE;
 *   - Redis back: the feed resubscribes and reloads, decisions resume, and what was revoked before the
 *     outage stays revoked even though the restarted Redis lost it (the reload merges);
 *   - a lost subscription (CLIENT KILL TYPE pubsub, Redis up): a revocation written meanwhile without a
 *     PUBLISH is found by the reload's SCAN;
 *   - a stalled Redis (DEBUG SLEEP: connections stay open, nothing is answered, no error anywhere): only the
 *     heartbeat notices, and decisions fail closed until it flows again. */
#include "authz_test.h"

#include "testenv.h"

#include <unistd.h>

static char g_dir[1024];
static cache_config g_cfg;
static cache_conn *g_conn;
static acrypto_ed25519_key *g_key;
static t_jwks_source g_src = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, false};
static const char g_tenant[] = "feed-clinic";
static const char *const g_perms[] = {"referral.review", "phi.read.clinical", NULL};

static void harness(const char *verb)
{
    char script[1024], cmd[2600];
    snprintf(script, sizeof script, "%s", testenv_source_path("tests/harness/redis.sh"));
    assert_null(strchr(script, '\''));
    assert_null(strchr(g_dir, '\''));
    snprintf(cmd, sizeof cmd, "bash '%s' %s '%s' >/dev/null", script, verb, g_dir);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("redis.sh %s %s failed (%d)", verb, g_dir, rc);
}

static int harness_port(void)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/redis.port", g_dir);
    char *s = testenv_read_file(path);
    char *end;
    long port = strtol(s, &end, 10);
    free(s);
    return port > 0 && port <= 65535 ? (int)port : -1;
}

static int setup(void **state)
{
    (void)state;
    char rel[64];
    snprintf(rel, sizeof rel, "testenv/authz-feed-%d", (int)getpid());
    snprintf(g_dir, sizeof g_dir, "%s", testenv_binary_path(rel));
    harness("start");
    g_cfg = (cache_config){.host = "127.0.0.1", .port = harness_port(), .connect_timeout_ms = 300};
    if (g_cfg.port < 0 || !base_is_ok(cache_conn_new(&g_cfg, &g_conn)) ||
        !base_is_ok(acrypto_ed25519_generate(&g_key)))
        return -1;
    const acrypto_ed25519_key *keys[] = {g_key, NULL};
    t_serve_keys(&g_src, keys);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    harness("stop");
    /* redis.sh stop leaves its lock file and the directory: remove them, best effort */
    char lock[1100];
    snprintf(lock, sizeof lock, "%s/redis.lock", g_dir);
    (void)unlink(lock);
    (void)rmdir(g_dir);
    cache_conn_free(g_conn);
    cache_thread_conn_release();
    acrypto_ed25519_free(g_key);
    free(g_src.jwks);
    return 0;
}

static authz_code decide(authz *a, const char *token, const char *perm, const char *patient, char *reason,
                         size_t cap)
{
    authz_resource res = {.tenant_id = g_tenant, .patient_ref = patient};
    authz_decision d;
    base_result r = authz_authorize(a, token, perm, &res, NULL, &d);
    (void)r;
    if (reason)
        snprintf(reason, cap, "%s", d.reason);
    return d.code;
}

/* SHUTDOWN NOSAVE: the server exits; the reply never comes (the connection closes), which is the point. */
static void redis_shutdown(void)
{
    const char *argv[] = {"SHUTDOWN", "NOSAVE"};
    cache_reply *reply = NULL;
    base_result r = cache_command_argv(g_conn, 2, argv, NULL, &reply);
    cache_reply_free(reply);
    (void)r;
    /* wait until it really refuses connections */
    for (int i = 0; i < 200; i++) {
        cache_conn *probe = NULL;
        OK(cache_conn_new(&g_cfg, &probe));
        bool up = base_is_ok(cache_conn_connect(probe));
        cache_conn_free(probe);
        if (!up)
            return;
        t_sleep_ms(10);
    }
    fail_msg("redis did not shut down");
}

static void test_outage_and_recovery(void **state)
{
    (void)state;
    authz_config ac = {.cache = &g_cfg, .fetch_jwks = t_fetch, .fetch_arg = &g_src};
    authz *a = NULL;
    OK(authz_new(&ac, &a));
    OK(authz_wait_ready(a, 5000));
    authz_claims live, gone;
    t_claims(&live, g_tenant, g_perms);
    t_claims(&gone, g_tenant, g_perms);
    char *tl = t_token(&live, g_key, true);
    char *tg = t_token(&gone, g_key, true);
    char patient[64];
    t_id(patient, sizeof patient, "pt_");
    OK(authz_mirror_relationship(g_conn, g_tenant, live.sub, patient, "rel_feed", "primary_care", t_now() - 5,
                                 0));
    assert_int_equal(decide(a, tl, "phi.read.clinical", patient, NULL, 0), AUTHZ_OK);
    OK(authz_revoke_session(g_conn, gone.sid, 0));
    for (int i = 0; i < 200 && decide(a, tg, "referral.review", NULL, NULL, 0) != AUTHZ_UNAUTHENTICATED; i++)
        t_sleep_ms(5);
    assert_int_equal(decide(a, tg, "referral.review", NULL, NULL, 0), AUTHZ_UNAUTHENTICATED);

    /* Redis goes away. */
    redis_shutdown();
    int64_t t0 = t_mono_ms();
    char reason[AUTHZ_REASON_LEN];
    /* Patient scope needs Redis now: unavailable at once. */
    assert_int_equal(decide(a, tl, "phi.read.clinical", patient, reason, sizeof reason), AUTHZ_UNAVAILABLE);
    assert_string_equal(reason, "care relationship lookup unavailable");
    /* Others: still decided for the rest of the grace period (the feed was alive until a moment ago). */
    authz_code early = decide(a, tl, "referral.review", NULL, NULL, 0);
    int64_t early_at = t_mono_ms() - t0;
    printf("# %lld ms after the outage: role decision %d\n", (long long)early_at, early);
    if (early_at < 300)
        assert_int_equal(early, AUTHZ_OK);
    /* ...and every decision fails closed once the feed has been silent for more than the grace period. */
    int64_t closed_at = -1;
    while (t_mono_ms() - t0 < 3000) {
        if (decide(a, tl, "referral.review", NULL, reason, sizeof reason) == AUTHZ_UNAVAILABLE) {
            closed_at = t_mono_ms() - t0;
            break;
        }
        t_sleep_ms(5);
    }
    printf("# fail-closed %lld ms after the outage\n", (long long)closed_at);
    assert_true(closed_at >= 0 && closed_at <= AUTHZ_FEED_GRACE_MS + 500);
    assert_string_equal(reason, "revocation feed unavailable");
    t_sleep_ms(300);
    assert_int_equal(decide(a, tl, "referral.review", NULL, reason, sizeof reason), AUTHZ_UNAVAILABLE);
    assert_int_equal(decide(a, tg, "referral.review", NULL, NULL, 0), AUTHZ_UNAVAILABLE);
    assert_int_equal(decide(a, NULL, "referral.review", NULL, NULL, 0), AUTHZ_UNAVAILABLE);
    assert_false(authz_ready(a));

    /* Redis comes back (empty: nothing persisted). The feed resynchronises by itself. */
    harness("restart");
    assert_int_equal(harness_port(), g_cfg.port);
    int64_t t1 = t_mono_ms();
    OK(authz_wait_ready(a, 5000));
    printf("# ready again %lld ms after the restart\n", (long long)(t_mono_ms() - t1));
    assert_int_equal(decide(a, tl, "referral.review", NULL, NULL, 0), AUTHZ_OK);
    /* the revocation Redis lost is still known */
    assert_int_equal(decide(a, tg, "referral.review", NULL, reason, sizeof reason), AUTHZ_UNAUTHENTICATED);
    assert_string_equal(reason, "token revoked");
    /* the mirror was lost with Redis (identity rebuilds it): denied until it is back, then allowed */
    assert_int_equal(decide(a, tl, "phi.read.clinical", patient, NULL, 0), AUTHZ_PERMISSION_DENIED);
    OK(authz_mirror_relationship(g_conn, g_tenant, live.sub, patient, "rel_feed", "primary_care", t_now() - 5,
                                 0));
    assert_int_equal(decide(a, tl, "phi.read.clinical", patient, NULL, 0), AUTHZ_OK);
    /* and new revocations flow again */
    OK(authz_revoke_principal(g_conn, live.sub, t_now(), 0));
    for (int i = 0; i < 200 && decide(a, tl, "referral.review", NULL, NULL, 0) != AUTHZ_UNAUTHENTICATED; i++)
        t_sleep_ms(5);
    assert_int_equal(decide(a, tl, "referral.review", NULL, NULL, 0), AUTHZ_UNAUTHENTICATED);
    authz_free(a);
    free(tl);
    free(tg);
}

static void test_lost_subscription_reload(void **state)
{
    (void)state;
    authz_config ac = {.cache = &g_cfg, .fetch_jwks = t_fetch, .fetch_arg = &g_src};
    authz *a = NULL;
    OK(authz_new(&ac, &a));
    OK(authz_wait_ready(a, 5000));
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *tok = t_token(&c, g_key, true);
    assert_int_equal(decide(a, tok, "referral.review", NULL, NULL, 0), AUTHZ_OK);

    /* A revocation written without its PUBLISH (as if the message had been lost): not seen... */
    char key[128];
    snprintf(key, sizeof key, "authz:revoked:sid:%s", c.sid);
    OK(cache_set(g_conn, key, "1", 1, 60000, CACHE_SET_ALWAYS, NULL));
    t_sleep_ms(300);
    assert_int_equal(decide(a, tok, "referral.review", NULL, NULL, 0), AUTHZ_OK);
    /* ...until the subscription is lost and remade: the reload finds it. */
    const char *argv[] = {"CLIENT", "KILL", "TYPE", "pubsub"};
    cache_reply *reply = NULL;
    OK(cache_command_argv(g_conn, 4, argv, NULL, &reply));
    assert_true(cache_reply_integer(reply) >= 1);
    cache_reply_free(reply);
    int64_t t0 = t_mono_ms();
    while (decide(a, tok, "referral.review", NULL, NULL, 0) != AUTHZ_UNAUTHENTICATED &&
           t_mono_ms() - t0 < 3000)
        t_sleep_ms(5);
    printf("# reload after a lost subscription: %lld ms\n", (long long)(t_mono_ms() - t0));
    char reason[AUTHZ_REASON_LEN];
    assert_int_equal(decide(a, tok, "referral.review", NULL, reason, sizeof reason), AUTHZ_UNAUTHENTICATED);
    assert_string_equal(reason, "token revoked");
    OK(authz_wait_ready(a, 3000));
    authz_free(a);
    free(tok);
}

/* A second connection runs DEBUG SLEEP while the main thread watches the decisions. */
static void *stall_main(void *arg)
{
    (void)arg;
    cache_config cfg = g_cfg;
    cfg.command_timeout_ms = 5000;
    cache_conn *c = NULL;
    if (base_is_ok(cache_conn_new(&cfg, &c))) {
        const char *argv[] = {"DEBUG", "SLEEP", "2"};
        cache_reply *reply = NULL;
        base_result r = cache_command_argv(c, 3, argv, NULL, &reply);
        (void)r;
        cache_reply_free(reply);
    }
    cache_conn_free(c);
    return NULL;
}

static void test_stall(void **state)
{
    (void)state;
    authz_config ac = {.cache = &g_cfg, .fetch_jwks = t_fetch, .fetch_arg = &g_src};
    authz *a = NULL;
    OK(authz_new(&ac, &a));
    OK(authz_wait_ready(a, 5000));
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *tok = t_token(&c, g_key, true);
    assert_int_equal(decide(a, tok, "referral.review", NULL, NULL, 0), AUTHZ_OK);

    pthread_t th;
    int64_t t0 = t_mono_ms();
    assert_int_equal(pthread_create(&th, NULL, stall_main, NULL), 0);
    int64_t closed_at = -1;
    while (t_mono_ms() - t0 < 1900) {
        if (decide(a, tok, "referral.review", NULL, NULL, 0) == AUTHZ_UNAVAILABLE) {
            closed_at = t_mono_ms() - t0;
            break;
        }
        t_sleep_ms(5);
    }
    printf("# Redis stalled: fail-closed after %lld ms\n", (long long)closed_at);
    assert_true(closed_at >= 0 && closed_at <= AUTHZ_FEED_GRACE_MS + 500);
    pthread_join(th, NULL);
    OK(authz_wait_ready(a, 5000));
    printf("# ready again %lld ms after the stall began\n", (long long)(t_mono_ms() - t0));
    assert_int_equal(decide(a, tok, "referral.review", NULL, NULL, 0), AUTHZ_OK);
    authz_free(a);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lost_subscription_reload),
        cmocka_unit_test(test_stall),
        cmocka_unit_test(test_outage_and_recovery),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
