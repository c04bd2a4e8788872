/* Vault: patient rights (§164.526 amendments), retention and legal holds, crypto-shredding with signed
 * destruction certificates (lifecycle.c does the work; these handlers authorise, validate and audit). */
#include "service_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PERM_PRIVACY   "privacy.review"
#define PERM_RETENTION "vault.retention.manage"
#define PERM_DESTROY   "vault.records.destroy"

static bool id_ok(const char *s, const char *prefix)
{
    if (!s || strlen(s) != VAULT_ID_LEN || strncmp(s, prefix, 3) != 0)
        return false;
    for (size_t i = 3; i < VAULT_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool reason_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 1 && n <= VAULT_REASON_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* ---- amendments ---------------------------------------------------------------------------------------- */

static rpc_code amendment_out(rpc_ctx *ctx, const vault_amendment *a, Alma__Vault__V1__AmendmentRequest *o)
{
    o->request_id = rpc_ctx_strdup(ctx, a->request_id);
    o->tenant_id = rpc_ctx_strdup(ctx, a->tenant_id);
    o->patient_ref = rpc_ctx_strdup(ctx, a->patient_ref);
    o->record_id = rpc_ctx_strdup(ctx, a->record_id);
    o->status = (Alma__Vault__V1__AmendmentStatus)a->status;
    o->received_time = vs_timestamp(ctx, a->received_us);
    o->due_time = vs_timestamp(ctx, a->due_us);
    o->decided_time = vs_timestamp(ctx, a->decided_us);
    o->amended_version = a->amended_version;
    o->denial_basis = (Alma__Vault__V1__DenialBasis)a->denial_basis;
    o->decided_by = rpc_ctx_strdup(ctx, a->decided_by);
    if (!o->request_id || !o->tenant_id || !o->patient_ref || !o->record_id || !o->decided_by)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return RPC_OK;
}

static const char *status_name(int s)
{
    switch (s) {
    case VAULT_AMENDMENT_RECEIVED:
        return "received";
    case VAULT_AMENDMENT_EXTENDED:
        return "extended";
    case VAULT_AMENDMENT_ACCEPTED:
        return "accepted";
    case VAULT_AMENDMENT_DENIED:
        return "denied";
    default:
        return "unspecified";
    }
}

rpc_code vs_h_create_amendment(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__CreateAmendmentRequestRequest *req = reqp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code == RPC_OK)
        code = vs_check_record_id(ctx, "record_id", req->record_id);
    if (code != RPC_OK)
        return code;
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_PRIVACY, NULL, &claims)) != RPC_OK)
        return code;
    vs_event intent = {.tenant_id = req->tenant_id,
                       .claims = &claims,
                       .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                       .purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PATIENT_REQUEST,
                       .patient_ref = req->patient_ref,
                       .resource_type = "AmendmentRequest",
                       .resource_id = req->record_id,
                       .details = (const char *const[]){"change", "amendment request received", "record",
                                                        req->record_id, NULL}};
    if ((code = vs_audit_intent(ctx, &intent)) != RPC_OK)
        return code;
    vault_amendment a;
    base_result r = vault_amendment_create(vs_of(ctx)->store, vs_of(ctx)->pool, req->tenant_id,
                                           req->patient_ref, req->record_id, claims.sub, &a);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, &intent, r);
    return amendment_out(ctx, &a, respp);
}

rpc_code vs_h_decide_amendment(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__DecideAmendmentRequestRequest *req = reqp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (!id_ok(req->request_id, "am_"))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "request_id: \"am_\" + 32 lowercase hex digits");
    int status = (int)req->status;
    if (status != VAULT_AMENDMENT_EXTENDED && status != VAULT_AMENDMENT_ACCEPTED &&
        status != VAULT_AMENDMENT_DENIED)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "status: EXTENDED, ACCEPTED or DENIED");
    int basis = (int)req->denial_basis;
    if ((status == VAULT_AMENDMENT_DENIED) != (basis != 0) || basis < 0 ||
        basis > VAULT_DENIAL_ACCURATE_AND_COMPLETE)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "denial_basis: required with DENIED, and only then");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_PRIVACY, NULL, &claims)) != RPC_OK)
        return code;
    vault_amendment before;
    base_result r = vault_amendment_get(vs_of(ctx)->pool, req->tenant_id, req->request_id, &before);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    vs_event intent = {.tenant_id = req->tenant_id,
                       .claims = &claims,
                       .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                       .purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PATIENT_REQUEST,
                       .patient_ref = before.patient_ref,
                       .resource_type = "AmendmentRequest",
                       .resource_id = req->request_id,
                       .details = (const char *const[]){"change", "amendment request decided", "old_status",
                                                        status_name(before.status), "new_status",
                                                        status_name(status), NULL}};
    if ((code = vs_audit_intent(ctx, &intent)) != RPC_OK)
        return code;
    vault_amendment a;
    r = vault_amendment_decide(vs_of(ctx)->pool, req->tenant_id, req->request_id, status, basis, claims.sub,
                               &a);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, &intent, r);
    return amendment_out(ctx, &a, respp);
}

rpc_code vs_h_list_amendments(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__ListAmendmentRequestsRequest *req = reqp;
    Alma__Vault__V1__ListAmendmentRequestsResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (req->patient_ref && req->patient_ref[0] &&
        (code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref)) != RPC_OK)
        return code;
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_PRIVACY, NULL, &claims)) != RPC_OK)
        return code;
    vault_amendment *list = NULL;
    size_t n = 0;
    base_result r = vault_amendments_list(vs_of(ctx)->pool, req->tenant_id, req->patient_ref, &list, &n);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    resp->requests = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *resp->requests);
    code = resp->requests ? RPC_OK : rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n && code == RPC_OK; i++) {
        Alma__Vault__V1__AmendmentRequest *o = rpc_ctx_alloc(ctx, sizeof *o);
        if (!o) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        alma__vault__v1__amendment_request__init(o);
        code = amendment_out(ctx, &list[i], o);
        resp->requests[resp->n_requests++] = o;
    }
    free(list);
    return code;
}

/* ---- retention and legal holds ------------------------------------------------------------------------- */

rpc_code vs_h_set_retention(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__SetRetentionRequest *req = reqp;
    Alma__Vault__V1__SetRetentionResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (req->category < 1 || req->category > VAULT_CATEGORY_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "category: required (not UNSPECIFIED)");
    if (req->years > VAULT_RETENTION_YEARS_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "years: 0..100");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_RETENTION, NULL, &claims)) != RPC_OK)
        return code;
    vault_retention before;
    base_result r = vault_retention_get(vs_of(ctx)->pool, req->tenant_id, req->category, &before);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    vs_event intent = {.tenant_id = req->tenant_id,
                       .claims = &claims,
                       .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                       .resource_type = "RetentionSchedule",
                       .resource_id = vault_category_name(req->category),
                       .details = (const char *const[]){"change", "retention set", "old_years",
                                                        rpc_ctx_printf(ctx, "%u", before.years), "new_years",
                                                        rpc_ctx_printf(ctx, "%u", req->years), NULL}};
    if ((code = vs_audit_intent(ctx, &intent)) != RPC_OK)
        return code;
    vault_retention after;
    r = vault_retention_set(vs_of(ctx)->pool, req->tenant_id, req->category, req->years, claims.sub, &after);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, &intent, r);
    resp->category = (Alma__Vault__V1__Category)after.category;
    resp->years = after.years;
    return RPC_OK;
}

static rpc_code hold_out(rpc_ctx *ctx, const vault_legal_hold *h, Alma__Vault__V1__LegalHold *o)
{
    o->hold_id = rpc_ctx_strdup(ctx, h->hold_id);
    o->tenant_id = rpc_ctx_strdup(ctx, h->tenant_id);
    o->patient_ref = rpc_ctx_strdup(ctx, h->patient_ref);
    o->reason_code = rpc_ctx_strdup(ctx, h->reason_code);
    o->placed_time = vs_timestamp(ctx, h->placed_us);
    o->released_time = vs_timestamp(ctx, h->released_us);
    if (!o->hold_id || !o->tenant_id || !o->patient_ref || !o->reason_code)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return RPC_OK;
}

rpc_code vs_h_place_hold(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__PlaceLegalHoldRequest *req = reqp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code != RPC_OK)
        return code;
    if (!reason_ok(req->reason_code))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "reason_code: 1..64 of [a-z0-9_]");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_RETENTION, NULL, &claims)) != RPC_OK)
        return code;
    vs_event intent = {.tenant_id = req->tenant_id,
                       .claims = &claims,
                       .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                       .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                       .patient_ref = req->patient_ref,
                       .resource_type = "LegalHold",
                       .details = (const char *const[]){"change", "legal hold placed", "reason_code",
                                                        req->reason_code, NULL}};
    if ((code = vs_audit_intent(ctx, &intent)) != RPC_OK)
        return code;
    vault_legal_hold h;
    base_result r = vault_hold_place(vs_of(ctx)->store, vs_of(ctx)->pool, req->tenant_id, req->patient_ref,
                                     req->reason_code, claims.sub, &h);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, &intent, r);
    return hold_out(ctx, &h, respp);
}

rpc_code vs_h_release_hold(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__ReleaseLegalHoldRequest *req = reqp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (!id_ok(req->hold_id, "lh_"))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "hold_id: \"lh_\" + 32 lowercase hex digits");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_RETENTION, NULL, &claims)) != RPC_OK)
        return code;
    vs_event intent = {.tenant_id = req->tenant_id,
                       .claims = &claims,
                       .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                       .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                       .resource_type = "LegalHold",
                       .resource_id = req->hold_id,
                       .details = (const char *const[]){"change", "legal hold released", NULL}};
    if ((code = vs_audit_intent(ctx, &intent)) != RPC_OK)
        return code;
    vault_legal_hold h;
    base_result r = vault_hold_release(vs_of(ctx)->pool, req->tenant_id, req->hold_id, claims.sub, &h);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, &intent, r);
    return hold_out(ctx, &h, respp);
}

/* ---- destruction --------------------------------------------------------------------------------------- */

static rpc_code certificate_out(rpc_ctx *ctx, const vault_certificate *c,
                                Alma__Vault__V1__DestructionCertificate *o)
{
    o->certificate_id = rpc_ctx_strdup(ctx, c->certificate_id);
    o->tenant_id = rpc_ctx_strdup(ctx, c->tenant_id);
    o->patient_ref = rpc_ctx_strdup(ctx, c->patient_ref);
    o->destroyed_time = vs_timestamp(ctx, c->destroyed_us);
    o->records = c->records;
    o->versions = c->versions;
    o->statement = rpc_ctx_strdup(ctx, c->statement);
    o->verifier_key = rpc_ctx_strdup(ctx, c->verifier_key);
    uint8_t *sig = rpc_ctx_alloc(ctx, sizeof c->signature);
    if (!o->certificate_id || !o->tenant_id || !o->patient_ref || !o->statement || !o->verifier_key || !sig)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(sig, c->signature, sizeof c->signature);
    o->signature.data = sig;
    o->signature.len = sizeof c->signature;
    return RPC_OK;
}

rpc_code vs_h_destroy_patient(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__DestroyPatientRequest *req = reqp;
    vs_service *s = vs_of(ctx);
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code != RPC_OK)
        return code;
    if (!reason_ok(req->reason_code))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "reason_code: 1..64 of [a-z0-9_]");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_DESTROY, NULL, &claims)) != RPC_OK)
        return code;
    vs_event intent = {.tenant_id = req->tenant_id,
                       .claims = &claims,
                       .action = ALMA__AUDIT__V1__ACTION__ACTION_DELETE,
                       .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH,
                       .patient_ref = req->patient_ref,
                       .resource_type = "Patient",
                       .resource_id = req->patient_ref,
                       .details = (const char *const[]){"change", "crypto-shredding", "reason_code",
                                                        req->reason_code, NULL}};
    if ((code = vs_audit_intent(ctx, &intent)) != RPC_OK)
        return code;
    vault_certificate c = {0};
    base_result r = vault_lifecycle_destroy_patient(s->store, s->pool, s->cert_key, req->tenant_id,
                                                    req->patient_ref, req->reason_code, claims.sub, &c);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, &intent, r);
    code = certificate_out(ctx, &c, respp);
    vault_certificate_clear(&c);
    return code;
}

rpc_code vs_h_get_certificate(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__GetDestructionCertificateRequest *req = reqp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (!id_ok(req->certificate_id, "dc_"))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "certificate_id: \"dc_\" + 32 lowercase hex digits");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_DESTROY, NULL, &claims)) != RPC_OK)
        return code;
    vault_certificate c = {0};
    base_result r = vault_certificate_get(vs_of(ctx)->pool, req->tenant_id, req->certificate_id, &c);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    code = certificate_out(ctx, &c, respp);
    vault_certificate_clear(&c);
    return code;
}
