#include "validate.h"

#include <string.h>

static bool audit_is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ':';
}

/* Identifiers: 1..max characters of [A-Za-z0-9._:-]. */
static bool audit_is_id(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!audit_is_id_char(s[i]))
            return false;
    return true;
}

/* Free text: bounded, and no control characters (they would break log lines and exports). */
static bool audit_is_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static bool audit_is_detail_key(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > AUDIT_MAX_DETAIL_KEY)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

bool audit_is_patient_ref(const char *s)
{
    if (strncmp(s, "pt_", 3) != 0 || strlen(s) != 35)
        return false;
    for (size_t i = 3; i < 35; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool audit_basis_excluded_from_accounting(Alma__Audit__V1__DisclosureBasis basis)
{
    switch (basis) {
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_TREATMENT_PAYMENT_OPERATIONS:
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_TO_INDIVIDUAL:
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_INCIDENTAL:
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_AUTHORIZATION:
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_FACILITY_DIRECTORY_OR_CARE_INVOLVEMENT:
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_NATIONAL_SECURITY:
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_CORRECTIONAL_INSTITUTION:
    case ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_LIMITED_DATA_SET:
        return true;
    default:
        return false;
    }
}

/* Whether `v` is one of the values the descriptor defines, other than 0 (UNSPECIFIED). */
static bool audit_enum_set(const ProtobufCEnumDescriptor *d, int v)
{
    return v != 0 && protobuf_c_enum_descriptor_get_value(d, v) != NULL;
}

#define AUDIT_REQUIRE(cond, ...)                                                                             \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            return base_fail(BASE_ERR_INVALID, __VA_ARGS__);                                                 \
    } while (0)

static base_result audit_validate_details(const Alma__Audit__V1__EventInput *ev)
{
    AUDIT_REQUIRE(ev->n_details <= AUDIT_MAX_DETAILS, "event.details has more than %d entries",
                  AUDIT_MAX_DETAILS);
    for (size_t i = 0; i < ev->n_details; i++) {
        AUDIT_REQUIRE(audit_is_detail_key(ev->details[i]->key),
                      "event.details keys must match [a-z0-9_]{1,%d}", AUDIT_MAX_DETAIL_KEY);
        AUDIT_REQUIRE(audit_is_text(ev->details[i]->value, AUDIT_MAX_DETAIL_VALUE),
                      "event.details values must be at most %d bytes without control characters",
                      AUDIT_MAX_DETAIL_VALUE);
        for (size_t j = 0; j < i; j++)
            AUDIT_REQUIRE(strcmp(ev->details[i]->key, ev->details[j]->key) != 0,
                          "event.details has a repeated key");
    }
    return BASE_OK_RESULT;
}

base_result audit_validate_event(const Alma__Audit__V1__EventInput *ev)
{
    AUDIT_REQUIRE(ev, "event is required");
    AUDIT_REQUIRE(audit_is_id(ev->tenant_id, AUDIT_MAX_TENANT),
                  "event.tenant_id is required: 1 to %d of [A-Za-z0-9._:-]", AUDIT_MAX_TENANT);
    AUDIT_REQUIRE(ev->actor, "event.actor is required");
    AUDIT_REQUIRE(audit_is_id(ev->actor->principal_id, AUDIT_MAX_ID),
                  "event.actor.principal_id is required: 1 to %d of [A-Za-z0-9._:-]", AUDIT_MAX_ID);
    AUDIT_REQUIRE(ev->actor->n_roles <= AUDIT_MAX_ROLES, "event.actor.roles has more than %d entries",
                  AUDIT_MAX_ROLES);
    for (size_t i = 0; i < ev->actor->n_roles; i++)
        AUDIT_REQUIRE(audit_is_id(ev->actor->roles[i], AUDIT_MAX_ROLE),
                      "event.actor.roles entries must be 1 to %d of "
                      "[A-Za-z0-9._:-]",
                      AUDIT_MAX_ROLE);
    AUDIT_REQUIRE(audit_enum_set(&alma__audit__v1__action__descriptor, (int)ev->action),
                  "event.action must be one of the defined actions (not UNSPECIFIED)");
    AUDIT_REQUIRE(audit_enum_set(&alma__common__v1__purpose_of_use__descriptor, (int)ev->purpose),
                  "event.purpose must be one of the defined purposes of use (not UNSPECIFIED)");
    AUDIT_REQUIRE(audit_enum_set(&alma__audit__v1__outcome__descriptor, (int)ev->outcome),
                  "event.outcome must be SUCCESS, DENIED or ERROR");
    AUDIT_REQUIRE(ev->severity == 0 ||
                      audit_enum_set(&alma__audit__v1__severity__descriptor, (int)ev->severity),
                  "event.severity is not a defined severity");
    AUDIT_REQUIRE(!ev->patient_ref[0] || audit_is_patient_ref(ev->patient_ref),
                  "event.patient_ref must be a pseudonymous reference: pt_ and 32 lowercase hex digits");
    AUDIT_REQUIRE(!ev->resource_type[0] || audit_is_id(ev->resource_type, AUDIT_MAX_RESOURCE_TYPE),
                  "event.resource_type must be 1 to %d of [A-Za-z0-9._:-]", AUDIT_MAX_RESOURCE_TYPE);
    AUDIT_REQUIRE(!ev->resource_id[0] || audit_is_id(ev->resource_id, AUDIT_MAX_ID),
                  "event.resource_id must be 1 to %d of [A-Za-z0-9._:-]", AUDIT_MAX_ID);
    AUDIT_REQUIRE(!ev->resource_id[0] || ev->resource_type[0], "event.resource_id needs event.resource_type");
    AUDIT_REQUIRE(!ev->request_id[0] || audit_is_id(ev->request_id, 64),
                  "event.request_id must be 1 to 64 of [A-Za-z0-9._:-]");
    AUDIT_REQUIRE(audit_is_text(ev->phi_description, AUDIT_MAX_TEXT),
                  "event.phi_description must be at most %d bytes without control characters",
                  AUDIT_MAX_TEXT);
    BASE_GUARD(audit_validate_details(ev));

    bool disclose = ev->action == ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE;
    if (disclose) {
        AUDIT_REQUIRE(ev->recipient && ev->recipient->name[0],
                      "event.recipient.name is required for ACTION_DISCLOSE");
        AUDIT_REQUIRE(audit_enum_set(&alma__audit__v1__disclosure_basis__descriptor, (int)ev->basis),
                      "event.basis is required for ACTION_DISCLOSE");
        AUDIT_REQUIRE(ev->phi_description[0], "event.phi_description is required for ACTION_DISCLOSE");
        AUDIT_REQUIRE(ev->patient_ref[0], "event.patient_ref is required for ACTION_DISCLOSE");
    } else {
        AUDIT_REQUIRE(!ev->recipient, "event.recipient is only for ACTION_DISCLOSE");
        AUDIT_REQUIRE(ev->basis == 0, "event.basis is only for ACTION_DISCLOSE");
    }
    if (ev->recipient) {
        AUDIT_REQUIRE(audit_is_text(ev->recipient->name, AUDIT_MAX_TEXT) &&
                          audit_is_text(ev->recipient->address, AUDIT_MAX_TEXT),
                      "event.recipient fields must be at most %d bytes without control characters",
                      AUDIT_MAX_TEXT);
    }

    bool recommend = ev->action == ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND;
    if (recommend) {
        const Alma__Audit__V1__GuidelineRef *g = ev->guideline;
        AUDIT_REQUIRE(
            g && g->engine_version[0] && g->bundle_id[0] && g->bundle_version[0] && g->bundle_hash[0] &&
                g->source[0],
            "event.guideline needs engine_version, bundle_id, bundle_version, bundle_hash and source for "
            "ACTION_RECOMMEND");
    }
    if (ev->guideline) {
        const Alma__Audit__V1__GuidelineRef *g = ev->guideline;
        AUDIT_REQUIRE(audit_is_text(g->engine_version, 64) && audit_is_text(g->bundle_id, AUDIT_MAX_ID) &&
                          audit_is_text(g->bundle_version, 64) && audit_is_text(g->bundle_hash, 128) &&
                          audit_is_text(g->source, AUDIT_MAX_TEXT),
                      "event.guideline fields are too long or hold control characters");
    }
    bool decide = ev->action == ALMA__AUDIT__V1__ACTION__ACTION_DECIDE;
    if (recommend || decide)
        AUDIT_REQUIRE(ev->resource_id[0],
                      "event.resource_id (the review) is required for ACTION_RECOMMEND and "
                      "ACTION_DECIDE");
    if (ev->action == ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS)
        AUDIT_REQUIRE(ev->patient_ref[0], "event.patient_ref is required for ACTION_BREAK_GLASS");
    return BASE_OK_RESULT;
}
