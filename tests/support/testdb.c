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
