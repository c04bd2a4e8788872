/* services/guideline/guidance.h: every clinical vignette (every *.json file of tests/guideline/vignettes/)
 * evaluated against services/guideline/bundles/alma-referral-core-1.0.0.json, then built as a FHIR R4
 * GuidanceResponse and a CDS Hooks card. Checked with jansson (status per outcome, dataRequirement for
 * INSUFFICIENT, the output Parameters, indicator per urgency, summary length, card uuid round trip, override
 * reasons, suggestions), built twice for determinism, and every GuidanceResponse validated against HL7's FHIR
 * R4 JSON schema with the repository's ajv validator (deploy/fhir-schema/validate-fhir.js --type
 * GuidanceResponse), which must also reject broken copies. Bad input is refused with a message that holds no
 * value, and nothing is emitted. All data is made up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bundle.h"
#include "engine.h"
#include "guidance.h"
#include "testenv.h"
#include "testfhir.h"
#include "testproc.h"
#include "vignette_files.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANT    "tenant-a"
#define PT        "pt_0123456789abcdef0123456789abcdef"
#define CLINICIAN "cl_fedcba9876543210fedcba9876543210"
/* 2026-11-23T09:08:07.654321Z */
#define NOW_US INT64_C(1795424887654321)
#define NOW    "2026-11-23T09:08:07.654321Z"

/* One vignette evaluated, with the review fields a stored review would carry. */
typedef struct evaluated {
    char name[256];
    char review_id[36];
    char referral_id[32];
    const char *reason_codes[GL_FHIR_MAX_REASON_CODES];
    char specialty[65];
    gl_summary sum;
    char *rec; /* the recommendation JSON */
    size_t rec_len;
    json_t *rec_tree;
    gl_fhir_review rv;
    json_t *input; /* borrowed from the vignettes array */
} evaluated;

static void evaluate(const gl_bundle *b, const json_t *v, size_t index, evaluated *ev)
{
    memset(ev, 0, sizeof *ev);
    snprintf(ev->name, sizeof ev->name, "%s", json_string_value(json_object_get(v, "name")));
    ev->input = json_object_get(v, "input");
    char *text = json_dumps(ev->input, JSON_COMPACT);
    assert_non_null(text);
    base_result r = gl_evaluate(b, text, strlen(text), &ev->sum, &ev->rec, &ev->rec_len);
    free(text);
    if (!base_is_ok(r))
        fail_msg("vignette \"%s\": evaluate failed: %s", ev->name, base_error_message());
    ev->rec_tree = json_loadb(ev->rec, ev->rec_len, 0, NULL);
    assert_non_null(ev->rec_tree);
    snprintf(ev->review_id, sizeof ev->review_id, "rv_%032zx", index + 0xabc0);
    snprintf(ev->referral_id, sizeof ev->referral_id, "ref-%03zu", index);
    const json_t *codes = json_object_get(ev->input, "reason_codes");
    size_t i, n_codes = 0;
    const json_t *c;
    json_array_foreach(codes, i, c)
    {
        assert_true(i < GL_FHIR_MAX_REASON_CODES);
        ev->reason_codes[n_codes++] = json_string_value(c);
    }
    snprintf(ev->specialty, sizeof ev->specialty, "%s",
             json_string_value(json_object_get(ev->input, "specialty")));
    ev->rv = (gl_fhir_review){.review_id = ev->review_id,
                              .tenant_id = TENANT,
                              .referral_id = ev->referral_id,
                              .patient_ref = PT,
                              .clinician_id = CLINICIAN,
                              .created_us = NOW_US,
                              .engine_version = GL_ENGINE_VERSION,
                              .bundle_id = gl_bundle_id(b),
                              .bundle_version = gl_bundle_version(b),
                              .bundle_hash = gl_bundle_hash(b),
                              .input_hash = ev->sum.input_hash,
                              .reason_codes = n_codes ? ev->reason_codes : NULL,
                              .n_reason_codes = n_codes,
                              .specialty = ev->specialty};
}

static void evaluated_clear(evaluated *ev)
{
    free(ev->rec);
    json_decref(ev->rec_tree);
}

typedef base_result (*builder)(const gl_fhir_review *, const char *, size_t, char **, size_t *);

/* Builds twice: same bytes, and the length agrees. */
static char *build_twice(const evaluated *ev, builder fn, const char *what)
{
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    base_result r = fn(&ev->rv, ev->rec, ev->rec_len, &a, &alen);
    if (!base_is_ok(r))
        fail_msg("vignette \"%s\": %s failed: %s: %s", ev->name, what, base_err_name(r.err),
                 base_error_message());
    r = fn(&ev->rv, ev->rec, ev->rec_len, &b, &blen);
    assert_true(base_is_ok(r));
    if (alen != strlen(a) || alen != blen || memcmp(a, b, alen) != 0)
        fail_msg("vignette \"%s\": %s is not deterministic", ev->name, what);
    free(b);
    return a;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* The output Parameters' parameters named `name`, counted; *ret_first: the first one. */
static size_t params_named(const json_t *params, const char *name, const json_t **ret_first)
{
    size_t i, n = 0;
    const json_t *p;
    json_array_foreach(params, i, p)
    {
        if (strcmp(jstr(p, "name"), name) == 0) {
            if (n++ == 0 && ret_first)
                *ret_first = p;
        }
    }
    return n;
}

static void check_guidance_response(const evaluated *ev, const char *json)
{
    const char *name = ev->name;
    json_error_t err;
    json_t *gr = json_loads(json, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(gr))
        fail_msg("vignette \"%s\": GuidanceResponse is not a JSON object: %s", name, err.text);
    const char *outcome = gl_outcome_name(ev->sum.outcome);
    const char *want_status = ev->sum.outcome == GL_INSUFFICIENT ? "data-required" : "success";
    char want_id[40], want_module[128], want_subject[64];
    snprintf(want_id, sizeof want_id, "rv-%s", ev->review_id + 3);
    snprintf(want_module, sizeof want_module, "urn:alma:guideline-bundle:alma-referral-core|1.0.0");
    snprintf(want_subject, sizeof want_subject, "Patient/pt-%s", PT + 3);
    if (strcmp(jstr(gr, "resourceType"), "GuidanceResponse") != 0 ||
        strcmp(jstr(gr, "status"), want_status) != 0 || strcmp(jstr(gr, "id"), want_id) != 0 ||
        strcmp(jstr(gr, "moduleCanonical"), want_module) != 0 ||
        strcmp(jstr(json_object_get(gr, "subject"), "reference"), want_subject) != 0 ||
        strcmp(jstr(gr, "occurrenceDateTime"), NOW) != 0)
        fail_msg("vignette \"%s\" (%s): GuidanceResponse header fields wrong: %s", name, outcome, json);
    const json_t *ident = json_array_get(json_object_get(gr, "identifier"), 0);
    const json_t *req = json_object_get(gr, "requestIdentifier");
    if (strcmp(jstr(ident, "system"), GL_FHIR_REVIEW_SYSTEM) != 0 ||
        strcmp(jstr(ident, "value"), ev->review_id) ||
        strcmp(jstr(req, "system"), "urn:alma:tenant:" TENANT ":referral") != 0 ||
        strcmp(jstr(req, "value"), ev->referral_id) != 0)
        fail_msg("vignette \"%s\": identifier or requestIdentifier wrong: %s", name, json);
    const json_t *perf = json_object_get(gr, "performer");
    if (strcmp(jstr(perf, "type"), "Device") != 0 ||
        strcmp(jstr(json_object_get(perf, "identifier"), "value"), GL_ENGINE_VERSION) != 0)
        fail_msg("vignette \"%s\": performer wrong: %s", name, json);

    /* reasonCode: the input's reason codes, in order, as ICD-10-CM */
    const json_t *reasons = json_object_get(gr, "reasonCode");
    if (json_array_size(reasons) != ev->rv.n_reason_codes)
        fail_msg("vignette \"%s\": %zu reasonCode, want %zu", name, json_array_size(reasons),
                 ev->rv.n_reason_codes);
    for (size_t i = 0; i < ev->rv.n_reason_codes; i++) {
        const json_t *c = json_array_get(json_object_get(json_array_get(reasons, i), "coding"), 0);
        if (strcmp(jstr(c, "system"), GL_FHIR_ICD10CM_SYSTEM) != 0 ||
            strcmp(jstr(c, "code"), ev->reason_codes[i]))
            fail_msg("vignette \"%s\": reasonCode[%zu] wrong", name, i);
    }

    /* dataRequirement: exactly for INSUFFICIENT, one per need, in order */
    const json_t *needs = json_object_get(ev->rec_tree, "needs");
    const json_t *dr = json_object_get(gr, "dataRequirement");
    if (ev->sum.outcome == GL_INSUFFICIENT) {
        if (json_array_size(needs) == 0 || json_array_size(dr) != json_array_size(needs))
            fail_msg("vignette \"%s\": INSUFFICIENT needs %zu dataRequirement, has %zu", name,
                     json_array_size(needs), json_array_size(dr));
        for (size_t i = 0; i < json_array_size(needs); i++) {
            const json_t *d = json_array_get(dr, i);
            const json_t *f = json_array_get(json_object_get(d, "codeFilter"), 0);
            const json_t *c = json_array_get(json_object_get(f, "code"), 0);
            if (strcmp(jstr(d, "type"), "Any") != 0 || strcmp(jstr(f, "path"), "code") != 0 ||
                strcmp(jstr(c, "system"), GL_FHIR_DATA_SYSTEM) != 0 ||
                strcmp(jstr(c, "code"), json_string_value(json_array_get(needs, i))) != 0)
                fail_msg("vignette \"%s\": dataRequirement[%zu] does not name need %zu", name, i, i);
        }
    } else if (dr) {
        fail_msg("vignette \"%s\": dataRequirement with %s", name, outcome);
    }

    /* The contained Parameters: outcome, urgency, pathway, rule, fired, citations, hashes */
    const json_t *contained = json_object_get(gr, "contained");
    const json_t *params = json_object_get(json_array_get(contained, 0), "parameter");
    const json_t *p = NULL;
    if (strcmp(jstr(json_array_get(contained, 0), "resourceType"), "Parameters") != 0 ||
        strcmp(jstr(json_array_get(contained, 0), "id"), "output") != 0 ||
        strcmp(jstr(json_object_get(gr, "outputParameters"), "reference"), "#output") != 0)
        fail_msg("vignette \"%s\": no contained Parameters #output", name);
    if (params_named(params, "outcome", &p) != 1 || strcmp(jstr(p, "valueCode"), outcome) != 0)
        fail_msg("vignette \"%s\": outcome parameter wrong", name);
    if (params_named(params, "input_hash", &p) != 1 ||
        strcmp(jstr(p, "valueString"), ev->sum.input_hash) != 0)
        fail_msg("vignette \"%s\": input_hash parameter wrong", name);
    if (params_named(params, "bundle_hash", &p) != 1 ||
        strcmp(jstr(p, "valueString"), ev->rv.bundle_hash) != 0)
        fail_msg("vignette \"%s\": bundle_hash parameter wrong", name);
    if (params_named(params, "urgency", &p) != (*ev->sum.urgency ? 1u : 0u) ||
        (*ev->sum.urgency && strcmp(jstr(p, "valueCode"), ev->sum.urgency) != 0))
        fail_msg("vignette \"%s\": urgency parameter wrong", name);
    if (params_named(params, "rule", &p) != (*ev->sum.rule ? 1u : 0u) ||
        (*ev->sum.rule && strcmp(jstr(p, "valueCode"), ev->sum.rule) != 0))
        fail_msg("vignette \"%s\": rule parameter wrong", name);
    if (params_named(params, "pathway", &p) != (*ev->sum.pathway ? 1u : 0u) ||
        (*ev->sum.pathway && strcmp(jstr(p, "valueCode"), ev->sum.pathway) != 0))
        fail_msg("vignette \"%s\": pathway parameter wrong", name);
    if (params_named(params, "fired", NULL) != ev->sum.fired ||
        params_named(params, "citations", NULL) !=
            json_array_size(json_object_get(ev->rec_tree, "citations")))
        fail_msg("vignette \"%s\": fired or citations parameters wrong", name);
    if (ev->sum.fired) {
        params_named(params, "fired", &p);
        const json_t *rule = json_array_get(json_object_get(p, "part"), 0);
        const json_t *first = json_array_get(json_object_get(ev->rec_tree, "fired"), 0);
        if (strcmp(jstr(rule, "valueCode"), jstr(first, "rule")) != 0 ||
            json_array_size(json_object_get(p, "part")) !=
                1 + json_array_size(json_object_get(first, "values")))
            fail_msg("vignette \"%s\": the first fired parameter does not match", name);
    }
    bool no_pathway = ev->sum.outcome == GL_NO_PATHWAY;
    if (no_pathway != (json_object_get(gr, "evaluationMessage") != NULL) ||
        json_array_size(contained) != (no_pathway ? 2u : 1u))
        fail_msg("vignette \"%s\": evaluationMessage only and always for NO_PATHWAY", name);
    const char *explain = jstr(ev->rec_tree, "explain");
    if ((*explain != '\0') != (json_object_get(gr, "note") != NULL) ||
        (*explain && strcmp(jstr(json_array_get(json_object_get(gr, "note"), 0), "text"), explain) != 0))
        fail_msg("vignette \"%s\": note is not the explanation", name);
    json_decref(gr);
}

/* Characters of UTF-8 text. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static void check_card(const evaluated *ev, const char *json)
{
    const char *name = ev->name;
    json_error_t err;
    json_t *card = json_loads(json, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(card))
        fail_msg("vignette \"%s\": the card is not a JSON object: %s", name, err.text);
    const char *summary = jstr(card, "summary");
    if (!*summary || strlen(summary) > GL_CDS_SUMMARY_MAX || utf8_chars(summary) >= 140)
        fail_msg("vignette \"%s\": summary empty or 140 characters or more: \"%s\"", name, summary);
    const char *want = "info";
    if (ev->sum.outcome == GL_REFER && strcmp(ev->sum.urgency, "emergency") == 0)
        want = "critical";
    else if (ev->sum.outcome == GL_REFER && strcmp(ev->sum.urgency, "urgent") == 0)
        want = "warning";
    if (strcmp(jstr(card, "indicator"), want) != 0)
        fail_msg("vignette \"%s\": indicator %s, want %s", name, jstr(card, "indicator"), want);
    if (ev->sum.outcome == GL_REFER && strncmp(summary, "Refer to ", 9) != 0)
        fail_msg("vignette \"%s\": a REFER summary starts \"Refer to\": \"%s\"", name, summary);

    /* uuid: the review id, and back */
    char uuid[37], back[36];
    assert_true(base_is_ok(gl_cds_card_uuid(ev->review_id, uuid)));
    if (strcmp(jstr(card, "uuid"), uuid) != 0 || !base_is_ok(gl_cds_review_id(jstr(card, "uuid"), back)) ||
        strcmp(back, ev->review_id) != 0)
        fail_msg("vignette \"%s\": card uuid does not map back to the review id", name);

    /* source: the deciding rule's citation */
    const json_t *source = json_object_get(card, "source");
    const json_t *cite = json_array_get(json_object_get(ev->rec_tree, "citations"), 0);
    if (!*jstr(source, "label") || (cite && !strstr(jstr(source, "label"), jstr(cite, "guideline"))) ||
        (cite && !strstr(jstr(source, "label"), jstr(cite, "section"))))
        fail_msg("vignette \"%s\": source.label is not the deciding citation", name);
    if (*ev->sum.pathway && strcmp(jstr(json_object_get(source, "topic"), "code"), ev->sum.pathway) != 0)
        fail_msg("vignette \"%s\": source.topic is not the pathway", name);
    const char *detail = jstr(card, "detail");
    if (!*detail ||
        (*ev->sum.rule && strcmp(ev->sum.rule, "default") != 0 && !strstr(detail, "Rules that fired")))
        fail_msg("vignette \"%s\": detail lacks the fired rules", name);

    /* suggestions: the tests of a WORKUP (any), the referral of a REFER (at most one), else none */
    const json_t *sugg = json_object_get(card, "suggestions");
    size_t want_sugg = ev->sum.outcome == GL_WORKUP  ? json_array_size(json_object_get(ev->rec_tree, "tests"))
                       : ev->sum.outcome == GL_REFER ? 1
                                                     : 0;
    const char *want_sel = ev->sum.outcome == GL_WORKUP  ? "any"
                           : ev->sum.outcome == GL_REFER ? "at-most-one"
                                                         : "";
    if (json_array_size(sugg) != want_sugg || strcmp(jstr(card, "selectionBehavior"), want_sel) != 0)
        fail_msg("vignette \"%s\": %zu suggestions (%s), want %zu (%s)", name, json_array_size(sugg),
                 jstr(card, "selectionBehavior"), want_sugg, want_sel);
    for (size_t i = 0; i < json_array_size(sugg); i++) {
        const char *u = jstr(json_array_get(sugg, i), "uuid");
        if (strlen(u) != 36 || u[14] != '8' || !*jstr(json_array_get(sugg, i), "label"))
            fail_msg("vignette \"%s\": suggestion %zu needs a label and a version-8 uuid", name, i);
    }

    /* overrideReasons: the six OverrideReason codes, each mapping to its enum value */
    const json_t *reasons = json_object_get(card, "overrideReasons");
    if (json_array_size(reasons) != 6)
        fail_msg("vignette \"%s\": %zu overrideReasons, want 6", name, json_array_size(reasons));
    for (size_t i = 0; i < 6; i++) {
        const json_t *c = json_array_get(reasons, i);
        if (strcmp(jstr(c, "system"), GL_CDS_OVERRIDE_SYSTEM) != 0 || !*jstr(c, "display") ||
            gl_cds_override_reason(jstr(c, "code")) != (int)i + 1)
            fail_msg("vignette \"%s\": overrideReasons[%zu] wrong", name, i);
    }
    json_decref(card);
}

/* ---------------------------------------------------------------------------------------------------------
 * FHIR R4 JSON schema (ajv), as test_vault_fhir uses it. */

static void ndjson_add(char **text, size_t *len, const char *json)
{
    size_t add = strlen(json);
    char *grown = realloc(*text, *len + add + 2);
    assert_non_null(grown);
    memcpy(grown + *len, json, add);
    grown[*len + add] = '\n';
    grown[*len + add + 1] = '\0';
    *text = grown;
    *len += add + 1;
}

static void ndjson_add_tree(char **text, size_t *len, json_t *tree)
{
    char *line = json_dumps(tree, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(line);
    ndjson_add(text, len, line);
    free(line);
}

/* Each breaks one copy of a GuidanceResponse; the validator must name the place. */
typedef struct breakage {
    void (*apply)(json_t *gr);
    const char *expect; /* in the validator's output, after "line N: " */
} breakage;

static void bad_status(json_t *gr)
{
    json_object_set_new(gr, "status", json_string("completed"));
}
static void bad_occurrence(json_t *gr)
{
    json_object_set_new(gr, "occurrenceDateTime", json_string("2026-11-23 09:08:07Z"));
}
static void id_with_underscore(json_t *gr)
{
    json_object_set_new(gr, "id", json_string("rv_0123"));
}
static void subject_as_string(json_t *gr)
{
    json_object_set_new(gr, "subject", json_string("Patient/pt-0123"));
}
static void unknown_member(json_t *gr)
{
    json_object_set_new(gr, "outcome", json_string("REFER"));
}
static void empty_note(json_t *gr)
{
    json_object_set_new(gr, "note", json_pack("[{s:s}]", "text", ""));
}
static void parameter_value_mistyped(json_t *gr)
{
    json_t *params = json_object_get(json_array_get(json_object_get(gr, "contained"), 0), "parameter");
    json_object_set_new(json_array_get(params, 0), "valueCode", json_integer(1));
}

static void validate_all(const char *ndjson, size_t n)
{
    char path[TESTPROC_PATH_MAX];
    snprintf(path, sizeof path, "%s", testproc_work_path("guidance.ndjson"));
    testfhir_write_file(path, ndjson);
    char *out = NULL;
    int rc = testfhir_validate("GuidanceResponse", path, &out);
    if (rc != 0)
        fail_msg("FHIR R4 schema validation of the GuidanceResponses failed:\n%s", out);
    char want[128];
    snprintf(want, sizeof want, ": %zu GuidanceResponse resource(s) valid against FHIR R4", n);
    if (!strstr(out, want))
        fail_msg("the validator did not report all %zu GuidanceResponses valid:\n%s", n, out);
    fputs(out, stdout);
    free(out);
}

static void validate_broken(const char *valid)
{
    static const breakage broken[] = {
        {bad_status, "/status: must be equal to one of the allowed values"},
        {bad_occurrence, "/occurrenceDateTime: must match pattern"},
        {id_with_underscore, "/id: must match pattern"},
        {subject_as_string, "/subject: must be object"},
        {unknown_member, "/: must NOT have additional properties: 'outcome'"},
        {empty_note, "/note/0/text: must match pattern"},
        {parameter_value_mistyped, "/contained/0"},
    };
    char *text = NULL;
    size_t len = 0;
    ndjson_add(&text, &len, valid);
    for (size_t i = 0; i < BASE_ARRAY_LEN(broken); i++) {
        json_t *gr = json_loads(valid, 0, NULL);
        assert_non_null(gr);
        broken[i].apply(gr);
        ndjson_add_tree(&text, &len, gr);
        json_decref(gr);
    }
    char path[TESTPROC_PATH_MAX];
    snprintf(path, sizeof path, "%s", testproc_work_path("broken.ndjson"));
    testfhir_write_file(path, text);
    free(text);
    const char *expect[BASE_ARRAY_LEN(broken)];
    for (size_t i = 0; i < BASE_ARRAY_LEN(broken); i++)
        expect[i] = broken[i].expect;
    testfhir_expect_invalid("GuidanceResponse", path, expect, BASE_ARRAY_LEN(broken));
}

/* Every vignette: both documents built, checked, deterministic; every GuidanceResponse schema-valid. */
static void test_vignettes(void **state)
{
    (void)state;
    gl_bundle *b = vignette_bundle();
    json_t *all = vignettes_all();
    size_t n = json_array_size(all);
    size_t by_outcome[5] = {0}, by_indicator[3] = {0};
    char *ndjson = NULL, *insufficient = NULL, *no_pathway = NULL;
    size_t ndjson_len = 0;
    for (size_t i = 0; i < n; i++) {
        evaluated ev;
        evaluate(b, json_array_get(all, i), i, &ev);
        char *gr = build_twice(&ev, gl_fhir_guidance_response, "gl_fhir_guidance_response");
        char *card = build_twice(&ev, gl_cds_card, "gl_cds_card");
        check_guidance_response(&ev, gr);
        check_card(&ev, card);
        ndjson_add(&ndjson, &ndjson_len, gr);
        by_outcome[ev.sum.outcome]++;
        json_t *c = json_loads(card, 0, NULL);
        const char *ind = jstr(c, "indicator");
        by_indicator[strcmp(ind, "critical") == 0 ? 2 : strcmp(ind, "warning") == 0 ? 1 : 0]++;
        json_decref(c);
        if (ev.sum.outcome == GL_INSUFFICIENT && !insufficient) {
            insufficient = strdup(gr);
            printf("example INSUFFICIENT GuidanceResponse (%s):\n%s\nits card:\n%s\n", ev.name, gr, card);
        }
        if (ev.sum.outcome == GL_NO_PATHWAY && !no_pathway)
            no_pathway = strdup(gr);
        free(gr);
        free(card);
        evaluated_clear(&ev);
    }
    printf(
        "%zu vignettes: NO_PATHWAY %zu, REFER %zu, WORKUP %zu, MANAGE %zu, INSUFFICIENT %zu; cards info %zu, "
        "warning %zu, critical %zu\n",
        n, by_outcome[GL_NO_PATHWAY], by_outcome[GL_REFER], by_outcome[GL_WORKUP], by_outcome[GL_MANAGE],
        by_outcome[GL_INSUFFICIENT], by_indicator[0], by_indicator[1], by_indicator[2]);
    for (size_t o = 0; o < 5; o++)
        if (by_outcome[o] == 0)
            fail_msg("no vignette has outcome %s: the mapping of that outcome is untested",
                     gl_outcome_name((gl_outcome)o));
    if (by_indicator[1] == 0 || by_indicator[2] == 0)
        fail_msg("no vignette gives a warning or a critical card");
    validate_all(ndjson, n);
    assert_non_null(insufficient);
    validate_broken(insufficient);
    free(insufficient);
    free(no_pathway);
    free(ndjson);
    json_decref(all);
    gl_bundle_free(b);
}

/* ---------------------------------------------------------------------------------------------------------
 * Refusals */

#define SECRET "SECRET-VALUE-42"

static void expect_refused(const gl_fhir_review *rv, const char *rec, size_t len, base_err want,
                           const char *why)
{
    builder fns[] = {gl_fhir_guidance_response, gl_cds_card};
    for (size_t f = 0; f < 2; f++) {
        char *out = (char *)"untouched";
        size_t out_len = 12345;
        base_result r = fns[f](rv, rec, len, &out, &out_len);
        if (r.err != want)
            fail_msg("%s: got %s (%s), want %s", why, base_err_name(r.err), base_error_message(),
                     base_err_name(want));
        if (strcmp(out, "untouched") != 0 || out_len != 12345)
            fail_msg("%s: an output was written on failure", why);
        const char *msg = base_error_message();
        if (!*msg || strstr(msg, SECRET) || strstr(msg, "SECRET"))
            fail_msg("%s: the message is empty or holds a value: %s", why, msg);
    }
}

/* A recommendation changed by `edit` (set key to a JSON value, or delete it when value is NULL). */
static char *edited(const char *rec, const char *key, const char *value)
{
    json_t *t = json_loads(rec, 0, NULL);
    assert_non_null(t);
    if (value)
        json_object_set_new(t, key, json_loads(value, JSON_DECODE_ANY, NULL));
    else
        json_object_del(t, key);
    char *s = json_dumps(t, JSON_COMPACT);
    json_decref(t);
    assert_non_null(s);
    return s;
}

static void test_refusals(void **state)
{
    (void)state;
    gl_bundle *b = vignette_bundle();
    json_t *all = vignettes_all();
    evaluated ev;
    evaluate(b, json_array_get(all, 1), 1, &ev);
    const char *rec = ev.rec;
    size_t len = ev.rec_len;

    /* The recommendation */
    expect_refused(&ev.rv, NULL, 0, BASE_ERR_INVALID, "NULL recommendation");
    expect_refused(&ev.rv, "", 0, BASE_ERR_INVALID, "empty recommendation");
    expect_refused(&ev.rv, "not json " SECRET, strlen("not json " SECRET), BASE_ERR_INVALID, "not JSON");
    expect_refused(&ev.rv, "[1,2]", 5, BASE_ERR_INVALID, "an array");
    expect_refused(&ev.rv, rec, len - 1, BASE_ERR_INVALID, "truncated");
    size_t big_len = GL_FHIR_MAX_RECOMMENDATION + 1;
    char *big = malloc(big_len);
    assert_non_null(big);
    memset(big, ' ', big_len);
    memcpy(big, rec, len);
    expect_refused(&ev.rv, big, big_len, BASE_ERR_LIMIT, "oversized");
    free(big);
    static const struct {
        const char *key, *value, *why;
    } edits[] = {
        {"outcome", NULL, "outcome missing"},
        {"outcome", "\"" SECRET "\"", "outcome unknown"},
        {"urgency", "\"soon\"", "urgency unknown"},
        {"urgency", NULL, "urgency missing"},
        {"pathway", "\"Bad Id " SECRET "\"", "pathway not an id"},
        {"rule", "5", "rule a number"},
        {"explain", "\"line\\nbreak " SECRET "\"", "explain with a control character"},
        {"fired", "{}", "fired an object"},
        {"fired", "[{\"rule\":\"r\",\"values\":[{\"data\":\"x\",\"value\":[1]}]}]", "fired value an array"},
        {"fired", "[{\"rule\":\"r\",\"values\":[{\"data\":\"x\",\"value\":\"a\",\"unit\":\"mg\"}]}]",
         "fired unit without a number"},
        {"fired", "[{\"rule\":\"r\",\"values\":[{\"data\":\"x\",\"value\":1,\"date\":\"26-1-1\"}]}]",
         "fired date malformed"},
        {"citations", "[{\"rule\":\"r\",\"guideline\":\"g\",\"year\":1800,\"section\":\"s\"}]",
         "citation year"},
        {"citations", "[]", "no citation"},
        {"tests", "[\"\"]", "an empty test"},
        {"needs", "[\"" SECRET "\"]", "a need not an id"},
        {"unusable", "[{\"data\":\"acr\"}]", "unusable without unit or reason"},
        {"stale", NULL, "stale missing"},
        {"other_pathways", "\"x\"", "other_pathways a string"},
        {"input_hash", "\"" SECRET "\"", "input_hash not the review's"},
        {"engine", "\"alma-guideline/2\"", "engine not the review's"},
        {"bundle", "{\"id\":\"alma-referral-core\",\"version\":\"9.9.9\",\"hash\":\"00\"}",
         "bundle not the review's"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(edits); i++) {
        char *bad = edited(rec, edits[i].key, edits[i].value);
        expect_refused(&ev.rv, bad, strlen(bad), BASE_ERR_INVALID, edits[i].why);
        free(bad);
    }
    /* INSUFFICIENT without needs */
    char *bad = edited(rec, "outcome", "\"INSUFFICIENT\"");
    char *bad2 = edited(bad, "urgency", "\"\"");
    expect_refused(&ev.rv, bad2, strlen(bad2), BASE_ERR_INVALID, "INSUFFICIENT without needs");
    free(bad);
    free(bad2);

    /* The review fields */
    expect_refused(NULL, rec, len, BASE_ERR_INVALID, "no review");
    const char *codes[] = {"N18.31", "bad " SECRET};
    struct {
        gl_fhir_review rv;
        const char *why;
    } reviews[] = {
        {ev.rv, "review_id not rv_ + hex"},
        {ev.rv, "review_id NULL"},
        {ev.rv, "tenant bad"},
        {ev.rv, "referral bad"},
        {ev.rv, "patient_ref bad"},
        {ev.rv, "created_us 0"},
        {ev.rv, "created_us year 10000"},
        {ev.rv, "bundle_hash bad"},
        {ev.rv, "reason code bad"},
        {ev.rv, "too many reason codes"},
        {ev.rv, "specialty bad"},
        {ev.rv, "clinician missing"},
        {ev.rv, "bundle_version bad"},
    };
    reviews[0].rv.review_id = "rv_" SECRET;
    reviews[1].rv.review_id = NULL;
    reviews[2].rv.tenant_id = "Tenant " SECRET;
    reviews[3].rv.referral_id = "ref " SECRET;
    reviews[4].rv.patient_ref = "pt_" SECRET;
    reviews[5].rv.created_us = 0;
    reviews[6].rv.created_us = INT64_C(253402300800000000);
    reviews[7].rv.bundle_hash = SECRET;
    reviews[8].rv.reason_codes = codes;
    reviews[8].rv.n_reason_codes = 2;
    reviews[9].rv.reason_codes = codes;
    reviews[9].rv.n_reason_codes = GL_FHIR_MAX_REASON_CODES + 1;
    reviews[10].rv.specialty = "Spine " SECRET;
    reviews[11].rv.clinician_id = NULL;
    reviews[12].rv.bundle_version = "1.0";
    for (size_t i = 0; i < BASE_ARRAY_LEN(reviews); i++)
        expect_refused(&reviews[i].rv, rec, len, BASE_ERR_INVALID, reviews[i].why);

    /* The card uuid helpers */
    char uuid[37] = "x", id[36] = "x";
    assert_false(base_is_ok(gl_cds_card_uuid("rv_" SECRET, uuid)));
    assert_string_equal(uuid, "x");
    assert_false(base_is_ok(gl_cds_review_id("0123456789abcdef0123456789abcdef0123", id)));
    assert_false(base_is_ok(gl_cds_review_id("01234567-89ab-cdef-0123-456789ABCDEF", id)));
    assert_false(base_is_ok(gl_cds_review_id(NULL, id)));
    assert_string_equal(id, "x");
    assert_true(base_is_ok(gl_cds_card_uuid("rv_0123456789abcdef0123456789abcdef", uuid)));
    assert_string_equal(uuid, "01234567-89ab-cdef-0123-456789abcdef");
    assert_true(base_is_ok(gl_cds_review_id(uuid, id)));
    assert_string_equal(id, "rv_0123456789abcdef0123456789abcdef");
    assert_int_equal(gl_cds_override_reason("OTHER"), 6);
    assert_int_equal(gl_cds_override_reason("UNSPECIFIED"), 0);
    assert_int_equal(gl_cds_override_reason("other"), 0);
    assert_int_equal(gl_cds_override_reason(NULL), 0);

    evaluated_clear(&ev);
    json_decref(all);
    gl_bundle_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vignettes, testproc_setup, testproc_teardown),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests_name("guideline_fhir", tests, NULL, NULL);
}
