/* The real alma-identity binary end to end, over mTLS, next to a real alma-audit, the harness PostgreSQL and
 * Redis: the bootstrap administrator's login with TOTP and recovery codes, MFA enrolment, tenant isolation,
 * lockout, session timeouts, logout and revocation (seen by a second "service": an authorizer in this
 * process, fed by the same Redis), roles and their audit trail, care relationships and break-glass, the
 * audit log being down, bad input, signing-key rotation by tools/alma-admin rotate-signing-key while identity
 * runs, and partner clients.
 *
 * Each test gets a fresh schema for audit and one for identity, both run as a runtime role that the owner
 * role (which migrates) grants its rights, as in production; the first tenant and its platform administrator
 * are made by tools/alma-admin bootstrap, whose otpauth:// URI and recovery codes the test reads. Redis is
 * shared by every test (sessions, throttling, revocations, mirrors), so every test uses its own tenant id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "audit/v1/audit.pb-c.h"
#include "authz/authz.h"
#include "cache/cache.h"
#include "credentials.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "identity/v1/identity.pb-c.h"
#include "rpc/rpc.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"
#include "testrpc.h"
#include "testproc.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define IDN(name)      "/alma.identity.v1.Identity/" name
#define AUD(name)      "/alma.audit.v1.Audit/" name
#define ORIGIN         "alma.test/identity-daemon"
#define DB_PASSWORD    "test-password-0123456789abcdef"
#define OWNER_ROLE     "alma_test_idd_owner"
#define APP_ROLE       "alma_test_idd_app"
#define ADMIN_USER     "root.admin"
#define ADMIN_PASSWORD "Bootstrap-Admin-Passw0rd-42"
#define USER_PASSWORD  "Clinician-Passw0rd-2024!"
#define WRONG_PASSWORD "Not-The-Passw0rd-At-All!"
#define PT_1           "pt_11111111111111111111111111111111"
#define PT_2           "pt_22222222222222222222222222222222"
#define PT_3           "pt_33333333333333333333333333333333"
#define PT_4           "pt_44444444444444444444444444444444"
#define BG_REASON      "Unconscious patient in the ED; no treating clinician reachable"
#define BAD_CREDS      "invalid credentials"
#define REVOKE_MAX_MS  1000 /* the README's promise: revocation everywhere within one second */
#define REVOKE_GIVE_UP 1500
#define POLL_MS        50

/* ---- Group state ---------------------------------------------------------------------------------- */

static char g_pg_uri[512], g_owner_uri[512], g_app_uri[512];
static db_pool *g_root;
static int g_ntest;

/* ---- Per test ------------------------------------------------------------------------------------- */

static char g_tenant[64];
static char g_aud_schema[64], g_idn_schema[64];
static char g_master_path[TESTPROC_PATH_MAX], g_audit_key_path[TESTPROC_PATH_MAX];
static testproc_daemon g_audit, g_idn;
static char g_idn_addr[64];
static rpc_channel *g_ch; /* to identity, as test-client */
static db_pool *g_idn_db; /* superuser, search_path = the identity schema */
static authz *g_az;       /* "another service": its own authorizer over the same Redis */
static cache_config g_cache;

typedef struct totp_user {
    char secret_b32[128];
    int64_t last_step; /* the last step this test used (the service refuses a step twice) */
} totp_user;

static char g_admin_id[64];
static totp_user g_admin_totp;
static char g_recovery[CRED_RECOVERY_COUNT][32];
static int g_next_recovery;

/* A session as the client holds it. */
typedef struct sess {
    char bearer[AUTHZ_MAX_TOKEN_LEN + 16]; /* "Bearer <jwt>" */
    char sid[64];
    char secret[96];
    int64_t exp;     /* access token */
    int64_t abs_end; /* session */
    bool enrol;
} sess;

static const char *jwt_of(const sess *s)
{
    return s->bearer + 7;
}

/* ---- Database ------------------------------------------------------------------------------------- */

static void root_exec(const char *sql)
{
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_root, 5000, &c));
    MUST(db_exec(c, sql, 0, NULL, NULL));
    db_conn_release(c);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_pg_uri, sizeof g_pg_uri, "%s", testenv_pg_uri());
    db_pool_config cfg = db_pool_config_default(g_pg_uri, 2, 3000);
    if (!base_is_ok(db_pool_create_config(&cfg, &g_root)))
        return -1;
    /* The harness Postgres belongs to this build tree alone, so fixed role names cannot collide (and these
     * are not the audit test's, so the two tests may run at once). */
    root_exec("DO $$ BEGIN "
              "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" OWNER_ROLE "') THEN "
              "CREATE ROLE " OWNER_ROLE " LOGIN PASSWORD '" DB_PASSWORD "'; END IF; "
              "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" APP_ROLE "') THEN "
              "CREATE ROLE " APP_ROLE " LOGIN PASSWORD '" DB_PASSWORD "'; END IF; END $$");
    root_exec("GRANT CREATE ON DATABASE postgres TO " OWNER_ROLE);
    const char *at = strchr(g_pg_uri, '@');
    assert_non_null(at);
    snprintf(g_owner_uri, sizeof g_owner_uri, "postgresql://%s:%s%s", OWNER_ROLE, DB_PASSWORD, at);
    snprintf(g_app_uri, sizeof g_app_uri, "postgresql://%s:%s%s", APP_ROLE, DB_PASSWORD, at);

    /* Failed logins of this run are counted per source ("test-client") for 15 minutes in Redis; a re-run
     * against a Redis that is still up must not start half way to the source limit. */
    g_cache = (cache_config){.host = testenv_redis_host(), .port = testenv_redis_port()};
    uint8_t digest[32];
    char hex[65], key[96];
    size_t n = 0;
    MUST(acrypto_sha256("test-client", strlen("test-client"), digest));
    MUST(acrypto_hex_encode(digest, sizeof digest, hex, sizeof hex, &n));
    snprintf(key, sizeof key, "idn:thr:s:%s", hex);
    cache_conn *conn = cache_thread_conn(&g_cache);
    assert_non_null(conn);
    bool deleted = false;
    MUST(cache_del(conn, key, &deleted));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    root_exec("DROP OWNED BY " OWNER_ROLE ", " APP_ROLE " CASCADE");
    root_exec("DROP ROLE IF EXISTS " OWNER_ROLE ", " APP_ROLE);
    db_pool_destroy(g_root);
    cache_thread_conn_release();
    return 0;
}

/* ---- Files ---------------------------------------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_master_key(void)
{
    uint8_t key[32];
    MUST(acrypto_random(key, sizeof key));
    char b64[64];
    size_t n = 0;
    MUST(acrypto_base64_encode(key, sizeof key, b64, sizeof b64, &n));
    b64[n++] = '\n';
    snprintf(g_master_path, sizeof g_master_path, "%s", testproc_work_path("master.key"));
    write_file(g_master_path, b64, n);
}

static void write_audit_key(void)
{
    acrypto_ed25519_key *key = NULL;
    MUST(acrypto_ed25519_generate(&key));
    acrypto_secret *pem = NULL;
    MUST(acrypto_ed25519_private_to_pem(key, &pem));
    snprintf(g_audit_key_path, sizeof g_audit_key_path, "%s", testproc_work_path("audit-key.pem"));
    write_file(g_audit_key_path, acrypto_secret_bytes(pem), acrypto_secret_len(pem));
    acrypto_secret_free(pem);
    acrypto_ed25519_free(key);
}

/* ---- TOTP ----------------------------------------------------------------------------------------- */

/* RFC 4648 base32 (upper case, no padding), as in otpauth:// URIs. */
static size_t base32_decode(const char *in, uint8_t *out, size_t cap)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    uint32_t buf = 0;
    int bits = 0;
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        const char *hit = strchr(alphabet, *p);
        if (!hit)
            fail_msg("otpauth secret is not base32");
        buf = (buf << 5) | (uint32_t)(hit - alphabet);
        bits += 5;
        if (bits >= 8) {
            assert_true(n < cap);
            out[n++] = (uint8_t)(buf >> (bits - 8));
            bits -= 8;
        }
    }
    return n;
}

/* The secret of otpauth://totp/...?secret=XXXX&... */
static void otpauth_secret(const char *uri, char *out, size_t cap)
{
    assert_true(strncmp(uri, "otpauth://totp/Alma:", 20) == 0);
    const char *s = strstr(uri, "?secret=");
    assert_non_null(s);
    s += 8;
    size_t n = strcspn(s, "&");
    assert_true(n >= 16 && n < cap);
    memcpy(out, s, n);
    out[n] = '\0';
}

static void totp_at(const char *b32, int64_t at, char code[CRED_TOTP_CODE_MAX + 1])
{
    uint8_t raw[64];
    size_t n = base32_decode(b32, raw, sizeof raw);
    acrypto_secret *s = NULL;
    MUST(acrypto_secret_from_bytes(raw, n, &s));
    MUST(cred_totp_code(s, at, 6, code));
    acrypto_secret_free(s);
}

/* A code for a step this user has not used yet: the current step, else the next one (the service accepts a
 * step either side of its own), else wait for time to move on. */
static void totp_next(totp_user *u, char code[CRED_TOTP_CODE_MAX + 1])
{
    for (;;) {
        int64_t now = (int64_t)time(NULL);
        int64_t step = now / CRED_TOTP_PERIOD;
        if (step <= u->last_step)
            step = u->last_step + 1;
        if (step <= now / CRED_TOTP_PERIOD + 1) {
            totp_at(u->secret_b32, step * CRED_TOTP_PERIOD, code);
            u->last_step = step;
            return;
        }
        testproc_sleep_ms(500);
    }
}

/* Whether totp_next would answer without waiting. */
static bool totp_available(const totp_user *u)
{
    return u->last_step < (int64_t)time(NULL) / CRED_TOTP_PERIOD + 1;
}

/* ---- Daemons -------------------------------------------------------------------------------------- */

static const char *binary(const char *rel)
{
    static char path[4][512];
    static int slot;
    int i = slot++ % 4;
    snprintf(path[i], sizeof path[i], "%s", testenv_binary_path(rel));
    return path[i];
}

static void start_audit(void)
{
    static char env_pg[600], env_owner[600], env_schema[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", g_app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", g_owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", g_aud_schema);
    snprintf(env_key, sizeof env_key, "ALMA_SIGNING_KEY=%s", g_audit_key_path);
    const char *env[] = {env_pg, env_owner, env_schema, env_key, NULL};
    const char *args[] = {"--origin", ORIGIN, "--checkpoint-interval-ms", "200", NULL};
    testproc_daemon_init(&g_audit, binary("services/audit/alma-audit"), "audit", args, env);
    testproc_daemon_start(&g_audit);
}

/* Whether a process's stderr holds a sanitizer report (ASan, LSan, UBSan: ALMA_SANITIZE builds). */
static bool sanitizer_report(const char *log)
{
    return strstr(log, "Sanitizer") || strstr(log, "runtime error:");
}

/* tools/alma-admin bootstrap: the tenant, its platform administrator, the TOTP secret, recovery codes. */
static void bootstrap(void)
{
    char pw_path[TESTPROC_PATH_MAX];
    snprintf(pw_path, sizeof pw_path, "%s", testproc_work_path("admin-password"));
    write_file(pw_path, ADMIN_PASSWORD "\n", strlen(ADMIN_PASSWORD) + 1);
    static char env_pg[600], env_schema[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", g_owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", g_idn_schema);
    snprintf(env_key, sizeof env_key, "ALMA_MASTER_KEY_FILE=%s", g_master_path);
    const char *env[] = {env_pg, env_schema, env_key, NULL};
    const char *argv[] = {binary("tools/alma-admin"),
                          "bootstrap",
                          "--tenant",
                          g_tenant,
                          "--username",
                          ADMIN_USER,
                          "--password-file",
                          pw_path,
                          "--argon2-m-kib",
                          "1024",
                          "--argon2-t",
                          "1",
                          NULL};
    char *out = NULL, *err = NULL;
    int code = testproc_run(argv, env, &out, &err);
    if (code != 0 || sanitizer_report(err))
        fail_msg("alma-admin bootstrap exited %d: %s", code, err);
    /* administrator:  root.admin (usr_...), roles platform_admin, security_admin */
    const char *a = strstr(out, "administrator:");
    assert_non_null(a);
    const char *open = strchr(a, '(');
    assert_non_null(open);
    size_t n = strcspn(open + 1, ")");
    assert_true(n == 36);
    memcpy(g_admin_id, open + 1, n);
    g_admin_id[n] = '\0';
    assert_true(strncmp(g_admin_id, "usr_", 4) == 0);
    const char *uri = strstr(out, "otpauth://");
    assert_non_null(uri);
    char line[512];
    n = strcspn(uri, "\n");
    assert_true(n < sizeof line);
    memcpy(line, uri, n);
    line[n] = '\0';
    /* The label names the tenant and the user; the parameters are what every authenticator supports. */
    char label[256];
    snprintf(label, sizeof label, "otpauth://totp/Alma:%s:%s?secret=", g_tenant, ADMIN_USER);
    assert_true(strncmp(line, label, strlen(label)) == 0);
    assert_non_null(strstr(line, "&issuer=Alma&algorithm=SHA1&digits=6&period=30"));
    memset(&g_admin_totp, 0, sizeof g_admin_totp);
    otpauth_secret(line, g_admin_totp.secret_b32, sizeof g_admin_totp.secret_b32);
    const char *rc = strstr(out, "recovery codes");
    assert_non_null(rc);
    rc = strchr(rc, '\n');
    for (int i = 0; i < CRED_RECOVERY_COUNT; i++) {
        assert_non_null(rc);
        rc++;
        while (*rc == ' ')
            rc++;
        n = strcspn(rc, "\n");
        assert_int_equal(n, CRED_RECOVERY_DISPLAY_LEN);
        memcpy(g_recovery[i], rc, n);
        g_recovery[i][n] = '\0';
        rc = strchr(rc, '\n');
    }
    g_next_recovery = 0;
    /* It refuses to make a second administrator this way. */
    free(out);
    free(err);
    out = err = NULL;
    code = testproc_run(argv, env, &out, &err);
    if (code != 1 || sanitizer_report(err)) /* 1: refused (a leak report would make it 23) */
        fail_msg("a second alma-admin bootstrap exited %d: %s", code, err);
    assert_non_null(strstr(err, "tenants already exist"));
    free(out);
    free(err);
}

static bool g_fast_key_reload; /* --key-reload-s 1 (the rotation test) */

static void start_identity(bool short_sessions)
{
    static char env_pg[600], env_owner[600], env_schema[100], env_redis[100], env_audit[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", g_app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", g_owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", g_idn_schema);
    snprintf(env_redis, sizeof env_redis, "ALMA_REDIS_ADDR=%s:%d", testenv_redis_host(),
             testenv_redis_port());
    snprintf(env_audit, sizeof env_audit, "ALMA_AUDIT_ADDR=%s", g_audit.api_addr);
    snprintf(env_key, sizeof env_key, "ALMA_MASTER_KEY_FILE=%s", g_master_path);
    const char *env[] = {env_pg, env_owner, env_schema, env_redis, env_audit, env_key, NULL};
    const char *plain[] = {"--argon2-m-kib", "1024", "--argon2-t", "1", "--token-ttl-s", "30", NULL};
    const char *shorter[] = {
        "--argon2-m-kib",       "1024", "--argon2-t", "1", "--token-ttl-s", "30", "--session-idle-s", "2",
        "--session-absolute-s", "4",    NULL};
    const char *const *base_args = short_sessions ? shorter : plain;
    static const char *args[24];
    size_t n = 0;
    for (; base_args[n] && n < 20; n++)
        args[n] = base_args[n];
    if (g_fast_key_reload) {
        args[n++] = "--key-reload-s";
        args[n++] = "1";
    }
    args[n] = NULL;
    testproc_daemon_init(&g_idn, binary("services/identity/alma-identity"), "identity", args, env);
    testproc_daemon_start(&g_idn);
    snprintf(g_idn_addr, sizeof g_idn_addr, "%s", g_idn.api_addr);
}

static int setup_with(void **state, bool short_sessions)
{
    if (testproc_setup(state) != 0)
        return -1;
    int n = g_ntest++;
    snprintf(g_tenant, sizeof g_tenant, "t%d-%d", n, (int)getpid());
    snprintf(g_aud_schema, sizeof g_aud_schema, "idd_aud_%d_%d", (int)getpid(), n);
    snprintf(g_idn_schema, sizeof g_idn_schema, "idd_idn_%d_%d", (int)getpid(), n);
    write_master_key();
    write_audit_key();
    start_audit();
    bootstrap();
    start_identity(short_sessions);
    rpc_client_tls tls = testrpc_client_tls("test-client");
    MUST(rpc_channel_open(g_idn.api_addr, &tls, &g_ch));
    g_idn_db = testdb_pool(g_pg_uri, g_idn_schema, 2);
    return 0;
}

static int test_setup(void **state)
{
    return setup_with(state, false);
}

static int test_setup_short_sessions(void **state)
{
    return setup_with(state, true);
}

static int test_setup_key_reload(void **state)
{
    g_fast_key_reload = true;
    int rc = setup_with(state, false);
    g_fast_key_reload = false;
    return rc;
}

/* Stop a daemon; a non-zero exit (a sanitizer's report, a crash, an unclean drain) fails the test. */
/* Stop a daemon; a non-zero exit (a crash, an unclean drain, a leak report) or any sanitizer report in its
 * stderr fails the test. */
static bool stop_clean(testproc_daemon *d, const char *what)
{
    if (!d->pid)
        return true;
    int code = testproc_daemon_stop(d);
    char *log = testproc_daemon_log(d);
    bool ok = code == 0 && !sanitizer_report(log);
    if (!ok) {
        size_t len = strlen(log);
        fprintf(stderr, "%s exited %d; the end of its log:\n%s\n", what, code,
                log + (len > 6000 ? len - 6000 : 0));
    }
    free(log);
    return ok;
}

static int test_teardown(void **state)
{
    authz_free(g_az);
    g_az = NULL;
    rpc_channel_close(g_ch);
    g_ch = NULL;
    bool ok = stop_clean(&g_idn, "alma-identity");
    ok = stop_clean(&g_audit, "alma-audit") && ok;
    db_pool_destroy(g_idn_db);
    g_idn_db = NULL;
    testdb_drop_schema(g_root, g_idn_schema);
    testdb_drop_schema(g_root, g_aud_schema);
    int rc = testproc_teardown(state);
    return ok ? rc : -1;
}

/* ---- Calls ---------------------------------------------------------------------------------------- */

static rpc_code icall(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                      const char *bearer, ProtobufCMessage **ret, rpc_status *st)
{
    rpc_call_opts o = {.timeout_ms = 20000, .authorization = bearer};
    rpc_status local;
    ProtobufCMessage *resp = NULL;
    rpc_code code = rpc_call_unary(g_ch, method, req, desc, &o, &resp, st ? st : &local);
    if (ret)
        *ret = resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

static void expect(rpc_code got, rpc_code want, const rpc_status *st, const char *what)
{
    if (got != want)
        fail_msg("%s: got %s (%s), want %s", what, rpc_code_name(got), got == RPC_OK ? "" : st->message,
                 rpc_code_name(want));
}

static void set_bearer(sess *s, const char *jwt)
{
    assert_true(strlen(jwt) <= AUTHZ_MAX_TOKEN_LEN);
    snprintf(s->bearer, sizeof s->bearer, "Bearer %s", jwt);
}

static void take_login(sess *s, const Alma__Identity__V1__LoginResponse *r)
{
    set_bearer(s, r->access_token);
    if (r->session_id[0])
        snprintf(s->sid, sizeof s->sid, "%s", r->session_id);
    if (r->refresh_secret[0])
        snprintf(s->secret, sizeof s->secret, "%s", r->refresh_secret);
    assert_non_null(r->access_token_expire_time);
    assert_non_null(r->session_expire_time);
    s->exp = r->access_token_expire_time->seconds;
    s->abs_end = r->session_expire_time->seconds;
    s->enrol = r->mfa_enrollment_required;
}

static rpc_code login_in(const char *tenant, const char *user, const char *password, const char *totp,
                         const char *recovery, sess *out, rpc_status *st)
{
    Alma__Identity__V1__LoginRequest req = ALMA__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.username = (char *)user;
    req.password = (char *)password;
    req.totp_code = (char *)(totp ? totp : "");
    req.recovery_code = (char *)(recovery ? recovery : "");
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        icall(IDN("Login"), &req.base, &alma__identity__v1__login_response__descriptor, NULL, &resp, st);
    if (code == RPC_OK) {
        memset(out, 0, sizeof *out);
        take_login(out, (Alma__Identity__V1__LoginResponse *)resp);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

static rpc_code login(const char *user, const char *password, const char *totp, const char *recovery,
                      sess *out, rpc_status *st)
{
    return login_in(g_tenant, user, password, totp, recovery, out, st);
}

static void login_ok(const char *user, const char *password, const char *totp, sess *out)
{
    rpc_status st;
    expect(login(user, password, totp, NULL, out, &st), RPC_OK, &st, "Login");
}

/* The administrator: by TOTP while a fresh step is at hand, else by one of its recovery codes. */
static void admin_login(sess *out)
{
    rpc_status st;
    if (totp_available(&g_admin_totp)) {
        char code[CRED_TOTP_CODE_MAX + 1];
        totp_next(&g_admin_totp, code);
        expect(login(ADMIN_USER, ADMIN_PASSWORD, code, NULL, out, &st), RPC_OK, &st, "admin Login (TOTP)");
    } else {
        assert_true(g_next_recovery < CRED_RECOVERY_COUNT);
        expect(login(ADMIN_USER, ADMIN_PASSWORD, NULL, g_recovery[g_next_recovery++], out, &st), RPC_OK, &st,
               "admin Login (recovery code)");
    }
    assert_false(out->enrol);
}

static rpc_code refresh(sess *s, rpc_status *st)
{
    Alma__Identity__V1__RefreshRequest req = ALMA__IDENTITY__V1__REFRESH_REQUEST__INIT;
    req.session_id = s->sid;
    req.refresh_secret = s->secret;
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        icall(IDN("Refresh"), &req.base, &alma__identity__v1__login_response__descriptor, NULL, &resp, st);
    if (code == RPC_OK) {
        Alma__Identity__V1__LoginResponse *r = (Alma__Identity__V1__LoginResponse *)resp;
        assert_string_equal(r->session_id, s->sid);
        assert_string_equal(r->refresh_secret, ""); /* handed out once, at login */
        take_login(s, r);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

static rpc_code create_user(const sess *admin, const char *username, const char *password,
                            const char *const *roles, size_t nroles, char principal[64], rpc_status *st)
{
    Alma__Identity__V1__CreateUserRequest req = ALMA__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = (char *)username;
    req.display_name = (char *)"Test User";
    req.initial_password = (char *)password;
    req.roles = (char **)roles;
    req.n_roles = nroles;
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        icall(IDN("CreateUser"), &req.base, &alma__identity__v1__user__descriptor, admin->bearer, &resp, st);
    if (code == RPC_OK) {
        Alma__Identity__V1__User *u = (Alma__Identity__V1__User *)resp;
        assert_string_equal(u->tenant_id, g_tenant);
        assert_string_equal(u->username, username);
        assert_int_equal(u->state, ALMA__IDENTITY__V1__USER_STATE__USER_STATE_ACTIVE);
        assert_int_equal(u->n_roles, nroles);
        if (principal)
            snprintf(principal, 64, "%s", u->principal_id);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

static void create_user_ok(const sess *admin, const char *username, const char *role, char principal[64])
{
    rpc_status st;
    const char *roles[] = {role};
    expect(create_user(admin, username, USER_PASSWORD, roles, role ? 1 : 0, principal, &st), RPC_OK, &st,
           "CreateUser");
}

static rpc_code get_user(const sess *caller, const char *principal, Alma__Identity__V1__User **ret,
                         rpc_status *st)
{
    Alma__Identity__V1__GetUserRequest req = ALMA__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.principal_id = (char *)(principal ? principal : "");
    return icall(IDN("GetUser"), &req.base, &alma__identity__v1__user__descriptor, caller->bearer,
                 (ProtobufCMessage **)ret, st);
}

static rpc_code disable_user(const sess *caller, const char *principal, rpc_status *st)
{
    Alma__Identity__V1__DisableUserRequest req = ALMA__IDENTITY__V1__DISABLE_USER_REQUEST__INIT;
    req.principal_id = (char *)principal;
    req.reason = (char *)"left the organisation";
    return icall(IDN("DisableUser"), &req.base, &alma__identity__v1__user__descriptor, caller->bearer, NULL,
                 st);
}

static rpc_code revoke_sessions(const sess *caller, const char *principal, int *revoked, rpc_status *st)
{
    Alma__Identity__V1__RevokeSessionsRequest req = ALMA__IDENTITY__V1__REVOKE_SESSIONS_REQUEST__INIT;
    req.principal_id = (char *)principal;
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        icall(IDN("RevokeSessions"), &req.base, &alma__identity__v1__revoke_sessions_response__descriptor,
              caller->bearer, &resp, st);
    if (code == RPC_OK) {
        if (revoked)
            *revoked = ((Alma__Identity__V1__RevokeSessionsResponse *)resp)->revoked;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

static rpc_code set_password_of(const sess *caller, const char *principal, const char *current,
                                const char *next, rpc_status *st)
{
    Alma__Identity__V1__SetPasswordRequest req = ALMA__IDENTITY__V1__SET_PASSWORD_REQUEST__INIT;
    req.principal_id = (char *)(principal ? principal : "");
    req.current_password = (char *)(current ? current : "");
    req.new_password = (char *)next;
    return icall(IDN("SetPassword"), &req.base, &alma__identity__v1__set_password_response__descriptor,
                 caller->bearer, NULL, st);
}

static rpc_code set_password(const sess *caller, const char *current, const char *next, rpc_status *st)
{
    return set_password_of(caller, NULL, current, next, st);
}

static rpc_code grant_or_revoke(const sess *caller, bool grant, const char *principal, const char *role,
                                Alma__Identity__V1__User **ret, rpc_status *st)
{
    if (grant) {
        Alma__Identity__V1__GrantRoleRequest req = ALMA__IDENTITY__V1__GRANT_ROLE_REQUEST__INIT;
        req.principal_id = (char *)principal;
        req.role_id = (char *)role;
        return icall(IDN("GrantRole"), &req.base, &alma__identity__v1__user__descriptor, caller->bearer,
                     (ProtobufCMessage **)ret, st);
    }
    Alma__Identity__V1__RevokeRoleRequest req = ALMA__IDENTITY__V1__REVOKE_ROLE_REQUEST__INIT;
    req.principal_id = (char *)principal;
    req.role_id = (char *)role;
    return icall(IDN("RevokeRole"), &req.base, &alma__identity__v1__user__descriptor, caller->bearer,
                 (ProtobufCMessage **)ret, st);
}

static rpc_code list_break_glass(const sess *caller, Alma__Identity__V1__ListBreakGlassGrantsResponse **ret,
                                 rpc_status *st)
{
    Alma__Identity__V1__ListBreakGlassGrantsRequest req =
        ALMA__IDENTITY__V1__LIST_BREAK_GLASS_GRANTS_REQUEST__INIT;
    return icall(IDN("ListBreakGlassGrants"), &req.base,
                 &alma__identity__v1__list_break_glass_grants_response__descriptor, caller->bearer,
                 (ProtobufCMessage **)ret, st);
}

static rpc_code check(const sess *caller, const char *principal, const char *permission, const char *patient,
                      Alma__Identity__V1__CheckResponse **ret, rpc_status *st)
{
    Alma__Identity__V1__CheckRequest req = ALMA__IDENTITY__V1__CHECK_REQUEST__INIT;
    req.principal_id = (char *)principal;
    req.permission = (char *)permission;
    req.patient_ref = (char *)(patient ? patient : "");
    return icall(IDN("Check"), &req.base, &alma__identity__v1__check_response__descriptor, caller->bearer,
                 (ProtobufCMessage **)ret, st);
}

static rpc_code break_glass(const sess *caller, const char *patient, const char *reason, int minutes,
                            Alma__Identity__V1__BreakGlassGrant **ret, rpc_status *st)
{
    Alma__Identity__V1__BreakGlassRequest req = ALMA__IDENTITY__V1__BREAK_GLASS_REQUEST__INIT;
    req.patient_ref = (char *)patient;
    req.reason = (char *)reason;
    req.duration_minutes = minutes;
    return icall(IDN("BreakGlass"), &req.base, &alma__identity__v1__break_glass_grant__descriptor,
                 caller->bearer, (ProtobufCMessage **)ret, st);
}

static void claims_of(const sess *s, authz_claims *c);

/* MFA enrolment of a user whose role requires it: the password-only login gives an enrolment token, which
 * enrols TOTP (the code computed from the returned URI). Returns the user's TOTP state. */
static void enrol_totp_in(const char *tenant, const char *user, const char *password, totp_user *t)
{
    sess s;
    rpc_status lst;
    expect(login_in(tenant, user, password, NULL, NULL, &s, &lst), RPC_OK, &lst, "Login to enrol");
    assert_true(s.enrol);
    /* The enrolment token may do nothing else. */
    authz_claims ec;
    claims_of(&s, &ec);
    assert_true(ec.enr);
    assert_int_equal(ec.role_count, 0);
    Alma__Identity__V1__EnrollTotpRequest ereq = ALMA__IDENTITY__V1__ENROLL_TOTP_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    expect(icall(IDN("EnrollTotp"), &ereq.base, &alma__identity__v1__enroll_totp_response__descriptor,
                 s.bearer, &resp, &st),
           RPC_OK, &st, "EnrollTotp");
    const char *uri = ((Alma__Identity__V1__EnrollTotpResponse *)resp)->otpauth_uri;
    char label[256];
    snprintf(label, sizeof label, "otpauth://totp/Alma:%s:%s?secret=", tenant, user);
    assert_true(strncmp(uri, label, strlen(label)) == 0);
    memset(t, 0, sizeof *t);
    otpauth_secret(uri, t->secret_b32, sizeof t->secret_b32);
    protobuf_c_message_free_unpacked(resp, NULL);
    Alma__Identity__V1__ConfirmTotpRequest creq = ALMA__IDENTITY__V1__CONFIRM_TOTP_REQUEST__INIT;
    char code[CRED_TOTP_CODE_MAX + 1];
    totp_next(t, code);
    creq.totp_code = code;
    expect(icall(IDN("ConfirmTotp"), &creq.base, &alma__identity__v1__confirm_totp_response__descriptor,
                 s.bearer, &resp, &st),
           RPC_OK, &st, "ConfirmTotp");
    assert_int_equal(((Alma__Identity__V1__ConfirmTotpResponse *)resp)->n_recovery_codes,
                     CRED_RECOVERY_COUNT);
    protobuf_c_message_free_unpacked(resp, NULL);
}

static void enrol_totp(const char *user, totp_user *t)
{
    enrol_totp_in(g_tenant, user, USER_PASSWORD, t);
}

/* ---- Tokens --------------------------------------------------------------------------------------- */

static char *verification_keys(void)
{
    Alma__Identity__V1__GetVerificationKeysRequest req =
        ALMA__IDENTITY__V1__GET_VERIFICATION_KEYS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    expect(icall(IDN("GetVerificationKeys"), &req.base,
                 &alma__identity__v1__get_verification_keys_response__descriptor, NULL, &resp, &st),
           RPC_OK, &st, "GetVerificationKeys");
    char *jwks = strdup(((Alma__Identity__V1__GetVerificationKeysResponse *)resp)->jwks_json);
    protobuf_c_message_free_unpacked(resp, NULL);
    assert_non_null(jwks);
    return jwks;
}

/* Verify a token offline with the published keys and return its claims. */
static void claims_of(const sess *s, authz_claims *c)
{
    char *jwks = verification_keys();
    authz_keyset *ks = NULL;
    MUST(authz_keyset_from_jwks(jwks, strlen(jwks), &ks));
    free(jwks);
    MUST(authz_token_verify(ks, NULL, jwt_of(s), (int64_t)time(NULL), c));
    authz_keyset_free(ks);
}

static bool has_name(char (*names)[AUTHZ_MAX_NAME_LEN + 1], size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

static bool has_perm(const authz_claims *c, const char *perm)
{
    return has_name((char(*)[AUTHZ_MAX_NAME_LEN + 1]) c->perm, c->perm_count, perm);
}

static bool has_role(const authz_claims *c, const char *role)
{
    return has_name((char(*)[AUTHZ_MAX_NAME_LEN + 1]) c->roles, c->role_count, role);
}

/* The second service's key fetch: identity's GetVerificationKeys over mTLS, bounded. Runs on the
 * authorizer's thread: uses only its own channel and the address fixed before the authorizer started. */
static base_result fetch_jwks(void *arg, char **ret)
{
    const rpc_client_tls *tls = arg;
    rpc_channel *ch = NULL;
    BASE_GUARD(rpc_channel_open(g_idn_addr, tls, &ch));
    Alma__Identity__V1__GetVerificationKeysRequest req =
        ALMA__IDENTITY__V1__GET_VERIFICATION_KEYS_REQUEST__INIT;
    rpc_call_opts o = {.timeout_ms = 2000};
    rpc_status st;
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        rpc_call_unary(ch, IDN("GetVerificationKeys"), &req.base,
                       &alma__identity__v1__get_verification_keys_response__descriptor, &o, &resp, &st);
    rpc_channel_close(ch);
    if (code != RPC_OK)
        return base_fail(BASE_ERR_UNAVAILABLE, "GetVerificationKeys failed");
    char *copy = strdup(((Alma__Identity__V1__GetVerificationKeysResponse *)resp)->jwks_json);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!copy)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    *ret = copy;
    return BASE_OK_RESULT;
}

static authz *second_service(void)
{
    static rpc_client_tls tls;
    if (!g_az) {
        tls = testrpc_client_tls("test-client");
        authz_config cfg = {.cache = &g_cache, .fetch_jwks = fetch_jwks, .fetch_arg = &tls};
        MUST(authz_new(&cfg, &g_az));
        MUST(authz_wait_ready(g_az, 5000));
    }
    return g_az;
}

/* The second service's decision on a token. */
static authz_code decide(const sess *s, const char *permission, const char *patient, authz_decision *ret)
{
    authz_decision d;
    authz_resource res = {.tenant_id = g_tenant, .patient_ref = patient};
    (void)authz_authorize(second_service(), s->bearer, permission, &res, NULL, &d).err;
    if (ret)
        *ret = d;
    return d.code;
}

static void expect_decision(const sess *s, const char *permission, const char *patient, authz_code want,
                            const char *what)
{
    authz_decision d;
    authz_code got = decide(s, permission, patient, &d);
    if (got != want)
        fail_msg("%s: second service decided %d (%s), want %d", what, (int)got, d.reason, (int)want);
}

/* Milliseconds from t0 until the second service refuses the token as revoked (polled every POLL_MS);
 * fails the test if that takes longer than REVOKE_GIVE_UP ms. */
static int64_t ms_until_rejected(const sess *s, const char *permission, int64_t t0)
{
    for (;;) {
        authz_decision d;
        if (decide(s, permission, NULL, &d) == AUTHZ_UNAUTHENTICATED)
            return testproc_now_ms() - t0;
        if (testproc_now_ms() - t0 > REVOKE_GIVE_UP)
            fail_msg("the second service still accepts a revoked token after %d ms (%s)", REVOKE_GIVE_UP,
                     d.reason);
        testproc_sleep_ms(POLL_MS);
    }
}

/* A call that revokes, made on another thread while this one watches the second service: the time from the
 * call's start until the token is refused there. (Identity answers administrative revocations only once
 * the second of the revocation is over, so the caller's view of the call's end says nothing about how fast
 * the revocation travelled.) */
typedef struct bg_call {
    const char *method;
    const ProtobufCMessage *req;
    const ProtobufCMessageDescriptor *desc;
    const char *bearer;
    rpc_client_tls tls;
    rpc_code code;
    rpc_status st;
} bg_call;

static void *bg_main(void *arg)
{
    bg_call *b = arg;
    rpc_channel *ch = NULL;
    if (!base_is_ok(rpc_channel_open(g_idn_addr, &b->tls, &ch))) {
        b->code = RPC_UNAVAILABLE;
        snprintf(b->st.message, sizeof b->st.message, "cannot open a channel");
        return NULL;
    }
    rpc_call_opts o = {.timeout_ms = 20000, .authorization = b->bearer};
    ProtobufCMessage *resp = NULL;
    b->code = rpc_call_unary(ch, b->method, b->req, b->desc, &o, &resp, &b->st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    rpc_channel_close(ch);
    return NULL;
}

static int64_t revoke_and_time(const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *desc, const sess *caller, const sess *victim,
                               const char *what)
{
    bg_call b = {.method = method, .req = req, .desc = desc, .bearer = caller->bearer};
    b.tls = testrpc_client_tls("test-client");
    second_service(); /* started before the clock runs */
    pthread_t th;
    int64_t t0 = testproc_now_ms();
    assert_int_equal(pthread_create(&th, NULL, bg_main, &b), 0);
    int64_t ms = -1;
    for (;;) {
        authz_decision d;
        if (decide(victim, "referral.create", NULL, &d) == AUTHZ_UNAUTHENTICATED) {
            ms = testproc_now_ms() - t0;
            break;
        }
        if (testproc_now_ms() - t0 > REVOKE_GIVE_UP)
            break;
        testproc_sleep_ms(POLL_MS);
    }
    pthread_join(th, NULL);
    expect(b.code, RPC_OK, &b.st, what);
    if (ms < 0)
        fail_msg("%s: the second service still accepts the token after %d ms", what, REVOKE_GIVE_UP);
    fprintf(stderr,
            "[ INFO     ] %s: the second service refused the token %" PRId64 " ms after the call began\n",
            what, ms);
    if (ms > REVOKE_MAX_MS)
        fail_msg("%s: the second service refused the token only after %" PRId64 " ms", what, ms);
    return ms;
}

static int64_t logout_timed(const sess *s)
{
    Alma__Identity__V1__LogoutRequest req = ALMA__IDENTITY__V1__LOGOUT_REQUEST__INIT;
    return revoke_and_time(IDN("Logout"), &req.base, &alma__identity__v1__logout_response__descriptor, s, s,
                           "Logout");
}

static int64_t disable_timed(const sess *admin, const char *principal, const sess *victim)
{
    Alma__Identity__V1__DisableUserRequest req = ALMA__IDENTITY__V1__DISABLE_USER_REQUEST__INIT;
    req.principal_id = (char *)principal;
    req.reason = (char *)"left the organisation";
    return revoke_and_time(IDN("DisableUser"), &req.base, &alma__identity__v1__user__descriptor, admin,
                           victim, "DisableUser");
}

static int64_t revoke_sessions_timed(const sess *admin, const char *principal, const sess *victim)
{
    Alma__Identity__V1__RevokeSessionsRequest req = ALMA__IDENTITY__V1__REVOKE_SESSIONS_REQUEST__INIT;
    req.principal_id = (char *)principal;
    return revoke_and_time(IDN("RevokeSessions"), &req.base,
                           &alma__identity__v1__revoke_sessions_response__descriptor, admin, victim,
                           "RevokeSessions");
}

static int64_t grant_timed(const sess *admin, bool grant, const char *principal, const char *role,
                           const sess *victim)
{
    Alma__Identity__V1__GrantRoleRequest g = ALMA__IDENTITY__V1__GRANT_ROLE_REQUEST__INIT;
    Alma__Identity__V1__RevokeRoleRequest r = ALMA__IDENTITY__V1__REVOKE_ROLE_REQUEST__INIT;
    g.principal_id = r.principal_id = (char *)principal;
    g.role_id = r.role_id = (char *)role;
    return revoke_and_time(grant ? IDN("GrantRole") : IDN("RevokeRole"), grant ? &g.base : &r.base,
                           &alma__identity__v1__user__descriptor, admin, victim,
                           grant ? "GrantRole" : "RevokeRole");
}

/* ---- The audit log -------------------------------------------------------------------------------- */

static Alma__Audit__V1__ListEventsResponse *audit_events_in(const char *tenant,
                                                            Alma__Audit__V1__Action action)
{
    rpc_client_tls tls = testrpc_client_tls("test-client");
    rpc_channel *ch = NULL;
    MUST(rpc_channel_open(g_audit.api_addr, &tls, &ch));
    Alma__Audit__V1__EventFilter f = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    f.tenant_id = (char *)tenant;
    f.action = action;
    Alma__Audit__V1__ListEventsRequest req = ALMA__AUDIT__V1__LIST_EVENTS_REQUEST__INIT;
    req.filter = &f;
    req.page_size = 1000;
    rpc_call_opts o = {.timeout_ms = 10000};
    rpc_status st;
    ProtobufCMessage *resp = NULL;
    expect(rpc_call_unary(ch, AUD("ListEvents"), &req.base,
                          &alma__audit__v1__list_events_response__descriptor, &o, &resp, &st),
           RPC_OK, &st, "audit ListEvents");
    rpc_channel_close(ch);
    return (Alma__Audit__V1__ListEventsResponse *)resp;
}

static Alma__Audit__V1__ListEventsResponse *audit_events(Alma__Audit__V1__Action action)
{
    return audit_events_in(g_tenant, action);
}

static const char *detail(const Alma__Audit__V1__Event *e, const char *key)
{
    for (size_t i = 0; i < e->input->n_details; i++)
        if (strcmp(e->input->details[i]->key, key) == 0)
            return e->input->details[i]->value;
    return NULL;
}

/* The first event of the list about this resource with this detail value (NULL: any). */
static const Alma__Audit__V1__Event *find_event(const Alma__Audit__V1__ListEventsResponse *l,
                                                const char *resource_id, const char *key, const char *value)
{
    for (size_t i = 0; i < l->n_events; i++) {
        const Alma__Audit__V1__Event *e = l->events[i];
        if (resource_id && strcmp(e->input->resource_id, resource_id) != 0)
            continue;
        const char *v = key ? detail(e, key) : NULL;
        if (key && (!v || strcmp(v, value) != 0))
            continue;
        return e;
    }
    return NULL;
}

/* ---- 1. The bootstrap administrator ------------------------------------------------------------------ */

static void test_bootstrap_admin_login(void **state)
{
    (void)state;
    rpc_status st;
    sess s;
    /* TOTP is enrolled: the password alone is not enough, and the answer does not say what was missing. */
    expect(login(ADMIN_USER, ADMIN_PASSWORD, NULL, NULL, &s, &st), RPC_UNAUTHENTICATED, &st, "password only");
    assert_string_equal(st.message, BAD_CREDS);
    char code[CRED_TOTP_CODE_MAX + 1];
    totp_at(g_admin_totp.secret_b32, (int64_t)time(NULL), code);
    char wrong[CRED_TOTP_CODE_MAX + 1];
    snprintf(wrong, sizeof wrong, "%s", code);
    wrong[5] = (char)('0' + (wrong[5] - '0' + 1) % 10);
    expect(login(ADMIN_USER, ADMIN_PASSWORD, wrong, NULL, &s, &st), RPC_UNAUTHENTICATED, &st, "wrong TOTP");
    assert_string_equal(st.message, BAD_CREDS);
    /* The right code but a wrong password. */
    expect(login(ADMIN_USER, WRONG_PASSWORD, code, NULL, &s, &st), RPC_UNAUTHENTICATED, &st,
           "wrong password");
    assert_string_equal(st.message, BAD_CREDS);

    totp_next(&g_admin_totp, code);
    expect(login(ADMIN_USER, ADMIN_PASSWORD, code, NULL, &s, &st), RPC_OK, &st, "password + TOTP");
    assert_false(s.enrol);
    assert_true(strncmp(s.sid, "ses_", 4) == 0);
    assert_int_equal(strlen(s.secret), 43);
    int64_t now = (int64_t)time(NULL);
    assert_true(s.exp > now && s.exp <= now + 31);
    assert_true(s.abs_end >= s.exp);

    /* The token verifies offline against the published JWKS and says who, where and how. */
    authz_claims c;
    claims_of(&s, &c);
    assert_string_equal(c.iss, AUTHZ_DEFAULT_ISSUER);
    assert_string_equal(c.aud, AUTHZ_DEFAULT_AUDIENCE);
    assert_string_equal(c.sub, g_admin_id);
    assert_string_equal(c.tid, g_tenant);
    assert_string_equal(c.sid, s.sid);
    assert_int_equal(c.exp, s.exp);
    assert_true(c.mfa);
    assert_false(c.enr);
    assert_int_equal(c.role_count, 2);
    assert_true(has_role(&c, "platform_admin"));
    assert_true(has_role(&c, "security_admin"));
    assert_true(has_perm(&c, "platform.tenants.manage"));
    assert_true(has_perm(&c, "identity.users.manage"));
    assert_true(has_perm(&c, "identity.sessions.revoke"));
    assert_false(has_perm(&c, "phi.read.clinical"));
    /* ... and a key that is not identity's does not verify it. */
    {
        acrypto_ed25519_key *other = NULL;
        MUST(acrypto_ed25519_generate(&other));
        authz_keyset *ks = NULL;
        MUST(authz_keyset_new(&ks));
        MUST(authz_keyset_add(ks, other));
        authz_claims ignored;
        assert_int_equal(authz_token_verify(ks, NULL, jwt_of(&s), now, &ignored).err, BASE_ERR_UNAUTH);
        authz_keyset_free(ks);
        acrypto_ed25519_free(other);
    }
    /* The token works against identity itself. */
    Alma__Identity__V1__User *u = NULL;
    expect(get_user(&s, NULL, &u, &st), RPC_OK, &st, "GetUser self");
    assert_string_equal(u->principal_id, g_admin_id);
    assert_true(u->totp_enrolled);
    assert_true(u->mfa_required);
    protobuf_c_message_free_unpacked(&u->base, NULL);

    /* The same code again: refused (one-time), with the same answer as any failure. */
    expect(login(ADMIN_USER, ADMIN_PASSWORD, code, NULL, &s, &st), RPC_UNAUTHENTICATED, &st, "replayed TOTP");
    assert_string_equal(st.message, BAD_CREDS);

    /* A recovery code works once, typed in upper case and without the dash too. */
    char typed[32];
    size_t k = 0;
    for (const char *p = g_recovery[0]; *p; p++)
        if (*p != '-')
            typed[k++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    typed[k] = '\0';
    sess r;
    expect(login(ADMIN_USER, ADMIN_PASSWORD, NULL, typed, &r, &st), RPC_OK, &st, "recovery code");
    claims_of(&r, &c);
    assert_true(c.mfa);
    assert_string_equal(c.sub, g_admin_id);
    assert_string_not_equal(r.sid, s.sid);
    expect(login(ADMIN_USER, ADMIN_PASSWORD, NULL, g_recovery[0], &r, &st), RPC_UNAUTHENTICATED, &st,
           "recovery code twice");
    assert_string_equal(st.message, BAD_CREDS);
    /* A made-up code is refused like any other failure. */
    expect(login(ADMIN_USER, ADMIN_PASSWORD, NULL, "aaaaa-bbbbb", &r, &st), RPC_UNAUTHENTICATED, &st,
           "made-up recovery code");
    g_next_recovery = 1;

    /* Every attempt is in the audit log: LOGIN for the two that passed, LOGIN_FAILED for the six that did
     * not. */
    Alma__Audit__V1__ListEventsResponse *l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_LOGIN);
    assert_int_equal(l->n_events, 2);
    assert_string_equal(l->events[0]->input->actor->principal_id, g_admin_id);
    assert_string_equal(detail(l->events[0], "mfa"), "true");
    protobuf_c_message_free_unpacked(&l->base, NULL);
    l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED);
    assert_int_equal(l->n_events, 6);
    for (size_t i = 0; i < l->n_events; i++)
        assert_int_equal(l->events[i]->input->outcome, ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED);
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

/* ---- 2. Users and MFA enrolment --------------------------------------------------------------------- */

static void test_users_and_mfa_enrolment(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char doc[64], priv[64];
    create_user_ok(&admin, "dr.pcp", "pcp_clinician", doc);
    create_user_ok(&admin, "privacy.officer", "privacy_officer", priv);
    /* The same username again in the tenant: refused. */
    const char *roles[] = {"pcp_clinician"};
    expect(create_user(&admin, "dr.pcp", USER_PASSWORD, roles, 1, NULL, &st), RPC_ALREADY_EXISTS, &st,
           "duplicate username");

    Alma__Identity__V1__User *u = NULL;
    expect(get_user(&admin, priv, &u, &st), RPC_OK, &st, "GetUser privacy officer");
    assert_true(u->mfa_required);
    assert_false(u->totp_enrolled);
    assert_int_equal(u->n_roles, 1);
    assert_string_equal(u->roles[0], "privacy_officer");
    protobuf_c_message_free_unpacked(&u->base, NULL);
    expect(get_user(&admin, doc, &u, &st), RPC_OK, &st, "GetUser clinician");
    assert_false(u->mfa_required);
    protobuf_c_message_free_unpacked(&u->base, NULL);

    /* The clinician's role needs no second factor: the password gives a full token. */
    sess d;
    login_ok("dr.pcp", USER_PASSWORD, NULL, &d);
    assert_false(d.enrol);
    authz_claims c;
    claims_of(&d, &c);
    assert_string_equal(c.sub, doc);
    assert_false(c.mfa);
    assert_false(c.enr);
    assert_true(has_role(&c, "pcp_clinician"));
    assert_true(has_perm(&c, "phi.read.clinical"));
    assert_false(has_perm(&c, "privacy.review"));
    expect(list_break_glass(&d, NULL, &st), RPC_PERMISSION_DENIED, &st, "clinician lists break-glass");

    /* The privacy officer must enrol first: the password gives a token that may only enrol. */
    sess p;
    login_ok("privacy.officer", USER_PASSWORD, NULL, &p);
    assert_true(p.enrol);
    claims_of(&p, &c);
    assert_true(c.enr);
    assert_false(c.mfa);
    assert_int_equal(c.role_count, 0);
    assert_false(has_perm(&c, "privacy.review"));
    expect(list_break_glass(&p, NULL, &st), RPC_PERMISSION_DENIED, &st, "enrolment token lists break-glass");
    expect(get_user(&p, doc, NULL, &st), RPC_PERMISSION_DENIED, &st, "enrolment token reads another user");
    expect_decision(&p, "privacy.review", NULL, AUTHZ_PERMISSION_DENIED, "enrolment token elsewhere");

    /* Confirming needs EnrollTotp first, then the right code. */
    Alma__Identity__V1__ConfirmTotpRequest creq = ALMA__IDENTITY__V1__CONFIRM_TOTP_REQUEST__INIT;
    creq.totp_code = (char *)"123456";
    expect(icall(IDN("ConfirmTotp"), &creq.base, &alma__identity__v1__confirm_totp_response__descriptor,
                 p.bearer, NULL, &st),
           RPC_FAILED_PRECONDITION, &st, "ConfirmTotp before EnrollTotp");
    Alma__Identity__V1__EnrollTotpRequest ereq = ALMA__IDENTITY__V1__ENROLL_TOTP_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    expect(icall(IDN("EnrollTotp"), &ereq.base, &alma__identity__v1__enroll_totp_response__descriptor,
                 p.bearer, &resp, &st),
           RPC_OK, &st, "EnrollTotp");
    totp_user pt;
    memset(&pt, 0, sizeof pt);
    otpauth_secret(((Alma__Identity__V1__EnrollTotpResponse *)resp)->otpauth_uri, pt.secret_b32,
                   sizeof pt.secret_b32);
    protobuf_c_message_free_unpacked(resp, NULL);
    char code[CRED_TOTP_CODE_MAX + 1], wrong[CRED_TOTP_CODE_MAX + 1];
    totp_at(pt.secret_b32, (int64_t)time(NULL), wrong);
    wrong[0] = (char)('0' + (wrong[0] - '0' + 5) % 10);
    creq.totp_code = wrong;
    expect(icall(IDN("ConfirmTotp"), &creq.base, &alma__identity__v1__confirm_totp_response__descriptor,
                 p.bearer, NULL, &st),
           RPC_PERMISSION_DENIED, &st, "ConfirmTotp with a wrong code");
    totp_next(&pt, code);
    creq.totp_code = code;
    expect(icall(IDN("ConfirmTotp"), &creq.base, &alma__identity__v1__confirm_totp_response__descriptor,
                 p.bearer, &resp, &st),
           RPC_OK, &st, "ConfirmTotp");
    Alma__Identity__V1__ConfirmTotpResponse *cr = (Alma__Identity__V1__ConfirmTotpResponse *)resp;
    assert_int_equal(cr->n_recovery_codes, CRED_RECOVERY_COUNT);
    char priv_recovery[32];
    snprintf(priv_recovery, sizeof priv_recovery, "%s", cr->recovery_codes[0]);
    protobuf_c_message_free_unpacked(resp, NULL);
    /* Enrolled once: a second enrolment needs an administrator. */
    expect(icall(IDN("EnrollTotp"), &ereq.base, &alma__identity__v1__enroll_totp_response__descriptor,
                 p.bearer, NULL, &st),
           RPC_FAILED_PRECONDITION, &st, "EnrollTotp again");

    /* The enrolment session never gave a second factor: it cannot be refreshed into a full one. */
    expect(refresh(&p, &st), RPC_UNAUTHENTICATED, &st, "Refresh of the enrolment session");
    /* From now on the password alone is refused, like any failure. */
    expect(login("privacy.officer", USER_PASSWORD, NULL, NULL, &p, &st), RPC_UNAUTHENTICATED, &st,
           "password only after enrolment");
    assert_string_equal(st.message, BAD_CREDS);
    totp_next(&pt, code);
    login_ok("privacy.officer", USER_PASSWORD, code, &p);
    assert_false(p.enrol);
    claims_of(&p, &c);
    assert_true(c.mfa);
    assert_false(c.enr);
    assert_true(has_role(&c, "privacy_officer"));
    assert_true(has_perm(&c, "privacy.review"));
    Alma__Identity__V1__ListBreakGlassGrantsResponse *l = NULL;
    expect(list_break_glass(&p, &l, &st), RPC_OK, &st, "privacy officer lists break-glass");
    assert_int_equal(l->n_grants, 0);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    expect_decision(&p, "privacy.review", NULL, AUTHZ_OK, "privacy officer elsewhere");
    /* Its recovery codes work too. */
    sess p2;
    expect(login("privacy.officer", USER_PASSWORD, NULL, priv_recovery, &p2, &st), RPC_OK, &st,
           "privacy officer recovery code");
    claims_of(&p2, &c);
    assert_true(c.mfa);
    assert_true(has_perm(&c, "privacy.review"));
}

/* ---- 3. Tenants ------------------------------------------------------------------------------------ */

#define TENANT_ADMIN_PASSWORD "Tenant-B-Admin-Passw0rd!"

/* CreateTenant of a kind with its first administrator (admin NULL: none given). */
static rpc_code create_tenant_kind(const sess *caller, const char *id, Alma__Identity__V1__TenantKind kind,
                                   const char *admin, const char *password, rpc_status *st)
{
    Alma__Identity__V1__Tenant t = ALMA__IDENTITY__V1__TENANT__INIT;
    t.tenant_id = (char *)id;
    t.kind = kind;
    t.display_name = (char *)"Second clinic";
    Alma__Identity__V1__CreateTenantRequest req = ALMA__IDENTITY__V1__CREATE_TENANT_REQUEST__INIT;
    req.tenant = &t;
    req.admin_username = (char *)(admin ? admin : "");
    req.admin_display_name = (char *)(admin ? "Clinic administrator" : "");
    req.admin_initial_password = (char *)(admin ? password : "");
    ProtobufCMessage *resp = NULL;
    rpc_code code = icall(IDN("CreateTenant"), &req.base, &alma__identity__v1__tenant__descriptor,
                          caller->bearer, &resp, st);
    if (code == RPC_OK) {
        Alma__Identity__V1__Tenant *out = (Alma__Identity__V1__Tenant *)resp;
        assert_string_equal(out->tenant_id, id);
        assert_int_equal(out->kind, kind);
        assert_false(out->mfa_required_for_all);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

/* CreateTenant of a provider with its first administrator (admin NULL: none given). */
static rpc_code create_tenant_with(const sess *caller, const char *id, const char *admin,
                                   const char *password, rpc_status *st)
{
    return create_tenant_kind(caller, id, ALMA__IDENTITY__V1__TENANT_KIND__TENANT_KIND_PROVIDER, admin,
                              password, st);
}

static rpc_code create_tenant(const sess *caller, const char *id, rpc_status *st)
{
    return create_tenant_with(caller, id, "clinic.admin", TENANT_ADMIN_PASSWORD, st);
}

static bool denied_or_not_found(rpc_code code)
{
    return code == RPC_NOT_FOUND || code == RPC_PERMISSION_DENIED;
}

static int64_t count_rows(const char *sql);

static void test_tenant_isolation(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char victim[64];
    create_user_ok(&admin, "victim.a", "pcp_clinician", victim);
    sess v;
    login_ok("victim.a", USER_PASSWORD, NULL, &v);

    char tb[80];
    snprintf(tb, sizeof tb, "%s-b", g_tenant);
    /* A tenant comes with its first administrator: without one (or with a weak password) nothing is made. */
    expect(create_tenant_with(&admin, tb, NULL, NULL, &st), RPC_INVALID_ARGUMENT, &st,
           "CreateTenant without an administrator");
    expect(create_tenant_with(&admin, tb, "b.admin", "short", &st), RPC_INVALID_ARGUMENT, &st,
           "CreateTenant with a weak administrator password");
    expect(create_tenant_with(&admin, tb, "B Admin!", TENANT_ADMIN_PASSWORD, &st), RPC_INVALID_ARGUMENT, &st,
           "CreateTenant with a malformed administrator username");
    assert_int_equal(count_rows("SELECT count(*) FROM tenants"), 1);
    expect(create_tenant_with(&admin, tb, "b.admin", TENANT_ADMIN_PASSWORD, &st), RPC_OK, &st,
           "CreateTenant by the platform administrator");
    expect(create_tenant(&admin, tb, &st), RPC_ALREADY_EXISTS, &st, "CreateTenant twice");
    assert_int_equal(count_rows("SELECT count(*) FROM principals WHERE tenant_id <> (SELECT tenant_id FROM "
                                "principals WHERE username = 'root.admin')"),
                     1);

    /* Its administrator: the first login gives an enrolment-only token; it enrols TOTP, then logs in with
     * it and has its tenant's administration (security_admin), in that tenant only. */
    totp_user bt;
    enrol_totp_in(tb, "b.admin", TENANT_ADMIN_PASSWORD, &bt);
    sess b;
    expect(login_in(tb, "b.admin", TENANT_ADMIN_PASSWORD, NULL, NULL, &b, &st), RPC_UNAUTHENTICATED, &st,
           "tenant B's administrator without its second factor");
    char code_b[CRED_TOTP_CODE_MAX + 1];
    totp_next(&bt, code_b);
    rpc_code code = login_in(tb, "b.admin", TENANT_ADMIN_PASSWORD, code_b, NULL, &b, &st);
    expect(code, RPC_OK, &st, "Login to tenant B with TOTP");
    assert_false(b.enrol);
    authz_claims c;
    claims_of(&b, &c);
    assert_string_equal(c.tid, tb);
    assert_true(c.mfa);
    assert_int_equal(c.role_count, 1);
    assert_true(has_role(&c, "security_admin"));
    assert_true(has_perm(&c, "identity.users.manage"));
    assert_false(has_perm(&c, "platform.tenants.manage"));
    char badmin_id[sizeof c.sub];
    memcpy(badmin_id, c.sub, sizeof badmin_id);
    /* Its own tenant works ... */
    Alma__Identity__V1__User *u = NULL;
    expect(get_user(&b, badmin_id, &u, &st), RPC_OK, &st, "tenant B reads its own user");
    assert_string_equal(u->tenant_id, tb);
    assert_true(u->totp_enrolled);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    /* ... it creates users there (and only there: CreateUser acts in the caller's tenant) ... */
    const char *pcp[] = {"pcp_clinician"};
    Alma__Identity__V1__CreateUserRequest cu = ALMA__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    cu.username = (char *)"doc.b";
    cu.display_name = (char *)"Doctor B";
    cu.initial_password = (char *)USER_PASSWORD;
    cu.roles = (char **)pcp;
    cu.n_roles = 1;
    ProtobufCMessage *resp = NULL;
    expect(icall(IDN("CreateUser"), &cu.base, &alma__identity__v1__user__descriptor, b.bearer, &resp, &st),
           RPC_OK, &st, "CreateUser by tenant B's administrator");
    char docb[64];
    assert_string_equal(((Alma__Identity__V1__User *)resp)->tenant_id, tb);
    snprintf(docb, sizeof docb, "%s", ((Alma__Identity__V1__User *)resp)->principal_id);
    protobuf_c_message_free_unpacked(resp, NULL);
    sess db;
    expect(login_in(tb, "doc.b", USER_PASSWORD, NULL, NULL, &db, &st), RPC_OK, &st,
           "B's new user logs in to B");
    expect(login("doc.b", USER_PASSWORD, NULL, NULL, &db, &st), RPC_UNAUTHENTICATED, &st,
           "B's new user logging in to A");
    code = get_user(&admin, docb, NULL, &st);
    if (code != RPC_NOT_FOUND)
        fail_msg("A's administrator GetUser of B's user: %s", rpc_code_name(code));
    /* ... and its token manages no one in tenant A, here or in another service. */
    expect_decision(&b, "identity.users.manage", NULL, AUTHZ_PERMISSION_DENIED,
                    "B's administrator in tenant A");
    assert_int_equal(count_rows("SELECT count(*) FROM principals WHERE username = 'doc.b'"), 1);

    /* tenant A's principal is not there for it. */
    code = get_user(&b, victim, NULL, &st);
    if (!denied_or_not_found(code))
        fail_msg("tenant B GetUser of tenant A's user: %s", rpc_code_name(code));
    code = disable_user(&b, victim, &st);
    if (!denied_or_not_found(code))
        fail_msg("tenant B DisableUser of tenant A's user: %s", rpc_code_name(code));
    code = revoke_sessions(&b, victim, NULL, &st);
    if (!denied_or_not_found(code))
        fail_msg("tenant B RevokeSessions of tenant A's user: %s", rpc_code_name(code));
    code = grant_or_revoke(&b, true, victim, "scheduler", NULL, &st);
    if (!denied_or_not_found(code))
        fail_msg("tenant B GrantRole to tenant A's user: %s", rpc_code_name(code));
    Alma__Identity__V1__CheckResponse *cr = NULL;
    code = check(&b, victim, "referral.create", NULL, &cr, &st);
    if (code == RPC_OK) {
        assert_false(cr->allowed);
        protobuf_c_message_free_unpacked(&cr->base, NULL);
    } else if (!denied_or_not_found(code)) {
        fail_msg("tenant B Check of tenant A's user: %s", rpc_code_name(code));
    }
    /* A's username does not log in to B; a token of B is no good for A's resources anywhere. */
    expect(login_in(tb, "victim.a", USER_PASSWORD, NULL, NULL, &v, &st), RPC_UNAUTHENTICATED, &st,
           "A's user logging in to B");
    expect_decision(&b, "identity.users.read", NULL, AUTHZ_PERMISSION_DENIED, "B's token for A's tenant");

    /* Nothing of A changed: the user is active, its session lives on and it still logs in. */
    expect(get_user(&admin, victim, &u, &st), RPC_OK, &st, "GetUser victim");
    assert_int_equal(u->state, ALMA__IDENTITY__V1__USER_STATE__USER_STATE_ACTIVE);
    assert_int_equal(u->n_roles, 1);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    expect(refresh(&v, &st), RPC_OK, &st, "victim's session after B's attempts");
    expect_decision(&v, "referral.create", NULL, AUTHZ_OK, "victim's token after B's attempts");
    login_ok("victim.a", USER_PASSWORD, NULL, &v);

    /* Both acts are audited, before they were made: the tenant under the platform administrator's tenant,
     * its administrator under the new tenant (whose auditors see who made it). */
    Alma__Audit__V1__ListEventsResponse *l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_ADMIN);
    const Alma__Audit__V1__Event *e = find_event(l, tb, "change", "tenant created");
    assert_non_null(e);
    assert_string_equal(detail(e, "first_admin"), badmin_id);
    assert_string_equal(e->input->actor->principal_id, g_admin_id);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    l = audit_events_in(tb, ALMA__AUDIT__V1__ACTION__ACTION_ADMIN);
    e = find_event(l, badmin_id, "change", "user created");
    assert_non_null(e);
    assert_string_equal(detail(e, "new_roles"), "security_admin");
    assert_string_equal(e->input->actor->principal_id, g_admin_id);
    assert_non_null(find_event(l, docb, "change", "user created"));
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* CreateTenant needs platform.tenants.manage: not B's administrator, not a clinician. */
    char tc[80];
    snprintf(tc, sizeof tc, "%s-c", g_tenant);
    expect(create_tenant(&b, tc, &st), RPC_PERMISSION_DENIED, &st, "CreateTenant by a tenant administrator");
    expect(create_tenant(&v, tc, &st), RPC_PERMISSION_DENIED, &st, "CreateTenant by a clinician");
    expect(create_tenant(&admin, tc, &st), RPC_OK, &st, "CreateTenant after the refusals");
    /* No token at all. */
    sess none;
    memset(&none, 0, sizeof none);
    expect(create_tenant(&none, "t-nobody", &st), RPC_UNAUTHENTICATED, &st, "CreateTenant without a token");
}

/* ---- 4. Lockout ----------------------------------------------------------------------------------- */

/* Five wrong passwords, then the right one. */
static void lockout_sequence(const char *user, rpc_code codes[6], char msgs[6][256])
{
    for (int i = 0; i < 6; i++) {
        rpc_status st;
        sess s;
        codes[i] = login(user, i < 5 ? WRONG_PASSWORD : USER_PASSWORD, NULL, NULL, &s, &st);
        snprintf(msgs[i], 256, "%s", codes[i] == RPC_OK ? "" : st.message);
        /* Digits aside (the retry-after may differ by a second), the answer is the same text. */
        for (char *p = msgs[i]; *p; p++)
            if (*p >= '0' && *p <= '9')
                *p = '#';
    }
}

static void test_lockout_and_unknown_users(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char gone[64];
    create_user_ok(&admin, "locked.user", "pcp_clinician", NULL);
    create_user_ok(&admin, "other.user", "pcp_clinician", NULL);
    create_user_ok(&admin, "gone.user", "pcp_clinician", gone);

    rpc_code known[6], unknown[6];
    char kmsg[6][256], umsg[6][256];
    lockout_sequence("locked.user", known, kmsg);
    lockout_sequence("no.such.user", unknown, umsg);
    for (int i = 0; i < 5; i++) {
        if (known[i] != RPC_UNAUTHENTICATED || strcmp(kmsg[i], BAD_CREDS) != 0)
            fail_msg("attempt %d for a known user: %s (%s)", i + 1, rpc_code_name(known[i]), kmsg[i]);
    }
    if (known[5] != RPC_RESOURCE_EXHAUSTED)
        fail_msg("the right password while locked: %s, want RESOURCE_EXHAUSTED", rpc_code_name(known[5]));
    for (int i = 0; i < 6; i++) {
        if (unknown[i] != known[i] || strcmp(umsg[i], kmsg[i]) != 0)
            fail_msg("attempt %d: unknown user %s (%s), known user %s (%s)", i + 1, rpc_code_name(unknown[i]),
                     umsg[i], rpc_code_name(known[i]), kmsg[i]);
    }
    assert_non_null(strstr(kmsg[5], "retry after"));

    /* The lock is the user's, not everyone's. */
    sess o;
    login_ok("other.user", USER_PASSWORD, NULL, &o);
    /* A disabled user, an unknown tenant: the same answer as a wrong password. */
    expect(disable_user(&admin, gone, &st), RPC_OK, &st, "DisableUser");
    expect(login("gone.user", USER_PASSWORD, NULL, NULL, &o, &st), RPC_UNAUTHENTICATED, &st, "disabled user");
    assert_string_equal(st.message, BAD_CREDS);
    expect(login_in("no-such-tenant", "other.user", USER_PASSWORD, NULL, NULL, &o, &st), RPC_UNAUTHENTICATED,
           &st, "unknown tenant");
    assert_string_equal(st.message, BAD_CREDS);

    /* The lockout is audited as high severity, filed under the same actor as the failures ("unknown" for a
     * username that does not exist, never the username). */
    Alma__Audit__V1__ListEventsResponse *l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED);
    int locked = 0;
    for (size_t i = 0; i < l->n_events; i++) {
        const char *v = detail(l->events[i], "locked");
        if (v && strcmp(v, "true") == 0) {
            locked++;
            assert_int_equal(l->events[i]->input->severity, ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH);
        }
        assert_null(strstr(l->events[i]->input->actor->principal_id, "no.such.user"));
    }
    assert_int_equal(locked, 2);
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

/* ---- 5. Sessions ---------------------------------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep until `ms` milliseconds after the start of second `epoch` (wall clock, as the service counts). */
static void sleep_until(int64_t epoch, int ms)
{
    int64_t wait = epoch * 1000 + ms - wall_ms();
    if (wait > 0)
        testproc_sleep_ms((int)wait);
}

/* Identity itself refuses a revoked token within the second too (its own authorizer, fed the same way). */
static void identity_rejects(const sess *s, int64_t t0)
{
    for (;;) {
        rpc_status st;
        rpc_code code = get_user(s, NULL, NULL, &st);
        if (code == RPC_UNAUTHENTICATED)
            break;
        if (code != RPC_OK)
            fail_msg("GetUser with a revoked token: %s (%s)", rpc_code_name(code), st.message);
        if (testproc_now_ms() - t0 > REVOKE_GIVE_UP)
            fail_msg("identity still accepts a revoked token after %d ms", REVOKE_GIVE_UP);
        testproc_sleep_ms(POLL_MS);
    }
    int64_t ms = testproc_now_ms() - t0;
    if (ms > REVOKE_MAX_MS)
        fail_msg("identity refused a revoked token only after %" PRId64 " ms", ms);
}

static void test_sessions(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char one[64], two[64];
    create_user_ok(&admin, "sess.one", "pcp_clinician", one);
    create_user_ok(&admin, "sess.two", "pcp_clinician", two);

    /* Idle timeout (2 s): a session not refreshed for longer is over, well before its absolute end. */
    sleep_until((int64_t)time(NULL) + 1, 100);
    sess a;
    login_ok("sess.one", USER_PASSWORD, NULL, &a);
    int64_t t = a.abs_end - 4;
    assert_true(t == (int64_t)time(NULL) || t + 1 == (int64_t)time(NULL));
    assert_true(a.exp <= a.abs_end);
    sleep_until(t + 2, 700);
    expect(refresh(&a, &st), RPC_UNAUTHENTICATED, &st, "Refresh after the idle timeout");
    assert_string_equal(st.message, "session is not valid");

    /* Absolute timeout (4 s): refreshing every second keeps it alive until its end, not after. */
    sleep_until((int64_t)time(NULL) + 1, 100);
    sess b;
    login_ok("sess.one", USER_PASSWORD, NULL, &b);
    t = b.abs_end - 4;
    int64_t abs_end = b.abs_end;
    assert_true(t == (int64_t)time(NULL) || t + 1 == (int64_t)time(NULL));
    for (int i = 1; i <= 3; i++) {
        sleep_until(t + i, 150);
        expect(refresh(&b, &st), RPC_OK, &st, "Refresh before the absolute end");
        assert_int_equal(b.abs_end, abs_end);
        assert_true(b.exp <= abs_end);
        expect_decision(&b, "referral.create", NULL, AUTHZ_OK, "refreshed token");
    }
    sleep_until(t + 4, 600);
    expect(refresh(&b, &st), RPC_UNAUTHENTICATED, &st, "Refresh after the absolute end");

    /* Logout: the session is over and its token dead everywhere within a second. */
    admin_login(&admin);
    sess c, c2;
    login_ok("sess.one", USER_PASSWORD, NULL, &c);
    login_ok("sess.one", USER_PASSWORD, NULL, &c2);
    expect(get_user(&c, NULL, NULL, &st), RPC_OK, &st, "GetUser self");
    expect_decision(&c, "referral.create", NULL, AUTHZ_OK, "before logout");
    logout_timed(&c);
    identity_rejects(&c, testproc_now_ms());
    expect(refresh(&c, &st), RPC_UNAUTHENTICATED, &st, "Refresh after logout");
    /* Only that session: the user's other one goes on. */
    expect(refresh(&c2, &st), RPC_OK, &st, "the other session after logout");
    expect_decision(&c2, "referral.create", NULL, AUTHZ_OK, "the other session's token");
    /* Logging out someone else's session: refused. */
    Alma__Identity__V1__LogoutRequest lreq = ALMA__IDENTITY__V1__LOGOUT_REQUEST__INIT;
    lreq.session_id = c2.sid;
    expect(icall(IDN("Logout"), &lreq.base, &alma__identity__v1__logout_response__descriptor, admin.bearer,
                 NULL, &st),
           RPC_PERMISSION_DENIED, &st, "Logout of another user's session");
    expect(refresh(&c2, &st), RPC_OK, &st, "the session after someone else's Logout");

    /* DisableUser: sessions end, tokens die, no new login. */
    sess d;
    login_ok("sess.two", USER_PASSWORD, NULL, &d);
    expect_decision(&d, "referral.create", NULL, AUTHZ_OK, "before DisableUser");
    disable_timed(&admin, two, &d);
    identity_rejects(&d, testproc_now_ms());
    expect(refresh(&d, &st), RPC_UNAUTHENTICATED, &st, "Refresh after DisableUser");
    expect(login("sess.two", USER_PASSWORD, NULL, NULL, &d, &st), RPC_UNAUTHENTICATED, &st,
           "Login after DisableUser");
    Alma__Identity__V1__User *u = NULL;
    expect(get_user(&admin, two, &u, &st), RPC_OK, &st, "GetUser disabled");
    assert_int_equal(u->state, ALMA__IDENTITY__V1__USER_STATE__USER_STATE_DISABLED);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    expect(disable_user(&admin, g_admin_id, &st), RPC_FAILED_PRECONDITION, &st, "disabling oneself");

    /* RevokeSessions: every session of the user, and what it counted. */
    admin_login(&admin);
    sess e;
    login_ok("sess.one", USER_PASSWORD, NULL, &e);
    int revoked = -1;
    expect(revoke_sessions(&admin, one, &revoked, &st), RPC_OK, &st, "RevokeSessions");
    assert_int_equal(revoked, 2); /* c2 and e */
    int64_t t0 = testproc_now_ms();
    assert_true(ms_until_rejected(&e, "referral.create", t0) <= REVOKE_MAX_MS);
    assert_true(ms_until_rejected(&c2, "referral.create", t0) <= REVOKE_MAX_MS);
    identity_rejects(&e, t0);
    expect(refresh(&e, &st), RPC_UNAUTHENTICATED, &st, "Refresh after RevokeSessions");
    expect(refresh(&c2, &st), RPC_UNAUTHENTICATED, &st, "Refresh after RevokeSessions (2)");
    /* A login after the revocation is not caught by it, in identity or elsewhere. */
    sess g;
    login_ok("sess.one", USER_PASSWORD, NULL, &g);
    expect(get_user(&g, NULL, NULL, &st), RPC_OK, &st, "GetUser with a token issued after RevokeSessions");
    expect_decision(&g, "referral.create", NULL, AUTHZ_OK, "a token issued after RevokeSessions");
    /* A user without identity.sessions.revoke cannot end someone else's sessions. */
    expect(revoke_sessions(&g, g_admin_id, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "RevokeSessions of another user by a clinician");
}

/* ---- 6. Revocation across services ------------------------------------------------------------------ */

static void test_revocation_reaches_another_service(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char x1[64], x2[64], x3[64];
    create_user_ok(&admin, "x.one", "pcp_clinician", x1);
    create_user_ok(&admin, "x.two", "pcp_clinician", x2);
    create_user_ok(&admin, "x.three", "pcp_clinician", x3);
    sess a, a2, b, c1, c2;
    login_ok("x.one", USER_PASSWORD, NULL, &a);
    login_ok("x.one", USER_PASSWORD, NULL, &a2);
    login_ok("x.two", USER_PASSWORD, NULL, &b);
    login_ok("x.three", USER_PASSWORD, NULL, &c1);
    login_ok("x.three", USER_PASSWORD, NULL, &c2);
    authz_decision d;
    assert_int_equal(decide(&a, "referral.create", NULL, &d), AUTHZ_OK);
    assert_string_equal(d.decided_by, "role");
    const sess *all[] = {&a2, &b, &c1, &c2, &admin};
    for (size_t i = 0; i < BASE_ARRAY_LEN(all); i++)
        expect_decision(all[i], i == 4 ? "identity.users.manage" : "referral.create", NULL, AUTHZ_OK,
                        "before any revocation");

    /* Each revocation, timed from the moment the call is made (revoke_and_time). */
    logout_timed(&a);
    disable_timed(&admin, x2, &b);
    revoke_sessions_timed(&admin, x3, &c1);
    expect_decision(&c2, "referral.create", NULL, AUTHZ_UNAUTHENTICATED, "x.three's other session");
    /* The revoked sessions are over in identity too. */
    expect(refresh(&a, &st), RPC_UNAUTHENTICATED, &st, "Refresh after Logout");
    expect(refresh(&b, &st), RPC_UNAUTHENTICATED, &st, "Refresh after DisableUser");
    expect(refresh(&c1, &st), RPC_UNAUTHENTICATED, &st, "Refresh after RevokeSessions");
    expect(refresh(&c2, &st), RPC_UNAUTHENTICATED, &st, "Refresh after RevokeSessions (2)");
    /* Revocation is targeted: the user's other session and the administrator are untouched. */
    expect_decision(&a2, "referral.create", NULL, AUTHZ_OK, "x.one's other session");
    expect_decision(&admin, "identity.users.manage", NULL, AUTHZ_OK, "the administrator");

    /* An administrator's password reset ends the user's sessions too; the new password works at once. */
    expect(set_password_of(&admin, x1, NULL, "Reset-By-Admin-Passw0rd", &st), RPC_OK, &st,
           "SetPassword by an administrator");
    assert_true(ms_until_rejected(&a2, "referral.create", testproc_now_ms()) <= REVOKE_MAX_MS);
    expect(refresh(&a2, &st), RPC_UNAUTHENTICATED, &st, "Refresh after a password reset");
    expect(login("x.one", USER_PASSWORD, NULL, NULL, &a, &st), RPC_UNAUTHENTICATED, &st, "the old password");
    login_ok("x.one", "Reset-By-Admin-Passw0rd", NULL, &a);
    expect_decision(&a, "referral.create", NULL, AUTHZ_OK, "a token after the reset");
    /* Changing one's own password needs the current one, and does not end one's sessions. */
    expect(set_password(&a, "Reset-By-Admin-Passw0rd", "Chosen-By-User-Passw0rd", &st), RPC_OK, &st,
           "SetPassword by the user");
    expect_decision(&a, "referral.create", NULL, AUTHZ_OK, "the user's token after its own change");
    login_ok("x.one", "Chosen-By-User-Passw0rd", NULL, &a2);
    /* A clinician cannot reset someone else's password. */
    expect(set_password_of(&a, g_admin_id, NULL, "Taken-Over-Passw0rd!", &st), RPC_PERMISSION_DENIED, &st,
           "SetPassword of another user by a clinician");
}

/* ---- 7. Roles ------------------------------------------------------------------------------------- */

static rpc_code put_role(const sess *caller, const char *role_id, const char *const *perms, size_t n,
                         int64_t expected_version, Alma__Identity__V1__Role **ret, rpc_status *st)
{
    Alma__Identity__V1__Role r = ALMA__IDENTITY__V1__ROLE__INIT;
    r.role_id = (char *)role_id;
    r.display_name = (char *)"Front desk";
    r.permissions = (char **)perms;
    r.n_permissions = n;
    r.version = expected_version;
    Alma__Identity__V1__PutRoleRequest req = ALMA__IDENTITY__V1__PUT_ROLE_REQUEST__INIT;
    req.role = &r;
    return icall(IDN("PutRole"), &req.base, &alma__identity__v1__role__descriptor, caller->bearer,
                 (ProtobufCMessage **)ret, st);
}

static void test_roles_grants_and_audit(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char r1[64];
    create_user_ok(&admin, "role.user", "pcp_clinician", r1);
    sess u;
    login_ok("role.user", USER_PASSWORD, NULL, &u);
    authz_claims c;
    claims_of(&u, &c);
    assert_int_equal(c.role_count, 1);
    assert_false(has_perm(&c, "care.relationships.manage"));
    expect_decision(&u, "care.relationships.manage", NULL, AUTHZ_PERMISSION_DENIED, "before the grant");

    /* GrantRole: the user's tokens carry the old rights, so they die; Refresh issues the new ones. */
    Alma__Identity__V1__User *out = NULL;
    grant_timed(&admin, true, r1, "care_coordinator", &u);
    expect(get_user(&admin, r1, &out, &st), RPC_OK, &st, "GetUser after GrantRole");
    assert_int_equal(out->n_roles, 2);
    protobuf_c_message_free_unpacked(&out->base, NULL);
    expect(grant_or_revoke(&admin, true, r1, "care_coordinator", NULL, &st), RPC_ALREADY_EXISTS, &st,
           "GrantRole twice");
    expect(refresh(&u, &st), RPC_OK, &st, "Refresh after GrantRole");
    claims_of(&u, &c);
    assert_true(has_role(&c, "care_coordinator"));
    assert_true(has_perm(&c, "care.relationships.manage"));
    /* The token Refresh issued right after the change is good, here and elsewhere. */
    expect(get_user(&u, NULL, NULL, &st), RPC_OK, &st, "GetUser with the refreshed token");
    expect_decision(&u, "care.relationships.manage", NULL, AUTHZ_OK, "after GrantRole and Refresh");

    /* RevokeRole: the same, the other way. */
    grant_timed(&admin, false, r1, "care_coordinator", &u);
    expect(get_user(&admin, r1, &out, &st), RPC_OK, &st, "GetUser after RevokeRole");
    assert_int_equal(out->n_roles, 1);
    protobuf_c_message_free_unpacked(&out->base, NULL);
    expect(grant_or_revoke(&admin, false, r1, "care_coordinator", NULL, &st), RPC_NOT_FOUND, &st,
           "RevokeRole twice");
    expect(refresh(&u, &st), RPC_OK, &st, "Refresh after RevokeRole");
    claims_of(&u, &c);
    assert_false(has_role(&c, "care_coordinator"));
    assert_false(has_perm(&c, "care.relationships.manage"));
    expect_decision(&u, "care.relationships.manage", NULL, AUTHZ_PERMISSION_DENIED, "after RevokeRole");
    expect_decision(&u, "referral.create", NULL, AUTHZ_OK, "the role it kept");

    /* No escalation: a security administrator (not a platform one) cannot hand out platform_admin, to
     * anyone, itself included; it can give out roles that do not administer access. */
    char sa[64];
    create_user_ok(&admin, "sec.admin", "security_admin", sa);
    totp_user sat;
    enrol_totp("sec.admin", &sat);
    char code[CRED_TOTP_CODE_MAX + 1];
    totp_next(&sat, code);
    sess s;
    login_ok("sec.admin", USER_PASSWORD, code, &s);
    expect(grant_or_revoke(&s, true, r1, "platform_admin", NULL, &st), RPC_PERMISSION_DENIED, &st,
           "security admin grants platform_admin");
    expect(grant_or_revoke(&s, true, sa, "platform_admin", NULL, &st), RPC_PERMISSION_DENIED, &st,
           "security admin grants itself platform_admin");
    const char *pa[] = {"platform_admin"};
    expect(create_user(&s, "new.platform", USER_PASSWORD, pa, 1, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "security admin creates a platform admin");
    const char *perms_pa[] = {"platform.tenants.manage"};
    expect(put_role(&s, "shadow_platform", perms_pa, 1, 0, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "security admin defines a role with platform permissions");
    Alma__Identity__V1__User *got = NULL;
    expect(get_user(&admin, r1, &got, &st), RPC_OK, &st, "GetUser after the refused grants");
    assert_int_equal(got->n_roles, 1);
    assert_string_equal(got->roles[0], "pcp_clinician");
    protobuf_c_message_free_unpacked(&got->base, NULL);
    expect(get_user(&admin, sa, &got, &st), RPC_OK, &st, "GetUser security admin");
    assert_int_equal(got->n_roles, 1);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    /* A clinician cannot grant at all. */
    expect(grant_or_revoke(&u, true, r1, "scheduler", NULL, &st), RPC_PERMISSION_DENIED, &st,
           "clinician grants a role");
    expect(grant_or_revoke(&s, true, r1, "scheduler", NULL, &st), RPC_OK, &st,
           "security admin grants a clinical role");

    /* PutRole: a tenant role, versioned; built-in roles are data nobody changes here. */
    Alma__Identity__V1__Role *role = NULL;
    const char *v1[] = {"identity.users.read"};
    const char *v2[] = {"identity.users.read", "identity.roles.read"};
    expect(put_role(&admin, "front_desk", v1, 1, 0, &role, &st), RPC_OK, &st, "PutRole (create)");
    assert_int_equal(role->version, 1);
    assert_false(role->built_in);
    assert_string_equal(role->tenant_id, g_tenant);
    protobuf_c_message_free_unpacked(&role->base, NULL);
    expect(put_role(&admin, "front_desk", v2, 2, 1, &role, &st), RPC_OK, &st, "PutRole (change)");
    assert_int_equal(role->version, 2);
    assert_int_equal(role->n_permissions, 2);
    protobuf_c_message_free_unpacked(&role->base, NULL);
    expect(put_role(&admin, "front_desk", v1, 1, 1, NULL, &st), RPC_FAILED_PRECONDITION, &st,
           "PutRole with a stale version");
    const char *clinical[] = {"phi.read.clinical"};
    expect(put_role(&admin, "pcp_clinician", clinical, 1, 0, NULL, &st), RPC_FAILED_PRECONDITION, &st,
           "PutRole of a built-in role");
    Alma__Identity__V1__ListRolesRequest lreq = ALMA__IDENTITY__V1__LIST_ROLES_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    expect(icall(IDN("ListRoles"), &lreq.base, &alma__identity__v1__list_roles_response__descriptor,
                 admin.bearer, &resp, &st),
           RPC_OK, &st, "ListRoles");
    Alma__Identity__V1__ListRolesResponse *lr = (Alma__Identity__V1__ListRolesResponse *)resp;
    bool found = false;
    for (size_t i = 0; i < lr->n_roles; i++)
        if (strcmp(lr->roles[i]->role_id, "front_desk") == 0) {
            found = true;
            assert_int_equal(lr->roles[i]->version, 2);
        }
    assert_true(found);
    assert_true(lr->n_roles >= 11);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* The audit log has every change with the old and the new value, and who made it. */
    Alma__Audit__V1__ListEventsResponse *l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_ADMIN);
    const Alma__Audit__V1__Event *e = find_event(l, "front_desk", "new_version", "2");
    assert_non_null(e);
    assert_string_equal(e->input->resource_type, "Role");
    assert_string_equal(e->input->actor->principal_id, g_admin_id);
    assert_string_equal(detail(e, "old_version"), "1");
    assert_string_equal(detail(e, "old_permissions"), "identity.users.read");
    assert_string_equal(detail(e, "new_permissions"), "identity.roles.read,identity.users.read");
    e = find_event(l, "front_desk", "new_version", "1");
    assert_non_null(e);
    assert_string_equal(detail(e, "old_version"), "0");
    assert_string_equal(detail(e, "old_permissions"), "");
    e = find_event(l, r1, "change", "role granted");
    assert_non_null(e);
    assert_string_equal(detail(e, "old_held"), "false");
    assert_string_equal(detail(e, "new_held"), "true");
    assert_string_equal(detail(e, "role"), "care_coordinator");
    e = find_event(l, r1, "change", "role revoked");
    assert_non_null(e);
    assert_string_equal(detail(e, "old_held"), "true");
    assert_string_equal(detail(e, "new_held"), "false");
    e = find_event(l, r1, "role", "scheduler");
    assert_non_null(e);
    assert_string_equal(e->input->actor->principal_id, sa);
    e = find_event(l, sa, "change", "user created");
    assert_non_null(e);
    assert_string_equal(detail(e, "new_roles"), "security_admin");
    /* Nothing about the refused attempts was recorded as a change. */
    assert_null(find_event(l, "shadow_platform", NULL, NULL));
    assert_null(find_event(l, r1, "role", "platform_admin"));
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* PutRole reaches the role's holders within a second: their tokens carry the old permissions, so every
     * holder's are revoked (one wait for all of them); a Refresh carries the new ones. Non-holders are not
     * touched. */
    const char *d1[] = {"referral.review"};
    const char *d2[] = {"referral.create", "referral.review"};
    expect(put_role(&admin, "desk_role", d1, 1, 0, NULL, &st), RPC_OK, &st, "PutRole desk_role");
    char h1[64], h2[64];
    create_user_ok(&admin, "desk.one", "desk_role", h1);
    create_user_ok(&admin, "desk.two", "desk_role", h2);
    create_user_ok(&admin, "not.desk", "pcp_clinician", NULL);
    sess s1, s2, sn;
    login_ok("desk.one", USER_PASSWORD, NULL, &s1);
    login_ok("desk.two", USER_PASSWORD, NULL, &s2);
    login_ok("not.desk", USER_PASSWORD, NULL, &sn);
    expect_decision(&s1, "referral.review", NULL, AUTHZ_OK, "a holder before the role change");
    expect_decision(&s2, "referral.create", NULL, AUTHZ_PERMISSION_DENIED, "a holder before the role change");
    Alma__Identity__V1__Role dr = ALMA__IDENTITY__V1__ROLE__INIT;
    dr.role_id = (char *)"desk_role";
    dr.display_name = (char *)"Front desk";
    dr.permissions = (char **)d2;
    dr.n_permissions = 2;
    Alma__Identity__V1__PutRoleRequest dreq = ALMA__IDENTITY__V1__PUT_ROLE_REQUEST__INIT;
    dreq.role = &dr;
    revoke_and_time(IDN("PutRole"), &dreq.base, &alma__identity__v1__role__descriptor, &admin, &s1,
                    "PutRole");
    expect_decision(&s2, "referral.review", NULL, AUTHZ_UNAUTHENTICATED, "the other holder after PutRole");
    identity_rejects(&s2, testproc_now_ms());
    expect_decision(&sn, "referral.create", NULL, AUTHZ_OK, "a non-holder after PutRole");
    expect_decision(&admin, "identity.users.manage", NULL, AUTHZ_OK, "the administrator after PutRole");
    sess *holders[] = {&s1, &s2};
    for (size_t i = 0; i < BASE_ARRAY_LEN(holders); i++) {
        expect(refresh(holders[i], &st), RPC_OK, &st, "a holder's Refresh after PutRole");
        claims_of(holders[i], &c);
        assert_true(has_role(&c, "desk_role"));
        assert_true(has_perm(&c, "referral.create"));
        expect_decision(holders[i], "referral.create", NULL, AUTHZ_OK, "a holder's refreshed token");
    }
    /* A PutRole that changes nothing revokes nothing. */
    expect(put_role(&admin, "desk_role", d2, 2, 0, &role, &st), RPC_OK, &st, "PutRole without a change");
    assert_int_equal(role->version, 2);
    protobuf_c_message_free_unpacked(&role->base, NULL);
    expect_decision(&s1, "referral.create", NULL, AUTHZ_OK, "a holder after a PutRole that changed nothing");
    l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_ADMIN);
    e = find_event(l, "desk_role", "new_version", "2");
    assert_non_null(e);
    assert_string_equal(detail(e, "change"), "role changed");
    assert_string_equal(detail(e, "old_permissions"), "referral.review");
    assert_string_equal(detail(e, "new_permissions"), "referral.create,referral.review");
    assert_non_null(find_event(l, "desk_role", "change", "role unchanged"));
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

/* ---- 8. Care relationships and break-glass ---------------------------------------------------------- */

static rpc_code create_relationship(const sess *caller, const char *clinician, const char *patient, int kind,
                                    char rel_id[64], rpc_status *st)
{
    Alma__Identity__V1__CareRelationship r = ALMA__IDENTITY__V1__CARE_RELATIONSHIP__INIT;
    r.clinician_id = (char *)clinician;
    r.patient_ref = (char *)patient;
    r.kind = kind;
    Alma__Identity__V1__CreateCareRelationshipRequest req =
        ALMA__IDENTITY__V1__CREATE_CARE_RELATIONSHIP_REQUEST__INIT;
    req.relationship = &r;
    ProtobufCMessage *resp = NULL;
    rpc_code code = icall(IDN("CreateCareRelationship"), &req.base,
                          &alma__identity__v1__care_relationship__descriptor, caller->bearer, &resp, st);
    if (code == RPC_OK) {
        Alma__Identity__V1__CareRelationship *o = (Alma__Identity__V1__CareRelationship *)resp;
        assert_string_equal(o->clinician_id, clinician);
        assert_string_equal(o->patient_ref, patient);
        assert_string_equal(o->tenant_id, g_tenant);
        assert_null(o->end_time);
        snprintf(rel_id, 64, "%s", o->relationship_id);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

static rpc_code end_relationship(const sess *caller, const char *rel_id, rpc_status *st)
{
    Alma__Identity__V1__EndCareRelationshipRequest req =
        ALMA__IDENTITY__V1__END_CARE_RELATIONSHIP_REQUEST__INIT;
    req.relationship_id = (char *)rel_id;
    ProtobufCMessage *resp = NULL;
    rpc_code code = icall(IDN("EndCareRelationship"), &req.base,
                          &alma__identity__v1__care_relationship__descriptor, caller->bearer, &resp, st);
    if (code == RPC_OK) {
        assert_non_null(((Alma__Identity__V1__CareRelationship *)resp)->end_time);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

/* Check by the administrator (identity.users.read) about another principal. */
static bool check_allowed(const sess *admin, const char *principal, const char *patient, char *decided_by,
                          size_t cap)
{
    Alma__Identity__V1__CheckResponse *r = NULL;
    rpc_status st;
    expect(check(admin, principal, "phi.read.clinical", patient, &r, &st), RPC_OK, &st, "Check");
    bool allowed = r->allowed;
    snprintf(decided_by, cap, "%s", r->decided_by);
    assert_true(r->reason[0] != '\0');
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return allowed;
}

/* SQL as the superuser in the identity schema, with at most one parameter ($1; NULL: none). */
static void idn_exec1(const char *sql, const char *p1)
{
    db_conn *c = NULL;
    const char *p[] = {p1};
    MUST(db_pool_acquire(g_idn_db, 5000, &c));
    MUST(db_exec(c, sql, p1 ? 1 : 0, p1 ? p : NULL, NULL));
    db_conn_release(c);
}

static void idn_exec(const char *sql)
{
    idn_exec1(sql, NULL);
}

static int64_t count_rows1(const char *sql, const char *p1)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    const char *p[] = {p1};
    MUST(db_pool_acquire(g_idn_db, 5000, &c));
    MUST(db_exec(c, sql, p1 ? 1 : 0, p1 ? p : NULL, &res));
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

static int64_t count_rows(const char *sql)
{
    return count_rows1(sql, NULL);
}

static void test_care_relationships_and_break_glass(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char doc[64], coord[64];
    create_user_ok(&admin, "dr.eight", "pcp_clinician", doc);
    create_user_ok(&admin, "coord.eight", "care_coordinator", coord);
    create_user_ok(&admin, "priv.eight", "privacy_officer", NULL);
    sess d, co, p;
    login_ok("dr.eight", USER_PASSWORD, NULL, &d);
    login_ok("coord.eight", USER_PASSWORD, NULL, &co);
    totp_user pt;
    enrol_totp("priv.eight", &pt);
    char code[CRED_TOTP_CODE_MAX + 1];
    totp_next(&pt, code);
    login_ok("priv.eight", USER_PASSWORD, code, &p);
    char by[128], want[128];

    /* No relationship: denied by identity and by the other service, and the denial is audited. */
    assert_false(check_allowed(&admin, doc, PT_1, by, sizeof by));
    assert_string_equal(by, "");
    expect_decision(&d, "phi.read.clinical", PT_1, AUTHZ_PERMISSION_DENIED, "no relationship");
    Alma__Audit__V1__ListEventsResponse *l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED);
    assert_int_equal(l->n_events, 1);
    assert_string_equal(l->events[0]->input->patient_ref, PT_1);
    assert_string_equal(l->events[0]->input->actor->principal_id, doc);
    assert_int_equal(l->events[0]->input->outcome, ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED);
    assert_int_equal(l->events[0]->input->severity, ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH);
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* A treating relationship (made by the care coordinator; a clinician cannot make its own). */
    char rel[64];
    expect(create_relationship(&d, doc, PT_1,
                               ALMA__IDENTITY__V1__RELATIONSHIP_KIND__RELATIONSHIP_KIND_PRIMARY_CARE, rel,
                               &st),
           RPC_PERMISSION_DENIED, &st, "a clinician makes its own relationship");
    expect(create_relationship(&co, doc, PT_1,
                               ALMA__IDENTITY__V1__RELATIONSHIP_KIND__RELATIONSHIP_KIND_PRIMARY_CARE, rel,
                               &st),
           RPC_OK, &st, "CreateCareRelationship");
    snprintf(want, sizeof want, "relationship:%s", rel);
    assert_true(check_allowed(&admin, doc, PT_1, by, sizeof by));
    assert_string_equal(by, want);
    authz_decision dec;
    assert_int_equal(decide(&d, "phi.read.clinical", PT_1, &dec), AUTHZ_OK);
    assert_string_equal(dec.decided_by, want);
    /* For that patient only. */
    assert_false(check_allowed(&admin, doc, PT_2, by, sizeof by));
    expect_decision(&d, "phi.read.clinical", PT_2, AUTHZ_PERMISSION_DENIED, "another patient");
    /* Ended: denied again. */
    expect(end_relationship(&co, rel, &st), RPC_OK, &st, "EndCareRelationship");
    assert_false(check_allowed(&admin, doc, PT_1, by, sizeof by));
    expect_decision(&d, "phi.read.clinical", PT_1, AUTHZ_PERMISSION_DENIED, "ended relationship");
    expect(end_relationship(&co, rel, &st), RPC_FAILED_PRECONDITION, &st, "EndCareRelationship twice");

    /* Break-glass: a reason of substance and 1..240 minutes. */
    expect(break_glass(&d, PT_2, "need it", 30, NULL, &st), RPC_INVALID_ARGUMENT, &st, "short reason");
    expect(break_glass(&d, PT_2, BG_REASON, 0, NULL, &st), RPC_INVALID_ARGUMENT, &st, "0 minutes");
    expect(break_glass(&d, PT_2, BG_REASON, 500, NULL, &st), RPC_INVALID_ARGUMENT, &st, "500 minutes");
    expect(break_glass(&co, PT_2, BG_REASON, 1, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "break-glass without phi.break_glass");
    assert_int_equal(count_rows("SELECT count(*) FROM break_glass_grants"), 0);
    Alma__Identity__V1__BreakGlassGrant *g = NULL;
    expect(break_glass(&d, PT_2, BG_REASON, 1, &g, &st), RPC_OK, &st, "BreakGlass");
    char grant[64];
    snprintf(grant, sizeof grant, "%s", g->grant_id);
    assert_string_equal(g->clinician_id, doc);
    assert_string_equal(g->patient_ref, PT_2);
    assert_string_equal(g->reason, BG_REASON);
    assert_int_equal(g->end_time->seconds - g->start_time->seconds, 60);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    snprintf(want, sizeof want, "break_glass:%s", grant);
    assert_true(check_allowed(&admin, doc, PT_2, by, sizeof by));
    assert_string_equal(by, want);
    assert_int_equal(decide(&d, "phi.read.clinical", PT_2, &dec), AUTHZ_OK);
    assert_string_equal(dec.decided_by, want);
    /* The grant is the clinician's alone. */
    assert_false(check_allowed(&admin, coord, PT_2, by, sizeof by));

    /* Audited as high severity, and listed for the privacy officer (only). */
    l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS);
    assert_int_equal(l->n_events, 1);
    assert_int_equal(l->events[0]->input->severity, ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH);
    assert_string_equal(l->events[0]->input->patient_ref, PT_2);
    assert_string_equal(l->events[0]->input->resource_id, grant);
    assert_string_equal(l->events[0]->input->actor->principal_id, doc);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    Alma__Identity__V1__ListBreakGlassGrantsResponse *lg = NULL;
    expect(list_break_glass(&p, &lg, &st), RPC_OK, &st, "ListBreakGlassGrants");
    assert_int_equal(lg->n_grants, 1);
    assert_string_equal(lg->grants[0]->grant_id, grant);
    assert_string_equal(lg->grants[0]->clinician_id, doc);
    assert_string_equal(lg->grants[0]->reason, BG_REASON);
    protobuf_c_message_free_unpacked(&lg->base, NULL);
    expect(list_break_glass(&d, NULL, &st), RPC_PERMISSION_DENIED, &st, "clinician lists break-glass");

    /* Expiry. A test cannot wait out the minute, so what is shown is: (1) the mirror every service reads
     * expires with the grant (its TTL is at most the minute asked for), (2) a grant whose minute is over
     * (stored by the superuser through the store, with a start two minutes ago) allows nothing in Check, and
     * (3) a mirror value past its end is refused by an authorizer even if the key were still there (the end
     * is in the value, not only in the TTL). The clock running out on a live grant itself is not shown. */
    char key[256];
    snprintf(key, sizeof key, "authz:bg:%s:%s:%s", g_tenant, doc, PT_2);
    int64_t ttl_ms = -1;
    MUST(cache_ttl(cache_thread_conn(&g_cache), key, &ttl_ms));
    assert_true(ttl_ms > 0 && ttl_ms <= 60000);
    identity_break_glass_new old = {.tenant_id = g_tenant,
                                    .clinician_id = doc,
                                    .patient_ref = PT_3,
                                    .reason = BG_REASON,
                                    .duration_minutes = 1,
                                    .start_us = ((int64_t)time(NULL) - 120) * 1000000};
    identity_break_glass expired;
    MUST(identity_store_break_glass_create(g_idn_db, &old, &expired));
    assert_false(check_allowed(&admin, doc, PT_3, by, sizeof by));
    expect_decision(&d, "phi.read.clinical", PT_3, AUTHZ_PERMISSION_DENIED, "expired grant (no mirror)");
    char stale[128];
    int n = snprintf(stale, sizeof stale, "%s %lld", expired.grant_id, (long long)(time(NULL) - 60));
    snprintf(key, sizeof key, "authz:bg:%s:%s:%s", g_tenant, doc, PT_3);
    MUST(cache_set(cache_thread_conn(&g_cache), key, stale, (size_t)n, 60000, CACHE_SET_ALWAYS, NULL));
    expect_decision(&d, "phi.read.clinical", PT_3, AUTHZ_PERMISSION_DENIED, "expired grant (stale mirror)");

    /* Redis holds only a mirror: with the keys lost, a restart of identity rebuilds them from Postgres
     * (the open relationship and the live grant, not the ended or expired ones), and the tokens issued
     * before the restart still verify (the signing key is kept, sealed, in the store). */
    expect(create_relationship(&co, doc, PT_4,
                               ALMA__IDENTITY__V1__RELATIONSHIP_KIND__RELATIONSHIP_KIND_CARE_TEAM, rel, &st),
           RPC_OK, &st, "CreateCareRelationship (2)");
    const char *patients[] = {PT_1, PT_2, PT_3, PT_4};
    for (size_t i = 0; i < BASE_ARRAY_LEN(patients); i++) {
        for (int bg = 0; bg < 2; bg++) {
            snprintf(key, sizeof key, "authz:%s:%s:%s:%s", bg ? "bg" : "rel", g_tenant, doc, patients[i]);
            MUST(cache_del(cache_thread_conn(&g_cache), key, NULL));
        }
    }
    expect_decision(&d, "phi.read.clinical", PT_4, AUTHZ_PERMISSION_DENIED, "mirror lost");
    authz_free(g_az); /* its key fetch reads the address that changes now */
    g_az = NULL;
    rpc_channel_close(g_ch);
    g_ch = NULL;
    assert_true(stop_clean(&g_idn, "alma-identity"));
    testproc_daemon_start(&g_idn);
    snprintf(g_idn_addr, sizeof g_idn_addr, "%s", g_idn.api_addr);
    rpc_client_tls tls = testrpc_client_tls("test-client");
    MUST(rpc_channel_open(g_idn.api_addr, &tls, &g_ch));
    assert_int_equal(decide(&d, "phi.read.clinical", PT_4, &dec), AUTHZ_OK);
    snprintf(want, sizeof want, "relationship:%s", rel);
    assert_string_equal(dec.decided_by, want);
    assert_int_equal(decide(&d, "phi.read.clinical", PT_2, &dec), AUTHZ_OK);
    snprintf(want, sizeof want, "break_glass:%s", grant);
    assert_string_equal(dec.decided_by, want);
    expect_decision(&d, "phi.read.clinical", PT_1, AUTHZ_PERMISSION_DENIED,
                    "ended relationship after restart");
    expect_decision(&d, "phi.read.clinical", PT_3, AUTHZ_PERMISSION_DENIED, "expired grant after restart");
    expect(get_user(&d, NULL, NULL, &st), RPC_OK, &st, "a token from before the restart");
    assert_true(check_allowed(&admin, doc, PT_4, by, sizeof by));

    /* Check finds a live grant however many others the tenant has: 1001 grants of another clinician, made
     * within the last four hours and all before it, come first in creation order. */
    idn_exec1(
        "INSERT INTO break_glass_grants (grant_id, tenant_id, clinician_id, patient_ref, reason, start_at, "
        "end_at, created_at) SELECT 'bg_' || md5(i::text), tenant_id, principal_id, '" PT_3 "', '" BG_REASON
        "', now() - interval '1 hour', now() - interval '59 minutes', now() - interval '1 hour' "
        "FROM principals, generate_series(1, 1001) AS i WHERE principal_id = $1",
        coord);
    assert_false(check_allowed(&admin, doc, PT_1, by, sizeof by));
    expect(break_glass(&d, PT_1, BG_REASON, 5, &g, &st), RPC_OK, &st, "BreakGlass after many others");
    snprintf(want, sizeof want, "break_glass:%s", g->grant_id);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    assert_true(check_allowed(&admin, doc, PT_1, by, sizeof by));
    assert_string_equal(by, want);
    /* Check about oneself needs no identity.users.read. */
    Alma__Identity__V1__CheckResponse *self = NULL;
    expect(check(&d, "", "phi.read.clinical", PT_1, &self, &st), RPC_OK, &st, "Check about oneself");
    assert_true(self->allowed);
    assert_string_equal(self->decided_by, want);
    protobuf_c_message_free_unpacked(&self->base, NULL);
    expect(check(&d, coord, "phi.read.clinical", PT_1, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "Check about another principal without identity.users.read");
}

/* ---- 9. The audit log down ---------------------------------------------------------------------------- */

/* The events of a tenant with this action and outcome, and whose "change" detail is `change`. */
static const Alma__Audit__V1__Event *find_outcome(const Alma__Audit__V1__ListEventsResponse *l,
                                                  const char *resource_id, const char *change,
                                                  Alma__Audit__V1__Outcome outcome)
{
    for (size_t i = 0; i < l->n_events; i++) {
        const Alma__Audit__V1__Event *e = l->events[i];
        const char *v = detail(e, "change");
        if (e->input->outcome == outcome && v && strcmp(v, change) == 0 &&
            (!resource_id || strcmp(e->input->resource_id, resource_id) == 0))
            return e;
    }
    return NULL;
}

static void test_audit_down(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char one[64], three[64], coord[64];
    create_user_ok(&admin, "down.one", "pcp_clinician", one);
    create_user_ok(&admin, "down.three", "pcp_clinician", three);
    create_user_ok(&admin, "down.coord", "care_coordinator", coord);
    sess u, t3, co;
    login_ok("down.one", USER_PASSWORD, NULL, &u);
    login_ok("down.three", USER_PASSWORD, NULL, &t3);
    login_ok("down.coord", USER_PASSWORD, NULL, &co);
    char rel2[64];
    expect(create_relationship(&co, three, PT_2,
                               ALMA__IDENTITY__V1__RELATIONSHIP_KIND__RELATIONSHIP_KIND_PRIMARY_CARE, rel2,
                               &st),
           RPC_OK, &st, "CreateCareRelationship before the audit log goes down");

    /* A change the store refuses after its event was written (a trigger the superuser adds refuses one
     * username): the ERROR event for the same resource follows, from the same request, and nothing
     * changed. */
    idn_exec("CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'insufficient_privilege'; END $$");
    idn_exec("CREATE TRIGGER test_refuse BEFORE INSERT ON principals FOR EACH ROW "
             "WHEN (NEW.username = 'down.refused') EXECUTE FUNCTION test_refuse()");
    const char *roles[] = {"pcp_clinician"};
    expect(create_user(&admin, "down.refused", USER_PASSWORD, roles, 1, NULL, &st), RPC_PERMISSION_DENIED,
           &st, "CreateUser the store refuses");
    assert_int_equal(count_rows("SELECT count(*) FROM principals WHERE username = 'down.refused'"), 0);
    idn_exec("DROP TRIGGER test_refuse ON principals");
    Alma__Audit__V1__ListEventsResponse *l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_ADMIN);
    const Alma__Audit__V1__Event *err =
        find_outcome(l, NULL, "create user failed", ALMA__AUDIT__V1__OUTCOME__OUTCOME_ERROR);
    assert_non_null(err);
    assert_string_equal(detail(err, "error"), "denied");
    assert_string_equal(err->input->resource_type, "User");
    assert_true(strncmp(err->input->resource_id, "usr_", 4) == 0);
    const Alma__Audit__V1__Event *intent =
        find_outcome(l, err->input->resource_id, "user created", ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS);
    assert_non_null(intent);
    assert_true(intent->input->request_id[0] != '\0');
    assert_string_equal(intent->input->request_id, err->input->request_id);
    assert_true(intent->sequence < err->sequence);
    /* The changes that happened have no ERROR event. */
    assert_null(find_outcome(l, one, "create user failed", ALMA__AUDIT__V1__OUTCOME__OUTCOME_ERROR));
    assert_non_null(find_outcome(l, one, "user created", ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS));
    protobuf_c_message_free_unpacked(&l->base, NULL);

    identity_password pw_before, pw_after;
    MUST(identity_store_password_get(g_idn_db, g_tenant, three, &pw_before));
    assert_true(stop_clean(&g_audit, "alma-audit"));

    /* Every administrative change is audited before it is made: with the audit log down each is refused
     * with UNAVAILABLE and the store is as it was (read as the superuser). */
    expect(create_user(&admin, "down.two", USER_PASSWORD, roles, 1, NULL, &st), RPC_UNAVAILABLE, &st,
           "CreateUser with the audit log down");
    assert_int_equal(count_rows("SELECT count(*) FROM principals WHERE username = 'down.two'"), 0);
    expect(disable_user(&admin, three, &st), RPC_UNAVAILABLE, &st, "DisableUser with the audit log down");
    assert_int_equal(
        count_rows1("SELECT count(*) FROM principals WHERE principal_id = $1 AND state = 'active' "
                    "AND disabled_at IS NULL",
                    three),
        1);
    expect(grant_or_revoke(&admin, true, three, "care_coordinator", NULL, &st), RPC_UNAVAILABLE, &st,
           "GrantRole with the audit log down");
    expect(grant_or_revoke(&admin, false, three, "pcp_clinician", NULL, &st), RPC_UNAVAILABLE, &st,
           "RevokeRole with the audit log down");
    assert_int_equal(
        count_rows1("SELECT count(*) FROM grants WHERE principal_id = $1 AND role_id = 'pcp_clinician'",
                    three),
        1);
    assert_int_equal(count_rows1("SELECT count(*) FROM grants WHERE principal_id = $1", three), 1);
    char rel[64];
    expect(create_relationship(&co, one, PT_1,
                               ALMA__IDENTITY__V1__RELATIONSHIP_KIND__RELATIONSHIP_KIND_PRIMARY_CARE, rel,
                               &st),
           RPC_UNAVAILABLE, &st, "CreateCareRelationship with the audit log down");
    assert_int_equal(count_rows1("SELECT count(*) FROM care_relationships WHERE clinician_id = $1", one), 0);
    expect(end_relationship(&co, rel2, &st), RPC_UNAVAILABLE, &st,
           "EndCareRelationship with the audit log down");
    assert_int_equal(
        count_rows1("SELECT count(*) FROM care_relationships WHERE relationship_id = $1 AND end_at "
                    "IS NULL AND ended_by IS NULL",
                    rel2),
        1);
    const char *perms[] = {"referral.review"};
    expect(put_role(&admin, "down_role", perms, 1, 0, NULL, &st), RPC_UNAVAILABLE, &st,
           "PutRole with the audit log down");
    assert_int_equal(count_rows("SELECT count(*) FROM roles WHERE role_id = 'down_role'"), 0);
    expect(set_password_of(&admin, three, NULL, "Reset-While-Down-Passw0rd", &st), RPC_UNAVAILABLE, &st,
           "SetPassword with the audit log down");
    MUST(identity_store_password_get(g_idn_db, g_tenant, three, &pw_after));
    assert_string_equal(pw_after.encoded, pw_before.encoded);
    expect(revoke_sessions(&admin, three, NULL, &st), RPC_UNAVAILABLE, &st,
           "RevokeSessions with the audit log down");
    char tdown[80];
    snprintf(tdown, sizeof tdown, "%s-down", g_tenant);
    expect(create_tenant(&admin, tdown, &st), RPC_UNAVAILABLE, &st, "CreateTenant with the audit log down");
    assert_int_equal(count_rows("SELECT count(*) FROM tenants"), 1);
    assert_int_equal(count_rows("SELECT count(*) FROM principals WHERE username = 'clinic.admin'"), 0);
    /* None of the refused changes touched a session or a token: the user they were aimed at goes on. */
    expect_decision(&t3, "referral.create", NULL, AUTHZ_OK, "the target's token after the refused changes");
    expect(refresh(&t3, &st), RPC_OK, &st, "the target's session after the refused changes");
    char relkey[256];
    snprintf(relkey, sizeof relkey, "authz:rel:%s:%s:%s", g_tenant, one, PT_1);
    cache_bytes v = {0};
    bool found = true;
    MUST(cache_get(cache_thread_conn(&g_cache), relkey, &v, &found));
    cache_bytes_free(&v);
    assert_false(found);

    /* No unaudited login, successful or not. */
    sess x;
    expect(login("down.one", USER_PASSWORD, NULL, NULL, &x, &st), RPC_UNAVAILABLE, &st,
           "Login with the audit log down");
    expect(login("down.one", WRONG_PASSWORD, NULL, NULL, &x, &st), RPC_UNAVAILABLE, &st,
           "failed Login with the audit log down");
    /* The refused login left no session behind: the user has the one from before only. */
    char key[256];
    snprintf(key, sizeof key, "idn:ses:user:%s", one);
    cache_list members = {0};
    MUST(cache_smembers(cache_thread_conn(&g_cache), key, &members));
    assert_int_equal(members.count, 1);
    assert_int_equal(members.items[0].len, strlen(u.sid));
    assert_memory_equal(members.items[0].data, u.sid, strlen(u.sid));
    cache_list_free(&members);
    /* No break-glass without its audit record, and nothing usable left behind. */
    expect(break_glass(&u, PT_1, BG_REASON, 5, NULL, &st), RPC_UNAVAILABLE, &st,
           "BreakGlass with the audit log down");
    snprintf(key, sizeof key, "authz:bg:%s:%s:%s", g_tenant, one, PT_1);
    found = true;
    MUST(cache_get(cache_thread_conn(&g_cache), key, &v, &found));
    cache_bytes_free(&v);
    assert_false(found);
    assert_int_equal(count_rows("SELECT count(*) FROM break_glass_grants"), 0);
    Alma__Identity__V1__CheckResponse *cr = NULL;
    rpc_code code = check(&admin, one, "phi.read.clinical", PT_1, &cr, &st);
    if (code == RPC_OK) {
        bool allowed = cr->allowed;
        protobuf_c_message_free_unpacked(&cr->base, NULL);
        if (allowed)
            fail_msg("Check allows PHI access by an unaudited break-glass grant");
    } else {
        expect(code, RPC_UNAVAILABLE, &st, "Check with the audit log down");
    }
}

/* ---- 10. Bad input --------------------------------------------------------------------------------- */

#define SECRET_PW "Never-Echo-This-Passw0rd"

static void expect_invalid_no_echo(rpc_code code, const rpc_status *st, const char *what)
{
    expect(code, RPC_INVALID_ARGUMENT, st, what);
    assert_null(strstr(st->message, SECRET_PW));
    assert_null(strstr(st->message, "Never-Echo"));
}

static void test_bad_input(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char doc[64];
    create_user_ok(&admin, "bad.doc", "pcp_clinician", doc);
    create_user_ok(&admin, "bad.coord", "care_coordinator", NULL);
    sess d, co, x;
    login_ok("bad.doc", USER_PASSWORD, NULL, &d);
    login_ok("bad.coord", USER_PASSWORD, NULL, &co);

    char long_user[80], long_pw[400], short_pw[16], repeated[40];
    memset(long_user, 'a', 70);
    long_user[70] = '\0';
    size_t len = 0;
    while (len + strlen(SECRET_PW) < 300) {
        memcpy(long_pw + len, SECRET_PW, strlen(SECRET_PW));
        len += strlen(SECRET_PW);
    }
    long_pw[len] = '\0';
    snprintf(short_pw, sizeof short_pw, "Never-Echo-1");
    short_pw[10] = '\0'; /* "Never-Echo": 10 bytes, under the policy's 12 */
    memset(repeated, 'Z', 20);
    repeated[20] = '\0';

    /* Login. */
    expect_invalid_no_echo(login(long_user, SECRET_PW, NULL, NULL, &x, &st), &st, "Login: long username");
    expect_invalid_no_echo(login("bad.doc", long_pw, NULL, NULL, &x, &st), &st, "Login: long password");
    expect_invalid_no_echo(login("bad.doc", "", NULL, NULL, &x, &st), &st, "Login: no password");
    expect_invalid_no_echo(login("bad.doc", SECRET_PW, "1234567890", NULL, &x, &st), &st,
                           "Login: long TOTP code");
    char long_code[100];
    memset(long_code, 'b', 99);
    long_code[99] = '\0';
    expect_invalid_no_echo(login("bad.doc", SECRET_PW, NULL, long_code, &x, &st), &st,
                           "Login: long recovery code");
    rpc_code code = login_in("Not|A Tenant", "bad.doc", SECRET_PW, NULL, NULL, &x, &st);
    if (code != RPC_INVALID_ARGUMENT && code != RPC_UNAUTHENTICATED)
        fail_msg("Login to a malformed tenant id: %s (%s)", rpc_code_name(code), st.message);
    assert_null(strstr(st.message, "Never-Echo"));

    /* CreateUser. */
    const char *roles[] = {"pcp_clinician"};
    expect_invalid_no_echo(create_user(&admin, long_user, SECRET_PW, roles, 1, NULL, &st), &st,
                           "CreateUser: long username");
    expect_invalid_no_echo(create_user(&admin, "Bad User!", SECRET_PW, roles, 1, NULL, &st), &st,
                           "CreateUser: malformed username");
    expect_invalid_no_echo(create_user(&admin, "ok.user", long_pw, roles, 1, NULL, &st), &st,
                           "CreateUser: long password");
    expect_invalid_no_echo(create_user(&admin, "ok.user", short_pw, roles, 1, NULL, &st), &st,
                           "CreateUser: short password");
    expect_invalid_no_echo(create_user(&admin, "ok.user", repeated, roles, 1, NULL, &st), &st,
                           "CreateUser: one character repeated");
    expect_invalid_no_echo(create_user(&admin, "ok.user.longname", "OK.USER.LONGNAME", roles, 1, NULL, &st),
                           &st, "CreateUser: the username as password");
    const char *nope[] = {"no_such_role"};
    expect(create_user(&admin, "ok.user", SECRET_PW, nope, 1, NULL, &st), RPC_NOT_FOUND, &st,
           "CreateUser: unknown role");
    assert_null(strstr(st.message, "Never-Echo"));
    assert_int_equal(count_rows("SELECT count(*) FROM principals WHERE username = 'ok.user'"), 0);

    /* SetPassword. */
    expect_invalid_no_echo(set_password(&d, USER_PASSWORD, repeated, &st), &st, "SetPassword: weak");
    expect_invalid_no_echo(set_password(&d, USER_PASSWORD, long_pw, &st), &st, "SetPassword: long");
    expect(set_password(&d, SECRET_PW, "Another-Good-Passw0rd", &st), RPC_PERMISSION_DENIED, &st,
           "SetPassword: wrong current password");
    assert_null(strstr(st.message, "Never-Echo"));
    assert_null(strstr(st.message, "Another-Good"));
    login_ok("bad.doc", USER_PASSWORD, NULL, &x); /* unchanged */

    /* Patient references, permissions, durations, reasons. */
    expect(check(&admin, doc, "phi.read.clinical", "pt_XYZ", NULL, &st), RPC_INVALID_ARGUMENT, &st,
           "Check: malformed patient_ref");
    expect(check(&admin, doc, "phi.read.clinical", "", NULL, &st), RPC_INVALID_ARGUMENT, &st,
           "Check: no patient_ref");
    expect(check(&admin, doc, "", PT_1, NULL, &st), RPC_INVALID_ARGUMENT, &st, "Check: no permission");
    char rel[64];
    expect(create_relationship(&co, doc, "PT_11111111111111111111111111111111",
                               ALMA__IDENTITY__V1__RELATIONSHIP_KIND__RELATIONSHIP_KIND_PRIMARY_CARE, rel,
                               &st),
           RPC_INVALID_ARGUMENT, &st, "CreateCareRelationship: malformed patient_ref");
    expect(create_relationship(&co, doc, PT_1, 0, rel, &st), RPC_INVALID_ARGUMENT, &st,
           "CreateCareRelationship: no kind");
    expect(break_glass(&d, "pt_123", BG_REASON, 5, NULL, &st), RPC_INVALID_ARGUMENT, &st,
           "BreakGlass: malformed patient_ref");
    const int minutes[] = {0, -1, 241, 500};
    for (size_t i = 0; i < BASE_ARRAY_LEN(minutes); i++)
        expect(break_glass(&d, PT_1, BG_REASON, minutes[i], NULL, &st), RPC_INVALID_ARGUMENT, &st,
               "BreakGlass: duration out of range");
    char long_reason[1100];
    memset(long_reason, 'r', 1001);
    long_reason[1001] = '\0';
    expect(break_glass(&d, PT_1, long_reason, 5, NULL, &st), RPC_INVALID_ARGUMENT, &st,
           "BreakGlass: long reason");
    /* Nothing was stored by any of them. */
    assert_int_equal(count_rows("SELECT count(*) FROM break_glass_grants"), 0);
    assert_int_equal(count_rows("SELECT count(*) FROM care_relationships"), 0);

    /* alma-admin bootstrap with a username the store refuses changes nothing, so the operator can run it
     * again (on a schema of its own: this test's is bootstrapped already). */
    char schema[80], env_pg[600], env_schema[120], env_key[400], pw_path[TESTPROC_PATH_MAX];
    snprintf(schema, sizeof schema, "%s_boot", g_idn_schema);
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", g_owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", schema);
    snprintf(env_key, sizeof env_key, "ALMA_MASTER_KEY_FILE=%s", g_master_path);
    snprintf(pw_path, sizeof pw_path, "%s", testproc_work_path("admin-password"));
    const char *env[] = {env_pg, env_schema, env_key, NULL};
    const char *users[] = {"Root Admin", "root.admin"};
    for (int i = 0; i < 2; i++) {
        const char *argv[] = {binary("tools/alma-admin"),
                              "bootstrap",
                              "--tenant",
                              "scratch",
                              "--username",
                              users[i],
                              "--password-file",
                              pw_path,
                              "--argon2-m-kib",
                              "1024",
                              "--argon2-t",
                              "1",
                              NULL};
        char *out = NULL, *err = NULL;
        int rc = testproc_run(argv, env, &out, &err);
        if (rc != (i == 0 ? 2 : 0) || sanitizer_report(err))
            fail_msg("alma-admin bootstrap --username '%s' exited %d: %s", users[i], rc, err);
        assert_null(strstr(err, ADMIN_PASSWORD));
        assert_null(strstr(out, ADMIN_PASSWORD));
        free(out);
        free(err);
    }
    testdb_drop_schema(g_root, schema);

    /* A bootstrap that fails after the tenant, the administrator and its TOTP secret were written (the
     * recovery codes refused by a trigger the superuser adds to a schema the owner migrated) leaves nothing
     * behind, so the operator can run it again, and then it works. */
    snprintf(schema, sizeof schema, "%s_boot2", g_idn_schema);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", schema);
    db_pool *owner = testdb_pool(g_owner_uri, schema, 2);
    MUST(identity_store_migrate(owner, schema));
    db_pool_destroy(owner);
    db_pool *su = testdb_pool(g_pg_uri, schema, 2);
    const char *trigger[] = {
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'insufficient_privilege'; END $$",
        "CREATE TRIGGER test_refuse BEFORE INSERT ON recovery_codes FOR EACH ROW EXECUTE FUNCTION "
        "test_refuse()"};
    db_conn *c = NULL;
    MUST(db_pool_acquire(su, 5000, &c));
    for (size_t i = 0; i < BASE_ARRAY_LEN(trigger); i++)
        MUST(db_exec(c, trigger[i], 0, NULL, NULL));
    db_conn_release(c);
    static const char everything[] =
        "SELECT (SELECT count(*) FROM tenants) + (SELECT count(*) FROM principals) + (SELECT count(*) FROM "
        "password_hashes) + (SELECT count(*) FROM grants) + (SELECT count(*) FROM totp) + (SELECT count(*) "
        "FROM "
        "recovery_codes)";
    const char *argv[] = {binary("tools/alma-admin"),
                          "bootstrap",
                          "--tenant",
                          "scratch",
                          "--username",
                          "root.admin",
                          "--password-file",
                          pw_path,
                          "--argon2-m-kib",
                          "1024",
                          "--argon2-t",
                          "1",
                          NULL};
    for (int attempt = 0; attempt < 2; attempt++) {
        char *out = NULL, *err = NULL;
        int rc = testproc_run(argv, env, &out, &err);
        if (rc != (attempt == 0 ? 1 : 0) || sanitizer_report(err))
            fail_msg("alma-admin bootstrap (attempt %d) exited %d: %s", attempt + 1, rc, err);
        db_result *res = NULL;
        int64_t rows = -1;
        MUST(db_pool_acquire(su, 5000, &c));
        MUST(db_exec(c, everything, 0, NULL, &res));
        MUST(db_result_get_int64(res, 0, 0, &rows));
        db_result_free(res);
        if (attempt == 0) {
            assert_int_equal(rows, 0);
            assert_non_null(strstr(err, "nothing was written"));
            MUST(db_exec(c, "DROP TRIGGER test_refuse ON recovery_codes", 0, NULL, NULL));
        } else {
            assert_non_null(strstr(out, "administrator:"));
            /* tenant, principal, password, two grants, TOTP, ten codes */
            assert_int_equal(rows, 1 + 1 + 1 + 2 + 1 + CRED_RECOVERY_COUNT);
        }
        db_conn_release(c);
        free(out);
        free(err);
    }
    db_pool_destroy(su);
    testdb_drop_schema(g_root, schema);
}

/* ---- Main ----------------------------------------------------------------------------------------- */

/* ---- The audit log's reads need audit.read (services/audit with identity-addr) --------------------------
 */

static int64_t audit_count(db_pool *aud, const char *sql, const char *p1)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    const char *p[] = {p1};
    MUST(db_pool_acquire(aud, 5000, &c));
    MUST(db_exec(c, sql, 1, p, &res));
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

static rpc_code list_audit(rpc_channel *ch, const char *tenant, const char *bearer, size_t *ret_n,
                           rpc_status *st)
{
    Alma__Audit__V1__EventFilter f = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    f.tenant_id = (char *)tenant;
    Alma__Audit__V1__ListEventsRequest req = ALMA__AUDIT__V1__LIST_EVENTS_REQUEST__INIT;
    req.filter = &f;
    req.page_size = 1000;
    rpc_call_opts o = {.timeout_ms = 20000, .authorization = bearer};
    ProtobufCMessage *resp = NULL;
    rpc_code code = rpc_call_unary(ch, "/alma.audit.v1.Audit/ListEvents", &req.base,
                                   &alma__audit__v1__list_events_response__descriptor, &o, &resp, st);
    if (code == RPC_OK) {
        *ret_n = ((Alma__Audit__V1__ListEventsResponse *)resp)->n_events;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

/* A second alma-audit replica on the same log, started with identity-addr: its reads check the caller's
 * token for audit.read in the tenant asked about (common/authz), record the user as the actor, and record
 * refusals too. The calling service (alma-cli) is an allowed reader either way: the token is what decides. */
static void test_audit_reads_need_audit_read(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char doc[64], priv[64];
    create_user_ok(&admin, "dr.reader", "pcp_clinician", doc);
    create_user_ok(&admin, "privacy.reader", "privacy_officer", priv);
    totp_user t;
    enrol_totp("privacy.reader", &t);
    char code[CRED_TOTP_CODE_MAX + 1];
    totp_next(&t, code);
    sess officer, clinician;
    login_ok("privacy.reader", USER_PASSWORD, code, &officer);
    login_ok("dr.reader", USER_PASSWORD, NULL, &clinician);

    static char env_pg[600], env_owner[600], env_schema[100], env_key[400], env_idn[100], env_redis[100];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", g_app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", g_owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", g_aud_schema);
    snprintf(env_key, sizeof env_key, "ALMA_SIGNING_KEY=%s", g_audit_key_path);
    snprintf(env_idn, sizeof env_idn, "ALMA_IDENTITY_ADDR=%s", g_idn.api_addr);
    snprintf(env_redis, sizeof env_redis, "ALMA_REDIS_ADDR=%s:%d", testenv_redis_host(),
             testenv_redis_port());
    const char *env[] = {env_pg, env_owner, env_schema, env_key, env_idn, env_redis, NULL};
    const char *args[] = {"--origin", ORIGIN, NULL};
    testproc_daemon reader;
    testproc_daemon_init(&reader, binary("services/audit/alma-audit"), "audit", args, env);
    testproc_daemon_start(&reader);
    rpc_client_tls tls = testrpc_client_tls("alma-cli");
    rpc_channel *ch = NULL;
    MUST(rpc_channel_open(reader.api_addr, &tls, &ch));
    db_pool *aud = testdb_pool(g_pg_uri, g_aud_schema, 2);

    size_t n = 0;
    /* The reader may still be fetching the keys: UNAVAILABLE until it has them, then the real answer. */
    rpc_code c = RPC_UNAVAILABLE;
    for (int i = 0; i < 100 && c == RPC_UNAVAILABLE; i++) {
        c = list_audit(ch, g_tenant, officer.bearer, &n, &st);
        if (c == RPC_UNAVAILABLE)
            testproc_sleep_ms(50);
    }
    expect(c, RPC_OK, &st, "privacy officer lists the tenant's audit events");
    assert_true(n > 0); /* at least the logins and user creations above */
    assert_int_equal(
        audit_count(aud, "SELECT count(*) FROM events WHERE action = 10 AND outcome = 1 AND actor_id = $1",
                    priv),
        1);
    /* No token, a role without audit.read, another tenant: refused; the refusal of an authenticated user
     * is itself recorded. */
    expect(list_audit(ch, g_tenant, NULL, &n, &st), RPC_UNAUTHENTICATED, &st, "no token");
    expect(list_audit(ch, g_tenant, clinician.bearer, &n, &st), RPC_PERMISSION_DENIED, &st, "clinician");
    assert_non_null(strstr(st.message, "audit.read"));
    assert_int_equal(
        audit_count(aud, "SELECT count(*) FROM events WHERE action = 10 AND outcome = 2 AND actor_id = $1",
                    doc),
        1);
    expect(list_audit(ch, "some-other-tenant", officer.bearer, &n, &st), RPC_PERMISSION_DENIED, &st,
           "officer, another tenant");
    /* The officer's logout reaches the reader too. */
    Alma__Identity__V1__LogoutRequest lo = ALMA__IDENTITY__V1__LOGOUT_REQUEST__INIT;
    expect(icall(IDN("Logout"), &lo.base, &alma__identity__v1__logout_response__descriptor, officer.bearer,
                 NULL, &st),
           RPC_OK, &st, "officer logout");
    c = RPC_OK;
    for (int i = 0; i < REVOKE_GIVE_UP / POLL_MS && c == RPC_OK; i++) {
        c = list_audit(ch, g_tenant, officer.bearer, &n, &st);
        if (c == RPC_OK)
            testproc_sleep_ms(POLL_MS);
    }
    expect(c, RPC_UNAUTHENTICATED, &st, "officer after logout");
    db_pool_destroy(aud);
    rpc_channel_close(ch);
    assert_true(stop_clean(&reader, "alma-audit (reader)"));
}

/* ---- Signing-key rotation (alma-admin rotate-signing-key) ------------------------------------------- */

#define KEY_RELOAD_GIVE_UP_MS 8000 /* identity re-reads the keys every second here (--key-reload-s 1) */

/* The kid in a token's header. */
static void kid_of(const sess *s, char kid[AUTHZ_KID_BUF])
{
    const char *jwt = jwt_of(s);
    size_t n = strcspn(jwt, ".");
    char header[512];
    size_t len = 0;
    MUST(acrypto_base64url_decode(jwt, n, header, sizeof header - 1, &len));
    header[len] = '\0';
    const char *k = strstr(header, "\"kid\":\"");
    assert_non_null(k);
    k += 7;
    size_t m = strcspn(k, "\"");
    assert_int_equal(m, AUTHZ_KID_LEN);
    memcpy(kid, k, m);
    kid[m] = '\0';
}

/* The kids GetVerificationKeys publishes, in its order; returns how many. */
static size_t published_kids(char kids[4][AUTHZ_KID_BUF])
{
    char *jwks = verification_keys();
    authz_keyset *ks = NULL;
    MUST(authz_keyset_from_jwks(jwks, strlen(jwks), &ks)); /* well-formed, conventional kids */
    size_t n = 0;
    for (const char *p = strstr(jwks, "\"kid\""); p && n < 4; p = strstr(p + 1, "\"kid\"")) {
        const char *q = strchr(p + 5, '"');
        assert_non_null(q);
        size_t m = strcspn(q + 1, "\"");
        assert_int_equal(m, AUTHZ_KID_LEN);
        memcpy(kids[n], q + 1, m);
        kids[n][m] = '\0';
        assert_true(authz_keyset_has(ks, kids[n]));
        n++;
    }
    assert_int_equal(n, authz_keyset_count(ks));
    authz_keyset_free(ks);
    free(jwks);
    return n;
}

/* tools/alma-admin rotate-signing-key with a master key file: its exit code, stdout and stderr (free both).
 */
static int run_rotate(const char *master_path, char **out, char **err)
{
    static char env_pg[600], env_schema[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", g_owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", g_idn_schema);
    snprintf(env_key, sizeof env_key, "ALMA_MASTER_KEY_FILE=%s", master_path);
    const char *env[] = {env_pg, env_schema, env_key, NULL};
    const char *argv[] = {binary("tools/alma-admin"), "rotate-signing-key", NULL};
    return testproc_run(argv, env, out, err);
}

/* The value after "<label>" on its line of the tool's output, e.g. "current:  <kid> (...)". */
static void output_kid(const char *out, const char *label, char kid[AUTHZ_KID_BUF])
{
    const char *p = strstr(out, label);
    if (!p)
        fail_msg("no \"%s\" in alma-admin's output: %s", label, out);
    p += strlen(label);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, " \n");
    assert_int_equal(n, AUTHZ_KID_LEN);
    memcpy(kid, p, n);
    kid[n] = '\0';
}

/* Rotate; the new kid (and the one it replaced). */
static void rotate_ok(char new_kid[AUTHZ_KID_BUF], char prev_kid[AUTHZ_KID_BUF])
{
    char *out = NULL, *err = NULL;
    int code = run_rotate(g_master_path, &out, &err);
    if (code != 0 || sanitizer_report(err))
        fail_msg("alma-admin rotate-signing-key exited %d: %s", code, err);
    output_kid(out, "current:", new_kid);
    output_kid(out, "previous:", prev_kid);
    free(out);
    free(err);
}

/* Wait until identity publishes exactly [want_first, want_second] (its reload thread saw the rotation). */
static void wait_published(const char *want_first, const char *want_second)
{
    int64_t t0 = testproc_now_ms();
    for (;;) {
        char kids[4][AUTHZ_KID_BUF];
        size_t n = published_kids(kids);
        if (n == 2 && strcmp(kids[0], want_first) == 0 && strcmp(kids[1], want_second) == 0)
            break;
        if (testproc_now_ms() - t0 > KEY_RELOAD_GIVE_UP_MS)
            fail_msg("identity still publishes %zu key(s), first %s, %d ms after the rotation", n, kids[0],
                     KEY_RELOAD_GIVE_UP_MS);
        testproc_sleep_ms(100);
    }
    fprintf(stderr, "[ INFO     ] identity published the rotated keys %" PRId64 " ms after alma-admin\n",
            testproc_now_ms() - t0);
}

/* Identity accepts the token (GetUser of oneself). */
static void identity_accepts(const sess *s, const char *what)
{
    rpc_status st;
    expect(get_user(s, NULL, NULL, &st), RPC_OK, &st, what);
}

static void identity_refuses_unknown_key(const sess *s, const char *what)
{
    rpc_status st;
    expect(get_user(s, NULL, NULL, &st), RPC_UNAUTHENTICATED, &st, what);
    assert_string_equal(st.message, AUTHZ_MSG_KID_UNKNOWN);
}

/* An authorizer as another service would run it, with its own periodic key refresh. */
static authz *service_with_refresh(int refresh_ms, rpc_client_tls *tls)
{
    *tls = testrpc_client_tls("test-client");
    authz_config cfg = {
        .cache = &g_cache, .fetch_jwks = fetch_jwks, .fetch_arg = tls, .refresh_interval_ms = refresh_ms};
    authz *az = NULL;
    MUST(authz_new(&cfg, &az));
    MUST(authz_wait_ready(az, 5000));
    return az;
}

static authz_code decide_with(authz *az, const sess *s, authz_decision *d)
{
    authz_resource res = {.tenant_id = g_tenant};
    (void)authz_authorize(az, s->bearer, AUTHZ_PERM_MFA_ENROLL, &res, NULL, d).err;
    return d->code;
}

static void test_signing_key_rotation(void **state)
{
    (void)state;
    char kids[4][AUTHZ_KID_BUF];
    assert_int_equal(published_kids(kids), 1);
    char k0[AUTHZ_KID_BUF], k1[AUTHZ_KID_BUF], k2[AUTHZ_KID_BUF], prev[AUTHZ_KID_BUF], kid[AUTHZ_KID_BUF];
    memcpy(k0, kids[0], sizeof k0);

    sess admin, old_user, new_user;
    admin_login(&admin);
    char user_id[64];
    create_user_ok(&admin, "sched.rot", "scheduler", user_id);
    login_ok("sched.rot", USER_PASSWORD, NULL, &old_user);
    kid_of(&old_user, kid);
    assert_string_equal(kid, k0);
    /* Another service (default refresh: once a minute) has the first key set and accepts the token. */
    expect_decision(&old_user, AUTHZ_PERM_MFA_ENROLL, NULL, AUTHZ_OK, "token of the first key");
    rpc_client_tls fast_tls;
    authz *fast = service_with_refresh(1000, &fast_tls); /* a service refreshing every second */

    /* A wrong master key is refused before anything changes. */
    char wrong_path[TESTPROC_PATH_MAX];
    snprintf(wrong_path, sizeof wrong_path, "%s", testproc_work_path("wrong-master.key"));
    write_file(wrong_path, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 45);
    char *out = NULL, *err = NULL;
    int code = run_rotate(wrong_path, &out, &err);
    if (code != 1 || sanitizer_report(err))
        fail_msg("rotate-signing-key with a wrong master key exited %d: %s", code, err);
    assert_non_null(strstr(err, "does not open with this master key"));
    free(out);
    free(err);
    assert_int_equal(count_rows("SELECT count(*) FROM signing_keys"), 1);

    /* First rotation: k0 becomes the previous key, still published; new tokens are signed by k1. */
    rotate_ok(k1, prev);
    assert_string_equal(prev, k0);
    assert_string_not_equal(k1, k0);
    wait_published(k1, k0);
    identity_accepts(&old_user, "a token of the previous key, in identity");
    expect_decision(&old_user, AUTHZ_PERM_MFA_ENROLL, NULL, AUTHZ_OK, "a token of the previous key");
    login_ok("sched.rot", USER_PASSWORD, NULL, &new_user);
    kid_of(&new_user, kid);
    assert_string_equal(kid, k1);
    /* The other service has never seen k1: it refetches on the unknown kid and accepts the token. */
    expect_decision(&new_user, AUTHZ_PERM_MFA_ENROLL, NULL, AUTHZ_OK, "a token of the new key");
    identity_accepts(&new_user, "a token of the new key, in identity");
    /* A session made before the rotation refreshes into a token of the new key. */
    sess refreshed = old_user;
    rpc_status st;
    expect(refresh(&refreshed, &st), RPC_OK, &st, "Refresh after the rotation");
    kid_of(&refreshed, kid);
    assert_string_equal(kid, k1);

    /* Second rotation: k0 is retired; its tokens are refused everywhere, k1's still work. */
    rotate_ok(k2, prev);
    assert_string_equal(prev, k1);
    wait_published(k2, k1);
    identity_refuses_unknown_key(&old_user, "a token of the retired key, in identity");
    identity_accepts(&new_user, "a token of the previous key (k1), in identity");
    /* A service refreshing every second drops k0 within its refresh... */
    int64_t t0 = testproc_now_ms();
    authz_decision d;
    while (decide_with(fast, &old_user, &d) != AUTHZ_UNAUTHENTICATED) {
        if (testproc_now_ms() - t0 > 3000)
            fail_msg("a service refreshing every second still accepts a retired key's token (%s)", d.reason);
        testproc_sleep_ms(POLL_MS);
    }
    assert_string_equal(d.reason, AUTHZ_MSG_KID_UNKNOWN);
    assert_int_equal(decide_with(fast, &new_user, &d), AUTHZ_OK);
    /* ... and one on the default minute at its next refresh (forced here). */
    MUST(authz_refresh_keys(second_service()));
    assert_int_equal(decide(&old_user, AUTHZ_PERM_MFA_ENROLL, NULL, &d), AUTHZ_UNAUTHENTICATED);
    assert_string_equal(d.reason, AUTHZ_MSG_KID_UNKNOWN);
    expect_decision(&new_user, AUTHZ_PERM_MFA_ENROLL, NULL, AUTHZ_OK, "a token of k1 after the second");
    sess newest;
    login_ok("sched.rot", USER_PASSWORD, NULL, &newest);
    kid_of(&newest, kid);
    assert_string_equal(kid, k2);
    expect_decision(&newest, AUTHZ_PERM_MFA_ENROLL, NULL, AUTHZ_OK, "a token of k2");
    identity_accepts(&newest, "a token of k2, in identity");
    assert_int_equal(count_rows("SELECT count(*) FROM signing_keys WHERE state = 'retired'"), 1);
    assert_int_equal(count_rows("SELECT count(*) FROM signing_keys WHERE sealed_private IS NOT NULL"), 1);
    authz_free(fast);
}

/* ---- Partner clients ------------------------------------------------------------------------------ */

static rpc_code register_partner(const sess *caller, const char *client_id, const char *tenant,
                                 const char *jwks, const char *const *scopes, size_t nscopes,
                                 Alma__Identity__V1__PartnerClient **ret, rpc_status *st)
{
    Alma__Identity__V1__PartnerClient c = ALMA__IDENTITY__V1__PARTNER_CLIENT__INIT;
    c.client_id = (char *)client_id;
    c.tenant_id = (char *)tenant;
    c.display_name = (char *)"Health plan API client";
    c.jwks_json = (char *)jwks;
    c.scopes = (char **)scopes;
    c.n_scopes = nscopes;
    Alma__Identity__V1__RegisterPartnerClientRequest req =
        ALMA__IDENTITY__V1__REGISTER_PARTNER_CLIENT_REQUEST__INIT;
    req.client = &c;
    return icall(IDN("RegisterPartnerClient"), &req.base, &alma__identity__v1__partner_client__descriptor,
                 caller ? caller->bearer : NULL, (ProtobufCMessage **)ret, st);
}

/* GetPartnerClient over a channel of the given peer identity (a PKI name). */
static rpc_code get_partner_as(const char *peer, const char *client_id,
                               Alma__Identity__V1__PartnerClient **ret, rpc_status *st)
{
    rpc_client_tls tls = testrpc_client_tls(peer);
    rpc_channel *ch = NULL;
    MUST(rpc_channel_open(g_idn_addr, &tls, &ch));
    Alma__Identity__V1__GetPartnerClientRequest req = ALMA__IDENTITY__V1__GET_PARTNER_CLIENT_REQUEST__INIT;
    req.client_id = (char *)client_id;
    rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *resp = NULL;
    rpc_code code = rpc_call_unary(ch, IDN("GetPartnerClient"), &req.base,
                                   &alma__identity__v1__partner_client__descriptor, &o, &resp, st);
    rpc_channel_close(ch);
    if (ret)
        *ret = (Alma__Identity__V1__PartnerClient *)resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

static void expect_partner(const Alma__Identity__V1__PartnerClient *p, const char *client_id,
                           const char *tenant, const char *x)
{
    assert_string_equal(p->client_id, client_id);
    assert_string_equal(p->tenant_id, tenant);
    assert_string_equal(p->display_name, "Health plan API client");
    assert_false(p->disabled);
    assert_int_equal(p->n_scopes, 2);
    assert_string_equal(p->scopes[0], "system/AuditEvent.read");
    assert_string_equal(p->scopes[1], "system/GuidanceResponse.read");
    /* The JWKS as stored (Postgres normalises jsonb's spacing and key order): the same key. */
    authz_keyset *ks = NULL;
    MUST(authz_keyset_from_jwks(p->jwks_json, strlen(p->jwks_json), &ks));
    assert_int_equal(authz_keyset_count(ks), 1);
    authz_keyset_free(ks);
    assert_non_null(strstr(p->jwks_json, x));
}

static void test_partner_clients(void **state)
{
    (void)state;
    rpc_status st;
    sess admin;
    admin_login(&admin);
    char plan[96], client_id[96], bad_json_id[96];
    snprintf(plan, sizeof plan, "%s-plan", g_tenant);
    snprintf(client_id, sizeof client_id, "plan-api.%s", g_tenant);
    snprintf(bad_json_id, sizeof bad_json_id, "plan-bad.%s", g_tenant);
    expect(create_tenant_kind(&admin, plan, ALMA__IDENTITY__V1__TENANT_KIND__TENANT_KIND_HEALTH_PLAN,
                              "plan.admin", TENANT_ADMIN_PASSWORD, &st),
           RPC_OK, &st, "CreateTenant (health plan)");

    /* The client's public key, as a JWKS. */
    acrypto_ed25519_key *key = NULL;
    authz_keyset *ks = NULL;
    char *jwks = NULL;
    MUST(acrypto_ed25519_generate(&key));
    MUST(authz_keyset_new(&ks));
    MUST(authz_keyset_add(ks, key));
    MUST(authz_keyset_to_jwks(ks, &jwks));
    authz_keyset_free(ks);
    acrypto_ed25519_free(key);
    const char *x = strstr(jwks, "\"x\":\"");
    assert_non_null(x);
    char xval[64];
    snprintf(xval, sizeof xval, "\"%.*s\"", (int)strcspn(x + 5, "\""), x + 5); /* jsonb respaces */
    const char *scopes[] = {"system/AuditEvent.read", "system/GuidanceResponse.read"};

    /* Refusals that change nothing (no audit event): no token, no partners.manage, a provider tenant, bad
     * scopes, an unknown tenant. */
    expect(register_partner(NULL, client_id, plan, jwks, scopes, 2, NULL, &st), RPC_UNAUTHENTICATED, &st,
           "RegisterPartnerClient without a token");
    char sched_id[64];
    create_user_ok(&admin, "sched.partner", "scheduler", sched_id);
    sess sched;
    login_ok("sched.partner", USER_PASSWORD, NULL, &sched);
    expect(register_partner(&sched, client_id, plan, jwks, scopes, 2, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "RegisterPartnerClient by a scheduler");
    expect(register_partner(&admin, client_id, g_tenant, jwks, scopes, 2, NULL, &st), RPC_FAILED_PRECONDITION,
           &st, "RegisterPartnerClient for a provider tenant");
    const char *bad_scopes[] = {"system/AuditEvent.read", "everything"};
    expect(register_partner(&admin, client_id, plan, jwks, bad_scopes, 2, NULL, &st), RPC_INVALID_ARGUMENT,
           &st, "RegisterPartnerClient with a bad scope");
    assert_non_null(strstr(st.message, "scopes"));
    expect(register_partner(&admin, client_id, plan, "", scopes, 2, NULL, &st), RPC_INVALID_ARGUMENT, &st,
           "RegisterPartnerClient without a JWKS");
    char nowhere[96];
    snprintf(nowhere, sizeof nowhere, "%s-nowhere", g_tenant);
    expect(register_partner(&admin, client_id, nowhere, jwks, scopes, 2, NULL, &st), RPC_NOT_FOUND, &st,
           "RegisterPartnerClient for an unknown tenant");

    /* A JWKS that is not JSON, or has no keys array, is found by the database: audited, then ERROR. */
    expect(register_partner(&admin, bad_json_id, plan, "{\"keys\": [", scopes, 2, NULL, &st),
           RPC_INVALID_ARGUMENT, &st, "RegisterPartnerClient with a JWKS that is not JSON");
    assert_non_null(strstr(st.message, "jwks_json"));
    expect(register_partner(&admin, bad_json_id, plan, "{\"keys\": 1}", scopes, 2, NULL, &st),
           RPC_INVALID_ARGUMENT, &st, "RegisterPartnerClient with a JWKS without a keys array");
    assert_non_null(strstr(st.message, "jwks_json"));

    /* The registration. */
    Alma__Identity__V1__PartnerClient *p = NULL;
    expect(register_partner(&admin, client_id, plan, jwks, scopes, 2, &p, &st), RPC_OK, &st,
           "RegisterPartnerClient");
    expect_partner(p, client_id, plan, xval);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    expect(register_partner(&admin, client_id, plan, jwks, scopes, 2, NULL, &st), RPC_ALREADY_EXISTS, &st,
           "RegisterPartnerClient twice");
    assert_int_equal(count_rows("SELECT count(*) FROM partner_clients"), 1);

    /* GetPartnerClient: the gateway (and the tests' client) only, no token needed. */
    p = NULL;
    expect(get_partner_as("gateway", client_id, &p, &st), RPC_OK, &st, "GetPartnerClient as the gateway");
    expect_partner(p, client_id, plan, xval);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    p = NULL;
    expect(get_partner_as("test-client", client_id, &p, &st), RPC_OK, &st, "GetPartnerClient as test-client");
    expect_partner(p, client_id, plan, xval);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    expect(get_partner_as("alma-cli", client_id, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "GetPartnerClient as alma-cli");
    expect(get_partner_as("gateway", "no-such-client", NULL, &st), RPC_NOT_FOUND, &st,
           "GetPartnerClient of an unknown client");
    expect(get_partner_as("gateway", bad_json_id, NULL, &st), RPC_NOT_FOUND, &st,
           "GetPartnerClient of a refused registration");

    /* The audit trail, in the administrator's tenant: the registration, before it was made (SUCCESS, with the
     * tenant and scopes); the refused JWKS as SUCCESS + ERROR pairs; nothing for the refusals above. */
    Alma__Audit__V1__ListEventsResponse *l = audit_events(ALMA__AUDIT__V1__ACTION__ACTION_ADMIN);
    const Alma__Audit__V1__Event *e =
        find_outcome(l, client_id, "partner client registered", ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS);
    assert_non_null(e);
    assert_string_equal(e->input->resource_type, "PartnerClient");
    assert_string_equal(e->input->actor->principal_id, g_admin_id);
    assert_string_equal(detail(e, "tenant"), plan);
    assert_string_equal(detail(e, "new_scopes"), "system/AuditEvent.read,system/GuidanceResponse.read");
    assert_null(find_outcome(l, client_id, "register partner client failed",
                             ALMA__AUDIT__V1__OUTCOME__OUTCOME_ERROR));
    size_t intents = 0, errors = 0, for_client = 0;
    for (size_t i = 0; i < l->n_events; i++) {
        const Alma__Audit__V1__Event *ev = l->events[i];
        if (strcmp(ev->input->resource_id, client_id) == 0)
            for_client++;
        if (strcmp(ev->input->resource_id, bad_json_id) != 0)
            continue;
        const char *change = detail(ev, "change");
        assert_non_null(change);
        if (ev->input->outcome == ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS) {
            assert_string_equal(change, "partner client registered");
            intents++;
        } else {
            assert_int_equal(ev->input->outcome, ALMA__AUDIT__V1__OUTCOME__OUTCOME_ERROR);
            assert_string_equal(change, "register partner client failed");
            assert_string_equal(detail(ev, "error"), "invalid");
            errors++;
        }
    }
    assert_int_equal(intents, 2);
    assert_int_equal(errors, 2);
    assert_int_equal(for_client, 1); /* the successful registration only: refusals are not events */
    protobuf_c_message_free_unpacked(&l->base, NULL);
    free(jwks);
}

/* ---- Throttling by the end user's address the gateway forwards ---------------------------------------- */

static rpc_code login_via(rpc_channel *ch, const char *addr, const char *user, rpc_status *st)
{
    Alma__Identity__V1__LoginRequest req = ALMA__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.tenant_id = g_tenant;
    req.username = (char *)user;
    req.password = (char *)"Wrong-Password-123!";
    rpc_call_opts o = {.timeout_ms = 20000, .client_addr = addr};
    ProtobufCMessage *resp = NULL;
    rpc_code code = rpc_call_unary(ch, IDN("Login"), &req.base,
                                   &alma__identity__v1__login_response__descriptor, &o, &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

/* The gateway carries every end user over one connection: failures count per forwarded address, so 50
 * failures from one address lock that address only (not every user of the gateway). An address named by a
 * caller that is not the gateway is ignored. */
static void test_throttle_by_forwarded_address(void **state)
{
    (void)state;
    rpc_client_tls tls = testrpc_client_tls("gateway");
    rpc_channel *gw = NULL;
    MUST(rpc_channel_open(g_idn.api_addr, &tls, &gw));
    /* Addresses unique to this run, so a Redis kept between runs holds no earlier failures for them. */
    char a[48], b[48];
    snprintf(a, sizeof a, "198.51.%d.%d", (int)(getpid() % 250), g_ntest % 250);
    snprintf(b, sizeof b, "203.0.%d.%d", (int)(getpid() % 250), g_ntest % 250);
    rpc_status st;
    for (int i = 0; i < 50; i++) {
        char user[32];
        snprintf(user, sizeof user, "nobody.%d", i); /* distinct users: the per-user lockout stays out */
        expect(login_via(gw, a, user, &st), RPC_UNAUTHENTICATED, &st, "failure from address A");
    }
    expect(login_via(gw, a, "nobody.x", &st), RPC_RESOURCE_EXHAUSTED, &st, "address A locked");
    expect(login_via(gw, b, "nobody.y", &st), RPC_UNAUTHENTICATED, &st, "address B not locked");
    rpc_channel_close(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bootstrap_admin_login, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_users_and_mfa_enrolment, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_tenant_isolation, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_lockout_and_unknown_users, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_sessions, test_setup_short_sessions, test_teardown),
        cmocka_unit_test_setup_teardown(test_revocation_reaches_another_service, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_roles_grants_and_audit, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_care_relationships_and_break_glass, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_audit_down, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_throttle_by_forwarded_address, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_audit_reads_need_audit_read, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_signing_key_rotation, test_setup_key_reload, test_teardown),
        cmocka_unit_test_setup_teardown(test_partner_clients, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
