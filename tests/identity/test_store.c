/* The identity store against the real PostgreSQL of the "pg" fixture. Every test works in a schema of its
 * own (ids_<pid>_<random>_<n>), migrated by identity_store_migrate and dropped at the end; the last test runs
 * the store as a least-privilege runtime role made with grant_runtime(). */
#include "db/db.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

/* expr fails with err (and, for BASE_ERR_INVALID, a message that names field and never echoes value). */
#define EXPECT_ERR(expr, want)                                                                               \
    do {                                                                                                     \
        base_result exp_r__ = (expr);                                                                        \
        if (exp_r__.err != (want))                                                                           \
            fail_msg("%s: got %s (%s), want %s", #expr, base_err_name(exp_r__.err), base_error_message(),    \
                     base_err_name(want));                                                                   \
    } while (0)
#define EXPECT_INVALID(expr, field, value)                                                                   \
    do {                                                                                                     \
        EXPECT_ERR(expr, BASE_ERR_INVALID);                                                                  \
        const char *msg__ = base_error_message();                                                            \
        if (!strstr(msg__, (field)))                                                                         \
            fail_msg("%s: message \"%s\" does not name %s", #expr, msg__, (field));                          \
        if ((value)[0] && strstr(msg__, (value)))                                                            \
            fail_msg("%s: message \"%s\" echoes the value", #expr, msg__);                                   \
    } while (0)

#define PW1                                                                                                  \
    "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
#define PW2    "$argon2id$v=19$m=19456,t=2,p=1$YW5vdGhlcnNhbHQ$b3RoZXJoYXNob3RoZXJoYXNob3RoZXJoYXNo"
#define ADMIN  "system:test"
#define MIN_US INT64_C(60000000)

static char g_uri[512];
static char g_prefix[40];
static int g_nschema;
static db_pool *g_root; /* superuser, no search_path */
static unsigned g_idseq;

/* ---- Fixture ------------------------------------------------------------------------------------------- */

typedef struct fx {
    char schema[64];
    db_pool *pool; /* superuser, search_path = schema: the store's pool in most tests */
} fx;

static void fx_open(fx *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->schema, sizeof f->schema, "%s_%d", g_prefix, g_nschema++);
    f->pool = testdb_pool(g_uri, f->schema, 8);
    MUST(identity_store_migrate(f->pool, f->schema));
}

static void fx_close(fx *f)
{
    db_pool_destroy(f->pool);
    testdb_drop_schema(g_root, f->schema);
}

static base_result exec_sql(db_pool *pool, const char *sql)
{
    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(pool, 5000, &c));
    base_result r = db_exec(c, sql, 0, NULL, NULL);
    db_conn_release(c);
    return r;
}

static int64_t query_int(db_pool *pool, const char *sql)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, sql, 0, NULL, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* prefix + 32 hex digits, distinct on every call, into buf. */
static const char *fresh_id(const char *prefix, char buf[40])
{
    snprintf(buf, 40, "%s%08x%024x", prefix, ++g_idseq, (unsigned)getpid());
    return buf;
}

static void mk_tenant(db_pool *pool, const char *id, identity_tenant_kind kind)
{
    MUST(identity_store_tenant_create(pool, id, kind, "Test tenant", false, NULL));
}

static void mk_user(db_pool *pool, const char *tenant, const char *username, const char *const *roles,
                    size_t nroles, identity_principal *ret)
{
    identity_principal_new in = {.tenant_id = tenant,
                                 .kind = IDENTITY_PRINCIPAL_USER,
                                 .username = username,
                                 .display_name = "Test User",
                                 .password_encoded = PW1,
                                 .roles = roles,
                                 .nroles = nroles,
                                 .created_by = ADMIN};
    MUST(identity_store_principal_create(pool, &in, ret));
}

static bool has_str(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i], s) == 0)
            return true;
    }
    return false;
}

static void assert_strv(char **v, size_t n, const char *const *want, size_t nwant)
{
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(v[i], want[i]);
}

#define PT_A "pt_0123456789abcdef0123456789abcdef"
#define PT_B "pt_fedcba9876543210fedcba9876543210"

/* ---- Tests --------------------------------------------------------------------------------------------- */

static void test_migrations(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM schema_migrations"), 6);
    /* Idempotent: nothing more is applied, nothing is seeded twice. */
    MUST(identity_store_migrate(f.pool, f.schema));
    MUST(identity_store_migrate(f.pool, f.schema));
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM schema_migrations"), 6);
    /* 0004: the indexes behind break_glass_active and role_holders. */
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM pg_catalog.pg_indexes WHERE schemaname = "
                                       "current_schema() AND indexname IN ('break_glass_active', "
                                       "'grants_by_tenant_role')"),
                     2);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM roles"), 10);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM role_history"),
                     18); /* 10 + 7 of 0005 + 1 of 0006 */
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM role_permissions"),
                     55); /* + 16 of 0005, 1 of 0006 */
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = "
                                       "current_schema() AND tablename IN ('tenants', 'principals', "
                                       "'password_hashes', 'totp', 'recovery_codes', 'roles', "
                                       "'role_permissions', 'role_history', 'grants', 'care_relationships', "
                                       "'break_glass_grants', 'partner_clients', 'signing_keys')"),
                     13);
    assert_int_equal(query_int(f.pool,
                               "SELECT count(*) FROM pg_catalog.pg_proc WHERE proname = 'grant_runtime' "
                               "AND pronamespace = current_schema()::regnamespace"),
                     1);
    fx_close(&f);
}

typedef struct want_role {
    const char *id;
    bool mfa;
    int version;
    const char *perms[10]; /* sorted (strcmp), NULL-terminated */
} want_role;

static const want_role BUILTIN[] = {
    {"billing", false, 2, {"patient.search", "phi.read.coverage", "phi.read.demographics"}},
    {"care_coordinator",
     false,
     2,
     {"care.relationships.manage", "patient.register", "patient.search", "phi.read.clinical",
      "phi.read.demographics", "phi.write.demographics", "referral.create"}},
    {"patient", false, 1, {"phi.read.self"}},
    {"pcp_clinician",
     false,
     2,
     {"patient.register", "patient.search", "phi.break_glass", "phi.read.clinical", "phi.read.demographics",
      "phi.write.clinical", "phi.write.demographics", "referral.create", "referral.review"}},
    {"plan_reviewer", false, 1, {"phi.read.plan_view", "referral.read.plan"}},
    {"platform_admin",
     true,
     2,
     {"guideline.content.publish", "identity.roles.manage", "identity.roles.read", "identity.users.manage",
      "partners.manage", "platform.tenants.manage"}},
    {"privacy_officer",
     true,
     2,
     {"audit.read", "breach.manage", "identity.users.read", "privacy.review", "vault.records.destroy",
      "vault.retention.manage"}},
    {"scheduler",
     false,
     2,
     {"patient.register", "patient.search", "phi.read.contact", "phi.read.demographics",
      "phi.write.demographics"}},
    {"security_admin",
     true,
     2,
     {"audit.read", "identity.roles.manage", "identity.roles.read", "identity.sessions.revoke",
      "identity.users.manage", "identity.users.read", "vault.keys.manage"}},
    {"specialist_clinician",
     false,
     2,
     {"patient.register", "patient.search", "phi.break_glass", "phi.read.clinical", "phi.read.demographics",
      "phi.write.clinical", "phi.write.demographics", "referral.create", "referral.review"}},
};

static void test_builtin_roles(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    identity_role_list list = {0};
    MUST(identity_store_roles_list(f.pool, "acme", &list));
    assert_int_equal(list.n, BASE_ARRAY_LEN(BUILTIN));
    for (size_t i = 0; i < list.n; i++) {
        const identity_role *r = &list.items[i];
        const want_role *w = &BUILTIN[i];
        assert_string_equal(r->role_id, w->id);
        assert_string_equal(r->tenant_id, "");
        assert_true(r->built_in);
        assert_int_equal(r->version, w->version); /* 2: changed by migration 0005 (vault permissions) */
        assert_int_equal(r->requires_mfa, w->mfa);
        size_t n = 0;
        while (n < BASE_ARRAY_LEN(w->perms) && w->perms[n])
            n++;
        assert_strv(r->permissions, r->npermissions, w->perms, n);
    }
    identity_role_list_free(&list);

    identity_role_history h = {0};
    MUST(identity_store_role_history(f.pool, "acme", "pcp_clinician", &h));
    assert_int_equal(h.n, 2);
    assert_int_equal(h.items[0].version, 1);
    assert_null(h.items[0].old_permissions);
    assert_int_equal(h.items[0].npermissions, 6);
    assert_string_equal(h.items[0].changed_by, "system:migration");
    /* 0005 added the vault's permissions as version 2, with the old set kept. */
    assert_int_equal(h.items[1].version, 2);
    assert_int_equal(h.items[1].nold_permissions, 6);
    assert_int_equal(h.items[1].npermissions, 9);
    assert_string_equal(h.items[1].changed_by, "system:migration");
    identity_role_history_free(&h);

    /* Built-in roles cannot be changed: not by the store, not by SQL (even a superuser's). */
    const char *perms[] = {"phi.read.self", "phi.read.clinical"};
    identity_role_put put = {.tenant_id = "acme",
                             .role_id = "patient",
                             .display_name = "Patient+",
                             .permissions = perms,
                             .npermissions = 2,
                             .changed_by = ADMIN};
    identity_role got = {0};
    EXPECT_ERR(identity_store_role_put(f.pool, &put, &got, NULL, NULL), BASE_ERR_CONFLICT);
    EXPECT_ERR(exec_sql(f.pool, "UPDATE roles SET requires_mfa = true WHERE role_id = 'patient'"),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "INSERT INTO role_permissions VALUES ('', 'patient', 'phi.read.clinical')"),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "DELETE FROM role_permissions WHERE tenant_id = ''"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "INSERT INTO roles (tenant_id, role_id, display_name, built_in) "
                                "VALUES ('', 'root', 'Root', true)"),
               BASE_ERR_DENIED);
    /* Nor shadowed by a tenant role of the same id. */
    EXPECT_ERR(exec_sql(f.pool, "INSERT INTO roles (tenant_id, role_id, display_name) "
                                "VALUES ('acme', 'patient', 'Shadow')"),
               BASE_ERR_EXISTS);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM role_permissions WHERE role_id = 'patient'"), 1);
    fx_close(&f);
}

static void test_tenants(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    identity_tenant t;
    MUST(identity_store_tenant_create(f.pool, "acme-health", IDENTITY_TENANT_PROVIDER, "Acme Health", true,
                                      &t));
    assert_string_equal(t.tenant_id, "acme-health");
    assert_int_equal(t.kind, IDENTITY_TENANT_PROVIDER);
    assert_true(t.mfa_required_for_all);
    assert_true(llabs(t.created_us - now_us()) < 60 * INT64_C(1000000));
    identity_tenant g;
    MUST(identity_store_tenant_get(f.pool, "acme-health", &g));
    assert_memory_equal(&t, &g, sizeof t);
    EXPECT_ERR(identity_store_tenant_create(f.pool, "acme-health", IDENTITY_TENANT_HEALTH_PLAN, "Other",
                                            false, NULL),
               BASE_ERR_EXISTS);
    EXPECT_ERR(identity_store_tenant_get(f.pool, "nobody", &g), BASE_ERR_NOT_FOUND);
    EXPECT_INVALID(
        identity_store_tenant_create(f.pool, "Evil_Tenant", IDENTITY_TENANT_PROVIDER, "X", false, NULL),
        "tenant_id", "Evil_Tenant");
    EXPECT_INVALID(identity_store_tenant_create(f.pool, "x", IDENTITY_TENANT_PROVIDER, "X", false, NULL),
                   "tenant_id", "");
    EXPECT_INVALID(identity_store_tenant_create(f.pool, "ok-tenant", IDENTITY_TENANT_PROVIDER, "bad\x01name",
                                                false, NULL),
                   "display_name", "bad");
    EXPECT_INVALID(
        identity_store_tenant_create(f.pool, "ok-tenant", (identity_tenant_kind)7, "X", false, NULL), "kind",
        "");
    EXPECT_INVALID(identity_store_tenant_get(f.pool, "'; DROP TABLE tenants; --", &g), "tenant_id", "DROP");
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM tenants"), 1);
    fx_close(&f);
}

static void test_principals(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);

    const char *roles[] = {"pcp_clinician", "scheduler"};
    identity_principal alice;
    mk_user(f.pool, "acme", "alice@acme", roles, 2, &alice);
    assert_true(strncmp(alice.principal_id, "usr_", 4) == 0);
    assert_int_equal(strlen(alice.principal_id), 36);
    assert_string_equal(alice.tenant_id, "acme");
    assert_string_equal(alice.username, "alice@acme");
    assert_int_equal(alice.state, IDENTITY_PRINCIPAL_ACTIVE);
    assert_int_equal(alice.kind, IDENTITY_PRINCIPAL_USER);
    assert_string_equal(alice.created_by, ADMIN);
    assert_int_equal(alice.disabled_us, 0);

    identity_principal got;
    MUST(identity_store_principal_get(f.pool, "acme", alice.principal_id, &got));
    assert_memory_equal(&got, &alice, sizeof got);
    MUST(identity_store_principal_get_by_username(f.pool, "acme", "alice@acme", &got));
    assert_string_equal(got.principal_id, alice.principal_id);
    identity_password pw;
    MUST(identity_store_password_get(f.pool, "acme", alice.principal_id, &pw));
    assert_string_equal(pw.encoded, PW1);
    identity_effective e;
    MUST(identity_store_effective(f.pool, "acme", alice.principal_id, &e));
    assert_int_equal(e.nroles, 2);
    assert_string_equal(e.roles[0].role_id, "pcp_clinician");
    assert_string_equal(e.roles[1].role_id, "scheduler");
    identity_effective_free(&e);

    /* Another tenant sees nothing of her. */
    EXPECT_ERR(identity_store_principal_get(f.pool, "bravo", alice.principal_id, &got), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(identity_store_principal_get_by_username(f.pool, "bravo", "alice@acme", &got),
               BASE_ERR_NOT_FOUND);
    EXPECT_ERR(identity_store_password_get(f.pool, "bravo", alice.principal_id, &pw), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(identity_store_effective(f.pool, "bravo", alice.principal_id, &e), BASE_ERR_NOT_FOUND);

    /* Usernames are unique per tenant, not across tenants. */
    identity_principal_new dup = {.tenant_id = "acme",
                                  .kind = IDENTITY_PRINCIPAL_USER,
                                  .username = "alice@acme",
                                  .display_name = "Other Alice",
                                  .created_by = ADMIN};
    EXPECT_ERR(identity_store_principal_create(f.pool, &dup, NULL), BASE_ERR_EXISTS);
    assert_non_null(strstr(base_error_message(), "username"));
    dup.tenant_id = "bravo";
    identity_principal alice_b;
    MUST(identity_store_principal_create(f.pool, &dup, &alice_b));
    assert_string_not_equal(alice_b.principal_id, alice.principal_id);
    EXPECT_ERR(identity_store_password_get(f.pool, "bravo", alice_b.principal_id, &pw), BASE_ERR_NOT_FOUND);

    /* A given id that exists (in any tenant) is refused. */
    identity_principal_new same_id = {.tenant_id = "bravo",
                                      .principal_id = alice.principal_id,
                                      .kind = IDENTITY_PRINCIPAL_USER,
                                      .username = "carol",
                                      .display_name = "Carol",
                                      .created_by = ADMIN};
    EXPECT_ERR(identity_store_principal_create(f.pool, &same_id, NULL), BASE_ERR_EXISTS);

    /* A role of another tenant (or none at all): nothing is created, not even the principal. */
    const char *perms[] = {"phi.read.demographics"};
    identity_role_put put = {.tenant_id = "bravo",
                             .role_id = "bravo_front_desk",
                             .display_name = "Front desk",
                             .permissions = perms,
                             .npermissions = 1,
                             .changed_by = ADMIN};
    identity_role role = {0};
    MUST(identity_store_role_put(f.pool, &put, &role, NULL, NULL));
    identity_role_clear(&role);
    const char *foreign[] = {"scheduler", "bravo_front_desk"};
    identity_principal_new bad = {.tenant_id = "acme",
                                  .kind = IDENTITY_PRINCIPAL_USER,
                                  .username = "mallory",
                                  .display_name = "Mallory",
                                  .password_encoded = PW1,
                                  .roles = foreign,
                                  .nroles = 2,
                                  .created_by = ADMIN};
    EXPECT_ERR(identity_store_principal_create(f.pool, &bad, NULL), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(identity_store_principal_get_by_username(f.pool, "acme", "mallory", &got), BASE_ERR_NOT_FOUND);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM principals"), 2);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM password_hashes"), 1);
    bad.tenant_id = "bravo"; /* in its own tenant the same request works */
    MUST(identity_store_principal_create(f.pool, &bad, &got));
    bad.tenant_id = "nowhere";
    bad.username = "mallory2";
    EXPECT_ERR(identity_store_principal_create(f.pool, &bad, NULL), BASE_ERR_NOT_FOUND);

    /* Validation names the field, never the value. */
    identity_principal_new inv = {.tenant_id = "acme",
                                  .kind = IDENTITY_PRINCIPAL_USER,
                                  .username = "Bad User!",
                                  .display_name = "X",
                                  .created_by = ADMIN};
    EXPECT_INVALID(identity_store_principal_create(f.pool, &inv, NULL), "username", "Bad User!");
    inv.username = "good.user";
    inv.password_encoded = "$2b$12$bcryptisnotallowedhere";
    EXPECT_INVALID(identity_store_principal_create(f.pool, &inv, NULL), "password_encoded", "bcrypt");
    inv.password_encoded = NULL;
    inv.created_by = "somebody";
    EXPECT_INVALID(identity_store_principal_create(f.pool, &inv, NULL), "created_by", "somebody");
    inv.created_by = ADMIN;
    const char *twice[] = {"patient", "patient"};
    inv.roles = twice;
    inv.nroles = 2;
    EXPECT_INVALID(identity_store_principal_create(f.pool, &inv, NULL), "roles", "");
    inv.roles = NULL;
    inv.nroles = 0;
    inv.kind = IDENTITY_PRINCIPAL_SERVICE;
    inv.principal_id = alice.principal_id; /* usr_ for a service */
    EXPECT_INVALID(identity_store_principal_create(f.pool, &inv, NULL), "principal_id", alice.principal_id);
    inv.principal_id = NULL;
    identity_principal svc;
    MUST(identity_store_principal_create(f.pool, &inv, &svc));
    assert_true(strncmp(svc.principal_id, "svc_", 4) == 0);
    assert_int_equal(svc.kind, IDENTITY_PRINCIPAL_SERVICE);
    EXPECT_INVALID(identity_store_principal_get(f.pool, "acme", "usr_XYZ", &got), "principal_id", "XYZ");

    /* Disable: another tenant's id changes nothing; the first disable wins; again reports unchanged. */
    bool changed = true;
    EXPECT_ERR(identity_store_principal_disable(f.pool, "bravo", alice.principal_id, "left", &got, &changed),
               BASE_ERR_NOT_FOUND);
    MUST(identity_store_principal_get(f.pool, "acme", alice.principal_id, &got));
    assert_int_equal(got.state, IDENTITY_PRINCIPAL_ACTIVE);
    MUST(identity_store_principal_disable(f.pool, "acme", alice.principal_id, "left the practice", &got,
                                          &changed));
    assert_true(changed);
    assert_int_equal(got.state, IDENTITY_PRINCIPAL_DISABLED);
    assert_string_equal(got.disabled_reason, "left the practice");
    assert_true(got.disabled_us > 0);
    identity_principal again;
    MUST(identity_store_principal_disable(f.pool, "acme", alice.principal_id, "second", &again, &changed));
    assert_false(changed);
    assert_string_equal(again.disabled_reason, "left the practice");
    assert_int_equal(again.disabled_us, got.disabled_us);
    EXPECT_INVALID(identity_store_principal_disable(f.pool, "acme", alice.principal_id, "", NULL, NULL),
                   "reason", "");
    MUST(identity_store_effective(f.pool, "acme", alice.principal_id, &e));
    assert_int_equal(e.state, IDENTITY_PRINCIPAL_DISABLED);
    identity_effective_free(&e);
    /* bravo's alice is untouched. */
    MUST(identity_store_principal_get(f.pool, "bravo", alice_b.principal_id, &got));
    assert_int_equal(got.state, IDENTITY_PRINCIPAL_ACTIVE);
    fx_close(&f);
}

static void test_passwords(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);
    identity_principal u;
    mk_user(f.pool, "acme", "user1", NULL, 0, &u);
    identity_password pw, pw2;
    MUST(identity_store_password_get(f.pool, "acme", u.principal_id, &pw));
    assert_string_equal(pw.encoded, PW1);
    usleep(2000);
    MUST(identity_store_password_set(f.pool, "acme", u.principal_id, PW2));
    MUST(identity_store_password_get(f.pool, "acme", u.principal_id, &pw2));
    assert_string_equal(pw2.encoded, PW2);
    assert_true(pw2.updated_us > pw.updated_us);
    /* Through another tenant: not found, and nothing written. */
    EXPECT_ERR(identity_store_password_set(f.pool, "bravo", u.principal_id, PW1), BASE_ERR_NOT_FOUND);
    MUST(identity_store_password_get(f.pool, "acme", u.principal_id, &pw));
    assert_string_equal(pw.encoded, PW2);
    EXPECT_INVALID(identity_store_password_set(f.pool, "acme", u.principal_id, "hunter2hunter2"), "encoded",
                   "hunter2");
    /* A principal without a password. */
    identity_principal_new in = {.tenant_id = "acme",
                                 .kind = IDENTITY_PRINCIPAL_SERVICE,
                                 .username = "svc.referrals",
                                 .display_name = "Referrals",
                                 .created_by = ADMIN};
    identity_principal svc;
    MUST(identity_store_principal_create(f.pool, &in, &svc));
    EXPECT_ERR(identity_store_password_get(f.pool, "acme", svc.principal_id, &pw), BASE_ERR_NOT_FOUND);
    char id[40];
    EXPECT_ERR(identity_store_password_set(f.pool, "acme", fresh_id("usr_", id), PW1), BASE_ERR_NOT_FOUND);
    fx_close(&f);
}

typedef struct step_race {
    db_pool *pool;
    const char *principal_id;
    int wins;
    base_err err;
} step_race;

static void *step_worker(void *arg)
{
    step_race *s = arg;
    bool ok = false;
    base_result r = identity_store_totp_use_step(s->pool, "acme", s->principal_id, 5000, &ok);
    s->err = r.err;
    s->wins = ok ? 1 : 0;
    return NULL;
}

static void test_totp_and_recovery_codes(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);
    identity_principal u;
    mk_user(f.pool, "acme", "user1", NULL, 0, &u);
    const char *pid = u.principal_id;

    identity_totp t;
    EXPECT_ERR(identity_store_totp_get(f.pool, "acme", pid, &t), BASE_ERR_NOT_FOUND);
    unsigned char sealed[48];
    for (size_t i = 0; i < sizeof sealed; i++)
        sealed[i] = (unsigned char)(i * 7); /* includes a zero byte: binary-safe */
    EXPECT_ERR(identity_store_totp_put(f.pool, "bravo", pid, sealed, sizeof sealed), BASE_ERR_NOT_FOUND);
    EXPECT_INVALID(identity_store_totp_put(f.pool, "acme", pid, sealed, 8), "sealed_secret", "");
    MUST(identity_store_totp_put(f.pool, "acme", pid, sealed, sizeof sealed));
    MUST(identity_store_totp_get(f.pool, "acme", pid, &t));
    assert_int_equal(t.sealed_len, sizeof sealed);
    assert_memory_equal(t.sealed_secret, sealed, sizeof sealed);
    assert_false(t.confirmed);
    assert_int_equal(t.last_step, 0);
    EXPECT_ERR(identity_store_totp_get(f.pool, "bravo", pid, &t), BASE_ERR_NOT_FOUND);

    /* The compare-and-set also guards confirmation: a step at or below last_step is a replay. */
    bool ok = false;
    MUST(identity_store_totp_use_step(f.pool, "acme", pid, 500, &ok));
    assert_true(ok);
    unsigned char codes[10][IDENTITY_RECOVERY_HMAC_LEN];
    for (int i = 0; i < 10; i++)
        memset(codes[i], 0x10 + i, sizeof codes[i]);
    MUST(identity_store_totp_confirm(f.pool, "acme", pid, 500, (const unsigned char(*)[32])codes, 10, &ok));
    assert_false(ok);
    MUST(identity_store_totp_get(f.pool, "acme", pid, &t));
    assert_false(t.confirmed);
    identity_recovery_codes rc;
    MUST(identity_store_recovery_codes_list(f.pool, "acme", pid, &rc));
    assert_int_equal(rc.n, 0);
    EXPECT_ERR(identity_store_totp_confirm(f.pool, "bravo", pid, 1000, NULL, 0, &ok), BASE_ERR_NOT_FOUND);
    MUST(identity_store_totp_confirm(f.pool, "acme", pid, 1000, (const unsigned char(*)[32])codes, 10, &ok));
    assert_true(ok);
    MUST(identity_store_totp_get(f.pool, "acme", pid, &t));
    assert_true(t.confirmed);
    assert_true(t.confirmed_us > 0);
    assert_int_equal(t.last_step, 1000);
    EXPECT_ERR(identity_store_totp_confirm(f.pool, "acme", pid, 2000, NULL, 0, &ok), BASE_ERR_CONFLICT);
    identity_effective e;
    MUST(identity_store_effective(f.pool, "acme", pid, &e));
    assert_true(e.totp_confirmed);
    identity_effective_free(&e);

    /* Each step is accepted once; earlier steps never. */
    MUST(identity_store_totp_use_step(f.pool, "acme", pid, 1000, &ok));
    assert_false(ok);
    MUST(identity_store_totp_use_step(f.pool, "acme", pid, 1001, &ok));
    assert_true(ok);
    MUST(identity_store_totp_use_step(f.pool, "acme", pid, 1001, &ok));
    assert_false(ok);
    MUST(identity_store_totp_use_step(f.pool, "acme", pid, 999, &ok));
    assert_false(ok);
    EXPECT_ERR(identity_store_totp_use_step(f.pool, "bravo", pid, 1002, &ok), BASE_ERR_NOT_FOUND);
    MUST(identity_store_totp_get(f.pool, "acme", pid, &t));
    assert_int_equal(t.last_step, 1001);
    EXPECT_INVALID(identity_store_totp_use_step(f.pool, "acme", pid, 0, &ok), "step", "");

    /* Replicas racing with the same code: exactly one wins. */
    step_race race[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        race[i] = (step_race){.pool = f.pool, .principal_id = pid};
        assert_int_equal(pthread_create(&th[i], NULL, step_worker, &race[i]), 0);
    }
    int wins = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(race[i].err, BASE_OK);
        wins += race[i].wins;
    }
    assert_int_equal(wins, 1);

    /* Recovery codes: stored at confirmation, each usable once, only with its HMAC, only in its tenant. */
    MUST(identity_store_recovery_codes_list(f.pool, "acme", pid, &rc));
    assert_int_equal(rc.n, 10);
    for (size_t i = 0; i < rc.n; i++) {
        assert_int_equal(rc.codes[i].idx, (int)i);
        assert_memory_equal(rc.codes[i].code_hmac, codes[i], 32);
        assert_false(rc.codes[i].used);
    }
    MUST(identity_store_recovery_code_use(f.pool, "bravo", pid, 3, codes[3], &ok));
    assert_false(ok);
    MUST(identity_store_recovery_code_use(f.pool, "acme", pid, 3, codes[4], &ok));
    assert_false(ok);
    MUST(identity_store_recovery_code_use(f.pool, "acme", pid, 3, codes[3], &ok));
    assert_true(ok);
    MUST(identity_store_recovery_code_use(f.pool, "acme", pid, 3, codes[3], &ok));
    assert_false(ok);
    MUST(identity_store_recovery_codes_list(f.pool, "acme", pid, &rc));
    for (size_t i = 0; i < rc.n; i++)
        assert_int_equal(rc.codes[i].used, i == 3);
    assert_true(rc.codes[3].used_us > 0);
    MUST(identity_store_recovery_codes_list(f.pool, "bravo", pid, &rc));
    assert_int_equal(rc.n, 0);
    EXPECT_INVALID(identity_store_recovery_code_use(f.pool, "acme", pid, 16, codes[0], &ok), "idx", "");

    /* Regenerated: the old set is gone. */
    unsigned char fresh[5][IDENTITY_RECOVERY_HMAC_LEN];
    for (int i = 0; i < 5; i++)
        memset(fresh[i], 0xa0 + i, sizeof fresh[i]);
    EXPECT_ERR(
        identity_store_recovery_codes_replace(f.pool, "bravo", pid, (const unsigned char(*)[32])fresh, 5),
        BASE_ERR_NOT_FOUND);
    MUST(identity_store_recovery_codes_replace(f.pool, "acme", pid, (const unsigned char(*)[32])fresh, 5));
    MUST(identity_store_recovery_codes_list(f.pool, "acme", pid, &rc));
    assert_int_equal(rc.n, 5);
    assert_memory_equal(rc.codes[4].code_hmac, fresh[4], 32);
    assert_false(rc.codes[3].used);
    MUST(identity_store_recovery_code_use(f.pool, "acme", pid, 0, codes[0], &ok));
    assert_false(ok);
    MUST(identity_store_recovery_code_use(f.pool, "acme", pid, 0, fresh[0], &ok));
    assert_true(ok);
    EXPECT_INVALID(
        identity_store_recovery_codes_replace(f.pool, "acme", pid, (const unsigned char(*)[32])fresh, 0),
        "recovery_codes", "");

    /* Re-enrolment replaces the secret and starts unconfirmed. */
    sealed[0] ^= 0xff;
    MUST(identity_store_totp_put(f.pool, "acme", pid, sealed, sizeof sealed));
    MUST(identity_store_totp_get(f.pool, "acme", pid, &t));
    assert_false(t.confirmed);
    assert_int_equal(t.last_step, 0);
    assert_memory_equal(t.sealed_secret, sealed, sizeof sealed);
    fx_close(&f);
}

static void test_roles_and_grants(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);

    /* Create: version 1, duplicates folded, history with no old value. */
    const char *p1[] = {"phi.read.demographics", "phi.read.clinical", "phi.read.clinical"};
    identity_role_put put = {.tenant_id = "acme",
                             .role_id = "nurse",
                             .display_name = "Nurse",
                             .permissions = p1,
                             .npermissions = 3,
                             .changed_by = ADMIN};
    identity_role role = {0}, old = {0};
    bool changed = false;
    MUST(identity_store_role_put(f.pool, &put, &role, &old, &changed));
    assert_true(changed);
    assert_int_equal(role.version, 1);
    assert_int_equal(old.version, 0);
    assert_false(role.built_in);
    assert_string_equal(role.tenant_id, "acme");
    const char *v1[] = {"phi.read.clinical", "phi.read.demographics"};
    assert_strv(role.permissions, role.npermissions, v1, 2);
    identity_role_clear(&role);
    identity_role_clear(&old);

    /* The same again: nothing changes, no version. */
    MUST(identity_store_role_put(f.pool, &put, &role, &old, &changed));
    assert_false(changed);
    assert_int_equal(role.version, 1);
    identity_role_clear(&role);
    identity_role_clear(&old);

    /* A change: version 2, old and new kept. */
    const char *p2[] = {"referral.create", "phi.read.demographics"};
    put.permissions = p2;
    put.npermissions = 2;
    put.requires_mfa = true;
    MUST(identity_store_role_put(f.pool, &put, &role, &old, &changed));
    assert_true(changed);
    assert_int_equal(role.version, 2);
    assert_true(role.requires_mfa);
    assert_int_equal(old.version, 1);
    assert_false(old.requires_mfa);
    assert_strv(old.permissions, old.npermissions, v1, 2);
    const char *v2[] = {"phi.read.demographics", "referral.create"};
    assert_strv(role.permissions, role.npermissions, v2, 2);
    identity_role_clear(&role);
    identity_role_clear(&old);

    identity_role_history h = {0};
    MUST(identity_store_role_history(f.pool, "acme", "nurse", &h));
    assert_int_equal(h.n, 2);
    assert_int_equal(h.items[0].version, 1);
    assert_null(h.items[0].old_permissions);
    assert_strv(h.items[0].permissions, h.items[0].npermissions, v1, 2);
    assert_int_equal(h.items[1].version, 2);
    assert_strv(h.items[1].old_permissions, h.items[1].nold_permissions, v1, 2);
    assert_strv(h.items[1].permissions, h.items[1].npermissions, v2, 2);
    assert_false(h.items[1].old_requires_mfa);
    assert_true(h.items[1].requires_mfa);
    assert_string_equal(h.items[1].changed_by, ADMIN);
    identity_role_history_free(&h);
    EXPECT_ERR(identity_store_role_history(f.pool, "bravo", "nurse", &h), BASE_ERR_NOT_FOUND);

    /* Optimistic concurrency. */
    put.expected_version = 1;
    put.display_name = "Registered nurse";
    EXPECT_ERR(identity_store_role_put(f.pool, &put, &role, NULL, NULL), BASE_ERR_CONFLICT);
    put.expected_version = 2;
    MUST(identity_store_role_put(f.pool, &put, &role, NULL, NULL));
    assert_int_equal(role.version, 3);
    assert_string_equal(role.display_name, "Registered nurse");
    identity_role_clear(&role);
    put.expected_version = 0;

    /* Tenants: bravo neither sees nor changes acme's nurse; its own nurse is another role. */
    EXPECT_ERR(identity_store_role_get(f.pool, "bravo", "nurse", &role), BASE_ERR_NOT_FOUND);
    identity_role_list list = {0};
    MUST(identity_store_roles_list(f.pool, "bravo", &list));
    assert_int_equal(list.n, 10);
    identity_role_list_free(&list);
    MUST(identity_store_roles_list(f.pool, "acme", &list));
    assert_int_equal(list.n, 11);
    assert_string_equal(list.items[10].role_id, "nurse");
    identity_role_list_free(&list);
    EXPECT_ERR(identity_store_roles_list(f.pool, "nowhere", &list), BASE_ERR_NOT_FOUND);
    put.tenant_id = "bravo";
    MUST(identity_store_role_put(f.pool, &put, &role, NULL, NULL));
    assert_int_equal(role.version, 1);
    identity_role_clear(&role);
    MUST(identity_store_role_get(f.pool, "acme", "nurse", &role));
    assert_int_equal(role.version, 3);
    identity_role_clear(&role);
    put.tenant_id = "nowhere";
    EXPECT_ERR(identity_store_role_put(f.pool, &put, &role, NULL, NULL), BASE_ERR_NOT_FOUND);
    put.tenant_id = "acme";

    const char *badp[] = {"PHI.Read"};
    put.permissions = badp;
    put.npermissions = 1;
    EXPECT_INVALID(identity_store_role_put(f.pool, &put, &role, NULL, NULL), "permissions", "PHI");
    put.role_id = "Nurse";
    EXPECT_INVALID(identity_store_role_put(f.pool, &put, &role, NULL, NULL), "role_id", "Nurse");
    put.role_id = "bravo_only";
    put.permissions = p2;
    put.npermissions = 2;
    put.tenant_id = "bravo";
    MUST(identity_store_role_put(f.pool, &put, &role, NULL, NULL));
    identity_role_clear(&role);

    /* Grants. */
    identity_principal u, other;
    mk_user(f.pool, "acme", "user1", NULL, 0, &u);
    mk_user(f.pool, "bravo", "user2", NULL, 0, &other);
    const char *pid = u.principal_id;
    MUST(identity_store_grant(f.pool, "acme", pid, "nurse", ADMIN));
    EXPECT_ERR(identity_store_grant(f.pool, "acme", pid, "nurse", ADMIN), BASE_ERR_EXISTS);
    EXPECT_ERR(identity_store_grant(f.pool, "acme", pid, "bravo_only", ADMIN), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(identity_store_grant(f.pool, "bravo", pid, "nurse", ADMIN), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(identity_store_grant(f.pool, "acme", other.principal_id, "nurse", ADMIN), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(identity_store_grant(f.pool, "acme", pid, "no_such_role", ADMIN), BASE_ERR_NOT_FOUND);
    MUST(identity_store_grant(f.pool, "acme", pid, "pcp_clinician", ADMIN));
    MUST(identity_store_grant(f.pool, "acme", pid, "platform_admin", ADMIN)); /* policy is the service's */

    identity_effective e;
    MUST(identity_store_effective(f.pool, "acme", pid, &e));
    assert_int_equal(e.nroles, 3);
    assert_string_equal(e.roles[0].role_id, "nurse");
    assert_int_equal(e.roles[0].version, 3);
    assert_string_equal(e.roles[1].role_id, "pcp_clinician");
    assert_int_equal(e.roles[1].version, 2);
    assert_string_equal(e.roles[2].role_id, "platform_admin");
    assert_true(e.requires_mfa);
    assert_false(e.totp_confirmed);
    assert_int_equal(e.state, IDENTITY_PRINCIPAL_ACTIVE);
    const char *want[] = {
        "guideline.content.publish", "identity.roles.manage", "identity.roles.read", "identity.users.manage",
        "partners.manage",           "patient.register",      "patient.search",      "phi.break_glass",
        "phi.read.clinical",         "phi.read.demographics", "phi.write.clinical",  "phi.write.demographics",
        "platform.tenants.manage",   "referral.create",       "referral.review"};
    assert_strv(e.permissions, e.npermissions, want, BASE_ARRAY_LEN(want));
    identity_effective_free(&e);

    /* Revoke: not through another tenant; then really. */
    EXPECT_ERR(identity_store_revoke(f.pool, "bravo", pid, "platform_admin"), BASE_ERR_NOT_FOUND);
    MUST(identity_store_revoke(f.pool, "acme", pid, "platform_admin"));
    EXPECT_ERR(identity_store_revoke(f.pool, "acme", pid, "platform_admin"), BASE_ERR_NOT_FOUND);
    MUST(identity_store_revoke(f.pool, "acme", pid, "nurse"));
    MUST(identity_store_effective(f.pool, "acme", pid, &e));
    assert_int_equal(e.nroles, 1);
    assert_false(e.requires_mfa);
    assert_int_equal(e.npermissions, 9); /* pcp_clinician alone */
    assert_false(has_str(e.permissions, e.npermissions, "partners.manage"));
    identity_effective_free(&e);

    /* A tenant that requires MFA for everyone. */
    MUST(identity_store_tenant_create(f.pool, "strict", IDENTITY_TENANT_PROVIDER, "Strict", true, NULL));
    identity_principal s;
    const char *pat[] = {"patient"};
    mk_user(f.pool, "strict", "pat1", pat, 1, &s);
    MUST(identity_store_effective(f.pool, "strict", s.principal_id, &e));
    assert_true(e.requires_mfa);
    identity_effective_free(&e);

    /* The schema itself refuses a grant of another tenant's role. */
    EXPECT_ERR(exec_sql(f.pool,
                        "INSERT INTO grants (tenant_id, principal_id, role_tenant_id, role_id, granted_by) "
                        "SELECT 'acme', principal_id, 'bravo', 'bravo_only', 'system:test' "
                        "FROM principals WHERE username = 'user1'"),
               BASE_ERR_CONFLICT);
    fx_close(&f);
}

static void test_relationships(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);
    identity_principal doc, doc_b;
    mk_user(f.pool, "acme", "doc", NULL, 0, &doc);
    mk_user(f.pool, "bravo", "docb", NULL, 0, &doc_b);

    identity_relationship_new in = {.tenant_id = "acme",
                                    .clinician_id = doc.principal_id,
                                    .patient_ref = PT_A,
                                    .kind = IDENTITY_REL_PRIMARY_CARE,
                                    .created_by = ADMIN};
    identity_relationship rel;
    int64_t t0 = now_us();
    MUST(identity_store_relationship_create(f.pool, &in, &rel));
    assert_true(strncmp(rel.relationship_id, "rel_", 4) == 0);
    assert_string_equal(rel.tenant_id, "acme");
    assert_string_equal(rel.patient_ref, PT_A);
    assert_int_equal(rel.kind, IDENTITY_REL_PRIMARY_CARE);
    assert_int_equal(rel.end_us, 0);
    assert_true(llabs(rel.start_us - t0) < 60 * INT64_C(1000000));
    assert_string_equal(rel.ended_by, "");

    identity_relationship_list list = {0};
    MUST(identity_store_relationships_active(f.pool, "acme", doc.principal_id, PT_A, &list));
    assert_int_equal(list.n, 1);
    assert_string_equal(list.items[0].relationship_id, rel.relationship_id);
    identity_relationship_list_free(&list);
    MUST(identity_store_relationships_active(f.pool, "acme", doc.principal_id, PT_B, &list));
    assert_int_equal(list.n, 0);
    identity_relationship_list_free(&list);
    MUST(identity_store_relationships_active(f.pool, "bravo", doc.principal_id, PT_A, &list));
    assert_int_equal(list.n, 0);
    identity_relationship_list_free(&list);

    /* Another tenant can neither attach to acme's clinician nor end acme's relationship. */
    in.tenant_id = "bravo";
    EXPECT_ERR(identity_store_relationship_create(f.pool, &in, NULL), BASE_ERR_NOT_FOUND);
    identity_relationship ended;
    EXPECT_ERR(identity_store_relationship_end(f.pool, "bravo", rel.relationship_id, 0, ADMIN, &ended),
               BASE_ERR_NOT_FOUND);
    MUST(identity_store_relationships_active(f.pool, "acme", doc.principal_id, PT_A, &list));
    assert_int_equal(list.n, 1);
    identity_relationship_list_free(&list);

    /* One in bravo, one starting in an hour, one already over. */
    in.clinician_id = doc_b.principal_id;
    in.kind = IDENTITY_REL_COVERING;
    identity_relationship rel_b;
    MUST(identity_store_relationship_create(f.pool, &in, &rel_b));
    in.tenant_id = "acme";
    in.clinician_id = doc.principal_id;
    in.kind = IDENTITY_REL_SPECIALIST;
    in.start_us = now_us() + 60 * MIN_US;
    identity_relationship future;
    MUST(identity_store_relationship_create(f.pool, &in, &future));
    assert_int_equal(future.start_us, in.start_us);
    in.start_us = now_us() - 120 * MIN_US;
    in.end_us = now_us() - 60 * MIN_US;
    identity_relationship past;
    MUST(identity_store_relationship_create(f.pool, &in, &past));
    assert_int_equal(past.end_us, in.end_us);
    MUST(identity_store_relationships_active(f.pool, "acme", doc.principal_id, PT_A, &list));
    assert_int_equal(list.n, 1); /* neither the future nor the past one is in force */
    identity_relationship_list_free(&list);

    /* The mirror rebuild sees every tenant's current ones (future included), page by page. */
    MUST(identity_store_relationships_current_all(f.pool, NULL, 2, &list));
    assert_int_equal(list.n, 2);
    char last[IDENTITY_ID_MAX + 1];
    snprintf(last, sizeof last, "%s", list.items[1].relationship_id);
    int seen = 0;
    for (size_t i = 0; i < list.n; i++)
        seen += strcmp(list.items[i].relationship_id, past.relationship_id) != 0;
    identity_relationship_list_free(&list);
    MUST(identity_store_relationships_current_all(f.pool, last, 2, &list));
    assert_int_equal(list.n, 1);
    seen += strcmp(list.items[0].relationship_id, past.relationship_id) != 0;
    identity_relationship_list_free(&list);
    assert_int_equal(seen, 3);

    /* End: once. */
    MUST(identity_store_relationship_end(f.pool, "acme", rel.relationship_id, 0, ADMIN, &ended));
    assert_string_equal(ended.ended_by, ADMIN);
    assert_true(ended.end_us >= ended.start_us);
    assert_true(ended.end_us <= now_us() + 60 * INT64_C(1000000));
    EXPECT_ERR(identity_store_relationship_end(f.pool, "acme", rel.relationship_id, 0, ADMIN, &ended),
               BASE_ERR_CONFLICT);
    EXPECT_ERR(identity_store_relationship_end(f.pool, "acme", past.relationship_id, 0, ADMIN, &ended),
               BASE_ERR_CONFLICT);
    MUST(identity_store_relationships_active(f.pool, "acme", doc.principal_id, PT_A, &list));
    assert_int_equal(list.n, 0);
    identity_relationship_list_free(&list);
    /* Ending one that has not started cancels it. */
    MUST(identity_store_relationship_end(f.pool, "acme", future.relationship_id, 0, ADMIN, &ended));
    assert_int_equal(ended.end_us, future.start_us);
    MUST(identity_store_relationships_current_all(f.pool, "", 10, &list));
    assert_int_equal(list.n, 1);
    assert_string_equal(list.items[0].relationship_id, rel_b.relationship_id);
    identity_relationship_list_free(&list);
    char id[40];
    EXPECT_ERR(identity_store_relationship_end(f.pool, "acme", fresh_id("rel_", id), 0, ADMIN, &ended),
               BASE_ERR_NOT_FOUND);

    /* Validation. */
    in.start_us = 0;
    in.end_us = 0;
    in.patient_ref = "pt_NOTHEX";
    EXPECT_INVALID(identity_store_relationship_create(f.pool, &in, NULL), "patient_ref", "NOTHEX");
    in.patient_ref = PT_A;
    in.start_us = now_us();
    in.end_us = in.start_us - 1;
    EXPECT_INVALID(identity_store_relationship_create(f.pool, &in, NULL), "end_us", "");
    in.start_us = 0;
    in.end_us = now_us() - 60 * MIN_US; /* before "now" */
    EXPECT_INVALID(identity_store_relationship_create(f.pool, &in, NULL), "end_us", "");
    in.end_us = 0;
    in.kind = (identity_relationship_kind)0;
    EXPECT_INVALID(identity_store_relationship_create(f.pool, &in, NULL), "kind", "");
    in.kind = IDENTITY_REL_CARE_TEAM;
    in.relationship_id = rel.relationship_id;
    EXPECT_ERR(identity_store_relationship_create(f.pool, &in, NULL), BASE_ERR_EXISTS);
    fx_close(&f);
}

#define REASON "Patient unconscious in the emergency department, no PCP reachable"

static void test_break_glass(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);
    identity_principal doc, doc_b;
    mk_user(f.pool, "acme", "doc", NULL, 0, &doc);
    mk_user(f.pool, "bravo", "docb", NULL, 0, &doc_b);

    identity_break_glass_new in = {.tenant_id = "acme",
                                   .clinician_id = doc.principal_id,
                                   .patient_ref = PT_A,
                                   .reason = REASON,
                                   .duration_minutes = 30};
    identity_break_glass g;
    MUST(identity_store_break_glass_create(f.pool, &in, &g));
    assert_true(strncmp(g.grant_id, "bg_", 3) == 0);
    assert_int_equal(strlen(g.grant_id), 35);
    assert_int_equal(g.end_us - g.start_us, 30 * MIN_US);
    assert_string_equal(g.reason, REASON);
    assert_string_equal(g.tenant_id, "acme");

    in.duration_minutes = 241;
    EXPECT_INVALID(identity_store_break_glass_create(f.pool, &in, NULL), "duration_minutes", "");
    in.duration_minutes = 240;
    in.reason = "too short";
    EXPECT_INVALID(identity_store_break_glass_create(f.pool, &in, NULL), "reason", "too short");
    in.reason = REASON;
    in.tenant_id = "bravo"; /* acme's clinician through bravo */
    EXPECT_ERR(identity_store_break_glass_create(f.pool, &in, NULL), BASE_ERR_NOT_FOUND);

    /* The check constraint refuses more than four hours, whatever the caller. */
    static const char over[] =
        "INSERT INTO break_glass_grants (grant_id, tenant_id, clinician_id, patient_ref, reason, start_at, "
        "end_at) "
        "SELECT 'bg_00000000000000000000000000000001', 'acme', principal_id, '" PT_A "', '" REASON
        "', now(), "
        "now() + interval '4 hours 1 second' FROM principals WHERE username = 'doc' AND tenant_id = 'acme'";
    EXPECT_ERR(exec_sql(f.pool, over), BASE_ERR_CONFLICT);
    static const char four[] =
        "INSERT INTO break_glass_grants (grant_id, tenant_id, clinician_id, patient_ref, reason, start_at, "
        "end_at) "
        "SELECT 'bg_00000000000000000000000000000002', 'acme', principal_id, '" PT_A "', '" REASON
        "', now(), "
        "now() + interval '4 hours' FROM principals WHERE username = 'doc' AND tenant_id = 'acme'";
    MUST(exec_sql(f.pool, four));

    /* Append-only: UPDATE, DELETE and TRUNCATE refused even to the owner, here and on role_history. */
    /* (an UPDATE every check constraint accepts: only the trigger stands in its way) */
    EXPECT_ERR(exec_sql(f.pool, "UPDATE break_glass_grants SET reason = reason || ' (edited)'"),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "DELETE FROM break_glass_grants"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "TRUNCATE break_glass_grants"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "UPDATE role_history SET changed_by = 'system:forged'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "DELETE FROM role_history"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.pool, "TRUNCATE role_history"), BASE_ERR_DENIED);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM break_glass_grants"), 2);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM role_history"),
                     18); /* 10 + 7 of 0005 + 1 of 0006 */

    /* Pages by (created_at, grant_id), within the tenant only. */
    in.tenant_id = "acme";
    in.duration_minutes = 60;
    for (int i = 0; i < 3; i++)
        MUST(identity_store_break_glass_create(f.pool, &in, NULL));
    in.tenant_id = "bravo";
    in.clinician_id = doc_b.principal_id;
    in.start_us = now_us() - 120 * MIN_US; /* already expired */
    identity_break_glass expired;
    MUST(identity_store_break_glass_create(f.pool, &in, &expired));
    MUST(identity_store_break_glass_create(f.pool,
                                           &(identity_break_glass_new){.tenant_id = "bravo",
                                                                       .clinician_id = doc_b.principal_id,
                                                                       .patient_ref = PT_B,
                                                                       .reason = REASON,
                                                                       .duration_minutes = 5},
                                           NULL));

    char seen[8][IDENTITY_ID_MAX + 1];
    size_t nseen = 0;
    int64_t after_us = 0;
    char after_id[IDENTITY_ID_MAX + 1] = "";
    int pages = 0;
    for (;;) {
        identity_break_glass_list list = {0};
        MUST(identity_store_break_glass_list(f.pool, "acme", 0, after_us, after_id, 2, &list));
        pages++;
        for (size_t i = 0; i < list.n; i++) {
            assert_string_equal(list.items[i].tenant_id, "acme");
            assert_true(nseen < 8);
            snprintf(seen[nseen++], sizeof seen[0], "%s", list.items[i].grant_id);
            if (i > 0)
                assert_true(list.items[i].created_us >= list.items[i - 1].created_us);
        }
        bool more = list.more;
        if (list.n > 0) {
            after_us = list.items[list.n - 1].created_us;
            snprintf(after_id, sizeof after_id, "%s", list.items[list.n - 1].grant_id);
        }
        identity_break_glass_list_free(&list);
        if (!more)
            break;
    }
    assert_int_equal(nseen, 5);
    assert_int_equal(pages, 3);
    for (size_t i = 0; i < nseen; i++) {
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(seen[i], seen[j]);
    }
    identity_break_glass_list list = {0};
    MUST(identity_store_break_glass_list(f.pool, "bravo", 0, 0, NULL, 100, &list));
    assert_int_equal(list.n, 2);
    assert_false(list.more);
    identity_break_glass_list_free(&list);
    /* since: only what was created after it. */
    MUST(identity_store_break_glass_list(f.pool, "acme", now_us() + 60 * MIN_US, 0, NULL, 100, &list));
    assert_int_equal(list.n, 0);
    identity_break_glass_list_free(&list);
    MUST(identity_store_break_glass_list(f.pool, "acme", g.created_us + 1, 0, NULL, 100, &list));
    assert_int_equal(list.n, 4);
    identity_break_glass_list_free(&list);
    EXPECT_INVALID(identity_store_break_glass_list(f.pool, "acme", 0, 0, "bg_x", 10, &list), "after_grant_id",
                   "bg_x");
    EXPECT_INVALID(identity_store_break_glass_list(f.pool, "acme", 0, 0, NULL, 0, &list), "limit", "");

    /* The mirror rebuild: every unexpired grant of every tenant. */
    MUST(identity_store_break_glass_current_all(f.pool, NULL, 1000, &list));
    assert_int_equal(list.n, 6);
    for (size_t i = 0; i < list.n; i++)
        assert_string_not_equal(list.items[i].grant_id, expired.grant_id);
    identity_break_glass_list_free(&list);
    MUST(identity_store_break_glass_current_all(f.pool, NULL, 4, &list));
    assert_int_equal(list.n, 4);
    assert_true(list.more);
    identity_break_glass_list_free(&list);
    fx_close(&f);
}

/* ---- A tenant with its first administrator; bootstrap -------------------------------------------------- */

#define TOTP_SEALED "0123456789abcdef0123456789abcdef" /* 32 bytes standing in for a sealed secret */

static void test_tenant_with_admin(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    char admin_id[40];
    const char *roles[] = {"security_admin"};
    identity_tenant_new tn = {.tenant_id = "clinic-b", .kind = IDENTITY_TENANT_PROVIDER, .display_name = "B"};
    identity_principal_new admin = {.tenant_id = "clinic-b",
                                    .principal_id = fresh_id("usr_", admin_id),
                                    .kind = IDENTITY_PRINCIPAL_USER,
                                    .username = "b.admin",
                                    .display_name = "B admin",
                                    .password_encoded = PW1,
                                    .roles = roles,
                                    .nroles = 1,
                                    .created_by = ADMIN};
    identity_tenant t;
    identity_principal p;
    MUST(identity_store_tenant_create_with_admin(f.pool, &tn, &admin, NULL, &t, &p));
    assert_string_equal(t.tenant_id, "clinic-b");
    assert_string_equal(p.tenant_id, "clinic-b");
    assert_string_equal(p.principal_id, admin_id);
    assert_string_equal(p.username, "b.admin");
    identity_effective e;
    MUST(identity_store_effective(f.pool, "clinic-b", admin_id, &e));
    assert_int_equal(e.nroles, 1);
    assert_string_equal(e.roles[0].role_id, "security_admin");
    assert_true(e.requires_mfa);
    assert_false(e.totp_confirmed); /* no TOTP given: enrols at the first login */
    identity_effective_free(&e);
    identity_password pw;
    MUST(identity_store_password_get(f.pool, "clinic-b", admin_id, &pw));
    assert_string_equal(pw.encoded, PW1);

    /* All or nothing: a failure after the tenant row (an unknown role, the username of the admin being
     * fine) leaves no tenant behind; a taken tenant id leaves no principal behind. */
    const char *bad_roles[] = {"no_such_role"};
    identity_tenant_new tn2 = {
        .tenant_id = "clinic-c", .kind = IDENTITY_TENANT_PROVIDER, .display_name = "C"};
    identity_principal_new admin2 = admin;
    admin2.tenant_id = "clinic-c";
    admin2.principal_id = NULL;
    admin2.roles = bad_roles;
    EXPECT_ERR(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, NULL, NULL, NULL),
               BASE_ERR_NOT_FOUND);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM tenants WHERE tenant_id = 'clinic-c'"), 0);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM principals WHERE tenant_id = 'clinic-c'"), 0);
    admin2.tenant_id = "clinic-b";
    admin2.roles = roles;
    EXPECT_ERR(identity_store_tenant_create_with_admin(f.pool, &tn, &admin2, NULL, NULL, NULL),
               BASE_ERR_EXISTS);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM principals WHERE tenant_id = 'clinic-b'"), 1);

    /* Arguments: checked before the database (and by the public checks the service calls first). */
    admin2.tenant_id = "acme"; /* not the new tenant */
    EXPECT_INVALID(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, NULL, NULL, NULL),
                   "admin.tenant_id", "");
    admin2.tenant_id = "clinic-c";
    admin2.username = "Bad Name";
    EXPECT_INVALID(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, NULL, NULL, NULL),
                   "username", "Bad Name");
    EXPECT_INVALID(identity_store_principal_check(&admin2), "username", "Bad Name");
    admin2.username = "c.admin";
    MUST(identity_store_principal_check(&admin2));
    identity_admin_totp totp = {.sealed = (const unsigned char *)TOTP_SEALED, .sealed_len = 32};
    EXPECT_INVALID(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, &totp, NULL, NULL),
                   "admin.principal_id", ""); /* a sealed secret is bound to an id chosen beforehand */
    EXPECT_INVALID(identity_store_tenant_check("Bad_Tenant", IDENTITY_TENANT_PROVIDER, "X"), "tenant_id",
                   "Bad_Tenant");
    EXPECT_INVALID(identity_store_tenant_check("ok-tenant", IDENTITY_TENANT_PROVIDER, "bad\x01"),
                   "display_name", "bad");
    MUST(identity_store_tenant_check("ok-tenant", IDENTITY_TENANT_HEALTH_PLAN, "OK"));
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM tenants"), 2);
    /* first_tenant: refused once any tenant exists. */
    tn2.first_tenant = true;
    EXPECT_ERR(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, NULL, NULL, NULL),
               BASE_ERR_CONFLICT);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM tenants"), 2);
    fx_close(&f);
}

/* alma-admin bootstrap's transaction: the first tenant, its administrator, a confirmed TOTP secret and the
 * recovery codes, all or nothing. */
static void test_bootstrap_transaction(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char admin_id[40];
    const char *roles[] = {"platform_admin", "security_admin"};
    identity_tenant_new tn = {.tenant_id = "root",
                              .kind = IDENTITY_TENANT_PROVIDER,
                              .display_name = "Platform",
                              .first_tenant = true};
    identity_principal_new admin = {.tenant_id = "root",
                                    .principal_id = fresh_id("usr_", admin_id),
                                    .kind = IDENTITY_PRINCIPAL_USER,
                                    .username = "root.admin",
                                    .display_name = "Platform administrator",
                                    .password_encoded = PW1,
                                    .roles = roles,
                                    .nroles = 2,
                                    .created_by = "system:alma-admin"};
    unsigned char codes[10][32];
    for (int i = 0; i < 10; i++)
        memset(codes[i], 'a' + i, sizeof codes[i]);
    identity_admin_totp totp = {.sealed = (const unsigned char *)TOTP_SEALED,
                                .sealed_len = 32,
                                .codes = (const unsigned char(*)[32])codes,
                                .ncodes = 10};

    /* A failure inside the transaction, after the tenant, the principal and the TOTP row (the recovery codes
     * refused by a trigger the superuser adds): nothing at all is left, so the operator can run it again. */
    MUST(exec_sql(f.pool,
                  "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'insufficient_privilege'; END $$"));
    MUST(exec_sql(f.pool, "CREATE TRIGGER test_refuse BEFORE INSERT ON recovery_codes FOR EACH ROW "
                          "EXECUTE FUNCTION test_refuse()"));
    EXPECT_ERR(identity_store_tenant_create_with_admin(f.pool, &tn, &admin, &totp, NULL, NULL),
               BASE_ERR_DENIED);
    assert_int_equal(query_int(f.pool,
                               "SELECT (SELECT count(*) FROM tenants) + (SELECT count(*) FROM principals)"
                               " + (SELECT count(*) FROM password_hashes) + (SELECT count(*) FROM grants)"
                               " + (SELECT count(*) FROM totp) + (SELECT count(*) FROM recovery_codes)"),
                     0);
    MUST(exec_sql(f.pool, "DROP TRIGGER test_refuse ON recovery_codes"));

    identity_tenant t;
    identity_principal p;
    MUST(identity_store_tenant_create_with_admin(f.pool, &tn, &admin, &totp, &t, &p));
    assert_string_equal(t.tenant_id, "root");
    assert_string_equal(p.principal_id, admin_id);
    identity_totp got;
    MUST(identity_store_totp_get(f.pool, "root", admin_id, &got));
    assert_true(got.confirmed);
    assert_int_equal(got.last_step, 0);
    assert_int_equal(got.sealed_len, 32);
    assert_memory_equal(got.sealed_secret, TOTP_SEALED, 32);
    identity_recovery_codes rc;
    MUST(identity_store_recovery_codes_list(f.pool, "root", admin_id, &rc));
    assert_int_equal(rc.n, 10);
    for (size_t i = 0; i < rc.n; i++) {
        assert_int_equal(rc.codes[i].idx, (int)i);
        assert_memory_equal(rc.codes[i].code_hmac, codes[i], 32);
        assert_false(rc.codes[i].used);
    }
    identity_effective e;
    MUST(identity_store_effective(f.pool, "root", admin_id, &e));
    assert_int_equal(e.nroles, 2);
    assert_true(e.totp_confirmed);
    identity_effective_free(&e);
    /* A current code's step is accepted once. */
    bool ok = false;
    MUST(identity_store_totp_use_step(f.pool, "root", admin_id, 12345, &ok));
    assert_true(ok);

    /* Bootstrap is the first tenant only: a second one (any id) is refused and writes nothing. */
    char other_id[40];
    identity_tenant_new tn2 = tn;
    tn2.tenant_id = "root2";
    identity_principal_new admin2 = admin;
    admin2.tenant_id = "root2";
    admin2.principal_id = fresh_id("usr_", other_id);
    EXPECT_ERR(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, &totp, NULL, NULL),
               BASE_ERR_CONFLICT);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM tenants"), 1);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM principals"), 1);
    /* Bad TOTP arguments are refused before the database. */
    identity_admin_totp bad = totp;
    bad.ncodes = 0;
    EXPECT_INVALID(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, &bad, NULL, NULL),
                   "totp.codes", "");
    bad = totp;
    bad.sealed_len = 8;
    EXPECT_INVALID(identity_store_tenant_create_with_admin(f.pool, &tn2, &admin2, &bad, NULL, NULL),
                   "totp.sealed", "");
    fx_close(&f);
}

/* ---- Role holders -------------------------------------------------------------------------------------- */

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_role_holders(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);
    const char *perms[] = {"phi.read.demographics"};
    identity_role_put put = {.tenant_id = "acme",
                             .role_id = "front_desk",
                             .display_name = "Front desk",
                             .permissions = perms,
                             .npermissions = 1,
                             .expected_version = IDENTITY_ROLE_VERSION_NEW,
                             .changed_by = ADMIN};
    identity_role r = {0};
    MUST(identity_store_role_put(f.pool, &put, &r, NULL, NULL));
    identity_role_clear(&r);
    /* IDENTITY_ROLE_VERSION_NEW: create only. */
    EXPECT_ERR(identity_store_role_put(f.pool, &put, &r, NULL, NULL), BASE_ERR_CONFLICT);
    put.expected_version = -2;
    EXPECT_INVALID(identity_store_role_put(f.pool, &put, &r, NULL, NULL), "expected_version", "");
    EXPECT_INVALID(identity_store_role_put_check(&put), "expected_version", "");
    put.expected_version = 0;
    MUST(identity_store_role_put_check(&put));

    /* Five holders in acme (one of them disabled), one of a built-in role, and bravo's pcp_clinicians. */
    const char *fd[] = {"front_desk"}, *pcp[] = {"pcp_clinician"};
    identity_principal u[5], other, b;
    char want[4][IDENTITY_ID_MAX + 1];
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "desk%d", i);
        mk_user(f.pool, "acme", name, fd, 1, &u[i]);
    }
    MUST(identity_store_principal_disable(f.pool, "acme", u[2].principal_id, "left", NULL, NULL));
    mk_user(f.pool, "acme", "doc", pcp, 1, &other);
    mk_user(f.pool, "bravo", "docb", pcp, 1, &b);
    size_t k = 0;
    for (int i = 0; i < 5; i++)
        if (i != 2)
            snprintf(want[k++], sizeof want[0], "%s", u[i].principal_id);
    qsort(want, 4, sizeof want[0], cmp_id);

    /* Pages of two, in id order, the disabled holder left out. */
    char after[IDENTITY_ID_MAX + 1] = "";
    char seen[8][IDENTITY_ID_MAX + 1];
    size_t nseen = 0;
    int pages = 0;
    for (;;) {
        identity_holder_list l = {0};
        MUST(identity_store_role_holders(f.pool, "acme", "front_desk", after, 2, &l));
        pages++;
        for (size_t i = 0; i < l.n; i++) {
            assert_true(nseen < 8);
            snprintf(seen[nseen++], sizeof seen[0], "%s", l.ids[i]);
        }
        bool more = l.more;
        if (l.n > 0)
            snprintf(after, sizeof after, "%s", l.ids[l.n - 1]);
        identity_holder_list_free(&l);
        if (!more)
            break;
    }
    assert_int_equal(pages, 2);
    assert_int_equal(nseen, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(seen[i], want[i]);

    /* A built-in role: the tenant's holders only. */
    identity_holder_list l = {0};
    MUST(identity_store_role_holders(f.pool, "acme", "pcp_clinician", NULL, 100, &l));
    assert_int_equal(l.n, 1);
    assert_false(l.more);
    assert_string_equal(l.ids[0], other.principal_id);
    identity_holder_list_free(&l);
    MUST(identity_store_role_holders(f.pool, "bravo", "front_desk", NULL, 100, &l));
    assert_int_equal(l.n, 0);
    identity_holder_list_free(&l);
    MUST(identity_store_role_holders(f.pool, "acme", "no_such_role", NULL, 100, &l));
    assert_int_equal(l.n, 0);
    identity_holder_list_free(&l);
    EXPECT_INVALID(identity_store_role_holders(f.pool, "acme", "front_desk", NULL, 0, &l), "limit", "");
    EXPECT_INVALID(identity_store_role_holders(f.pool, "acme", "front_desk", NULL, 1001, &l), "limit", "");
    EXPECT_INVALID(identity_store_role_holders(f.pool, "acme", "front_desk", "usr_x", 10, &l), "after_id",
                   "usr_x");
    EXPECT_INVALID(identity_store_role_holders(f.pool, "acme", "Bad Role", NULL, 10, &l), "role_id",
                   "Bad Role");
    fx_close(&f);
}

/* ---- Exact lookups: a relationship by id, the break-glass grant in force ------------------------------- */

/* The plan of a statement, as one text (EXPLAIN), with sequential scans off on that connection. */
static bool plan_uses(db_pool *pool, const char *sql, const char *index)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, "SET enable_seqscan = off", 0, NULL, NULL));
    MUST(db_exec(c, sql, 0, NULL, &res));
    bool found = false;
    for (int i = 0; i < db_result_ntuples(res) && !found; i++)
        found = strstr(db_result_get(res, i, 0), index) != NULL;
    db_result_free(res);
    MUST(db_exec(c, "RESET enable_seqscan", 0, NULL, NULL));
    db_conn_release(c);
    return found;
}

static void test_exact_lookups(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "acme", IDENTITY_TENANT_PROVIDER);
    mk_tenant(f.pool, "bravo", IDENTITY_TENANT_PROVIDER);
    identity_principal doc, doc2, doc_b;
    mk_user(f.pool, "acme", "doc", NULL, 0, &doc);
    mk_user(f.pool, "acme", "doc2", NULL, 0, &doc2);
    mk_user(f.pool, "bravo", "docb", NULL, 0, &doc_b);

    /* relationship_get: by id, within the tenant. */
    identity_relationship_new rin = {.tenant_id = "acme",
                                     .clinician_id = doc.principal_id,
                                     .patient_ref = PT_A,
                                     .kind = IDENTITY_REL_SPECIALIST,
                                     .created_by = ADMIN};
    identity_relationship rel, got;
    MUST(identity_store_relationship_create(f.pool, &rin, &rel));
    MUST(identity_store_relationship_get(f.pool, "acme", rel.relationship_id, &got));
    assert_memory_equal(&rel, &got, sizeof rel);
    EXPECT_ERR(identity_store_relationship_get(f.pool, "bravo", rel.relationship_id, &got),
               BASE_ERR_NOT_FOUND);
    EXPECT_INVALID(identity_store_relationship_get(f.pool, "acme", "rel_x", &got), "relationship_id",
                   "rel_x");
    MUST(identity_store_relationship_end(f.pool, "acme", rel.relationship_id, 0, ADMIN, NULL));
    MUST(identity_store_relationship_get(f.pool, "acme", rel.relationship_id, &got));
    assert_string_equal(got.ended_by, ADMIN);
    assert_true(got.end_us > 0);

    /* break_glass_active: the grant in force for exactly this clinician and patient. */
    identity_break_glass g;
    bool found = true;
    MUST(identity_store_break_glass_active(f.pool, "acme", doc.principal_id, PT_A, 0, &g, &found));
    assert_false(found);
    identity_break_glass_new in = {.tenant_id = "acme",
                                   .clinician_id = doc.principal_id,
                                   .patient_ref = PT_A,
                                   .reason = REASON,
                                   .duration_minutes = 30};
    identity_break_glass short_g, long_g, expired;
    MUST(identity_store_break_glass_create(f.pool, &in, &short_g));
    in.duration_minutes = 120;
    MUST(identity_store_break_glass_create(f.pool, &in, &long_g));
    in.duration_minutes = 5;
    in.start_us = now_us() - 60 * MIN_US;
    MUST(identity_store_break_glass_create(f.pool, &in, &expired));
    /* Many other grants of the tenant (another clinician, another patient) change nothing. */
    MUST(exec_sql(f.pool,
                  "INSERT INTO break_glass_grants (grant_id, tenant_id, clinician_id, patient_ref, reason, "
                  "start_at, end_at) SELECT 'bg_' || md5(i::text), 'acme', principal_id, '" PT_B "', '" REASON
                  "', now(), now() + interval '1 hour' FROM principals, generate_series(1, 1500) AS i "
                  "WHERE username = 'doc2' AND tenant_id = 'acme'"));
    MUST(identity_store_break_glass_active(f.pool, "acme", doc.principal_id, PT_A, 0, &g, &found));
    assert_true(found);
    assert_string_equal(g.grant_id, long_g.grant_id); /* of several, the one that ends last */
    assert_string_equal(g.reason, REASON);
    /* At an instant: just before these two started (the expired one ended 55 minutes before), none; during
     * the expired one, that one; the end is exclusive. */
    MUST(identity_store_break_glass_active(f.pool, "acme", doc.principal_id, PT_A, short_g.start_us - 1, &g,
                                           &found));
    assert_false(found);
    MUST(identity_store_break_glass_active(f.pool, "acme", doc.principal_id, PT_A, expired.start_us + MIN_US,
                                           &g, &found));
    assert_true(found);
    assert_string_equal(g.grant_id, expired.grant_id);
    MUST(
        identity_store_break_glass_active(f.pool, "acme", doc.principal_id, PT_A, long_g.end_us, &g, &found));
    assert_false(found); /* the end is exclusive */
    MUST(identity_store_break_glass_active(f.pool, "acme", doc.principal_id, PT_A, long_g.end_us - 1, &g,
                                           &found));
    assert_true(found);
    /* Not another patient, clinician or tenant. */
    MUST(identity_store_break_glass_active(f.pool, "acme", doc.principal_id, PT_B, 0, &g, &found));
    assert_false(found);
    MUST(identity_store_break_glass_active(f.pool, "acme", doc2.principal_id, PT_A, 0, &g, &found));
    assert_false(found);
    MUST(identity_store_break_glass_active(f.pool, "acme", doc2.principal_id, PT_B, 0, &g, &found));
    assert_true(found);
    MUST(identity_store_break_glass_active(f.pool, "bravo", doc.principal_id, PT_A, 0, &g, &found));
    assert_false(found);
    EXPECT_INVALID(identity_store_break_glass_active(f.pool, "acme", doc.principal_id, "pt_x", 0, &g, &found),
                   "patient_ref", "pt_x");
    EXPECT_INVALID(identity_store_break_glass_active(f.pool, "acme", "usr_x", PT_A, 0, &g, &found),
                   "clinician_id", "usr_x");
    /* Index-backed. */
    assert_true(plan_uses(f.pool,
                          "EXPLAIN SELECT grant_id FROM break_glass_grants WHERE tenant_id = 'acme' AND "
                          "clinician_id = 'usr_00000000000000000000000000000000' AND patient_ref = '" PT_A
                          "' AND end_at > now() AND start_at <= now() ORDER BY end_at DESC LIMIT 1",
                          "break_glass_active"));
    assert_true(plan_uses(f.pool,
                          "EXPLAIN SELECT principal_id FROM grants WHERE tenant_id = 'acme' AND role_id = "
                          "'pcp_clinician' AND principal_id COLLATE \"C\" > '' ORDER BY principal_id COLLATE "
                          "\"C\" LIMIT 10",
                          "grants_by_tenant_role"));
    fx_close(&f);
}

#define JWKS                                                                                                 \
    "{\"keys\": [{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": "                                           \
    "\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}"

static void test_partner_clients(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    mk_tenant(f.pool, "plan", IDENTITY_TENANT_HEALTH_PLAN);
    mk_tenant(f.pool, "plan2", IDENTITY_TENANT_HEALTH_PLAN);
    mk_tenant(f.pool, "clinic", IDENTITY_TENANT_PROVIDER);
    const char *scopes[] = {"system/AuditEvent.read", "system/GuidanceResponse.rs"};
    identity_partner_client_new in = {.client_id = "plan-gateway-1",
                                      .tenant_id = "plan",
                                      .display_name = "Plan gateway",
                                      .jwks_json = JWKS,
                                      .scopes = scopes,
                                      .nscopes = 2,
                                      .created_by = ADMIN};
    identity_partner_client c = {0};
    MUST(identity_store_partner_client_register(f.pool, &in, &c));
    assert_string_equal(c.client_id, "plan-gateway-1");
    assert_string_equal(c.tenant_id, "plan");
    assert_non_null(strstr(c.jwks_json, "\"keys\""));
    assert_non_null(strstr(c.jwks_json, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"));
    assert_strv(c.scopes, c.nscopes, scopes, 2);
    assert_false(c.disabled);
    identity_partner_client_clear(&c);

    EXPECT_ERR(identity_store_partner_client_register(f.pool, &in, &c), BASE_ERR_EXISTS);
    in.client_id = "clinic-client";
    in.tenant_id = "clinic";
    EXPECT_ERR(identity_store_partner_client_register(f.pool, &in, &c), BASE_ERR_CONFLICT);
    in.tenant_id = "plan";
    in.jwks_json = "not json at all";
    EXPECT_INVALID(identity_store_partner_client_register(f.pool, &in, &c), "jwks_json", "not json");
    in.jwks_json = "[1, 2]";
    EXPECT_INVALID(identity_store_partner_client_register(f.pool, &in, &c), "jwks_json", "");
    in.jwks_json = "{\"keys\": 5}";
    EXPECT_INVALID(identity_store_partner_client_register(f.pool, &in, &c), "jwks_json", "");
    in.jwks_json = JWKS;
    const char *bad[] = {"system/AuditEvent.read", "admin"};
    in.scopes = bad;
    EXPECT_INVALID(identity_store_partner_client_register(f.pool, &in, &c), "scopes", "admin");
    in.scopes = scopes;
    in.client_id = "-bad";
    EXPECT_INVALID(identity_store_partner_client_register(f.pool, &in, &c), "client_id", "-bad");
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM partner_clients"), 1);

    MUST(identity_store_partner_client_get(f.pool, "plan", "plan-gateway-1", &c));
    assert_string_equal(c.display_name, "Plan gateway");
    identity_partner_client_clear(&c);
    EXPECT_ERR(identity_store_partner_client_get(f.pool, "plan2", "plan-gateway-1", &c), BASE_ERR_NOT_FOUND);
    MUST(identity_store_partner_client_find(f.pool, "plan-gateway-1", &c));
    assert_string_equal(c.tenant_id, "plan");
    identity_partner_client_clear(&c);
    EXPECT_ERR(identity_store_partner_client_find(f.pool, "nobody-here", &c), BASE_ERR_NOT_FOUND);
    fx_close(&f);
}

static void test_signing_keys(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    unsigned char sealed[3][64], pub[3][32];
    for (int i = 0; i < 3; i++) {
        memset(sealed[i], 0x30 + i, sizeof sealed[i]);
        memset(pub[i], 0x60 + i, sizeof pub[i]);
    }
    identity_signing_keys keys;
    MUST(identity_store_signing_keys_list(f.pool, &keys));
    assert_int_equal(keys.n, 0);
    EXPECT_INVALID(identity_store_signing_key_insert(f.pool, "short", sealed[0], 64, pub[0]), "kid", "short");
    MUST(identity_store_signing_key_insert(f.pool, "key-0001", sealed[0], 64, pub[0]));
    EXPECT_ERR(identity_store_signing_key_insert(f.pool, "key-0002", sealed[1], 64, pub[1]), BASE_ERR_EXISTS);
    MUST(identity_store_signing_keys_list(f.pool, &keys));
    assert_int_equal(keys.n, 1);
    assert_string_equal(keys.keys[0].kid, "key-0001");
    assert_int_equal(keys.keys[0].state, IDENTITY_KEY_CURRENT);
    assert_int_equal(keys.keys[0].sealed_len, 64);
    assert_memory_equal(keys.keys[0].sealed_private, sealed[0], 64);
    assert_memory_equal(keys.keys[0].public_key, pub[0], 32);

    MUST(identity_store_signing_key_rotate(f.pool, "key-0002", sealed[1], 64, pub[1]));
    MUST(identity_store_signing_keys_list(f.pool, &keys));
    assert_int_equal(keys.n, 2);
    assert_string_equal(keys.keys[0].kid, "key-0002");
    assert_int_equal(keys.keys[0].state, IDENTITY_KEY_CURRENT);
    assert_string_equal(keys.keys[1].kid, "key-0001");
    assert_int_equal(keys.keys[1].state, IDENTITY_KEY_PREVIOUS);
    assert_int_equal(keys.keys[1].sealed_len, 0); /* the private half is dropped */
    assert_memory_equal(keys.keys[1].public_key, pub[0], 32);

    MUST(identity_store_signing_key_rotate(f.pool, "key-0003", sealed[2], 64, pub[2]));
    MUST(identity_store_signing_keys_list(f.pool, &keys));
    assert_int_equal(keys.n, 2);
    assert_string_equal(keys.keys[0].kid, "key-0003");
    assert_string_equal(keys.keys[1].kid, "key-0002");
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM signing_keys WHERE kid = 'key-0001' AND state = "
                                       "'retired' AND retired_at IS NOT NULL AND sealed_private IS NULL"),
                     1);
    /* A failed rotation (kid taken) changes nothing: it is one transaction. */
    EXPECT_ERR(identity_store_signing_key_rotate(f.pool, "key-0001", sealed[0], 64, pub[0]), BASE_ERR_EXISTS);
    MUST(identity_store_signing_keys_list(f.pool, &keys));
    assert_string_equal(keys.keys[0].kid, "key-0003");
    assert_int_equal(keys.keys[0].sealed_len, 64);
    assert_string_equal(keys.keys[1].kid, "key-0002");
    fx_close(&f);
}

/* ---- The runtime role ---------------------------------------------------------------------------------- */

static void test_runtime_role(void **state)
{
    (void)state;
    fx f;
    fx_open(&f); /* migrated by the owner (the superuser here) */
    char role[64], port[16] = "5432", conninfo[256];
    snprintf(role, sizeof role, "%s_rt", g_prefix);
    const char *colon = strrchr(g_uri, ':'); /* postgresql://postgres@127.0.0.1:PORT/postgres */
    if (colon) {
        size_t n = strcspn(colon + 1, "/");
        snprintf(port, sizeof port, "%.*s", (int)n, colon + 1);
    }
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%s dbname=postgres user=%s password=identity-store-test-pw", port, role);
    testdb_with_role(g_root, role, NULL,
                     "DO $$ BEGIN EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                     "PASSWORD ''identity-store-test-pw''', current_setting('alma.test_role')); END $$");
    {
        db_conn *c = NULL;
        const char *p[] = {f.schema, role};
        MUST(db_pool_acquire(f.pool, 5000, &c));
        MUST(db_exec(c, "SELECT grant_runtime($1, $2)", 2, p, NULL));
        MUST(db_exec(c, "SELECT grant_runtime($1, $2)", 2, p, NULL)); /* idempotent */
        db_conn_release(c);
    }
    db_pool *rt = testdb_pool(conninfo, f.schema, 4);

    /* Everything the service does. */
    MUST(identity_store_tenant_create(rt, "acme", IDENTITY_TENANT_PROVIDER, "Acme", false, NULL));
    MUST(identity_store_tenant_create(rt, "plan", IDENTITY_TENANT_HEALTH_PLAN, "Plan", false, NULL));
    identity_tenant t;
    MUST(identity_store_tenant_get(rt, "acme", &t));
    const char *roles[] = {"pcp_clinician"};
    identity_principal u, got;
    mk_user(rt, "acme", "doc", roles, 1, &u);
    const char *pid = u.principal_id;
    MUST(identity_store_principal_get(rt, "acme", pid, &got));
    MUST(identity_store_principal_get_by_username(rt, "acme", "doc", &got));
    MUST(identity_store_password_set(rt, "acme", pid, PW2));
    identity_password pw;
    MUST(identity_store_password_get(rt, "acme", pid, &pw));
    unsigned char sealed[40] = {1, 2, 3}, codes[4][32] = {{1}, {2}, {3}, {4}};
    MUST(identity_store_totp_put(rt, "acme", pid, sealed, sizeof sealed));
    MUST(identity_store_totp_put(rt, "acme", pid, sealed, sizeof sealed)); /* the upsert's UPDATE */
    bool ok = false;
    MUST(identity_store_totp_confirm(rt, "acme", pid, 100, (const unsigned char(*)[32])codes, 4, &ok));
    assert_true(ok);
    MUST(identity_store_totp_use_step(rt, "acme", pid, 101, &ok));
    assert_true(ok);
    identity_totp totp;
    MUST(identity_store_totp_get(rt, "acme", pid, &totp));
    identity_recovery_codes rc;
    MUST(identity_store_recovery_codes_list(rt, "acme", pid, &rc));
    assert_int_equal(rc.n, 4);
    MUST(identity_store_recovery_code_use(rt, "acme", pid, 2, codes[2], &ok));
    assert_true(ok);
    MUST(identity_store_recovery_codes_replace(rt, "acme", pid, (const unsigned char(*)[32])codes, 3));
    identity_role_list list = {0};
    MUST(identity_store_roles_list(rt, "acme", &list));
    identity_role_list_free(&list);
    const char *perms[] = {"phi.read.demographics"};
    identity_role_put put = {.tenant_id = "acme",
                             .role_id = "front_desk",
                             .display_name = "Front desk",
                             .permissions = perms,
                             .npermissions = 1,
                             .changed_by = pid};
    identity_role r = {0};
    MUST(identity_store_role_put(rt, &put, &r, NULL, NULL));
    identity_role_clear(&r);
    put.requires_mfa = true;
    MUST(identity_store_role_put(rt, &put, &r, NULL, NULL));
    assert_int_equal(r.version, 2);
    identity_role_clear(&r);
    identity_role_history h = {0};
    MUST(identity_store_role_history(rt, "acme", "front_desk", &h));
    assert_int_equal(h.n, 2);
    identity_role_history_free(&h);
    MUST(identity_store_grant(rt, "acme", pid, "front_desk", pid));
    identity_effective e;
    MUST(identity_store_effective(rt, "acme", pid, &e));
    assert_int_equal(e.nroles, 2);
    identity_effective_free(&e);
    MUST(identity_store_revoke(rt, "acme", pid, "front_desk"));
    identity_relationship_new rin = {.tenant_id = "acme",
                                     .clinician_id = pid,
                                     .patient_ref = PT_A,
                                     .kind = IDENTITY_REL_PRIMARY_CARE,
                                     .created_by = pid};
    identity_relationship rel;
    MUST(identity_store_relationship_create(rt, &rin, &rel));
    identity_relationship_list rl = {0};
    MUST(identity_store_relationships_active(rt, "acme", pid, PT_A, &rl));
    identity_relationship_list_free(&rl);
    MUST(identity_store_relationships_current_all(rt, NULL, 10, &rl));
    identity_relationship_list_free(&rl);
    MUST(identity_store_relationship_end(rt, "acme", rel.relationship_id, 0, pid, NULL));
    identity_break_glass_new bin = {.tenant_id = "acme",
                                    .clinician_id = pid,
                                    .patient_ref = PT_B,
                                    .reason = REASON,
                                    .duration_minutes = 15};
    MUST(identity_store_break_glass_create(rt, &bin, NULL));
    identity_break_glass_list bl = {0};
    MUST(identity_store_break_glass_list(rt, "acme", 0, 0, NULL, 10, &bl));
    assert_int_equal(bl.n, 1);
    identity_break_glass_list_free(&bl);
    MUST(identity_store_break_glass_current_all(rt, NULL, 10, &bl));
    identity_break_glass_list_free(&bl);
    const char *scopes[] = {"system/AuditEvent.read"};
    identity_partner_client_new cin = {.client_id = "plan-client",
                                       .tenant_id = "plan",
                                       .display_name = "Plan",
                                       .jwks_json = JWKS,
                                       .scopes = scopes,
                                       .nscopes = 1,
                                       .created_by = pid};
    identity_partner_client cl = {0};
    MUST(identity_store_partner_client_register(rt, &cin, &cl));
    identity_partner_client_clear(&cl);
    MUST(identity_store_partner_client_get(rt, "plan", "plan-client", &cl));
    identity_partner_client_clear(&cl);
    MUST(identity_store_partner_client_find(rt, "plan-client", &cl));
    identity_partner_client_clear(&cl);
    unsigned char ks[64] = {9}, kp[32] = {7};
    MUST(identity_store_signing_key_insert(rt, "rt-key-01", ks, sizeof ks, kp));
    MUST(identity_store_signing_key_rotate(rt, "rt-key-02", ks, sizeof ks, kp));
    MUST(identity_store_signing_key_rotate(rt, "rt-key-03", ks, sizeof ks, kp));
    identity_signing_keys keys;
    MUST(identity_store_signing_keys_list(rt, &keys));
    assert_int_equal(keys.n, 2);
    /* This change's additions. */
    identity_holder_list hl = {0};
    MUST(identity_store_role_holders(rt, "acme", "pcp_clinician", NULL, 10, &hl));
    assert_int_equal(hl.n, 1);
    identity_holder_list_free(&hl);
    identity_relationship rgot;
    MUST(identity_store_relationship_get(rt, "acme", rel.relationship_id, &rgot));
    identity_break_glass bg;
    bool bg_found = false;
    MUST(identity_store_break_glass_active(rt, "acme", pid, PT_B, 0, &bg, &bg_found));
    assert_true(bg_found);
    char rt_admin[40];
    const char *sa[] = {"security_admin"};
    identity_tenant_new rtn = {
        .tenant_id = "rt-new", .kind = IDENTITY_TENANT_PROVIDER, .display_name = "New"};
    identity_principal_new rta = {.tenant_id = "rt-new",
                                  .principal_id = fresh_id("usr_", rt_admin),
                                  .kind = IDENTITY_PRINCIPAL_USER,
                                  .username = "new.admin",
                                  .display_name = "New admin",
                                  .password_encoded = PW1,
                                  .roles = sa,
                                  .nroles = 1,
                                  .created_by = pid};
    identity_admin_totp rtt = {.sealed = sealed,
                               .sealed_len = sizeof sealed,
                               .codes = (const unsigned char(*)[32])codes,
                               .ncodes = 4};
    MUST(identity_store_tenant_create_with_admin(rt, &rtn, &rta, &rtt, NULL, NULL));
    rtn.tenant_id = rta.tenant_id = "rt-first";
    rtn.first_tenant = true;
    rta.principal_id = fresh_id("usr_", rt_admin);
    EXPECT_ERR(identity_store_tenant_create_with_admin(rt, &rtn, &rta, &rtt, NULL, NULL), BASE_ERR_CONFLICT);
    MUST(identity_store_principal_disable(rt, "acme", pid, "test over", NULL, NULL));

    /* And nothing more: the privileges themselves (the append-only triggers are a second, separate wall)...
     */
    assert_int_equal(query_int(rt,
                               "SELECT (has_table_privilege(current_user, 'role_history', 'UPDATE') "
                               "OR has_table_privilege(current_user, 'role_history', 'DELETE') "
                               "OR has_table_privilege(current_user, 'break_glass_grants', 'UPDATE') "
                               "OR has_table_privilege(current_user, 'break_glass_grants', 'DELETE') "
                               "OR has_any_column_privilege(current_user, 'role_history', 'UPDATE') "
                               "OR has_any_column_privilege(current_user, 'break_glass_grants', 'UPDATE') "
                               "OR has_column_privilege(current_user, 'care_relationships', 'patient_ref', "
                               "'UPDATE') "
                               "OR has_column_privilege(current_user, 'principals', 'tenant_id', 'UPDATE') "
                               "OR has_table_privilege(current_user, 'principals', 'DELETE') "
                               "OR has_schema_privilege(current_user, current_schema(), 'CREATE'))::int"),
                     0);
    assert_int_equal(query_int(rt,
                               "SELECT (has_column_privilege(current_user, 'care_relationships', 'end_at', "
                               "'UPDATE') AND has_table_privilege(current_user, 'grants', 'DELETE') "
                               "AND has_table_privilege(current_user, 'role_history', 'INSERT'))::int"),
                     1);
    /* ... and what the database does with an attempt. */
    EXPECT_ERR(exec_sql(rt, "UPDATE role_history SET changed_by = 'system:forged'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "DELETE FROM role_history"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE break_glass_grants SET reason = reason || ' (edited)'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "DELETE FROM break_glass_grants"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE care_relationships SET patient_ref = '" PT_B "'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE care_relationships SET tenant_id = 'plan'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "DELETE FROM care_relationships"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE principals SET tenant_id = 'plan'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "DELETE FROM principals"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE tenants SET mfa_required_for_all = true"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE grants SET role_id = 'platform_admin'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE roles SET version = 99 WHERE role_id = 'patient'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "UPDATE roles SET tenant_id = 'plan'"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "DELETE FROM roles"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "TRUNCATE grants"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "DELETE FROM signing_keys"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "SELECT count(*) FROM schema_migrations"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "CREATE TABLE sneaky (a int)"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(rt, "SELECT grant_runtime(current_schema(), current_user)"), BASE_ERR_DENIED);
    EXPECT_ERR(identity_store_migrate(rt, f.schema), BASE_ERR_DENIED);
    assert_int_equal(
        query_int(f.pool, "SELECT count(*) FROM role_history WHERE changed_by = 'system:forged'"), 0);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM break_glass_grants"), 1);

    db_pool_destroy(rt);
    fx_close(&f);
    testdb_with_role(g_root, role, NULL,
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = current_setting('alma.test_role')");
    testdb_with_role(g_root, role, NULL,
                     "DO $$ BEGIN EXECUTE format('DROP OWNED BY %I', current_setting('alma.test_role')); "
                     "EXECUTE format('DROP ROLE %I', current_setting('alma.test_role')); END $$");
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "ids_%d_%lx", (int)getpid(),
             (unsigned long)(ts.tv_nsec ^ ts.tv_sec) & 0xfffff);
    MUST(db_pool_create(g_uri, 2, 5000, &g_root));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    db_pool_destroy(g_root);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_builtin_roles),
        cmocka_unit_test(test_tenants),
        cmocka_unit_test(test_principals),
        cmocka_unit_test(test_passwords),
        cmocka_unit_test(test_totp_and_recovery_codes),
        cmocka_unit_test(test_roles_and_grants),
        cmocka_unit_test(test_relationships),
        cmocka_unit_test(test_break_glass),
        cmocka_unit_test(test_partner_clients),
        cmocka_unit_test(test_signing_keys),
        cmocka_unit_test(test_tenant_with_admin),
        cmocka_unit_test(test_bootstrap_transaction),
        cmocka_unit_test(test_role_holders),
        cmocka_unit_test(test_exact_lookups),
        cmocka_unit_test(test_runtime_role),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
