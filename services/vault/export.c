/* Vault: §164.524 right of access — everything held about a patient as one FHIR R4 Bundle (fhir.c), and the
 * tenant key handlers. */
#include "fhir.h"
#include "service_internal.h"

#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PERM_PRIVACY     "privacy.review"
#define PERM_KEYS        "vault.keys.manage"
#define EXPORT_CHUNK     (64 * 1024)
#define EXPORT_MAX_ITEMS 20000
#define EXPORT_PAGE      100
#define ACCESS_ID_MAX    64

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

/* Everything held about the patient, decrypted: the latest patient record and every item's latest version
 * (items unpacked into the call's arena, which is wiped when the call ends). */
typedef struct export_data {
    vault_record patient;
    vault_record *items;
    size_t n_items;
} export_data;

static void export_data_clear(export_data *d)
{
    vault_record_clear(&d->patient);
    vault_records_free(d->items, d->n_items);
    d->items = NULL;
    d->n_items = 0;
}

static base_result export_read(vs_service *s, const char *tenant_id, const char *patient_ref, export_data *d)
{
    BASE_GUARD(vault_store_get(s->store, tenant_id, patient_ref, 0, VAULT_ALL_CATEGORIES, &d->patient));
    char after[VAULT_ID_BUF] = "";
    for (;;) {
        vault_record *page = NULL;
        size_t n = 0;
        bool more = false;
        BASE_GUARD(vault_store_list(s->store, tenant_id, patient_ref, 0, after, EXPORT_PAGE,
                                    VAULT_ALL_CATEGORIES, &page, &n, &more));
        if (d->n_items + n > EXPORT_MAX_ITEMS) {
            vault_records_free(page, n);
            return base_fail(BASE_ERR_LIMIT, "the patient has more than 20000 items: export in parts");
        }
        vault_record *grown = realloc(d->items, (d->n_items + n + 1) * sizeof *grown);
        if (!grown) {
            vault_records_free(page, n);
            return base_fail(BASE_ERR_NOMEM, "out of memory");
        }
        d->items = grown;
        memcpy(d->items + d->n_items, page, n * sizeof *page); /* moves the parts' ownership */
        d->n_items += n;
        if (n)
            snprintf(after, sizeof after, "%s", page[n - 1].record_id);
        free(page);
        if (!more)
            break;
    }
    return BASE_OK_RESULT;
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

    export_data d = {0};
    base_result r = export_read(s, req->tenant_id, req->patient_ref, &d);
    if (!base_is_ok(r)) {
        export_data_clear(&d);
        return vs_fail(ctx, r);
    }
    Alma__Vault__V1__Patient *patient = NULL;
    r = vault_patient_unpack(&d.patient, rpc_ctx_pb_allocator(ctx), &patient);
    vault_fhir_item *items = d.n_items ? rpc_ctx_alloc(ctx, d.n_items * sizeof *items) : NULL;
    if (base_is_ok(r) && d.n_items && !items)
        r = base_fail(BASE_ERR_NOMEM, "out of memory");
    unsigned categories = d.patient.categories;
    for (size_t i = 0; i < d.n_items && base_is_ok(r); i++) {
        Alma__Vault__V1__Item *item = NULL;
        r = vault_item_unpack(&d.items[i], rpc_ctx_pb_allocator(ctx), &item);
        items[i] = (vault_fhir_item){.record_id = rpc_ctx_strdup(ctx, d.items[i].record_id),
                                     .version = d.items[i].version,
                                     .updated_us = d.items[i].created_us,
                                     .item = item};
        categories |= d.items[i].categories;
    }
    char bundle_id[VAULT_ID_BUF];
    vault_random_id("ex_", bundle_id);
    char *json = NULL;
    size_t json_len = 0;
    uint32_t resources = 0;
    if (base_is_ok(r)) {
        vault_fhir_input in = {.tenant_id = req->tenant_id,
                               .patient_ref = req->patient_ref,
                               .patient_version = d.patient.version,
                               .patient_updated_us = d.patient.created_us,
                               .patient = patient,
                               .items = items,
                               .item_count = d.n_items,
                               .now_us = vs_now_us(),
                               .bundle_id = bundle_id};
        r = vault_fhir_bundle(&in, &json, &json_len, &resources);
    }
    size_t n_items = d.n_items;
    export_data_clear(&d);
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
