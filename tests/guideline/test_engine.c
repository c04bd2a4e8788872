/* The guideline evaluator (services/guideline/engine.h), no database.
 *
 * The bundle below has, for every criterion kind, a rule `x` with that criterion and a rule `x-not` with its
 * negation. Since every rule is evaluated and every true one is reported as fired, one evaluation shows the
 * criterion's three-valued result: `x` fired = true, `x-not` fired = false, neither = unknown. */
#include "bundle.h"
#include "engine.h"
#include "shapes.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define CITE  "'cite': { 'guideline': 'Test guideline', 'year': 2020, 'section': '1' }"
#define REFER "'outcome': 'REFER', 'urgency': 'routine', " CITE
#define RULE(id, when)                                                                                       \
    "{ 'id': '" id "', 'when': " when ", " REFER " },\n"                                                     \
    "{ 'id': '" id "-not', 'when': { 'not': " when " }, " REFER " },\n"

/* Written with ' for " (dq() converts). One criterion rule and its negation per line, hence no clang-format.
 */
/* clang-format off */
#define RULES                                                                                                \
    RULE("latest", "{ 'latest': 'egfr', 'op': '<', 'value': 30 }")                                           \
    RULE("count", "{ 'count': 'acr', 'where': { 'op': '>=', 'value': 300 }, 'op': '>=', 'value': 2 }")       \
    RULE("decline", "{ 'decline': 'egfr', 'percent': 25, 'min_span_days': 90 }")                             \
    RULE("slope", "{ 'slope': 'egfr', 'op': '<', 'value': -5, 'per': 'year', 'min_span_days': 180, "         \
                  "'min_points': 3 }")                                                                       \
    RULE("catdrop", "{ 'category_drop': 'egfr', 'bounds': [90, 60, 45, 30, 15] }")                           \
    RULE("flag", "{ 'flag': 'dysphagia' }")                                                                  \
    RULE("pregnant", "{ 'flag': 'pregnant' }")                                                               \
    RULE("finding-num", "{ 'finding': 'nodule', 'op': '>=', 'value': 1.0 }")                                 \
    RULE("finding-in", "{ 'finding': 'pattern', 'in': ['high'] }")                                           \
    RULE("med", "{ 'medication': 'ppi', 'min_days': 56, 'status': ['completed', 'stopped', 'active'] }")     \
    RULE("problem", "{ 'problem': 'hypo' }")                                                                 \
    RULE("age", "{ 'age': { 'op': '>=', 'value': 60 } }")                                                    \
    RULE("sex", "{ 'sex': 'female' }")                                                                       \
    RULE("missing", "{ 'missing': 'acr' }")                                                                  \
    RULE("acr-eq", "{ 'latest': 'acr', 'op': '==', 'value': 265.2 }")

static const char BUNDLE[] =
    "{ 'format': 1, 'bundle_id': 'engine-test', 'version': '0.1.0', 'title': 'Engine test',\n"
    "  'published': '2026-01-01',\n"
    "  'units': {\n"
    "    'egfr': { 'canonical': 'mL/min/{1.73_m2}', 'accept': { 'mL/min/{1.73_m2}': 1, 'mL/min/1.73m2': 1 } },\n"
    "    'acr':  { 'canonical': 'mg/g', 'accept': { 'mg/g': 1, 'mg/mmol': 8.84 } } },\n"
    "  'pathways': [\n"
    "  { 'id': 'ckd', 'title': 'CKD',\n"
    "    'applies': { 'specialties': ['nephrology'], 'age': { 'min': 18 },\n"
    "                 'codes': [ { 'system': 'icd10cm', 'from': 'N18.1', 'to': 'N18.9' } ] },\n"
    "    'data': {\n"
    "      'egfr': { 'observation': { 'codes': ['33914-3', '62238-1'], 'quantity': 'egfr' }, 'window_days': 365 },\n"
    "      'acr':  { 'observation': { 'codes': ['9318-7'], 'quantity': 'acr' }, 'window_days': 365 },\n"
    "      'ppi':  { 'medication': { 'classes': ['ppi'], 'codes': ['7646'] } },\n"
    "      'dysphagia': { 'flag': 'dysphagia' },\n"
    "      'pregnant': { 'flag': 'pregnant' },\n"
    "      'nodule': { 'finding': 'thyroid_nodule_size_cm', 'type': 'number' },\n"
    "      'pattern': { 'finding': 'thyroid_us_pattern', 'type': 'text', 'values': ['high', 'intermediate', 'low'] },\n"
    "      'hypo': { 'problem': { 'codes': [ { 'system': 'icd10cm', 'from': 'E03.0', 'to': 'E03.9' } ] } }\n"
    "    },\n"
    "    'rules': [\n"
    RULES
    "      { 'id': 'all-unknown', 'when': { 'all': [ { 'flag': 'dysphagia' }, { 'age': { 'op': '>=', 'value': 0 } } ] }, " REFER " },\n"
    "      { 'id': 'any-unknown', 'when': { 'any': [ { 'flag': 'dysphagia' }, { 'age': { 'op': '<', 'value': 0 } } ] }, " REFER " }\n"
    "    ],\n"
    "    'default': { 'outcome': 'MANAGE', 'steps': ['manage'], " CITE " } },\n"
    "  { 'id': 'ckd-second', 'title': 'CKD again',\n"
    "    'applies': { 'specialties': ['nephrology'], 'codes': [ { 'system': 'icd10cm', 'code': 'N18' } ] },\n"
    "    'data': {}, 'rules': [],\n"
    "    'default': { 'outcome': 'MANAGE', 'steps': ['manage'], " CITE " } },\n"
    "  { 'id': 'gi', 'title': 'GI',\n"
    "    'applies': { 'specialties': ['gastroenterology'], 'codes': [ { 'system': 'icd10cm', 'code': 'K30' } ] },\n"
    "    'data': { 'hp': { 'flag': 'h_pylori_tested' }, 'alarm': { 'flag': 'dysphagia' } },\n"
    "    'rules': [\n"
    "      { 'id': 'gi-alarm', 'when': { 'flag': 'alarm' }, 'outcome': 'REFER', 'urgency': 'urgent', 'explain': 'alarm feature', " CITE " },\n"
    "      { 'id': 'gi-hp', 'when': { 'missing': 'hp' }, 'outcome': 'INSUFFICIENT', 'needs': ['hp'], " CITE " },\n"
    "      { 'id': 'gi-workup', 'when': { 'flag': 'hp' }, 'outcome': 'WORKUP', 'tests': ['urea breath test'], " CITE " }\n"
    "    ],\n"
    "    'default': { 'outcome': 'MANAGE', 'steps': ['PPI trial'], " CITE " } }\n"
    "  ] }\n";
/* clang-format on */

static gl_bundle *g_bundle;

static char *dq(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    for (char *p = d; *p; p++)
        if (*p == '\'')
            *p = '"';
    return d;
}

static int setup(void **state)
{
    (void)state;
    char *t = dq(BUNDLE);
    base_result r = gl_bundle_load(t, strlen(t), &g_bundle);
    free(t);
    if (!base_is_ok(r)) {
        fprintf(stderr, "bundle: %s\n", base_error_message());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gl_bundle_free(g_bundle);
    return 0;
}

/* An input; NULL parts are left out. Parts are JSON written with '. */
static char *input(const char *patient, const char *problems, const char *obs, const char *meds,
                   const char *flags, const char *findings)
{
    size_t cap = 256 * 1024;
    char *buf = malloc(cap);
    assert_non_null(buf);
    int n = snprintf(buf, cap,
                     "{'as_of':'2026-11-23','specialty':'nephrology','reason_codes':['N18.3'],'patient':%s",
                     patient ? patient : "{'age':67,'sex':'female','pregnant':false}");
    const char *keys[] = {"problems", "observations", "medications", "flags", "findings"};
    const char *vals[] = {problems, obs, meds, flags, findings};
    for (size_t i = 0; i < 5; i++)
        if (vals[i])
            n += snprintf(buf + n, cap - (size_t)n, ",'%s':%s", keys[i], vals[i]);
    snprintf(buf + n, cap - (size_t)n, "}");
    char *out = dq(buf);
    free(buf);
    return out;
}

static char *eval_ok(const char *in, gl_summary *s)
{
    char *json = NULL;
    size_t len = 0;
    gl_summary tmp;
    MUST(gl_evaluate(g_bundle, in, strlen(in), s ? s : &tmp, &json, &len));
    assert_non_null(json);
    assert_int_equal(strlen(json), len);
    return json;
}

static bool fired(const char *json, const char *rule)
{
    char pat[128];
    snprintf(pat, sizeof pat, "{\"rule\":\"%s\",\"values\"", rule);
    return strstr(json, pat) != NULL;
}

typedef enum { T, F, U } tri;

/* The three-valued result of criterion `rule` for this input. */
static tri result_of(const char *in, const char *rule)
{
    char *json = eval_ok(in, NULL);
    char not_rule[80];
    snprintf(not_rule, sizeof not_rule, "%s-not", rule);
    bool t = fired(json, rule), f = fired(json, not_rule);
    free(json);
    if (t && f)
        fail_msg("%s and %s both fired", rule, not_rule);
    return t ? T : f ? F : U;
}

#define OBS(code, value, unit, date)                                                                         \
    "{'code':'" code "','value':" value ",'unit':'" unit "','date':'" date "'}"
#define EGFR(v, date) OBS("33914-3", v, "mL/min/{1.73_m2}", date)

static void expect(const char *what, const char *rule, tri want, const char *patient, const char *problems,
                   const char *obs, const char *meds, const char *flags, const char *findings)
{
    char *in = input(patient, problems, obs, meds, flags, findings);
    tri got = result_of(in, rule);
    static const char *const names[] = {"true", "false", "unknown"};
    if (got != want)
        fail_msg("%s: %s is %s, want %s", what, rule, names[got], names[want]);
    free(in);
}

static void test_latest(void **state)
{
    (void)state;
    expect("exactly at the threshold", "latest", F, NULL, NULL, "[" EGFR("30", "2026-10-01") "]", NULL, NULL,
           NULL);
    expect("just below", "latest", T, NULL, NULL, "[" EGFR("29.999", "2026-10-01") "]", NULL, NULL, NULL);
    expect("missing", "latest", U, NULL, NULL, "[]", NULL, NULL, NULL);
    expect("no observations at all", "latest", U, NULL, NULL, NULL, NULL, NULL, NULL);
    expect("the window's last day", "latest", T, NULL, NULL, "[" EGFR("20", "2025-11-23") "]", NULL, NULL,
           NULL);
    expect("stale by one day", "latest", U, NULL, NULL, "[" EGFR("20", "2025-11-22") "]", NULL, NULL, NULL);
    expect("latest counts, not lowest", "latest", F, NULL, NULL,
           "[" EGFR("20", "2026-01-01") "," EGFR("50", "2026-06-01") "]", NULL, NULL, NULL);
    expect("latest by date, not input order", "latest", T, NULL, NULL,
           "[" EGFR("20", "2026-06-01") "," EGFR("50", "2026-01-01") "]", NULL, NULL, NULL);
    expect("another accepted unit", "latest", T, NULL, NULL,
           "[" OBS("62238-1", "25", "mL/min/1.73m2", "2026-10-01") "]", NULL, NULL, NULL);
    expect("unconvertible unit", "latest", U, NULL, NULL, "[" OBS("33914-3", "25", "mg/dL", "2026-10-01") "]",
           NULL, NULL, NULL);
    expect("another code", "latest", U, NULL, NULL,
           "[" OBS("2160-0", "25", "mL/min/{1.73_m2}", "2026-10-01") "]", NULL, NULL, NULL);

    /* Stale and unusable are reported. */
    char *in =
        input(NULL, NULL,
              "[" EGFR("20", "2025-11-22") "," OBS("9318-7", "3", "mg/dL", "2026-10-01") "," OBS(
                  "9318-7", "4", "mg/dL", "2026-10-02") "," OBS("9318-7", "3", "ug/mg", "2026-10-01") "]",
              NULL, NULL, NULL);
    char *json = eval_ok(in, NULL);
    assert_non_null(strstr(json, "\"stale\":[\"egfr\"]"));
    assert_non_null(strstr(json,
                           "\"unusable\":[{\"data\":\"acr\",\"unit\":\"mg/dL\"},{\"data\":\"acr\",\"unit\":"
                           "\"ug/mg\"}]"));
    free(json);
    free(in);
    /* A stale result next to a usable one is not reported. */
    in = input(NULL, NULL, "[" EGFR("20", "2025-11-22") "," EGFR("20", "2026-11-22") "]", NULL, NULL, NULL);
    json = eval_ok(in, NULL);
    assert_non_null(strstr(json, "\"stale\":[]"));
    free(json);
    free(in);
}

static void test_unit_conversion(void **state)
{
    (void)state;
    /* 30 mg/mmol x 8.84 = 265.2 mg/g, exactly the double 265.2, printed as 265.2. */
    char *in = input(NULL, NULL, "[" OBS("9318-7", "30", "mg/mmol", "2026-10-01") "]", NULL, NULL, NULL);
    char *json = eval_ok(in, NULL);
    assert_true(fired(json, "acr-eq"));
    assert_non_null(
        strstr(json, "{\"data\":\"acr\",\"date\":\"2026-10-01\",\"unit\":\"mg/g\",\"value\":265.2}"));
    free(json);
    free(in);
    expect(
        "30 mg/mmol is not >= 300 mg/g", "count", F, NULL, NULL,
        "[" OBS("9318-7", "30", "mg/mmol", "2026-10-01") "," OBS("9318-7", "30", "mg/mmol", "2026-11-01") "]",
        NULL, NULL, NULL);
    expect(
        "34 mg/mmol is", "count", T, NULL, NULL,
        "[" OBS("9318-7", "34", "mg/mmol", "2026-10-01") "," OBS("9318-7", "300", "mg/g", "2026-11-01") "]",
        NULL, NULL, NULL);
}

static void test_count(void **state)
{
    (void)state;
    const char *two =
        "[" OBS("9318-7", "300", "mg/g", "2026-05-01") "," OBS("9318-7", "450", "mg/g", "2026-09-01") "]";
    expect("two at or above", "count", T, NULL, NULL, two, NULL, NULL, NULL);
    expect(
        "one of two", "count", F, NULL, NULL,
        "[" OBS("9318-7", "299.9", "mg/g", "2026-05-01") "," OBS("9318-7", "450", "mg/g", "2026-09-01") "]",
        NULL, NULL, NULL);
    expect("one stale", "count", F, NULL, NULL,
           "[" OBS("9318-7", "300", "mg/g", "2025-11-22") "," OBS("9318-7", "450", "mg/g", "2026-09-01") "]",
           NULL, NULL, NULL);
    expect("none", "count", U, NULL, NULL, "[]", NULL, NULL, NULL);
}

static void test_decline_slope_category(void **state)
{
    (void)state;
    const char *drop = "[" EGFR("60", "2026-01-01") "," EGFR("44", "2026-10-01") "]";
    expect("26.7 % over 273 days", "decline", T, NULL, NULL, drop, NULL, NULL, NULL);
    expect("exactly 25 %", "decline", F, NULL, NULL,
           "[" EGFR("60", "2026-01-01") "," EGFR("45", "2026-10-01") "]", NULL, NULL, NULL);
    expect("span too short", "decline", U, NULL, NULL,
           "[" EGFR("60", "2026-09-01") "," EGFR("40", "2026-10-01") "]", NULL, NULL, NULL);
    expect("one value", "decline", U, NULL, NULL, "[" EGFR("60", "2026-09-01") "]", NULL, NULL, NULL);

    expect("G2 to G3b", "catdrop", T, NULL, NULL, drop, NULL, NULL, NULL);
    expect("same category", "catdrop", F, NULL, NULL,
           "[" EGFR("62", "2026-01-01") "," EGFR("60", "2026-10-01") "]", NULL, NULL, NULL);
    expect("one value", "catdrop", U, NULL, NULL, "[" EGFR("62", "2026-01-01") "]", NULL, NULL, NULL);

    /* -10 per year over three points spanning a year. */
    const char *falling =
        "[" EGFR("60", "2025-11-25") "," EGFR("55", "2026-05-25") "," EGFR("50", "2026-11-23") "]";
    expect("falling 10 a year", "slope", T, NULL, NULL, falling, NULL, NULL, NULL);
    expect("stable", "slope", F, NULL, NULL,
           "[" EGFR("60", "2025-11-25") "," EGFR("59", "2026-05-25") "," EGFR("58", "2026-11-23") "]", NULL,
           NULL, NULL);
    expect("two points", "slope", U, NULL, NULL,
           "[" EGFR("60", "2025-11-25") "," EGFR("50", "2026-11-23") "]", NULL, NULL, NULL);
    expect("span too short", "slope", U, NULL, NULL,
           "[" EGFR("60", "2026-08-01") "," EGFR("55", "2026-09-01") "," EGFR("50", "2026-10-01") "]", NULL,
           NULL, NULL);
}

static void test_flags_findings(void **state)
{
    (void)state;
    expect("flag true", "flag", T, NULL, NULL, NULL, NULL, "{'dysphagia':true}", NULL);
    expect("flag false", "flag", F, NULL, NULL, NULL, NULL, "{'dysphagia':false}", NULL);
    expect("flag absent", "flag", U, NULL, NULL, NULL, NULL, "{'weight_loss':true}", NULL);
    expect("patient.pregnant is the flag pregnant", "pregnant", T,
           "{'age':30,'sex':'female','pregnant':true}", NULL, NULL, NULL, NULL, NULL);
    expect("not stated", "pregnant", U, "{'age':30,'sex':'female'}", NULL, NULL, NULL, NULL, NULL);

    expect("number at the threshold", "finding-num", T, NULL, NULL, NULL, NULL, NULL,
           "{'thyroid_nodule_size_cm':1.0}");
    expect("number below", "finding-num", F, NULL, NULL, NULL, NULL, NULL, "{'thyroid_nodule_size_cm':0.99}");
    expect("number absent", "finding-num", U, NULL, NULL, NULL, NULL, NULL, "{}");
    expect("text for a number", "finding-num", U, NULL, NULL, NULL, NULL, NULL,
           "{'thyroid_nodule_size_cm':'big'}");
    expect("in the list", "finding-in", T, NULL, NULL, NULL, NULL, NULL, "{'thyroid_us_pattern':'high'}");
    expect("not in the list", "finding-in", F, NULL, NULL, NULL, NULL, NULL, "{'thyroid_us_pattern':'low'}");
    expect("not a value of the element", "finding-in", U, NULL, NULL, NULL, NULL, NULL,
           "{'thyroid_us_pattern':'weird'}");
    char *in = input(NULL, NULL, NULL, NULL, NULL, "{'thyroid_us_pattern':'weird'}");
    char *json = eval_ok(in, NULL);
    assert_non_null(strstr(json, "\"unusable\":[{\"data\":\"pattern\",\"reason\":\"value\"}]"));
    free(json);
    free(in);
}

static void test_medication_problem_age_sex_missing(void **state)
{
    (void)state;
    expect(
        "61 days completed", "med", T, NULL, NULL, NULL,
        "[{'name':'omeprazole','class':'ppi','start':'2026-08-01','end':'2026-10-01','status':'completed'}]",
        NULL, NULL);
    expect("55 days", "med", F, NULL, NULL, NULL,
           "[{'class':'ppi','start':'2026-08-01','end':'2026-09-25','status':'completed'}]", NULL, NULL);
    expect("exactly 56 days", "med", T, NULL, NULL, NULL,
           "[{'class':'ppi','start':'2026-08-01','end':'2026-09-26','status':'stopped'}]", NULL, NULL);
    expect("ongoing to as_of", "med", T, NULL, NULL, NULL,
           "[{'rxnorm':'7646','start':'2026-09-01','status':'active'}]", NULL, NULL);
    expect("status not counted", "med", F, NULL, NULL, NULL,
           "[{'class':'ppi','start':'2026-01-01','end':'2026-09-25','status':'not-taken'}]", NULL, NULL);
    expect("no start date", "med", U, NULL, NULL, NULL, "[{'class':'ppi','status':'completed'}]", NULL, NULL);
    expect("empty list", "med", F, NULL, NULL, NULL, "[]", NULL, NULL);
    expect("not stated", "med", U, NULL, NULL, NULL, NULL, NULL, NULL);

    expect("active problem", "problem", T, NULL,
           "[{'code':'N18.3','status':'active'},{'code':'E03.9','status':'active'}]", NULL, NULL, NULL, NULL);
    expect("resolved problem", "problem", F, NULL, "[{'code':'E03.9','status':'resolved'}]", NULL, NULL, NULL,
           NULL);
    expect("problems not listed", "problem", U, NULL, NULL, NULL, NULL, NULL, NULL);

    expect("age 60", "age", T, "{'age':60,'sex':'male'}", NULL, NULL, NULL, NULL, NULL);
    expect("age 59", "age", F, "{'age':59,'sex':'male'}", NULL, NULL, NULL, NULL, NULL);
    expect("female", "sex", T, "{'age':59,'sex':'female'}", NULL, NULL, NULL, NULL, NULL);
    expect("male", "sex", F, "{'age':59,'sex':'male'}", NULL, NULL, NULL, NULL, NULL);
    expect("sex unknown", "sex", U, "{'age':59,'sex':'unknown'}", NULL, NULL, NULL, NULL, NULL);

    expect("acr missing", "missing", T, NULL, NULL, "[" EGFR("50", "2026-10-01") "]", NULL, NULL, NULL);
    expect("acr stale is missing", "missing", T, NULL, NULL,
           "[" OBS("9318-7", "30", "mg/g", "2025-01-01") "]", NULL, NULL, NULL);
    expect("acr present", "missing", F, NULL, NULL, "[" OBS("9318-7", "30", "mg/g", "2026-01-01") "]", NULL,
           NULL, NULL);

    /* {"not": {"missing": ...}} that fires reports the value that was present (it used to report none). */
    char *in = input(NULL, NULL, "[" OBS("9318-7", "30", "mg/g", "2026-01-01") "]", NULL, NULL, NULL);
    char *json = eval_ok(in, NULL);
    assert_true(fired(json, "missing-not"));
    const char *entry = strstr(json, "{\"rule\":\"missing-not\",\"values\":[");
    assert_non_null(entry);
    const char *entry_end = strstr(entry, "]}"); /* this rule's values only */
    assert_non_null(entry_end);
    const char *v30 = strstr(entry, "\"value\":30");
    assert_true(v30 && v30 < entry_end);
    free(json);
    free(in);

    /* all/any: unknown beside true stays unknown in all; unknown beside false stays unknown in any. */
    in = input(NULL, NULL, NULL, NULL, NULL, NULL);
    json = eval_ok(in, NULL);
    assert_false(fired(json, "all-unknown"));
    assert_false(fired(json, "any-unknown"));
    free(json);
    free(in);
    in = input(NULL, NULL, NULL, NULL, "{'dysphagia':true}", NULL);
    json = eval_ok(in, NULL);
    assert_true(fired(json, "all-unknown"));
    assert_true(fired(json, "any-unknown"));
    free(json);
    free(in);
}

static void test_decision(void **state)
{
    (void)state;
    /* eGFR 27, female 67: latest, age, sex fire (and others' negations); the first in rule order decides. */
    char *in = input(NULL, "[{'code':'N18.3','status':'active'}]", "[" EGFR("27", "2026-10-01") "]", NULL,
                     "{'dysphagia':false}", NULL);
    gl_summary s;
    char *json = eval_ok(in, &s);
    assert_int_equal(s.outcome, GL_REFER);
    assert_string_equal(s.urgency, "routine");
    assert_string_equal(s.pathway, "ckd");
    assert_string_equal(s.rule, "latest");
    assert_int_equal(strlen(s.input_hash), 64);
    assert_true(fired(json, "latest"));
    assert_true(fired(json, "age"));
    assert_true(fired(json, "flag-not"));
    assert_non_null(strstr(json,
                           "{\"rule\":\"latest\",\"values\":[{\"data\":\"egfr\",\"date\":\"2026-10-01\","
                           "\"unit\":\"mL/min/{1.73_m2}\",\"value\":27}]}"));
    assert_non_null(strstr(json, "{\"rule\":\"age\",\"values\":[{\"data\":\"age\",\"value\":67}]}"));
    assert_non_null(strstr(json, "\"citations\":[{\"guideline\":\"Test guideline\",\"rule\":\"latest\","
                                 "\"section\":\"1\",\"year\":2020},"));
    assert_non_null(strstr(json, "\"other_pathways\":[\"ckd-second\"]"));
    assert_non_null(strstr(json, "\"engine\":\"alma-guideline/1\""));
    assert_non_null(strstr(json, gl_bundle_hash(g_bundle)));
    /* Count the fired list against the summary. */
    size_t n = 0;
    for (const char *p = json; (p = strstr(p, "\"values\":[")); p++)
        n++;
    assert_int_equal(n, s.fired);
    free(json);
    free(in);

    /* Summary only. */
    gl_summary s2;
    in = input(NULL, NULL, "[" EGFR("27", "2026-10-01") "]", NULL, NULL, NULL);
    MUST(gl_evaluate(g_bundle, in, strlen(in), &s2, NULL, NULL));
    assert_string_equal(s2.rule, "latest");
    free(in);

    /* No pathway: another specialty, or an age outside the pathway's. */
    in = dq(
        "{'as_of':'2026-11-23','specialty':'cardiology','reason_codes':['N18.3'],'patient':{'age':67,'sex':"
        "'female'}}");
    json = eval_ok(in, &s);
    assert_int_equal(s.outcome, GL_NO_PATHWAY);
    assert_string_equal(s.pathway, "");
    assert_string_equal(s.rule, "");
    assert_non_null(strstr(json, "\"outcome\":\"NO_PATHWAY\""));
    assert_non_null(strstr(json, "\"fired\":[]"));
    free(json);
    free(in);
    in = dq(
        "{'as_of':'2026-11-23','specialty':'nephrology','reason_codes':['N18.3'],'patient':{'age':17,'sex':"
        "'female'}}");
    json = eval_ok(in, &s);
    assert_string_equal(s.pathway, "ckd-second"); /* ckd needs age 18 */
    assert_string_equal(s.rule, "default");
    assert_int_equal(s.outcome, GL_MANAGE);
    assert_non_null(strstr(json, "\"citations\":[{\"guideline\":\"Test guideline\",\"rule\":\"default\""));
    assert_non_null(strstr(json, "\"steps\":[\"manage\"]"));
    free(json);
    free(in);
    /* The code comes from an active problem; N18 alone is not in N18.1..N18.9. */
    in = dq("{'as_of':'2026-11-23','specialty':'nephrology','problems':[{'code':'N18','status':'active'}],"
            "'patient':{'age':67,'sex':'female'}}");
    json = eval_ok(in, &s);
    assert_string_equal(s.pathway, "ckd-second");
    free(json);
    free(in);

    /* INSUFFICIENT and WORKUP and an urgent REFER on the gi pathway. */
    in = dq("{'as_of':'2026-11-23','specialty':'gastroenterology','reason_codes':['K30'],'patient':{'age':40,"
            "'sex':"
            "'male'}}");
    json = eval_ok(in, &s);
    assert_int_equal(s.outcome, GL_INSUFFICIENT);
    assert_non_null(strstr(json, "\"needs\":[\"hp\"]"));
    free(json);
    free(in);
    in = dq("{'as_of':'2026-11-23','specialty':'gastroenterology','reason_codes':['K30'],'patient':{'age':40,"
            "'sex':"
            "'male'},'flags':{'h_pylori_tested':true,'dysphagia':true}}");
    json = eval_ok(in, &s);
    assert_int_equal(s.outcome, GL_REFER);
    assert_string_equal(s.urgency, "urgent");
    assert_string_equal(s.rule, "gi-alarm");
    assert_int_equal(s.fired, 2);
    assert_non_null(strstr(json, "\"explain\":\"alarm feature\""));
    free(json);
    free(in);
    in = dq("{'as_of':'2026-11-23','specialty':'gastroenterology','reason_codes':['K30'],'patient':{'age':40,"
            "'sex':"
            "'male'},'flags':{'h_pylori_tested':true,'dysphagia':false}}");
    json = eval_ok(in, &s);
    assert_int_equal(s.outcome, GL_WORKUP);
    assert_non_null(strstr(json, "\"tests\":[\"urea breath test\"]"));
    free(json);
    free(in);
    assert_string_equal(gl_outcome_name(GL_INSUFFICIENT), "INSUFFICIENT");
    assert_string_equal(gl_outcome_name(GL_NO_PATHWAY), "NO_PATHWAY");
}

static const char *const FULL =
    "{ 'as_of': '2026-11-23', 'specialty': 'nephrology', 'reason_codes': ['N18.3'],\n"
    "  'patient': { 'age': 67, 'sex': 'female', 'pregnant': false },\n"
    "  'problems': [ { 'code': 'N18.3', 'status': 'active' } ],\n"
    "  'observations': [ { 'code': '33914-3', 'value': 27, 'unit': 'mL/min/{1.73_m2}', "
    "'date': '2026-10-01' },\n"
    "                    { 'code': '33914-3', 'value': 41.5, 'unit': 'mL/min/{1.73_m2}', "
    "'date': '2026-01-01' },\n"
    "                    { 'code': '9318-7', 'value': 31, 'unit': 'mg/mmol', 'date': "
    "'2026-10-01' } ],\n"
    "  'medications': [ { 'name': 'omeprazole', 'class': 'ppi', 'rxnorm': '7646', "
    "'start': '2026-08-01', 'end': '2026-10-01', 'status': 'completed' } ],\n"
    "  'flags': { 'dysphagia': false },\n"
    "  'findings': { 'thyroid_nodule_size_cm': 1.4, 'thyroid_us_pattern': 'intermediate' } }";

/* The same document: keys reordered, other whitespace, 27.0 for 27. */
static const char *const FULL_REORDERED =
    "{'findings':{'thyroid_us_pattern':'intermediate','thyroid_nodule_size_cm':1.4},'flags':{'dysphagia':"
    "false},"
    "'medications':[{'status':'completed','end':'2026-10-01','start':'2026-08-01','rxnorm':'7646','class':'"
    "ppi',"
    "'name':'omeprazole'}],'observations':[{'date':'2026-10-01','unit':'mL/min/"
    "{1.73_m2}','value':27.0,'code':"
    "'33914-3'},{'value':41.5,'code':'33914-3','unit':'mL/min/{1.73_m2}','date':'2026-01-01'},{'unit':'mg/"
    "mmol',"
    "'date':'2026-10-01','code':'9318-7','value':31}],'problems':[{'status':'active','code':'N18.3'}],'"
    "patient':"
    "{'pregnant':false,'sex':'female','age':67},'reason_codes':['N18.3'],'specialty':'nephrology','as_of':"
    "'2026-11-23'}";

static void test_determinism(void **state)
{
    (void)state;
    char *a = dq(FULL), *b = dq(FULL_REORDERED);
    gl_summary sa, sb, sa2;
    char *ja = eval_ok(a, &sa), *ja2 = eval_ok(a, &sa2), *jb = eval_ok(b, &sb);
    assert_string_equal(ja, ja2);
    assert_string_equal(sa.input_hash, sb.input_hash);
    assert_string_equal(ja, jb);
    assert_memory_equal(&sa, &sa2, sizeof sa);

    /* The output is canonical: re-canonicalising it changes nothing. */
    char *canon = NULL;
    size_t clen = 0;
    MUST(gl_canonical_json(ja, strlen(ja), GL_BUNDLE_MAX_BYTES, &canon, &clen));
    assert_string_equal(canon, ja);
    free(canon);
    /* The input hash is the SHA-256 of the canonical input. */
    assert_non_null(strstr(ja, sa.input_hash));

    /* Arrays keep their order in the canonical input: swapping two observations changes the input hash
     * (not the recommendation). */
    char *swapped =
        dq("{ 'as_of': '2026-11-23', 'specialty': 'nephrology', 'reason_codes': ['N18.3'],"
           "  'patient': { 'age': 67, 'sex': 'female', 'pregnant': false },"
           "  'problems': [ { 'code': 'N18.3', 'status': 'active' } ],"
           "  'observations': [ { 'code': '33914-3', 'value': 41.5, 'unit': 'mL/min/{1.73_m2}', "
           "'date': '2026-01-01' }, { 'code': '33914-3', 'value': 27, 'unit': 'mL/min/{1.73_m2}', "
           "'date': '2026-10-01' }, { 'code': '9318-7', 'value': 31, 'unit': 'mg/mmol', 'date': "
           "'2026-10-01' } ],"
           "  'medications': [ { 'name': 'omeprazole', 'class': 'ppi', 'rxnorm': '7646', "
           "'start': '2026-08-01', 'end': '2026-10-01', 'status': 'completed' } ],"
           "  'flags': { 'dysphagia': false },"
           "  'findings': { 'thyroid_nodule_size_cm': 1.4, 'thyroid_us_pattern': 'intermediate' } }");
    gl_summary ss;
    char *js = eval_ok(swapped, &ss);
    assert_string_not_equal(ss.input_hash, sa.input_hash);
    assert_string_equal(ss.rule, sa.rule);
    assert_int_equal(ss.fired, sa.fired);
    free(js);
    free(swapped);
    free(ja);
    free(ja2);
    free(jb);
    free(a);
    free(b);
}

typedef struct thread_arg {
    const char *input;
    const char *want;
    int rounds;
    int mismatches;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *t = p;
    for (int i = 0; i < t->rounds; i++) {
        char *json = NULL;
        size_t len = 0;
        gl_summary s;
        base_result r = gl_evaluate(g_bundle, t->input, strlen(t->input), &s, &json, &len);
        if (!base_is_ok(r) || strcmp(json, t->want) != 0)
            t->mismatches++;
        free(json);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    char *in = dq(FULL);
    char *want = eval_ok(in, NULL);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){.input = in, .want = want, .rounds = 2000};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].mismatches, 0);
    }
    free(want);
    free(in);
}

typedef struct bad_input {
    const char *doc;  /* with ' for " */
    const char *want; /* substring of the message */
} bad_input;

#define PT "'patient':{'age':67,'sex':'female'}"
#define HD "'as_of':'2026-11-23','specialty':'nephrology'," PT

/* Every secret-looking value here ("SECRET", 987654, 2027) must never appear in a message. */
static const bad_input BAD_INPUTS[] = {
    {"[]", "input: (document): must be a JSON object"},
    {"{'specialty':'nephrology'," PT "}", "input: as_of: missing"},
    {"{'as_of':'2026-02-30','specialty':'nephrology'," PT "}", "input: as_of: not a date"},
    {"{'as_of':'SECRET','specialty':'nephrology'," PT "}", "input: as_of: not a date"},
    {"{" HD ",'ssn':'SECRET-987654'}", "input: (document): has an unknown key"},
    {"{'as_of':'2026-11-23','specialty':'SECRET'," PT "}", "input: specialty: not a specialty"},
    {"{'as_of':'2026-11-23','specialty':'nephrology','patient':{'age':987654,'sex':'female'}}",
     "input: patient.age: not an integer 0..150"},
    {"{'as_of':'2026-11-23','specialty':'nephrology','patient':{'age':67,'sex':'SECRET'}}",
     "input: patient.sex: not one of"},
    {"{'as_of':'2026-11-23','specialty':'nephrology','patient':{'age':67,'sex':'female','name':'SECRET'}}",
     "input: patient: has an unknown key"},
    {"{" HD ",'reason_codes':['SECRET']}", "input: reason_codes[0]: not an ICD-10-CM code"},
    {"{" HD ",'observations':[{'code':'33914-3','value':1,'unit':'mg','date':'2027-01-01'}]}",
     "input: observations[0].date: after as_of"},
    {"{" HD ",'observations':[{'code':'33914-3','value':'SECRET','unit':'mg','date':'2026-01-01'}]}",
     "input: observations[0].value: not a number"},
    {"{" HD ",'observations':[{'code':'33914-3','value':1,'unit':'SECRET unit','date':'2026-01-01'}]}",
     "input: observations[0].unit: not a unit string"},
    {"{" HD ",'observations':[{'code':'SECRET','value':1,'unit':'mg','date':'2026-01-01'}]}",
     "input: observations[0].code: not a LOINC code"},
    {"{" HD ",'observations':[{'code':'33914-3','value':1,'unit':'mg'}]}",
     "input: observations[0].date: missing"},
    {"{" HD ",'observations':[{'code':'33914-3','value':1e300,'unit':'mg','date':'2026-01-01'}]}",
     "input: observations[0].value: not a number of magnitude at most 1e12"},
    {"{" HD ",'medications':[{'class':'ppi','start':'2026-05-01','end':'2026-04-01','status':'active'}]}",
     "input: medications[0].end: before start"},
    {"{" HD ",'medications':[{'class':'ppi','start':'2027-05-01','status':'active'}]}",
     "input: medications[0].start: after as_of"},
    {"{" HD ",'medications':[{'class':'ppi','status':'SECRET'}]}",
     "input: medications[0].status: not one of"},
    {"{" HD ",'medications':[{'class':'ppi','status':'active','dose':'SECRET'}]}",
     "input: medications[0]: has an unknown key"},
    {"{" HD ",'problems':[{'code':'N18.3','status':'SECRET'}]}", "input: problems[0].status: not one of"},
    {"{" HD ",'flags':{'dysphagia':'SECRET'}}", "input: flags (entry 0): not true or false"},
    {"{" HD ",'flags':{'SECRET':true}}", "input: flags (entry 0): the name is not"},
    {"{" HD ",'findings':{'size':[987654]}}", "input: findings (entry 0): not a number nor a text"},
    {"{'as_of':'2026-11-23','specialty':'nephrology','patient':{'age':67,'sex':'female','pregnant':true},"
     "'flags':{'pregnant':false}}",
     "input: flags.pregnant: contradicts patient.pregnant"},
    {"{" HD ",'as_of':'2026-11-23'}", "input: not valid JSON"},
    {"{" HD ",'x':'SECRET", "input: not valid JSON"},
};

static void test_input_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < BASE_ARRAY_LEN(BAD_INPUTS); i++) {
        char *in = dq(BAD_INPUTS[i].doc);
        gl_summary s;
        char *json = NULL;
        base_result r = gl_evaluate(g_bundle, in, strlen(in), &s, &json, NULL);
        if (r.err != BASE_ERR_INVALID)
            fail_msg("case %zu: %s (%s), want invalid", i, base_err_name(r.err), base_error_message());
        assert_null(json);
        const char *m = base_error_message();
        if (!strstr(m, BAD_INPUTS[i].want))
            fail_msg("case %zu: message \"%s\" does not contain \"%s\"", i, m, BAD_INPUTS[i].want);
        if (strstr(m, "SECRET") || strstr(m, "987654") || strstr(m, "2027") || strstr(m, "ssn"))
            fail_msg("case %zu: message \"%s\" contains a value", i, m);
        free(in);
    }

    /* Limits: 501 observations; a text over 256 KiB. */
    size_t cap = 200 * 1024;
    char *buf = malloc(cap);
    assert_non_null(buf);
    int n = snprintf(buf, cap,
                     "{\"as_of\":\"2026-11-23\",\"specialty\":\"nephrology\",\"patient\":{\"age\":1,"
                     "\"sex\":\"male\"},\"observations\":[");
    for (int i = 0; i < GL_INPUT_MAX_OBSERVATIONS + 1; i++)
        n +=
            snprintf(buf + n, cap - (size_t)n,
                     "%s{\"code\":\"1-1\",\"value\":1,\"unit\":\"g\",\"date\":\"2026-01-01\"}", i ? "," : "");
    n += snprintf(buf + n, cap - (size_t)n, "]}");
    base_result r = gl_evaluate(g_bundle, buf, (size_t)n, NULL, NULL, NULL);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "input: observations: more than 500 entries"));
    free(buf);

    size_t big = GL_INPUT_MAX_BYTES + 1;
    buf = malloc(big);
    assert_non_null(buf);
    memset(buf, ' ', big);
    buf[0] = '{';
    buf[big - 1] = '}';
    r = gl_evaluate(g_bundle, buf, big, NULL, NULL, NULL);
    assert_int_equal(r.err, BASE_ERR_LIMIT);
    free(buf);
}

/* The identifier shapes the service and alma-cli share (shapes.h). */
static void test_shapes(void **state)
{
    (void)state;
    assert_true(gl_valid_referral_id("ref-1_A"));
    assert_true(gl_valid_referral_id("0123456789012345678901234567890123456789012345678901234567890123"));
    assert_false(gl_valid_referral_id("01234567890123456789012345678901234567890123456789012345678901234"));
    assert_false(gl_valid_referral_id(""));
    assert_false(gl_valid_referral_id("ref/1"));
    assert_false(gl_valid_referral_id(NULL));
    assert_true(gl_valid_icd10("N18"));
    assert_true(gl_valid_icd10("N18.4"));
    assert_true(gl_valid_icd10("M54.50"));
    assert_true(gl_valid_icd10("Q61.11"));
    assert_true(gl_valid_icd10("Z3A.1234")); /* a letter in the third place */
    assert_false(gl_valid_icd10("N18."));
    assert_false(gl_valid_icd10("N18.12345"));
    assert_false(gl_valid_icd10("n18.4"));
    assert_false(gl_valid_icd10("1N8"));
    assert_false(gl_valid_icd10("N184"));
    assert_false(gl_valid_icd10("N18-4"));
    assert_true(gl_valid_name("nephrology", GL_NAME_MAX, true, true));
    assert_true(gl_valid_name("spine-surgery", GL_NAME_MAX, true, true));
    assert_true(gl_valid_name("3d", GL_NAME_MAX, true, true));
    assert_false(gl_valid_name("3d", GL_NAME_MAX, false, false));
    assert_false(gl_valid_name("-a", GL_NAME_MAX, true, true));
    assert_false(gl_valid_name("red-flag", GL_NAME_MAX, false, false));
    assert_true(gl_valid_name("red_flag", GL_NAME_MAX, false, false));
    assert_false(gl_valid_name("Red_flag", GL_NAME_MAX, false, false));
    assert_false(gl_valid_name("abc", 2, false, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latest),         cmocka_unit_test(test_unit_conversion),
        cmocka_unit_test(test_count),          cmocka_unit_test(test_decline_slope_category),
        cmocka_unit_test(test_flags_findings), cmocka_unit_test(test_medication_problem_age_sex_missing),
        cmocka_unit_test(test_decision),       cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_concurrent),     cmocka_unit_test(test_input_errors),
        cmocka_unit_test(test_shapes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
