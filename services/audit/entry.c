/* The canonical audit entry (format in entry.h) and its FHIR R4 AuditEvent view.
 *
 * FHIR mapping (entry -> AuditEvent). Code systems:
 *   DCM   http://dicom.nema.org/resources/ontology/DCM
 *   AET   http://terminology.hl7.org/CodeSystem/audit-event-type
 *   REST  http://hl7.org/fhir/restful-interaction
 *   ACT   http://terminology.hl7.org/CodeSystem/v3-ActReason
 *   ENT   http://terminology.hl7.org/CodeSystem/audit-entity-type
 *   ROLE  http://terminology.hl7.org/CodeSystem/object-role
 *   SRC   http://terminology.hl7.org/CodeSystem/security-source-type
 *
 *   action               type                                        subtype                          action
 *   ACTION_CREATE        DCM 110110 Patient Record (AET rest if no   REST create                      C
 *                        patient_ref)
 *   ACTION_READ          as CREATE                                   REST read                        R
 *   ACTION_UPDATE        as CREATE                                   REST update                      U
 *   ACTION_DELETE        as CREATE                                   REST delete                      D
 *   ACTION_DISCLOSE      DCM 110106 Export                           -                                R
 *   ACTION_LOGIN         DCM 110114 User Authentication              DCM 110122 Login                 E
 *   ACTION_LOGOUT        DCM 110114 User Authentication              DCM 110123 Logout                E
 *   ACTION_LOGIN_FAILED  DCM 110114 User Authentication              DCM 110122 Login                 E
 *   ACTION_BREAK_GLASS   DCM 110113 Security Alert                   DCM 110127 Emergency Override    E
 *                                                                    Started
 *   ACTION_EXPORT        DCM 110106 Export                           -                                R
 *   ACTION_QUERY         DCM 110112 Query                            -                                E
 *   ACTION_RECOMMEND     DCM 110110 Patient Record (DCM 110100       -                                E
 *   ACTION_DECIDE        Application Activity if no patient_ref)     -                                E
 *   ACTION_ADMIN         DCM 110113 Security Alert                   -                                E
 *   ACTION_ACCESS_DENIED DCM 110113 Security Alert                   -                                E
 *
 *   id            "audit-<seq>"
 *   recorded      "time" (already an RFC 3339 instant)
 *   outcome       OUTCOME_SUCCESS "0", OUTCOME_DENIED "4", OUTCOME_ERROR "8"; LOGIN_FAILED and ACCESS_DENIED
 *                 are at least "4" whatever the outcome says; outcomeDesc a fixed phrase for "4" and "8"
 *   purposeOfEvent ACT: TREATMENT TREAT, PAYMENT HPAYMT, OPERATIONS HOPERAT, PATIENT_REQUEST PATRQT,
 *                 LEGAL HLEGAL, PUBLIC_HEALTH PUBHLTH, RESEARCH HRESCH, EMERGENCY ETREAT
 *   agent[0]      who.identifier {urn:alma:principal, principal_id}, requestor true,
 *                 role[] one CodeableConcept per role {urn:alma:role, role}
 *   agent[1]      (if service_identity) type DCM 110150 Application,
 *                 who.identifier {urn:alma:service-identity, service_identity}, requestor false
 *   source        site tenant_id, observer.display service_identity or "alma-audit", type SRC 4
 *   entity[]      patient:   what.identifier {urn:alma:patient-ref, patient_ref}, type ENT 1, role ROLE 1
 *                 resource:  what.identifier {urn:alma:resource, "<type>/<id>"}, type ENT 2, role ROLE 4
 *                 recipient: name, description "disclosure recipient", role ROLE 16 Data Destination,
 *                            detail[] address, phi_description, basis (when present)
 *                 guideline: what.identifier {urn:alma:guideline-bundle, bundle_id}, type ENT 2, role ROLE 4,
 *                            detail[] engine_version, bundle_version, bundle_hash, source
 *   Not mapped (R4 has no place for them; the export carries the entry beside each resource): severity,
 *   request_id, details. */
#include "entry.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 9999-12-31T23:59:59.999999Z: the last instant with a four-digit year. */
#define ENTRY_MAX_TIME_MICROS INT64_C(253402300799999999)
#define ENTRY_TIME_LEN        27 /* "YYYY-MM-DDTHH:MM:SS.ffffffZ" */

/* The canonical encoding: see entry.h. Changing these flags changes every leaf hash. */
#define ENTRY_DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)
/* FHIR output keeps insertion order (jansson >= 2.8), so resourceType comes first. */
#define FHIR_DUMP_FLAGS (JSON_COMPACT | JSON_ENSURE_ASCII)

static void entry_json_decref(json_t **j)
{
    if (*j)
        json_decref(*j);
}

/* ---------------------------------------------------------------------------------------------------------
 * Encoding. */

/* Sets obj[key] to `value` unless it is NULL or "". `field` names the proto field in messages. */
static base_result entry_put_string(json_t *obj, const char *key, const char *value, const char *field)
{
    if (!value || !value[0])
        return BASE_OK_RESULT;
    json_t *s = json_string(value);
    if (!s)
        return base_fail(BASE_ERR_INVALID, "%s is not valid UTF-8", field);
    if (json_object_set_new(obj, key, s) != 0)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding %s", field);
    return BASE_OK_RESULT;
}

/* Sets obj[key] to the proto name of enum value `v`, omitted when 0 unless `required`. */
static base_result entry_put_enum(json_t *obj, const char *key, const ProtobufCEnumDescriptor *d, int v,
                                  bool required, const char *field)
{
    if (v == 0) {
        if (required)
            return base_fail(BASE_ERR_INVALID, "%s is required", field);
        return BASE_OK_RESULT;
    }
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    if (!ev)
        return base_fail(BASE_ERR_INVALID, "%s is not a defined value", field);
    return entry_put_string(obj, key, ev->name, field);
}

/* Attaches `child` as obj[key] if it has members; consumes `child` either way. */
static base_result entry_put_object(json_t *obj, const char *key, json_t *child, const char *field)
{
    if (json_object_size(child) == 0 && json_array_size(child) == 0) {
        json_decref(child);
        return BASE_OK_RESULT;
    }
    if (json_object_set_new(obj, key, child) != 0)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding %s", field);
    return BASE_OK_RESULT;
}

static base_result entry_format_time(int64_t micros, char ret[ENTRY_TIME_LEN + 1])
{
    if (micros < 0 || micros > ENTRY_MAX_TIME_MICROS)
        return base_fail(BASE_ERR_INVALID, "entry time must be between 1970 and 9999");
    time_t secs = (time_t)(micros / 1000000);
    int frac = (int)(micros % 1000000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm))
        return base_fail(BASE_ERR_INVALID, "entry time is out of range");
    int n = snprintf(ret, ENTRY_TIME_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    if (n != ENTRY_TIME_LEN)
        return base_fail(BASE_ERR_INTERNAL, "entry time formatting failed");
    return BASE_OK_RESULT;
}

static base_result entry_build_actor(const Alma__Audit__V1__Actor *actor, const char *service_identity,
                                     json_t *root)
{
    if (!actor->principal_id || !actor->principal_id[0])
        return base_fail(BASE_ERR_INVALID, "event.actor.principal_id is required");
    BASE_CLEANUP(entry_json_decref) json_t *obj = json_object();
    BASE_CLEANUP(entry_json_decref) json_t *roles = json_array();
    if (!obj || !roles)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding event.actor");
    BASE_GUARD(entry_put_string(obj, "principal_id", actor->principal_id, "event.actor.principal_id"));
    if (actor->n_roles > 0 && !actor->roles)
        return base_fail(BASE_ERR_INVALID, "event.actor.roles is missing");
    for (size_t i = 0; i < actor->n_roles; i++) {
        if (!actor->roles[i])
            return base_fail(BASE_ERR_INVALID, "event.actor.roles has a missing entry");
        json_t *s = json_string(actor->roles[i]);
        if (!s)
            return base_fail(BASE_ERR_INVALID, "event.actor.roles is not valid UTF-8");
        if (json_array_append_new(roles, s) != 0)
            return base_fail(BASE_ERR_NOMEM, "out of memory encoding event.actor.roles");
    }
    json_t *consumed = roles; /* entry_put_object consumes it, also on failure */
    roles = NULL;
    BASE_GUARD(entry_put_object(obj, "roles", consumed, "event.actor.roles"));
    BASE_GUARD(entry_put_string(obj, "service_identity", service_identity, "service identity"));
    consumed = obj;
    obj = NULL;
    return entry_put_object(root, "actor", consumed, "event.actor");
}

static base_result entry_build_details(const Alma__Audit__V1__EventInput *ev, json_t *root)
{
    if (ev->n_details > 0 && !ev->details)
        return base_fail(BASE_ERR_INVALID, "event.details is missing");
    BASE_CLEANUP(entry_json_decref) json_t *obj = json_object();
    if (!obj)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding event.details");
    for (size_t i = 0; i < ev->n_details; i++) {
        const Alma__Audit__V1__EventInput__DetailsEntry *d = ev->details[i];
        if (!d || !d->key || !d->key[0])
            return base_fail(BASE_ERR_INVALID, "event.details has an entry without a key");
        /* A repeated key would silently keep one value: refuse it (the validator does too). */
        if (json_object_get(obj, d->key))
            return base_fail(BASE_ERR_INVALID, "event.details has a repeated key");
        json_t *s = json_string(d->value ? d->value : "");
        if (!s)
            return base_fail(BASE_ERR_INVALID, "event.details is not valid UTF-8");
        if (json_object_set_new(obj, d->key, s) != 0)
            return base_fail(BASE_ERR_INVALID, "event.details keys must be valid UTF-8");
    }
    json_t *consumed = obj; /* entry_put_object consumes it, also on failure */
    obj = NULL;
    return entry_put_object(root, "details", consumed, "event.details");
}

static base_result entry_build(const Alma__Audit__V1__EventInput *ev, uint64_t seq, int64_t time_unix_micros,
                               const char *service_identity, json_t *root)
{
    if (seq > (uint64_t)INT64_MAX)
        return base_fail(BASE_ERR_LIMIT, "entry sequence must be below 2^63");
    if (!ev->tenant_id || !ev->tenant_id[0])
        return base_fail(BASE_ERR_INVALID, "event.tenant_id is required");
    char when[ENTRY_TIME_LEN + 1];
    BASE_GUARD(entry_format_time(time_unix_micros, when));

    if (json_object_set_new(root, "v", json_integer(AUDIT_ENTRY_VERSION)) != 0 ||
        json_object_set_new(root, "seq", json_integer((json_int_t)seq)) != 0)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding the entry");
    BASE_GUARD(entry_put_string(root, "time", when, "entry time"));
    BASE_GUARD(entry_put_string(root, "tenant_id", ev->tenant_id, "event.tenant_id"));
    BASE_GUARD(entry_build_actor(ev->actor, service_identity, root));
    BASE_GUARD(entry_put_enum(root, "action", &alma__audit__v1__action__descriptor, (int)ev->action, true,
                              "event.action"));
    BASE_GUARD(entry_put_enum(root, "purpose", &alma__common__v1__purpose_of_use__descriptor,
                              (int)ev->purpose, false, "event.purpose"));
    BASE_GUARD(entry_put_enum(root, "outcome", &alma__audit__v1__outcome__descriptor, (int)ev->outcome, false,
                              "event.outcome"));
    BASE_GUARD(entry_put_enum(root, "severity", &alma__audit__v1__severity__descriptor, (int)ev->severity,
                              false, "event.severity"));
    BASE_GUARD(entry_put_enum(root, "basis", &alma__audit__v1__disclosure_basis__descriptor, (int)ev->basis,
                              false, "event.basis"));
    BASE_GUARD(entry_put_string(root, "patient_ref", ev->patient_ref, "event.patient_ref"));
    BASE_GUARD(entry_put_string(root, "phi_description", ev->phi_description, "event.phi_description"));
    BASE_GUARD(entry_put_string(root, "request_id", ev->request_id, "event.request_id"));

    json_t *resource = json_object();
    if (!resource)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding event.resource");
    base_result r = entry_put_string(resource, "type", ev->resource_type, "event.resource_type");
    if (base_is_ok(r))
        r = entry_put_string(resource, "id", ev->resource_id, "event.resource_id");
    if (!base_is_ok(r)) {
        json_decref(resource);
        return r;
    }
    BASE_GUARD(entry_put_object(root, "resource", resource, "event.resource"));

    if (ev->recipient) {
        json_t *rec = json_object();
        if (!rec)
            return base_fail(BASE_ERR_NOMEM, "out of memory encoding event.recipient");
        r = entry_put_string(rec, "name", ev->recipient->name, "event.recipient.name");
        if (base_is_ok(r))
            r = entry_put_string(rec, "address", ev->recipient->address, "event.recipient.address");
        if (!base_is_ok(r)) {
            json_decref(rec);
            return r;
        }
        BASE_GUARD(entry_put_object(root, "recipient", rec, "event.recipient"));
    }

    if (ev->guideline) {
        const Alma__Audit__V1__GuidelineRef *g = ev->guideline;
        json_t *gl = json_object();
        if (!gl)
            return base_fail(BASE_ERR_NOMEM, "out of memory encoding event.guideline");
        r = entry_put_string(gl, "engine_version", g->engine_version, "event.guideline.engine_version");
        if (base_is_ok(r))
            r = entry_put_string(gl, "bundle_id", g->bundle_id, "event.guideline.bundle_id");
        if (base_is_ok(r))
            r = entry_put_string(gl, "bundle_version", g->bundle_version, "event.guideline.bundle_version");
        if (base_is_ok(r))
            r = entry_put_string(gl, "bundle_hash", g->bundle_hash, "event.guideline.bundle_hash");
        if (base_is_ok(r))
            r = entry_put_string(gl, "source", g->source, "event.guideline.source");
        if (!base_is_ok(r)) {
            json_decref(gl);
            return r;
        }
        BASE_GUARD(entry_put_object(root, "guideline", gl, "event.guideline"));
    }

    return entry_build_details(ev, root);
}

base_result audit_entry_encode(const Alma__Audit__V1__EventInput *ev, uint64_t seq, int64_t time_unix_micros,
                               const char *service_identity, char **ret_json, size_t *ret_len)
{
    if (!ev || !ret_json || !ret_len)
        return base_fail(BASE_ERR_INVALID, "audit_entry_encode: NULL argument");
    if (!ev->actor)
        return base_fail(BASE_ERR_INVALID, "event.actor is required");
    BASE_CLEANUP(entry_json_decref) json_t *root = json_object();
    if (!root)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding the entry");
    BASE_GUARD(entry_build(ev, seq, time_unix_micros, service_identity, root));

    char *out = json_dumps(root, ENTRY_DUMP_FLAGS);
    if (!out)
        return base_fail(BASE_ERR_NOMEM, "out of memory encoding the entry");
    size_t n = strlen(out);
    if (n > AUDIT_ENTRY_MAX) {
        free(out);
        return base_fail(BASE_ERR_LIMIT, "entry is larger than %zu bytes", AUDIT_ENTRY_MAX);
    }
    *ret_json = out;
    *ret_len = n;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * FHIR. */

#define FHIR_DCM   "http://dicom.nema.org/resources/ontology/DCM"
#define FHIR_AET   "http://terminology.hl7.org/CodeSystem/audit-event-type"
#define FHIR_REST  "http://hl7.org/fhir/restful-interaction"
#define FHIR_ACT   "http://terminology.hl7.org/CodeSystem/v3-ActReason"
#define FHIR_ENT   "http://terminology.hl7.org/CodeSystem/audit-entity-type"
#define FHIR_ROLE  "http://terminology.hl7.org/CodeSystem/object-role"
#define FHIR_SRC   "http://terminology.hl7.org/CodeSystem/security-source-type"
#define FHIR_AGENT "alma-audit"

typedef struct fhir_code {
    const char *system;
    const char *code;
    const char *display;
} fhir_code;

static const fhir_code fhir_patient_record = {FHIR_DCM, "110110", "Patient Record"};
static const fhir_code fhir_rest = {FHIR_AET, "rest", "RESTful Operation"};
static const fhir_code fhir_app_activity = {FHIR_DCM, "110100", "Application Activity"};
static const fhir_code fhir_export = {FHIR_DCM, "110106", "Export"};
static const fhir_code fhir_query = {FHIR_DCM, "110112", "Query"};
static const fhir_code fhir_security_alert = {FHIR_DCM, "110113", "Security Alert"};
static const fhir_code fhir_user_auth = {FHIR_DCM, "110114", "User Authentication"};
static const fhir_code fhir_login = {FHIR_DCM, "110122", "Login"};
static const fhir_code fhir_logout = {FHIR_DCM, "110123", "Logout"};
static const fhir_code fhir_emergency = {FHIR_DCM, "110127", "Emergency Override Started"};
static const fhir_code fhir_rest_create = {FHIR_REST, "create", "create"};
static const fhir_code fhir_rest_read = {FHIR_REST, "read", "read"};
static const fhir_code fhir_rest_update = {FHIR_REST, "update", "update"};
static const fhir_code fhir_rest_delete = {FHIR_REST, "delete", "delete"};

typedef struct fhir_action_map {
    const fhir_code *type;
    const fhir_code *type_without_patient; /* NULL: same as type */
    const fhir_code *subtype;              /* NULL: none */
    const char *action;                    /* AuditEventAction */
} fhir_action_map;

static bool fhir_map_action(Alma__Audit__V1__Action a, fhir_action_map *m)
{
    switch (a) {
    case ALMA__AUDIT__V1__ACTION__ACTION_CREATE:
        *m = (fhir_action_map){&fhir_patient_record, &fhir_rest, &fhir_rest_create, "C"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_READ:
        *m = (fhir_action_map){&fhir_patient_record, &fhir_rest, &fhir_rest_read, "R"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_UPDATE:
        *m = (fhir_action_map){&fhir_patient_record, &fhir_rest, &fhir_rest_update, "U"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_DELETE:
        *m = (fhir_action_map){&fhir_patient_record, &fhir_rest, &fhir_rest_delete, "D"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE:
    case ALMA__AUDIT__V1__ACTION__ACTION_EXPORT:
        *m = (fhir_action_map){&fhir_export, NULL, NULL, "R"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_LOGIN:
    case ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED:
        *m = (fhir_action_map){&fhir_user_auth, NULL, &fhir_login, "E"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_LOGOUT:
        *m = (fhir_action_map){&fhir_user_auth, NULL, &fhir_logout, "E"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS:
        *m = (fhir_action_map){&fhir_security_alert, NULL, &fhir_emergency, "E"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_QUERY:
        *m = (fhir_action_map){&fhir_query, NULL, NULL, "E"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND:
    case ALMA__AUDIT__V1__ACTION__ACTION_DECIDE:
        *m = (fhir_action_map){&fhir_patient_record, &fhir_app_activity, NULL, "E"};
        return true;
    case ALMA__AUDIT__V1__ACTION__ACTION_ADMIN:
    case ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED:
        *m = (fhir_action_map){&fhir_security_alert, NULL, NULL, "E"};
        return true;
    default:
        return false;
    }
}

static const fhir_code *fhir_map_purpose(Alma__Common__V1__PurposeOfUse p)
{
    static const fhir_code treat = {FHIR_ACT, "TREAT", "treatment"};
    static const fhir_code hpaymt = {FHIR_ACT, "HPAYMT", "healthcare payment"};
    static const fhir_code hoperat = {FHIR_ACT, "HOPERAT", "healthcare operations"};
    static const fhir_code patrqt = {FHIR_ACT, "PATRQT", "patient requested"};
    static const fhir_code hlegal = {FHIR_ACT, "HLEGAL", "legal"};
    static const fhir_code pubhlth = {FHIR_ACT, "PUBHLTH", "public health"};
    static const fhir_code hresch = {FHIR_ACT, "HRESCH", "healthcare research"};
    static const fhir_code etreat = {FHIR_ACT, "ETREAT", "Emergency Treatment"};
    switch (p) {
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT:
        return &treat;
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PAYMENT:
        return &hpaymt;
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_OPERATIONS:
        return &hoperat;
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PATIENT_REQUEST:
        return &patrqt;
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_LEGAL:
        return &hlegal;
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PUBLIC_HEALTH:
        return &pubhlth;
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_RESEARCH:
        return &hresch;
    case ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_EMERGENCY:
        return &etreat;
    default:
        return NULL;
    }
}

/* The parsed entry: borrowed pointers into the jansson tree, NULL when absent. */
typedef struct fhir_entry {
    json_int_t seq;
    const char *time;
    const char *tenant_id;
    const char *principal_id;
    const json_t *roles;
    const char *service_identity;
    Alma__Audit__V1__Action action;
    int purpose; /* 0 when absent */
    int outcome; /* 0 when absent */
    const char *basis;
    const char *patient_ref;
    const char *phi_description;
    const char *resource_type;
    const char *resource_id;
    const char *recipient_name;
    const char *recipient_address;
    const json_t *guideline;
} fhir_entry;

/* obj[key] as a string: *ret NULL when absent; BASE_ERR_INVALID if present and not a non-empty string. */
static base_result fhir_get_string(const json_t *obj, const char *key, bool required, const char **ret)
{
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    *ret = NULL;
    if (!v) {
        if (required)
            return base_fail(BASE_ERR_INVALID, "entry: \"%s\" is required", key);
        return BASE_OK_RESULT;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" must be a non-empty string", key);
    *ret = json_string_value(v);
    return BASE_OK_RESULT;
}

static base_result fhir_get_object(const json_t *obj, const char *key, bool required, const json_t **ret)
{
    const json_t *v = json_object_get(obj, key);
    *ret = NULL;
    if (!v) {
        if (required)
            return base_fail(BASE_ERR_INVALID, "entry: \"%s\" is required", key);
        return BASE_OK_RESULT;
    }
    if (!json_is_object(v))
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" must be an object", key);
    *ret = v;
    return BASE_OK_RESULT;
}

/* obj[key] as a value of enum `d` (by proto name); *ret 0 when absent and optional. */
static base_result fhir_get_enum(const json_t *obj, const char *key, const ProtobufCEnumDescriptor *d,
                                 bool required, int *ret)
{
    const char *name;
    BASE_GUARD(fhir_get_string(obj, key, required, &name));
    *ret = 0;
    if (!name)
        return BASE_OK_RESULT;
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(d, name);
    if (!v || v->value == 0)
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" is not a defined value", key);
    *ret = v->value;
    return BASE_OK_RESULT;
}

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ", as the encoder writes it. */
static bool fhir_is_entry_time(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(s) != ENTRY_TIME_LEN)
        return false;
    for (size_t i = 0; i < ENTRY_TIME_LEN; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return false;
    }
    return true;
}

static base_result fhir_parse(const json_t *e, fhir_entry *f)
{
    memset(f, 0, sizeof *f);
    if (!json_is_object(e))
        return base_fail(BASE_ERR_INVALID, "entry is not a JSON object");
    const json_t *v = json_object_get(e, "v");
    if (!json_is_integer(v) || json_integer_value(v) != AUDIT_ENTRY_VERSION)
        return base_fail(BASE_ERR_INVALID, "entry: \"v\" must be %d", AUDIT_ENTRY_VERSION);
    const json_t *seq = json_object_get(e, "seq");
    if (!json_is_integer(seq) || json_integer_value(seq) < 0)
        return base_fail(BASE_ERR_INVALID, "entry: \"seq\" must be a non-negative integer");
    f->seq = json_integer_value(seq);
    BASE_GUARD(fhir_get_string(e, "time", true, &f->time));
    if (!fhir_is_entry_time(f->time))
        return base_fail(BASE_ERR_INVALID, "entry: \"time\" must be YYYY-MM-DDTHH:MM:SS.ffffffZ");
    BASE_GUARD(fhir_get_string(e, "tenant_id", true, &f->tenant_id));

    const json_t *actor;
    BASE_GUARD(fhir_get_object(e, "actor", true, &actor));
    BASE_GUARD(fhir_get_string(actor, "principal_id", true, &f->principal_id));
    BASE_GUARD(fhir_get_string(actor, "service_identity", false, &f->service_identity));
    f->roles = json_object_get(actor, "roles");
    if (f->roles) {
        if (!json_is_array(f->roles))
            return base_fail(BASE_ERR_INVALID, "entry: \"roles\" must be an array");
        for (size_t i = 0; i < json_array_size(f->roles); i++) {
            const json_t *r = json_array_get(f->roles, i);
            if (!json_is_string(r) || json_string_length(r) == 0)
                return base_fail(BASE_ERR_INVALID, "entry: \"roles\" must hold non-empty strings");
        }
    }

    int action;
    BASE_GUARD(fhir_get_enum(e, "action", &alma__audit__v1__action__descriptor, true, &action));
    f->action = (Alma__Audit__V1__Action)action;
    BASE_GUARD(
        fhir_get_enum(e, "purpose", &alma__common__v1__purpose_of_use__descriptor, false, &f->purpose));
    BASE_GUARD(fhir_get_enum(e, "outcome", &alma__audit__v1__outcome__descriptor, false, &f->outcome));
    int basis;
    BASE_GUARD(fhir_get_enum(e, "basis", &alma__audit__v1__disclosure_basis__descriptor, false, &basis));
    BASE_GUARD(fhir_get_string(e, "basis", false, &f->basis));
    BASE_GUARD(fhir_get_string(e, "patient_ref", false, &f->patient_ref));
    BASE_GUARD(fhir_get_string(e, "phi_description", false, &f->phi_description));

    const json_t *obj;
    BASE_GUARD(fhir_get_object(e, "resource", false, &obj));
    BASE_GUARD(fhir_get_string(obj, "type", false, &f->resource_type));
    BASE_GUARD(fhir_get_string(obj, "id", false, &f->resource_id));
    BASE_GUARD(fhir_get_object(e, "recipient", false, &obj));
    BASE_GUARD(fhir_get_string(obj, "name", false, &f->recipient_name));
    BASE_GUARD(fhir_get_string(obj, "address", false, &f->recipient_address));
    BASE_GUARD(fhir_get_object(e, "guideline", false, &f->guideline));
    if (f->guideline) {
        static const char *const keys[] = {"bundle_id", "engine_version", "bundle_version", "bundle_hash",
                                           "source"};
        const char *ignored;
        for (size_t i = 0; i < BASE_ARRAY_LEN(keys); i++)
            BASE_GUARD(fhir_get_string(f->guideline, keys[i], false, &ignored));
    }
    return BASE_OK_RESULT;
}

/* Builders. Each returns a new reference or NULL (out of memory); json_pack's "o" consumes its argument,
 * also on failure, so a NULL anywhere propagates up as NULL without leaks. */

static json_t *fhir_coding(const fhir_code *c)
{
    return json_pack("{s:s,s:s,s:s}", "system", c->system, "code", c->code, "display", c->display);
}

static json_t *fhir_concept(json_t *coding)
{
    return json_pack("{s:[o]}", "coding", coding);
}

static json_t *fhir_identifier_ref(const char *system, const char *value)
{
    return json_pack("{s:{s:s,s:s}}", "identifier", "system", system, "value", value);
}

/* Appends {"type": type, "valueString": value} to `details` when value is set; false on failure. */
static bool fhir_add_detail(json_t *details, const char *type, const char *value)
{
    if (!value)
        return true;
    return json_array_append_new(details, json_pack("{s:s,s:s}", "type", type, "valueString", value)) == 0;
}

/* Sets obj[key] = value (consumed) unless `value` is an empty array; records a failure in *ok. */
static void fhir_set(json_t *obj, const char *key, json_t *value, bool *ok)
{
    if (value && json_is_array(value) && json_array_size(value) == 0) {
        json_decref(value);
        return;
    }
    if (json_object_set_new(obj, key, value) != 0)
        *ok = false;
}

static void fhir_append(json_t *arr, json_t *value, bool *ok)
{
    if (json_array_append_new(arr, value) != 0)
        *ok = false;
}

static json_t *fhir_agents(const fhir_entry *f)
{
    bool ok = true;
    json_t *agents = json_array();
    json_t *roles = json_array();
    for (size_t i = 0; f->roles && i < json_array_size(f->roles); i++) {
        const char *role = json_string_value(json_array_get(f->roles, i));
        fhir_append(roles, fhir_concept(json_pack("{s:s,s:s}", "system", "urn:alma:role", "code", role)),
                    &ok);
    }
    json_t *user = json_object();
    fhir_set(user, "role", roles, &ok);
    fhir_set(user, "who", fhir_identifier_ref("urn:alma:principal", f->principal_id), &ok);
    fhir_set(user, "requestor", json_true(), &ok);
    fhir_append(agents, user, &ok);
    if (f->service_identity) {
        static const fhir_code app = {FHIR_DCM, "110150", "Application"};
        fhir_append(agents,
                    json_pack("{s:o,s:o,s:b}", "type", fhir_concept(fhir_coding(&app)), "who",
                              fhir_identifier_ref("urn:alma:service-identity", f->service_identity),
                              "requestor", 0),
                    &ok);
    }
    if (!ok) {
        json_decref(agents);
        return NULL;
    }
    return agents;
}

static json_t *fhir_entities(const fhir_entry *f)
{
    static const fhir_code person = {FHIR_ENT, "1", "Person"};
    static const fhir_code system_object = {FHIR_ENT, "2", "System Object"};
    static const fhir_code role_patient = {FHIR_ROLE, "1", "Patient"};
    static const fhir_code role_resource = {FHIR_ROLE, "4", "Domain Resource"};
    static const fhir_code role_destination = {FHIR_ROLE, "16", "Data Destination"};
    bool ok = true;
    json_t *entities = json_array();

    if (f->patient_ref)
        fhir_append(entities,
                    json_pack("{s:o,s:o,s:o}", "what",
                              fhir_identifier_ref("urn:alma:patient-ref", f->patient_ref), "type",
                              fhir_coding(&person), "role", fhir_coding(&role_patient)),
                    &ok);

    if (f->resource_type || f->resource_id) {
        json_t *value = f->resource_type && f->resource_id
                            ? json_sprintf("%s/%s", f->resource_type, f->resource_id)
                            : json_string(f->resource_type ? f->resource_type : f->resource_id);
        fhir_append(entities,
                    json_pack("{s:{s:{s:s,s:o}},s:o,s:o}", "what", "identifier", "system",
                              "urn:alma:resource", "value", value, "type", fhir_coding(&system_object),
                              "role", fhir_coding(&role_resource)),
                    &ok);
    }

    if (f->recipient_name || f->recipient_address) {
        json_t *e = json_object();
        json_t *details = json_array();
        if (!fhir_add_detail(details, "address", f->recipient_address) ||
            !fhir_add_detail(details, "phi_description", f->phi_description) ||
            !fhir_add_detail(details, "basis", f->basis))
            ok = false;
        fhir_set(e, "role", fhir_coding(&role_destination), &ok);
        if (f->recipient_name)
            fhir_set(e, "name", json_string(f->recipient_name), &ok);
        fhir_set(e, "description", json_string("disclosure recipient"), &ok);
        fhir_set(e, "detail", details, &ok);
        fhir_append(entities, e, &ok);
    }

    if (f->guideline) {
        const char *s;
        json_t *e = json_object();
        json_t *details = json_array();
        static const char *const keys[] = {"engine_version", "bundle_version", "bundle_hash", "source"};
        for (size_t i = 0; i < BASE_ARRAY_LEN(keys); i++) {
            const json_t *v = json_object_get(f->guideline, keys[i]);
            s = v ? json_string_value(v) : NULL;
            if (!fhir_add_detail(details, keys[i], s))
                ok = false;
        }
        const json_t *id = json_object_get(f->guideline, "bundle_id");
        if (id)
            fhir_set(e, "what", fhir_identifier_ref("urn:alma:guideline-bundle", json_string_value(id)), &ok);
        fhir_set(e, "type", fhir_coding(&system_object), &ok);
        fhir_set(e, "role", fhir_coding(&role_resource), &ok);
        fhir_set(e, "name", json_string("guideline"), &ok);
        fhir_set(e, "detail", details, &ok);
        fhir_append(entities, e, &ok);
    }

    if (!ok) {
        json_decref(entities);
        return NULL;
    }
    return entities;
}

static json_t *fhir_build(const fhir_entry *f)
{
    fhir_action_map m;
    if (!fhir_map_action(f->action, &m))
        return NULL; /* unreachable: fhir_parse accepted only defined actions */
    const fhir_code *type = !f->patient_ref && m.type_without_patient ? m.type_without_patient : m.type;

    const char *outcome = NULL, *outcome_desc = NULL;
    switch (f->outcome) {
    case ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS:
        outcome = "0";
        break;
    case ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED:
        outcome = "4";
        outcome_desc = "denied";
        break;
    case ALMA__AUDIT__V1__OUTCOME__OUTCOME_ERROR:
        outcome = "8";
        outcome_desc = "error";
        break;
    default:
        break;
    }
    /* A failed login or a denied access failed whatever the caller wrote as its outcome. */
    if (f->action == ALMA__AUDIT__V1__ACTION__ACTION_LOGIN_FAILED && (!outcome || outcome[0] == '0')) {
        outcome = "4";
        outcome_desc = "login failed";
    } else if (f->action == ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED &&
               (!outcome || outcome[0] == '0')) {
        outcome = "4";
        outcome_desc = "access denied";
    }

    bool ok = true;
    json_t *res = json_object();
    fhir_set(res, "resourceType", json_string("AuditEvent"), &ok);
    fhir_set(res, "id", json_sprintf("audit-%" JSON_INTEGER_FORMAT, f->seq), &ok);
    fhir_set(res, "type", fhir_coding(type), &ok);
    if (m.subtype)
        fhir_set(res, "subtype", json_pack("[o]", fhir_coding(m.subtype)), &ok);
    fhir_set(res, "action", json_string(m.action), &ok);
    fhir_set(res, "recorded", json_string(f->time), &ok);
    if (outcome)
        fhir_set(res, "outcome", json_string(outcome), &ok);
    if (outcome_desc)
        fhir_set(res, "outcomeDesc", json_string(outcome_desc), &ok);
    const fhir_code *purpose = fhir_map_purpose((Alma__Common__V1__PurposeOfUse)f->purpose);
    if (purpose)
        fhir_set(res, "purposeOfEvent", json_pack("[o]", fhir_concept(fhir_coding(purpose))), &ok);
    fhir_set(res, "agent", fhir_agents(f), &ok);
    static const fhir_code app_server = {FHIR_SRC, "4", "Application Server"};
    fhir_set(res, "source",
             json_pack("{s:s,s:{s:s},s:[o]}", "site", f->tenant_id, "observer", "display",
                       f->service_identity ? f->service_identity : FHIR_AGENT, "type",
                       fhir_coding(&app_server)),
             &ok);
    fhir_set(res, "entity", fhir_entities(f), &ok);
    if (!ok) {
        json_decref(res);
        return NULL;
    }
    return res;
}

base_result audit_entry_to_fhir(const char *entry_json, size_t len, char **ret_json, size_t *ret_len)
{
    if (!entry_json || !ret_json || !ret_len)
        return base_fail(BASE_ERR_INVALID, "audit_entry_to_fhir: NULL argument");
    if (len > AUDIT_ENTRY_MAX)
        return base_fail(BASE_ERR_LIMIT, "entry is larger than %zu bytes", AUDIT_ENTRY_MAX);
    json_error_t jerr;
    /* The parser's error text may quote the input: it is not passed on. */
    BASE_CLEANUP(entry_json_decref) json_t *e = json_loadb(entry_json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!e)
        return base_fail(BASE_ERR_INVALID, "entry is not valid JSON");
    fhir_entry f;
    BASE_GUARD(fhir_parse(e, &f));
    BASE_CLEANUP(entry_json_decref) json_t *res = fhir_build(&f);
    if (!res)
        return base_fail(BASE_ERR_NOMEM, "out of memory building the FHIR AuditEvent");
    char *out = json_dumps(res, FHIR_DUMP_FLAGS);
    if (!out)
        return base_fail(BASE_ERR_NOMEM, "out of memory building the FHIR AuditEvent");
    *ret_json = out;
    *ret_len = strlen(out);
    return BASE_OK_RESULT;
}
