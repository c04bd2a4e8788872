/* The real alma-guideline end to end over mTLS, inside the suite (tests/support/testsuite.h: a real
 * alma-audit and alma-identity against the harness PostgreSQL and Redis), with the first bundle
 * (services/guideline/bundles/alma-referral-core-1.0.0.json) published at start through --bundle-file.
 * Stateless reviews (input_json) of CKD vignettes (tests/guideline/vignettes/ckd-nephrology.json): the
 * recommendation, its determinism, storage and audit; decisions; denials; audit down; publishing, what-if
 * and concordance; a restart. All patient data here is synthetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/v1/audit.pb-c.h"
#include "db/db.h"
#include "guideline/v1/guideline.pb-c.h"
#include "rpc/rpc.h"
#include "testdb.h"
#include "testenv.h"
#include "testproc.h"
#include "testrpc.h"
#include "testsuite.h"
#include "vault/v1/vault.pb-c.h"
#include "vaultd.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r_ = (expr);                                                                        \
        if (!base_is_ok(must_r_))                                                                            \
            fail_msg("%s: %s", #expr, base_error_message());                                                 \
    } while (0)

#define GLM(name)   "/alma.guideline.v1.Guideline/" name
#define D(x)        alma__guideline__v1__##x##__descriptor
#define GT(x)       Alma__Guideline__V1__##x
#define GE(x)       ALMA__GUIDELINE__V1__##x
#define A_RECOMMEND ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND
#define A_DECIDE    ALMA__AUDIT__V1__ACTION__ACTION_DECIDE
#define A_READ      ALMA__AUDIT__V1__ACTION__ACTION_READ
#define A_DENIED    ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED
#define A_ADMIN     ALMA__AUDIT__V1__ACTION__ACTION_ADMIN
#define BUNDLE_FILE "services/guideline/bundles/alma-referral-core-1.0.0.json"
#define VIGNETTES   "tests/guideline/vignettes/ckd-nephrology.json"
#define EGFR_27     "CKD eGFR 27 (G4): refer"
#define EGFR_48     "CKD G3a A2, no referral criterion: manage"
#define PATIENT     "pt_0123456789abcdef0123456789abcdef"
#define PATIENT2    "pt_fedcba9876543210fedcba9876543210"

static testsuite g_ts;
static testproc_daemon g_d;
static char g_schema[64];
static char g_vault_addr[64]; /* "": started without vault-addr */
static rpc_channel *g_ch;
static char g_clin[64], g_other[64], g_plan[64];
static char *g_clin_tok, *g_other_tok, *g_plan_tok, *g_admin_tok;

/* ---- set-up ------------------------------------------------------------------------------------------ */

static void launch(void)
{
    char env_bundle[600], env_vault[100];
    snprintf(env_bundle, sizeof env_bundle, "ALMA_BUNDLE_FILE=%s", testenv_source_path(BUNDLE_FILE));
    snprintf(env_vault, sizeof env_vault, "ALMA_VAULT_ADDR=%s", g_vault_addr);
    testsuite_daemon_start(&g_ts, &g_d, "services/guideline/alma-guideline", "guideline", g_schema, 8,
                           (const char *const[]){env_bundle, env_vault, NULL});
}

static void open_channel(void)
{
    rpc_client_tls tls = testrpc_client_tls("test-client");
    MUST(rpc_channel_open(g_d.api_addr, &tls, &g_ch));
}

static void restart(void)
{
    rpc_channel_close(g_ch);
    g_ch = NULL;
    int api = g_d.api;
    assert_int_equal(testproc_daemon_stop(&g_d), 0);
    g_d.api = api;
    launch();
    open_channel();
}

static char *token(const char *tenant, const char *principal, const char *role)
{
    char *b = malloc(TESTSUITE_BEARER_MAX);
    assert_non_null(b);
    testsuite_token(&g_ts, tenant, principal, (const char *const[]){role, NULL}, b);
    return b;
}

static int group_setup(void **state)
{
    (void)state;
    testsuite_group_setup(&g_ts, "gsvcd");
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
    memset(&g_d, 0, sizeof g_d);
    g_vault_addr[0] = '\0';
    snprintf(g_schema, sizeof g_schema, "gsvcd_gl_%d_%d", (int)getpid(), g_ts.counter);
    launch();
    open_channel();
    testsuite_user(&g_ts, "dr.synth", "pcp_clinician", g_clin);
    testsuite_user(&g_ts, "dr.other", "pcp_clinician", g_other);
    testsuite_user(&g_ts, "plan.reviewer", "plan_reviewer", g_plan);
    g_clin_tok = token(NULL, g_clin, "pcp_clinician");
    g_other_tok = token(NULL, g_other, "pcp_clinician");
    g_plan_tok = token(NULL, g_plan, "plan_reviewer");
    g_admin_tok = token(NULL, g_ts.admin_id, "platform_admin");
    testsuite_relationship(&g_ts, g_clin, PATIENT, NULL);
    return 0;
}

static int test_teardown(void **state)
{
    rpc_channel_close(g_ch);
    g_ch = NULL;
    bool ok = testsuite_daemon_stop(&g_d, "alma-guideline");
    testdb_drop_schema(g_ts.root, g_schema);
    ok = testsuite_stop(&g_ts) && ok;
    free(g_clin_tok);
    free(g_other_tok);
    free(g_plan_tok);
    free(g_admin_tok);
    int rc = testproc_teardown(state);
    return ok ? rc : -1;
}

/* ---- calls --------------------------------------------------------------------------------------------- */

static rpc_code gcall(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                      const char *bearer, ProtobufCMessage **ret, rpc_status *st)
{
    rpc_call_opts o = {.timeout_ms = 30000, .authorization = bearer};
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

static char *read_text(const char *rel)
{
    FILE *f = fopen(testenv_source_path(rel), "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The input of a named vignette, as JSON text (malloc'd). */
static char *vignette_input(const char *name)
{
    json_error_t err;
    json_t *all = json_load_file(testenv_source_path(VIGNETTES), 0, &err);
    assert_non_null(all);
    char *out = NULL;
    for (size_t i = 0; i < json_array_size(all) && !out; i++) {
        json_t *v = json_array_get(all, i);
        if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0)
            out = json_dumps(json_object_get(v, "input"), JSON_COMPACT);
    }
    json_decref(all);
    if (!out)
        fail_msg("vignette \"%s\" not found", name);
    return out;
}

/* text with the first `from` after `anchor` replaced by `to` (malloc'd). */
static char *replace_after(const char *text, const char *anchor, const char *from, const char *to)
{
    const char *a = strstr(text, anchor);
    assert_non_null(a);
    const char *p = strstr(a, from);
    assert_non_null(p);
    size_t head = (size_t)(p - text), n = strlen(text), fl = strlen(from), tl = strlen(to);
    char *out = malloc(n - fl + tl + 1);
    assert_non_null(out);
    memcpy(out, text, head);
    memcpy(out + head, to, tl);
    memcpy(out + head + tl, p + fl, n - head - fl + 1);
    return out;
}

static rpc_code review(const char *bearer, const char *tenant, const char *referral, const char *patient,
                       const char *input, const char *bundle_version, GT(Review) * *ret, rpc_status *st)
{
    GT(ReviewReferralRequest) req = ALMA__GUIDELINE__V1__REVIEW_REFERRAL_REQUEST__INIT;
    req.tenant_id = (char *)(tenant ? tenant : g_ts.tenant);
    req.referral_id = (char *)referral;
    req.patient_ref = (char *)patient;
    req.specialty = "nephrology";
    char *codes[] = {"N18.31"};
    req.reason_codes = codes;
    req.n_reason_codes = 1;
    req.data_case = GE(REVIEW_REFERRAL_REQUEST__DATA_INPUT_JSON);
    req.input_json = (char *)input;
    GT(BundleRef) b = ALMA__GUIDELINE__V1__BUNDLE_REF__INIT;
    if (bundle_version) {
        b.bundle_id = "alma-referral-core";
        b.version = (char *)bundle_version;
        req.bundle = &b;
    }
    ProtobufCMessage *resp = NULL;
    rpc_code code = gcall(GLM("ReviewReferral"), &req.base, &D(review), bearer, &resp, st);
    if (ret)
        *ret = (GT(Review) *)resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

static rpc_code decide(const char *bearer, const char *tenant, const char *review_id, int kind, int reason,
                       const char *comment, rpc_status *st)
{
    GT(RecordDecisionRequest) req = ALMA__GUIDELINE__V1__RECORD_DECISION_REQUEST__INIT;
    req.tenant_id = (char *)(tenant ? tenant : g_ts.tenant);
    req.review_id = (char *)review_id;
    req.kind = kind;
    req.reason = reason;
    req.comment = (char *)(comment ? comment : "");
    return gcall(GLM("RecordDecision"), &req.base, &D(decision), bearer, NULL, st);
}

static GT(ReferralHistory) * history(const char *referral)
{
    GT(GetReferralHistoryRequest) req = ALMA__GUIDELINE__V1__GET_REFERRAL_HISTORY_REQUEST__INIT;
    req.tenant_id = g_ts.tenant;
    req.referral_id = (char *)referral;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    expect(gcall(GLM("GetReferralHistory"), &req.base, &D(referral_history), g_clin_tok, &resp, &st), RPC_OK,
           &st, "GetReferralHistory");
    return (GT(ReferralHistory) *)resp;
}

static void free_msg(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- scenarios ----------------------------------------------------------------------------------------- */

/* A CKD referral reviewed (REFER, rule, citations), stored and audited; byte-identical again; decisions
 * (accept, once only, override needs a reason); denials; history; concordance; a restart keeps it all. */
static void test_review_decide_history(void **state)
{
    (void)state;
    char *input = vignette_input(EGFR_27);
    rpc_status st;
    GT(Review) *r1 = NULL, *r2 = NULL;
    expect(review(g_clin_tok, NULL, "ref-ckd-1", PATIENT, input, NULL, &r1, &st), RPC_OK, &st, "review");
    assert_int_equal(r1->outcome, GE(OUTCOME__OUTCOME_REFER));
    assert_int_equal(r1->urgency, GE(URGENCY__URGENCY_ROUTINE));
    assert_string_equal(r1->pathway_id, "ckd-nephrology");
    assert_string_equal(r1->rule_id, "ckd-egfr-below-30");
    assert_string_equal(r1->clinician_id, g_clin);
    assert_string_equal(r1->engine_version, "alma-guideline/1");
    assert_string_equal(r1->bundle->bundle_id, "alma-referral-core");
    assert_string_equal(r1->bundle->version, "1.0.0");
    assert_int_equal(strlen(r1->bundle->content_hash), 64);
    assert_int_equal(strlen(r1->review_id), 35);
    assert_true(r1->n_fired >= 1);
    assert_string_equal(r1->fired[0]->rule_id, "ckd-egfr-below-30");
    assert_non_null(strstr(r1->fired[0]->values_json, "\"egfr\""));
    assert_true(r1->n_citations >= 1);
    assert_string_equal(r1->citations[0]->rule_id, "ckd-egfr-below-30");
    assert_int_equal(r1->citations[0]->year, 2012);
    assert_non_null(strstr(r1->citations[0]->guideline, "KDIGO"));
    assert_non_null(r1->create_time);
    assert_true(r1->recommendation_json.len > 0);
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT), 1);

    /* The same input again: byte-identical recommendation, a second review. */
    expect(review(g_clin_tok, NULL, "ref-ckd-1", PATIENT, input, NULL, &r2, &st), RPC_OK, &st, "review 2");
    assert_int_equal(r2->recommendation_json.len, r1->recommendation_json.len);
    assert_memory_equal(r2->recommendation_json.data, r1->recommendation_json.data,
                        r1->recommendation_json.len);
    assert_string_equal(r2->input_hash, r1->input_hash);
    assert_string_not_equal(r2->review_id, r1->review_id);
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT), 2);

    /* Decisions. */
    expect(decide(g_clin_tok, NULL, r1->review_id, GE(DECISION_KIND__DECISION_KIND_ACCEPT), 0, NULL, &st),
           RPC_OK, &st, "accept");
    assert_int_equal(testsuite_audit_count(&g_ts, A_DECIDE, PATIENT), 1);
    expect(decide(g_clin_tok, NULL, r1->review_id, GE(DECISION_KIND__DECISION_KIND_ACCEPT), 0, NULL, &st),
           RPC_ALREADY_EXISTS, &st, "second decision");
    expect(decide(g_clin_tok, NULL, r2->review_id, GE(DECISION_KIND__DECISION_KIND_OVERRIDE), 0, "x", &st),
           RPC_INVALID_ARGUMENT, &st, "override without reason");
    expect(
        decide(g_clin_tok, NULL, r2->review_id, GE(DECISION_KIND__DECISION_KIND_ACCEPT), 0, "\xff\xfe", &st),
        RPC_INVALID_ARGUMENT, &st, "comment not UTF-8");
    expect(decide(g_clin_tok, NULL, "rv_00000000000000000000000000000000",
                  GE(DECISION_KIND__DECISION_KIND_ACCEPT), 0, NULL, &st),
           RPC_NOT_FOUND, &st, "no such review");
    /* Another clinician without a relationship: neither review nor decision. */
    int denied = testsuite_audit_count(&g_ts, A_DENIED, PATIENT);
    expect(review(g_other_tok, NULL, "ref-ckd-x", PATIENT, input, NULL, NULL, &st), RPC_PERMISSION_DENIED,
           &st, "no relationship");
    expect(decide(g_other_tok, NULL, r2->review_id, GE(DECISION_KIND__DECISION_KIND_ACCEPT), 0, NULL, &st),
           RPC_PERMISSION_DENIED, &st, "decision without relationship");
    assert_int_equal(testsuite_audit_count(&g_ts, A_DENIED, PATIENT), denied + 2);
    /* Another tenant: the token's tenant is not the request's; a token of another tenant sees nothing. */
    expect(review(g_clin_tok, "zz-other-tenant", "ref-ckd-1", PATIENT, input, NULL, NULL, &st),
           RPC_PERMISSION_DENIED, &st, "another tenant");
    char *foreign = token("zz-other-tenant", g_clin, "pcp_clinician");
    expect(decide(foreign, "zz-other-tenant", r2->review_id, GE(DECISION_KIND__DECISION_KIND_ACCEPT), 0, NULL,
                  &st),
           RPC_NOT_FOUND, &st, "review of another tenant");
    free(foreign);
    /* A plan reviewer may not review. */
    expect(review(g_plan_tok, NULL, "ref-ckd-1", PATIENT, input, NULL, NULL, &st), RPC_PERMISSION_DENIED, &st,
           "plan reviewer");
    /* Bad requests. */
    expect(review(g_clin_tok, NULL, "bad id!", PATIENT, input, NULL, NULL, &st), RPC_INVALID_ARGUMENT, &st,
           "bad referral id");
    expect(review(g_clin_tok, NULL, "ref-ckd-1", PATIENT, "{\"as_of\": 1}", NULL, NULL, &st),
           RPC_INVALID_ARGUMENT, &st, "bad input");
    expect(decide(g_clin_tok, NULL, r2->review_id, GE(DECISION_KIND__DECISION_KIND_OVERRIDE),
                  GE(OVERRIDE_REASON__OVERRIDE_REASON_DATA_INCOMPLETE), "Synthetic: recent result elsewhere.",
                  &st),
           RPC_OK, &st, "override");
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT), 2);

    /* History: both reviews and both decisions, oldest first; audited as a read. */
    int reads = testsuite_audit_count(&g_ts, A_READ, PATIENT);
    GT(ReferralHistory) *h = history("ref-ckd-1");
    assert_int_equal(h->n_reviews, 2);
    assert_int_equal(h->n_decisions, 2);
    assert_string_equal(h->reviews[0]->review_id, r1->review_id);
    assert_int_equal(h->reviews[0]->recommendation_json.len, r1->recommendation_json.len);
    assert_memory_equal(h->reviews[0]->recommendation_json.data, r1->recommendation_json.data,
                        r1->recommendation_json.len);
    assert_int_equal(h->reviews[0]->n_citations, r1->n_citations);
    assert_string_equal(h->decisions[0]->review_id, r1->review_id);
    assert_int_equal(h->decisions[1]->kind, GE(DECISION_KIND__DECISION_KIND_OVERRIDE));
    assert_string_equal(h->decisions[1]->comment, "Synthetic: recent result elsewhere.");
    free_msg(h);
    assert_int_equal(testsuite_audit_count(&g_ts, A_READ, PATIENT), reads + 1);

    /* Concordance (plan reviewer): the pathway's row. */
    GT(GetConcordanceRequest) creq = ALMA__GUIDELINE__V1__GET_CONCORDANCE_REQUEST__INIT;
    creq.tenant_id = g_ts.tenant;
    ProtobufCMessage *cresp = NULL;
    expect(gcall(GLM("GetConcordance"), &creq.base, &D(concordance_report), g_plan_tok, &cresp, &st), RPC_OK,
           &st, "GetConcordance");
    GT(ConcordanceReport) *rep = (GT(ConcordanceReport) *)cresp;
    bool found = false;
    for (size_t i = 0; i < rep->n_rows; i++) {
        GT(ConcordanceRow) *row = rep->rows[i];
        if (strcmp(row->pathway_id, "ckd-nephrology") != 0 || row->clinician_id[0])
            continue;
        found = true;
        assert_int_equal(row->reviews, 2);
        assert_int_equal(row->refer, 2);
        assert_int_equal(row->decided, 2);
        assert_int_equal(row->accepted, 1);
        assert_int_equal(row->overridden, 1);
        assert_int_equal(row->n_override_reasons, 1);
        assert_string_equal(row->override_reasons[0]->key, "OVERRIDE_REASON_DATA_INCOMPLETE");
        assert_int_equal(row->override_reasons[0]->value, 1);
    }
    assert_true(found);
    free_msg(cresp);
    expect(gcall(GLM("GetConcordance"), &creq.base, &D(concordance_report), g_clin_tok, NULL, &st),
           RPC_PERMISSION_DENIED, &st, "concordance by a clinician");

    /* A restart keeps everything (the bundle is not published twice). */
    restart();
    h = history("ref-ckd-1");
    assert_int_equal(h->n_reviews, 2);
    assert_int_equal(h->n_decisions, 2);
    free_msg(h);
    expect(decide(g_clin_tok, NULL, r1->review_id, GE(DECISION_KIND__DECISION_KIND_ACCEPT), 0, NULL, &st),
           RPC_ALREADY_EXISTS, &st, "decision after restart");
    GT(Review) *r3 = NULL;
    expect(review(g_clin_tok, NULL, "ref-ckd-1", PATIENT, input, NULL, &r3, &st), RPC_OK, &st, "review 3");
    assert_int_equal(r3->recommendation_json.len, r1->recommendation_json.len);
    assert_memory_equal(r3->recommendation_json.data, r1->recommendation_json.data,
                        r1->recommendation_json.len);
    GT(ListBundlesRequest) lreq = ALMA__GUIDELINE__V1__LIST_BUNDLES_REQUEST__INIT;
    ProtobufCMessage *lresp = NULL;
    expect(gcall(GLM("ListBundles"), &lreq.base, &D(list_bundles_response), g_plan_tok, &lresp, &st), RPC_OK,
           &st, "ListBundles");
    GT(ListBundlesResponse) *lb = (GT(ListBundlesResponse) *)lresp;
    assert_int_equal(lb->n_bundles, 1);
    assert_true(lb->bundles[0]->active);
    assert_string_equal(lb->bundles[0]->published_by, "system:guideline");
    assert_true(lb->bundles[0]->n_pathway_ids >= 7);
    free_msg(lresp);
    free_msg(r3);
    free_msg(r1);
    free_msg(r2);
    free(input);
}

/* Publishing v1.0.1 (one threshold changed) as platform_admin; a bad bundle names the rule; what-if reports
 * the one referral whose recommendation changes, without writing reviews. */
static void test_publish_what_if(void **state)
{
    (void)state;
    testsuite_relationship(&g_ts, g_clin, PATIENT2, NULL);
    char *in27 = vignette_input(EGFR_27), *in48 = vignette_input(EGFR_48);
    rpc_status st;
    GT(Review) *ra = NULL, *rb = NULL;
    expect(review(g_clin_tok, NULL, "ref-a", PATIENT, in27, NULL, &ra, &st), RPC_OK, &st, "review a");
    expect(review(g_clin_tok, NULL, "ref-b", PATIENT2, in48, NULL, &rb, &st), RPC_OK, &st, "review b");
    assert_int_equal(ra->outcome, GE(OUTCOME__OUTCOME_REFER));
    assert_int_equal(rb->outcome, GE(OUTCOME__OUTCOME_MANAGE));
    assert_string_equal(rb->rule_id, "default");

    char *text = read_text(BUNDLE_FILE);
    char *v101a = replace_after(text, "\"version\"", "\"1.0.0\"", "\"1.0.1\"");
    char *v101 = replace_after(v101a, "\"id\": \"ckd-egfr-below-30\"", "\"value\": 30", "\"value\": 50");
    char *bad =
        replace_after(v101, "\"id\": \"ckd-egfr-below-30\"", "\"latest\": \"egfr\"", "\"latest\": \"egfrr\"");

    GT(PublishBundleRequest) preq = ALMA__GUIDELINE__V1__PUBLISH_BUNDLE_REQUEST__INIT;
    preq.bundle_json = v101;
    expect(gcall(GLM("PublishBundle"), &preq.base, &D(bundle_info), g_clin_tok, NULL, &st),
           RPC_PERMISSION_DENIED, &st, "publish by a clinician");
    int admin = testsuite_audit_count(&g_ts, A_ADMIN, NULL);
    ProtobufCMessage *presp = NULL;
    expect(gcall(GLM("PublishBundle"), &preq.base, &D(bundle_info), g_admin_tok, &presp, &st), RPC_OK, &st,
           "publish 1.0.1");
    GT(BundleInfo) *info = (GT(BundleInfo) *)presp;
    assert_string_equal(info->bundle->version, "1.0.1");
    assert_false(info->active);
    assert_string_equal(info->published_by, g_ts.admin_id);
    assert_string_not_equal(info->bundle->content_hash, ra->bundle->content_hash);
    free_msg(presp);
    assert_int_equal(testsuite_audit_count(&g_ts, A_ADMIN, NULL), admin + 1);
    preq.bundle_json = bad;
    expect(gcall(GLM("PublishBundle"), &preq.base, &D(bundle_info), g_admin_tok, NULL, &st),
           RPC_INVALID_ARGUMENT, &st, "bad bundle");
    assert_non_null(strstr(st.message, "ckd-egfr-below-30"));
    /* The refused bundle left nothing: still 1.0.0 (active) and 1.0.1 (not active), nothing else. */
    GT(ListBundlesRequest) lreq = ALMA__GUIDELINE__V1__LIST_BUNDLES_REQUEST__INIT;
    ProtobufCMessage *lresp = NULL;
    expect(gcall(GLM("ListBundles"), &lreq.base, &D(list_bundles_response), g_plan_tok, &lresp, &st), RPC_OK,
           &st, "ListBundles after the bad bundle");
    GT(ListBundlesResponse) *lb = (GT(ListBundlesResponse) *)lresp;
    assert_int_equal(lb->n_bundles, 2);
    for (size_t i = 0; i < lb->n_bundles; i++) {
        bool v100 = strcmp(lb->bundles[i]->bundle->version, "1.0.0") == 0;
        assert_true(v100 || strcmp(lb->bundles[i]->bundle->version, "1.0.1") == 0);
        assert_int_equal(lb->bundles[i]->active, v100);
        if (v100)
            assert_string_equal(lb->bundles[i]->bundle->content_hash, ra->bundle->content_hash);
    }
    free_msg(lresp);

    /* What-if against 1.0.1: ref-b changes MANAGE -> REFER; no review written. */
    GT(WhatIfRequest) wreq = ALMA__GUIDELINE__V1__WHAT_IF_REQUEST__INIT;
    GT(BundleRef) to = ALMA__GUIDELINE__V1__BUNDLE_REF__INIT;
    to.bundle_id = "alma-referral-core";
    to.version = "1.0.1";
    wreq.tenant_id = g_ts.tenant;
    wreq.bundle = &to;
    ProtobufCMessage *wresp = NULL;
    expect(gcall(GLM("WhatIf"), &wreq.base, &D(what_if_report), g_plan_tok, &wresp, &st), RPC_OK, &st,
           "WhatIf");
    GT(WhatIfReport) *rep = (GT(WhatIfReport) *)wresp;
    assert_int_equal(rep->compared, 2);
    assert_int_equal(rep->changed, 1);
    assert_int_equal(rep->n_changes, 1);
    assert_string_equal(rep->changes[0]->referral_id, "ref-b");
    assert_string_equal(rep->changes[0]->review_id, rb->review_id);
    assert_int_equal(rep->changes[0]->old_outcome, GE(OUTCOME__OUTCOME_MANAGE));
    assert_int_equal(rep->changes[0]->new_outcome, GE(OUTCOME__OUTCOME_REFER));
    assert_string_equal(rep->changes[0]->old_rule_id, "default");
    assert_string_equal(rep->changes[0]->new_rule_id, "ckd-egfr-below-30");
    assert_int_equal(rep->changes[0]->new_urgency, GE(URGENCY__URGENCY_ROUTINE));
    /* Why: the same pathway; under 1.0.1 the eGFR rule fires with the value it used (48 < 50). */
    assert_string_equal(rep->changes[0]->old_pathway_id, "ckd-nephrology");
    assert_string_equal(rep->changes[0]->new_pathway_id, "ckd-nephrology");
    assert_string_equal(rep->changes[0]->new_error, "");
    assert_true(rep->changes[0]->n_new_fired >= 1);
    assert_string_equal(rep->changes[0]->new_fired[0]->rule_id, "ckd-egfr-below-30");
    assert_non_null(strstr(rep->changes[0]->new_fired[0]->values_json, "48"));
    for (size_t i = 0; i < rep->changes[0]->n_old_fired; i++)
        assert_string_not_equal(rep->changes[0]->old_fired[i]->rule_id, "ckd-egfr-below-30");
    assert_true(strlen(rep->changes[0]->new_explain) > 0);
    assert_non_null(rep->from_bundle);
    assert_string_equal(rep->from_bundle->version, "1.0.0");
    assert_string_equal(rep->to_bundle->version, "1.0.1");
    free_msg(wresp);
    GT(ReferralHistory) *h = history("ref-b");
    assert_int_equal(h->n_reviews, 1);
    free_msg(h);
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT2), 1);

    /* A review against the named new version, and activation makes it the default. */
    GT(Review) *rc = NULL;
    expect(review(g_clin_tok, NULL, "ref-b", PATIENT2, in48, "1.0.1", &rc, &st), RPC_OK, &st, "review 1.0.1");
    assert_int_equal(rc->outcome, GE(OUTCOME__OUTCOME_REFER));
    assert_string_equal(rc->bundle->version, "1.0.1");
    free_msg(rc);

    free(text);
    free(v101a);
    free(v101);
    free(bad);
    free(in27);
    free(in48);
    free_msg(ra);
    free_msg(rb);
}

/* The audit log down: UNAVAILABLE, and nothing stored. */
static void test_audit_down(void **state)
{
    (void)state;
    char *input = vignette_input(EGFR_27);
    rpc_status st;
    testsuite_audit_stop(&g_ts);
    expect(review(g_clin_tok, NULL, "ref-down", PATIENT, input, NULL, NULL, &st), RPC_UNAVAILABLE, &st,
           "review with audit down");
    testsuite_audit_start(&g_ts);
    /* The audit client reconnects on the next call (gRPC backs off for up to a second or so). */
    GT(GetReferralHistoryRequest) req = ALMA__GUIDELINE__V1__GET_REFERRAL_HISTORY_REQUEST__INIT;
    req.tenant_id = g_ts.tenant;
    req.referral_id = "ref-down";
    ProtobufCMessage *resp = NULL;
    rpc_code code = RPC_UNAVAILABLE;
    for (int i = 0; i < 100 && code == RPC_UNAVAILABLE; i++) {
        code = gcall(GLM("GetReferralHistory"), &req.base, &D(referral_history), g_clin_tok, &resp, &st);
        if (code == RPC_UNAVAILABLE)
            testproc_sleep_ms(100);
    }
    expect(code, RPC_OK, &st, "history after the audit log is back");
    assert_int_equal(((GT(ReferralHistory) *)resp)->n_reviews, 0);
    free_msg(resp);
    /* Back up: a review works again. */
    expect(review(g_clin_tok, NULL, "ref-down", PATIENT, input, NULL, NULL, &st), RPC_OK, &st,
           "review after the audit log is back");
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, PATIENT), 1);
    free(input);
}

/* from_vault: the patient's demographics, problems and observations read from a real alma-vault under
 * TREATMENT with the clinician's own token. Without vault-addr: UNIMPLEMENTED. */
static void test_from_vault(void **state)
{
    (void)state;
    rpc_status st;
    GT(ReviewReferralRequest) req = ALMA__GUIDELINE__V1__REVIEW_REFERRAL_REQUEST__INIT;
    req.tenant_id = g_ts.tenant;
    req.referral_id = "ref-vault";
    req.patient_ref = PATIENT;
    req.specialty = "nephrology";
    char *codes[] = {"N18.31"};
    req.reason_codes = codes;
    req.n_reason_codes = 1;
    req.data_case = GE(REVIEW_REFERRAL_REQUEST__DATA_FROM_VAULT);
    req.from_vault = true;
    expect(gcall(GLM("ReviewReferral"), &req.base, &D(review), g_clin_tok, NULL, &st), RPC_UNIMPLEMENTED, &st,
           "from_vault without vault-addr");

    vaultd v;
    vaultd_start(&v, &g_ts, "gsvcd");
    snprintf(g_vault_addr, sizeof g_vault_addr, "%s", v.d.api_addr);
    restart();

    /* A synthetic patient in the vault, with CKD and an eGFR of 27. */
    rpc_client_tls tls = testrpc_client_tls("test-client");
    rpc_channel *vch = NULL;
    MUST(rpc_channel_open(v.d.api_addr, &tls, &vch));
    rpc_call_opts o = {.timeout_ms = 20000, .authorization = g_clin_tok};
    Alma__Vault__V1__Demographics dem = ALMA__VAULT__V1__DEMOGRAPHICS__INIT;
    char *given[] = {"Testa"};
    dem.family_name = "Synthetica";
    dem.given_names = given;
    dem.n_given_names = 1;
    dem.birth_date = "1959-04-17";
    dem.sex = ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_FEMALE;
    Alma__Vault__V1__Patient pat = ALMA__VAULT__V1__PATIENT__INIT;
    pat.demographics = &dem;
    Alma__Vault__V1__Identifiers ids = ALMA__VAULT__V1__IDENTIFIERS__INIT;
    ids.mrn = "MRN-000959";
    pat.identifiers = &ids;
    Alma__Vault__V1__CreatePatientRequest creq = ALMA__VAULT__V1__CREATE_PATIENT_REQUEST__INIT;
    creq.tenant_id = g_ts.tenant;
    creq.patient = &pat;
    ProtobufCMessage *cresp = NULL;
    expect(rpc_call_unary(vch, "/alma.vault.v1.Vault/CreatePatient", &creq.base,
                          &alma__vault__v1__create_patient_response__descriptor, &o, &cresp, &st),
           RPC_OK, &st, "CreatePatient");
    char ref[64];
    snprintf(ref, sizeof ref, "%s", ((Alma__Vault__V1__CreatePatientResponse *)cresp)->patient_ref);
    protobuf_c_message_free_unpacked(cresp, NULL);
    testsuite_relationship(&g_ts, g_clin, ref, NULL);

    Alma__Vault__V1__Code icd = ALMA__VAULT__V1__CODE__INIT;
    icd.system = "http://hl7.org/fhir/sid/icd-10-cm";
    icd.code = "N18.31";
    Alma__Vault__V1__Problem prob = ALMA__VAULT__V1__PROBLEM__INIT;
    prob.code = &icd;
    prob.status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE;
    Alma__Vault__V1__Code egfr = ALMA__VAULT__V1__CODE__INIT;
    egfr.system = "http://loinc.org";
    egfr.code = "33914-3";
    Alma__Vault__V1__Observation obs = ALMA__VAULT__V1__OBSERVATION__INIT;
    obs.code = &egfr;
    obs.value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY;
    obs.quantity = 27;
    obs.unit = "mL/min/{1.73_m2}";
    char obs_date[16]; /* 30 days before today: the service reads the vault as of today */
    time_t then = time(NULL) - 30 * 86400;
    struct tm tm;
    gmtime_r(&then, &tm);
    strftime(obs_date, sizeof obs_date, "%Y-%m-%d", &tm);
    obs.effective_date = obs_date;
    Alma__Vault__V1__Item items[2] = {ALMA__VAULT__V1__ITEM__INIT, ALMA__VAULT__V1__ITEM__INIT};
    items[0].body_case = ALMA__VAULT__V1__ITEM__BODY_PROBLEM;
    items[0].problem = &prob;
    items[1].body_case = ALMA__VAULT__V1__ITEM__BODY_OBSERVATION;
    items[1].observation = &obs;
    for (int i = 0; i < 2; i++) {
        Alma__Vault__V1__PutItemRequest preq = ALMA__VAULT__V1__PUT_ITEM_REQUEST__INIT;
        preq.tenant_id = g_ts.tenant;
        preq.patient_ref = ref;
        preq.item = &items[i];
        expect(rpc_call_unary(vch, "/alma.vault.v1.Vault/PutItem", &preq.base,
                              &alma__vault__v1__put_item_response__descriptor, &o, &cresp, &st),
               RPC_OK, &st, "PutItem");
        protobuf_c_message_free_unpacked(cresp, NULL);
    }

    req.patient_ref = ref;
    ProtobufCMessage *resp = NULL;
    expect(gcall(GLM("ReviewReferral"), &req.base, &D(review), g_clin_tok, &resp, &st), RPC_OK, &st,
           "from_vault");
    GT(Review) *rv = (GT(Review) *)resp;
    assert_int_equal(rv->outcome, GE(OUTCOME__OUTCOME_REFER));
    assert_string_equal(rv->rule_id, "ckd-egfr-below-30");
    free_msg(resp);
    assert_int_equal(testsuite_audit_count(&g_ts, A_RECOMMEND, ref), 1);
    /* No relationship: the guideline service refuses before asking the vault. */
    expect(gcall(GLM("ReviewReferral"), &req.base, &D(review), g_other_tok, NULL, &st), RPC_PERMISSION_DENIED,
           &st, "from_vault without relationship");

    rpc_channel_close(vch);
    assert_true(vaultd_stop(&v, &g_ts));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_review_decide_history, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_publish_what_if, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_audit_down, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_from_vault, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
