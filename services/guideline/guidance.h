/* A stored review as the partner gateway exposes it (FHIR-CDS.md): a FHIR R4 GuidanceResponse and a CDS Hooks
 * 2.0 card. Pure: no database, no RPC, no logging, no global state; part of alma_guideline_core.
 *
 * Input: the engine's canonical recommendation JSON (engine.h, gl_evaluate; BUNDLE-FORMAT.md "The
 * recommendation") and the review's identifying fields (gl_fhir_review). Both are checked before anything is
 * built: the identifiers against their formats, the recommendation against the shape the engine writes, and
 * the two against each other (engine, bundle id/version/hash and input hash must agree). A failure is
 * BASE_ERR_INVALID (BASE_ERR_LIMIT for a recommendation over GL_FHIR_MAX_RECOMMENDATION) whose message names
 * the field and the rule it breaks, never a value; nothing is emitted.
 *
 * Output: compact JSON, malloc'd and NUL-terminated (free()), in canonical form (BUNDLE-FORMAT.md,
 * "Canonical JSON": keys sorted, numbers in one spelling), so the same input gives the same bytes. */
#ifndef ALMA_GUIDELINE_GUIDANCE_H
#define ALMA_GUIDELINE_GUIDANCE_H

#include "base/result.h"

#include <stddef.h>
#include <stdint.h>

#define GL_FHIR_MAX_RECOMMENDATION (1024 * 1024) /* bytes of the recommendation JSON */
#define GL_FHIR_MAX_REASON_CODES   32            /* GL_INPUT_MAX_REASON_CODES */
#define GL_FHIR_MAX_OUTPUT         (4 * 1024 * 1024)
#define GL_CDS_SUMMARY_MAX         139 /* bytes of a card's summary: CDS Hooks wants fewer than 140 chars */

/* Identifier systems (FHIR-CDS.md). The referral's is scoped by tenant: referral ids are the caller's. */
#define GL_FHIR_REVIEW_SYSTEM          "urn:alma:review"
#define GL_FHIR_REFERRAL_SYSTEM_PREFIX "urn:alma:tenant:"           /* + tenant + ":referral" */
#define GL_FHIR_MODULE_PREFIX          "urn:alma:guideline-bundle:" /* + bundle_id + "|" + version */
#define GL_FHIR_ENGINE_SYSTEM          "urn:alma:guideline-engine"
#define GL_FHIR_DATA_SYSTEM            "urn:alma:guideline-data"
#define GL_FHIR_PATHWAY_SYSTEM         "urn:alma:guideline-pathway"
#define GL_FHIR_ICD10CM_SYSTEM         "http://hl7.org/fhir/sid/icd-10-cm"
#define GL_FHIR_UCUM_SYSTEM            "http://unitsofmeasure.org"
#define GL_CDS_OVERRIDE_SYSTEM         "urn:alma:override-reason"

/* The stored review's identifying fields (store.h's gs_review, proto Review), borrowed. */
typedef struct gl_fhir_review {
    const char *review_id;      /* "rv_" + 32 lowercase hex */
    const char *tenant_id;      /* [a-z0-9][a-z0-9-]{1,62} */
    const char *referral_id;    /* 1..64 of [A-Za-z0-9_-] */
    const char *patient_ref;    /* "pt_" + 32 lowercase hex (pseudonymous) */
    const char *clinician_id;   /* who asked; checked but not emitted (FHIR-CDS.md) */
    int64_t created_us;         /* create time, microseconds since the epoch (1970..9999) */
    const char *engine_version; /* must equal the recommendation's engine */
    const char *bundle_id;      /* must equal the recommendation's bundle.id ... */
    const char *bundle_version; /* ... bundle.version ... */
    const char *bundle_hash;    /* ... and bundle.hash (64 lowercase hex) */
    const char *input_hash;     /* must equal the recommendation's input_hash (64 lowercase hex) */
    /* Optional, from the referral input: the reason codes (ICD-10-CM, 0..GL_FHIR_MAX_REASON_CODES; NULL
     * when none) and the target specialty (NULL or "": the card names the pathway instead). */
    const char *const *reason_codes;
    size_t n_reason_codes;
    const char *specialty;
} gl_fhir_review;

/* The FHIR R4 GuidanceResponse of a review (FHIR-CDS.md, "Review → GuidanceResponse"). */
BASE_MUST_USE base_result gl_fhir_guidance_response(const gl_fhir_review *rv, const char *recommendation,
                                                    size_t len, char **ret_json, size_t *ret_len);

/* The CDS Hooks 2.0 card of a review (FHIR-CDS.md, "Review → CDS card"). */
BASE_MUST_USE base_result gl_cds_card(const gl_fhir_review *rv, const char *recommendation, size_t len,
                                      char **ret_json, size_t *ret_len);

/* The card uuid of a review id, and back (FHIR-CDS.md, "CDS feedback → RecordDecision"): the review id's 32
 * hex digits as 8-4-4-4-12. ret_uuid: 37 bytes; ret_review_id: 36 bytes. Written only on success. */
BASE_MUST_USE base_result gl_cds_card_uuid(const char *review_id, char ret_uuid[37]);
BASE_MUST_USE base_result gl_cds_review_id(const char *card_uuid, char ret_review_id[36]);

/* An OverrideReason code of the card's overrideReasons ("CLINICAL_JUDGEMENT", ...) as the proto enum
 * value (1..6); 0 when it is not one. */
int gl_cds_override_reason(const char *code);

#endif
