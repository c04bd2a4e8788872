/* The connection pool: a fixed array of slots, each a lazily opened libpq connection, handed out under a
 * mutex and condition variable. Connecting uses libpq's non-blocking API so that a database that is down or
 * unreachable costs at most connect_timeout_ms, never libpq's whole-second (or infinite) default. */
#include "db_internal.h"
#include "base/clock.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t db__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool db__valid_identifier(const char *s)
{
    if (!s || !*s || strlen(s) > DB_IDENTIFIER_MAX)
        return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    }
    return true;
}

static bool db_valid_application_name(const char *s)
{
    if (!s || !*s || strlen(s) > DB_IDENTIFIER_MAX)
        return false;
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '.' || *p == '-'))
            return false;
    }
    return true;
}

db_pool_config db_pool_config_default(const char *conninfo, int size, int connect_timeout_ms)
{
    return (db_pool_config){
        .conninfo = conninfo,
        .size = size,
        .connect_timeout_ms = connect_timeout_ms,
        .statement_timeout_ms = DB_DEFAULT_STATEMENT_TIMEOUT_MS,
        .acquire_timeout_ms = DB_DEFAULT_ACQUIRE_TIMEOUT_MS,
        .application_name = DB_DEFAULT_APPLICATION_NAME,
        .search_path = NULL,
    };
}

/* The "options" (server settings at startup) we send: whatever conninfo asked for, then ours, which win. */
static base_result db_build_options(const db_pool_config *cfg, char *out, size_t outsz)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->conninfo, &err);
    if (!opts) {
        /* err quotes the conninfo, which can hold a password: drop it. */
        PQfreemem(err);
        return base_fail(BASE_ERR_INVALID, "invalid database connection string");
    }
    const char *theirs = "";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "options") == 0 && o->val)
            theirs = o->val;
    }
    int n = snprintf(out, outsz, "%s%s-c statement_timeout=%d -c bytea_output=hex%s%s", theirs,
                     *theirs ? " " : "", cfg->statement_timeout_ms,
                     cfg->search_path ? " -c search_path=" : "", cfg->search_path ? cfg->search_path : "");
    PQconninfoFree(opts);
    if (n < 0 || (size_t)n >= outsz)
        return base_fail(BASE_ERR_LIMIT, "database connection options too long");
    return BASE_OK_RESULT;
}

base_result db_pool_create_config(const db_pool_config *cfg, db_pool **ret_pool)
{
    BASE_ENSURE(cfg && ret_pool, BASE_ERR_INVALID, "db_pool_create: missing argument");
    BASE_ENSURE(cfg->conninfo, BASE_ERR_INVALID, "db_pool_create: missing conninfo");
    BASE_ENSURE(cfg->size >= 1 && cfg->size <= DB_POOL_MAX_SIZE, BASE_ERR_LIMIT,
                "db_pool_create: size out of range");
    BASE_ENSURE(cfg->connect_timeout_ms > 0, BASE_ERR_INVALID, "db_pool_create: connect timeout must be > 0");
    BASE_ENSURE(cfg->statement_timeout_ms >= 0, BASE_ERR_INVALID,
                "db_pool_create: statement timeout must be >= 0");
    BASE_ENSURE(cfg->acquire_timeout_ms >= 0, BASE_ERR_INVALID,
                "db_pool_create: acquire timeout must be >= 0");
    const char *app = cfg->application_name ? cfg->application_name : DB_DEFAULT_APPLICATION_NAME;
    BASE_ENSURE(db_valid_application_name(app), BASE_ERR_INVALID, "db_pool_create: invalid application_name");
    BASE_ENSURE(!cfg->search_path || db__valid_identifier(cfg->search_path), BASE_ERR_INVALID,
                "db_pool_create: invalid search_path schema name");

    db_pool *p = calloc(1, sizeof *p);
    if (!p)
        return base_fail(BASE_ERR_NOMEM, "db_pool_create: out of memory");
    base_result r = db_build_options(cfg, p->options, sizeof p->options);
    if (!base_is_ok(r)) {
        free(p);
        return r;
    }
    p->conninfo = strdup(cfg->conninfo);
    p->application_name = strdup(app);
    p->conns = calloc((size_t)cfg->size, sizeof *p->conns);
    if (!p->conninfo || !p->application_name || !p->conns) {
        free(p->conninfo);
        free(p->application_name);
        free(p->conns);
        free(p);
        return base_fail(BASE_ERR_NOMEM, "db_pool_create: out of memory");
    }
    p->size = cfg->size;
    p->connect_timeout_ms = cfg->connect_timeout_ms;
    p->acquire_timeout_ms = cfg->acquire_timeout_ms;
    for (int i = 0; i < p->size; i++)
        p->conns[i].pool = p;

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    *ret_pool = p;
    return BASE_OK_RESULT;
}

base_result db_pool_create(const char *conninfo, int size, int connect_timeout_ms, db_pool **ret_pool)
{
    db_pool_config cfg = db_pool_config_default(conninfo, size, connect_timeout_ms);
    return db_pool_create_config(&cfg, ret_pool);
}

void db_pool_destroy(db_pool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->size; i++) {
        if (pool->conns[i].pg)
            PQfinish(pool->conns[i].pg);
        db__stmt_cache_reset(&pool->conns[i]);
    }
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    /* The conninfo can hold a password. */
    explicit_bzero(pool->conninfo, strlen(pool->conninfo));
    free(pool->conninfo);
    free(pool->application_name);
    free(pool->conns);
    free(pool);
}

static void db_ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Open one connection within connect_timeout_ms. libpq's own connect_timeout (whole seconds, at least 2) is
 * set too, as a backstop for the steps it performs synchronously. */
static base_result db_connect(db_pool *p, PGconn **ret_pg)
{
    char timeout_s[16];
    snprintf(timeout_s, sizeof timeout_s, "%d", p->connect_timeout_ms / 1000 + 2);
    /* Later keywords override earlier ones; "dbname" is expanded from the conninfo string. */
    const char *const keys[] = {"fallback_application_name", "dbname", "options", "connect_timeout", NULL};
    const char *const vals[] = {p->application_name, p->conninfo, p->options, timeout_s, NULL};

    int64_t deadline = db__now_ms() + p->connect_timeout_ms;
    PGconn *pg = PQconnectStartParams(keys, vals, 1);
    if (!pg)
        return base_fail(BASE_ERR_NOMEM, "database: out of memory");
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    if (PQstatus(pg) == CONNECTION_BAD)
        st = PGRES_POLLING_FAILED;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = deadline - db__now_ms();
        int fd = PQsocket(pg);
        if (left <= 0 || fd < 0) {
            st = PGRES_POLLING_FAILED;
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno != EINTR) {
            st = PGRES_POLLING_FAILED;
            break;
        }
        if (n > 0)
            st = PQconnectPoll(pg);
    }
    if (st == PGRES_POLLING_FAILED || PQstatus(pg) != CONNECTION_OK) {
        /* PQerrorMessage names the host and may quote server text: not in our message. */
        bool timed_out = db__now_ms() >= deadline;
        PQfinish(pg);
        return base_fail(BASE_ERR_UNAVAILABLE, "database unavailable%s",
                         timed_out ? " (connect timed out)" : "");
    }
    /* libpq prints server notices to stderr by default; common/ does not log, and a notice can quote data. */
    PQsetNoticeProcessor(pg, db_ignore_notice, NULL);
    *ret_pg = pg;
    return BASE_OK_RESULT;
}

/* An idle connection the server closed (pg_terminate_backend, restart, idle timeout) still reads as
 * CONNECTION_OK until libpq next touches the socket. On an idle pooled connection the server has nothing to
 * say unasked (we never LISTEN) except goodbye: a FATAL message then EOF. So anything readable, or an error
 * on the socket, means a fresh connection. Costs one poll(2). */
static bool db_conn_alive(PGconn *pg)
{
    if (PQstatus(pg) != CONNECTION_OK || PQtransactionStatus(pg) != PQTRANS_IDLE)
        return false;
    struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN};
    if (pfd.fd < 0)
        return false;
    int n;
    do {
        n = poll(&pfd, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n == 0;
}

/* A free slot, preferring one that is already connected. Called with pool->mu held. */
static db_conn *db_pick_locked(db_pool *p)
{
    db_conn *empty = NULL;
    for (int i = 0; i < p->size; i++) {
        db_conn *c = &p->conns[i];
        if (c->in_use)
            continue;
        if (c->pg)
            return c;
        if (!empty)
            empty = c;
    }
    return empty;
}

static void db_slot_put_back(db_conn *c)
{
    db_pool *p = c->pool;
    pthread_mutex_lock(&p->mu);
    c->in_use = false;
    c->broken = false;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

base_result db_pool_acquire(db_pool *pool, int timeout_ms, db_conn **ret_conn)
{
    BASE_ENSURE(pool && ret_conn, BASE_ERR_INVALID, "db_pool_acquire: missing argument");
    BASE_ENSURE(timeout_ms >= 0, BASE_ERR_INVALID, "db_pool_acquire: timeout must be >= 0");

    struct timespec until = base_time_after_ms(CLOCK_MONOTONIC, timeout_ms);

    pthread_mutex_lock(&pool->mu);
    db_conn *c = db_pick_locked(pool);
    while (!c) {
        int rc = pthread_cond_timedwait(&pool->cv, &pool->mu, &until);
        c = db_pick_locked(pool);
        if (rc == ETIMEDOUT)
            break;
    }
    if (c)
        c->in_use = true;
    pthread_mutex_unlock(&pool->mu);
    if (!c)
        return base_fail(BASE_ERR_UNAVAILABLE, "no database connection available");

    /* The slot is ours: (re)connect outside the lock so other threads are not held up. */
    if (c->pg && (c->broken || !db_conn_alive(c->pg))) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (!c->pg) {
        db__stmt_cache_reset(c); /* prepared statements lived in the old session */
        base_result r = db_connect(pool, &c->pg);
        if (!base_is_ok(r)) {
            c->pg = NULL;
            db_slot_put_back(c);
            return r;
        }
    }
    c->broken = false;
    c->retry_sqlstate[0] = '\0';
    c->sqlstate[0] = '\0';
    *ret_conn = c;
    return BASE_OK_RESULT;
}

void db_conn_release(db_conn *conn)
{
    if (!conn)
        return;
    /* Never hand on a connection in an unknown state: closing it also rolls back an open transaction. */
    if (conn->pg && (conn->broken || PQstatus(conn->pg) != CONNECTION_OK ||
                     PQtransactionStatus(conn->pg) != PQTRANS_IDLE)) {
        PQfinish(conn->pg);
        conn->pg = NULL;
    }
    db_slot_put_back(conn);
}

void db_conn_releasep(db_conn **conn)
{
    if (conn) {
        db_conn_release(*conn);
        *conn = NULL;
    }
}
