/* alma.vault.v1.Vault: state, settings, authorisation, views, audit, the method table (service_internal.h
 * has the order every handler follows). */
#include "service.h"
#include "service_internal.h"

#include "base/log.h"
#include "daemon/daemon.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VAULT_METHOD(n) "/alma.vault.v1.Vault/" n

/* ---- Settings ------------------------------------------------------------------------------------------ */

static const char *set_pg_uri, *set_pg_owner_uri, *set_pg_schema, *set_master_key, *set_signing_key,
    *set_identity_addr, *set_redis_addr, *set_audit_addr;
static long set_pg_pool_size, set_views_refresh_s;

const cfg_setting vault_settings[] = {
    {"pg-uri", CFG_STRING, NULL, &set_pg_uri, 1, 4096, "PostgreSQL URI of the runtime role", true},
    {"pg-owner-uri", CFG_STRING, "", &set_pg_owner_uri, 0, 4096,
     "PostgreSQL URI of the schema owner: runs the migrations and grants the runtime role its rights "
     "(empty: the runtime role migrates, development only)",
     true},
    {"pg-schema", CFG_STRING, "vault", &set_pg_schema, 1, 63, "schema of the vault tables", false},
    {"pg-pool-size", CFG_INT, "32", &set_pg_pool_size, 2, 256, "database connections", false},
    {"master-key", CFG_STRING, NULL, &set_master_key, 1, 4096,
     "the master key's provider: file:<path> (base64 of 32 bytes, mode 0400/0600) or env:<VARIABLE>", true},
    {"signing-key", CFG_STRING, NULL, &set_signing_key, 1, 4096,
     "PEM file with the Ed25519 private key that signs destruction certificates", false},
    {"identity-addr", CFG_STRING, NULL, &set_identity_addr, 3, 300,
     "the identity service's API host:port (token verification keys)", false},
    {"redis-addr", CFG_STRING, "127.0.0.1:6379", &set_redis_addr, 3, 300,
     "Redis host:port: token revocations, care relationships and break-glass grants", false},
    {"audit-addr", CFG_STRING, NULL, &set_audit_addr, 3, 300, "the audit service's API host:port", false},
    {"views-refresh-s", CFG_INT, "30", &set_views_refresh_s, 1, 3600,
     "how often the minimum-necessary views are re-read from the database", false},
};
const size_t vault_setting_count = BASE_ARRAY_LEN(vault_settings);

/* ---- Helpers ------------------------------------------------------------------------------------------- */

vs_service *vs_of(rpc_ctx *ctx)
{
    return rpc_ctx_service_state(ctx);
}

int64_t vs_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

Google__Protobuf__Timestamp *vs_timestamp(rpc_ctx *ctx, int64_t micros)
{
    if (micros <= 0)
        return NULL;
    Google__Protobuf__Timestamp *t = rpc_ctx_alloc(ctx, sizeof *t);
    if (!t)
        return NULL;
    google__protobuf__timestamp__init(t);
    t->seconds = micros / 1000000;
    t->nanos = (int32_t)(micros % 1000000) * 1000;
    return t;
}

rpc_code vs_fail(rpc_ctx *ctx, base_result r)
{
    if (r.err == BASE_ERR_CRYPTO) {
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "a record failed its integrity check", NULL);
        return rpc_fail(ctx, RPC_DATA_LOSS, "record failed its integrity check");
    }
    return rpc_fail_result(ctx, r);
}

rpc_code vs_check_tenant(rpc_ctx *ctx, const char *tenant_id)
{
    if (!tenant_id || !authz_valid_tenant(tenant_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "tenant_id: required, [a-z0-9][a-z0-9-]{1,62}");
    return RPC_OK;
}

rpc_code vs_check_patient_ref(rpc_ctx *ctx, const char *field, const char *ref)
{
    if (!ref || !authz_valid_patient_ref(ref))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "%s: required, \"pt_\" + 32 lowercase hex digits", field);
    return RPC_OK;
}

static bool is_hex32(const char *s)
{
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[32] == '\0';
}

rpc_code vs_check_record_id(rpc_ctx *ctx, const char *field, const char *id)
{
    if (!id || strlen(id) != VAULT_ID_LEN || (strncmp(id, "pt_", 3) != 0 && strncmp(id, "it_", 3) != 0) ||
        !is_hex32(id + 3))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "%s: required, \"pt_\" or \"it_\" + 32 lowercase hex digits", field);
    return RPC_OK;
}

rpc_code vs_check_purpose(rpc_ctx *ctx, int purpose)
{
    if (purpose < ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT ||
        purpose > ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_EMERGENCY)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "purpose: required (a PurposeOfUse other than UNSPECIFIED)");
    return RPC_OK;
}

const char *vs_category_list(rpc_ctx *ctx, unsigned mask)
{
    char *out = rpc_ctx_alloc(ctx, 128);
    if (!out)
        return "";
    size_t len = 0;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
        if (mask & VAULT_CATEGORY_BIT(c))
            len += (size_t)snprintf(out + len, 128 - len, "%s%s", len ? "," : "", vault_category_name(c));
    return out;
}

/* ---- Audit --------------------------------------------------------------------------------------------- */

base_result vs_audit(rpc_ctx *ctx, const vs_event *e)
{
    base_result r = audit_client_record(vs_of(ctx)->audit, e, ctx, NULL);
    if (!base_is_ok(r))
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "audit append failed", "error", base_error_message(),
                 NULL);
    return r;
}

rpc_code vs_audit_intent(rpc_ctx *ctx, const vs_event *ev)
{
    return audit_client_require(vs_of(ctx)->audit, ev, ctx, "nothing was changed");
}

rpc_code vs_audit_disclosure(rpc_ctx *ctx, const vs_event *ev)
{
    return audit_client_require(vs_of(ctx)->audit, ev, ctx, "nothing was disclosed");
}

rpc_code vs_audit_failed(rpc_ctx *ctx, const vs_event *intent, base_result r)
{
    rpc_code code = vs_fail(ctx, r);
    audit_client_record_error(vs_of(ctx)->audit, intent, NULL, r.err, ctx);
    return code;
}

/* ---- Authorisation ------------------------------------------------------------------------------------- */

static void audit_denial(rpc_ctx *ctx, const char *tenant_id, const authz_decision *d,
                         const authz_claims *claims, const char *permission, const char *patient_ref,
                         int purpose)
{
    if (!d->authenticated)
        return; /* no principal to record: a bad or missing token is not an access attempt by anyone */
    bool phi = patient_ref && patient_ref[0];
    vs_event ev = {.tenant_id = authz_valid_tenant(tenant_id) ? tenant_id : claims->tid,
                   .claims = claims,
                   .action = ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED,
                   .purpose = purpose,
                   .outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED,
                   .severity = phi ? ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH
                                   : ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                   .patient_ref = phi ? patient_ref : NULL,
                   .resource_type = phi ? "Patient" : NULL,
                   .resource_id = phi ? patient_ref : NULL,
                   .details = (const char *const[]){"permission", permission ? permission : "", "method",
                                                    rpc_ctx_method(ctx), NULL}};
    (void)vs_audit(ctx, &ev); /* best effort: the call is refused either way */
}

rpc_code vs_require(rpc_ctx *ctx, const char *tenant_id, const char *permission, const char *patient_ref,
                    authz_claims *claims)
{
    vs_service *s = vs_of(ctx);
    authz_decision d;
    authz_resource res = {.tenant_id = tenant_id, .patient_ref = patient_ref};
    memset(claims, 0, sizeof *claims);
    base_result r = authz_authorize(s->az, rpc_ctx_authorization(ctx), permission, &res, claims, &d);
    if (base_is_ok(r))
        return RPC_OK;
    if (d.code == AUTHZ_PERMISSION_DENIED)
        audit_denial(ctx, tenant_id, &d, claims, permission, patient_ref, 0);
    return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
}

rpc_code vs_require_view(rpc_ctx *ctx, const char *tenant_id, const char *patient_ref, int purpose,
                         authz_claims *claims, vault_view *view)
{
    vs_service *s = vs_of(ctx);
    authz_decision d;
    memset(claims, 0, sizeof *claims);
    base_result r = authz_authenticate(s->az, rpc_ctx_authorization(ctx), claims, &d);
    if (!base_is_ok(r))
        return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
    if (strcmp(claims->tid, tenant_id) != 0) {
        d.authenticated = true;
        audit_denial(ctx, tenant_id, &d, claims, "", patient_ref, purpose);
        return rpc_fail(ctx, RPC_PERMISSION_DENIED, "the resource belongs to another tenant");
    }
    const char *roles[AUTHZ_MAX_ROLES];
    for (size_t i = 0; i < claims->role_count; i++)
        roles[i] = claims->roles[i];
    r = vault_views_cache_resolve(s->views, tenant_id, roles, claims->role_count, purpose, view);
    if (!base_is_ok(r)) {
        if (r.err != BASE_ERR_DENIED)
            return vs_fail(ctx, r);
        d.authenticated = true;
        audit_denial(ctx, tenant_id, &d, claims, "", patient_ref, purpose);
        return rpc_fail(ctx, RPC_PERMISSION_DENIED, "no view for the caller's roles and this purpose of use");
    }
    for (size_t i = 0; i < view->n_permissions; i++) {
        authz_resource res = {.tenant_id = tenant_id, .patient_ref = patient_ref};
        authz_claims again;
        r = authz_authorize(s->az, rpc_ctx_authorization(ctx), view->permissions[i], &res, &again, &d);
        if (!base_is_ok(r)) {
            if (d.code == AUTHZ_PERMISSION_DENIED)
                audit_denial(ctx, tenant_id, &d, claims, view->permissions[i], patient_ref, purpose);
            return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
        }
    }
    return RPC_OK;
}

/* ---- Life cycle ---------------------------------------------------------------------------------------- */

static base_result migrate(db_pool *runtime)
{
    if (!set_pg_owner_uri[0])
        return vault_store_migrate(runtime, set_pg_schema);
    return db_migrate_as_owner(runtime, set_pg_owner_uri, set_pg_schema, "alma-vault-migrate",
                               vault_store_migrate);
}

base_result vault_service_init(void **ret_state)
{
    vs_service *s = calloc(1, sizeof *s);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    base_result r = vault_keyprovider_open(set_master_key, &s->master);
    if (!base_is_ok(r)) {
        r = base_fail(r.err, "cannot open the master key (master-key): %s", base_error_message());
        goto fail;
    }
    r = acrypto_ed25519_private_from_pem_file(set_signing_key, &s->cert_key);
    if (!base_is_ok(r)) {
        r = base_fail(r.err, "cannot load the certificate signing key (signing-key): %s",
                      base_error_message());
        goto fail;
    }
    size_t vlen = 0;
    BASE_GUARD_GOTO(r, acrypto_ed25519_public_to_pem(s->cert_key, &s->cert_vkey_pem, &vlen), fail);

    db_pool_config pcfg = db_pool_config_default(set_pg_uri, (int)set_pg_pool_size, 5000);
    pcfg.search_path = set_pg_schema;
    pcfg.application_name = "alma-vault";
    BASE_GUARD_GOTO(r, db_pool_create_config(&pcfg, &s->pool), fail);
    BASE_GUARD_GOTO(r, migrate(s->pool), fail);
    BASE_GUARD_GOTO(r, vault_store_open(s->pool, s->master, &s->store), fail);
    BASE_GUARD_GOTO(r, vault_views_cache_open(s->pool, (int)set_views_refresh_s, &s->views), fail);

    rpc_client_tls tls = {.files = daemon_tls_files()};
    BASE_GUARD_GOTO(r, authz_remote_open(set_identity_addr, set_redis_addr, &tls, 5000, &s->remote), fail);
    s->az = authz_remote_authz(s->remote);
    BASE_GUARD_GOTO(r, audit_client_open(set_audit_addr, &tls, 5000, &s->audit), fail);
    *ret_state = s;
    return BASE_OK_RESULT;
fail:
    vault_service_fini(s);
    return r;
}

void vault_service_fini(void *state)
{
    vs_service *s = state;
    if (!s)
        return;
    authz_remote_close(s->remote);
    audit_client_close(s->audit);
    vault_views_cache_close(s->views);
    vault_store_close(s->store);
    db_pool_destroy(s->pool);
    vault_keyprovider_free(s->master);
    acrypto_ed25519_free(s->cert_key);
    free(s->cert_vkey_pem);
    cache_thread_conn_release();
    free(s);
}

/* ---- Method table -------------------------------------------------------------------------------------- */

/* Users reach the vault through the gateway (health-plan partners, apps) and the guideline engine (reviews
 * read a referral's clinical data under TREATMENT with the clinician's token); operators through alma-cli;
 * tests and the load generator directly. Every method also checks the caller's token. */
static const char *const callers[] = {"gateway", "guideline", "alma-cli", "test-client", "bench", NULL};
/* Patient rights, retention, destruction and keys: people, through the gateway or alma-cli. */
static const char *const people[] = {"gateway", "alma-cli", "test-client", NULL};

#define UNARY(nm, req, resp, fn, peers)                                                                      \
    {                                                                                                        \
        .name = VAULT_METHOD(nm), .kind = RPC_KIND_UNARY, .request = &alma__vault__v1__##req##__descriptor,  \
        .response = &alma__vault__v1__##resp##__descriptor, .unary = fn, .allowed_peers = peers              \
    }

const rpc_method vault_methods[] = {
    UNARY("CreatePatient", create_patient_request, create_patient_response, vs_h_create_patient, callers),
    UNARY("UpdatePatient", update_patient_request, update_patient_response, vs_h_update_patient, callers),
    UNARY("GetPatient", get_patient_request, get_patient_response, vs_h_get_patient, callers),
    UNARY("FindPatients", find_patients_request, find_patients_response, vs_h_find_patients, callers),
    UNARY("PutItem", put_item_request, put_item_response, vs_h_put_item, callers),
    UNARY("GetItem", get_item_request, get_item_response, vs_h_get_item, callers),
    UNARY("ListItems", list_items_request, list_items_response, vs_h_list_items, callers),
    UNARY("GetRecordHistory", get_record_history_request, get_record_history_response, vs_h_get_history,
          callers),
    {.name = VAULT_METHOD("ExportPatient"),
     .kind = RPC_KIND_SERVER_STREAM,
     .request = &alma__vault__v1__export_patient_request__descriptor,
     .response = &alma__vault__v1__export_chunk__descriptor,
     .stream = vs_h_export_patient,
     .allowed_peers = people},
    UNARY("CreateAmendmentRequest", create_amendment_request_request, amendment_request,
          vs_h_create_amendment, people),
    UNARY("DecideAmendmentRequest", decide_amendment_request_request, amendment_request,
          vs_h_decide_amendment, people),
    UNARY("ListAmendmentRequests", list_amendment_requests_request, list_amendment_requests_response,
          vs_h_list_amendments, people),
    UNARY("SetRetention", set_retention_request, set_retention_response, vs_h_set_retention, people),
    UNARY("PlaceLegalHold", place_legal_hold_request, legal_hold, vs_h_place_hold, people),
    UNARY("ReleaseLegalHold", release_legal_hold_request, legal_hold, vs_h_release_hold, people),
    UNARY("DestroyPatient", destroy_patient_request, destruction_certificate, vs_h_destroy_patient, people),
    UNARY("GetDestructionCertificate", get_destruction_certificate_request, destruction_certificate,
          vs_h_get_certificate, people),
    UNARY("RotateTenantKey", rotate_tenant_key_request, tenant_key_status, vs_h_rotate_key, people),
    UNARY("GetTenantKeyStatus", get_tenant_key_status_request, tenant_key_status, vs_h_key_status, people),
};
const size_t vault_method_count = BASE_ARRAY_LEN(vault_methods);
