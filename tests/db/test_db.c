/* common/db against a real PostgreSQL (the "pg" fixture). Every run works in schemas of its own
 * (dbt_<pid>_<random>...), created by db_migrate and dropped at the end, so runs never collide. */
#include "db/db.h"
#include "dbtest_migrations.h"
#include "testdb.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define MAX_SCHEMAS 8

static char g_uri[512];
static char g_prefix[40];
static char g_schemas[MAX_SCHEMAS][64];
static int g_nschemas;
static char g_main[64]; /* the schema most tests use, migrated in group setup */
static db_pool *g_pool; /* search_path = g_main */
static db_pool *g_admin;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fresh schema name for this run, remembered for clean-up. */
static const char *new_schema(const char *suffix)
{
    assert_true(g_nschemas < MAX_SCHEMAS);
    char *s = g_schemas[g_nschemas++];
    snprintf(s, sizeof g_schemas[0], "%s_%s", g_prefix, suffix);
    return s;
}

static db_migration_set set_in(const char *schema)
{
    db_migration_set s = dbtest_migrations;
    s.schema = schema;
    return s;
}

static db_pool *pool_in(const char *schema, int size)
{
    db_pool_config cfg = db_pool_config_default(g_uri, size, 5000);
    cfg.search_path = schema;
    cfg.application_name = "alma-test-db";
    db_pool *p = NULL;
    MUST(db_pool_create_config(&cfg, &p));
    return p;
}

static int64_t query_int(db_pool *pool, const char *sql, int nparams, const char *const *params)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, sql, nparams, params, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

static void drop_schema(const char *schema)
{
    testdb_drop_schema(g_admin, schema);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "dbt_%d_%lx", (int)getpid(),
             (unsigned long)(ts.tv_nsec ^ ts.tv_sec) & 0xfffff);
    snprintf(g_main, sizeof g_main, "%s", new_schema("main"));

    MUST(db_pool_create(g_uri, 4, 5000, &g_admin));
    db_migration_set set = set_in(g_main);
    int applied = -1;
    MUST(db_migrate(g_admin, &set, &applied));
    assert_int_equal(applied, 2);
    g_pool = pool_in(g_main, 4);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    db_pool_destroy(g_pool);
    for (int i = 0; i < g_nschemas; i++)
        drop_schema(g_schemas[i]);
    db_pool_destroy(g_admin);
    return 0;
}

/* ---- Statements --------------------------------------------------------------------------------------- */

static void test_exec_params_null_and_bytea(void **state)
{
    (void)state;
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(g_pool, 5000, &c));

    static const unsigned char photo[] = {0x00, 0x01, 0x00, 0xff, 0x7f, 0x00, 'a', 0x00};
    const char *params[] = {"MRN-BYTEA-1", NULL, (const char *)photo};
    const int lengths[] = {0, 0, (int)sizeof photo};
    const int formats[] = {0, 0, 1};
    MUST(db_exec_params(c, "INSERT INTO patients (mrn, name, photo) VALUES ($1, $2, $3)", 3, params, lengths,
                        formats, &res));
    assert_int_equal(db_result_affected_rows(res), 1);
    db_result_free(res);
    res = NULL;

    const char *key[] = {"MRN-BYTEA-1"};
    MUST(
        db_exec(c, "SELECT mrn, name, photo, length(photo) AS n FROM patients WHERE mrn = $1", 1, key, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    assert_int_equal(db_result_nfields(res), 4);
    assert_string_equal(db_result_get(res, 0, 0), "MRN-BYTEA-1");
    assert_int_equal(db_result_length(res, 0, 0), strlen("MRN-BYTEA-1"));
    assert_true(db_result_is_null(res, 0, 1));
    assert_null(db_result_get(res, 0, 1));
    assert_int_equal(db_result_length(res, 0, 1), 0);
    assert_int_equal(db_result_column(res, "photo"), 2);
    assert_int_equal(db_result_column(res, "nope"), -1);

    unsigned char *data = NULL;
    size_t len = 0;
    MUST(db_result_get_bytea(res, 0, 2, &data, &len));
    assert_int_equal(len, sizeof photo);
    assert_memory_equal(data, photo, sizeof photo);
    free(data);
    int64_t n = 0;
    MUST(db_result_get_int64(res, 0, 3, &n));
    assert_int_equal(n, (int64_t)sizeof photo);

    /* NULL bytea and out-of-range reads. */
    assert_int_equal(db_result_get_bytea(res, 0, 1, &data, &len).err, BASE_ERR_NOT_FOUND);
    assert_int_equal(db_result_get_int64(res, 0, 0, &n).err, BASE_ERR_INVALID);
    assert_null(db_result_get(res, 5, 0));
    assert_null(db_result_get(res, 0, 9));
    assert_true(db_result_is_null(res, -1, 0));
    db_result_free(res);
    db_result_free(NULL);

    /* An empty bytea and a NULL parameter to a binary slot. */
    const char *p2[] = {"", NULL};
    const int l2[] = {0, 0};
    const int f2[] = {1, 1};
    MUST(db_exec_params(c, "SELECT $1::bytea, $2::bytea IS NULL", 2, p2, l2, f2, &res));
    MUST(db_result_get_bytea(res, 0, 0, &data, &len));
    assert_int_equal(len, 0);
    free(data);
    assert_string_equal(db_result_get(res, 0, 1), "t");
    db_result_free(res);

    /* The pool's settings reach the session. */
    MUST(db_exec(c, "SELECT current_setting('application_name'), current_setting('search_path')", 0, NULL,
                 &res));
    assert_string_equal(db_result_get(res, 0, 0), "alma-test-db");
    assert_string_equal(db_result_get(res, 0, 1), g_main);
    db_result_free(res);
    db_conn_release(c);
    db_conn_release(NULL);
}

/* A statement with parameters is prepared once per connection and then run by name; a table changed under
 * the plan (another replica's migration) falls back to running the text unprepared, without an error. */
static void test_prepared_statements(void **state)
{
    (void)state;
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(g_pool, 5000, &c));
    MUST(db_exec(c, "CREATE TABLE prep_t (id int PRIMARY KEY, v text)", 0, NULL, NULL));
    const char *p1[] = {"1", "one"};
    MUST(db_exec(c, "INSERT INTO prep_t (id, v) VALUES ($1::int, $2)", 2, p1, NULL));
    const char *k[] = {"1"};
    for (int i = 0; i < 3; i++) {
        MUST(db_exec(c, "SELECT * FROM prep_t WHERE id = $1::int", 1, k, &res));
        assert_int_equal(db_result_ntuples(res), 1);
        assert_int_equal(db_result_nfields(res), 2);
        db_result_free(res);
    }
    /* Both statements are prepared once in this session; the one without parameters is not. */
    MUST(db_exec(c, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%prep_t%'", 0, NULL,
                 &res));
    assert_string_equal(db_result_get(res, 0, 0), "2");
    db_result_free(res);
    /* The result type changes under the cached plan: the next call still answers, with the new column. */
    MUST(db_exec(c, "ALTER TABLE prep_t ADD COLUMN w text", 0, NULL, NULL));
    MUST(db_exec(c, "SELECT * FROM prep_t WHERE id = $1::int", 1, k, &res));
    assert_int_equal(db_result_nfields(res), 3);
    db_result_free(res);
    /* A statement the server cannot prepare fails as its execution would, and is not remembered. */
    base_result r = db_exec(c, "SELECT * FROM prep_missing WHERE id = $1::int", 1, k, NULL);
    assert_false(base_is_ok(r));
    assert_string_equal(db_last_sqlstate(), "42P01"); /* undefined table */
    MUST(db_exec(c, "CREATE TABLE prep_missing (id int)", 0, NULL, NULL));
    MUST(db_exec(c, "SELECT * FROM prep_missing WHERE id = $1::int", 1, k, NULL));
    MUST(db_exec(c, "DROP TABLE prep_t, prep_missing", 0, NULL, NULL));
    db_conn_release(c);
}

static void test_injection_stays_data(void **state)
{
    (void)state;
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(g_pool, 5000, &c));
    const char *evil = "x'); DROP TABLE patients; --";
    const char *quote = "Robert'); DELETE FROM patients WHERE ('1'='1";
    const char *p[] = {evil, quote};
    MUST(db_exec(c, "INSERT INTO patients (mrn, name) VALUES ($1, $2)", 2, p, NULL));
    const char *k[] = {evil};
    MUST(db_exec(c, "SELECT name FROM patients WHERE mrn = $1", 1, k, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    assert_string_equal(db_result_get(res, 0, 0), quote);
    db_result_free(res);
    db_conn_release(c);
    /* The table is still there and still has the other rows. */
    assert_true(query_int(g_pool, "SELECT count(*) FROM patients", 0, NULL) >= 2);
}

static void test_unique_violation_is_exists_without_value(void **state)
{
    (void)state;
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_pool, 5000, &c));
    const char *p[] = {"MRN-9876543", "Jane Example"};
    MUST(db_exec(c, "INSERT INTO patients (mrn, name) VALUES ($1, $2)", 2, p, NULL));
    db_result *res = NULL;
    base_result r = db_exec(c, "INSERT INTO patients (mrn, name) VALUES ($1, $2)", 2, p, &res);
    assert_int_equal(r.err, BASE_ERR_EXISTS);
    assert_null(res);
    assert_string_equal(db_last_sqlstate(), "23505");
    const char *msg = base_error_message();
    assert_non_null(strstr(msg, "23505"));
    assert_non_null(strstr(msg, "patients_mrn_key"));
    assert_null(strstr(msg, "9876543"));
    assert_null(strstr(msg, "Jane"));
    assert_null(strstr(msg, "Key ("));

    /* Other integrity violations are conflicts; a success clears the SQLSTATE. */
    const char *q[] = {NULL};
    r = db_exec(c, "INSERT INTO patients (mrn) VALUES ($1)", 1, q, NULL);
    assert_int_equal(r.err, BASE_ERR_CONFLICT);
    assert_string_equal(db_last_sqlstate(), "23502");
    MUST(db_exec(c, "SELECT 1", 0, NULL, NULL));
    assert_string_equal(db_last_sqlstate(), "");

    /* Bad input data is invalid, and its message does not echo the value either. */
    const char *bad[] = {"not-a-number-424242"};
    r = db_exec(c, "SELECT $1::integer", 1, bad, NULL);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_null(strstr(base_error_message(), "424242"));
    db_conn_release(c);
}

static void test_statement_timeout(void **state)
{
    (void)state;
    db_pool_config cfg = db_pool_config_default(g_uri, 1, 5000);
    cfg.statement_timeout_ms = 200;
    db_pool *p = NULL;
    MUST(db_pool_create_config(&cfg, &p));
    db_conn *c = NULL;
    MUST(db_pool_acquire(p, 5000, &c));
    int64_t t0 = now_ms();
    base_result r = db_exec(c, "SELECT pg_sleep(5)", 0, NULL, NULL);
    int64_t dt = now_ms() - t0;
    assert_int_equal(r.err, BASE_ERR_TIMEOUT);
    assert_string_equal(db_last_sqlstate(), "57014");
    assert_true(dt < 3000);
    /* The connection survives a cancelled statement. */
    MUST(db_exec(c, "SELECT 1", 0, NULL, NULL));
    db_conn_release(c);
    db_pool_destroy(p);
}

/* ---- Pool --------------------------------------------------------------------------------------------- */

struct release_later {
    db_conn *conn;
    int delay_ms;
};

static void *release_later_thread(void *arg)
{
    struct release_later *rl = arg;
    struct timespec d = {.tv_sec = 0, .tv_nsec = (long)rl->delay_ms * 1000000L};
    nanosleep(&d, NULL);
    db_conn_release(rl->conn);
    return NULL;
}

static void test_pool_exhaustion_times_out(void **state)
{
    (void)state;
    db_pool *p = pool_in(g_main, 1);
    db_conn *c1 = NULL, *c2 = NULL;
    MUST(db_pool_acquire(p, 1000, &c1));

    int64_t t0 = now_ms();
    base_result r = db_pool_acquire(p, 200, &c2);
    int64_t dt = now_ms() - t0;
    assert_int_equal(r.err, BASE_ERR_UNAVAILABLE);
    assert_null(c2);
    assert_string_equal(base_error_message(), "no database connection available");
    assert_true(dt >= 150 && dt < 2000);
    assert_int_equal(db_pool_acquire(p, 0, &c2).err, BASE_ERR_UNAVAILABLE);

    /* A waiter gets the connection another thread gives back. */
    struct release_later rl = {.conn = c1, .delay_ms = 100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later_thread, &rl), 0);
    MUST(db_pool_acquire(p, 5000, &c2));
    pthread_join(th, NULL);
    MUST(db_exec(c2, "SELECT 1", 0, NULL, NULL));
    db_conn_release(c2);
    db_pool_destroy(p);
}

static void test_unreachable_is_unavailable(void **state)
{
    (void)state;
    char uri[256];
    snprintf(uri, sizeof uri, "postgresql://postgres:s3cretPW@127.0.0.1:%d/postgres", testenv_closed_port());
    db_pool *p = NULL;
    MUST(db_pool_create(uri, 2, 2000, &p));
    db_conn *c = NULL;
    int64_t t0 = now_ms();
    base_result r = db_pool_acquire(p, 1000, &c);
    int64_t dt = now_ms() - t0;
    assert_int_equal(r.err, BASE_ERR_UNAVAILABLE);
    assert_null(c);
    assert_non_null(strstr(base_error_message(), "database unavailable"));
    assert_null(strstr(base_error_message(), "s3cretPW"));
    assert_null(strstr(base_error_message(), "127.0.0.1"));
    assert_true(dt < 2000);

    /* The slot is not lost: trying again fails the same way, as do transactions and migrations. */
    assert_int_equal(db_pool_acquire(p, 1000, &c).err, BASE_ERR_UNAVAILABLE);
    assert_int_equal(db_pool_acquire(p, 1000, &c).err, BASE_ERR_UNAVAILABLE);
    db_migration_set set = set_in("never_created");
    assert_int_equal(db_migrate(p, &set, NULL).err, BASE_ERR_UNAVAILABLE);
    db_pool_destroy(p);

    /* A malformed conninfo is refused up front, without echoing it. */
    assert_int_equal(db_pool_create("host=127.0.0.1 password='s3cretPW", 1, 1000, &p).err, BASE_ERR_INVALID);
    assert_null(strstr(base_error_message(), "s3cretPW"));
}

/* A server that completes the TCP handshake (the kernel does) but never answers: connecting must give up
 * after connect_timeout_ms, not hang. */
static void test_silent_server_connect_times_out(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char uri[256];
    snprintf(uri, sizeof uri,
             "postgresql://postgres@127.0.0.1:%d/postgres?sslmode=disable&gssencmode=disable",
             ntohs(a.sin_port));
    db_pool *p = NULL;
    MUST(db_pool_create(uri, 1, 300, &p));
    db_conn *c = NULL;
    int64_t t0 = now_ms();
    base_result r = db_pool_acquire(p, 1000, &c);
    int64_t dt = now_ms() - t0;
    assert_int_equal(r.err, BASE_ERR_UNAVAILABLE);
    assert_non_null(strstr(base_error_message(), "database unavailable"));
    assert_true(dt >= 250 && dt < 1500);
    db_pool_destroy(p);
    close(fd);
}

static int64_t backend_pid(db_conn *c)
{
    db_result *res = NULL;
    int64_t pid = 0;
    MUST(db_exec(c, "SELECT pg_backend_pid()", 0, NULL, &res));
    MUST(db_result_get_int64(res, 0, 0, &pid));
    db_result_free(res);
    return pid;
}

static void terminate_backend(int64_t pid)
{
    char pids[32];
    snprintf(pids, sizeof pids, "%lld", (long long)pid);
    const char *p[] = {pids};
    /* With a timeout, pg_terminate_backend waits until the backend is gone. */
    assert_int_equal(query_int(g_admin, "SELECT pg_terminate_backend($1::integer, 5000)::integer", 1, p), 1);
}

static void test_killed_connection_is_reopened(void **state)
{
    (void)state;
    db_pool *p = pool_in(g_main, 1);
    db_conn *c = NULL;

    /* Killed while idle in the pool: noticed and replaced by the next acquire. */
    MUST(db_pool_acquire(p, 5000, &c));
    int64_t pid1 = backend_pid(c);
    db_conn_release(c);
    terminate_backend(pid1);
    MUST(db_pool_acquire(p, 5000, &c));
    int64_t pid2 = backend_pid(c);
    assert_true(pid2 != pid1);
    db_conn_release(c);

    /* Killed while checked out: the statement fails as unavailable, the next acquire reconnects. */
    MUST(db_pool_acquire(p, 5000, &c));
    terminate_backend(backend_pid(c));
    base_result r = db_exec(c, "SELECT 1", 0, NULL, NULL);
    assert_int_equal(r.err, BASE_ERR_UNAVAILABLE);
    assert_int_equal(db_exec(c, "SELECT 1", 0, NULL, NULL).err, BASE_ERR_UNAVAILABLE);
    db_conn_release(c);
    MUST(db_pool_acquire(p, 5000, &c));
    MUST(db_exec(c, "SELECT 1", 0, NULL, NULL));
    db_conn_release(c);
    db_pool_destroy(p);
}

/* ---- Transactions ------------------------------------------------------------------------------------- */

struct ledger_arg {
    const char *account;
    int mode; /* 0: fail with our own error; 1: a unique violation; 2: swallow an error; 3: succeed */
};

static base_result ledger_then_fail(db_conn *c, void *argp)
{
    struct ledger_arg *a = argp;
    const char *p[] = {a->account};
    BASE_GUARD(db_exec(c, "INSERT INTO ledger (account, amount) VALUES ($1, 10)", 1, p, NULL));
    if (a->mode == 0)
        return base_fail(BASE_ERR_CONFLICT, "test: body refuses");
    if (a->mode == 3)
        return BASE_OK_RESULT;
    const char *dup[] = {"MRN-TXN-DUP"};
    BASE_GUARD(db_exec(c, "INSERT INTO patients (mrn) VALUES ($1)", 1, dup, NULL));
    base_result r = db_exec(c, "INSERT INTO patients (mrn) VALUES ($1)", 1, dup, NULL);
    if (a->mode == 2)
        return BASE_OK_RESULT; /* a buggy body that ignores the failure */
    return r;
}

/* Array parameters: awkward text stays data through unnest(), NULL stays NULL, hex decodes, a restored mark
 * drops exactly what was added after it. */
static void test_array_parameters(void **state)
{
    (void)state;
    static const char *const awkward[] = {"plain", "with \"quotes\"", "back\\slash",       "a,b", "{braces}",
                                          "NULL",  " spaced ",        "\xc3\xa9t\xc3\xa9", ""};
    enum { N = sizeof awkward / sizeof awkward[0] };
    db_array t, ints, hex;
    db_array_begin(&t);
    db_array_begin(&ints);
    db_array_begin(&hex);
    for (size_t i = 0; i < N; i++) {
        db_array_text(&t, awkward[i]);
        db_array_int(&ints, (int64_t)i - 3);
        db_array_hex(&hex, awkward[i], strlen(awkward[i]));
    }
    db_array_text(&t, NULL);
    db_array_int(&ints, INT64_MIN);
    db_array_hex(&hex, "", 0);
    /* Added, then taken back: must not reach the server. */
    db_array_mark mt = db_array_save(&t), mi = db_array_save(&ints), mh = db_array_save(&hex);
    db_array_text(&t, "dropped");
    db_array_int(&ints, 99);
    db_array_hex(&hex, "dropped", 7);
    db_array_restore(&t, mt);
    db_array_restore(&ints, mi);
    db_array_restore(&hex, mh);
    MUST(db_array_end(&t));
    MUST(db_array_end(&ints));
    MUST(db_array_end(&hex));
    const char *p[] = {t.text, ints.text, hex.text};
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(g_pool, 5000, &c));
    MUST(db_exec(c,
                 "SELECT u.t, u.i, convert_from(decode(u.h, 'hex'), 'UTF8') FROM unnest($1::text[], "
                 "$2::bigint[], $3::text[]) WITH ORDINALITY AS u(t, i, h, n) ORDER BY u.n",
                 3, p, &res));
    assert_int_equal(db_result_ntuples(res), N + 1);
    for (size_t i = 0; i < N; i++) {
        assert_string_equal(db_result_get(res, (int)i, 0), awkward[i]);
        int64_t v = 0;
        MUST(db_result_get_int64(res, (int)i, 1, &v));
        assert_int_equal(v, (int64_t)i - 3);
        assert_string_equal(db_result_get(res, (int)i, 2), awkward[i]);
    }
    assert_true(db_result_is_null(res, N, 0));
    assert_string_equal(db_result_get(res, N, 1), "-9223372036854775808");
    assert_string_equal(db_result_get(res, N, 2), "");
    db_result_free(res);
    db_conn_release(c);
    db_array_free(&t);
    db_array_free(&ints);
    db_array_free(&hex);
    char *lit = NULL;
    const char *two[] = {"x\"y", "z"};
    MUST(db_text_array(two, 2, &lit));
    assert_string_equal(lit, "{\"x\\\"y\",\"z\"}");
    free(lit);
}

static void test_transaction_rollback_on_error(void **state)
{
    (void)state;
    const char *acct[] = {"rollback-test"};
    struct ledger_arg a = {.account = acct[0], .mode = 0};
    base_result r = db_transaction(g_pool, DB_READ_COMMITTED, 3, ledger_then_fail, &a);
    assert_int_equal(r.err, BASE_ERR_CONFLICT);
    assert_string_equal(base_error_message(), "test: body refuses");

    a.mode = 1;
    r = db_transaction(g_pool, DB_SERIALIZABLE, 3, ledger_then_fail, &a);
    assert_int_equal(r.err, BASE_ERR_EXISTS);
    assert_string_equal(db_last_sqlstate(), "23505");

    a.mode = 2;
    r = db_transaction(g_pool, DB_REPEATABLE_READ, 3, ledger_then_fail, &a);
    assert_int_equal(r.err, BASE_ERR_INTERNAL);

    assert_int_equal(query_int(g_pool, "SELECT count(*) FROM ledger WHERE account = $1", 1, acct), 0);
    const char *dup[] = {"MRN-TXN-DUP"};
    assert_int_equal(query_int(g_pool, "SELECT count(*) FROM patients WHERE mrn = $1", 1, dup), 0);

    /* A body that succeeds commits; nonsense arguments are refused. */
    a.mode = 3;
    MUST(db_transaction(g_pool, DB_SERIALIZABLE, 3, ledger_then_fail, &a));
    assert_int_equal(query_int(g_pool, "SELECT count(*) FROM ledger WHERE account = $1", 1, acct), 1);
    assert_int_equal(db_transaction(g_pool, DB_READ_COMMITTED, 0, ledger_then_fail, &a).err, BASE_ERR_LIMIT);
    assert_int_equal(db_transaction(g_pool, (db_isolation)42, 1, ledger_then_fail, &a).err, BASE_ERR_INVALID);
}

struct skew_arg {
    pthread_barrier_t *barrier;
    const char *account;
    int max_attempts;
    int calls;
    base_result result;
    char sqlstate[6];
};

/* Write skew: read the account's rows, then add one. Two of these in SERIALIZABLE, both reading before
 * either writes (the barrier, first attempt only), cannot both commit: Postgres aborts one with 40001. */
static base_result skew_body(db_conn *c, void *argp)
{
    struct skew_arg *a = argp;
    const char *p[] = {a->account};
    db_result *res = NULL;
    a->calls++;
    BASE_GUARD(db_exec(c, "SELECT count(*) FROM ledger WHERE account = $1", 1, p, &res));
    db_result_free(res);
    if (a->calls == 1)
        pthread_barrier_wait(a->barrier);
    return db_exec(c, "INSERT INTO ledger (account, amount) VALUES ($1, 1)", 1, p, NULL);
}

static void *skew_thread(void *argp)
{
    struct skew_arg *a = argp;
    a->result = db_transaction(g_pool, DB_SERIALIZABLE, a->max_attempts, skew_body, a);
    memcpy(a->sqlstate, db_last_sqlstate(), sizeof a->sqlstate);
    return NULL;
}

static void run_skew(const char *account, int max_attempts, struct skew_arg out[2])
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        out[i] = (struct skew_arg){.barrier = &barrier, .account = account, .max_attempts = max_attempts};
        assert_int_equal(pthread_create(&th[i], NULL, skew_thread, &out[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
}

static void test_serialization_failure_is_retried(void **state)
{
    (void)state;
    struct skew_arg a[2];
    run_skew("skew-retry", 10, a);
    assert_int_equal(a[0].result.err, BASE_OK);
    assert_int_equal(a[1].result.err, BASE_OK);
    /* One of them ran at least twice. */
    assert_true(a[0].calls + a[1].calls >= 3);
    const char *p[] = {"skew-retry"};
    assert_int_equal(query_int(g_pool, "SELECT count(*) FROM ledger WHERE account = $1", 1, p), 2);
}

static void test_serialization_failure_without_retry(void **state)
{
    (void)state;
    struct skew_arg a[2];
    run_skew("skew-once", 1, a);
    int ok = 0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(a[i].calls, 1);
        if (base_is_ok(a[i].result)) {
            ok++;
        } else {
            assert_int_equal(a[i].result.err, BASE_ERR_UNAVAILABLE);
            assert_true(db_sqlstate_retryable(a[i].sqlstate));
        }
    }
    assert_int_equal(ok, 1);
    const char *p[] = {"skew-once"};
    assert_int_equal(query_int(g_pool, "SELECT count(*) FROM ledger WHERE account = $1", 1, p), 1);
}

/* ---- Migrations --------------------------------------------------------------------------------------- */

static void test_migrate_once_and_idempotent(void **state)
{
    (void)state;
    const char *schema = new_schema("mig");
    db_migration_set set = set_in(schema);
    int applied = -1;
    MUST(db_migrate(g_admin, &set, &applied));
    assert_int_equal(applied, 2);
    MUST(db_migrate(g_admin, &set, &applied));
    assert_int_equal(applied, 0);
    MUST(db_migrate(g_admin, &set, NULL));

    db_pool *p = pool_in(schema, 1);
    assert_int_equal(query_int(p, "SELECT count(*) FROM migration_log", 0, NULL), 2);
    assert_int_equal(
        query_int(p, "SELECT count(*) FROM schema_migrations WHERE length(sha256) = 64", 0, NULL), 2);
    const char *name[] = {"add_note"};
    assert_int_equal(query_int(p, "SELECT version FROM schema_migrations WHERE name = $1", 1, name), 2);
    /* Migration 2 added a column; the checksum recorded is the SHA-256 of the file's bytes. */
    const char *sql[] = {dbtest_migrations.migrations[1].sql};
    assert_int_equal(query_int(p,
                               "SELECT count(*) FROM schema_migrations WHERE version = 2 AND "
                               "sha256 = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
                               1, sql),
                     1);
    db_pool_destroy(p);
    /* Migrations did not leak their settings into the pooled connection. */
    assert_int_equal(
        query_int(g_admin, "SELECT (current_setting('statement_timeout') = '30s')::integer", 0, NULL), 1);
}

struct migrate_arg {
    const db_migration_set *set;
    base_result result;
    int applied;
};

static void *migrate_thread(void *argp)
{
    struct migrate_arg *a = argp;
    /* Each thread is a replica with a pool of its own. */
    db_pool *p = NULL;
    a->result = db_pool_create(g_uri, 1, 5000, &p);
    if (base_is_ok(a->result))
        a->result = db_migrate(p, a->set, &a->applied);
    db_pool_destroy(p);
    return NULL;
}

static void test_migrate_concurrently_applies_once(void **state)
{
    (void)state;
    const char *schema = new_schema("conc");
    db_migration_set set = set_in(schema);
    struct migrate_arg a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct migrate_arg){.set = &set, .applied = -1};
        assert_int_equal(pthread_create(&th[i], NULL, migrate_thread, &a[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    int total = 0;
    for (int i = 0; i < 3; i++) {
        if (!base_is_ok(a[i].result))
            fail_msg("replica %d: %s", i, base_err_name(a[i].result.err));
        total += a[i].applied;
    }
    assert_int_equal(total, 2);
    db_pool *p = pool_in(schema, 1);
    assert_int_equal(query_int(p, "SELECT count(*) FROM migration_log", 0, NULL), 2);
    assert_int_equal(query_int(p, "SELECT count(*) FROM schema_migrations", 0, NULL), 2);
    db_pool_destroy(p);
}

static void test_migrate_checksum_mismatch_refused(void **state)
{
    (void)state;
    const char *schema = new_schema("sum");
    db_migration_set set = set_in(schema);
    set.count = 1;
    int applied = -1;
    MUST(db_migrate(g_admin, &set, &applied));
    assert_int_equal(applied, 1);

    /* Version 1 edited after it was applied, and version 2 pending: nothing is applied. */
    static const char edited[] = "CREATE TABLE patients (id bigint);";
    db_migration changed[2] = {dbtest_migrations.migrations[0], dbtest_migrations.migrations[1]};
    changed[0].sql = edited;
    changed[0].sql_len = sizeof edited - 1;
    db_migration_set bad = {.schema = schema, .migrations = changed, .count = 2};
    base_result r = db_migrate(g_admin, &bad, &applied);
    assert_int_equal(r.err, BASE_ERR_CONFLICT);
    assert_non_null(strstr(base_error_message(), "checksum mismatch"));
    assert_non_null(strstr(base_error_message(), "0001_create_tables"));

    db_pool *p = pool_in(schema, 1);
    assert_int_equal(query_int(p, "SELECT count(*) FROM schema_migrations", 0, NULL), 1);
    db_pool_destroy(p);

    /* The true set still goes on from where it was. */
    set.count = 2;
    MUST(db_migrate(g_admin, &set, &applied));
    assert_int_equal(applied, 1);
}

static void test_migrate_failure_rolls_back(void **state)
{
    (void)state;
    const char *schema = new_schema("fail");
    static const char broken[] = "CREATE TABLE half_done (id int);\nCREATE TABLE oops (;\n";
    static const char commits[] = "CREATE TABLE sneaky (id int); COMMIT;";
    db_migration ms[3] = {dbtest_migrations.migrations[0],
                          {.version = 2, .name = "broken", .sql = broken, .sql_len = sizeof broken - 1},
                          {.version = 3, .name = "later", .sql = "SELECT 1;", .sql_len = 9}};
    db_migration_set set = {.schema = schema, .migrations = ms, .count = 3};
    int applied = -1;
    base_result r = db_migrate(g_admin, &set, &applied);
    assert_int_equal(r.err, BASE_ERR_INTERNAL);
    assert_int_equal(applied, -1);
    assert_non_null(strstr(base_error_message(), "migration 0002_broken"));
    assert_non_null(strstr(base_error_message(), "42601"));

    db_pool *p = pool_in(schema, 1);
    assert_int_equal(query_int(p, "SELECT count(*) FROM schema_migrations", 0, NULL), 1);
    assert_int_equal(query_int(p, "SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'", 0, NULL),
                     0);

    /* A migration may not end the transaction it runs in. */
    ms[1].name = "commits";
    ms[1].sql = commits;
    ms[1].sql_len = sizeof commits - 1;
    set.count = 2;
    assert_int_equal(db_migrate(g_admin, &set, &applied).err, BASE_ERR_INVALID);
    assert_int_equal(query_int(p, "SELECT count(*) FROM schema_migrations", 0, NULL), 1);
    db_pool_destroy(p);

    /* Malformed sets are refused before touching the database. */
    db_migration_set s2 = set_in("Bad-Schema");
    assert_int_equal(db_migrate(g_admin, &s2, NULL).err, BASE_ERR_INVALID);
    db_migration dup[2] = {dbtest_migrations.migrations[0], dbtest_migrations.migrations[0]};
    db_migration_set s3 = {.schema = schema, .migrations = dup, .count = 2};
    assert_int_equal(db_migrate(g_admin, &s3, NULL).err, BASE_ERR_INVALID);
}

static void test_generated_set(void **state)
{
    (void)state;
    assert_string_equal(dbtest_migrations.schema, "dbtest");
    assert_int_equal(dbtest_migrations.count, 2);
    assert_int_equal(dbtest_migrations.migrations[0].version, 1);
    assert_string_equal(dbtest_migrations.migrations[0].name, "create_tables");
    assert_int_equal(dbtest_migrations.migrations[1].version, 2);
    assert_string_equal(dbtest_migrations.migrations[1].name, "add_note");
    char *file = testenv_read_file(testenv_source_path("tests/db/migrations/0002_add_note.sql"));
    assert_int_equal(dbtest_migrations.migrations[1].sql_len, strlen(file));
    assert_string_equal(dbtest_migrations.migrations[1].sql, file);
    free(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_array_parameters),
        cmocka_unit_test(test_generated_set),
        cmocka_unit_test(test_exec_params_null_and_bytea),
        cmocka_unit_test(test_injection_stays_data),
        cmocka_unit_test(test_prepared_statements),
        cmocka_unit_test(test_unique_violation_is_exists_without_value),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_pool_exhaustion_times_out),
        cmocka_unit_test(test_unreachable_is_unavailable),
        cmocka_unit_test(test_silent_server_connect_times_out),
        cmocka_unit_test(test_killed_connection_is_reopened),
        cmocka_unit_test(test_transaction_rollback_on_error),
        cmocka_unit_test(test_serialization_failure_is_retried),
        cmocka_unit_test(test_serialization_failure_without_retry),
        cmocka_unit_test(test_migrate_once_and_idempotent),
        cmocka_unit_test(test_migrate_concurrently_applies_once),
        cmocka_unit_test(test_migrate_checksum_mismatch_refused),
        cmocka_unit_test(test_migrate_failure_rolls_back),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
