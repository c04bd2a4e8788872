/* Statements and results. The SQL text is a constant and values travel as parameters: a statement with
 * parameters is prepared once per connection (PQprepare, then PQexecPrepared by name), one without (DDL,
 * BEGIN/COMMIT, migrations that hold several statements) goes through PQexecParams. Server errors become a
 * base_err plus a message that names the SQLSTATE, table and constraint but never repeats the server's text,
 * which can quote row values. */
#include "db_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char db_tl_sqlstate[6];

/* Copy a server-supplied SQLSTATE if it looks like one (5 of [0-9A-Z]), else "". */
static void db_copy_sqlstate(char out[6], const char *in)
{
    out[0] = '\0';
    if (!in || strlen(in) != 5)
        return;
    for (int i = 0; i < 5; i++) {
        if (!((in[i] >= '0' && in[i] <= '9') || (in[i] >= 'A' && in[i] <= 'Z')))
            return;
    }
    memcpy(out, in, 6);
}

const char *db_last_sqlstate(void)
{
    return db_tl_sqlstate;
}

void db__set_last_sqlstate(const char *sqlstate)
{
    db_copy_sqlstate(db_tl_sqlstate, sqlstate);
}

bool db_sqlstate_retryable(const char *sqlstate)
{
    return sqlstate && (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

/* A table or constraint name from the server, made safe to print: identifiers only, bounded. */
static void db_copy_name(char *out, size_t outsz, const char *in)
{
    size_t n = 0;
    for (; in && *in && n + 1 < outsz && n < DB_IDENTIFIER_MAX; in++) {
        char ch = *in;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '_' || ch == '.' || ch == '$';
        out[n++] = ok ? ch : '?';
    }
    out[n] = '\0';
}

typedef struct db_sqlstate_map {
    const char *prefix; /* a full SQLSTATE or a two-character class */
    base_err err;
    const char *what;
} db_sqlstate_map;

/* First match wins: exact codes before their class. */
static const db_sqlstate_map db_sqlstate_table[] = {
    {"23505", BASE_ERR_EXISTS, "unique violation"},
    {"23503", BASE_ERR_CONFLICT, "foreign key violation"},
    {"23502", BASE_ERR_CONFLICT, "not-null violation"},
    {"23514", BASE_ERR_CONFLICT, "check violation"},
    {"23P01", BASE_ERR_CONFLICT, "exclusion violation"},
    {"23", BASE_ERR_CONFLICT, "integrity constraint violation"},
    {"40001", BASE_ERR_UNAVAILABLE, "serialization failure"},
    {"40P01", BASE_ERR_UNAVAILABLE, "deadlock detected"},
    {"57014", BASE_ERR_TIMEOUT, "statement timeout or cancel"},
    {"55P03", BASE_ERR_TIMEOUT, "lock not available"},
    {"57P01", BASE_ERR_UNAVAILABLE, "server shutting down"},
    {"57P02", BASE_ERR_UNAVAILABLE, "server crash shutdown"},
    {"57P03", BASE_ERR_UNAVAILABLE, "server not accepting connections"},
    {"08", BASE_ERR_UNAVAILABLE, "connection failure"},
    {"53", BASE_ERR_UNAVAILABLE, "insufficient resources"},
    {"42501", BASE_ERR_DENIED, "insufficient privilege"},
    {"22", BASE_ERR_INVALID, "invalid data"},
    {"25P02", BASE_ERR_INTERNAL, "statement in a failed transaction"},
    {"42", BASE_ERR_INTERNAL, "statement error"},
};

static const db_sqlstate_map *db_lookup(const char *st)
{
    for (size_t i = 0; i < BASE_ARRAY_LEN(db_sqlstate_table); i++) {
        const db_sqlstate_map *m = &db_sqlstate_table[i];
        if (strncmp(st, m->prefix, strlen(m->prefix)) == 0)
            return m;
    }
    return NULL;
}

static void db_record_sqlstate(db_conn *conn, const char *sqlstate)
{
    char st[6];
    db_copy_sqlstate(st, sqlstate);
    memcpy(db_tl_sqlstate, st, sizeof st);
    if (conn) {
        memcpy(conn->sqlstate, st, sizeof st);
        if (db_sqlstate_retryable(st))
            memcpy(conn->retry_sqlstate, st, sizeof st);
    }
}

base_result db__check(db_conn *conn, PGresult *res, const char *what)
{
    char st[6] = "";
    if (res) {
        switch (PQresultStatus(res)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
            db_record_sqlstate(conn, st);
            return BASE_OK_RESULT;
        case PGRES_FATAL_ERROR:
            break;
        case PGRES_EMPTY_QUERY:
            db_record_sqlstate(conn, st);
            return base_fail(BASE_ERR_INTERNAL, "%s: empty statement", what);
        default:
            /* COPY and other protocol states we never start: the connection is no longer usable. */
            db_record_sqlstate(conn, st);
            if (conn)
                conn->broken = true;
            return base_fail(BASE_ERR_INTERNAL, "%s: unsupported result status", what);
        }
        db_copy_sqlstate(st, PQresultErrorField(res, PG_DIAG_SQLSTATE));
    }
    db_record_sqlstate(conn, st);

    if (conn && (!conn->pg || PQstatus(conn->pg) != CONNECTION_OK)) {
        conn->broken = true;
        return base_fail(BASE_ERR_UNAVAILABLE, "%s: connection lost%s%s%s", what, st[0] ? " (SQLSTATE " : "",
                         st, st[0] ? ")" : "");
    }
    if (!res)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory", what);

    const db_sqlstate_map *m = st[0] ? db_lookup(st) : NULL;
    base_err err = m ? m->err : BASE_ERR_INTERNAL;
    char table[DB_IDENTIFIER_MAX + 1], constraint[DB_IDENTIFIER_MAX + 1], pos[48] = "";
    db_copy_name(table, sizeof table, PQresultErrorField(res, PG_DIAG_TABLE_NAME));
    db_copy_name(constraint, sizeof constraint, PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME));
    const char *p = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
    if (p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno == 0 && *end == '\0' && v > 0)
            snprintf(pos, sizeof pos, ", at character %ld", v);
    }
    return base_fail(err, "%s: %s (SQLSTATE %s%s%s%s%s%s)", what, m ? m->what : "error", st[0] ? st : "none",
                     table[0] ? ", table " : "", table, constraint[0] ? ", constraint " : "", constraint,
                     pos);
}

/* ---- Prepared statements ------------------------------------------------------------------------------ */

static uint64_t db_hash(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static void db_stmt_name(int i, char name[24])
{
    snprintf(name, 24, "alma_s%d", i);
}

void db__stmt_cache_reset(db_conn *conn)
{
    for (int i = 0; i < conn->nstmts; i++)
        free(conn->stmts[i].sql);
    free(conn->stmts);
    conn->stmts = NULL;
    conn->nstmts = 0;
}

static void db_stmt_unusable(db_conn *conn, const char *sql)
{
    uint64_t h = db_hash(sql);
    for (int i = 0; i < conn->nstmts; i++)
        if (conn->stmts[i].hash == h && strcmp(conn->stmts[i].sql, sql) == 0)
            conn->stmts[i].unusable = true;
}

/* The server-side name of sql's prepared statement on conn, preparing it the first time (*ret_prepared);
 * *ret_prepared false: run it unprepared (no parameters, the cache is full, or its plan became unusable).
 * A statement the server refuses to prepare (a syntax error, an unknown table) fails here as its execution
 * would, and is not remembered. */
static base_result db_prepare(db_conn *conn, const char *sql, int nparams, char name[24], bool *ret_prepared)
{
    *ret_prepared = false;
    if (nparams == 0)
        return BASE_OK_RESULT;
    uint64_t h = db_hash(sql);
    for (int i = 0; i < conn->nstmts; i++) {
        if (conn->stmts[i].hash == h && strcmp(conn->stmts[i].sql, sql) == 0) {
            if (!conn->stmts[i].unusable) {
                db_stmt_name(i, name);
                *ret_prepared = true;
            }
            return BASE_OK_RESULT;
        }
    }
    if (conn->nstmts >= DB_STMT_CACHE)
        return BASE_OK_RESULT;
    if (!conn->stmts) {
        conn->stmts = calloc(DB_STMT_CACHE, sizeof *conn->stmts);
        if (!conn->stmts)
            return BASE_OK_RESULT; /* run it unprepared */
    }
    char *copy = strdup(sql);
    if (!copy)
        return BASE_OK_RESULT;
    int i = conn->nstmts;
    db_stmt_name(i, name);
    PGresult *res = PQprepare(conn->pg, name, sql, nparams, NULL);
    base_result r = db__check(conn, res, "database");
    PQclear(res);
    if (!base_is_ok(r)) {
        free(copy);
        return r;
    }
    conn->stmts[i] = (db_stmt){.hash = h, .sql = copy, .unusable = false};
    conn->nstmts++;
    *ret_prepared = true;
    return BASE_OK_RESULT;
}

base_result db_exec_params(db_conn *conn, const char *sql, int nparams, const char *const *params,
                           const int *lengths, const int *formats, db_result **ret_result)
{
    BASE_ENSURE(conn && conn->in_use && conn->pg, BASE_ERR_INVALID, "db_exec: no connection checked out");
    BASE_ENSURE(sql && *sql, BASE_ERR_INVALID, "db_exec: empty SQL");
    BASE_ENSURE(nparams >= 0 && nparams <= DB_MAX_PARAMS, BASE_ERR_LIMIT, "db_exec: too many parameters");
    BASE_ENSURE(nparams == 0 || params, BASE_ERR_INVALID, "db_exec: missing parameters");
    if (formats) {
        for (int i = 0; i < nparams; i++) {
            BASE_ENSURE(formats[i] == 0 || formats[i] == 1, BASE_ERR_INVALID,
                        "db_exec: bad parameter format");
            if (formats[i] == 1) {
                BASE_ENSURE(lengths && lengths[i] >= 0, BASE_ERR_INVALID,
                            "db_exec: bad binary parameter length");
                BASE_ENSURE(params[i] || lengths[i] == 0, BASE_ERR_INVALID,
                            "db_exec: missing binary parameter");
            }
        }
    }
    if (conn->broken) {
        db_record_sqlstate(conn, "");
        return base_fail(BASE_ERR_UNAVAILABLE, "database: connection lost");
    }

    char name[24];
    bool prepared = false;
    base_result r = db_prepare(conn, sql, nparams, name, &prepared);
    if (!base_is_ok(r))
        return r;
    PGresult *res = prepared ? PQexecPrepared(conn->pg, name, nparams, params, lengths, formats, 0)
                             : PQexecParams(conn->pg, sql, nparams, NULL, params, lengths, formats, 0);
    if (prepared && res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
        /* "cached plan must not change result type": a table changed under the plan (a migration by
         * another replica). Run this text unprepared from now on; the statement itself did not run. */
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (st && strcmp(st, "0A000") == 0 && PQtransactionStatus(conn->pg) == PQTRANS_IDLE) {
            db_stmt_unusable(conn, sql);
            PQclear(res);
            res = PQexecParams(conn->pg, sql, nparams, NULL, params, lengths, formats, 0);
        }
    }
    r = db__check(conn, res, "database");
    if (!base_is_ok(r)) {
        PQclear(res);
        return r;
    }
    if (!ret_result) {
        PQclear(res);
        return BASE_OK_RESULT;
    }
    db_result *out = malloc(sizeof *out);
    if (!out) {
        PQclear(res);
        return base_fail(BASE_ERR_NOMEM, "database: out of memory");
    }
    out->res = res;
    *ret_result = out;
    return BASE_OK_RESULT;
}

base_result db_exec(db_conn *conn, const char *sql, int nparams, const char *const *params,
                    db_result **ret_result)
{
    return db_exec_params(conn, sql, nparams, params, NULL, NULL, ret_result);
}

bool db__exec_quiet(db_conn *conn, const char *sql, int nparams, const char *const *params)
{
    if (!conn || !conn->pg || conn->broken || PQstatus(conn->pg) != CONNECTION_OK)
        return false;
    PGresult *res = PQexecParams(conn->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    PQclear(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* ---- Results ----------------------------------------------------------------------------------------- */

static bool db_in_range(const db_result *res, int row, int col)
{
    return res && row >= 0 && col >= 0 && row < PQntuples(res->res) && col < PQnfields(res->res);
}

int db_result_ntuples(const db_result *res)
{
    return res ? PQntuples(res->res) : 0;
}

int db_result_nfields(const db_result *res)
{
    return res ? PQnfields(res->res) : 0;
}

int db_result_column(const db_result *res, const char *name)
{
    if (!res || !name)
        return -1;
    /* PQfnumber folds unquoted names to lower case, as SQL does. */
    return PQfnumber(res->res, name);
}

bool db_result_is_null(const db_result *res, int row, int col)
{
    return !db_in_range(res, row, col) || PQgetisnull(res->res, row, col);
}

const char *db_result_get(const db_result *res, int row, int col)
{
    if (db_result_is_null(res, row, col))
        return NULL;
    return PQgetvalue(res->res, row, col);
}

size_t db_result_length(const db_result *res, int row, int col)
{
    if (db_result_is_null(res, row, col))
        return 0;
    int n = PQgetlength(res->res, row, col);
    return n > 0 ? (size_t)n : 0;
}

static int db_hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

base_result db_result_get_bytea(const db_result *res, int row, int col, unsigned char **ret_data,
                                size_t *ret_len)
{
    BASE_ENSURE(ret_data && ret_len, BASE_ERR_INVALID, "db_result_get_bytea: missing argument");
    const char *v = db_result_get(res, row, col);
    BASE_ENSURE(v, BASE_ERR_NOT_FOUND, "db_result_get_bytea: value is NULL");
    size_t n = db_result_length(res, row, col);
    /* bytea_output=hex is set on every pool connection: "\x" then two hex digits per byte. */
    BASE_ENSURE(n >= 2 && v[0] == '\\' && v[1] == 'x' && n % 2 == 0, BASE_ERR_INVALID,
                "db_result_get_bytea: not a bytea value");
    size_t len = (n - 2) / 2;
    unsigned char *out = malloc(len ? len : 1);
    if (!out)
        return base_fail(BASE_ERR_NOMEM, "db_result_get_bytea: out of memory");
    for (size_t i = 0; i < len; i++) {
        int hi = db_hexval(v[2 + 2 * i]), lo = db_hexval(v[3 + 2 * i]);
        if (hi < 0 || lo < 0) {
            free(out);
            return base_fail(BASE_ERR_INVALID, "db_result_get_bytea: not a bytea value");
        }
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    *ret_data = out;
    *ret_len = len;
    return BASE_OK_RESULT;
}

base_result db_result_get_int64(const db_result *res, int row, int col, int64_t *ret_value)
{
    BASE_ENSURE(ret_value, BASE_ERR_INVALID, "db_result_get_int64: missing argument");
    const char *v = db_result_get(res, row, col);
    BASE_ENSURE(v, BASE_ERR_NOT_FOUND, "db_result_get_int64: value is NULL");
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    BASE_ENSURE(*v && *end == '\0' && errno == 0, BASE_ERR_INVALID, "db_result_get_int64: not an integer");
    *ret_value = (int64_t)x;
    return BASE_OK_RESULT;
}

int64_t db_result_affected_rows(const db_result *res)
{
    if (!res)
        return 0;
    const char *s = PQcmdTuples(res->res);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    return (errno == 0 && *end == '\0' && x >= 0) ? (int64_t)x : 0;
}

void db_result_free(db_result *res)
{
    if (!res)
        return;
    PQclear(res->res);
    free(res);
}

void db_result_freep(db_result **res)
{
    if (res) {
        db_result_free(*res);
        *res = NULL;
    }
}
