/* common/authz: access tokens and the local authorisation decision every service makes
 * (services/identity/README.md is the design; README.md here says how this library implements it).
 *
 *   1. Tokens: compact JWS (RFC 7515) JWTs (RFC 7519) signed with Ed25519, "alg":"EdDSA" (RFC 8037).
 *      authz_token_sign() (identity) and authz_token_verify() (everyone). Parsing is strict and bounded:
 *      exactly three base64url parts without padding, header alg "EdDSA" only (never "none", HS*, RS*, ...),
 *      no "crit", a known kid, the signature over "header.payload", then iss/aud, exp/nbf/iat with a leeway
 *      of AUTHZ_LEEWAY_S, a lifetime (exp - iat) of at most max_lifetime_s, and every claim of the README
 *      present and well-formed (see "Claims" below). Every failure is BASE_ERR_UNAUTH with one of the fixed
 *      AUTHZ_MSG_* texts: they name the check that failed, never a value from the token.
 *   2. Key sets: JWKS (RFC 7517) of OKP Ed25519 keys (RFC 8037). The kid of a key is fixed by convention:
 *      base64url (no padding) of the first 8 bytes of SHA-256 of the 32-byte raw public key, 11 characters.
 *      A JWKS whose kid does not follow it is refused, so a kid can never name two different keys.
 *   3. The authorizer (authz_new / authz_authorize): a service process creates one; worker threads call
 *      authz_authorize() concurrently. It keeps the verification keys (fetched through a callback, refreshed
 *      periodically and, rate-limited, on an unknown kid), a cache of the tokens already verified (so a token
 *      sent again is not verified again; every time, revocation and rule check still runs on every call) and
 *      an in-memory revocation set fed by the Redis channel AUTHZ_REVOCATION_CHANNEL. If that feed has not
 *      been confirmed alive for AUTHZ_FEED_GRACE_MS (or has not synchronised yet), every decision is
 *      UNAVAILABLE: fail closed.
 *   4. Publishers (identity): authz_revoke_session / authz_revoke_principal and the relationship and
 *      break-glass mirrors, which write the README's Redis keys.
 *
 * Conventions are those of common/base/result.h: BASE_MUST_USE results, ret_* written only on success,
 * messages never carry a token, a key, an id or anything a caller sent. The one exception is the decision of
 * authz_authorize(), which is written for every outcome (a denial is a decision, not a failure to make one).
 *
 * Threading: authz_token_sign/verify and the keyset functions are thread-safe on shared const inputs;
 * authz_authorize() may be called from any number of threads at once; publishers use the cache_conn they are
 * given (one thread at a time, as cache.h requires). */
#ifndef ALMA_AUTHZ_H
#define ALMA_AUTHZ_H

#include "base/result.h"
#include "cache/cache.h"
#include "crypto/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits and defaults ------------------------------------------------------------------------ */

#define AUTHZ_DEFAULT_ISSUER   "alma-identity"
#define AUTHZ_DEFAULT_AUDIENCE "alma"

#define AUTHZ_MAX_TOKEN_LEN   8192 /* a longer token (the "Bearer " prefix excluded) is refused */
#define AUTHZ_MAX_HEADER_LEN  1024 /* encoded JOSE header */
#define AUTHZ_MAX_URI_LEN     128  /* iss, aud: printable ASCII without '"' and '\\' */
#define AUTHZ_MAX_ID_LEN      64   /* sub, tid, sid, jti, patient refs, relationship and grant ids */
#define AUTHZ_MAX_NAME_LEN    64   /* one role id or permission: [A-Za-z0-9_.:/-]+ */
#define AUTHZ_MAX_ROLES       32
#define AUTHZ_MAX_PERMS       128
#define AUTHZ_MAX_AUD_ENTRIES 8 /* aud may be a string or an array of at most this many strings */

#define AUTHZ_LEEWAY_S               30  /* clock skew tolerated on exp, nbf and iat */
#define AUTHZ_DEFAULT_MAX_LIFETIME_S 900 /* exp - iat; identity issues 5-minute tokens */
/* How long a revocation must be remembered: a token issued before it is dead after this anyway. */
#define AUTHZ_DEFAULT_REVOCATION_TTL_S (AUTHZ_DEFAULT_MAX_LIFETIME_S + 2 * AUTHZ_LEEWAY_S)

#define AUTHZ_KID_LEN      11 /* base64url of 8 bytes */
#define AUTHZ_KID_BUF      (AUTHZ_KID_LEN + 1)
#define AUTHZ_MAX_KID_LEN  64 /* longest kid accepted in a header (then looked up, and unknown) */
#define AUTHZ_MAX_KEYS     8  /* keys in one key set / JWKS */
#define AUTHZ_MAX_JWKS_LEN (64 * 1024)

#define AUTHZ_REVOCATION_CHANNEL   "authz:revocations"
#define AUTHZ_FEED_GRACE_MS        1000   /* feed silent longer than this: every decision UNAVAILABLE */
#define AUTHZ_DEFAULT_REFRESH_MS   60000  /* JWKS refresh period */
#define AUTHZ_DEFAULT_REFETCH_MS   5000   /* at most one unknown-kid refetch per this period */
#define AUTHZ_MAX_REVOKED          200000 /* revoked sessions + principals remembered; beyond: fail closed */
#define AUTHZ_PERM_MFA_ENROLL      "identity.mfa.enroll" /* the one permission an "enr" token may use */
#define AUTHZ_PERM_BREAK_GLASS     "phi.break_glass"     /* opening a grant: not patient-scoped */
#define AUTHZ_PATIENT_SCOPE_PREFIX "phi."

/* The fixed texts of token failures (base_error_message() after a BASE_ERR_UNAUTH from verification, and the
 * reason of the matching decision). */
#define AUTHZ_MSG_MISSING     "no bearer token"
#define AUTHZ_MSG_TOO_LONG    "token too long"
#define AUTHZ_MSG_MALFORMED   "token malformed"
#define AUTHZ_MSG_ALG         "token algorithm not accepted"
#define AUTHZ_MSG_NO_KID      "token has no key id"
#define AUTHZ_MSG_KID_UNKNOWN "token signing key unknown"
#define AUTHZ_MSG_SIGNATURE   "token signature invalid"
#define AUTHZ_MSG_CLAIMS      "token claims malformed"
#define AUTHZ_MSG_ISSUER      "token issuer not accepted"
#define AUTHZ_MSG_AUDIENCE    "token audience not accepted"
#define AUTHZ_MSG_LIFETIME    "token lifetime too long"
#define AUTHZ_MSG_EXPIRED     "token expired"
#define AUTHZ_MSG_NOT_YET     "token not yet valid"

/* ---- claims ------------------------------------------------------------------------------------- */

/* The claims of an access token (services/identity/README.md, "Tokens"). Fixed-size, no pointers: it can be
 * copied and lives on the stack. Well-formed means:
 *   iss, aud  1..AUTHZ_MAX_URI_LEN printable ASCII, no '"' or '\\' (aud: the one that matched, on verify)
 *   sub       "usr_" + 32 lowercase hex, or "svc_" + 1..60 of [a-z0-9_-]
 *   tid       [a-z0-9][a-z0-9-]{1,62}
 *   sid       "ses_" + 32 lowercase hex;   jti  "tok_" + 32 lowercase hex
 *   iat, nbf, exp  integers (no fraction) in [0, 253402300799]; exp > iat, exp > nbf
 *   roles, perm    arrays (possibly empty) of at most AUTHZ_MAX_ROLES / AUTHZ_MAX_PERMS names
 *   mfa, enr       booleans
 * All of them are required. Other claims are ignored; a claim named twice makes the token malformed. */
typedef struct authz_claims {
    char iss[AUTHZ_MAX_URI_LEN + 1];
    char aud[AUTHZ_MAX_URI_LEN + 1];
    char sub[AUTHZ_MAX_ID_LEN + 1];
    char tid[AUTHZ_MAX_ID_LEN + 1];
    char sid[AUTHZ_MAX_ID_LEN + 1];
    char jti[AUTHZ_MAX_ID_LEN + 1];
    int64_t iat, nbf, exp;
    bool mfa;
    bool enr;
    size_t role_count;
    char roles[AUTHZ_MAX_ROLES][AUTHZ_MAX_NAME_LEN + 1];
    size_t perm_count;
    char perm[AUTHZ_MAX_PERMS][AUTHZ_MAX_NAME_LEN + 1];
} authz_claims;

/* Whether the claims have the forms above (authz_token_sign refuses others). */
bool authz_claims_well_formed(const authz_claims *claims);
/* The id rules, for callers that build keys or claims: */
bool authz_valid_principal(const char *s);   /* sub */
bool authz_valid_tenant(const char *s);      /* tid */
bool authz_valid_session(const char *s);     /* sid */
bool authz_valid_patient_ref(const char *s); /* "pt_" + 32 lowercase hex (identity.proto) */
bool authz_valid_name(const char *s);        /* a role id or permission */

/* The rule for patient scope: a permission needs a treating relationship or break-glass grant for the
 * patient when it starts with AUTHZ_PATIENT_SCOPE_PREFIX ("phi."), except AUTHZ_PERM_BREAK_GLASS, which is
 * what a clinician uses to open a grant precisely when there is no relationship. */
bool authz_permission_is_patient_scoped(const char *permission);
/* Whether a permission may be used with an "enr" (enrolment-only) token: only AUTHZ_PERM_MFA_ENROLL. */
bool authz_permission_is_enrolment(const char *permission);

/* ---- key sets ----------------------------------------------------------------------------------- */

typedef struct authz_keyset authz_keyset;

/* The kid of a key by the convention above (NUL-terminated, AUTHZ_KID_LEN characters). */
BASE_MUST_USE base_result authz_kid_for_key(const acrypto_ed25519_key *key, char ret_kid[AUTHZ_KID_BUF]);

BASE_MUST_USE base_result authz_keyset_new(authz_keyset **ret_keyset);
/* Add the public part of `key` (copied; a private part is never kept) under its conventional kid. Adding
 * the same key twice is BASE_ERR_EXISTS; more than AUTHZ_MAX_KEYS is BASE_ERR_LIMIT. */
BASE_MUST_USE base_result authz_keyset_add(authz_keyset *ks, const acrypto_ed25519_key *key);
/* Parse a JWKS ({"keys":[...]}, at most AUTHZ_MAX_JWKS_LEN bytes). Every key must be "kty":"OKP",
 * "crv":"Ed25519", with "x" the base64url of 32 bytes and "kid" its conventional kid; "use" (if present)
 * "sig", "alg" (if present) "EdDSA"; no private "d". Any other key, a duplicate kid, an empty set or more
 * than AUTHZ_MAX_KEYS keys refuse the whole set (BASE_ERR_INVALID / BASE_ERR_LIMIT): a service then keeps
 * the keys it had. */
BASE_MUST_USE base_result authz_keyset_from_jwks(const char *jwks, size_t len, authz_keyset **ret_keyset);
/* The JWKS text of the set, keys in the order they were added (identity: current first, then previous):
 * {"keys":[{"kty":"OKP","crv":"Ed25519","x":...,"kid":...,"use":"sig","alg":"EdDSA"},...]}.
 * A new malloc'd NUL-terminated string the caller free()s. */
BASE_MUST_USE base_result authz_keyset_to_jwks(const authz_keyset *ks, char **ret_jwks);
size_t authz_keyset_count(const authz_keyset *ks);
bool authz_keyset_has(const authz_keyset *ks, const char *kid);
void authz_keyset_free(authz_keyset *ks); /* accepts NULL */

/* ---- JWS and tokens ----------------------------------------------------------------------------- */

/* The JWS layer alone (RFC 7515 compact, EdDSA): sign `payload` with header {"alg":"EdDSA"} or, with a kid,
 * {"alg":"EdDSA","kid":"<kid>"} (kid: 1..AUTHZ_MAX_KID_LEN base64url characters). *ret_jws is malloc'd. */
BASE_MUST_USE base_result authz_jws_sign(const acrypto_ed25519_key *key, const char *kid, const void *payload,
                                         size_t payload_len, char **ret_jws);
/* Verify a compact JWS with one given key (kid optional here, ignored) and copy the payload into
 * payload[cap] (*ret_len bytes, not NUL-terminated). BASE_ERR_UNAUTH with an AUTHZ_MSG_* text on failure;
 * BASE_ERR_LIMIT when cap is too small for a payload that verified. */
BASE_MUST_USE base_result authz_jws_verify(const acrypto_ed25519_key *key, const char *jws, size_t jws_len,
                                           void *payload, size_t cap, size_t *ret_len);

/* What a verifier expects. A zero field takes its default. */
typedef struct authz_verify_opts {
    const char *issuer;     /* NULL: AUTHZ_DEFAULT_ISSUER */
    const char *audience;   /* NULL: AUTHZ_DEFAULT_AUDIENCE */
    int64_t max_lifetime_s; /* 0: AUTHZ_DEFAULT_MAX_LIFETIME_S */
} authz_verify_opts;

/* Sign an access token: header {"alg":"EdDSA","kid":<kid>,"typ":"JWT"}, the claims as a JSON object.
 * kid NULL: authz_kid_for_key(key). Claims must be well-formed (BASE_ERR_INVALID) with a lifetime of at
 * most AUTHZ_DEFAULT_MAX_LIFETIME_S; the token must fit AUTHZ_MAX_TOKEN_LEN (BASE_ERR_LIMIT). *ret_jwt is a
 * malloc'd NUL-terminated string the caller free()s. */
BASE_MUST_USE base_result authz_token_sign(const authz_claims *claims, const acrypto_ed25519_key *key,
                                           const char *kid, char **ret_jwt);
/* Verify a token (a bare JWT, NUL-terminated) at time `now` (seconds since the epoch) against a key set.
 * opts may be NULL. BASE_ERR_UNAUTH with an AUTHZ_MSG_* message on any failure. */
BASE_MUST_USE base_result authz_token_verify(const authz_keyset *ks, const authz_verify_opts *opts,
                                             const char *jwt, int64_t now, authz_claims *ret_claims);

/* ---- the authorizer ------------------------------------------------------------------------------ */

/* Fetch the current JWKS text (e.g. identity's GetVerificationKeys over mTLS) into a malloc'd NUL-terminated
 * string that the authorizer free()s. Called from the authorizer's key thread and, for an unknown kid, from
 * a worker thread inside authz_authorize(); never twice at the same time. It should bound its own wait (an
 * RPC deadline of a second or two): a worker waits for it. */
typedef base_result (*authz_fetch_jwks_fn)(void *arg, char **ret_jwks);

typedef struct authz_config {
    const char *issuer;   /* expected iss; NULL: AUTHZ_DEFAULT_ISSUER (copied) */
    const char *audience; /* expected aud; NULL: AUTHZ_DEFAULT_AUDIENCE (copied) */
    /* Redis. NOT copied: it must outlive the authorizer, and should be the same pointer the service passes
     * to cache_thread_conn(), because a thread has one connection per config pointer and the relationship
     * lookups run on the calling thread's connection (a different pointer would make the two replace each
     * other on every call). The authorizer's own thread makes its own two connections from it. */
    const cache_config *cache;
    authz_fetch_jwks_fn fetch_jwks; /* required */
    void *fetch_arg;
    int refresh_interval_ms;     /* 0: AUTHZ_DEFAULT_REFRESH_MS (retried every second while failing) */
    int refetch_min_interval_ms; /* 0: AUTHZ_DEFAULT_REFETCH_MS */
    int64_t max_lifetime_s;      /* 0: AUTHZ_DEFAULT_MAX_LIFETIME_S */
    /* The verified-token cache (README.md, "Verified-token cache"): a token whose signature and claims
     * verified is remembered, by its exact bytes, with its claims, so that the next call with the same token
     * skips the signature check and the parse. Every other check still runs on every call: exp/nbf/iat with
     * the leeway, revocation, tenant, enrolment, permission and patient scope; a key-set refresh that drops
     * or changes a key invalidates the entries. Only tokens that verified are cached. 0: 4096 entries; -1: no
     * cache (every call verifies the signature); otherwise 1..65536, rounded up to a power of two (at least
     * 4). An entry is one 4 KiB page, made resident when first used (4096 entries: at most 16 MiB). It holds
     * the token's bytes (a bearer credential, as the request that carried it does) until it is replaced. */
    int cache_entries;
    /* For tests: the wall clock (seconds since the epoch) the authorizer judges by (token times, relationship
     * and break-glass windows, revocation expiry). NULL: the system clock (CLOCK_REALTIME). Called from the
     * authorizer's threads and from every thread calling authz_authorize(): it must be thread-safe. */
    int64_t (*now_s)(void *arg);
    void *now_arg;
} authz_config;

typedef struct authz authz;

/* Check and copy the config and start the authorizer's two threads (keys; revocation feed). Does not wait
 * for either: until keys are loaded and the feed has synchronised, decisions are UNAVAILABLE. */
BASE_MUST_USE base_result authz_new(const authz_config *cfg, authz **ret_authz);
/* Stop the threads and free. Accepts NULL. No authz_authorize() may be running or start. */
void authz_free(authz *a);
/* Wait up to timeout_ms for keys and a synchronised revocation feed (a readiness probe, a test).
 * BASE_ERR_UNAVAILABLE when not ready in time. */
BASE_MUST_USE base_result authz_wait_ready(authz *a, int timeout_ms);
bool authz_ready(authz *a);
/* Fetch the JWKS now (synchronously) and install it; on failure the previous keys stay. */
BASE_MUST_USE base_result authz_refresh_keys(authz *a);

/* Decision codes: the gRPC status numbers (rpc_code in rpc/rpc.h), so a handler can return them directly. */
typedef enum authz_code {
    AUTHZ_OK = 0,
    AUTHZ_PERMISSION_DENIED = 7,
    AUTHZ_UNAVAILABLE = 14,
    AUTHZ_UNAUTHENTICATED = 16,
} authz_code;

typedef struct authz_resource {
    const char *tenant_id;   /* required: the tenant the resource belongs to */
    const char *patient_ref; /* required for patient-scoped permissions, else ignored (may be NULL) */
} authz_resource;

#define AUTHZ_REASON_LEN     160
#define AUTHZ_DECIDED_BY_LEN 96

typedef struct authz_decision {
    authz_code code;
    /* True when the token verified and is not revoked: the claims were then written (for the audit of a
     * denial, too). */
    bool authenticated;
    /* Safe to return to the caller: names the rule (and the permission asked for), never an id. */
    char reason[AUTHZ_REASON_LEN];
    /* "role", "relationship:<id>", "break_glass:<id>"; "" when not allowed. */
    char decided_by[AUTHZ_DECIDED_BY_LEN];
} authz_decision;

/* Decide whether the bearer of `authorization` ("Bearer <jwt>", scheme case-insensitive, or a bare jwt) may
 * use `permission` on `resource`, by the rules of services/identity/README.md, in this order:
 *   0. revocation feed not synchronised or silent for over AUTHZ_FEED_GRACE_MS -> UNAVAILABLE;
 *      no verification keys loaded yet -> UNAVAILABLE;
 *   1. no token, bad signature, unknown kid (after one rate-limited refetch), wrong iss/aud, expired, not yet
 *      valid, malformed -> UNAUTHENTICATED;
 *   2. session revoked, or the principal revoked at or after the token's iat -> UNAUTHENTICATED;
 *   3. resource tenant != tid, an "enr" token with a permission other than AUTHZ_PERM_MFA_ENROLL, the
 *      permission not in "perm" -> PERMISSION_DENIED;
 *   4. patient-scoped (authz_permission_is_patient_scoped): a valid patient_ref is required, then an active
 *      treating relationship (start <= now, end 0 or now < end) or else an unexpired break-glass grant
 *      (now < end) of this principal for this patient in this tenant, from Redis (one GET each, on the
 *      calling thread's cache_thread_conn) -> OK, decided by "relationship:<id>" / "break_glass:<id>";
 *      none -> PERMISSION_DENIED; Redis unreachable or a malformed value -> UNAVAILABLE.
 *   Otherwise OK, decided by "role".
 * Returns BASE_OK when allowed; otherwise the failure matching the code (BASE_ERR_UNAUTH, BASE_ERR_DENIED,
 * BASE_ERR_UNAVAILABLE) with the reason as its message. *decision is written for every outcome; *claims
 * (may be NULL) only when decision->authenticated. A NULL authorizer, permission or decision is
 * BASE_ERR_INVALID (with *decision, if any, set to PERMISSION_DENIED). No allocation and no Redis call for
 * permissions that are not patient-scoped. */
BASE_MUST_USE base_result authz_authorize(authz *a, const char *authorization, const char *permission,
                                          const authz_resource *resource, authz_claims *claims,
                                          authz_decision *decision);

/* Steps 0 to 2 of authz_authorize() alone: the feed, the token, revocation. For a caller that needs the
 * token's own claims (its tenant) before it knows which resource to authorise, e.g. a self-service call.
 * BASE_OK with *claims and decision->authenticated when the token is good; otherwise the failure and the
 * decision as authz_authorize() gives them. claims is required. */
BASE_MUST_USE base_result authz_authenticate(authz *a, const char *authorization, authz_claims *claims,
                                             authz_decision *decision);

/* ---- publishers (identity) ---------------------------------------------------------------------- */

/* Revoke a session: SET authz:revoked:sid:<sid> "1" with a TTL, then PUBLISH "sid <sid>". ttl_s 0:
 * AUTHZ_DEFAULT_REVOCATION_TTL_S (never less than the longest token lifetime). Idempotent: on failure
 * (BASE_ERR_UNAVAILABLE, e.g. after the SET but before the PUBLISH), call it again. */
BASE_MUST_USE base_result authz_revoke_session(cache_conn *conn, const char *sid, int64_t ttl_s);
/* Revoke every token of a principal issued at or before not_before_epoch: the key is set to the larger of
 * its current value and not_before_epoch (one Lua EVAL, so concurrent revocations cannot lower it), then
 * "sub <principal> <epoch>" is published. ttl_s as above. Idempotent. */
BASE_MUST_USE base_result authz_revoke_principal(cache_conn *conn, const char *principal,
                                                 int64_t not_before_epoch, int64_t ttl_s);

/* The relationship mirror: authz:rel:<tenant>:<principal>:<patient_ref> =
 * "<relationship_id> <kind> <start_epoch> <end_epoch or 0>", expiring at the end (none when open-ended). A
 * relationship already ended (end_epoch != 0 and <= now) deletes the key. One relationship per (tenant,
 * clinician, patient): identity mirrors the one that is active now, or else the one that starts first.
 * relationship_id: 1..AUTHZ_MAX_ID_LEN of [A-Za-z0-9_-]; kind: 1..32 of [a-z0-9_] ("primary_care",
 * "specialist", "care_team", "covering"). */
BASE_MUST_USE base_result authz_mirror_relationship(cache_conn *conn, const char *tenant,
                                                    const char *principal, const char *patient_ref,
                                                    const char *relationship_id, const char *kind,
                                                    int64_t start_epoch, int64_t end_epoch);
BASE_MUST_USE base_result authz_unmirror_relationship(cache_conn *conn, const char *tenant,
                                                      const char *principal, const char *patient_ref);
/* The break-glass mirror: authz:bg:<tenant>:<principal>:<patient_ref> = "<grant_id> <end_epoch>", expiring
 * at the end (an already expired grant deletes the key). */
BASE_MUST_USE base_result authz_mirror_break_glass(cache_conn *conn, const char *tenant,
                                                   const char *principal, const char *patient_ref,
                                                   const char *grant_id, int64_t end_epoch);
BASE_MUST_USE base_result authz_unmirror_break_glass(cache_conn *conn, const char *tenant,
                                                     const char *principal, const char *patient_ref);

#endif
