/* Writes FHIR R4 AuditEvent resources as NDJSON for test_audit_fhir_schema (tests/audit/fhir.cmake), which
 * validates every line against HL7's FHIR R4 JSON schema (deploy/fhir-schema/validate-fhir.js).
 *
 *   audit_fhir_sample OUT.ndjson           synthetic events, each through audit_entry_encode and
 *                                          audit_entry_to_fhir: every Action (with and without a patient, a
 *                                          resource, roles, a service identity), every Outcome, purpose,
 *                                          severity and disclosure basis, recipients, guideline references,
 *                                          details maps, extreme sequence numbers and times, and non-ASCII
 *                                          and JSON-special text
 *   audit_fhir_sample --broken OUT.ndjson  one valid resource, then copies of it each broken in one way (the
 *                                          list in broken[] below; fhir.cmake expects the validator to name
 *                                          each line and path)
 *
 * The events pass audit_validate_event, as the service's would, except those marked `raw`: entries the
 * encoder accepts although the validator would not (no outcome, no purpose, a recipient without a name).
 * audit_entry_to_fhir takes any version-1 entry (from storage or an old export), so its output must be valid
 * FHIR for those too.
 *
 * Not in the sample: free text holding a character that ECMAScript's \s matches but XML Schema's does not
 * (U+00A0, U+2028, U+202F, U+3000, U+FEFF ...). FHIR's string pattern [ \r\n\t\S]+ allows them as the spec
 * means it (XML Schema \S), but a JavaScript validator such as ajv reads \S as ECMAScript's and rejects them.
 */
#include "entry.h"
#include "validate.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT              "pt_0123456789abcdef0123456789abcdef"
#define PT2             "pt_fedcba9876543210fedcba9876543210"
#define SVC             "spiffe://alma.example/ns/prod/sa/referral"
#define WHEN            INT64_C(1795435200123456)   /* 2026-11-23T12:00:00.123456Z */
#define MAX_TIME_MICROS INT64_C(253402300799999999) /* 9999-12-31T23:59:59.999999Z */

/* Text with characters from every UTF-8 length, combining marks, right-to-left script, an emoji (a surrogate
 * pair in \u escapes) and the characters JSON escapes. */
#define TEXT_NAME    "Cl\u00ednica S\u00e3o Jos\u00e9 \u2014 Z\u00fcrich \u6771\u4eac \U0001F3E5"
#define TEXT_ADDRESS "\u0634\u0627\u0631\u0639 \u0627\u0644\u0645\u0644\u0643 12, \u0420\u0438\u0433\u0430"
#define TEXT_PHI     "de\u0301mographie; \u30ef\u30af\u30c1\u30f3 \U0001F489; lab \"A1c\" \\ trend </tr> & <b>"

typedef struct sample {
    Alma__Audit__V1__EventInput ev;
    Alma__Audit__V1__Actor actor;
    Alma__Audit__V1__Recipient recipient;
    Alma__Audit__V1__GuidelineRef guideline;
    Alma__Audit__V1__EventInput__DetailsEntry detail[AUDIT_MAX_DETAILS];
    Alma__Audit__V1__EventInput__DetailsEntry *details[AUDIT_MAX_DETAILS];
    char *roles[AUDIT_MAX_ROLES];
    char role_buf[AUDIT_MAX_ROLES][32];
    char key_buf[AUDIT_MAX_DETAILS][32];
    const char *service_identity; /* NULL: none */
    int64_t time;
    bool seq_set; /* use `seq` rather than the next one */
    uint64_t seq;
    bool raw; /* not through audit_validate_event (see the top) */
} sample;

typedef struct writer {
    FILE *out;
    uint64_t next_seq;
    size_t lines;
} writer;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "audit_fhir_sample: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* A READ of a patient's record by a clinician through the referral service. */
static void sample_init(sample *s)
{
    memset(s, 0, sizeof *s);
    alma__audit__v1__event_input__init(&s->ev);
    alma__audit__v1__actor__init(&s->actor);
    alma__audit__v1__recipient__init(&s->recipient);
    alma__audit__v1__guideline_ref__init(&s->guideline);
    for (size_t i = 0; i < AUDIT_MAX_DETAILS; i++) {
        alma__audit__v1__event_input__details_entry__init(&s->detail[i]);
        s->details[i] = &s->detail[i];
    }
    s->actor.principal_id = "usr_42";
    s->roles[0] = "pcp";
    s->actor.roles = s->roles;
    s->actor.n_roles = 1;
    s->ev.tenant_id = "tenant-a";
    s->ev.actor = &s->actor;
    s->ev.action = ALMA__AUDIT__V1__ACTION__ACTION_READ;
    s->ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT;
    s->ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    s->ev.patient_ref = PT;
    s->ev.resource_type = "Patient";
    s->ev.resource_id = "rec_1";
    s->ev.details = s->details;
    s->service_identity = SVC;
    s->time = WHEN;
}

static void sample_recipient(sample *s, const char *name, const char *address)
{
    s->recipient.name = (char *)name;
    s->recipient.address = (char *)address;
    s->ev.recipient = &s->recipient;
}

static void sample_guideline(sample *s, const char *bundle_id, const char *source)
{
    s->guideline.engine_version = "1.2.0";
    s->guideline.bundle_id = (char *)bundle_id;
    s->guideline.bundle_version = "2024.1";
    s->guideline.bundle_hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    s->guideline.source = (char *)source;
    s->ev.guideline = &s->guideline;
}

/* What audit_validate_event requires of `action` beyond the base event. */
static void sample_action(sample *s, Alma__Audit__V1__Action action)
{
    s->ev.action = action;
    switch (action) {
    case ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE:
        sample_recipient(s, "County Health Dept", "1 Main St, Springfield");
        s->ev.basis = ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH;
        s->ev.phi_description = "demographics; immunizations";
        s->ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PUBLIC_HEALTH;
        break;
    case ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND:
        sample_guideline(s, "uspstf-colorectal", "USPSTF 2021, colorectal cancer screening");
        s->ev.resource_type = "Review";
        s->ev.resource_id = "rev_7";
        break;
    case ALMA__AUDIT__V1__ACTION__ACTION_DECIDE:
        s->ev.resource_type = "Review";
        s->ev.resource_id = "rev_7";
        break;
    default:
        break;
    }
}

static void emit(writer *w, const sample *s)
{
    if (!s->raw && !base_is_ok(audit_validate_event(&s->ev)))
        die("a sample event fails audit_validate_event (mark it raw or fix it)", base_error_message());
    uint64_t seq = s->seq_set ? s->seq : w->next_seq++;
    char *entry = NULL, *fhir = NULL;
    size_t elen = 0, flen = 0;
    if (!base_is_ok(audit_entry_encode(&s->ev, seq, s->time, s->service_identity, &entry, &elen)))
        die("audit_entry_encode failed", base_error_message());
    if (!base_is_ok(audit_entry_to_fhir(entry, elen, &fhir, &flen)))
        die("audit_entry_to_fhir failed", base_error_message());
    if (fwrite(fhir, 1, flen, w->out) != flen || fputc('\n', w->out) == EOF)
        die("write failed", NULL);
    w->lines++;
    free(entry);
    free(fhir);
}

static void sample_actions(writer *w)
{
    sample s;
    /* Every value the proto defines (from its descriptor, so that a new one is sampled too). */
    for (unsigned i = 0; i < alma__audit__v1__action__descriptor.n_values; i++) {
        int a = alma__audit__v1__action__descriptor.values[i].value;
        if (a == 0)
            continue;
        /* With everything around it: patient, resource, two roles, the service identity. */
        sample_init(&s);
        s.roles[1] = "care_team";
        s.actor.n_roles = 2;
        sample_action(&s, (Alma__Audit__V1__Action)a);
        emit(w, &s);

        /* Bare: no patient, no resource (where the action allows), no roles, no service identity. */
        sample_init(&s);
        sample_action(&s, (Alma__Audit__V1__Action)a);
        s.ev.patient_ref = "";
        s.actor.n_roles = 0;
        s.service_identity = NULL;
        if (!s.ev.guideline && !s.ev.recipient) {
            s.ev.resource_type = "";
            s.ev.resource_id = "";
        }
        /* a disclosure and break-glass name their patient; recommend and decide their review */
        s.raw = a == ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE ||
                a == ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS ||
                a == ALMA__AUDIT__V1__ACTION__ACTION_DECIDE;
        emit(w, &s);
    }
}

static void sample_outcomes(writer *w)
{
    static const Alma__Audit__V1__Action actions[] = {
        ALMA__AUDIT__V1__ACTION__ACTION_READ,         ALMA__AUDIT__V1__ACTION__ACTION_LOGIN,
        ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED, ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED,
        ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS,  ALMA__AUDIT__V1__ACTION__ACTION_EXPORT,
    };
    sample s;
    for (size_t i = 0; i < BASE_ARRAY_LEN(actions); i++) {
        for (unsigned o = 0; o < alma__audit__v1__outcome__descriptor.n_values; o++) {
            sample_init(&s);
            sample_action(&s, actions[i]);
            s.ev.outcome = (Alma__Audit__V1__Outcome)alma__audit__v1__outcome__descriptor.values[o].value;
            s.raw = s.ev.outcome == 0; /* no outcome: FHIR's is optional */
            if (actions[i] == ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED) {
                /* a failed login: no patient, the attempted principal, no service identity */
                s.ev.patient_ref = "";
                s.ev.resource_type = "";
                s.ev.resource_id = "";
                s.actor.principal_id = "attempt:jdoe";
                s.actor.n_roles = 0;
                s.service_identity = NULL;
            }
            if (actions[i] == ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS) {
                s.ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_EMERGENCY;
                s.ev.severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH;
                s.roles[0] = "ed_physician";
            }
            emit(w, &s);
        }
    }
}

static void sample_purposes_and_severities(writer *w)
{
    sample s;
    for (unsigned p = 0; p < alma__common__v1__purpose_of_use__descriptor.n_values; p++) {
        sample_init(&s);
        sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_QUERY);
        s.ev.purpose =
            (Alma__Common__V1__PurposeOfUse)alma__common__v1__purpose_of_use__descriptor.values[p].value;
        s.raw = s.ev.purpose == 0;
        s.ev.resource_id = ""; /* a query over a type */
        emit(w, &s);
    }
    for (unsigned v = 0; v < alma__audit__v1__severity__descriptor.n_values; v++) {
        sample_init(&s);
        sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_ADMIN);
        s.ev.severity = (Alma__Audit__V1__Severity)alma__audit__v1__severity__descriptor.values[v].value;
        s.ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_OPERATIONS;
        s.ev.patient_ref = "";
        s.ev.resource_type = "Role";
        s.ev.resource_id = "role_auditor";
        s.roles[0] = "security_admin";
        emit(w, &s);
    }
}

static void sample_disclosures(writer *w)
{
    sample s;
    unsigned n = 0;
    for (unsigned i = 0; i < alma__audit__v1__disclosure_basis__descriptor.n_values; i++) {
        int b = alma__audit__v1__disclosure_basis__descriptor.values[i].value;
        if (b == 0)
            continue;
        sample_init(&s);
        sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE);
        s.ev.basis = (Alma__Audit__V1__DisclosureBasis)b;
        /* alternately with and without an address; the PHI categories in plain and non-ASCII text */
        if (n % 2)
            sample_recipient(&s, "State Cancer Registry", "");
        if (n % 3 == 0)
            s.ev.phi_description = TEXT_PHI;
        s.ev.patient_ref = n % 2 ? PT2 : PT;
        s.ev.request_id = "req-7f3a";
        emit(w, &s);
        n++;
    }

    /* Non-ASCII recipient, every purpose a disclosure may have had. */
    for (unsigned i = 0; i < alma__common__v1__purpose_of_use__descriptor.n_values; i++) {
        int p = alma__common__v1__purpose_of_use__descriptor.values[i].value;
        if (p == 0)
            continue;
        sample_init(&s);
        sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE);
        sample_recipient(&s, TEXT_NAME, TEXT_ADDRESS);
        s.ev.purpose = (Alma__Common__V1__PurposeOfUse)p;
        s.ev.basis = ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_REQUIRED_BY_LAW;
        emit(w, &s);
    }

    /* Raw: a recipient with only an address, no basis, no PHI description. */
    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE);
    sample_recipient(&s, "", "PO Box 12, Springfield");
    s.ev.basis = 0;
    s.ev.phi_description = "";
    s.raw = true;
    emit(w, &s);

    /* The longest text the validator allows (AUDIT_MAX_TEXT bytes), in 2-, 3- and 4-byte characters. */
    static char longest[3][AUDIT_MAX_TEXT + 1];
    static const char *const units[3] = {"\u00e9", "\u6771", "\U0001F3E5"};
    for (size_t i = 0; i < 3; i++) {
        size_t len = strlen(units[i]), at = 0;
        while (at + len <= AUDIT_MAX_TEXT) {
            memcpy(longest[i] + at, units[i], len);
            at += len;
        }
        longest[i][at] = '\0';
    }
    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE);
    sample_recipient(&s, longest[0], longest[1]);
    s.ev.phi_description = longest[2];
    emit(w, &s);
}

static void sample_guidelines(writer *w)
{
    sample s;
    /* A recommendation with every guideline field, one with non-ASCII text in its source. */
    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND);
    s.ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT;
    s.ev.severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_INFO;
    s.service_identity = "spiffe://alma.example/ns/prod/sa/guideline";
    emit(w, &s);

    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND);
    sample_guideline(&s, "ESC/ESH 2023", "ESC/ESH 2023 \u00a7 9.2 \u2014 \u03b2-blockers, \u226565 years");
    emit(w, &s);

    /* A recommendation without a patient (a population run). */
    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND);
    s.ev.patient_ref = "";
    emit(w, &s);

    /* A decision quoting only part of the guideline: no bundle_id (no entity.what), then only a source. */
    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_DECIDE);
    sample_guideline(&s, "", "USPSTF 2021");
    emit(w, &s);

    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_DECIDE);
    alma__audit__v1__guideline_ref__init(&s.guideline);
    s.guideline.source = "local protocol 4";
    s.ev.guideline = &s.guideline;
    emit(w, &s);

    /* A guideline with no member at all: the entry omits it. */
    sample_init(&s);
    sample_action(&s, ALMA__AUDIT__V1__ACTION__ACTION_DECIDE);
    alma__audit__v1__guideline_ref__init(&s.guideline);
    s.ev.guideline = &s.guideline;
    emit(w, &s);
}

static void sample_details_roles_and_limits(writer *w)
{
    sample s;
    /* One detail; then the most details and roles allowed, with empty, non-ASCII and JSON-special values. */
    sample_init(&s);
    s.detail[0].key = "reason";
    s.detail[0].value = "chart review";
    s.ev.n_details = 1;
    emit(w, &s);

    sample_init(&s);
    for (size_t i = 0; i < AUDIT_MAX_DETAILS; i++) {
        snprintf(s.key_buf[i], sizeof s.key_buf[i], "k%02zu", AUDIT_MAX_DETAILS - i); /* not in order */
        s.detail[i].key = s.key_buf[i];
        s.detail[i].value = i == 0 ? "" : i == 1 ? TEXT_NAME : i == 2 ? "a\"b\\c/d" : "v";
    }
    s.ev.n_details = AUDIT_MAX_DETAILS;
    for (size_t i = 0; i < AUDIT_MAX_ROLES; i++) {
        snprintf(s.role_buf[i], sizeof s.role_buf[i], "role.%zu:x-y", i);
        s.roles[i] = s.role_buf[i];
    }
    s.actor.n_roles = AUDIT_MAX_ROLES;
    s.ev.request_id = "req:0001.a-b_c";
    s.ev.severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE;
    emit(w, &s);

    /* A resource type without an id; an id alone is refused by the validator, and raw. */
    sample_init(&s);
    s.ev.resource_id = "";
    emit(w, &s);
    sample_init(&s);
    s.ev.resource_type = "";
    s.raw = true;
    emit(w, &s);

    /* The first and the last sequence number, the first and the last time the entry can hold. */
    sample_init(&s);
    s.seq_set = true;
    s.seq = 0;
    s.time = 0;
    emit(w, &s);
    sample_init(&s);
    s.seq_set = true;
    s.seq = (uint64_t)INT64_MAX;
    s.time = MAX_TIME_MICROS;
    emit(w, &s);

    /* Identifiers at their longest. */
    static char tenant[AUDIT_MAX_TENANT + 1], principal[AUDIT_MAX_ID + 1], rid[AUDIT_MAX_ID + 1];
    memset(tenant, 't', AUDIT_MAX_TENANT);
    memset(principal, 'p', AUDIT_MAX_ID);
    memset(rid, 'r', AUDIT_MAX_ID);
    sample_init(&s);
    s.ev.tenant_id = tenant;
    s.actor.principal_id = principal;
    s.ev.resource_id = rid;
    emit(w, &s);
}

/* --broken: copies of one valid resource, each broken in one way. fhir.cmake lists what the validator
 * must say about each line (line 1 is the unbroken one). */

static json_t *agent0(json_t *res)
{
    return json_array_get(json_object_get(res, "agent"), 0);
}

static void drop_agent(json_t *res)
{
    json_object_del(res, "agent");
}
static void bad_outcome(json_t *res)
{
    json_object_set_new(res, "outcome", json_string("5"));
}
static void extra_member(json_t *res)
{
    json_object_set_new(res, "severity", json_string("SEVERITY_HIGH"));
}
static void bad_action(json_t *res)
{
    json_object_set_new(res, "action", json_string("X"));
}
static void nested_extra_member(json_t *res)
{
    json_object_set_new(json_object_get(json_object_get(agent0(res), "who"), "identifier"), "principal",
                        json_string("usr_42"));
}
static void requestor_as_string(json_t *res)
{
    json_object_set_new(agent0(res), "requestor", json_string("true"));
}
static void bad_recorded(json_t *res)
{
    json_object_set_new(res, "recorded", json_string("2026-11-23 12:00:00Z"));
}
static void other_resource_type(json_t *res)
{
    json_object_set_new(res, "resourceType", json_string("Patient"));
}
static void empty_site(json_t *res)
{
    json_object_set_new(json_object_get(res, "source"), "site", json_string(""));
}
static void type_as_string(json_t *res)
{
    json_object_set_new(res, "type", json_string("110110"));
}
/* Two easy mapping mistakes: a CodeableConcept where R4 has a Coding (entity.type), and a Coding where it
 * has a CodeableConcept (purposeOfEvent). */
static void entity_type_as_concept(json_t *res)
{
    json_t *entity = json_array_get(json_object_get(res, "entity"), 0);
    json_t *coding = json_deep_copy(json_object_get(entity, "type"));
    json_object_set_new(entity, "type", json_pack("{s:[o]}", "coding", coding));
}
static void purpose_as_coding(json_t *res)
{
    json_t *purposes = json_object_get(res, "purposeOfEvent");
    json_t *coding =
        json_deep_copy(json_array_get(json_object_get(json_array_get(purposes, 0), "coding"), 0));
    json_array_set_new(purposes, 0, coding);
}

static void write_broken(FILE *out)
{
    /* Line i + 1 of the output; fhir.cmake expects the validator's message for each. */
    static void (*const broken[])(json_t *) = {
        NULL,                   /* line 1: valid */
        drop_agent,             /* line 2 */
        bad_outcome,            /* line 3 */
        extra_member,           /* line 4 */
        bad_action,             /* line 5 */
        nested_extra_member,    /* line 6 */
        requestor_as_string,    /* line 7 */
        bad_recorded,           /* line 8 */
        other_resource_type,    /* line 9 */
        empty_site,             /* line 10 */
        type_as_string,         /* line 11 */
        entity_type_as_concept, /* line 12 */
        purpose_as_coding,      /* line 13 */
    };
    sample s;
    sample_init(&s);
    char *entry = NULL, *fhir = NULL;
    size_t elen = 0, flen = 0;
    if (!base_is_ok(audit_entry_encode(&s.ev, 42, s.time, s.service_identity, &entry, &elen)) ||
        !base_is_ok(audit_entry_to_fhir(entry, elen, &fhir, &flen)))
        die("cannot build the base resource", base_error_message());
    for (size_t i = 0; i < BASE_ARRAY_LEN(broken); i++) {
        json_t *res = json_loadb(fhir, flen, JSON_REJECT_DUPLICATES, NULL);
        if (!res)
            die("cannot parse the base resource", NULL);
        if (broken[i])
            broken[i](res);
        char *line = json_dumps(res, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (!line)
            die("out of memory", NULL);
        fprintf(out, "%s\n", line);
        free(line);
        json_decref(res);
    }
    /* line 14: not JSON at all */
    fprintf(out, "{\"resourceType\":\"AuditEvent\",\n");
    free(entry);
    free(fhir);
}

int main(int argc, char **argv)
{
    bool want_broken = argc == 3 && strcmp(argv[1], "--broken") == 0;
    if (!(argc == 2 && argv[1][0] != '-') && !want_broken) {
        fprintf(stderr, "usage: audit_fhir_sample [--broken] OUT.ndjson\n");
        return 2;
    }
    const char *path = argv[argc - 1];
    FILE *out = fopen(path, "w");
    if (!out)
        die("cannot open the output file", path);
    writer w = {.out = out, .next_seq = 1};
    if (want_broken) {
        write_broken(out);
    } else {
        sample_actions(&w);
        sample_outcomes(&w);
        sample_purposes_and_severities(&w);
        sample_disclosures(&w);
        sample_guidelines(&w);
        sample_details_roles_and_limits(&w);
    }
    if (fclose(out) != 0)
        die("cannot write the output file", path);
    if (!want_broken)
        fprintf(stderr, "audit_fhir_sample: %zu AuditEvent resources written to %s\n", w.lines, path);
    return 0;
}
