/* Identity: administration within the caller's tenant (users, roles, grants, care relationships,
 * break-glass, partner clients) and the Check decision. Every change is audited, with the old and the new
 * value, BEFORE it is made (README, "Audit"): the current state is read and the ids are chosen first, the
 * event is appended, and only then is the store changed; a change that then fails is followed by an ERROR
 * event for the same resource. Nobody can hand out a permission they do not hold themselves (no privilege
 * escalation by grant). */
#include "service_internal.h"

#include "base/log.h"
#include "base/utf8.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DETAIL_MAX 256
/* The role a new tenant's first administrator gets (CreateTenant): manages the tenant's users, roles and
 * sessions, needs MFA; not platform_admin (that is the platform's, not a tenant's). */
#define TENANT_ADMIN_ROLE "security_admin"
/* Holders of a changed role, revoked a page at a time. */
#define HOLDERS_PAGE 500

/* "a,b,c" of a list, cut to the audit detail limit with a marker when it does not fit. */
static const char *join(rpc_ctx *ctx, char *const *items, size_t n)
{
    char *out = rpc_ctx_alloc(ctx, DETAIL_MAX + 1);
    if (!out)
        return "";
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t need = strlen(items[i]) + (i ? 1 : 0);
        if (len + need > DETAIL_MAX - 4) {
            snprintf(out + len, DETAIL_MAX + 1 - len, ",...");
            return out;
        }
        len += (size_t)snprintf(out + len, DETAIL_MAX + 1 - len, "%s%s", i ? "," : "", items[i]);
    }
    return out;
}

static bool claims_have(const authz_claims *c, const char *perm)
{
    for (size_t i = 0; i < c->perm_count; i++)
        if (strcmp(c->perm[i], perm) == 0)
            return true;
    return false;
}

/* Permissions over access itself (users, roles, sessions, tenants, partner clients): handing one out is
 * an escalation unless the caller holds it. The others (clinical, referral, audit, privacy, ...) are what
 * administrators assign without holding them: a security administrator gives clinicians their role but does
 * not read charts. */
static bool escalates(const authz_claims *c, const char *perm)
{
    static const char *const admin_prefixes[] = {"identity.", "platform.", "partners."};
    for (size_t i = 0; i < BASE_ARRAY_LEN(admin_prefixes); i++)
        if (strncmp(perm, admin_prefixes[i], strlen(admin_prefixes[i])) == 0)
            return !claims_have(c, perm);
    return false;
}

/* The caller may grant a role only if it holds every permission over access the role gives. */
static rpc_code check_no_escalation(rpc_ctx *ctx, const authz_claims *c, const char *role_id)
{
    identity_role role = {0};
    base_result r = identity_store_role_get(idn_of(ctx)->pool, c->tid, role_id, &role);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    rpc_code code = RPC_OK;
    for (size_t i = 0; i < role.npermissions && code == RPC_OK; i++)
        if (escalates(c, role.permissions[i]))
            code = rpc_fail(ctx, RPC_PERMISSION_DENIED,
                            "the role gives permissions the caller does not hold (no escalation by grant)");
    identity_role_clear(&role);
    return code;
}

/* min..max bytes of well-formed UTF-8 without control characters other than those in `allowed` (the store's
 * rule for free text), checked before the audit event of a change that carries it. */
static bool plain_text(const char *s, size_t min, size_t max, const char *allowed)
{
    size_t n = strnlen(s, max + 1);
    if (n < min || n > max)
        return false;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = base_utf8_next(u + i, n - i, &cp);
        if (k == 0 || ((cp < 0x20 || cp == 0x7f) && !strchr(allowed, (int)cp)))
            return false;
        i += k;
    }
    return true;
}

/* A store time (microseconds) for an audit detail: RFC 3339 UTC to the second; 0 reads `zero`. */
static const char *detail_time(rpc_ctx *ctx, int64_t us, const char *zero)
{
    if (us == 0)
        return zero;
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    char buf[32];
    if (!gmtime_r(&t, &tm) || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return "";
    const char *out = rpc_ctx_strdup(ctx, buf);
    return out ? out : "";
}

static const char *rel_kind_detail(int kind)
{
    static const char *const names[] = {"", "primary_care", "specialist", "care_team", "covering"};
    return kind >= 1 && kind <= 4 ? names[kind] : "";
}

rpc_code idn_user_out(rpc_ctx *ctx, const identity_principal *p, Alma__Identity__V1__User *out)
{
    identity_effective eff = {0};
    base_result r = identity_store_effective(idn_of(ctx)->pool, p->tenant_id, p->principal_id, &eff);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    out->tenant_id = rpc_ctx_strdup(ctx, p->tenant_id);
    out->principal_id = rpc_ctx_strdup(ctx, p->principal_id);
    out->username = rpc_ctx_strdup(ctx, p->username);
    out->display_name = rpc_ctx_strdup(ctx, p->display_name);
    out->state = p->state == IDENTITY_PRINCIPAL_ACTIVE ? ALMA__IDENTITY__V1__USER_STATE__USER_STATE_ACTIVE
                                                       : ALMA__IDENTITY__V1__USER_STATE__USER_STATE_DISABLED;
    out->roles = rpc_ctx_alloc(ctx, (eff.nroles + 1) * sizeof *out->roles);
    for (size_t i = 0; out->roles && i < eff.nroles; i++)
        out->roles[i] = rpc_ctx_strdup(ctx, eff.roles[i].role_id);
    out->n_roles = out->roles ? eff.nroles : 0;
    out->totp_enrolled = eff.totp_confirmed;
    out->mfa_required = eff.requires_mfa;
    out->create_time = idn_timestamp(ctx, p->created_us);
    identity_effective_free(&eff);
    return RPC_OK;
}

/* ---- Tenants and users ------------------------------------------------------------------------------------
 */

rpc_code idn_h_create_tenant(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__CreateTenantRequest *req = reqp;
    Alma__Identity__V1__Tenant *out = respp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "platform.tenants.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    const Alma__Identity__V1__Tenant *t = req->tenant;
    if (!t || (t->kind != ALMA__IDENTITY__V1__TENANT_KIND__TENANT_KIND_PROVIDER &&
               t->kind != ALMA__IDENTITY__V1__TENANT_KIND__TENANT_KIND_HEALTH_PLAN))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "tenant with kind PROVIDER or HEALTH_PLAN is required");
    /* A tenant is made with the administrator who can act in it: nobody else can (CreateUser acts in the
     * caller's own tenant). */
    if (!req->admin_username[0] || !req->admin_display_name[0] || !req->admin_initial_password[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "admin_username, admin_display_name and admin_initial_password are required (the "
                        "tenant's first administrator)");
    if (strlen(req->admin_initial_password) > IDN_MAX_PASSWORD)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "admin_initial_password is longer than %d bytes",
                        IDN_MAX_PASSWORD);
    identity_tenant_kind kind = (identity_tenant_kind)t->kind;
    base_result r = identity_store_tenant_check(t->tenant_id, kind, t->display_name);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    char admin_id[IDENTITY_ID_MAX + 1];
    idn_random_id("usr_", admin_id, sizeof admin_id);
    const char *roles[] = {TENANT_ADMIN_ROLE};
    identity_principal_new admin = {.tenant_id = t->tenant_id,
                                    .principal_id = admin_id,
                                    .kind = IDENTITY_PRINCIPAL_USER,
                                    .username = req->admin_username,
                                    .display_name = req->admin_display_name,
                                    .roles = roles,
                                    .nroles = 1,
                                    .created_by = c.sub};
    if (!base_is_ok(r = identity_store_principal_check(&admin)))
        return idn_fail(ctx, r);
    r = cred_password_check_policy(req->admin_initial_password, strlen(req->admin_initial_password),
                                   req->admin_username);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    identity_tenant existing;
    r = identity_store_tenant_get(s->pool, t->tenant_id, &existing);
    if (base_is_ok(r))
        return rpc_fail(ctx, RPC_ALREADY_EXISTS, "tenant_id: already exists");
    if (r.err != BASE_ERR_NOT_FOUND)
        return idn_fail(ctx, r);
    char enc[CRED_PASSWORD_HASH_MAX];
    sem_wait(&s->argon_slots);
    r = cred_password_hash(&s->argon, req->admin_initial_password, strlen(req->admin_initial_password), enc);
    sem_post(&s->argon_slots);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    admin.password_encoded = enc;

    /* Two events, both before the change: the tenant (filed under the platform administrator's tenant, where
     * the act happens) and its administrator (filed under the new tenant, whose auditors must see who made
     * their first administrator). */
    const char *kind_name = kind == IDENTITY_TENANT_PROVIDER ? "provider" : "health_plan";
    idn_audit_event ev_tenant = {.tenant_id = c.tid,
                                 .actor = c.sub,
                                 .claims = &c,
                                 .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                                 .resource_type = "Tenant",
                                 .resource_id = t->tenant_id,
                                 .details = (const char *const[]){"change", "tenant created", "new_kind",
                                                                  kind_name, "new_mfa_required_for_all",
                                                                  t->mfa_required_for_all ? "true" : "false",
                                                                  "first_admin", admin_id, NULL}};
    idn_audit_event ev_admin = {.tenant_id = t->tenant_id,
                                .actor = c.sub,
                                .claims = &c,
                                .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                                .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                                .resource_type = "User",
                                .resource_id = admin_id,
                                .details =
                                    (const char *const[]){"change", "user created", "new_roles",
                                                          TENANT_ADMIN_ROLE, "with_tenant", "true", NULL}};
    if ((code = idn_audit_intent(ctx, &ev_tenant)) != RPC_OK) {
        acrypto_wipe(enc, sizeof enc);
        return code;
    }
    if ((code = idn_audit_intent(ctx, &ev_admin)) != RPC_OK) {
        acrypto_wipe(enc, sizeof enc);
        idn_audit_error(ctx, &ev_tenant, "create tenant", BASE_ERR_UNAVAILABLE);
        return code;
    }
    identity_tenant_new tn = {.tenant_id = t->tenant_id,
                              .kind = kind,
                              .display_name = t->display_name,
                              .mfa_required_for_all = t->mfa_required_for_all};
    identity_tenant made;
    r = identity_store_tenant_create_with_admin(s->pool, &tn, &admin, NULL, &made, NULL);
    acrypto_wipe(enc, sizeof enc);
    if (!base_is_ok(r)) {
        code = idn_audit_failed(ctx, &ev_tenant, "create tenant", r);
        idn_audit_error(ctx, &ev_admin, "create user", r.err);
        return code;
    }
    out->tenant_id = rpc_ctx_strdup(ctx, made.tenant_id);
    out->kind = (Alma__Identity__V1__TenantKind)made.kind;
    out->display_name = rpc_ctx_strdup(ctx, made.display_name);
    out->mfa_required_for_all = made.mfa_required_for_all;
    out->create_time = idn_timestamp(ctx, made.created_us);
    return RPC_OK;
}

rpc_code idn_h_create_user(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__CreateUserRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "identity.users.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    if (req->n_roles > IDENTITY_ROLES_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "at most %d roles", IDENTITY_ROLES_MAX);
    for (size_t i = 0; i < req->n_roles; i++)
        if ((code = check_no_escalation(ctx, &c, req->roles[i])) != RPC_OK)
            return code;
    if (strlen(req->initial_password) > IDN_MAX_PASSWORD)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "initial_password is longer than %d bytes",
                        IDN_MAX_PASSWORD);
    char id[IDENTITY_ID_MAX + 1];
    idn_random_id("usr_", id, sizeof id);
    identity_principal_new in = {.tenant_id = c.tid,
                                 .principal_id = id,
                                 .kind = IDENTITY_PRINCIPAL_USER,
                                 .username = req->username,
                                 .display_name = req->display_name,
                                 .roles = (const char *const *)req->roles,
                                 .nroles = req->n_roles,
                                 .created_by = c.sub};
    base_result r = identity_store_principal_check(&in);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    r = cred_password_check_policy(req->initial_password, strlen(req->initial_password), req->username);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    identity_principal p;
    r = identity_store_principal_get_by_username(s->pool, c.tid, req->username, &p);
    if (base_is_ok(r))
        return rpc_fail(ctx, RPC_ALREADY_EXISTS, "username: already taken in the tenant");
    if (r.err != BASE_ERR_NOT_FOUND)
        return idn_fail(ctx, r);
    char enc[CRED_PASSWORD_HASH_MAX];
    sem_wait(&s->argon_slots);
    r = cred_password_hash(&s->argon, req->initial_password, strlen(req->initial_password), enc);
    sem_post(&s->argon_slots);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    in.password_encoded = enc;
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .resource_type = "User",
                          .resource_id = id,
                          .details = (const char *const[]){"change", "user created", "new_roles",
                                                           join(ctx, req->roles, req->n_roles), NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK) {
        acrypto_wipe(enc, sizeof enc);
        return code;
    }
    r = identity_store_principal_create(s->pool, &in, &p);
    acrypto_wipe(enc, sizeof enc);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "create user", r);
    return idn_user_out(ctx, &p, respp);
}

rpc_code idn_h_get_user(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__GetUserRequest *req = reqp;
    authz_claims c;
    rpc_code code = idn_authenticate(ctx, &c);
    if (code != RPC_OK)
        return code;
    const char *target = req->principal_id[0] ? req->principal_id : c.sub;
    if (strcmp(target, c.sub) != 0 && (code = idn_require(ctx, "identity.users.read", NULL, &c)) != RPC_OK)
        return code;
    identity_principal p;
    base_result r = identity_store_principal_get(idn_of(ctx)->pool, c.tid, target, &p);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    return idn_user_out(ctx, &p, respp);
}

rpc_code idn_h_disable_user(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__DisableUserRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "identity.users.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    if (strcmp(req->principal_id, c.sub) == 0)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "a user cannot disable themselves");
    const char *reason = req->reason[0] ? req->reason : "disabled";
    if (!plain_text(reason, 1, IDENTITY_DISABLE_REASON_MAX, "\t"))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "reason must be at most %d bytes of text without control characters",
                        IDENTITY_DISABLE_REASON_MAX);
    identity_principal before;
    base_result r = identity_store_principal_get(s->pool, c.tid, req->principal_id, &before);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    idn_audit_event ev = {
        .tenant_id = c.tid,
        .actor = c.sub,
        .claims = &c,
        .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
        .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
        .resource_type = "User",
        .resource_id = before.principal_id,
        .details = (const char *const[]){"change", "user disabled", "old_state",
                                         before.state == IDENTITY_PRINCIPAL_ACTIVE ? "active" : "disabled",
                                         "new_state", "disabled", "sessions", "ended, tokens revoked", NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK)
        return code;
    identity_principal p;
    r = identity_store_principal_disable(s->pool, c.tid, before.principal_id, reason, &p, NULL);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "disable user", r);
    /* Sessions end now and every token it holds dies in every service within a second. The user is
     * disabled already (and audited): a failure here is reported, and RevokeSessions finishes the job. */
    if (!base_is_ok(r = idn_end_principal(s, p.principal_id, true, NULL)))
        return rpc_fail(ctx, RPC_UNAVAILABLE,
                        "the user is disabled, but its sessions could not be ended: call RevokeSessions");
    return idn_user_out(ctx, &p, respp);
}

rpc_code idn_h_revoke_sessions(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__RevokeSessionsRequest *req = reqp;
    Alma__Identity__V1__RevokeSessionsResponse *resp = respp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_authenticate(ctx, &c);
    if (code != RPC_OK)
        return code;
    const char *target = req->principal_id[0] ? req->principal_id : c.sub;
    if (strcmp(target, c.sub) != 0 &&
        (code = idn_require(ctx, "identity.sessions.revoke", NULL, &c)) != RPC_OK)
        return code;
    identity_principal p;
    base_result r = identity_store_principal_get(s->pool, c.tid, target, &p);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_LOGOUT,
                          .resource_type = "User",
                          .resource_id = p.principal_id,
                          .details = (const char *const[]){"change", "all sessions revoked", NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK)
        return code;
    int ended = 0;
    if (!base_is_ok(r = idn_end_principal(s, p.principal_id, true, &ended)))
        return idn_audit_failed(ctx, &ev, "revoke sessions", r);
    resp->revoked = ended;
    return RPC_OK;
}

/* ---- Roles and grants -------------------------------------------------------------------------------------
 */

static Alma__Identity__V1__Role *role_out(rpc_ctx *ctx, const identity_role *r)
{
    Alma__Identity__V1__Role *o = rpc_ctx_alloc(ctx, sizeof *o);
    if (!o)
        return NULL;
    alma__identity__v1__role__init(o);
    o->tenant_id = rpc_ctx_strdup(ctx, r->tenant_id);
    o->role_id = rpc_ctx_strdup(ctx, r->role_id);
    o->display_name = rpc_ctx_strdup(ctx, r->display_name);
    o->permissions = rpc_ctx_alloc(ctx, (r->npermissions + 1) * sizeof *o->permissions);
    for (size_t i = 0; o->permissions && i < r->npermissions; i++)
        o->permissions[i] = rpc_ctx_strdup(ctx, r->permissions[i]);
    o->n_permissions = o->permissions ? r->npermissions : 0;
    o->requires_mfa = r->requires_mfa;
    o->version = r->version;
    o->built_in = r->built_in;
    return o;
}

rpc_code idn_h_list_roles(rpc_ctx *ctx, const void *reqp, void *respp)
{
    (void)reqp;
    Alma__Identity__V1__ListRolesResponse *resp = respp;
    authz_claims c;
    rpc_code code = idn_require(ctx, "identity.roles.read", NULL, &c);
    if (code != RPC_OK)
        return code;
    identity_role_list l = {0};
    base_result r = identity_store_roles_list(idn_of(ctx)->pool, c.tid, &l);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    resp->roles = rpc_ctx_alloc(ctx, (l.n + 1) * sizeof *resp->roles);
    for (size_t i = 0; resp->roles && i < l.n; i++)
        resp->roles[resp->n_roles++] = role_out(ctx, &l.items[i]);
    identity_role_list_free(&l);
    return RPC_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The request's permissions as the store will hold them: sorted (strcmp), duplicates folded (arena). */
static char **sorted_unique(rpc_ctx *ctx, char *const *v, size_t n, size_t *ret_n)
{
    char **out = rpc_ctx_alloc(ctx, (n + 1) * sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = v[i];
    qsort(out, n, sizeof *out, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(out[k - 1], out[i]) != 0)
            out[k++] = out[i];
    *ret_n = k;
    return out;
}

/* Revoke the tokens of every active holder of a role, issued at or before `at` (no wait: the caller waits
 * once for all of them). */
static base_result revoke_holders(idn_service *s, const char *tenant_id, const char *role_id, int64_t at,
                                  size_t *ret_count)
{
    char after[IDENTITY_ID_MAX + 1] = "";
    size_t count = 0;
    for (;;) {
        identity_holder_list l = {0};
        BASE_GUARD(identity_store_role_holders(s->pool, tenant_id, role_id, after, HOLDERS_PAGE, &l));
        base_result r = BASE_OK_RESULT;
        for (size_t i = 0; i < l.n && base_is_ok(r); i++)
            r = idn_revoke_principal(s, l.ids[i], false, at, NULL);
        bool more = l.more;
        if (l.n > 0)
            snprintf(after, sizeof after, "%s", l.ids[l.n - 1]);
        count += l.n;
        identity_holder_list_free(&l);
        BASE_GUARD(r);
        if (!more)
            break;
    }
    *ret_count = count;
    return BASE_OK_RESULT;
}

rpc_code idn_h_put_role(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__PutRoleRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "identity.roles.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    const Alma__Identity__V1__Role *want = req->role;
    if (!want)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "role is required");
    if (want->version < 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "role.version must not be negative");
    for (size_t i = 0; i < want->n_permissions; i++)
        if (escalates(&c, want->permissions[i]))
            return rpc_fail(ctx, RPC_PERMISSION_DENIED,
                            "the role would give permissions the caller does not hold (no escalation)");
    identity_role_put in = {.tenant_id = c.tid,
                            .role_id = want->role_id,
                            .display_name = want->display_name,
                            .requires_mfa = want->requires_mfa,
                            .permissions = (const char *const *)want->permissions,
                            .npermissions = want->n_permissions,
                            .changed_by = c.sub};
    base_result r = identity_store_role_put_check(&in);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    /* The role as it is: the old values of the event, and the version the change is pinned to (a concurrent
     * change makes the store refuse this one rather than record values the event did not announce). */
    identity_role before = {0};
    r = identity_store_role_get(s->pool, c.tid, want->role_id, &before);
    bool exists = base_is_ok(r);
    if (!exists && r.err != BASE_ERR_NOT_FOUND)
        return idn_fail(ctx, r);
    if (exists && before.built_in)
        code = rpc_fail(ctx, RPC_FAILED_PRECONDITION, "role_id: built-in roles cannot be changed");
    else if (want->version != 0 && (!exists || before.version != want->version))
        code = rpc_fail(ctx, RPC_FAILED_PRECONDITION, "role.version: the role has another version");
    size_t nperms = 0;
    char **perms =
        code == RPC_OK ? sorted_unique(ctx, want->permissions, want->n_permissions, &nperms) : NULL;
    if (code == RPC_OK && !perms)
        code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    bool same = exists && nperms == before.npermissions;
    for (size_t i = 0; same && i < nperms; i++)
        same = strcmp(perms[i], before.permissions[i]) == 0;
    bool changed = !exists || !same || before.requires_mfa != want->requires_mfa ||
                   strcmp(before.display_name, want->display_name) != 0;
    in.expected_version = exists ? before.version : IDENTITY_ROLE_VERSION_NEW;
    char old_version[24], new_version[24];
    snprintf(old_version, sizeof old_version, "%" PRId64, exists ? before.version : 0);
    snprintf(new_version, sizeof new_version, "%" PRId64,
             !exists   ? 1
             : changed ? before.version + 1
                       : before.version);
    const char *old_perms = join(ctx, before.permissions, before.npermissions);
    bool old_mfa = before.requires_mfa;
    identity_role_clear(&before);
    if (code != RPC_OK)
        return code;
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .resource_type = "Role",
                          .resource_id = want->role_id,
                          .details = (const char *const[]){
                              "change",
                              !exists   ? "role created"
                              : changed ? "role changed"
                                        : "role unchanged",
                              "old_version", old_version, "new_version", new_version, "old_permissions",
                              old_perms, "new_permissions", join(ctx, perms, nperms), "old_requires_mfa",
                              exists ? (old_mfa ? "true" : "false") : "", "new_requires_mfa",
                              want->requires_mfa ? "true" : "false", NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK)
        return code;
    identity_role after = {0};
    bool did = false;
    r = identity_store_role_put(s->pool, &in, &after, NULL, &did);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "put role", r);
    if (did != changed)
        log_emit(LOG_WARN, rpc_ctx_request_id(ctx),
                 "PutRole: the store's change differs from the audited one", NULL);
    /* The holders' tokens carry the old permissions: revoke them all now, then wait once for the second to
     * pass (README: a role change takes effect within a second; a Refresh gets the new permissions). */
    if (did) {
        int64_t at = idn_now();
        size_t holders = 0;
        r = revoke_holders(s, c.tid, after.role_id, at, &holders);
        if (!base_is_ok(r)) {
            identity_role_clear(&after);
            return rpc_fail(ctx, RPC_UNAVAILABLE,
                            "the role was changed, but its holders' tokens could not all be revoked: they "
                            "lapse within the token lifetime, or end them with RevokeSessions");
        }
        idn_wait_past(at);
        char count[24];
        snprintf(count, sizeof count, "%zu", holders);
        log_emit(LOG_INFO, rpc_ctx_request_id(ctx), "role changed: holders' tokens revoked", "holders", count,
                 NULL);
    }
    Alma__Identity__V1__Role *o = role_out(ctx, &after);
    identity_role_clear(&after);
    if (!o)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    *(Alma__Identity__V1__Role *)respp = *o;
    return RPC_OK;
}

static rpc_code grant_or_revoke(rpc_ctx *ctx, const char *principal_id, const char *role_id, bool grant,
                                void *respp)
{
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "identity.roles.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    if ((code = check_no_escalation(ctx, &c, role_id)) != RPC_OK)
        return code;
    identity_principal p;
    base_result r = identity_store_principal_get(s->pool, c.tid, principal_id, &p);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    identity_effective eff = {0};
    if (!base_is_ok(r = identity_store_effective(s->pool, c.tid, p.principal_id, &eff)))
        return idn_fail(ctx, r);
    bool held = false;
    for (size_t i = 0; i < eff.nroles && !held; i++)
        held = strcmp(eff.roles[i].role_id, role_id) == 0;
    identity_effective_free(&eff);
    if (grant && held)
        return rpc_fail(ctx, RPC_ALREADY_EXISTS, "role_id: already granted");
    if (!grant && !held)
        return rpc_fail(ctx, RPC_NOT_FOUND, "role_id: not granted to the principal in the tenant");
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                          .resource_type = "User",
                          .resource_id = p.principal_id,
                          .details = (const char *const[]){
                              "change", grant ? "role granted" : "role revoked", "role", role_id, "old_held",
                              grant ? "false" : "true", "new_held", grant ? "true" : "false", NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK)
        return code;
    r = grant ? identity_store_grant(s->pool, c.tid, p.principal_id, role_id, c.sub)
              : identity_store_revoke(s->pool, c.tid, p.principal_id, role_id);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, grant ? "grant role" : "revoke role", r);
    /* The user's tokens carry the old permissions: revoke them now; a Refresh gets the new ones. */
    if (!base_is_ok(r = idn_end_principal(s, p.principal_id, false, NULL)))
        return rpc_fail(ctx, RPC_UNAVAILABLE,
                        "the role was %s, but the user's tokens could not be revoked: they lapse within the "
                        "token lifetime, or end them with RevokeSessions",
                        grant ? "granted" : "revoked");
    return idn_user_out(ctx, &p, respp);
}

rpc_code idn_h_grant_role(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__GrantRoleRequest *req = reqp;
    return grant_or_revoke(ctx, req->principal_id, req->role_id, true, respp);
}

rpc_code idn_h_revoke_role(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__RevokeRoleRequest *req = reqp;
    return grant_or_revoke(ctx, req->principal_id, req->role_id, false, respp);
}

/* ---- Care relationships and break-glass
 * --------------------------------------------------------------------- */

static rpc_code relationship_out(rpc_ctx *ctx, const identity_relationship *r,
                                 Alma__Identity__V1__CareRelationship *o)
{
    o->relationship_id = rpc_ctx_strdup(ctx, r->relationship_id);
    o->tenant_id = rpc_ctx_strdup(ctx, r->tenant_id);
    o->clinician_id = rpc_ctx_strdup(ctx, r->clinician_id);
    o->patient_ref = rpc_ctx_strdup(ctx, r->patient_ref);
    o->kind = (Alma__Identity__V1__RelationshipKind)r->kind;
    o->start_time = idn_timestamp(ctx, r->start_us);
    o->end_time = r->end_us ? idn_timestamp(ctx, r->end_us) : NULL;
    return RPC_OK;
}

/* Mirror whichever relationship of this clinician and patient is in force now (or none). */
static base_result remirror(idn_service *s, const char *tenant, const char *clinician, const char *patient)
{
    cache_conn *conn = cache_thread_conn(&s->cache);
    if (!conn)
        return base_fail(BASE_ERR_UNAVAILABLE, "Redis unavailable");
    identity_relationship_list l = {0};
    BASE_GUARD(identity_store_relationships_active(s->pool, tenant, clinician, patient, &l));
    base_result r = l.n > 0 ? idn_mirror_relationship(s, conn, &l.items[0])
                            : authz_unmirror_relationship(conn, tenant, clinician, patient);
    identity_relationship_list_free(&l);
    return r;
}

rpc_code idn_h_create_relationship(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__CreateCareRelationshipRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "care.relationships.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    const Alma__Identity__V1__CareRelationship *in = req->relationship;
    if (!in || in->kind < 1 || in->kind > 4)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "relationship with a kind is required");
    int64_t start = 0, end = 0;
    if (in->start_time && !idn_timestamp_micros(in->start_time, &start))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "relationship.start_time is out of range");
    if (in->end_time && !idn_timestamp_micros(in->end_time, &end))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "relationship.end_time is out of range");
    if (!authz_valid_patient_ref(in->patient_ref))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "relationship.patient_ref must be pt_ and 32 lowercase hex digits");
    if (end != 0 && end <= (start ? start : idn_now_us()))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "relationship.end_time must be after the start");
    identity_principal clinician;
    base_result r = identity_store_principal_get(s->pool, c.tid, in->clinician_id, &clinician);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    char rel_id[IDENTITY_ID_MAX + 1];
    idn_random_id("rel_", rel_id, sizeof rel_id);
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .patient_ref = in->patient_ref,
                          .resource_type = "CareRelationship",
                          .resource_id = rel_id,
                          .details = (const char *const[]){
                              "change", "care relationship created", "clinician", clinician.principal_id,
                              "kind", rel_kind_detail(in->kind), "new_start", detail_time(ctx, start, "now"),
                              "new_end", detail_time(ctx, end, "open"), NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK)
        return code;
    identity_relationship_new n = {.relationship_id = rel_id,
                                   .tenant_id = c.tid,
                                   .clinician_id = clinician.principal_id,
                                   .patient_ref = in->patient_ref,
                                   .kind = (identity_relationship_kind)in->kind,
                                   .start_us = start,
                                   .end_us = end,
                                   .created_by = c.sub};
    identity_relationship rel;
    r = identity_store_relationship_create(s->pool, &n, &rel);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "create care relationship", r);
    if (!base_is_ok(r = remirror(s, c.tid, rel.clinician_id, rel.patient_ref)))
        return idn_fail(ctx, r);
    return relationship_out(ctx, &rel, respp);
}

rpc_code idn_h_end_relationship(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__EndCareRelationshipRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "care.relationships.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    int64_t end = 0;
    if (req->end_time && !idn_timestamp_micros(req->end_time, &end))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "end_time is out of range");
    identity_relationship before;
    base_result r = identity_store_relationship_get(s->pool, c.tid, req->relationship_id, &before);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    /* The store's rule (only a relationship not ended by then), checked first so that a refusal is not
     * audited as a change; the store checks again. */
    int64_t effective = end ? end : idn_now_us();
    if (before.ended_by[0] || (before.end_us != 0 && before.end_us <= effective))
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "relationship_id: already ended");
    /* An end before the start cancels it: the end becomes the start. */
    int64_t new_end = effective < before.start_us ? before.start_us : end;
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .patient_ref = before.patient_ref,
                          .resource_type = "CareRelationship",
                          .resource_id = before.relationship_id,
                          .details = (const char *const[]){"change", "care relationship ended", "clinician",
                                                           before.clinician_id, "old_end",
                                                           detail_time(ctx, before.end_us, "open"), "new_end",
                                                           detail_time(ctx, new_end, "now"), NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK)
        return code;
    identity_relationship rel;
    r = identity_store_relationship_end(s->pool, c.tid, before.relationship_id, end, c.sub, &rel);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "end care relationship", r);
    if (!base_is_ok(r = remirror(s, c.tid, rel.clinician_id, rel.patient_ref)))
        return idn_fail(ctx, r);
    return relationship_out(ctx, &rel, respp);
}

static void grant_out(rpc_ctx *ctx, const identity_break_glass *g, Alma__Identity__V1__BreakGlassGrant *o)
{
    o->grant_id = rpc_ctx_strdup(ctx, g->grant_id);
    o->tenant_id = rpc_ctx_strdup(ctx, g->tenant_id);
    o->clinician_id = rpc_ctx_strdup(ctx, g->clinician_id);
    o->patient_ref = rpc_ctx_strdup(ctx, g->patient_ref);
    o->reason = rpc_ctx_strdup(ctx, g->reason);
    o->start_time = idn_timestamp(ctx, g->start_us);
    o->end_time = idn_timestamp(ctx, g->end_us);
}

/* The store's rule for a reason: IDENTITY_BREAK_GLASS_REASON_MIN..MAX bytes, no control characters but
 * tab, newline and carriage return (checked here too, because the grant is audited before it is stored). */
static bool break_glass_reason_ok(const char *reason)
{
    size_t n = strlen(reason);
    if (n < IDENTITY_BREAK_GLASS_REASON_MIN || n > IDENTITY_BREAK_GLASS_REASON_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)reason; *p; p++)
        if ((*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') || *p == 0x7f)
            return false;
    return true;
}

rpc_code idn_h_break_glass(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__BreakGlassRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, AUTHZ_PERM_BREAK_GLASS, NULL, &c);
    if (code != RPC_OK)
        return code;
    if (req->duration_minutes < 1 || req->duration_minutes > IDENTITY_BREAK_GLASS_MAX_MIN)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "duration_minutes must be 1..%d",
                        IDENTITY_BREAK_GLASS_MAX_MIN);
    if (!authz_valid_patient_ref(req->patient_ref))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "patient_ref must be pt_ and 32 lowercase hex digits");
    if (!break_glass_reason_ok(req->reason))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "reason must be %d..%d bytes of text (no control characters but tab and newline)",
                        IDENTITY_BREAK_GLASS_REASON_MIN, IDENTITY_BREAK_GLASS_REASON_MAX);
    /* Audited before the grant exists: the stored grant is usable at once (Check reads it, and the mirrors
     * are rebuilt from it at start-up) and can never be withdrawn (append-only), so an audit failure after
     * storing it would leave PHI access open without its record. If storing fails after the audit, an ERROR
     * event for the same grant follows: the pair reads "no grant was opened". */
    char grant_id[IDENTITY_ID_MAX + 1];
    idn_random_id("bg_", grant_id, sizeof grant_id);
    char minutes[16];
    snprintf(minutes, sizeof minutes, "%d", req->duration_minutes);
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_BREAK_GLASS,
                          .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH,
                          .patient_ref = req->patient_ref,
                          .resource_type = "BreakGlassGrant",
                          .resource_id = grant_id,
                          .details = (const char *const[]){"duration_minutes", minutes, NULL}};
    if (!base_is_ok(idn_audit(ctx, &ev)))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "audit log unavailable: no break-glass grant was opened");
    identity_break_glass_new n = {.grant_id = grant_id,
                                  .tenant_id = c.tid,
                                  .clinician_id = c.sub,
                                  .patient_ref = req->patient_ref,
                                  .reason = req->reason,
                                  .duration_minutes = req->duration_minutes};
    identity_break_glass g;
    base_result r = identity_store_break_glass_create(s->pool, &n, &g);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "open break-glass grant", r);
    cache_conn *conn = cache_thread_conn(&s->cache);
    if (!conn)
        return rpc_fail(ctx, RPC_UNAVAILABLE, "Redis unavailable");
    r = authz_mirror_break_glass(conn, c.tid, c.sub, g.patient_ref, g.grant_id, g.end_us / 1000000);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    grant_out(ctx, &g, respp);
    log_emit(LOG_WARN, rpc_ctx_request_id(ctx), "break-glass grant opened", "component", "break-glass", NULL);
    return RPC_OK;
}

rpc_code idn_h_list_break_glass(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__ListBreakGlassGrantsRequest *req = reqp;
    Alma__Identity__V1__ListBreakGlassGrantsResponse *resp = respp;
    authz_claims c;
    rpc_code code = idn_require(ctx, "privacy.review", NULL, &c);
    if (code != RPC_OK)
        return code;
    int64_t since = 0, after_us = 0;
    if (req->since && !idn_timestamp_micros(req->since, &since))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "since is out of range");
    int limit = req->page_size > 0 ? req->page_size : 100;
    if (limit > IDENTITY_LIST_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "page_size must be 1..%d", IDENTITY_LIST_MAX);
    char after_id[IDENTITY_ID_MAX + 1] = "";
    if (req->page_token[0]) {
        /* "<created_us>.<grant_id>" */
        char *dot = strchr(req->page_token, '.');
        char *end = NULL;
        after_us = dot ? strtoll(req->page_token, &end, 10) : -1;
        if (!dot || end != dot || after_us < 0 || strlen(dot + 1) > IDENTITY_ID_MAX)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "page_token is not one this service issued");
        snprintf(after_id, sizeof after_id, "%s", dot + 1);
    }
    identity_break_glass_list l = {0};
    base_result r =
        identity_store_break_glass_list(idn_of(ctx)->pool, c.tid, since, after_us, after_id, limit, &l);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    resp->grants = rpc_ctx_alloc(ctx, (l.n + 1) * sizeof *resp->grants);
    for (size_t i = 0; resp->grants && i < l.n; i++) {
        Alma__Identity__V1__BreakGlassGrant *g = rpc_ctx_alloc(ctx, sizeof *g);
        if (!g)
            break;
        alma__identity__v1__break_glass_grant__init(g);
        grant_out(ctx, &l.items[i], g);
        resp->grants[resp->n_grants++] = g;
    }
    if (l.more && l.n > 0)
        resp->next_page_token =
            rpc_ctx_printf(ctx, "%" PRId64 ".%s", l.items[l.n - 1].created_us, l.items[l.n - 1].grant_id);
    identity_break_glass_list_free(&l);
    return RPC_OK;
}

/* ---- Check ----------------------------------------------------------------------------------------------
 */

rpc_code idn_h_check(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__CheckRequest *req = reqp;
    Alma__Identity__V1__CheckResponse *resp = respp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_authenticate(ctx, &c);
    if (code != RPC_OK)
        return code;
    const char *target = req->principal_id[0] ? req->principal_id : c.sub;
    if (strcmp(target, c.sub) != 0 && (code = idn_require(ctx, "identity.users.read", NULL, &c)) != RPC_OK)
        return code;
    if (!req->permission[0] || strlen(req->permission) > IDENTITY_PERMISSION_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "permission is required");
    bool scoped = authz_permission_is_patient_scoped(req->permission);
    if (scoped && !authz_valid_patient_ref(req->patient_ref))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "patient_ref (pt_ + 32 hex) is required for a patient-scoped permission");
    identity_effective eff = {0};
    base_result r = identity_store_effective(s->pool, c.tid, target, &eff);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    const char *role = NULL;
    for (size_t i = 0; i < eff.nroles && !role; i++)
        for (size_t j = 0; j < eff.roles[i].npermissions && !role; j++)
            if (strcmp(eff.roles[i].permissions[j], req->permission) == 0)
                role = rpc_ctx_strdup(ctx, eff.roles[i].role_id);
    bool active = eff.state == IDENTITY_PRINCIPAL_ACTIVE;
    identity_effective_free(&eff);
    if (!active) {
        resp->reason = (char *)"the principal is disabled";
    } else if (!role) {
        resp->reason = rpc_ctx_printf(ctx, "no role of the principal grants %s", req->permission);
    } else if (!scoped) {
        resp->allowed = true;
        resp->decided_by = rpc_ctx_printf(ctx, "role:%s", role);
        resp->reason = rpc_ctx_printf(ctx, "role %s grants %s", role, req->permission);
    } else {
        identity_relationship_list l = {0};
        r = identity_store_relationships_active(s->pool, c.tid, target, req->patient_ref, &l);
        if (!base_is_ok(r))
            return idn_fail(ctx, r);
        if (l.n > 0) {
            resp->allowed = true;
            resp->decided_by = rpc_ctx_printf(ctx, "relationship:%s", l.items[0].relationship_id);
            resp->reason = rpc_ctx_printf(ctx, "role %s grants %s; treating relationship %s", role,
                                          req->permission, l.items[0].relationship_id);
        }
        identity_relationship_list_free(&l);
        if (!resp->allowed) {
            /* A break-glass grant in force now for this clinician and patient (one index lookup): the
             * mirror every service reads has it until it ends. */
            identity_break_glass g;
            bool found = false;
            r = identity_store_break_glass_active(s->pool, c.tid, target, req->patient_ref, 0, &g, &found);
            if (!base_is_ok(r))
                return idn_fail(ctx, r);
            if (found) {
                resp->allowed = true;
                resp->decided_by = rpc_ctx_printf(ctx, "break_glass:%s", g.grant_id);
                resp->reason = rpc_ctx_printf(ctx, "role %s grants %s; break-glass grant %s", role,
                                              req->permission, g.grant_id);
            }
        }
        if (!resp->allowed)
            resp->reason = rpc_ctx_printf(ctx,
                                          "role %s grants %s, but there is no treating relationship or "
                                          "break-glass grant for this patient",
                                          role, req->permission);
    }
    if (!resp->allowed && scoped) {
        /* Every denied PHI access is audited. */
        idn_audit_event ev = {.tenant_id = c.tid,
                              .actor = target,
                              .action = ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED,
                              .outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED,
                              .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH,
                              .patient_ref = req->patient_ref,
                              .resource_type = "Permission",
                              .resource_id = req->permission,
                              .details = (const char *const[]){"checked_by", c.sub, NULL}};
        if (!base_is_ok(idn_audit(ctx, &ev)))
            return rpc_fail(ctx, RPC_UNAVAILABLE, "audit log unavailable");
    }
    return RPC_OK;
}

/* ---- Partner clients -------------------------------------------------------------------------------------
 */

static void partner_out(rpc_ctx *ctx, const identity_partner_client *p, Alma__Identity__V1__PartnerClient *o)
{
    o->client_id = rpc_ctx_strdup(ctx, p->client_id);
    o->tenant_id = rpc_ctx_strdup(ctx, p->tenant_id);
    o->display_name = rpc_ctx_strdup(ctx, p->display_name);
    o->jwks_json = rpc_ctx_strdup(ctx, p->jwks_json ? p->jwks_json : "");
    o->scopes = rpc_ctx_alloc(ctx, (p->nscopes + 1) * sizeof *o->scopes);
    for (size_t i = 0; o->scopes && i < p->nscopes; i++)
        o->scopes[i] = rpc_ctx_strdup(ctx, p->scopes[i]);
    o->n_scopes = o->scopes ? p->nscopes : 0;
    o->disabled = p->disabled;
}

rpc_code idn_h_register_partner(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__RegisterPartnerClientRequest *req = reqp;
    idn_service *s = idn_of(ctx);
    authz_claims c;
    rpc_code code = idn_require(ctx, "partners.manage", NULL, &c);
    if (code != RPC_OK)
        return code;
    if (!req->client)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "client is required");
    identity_partner_client_new in = {.client_id = req->client->client_id,
                                      .tenant_id = req->client->tenant_id,
                                      .display_name = req->client->display_name,
                                      .jwks_json = req->client->jwks_json,
                                      .scopes = (const char *const *)req->client->scopes,
                                      .nscopes = req->client->n_scopes,
                                      .created_by = c.sub};
    base_result r = identity_store_partner_client_check(&in);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    identity_tenant t;
    if (!base_is_ok(r = identity_store_tenant_get(s->pool, in.tenant_id, &t)))
        return idn_fail(ctx, r);
    if (t.kind != IDENTITY_TENANT_HEALTH_PLAN)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "client.tenant_id: not a health plan tenant");
    identity_partner_client p = {0};
    r = identity_store_partner_client_find(s->pool, in.client_id, &p);
    identity_partner_client_clear(&p);
    if (base_is_ok(r))
        return rpc_fail(ctx, RPC_ALREADY_EXISTS, "client_id: already registered");
    if (r.err != BASE_ERR_NOT_FOUND)
        return idn_fail(ctx, r);
    idn_audit_event ev = {.tenant_id = c.tid,
                          .actor = c.sub,
                          .claims = &c,
                          .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                          .resource_type = "PartnerClient",
                          .resource_id = in.client_id,
                          .details = (const char *const[]){
                              "change", "partner client registered", "tenant", in.tenant_id, "new_scopes",
                              join(ctx, req->client->scopes, req->client->n_scopes), NULL}};
    if ((code = idn_audit_intent(ctx, &ev)) != RPC_OK)
        return code;
    r = identity_store_partner_client_register(s->pool, &in, &p);
    if (!base_is_ok(r))
        return idn_audit_failed(ctx, &ev, "register partner client", r);
    partner_out(ctx, &p, respp);
    identity_partner_client_clear(&p);
    return RPC_OK;
}

rpc_code idn_h_get_partner(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Identity__V1__GetPartnerClientRequest *req = reqp;
    identity_partner_client p = {0};
    base_result r = identity_store_partner_client_find(idn_of(ctx)->pool, req->client_id, &p);
    if (!base_is_ok(r))
        return idn_fail(ctx, r);
    partner_out(ctx, &p, respp);
    identity_partner_client_clear(&p);
    return RPC_OK;
}
