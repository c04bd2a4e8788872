/* The "done when": a key rotation of 100k records completes and survives a kill midway.
 *
 * 100,000 record versions (ALMA_VAULT_REWRAP_RECORDS, default 100000) are written through vault_store_put
 * from 8 threads; alma-vault-admin rotates the tenant's KEK and starts `rewrap --batch 1000`; the test
 * SIGKILLs it once its progress shows some but not all keys done, checks the partial state (keys under both
 * versions, whole batches only, every sampled record still decrypts), runs rewrap again to the end, retires
 * version 1 and checks that no key is left under it and that records still decrypt. Timings are printed. */
#include "base/config.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"
#include "testproc.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define TENANT   "bulk"
#define THREADS  8
#define BATCH    "1000"
#define SAMPLE   1000
#define ACTOR    "usr_0123456789abcdef0123456789abcdef"
#define CLINICAL "clinical: a synthetic note of moderate length, the same for every record version"

static long g_records = 100000;
static char g_uri[512], g_schema[64], g_spec[300];
static db_pool *g_pool;
static vault_store *g_store;
static vault_keyprovider *g_kp;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t query_int(const char *sql)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    MUST(db_pool_acquire(g_pool, 5000, &c));
    MUST(db_exec(c, sql, 0, NULL, &res));
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

/* ---- Bulk load ----------------------------------------------------------------------------------------- */

typedef struct loader {
    long iterations; /* each: patient v1, item v1, item v2, patient v2 = 4 versions */
    long versions;
    base_result failed;
    char message[200];
} loader;

static void *load(void *arg)
{
    loader *l = arg;
    static const char demo[] = "demographic: synthetic patient";
    for (long i = 0; i < l->iterations && base_is_ok(l->failed); i++) {
        char pt[VAULT_ID_BUF], it[VAULT_ID_BUF];
        vault_random_id("pt_", pt);
        vault_random_id("it_", it);
        vault_put p;
        memset(&p, 0, sizeof p);
        p.tenant_id = TENANT;
        p.created_by = ACTOR;
        p.patient_ref = pt;
        const char *ids[4] = {pt, it, it, pt};
        for (int k = 0; k < 4 && base_is_ok(l->failed); k++) {
            p.record_id = ids[k];
            p.kind = ids[k] == pt ? 1 : 2;
            p.expected_version = k < 2 ? 0 : 1;
            memset(p.parts, 0, sizeof p.parts);
            if (p.kind == 1) {
                p.parts[1] = (const uint8_t *)demo;
                p.part_len[1] = sizeof demo - 1;
            }
            p.parts[4] = (const uint8_t *)CLINICAL;
            p.part_len[4] = sizeof CLINICAL - 1;
            l->failed = vault_store_put(g_store, &p, NULL, NULL);
            if (!base_is_ok(l->failed))
                snprintf(l->message, sizeof l->message, "%s", base_error_message());
            else
                l->versions++;
        }
    }
    return NULL;
}

/* ---- Sampling ------------------------------------------------------------------------------------------ */

/* Decrypt `n` random record versions (of KEK version kek, or any when 0) through a fresh store, checking
 * the clinical part; returns how many were checked. */
static int sample_decrypts(int n, int kek)
{
    static const char any[] =
        "SELECT record_id, version, kek_version FROM records ORDER BY random() LIMIT $1::integer";
    static const char one[] =
        "SELECT record_id, version, kek_version FROM records WHERE kek_version = $2::integer "
        "ORDER BY random() LIMIT $1::integer";
    char nbuf[16], kbuf[16];
    snprintf(nbuf, sizeof nbuf, "%d", n);
    snprintf(kbuf, sizeof kbuf, "%d", kek);
    const char *p[] = {nbuf, kbuf};
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(g_pool, 5000, &c));
    MUST(db_exec(c, kek ? one : any, kek ? 2 : 1, p, &res));
    db_conn_release(c);
    vault_store *fresh = NULL;
    MUST(vault_store_open(g_pool, g_kp, &fresh));
    int rows = db_result_ntuples(res);
    for (int i = 0; i < rows; i++) {
        int64_t version = 0, k = 0;
        MUST(db_result_get_int64(res, i, 1, &version));
        MUST(db_result_get_int64(res, i, 2, &k));
        vault_record r;
        MUST(vault_store_get(fresh, TENANT, db_result_get(res, i, 0), (uint32_t)version,
                             VAULT_CATEGORY_BIT(4), &r));
        assert_int_equal(r.kek_version, k);
        assert_non_null(r.parts[4]);
        assert_int_equal(acrypto_secret_len(r.parts[4]), sizeof CLINICAL - 1);
        assert_memory_equal(acrypto_secret_bytes(r.parts[4]), CLINICAL, sizeof CLINICAL - 1);
        vault_record_clear(&r);
    }
    vault_store_close(fresh);
    db_result_free(res);
    return rows;
}

/* ---- The tool ------------------------------------------------------------------------------------------ */

static const char *tool_path(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s", testenv_binary_path("tools/alma-vault-admin"));
    return path;
}

/* argv for `alma-vault-admin <cmd> ...common settings... [extra...]` into v (NULL-terminated). */
static void tool_argv(const char **v, const char *cmd, const char *extra1, const char *extra2)
{
    size_t n = 0;
    v[n++] = tool_path();
    v[n++] = cmd;
    v[n++] = "--pg-uri";
    v[n++] = g_uri;
    v[n++] = "--pg-schema";
    v[n++] = g_schema;
    v[n++] = "--master-key";
    v[n++] = g_spec;
    v[n++] = "--tenant";
    v[n++] = TENANT;
    if (extra1)
        v[n++] = extra1;
    if (extra2)
        v[n++] = extra2;
    v[n] = NULL;
}

/* The last "rewrap: D/T" line of a progress log: D and T (0/0 when none). */
static void last_progress(const char *log, uint64_t *done, uint64_t *total)
{
    *done = *total = 0;
    const char *p = log, *hit;
    while ((hit = strstr(p, "rewrap: ")) != NULL) {
        char *end = NULL;
        uint64_t d = strtoull(hit + 8, &end, 10);
        if (end && *end == '/') {
            *done = d;
            *total = strtoull(end + 1, NULL, 10);
        }
        p = hit + 8;
    }
}

static void test_rotation_survives_kill(void **state)
{
    (void)state;
    /* The master key in a file only the owner can read, as in a pod. */
    uint8_t key[32];
    char b64[64];
    size_t b64_len = 0;
    MUST(acrypto_random(key, sizeof key));
    MUST(acrypto_base64_encode(key, sizeof key, b64, sizeof b64, &b64_len));
    acrypto_wipe(key, sizeof key);
    const char *key_path = testproc_work_path("master.key");
    char key_file[TESTPROC_PATH_MAX];
    snprintf(key_file, sizeof key_file, "%s", key_path);
    FILE *kf = fopen(key_file, "w");
    assert_non_null(kf);
    fprintf(kf, "%s\n", b64);
    fclose(kf);
    assert_int_equal(chmod(key_file, 0600), 0);
    snprintf(g_spec, sizeof g_spec, "file:%s", key_file);
    MUST(vault_keyprovider_open(g_spec, &g_kp));
    MUST(vault_store_open(g_pool, g_kp, &g_store));
    MUST(vault_store_tenant_ensure(g_store, TENANT));

    /* Bulk load. */
    long per_thread = (g_records / 4 + THREADS - 1) / THREADS;
    loader ls[THREADS];
    pthread_t th[THREADS];
    double t0 = now_s();
    for (int i = 0; i < THREADS; i++) {
        memset(&ls[i], 0, sizeof ls[i]);
        ls[i].iterations = per_thread;
        assert_int_equal(pthread_create(&th[i], NULL, load, &ls[i]), 0);
    }
    long versions = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (!base_is_ok(ls[i].failed))
            fail_msg("bulk put failed: %s: %s", base_err_name(ls[i].failed.err), ls[i].message);
        versions += ls[i].versions;
    }
    double load_s = now_s() - t0;
    print_message("bulk load: %ld record versions in %.1f s (%.0f puts/s, %d threads)\n", versions, load_s,
                  versions / load_s, THREADS);
    assert_int_equal(query_int("SELECT count(*) FROM records"), versions);
    assert_true(versions >= g_records);

    /* Rotate with the tool. */
    const char *argv[16];
    char *out = NULL, *err = NULL;
    tool_argv(argv, "rotate", NULL, NULL);
    int rc = testproc_run(argv, NULL, &out, &err);
    if (rc != 0)
        fail_msg("rotate exited %d: %s", rc, err);
    assert_non_null(strstr(out, "KEK version 2"));
    free(out);
    free(err);

    /* Rewrap, killed midway. */
    tool_argv(argv, "rewrap", "--batch", BATCH);
    char err_path[TESTPROC_PATH_MAX], out_path[TESTPROC_PATH_MAX];
    snprintf(err_path, sizeof err_path, "%s", testproc_work_path("rewrap1.err"));
    snprintf(out_path, sizeof out_path, "%s", testproc_work_path("rewrap1.out"));
    t0 = now_s();
    pid_t pid = testproc_spawn(argv, NULL, out_path, err_path);
    uint64_t done = 0, total = 0;
    int64_t deadline = testproc_now_ms() + 300000;
    for (;;) {
        char *log = testproc_read_or_empty(err_path);
        last_progress(log, &done, &total);
        free(log);
        if (total && done >= total / 10)
            break;
        if (testproc_now_ms() > deadline)
            fail_msg("rewrap made no progress in 300 s");
        testproc_sleep_ms(2);
    }
    assert_int_equal(kill(pid, SIGKILL), 0);
    double first_s = now_s() - t0;
    rc = testproc_wait_exit(pid, 10000);
    if (rc != 128 + SIGKILL) {
        char *log = testproc_read_or_empty(err_path);
        fail_msg("rewrap was not killed midway (exit %d); its progress: %s", rc, log);
    }
    print_message("killed rewrap after %" PRIu64 "/%" PRIu64 " reported in %.1f s (%.0f keys/s)\n", done,
                  total, first_s, done / first_s);
    assert_true(done < total);

    /* The partial state: keys under both versions, whole batches only, everything still decrypts. */
    int64_t on_v1 = query_int("SELECT count(*) FROM records WHERE kek_version = 1");
    int64_t on_v2 = query_int("SELECT count(*) FROM records WHERE kek_version = 2");
    print_message("after the kill: %" PRId64 " data keys under v1, %" PRId64 " under v2\n", on_v1, on_v2);
    assert_true(on_v1 > 0);
    assert_true(on_v2 >= (int64_t)done);
    assert_int_equal(on_v1 + on_v2, versions);
    assert_int_equal(on_v2 % 1000, 0); /* an interrupted batch rolled back whole */
    assert_int_equal(sample_decrypts(SAMPLE / 2, 1), SAMPLE / 2);
    assert_int_equal(sample_decrypts(SAMPLE / 2, 2), SAMPLE / 2);

    /* Retire is refused while v1 still wraps keys. */
    tool_argv(argv, "retire", "--min-version", "2");
    rc = testproc_run(argv, NULL, &out, &err);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "rewrap first"));
    free(out);
    free(err);
    assert_int_equal(query_int("SELECT count(*) FROM tenant_keys WHERE wrapped_key IS NULL"), 0);

    /* Run again to the end. */
    tool_argv(argv, "rewrap", "--batch", BATCH);
    snprintf(err_path, sizeof err_path, "%s", testproc_work_path("rewrap2.err"));
    snprintf(out_path, sizeof out_path, "%s", testproc_work_path("rewrap2.out"));
    t0 = now_s();
    pid = testproc_spawn(argv, NULL, out_path, err_path);
    rc = testproc_wait_exit(pid, 600000);
    double second_s = now_s() - t0;
    char *log = testproc_read_or_empty(err_path);
    char *summary = testproc_read_or_empty(out_path);
    if (rc != 0)
        fail_msg("second rewrap exited %d: %s", rc, log);
    last_progress(log, &done, &total);
    assert_int_equal(done, (uint64_t)on_v1);
    assert_int_equal(total, (uint64_t)on_v1);
    assert_non_null(strstr(summary, "re-wrapped with KEK version 2"));
    print_message("second rewrap: %" PRIu64 " keys in %.1f s (%.0f keys/s): %s", done, second_s,
                  done / second_s, summary);
    free(log);
    free(summary);

    /* Retire v1. */
    tool_argv(argv, "retire", "--min-version", "2");
    rc = testproc_run(argv, NULL, &out, &err);
    if (rc != 0)
        fail_msg("retire exited %d: %s", rc, err);
    free(out);
    free(err);
    tool_argv(argv, "status", NULL, NULL);
    rc = testproc_run(argv, NULL, &out, &err);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "min decrypt version:  2"));
    assert_null(strstr(out, "under v1 "));
    free(out);
    free(err);

    assert_int_equal(query_int("SELECT count(*) FROM records WHERE kek_version < 2"), 0);
    assert_int_equal(query_int("SELECT count(*) FROM records"), versions);
    assert_int_equal(query_int("SELECT count(*) FROM tenant_keys WHERE version = 1 AND wrapped_key IS NULL"),
                     1);
    assert_int_equal(sample_decrypts(SAMPLE, 0), SAMPLE);

    /* Usage errors are exit 2. */
    const char *bad[] = {tool_path(), "frobnicate", NULL};
    assert_int_equal(testproc_run(bad, NULL, NULL, NULL), 2);
    const char *help[] = {tool_path(), "--help", NULL};
    rc = testproc_run(help, NULL, &out, NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "rewrap"));
    free(out);

    vault_store_close(g_store);
    g_store = NULL;
    vault_keyprovider_free(g_kp);
    g_kp = NULL;
}

static long g_records_setting;
static const cfg_setting settings[] = {
    {"vault-rewrap-records", CFG_INT, "100000", &g_records_setting, 1000, 10000000,
     "record versions the rotation test writes", false},
};

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    snprintf(g_schema, sizeof g_schema, "vrk_%d", (int)getpid());
    g_pool = testdb_pool(g_uri, g_schema, 2 * THREADS);
    MUST(vault_store_migrate(g_pool, g_schema));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    db_pool *root = testdb_pool(g_uri, NULL, 1);
    testdb_drop_schema(root, g_schema);
    db_pool_destroy(root);
    db_pool_destroy(g_pool);
    return 0;
}

int main(int argc, char **argv)
{
    cfg_table t = {settings, BASE_ARRAY_LEN(settings)};
    bool help = false;
    if (!base_is_ok(cfg_load(&t, 1, argc, argv, "test_vault_rewrap_kill",
                             "key rotation of many records, killed", NULL, &help))) {
        fprintf(stderr, "test_vault_rewrap_kill: %s\n", base_error_message());
        return 2;
    }
    if (help)
        return 0;
    g_records = g_records_setting;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotation_survives_kill, testproc_setup, testproc_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
