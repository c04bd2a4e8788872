/* The guideline bundle loader (services/guideline/bundle.h), no database: a valid bundle loads and its
 * content hash is the SHA-256 of its canonical JSON, stable under reformatting, key order and number
 * spelling and changed by any change of content; a table of bad bundles, each a one-place edit of the valid
 * one, is refused with a message that names the offending pathway, rule and JSON path. */
#include "bundle.h"
#include "crypto/crypto.h"
#include "testenv.h"

#include <fcntl.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

/* Written with ' for " so it stays readable; dq() turns it into JSON. */
static const char VALID[] =
    "{\n"
    "  'format': 1,\n"
    "  'bundle_id': 'test-bundle',\n"
    "  'version': '1.2.3',\n"
    "  'title': 'Test bundle',\n"
    "  'published': '2026-01-15',\n"
    "  'units': {\n"
    "    'egfr': { 'canonical': 'mL/min/{1.73_m2}', 'accept': { 'mL/min/{1.73_m2}': 1 } },\n"
    "    'acr':  { 'canonical': 'mg/g', 'accept': { 'mg/g': 1, 'mg/mmol': 8.84 } }\n"
    "  },\n"
    "  'pathways': [\n"
    "    { 'id': 'ckd', 'title': 'CKD',\n"
    "      'applies': { 'specialties': ['nephrology'],\n"
    "                   'codes': [ { 'system': 'icd10cm', 'from': 'N18.1', 'to': 'N18.9' } ], 'age': { "
    "'min': 18 } },\n"
    "      'data': {\n"
    "        'egfr': { 'observation': { 'codes': ['33914-3'], 'quantity': 'egfr' }, 'window_days': 730 },\n"
    "        'acr':  { 'observation': { 'codes': ['9318-7'], 'quantity': 'acr' }, 'window_days': 365 },\n"
    "        'dysphagia': { 'flag': 'dysphagia' }\n"
    "      },\n"
    "      'rules': [\n"
    "        { 'id': 'egfr-low', 'when': { 'latest': 'egfr', 'op': '<', 'value': 30 }, 'outcome': 'REFER', "
    "'urgency': 'routine', 'cite': { 'guideline': 'KDIGO 2012', 'year': 2012, 'section': '5.1.1' } },\n"
    "        { 'id': 'missing-labs', 'when': { 'any': [ { 'missing': 'egfr' }, { 'missing': 'acr' } ] },\n"
    "          'outcome': 'WORKUP', 'tests': ['eGFR', 'ACR'],\n"
    "          'cite': { 'guideline': 'KDIGO 2012', 'year': 2012, 'section': '5.1.2' } }\n"
    "      ],\n"
    "      'default': { 'outcome': 'MANAGE', 'steps': ['manage in primary care'],\n"
    "                   'cite': { 'guideline': 'KDIGO 2012', 'year': 2012, 'section': '3.1' } } },\n"
    "    { 'id': 'thyroid', 'title': 'Thyroid',\n"
    "      'applies': { 'specialties': ['endocrinology'], 'codes': [ { 'system': 'icd10cm', 'code': 'E04' } "
    "] },\n"
    "      'data': { 'size': { 'finding': 'thyroid_nodule_size_cm', 'type': 'number' } },\n"
    "      'rules': [],\n"
    "      'default': { 'outcome': 'MANAGE', 'steps': ['ultrasound'],\n"
    "                   'cite': { 'guideline': 'ATA 2015', 'year': 2015, 'section': 'R1' } } }\n"
    "  ]\n"
    "}\n";

/* The same content: other key order, other whitespace, numbers spelled otherwise (30.0, 7.3e2, 884e-2). */
static const char REFORMATTED[] =
    "{'pathways':[{'title':'CKD','id':'ckd','default':{'cite':{'section':'3.1','year':2012,'guideline':"
    "'KDIGO 2012'},'steps':['manage in primary "
    "care'],'outcome':'MANAGE'},'rules':[{'cite':{'section':'5.1.1',"
    "'guideline':'KDIGO "
    "2012','year':2012},'urgency':'routine','outcome':'REFER','when':{'value':30.0,'op':'<',"
    "'latest':'egfr'},'id':'egfr-low'},{'when':{'any':[{'missing':'egfr'},{'missing':'acr'}]},'tests':['eGFR'"
    ","
    "'ACR'],'outcome':'WORKUP','id':'missing-labs','cite':{'year':2012,'section':'5.1.2','guideline':"
    "'KDIGO 2012'}}],'data':{'dysphagia':{'flag':'dysphagia'},'acr':{'window_days':365,'observation':{"
    "'quantity':'acr','codes':['9318-7']}},'egfr':{'window_days':7.3e2,'observation':{'codes':['33914-3'],"
    "'quantity':'egfr'}}},'applies':{'age':{'min':18},'codes':[{'to':'N18.9','from':'N18.1','system':"
    "'icd10cm'}],'specialties':['nephrology']}},{'rules':[],'id':'thyroid','title':'Thyroid','data':{'size':{"
    "'type':'number','finding':'thyroid_nodule_size_cm'}},'applies':{'codes':[{'code':'E04','system':"
    "'icd10cm'}],'specialties':['endocrinology']},'default':{'outcome':'MANAGE','steps':['ultrasound'],'cite'"
    ":"
    "{'guideline':'ATA 2015','year':2015,'section':'R1'}}}],'units':{'acr':{'accept':{'mg/mmol':884e-2,"
    "'mg/g':1},'canonical':'mg/g'},'egfr':{'accept':{'mL/min/{1.73_m2}':1},'canonical':'mL/min/{1.73_m2}'}},"
    "'published':'2026-01-15','title':'Test bundle','version':'1.2.3','bundle_id':'test-bundle','format':1}";

static char *dq(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    for (char *p = d; *p; p++)
        if (*p == '\'')
            *p = '"';
    return d;
}

/* VALID with the one occurrence of `from` replaced by `to` (both written with '). */
static char *edit(const char *from, const char *to)
{
    char *base = dq(VALID), *f = dq(from), *t = dq(to);
    char *at = strstr(base, f);
    if (!at)
        fail_msg("edit: \"%s\" not in the valid bundle", from);
    if (strstr(at + 1, f))
        fail_msg("edit: \"%s\" is in the valid bundle more than once", from);
    size_t n = strlen(base) - strlen(f) + strlen(t) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    size_t pre = (size_t)(at - base);
    memcpy(out, base, pre);
    memcpy(out + pre, t, strlen(t));
    memcpy(out + pre + strlen(t), at + strlen(f), strlen(at + strlen(f)) + 1);
    free(base);
    free(f);
    free(t);
    return out;
}

static gl_bundle *load_ok(const char *text)
{
    gl_bundle *b = NULL;
    MUST(gl_bundle_load(text, strlen(text), &b));
    assert_non_null(b);
    return b;
}

static void test_valid_loads(void **state)
{
    (void)state;
    char *text = dq(VALID);
    gl_bundle *b = load_ok(text);
    assert_string_equal(gl_bundle_id(b), "test-bundle");
    assert_string_equal(gl_bundle_version(b), "1.2.3");
    assert_string_equal(gl_bundle_title(b), "Test bundle");
    assert_string_equal(gl_bundle_published(b), "2026-01-15");
    assert_int_equal(gl_bundle_pathway_count(b), 2);
    assert_string_equal(gl_bundle_pathway_id(b, 0), "ckd");
    assert_string_equal(gl_bundle_pathway_id(b, 1), "thyroid");
    assert_null(gl_bundle_pathway_id(b, 2));
    const char *h = gl_bundle_hash(b);
    assert_int_equal(strlen(h), 64);
    for (const char *p = h; *p; p++)
        assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));

    /* The hash is SHA-256 of the canonical JSON, which has sorted keys and no whitespace. */
    char *canon = NULL;
    size_t clen = 0;
    MUST(gl_canonical_json(text, strlen(text), GL_BUNDLE_MAX_BYTES, &canon, &clen));
    assert_int_equal(
        strncmp(canon, "{\"bundle_id\":\"test-bundle\",\"format\":1,\"pathways\":[{\"applies\":", 60), 0);
    assert_null(strchr(canon, '\n'));
    assert_non_null(strstr(canon, "\"mg/mmol\":8.84"));
    uint8_t d[ACRYPTO_SHA256_LEN];
    char hex[65];
    size_t hl;
    MUST(acrypto_sha256(canon, clen, d));
    MUST(acrypto_hex_encode(d, sizeof d, hex, sizeof hex, &hl));
    assert_string_equal(hex, h);
    free(canon);
    gl_bundle_free(b);
    gl_bundle_free(NULL);
    free(text);
}

static void test_hash_stable_and_sensitive(void **state)
{
    (void)state;
    char *a = dq(VALID), *r = dq(REFORMATTED);
    gl_bundle *ba = load_ok(a), *br = load_ok(r);
    assert_string_equal(gl_bundle_hash(ba), gl_bundle_hash(br));

    /* Loading twice gives the same hash. */
    gl_bundle *ba2 = load_ok(a);
    assert_string_equal(gl_bundle_hash(ba), gl_bundle_hash(ba2));

    /* Any change of content changes it: a threshold, a citation, an array order. */
    static const char *const changes[][2] = {
        {"'value': 30 }", "'value': 31 }"},
        {"'section': '5.1.2'", "'section': '5.1.3'"},
        {"'tests': ['eGFR', 'ACR']", "'tests': ['ACR', 'eGFR']"},
        {"'mg/mmol': 8.84", "'mg/mmol': 8.840000001"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(changes); i++) {
        char *t = edit(changes[i][0], changes[i][1]);
        gl_bundle *bc = load_ok(t);
        if (strcmp(gl_bundle_hash(bc), gl_bundle_hash(ba)) == 0)
            fail_msg("change %zu did not change the hash", i);
        gl_bundle_free(bc);
        free(t);
    }
    gl_bundle_free(ba);
    gl_bundle_free(ba2);
    gl_bundle_free(br);
    free(a);
    free(r);
}

typedef struct bad_case {
    const char *name;
    const char *from;
    const char *to;
    const char *want; /* a substring of the message */
} bad_case;

static const bad_case BAD[] = {
    {"unknown key in a data element", "'window_days': 730", "'window_days': 730, 'windows': 3",
     "pathways[0] (ckd): data.egfr: unknown key \"windows\""},
    {"unknown key in a criterion", "'op': '<', 'value': 30", "'op': '<', 'value': 30, 'vaule': 1",
     "pathways[0] (ckd) rules[0] (egfr-low): when: unknown key \"vaule\""},
    {"unknown key at the top", "'format': 1,", "'format': 1, 'extra': true,",
     "bundle: unknown key \"extra\""},
    {"unknown key in a citation", "'section': '3.1'", "'section': '3.1', 'page': 3",
     "pathways[0] (ckd) default: cite: unknown key \"page\""},
    {"unknown data reference", "{ 'missing': 'acr' }", "{ 'missing': 'acrr' }",
     "pathways[0] (ckd) rules[1] (missing-labs): when.any[1].missing: unknown data element \"acrr\""},
    {"data of the wrong kind", "'latest': 'egfr'", "'latest': 'dysphagia'",
     "rules[0] (egfr-low): when.latest: data element \"dysphagia\" is a flag, not a observation"},
    {"missing cite",
     "'urgency': 'routine', 'cite': { 'guideline': 'KDIGO 2012', 'year': 2012, 'section': '5.1.1' } }",
     "'urgency': 'routine' }", "pathways[0] (ckd) rules[0] (egfr-low): missing \"cite\""},
    {"cite year out of range", "'year': 2015", "'year': 1800",
     "pathways[1] (thyroid) default: cite.year: must be"},
    {"empty cite section", "'section': 'R1'", "'section': ''", "cite.section: must be 1..100 bytes"},
    {"bad version (leading zero)", "'1.2.3'", "'01.2.3'", "bundle: version: \"01.2.3\" is not a version"},
    {"bad version (two parts)", "'1.2.3'", "'1.2'", "bundle: version: \"1.2\" is not a version"},
    {"bad format", "'format': 1", "'format': 2", "bundle: format: must be 1"},
    {"bad bundle id", "'test-bundle'", "'Test_Bundle'", "bundle: bundle_id:"},
    {"bad published date", "'2026-01-15'", "'2026-02-30'", "bundle: published: not a date"},
    {"duplicate rule id", "'id': 'missing-labs'", "'id': 'egfr-low'",
     "rules[1] (egfr-low): id: duplicate rule id \"egfr-low\" (also rules[0])"},
    {"duplicate pathway id", "'id': 'thyroid'", "'id': 'ckd'",
     "pathways[1] (ckd): id: duplicate pathway id \"ckd\" (also pathways[0])"},
    {"duplicate data id (a duplicate key)", "'dysphagia': { 'flag': 'dysphagia' }",
     "'dysphagia': { 'flag': 'dysphagia' }, 'acr': { 'flag': 'x' }", "duplicate object key"},
    {"bad id syntax", "'id': 'thyroid'", "'id': 'Thyroid'", "pathways[1]: id: \"Thyroid\" is not an id"},
    {"reserved data id", "'dysphagia': { 'flag': 'dysphagia' }", "'age': { 'flag': 'dysphagia' }",
     "data.age: \"age\" and \"sex\" are built in"},
    {"zero unit factor", "'mg/mmol': 8.84", "'mg/mmol': 0",
     "bundle: units.acr.accept.mg/mmol: the factor must be positive"},
    {"negative unit factor", "'mg/mmol': 8.84", "'mg/mmol': -8.84", "the factor must be positive"},
    {"unit factor as text", "'mg/mmol': 8.84", "'mg/mmol': '8.84'", "the factor is not a number"},
    {"canonical unit not accepted", "'accept': { 'mg/g': 1, 'mg/mmol': 8.84 }",
     "'accept': { 'mg/mmol': 8.84 }",
     "units.acr.accept: must list the canonical unit \"mg/g\" with factor 1"},
    {"canonical factor not 1", "'mg/g': 1,", "'mg/g': 2,", "the canonical unit's factor must be 1"},
    {"unknown quantity", "'quantity': 'acr'", "'quantity': 'acrx'",
     "data.acr.observation.quantity: unknown quantity kind \"acrx\""},
    {"unit with a space", "'canonical': 'mg/g'", "'canonical': 'mg g'",
     "bundle: units.acr.canonical: \"mg g\" is not a unit"},
    {"unreachable rule", "'when': { 'latest': 'egfr', 'op': '<', 'value': 30 }", "'when': { 'all': [] }",
     "rules[1] (missing-labs): unreachable: rule \"egfr-low\" before it is always true"},
    {"a constant child does not make the rule constant",
     "'when': { 'latest': 'egfr', 'op': '<', 'value': 30 }",
     "'when': { 'not': { 'all': [ { 'latest': 'egfr', 'op': '<', 'value': 30 }, { 'all': [] } ] } }",
     NULL /* not constant: fine */},
    {"rule that can never be true", "'when': { 'latest': 'egfr', 'op': '<', 'value': 30 }",
     "'when': { 'any': [] }", "rules[0] (egfr-low): when: can never be true"},
    {"REFER without urgency", "'urgency': 'routine', ", "",
     "rules[0] (egfr-low): outcome REFER needs \"urgency\""},
    {"bad urgency", "'urgency': 'routine'", "'urgency': 'soon'", "rules[0] (egfr-low): urgency: must be"},
    {"WORKUP with steps", "'tests': ['eGFR', 'ACR']", "'tests': ['eGFR'], 'steps': ['x']",
     "rules[1] (missing-labs): steps: only an outcome MANAGE has steps"},
    {"WORKUP with no tests", "'tests': ['eGFR', 'ACR']", "'tests': []", "tests: must have 1..8 entries"},
    {"unknown outcome", "'outcome': 'WORKUP'", "'outcome': 'WAIT'", "outcome: \"WAIT\" is not REFER"},
    {"INSUFFICIENT needs unknown data", "'outcome': 'WORKUP', 'tests': ['eGFR', 'ACR']",
     "'outcome': 'INSUFFICIENT', 'needs': ['egfr', 'bmi']",
     "rules[1] (missing-labs): needs[1]: unknown data element \"bmi\""},
    {"bad ICD-10 range", "'from': 'N18.1'", "'from': 'N18.'",
     "applies.codes[0]: \"N18.\" is not an ICD-10-CM code"},
    {"ICD-10 range reversed", "'from': 'N18.1'", "'from': 'N19.1'",
     "applies.codes[0]: \"from\" N19.1 is after"},
    {"ICD-10 code and range", "'code': 'E04'", "'code': 'E04', 'from': 'E04.0'", "give either \"code\""},
    {"unknown code system", "'system': 'icd10cm', 'code': 'E04'", "'system': 'snomed', 'code': 'E04'",
     "system \"snomed\" is not supported"},
    {"bad LOINC", "'33914-3'", "'33914'", "data.egfr.observation.codes[0]: \"33914\" is not a LOINC code"},
    {"window out of range", "'window_days': 730", "'window_days': 4000",
     "data.egfr.window_days: must be 1..3650"},
    {"bad op", "'op': '<'", "'op': '=<'", "rules[0] (egfr-low): when.op: must be one of"},
    {"two kinds in a criterion", "'latest': 'egfr', 'op'", "'latest': 'egfr', 'flag': 'dysphagia', 'op'",
     "names both \"latest\" and \"flag\""},
    {"finding text without values", "'type': 'number'", "'type': 'text'", "data.size: missing \"values\""},
    {"age min above max", "'age': { 'min': 18 }", "'age': { 'min': 18, 'max': 10 }",
     "applies.age: min is above max"},
    {"not JSON", "'format': 1,", "'format': 1,,", "bundle: not valid JSON"},
    {"no pathways", "'pathways': [", "'pathways': [], 'x': [", "bundle: unknown key \"x\""},
};

static void test_bad_bundles(void **state)
{
    (void)state;
    for (size_t i = 0; i < BASE_ARRAY_LEN(BAD); i++) {
        const bad_case *c = &BAD[i];
        char *t = edit(c->from, c->to);
        gl_bundle *b = NULL;
        base_result r = gl_bundle_load(t, strlen(t), &b);
        if (!c->want) {
            if (!base_is_ok(r))
                fail_msg("%s: refused: %s", c->name, base_error_message());
            gl_bundle_free(b);
            free(t);
            continue;
        }
        if (base_is_ok(r))
            fail_msg("%s: loaded, want refused with \"%s\"", c->name, c->want);
        assert_null(b);
        if (r.err != BASE_ERR_INVALID)
            fail_msg("%s: error %s, want invalid", c->name, base_err_name(r.err));
        if (!strstr(base_error_message(), c->want))
            fail_msg("%s: message \"%s\" does not contain \"%s\"", c->name, base_error_message(), c->want);
        free(t);
    }
}

/* Nesting: 8 levels load, 9 are refused; 32 children load, 33 are refused. */
static void test_depth_and_width(void **state)
{
    (void)state;
    const char *leaf = "{ 'latest': 'egfr', 'op': '<', 'value': 30 }";
    for (int depth = 8; depth <= 9; depth++) {
        char when[1024] = "'when': ";
        for (int i = 1; i < depth; i++)
            strncat(when, "{ 'not': ", sizeof when - strlen(when) - 1);
        strncat(when, leaf, sizeof when - strlen(when) - 1);
        for (int i = 1; i < depth; i++)
            strncat(when, " }", sizeof when - strlen(when) - 1);
        char *t = edit("'when': { 'latest': 'egfr', 'op': '<', 'value': 30 }", when);
        gl_bundle *b = NULL;
        base_result r = gl_bundle_load(t, strlen(t), &b);
        if (depth == 8) {
            MUST(r);
            gl_bundle_free(b);
        } else {
            assert_int_equal(r.err, BASE_ERR_INVALID);
            assert_non_null(strstr(base_error_message(),
                                   "rules[0] (egfr-low): when.not.not.not.not.not.not.not.not: "
                                   "criteria nested deeper than 8"));
        }
        free(t);
    }
    for (int width = 32; width <= 33; width++) {
        char when[4096] = "'when': { 'any': [ ";
        for (int i = 0; i < width; i++) {
            if (i)
                strncat(when, ", ", sizeof when - strlen(when) - 1);
            strncat(when, leaf, sizeof when - strlen(when) - 1);
        }
        strncat(when, " ] }", sizeof when - strlen(when) - 1);
        char *t = edit("'when': { 'latest': 'egfr', 'op': '<', 'value': 30 }", when);
        gl_bundle *b = NULL;
        base_result r = gl_bundle_load(t, strlen(t), &b);
        if (width == 32) {
            MUST(r);
            gl_bundle_free(b);
        } else {
            assert_int_equal(r.err, BASE_ERR_INVALID);
            assert_non_null(strstr(base_error_message(), "when.any: must have 0..32 entries"));
        }
        free(t);
    }
}

static void test_oversize_and_files(void **state)
{
    (void)state;
    size_t n = GL_BUNDLE_MAX_BYTES + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    gl_bundle *b = NULL;
    base_result r = gl_bundle_load(big, n, &b);
    assert_int_equal(r.err, BASE_ERR_LIMIT);
    assert_null(b);

    char path[] = "/tmp/alma-test-bundle-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, big, n), (ssize_t)n);
    close(fd);
    r = gl_bundle_load_file(path, &b);
    assert_int_equal(r.err, BASE_ERR_LIMIT);

    char *text = dq(VALID);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    MUST(gl_bundle_load_file(path, &b));
    gl_bundle *b2 = load_ok(text);
    assert_string_equal(gl_bundle_hash(b), gl_bundle_hash(b2));
    gl_bundle_free(b);
    gl_bundle_free(b2);
    unlink(path);

    r = gl_bundle_load_file("/nonexistent/bundle.json", &b);
    assert_int_equal(r.err, BASE_ERR_IO);
    free(text);
    free(big);
}

/* The first bundle of the repository, when it is there, loads. */
static void test_repository_bundles(void **state)
{
    (void)state;
    const char *path = testenv_source_path("services/guideline/bundles/alma-referral-core-1.0.0.json");
    if (!path || access(path, R_OK) != 0)
        skip();
    gl_bundle *b = NULL;
    MUST(gl_bundle_load_file(path, &b));
    assert_string_equal(gl_bundle_id(b), "alma-referral-core");
    gl_bundle_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_loads),        cmocka_unit_test(test_hash_stable_and_sensitive),
        cmocka_unit_test(test_bad_bundles),        cmocka_unit_test(test_depth_and_width),
        cmocka_unit_test(test_oversize_and_files), cmocka_unit_test(test_repository_bundles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
