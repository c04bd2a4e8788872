/* The identity service's Postgres store: tenants, principals and their credentials (password hashes, sealed
 * TOTP secrets, recovery code HMACs), roles and permissions as versioned data, grants, care relationships,
 * break-glass grants, partner clients and token signing keys. Plain C structs in and out; no protobuf.
 *
 * Every function takes a db_pool whose search_path is the identity schema (the migrations in migrations/,
 * applied by identity_store_migrate) and runs in one transaction (db_transaction: serialization failures
 * and deadlocks are retried). All SQL is constant with $n parameters (common/db's rule).
 *
 * Tenants: every function that reads or writes a tenant's rows takes tenant_id and filters every statement by
 * it; a principal, role, relationship or client of another tenant is simply NOT_FOUND, and nothing of
 * another tenant is changed. The schema backs this up (rows reference principals by (tenant_id,
 * principal_id)). Four reads are deliberately not tenant-scoped, and say so: the relationship and
 * break-glass listings that rebuild the Redis mirror at start-up, partner_client_find for the gateway,
 * which learns a client's tenant from its row, and tenant_create_with_admin's first_tenant check (is there
 * any tenant at all).
 *
 * Errors: BASE_ERR_INVALID for a malformed argument, with a message naming the field ("identity store:
 * username: ...") and never its value; BASE_ERR_NOT_FOUND when the row (in that tenant) does not exist;
 * BASE_ERR_EXISTS for a duplicate (unique violation); BASE_ERR_CONFLICT for a state that forbids the change
 * (ending an ended relationship, changing a built-in role, a version mismatch); BASE_ERR_DENIED when the
 * database refuses (an append-only table, a missing privilege); BASE_ERR_UNAVAILABLE / BASE_ERR_TIMEOUT
 * from common/db. Outputs are written only on success.
 *
 * Times are microseconds since the Unix epoch (int64_t, *_us). Policy (who may grant what, MFA rules,
 * password rules) is the service's: the store only stores. */
#ifndef ALMA_IDENTITY_STORE_H
#define ALMA_IDENTITY_STORE_H

#include "base/result.h"
#include "db/db.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Limits and formats (also check constraints in migrations/0001_identity.sql) ---------------------- */

#define IDENTITY_TENANT_ID_MAX          63  /* [a-z0-9][a-z0-9-]{1,62} */
#define IDENTITY_ID_MAX                 36  /* usr_/svc_/rel_ + 32 lowercase hex; bg_ + 32 hex (35) */
#define IDENTITY_PATIENT_REF_LEN        35  /* pt_ + 32 lowercase hex */
#define IDENTITY_USERNAME_MAX           64  /* [a-z0-9._@-]{3,64} */
#define IDENTITY_DISPLAY_NAME_MAX       200 /* bytes of UTF-8, no control characters */
#define IDENTITY_DISABLE_REASON_MAX     500 /* bytes of UTF-8, no control characters but \t */
#define IDENTITY_ACTOR_MAX              71  /* a principal id, or "system:" + [a-z0-9._-]{1,64} */
#define IDENTITY_ROLE_ID_MAX            64  /* [a-z][a-z0-9_]{1,63} */
#define IDENTITY_PERMISSION_MAX         128 /* dotted lowercase words: "phi.read.clinical" */
#define IDENTITY_ROLE_PERMISSIONS_MAX   256 /* permissions of one role */
#define IDENTITY_ROLES_MAX              64  /* roles granted at once (principal_create) */
#define IDENTITY_PASSWORD_ENCODED_MAX   512 /* "$argon2id$v=19$m=..,t=..,p=..$salt$hash" */
#define IDENTITY_SEALED_MIN             16  /* a sealed secret (TOTP, signing key): 16..512 bytes */
#define IDENTITY_SEALED_MAX             512
#define IDENTITY_RECOVERY_CODES_MAX     16
#define IDENTITY_RECOVERY_HMAC_LEN      32 /* HMAC-SHA-256 of a recovery code */
#define IDENTITY_BREAK_GLASS_REASON_MIN 20 /* bytes of UTF-8; \t \n \r allowed */
#define IDENTITY_BREAK_GLASS_REASON_MAX 1000
#define IDENTITY_BREAK_GLASS_MAX_MIN    240 /* minutes */
#define IDENTITY_CLIENT_ID_MAX          128 /* [A-Za-z0-9][A-Za-z0-9._:-]{2,127} */
#define IDENTITY_JWKS_MAX               65536
#define IDENTITY_SCOPES_MAX             64
#define IDENTITY_SCOPE_MAX              128 /* (system|user|patient)/Resource.(read|write|*|cruds) */
#define IDENTITY_KID_MIN                8   /* [A-Za-z0-9_-]{8,64} */
#define IDENTITY_KID_MAX                64
#define IDENTITY_PUBLIC_KEY_LEN         32   /* Ed25519 */
#define IDENTITY_LIST_MAX               1000 /* rows per page */

/* Apply the identity migrations to `schema` (NULL = "identity") through `pool` (an owner role: DDL). The
 * runtime role never migrates; the owner then calls grant_runtime(schema, role) (0003_runtime_role.sql). */
BASE_MUST_USE base_result identity_store_migrate(db_pool *pool, const char *schema);

/* ---- Tenants ------------------------------------------------------------------------------------------- */

typedef enum identity_tenant_kind {
    IDENTITY_TENANT_PROVIDER = 1, /* the proto's TENANT_KIND_* numbers */
    IDENTITY_TENANT_HEALTH_PLAN = 2,
} identity_tenant_kind;

typedef struct identity_tenant {
    char tenant_id[IDENTITY_TENANT_ID_MAX + 1];
    identity_tenant_kind kind;
    char display_name[IDENTITY_DISPLAY_NAME_MAX + 1];
    bool mfa_required_for_all;
    int64_t created_us;
} identity_tenant;

/* The one cross-tenant write (platform admins). BASE_ERR_EXISTS when the id is taken. */
BASE_MUST_USE base_result identity_store_tenant_create(db_pool *pool, const char *tenant_id,
                                                       identity_tenant_kind kind, const char *display_name,
                                                       bool mfa_required_for_all,
                                                       identity_tenant *ret_tenant);
BASE_MUST_USE base_result identity_store_tenant_get(db_pool *pool, const char *tenant_id,
                                                    identity_tenant *ret_tenant);
/* The checks tenant_create makes on its arguments, without the database: BASE_ERR_INVALID naming the field.
 * For callers that must refuse bad input before doing anything else (the service audits a change before
 * making it). */
BASE_MUST_USE base_result identity_store_tenant_check(const char *tenant_id, identity_tenant_kind kind,
                                                      const char *display_name);

/* ---- Principals ---------------------------------------------------------------------------------------- */

typedef enum identity_principal_kind {
    IDENTITY_PRINCIPAL_USER = 1,    /* "usr_" ids */
    IDENTITY_PRINCIPAL_SERVICE = 2, /* "svc_" ids */
} identity_principal_kind;

typedef enum identity_principal_state {
    IDENTITY_PRINCIPAL_ACTIVE = 1, /* the proto's USER_STATE_* numbers */
    IDENTITY_PRINCIPAL_DISABLED = 2,
} identity_principal_state;

typedef struct identity_principal {
    char tenant_id[IDENTITY_TENANT_ID_MAX + 1];
    char principal_id[IDENTITY_ID_MAX + 1];
    identity_principal_kind kind;
    char username[IDENTITY_USERNAME_MAX + 1];
    char display_name[IDENTITY_DISPLAY_NAME_MAX + 1];
    identity_principal_state state;
    int64_t created_us;
    char created_by[IDENTITY_ACTOR_MAX + 1];
    int64_t disabled_us;                                   /* 0 while active */
    char disabled_reason[IDENTITY_DISABLE_REASON_MAX + 1]; /* "" while active */
} identity_principal;

typedef struct identity_principal_new {
    const char *tenant_id;
    const char *principal_id; /* NULL: a fresh random one ("usr_"/"svc_" by kind) */
    identity_principal_kind kind;
    const char *username;
    const char *display_name;
    const char *password_encoded; /* NULL: no password (service principals; set later) */
    const char *const *roles;     /* role ids to grant: built-in or the tenant's own; no duplicates */
    size_t nroles;                /* 0..IDENTITY_ROLES_MAX */
    const char *created_by;       /* actor: also granted_by of the initial grants */
} identity_principal_new;

/* Principal, password hash and grants in one transaction: all or nothing. BASE_ERR_EXISTS when the
 * username is taken in the tenant (or the given id anywhere); BASE_ERR_NOT_FOUND when the tenant or a role
 * (in the tenant's view) does not exist. */
BASE_MUST_USE base_result identity_store_principal_create(db_pool *pool, const identity_principal_new *in,
                                                          identity_principal *ret_principal);
/* The checks principal_create makes on *in before touching the database (formats, lengths, duplicate
 * roles): BASE_ERR_INVALID naming the field, never its value. */
BASE_MUST_USE base_result identity_store_principal_check(const identity_principal_new *in);
BASE_MUST_USE base_result identity_store_principal_get(db_pool *pool, const char *tenant_id,
                                                       const char *principal_id,
                                                       identity_principal *ret_principal);
BASE_MUST_USE base_result identity_store_principal_get_by_username(db_pool *pool, const char *tenant_id,
                                                                   const char *username,
                                                                   identity_principal *ret_principal);
/* Disable (state, time, reason). Already disabled: BASE_OK with *ret_changed false and the row as it was
 * (the first reason stays). ret_changed may be NULL. */
BASE_MUST_USE base_result identity_store_principal_disable(db_pool *pool, const char *tenant_id,
                                                           const char *principal_id, const char *reason,
                                                           identity_principal *ret_principal,
                                                           bool *ret_changed);

/* ---- A tenant with its first administrator ------------------------------------------------------------- */

typedef struct identity_tenant_new {
    const char *tenant_id;
    identity_tenant_kind kind;
    const char *display_name;
    bool mfa_required_for_all;
    /* Only as the platform's first tenant (alma-admin bootstrap): BASE_ERR_CONFLICT when any tenant exists,
     * decided inside the transaction (serializable), so two bootstraps cannot both succeed. */
    bool first_tenant;
} identity_tenant_new;

/* A second factor enrolled and confirmed at creation (alma-admin bootstrap): the sealed TOTP secret
 * (sealed for the administrator's principal id, so admin->principal_id must be given) and its recovery code
 * HMACs (codes[0..ncodes), 1..IDENTITY_RECOVERY_CODES_MAX, idx = position). */
typedef struct identity_admin_totp {
    const unsigned char *sealed;
    size_t sealed_len; /* IDENTITY_SEALED_MIN..MAX */
    const unsigned char (*codes)[IDENTITY_RECOVERY_HMAC_LEN];
    size_t ncodes;
} identity_admin_totp;

/* A new tenant and its first administrator in ONE transaction: the tenant, the principal (admin->tenant_id
 * must be tenant->tenant_id), its password hash and role grants, and, when totp is not NULL, its confirmed
 * TOTP enrolment (last_step 0) and recovery codes. All of it or nothing: a tenant never exists without the
 * administrator that can act in it. BASE_ERR_EXISTS when the tenant id is taken; BASE_ERR_CONFLICT when
 * first_tenant and a tenant exists; BASE_ERR_NOT_FOUND for a role the tenant cannot see. ret_tenant and
 * ret_admin may be NULL. */
BASE_MUST_USE base_result identity_store_tenant_create_with_admin(
    db_pool *pool, const identity_tenant_new *tenant, const identity_principal_new *admin,
    const identity_admin_totp *totp, identity_tenant *ret_tenant, identity_principal *ret_admin);

/* ---- Passwords ----------------------------------------------------------------------------------------- */

typedef struct identity_password {
    char encoded[IDENTITY_PASSWORD_ENCODED_MAX + 1];
    int64_t updated_us;
} identity_password;

/* Set or replace the principal's argon2id hash (PHC string; hashing is credentials.c's). */
BASE_MUST_USE base_result identity_store_password_set(db_pool *pool, const char *tenant_id,
                                                      const char *principal_id, const char *encoded);
/* BASE_ERR_NOT_FOUND when the principal (in the tenant) has no password. */
BASE_MUST_USE base_result identity_store_password_get(db_pool *pool, const char *tenant_id,
                                                      const char *principal_id,
                                                      identity_password *ret_password);

/* ---- TOTP and recovery codes --------------------------------------------------------------------------- */

typedef struct identity_totp {
    unsigned char sealed_secret[IDENTITY_SEALED_MAX];
    size_t sealed_len;
    bool confirmed;
    int64_t last_step; /* the last accepted RFC 6238 step; 0 for none */
    int64_t created_us;
    int64_t confirmed_us; /* 0 until confirmed */
} identity_totp;

typedef struct identity_recovery_code {
    int idx; /* 0..IDENTITY_RECOVERY_CODES_MAX-1 */
    unsigned char code_hmac[IDENTITY_RECOVERY_HMAC_LEN];
    bool used;
    int64_t used_us; /* 0 while unused */
} identity_recovery_code;

typedef struct identity_recovery_codes {
    size_t n;
    identity_recovery_code codes[IDENTITY_RECOVERY_CODES_MAX];
} identity_recovery_codes;

/* Enrol (or re-enrol): store a sealed secret, unconfirmed, last_step 0, replacing any earlier one (confirmed
 * or not: whether a confirmed secret may be replaced is the service's decision). */
BASE_MUST_USE base_result identity_store_totp_put(db_pool *pool, const char *tenant_id,
                                                  const char *principal_id, const unsigned char *sealed,
                                                  size_t sealed_len);
BASE_MUST_USE base_result identity_store_totp_get(db_pool *pool, const char *tenant_id,
                                                  const char *principal_id, identity_totp *ret_totp);
/* Confirm an enrolment with the step of the code the user entered, and store the recovery code HMACs
 * (codes[0..ncodes), idx = position) in the same transaction, replacing any earlier set (ncodes 0: leave
 * the codes alone). *ret_ok is false, and nothing changes, when step <= last_step (a replayed code).
 * BASE_ERR_NOT_FOUND without an enrolment, BASE_ERR_CONFLICT when already confirmed. */
BASE_MUST_USE base_result identity_store_totp_confirm(
    db_pool *pool, const char *tenant_id, const char *principal_id, int64_t step,
    const unsigned char (*codes)[IDENTITY_RECOVERY_HMAC_LEN], size_t ncodes, bool *ret_ok);
/* Accept a code's step once, across replicas: compare-and-set last_step = step where last_step < step.
 * *ret_ok false: that step (or a later one) was already used. BASE_ERR_NOT_FOUND without an enrolment. */
BASE_MUST_USE base_result identity_store_totp_use_step(db_pool *pool, const char *tenant_id,
                                                       const char *principal_id, int64_t step, bool *ret_ok);

/* Replace the principal's recovery codes with codes[0..ncodes) (1..IDENTITY_RECOVERY_CODES_MAX), unused. */
BASE_MUST_USE base_result identity_store_recovery_codes_replace(
    db_pool *pool, const char *tenant_id, const char *principal_id,
    const unsigned char (*codes)[IDENTITY_RECOVERY_HMAC_LEN], size_t ncodes);
/* In idx order; n = 0 when there are none (not an error). */
BASE_MUST_USE base_result identity_store_recovery_codes_list(db_pool *pool, const char *tenant_id,
                                                             const char *principal_id,
                                                             identity_recovery_codes *ret_codes);
/* Mark code idx used if it is still unused and still has this HMAC (compare it in constant time first,
 * from the list): *ret_ok true only for the one caller that marked it. */
BASE_MUST_USE base_result
identity_store_recovery_code_use(db_pool *pool, const char *tenant_id, const char *principal_id, int idx,
                                 const unsigned char code_hmac[IDENTITY_RECOVERY_HMAC_LEN], bool *ret_ok);

/* ---- Roles and grants ---------------------------------------------------------------------------------- */

typedef struct identity_role {
    char tenant_id[IDENTITY_TENANT_ID_MAX + 1]; /* "" for a built-in role */
    char role_id[IDENTITY_ROLE_ID_MAX + 1];
    char display_name[IDENTITY_DISPLAY_NAME_MAX + 1];
    bool requires_mfa;
    int64_t version; /* 0 in identity_store_role_put's ret_old when the role was created */
    bool built_in;
    int64_t updated_us;
    char **permissions; /* sorted, unique; owned (identity_role_clear) */
    size_t npermissions;
} identity_role;

typedef struct identity_role_list {
    identity_role *items;
    size_t n;
} identity_role_list;

/* Free what a role owns (its permissions) and zero it. Accepts NULL. */
void identity_role_clear(identity_role *role);
void identity_role_list_free(identity_role_list *list);

/* The built-in roles and the tenant's own, built-in first, then by role id. */
BASE_MUST_USE base_result identity_store_roles_list(db_pool *pool, const char *tenant_id,
                                                    identity_role_list *ret_list);
/* One role of the tenant's view (built-in or its own). */
BASE_MUST_USE base_result identity_store_role_get(db_pool *pool, const char *tenant_id, const char *role_id,
                                                  identity_role *ret_role);

typedef struct identity_role_put {
    const char *tenant_id;
    const char *role_id;
    const char *display_name;
    bool requires_mfa;
    const char *const *permissions; /* 0..IDENTITY_ROLE_PERMISSIONS_MAX; duplicates are folded */
    size_t npermissions;
    /* 0: any; IDENTITY_ROLE_VERSION_NEW: only create it (BASE_ERR_CONFLICT if it exists); else
     * BASE_ERR_CONFLICT unless the stored version is this. */
    int64_t expected_version;
    const char *changed_by; /* actor */
} identity_role_put;

#define IDENTITY_ROLE_VERSION_NEW (-1)

/* Create or change a tenant role: version 1 on creation, else version + 1, with a role_history row holding
 * the old and the new display name, MFA flag and permission set. A put that changes nothing bumps nothing
 * (*ret_changed false). A built-in role id: BASE_ERR_CONFLICT (built-in roles are never changed here).
 * ret_role (required) is the role after; ret_old (may be NULL) the role before (version 0: created);
 * ret_changed may be NULL. Clear both roles. */
BASE_MUST_USE base_result identity_store_role_put(db_pool *pool, const identity_role_put *in,
                                                  identity_role *ret_role, identity_role *ret_old,
                                                  bool *ret_changed);
/* The checks role_put makes on *in before touching the database: BASE_ERR_INVALID naming the field. */
BASE_MUST_USE base_result identity_store_role_put_check(const identity_role_put *in);

/* Who holds a role: the ACTIVE principals of the tenant granted role_id (a built-in role or the tenant's
 * own), by principal id (strcmp order), after after_id (NULL or "": from the start), at most limit
 * (1..IDENTITY_LIST_MAX) per page; more says whether another page follows (pass the last id as after_id).
 * For revoking the tokens of a role's holders when the role changes. An unknown role has no holders (n 0). */
typedef struct identity_holder_list {
    char (*ids)[IDENTITY_ID_MAX + 1];
    size_t n;
    bool more;
} identity_holder_list;

void identity_holder_list_free(identity_holder_list *list);
BASE_MUST_USE base_result identity_store_role_holders(db_pool *pool, const char *tenant_id,
                                                      const char *role_id, const char *after_id, int limit,
                                                      identity_holder_list *ret_list);

/* One row of role_history. */
typedef struct identity_role_change {
    int64_t version;
    char **old_permissions; /* NULL for version 1 */
    size_t nold_permissions;
    char **permissions;
    size_t npermissions;
    bool old_requires_mfa, requires_mfa;
    char changed_by[IDENTITY_ACTOR_MAX + 1];
    int64_t changed_us;
} identity_role_change;

typedef struct identity_role_history {
    identity_role_change *items;
    size_t n;
} identity_role_history;

void identity_role_history_free(identity_role_history *h);
/* The history of one role of the tenant's view, oldest first. */
BASE_MUST_USE base_result identity_store_role_history(db_pool *pool, const char *tenant_id,
                                                      const char *role_id,
                                                      identity_role_history *ret_history);

/* Grant a role (built-in or the tenant's own) to a principal of the tenant. BASE_ERR_NOT_FOUND for a
 * principal or role outside the tenant's view, BASE_ERR_EXISTS when already granted. Whether the caller may
 * grant it (platform_admin) is the service's decision. */
BASE_MUST_USE base_result identity_store_grant(db_pool *pool, const char *tenant_id, const char *principal_id,
                                               const char *role_id, const char *granted_by);
/* BASE_ERR_NOT_FOUND when the principal (in the tenant) does not hold it. */
BASE_MUST_USE base_result identity_store_revoke(db_pool *pool, const char *tenant_id,
                                                const char *principal_id, const char *role_id);

/* What a principal may do now: its granted roles (each with its version and permissions, by role id), the
 * union of their permissions, and whether MFA is required (a role requires it or the tenant requires it for
 * everyone). One REPEATABLE READ snapshot. */
typedef struct identity_effective {
    identity_principal_state state;
    identity_role *roles;
    size_t nroles;
    char **permissions; /* sorted, unique */
    size_t npermissions;
    bool requires_mfa;
    bool totp_confirmed; /* a confirmed TOTP enrolment exists */
} identity_effective;

void identity_effective_free(identity_effective *e);
BASE_MUST_USE base_result identity_store_effective(db_pool *pool, const char *tenant_id,
                                                   const char *principal_id,
                                                   identity_effective *ret_effective);

/* ---- Care relationships -------------------------------------------------------------------------------- */

typedef enum identity_relationship_kind {
    IDENTITY_REL_PRIMARY_CARE = 1, /* the proto's RELATIONSHIP_KIND_* numbers */
    IDENTITY_REL_SPECIALIST = 2,
    IDENTITY_REL_CARE_TEAM = 3,
    IDENTITY_REL_COVERING = 4,
} identity_relationship_kind;

typedef struct identity_relationship {
    char relationship_id[IDENTITY_ID_MAX + 1];
    char tenant_id[IDENTITY_TENANT_ID_MAX + 1];
    char clinician_id[IDENTITY_ID_MAX + 1];
    char patient_ref[IDENTITY_PATIENT_REF_LEN + 1];
    identity_relationship_kind kind;
    int64_t start_us;
    int64_t end_us; /* 0: open-ended */
    char created_by[IDENTITY_ACTOR_MAX + 1];
    int64_t created_us;
    char ended_by[IDENTITY_ACTOR_MAX + 1]; /* "" unless ended by identity_store_relationship_end */
} identity_relationship;

typedef struct identity_relationship_list {
    identity_relationship *items;
    size_t n;
} identity_relationship_list;

void identity_relationship_list_free(identity_relationship_list *list);

typedef struct identity_relationship_new {
    const char *relationship_id; /* NULL: a fresh "rel_" id */
    const char *tenant_id;
    const char *clinician_id; /* a principal of the tenant */
    const char *patient_ref;
    identity_relationship_kind kind;
    int64_t start_us; /* 0: now */
    int64_t end_us;   /* 0: open-ended; else > start */
    const char *created_by;
} identity_relationship_new;

BASE_MUST_USE base_result identity_store_relationship_create(db_pool *pool,
                                                             const identity_relationship_new *in,
                                                             identity_relationship *ret_relationship);
/* One relationship of the tenant (BASE_ERR_NOT_FOUND outside it). */
BASE_MUST_USE base_result identity_store_relationship_get(db_pool *pool, const char *tenant_id,
                                                          const char *relationship_id,
                                                          identity_relationship *ret_relationship);
/* End it at end_us (0: now); an end before the start cancels it (end = start: never in force). Only a
 * relationship that has not ended by then can be ended: else BASE_ERR_CONFLICT. */
BASE_MUST_USE base_result identity_store_relationship_end(db_pool *pool, const char *tenant_id,
                                                          const char *relationship_id, int64_t end_us,
                                                          const char *ended_by,
                                                          identity_relationship *ret_relationship);
/* Relationships in force now (start <= now < end) between the clinician and the patient, by start. */
BASE_MUST_USE base_result identity_store_relationships_active(db_pool *pool, const char *tenant_id,
                                                              const char *clinician_id,
                                                              const char *patient_ref,
                                                              identity_relationship_list *ret_list);
/* NOT tenant-scoped: for rebuilding the Redis mirror at start-up. Every relationship of every tenant that
 * is not over (no end, or an end after now and after its start: future starts are included, as the mirror
 * carries the start; cancelled ones are not), by relationship id, after
 * after_id (NULL or "" from the start), at most limit (1..IDENTITY_LIST_MAX); fewer than limit: the end. */
BASE_MUST_USE base_result identity_store_relationships_current_all(db_pool *pool, const char *after_id,
                                                                   int limit,
                                                                   identity_relationship_list *ret_list);

/* ---- Break-glass --------------------------------------------------------------------------------------- */

typedef struct identity_break_glass {
    char grant_id[IDENTITY_ID_MAX + 1];
    char tenant_id[IDENTITY_TENANT_ID_MAX + 1];
    char clinician_id[IDENTITY_ID_MAX + 1];
    char patient_ref[IDENTITY_PATIENT_REF_LEN + 1];
    char reason[IDENTITY_BREAK_GLASS_REASON_MAX + 1];
    int64_t start_us;
    int64_t end_us;
    int64_t created_us;
} identity_break_glass;

typedef struct identity_break_glass_list {
    identity_break_glass *items;
    size_t n;
    bool more; /* another page follows: pass the last item's (created_us, grant_id) as the cursor */
} identity_break_glass_list;

void identity_break_glass_list_free(identity_break_glass_list *list);

typedef struct identity_break_glass_new {
    const char *grant_id; /* NULL: a fresh "bg_" id */
    const char *tenant_id;
    const char *clinician_id; /* a principal of the tenant */
    const char *patient_ref;
    const char *reason;   /* IDENTITY_BREAK_GLASS_REASON_MIN..MAX bytes */
    int duration_minutes; /* 1..IDENTITY_BREAK_GLASS_MAX_MIN */
    int64_t start_us;     /* 0: now */
} identity_break_glass_new;

BASE_MUST_USE base_result identity_store_break_glass_create(db_pool *pool, const identity_break_glass_new *in,
                                                            identity_break_glass *ret_grant);
/* The tenant's grants created at or after since_us, by (created_us, grant_id), after the cursor
 * (after_grant_id NULL or "": from the start; else the last item of the previous page with its created_us),
 * at most limit (1..IDENTITY_LIST_MAX). */
BASE_MUST_USE base_result identity_store_break_glass_list(db_pool *pool, const char *tenant_id,
                                                          int64_t since_us, int64_t after_created_us,
                                                          const char *after_grant_id, int limit,
                                                          identity_break_glass_list *ret_list);
/* The grant that lets this clinician of the tenant at this patient at instant at_us (0: now): start <= at
 * < end; of several, the one that ends last. *ret_found false (and *ret_grant untouched) when there is none.
 * One index lookup (break_glass_active, 0004), however many grants the tenant has. */
BASE_MUST_USE base_result identity_store_break_glass_active(db_pool *pool, const char *tenant_id,
                                                            const char *clinician_id, const char *patient_ref,
                                                            int64_t at_us, identity_break_glass *ret_grant,
                                                            bool *ret_found);
/* NOT tenant-scoped: for rebuilding the Redis mirror. Every unexpired grant (end > now) of every tenant, by
 * grant id, after after_id, at most limit; more says whether another page follows. */
BASE_MUST_USE base_result identity_store_break_glass_current_all(db_pool *pool, const char *after_id,
                                                                 int limit,
                                                                 identity_break_glass_list *ret_list);

/* ---- Partner clients ----------------------------------------------------------------------------------- */

typedef struct identity_partner_client {
    char client_id[IDENTITY_CLIENT_ID_MAX + 1];
    char tenant_id[IDENTITY_TENANT_ID_MAX + 1];
    char display_name[IDENTITY_DISPLAY_NAME_MAX + 1];
    char *jwks_json; /* owned; as Postgres normalises jsonb (key order, spacing) */
    char **scopes;   /* owned */
    size_t nscopes;
    bool disabled;
    int64_t created_us;
} identity_partner_client;

/* Free what a client owns and zero it. Accepts NULL. */
void identity_partner_client_clear(identity_partner_client *client);

typedef struct identity_partner_client_new {
    const char *client_id;
    const char *tenant_id; /* a health plan tenant: else BASE_ERR_CONFLICT */
    const char *display_name;
    const char *jwks_json; /* a JSON object with a "keys" array, at most IDENTITY_JWKS_MAX bytes */
    const char *const *scopes;
    size_t nscopes; /* 0..IDENTITY_SCOPES_MAX */
    const char *created_by;
} identity_partner_client_new;

BASE_MUST_USE base_result identity_store_partner_client_register(db_pool *pool,
                                                                 const identity_partner_client_new *in,
                                                                 identity_partner_client *ret_client);
/* The checks partner_client_register makes on *in before touching the database (the JWKS is parsed by the
 * database, so a JWKS that is not JSON passes here and fails there): BASE_ERR_INVALID naming the field. */
BASE_MUST_USE base_result identity_store_partner_client_check(const identity_partner_client_new *in);
BASE_MUST_USE base_result identity_store_partner_client_get(db_pool *pool, const char *tenant_id,
                                                            const char *client_id,
                                                            identity_partner_client *ret_client);
/* NOT tenant-scoped: the partner gateway knows only the client id (from the client's signed assertion) and
 * acts within the tenant of the row returned. */
BASE_MUST_USE base_result identity_store_partner_client_find(db_pool *pool, const char *client_id,
                                                             identity_partner_client *ret_client);

/* ---- Token signing keys (platform-wide) ---------------------------------------------------------------- */

typedef enum identity_key_state {
    IDENTITY_KEY_CURRENT = 1,
    IDENTITY_KEY_PREVIOUS = 2,
    IDENTITY_KEY_RETIRED = 3,
} identity_key_state;

typedef struct identity_signing_key {
    char kid[IDENTITY_KID_MAX + 1];
    identity_key_state state;
    unsigned char public_key[IDENTITY_PUBLIC_KEY_LEN];
    unsigned char sealed_private[IDENTITY_SEALED_MAX]; /* the current key only */
    size_t sealed_len;                                 /* 0 for the others */
    int64_t created_us;
} identity_signing_key;

typedef struct identity_signing_keys {
    size_t n; /* 0..2: the current key first, then the previous one */
    identity_signing_key keys[2];
} identity_signing_keys;

/* The first key (no current key yet): BASE_ERR_EXISTS when a current key (or the kid) exists. */
BASE_MUST_USE base_result
identity_store_signing_key_insert(db_pool *pool, const char *kid, const unsigned char *sealed,
                                  size_t sealed_len, const unsigned char public_key[IDENTITY_PUBLIC_KEY_LEN]);
/* The keys to publish (and the one to sign with). */
BASE_MUST_USE base_result identity_store_signing_keys_list(db_pool *pool, identity_signing_keys *ret_keys);
/* In one transaction: previous -> retired, current -> previous (its private half dropped), the new key
 * current. Concurrent rotations queue on a lock; BASE_ERR_EXISTS when the kid is taken. */
BASE_MUST_USE base_result
identity_store_signing_key_rotate(db_pool *pool, const char *kid, const unsigned char *sealed,
                                  size_t sealed_len, const unsigned char public_key[IDENTITY_PUBLIC_KEY_LEN]);

#endif
