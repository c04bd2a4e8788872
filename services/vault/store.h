/* The vault's records and keys in Postgres (migrations/0001_records.sql). Envelope encryption happens here,
 * so nothing above this file handles a data key and nothing below it (Postgres) sees plaintext:
 *
 *   put:  a fresh 32-byte data key (DEK) per record version; each category's plaintext (serialised by
 *         model.c) sealed with AES-256-GCM under the DEK, associated data
 *             "alma-vault-part|v1|" tenant "|" record_id "|" version "|" category (decimal)
 *         the DEK wrapped with the tenant's current KEK version k, associated data
 *             "alma-vault-dek|v1|" tenant "|" record_id "|" version "|" k
 *         blind-index digests HMAC-SHA256(index key, kind byte || 0x00 || normalised value); one INSERT of
 *         the row (and of its blind-index rows) in one statement, with the version check.
 *   KEK:  32 random bytes per (tenant, version), wrapped by the key provider with associated data
 *             "alma-vault-kek|v1|" tenant "|" version
 *         and the index key with "alma-vault-index|v1|" tenant. Unwrapped KEKs and index keys are cached in
 *         memory (wiped on close); a KEK version below the tenant's min_decrypt_version is never used.
 *   get:  only the categories asked for are decrypted; any failure to unwrap or open (a changed byte, a part
 *         or key moved to another row, version or tenant) is BASE_ERR_CRYPTO "record failed its integrity
 *         check", and nothing of the record is returned.
 *
 * Tenants get their keys on first use (vault_store_tenant_ensure; put calls it). All functions are
 * thread-safe; each runs in its own transaction(s) on the pool (search_path = the vault schema). Messages
 * never contain PHI, keys, or values; record ids and patient refs are random and never PHI. */
#ifndef ALMA_VAULT_STORE_H
#define ALMA_VAULT_STORE_H

#include "base/result.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VAULT_CATEGORY_MAX    6 /* alma.vault.v1.Category 1..6 */
#define VAULT_CATEGORY_BIT(c) (1u << (c))
#define VAULT_ALL_CATEGORIES  0x7Eu
#define VAULT_ID_LEN          35 /* "pt_"/"it_"/"ps_"/"am_"/"lh_"/"dc_" + 32 hex */
#define VAULT_ID_BUF          36
#define VAULT_PART_MAX        (2u * 1024 * 1024) /* plaintext bytes of one part (a 1 MiB document + fields) */
#define VAULT_BLIND_MAX       16                 /* blind-index values per put */
#define VAULT_BLIND_VALUE_MAX 512
#define VAULT_HISTORY_MAX     100
#define VAULT_FIND_MAX        20
#define VAULT_ACTOR_MAX       128

/* "demographic", "contact", "identifier", "clinical", "sensitive_clinical", "financial" for categories 1..6
 * (alma.vault.v1.Category); "unknown" otherwise. For messages and audit details (never a value). */
const char *vault_category_name(int category);

enum { VAULT_BLIND_MRN = 1, VAULT_BLIND_MEMBER_ID = 2, VAULT_BLIND_NAME_DOB = 3 };

typedef struct vault_store vault_store;

/* Apply the vault migrations to `schema` (NULL = "vault") through an owner pool (DDL). */
BASE_MUST_USE base_result vault_store_migrate(db_pool *owner, const char *schema);

/* The store over `pool` (runtime role) and `master` (not owned; must outlive the store). Checks nothing in
 * the database yet. */
BASE_MUST_USE base_result vault_store_open(db_pool *pool, vault_keyprovider *master, vault_store **ret);
void vault_store_close(vault_store *s); /* NULL ok; wipes cached keys */

/* Create the tenant's KEK version 1 and index key if it has none. A tenant whose keys were made under
 * another master key: BASE_ERR_CONFLICT. An offboarded tenant: BASE_ERR_CONFLICT "tenant offboarded". */
BASE_MUST_USE base_result vault_store_tenant_ensure(vault_store *s, const char *tenant_id);

typedef struct vault_blind {
    int kind;          /* VAULT_BLIND_* */
    const char *value; /* normalised (model.c), 1..VAULT_BLIND_VALUE_MAX bytes */
    size_t len;
} vault_blind;

typedef struct vault_put {
    const char *tenant_id;
    const char *record_id;   /* "pt_"/"it_" + 32 hex, made by the caller (vault_random_id) */
    const char *patient_ref; /* == record_id for a patient record */
    int kind;                /* alma.vault.v1.RecordKind 1..6 */
    /* 0: create version 1 (BASE_ERR_EXISTS when the record exists); otherwise the record's latest version
     * must be this one (else BASE_ERR_CONFLICT "record changed since expected_version"; a record that does
     * not exist in the tenant, or belongs to another patient: BASE_ERR_NOT_FOUND) and version + 1 is made. */
    uint32_t expected_version;
    const char *created_by;           /* principal id */
    const char *amendment_request_id; /* NULL or "am_" + 32 hex */
    /* Plaintext per category, index = category (1..VAULT_CATEGORY_MAX); NULL = absent. At least one. */
    const uint8_t *parts[VAULT_CATEGORY_MAX + 1];
    size_t part_len[VAULT_CATEGORY_MAX + 1];
    const vault_blind *blind;
    size_t blind_count;
} vault_put;

BASE_MUST_USE base_result vault_store_put(vault_store *s, const vault_put *put, uint32_t *ret_version,
                                          int64_t *ret_created_us);

/* One record version as read. parts[c] is set (a wiped-on-free secret holding the plaintext) only for the
 * categories asked for that the version has. */
typedef struct vault_record {
    char record_id[VAULT_ID_BUF];
    char patient_ref[VAULT_ID_BUF];
    int kind;
    uint32_t version;
    int64_t created_us;
    char created_by[VAULT_ACTOR_MAX + 1];
    char amendment_request_id[VAULT_ID_BUF]; /* "" when none */
    unsigned categories;                     /* VAULT_CATEGORY_BIT of every part the version has */
    uint32_t kek_version;
    acrypto_secret *parts[VAULT_CATEGORY_MAX + 1];
} vault_record;

void vault_record_clear(vault_record *r);            /* frees and wipes the parts; NULL ok */
void vault_records_free(vault_record *rs, size_t n); /* clear each, free the array */

/* The record's metadata (no decryption: parts all NULL). version 0: the latest. BASE_ERR_NOT_FOUND when the
 * tenant has no such record (or version), shredded ones included. */
BASE_MUST_USE base_result vault_store_head(vault_store *s, const char *tenant_id, const char *record_id,
                                           uint32_t version, vault_record *ret);
/* The same, decrypting the categories in `mask` (VAULT_CATEGORY_BIT). BASE_ERR_CRYPTO on integrity failure.
 */
BASE_MUST_USE base_result vault_store_get(vault_store *s, const char *tenant_id, const char *record_id,
                                          uint32_t version, unsigned mask, vault_record *ret);
/* The latest version of each clinical item of a patient (kind 0: every item kind; never the patient
 * record), ordered by record_id, those after `after_record_id` ("" = from the start), at most `limit`
 * (1..100), decrypting `mask`. *ret is malloc'd (vault_records_free); *ret_more: there are more. */
BASE_MUST_USE base_result vault_store_list(vault_store *s, const char *tenant_id, const char *patient_ref,
                                           int kind, const char *after_record_id, size_t limit, unsigned mask,
                                           vault_record **ret, size_t *ret_n, bool *ret_more);
/* Every version of a record, oldest first (at most VAULT_HISTORY_MAX), decrypting `mask`. */
BASE_MUST_USE base_result vault_store_history(vault_store *s, const char *tenant_id, const char *record_id,
                                              unsigned mask, vault_record **ret, size_t *ret_n);
/* Patients whose latest version has this blind-index value: at most VAULT_FIND_MAX refs. */
BASE_MUST_USE base_result vault_store_find(vault_store *s, const char *tenant_id, int kind, const char *value,
                                           size_t len, char (*ret_refs)[VAULT_ID_BUF], size_t cap,
                                           size_t *ret_n);
/* The tenant's pseudonym of a patient: "ps_" + hex of the first 16 bytes of
 * HMAC-SHA256(index key, "pseudonym" 0x00 patient_ref). Stable; unlinkable without the index key. */
BASE_MUST_USE base_result vault_store_pseudonym(vault_store *s, const char *tenant_id,
                                                const char *patient_ref, char ret[VAULT_ID_BUF]);

/* ---- key rotation --------------------------------------------------------------------------------- */

#define VAULT_KEY_VERSIONS_MAX 32
typedef struct vault_key_status {
    uint32_t current_version;
    uint32_t min_decrypt_version;
    size_t count; /* entries below: versions that still wrap at least one data key */
    struct {
        uint32_t version;
        uint64_t data_keys;
    } wrapped[VAULT_KEY_VERSIONS_MAX];
} vault_key_status;

/* A new KEK version; it wraps every data key made from now on (other replicas pick it up within
 * VAULT_KEY_REFRESH_S seconds, and never wrap with a version older than the one they last saw). */
#define VAULT_KEY_REFRESH_S 5
BASE_MUST_USE base_result vault_store_rotate(vault_store *s, const char *tenant_id, uint32_t *ret_version);
BASE_MUST_USE base_result vault_store_key_status(vault_store *s, const char *tenant_id,
                                                 vault_key_status *ret);

/* Re-wrap every data key of the tenant still wrapped by a version older than the current one, `batch` rows
 * (1..10000) per transaction, in key order; each batch re-reads where to go on, so after a crash or a kill
 * the next run continues (an interrupted batch rolls back whole). progress(arg, done, total) after each
 * batch (total = keys to re-wrap when the run started). *ret_done: keys re-wrapped by this run. */
typedef void (*vault_progress_fn)(void *arg, uint64_t done, uint64_t total);
BASE_MUST_USE base_result vault_store_rewrap(vault_store *s, const char *tenant_id, size_t batch,
                                             vault_progress_fn progress, void *arg, uint64_t *ret_done);
/* Retire every KEK version below min_version: refused (BASE_ERR_CONFLICT) while any data key is still
 * wrapped by one; otherwise their wrapped keys are destroyed and min_decrypt_version raised. */
BASE_MUST_USE base_result vault_store_retire(vault_store *s, const char *tenant_id, uint32_t min_version);

/* For lifecycle.c (shredding, offboarding) and tests: a new random id "<prefix>" + 32 hex. */
void vault_random_id(const char *prefix, char out[VAULT_ID_BUF]);
/* Forget cached keys of a tenant (after offboarding destroyed them). */
void vault_store_forget_tenant(vault_store *s, const char *tenant_id);

/* ---- crypto-shredding and offboarding (lifecycle.c decides whether; these do it) ------------------------
 */

#define VAULT_SHRED_RECORDS_MAX 100000
typedef struct vault_shred_summary {
    uint32_t records;                 /* distinct record ids */
    uint32_t versions;                /* record versions (rows) */
    uint32_t kek_min, kek_max;        /* KEK versions that wrapped the destroyed data keys */
    char (*record_ids)[VAULT_ID_BUF]; /* malloc'd, sorted, `records` entries */
    int64_t keys_destroyed_us;        /* when step 1 committed */
    int64_t rows_deleted_us;          /* when step 2 committed (0 before) */
} vault_shred_summary;
void vault_shred_summary_free(vault_shred_summary *s); /* frees record_ids; NULL ok */

/* Step 1: in one transaction, destroy the data key of every version of every record of the patient
 * (wrapped_dek NULL, shredded_at now): from then on no key the system holds opens their ciphertext. Rows
 * already shredded are counted again (a retry after a crash between the steps). BASE_ERR_NOT_FOUND when
 * the patient has no rows at all. */
BASE_MUST_USE base_result vault_store_shred_keys(vault_store *s, const char *tenant_id,
                                                 const char *patient_ref, vault_shred_summary *ret);
/* Step 2: delete the patient's shredded rows and their blind-index rows; sets ret->rows_deleted_us. */
BASE_MUST_USE base_result vault_store_shred_rows(vault_store *s, const char *tenant_id,
                                                 const char *patient_ref, vault_shred_summary *ret);
/* Offboarding, after the tenant's PHI was exported: destroy every KEK version and the index key of the
 * tenant (wrapped_key / index_key_wrapped NULL, offboarded_at), forget them in memory. Nothing of the
 * tenant can be decrypted afterwards; later puts are refused. *ret_versions: KEK versions destroyed. */
BASE_MUST_USE base_result vault_store_destroy_tenant_keys(vault_store *s, const char *tenant_id,
                                                          uint32_t *ret_versions);
/* Every patient ref of the tenant (for offboarding's export), ordered, after `after` ("" = start), at most
 * `cap`. */
BASE_MUST_USE base_result vault_store_list_patients(vault_store *s, const char *tenant_id, const char *after,
                                                    char (*ret_refs)[VAULT_ID_BUF], size_t cap,
                                                    size_t *ret_n);

#endif
