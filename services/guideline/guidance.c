/* A review as a FHIR R4 GuidanceResponse and as a CDS Hooks 2.0 card: the mapping is in FHIR-CDS.md.
 *
 * Both documents are built as jansson trees from a recommendation that has been checked first (check_rec),
 * written once with JSON_COMPACT | JSON_SORT_KEYS and then put into canonical form (gl_canonical_json), so
 * numbers have one spelling and equal input gives equal bytes. Messages name fields, never values. */
#include "guidance.h"

#include "bundle.h"
#include "crypto/crypto.h"
#include "shapes.h"

#include <jansson.h>

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17))

/* 9999-12-31T23:59:59.999999Z: the last instant with a four-digit year. */
#define MAX_TIME_US      INT64_C(253402300799999999)
#define INSTANT_LEN      27 /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" */
#define ID_MAX           64 /* bundle, pathway, rule and data ids */
#define TEXT_MAX         1000
#define LIST_MAX         32   /* tests, steps, needs, stale, other_pathways */
#define FIRED_MAX        256  /* fired rules and citations */
#define VALUES_MAX       1024 /* values of one fired rule */
#define UNUSABLE_MAX     256
#define TENANT_MAX       63
#define HASH_LEN         64
#define CLINICIAN_ID_MAX 128

static const char *const OUTCOMES[] = {"NO_PATHWAY", "REFER", "WORKUP", "MANAGE", "INSUFFICIENT"};
enum { O_NO_PATHWAY, O_REFER, O_WORKUP, O_MANAGE, O_INSUFFICIENT };

/* proto OverrideReason 1..6, the card's overrideReasons in that order. */
static const struct {
    const char *code, *display;
} OVERRIDE_REASONS[] = {
    {"CLINICAL_JUDGEMENT", "Clinical judgement"},
    {"PATIENT_PREFERENCE", "Patient preference"},
    {"DATA_INCOMPLETE", "Data incomplete: the engine did not see something the clinician knows"},
    {"ALREADY_DONE", "Already done: the work-up or referral happened elsewhere"},
    {"GUIDELINE_NOT_APPLICABLE", "Guideline not applicable to this patient"},
    {"OTHER", "Other reason"},
};

/* The checked recommendation: borrowed views into root. */
typedef struct rec {
    json_t *root;
    int outcome;
    const char *urgency, *pathway, *rule, *explain;
    json_t *tests, *steps, *needs, *fired, *citations, *stale, *unusable, *other;
} rec;

/* ---------------------------------------------------------------------------------------------------------
 * Checks: pure, on bytes. */

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

static bool is_prefixed_hex(const char *s, const char *prefix)
{
    size_t p = strlen(prefix);
    return s && strncmp(s, prefix, p) == 0 && strlen(s) == p + 32 && is_lower_hex(s + p, 32);
}

static bool is_hash(const char *s)
{
    return s && strlen(s) == HASH_LEN && is_lower_hex(s, HASH_LEN);
}

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* [a-z0-9][a-z0-9_-]{0,max-1} (bundle ids, pathway, rule and data ids; also tenants with '_' excluded) */
static bool is_id(const char *s, size_t max, bool underscore)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max || !is_lower_alnum(s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(is_lower_alnum(s[i]) || s[i] == '-' || (underscore && s[i] == '_')))
            return false;
    return true;
}

/* 1..max printable ASCII without spaces (engine versions, units, clinician ids) */
static bool is_token(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* MAJOR.MINOR.PATCH, digits only */
static bool is_semver(const char *s)
{
    int dots = 0;
    size_t digits = 0, n = s ? strlen(s) : 0;
    if (n == 0 || n > 14)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (digits == 0)
                return false;
            dots++;
            digits = 0;
        } else if (s[i] >= '0' && s[i] <= '9') {
            digits++;
        } else {
            return false;
        }
    }
    return dots == 2 && digits > 0;
}

static bool is_date(const char *s)
{
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (size_t i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !(s[i] >= '0' && s[i] <= '9'))
            return false;
    int m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    return s[0] != '0' && m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

/* A text shown to people: 1..max bytes (0 allowed when may_be_empty), no control characters, no leading or
 * trailing space (FHIR's string and markdown patterns want a non-blank value). jansson gives valid UTF-8. */
static bool is_text(const char *s, size_t max, bool may_be_empty)
{
    size_t n = s ? strlen(s) : 0;
    if (!s || n > max || (n == 0 && !may_be_empty))
        return false;
    if (n && (s[0] == ' ' || s[n - 1] == ' '))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
            return false;
    return true;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static base_result check_review(const gl_fhir_review *rv)
{
    BASE_ENSURE(rv, BASE_ERR_INVALID, "review: required");
    BASE_ENSURE(is_prefixed_hex(rv->review_id, "rv_"), BASE_ERR_INVALID,
                "review: review_id: \"rv_\" + 32 lowercase hex digits");
    BASE_ENSURE(is_id(rv->tenant_id, TENANT_MAX, false) && strlen(rv->tenant_id) >= 2, BASE_ERR_INVALID,
                "review: tenant_id: [a-z0-9][a-z0-9-]{1,62}");
    BASE_ENSURE(gl_valid_referral_id(rv->referral_id), BASE_ERR_INVALID,
                "review: referral_id: 1..64 of [A-Za-z0-9_-]");
    BASE_ENSURE(is_prefixed_hex(rv->patient_ref, "pt_"), BASE_ERR_INVALID,
                "review: patient_ref: \"pt_\" + 32 lowercase hex digits");
    BASE_ENSURE(is_token(rv->clinician_id, CLINICIAN_ID_MAX), BASE_ERR_INVALID,
                "review: clinician_id: 1..128 printable ASCII characters without spaces");
    BASE_ENSURE(rv->created_us > 0 && rv->created_us <= MAX_TIME_US, BASE_ERR_INVALID,
                "review: created_us: must be between 1970 and 9999");
    BASE_ENSURE(is_token(rv->engine_version, ID_MAX), BASE_ERR_INVALID,
                "review: engine_version: 1..64 printable ASCII characters without spaces");
    BASE_ENSURE(is_id(rv->bundle_id, ID_MAX - 1, false) && strlen(rv->bundle_id) >= 2, BASE_ERR_INVALID,
                "review: bundle_id: [a-z0-9][a-z0-9-]{1,62}");
    BASE_ENSURE(is_semver(rv->bundle_version), BASE_ERR_INVALID, "review: bundle_version: MAJOR.MINOR.PATCH");
    BASE_ENSURE(is_hash(rv->bundle_hash), BASE_ERR_INVALID, "review: bundle_hash: 64 lowercase hex digits");
    BASE_ENSURE(is_hash(rv->input_hash), BASE_ERR_INVALID, "review: input_hash: 64 lowercase hex digits");
    BASE_ENSURE(rv->n_reason_codes <= GL_FHIR_MAX_REASON_CODES, BASE_ERR_INVALID,
                "review: reason_codes: at most 32");
    BASE_ENSURE(rv->n_reason_codes == 0 || rv->reason_codes, BASE_ERR_INVALID,
                "review: reason_codes: missing");
    for (size_t i = 0; i < rv->n_reason_codes; i++)
        if (!gl_valid_icd10(rv->reason_codes[i]))
            return base_fail(BASE_ERR_INVALID, "review: reason_codes[%zu]: not an ICD-10-CM code", i);
    BASE_ENSURE(!rv->specialty || !*rv->specialty || is_id(rv->specialty, ID_MAX, true), BASE_ERR_INVALID,
                "review: specialty: [a-z0-9][a-z0-9_-]{0,63}");
    return BASE_OK_RESULT;
}

/* An array of at most max strings, each an id (ids) or a text. */
static base_result check_strings(const json_t *a, const char *field, size_t max, bool ids)
{
    if (!json_is_array(a) || json_array_size(a) > max)
        return base_fail(BASE_ERR_INVALID, "recommendation: %s: an array of at most %zu", field, max);
    size_t i;
    const json_t *v;
    json_array_foreach(a, i, v)
    {
        const char *s = json_string_value(v);
        if (ids ? !is_id(s, ID_MAX, true) : !is_text(s, TEXT_MAX, false))
            return base_fail(BASE_ERR_INVALID, "recommendation: %s[%zu]: %s", field, i,
                             ids ? "not an id" : "1..1000 bytes of text without control characters");
    }
    return BASE_OK_RESULT;
}

static base_result check_value(const json_t *v, size_t r, size_t i)
{
    const char *unit = jstr(v, "unit"), *date = jstr(v, "date");
    const json_t *value = json_object_get(v, "value");
    if (!json_is_object(v) || !is_id(jstr(v, "data"), ID_MAX, true))
        return base_fail(BASE_ERR_INVALID, "recommendation: fired[%zu].values[%zu].data: not an id", r, i);
    if (!value || !(json_is_number(value) || json_is_boolean(value) || json_is_null(value) ||
                    is_text(json_string_value(value), TEXT_MAX, false)))
        return base_fail(BASE_ERR_INVALID,
                         "recommendation: fired[%zu].values[%zu].value: a number, text, "
                         "boolean or null",
                         r, i);
    if (json_is_number(value) && !isfinite(json_number_value(value)))
        return base_fail(BASE_ERR_INVALID, "recommendation: fired[%zu].values[%zu].value: not finite", r, i);
    if (json_object_get(v, "unit") && (!is_token(unit, ID_MAX) || !json_is_number(value)))
        return base_fail(BASE_ERR_INVALID,
                         "recommendation: fired[%zu].values[%zu].unit: a unit, with a number", r, i);
    if (json_object_get(v, "date") && !is_date(date))
        return base_fail(BASE_ERR_INVALID, "recommendation: fired[%zu].values[%zu].date: YYYY-MM-DD", r, i);
    return BASE_OK_RESULT;
}

static base_result check_fired(const json_t *fired)
{
    if (!json_is_array(fired) || json_array_size(fired) > FIRED_MAX)
        return base_fail(BASE_ERR_INVALID, "recommendation: fired: an array of at most %d", FIRED_MAX);
    size_t r, i;
    const json_t *f, *v;
    json_array_foreach(fired, r, f)
    {
        const json_t *values = json_object_get(f, "values");
        if (!json_is_object(f) || !is_id(jstr(f, "rule"), ID_MAX, true))
            return base_fail(BASE_ERR_INVALID, "recommendation: fired[%zu].rule: not an id", r);
        if (!json_is_array(values) || json_array_size(values) > VALUES_MAX)
            return base_fail(BASE_ERR_INVALID, "recommendation: fired[%zu].values: an array of at most %d", r,
                             VALUES_MAX);
        json_array_foreach(values, i, v)
        {
            BASE_GUARD(check_value(v, r, i));
        }
    }
    return BASE_OK_RESULT;
}

static base_result check_citations(const json_t *cites)
{
    if (!json_is_array(cites) || json_array_size(cites) > FIRED_MAX)
        return base_fail(BASE_ERR_INVALID, "recommendation: citations: an array of at most %d", FIRED_MAX);
    size_t i;
    const json_t *c;
    json_array_foreach(cites, i, c)
    {
        const json_t *year = json_object_get(c, "year");
        if (!json_is_object(c) || !is_id(jstr(c, "rule"), ID_MAX, true) ||
            !is_text(jstr(c, "guideline"), TEXT_MAX, false) ||
            !is_text(jstr(c, "section"), TEXT_MAX, false) || !json_is_integer(year) ||
            json_integer_value(year) < 1900 || json_integer_value(year) > 2100)
            return base_fail(
                BASE_ERR_INVALID,
                "recommendation: citations[%zu]: needs rule, guideline, year (1900..2100), section", i);
    }
    return BASE_OK_RESULT;
}

static base_result check_unusable(const json_t *u)
{
    if (!json_is_array(u) || json_array_size(u) > UNUSABLE_MAX)
        return base_fail(BASE_ERR_INVALID, "recommendation: unusable: an array of at most %d", UNUSABLE_MAX);
    size_t i;
    const json_t *e;
    json_array_foreach(u, i, e)
    {
        const char *unit = jstr(e, "unit"), *reason = jstr(e, "reason");
        if (!json_is_object(e) || !is_id(jstr(e, "data"), ID_MAX, true) ||
            !((unit && !reason && is_token(unit, ID_MAX)) ||
              (reason && !unit && is_id(reason, ID_MAX, true))))
            return base_fail(BASE_ERR_INVALID,
                             "recommendation: unusable[%zu]: needs data and a unit or a reason", i);
    }
    return BASE_OK_RESULT;
}

/* Parses and checks the recommendation against the review; *ret borrows from ret->root (the caller's). */
static base_result check_rec(const gl_fhir_review *rv, const char *json, size_t len, rec *ret)
{
    BASE_GUARD(check_review(rv));
    BASE_ENSURE(json, BASE_ERR_INVALID, "recommendation: required");
    if (len > GL_FHIR_MAX_RECOMMENDATION)
        return base_fail(BASE_ERR_LIMIT, "recommendation: more than %d bytes", GL_FHIR_MAX_RECOMMENDATION);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return base_fail(BASE_ERR_INVALID, "recommendation: not a JSON object");
    }
    base_result r = BASE_OK_RESULT;
    rec c = {.root = root, .outcome = -1};
    const json_t *bundle = json_object_get(root, "bundle");
    const char *engine = jstr(root, "engine"), *outcome = jstr(root, "outcome");
    if (!engine || strcmp(engine, rv->engine_version) != 0) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: engine: missing or not the review's engine_version");
        goto out;
    }
    if (!json_is_object(bundle) || !jstr(bundle, "id") || strcmp(jstr(bundle, "id"), rv->bundle_id) != 0 ||
        !jstr(bundle, "version") || strcmp(jstr(bundle, "version"), rv->bundle_version) != 0 ||
        !jstr(bundle, "hash") || strcmp(jstr(bundle, "hash"), rv->bundle_hash) != 0) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: bundle: missing or not the review's bundle");
        goto out;
    }
    if (!jstr(root, "input_hash") || strcmp(jstr(root, "input_hash"), rv->input_hash) != 0) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: input_hash: missing or not the review's input_hash");
        goto out;
    }
    for (int i = 0; outcome && i < (int)BASE_ARRAY_LEN(OUTCOMES); i++)
        if (strcmp(outcome, OUTCOMES[i]) == 0)
            c.outcome = i;
    if (c.outcome < 0) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: outcome: not an outcome");
        goto out;
    }
    c.urgency = jstr(root, "urgency");
    c.pathway = jstr(root, "pathway");
    c.rule = jstr(root, "rule");
    c.explain = jstr(root, "explain");
    bool refer = c.outcome == O_REFER, none = c.outcome == O_NO_PATHWAY;
    if (!c.urgency || (refer ? !(strcmp(c.urgency, "routine") == 0 || strcmp(c.urgency, "urgent") == 0 ||
                                 strcmp(c.urgency, "emergency") == 0)
                             : *c.urgency != '\0')) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: urgency: routine, urgent or emergency with REFER, "
                                        "else empty");
        goto out;
    }
    if (!c.pathway || !c.rule ||
        (none ? (*c.pathway || *c.rule)
              : (!is_id(c.pathway, ID_MAX, true) || !is_id(c.rule, ID_MAX, true)))) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: pathway, rule: ids, empty only with NO_PATHWAY");
        goto out;
    }
    if (!is_text(c.explain, TEXT_MAX, true)) {
        r = base_fail(BASE_ERR_INVALID,
                      "recommendation: explain: at most 1000 bytes without control characters");
        goto out;
    }
    c.tests = json_object_get(root, "tests");
    c.steps = json_object_get(root, "steps");
    c.needs = json_object_get(root, "needs");
    c.fired = json_object_get(root, "fired");
    c.citations = json_object_get(root, "citations");
    c.stale = json_object_get(root, "stale");
    c.unusable = json_object_get(root, "unusable");
    c.other = json_object_get(root, "other_pathways");
    BASE_GUARD_GOTO(r, check_strings(c.tests, "tests", LIST_MAX, false), out);
    BASE_GUARD_GOTO(r, check_strings(c.steps, "steps", LIST_MAX, false), out);
    BASE_GUARD_GOTO(r, check_strings(c.needs, "needs", LIST_MAX, true), out);
    BASE_GUARD_GOTO(r, check_strings(c.stale, "stale", LIST_MAX * 2, true), out);
    BASE_GUARD_GOTO(r, check_strings(c.other, "other_pathways", LIST_MAX * 2, true), out);
    BASE_GUARD_GOTO(r, check_fired(c.fired), out);
    BASE_GUARD_GOTO(r, check_citations(c.citations), out);
    BASE_GUARD_GOTO(r, check_unusable(c.unusable), out);
    if (c.outcome == O_INSUFFICIENT && json_array_size(c.needs) == 0) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: needs: required with INSUFFICIENT");
        goto out;
    }
    if (!none && json_array_size(c.citations) == 0) {
        r = base_fail(BASE_ERR_INVALID, "recommendation: citations: required unless NO_PATHWAY");
        goto out;
    }
out:
    if (!base_is_ok(r)) {
        json_decref(root);
        return r;
    }
    *ret = c;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Small builders. Each returns a new reference or NULL (out of memory); set_new/append_new consume v and
 * record the failure in *ok. */

static void set_new(bool *ok, json_t *obj, const char *key, json_t *v)
{
    if (!v || json_object_set_new(obj, key, v) != 0)
        *ok = false;
}

static void append_new(bool *ok, json_t *arr, json_t *v)
{
    if (!v || json_array_append_new(arr, v) != 0)
        *ok = false;
}

static json_t *coding(const char *system, const char *code, const char *display)
{
    json_t *c = json_pack("{s:s, s:s}", "system", system, "code", code);
    if (c && display && json_object_set_new(c, "display", json_string(display)) != 0) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* A Parameters.parameter with one value[x] (v consumed), or with parts when v is an array. */
static json_t *param(const char *name, const char *value_key, json_t *v)
{
    json_t *p = json_pack("{s:s}", "name", name);
    if (!p || !v || json_object_set_new(p, value_key, v) != 0) {
        json_decref(p);
        return NULL;
    }
    return p;
}

static json_t *param_str(const char *name, const char *value_key, const char *s)
{
    return param(name, value_key, json_string(s));
}

static json_t *param_parts(const char *name, json_t *parts)
{
    return param(name, "part", parts);
}

static base_result dump(json_t *doc, bool ok, char **ret_json, size_t *ret_len)
{
    if (!ok || !doc) {
        json_decref(doc);
        return base_fail(BASE_ERR_NOMEM, "guideline fhir: out of memory building the document");
    }
    char *text = json_dumps(doc, DUMP_FLAGS);
    json_decref(doc);
    if (!text)
        return base_fail(BASE_ERR_NOMEM, "guideline fhir: out of memory writing the document");
    char *canon = NULL;
    size_t clen = 0;
    base_result r = gl_canonical_json(text, strlen(text), GL_FHIR_MAX_OUTPUT, &canon, &clen);
    free(text);
    if (!base_is_ok(r))
        return r;
    *ret_json = canon;
    if (ret_len)
        *ret_len = clen;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * GuidanceResponse */

/* The value of one fired-rule value as Parameters parts: data, then the value (valueQuantity for a number
 * with a unit, valueDecimal, valueString, valueBoolean; a null value is "missing": true), then date. */
static json_t *fired_value_parts(const json_t *v)
{
    bool ok = true;
    json_t *parts = json_array();
    const json_t *value = json_object_get(v, "value");
    const char *unit = jstr(v, "unit"), *date = jstr(v, "date");
    append_new(&ok, parts, param_str("data", "valueCode", jstr(v, "data")));
    if (json_is_number(value) && unit) {
        json_t *q = json_pack("{s:O, s:s, s:s, s:s}", "value", (json_t *)value, "unit", unit, "system",
                              GL_FHIR_UCUM_SYSTEM, "code", unit);
        append_new(&ok, parts, param("value", "valueQuantity", q));
    } else if (json_is_number(value)) {
        append_new(&ok, parts, param("value", "valueDecimal", json_deep_copy(value)));
    } else if (json_is_string(value)) {
        append_new(&ok, parts, param("value", "valueString", json_deep_copy(value)));
    } else if (json_is_boolean(value)) {
        append_new(&ok, parts, param("value", "valueBoolean", json_deep_copy(value)));
    } else {
        append_new(&ok, parts, param("missing", "valueBoolean", json_true()));
    }
    if (date)
        append_new(&ok, parts, param_str("date", "valueDate", date));
    if (!ok) {
        json_decref(parts);
        return NULL;
    }
    return parts;
}

static void add_string_params(bool *ok, json_t *params, const char *name, const char *value_key,
                              const json_t *list)
{
    size_t i;
    const json_t *s;
    json_array_foreach(list, i, s) append_new(ok, params, param_str(name, value_key, json_string_value(s)));
}

/* The contained Parameters "output": the recommendation, field by field (FHIR-CDS.md). */
static json_t *output_parameters(const gl_fhir_review *rv, const rec *c)
{
    bool ok = true;
    json_t *params = json_array();
    append_new(&ok, params, param_str("outcome", "valueCode", OUTCOMES[c->outcome]));
    if (*c->urgency)
        append_new(&ok, params, param_str("urgency", "valueCode", c->urgency));
    if (*c->pathway)
        append_new(&ok, params, param_str("pathway", "valueCode", c->pathway));
    if (*c->rule)
        append_new(&ok, params, param_str("rule", "valueCode", c->rule));
    add_string_params(&ok, params, "tests", "valueString", c->tests);
    add_string_params(&ok, params, "steps", "valueString", c->steps);
    add_string_params(&ok, params, "needs", "valueCode", c->needs);
    size_t i, j;
    const json_t *f, *v;
    json_array_foreach(c->fired, i, f)
    {
        json_t *parts = json_array();
        append_new(&ok, parts, param_str("rule", "valueCode", jstr(f, "rule")));
        json_array_foreach(json_object_get(f, "values"), j, v)
            append_new(&ok, parts, param_parts("value", fired_value_parts(v)));
        append_new(&ok, params, param_parts("fired", parts));
    }
    json_array_foreach(c->citations, i, f)
    {
        json_t *parts = json_array();
        append_new(&ok, parts, param_str("rule", "valueCode", jstr(f, "rule")));
        append_new(&ok, parts, param_str("guideline", "valueString", jstr(f, "guideline")));
        append_new(&ok, parts, param("year", "valueInteger", json_deep_copy(json_object_get(f, "year"))));
        append_new(&ok, parts, param_str("section", "valueString", jstr(f, "section")));
        append_new(&ok, params, param_parts("citations", parts));
    }
    add_string_params(&ok, params, "stale", "valueCode", c->stale);
    json_array_foreach(c->unusable, i, f)
    {
        json_t *parts = json_array();
        append_new(&ok, parts, param_str("data", "valueCode", jstr(f, "data")));
        if (jstr(f, "unit"))
            append_new(&ok, parts, param_str("unit", "valueString", jstr(f, "unit")));
        else
            append_new(&ok, parts, param_str("reason", "valueCode", jstr(f, "reason")));
        append_new(&ok, params, param_parts("unusable", parts));
    }
    add_string_params(&ok, params, "other_pathways", "valueCode", c->other);
    append_new(&ok, params, param_str("engine", "valueString", rv->engine_version));
    append_new(&ok, params, param_str("bundle_hash", "valueString", rv->bundle_hash));
    append_new(&ok, params, param_str("input_hash", "valueString", rv->input_hash));
    json_t *out = json_pack("{s:s, s:s}", "resourceType", "Parameters", "id", "output");
    set_new(&ok, out, "parameter", params);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static base_result format_instant(int64_t us, char ret[INSTANT_LEN + 1])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm))
        return base_fail(BASE_ERR_INVALID, "review: created_us: out of range");
    int n = snprintf(ret, INSTANT_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us % 1000000));
    if (n != INSTANT_LEN)
        return base_fail(BASE_ERR_INTERNAL, "guideline fhir: instant formatting failed");
    return BASE_OK_RESULT;
}

/* "rv_<hex>" -> "rv-<hex>": FHIR ids have no '_' (the vault maps "pt_" the same way). */
static void fhir_id(const char *in, char *out, size_t cap)
{
    snprintf(out, cap, "%s", in);
    for (char *p = out; *p; p++)
        if (*p == '_')
            *p = '-';
}

base_result gl_fhir_guidance_response(const gl_fhir_review *rv, const char *recommendation, size_t len,
                                      char **ret_json, size_t *ret_len)
{
    BASE_ENSURE(ret_json, BASE_ERR_INVALID, "guidance response: ret_json: required");
    rec c;
    BASE_GUARD(check_rec(rv, recommendation, len, &c));
    char when[INSTANT_LEN + 1], id[40], patient[48], module[160], referral_system[96];
    base_result r = format_instant(rv->created_us, when);
    if (!base_is_ok(r)) {
        json_decref(c.root);
        return r;
    }
    fhir_id(rv->review_id, id, sizeof id);
    fhir_id(rv->patient_ref, patient + 8, sizeof patient - 8);
    memcpy(patient, "Patient/", 8);
    snprintf(module, sizeof module, "%s%s|%s", GL_FHIR_MODULE_PREFIX, rv->bundle_id, rv->bundle_version);
    snprintf(referral_system, sizeof referral_system, "%s%s:referral", GL_FHIR_REFERRAL_SYSTEM_PREFIX,
             rv->tenant_id);

    bool ok = true;
    const char *status = c.outcome == O_INSUFFICIENT ? "data-required" : "success";
    json_t *gr = json_pack("{s:s, s:s, s:[{s:s, s:s}], s:{s:s, s:s}, s:s, s:s, s:{s:s}, s:s}", "resourceType",
                           "GuidanceResponse", "id", id, "identifier", "system", GL_FHIR_REVIEW_SYSTEM,
                           "value", rv->review_id, "requestIdentifier", "system", referral_system, "value",
                           rv->referral_id, "moduleCanonical", module, "status", status, "subject",
                           "reference", patient, "occurrenceDateTime", when);
    if (!gr)
        ok = false;
    char display[96];
    snprintf(display, sizeof display, "Alma guideline engine %s", rv->engine_version);
    set_new(&ok, gr, "performer",
            json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "Device", "identifier", "system",
                      GL_FHIR_ENGINE_SYSTEM, "value", rv->engine_version, "display", display));
    if (rv->n_reason_codes) {
        json_t *reasons = json_array();
        for (size_t i = 0; i < rv->n_reason_codes; i++)
            append_new(
                &ok, reasons,
                json_pack("{s:[o]}", "coding", coding(GL_FHIR_ICD10CM_SYSTEM, rv->reason_codes[i], NULL)));
        set_new(&ok, gr, "reasonCode", reasons);
    }
    if (*c.explain)
        set_new(&ok, gr, "note", json_pack("[{s:s}]", "text", c.explain));
    json_t *contained = json_array();
    append_new(&ok, contained, output_parameters(rv, &c));
    set_new(&ok, gr, "outputParameters", json_pack("{s:s}", "reference", "#output"));
    if (c.outcome == O_NO_PATHWAY) {
        /* The evaluation succeeded and found nothing to apply: said as an informational message. */
        append_new(&ok, contained,
                   json_pack("{s:s, s:s, s:[{s:s, s:s, s:s}]}", "resourceType", "OperationOutcome", "id",
                             "no-pathway", "issue", "severity", "information", "code", "informational",
                             "diagnostics", "No pathway of the guideline bundle applies to this referral"));
        set_new(&ok, gr, "evaluationMessage", json_pack("[{s:s}]", "reference", "#no-pathway"));
    }
    set_new(&ok, gr, "contained", contained);
    if (c.outcome == O_INSUFFICIENT) {
        json_t *reqs = json_array();
        size_t i;
        const json_t *n;
        json_array_foreach(c.needs, i, n)
            append_new(&ok, reqs,
                       json_pack("{s:s, s:[{s:s, s:[o]}]}", "type", "Any", "codeFilter", "path", "code",
                                 "code", coding(GL_FHIR_DATA_SYSTEM, json_string_value(n), NULL)));
        set_new(&ok, gr, "dataRequirement", reqs);
    }
    json_decref(c.root);
    return dump(gr, ok, ret_json, ret_len);
}

/* ---------------------------------------------------------------------------------------------------------
 * CDS Hooks card */

/* A bounded growing text (the card's detail and summary). */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = cap <= GL_FHIR_MAX_OUTPUT ? realloc(b->p, cap) : NULL;
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_fmt(sbuf *b, const char *fmt, ...) BASE_PRINTF(2, 3);
static void sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        b->failed = true;
    else
        sb_add(b, tmp, (size_t)n);
}

/* Text into markdown: the characters markdown (and the HTML some renderers allow) would read as markup are
 * backslash-escaped, so bundle text and values show as written. */
static void sb_md(sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (strchr("\\`*_{}[]<>#|~!", *s))
            sb_add(b, "\\", 1);
        sb_add(b, s, 1);
    }
}

/* A number as the shortest decimal that reads back to the same double (as canonical JSON writes it). */
static void sb_number(sbuf *b, const json_t *v)
{
    if (json_is_integer(v)) {
        sb_fmt(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    }
    double d = json_number_value(v);
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    sb_str(b, tmp);
}

static const char *target_name(const gl_fhir_review *rv, const rec *c)
{
    return rv->specialty && *rv->specialty ? rv->specialty : c->pathway;
}

/* Joins the strings of a list with sep, each as inline code or as it is. */
static void sb_join(sbuf *b, const json_t *list, const char *sep, bool code)
{
    size_t i;
    const json_t *s;
    json_array_foreach(list, i, s)
    {
        if (i)
            sb_str(b, sep);
        sb_str(b, code ? "`" : "");
        sb_str(b, json_string_value(s));
        sb_str(b, code ? "`" : "");
    }
}

/* The outcome in words: the card summary's headline, and the detail's first line without an explanation. */
static void sb_headline(sbuf *b, const gl_fhir_review *rv, const rec *c)
{
    switch (c->outcome) {
    case O_REFER:
        sb_fmt(b, "Refer to %s (%s)", target_name(rv, c), c->urgency);
        break;
    case O_WORKUP:
        sb_str(b, "Work up before referral");
        break;
    case O_MANAGE:
        sb_str(b, "Manage in primary care");
        break;
    case O_INSUFFICIENT:
        sb_str(b, "Not enough data to decide");
        break;
    default:
        sb_str(b, "No guideline pathway applies to this referral");
        break;
    }
}

/* The summary: "<headline>: <explain, else the tests, steps or needs>", or that text alone when it already
 * starts with the headline ("Manage in primary care: ..."); cut to GL_CDS_SUMMARY_MAX bytes on a character
 * boundary with "..." (fewer bytes than 140 means fewer characters too). */
static void build_summary(sbuf *b, const gl_fhir_review *rv, const rec *c)
{
    sb_headline(b, rv, c);
    if (c->outcome == O_NO_PATHWAY)
        return;
    sbuf more = {0};
    if (*c->explain)
        sb_str(&more, c->explain);
    else if (c->outcome == O_WORKUP)
        sb_join(&more, c->tests, "; ", false);
    else if (c->outcome == O_MANAGE)
        sb_join(&more, c->steps, "; ", false);
    else if (c->outcome == O_INSUFFICIENT) {
        sb_str(&more, "needs ");
        sb_join(&more, c->needs, ", ", false);
    } else
        sb_fmt(&more, "pathway %s, rule %s", c->pathway, c->rule);
    if (more.failed || b->failed) {
        b->failed = true;
    } else if (strncmp(more.p, b->p, b->len) == 0) {
        b->len = 0;
        sb_str(b, more.p);
    } else {
        sb_str(b, ": ");
        sb_str(b, more.p);
    }
    free(more.p);
    if (!b->failed && b->len > GL_CDS_SUMMARY_MAX) {
        size_t n = GL_CDS_SUMMARY_MAX - 3;
        while (n > 0 && ((unsigned char)b->p[n] & 0xC0) == 0x80)
            n--;
        while (n > 0 && b->p[n - 1] == ' ')
            n--;
        b->len = n;
        b->p[n] = '\0';
        sb_str(b, "...");
    }
}

static void md_list(sbuf *b, const char *title, const json_t *list)
{
    if (json_array_size(list) == 0)
        return;
    sb_fmt(b, "\n\n**%s**\n", title);
    size_t i;
    const json_t *s;
    json_array_foreach(list, i, s)
    {
        sb_str(b, "\n- ");
        sb_md(b, json_string_value(s));
    }
}

/* An id or unit as inline code; a unit holding a backtick (units come from the input) is escaped text. */
static void md_code(sbuf *b, const char *s)
{
    if (strchr(s, '`')) {
        sb_md(b, s);
        return;
    }
    sb_str(b, "`");
    sb_str(b, s);
    sb_str(b, "`");
}

/* The detail (markdown): explanation, what to do, the rules that fired with their values, stale and unusable
 * data, the citation and the provenance. */
static void build_detail(sbuf *b, const gl_fhir_review *rv, const rec *c)
{
    if (c->outcome == O_NO_PATHWAY)
        sb_str(b, "No pathway of the guideline bundle applies to this referral (specialty, reason codes and "
                  "age); no recommendation is made.");
    else if (*c->explain)
        sb_md(b, c->explain);
    else {
        sb_headline(b, rv, c);
        sb_str(b, ".");
    }
    md_list(b, "Tests to order", c->tests);
    md_list(b, "First steps", c->steps);
    if (json_array_size(c->needs)) {
        sb_str(b, "\n\n**Data needed to decide:** ");
        sb_join(b, c->needs, ", ", true);
    }
    size_t i, j;
    const json_t *f, *v;
    if (json_array_size(c->fired)) {
        sb_str(b, "\n\n**Rules that fired** (the first decides)\n");
        json_array_foreach(c->fired, i, f)
        {
            sb_str(b, "\n- ");
            md_code(b, jstr(f, "rule"));
            json_array_foreach(json_object_get(f, "values"), j, v)
            {
                const json_t *value = json_object_get(v, "value");
                sb_str(b, j ? "; " : ": ");
                md_code(b, jstr(v, "data"));
                sb_str(b, " = ");
                if (json_is_number(value))
                    sb_number(b, value);
                else if (json_is_string(value))
                    sb_md(b, json_string_value(value));
                else if (json_is_boolean(value))
                    sb_str(b, json_is_true(value) ? "yes" : "no");
                else
                    sb_str(b, "missing");
                if (jstr(v, "unit")) {
                    sb_str(b, " ");
                    md_code(b, jstr(v, "unit"));
                }
                if (jstr(v, "date"))
                    sb_fmt(b, " (%s)", jstr(v, "date"));
            }
        }
    }
    if (json_array_size(c->stale)) {
        sb_str(b, "\n\n**Too old to use:** ");
        sb_join(b, c->stale, ", ", true);
    }
    if (json_array_size(c->unusable)) {
        sb_str(b, "\n\n**In a unit or form the guideline cannot use:** ");
        json_array_foreach(c->unusable, i, f)
        {
            if (i)
                sb_str(b, ", ");
            md_code(b, jstr(f, "data"));
            sb_str(b, " (");
            md_code(b, jstr(f, "unit") ? jstr(f, "unit") : jstr(f, "reason"));
            sb_str(b, ")");
        }
    }
    if (json_array_size(c->other)) {
        sb_str(b, "\n\n**Other pathways that also apply:** ");
        sb_join(b, c->other, ", ", true);
    }
    if (json_array_size(c->citations)) {
        sb_str(b, "\n\n**Guideline:** ");
        json_array_foreach(c->citations, i, f)
        {
            if (i)
                sb_str(b, "; ");
            sb_md(b, jstr(f, "guideline"));
            sb_fmt(b, " (%d), ", (int)json_integer_value(json_object_get(f, "year")));
            sb_md(b, jstr(f, "section"));
            sb_str(b, " [");
            md_code(b, jstr(f, "rule"));
            sb_str(b, "]");
        }
    }
    sb_str(b, "\n\n*Bundle* ");
    md_code(b, rv->bundle_id);
    sb_str(b, " ");
    md_code(b, rv->bundle_version);
    sb_str(b, ", *engine* ");
    md_code(b, rv->engine_version);
    sb_str(b, ", *review* ");
    md_code(b, rv->review_id);
}

/* A deterministic RFC 9562 version-8 UUID from SHA-256(review_id "/" what "/" index). */
static base_result derived_uuid(const char *review_id, const char *what, size_t index, char ret[37])
{
    char name[96];
    int n = snprintf(name, sizeof name, "%s/%s/%zu", review_id, what, index);
    if (n < 0 || (size_t)n >= sizeof name)
        return base_fail(BASE_ERR_INTERNAL, "guideline fhir: uuid name too long");
    uint8_t d[ACRYPTO_SHA256_LEN];
    BASE_GUARD(acrypto_sha256(name, (size_t)n, d));
    d[6] = (uint8_t)((d[6] & 0x0f) | 0x80);
    d[8] = (uint8_t)((d[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            ret[o++] = '-';
        ret[o++] = hex[d[i] >> 4];
        ret[o++] = hex[d[i] & 15];
    }
    ret[o] = '\0';
    return BASE_OK_RESULT;
}

base_result gl_cds_card_uuid(const char *review_id, char ret_uuid[37])
{
    BASE_ENSURE(is_prefixed_hex(review_id, "rv_"), BASE_ERR_INVALID,
                "review_id: \"rv_\" + 32 lowercase hex digits");
    BASE_ENSURE(ret_uuid, BASE_ERR_INVALID, "ret_uuid: required");
    const char *h = review_id + 3;
    char out[37];
    size_t o = 0;
    for (size_t i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20)
            out[o++] = '-';
        out[o++] = h[i];
    }
    out[o] = '\0';
    memcpy(ret_uuid, out, sizeof out);
    return BASE_OK_RESULT;
}

base_result gl_cds_review_id(const char *card_uuid, char ret_review_id[36])
{
    BASE_ENSURE(card_uuid && strlen(card_uuid) == 36, BASE_ERR_INVALID,
                "card uuid: 8-4-4-4-12 lowercase hex");
    char out[36] = "rv_";
    size_t o = 3;
    for (size_t i = 0; i < 36; i++) {
        char ch = card_uuid[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            BASE_ENSURE(ch == '-', BASE_ERR_INVALID, "card uuid: 8-4-4-4-12 lowercase hex");
            continue;
        }
        BASE_ENSURE((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'), BASE_ERR_INVALID,
                    "card uuid: 8-4-4-4-12 lowercase hex");
        out[o++] = ch;
    }
    out[o] = '\0';
    BASE_ENSURE(ret_review_id, BASE_ERR_INVALID, "ret_review_id: required");
    memcpy(ret_review_id, out, sizeof out);
    return BASE_OK_RESULT;
}

int gl_cds_override_reason(const char *code)
{
    for (size_t i = 0; code && i < BASE_ARRAY_LEN(OVERRIDE_REASONS); i++)
        if (strcmp(code, OVERRIDE_REASONS[i].code) == 0)
            return (int)i + 1;
    return 0;
}

static const char *indicator(const rec *c)
{
    if (c->outcome == O_REFER && strcmp(c->urgency, "emergency") == 0)
        return "critical";
    if (c->outcome == O_REFER && strcmp(c->urgency, "urgent") == 0)
        return "warning";
    return "info";
}

/* Suggestions: one per test to order (WORKUP, any of them), or the referral itself (REFER, at most one). */
static base_result suggestions(const gl_fhir_review *rv, const rec *c, json_t *card, bool *ok)
{
    json_t *list = json_array();
    char uuid[37], label[160];
    if (c->outcome == O_WORKUP) {
        size_t i;
        const json_t *t;
        json_array_foreach(c->tests, i, t)
        {
            base_result r = derived_uuid(rv->review_id, "suggestion", i, uuid);
            if (!base_is_ok(r)) {
                json_decref(list);
                return r;
            }
            append_new(ok, list,
                       json_pack("{s:s, s:s, s:b}", "label", json_string_value(t), "uuid", uuid,
                                 "isRecommended", 1));
        }
        set_new(ok, card, "selectionBehavior", json_string("any"));
    } else if (c->outcome == O_REFER) {
        base_result r = derived_uuid(rv->review_id, "suggestion", 0, uuid);
        if (!base_is_ok(r)) {
            json_decref(list);
            return r;
        }
        snprintf(label, sizeof label, "Refer to %s (%s)", target_name(rv, c), c->urgency);
        append_new(ok, list, json_pack("{s:s, s:s, s:b}", "label", label, "uuid", uuid, "isRecommended", 1));
        set_new(ok, card, "selectionBehavior", json_string("at-most-one"));
    }
    if (json_array_size(list))
        set_new(ok, card, "suggestions", list);
    else
        json_decref(list);
    return BASE_OK_RESULT;
}

base_result gl_cds_card(const gl_fhir_review *rv, const char *recommendation, size_t len, char **ret_json,
                        size_t *ret_len)
{
    BASE_ENSURE(ret_json, BASE_ERR_INVALID, "cds card: ret_json: required");
    rec c;
    BASE_GUARD(check_rec(rv, recommendation, len, &c));
    char uuid[37];
    base_result r = gl_cds_card_uuid(rv->review_id, uuid);
    sbuf summary = {0}, detail = {0}, label = {0};
    json_t *card = NULL;
    bool ok = true;
    if (!base_is_ok(r))
        goto out;
    build_summary(&summary, rv, &c);
    build_detail(&detail, rv, &c);
    const json_t *cite = json_array_get(c.citations, 0);
    if (cite) {
        sb_str(&label, jstr(cite, "guideline"));
        sb_fmt(&label, " (%d), ", (int)json_integer_value(json_object_get(cite, "year")));
        sb_str(&label, jstr(cite, "section"));
    } else
        sb_fmt(&label, "Alma guideline bundle %s %s", rv->bundle_id, rv->bundle_version);
    if (summary.failed || detail.failed || label.failed) {
        r = base_fail(BASE_ERR_LIMIT, "cds card: the card's text is too long");
        goto out;
    }
    card = json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "uuid", uuid, "summary", summary.p, "indicator",
                     indicator(&c), "detail", detail.p, "source", "label", label.p);
    if (!card) {
        ok = false;
        goto out;
    }
    if (*c.pathway)
        set_new(&ok, json_object_get(card, "source"), "topic",
                coding(GL_FHIR_PATHWAY_SYSTEM, c.pathway, NULL));
    BASE_GUARD_GOTO(r, suggestions(rv, &c, card, &ok), out);
    json_t *reasons = json_array();
    for (size_t i = 0; i < BASE_ARRAY_LEN(OVERRIDE_REASONS); i++)
        append_new(&ok, reasons,
                   coding(GL_CDS_OVERRIDE_SYSTEM, OVERRIDE_REASONS[i].code, OVERRIDE_REASONS[i].display));
    set_new(&ok, card, "overrideReasons", reasons);
out:
    free(summary.p);
    free(detail.p);
    free(label.p);
    json_decref(c.root);
    if (!base_is_ok(r)) {
        json_decref(card);
        return r;
    }
    return dump(card, ok, ret_json, ret_len);
}
