/* audit_entry_encode and audit_entry_to_fhir: the exact canonical bytes, their stability, escaping, omitted
 * fields, clean failures without values in the message, and the FHIR R4 AuditEvent mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "entry.h"
#include "entry_decode.h"
#include "merkle.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define PT   "pt_0123456789abcdef0123456789abcdef"
#define SVC  "spiffe://alma.example/ns/prod/sa/referral"
#define WHEN INT64_C(1795435200123456) /* 2026-11-23T12:00:00.123456Z */

typedef struct event_fixture {
    Alma__Audit__V1__EventInput ev;
    Alma__Audit__V1__Actor actor;
    Alma__Audit__V1__Recipient recipient;
    Alma__Audit__V1__GuidelineRef guideline;
    Alma__Audit__V1__EventInput__DetailsEntry detail[4];
    Alma__Audit__V1__EventInput__DetailsEntry *details[4];
    char *roles[4];
} event_fixture;

/* A READ of a patient's record by a clinician: only what is required plus a resource. */
static void event_init(event_fixture *f)
{
    memset(f, 0, sizeof *f);
    alma__audit__v1__event_input__init(&f->ev);
    alma__audit__v1__actor__init(&f->actor);
    alma__audit__v1__recipient__init(&f->recipient);
    alma__audit__v1__guideline_ref__init(&f->guideline);
    for (size_t i = 0; i < 4; i++) {
        alma__audit__v1__event_input__details_entry__init(&f->detail[i]);
        f->details[i] = &f->detail[i];
    }
    f->actor.principal_id = "usr_42";
    f->roles[0] = "pcp";
    f->actor.roles = f->roles;
    f->actor.n_roles = 1;
    f->ev.tenant_id = "tenant-a";
    f->ev.actor = &f->actor;
    f->ev.action = ALMA__AUDIT__V1__ACTION__ACTION_READ;
    f->ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT;
    f->ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    f->ev.patient_ref = PT;
    f->ev.resource_type = "Patient";
    f->ev.resource_id = "rec_1";
    f->ev.details = f->details;
}

/* Every field set: a disclosure to a public health agency, with a guideline and two details. */
static void event_init_full(event_fixture *f)
{
    event_init(f);
    f->roles[1] = "care_team";
    f->actor.n_roles = 2;
    f->actor.service_identity = "spiffe://ignored/from/request";
    f->ev.action = ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE;
    f->ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PUBLIC_HEALTH;
    f->ev.severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE;
    f->ev.resource_type = "Referral";
    f->ev.resource_id = "ref_9";
    f->recipient.name = "County Health Dept";
    f->recipient.address = "1 Main St, Springfield";
    f->ev.recipient = &f->recipient;
    f->ev.basis = ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH;
    f->ev.phi_description = "demographics; immunizations";
    f->guideline.engine_version = "1.2.0";
    f->guideline.bundle_id = "uspstf";
    f->guideline.bundle_version = "2024.1";
    f->guideline.bundle_hash = "sha256:ab12";
    f->guideline.source = "USPSTF 2024";
    f->ev.guideline = &f->guideline;
    f->ev.request_id = "req-1";
    f->detail[0].key = "zeta";
    f->detail[0].value = "2";
    f->detail[1].key = "alpha";
    f->detail[1].value = "1";
    f->ev.n_details = 2;
}

static char *encode_ok(const event_fixture *f, uint64_t seq, const char *svc, size_t *ret_len)
{
    char *json = NULL;
    size_t len = 0;
    base_result r = audit_entry_encode(&f->ev, seq, WHEN, svc, &json, &len);
    if (!base_is_ok(r))
        fail_msg("encode failed: %s", base_error_message());
    assert_non_null(json);
    assert_int_equal(len, strlen(json));
    if (ret_len)
        *ret_len = len;
    return json;
}

static const char full_expected[] =
    "{\"action\":\"ACTION_DISCLOSE\","
    "\"actor\":{\"principal_id\":\"usr_42\",\"roles\":[\"pcp\",\"care_team\"],\"service_identity\":\"" SVC
    "\"},"
    "\"basis\":\"DISCLOSURE_BASIS_PUBLIC_HEALTH\","
    "\"details\":{\"alpha\":\"1\",\"zeta\":\"2\"},"
    "\"guideline\":{\"bundle_hash\":\"sha256:ab12\",\"bundle_id\":\"uspstf\",\"bundle_version\":\"2024.1\","
    "\"engine_version\":\"1.2.0\",\"source\":\"USPSTF 2024\"},"
    "\"outcome\":\"OUTCOME_SUCCESS\","
    "\"patient_ref\":\"" PT "\","
    "\"phi_description\":\"demographics; immunizations\","
    "\"purpose\":\"PURPOSE_OF_USE_PUBLIC_HEALTH\","
    "\"recipient\":{\"address\":\"1 Main St, Springfield\",\"name\":\"County Health Dept\"},"
    "\"request_id\":\"req-1\","
    "\"resource\":{\"id\":\"ref_9\",\"type\":\"Referral\"},"
    "\"seq\":7,"
    "\"severity\":\"SEVERITY_NOTICE\","
    "\"tenant_id\":\"tenant-a\","
    "\"time\":\"2026-11-23T12:00:00.123456Z\","
    "\"v\":1}";

static void test_full_event_exact(void **state)
{
    (void)state;
    event_fixture f;
    event_init_full(&f);
    size_t len;
    char *json = encode_ok(&f, 7, SVC, &len);
    assert_string_equal(json, full_expected);
    assert_int_equal(len, sizeof full_expected - 1);
    free(json);
}

/* Keys sorted at every level and no whitespace: re-dumping the parsed entry canonically changes nothing. */
static void test_keys_sorted_and_compact(void **state)
{
    (void)state;
    event_fixture f;
    event_init_full(&f);
    char *json = encode_ok(&f, 7, SVC, NULL);
    json_t *parsed = json_loads(json, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(parsed);
    char *again = json_dumps(parsed, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    assert_string_equal(again, json);
    const char *prev = "";
    const char *key;
    json_t *value;
    json_object_foreach(parsed, key, value)
    {
        (void)value;
        assert_true(strcmp(prev, key) < 0);
        prev = key;
    }
    assert_null(strstr(json, "\":\x20"));
    assert_null(strchr(json, '\n'));
    free(again);
    json_decref(parsed);
    free(json);
}

static void test_same_input_same_bytes(void **state)
{
    (void)state;
    event_fixture f;
    event_init_full(&f);
    size_t la, lb;
    char *a = encode_ok(&f, 7, SVC, &la);
    char *b = encode_ok(&f, 7, SVC, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    uint8_t ha[AUDIT_MERKLE_HASH_LEN], hb[AUDIT_MERKLE_HASH_LEN];
    assert_true(base_is_ok(audit_merkle_leaf_hash(a, la, ha)));
    assert_true(base_is_ok(audit_merkle_leaf_hash(b, lb, hb)));
    assert_memory_equal(ha, hb, sizeof ha);
    free(a);
    free(b);
}

/* The leaf hash is over the entry bytes: any change to them (here seq) changes it. */
static void test_leaf_hash_covers_entry(void **state)
{
    (void)state;
    event_fixture f;
    event_init_full(&f);
    size_t la, lb;
    char *a = encode_ok(&f, 7, SVC, &la);
    char *b = encode_ok(&f, 8, SVC, &lb);
    uint8_t ha[AUDIT_MERKLE_HASH_LEN], hb[AUDIT_MERKLE_HASH_LEN];
    assert_true(base_is_ok(audit_merkle_leaf_hash(a, la, ha)));
    assert_true(base_is_ok(audit_merkle_leaf_hash(b, lb, hb)));
    assert_memory_not_equal(ha, hb, sizeof ha);
    free(a);
    free(b);
}

static void test_details_order_irrelevant(void **state)
{
    (void)state;
    event_fixture f, g;
    event_init_full(&f);
    event_init_full(&g);
    g.detail[0].key = "alpha";
    g.detail[0].value = "1";
    g.detail[1].key = "zeta";
    g.detail[1].value = "2";
    char *a = encode_ok(&f, 7, SVC, NULL);
    char *b = encode_ok(&g, 7, SVC, NULL);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_escaping_round_trip(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    /* quote, backslash, slash, e-acute (U+00E9), euro (U+20AC), grinning face (U+1F600), a tab */
    const char *name = "O\"Brien \\ Sons/Co caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\tx";
    f.recipient.name = (char *)name;
    f.ev.recipient = &f.recipient;
    char *json = encode_ok(&f, 1, NULL, NULL);
    assert_non_null(
        strstr(json, "\"name\":\"O\\\"Brien \\\\ Sons/Co caf\\u00E9 \\u20AC \\uD83D\\uDE00\\tx\""));
    for (const char *p = json; *p; p++)
        assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
    json_t *parsed = json_loads(json, 0, NULL);
    assert_non_null(parsed);
    assert_string_equal(json_string_value(json_object_get(json_object_get(parsed, "recipient"), "name")),
                        name);
    json_decref(parsed);
    free(json);
}

static void test_empty_optional_omitted(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    f.ev.purpose = 0;
    f.ev.outcome = 0;
    f.ev.patient_ref = "";
    f.ev.resource_type = "";
    f.ev.resource_id = "";
    f.actor.n_roles = 0;
    f.ev.recipient = &f.recipient; /* all members empty */
    f.ev.guideline = &f.guideline; /* all members empty */
    f.ev.phi_description = NULL;   /* NULL is treated as empty */
    char *json = encode_ok(&f, 0, "", NULL);
    assert_string_equal(json, "{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"usr_42\"},\"seq\":0,"
                              "\"tenant_id\":\"tenant-a\",\"time\":\"2026-11-23T12:00:00.123456Z\",\"v\":1}");
    free(json);
}

static void test_time_format(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    char *json = NULL;
    size_t len = 0;
    assert_true(base_is_ok(audit_entry_encode(&f.ev, 0, 0, NULL, &json, &len)));
    assert_non_null(strstr(json, "\"time\":\"1970-01-01T00:00:00.000000Z\""));
    free(json);
    assert_true(base_is_ok(audit_entry_encode(&f.ev, 0, INT64_C(253402300799999999), NULL, &json, &len)));
    assert_non_null(strstr(json, "\"time\":\"9999-12-31T23:59:59.999999Z\""));
    free(json);
    /* 2024-02-29T23:59:59.000001Z: a leap day, one microsecond */
    assert_true(base_is_ok(audit_entry_encode(&f.ev, 0, INT64_C(1709251199000001), NULL, &json, &len)));
    assert_non_null(strstr(json, "\"time\":\"2024-02-29T23:59:59.000001Z\""));
    free(json);
}

static void expect_fail(const event_fixture *f, uint64_t seq, int64_t when, base_err err)
{
    char *json = (char *)0x1;
    size_t len = 99;
    base_result r = audit_entry_encode(&f->ev, seq, when, SVC, &json, &len);
    assert_int_equal(r.err, err);
    assert_ptr_equal(json, (char *)0x1); /* untouched on failure */
    assert_int_equal(len, 99);
    assert_null(strstr(base_error_message(), "usr_42"));
    assert_null(strstr(base_error_message(), "tenant-a"));
    assert_null(strstr(base_error_message(), PT));
}

static void test_encode_failures(void **state)
{
    (void)state;
    event_fixture f;
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(audit_entry_encode(NULL, 0, WHEN, SVC, &json, &len).err, BASE_ERR_INVALID);
    event_init(&f);
    assert_int_equal(audit_entry_encode(&f.ev, 0, WHEN, SVC, NULL, &len).err, BASE_ERR_INVALID);
    assert_int_equal(audit_entry_encode(&f.ev, 0, WHEN, SVC, &json, NULL).err, BASE_ERR_INVALID);

    event_init(&f);
    f.ev.actor = NULL;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.ev.tenant_id = NULL;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.ev.tenant_id = "";
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.actor.principal_id = NULL;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.ev.action = 0;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.ev.action = 99;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.ev.purpose = 42;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.roles[0] = NULL;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.ev.resource_id = "bad\xff";
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    assert_null(strstr(base_error_message(), "bad"));
    event_init(&f);
    f.ev.n_details = 2;
    f.detail[0].key = "k";
    f.detail[0].value = "1";
    f.detail[1].key = "k";
    f.detail[1].value = "2";
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);
    event_init(&f);
    f.ev.n_details = 1;
    f.details[0] = NULL;
    expect_fail(&f, 0, WHEN, BASE_ERR_INVALID);

    event_init(&f);
    expect_fail(&f, (uint64_t)INT64_MAX + 1, WHEN, BASE_ERR_LIMIT);
    expect_fail(&f, 0, -1, BASE_ERR_INVALID);
    expect_fail(&f, 0, INT64_C(253402300800000000), BASE_ERR_INVALID);
}

/* ---------------------------------------------------------------------------------------------------------
 * FHIR. */

static json_t *to_fhir_ok(const event_fixture *f, const char *svc)
{
    size_t elen;
    char *entry = encode_ok(f, 42, svc, &elen);
    char *out = NULL;
    size_t olen = 0;
    base_result r = audit_entry_to_fhir(entry, elen, &out, &olen);
    if (!base_is_ok(r))
        fail_msg("to_fhir failed: %s", base_error_message());
    assert_int_equal(olen, strlen(out));
    assert_int_equal(strncmp(out, "{\"resourceType\":\"AuditEvent\",", 29), 0);
    json_t *res = json_loads(out, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(res);
    free(out);
    free(entry);
    return res;
}

/* The string at a jansson path such as "type.code" (objects only) or NULL. */
static const char *str_at(const json_t *obj, const char *a, const char *b, const char *c)
{
    const json_t *v = json_object_get(obj, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    return json_string_value(v);
}

static void check_common(const json_t *res)
{
    assert_string_equal(str_at(res, "resourceType", NULL, NULL), "AuditEvent");
    assert_string_equal(str_at(res, "id", NULL, NULL), "audit-42");
    assert_string_equal(str_at(res, "recorded", NULL, NULL), "2026-11-23T12:00:00.123456Z");
    const json_t *agents = json_object_get(res, "agent");
    assert_true(json_array_size(agents) >= 1);
    for (size_t i = 0; i < json_array_size(agents); i++)
        assert_true(json_is_boolean(json_object_get(json_array_get(agents, i), "requestor")));
    const json_t *agent = json_array_get(agents, 0);
    assert_true(json_is_true(json_object_get(agent, "requestor")));
    assert_string_equal(str_at(agent, "who", "identifier", "value"), "usr_42");
    assert_string_equal(str_at(agent, "who", "identifier", "system"), "urn:alma:principal");
    assert_string_equal(str_at(res, "source", "site", NULL), "tenant-a");
    assert_non_null(str_at(res, "source", "observer", "display"));
}

/* The entity whose role code is `role`, or NULL. */
static const json_t *entity_with_role(const json_t *res, const char *role)
{
    const json_t *entities = json_object_get(res, "entity");
    for (size_t i = 0; i < json_array_size(entities); i++) {
        const json_t *e = json_array_get(entities, i);
        const char *code = str_at(e, "role", "code", NULL);
        if (code && strcmp(code, role) == 0)
            return e;
    }
    return NULL;
}

static void test_fhir_read(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    json_t *res = to_fhir_ok(&f, SVC);
    check_common(res);
    assert_string_equal(str_at(res, "type", "system", NULL), "http://dicom.nema.org/resources/ontology/DCM");
    assert_string_equal(str_at(res, "type", "code", NULL), "110110");
    assert_string_equal(str_at(res, "type", "display", NULL), "Patient Record");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(res, "subtype"), 0), "code")),
        "read");
    assert_string_equal(str_at(res, "action", NULL, NULL), "R");
    assert_string_equal(str_at(res, "outcome", NULL, NULL), "0");
    assert_null(json_object_get(res, "outcomeDesc"));
    const json_t *pc = json_array_get(
        json_object_get(json_array_get(json_object_get(res, "purposeOfEvent"), 0), "coding"), 0);
    assert_string_equal(str_at(pc, "system", NULL, NULL),
                        "http://terminology.hl7.org/CodeSystem/v3-ActReason");
    assert_string_equal(str_at(pc, "code", NULL, NULL), "TREAT");
    const json_t *agents = json_object_get(res, "agent");
    assert_int_equal(json_array_size(agents), 2);
    const json_t *role = json_array_get(json_object_get(json_array_get(agents, 0), "role"), 0);
    assert_string_equal(str_at(json_array_get(json_object_get(role, "coding"), 0), "code", NULL, NULL),
                        "pcp");
    const json_t *svc = json_array_get(agents, 1);
    assert_true(json_is_false(json_object_get(svc, "requestor")));
    assert_string_equal(str_at(svc, "who", "identifier", "value"), SVC);
    assert_string_equal(str_at(res, "source", "observer", "display"), SVC);
    const json_t *patient = entity_with_role(res, "1");
    assert_non_null(patient);
    assert_string_equal(str_at(patient, "what", "identifier", "system"), "urn:alma:patient-ref");
    assert_string_equal(str_at(patient, "what", "identifier", "value"), PT);
    const json_t *resource = entity_with_role(res, "4");
    assert_non_null(resource);
    assert_string_equal(str_at(resource, "what", "identifier", "value"), "Patient/rec_1");
    assert_null(entity_with_role(res, "16"));
    json_decref(res);
}

static void test_fhir_disclose(void **state)
{
    (void)state;
    event_fixture f;
    event_init_full(&f);
    json_t *res = to_fhir_ok(&f, NULL);
    check_common(res);
    assert_string_equal(str_at(res, "type", "code", NULL), "110106");
    assert_string_equal(str_at(res, "action", NULL, NULL), "R");
    assert_string_equal(str_at(res, "outcome", NULL, NULL), "0");
    const json_t *pc = json_array_get(
        json_object_get(json_array_get(json_object_get(res, "purposeOfEvent"), 0), "coding"), 0);
    assert_string_equal(str_at(pc, "code", NULL, NULL), "PUBHLTH");
    assert_int_equal(json_array_size(json_object_get(res, "agent")), 1); /* no service identity */
    assert_string_equal(str_at(res, "source", "observer", "display"), "alma-audit");
    const json_t *rec = entity_with_role(res, "16");
    assert_non_null(rec);
    assert_string_equal(str_at(rec, "role", "system", NULL),
                        "http://terminology.hl7.org/CodeSystem/object-role");
    assert_string_equal(str_at(rec, "name", NULL, NULL), "County Health Dept");
    assert_string_equal(str_at(rec, "description", NULL, NULL), "disclosure recipient");
    const json_t *details = json_object_get(rec, "detail");
    assert_int_equal(json_array_size(details), 3);
    assert_string_equal(str_at(json_array_get(details, 0), "type", NULL, NULL), "address");
    assert_string_equal(str_at(json_array_get(details, 0), "valueString", NULL, NULL),
                        "1 Main St, Springfield");
    assert_string_equal(str_at(json_array_get(details, 1), "valueString", NULL, NULL),
                        "demographics; immunizations");
    assert_string_equal(str_at(json_array_get(details, 2), "valueString", NULL, NULL),
                        "DISCLOSURE_BASIS_PUBLIC_HEALTH");
    assert_string_equal(str_at(entity_with_role(res, "1"), "what", "identifier", "value"), PT);
    json_decref(res);
}

static void test_fhir_login_failed(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    f.ev.action = ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED;
    f.ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED;
    f.ev.purpose = 0;
    f.ev.patient_ref = "";
    f.ev.resource_type = "";
    f.ev.resource_id = "";
    json_t *res = to_fhir_ok(&f, SVC);
    check_common(res);
    assert_string_equal(str_at(res, "type", "code", NULL), "110114");
    assert_string_equal(str_at(res, "type", "display", NULL), "User Authentication");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(res, "subtype"), 0), "code")),
        "110122");
    assert_string_equal(str_at(res, "action", NULL, NULL), "E");
    assert_string_equal(str_at(res, "outcome", NULL, NULL), "4");
    assert_null(json_object_get(res, "purposeOfEvent"));
    assert_null(json_object_get(res, "entity")); /* no empty arrays in FHIR */
    json_decref(res);

    /* "4" even when the caller recorded the failed login as a success */
    f.ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    res = to_fhir_ok(&f, SVC);
    assert_string_equal(str_at(res, "outcome", NULL, NULL), "4");
    json_decref(res);
    /* and "8" for an error */
    f.ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_ERROR;
    res = to_fhir_ok(&f, SVC);
    assert_string_equal(str_at(res, "outcome", NULL, NULL), "8");
    json_decref(res);
}

/* The FHIR view is byte-stable too. */
static void test_fhir_stable(void **state)
{
    (void)state;
    event_fixture f;
    event_init_full(&f);
    size_t len;
    char *entry = encode_ok(&f, 7, SVC, &len);
    char *a, *b;
    size_t la, lb;
    assert_true(base_is_ok(audit_entry_to_fhir(entry, len, &a, &la)));
    assert_true(base_is_ok(audit_entry_to_fhir(entry, len, &b, &lb)));
    assert_string_equal(a, b);
    for (const char *p = a; *p; p++)
        assert_true((unsigned char)*p < 0x80);
    free(a);
    free(b);
    free(entry);
}

static void expect_fhir_invalid(const char *entry)
{
    char *out = (char *)0x1;
    size_t len = 99;
    base_result r = audit_entry_to_fhir(entry, strlen(entry), &out, &len);
    if (r.err != BASE_ERR_INVALID)
        fail_msg("expected invalid for %s, got %s", entry, base_err_name(r.err));
    assert_ptr_equal(out, (char *)0x1);
    assert_int_equal(len, 99);
    assert_null(strstr(base_error_message(), "usr_42"));
    assert_null(strstr(base_error_message(), "pt_"));
}

#define GOOD_TAIL                                                                                            \
    "\"actor\":{\"principal_id\":\"usr_42\"},\"seq\":1,\"tenant_id\":\"t\","                                 \
    "\"time\":\"2026-11-23T12:00:00.123456Z\""

static void test_fhir_rejects(void **state)
{
    (void)state;
    /* the good one, to be sure the rejections below are for the reason given */
    const char *good = "{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":1}";
    char *out;
    size_t len;
    assert_true(base_is_ok(audit_entry_to_fhir(good, strlen(good), &out, &len)));
    free(out);

    expect_fhir_invalid("");
    expect_fhir_invalid("not json usr_42");
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":1"); /* truncated */
    expect_fhir_invalid("[1,2]");
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL "}");         /* no v */
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":2}"); /* wrong version */
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":\"1\"}");
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":1.0}");
    expect_fhir_invalid("{\"action\":\"ACTION_NOPE\"," GOOD_TAIL ",\"v\":1}");
    expect_fhir_invalid("{\"action\":\"ACTION_UNSPECIFIED\"," GOOD_TAIL ",\"v\":1}");
    expect_fhir_invalid("{" GOOD_TAIL ",\"v\":1}");                                    /* no action */
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":1,\"v\":1}"); /* duplicate key */
    expect_fhir_invalid("{\"action\":\"ACTION_READ\",\"actor\":{},\"seq\":1,\"tenant_id\":\"t\","
                        "\"time\":\"2026-11-23T12:00:00.123456Z\",\"v\":1}");
    expect_fhir_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"usr_42\"},\"seq\":-1,"
                        "\"tenant_id\":\"t\",\"time\":\"2026-11-23T12:00:00.123456Z\",\"v\":1}");
    expect_fhir_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"usr_42\"},\"seq\":1,"
                        "\"tenant_id\":\"t\",\"time\":\"yesterday\",\"v\":1}");
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":1,\"patient_ref\":7}");
    expect_fhir_invalid("{\"action\":\"ACTION_READ\"," GOOD_TAIL ",\"v\":1,\"outcome\":\"OUTCOME_MAYBE\"}");

    assert_int_equal(audit_entry_to_fhir(NULL, 0, &out, &len).err, BASE_ERR_INVALID);
    assert_int_equal(audit_entry_to_fhir(good, AUDIT_ENTRY_MAX + 1, &out, &len).err, BASE_ERR_LIMIT);
}

/* ---- Decoding (entry_decode.h) ---- */

typedef struct track {
    void *p[512];
    size_t n;
} track;

static void *track_alloc(void *ctx, size_t n)
{
    track *t = ctx;
    if (t->n >= 512)
        return NULL;
    void *p = calloc(1, n);
    t->p[t->n++] = p;
    return p;
}

static void track_free(track *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->p[i]);
    t->n = 0;
}

/* decode(encode(x)) encodes to the same bytes: nothing is lost or changed on the way back. */
static void expect_round_trip(const event_fixture *f, uint64_t seq, const char *svc)
{
    size_t len = 0;
    char *entry = encode_ok(f, seq, svc, &len);
    track t = {0};
    audit_decoded_entry d;
    base_result r = audit_entry_decode(entry, len, track_alloc, &t, &d);
    if (!base_is_ok(r))
        fail_msg("decode failed: %s", base_error_message());
    assert_int_equal(d.seq, seq);
    assert_int_equal(d.time_micros, WHEN);
    assert_string_equal(d.event->actor->service_identity, svc ? svc : "");
    char *again = NULL;
    size_t again_len = 0;
    r = audit_entry_encode(d.event, d.seq, d.time_micros, d.event->actor->service_identity, &again,
                           &again_len);
    if (!base_is_ok(r))
        fail_msg("re-encode failed: %s", base_error_message());
    assert_string_equal(again, entry);
    free(again);
    free(entry);
    track_free(&t);
}

static void test_decode_round_trip(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    expect_round_trip(&f, 0, NULL);
    event_init_full(&f);
    expect_round_trip(&f, 123456789, "spiffe://alma.local/ns/alma/sa/vault");
    f.recipient.name = "Cl\u00ednica \"Sa\u00fade\" \\ \xf0\x9f\x8f\xa5";
    expect_round_trip(&f, 7, "spiffe://alma.local/ns/alma/sa/vault");
}

static void expect_decode_invalid(const char *entry)
{
    track t = {0};
    audit_decoded_entry d;
    base_result r = audit_entry_decode(entry, strlen(entry), track_alloc, &t, &d);
    track_free(&t);
    if (r.err != BASE_ERR_INVALID)
        fail_msg("accepted or wrong error (%s) for: %s", base_err_name(r.err), entry);
}

static void test_decode_rejects(void **state)
{
    (void)state;
    static const char ok_tail[] = "\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":1}";
    char buf[512];
    expect_decode_invalid("");
    expect_decode_invalid("[]");
    expect_decode_invalid("{\"v\":1");
    snprintf(buf, sizeof buf,
             "{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"u\"},\"seq\":1,"
             "\"tenant_id\":\"t\",%s",
             ok_tail);
    track t = {0};
    audit_decoded_entry d;
    base_result ok = audit_entry_decode(buf, strlen(buf), track_alloc, &t, &d);
    if (!base_is_ok(ok))
        fail_msg("minimal entry refused: %s", base_error_message());
    assert_string_equal(d.event->tenant_id, "t");
    assert_string_equal(d.event->patient_ref, "");
    track_free(&t);
    /* Each required key missing, a wrong type, an unknown enum name, version 2, an impossible date. */
    expect_decode_invalid("{\"actor\":{\"principal_id\":\"u\"},\"seq\":1,\"tenant_id\":\"t\","
                          "\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":1}");
    expect_decode_invalid("{\"action\":\"ACTION_READ\",\"seq\":1,\"tenant_id\":\"t\","
                          "\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":1}");
    expect_decode_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"u\"},\"seq\":\"1\","
                          "\"tenant_id\":\"t\",\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":1}");
    expect_decode_invalid("{\"action\":\"ACTION_FLY\",\"actor\":{\"principal_id\":\"u\"},\"seq\":1,"
                          "\"tenant_id\":\"t\",\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":1}");
    expect_decode_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"u\"},\"seq\":1,"
                          "\"tenant_id\":\"t\",\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":2}");
    expect_decode_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"u\"},\"seq\":1,"
                          "\"tenant_id\":\"t\",\"time\":\"2026-02-30T12:00:00.000000Z\",\"v\":1}");
    expect_decode_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"u\"},\"seq\":1,"
                          "\"tenant_id\":\"t\",\"time\":\"2026-11-23 12:00:00Z\",\"v\":1}");
    expect_decode_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"u\",\"roles\":[1]},"
                          "\"seq\":1,\"tenant_id\":\"t\",\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":1}");
    expect_decode_invalid("{\"action\":\"ACTION_READ\",\"actor\":{\"principal_id\":\"u\"},\"details\":"
                          "{\"k\":5},\"seq\":1,\"tenant_id\":\"t\",\"time\":\"2026-11-23T12:00:00.000000Z\","
                          "\"v\":1}");
    /* A duplicated key is not a canonical entry. */
    expect_decode_invalid(
        "{\"action\":\"ACTION_READ\",\"action\":\"ACTION_LOGIN\",\"actor\":{\"principal_id\""
        ":\"u\"},\"seq\":1,\"tenant_id\":\"t\",\"time\":\"2026-11-23T12:00:00.000000Z\",\"v\":1}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_event_exact),
        cmocka_unit_test(test_decode_round_trip),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_keys_sorted_and_compact),
        cmocka_unit_test(test_same_input_same_bytes),
        cmocka_unit_test(test_leaf_hash_covers_entry),
        cmocka_unit_test(test_details_order_irrelevant),
        cmocka_unit_test(test_escaping_round_trip),
        cmocka_unit_test(test_empty_optional_omitted),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_encode_failures),
        cmocka_unit_test(test_fhir_read),
        cmocka_unit_test(test_fhir_disclose),
        cmocka_unit_test(test_fhir_login_failed),
        cmocka_unit_test(test_fhir_stable),
        cmocka_unit_test(test_fhir_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
