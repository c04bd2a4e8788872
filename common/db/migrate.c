/* Versioned migrations. The SQL comes from files compiled into the binary (migrations.cmake), so it is as
 * constant as any literal here; it is the one place that uses the simple query protocol (PQexec), because a
 * migration file holds several statements. The schema name is the only run-time identifier, and it never
 * enters SQL text: it is handed to the server as a parameter (set_config) and quoted there by format('%I').
 */
#include "db_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_MIGRATIONS_MAX     10000
#define DB_MIGRATION_NAME_MAX 100
#define DB_SHA256_HEX_LEN     64

/* Creates the schema and its bookkeeping table when missing. Existence is checked first, so a role that may
 * not CREATE in the database can still run against a schema the stack scripts made for it. */
static const char SQL_BOOTSTRAP[] =
    "DO $alma$ DECLARE s text := current_setting('alma.migrate_schema'); BEGIN "
    "IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = s) THEN "
    "EXECUTE format('CREATE SCHEMA %I', s); END IF; "
    "IF to_regclass(format('%I.schema_migrations', s)) IS NULL THEN "
    "EXECUTE format('CREATE TABLE %I.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
    "sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())', s); END IF; END $alma$";

typedef struct db_applied {
    int version;
    char sha256[DB_SHA256_HEX_LEN + 1];
} db_applied;

static bool db_valid_migration_name(const char *s)
{
    if (!s || !*s || strlen(s) > DB_MIGRATION_NAME_MAX)
        return false;
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    }
    return true;
}

static base_result db_validate_set(const db_migration_set *set)
{
    BASE_ENSURE(set, BASE_ERR_INVALID, "db_migrate: missing migration set");
    BASE_ENSURE(db__valid_identifier(set->schema), BASE_ERR_INVALID, "db_migrate: invalid schema name");
    BASE_ENSURE(set->count <= DB_MIGRATIONS_MAX, BASE_ERR_LIMIT, "db_migrate: too many migrations");
    BASE_ENSURE(set->count == 0 || set->migrations, BASE_ERR_INVALID, "db_migrate: missing migrations");
    int last = 0;
    for (size_t i = 0; i < set->count; i++) {
        const db_migration *m = &set->migrations[i];
        BASE_ENSURE(m->version > last, BASE_ERR_INVALID,
                    "db_migrate: versions must be positive and increasing");
        last = m->version;
        BASE_ENSURE(db_valid_migration_name(m->name), BASE_ERR_INVALID, "db_migrate: invalid migration name");
        BASE_ENSURE(m->sql && m->sql_len > 0 && m->sql_len < (size_t)INT32_MAX, BASE_ERR_INVALID,
                    "db_migrate: empty migration");
        BASE_ENSURE(memchr(m->sql, '\0', m->sql_len) == NULL && m->sql[m->sql_len] == '\0', BASE_ERR_INVALID,
                    "db_migrate: migration SQL must be NUL-terminated text without NUL bytes");
    }
    return BASE_OK_RESULT;
}

/* BEGIN a transaction whose unqualified names resolve in the schema (and pg_catalog). */
static base_result db_begin_in_schema(db_conn *c, const char *schema)
{
    const char *p[] = {schema};
    BASE_GUARD(db_exec(c, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL));
    return db_exec(c, "SELECT pg_catalog.set_config('search_path', pg_catalog.quote_ident($1), true)", 1, p,
                   NULL);
}

static base_result db_bootstrap(db_conn *c, const char *schema)
{
    const char *p[] = {schema};
    BASE_GUARD(db_exec(c, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL));
    BASE_GUARD(db_exec(c, "SELECT pg_catalog.set_config('alma.migrate_schema', $1, true)", 1, p, NULL));
    BASE_GUARD(db_exec(c, SQL_BOOTSTRAP, 0, NULL, NULL));
    return db_exec(c, "COMMIT", 0, NULL, NULL);
}

static base_result db_read_applied(db_conn *c, const char *schema, db_applied **ret_rows, int *ret_n)
{
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_begin_in_schema(c, schema));
    BASE_GUARD(db_exec(c, "SELECT version, sha256 FROM schema_migrations ORDER BY version", 0, NULL, &res));
    BASE_GUARD(db_exec(c, "COMMIT", 0, NULL, NULL));
    int n = db_result_ntuples(res);
    db_applied *rows = calloc(n > 0 ? (size_t)n : 1, sizeof *rows);
    if (!rows)
        return base_fail(BASE_ERR_NOMEM, "db_migrate: out of memory");
    for (int i = 0; i < n; i++) {
        int64_t v = 0;
        base_result r = db_result_get_int64(res, i, 0, &v);
        const char *sha = db_result_get(res, i, 1);
        if (!base_is_ok(r) || !sha || strlen(sha) != DB_SHA256_HEX_LEN) {
            free(rows);
            return base_fail(BASE_ERR_INTERNAL, "db_migrate: malformed schema_migrations row");
        }
        rows[i].version = (int)v;
        memcpy(rows[i].sha256, sha, DB_SHA256_HEX_LEN + 1);
    }
    *ret_rows = rows;
    *ret_n = n;
    return BASE_OK_RESULT;
}

/* SHA-256 of the migration text, hex, computed by the server's sha256() so that common/db needs no hashing
 * library of its own. Equal to `sha256sum NNNN_name.sql`. */
static base_result db_migration_sha256(db_conn *c, const db_migration *m, char out[DB_SHA256_HEX_LEN + 1])
{
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {m->sql};
    const int len[] = {(int)m->sql_len};
    const int fmt[] = {1};
    BASE_GUARD(db_exec_params(c, "SELECT pg_catalog.encode(pg_catalog.sha256($1::bytea), 'hex')", 1, p, len,
                              fmt, &res));
    const char *v = db_result_get(res, 0, 0);
    BASE_ENSURE(v && strlen(v) == DB_SHA256_HEX_LEN, BASE_ERR_INTERNAL,
                "db_migrate: bad checksum from server");
    memcpy(out, v, DB_SHA256_HEX_LEN + 1);
    return BASE_OK_RESULT;
}

static const db_applied *db_find_applied(const db_applied *rows, int n, int version)
{
    for (int i = 0; i < n; i++) {
        if (rows[i].version == version)
            return &rows[i];
    }
    return NULL;
}

static bool db_in_set(const db_migration_set *set, int version)
{
    for (size_t i = 0; i < set->count; i++) {
        if (set->migrations[i].version == version)
            return true;
    }
    return false;
}

static base_result db_apply_one(db_conn *c, const char *schema, const db_migration *m, const char *sha)
{
    char what[DB_MIGRATION_NAME_MAX + 32];
    snprintf(what, sizeof what, "migration %04d_%s", m->version, m->name);
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);

    BASE_GUARD(db_begin_in_schema(c, schema));
    /* Several statements in one string: the simple query protocol, inside our transaction. */
    PGresult *res = PQexec(c->pg, m->sql);
    base_result r = db__check(c, res, what);
    PQclear(res);
    BASE_GUARD(r);
    if (PQtransactionStatus(c->pg) != PQTRANS_INTRANS)
        return base_fail(BASE_ERR_INVALID, "%s: must not end the transaction (no BEGIN/COMMIT/ROLLBACK)",
                         what);
    const char *p[] = {version, m->name, sha};
    BASE_GUARD(db_exec(
        c, "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1::integer, $2, $3)", 3, p, NULL));
    return db_exec(c, "COMMIT", 0, NULL, NULL);
}

/* Called with the advisory lock held: nobody else migrates this schema meanwhile. */
static base_result db_migrate_locked(db_conn *c, const db_migration_set *set, int *ret_applied)
{
    BASE_GUARD(db_bootstrap(c, set->schema));
    db_applied *rows = NULL;
    int nrows = 0;
    BASE_GUARD(db_read_applied(c, set->schema, &rows, &nrows));

    base_result r = BASE_OK_RESULT;
    char(*sha)[DB_SHA256_HEX_LEN + 1] = calloc(set->count ? set->count : 1, sizeof *sha);
    if (!sha) {
        r = base_fail(BASE_ERR_NOMEM, "db_migrate: out of memory");
        goto out;
    }
    int max_version = set->count ? set->migrations[set->count - 1].version : 0;
    int max_applied = nrows ? rows[nrows - 1].version : 0;

    /* First check everything already applied, so a bad history applies nothing at all. */
    for (int i = 0; i < nrows; i++) {
        if (rows[i].version <= max_version && !db_in_set(set, rows[i].version)) {
            r = base_fail(BASE_ERR_CONFLICT, "db_migrate: applied migration %04d is missing from this binary",
                          rows[i].version);
            goto out;
        }
    }
    for (size_t i = 0; i < set->count; i++) {
        const db_migration *m = &set->migrations[i];
        BASE_GUARD_GOTO(r, db_migration_sha256(c, m, sha[i]), out);
        const db_applied *a = db_find_applied(rows, nrows, m->version);
        if (a && strcmp(a->sha256, sha[i]) != 0) {
            r = base_fail(BASE_ERR_CONFLICT,
                          "db_migrate: checksum mismatch for applied migration %04d_%s (an applied file must "
                          "never change: add a new migration)",
                          m->version, m->name);
            goto out;
        }
        if (!a && m->version < max_applied) {
            r = base_fail(BASE_ERR_CONFLICT,
                          "db_migrate: migration %04d_%s is older than applied version %04d", m->version,
                          m->name, max_applied);
            goto out;
        }
    }

    int applied = 0;
    for (size_t i = 0; i < set->count; i++) {
        const db_migration *m = &set->migrations[i];
        if (db_find_applied(rows, nrows, m->version))
            continue;
        BASE_GUARD_GOTO(r, db_apply_one(c, set->schema, m, sha[i]), out);
        applied++;
    }
    *ret_applied = applied;
out:
    free(sha);
    free(rows);
    return r;
}

base_result db_migrate(db_pool *pool, const db_migration_set *set, int *ret_applied)
{
    BASE_ENSURE(pool, BASE_ERR_INVALID, "db_migrate: missing pool");
    BASE_GUARD(db_validate_set(set));

    char key[DB_IDENTIFIER_MAX + 32];
    snprintf(key, sizeof key, "alma.migrate:%s", set->schema);
    const char *kp[] = {key};

    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(pool, pool->acquire_timeout_ms, &c));
    base_result r;
    bool locked = false;
    int applied = 0;
    /* Migrations (and waiting for another replica's) may take longer than any statement should. */
    BASE_GUARD_GOTO(
        r, db_exec(c, "SELECT pg_catalog.set_config('statement_timeout', '0', false)", 0, NULL, NULL), out);
    BASE_GUARD_GOTO(
        r, db_exec(c, "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended($1, 0))", 1, kp, NULL),
        out);
    locked = true;
    r = db_migrate_locked(c, set, &applied);
out:
    if (c->pg) {
        PGTransactionStatusType ts = PQtransactionStatus(c->pg);
        if ((ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) && !db__exec_quiet(c, "ROLLBACK", 0, NULL))
            c->broken = true;
    }
    /* Closing the connection also releases the session lock and the setting, should these fail. */
    if (locked &&
        !db__exec_quiet(c, "SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtextextended($1, 0))", 1, kp))
        c->broken = true;
    if (!db__exec_quiet(c, "RESET statement_timeout", 0, NULL))
        c->broken = true;
    db_conn_release(c);
    if (base_is_ok(r) && ret_applied)
        *ret_applied = applied;
    return r;
}

/* ---- Owner and runtime roles -------------------------------------------------------------------------- */

static const char SQL_CURRENT_USER[] = "SELECT current_user";
static const char SQL_GRANT_RUNTIME[] = "SELECT grant_runtime($1, $2)";

base_result db_migrate_as_owner(db_pool *runtime, const char *owner_conninfo, const char *schema,
                                const char *application_name, db_migrate_fn migrate)
{
    BASE_ENSURE(runtime && owner_conninfo && owner_conninfo[0] && schema && migrate, BASE_ERR_INVALID,
                "db: migrate as owner needs the runtime pool, the owner conninfo, a schema and migrations");
    char user[128] = "";
    {
        BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_pool_acquire(runtime, 5000, &c));
        BASE_GUARD(db_exec(c, SQL_CURRENT_USER, 0, NULL, &res));
        const char *u = db_result_get(res, 0, 0);
        BASE_ENSURE(u && strlen(u) < sizeof user, BASE_ERR_INTERNAL,
                    "db: cannot read the runtime role's name");
        snprintf(user, sizeof user, "%s", u);
    }
    db_pool_config cfg = db_pool_config_default(owner_conninfo, 1, 5000);
    cfg.search_path = schema;
    cfg.application_name = application_name;
    db_pool *owner = NULL;
    BASE_GUARD(db_pool_create_config(&cfg, &owner));
    base_result r = migrate(owner, schema);
    if (base_is_ok(r)) {
        db_conn *c = NULL;
        const char *p[] = {schema, user};
        r = db_pool_acquire(owner, 5000, &c);
        if (base_is_ok(r))
            r = db_exec(c, SQL_GRANT_RUNTIME, 2, p, NULL);
        db_conn_release(c);
    }
    db_pool_destroy(owner);
    return r;
}
