/* The suite around a service under test: a real alma-audit and a real alma-identity (started as child
 * processes against the harness PostgreSQL and Redis), one tenant bootstrapped by tools/alma-admin, and
 * helpers that make real users, care relationships and break-glass grants through identity's API.
 *
 * Tokens: testsuite_token() signs an access token with identity's own current signing key (unsealed from
 * identity's database with the master key this fixture wrote), carrying the permissions identity's role
 * tables give the roles, exactly as Login would issue it, without the argon2id and TOTP round trips for
 * every user of every scenario. The service under test verifies it against identity's GetVerificationKeys
 * and the revocation feed like any other token. testsuite_login() is the real Login, for a test that wants
 * to show the whole path once.
 *
 * Use from a cmocka setup after testproc_setup(); everything is per test (schemas named after tag + pid +
 * a counter). Database roles: one owner and one runtime role per tag, made by testsuite_group_setup(),
 * shared by the schemas of audit, identity and the service under test (owner_uri / app_uri). */
#ifndef ALMA_TESTSUITE_H
#define ALMA_TESTSUITE_H

#include "crypto/crypto.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "testproc.h"

#include <stdbool.h>

#define TESTSUITE_BEARER_MAX 8200

typedef struct testsuite {
    char tag[24];
    char tenant[64];
    char aud_schema[64], idn_schema[64];
    char owner_uri[512], app_uri[512], pg_uri[512];
    char master_path[TESTPROC_PATH_MAX], audit_key_path[TESTPROC_PATH_MAX];
    char redis_addr[64];
    testproc_daemon audit, identity;
    rpc_channel *idn;          /* to identity, as test-client */
    db_pool *root;             /* superuser */
    db_pool *idn_db;           /* superuser, search_path = identity's schema */
    char admin_id[64];         /* the bootstrap administrator (platform_admin, security_admin) */
    acrypto_ed25519_key *sign; /* identity's current token signing key */
    char kid[16];
    int counter;
} testsuite;

/* Once per test group: the owner and runtime database roles for this tag ([a-z0-9_], at most 20). */
void testsuite_group_setup(testsuite *ts, const char *tag);
void testsuite_group_teardown(testsuite *ts);
/* Per test: schemas, keys, audit, bootstrap, identity; aborts the test on any failure. */
void testsuite_start(testsuite *ts);
/* Per test: stop both daemons, drop their schemas. False when a daemon exited uncleanly or its log holds a
 * sanitizer report (the test should then fail). */
bool testsuite_stop(testsuite *ts);
/* Stop / start the audit service alone (the "audit down" scenarios). */
void testsuite_audit_stop(testsuite *ts);
void testsuite_audit_start(testsuite *ts);

/* A new user of the tenant with one role, made through identity's CreateUser; *principal "usr_...". */
void testsuite_user(testsuite *ts, const char *username, const char *role, char principal[64]);
/* "Bearer <jwt>" for principal with these roles (NULL-terminated) in tenant (NULL: ts->tenant), valid for
 * five minutes. bearer must hold TESTSUITE_BEARER_MAX bytes. */
void testsuite_token(testsuite *ts, const char *tenant, const char *principal, const char *const *roles,
                     char *bearer);
/* The real thing: Login (password only; for roles without MFA). */
void testsuite_login(testsuite *ts, const char *username, const char *password, char *bearer);
/* A treating relationship of clinician with patient_ref (identity CreateCareRelationship, as a care
 * coordinator); *rel_id "rel_...". */
void testsuite_relationship(testsuite *ts, const char *clinician, const char *patient_ref, char rel_id[64]);
void testsuite_end_relationship(testsuite *ts, const char *rel_id);
/* A break-glass grant of `bearer`'s principal for patient_ref (identity BreakGlass). */
void testsuite_break_glass(testsuite *ts, const char *bearer, const char *patient_ref);
/* Events in the audit log (superuser SQL on its schema) matching action (audit.proto number) and
 * patient_ref (NULL: any). */
int testsuite_audit_count(testsuite *ts, int action, const char *patient_ref);
/* A --token-file file for principal with one role (testsuite_token, tenant ts->tenant): the token alone on
 * one line, in the work directory under `name`, mode 600; its path in *path. */
void testsuite_token_file(testsuite *ts, const char *principal, const char *role, const char *name,
                          char path[TESTPROC_PATH_MAX]);
/* Start a service of the suite: `binary` below the build tree, TLS identity `name`, the suite's PostgreSQL
 * (ALMA_PG_URI as the app role, ALMA_PG_OWNER_URI, ALMA_PG_SCHEMA=schema), Redis, audit and identity, plus
 * extra_env ("K=V", NULL-terminated, at most 8, may be NULL) and --workers workers. When d->api is set (a
 * stopped daemon), it restarts on that port. */
void testsuite_daemon_start(testsuite *ts, testproc_daemon *d, const char *binary, const char *name,
                            const char *schema, int workers, const char *const *extra_env);
/* Stop it; false, with the end of its log on stderr, when it exited uncleanly or its log holds a sanitizer
 * report. A daemon never started (pid 0) is fine. */
bool testsuite_daemon_stop(testproc_daemon *d, const char *name);
/* A path to a binary below the build tree (a few rotating static buffers). */
const char *testsuite_binary(const char *rel);
/* Whether a log holds a sanitizer report. */
bool testsuite_sanitizer_report(const char *log);

#define TESTSUITE_PASSWORD "Suite-User-Passw0rd-2024!"

#endif
