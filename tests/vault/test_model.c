/* The vault's data model (services/vault/model.h), no database: validation (every failure names the field
 * and never echoes the value), classification, parts round trips, blind-index normalisation, ages. */
#include "crypto/crypto.h"
#include "model.h"

#include <math.h>
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

#define EXPECT_ERR(expr, want)                                                                               \
    do {                                                                                                     \
        base_result exp_r__ = (expr);                                                                        \
        if (exp_r__.err != (want))                                                                           \
            fail_msg("%s: got %s (%s), want %s", #expr, base_err_name(exp_r__.err), base_error_message(),    \
                     base_err_name(want));                                                                   \
    } while (0)

/* Days since 1970-01-01 (the test's own civil calendar, independent of model.c's). */
static int64_t days_of(int y, int m, int d)
{
    static const int cum[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    int64_t days = 0;
    for (int yy = 1970; yy < y; yy++)
        days += (yy % 4 == 0 && (yy % 100 != 0 || yy % 400 == 0)) ? 366 : 365;
    days += cum[m - 1] + d - 1;
    if (m > 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        days++;
    return days;
}

/* Noon UTC of a day. */
static int64_t at(int y, int m, int d)
{
    return days_of(y, m, d) * 86400 + 12 * 3600;
}

#define NOW at(2024, 6, 15)

/* ---- A valid patient and valid items, rebuilt fresh for each case ------------------------------------- */

typedef struct patient_fx {
    Alma__Vault__V1__Patient p;
    Alma__Vault__V1__Demographics demo;
    char *given[6];
    Alma__Vault__V1__Contact contact;
    Alma__Vault__V1__Address address;
    char *lines[5];
    Alma__Vault__V1__Identifiers ids;
    Alma__Vault__V1__Coverage cov[9];
    Alma__Vault__V1__Coverage *covp[9];
} patient_fx;

static void patient_init(patient_fx *f)
{
    memset(f, 0, sizeof *f);
    alma__vault__v1__patient__init(&f->p);
    alma__vault__v1__demographics__init(&f->demo);
    alma__vault__v1__contact__init(&f->contact);
    alma__vault__v1__address__init(&f->address);
    alma__vault__v1__identifiers__init(&f->ids);
    f->demo.family_name = "O'Brien-Smith";
    f->given[0] = "Mary Ann";
    f->given[1] = "Józefa";
    f->demo.given_names = f->given;
    f->demo.n_given_names = 2;
    f->demo.birth_date = "1961-02-28";
    f->demo.sex = ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_FEMALE;
    f->lines[0] = "12 Main St";
    f->lines[1] = "Apt 4";
    f->address.lines = f->lines;
    f->address.n_lines = 2;
    f->address.city = "Springfield";
    f->address.state = "IL";
    f->address.postal_code = "62704-1234";
    f->address.country = "US";
    f->contact.address = &f->address;
    f->contact.phone = "+15555550123";
    f->contact.email = "mary.obrien@example.org";
    f->ids.mrn = "mrn-00123";
    for (int i = 0; i < 9; i++) {
        alma__vault__v1__coverage__init(&f->cov[i]);
        f->cov[i].payer_id = "acme.health";
        f->cov[i].plan_name = "Acme Gold PPO";
        f->cov[i].member_id = "XJ-99812";
        f->cov[i].group_number = "G-100";
        f->cov[i].start_date = "2023-01-01";
        f->cov[i].end_date = "2025-12-31"; /* ahead of NOW: a planned end */
        f->covp[i] = &f->cov[i];
    }
    f->cov[1].payer_id = "medicare";
    f->cov[1].member_id = "1EG4-TE5-MK73";
    f->cov[1].group_number = "";
    f->cov[1].end_date = "";
    f->p.demographics = &f->demo;
    f->p.contact = &f->contact;
    f->p.identifiers = &f->ids;
    f->p.coverage = f->covp;
    f->p.n_coverage = 2;
}

typedef struct item_fx {
    Alma__Vault__V1__Item item;
    Alma__Vault__V1__Code code;
    Alma__Vault__V1__Problem problem;
    Alma__Vault__V1__Observation obs;
    Alma__Vault__V1__Medication med;
    Alma__Vault__V1__Note note;
    Alma__Vault__V1__Document doc;
} item_fx;

static const uint8_t PDF[] = "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n";

static void item_init(item_fx *f, int kind)
{
    memset(f, 0, sizeof *f);
    alma__vault__v1__item__init(&f->item);
    alma__vault__v1__code__init(&f->code);
    switch (kind) {
    case ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PROBLEM:
        alma__vault__v1__problem__init(&f->problem);
        f->code.system = VAULT_SYSTEM_ICD10CM;
        f->code.code = "E11.9";
        f->code.display = "Type 2 diabetes mellitus without complications";
        f->problem.code = &f->code;
        f->problem.onset_date = "2019-03-02";
        f->problem.status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE;
        f->item.body_case = ALMA__VAULT__V1__ITEM__BODY_PROBLEM;
        f->item.problem = &f->problem;
        break;
    case ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_OBSERVATION:
        alma__vault__v1__observation__init(&f->obs);
        f->code.system = VAULT_SYSTEM_LOINC;
        f->code.code = "33914-3";
        f->code.display = "eGFR";
        f->obs.code = &f->code;
        f->obs.value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY;
        f->obs.quantity = 52.5;
        f->obs.unit = "mL/min/{1.73_m2}";
        f->obs.effective_date = "2024-06-16"; /* today + 1 day: allowed (time zones) */
        f->item.body_case = ALMA__VAULT__V1__ITEM__BODY_OBSERVATION;
        f->item.observation = &f->obs;
        break;
    case ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_MEDICATION:
        alma__vault__v1__medication__init(&f->med);
        f->code.system = VAULT_SYSTEM_RXNORM;
        f->code.code = "860975";
        f->med.code = &f->code;
        f->med.name = "Metformin 500 mg tablet";
        f->med.dose = "500 mg twice daily";
        f->med.start_date = "2020-01-10";
        f->med.end_date = "2024-07-10";
        f->med.status = ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_ACTIVE;
        f->item.body_case = ALMA__VAULT__V1__ITEM__BODY_MEDICATION;
        f->item.medication = &f->med;
        break;
    case ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_NOTE:
        alma__vault__v1__note__init(&f->note);
        f->note.title = "Follow-up";
        f->note.text = "Seen today.\n\tA1c improving; continue metformin.\n";
        f->note.date = "2024-06-15";
        f->item.body_case = ALMA__VAULT__V1__ITEM__BODY_NOTE;
        f->item.note = &f->note;
        break;
    case ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_DOCUMENT:
        alma__vault__v1__document__init(&f->doc);
        f->doc.title = "Discharge summary";
        f->doc.media_type = "application/pdf";
        f->doc.content.data = (uint8_t *)PDF;
        f->doc.content.len = sizeof PDF - 1;
        f->doc.date = "2024-05-01";
        f->item.body_case = ALMA__VAULT__V1__ITEM__BODY_DOCUMENT;
        f->item.document = &f->doc;
        break;
    default:
        fail_msg("bad kind");
    }
}

/* ---- Checks ------------------------------------------------------------------------------------------- */

static void expect_invalid(base_result r, const char *what, const char *field, const char *value)
{
    if (r.err != BASE_ERR_INVALID)
        fail_msg("%s: got %s (%s), want invalid", what, base_err_name(r.err), base_error_message());
    const char *msg = base_error_message();
    if (!strstr(msg, field))
        fail_msg("%s: message \"%s\" does not name %s", what, msg, field);
    if (value && value[0] && strstr(msg, value))
        fail_msg("%s: message \"%s\" echoes the value", what, msg);
}

static void test_valid(void **state)
{
    (void)state;
    patient_fx pf;
    patient_init(&pf);
    MUST(vault_validate_patient(&pf.p, NOW));
    /* Optional parts left out. */
    pf.p.contact = NULL;
    pf.p.n_coverage = 0;
    MUST(vault_validate_patient(&pf.p, NOW));
    /* Leap days that exist, today + 1 day, the first allowed day. */
    static const char *const ok_dates[] = {"2000-02-29", "2024-02-29", "2024-06-16", "1900-01-01"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(ok_dates); i++) {
        patient_init(&pf);
        pf.demo.birth_date = (char *)ok_dates[i];
        MUST(vault_validate_patient(&pf.p, NOW));
    }
    /* Every state-like code we accept, a few territories, 5-digit postal code, no country. */
    static const char *const states[] = {"CA", "NY", "DC", "PR", "GU", "VI", "AS", "MP", "WY"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(states); i++) {
        patient_init(&pf);
        pf.address.state = (char *)states[i];
        pf.address.postal_code = "10001";
        pf.address.country = "";
        MUST(vault_validate_patient(&pf.p, NOW));
    }
    patient_init(&pf);
    pf.p.n_coverage = 8;
    pf.demo.n_given_names = 1;
    MUST(vault_validate_patient(&pf.p, NOW));

    for (int kind = 2; kind <= 6; kind++) {
        item_fx f;
        item_init(&f, kind);
        MUST(vault_validate_item(&f.item, NOW));
        assert_int_equal(vault_item_kind(&f.item), kind);
    }
    /* Other valid codes of each system. */
    static const struct {
        int kind;
        const char *system, *code;
    } codes[] = {
        {2, VAULT_SYSTEM_ICD10CM, "N18.3"},    {2, VAULT_SYSTEM_ICD10CM, "M54.50"},
        {2, VAULT_SYSTEM_ICD10CM, "F32.A"},    {2, VAULT_SYSTEM_ICD10CM, "I10"},
        {2, VAULT_SYSTEM_ICD10CM, "S72.001A"}, {2, VAULT_SYSTEM_SNOMED, "44054006"},
        {2, VAULT_SYSTEM_SNOMED, "38341003"},  {2, VAULT_SYSTEM_SNOMED, "195967001"},
        {3, VAULT_SYSTEM_LOINC, "4548-4"},     {3, VAULT_SYSTEM_LOINC, "2160-0"},
        {3, VAULT_SYSTEM_LOINC, "14959-1"},    {4, VAULT_SYSTEM_RXNORM, "197361"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(codes); i++) {
        item_fx f;
        item_init(&f, codes[i].kind);
        f.code.system = (char *)codes[i].system;
        f.code.code = (char *)codes[i].code;
        MUST(vault_validate_item(&f.item, NOW));
    }
    /* Observation with a text value; medication without a code, ongoing; every document type. */
    item_fx f;
    item_init(&f, 3);
    f.obs.value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_TEXT;
    f.obs.text = "Positive";
    f.obs.unit = "";
    MUST(vault_validate_item(&f.item, NOW));
    item_init(&f, 4);
    f.med.code = NULL;
    f.med.end_date = "";
    MUST(vault_validate_item(&f.item, NOW));
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
    static const uint8_t jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0, 16};
    item_init(&f, 6);
    f.doc.media_type = "image/png";
    f.doc.content.data = (uint8_t *)png;
    f.doc.content.len = sizeof png;
    MUST(vault_validate_item(&f.item, NOW));
    f.doc.media_type = "image/jpeg";
    f.doc.content.data = (uint8_t *)jpeg;
    f.doc.content.len = sizeof jpeg;
    MUST(vault_validate_item(&f.item, NOW));
    f.doc.media_type = "text/plain";
    f.doc.content.data = (uint8_t *)"line one\r\nline two\n";
    f.doc.content.len = 19;
    MUST(vault_validate_item(&f.item, NOW));
}

/* ---- Invalid patients --------------------------------------------------------------------------------- */

typedef void (*patient_mut)(patient_fx *f, const char *v);

static void m_family(patient_fx *f, const char *v)
{
    f->demo.family_name = (char *)v;
}
static void m_given1(patient_fx *f, const char *v)
{
    f->given[1] = (char *)v;
}
static void m_given_none(patient_fx *f, const char *v)
{
    (void)v;
    f->demo.n_given_names = 0;
}
static void m_given_six(patient_fx *f, const char *v)
{
    for (int i = 0; i < 6; i++)
        f->given[i] = (char *)v;
    f->demo.n_given_names = 6;
}
static void m_birth(patient_fx *f, const char *v)
{
    f->demo.birth_date = (char *)v;
}
static void m_sex_unspecified(patient_fx *f, const char *v)
{
    (void)v;
    f->demo.sex = ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_UNSPECIFIED;
}
static void m_sex_unknown_value(patient_fx *f, const char *v)
{
    (void)v;
    f->demo.sex = (Alma__Vault__V1__AdministrativeSex)17;
}
static void m_no_demographics(patient_fx *f, const char *v)
{
    (void)v;
    f->p.demographics = NULL;
}
static void m_phone(patient_fx *f, const char *v)
{
    f->contact.phone = (char *)v;
}
static void m_email(patient_fx *f, const char *v)
{
    f->contact.email = (char *)v;
}
static void m_state(patient_fx *f, const char *v)
{
    f->address.state = (char *)v;
}
static void m_postal(patient_fx *f, const char *v)
{
    f->address.postal_code = (char *)v;
}
static void m_country(patient_fx *f, const char *v)
{
    f->address.country = (char *)v;
}
static void m_city(patient_fx *f, const char *v)
{
    f->address.city = (char *)v;
}
static void m_line1(patient_fx *f, const char *v)
{
    f->lines[1] = (char *)v;
}
static void m_five_lines(patient_fx *f, const char *v)
{
    for (int i = 0; i < 5; i++)
        f->lines[i] = (char *)v;
    f->address.n_lines = 5;
}
static void m_mrn(patient_fx *f, const char *v)
{
    f->ids.mrn = (char *)v;
}
static void m_no_identifiers(patient_fx *f, const char *v)
{
    (void)v;
    f->p.identifiers = NULL;
}
static void m_nine_coverages(patient_fx *f, const char *v)
{
    (void)v;
    f->p.n_coverage = 9;
}
static void m_payer(patient_fx *f, const char *v)
{
    f->cov[1].payer_id = (char *)v;
}
static void m_plan(patient_fx *f, const char *v)
{
    f->cov[1].plan_name = (char *)v;
}
static void m_member(patient_fx *f, const char *v)
{
    f->cov[1].member_id = (char *)v;
}
static void m_group(patient_fx *f, const char *v)
{
    f->cov[0].group_number = (char *)v;
}
static void m_cov_end(patient_fx *f, const char *v)
{
    f->cov[0].end_date = (char *)v;
}
static void m_cov_start(patient_fx *f, const char *v)
{
    f->cov[0].start_date = (char *)v;
}

static char g_long101[102], g_long33[34], g_long201[202];

static void test_invalid_patient(void **state)
{
    (void)state;
    memset(g_long101, 'w', 101);
    memset(g_long33, 'Q', 33);
    const struct {
        patient_mut mut;
        const char *value;
        const char *field;
    } cases[] = {
        {m_family, "", "patient.demographics.family_name: required"},
        {m_family, g_long101, "patient.demographics.family_name: 1..100 bytes"},
        {m_family, "Sm\x01th", "patient.demographics.family_name: control"},
        {m_family, "Smith\nJones", "patient.demographics.family_name: control"},
        {m_family, "Sm\xc2\x85th", "patient.demographics.family_name: control"}, /* C1 NEL */
        {m_family, "Sm\x7fth", "patient.demographics.family_name: control"},
        {m_family, "Sm\xffth", "patient.demographics.family_name: not valid UTF-8"},
        {m_family, "Sm\xc0\xafth", "patient.demographics.family_name: not valid UTF-8"},     /* overlong */
        {m_family, "Sm\xed\xa0\x80th", "patient.demographics.family_name: not valid UTF-8"}, /* surrogate */
        {m_family, "Smi\xe2\x82", "patient.demographics.family_name: not valid UTF-8"},      /* truncated */
        {m_given1, "", "patient.demographics.given_names[1]: required"},
        {m_given1, "Jo\x1bhn", "patient.demographics.given_names[1]: control"},
        {m_given_none, "", "patient.demographics.given_names: 1..5"},
        {m_given_six, "Ann", "patient.demographics.given_names: 1..5"},
        {m_birth, "", "patient.demographics.birth_date: required"},
        {m_birth, "2023-02-29", "patient.demographics.birth_date: not a calendar date"},
        {m_birth, "1900-02-29", "patient.demographics.birth_date: not a calendar date"},
        {m_birth, "2021-04-31", "patient.demographics.birth_date: not a calendar date"},
        {m_birth, "2024-13-01", "patient.demographics.birth_date: not a calendar date"},
        {m_birth, "2024-6-15", "patient.demographics.birth_date: not a calendar date"},
        {m_birth, "20240615", "patient.demographics.birth_date: not a calendar date"},
        {m_birth, "1961-02-28T00:00", "patient.demographics.birth_date: not a calendar date"},
        {m_birth, "1899-12-31", "patient.demographics.birth_date: before 1900-01-01"},
        {m_birth, "2024-06-17", "patient.demographics.birth_date: in the future"},
        {m_birth, "2031-01-01", "patient.demographics.birth_date: in the future"},
        {m_sex_unspecified, "", "patient.demographics.sex: required"},
        {m_sex_unknown_value, "", "patient.demographics.sex: not a known value"},
        {m_no_demographics, "", "patient.demographics: required"},
        {m_phone, "5555550123", "patient.contact.phone: not an E.164"},
        {m_phone, "+05555550123", "patient.contact.phone: not an E.164"},
        {m_phone, "+123456", "patient.contact.phone: not an E.164"},
        {m_phone, "+1234567890123456", "patient.contact.phone: not an E.164"},
        {m_phone, "+1 555 555 0123", "patient.contact.phone: not an E.164"},
        {m_email, "mary.example.org", "patient.contact.email: not an email address"},
        {m_email, "mary@localhost", "patient.contact.email: not an email address"},
        {m_email, "ma..ry@example.org", "patient.contact.email: not an email address"},
        {m_email, "mary@exa_mple.org", "patient.contact.email: not an email address"},
        {m_email, "mary@@example.org", "patient.contact.email: not an email address"},
        {m_email, "mary@-example.org", "patient.contact.email: not an email address"},
        {m_state, "XX", "patient.contact.address.state: not a two-letter US state"},
        {m_state, "il", "patient.contact.address.state: not a two-letter US state"},
        {m_state, "Illinois", "patient.contact.address.state: not a two-letter US state"},
        {m_postal, "6270", "patient.contact.address.postal_code: not a postal code"},
        {m_postal, "62704-123", "patient.contact.address.postal_code: not a postal code"},
        {m_postal, "62704 1234", "patient.contact.address.postal_code: not a postal code"},
        {m_postal, "SW1A1AA", "patient.contact.address.postal_code: not a postal code"},
        {m_country, "USA", "patient.contact.address.country: not an ISO 3166-1 alpha-2"},
        {m_country, "uz", "patient.contact.address.country: not an ISO 3166-1 alpha-2"},
        {m_city, g_long101, "patient.contact.address.city: 0..100 bytes"},
        {m_line1, "", "patient.contact.address.lines[1]: required"},
        {m_five_lines, "1 Elm", "patient.contact.address.lines: at most 4"},
        {m_mrn, "", "patient.identifiers.mrn: required"},
        {m_mrn, "MRN_77412", "patient.identifiers.mrn: 1..32 of [A-Za-z0-9-]"},
        {m_mrn, "MRN 77412", "patient.identifiers.mrn: 1..32 of [A-Za-z0-9-]"},
        {m_mrn, g_long33, "patient.identifiers.mrn: 1..32 of [A-Za-z0-9-]"},
        {m_mrn, "---", "patient.identifiers.mrn: must contain a letter or digit"},
        {m_no_identifiers, "", "patient.identifiers: required"},
        {m_nine_coverages, "", "patient.coverage: at most 8"},
        {m_payer, "", "patient.coverage[1].payer_id: required"},
        {m_payer, "acme health", "patient.coverage[1].payer_id: 1..64 of [A-Za-z0-9._-]"},
        {m_plan, "", "patient.coverage[1].plan_name: required"},
        {m_member, "ZQ#4471", "patient.coverage[1].member_id: 1..32 of [A-Za-z0-9-]"},
        {m_member, "", "patient.coverage[1].member_id: required"},
        {m_group, g_long33, "patient.coverage[0].group_number: 0..32 of [A-Za-z0-9-]"},
        {m_cov_end, "2022-12-31", "patient.coverage[0].end_date: before start_date"},
        {m_cov_end, "2023-02-30", "patient.coverage[0].end_date: not a calendar date"},
        {m_cov_start, "2040-01-01", "patient.coverage[0].start_date: more than 3660 days in the future"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        patient_fx f;
        patient_init(&f);
        cases[i].mut(&f, cases[i].value);
        char what[64];
        snprintf(what, sizeof what, "patient case %zu", i);
        expect_invalid(vault_validate_patient(&f.p, NOW), what, cases[i].field, cases[i].value);
    }
    EXPECT_ERR(vault_validate_patient(NULL, NOW), BASE_ERR_INVALID);
}

/* ---- Invalid items ------------------------------------------------------------------------------------ */

static char *g_big_note;
static uint8_t *g_big_doc;

static void test_invalid_item(void **state)
{
    (void)state;
    memset(g_long201, 'n', 201);
    g_big_note = malloc(VAULT_NOTE_TEXT_MAX + 2);
    assert_non_null(g_big_note);
    memset(g_big_note, 'x', VAULT_NOTE_TEXT_MAX + 1);
    g_big_note[VAULT_NOTE_TEXT_MAX + 1] = '\0';
    g_big_doc = calloc(1, VAULT_DOCUMENT_MAX + 1);
    assert_non_null(g_big_doc);
    memcpy(g_big_doc, "%PDF-", 5);

    item_fx f;
    struct {
        int kind;
        const char *field, *value;
    } c;
#define ITEM_CASE(k, fieldtext, val, stmt)                                                                   \
    do {                                                                                                     \
        item_init(&f, (k));                                                                                  \
        stmt;                                                                                                \
        c.kind = (k), c.field = (fieldtext), c.value = (val);                                                \
        expect_invalid(vault_validate_item(&f.item, NOW), #stmt, c.field, c.value);                          \
    } while (0)

    /* Problems. */
    ITEM_CASE(2, "item.problem.code.system: must be ICD-10-CM or SNOMED CT", "",
              f.code.system = VAULT_SYSTEM_LOINC);
    ITEM_CASE(2, "item.problem.code.system: must be ICD-10-CM or SNOMED CT", "",
              f.code.system = VAULT_SYSTEM_RXNORM);
    ITEM_CASE(2, "item.problem.code.system: not a known code system", "http://example.com/icd",
              f.code.system = "http://example.com/icd");
    ITEM_CASE(2, "item.problem.code.system: required", "", f.code.system = "");
    ITEM_CASE(2, "item.problem.code.code: required", "", f.code.code = "");
    ITEM_CASE(2, "item.problem.code.code: not an ICD-10-CM code", "E11-9", f.code.code = "E11-9");
    ITEM_CASE(2, "item.problem.code.code: not an ICD-10-CM code", "e11.9", f.code.code = "e11.9");
    ITEM_CASE(2, "item.problem.code.code: not an ICD-10-CM code", "E11.12345", f.code.code = "E11.12345");
    ITEM_CASE(2, "item.problem.code.code: not an ICD-10-CM code", "1E1.9", f.code.code = "1E1.9");
    ITEM_CASE(2, "item.problem.code.code: not an ICD-10-CM code", "E11.", f.code.code = "E11.");
    ITEM_CASE(2, "item.problem.code.code: not an ICD-10-CM code", "E119", f.code.code = "E119");
    ITEM_CASE(2, "item.problem.code.code: SNOMED CT Verhoeff check digit does not match", "44054007",
              (f.code.system = VAULT_SYSTEM_SNOMED, f.code.code = "44054007"));
    ITEM_CASE(2, "item.problem.code.code: SNOMED CT Verhoeff check digit does not match", "35489008",
              (f.code.system = VAULT_SYSTEM_SNOMED, f.code.code = "35489008"));
    ITEM_CASE(2, "item.problem.code.code: not a SNOMED CT concept id", "E11.9",
              f.code.system = VAULT_SYSTEM_SNOMED);
    ITEM_CASE(2, "item.problem.code.code: not a SNOMED CT concept id", "12345",
              (f.code.system = VAULT_SYSTEM_SNOMED, f.code.code = "12345"));
    ITEM_CASE(2, "item.problem.code.display: 0..200 bytes", g_long201, f.code.display = g_long201);
    ITEM_CASE(2, "item.problem.code: required", "", f.problem.code = NULL);
    ITEM_CASE(2, "item.problem.status: required", "",
              f.problem.status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_UNSPECIFIED);
    ITEM_CASE(2, "item.problem.status: not a known value", "", f.problem.status = 4);
    ITEM_CASE(2, "item.problem.onset_date: in the future", "2024-07-01", f.problem.onset_date = "2024-07-01");
    ITEM_CASE(2, "item.problem.onset_date: not a calendar date", "2023-02-29",
              f.problem.onset_date = "2023-02-29");

    /* Observations. */
    ITEM_CASE(3, "item.observation.code.code: LOINC check digit does not match", "33914-4",
              f.code.code = "33914-4");
    ITEM_CASE(3, "item.observation.code.code: LOINC check digit does not match", "4548-3",
              f.code.code = "4548-3");
    ITEM_CASE(3, "item.observation.code.code: not a LOINC code", "33914", f.code.code = "33914");
    ITEM_CASE(3, "item.observation.code.code: not a LOINC code", "3391A-3", f.code.code = "3391A-3");
    ITEM_CASE(3, "item.observation.code.system: must be LOINC for an observation", "",
              (f.code.system = VAULT_SYSTEM_ICD10CM, f.code.code = "E11.9"));
    ITEM_CASE(3, "item.observation.code.system: must be LOINC for an observation", "",
              (f.code.system = VAULT_SYSTEM_SNOMED, f.code.code = "44054006"));
    ITEM_CASE(3, "item.observation.quantity: not a finite number", "NaN", f.obs.quantity = NAN);
    ITEM_CASE(3, "item.observation.quantity: not a finite number", "Infinity", f.obs.quantity = INFINITY);
    ITEM_CASE(3, "item.observation.quantity: not a finite number", "Infinity", f.obs.quantity = -INFINITY);
    ITEM_CASE(3, "item.observation.unit: required with a quantity", "", f.obs.unit = "");
    ITEM_CASE(3, "item.observation.unit: 1..32 printable ASCII", "mg per dL", f.obs.unit = "mg per dL");
    ITEM_CASE(3, "item.observation.unit: only with a quantity", "mg/dL",
              (f.obs.value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_TEXT, f.obs.text = "High",
               f.obs.unit = "mg/dL"));
    ITEM_CASE(
        3, "item.observation.text: required", "",
        (f.obs.value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_TEXT, f.obs.text = "", f.obs.unit = ""));
    ITEM_CASE(3, "item.observation.value: one of quantity or text is required", "",
              f.obs.value_case = ALMA__VAULT__V1__OBSERVATION__VALUE__NOT_SET);
    ITEM_CASE(3, "item.observation.effective_date: required", "", f.obs.effective_date = "");
    ITEM_CASE(3, "item.observation.effective_date: in the future", "2024-06-17",
              f.obs.effective_date = "2024-06-17");
    ITEM_CASE(3, "item.observation.code: required", "", f.obs.code = NULL);

    /* Medications. */
    ITEM_CASE(4, "item.medication.code.system: must be RxNorm for a medication", "",
              (f.code.system = VAULT_SYSTEM_SNOMED, f.code.code = "44054006"));
    ITEM_CASE(4, "item.medication.code.code: not an RxNorm code", "86O975", f.code.code = "86O975");
    ITEM_CASE(4, "item.medication.code.code: not an RxNorm code", "0860975", f.code.code = "0860975");
    ITEM_CASE(4, "item.medication.end_date: before start_date", "2019-12-31", f.med.end_date = "2019-12-31");
    ITEM_CASE(4, "item.medication.start_date: required", "", f.med.start_date = "");
    ITEM_CASE(4, "item.medication.start_date: in the future", "2024-08-01", f.med.start_date = "2024-08-01");
    ITEM_CASE(4, "item.medication.status: required", "",
              f.med.status = ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_UNSPECIFIED);
    ITEM_CASE(4, "item.medication.name: required", "", f.med.name = "");
    ITEM_CASE(4, "item.medication.dose: 0..100 bytes", g_long101, f.med.dose = g_long101);

    /* Notes: \n and \t allowed (the valid fixture has them), \r and other controls not. */
    ITEM_CASE(5, "item.note.text: 1..65536 bytes", "", f.note.text = g_big_note);
    ITEM_CASE(5, "item.note.text: control characters", "Line\r\nbreak", f.note.text = "Line\r\nbreak");
    ITEM_CASE(5, "item.note.text: control characters", "Bell\x07here", f.note.text = "Bell\x07here");
    ITEM_CASE(5, "item.note.text: not valid UTF-8", "Bad\xfe", f.note.text = "Bad\xfe");
    ITEM_CASE(5, "item.note.text: required", "", f.note.text = "");
    ITEM_CASE(5, "item.note.title: control characters", "Ti\ttle", f.note.title = "Ti\ttle");
    ITEM_CASE(5, "item.note.title: 1..200 bytes", g_long201, f.note.title = g_long201);
    ITEM_CASE(5, "item.note.date: required", "", f.note.date = "");

    /* Documents. */
    ITEM_CASE(6, "item.document.media_type: one of", "text/html", f.doc.media_type = "text/html");
    ITEM_CASE(6, "item.document.media_type: required", "", f.doc.media_type = "");
    ITEM_CASE(6, "item.document.content: required", "", f.doc.content.len = 0);
    ITEM_CASE(6, "item.document.content: 1..1048576 bytes", "",
              (f.doc.content.data = g_big_doc, f.doc.content.len = VAULT_DOCUMENT_MAX + 1));
    ITEM_CASE(6, "item.document.content: does not match media_type", "", f.doc.media_type = "image/png");
    ITEM_CASE(6, "item.document.content: does not match media_type", "",
              (f.doc.content.data = (uint8_t *)"<html>", f.doc.content.len = 6));
    ITEM_CASE(
        6, "item.document.content: does not match media_type", "",
        (f.doc.media_type = "text/plain", f.doc.content.data = (uint8_t *)"a\xff", f.doc.content.len = 2));
    ITEM_CASE(6, "item.document.date: not a calendar date", "2024-02-30", f.doc.date = "2024-02-30");

    /* No body, or a body case without its message. */
    ITEM_CASE(2, "item.body: one of problem", "", f.item.body_case = ALMA__VAULT__V1__ITEM__BODY__NOT_SET);
    ITEM_CASE(2, "item.body: one of problem", "", f.item.problem = NULL);
    EXPECT_ERR(vault_validate_item(NULL, NOW), BASE_ERR_INVALID);
#undef ITEM_CASE
    (void)c.kind;

    /* A document of exactly 1 MiB passes. */
    item_init(&f, 6);
    f.doc.content.data = g_big_doc;
    f.doc.content.len = VAULT_DOCUMENT_MAX;
    MUST(vault_validate_item(&f.item, NOW));
    /* A note of exactly 65536 bytes passes. */
    item_init(&f, 5);
    g_big_note[VAULT_NOTE_TEXT_MAX] = '\0';
    f.note.text = g_big_note;
    MUST(vault_validate_item(&f.item, NOW));
    free(g_big_note);
    free(g_big_doc);
}

/* ---- Classification ----------------------------------------------------------------------------------- */

static void test_category(void **state)
{
    (void)state;
    item_fx f;
    item_init(&f, 2);
    assert_int_equal(vault_item_category(&f.item), ALMA__VAULT__V1__CATEGORY__CATEGORY_CLINICAL);
    static const char *const fcodes[] = {"F32.A", "F10.20", "F01.50", "F99", "F41.1"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(fcodes); i++) {
        f.code.code = (char *)fcodes[i];
        MUST(vault_validate_item(&f.item, NOW));
        assert_int_equal(vault_item_category(&f.item),
                         ALMA__VAULT__V1__CATEGORY__CATEGORY_SENSITIVE_CLINICAL);
    }
    /* Only ICD-10-CM is classified by code: a SNOMED CT depression concept stays CLINICAL unless flagged. */
    f.code.system = VAULT_SYSTEM_SNOMED;
    f.code.code = "35489007";
    MUST(vault_validate_item(&f.item, NOW));
    assert_int_equal(vault_item_category(&f.item), ALMA__VAULT__V1__CATEGORY__CATEGORY_CLINICAL);
    f.item.sensitive = 1;
    assert_int_equal(vault_item_category(&f.item), ALMA__VAULT__V1__CATEGORY__CATEGORY_SENSITIVE_CLINICAL);
    for (int kind = 3; kind <= 6; kind++) {
        item_init(&f, kind);
        assert_int_equal(vault_item_category(&f.item), ALMA__VAULT__V1__CATEGORY__CATEGORY_CLINICAL);
        f.item.sensitive = 1;
        assert_int_equal(vault_item_category(&f.item),
                         ALMA__VAULT__V1__CATEGORY__CATEGORY_SENSITIVE_CLINICAL);
    }
    assert_int_equal(vault_item_category(NULL), ALMA__VAULT__V1__CATEGORY__CATEGORY_CLINICAL);
    assert_int_equal(vault_item_kind(NULL), 0);

    static const char *const names[] = {"unknown",  "demographic",        "contact",  "identifier",
                                        "clinical", "sensitive_clinical", "financial"};
    for (int c = 0; c <= 6; c++)
        assert_string_equal(vault_category_name(c), names[c]);
    assert_string_equal(vault_category_name(7), "unknown");
    assert_string_equal(vault_category_name(-1), "unknown");
}

/* ---- Parts -------------------------------------------------------------------------------------------- */

static void record_from_parts(vault_record *r, int kind, const vault_parts *parts, unsigned mask)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        if (parts->data[c]) {
            r->categories |= VAULT_CATEGORY_BIT(c);
            if (mask & VAULT_CATEGORY_BIT(c))
                MUST(acrypto_secret_from_bytes(parts->data[c], parts->len[c], &r->parts[c]));
        }
    }
}

static void record_free(vault_record *r)
{
    for (int c = 0; c <= VAULT_CATEGORY_MAX; c++)
        r->parts[c] = acrypto_secret_free(r->parts[c]);
}

static void set_part(vault_record *r, int c, const void *data, size_t len)
{
    r->parts[c] = acrypto_secret_free(r->parts[c]);
    MUST(acrypto_secret_from_bytes(data, len, &r->parts[c]));
}

/* Serialised message bytes equal (protobuf-c packs fields in number order: equal content, equal bytes). */
static void assert_same_message(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la = protobuf_c_message_get_packed_size(a), lb = protobuf_c_message_get_packed_size(b);
    assert_int_equal(la, lb);
    uint8_t *ba = malloc(la + 1), *bb = malloc(lb + 1);
    assert_non_null(ba);
    assert_non_null(bb);
    assert_int_equal(protobuf_c_message_pack(a, ba), la);
    assert_int_equal(protobuf_c_message_pack(b, bb), lb);
    assert_memory_equal(ba, bb, la);
    free(ba);
    free(bb);
}

static void test_patient_parts(void **state)
{
    (void)state;
    patient_fx f;
    patient_init(&f);
    MUST(vault_validate_patient(&f.p, NOW));
    vault_parts parts;
    MUST(vault_patient_pack(&f.p, &parts));
    assert_int_equal(parts.categories, VAULT_CATEGORY_BIT(1) | VAULT_CATEGORY_BIT(2) | VAULT_CATEGORY_BIT(3) |
                                           VAULT_CATEGORY_BIT(6));
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
        assert_true((parts.data[c] != NULL) == ((parts.categories & VAULT_CATEGORY_BIT(c)) != 0));

    /* Each part is the serialised sub-message. */
    Alma__Vault__V1__Demographics *d =
        alma__vault__v1__demographics__unpack(NULL, parts.len[1], parts.data[1]);
    assert_non_null(d);
    assert_same_message(&d->base, &f.demo.base);
    alma__vault__v1__demographics__free_unpacked(d, NULL);

    /* Everything back. */
    vault_record r;
    record_from_parts(&r, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT, &parts, VAULT_ALL_CATEGORIES);
    Alma__Vault__V1__Patient *p = NULL;
    MUST(vault_patient_unpack(&r, NULL, &p));
    assert_non_null(p);
    assert_same_message(&p->base, &f.p.base);
    assert_string_equal(p->demographics->given_names[1], "Józefa");
    assert_int_equal(p->n_coverage, 2);
    alma__vault__v1__patient__free_unpacked(p, NULL);
    record_free(&r);

    /* Subsets: each category alone and a pair; the others stay absent. */
    const unsigned subsets[] = {VAULT_CATEGORY_BIT(1), VAULT_CATEGORY_BIT(2), VAULT_CATEGORY_BIT(3),
                                VAULT_CATEGORY_BIT(6), VAULT_CATEGORY_BIT(1) | VAULT_CATEGORY_BIT(3)};
    for (size_t i = 0; i < BASE_ARRAY_LEN(subsets); i++) {
        unsigned m = subsets[i];
        record_from_parts(&r, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT, &parts, m);
        MUST(vault_patient_unpack(&r, NULL, &p));
        assert_non_null(p);
        assert_true((p->demographics != NULL) == ((m & VAULT_CATEGORY_BIT(1)) != 0));
        assert_true((p->contact != NULL) == ((m & VAULT_CATEGORY_BIT(2)) != 0));
        assert_true((p->identifiers != NULL) == ((m & VAULT_CATEGORY_BIT(3)) != 0));
        assert_true((p->n_coverage != 0) == ((m & VAULT_CATEGORY_BIT(6)) != 0));
        if (p->demographics)
            assert_same_message(&p->demographics->base, &f.demo.base);
        if (p->contact)
            assert_same_message(&p->contact->base, &f.contact.base);
        if (p->identifiers)
            assert_same_message(&p->identifiers->base, &f.ids.base);
        if (p->n_coverage) {
            assert_int_equal(p->n_coverage, 2);
            assert_same_message(&p->coverage[0]->base, &f.cov[0].base);
            assert_same_message(&p->coverage[1]->base, &f.cov[1].base);
        }
        alma__vault__v1__patient__free_unpacked(p, NULL);
        record_free(&r);
    }
    /* No patient category (say, a clinical-only view): NULL. */
    record_from_parts(&r, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT, &parts, VAULT_CATEGORY_BIT(4));
    p = (Alma__Vault__V1__Patient *)&r; /* must be overwritten */
    MUST(vault_patient_unpack(&r, NULL, &p));
    assert_null(p);

    /* Corruption: a part that does not parse, a FINANCIAL part holding other categories, wrong kind. */
    set_part(&r, 1, "\x0a\xff\xff\xff\xff\x0f", 6);
    EXPECT_ERR(vault_patient_unpack(&r, NULL, &p), BASE_ERR_CRYPTO);
    assert_string_equal(base_error_message(), "record failed its integrity check");
    record_free(&r);
    record_from_parts(&r, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT, &parts, 0);
    {
        Alma__Vault__V1__Patient smuggle = ALMA__VAULT__V1__PATIENT__INIT;
        smuggle.demographics = &f.demo;
        smuggle.coverage = f.p.coverage;
        smuggle.n_coverage = 1;
        uint8_t buf[1024];
        size_t n = alma__vault__v1__patient__pack(&smuggle, buf);
        set_part(&r, 6, buf, n);
        EXPECT_ERR(vault_patient_unpack(&r, NULL, &p), BASE_ERR_CRYPTO);
    }
    record_free(&r);
    record_from_parts(&r, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_NOTE, &parts, VAULT_ALL_CATEGORIES);
    EXPECT_ERR(vault_patient_unpack(&r, NULL, &p), BASE_ERR_INTERNAL);
    record_free(&r);
    vault_parts_free(&parts);
    vault_parts_free(&parts); /* twice is fine */
    vault_parts_free(NULL);

    /* Optional categories left out: no contact part for an absent or empty contact, no financial part. */
    patient_init(&f);
    f.p.n_coverage = 0;
    Alma__Vault__V1__Contact empty = ALMA__VAULT__V1__CONTACT__INIT;
    f.p.contact = &empty;
    MUST(vault_patient_pack(&f.p, &parts));
    assert_int_equal(parts.categories, VAULT_CATEGORY_BIT(1) | VAULT_CATEGORY_BIT(3));
    vault_parts_free(&parts);
    f.p.demographics = NULL;
    f.p.identifiers = NULL;
    EXPECT_ERR(vault_patient_pack(&f.p, &parts), BASE_ERR_INVALID);
}

static void test_item_parts(void **state)
{
    (void)state;
    for (int kind = 2; kind <= 6; kind++) {
        for (int sensitive = 0; sensitive <= 1; sensitive++) {
            item_fx f;
            item_init(&f, kind);
            f.item.sensitive = sensitive;
            vault_parts parts;
            MUST(vault_item_pack(&f.item, &parts));
            int cat = sensitive ? 5 : 4;
            assert_int_equal(parts.categories, VAULT_CATEGORY_BIT(cat));
            assert_non_null(parts.data[cat]);

            vault_record r;
            record_from_parts(&r, kind, &parts, VAULT_ALL_CATEGORIES);
            Alma__Vault__V1__Item *it = NULL;
            MUST(vault_item_unpack(&r, NULL, &it));
            assert_non_null(it);
            assert_same_message(&it->base, &f.item.base);
            assert_int_equal(vault_item_kind(it), kind);
            assert_int_equal(vault_item_category(it), cat);
            alma__vault__v1__item__free_unpacked(it, NULL);

            /* Another kind's record: integrity failure. */
            r.kind = kind == 2 ? 3 : 2;
            EXPECT_ERR(vault_item_unpack(&r, NULL, &it), BASE_ERR_CRYPTO);
            r.kind = kind;
            /* Both clinical parts: integrity failure. */
            set_part(&r, sensitive ? 4 : 5, parts.data[cat], parts.len[cat]);
            EXPECT_ERR(vault_item_unpack(&r, NULL, &it), BASE_ERR_CRYPTO);
            record_free(&r);

            /* Withheld: NULL. */
            record_from_parts(&r, kind, &parts, VAULT_CATEGORY_BIT(1));
            it = (Alma__Vault__V1__Item *)&r;
            MUST(vault_item_unpack(&r, NULL, &it));
            assert_null(it);
            /* Garbage in the part. */
            set_part(&r, cat, "\x52\x05\x0a", 3);
            EXPECT_ERR(vault_item_unpack(&r, NULL, &it), BASE_ERR_CRYPTO);
            assert_string_equal(base_error_message(), "record failed its integrity check");
            record_free(&r);
            vault_parts_free(&parts);
        }
    }
    /* The F-code rule puts an unflagged item in SENSITIVE_CLINICAL. */
    item_fx f;
    item_init(&f, 2);
    f.code.code = "F33.1";
    vault_parts parts;
    MUST(vault_item_pack(&f.item, &parts));
    assert_int_equal(parts.categories, VAULT_CATEGORY_BIT(5));
    vault_parts_free(&parts);
    Alma__Vault__V1__Item none = ALMA__VAULT__V1__ITEM__INIT;
    EXPECT_ERR(vault_item_pack(&none, &parts), BASE_ERR_INVALID);
}

/* ---- Blind-index values ------------------------------------------------------------------------------- */

static const vault_blind *find_kind(const vault_blind_buf *b, int kind, size_t nth)
{
    for (size_t i = 0; i < b->count; i++) {
        if (b->values[i].kind == kind && nth-- == 0)
            return &b->values[i];
    }
    return NULL;
}

static void assert_query_matches(const vault_blind *v, const Alma__Vault__V1__FindPatientsRequest *req)
{
    vault_blind_buf q;
    MUST(vault_blind_for_query(req, &q));
    assert_non_null(v);
    assert_int_equal(q.count, 1);
    assert_ptr_equal(q.values[0].value, q.bytes[0]);
    assert_int_equal(q.values[0].kind, v->kind);
    assert_int_equal(q.values[0].len, v->len);
    assert_memory_equal(q.values[0].value, v->value, v->len);
    vault_blind_buf_wipe(&q);
}

static bool query_equals(const vault_blind *v, const Alma__Vault__V1__FindPatientsRequest *req)
{
    vault_blind_buf q;
    MUST(vault_blind_for_query(req, &q));
    bool eq = q.values[0].kind == v->kind && q.values[0].len == v->len &&
              memcmp(q.values[0].value, v->value, v->len) == 0;
    vault_blind_buf_wipe(&q);
    return eq;
}

static void test_blind(void **state)
{
    (void)state;
    patient_fx f;
    patient_init(&f);
    f.p.n_coverage = 3; /* cov[2] repeats cov[0]'s member id at the same payer: one value */
    f.cov[2].payer_id = "other-payer";
    vault_blind_buf b;
    MUST(vault_blind_values(&f.p, &b));
    assert_int_equal(b.count, 4); /* MRN, two distinct member ids, name + DOB */
    const vault_blind *mrn = find_kind(&b, VAULT_BLIND_MRN, 0);
    assert_non_null(mrn);
    assert_int_equal(mrn->len, 8);
    assert_memory_equal(mrn->value, "MRN00123", 8);
    const vault_blind *m0 = find_kind(&b, VAULT_BLIND_MEMBER_ID, 0),
                      *m1 = find_kind(&b, VAULT_BLIND_MEMBER_ID, 1);
    assert_non_null(m0);
    assert_non_null(m1);
    assert_null(find_kind(&b, VAULT_BLIND_MEMBER_ID, 2));
    assert_int_equal(m0->len, 7);
    assert_memory_equal(m0->value, "XJ99812", 7);
    const vault_blind *nd = find_kind(&b, VAULT_BLIND_NAME_DOB, 0);
    assert_non_null(nd);
    static const char want_nd[] = "obriensmith\x1fmaryann\x1f"
                                  "1961-02-28";
    assert_int_equal(nd->len, sizeof want_nd - 1);
    assert_memory_equal(nd->value, want_nd, sizeof want_nd - 1);
    for (size_t i = 0; i < b.count; i++)
        assert_ptr_equal(b.values[i].value, b.bytes[i]);

    /* Queries in other spellings give the same bytes. */
    Alma__Vault__V1__FindPatientsRequest req = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__INIT;
    req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MRN;
    req.mrn = "MRN00123";
    assert_query_matches(mrn, &req);
    req.mrn = "mrn 001-23";
    assert_query_matches(mrn, &req);
    req.mrn = "MRN00124";
    assert_false(query_equals(mrn, &req));
    req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MEMBER_ID;
    req.member_id = "xj 99812";
    assert_query_matches(m0, &req);
    req.member_id = "1eg4te5mk73";
    assert_query_matches(m1, &req);
    Alma__Vault__V1__NameAndBirthDate q = ALMA__VAULT__V1__NAME_AND_BIRTH_DATE__INIT;
    req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_NAME_AND_BIRTH_DATE;
    req.name_and_birth_date = &q;
    q.family_name = "OBRIEN SMITH";
    q.given_name = "maryann";
    q.birth_date = "1961-02-28";
    assert_query_matches(nd, &req);
    q.family_name = "o'brien-smith";
    q.given_name = "Mary-Ann";
    assert_query_matches(nd, &req);
    /* Different people differ: another birth date, another first name, names swapped. */
    q.birth_date = "1961-02-27";
    assert_false(query_equals(nd, &req));
    q.birth_date = "1961-02-28";
    q.given_name = "Mary";
    assert_false(query_equals(nd, &req));
    q.family_name = "maryann";
    q.given_name = "obriensmith";
    assert_false(query_equals(nd, &req));
    vault_blind_buf_wipe(&b);

    /* Non-ASCII bytes are kept as they are (no case folding or NFC beyond ASCII). */
    patient_init(&f);
    f.demo.family_name = "Müller";
    f.p.n_coverage = 0;
    MUST(vault_blind_values(&f.p, &b));
    assert_int_equal(b.count, 2);
    nd = find_kind(&b, VAULT_BLIND_NAME_DOB, 0);
    q.family_name = "MÜLLER";
    q.given_name = "Mary Ann";
    assert_false(query_equals(nd, &req));
    q.family_name = "mÜller";
    assert_false(query_equals(nd, &req));
    q.family_name = "M ü l l e r";
    assert_query_matches(nd, &req);
    q.family_name = "Muller";
    assert_false(query_equals(nd, &req));
    vault_blind_buf_wipe(&b);

    /* A second person with the same name and another birth date, and another MRN, differs everywhere. */
    patient_fx g;
    patient_init(&g);
    g.demo.birth_date = "1962-02-28";
    g.ids.mrn = "MRN-00124";
    g.p.n_coverage = 0;
    vault_blind_buf b1, b2;
    patient_init(&f);
    f.p.n_coverage = 0;
    MUST(vault_blind_values(&f.p, &b1));
    MUST(vault_blind_values(&g.p, &b2));
    for (size_t i = 0; i < b1.count; i++) {
        assert_int_equal(b1.values[i].kind, b2.values[i].kind);
        assert_false(b1.values[i].len == b2.values[i].len &&
                     memcmp(b1.values[i].value, b2.values[i].value, b1.values[i].len) == 0);
    }
    vault_blind_buf_wipe(&b1);
    vault_blind_buf_wipe(&b2);

    /* Invalid queries name the field, never the value. */
    vault_blind_buf qq;
    req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY__NOT_SET;
    expect_invalid(vault_blind_for_query(&req, &qq), "no by", "by: one of", "");
    req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MRN;
    req.mrn = "";
    expect_invalid(vault_blind_for_query(&req, &qq), "empty mrn", "mrn: required", "");
    req.mrn = "MRN_00123";
    expect_invalid(vault_blind_for_query(&req, &qq), "mrn charset", "mrn: 1..32", "MRN_00123");
    req.mrn = "- -";
    expect_invalid(vault_blind_for_query(&req, &qq), "mrn empty", "mrn: 1..32", "");
    req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MEMBER_ID;
    req.member_id = "ZQ#4471";
    expect_invalid(vault_blind_for_query(&req, &qq), "member", "member_id: 1..32", "ZQ#4471");
    req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_NAME_AND_BIRTH_DATE;
    req.name_and_birth_date = &q; /* the oneof's members share storage */
    q.family_name = "Smith";
    q.given_name = "Ann";
    q.birth_date = "2023-02-29";
    expect_invalid(vault_blind_for_query(&req, &qq), "dob", "name_and_birth_date.birth_date: not a calendar",
                   "2023-02-29");
    q.birth_date = "1980-01-01";
    q.family_name = "";
    expect_invalid(vault_blind_for_query(&req, &qq), "family", "name_and_birth_date.family_name: required",
                   "");
    q.family_name = "Sm\x01th";
    expect_invalid(vault_blind_for_query(&req, &qq), "family ctl", "name_and_birth_date.family_name: control",
                   "Sm\x01th");
    q.family_name = "Smith";
    q.given_name = "";
    expect_invalid(vault_blind_for_query(&req, &qq), "given", "name_and_birth_date.given_name: required", "");
    req.name_and_birth_date = NULL;
    expect_invalid(vault_blind_for_query(&req, &qq), "no name", "name_and_birth_date: required", "");
}

/* ---- Ages --------------------------------------------------------------------------------------------- */

static uint32_t age(const char *birth_date, int64_t now_s)
{
    uint32_t years = 999;
    MUST(vault_age_years(birth_date, now_s, &years));
    return years;
}

static void test_age(void **state)
{
    (void)state;
    assert_int_equal(age("2000-06-15", at(2024, 6, 15)), 24);
    assert_int_equal(age("2000-06-15", at(2024, 6, 14)), 23);
    assert_int_equal(age("2000-06-15", at(2024, 6, 16)), 24);
    assert_int_equal(age("2000-06-15", days_of(2024, 6, 15) * 86400), 24);     /* 00:00 UTC */
    assert_int_equal(age("2000-06-15", days_of(2024, 6, 15) * 86400 - 1), 23); /* 23:59:59 the day before */
    assert_int_equal(age("1961-12-31", at(2024, 1, 1)), 62);
    /* Leap-day birthdays: the age goes up on 1 March in common years, on 29 February in leap years. */
    assert_int_equal(age("2000-02-29", at(2023, 2, 28)), 22);
    assert_int_equal(age("2000-02-29", at(2023, 3, 1)), 23);
    assert_int_equal(age("2000-02-29", at(2024, 2, 28)), 23);
    assert_int_equal(age("2000-02-29", at(2024, 2, 29)), 24);
    assert_int_equal(age("2000-02-29", at(2100, 2, 28)), 99); /* 2100 is not a leap year */
    assert_int_equal(age("2000-02-29", at(2100, 3, 1)), 100);
    /* Born today, tomorrow (allowed by validation), long ago. */
    assert_int_equal(age("2024-06-15", NOW), 0);
    assert_int_equal(age("2024-06-16", NOW), 0);
    assert_int_equal(age("1900-01-01", NOW), 124);
    /* Not a date: an error naming the field, never the value; the output is untouched. */
    uint32_t years = 7;
    expect_invalid(vault_age_years("2023-02-29", NOW, &years), "age", "birth_date: not a calendar date",
                   "2023-02-29");
    EXPECT_ERR(vault_age_years("", NOW, &years), BASE_ERR_INVALID);
    EXPECT_ERR(vault_age_years(NULL, NOW, &years), BASE_ERR_INVALID);
    assert_int_equal(years, 7);
    assert_true(vault_is_calendar_date("2024-02-29"));
    assert_false(vault_is_calendar_date("2023-02-29"));
    assert_false(vault_is_calendar_date("1899-12-31"));
}

/* Fields this build does not know (in the message or one nested in it) are refused: protobuf-c would keep
 * them and pack them, unvalidated, into the stored part. Found by fuzz_vault_model. */
static void test_unknown_fields(void **state)
{
    (void)state;
    static const uint8_t extra[] = {0x98, 0x06, 0x01}; /* field 99, varint 1 */
    item_fx f;
    item_init(&f, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PROBLEM);
    assert_true(base_is_ok(vault_validate_item(&f.item, NOW)));
    size_t n = alma__vault__v1__item__get_packed_size(&f.item);
    uint8_t *buf = malloc(n + sizeof extra);
    assert_non_null(buf);
    alma__vault__v1__item__pack(&f.item, buf);
    memcpy(buf + n, extra, sizeof extra);
    Alma__Vault__V1__Item *it = alma__vault__v1__item__unpack(NULL, n + sizeof extra, buf);
    assert_non_null(it);
    base_result r = vault_validate_item(it, NOW);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "item:"));
    alma__vault__v1__item__free_unpacked(it, NULL);
    /* Nested: the same field inside a patient's coverage. */
    patient_fx pf;
    patient_init(&pf);
    assert_true(base_is_ok(vault_validate_patient(&pf.p, NOW)));
    size_t cn = alma__vault__v1__coverage__get_packed_size(pf.p.coverage[0]);
    uint8_t *cb = malloc(cn + sizeof extra);
    assert_non_null(cb);
    alma__vault__v1__coverage__pack(pf.p.coverage[0], cb);
    memcpy(cb + cn, extra, sizeof extra);
    Alma__Vault__V1__Coverage *cov = alma__vault__v1__coverage__unpack(NULL, cn + sizeof extra, cb);
    assert_non_null(cov);
    Alma__Vault__V1__Coverage *saved = pf.p.coverage[0];
    pf.p.coverage[0] = cov;
    r = vault_validate_patient(&pf.p, NOW);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    pf.p.coverage[0] = saved;
    alma__vault__v1__coverage__free_unpacked(cov, NULL);
    free(cb);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),        cmocka_unit_test(test_invalid_patient),
        cmocka_unit_test(test_invalid_item), cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_category),     cmocka_unit_test(test_patient_parts),
        cmocka_unit_test(test_item_parts),   cmocka_unit_test(test_blind),
        cmocka_unit_test(test_age),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
