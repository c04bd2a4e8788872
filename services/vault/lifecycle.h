/* The vault's record lifecycle (migrations/0002_lifecycle.sql): retention periods, legal holds, §164.526
 * amendment requests, and crypto-shredding with signed destruction certificates. The RPC handlers call
 * this after authorising the caller; it decides *whether* something may happen, store.c does it.
 *
 *   retention   years after a record's last version, per (tenant, category); a tenant without its own
 *               value gets the built-in default (10 years, see the migration for why).
 *   legal hold  while one is unreleased, nothing of the patient is destroyed. Holds are never deleted.
 *   amendment   RECEIVED (due in 60 days) -> EXTENDED (once, before the due date: +30 days) -> ACCEPTED
 *               (a record version naming the request exists; amended_version is the latest such) or DENIED
 *               (with a §164.526(a)(2) basis). Decisions are final; every status change is also appended to
 *               amendment_events with its actor.
 *   destroy     refused under a legal hold or before every category's retention has run out; otherwise the
 *               patient's data keys are destroyed (vault_store_shred_keys), then the rows
 *               (vault_store_shred_rows), and a certificate is signed and stored. A call interrupted at any
 *               point can be repeated and completes the same destruction (table `destructions` remembers what
 *               the store reported); a repeat after completion returns the stored certificate.
 *   offboard    the tenant's key-encryption keys and index key destroyed (after its export), certified.
 *
 * Certificates: `statement` is canonical JSON (jansson, sorted keys, compact, ASCII) holding references,
 * counts, key versions and RFC 3339 UTC times (microseconds), never PHI; `signature` is its Ed25519
 * signature by the vault's certificate key, `verifier_key` that key's public half ("PUBLIC KEY" PEM). The
 * caller loads the key (acrypto_ed25519_private_from_pem_file) and keeps it for the process's life.
 *
 * Conventions (common/base/result.h): every fallible function returns a base_result; ret_* outputs are
 * written only on success; messages name fields, states and categories, never a value a caller sent. All
 * times are microseconds since the epoch (0: none), taken from the database clock. Thread-safe: state
 * lives in Postgres (the pool's search_path is the vault schema, as for the store). */
#ifndef ALMA_VAULT_LIFECYCLE_H
#define ALMA_VAULT_LIFECYCLE_H

#include "base/result.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VAULT_TENANT_BUF               64  /* [a-z0-9][a-z0-9-]{1,62} + NUL */
#define VAULT_REASON_MAX               64  /* reason codes: 1..64 of [a-z0-9_] */
#define VAULT_RETENTION_YEARS_MAX      100 /* retention years: 0..100 */
#define VAULT_RETENTION_DEFAULT        10  /* the built-in default of every category (migration 0002) */
#define VAULT_HOLDS_LIST_MAX           100 /* legal holds returned per patient */
#define VAULT_AMENDMENTS_LIST_MAX      500 /* amendment requests per list, oldest first */
#define VAULT_AMENDMENT_DUE_DAYS       60
#define VAULT_AMENDMENT_EXTENSION_DAYS 30

/* alma.vault.v1.AmendmentStatus and DenialBasis. */
enum {
    VAULT_AMENDMENT_RECEIVED = 1,
    VAULT_AMENDMENT_EXTENDED = 2,
    VAULT_AMENDMENT_ACCEPTED = 3,
    VAULT_AMENDMENT_DENIED = 4,
};
enum {
    VAULT_DENIAL_NOT_CREATED_BY_ENTITY = 1,
    VAULT_DENIAL_NOT_IN_DESIGNATED_RECORD_SET = 2,
    VAULT_DENIAL_NOT_AVAILABLE_FOR_ACCESS = 3,
    VAULT_DENIAL_ACCURATE_AND_COMPLETE = 4,
};

/* ---- retention ------------------------------------------------------------------------------------- */

typedef struct vault_retention {
    int category;    /* 1..VAULT_CATEGORY_MAX */
    uint32_t years;  /* 0..VAULT_RETENTION_YEARS_MAX */
    bool is_default; /* the built-in default: the tenant has set nothing for the category */
    int64_t updated_us;
    char updated_by[VAULT_ACTOR_MAX + 1];
} vault_retention;

/* The tenant's retention for a category (replacing an earlier value); ret may be NULL. */
BASE_MUST_USE base_result vault_retention_set(db_pool *pool, const char *tenant_id, int category,
                                              uint32_t years, const char *actor, vault_retention *ret);
/* The tenant's value, or the built-in default. */
BASE_MUST_USE base_result vault_retention_get(db_pool *pool, const char *tenant_id, int category,
                                              vault_retention *ret);

/* ---- legal holds ----------------------------------------------------------------------------------- */

typedef struct vault_legal_hold {
    char hold_id[VAULT_ID_BUF]; /* "lh_" + 32 hex */
    char tenant_id[VAULT_TENANT_BUF];
    char patient_ref[VAULT_ID_BUF];
    char reason_code[VAULT_REASON_MAX + 1];
    int64_t placed_us;
    char placed_by[VAULT_ACTOR_MAX + 1];
    int64_t released_us; /* 0: in force */
    char released_by[VAULT_ACTOR_MAX + 1];
} vault_legal_hold;

/* A new hold on a patient of the tenant (BASE_ERR_NOT_FOUND when the tenant has no such patient record;
 * BASE_ERR_CONFLICT "patient destruction in progress" while a destruction that began is unfinished). */
BASE_MUST_USE base_result vault_hold_place(vault_store *store, db_pool *pool, const char *tenant_id,
                                           const char *patient_ref, const char *reason_code,
                                           const char *actor, vault_legal_hold *ret);
/* Release a hold (BASE_ERR_NOT_FOUND: no such hold in the tenant; BASE_ERR_CONFLICT: already released). */
BASE_MUST_USE base_result vault_hold_release(db_pool *pool, const char *tenant_id, const char *hold_id,
                                             const char *actor, vault_legal_hold *ret);
/* A patient's holds, oldest first, at most VAULT_HOLDS_LIST_MAX; released ones only if include_released.
 * *ret is malloc'd (free(); NULL when *ret_n is 0). */
BASE_MUST_USE base_result vault_holds_list(db_pool *pool, const char *tenant_id, const char *patient_ref,
                                           bool include_released, vault_legal_hold **ret, size_t *ret_n);

/* ---- amendment requests (§164.526) ----------------------------------------------------------------- */

typedef struct vault_amendment {
    char request_id[VAULT_ID_BUF]; /* "am_" + 32 hex */
    char tenant_id[VAULT_TENANT_BUF];
    char patient_ref[VAULT_ID_BUF];
    char record_id[VAULT_ID_BUF];
    int status; /* VAULT_AMENDMENT_* */
    int64_t received_us;
    int64_t due_us;      /* received + 60 days; + 30 once extended */
    int64_t extended_us; /* 0: not extended */
    int64_t decided_us;  /* 0: open */
    char decided_by[VAULT_ACTOR_MAX + 1];
    uint32_t amended_version; /* ACCEPTED: the version written for the request */
    int denial_basis;         /* DENIED: VAULT_DENIAL_* */
} vault_amendment;

/* A request to amend record_id, which must be a record of the patient in the tenant (vault_store_head;
 * BASE_ERR_NOT_FOUND otherwise). Status RECEIVED, due in 60 days. */
BASE_MUST_USE base_result vault_amendment_create(vault_store *store, db_pool *pool, const char *tenant_id,
                                                 const char *patient_ref, const char *record_id,
                                                 const char *actor, vault_amendment *ret);
/* Move a request to EXTENDED, ACCEPTED or DENIED (denial_basis: with DENIED only, else 0). BASE_ERR_INVALID
 * for another status or a basis missing or misplaced; BASE_ERR_NOT_FOUND for no such request in the
 * tenant; BASE_ERR_CONFLICT "amendment request already decided", "amendment request already extended",
 * "amendment request is past its due date" (extending), "no record version written for the amendment
 * request" (accepting). */
BASE_MUST_USE base_result vault_amendment_decide(db_pool *pool, const char *tenant_id, const char *request_id,
                                                 int status, int denial_basis, const char *actor,
                                                 vault_amendment *ret);
BASE_MUST_USE base_result vault_amendment_get(db_pool *pool, const char *tenant_id, const char *request_id,
                                              vault_amendment *ret);
/* patient_ref non-empty: every request about the patient; NULL or "": every open (RECEIVED or EXTENDED)
 * request of the tenant. Oldest first, at most VAULT_AMENDMENTS_LIST_MAX. *ret malloc'd (free()). */
BASE_MUST_USE base_result vault_amendments_list(db_pool *pool, const char *tenant_id, const char *patient_ref,
                                                vault_amendment **ret, size_t *ret_n);
/* One status change of a request, oldest first (for tests and the audit trail). */
typedef struct vault_amendment_event {
    int status;
    int64_t at_us;
    char actor[VAULT_ACTOR_MAX + 1];
} vault_amendment_event;
BASE_MUST_USE base_result vault_amendment_events(db_pool *pool, const char *tenant_id, const char *request_id,
                                                 vault_amendment_event ret[4], size_t *ret_n);

/* ---- destruction and certificates ------------------------------------------------------------------ */

#define VAULT_DESTRUCTION_TYPE   "alma.vault.destruction.v1"
#define VAULT_OFFBOARDING_TYPE   "alma.vault.offboarding.v1"
#define VAULT_DESTRUCTION_METHOD "crypto-shredding: AES-256-GCM data keys destroyed, then rows deleted"

typedef struct vault_certificate {
    char certificate_id[VAULT_ID_BUF]; /* "dc_" + 32 hex */
    char tenant_id[VAULT_TENANT_BUF];
    char patient_ref[VAULT_ID_BUF]; /* "" for a tenant's offboarding */
    int64_t destroyed_us;           /* a patient: when its rows were deleted; a tenant: when its keys were */
    uint32_t records;
    uint32_t versions;
    char *statement; /* malloc'd canonical JSON, NUL-terminated */
    size_t statement_len;
    uint8_t signature[ACRYPTO_ED25519_SIG_LEN];
    char *verifier_key; /* malloc'd "PUBLIC KEY" PEM */
} vault_certificate;
void vault_certificate_clear(vault_certificate *c); /* frees statement and verifier_key; NULL ok */

/* Destroy everything the vault holds about a patient and return the signed certificate. signer: the
 * vault's certificate key (with its private half). reason_code: 1..64 of [a-z0-9_].
 *   BASE_ERR_CONFLICT "legal hold in force"
 *   BASE_ERR_CONFLICT "retention period not over for <category>" (the first such category by number)
 *   BASE_ERR_NOT_FOUND the tenant has no rows of the patient and no destruction of it is on record
 * Statement: {"type":"alma.vault.destruction.v1","certificate_id","tenant_id","patient_ref","reason_code",
 * "actor","keys_destroyed_at","rows_deleted_at","records","versions","record_ids":[sorted],
 * "kek_versions":[min,max],"method"}. */
BASE_MUST_USE base_result vault_lifecycle_destroy_patient(vault_store *store, db_pool *pool,
                                                          const acrypto_ed25519_key *signer,
                                                          const char *tenant_id, const char *patient_ref,
                                                          const char *reason_code, const char *actor,
                                                          vault_certificate *ret);

/* Offboarding, after the tenant's PHI was exported (export_sha256_hex: 64 hex digits of the export's
 * SHA-256; exported_patients: how many patients it held): destroy the tenant's keys
 * (vault_store_destroy_tenant_keys) and sign a tenant-scope certificate; repeated, it returns the stored
 * one. Statement: {"type":"alma.vault.offboarding.v1","certificate_id","tenant_id","actor",
 * "keys_destroyed_at","records","versions","export_sha256","patients_exported","kek_versions_destroyed",
 * "method":"crypto-shredding: tenant key-encryption keys and index key destroyed"}. records / versions:
 * the record versions (and distinct records) left unreadable. */
#define VAULT_OFFBOARDING_METHOD "crypto-shredding: tenant key-encryption keys and index key destroyed"
BASE_MUST_USE base_result vault_lifecycle_offboard_tenant(vault_store *store, db_pool *pool,
                                                          const acrypto_ed25519_key *signer,
                                                          const char *tenant_id, const char *actor,
                                                          const char *export_sha256_hex,
                                                          uint32_t exported_patients, vault_certificate *ret);

/* A stored certificate (BASE_ERR_NOT_FOUND: none with that id in the tenant). */
BASE_MUST_USE base_result vault_certificate_get(db_pool *pool, const char *tenant_id,
                                                const char *certificate_id, vault_certificate *ret);

/* BASE_OK when signature is a valid Ed25519 signature of the statement by verifier_key_pem ("PUBLIC KEY"
 * PEM); BASE_ERR_CRYPTO otherwise (BASE_ERR_INVALID for an unreadable key). For tests and tools. */
BASE_MUST_USE base_result vault_certificate_verify(const char *statement, size_t statement_len,
                                                   const uint8_t *signature, size_t signature_len,
                                                   const char *verifier_key_pem);

#endif
