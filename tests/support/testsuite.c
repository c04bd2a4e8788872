/* The suite around a service under test (testsuite.h). */
#include "testsuite.h"

#include "audit/v1/audit.pb-c.h"
#include "authz/authz.h"
#include "identity/v1/identity.pb-c.h"
#include "keys.h" /* services/identity/keys.c: the master key file and sealed signing keys */
#include "testdb.h"
#include "testenv.h"
#include "testrpc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define SUITE_DB_PASSWORD "suite-password-0123456789abcdef"
#define SUITE_ADMIN_USER  "suite.admin"
#define SUITE_ADMIN_PW    "Suite-Bootstrap-Passw0rd-42"
#define IDN(name)         "/alma.identity.v1.Identity/" name
#define TOKEN_TTL_S       300

#define OK(expr)                                                                                             \
    do {                                                                                                     \
        base_result ok_r_ = (expr);                                                                          \
        if (!base_is_ok(ok_r_))                                                                              \
            fail_msg("%s: %s", #expr, base_error_message());                                                 \
    } while (0)

const char *testsuite_binary(const char *rel)
{
    static char path[6][512];
    static int slot;
    int i = slot++ % 6;
    snprintf(path[i], sizeof path[i], "%s", testenv_binary_path(rel));
    return path[i];
}

bool testsuite_sanitizer_report(const char *log)
{
    return strstr(log, "Sanitizer") || strstr(log, "runtime error:");
}

/* One statement on one connection, after setting alma.suite_tag (the DO blocks read it). */
static void suite_exec(testsuite *ts, const char *sql)
{
    db_conn *c = NULL;
    OK(db_pool_acquire(ts->root, 5000, &c));
    const char *params[] = {ts->tag};
    base_result r = db_exec(c, "SELECT set_config('alma.suite_tag', $1, false)", 1, params, NULL);
    if (base_is_ok(r))
        r = db_exec(c, sql, 0, NULL, NULL);
    db_conn_release(c);
    OK(r);
}

static void role_names(const testsuite *ts, char *owner, char *app, size_t cap)
{
    snprintf(owner, cap, "alma_suite_%s_owner", ts->tag);
    snprintf(app, cap, "alma_suite_%s_app", ts->tag);
}

void testsuite_group_setup(testsuite *ts, const char *tag)
{
    memset(ts, 0, sizeof *ts);
    assert_true(strlen(tag) >= 1 && strlen(tag) <= 20 &&
                strspn(tag, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(tag));
    snprintf(ts->tag, sizeof ts->tag, "%s", tag);
    snprintf(ts->pg_uri, sizeof ts->pg_uri, "%s", testenv_pg_uri());
    db_pool_config cfg = db_pool_config_default(ts->pg_uri, 2, 3000);
    OK(db_pool_create_config(&cfg, &ts->root));
    char owner[64], app[64];
    role_names(ts, owner, app, sizeof owner);
    /* The role names come from the tag through a session setting and format('%I'): constant statements. */
    suite_exec(ts, "DO $$ DECLARE o text := 'alma_suite_' || current_setting('alma.suite_tag') || '_owner'; "
                   "a text := 'alma_suite_' || current_setting('alma.suite_tag') || '_app'; BEGIN "
                   "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = o) THEN "
                   "EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', o, '" SUITE_DB_PASSWORD "'); END IF; "
                   "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = a) THEN "
                   "EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', a, '" SUITE_DB_PASSWORD "'); END IF; "
                   "EXECUTE format('GRANT CREATE, TEMPORARY ON DATABASE postgres TO %I', o); END $$");
    const char *at = strchr(ts->pg_uri, '@');
    assert_non_null(at);
    snprintf(ts->owner_uri, sizeof ts->owner_uri, "postgresql://%s:%s%s", owner, SUITE_DB_PASSWORD, at);
    snprintf(ts->app_uri, sizeof ts->app_uri, "postgresql://%s:%s%s", app, SUITE_DB_PASSWORD, at);
    snprintf(ts->redis_addr, sizeof ts->redis_addr, "%s:%d", testenv_redis_host(), testenv_redis_port());
}

void testsuite_group_teardown(testsuite *ts)
{
    suite_exec(ts, "DO $$ DECLARE o text := 'alma_suite_' || current_setting('alma.suite_tag') || '_owner'; "
                   "a text := 'alma_suite_' || current_setting('alma.suite_tag') || '_app'; BEGIN "
                   "EXECUTE format('DROP OWNED BY %I, %I CASCADE', o, a); "
                   "EXECUTE format('DROP ROLE IF EXISTS %I, %I', o, a); END $$");
    db_pool_destroy(ts->root);
    ts->root = NULL;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_keys(testsuite *ts)
{
    uint8_t key[32];
    OK(acrypto_random(key, sizeof key));
    char b64[64];
    size_t n = 0;
    OK(acrypto_base64_encode(key, sizeof key, b64, sizeof b64, &n));
    b64[n++] = '\n';
    snprintf(ts->master_path, sizeof ts->master_path, "%s", testproc_work_path("suite-identity-master.key"));
    write_file(ts->master_path, b64, n);
    acrypto_ed25519_key *k = NULL;
    OK(acrypto_ed25519_generate(&k));
    acrypto_secret *pem = NULL;
    OK(acrypto_ed25519_private_to_pem(k, &pem));
    snprintf(ts->audit_key_path, sizeof ts->audit_key_path, "%s", testproc_work_path("suite-audit-key.pem"));
    write_file(ts->audit_key_path, acrypto_secret_bytes(pem), acrypto_secret_len(pem));
    acrypto_secret_free(pem);
    acrypto_ed25519_free(k);
}

void testsuite_audit_start(testsuite *ts)
{
    char env_pg[600], env_owner[600], env_schema[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", ts->app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", ts->owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", ts->aud_schema);
    snprintf(env_key, sizeof env_key, "ALMA_SIGNING_KEY=%s", ts->audit_key_path);
    const char *env[] = {env_pg, env_owner, env_schema, env_key, NULL};
    /* The same port after a restart, so the service under test finds it again. */
    char api[64];
    const char *args[] = {"--origin", "alma.test/suite", "--checkpoint-interval-ms", "200", NULL, NULL, NULL};
    if (ts->audit.api) {
        snprintf(api, sizeof api, "127.0.0.1:%d", ts->audit.api);
        args[4] = "--api-addr";
        args[5] = api;
    }
    testproc_daemon_init(&ts->audit, testsuite_binary("services/audit/alma-audit"), "audit", args, env);
    testproc_daemon_start(&ts->audit);
}

void testsuite_audit_stop(testsuite *ts)
{
    int api = ts->audit.api;
    int code = testproc_daemon_stop(&ts->audit);
    assert_int_equal(code, 0);
    ts->audit.api = api; /* remembered for the restart */
}

static void bootstrap(testsuite *ts)
{
    char pw_path[TESTPROC_PATH_MAX];
    snprintf(pw_path, sizeof pw_path, "%s", testproc_work_path("suite-admin-password"));
    write_file(pw_path, SUITE_ADMIN_PW "\n", strlen(SUITE_ADMIN_PW) + 1);
    char env_pg[600], env_schema[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", ts->owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", ts->idn_schema);
    snprintf(env_key, sizeof env_key, "ALMA_MASTER_KEY_FILE=%s", ts->master_path);
    const char *env[] = {env_pg, env_schema, env_key, NULL};
    const char *argv[] = {testsuite_binary("tools/alma-admin"),
                          "bootstrap",
                          "--tenant",
                          ts->tenant,
                          "--username",
                          SUITE_ADMIN_USER,
                          "--password-file",
                          pw_path,
                          "--argon2-m-kib",
                          "1024",
                          "--argon2-t",
                          "1",
                          NULL};
    char *out = NULL, *err = NULL;
    int code = testproc_run(argv, env, &out, &err);
    if (code != 0 || testsuite_sanitizer_report(err))
        fail_msg("alma-admin bootstrap exited %d: %s", code, err);
    const char *a = strstr(out, "administrator:");
    assert_non_null(a);
    const char *open = strchr(a, '(');
    assert_non_null(open);
    size_t n = strcspn(open + 1, ")");
    assert_int_equal(n, 36);
    memcpy(ts->admin_id, open + 1, n);
    ts->admin_id[n] = '\0';
    free(out);
    free(err);
}

static void start_identity(testsuite *ts)
{
    char env_pg[600], env_owner[600], env_schema[100], env_redis[100], env_audit[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", ts->app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", ts->owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", ts->idn_schema);
    snprintf(env_redis, sizeof env_redis, "ALMA_REDIS_ADDR=%s", ts->redis_addr);
    snprintf(env_audit, sizeof env_audit, "ALMA_AUDIT_ADDR=%s", ts->audit.api_addr);
    snprintf(env_key, sizeof env_key, "ALMA_MASTER_KEY_FILE=%s", ts->master_path);
    const char *env[] = {env_pg, env_owner, env_schema, env_redis, env_audit, env_key, NULL};
    const char *args[] = {"--argon2-m-kib", "1024", "--argon2-t", "1", NULL};
    testproc_daemon_init(&ts->identity, testsuite_binary("services/identity/alma-identity"), "identity", args,
                         env);
    testproc_daemon_start(&ts->identity);
}

/* identity's current signing key, unsealed the way identity does (keys.c). */
static void load_signing_key(testsuite *ts)
{
    db_conn *c = NULL;
    OK(db_pool_acquire(ts->idn_db, 5000, &c));
    db_result *res = NULL;
    base_result r =
        db_exec(c, "SELECT kid, sealed_private FROM signing_keys WHERE state = 'current'", 0, NULL, &res);
    db_conn_release(c);
    OK(r);
    assert_int_equal(db_result_ntuples(res), 1);
    snprintf(ts->kid, sizeof ts->kid, "%s", db_result_get(res, 0, 0));
    unsigned char *sealed = NULL;
    size_t sealed_len = 0;
    OK(db_result_get_bytea(res, 0, 1, &sealed, &sealed_len));
    db_result_free(res);
    acrypto_secret *master = NULL, *seal = NULL;
    OK(idn_master_key_load(ts->master_path, &master));
    OK(idn_derive_key(master, IDN_SIGNING_SEAL_INFO, &seal));
    acrypto_secret_free(master);
    OK(idn_signing_key_open(seal, ts->kid, sealed, sealed_len, &ts->sign));
    acrypto_secret_free(seal);
    free(sealed);
}

void testsuite_start(testsuite *ts)
{
    int n = ts->counter++;
    snprintf(ts->tenant, sizeof ts->tenant, "%s-%d-%d", "clinic", n, (int)getpid() % 100000);
    snprintf(ts->aud_schema, sizeof ts->aud_schema, "%s_aud_%d_%d", ts->tag, (int)getpid(), n);
    snprintf(ts->idn_schema, sizeof ts->idn_schema, "%s_idn_%d_%d", ts->tag, (int)getpid(), n);
    memset(&ts->audit, 0, sizeof ts->audit);
    write_keys(ts);
    testsuite_audit_start(ts);
    bootstrap(ts);
    start_identity(ts);
    rpc_client_tls tls = testrpc_client_tls("test-client");
    OK(rpc_channel_open(ts->identity.api_addr, &tls, &ts->idn));
    ts->idn_db = testdb_pool(ts->pg_uri, ts->idn_schema, 2);
    load_signing_key(ts);
}

static bool stop_clean(testproc_daemon *d, const char *what)
{
    if (!d->pid)
        return true;
    int code = testproc_daemon_stop(d);
    char *log = testproc_daemon_log(d);
    bool ok = code == 0 && !testsuite_sanitizer_report(log);
    if (!ok) {
        size_t len = strlen(log);
        fprintf(stderr, "%s exited %d; the end of its log:\n%s\n", what, code,
                log + (len > 6000 ? len - 6000 : 0));
    }
    free(log);
    return ok;
}

bool testsuite_stop(testsuite *ts)
{
    rpc_channel_close(ts->idn);
    ts->idn = NULL;
    bool ok = stop_clean(&ts->identity, "alma-identity");
    ok = stop_clean(&ts->audit, "alma-audit") && ok;
    db_pool_destroy(ts->idn_db);
    ts->idn_db = NULL;
    acrypto_ed25519_free(ts->sign);
    ts->sign = NULL;
    testdb_drop_schema(ts->root, ts->idn_schema);
    testdb_drop_schema(ts->root, ts->aud_schema);
    return ok;
}

/* ---- tokens ---------------------------------------------------------------------------------------- */

static void random_hex_id(const char *prefix, char *out, size_t cap)
{
    uint8_t b[16];
    OK(acrypto_random(b, sizeof b));
    size_t n = strlen(prefix), len = 0;
    snprintf(out, cap, "%s", prefix);
    OK(acrypto_hex_encode(b, sizeof b, out + n, cap - n, &len));
}

void testsuite_token(testsuite *ts, const char *tenant, const char *principal, const char *const *roles,
                     char *bearer)
{
    authz_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, "%s", AUTHZ_DEFAULT_ISSUER);
    snprintf(c.aud, sizeof c.aud, "%s", AUTHZ_DEFAULT_AUDIENCE);
    snprintf(c.sub, sizeof c.sub, "%s", principal);
    snprintf(c.tid, sizeof c.tid, "%s", tenant ? tenant : ts->tenant);
    random_hex_id("ses_", c.sid, sizeof c.sid);
    random_hex_id("tok_", c.jti, sizeof c.jti);
    c.iat = c.nbf = (int64_t)time(NULL);
    c.exp = c.iat + TOKEN_TTL_S;
    c.mfa = true;
    db_conn *conn = NULL;
    OK(db_pool_acquire(ts->idn_db, 5000, &conn));
    for (size_t i = 0; roles && roles[i]; i++) {
        snprintf(c.roles[c.role_count++], AUTHZ_MAX_NAME_LEN + 1, "%s", roles[i]);
        const char *params[] = {roles[i]};
        db_result *res = NULL;
        base_result r =
            db_exec(conn,
                    "SELECT permission FROM role_permissions WHERE tenant_id = '' AND role_id = $1 "
                    "ORDER BY permission",
                    1, params, &res);
        if (!base_is_ok(r)) {
            db_conn_release(conn);
            OK(r);
        }
        assert_true(db_result_ntuples(res) > 0); /* a built-in role */
        for (int row = 0; row < db_result_ntuples(res) && c.perm_count < AUTHZ_MAX_PERMS - 1; row++) {
            const char *p = db_result_get(res, row, 0);
            bool seen = false;
            for (size_t k = 0; k < c.perm_count && !seen; k++)
                seen = strcmp(c.perm[k], p) == 0;
            if (!seen)
                snprintf(c.perm[c.perm_count++], AUTHZ_MAX_NAME_LEN + 1, "%s", p);
        }
        db_result_free(res);
    }
    db_conn_release(conn);
    snprintf(c.perm[c.perm_count++], AUTHZ_MAX_NAME_LEN + 1, "%s", AUTHZ_PERM_MFA_ENROLL);
    char *jwt = NULL;
    OK(authz_token_sign(&c, ts->sign, ts->kid, &jwt));
    snprintf(bearer, TESTSUITE_BEARER_MAX, "Bearer %s", jwt);
    free(jwt);
}

/* ---- identity calls -------------------------------------------------------------------------------- */

static ProtobufCMessage *icall_ok(testsuite *ts, const char *method, const ProtobufCMessage *req,
                                  const ProtobufCMessageDescriptor *desc, const char *bearer)
{
    rpc_call_opts o = {.timeout_ms = 20000, .authorization = bearer};
    rpc_status st;
    ProtobufCMessage *resp = NULL;
    rpc_code code = rpc_call_unary(ts->idn, method, req, desc, &o, &resp, &st);
    if (code != RPC_OK)
        fail_msg("%s: %s %s", method, rpc_code_name(code), st.message);
    return resp;
}

void testsuite_user(testsuite *ts, const char *username, const char *role, char principal[64])
{
    char bearer[TESTSUITE_BEARER_MAX];
    testsuite_token(ts, NULL, ts->admin_id, (const char *const[]){"security_admin", NULL}, bearer);
    Alma__Identity__V1__CreateUserRequest req = ALMA__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = (char *)username;
    req.display_name = (char *)username;
    req.initial_password = TESTSUITE_PASSWORD;
    char *roles[] = {(char *)role};
    req.roles = roles;
    req.n_roles = 1;
    ProtobufCMessage *resp =
        icall_ok(ts, IDN("CreateUser"), &req.base, &alma__identity__v1__user__descriptor, bearer);
    snprintf(principal, 64, "%s", ((Alma__Identity__V1__User *)resp)->principal_id);
    protobuf_c_message_free_unpacked(resp, NULL);
}

void testsuite_login(testsuite *ts, const char *username, const char *password, char *bearer)
{
    Alma__Identity__V1__LoginRequest req = ALMA__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.tenant_id = ts->tenant;
    req.username = (char *)username;
    req.password = (char *)password;
    ProtobufCMessage *resp =
        icall_ok(ts, IDN("Login"), &req.base, &alma__identity__v1__login_response__descriptor, NULL);
    snprintf(bearer, TESTSUITE_BEARER_MAX, "Bearer %s",
             ((Alma__Identity__V1__LoginResponse *)resp)->access_token);
    protobuf_c_message_free_unpacked(resp, NULL);
}

void testsuite_relationship(testsuite *ts, const char *clinician, const char *patient_ref, char rel_id[64])
{
    char bearer[TESTSUITE_BEARER_MAX];
    testsuite_token(ts, NULL, ts->admin_id, (const char *const[]){"care_coordinator", NULL}, bearer);
    Alma__Identity__V1__CareRelationship rel = ALMA__IDENTITY__V1__CARE_RELATIONSHIP__INIT;
    rel.clinician_id = (char *)clinician;
    rel.patient_ref = (char *)patient_ref;
    rel.kind = ALMA__IDENTITY__V1__RELATIONSHIP_KIND__RELATIONSHIP_KIND_PRIMARY_CARE;
    Alma__Identity__V1__CreateCareRelationshipRequest req =
        ALMA__IDENTITY__V1__CREATE_CARE_RELATIONSHIP_REQUEST__INIT;
    req.relationship = &rel;
    ProtobufCMessage *resp = icall_ok(ts, IDN("CreateCareRelationship"), &req.base,
                                      &alma__identity__v1__care_relationship__descriptor, bearer);
    if (rel_id)
        snprintf(rel_id, 64, "%s", ((Alma__Identity__V1__CareRelationship *)resp)->relationship_id);
    protobuf_c_message_free_unpacked(resp, NULL);
}

void testsuite_end_relationship(testsuite *ts, const char *rel_id)
{
    char bearer[TESTSUITE_BEARER_MAX];
    testsuite_token(ts, NULL, ts->admin_id, (const char *const[]){"care_coordinator", NULL}, bearer);
    Alma__Identity__V1__EndCareRelationshipRequest req =
        ALMA__IDENTITY__V1__END_CARE_RELATIONSHIP_REQUEST__INIT;
    req.relationship_id = (char *)rel_id;
    ProtobufCMessage *resp = icall_ok(ts, IDN("EndCareRelationship"), &req.base,
                                      &alma__identity__v1__care_relationship__descriptor, bearer);
    protobuf_c_message_free_unpacked(resp, NULL);
}

void testsuite_break_glass(testsuite *ts, const char *bearer, const char *patient_ref)
{
    Alma__Identity__V1__BreakGlassRequest req = ALMA__IDENTITY__V1__BREAK_GLASS_REQUEST__INIT;
    req.patient_ref = (char *)patient_ref;
    req.reason = "Synthetic test: unconscious patient, treating clinician unreachable";
    req.duration_minutes = 30;
    ProtobufCMessage *resp = icall_ok(ts, IDN("BreakGlass"), &req.base,
                                      &alma__identity__v1__break_glass_grant__descriptor, bearer);
    protobuf_c_message_free_unpacked(resp, NULL);
}

int testsuite_audit_count(testsuite *ts, int action, const char *patient_ref)
{
    db_pool *p = testdb_pool(ts->pg_uri, ts->aud_schema, 1);
    db_conn *c = NULL;
    OK(db_pool_acquire(p, 5000, &c));
    char act[16];
    snprintf(act, sizeof act, "%d", action);
    const char *params[] = {ts->tenant, act, patient_ref};
    db_result *res = NULL;
    base_result r = db_exec(c,
                            "SELECT count(*) FROM events WHERE tenant_id = $1 AND action = $2::smallint "
                            "AND ($3::text IS NULL OR patient_ref = $3)",
                            3, params, &res);
    db_conn_release(c);
    OK(r);
    int64_t n = 0;
    OK(db_result_get_int64(res, 0, 0, &n));
    db_result_free(res);
    db_pool_destroy(p);
    return (int)n;
}

void testsuite_token_file(testsuite *ts, const char *principal, const char *role, const char *name,
                          char path[TESTPROC_PATH_MAX])
{
    char *bearer = malloc(TESTSUITE_BEARER_MAX);
    assert_non_null(bearer);
    testsuite_token(ts, NULL, principal, (const char *const[]){role, NULL}, bearer);
    assert_true(strncmp(bearer, "Bearer ", 7) == 0);
    size_t n = strlen(bearer + 7);
    bearer[7 + n] = '\n';
    snprintf(path, TESTPROC_PATH_MAX, "%s", testproc_work_path(name));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(bearer + 7, 1, n + 1, f), n + 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0600), 0);
    explicit_bzero(bearer, TESTSUITE_BEARER_MAX);
    free(bearer);
}

#define DAEMON_EXTRA_ENV 8

void testsuite_daemon_start(testsuite *ts, testproc_daemon *d, const char *binary, const char *name,
                            const char *schema, int workers, const char *const *extra_env)
{
    char env_pg[600], env_owner[600], env_schema[100], env_redis[100], env_audit[100], env_idn[100];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", ts->app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", ts->owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", schema);
    snprintf(env_redis, sizeof env_redis, "ALMA_REDIS_ADDR=%s", ts->redis_addr);
    snprintf(env_audit, sizeof env_audit, "ALMA_AUDIT_ADDR=%s", ts->audit.api_addr);
    snprintf(env_idn, sizeof env_idn, "ALMA_IDENTITY_ADDR=%s", ts->identity.api_addr);
    const char *env[6 + DAEMON_EXTRA_ENV + 1] = {env_pg,    env_owner, env_schema,
                                                 env_redis, env_audit, env_idn};
    size_t n = 6;
    for (size_t i = 0; extra_env && extra_env[i]; i++) {
        assert_true(i < DAEMON_EXTRA_ENV);
        env[n++] = extra_env[i];
    }
    env[n] = NULL;
    char api[64], nworkers[16];
    snprintf(nworkers, sizeof nworkers, "%d", workers);
    const char *args[] = {"--workers", nworkers, NULL, NULL, NULL};
    if (d->api) { /* a restart keeps its port */
        snprintf(api, sizeof api, "127.0.0.1:%d", d->api);
        args[2] = "--api-addr";
        args[3] = api;
    }
    testproc_daemon_init(d, testsuite_binary(binary), name, args, env);
    testproc_daemon_start(d);
}

bool testsuite_daemon_stop(testproc_daemon *d, const char *name)
{
    if (!d->pid)
        return true;
    bool ok = true;
    int code = testproc_daemon_stop(d);
    char *log = testproc_daemon_log(d);
    if (code != 0 || testsuite_sanitizer_report(log)) {
        size_t len = strlen(log);
        fprintf(stderr, "%s exited %d; the end of its log:\n%s\n", name, code,
                log + (len > 6000 ? len - 6000 : 0));
        ok = false;
    }
    free(log);
    return ok;
}
