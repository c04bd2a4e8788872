/* audit_validate_event: every rule, each with the clear error it gives and without the value in it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "validate.h"

#include <string.h>

#define PT "pt_0123456789abcdef0123456789abcdef"

typedef struct event_fixture {
    Alma__Audit__V1__EventInput ev;
    Alma__Audit__V1__Actor actor;
    Alma__Audit__V1__Recipient recipient;
    Alma__Audit__V1__GuidelineRef guideline;
    Alma__Audit__V1__EventInput__DetailsEntry detail[20];
    Alma__Audit__V1__EventInput__DetailsEntry *details[20];
    char *roles[20];
} event_fixture;

/* A valid READ of a patient's record by a clinician. */
static void event_init(event_fixture *f)
{
    memset(f, 0, sizeof *f);
    alma__audit__v1__event_input__init(&f->ev);
    alma__audit__v1__actor__init(&f->actor);
    alma__audit__v1__recipient__init(&f->recipient);
    alma__audit__v1__guideline_ref__init(&f->guideline);
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
    f->ev.request_id = "req-1";
}

static void expect_invalid(const event_fixture *f, const char *fragment, const char *must_not_contain)
{
    base_result r = audit_validate_event(&f->ev);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    if (!strstr(base_error_message(), fragment))
        fail_msg("message '%s' lacks '%s'", base_error_message(), fragment);
    if (must_not_contain)
        assert_null(strstr(base_error_message(), must_not_contain));
}

static void test_valid_read(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    assert_true(base_is_ok(audit_validate_event(&f.ev)));
}

static void test_required_fields(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    f.ev.tenant_id = "";
    expect_invalid(&f, "event.tenant_id", NULL);
    event_init(&f);
    f.ev.tenant_id = "tenant a";
    expect_invalid(&f, "event.tenant_id", "tenant a");
    event_init(&f);
    f.ev.actor = NULL;
    expect_invalid(&f, "event.actor is required", NULL);
    event_init(&f);
    f.actor.principal_id = "";
    expect_invalid(&f, "event.actor.principal_id", NULL);
}

static void test_enums(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    f.ev.action = ALMA__AUDIT__V1__ACTION__ACTION_UNSPECIFIED;
    expect_invalid(&f, "event.action", NULL);
    event_init(&f);
    f.ev.action = (Alma__Audit__V1__Action)999; /* an unknown value from a newer or hostile client */
    expect_invalid(&f, "event.action", NULL);
    event_init(&f);
    f.ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_UNSPECIFIED;
    expect_invalid(&f, "event.purpose", NULL);
    event_init(&f);
    f.ev.outcome = (Alma__Audit__V1__Outcome)7;
    expect_invalid(&f, "event.outcome", NULL);
    event_init(&f);
    f.ev.severity = (Alma__Audit__V1__Severity)9;
    expect_invalid(&f, "event.severity", NULL);
}

static void test_patient_ref_is_pseudonymous(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    f.ev.patient_ref = "Jane Doe 1970-01-01";
    expect_invalid(&f, "pseudonymous", "Jane");
    event_init(&f);
    f.ev.patient_ref = "pt_0123456789ABCDEF0123456789abcdef"; /* uppercase */
    expect_invalid(&f, "pseudonymous", NULL);
    event_init(&f);
    f.ev.patient_ref = "pt_0123456789abcdef0123456789abcde"; /* 31 digits */
    expect_invalid(&f, "pseudonymous", NULL);
    assert_true(audit_is_patient_ref(PT));
    assert_false(audit_is_patient_ref("pt_"));
}

static void test_limits(void **state)
{
    (void)state;
    event_fixture f;
    char long_id[200];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    event_init(&f);
    f.ev.resource_id = long_id;
    expect_invalid(&f, "event.resource_id", NULL);
    event_init(&f);
    f.actor.n_roles = AUDIT_MAX_ROLES + 1;
    for (size_t i = 0; i < f.actor.n_roles; i++)
        f.roles[i] = "pcp";
    expect_invalid(&f, "event.actor.roles", NULL);
    event_init(&f);
    f.ev.resource_type = "";
    expect_invalid(&f, "needs event.resource_type", NULL);
    event_init(&f);
    f.ev.phi_description = "line\nbreak";
    expect_invalid(&f, "event.phi_description", NULL);
}

static void set_details(event_fixture *f, size_t n, const char *key, const char *value)
{
    for (size_t i = 0; i < n; i++) {
        alma__audit__v1__event_input__details_entry__init(&f->detail[i]);
        f->detail[i].key = (char *)key;
        f->detail[i].value = (char *)value;
        f->details[i] = &f->detail[i];
    }
    f->ev.details = f->details;
    f->ev.n_details = n;
}

static void test_details(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    set_details(&f, 1, "reason_code", "override-1");
    assert_true(base_is_ok(audit_validate_event(&f.ev)));
    set_details(&f, 1, "Reason", "x");
    expect_invalid(&f, "event.details keys", NULL);
    set_details(&f, AUDIT_MAX_DETAILS + 1, "k", "v");
    expect_invalid(&f, "more than 16", NULL);
    set_details(&f, 2, "same", "v");
    expect_invalid(&f, "repeated key", NULL);
    char big[300];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    set_details(&f, 1, "k", big);
    expect_invalid(&f, "event.details values", NULL);
}

static void test_disclosure_rules(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    f.ev.action = ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE;
    f.ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PUBLIC_HEALTH;
    expect_invalid(&f, "event.recipient.name is required", NULL);
    f.recipient.name = "County Health Department";
    f.ev.recipient = &f.recipient;
    expect_invalid(&f, "event.basis is required", NULL);
    f.ev.basis = ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH;
    expect_invalid(&f, "event.phi_description is required", NULL);
    f.ev.phi_description = "diagnosis codes, date of birth";
    assert_true(base_is_ok(audit_validate_event(&f.ev)));
    f.ev.patient_ref = "";
    expect_invalid(&f, "event.patient_ref is required for ACTION_DISCLOSE", NULL);

    /* A recipient or basis on anything but a disclosure is a mistake worth refusing. */
    event_init(&f);
    f.recipient.name = "x";
    f.ev.recipient = &f.recipient;
    expect_invalid(&f, "only for ACTION_DISCLOSE", NULL);
    event_init(&f);
    f.ev.basis = ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_AUTHORIZATION;
    expect_invalid(&f, "only for ACTION_DISCLOSE", NULL);
}

static void test_recommendation_rules(void **state)
{
    (void)state;
    event_fixture f;
    event_init(&f);
    f.ev.action = ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND;
    f.ev.resource_type = "Review";
    expect_invalid(&f, "event.guideline needs", NULL);
    f.guideline.engine_version = "1.0.0";
    f.guideline.bundle_id = "referral-core";
    f.guideline.bundle_version = "2026.1.0";
    f.guideline.bundle_hash = "sha256:abcd";
    f.guideline.source = "KDIGO 2012 CKD guideline, rec. 5.1.1";
    f.ev.guideline = &f.guideline;
    assert_true(base_is_ok(audit_validate_event(&f.ev)));
    f.ev.resource_id = "";
    expect_invalid(&f, "is required for ACTION_RECOMMEND", NULL);

    event_init(&f);
    f.ev.action = ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS;
    f.ev.patient_ref = "";
    expect_invalid(&f, "ACTION_BREAK_GLASS", NULL);
}

static void test_accounting_exclusions(void **state)
{
    (void)state;
    assert_true(audit_basis_excluded_from_accounting(
        ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_TREATMENT_PAYMENT_OPERATIONS));
    assert_true(audit_basis_excluded_from_accounting(
        ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_AUTHORIZATION));
    assert_true(audit_basis_excluded_from_accounting(
        ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_LIMITED_DATA_SET));
    assert_false(audit_basis_excluded_from_accounting(
        ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH));
    assert_false(audit_basis_excluded_from_accounting(
        ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_LAW_ENFORCEMENT));
    assert_false(audit_basis_excluded_from_accounting(
        ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_UNSPECIFIED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_read),
        cmocka_unit_test(test_required_fields),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_patient_ref_is_pseudonymous),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_details),
        cmocka_unit_test(test_disclosure_rules),
        cmocka_unit_test(test_recommendation_rules),
        cmocka_unit_test(test_accounting_exclusions),
    };
    return cmocka_run_group_tests_name("audit_validate", tests, NULL, NULL);
}
