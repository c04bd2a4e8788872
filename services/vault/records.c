/* Vault: patients and clinical items (service_internal.h has the order every handler follows). */
#include "service_internal.h"

#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PERM_REGISTER     "patient.register"
#define PERM_SEARCH       "patient.search"
#define PERM_WRITE_DEMO   "phi.write.demographics"
#define PERM_WRITE_CLIN   "phi.write.clinical"
#define LIST_DEFAULT_PAGE 50
#define LIST_MAX_PAGE     100
#define AUDIT_RESOURCE_PT "Patient"
#define AUDIT_RESOURCE_IT "ClinicalItem"

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static rpc_code check_amendment_id(rpc_ctx *ctx, const char *id)
{
    if (!id || !id[0])
        return RPC_OK;
    if (strlen(id) != VAULT_ID_LEN || strncmp(id, "am_", 3) != 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "amendment_request_id: \"am_\" + 32 lowercase hex digits");
    for (size_t i = 3; i < VAULT_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                            "amendment_request_id: \"am_\" + 32 lowercase hex digits");
    return RPC_OK;
}

/* A version written for an amendment must name an open request for this record (lifecycle.c). */
static rpc_code check_amendment_open(rpc_ctx *ctx, const char *tenant_id, const char *record_id,
                                     const char *request_id)
{
    if (!request_id || !request_id[0])
        return RPC_OK;
    vault_amendment a;
    base_result r = vault_amendment_get(vs_of(ctx)->pool, tenant_id, request_id, &a);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    if (strcmp(a.record_id, record_id) != 0)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "the amendment request is for another record");
    if (a.status != ALMA__VAULT__V1__AMENDMENT_STATUS__AMENDMENT_STATUS_RECEIVED &&
        a.status != ALMA__VAULT__V1__AMENDMENT_STATUS__AMENDMENT_STATUS_EXTENDED)
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION, "the amendment request is already decided");
    return RPC_OK;
}

static char *version_text(rpc_ctx *ctx, uint32_t v)
{
    return rpc_ctx_printf(ctx, "%u", v);
}

/* Put the parts and blind values of `put` and fill version/time; the intent was audited by the caller. */
static rpc_code do_put(rpc_ctx *ctx, vault_put *put, const vs_event *intent, uint32_t *ret_version)
{
    int64_t created = 0;
    base_result r = vault_store_put(vs_of(ctx)->store, put, ret_version, &created);
    if (!base_is_ok(r))
        return vs_audit_failed(ctx, intent, r);
    return RPC_OK;
}

/* ---- patients ------------------------------------------------------------------------------------------ */

static rpc_code put_patient(rpc_ctx *ctx, const char *tenant_id, const char *patient_ref,
                            uint32_t expected_version, const Alma__Vault__V1__Patient *patient,
                            const char *amendment_id, const authz_claims *claims, uint32_t *ret_version)
{
    vault_parts parts;
    base_result r = vault_patient_pack(patient, &parts);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    vault_blind_buf *blind = calloc(1, sizeof *blind); /* 8 KiB of normalised identifiers: not on the stack */
    if (!blind) {
        vault_parts_free(&parts);
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    r = vault_blind_values(patient, blind);
    if (!base_is_ok(r)) {
        vault_blind_buf_wipe(blind);
        free(blind);
        vault_parts_free(&parts);
        return vs_fail(ctx, r);
    }
    unsigned mask = 0;
    vault_put put = {.tenant_id = tenant_id,
                     .record_id = patient_ref,
                     .patient_ref = patient_ref,
                     .kind = ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT,
                     .expected_version = expected_version,
                     .created_by = claims->sub,
                     .amendment_request_id = amendment_id && amendment_id[0] ? amendment_id : NULL,
                     .blind = blind->values,
                     .blind_count = blind->count};
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        put.parts[c] = parts.data[c];
        put.part_len[c] = parts.len[c];
        if (parts.data[c])
            mask |= VAULT_CATEGORY_BIT(c);
    }
    vs_event intent = {.tenant_id = tenant_id,
                       .claims = claims,
                       .action = expected_version ? ALMA__AUDIT__V1__ACTION__ACTION_UPDATE
                                                  : ALMA__AUDIT__V1__ACTION__ACTION_CREATE,
                       .purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT,
                       .patient_ref = patient_ref,
                       .resource_type = AUDIT_RESOURCE_PT,
                       .resource_id = patient_ref,
                       .details = (const char *const[]){"categories", vs_category_list(ctx, mask), "version",
                                                        version_text(ctx, expected_version + 1),
                                                        "amendment_request_id",
                                                        amendment_id ? amendment_id : "", NULL}};
    rpc_code code = vs_audit_intent(ctx, &intent);
    if (code == RPC_OK)
        code = do_put(ctx, &put, &intent, ret_version);
    vault_blind_buf_wipe(blind);
    free(blind);
    vault_parts_free(&parts);
    return code;
}

rpc_code vs_h_create_patient(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__CreatePatientRequest *req = reqp;
    Alma__Vault__V1__CreatePatientResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    if (!req->patient)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "patient: required");
    base_result r = vault_validate_patient(req->patient, now_s());
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_REGISTER, NULL, &claims)) != RPC_OK)
        return code;
    char ref[VAULT_ID_BUF];
    vault_random_id("pt_", ref);
    uint32_t version = 0;
    code = put_patient(ctx, req->tenant_id, ref, 0, req->patient, NULL, &claims, &version);
    if (code != RPC_OK)
        return code;
    resp->patient_ref = rpc_ctx_strdup(ctx, ref);
    resp->version = version;
    return resp->patient_ref ? RPC_OK : rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
}

rpc_code vs_h_update_patient(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__UpdatePatientRequest *req = reqp;
    Alma__Vault__V1__UpdatePatientResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code == RPC_OK)
        code = check_amendment_id(ctx, req->amendment_request_id);
    if (code != RPC_OK)
        return code;
    if (req->expected_version == 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "expected_version: required (the version the change is based on)");
    if (!req->patient)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "patient: required");
    base_result r = vault_validate_patient(req->patient, now_s());
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_WRITE_DEMO, req->patient_ref, &claims)) != RPC_OK)
        return code;
    if ((code = check_amendment_open(ctx, req->tenant_id, req->patient_ref, req->amendment_request_id)) !=
        RPC_OK)
        return code;
    return put_patient(ctx, req->tenant_id, req->patient_ref, req->expected_version, req->patient,
                       req->amendment_request_id, &claims, &resp->version);
}

/* RecordInfo of a version as the view shows it. */
static Alma__Vault__V1__RecordInfo *info_out(rpc_ctx *ctx, const vault_record *r, const vault_view *view,
                                             const char *pseudonym)
{
    Alma__Vault__V1__RecordInfo *info = rpc_ctx_alloc(ctx, sizeof *info);
    if (!info)
        return NULL;
    alma__vault__v1__record_info__init(info);
    bool pseudo = view->pseudonymous && pseudonym;
    bool is_patient = r->kind == ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT;
    info->record_id = rpc_ctx_strdup(ctx, pseudo && is_patient ? pseudonym : r->record_id);
    info->patient_ref = rpc_ctx_strdup(ctx, pseudo ? pseudonym : r->patient_ref);
    info->kind = (Alma__Vault__V1__RecordKind)r->kind;
    info->version = r->version;
    info->create_time = vs_timestamp(ctx, r->created_us);
    /* Under a pseudonymous view the author is withheld too: a clinician's id links back to a practice. */
    info->created_by = rpc_ctx_strdup(ctx, pseudo ? "" : r->created_by);
    info->amendment_request_id = rpc_ctx_strdup(ctx, r->amendment_request_id);
    unsigned withheld = r->categories & ~view->categories;
    size_t n = 0;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
        if (withheld & VAULT_CATEGORY_BIT(c))
            n++;
    if (n) {
        info->withheld = rpc_ctx_alloc(ctx, n * sizeof *info->withheld);
        if (!info->withheld)
            return NULL;
        for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
            if (withheld & VAULT_CATEGORY_BIT(c))
                info->withheld[info->n_withheld++] = (Alma__Vault__V1__Category)c;
    }
    if (!info->record_id || !info->patient_ref || !info->created_by || !info->amendment_request_id)
        return NULL;
    return info;
}

static Alma__Vault__V1__ViewInfo *view_out(rpc_ctx *ctx, const vault_view *view)
{
    Alma__Vault__V1__ViewInfo *v = rpc_ctx_alloc(ctx, sizeof *v);
    if (!v)
        return NULL;
    alma__vault__v1__view_info__init(v);
    v->view_id = rpc_ctx_strdup(ctx, view->view_id);
    v->pseudonymous = view->pseudonymous;
    v->categories = rpc_ctx_alloc(ctx, VAULT_CATEGORY_MAX * sizeof *v->categories);
    if (!v->view_id || !v->categories)
        return NULL;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
        if (view->categories & VAULT_CATEGORY_BIT(c))
            v->categories[v->n_categories++] = (Alma__Vault__V1__Category)c;
    return v;
}

static const char *purpose_basis_detail(const vault_view *view)
{
    return view->pseudonymous ? "pseudonymous" : "identified";
}

/* The patient under a view: unpack the view's parts; for a pseudonymous view the demographics were read only
 * to compute the age, and are dropped. */
static rpc_code patient_out(rpc_ctx *ctx, const vault_record *r, const vault_view *view,
                            Alma__Vault__V1__Patient **ret_patient, uint32_t *ret_age)
{
    Alma__Vault__V1__Patient *p = NULL;
    base_result res = vault_patient_unpack(r, rpc_ctx_pb_allocator(ctx), &p);
    if (!base_is_ok(res))
        return vs_fail(ctx, res);
    *ret_age = 0;
    if (view->pseudonymous) {
        if (p && p->demographics)
            if (!base_is_ok(vault_age_years(p->demographics->birth_date, now_s(), ret_age)))
                *ret_age = 0;
        if (p && !(view->categories & VAULT_CATEGORY_BIT(ALMA__VAULT__V1__CATEGORY__CATEGORY_DEMOGRAPHIC)))
            p->demographics = NULL;
    }
    *ret_patient = p;
    return RPC_OK;
}

static rpc_code pseudonym_of(rpc_ctx *ctx, const char *tenant_id, const char *patient_ref,
                             const vault_view *view, char out[VAULT_ID_BUF])
{
    out[0] = '\0';
    if (!view->pseudonymous)
        return RPC_OK;
    base_result r = vault_store_pseudonym(vs_of(ctx)->store, tenant_id, patient_ref, out);
    return base_is_ok(r) ? RPC_OK : vs_fail(ctx, r);
}

/* The READ event of one record version disclosed under a view (audit before disclosure: the caller answers
 * only when this returns RPC_OK). */
static rpc_code audit_record_read(rpc_ctx *ctx, const char *tenant_id, const authz_claims *claims,
                                  int purpose, const char *patient_ref, const char *resource_type,
                                  const char *resource_id, const vault_view *view, unsigned shown,
                                  unsigned withheld, uint32_t version)
{
    vs_event ev = {.tenant_id = tenant_id,
                   .claims = claims,
                   .action = ALMA__AUDIT__V1__ACTION__ACTION_READ,
                   .purpose = purpose,
                   .patient_ref = patient_ref,
                   .resource_type = resource_type,
                   .resource_id = resource_id,
                   .details = (const char *const[]){
                       "view", view->view_id, "categories", vs_category_list(ctx, shown), "withheld",
                       vs_category_list(ctx, withheld), "version", version_text(ctx, version), "identity",
                       purpose_basis_detail(view), NULL}};
    return vs_audit_disclosure(ctx, &ev);
}

rpc_code vs_h_get_patient(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__GetPatientRequest *req = reqp;
    Alma__Vault__V1__GetPatientResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code == RPC_OK)
        code = vs_check_purpose(ctx, req->purpose);
    if (code != RPC_OK)
        return code;
    authz_claims claims;
    vault_view view;
    if ((code = vs_require_view(ctx, req->tenant_id, req->patient_ref, req->purpose, &claims, &view)) !=
        RPC_OK)
        return code;
    char pseudonym[VAULT_ID_BUF];
    if ((code = pseudonym_of(ctx, req->tenant_id, req->patient_ref, &view, pseudonym)) != RPC_OK)
        return code;
    unsigned mask = view.categories;
    if (view.pseudonymous)
        mask |= VAULT_CATEGORY_BIT(ALMA__VAULT__V1__CATEGORY__CATEGORY_DEMOGRAPHIC); /* for the age only */
    vault_record rec = {0};
    base_result r =
        vault_store_get(vs_of(ctx)->store, req->tenant_id, req->patient_ref, req->version, mask, &rec);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    if (rec.kind != ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT) {
        vault_record_clear(&rec);
        return rpc_fail(ctx, RPC_NOT_FOUND, "no such patient");
    }
    code = patient_out(ctx, &rec, &view, &resp->patient, &resp->age_years);
    if (code == RPC_OK) {
        resp->info = info_out(ctx, &rec, &view, pseudonym);
        resp->view = view_out(ctx, &view);
        if (!resp->info || !resp->view)
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    unsigned shown = rec.categories & view.categories;
    unsigned withheld = rec.categories & ~view.categories;
    uint32_t version = rec.version;
    vault_record_clear(&rec);
    if (code != RPC_OK) {
        resp->patient = NULL;
        return code;
    }
    if ((code = audit_record_read(ctx, req->tenant_id, &claims, req->purpose, req->patient_ref,
                                  AUDIT_RESOURCE_PT, req->patient_ref, &view, shown, withheld, version)) !=
        RPC_OK) {
        resp->patient = NULL;
        resp->info = NULL;
        return code;
    }
    return RPC_OK;
}

rpc_code vs_h_find_patients(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__FindPatientsRequest *req = reqp;
    Alma__Vault__V1__FindPatientsResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code != RPC_OK)
        return code;
    vault_blind_buf *q = rpc_ctx_alloc(ctx, sizeof *q); /* wiped with the arena */
    if (!q)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    base_result r = vault_blind_for_query(req, q);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    if (q->count != 1)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "one of mrn, member_id, name_and_birth_date is required");
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_SEARCH, NULL, &claims)) != RPC_OK)
        return code;
    char(*refs)[VAULT_ID_BUF] = rpc_ctx_alloc(ctx, VAULT_FIND_MAX * VAULT_ID_BUF);
    size_t n = 0;
    if (!refs)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    int kind = q->values[0].kind;
    r = vault_store_find(vs_of(ctx)->store, req->tenant_id, kind, q->values[0].value, q->values[0].len, refs,
                         VAULT_FIND_MAX, &n);
    vault_blind_buf_wipe(q);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    static const char *const by_name[] = {"", "mrn", "member_id", "name_and_birth_date"};
    vs_event ev = {.tenant_id = req->tenant_id,
                   .claims = &claims,
                   .action = ALMA__AUDIT__V1__ACTION__ACTION_QUERY,
                   .purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_OPERATIONS,
                   .resource_type = AUDIT_RESOURCE_PT,
                   .details = (const char *const[]){"by", by_name[kind >= 1 && kind <= 3 ? kind : 0],
                                                    "matches", rpc_ctx_printf(ctx, "%zu", n), NULL}};
    if ((code = vs_audit_disclosure(ctx, &ev)) != RPC_OK)
        return code;
    resp->patient_refs = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *resp->patient_refs);
    if (!resp->patient_refs)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n; i++)
        resp->patient_refs[i] = refs[i];
    resp->n_patient_refs = n;
    return RPC_OK;
}

/* ---- items --------------------------------------------------------------------------------------------- */

rpc_code vs_h_put_item(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__PutItemRequest *req = reqp;
    Alma__Vault__V1__PutItemResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code == RPC_OK)
        code = check_amendment_id(ctx, req->amendment_request_id);
    if (code != RPC_OK)
        return code;
    bool create = !req->record_id || !req->record_id[0];
    if (!create) {
        if ((code = vs_check_record_id(ctx, "record_id", req->record_id)) != RPC_OK)
            return code;
        if (strncmp(req->record_id, "it_", 3) != 0)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "record_id: an item id (\"it_\" + 32 hex digits)");
        if (req->expected_version == 0)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "expected_version: required with record_id");
    } else if (req->expected_version != 0) {
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "expected_version: only with record_id");
    } else if (req->amendment_request_id && req->amendment_request_id[0]) {
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "amendment_request_id: only for a new version of a record");
    }
    if (!req->item)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "item: required");
    base_result r = vault_validate_item(req->item, now_s());
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    authz_claims claims;
    if ((code = vs_require(ctx, req->tenant_id, PERM_WRITE_CLIN, req->patient_ref, &claims)) != RPC_OK)
        return code;
    char id[VAULT_ID_BUF];
    if (create)
        vault_random_id("it_", id);
    else
        snprintf(id, sizeof id, "%s", req->record_id);
    if ((code = check_amendment_open(ctx, req->tenant_id, id, req->amendment_request_id)) != RPC_OK)
        return code;
    vault_parts parts;
    if (!base_is_ok(r = vault_item_pack(req->item, &parts)))
        return vs_fail(ctx, r);
    int category = vault_item_category(req->item);
    vault_put put = {.tenant_id = req->tenant_id,
                     .record_id = id,
                     .patient_ref = req->patient_ref,
                     .kind = vault_item_kind(req->item),
                     .expected_version = req->expected_version,
                     .created_by = claims.sub,
                     .amendment_request_id =
                         create || !req->amendment_request_id[0] ? NULL : req->amendment_request_id};
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        put.parts[c] = parts.data[c];
        put.part_len[c] = parts.len[c];
    }
    vs_event intent = {
        .tenant_id = req->tenant_id,
        .claims = &claims,
        .action = create ? ALMA__AUDIT__V1__ACTION__ACTION_CREATE : ALMA__AUDIT__V1__ACTION__ACTION_UPDATE,
        .purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT,
        .patient_ref = req->patient_ref,
        .resource_type = AUDIT_RESOURCE_IT,
        .resource_id = id,
        .details = (const char *const[]){"categories", vs_category_list(ctx, VAULT_CATEGORY_BIT(category)),
                                         "version", version_text(ctx, req->expected_version + 1),
                                         "amendment_request_id",
                                         req->amendment_request_id ? req->amendment_request_id : "", NULL}};
    code = vs_audit_intent(ctx, &intent);
    uint32_t version = 0;
    if (code == RPC_OK)
        code = do_put(ctx, &put, &intent, &version);
    vault_parts_free(&parts);
    if (code != RPC_OK)
        return code;
    resp->record_id = rpc_ctx_strdup(ctx, id);
    resp->version = version;
    return resp->record_id ? RPC_OK : rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* One item version under the view into out (the item absent when its category is withheld). */
static rpc_code item_out(rpc_ctx *ctx, const vault_record *r, const vault_view *view, const char *pseudonym,
                         Alma__Vault__V1__GetItemResponse *out)
{
    out->info = info_out(ctx, r, view, pseudonym);
    if (!out->info)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    if (r->categories & view->categories) {
        base_result res = vault_item_unpack(r, rpc_ctx_pb_allocator(ctx), &out->item);
        if (!base_is_ok(res))
            return vs_fail(ctx, res);
    }
    return RPC_OK;
}

/* The record's patient (no decryption), for authorisation before anything is read. NOT_FOUND covers
 * another tenant's record too. */
static rpc_code head_of(rpc_ctx *ctx, const char *tenant_id, const char *record_id, vault_record *head)
{
    base_result r = vault_store_head(vs_of(ctx)->store, tenant_id, record_id, 0, head);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    return RPC_OK;
}

rpc_code vs_h_get_item(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__GetItemRequest *req = reqp;
    Alma__Vault__V1__GetItemResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_record_id(ctx, "record_id", req->record_id);
    if (code == RPC_OK)
        code = vs_check_purpose(ctx, req->purpose);
    if (code != RPC_OK)
        return code;
    if (strncmp(req->record_id, "it_", 3) != 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "record_id: an item id (\"it_\" + 32 hex digits)");
    /* Authenticate before saying anything about the record (its existence included). */
    authz_claims claims;
    authz_decision d;
    if (!base_is_ok(authz_authenticate(vs_of(ctx)->az, rpc_ctx_authorization(ctx), &claims, &d)))
        return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
    vault_record head = {0};
    if ((code = head_of(ctx, req->tenant_id, req->record_id, &head)) != RPC_OK)
        return code;
    vault_view view;
    if ((code = vs_require_view(ctx, req->tenant_id, head.patient_ref, req->purpose, &claims, &view)) !=
        RPC_OK)
        return code;
    char pseudonym[VAULT_ID_BUF];
    if ((code = pseudonym_of(ctx, req->tenant_id, head.patient_ref, &view, pseudonym)) != RPC_OK)
        return code;
    vault_record rec = {0};
    base_result r = vault_store_get(vs_of(ctx)->store, req->tenant_id, req->record_id, req->version,
                                    view.categories, &rec);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    code = item_out(ctx, &rec, &view, pseudonym, resp);
    if (code == RPC_OK && !(resp->view = view_out(ctx, &view)))
        code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    unsigned shown = rec.categories & view.categories, withheld = rec.categories & ~view.categories;
    uint32_t version = rec.version;
    vault_record_clear(&rec);
    if (code != RPC_OK) {
        resp->item = NULL;
        return code;
    }
    if ((code = audit_record_read(ctx, req->tenant_id, &claims, req->purpose, head.patient_ref,
                                  AUDIT_RESOURCE_IT, req->record_id, &view, shown, withheld, version)) !=
        RPC_OK) {
        resp->item = NULL;
        resp->info = NULL;
        return code;
    }
    return RPC_OK;
}

rpc_code vs_h_list_items(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__ListItemsRequest *req = reqp;
    Alma__Vault__V1__ListItemsResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_patient_ref(ctx, "patient_ref", req->patient_ref);
    if (code == RPC_OK)
        code = vs_check_purpose(ctx, req->purpose);
    if (code != RPC_OK)
        return code;
    if (req->kind < 0 || req->kind > ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_DOCUMENT ||
        req->kind == ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "kind: UNSPECIFIED (every item kind) or an item kind");
    if (req->page_size < 0 || req->page_size > LIST_MAX_PAGE)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "page_size: 0..100");
    const char *after = req->page_token ? req->page_token : "";
    if (after[0] && (vs_check_record_id(ctx, "page_token", after) != RPC_OK || strncmp(after, "it_", 3) != 0))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "page_token: not a token this service issued");
    authz_claims claims;
    vault_view view;
    if ((code = vs_require_view(ctx, req->tenant_id, req->patient_ref, req->purpose, &claims, &view)) !=
        RPC_OK)
        return code;
    char pseudonym[VAULT_ID_BUF];
    if ((code = pseudonym_of(ctx, req->tenant_id, req->patient_ref, &view, pseudonym)) != RPC_OK)
        return code;
    size_t limit = req->page_size ? (size_t)req->page_size : LIST_DEFAULT_PAGE;
    vault_record *recs = NULL;
    size_t n = 0;
    bool more = false;
    base_result r = vault_store_list(vs_of(ctx)->store, req->tenant_id, req->patient_ref, req->kind, after,
                                     limit, view.categories, &recs, &n, &more);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    resp->items = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *resp->items);
    code = resp->items ? RPC_OK : rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    unsigned shown = 0, withheld = 0;
    for (size_t i = 0; i < n && code == RPC_OK; i++) {
        Alma__Vault__V1__GetItemResponse *it = rpc_ctx_alloc(ctx, sizeof *it);
        if (!it) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        alma__vault__v1__get_item_response__init(it);
        code = item_out(ctx, &recs[i], &view, pseudonym, it);
        resp->items[resp->n_items++] = it;
        shown |= recs[i].categories & view.categories;
        withheld |= recs[i].categories & ~view.categories;
    }
    if (code == RPC_OK && more && n)
        resp->next_page_token = rpc_ctx_strdup(ctx, recs[n - 1].record_id);
    vault_records_free(recs, n);
    if (code == RPC_OK && !(resp->view = view_out(ctx, &view)))
        code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    if (code != RPC_OK) {
        resp->n_items = 0;
        return code;
    }
    vs_event ev = {.tenant_id = req->tenant_id,
                   .claims = &claims,
                   .action = ALMA__AUDIT__V1__ACTION__ACTION_READ,
                   .purpose = req->purpose,
                   .patient_ref = req->patient_ref,
                   .resource_type = AUDIT_RESOURCE_IT,
                   .details = (const char *const[]){
                       "view", view.view_id, "items", rpc_ctx_printf(ctx, "%zu", n), "categories",
                       vs_category_list(ctx, shown), "withheld", vs_category_list(ctx, withheld), "identity",
                       purpose_basis_detail(&view), NULL}};
    if ((code = vs_audit_disclosure(ctx, &ev)) != RPC_OK) {
        resp->n_items = 0;
        return code;
    }
    return RPC_OK;
}

rpc_code vs_h_get_history(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Vault__V1__GetRecordHistoryRequest *req = reqp;
    Alma__Vault__V1__GetRecordHistoryResponse *resp = respp;
    rpc_code code = vs_check_tenant(ctx, req->tenant_id);
    if (code == RPC_OK)
        code = vs_check_record_id(ctx, "record_id", req->record_id);
    if (code == RPC_OK)
        code = vs_check_purpose(ctx, req->purpose);
    if (code != RPC_OK)
        return code;
    authz_claims claims;
    authz_decision d;
    if (!base_is_ok(authz_authenticate(vs_of(ctx)->az, rpc_ctx_authorization(ctx), &claims, &d)))
        return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
    vault_record head = {0};
    if ((code = head_of(ctx, req->tenant_id, req->record_id, &head)) != RPC_OK)
        return code;
    vault_view view;
    if ((code = vs_require_view(ctx, req->tenant_id, head.patient_ref, req->purpose, &claims, &view)) !=
        RPC_OK)
        return code;
    char pseudonym[VAULT_ID_BUF];
    if ((code = pseudonym_of(ctx, req->tenant_id, head.patient_ref, &view, pseudonym)) != RPC_OK)
        return code;
    bool is_patient = head.kind == ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT;
    unsigned mask = view.categories;
    if (is_patient && view.pseudonymous)
        mask |= VAULT_CATEGORY_BIT(ALMA__VAULT__V1__CATEGORY__CATEGORY_DEMOGRAPHIC);
    vault_record *recs = NULL;
    size_t n = 0;
    base_result r = vault_store_history(vs_of(ctx)->store, req->tenant_id, req->record_id, mask, &recs, &n);
    if (!base_is_ok(r))
        return vs_fail(ctx, r);
    resp->versions = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *resp->versions);
    code = resp->versions ? RPC_OK : rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n && code == RPC_OK; i++) {
        Alma__Vault__V1__RecordVersion *v = rpc_ctx_alloc(ctx, sizeof *v);
        if (!v) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        alma__vault__v1__record_version__init(v);
        v->info = info_out(ctx, &recs[i], &view, pseudonym);
        if (!v->info) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        if (is_patient) {
            uint32_t age = 0;
            code = patient_out(ctx, &recs[i], &view, &v->patient, &age);
        } else if (recs[i].categories & view.categories) {
            base_result res = vault_item_unpack(&recs[i], rpc_ctx_pb_allocator(ctx), &v->item);
            if (!base_is_ok(res))
                code = vs_fail(ctx, res);
        }
        resp->versions[resp->n_versions++] = v;
    }
    vault_records_free(recs, n);
    if (code == RPC_OK && !(resp->view = view_out(ctx, &view)))
        code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    if (code != RPC_OK) {
        resp->n_versions = 0;
        return code;
    }
    vs_event ev = {.tenant_id = req->tenant_id,
                   .claims = &claims,
                   .action = ALMA__AUDIT__V1__ACTION__ACTION_READ,
                   .purpose = req->purpose,
                   .patient_ref = head.patient_ref,
                   .resource_type = is_patient ? AUDIT_RESOURCE_PT : AUDIT_RESOURCE_IT,
                   .resource_id = req->record_id,
                   .details = (const char *const[]){"view", view.view_id, "versions",
                                                    rpc_ctx_printf(ctx, "%zu", n), "history", "true", NULL}};
    if ((code = vs_audit_disclosure(ctx, &ev)) != RPC_OK) {
        resp->n_versions = 0;
        return code;
    }
    return RPC_OK;
}
