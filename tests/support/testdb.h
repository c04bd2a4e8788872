/* Helpers for tests that use the harness Postgres through common/db. */
#ifndef ALMA_TESTDB_H
#define ALMA_TESTDB_H

#include "db/db.h"

/* DROP SCHEMA <schema> CASCADE if it exists, through a superuser pool; failures are ignored (cleanup). */
void testdb_drop_schema(db_pool *admin, const char *schema);

/* A pool of `size` connections to `conninfo` with search_path = schema (NULL: none); fails the running test
 * when the settings are refused. */
db_pool *testdb_pool(const char *conninfo, const char *schema, int size);

#endif
