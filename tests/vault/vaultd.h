/* A real alma-vault inside the suite (tests/support/testsuite.h), for the vault's end-to-end tests
 * (test_vault_daemon.c, test_cli.c): its own schema, a fresh master key file (mode 600) and certificate key,
 * the suite's audit, identity, PostgreSQL and Redis. */
#ifndef ALMA_TEST_VAULTD_H
#define ALMA_TEST_VAULTD_H

#include "db/db.h"
#include "testproc.h"
#include "testsuite.h"

#include <stdbool.h>

typedef struct vaultd {
    testproc_daemon d;
    char schema[64];
    char master_path[TESTPROC_PATH_MAX], cert_key_path[TESTPROC_PATH_MAX];
    char vkey_pem[512]; /* the certificate key's public half, PEM */
    db_pool *db;        /* superuser, search_path = the vault's schema */
} vaultd;

/* Keys, schema name (tag + pid + the suite's counter) and the daemon, started; aborts the test on failure. */
void vaultd_start(vaultd *v, testsuite *ts, const char *tag);
/* Stop and start again on the same port (records must survive). */
void vaultd_restart(vaultd *v, testsuite *ts);
/* Stop, drop the schema. False when the vault exited uncleanly or its log holds a sanitizer report. */
bool vaultd_stop(vaultd *v, testsuite *ts);

#endif
