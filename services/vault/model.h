/* The vault's data model over the protobuf-c messages of proto/vault/v1/vault.proto: validation, the
 * category of an item, the per-category plaintext parts the store seals, blind-index normalisation, and a
 * patient's age. Pure functions: no I/O, no logging, no global state; thread-safe.
 *
 * Validation (vault_validate_*) fails with BASE_ERR_INVALID and a message "<field path>: <rule>", e.g.
 *     "patient.demographics.birth_date: not a calendar date YYYY-MM-DD"
 *     "item.observation.unit: required with a quantity"
 *     "patient.coverage[2].member_id: 1..32 of [A-Za-z0-9-]"
 * The message names the field (indexes of repeated fields included) and the rule, and never contains the
 * value or any part of it. Every string must be valid UTF-8 without control characters (C0, DEL, C1); note
 * text may also hold '\n' and '\t'.
 *
 * Dates are "YYYY-MM-DD", real calendar dates (leap years included), from 1900-01-01 to the UTC day of
 * now_s + 1 day. Exception (documented choice): dates that may legitimately lie ahead, a coverage's
 * start_date and end_date and a medication's end_date, may be up to VAULT_PLANNED_DATE_DAYS after today.
 * An end date is never before its start date.
 *
 * Parts: a patient record is up to four parts (DEMOGRAPHIC: Demographics, CONTACT: Contact, IDENTIFIER:
 * Identifiers, FINANCIAL: a Patient message holding only `coverage`), each the protobuf serialisation of
 * that message; an item is one part (the whole Item) in the item's category. Unpacking rebuilds a message
 * from whichever parts a vault_record holds. */
#ifndef ALMA_VAULT_MODEL_H
#define ALMA_VAULT_MODEL_H

#include "base/result.h"
#include "store.h"
#include "vault/v1/vault.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits of the model (the proto comments). */
#define VAULT_NAME_MAX          100 /* family name, each given name, address line, city, plan name */
#define VAULT_GIVEN_NAMES_MAX   5
#define VAULT_ADDRESS_LINES_MAX 4
#define VAULT_EMAIL_MAX         254
#define VAULT_MRN_MAX           32 /* also member id and group number */
#define VAULT_PAYER_ID_MAX      64
#define VAULT_COVERAGE_MAX      8
#define VAULT_CODE_MAX          32  /* Code.code */
#define VAULT_DISPLAY_MAX       200 /* Code.display */
#define VAULT_TITLE_MAX         200 /* medication name, note and document titles */
#define VAULT_DOSE_MAX          100
#define VAULT_OBS_TEXT_MAX      500
#define VAULT_UNIT_MAX          32
#define VAULT_NOTE_TEXT_MAX     65536
#define VAULT_DOCUMENT_MAX      (1024u * 1024u) /* Document.content, bytes */
#define VAULT_PLANNED_DATE_DAYS 3660            /* coverage dates and medication end: up to ~10 years ahead */
#define VAULT_DATE_LEN          10              /* "YYYY-MM-DD" */

/* The code systems of Code.system. */
#define VAULT_SYSTEM_ICD10CM "http://hl7.org/fhir/sid/icd-10-cm"
#define VAULT_SYSTEM_LOINC   "http://loinc.org"
#define VAULT_SYSTEM_RXNORM  "http://www.nlm.nih.gov/research/umls/rxnorm"
#define VAULT_SYSTEM_SNOMED  "http://snomed.info/sct"

/* ---- Validation --------------------------------------------------------------------------------------- */

/* The whole patient (CreatePatient / UpdatePatient): demographics and identifiers required, contact
 * optional, at most VAULT_COVERAGE_MAX coverages. Field paths start with "patient.". */
BASE_MUST_USE base_result vault_validate_patient(const Alma__Vault__V1__Patient *p, int64_t now_s);

/* A clinical item (PutItem): exactly one body; its code system must fit the kind (problem: ICD-10-CM or
 * SNOMED CT; observation: LOINC; medication: RxNorm, optional); codes are checked against the system's
 * format including LOINC's mod-10 and SNOMED CT's Verhoeff check digits. Field paths start with "item.". */
BASE_MUST_USE base_result vault_validate_item(const Alma__Vault__V1__Item *item, int64_t now_s);

/* ---- Classification ----------------------------------------------------------------------------------- */

/* ALMA__VAULT__V1__CATEGORY__CATEGORY_SENSITIVE_CLINICAL when item->sensitive is set or the item is a
 * problem coded in ICD-10-CM chapter F (F01-F99, mental and behavioural disorders); otherwise
 * CATEGORY_CLINICAL. Only ICD-10-CM codes are classified by code; SNOMED CT codes are not. NULL: CLINICAL. */
int vault_item_category(const Alma__Vault__V1__Item *item);

/* The RecordKind of the item's body (RECORD_KIND_PROBLEM .. RECORD_KIND_DOCUMENT), or
 * RECORD_KIND_UNSPECIFIED (0) when no body is set or item is NULL. */
int vault_item_kind(const Alma__Vault__V1__Item *item);

/* ---- Parts -------------------------------------------------------------------------------------------- */

/* Plaintext per category, index = category (1..VAULT_CATEGORY_MAX); data[c] NULL = absent. Every present
 * part is malloc'd and at least one byte long. `categories` has VAULT_CATEGORY_BIT(c) for each present part.
 * The buffers are PHI: vault_parts_free wipes them. Plugs into vault_put.parts / part_len directly. */
typedef struct vault_parts {
    uint8_t *data[VAULT_CATEGORY_MAX + 1];
    size_t len[VAULT_CATEGORY_MAX + 1];
    unsigned categories;
} vault_parts;

/* Wipe and free every part and zero the struct; accepts NULL and a zeroed or already freed struct. */
void vault_parts_free(vault_parts *parts);

/* A (validated) patient as parts: DEMOGRAPHIC (Demographics) and IDENTIFIER (Identifiers) when set,
 * CONTACT (Contact) when set and not empty, FINANCIAL (a Patient holding only its coverage list) when there
 * is at least one coverage. BASE_ERR_INVALID when neither demographics nor identifiers are set,
 * BASE_ERR_LIMIT when a part exceeds VAULT_PART_MAX. *ret is written only on success. */
BASE_MUST_USE base_result vault_patient_pack(const Alma__Vault__V1__Patient *p, vault_parts *ret);

/* A (validated) item as one part in vault_item_category(item): the serialised Item. BASE_ERR_INVALID when
 * no body is set, BASE_ERR_LIMIT above VAULT_PART_MAX. */
BASE_MUST_USE base_result vault_item_pack(const Alma__Vault__V1__Item *item, vault_parts *ret);

/* A Patient holding exactly the categories present in r->parts (DEMOGRAPHIC, CONTACT, IDENTIFIER,
 * FINANCIAL; others ignored), allocated with `alloc` (NULL: malloc) and freed with
 * alma__vault__v1__patient__free_unpacked(*ret, alloc). *ret is NULL (and the result OK) when none of the
 * four is present. r->kind must be RECORD_KIND_PATIENT (else BASE_ERR_INTERNAL). A part that does not parse
 * as its message: BASE_ERR_CRYPTO "record failed its integrity check" (parts are authenticated, so this is
 * corruption or a bug). */
BASE_MUST_USE base_result vault_patient_unpack(const vault_record *r, ProtobufCAllocator *alloc,
                                               Alma__Vault__V1__Patient **ret);

/* The Item of an item record from its CLINICAL or SENSITIVE_CLINICAL part, or NULL (result OK) when neither
 * is present (the view withheld it). Both present, a part that does not parse, or a body whose kind differs
 * from r->kind: BASE_ERR_CRYPTO "record failed its integrity check". Free with
 * alma__vault__v1__item__free_unpacked(*ret, alloc). */
BASE_MUST_USE base_result vault_item_unpack(const vault_record *r, ProtobufCAllocator *alloc,
                                            Alma__Vault__V1__Item **ret);

/* ---- Blind-index values ------------------------------------------------------------------------------- */

/* Normalisation (Put and FindPatients use the same functions, so their bytes agree):
 *   VAULT_BLIND_MRN        the MRN, ASCII letters upper-cased, ' ' and '-' removed ("ab-12 3" -> "AB123");
 *   VAULT_BLIND_MEMBER_ID  each coverage's member id under the same rule, NOT prefixed by the payer:
 *                          FindPatients searches by member id alone (the request has no payer), so the value
 *                          must not depend on the payer; the same member id at two payers finds both
 *                          patients (at most VAULT_FIND_MAX refs), which the caller tells apart. A patient's
 *                          duplicate member ids give one value;
 *   VAULT_BLIND_NAME_DOB   family name 0x1f first given name 0x1f birth date, where each name has ASCII
 *                          letters lower-cased, other ASCII bytes (spaces, '-', '\'', '.', digits) removed,
 *                          and bytes >= 0x80 (non-ASCII UTF-8) kept as they are. Unicode normalisation (NFC)
 *                          and non-ASCII case folding are out of scope: "Muller" and "Müller" differ.
 * The values are PHI-derived: wipe a vault_blind_buf with vault_blind_buf_wipe when done. Both functions
 * below build the buffer in place (it is 8 KiB: keep it off small stacks) and leave it zeroed on failure.
 */
typedef struct vault_blind_buf {
    vault_blind values[VAULT_BLIND_MAX]; /* values[i].value points into bytes[i] */
    size_t count;
    char bytes[VAULT_BLIND_MAX][VAULT_BLIND_VALUE_MAX];
} vault_blind_buf;

/* Zero the whole buffer (it holds no heap memory). NULL ok. */
void vault_blind_buf_wipe(vault_blind_buf *b);

/* The blind-index values of a (validated) patient: MRN (when identifiers are set), each distinct member id,
 * name + birth date (when demographics with a given name and a calendar birth date are set).
 * BASE_ERR_INVALID when an MRN or member id normalises to nothing. Plugs into vault_put.blind/blind_count. */
BASE_MUST_USE base_result vault_blind_values(const Alma__Vault__V1__Patient *p, vault_blind_buf *ret);

/* The one value (ret->count == 1, in values[0]) a FindPatients request searches for: its mrn, member_id or
 * name_and_birth_date, validated (BASE_ERR_INVALID naming "mrn", "member_id",
 * "name_and_birth_date.family_name", ..., or "by" when none is set) and normalised exactly as
 * vault_blind_values does. An MRN or member id query may also contain spaces (they are removed). */
BASE_MUST_USE base_result vault_blind_for_query(const Alma__Vault__V1__FindPatientsRequest *req,
                                                vault_blind_buf *ret);

/* ---- Dates -------------------------------------------------------------------------------------------- */

/* Whole years from birth_date ("YYYY-MM-DD") to the UTC day of now_s: the count goes up on the birthday;
 * someone born on 29 February has the birthday on 1 March in common years. 0 when the birth date is after
 * that day. BASE_ERR_INVALID "birth_date: not a calendar date YYYY-MM-DD" otherwise (a stored record never
 * has one: validated on write). */
BASE_MUST_USE base_result vault_age_years(const char *birth_date, int64_t now_s, uint32_t *ret_years);

/* True when s is a calendar date "YYYY-MM-DD" (year 1900..9999, Gregorian leap years); no range check
 * against today. */
bool vault_is_calendar_date(const char *s);

#endif
