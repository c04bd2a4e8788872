#include "testdb.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

db_pool *testdb_pool(const char *conninfo, const char *schema, int size)
{
    db_pool_config cfg = db_pool_config_default(conninfo, size, 3000);
    cfg.search_path = schema;
    cfg.application_name = "alma-test";
    db_pool *p = NULL;
    base_result r = db_pool_create_config(&cfg, &p);
    if (!base_is_ok(r))
        fail_msg("test pool: %s", base_error_message());
    return p;
}

void testdb_drop_schema(db_pool *admin, const char *schema)
{
    db_conn *c = NULL;
    const char *p[] = {schema};
    if (!base_is_ok(db_pool_acquire(admin, 5000, &c)))
        return;
    /* Identifiers cannot be parameters: pass the name as a setting and quote it server-side. */
    if (base_is_ok(db_exec(c, "BEGIN", 0, NULL, NULL)) &&
        base_is_ok(db_exec(c, "SELECT set_config('alma.test_schema', $1, true)", 1, p, NULL)) &&
        base_is_ok(db_exec(c,
                           "DO $$ BEGIN EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', "
                           "current_setting('alma.test_schema')); END $$",
                           0, NULL, NULL)))
        (void)db_exec(c, "COMMIT", 0, NULL, NULL).err;
    db_conn_release(c);
}

/* sql (constant) in one transaction of admin, with alma.test_role (and alma.test_password) set. */
void testdb_with_role(db_pool *admin, const char *role, const char *password, const char *sql)
{
    db_conn *c = NULL;
    const char *p[] = {role, password ? password : ""};
    base_result r = db_pool_acquire(admin, 5000, &c);
    if (base_is_ok(r))
        r = db_exec(c, "BEGIN", 0, NULL, NULL);
    if (base_is_ok(r))
        r = db_exec(
            c, "SELECT set_config('alma.test_role', $1, true), set_config('alma.test_password', $2, true)", 2,
            p, NULL);
    if (base_is_ok(r))
        r = db_exec(c, sql, 0, NULL, NULL);
    if (base_is_ok(r))
        r = db_exec(c, "COMMIT", 0, NULL, NULL);
    db_conn_release(c);
    if (!base_is_ok(r))
        fail_msg("test role: %s", base_error_message());
}

void testdb_role_create(db_pool *admin, const char *role, const char *password, bool schema_owner)
{
    testdb_with_role(
        admin, role, password,
        "DO $$ BEGIN EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', "
        "current_setting('alma.test_role'), current_setting('alma.test_password')); END $$");
    if (schema_owner)
        testdb_with_role(admin, role, NULL,
                         "DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE postgres TO %I', "
                         "current_setting('alma.test_role')); END $$");
}

void testdb_role_drop(db_pool *admin, const char *role)
{
    testdb_with_role(admin, role, NULL,
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = current_setting('alma.test_role')");
    testdb_with_role(admin, role, NULL,
                     "DO $$ BEGIN EXECUTE format('DROP OWNED BY %I', current_setting('alma.test_role')); "
                     "EXECUTE format('DROP ROLE %I', current_setting('alma.test_role')); END $$");
}
