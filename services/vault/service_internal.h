/* Shared by the vault's handler files (service.c: state, settings, authorisation, views, audit, method
 * table; records.c: patients and items; admin.c: export, amendments, retention, destruction, keys). Not a
 * public interface.
 *
 * Every handler follows one order, so "audit before disclosure" is visible in the code:
 *   1. validate the request (INVALID_ARGUMENT names the field, never the value);
 *   2. authorise: the token, the tenant, the permission, and for patient data the care relationship or
 *      break-glass (common/authz); a read also resolves the caller's view (roles x purpose);
 *   3. writes: audit the intent (UNAVAILABLE and nothing written when the audit log cannot record it), then
 *      write; reads: read and decrypt only the view's categories, then audit the disclosure (UNAVAILABLE and
 *      nothing returned when it cannot be recorded), then answer. */
#ifndef ALMA_VAULT_SERVICE_INTERNAL_H
#define ALMA_VAULT_SERVICE_INTERNAL_H

#include "audit/v1/audit.pb-c.h"
#include "auditclient.h"
#include "authz/authz.h"
#include "authz/remote.h"
#include "base/result.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"
#include "lifecycle.h"
#include "model.h"
#include "rpc/rpc.h"
#include "store.h"
#include "vault/v1/vault.pb-c.h"
#include "views.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct vs_service {
    db_pool *pool;
    vault_keyprovider *master;
    vault_store *store;
    vault_views_cache *views;
    acrypto_ed25519_key *cert_key; /* signs destruction certificates */
    char *cert_vkey_pem;           /* its public key, PEM, in every certificate */
    authz_remote *remote;
    authz *az;
    audit_client *audit;
} vs_service;

vs_service *vs_of(rpc_ctx *ctx);
int64_t vs_now_us(void);
Google__Protobuf__Timestamp *vs_timestamp(rpc_ctx *ctx, int64_t micros);

/* The caller, authorised for `permission` on tenant (and patient_ref when patient-scoped). A denial is
 * audited (ACCESS_DENIED, HIGH when PHI was asked for) and its status returned; RPC_OK fills *claims. */
rpc_code vs_require(rpc_ctx *ctx, const char *tenant_id, const char *permission, const char *patient_ref,
                    authz_claims *claims);

/* A read's view: the caller's roles x purpose (views.c), then every permission the view needs, for the
 * patient (relationship or break-glass). Denials audited as in vs_require. */
rpc_code vs_require_view(rpc_ctx *ctx, const char *tenant_id, const char *patient_ref, int purpose,
                         authz_claims *claims, vault_view *view);

/* One audit event of this call (auditclient.h): .claims gives the actor and roles. details: NULL-terminated
 * pairs. vs_audit appends it: BASE_OK or the audit client's error. */
typedef audit_client_event vs_event;
base_result vs_audit(rpc_ctx *ctx, const vs_event *ev);
/* The intent of a write: RPC_OK, or UNAVAILABLE "audit log unavailable: nothing was changed". */
rpc_code vs_audit_intent(rpc_ctx *ctx, const vs_event *ev);
/* The write announced by `intent` failed with r: the status from r, and a best-effort ERROR event. */
rpc_code vs_audit_failed(rpc_ctx *ctx, const vs_event *intent, base_result r);
/* A read's disclosure: RPC_OK, or UNAVAILABLE "audit log unavailable: nothing was disclosed". */
rpc_code vs_audit_disclosure(rpc_ctx *ctx, const vs_event *ev);

/* A store or model failure as the call's status. BASE_ERR_CRYPTO (a record that fails its integrity check)
 * is DATA_LOSS and is logged with the request id (never the data). */
rpc_code vs_fail(rpc_ctx *ctx, base_result r);

/* Request checks shared by handlers. */
rpc_code vs_check_tenant(rpc_ctx *ctx, const char *tenant_id);
rpc_code vs_check_patient_ref(rpc_ctx *ctx, const char *field, const char *ref);
rpc_code vs_check_record_id(rpc_ctx *ctx, const char *field, const char *id);
rpc_code vs_check_purpose(rpc_ctx *ctx, int purpose);
/* "demographic,clinical" of a category mask (arena). */
const char *vs_category_list(rpc_ctx *ctx, unsigned mask);

/* records.c */
rpc_code vs_h_create_patient(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_update_patient(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_get_patient(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_find_patients(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_put_item(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_get_item(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_list_items(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_get_history(rpc_ctx *ctx, const void *req, void *resp);

/* admin.c */
rpc_code vs_h_export_patient(rpc_ctx *ctx, const void *req, rpc_stream *stream);
rpc_code vs_h_create_amendment(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_decide_amendment(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_list_amendments(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_set_retention(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_place_hold(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_release_hold(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_destroy_patient(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_get_certificate(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_rotate_key(rpc_ctx *ctx, const void *req, void *resp);
rpc_code vs_h_key_status(rpc_ctx *ctx, const void *req, void *resp);

#endif
