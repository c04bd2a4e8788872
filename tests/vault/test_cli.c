/* alma-cli's vault commands end to end: the real alma-cli binary (tools/alma-cli.c) against a real alma-vault
 * over mTLS as the alma-cli certificate, inside the suite (tests/support/testsuite.h: a real alma-audit and
 * alma-identity against the harness PostgreSQL and Redis), with access tokens of identity's signing key in
 * --token-file files. Create, get, find, put, list, export (the file's SHA-256 against sha256sum), key
 * status, a refused destruction, and bad input refused before anything is sent. All patient data is
 * synthetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/v1/audit.pb-c.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "testdb.h"
#include "testenv.h"
#include "testproc.h"
#include "testsuite.h"
#include "vaultd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r_ = (expr);                                                                        \
        if (!base_is_ok(must_r_))                                                                            \
            fail_msg("%s: %s", #expr, base_error_message());                                                 \
    } while (0)

#define TENANT_OPT "--tenant"
#define FAMILY     "Clisynth"
#define GIVEN      "Demona"
#define BIRTH      "1958-09-14"
#define MRN        "MRN-CLI-0914"
#define BAD_MRN    "MRN-CLI-BAD"
#define BAD_BIRTH  "1961-02-30"
#define A_DISCLOSE ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE

static testsuite g_ts;
static vaultd g_v; /* the vault under test */
static char g_clin[64], g_priv[64];
/* --token-file files: the clinician, the privacy officer, the security administrator. */
static char g_clin_file[TESTPROC_PATH_MAX], g_priv_file[TESTPROC_PATH_MAX], g_sec_file[TESTPROC_PATH_MAX];
static db_pool *g_vdb;

static int group_setup(void **state)
{
    (void)state;
    testsuite_group_setup(&g_ts, "vaultcli");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testsuite_group_teardown(&g_ts);
    return 0;
}

static int test_setup(void **state)
{
    if (testproc_setup(state) != 0)
        return -1;
    testsuite_start(&g_ts);
    vaultd_start(&g_v, &g_ts, "vaultcli");
    g_vdb = g_v.db;
    testsuite_user(&g_ts, "dr.cli", "pcp_clinician", g_clin);
    testsuite_user(&g_ts, "privacy.cli", "privacy_officer", g_priv);
    testsuite_token_file(&g_ts, g_clin, "pcp_clinician", "clinician.token", g_clin_file);
    testsuite_token_file(&g_ts, g_priv, "privacy_officer", "privacy.token", g_priv_file);
    testsuite_token_file(&g_ts, g_ts.admin_id, "security_admin", "security.token", g_sec_file);
    return 0;
}

static int test_teardown(void **state)
{
    bool ok = vaultd_stop(&g_v, &g_ts);
    g_vdb = NULL;
    ok = testsuite_stop(&g_ts) && ok;
    int rc = testproc_teardown(state);
    return ok ? rc : -1;
}

/* ---- helpers ------------------------------------------------------------------------------------------- */

/* The real alma-cli as the alma-cli certificate with --token-file token_path, then words. */
static int cli(const char *token_path, const char *const *words, char **ret_out, char **ret_err)
{
    static char cert[512], key[512], ca[512], bin[512];
    snprintf(bin, sizeof bin, "%s", testenv_binary_path("tools/alma-cli"));
    snprintf(cert, sizeof cert, "%s", testenv_pki("alma-cli.pem"));
    snprintf(key, sizeof key, "%s", testenv_pki("alma-cli-key.pem"));
    snprintf(ca, sizeof ca, "%s", testenv_pki("ca.pem"));
    const char *argv[TESTPROC_MAX_ARGS + 1] = {
        bin, "--addr",        g_v.d.api_addr, "--cert",       cert,    "--key",        key,       "--ca",
        ca,  "--server-name", "localhost",    "--timeout-ms", "20000", "--token-file", token_path};
    int n = 15;
    for (size_t i = 0; words[i] && n < TESTPROC_MAX_ARGS; i++)
        argv[n++] = words[i];
    argv[n] = NULL;
    return testproc_run(argv, NULL, ret_out, ret_err);
}

/* cli() that must succeed; its stdout (free it). */
static char *cli_ok(const char *token_path, const char *const *words)
{
    char *out = NULL, *err = NULL;
    int code = cli(token_path, words, &out, &err);
    if (code != 0)
        fail_msg("alma-cli %s exited %d: %s", words[0], code, err);
    free(err);
    return out;
}

/* The value of a "name: value" line of out into buf. */
static void line_value(const char *out, const char *name, char *buf, size_t cap)
{
    char key[64];
    snprintf(key, sizeof key, "%s: ", name);
    const char *p = strstr(out, key);
    if (!p)
        fail_msg("no %s line in: %s", name, out);
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    if (n >= cap)
        fail_msg("%s line too long", name);
    memcpy(buf, p, n);
    buf[n] = '\0';
}

static int64_t vault_count(const char *sql)
{
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_vdb, 5000, &c));
    db_result *res = NULL;
    base_result r = db_exec(c, sql, 0, NULL, &res);
    db_conn_release(c);
    MUST(r);
    int64_t n = 0;
    MUST(db_result_get_int64(res, 0, 0, &n));
    db_result_free(res);
    return n;
}

/* ---- the scenario -------------------------------------------------------------------------------------- */

static void test_cli_round_trip(void **state)
{
    (void)state;
    const char *t = g_ts.tenant;
    char ref[64], version[16], id1[64], id2[64];

    /* Create, as the clinician (patient.register); then the clinician's care relationship. */
    const char *create[] = {"vault-create-patient",
                            TENANT_OPT,
                            t,
                            "--family",
                            FAMILY,
                            "--given",
                            GIVEN,
                            "--given",
                            "Quinta",
                            "--birth-date",
                            BIRTH,
                            "--sex",
                            "female",
                            "--mrn",
                            MRN,
                            "--phone",
                            "+15555550914",
                            "--email",
                            "demona@example.org",
                            "--address-line",
                            "9 Sample Row",
                            "--city",
                            "Springfield",
                            "--state",
                            "IL",
                            "--postal-code",
                            "62701",
                            "--payer-id",
                            "payer-cli",
                            "--plan-name",
                            "CLI Plan Silver",
                            "--member-id",
                            "ZZCLI0914",
                            "--coverage-start",
                            "2024-01-01",
                            NULL};
    char *out = cli_ok(g_clin_file, create);
    line_value(out, "patient_ref", ref, sizeof ref);
    line_value(out, "version", version, sizeof version);
    assert_int_equal(strlen(ref), 35);
    assert_true(strncmp(ref, "pt_", 3) == 0);
    assert_string_equal(version, "1");
    free(out);
    testsuite_relationship(&g_ts, g_clin, ref, NULL);

    /* Get under treatment: the treating clinician's view, coverage withheld. */
    const char *get[] = {"vault-get-patient", TENANT_OPT,  t,   "--patient", ref,
                         "--purpose",         "treatment", NULL};
    out = cli_ok(g_clin_file, get);
    assert_non_null(strstr(out, "family_name: " FAMILY "\n"));
    assert_non_null(strstr(out, "given_names: " GIVEN " Quinta\n"));
    assert_non_null(strstr(out, "birth_date: " BIRTH "\n"));
    assert_non_null(strstr(out, "sex: female\n"));
    assert_non_null(strstr(out, "mrn: " MRN "\n"));
    assert_non_null(strstr(out, "phone: +15555550914\n"));
    assert_non_null(strstr(out, "view_id: treating_clinician\n"));
    assert_non_null(strstr(out, "withheld: financial\n"));
    assert_non_null(strstr(out, "pseudonymous: no\n"));
    assert_null(strstr(out, "ZZCLI0914")); /* the member id is FINANCIAL */
    free(out);
    const char *get_json[] = {"vault-get-patient", TENANT_OPT,  t,        "--patient", ref,
                              "--purpose",         "treatment", "--json", NULL};
    out = cli_ok(g_clin_file, get_json);
    assert_non_null(strstr(out, "\"family_name\": \"" FAMILY "\""));
    assert_non_null(strstr(out, "\"CATEGORY_FINANCIAL\""));
    assert_non_null(strstr(out, "\"view_id\": \"treating_clinician\""));
    free(out);

    /* Find by MRN (normalised by the service: case and '-' do not matter). */
    const char *find[] = {"vault-find-patients", TENANT_OPT, t, "--mrn", "mrn-cli-0914", NULL};
    out = cli_ok(g_clin_file, find);
    char want[80];
    snprintf(want, sizeof want, "%s\n", ref);
    assert_string_equal(out, want);
    free(out);

    /* A problem and an observation. */
    const char *problem[] = {"vault-put-item", TENANT_OPT,   t,
                             "--patient",      ref,          "--problem",
                             "E11.9",          "--display",  "Type 2 diabetes mellitus without complications",
                             "--onset",        "2019-03-01", NULL};
    out = cli_ok(g_clin_file, problem);
    line_value(out, "record_id", id1, sizeof id1);
    assert_true(strncmp(id1, "it_", 3) == 0);
    free(out);
    const char *obs[] = {
        "vault-put-item", TENANT_OPT, t,        "--patient", ref,      "--observation", "4548-4",
        "--value",        "7.1",      "--unit", "%",         "--date", "2024-05-01",    "--display",
        "Hemoglobin A1c", NULL};
    out = cli_ok(g_clin_file, obs);
    line_value(out, "record_id", id2, sizeof id2);
    line_value(out, "version", version, sizeof version);
    assert_string_equal(version, "1");
    free(out);

    /* List: both, one line each. */
    const char *list[] = {"vault-list-items", TENANT_OPT,  t,       "--patient", ref,
                          "--purpose",        "treatment", "--all", NULL};
    out = cli_ok(g_clin_file, list);
    assert_non_null(strstr(out, id1));
    assert_non_null(strstr(out, id2));
    assert_non_null(strstr(out, "\tproblem\tclinical\tE11.9 (Type 2 diabetes"));
    assert_non_null(strstr(out, "\tobservation\tclinical\t4548-4 (Hemoglobin A1c) = 7.1 % on 2024-05-01"));
    int lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2);
    free(out);
    const char *list_problems[] = {"vault-list-items", TENANT_OPT,  t,        "--patient", ref,
                                   "--purpose",        "treatment", "--kind", "problem",   NULL};
    out = cli_ok(g_clin_file, list_problems);
    assert_non_null(strstr(out, id1));
    assert_null(strstr(out, id2));
    free(out);

    /* Export (privacy.review): the file, mode 600, whose sha256sum is the one printed. */
    char bundle[TESTPROC_PATH_MAX];
    snprintf(bundle, sizeof bundle, "%s", testproc_work_path("bundle.json"));
    const char *exp[] = {"vault-export-patient", TENANT_OPT, t,       "--patient", ref,
                         "--access-request",     "ar-cli-1", "--out", bundle,      NULL};
    out = cli_ok(g_priv_file, exp);
    char sha[80], resources[16];
    line_value(out, "sha256", sha, sizeof sha);
    line_value(out, "resources", resources, sizeof resources);
    assert_int_equal(strlen(sha), 64);
    assert_true(strtol(resources, NULL, 10) >= 3); /* Patient, Condition, Observation at least */
    free(out);
    struct stat st;
    assert_int_equal(stat(bundle, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    const char *sum[] = {"/usr/bin/sha256sum", bundle, NULL};
    char *sum_out = NULL;
    assert_int_equal(testproc_run(sum, NULL, &sum_out, NULL), 0);
    assert_true(strncmp(sum_out, sha, 64) == 0);
    free(sum_out);
    char *json = testproc_read_or_empty(bundle);
    assert_non_null(strstr(json, "\"resourceType\""));
    assert_non_null(strstr(json, "4548-4"));
    free(json);
    assert_true(testsuite_audit_count(&g_ts, A_DISCLOSE, ref) >= 1);

    /* The clinician may not export: PERMISSION_DENIED, exit 1, the file untouched. */
    char other[TESTPROC_PATH_MAX];
    snprintf(other, sizeof other, "%s", testproc_work_path("denied.json"));
    const char *exp_denied[] = {"vault-export-patient", TENANT_OPT, t,       "--patient", ref,
                                "--access-request",     "ar-cli-2", "--out", other,       NULL};
    char *err = NULL;
    assert_int_equal(cli(g_clin_file, exp_denied, &out, &err), 1);
    assert_non_null(strstr(err, "PERMISSION_DENIED"));
    assert_false(testproc_file_exists(other));
    free(out);
    free(err);

    /* Key status (vault.keys.manage). */
    const char *keys[] = {"vault-key-status", TENANT_OPT, t, NULL};
    out = cli_ok(g_sec_file, keys);
    assert_non_null(strstr(out, "current_version: 1\n"));
    free(out);

    /* Destruction before the retention has run out is refused: exit 1, no certificate file left. */
    char cert[TESTPROC_PATH_MAX];
    snprintf(cert, sizeof cert, "%s", testproc_work_path("certificate.json"));
    const char *destroy[] = {"vault-destroy-patient", TENANT_OPT,          t,    "--patient", ref, "--reason",
                             "retention_expired",     "--certificate-out", cert, NULL};
    assert_int_equal(cli(g_priv_file, destroy, &out, &err), 1);
    assert_false(testproc_file_exists(cert));
    free(out);
    free(err);
    assert_int_equal(vault_count("SELECT count(*) FROM records WHERE kind = 1"), 1);
}

static void test_cli_bad_input(void **state)
{
    (void)state;
    const char *t = g_ts.tenant;
    int64_t before = vault_count("SELECT count(*) FROM records");
    char *out = NULL, *err = NULL;

    /* February 30th: exit 2, the option named, the value not shown, nothing created. */
    const char *bad_date[] = {
        "vault-create-patient", TENANT_OPT, t,       "--family", FAMILY,  "--given", GIVEN,
        "--birth-date",         BAD_BIRTH,  "--sex", "male",     "--mrn", BAD_MRN,   NULL};
    assert_int_equal(cli(g_clin_file, bad_date, &out, &err), 2);
    assert_non_null(strstr(err, "--birth-date"));
    assert_null(strstr(err, BAD_BIRTH));
    assert_null(strstr(err, FAMILY));
    assert_non_null(strstr(err, "nothing was sent"));
    assert_string_equal(out, "");
    free(out);
    free(err);

    /* Other refusals before any call: a bad phone, a LOINC code with a wrong check digit, an unknown sex. */
    const char *bad_phone[] = {"vault-create-patient",
                               TENANT_OPT,
                               t,
                               "--family",
                               FAMILY,
                               "--given",
                               GIVEN,
                               "--birth-date",
                               BIRTH,
                               "--sex",
                               "male",
                               "--mrn",
                               BAD_MRN,
                               "--phone",
                               "5550100",
                               NULL};
    assert_int_equal(cli(g_clin_file, bad_phone, &out, &err), 2);
    assert_non_null(strstr(err, "--phone"));
    assert_null(strstr(err, "5550100"));
    free(out);
    free(err);
    const char *bad_sex[] = {
        "vault-create-patient", TENANT_OPT, t,       "--family", FAMILY,  "--given", GIVEN,
        "--birth-date",         BIRTH,      "--sex", "f",        "--mrn", BAD_MRN,   NULL};
    assert_int_equal(cli(g_clin_file, bad_sex, &out, &err), 2);
    assert_non_null(strstr(err, "--sex"));
    free(out);
    free(err);
    const char *bad_loinc[] = {"vault-put-item",
                               TENANT_OPT,
                               t,
                               "--patient",
                               "pt_0123456789abcdef0123456789abcdef",
                               "--observation",
                               "4548-5",
                               "--value",
                               "7.1",
                               "--unit",
                               "%",
                               "--date",
                               "2024-05-01",
                               NULL};
    assert_int_equal(cli(g_clin_file, bad_loinc, &out, &err), 2);
    assert_non_null(strstr(err, "--observation"));
    assert_null(strstr(err, "4548-5"));
    free(out);
    free(err);

    assert_int_equal(vault_count("SELECT count(*) FROM records"), before);
    const char *find[] = {"vault-find-patients", TENANT_OPT, t, "--mrn", BAD_MRN, NULL};
    out = cli_ok(g_clin_file, find);
    assert_string_equal(out, "");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cli_round_trip, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_cli_bad_input, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
