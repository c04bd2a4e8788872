/* Clinical vignettes for the first guideline bundle,
 * services/guideline/bundles/alma-referral-core-1.0.0.json.
 *
 * Every *.json file in tests/guideline/vignettes/ holds an array of vignettes (synthetic patients only):
 *
 *   [ { "name":   "CKD eGFR 27 (G4): refer",
 *       "input":  { the referral input: BUNDLE-FORMAT.md, "The referral input" },
 *       "expect": { "outcome":  "REFER",
 *                   "urgency":  "routine",
 *                   "pathway":  "ckd-nephrology",
 *                   "rule":     "ckd-egfr-below-30",
 *                   "fired":    ["ckd-egfr-below-30"],
 *                   "stale":    ["egfr"],
 *                   "unusable": ["acr"],
 *                   "other_pathways": ["gerd-gastroenterology"] } }, ... ]
 *
 * - name: unique across all files; every failure message starts with it.
 * - outcome: NO_PATHWAY, REFER, WORKUP, MANAGE or INSUFFICIENT. pathway and rule: the chosen pathway and the
 *   deciding rule id ("default" when no rule fired); both "" for NO_PATHWAY.
 * - urgency (optional): checked when present.
 * - fired, stale, other_pathways (optional): each listed id must be among the recommendation's fired rules,
 *   stale data ids, other pathways; unusable (optional): each data id must be in its unusable list.
 *
 * For each vignette the test evaluates the input against the bundle and checks the expectations, then
 * evaluates it again and checks that the recommendation's JSON is byte-identical. It also loads the bundle
 * twice and checks that the content hash is the same. Every failing vignette is reported by name before the
 * test fails, so one run shows them all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "engine.h"
#include "testenv.h"
#include "vignette_files.h"

/* Whether the array `arr` (of strings, or of objects whose `key` is a string) holds `want`. */
static int array_has(const json_t *arr, const char *key, const char *want)
{
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v)
    {
        const json_t *s = key ? json_object_get(v, key) : v;
        if (json_is_string(s) && strcmp(json_string_value(s), want) == 0)
            return 1;
    }
    return 0;
}

/* Each string of expect[field] must be in the recommendation's `field` (or its objects' `key`). */
static int check_members(const char *name, const json_t *expect, const json_t *rec, const char *field,
                         const char *key)
{
    const json_t *want = json_object_get(expect, field);
    if (!want)
        return 0;
    const json_t *got = json_object_get(rec, field);
    int bad = 0;
    size_t i;
    const json_t *w;
    json_array_foreach(want, i, w)
    {
        if (!json_is_array(got) || !array_has(got, key, json_string_value(w))) {
            fprintf(stderr, "vignette \"%s\": %s lacks \"%s\"\n", name, field, json_string_value(w));
            bad = 1;
        }
    }
    return bad;
}

static const char *str_or_empty(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Evaluate one vignette; returns the number of failed checks (0 when it passes). Records "pathway/rule" of
 * the deciding rule in `decided`. */
static int run_vignette(const gl_bundle *b, const json_t *v, json_t *decided)
{
    const char *name = str_or_empty(v, "name");
    const json_t *input = json_object_get(v, "input");
    const json_t *expect = json_object_get(v, "expect");
    if (!*name || !json_is_object(input) || !json_is_object(expect)) {
        fprintf(stderr, "vignette \"%s\": needs name, input and expect\n", name);
        return 1;
    }
    char *text = json_dumps(input, JSON_COMPACT);
    assert_non_null(text);
    size_t len = strlen(text);

    gl_summary s1, s2;
    char *json1 = NULL, *json2 = NULL;
    size_t len1 = 0, len2 = 0;
    base_result r = gl_evaluate(b, text, len, &s1, &json1, &len1);
    if (!base_is_ok(r)) {
        fprintf(stderr, "vignette \"%s\": evaluate failed: %s: %s\n", name, base_err_name(r.err),
                base_error_message());
        free(text);
        return 1;
    }
    int bad = 0;
    r = gl_evaluate(b, text, len, &s2, &json2, &len2);
    if (!base_is_ok(r) || len1 != len2 || memcmp(json1, json2, len1) != 0) {
        fprintf(stderr, "vignette \"%s\": a second evaluation gave a different recommendation\n", name);
        bad++;
    }
    /* The service's path (gl_evaluate_tree over the parsed input): the same bytes, and the canonical input
     * that gl_canonical_json gives for the text. */
    json_t *tree = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    char *json3 = NULL, *canon3 = NULL, *canon_text = NULL;
    size_t len3 = 0, clen3 = 0, clen = 0;
    r = tree ? gl_evaluate_tree(b, tree, &s2, &json3, &len3, &canon3, &clen3)
             : base_fail(BASE_ERR_INVALID, "x");
    if (!base_is_ok(r) || len1 != len3 || memcmp(json1, json3, len1) != 0 ||
        !base_is_ok(gl_canonical_json(text, len, GL_INPUT_MAX_BYTES, &canon_text, &clen)) || clen != clen3 ||
        memcmp(canon_text, canon3, clen) != 0 || strcmp(s1.input_hash, s2.input_hash) != 0) {
        fprintf(stderr, "vignette \"%s\": gl_evaluate_tree differs from gl_evaluate\n", name);
        bad++;
    }
    json_decref(tree);
    free(json3);
    free(canon3);
    free(canon_text);

    const char *want_outcome = str_or_empty(expect, "outcome");
    const char *want_pathway = str_or_empty(expect, "pathway");
    const char *want_rule = str_or_empty(expect, "rule");
    const char *got_outcome = gl_outcome_name(s1.outcome);
    char key[160];
    snprintf(key, sizeof key, "%s/%s", s1.pathway, s1.rule);
    json_object_set_new(decided, key, json_true());
    if (strcmp(got_outcome, want_outcome) != 0 || strcmp(s1.pathway, want_pathway) != 0 ||
        strcmp(s1.rule, want_rule) != 0) {
        fprintf(stderr, "vignette \"%s\": got %s %s/%s, want %s %s/%s\n", name, got_outcome, s1.pathway,
                s1.rule, want_outcome, want_pathway, want_rule);
        bad++;
    }
    const json_t *urgency = json_object_get(expect, "urgency");
    if (urgency && strcmp(s1.urgency, json_string_value(urgency)) != 0) {
        fprintf(stderr, "vignette \"%s\": urgency \"%s\", want \"%s\"\n", name, s1.urgency,
                json_string_value(urgency));
        bad++;
    }

    json_error_t err;
    json_t *rec = json_loadb(json1, len1, 0, &err);
    if (!rec) {
        fprintf(stderr, "vignette \"%s\": the recommendation is not JSON: %s\n", name, err.text);
        bad++;
    } else {
        if (strcmp(str_or_empty(rec, "outcome"), got_outcome) != 0 ||
            strcmp(str_or_empty(rec, "input_hash"), s1.input_hash) != 0) {
            fprintf(stderr, "vignette \"%s\": the summary and the recommendation JSON disagree\n", name);
            bad++;
        }
        bad += check_members(name, expect, rec, "fired", "rule");
        bad += check_members(name, expect, rec, "stale", NULL);
        bad += check_members(name, expect, rec, "unusable", "data");
        bad += check_members(name, expect, rec, "other_pathways", NULL);
        json_decref(rec);
    }
    if (bad)
        fprintf(stderr, "vignette \"%s\": recommendation %s\n", name, json1);
    free(json1);
    free(json2);
    free(text);
    return bad;
}

/* Every rule of every pathway, and every pathway's default, must decide at least one vignette: a rule added
 * to the bundle without a vignette fails here. Returns the number of rules no vignette reaches. */
static int check_coverage(const json_t *decided)
{
    json_error_t err;
    json_t *bundle = json_load_file(testenv_source_path(VIGNETTE_BUNDLE_PATH), 0, &err);
    if (!bundle)
        fail_msg("bundle %s: %s", VIGNETTE_BUNDLE_PATH, err.text);
    int missing = 0;
    size_t i, j;
    const json_t *p, *r;
    json_array_foreach(json_object_get(bundle, "pathways"), i, p)
    {
        const char *pathway = str_or_empty(p, "id");
        char key[160];
        json_array_foreach(json_object_get(p, "rules"), j, r)
        {
            snprintf(key, sizeof key, "%s/%s", pathway, str_or_empty(r, "id"));
            if (!json_object_get(decided, key)) {
                fprintf(stderr, "no vignette is decided by rule %s\n", key);
                missing++;
            }
        }
        snprintf(key, sizeof key, "%s/default", pathway);
        if (!json_object_get(decided, key)) {
            fprintf(stderr, "no vignette is decided by %s\n", key);
            missing++;
        }
    }
    json_decref(bundle);
    return missing;
}

static void test_guideline_vignettes(void **state)
{
    (void)state;
    gl_bundle *b = vignette_bundle();
    assert_string_equal(gl_bundle_id(b), "alma-referral-core");
    assert_string_equal(gl_bundle_version(b), "1.0.0");

    char dir[1024];
    char *files[VIGNETTE_FILES_MAX];
    size_t nfiles = vignette_files(dir, files);
    assert_true(nfiles > 0);

    json_t *seen = json_object();    /* vignette names, to refuse duplicates */
    json_t *decided = json_object(); /* "pathway/rule" of every deciding rule */
    size_t total = 0;
    int failed = 0;
    for (size_t f = 0; f < nfiles; f++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        json_error_t err;
        json_t *arr = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_array(arr)) {
            fprintf(stderr, "%s: not a JSON array of vignettes (%s, line %d)\n", files[f], err.text,
                    err.line);
            failed++;
            json_decref(arr);
            continue;
        }
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
        {
            const char *name = str_or_empty(v, "name");
            if (json_object_get(seen, name)) {
                fprintf(stderr, "%s: duplicate vignette name \"%s\"\n", files[f], name);
                failed++;
            }
            json_object_set_new(seen, name, json_true());
            if (run_vignette(b, v, decided))
                failed++;
            total++;
        }
        json_decref(arr);
        free(files[f]);
    }
    json_decref(seen);
    failed += check_coverage(decided);
    json_decref(decided);
    fprintf(stderr, "%zu vignettes in %zu files, %d failed\n", total, nfiles, failed);
    gl_bundle_free(b);
    assert_true(total >= VIGNETTES_MIN);
    assert_int_equal(failed, 0);
}

static void test_guideline_bundle_hash_stable(void **state)
{
    (void)state;
    gl_bundle *a = vignette_bundle();
    gl_bundle *b = vignette_bundle();
    assert_int_equal(strlen(gl_bundle_hash(a)), 64);
    assert_string_equal(gl_bundle_hash(a), gl_bundle_hash(b));
    gl_bundle_free(a);
    gl_bundle_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guideline_vignettes),
        cmocka_unit_test(test_guideline_bundle_hash_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
