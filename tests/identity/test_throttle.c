/* The login throttle (services/identity/throttle.h) against the real Redis of the harness: lockout after N
 * failures with retry-after, exponential growth up to the cap, success clearing the user's count only, the
 * per-source limit, unknown usernames counted like known ones, no usernames in Redis, and Redis down.
 * Lockout ends are checked against the `now` passed in, so lockouts of hours are tested without waiting; the
 * failure windows are real Redis TTLs, tested with a 1 s window. Each test uses its own tenant, and the
 * keys a test creates are deleted afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto/crypto.h"
#include "testenv.h"
#include "throttle.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define FAILS_WITH(expr, code)                                                                               \
    do {                                                                                                     \
        base_result fw_r__ = (expr);                                                                         \
        if (fw_r__.err != (code))                                                                            \
            fail_msg("%s: expected %s, got %s (%s)", #expr, base_err_name(code), base_err_name(fw_r__.err),  \
                     base_error_message());                                                                  \
    } while (0)

#define T0      INT64_C(1700000000)
#define SOURCE  "203.0.113.9"
#define MAX_DEL 256

static cache_conn *g_conn;
static char g_tenant[64];
static int g_n;
static char g_del[MAX_DEL][96]; /* keys to delete in teardown */
static size_t g_ndel;

static void hex_of(const char *s, char out[65])
{
    uint8_t d[ACRYPTO_SHA256_LEN];
    MUST(acrypto_sha256(s, strlen(s), d));
    size_t n = 0;
    MUST(acrypto_hex_encode(d, sizeof d, out, 65, &n));
}

static void remember(const char *key)
{
    assert_true(g_ndel < MAX_DEL);
    snprintf(g_del[g_ndel++], sizeof g_del[0], "%s", key);
}

/* The key names throttle.h documents, for a (tenant, username); remembered for cleanup. */
typedef struct user_keys {
    char user[96], lock[96], level[96];
} user_keys;

static user_keys keys_for(const char *tenant, const char *username)
{
    char who[256], h[65];
    snprintf(who, sizeof who, "%s|%s", tenant, username);
    hex_of(who, h);
    user_keys k;
    snprintf(k.user, sizeof k.user, "idn:thr:u:%s", h);
    snprintf(k.lock, sizeof k.lock, "idn:thr:lock:%s", h);
    snprintf(k.level, sizeof k.level, "idn:thr:lvl:%s", h);
    remember(k.user);
    remember(k.lock);
    remember(k.level);
    return k;
}

static void source_key(const char *source, char out[96])
{
    char h[65];
    hex_of(source, h);
    snprintf(out, 96, "idn:thr:s:%s", h);
    remember(out);
}

/* Each test gets its own source too, so the per-source count of one test does not leak into another. */
static char g_source[64];

static int setup(void **state)
{
    (void)state;
    cache_config cfg = {.host = testenv_redis_host(), .port = testenv_redis_port()};
    if (!base_is_ok(cache_conn_new(&cfg, &g_conn)))
        return -1;
    snprintf(g_tenant, sizeof g_tenant, "thr-%d-%d", (int)getpid(), g_n);
    snprintf(g_source, sizeof g_source, SOURCE "-%d-%d", (int)getpid(), g_n);
    g_n++;
    g_ndel = 0;
    char k[96];
    source_key(g_source, k);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < g_ndel; i++) {
        base_result r = cache_del(g_conn, g_del[i], NULL);
        (void)r; /* best effort */
    }
    cache_conn_free(g_conn);
    g_conn = NULL;
    return 0;
}

static bool exists(const char *key)
{
    bool found = false;
    MUST(cache_get(g_conn, key, NULL, &found));
    return found;
}

/* ---- per user ------------------------------------------------------------------------------------------ */

static void test_lockout_after_n(void **state)
{
    (void)state;
    user_keys k = keys_for(g_tenant, "alice");
    throttle_decision d;
    MUST(throttle_check(g_conn, NULL, g_tenant, "alice", g_source, T0, &d));
    assert_false(d.locked);

    for (int i = 1; i <= 4; i++) {
        MUST(throttle_failure(g_conn, NULL, g_tenant, "alice", g_source, T0 + i, &d));
        assert_false(d.locked);
        assert_int_equal(d.user_failures, i);
        MUST(throttle_check(g_conn, NULL, g_tenant, "alice", g_source, T0 + i, &d));
    }
    /* The fifth failure locks for 15 minutes. */
    MUST(throttle_failure(g_conn, NULL, g_tenant, "alice", g_source, T0 + 5, &d));
    assert_true(d.locked);
    assert_int_equal(d.locks, THROTTLE_LOCK_USER);
    assert_int_equal(d.retry_after_s, 900);
    assert_int_equal(d.lockout_level, 1);
    assert_int_equal(d.user_failures, 0);

    memset(&d, 0, sizeof d);
    FAILS_WITH(throttle_check(g_conn, NULL, g_tenant, "alice", g_source, T0 + 5, &d), BASE_ERR_LIMIT);
    assert_true(d.locked);
    assert_int_equal(d.locks, THROTTLE_LOCK_USER);
    assert_int_equal(d.retry_after_s, 900);
    assert_string_equal(base_error_message(), "too many failed logins; retry after 900 s");
    FAILS_WITH(throttle_check(g_conn, NULL, g_tenant, "alice", g_source, T0 + 5 + 899, &d), BASE_ERR_LIMIT);
    assert_int_equal(d.retry_after_s, 1);
    MUST(throttle_check(g_conn, NULL, g_tenant, "alice", g_source, T0 + 5 + 900, &d));
    assert_false(d.locked);
    assert_int_equal(d.retry_after_s, 0);

    /* Another user of the tenant, and the same username in another tenant, are not affected. */
    keys_for(g_tenant, "bob");
    MUST(throttle_check(g_conn, NULL, g_tenant, "bob", g_source, T0 + 5, &d));
    char other[80];
    snprintf(other, sizeof other, "%s-x", g_tenant);
    keys_for(other, "alice");
    MUST(throttle_check(g_conn, NULL, other, "alice", g_source, T0 + 5, &d));

    /* What Redis holds: the lock's end under the hashed key, with a TTL of the lockout; the count reset. */
    cache_bytes v = {NULL, 0};
    bool found = false;
    MUST(cache_get(g_conn, k.lock, &v, &found));
    assert_true(found);
    char want[32];
    snprintf(want, sizeof want, "%" PRId64, T0 + 5 + 900);
    assert_string_equal((const char *)v.data, want);
    cache_bytes_free(&v);
    int64_t ttl = 0;
    MUST(cache_ttl(g_conn, k.lock, &ttl));
    assert_true(ttl > 890000 && ttl <= 900000);
    assert_false(exists(k.user));
    MUST(cache_get(g_conn, k.level, &v, &found));
    assert_string_equal((const char *)v.data, "1");
    cache_bytes_free(&v);
    MUST(cache_ttl(g_conn, k.level, &ttl));
    assert_true(ttl > 86390000 && ttl <= 86400000);

    /* No key names or values hold the username or the tenant in clear. */
    const char *argv[4] = {"KEYS", "idn:thr:*", NULL, NULL};
    cache_reply *reply = NULL;
    MUST(cache_command_argv(g_conn, 2, argv, NULL, &reply));
    assert_true(cache_reply_count(reply) >= 3);
    for (size_t i = 0; i < cache_reply_count(reply); i++) {
        const char *key = cache_reply_string(cache_reply_element(reply, i), NULL);
        assert_null(strstr(key, "alice"));
        assert_null(strstr(key, "thr-"));
        assert_null(strstr(key, "203.0.113"));
    }
    cache_reply_free(reply);
}

static void test_exponential_growth(void **state)
{
    (void)state;
    keys_for(g_tenant, "carol");
    throttle_config cfg = {.user_max_failures = 2};
    static const int64_t expected[] = {900, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 86400, 86400};
    int64_t t = T0;
    throttle_decision d;
    for (size_t level = 1; level <= BASE_ARRAY_LEN(expected); level++) {
        MUST(throttle_check(g_conn, &cfg, g_tenant, "carol", g_source, t, &d));
        MUST(throttle_failure(g_conn, &cfg, g_tenant, "carol", g_source, t, &d));
        assert_false(d.locked);
        MUST(throttle_failure(g_conn, &cfg, g_tenant, "carol", g_source, t, &d));
        assert_true(d.locked);
        assert_int_equal(d.lockout_level, (int64_t)level);
        if (d.retry_after_s != expected[level - 1])
            fail_msg("level %zu: locked for %" PRId64 " s, expected %" PRId64, level, d.retry_after_s,
                     expected[level - 1]);
        FAILS_WITH(throttle_check(g_conn, &cfg, g_tenant, "carol", g_source, t + d.retry_after_s - 1, &d),
                   BASE_ERR_LIMIT);
        assert_int_equal(d.retry_after_s, 1);
        t += expected[level - 1];
    }
    MUST(throttle_check(g_conn, &cfg, g_tenant, "carol", g_source, t, &d));

    /* A smaller cap and base from the config. */
    keys_for(g_tenant, "dave");
    cfg = (throttle_config){.user_max_failures = 1, .lockout_base_s = 60, .lockout_max_s = 200};
    static const int64_t small[] = {60, 120, 200, 200};
    t = T0;
    for (size_t i = 0; i < BASE_ARRAY_LEN(small); i++) {
        MUST(throttle_failure(g_conn, &cfg, g_tenant, "dave", g_source, t, &d));
        assert_int_equal(d.retry_after_s, small[i]);
        t += small[i];
    }
}

static void test_locked_failures_do_not_extend(void **state)
{
    (void)state;
    keys_for(g_tenant, "erin");
    throttle_config cfg = {.user_max_failures = 3};
    throttle_decision d;
    for (int i = 0; i < 3; i++)
        MUST(throttle_failure(g_conn, &cfg, g_tenant, "erin", g_source, T0, &d));
    assert_int_equal(d.retry_after_s, 900);
    /* Failures while locked (attempts that passed check just before the lock) neither extend the lock nor
     * count towards the next one. */
    for (int i = 0; i < 5; i++) {
        MUST(throttle_failure(g_conn, &cfg, g_tenant, "erin", g_source, T0 + 100, &d));
        assert_true(d.locked);
        assert_int_equal(d.retry_after_s, 800);
        assert_int_equal(d.lockout_level, 0);
    }
    FAILS_WITH(throttle_check(g_conn, &cfg, g_tenant, "erin", g_source, T0 + 100, &d), BASE_ERR_LIMIT);
    assert_int_equal(d.retry_after_s, 800);
    MUST(throttle_failure(g_conn, &cfg, g_tenant, "erin", g_source, T0 + 900, &d));
    assert_false(d.locked);
    assert_int_equal(d.user_failures, 1);
}

static void test_success_clears_user_count(void **state)
{
    (void)state;
    user_keys k = keys_for(g_tenant, "frank");
    throttle_decision d;
    for (int i = 0; i < 4; i++)
        MUST(throttle_failure(g_conn, NULL, g_tenant, "frank", g_source, T0, &d));
    assert_int_equal(d.user_failures, 4);
    MUST(throttle_success(g_conn, NULL, g_tenant, "frank", g_source, T0));
    assert_false(exists(k.user));
    for (int i = 1; i <= 4; i++) {
        MUST(throttle_failure(g_conn, NULL, g_tenant, "frank", g_source, T0, &d));
        assert_false(d.locked);
        assert_int_equal(d.user_failures, i);
    }
    MUST(throttle_failure(g_conn, NULL, g_tenant, "frank", g_source, T0, &d));
    assert_true(d.locked);
    assert_int_equal(d.retry_after_s, 900);

    /* A success after the lockout does not reset the level: the next lockout is 30 minutes. */
    MUST(throttle_check(g_conn, NULL, g_tenant, "frank", g_source, T0 + 900, &d));
    MUST(throttle_success(g_conn, NULL, g_tenant, "frank", g_source, T0 + 900));
    for (int i = 0; i < 5; i++)
        MUST(throttle_failure(g_conn, NULL, g_tenant, "frank", g_source, T0 + 900, &d));
    assert_true(d.locked);
    assert_int_equal(d.lockout_level, 2);
    assert_int_equal(d.retry_after_s, 1800);
}

static void test_window_expires(void **state)
{
    (void)state;
    keys_for(g_tenant, "gina");
    throttle_config cfg = {.user_max_failures = 3, .user_window_s = 1};
    throttle_decision d;
    int64_t now = (int64_t)time(NULL);
    MUST(throttle_failure(g_conn, &cfg, g_tenant, "gina", g_source, now, &d));
    MUST(throttle_failure(g_conn, &cfg, g_tenant, "gina", g_source, now, &d));
    assert_int_equal(d.user_failures, 2);
    struct timespec ts = {1, 300 * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    /* The window (a real Redis TTL) has ended: counting starts again. */
    MUST(throttle_failure(g_conn, &cfg, g_tenant, "gina", g_source, now + 1, &d));
    assert_false(d.locked);
    assert_int_equal(d.user_failures, 1);
    MUST(throttle_failure(g_conn, &cfg, g_tenant, "gina", g_source, now + 1, &d));
    MUST(throttle_failure(g_conn, &cfg, g_tenant, "gina", g_source, now + 1, &d));
    assert_true(d.locked);
}

/* ---- unknown users ------------------------------------------------------------------------------------- */

static void test_unknown_user_counts_the_same(void **state)
{
    (void)state;
    /* "alice" exists in the service's database, "ghost" does not: the service calls failure() for both,
     * and nothing here knows the difference, so every answer is identical. */
    keys_for(g_tenant, "alice");
    keys_for(g_tenant, "ghost");
    const char *users[2] = {"alice", "ghost"};
    throttle_decision seen[2][12];
    base_result checks[2][12];
    for (int u = 0; u < 2; u++) {
        int64_t t = T0;
        for (int i = 0; i < 6; i++) {
            checks[u][2 * i] = throttle_check(g_conn, NULL, g_tenant, users[u], g_source, t, &seen[u][2 * i]);
            if (base_is_ok(checks[u][2 * i]))
                MUST(throttle_failure(g_conn, NULL, g_tenant, users[u], g_source, t, &seen[u][2 * i + 1]));
            else
                memset(&seen[u][2 * i + 1], 0, sizeof seen[u][2 * i + 1]);
            checks[u][2 * i + 1] = BASE_OK_RESULT;
            t += 60;
        }
    }
    for (int i = 0; i < 12; i++) {
        assert_int_equal(checks[0][i].err, checks[1][i].err);
        assert_int_equal(seen[0][i].locked, seen[1][i].locked);
        assert_int_equal(seen[0][i].locks, seen[1][i].locks);
        assert_int_equal(seen[0][i].retry_after_s, seen[1][i].retry_after_s);
        assert_int_equal(seen[0][i].user_failures, seen[1][i].user_failures);
        assert_int_equal(seen[0][i].lockout_level, seen[1][i].lockout_level);
    }
    /* And both ended up locked by the fifth failure. */
    assert_int_equal(checks[0][10].err, BASE_ERR_LIMIT);
    assert_int_equal(seen[0][11].locked, false);
}

/* ---- per source ---------------------------------------------------------------------------------------- */

static void test_per_source_limit(void **state)
{
    (void)state;
    char skey[96];
    source_key(g_source, skey);
    throttle_config cfg = {.source_max_failures = 5};
    throttle_decision d;
    char user[32];
    /* Five failures for five different users from one source: no user is locked, the source is. */
    for (int i = 0; i < 5; i++) {
        snprintf(user, sizeof user, "user%d", i);
        keys_for(g_tenant, user);
        MUST(throttle_check(g_conn, &cfg, g_tenant, user, g_source, T0, &d));
        MUST(throttle_failure(g_conn, &cfg, g_tenant, user, g_source, T0, &d));
        assert_int_equal(d.user_failures, 1);
        assert_true(d.locked == (i == 4));
    }
    assert_int_equal(d.locks, THROTTLE_LOCK_SOURCE);
    assert_true(d.retry_after_s > 890 && d.retry_after_s <= 900);

    /* Any user from that source is refused, with the source window's remaining time. */
    keys_for(g_tenant, "newcomer");
    FAILS_WITH(throttle_check(g_conn, &cfg, g_tenant, "newcomer", g_source, T0, &d), BASE_ERR_LIMIT);
    assert_int_equal(d.locks, THROTTLE_LOCK_SOURCE);
    assert_true(d.retry_after_s > 890 && d.retry_after_s <= 900);
    assert_null(strstr(base_error_message(), "203.0.113"));
    /* The same user from another source is fine. */
    char other[80];
    snprintf(other, sizeof other, "%s-other", g_source);
    char okey[96];
    source_key(other, okey);
    MUST(throttle_check(g_conn, &cfg, g_tenant, "newcomer", other, T0, &d));
    /* A success from the source clears that user's count, not the source's. */
    MUST(throttle_success(g_conn, &cfg, g_tenant, "user0", g_source, T0));
    FAILS_WITH(throttle_check(g_conn, &cfg, g_tenant, "user0", g_source, T0, &d), BASE_ERR_LIMIT);
    /* Both locks at once: the longer retry-after wins and both bits are set. */
    keys_for(g_tenant, "both");
    throttle_config one = {.source_max_failures = 5, .user_max_failures = 1, .lockout_base_s = 3600};
    MUST(throttle_failure(g_conn, &one, g_tenant, "both", g_source, T0, &d));
    assert_int_equal(d.locks, THROTTLE_LOCK_USER | THROTTLE_LOCK_SOURCE);
    assert_int_equal(d.retry_after_s, 3600);

    /* Retry-after is rounded up: with a 1 s window and under a second left it is 1, never 0. */
    char brief[80], bkey[96];
    snprintf(brief, sizeof brief, "%s-brief", g_source);
    source_key(brief, bkey);
    keys_for(g_tenant, "quick");
    throttle_config short_window = {.source_max_failures = 1, .source_window_s = 1};
    MUST(throttle_failure(g_conn, &short_window, g_tenant, "quick", brief, T0, &d));
    assert_true(d.locked);
    assert_int_equal(d.locks, THROTTLE_LOCK_SOURCE);
    assert_int_equal(d.retry_after_s, 1);
    struct timespec ts = {0, 200 * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    FAILS_WITH(throttle_check(g_conn, &short_window, g_tenant, "quick", brief, T0, &d), BASE_ERR_LIMIT);
    assert_int_equal(d.retry_after_s, 1);

    /* The source key is hashed; its count and TTL are the window's. */
    int64_t ttl = 0;
    MUST(cache_ttl(g_conn, skey, &ttl));
    assert_true(ttl > 890000 && ttl <= 900000);
}

/* ---- failures ------------------------------------------------------------------------------------------ */

static void test_redis_down(void **state)
{
    (void)state;
    cache_config cfg = {.host = "127.0.0.1", .port = testenv_closed_port(), .connect_timeout_ms = 500};
    cache_conn *down = NULL;
    MUST(cache_conn_new(&cfg, &down));
    throttle_decision d = {.locked = true, .retry_after_s = 42};
    FAILS_WITH(throttle_check(down, NULL, g_tenant, "alice", g_source, T0, &d), BASE_ERR_UNAVAILABLE);
    assert_non_null(strstr(base_error_message(), "login throttle unavailable"));
    assert_null(strstr(base_error_message(), "alice"));
    assert_int_equal(d.retry_after_s, 42); /* not written */
    FAILS_WITH(throttle_failure(down, NULL, g_tenant, "alice", g_source, T0, &d), BASE_ERR_UNAVAILABLE);
    FAILS_WITH(throttle_success(down, NULL, g_tenant, "alice", g_source, T0), BASE_ERR_UNAVAILABLE);
    cache_conn_free(down);

    /* Corrupt state fails closed too. */
    user_keys k = keys_for(g_tenant, "mallory");
    MUST(cache_set(g_conn, k.lock, "soon", 4, 60000, CACHE_SET_ALWAYS, NULL));
    FAILS_WITH(throttle_check(g_conn, NULL, g_tenant, "mallory", g_source, T0, &d), BASE_ERR_INTERNAL);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    throttle_decision d;
    FAILS_WITH(throttle_check(g_conn, NULL, "a|b", "alice", g_source, T0, &d), BASE_ERR_INVALID);
    FAILS_WITH(throttle_check(g_conn, NULL, "", "alice", g_source, T0, &d), BASE_ERR_INVALID);
    FAILS_WITH(throttle_check(g_conn, NULL, g_tenant, "", g_source, T0, &d), BASE_ERR_INVALID);
    FAILS_WITH(throttle_check(g_conn, NULL, g_tenant, NULL, g_source, T0, &d), BASE_ERR_INVALID);
    FAILS_WITH(throttle_check(g_conn, NULL, g_tenant, "alice", NULL, T0, &d), BASE_ERR_INVALID);
    FAILS_WITH(throttle_check(NULL, NULL, g_tenant, "alice", g_source, T0, &d), BASE_ERR_INVALID);
    FAILS_WITH(throttle_check(g_conn, NULL, g_tenant, "alice", g_source, -1, &d), BASE_ERR_INVALID);
    char longname[THROTTLE_NAME_MAX + 2];
    memset(longname, 'u', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    FAILS_WITH(throttle_failure(g_conn, NULL, g_tenant, longname, g_source, T0, &d), BASE_ERR_INVALID);

    throttle_config bad = {.user_max_failures = -1};
    FAILS_WITH(throttle_check(g_conn, &bad, g_tenant, "alice", g_source, T0, &d), BASE_ERR_INVALID);
    bad = (throttle_config){.lockout_base_s = 7200, .lockout_max_s = 3600};
    FAILS_WITH(throttle_check(g_conn, &bad, g_tenant, "alice", g_source, T0, &d), BASE_ERR_INVALID);
    bad = (throttle_config){.source_window_s = INT64_MAX};
    FAILS_WITH(throttle_failure(g_conn, &bad, g_tenant, "alice", g_source, T0, &d), BASE_ERR_INVALID);

    throttle_config resolved;
    MUST(throttle_config_resolve(NULL, &resolved));
    assert_int_equal(resolved.user_max_failures, 5);
    assert_int_equal(resolved.user_window_s, 900);
    assert_int_equal(resolved.lockout_base_s, 900);
    assert_int_equal(resolved.lockout_max_s, 86400);
    assert_int_equal(resolved.lockout_level_ttl_s, 86400);
    assert_int_equal(resolved.source_max_failures, 50);
    assert_int_equal(resolved.source_window_s, 900);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lockout_after_n, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exponential_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_failures_do_not_extend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_success_clears_user_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_user_counts_the_same, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_source_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
    };
    return cmocka_run_group_tests_name("identity_throttle", tests, NULL, NULL);
}
