/* Tests of common/cache against the real redis-server of the test harness (fixture "redis"). Every key is
 * under a prefix unique to this run, so runs and other test programs sharing the server do not collide.
 * The restart test starts its own private server (redis.sh with its own DIR) so that restarting it cannot
 * disturb other test programs that ctest runs in parallel against the shared one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/cache.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static cache_config g_cfg;
static cache_conn *g_conn;
static char g_prefix[64];

#define OK(expr)                                                                                             \
    do {                                                                                                     \
        base_result ok_r__ = (expr);                                                                         \
        if (!base_is_ok(ok_r__))                                                                             \
            fail_msg("%s: %s (%s)", #expr, base_err_name(ok_r__.err), base_error_message());                 \
    } while (0)

#define FAILS_WITH(expr, code)                                                                               \
    do {                                                                                                     \
        base_result fw_r__ = (expr);                                                                         \
        if (fw_r__.err != (code))                                                                            \
            fail_msg("%s: expected %s, got %s (%s)", #expr, base_err_name(code), base_err_name(fw_r__.err),  \
                     base_error_message());                                                                  \
    } while (0)

static const char *key(const char *name)
{
    static char buf[8][128];
    static int slot;
    char *out = buf[slot++ % 8];
    snprintf(out, sizeof buf[0], "%s:%s", g_prefix, name);
    return out;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int setup(void **state)
{
    (void)state;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "test_cache:%d:%lld%09ld", (int)getpid(), (long long)ts.tv_sec,
             ts.tv_nsec);
    g_cfg = (cache_config){.host = testenv_redis_host(), .port = testenv_redis_port()};
    if (!base_is_ok(cache_conn_new(&g_cfg, &g_conn)))
        return -1;
    if (!base_is_ok(cache_conn_connect(g_conn))) {
        fprintf(stderr, "cannot reach the harness redis: %s\n", base_error_message());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    /* Remove this run's keys (SCAN + DEL through the generic command). */
    char pattern[96];
    snprintf(pattern, sizeof pattern, "%s:*", g_prefix);
    char cursor[32] = "0";
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        cache_reply *reply = NULL;
        if (!base_is_ok(cache_command_argv(g_conn, 6, argv, NULL, &reply)))
            break;
        size_t len = 0;
        const char *next = cache_reply_string(cache_reply_element(reply, 0), &len);
        snprintf(cursor, sizeof cursor, "%.*s", (int)len, next ? next : "0");
        const cache_reply *keys = cache_reply_element(reply, 1);
        for (size_t i = 0; i < cache_reply_count(keys); i++) {
            const char *k = cache_reply_string(cache_reply_element(keys, i), NULL);
            base_result r = k ? cache_del(g_conn, k, NULL) : BASE_OK_RESULT;
            (void)r; /* best effort */
        }
        cache_reply_free(reply);
    } while (strcmp(cursor, "0") != 0);
    cache_conn_free(g_conn);
    g_conn = NULL;
    return 0;
}

/* ---- basic commands ---------------------------------------------------------------------------- */

static void test_set_get_binary(void **state)
{
    (void)state;
    static const unsigned char value[] = {'a', 0, 'b', 0, 0, 0xff, 0x80, '\r', '\n', 'z'};
    bool stored = false, found = true;
    cache_bytes got = {NULL, 0};

    OK(cache_get(g_conn, key("bin"), &got, &found));
    assert_false(found);
    assert_null(got.data);

    OK(cache_set(g_conn, key("bin"), value, sizeof value, 0, CACHE_SET_ALWAYS, &stored));
    assert_true(stored);
    OK(cache_get(g_conn, key("bin"), &got, &found));
    assert_true(found);
    assert_int_equal(got.len, sizeof value);
    assert_memory_equal(got.data, value, sizeof value);
    assert_int_equal(got.data[got.len], 0); /* always NUL-terminated past len */
    cache_bytes_free(&got);
    assert_null(got.data);
    cache_bytes_free(&got); /* twice is harmless */
    cache_bytes_free(NULL);

    /* An empty value is found, with non-NULL data. */
    OK(cache_set(g_conn, key("empty"), "", 0, 0, CACHE_SET_ALWAYS, NULL));
    OK(cache_get(g_conn, key("empty"), &got, &found));
    assert_true(found);
    assert_non_null(got.data);
    assert_int_equal(got.len, 0);
    cache_bytes_free(&got);

    bool deleted = false;
    OK(cache_del(g_conn, key("bin"), &deleted));
    assert_true(deleted);
    OK(cache_del(g_conn, key("bin"), &deleted));
    assert_false(deleted);
    OK(cache_get(g_conn, key("bin"), NULL, &found));
    assert_false(found);
}

static void test_ttl_expiry(void **state)
{
    (void)state;
    int64_t ttl = 0;
    bool set = false, found = true;

    OK(cache_ttl(g_conn, key("ttl"), &ttl));
    assert_int_equal(ttl, CACHE_TTL_MISSING);
    OK(cache_set(g_conn, key("ttl"), "v", 1, 0, CACHE_SET_ALWAYS, NULL));
    OK(cache_ttl(g_conn, key("ttl"), &ttl));
    assert_int_equal(ttl, CACHE_TTL_NONE);

    OK(cache_pexpire(g_conn, key("ttl"), 150, &set));
    assert_true(set);
    OK(cache_ttl(g_conn, key("ttl"), &ttl));
    assert_true(ttl > 0 && ttl <= 150);
    sleep_ms(300);
    OK(cache_get(g_conn, key("ttl"), NULL, &found));
    assert_false(found);
    OK(cache_ttl(g_conn, key("ttl"), &ttl));
    assert_int_equal(ttl, CACHE_TTL_MISSING);
    OK(cache_pexpire(g_conn, key("ttl"), 150, &set));
    assert_false(set); /* no such key */

    /* SET ... PX and EXPIRE in seconds. */
    OK(cache_set(g_conn, key("ttl2"), "v", 1, 100, CACHE_SET_ALWAYS, NULL));
    OK(cache_ttl(g_conn, key("ttl2"), &ttl));
    assert_true(ttl > 0 && ttl <= 100);
    sleep_ms(250);
    OK(cache_get(g_conn, key("ttl2"), NULL, &found));
    assert_false(found);
    OK(cache_set(g_conn, key("ttl3"), "v", 1, 0, CACHE_SET_ALWAYS, NULL));
    OK(cache_expire(g_conn, key("ttl3"), 60, &set));
    assert_true(set);
    OK(cache_ttl(g_conn, key("ttl3"), &ttl));
    assert_true(ttl > 58000 && ttl <= 60000);

    /* A non-positive ttl would delete the key in Redis: refused. */
    FAILS_WITH(cache_pexpire(g_conn, key("ttl3"), 0, NULL), BASE_ERR_INVALID);
    FAILS_WITH(cache_set(g_conn, key("ttl3"), "v", 1, -5, CACHE_SET_ALWAYS, NULL), BASE_ERR_INVALID);
}

static void test_nx_xx(void **state)
{
    (void)state;
    bool stored = false, found = false;
    cache_bytes got = {NULL, 0};

    OK(cache_set(g_conn, key("nx"), "first", 5, 0, CACHE_SET_XX, &stored));
    assert_false(stored); /* XX on a missing key */
    OK(cache_get(g_conn, key("nx"), NULL, &found));
    assert_false(found);

    OK(cache_set(g_conn, key("nx"), "first", 5, 0, CACHE_SET_NX, &stored));
    assert_true(stored);
    OK(cache_set(g_conn, key("nx"), "second", 6, 0, CACHE_SET_NX, &stored));
    assert_false(stored);
    OK(cache_get(g_conn, key("nx"), &got, &found));
    assert_string_equal((const char *)got.data, "first");
    cache_bytes_free(&got);

    OK(cache_set(g_conn, key("nx"), "third", 5, 0, CACHE_SET_XX, &stored));
    assert_true(stored);
    OK(cache_get(g_conn, key("nx"), &got, &found));
    assert_string_equal((const char *)got.data, "third");
    cache_bytes_free(&got);

    FAILS_WITH(cache_set(g_conn, key("nx"), "x", 1, 0, (cache_set_mode)42, NULL), BASE_ERR_INVALID);
}

static void test_incr_expire(void **state)
{
    (void)state;
    int64_t v = 0, ttl = 0;
    for (int i = 1; i <= 3; i++) {
        OK(cache_incr_expire(g_conn, key("rate"), 200, &v));
        assert_int_equal(v, i);
    }
    OK(cache_ttl(g_conn, key("rate"), &ttl));
    assert_true(ttl > 0 && ttl <= 200); /* the window was not extended by later increments */
    sleep_ms(350);
    OK(cache_incr_expire(g_conn, key("rate"), 200, &v));
    assert_int_equal(v, 1); /* a new window */

    /* A counter that lost its expiry gets one back. */
    OK(cache_incr(g_conn, key("rate2"), &v));
    assert_int_equal(v, 1);
    OK(cache_ttl(g_conn, key("rate2"), &ttl));
    assert_int_equal(ttl, CACHE_TTL_NONE);
    OK(cache_incr_expire(g_conn, key("rate2"), 5000, &v));
    assert_int_equal(v, 2);
    OK(cache_ttl(g_conn, key("rate2"), &ttl));
    assert_true(ttl > 0 && ttl <= 5000);

    FAILS_WITH(cache_incr_expire(g_conn, key("rate2"), 0, &v), BASE_ERR_INVALID);
    /* INCR of a non-integer is a Redis error reply: mapped, connection kept. */
    OK(cache_set(g_conn, key("notint"), "abc", 3, 0, CACHE_SET_ALWAYS, NULL));
    FAILS_WITH(cache_incr(g_conn, key("notint"), &v), BASE_ERR_INVALID);
    assert_true(cache_conn_is_connected(g_conn));
}

static void test_hashes(void **state)
{
    (void)state;
    const char *k = key("sess");
    bool created = false, found = false, deleted = false;
    cache_bytes got = {NULL, 0};
    static const unsigned char blob[] = {1, 0, 2, 0, 3};

    OK(cache_hset(g_conn, k, "user", "u-123", 5, &created));
    assert_true(created);
    OK(cache_hset(g_conn, k, "user", "u-124", 5, &created));
    assert_false(created); /* updated */
    OK(cache_hset(g_conn, k, "blob", blob, sizeof blob, &created));
    assert_true(created);

    OK(cache_hget(g_conn, k, "user", &got, &found));
    assert_true(found);
    assert_string_equal((const char *)got.data, "u-124");
    cache_bytes_free(&got);
    OK(cache_hget(g_conn, k, "nope", &got, &found));
    assert_false(found);
    assert_null(got.data);

    cache_fields fields = {NULL, 0};
    OK(cache_hgetall(g_conn, k, &fields));
    assert_int_equal(fields.count, 2);
    bool saw_user = false, saw_blob = false;
    for (size_t i = 0; i < fields.count; i++) {
        if (strcmp((const char *)fields.items[i].name.data, "user") == 0) {
            saw_user = true;
            assert_string_equal((const char *)fields.items[i].value.data, "u-124");
        } else if (strcmp((const char *)fields.items[i].name.data, "blob") == 0) {
            saw_blob = true;
            assert_int_equal(fields.items[i].value.len, sizeof blob);
            assert_memory_equal(fields.items[i].value.data, blob, sizeof blob);
        }
    }
    assert_true(saw_user && saw_blob);
    cache_fields_free(&fields);
    cache_fields_free(&fields);

    OK(cache_hdel(g_conn, k, "blob", &deleted));
    assert_true(deleted);
    OK(cache_hdel(g_conn, k, "blob", &deleted));
    assert_false(deleted);
    OK(cache_hgetall(g_conn, key("no-such-hash"), &fields));
    assert_int_equal(fields.count, 0);
    cache_fields_free(&fields);

    /* The wrong type: CONFLICT, and the message names neither the key nor the value. */
    FAILS_WITH(cache_get(g_conn, k, &got, &found), BASE_ERR_CONFLICT);
    assert_non_null(strstr(base_error_message(), "WRONGTYPE"));
    assert_null(strstr(base_error_message(), g_prefix));
    assert_true(cache_conn_is_connected(g_conn));
}

static void test_sets(void **state)
{
    (void)state;
    const char *k = key("user-sessions");
    bool added = false, removed = false;
    OK(cache_sadd(g_conn, k, "s1", &added));
    assert_true(added);
    OK(cache_sadd(g_conn, k, "s2", &added));
    assert_true(added);
    OK(cache_sadd(g_conn, k, "s1", &added));
    assert_false(added);

    cache_list members = {NULL, 0};
    OK(cache_smembers(g_conn, k, &members));
    assert_int_equal(members.count, 2);
    bool s1 = false, s2 = false;
    for (size_t i = 0; i < members.count; i++) {
        s1 |= strcmp((const char *)members.items[i].data, "s1") == 0;
        s2 |= strcmp((const char *)members.items[i].data, "s2") == 0;
    }
    assert_true(s1 && s2);
    cache_list_free(&members);

    OK(cache_srem(g_conn, k, "s1", &removed));
    assert_true(removed);
    OK(cache_srem(g_conn, k, "s1", &removed));
    assert_false(removed);
    OK(cache_smembers(g_conn, k, &members));
    assert_int_equal(members.count, 1);
    assert_string_equal((const char *)members.items[0].data, "s2");
    cache_list_free(&members);
    OK(cache_smembers(g_conn, key("no-such-set"), &members));
    assert_int_equal(members.count, 0);
    cache_list_free(&members);
}

static void test_pubsub(void **state)
{
    (void)state;
    cache_sub *sub = NULL;
    OK(cache_sub_new(&g_cfg, &sub));
    cache_bytes ch = {NULL, 0}, msg = {NULL, 0};
    FAILS_WITH(cache_sub_next(sub, 10, &ch, &msg), BASE_ERR_INVALID); /* nothing subscribed */

    const char *room = key("room-1");
    const char *other = key("room-2");
    OK(cache_sub_subscribe(sub, room));
    OK(cache_sub_subscribe(sub, room)); /* no-op */
    OK(cache_sub_subscribe(sub, other));

    long long t0 = now_ms();
    FAILS_WITH(cache_sub_next(sub, 100, &ch, &msg), BASE_ERR_TIMEOUT);
    assert_true(now_ms() - t0 >= 90);
    FAILS_WITH(cache_sub_next(sub, 0, &ch, &msg), BASE_ERR_TIMEOUT);

    static const unsigned char offer[] = {'s', 'd', 'p', 0, 1, 2};
    int64_t receivers = 0;
    OK(cache_publish(g_conn, room, offer, sizeof offer, &receivers));
    assert_int_equal(receivers, 1);
    OK(cache_publish(g_conn, other, "bye", 3, &receivers));
    assert_int_equal(receivers, 1);

    OK(cache_sub_next(sub, 2000, &ch, &msg));
    assert_string_equal((const char *)ch.data, room);
    assert_int_equal(msg.len, sizeof offer);
    assert_memory_equal(msg.data, offer, sizeof offer);
    cache_bytes_free(&ch);
    cache_bytes_free(&msg);
    OK(cache_sub_next(sub, 2000, &ch, &msg));
    assert_string_equal((const char *)ch.data, other);
    assert_string_equal((const char *)msg.data, "bye");
    cache_bytes_free(&ch);
    cache_bytes_free(&msg);

    /* After UNSUBSCRIBE nothing more arrives from that channel. */
    OK(cache_sub_unsubscribe(sub, other));
    OK(cache_publish(g_conn, other, "late", 4, &receivers));
    OK(cache_publish(g_conn, room, "still", 5, &receivers));
    OK(cache_sub_next(sub, 2000, &ch, &msg));
    assert_string_equal((const char *)ch.data, room);
    assert_string_equal((const char *)msg.data, "still");
    cache_bytes_free(&ch);
    cache_bytes_free(&msg);
    FAILS_WITH(cache_sub_next(sub, 100, &ch, &msg), BASE_ERR_TIMEOUT);

    /* A message over the limit is not sent. */
    cache_config small = g_cfg;
    small.max_value_bytes = 8;
    cache_conn *c = NULL;
    OK(cache_conn_new(&small, &c));
    FAILS_WITH(cache_publish(c, room, "123456789", 9, &receivers), BASE_ERR_LIMIT);
    cache_conn_free(c);
    FAILS_WITH(cache_sub_next(sub, 100, &ch, &msg), BASE_ERR_TIMEOUT);

    cache_sub_free(sub);
    cache_sub_free(NULL);
}

static void test_value_limit(void **state)
{
    (void)state;
    cache_config small = g_cfg;
    small.max_value_bytes = 1024;
    cache_conn *c = NULL;
    OK(cache_conn_new(&small, &c));
    char *big = calloc(1, (2u << 20) + 1);
    assert_non_null(big);
    bool found = true;

    FAILS_WITH(cache_set(c, key("big"), big, 1025, 0, CACHE_SET_ALWAYS, NULL), BASE_ERR_LIMIT);
    assert_false(cache_conn_is_connected(c)); /* refused before anything was sent */
    OK(cache_get(g_conn, key("big"), NULL, &found));
    assert_false(found);
    FAILS_WITH(cache_hset(c, key("bigh"), "f", big, 1025, NULL), BASE_ERR_LIMIT);
    OK(cache_set(c, key("big"), big, 1024, 0, CACHE_SET_ALWAYS, NULL)); /* exactly the limit */

    /* A stored value larger than this connection accepts is refused on read too. */
    OK(cache_set(g_conn, key("big2"), big, 2048, 0, CACHE_SET_ALWAYS, NULL));
    FAILS_WITH(cache_get(c, key("big2"), NULL, &found), BASE_ERR_LIMIT);

    /* The default limit is 1 MiB. */
    FAILS_WITH(cache_set(g_conn, key("big3"), big, (1u << 20) + 1, 0, CACHE_SET_ALWAYS, NULL),
               BASE_ERR_LIMIT);
    OK(cache_get(g_conn, key("big3"), NULL, &found));
    assert_false(found);
    OK(cache_set(g_conn, key("big3"), big, 1u << 20, 0, CACHE_SET_ALWAYS, NULL));

    /* Keys are bounded and never empty; generic arguments are bounded too. */
    char longkey[600];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    FAILS_WITH(cache_set(c, longkey, "v", 1, 0, CACHE_SET_ALWAYS, NULL), BASE_ERR_LIMIT);
    FAILS_WITH(cache_set(c, "", "v", 1, 0, CACHE_SET_ALWAYS, NULL), BASE_ERR_INVALID);
    FAILS_WITH(cache_get(c, NULL, NULL, NULL), BASE_ERR_INVALID);
    const char *argv[3] = {"SET", key("big4"), big};
    const size_t lens[3] = {3, strlen(argv[1]), 1025};
    FAILS_WITH(cache_command_argv(c, 3, argv, lens, NULL), BASE_ERR_LIMIT);
    OK(cache_get(g_conn, key("big4"), NULL, &found));
    assert_false(found);

    free(big);
    cache_conn_free(c);
}

static void test_command_argv(void **state)
{
    (void)state;
    const char *list = key("list");
    const char *argv[4] = {"RPUSH", list, "a\0b", "c"};
    const size_t lens[4] = {5, strlen(list), 3, 1};
    cache_reply *reply = NULL;
    OK(cache_command_argv(g_conn, 4, argv, lens, &reply));
    assert_int_equal(cache_reply_typeof(reply), CACHE_REPLY_INTEGER);
    assert_int_equal(cache_reply_integer(reply), 2);
    assert_null(cache_reply_string(reply, NULL));
    cache_reply_free(reply);

    const char *range[4] = {"LRANGE", list, "0", "-1"};
    OK(cache_command_argv(g_conn, 4, range, NULL, &reply));
    assert_int_equal(cache_reply_typeof(reply), CACHE_REPLY_ARRAY);
    assert_int_equal(cache_reply_count(reply), 2);
    size_t len = 0;
    const char *s = cache_reply_string(cache_reply_element(reply, 0), &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 3);
    assert_string_equal(cache_reply_string(cache_reply_element(reply, 1), NULL), "c");
    assert_null(cache_reply_element(reply, 2));
    cache_reply_free(reply);

    const char *ping[1] = {"PING"};
    OK(cache_command_argv(g_conn, 1, ping, NULL, &reply));
    assert_int_equal(cache_reply_typeof(reply), CACHE_REPLY_STATUS);
    assert_string_equal(cache_reply_string(reply, NULL), "PONG");
    cache_reply_free(reply);

    const char *get[2] = {"GET", key("missing")};
    OK(cache_command_argv(g_conn, 2, get, NULL, &reply));
    assert_int_equal(cache_reply_typeof(reply), CACHE_REPLY_NIL);
    cache_reply_free(reply);
    cache_reply_free(NULL);

    /* An error reply fails with a message that does not echo the arguments. */
    const char *bad[2] = {"NOSUCHCOMMAND", "patient-4711"};
    FAILS_WITH(cache_command_argv(g_conn, 2, bad, NULL, &reply), BASE_ERR_INVALID);
    assert_null(strstr(base_error_message(), "4711"));
    assert_null(strstr(base_error_message(), "NOSUCH"));

    /* Commands that would wedge an ordinary connection are refused. */
    const char *subscribe[2] = {"subscribe", "x"};
    FAILS_WITH(cache_command_argv(g_conn, 2, subscribe, NULL, &reply), BASE_ERR_INVALID);
    FAILS_WITH(cache_command_argv(g_conn, 0, subscribe, NULL, &reply), BASE_ERR_INVALID);
    assert_true(cache_conn_is_connected(g_conn));
}

/* ---- failures ---------------------------------------------------------------------------------- */

static void test_unreachable(void **state)
{
    (void)state;
    cache_config cfg = {.host = "127.0.0.1", .port = testenv_closed_port(), .connect_timeout_ms = 500};
    cache_conn *c = NULL;
    OK(cache_conn_new(&cfg, &c));
    long long t0 = now_ms();
    FAILS_WITH(cache_conn_connect(c), BASE_ERR_UNAVAILABLE);
    assert_string_equal(base_error_message(), "redis unavailable: connection refused");
    FAILS_WITH(cache_get(c, key("x"), NULL, NULL), BASE_ERR_UNAVAILABLE);
    FAILS_WITH(cache_incr(c, key("x"), NULL), BASE_ERR_UNAVAILABLE);
    assert_true(now_ms() - t0 < 1000);
    assert_false(cache_conn_is_connected(c));
    cache_conn_free(c);

    cache_sub *sub = NULL;
    OK(cache_sub_new(&cfg, &sub));
    FAILS_WITH(cache_sub_subscribe(sub, "ch"), BASE_ERR_UNAVAILABLE);
    cache_sub_free(sub);
}

static void test_bad_config_and_secret(void **state)
{
    (void)state;
    cache_conn *c = NULL;
    cache_config cfg = {.port = 70000};
    FAILS_WITH(cache_conn_new(&cfg, &c), BASE_ERR_INVALID);
    cfg = (cache_config){.command_timeout_ms = -1};
    FAILS_WITH(cache_conn_new(&cfg, &c), BASE_ERR_INVALID);
    FAILS_WITH(cache_conn_new(NULL, &c), BASE_ERR_INVALID);
    cache_conn_free(NULL);

    /* The harness Redis has no password: AUTH fails, and the password is in no message. */
    cfg = g_cfg;
    cfg.password = "hunter2-not-the-password";
    OK(cache_conn_new(&cfg, &c));
    base_result r = cache_conn_connect(c);
    assert_int_equal(r.err, BASE_ERR_UNAVAILABLE);
    assert_non_null(strstr(base_error_message(), "authentication failed"));
    assert_null(strstr(base_error_message(), "hunter2"));
    cache_conn_free(c);

    /* SELECT a database, isolated from db 0. */
    cfg = g_cfg;
    cfg.db = 3;
    OK(cache_conn_new(&cfg, &c));
    OK(cache_set(c, key("db3"), "v", 1, 0, CACHE_SET_ALWAYS, NULL));
    bool found = true;
    OK(cache_get(g_conn, key("db3"), NULL, &found));
    assert_false(found);
    OK(cache_get(c, key("db3"), NULL, &found));
    assert_true(found);
    OK(cache_del(c, key("db3"), NULL));
    cache_conn_free(c);
}

static void test_command_timeout(void **state)
{
    (void)state;
    cache_config cfg = g_cfg;
    cfg.command_timeout_ms = 200;
    cache_conn *c = NULL;
    OK(cache_conn_new(&cfg, &c));
    OK(cache_conn_connect(c));

    /* BLPOP on an empty list blocks (server-side for 5 s): longer than the 200 ms command timeout. */
    const char *argv[3] = {"BLPOP", key("never"), "5"};
    cache_reply *reply = NULL;
    long long t0 = now_ms();
    FAILS_WITH(cache_command_argv(c, 3, argv, NULL, &reply), BASE_ERR_TIMEOUT);
    long long took = now_ms() - t0;
    assert_true(took >= 150 && took < 2000);
    assert_string_equal(base_error_message(), "redis command timed out");
    assert_false(cache_conn_is_connected(c)); /* closed: its late reply must not be read as another's */

    /* The next command reconnects. */
    OK(cache_set(c, key("after-timeout"), "ok", 2, 0, CACHE_SET_ALWAYS, NULL));
    cache_bytes got = {NULL, 0};
    bool found = false;
    OK(cache_get(c, key("after-timeout"), &got, &found));
    assert_true(found);
    assert_string_equal((const char *)got.data, "ok");
    cache_bytes_free(&got);
    cache_conn_free(c);
}

/* ---- restart ---------------------------------------------------------------------------------- */

static void harness(const char *verb, const char *dir)
{
    char script[1024], cmd[2600];
    snprintf(script, sizeof script, "%s", testenv_source_path("tests/harness/redis.sh"));
    assert_null(strchr(script, '\''));
    assert_null(strchr(dir, '\''));
    snprintf(cmd, sizeof cmd, "bash '%s' %s '%s' >/dev/null", script, verb, dir);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("redis.sh %s %s failed (%d)", verb, dir, rc);
}

static int harness_port(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/redis.port", dir);
    char *s = testenv_read_file(path);
    char *end;
    long port = strtol(s, &end, 10);
    free(s);
    assert_true(port > 0 && port <= 65535);
    return (int)port;
}

static void test_restart_reconnects(void **state)
{
    (void)state;
    char dir[1024];
    char rel[64];
    snprintf(rel, sizeof rel, "testenv/cache-restart-%d", (int)getpid());
    snprintf(dir, sizeof dir, "%s", testenv_binary_path(rel));
    harness("start", dir);
    cache_config cfg = {.host = "127.0.0.1", .port = harness_port(dir), .command_timeout_ms = 2000};

    cache_conn *a = NULL, *b = NULL;
    cache_sub *sub = NULL;
    cache_conn *big = NULL;
    OK(cache_conn_new(&cfg, &a));
    OK(cache_conn_new(&cfg, &b));
    cache_config big_cfg = cfg;
    big_cfg.max_value_bytes = 16u << 20;
    OK(cache_conn_new(&big_cfg, &big));
    OK(cache_conn_connect(big));
    OK(cache_sub_new(&cfg, &sub));
    OK(cache_set(a, key("r"), "before", 6, 0, CACHE_SET_ALWAYS, NULL));
    int64_t v = 0;
    OK(cache_incr(b, key("rc"), &v));
    OK(cache_sub_subscribe(sub, key("events")));

    harness("restart", dir);
    assert_int_equal(harness_port(dir), cfg.port);

    /* GET is idempotent: retried transparently on a new connection. Nothing persisted, so it is gone. */
    bool found = true;
    OK(cache_get(a, key("r"), NULL, &found));
    assert_false(found);
    assert_true(cache_conn_is_connected(a));

    /* A large write to a connection the server closed: the kernel answers EPIPE, which must not kill the
     * process with SIGPIPE; SET is retried on a new connection. */
    char *blob = calloc(1, 16u << 20);
    assert_non_null(blob);
    OK(cache_set(big, key("big-after-restart"), blob, 16u << 20, 0, CACHE_SET_ALWAYS, NULL));
    free(blob);
    cache_conn_free(big);

    /* INCR is not retried: the first call may fail (stale connection); the one after reconnects. */
    base_result r = cache_incr(b, key("rc"), &v);
    assert_true(base_is_ok(r) || r.err == BASE_ERR_UNAVAILABLE);
    OK(cache_incr(b, key("rc"), &v));
    assert_true(v >= 1);

    /* The subscriber reports the loss once, then reconnects and subscribes again. */
    cache_bytes ch = {NULL, 0}, msg = {NULL, 0};
    r = cache_sub_next(sub, 1000, &ch, &msg);
    assert_int_equal(r.err, BASE_ERR_UNAVAILABLE);
    FAILS_WITH(cache_sub_next(sub, 50, &ch, &msg), BASE_ERR_TIMEOUT); /* reconnected, resubscribed */
    int64_t receivers = 0;
    OK(cache_publish(a, key("events"), "again", 5, &receivers));
    assert_int_equal(receivers, 1);
    OK(cache_sub_next(sub, 2000, &ch, &msg));
    assert_string_equal((const char *)msg.data, "again");
    cache_bytes_free(&ch);
    cache_bytes_free(&msg);

    /* Redis gone for good: unavailable, quickly, no crash. */
    harness("stop", dir);
    long long t0 = now_ms();
    FAILS_WITH(cache_get(a, key("r"), NULL, &found), BASE_ERR_UNAVAILABLE);
    FAILS_WITH(cache_set(a, key("r"), "x", 1, 0, CACHE_SET_ALWAYS, NULL), BASE_ERR_UNAVAILABLE);
    FAILS_WITH(cache_sub_next(sub, 100, &ch, &msg), BASE_ERR_UNAVAILABLE);
    FAILS_WITH(cache_sub_next(sub, 100, &ch, &msg), BASE_ERR_UNAVAILABLE);
    assert_true(now_ms() - t0 < 2000);

    cache_sub_free(sub);
    cache_conn_free(a);
    cache_conn_free(b);
    char lock[1100];
    snprintf(lock, sizeof lock, "%s/redis.lock", dir);
    unlink(lock);
    rmdir(dir);
}

/* ---- threads ---------------------------------------------------------------------------------- */

#define THREADS   4
#define INCR_EACH 250
static pthread_barrier_t g_barrier;
static cache_conn *g_thread_conns[THREADS];

static void *incr_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    /* The key in this thread's own buffer: key()'s rotating static buffers are not for concurrent use (a
     * thread formatting into a slot another thread was reading made one INCR land on a truncated key). */
    char counter[128];
    snprintf(counter, sizeof counter, "%s:%s", g_prefix, "counter");
    cache_conn *c = cache_thread_conn(&g_cfg);
    g_thread_conns[id] = c;
    /* All threads hold their connection at once, so the pointers are distinct objects. */
    pthread_barrier_wait(&g_barrier);
    if (!c)
        return (void *)1;
    for (int i = 0; i < INCR_EACH; i++) {
        if (cache_thread_conn(&g_cfg) != c)
            return (void *)2;
        if (!base_is_ok(cache_incr(cache_thread_conn(&g_cfg), counter, NULL)))
            return (void *)3;
    }
    return NULL; /* the connection is freed by the thread-exit destructor */
}

static void test_thread_conns(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    assert_int_equal(pthread_barrier_init(&g_barrier, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, incr_worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
    pthread_barrier_destroy(&g_barrier);
    for (int i = 0; i < THREADS; i++)
        for (int j = i + 1; j < THREADS; j++)
            assert_ptr_not_equal(g_thread_conns[i], g_thread_conns[j]);

    cache_bytes got = {NULL, 0};
    bool found = false;
    OK(cache_get(g_conn, key("counter"), &got, &found));
    assert_true(found);
    assert_string_equal((const char *)got.data, "1000");
    cache_bytes_free(&got);

    /* On this thread too: same connection on each call, released explicitly (main thread). */
    cache_conn *mine = cache_thread_conn(&g_cfg);
    assert_non_null(mine);
    assert_ptr_equal(cache_thread_conn(&g_cfg), mine);
    cache_config bad = {.port = -1};
    assert_null(cache_thread_conn(&bad));
    cache_thread_conn_release();
    cache_thread_conn_release();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_binary),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_nx_xx),
        cmocka_unit_test(test_incr_expire),
        cmocka_unit_test(test_hashes),
        cmocka_unit_test(test_sets),
        cmocka_unit_test(test_pubsub),
        cmocka_unit_test(test_value_limit),
        cmocka_unit_test(test_command_argv),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_bad_config_and_secret),
        cmocka_unit_test(test_command_timeout),
        cmocka_unit_test(test_restart_reconnects),
        cmocka_unit_test(test_thread_conns),
    };
    return cmocka_run_group_tests_name("cache", tests, setup, teardown);
}
