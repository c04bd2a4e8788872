/* Connections, error mapping and the typed commands (cache.h). The subscriber is in sub.c. */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct cache_conn {
    cache__settings s;
    redisContext *ctx;          /* NULL: not connected (never used, or closed after a failure) */
    const cache_config *origin; /* the config cache_thread_conn made it for */
};

/* ---- settings --------------------------------------------------------------------------------- */

static base_result cache__dup_limited(const char *src, size_t max, const char *what, char **ret)
{
    size_t n = strnlen(src, max + 1);
    if (n > max)
        return base_fail(BASE_ERR_INVALID, "cache config: %s is too long", what);
    char *p = malloc(n + 1);
    if (!p)
        return base_fail(BASE_ERR_NOMEM, "cache config: out of memory");
    memcpy(p, src, n);
    p[n] = '\0';
    *ret = p;
    return BASE_OK_RESULT;
}

static base_result cache__timeout(int v, int def, const char *what, int *ret)
{
    if (v < 0 || v > CACHE__MAX_TIMEOUT_MS)
        return base_fail(BASE_ERR_INVALID, "cache config: %s out of range", what);
    *ret = v ? v : def;
    return BASE_OK_RESULT;
}

static base_result cache__limit(size_t v, size_t def, size_t cap, const char *what, size_t *ret)
{
    if (v > cap)
        return base_fail(BASE_ERR_INVALID, "cache config: %s out of range", what);
    *ret = v ? v : def;
    return BASE_OK_RESULT;
}

base_result cache__settings_init(cache__settings *s, const cache_config *cfg)
{
    base_result r = BASE_OK_RESULT;
    cache__settings out = {0};

    if (!cfg)
        return base_fail(BASE_ERR_INVALID, "cache config: missing");
    if (cfg->port < 0 || cfg->port > 65535)
        return base_fail(BASE_ERR_INVALID, "cache config: port out of range");
    if (cfg->db < 0)
        return base_fail(BASE_ERR_INVALID, "cache config: db out of range");
    out.port = cfg->port ? cfg->port : CACHE_DEFAULT_PORT;
    out.db = cfg->db;
    BASE_GUARD(cache__timeout(cfg->connect_timeout_ms, CACHE_DEFAULT_CONNECT_TIMEOUT_MS, "connect_timeout_ms",
                              &out.connect_timeout_ms));
    BASE_GUARD(cache__timeout(cfg->command_timeout_ms, CACHE_DEFAULT_COMMAND_TIMEOUT_MS, "command_timeout_ms",
                              &out.command_timeout_ms));
    BASE_GUARD(cache__limit(cfg->max_value_bytes, CACHE_DEFAULT_MAX_VALUE_BYTES, CACHE__MAX_VALUE_CAP,
                            "max_value_bytes", &out.max_value_bytes));
    BASE_GUARD(cache__limit(cfg->max_key_bytes, CACHE_DEFAULT_MAX_KEY_BYTES, CACHE__MAX_KEY_CAP,
                            "max_key_bytes", &out.max_key_bytes));
    BASE_GUARD(cache__limit(cfg->max_elements, CACHE_DEFAULT_MAX_ELEMENTS, CACHE__MAX_ELEMENTS_CAP,
                            "max_elements", &out.max_elements));

    const char *host = cfg->host && *cfg->host ? cfg->host : CACHE_DEFAULT_HOST;
    BASE_GUARD_GOTO(r, cache__dup_limited(host, CACHE__MAX_HOST_BYTES, "host", &out.host), fail);
    if (cfg->username && *cfg->username)
        BASE_GUARD_GOTO(
            r, cache__dup_limited(cfg->username, CACHE__MAX_CREDENTIAL_BYTES, "username", &out.username),
            fail);
    if (cfg->password && *cfg->password) {
        BASE_GUARD_GOTO(
            r, cache__dup_limited(cfg->password, CACHE__MAX_CREDENTIAL_BYTES, "password", &out.password),
            fail);
        out.password_len = strlen(out.password);
    }
    *s = out;
    return BASE_OK_RESULT;
fail:
    cache__settings_clear(&out);
    return r;
}

void cache__settings_clear(cache__settings *s)
{
    if (!s)
        return;
    if (s->password)
        explicit_bzero(s->password, s->password_len);
    free(s->password);
    free(s->username);
    free(s->host);
    explicit_bzero(s, sizeof *s);
}

/* ---- errors ------------------------------------------------------------------------------------- */

static const char *cache__errno_text(int e)
{
    switch (e) {
    case ECONNREFUSED:
        return "connection refused";
    case ECONNRESET:
        return "connection reset";
    case EPIPE:
        return "connection closed";
    case ETIMEDOUT:
    case EINPROGRESS:
    case EAGAIN:
        return "connect timed out";
    case EHOSTUNREACH:
    case ENETUNREACH:
        return "host unreachable";
    case EADDRNOTAVAIL:
        return "address not available";
    default:
        return "i/o error";
    }
}

/* The connect phase: every failure means Redis cannot be reached. */
static base_result cache__connect_failure(const redisContext *ctx, int saved_errno)
{
    switch (ctx->err) {
    case REDIS_ERR_IO:
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: %s", cache__errno_text(saved_errno));
    case REDIS_ERR_OOM:
        return base_fail(BASE_ERR_NOMEM, "redis connect: out of memory");
    case REDIS_ERR_OTHER:
        /* hiredis reports getaddrinfo failures here. */
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: cannot resolve or reach host");
    default:
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: connect failed");
    }
}

base_result cache__io_failure(const redisContext *ctx, int saved_errno)
{
    switch (ctx->err) {
    case REDIS_ERR_EOF:
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: connection closed");
    case REDIS_ERR_IO:
        /* SO_RCVTIMEO / SO_SNDTIMEO (redisSetTimeout) expiring shows as EAGAIN. */
        if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT)
            return base_fail(BASE_ERR_TIMEOUT, "redis command timed out");
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: %s", cache__errno_text(saved_errno));
    case REDIS_ERR_PROTOCOL:
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: protocol error");
    case REDIS_ERR_OOM:
        return base_fail(BASE_ERR_NOMEM, "redis: out of memory reading a reply");
    default:
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: connection error");
    }
}

base_result cache__error_reply(const redisReply *reply)
{
    /* Only the leading upper-case code word is used: the rest of an error text may echo arguments
     * ("unknown command 'x', with args beginning with: ...") and so keys or values. */
    char code[24];
    size_t n = 0;
    while (n < reply->len && n < sizeof code - 1 && reply->str[n] >= 'A' && reply->str[n] <= 'Z') {
        code[n] = reply->str[n];
        n++;
    }
    code[n] = '\0';
    if (n == 0 || (n < reply->len && reply->str[n] != ' '))
        return base_fail(BASE_ERR_INVALID, "redis rejected the command");

    if (strcmp(code, "WRONGTYPE") == 0)
        return base_fail(BASE_ERR_CONFLICT, "redis rejected the command: key holds another type (WRONGTYPE)");
    if (strcmp(code, "EXECABORT") == 0)
        return base_fail(BASE_ERR_CONFLICT, "redis rejected the transaction (EXECABORT)");
    if (strcmp(code, "NOAUTH") == 0 || strcmp(code, "WRONGPASS") == 0)
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: authentication failed (%s)", code);
    if (strcmp(code, "NOPERM") == 0)
        return base_fail(BASE_ERR_UNAVAILABLE,
                         "redis unavailable: command not permitted for this user (NOPERM)");
    if (strcmp(code, "OOM") == 0)
        return base_fail(BASE_ERR_LIMIT, "redis is out of memory (OOM)");
    if (strcmp(code, "LOADING") == 0 || strcmp(code, "BUSY") == 0 || strcmp(code, "READONLY") == 0 ||
        strcmp(code, "MASTERDOWN") == 0 || strcmp(code, "TRYAGAIN") == 0 ||
        strcmp(code, "CLUSTERDOWN") == 0 || strcmp(code, "MOVED") == 0 || strcmp(code, "ASK") == 0 ||
        strcmp(code, "MISCONF") == 0)
        return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: server not ready (%s)", code);
    return base_fail(BASE_ERR_INVALID, "redis rejected the command (%s)", code);
}

/* ---- small helpers ------------------------------------------------------------------------------- */

void cache__sigpipe_block(cache__sigpipe *g)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    g->blocked = pthread_sigmask(SIG_BLOCK, &set, &g->old) == 0 && !sigismember(&g->old, SIGPIPE);
}

void cache__sigpipe_restore(cache__sigpipe *g)
{
    if (!g->blocked)
        return;
    sigset_t pending;
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        const struct timespec zero = {0, 0};
        (void)sigtimedwait(&set, NULL, &zero);
    }
    (void)pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    g->blocked = false;
}

long long cache__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval cache__tv(int ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

base_result cache__check_name(const cache__settings *s, const char *name, size_t *ret_len)
{
    if (!name || !*name)
        return base_fail(BASE_ERR_INVALID, "cache: empty key, field, member or channel name");
    size_t n = strnlen(name, s->max_key_bytes + 1);
    if (n > s->max_key_bytes)
        return base_fail(BASE_ERR_LIMIT, "cache: key, field, member or channel name exceeds max_key_bytes");
    *ret_len = n;
    return BASE_OK_RESULT;
}

static base_result cache__check_value(const cache__settings *s, const void *value, size_t len)
{
    if (!value && len)
        return base_fail(BASE_ERR_INVALID, "cache: value missing");
    if (len > s->max_value_bytes)
        return base_fail(BASE_ERR_LIMIT, "cache: value exceeds max_value_bytes");
    return BASE_OK_RESULT;
}

base_result cache__bytes_copy(const char *data, size_t len, cache_bytes *ret)
{
    unsigned char *p = malloc(len + 1);
    if (!p)
        return base_fail(BASE_ERR_NOMEM, "cache: out of memory");
    if (len)
        memcpy(p, data, len);
    p[len] = '\0';
    *ret = (cache_bytes){p, len};
    return BASE_OK_RESULT;
}

void cache_bytes_free(cache_bytes *b)
{
    if (!b)
        return;
    if (b->data) {
        explicit_bzero(b->data, b->len);
        free(b->data);
    }
    *b = (cache_bytes){NULL, 0};
}

void cache_list_free(cache_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        cache_bytes_free(&l->items[i]);
    free(l->items);
    *l = (cache_list){NULL, 0};
}

void cache_fields_free(cache_fields *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->count; i++) {
        cache_bytes_free(&f->items[i].name);
        cache_bytes_free(&f->items[i].value);
    }
    free(f->items);
    *f = (cache_fields){NULL, 0};
}

/* ---- connecting --------------------------------------------------------------------------------- */

/* One command on a fresh context during setup (AUTH, SELECT, PING). */
static base_result cache__setup_command(redisContext *ctx, int argc, const char **argv, const size_t *lens,
                                        const char *what)
{
    cache__sigpipe g;
    cache__sigpipe_block(&g);
    errno = 0;
    redisReply *reply = redisCommandArgv(ctx, argc, argv, lens);
    int e = errno;
    cache__sigpipe_restore(&g);
    if (!reply)
        return cache__io_failure(ctx, e);
    base_result r = BASE_OK_RESULT;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strcmp(what, "AUTH") == 0)
            r = base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: authentication failed");
        else
            r = cache__error_reply(reply);
    }
    freeReplyObject(reply);
    return r;
}

base_result cache__connect(const cache__settings *s, redisContext **ret_ctx)
{
    base_result r = BASE_OK_RESULT;
    errno = 0;
    redisContext *ctx = redisConnectWithTimeout(s->host, s->port, cache__tv(s->connect_timeout_ms));
    int e = errno;
    if (!ctx)
        return base_fail(BASE_ERR_NOMEM, "redis connect: out of memory");
    if (ctx->err) {
        r = cache__connect_failure(ctx, e);
        goto fail;
    }
    if (redisSetTimeout(ctx, cache__tv(s->command_timeout_ms)) != REDIS_OK) {
        r = base_fail(BASE_ERR_IO, "redis connect: cannot set the command timeout");
        goto fail;
    }
    (void)redisEnableKeepAlive(ctx); /* best effort: detects dead peers on idle connections */

    if (s->password) {
        const char *argv[3];
        size_t lens[3];
        int argc = 0;
        argv[argc] = "AUTH";
        lens[argc++] = 4;
        if (s->username) {
            argv[argc] = s->username;
            lens[argc++] = strlen(s->username);
        }
        argv[argc] = s->password;
        lens[argc++] = s->password_len;
        BASE_GUARD_GOTO(r, cache__setup_command(ctx, argc, argv, lens, "AUTH"), fail);
    }
    if (s->db != 0) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", s->db);
        const char *argv[2] = {"SELECT", db};
        const size_t lens[2] = {6, (size_t)n};
        BASE_GUARD_GOTO(r, cache__setup_command(ctx, 2, argv, lens, "SELECT"), fail);
    }
    *ret_ctx = ctx;
    return BASE_OK_RESULT;
fail:
    redisFree(ctx);
    return r;
}

/* ---- connections -------------------------------------------------------------------------------- */

base_result cache_conn_new(const cache_config *cfg, cache_conn **ret_conn)
{
    cache_conn *c = calloc(1, sizeof *c);
    if (!c)
        return base_fail(BASE_ERR_NOMEM, "cache: out of memory");
    base_result r = cache__settings_init(&c->s, cfg);
    if (!base_is_ok(r)) {
        free(c);
        return r;
    }
    *ret_conn = c;
    return BASE_OK_RESULT;
}

static void cache__conn_close(cache_conn *c)
{
    if (c->ctx) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
}

void cache_conn_free(cache_conn *conn)
{
    if (!conn)
        return;
    cache__conn_close(conn);
    cache__settings_clear(&conn->s);
    free(conn);
}

bool cache_conn_is_connected(const cache_conn *conn)
{
    return conn && conn->ctx;
}

/* One attempt: connect if needed, send, read. Any transport failure closes the connection, because hiredis
 * cannot reuse a context once ctx->err is set and a timed-out reply may still arrive later. */
static base_result cache__roundtrip(cache_conn *c, int argc, const char **argv, const size_t *lens,
                                    redisReply **ret)
{
    if (!c->ctx)
        BASE_GUARD(cache__connect(&c->s, &c->ctx));
    cache__sigpipe g;
    cache__sigpipe_block(&g);
    errno = 0;
    redisReply *reply = redisCommandArgv(c->ctx, argc, argv, lens);
    int e = errno;
    cache__sigpipe_restore(&g);
    if (!reply) {
        base_result r = cache__io_failure(c->ctx, e);
        cache__conn_close(c);
        return r;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        base_result r = cache__error_reply(reply);
        freeReplyObject(reply);
        return r;
    }
    *ret = reply;
    return BASE_OK_RESULT;
}

/* `retry`: the command is idempotent, so one more attempt on a new connection is safe when the failure came
 * from a connection opened before this call (typically Redis restarted while it sat idle). A failure on a
 * connection opened by this call means Redis is really down: no retry. */
static base_result cache__exec(cache_conn *c, bool retry, int argc, const char **argv, const size_t *lens,
                               redisReply **ret)
{
    bool was_open = c->ctx != NULL;
    base_result r = cache__roundtrip(c, argc, argv, lens, ret);
    if (r.err == BASE_ERR_UNAVAILABLE && retry && was_open && !c->ctx)
        r = cache__roundtrip(c, argc, argv, lens, ret);
    return r;
}

static base_result cache__unexpected(redisReply *reply, const char *cmd)
{
    freeReplyObject(reply);
    return base_fail(BASE_ERR_INTERNAL, "redis: unexpected reply type to %s", cmd);
}

/* Run a command whose reply must be an integer. */
static base_result cache__exec_int(cache_conn *c, bool retry, int argc, const char **argv, const size_t *lens,
                                   long long *ret)
{
    redisReply *reply = NULL;
    BASE_GUARD(cache__exec(c, retry, argc, argv, lens, &reply));
    if (reply->type != REDIS_REPLY_INTEGER)
        return cache__unexpected(reply, argv[0]);
    *ret = reply->integer;
    freeReplyObject(reply);
    return BASE_OK_RESULT;
}

base_result cache_conn_connect(cache_conn *conn)
{
    if (!conn)
        return base_fail(BASE_ERR_INVALID, "cache: no connection");
    const char *argv[1] = {"PING"};
    const size_t lens[1] = {4};
    redisReply *reply = NULL;
    BASE_GUARD(cache__exec(conn, true, 1, argv, lens, &reply));
    freeReplyObject(reply);
    return BASE_OK_RESULT;
}

/* ---- per-thread connections ------------------------------------------------------------------------ */

static pthread_once_t cache__thread_once = PTHREAD_ONCE_INIT;
static pthread_key_t cache__thread_key;
static bool cache__thread_key_ok;

static void cache__thread_destroy(void *p)
{
    cache_conn_free(p);
}

/* Record the reason for a NULL return (base_fail's result is not needed there). */
static void cache__note_failure(base_err err, const char *msg)
{
    base_result r = base_fail(err, "%s", msg);
    (void)r;
}

static void cache__thread_key_init(void)
{
    cache__thread_key_ok = pthread_key_create(&cache__thread_key, cache__thread_destroy) == 0;
}

cache_conn *cache_thread_conn(const cache_config *cfg)
{
    (void)pthread_once(&cache__thread_once, cache__thread_key_init);
    if (!cache__thread_key_ok) {
        cache__note_failure(BASE_ERR_INTERNAL, "cache: no thread-local key");
        return NULL;
    }
    cache_conn *c = pthread_getspecific(cache__thread_key);
    if (c && c->origin == cfg)
        return c;
    if (c) {
        (void)pthread_setspecific(cache__thread_key, NULL);
        cache_conn_free(c);
        c = NULL;
    }
    if (!base_is_ok(cache_conn_new(cfg, &c)))
        return NULL;
    c->origin = cfg;
    if (pthread_setspecific(cache__thread_key, c) != 0) {
        cache_conn_free(c);
        cache__note_failure(BASE_ERR_NOMEM, "cache: cannot store the thread's connection");
        return NULL;
    }
    return c;
}

void cache_thread_conn_release(void)
{
    (void)pthread_once(&cache__thread_once, cache__thread_key_init);
    if (!cache__thread_key_ok)
        return;
    cache_conn *c = pthread_getspecific(cache__thread_key);
    if (c) {
        (void)pthread_setspecific(cache__thread_key, NULL);
        cache_conn_free(c);
    }
}

/* ---- typed commands ------------------------------------------------------------------------------ */

#define CACHE__CHECK_CONN(conn)                                                                              \
    do {                                                                                                     \
        if (!(conn))                                                                                         \
            return base_fail(BASE_ERR_INVALID, "cache: no connection");                                      \
    } while (0)

static size_t cache__i64(char buf[24], long long v)
{
    int n = snprintf(buf, 24, "%lld", v);
    return n > 0 ? (size_t)n : 0;
}

/* GET / HGET reply -> found + bytes. */
static base_result cache__bulk_result(const cache_conn *c, redisReply *reply, const char *cmd,
                                      cache_bytes *ret_value, bool *ret_found)
{
    base_result r = BASE_OK_RESULT;
    cache_bytes value = {NULL, 0};
    bool found = false;
    if (reply->type == REDIS_REPLY_STRING) {
        if (reply->len > c->s.max_value_bytes) {
            r = base_fail(BASE_ERR_LIMIT, "redis: stored value exceeds max_value_bytes");
            goto out;
        }
        BASE_GUARD_GOTO(r, cache__bytes_copy(reply->str, reply->len, &value), out);
        found = true;
    } else if (reply->type != REDIS_REPLY_NIL) {
        return cache__unexpected(reply, cmd);
    }
    if (ret_value)
        *ret_value = value;
    else
        cache_bytes_free(&value);
    if (ret_found)
        *ret_found = found;
out:
    freeReplyObject(reply);
    return r;
}

base_result cache_get(cache_conn *conn, const char *key, cache_bytes *ret_value, bool *ret_found)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    const char *argv[2] = {"GET", key};
    const size_t lens[2] = {3, klen};
    redisReply *reply = NULL;
    BASE_GUARD(cache__exec(conn, true, 2, argv, lens, &reply));
    return cache__bulk_result(conn, reply, "GET", ret_value, ret_found);
}

base_result cache_set(cache_conn *conn, const char *key, const void *value, size_t value_len, int64_t ttl_ms,
                      cache_set_mode mode, bool *ret_stored)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    BASE_GUARD(cache__check_value(&conn->s, value, value_len));
    if (ttl_ms < 0)
        return base_fail(BASE_ERR_INVALID, "cache: negative ttl");

    const char *argv[6] = {"SET", key, value ? (const char *)value : ""};
    size_t lens[6] = {3, klen, value_len};
    int argc = 3;
    char ttl[24];
    if (ttl_ms > 0) {
        argv[argc] = "PX";
        lens[argc++] = 2;
        argv[argc] = ttl;
        lens[argc++] = cache__i64(ttl, ttl_ms);
    }
    switch (mode) {
    case CACHE_SET_ALWAYS:
        break;
    case CACHE_SET_NX:
        argv[argc] = "NX";
        lens[argc++] = 2;
        break;
    case CACHE_SET_XX:
        argv[argc] = "XX";
        lens[argc++] = 2;
        break;
    default:
        return base_fail(BASE_ERR_INVALID, "cache: unknown SET mode");
    }

    redisReply *reply = NULL;
    BASE_GUARD(cache__exec(conn, mode == CACHE_SET_ALWAYS, argc, argv, lens, &reply));
    bool stored;
    if (reply->type == REDIS_REPLY_STATUS)
        stored = true;
    else if (reply->type == REDIS_REPLY_NIL)
        stored = false;
    else
        return cache__unexpected(reply, "SET");
    freeReplyObject(reply);
    if (ret_stored)
        *ret_stored = stored;
    return BASE_OK_RESULT;
}

/* CMD key -> integer (DEL, PTTL, INCR). */
static base_result cache__key_int(cache_conn *conn, bool retry, const char *cmd, const char *key,
                                  long long *ret)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    const char *argv[2] = {cmd, key};
    const size_t lens[2] = {strlen(cmd), klen};
    return cache__exec_int(conn, retry, 2, argv, lens, ret);
}

base_result cache_del(cache_conn *conn, const char *key, bool *ret_deleted)
{
    long long n;
    BASE_GUARD(cache__key_int(conn, true, "DEL", key, &n));
    if (ret_deleted)
        *ret_deleted = n > 0;
    return BASE_OK_RESULT;
}

static base_result cache__expire_cmd(cache_conn *conn, const char *cmd, const char *key, int64_t ttl,
                                     bool *ret_set)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    /* EXPIRE with 0 or less deletes the key: not what a caller asking for an expiry means. */
    if (ttl <= 0)
        return base_fail(BASE_ERR_INVALID, "cache: ttl must be positive");
    char buf[24];
    const char *argv[3] = {cmd, key, buf};
    const size_t lens[3] = {strlen(cmd), klen, cache__i64(buf, ttl)};
    long long n;
    BASE_GUARD(cache__exec_int(conn, true, 3, argv, lens, &n));
    if (ret_set)
        *ret_set = n == 1;
    return BASE_OK_RESULT;
}

base_result cache_expire(cache_conn *conn, const char *key, int64_t ttl_s, bool *ret_set)
{
    return cache__expire_cmd(conn, "EXPIRE", key, ttl_s, ret_set);
}

base_result cache_pexpire(cache_conn *conn, const char *key, int64_t ttl_ms, bool *ret_set)
{
    return cache__expire_cmd(conn, "PEXPIRE", key, ttl_ms, ret_set);
}

base_result cache_ttl(cache_conn *conn, const char *key, int64_t *ret_ttl_ms)
{
    long long n;
    BASE_GUARD(cache__key_int(conn, true, "PTTL", key, &n));
    if (ret_ttl_ms)
        *ret_ttl_ms = n;
    return BASE_OK_RESULT;
}

base_result cache_incr(cache_conn *conn, const char *key, int64_t *ret_value)
{
    long long n;
    BASE_GUARD(cache__key_int(conn, false, "INCR", key, &n));
    if (ret_value)
        *ret_value = n;
    return BASE_OK_RESULT;
}

/* INCR and set the window's expiry in one atomic step. The expiry is also set when the key exists without
 * one (a PEXPIRE lost by an older client), so a counter can never live forever and block a user. */
static const char cache__incr_expire_lua[] = "local v = redis.call('INCR', KEYS[1])\n"
                                             "if v == 1 or redis.call('PTTL', KEYS[1]) == -1 then\n"
                                             "  redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
                                             "end\n"
                                             "return v\n";

base_result cache_incr_expire(cache_conn *conn, const char *key, int64_t ttl_ms, int64_t *ret_value)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    if (ttl_ms <= 0)
        return base_fail(BASE_ERR_INVALID, "cache: ttl must be positive");
    char ttl[24];
    const char *argv[5] = {"EVAL", cache__incr_expire_lua, "1", key, ttl};
    const size_t lens[5] = {4, sizeof cache__incr_expire_lua - 1, 1, klen, cache__i64(ttl, ttl_ms)};
    long long n;
    BASE_GUARD(cache__exec_int(conn, false, 5, argv, lens, &n));
    if (ret_value)
        *ret_value = n;
    return BASE_OK_RESULT;
}

base_result cache_hset(cache_conn *conn, const char *key, const char *field, const void *value,
                       size_t value_len, bool *ret_created)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0, flen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    BASE_GUARD(cache__check_name(&conn->s, field, &flen));
    BASE_GUARD(cache__check_value(&conn->s, value, value_len));
    const char *argv[4] = {"HSET", key, field, value ? (const char *)value : ""};
    const size_t lens[4] = {4, klen, flen, value_len};
    long long n;
    BASE_GUARD(cache__exec_int(conn, true, 4, argv, lens, &n));
    if (ret_created)
        *ret_created = n > 0;
    return BASE_OK_RESULT;
}

base_result cache_hget(cache_conn *conn, const char *key, const char *field, cache_bytes *ret_value,
                       bool *ret_found)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0, flen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    BASE_GUARD(cache__check_name(&conn->s, field, &flen));
    const char *argv[3] = {"HGET", key, field};
    const size_t lens[3] = {4, klen, flen};
    redisReply *reply = NULL;
    BASE_GUARD(cache__exec(conn, true, 3, argv, lens, &reply));
    return cache__bulk_result(conn, reply, "HGET", ret_value, ret_found);
}

/* Check an array reply of bulk strings against the limits before copying anything. */
static base_result cache__check_string_array(const cache_conn *c, const redisReply *reply, size_t max_items)
{
    if (reply->elements > max_items)
        return base_fail(BASE_ERR_LIMIT, "redis: reply has more than max_elements elements");
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING)
            return base_fail(BASE_ERR_INTERNAL, "redis: unexpected element type in an array reply");
        if (e->len > c->s.max_value_bytes)
            return base_fail(BASE_ERR_LIMIT, "redis: stored value exceeds max_value_bytes");
    }
    return BASE_OK_RESULT;
}

base_result cache_hgetall(cache_conn *conn, const char *key, cache_fields *ret_fields)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    const char *argv[2] = {"HGETALL", key};
    const size_t lens[2] = {7, klen};
    redisReply *reply = NULL;
    BASE_GUARD(cache__exec(conn, true, 2, argv, lens, &reply));

    base_result r = BASE_OK_RESULT;
    cache_fields out = {NULL, 0};
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0)
        return cache__unexpected(reply, "HGETALL");
    BASE_GUARD_GOTO(r, cache__check_string_array(conn, reply, conn->s.max_elements * 2), out);
    if (reply->elements) {
        out.items = calloc(reply->elements / 2, sizeof *out.items);
        if (!out.items) {
            r = base_fail(BASE_ERR_NOMEM, "cache: out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        cache_field *f = &out.items[out.count];
        BASE_GUARD_GOTO(r, cache__bytes_copy(reply->element[i]->str, reply->element[i]->len, &f->name), out);
        out.count++; /* counted now so that cache_fields_free frees a half-filled field */
        BASE_GUARD_GOTO(
            r, cache__bytes_copy(reply->element[i + 1]->str, reply->element[i + 1]->len, &f->value), out);
    }
    if (ret_fields) {
        *ret_fields = out;
        out = (cache_fields){NULL, 0};
    }
out:
    cache_fields_free(&out);
    freeReplyObject(reply);
    return r;
}

/* CMD key name -> integer > 0 (HDEL, SADD, SREM). */
static base_result cache__key_name_flag(cache_conn *conn, const char *cmd, const char *key, const char *name,
                                        bool *ret_flag)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0, nlen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    BASE_GUARD(cache__check_name(&conn->s, name, &nlen));
    const char *argv[3] = {cmd, key, name};
    const size_t lens[3] = {strlen(cmd), klen, nlen};
    long long n;
    BASE_GUARD(cache__exec_int(conn, true, 3, argv, lens, &n));
    if (ret_flag)
        *ret_flag = n > 0;
    return BASE_OK_RESULT;
}

base_result cache_hdel(cache_conn *conn, const char *key, const char *field, bool *ret_deleted)
{
    return cache__key_name_flag(conn, "HDEL", key, field, ret_deleted);
}

base_result cache_sadd(cache_conn *conn, const char *key, const char *member, bool *ret_added)
{
    return cache__key_name_flag(conn, "SADD", key, member, ret_added);
}

base_result cache_srem(cache_conn *conn, const char *key, const char *member, bool *ret_removed)
{
    return cache__key_name_flag(conn, "SREM", key, member, ret_removed);
}

base_result cache_smembers(cache_conn *conn, const char *key, cache_list *ret_members)
{
    CACHE__CHECK_CONN(conn);
    size_t klen = 0;
    BASE_GUARD(cache__check_name(&conn->s, key, &klen));
    const char *argv[2] = {"SMEMBERS", key};
    const size_t lens[2] = {8, klen};
    redisReply *reply = NULL;
    BASE_GUARD(cache__exec(conn, true, 2, argv, lens, &reply));

    base_result r = BASE_OK_RESULT;
    cache_list out = {NULL, 0};
    if (reply->type != REDIS_REPLY_ARRAY)
        return cache__unexpected(reply, "SMEMBERS");
    BASE_GUARD_GOTO(r, cache__check_string_array(conn, reply, conn->s.max_elements), out);
    if (reply->elements) {
        out.items = calloc(reply->elements, sizeof *out.items);
        if (!out.items) {
            r = base_fail(BASE_ERR_NOMEM, "cache: out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < reply->elements; i++) {
        BASE_GUARD_GOTO(r, cache__bytes_copy(reply->element[i]->str, reply->element[i]->len, &out.items[i]),
                        out);
        out.count++;
    }
    if (ret_members) {
        *ret_members = out;
        out = (cache_list){NULL, 0};
    }
out:
    cache_list_free(&out);
    freeReplyObject(reply);
    return r;
}

base_result cache_publish(cache_conn *conn, const char *channel, const void *message, size_t message_len,
                          int64_t *ret_receivers)
{
    CACHE__CHECK_CONN(conn);
    size_t clen = 0;
    BASE_GUARD(cache__check_name(&conn->s, channel, &clen));
    BASE_GUARD(cache__check_value(&conn->s, message, message_len));
    const char *argv[3] = {"PUBLISH", channel, message ? (const char *)message : ""};
    const size_t lens[3] = {7, clen, message_len};
    long long n;
    BASE_GUARD(cache__exec_int(conn, false, 3, argv, lens, &n));
    if (ret_receivers)
        *ret_receivers = n;
    return BASE_OK_RESULT;
}

/* ---- any command -------------------------------------------------------------------------------- */

/* A cache_reply is a redisReply seen through an opaque type: the struct is never defined, every access
 * converts back. */
static const redisReply *cache__reply(const cache_reply *r)
{
    return (const redisReply *)r;
}

static bool cache__is_cmd(const char *arg, size_t len, const char *name)
{
    return len == strlen(name) && strncasecmp(arg, name, len) == 0;
}

base_result cache_command_argv(cache_conn *conn, int argc, const char *const *argv, const size_t *lens,
                               cache_reply **ret_reply)
{
    CACHE__CHECK_CONN(conn);
    if (argc < 1 || argc > CACHE_MAX_ARGS || !argv)
        return base_fail(BASE_ERR_INVALID, "cache: bad argument count");

    size_t local_lens[16];
    size_t *heap_lens = NULL;
    size_t *use_lens = local_lens;
    if (argc > (int)BASE_ARRAY_LEN(local_lens)) {
        heap_lens = malloc((size_t)argc * sizeof *heap_lens);
        if (!heap_lens)
            return base_fail(BASE_ERR_NOMEM, "cache: out of memory");
        use_lens = heap_lens;
    }
    base_result r = BASE_OK_RESULT;
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) {
            r = base_fail(BASE_ERR_INVALID, "cache: missing argument");
            goto out;
        }
        use_lens[i] = lens ? lens[i] : strlen(argv[i]);
        if (i > 0 && use_lens[i] > conn->s.max_value_bytes) {
            r = base_fail(BASE_ERR_LIMIT, "cache: argument exceeds max_value_bytes");
            goto out;
        }
    }
    if (use_lens[0] == 0 || use_lens[0] > 64) {
        r = base_fail(BASE_ERR_INVALID, "cache: bad command name");
        goto out;
    }
    /* These switch the connection into a mode where ordinary replies no longer come back. */
    static const char *const refused[] = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
                                          "MONITOR",   "SYNC",       "PSYNC"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(refused); i++) {
        if (cache__is_cmd(argv[0], use_lens[0], refused[i])) {
            r = base_fail(BASE_ERR_INVALID, "cache: %s is not allowed here (use cache_sub)", refused[i]);
            goto out;
        }
    }

    redisReply *reply = NULL;
    BASE_GUARD_GOTO(r, cache__exec(conn, false, argc, (const char **)argv, use_lens, &reply), out);
    if (ret_reply)
        *ret_reply = (cache_reply *)reply;
    else
        freeReplyObject(reply);
out:
    free(heap_lens);
    return r;
}

void cache_reply_free(cache_reply *reply)
{
    if (reply)
        freeReplyObject((redisReply *)reply);
}

cache_reply_type cache_reply_typeof(const cache_reply *reply)
{
    const redisReply *r = cache__reply(reply);
    if (!r)
        return CACHE_REPLY_NIL;
    switch (r->type) {
    case REDIS_REPLY_STRING:
        return CACHE_REPLY_STRING;
    case REDIS_REPLY_STATUS:
        return CACHE_REPLY_STATUS;
    case REDIS_REPLY_INTEGER:
        return CACHE_REPLY_INTEGER;
    case REDIS_REPLY_ARRAY:
        return CACHE_REPLY_ARRAY;
    case REDIS_REPLY_ERROR:
        return CACHE_REPLY_ERROR;
    case REDIS_REPLY_NIL:
    default:
        return CACHE_REPLY_NIL;
    }
}

long long cache_reply_integer(const cache_reply *reply)
{
    const redisReply *r = cache__reply(reply);
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

const char *cache_reply_string(const cache_reply *reply, size_t *ret_len)
{
    const redisReply *r = cache__reply(reply);
    if (!r ||
        (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS && r->type != REDIS_REPLY_ERROR))
        return NULL;
    if (ret_len)
        *ret_len = r->len;
    return r->str;
}

size_t cache_reply_count(const cache_reply *reply)
{
    const redisReply *r = cache__reply(reply);
    return r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
}

const cache_reply *cache_reply_element(const cache_reply *reply, size_t i)
{
    const redisReply *r = cache__reply(reply);
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements)
        return NULL;
    return (const cache_reply *)r->element[i];
}
