/* Helpers for tests that use the harness Postgres through common/db. */
#ifndef ALMA_TESTDB_H
#define ALMA_TESTDB_H

#include "db/db.h"

#include <stdbool.h>

/* DROP SCHEMA <schema> CASCADE if it exists, through a superuser pool; failures are ignored (cleanup). */
void testdb_drop_schema(db_pool *admin, const char *schema);

/* A pool of `size` connections to `conninfo` with search_path = schema (NULL: none); fails the running test
 * when the settings are refused. */
db_pool *testdb_pool(const char *conninfo, const char *schema, int size);

/* A role for the duration of a test group, named by the test (identifiers cannot be parameters: the name
 * travels as a session setting and is quoted server-side). A LOGIN role without superuser rights and with
 * `password`; schema_owner: it may also CREATE in the database, to own and migrate a service schema (the
 * runtime role of a service may not). Fails the running test on error. */
void testdb_role_create(db_pool *admin, const char *role, const char *password, bool schema_owner);
/* End the role's sessions, drop what it owns, drop it. Fails the running test on error. */
void testdb_role_drop(db_pool *admin, const char *role);
/* One constant statement (e.g. ALTER ROLE, pg_terminate_backend) in one transaction of admin, with the role's
 * name as the setting alma.test_role and `password` (NULL: "") as alma.test_password, for format('%I') /
 * current_setting() server-side. Fails the running test on error. */
void testdb_with_role(db_pool *admin, const char *role, const char *password, const char *sql);

#endif
