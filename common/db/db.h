/* common/db: the suite's one home of libpq. A connection pool, parameterised statements, transactions that
 * retry serialization failures, and versioned migrations compiled into the binary.
 *
 * THE RULE: SQL is a constant, data goes in parameters. Every function here that takes `sql` expects a
 * string literal (or a #define / static const of one) written by a programmer, with $1, $2, ... where data
 * goes; values travel separately in `params` and the server never parses them as SQL. There is
 * deliberately no function that takes SQL assembled at run time from data, no escaping helper, and no
 * "simple query" entry point: do not build SQL with snprintf or concatenation (deploy/check-banned.sh looks
 * for it). Identifiers cannot be parameters: name tables in the constant SQL, or set the schema once with
 * db_pool_config.search_path.
 *
 * Errors (base_result): SQLSTATE 23505 unique violation -> BASE_ERR_EXISTS; other 23xxx integrity violations
 * -> BASE_ERR_CONFLICT; 40001 serialization failure and 40P01 deadlock -> BASE_ERR_UNAVAILABLE and
 * db_sqlstate_retryable() (db_transaction() retries them); 57014 statement timeout / cancel and 55P03 lock
 * timeout -> BASE_ERR_TIMEOUT; lost connection, server down or shutting down (08xxx, 57P0x, 53xxx) ->
 * BASE_ERR_UNAVAILABLE; 42501 -> BASE_ERR_DENIED; 22xxx data exception -> BASE_ERR_INVALID; anything else
 * -> BASE_ERR_INTERNAL. The message (base_error_message()) names the SQLSTATE and, when known, the table and
 * constraint; it never carries the server's message text, which can quote row values ("Key (mrn)=(12345)
 * already exists"), nor the conninfo, which can hold a password.
 *
 * Threads: a pool is thread-safe; a checked-out db_conn and its results belong to one thread at a time. */
#ifndef ALMA_DB_DB_H
#define ALMA_DB_DB_H

#include "base/result.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct db_pool db_pool;
typedef struct db_conn db_conn;
typedef struct db_result db_result;

/* ---- Pool ------------------------------------------------------------------------------------------- */

#define DB_POOL_MAX_SIZE                256
#define DB_DEFAULT_APPLICATION_NAME     "alma"
#define DB_DEFAULT_STATEMENT_TIMEOUT_MS 30000
#define DB_DEFAULT_ACQUIRE_TIMEOUT_MS   5000

typedef struct db_pool_config {
    const char *conninfo;         /* libpq URI or key=value string; may hold a password: never echoed */
    int size;                     /* connections, 1..DB_POOL_MAX_SIZE, opened lazily */
    int connect_timeout_ms;       /* bound on opening one connection (TCP + TLS + auth), > 0 */
    int statement_timeout_ms;     /* server-side statement_timeout for every statement; 0 = none */
    int acquire_timeout_ms;       /* how long db_transaction() / db_migrate() wait for a free connection */
    const char *application_name; /* shown in pg_stat_activity; [A-Za-z0-9_.-], at most 63 chars */
    const char *search_path; /* NULL, or one schema name ([a-z_][a-z0-9_]*): where unqualified names go */
} db_pool_config;

/* A config with the defaults above for everything but conninfo, size and connect_timeout_ms. */
db_pool_config db_pool_config_default(const char *conninfo, int size, int connect_timeout_ms);

/* Create a pool; no connection is opened yet (a down database is reported by the first acquire). A malformed
 * conninfo fails here with BASE_ERR_INVALID. Application settings in conninfo win over application_name;
 * the pool's statement_timeout, search_path and connect timeout win over conninfo. */
BASE_MUST_USE base_result db_pool_create(const char *conninfo, int size, int connect_timeout_ms,
                                         db_pool **ret_pool);
BASE_MUST_USE base_result db_pool_create_config(const db_pool_config *config, db_pool **ret_pool);

/* Close every connection and free the pool. All connections must have been released. Accepts NULL. */
void db_pool_destroy(db_pool *pool);

/* Check a connection out, waiting up to timeout_ms (0: do not wait) for a free one, then opening or
 * re-opening it if needed (bounded by connect_timeout_ms). A connection found broken — closed by the server,
 * failed during its last use — is replaced by a fresh one here.
 *   BASE_ERR_UNAVAILABLE "no database connection available": every connection stayed in use for timeout_ms
 *   BASE_ERR_UNAVAILABLE "database unavailable": could not connect (down, refused, auth, timeout) */
BASE_MUST_USE base_result db_pool_acquire(db_pool *pool, int timeout_ms, db_conn **ret_conn);

/* Give a connection back. One left inside a transaction (a bug in the caller) is closed, which rolls the
 * transaction back, rather than handed to the next user. Accepts NULL. */
void db_conn_release(db_conn *conn);
/* For BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL; */
void db_conn_releasep(db_conn **conn);

/* ---- Statements --------------------------------------------------------------------------------------- */

#define DB_MAX_PARAMS 65535 /* the protocol's limit */

/* Run one constant statement with text parameters: params[i] is the text form of $i+1 (NULL = SQL NULL).
 * On success *ret_result (if ret_result is not NULL) receives the result, to be freed with db_result_free;
 * pass NULL when the rows do not matter. */
BASE_MUST_USE base_result db_exec(db_conn *conn, const char *sql, int nparams, const char *const *params,
                                  db_result **ret_result);

/* The same with binary parameters (bytea with embedded zero bytes): formats[i] is 0 for text (lengths[i]
 * ignored) or 1 for binary (lengths[i] bytes of params[i]). lengths and formats may be NULL for all-text.
 * A binary parameter takes the type the statement gives it: write $1::bytea when it is not obvious. */
BASE_MUST_USE base_result db_exec_params(db_conn *conn, const char *sql, int nparams,
                                         const char *const *params, const int *lengths, const int *formats,
                                         db_result **ret_result);

/* The SQLSTATE of the last failed statement on this thread ("" after a success or a failure without one,
 * such as a lost connection before any reply). Five characters, e.g. "23505". */
const char *db_last_sqlstate(void);
/* True for 40001 (serialization failure) and 40P01 (deadlock): the transaction may simply be run again. */
bool db_sqlstate_retryable(const char *sqlstate);

/* ---- Results (text format; out-of-range row or column reads as SQL NULL) ------------------------------- */

int db_result_ntuples(const db_result *res);
int db_result_nfields(const db_result *res);
/* Column number of a result column by name, or -1. */
int db_result_column(const db_result *res, const char *name);
bool db_result_is_null(const db_result *res, int row, int col);
/* The value's text, NUL-terminated, valid until db_result_free; NULL for SQL NULL. */
const char *db_result_get(const db_result *res, int row, int col);
/* Length in bytes of the value's text (0 for SQL NULL). */
size_t db_result_length(const db_result *res, int row, int col);
/* A bytea column decoded to bytes: *ret_data is malloc'd (free() it; non-NULL even when *ret_len is 0).
 * BASE_ERR_NOT_FOUND for SQL NULL, BASE_ERR_INVALID if the value is not bytea hex output. */
BASE_MUST_USE base_result db_result_get_bytea(const db_result *res, int row, int col,
                                              unsigned char **ret_data, size_t *ret_len);
/* An integer column. BASE_ERR_NOT_FOUND for SQL NULL, BASE_ERR_INVALID if not a base-10 int64. */
BASE_MUST_USE base_result db_result_get_int64(const db_result *res, int row, int col, int64_t *ret_value);
/* Rows inserted, updated, deleted (or selected) by the statement; 0 when the command reports none. */
int64_t db_result_affected_rows(const db_result *res);
/* Accepts NULL. */
void db_result_free(db_result *res);
/* For BASE_CLEANUP(db_result_freep) db_result *r = NULL; */
void db_result_freep(db_result **res);

/* ---- Transactions ------------------------------------------------------------------------------------- */

typedef enum db_isolation {
    DB_READ_COMMITTED,
    DB_REPEATABLE_READ,
    DB_SERIALIZABLE,
} db_isolation;

#define DB_MAX_ATTEMPTS 50

/* The body of a transaction: runs statements on conn and returns their result. It may run more than once
 * (after a serialization failure or deadlock), so it must not have effects outside the database, and it
 * must not COMMIT or ROLLBACK itself. */
typedef base_result (*db_txn_fn)(db_conn *conn, void *arg);

/* Check out a connection (waiting up to the pool's acquire_timeout_ms), BEGIN ISOLATION LEVEL iso, run fn,
 * COMMIT. When fn or COMMIT fails with a serialization failure or deadlock, ROLLBACK, wait a small jittered
 * backoff and run it again, up to max_attempts (1..DB_MAX_ATTEMPTS) in all; a connection that breaks before
 * BEGIN is also retried. Any other failure is rolled back and returned as is. When attempts run out the
 * result is BASE_ERR_UNAVAILABLE with db_last_sqlstate() telling why. A failure while the COMMIT is in flight
 * on a connection that breaks is returned, not retried: the outcome is unknown. */
BASE_MUST_USE base_result db_transaction(db_pool *pool, db_isolation iso, int max_attempts, db_txn_fn fn,
                                         void *arg);

/* ---- Migrations --------------------------------------------------------------------------------------- */

/* One versioned SQL file, NNNN_name.sql, compiled into the binary by alma_migrations() (migrations.cmake).
 * sql is NUL-terminated; sql_len excludes the NUL. */
typedef struct db_migration {
    int version;
    const char *name;
    const char *sql;
    size_t sql_len;
} db_migration;

/* Every migration of one service schema, in increasing version order. */
typedef struct db_migration_set {
    const char *schema; /* [a-z_][a-z0-9_]*, at most 63 chars */
    const db_migration *migrations;
    size_t count;
} db_migration_set;

/* Bring the set's schema up to date: under a session advisory lock derived from the schema name (so replicas
 * starting together queue up), create the schema if it is missing and <schema>.schema_migrations(version,
 * name, sha256, applied_at), then apply every migration not yet recorded, in order, each in its own
 * transaction together with its row in schema_migrations. Each migration runs with search_path set to the
 * schema alone, so it creates unqualified objects there, and without statement_timeout.
 * A recorded version whose file changed since (SHA-256 of the SQL text differs) fails the run with
 * BASE_ERR_CONFLICT and applies nothing after it; a failing migration is rolled back and returned, leaving
 * the earlier ones applied. *ret_applied (may be NULL) receives how many were applied by this call. */
BASE_MUST_USE base_result db_migrate(db_pool *pool, const db_migration_set *set, int *ret_applied);

/* Least privilege for a service schema: a service runs as a runtime role and never does DDL. At start-up it
 * calls this with the owner role's conninfo: a one-connection pool of the owner (search_path = schema) runs
 * `migrate` (the service's migrations, e.g. audit_store_migrate), then grants the runtime role — the
 * current_user of `runtime` — its rights by calling the schema's own grant_runtime(schema, role) function,
 * which each service's migrations define (identifiers are quoted there with format('%I')). The grant runs
 * on every start, so a new migration's tables get their grants too. */
typedef base_result (*db_migrate_fn)(db_pool *owner, const char *schema);
BASE_MUST_USE base_result db_migrate_as_owner(db_pool *runtime, const char *owner_conninfo,
                                              const char *schema, const char *application_name,
                                              db_migrate_fn migrate);

/* ---- Array parameters ---------------------------------------------------------------------------------- */

/* A batch of rows travels as text-format array parameters ($1::text[], $2::bigint[], ...), one statement for
 * the whole batch. db_array builds such a literal: every text element double-quoted with '\' and '"'
 * backslash-escaped (PostgreSQL's array input rules), so commas, braces, spaces and the word NULL inside a
 * value stay data; SQL NULL is an unquoted NULL; bytes go as hex text ("ab01...") for decode(x, 'hex')
 * server-side. It is still a parameter: the value never reaches the SQL text. The first allocation failure
 * sticks and is reported by db_array_end(). */
typedef struct db_array {
    char *text; /* NUL-terminated while building; the literal after db_array_end() */
    size_t len, cap;
    size_t count; /* elements so far */
    bool oom;
} db_array;

typedef struct db_array_mark {
    size_t len, count;
} db_array_mark;

void db_array_begin(db_array *a);               /* "{" (a zeroed or freed db_array) */
void db_array_text(db_array *a, const char *s); /* s NULL: SQL NULL */
void db_array_int(db_array *a, int64_t v);
void db_array_hex(db_array *a, const void *data, size_t n);
/* Remember where the array is, and go back there (drop the elements added since). */
db_array_mark db_array_save(const db_array *a);
void db_array_restore(db_array *a, db_array_mark m);
/* "}": BASE_ERR_NOMEM if any append failed. a->text is then the literal. */
BASE_MUST_USE base_result db_array_end(db_array *a);
void db_array_free(db_array *a); /* accepts a zeroed db_array */
/* A whole text[] literal in one call, malloc'd (free()). */
BASE_MUST_USE base_result db_text_array(const char *const *v, size_t n, char **ret_literal);

#endif
