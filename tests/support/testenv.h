/* Where the test harness put the real parts a test uses. Every function aborts the test (with a clear
 * message) when the harness did not run, rather than letting a test pass without its dependency. */
#ifndef ALMA_TESTENV_H
#define ALMA_TESTENV_H

/* libpq connection URI of the harness Postgres (superuser), e.g.
 * postgresql://postgres@127.0.0.1:PORT/postgres */
const char *testenv_pg_uri(void);
/* "127.0.0.1" and the port of the harness Redis. */
const char *testenv_redis_host(void);
int testenv_redis_port(void);
/* Path of a file in the dev PKI directory (ca.pem, <name>.pem, <name>-key.pem, rogue-ca.pem, ...). */
const char *testenv_pki(const char *file);
/* Path below the source tree / the build tree. Returned pointers are static per call site buffer: copy. */
const char *testenv_source_path(const char *rel);
const char *testenv_binary_path(const char *rel);
/* A loopback TCP port nothing listens on (an ephemeral port bound, then closed): for "dependency down"
 * tests. Aborts if it cannot get one. */
int testenv_closed_port(void);
/* Read a whole small file (test data, certificates) into a malloc'd NUL-terminated buffer; aborts on error.
 */
char *testenv_read_file(const char *path);

#endif
