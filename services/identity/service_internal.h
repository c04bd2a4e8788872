/* Shared by the identity service's handler files (service.c: state, keys, helpers, method table;
 * auth.c: login, refresh, logout, MFA; admin.c: tenants, users, roles, relationships, break-glass, Check,
 * partner clients). Not a public interface. */
#ifndef ALMA_IDENTITY_SERVICE_INTERNAL_H
#define ALMA_IDENTITY_SERVICE_INTERNAL_H

#include "audit/v1/audit.pb-c.h"
#include "auditclient.h"
#include "authz/authz.h"
#include "base/result.h"
#include "cache/cache.h"
#include "credentials.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "identity/v1/identity.pb-c.h"
#include "keys.h"
#include "rpc/rpc.h"
#include "session.h"
#include "store.h"
#include "throttle.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>

#define IDN_SELF_PERMISSION   AUTHZ_PERM_MFA_ENROLL /* every token carries it: self-service MFA */
#define IDN_MAX_PASSWORD      CRED_PASSWORD_MAX_BYTES
#define IDN_MAX_TOTP_CODE     8
#define IDN_MAX_RECOVERY_CODE CRED_RECOVERY_INPUT_MAX

typedef struct idn_service {
    db_pool *pool;
    cache_config cache; /* the one config pointer every thread's cache_thread_conn uses */
    char redis_host[256];
    acrypto_secret *totp_key;     /* seals TOTP secrets (HKDF of the master key) */
    acrypto_secret *pepper;       /* recovery code HMAC key */
    acrypto_secret *key_seal_key; /* seals token signing keys */
    pthread_rwlock_t keys_lock;   /* guards the three below (rotation) */
    acrypto_ed25519_key *sign_key;
    char kid[AUTHZ_KID_BUF];
    char *jwks;
    authz_keyset *keyset;
    /* The key reload thread (service.c): every key_reload_s seconds it lists the keys and, when the current
     * kid changed (alma-admin rotate-signing-key), loads them. Stopped by fini through reload_stop. */
    pthread_t reload_thread;
    bool reload_started;
    bool reload_stop; /* under reload_mu */
    pthread_mutex_t reload_mu;
    pthread_cond_t reload_cv; /* CLOCK_MONOTONIC */
    int64_t key_reload_s;
    authz *az;
    audit_client *audit;
    session_config sessions;
    throttle_config throttle;
    cred_argon2_params argon;
    sem_t argon_slots; /* argon2id holds 64 MiB and a core: at most this many at once */
    int64_t token_ttl_s;
    char issuer[AUTHZ_MAX_URI_LEN + 1];
} idn_service;

idn_service *idn_of(rpc_ctx *ctx);
int64_t idn_now(void);    /* epoch seconds */
int64_t idn_now_us(void); /* epoch microseconds (the store's times) */
/* prefix + 32 random lowercase hex digits ("tok_", "bg_", ...). */
void idn_random_id(const char *prefix, char *out, size_t cap);

/* The caller's token, verified and authorised for `permission` within its own tenant (and for the patient,
 * when patient-scoped). On denial the RPC status is set and returned; on success RPC_OK and *claims. */
rpc_code idn_require(rpc_ctx *ctx, const char *permission, const char *patient_ref, authz_claims *claims);
/* The caller's token alone (any permission), for self-service calls. */
rpc_code idn_authenticate(rpc_ctx *ctx, authz_claims *claims);

/* Sign an access token for a principal's current rights. enrol_only: the token may only enrol MFA. */
base_result idn_issue_token(idn_service *s, const char *tenant_id, const char *principal_id, const char *sid,
                            const identity_effective *eff, bool mfa, bool enrol_only, int64_t now,
                            int64_t session_abs_end, char **ret_jwt, int64_t *ret_exp);

/* Append an audit event (durable) for an identity action. actor: principal id (or "system:identity");
 * details: NULL-terminated pairs key, value (values are cut to the audit limit). A failure is the RPC's
 * failure: UNAVAILABLE. */
typedef audit_client_event idn_audit_event; /* .actor, and .claims for the roles when known */
base_result idn_audit(rpc_ctx *ctx, const idn_audit_event *ev);

/* Audit first (README, "Audit"): every administrative change is appended to the audit log, with its old and
 * new values and outcome SUCCESS, BEFORE it is made. idn_audit_intent appends that event: RPC_OK, or the
 * call fails with UNAVAILABLE and the caller must change nothing. */
rpc_code idn_audit_intent(rpc_ctx *ctx, const idn_audit_event *ev);
/* The change announced by `intent` was then refused or failed (r, from the store): set the call's status
 * from r, append (best effort) a second event for the same resource with OUTCOME_ERROR and details
 * {"change": "<what> failed", "error": base_err_name(r.err)} (never a value), and return the status. The
 * pair, same request id, reads "this change did not happen". */
rpc_code idn_audit_failed(rpc_ctx *ctx, const idn_audit_event *intent, const char *what, base_result r);
/* The ERROR event alone (best effort: a failure is logged), for a call whose status is already set. */
void idn_audit_error(rpc_ctx *ctx, const idn_audit_event *intent, const char *what, base_err err);

/* Revocation in two halves, so that N principals cost one wait:
 *   idn_revoke_principal  ends the principal's sessions (end_sessions) and revokes every token of it issued
 *                         at or before second `at` (authz:revoked:sub, published to every service, which stop
 *                         accepting them within a second); *ret_count (may be NULL): sessions ended.
 *   idn_wait_past         returns once idn_now() > at: a token issued after that (by a Refresh or a Login
 *                         right after the caller answers) is not caught by the revocation (iat has
 *                         one-second resolution). At most a second.
 * Take `at` = idn_now() AFTER the change is committed: every token issued before it then has iat <= at. */
base_result idn_revoke_principal(idn_service *s, const char *principal_id, bool end_sessions, int64_t at,
                                 int *ret_count);
void idn_wait_past(int64_t at);
/* Both for one principal (disable, admin password reset, revoke-all, grant/revoke of a role). */
base_result idn_end_principal(idn_service *s, const char *principal_id, bool end_sessions, int *ret_count);

/* Write a relationship to the Redis mirror every service's authorizer reads. */
base_result idn_mirror_relationship(idn_service *s, cache_conn *conn, const identity_relationship *rel);

/* Timestamps. */
Google__Protobuf__Timestamp *idn_timestamp(rpc_ctx *ctx, int64_t micros);
bool idn_timestamp_micros(const Google__Protobuf__Timestamp *t, int64_t *ret);

/* A store/base failure as the RPC status (NOT_FOUND, EXISTS, INVALID ... keep their messages). */
rpc_code idn_fail(rpc_ctx *ctx, base_result r);

/* auth.c */
rpc_code idn_h_login(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_refresh(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_logout(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_set_password(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_enroll_totp(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_confirm_totp(rpc_ctx *ctx, const void *req, void *resp);

/* admin.c */
rpc_code idn_h_create_tenant(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_create_user(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_get_user(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_disable_user(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_revoke_sessions(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_list_roles(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_put_role(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_grant_role(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_revoke_role(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_create_relationship(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_end_relationship(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_break_glass(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_list_break_glass(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_check(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_register_partner(rpc_ctx *ctx, const void *req, void *resp);
rpc_code idn_h_get_partner(rpc_ctx *ctx, const void *req, void *resp);

/* Fill a User message from the store (arena memory). */
rpc_code idn_user_out(rpc_ctx *ctx, const identity_principal *p, Alma__Identity__V1__User *out);

#endif
