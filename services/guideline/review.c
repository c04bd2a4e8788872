/* alma.guideline.v1.Guideline: ReviewReferral, RecordDecision, GetReferralHistory, WhatIf, GetConcordance
 * (service_internal.h has the order every handler follows).
 *
 * ReviewReferral: audit first, then store. The review id is made before the audit event, the RECOMMEND event
 * (with the GuidelineRef and the review id) is appended, then the review is stored; a store failure after
 * the audit appends an ERROR event for the same review. So no recommendation leaves unaudited, and an audit
 * log that is down means UNAVAILABLE with nothing stored and nothing returned. A crash between the two
 * leaves a RECOMMEND event whose review id names no stored review (and no answer reached the caller): the
 * log may hold an attempt the store does not, never the reverse. The review is stored by the group-commit
 * writer (store.h, gs_writer) and answered only once its batch is committed. */
#include "service_internal.h"
#include "shapes.h"

#include "base/log.h"
#include "vault/v1/vault.pb-c.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define G(x)                ALMA__GUIDELINE__V1__##x
#define REVIEW_PERMISSION   "referral.review"
#define CLINICAL_PERMISSION "phi.read.clinical"
#define MAX_FLAGS           GL_INPUT_MAX_FLAGS
#define MAX_FINDINGS        GL_INPUT_MAX_FINDINGS
#define MAX_REASON_CODES    16
#define WHATIF_MAX_IDS      1000

/* ---- Checks -------------------------------------------------------------------------------------------- */

static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (p[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

static bool valid_review_id(const char *s)
{
    return s && strncmp(s, "rv_", 3) == 0 && gsvc_is_hex(s + 3, 32);
}

/* A named bundle in a request: RPC_OK with id/version set ("" for the active one). */
static rpc_code check_bundle_ref(rpc_ctx *ctx, const Alma__Guideline__V1__BundleRef *b, bool required)
{
    bool named = b && b->bundle_id && b->bundle_id[0];
    if (!named) {
        if (required)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "bundle: bundle_id and version required");
        return RPC_OK;
    }
    if (strlen(b->bundle_id) > GS_BUNDLE_ID_MAX || !b->version || !b->version[0] ||
        strlen(b->version) > GS_VERSION_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "bundle: bundle_id (at most %d bytes) and version (1..%d bytes) required together",
                        GS_BUNDLE_ID_MAX, GS_VERSION_MAX);
    if (b->content_hash && b->content_hash[0] && !gsvc_is_hex(b->content_hash, GS_HASH_LEN))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "bundle.content_hash: 64 lowercase hex digits or empty");
    return RPC_OK;
}

/* The request's bundle (or the active one), its hash checked against the request's when one is given. */
static rpc_code pick_bundle(rpc_ctx *ctx, const Alma__Guideline__V1__BundleRef *b, const gsvc_loaded **ret)
{
    bool named = b && b->bundle_id && b->bundle_id[0];
    rpc_code code = gsvc_bundle(ctx, named ? b->bundle_id : NULL, named ? b->version : NULL, ret);
    if (code != RPC_OK)
        return code;
    if (named && b->content_hash && b->content_hash[0] && strcmp(b->content_hash, (*ret)->hash) != 0)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "bundle.content_hash: not the published bundle's hash");
    return RPC_OK;
}

/* ---- Mapping ------------------------------------------------------------------------------------------- */

static int proto_outcome(gl_outcome o)
{
    switch (o) {
    case GL_REFER:
        return G(OUTCOME__OUTCOME_REFER);
    case GL_WORKUP:
        return G(OUTCOME__OUTCOME_WORKUP);
    case GL_MANAGE:
        return G(OUTCOME__OUTCOME_MANAGE);
    case GL_INSUFFICIENT:
        return G(OUTCOME__OUTCOME_INSUFFICIENT);
    case GL_NO_PATHWAY:
    default:
        return G(OUTCOME__OUTCOME_NO_PATHWAY);
    }
}

static int proto_urgency(const char *u)
{
    if (strcmp(u, "routine") == 0)
        return G(URGENCY__URGENCY_ROUTINE);
    if (strcmp(u, "urgent") == 0)
        return G(URGENCY__URGENCY_URGENT);
    if (strcmp(u, "emergency") == 0)
        return G(URGENCY__URGENCY_EMERGENCY);
    return G(URGENCY__URGENCY_UNSPECIFIED);
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static char **string_list(rpc_ctx *ctx, json_t *arr, size_t *ret_n)
{
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    char **out = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *out);
    *ret_n = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        out[(*ret_n)++] = rpc_ctx_strdup(ctx, s ? s : "");
    }
    return out;
}

/* JSON text of a value in the canonical form (arena). */
static char *canonical_of(rpc_ctx *ctx, json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!text)
        return rpc_ctx_strdup(ctx, "[]");
    char *canon = NULL;
    size_t len = 0;
    char *out;
    if (base_is_ok(gl_canonical_json(text, strlen(text), GL_INPUT_MAX_BYTES, &canon, &len))) {
        out = rpc_ctx_strdup(ctx, canon);
        free(canon);
    } else {
        out = rpc_ctx_strdup(ctx, text);
    }
    free(text);
    return out;
}

/* The "fired" array of a recommendation as FiredRules (arena); NULL only when out of memory. */
static Alma__Guideline__V1__FiredRule **fired_rules(rpc_ctx *ctx, json_t *fired, size_t *ret_n)
{
    size_t nf = json_is_array(fired) ? json_array_size(fired) : 0;
    Alma__Guideline__V1__FiredRule **out = rpc_ctx_alloc(ctx, (nf ? nf : 1) * sizeof *out);
    *ret_n = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < nf; i++) {
        json_t *f = json_array_get(fired, i);
        Alma__Guideline__V1__FiredRule *fr = rpc_ctx_alloc(ctx, sizeof *fr);
        if (!fr)
            break;
        alma__guideline__v1__fired_rule__init(fr);
        fr->rule_id = rpc_ctx_strdup(ctx, jstr(f, "rule"));
        json_t *values = json_object_get(f, "values");
        fr->values_json = values ? canonical_of(ctx, values) : rpc_ctx_strdup(ctx, "[]");
        out[(*ret_n)++] = fr;
    }
    return out;
}

/* A stored review's details from its recommendation JSON into a what-if change: the pathway is a column, the
 * fired rules come from the JSON; new_* from the version tried. */
static bool whatif_fired(rpc_ctx *ctx, const char *json, size_t len, Alma__Guideline__V1__FiredRule ***ret,
                         size_t *ret_n, char **ret_explain)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    *ret_n = 0;
    if (!json_is_object(root)) {
        json_decref(root);
        *ret = rpc_ctx_alloc(ctx, sizeof **ret);
        return *ret != NULL;
    }
    *ret = fired_rules(ctx, json_object_get(root, "fired"), ret_n);
    if (ret_explain)
        *ret_explain = rpc_ctx_strdup(ctx, jstr(root, "explain"));
    json_decref(root);
    return *ret != NULL && (!ret_explain || *ret_explain);
}

/* A stored review as the API's Review: the summary columns, and the details from its recommendation. */
static rpc_code fill_review(rpc_ctx *ctx, const gs_review *r, Alma__Guideline__V1__Review *out)
{
    out->review_id = rpc_ctx_strdup(ctx, r->review_id);
    out->tenant_id = rpc_ctx_strdup(ctx, r->tenant_id);
    out->referral_id = rpc_ctx_strdup(ctx, r->referral_id);
    out->patient_ref = rpc_ctx_strdup(ctx, r->patient_ref);
    out->clinician_id = rpc_ctx_strdup(ctx, r->clinician_id);
    out->outcome = (Alma__Guideline__V1__Outcome)r->outcome;
    out->urgency = (Alma__Guideline__V1__Urgency)r->urgency;
    out->pathway_id = rpc_ctx_strdup(ctx, r->pathway_id);
    out->rule_id = rpc_ctx_strdup(ctx, r->rule_id);
    out->engine_version = rpc_ctx_strdup(ctx, r->engine_version);
    out->bundle = gsvc_bundle_ref(ctx, r->bundle_id, r->bundle_version, r->bundle_hash);
    out->input_hash = rpc_ctx_strdup(ctx, r->input_hash);
    out->create_time = gsvc_timestamp(ctx, r->created_us);
    uint8_t *rec = rpc_ctx_alloc(ctx, r->recommendation_len + 1);
    if (!rec || !out->bundle)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(rec, r->recommendation_json, r->recommendation_len);
    out->recommendation_json.data = rec;
    out->recommendation_json.len = r->recommendation_len;

    json_error_t jerr;
    json_t *root = json_loadb(r->recommendation_json, r->recommendation_len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "a stored recommendation is not a JSON object", "review",
                 r->review_id, NULL);
        return rpc_fail(ctx, RPC_DATA_LOSS, "a stored recommendation is unreadable");
    }
    out->explain = rpc_ctx_strdup(ctx, jstr(root, "explain"));
    out->tests = string_list(ctx, json_object_get(root, "tests"), &out->n_tests);
    out->steps = string_list(ctx, json_object_get(root, "steps"), &out->n_steps);
    out->needs = string_list(ctx, json_object_get(root, "needs"), &out->n_needs);
    json_t *fired = json_object_get(root, "fired"), *cites = json_object_get(root, "citations");
    size_t nc = json_is_array(cites) ? json_array_size(cites) : 0;
    out->fired = fired_rules(ctx, fired, &out->n_fired);
    out->citations = rpc_ctx_alloc(ctx, (nc ? nc : 1) * sizeof *out->citations);
    if (!out->fired || !out->citations) {
        json_decref(root);
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < nc; i++) {
        json_t *c = json_array_get(cites, i);
        Alma__Guideline__V1__Citation *ci = rpc_ctx_alloc(ctx, sizeof *ci);
        if (!ci)
            break;
        alma__guideline__v1__citation__init(ci);
        ci->rule_id = rpc_ctx_strdup(ctx, jstr(c, "rule"));
        ci->guideline = rpc_ctx_strdup(ctx, jstr(c, "guideline"));
        ci->year = (int32_t)json_integer_value(json_object_get(c, "year"));
        ci->section = rpc_ctx_strdup(ctx, jstr(c, "section"));
        out->citations[out->n_citations++] = ci;
    }
    json_decref(root);
    return RPC_OK;
}

static Alma__Guideline__V1__Review *new_review(rpc_ctx *ctx)
{
    Alma__Guideline__V1__Review *r = rpc_ctx_alloc(ctx, sizeof *r);
    if (r)
        alma__guideline__v1__review__init(r);
    return r;
}

static void fill_decision(rpc_ctx *ctx, const gs_decision *d, Alma__Guideline__V1__Decision *out)
{
    out->decision_id = rpc_ctx_strdup(ctx, d->decision_id);
    out->review_id = rpc_ctx_strdup(ctx, d->review_id);
    out->tenant_id = rpc_ctx_strdup(ctx, d->tenant_id);
    out->clinician_id = rpc_ctx_strdup(ctx, d->clinician_id);
    out->kind = (Alma__Guideline__V1__DecisionKind)d->kind;
    out->reason = (Alma__Guideline__V1__OverrideReason)d->reason;
    out->comment = rpc_ctx_strdup(ctx, d->comment);
    out->create_time = gsvc_timestamp(ctx, d->created_us);
}

/* The deciding rule's citation as the audit's source: "guideline year section" (at most 500 bytes). */
static const char *audit_source(rpc_ctx *ctx, const Alma__Guideline__V1__Review *rv, const gsvc_loaded *b)
{
    char *src;
    if (rv->n_citations > 0)
        src = rpc_ctx_printf(ctx, "%s %d %s", rv->citations[0]->guideline, (int)rv->citations[0]->year,
                             rv->citations[0]->section);
    else
        src = rpc_ctx_printf(ctx, "%s %s: no pathway", b->bundle_id, b->version);
    if (!src)
        return "unknown";
    size_t n = strlen(src);
    if (n > 500) {
        n = 500;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
        src[n] = '\0';
    }
    return src;
}

/* ---- The referral input -------------------------------------------------------------------------------- */

/* The referral input (root, consumed) with the request's specialty, reason codes, flags and findings merged
 * in (the request wins: specialty and reason_codes replace the input's; flags and findings are added,
 * replacing same-named ones; a finding that reads entirely as a finite number is a number, else a text).
 * *ret: the merged tree (the caller's reference: json_decref it). */
static rpc_code merge_into(rpc_ctx *ctx, const Alma__Guideline__V1__ReviewReferralRequest *req, json_t *root,
                           json_t **ret)
{
    rpc_code code = RPC_OK;
    json_object_set_new(root, "specialty", json_string(req->specialty));
    json_t *codes = json_array();
    for (size_t i = 0; i < req->n_reason_codes; i++)
        json_array_append_new(codes, json_string(req->reason_codes[i]));
    json_object_set_new(root, "reason_codes", codes);
    if (req->n_flags) {
        json_t *flags = json_object_get(root, "flags");
        if (!flags) {
            flags = json_object();
            json_object_set_new(root, "flags", flags);
        }
        if (!json_is_object(flags))
            code = rpc_fail(ctx, RPC_INVALID_ARGUMENT, "input_json.flags: not an object");
        for (size_t i = 0; code == RPC_OK && i < req->n_flags; i++)
            json_object_set_new(flags, req->flags[i]->key, json_boolean(req->flags[i]->value));
    }
    if (code == RPC_OK && req->n_findings) {
        json_t *findings = json_object_get(root, "findings");
        if (!findings) {
            findings = json_object();
            json_object_set_new(root, "findings", findings);
        }
        if (!json_is_object(findings))
            code = rpc_fail(ctx, RPC_INVALID_ARGUMENT, "input_json.findings: not an object");
        for (size_t i = 0; code == RPC_OK && i < req->n_findings; i++) {
            const char *v = req->findings[i]->value;
            char *end = NULL;
            double d = strtod(v, &end);
            bool number =
                end != v && *end == '\0' && isfinite(d) && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'));
            json_object_set_new(findings, req->findings[i]->key, number ? json_real(d) : json_string(v));
        }
    }
    if (code == RPC_OK) {
        *ret = root;
        return RPC_OK;
    }
    json_decref(root);
    return code;
}

/* merge_into() over the request's input_json. */
static rpc_code merge_input(rpc_ctx *ctx, const Alma__Guideline__V1__ReviewReferralRequest *req, json_t **ret)
{
    json_error_t jerr;
    json_t *root = json_loadb(req->input_json, strlen(req->input_json), JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "input_json: not a JSON object (BUNDLE-FORMAT.md)");
    }
    return merge_into(ctx, req, root, ret);
}

/* ---- from_vault ---------------------------------------------------------------------------------------- */

#define VAULT_METHOD(n) "/alma.vault.v1.Vault/" n
#define VAULT_PAGES_MAX 20 /* pages of 100 items read for one review */
#define ICD10_SYSTEM    "http://hl7.org/fhir/sid/icd-10-cm"
#define LOINC_SYSTEM    "http://loinc.org"
#define RXNORM_SYSTEM   "http://www.nlm.nih.gov/research/umls/rxnorm"
#define VT(x)           Alma__Vault__V1__##x

/* A vault failure as this call's status (the vault's messages name fields and rules, never values). */
static rpc_code vault_fail(rpc_ctx *ctx, rpc_code code, const rpc_status *st)
{
    switch (code) {
    case RPC_PERMISSION_DENIED:
    case RPC_UNAUTHENTICATED:
    case RPC_NOT_FOUND:
    case RPC_UNAVAILABLE:
    case RPC_DEADLINE_EXCEEDED:
    case RPC_INVALID_ARGUMENT:
        return rpc_fail(ctx, code == RPC_INVALID_ARGUMENT ? RPC_FAILED_PRECONDITION : code, "vault: %s",
                        st->message);
    default:
        return rpc_fail(ctx, RPC_UNAVAILABLE, "vault: %s", rpc_code_name(code));
    }
}

static int parse_int(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Whole years between two dates "YYYY-MM-DD"; -1 when either is malformed. */
static int age_years(const char *birth, const char *as_of)
{
    if (!birth || strlen(birth) != 10 || strlen(as_of) != 10)
        return -1;
    int by = parse_int(birth, 4), bm = parse_int(birth + 5, 2), bd = parse_int(birth + 8, 2);
    int ay = parse_int(as_of, 4), am = parse_int(as_of + 5, 2), ad = parse_int(as_of + 8, 2);
    if (by < 0 || bm < 0 || bd < 0 || ay < 0 || am < 0 || ad < 0)
        return -1;
    int age = ay - by - ((am < bm || (am == bm && ad < bd)) ? 1 : 0);
    return age < 0 ? -1 : age;
}

static bool date_ok(const char *d, const char *as_of)
{
    return d && strlen(d) == 10 && strcmp(d, as_of) <= 0 && strcmp(d, "1900-01-01") >= 0;
}

static bool all_digits(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* One vault item into the input's lists (items the engine cannot read are left out). */
static void vault_item(const VT(Item) * it, const char *as_of, json_t *problems, json_t *observations,
                       json_t *medications)
{
    if (it->body_case == ALMA__VAULT__V1__ITEM__BODY_PROBLEM && it->problem && it->problem->code) {
        const VT(Problem) *p = it->problem;
        static const char *const status[] = {NULL, "active", "resolved", "inactive"};
        if (strcmp(p->code->system, ICD10_SYSTEM) != 0 || !gl_valid_icd10(p->code->code) || p->status < 1 ||
            p->status > 3 || json_array_size(problems) >= GL_INPUT_MAX_PROBLEMS)
            return;
        json_array_append_new(problems,
                              json_pack("{s:s,s:s}", "code", p->code->code, "status", status[p->status]));
    } else if (it->body_case == ALMA__VAULT__V1__ITEM__BODY_OBSERVATION && it->observation &&
               it->observation->code) {
        const VT(Observation) *o = it->observation;
        if (strcmp(o->code->system, LOINC_SYSTEM) != 0 ||
            o->value_case != ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY || !o->unit || !o->unit[0] ||
            !date_ok(o->effective_date, as_of) || !isfinite(o->quantity) ||
            fabs(o->quantity) > GL_INPUT_MAX_ABS_VALUE ||
            json_array_size(observations) >= GL_INPUT_MAX_OBSERVATIONS)
            return;
        json_array_append_new(observations,
                              json_pack("{s:s,s:f,s:s,s:s}", "code", o->code->code, "value", o->quantity,
                                        "unit", o->unit, "date", o->effective_date));
    } else if (it->body_case == ALMA__VAULT__V1__ITEM__BODY_MEDICATION && it->medication) {
        const VT(Medication) *m = it->medication;
        static const char *const status[] = {NULL, "active", "completed", "stopped"};
        if (m->status < 1 || m->status > 3 || !m->name || !m->name[0] ||
            strlen(m->name) > GL_INPUT_MAX_TEXT || !date_ok(m->start_date, as_of) ||
            json_array_size(medications) >= GL_INPUT_MAX_MEDICATIONS)
            return;
        json_t *med =
            json_pack("{s:s,s:s,s:s}", "name", m->name, "start", m->start_date, "status", status[m->status]);
        if (m->end_date && m->end_date[0] && date_ok(m->end_date, as_of) &&
            strcmp(m->end_date, m->start_date) >= 0)
            json_object_set_new(med, "end", json_string(m->end_date));
        if (m->code && strcmp(m->code->system, RXNORM_SYSTEM) == 0 && all_digits(m->code->code, 10))
            json_object_set_new(med, "rxnorm", json_string(m->code->code));
        json_array_append_new(medications, med);
    }
}

/* The referral input built from the vault under TREATMENT with the caller's own token (the vault checks the
 * caller's view and relationship and audits its disclosure): the patient's age and sex (GetPatient),
 * ICD-10-CM problems, LOINC quantities and medications (ListItems), as of today (UTC); then the request's
 * specialty, reason codes, flags and findings merged as for input_json. */
static rpc_code vault_input(rpc_ctx *ctx, const Alma__Guideline__V1__ReviewReferralRequest *req, json_t **ret)
{
    gsvc_service *s = gsvc_of(ctx);
    if (!s->vault)
        return rpc_fail(ctx, RPC_UNIMPLEMENTED, "from_vault is not available: the service has no vault-addr");
    char as_of[16];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(as_of, sizeof as_of, "%Y-%m-%d", &tm);
    rpc_call_opts o = {.timeout_ms = 10000, .authorization = rpc_ctx_authorization(ctx), .parent = ctx};
    rpc_status st;

    VT(GetPatientRequest) preq = ALMA__VAULT__V1__GET_PATIENT_REQUEST__INIT;
    preq.tenant_id = req->tenant_id;
    preq.patient_ref = req->patient_ref;
    preq.purpose = GSVC_PURPOSE_TREATMENT;
    ProtobufCMessage *presp = NULL;
    rpc_code code = rpc_call_unary(s->vault, VAULT_METHOD("GetPatient"), &preq.base,
                                   &alma__vault__v1__get_patient_response__descriptor, &o, &presp, &st);
    if (code != RPC_OK)
        return vault_fail(ctx, code, &st);
    const VT(GetPatientResponse) *pr = (const VT(GetPatientResponse) *)presp;
    static const char *const sexes[] = {"unknown", "female", "male", "other", "unknown"};
    int age = -1, sex = 0;
    if (pr->patient && pr->patient->demographics) {
        age = age_years(pr->patient->demographics->birth_date, as_of);
        sex = pr->patient->demographics->sex >= 0 && pr->patient->demographics->sex <= 4
                  ? (int)pr->patient->demographics->sex
                  : 0;
    } else if (pr->age_years > 0) {
        age = (int)pr->age_years;
    }
    protobuf_c_message_free_unpacked(presp, NULL);
    if (age < 0 || age > GL_INPUT_MAX_AGE)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION,
                        "vault: the patient's birth date is not available to the caller");

    json_t *root = json_object(), *problems = json_array(), *observations = json_array(),
           *medications = json_array();
    json_object_set_new(root, "as_of", json_string(as_of));
    json_object_set_new(root, "patient", json_pack("{s:i,s:s}", "age", age, "sex", sexes[sex]));
    json_object_set_new(root, "problems", problems);
    json_object_set_new(root, "observations", observations);
    json_object_set_new(root, "medications", medications);

    char *page_token = NULL;
    for (int page = 0; page < VAULT_PAGES_MAX; page++) {
        VT(ListItemsRequest) lreq = ALMA__VAULT__V1__LIST_ITEMS_REQUEST__INIT;
        lreq.tenant_id = req->tenant_id;
        lreq.patient_ref = req->patient_ref;
        lreq.purpose = GSVC_PURPOSE_TREATMENT;
        lreq.page_size = 100;
        lreq.page_token = page_token ? page_token : "";
        ProtobufCMessage *lresp = NULL;
        code = rpc_call_unary(s->vault, VAULT_METHOD("ListItems"), &lreq.base,
                              &alma__vault__v1__list_items_response__descriptor, &o, &lresp, &st);
        if (code != RPC_OK) {
            json_decref(root);
            return vault_fail(ctx, code, &st);
        }
        const VT(ListItemsResponse) *lr = (const VT(ListItemsResponse) *)lresp;
        for (size_t i = 0; i < lr->n_items; i++)
            if (lr->items[i]->item)
                vault_item(lr->items[i]->item, as_of, problems, observations, medications);
        page_token =
            lr->next_page_token && lr->next_page_token[0] ? rpc_ctx_strdup(ctx, lr->next_page_token) : NULL;
        protobuf_c_message_free_unpacked(lresp, NULL);
        if (!page_token)
            break;
    }
    return merge_into(ctx, req, root, ret);
}

static rpc_code check_review_request(rpc_ctx *ctx, const Alma__Guideline__V1__ReviewReferralRequest *req)
{
    rpc_code code = gsvc_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (!gl_valid_referral_id(req->referral_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "referral_id: required, 1..64 of [A-Za-z0-9_-]");
    if (!req->patient_ref || !authz_valid_patient_ref(req->patient_ref))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "patient_ref: required, \"pt_\" + 32 lowercase hex digits");
    if (!gl_valid_name(req->specialty, GL_NAME_MAX, true, true))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "specialty: required, [a-z0-9][a-z0-9_-]{0,63}");
    if (req->n_reason_codes < 1 || req->n_reason_codes > MAX_REASON_CODES)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "reason_codes: 1..%d ICD-10-CM codes", MAX_REASON_CODES);
    for (size_t i = 0; i < req->n_reason_codes; i++)
        if (!gl_valid_icd10(req->reason_codes[i]))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "reason_codes[%zu]: not an ICD-10-CM code", i);
    if (req->n_flags > MAX_FLAGS)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "flags: at most %d", MAX_FLAGS);
    for (size_t i = 0; i < req->n_flags; i++)
        if (!gl_valid_name(req->flags[i]->key, GL_NAME_MAX, false, false))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "flags: names are [a-z][a-z0-9_]{0,63}");
    if (req->n_findings > MAX_FINDINGS)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "findings: at most %d", MAX_FINDINGS);
    for (size_t i = 0; i < req->n_findings; i++) {
        if (!gl_valid_name(req->findings[i]->key, GL_NAME_MAX, false, false))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "findings: names are [a-z][a-z0-9_]{0,63}");
        size_t n = req->findings[i]->value ? strlen(req->findings[i]->value) : 0;
        if (n < 1 || n > GL_INPUT_MAX_TEXT || !valid_utf8(req->findings[i]->value, n))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "findings[%zu]: a value of 1..%d bytes of UTF-8", i,
                            GL_INPUT_MAX_TEXT);
    }
    switch (req->data_case) {
    case G(REVIEW_REFERRAL_REQUEST__DATA_INPUT_JSON):
        if (!req->input_json || !req->input_json[0])
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "input_json: empty");
        if (strlen(req->input_json) > GL_INPUT_MAX_BYTES)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "input_json: at most %d bytes", GL_INPUT_MAX_BYTES);
        break;
    case G(REVIEW_REFERRAL_REQUEST__DATA_FROM_VAULT):
        if (!req->from_vault)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "input_json or from_vault: required");
        break;
    default:
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "input_json or from_vault: required");
    }
    return check_bundle_ref(ctx, req->bundle, false);
}

/* ---- ReviewReferral ------------------------------------------------------------------------------------ */

rpc_code gsvc_h_review_referral(rpc_ctx *ctx, const void *vreq, void *vresp)
{
    const Alma__Guideline__V1__ReviewReferralRequest *req = vreq;
    Alma__Guideline__V1__Review *resp = vresp;
    gsvc_service *s = gsvc_of(ctx);
    rpc_code code = check_review_request(ctx, req);
    if (code != RPC_OK)
        return code;
    authz_claims claims;
    if ((code = gsvc_require(ctx, req->tenant_id, REVIEW_PERMISSION, NULL, &claims)) != RPC_OK)
        return code;
    if ((code = gsvc_require(ctx, req->tenant_id, CLINICAL_PERMISSION, req->patient_ref, &claims)) != RPC_OK)
        return code;

    const gsvc_loaded *b = NULL;
    if ((code = pick_bundle(ctx, req->bundle, &b)) != RPC_OK)
        return code;
    json_t *input = NULL;
    if (req->data_case == G(REVIEW_REFERRAL_REQUEST__DATA_FROM_VAULT))
        code = vault_input(ctx, req, &input);
    else
        code = merge_input(ctx, req, &input);
    if (code != RPC_OK)
        return code;
    gl_summary sum;
    char *rec = NULL, *canon = NULL;
    size_t rec_len = 0, canon_len = 0;
    /* One pass over the merged tree: the recommendation and the canonical snapshot that is stored. */
    base_result r = gl_evaluate_tree(b->bundle, input, &sum, &rec, &rec_len, &canon, &canon_len);
    json_decref(input);
    if (!base_is_ok(r)) {
        free(rec);
        if (r.err == BASE_ERR_INVALID || r.err == BASE_ERR_LIMIT) /* names the field, never a value */
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "%s", base_error_message());
        return gsvc_fail(ctx, r);
    }

    gs_review rv;
    memset(&rv, 0, sizeof rv);
    r = gsvc_new_id("rv_", rv.review_id);
    snprintf(rv.tenant_id, sizeof rv.tenant_id, "%s", req->tenant_id);
    snprintf(rv.referral_id, sizeof rv.referral_id, "%s", req->referral_id);
    snprintf(rv.patient_ref, sizeof rv.patient_ref, "%s", req->patient_ref);
    snprintf(rv.clinician_id, sizeof rv.clinician_id, "%s", claims.sub);
    rv.outcome = proto_outcome(sum.outcome);
    rv.urgency = proto_urgency(sum.urgency);
    snprintf(rv.pathway_id, sizeof rv.pathway_id, "%s", sum.pathway);
    snprintf(rv.rule_id, sizeof rv.rule_id, "%s", sum.rule);
    snprintf(rv.engine_version, sizeof rv.engine_version, "%s", GL_ENGINE_VERSION);
    snprintf(rv.bundle_id, sizeof rv.bundle_id, "%s", b->bundle_id);
    snprintf(rv.bundle_version, sizeof rv.bundle_version, "%s", b->version);
    snprintf(rv.bundle_hash, sizeof rv.bundle_hash, "%s", b->hash);
    snprintf(rv.input_hash, sizeof rv.input_hash, "%s", sum.input_hash);
    rv.input_json = canon;
    rv.input_len = canon_len;
    rv.recommendation_json = rec;
    rv.recommendation_len = rec_len;
    rv.created_us = gsvc_now_us();
    if (!base_is_ok(r)) {
        gs_review_clear(&rv);
        return gsvc_fail(ctx, r);
    }
    if ((code = fill_review(ctx, &rv, resp)) != RPC_OK) {
        gs_review_clear(&rv);
        return code;
    }

    /* Audit first (with the review id), then store. */
    Alma__Audit__V1__GuidelineRef gref = ALMA__AUDIT__V1__GUIDELINE_REF__INIT;
    gref.engine_version = rv.engine_version;
    gref.bundle_id = rv.bundle_id;
    gref.bundle_version = rv.bundle_version;
    gref.bundle_hash = rv.bundle_hash;
    gref.source = (char *)audit_source(ctx, resp, b);
    gsvc_event ev = {.tenant_id = rv.tenant_id,
                     .claims = &claims,
                     .action = ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND,
                     .purpose = GSVC_PURPOSE_TREATMENT,
                     .patient_ref = rv.patient_ref,
                     .resource_type = "Review",
                     .resource_id = resp->review_id,
                     .guideline = &gref,
                     .details = (const char *const[]){"referral_id", rv.referral_id, "outcome",
                                                      gl_outcome_name(sum.outcome), "pathway", rv.pathway_id,
                                                      "rule", rv.rule_id, "input_hash", rv.input_hash, NULL}};
    code = gsvc_audit_or_fail(ctx, &ev, "no recommendation was made");
    if (code == RPC_OK) {
        int64_t created = 0;
        r = gs_writer_store(s->writer, &rv, &created);
        if (!base_is_ok(r)) {
            code = gsvc_audit_failed(ctx, &ev, r);
        } else {
            resp->create_time = gsvc_timestamp(ctx, created ? created : rv.created_us);
        }
    }
    gs_review_clear(&rv);
    return code;
}

/* ---- RecordDecision ------------------------------------------------------------------------------------ */

rpc_code gsvc_h_record_decision(rpc_ctx *ctx, const void *vreq, void *vresp)
{
    const Alma__Guideline__V1__RecordDecisionRequest *req = vreq;
    Alma__Guideline__V1__Decision *resp = vresp;
    gsvc_service *s = gsvc_of(ctx);
    rpc_code code = gsvc_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (!valid_review_id(req->review_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "review_id: required, \"rv_\" + 32 lowercase hex digits");
    if (req->kind != G(DECISION_KIND__DECISION_KIND_ACCEPT) &&
        req->kind != G(DECISION_KIND__DECISION_KIND_OVERRIDE))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "kind: ACCEPT or OVERRIDE");
    if (req->kind == G(DECISION_KIND__DECISION_KIND_OVERRIDE) &&
        (req->reason <= G(OVERRIDE_REASON__OVERRIDE_REASON_UNSPECIFIED) ||
         req->reason > G(OVERRIDE_REASON__OVERRIDE_REASON_OTHER)))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "reason: required with OVERRIDE");
    if (req->kind == G(DECISION_KIND__DECISION_KIND_ACCEPT) && req->reason != 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "reason: only with OVERRIDE");
    size_t clen = req->comment ? strlen(req->comment) : 0;
    if (clen > GS_TEXT_MAX || !valid_utf8(req->comment ? req->comment : "", clen))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "comment: at most %d bytes of UTF-8", GS_TEXT_MAX);

    authz_claims claims;
    if ((code = gsvc_require(ctx, req->tenant_id, REVIEW_PERMISSION, NULL, &claims)) != RPC_OK)
        return code;
    gs_review rv;
    memset(&rv, 0, sizeof rv);
    base_result r = gs_review_get(s->pool, req->tenant_id, req->review_id, &rv);
    if (!base_is_ok(r))
        return r.err == BASE_ERR_NOT_FOUND ? rpc_fail(ctx, RPC_NOT_FOUND, "review_id: no such review")
                                           : gsvc_fail(ctx, r);
    char patient[GS_ID_BUF], referral[GS_REFERRAL_MAX + 1];
    snprintf(patient, sizeof patient, "%s", rv.patient_ref);
    snprintf(referral, sizeof referral, "%s", rv.referral_id);
    Alma__Audit__V1__GuidelineRef gref = ALMA__AUDIT__V1__GUIDELINE_REF__INIT;
    gref.engine_version = rpc_ctx_strdup(ctx, rv.engine_version);
    gref.bundle_id = rpc_ctx_strdup(ctx, rv.bundle_id);
    gref.bundle_version = rpc_ctx_strdup(ctx, rv.bundle_version);
    gref.bundle_hash = rpc_ctx_strdup(ctx, rv.bundle_hash);
    gref.source = rpc_ctx_printf(ctx, "rule %s", rv.rule_id);
    gs_review_clear(&rv);
    if ((code = gsvc_require(ctx, req->tenant_id, CLINICAL_PERMISSION, patient, &claims)) != RPC_OK)
        return code;

    /* Once per review: refused before anything is audited when already decided (the store refuses a race). */
    gs_review *hr = NULL;
    gs_decision *hd = NULL;
    size_t nhr = 0, nhd = 0;
    r = gs_referral_history(s->pool, req->tenant_id, referral, &hr, &nhr, &hd, &nhd);
    if (!base_is_ok(r))
        return gsvc_fail(ctx, r);
    bool decided = false;
    for (size_t i = 0; i < nhd; i++)
        decided = decided || strcmp(hd[i].review_id, req->review_id) == 0;
    gs_reviews_free(hr, nhr);
    free(hd);
    if (decided)
        return rpc_fail(ctx, RPC_ALREADY_EXISTS, "review already decided");

    gs_decision d;
    memset(&d, 0, sizeof d);
    if (!base_is_ok(r = gsvc_new_id("dn_", d.decision_id)))
        return gsvc_fail(ctx, r);
    snprintf(d.review_id, sizeof d.review_id, "%s", req->review_id);
    snprintf(d.tenant_id, sizeof d.tenant_id, "%s", req->tenant_id);
    snprintf(d.clinician_id, sizeof d.clinician_id, "%s", claims.sub);
    d.kind = req->kind;
    d.reason = req->kind == G(DECISION_KIND__DECISION_KIND_OVERRIDE) ? (int)req->reason : 0;
    snprintf(d.comment, sizeof d.comment, "%s", req->comment ? req->comment : "");
    const ProtobufCEnumValue *kv =
        protobuf_c_enum_descriptor_get_value(&alma__guideline__v1__decision_kind__descriptor, d.kind);
    const ProtobufCEnumValue *rsv =
        protobuf_c_enum_descriptor_get_value(&alma__guideline__v1__override_reason__descriptor, d.reason);
    gsvc_event ev = {.tenant_id = req->tenant_id,
                     .claims = &claims,
                     .action = ALMA__AUDIT__V1__ACTION__ACTION_DECIDE,
                     .purpose = GSVC_PURPOSE_TREATMENT,
                     .patient_ref = patient,
                     .resource_type = "Review",
                     .resource_id = req->review_id,
                     .guideline = &gref,
                     .details =
                         (const char *const[]){"decision_id", d.decision_id, "kind", kv ? kv->name : "",
                                               "reason", rsv ? rsv->name : "", NULL}};
    if ((code = gsvc_audit_or_fail(ctx, &ev, "the decision was not recorded")) != RPC_OK)
        return code;
    int64_t created = 0;
    r = gs_decision_insert(s->pool, &d, &created);
    if (!base_is_ok(r))
        return gsvc_audit_failed(ctx, &ev, r);
    d.created_us = created;
    fill_decision(ctx, &d, resp);
    return RPC_OK;
}

/* ---- GetReferralHistory -------------------------------------------------------------------------------- */

rpc_code gsvc_h_referral_history(rpc_ctx *ctx, const void *vreq, void *vresp)
{
    const Alma__Guideline__V1__GetReferralHistoryRequest *req = vreq;
    Alma__Guideline__V1__ReferralHistory *resp = vresp;
    gsvc_service *s = gsvc_of(ctx);
    rpc_code code = gsvc_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (!gl_valid_referral_id(req->referral_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "referral_id: required, 1..64 of [A-Za-z0-9_-]");
    authz_claims claims;
    if ((code = gsvc_require(ctx, req->tenant_id, REVIEW_PERMISSION, NULL, &claims)) != RPC_OK)
        return code;
    gs_review *rs = NULL;
    gs_decision *ds = NULL;
    size_t nr = 0, nd = 0;
    base_result r = gs_referral_history(s->pool, req->tenant_id, req->referral_id, &rs, &nr, &ds, &nd);
    if (!base_is_ok(r))
        return gsvc_fail(ctx, r);
    /* The relationship for every patient of the referral's reviews (normally one). */
    for (size_t i = 0; code == RPC_OK && i < nr; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || strcmp(rs[j].patient_ref, rs[i].patient_ref) == 0;
        if (!seen)
            code = gsvc_require(ctx, req->tenant_id, CLINICAL_PERMISSION, rs[i].patient_ref, &claims);
    }
    if (code == RPC_OK) {
        char nrs[24], nds[24];
        snprintf(nrs, sizeof nrs, "%zu", nr);
        snprintf(nds, sizeof nds, "%zu", nd);
        gsvc_event ev = {.tenant_id = req->tenant_id,
                         .claims = &claims,
                         .action = ALMA__AUDIT__V1__ACTION__ACTION_READ,
                         .purpose = GSVC_PURPOSE_TREATMENT,
                         .patient_ref = nr ? rs[0].patient_ref : NULL,
                         .resource_type = "Referral",
                         .resource_id = req->referral_id,
                         .details = (const char *const[]){"reviews", nrs, "decisions", nds, NULL}};
        code = gsvc_audit_or_fail(ctx, &ev, "nothing was disclosed");
    }
    if (code == RPC_OK) {
        resp->reviews = rpc_ctx_alloc(ctx, (nr ? nr : 1) * sizeof *resp->reviews);
        resp->decisions = rpc_ctx_alloc(ctx, (nd ? nd : 1) * sizeof *resp->decisions);
        if (!resp->reviews || !resp->decisions)
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; code == RPC_OK && i < nr; i++) {
        Alma__Guideline__V1__Review *rv = new_review(ctx);
        if (!rv) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        code = fill_review(ctx, &rs[i], rv);
        resp->reviews[resp->n_reviews++] = rv;
    }
    for (size_t i = 0; code == RPC_OK && i < nd; i++) {
        Alma__Guideline__V1__Decision *d = rpc_ctx_alloc(ctx, sizeof *d);
        if (!d) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        alma__guideline__v1__decision__init(d);
        fill_decision(ctx, &ds[i], d);
        resp->decisions[resp->n_decisions++] = d;
    }
    gs_reviews_free(rs, nr);
    free(ds);
    return code;
}

/* ---- WhatIf -------------------------------------------------------------------------------------------- */

static const char *const whatif_perms[] = {"referral.read.plan", "audit.read", REVIEW_PERMISSION, NULL};
static const char *const stats_perms[] = {"referral.read.plan", "audit.read", NULL};

rpc_code gsvc_h_what_if(rpc_ctx *ctx, const void *vreq, void *vresp)
{
    const Alma__Guideline__V1__WhatIfRequest *req = vreq;
    Alma__Guideline__V1__WhatIfReport *resp = vresp;
    gsvc_service *s = gsvc_of(ctx);
    rpc_code code = gsvc_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if ((code = check_bundle_ref(ctx, req->bundle, true)) != RPC_OK)
        return code;
    if (req->max_referrals < 0 || req->max_referrals > 10000)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "max_referrals: 1..10000 (0: 1000)");
    if (req->n_referral_ids > WHATIF_MAX_IDS)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "referral_ids: at most %d", WHATIF_MAX_IDS);
    for (size_t i = 0; i < req->n_referral_ids; i++)
        if (!gl_valid_referral_id(req->referral_ids[i]))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "referral_ids[%zu]: 1..64 of [A-Za-z0-9_-]", i);
    int64_t start = gsvc_timestamp_us(req->start_time), end = gsvc_timestamp_us(req->end_time);
    if (start && end && end <= start)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "end_time: after start_time");
    authz_claims claims;
    if ((code = gsvc_require_any(ctx, req->tenant_id, whatif_perms, &claims)) != RPC_OK)
        return code;
    const gsvc_loaded *b = NULL;
    if ((code = pick_bundle(ctx, req->bundle, &b)) != RPC_OK)
        return code;

    gs_review *rs = NULL;
    size_t n = 0;
    size_t max = req->max_referrals ? (size_t)req->max_referrals : 1000;
    base_result r = gs_reviews_for_whatif(s->pool, req->tenant_id, (const char *const *)req->referral_ids,
                                          req->n_referral_ids, start, end, max, &rs, &n);
    if (!base_is_ok(r))
        return gsvc_fail(ctx, r);
    resp->changes = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *resp->changes);
    if (!resp->changes) {
        gs_reviews_free(rs, n);
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    bool one_bundle = n > 0;
    for (size_t i = 0; i < n && code == RPC_OK; i++) {
        const gs_review *o = &rs[i];
        one_bundle = one_bundle && strcmp(o->bundle_hash, rs[0].bundle_hash) == 0;
        gl_summary sum;
        char *rec = NULL;
        size_t rec_len = 0;
        const char *refused = NULL;
        r = gl_evaluate(b->bundle, o->input_json, o->input_len, &sum, &rec, &rec_len);
        if (!base_is_ok(r)) { /* a snapshot the other version's input rules refuse: reported as such */
            refused = rpc_ctx_strdup(ctx, base_error_message());
            memset(&sum, 0, sizeof sum);
            sum.outcome = GL_NO_PATHWAY;
        }
        resp->compared++;
        int outcome = proto_outcome(sum.outcome), urgency = proto_urgency(sum.urgency);
        if (!refused && outcome == o->outcome && urgency == o->urgency && strcmp(sum.rule, o->rule_id) == 0) {
            free(rec);
            continue;
        }
        Alma__Guideline__V1__WhatIfChange *c = rpc_ctx_alloc(ctx, sizeof *c);
        if (c)
            alma__guideline__v1__what_if_change__init(c);
        bool ok = c && whatif_fired(ctx, o->recommendation_json, o->recommendation_len, &c->old_fired,
                                    &c->n_old_fired, NULL);
        if (ok && rec)
            ok = whatif_fired(ctx, rec, rec_len, &c->new_fired, &c->n_new_fired, &c->new_explain);
        free(rec);
        if (!ok) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        c->referral_id = rpc_ctx_strdup(ctx, o->referral_id);
        c->review_id = rpc_ctx_strdup(ctx, o->review_id);
        c->old_outcome = (Alma__Guideline__V1__Outcome)o->outcome;
        c->new_outcome = (Alma__Guideline__V1__Outcome)outcome;
        c->old_rule_id = rpc_ctx_strdup(ctx, o->rule_id);
        c->new_rule_id = rpc_ctx_strdup(ctx, sum.rule);
        c->old_urgency = (Alma__Guideline__V1__Urgency)o->urgency;
        c->new_urgency = (Alma__Guideline__V1__Urgency)urgency;
        c->old_pathway_id = rpc_ctx_strdup(ctx, o->pathway_id);
        c->new_pathway_id = rpc_ctx_strdup(ctx, sum.pathway);
        if (refused)
            c->new_error = (char *)refused;
        resp->changes[resp->n_changes++] = c;
        resp->changed++;
    }
    if (code == RPC_OK && one_bundle)
        resp->from_bundle = gsvc_bundle_ref(ctx, rs[0].bundle_id, rs[0].bundle_version, rs[0].bundle_hash);
    gs_reviews_free(rs, n);
    if (code != RPC_OK)
        return code;
    resp->to_bundle = gsvc_bundle_ref(ctx, b->bundle_id, b->version, b->hash);
    char ncmp[24], nchg[24];
    snprintf(ncmp, sizeof ncmp, "%d", (int)resp->compared);
    snprintf(nchg, sizeof nchg, "%d", (int)resp->changed);
    gsvc_event ev = {.tenant_id = req->tenant_id,
                     .claims = &claims,
                     .action = ALMA__AUDIT__V1__ACTION__ACTION_QUERY,
                     .resource_type = "GuidelineWhatIf",
                     .resource_id = rpc_ctx_printf(ctx, "%s:%s", b->bundle_id, b->version),
                     .details = (const char *const[]){"compared", ncmp, "changed", nchg, NULL}};
    return gsvc_audit_or_fail(ctx, &ev, "nothing was disclosed");
}

/* ---- GetConcordance ------------------------------------------------------------------------------------ */

rpc_code gsvc_h_concordance(rpc_ctx *ctx, const void *vreq, void *vresp)
{
    const Alma__Guideline__V1__GetConcordanceRequest *req = vreq;
    Alma__Guideline__V1__ConcordanceReport *resp = vresp;
    gsvc_service *s = gsvc_of(ctx);
    rpc_code code = gsvc_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (req->pathway_id && req->pathway_id[0] && strlen(req->pathway_id) > GS_PATHWAY_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "pathway_id: at most %d bytes", GS_PATHWAY_MAX);
    if (req->clinician_id && req->clinician_id[0] && !authz_valid_principal(req->clinician_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "clinician_id: a principal id");
    int64_t start = gsvc_timestamp_us(req->start_time), end = gsvc_timestamp_us(req->end_time);
    if (start && end && end <= start)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "end_time: after start_time");
    authz_claims claims;
    if ((code = gsvc_require_any(ctx, req->tenant_id, stats_perms, &claims)) != RPC_OK)
        return code;
    gs_concordance_row *rows = NULL;
    size_t n = 0;
    base_result r =
        gs_concordance(s->pool, req->tenant_id, start, end, req->pathway_id, req->clinician_id, &rows, &n);
    if (!base_is_ok(r))
        return gsvc_fail(ctx, r);
    char nrows[24];
    snprintf(nrows, sizeof nrows, "%zu", n);
    gsvc_event ev = {.tenant_id = req->tenant_id,
                     .claims = &claims,
                     .action = ALMA__AUDIT__V1__ACTION__ACTION_QUERY,
                     .resource_type = "GuidelineConcordance",
                     .resource_id = req->tenant_id,
                     .details = (const char *const[]){"rows", nrows, NULL}};
    code = gsvc_audit_or_fail(ctx, &ev, "nothing was disclosed");
    if (code == RPC_OK) {
        resp->rows = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *resp->rows);
        if (!resp->rows)
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; code == RPC_OK && i < n; i++) {
        const gs_concordance_row *g = &rows[i];
        Alma__Guideline__V1__ConcordanceRow *row = rpc_ctx_alloc(ctx, sizeof *row);
        Alma__Guideline__V1__ConcordanceRow__OverrideReasonsEntry **entries =
            rpc_ctx_alloc(ctx, GS_REASONS * sizeof *entries);
        if (!row || !entries) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        alma__guideline__v1__concordance_row__init(row);
        row->pathway_id = rpc_ctx_strdup(ctx, g->pathway_id);
        row->clinician_id = rpc_ctx_strdup(ctx, g->clinician_id);
        row->reviews = g->reviews;
        row->refer = g->refer;
        row->workup = g->workup;
        row->manage = g->manage;
        row->insufficient = g->insufficient;
        row->decided = g->decided;
        row->accepted = g->accepted;
        row->overridden = g->overridden;
        row->override_reasons = entries;
        for (int k = 1; k < GS_REASONS; k++) {
            if (!g->override_reasons[k])
                continue;
            const ProtobufCEnumValue *v =
                protobuf_c_enum_descriptor_get_value(&alma__guideline__v1__override_reason__descriptor, k);
            Alma__Guideline__V1__ConcordanceRow__OverrideReasonsEntry *e = rpc_ctx_alloc(ctx, sizeof *e);
            if (!v || !e)
                continue;
            alma__guideline__v1__concordance_row__override_reasons_entry__init(e);
            e->key = rpc_ctx_strdup(ctx, v->name);
            e->value = g->override_reasons[k];
            entries[row->n_override_reasons++] = e;
        }
        resp->rows[resp->n_rows++] = row;
    }
    free(rows);
    return code;
}
