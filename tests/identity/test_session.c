/* Sessions against the real Redis of the harness: idle and absolute timeouts, refresh secrets, logout,
 * logout everywhere, and Redis down. Time is passed in, so the absolute timeout is tested without waiting;
 * the idle timeout is the key's real TTL, so those tests use a 1 s idle timeout and wait for it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "session.h"
#include "testenv.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define TENANT "tenant-a"

static cache_conn *g_conn;
static char g_principal[64];
static int g_n;

static int setup(void **state)
{
    (void)state;
    cache_config cfg = {.host = testenv_redis_host(), .port = testenv_redis_port()};
    if (!base_is_ok(cache_conn_new(&cfg, &g_conn)))
        return -1;
    snprintf(g_principal, sizeof g_principal, "usr_test_%d_%d", (int)getpid(), g_n++);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cache_conn_free(g_conn);
    g_conn = NULL;
    return 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static void test_create_refresh_end(void **state)
{
    (void)state;
    session_config cfg = session_config_default();
    session_info s;
    char secret[SESSION_SECRET_LEN + 1];
    int64_t now = now_s();
    MUST(session_create(g_conn, &cfg, TENANT, g_principal, true, now, &s, secret));
    assert_int_equal(strlen(s.sid), SESSION_ID_LEN);
    assert_int_equal(strlen(secret), SESSION_SECRET_LEN);
    assert_int_equal(s.abs_end, now + cfg.absolute_s);
    assert_true(s.mfa);

    /* The secret is stored only as its hash. */
    char key[128];
    snprintf(key, sizeof key, "idn:ses:%s", s.sid);
    cache_bytes stored = {0};
    bool found = false;
    MUST(cache_hget(g_conn, key, "refresh", &stored, &found));
    assert_true(found);
    assert_null(strstr((const char *)stored.data, secret));
    cache_bytes_free(&stored);

    session_info r;
    MUST(session_refresh(g_conn, &cfg, s.sid, secret, now + 60, &r));
    assert_string_equal(r.principal_id, g_principal);
    assert_string_equal(r.tenant_id, TENANT);
    assert_int_equal(r.idle_end, now + 60 + cfg.idle_s);

    /* A wrong secret, a malformed id, an unknown session: one answer, UNAUTHENTICATED. */
    char wrong[SESSION_SECRET_LEN + 1];
    memcpy(wrong, secret, sizeof wrong);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    assert_int_equal(session_refresh(g_conn, &cfg, s.sid, wrong, now, &r).err, BASE_ERR_UNAUTH);
    char msg_wrong[256];
    snprintf(msg_wrong, sizeof msg_wrong, "%s", base_error_message());
    assert_int_equal(
        session_refresh(g_conn, &cfg, "ses_00000000000000000000000000000000", secret, now, &r).err,
        BASE_ERR_UNAUTH);
    assert_string_equal(base_error_message(), msg_wrong);
    assert_int_equal(session_refresh(g_conn, &cfg, "bogus", secret, now, &r).err, BASE_ERR_UNAUTH);
    assert_int_equal(session_refresh(g_conn, &cfg, s.sid, "short", now, &r).err, BASE_ERR_UNAUTH);

    /* Logout: the session is gone for good. */
    bool ended = false;
    MUST(session_end(g_conn, s.sid, &ended));
    assert_true(ended);
    assert_int_equal(session_refresh(g_conn, &cfg, s.sid, secret, now, &r).err, BASE_ERR_UNAUTH);
    assert_int_equal(session_get(g_conn, s.sid, now, &r).err, BASE_ERR_UNAUTH);
    MUST(session_end(g_conn, s.sid, &ended));
    assert_false(ended);
}

static void test_absolute_timeout(void **state)
{
    (void)state;
    session_config cfg = {.idle_s = 600, .absolute_s = 3600};
    session_info s, r;
    char secret[SESSION_SECRET_LEN + 1];
    int64_t now = now_s();
    MUST(session_create(g_conn, &cfg, TENANT, g_principal, false, now, &s, secret));
    /* Refreshing keeps it alive until the absolute end, never past it. */
    MUST(session_refresh(g_conn, &cfg, s.sid, secret, now + 3599 - 60, &r));
    assert_int_equal(r.idle_end, s.abs_end);
    assert_int_equal(session_refresh(g_conn, &cfg, s.sid, secret, now + 3600, &r).err, BASE_ERR_UNAUTH);
    assert_int_equal(session_get(g_conn, s.sid, now + 3601, &r).err, BASE_ERR_UNAUTH);
    MUST(session_get(g_conn, s.sid, now + 3599, &r));
}

static void test_idle_timeout(void **state)
{
    (void)state;
    session_config cfg = {.idle_s = 1, .absolute_s = 60};
    session_info s, r;
    char secret[SESSION_SECRET_LEN + 1];
    MUST(session_create(g_conn, &cfg, TENANT, g_principal, false, now_s(), &s, secret));
    MUST(session_get(g_conn, s.sid, now_s(), &r));
    struct timespec ts = {1, 600 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(session_refresh(g_conn, &cfg, s.sid, secret, now_s(), &r).err, BASE_ERR_UNAUTH);
    assert_int_equal(session_get(g_conn, s.sid, now_s(), &r).err, BASE_ERR_UNAUTH);
}

typedef struct ended_list {
    int n;
    char sids[8][SESSION_ID_LEN + 1];
} ended_list;

static void on_ended(void *arg, const char *sid)
{
    ended_list *l = arg;
    if (l->n < 8)
        snprintf(l->sids[l->n++], SESSION_ID_LEN + 1, "%s", sid);
}

static void test_end_all(void **state)
{
    (void)state;
    session_config cfg = session_config_default();
    session_info s[3], other, r;
    char secret[3][SESSION_SECRET_LEN + 1], other_secret[SESSION_SECRET_LEN + 1];
    int64_t now = now_s();
    for (int i = 0; i < 3; i++)
        MUST(session_create(g_conn, &cfg, TENANT, g_principal, false, now, &s[i], secret[i]));
    char someone[80];
    snprintf(someone, sizeof someone, "%s_other", g_principal);
    MUST(session_create(g_conn, &cfg, TENANT, someone, false, now, &other, other_secret));
    ended_list l = {0};
    int count = 0;
    MUST(session_end_all(g_conn, g_principal, on_ended, &l, &count));
    assert_int_equal(count, 3);
    assert_int_equal(l.n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(session_refresh(g_conn, &cfg, s[i].sid, secret[i], now, &r).err, BASE_ERR_UNAUTH);
    /* Someone else's session is untouched. */
    MUST(session_refresh(g_conn, &cfg, other.sid, other_secret, now, &r));
    MUST(session_end_all(g_conn, g_principal, NULL, NULL, &count));
    assert_int_equal(count, 0);
}

static void test_bad_input_and_redis_down(void **state)
{
    (void)state;
    session_config cfg = session_config_default();
    session_info s;
    char secret[SESSION_SECRET_LEN + 1];
    assert_int_equal(session_create(g_conn, &cfg, "", g_principal, false, now_s(), &s, secret).err,
                     BASE_ERR_INVALID);
    assert_int_equal(session_create(g_conn, &cfg, TENANT, "bad principal", false, now_s(), &s, secret).err,
                     BASE_ERR_INVALID);
    session_config bad = {.idle_s = 100, .absolute_s = 10};
    assert_int_equal(session_create(g_conn, &bad, TENANT, g_principal, false, now_s(), &s, secret).err,
                     BASE_ERR_INVALID);

    cache_config down = {.host = "127.0.0.1", .port = testenv_closed_port(), .connect_timeout_ms = 200};
    cache_conn *c = NULL;
    MUST(cache_conn_new(&down, &c));
    assert_int_equal(session_create(c, &cfg, TENANT, g_principal, false, now_s(), &s, secret).err,
                     BASE_ERR_UNAVAILABLE);
    assert_int_equal(session_get(c, "ses_00000000000000000000000000000000", now_s(), &s).err,
                     BASE_ERR_UNAVAILABLE);
    cache_conn_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_refresh_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_and_redis_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
