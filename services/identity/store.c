/* The identity service's Postgres store. See store.h for the contract and migrations/ for the schema.
 *
 * Every statement below is a constant (common/db's rule): data travels as $n parameters, lists as text[]
 * literals built by common/db's db_array (every element double-quoted and escaped), bytes as binary
 * parameters or hex text decoded server-side. Timestamps cross the boundary as microseconds since the epoch:
 * TS($n) turns a bigint parameter into a timestamptz and US(col) a timestamptz into a bigint, both exactly.
 *
 * Each public function runs one db_transaction. A transaction body may run more than once (a retried
 * serialization failure), so bodies write only into their context, resetting it first, and the public
 * function copies the context to the caller's outputs after the commit. */
#include "store.h"

#include "base/utf8.h"
#include "identity_migrations.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TXN_ATTEMPTS   10
#define DEFAULT_SCHEMA "identity"
/* pg_advisory_xact_lock key serialising signing key changes across replicas ("almaIDKY"). */
#define SIGNING_KEY_LOCK "7020106183772228441"

#define FAIL_FIELD(field, what) base_fail(BASE_ERR_INVALID, "identity store: %s: %s", (field), (what))

/* ---- SQL (constants only) --------------------------------------------------------------------------- */

/* $n (bigint microseconds since the epoch) as a timestamptz, and a timestamptz column as that bigint. */
#define TS(n)   "(timestamptz 'epoch' + $" #n "::bigint * interval '1 microsecond')"
#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"
/* $n, or now() when $n is 0. */
#define TS_OR_NOW(n) "(CASE WHEN $" #n "::bigint = 0 THEN now() ELSE " TS(n) " END)"

#define TENANT_COLS "tenant_id, kind, display_name, mfa_required_for_all, " US("created_at")
static const char SQL_TENANT_INSERT[] =
    "INSERT INTO tenants (tenant_id, kind, display_name, mfa_required_for_all) "
    "VALUES ($1, $2, $3, $4::boolean) RETURNING " TENANT_COLS;
static const char SQL_TENANT_GET[] = "SELECT " TENANT_COLS " FROM tenants WHERE tenant_id = $1";
static const char SQL_TENANT_KIND[] = "SELECT kind FROM tenants WHERE tenant_id = $1";
static const char SQL_ANY_TENANT[] = "SELECT 1 FROM tenants LIMIT 1";

#define PRINCIPAL_COLS                                                                                       \
    "tenant_id, principal_id, kind, username, display_name, state, " US("created_at") ", created_by, " US(   \
        "disabled_at") ", disabled_reason"
static const char SQL_PRINCIPAL_INSERT[] =
    "INSERT INTO principals (tenant_id, principal_id, kind, username, display_name, created_by) "
    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING " PRINCIPAL_COLS;
static const char SQL_USERNAME_TAKEN[] = "SELECT 1 FROM principals WHERE tenant_id = $1 AND username = $2";
static const char SQL_PRINCIPAL_GET[] =
    "SELECT " PRINCIPAL_COLS " FROM principals WHERE tenant_id = $1 AND principal_id = $2";
static const char SQL_PRINCIPAL_BY_USERNAME[] =
    "SELECT " PRINCIPAL_COLS " FROM principals WHERE tenant_id = $1 AND username = $2";
static const char SQL_PRINCIPAL_EXISTS[] =
    "SELECT 1 FROM principals WHERE tenant_id = $1 AND principal_id = $2";
static const char SQL_PRINCIPAL_DISABLE[] =
    "UPDATE principals SET state = 'disabled', disabled_at = now(), disabled_reason = $3 "
    "WHERE tenant_id = $1 AND principal_id = $2 AND state = 'active' RETURNING " PRINCIPAL_COLS;

/* Upserts that insert nothing when the principal is not in the tenant (affected rows 0). */
static const char SQL_PASSWORD_SET[] =
    "INSERT INTO password_hashes (principal_id, tenant_id, encoded) "
    "SELECT principal_id, tenant_id, $3::text FROM principals WHERE tenant_id = $1 AND principal_id = $2 "
    "ON CONFLICT (principal_id) DO UPDATE SET encoded = EXCLUDED.encoded, updated_at = now() "
    "WHERE password_hashes.tenant_id = EXCLUDED.tenant_id";
static const char SQL_PASSWORD_GET[] =
    "SELECT encoded, " US("updated_at") " FROM password_hashes "
                                        "WHERE tenant_id = $1 AND principal_id = $2";

static const char SQL_TOTP_PUT[] =
    "INSERT INTO totp (principal_id, tenant_id, sealed_secret) "
    "SELECT principal_id, tenant_id, $3::bytea FROM principals WHERE tenant_id = $1 AND principal_id = $2 "
    "ON CONFLICT (principal_id) DO UPDATE SET sealed_secret = EXCLUDED.sealed_secret, confirmed = false, "
    "confirmed_at = NULL, last_step = 0, created_at = now() WHERE totp.tenant_id = EXCLUDED.tenant_id";
static const char SQL_TOTP_GET[] = "SELECT sealed_secret, confirmed, last_step, " US("created_at") ", " US(
    "confirmed_at") " FROM totp "
                    "WHERE tenant_id = $1 AND principal_id = $2";
static const char SQL_TOTP_LOCK[] =
    "SELECT confirmed, last_step FROM totp WHERE tenant_id = $1 AND principal_id = $2 FOR UPDATE";
static const char SQL_TOTP_CONFIRM[] =
    "UPDATE totp SET confirmed = true, confirmed_at = now(), last_step = $3::bigint "
    "WHERE tenant_id = $1 AND principal_id = $2 AND NOT confirmed AND last_step < $3::bigint";
static const char SQL_TOTP_USE_STEP[] =
    "UPDATE totp SET last_step = $3::bigint "
    "WHERE tenant_id = $1 AND principal_id = $2 AND last_step < $3::bigint";
static const char SQL_TOTP_EXISTS[] = "SELECT 1 FROM totp WHERE tenant_id = $1 AND principal_id = $2";
/* An enrolment confirmed at creation (alma-admin bootstrap): last_step 0, so any current code works once. */
static const char SQL_TOTP_INSERT_CONFIRMED[] =
    "INSERT INTO totp (principal_id, tenant_id, sealed_secret, confirmed, confirmed_at) "
    "VALUES ($2, $1, $3::bytea, true, now())";

static const char SQL_RECOVERY_DELETE[] =
    "DELETE FROM recovery_codes WHERE tenant_id = $1 AND principal_id = $2";
static const char SQL_RECOVERY_INSERT[] =
    "INSERT INTO recovery_codes (principal_id, tenant_id, idx, code_hmac) "
    "SELECT $2::text, $1::text, u.i - 1, decode(u.h, 'hex') FROM unnest($3::text[]) WITH ORDINALITY AS u(h, "
    "i)";
static const char SQL_RECOVERY_LIST[] =
    "SELECT idx, code_hmac, " US("used_at") " FROM recovery_codes "
                                            "WHERE tenant_id = $1 AND principal_id = $2 ORDER BY idx";
static const char SQL_RECOVERY_USE[] =
    "UPDATE recovery_codes SET used_at = now() WHERE tenant_id = $1 AND principal_id = $2 "
    "AND idx = $3::smallint AND code_hmac = $4::bytea AND used_at IS NULL";

/* A role with its permissions, space-separated (a permission name holds no space), in strcmp order. */
#define ROLE_COLS                                                                                            \
    "r.tenant_id, r.role_id, r.display_name, r.requires_mfa, r.version, r.built_in, " US(                    \
        "r.updated_at") ", coalesce((SELECT string_agg(p.permission, ' ' ORDER BY p.permission COLLATE "     \
                        "\"C\") "                                                                            \
                        "FROM role_permissions p WHERE p.tenant_id = r.tenant_id AND p.role_id = "           \
                        "r.role_id), '')"
static const char SQL_ROLES_LIST[] = "SELECT " ROLE_COLS " FROM roles r WHERE r.tenant_id IN ('', $1) "
                                     "ORDER BY r.built_in DESC, r.role_id COLLATE \"C\"";
static const char SQL_ROLE_GET[] =
    "SELECT " ROLE_COLS " FROM roles r WHERE r.tenant_id IN ('', $1) AND r.role_id = $2";
static const char SQL_ROLE_BUILTIN[] = "SELECT 1 FROM roles WHERE tenant_id = '' AND role_id = $1";
static const char SQL_ROLE_LOCK[] =
    "SELECT version FROM roles WHERE tenant_id = $1 AND role_id = $2 FOR UPDATE";
static const char SQL_ROLE_INSERT[] = "INSERT INTO roles (tenant_id, role_id, display_name, requires_mfa) "
                                      "VALUES ($1, $2, $3, $4::boolean)";
static const char SQL_ROLE_UPDATE[] =
    "UPDATE roles SET display_name = $3, requires_mfa = $4::boolean, version = version + 1, updated_at = "
    "now() "
    "WHERE tenant_id = $1 AND role_id = $2 AND NOT built_in RETURNING version";
static const char SQL_ROLE_PERMS_DELETE[] =
    "DELETE FROM role_permissions WHERE tenant_id = $1 AND role_id = $2";
static const char SQL_ROLE_PERMS_INSERT[] = "INSERT INTO role_permissions (tenant_id, role_id, permission) "
                                            "SELECT $1::text, $2::text, u.p FROM unnest($3::text[]) AS u(p)";
static const char SQL_ROLE_HISTORY_INSERT[] =
    "INSERT INTO role_history (tenant_id, role_id, version, old_display_name, display_name, "
    "old_requires_mfa, "
    "requires_mfa, old_permissions, permissions, changed_by) "
    "VALUES ($1, $2, $3::bigint, $4, $5, $6::boolean, $7::boolean, $8::text[], $9::text[], $10)";
static const char SQL_ROLE_HISTORY[] =
    "SELECT h.version, array_to_string(h.old_permissions, ' '), array_to_string(h.permissions, ' '), "
    "h.old_requires_mfa, h.requires_mfa, h.changed_by, " US(
        "h.changed_at") " FROM role_history h "
                        "WHERE h.tenant_id IN ('', $1) AND h.role_id = $2 ORDER BY h.version";

static const char SQL_GRANT_INSERT[] =
    "INSERT INTO grants (tenant_id, principal_id, role_tenant_id, role_id, granted_by) "
    "SELECT $1::text, $2::text, r.tenant_id, r.role_id, $4::text FROM roles r "
    "WHERE r.tenant_id IN ('', $1::text) AND r.role_id = $3::text";
static const char SQL_GRANTS_INSERT[] =
    "INSERT INTO grants (tenant_id, principal_id, role_tenant_id, role_id, granted_by) "
    "SELECT $1::text, $2::text, r.tenant_id, r.role_id, $4::text FROM roles r "
    "WHERE r.tenant_id IN ('', $1::text) AND r.role_id = ANY ($3::text[])";
/* Active holders of a role in a tenant, a page at a time (grants_by_tenant_role, 0004). */
static const char SQL_ROLE_HOLDERS[] =
    "SELECT g.principal_id FROM grants g JOIN principals p "
    "ON p.tenant_id = g.tenant_id AND p.principal_id = g.principal_id "
    "WHERE g.tenant_id = $1 AND g.role_id = $2 AND p.state = 'active' AND g.principal_id COLLATE \"C\" > $3 "
    "ORDER BY g.principal_id COLLATE \"C\" LIMIT $4::integer";
static const char SQL_REVOKE[] =
    "DELETE FROM grants WHERE tenant_id = $1 AND principal_id = $2 AND role_id = $3";
static const char SQL_EFFECTIVE_PRINCIPAL[] =
    "SELECT p.state, t.mfa_required_for_all, EXISTS (SELECT 1 FROM totp o WHERE o.tenant_id = p.tenant_id "
    "AND o.principal_id = p.principal_id AND o.confirmed) "
    "FROM principals p JOIN tenants t ON t.tenant_id = p.tenant_id "
    "WHERE p.tenant_id = $1 AND p.principal_id = $2";
static const char SQL_EFFECTIVE_ROLES[] =
    "SELECT " ROLE_COLS
    " FROM grants g JOIN roles r ON r.tenant_id = g.role_tenant_id AND r.role_id = g.role_id "
    "WHERE g.tenant_id = $1 AND g.principal_id = $2 ORDER BY r.role_id COLLATE \"C\"";

#define REL_COLS                                                                                             \
    "relationship_id, tenant_id, clinician_id, patient_ref, kind, " US("start_at") ", " US(                  \
        "end_at") ", created_by, " US("created_at") ", ended_by"
static const char SQL_REL_INSERT[] =
    "INSERT INTO care_relationships (relationship_id, tenant_id, clinician_id, patient_ref, kind, start_at, "
    "end_at, created_by) VALUES ($1, $2, $3, $4, $5, " TS_OR_NOW(
        6) ", "
           "CASE WHEN $7::bigint = 0 THEN NULL ELSE " TS(7) " END, $8) RETURNING " REL_COLS;
/* Ending before the start cancels: end = start. Only a relationship not ended by then. */
static const char SQL_REL_END[] =
    "UPDATE care_relationships SET end_at = greatest(start_at, e.t), ended_by = $4, ended_at = now() "
    "FROM (SELECT " TS_OR_NOW(3) " AS t) AS e "
                                 "WHERE tenant_id = $1 AND relationship_id = $2 AND ended_by IS NULL AND "
                                 "(end_at IS NULL OR end_at > e.t) "
                                 "RETURNING " REL_COLS;
static const char SQL_REL_GET[] =
    "SELECT " REL_COLS " FROM care_relationships WHERE tenant_id = $1 AND relationship_id = $2";
static const char SQL_REL_EXISTS[] =
    "SELECT 1 FROM care_relationships WHERE tenant_id = $1 AND relationship_id = $2";
static const char SQL_REL_ACTIVE[] =
    "SELECT " REL_COLS " FROM care_relationships WHERE tenant_id = $1 AND clinician_id = $2 "
    "AND patient_ref = $3 AND start_at <= now() AND (end_at IS NULL OR end_at > now()) "
    "ORDER BY start_at, relationship_id COLLATE \"C\"";
static const char SQL_REL_CURRENT_ALL[] =
    "SELECT " REL_COLS
    " FROM care_relationships WHERE (end_at IS NULL OR end_at > greatest(start_at, now())) "
    "AND relationship_id COLLATE \"C\" > $1 ORDER BY relationship_id COLLATE \"C\" LIMIT $2::integer";

#define BG_COLS                                                                                              \
    "grant_id, tenant_id, clinician_id, patient_ref, reason, " US("start_at") ", " US("end_at") ", " US(     \
        "created_at")
static const char SQL_BG_INSERT[] =
    "INSERT INTO break_glass_grants (grant_id, tenant_id, clinician_id, "
    "patient_ref, reason, start_at, end_at) "
    "SELECT $1::text, $2::text, $3::text, $4::text, $5::text, s.t, s.t + $7::integer * interval '1 minute' "
    "FROM (SELECT " TS_OR_NOW(6) " AS t) AS s RETURNING " BG_COLS;
static const char SQL_BG_LIST[] =
    "SELECT " BG_COLS " FROM break_glass_grants WHERE tenant_id = $1 AND created_at >= " TS(
        2) " "
           "AND ($4 = '' OR created_at > " TS(3) " OR (created_at = " TS(
               3) " AND grant_id COLLATE \"C\" > $4)) "
                  "ORDER BY created_at, grant_id COLLATE \"C\" LIMIT $5::integer";
/* The grant in force at $4 (0: now) for one clinician and patient: one probe of break_glass_active (0004). */
static const char SQL_BG_ACTIVE[] = "SELECT " BG_COLS " FROM break_glass_grants, (SELECT " TS_OR_NOW(
    4) " AS t) AS s "
       "WHERE tenant_id = $1 AND clinician_id = $2 AND patient_ref = $3 AND end_at > s.t AND start_at <= s.t "
       "ORDER BY end_at DESC, grant_id COLLATE \"C\" LIMIT 1";
static const char SQL_BG_CURRENT_ALL[] =
    "SELECT " BG_COLS " FROM break_glass_grants WHERE end_at > now() AND grant_id COLLATE \"C\" > $1 "
    "ORDER BY grant_id COLLATE \"C\" LIMIT $2::integer";

#define CLIENT_COLS                                                                                          \
    "client_id, tenant_id, display_name, jwks::text, array_to_string(scopes, ' '), disabled, " US(           \
        "created_at")
static const char SQL_CLIENT_INSERT[] =
    "INSERT INTO partner_clients (client_id, tenant_id, display_name, jwks, scopes, created_by) "
    "VALUES ($1, $2, $3, $4::jsonb, $5::text[], $6) RETURNING " CLIENT_COLS;
static const char SQL_CLIENT_GET[] =
    "SELECT " CLIENT_COLS " FROM partner_clients WHERE tenant_id = $1 AND client_id = $2";
static const char SQL_CLIENT_FIND[] = "SELECT " CLIENT_COLS " FROM partner_clients WHERE client_id = $1";

static const char SQL_KEY_LOCK[] = "SELECT pg_advisory_xact_lock($1::bigint)";
static const char SQL_KEY_INSERT[] = "INSERT INTO signing_keys (kid, sealed_private, public_key, state) "
                                     "VALUES ($1, $2::bytea, $3::bytea, 'current')";
static const char SQL_KEY_RETIRE[] =
    "UPDATE signing_keys SET state = 'retired', retired_at = now() WHERE state = 'previous'";
static const char SQL_KEY_DEMOTE[] =
    "UPDATE signing_keys SET state = 'previous', sealed_private = NULL WHERE state = 'current'";
static const char SQL_KEYS_LIST[] = "SELECT kid, state, public_key, sealed_private, " US(
    "created_at") " FROM signing_keys "
                  "WHERE state IN ('current', 'previous') ORDER BY state = 'current' DESC";

/* ---- Validation ---------------------------------------------------------------------------------------- */

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool valid_tenant_id(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, IDENTITY_TENANT_ID_MAX + 1);
    if (n < 2 || n > IDENTITY_TENANT_ID_MAX || !is_lower_alnum(s[0]))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!is_lower_alnum(s[i]) && s[i] != '-')
            return false;
    }
    return true;
}

/* prefix + exactly 32 lowercase hex digits. */
static bool valid_hex_id(const char *s, const char *prefix)
{
    if (!s)
        return false;
    size_t p = strlen(prefix);
    if (strncmp(s, prefix, p) != 0 || strnlen(s, p + 33) != p + 32)
        return false;
    for (size_t i = p; i < p + 32; i++) {
        if (!is_hex_lower(s[i]))
            return false;
    }
    return true;
}

static bool valid_principal_id(const char *s)
{
    return valid_hex_id(s, "usr_") || valid_hex_id(s, "svc_");
}

static bool valid_patient_ref(const char *s)
{
    return valid_hex_id(s, "pt_");
}

/* A principal id, or "system:" + [a-z0-9._-]{1,64}. */
static bool valid_actor(const char *s)
{
    if (!s)
        return false;
    if (valid_principal_id(s))
        return true;
    if (strncmp(s, "system:", 7) != 0)
        return false;
    size_t n = strnlen(s + 7, 65);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[7 + i];
        if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-')
            return false;
    }
    return true;
}

static bool valid_username(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, IDENTITY_USERNAME_MAX + 1);
    if (n < 3 || n > IDENTITY_USERNAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '@' && c != '-')
            return false;
    }
    return true;
}

static bool valid_role_id(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, IDENTITY_ROLE_ID_MAX + 1);
    if (n < 2 || n > IDENTITY_ROLE_ID_MAX || !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!is_lower_alnum(s[i]) && s[i] != '_')
            return false;
    }
    return true;
}

/* Dotted words [a-z][a-z0-9_]*, 2..8 of them, at most IDENTITY_PERMISSION_MAX bytes. */
static bool valid_permission(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, IDENTITY_PERMISSION_MAX + 1);
    if (n == 0 || n > IDENTITY_PERMISSION_MAX)
        return false;
    int words = 0;
    bool word_start = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (word_start) {
            if (!(c >= 'a' && c <= 'z'))
                return false;
            words++;
            word_start = false;
        } else if (c == '.') {
            word_start = true;
        } else if (!is_lower_alnum(c) && c != '_') {
            return false;
        }
    }
    return !word_start && words >= 2 && words <= 8;
}

/* (system|user|patient)/(Resource|*).(read|write|*|[cruds]{1,5}), Resource = [A-Z][A-Za-z]{0,63}. */
static bool valid_scope(const char *s)
{
    if (!s)
        return false;
    const char *p = NULL;
    if (strncmp(s, "system/", 7) == 0)
        p = s + 7;
    else if (strncmp(s, "user/", 5) == 0)
        p = s + 5;
    else if (strncmp(s, "patient/", 8) == 0)
        p = s + 8;
    else
        return false;
    if (*p == '*') {
        p++;
    } else {
        if (!(*p >= 'A' && *p <= 'Z'))
            return false;
        size_t n = 1;
        for (p++; (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'); p++) {
            if (++n > 64)
                return false;
        }
    }
    if (*p++ != '.')
        return false;
    if (strcmp(p, "read") == 0 || strcmp(p, "write") == 0 || strcmp(p, "*") == 0)
        return true;
    size_t n = strlen(p);
    if (n < 1 || n > 5)
        return false;
    return strspn(p, "cruds") == n;
}

static bool valid_client_id(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, IDENTITY_CLIENT_ID_MAX + 1);
    if (n < 3 || n > IDENTITY_CLIENT_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '-')))
            return false;
    }
    return true;
}

static bool valid_kid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, IDENTITY_KID_MAX + 1);
    if (n < IDENTITY_KID_MIN || n > IDENTITY_KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* min..max bytes of well-formed UTF-8 without ASCII control characters other than those in `allowed`. */
static bool valid_text(const char *s, size_t min, size_t max, const char *allowed)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n < min || n > max)
        return false;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = base_utf8_next(u + i, n - i, &cp);
        if (k == 0)
            return false;
        if ((cp < 0x20 || cp == 0x7f) && !strchr(allowed, (int)cp))
            return false;
        i += k;
    }
    return true;
}

static bool valid_display_name(const char *s)
{
    return valid_text(s, 1, IDENTITY_DISPLAY_NAME_MAX, "");
}

static bool b64_run(const char **p, size_t min)
{
    size_t n = 0;
    for (; (**p >= 'A' && **p <= 'Z') || (**p >= 'a' && **p <= 'z') || (**p >= '0' && **p <= '9') ||
           **p == '+' || **p == '/';
         (*p)++)
        n++;
    return n >= min;
}

static bool digits_run(const char **p, size_t max)
{
    size_t n = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++)
        n++;
    return n >= 1 && n <= max;
}

/* "$argon2id$v=19$m=<digits>,t=<digits>,p=<digits>$<salt b64>$<hash b64>", at most 512 bytes. */
static bool valid_argon2id(const char *s)
{
    if (!s || strnlen(s, IDENTITY_PASSWORD_ENCODED_MAX + 1) > IDENTITY_PASSWORD_ENCODED_MAX)
        return false;
    const char *p = s;
    if (strncmp(p, "$argon2id$v=19$m=", 17) != 0)
        return false;
    p += 17;
    if (!digits_run(&p, 10) || strncmp(p, ",t=", 3) != 0)
        return false;
    p += 3;
    if (!digits_run(&p, 10) || strncmp(p, ",p=", 3) != 0)
        return false;
    p += 3;
    if (!digits_run(&p, 3) || *p++ != '$')
        return false;
    if (!b64_run(&p, 11) || *p++ != '$')
        return false;
    return b64_run(&p, 16) && *p == '\0';
}

#define CHECK_TENANT(t)                                                                                      \
    BASE_ENSURE(valid_tenant_id(t), BASE_ERR_INVALID,                                                        \
                "identity store: tenant_id: must match [a-z0-9][a-z0-9-]{1,62}")
#define CHECK_PRINCIPAL(field, p)                                                                            \
    do {                                                                                                     \
        if (!valid_principal_id(p))                                                                          \
            return FAIL_FIELD(field, "must be usr_ or svc_ and 32 lowercase hex digits");                    \
    } while (0)
#define CHECK_ACTOR(field, a)                                                                                \
    do {                                                                                                     \
        if (!valid_actor(a))                                                                                 \
            return FAIL_FIELD(field, "must be a principal id or system:<name>");                             \
    } while (0)

/* ---- Helpers ------------------------------------------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void fmt_i64(char buf[24], int64_t v)
{
    snprintf(buf, 24, "%" PRId64, v);
}

static base_result random_id(const char *prefix, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n <= 0)
            return base_fail(BASE_ERR_INTERNAL, "identity store: no randomness for an id");
        got += (size_t)n;
    }
    size_t p = strlen(prefix);
    if (p + 33 > cap)
        return base_fail(BASE_ERR_INTERNAL, "identity store: id buffer too small");
    memcpy(out, prefix, p);
    for (size_t i = 0; i < sizeof b; i++) {
        out[p + 2 * i] = digits[b[i] >> 4];
        out[p + 2 * i + 1] = digits[b[i] & 15];
    }
    out[p + 32] = '\0';
    return BASE_OK_RESULT;
}

/* Replace a failure of kind `from` by `to` with a message naming the field (the database's message names a
 * constraint; ours says what it means). Other failures (retryable ones included) pass through unchanged. */
static base_result remap(base_result r, base_err from, base_err to, const char *msg)
{
    if (base_is_ok(r) || r.err != from)
        return r;
    return base_fail(to, "identity store: %s", msg);
}

static base_result text_array(const char *const *v, size_t n, char **ret)
{
    return db_text_array(v, n, ret);
}

/* {"<hex>",...} of n HMACs, decoded server-side. */
static base_result hmac_array(const unsigned char (*codes)[IDENTITY_RECOVERY_HMAC_LEN], size_t n, char **ret)
{
    db_array a;
    db_array_begin(&a);
    for (size_t i = 0; i < n; i++)
        db_array_hex(&a, codes[i], IDENTITY_RECOVERY_HMAC_LEN);
    base_result r = db_array_end(&a);
    if (!base_is_ok(r)) {
        db_array_free(&a);
        return r;
    }
    *ret = a.text;
    return BASE_OK_RESULT;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A sorted, duplicate-free copy of the pointers v[0..n) (the strings are not copied). */
static base_result sorted_unique(const char *const *v, size_t n, const char ***ret, size_t *ret_n)
{
    const char **s = malloc((n ? n : 1) * sizeof *s);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    for (size_t i = 0; i < n; i++)
        s[i] = v[i];
    qsort(s, n, sizeof *s, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || strcmp(s[k - 1], s[i]) != 0)
            s[k++] = s[i];
    }
    *ret = s;
    *ret_n = k;
    return BASE_OK_RESULT;
}

/* Split space-separated words into a malloc'd vector of malloc'd strings ("" -> none). */
static base_result split_words(const char *s, char ***ret, size_t *ret_n)
{
    size_t cap = 1;
    for (const char *c = s; *c; c++) {
        if (*c == ' ')
            cap++;
    }
    char **v = calloc(cap, sizeof *v);
    if (!v)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    size_t n = 0;
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, " ");
        if (len > 0) {
            v[n] = malloc(len + 1);
            if (!v[n]) {
                free_strv(v, n);
                return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
            }
            memcpy(v[n], p, len);
            v[n][len] = '\0';
            n++;
        }
        p += len;
        if (*p == ' ')
            p++;
    }
    *ret = v;
    *ret_n = n;
    return BASE_OK_RESULT;
}

/* ---- Result columns ------------------------------------------------------------------------------------ */

/* Text into a fixed buffer; SQL NULL reads as "". */
static base_result col_str(const db_result *res, int row, int col, char *dst, size_t cap)
{
    const char *v = db_result_get(res, row, col);
    if (!v) {
        dst[0] = '\0';
        return BASE_OK_RESULT;
    }
    size_t n = strlen(v);
    if (n >= cap)
        return base_fail(BASE_ERR_INTERNAL, "identity store: a stored value is longer than its field");
    memcpy(dst, v, n + 1);
    return BASE_OK_RESULT;
}

/* An integer; SQL NULL reads as 0. */
static base_result col_i64(const db_result *res, int row, int col, int64_t *ret)
{
    if (db_result_is_null(res, row, col)) {
        *ret = 0;
        return BASE_OK_RESULT;
    }
    return db_result_get_int64(res, row, col, ret);
}

static bool col_bool(const db_result *res, int row, int col)
{
    const char *v = db_result_get(res, row, col);
    return v && v[0] == 't';
}

/* bytea into a fixed buffer; SQL NULL reads as 0 bytes. */
static base_result col_bytes(const db_result *res, int row, int col, unsigned char *dst, size_t cap,
                             size_t *ret_len)
{
    if (db_result_is_null(res, row, col)) {
        *ret_len = 0;
        return BASE_OK_RESULT;
    }
    unsigned char *d = NULL;
    size_t n = 0;
    BASE_GUARD(db_result_get_bytea(res, row, col, &d, &n));
    if (n > cap) {
        free(d);
        return base_fail(BASE_ERR_INTERNAL, "identity store: stored bytes longer than their field");
    }
    memcpy(dst, d, n);
    free(d);
    *ret_len = n;
    return BASE_OK_RESULT;
}

/* Run a query expected to return at most one row: BASE_ERR_NOT_FOUND (with msg) when it returns none. */
static base_result query_row(db_conn *c, const char *sql, int n, const char *const *p, db_result **ret,
                             const char *not_found)
{
    db_result *res = NULL;
    BASE_GUARD(db_exec(c, sql, n, p, &res));
    if (db_result_ntuples(res) == 0) {
        db_result_free(res);
        return base_fail(BASE_ERR_NOT_FOUND, "identity store: %s", not_found);
    }
    *ret = res;
    return BASE_OK_RESULT;
}

static base_result require_principal(db_conn *c, const char *tenant_id, const char *principal_id,
                                     const char *field)
{
    const char *p[] = {tenant_id, principal_id};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_PRINCIPAL_EXISTS, 2, p, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "identity store: %s: no such principal in the tenant", field);
    return BASE_OK_RESULT;
}

static base_result require_tenant(db_conn *c, const char *tenant_id, char *ret_kind, size_t cap)
{
    const char *p[] = {tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, SQL_TENANT_KIND, 1, p, &res, "tenant_id: no such tenant"));
    if (ret_kind)
        BASE_GUARD(col_str(res, 0, 0, ret_kind, cap));
    return BASE_OK_RESULT;
}

static base_result run(db_pool *pool, db_isolation iso, db_txn_fn fn, void *arg)
{
    BASE_ENSURE(pool, BASE_ERR_INVALID, "identity store: pool: missing");
    return db_transaction(pool, iso, TXN_ATTEMPTS, fn, arg);
}

/* ---- Migrations ---------------------------------------------------------------------------------------- */

base_result identity_store_migrate(db_pool *pool, const char *schema)
{
    BASE_ENSURE(pool, BASE_ERR_INVALID, "identity store: pool: missing");
    db_migration_set set = identity_migrations;
    set.schema = schema ? schema : DEFAULT_SCHEMA;
    return db_migrate(pool, &set, NULL);
}

/* ---- Tenants ------------------------------------------------------------------------------------------- */

static const char *tenant_kind_text(identity_tenant_kind k)
{
    switch (k) {
    case IDENTITY_TENANT_PROVIDER:
        return "provider";
    case IDENTITY_TENANT_HEALTH_PLAN:
        return "health_plan";
    }
    return NULL;
}

static base_result parse_tenant(const db_result *res, int row, identity_tenant *t)
{
    memset(t, 0, sizeof *t);
    char kind[16];
    BASE_GUARD(col_str(res, row, 0, t->tenant_id, sizeof t->tenant_id));
    BASE_GUARD(col_str(res, row, 1, kind, sizeof kind));
    t->kind = strcmp(kind, "health_plan") == 0 ? IDENTITY_TENANT_HEALTH_PLAN : IDENTITY_TENANT_PROVIDER;
    BASE_GUARD(col_str(res, row, 2, t->display_name, sizeof t->display_name));
    t->mfa_required_for_all = col_bool(res, row, 3);
    return col_i64(res, row, 4, &t->created_us);
}

typedef struct tenant_ctx {
    const char *params[4];
    identity_tenant out;
} tenant_ctx;

static base_result tenant_create_body(db_conn *c, void *arg)
{
    tenant_ctx *x = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    base_result r = db_exec(c, SQL_TENANT_INSERT, 4, x->params, &res);
    BASE_GUARD(remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "tenant_id: already exists"));
    return parse_tenant(res, 0, &x->out);
}

base_result identity_store_tenant_check(const char *tenant_id, identity_tenant_kind kind,
                                        const char *display_name)
{
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(tenant_kind_text(kind), BASE_ERR_INVALID,
                "identity store: kind: must be provider or health plan");
    if (!valid_display_name(display_name))
        return FAIL_FIELD("display_name", "must be 1..200 bytes of UTF-8 without control characters");
    return BASE_OK_RESULT;
}

base_result identity_store_tenant_create(db_pool *pool, const char *tenant_id, identity_tenant_kind kind,
                                         const char *display_name, bool mfa_required_for_all,
                                         identity_tenant *ret_tenant)
{
    BASE_GUARD(identity_store_tenant_check(tenant_id, kind, display_name));
    tenant_ctx x = {
        .params = {tenant_id, tenant_kind_text(kind), display_name, mfa_required_for_all ? "true" : "false"}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, tenant_create_body, &x));
    if (ret_tenant)
        *ret_tenant = x.out;
    return BASE_OK_RESULT;
}

static base_result tenant_get_body(db_conn *c, void *arg)
{
    tenant_ctx *x = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, SQL_TENANT_GET, 1, x->params, &res, "tenant_id: no such tenant"));
    return parse_tenant(res, 0, &x->out);
}

base_result identity_store_tenant_get(db_pool *pool, const char *tenant_id, identity_tenant *ret_tenant)
{
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(ret_tenant, BASE_ERR_INVALID, "identity store: ret_tenant: missing");
    tenant_ctx x = {.params = {tenant_id}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, tenant_get_body, &x));
    *ret_tenant = x.out;
    return BASE_OK_RESULT;
}

/* ---- Principals ---------------------------------------------------------------------------------------- */

static base_result parse_principal(const db_result *res, int row, identity_principal *p)
{
    memset(p, 0, sizeof *p);
    char kind[16], state[16];
    BASE_GUARD(col_str(res, row, 0, p->tenant_id, sizeof p->tenant_id));
    BASE_GUARD(col_str(res, row, 1, p->principal_id, sizeof p->principal_id));
    BASE_GUARD(col_str(res, row, 2, kind, sizeof kind));
    p->kind = strcmp(kind, "service") == 0 ? IDENTITY_PRINCIPAL_SERVICE : IDENTITY_PRINCIPAL_USER;
    BASE_GUARD(col_str(res, row, 3, p->username, sizeof p->username));
    BASE_GUARD(col_str(res, row, 4, p->display_name, sizeof p->display_name));
    BASE_GUARD(col_str(res, row, 5, state, sizeof state));
    p->state = strcmp(state, "disabled") == 0 ? IDENTITY_PRINCIPAL_DISABLED : IDENTITY_PRINCIPAL_ACTIVE;
    BASE_GUARD(col_i64(res, row, 6, &p->created_us));
    BASE_GUARD(col_str(res, row, 7, p->created_by, sizeof p->created_by));
    BASE_GUARD(col_i64(res, row, 8, &p->disabled_us));
    return col_str(res, row, 9, p->disabled_reason, sizeof p->disabled_reason);
}

typedef struct principal_create_ctx {
    const identity_principal_new *in;
    char id[IDENTITY_ID_MAX + 1];
    const char *kind;
    char *roles_array; /* text[] literal, or NULL */
    size_t nroles;
    identity_principal out;
} principal_create_ctx;

/* The principal, its password hash and grants, within the caller's transaction. */
static base_result principal_insert(db_conn *c, principal_create_ctx *x)
{
    const identity_principal_new *in = x->in;
    BASE_GUARD(require_tenant(c, in->tenant_id, NULL, 0));
    {
        const char *p[] = {in->tenant_id, in->username};
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_USERNAME_TAKEN, 2, p, &res));
        if (db_result_ntuples(res) > 0)
            return base_fail(BASE_ERR_EXISTS, "identity store: username: already taken in the tenant");
    }
    {
        const char *p[] = {in->tenant_id, x->id, x->kind, in->username, in->display_name, in->created_by};
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        base_result r = db_exec(c, SQL_PRINCIPAL_INSERT, 6, p, &res);
        BASE_GUARD(
            remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "principal: username or principal_id already exists"));
        BASE_GUARD(parse_principal(res, 0, &x->out));
    }
    if (in->password_encoded) {
        const char *p[] = {in->tenant_id, x->id, in->password_encoded};
        BASE_GUARD(db_exec(c, SQL_PASSWORD_SET, 3, p, NULL));
    }
    if (x->nroles > 0) {
        const char *p[] = {in->tenant_id, x->id, x->roles_array, in->created_by};
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_GRANTS_INSERT, 4, p, &res));
        if (db_result_affected_rows(res) != (int64_t)x->nroles)
            return base_fail(BASE_ERR_NOT_FOUND, "identity store: roles: no such role in the tenant");
    }
    return BASE_OK_RESULT;
}

static base_result principal_create_body(db_conn *c, void *arg)
{
    return principal_insert(c, arg);
}

base_result identity_store_principal_check(const identity_principal_new *in)
{
    BASE_ENSURE(in, BASE_ERR_INVALID, "identity store: principal: missing");
    CHECK_TENANT(in->tenant_id);
    BASE_ENSURE(in->kind == IDENTITY_PRINCIPAL_USER || in->kind == IDENTITY_PRINCIPAL_SERVICE,
                BASE_ERR_INVALID, "identity store: kind: must be user or service");
    const char *prefix = in->kind == IDENTITY_PRINCIPAL_USER ? "usr_" : "svc_";
    if (in->principal_id && !valid_hex_id(in->principal_id, prefix))
        return FAIL_FIELD("principal_id",
                          "must be usr_ (users) or svc_ (services) and 32 lowercase hex digits");
    if (!valid_username(in->username))
        return FAIL_FIELD("username", "must match [a-z0-9._@-]{3,64}");
    if (!valid_display_name(in->display_name))
        return FAIL_FIELD("display_name", "must be 1..200 bytes of UTF-8 without control characters");
    if (in->password_encoded && !valid_argon2id(in->password_encoded))
        return FAIL_FIELD("password_encoded", "must be an argon2id PHC string of at most 512 bytes");
    CHECK_ACTOR("created_by", in->created_by);
    BASE_ENSURE(in->nroles <= IDENTITY_ROLES_MAX, BASE_ERR_INVALID, "identity store: roles: too many");
    BASE_ENSURE(in->nroles == 0 || in->roles, BASE_ERR_INVALID, "identity store: roles: missing");
    for (size_t i = 0; i < in->nroles; i++) {
        if (!valid_role_id(in->roles[i]))
            return FAIL_FIELD("roles", "must match [a-z][a-z0-9_]{1,63}");
        for (size_t j = 0; j < i; j++) {
            if (strcmp(in->roles[i], in->roles[j]) == 0)
                return FAIL_FIELD("roles", "duplicate role");
        }
    }
    return BASE_OK_RESULT;
}

/* Check *in and fill the context (id, roles literal: free x->roles_array). */
static base_result principal_prepare(const identity_principal_new *in, principal_create_ctx *x)
{
    BASE_GUARD(identity_store_principal_check(in));
    memset(x, 0, sizeof *x);
    x->in = in;
    x->kind = in->kind == IDENTITY_PRINCIPAL_USER ? "user" : "service";
    x->nroles = in->nroles;
    if (in->principal_id)
        memcpy(x->id, in->principal_id, strlen(in->principal_id) + 1);
    else
        BASE_GUARD(random_id(in->kind == IDENTITY_PRINCIPAL_USER ? "usr_" : "svc_", x->id, sizeof x->id));
    if (in->nroles > 0)
        BASE_GUARD(text_array(in->roles, in->nroles, &x->roles_array));
    return BASE_OK_RESULT;
}

base_result identity_store_principal_create(db_pool *pool, const identity_principal_new *in,
                                            identity_principal *ret_principal)
{
    principal_create_ctx x;
    BASE_GUARD(principal_prepare(in, &x));
    base_result r = run(pool, DB_READ_COMMITTED, principal_create_body, &x);
    free(x.roles_array);
    BASE_GUARD(r);
    if (ret_principal)
        *ret_principal = x.out;
    return BASE_OK_RESULT;
}

typedef struct principal_ctx {
    const char *sql;
    const char *params[3];
    const char *not_found;
    identity_principal out;
    bool changed;
} principal_ctx;

static base_result principal_get_body(db_conn *c, void *arg)
{
    principal_ctx *x = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, x->sql, 2, x->params, &res, x->not_found));
    return parse_principal(res, 0, &x->out);
}

base_result identity_store_principal_get(db_pool *pool, const char *tenant_id, const char *principal_id,
                                         identity_principal *ret_principal)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    BASE_ENSURE(ret_principal, BASE_ERR_INVALID, "identity store: ret_principal: missing");
    principal_ctx x = {.sql = SQL_PRINCIPAL_GET,
                       .params = {tenant_id, principal_id},
                       .not_found = "principal_id: no such principal in the tenant"};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, principal_get_body, &x));
    *ret_principal = x.out;
    return BASE_OK_RESULT;
}

base_result identity_store_principal_get_by_username(db_pool *pool, const char *tenant_id,
                                                     const char *username, identity_principal *ret_principal)
{
    CHECK_TENANT(tenant_id);
    if (!valid_username(username))
        return FAIL_FIELD("username", "must match [a-z0-9._@-]{3,64}");
    BASE_ENSURE(ret_principal, BASE_ERR_INVALID, "identity store: ret_principal: missing");
    principal_ctx x = {.sql = SQL_PRINCIPAL_BY_USERNAME,
                       .params = {tenant_id, username},
                       .not_found = "username: no such user in the tenant"};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, principal_get_body, &x));
    *ret_principal = x.out;
    return BASE_OK_RESULT;
}

static base_result principal_disable_body(db_conn *c, void *arg)
{
    principal_ctx *x = arg;
    x->changed = false;
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_PRINCIPAL_DISABLE, 3, x->params, &res));
        if (db_result_ntuples(res) == 1) {
            x->changed = true;
            return parse_principal(res, 0, &x->out);
        }
    }
    /* Not active: already disabled (report it as it is), or not in the tenant. */
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(
        query_row(c, SQL_PRINCIPAL_GET, 2, x->params, &res, "principal_id: no such principal in the tenant"));
    return parse_principal(res, 0, &x->out);
}

base_result identity_store_principal_disable(db_pool *pool, const char *tenant_id, const char *principal_id,
                                             const char *reason, identity_principal *ret_principal,
                                             bool *ret_changed)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (!valid_text(reason, 1, IDENTITY_DISABLE_REASON_MAX, "\t"))
        return FAIL_FIELD("reason", "must be 1..500 bytes of UTF-8 without control characters");
    principal_ctx x = {.params = {tenant_id, principal_id, reason}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, principal_disable_body, &x));
    if (ret_principal)
        *ret_principal = x.out;
    if (ret_changed)
        *ret_changed = x.changed;
    return BASE_OK_RESULT;
}

/* ---- Passwords ----------------------------------------------------------------------------------------- */

typedef struct password_ctx {
    const char *params[3];
    identity_password out;
} password_ctx;

static base_result password_set_body(db_conn *c, void *arg)
{
    password_ctx *x = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_PASSWORD_SET, 3, x->params, &res));
    if (db_result_affected_rows(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "identity store: principal_id: no such principal in the tenant");
    return BASE_OK_RESULT;
}

base_result identity_store_password_set(db_pool *pool, const char *tenant_id, const char *principal_id,
                                        const char *encoded)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (!valid_argon2id(encoded))
        return FAIL_FIELD("encoded", "must be an argon2id PHC string of at most 512 bytes");
    password_ctx x = {.params = {tenant_id, principal_id, encoded}};
    return run(pool, DB_READ_COMMITTED, password_set_body, &x);
}

static base_result password_get_body(db_conn *c, void *arg)
{
    password_ctx *x = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, SQL_PASSWORD_GET, 2, x->params, &res, "principal_id: no password in the tenant"));
    memset(&x->out, 0, sizeof x->out);
    BASE_GUARD(col_str(res, 0, 0, x->out.encoded, sizeof x->out.encoded));
    return col_i64(res, 0, 1, &x->out.updated_us);
}

base_result identity_store_password_get(db_pool *pool, const char *tenant_id, const char *principal_id,
                                        identity_password *ret_password)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    BASE_ENSURE(ret_password, BASE_ERR_INVALID, "identity store: ret_password: missing");
    password_ctx x = {.params = {tenant_id, principal_id}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, password_get_body, &x));
    *ret_password = x.out;
    return BASE_OK_RESULT;
}

/* ---- TOTP and recovery codes --------------------------------------------------------------------------- */

typedef struct totp_ctx {
    const char *tenant_id, *principal_id;
    const unsigned char *sealed;
    size_t sealed_len;
    char step[24];
    char *codes_array; /* recovery codes, or NULL */
    int idx;
    const unsigned char *hmac;
    bool ok;
    identity_totp out;
} totp_ctx;

static base_result totp_put_body(db_conn *c, void *arg)
{
    totp_ctx *x = arg;
    const char *p[] = {x->tenant_id, x->principal_id, (const char *)x->sealed};
    const int lengths[] = {0, 0, (int)x->sealed_len};
    const int formats[] = {0, 0, 1};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec_params(c, SQL_TOTP_PUT, 3, p, lengths, formats, &res));
    if (db_result_affected_rows(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "identity store: principal_id: no such principal in the tenant");
    return BASE_OK_RESULT;
}

base_result identity_store_totp_put(db_pool *pool, const char *tenant_id, const char *principal_id,
                                    const unsigned char *sealed, size_t sealed_len)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (!sealed || sealed_len < IDENTITY_SEALED_MIN || sealed_len > IDENTITY_SEALED_MAX)
        return FAIL_FIELD("sealed_secret", "must be 16..512 bytes");
    totp_ctx x = {
        .tenant_id = tenant_id, .principal_id = principal_id, .sealed = sealed, .sealed_len = sealed_len};
    return run(pool, DB_READ_COMMITTED, totp_put_body, &x);
}

static base_result totp_get_body(db_conn *c, void *arg)
{
    totp_ctx *x = arg;
    const char *p[] = {x->tenant_id, x->principal_id};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, SQL_TOTP_GET, 2, p, &res, "principal_id: no TOTP enrolment in the tenant"));
    identity_totp *t = &x->out;
    memset(t, 0, sizeof *t);
    BASE_GUARD(col_bytes(res, 0, 0, t->sealed_secret, sizeof t->sealed_secret, &t->sealed_len));
    t->confirmed = col_bool(res, 0, 1);
    BASE_GUARD(col_i64(res, 0, 2, &t->last_step));
    BASE_GUARD(col_i64(res, 0, 3, &t->created_us));
    return col_i64(res, 0, 4, &t->confirmed_us);
}

base_result identity_store_totp_get(db_pool *pool, const char *tenant_id, const char *principal_id,
                                    identity_totp *ret_totp)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    BASE_ENSURE(ret_totp, BASE_ERR_INVALID, "identity store: ret_totp: missing");
    totp_ctx x = {.tenant_id = tenant_id, .principal_id = principal_id};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, totp_get_body, &x));
    *ret_totp = x.out;
    return BASE_OK_RESULT;
}

static base_result replace_codes(db_conn *c, const char *tenant_id, const char *principal_id,
                                 const char *codes)
{
    const char *p[] = {tenant_id, principal_id, codes};
    BASE_GUARD(db_exec(c, SQL_RECOVERY_DELETE, 2, p, NULL));
    return db_exec(c, SQL_RECOVERY_INSERT, 3, p, NULL);
}

static base_result totp_confirm_body(db_conn *c, void *arg)
{
    totp_ctx *x = arg;
    x->ok = false;
    const char *p[] = {x->tenant_id, x->principal_id, x->step};
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(query_row(c, SQL_TOTP_LOCK, 2, p, &res, "principal_id: no TOTP enrolment in the tenant"));
        if (col_bool(res, 0, 0))
            return base_fail(BASE_ERR_CONFLICT, "identity store: totp: already confirmed");
    }
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_TOTP_CONFIRM, 3, p, &res));
    if (db_result_affected_rows(res) != 1)
        return BASE_OK_RESULT; /* step <= last_step: a replay; nothing changes */
    if (x->codes_array)
        BASE_GUARD(replace_codes(c, x->tenant_id, x->principal_id, x->codes_array));
    x->ok = true;
    return BASE_OK_RESULT;
}

base_result identity_store_totp_confirm(db_pool *pool, const char *tenant_id, const char *principal_id,
                                        int64_t step,
                                        const unsigned char (*codes)[IDENTITY_RECOVERY_HMAC_LEN],
                                        size_t ncodes, bool *ret_ok)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (step <= 0)
        return FAIL_FIELD("step", "must be positive");
    if (ncodes > IDENTITY_RECOVERY_CODES_MAX || (ncodes > 0 && !codes))
        return FAIL_FIELD("recovery_codes", "at most 16 HMACs");
    BASE_ENSURE(ret_ok, BASE_ERR_INVALID, "identity store: ret_ok: missing");
    totp_ctx x = {.tenant_id = tenant_id, .principal_id = principal_id};
    fmt_i64(x.step, step);
    if (ncodes > 0)
        BASE_GUARD(hmac_array(codes, ncodes, &x.codes_array));
    base_result r = run(pool, DB_READ_COMMITTED, totp_confirm_body, &x);
    free(x.codes_array);
    BASE_GUARD(r);
    *ret_ok = x.ok;
    return BASE_OK_RESULT;
}

static base_result totp_use_step_body(db_conn *c, void *arg)
{
    totp_ctx *x = arg;
    x->ok = false;
    const char *p[] = {x->tenant_id, x->principal_id, x->step};
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_TOTP_USE_STEP, 3, p, &res));
        if (db_result_affected_rows(res) == 1) {
            x->ok = true;
            return BASE_OK_RESULT;
        }
    }
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    return query_row(c, SQL_TOTP_EXISTS, 2, p, &res, "principal_id: no TOTP enrolment in the tenant");
}

base_result identity_store_totp_use_step(db_pool *pool, const char *tenant_id, const char *principal_id,
                                         int64_t step, bool *ret_ok)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (step <= 0)
        return FAIL_FIELD("step", "must be positive");
    BASE_ENSURE(ret_ok, BASE_ERR_INVALID, "identity store: ret_ok: missing");
    totp_ctx x = {.tenant_id = tenant_id, .principal_id = principal_id};
    fmt_i64(x.step, step);
    BASE_GUARD(run(pool, DB_READ_COMMITTED, totp_use_step_body, &x));
    *ret_ok = x.ok;
    return BASE_OK_RESULT;
}

static base_result recovery_replace_body(db_conn *c, void *arg)
{
    totp_ctx *x = arg;
    BASE_GUARD(require_principal(c, x->tenant_id, x->principal_id, "principal_id"));
    return replace_codes(c, x->tenant_id, x->principal_id, x->codes_array);
}

base_result identity_store_recovery_codes_replace(db_pool *pool, const char *tenant_id,
                                                  const char *principal_id,
                                                  const unsigned char (*codes)[IDENTITY_RECOVERY_HMAC_LEN],
                                                  size_t ncodes)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (!codes || ncodes < 1 || ncodes > IDENTITY_RECOVERY_CODES_MAX)
        return FAIL_FIELD("recovery_codes", "must be 1..16 HMACs");
    totp_ctx x = {.tenant_id = tenant_id, .principal_id = principal_id};
    BASE_GUARD(hmac_array(codes, ncodes, &x.codes_array));
    base_result r = run(pool, DB_READ_COMMITTED, recovery_replace_body, &x);
    free(x.codes_array);
    return r;
}

typedef struct recovery_list_ctx {
    const char *params[2];
    identity_recovery_codes out;
} recovery_list_ctx;

static base_result recovery_list_body(db_conn *c, void *arg)
{
    recovery_list_ctx *x = arg;
    memset(&x->out, 0, sizeof x->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_RECOVERY_LIST, 2, x->params, &res));
    int n = db_result_ntuples(res);
    if (n > IDENTITY_RECOVERY_CODES_MAX)
        return base_fail(BASE_ERR_INTERNAL, "identity store: too many stored recovery codes");
    for (int i = 0; i < n; i++) {
        identity_recovery_code *rc = &x->out.codes[i];
        int64_t idx = 0;
        size_t len = 0;
        BASE_GUARD(col_i64(res, i, 0, &idx));
        rc->idx = (int)idx;
        BASE_GUARD(col_bytes(res, i, 1, rc->code_hmac, sizeof rc->code_hmac, &len));
        if (len != IDENTITY_RECOVERY_HMAC_LEN)
            return base_fail(BASE_ERR_INTERNAL, "identity store: stored recovery code of the wrong length");
        BASE_GUARD(col_i64(res, i, 2, &rc->used_us));
        rc->used = !db_result_is_null(res, i, 2);
    }
    x->out.n = (size_t)n;
    return BASE_OK_RESULT;
}

base_result identity_store_recovery_codes_list(db_pool *pool, const char *tenant_id, const char *principal_id,
                                               identity_recovery_codes *ret_codes)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    BASE_ENSURE(ret_codes, BASE_ERR_INVALID, "identity store: ret_codes: missing");
    recovery_list_ctx x = {.params = {tenant_id, principal_id}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, recovery_list_body, &x));
    *ret_codes = x.out;
    return BASE_OK_RESULT;
}

static base_result recovery_use_body(db_conn *c, void *arg)
{
    totp_ctx *x = arg;
    char idx[24];
    fmt_i64(idx, x->idx);
    const char *p[] = {x->tenant_id, x->principal_id, idx, (const char *)x->hmac};
    const int lengths[] = {0, 0, 0, IDENTITY_RECOVERY_HMAC_LEN};
    const int formats[] = {0, 0, 0, 1};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec_params(c, SQL_RECOVERY_USE, 4, p, lengths, formats, &res));
    x->ok = db_result_affected_rows(res) == 1;
    return BASE_OK_RESULT;
}

base_result identity_store_recovery_code_use(db_pool *pool, const char *tenant_id, const char *principal_id,
                                             int idx,
                                             const unsigned char code_hmac[IDENTITY_RECOVERY_HMAC_LEN],
                                             bool *ret_ok)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (idx < 0 || idx >= IDENTITY_RECOVERY_CODES_MAX)
        return FAIL_FIELD("idx", "must be 0..15");
    BASE_ENSURE(code_hmac, BASE_ERR_INVALID, "identity store: code_hmac: missing");
    BASE_ENSURE(ret_ok, BASE_ERR_INVALID, "identity store: ret_ok: missing");
    totp_ctx x = {.tenant_id = tenant_id, .principal_id = principal_id, .idx = idx, .hmac = code_hmac};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, recovery_use_body, &x));
    *ret_ok = x.ok;
    return BASE_OK_RESULT;
}

/* ---- A tenant with its first administrator ------------------------------------------------------------- */

typedef struct tenant_admin_ctx {
    const identity_tenant_new *tenant;
    const identity_admin_totp *totp;
    const char *tenant_params[4];
    char *codes_array; /* the recovery codes, or NULL */
    principal_create_ctx admin;
    identity_tenant out;
} tenant_admin_ctx;

static base_result tenant_admin_body(db_conn *c, void *arg)
{
    tenant_admin_ctx *x = arg;
    if (x->tenant->first_tenant) {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_ANY_TENANT, 0, NULL, &res));
        if (db_result_ntuples(res) > 0)
            return base_fail(BASE_ERR_CONFLICT, "identity store: tenants: a tenant already exists");
    }
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        base_result r = db_exec(c, SQL_TENANT_INSERT, 4, x->tenant_params, &res);
        BASE_GUARD(remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "tenant_id: already exists"));
        BASE_GUARD(parse_tenant(res, 0, &x->out));
    }
    BASE_GUARD(principal_insert(c, &x->admin));
    if (!x->totp)
        return BASE_OK_RESULT;
    const char *p[] = {x->tenant->tenant_id, x->admin.id, (const char *)x->totp->sealed};
    const int lengths[] = {0, 0, (int)x->totp->sealed_len};
    const int formats[] = {0, 0, 1};
    BASE_GUARD(db_exec_params(c, SQL_TOTP_INSERT_CONFIRMED, 3, p, lengths, formats, NULL));
    return replace_codes(c, x->tenant->tenant_id, x->admin.id, x->codes_array);
}

base_result identity_store_tenant_create_with_admin(db_pool *pool, const identity_tenant_new *tenant,
                                                    const identity_principal_new *admin,
                                                    const identity_admin_totp *totp,
                                                    identity_tenant *ret_tenant,
                                                    identity_principal *ret_admin)
{
    BASE_ENSURE(tenant, BASE_ERR_INVALID, "identity store: tenant: missing");
    BASE_GUARD(identity_store_tenant_check(tenant->tenant_id, tenant->kind, tenant->display_name));
    BASE_ENSURE(admin, BASE_ERR_INVALID, "identity store: admin: missing");
    if (!admin->tenant_id || strcmp(admin->tenant_id, tenant->tenant_id) != 0)
        return FAIL_FIELD("admin.tenant_id", "must be the new tenant's id");
    if (totp) {
        if (!admin->principal_id)
            return FAIL_FIELD("admin.principal_id", "required with a TOTP secret (it is sealed for the id)");
        if (!totp->sealed || totp->sealed_len < IDENTITY_SEALED_MIN || totp->sealed_len > IDENTITY_SEALED_MAX)
            return FAIL_FIELD("totp.sealed", "must be 16..512 bytes");
        if (!totp->codes || totp->ncodes < 1 || totp->ncodes > IDENTITY_RECOVERY_CODES_MAX)
            return FAIL_FIELD("totp.codes", "must be 1..16 HMACs");
    }
    tenant_admin_ctx x = {.tenant = tenant,
                          .totp = totp,
                          .tenant_params = {tenant->tenant_id, tenant_kind_text(tenant->kind),
                                            tenant->display_name,
                                            tenant->mfa_required_for_all ? "true" : "false"}};
    BASE_GUARD(principal_prepare(admin, &x.admin));
    base_result r = totp ? hmac_array(totp->codes, totp->ncodes, &x.codes_array) : BASE_OK_RESULT;
    /* first_tenant reads "is there any tenant" and then inserts one: serializable, so that of two
     * concurrent bootstraps one fails (and, retried, sees the other's tenant). */
    if (base_is_ok(r))
        r = run(pool, tenant->first_tenant ? DB_SERIALIZABLE : DB_READ_COMMITTED, tenant_admin_body, &x);
    free(x.admin.roles_array);
    free(x.codes_array);
    BASE_GUARD(r);
    if (ret_tenant)
        *ret_tenant = x.out;
    if (ret_admin)
        *ret_admin = x.admin.out;
    return BASE_OK_RESULT;
}

/* ---- Roles --------------------------------------------------------------------------------------------- */

void identity_role_clear(identity_role *role)
{
    if (!role)
        return;
    free_strv(role->permissions, role->npermissions);
    memset(role, 0, sizeof *role);
}

void identity_role_list_free(identity_role_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->n; i++)
        identity_role_clear(&list->items[i]);
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

/* ROLE_COLS at row into *role (which must own nothing). */
static base_result parse_role(const db_result *res, int row, identity_role *role)
{
    memset(role, 0, sizeof *role);
    BASE_GUARD(col_str(res, row, 0, role->tenant_id, sizeof role->tenant_id));
    BASE_GUARD(col_str(res, row, 1, role->role_id, sizeof role->role_id));
    BASE_GUARD(col_str(res, row, 2, role->display_name, sizeof role->display_name));
    role->requires_mfa = col_bool(res, row, 3);
    BASE_GUARD(col_i64(res, row, 4, &role->version));
    role->built_in = col_bool(res, row, 5);
    BASE_GUARD(col_i64(res, row, 6, &role->updated_us));
    const char *perms = db_result_get(res, row, 7);
    return split_words(perms ? perms : "", &role->permissions, &role->npermissions);
}

static base_result parse_roles(const db_result *res, identity_role **ret, size_t *ret_n)
{
    int n = db_result_ntuples(res);
    identity_role *v = calloc(n > 0 ? (size_t)n : 1, sizeof *v);
    if (!v)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    for (int i = 0; i < n; i++) {
        base_result r = parse_role(res, i, &v[i]);
        if (!base_is_ok(r)) {
            for (int j = 0; j <= i; j++)
                identity_role_clear(&v[j]);
            free(v);
            return r;
        }
    }
    *ret = v;
    *ret_n = (size_t)n;
    return BASE_OK_RESULT;
}

typedef struct roles_ctx {
    const char *params[2];
    identity_role_list list;
    identity_role role;
} roles_ctx;

static base_result roles_list_body(db_conn *c, void *arg)
{
    roles_ctx *x = arg;
    identity_role_list_free(&x->list);
    BASE_GUARD(require_tenant(c, x->params[0], NULL, 0));
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_ROLES_LIST, 1, x->params, &res));
    return parse_roles(res, &x->list.items, &x->list.n);
}

base_result identity_store_roles_list(db_pool *pool, const char *tenant_id, identity_role_list *ret_list)
{
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(ret_list, BASE_ERR_INVALID, "identity store: ret_list: missing");
    roles_ctx x = {.params = {tenant_id}};
    base_result r = run(pool, DB_READ_COMMITTED, roles_list_body, &x);
    if (!base_is_ok(r)) {
        identity_role_list_free(&x.list);
        return r;
    }
    *ret_list = x.list;
    return BASE_OK_RESULT;
}

static base_result role_get_body(db_conn *c, void *arg)
{
    roles_ctx *x = arg;
    identity_role_clear(&x->role);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, SQL_ROLE_GET, 2, x->params, &res, "role_id: no such role in the tenant"));
    return parse_role(res, 0, &x->role);
}

base_result identity_store_role_get(db_pool *pool, const char *tenant_id, const char *role_id,
                                    identity_role *ret_role)
{
    CHECK_TENANT(tenant_id);
    if (!valid_role_id(role_id))
        return FAIL_FIELD("role_id", "must match [a-z][a-z0-9_]{1,63}");
    BASE_ENSURE(ret_role, BASE_ERR_INVALID, "identity store: ret_role: missing");
    roles_ctx x = {.params = {tenant_id, role_id}};
    base_result r = run(pool, DB_READ_COMMITTED, role_get_body, &x);
    if (!base_is_ok(r)) {
        identity_role_clear(&x.role);
        return r;
    }
    *ret_role = x.role;
    return BASE_OK_RESULT;
}

typedef struct role_put_ctx {
    const identity_role_put *in;
    const char **perms; /* sorted, unique */
    size_t nperms;
    char *perms_array; /* the same as a text[] literal */
    identity_role before, after;
    bool existed, changed;
} role_put_ctx;

static bool same_permissions(const identity_role *r, const char *const *perms, size_t n)
{
    if (r->npermissions != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(r->permissions[i], perms[i]) != 0)
            return false;
    }
    return true;
}

static base_result role_put_body(db_conn *c, void *arg)
{
    role_put_ctx *x = arg;
    const identity_role_put *in = x->in;
    identity_role_clear(&x->before);
    identity_role_clear(&x->after);
    x->existed = false;
    x->changed = false;

    BASE_GUARD(require_tenant(c, in->tenant_id, NULL, 0));
    const char *key[] = {in->tenant_id, in->role_id};
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_ROLE_BUILTIN, 1, key + 1, &res));
        if (db_result_ntuples(res) > 0)
            return base_fail(BASE_ERR_CONFLICT, "identity store: role_id: built-in roles cannot be changed");
    }
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_ROLE_LOCK, 2, key, &res));
        x->existed = db_result_ntuples(res) == 1;
    }
    if (x->existed) {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(query_row(c, SQL_ROLE_GET, 2, key, &res, "role_id: no such role in the tenant"));
        BASE_GUARD(parse_role(res, 0, &x->before));
    }
    if (in->expected_version == IDENTITY_ROLE_VERSION_NEW && x->existed)
        return base_fail(BASE_ERR_CONFLICT, "identity store: expected_version: the role exists already");
    if (in->expected_version > 0 && (!x->existed || x->before.version != in->expected_version))
        return base_fail(BASE_ERR_CONFLICT, "identity store: expected_version: the role has another version");

    const char *mfa = in->requires_mfa ? "true" : "false";
    int64_t version = 1;
    if (!x->existed) {
        const char *p[] = {in->tenant_id, in->role_id, in->display_name, mfa};
        base_result r = db_exec(c, SQL_ROLE_INSERT, 4, p, NULL);
        BASE_GUARD(remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "role_id: already exists"));
    } else if (strcmp(x->before.display_name, in->display_name) == 0 &&
               x->before.requires_mfa == in->requires_mfa &&
               same_permissions(&x->before, x->perms, x->nperms)) {
        /* Nothing changes: no new version. */
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(query_row(c, SQL_ROLE_GET, 2, key, &res, "role_id: no such role in the tenant"));
        return parse_role(res, 0, &x->after);
    } else {
        const char *p[] = {in->tenant_id, in->role_id, in->display_name, mfa};
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(query_row(c, SQL_ROLE_UPDATE, 4, p, &res, "role_id: no such role in the tenant"));
        BASE_GUARD(col_i64(res, 0, 0, &version));
        BASE_GUARD(db_exec(c, SQL_ROLE_PERMS_DELETE, 2, key, NULL));
    }
    {
        const char *p[] = {in->tenant_id, in->role_id, x->perms_array};
        BASE_GUARD(db_exec(c, SQL_ROLE_PERMS_INSERT, 3, p, NULL));
    }
    {
        char ver[24];
        fmt_i64(ver, version);
        char *old_perms = NULL;
        if (x->existed)
            BASE_GUARD(
                text_array((const char *const *)x->before.permissions, x->before.npermissions, &old_perms));
        const char *p[] = {in->tenant_id,
                           in->role_id,
                           ver,
                           x->existed ? x->before.display_name : NULL,
                           in->display_name,
                           x->existed ? (x->before.requires_mfa ? "true" : "false") : NULL,
                           mfa,
                           old_perms,
                           x->perms_array,
                           in->changed_by};
        base_result r = db_exec(c, SQL_ROLE_HISTORY_INSERT, 10, p, NULL);
        free(old_perms);
        BASE_GUARD(r);
    }
    x->changed = true;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, SQL_ROLE_GET, 2, key, &res, "role_id: no such role in the tenant"));
    return parse_role(res, 0, &x->after);
}

base_result identity_store_role_put_check(const identity_role_put *in)
{
    BASE_ENSURE(in, BASE_ERR_INVALID, "identity store: role: missing");
    CHECK_TENANT(in->tenant_id);
    if (!valid_role_id(in->role_id))
        return FAIL_FIELD("role_id", "must match [a-z][a-z0-9_]{1,63}");
    if (!valid_display_name(in->display_name))
        return FAIL_FIELD("display_name", "must be 1..200 bytes of UTF-8 without control characters");
    if (in->npermissions > IDENTITY_ROLE_PERMISSIONS_MAX || (in->npermissions > 0 && !in->permissions))
        return FAIL_FIELD("permissions", "at most 256");
    for (size_t i = 0; i < in->npermissions; i++) {
        if (!valid_permission(in->permissions[i]))
            return FAIL_FIELD("permissions", "must be dotted lowercase words such as phi.read.clinical");
    }
    if (in->expected_version < 0 && in->expected_version != IDENTITY_ROLE_VERSION_NEW)
        return FAIL_FIELD("expected_version", "must not be negative (but IDENTITY_ROLE_VERSION_NEW)");
    CHECK_ACTOR("changed_by", in->changed_by);
    return BASE_OK_RESULT;
}

base_result identity_store_role_put(db_pool *pool, const identity_role_put *in, identity_role *ret_role,
                                    identity_role *ret_old, bool *ret_changed)
{
    BASE_GUARD(identity_store_role_put_check(in));
    BASE_ENSURE(ret_role, BASE_ERR_INVALID, "identity store: ret_role: missing");

    role_put_ctx x = {.in = in};
    BASE_GUARD(sorted_unique(in->permissions, in->npermissions, &x.perms, &x.nperms));
    base_result r = text_array(x.perms, x.nperms, &x.perms_array);
    if (base_is_ok(r))
        r = run(pool, DB_SERIALIZABLE, role_put_body, &x);
    free(x.perms);
    free(x.perms_array);
    if (!base_is_ok(r)) {
        identity_role_clear(&x.before);
        identity_role_clear(&x.after);
        return r;
    }
    *ret_role = x.after;
    if (ret_old)
        *ret_old = x.before; /* version 0 (zeroed) when created */
    else
        identity_role_clear(&x.before);
    if (ret_changed)
        *ret_changed = x.changed;
    return BASE_OK_RESULT;
}

void identity_role_history_free(identity_role_history *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free_strv(h->items[i].old_permissions, h->items[i].nold_permissions);
        free_strv(h->items[i].permissions, h->items[i].npermissions);
    }
    free(h->items);
    h->items = NULL;
    h->n = 0;
}

typedef struct history_ctx {
    const char *params[2];
    identity_role_history out;
} history_ctx;

static base_result role_history_body(db_conn *c, void *arg)
{
    history_ctx *x = arg;
    identity_role_history_free(&x->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_ROLE_HISTORY, 2, x->params, &res));
    int n = db_result_ntuples(res);
    if (n == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "identity store: role_id: no such role in the tenant");
    x->out.items = calloc((size_t)n, sizeof *x->out.items);
    if (!x->out.items)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    for (int i = 0; i < n; i++) {
        identity_role_change *h = &x->out.items[i];
        x->out.n = (size_t)i + 1;
        BASE_GUARD(col_i64(res, i, 0, &h->version));
        if (!db_result_is_null(res, i, 1))
            BASE_GUARD(split_words(db_result_get(res, i, 1), &h->old_permissions, &h->nold_permissions));
        BASE_GUARD(split_words(db_result_get(res, i, 2), &h->permissions, &h->npermissions));
        h->old_requires_mfa = col_bool(res, i, 3);
        h->requires_mfa = col_bool(res, i, 4);
        BASE_GUARD(col_str(res, i, 5, h->changed_by, sizeof h->changed_by));
        BASE_GUARD(col_i64(res, i, 6, &h->changed_us));
    }
    return BASE_OK_RESULT;
}

base_result identity_store_role_history(db_pool *pool, const char *tenant_id, const char *role_id,
                                        identity_role_history *ret_history)
{
    CHECK_TENANT(tenant_id);
    if (!valid_role_id(role_id))
        return FAIL_FIELD("role_id", "must match [a-z][a-z0-9_]{1,63}");
    BASE_ENSURE(ret_history, BASE_ERR_INVALID, "identity store: ret_history: missing");
    history_ctx x = {.params = {tenant_id, role_id}};
    base_result r = run(pool, DB_READ_COMMITTED, role_history_body, &x);
    if (!base_is_ok(r)) {
        identity_role_history_free(&x.out);
        return r;
    }
    *ret_history = x.out;
    return BASE_OK_RESULT;
}

/* ---- Grants and effective permissions ------------------------------------------------------------------ */

typedef struct grant_ctx {
    const char *params[4];
} grant_ctx;

static base_result grant_body(db_conn *c, void *arg)
{
    grant_ctx *x = arg;
    BASE_GUARD(require_principal(c, x->params[0], x->params[1], "principal_id"));
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    base_result r = db_exec(c, SQL_GRANT_INSERT, 4, x->params, &res);
    BASE_GUARD(remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "role_id: already granted"));
    if (db_result_affected_rows(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "identity store: role_id: no such role in the tenant");
    return BASE_OK_RESULT;
}

base_result identity_store_grant(db_pool *pool, const char *tenant_id, const char *principal_id,
                                 const char *role_id, const char *granted_by)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (!valid_role_id(role_id))
        return FAIL_FIELD("role_id", "must match [a-z][a-z0-9_]{1,63}");
    CHECK_ACTOR("granted_by", granted_by);
    grant_ctx x = {.params = {tenant_id, principal_id, role_id, granted_by}};
    return run(pool, DB_READ_COMMITTED, grant_body, &x);
}

static base_result revoke_body(db_conn *c, void *arg)
{
    grant_ctx *x = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_REVOKE, 3, x->params, &res));
    if (db_result_affected_rows(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND,
                         "identity store: role_id: not granted to the principal in the tenant");
    return BASE_OK_RESULT;
}

base_result identity_store_revoke(db_pool *pool, const char *tenant_id, const char *principal_id,
                                  const char *role_id)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    if (!valid_role_id(role_id))
        return FAIL_FIELD("role_id", "must match [a-z][a-z0-9_]{1,63}");
    grant_ctx x = {.params = {tenant_id, principal_id, role_id}};
    return run(pool, DB_READ_COMMITTED, revoke_body, &x);
}

void identity_holder_list_free(identity_holder_list *list)
{
    if (!list)
        return;
    free(list->ids);
    list->ids = NULL;
    list->n = 0;
    list->more = false;
}

typedef struct holders_ctx {
    const char *params[4];
    int limit;
    identity_holder_list out;
} holders_ctx;

static base_result role_holders_body(db_conn *c, void *arg)
{
    holders_ctx *x = arg;
    identity_holder_list_free(&x->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_ROLE_HOLDERS, 4, x->params, &res));
    int n = db_result_ntuples(res);
    x->out.more = n > x->limit;
    if (n > x->limit)
        n = x->limit;
    x->out.ids = calloc(n > 0 ? (size_t)n : 1, sizeof *x->out.ids);
    if (!x->out.ids)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    for (int i = 0; i < n; i++)
        BASE_GUARD(col_str(res, i, 0, x->out.ids[i], sizeof x->out.ids[i]));
    x->out.n = (size_t)n;
    return BASE_OK_RESULT;
}

base_result identity_store_role_holders(db_pool *pool, const char *tenant_id, const char *role_id,
                                        const char *after_id, int limit, identity_holder_list *ret_list)
{
    CHECK_TENANT(tenant_id);
    if (!valid_role_id(role_id))
        return FAIL_FIELD("role_id", "must match [a-z][a-z0-9_]{1,63}");
    if (after_id && after_id[0] && !valid_principal_id(after_id))
        return FAIL_FIELD("after_id", "must be usr_ or svc_ and 32 lowercase hex digits");
    if (limit < 1 || limit > IDENTITY_LIST_MAX)
        return FAIL_FIELD("limit", "must be 1..1000");
    BASE_ENSURE(ret_list, BASE_ERR_INVALID, "identity store: ret_list: missing");
    char lim[24];
    fmt_i64(lim, (int64_t)limit + 1);
    holders_ctx x = {.params = {tenant_id, role_id, after_id ? after_id : "", lim}, .limit = limit};
    base_result r = run(pool, DB_READ_COMMITTED, role_holders_body, &x);
    if (!base_is_ok(r)) {
        identity_holder_list_free(&x.out);
        return r;
    }
    *ret_list = x.out;
    return BASE_OK_RESULT;
}

void identity_effective_free(identity_effective *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nroles; i++)
        identity_role_clear(&e->roles[i]);
    free(e->roles);
    free_strv(e->permissions, e->npermissions);
    memset(e, 0, sizeof *e);
}

typedef struct effective_ctx {
    const char *params[2];
    identity_effective out;
} effective_ctx;

static base_result effective_body(db_conn *c, void *arg)
{
    effective_ctx *x = arg;
    identity_effective *e = &x->out;
    identity_effective_free(e);
    bool tenant_mfa = false;
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(query_row(c, SQL_EFFECTIVE_PRINCIPAL, 2, x->params, &res,
                             "principal_id: no such principal in the tenant"));
        const char *state = db_result_get(res, 0, 0);
        e->state =
            state && strcmp(state, "disabled") == 0 ? IDENTITY_PRINCIPAL_DISABLED : IDENTITY_PRINCIPAL_ACTIVE;
        tenant_mfa = col_bool(res, 0, 1);
        e->totp_confirmed = col_bool(res, 0, 2);
    }
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_EFFECTIVE_ROLES, 2, x->params, &res));
    BASE_GUARD(parse_roles(res, &e->roles, &e->nroles));

    /* The union of the roles' permissions: merge, sort, fold duplicates, then copy. */
    size_t total = 0;
    e->requires_mfa = tenant_mfa;
    for (size_t i = 0; i < e->nroles; i++) {
        total += e->roles[i].npermissions;
        e->requires_mfa = e->requires_mfa || e->roles[i].requires_mfa;
    }
    const char **all = malloc((total ? total : 1) * sizeof *all);
    if (!all)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < e->nroles; i++) {
        for (size_t j = 0; j < e->roles[i].npermissions; j++)
            all[k++] = e->roles[i].permissions[j];
    }
    const char **uniq = NULL;
    size_t nuniq = 0;
    base_result r = sorted_unique(all, total, &uniq, &nuniq);
    free(all);
    BASE_GUARD(r);
    e->permissions = calloc(nuniq ? nuniq : 1, sizeof *e->permissions);
    if (!e->permissions) {
        free(uniq);
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    }
    for (size_t i = 0; i < nuniq; i++) {
        e->permissions[i] = dup_str(uniq[i]);
        if (!e->permissions[i]) {
            e->npermissions = i;
            free(uniq);
            return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
        }
    }
    e->npermissions = nuniq;
    free(uniq);
    return BASE_OK_RESULT;
}

base_result identity_store_effective(db_pool *pool, const char *tenant_id, const char *principal_id,
                                     identity_effective *ret_effective)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("principal_id", principal_id);
    BASE_ENSURE(ret_effective, BASE_ERR_INVALID, "identity store: ret_effective: missing");
    effective_ctx x = {.params = {tenant_id, principal_id}};
    base_result r = run(pool, DB_REPEATABLE_READ, effective_body, &x);
    if (!base_is_ok(r)) {
        identity_effective_free(&x.out);
        return r;
    }
    *ret_effective = x.out;
    return BASE_OK_RESULT;
}

/* ---- Care relationships -------------------------------------------------------------------------------- */

static const char *rel_kind_text(identity_relationship_kind k)
{
    switch (k) {
    case IDENTITY_REL_PRIMARY_CARE:
        return "primary_care";
    case IDENTITY_REL_SPECIALIST:
        return "specialist";
    case IDENTITY_REL_CARE_TEAM:
        return "care_team";
    case IDENTITY_REL_COVERING:
        return "covering";
    }
    return NULL;
}

static identity_relationship_kind rel_kind_parse(const char *s)
{
    if (strcmp(s, "specialist") == 0)
        return IDENTITY_REL_SPECIALIST;
    if (strcmp(s, "care_team") == 0)
        return IDENTITY_REL_CARE_TEAM;
    if (strcmp(s, "covering") == 0)
        return IDENTITY_REL_COVERING;
    return IDENTITY_REL_PRIMARY_CARE;
}

static base_result parse_relationship(const db_result *res, int row, identity_relationship *r)
{
    memset(r, 0, sizeof *r);
    char kind[16];
    BASE_GUARD(col_str(res, row, 0, r->relationship_id, sizeof r->relationship_id));
    BASE_GUARD(col_str(res, row, 1, r->tenant_id, sizeof r->tenant_id));
    BASE_GUARD(col_str(res, row, 2, r->clinician_id, sizeof r->clinician_id));
    BASE_GUARD(col_str(res, row, 3, r->patient_ref, sizeof r->patient_ref));
    BASE_GUARD(col_str(res, row, 4, kind, sizeof kind));
    r->kind = rel_kind_parse(kind);
    BASE_GUARD(col_i64(res, row, 5, &r->start_us));
    BASE_GUARD(col_i64(res, row, 6, &r->end_us));
    BASE_GUARD(col_str(res, row, 7, r->created_by, sizeof r->created_by));
    BASE_GUARD(col_i64(res, row, 8, &r->created_us));
    return col_str(res, row, 9, r->ended_by, sizeof r->ended_by);
}

void identity_relationship_list_free(identity_relationship_list *list)
{
    if (!list)
        return;
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

static base_result parse_relationships(const db_result *res, identity_relationship_list *list)
{
    int n = db_result_ntuples(res);
    list->items = calloc(n > 0 ? (size_t)n : 1, sizeof *list->items);
    if (!list->items)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    for (int i = 0; i < n; i++)
        BASE_GUARD(parse_relationship(res, i, &list->items[i]));
    list->n = (size_t)n;
    return BASE_OK_RESULT;
}

typedef struct rel_ctx {
    const char *sql;
    const char *params[8];
    int nparams;
    identity_relationship out;
    identity_relationship_list list;
} rel_ctx;

static base_result rel_create_body(db_conn *c, void *arg)
{
    rel_ctx *x = arg;
    BASE_GUARD(require_principal(c, x->params[1], x->params[2], "clinician_id"));
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    base_result r = db_exec(c, SQL_REL_INSERT, 8, x->params, &res);
    r = remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "relationship_id: already exists");
    /* Everything else was validated: a check violation here is an end before the start (start = now). */
    BASE_GUARD(remap(r, BASE_ERR_CONFLICT, BASE_ERR_INVALID, "end_us: must be after the start"));
    return parse_relationship(res, 0, &x->out);
}

base_result identity_store_relationship_create(db_pool *pool, const identity_relationship_new *in,
                                               identity_relationship *ret_relationship)
{
    BASE_ENSURE(in, BASE_ERR_INVALID, "identity store: relationship: missing");
    CHECK_TENANT(in->tenant_id);
    if (in->relationship_id && !valid_hex_id(in->relationship_id, "rel_"))
        return FAIL_FIELD("relationship_id", "must be rel_ and 32 lowercase hex digits");
    CHECK_PRINCIPAL("clinician_id", in->clinician_id);
    if (!valid_patient_ref(in->patient_ref))
        return FAIL_FIELD("patient_ref", "must be pt_ and 32 lowercase hex digits");
    const char *kind = rel_kind_text(in->kind);
    if (!kind)
        return FAIL_FIELD("kind", "must be primary care, specialist, care team or covering");
    if (in->start_us < 0 || in->end_us < 0)
        return FAIL_FIELD("start_us", "times must not be negative");
    if (in->end_us != 0 && in->start_us != 0 && in->end_us <= in->start_us)
        return FAIL_FIELD("end_us", "must be after the start");
    CHECK_ACTOR("created_by", in->created_by);

    char id[IDENTITY_ID_MAX + 1], start[24], end[24];
    if (in->relationship_id)
        memcpy(id, in->relationship_id, strlen(in->relationship_id) + 1);
    else
        BASE_GUARD(random_id("rel_", id, sizeof id));
    fmt_i64(start, in->start_us);
    fmt_i64(end, in->end_us);
    rel_ctx x = {
        .params = {id, in->tenant_id, in->clinician_id, in->patient_ref, kind, start, end, in->created_by}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, rel_create_body, &x));
    if (ret_relationship)
        *ret_relationship = x.out;
    return BASE_OK_RESULT;
}

static base_result rel_get_body(db_conn *c, void *arg)
{
    rel_ctx *x = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(
        query_row(c, SQL_REL_GET, 2, x->params, &res, "relationship_id: no such relationship in the tenant"));
    return parse_relationship(res, 0, &x->out);
}

base_result identity_store_relationship_get(db_pool *pool, const char *tenant_id, const char *relationship_id,
                                            identity_relationship *ret_relationship)
{
    CHECK_TENANT(tenant_id);
    if (!valid_hex_id(relationship_id, "rel_"))
        return FAIL_FIELD("relationship_id", "must be rel_ and 32 lowercase hex digits");
    BASE_ENSURE(ret_relationship, BASE_ERR_INVALID, "identity store: ret_relationship: missing");
    rel_ctx x = {.params = {tenant_id, relationship_id}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, rel_get_body, &x));
    *ret_relationship = x.out;
    return BASE_OK_RESULT;
}

static base_result rel_end_body(db_conn *c, void *arg)
{
    rel_ctx *x = arg;
    {
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_REL_END, 4, x->params, &res));
        if (db_result_ntuples(res) == 1)
            return parse_relationship(res, 0, &x->out);
    }
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, SQL_REL_EXISTS, 2, x->params, &res,
                         "relationship_id: no such relationship in the tenant"));
    return base_fail(BASE_ERR_CONFLICT, "identity store: relationship_id: already ended");
}

base_result identity_store_relationship_end(db_pool *pool, const char *tenant_id, const char *relationship_id,
                                            int64_t end_us, const char *ended_by,
                                            identity_relationship *ret_relationship)
{
    CHECK_TENANT(tenant_id);
    if (!valid_hex_id(relationship_id, "rel_"))
        return FAIL_FIELD("relationship_id", "must be rel_ and 32 lowercase hex digits");
    if (end_us < 0)
        return FAIL_FIELD("end_us", "must not be negative");
    CHECK_ACTOR("ended_by", ended_by);
    char end[24];
    fmt_i64(end, end_us);
    rel_ctx x = {.params = {tenant_id, relationship_id, end, ended_by}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, rel_end_body, &x));
    if (ret_relationship)
        *ret_relationship = x.out;
    return BASE_OK_RESULT;
}

static base_result rel_list_body(db_conn *c, void *arg)
{
    rel_ctx *x = arg;
    identity_relationship_list_free(&x->list);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, x->sql, x->nparams, x->params, &res));
    return parse_relationships(res, &x->list);
}

static base_result rel_list(db_pool *pool, rel_ctx *x, identity_relationship_list *ret_list)
{
    base_result r = run(pool, DB_READ_COMMITTED, rel_list_body, x);
    if (!base_is_ok(r)) {
        identity_relationship_list_free(&x->list);
        return r;
    }
    *ret_list = x->list;
    return BASE_OK_RESULT;
}

base_result identity_store_relationships_active(db_pool *pool, const char *tenant_id,
                                                const char *clinician_id, const char *patient_ref,
                                                identity_relationship_list *ret_list)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("clinician_id", clinician_id);
    if (!valid_patient_ref(patient_ref))
        return FAIL_FIELD("patient_ref", "must be pt_ and 32 lowercase hex digits");
    BASE_ENSURE(ret_list, BASE_ERR_INVALID, "identity store: ret_list: missing");
    rel_ctx x = {.sql = SQL_REL_ACTIVE, .params = {tenant_id, clinician_id, patient_ref}, .nparams = 3};
    return rel_list(pool, &x, ret_list);
}

base_result identity_store_relationships_current_all(db_pool *pool, const char *after_id, int limit,
                                                     identity_relationship_list *ret_list)
{
    if (after_id && after_id[0] && !valid_hex_id(after_id, "rel_"))
        return FAIL_FIELD("after_id", "must be rel_ and 32 lowercase hex digits");
    if (limit < 1 || limit > IDENTITY_LIST_MAX)
        return FAIL_FIELD("limit", "must be 1..1000");
    BASE_ENSURE(ret_list, BASE_ERR_INVALID, "identity store: ret_list: missing");
    char lim[24];
    fmt_i64(lim, limit);
    rel_ctx x = {.sql = SQL_REL_CURRENT_ALL, .params = {after_id ? after_id : "", lim}, .nparams = 2};
    return rel_list(pool, &x, ret_list);
}

/* ---- Break-glass --------------------------------------------------------------------------------------- */

void identity_break_glass_list_free(identity_break_glass_list *list)
{
    if (!list)
        return;
    free(list->items);
    list->items = NULL;
    list->n = 0;
    list->more = false;
}

static base_result parse_break_glass(const db_result *res, int row, identity_break_glass *g)
{
    memset(g, 0, sizeof *g);
    BASE_GUARD(col_str(res, row, 0, g->grant_id, sizeof g->grant_id));
    BASE_GUARD(col_str(res, row, 1, g->tenant_id, sizeof g->tenant_id));
    BASE_GUARD(col_str(res, row, 2, g->clinician_id, sizeof g->clinician_id));
    BASE_GUARD(col_str(res, row, 3, g->patient_ref, sizeof g->patient_ref));
    BASE_GUARD(col_str(res, row, 4, g->reason, sizeof g->reason));
    BASE_GUARD(col_i64(res, row, 5, &g->start_us));
    BASE_GUARD(col_i64(res, row, 6, &g->end_us));
    return col_i64(res, row, 7, &g->created_us);
}

typedef struct bg_ctx {
    const char *sql;
    const char *params[7];
    int nparams;
    int limit; /* list: rows wanted; one more is fetched to learn whether more follow */
    identity_break_glass out;
    identity_break_glass_list list;
} bg_ctx;

static base_result bg_create_body(db_conn *c, void *arg)
{
    bg_ctx *x = arg;
    BASE_GUARD(require_principal(c, x->params[1], x->params[2], "clinician_id"));
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    base_result r = db_exec(c, SQL_BG_INSERT, 7, x->params, &res);
    BASE_GUARD(remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "grant_id: already exists"));
    return parse_break_glass(res, 0, &x->out);
}

base_result identity_store_break_glass_create(db_pool *pool, const identity_break_glass_new *in,
                                              identity_break_glass *ret_grant)
{
    BASE_ENSURE(in, BASE_ERR_INVALID, "identity store: break-glass grant: missing");
    CHECK_TENANT(in->tenant_id);
    if (in->grant_id && !valid_hex_id(in->grant_id, "bg_"))
        return FAIL_FIELD("grant_id", "must be bg_ and 32 lowercase hex digits");
    CHECK_PRINCIPAL("clinician_id", in->clinician_id);
    if (!valid_patient_ref(in->patient_ref))
        return FAIL_FIELD("patient_ref", "must be pt_ and 32 lowercase hex digits");
    if (!valid_text(in->reason, IDENTITY_BREAK_GLASS_REASON_MIN, IDENTITY_BREAK_GLASS_REASON_MAX, "\t\n\r"))
        return FAIL_FIELD("reason", "must be 20..1000 bytes of UTF-8 without control characters");
    if (in->duration_minutes < 1 || in->duration_minutes > IDENTITY_BREAK_GLASS_MAX_MIN)
        return FAIL_FIELD("duration_minutes", "must be 1..240");
    if (in->start_us < 0)
        return FAIL_FIELD("start_us", "must not be negative");

    char id[IDENTITY_ID_MAX + 1], start[24], minutes[24];
    if (in->grant_id)
        memcpy(id, in->grant_id, strlen(in->grant_id) + 1);
    else
        BASE_GUARD(random_id("bg_", id, sizeof id));
    fmt_i64(start, in->start_us);
    fmt_i64(minutes, in->duration_minutes);
    bg_ctx x = {.params = {id, in->tenant_id, in->clinician_id, in->patient_ref, in->reason, start, minutes}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, bg_create_body, &x));
    if (ret_grant)
        *ret_grant = x.out;
    return BASE_OK_RESULT;
}

static base_result bg_list_body(db_conn *c, void *arg)
{
    bg_ctx *x = arg;
    identity_break_glass_list_free(&x->list);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, x->sql, x->nparams, x->params, &res));
    int n = db_result_ntuples(res);
    x->list.more = n > x->limit;
    if (n > x->limit)
        n = x->limit;
    x->list.items = calloc(n > 0 ? (size_t)n : 1, sizeof *x->list.items);
    if (!x->list.items)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    for (int i = 0; i < n; i++)
        BASE_GUARD(parse_break_glass(res, i, &x->list.items[i]));
    x->list.n = (size_t)n;
    return BASE_OK_RESULT;
}

static base_result bg_list(db_pool *pool, bg_ctx *x, identity_break_glass_list *ret_list)
{
    base_result r = run(pool, DB_READ_COMMITTED, bg_list_body, x);
    if (!base_is_ok(r)) {
        identity_break_glass_list_free(&x->list);
        return r;
    }
    *ret_list = x->list;
    return BASE_OK_RESULT;
}

base_result identity_store_break_glass_list(db_pool *pool, const char *tenant_id, int64_t since_us,
                                            int64_t after_created_us, const char *after_grant_id, int limit,
                                            identity_break_glass_list *ret_list)
{
    CHECK_TENANT(tenant_id);
    if (since_us < 0)
        return FAIL_FIELD("since_us", "must not be negative");
    bool cursor = after_grant_id && after_grant_id[0];
    if (cursor && !valid_hex_id(after_grant_id, "bg_"))
        return FAIL_FIELD("after_grant_id", "must be bg_ and 32 lowercase hex digits");
    if (after_created_us < 0)
        return FAIL_FIELD("after_created_us", "must not be negative");
    if (limit < 1 || limit > IDENTITY_LIST_MAX)
        return FAIL_FIELD("limit", "must be 1..1000");
    BASE_ENSURE(ret_list, BASE_ERR_INVALID, "identity store: ret_list: missing");
    char since[24], after[24], lim[24];
    fmt_i64(since, since_us);
    fmt_i64(after, after_created_us);
    fmt_i64(lim, (int64_t)limit + 1);
    bg_ctx x = {.sql = SQL_BG_LIST,
                .params = {tenant_id, since, after, cursor ? after_grant_id : "", lim},
                .nparams = 5,
                .limit = limit};
    return bg_list(pool, &x, ret_list);
}

typedef struct bg_active_ctx {
    const char *params[4];
    bool found;
    identity_break_glass out;
} bg_active_ctx;

static base_result bg_active_body(db_conn *c, void *arg)
{
    bg_active_ctx *x = arg;
    x->found = false;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_BG_ACTIVE, 4, x->params, &res));
    if (db_result_ntuples(res) == 0)
        return BASE_OK_RESULT;
    BASE_GUARD(parse_break_glass(res, 0, &x->out));
    x->found = true;
    return BASE_OK_RESULT;
}

base_result identity_store_break_glass_active(db_pool *pool, const char *tenant_id, const char *clinician_id,
                                              const char *patient_ref, int64_t at_us,
                                              identity_break_glass *ret_grant, bool *ret_found)
{
    CHECK_TENANT(tenant_id);
    CHECK_PRINCIPAL("clinician_id", clinician_id);
    if (!valid_patient_ref(patient_ref))
        return FAIL_FIELD("patient_ref", "must be pt_ and 32 lowercase hex digits");
    if (at_us < 0)
        return FAIL_FIELD("at_us", "must not be negative");
    BASE_ENSURE(ret_grant && ret_found, BASE_ERR_INVALID, "identity store: ret_grant: missing");
    char at[24];
    fmt_i64(at, at_us);
    bg_active_ctx x = {.params = {tenant_id, clinician_id, patient_ref, at}};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, bg_active_body, &x));
    if (x.found)
        *ret_grant = x.out;
    *ret_found = x.found;
    return BASE_OK_RESULT;
}

base_result identity_store_break_glass_current_all(db_pool *pool, const char *after_id, int limit,
                                                   identity_break_glass_list *ret_list)
{
    if (after_id && after_id[0] && !valid_hex_id(after_id, "bg_"))
        return FAIL_FIELD("after_id", "must be bg_ and 32 lowercase hex digits");
    if (limit < 1 || limit > IDENTITY_LIST_MAX)
        return FAIL_FIELD("limit", "must be 1..1000");
    BASE_ENSURE(ret_list, BASE_ERR_INVALID, "identity store: ret_list: missing");
    char lim[24];
    fmt_i64(lim, (int64_t)limit + 1);
    bg_ctx x = {
        .sql = SQL_BG_CURRENT_ALL, .params = {after_id ? after_id : "", lim}, .nparams = 2, .limit = limit};
    return bg_list(pool, &x, ret_list);
}

/* ---- Partner clients ----------------------------------------------------------------------------------- */

void identity_partner_client_clear(identity_partner_client *client)
{
    if (!client)
        return;
    free(client->jwks_json);
    free_strv(client->scopes, client->nscopes);
    memset(client, 0, sizeof *client);
}

static base_result parse_client(const db_result *res, int row, identity_partner_client *cl)
{
    memset(cl, 0, sizeof *cl);
    BASE_GUARD(col_str(res, row, 0, cl->client_id, sizeof cl->client_id));
    BASE_GUARD(col_str(res, row, 1, cl->tenant_id, sizeof cl->tenant_id));
    BASE_GUARD(col_str(res, row, 2, cl->display_name, sizeof cl->display_name));
    const char *jwks = db_result_get(res, row, 3);
    cl->jwks_json = dup_str(jwks ? jwks : "");
    if (!cl->jwks_json)
        return base_fail(BASE_ERR_NOMEM, "identity store: out of memory");
    const char *scopes = db_result_get(res, row, 4);
    BASE_GUARD(split_words(scopes ? scopes : "", &cl->scopes, &cl->nscopes));
    cl->disabled = col_bool(res, row, 5);
    return col_i64(res, row, 6, &cl->created_us);
}

typedef struct client_ctx {
    const char *sql;
    const char *params[6];
    int nparams;
    const char *not_found;
    identity_partner_client out;
} client_ctx;

static base_result client_register_body(db_conn *c, void *arg)
{
    client_ctx *x = arg;
    identity_partner_client_clear(&x->out);
    char kind[16];
    BASE_GUARD(require_tenant(c, x->params[1], kind, sizeof kind));
    if (strcmp(kind, "health_plan") != 0)
        return base_fail(BASE_ERR_CONFLICT, "identity store: tenant_id: not a health plan tenant");
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    base_result r = db_exec(c, SQL_CLIENT_INSERT, 6, x->params, &res);
    r = remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS, "client_id: already registered");
    /* Everything else was validated: invalid input or a check violation here is the JWKS. */
    r = remap(r, BASE_ERR_INVALID, BASE_ERR_INVALID, "jwks_json: not valid JSON");
    BASE_GUARD(
        remap(r, BASE_ERR_CONFLICT, BASE_ERR_INVALID, "jwks_json: must be an object with a keys array"));
    return parse_client(res, 0, &x->out);
}

base_result identity_store_partner_client_check(const identity_partner_client_new *in)
{
    BASE_ENSURE(in, BASE_ERR_INVALID, "identity store: partner client: missing");
    if (!valid_client_id(in->client_id))
        return FAIL_FIELD("client_id", "must match [A-Za-z0-9][A-Za-z0-9._:-]{2,127}");
    CHECK_TENANT(in->tenant_id);
    if (!valid_display_name(in->display_name))
        return FAIL_FIELD("display_name", "must be 1..200 bytes of UTF-8 without control characters");
    if (!valid_text(in->jwks_json, 2, IDENTITY_JWKS_MAX, "\t\n\r"))
        return FAIL_FIELD("jwks_json", "must be 2..65536 bytes of UTF-8");
    if (in->nscopes > IDENTITY_SCOPES_MAX || (in->nscopes > 0 && !in->scopes))
        return FAIL_FIELD("scopes", "at most 64");
    for (size_t i = 0; i < in->nscopes; i++) {
        if (!valid_scope(in->scopes[i]))
            return FAIL_FIELD("scopes", "must look like system/AuditEvent.read");
    }
    CHECK_ACTOR("created_by", in->created_by);
    return BASE_OK_RESULT;
}

base_result identity_store_partner_client_register(db_pool *pool, const identity_partner_client_new *in,
                                                   identity_partner_client *ret_client)
{
    BASE_GUARD(identity_store_partner_client_check(in));
    BASE_ENSURE(ret_client, BASE_ERR_INVALID, "identity store: ret_client: missing");

    char *scopes = NULL;
    BASE_GUARD(text_array(in->scopes, in->nscopes, &scopes));
    client_ctx x = {
        .params = {in->client_id, in->tenant_id, in->display_name, in->jwks_json, scopes, in->created_by}};
    base_result r = run(pool, DB_READ_COMMITTED, client_register_body, &x);
    free(scopes);
    if (!base_is_ok(r)) {
        identity_partner_client_clear(&x.out);
        return r;
    }
    *ret_client = x.out;
    return BASE_OK_RESULT;
}

static base_result client_get_body(db_conn *c, void *arg)
{
    client_ctx *x = arg;
    identity_partner_client_clear(&x->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query_row(c, x->sql, x->nparams, x->params, &res, x->not_found));
    return parse_client(res, 0, &x->out);
}

static base_result client_get(db_pool *pool, client_ctx *x, identity_partner_client *ret_client)
{
    base_result r = run(pool, DB_READ_COMMITTED, client_get_body, x);
    if (!base_is_ok(r)) {
        identity_partner_client_clear(&x->out);
        return r;
    }
    *ret_client = x->out;
    return BASE_OK_RESULT;
}

base_result identity_store_partner_client_get(db_pool *pool, const char *tenant_id, const char *client_id,
                                              identity_partner_client *ret_client)
{
    CHECK_TENANT(tenant_id);
    if (!valid_client_id(client_id))
        return FAIL_FIELD("client_id", "must match [A-Za-z0-9][A-Za-z0-9._:-]{2,127}");
    BASE_ENSURE(ret_client, BASE_ERR_INVALID, "identity store: ret_client: missing");
    client_ctx x = {.sql = SQL_CLIENT_GET,
                    .params = {tenant_id, client_id},
                    .nparams = 2,
                    .not_found = "client_id: no such client in the tenant"};
    return client_get(pool, &x, ret_client);
}

base_result identity_store_partner_client_find(db_pool *pool, const char *client_id,
                                               identity_partner_client *ret_client)
{
    if (!valid_client_id(client_id))
        return FAIL_FIELD("client_id", "must match [A-Za-z0-9][A-Za-z0-9._:-]{2,127}");
    BASE_ENSURE(ret_client, BASE_ERR_INVALID, "identity store: ret_client: missing");
    client_ctx x = {.sql = SQL_CLIENT_FIND,
                    .params = {client_id},
                    .nparams = 1,
                    .not_found = "client_id: no such client"};
    return client_get(pool, &x, ret_client);
}

/* ---- Signing keys -------------------------------------------------------------------------------------- */

typedef struct key_ctx {
    bool rotate;
    const char *kid;
    const unsigned char *sealed;
    size_t sealed_len;
    const unsigned char *public_key;
    identity_signing_keys out;
} key_ctx;

static base_result key_write_body(db_conn *c, void *arg)
{
    key_ctx *x = arg;
    const char *lock[] = {SIGNING_KEY_LOCK};
    BASE_GUARD(db_exec(c, SQL_KEY_LOCK, 1, lock, NULL));
    if (x->rotate) {
        BASE_GUARD(db_exec(c, SQL_KEY_RETIRE, 0, NULL, NULL));
        BASE_GUARD(db_exec(c, SQL_KEY_DEMOTE, 0, NULL, NULL));
    }
    const char *p[] = {x->kid, (const char *)x->sealed, (const char *)x->public_key};
    const int lengths[] = {0, (int)x->sealed_len, IDENTITY_PUBLIC_KEY_LEN};
    const int formats[] = {0, 1, 1};
    base_result r = db_exec_params(c, SQL_KEY_INSERT, 3, p, lengths, formats, NULL);
    return remap(r, BASE_ERR_EXISTS, BASE_ERR_EXISTS,
                 x->rotate ? "kid: already exists" : "kid: already exists, or a current key exists");
}

static base_result key_write(db_pool *pool, bool rotate, const char *kid, const unsigned char *sealed,
                             size_t sealed_len, const unsigned char *public_key)
{
    if (!valid_kid(kid))
        return FAIL_FIELD("kid", "must match [A-Za-z0-9_-]{8,64}");
    if (!sealed || sealed_len < IDENTITY_SEALED_MIN || sealed_len > IDENTITY_SEALED_MAX)
        return FAIL_FIELD("sealed_private", "must be 16..512 bytes");
    BASE_ENSURE(public_key, BASE_ERR_INVALID, "identity store: public_key: missing");
    key_ctx x = {
        .rotate = rotate, .kid = kid, .sealed = sealed, .sealed_len = sealed_len, .public_key = public_key};
    return run(pool, DB_READ_COMMITTED, key_write_body, &x);
}

base_result identity_store_signing_key_insert(db_pool *pool, const char *kid, const unsigned char *sealed,
                                              size_t sealed_len,
                                              const unsigned char public_key[IDENTITY_PUBLIC_KEY_LEN])
{
    return key_write(pool, false, kid, sealed, sealed_len, public_key);
}

base_result identity_store_signing_key_rotate(db_pool *pool, const char *kid, const unsigned char *sealed,
                                              size_t sealed_len,
                                              const unsigned char public_key[IDENTITY_PUBLIC_KEY_LEN])
{
    return key_write(pool, true, kid, sealed, sealed_len, public_key);
}

static base_result keys_list_body(db_conn *c, void *arg)
{
    key_ctx *x = arg;
    memset(&x->out, 0, sizeof x->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_KEYS_LIST, 0, NULL, &res));
    int n = db_result_ntuples(res);
    if (n > 2)
        return base_fail(BASE_ERR_INTERNAL, "identity store: more than two live signing keys");
    for (int i = 0; i < n; i++) {
        identity_signing_key *k = &x->out.keys[i];
        char state[16];
        size_t len = 0;
        BASE_GUARD(col_str(res, i, 0, k->kid, sizeof k->kid));
        BASE_GUARD(col_str(res, i, 1, state, sizeof state));
        k->state = strcmp(state, "current") == 0 ? IDENTITY_KEY_CURRENT : IDENTITY_KEY_PREVIOUS;
        BASE_GUARD(col_bytes(res, i, 2, k->public_key, sizeof k->public_key, &len));
        if (len != IDENTITY_PUBLIC_KEY_LEN)
            return base_fail(BASE_ERR_INTERNAL, "identity store: stored public key of the wrong length");
        BASE_GUARD(col_bytes(res, i, 3, k->sealed_private, sizeof k->sealed_private, &k->sealed_len));
        BASE_GUARD(col_i64(res, i, 4, &k->created_us));
    }
    x->out.n = (size_t)n;
    return BASE_OK_RESULT;
}

base_result identity_store_signing_keys_list(db_pool *pool, identity_signing_keys *ret_keys)
{
    BASE_ENSURE(ret_keys, BASE_ERR_INVALID, "identity store: ret_keys: missing");
    key_ctx x = {0};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, keys_list_body, &x));
    *ret_keys = x.out;
    return BASE_OK_RESULT;
}
