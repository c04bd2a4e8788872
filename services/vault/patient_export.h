/* Everything the vault holds about one patient as one FHIR R4 Bundle (fhir.h): the latest version of the
 * patient record and of every clinical item, with every category, read through the store (store.h),
 * unpacked (model.h) and handed to vault_fhir_bundle. Shared by the service's ExportPatient (export.c, the
 * §164.524 right of access) and the operator tool's `offboard` (tools/alma-vault.c), so both write the same
 * Bundle for the same records.
 *
 * This function only reads and builds: authorisation, audit and where the text goes are the caller's. The
 * decrypted parts are wiped when freed (acrypto secrets); the unpacked messages are allocated with a malloc
 * allocator that wipes every block it frees, so no plaintext outlives the call except the returned JSON,
 * which the caller wipes (acrypto_wipe) and frees. Thread-safe (as the store). Messages never hold PHI. */
#ifndef ALMA_VAULT_PATIENT_EXPORT_H
#define ALMA_VAULT_PATIENT_EXPORT_H

#include "base/result.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define VAULT_EXPORT_MAX_ITEMS 20000 /* items of one patient in one Bundle */
#define VAULT_EXPORT_PAGE      100   /* items read per vault_store_list call */

/* The Bundle of `patient_ref` in `tenant_id` (bundle_id: its id before fhir_id(), e.g. "ex_" + 32 hex;
 * now_us: the export's time, > 0). On success: *ret_json the compact JSON text (malloc'd, NUL-terminated,
 * *ret_len without the NUL: wipe and free it), and, each optional (NULL: not wanted), *ret_resources the
 * resources in the Bundle, *ret_categories the VAULT_CATEGORY_BIT of every category it discloses (the
 * patient record's and the items'), *ret_items the number of items.
 * Errors: those of vault_store_get / vault_store_list (BASE_ERR_NOT_FOUND: no such patient in the tenant;
 * BASE_ERR_CONFLICT "tenant offboarded"; BASE_ERR_CRYPTO on an integrity failure), BASE_ERR_LIMIT "the
 * patient has more than 20000 items: export in parts", vault_fhir_bundle's, BASE_ERR_NOMEM. Outputs are
 * written only on success. */
BASE_MUST_USE base_result vault_patient_bundle(vault_store *s, const char *tenant_id, const char *patient_ref,
                                               int64_t now_us, const char *bundle_id, char **ret_json,
                                               size_t *ret_len, uint32_t *ret_resources,
                                               unsigned *ret_categories, size_t *ret_items);

#endif
