/* alma-cli's guideline commands end to end: the real alma-cli binary (tools/alma-cli.c) against a real
 * alma-guideline over mTLS as the alma-cli certificate, inside the suite (tests/support/testsuite.h: a real
 * alma-audit and alma-identity against the harness PostgreSQL and Redis), the first bundle
 * (services/guideline/bundles/alma-referral-core-1.0.0.json) published at start through --bundle-file, with
 * access tokens of identity's signing key in --token-file files. Stateless reviews of CKD vignettes
 * (tests/guideline/vignettes/ckd-nephrology.json) whose printed outcome must be what the vignette expects,
 * the canonical recommendation (--json), decisions, history, bundles, publishing, what-if and concordance;
 * bad input (a missing option, an override without a reason, an input too large or not JSON) refused with
 * exit status 2 naming the option, and nothing stored. All patient data is synthetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/v1/audit.pb-c.h"
#include "db/db.h"
#include "testdb.h"
#include "testenv.h"
#include "testproc.h"
#include "testsuite.h"
#include "vaultd.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r_ = (expr);                                                                        \
        if (!base_is_ok(must_r_))                                                                            \
            fail_msg("%s: %s", #expr, base_error_message());                                                 \
    } while (0)

#define BUNDLE_FILE "services/guideline/bundles/alma-referral-core-1.0.0.json"
#define VIGNETTES   "tests/guideline/vignettes/ckd-nephrology.json"
#define EGFR_27     "CKD eGFR 27 (G4): refer"
#define EGFR_48     "CKD G3a A2, no referral criterion: manage"
#define PATIENT     "pt_0123456789abcdef0123456789abcdef"
#define TENANT_OPT  "--tenant"
#define INPUT_MAX   (256 * 1024)  /* GL_INPUT_MAX_BYTES */
#define BUNDLE_MAX  (1024 * 1024) /* GL_BUNDLE_MAX_BYTES */
#define A_RECOMMEND ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND
#define A_DECIDE    ALMA__AUDIT__V1__ACTION__ACTION_DECIDE

static testsuite g_ts;
static testproc_daemon g_d;
static char g_schema[64];
static vaultd g_v;         /* test_cli_from_vault only */
static bool g_with_vault;  /* start a vault before alma-guideline and give it vault-addr */
static const char *g_addr; /* where cli() sends: alma-guideline, or the vault */
static char g_clin[64], g_plan[64];
/* --token-file files: the clinician, the plan reviewer, the platform administrator. */
static char g_clin_file[TESTPROC_PATH_MAX], g_plan_file[TESTPROC_PATH_MAX], g_admin_file[TESTPROC_PATH_MAX];
static db_pool *g_gdb; /* superuser, search_path = the guideline schema */

/* ---- set-up ------------------------------------------------------------------------------------------ */

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void launch(void)
{
    char env_bundle[600], env_vault[100];
    snprintf(env_bundle, sizeof env_bundle, "ALMA_BUNDLE_FILE=%s", testenv_source_path(BUNDLE_FILE));
    snprintf(env_vault, sizeof env_vault, "ALMA_VAULT_ADDR=%s", g_with_vault ? g_v.d.api_addr : "");
    testsuite_daemon_start(&g_ts, &g_d, "services/guideline/alma-guideline", "guideline", g_schema, 4,
                           (const char *const[]){env_bundle, env_vault, NULL});
}

static int group_setup(void **state)
{
    (void)state;
    testsuite_group_setup(&g_ts, "glcli");
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
    memset(&g_d, 0, sizeof g_d);
    snprintf(g_schema, sizeof g_schema, "glcli_gl_%d_%d", (int)getpid(), g_ts.counter);
    if (g_with_vault)
        vaultd_start(&g_v, &g_ts, "glcli");
    launch();
    g_addr = g_d.api_addr;
    g_gdb = testdb_pool(g_ts.pg_uri, g_schema, 1);
    testsuite_user(&g_ts, "dr.glcli", "pcp_clinician", g_clin);
    testsuite_user(&g_ts, "plan.glcli", "plan_reviewer", g_plan);
    testsuite_token_file(&g_ts, g_clin, "pcp_clinician", "clinician.token", g_clin_file);
    testsuite_token_file(&g_ts, g_plan, "plan_reviewer", "plan.token", g_plan_file);
    testsuite_token_file(&g_ts, g_ts.admin_id, "platform_admin", "admin.token", g_admin_file);
    testsuite_relationship(&g_ts, g_clin, PATIENT, NULL);
    return 0;
}

static int test_teardown(void **state)
{
    db_pool_destroy(g_gdb);
    g_gdb = NULL;
    bool ok = testsuite_daemon_stop(&g_d, "alma-guideline");
    testdb_drop_schema(g_ts.root, g_schema);
    if (g_with_vault)
        ok = vaultd_stop(&g_v, &g_ts) && ok;
    g_with_vault = false;
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
        bin, "--addr",        g_addr,      "--cert",       cert,    "--key",        key,       "--ca",
        ca,  "--server-name", "localhost", "--timeout-ms", "20000", "--token-file", token_path};
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

/* cli() that must fail with exit status `want`, stdout empty and stderr holding `needle`; its stderr. */
static char *cli_fails(const char *token_path, const char *const *words, int want, const char *needle)
{
    char *out = NULL, *err = NULL;
    int code = cli(token_path, words, &out, &err);
    if (code != want)
        fail_msg("alma-cli %s exited %d, want %d: %s", words[0], code, want, err);
    if (!strstr(err, needle))
        fail_msg("alma-cli %s: stderr lacks \"%s\": %s", words[0], needle, err);
    assert_string_equal(out, "");
    free(out);
    return err;
}

/* The value of a "name: value" line of out into buf. */
static void line_value(const char *out, const char *name, char *buf, size_t cap)
{
    char key[64];
    snprintf(key, sizeof key, "\n%s: ", name);
    const char *p = NULL;
    if (strncmp(out, key + 1, strlen(key + 1)) == 0)
        p = out + strlen(key + 1);
    else if ((p = strstr(out, key)) != NULL)
        p += strlen(key);
    if (!p)
        fail_msg("no %s line in: %s", name, out);
    size_t n = strcspn(p, "\n");
    if (n >= cap)
        fail_msg("%s line too long", name);
    memcpy(buf, p, n);
    buf[n] = '\0';
}

static void expect_line(const char *out, const char *name, const char *want)
{
    char got[512];
    line_value(out, name, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("%s: got \"%s\", want \"%s\" in:\n%s", name, got, want, out);
}

static int count_prefix(const char *out, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        n += strncmp(p, prefix, len) == 0;
    return n;
}

static int64_t gl_count(const char *sql)
{
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_gdb, 5000, &c));
    db_result *res = NULL;
    base_result r = db_exec(c, sql, 0, NULL, &res);
    db_conn_release(c);
    MUST(r);
    int64_t n = 0;
    MUST(db_result_get_int64(res, 0, 0, &n));
    db_result_free(res);
    return n;
}

/* The vignette named `name` of VIGNETTES: its input written to a work file (path into `path`), its expect
 * object returned (json_decref it). */
static json_t *vignette(const char *name, const char *file, char path[TESTPROC_PATH_MAX])
{
    json_error_t err;
    json_t *all = json_load_file(testenv_source_path(VIGNETTES), 0, &err);
    assert_non_null(all);
    json_t *expect = NULL;
    for (size_t i = 0; i < json_array_size(all) && !expect; i++) {
        json_t *v = json_array_get(all, i);
        if (strcmp(json_string_value(json_object_get(v, "name")), name) != 0)
            continue;
        char *text = json_dumps(json_object_get(v, "input"), JSON_INDENT(1));
        assert_non_null(text);
        snprintf(path, TESTPROC_PATH_MAX, "%s", testproc_work_path(file));
        write_file(path, text, strlen(text), 0600);
        free(text);
        expect = json_incref(json_object_get(v, "expect"));
    }
    json_decref(all);
    if (!expect)
        fail_msg("vignette \"%s\" not found", name);
    return expect;
}

/* "REFER" -> "refer": the CLI prints enum values in lower case. */
static void lower(const char *s, char *buf, size_t cap)
{
    size_t k = 0;
    for (; s[k] && k + 1 < cap; k++)
        buf[k] = (char)(s[k] >= 'A' && s[k] <= 'Z' ? s[k] + 32 : s[k]);
    buf[k] = '\0';
}

/* A stateless review of the vignette through the CLI: the printed outcome, urgency, pathway and rule are the
 * vignette's; the deciding rule fired with its values and is cited; the bundle is printed. The review id into
 * review_id. */
static void review_vignette(const char *name, const char *referral, char review_id[64])
{
    char path[TESTPROC_PATH_MAX], want[64];
    json_t *expect = vignette(name, "input.json", path);
    const char *t = g_ts.tenant;
    const char *words[] = {"guideline-review", TENANT_OPT, t,         "--referral", referral,
                           "--patient",        PATIENT,    "--input", path,         NULL};
    char *out = cli_ok(g_clin_file, words);
    lower(json_string_value(json_object_get(expect, "outcome")), want, sizeof want);
    expect_line(out, "outcome", want);
    const char *urgency = json_string_value(json_object_get(expect, "urgency"));
    expect_line(out, "urgency", urgency ? urgency : "-");
    const char *pathway = json_string_value(json_object_get(expect, "pathway"));
    const char *rule = json_string_value(json_object_get(expect, "rule"));
    expect_line(out, "pathway_id", pathway);
    expect_line(out, "rule_id", rule);
    expect_line(out, "referral_id", referral);
    expect_line(out, "patient_ref", PATIENT);
    expect_line(out, "clinician_id", g_clin);
    expect_line(out, "engine_version", "alma-guideline/1");
    char line[256];
    snprintf(line, sizeof line, "\ncitation: %s: ", rule);
    assert_non_null(strstr(out, line));
    if (strcmp(rule, "default") != 0) {
        snprintf(line, sizeof line, "\nfired: %s [{\"data\":", rule);
        assert_non_null(strstr(out, line));
    }
    char bundle[128];
    line_value(out, "bundle", bundle, sizeof bundle);
    assert_true(strncmp(bundle, "alma-referral-core 1.0.0 ", 25) == 0);
    assert_int_equal(strlen(bundle), 25 + 64);
    line_value(out, "review_id", review_id, 64);
    assert_int_equal(strlen(review_id), 35);
    assert_true(strncmp(review_id, "rv_", 3) == 0);
    free(out);
    json_decref(expect);
}

/* text of the file rel with the first `from` after `anchor` replaced by `to` (malloc'd). */
static char *replace_after(const char *text, const char *anchor, const char *from, const char *to)
{
    const char *a = strstr(text, anchor);
    assert_non_null(a);
    const char *p = strstr(a, from);
    assert_non_null(p);
    size_t head = (size_t)(p - text), n = strlen(text), fl = strlen(from), tl = strlen(to);
    char *out = malloc(n - fl + tl + 1);
    assert_non_null(out);
    memcpy(out, text, head);
    memcpy(out + head, to, tl);
    memcpy(out + head + tl, p + fl, n - head - fl + 1);
    return out;
}

/* ---- scenarios ----------------------------------------------------------------------------------------- */

/* Review (text and --json), decide, history, bundles, concordance, publish and what-if, all through the CLI.
 */
static void test_cli_round_trip(void **state)
{
    (void)state;
    const char *t = g_ts.tenant;
    char rv1[64], rv2[64], rv3[64];

    review_vignette(EGFR_27, "ref-cli-1", rv1);
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT), 1);

    /* --json: the canonical recommendation, the review id on stderr. */
    char path[TESTPROC_PATH_MAX];
    json_t *expect = vignette(EGFR_27, "input27.json", path);
    const char *as_json[] = {
        "guideline-review", TENANT_OPT, t,        "--referral", "ref-cli-1", "--patient", PATIENT,
        "--input",          path,       "--json", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(cli(g_clin_file, as_json, &out, &err), 0);
    json_error_t jerr;
    json_t *rec = json_loads(out, 0, &jerr);
    assert_non_null(rec);
    assert_string_equal(json_string_value(json_object_get(rec, "outcome")),
                        json_string_value(json_object_get(expect, "outcome")));
    assert_string_equal(json_string_value(json_object_get(rec, "rule")),
                        json_string_value(json_object_get(expect, "rule")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(rec, "bundle"), "version")),
                        "1.0.0");
    json_decref(rec);
    json_decref(expect);
    const char *p = strstr(err, "guideline-review: review rv_");
    assert_non_null(p);
    snprintf(rv2, sizeof rv2, "%.35s", p + strlen("guideline-review: review "));
    assert_string_not_equal(rv2, rv1);
    free(out);
    free(err);

    review_vignette(EGFR_48, "ref-cli-2", rv3);

    /* Accept the first; a second decision is refused by the service (exit 1); override the second with a
     * reason and a comment. */
    const char *accept[] = {"guideline-decide", TENANT_OPT, t, "--review", rv1, "--accept", NULL};
    out = cli_ok(g_clin_file, accept);
    expect_line(out, "kind", "accept");
    expect_line(out, "reason", "-");
    expect_line(out, "review_id", rv1);
    char dn[64];
    line_value(out, "decision_id", dn, sizeof dn);
    assert_true(strncmp(dn, "dn_", 3) == 0);
    free(out);
    free(cli_fails(g_clin_file, accept, 1, "ALREADY_EXISTS"));
    const char *override[] = {"guideline-decide",
                              TENANT_OPT,
                              t,
                              "--review",
                              rv2,
                              "--override",
                              "--reason",
                              "data-incomplete",
                              "--comment",
                              "Synthetic: done elsewhere.",
                              NULL};
    out = cli_ok(g_clin_file, override);
    expect_line(out, "kind", "override");
    expect_line(out, "reason", "data-incomplete");
    free(out);
    assert_int_equal(testsuite_audit_count(&g_ts, A_DECIDE, PATIENT), 2);

    /* History: both reviews of ref-cli-1, oldest first, and both decisions. */
    const char *history[] = {"guideline-history", TENANT_OPT, t, "--referral", "ref-cli-1", NULL};
    out = cli_ok(g_clin_file, history);
    assert_int_equal(count_prefix(out, "review\t"), 2);
    assert_int_equal(count_prefix(out, "decision\t"), 2);
    const char *first = strstr(out, rv1), *second = strstr(out, rv2);
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    assert_non_null(
        strstr(out, "\trefer\troutine\tckd-nephrology\tckd-egfr-below-30\talma-referral-core@1.0.0\t"));
    char want[160];
    snprintf(want, sizeof want, "\t%s\taccept\t-\t%s\t-\n", rv1, g_clin);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "\toverride\tdata-incomplete\t"));
    free(out);
    const char *history_json[] = {"guideline-history", TENANT_OPT, t,   "--referral",
                                  "ref-cli-1",         "--json",   NULL};
    out = cli_ok(g_clin_file, history_json);
    json_t *h = json_loads(out, 0, &jerr);
    assert_non_null(h);
    assert_int_equal(json_array_size(json_object_get(h, "reviews")), 2);
    assert_int_equal(json_array_size(json_object_get(h, "decisions")), 2);
    json_decref(h);
    free(out);

    /* Bundles: the one published at start, active. */
    const char *bundles[] = {"guideline-bundles", NULL};
    out = cli_ok(g_clin_file, bundles);
    assert_true(strncmp(out, "alma-referral-core\t1.0.0\tactive\t", 32) == 0);
    assert_non_null(strstr(out, "\tsystem:guideline\t"));
    assert_int_equal(count_prefix(out, "alma-referral-core\t"), 1);
    free(out);

    /* Concordance (plan reviewer): the pathway's row; a clinician is refused. */
    const char *conc[] = {"guideline-concordance", TENANT_OPT, t, "--pathway", "ckd-nephrology", NULL};
    out = cli_ok(g_plan_file, conc);
    assert_non_null(strstr(out,
                           "ckd-nephrology\t-\treviews=3 refer=2 workup=0 manage=1 insufficient=0 decided=2 "
                           "accepted=1 overridden=1\tdata-incomplete=1\n"));
    free(out);
    err = cli_fails(g_clin_file, conc, 1, "PERMISSION_DENIED");
    assert_non_null(strstr(err, "referral.read.plan or audit.read"));
    free(err);

    /* Publish 1.0.1 (the eGFR threshold 30 -> 50) as platform_admin, not active; a clinician is refused. */
    char *text = testenv_read_file(testenv_source_path(BUNDLE_FILE));
    assert_non_null(text);
    char *v101a = replace_after(text, "\"version\"", "\"1.0.0\"", "\"1.0.1\"");
    char *v101 = replace_after(v101a, "\"id\": \"ckd-egfr-below-30\"", "\"value\": 30", "\"value\": 50");
    char bpath[TESTPROC_PATH_MAX];
    snprintf(bpath, sizeof bpath, "%s", testproc_work_path("bundle-1.0.1.json"));
    write_file(bpath, v101, strlen(v101), 0644);
    const char *publish[] = {"guideline-publish", "--file", bpath, NULL};
    free(cli_fails(g_clin_file, publish, 1, "PERMISSION_DENIED"));
    out = cli_ok(g_admin_file, publish);
    expect_line(out, "bundle_id", "alma-referral-core");
    expect_line(out, "version", "1.0.1");
    expect_line(out, "active", "no");
    expect_line(out, "published_by", g_ts.admin_id);
    assert_non_null(strstr(out, "\npathway: ckd-nephrology\n"));
    free(out);

    /* What-if against 1.0.1: ref-cli-2 (eGFR 48) changes MANAGE -> REFER; no review written. */
    int64_t reviews = gl_count("SELECT count(*) FROM reviews");
    const char *whatif[] = {"guideline-whatif",   TENANT_OPT,         t,       "--bundle-id",
                            "alma-referral-core", "--bundle-version", "1.0.1", NULL};
    out = cli_ok(g_plan_file, whatif);
    expect_line(out, "changed", "1");
    snprintf(want, sizeof want,
             "\nchange: ref-cli-2 %s manage -> refer (default -> ckd-egfr-below-30; urgency - -> "
             "routine)\n",
             rv3);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "\n  now fired: ckd-egfr-below-30 ")); /* why, with the value it used */
    assert_null(strstr(out, "refused by the version tried"));
    assert_non_null(strstr(out, "\nto_bundle: alma-referral-core 1.0.1 "));
    free(out);
    assert_int_equal(gl_count("SELECT count(*) FROM reviews"), reviews);
    free(text);
    free(v101a);
    free(v101);
}

/* Bad input: exit status 2, the option named, nothing sent and nothing stored; a request the service refuses:
 * exit status 1 and nothing stored either. */
static void test_cli_bad_input(void **state)
{
    (void)state;
    const char *t = g_ts.tenant;
    char rv[64];
    review_vignette(EGFR_27, "ref-bad", rv);
    int64_t reviews = gl_count("SELECT count(*) FROM reviews");
    int64_t decisions = gl_count("SELECT count(*) FROM decisions");
    int recommends = testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT);
    assert_int_equal(reviews, 1);
    assert_int_equal(decisions, 0);
    char path[TESTPROC_PATH_MAX];
    json_decref(vignette(EGFR_27, "good.json", path));

    /* Missing options. */
    const char *no_referral[] = {"guideline-review", TENANT_OPT, t,   "--patient", PATIENT,
                                 "--input",          path,       NULL};
    free(cli_fails(g_clin_file, no_referral, 2, "--referral"));
    const char *no_source[] = {"guideline-review", TENANT_OPT,  t,       "--referral",
                               "ref-bad",          "--patient", PATIENT, NULL};
    free(cli_fails(g_clin_file, no_source, 2, "--input FILE"));
    const char *vault_no_specialty[] = {
        "guideline-review", TENANT_OPT, t, "--referral", "ref-bad", "--patient", PATIENT,
        "--from-vault",     NULL};
    free(cli_fails(g_clin_file, vault_no_specialty, 2, "--specialty"));
    const char *bad_patient[] = {"guideline-review", TENANT_OPT, t,         "--referral", "ref-bad",
                                 "--patient",        "pt_123",   "--input", path,         NULL};
    free(cli_fails(g_clin_file, bad_patient, 2, "--patient"));
    const char *bad_code[] = {"guideline-review", TENANT_OPT, t,         "--referral", "ref-bad",
                              "--patient",        PATIENT,    "--input", path,         "--reason-code",
                              "n18.31",           NULL};
    free(cli_fails(g_clin_file, bad_code, 2, "--reason-code"));

    /* An input too large (checked before it is read), not JSON, or not an object. */
    char big[TESTPROC_PATH_MAX];
    snprintf(big, sizeof big, "%s", testproc_work_path("big.json"));
    char *pad = malloc(INPUT_MAX + 1);
    assert_non_null(pad);
    memset(pad, ' ', INPUT_MAX + 1);
    pad[0] = '{';
    pad[INPUT_MAX] = '}';
    write_file(big, pad, INPUT_MAX + 1, 0600);
    const char *too_big[] = {"guideline-review", TENANT_OPT, t,         "--referral", "ref-bad",
                             "--patient",        PATIENT,    "--input", big,          NULL};
    char *err = cli_fails(g_clin_file, too_big, 2, "--input must name a file of at most 262144 bytes");
    assert_non_null(strstr(err, "nothing was sent"));
    free(err);
    char notjson[TESTPROC_PATH_MAX];
    snprintf(notjson, sizeof notjson, "%s", testproc_work_path("notjson.json"));
    write_file(notjson, "Synthetic: eGFR 27, not JSON\n", 29, 0600);
    const char *not_json[] = {"guideline-review", TENANT_OPT, t,         "--referral", "ref-bad",
                              "--patient",        PATIENT,    "--input", notjson,      NULL};
    err = cli_fails(g_clin_file, not_json, 2, "--input is not valid JSON");
    assert_null(strstr(err, "Synthetic")); /* the content is never echoed */
    free(err);
    write_file(notjson, "[1, 2]", 6, 0600);
    free(cli_fails(g_clin_file, not_json, 2, "--input must hold one JSON object"));

    /* An object the service refuses (no patient): exit 1, INVALID_ARGUMENT, nothing stored. */
    char noage[TESTPROC_PATH_MAX];
    snprintf(noage, sizeof noage, "%s", testproc_work_path("nopatient.json"));
    const char *np =
        "{\"as_of\": \"2026-11-23\", \"specialty\": \"nephrology\", \"reason_codes\": [\"N18.31\"]}";
    write_file(noage, np, strlen(np), 0600);
    const char *refused[] = {"guideline-review", TENANT_OPT, t,         "--referral", "ref-bad",
                             "--patient",        PATIENT,    "--input", noage,        NULL};
    free(cli_fails(g_clin_file, refused, 1, "INVALID_ARGUMENT"));

    /* Decisions: an override without a reason, both --accept and --override, a bad review id. */
    const char *no_reason[] = {"guideline-decide", TENANT_OPT, t, "--review", rv, "--override", NULL};
    err = cli_fails(g_clin_file, no_reason, 2, "--override needs --reason");
    assert_non_null(strstr(err, "nothing was sent"));
    free(err);
    const char *bad_reason[] = {"guideline-decide", TENANT_OPT, t,         "--review", rv,
                                "--override",       "--reason", "because", NULL};
    free(cli_fails(g_clin_file, bad_reason, 2, "--reason must be one of"));
    const char *both[] = {"guideline-decide", TENANT_OPT, t, "--review", rv, "--accept", "--override", NULL};
    free(cli_fails(g_clin_file, both, 2, "--accept"));
    const char *bad_review[] = {"guideline-decide", TENANT_OPT, t, "--review", "rv_XYZ", "--accept", NULL};
    free(cli_fails(g_clin_file, bad_review, 2, "--review"));

    /* A bundle too large, and one the loader refuses (naming the rule): nothing published. */
    char bigb[TESTPROC_PATH_MAX];
    snprintf(bigb, sizeof bigb, "%s", testproc_work_path("big-bundle.json"));
    pad = realloc(pad, BUNDLE_MAX + 1);
    assert_non_null(pad);
    memset(pad, ' ', BUNDLE_MAX + 1);
    pad[0] = '{';
    pad[BUNDLE_MAX] = '}';
    write_file(bigb, pad, BUNDLE_MAX + 1, 0600);
    free(pad);
    const char *publish_big[] = {"guideline-publish", "--file", bigb, NULL};
    free(cli_fails(g_admin_file, publish_big, 2, "--file must name a file of at most 1048576 bytes"));
    char *text = testenv_read_file(testenv_source_path(BUNDLE_FILE));
    assert_non_null(text);
    char *v = replace_after(text, "\"version\"", "\"1.0.0\"", "\"1.0.2\"");
    char *bad =
        replace_after(v, "\"id\": \"ckd-egfr-below-30\"", "\"latest\": \"egfr\"", "\"latest\": \"egfrr\"");
    write_file(bigb, bad, strlen(bad), 0600);
    free(cli_fails(g_admin_file, publish_big, 2, "ckd-egfr-below-30"));
    free(text);
    free(v);
    free(bad);
    assert_int_equal(gl_count("SELECT count(*) FROM bundles"), 1);

    /* Nothing stored: the same reviews and decisions, in the history too. */
    assert_int_equal(gl_count("SELECT count(*) FROM reviews"), reviews);
    assert_int_equal(gl_count("SELECT count(*) FROM decisions"), decisions);
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT), recommends);
    const char *history[] = {"guideline-history", TENANT_OPT, t, "--referral", "ref-bad", NULL};
    char *out = NULL;
    err = NULL;
    assert_int_equal(cli(g_clin_file, history, &out, &err), 0);
    assert_int_equal(count_prefix(out, "review\t"), 1);
    assert_int_equal(count_prefix(out, "decision\t"), 0);
    assert_non_null(strstr(err, "1 review, 0 decisions"));
    free(out);
    free(err);
}

static int from_vault_setup(void **state)
{
    g_with_vault = true;
    return test_setup(state);
}

/* --from-vault: a synthetic patient registered and given CKD items through the CLI's vault commands, then
 * reviewed from the vault through guideline-review (REFER on an eGFR of 27); --from-vault without
 * --reason-code is refused before anything is sent. */
static void test_cli_from_vault(void **state)
{
    (void)state;
    const char *t = g_ts.tenant;
    g_addr = g_v.d.api_addr;
    const char *create[] = {
        "vault-create-patient", TENANT_OPT,   t,       "--family", "Clivault", "--given",     "Synthia",
        "--birth-date",         "1958-03-09", "--sex", "female",   "--mrn",    "MRN-GLCLI-1", NULL};
    char *out = cli_ok(g_clin_file, create);
    char ref[64];
    line_value(out, "patient_ref", ref, sizeof ref);
    free(out);
    testsuite_relationship(&g_ts, g_clin, ref, NULL);
    char day[16]; /* 30 days ago: inside every data window of the pathway (the service reads as of today) */
    time_t then = time(NULL) - 30 * 86400;
    struct tm tm;
    gmtime_r(&then, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    const char *problem[] = {"vault-put-item", TENANT_OPT, t, "--patient", ref, "--problem", "N18.31", NULL};
    free(cli_ok(g_clin_file, problem));
    const char *egfr[] = {"vault-put-item",   TENANT_OPT, t,         "--patient", ref,
                          "--observation",    "33914-3",  "--value", "27",        "--unit",
                          "mL/min/{1.73_m2}", "--date",   day,       NULL};
    free(cli_ok(g_clin_file, egfr));

    g_addr = g_d.api_addr;
    const char *no_code[] = {"guideline-review", TENANT_OPT,   t,   "--referral",
                             "ref-vault",        "--patient",  ref, "--from-vault",
                             "--specialty",      "nephrology", NULL};
    free(cli_fails(g_clin_file, no_code, 2, "--reason-code"));
    const char *review[] = {"guideline-review",
                            TENANT_OPT,
                            t,
                            "--referral",
                            "ref-vault",
                            "--patient",
                            ref,
                            "--from-vault",
                            "--specialty",
                            "nephrology",
                            "--reason-code",
                            "N18.31",
                            NULL};
    out = cli_ok(g_clin_file, review);
    expect_line(out, "outcome", "refer");
    expect_line(out, "rule_id", "ckd-egfr-below-30");
    expect_line(out, "patient_ref", ref);
    char line[128];
    snprintf(line, sizeof line, "\nfired: ckd-egfr-below-30 [{\"data\":\"egfr\",\"date\":\"%s\"", day);
    assert_non_null(strstr(out, line));
    free(out);
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, ref), 1);
    assert_int_equal(gl_count("SELECT count(*) FROM reviews"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cli_round_trip, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_cli_bad_input, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_cli_from_vault, from_vault_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
