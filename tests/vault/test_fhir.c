/* vault_fhir_bundle (services/vault/fhir.h): the right-of-access Bundle for a synthetic patient with every
 * kind of item, checked member by member with jansson (counts, ids, references, codes, quantities,
 * attachments, security labels, omitted optional members, determinism), refused for bad input without the
 * value in the message, and validated against HL7's FHIR R4 JSON schema with the repository's ajv validator
 * (deploy/fhir-schema/validate-fhir.js --type Bundle), which must also reject broken copies, each with the
 * path of its fault. All data is made up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto/crypto.h"
#include "fhir.h"
#include "testenv.h"
#include "testfhir.h"
#include "testproc.h"

#include <jansson.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "tenant-a"
#define PT     "pt_0123456789abcdef0123456789abcdef"
#define PT_ID  "pt-0123456789abcdef0123456789abcdef"
#define BUNDLE "ex_00112233445566778899aabbccddeeff"
#define BASE   VAULT_FHIR_BASE_URL
/* 2026-03-15T10:20:30.123456Z */
#define NOW_US INT64_C(1773570030123456)
#define NOW    "2026-03-15T10:20:30.123456Z"
/* 2025-01-02T03:04:05Z */
#define UPDATED_US INT64_C(1735787045000000)
#define UPDATED    "2025-01-02T03:04:05.000000Z"

/* Fake values; none may appear in an error message. */
#define FAMILY    "Testpatient"
#define MRN       "MRN-TEST-0001"
#define NOTE_TEXT "Synthetic visit note: feeling well, caf\u00e9 walks daily.\nPlan: continue."
#define DOC_BYTES "%PDF-1.4 synthetic test document\x00\x01\xff"
#define DOC_LEN   (sizeof DOC_BYTES - 1)

enum { N_ITEMS = 8, N_COVERAGE = 2, N_RESOURCES = 1 + N_COVERAGE + N_ITEMS };

static const char *const RECORD_IDS[N_ITEMS] = {
    "it_00000000000000000000000000000001", "it_00000000000000000000000000000002",
    "it_00000000000000000000000000000003", "it_00000000000000000000000000000004",
    "it_00000000000000000000000000000005", "it_00000000000000000000000000000006",
    "it_00000000000000000000000000000007", "it_00000000000000000000000000000008",
};

/* A patient with every member set, two coverages (one ended) and one item of each kind (two problems, two
 * observations, two medications, a note, a document). */
typedef struct fixture {
    Alma__Vault__V1__Patient patient;
    Alma__Vault__V1__Demographics demo;
    char *given[2];
    Alma__Vault__V1__Contact contact;
    Alma__Vault__V1__Address address;
    char *lines[2];
    Alma__Vault__V1__Identifiers ids;
    Alma__Vault__V1__Coverage cov[N_COVERAGE];
    Alma__Vault__V1__Coverage *covp[N_COVERAGE];
    Alma__Vault__V1__Item item[N_ITEMS];
    Alma__Vault__V1__Code code[N_ITEMS];
    Alma__Vault__V1__Problem problem[2];
    Alma__Vault__V1__Observation obs[2];
    Alma__Vault__V1__Medication med[2];
    Alma__Vault__V1__Note note;
    Alma__Vault__V1__Document doc;
    vault_fhir_item items[N_ITEMS];
    vault_fhir_input in;
} fixture;

static void set_code(Alma__Vault__V1__Code *c, const char *system, const char *code, const char *display)
{
    alma__vault__v1__code__init(c);
    c->system = (char *)system;
    c->code = (char *)code;
    c->display = (char *)display;
}

static void fixture_init(fixture *f)
{
    memset(f, 0, sizeof *f);
    alma__vault__v1__patient__init(&f->patient);
    alma__vault__v1__demographics__init(&f->demo);
    f->demo.family_name = FAMILY;
    f->given[0] = "Alex";
    f->given[1] = "Quinn";
    f->demo.given_names = f->given;
    f->demo.n_given_names = 2;
    f->demo.birth_date = "1980-02-29";
    f->demo.sex = ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_FEMALE;
    f->patient.demographics = &f->demo;

    alma__vault__v1__address__init(&f->address);
    f->lines[0] = "1 Example Street";
    f->lines[1] = "Apt 2";
    f->address.lines = f->lines;
    f->address.n_lines = 2;
    f->address.city = "Springfield";
    f->address.state = "IL";
    f->address.postal_code = "62701";
    alma__vault__v1__contact__init(&f->contact);
    f->contact.address = &f->address;
    f->contact.phone = "+15555550123";
    f->contact.email = "alex.testpatient@example.invalid";
    f->patient.contact = &f->contact;

    alma__vault__v1__identifiers__init(&f->ids);
    f->ids.mrn = MRN;
    f->patient.identifiers = &f->ids;

    for (size_t i = 0; i < N_COVERAGE; i++) {
        alma__vault__v1__coverage__init(&f->cov[i]);
        f->covp[i] = &f->cov[i];
    }
    f->cov[0].payer_id = "payer.test-1";
    f->cov[0].plan_name = "Synthetic Gold PPO";
    f->cov[0].member_id = "MEM-0001";
    f->cov[0].group_number = "GRP-42";
    f->cov[0].start_date = "2020-01-01";
    f->cov[1].payer_id = "payer.test-2";
    f->cov[1].plan_name = "Synthetic Old Plan";
    f->cov[1].member_id = "MEM-0002";
    f->cov[1].start_date = "2015-01-01";
    f->cov[1].end_date = "2019-12-31";
    f->patient.coverage = f->covp;
    f->patient.n_coverage = N_COVERAGE;

    for (size_t i = 0; i < N_ITEMS; i++)
        alma__vault__v1__item__init(&f->item[i]);

    /* 0: a problem; 1: a depressive episode (ICD-10-CM F32.A: sensitive whatever the flag says) */
    for (size_t i = 0; i < 2; i++) {
        alma__vault__v1__problem__init(&f->problem[i]);
        f->problem[i].code = &f->code[i];
        f->item[i].body_case = ALMA__VAULT__V1__ITEM__BODY_PROBLEM;
        f->item[i].problem = &f->problem[i];
    }
    set_code(&f->code[0], "http://hl7.org/fhir/sid/icd-10-cm", "E11.9",
             "Type 2 diabetes mellitus without complications");
    f->problem[0].onset_date = "2018-05-01";
    f->problem[0].status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE;
    set_code(&f->code[1], "http://hl7.org/fhir/sid/icd-10-cm", "F32.A", "Depression, unspecified");
    f->problem[1].status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_RESOLVED;

    /* 2: a quantity; 3: a text value */
    for (size_t i = 0; i < 2; i++) {
        alma__vault__v1__observation__init(&f->obs[i]);
        f->obs[i].code = &f->code[2 + i];
        f->obs[i].effective_date = "2024-03-01";
        f->item[2 + i].body_case = ALMA__VAULT__V1__ITEM__BODY_OBSERVATION;
        f->item[2 + i].observation = &f->obs[i];
    }
    set_code(&f->code[2], "http://loinc.org", "33914-3",
             "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by "
             "Creatinine-based formula (MDRD)");
    f->obs[0].value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY;
    f->obs[0].quantity = 72.5;
    f->obs[0].unit = "mL/min/{1.73_m2}";
    set_code(&f->code[3], "http://loinc.org", "72166-2", "Tobacco smoking status");
    f->obs[1].value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_TEXT;
    f->obs[1].text = "Never smoker";

    /* 4: coded, ongoing; 5: a name only, stopped */
    for (size_t i = 0; i < 2; i++) {
        alma__vault__v1__medication__init(&f->med[i]);
        f->item[4 + i].body_case = ALMA__VAULT__V1__ITEM__BODY_MEDICATION;
        f->item[4 + i].medication = &f->med[i];
    }
    set_code(&f->code[4], "http://www.nlm.nih.gov/research/umls/rxnorm", "860975", "");
    f->med[0].code = &f->code[4];
    f->med[0].name = "Metformin 500 mg oral tablet";
    f->med[0].dose = "500 mg twice daily";
    f->med[0].start_date = "2018-05-02";
    f->med[0].status = ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_ACTIVE;
    f->med[1].name = "Lisinopril";
    f->med[1].start_date = "2019-01-01";
    f->med[1].end_date = "2020-06-30";
    f->med[1].status = ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_STOPPED;

    /* 6: a sensitive note; 7: a document */
    alma__vault__v1__note__init(&f->note);
    f->note.title = "Visit note";
    f->note.text = NOTE_TEXT;
    f->note.date = "2024-03-01";
    f->item[6].body_case = ALMA__VAULT__V1__ITEM__BODY_NOTE;
    f->item[6].note = &f->note;
    f->item[6].sensitive = 1;
    alma__vault__v1__document__init(&f->doc);
    f->doc.title = "Lab report";
    f->doc.media_type = "application/pdf";
    f->doc.content.data = (uint8_t *)DOC_BYTES;
    f->doc.content.len = DOC_LEN;
    f->doc.date = "2024-03-02";
    f->item[7].body_case = ALMA__VAULT__V1__ITEM__BODY_DOCUMENT;
    f->item[7].document = &f->doc;

    for (size_t i = 0; i < N_ITEMS; i++) {
        f->items[i].record_id = RECORD_IDS[i];
        f->items[i].version = (uint32_t)(i + 1);
        f->items[i].updated_us = UPDATED_US + (int64_t)i * 1000000;
        f->items[i].item = &f->item[i];
    }
    f->in.tenant_id = TENANT;
    f->in.patient_ref = PT;
    f->in.patient_version = 3;
    f->in.patient_updated_us = UPDATED_US;
    f->in.patient = &f->patient;
    f->in.items = f->items;
    f->in.item_count = N_ITEMS;
    f->in.now_us = NOW_US;
    f->in.bundle_id = BUNDLE;
}

/* ---------------------------------------------------------------------------------------------------------
 * Helpers. */

static char *build(const vault_fhir_input *in, size_t *ret_len, uint32_t *ret_resources)
{
    char *json = NULL;
    size_t len = 0;
    uint32_t n = 0;
    base_result r = vault_fhir_bundle(in, &json, &len, &n);
    if (!base_is_ok(r))
        fail_msg("vault_fhir_bundle: %s: %s", base_err_name(r.err), base_error_message());
    assert_non_null(json);
    assert_int_equal(strlen(json), len);
    if (ret_len)
        *ret_len = len;
    if (ret_resources)
        *ret_resources = n;
    return json;
}

static json_t *parse(const char *json)
{
    json_error_t err;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        fail_msg("the bundle is not JSON: %s at %d", err.text, err.position);
    return root;
}

/* The value at a dotted path ("entry.0.resource.meta.security.0.code"); NULL when absent. */
static json_t *jget(json_t *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = root;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save)) {
        if (json_is_array(cur)) {
            char *end = NULL;
            unsigned long i = strtoul(tok, &end, 10);
            cur = end && *end == '\0' ? json_array_get(cur, i) : NULL;
        } else {
            cur = json_object_get(cur, tok);
        }
    }
    return cur;
}

static const char *jstr(json_t *root, const char *path)
{
    return json_string_value(jget(root, path));
}

static void assert_jstr(json_t *root, const char *path, const char *want)
{
    const char *have = jstr(root, path);
    if (!have || strcmp(have, want) != 0)
        fail_msg("%s: want \"%s\", have %s%s%s", path, want, have ? "\"" : "", have ? have : "(absent)",
                 have ? "\"" : "");
}

static void assert_absent(json_t *root, const char *path)
{
    if (jget(root, path))
        fail_msg("%s should be absent", path);
}

/* The resource of entry i. */
static json_t *res_at(json_t *bundle, size_t i)
{
    json_t *r = jget(json_array_get(json_object_get(bundle, "entry"), i), "resource");
    if (!r)
        fail_msg("entry %zu has no resource", i);
    return r;
}

/* No "" string, {} object or [] array anywhere (FHIR forbids empty values; fhir.h omits them). */
static void assert_no_empty(json_t *v, const char *where)
{
    if (json_is_string(v) && json_string_length(v) == 0)
        fail_msg("an empty string at %s", where);
    if (json_is_object(v)) {
        if (json_object_size(v) == 0)
            fail_msg("an empty object at %s", where);
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", where, k);
            assert_no_empty(x, sub);
        }
    }
    if (json_is_array(v)) {
        if (json_array_size(v) == 0)
            fail_msg("an empty array at %s", where);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%zu", where, i);
            assert_no_empty(x, sub);
        }
    }
}

/* Every "reference" member anywhere under v resolves to an entry's fullUrl (BASE + "/" + reference). */
static void assert_references_resolve(json_t *bundle, json_t *v, size_t *ret_count)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (strcmp(k, "reference") == 0 && json_is_string(x)) {
                char url[256];
                snprintf(url, sizeof url, "%s/%s", BASE, json_string_value(x));
                bool found = false;
                size_t i;
                json_t *e;
                json_array_foreach(json_object_get(bundle, "entry"), i, e)
                {
                    found = found || strcmp(jstr(e, "fullUrl"), url) == 0;
                }
                if (!found)
                    fail_msg("reference %s resolves to no entry", json_string_value(x));
                (*ret_count)++;
            } else {
                assert_references_resolve(bundle, x, ret_count);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            assert_references_resolve(bundle, x, ret_count);
        }
    }
}

static bool valid_fhir_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.'))
            return false;
    }
    return true;
}

static bool has_confidentiality_r(json_t *res)
{
    json_t *sec = jget(res, "meta.security");
    size_t i;
    json_t *c;
    json_array_foreach(sec, i, c)
    {
        const char *sys = jstr(c, "system"), *code = jstr(c, "code");
        if (sys && code && strcmp(sys, "http://terminology.hl7.org/CodeSystem/v3-Confidentiality") == 0 &&
            strcmp(code, "R") == 0)
            return true;
    }
    return false;
}

/* The decoded base64 attachment data of a DocumentReference (malloc'd). */
static unsigned char *attachment_data(json_t *res, size_t *ret_len)
{
    const char *b64 = jstr(res, "content.0.attachment.data");
    assert_non_null(b64);
    size_t cap = acrypto_base64_decode_size(strlen(b64));
    unsigned char *out = malloc(cap + 1);
    assert_non_null(out);
    assert_true(base_is_ok(acrypto_base64_decode(b64, strlen(b64), out, cap, ret_len)));
    return out;
}

/* ---------------------------------------------------------------------------------------------------------
 * Structure. */

static void test_bundle_structure(void **state)
{
    (void)state;
    fixture *f = malloc(sizeof *f);
    assert_non_null(f);
    fixture_init(f);
    uint32_t n = 0;
    char *json = build(&f->in, NULL, &n);
    json_t *b = parse(json);
    assert_no_empty(b, "");

    assert_jstr(b, "resourceType", "Bundle");
    assert_jstr(b, "type", "collection");
    assert_jstr(b, "id", "ex-00112233445566778899aabbccddeeff");
    assert_jstr(b, "timestamp", NOW);
    assert_absent(b, "total"); /* only for searchset and history (bdl-1) */
    json_t *entries = json_object_get(b, "entry");
    assert_int_equal(json_array_size(entries), N_RESOURCES);
    assert_int_equal(n, N_RESOURCES);

    /* Resource types in order; ids valid FHIR ids; fullUrls BASE/Type/id and unique. */
    static const char *const types[N_RESOURCES] = {
        "Patient",
        "Coverage",
        "Coverage",
        "Condition",
        "Condition",
        "Observation",
        "Observation",
        "MedicationStatement",
        "MedicationStatement",
        "DocumentReference",
        "DocumentReference",
    };
    for (size_t i = 0; i < N_RESOURCES; i++) {
        json_t *e = json_array_get(entries, i);
        json_t *r = res_at(b, i);
        assert_jstr(r, "resourceType", types[i]);
        const char *id = jstr(r, "id");
        assert_non_null(id);
        if (!valid_fhir_id(id))
            fail_msg("entry %zu: id %s is not a FHIR id", i, id);
        char url[256];
        snprintf(url, sizeof url, "%s/%s/%s", BASE, types[i], id);
        assert_jstr(e, "fullUrl", url);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(jstr(json_array_get(entries, j), "fullUrl"), url);
    }

    /* Patient */
    json_t *pt = res_at(b, 0);
    assert_jstr(pt, "id", PT_ID);
    assert_jstr(pt, "meta.versionId", "3");
    assert_jstr(pt, "meta.lastUpdated", UPDATED);
    assert_absent(pt, "meta.security");
    assert_jstr(pt, "identifier.0.system", "urn:alma:tenant:" TENANT ":mrn");
    assert_jstr(pt, "identifier.0.value", MRN);
    assert_jstr(pt, "identifier.0.type.coding.0.system", "http://terminology.hl7.org/CodeSystem/v2-0203");
    assert_jstr(pt, "identifier.0.type.coding.0.code", "MR");
    assert_jstr(pt, "identifier.1.system", "urn:alma:patient-ref");
    assert_jstr(pt, "identifier.1.value", PT);
    assert_jstr(pt, "name.0.family", FAMILY);
    assert_jstr(pt, "name.0.given.0", "Alex");
    assert_jstr(pt, "name.0.given.1", "Quinn");
    assert_jstr(pt, "gender", "female");
    assert_jstr(pt, "birthDate", "1980-02-29");
    assert_jstr(pt, "address.0.line.1", "Apt 2");
    assert_jstr(pt, "address.0.city", "Springfield");
    assert_jstr(pt, "address.0.state", "IL");
    assert_jstr(pt, "address.0.postalCode", "62701");
    assert_jstr(pt, "address.0.country", "US"); /* empty in the proto means US */
    assert_jstr(pt, "telecom.0.system", "phone");
    assert_jstr(pt, "telecom.0.value", "+15555550123");
    assert_jstr(pt, "telecom.1.system", "email");
    assert_jstr(pt, "telecom.1.value", "alex.testpatient@example.invalid");

    /* Coverage: the open one active with group and plan classes, the ended one cancelled. */
    json_t *c0 = res_at(b, 1), *c1 = res_at(b, 2);
    assert_jstr(c0, "id", PT_ID ".coverage.1");
    assert_jstr(c1, "id", PT_ID ".coverage.2");
    assert_jstr(c0, "status", "active");
    assert_jstr(c1, "status", "cancelled");
    assert_jstr(c0, "beneficiary.reference", "Patient/" PT_ID);
    assert_jstr(c0, "payor.0.identifier.system", "urn:alma:payer-id");
    assert_jstr(c0, "payor.0.identifier.value", "payer.test-1");
    assert_jstr(c0, "subscriberId", "MEM-0001");
    assert_jstr(c0, "period.start", "2020-01-01");
    assert_absent(c0, "period.end");
    assert_jstr(c0, "class.0.type.coding.0.system", "http://terminology.hl7.org/CodeSystem/coverage-class");
    assert_jstr(c0, "class.0.type.coding.0.code", "group");
    assert_jstr(c0, "class.0.value", "GRP-42");
    assert_jstr(c0, "class.1.type.coding.0.code", "plan");
    assert_jstr(c0, "class.1.value", "Synthetic Gold PPO");
    assert_jstr(c1, "class.0.type.coding.0.code", "plan"); /* no group number: no group class */
    assert_absent(c1, "class.1");
    assert_jstr(c1, "period.end", "2019-12-31");
    assert_jstr(c0, "meta.versionId", "3");

    /* Every item: id is the record id with '_' -> '-', reversible, and the record id is kept. */
    for (size_t i = 0; i < N_ITEMS; i++) {
        json_t *r = res_at(b, 1 + N_COVERAGE + i);
        char back[64];
        snprintf(back, sizeof back, "%s", jstr(r, "id"));
        for (char *p = back; *p; p++)
            *p = *p == '-' ? '_' : *p;
        assert_string_equal(back, RECORD_IDS[i]);
        assert_jstr(r, "identifier.0.system", "urn:alma:record-id");
        assert_jstr(r, "identifier.0.value", RECORD_IDS[i]);
        char version[16];
        snprintf(version, sizeof version, "%zu", i + 1);
        assert_jstr(r, "meta.versionId", version);
        assert_non_null(jstr(r, "meta.lastUpdated"));
        /* sensitive: the F32.A problem (forced) and the note (flagged), nothing else */
        bool want = i == 1 || i == 6;
        if (has_confidentiality_r(r) != want)
            fail_msg("item %zu: meta.security R should be %s", i, want ? "present" : "absent");
        if (!want)
            assert_absent(r, "meta.security");
    }
    assert_jstr(res_at(b, 3), "meta.lastUpdated", UPDATED);
    assert_jstr(res_at(b, 4), "meta.security.0.display", "restricted");

    /* Conditions */
    json_t *cond = res_at(b, 3);
    assert_jstr(cond, "clinicalStatus.coding.0.system",
                "http://terminology.hl7.org/CodeSystem/condition-clinical");
    assert_jstr(cond, "clinicalStatus.coding.0.code", "active");
    assert_jstr(cond, "category.0.coding.0.code", "problem-list-item");
    assert_jstr(cond, "code.coding.0.system", "http://hl7.org/fhir/sid/icd-10-cm");
    assert_jstr(cond, "code.coding.0.code", "E11.9");
    assert_jstr(cond, "code.coding.0.display", "Type 2 diabetes mellitus without complications");
    assert_jstr(cond, "onsetDateTime", "2018-05-01");
    assert_jstr(cond, "subject.reference", "Patient/" PT_ID);
    assert_jstr(res_at(b, 4), "clinicalStatus.coding.0.code", "resolved");
    assert_absent(res_at(b, 4), "onsetDateTime");

    /* Observations */
    json_t *q = res_at(b, 5);
    assert_jstr(q, "status", "final");
    assert_jstr(q, "code.coding.0.system", "http://loinc.org");
    assert_jstr(q, "code.coding.0.code", "33914-3");
    assert_jstr(q, "effectiveDateTime", "2024-03-01");
    assert_true(json_is_real(jget(q, "valueQuantity.value")));
    assert_true(json_real_value(jget(q, "valueQuantity.value")) == 72.5);
    assert_jstr(q, "valueQuantity.unit", "mL/min/{1.73_m2}");
    assert_jstr(q, "valueQuantity.system", "http://unitsofmeasure.org");
    assert_jstr(q, "valueQuantity.code", "mL/min/{1.73_m2}");
    assert_absent(q, "valueString");
    assert_non_null(strstr(json, "\"value\":72.5}")); /* written as entered, not 72.500000000000000 */
    json_t *t = res_at(b, 6);
    assert_jstr(t, "valueString", "Never smoker");
    assert_absent(t, "valueQuantity");

    /* MedicationStatements */
    json_t *m = res_at(b, 7);
    assert_jstr(m, "status", "active");
    assert_jstr(m, "medicationCodeableConcept.coding.0.system",
                "http://www.nlm.nih.gov/research/umls/rxnorm");
    assert_jstr(m, "medicationCodeableConcept.coding.0.code", "860975");
    assert_absent(m, "medicationCodeableConcept.coding.0.display"); /* "" in the input */
    assert_jstr(m, "medicationCodeableConcept.text", "Metformin 500 mg oral tablet");
    assert_jstr(m, "dosage.0.text", "500 mg twice daily");
    assert_jstr(m, "effectivePeriod.start", "2018-05-02");
    assert_absent(m, "effectivePeriod.end");
    assert_jstr(m, "subject.reference", "Patient/" PT_ID);
    json_t *m2 = res_at(b, 8);
    assert_jstr(m2, "status", "stopped");
    assert_absent(m2, "medicationCodeableConcept.coding");
    assert_jstr(m2, "medicationCodeableConcept.text", "Lisinopril");
    assert_absent(m2, "dosage");
    assert_jstr(m2, "effectivePeriod.end", "2020-06-30");

    /* DocumentReferences: the note as UTF-8 text/plain, the document's bytes, both round-tripping. */
    json_t *note = res_at(b, 9);
    assert_jstr(note, "status", "current");
    assert_jstr(note, "category.0.coding.0.code", "note");
    assert_jstr(note, "date", "2024-03-01T00:00:00Z");
    assert_jstr(note, "description", "Visit note");
    assert_jstr(note, "content.0.attachment.contentType", "text/plain; charset=utf-8");
    assert_jstr(note, "content.0.attachment.title", "Visit note");
    assert_jstr(note, "content.0.attachment.creation", "2024-03-01");
    assert_int_equal(json_integer_value(jget(note, "content.0.attachment.size")), strlen(NOTE_TEXT));
    size_t len = 0;
    unsigned char *data = attachment_data(note, &len);
    assert_int_equal(len, strlen(NOTE_TEXT));
    assert_memory_equal(data, NOTE_TEXT, len);
    free(data);
    json_t *doc = res_at(b, 10);
    assert_jstr(doc, "category.0.coding.0.code", "document");
    assert_jstr(doc, "content.0.attachment.contentType", "application/pdf");
    assert_jstr(doc, "date", "2024-03-02T00:00:00Z");
    assert_int_equal(json_integer_value(jget(doc, "content.0.attachment.size")), DOC_LEN);
    data = attachment_data(doc, &len);
    assert_int_equal(len, DOC_LEN);
    assert_memory_equal(data, DOC_BYTES, DOC_LEN);
    free(data);

    /* Every reference resolves inside the Bundle: the coverages' beneficiary and each item's subject. */
    size_t refs = 0;
    assert_references_resolve(b, b, &refs);
    assert_int_equal(refs, N_COVERAGE + N_ITEMS);

    json_decref(b);
    free(json);
    free(f);
}

/* Same input, same bytes: twice from one input, and from a second input built the same way. Keys sorted. */
static void test_deterministic(void **state)
{
    (void)state;
    fixture *f = malloc(sizeof *f), *g = malloc(sizeof *g);
    assert_non_null(f);
    assert_non_null(g);
    fixture_init(f);
    fixture_init(g);
    size_t l1 = 0, l2 = 0, l3 = 0;
    char *a = build(&f->in, &l1, NULL);
    char *b = build(&f->in, &l2, NULL);
    char *c = build(&g->in, &l3, NULL);
    assert_int_equal(l1, l2);
    assert_int_equal(l1, l3);
    assert_memory_equal(a, b, l1);
    assert_memory_equal(a, c, l1);
    /* compact, members sorted: "entry" < "id" < "resourceType" < "timestamp" < "type" */
    assert_true(strncmp(a, "{\"entry\":[{\"fullUrl\":", 20) == 0);
    assert_null(strchr(a, '\n'));
    const char *id = strstr(a, "],\"id\":\"ex-");
    const char *rt =
        strstr(a, ",\"resourceType\":\"Bundle\",\"timestamp\":\"" NOW "\",\"type\":\"collection\"}");
    assert_non_null(id);
    assert_non_null(rt);
    assert_true(rt > id);
    assert_true(rt[strlen(rt) - 1] == '}' && (size_t)(rt - a) + strlen(rt) == l1);

    /* Another time changes only the timestamp. */
    f->in.now_us = NOW_US + 1;
    size_t l4 = 0;
    char *d = build(&f->in, &l4, NULL);
    assert_int_equal(l4, l1);
    size_t diff = 0;
    for (size_t i = 0; i < l1; i++)
        diff += a[i] != d[i];
    assert_int_equal(diff, 1);
    free(a);
    free(b);
    free(c);
    free(d);
    free(f);
    free(g);
}

/* The least a record can hold: optional members are omitted, never "" or {}; required FHIR members that the
 * vault leaves unset get FHIR's own "unknown" where there is one. */
static void fixture_minimal(fixture *f)
{
    fixture_init(f);
    f->demo.n_given_names = 0;
    f->demo.birth_date = "";
    f->demo.sex = ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_UNSPECIFIED;
    f->patient.contact = NULL;
    f->patient.n_coverage = 0;
    f->patient.coverage = NULL;
    f->in.patient_version = 0;
    f->in.patient_updated_us = 0;
    /* a problem with nothing but its existence, an observation with a code only, a medication by name */
    f->problem[0].code = NULL;
    f->problem[0].onset_date = "";
    f->problem[0].status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_UNSPECIFIED;
    set_code(&f->code[2], "http://loinc.org", "33914-3", NULL);
    f->obs[0].value_case = ALMA__VAULT__V1__OBSERVATION__VALUE__NOT_SET;
    f->obs[0].unit = "";
    f->obs[0].effective_date = "";
    f->med[1].start_date = "";
    f->med[1].end_date = "";
    f->med[1].status = ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_UNSPECIFIED;
    f->item[0].sensitive = 0;
    f->items[0] = (vault_fhir_item){.record_id = RECORD_IDS[0], .item = &f->item[0]};
    f->items[1] = (vault_fhir_item){.record_id = RECORD_IDS[2], .item = &f->item[2]};
    f->items[2] = (vault_fhir_item){.record_id = RECORD_IDS[5], .item = &f->item[5]};
    f->in.item_count = 3;
}

static void test_minimal_omits_optional(void **state)
{
    (void)state;
    fixture *f = malloc(sizeof *f);
    assert_non_null(f);
    fixture_minimal(f);
    uint32_t n = 0;
    char *json = build(&f->in, NULL, &n);
    assert_int_equal(n, 4);
    json_t *b = parse(json);
    assert_no_empty(b, "");
    json_t *pt = res_at(b, 0);
    assert_absent(pt, "meta");
    assert_absent(pt, "gender");
    assert_absent(pt, "birthDate");
    assert_absent(pt, "address");
    assert_absent(pt, "telecom");
    assert_absent(pt, "name.0.given");
    assert_jstr(pt, "name.0.family", FAMILY);
    json_t *cond = res_at(b, 1);
    assert_jstr(cond, "resourceType", "Condition");
    assert_absent(cond, "meta");
    assert_absent(cond, "clinicalStatus");
    assert_absent(cond, "code");
    assert_absent(cond, "onsetDateTime");
    assert_jstr(cond, "subject.reference", "Patient/" PT_ID);
    json_t *obs = res_at(b, 2);
    assert_absent(obs, "valueQuantity");
    assert_absent(obs, "valueString");
    assert_absent(obs, "effectiveDateTime");
    assert_absent(obs, "code.coding.0.display");
    assert_jstr(obs, "status", "final");
    json_t *med = res_at(b, 3);
    assert_jstr(med, "status", "unknown");
    assert_absent(med, "effectivePeriod");
    assert_absent(med, "dosage");
    json_decref(b);
    free(json);
    free(f);
}

/* ---------------------------------------------------------------------------------------------------------
 * Refusals: each mutation of a valid input fails with its error, no output, and no value in the message. */

typedef struct bad_case {
    const char *name;
    void (*mutate)(fixture *f);
    base_err err;
    const char *message; /* a part of the expected message */
} bad_case;

static void no_tenant(fixture *f)
{
    f->in.tenant_id = "";
}
static void tenant_with_colon(fixture *f)
{
    f->in.tenant_id = "tenant:a";
}
static void no_patient_ref(fixture *f)
{
    f->in.patient_ref = NULL;
}
static void patient_ref_with_dash(fixture *f)
{
    f->in.patient_ref = "pt-0123"; /* '-' would make the '_' mapping irreversible */
}
static void patient_ref_too_long(fixture *f)
{
    f->in.patient_ref = "pt_0123456789abcdef0123456789abcdef0123456789abcd"; /* 49 */
}
static void no_patient(fixture *f)
{
    f->in.patient = NULL;
}
static void no_bundle_id(fixture *f)
{
    f->in.bundle_id = NULL;
}
static void no_now(fixture *f)
{
    f->in.now_us = 0;
}
static void no_items_array(fixture *f)
{
    f->in.items = NULL;
}
static void no_record_id(fixture *f)
{
    f->items[3].record_id = NULL;
}
static void record_id_with_dot(fixture *f)
{
    f->items[3].record_id = "it_1.2";
}
static void no_item(fixture *f)
{
    f->items[4].item = NULL;
}
static void no_body(fixture *f)
{
    f->item[5].body_case = ALMA__VAULT__V1__ITEM__BODY__NOT_SET;
}
static void duplicate_record(fixture *f)
{
    f->items[7].record_id = RECORD_IDS[2];
}
static void bad_birth_date(fixture *f)
{
    f->demo.birth_date = "1981-02-29"; /* not a leap year */
}
static void bad_onset(fixture *f)
{
    f->problem[0].onset_date = "2018-13-01";
}
static void note_date_not_a_date(fixture *f)
{
    f->note.date = "last Tuesday";
}
static void no_observation_code(fixture *f)
{
    f->obs[1].code = NULL;
}
static void no_medication_name_or_code(fixture *f)
{
    f->med[1].name = "";
}
static void quantity_nan(fixture *f)
{
    f->obs[0].quantity = NAN;
}
static void unit_with_double_space(fixture *f)
{
    f->obs[0].unit = "mg  per dL";
}
static void code_with_space_at_end(fixture *f)
{
    f->code[0].code = "E11.9 ";
}
static void system_with_space(fixture *f)
{
    f->code[2].system = "http://loinc org";
}
static void family_not_utf8(fixture *f)
{
    f->demo.family_name = "Test\xffpatient";
}
static void note_not_utf8(fixture *f)
{
    f->note.title = "Visit \xc3";
}
static void media_type_not_mime(fixture *f)
{
    f->doc.media_type = "pdf";
}
static void negative_updated(fixture *f)
{
    f->items[0].updated_us = -1;
}
static void unknown_sex(fixture *f)
{
    f->demo.sex = (Alma__Vault__V1__AdministrativeSex)9;
}
static void coverage_without_payer(fixture *f)
{
    f->cov[1].payer_id = "";
}
static void too_many_items(fixture *f)
{
    f->in.item_count = VAULT_FHIR_MAX_ITEMS + 1;
}
static void too_many_coverages(fixture *f)
{
    f->patient.n_coverage = VAULT_FHIR_MAX_COVERAGE + 1;
}
static void too_big(fixture *f)
{
    f->doc.content.len = VAULT_FHIR_MAX_BYTES / 4 * 3; /* refused from the sizes, before any byte is read */
}

static void test_refusals(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"no tenant", no_tenant, BASE_ERR_INVALID, "tenant_id is required"},
        {"tenant with ':'", tenant_with_colon, BASE_ERR_INVALID, "tenant_id"},
        {"no patient_ref", no_patient_ref, BASE_ERR_INVALID, "patient_ref is required"},
        {"patient_ref with '-'", patient_ref_with_dash, BASE_ERR_INVALID, "patient_ref may hold only"},
        {"patient_ref too long", patient_ref_too_long, BASE_ERR_INVALID, "patient_ref is longer than 48"},
        {"no patient", no_patient, BASE_ERR_INVALID, "patient is required"},
        {"no bundle_id", no_bundle_id, BASE_ERR_INVALID, "bundle_id is required"},
        {"no now", no_now, BASE_ERR_INVALID, "now_us is required"},
        {"no items array", no_items_array, BASE_ERR_INVALID, "items is required"},
        {"no record_id", no_record_id, BASE_ERR_INVALID, "item 3: record_id is required"},
        {"record_id with '.'", record_id_with_dot, BASE_ERR_INVALID, "item 3: record_id may hold only"},
        {"no item", no_item, BASE_ERR_INVALID, "item 4: item is required"},
        {"no body", no_body, BASE_ERR_INVALID, "item 5: item has no body"},
        {"duplicate record", duplicate_record, BASE_ERR_INVALID, "same record_id"},
        {"bad birth date", bad_birth_date, BASE_ERR_INVALID,
         "patient: demographics.birth_date is not a date"},
        {"bad onset", bad_onset, BASE_ERR_INVALID, "item 0: problem.onset_date is not a date"},
        {"note date", note_date_not_a_date, BASE_ERR_INVALID, "item 6: date is not a date"},
        {"no observation code", no_observation_code, BASE_ERR_INVALID,
         "item 3: observation.code is required"},
        {"no medication", no_medication_name_or_code, BASE_ERR_INVALID, "item 5: medication.name or"},
        {"NaN", quantity_nan, BASE_ERR_INVALID, "item 2: observation.quantity is not finite"},
        {"unit spaces", unit_with_double_space, BASE_ERR_INVALID,
         "item 2: observation.unit is not a FHIR code"},
        {"code space", code_with_space_at_end, BASE_ERR_INVALID, "item 0: problem.code is not a FHIR code"},
        {"system space", system_with_space, BASE_ERR_INVALID,
         "item 2: observation.code.system is not a FHIR uri"},
        {"family UTF-8", family_not_utf8, BASE_ERR_INVALID,
         "patient: demographics.family_name is not valid UTF-8"},
        {"title UTF-8", note_not_utf8, BASE_ERR_INVALID, "item 6: title is not valid UTF-8"},
        {"media type", media_type_not_mime, BASE_ERR_INVALID,
         "item 7: document media type is not a MIME type"},
        {"negative time", negative_updated, BASE_ERR_INVALID, "item 0: updated_us is negative"},
        {"unknown sex", unknown_sex, BASE_ERR_INVALID, "demographics.sex is not a defined value"},
        {"no payer", coverage_without_payer, BASE_ERR_INVALID, "coverage 1: payer_id is required"},
        {"too many items", too_many_items, BASE_ERR_LIMIT, "more than 50000 items"},
        {"too many coverages", too_many_coverages, BASE_ERR_LIMIT, "more than 64 coverages"},
        {"too big", too_big, BASE_ERR_LIMIT, "the bundle would exceed 268435456 bytes"},
    };
    /* PHI and the bad values themselves: never in a message. */
    static const char *const secret[] = {FAMILY,    MRN,     "1981",      "2018-13",     "Tuesday",
                                         "mg  per", "E11.9", "loinc org", "tenant:a",    "pt-0123",
                                         "it_1.2",  "Visit", "pdf",       RECORD_IDS[2], PT};
    fixture *f = malloc(sizeof *f);
    assert_non_null(f);
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        fixture_init(f);
        cases[i].mutate(f);
        char *json = (char *)"untouched";
        size_t len = 12345;
        uint32_t n = 777;
        base_result r = vault_fhir_bundle(&f->in, &json, &len, &n);
        const char *msg = base_error_message();
        if (r.err != cases[i].err)
            fail_msg("%s: want %s, have %s (%s)", cases[i].name, base_err_name(cases[i].err),
                     base_err_name(r.err), msg);
        if (!strstr(msg, cases[i].message))
            fail_msg("%s: message \"%s\" lacks \"%s\"", cases[i].name, msg, cases[i].message);
        for (size_t s = 0; s < BASE_ARRAY_LEN(secret); s++) {
            if (strstr(msg, secret[s]))
                fail_msg("%s: message \"%s\" contains a value", cases[i].name, msg);
        }
        assert_string_equal(json, "untouched");
        assert_int_equal(len, 12345);
        assert_int_equal(n, 777);
    }
    /* NULL arguments */
    fixture_init(f);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(vault_fhir_bundle(NULL, &json, &len, NULL).err, BASE_ERR_INVALID);
    assert_int_equal(vault_fhir_bundle(&f->in, NULL, &len, NULL).err, BASE_ERR_INVALID);
    assert_int_equal(vault_fhir_bundle(&f->in, &json, NULL, NULL).err, BASE_ERR_INVALID);
    assert_null(json);
    /* ret_resources is optional */
    assert_true(base_is_ok(vault_fhir_bundle(&f->in, &json, &len, NULL)));
    free(json);
    free(f);
}

/* A coverage that ends today is still active; one that ended yesterday is cancelled. */
static void test_coverage_status_by_date(void **state)
{
    (void)state;
    fixture *f = malloc(sizeof *f);
    assert_non_null(f);
    fixture_init(f);
    f->cov[0].end_date = "2026-03-15"; /* NOW's date */
    f->cov[1].end_date = "2026-03-14";
    char *json = build(&f->in, NULL, NULL);
    json_t *b = parse(json);
    assert_jstr(res_at(b, 1), "status", "active");
    assert_jstr(res_at(b, 2), "status", "cancelled");
    json_decref(b);
    free(json);
    free(f);
}

/* ---------------------------------------------------------------------------------------------------------
 * FHIR R4 JSON schema (ajv), as test_audit_fhir_schema uses it. */

/* Appends json + "\n" to a growing NDJSON text. */
static void ndjson_add(char **text, const char *json)
{
    size_t have = *text ? strlen(*text) : 0, add = strlen(json);
    char *grown = realloc(*text, have + add + 2);
    assert_non_null(grown);
    memcpy(grown + have, json, add);
    grown[have + add] = '\n';
    grown[have + add + 1] = '\0';
    *text = grown;
}

static void ndjson_add_tree(char **text, json_t *tree)
{
    char *line = json_dumps(tree, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(line);
    ndjson_add(text, line);
    free(line);
}

/* Each breaks one copy of the full Bundle in one way; the validator must name the place. The entries are
 * 0 Patient, 1-2 Coverage, 3-4 Condition, 5-6 Observation, 7-8 MedicationStatement, 9-10
 * DocumentReference. */
typedef struct breakage {
    void (*apply)(json_t *b);
    const char *expect; /* in the validator's output, after "line N: " */
} breakage;

static void gender_invalid(json_t *b)
{
    json_object_set_new(res_at(b, 0), "gender", json_string("woman"));
}
static void id_with_underscore(json_t *b)
{
    json_object_set_new(res_at(b, 3), "id", json_string(RECORD_IDS[0])); /* unmapped */
}
static void date_without_time(json_t *b)
{
    json_object_set_new(res_at(b, 9), "date", json_string("2024-03-01")); /* an instant needs a time */
}
static void quantity_as_string(json_t *b)
{
    json_object_set_new(jget(res_at(b, 5), "valueQuantity"), "value", json_string("72.5"));
}
static void unknown_member(json_t *b)
{
    json_object_set_new(res_at(b, 6), "valueText", json_string("Never smoker"));
}
static void bad_timestamp(json_t *b)
{
    json_object_set_new(b, "timestamp", json_string("2026-03-15 10:20:30Z"));
}
static void unknown_resource_type(json_t *b)
{
    json_object_set_new(res_at(b, 8), "resourceType", json_string("MedicationUsage")); /* R5's name */
}
static void security_as_object(json_t *b)
{
    json_t *meta = jget(res_at(b, 4), "meta");
    json_object_set(meta, "security", json_array_get(json_object_get(meta, "security"), 0));
}
static void coverage_without_payor(json_t *b)
{
    json_object_del(res_at(b, 1), "payor");
}
static void empty_subject_reference(json_t *b)
{
    json_object_set_new(jget(res_at(b, 7), "subject"), "reference", json_string(""));
}

static void test_schema_validation(void **state)
{
    (void)state;
    static const breakage broken[] = {
        {gender_invalid, "/entry/0/resource/gender: must be equal to one of the allowed values"},
        {id_with_underscore, "/entry/3/resource/id: must match pattern"},
        {date_without_time, "/entry/9/resource/date: must match pattern"},
        {quantity_as_string, "/entry/5/resource/valueQuantity/value: must be number"},
        {unknown_member, "/entry/6/resource: must NOT have additional properties: 'valueText'"},
        {bad_timestamp, "/timestamp: must match pattern"},
        {unknown_resource_type,
         "/entry/8/resource/resourceType: not a FHIR R4 resource type: \"MedicationUsage\""},
        {security_as_object, "/entry/4/resource/meta/security: must be array"},
        {coverage_without_payor, "/entry/1/resource: must have required property 'payor'"},
        {empty_subject_reference, "/entry/7/resource/subject/reference: must match pattern"},
    };
    fixture *f = malloc(sizeof *f);
    assert_non_null(f);

    /* 1. Valid: the full Bundle and the minimal one. */
    fixture_init(f);
    char *full = build(&f->in, NULL, NULL);
    fixture_minimal(f);
    char *minimal = build(&f->in, NULL, NULL);
    char *text = NULL;
    ndjson_add(&text, full);
    ndjson_add(&text, minimal);
    char valid_path[TESTPROC_PATH_MAX];
    snprintf(valid_path, sizeof valid_path, "%s", testproc_work_path("bundles.ndjson"));
    testfhir_write_file(valid_path, text);
    free(text);
    text = NULL;
    char *out = NULL;
    int rc = testfhir_validate("Bundle", valid_path, &out);
    if (rc != 0)
        fail_msg("FHIR R4 schema validation of the export failed:\n%s", out);
    if (!strstr(out, ": 2 Bundle resource(s) valid against FHIR R4"))
        fail_msg("the validator did not report both Bundles valid:\n%s", out);
    /* 11 + 4 entries, each also validated on its own */
    if (!strstr(out, ": 15 entry resource(s) valid: Condition 3, Coverage 2, DocumentReference 2, "
                     "MedicationStatement 3, Observation 3, Patient 2"))
        fail_msg("the validator did not report every entry valid:\n%s", out);
    free(out);

    /* 2. Broken copies: line 1 is the unbroken Bundle, line i + 2 is broken by broken[i]. */
    ndjson_add(&text, full);
    for (size_t i = 0; i < BASE_ARRAY_LEN(broken); i++) {
        json_t *b = parse(full);
        broken[i].apply(b);
        ndjson_add_tree(&text, b);
        json_decref(b);
    }
    char broken_path[TESTPROC_PATH_MAX];
    snprintf(broken_path, sizeof broken_path, "%s", testproc_work_path("broken.ndjson"));
    testfhir_write_file(broken_path, text);
    free(text);
    const char *expect[BASE_ARRAY_LEN(broken)];
    for (size_t i = 0; i < BASE_ARRAY_LEN(broken); i++)
        expect[i] = broken[i].expect;
    testfhir_expect_invalid("Bundle", broken_path, expect, BASE_ARRAY_LEN(broken));
    free(full);
    free(minimal);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bundle_structure),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_minimal_omits_optional),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_coverage_status_by_date),
        cmocka_unit_test_setup_teardown(test_schema_validation, testproc_setup, testproc_teardown),
    };
    return cmocka_run_group_tests_name("vault_fhir", tests, NULL, NULL);
}
