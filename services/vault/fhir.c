/* The right-of-access export as a FHIR R4 Bundle: the mapping is in fhir.h.
 *
 * The Bundle is built as a jansson tree and written once with JSON_COMPACT | JSON_SORT_KEYS into a buffer of
 * our own (bounded by VAULT_FHIR_MAX_BYTES while it is written): object members in sorted order, arrays in
 * the input's order, so equal input gives equal bytes. Buffers that held PHI are wiped before they are
 * freed (the jansson tree's own allocations are not). */
#include "fhir.h"

#include "crypto/crypto.h"

#include <jansson.h>

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FHIR_DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15))

#define SYS_MRN_TYPE      "http://terminology.hl7.org/CodeSystem/v2-0203"
#define SYS_CLINICAL      "http://terminology.hl7.org/CodeSystem/condition-clinical"
#define SYS_COND_CATEGORY "http://terminology.hl7.org/CodeSystem/condition-category"
#define SYS_COVERAGE_CLS  "http://terminology.hl7.org/CodeSystem/coverage-class"
#define SYS_CONFIDENTIAL  "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
#define SYS_UCUM          "http://unitsofmeasure.org"
#define SYS_ICD10CM       "http://hl7.org/fhir/sid/icd-10-cm"
#define SYS_PATIENT_REF   "urn:alma:patient-ref"
#define SYS_RECORD_ID     "urn:alma:record-id"
#define SYS_RECORD_KIND   "urn:alma:record-kind"
#define SYS_PAYER_ID      "urn:alma:payer-id"

/* 9999-12-31T23:59:59.999999Z: the last instant with a four-digit year. */
#define FHIR_MAX_TIME_US INT64_C(253402300799999999)
#define FHIR_INSTANT_LEN 27                      /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" */
#define FHIR_DATE_LEN    10                      /* "YYYY-MM-DD" */
#define FHIR_ID_BUF      (VAULT_FHIR_ID_MAX + 1) /* a mapped input id */
#define FHIR_ID_LEN_MAX  64                      /* of any FHIR id */
#define TENANT_MAX       64
/* Per-item allowance for everything but attachment data, for the early size estimate. */
#define ITEM_OVERHEAD 4096

/* Where a failure is, for messages: "patient", "coverage 2", "item 17" (indices only, never values). */
typedef struct fhir_ctx {
    const vault_fhir_input *in;
    char patient_id[FHIR_ID_BUF];
    char patient_reference[FHIR_ID_BUF + 16]; /* "Patient/<id>" */
    char bundle_id[FHIR_ID_BUF];
    char now[FHIR_INSTANT_LEN + 1]; /* now_us as an instant */
    char today[FHIR_DATE_LEN + 1];  /* now_us's UTC date */
    char where[32];
} fhir_ctx;

static void fhir_json_decref(json_t **j)
{
    if (*j)
        json_decref(*j);
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

/* ---------------------------------------------------------------------------------------------------------
 * Checks of FHIR datatypes (only what FHIR's own rules need; fhir.h). */

static bool ascii_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* FHIR code: non-empty, no leading or trailing whitespace, whitespace only as single spaces. */
static bool valid_code(const char *s)
{
    if (!s[0] || ascii_space(s[0]))
        return false;
    for (const char *p = s; *p; p++) {
        if (ascii_space(*p) && (*p != ' ' || !p[1] || p[1] == ' '))
            return false;
    }
    return true;
}

/* FHIR uri: non-empty (here) and no whitespace. */
static bool valid_uri(const char *s)
{
    if (!s[0])
        return false;
    for (const char *p = s; *p; p++) {
        if (ascii_space(*p))
            return false;
    }
    return true;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

static int digits_value(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* A calendar date "YYYY-MM-DD", years 0001..9999. */
static bool valid_date(const char *s)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) != FHIR_DATE_LEN || s[4] != '-' || s[7] != '-' || !all_digits(s, 4) ||
        !all_digits(s + 5, 2) || !all_digits(s + 8, 2))
        return false;
    int y = digits_value(s, 4), m = digits_value(s + 5, 2), d = digits_value(s + 8, 2);
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= days[m - 1] + (m == 2 && leap ? 1 : 0);
}

/* 1..VAULT_FHIR_ID_MAX of [A-Za-z0-9_], mapped to a FHIR id by '_' -> '-' (fhir.h). */
static base_result fhir_id(const fhir_ctx *c, const char *in, const char *field, char ret[FHIR_ID_BUF])
{
    size_t n = in ? strlen(in) : 0;
    if (n == 0)
        return base_fail(BASE_ERR_INVALID, "%s: %s is required", c->where, field);
    if (n > VAULT_FHIR_ID_MAX)
        return base_fail(BASE_ERR_INVALID, "%s: %s is longer than %d bytes", c->where, field,
                         VAULT_FHIR_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        bool ok =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
        if (!ok)
            return base_fail(BASE_ERR_INVALID, "%s: %s may hold only [A-Za-z0-9_]", c->where, field);
        ret[i] = ch == '_' ? '-' : ch;
    }
    ret[n] = '\0';
    return BASE_OK_RESULT;
}

static bool valid_tenant(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > TENANT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static base_result format_instant(const fhir_ctx *c, int64_t us, const char *field,
                                  char ret[FHIR_INSTANT_LEN + 1])
{
    if (us < 0 || us > FHIR_MAX_TIME_US)
        return base_fail(BASE_ERR_INVALID, "%s: %s must be between 1970 and 9999", c->where, field);
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm))
        return base_fail(BASE_ERR_INVALID, "%s: %s is out of range", c->where, field);
    int n = snprintf(ret, FHIR_INSTANT_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us % 1000000));
    if (n != FHIR_INSTANT_LEN)
        return base_fail(BASE_ERR_INTERNAL, "instant formatting failed");
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Building. Every put_* consumes or copies what it is given and omits empty values. */

/* obj[key] = v, consuming v even on failure, as jansson's *_new functions do (NULL: out of memory). */
static base_result put_new(const fhir_ctx *c, json_t *obj, const char *key, json_t *v)
{
    if (!v || json_object_set_new(obj, key, v) != 0)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    return BASE_OK_RESULT;
}

static base_result append_new(const fhir_ctx *c, json_t *arr, json_t *v)
{
    if (!v || json_array_append_new(arr, v) != 0)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    return BASE_OK_RESULT;
}

/* obj[key] = s unless s is NULL or "". `field` names the proto field in messages. */
static base_result put_str(const fhir_ctx *c, json_t *obj, const char *key, const char *s, const char *field)
{
    if (!s || !s[0])
        return BASE_OK_RESULT;
    json_t *v = json_string(s);
    if (!v)
        return base_fail(BASE_ERR_INVALID, "%s: %s is not valid UTF-8", c->where, field);
    return put_new(c, obj, key, v);
}

static base_result put_code(const fhir_ctx *c, json_t *obj, const char *key, const char *s, const char *field)
{
    if (!s || !s[0])
        return BASE_OK_RESULT;
    if (!valid_code(s))
        return base_fail(BASE_ERR_INVALID, "%s: %s is not a FHIR code", c->where, field);
    return put_str(c, obj, key, s, field);
}

static base_result put_date(const fhir_ctx *c, json_t *obj, const char *key, const char *s, const char *field)
{
    if (!s || !s[0])
        return BASE_OK_RESULT;
    if (!valid_date(s))
        return base_fail(BASE_ERR_INVALID, "%s: %s is not a date (YYYY-MM-DD)", c->where, field);
    return put_str(c, obj, key, s, field);
}

/* A date as an instant: the date at 00:00:00 UTC (fhir.h). */
static base_result put_date_instant(const fhir_ctx *c, json_t *obj, const char *key, const char *s,
                                    const char *field)
{
    if (!s || !s[0])
        return BASE_OK_RESULT;
    if (!valid_date(s))
        return base_fail(BASE_ERR_INVALID, "%s: %s is not a date (YYYY-MM-DD)", c->where, field);
    char buf[FHIR_DATE_LEN + 16];
    snprintf(buf, sizeof buf, "%sT00:00:00Z", s);
    return put_str(c, obj, key, buf, field);
}

/* obj[key] = child if it has members; consumes child either way. */
static base_result put_nonempty(const fhir_ctx *c, json_t *obj, const char *key, json_t *child)
{
    if (!child)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    if (json_object_size(child) == 0 && json_array_size(child) == 0) {
        json_decref(child);
        return BASE_OK_RESULT;
    }
    return put_new(c, obj, key, child);
}

/* {"system": system, "code": code, "display": display}: fixed values of ours. */
static json_t *coding(const char *system, const char *code, const char *display)
{
    return display ? json_pack("{s:s,s:s,s:s}", "system", system, "code", code, "display", display)
                   : json_pack("{s:s,s:s}", "system", system, "code", code);
}

/* {"coding": [coding(...)]} */
static json_t *concept(const char *system, const char *code, const char *display)
{
    return json_pack("{s:[o]}", "coding", coding(system, code, display));
}

static json_t *reference(const char *ref)
{
    return json_pack("{s:s}", "reference", ref);
}

/* The CodeableConcept of a vault Code (and `text`, may be NULL or ""); *ret NULL when both are empty. */
static base_result code_concept(const fhir_ctx *c, const Alma__Vault__V1__Code *code, const char *text,
                                const char *field, json_t **ret)
{
    BASE_CLEANUP(fhir_json_decref) json_t *cc = json_object();
    if (!cc)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    const char *sys = code ? str_or_empty(code->system) : "";
    const char *val = code ? str_or_empty(code->code) : "";
    const char *disp = code ? str_or_empty(code->display) : "";
    if (val[0] || sys[0] || disp[0]) {
        if (sys[0] && !valid_uri(sys))
            return base_fail(BASE_ERR_INVALID, "%s: %s.system is not a FHIR uri", c->where, field);
        BASE_CLEANUP(fhir_json_decref) json_t *cd = json_object();
        if (!cd)
            return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
        BASE_GUARD(put_str(c, cd, "system", sys, field));
        BASE_GUARD(put_code(c, cd, "code", val, field));
        BASE_GUARD(put_str(c, cd, "display", disp, field));
        json_t *arr = json_array();
        BASE_GUARD(put_new(c, cc, "coding", arr));
        json_t *owned = cd; /* append_new consumes it, even on failure */
        cd = NULL;
        BASE_GUARD(append_new(c, arr, owned));
    }
    BASE_GUARD(put_str(c, cc, "text", text, field));
    if (json_object_size(cc) == 0) {
        *ret = NULL;
        return BASE_OK_RESULT;
    }
    *ret = cc;
    cc = NULL;
    return BASE_OK_RESULT;
}

/* meta: versionId, lastUpdated (each omitted when 0) and the confidentiality label of sensitive items. */
static base_result put_meta(const fhir_ctx *c, json_t *res, uint32_t version, int64_t updated_us,
                            bool sensitive)
{
    BASE_CLEANUP(fhir_json_decref) json_t *m = json_object();
    if (!m)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    if (version > 0) {
        char buf[16];
        snprintf(buf, sizeof buf, "%" PRIu32, version);
        BASE_GUARD(put_str(c, m, "versionId", buf, "version"));
    }
    if (updated_us != 0) {
        char buf[FHIR_INSTANT_LEN + 1];
        BASE_GUARD(format_instant(c, updated_us, "updated time", buf));
        BASE_GUARD(put_str(c, m, "lastUpdated", buf, "updated time"));
    }
    if (sensitive)
        BASE_GUARD(put_new(c, m, "security", json_pack("[o]", coding(SYS_CONFIDENTIAL, "R", "restricted"))));
    json_t *attach = m;
    m = NULL;
    return put_nonempty(c, res, "meta", attach);
}

/* A resource's common members: resourceType, id, meta. */
static base_result new_resource(const fhir_ctx *c, const char *type, const char *id, uint32_t version,
                                int64_t updated_us, bool sensitive, json_t **ret)
{
    BASE_CLEANUP(fhir_json_decref) json_t *res = json_pack("{s:s,s:s}", "resourceType", type, "id", id);
    if (!res)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    BASE_GUARD(put_meta(c, res, version, updated_us, sensitive));
    *ret = res;
    res = NULL;
    return BASE_OK_RESULT;
}

/* Appends {"fullUrl": base/type/id, "resource": res} to entries, consuming res. */
static base_result add_entry(const fhir_ctx *c, json_t *entries, const char *type, const char *id,
                             json_t *res)
{
    char url[sizeof VAULT_FHIR_BASE_URL + 64 + FHIR_ID_LEN_MAX];
    snprintf(url, sizeof url, "%s/%s/%s", VAULT_FHIR_BASE_URL, type, id);
    json_t *e = json_pack("{s:s,s:o}", "fullUrl", url, "resource", res);
    return append_new(c, entries, e);
}

/* The base64 of data as a JSON string; wipes its buffer. */
static base_result base64_string(const fhir_ctx *c, const void *data, size_t n, const char *field,
                                 json_t **ret)
{
    if (n > ACRYPTO_MAX_INPUT)
        return base_fail(BASE_ERR_LIMIT, "%s: %s is too large", c->where, field);
    size_t cap = acrypto_base64_encode_size(n), len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    base_result r = acrypto_base64_encode(data, n, buf, cap, &len);
    json_t *s = base_is_ok(r) ? json_stringn(buf, len) : NULL;
    explicit_bzero(buf, cap);
    free(buf);
    if (!base_is_ok(r))
        return base_fail(BASE_ERR_INTERNAL, "%s: base64 encoding of %s failed", c->where, field);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
    *ret = s;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * The Patient and its Coverages. */

static base_result build_patient(fhir_ctx *c, json_t *entries)
{
    const vault_fhir_input *in = c->in;
    const Alma__Vault__V1__Patient *p = in->patient;
    snprintf(c->where, sizeof c->where, "patient");
    json_t *res = NULL;
    BASE_GUARD(
        new_resource(c, "Patient", c->patient_id, in->patient_version, in->patient_updated_us, false, &res));
    BASE_CLEANUP(fhir_json_decref) json_t *pt = res;

    /* identifier: the MRN, then the vault's own reference */
    json_t *ids = json_array();
    BASE_GUARD(put_new(c, pt, "identifier", ids));
    if (p->identifiers && p->identifiers->mrn && p->identifiers->mrn[0]) {
        char system[TENANT_MAX + 32];
        snprintf(system, sizeof system, "urn:alma:tenant:%s:mrn", in->tenant_id);
        json_t *mrn = json_pack("{s:s,s:o,s:s}", "use", "usual", "type",
                                concept(SYS_MRN_TYPE, "MR", "Medical record number"), "system", system);
        BASE_GUARD(append_new(c, ids, mrn));
        BASE_GUARD(put_str(c, mrn, "value", p->identifiers->mrn, "identifiers.mrn"));
    }
    BASE_GUARD(
        append_new(c, ids, json_pack("{s:s,s:s}", "system", SYS_PATIENT_REF, "value", in->patient_ref)));

    const Alma__Vault__V1__Demographics *d = p->demographics;
    if (d) {
        BASE_CLEANUP(fhir_json_decref) json_t *name = json_object();
        if (!name)
            return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
        BASE_GUARD(put_str(c, name, "family", d->family_name, "demographics.family_name"));
        json_t *given = json_array();
        BASE_GUARD(put_new(c, name, "given", given));
        for (size_t i = 0; i < d->n_given_names; i++) {
            const char *g = str_or_empty(d->given_names[i]);
            if (!g[0])
                continue;
            json_t *s = json_string(g);
            if (!s)
                return base_fail(BASE_ERR_INVALID, "%s: demographics.given_names is not valid UTF-8",
                                 c->where);
            BASE_GUARD(append_new(c, given, s));
        }
        if (json_array_size(given) == 0)
            json_object_del(name, "given");
        if (json_object_size(name) > 0) {
            BASE_GUARD(put_str(c, name, "use", "official", "name"));
            json_t *arr = json_array();
            BASE_GUARD(put_new(c, pt, "name", arr));
            json_t *owned = name; /* append_new consumes it, even on failure */
            name = NULL;
            BASE_GUARD(append_new(c, arr, owned));
        }
        const char *gender = NULL;
        switch (d->sex) {
        case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_FEMALE:
            gender = "female";
            break;
        case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_MALE:
            gender = "male";
            break;
        case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_OTHER:
            gender = "other";
            break;
        case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_UNKNOWN:
            gender = "unknown";
            break;
        case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_UNSPECIFIED:
            break;
        default:
            return base_fail(BASE_ERR_INVALID, "%s: demographics.sex is not a defined value", c->where);
        }
        BASE_GUARD(put_str(c, pt, "gender", gender, "demographics.sex"));
        BASE_GUARD(put_date(c, pt, "birthDate", d->birth_date, "demographics.birth_date"));
    }

    const Alma__Vault__V1__Contact *ct = p->contact;
    if (ct) {
        const Alma__Vault__V1__Address *a = ct->address;
        if (a) {
            BASE_CLEANUP(fhir_json_decref) json_t *addr = json_object();
            json_t *lines = json_array();
            if (!addr)
                return base_fail(BASE_ERR_NOMEM, "%s: out of memory building the bundle", c->where);
            BASE_GUARD(put_new(c, addr, "line", lines));
            for (size_t i = 0; i < a->n_lines; i++) {
                const char *l = str_or_empty(a->lines[i]);
                if (!l[0])
                    continue;
                json_t *s = json_string(l);
                if (!s)
                    return base_fail(BASE_ERR_INVALID, "%s: contact.address.lines is not valid UTF-8",
                                     c->where);
                BASE_GUARD(append_new(c, lines, s));
            }
            if (json_array_size(lines) == 0)
                json_object_del(addr, "line");
            BASE_GUARD(put_str(c, addr, "city", a->city, "contact.address.city"));
            BASE_GUARD(put_str(c, addr, "state", a->state, "contact.address.state"));
            BASE_GUARD(put_str(c, addr, "postalCode", a->postal_code, "contact.address.postal_code"));
            if (json_object_size(addr) > 0 || (a->country && a->country[0])) {
                const char *country = a->country && a->country[0] ? a->country : "US";
                BASE_GUARD(put_str(c, addr, "country", country, "contact.address.country"));
                json_t *arr = json_array();
                BASE_GUARD(put_new(c, pt, "address", arr));
                json_t *owned = addr; /* append_new consumes it, even on failure */
                addr = NULL;
                BASE_GUARD(append_new(c, arr, owned));
            }
        }
        json_t *telecom = json_array();
        BASE_GUARD(put_new(c, pt, "telecom", telecom));
        if (ct->phone && ct->phone[0]) {
            json_t *t = json_pack("{s:s}", "system", "phone");
            BASE_GUARD(append_new(c, telecom, t));
            BASE_GUARD(put_str(c, t, "value", ct->phone, "contact.phone"));
        }
        if (ct->email && ct->email[0]) {
            json_t *t = json_pack("{s:s}", "system", "email");
            BASE_GUARD(append_new(c, telecom, t));
            BASE_GUARD(put_str(c, t, "value", ct->email, "contact.email"));
        }
        if (json_array_size(telecom) == 0)
            json_object_del(pt, "telecom");
    }

    json_t *done = pt;
    pt = NULL;
    return add_entry(c, entries, "Patient", c->patient_id, done);
}

static base_result build_coverage(fhir_ctx *c, json_t *entries, size_t index)
{
    const Alma__Vault__V1__Coverage *cv = c->in->patient->coverage[index];
    snprintf(c->where, sizeof c->where, "coverage %zu", index);
    if (!cv)
        return base_fail(BASE_ERR_INVALID, "%s: is missing", c->where);
    if (!cv->payer_id || !cv->payer_id[0])
        return base_fail(BASE_ERR_INVALID, "%s: payer_id is required", c->where);

    char id[FHIR_ID_BUF + 32];
    int n = snprintf(id, sizeof id, "%s.coverage.%zu", c->patient_id, index + 1);
    if (n < 0 || n > FHIR_ID_LEN_MAX) /* 48 + 10 + 2 digits at most */
        return base_fail(BASE_ERR_INTERNAL, "%s: coverage id too long", c->where);
    json_t *res = NULL;
    BASE_GUARD(
        new_resource(c, "Coverage", id, c->in->patient_version, c->in->patient_updated_us, false, &res));
    BASE_CLEANUP(fhir_json_decref) json_t *cov = res;

    const char *end = str_or_empty(cv->end_date);
    bool ended = end[0] && valid_date(end) && strcmp(end, c->today) < 0;
    BASE_GUARD(put_str(c, cov, "status", ended ? "cancelled" : "active", "status"));
    BASE_GUARD(put_new(c, cov, "beneficiary", reference(c->patient_reference)));
    json_t *payor = json_pack("{s:{s:s}}", "identifier", "system", SYS_PAYER_ID);
    BASE_GUARD(put_new(c, cov, "payor", json_pack("[o]", payor)));
    BASE_GUARD(put_str(c, json_object_get(payor, "identifier"), "value", cv->payer_id, "payer_id"));
    BASE_GUARD(put_str(c, cov, "subscriberId", cv->member_id, "member_id"));

    json_t *period = json_object();
    BASE_GUARD(put_new(c, cov, "period", period));
    BASE_GUARD(put_date(c, period, "start", cv->start_date, "start_date"));
    BASE_GUARD(put_date(c, period, "end", cv->end_date, "end_date"));
    if (json_object_size(period) == 0)
        json_object_del(cov, "period");

    json_t *classes = json_array();
    BASE_GUARD(put_new(c, cov, "class", classes));
    if (cv->group_number && cv->group_number[0]) {
        json_t *g = json_pack("{s:o}", "type", concept(SYS_COVERAGE_CLS, "group", "Group"));
        BASE_GUARD(append_new(c, classes, g));
        BASE_GUARD(put_str(c, g, "value", cv->group_number, "group_number"));
    }
    if (cv->plan_name && cv->plan_name[0]) {
        json_t *pl = json_pack("{s:o}", "type", concept(SYS_COVERAGE_CLS, "plan", "Plan"));
        BASE_GUARD(append_new(c, classes, pl));
        BASE_GUARD(put_str(c, pl, "value", cv->plan_name, "plan_name"));
    }
    if (json_array_size(classes) == 0)
        json_object_del(cov, "class");

    json_t *done = cov;
    cov = NULL;
    return add_entry(c, entries, "Coverage", id, done);
}

/* ---------------------------------------------------------------------------------------------------------
 * Items. */

/* ICD-10-CM F01-F99 (mental and behavioural disorders): sensitive whatever the flag says, as on the server.
 */
static bool problem_forced_sensitive(const Alma__Vault__V1__Problem *p)
{
    if (!p || !p->code || !p->code->system || !p->code->code)
        return false;
    const char *v = p->code->code;
    return strcmp(p->code->system, SYS_ICD10CM) == 0 && v[0] == 'F' && v[1] >= '0' && v[1] <= '9' &&
           v[2] >= '0' && v[2] <= '9' && !(v[1] == '0' && v[2] == '0');
}

static base_result build_condition(fhir_ctx *c, json_t *res, const Alma__Vault__V1__Problem *p)
{
    const char *status = NULL;
    switch (p->status) {
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE:
        status = "active";
        break;
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_RESOLVED:
        status = "resolved";
        break;
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_INACTIVE:
        status = "inactive";
        break;
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_UNSPECIFIED:
        break;
    default:
        return base_fail(BASE_ERR_INVALID, "%s: problem.status is not a defined value", c->where);
    }
    if (status)
        BASE_GUARD(put_new(c, res, "clinicalStatus", concept(SYS_CLINICAL, status, NULL)));
    BASE_GUARD(
        put_new(c, res, "category",
                json_pack("[o]", concept(SYS_COND_CATEGORY, "problem-list-item", "Problem List Item"))));
    json_t *code = NULL;
    BASE_GUARD(code_concept(c, p->code, NULL, "problem.code", &code));
    if (code)
        BASE_GUARD(put_new(c, res, "code", code));
    BASE_GUARD(put_new(c, res, "subject", reference(c->patient_reference)));
    return put_date(c, res, "onsetDateTime", p->onset_date, "problem.onset_date");
}

static base_result build_observation(fhir_ctx *c, json_t *res, const Alma__Vault__V1__Observation *o)
{
    BASE_GUARD(put_str(c, res, "status", "final", "observation"));
    json_t *code = NULL;
    BASE_GUARD(code_concept(c, o->code, NULL, "observation.code", &code));
    if (!code) /* Observation.code is 1..1 */
        return base_fail(BASE_ERR_INVALID, "%s: observation.code is required", c->where);
    BASE_GUARD(put_new(c, res, "code", code));
    BASE_GUARD(put_new(c, res, "subject", reference(c->patient_reference)));
    BASE_GUARD(put_date(c, res, "effectiveDateTime", o->effective_date, "observation.effective_date"));
    switch (o->value_case) {
    case ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY: {
        if (!isfinite(o->quantity))
            return base_fail(BASE_ERR_INVALID, "%s: observation.quantity is not finite", c->where);
        json_t *q = json_object();
        BASE_GUARD(put_new(c, res, "valueQuantity", q));
        BASE_GUARD(put_new(c, q, "value", json_real(o->quantity)));
        if (o->unit && o->unit[0]) {
            BASE_GUARD(put_str(c, q, "unit", o->unit, "observation.unit"));
            BASE_GUARD(put_str(c, q, "system", SYS_UCUM, "observation.unit"));
            BASE_GUARD(put_code(c, q, "code", o->unit, "observation.unit"));
        }
        break;
    }
    case ALMA__VAULT__V1__OBSERVATION__VALUE_TEXT:
        BASE_GUARD(put_str(c, res, "valueString", o->text, "observation.text"));
        break;
    case ALMA__VAULT__V1__OBSERVATION__VALUE__NOT_SET:
        break;
    default:
        return base_fail(BASE_ERR_INVALID, "%s: observation.value is not a defined case", c->where);
    }
    return BASE_OK_RESULT;
}

static base_result build_medication(fhir_ctx *c, json_t *res, const Alma__Vault__V1__Medication *m)
{
    const char *status = NULL;
    switch (m->status) {
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_ACTIVE:
        status = "active";
        break;
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_COMPLETED:
        status = "completed";
        break;
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_STOPPED:
        status = "stopped";
        break;
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_UNSPECIFIED:
        status = "unknown"; /* MedicationStatement.status is 1..1 */
        break;
    default:
        return base_fail(BASE_ERR_INVALID, "%s: medication.status is not a defined value", c->where);
    }
    BASE_GUARD(put_str(c, res, "status", status, "medication.status"));
    json_t *med = NULL;
    BASE_GUARD(code_concept(c, m->code, m->name, "medication.code", &med));
    if (!med) /* medication[x] is 1..1 */
        return base_fail(BASE_ERR_INVALID, "%s: medication.name or medication.code is required", c->where);
    BASE_GUARD(put_new(c, res, "medicationCodeableConcept", med));
    BASE_GUARD(put_new(c, res, "subject", reference(c->patient_reference)));
    json_t *period = json_object();
    BASE_GUARD(put_new(c, res, "effectivePeriod", period));
    BASE_GUARD(put_date(c, period, "start", m->start_date, "medication.start_date"));
    BASE_GUARD(put_date(c, period, "end", m->end_date, "medication.end_date"));
    if (json_object_size(period) == 0)
        json_object_del(res, "effectivePeriod");
    if (m->dose && m->dose[0]) {
        json_t *dosage = json_object();
        BASE_GUARD(put_new(c, res, "dosage", json_pack("[o]", dosage)));
        BASE_GUARD(put_str(c, dosage, "text", m->dose, "medication.dose"));
    }
    return BASE_OK_RESULT;
}

/* DocumentReference for a note (text) or a document (bytes). */
static base_result build_document_reference(fhir_ctx *c, json_t *res, const char *kind, const char *title,
                                            const char *date, const char *content_type, const void *data,
                                            size_t len)
{
    BASE_GUARD(put_str(c, res, "status", "current", kind));
    BASE_GUARD(put_new(c, res, "category", json_pack("[o]", concept(SYS_RECORD_KIND, kind, NULL))));
    BASE_GUARD(put_new(c, res, "subject", reference(c->patient_reference)));
    BASE_GUARD(put_date_instant(c, res, "date", date, "date"));
    BASE_GUARD(put_str(c, res, "description", title, "title"));

    json_t *att = json_object();
    BASE_GUARD(put_new(c, res, "content", json_pack("[{s:o}]", "attachment", att)));
    if (content_type && content_type[0]) {
        if (!strchr(content_type, '/'))
            return base_fail(BASE_ERR_INVALID, "%s: %s media type is not a MIME type", c->where, kind);
        BASE_GUARD(put_code(c, att, "contentType", content_type, "media_type"));
    }
    if (len > 0) {
        json_t *b64 = NULL;
        BASE_GUARD(base64_string(c, data, len, "content", &b64));
        BASE_GUARD(put_new(c, att, "data", b64));
        BASE_GUARD(put_new(c, att, "size", json_integer((json_int_t)len)));
    }
    BASE_GUARD(put_str(c, att, "title", title, "title"));
    return put_date(c, att, "creation", date, "date");
}

static base_result build_item(fhir_ctx *c, json_t *entries, size_t index)
{
    const vault_fhir_item *it = &c->in->items[index];
    const Alma__Vault__V1__Item *item = it->item;
    snprintf(c->where, sizeof c->where, "item %zu", index);
    char id[FHIR_ID_BUF];
    BASE_GUARD(fhir_id(c, it->record_id, "record_id", id));
    if (!item)
        return base_fail(BASE_ERR_INVALID, "%s: item is required", c->where);

    const char *type = NULL;
    bool sensitive = item->sensitive;
    switch (item->body_case) {
    case ALMA__VAULT__V1__ITEM__BODY_PROBLEM:
        type = "Condition";
        sensitive = sensitive || problem_forced_sensitive(item->problem);
        break;
    case ALMA__VAULT__V1__ITEM__BODY_OBSERVATION:
        type = "Observation";
        break;
    case ALMA__VAULT__V1__ITEM__BODY_MEDICATION:
        type = "MedicationStatement";
        break;
    case ALMA__VAULT__V1__ITEM__BODY_NOTE:
    case ALMA__VAULT__V1__ITEM__BODY_DOCUMENT:
        type = "DocumentReference";
        break;
    case ALMA__VAULT__V1__ITEM__BODY__NOT_SET:
    default:
        return base_fail(BASE_ERR_INVALID, "%s: item has no body", c->where);
    }
    /* The union member of every case is a message pointer: NULL there is a body without content. */
    if (!item->problem)
        return base_fail(BASE_ERR_INVALID, "%s: item has no body", c->where);

    json_t *res = NULL;
    BASE_GUARD(new_resource(c, type, id, it->version, it->updated_us, sensitive, &res));
    BASE_CLEANUP(fhir_json_decref) json_t *r = res;
    BASE_GUARD(put_new(c, r, "identifier",
                       json_pack("[{s:s,s:s}]", "system", SYS_RECORD_ID, "value", it->record_id)));

    switch (item->body_case) {
    case ALMA__VAULT__V1__ITEM__BODY_PROBLEM:
        BASE_GUARD(build_condition(c, r, item->problem));
        break;
    case ALMA__VAULT__V1__ITEM__BODY_OBSERVATION:
        BASE_GUARD(build_observation(c, r, item->observation));
        break;
    case ALMA__VAULT__V1__ITEM__BODY_MEDICATION:
        BASE_GUARD(build_medication(c, r, item->medication));
        break;
    case ALMA__VAULT__V1__ITEM__BODY_NOTE: {
        const Alma__Vault__V1__Note *n = item->note;
        const char *text = str_or_empty(n->text);
        BASE_GUARD(build_document_reference(c, r, "note", n->title, n->date, "text/plain; charset=utf-8",
                                            text, strlen(text)));
        break;
    }
    case ALMA__VAULT__V1__ITEM__BODY_DOCUMENT: {
        const Alma__Vault__V1__Document *d = item->document;
        BASE_GUARD(build_document_reference(c, r, "document", d->title, d->date, d->media_type,
                                            d->content.data, d->content.data ? d->content.len : 0));
        break;
    }
    case ALMA__VAULT__V1__ITEM__BODY__NOT_SET:
    default:
        return base_fail(BASE_ERR_INTERNAL, "%s: unexpected item body", c->where);
    }

    json_t *done = r;
    r = NULL;
    return add_entry(c, entries, type, id, done);
}

/* ---------------------------------------------------------------------------------------------------------
 * Input checks, size estimate, and writing. */

static int compare_record_ids(const void *a, const void *b)
{
    const vault_fhir_item *x = *(const vault_fhir_item *const *)a, *y = *(const vault_fhir_item *const *)b;
    return strcmp(x->record_id, y->record_id);
}

/* Duplicate record ids would give two entries the same fullUrl (R4 bdl-7). Record ids are checked already. */
static base_result check_unique_records(const vault_fhir_input *in)
{
    if (in->item_count < 2)
        return BASE_OK_RESULT;
    const vault_fhir_item **sorted = malloc(in->item_count * sizeof *sorted);
    if (!sorted)
        return base_fail(BASE_ERR_NOMEM, "out of memory checking record ids");
    for (size_t i = 0; i < in->item_count; i++)
        sorted[i] = &in->items[i];
    qsort(sorted, in->item_count, sizeof *sorted, compare_record_ids);
    bool dup = false;
    for (size_t i = 1; i < in->item_count && !dup; i++)
        dup = strcmp(sorted[i - 1]->record_id, sorted[i]->record_id) == 0;
    free(sorted);
    if (dup)
        return base_fail(BASE_ERR_INVALID, "two items have the same record_id");
    return BASE_OK_RESULT;
}

/* A rough size of the text from its large values (attachments, in base64), to refuse a clearly oversized
 * export before building it; the writer enforces the exact bound. */
static size_t estimate_size(const vault_fhir_input *in)
{
    size_t total = ITEM_OVERHEAD * (1 + in->patient->n_coverage);
    for (size_t i = 0; i < in->item_count; i++) {
        const Alma__Vault__V1__Item *item = in->items[i].item;
        size_t big = 0;
        if (item && item->body_case == ALMA__VAULT__V1__ITEM__BODY_NOTE && item->note && item->note->text)
            big = strlen(item->note->text);
        else if (item && item->body_case == ALMA__VAULT__V1__ITEM__BODY_DOCUMENT && item->document)
            big = item->document->content.len;
        if (big > VAULT_FHIR_MAX_BYTES)
            return SIZE_MAX;
        total += ITEM_OVERHEAD + (big / 3 + 1) * 4;
        if (total > VAULT_FHIR_MAX_BYTES)
            return total;
    }
    return total;
}

static base_result check_input(fhir_ctx *c)
{
    const vault_fhir_input *in = c->in;
    snprintf(c->where, sizeof c->where, "export");
    if (!valid_tenant(in->tenant_id))
        return base_fail(BASE_ERR_INVALID, "export: tenant_id is required (1..%d of [A-Za-z0-9._-])",
                         TENANT_MAX);
    BASE_GUARD(fhir_id(c, in->patient_ref, "patient_ref", c->patient_id));
    BASE_GUARD(fhir_id(c, in->bundle_id, "bundle_id", c->bundle_id));
    if (!in->patient)
        return base_fail(BASE_ERR_INVALID, "export: patient is required");
    if (in->now_us <= 0)
        return base_fail(BASE_ERR_INVALID, "export: now_us is required");
    if (in->patient_updated_us < 0)
        return base_fail(BASE_ERR_INVALID, "export: patient_updated_us is negative");
    if (in->item_count > VAULT_FHIR_MAX_ITEMS)
        return base_fail(BASE_ERR_LIMIT, "export: more than %d items", VAULT_FHIR_MAX_ITEMS);
    if (in->item_count > 0 && !in->items)
        return base_fail(BASE_ERR_INVALID, "export: items is required with item_count");
    if (in->patient->n_coverage > VAULT_FHIR_MAX_COVERAGE)
        return base_fail(BASE_ERR_LIMIT, "export: more than %d coverages", VAULT_FHIR_MAX_COVERAGE);
    if (in->patient->n_coverage > 0 && !in->patient->coverage)
        return base_fail(BASE_ERR_INVALID, "export: patient.coverage is missing");
    for (size_t i = 0; i < in->item_count; i++) {
        char id[FHIR_ID_BUF];
        snprintf(c->where, sizeof c->where, "item %zu", i);
        BASE_GUARD(fhir_id(c, in->items[i].record_id, "record_id", id));
        if (in->items[i].updated_us < 0)
            return base_fail(BASE_ERR_INVALID, "%s: updated_us is negative", c->where);
    }
    BASE_GUARD(check_unique_records(in));
    if (estimate_size(in) > VAULT_FHIR_MAX_BYTES)
        return base_fail(BASE_ERR_LIMIT, "export: the bundle would exceed %zu bytes", VAULT_FHIR_MAX_BYTES);

    BASE_GUARD(format_instant(c, in->now_us, "now_us", c->now));
    memcpy(c->today, c->now, FHIR_DATE_LEN);
    c->today[FHIR_DATE_LEN] = '\0';
    snprintf(c->patient_reference, sizeof c->patient_reference, "Patient/%s", c->patient_id);
    return BASE_OK_RESULT;
}

/* The dump's output buffer: grows by doubling up to VAULT_FHIR_MAX_BYTES, wiping what it leaves behind. */
typedef struct out_buf {
    char *data;
    size_t len, cap;
    bool too_big, no_mem;
} out_buf;

static int out_write(const char *buffer, size_t size, void *data)
{
    out_buf *o = data;
    if (size > VAULT_FHIR_MAX_BYTES - o->len) {
        o->too_big = true;
        return -1;
    }
    if (o->len + size + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 64 * 1024;
        while (cap < o->len + size + 1)
            cap *= 2;
        char *grown = malloc(cap);
        if (!grown) {
            o->no_mem = true;
            return -1;
        }
        if (o->data) {
            memcpy(grown, o->data, o->len);
            explicit_bzero(o->data, o->cap);
            free(o->data);
        }
        o->data = grown;
        o->cap = cap;
    }
    memcpy(o->data + o->len, buffer, size);
    o->len += size;
    o->data[o->len] = '\0';
    return 0;
}

static void out_wipe(out_buf *o)
{
    if (o->data) {
        explicit_bzero(o->data, o->cap);
        free(o->data);
    }
    *o = (out_buf){0};
}

base_result vault_fhir_bundle(const vault_fhir_input *in, char **ret_json, size_t *ret_len,
                              uint32_t *ret_resources)
{
    if (!in || !ret_json || !ret_len)
        return base_fail(BASE_ERR_INVALID, "vault_fhir_bundle: input and outputs are required");
    fhir_ctx c = {.in = in};
    BASE_GUARD(check_input(&c));

    BASE_CLEANUP(fhir_json_decref)
    json_t *bundle = json_pack("{s:s,s:s,s:s,s:s,s:[]}", "resourceType", "Bundle", "id", c.bundle_id, "type",
                               "collection", "timestamp", c.now, "entry");
    if (!bundle)
        return base_fail(BASE_ERR_NOMEM, "export: out of memory building the bundle");
    json_t *entries = json_object_get(bundle, "entry");

    BASE_GUARD(build_patient(&c, entries));
    for (size_t i = 0; i < in->patient->n_coverage; i++)
        BASE_GUARD(build_coverage(&c, entries, i));
    for (size_t i = 0; i < in->item_count; i++)
        BASE_GUARD(build_item(&c, entries, i));

    out_buf out = {0};
    if (json_dump_callback(bundle, out_write, &out, FHIR_DUMP_FLAGS) != 0 || !out.data) {
        bool too_big = out.too_big;
        out_wipe(&out);
        if (too_big)
            return base_fail(BASE_ERR_LIMIT, "export: the bundle exceeds %zu bytes", VAULT_FHIR_MAX_BYTES);
        return base_fail(BASE_ERR_NOMEM, "export: out of memory writing the bundle");
    }
    size_t resources = json_array_size(entries);
    *ret_json = out.data;
    *ret_len = out.len;
    if (ret_resources)
        *ret_resources = (uint32_t)resources;
    return BASE_OK_RESULT;
}
