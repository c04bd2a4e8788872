/* Helpers for tests that use the harness Postgres through common/db. */
#ifndef ALMA_TESTDB_H
#define ALMA_TESTDB_H

#include "db/db.h"

/* DROP SCHEMA <schema> CASCADE if it exists, through a superuser pool; failures are ignored (cleanup). */
void testdb_drop_schema(db_pool *admin, const char *schema);

#endif
