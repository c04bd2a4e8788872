/* Private to common/db: the only header besides the .c files here that sees libpq. */
#ifndef ALMA_DB_INTERNAL_H
#define ALMA_DB_INTERNAL_H

#include "db/db.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define DB_OPTIONS_MAX    1024 /* the libpq "options" string we send */
#define DB_IDENTIFIER_MAX 63   /* NAMEDATALEN - 1 */

/* Server-side prepared statements, per connection (exec.c): a statement with parameters is parsed and planned
 * once per connection, then executed by name. The SQL text is a constant of the caller, so the number of
 * distinct statements is bounded; beyond DB_STMT_CACHE more run unprepared. */
#define DB_STMT_CACHE 128
typedef struct db_stmt {
    uint64_t hash;
    char *sql;
    bool unusable; /* the server refused to reuse its plan (0A000): run this text unprepared */
} db_stmt;

struct db_conn {
    db_pool *pool;
    db_stmt *stmts; /* DB_STMT_CACHE slots, nstmts used; valid for the current pg only */
    int nstmts;
    PGconn *pg;             /* NULL until opened, and after it was found broken */
    bool in_use;            /* checked out; guarded by pool->mu */
    bool broken;            /* the last use lost the connection: close it on release */
    char sqlstate[6];       /* of the last statement; "" after a success */
    char retry_sqlstate[6]; /* 40001 or 40P01 seen since the connection was checked out, else "" */
};

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *conninfo;
    char *application_name;
    char options[DB_OPTIONS_MAX];
    int connect_timeout_ms;
    int acquire_timeout_ms;
    int size;
    db_conn *conns;
};

struct db_result {
    PGresult *res;
};

/* Milliseconds on the monotonic clock. */
int64_t db__now_ms(void);

/* True for a schema name we accept: [a-z_][a-z0-9_]*, 1..63 chars. */
bool db__valid_identifier(const char *s);

/* Map a finished PGresult (may be NULL) to a base_result, recording the SQLSTATE on conn and this thread
 * and marking conn broken when the connection is gone. `what` prefixes the message ("database",
 * "migration 0002_add_x"). Does not free res. */
BASE_MUST_USE base_result db__check(db_conn *conn, PGresult *res, const char *what);

/* Forget the prepared statements of conn (its PGconn was closed or replaced). */
void db__stmt_cache_reset(db_conn *conn);

/* Set what db_last_sqlstate() reports on this thread. */
void db__set_last_sqlstate(const char *sqlstate);

/* Run a constant statement with text parameters and no interest in the rows, touching neither the thread's
 * error message nor its SQLSTATE: for ROLLBACK and other clean-up on a failure path. False on failure. */
bool db__exec_quiet(db_conn *conn, const char *sql, int nparams, const char *const *params);

#endif
