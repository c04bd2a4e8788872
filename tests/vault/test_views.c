/* Minimum-necessary views (services/vault/views.h) against the real PostgreSQL of the "pg" fixture. Each
 * test works in a schema of its own, migrated with vault_store_migrate when the store library is built
 * (ALMA_TEST_VIEWS_WITH_STORE), otherwise by applying migrations/0001_records.sql (which creates and seeds
 * the `views` table) through db_migrate, and dropped at the end. */
#include "db/db.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"
#include "views.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#define EXPECT_ERR(expr, want)                                                                               \
    do {                                                                                                     \
        base_result exp_r__ = (expr);                                                                        \
        if (exp_r__.err != (want))                                                                           \
            fail_msg("%s: got %s (%s), want %s", #expr, base_err_name(exp_r__.err), base_error_message(),    \
                     base_err_name(want));                                                                   \
    } while (0)

#define BIT(c) VAULT_CATEGORY_BIT(c)
enum { TREATMENT = 1, PAYMENT = 2, OPERATIONS = 3, PATIENT_REQUEST = 4, EMERGENCY = 8 };

static char g_uri[512];
static char g_prefix[40];
static int g_nschema;
static db_pool *g_root;

typedef struct fx {
    char schema[64];
    db_pool *pool;
} fx;

static void migrate(fx *f)
{
#ifdef ALMA_TEST_VIEWS_WITH_STORE
    MUST(vault_store_migrate(f->pool, f->schema));
#else
    char *sql = testenv_read_file(testenv_source_path("services/vault/migrations/0001_records.sql"));
    db_migration m = {.version = 1, .name = "records", .sql = sql, .sql_len = strlen(sql)};
    db_migration_set set = {.schema = f->schema, .migrations = &m, .count = 1};
    MUST(db_migrate(f->pool, &set, NULL));
    free(sql);
#endif
}

static void fx_open(fx *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->schema, sizeof f->schema, "%s_%d", g_prefix, g_nschema++);
    f->pool = testdb_pool(g_uri, f->schema, 4);
    migrate(f);
}

static void fx_close(fx *f)
{
    db_pool_destroy(f->pool);
    testdb_drop_schema(g_root, f->schema);
}

static void add_view(db_pool *pool, const char *tenant, const char *role, int purpose, const char *view_id,
                     const char *categories, bool pseudonymous, const char *permission)
{
    char purpose_s[8];
    snprintf(purpose_s, sizeof purpose_s, "%d", purpose);
    const char *p[] = {tenant,    role, purpose_s, view_id, categories, pseudonymous ? "true" : "false",
                       permission};
    db_conn *c = NULL;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(
        c,
        "INSERT INTO views (tenant_id, role_id, purpose, view_id, categories, pseudonymous, permission) "
        "VALUES ($1, $2, $3::smallint, $4, $5::smallint[], $6::boolean, $7)",
        7, p, NULL));
    db_conn_release(c);
}

static void delete_views(db_pool *pool, const char *tenant, const char *role)
{
    const char *p[] = {tenant, role};
    db_conn *c = NULL;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, "DELETE FROM views WHERE tenant_id = $1 AND role_id = $2", 2, p, NULL));
    db_conn_release(c);
}

static base_result resolve(const vault_views *v, const char *tenant, const char *roles_csv, int purpose,
                           vault_view *ret)
{
    /* roles_csv: "a,b,c" (test convenience) */
    char buf[256];
    const char *roles[8];
    size_t n = 0;
    snprintf(buf, sizeof buf, "%s", roles_csv);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t && n < 8; t = strtok_r(NULL, ",", &save))
        roles[n++] = t;
    return vault_views_resolve(v, tenant, roles, n, purpose, ret);
}

static void expect_view(const vault_views *v, const char *tenant, const char *roles, int purpose,
                        const char *view_id, unsigned categories, bool pseudonymous, const char *perms_csv)
{
    vault_view view;
    base_result r = resolve(v, tenant, roles, purpose, &view);
    if (!base_is_ok(r))
        fail_msg("resolve(%s, %s, %d): %s: %s", tenant, roles, purpose, base_err_name(r.err),
                 base_error_message());
    assert_string_equal(view.view_id, view_id);
    if (view.categories != categories)
        fail_msg("resolve(%s, %s, %d): categories 0x%x, want 0x%x", tenant, roles, purpose, view.categories,
                 categories);
    assert_int_equal(view.pseudonymous, pseudonymous);
    char got[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < view.n_permissions; i++)
        len += (size_t)snprintf(got + len, sizeof got - len, "%s%s", i ? "," : "", view.permissions[i]);
    assert_string_equal(got, perms_csv);
}

static void expect_denied(const vault_views *v, const char *tenant, const char *roles, int purpose)
{
    vault_view view;
    memset(&view, 0x5a, sizeof view);
    EXPECT_ERR(resolve(v, tenant, roles, purpose, &view), BASE_ERR_DENIED);
    assert_string_equal(base_error_message(), "no view for the caller's roles and this purpose");
    assert_int_equal(view.view_id[0], 0x5a); /* untouched on failure */
}

/* ---- Tests --------------------------------------------------------------------------------------------- */

static void test_builtin(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    vault_views *v = NULL;
    MUST(vault_views_load(f.pool, &v));
    assert_true(vault_views_count(v) >= 10);

    expect_view(v, "t-one", "scheduler", OPERATIONS, "scheduling", BIT(1) | BIT(2), false,
                "phi.read.contact");
    expect_view(v, "t-one", "billing", PAYMENT, "billing", BIT(1) | BIT(3) | BIT(6), false,
                "phi.read.coverage");
    expect_view(v, "t-one", "pcp_clinician", TREATMENT, "treating_clinician", VAULT_ALL_CATEGORIES & ~BIT(6),
                false, "phi.read.clinical");
    expect_view(v, "t-one", "pcp_clinician", EMERGENCY, "emergency_clinician", VAULT_ALL_CATEGORIES & ~BIT(6),
                false, "phi.read.clinical");
    expect_view(v, "t-one", "plan_reviewer", PAYMENT, "plan_review", BIT(4), true, "phi.read.plan_view");
    expect_view(v, "t-one", "care_coordinator", OPERATIONS, "care_coordination", BIT(1) | BIT(2) | BIT(3),
                false, "phi.read.demographics");
    /* No tenant: the built-in rows. */
    expect_view(v, NULL, "scheduler", OPERATIONS, "scheduling", BIT(1) | BIT(2), false, "phi.read.contact");
    expect_view(v, "", "scheduler", OPERATIONS, "scheduling", BIT(1) | BIT(2), false, "phi.read.contact");

    expect_denied(v, "t-one", "scheduler", TREATMENT);
    expect_denied(v, "t-one", "billing", TREATMENT);
    expect_denied(v, "t-one", "pcp_clinician", PATIENT_REQUEST);
    expect_denied(v, "t-one", "no_such_role", TREATMENT);
    expect_denied(v, "t-one", "", TREATMENT);
    vault_view view;
    EXPECT_ERR(vault_views_resolve(v, "t-one", NULL, 0, TREATMENT, &view), BASE_ERR_DENIED);
    const char *const with_null[] = {NULL, "", "scheduler"};
    MUST(vault_views_resolve(v, "t-one", with_null, 3, OPERATIONS, &view));
    assert_string_equal(view.view_id, "scheduling");

    /* Purposes outside PurposeOfUse 1..8 are the caller's mistake, not a denial. */
    EXPECT_ERR(resolve(v, "t-one", "scheduler", 0, &view), BASE_ERR_INVALID);
    EXPECT_ERR(resolve(v, "t-one", "scheduler", 9, &view), BASE_ERR_INVALID);
    const char *many[VAULT_VIEW_ROLES_MAX + 1];
    for (size_t i = 0; i < BASE_ARRAY_LEN(many); i++)
        many[i] = "scheduler";
    EXPECT_ERR(vault_views_resolve(v, "t-one", many, BASE_ARRAY_LEN(many), OPERATIONS, &view),
               BASE_ERR_LIMIT);
    MUST(vault_views_resolve(v, "t-one", many, VAULT_VIEW_ROLES_MAX, OPERATIONS, &view));
    assert_string_equal(view.view_id, "scheduling");
    EXPECT_ERR(vault_views_resolve(NULL, "t-one", many, 1, OPERATIONS, &view), BASE_ERR_INTERNAL);

    vault_views_free(v);
    vault_views_free(NULL);
    fx_close(&f);
}

static void test_union(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    vault_views *v = NULL;
    MUST(vault_views_load(f.pool, &v));
    /* Two roles, two views: union of categories, both permissions, ids sorted and joined. */
    expect_view(v, "t-one", "scheduler,care_coordinator", OPERATIONS, "care_coordination+scheduling",
                BIT(1) | BIT(2) | BIT(3), false, "phi.read.contact,phi.read.demographics");
    /* Pseudonymous only if every contributing view is. */
    expect_view(v, "t-one", "plan_reviewer,billing", PAYMENT, "billing+plan_review",
                BIT(1) | BIT(3) | BIT(4) | BIT(6), false, "phi.read.coverage,phi.read.plan_view");
    expect_view(v, "t-one", "plan_reviewer,plan_reviewer", PAYMENT, "plan_review", BIT(4), true,
                "phi.read.plan_view");
    /* Two roles with the same view id: one id, one permission. */
    expect_view(v, "t-one", "specialist_clinician,pcp_clinician", TREATMENT, "treating_clinician",
                VAULT_ALL_CATEGORIES & ~BIT(6), false, "phi.read.clinical");
    /* A role without a view for the purpose does not spoil the others. */
    expect_view(v, "t-one", "billing,scheduler", OPERATIONS, "scheduling", BIT(1) | BIT(2), false,
                "phi.read.contact");
    expect_view(v, "t-one", "scheduler,pcp_clinician,care_coordinator", TREATMENT,
                "care_coordination+treating_clinician", VAULT_ALL_CATEGORIES & ~BIT(6), false,
                "phi.read.clinical");
    vault_views_free(v);
    fx_close(&f);
}

static void test_tenant_override(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    /* t-one narrows its schedulers to demographics, pseudonymous plan review becomes demographic-free, and
     * gives billing an OPERATIONS view only (which takes PAYMENT away from its billing role). */
    add_view(f.pool, "t-one", "scheduler", OPERATIONS, "front_desk", "{1}", false, "phi.read.demographics");
    add_view(f.pool, "t-one", "billing", OPERATIONS, "billing_ops", "{3,6}", false, "phi.read.coverage");
    add_view(f.pool, "t-one", "plan_reviewer", PAYMENT, "plan_review_lite", "{4,5}", true,
             "phi.read.plan_view");
    vault_views *v = NULL;
    MUST(vault_views_load(f.pool, &v));

    expect_view(v, "t-one", "scheduler", OPERATIONS, "front_desk", BIT(1), false, "phi.read.demographics");
    expect_view(v, "t-two", "scheduler", OPERATIONS, "scheduling", BIT(1) | BIT(2), false,
                "phi.read.contact");
    expect_view(v, NULL, "scheduler", OPERATIONS, "scheduling", BIT(1) | BIT(2), false, "phi.read.contact");

    expect_denied(v, "t-one", "billing", PAYMENT);
    expect_view(v, "t-one", "billing", OPERATIONS, "billing_ops", BIT(3) | BIT(6), false,
                "phi.read.coverage");
    expect_view(v, "t-two", "billing", PAYMENT, "billing", BIT(1) | BIT(3) | BIT(6), false,
                "phi.read.coverage");
    expect_denied(v, "t-two", "billing", OPERATIONS);

    /* The built-in plan_reviewer OPERATIONS row is replaced too: t-one only has its PAYMENT row. */
    expect_view(v, "t-one", "plan_reviewer", PAYMENT, "plan_review_lite", BIT(4) | BIT(5), true,
                "phi.read.plan_view");
    expect_denied(v, "t-one", "plan_reviewer", OPERATIONS);
    expect_view(v, "t-two", "plan_reviewer", OPERATIONS, "plan_review", BIT(4), true, "phi.read.plan_view");

    /* Roles without tenant rows keep the built-in ones in the same tenant, and unions mix the two. */
    expect_view(v, "t-one", "care_coordinator,scheduler", OPERATIONS, "care_coordination+front_desk",
                BIT(1) | BIT(2) | BIT(3), false, "phi.read.demographics");
    vault_views_free(v);
    fx_close(&f);
}

/* ---- Cache --------------------------------------------------------------------------------------------- */

typedef struct hammer_arg {
    vault_views_cache *cache;
    atomic_bool stop;
    atomic_int errors;
    atomic_long calls;
} hammer_arg;

static void *hammer(void *p)
{
    hammer_arg *a = p;
    const char *const roles[] = {"scheduler", "care_coordinator"};
    while (!atomic_load(&a->stop)) {
        vault_view view;
        base_result r = vault_views_cache_resolve(a->cache, "t-one", roles, 2, OPERATIONS, &view);
        if (!base_is_ok(r) || (view.categories & (BIT(1) | BIT(2) | BIT(3))) != (BIT(1) | BIT(2) | BIT(3)))
            atomic_fetch_add(&a->errors, 1);
        atomic_fetch_add(&a->calls, 1);
    }
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_cache(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    vault_views_cache *slow = NULL, *fast = NULL, *bad = NULL;
    EXPECT_ERR(vault_views_cache_open(f.pool, 0, &bad), BASE_ERR_INVALID);
    EXPECT_ERR(vault_views_cache_open(f.pool, 86401, &bad), BASE_ERR_INVALID);
    assert_null(bad);
    MUST(vault_views_cache_open(f.pool, 3600, &slow));
    MUST(vault_views_cache_open(f.pool, 1, &fast));
    const char *const sched[] = {"scheduler"};
    vault_view view;
    EXPECT_ERR(vault_views_cache_resolve(slow, "t-one", sched, 1, TREATMENT, &view), BASE_ERR_DENIED);
    EXPECT_ERR(vault_views_cache_resolve(fast, "t-one", sched, 1, TREATMENT, &view), BASE_ERR_DENIED);

    add_view(f.pool, "", "scheduler", TREATMENT, "scheduling_treatment", "{1,2}", false, "phi.read.contact");
    /* Not yet: the slow cache keeps its rows until its hour is up. */
    EXPECT_ERR(vault_views_cache_resolve(slow, "t-one", sched, 1, TREATMENT, &view), BASE_ERR_DENIED);
    /* The fast one reloads on the first resolve after a second. */
    sleep_ms(1100);
    MUST(vault_views_cache_resolve(fast, "t-one", sched, 1, TREATMENT, &view));
    assert_string_equal(view.view_id, "scheduling_treatment");
    EXPECT_ERR(vault_views_cache_resolve(slow, "t-one", sched, 1, TREATMENT, &view), BASE_ERR_DENIED);
    /* A forced reload applies at once. */
    MUST(vault_views_cache_reload(slow));
    MUST(vault_views_cache_resolve(slow, "t-one", sched, 1, TREATMENT, &view));
    assert_int_equal(view.categories, BIT(1) | BIT(2));

    /* A tenant row added later overrides for that tenant after the reload. */
    add_view(f.pool, "t-one", "scheduler", TREATMENT, "t1_sched", "{1}", false, "phi.read.demographics");
    MUST(vault_views_cache_reload(slow));
    MUST(vault_views_cache_resolve(slow, "t-one", sched, 1, TREATMENT, &view));
    assert_string_equal(view.view_id, "t1_sched");
    MUST(vault_views_cache_resolve(slow, "t-two", sched, 1, TREATMENT, &view));
    assert_string_equal(view.view_id, "scheduling_treatment");
    delete_views(f.pool, "t-one", "scheduler");
    MUST(vault_views_cache_reload(slow));
    MUST(vault_views_cache_resolve(slow, "t-one", sched, 1, TREATMENT, &view));
    assert_string_equal(view.view_id, "scheduling_treatment");

    /* Many readers while the rows are reloaded underneath them (run under ASan/TSan in CI). */
    hammer_arg a = {.cache = fast};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &a), 0);
    for (int i = 0; i < 5; i++) {
        MUST(vault_views_cache_reload(fast));
        sleep_ms(50);
    }
    sleep_ms(1100); /* at least one automatic reload by a reader */
    atomic_store(&a.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&a.errors), 0);
    assert_true(atomic_load(&a.calls) > 0);

    /* The table becoming unreadable: a reload fails and the loaded rows keep answering. */
    db_conn *c = NULL;
    MUST(db_pool_acquire(f.pool, 5000, &c));
    MUST(db_exec(c, "ALTER TABLE views RENAME TO views_gone", 0, NULL, NULL));
    db_conn_release(c);
    assert_false(base_is_ok(vault_views_cache_reload(slow)));
    MUST(vault_views_cache_resolve(slow, "t-one", sched, 1, TREATMENT, &view));
    assert_string_equal(view.view_id, "scheduling_treatment");
    sleep_ms(1100); /* the fast cache tries to reload on this resolve, fails, and answers anyway */
    MUST(vault_views_cache_resolve(fast, "t-one", sched, 1, TREATMENT, &view));
    assert_string_equal(view.view_id, "scheduling_treatment");
    EXPECT_ERR(vault_views_cache_open(f.pool, 1, &bad), BASE_ERR_INTERNAL);
    assert_null(bad);

    /* No database at all: opening the cache fails. */
    db_pool *dead = NULL;
    char uri[128];
    snprintf(uri, sizeof uri, "postgresql://postgres@127.0.0.1:%d/postgres", testenv_closed_port());
    MUST(db_pool_create(uri, 1, 500, &dead));
    EXPECT_ERR(vault_views_cache_open(dead, 1, &bad), BASE_ERR_UNAVAILABLE);
    assert_null(bad);
    db_pool_destroy(dead);

    vault_views_cache_close(slow);
    vault_views_cache_close(fast);
    vault_views_cache_close(NULL);
    fx_close(&f);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "vviews_%d_%lx", (int)getpid(),
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
        cmocka_unit_test(test_builtin),
        cmocka_unit_test(test_union),
        cmocka_unit_test(test_tenant_override),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
