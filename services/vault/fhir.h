/* The §164.524 right-of-access export: everything the vault holds about one patient as a single FHIR R4
 * Bundle of type "collection", as deterministic JSON text (the same input gives the same bytes).
 *
 * Pure: no I/O, no clock, no logging. The caller (ExportPatient) reads the records, decrypts them under the
 * full view and passes them here; the text is then streamed to the requester in ExportChunk messages.
 *
 * Mapping (vault -> FHIR R4):
 *   Bundle       id = fhir_id(bundle_id), type "collection", timestamp = now_us (an instant). Entries in this
 *                order: the Patient, its Coverages (in the patient's order), the items (in the caller's
 *                order). Every entry's fullUrl is VAULT_FHIR_BASE_URL "/<Type>/<id>" (a RESTful URL under a
 *                reserved host that never resolves), so the relative references below ("Patient/<id>")
 *                resolve inside the Bundle by FHIR's rules (R4 Bundle, "Resolving references in Bundles").
 *   Patient      id = fhir_id(patient_ref); meta.versionId = patient_version, meta.lastUpdated =
 *                patient_updated_us (each omitted when 0); identifier[] = the MRN (type v2-0203 MR, system
 *                "urn:alma:tenant:<tenant_id>:mrn") and {"urn:alma:patient-ref", patient_ref}; name[0] (use
 *                official) family/given; gender female/male/other/unknown (omitted when unspecified);
 *                birthDate; address[0] line/city/state/postalCode/country ("US" when the address has content
 *                but no country: the proto's rule); telecom[] phone, then email.
 *   Coverage     one per Patient.coverage, id = "<patient id>.coverage.<n>" (n from 1; a mapped record id
 *                never holds '.', so it cannot collide); meta as the Patient's (it is part of that record
 *                version); status "cancelled" when end_date is before now_us's UTC date, else "active";
 *                beneficiary Patient/<id>; payor[0].identifier {"urn:alma:payer-id", payer_id};
 *                subscriberId = member_id; period start/end; class[] "group" (value group_number) and "plan"
 *                (value plan_name), typed with terminology.hl7.org's coverage-class.
 *   Problem      Condition: clinicalStatus (condition-clinical active/resolved/inactive; omitted when
 *                unspecified), category problem-list-item, code, onsetDateTime, subject.
 *   Observation  Observation: status "final", code, effectiveDateTime, subject, and valueQuantity {value,
 *                unit, system "http://unitsofmeasure.org", code = unit} or valueString.
 *   Medication   MedicationStatement: status active/completed/stopped ("unknown" when unspecified: R4
 *                requires one), medicationCodeableConcept {coding (RxNorm), text = name}, dosage[0].text =
 *                dose, effectivePeriod start/end, subject.
 *   Note and     DocumentReference: status "current", category {"urn:alma:record-kind", "note" or
 *   Document     "document"}, subject, date = the item's date at "T00:00:00Z" (an instant needs a time),
 *                description = title, content[0].attachment {contentType ("text/plain; charset=utf-8" for
 *                a note), data (base64), size, title, creation = date}.
 *   Every item   id = fhir_id(record_id); identifier[0] {"urn:alma:record-id", record_id}; meta.versionId and
 *                meta.lastUpdated as for the Patient. Sensitive items (Item.sensitive, and problems coded
 *                ICD-10-CM F01-F99 whatever the flag says, as the server classifies them) carry
 *                meta.security [{v3-Confidentiality "R" restricted}].
 *
 * FHIR ids: record ids and patient refs ("it_"/"pt_" + hex) contain '_', which FHIR ids
 * ([A-Za-z0-9\-.]{1,64}) do not allow. fhir_id() maps every '_' to '-'. Inputs (patient_ref, record_id,
 * bundle_id) must be 1..48 of [A-Za-z0-9_], so the mapping is reversible (map '-' back to '_'), and the
 * original value is also kept in each resource's identifier.
 *
 * Empty strings, absent sub-messages and unset enums are omitted, never written as "" or {}. Values are
 * checked only as far as FHIR's own datatypes require (dates are calendar dates "YYYY-MM-DD", codes and
 * units have no leading, trailing or doubled whitespace, systems no whitespace, text is UTF-8, quantities
 * finite); the vault's model validated everything else when it was written. JSON numbers (quantities) are
 * written with 15 significant digits, so a value entered with at most 15 prints as entered. */
#ifndef ALMA_VAULT_FHIR_H
#define ALMA_VAULT_FHIR_H

#include "base/result.h"
#include "vault/v1/vault.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define VAULT_FHIR_BASE_URL     "https://alma.invalid/fhir"
#define VAULT_FHIR_ID_MAX       48 /* bytes of a patient_ref, record_id or bundle_id */
#define VAULT_FHIR_MAX_ITEMS    50000
#define VAULT_FHIR_MAX_COVERAGE 64
#define VAULT_FHIR_MAX_BYTES    ((size_t)256 * 1024 * 1024) /* of the JSON text */

typedef struct vault_fhir_item {
    const char *record_id; /* "it_" + 32 hex */
    uint32_t version;      /* 0: not given (meta.versionId omitted) */
    int64_t updated_us;    /* microseconds since the epoch; 0: not given (meta.lastUpdated omitted) */
    const Alma__Vault__V1__Item *item;
} vault_fhir_item;

typedef struct vault_fhir_input {
    const char *tenant_id;   /* 1..64 of [A-Za-z0-9._-] (it is part of the MRN's system URI) */
    const char *patient_ref; /* "pt_" + 32 hex */
    uint32_t patient_version;
    int64_t patient_updated_us;
    const Alma__Vault__V1__Patient *patient;
    const vault_fhir_item *items; /* may be NULL when item_count is 0 */
    size_t item_count;
    int64_t now_us;        /* the export's time (> 0): Bundle.timestamp, and "today" for coverage status */
    const char *bundle_id; /* the Bundle's id before fhir_id() */
} vault_fhir_input;

/* The Bundle's JSON text (compact, keys sorted, UTF-8, NUL-terminated; *ret_len excludes the NUL; free() it)
 * and the number of resources in it (ret_resources may be NULL). Errors: BASE_ERR_INVALID for missing or
 * malformed input, BASE_ERR_LIMIT for more than VAULT_FHIR_MAX_ITEMS items or VAULT_FHIR_MAX_COVERAGE
 * coverages or a text longer than VAULT_FHIR_MAX_BYTES, BASE_ERR_NOMEM. Messages name the item by its
 * index and the field, never a value. Outputs are written only on success. */
BASE_MUST_USE base_result vault_fhir_bundle(const vault_fhir_input *in, char **ret_json, size_t *ret_len,
                                            uint32_t *ret_resources);

#endif
