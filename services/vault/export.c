/* Vault: §164.524 right of access — everything held about a patient as one FHIR R4 Bundle (fhir.c), and the
 * tenant key handlers. */
#include "patient_export.h"
#include "service_internal.h"

#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PERM_PRIVACY  "privacy.review"
#define PERM_KEYS     "vault.keys.manage"
#define EXPORT_CHUNK  (64 * 1024)
#define ACCESS_ID_MAX 64

static bool access_id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > ACCESS_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

rpc_code vs_h_export_patient(rpc_ctx *ctx, const void *reqp, rpc_stream *stream)
{
    const Alma__Vault__V1__ExportPatientRequest *req = reqp;
    vs_service *s = vs_of(ctx);
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code != RPC_OK)
        return code;
    if (!access_id_ok(req->access_request_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "access_request_id: required, 1..64 of [A-Za-z0-9_-]");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_PRIVACY, NULL, &claims)) != RPC_OK)
        return code;

    char bundle_id[VAULT_ID_BUF];
    vault_random_id("ex_", bundle_id);
    char *json = NULL;
    size_t json_len = 0, n_items = 0;
    uint32_t resources = 0;
    unsigned categories = 0;
    base_result r = vault_patient_bundle(s->store, req->tenant_id, req->patient_ref, vs_now_us(), bundle_id,
                                         &json, &json_len, &resources, &categories, &n_items);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);

    uint8_t digest[ACRYPTO_SHA256_LEN];
    char digest_hex[2 * ACRYPTO_SHA256_LEN + 1];
    size_t hex_len = 0;
    r = acrypto_sha256(json, json_len, digest);
    if (base_is_ok(r))
        r = acrypto_hex_encode(digest, sizeof digest, digest_hex, sizeof digest_hex, &hex_len);
    if (!base_is_ok(r)) {
        acrypto_wipe(json, json_len);
        free(json);
        return vs_fail(ctx, r);
    }
    /* Audit before disclosure: a disclosure to the individual (§164.528 excludes it from the accounting,
     * the log still has it). */
    vs_event ev = {.tenant_id = req->tenant_id,
                   .claims = &claims,
                   .action = ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE,
                   .purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PATIENT_REQUEST,
                   .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                   .patient_ref = req->patient_ref,
                   .resource_type = "Bundle",
                   .resource_id = bundle_id,
                   .recipient_name = "the individual (right of access, 45 CFR 164.524)",
                   .basis = ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_TO_INDIVIDUAL,
                   .phi_description = vs_category_list(ctx, categories),
                   .details = (const char *const[]){"access_request_id", req->access_request_id, "resources",
                                                    rpc_ctx_printf(ctx, "%u", resources), "items",
                                                    rpc_ctx_printf(ctx, "%zu", n_items), "sha256", digest_hex,
                                                    NULL}};
    if ((code = vs_audit_disclosure(ctx, &ev)) != RPC_OK) {
        acrypto_wipe(json, json_len);
        free(json);
        return code;
    }
    for (size_t off = 0;;) {
        size_t n = json_len - off < EXPORT_CHUNK ? json_len - off : EXPORT_CHUNK;
        Alma__Vault__V1__ExportChunk chunk = ALMA__VAULT__V1__EXPORT_CHUNK__INIT;
        chunk.data.data = (uint8_t *)json + off;
        chunk.data.len = n;
        off += n;
        chunk.last = off == json_len;
        if (chunk.last) {
            chunk.sha256.data = digest;
            chunk.sha256.len = sizeof digest;
            chunk.resource_count = resources;
        }
        r = rpc_stream_send(stream, &chunk.base);
        if (!base_is_ok(r) || chunk.last)
            break;
    }
    acrypto_wipe(json, json_len);
    free(json);
    if (!base_is_ok(r))
        return rpc_fail(ctx, RPC_UNAVAILABLE, "the export stream ended early");
    return RPC_OK;
}

/* ---- tenant keys --------------------------------------------------------------------------------------- */

static rpc_code key_status_out(rpc_ctx *ctx, const char *tenant_id, Alma__Vault__V1__TenantKeyStatus *out)
{
    vault_key_status st;
    base_result r = vault_store_key_status(vs_of(ctx)->store, tenant_id, &st);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    out->tenant_id = rpc_ctx_strdup(ctx, tenant_id);
    out->current_version = st.current_version;
    out->min_decrypt_version = st.min_decrypt_version;
    out->wrapped = rpc_ctx_alloc(ctx, (st.count ? st.count : 1) * sizeof *out->wrapped);
    if (!out->tenant_id || !out->wrapped)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < st.count; i++) {
        Alma__Vault__V1__KeyVersionCount *k = rpc_ctx_alloc(ctx, sizeof *k);
        if (!k)
            return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
        alma__vault__v1__key_version_count__init(k);
        k->version = st.wrapped[i].version;
        k->data_keys = st.wrapped[i].data_keys;
        out->wrapped[out->n_wrapped++] = k;
    }
    return RPC_OK;
}

rpc_code vs_h_rotate_key(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__RotateTenantKeyRequest *req = reqp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_KEYS, NULL, &claims)) != RPC_OK)
        return code;
    vs_event intent = {.tenant_id = req->tenant_id,
                       .claims = &claims,
                       .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                       .severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                       .resource_type = "TenantKey",
                       .resource_id = req->tenant_id,
                       .details = (const char *const[]){"change", "rotate tenant key", NULL}};
    if ((code = vs_audit_intent(ctx, &intent)) != RPC_OK)
        return code;
    base_result r = vault_store_tenant_ensure(vs_of(ctx)->store, req->tenant_id);
    uint32_t version = 0;
    if (base_is_ok(r))
        r = vault_store_rotate(vs_of(ctx)->store, req->tenant_id, &version);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, &intent, r);
    return key_status_out(ctx, req->tenant_id, respp);
}

rpc_code vs_h_key_status(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__GetTenantKeyStatusRequest *req = reqp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_KEYS, NULL, &claims)) != RPC_OK)
        return code;
    return key_status_out(ctx, req->tenant_id, respp);
}
