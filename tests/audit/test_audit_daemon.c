/* The real alma-audit binary over mTLS against the harness PostgreSQL: appends and their proofs against
 * signed checkpoints, bad input storing nothing, who may call what, the runtime role's rights, tamper and
 * gap detection by VerifyLog, queries and tenant isolation, exports verified offline (in-process and by
 * `alma-audit verify`), the accounting of disclosures, and a SIGKILL in the middle of a load.
 *
 * Each test gets its own schema; the service runs as a runtime role that the owner role (which migrates)
 * grants INSERT and SELECT only, as in production. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "audit/v1/audit.pb-c.h"
#include "checkpoint.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "auditclient.h"
#include "authz/authz.h"
#include "export_file.h"
#include "merkle.h"
#include "rpc/rpc.h"
#include "testdb.h"
#include "testenv.h"
#include "testrpc.h"
#include "testproc.h"
#include "verify_tool.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define M(name)    "/alma.audit.v1.Audit/" name
#define ORIGIN     "alma.test/audit"
#define PASSWORD   "test-password-0123456789abcdef"
#define PT_1       "pt_11111111111111111111111111111111"
#define PT_2       "pt_22222222222222222222222222222222"
#define FAKE_NAME  "Jane Q Testpatient"
#define OWNER_ROLE "alma_test_audit_owner"
#define APP_ROLE   "alma_test_audit_app"

static char g_pg_uri[512];
static char g_owner[64], g_app[64];
static char g_owner_uri[512], g_app_uri[512];
static db_pool *g_root;
static int g_nschema;

/* Per test. */
static char g_schema[64];
static char g_key_path[TESTPROC_PATH_MAX];
static char *g_vkey;
static testproc_daemon g_d;
static db_pool *g_admin; /* superuser, search_path = the test's schema */

/* ---- Database --------------------------------------------------------------------------------------- */

static void root_exec(const char *sql)
{
    db_conn *c = NULL;
    MUST(db_pool_acquire(g_root, 5000, &c));
    MUST(db_exec(c, sql, 0, NULL, NULL));
    db_conn_release(c);
}

static int64_t admin_int(const char *sql)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    MUST(db_pool_acquire(g_admin, 5000, &c));
    MUST(db_exec(c, sql, 0, NULL, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

static base_result admin_exec(const char *sql, int n, const char *const *p)
{
    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(g_admin, 5000, &c));
    base_result r = db_exec(c, sql, n, p, NULL);
    db_conn_release(c);
    return r;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_pg_uri, sizeof g_pg_uri, "%s", testenv_pg_uri());
    db_pool_config cfg = db_pool_config_default(g_pg_uri, 2, 3000);
    if (!base_is_ok(db_pool_create_config(&cfg, &g_root)))
        return -1;
    /* The harness Postgres belongs to this build tree alone, so fixed role names cannot collide. */
    snprintf(g_owner, sizeof g_owner, "%s", OWNER_ROLE);
    snprintf(g_app, sizeof g_app, "%s", APP_ROLE);
    root_exec("DO $$ BEGIN "
              "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" OWNER_ROLE "') THEN "
              "CREATE ROLE " OWNER_ROLE " LOGIN PASSWORD '" PASSWORD "'; END IF; "
              "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" APP_ROLE "') THEN "
              "CREATE ROLE " APP_ROLE " LOGIN PASSWORD '" PASSWORD "'; END IF; END $$");
    root_exec("GRANT CREATE ON DATABASE postgres TO " OWNER_ROLE);
    /* The harness URI is postgresql://postgres@HOST:PORT/postgres: same server, other roles. */
    const char *at = strchr(g_pg_uri, '@');
    assert_non_null(at);
    snprintf(g_owner_uri, sizeof g_owner_uri, "postgresql://%s:%s%s", g_owner, PASSWORD, at);
    snprintf(g_app_uri, sizeof g_app_uri, "postgresql://%s:%s%s", g_app, PASSWORD, at);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    root_exec("DROP OWNED BY " OWNER_ROLE ", " APP_ROLE " CASCADE");
    root_exec("DROP ROLE IF EXISTS " OWNER_ROLE ", " APP_ROLE);
    db_pool_destroy(g_root);
    return 0;
}

/* ---- The daemon ------------------------------------------------------------------------------------- */

static const char *audit_binary(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s", testenv_binary_path("services/audit/alma-audit"));
    return path;
}

static void write_key(void)
{
    acrypto_ed25519_key *key = NULL;
    MUST(acrypto_ed25519_generate(&key));
    acrypto_secret *pem = NULL;
    MUST(acrypto_ed25519_private_to_pem(key, &pem));
    snprintf(g_key_path, sizeof g_key_path, "%s", testproc_work_path("signing-key.pem"));
    FILE *f = fopen(g_key_path, "w");
    assert_non_null(f);
    size_t pem_len = acrypto_secret_len(pem);
    assert_int_equal(fwrite(acrypto_secret_bytes(pem), 1, pem_len, f), pem_len);
    assert_int_equal(fclose(f), 0);
    acrypto_secret_free(pem);
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    MUST(acrypto_ed25519_public_raw(key, pub));
    size_t vlen = 0;
    MUST(audit_note_vkey_format(ORIGIN, pub, &g_vkey, &vlen));
    acrypto_ed25519_free(key);
}

static int test_setup(void **state)
{
    if (testproc_setup(state) != 0)
        return -1;
    snprintf(g_schema, sizeof g_schema, "aud_%d_%d", (int)getpid(), g_nschema++);
    write_key();
    static char env_pg[600], env_owner[600], env_schema[100], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", g_app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", g_owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", g_schema);
    snprintf(env_key, sizeof env_key, "ALMA_SIGNING_KEY=%s", g_key_path);
    const char *env[] = {env_pg, env_owner, env_schema, env_key, NULL};
    const char *args[] = {"--origin", ORIGIN, "--checkpoint-interval-ms", "50", NULL};
    testproc_daemon_init(&g_d, audit_binary(), "audit", args, env);
    testproc_daemon_start(&g_d);
    g_admin = testdb_pool(g_pg_uri, g_schema, 2);
    return 0;
}

static int test_teardown(void **state)
{
    if (g_d.pid)
        testproc_daemon_stop(&g_d);
    db_pool_destroy(g_admin);
    g_admin = NULL;
    testdb_drop_schema(g_root, g_schema);
    free(g_vkey);
    g_vkey = NULL;
    return testproc_teardown(state);
}

/* ---- Calls ------------------------------------------------------------------------------------------ */

static rpc_channel *channel(const char *client)
{
    rpc_client_tls tls = testrpc_client_tls(client);
    rpc_channel *ch = NULL;
    MUST(rpc_channel_open(g_d.api_addr, &tls, &ch));
    return ch;
}

static rpc_code call(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, rpc_status *st)
{
    rpc_call_opts o = {.timeout_ms = 20000};
    rpc_status local;
    return rpc_call_unary(ch, method, req, desc, &o, resp, st ? st : &local);
}

/* An event with static strings; callers change fields. */
typedef struct ev_holder {
    Alma__Audit__V1__EventInput ev;
    Alma__Audit__V1__Actor actor;
    Alma__Audit__V1__Recipient recipient;
    char *roles[1];
} ev_holder;

static void ev_init(ev_holder *h, const char *tenant, Alma__Audit__V1__Action action, const char *patient)
{
    memset(h, 0, sizeof *h);
    alma__audit__v1__event_input__init(&h->ev);
    alma__audit__v1__actor__init(&h->actor);
    alma__audit__v1__recipient__init(&h->recipient);
    h->actor.principal_id = (char *)"usr_clinician_1";
    h->roles[0] = (char *)"pcp";
    h->actor.roles = h->roles;
    h->actor.n_roles = 1;
    h->ev.tenant_id = (char *)tenant;
    h->ev.actor = &h->actor;
    h->ev.action = action;
    h->ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT;
    h->ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    h->ev.severity = ALMA__AUDIT__V1__SEVERITY__SEVERITY_INFO;
    h->ev.patient_ref = (char *)(patient ? patient : "");
    h->ev.resource_type = (char *)"Patient";
    h->ev.resource_id = (char *)"rec_1";
}

static void ev_disclose(ev_holder *h, const char *recipient, Alma__Audit__V1__DisclosureBasis basis)
{
    h->ev.action = ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE;
    h->recipient.name = (char *)recipient;
    h->recipient.address = (char *)"1 Registry Way, Springfield";
    h->ev.recipient = &h->recipient;
    h->ev.basis = basis;
    h->ev.phi_description = (char *)"problem list and lab results";
    h->ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PUBLIC_HEALTH;
}

static rpc_code append(rpc_channel *ch, ev_holder *h, Alma__Audit__V1__AppendEventResponse **ret,
                       rpc_status *st)
{
    Alma__Audit__V1__AppendEventRequest req = ALMA__AUDIT__V1__APPEND_EVENT_REQUEST__INIT;
    req.event = &h->ev;
    ProtobufCMessage *resp = NULL;
    rpc_code code =
        call(ch, M("AppendEvent"), &req.base, &alma__audit__v1__append_event_response__descriptor, &resp, st);
    if (code == RPC_OK && ret)
        *ret = (Alma__Audit__V1__AppendEventResponse *)resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

static uint64_t append_ok(rpc_channel *ch, ev_holder *h, uint8_t leaf[32])
{
    Alma__Audit__V1__AppendEventResponse *r = NULL;
    rpc_status st;
    rpc_code code = append(ch, h, &r, &st);
    if (code != RPC_OK)
        fail_msg("AppendEvent: %s: %s", rpc_code_name(code), st.message);
    assert_int_equal(r->leaf_hash.len, 32);
    if (leaf)
        memcpy(leaf, r->leaf_hash.data, 32);
    uint64_t seq = r->sequence;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return seq;
}

static Alma__Audit__V1__Checkpoint *checkpoint(rpc_channel *ch)
{
    Alma__Audit__V1__GetCheckpointRequest req = ALMA__AUDIT__V1__GET_CHECKPOINT_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code =
        call(ch, M("GetCheckpoint"), &req.base, &alma__audit__v1__checkpoint__descriptor, &resp, &st);
    if (code != RPC_OK)
        fail_msg("GetCheckpoint: %s: %s", rpc_code_name(code), st.message);
    Alma__Audit__V1__Checkpoint *ck = (Alma__Audit__V1__Checkpoint *)resp;
    /* The note verifies with the key we gave the service, and says what the fields say. */
    audit_checkpoint *opened = NULL;
    MUST(audit_checkpoint_open_vkey(ck->signed_note, strlen(ck->signed_note), g_vkey, ORIGIN, &opened));
    audit_checkpoint_freep(&opened);
    assert_string_equal(ck->verifier_key, g_vkey);
    assert_int_equal(ck->root_hash.len, 32);
    return ck;
}

/* A checkpoint of at least `size` leaves (they are signed at most every 50 ms). */
static Alma__Audit__V1__Checkpoint *checkpoint_at_least(rpc_channel *ch, uint64_t size)
{
    for (int i = 0; i < 200; i++) {
        Alma__Audit__V1__Checkpoint *ck = checkpoint(ch);
        if (ck->tree_size >= size)
            return ck;
        protobuf_c_message_free_unpacked(&ck->base, NULL);
        testproc_sleep_ms(20);
    }
    fail_msg("no checkpoint of %" PRIu64 " leaves", size);
    return NULL;
}

static void expect_included(rpc_channel *ch, uint64_t seq, const uint8_t leaf[32],
                            const Alma__Audit__V1__Checkpoint *ck)
{
    Alma__Audit__V1__GetInclusionProofRequest req = ALMA__AUDIT__V1__GET_INCLUSION_PROOF_REQUEST__INIT;
    req.sequence = seq;
    req.tree_size = ck->tree_size;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(call(ch, M("GetInclusionProof"), &req.base,
                          &alma__audit__v1__inclusion_proof__descriptor, &resp, NULL),
                     RPC_OK);
    Alma__Audit__V1__InclusionProof *p = (Alma__Audit__V1__InclusionProof *)resp;
    uint8_t hashes[AUDIT_MERKLE_MAX_PROOF][32];
    assert_true(p->n_hashes <= AUDIT_MERKLE_MAX_PROOF);
    for (size_t i = 0; i < p->n_hashes; i++) {
        assert_int_equal(p->hashes[i].len, 32);
        memcpy(hashes[i], p->hashes[i].data, 32);
    }
    MUST(audit_merkle_verify_inclusion(seq, ck->tree_size, leaf, (const uint8_t(*)[32])hashes, p->n_hashes,
                                       ck->root_hash.data));
    protobuf_c_message_free_unpacked(resp, NULL);
}

static Alma__Audit__V1__VerifyLogResponse *verify_log(rpc_channel *ch)
{
    Alma__Audit__V1__VerifyLogRequest req = ALMA__AUDIT__V1__VERIFY_LOG_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code =
        call(ch, M("VerifyLog"), &req.base, &alma__audit__v1__verify_log_response__descriptor, &resp, &st);
    if (code != RPC_OK)
        fail_msg("VerifyLog: %s: %s", rpc_code_name(code), st.message);
    return (Alma__Audit__V1__VerifyLogResponse *)resp;
}

/* ---- Tests ------------------------------------------------------------------------------------------ */

static void test_append_checkpoint_and_proofs(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    enum { N = 40 };
    uint8_t leaves[N + 5][32];
    uint64_t seqs[N + 5];
    ev_holder h;
    for (int i = 0; i < N; i++) {
        ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, i % 2 ? PT_1 : NULL);
        seqs[i] = append_ok(ch, &h, leaves[i]);
        assert_int_equal(seqs[i], (uint64_t)i);
    }
    Alma__Audit__V1__Checkpoint *first = checkpoint_at_least(ch, N);

    /* A batch: atomic, in order, consecutive. */
    ev_holder hs[5];
    Alma__Audit__V1__EventInput *evs[5];
    for (int i = 0; i < 5; i++) {
        ev_init(&hs[i], "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_UPDATE, PT_2);
        evs[i] = &hs[i].ev;
    }
    Alma__Audit__V1__AppendEventsRequest breq = ALMA__AUDIT__V1__APPEND_EVENTS_REQUEST__INIT;
    breq.events = evs;
    breq.n_events = 5;
    ProtobufCMessage *bresp = NULL;
    assert_int_equal(call(ch, M("AppendEvents"), &breq.base,
                          &alma__audit__v1__append_events_response__descriptor, &bresp, NULL),
                     RPC_OK);
    Alma__Audit__V1__AppendEventsResponse *br = (Alma__Audit__V1__AppendEventsResponse *)bresp;
    assert_int_equal(br->n_results, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(br->results[i]->sequence, first->tree_size + (uint64_t)i);
        seqs[N + i] = br->results[i]->sequence;
        memcpy(leaves[N + i], br->results[i]->leaf_hash.data, 32);
    }
    protobuf_c_message_free_unpacked(bresp, NULL);

    Alma__Audit__V1__Checkpoint *second = checkpoint_at_least(ch, first->tree_size + 5);
    for (int i = 0; i < N + 5; i++)
        expect_included(ch, seqs[i], leaves[i], second);
    for (int i = 0; i < N; i += 7)
        expect_included(ch, seqs[i], leaves[i], first);

    /* The second checkpoint extends the first. */
    Alma__Audit__V1__GetConsistencyProofRequest creq = ALMA__AUDIT__V1__GET_CONSISTENCY_PROOF_REQUEST__INIT;
    creq.first_size = first->tree_size;
    creq.second_size = second->tree_size;
    ProtobufCMessage *cresp = NULL;
    assert_int_equal(call(ch, M("GetConsistencyProof"), &creq.base,
                          &alma__audit__v1__consistency_proof__descriptor, &cresp, NULL),
                     RPC_OK);
    Alma__Audit__V1__ConsistencyProof *cp = (Alma__Audit__V1__ConsistencyProof *)cresp;
    uint8_t hashes[AUDIT_MERKLE_MAX_PROOF][32];
    for (size_t i = 0; i < cp->n_hashes; i++)
        memcpy(hashes[i], cp->hashes[i].data, 32);
    MUST(audit_merkle_verify_consistency(first->tree_size, second->tree_size, first->root_hash.data,
                                         second->root_hash.data, (const uint8_t(*)[32])hashes, cp->n_hashes));
    protobuf_c_message_free_unpacked(cresp, NULL);

    /* Proofs for trees the log does not have yet, or nonsense sizes. */
    Alma__Audit__V1__GetInclusionProofRequest ireq = ALMA__AUDIT__V1__GET_INCLUSION_PROOF_REQUEST__INIT;
    ireq.sequence = 0;
    ireq.tree_size = 1000000;
    ProtobufCMessage *none = NULL;
    assert_int_equal(call(ch, M("GetInclusionProof"), &ireq.base,
                          &alma__audit__v1__inclusion_proof__descriptor, &none, NULL),
                     RPC_OUT_OF_RANGE);
    ireq.sequence = 5;
    ireq.tree_size = 5;
    assert_int_equal(call(ch, M("GetInclusionProof"), &ireq.base,
                          &alma__audit__v1__inclusion_proof__descriptor, &none, NULL),
                     RPC_INVALID_ARGUMENT);

    /* The rows hold what the service said, and the caller's mTLS identity is in each entry. */
    assert_int_equal(admin_int("SELECT count(*) FROM events"), N + 5);
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE position('\"service_identity\":\"spiffe://"
                               "alma.local/ns/alma/sa/test-client\"' in convert_from(entry, 'UTF8')) > 0"),
                     N + 5);
    protobuf_c_message_free_unpacked(&first->base, NULL);
    protobuf_c_message_free_unpacked(&second->base, NULL);
    rpc_channel_close(ch);
}

static void expect_rejected(rpc_channel *ch, ev_holder *h, const char *needle)
{
    rpc_status st;
    rpc_code code = append(ch, h, NULL, &st);
    assert_int_equal(code, RPC_INVALID_ARGUMENT);
    if (needle && !strstr(st.message, needle))
        fail_msg("message \"%s\" does not mention \"%s\"", st.message, needle);
    /* The message never echoes the value. */
    assert_null(strstr(st.message, FAKE_NAME));
}

static void test_bad_events_store_nothing(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    ev_holder h;
    ev_init(&h, "", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    expect_rejected(ch, &h, "tenant_id");
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, FAKE_NAME); /* PHI where a pt_ ref goes */
    expect_rejected(ch, &h, "patient_ref");
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_UNSPECIFIED, PT_1);
    expect_rejected(ch, &h, "action");
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    h.ev.action = (Alma__Audit__V1__Action)99;
    expect_rejected(ch, &h, "action");
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE, PT_1);
    expect_rejected(ch, &h, "recipient");
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_RECOMMEND, PT_1);
    expect_rejected(ch, &h, "guideline");
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    h.ev.actor = NULL;
    expect_rejected(ch, &h, "actor");
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    h.ev.tenant_id = big;
    expect_rejected(ch, &h, "tenant_id");
    /* Invalid UTF-8 is refused by the runtime's wire check before the handler sees it. */
    ev_init(&h, "tenant-\xff", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    expect_rejected(ch, &h, NULL);

    /* One bad event in a batch rejects the whole batch and names it. */
    ev_holder hs[3];
    Alma__Audit__V1__EventInput *evs[3];
    for (int i = 0; i < 3; i++) {
        ev_init(&hs[i], "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
        evs[i] = &hs[i].ev;
    }
    hs[1].ev.patient_ref = (char *)FAKE_NAME;
    Alma__Audit__V1__AppendEventsRequest breq = ALMA__AUDIT__V1__APPEND_EVENTS_REQUEST__INIT;
    breq.events = evs;
    breq.n_events = 3;
    ProtobufCMessage *none = NULL;
    rpc_status st;
    assert_int_equal(call(ch, M("AppendEvents"), &breq.base,
                          &alma__audit__v1__append_events_response__descriptor, &none, &st),
                     RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "events[1]"));
    assert_null(strstr(st.message, FAKE_NAME));
    breq.n_events = 0;
    assert_int_equal(call(ch, M("AppendEvents"), &breq.base,
                          &alma__audit__v1__append_events_response__descriptor, &none, &st),
                     RPC_INVALID_ARGUMENT);

    /* Nothing of it was stored, and the log did not log the value either. */
    assert_int_equal(admin_int("SELECT count(*) FROM events"), 0);
    char *log = testproc_daemon_log(&g_d);
    assert_null(strstr(log, FAKE_NAME));
    free(log);
    rpc_channel_close(ch);
}

static void test_who_may_call(void **state)
{
    (void)state;
    ev_holder h;
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    rpc_channel *intruder = channel("intruder");
    rpc_channel *cli = channel("alma-cli");
    rpc_channel *tc = channel("test-client");
    assert_int_equal(append(intruder, &h, NULL, NULL), RPC_PERMISSION_DENIED);
    assert_int_equal(append(cli, &h, NULL, NULL), RPC_PERMISSION_DENIED); /* operators read, never write */
    append_ok(tc, &h, NULL);
    /* Checkpoints hold hashes only: any peer of the trust domain may read them. */
    Alma__Audit__V1__Checkpoint *ck = checkpoint_at_least(intruder, 1);
    protobuf_c_message_free_unpacked(&ck->base, NULL);
    /* Queries are for readers only. */
    Alma__Audit__V1__EventFilter f = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    f.tenant_id = (char *)"tenant-a";
    Alma__Audit__V1__ListEventsRequest lreq = ALMA__AUDIT__V1__LIST_EVENTS_REQUEST__INIT;
    lreq.filter = &f;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(call(intruder, M("ListEvents"), &lreq.base,
                          &alma__audit__v1__list_events_response__descriptor, &resp, NULL),
                     RPC_PERMISSION_DENIED);
    assert_int_equal(call(cli, M("ListEvents"), &lreq.base,
                          &alma__audit__v1__list_events_response__descriptor, &resp, NULL),
                     RPC_OK);
    protobuf_c_message_free_unpacked(resp, NULL);
    Alma__Audit__V1__VerifyLogRequest vreq = ALMA__AUDIT__V1__VERIFY_LOG_REQUEST__INIT;
    assert_int_equal(call(intruder, M("VerifyLog"), &vreq.base,
                          &alma__audit__v1__verify_log_response__descriptor, &resp, NULL),
                     RPC_PERMISSION_DENIED);
    /* A certificate from another CA does not even get a connection. */
    rpc_client_tls rogue = testrpc_client_tls("rogue-client");
    rpc_channel *rch = NULL;
    MUST(rpc_channel_open(g_d.api_addr, &rogue, &rch));
    assert_int_equal(append(rch, &h, NULL, NULL), RPC_UNAVAILABLE);
    rpc_channel_close(rch);
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE action = 2"), 1);
    rpc_channel_close(intruder);
    rpc_channel_close(cli);
    rpc_channel_close(tc);
}

static void test_runtime_role_is_append_only(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    ev_holder h;
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    append_ok(ch, &h, NULL);
    rpc_channel_close(ch);
    /* The role the service runs as may INSERT and SELECT, nothing else. */
    const char *privs[] = {"INSERT", "SELECT", "UPDATE", "DELETE", "TRUNCATE"};
    const char *tables[] = {"events", "checkpoints", "subtrees"};
    for (size_t t = 0; t < 3; t++) {
        for (size_t p = 0; p < 5; p++) {
            char table[160];
            snprintf(table, sizeof table, "%s.%s", g_schema, tables[t]);
            const char *params[] = {g_app, table, privs[p]};
            db_conn *c = NULL;
            db_result *res = NULL;
            MUST(db_pool_acquire(g_admin, 5000, &c));
            MUST(db_exec(c, "SELECT has_table_privilege($1, $2, $3)::int", 3, params, &res));
            assert_string_equal(db_result_get(res, 0, 0), p < 2 ? "1" : "0");
            db_result_free(res);
            db_conn_release(c);
        }
    }
    /* And it really cannot: as that role, UPDATE and DELETE fail on permissions. */
    db_pool *app = testdb_pool(g_app_uri, g_schema, 2);
    db_conn *c = NULL;
    MUST(db_pool_acquire(app, 5000, &c));
    assert_int_equal(db_exec(c, "UPDATE events SET tenant_id = 'x'", 0, NULL, NULL).err, BASE_ERR_DENIED);
    assert_int_equal(db_exec(c, "DELETE FROM events", 0, NULL, NULL).err, BASE_ERR_DENIED);
    assert_int_equal(db_exec(c, "TRUNCATE events", 0, NULL, NULL).err, BASE_ERR_DENIED);
    db_conn_release(c);
    db_pool_destroy(app);
    /* Even the superuser is refused by the triggers (only disabling them gets past: VerifyLog's job). */
    assert_int_equal(admin_exec("UPDATE events SET tenant_id = 'x'", 0, NULL).err, BASE_ERR_DENIED);
    assert_int_equal(admin_exec("DELETE FROM checkpoints", 0, NULL).err, BASE_ERR_DENIED);
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE tenant_id = 'tenant-a'"), 1);
}

static void test_verify_finds_tamper_and_gap(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    ev_holder h;
    for (int i = 0; i < 30; i++) {
        ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
        append_ok(ch, &h, NULL);
    }
    Alma__Audit__V1__Checkpoint *ck = checkpoint_at_least(ch, 30);
    protobuf_c_message_free_unpacked(&ck->base, NULL);
    rpc_channel *op = channel("alma-cli");
    Alma__Audit__V1__VerifyLogResponse *v = verify_log(op);
    assert_true(v->ok);
    assert_int_equal(v->verified_through, 30);
    protobuf_c_message_free_unpacked(&v->base, NULL);

    /* A superuser rewrites event 17 (the triggers have to be disabled to do it). */
    MUST(admin_exec("ALTER TABLE events DISABLE TRIGGER events_append_only", 0, NULL));
    MUST(admin_exec("CREATE TABLE saved AS SELECT * FROM events WHERE seq = 17", 0, NULL));
    MUST(admin_exec("UPDATE events SET entry = convert_to(replace(convert_from(entry, 'UTF8'), "
                    "'ACTION_READ', 'ACTION_LOGIN'), 'UTF8') WHERE seq = 17",
                    0, NULL));
    v = verify_log(op);
    assert_false(v->ok);
    assert_int_equal(v->first_bad_sequence, 17);
    assert_non_null(strstr(v->problem, "leaf"));
    protobuf_c_message_free_unpacked(&v->base, NULL);

    /* A careful one rewrites the leaf hash too: the signed checkpoint's root gives it away. */
    MUST(admin_exec("UPDATE events SET leaf_hash = sha256('\\x00'::bytea || entry) WHERE seq = 17", 0, NULL));
    v = verify_log(op);
    assert_false(v->ok);
    assert_non_null(strstr(v->problem, "root"));
    protobuf_c_message_free_unpacked(&v->base, NULL);

    /* Put it back: clean again. Then delete event 23: the gap is found at 23. */
    MUST(admin_exec("UPDATE events e SET entry = s.entry, leaf_hash = s.leaf_hash FROM saved s "
                    "WHERE e.seq = s.seq",
                    0, NULL));
    v = verify_log(op);
    assert_true(v->ok);
    protobuf_c_message_free_unpacked(&v->base, NULL);
    MUST(admin_exec("DELETE FROM events WHERE seq = 23", 0, NULL));
    v = verify_log(op);
    assert_false(v->ok);
    assert_int_equal(v->first_bad_sequence, 23);
    assert_non_null(strstr(v->problem, "gap"));
    protobuf_c_message_free_unpacked(&v->base, NULL);
    MUST(admin_exec("ALTER TABLE events ENABLE TRIGGER events_append_only", 0, NULL));
    char *log = testproc_daemon_log(&g_d);
    assert_non_null(strstr(log, "audit log verification failed"));
    free(log);
    rpc_channel_close(op);
    rpc_channel_close(ch);
}

/* ---- Queries ---- */

static Alma__Audit__V1__ListEventsResponse *list(rpc_channel *ch, const Alma__Audit__V1__EventFilter *f,
                                                 int page_size, const char *token, rpc_code want)
{
    Alma__Audit__V1__ListEventsRequest req = ALMA__AUDIT__V1__LIST_EVENTS_REQUEST__INIT;
    req.filter = (Alma__Audit__V1__EventFilter *)f;
    req.page_size = page_size;
    req.page_token = (char *)(token ? token : "");
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code =
        call(ch, M("ListEvents"), &req.base, &alma__audit__v1__list_events_response__descriptor, &resp, &st);
    if (code != want)
        fail_msg("ListEvents: %s: %s", rpc_code_name(code), st.message);
    return (Alma__Audit__V1__ListEventsResponse *)resp;
}

static void test_query_pages_and_tenant_isolation(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    ev_holder h;
    for (int i = 0; i < 12; i++) {
        ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, i % 3 ? PT_1 : PT_2);
        append_ok(ch, &h, NULL);
        ev_init(&h, "tenant-b", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
        append_ok(ch, &h, NULL);
    }
    Alma__Audit__V1__EventFilter f = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    f.tenant_id = (char *)"tenant-a";
    f.action = ALMA__AUDIT__V1__ACTION__ACTION_READ;
    /* Pages of 5 with the cursor: 5 + 5 + 2, every event once, in order, each decoded from the stored entry.
     */
    char token[64] = "";
    int total = 0, pages = 0;
    uint64_t last = 0;
    do {
        Alma__Audit__V1__ListEventsResponse *r = list(ch, &f, 5, token, RPC_OK);
        for (size_t i = 0; i < r->n_events; i++) {
            Alma__Audit__V1__Event *e = r->events[i];
            assert_string_equal(e->input->tenant_id, "tenant-a");
            assert_int_equal(e->input->action, ALMA__AUDIT__V1__ACTION__ACTION_READ);
            assert_string_equal(e->input->actor->principal_id, "usr_clinician_1");
            assert_string_equal(e->input->actor->roles[0], "pcp");
            assert_string_equal(e->input->actor->service_identity,
                                "spiffe://alma.local/ns/alma/sa/test-client");
            assert_string_equal(e->input->resource_type, "Patient");
            assert_int_equal(e->leaf_hash.len, 32);
            assert_non_null(e->time);
            if (total > 0)
                assert_true(e->sequence > last);
            last = e->sequence;
            total++;
        }
        snprintf(token, sizeof token, "%s", r->next_page_token);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        pages++;
    } while (token[0]);
    assert_int_equal(total, 12);
    assert_int_equal(pages, 3);

    /* Filters: tenant-a's PT_2 events are 4; tenant-b has PT_1 events, but never shows them to tenant-a. */
    f.patient_ref = (char *)PT_2;
    Alma__Audit__V1__ListEventsResponse *r = list(ch, &f, 100, NULL, RPC_OK);
    assert_int_equal(r->n_events, 4);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    Alma__Audit__V1__EventFilter fb = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    fb.tenant_id = (char *)"tenant-b";
    fb.patient_ref = (char *)PT_2;
    fb.action = ALMA__AUDIT__V1__ACTION__ACTION_READ; /* not this query's own record */
    r = list(ch, &fb, 100, NULL, RPC_OK);
    assert_int_equal(r->n_events, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* A cursor from tenant-a's listing used with tenant-b's filter still returns only tenant-b's events. */
    fb.patient_ref = (char *)"";
    fb.action = ALMA__AUDIT__V1__ACTION__ACTION_READ;
    r = list(ch, &fb, 100, "c1.0", RPC_OK);
    assert_int_equal(r->n_events, 12);
    for (size_t i = 0; i < r->n_events; i++)
        assert_string_equal(r->events[i]->input->tenant_id, "tenant-b");
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Bad filters and tokens are refused with a clear message. */
    Alma__Audit__V1__EventFilter bad = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    list(ch, &bad, 10, NULL, RPC_INVALID_ARGUMENT); /* no tenant */
    bad.tenant_id = (char *)"tenant-a";
    bad.patient_ref = (char *)FAKE_NAME;
    list(ch, &bad, 10, NULL, RPC_INVALID_ARGUMENT);
    bad.patient_ref = (char *)"";
    list(ch, &bad, 5000, NULL, RPC_INVALID_ARGUMENT);
    list(ch, &bad, 10, "c1.abc", RPC_INVALID_ARGUMENT);
    list(ch, &bad, 10, "' OR 1=1 --", RPC_INVALID_ARGUMENT);

    /* Every query that ran was itself appended to the log, as the caller's service, for that tenant. */
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE action = 10 AND tenant_id = 'tenant-a'"),
                     4);
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE action = 10 AND tenant_id = 'tenant-b'"),
                     2);
    assert_int_equal(
        admin_int("SELECT count(*) FROM events WHERE action = 10 AND actor_id = 'svc:test-client'"), 6);

    /* StreamEvents gives the same events as the pages, in one stream. */
    Alma__Audit__V1__ListEventsRequest sreq = ALMA__AUDIT__V1__LIST_EVENTS_REQUEST__INIT;
    f.patient_ref = (char *)"";
    sreq.filter = &f;
    rpc_call_opts o = {.timeout_ms = 20000};
    rpc_client_stream *s = NULL;
    MUST(rpc_client_stream_open(ch, M("StreamEvents"), &o, &s));
    MUST(rpc_client_stream_send(s, &sreq.base));
    MUST(rpc_client_stream_close_send(s));
    int streamed = 0;
    for (;;) {
        ProtobufCMessage *m = NULL;
        bool eof = false;
        MUST(rpc_client_stream_recv(s, &alma__audit__v1__event__descriptor, &m, &eof));
        if (eof)
            break;
        assert_string_equal(((Alma__Audit__V1__Event *)m)->input->tenant_id, "tenant-a");
        streamed++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    rpc_status st;
    assert_int_equal(rpc_client_stream_finish(s, &st), RPC_OK);
    rpc_client_stream_free(s);
    assert_int_equal(streamed, 12);
    rpc_channel_close(ch);
}

/* ---- Export ---- */

static void export_to(rpc_channel *ch, const char *tenant, bool fhir, const char *dir, int *ret_lines)
{
    Alma__Audit__V1__EventFilter f = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    f.tenant_id = (char *)tenant;
    Alma__Audit__V1__ExportEventsRequest req = ALMA__AUDIT__V1__EXPORT_EVENTS_REQUEST__INIT;
    req.filter = &f;
    req.format = fhir ? ALMA__AUDIT__V1__EXPORT_FORMAT__EXPORT_FORMAT_FHIR_AUDIT_EVENT_NDJSON
                      : ALMA__AUDIT__V1__EXPORT_FORMAT__EXPORT_FORMAT_JSON_LINES;
    rpc_call_opts o = {.timeout_ms = 60000};
    rpc_client_stream *s = NULL;
    MUST(rpc_client_stream_open(ch, M("ExportEvents"), &o, &s));
    MUST(rpc_client_stream_send(s, &req.base));
    MUST(rpc_client_stream_close_send(s));
    audit_export_writer *w = NULL;
    MUST(audit_export_writer_open(dir, fhir, tenant, &w));
    int lines = 0;
    bool got_checkpoint = false, got_statement = false;
    for (;;) {
        ProtobufCMessage *m = NULL;
        bool eof = false;
        MUST(rpc_client_stream_recv(s, &alma__audit__v1__export_chunk__descriptor, &m, &eof));
        if (eof)
            break;
        Alma__Audit__V1__ExportChunk *c = (Alma__Audit__V1__ExportChunk *)m;
        assert_false(got_statement); /* the statement is the last chunk */
        if (c->part_case == ALMA__AUDIT__V1__EXPORT_CHUNK__PART_CHECKPOINT) {
            assert_false(got_checkpoint);
            got_checkpoint = true;
            MUST(audit_export_writer_checkpoint(w, c->checkpoint->signed_note,
                                                strlen(c->checkpoint->signed_note)));
        } else if (c->part_case == ALMA__AUDIT__V1__EXPORT_CHUNK__PART_STATEMENT) {
            /* The log's signed account of the lines it sent; the writer checks it names them. */
            assert_true(got_checkpoint);
            got_statement = true;
            MUST(audit_export_writer_statement(w, c->statement, strlen(c->statement)));
        } else {
            assert_true(got_checkpoint);
            assert_int_equal(c->part_case, ALMA__AUDIT__V1__EXPORT_CHUNK__PART_LINE);
            Alma__Audit__V1__ExportLine *l = c->line;
            uint8_t proof[AUDIT_MERKLE_MAX_PROOF][32];
            assert_true(l->n_proof <= AUDIT_MERKLE_MAX_PROOF);
            for (size_t i = 0; i < l->n_proof; i++)
                memcpy(proof[i], l->proof[i].data, 32);
            MUST(audit_export_writer_line(w, l->sequence, l->json, strlen(l->json),
                                          (const char *)l->entry.data, l->entry.len, l->leaf_hash.data,
                                          (const uint8_t(*)[32])proof, l->n_proof));
            lines++;
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    rpc_status st;
    assert_int_equal(rpc_client_stream_finish(s, &st), RPC_OK);
    rpc_client_stream_free(s);
    assert_true(got_statement);
    MUST(audit_export_writer_finish(w));
    audit_export_writer_free(w);
    *ret_lines = lines;
}

static int run_verify(const char *dir, char **ret_err)
{
    const char *argv[] = {audit_binary(), "verify", "--export", dir, "--vkey", g_vkey, NULL};
    return testproc_run(argv, NULL, NULL, ret_err);
}

static void flip_byte_in_file(const char *path, const char *needle)
{
    char *text = testproc_read_or_empty(path);
    char *at = strstr(text, needle);
    assert_non_null(at);
    *at = (char)(*at == 'A' ? 'B' : 'A');
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    free(text);
}

static void test_export_verifies_offline(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    ev_holder h;
    for (int i = 0; i < 25; i++) {
        ev_init(&h, i % 5 ? "tenant-a" : "tenant-b", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
        if (i == 7)
            ev_disclose(&h, "State Public Health Registry",
                        ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH);
        append_ok(ch, &h, NULL);
    }
    char jdir[TESTPROC_PATH_MAX], fdir[TESTPROC_PATH_MAX];
    snprintf(jdir, sizeof jdir, "%s", testproc_work_path("export-jsonl"));
    snprintf(fdir, sizeof fdir, "%s", testproc_work_path("export-fhir"));
    int jl = 0, fl = 0;
    export_to(ch, "tenant-a", false, jdir, &jl);
    export_to(ch, "tenant-a", true, fdir, &fl);
    /* 20 events plus the first export's own EXPORT record (the second export's is above its checkpoint or
     * included: it is appended before the checkpoint is signed, so it is in). */
    assert_int_equal(jl, 21);
    assert_int_equal(fl, 22);

    audit_verify_export_report rep;
    MUST(audit_verify_export(jdir, g_vkey, NULL, &rep));
    MUST(audit_verify_export(fdir, g_vkey, NULL, &rep));
    char *err = NULL;
    assert_int_equal(run_verify(jdir, &err), 0);
    free(err);
    assert_int_equal(run_verify(fdir, &err), 0);
    free(err);

    /* One changed byte in an event, and the verifier names the line. */
    char path[TESTPROC_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/events.jsonl", jdir);
    flip_byte_in_file(path, "ACTION_DISCLOSE");
    assert_int_equal(run_verify(jdir, &err), 1);
    assert_non_null(strstr(err, "line"));
    free(err);
    /* A wrong key is a failed verification too. */
    const char *argv[] = {audit_binary(),
                          "verify",
                          "--export",
                          fdir,
                          "--vkey",
                          "other+01234567+AWZ5ZWxsb3cgc3VibWFyaW5lIHllbGxvdyBzdWJtYXJpbmUgeWVsbG8=",
                          NULL};
    int code = testproc_run(argv, NULL, NULL, &err);
    assert_true(code == 1 || code == 2);
    free(err);

    /* The statement is the log's: signed with the checkpoint's key name, naming the tenant, the filter and
     * the number of lines. */
    snprintf(path, sizeof path, "%s/statement", fdir);
    char *statement = testproc_read_or_empty(path);
    char want[256];
    snprintf(want, sizeof want,
             "alma-audit-export/v1\norigin " ORIGIN "\ntenant tenant-a\nfilter {\"tenant_id\":\"tenant-a\"}\n"
             "format fhir-ndjson\ntree ");
    assert_true(strncmp(statement, want, strlen(want)) == 0);
    assert_non_null(strstr(statement, "\ncount 22\nleaves "));
    assert_non_null(strstr(statement, "\n\n\u2014 " ORIGIN " "));
    free(statement);
    /* Deleting a line from both files and lowering the manifest's count to match no longer verifies: the
     * signed statement still names 22 lines. */
    const char *files[] = {"events.ndjson", "proofs.jsonl"};
    for (size_t k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", fdir, files[k]);
        char *text = testproc_read_or_empty(path);
        char *third = text;
        for (int i = 0; i < 2 && third; i++) {
            third = strchr(third, '\n');
            third = third ? third + 1 : NULL;
        }
        assert_non_null(third);
        char *next = strchr(third, '\n');
        assert_non_null(next);
        memmove(third, next + 1, strlen(next + 1) + 1);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
        free(text);
    }
    snprintf(path, sizeof path, "%s/manifest.json", fdir);
    char *manifest = testproc_read_or_empty(path);
    char *count = strstr(manifest, "\"count\":22,");
    assert_non_null(count);
    memcpy(count, "\"count\":21,", strlen("\"count\":21,"));
    FILE *mf = fopen(path, "w");
    assert_non_null(mf);
    fputs(manifest, mf);
    assert_int_equal(fclose(mf), 0);
    free(manifest);
    assert_int_equal(run_verify(fdir, &err), 1);
    assert_non_null(strstr(err, "the export statement does not match the exported lines"));
    free(err);
    /* And without the statement, the export is incomplete. */
    snprintf(path, sizeof path, "%s/statement", fdir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(run_verify(fdir, &err), 2);
    assert_non_null(strstr(err, "incomplete export: no statement"));
    free(err);

    /* And exports are audited, as high-severity events. */
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE action = 9"), 2);
    rpc_channel_close(ch);
}

/* ---- Accounting ---- */

static Alma__Audit__V1__GetAccountingOfDisclosuresResponse *
accounting(rpc_channel *ch, const char *tenant, const char *patient, int64_t as_of_secs, rpc_code want)
{
    Alma__Audit__V1__GetAccountingOfDisclosuresRequest req =
        ALMA__AUDIT__V1__GET_ACCOUNTING_OF_DISCLOSURES_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.patient_ref = (char *)patient;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (as_of_secs) {
        ts.seconds = as_of_secs;
        req.as_of = &ts;
    }
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = call(ch, M("GetAccountingOfDisclosures"), &req.base,
                         &alma__audit__v1__get_accounting_of_disclosures_response__descriptor, &resp, &st);
    if (code != want)
        fail_msg("GetAccountingOfDisclosures: %s: %s", rpc_code_name(code), st.message);
    return (Alma__Audit__V1__GetAccountingOfDisclosuresResponse *)resp;
}

static void test_accounting_of_disclosures(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    ev_holder h;
    /* Accountable: public health, law enforcement. Excluded by §164.528(a)(1): treatment/payment/operations,
     * an authorisation, to the individual. Not disclosures: a read. Other patient, other tenant. */
    struct {
        const char *tenant, *patient, *recipient;
        Alma__Audit__V1__DisclosureBasis basis;
    } cases[] = {
        {"tenant-a", PT_1, "State Public Health Registry",
         ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH},
        {"tenant-a", PT_1, "County Sheriff",
         ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_LAW_ENFORCEMENT},
        {"tenant-a", PT_1, "Specialist Clinic",
         ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_TREATMENT_PAYMENT_OPERATIONS},
        {"tenant-a", PT_1, "Life Insurer", ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_AUTHORIZATION},
        {"tenant-a", PT_1, "The Patient", ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_TO_INDIVIDUAL},
        {"tenant-a", PT_2, "State Public Health Registry",
         ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH},
        {"tenant-b", PT_1, "State Public Health Registry",
         ALMA__AUDIT__V1__DISCLOSURE_BASIS__DISCLOSURE_BASIS_PUBLIC_HEALTH},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ev_init(&h, cases[i].tenant, ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE, cases[i].patient);
        ev_disclose(&h, cases[i].recipient, cases[i].basis);
        append_ok(ch, &h, NULL);
    }
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    append_ok(ch, &h, NULL);

    Alma__Audit__V1__GetAccountingOfDisclosuresResponse *r = accounting(ch, "tenant-a", PT_1, 0, RPC_OK);
    assert_int_equal(r->n_disclosures, 2);
    assert_string_equal(r->disclosures[0]->recipient->name, "State Public Health Registry");
    assert_string_equal(r->disclosures[0]->recipient->address, "1 Registry Way, Springfield");
    assert_string_equal(r->disclosures[0]->phi_description, "problem list and lab results");
    assert_int_equal(r->disclosures[0]->purpose,
                     ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_PUBLIC_HEALTH);
    assert_non_null(r->disclosures[0]->time);
    assert_string_equal(r->disclosures[1]->recipient->name, "County Sheriff");
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* The window is the six years before as_of: seven years from now, these are out of it; and a request as
     * of a time before they happened does not see them either. */
    int64_t now = (int64_t)time(NULL);
    r = accounting(ch, "tenant-a", PT_1, now + 7 * 366 * 86400, RPC_OK);
    assert_int_equal(r->n_disclosures, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    r = accounting(ch, "tenant-a", PT_1, now + 5 * 365 * 86400, RPC_OK);
    assert_int_equal(r->n_disclosures, 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    r = accounting(ch, "tenant-a", PT_1, now - 3600, RPC_OK);
    assert_int_equal(r->n_disclosures, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    accounting(ch, "tenant-a", FAKE_NAME, 0, RPC_INVALID_ARGUMENT);
    accounting(ch, "", PT_1, 0, RPC_INVALID_ARGUMENT);
    rpc_channel_close(ch);
}

/* ---- SIGKILL under load ---- */

#define LOADERS    8
#define LOADER_MAX 4000

typedef struct loader {
    const char *addr;
    int id;
    size_t acked;
    uint64_t seq[LOADER_MAX];
    uint8_t leaf[LOADER_MAX][32];
} loader;

static void *loader_main(void *arg)
{
    loader *l = arg;
    rpc_client_tls tls = testrpc_client_tls("test-client");
    rpc_channel *ch = NULL;
    if (!base_is_ok(rpc_channel_open(l->addr, &tls, &ch)))
        return NULL;
    ev_holder h;
    while (l->acked < LOADER_MAX) {
        ev_init(&h, "tenant-load", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
        Alma__Audit__V1__AppendEventRequest req = ALMA__AUDIT__V1__APPEND_EVENT_REQUEST__INIT;
        req.event = &h.ev;
        ProtobufCMessage *resp = NULL;
        rpc_status st;
        rpc_call_opts o = {.timeout_ms = 3000};
        if (rpc_call_unary(ch, M("AppendEvent"), &req.base,
                           &alma__audit__v1__append_event_response__descriptor, &o, &resp, &st) != RPC_OK)
            break; /* the service died: what was acknowledged must survive */
        Alma__Audit__V1__AppendEventResponse *r = (Alma__Audit__V1__AppendEventResponse *)resp;
        l->seq[l->acked] = r->sequence;
        memcpy(l->leaf[l->acked], r->leaf_hash.data, 32);
        l->acked++;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_close(ch);
    return NULL;
}

static void test_sigkill_under_load_loses_nothing(void **state)
{
    (void)state;
    rpc_channel *ch = channel("test-client");
    Alma__Audit__V1__Checkpoint *before = NULL;
    ev_holder h;
    ev_init(&h, "tenant-load", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    append_ok(ch, &h, NULL);
    before = checkpoint_at_least(ch, 1);
    rpc_channel_close(ch);

    static loader ls[LOADERS];
    pthread_t t[LOADERS];
    for (int i = 0; i < LOADERS; i++) {
        memset(&ls[i], 0, sizeof ls[i]);
        ls[i].addr = g_d.api_addr;
        ls[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, loader_main, &ls[i]), 0);
    }
    /* Let the load build up, then kill the service mid-flight. */
    for (int i = 0; i < 200; i++) {
        size_t acked = 0;
        for (int k = 0; k < LOADERS; k++)
            acked += ls[k].acked;
        if (acked >= 400)
            break;
        testproc_sleep_ms(10);
    }
    assert_int_equal(testproc_daemon_kill(&g_d), 128 + SIGKILL);
    for (int i = 0; i < LOADERS; i++)
        pthread_join(t[i], NULL);
    size_t acked = 0;
    for (int k = 0; k < LOADERS; k++)
        acked += ls[k].acked;
    print_message("acknowledged before SIGKILL: %zu appends\n", acked);
    assert_true(acked >= 100);

    /* Every acknowledged append is in the database with the leaf hash the caller was given. */
    for (int k = 0; k < LOADERS; k++) {
        for (size_t i = 0; i < ls[k].acked; i++) {
            char seq[24], hex[65];
            snprintf(seq, sizeof seq, "%" PRIu64, ls[k].seq[i]);
            for (int b = 0; b < 32; b++)
                snprintf(hex + 2 * b, 3, "%02x", ls[k].leaf[i][b]);
            const char *p[] = {seq, hex};
            db_conn *c = NULL;
            db_result *res = NULL;
            MUST(db_pool_acquire(g_admin, 5000, &c));
            MUST(db_exec(
                c, "SELECT count(*) FROM events WHERE seq = $1::bigint AND leaf_hash = decode($2, 'hex')", 2,
                p, &res));
            assert_string_equal(db_result_get(res, 0, 0), "1");
            db_result_free(res);
            db_conn_release(c);
        }
    }
    /* The restarted service continues the same chain: no gap, the old checkpoint is consistent with the
     * new one, and VerifyLog is clean over everything. */
    int64_t rows = admin_int("SELECT count(*) FROM events");
    assert_int_equal(admin_int("SELECT max(seq) + 1 FROM events"), rows);
    testproc_daemon_start(&g_d);
    ch = channel("test-client");
    ev_init(&h, "tenant-load", ALMA__AUDIT__V1__ACTION__ACTION_READ, PT_1);
    assert_int_equal(append_ok(ch, &h, NULL), (uint64_t)rows);
    Alma__Audit__V1__Checkpoint *after = checkpoint_at_least(ch, (uint64_t)rows + 1);
    Alma__Audit__V1__GetConsistencyProofRequest creq = ALMA__AUDIT__V1__GET_CONSISTENCY_PROOF_REQUEST__INIT;
    creq.first_size = before->tree_size;
    creq.second_size = after->tree_size;
    ProtobufCMessage *cresp = NULL;
    assert_int_equal(call(ch, M("GetConsistencyProof"), &creq.base,
                          &alma__audit__v1__consistency_proof__descriptor, &cresp, NULL),
                     RPC_OK);
    Alma__Audit__V1__ConsistencyProof *cp = (Alma__Audit__V1__ConsistencyProof *)cresp;
    uint8_t hashes[AUDIT_MERKLE_MAX_PROOF][32];
    for (size_t i = 0; i < cp->n_hashes; i++)
        memcpy(hashes[i], cp->hashes[i].data, 32);
    MUST(audit_merkle_verify_consistency(before->tree_size, after->tree_size, before->root_hash.data,
                                         after->root_hash.data, (const uint8_t(*)[32])hashes, cp->n_hashes));
    protobuf_c_message_free_unpacked(cresp, NULL);
    rpc_channel *op = channel("alma-cli");
    Alma__Audit__V1__VerifyLogResponse *v = verify_log(op);
    assert_true(v->ok);
    assert_int_equal(v->verified_through, (uint64_t)rows + 1);
    protobuf_c_message_free_unpacked(&v->base, NULL);
    protobuf_c_message_free_unpacked(&before->base, NULL);
    protobuf_c_message_free_unpacked(&after->base, NULL);
    rpc_channel_close(op);
    rpc_channel_close(ch);
}

/* ---- alma-cli end to end, and the client library every service uses ---- */

static int cli(const char *client, const char *const *words, char **ret_out, char **ret_err)
{
    static char cert[512], key[512], ca[512], bin[512];
    snprintf(bin, sizeof bin, "%s", testenv_binary_path("tools/alma-cli"));
    char file[128];
    snprintf(file, sizeof file, "%s.pem", client);
    snprintf(cert, sizeof cert, "%s", testenv_pki(file));
    snprintf(file, sizeof file, "%s-key.pem", client);
    snprintf(key, sizeof key, "%s", testenv_pki(file));
    snprintf(ca, sizeof ca, "%s", testenv_pki("ca.pem"));
    const char *argv[32] = {bin, "--addr", g_d.api_addr, "--cert",        cert,       "--key",
                            key, "--ca",   ca,           "--server-name", "localhost"};
    int n = 11;
    for (size_t i = 0; words[i] && n < 31; i++)
        argv[n++] = words[i];
    argv[n] = NULL;
    return testproc_run(argv, NULL, ret_out, ret_err);
}

static void test_cli_export_and_verify(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    for (int i = 0; i < 3; i++) {
        const char *append[] = {"audit-append",
                                "--tenant",
                                "tenant-cli",
                                "--actor",
                                "usr_cli",
                                "--action",
                                "disclose",
                                "--patient",
                                PT_1,
                                "--recipient",
                                "State Public Health Registry",
                                "--basis",
                                "public-health",
                                "--phi-description",
                                "immunization history",
                                "--purpose",
                                "public-health",
                                NULL};
        int code = cli("test-client", append, &out, &err);
        if (code != 0)
            fail_msg("audit-append exited %d: %s", code, err);
        assert_non_null(strstr(out, "seq="));
        free(out);
        free(err);
    }
    char dir[TESTPROC_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", testproc_work_path("cli-export"));
    for (int fhir = 0; fhir < 2; fhir++) {
        char sub[TESTPROC_PATH_MAX + 8];
        snprintf(sub, sizeof sub, "%s-%d", dir, fhir);
        const char *exp[] = {"audit-export",          "--tenant", "tenant-cli", "--format",
                             fhir ? "fhir" : "jsonl", "--out",    sub,          NULL};
        int code = cli("alma-cli", exp, &out, &err);
        if (code != 0)
            fail_msg("audit-export exited %d: %s", code, err);
        /* The 3 disclosures and each export's own record so far. */
        assert_non_null(strstr(out, fhir ? "exported 5 events" : "exported 4 events"));
        free(out);
        free(err);
        assert_int_equal(run_verify(sub, &err), 0);
        free(err);
    }
    const char *acc[] = {"audit-accounting", "--tenant", "tenant-cli", "--patient", PT_1, NULL};
    assert_int_equal(cli("alma-cli", acc, &out, &err), 0);
    assert_non_null(strstr(out, "State Public Health Registry"));
    free(out);
    free(err);
    const char *ver[] = {"audit-verify-log", NULL};
    assert_int_equal(cli("alma-cli", ver, &out, &err), 0);
    free(out);
    free(err);
    /* The CLI's identity may read but not write. */
    const char *append[] = {"audit-append", "--tenant", "tenant-cli", "--actor",
                            "usr_cli",      "--action", "read",       NULL};
    assert_int_not_equal(cli("alma-cli", append, &out, &err), 0);
    free(out);
    free(err);
}

/* Concurrent appenders through one client: their events travel in shared AppendEvents batches; each gets
 * its own sequence number, and one bad event among them fails alone. */
#define CLIENT_THREADS 24
typedef struct client_arg {
    audit_client *c;
    int index;
    bool bad;
    base_err err;
    uint64_t seq;
} client_arg;

static void *client_main(void *p)
{
    client_arg *a = p;
    ev_holder h;
    ev_init(&h, a->bad ? "" : "tenant-b", ALMA__AUDIT__V1__ACTION__ACTION_ADMIN, NULL);
    h.ev.resource_type = (char *)"Role";
    a->seq = UINT64_MAX;
    a->err = audit_client_append(a->c, &h.ev, NULL, &a->seq).err;
    return NULL;
}

static void test_audit_client(void **state)
{
    (void)state;
    rpc_client_tls tls = testrpc_client_tls("identity");
    audit_client *c = NULL;
    MUST(audit_client_open(g_d.api_addr, &tls, 5000, &c));
    ev_holder h;
    ev_init(&h, "tenant-a", ALMA__AUDIT__V1__ACTION__ACTION_ADMIN, NULL);
    h.ev.resource_type = (char *)"Role";
    uint64_t seq = 99;
    MUST(audit_client_append(c, &h.ev, NULL, &seq));
    assert_int_equal(seq, 0);
    /* A bad event is refused with the service's message; nothing is stored. */
    h.ev.tenant_id = (char *)"";
    base_result r = audit_client_append(c, &h.ev, NULL, NULL);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "tenant_id"));
    /* Many at once, one of them bad: in batches, each answered for itself. */
    pthread_t t[CLIENT_THREADS];
    client_arg args[CLIENT_THREADS];
    for (int i = 0; i < CLIENT_THREADS; i++) {
        args[i] = (client_arg){.c = c, .index = i, .bad = i == 7};
        assert_int_equal(pthread_create(&t[i], NULL, client_main, &args[i]), 0);
    }
    bool seen[CLIENT_THREADS + 1] = {false};
    for (int i = 0; i < CLIENT_THREADS; i++) {
        pthread_join(t[i], NULL);
        if (i == 7) {
            assert_int_equal(args[i].err, BASE_ERR_INVALID);
            continue;
        }
        assert_int_equal(args[i].err, BASE_OK);
        assert_true(args[i].seq >= 1 && args[i].seq <= CLIENT_THREADS - 1); /* 0 is the first event */
        assert_false(seen[args[i].seq]);
        seen[args[i].seq] = true;
    }
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE tenant_id = 'tenant-b'"),
                     CLIENT_THREADS - 1);
    /* audit_client_record: a NULL actor and NULL roles come from the caller's claims; an event with neither
     * an actor nor a claims subject is refused before it is sent. */
    authz_claims claims = {.role_count = 2};
    snprintf(claims.sub, sizeof claims.sub, "usr_claimsubject");
    snprintf(claims.roles[0], sizeof claims.roles[0], "pcp_clinician");
    snprintf(claims.roles[1], sizeof claims.roles[1], "auditor");
    audit_client_event rec = {.tenant_id = "tenant-c",
                              .claims = &claims,
                              .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                              .resource_type = "Role"};
    MUST(audit_client_record(c, &rec, NULL, &seq));
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE tenant_id = 'tenant-c' AND "
                               "actor_id = 'usr_claimsubject' AND position('\"pcp_clinician\"' in "
                               "convert_from(entry, 'UTF8')) > 0 AND position('\"auditor\"' in "
                               "convert_from(entry, 'UTF8')) > 0"),
                     1);
    rec.actor = "system:test"; /* an explicit actor wins; the roles still come from the claims */
    MUST(audit_client_record(c, &rec, NULL, &seq));
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE tenant_id = 'tenant-c' AND "
                               "actor_id = 'system:test' AND position('\"auditor\"' in "
                               "convert_from(entry, 'UTF8')) > 0"),
                     1);
    claims.sub[0] = '\0';
    rec.actor = NULL;
    r = audit_client_record(c, &rec, NULL, NULL);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "no actor"));
    rec.claims = NULL;
    assert_int_equal(audit_client_record(c, &rec, NULL, NULL).err, BASE_ERR_INVALID);
    assert_int_equal(admin_int("SELECT count(*) FROM events WHERE tenant_id = 'tenant-c'"), 2);
    audit_client_close(c);
    /* A service that may not append is told so. */
    tls = testrpc_client_tls("intruder");
    MUST(audit_client_open(g_d.api_addr, &tls, 5000, &c));
    h.ev.tenant_id = (char *)"tenant-a";
    assert_int_equal(audit_client_append(c, &h.ev, NULL, NULL).err, BASE_ERR_DENIED);
    audit_client_close(c);
    /* The audit service down: UNAVAILABLE, which callers turn into a refused disclosure. */
    tls = testrpc_client_tls("identity");
    MUST(audit_client_open(g_d.api_addr, &tls, 1000, &c));
    assert_int_equal(testproc_daemon_stop(&g_d), 0);
    assert_int_equal(audit_client_append(c, &h.ev, NULL, NULL).err, BASE_ERR_UNAVAILABLE);
    audit_client_close(c);
    assert_int_equal(admin_int("SELECT count(*) FROM events"), CLIENT_THREADS + 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_checkpoint_and_proofs, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_bad_events_store_nothing, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_who_may_call, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_runtime_role_is_append_only, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_verify_finds_tamper_and_gap, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_query_pages_and_tenant_isolation, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_export_verifies_offline, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_accounting_of_disclosures, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_under_load_loses_nothing, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_cli_export_and_verify, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_audit_client, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
