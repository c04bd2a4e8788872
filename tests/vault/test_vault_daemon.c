/* The real alma-vault end to end over mTLS, inside the suite (tests/support/testsuite.h: a real alma-audit
 * and alma-identity against the harness PostgreSQL and Redis). What the "done when" names, each
 * refused with nothing leaked: tampered ciphertext, swapped rows, wrong tenant, wrong purpose, missing
 * relationship, audit down; and the views, patient rights, retention, destruction and key rotation paths.
 * All patient data here is synthetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/v1/audit.pb-c.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "testdb.h"
#include "testenv.h"
#include "testproc.h"
#include "testrpc.h"
#include "testsuite.h"
#include "vaultd.h"
#include "vault/v1/vault.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r_ = (expr);                                                                        \
        if (!base_is_ok(must_r_))                                                                            \
            fail_msg("%s: %s", #expr, base_error_message());                                                 \
    } while (0)

#define VLT(name)  "/alma.vault.v1.Vault/" name
#define V(x)       alma__vault__v1__##x
#define VT(x)      Alma__Vault__V1__##x /* types; V(x): descriptors */
#define FAMILY     "Synthetica"
#define GIVEN      "Testa"
#define BIRTH      "1961-04-17"
#define MRN        "MRN-000417"
#define MEMBER     "ZZ99887766"
#define PHONE      "+15555550117"
#define NOTE_TEXT  "Synthetic note: reports epigastric discomfort after meals for six weeks."
#define PURPOSE(x) ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_##x
#define CAT(x)     ALMA__VAULT__V1__CATEGORY__CATEGORY_##x
#define A_READ     ALMA__AUDIT__V1__ACTION__ACTION_READ
#define A_CREATE   ALMA__AUDIT__V1__ACTION__ACTION_CREATE
#define A_DENIED   ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED
#define A_DISCLOSE ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE

static testsuite g_ts;
static vaultd g_v; /* the vault under test; g_v.db: superuser on its schema */
static rpc_channel *g_ch;
/* Users of the tenant and their bearer tokens. */
static char g_clin[64], g_sched[64], g_bill[64], g_plan[64], g_priv[64], g_other_clin[64];
static char *g_clin_tok, *g_sched_tok, *g_bill_tok, *g_plan_tok, *g_priv_tok, *g_sec_tok, *g_other_tok;

/* ---- set-up ------------------------------------------------------------------------------------------ */

static void open_channel(void)
{
    rpc_client_tls tls = testrpc_client_tls("test-client");
    MUST(rpc_channel_open(g_v.d.api_addr, &tls, &g_ch));
}

static char *token(const char *principal, const char *role)
{
    char *b = malloc(TESTSUITE_BEARER_MAX);
    assert_non_null(b);
    testsuite_token(&g_ts, NULL, principal, (const char *const[]){role, NULL}, b);
    return b;
}

static int group_setup(void **state)
{
    (void)state;
    testsuite_group_setup(&g_ts, "vaultd");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testsuite_group_teardown(&g_ts);
    return 0;
}

static int test_setup(void **state)
{
    if (testproc_setup(state) != 0)
        return -1;
    testsuite_start(&g_ts);
    vaultd_start(&g_v, &g_ts, "vaultd");
    open_channel();
    testsuite_user(&g_ts, "dr.synth", "pcp_clinician", g_clin);
    testsuite_user(&g_ts, "dr.other", "pcp_clinician", g_other_clin);
    testsuite_user(&g_ts, "front.desk", "scheduler", g_sched);
    testsuite_user(&g_ts, "billing.one", "billing", g_bill);
    testsuite_user(&g_ts, "plan.reviewer", "plan_reviewer", g_plan);
    testsuite_user(&g_ts, "privacy.one", "privacy_officer", g_priv);
    g_clin_tok = token(g_clin, "pcp_clinician");
    g_other_tok = token(g_other_clin, "pcp_clinician");
    g_sched_tok = token(g_sched, "scheduler");
    g_bill_tok = token(g_bill, "billing");
    g_plan_tok = token(g_plan, "plan_reviewer");
    g_priv_tok = token(g_priv, "privacy_officer");
    g_sec_tok = token(g_ts.admin_id, "security_admin");
    return 0;
}

static int test_teardown(void **state)
{
    rpc_channel_close(g_ch);
    g_ch = NULL;
    bool ok = vaultd_stop(&g_v, &g_ts);
    ok = testsuite_stop(&g_ts) && ok;
    free(g_clin_tok);
    free(g_other_tok);
    free(g_sched_tok);
    free(g_bill_tok);
    free(g_plan_tok);
    free(g_priv_tok);
    free(g_sec_tok);
    int rc = testproc_teardown(state);
    return ok ? rc : -1;
}

/* ---- calls --------------------------------------------------------------------------------------------- */

static rpc_code vcall(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                      const char *bearer, ProtobufCMessage **ret, rpc_status *st)
{
    rpc_call_opts o = {.timeout_ms = 20000, .authorization = bearer};
    rpc_status local;
    ProtobufCMessage *resp = NULL;
    rpc_code code = rpc_call_unary(g_ch, method, req, desc, &o, &resp, st ? st : &local);
    if (ret)
        *ret = resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

static void expect(rpc_code got, rpc_code want, const rpc_status *st, const char *what)
{
    if (got != want)
        fail_msg("%s: got %s (%s), want %s", what, rpc_code_name(got), st ? st->message : "",
                 rpc_code_name(want));
}

/* The synthetic patient: every category but sensitive clinical. */
typedef struct patient_msg {
    Alma__Vault__V1__Patient p;
    Alma__Vault__V1__Demographics d;
    Alma__Vault__V1__Contact c;
    Alma__Vault__V1__Address a;
    Alma__Vault__V1__Identifiers i;
    Alma__Vault__V1__Coverage cov;
    Alma__Vault__V1__Coverage *covs[1];
    char *given[1];
    char *lines[1];
} patient_msg;

static void patient_init(patient_msg *m)
{
    memset(m, 0, sizeof *m);
    alma__vault__v1__patient__init(&m->p);
    alma__vault__v1__demographics__init(&m->d);
    alma__vault__v1__contact__init(&m->c);
    alma__vault__v1__address__init(&m->a);
    alma__vault__v1__identifiers__init(&m->i);
    alma__vault__v1__coverage__init(&m->cov);
    m->d.family_name = FAMILY;
    m->given[0] = GIVEN;
    m->d.given_names = m->given;
    m->d.n_given_names = 1;
    m->d.birth_date = BIRTH;
    m->d.sex = ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_FEMALE;
    m->lines[0] = "1 Example Way";
    m->a.lines = m->lines;
    m->a.n_lines = 1;
    m->a.city = "Springfield";
    m->a.state = "IL";
    m->a.postal_code = "62701";
    m->a.country = "US";
    m->c.address = &m->a;
    m->c.phone = PHONE;
    m->c.email = "testa@example.org";
    m->i.mrn = MRN;
    m->cov.payer_id = "payer-test";
    m->cov.plan_name = "Test Plan Gold";
    m->cov.member_id = MEMBER;
    m->cov.group_number = "GRP-1";
    m->cov.start_date = "2024-01-01";
    m->covs[0] = &m->cov;
    m->p.demographics = &m->d;
    m->p.contact = &m->c;
    m->p.identifiers = &m->i;
    m->p.coverage = m->covs;
    m->p.n_coverage = 1;
}

static rpc_code create_patient(const char *bearer, const char *tenant, patient_msg *m, char ref[64],
                               rpc_status *st)
{
    VT(CreatePatientRequest) req = ALMA__VAULT__V1__CREATE_PATIENT_REQUEST__INIT;
    req.tenant_id = (char *)(tenant ? tenant : g_ts.tenant);
    req.patient = &m->p;
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        vcall(VLT("CreatePatient"), &req.base, &V(create_patient_response__descriptor), bearer, &resp, st);
    if (code == RPC_OK)
        snprintf(ref, 64, "%s", ((VT(CreatePatientResponse) *)resp)->patient_ref);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

/* A patient made by the clinician, who then has a treating relationship with them. */
static void make_patient(char ref[64])
{
    patient_msg m;
    patient_init(&m);
    rpc_status st;
    expect(create_patient(g_clin_tok, NULL, &m, ref, &st), RPC_OK, &st, "CreatePatient");
    assert_int_equal(strlen(ref), 35);
    testsuite_relationship(&g_ts, g_clin, ref, NULL);
}

static rpc_code get_patient(const char *bearer, const char *tenant, const char *ref, int purpose,
                            VT(GetPatientResponse) * *ret, rpc_status *st)
{
    VT(GetPatientRequest) req = ALMA__VAULT__V1__GET_PATIENT_REQUEST__INIT;
    req.tenant_id = (char *)(tenant ? tenant : g_ts.tenant);
    req.patient_ref = (char *)ref;
    req.purpose = purpose;
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        vcall(VLT("GetPatient"), &req.base, &V(get_patient_response__descriptor), bearer, &resp, st);
    *ret = (VT(GetPatientResponse) *)resp;
    return code;
}

/* An item of the clinician's patient. */
static rpc_code put_problem(const char *bearer, const char *ref, const char *icd10, bool sensitive,
                            char id[64], rpc_status *st)
{
    VT(Code) code_msg = ALMA__VAULT__V1__CODE__INIT;
    code_msg.system = "http://hl7.org/fhir/sid/icd-10-cm";
    code_msg.code = (char *)icd10;
    code_msg.display = "Synthetic problem";
    VT(Problem) prob = ALMA__VAULT__V1__PROBLEM__INIT;
    prob.code = &code_msg;
    prob.onset_date = "2023-05-02";
    prob.status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE;
    VT(Item) item = ALMA__VAULT__V1__ITEM__INIT;
    item.sensitive = sensitive;
    item.body_case = ALMA__VAULT__V1__ITEM__BODY_PROBLEM;
    item.problem = &prob;
    VT(PutItemRequest) req = ALMA__VAULT__V1__PUT_ITEM_REQUEST__INIT;
    req.tenant_id = g_ts.tenant;
    req.patient_ref = (char *)ref;
    req.item = &item;
    ProtobufCMessage *resp = NULL;
    rpc_code c = vcall(VLT("PutItem"), &req.base, &V(put_item_response__descriptor), bearer, &resp, st);
    if (c == RPC_OK)
        snprintf(id, 64, "%s", ((VT(PutItemResponse) *)resp)->record_id);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

static rpc_code put_note(const char *bearer, const char *ref, char id[64], rpc_status *st)
{
    VT(Note) note = ALMA__VAULT__V1__NOTE__INIT;
    note.title = "Visit";
    note.text = NOTE_TEXT;
    note.date = "2024-02-03";
    VT(Item) item = ALMA__VAULT__V1__ITEM__INIT;
    item.body_case = ALMA__VAULT__V1__ITEM__BODY_NOTE;
    item.note = &note;
    VT(PutItemRequest) req = ALMA__VAULT__V1__PUT_ITEM_REQUEST__INIT;
    req.tenant_id = g_ts.tenant;
    req.patient_ref = (char *)ref;
    req.item = &item;
    ProtobufCMessage *resp = NULL;
    rpc_code c = vcall(VLT("PutItem"), &req.base, &V(put_item_response__descriptor), bearer, &resp, st);
    if (c == RPC_OK)
        snprintf(id, 64, "%s", ((VT(PutItemResponse) *)resp)->record_id);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

static rpc_code get_item(const char *bearer, const char *id, int purpose, VT(GetItemResponse) * *ret,
                         rpc_status *st)
{
    VT(GetItemRequest) req = ALMA__VAULT__V1__GET_ITEM_REQUEST__INIT;
    req.tenant_id = g_ts.tenant;
    req.record_id = (char *)id;
    req.purpose = purpose;
    ProtobufCMessage *resp = NULL;
    rpc_code c = vcall(VLT("GetItem"), &req.base, &V(get_item_response__descriptor), bearer, &resp, st);
    *ret = (VT(GetItemResponse) *)resp;
    return c;
}

static bool withheld_has(const VT(RecordInfo) * info, int cat)
{
    for (size_t i = 0; i < info->n_withheld; i++)
        if ((int)info->withheld[i] == cat)
            return true;
    return false;
}

static int64_t vault_rows(const char *sql)
{
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_v.db, 5000, &c));
    db_result *res = NULL;
    base_result r = db_exec(c, sql, 0, NULL, &res);
    db_conn_release(c);
    MUST(r);
    int64_t n = 0;
    MUST(db_result_get_int64(res, 0, 0, &n));
    db_result_free(res);
    return n;
}

static void vault_exec(const char *sql, int nparams, const char *const *params)
{
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_v.db, 5000, &c));
    base_result r = db_exec(c, sql, nparams, params, NULL);
    db_conn_release(c);
    MUST(r);
}

/* ExportPatient: the chunks joined; *ret_len 0 when none came. */
static rpc_code export_patient(const VT(ExportPatientRequest) * req, const char *bearer, char **ret_json,
                               size_t *ret_len, uint8_t digest[32], uint32_t *ret_resources, rpc_status *st)
{
    rpc_call_opts o = {.timeout_ms = 20000, .authorization = bearer};
    rpc_client_stream *cs = NULL;
    MUST(rpc_client_stream_open(g_ch, VLT("ExportPatient"), &o, &cs));
    MUST(rpc_client_stream_send(cs, &req->base));
    MUST(rpc_client_stream_close_send(cs));
    char *json = malloc(1);
    size_t len = 0;
    json[0] = '\0';
    for (;;) {
        ProtobufCMessage *msg = NULL;
        bool eof = false;
        if (!base_is_ok(rpc_client_stream_recv(cs, &V(export_chunk__descriptor), &msg, &eof)) || eof)
            break;
        VT(ExportChunk) *c = (VT(ExportChunk) *)msg;
        json = realloc(json, len + c->data.len + 1);
        assert_non_null(json);
        memcpy(json + len, c->data.data, c->data.len);
        len += c->data.len;
        json[len] = '\0';
        if (c->last) {
            assert_int_equal(c->sha256.len, 32);
            memcpy(digest, c->sha256.data, 32);
            *ret_resources = c->resource_count;
        }
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    rpc_code code = rpc_client_stream_finish(cs, st);
    rpc_client_stream_free(cs);
    *ret_json = json;
    *ret_len = len;
    return code;
}

/* ---- scenarios ----------------------------------------------------------------------------------------- */

/* A patient registered, read back by the treating clinician (every category but financial, which the
 * treating view withholds), found by blind index, updated (history kept); each step audited. */
static void test_patient_round_trip(void **state)
{
    (void)state;
    char ref[64];
    make_patient(ref);
    assert_int_equal(testsuite_audit_count(&g_ts, A_CREATE, ref), 1);

    VT(GetPatientResponse) *got = NULL;
    rpc_status st;
    expect(get_patient(g_clin_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_OK, &st, "GetPatient");
    assert_non_null(got->patient);
    assert_string_equal(got->patient->demographics->family_name, FAMILY);
    assert_string_equal(got->patient->demographics->birth_date, BIRTH);
    assert_string_equal(got->patient->contact->phone, PHONE);
    assert_string_equal(got->patient->identifiers->mrn, MRN);
    assert_int_equal(got->patient->n_coverage, 0); /* financial: not the treating clinician's */
    assert_true(withheld_has(got->info, CAT(FINANCIAL)));
    assert_false(withheld_has(got->info, CAT(DEMOGRAPHIC)));
    assert_string_equal(got->info->patient_ref, ref);
    assert_int_equal(got->info->version, 1);
    assert_string_equal(got->info->created_by, g_clin);
    assert_string_equal(got->view->view_id, "treating_clinician");
    protobuf_c_message_free_unpacked(&got->base, NULL);
    assert_int_equal(testsuite_audit_count(&g_ts, A_READ, ref), 1);

    /* Postgres never sees the plaintext: no column of any row holds the MRN, the name or the phone. */
    assert_int_equal(vault_rows("SELECT count(*) FROM records WHERE position('" MRN "'::bytea IN "
                                "coalesce(part_identifier, '') || coalesce(part_demographic, '') || "
                                "coalesce(part_contact, '') || coalesce(part_financial, '')) > 0 "
                                "OR position('" FAMILY "'::bytea IN coalesce(part_demographic, '')) > 0 "
                                "OR position('" PHONE "'::bytea IN coalesce(part_contact, '')) > 0"),
                     0);
    assert_int_equal(vault_rows("SELECT count(*) FROM records"), 1);

    /* Blind-index lookups, each normalised the same way as the write. */
    VT(FindPatientsRequest) find = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__INIT;
    find.tenant_id = g_ts.tenant;
    find.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MRN;
    find.mrn = "mrn 000417";
    ProtobufCMessage *resp = NULL;
    expect(vcall(VLT("FindPatients"), &find.base, &V(find_patients_response__descriptor), g_sched_tok, &resp,
                 &st),
           RPC_OK, &st, "FindPatients by MRN");
    assert_int_equal(((VT(FindPatientsResponse) *)resp)->n_patient_refs, 1);
    assert_string_equal(((VT(FindPatientsResponse) *)resp)->patient_refs[0], ref);
    protobuf_c_message_free_unpacked(resp, NULL);
    VT(NameAndBirthDate) nb = ALMA__VAULT__V1__NAME_AND_BIRTH_DATE__INIT;
    nb.family_name = "SYNTHETICA";
    nb.given_name = "testa";
    nb.birth_date = BIRTH;
    find.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_NAME_AND_BIRTH_DATE;
    find.name_and_birth_date = &nb;
    expect(vcall(VLT("FindPatients"), &find.base, &V(find_patients_response__descriptor), g_sched_tok, &resp,
                 &st),
           RPC_OK, &st, "FindPatients by name and birth date");
    assert_int_equal(((VT(FindPatientsResponse) *)resp)->n_patient_refs, 1);
    protobuf_c_message_free_unpacked(resp, NULL);
    nb.birth_date = "1961-04-18";
    expect(vcall(VLT("FindPatients"), &find.base, &V(find_patients_response__descriptor), g_sched_tok, &resp,
                 &st),
           RPC_OK, &st, "FindPatients, another birth date");
    assert_int_equal(((VT(FindPatientsResponse) *)resp)->n_patient_refs, 0);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* Update: a new version; the old one stays in the history; a stale expected_version is refused. */
    patient_msg m;
    patient_init(&m);
    m.i.mrn = "MRN-000418";
    VT(UpdatePatientRequest) up = ALMA__VAULT__V1__UPDATE_PATIENT_REQUEST__INIT;
    up.tenant_id = g_ts.tenant;
    up.patient_ref = ref;
    up.expected_version = 1;
    up.patient = &m.p;
    expect(vcall(VLT("UpdatePatient"), &up.base, &V(update_patient_response__descriptor), g_clin_tok, &resp,
                 &st),
           RPC_OK, &st, "UpdatePatient");
    assert_int_equal(((VT(UpdatePatientResponse) *)resp)->version, 2);
    protobuf_c_message_free_unpacked(resp, NULL);
    expect(
        vcall(VLT("UpdatePatient"), &up.base, &V(update_patient_response__descriptor), g_clin_tok, NULL, &st),
        RPC_FAILED_PRECONDITION, &st, "UpdatePatient on a stale version");
    VT(GetRecordHistoryRequest) hist = ALMA__VAULT__V1__GET_RECORD_HISTORY_REQUEST__INIT;
    hist.tenant_id = g_ts.tenant;
    hist.record_id = ref;
    hist.purpose = PURPOSE(TREATMENT);
    expect(vcall(VLT("GetRecordHistory"), &hist.base, &V(get_record_history_response__descriptor), g_clin_tok,
                 &resp, &st),
           RPC_OK, &st, "GetRecordHistory");
    VT(GetRecordHistoryResponse) *h = (VT(GetRecordHistoryResponse) *)resp;
    assert_int_equal(h->n_versions, 2);
    assert_string_equal(h->versions[0]->patient->identifiers->mrn, MRN);
    assert_string_equal(h->versions[1]->patient->identifiers->mrn, "MRN-000418");
    protobuf_c_message_free_unpacked(resp, NULL);
    /* Only the latest version is found by the old MRN: nothing. */
    find.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MRN;
    find.mrn = MRN;
    expect(vcall(VLT("FindPatients"), &find.base, &V(find_patients_response__descriptor), g_sched_tok, &resp,
                 &st),
           RPC_OK, &st, "FindPatients by the old MRN");
    assert_int_equal(((VT(FindPatientsResponse) *)resp)->n_patient_refs, 0);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* The whole path once with a token from a real Login. */
    char bearer[TESTSUITE_BEARER_MAX];
    testsuite_login(&g_ts, "dr.synth", TESTSUITE_PASSWORD, bearer);
    expect(get_patient(bearer, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_OK, &st,
           "GetPatient, real login");
    assert_string_equal(got->patient->identifiers->mrn, "MRN-000418");
    protobuf_c_message_free_unpacked(&got->base, NULL);
}

/* Minimum necessary: what each role sees for its purpose; a purpose its role has no view for is refused. */
static void test_views(void **state)
{
    (void)state;
    char ref[64], item[64], sens[64];
    make_patient(ref);
    rpc_status st;
    expect(put_problem(g_clin_tok, ref, "K21.9", false, item, &st), RPC_OK, &st, "PutItem K21.9");
    expect(put_problem(g_clin_tok, ref, "F32.A", false, sens, &st), RPC_OK, &st, "PutItem F32.A");
    testsuite_relationship(&g_ts, g_sched, ref, NULL);
    testsuite_relationship(&g_ts, g_bill, ref, NULL);
    testsuite_relationship(&g_ts, g_plan, ref, NULL);

    VT(GetPatientResponse) *got = NULL;
    expect(get_patient(g_sched_tok, NULL, ref, PURPOSE(OPERATIONS), &got, &st), RPC_OK, &st, "scheduler");
    assert_non_null(got->patient->demographics);
    assert_non_null(got->patient->contact);
    assert_null(got->patient->identifiers);
    assert_int_equal(got->patient->n_coverage, 0);
    assert_true(withheld_has(got->info, CAT(IDENTIFIER)) && withheld_has(got->info, CAT(FINANCIAL)));
    protobuf_c_message_free_unpacked(&got->base, NULL);

    expect(get_patient(g_bill_tok, NULL, ref, PURPOSE(PAYMENT), &got, &st), RPC_OK, &st, "billing");
    assert_non_null(got->patient->demographics);
    assert_null(got->patient->contact);
    assert_string_equal(got->patient->identifiers->mrn, MRN);
    assert_int_equal(got->patient->n_coverage, 1);
    assert_string_equal(got->patient->coverage[0]->member_id, MEMBER);
    protobuf_c_message_free_unpacked(&got->base, NULL);

    /* The plan reviewer: clinical only, under a pseudonym, with an age instead of a birth date. */
    expect(get_patient(g_plan_tok, NULL, ref, PURPOSE(PAYMENT), &got, &st), RPC_OK, &st, "plan reviewer");
    assert_true(got->view->pseudonymous);
    assert_true(strncmp(got->info->patient_ref, "ps_", 3) == 0);
    assert_string_not_equal(got->info->patient_ref, ref);
    char pseudonym[64];
    snprintf(pseudonym, sizeof pseudonym, "%s", got->info->patient_ref);
    assert_true(got->patient == NULL || (!got->patient->demographics && !got->patient->contact &&
                                         !got->patient->identifiers && got->patient->n_coverage == 0));
    assert_true(got->age_years >= 60 && got->age_years <= 70);
    assert_string_equal(got->info->created_by, "");
    protobuf_c_message_free_unpacked(&got->base, NULL);
    VT(GetItemResponse) *it = NULL;
    expect(get_item(g_plan_tok, item, PURPOSE(PAYMENT), &it, &st), RPC_OK, &st, "plan reviewer item");
    assert_non_null(it->item);
    assert_string_equal(it->item->problem->code->code, "K21.9");
    assert_string_equal(it->info->patient_ref, pseudonym); /* stable */
    protobuf_c_message_free_unpacked(&it->base, NULL);
    /* The F-code item is sensitive clinical whatever the caller said: withheld from the plan reviewer. */
    expect(get_item(g_plan_tok, sens, PURPOSE(PAYMENT), &it, &st), RPC_OK, &st,
           "plan reviewer sensitive item");
    assert_null(it->item);
    assert_true(withheld_has(it->info, CAT(SENSITIVE_CLINICAL)));
    protobuf_c_message_free_unpacked(&it->base, NULL);
    expect(get_item(g_clin_tok, sens, PURPOSE(TREATMENT), &it, &st), RPC_OK, &st, "clinician sensitive item");
    assert_non_null(it->item);
    protobuf_c_message_free_unpacked(&it->base, NULL);

    /* Wrong purpose: no view, refused, the attempt audited, nothing returned. */
    int denied = testsuite_audit_count(&g_ts, A_DENIED, ref);
    expect(get_patient(g_sched_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_PERMISSION_DENIED, &st,
           "scheduler for treatment");
    assert_null(got);
    assert_null(strstr(st.message, ref));
    assert_int_equal(testsuite_audit_count(&g_ts, A_DENIED, ref), denied + 1);
    /* An unspecified purpose is bad input. */
    expect(get_patient(g_clin_tok, NULL, ref, 0, &got, &st), RPC_INVALID_ARGUMENT, &st, "no purpose");
    assert_null(got);
}

/* Who may not: no token, no relationship, another tenant, an ended relationship; break-glass may. */
static void test_access_denials(void **state)
{
    (void)state;
    char ref[64];
    make_patient(ref);
    VT(GetPatientResponse) *got = NULL;
    rpc_status st;
    expect(get_patient(NULL, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_UNAUTHENTICATED, &st, "no token");
    assert_null(got);
    expect(get_patient(g_other_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_PERMISSION_DENIED, &st,
           "no relationship");
    assert_null(got);
    /* A clinician of another tenant naming this tenant, and naming their own tenant for this patient. */
    char other_tenant_tok[TESTSUITE_BEARER_MAX];
    testsuite_token(&g_ts, "other-clinic", g_clin, (const char *const[]){"pcp_clinician", NULL},
                    other_tenant_tok);
    expect(get_patient(other_tenant_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_PERMISSION_DENIED,
           &st, "another tenant's token");
    assert_null(got);
    expect(get_patient(other_tenant_tok, "other-clinic", ref, PURPOSE(TREATMENT), &got, &st),
           RPC_PERMISSION_DENIED, &st, "own tenant, no relationship there");
    assert_null(got);
    /* Break-glass opens it (audited by identity), for this clinician only. */
    testsuite_break_glass(&g_ts, g_other_tok, ref);
    expect(get_patient(g_other_tok, NULL, ref, PURPOSE(EMERGENCY), &got, &st), RPC_OK, &st, "break-glass");
    assert_non_null(got->patient);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    /* An ended relationship closes it within a second (the mirror in Redis). */
    char rel[64], other[64];
    testsuite_user(&g_ts, "dr.third", "specialist_clinician", other);
    char tok[TESTSUITE_BEARER_MAX];
    testsuite_token(&g_ts, NULL, other, (const char *const[]){"specialist_clinician", NULL}, tok);
    testsuite_relationship(&g_ts, other, ref, rel);
    expect(get_patient(tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_OK, &st,
           "specialist with relationship");
    protobuf_c_message_free_unpacked(&got->base, NULL);
    testsuite_end_relationship(&g_ts, rel);
    expect(get_patient(tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_PERMISSION_DENIED, &st,
           "relationship ended");
    assert_null(got);
    /* Writes need their permission too: the scheduler may not add clinical items. */
    char item[64];
    testsuite_relationship(&g_ts, g_sched, ref, NULL);
    expect(put_note(g_sched_tok, ref, item, &st), RPC_PERMISSION_DENIED, &st, "scheduler writing a note");
    assert_int_equal(vault_rows("SELECT count(*) FROM records WHERE record_id LIKE 'it_%'"), 0);
}

/* Bad input: INVALID_ARGUMENT naming the field, never the value; nothing stored, nothing audited. */
static void test_bad_input(void **state)
{
    (void)state;
    struct {
        const char *what, *field, *value;
        void (*spoil)(patient_msg *m);
    } cases[] = {
        {"impossible birth date", "birth_date", "1961-02-30", NULL},
        {"MRN with spaces", "mrn", "MRN 0004;DROP", NULL},
        {"phone not E.164", "phone", "555-0117 call me", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        patient_msg m;
        patient_init(&m);
        if (i == 0)
            m.d.birth_date = (char *)cases[i].value;
        else if (i == 1)
            m.i.mrn = (char *)cases[i].value;
        else
            m.c.phone = (char *)cases[i].value;
        char ref[64];
        rpc_status st;
        expect(create_patient(g_clin_tok, NULL, &m, ref, &st), RPC_INVALID_ARGUMENT, &st, cases[i].what);
        assert_non_null(strstr(st.message, cases[i].field));
        assert_null(strstr(st.message, cases[i].value));
    }
    patient_msg m;
    patient_init(&m);
    m.p.demographics = NULL;
    char ref[64];
    rpc_status st;
    expect(create_patient(g_clin_tok, NULL, &m, ref, &st), RPC_INVALID_ARGUMENT, &st, "no demographics");
    /* Bad references. */
    VT(GetPatientResponse) *got = NULL;
    expect(get_patient(g_clin_tok, NULL, "pt_not-a-ref", PURPOSE(TREATMENT), &got, &st), RPC_INVALID_ARGUMENT,
           &st, "bad patient_ref");
    expect(get_patient(g_clin_tok, "Bad Tenant", "pt_00000000000000000000000000000000", PURPOSE(TREATMENT),
                       &got, &st),
           RPC_INVALID_ARGUMENT, &st, "bad tenant");
    assert_int_equal(vault_rows("SELECT count(*) FROM records"), 0);
    assert_int_equal(testsuite_audit_count(&g_ts, A_CREATE, NULL), 0);
}

/* Tampered ciphertext and swapped rows fail their integrity check (DATA_LOSS) and nothing is returned. */
static void test_tamper_and_swap(void **state)
{
    (void)state;
    char ref[64], a[64], b[64];
    make_patient(ref);
    rpc_status st;
    expect(put_note(g_clin_tok, ref, a, &st), RPC_OK, &st, "note a");
    expect(put_note(g_clin_tok, ref, b, &st), RPC_OK, &st, "note b");
    VT(GetItemResponse) *it = NULL;
    expect(get_item(g_clin_tok, a, PURPOSE(TREATMENT), &it, &st), RPC_OK, &st, "note a before");
    assert_string_equal(it->item->note->text, NOTE_TEXT);
    protobuf_c_message_free_unpacked(&it->base, NULL);
    /* The superuser (a compromised database, not the service) changes rows; the guard trigger is off. */
    vault_exec("ALTER TABLE records DISABLE TRIGGER records_guard", 0, NULL);
    /* b's ciphertext in a's row: swapped rows. */
    const char *ab[] = {a, b};
    vault_exec("UPDATE records SET part_clinical = (SELECT part_clinical FROM records WHERE record_id = $2) "
               "WHERE record_id = $1",
               2, ab);
    expect(get_item(g_clin_tok, a, PURPOSE(TREATMENT), &it, &st), RPC_DATA_LOSS, &st, "swapped part");
    assert_null(it);
    /* b's wrapped data key in a's row as well. */
    vault_exec("UPDATE records SET wrapped_dek = (SELECT wrapped_dek FROM records WHERE record_id = $2) "
               "WHERE record_id = $1",
               2, ab);
    expect(get_item(g_clin_tok, a, PURPOSE(TREATMENT), &it, &st), RPC_DATA_LOSS, &st, "swapped part and key");
    assert_null(it);
    /* One flipped bit in b's ciphertext. */
    const char *bb[] = {b};
    vault_exec(
        "UPDATE records SET part_clinical = set_byte(part_clinical, 20, get_byte(part_clinical, 20) # 1) "
        "WHERE record_id = $1",
        1, bb);
    expect(get_item(g_clin_tok, b, PURPOSE(TREATMENT), &it, &st), RPC_DATA_LOSS, &st, "flipped bit");
    assert_null(it);
    assert_null(strstr(st.message, "Synthetic"));
    vault_exec("ALTER TABLE records ENABLE TRIGGER records_guard", 0, NULL);
    /* The runtime role cannot do any of that: the trigger refuses a changed part. */
    assert_int_equal(testsuite_audit_count(&g_ts, A_READ, ref), 1); /* only the good read was disclosed */
}

/* Audit down: reads fail UNAVAILABLE with nothing returned, writes fail with nothing stored; back up, both
 * work again. */
static void test_audit_down(void **state)
{
    (void)state;
    char ref[64];
    make_patient(ref);
    testsuite_audit_stop(&g_ts);
    VT(GetPatientResponse) *got = NULL;
    rpc_status st;
    expect(get_patient(g_clin_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_UNAVAILABLE, &st,
           "read with the audit log down");
    assert_null(got);
    char item[64];
    expect(put_note(g_clin_tok, ref, item, &st), RPC_UNAVAILABLE, &st, "write with the audit log down");
    patient_msg m;
    patient_init(&m);
    char other[64];
    expect(create_patient(g_clin_tok, NULL, &m, other, &st), RPC_UNAVAILABLE, &st,
           "register with the audit log down");
    assert_int_equal(vault_rows("SELECT count(*) FROM records"), 1);
    testsuite_audit_start(&g_ts);
    /* The audit client reconnects on the next call (gRPC backs off for up to a second or so). */
    rpc_code code = RPC_UNAVAILABLE;
    for (int i = 0; i < 100 && code == RPC_UNAVAILABLE; i++) {
        code = get_patient(g_clin_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st);
        if (code == RPC_UNAVAILABLE)
            testproc_sleep_ms(100);
    }
    expect(code, RPC_OK, &st, "read after the audit log is back");
    assert_non_null(got->patient);
    protobuf_c_message_free_unpacked(&got->base, NULL);
}

/* Right of access: the whole record as a FHIR R4 Bundle, streamed, its digest given, the disclosure
 * audited; and records survive a restart of the vault. */
static void test_export_and_restart(void **state)
{
    (void)state;
    char ref[64], item[64];
    make_patient(ref);
    rpc_status st;
    expect(put_problem(g_clin_tok, ref, "N18.3", false, item, &st), RPC_OK, &st, "problem");
    expect(put_note(g_clin_tok, ref, item, &st), RPC_OK, &st, "note");

    VT(ExportPatientRequest) req = ALMA__VAULT__V1__EXPORT_PATIENT_REQUEST__INIT;
    req.tenant_id = g_ts.tenant;
    req.patient_ref = ref;
    req.access_request_id = "roa-2026-0001";
    char *json = NULL;
    size_t len = 0;
    uint32_t resources = 0;
    uint8_t digest[32] = {0};
    rpc_code code = export_patient(&req, g_priv_tok, &json, &len, digest, &resources, &st);
    expect(code, RPC_OK, &st, "ExportPatient");
    assert_true(resources >= 4); /* Patient, Coverage, Condition, DocumentReference */
    uint8_t mine[32];
    MUST(acrypto_sha256(json, len, mine));
    assert_memory_equal(mine, digest, 32);
    assert_non_null(strstr(json, "\"resourceType\":\"Bundle\""));
    assert_non_null(strstr(json, MRN));
    assert_non_null(strstr(json, "N18.3"));
    free(json);
    assert_int_equal(testsuite_audit_count(&g_ts, A_DISCLOSE, ref), 1);
    /* A clinician may not export (privacy.review): refused before any chunk. */
    json = NULL;
    code = export_patient(&req, g_clin_tok, &json, &len, digest, &resources, &st);
    expect(code, RPC_PERMISSION_DENIED, &st, "ExportPatient by a clinician");
    assert_int_equal(len, 0);
    free(json);

    /* Restart: everything is still there and readable. */
    rpc_channel_close(g_ch);
    g_ch = NULL;
    vaultd_restart(&g_v, &g_ts);
    open_channel();
    VT(GetPatientResponse) *got = NULL;
    expect(get_patient(g_clin_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_OK, &st, "after restart");
    assert_string_equal(got->patient->identifiers->mrn, MRN);
    protobuf_c_message_free_unpacked(&got->base, NULL);
}

/* §164.526 amendments, legal hold, retention and crypto-shredding with a signed certificate, through the
 * API; then a tenant key rotation: new writes under the new key, old records still readable. */
static void test_lifecycle_and_keys(void **state)
{
    (void)state;
    char ref[64], item[64];
    make_patient(ref);
    rpc_status st;
    expect(put_note(g_clin_tok, ref, item, &st), RPC_OK, &st, "note");
    ProtobufCMessage *resp = NULL;

    /* Amendment: received (due in 60 days), accepted only once the amended version exists. */
    VT(CreateAmendmentRequestRequest) car = ALMA__VAULT__V1__CREATE_AMENDMENT_REQUEST_REQUEST__INIT;
    car.tenant_id = g_ts.tenant;
    car.patient_ref = ref;
    car.record_id = item;
    expect(vcall(VLT("CreateAmendmentRequest"), &car.base, &V(amendment_request__descriptor), g_clin_tok,
                 NULL, &st),
           RPC_PERMISSION_DENIED, &st, "amendment by a clinician");
    expect(vcall(VLT("CreateAmendmentRequest"), &car.base, &V(amendment_request__descriptor), g_priv_tok,
                 &resp, &st),
           RPC_OK, &st, "CreateAmendmentRequest");
    VT(AmendmentRequest) *am = (VT(AmendmentRequest) *)resp;
    char am_id[64];
    snprintf(am_id, sizeof am_id, "%s", am->request_id);
    assert_int_equal(am->status, ALMA__VAULT__V1__AMENDMENT_STATUS__AMENDMENT_STATUS_RECEIVED);
    assert_int_equal(am->due_time->seconds - am->received_time->seconds, 60 * 86400);
    protobuf_c_message_free_unpacked(resp, NULL);
    VT(DecideAmendmentRequestRequest) dec = ALMA__VAULT__V1__DECIDE_AMENDMENT_REQUEST_REQUEST__INIT;
    dec.tenant_id = g_ts.tenant;
    dec.request_id = am_id;
    dec.status = ALMA__VAULT__V1__AMENDMENT_STATUS__AMENDMENT_STATUS_ACCEPTED;
    expect(vcall(VLT("DecideAmendmentRequest"), &dec.base, &V(amendment_request__descriptor), g_priv_tok,
                 NULL, &st),
           RPC_FAILED_PRECONDITION, &st, "accept before the amended version exists");
    VT(Note) note = ALMA__VAULT__V1__NOTE__INIT;
    note.title = "Visit (amended)";
    note.text = "Synthetic note, amended at the patient's request.";
    note.date = "2024-02-03";
    VT(Item) it = ALMA__VAULT__V1__ITEM__INIT;
    it.body_case = ALMA__VAULT__V1__ITEM__BODY_NOTE;
    it.note = &note;
    VT(PutItemRequest) put = ALMA__VAULT__V1__PUT_ITEM_REQUEST__INIT;
    put.tenant_id = g_ts.tenant;
    put.patient_ref = ref;
    put.record_id = item;
    put.expected_version = 1;
    put.item = &it;
    put.amendment_request_id = am_id;
    expect(vcall(VLT("PutItem"), &put.base, &V(put_item_response__descriptor), g_clin_tok, NULL, &st), RPC_OK,
           &st, "the amended version");
    expect(vcall(VLT("DecideAmendmentRequest"), &dec.base, &V(amendment_request__descriptor), g_priv_tok,
                 &resp, &st),
           RPC_OK, &st, "accept");
    assert_int_equal(((VT(AmendmentRequest) *)resp)->amended_version, 2);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* Legal hold blocks destruction; so does retention; with both out of the way, a certificate. */
    VT(PlaceLegalHoldRequest) ph = ALMA__VAULT__V1__PLACE_LEGAL_HOLD_REQUEST__INIT;
    ph.tenant_id = g_ts.tenant;
    ph.patient_ref = ref;
    ph.reason_code = "litigation";
    expect(vcall(VLT("PlaceLegalHold"), &ph.base, &V(legal_hold__descriptor), g_priv_tok, &resp, &st), RPC_OK,
           &st, "PlaceLegalHold");
    char hold[64];
    snprintf(hold, sizeof hold, "%s", ((VT(LegalHold) *)resp)->hold_id);
    protobuf_c_message_free_unpacked(resp, NULL);
    VT(DestroyPatientRequest) dp = ALMA__VAULT__V1__DESTROY_PATIENT_REQUEST__INIT;
    dp.tenant_id = g_ts.tenant;
    dp.patient_ref = ref;
    dp.reason_code = "retention_expired";
    expect(vcall(VLT("DestroyPatient"), &dp.base, &V(destruction_certificate__descriptor), g_priv_tok, NULL,
                 &st),
           RPC_FAILED_PRECONDITION, &st, "destroy under a legal hold");
    assert_non_null(strstr(st.message, "legal hold"));
    VT(ReleaseLegalHoldRequest) rh = ALMA__VAULT__V1__RELEASE_LEGAL_HOLD_REQUEST__INIT;
    rh.tenant_id = g_ts.tenant;
    rh.hold_id = hold;
    expect(vcall(VLT("ReleaseLegalHold"), &rh.base, &V(legal_hold__descriptor), g_priv_tok, NULL, &st),
           RPC_OK, &st, "ReleaseLegalHold");
    expect(vcall(VLT("DestroyPatient"), &dp.base, &V(destruction_certificate__descriptor), g_priv_tok, NULL,
                 &st),
           RPC_FAILED_PRECONDITION, &st, "destroy within retention");
    assert_non_null(strstr(st.message, "retention"));
    for (int c = 1; c <= 6; c++) {
        VT(SetRetentionRequest) sr = ALMA__VAULT__V1__SET_RETENTION_REQUEST__INIT;
        sr.tenant_id = g_ts.tenant;
        sr.category = c;
        sr.years = 0;
        expect(vcall(VLT("SetRetention"), &sr.base, &V(set_retention_response__descriptor), g_priv_tok, NULL,
                     &st),
               RPC_OK, &st, "SetRetention 0");
    }
    expect(vcall(VLT("DestroyPatient"), &dp.base, &V(destruction_certificate__descriptor), g_priv_tok, &resp,
                 &st),
           RPC_OK, &st, "DestroyPatient");
    VT(DestructionCertificate) *cert = (VT(DestructionCertificate) *)resp;
    assert_int_equal(cert->records, 2);
    assert_int_equal(cert->versions, 3);
    assert_non_null(strstr(cert->statement, item));
    assert_null(strstr(cert->statement, MRN));
    assert_string_equal(cert->verifier_key, g_v.vkey_pem);
    acrypto_ed25519_key *vk = NULL;
    MUST(acrypto_ed25519_public_from_pem(g_v.vkey_pem, strlen(g_v.vkey_pem), &vk));
    MUST(acrypto_ed25519_verify(vk, cert->statement, strlen(cert->statement), cert->signature.data,
                                cert->signature.len));
    acrypto_ed25519_free(vk);
    protobuf_c_message_free_unpacked(resp, NULL);
    assert_int_equal(vault_rows("SELECT count(*) FROM records"), 0);
    VT(GetPatientResponse) *got = NULL;
    expect(get_patient(g_clin_tok, NULL, ref, PURPOSE(TREATMENT), &got, &st), RPC_NOT_FOUND, &st,
           "after destruction");

    /* Key rotation: version 2 wraps new data keys; a record made before is still read. */
    char ref2[64];
    make_patient(ref2);
    VT(RotateTenantKeyRequest) rot = ALMA__VAULT__V1__ROTATE_TENANT_KEY_REQUEST__INIT;
    rot.tenant_id = g_ts.tenant;
    expect(vcall(VLT("RotateTenantKey"), &rot.base, &V(tenant_key_status__descriptor), g_clin_tok, NULL, &st),
           RPC_PERMISSION_DENIED, &st, "rotation by a clinician");
    expect(vcall(VLT("RotateTenantKey"), &rot.base, &V(tenant_key_status__descriptor), g_sec_tok, &resp, &st),
           RPC_OK, &st, "RotateTenantKey");
    assert_int_equal(((VT(TenantKeyStatus) *)resp)->current_version, 2);
    protobuf_c_message_free_unpacked(resp, NULL);
    expect(put_note(g_clin_tok, ref2, item, &st), RPC_OK, &st, "a note after rotation");
    const char *p[] = {item};
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_v.db, 5000, &c));
    db_result *res = NULL;
    MUST(db_exec(c, "SELECT kek_version FROM records WHERE record_id = $1", 1, p, &res));
    db_conn_release(c);
    assert_string_equal(db_result_get(res, 0, 0), "2");
    db_result_free(res);
    expect(get_patient(g_clin_tok, NULL, ref2, PURPOSE(TREATMENT), &got, &st), RPC_OK, &st,
           "old record, new key");
    protobuf_c_message_free_unpacked(&got->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_patient_round_trip, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_views, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_access_denials, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_tamper_and_swap, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_audit_down, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_export_and_restart, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle_and_keys, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
