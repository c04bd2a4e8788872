/* Shared by the guideline service's handler files (service.c: state, settings, bundles, authorisation,
 * audit, publishing, the method table; review.c: reviews, decisions, history, what-if, concordance). Not a
 * public interface.
 *
 * Every handler follows one order, so "no recommendation leaves unaudited" is visible in the code:
 *   1. validate the request (INVALID_ARGUMENT names the field, never the value);
 *   2. authorise: the token, the tenant, the permission, and for a patient's reviews the care relationship
 *      or break-glass (phi.read.clinical, common/authz); denials are audited;
 *   3. audit the intent or the disclosure (UNAVAILABLE, nothing stored and nothing returned when the audit
 *      log cannot record it), then store; a store failure after a successful audit appends an ERROR event;
 *   4. answer. */
#ifndef ALMA_GUIDELINE_SERVICE_INTERNAL_H
#define ALMA_GUIDELINE_SERVICE_INTERNAL_H

#include "audit/v1/audit.pb-c.h"
#include "auditclient.h"
#include "authz/authz.h"
#include "authz/remote.h"
#include "base/result.h"
#include "bundle.h"
#include "db/db.h"
#include "engine.h"
#include "guideline/v1/guideline.pb-c.h"
#include "rpc/rpc.h"
#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define GSVC_SYSTEM_ACTOR      "system:guideline"
#define GSVC_PURPOSE_TREATMENT ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT

/* One loaded bundle, kept for the life of the process (bundles are immutable once published). */
typedef struct gsvc_loaded {
    char bundle_id[GS_BUNDLE_ID_MAX + 1];
    char version[GS_VERSION_MAX + 1];
    char hash[GS_HASH_LEN + 1];
    gl_bundle *bundle;
} gsvc_loaded;

typedef struct gsvc_service {
    db_pool *pool;
    gs_writer *writer; /* reviews, group-committed */
    authz_remote *remote;
    authz *az;
    audit_client *audit;
    rpc_channel *vault; /* NULL without vault-addr: from_vault is UNIMPLEMENTED */
    pthread_mutex_t mu; /* guards the cache and the active bundle's name */
    gsvc_loaded *loaded;
    size_t n_loaded, cap_loaded;
    char active_id[GS_BUNDLE_ID_MAX + 1], active_version[GS_VERSION_MAX + 1];
    int64_t active_read_us; /* when the active bundle's name was last read (0: never / invalidated) */
} gsvc_service;

gsvc_service *gsvc_of(rpc_ctx *ctx);
int64_t gsvc_now_us(void);
Google__Protobuf__Timestamp *gsvc_timestamp(rpc_ctx *ctx, int64_t micros);
int64_t gsvc_timestamp_us(const Google__Protobuf__Timestamp *t); /* NULL: 0 */

/* A bundle by id and version from the cache, loaded from the store on first use; its computed hash must be
 * the stored one (else DATA_LOSS). id NULL or "": the active bundle (re-read at most every few seconds).
 * RPC_OK with *ret (owned by the cache) or the call's failure. */
rpc_code gsvc_bundle(rpc_ctx *ctx, const char *bundle_id, const char *version, const gsvc_loaded **ret);
/* Forget the active bundle's name (after a publish that activates). */
void gsvc_active_invalidate(gsvc_service *s);

/* The caller, authorised for `permission` on tenant (and patient_ref when patient-scoped). A denial is
 * audited (ACCESS_DENIED, HIGH when a patient was asked for) and its status returned. */
rpc_code gsvc_require(rpc_ctx *ctx, const char *tenant_id, const char *permission, const char *patient_ref,
                      authz_claims *claims);
/* The first of perms (NULL-terminated) the caller holds on tenant; one denial audited when none. */
rpc_code gsvc_require_any(rpc_ctx *ctx, const char *tenant_id, const char *const *perms,
                          authz_claims *claims);

/* One audit event of this call (auditclient.h): .claims gives the actor and roles. details:
 * NULL-terminated pairs (never PHI nor comment text). guideline: for ACTION_RECOMMEND / ACTION_DECIDE. */
typedef audit_client_event gsvc_event;
base_result gsvc_audit(rpc_ctx *ctx, const gsvc_event *ev);
/* RPC_OK, or UNAVAILABLE "audit log unavailable: <what>". */
rpc_code gsvc_audit_or_fail(rpc_ctx *ctx, const gsvc_event *ev, const char *what);
/* The write announced by `intent` failed with r: the status from r, and a best-effort ERROR event. */
rpc_code gsvc_audit_failed(rpc_ctx *ctx, const gsvc_event *intent, base_result r);
rpc_code gsvc_fail(rpc_ctx *ctx, base_result r);

rpc_code gsvc_check_tenant(rpc_ctx *ctx, const char *tenant_id);
bool gsvc_is_hex(const char *s, size_t n); /* exactly n lowercase hex digits, then NUL */
/* "rv_"/"dn_" + 32 random lowercase hex. */
base_result gsvc_new_id(const char *prefix, char ret[GS_ID_BUF]);
/* Fill a BundleRef (arena). */
Alma__Guideline__V1__BundleRef *gsvc_bundle_ref(rpc_ctx *ctx, const char *id, const char *version,
                                                const char *hash);

/* service.c */
rpc_code gsvc_h_publish_bundle(rpc_ctx *ctx, const void *req, void *resp);
rpc_code gsvc_h_list_bundles(rpc_ctx *ctx, const void *req, void *resp);

/* review.c */
rpc_code gsvc_h_review_referral(rpc_ctx *ctx, const void *req, void *resp);
rpc_code gsvc_h_record_decision(rpc_ctx *ctx, const void *req, void *resp);
rpc_code gsvc_h_referral_history(rpc_ctx *ctx, const void *req, void *resp);
rpc_code gsvc_h_what_if(rpc_ctx *ctx, const void *req, void *resp);
rpc_code gsvc_h_concordance(rpc_ctx *ctx, const void *req, void *resp);

#endif
