/* The guideline store against the real PostgreSQL of the "pg" fixture, run as production runs it: the schema
 * is migrated by an owner role (no superuser) and the store uses a least-privilege runtime role holding only
 * what grant_runtime() gives it. A superuser pool plays the administrator with database access, whom the
 * append-only triggers refuse too. */
#include "db/db.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)
#define EXPECT_ERR(expr, want)                                                                               \
    do {                                                                                                     \
        base_result exp_r__ = (expr);                                                                        \
        if (exp_r__.err != (want))                                                                           \
            fail_msg("%s: got %s (%s), want %s", #expr, base_err_name(exp_r__.err), base_error_message(),    \
                     base_err_name(want));                                                                   \
    } while (0)

#define PW     "guideline-store-test-pw"
#define ACTOR  "usr_0123456789abcdef0123456789abcdef"
#define BID    "alma-test-bundle"
#define BJSON  "{\"bundle_id\":\"alma-test-bundle\",\"pathways\":[]}"
#define INPUT  "{\"age\":70,\"sex\":\"female\"}"
#define OUTPUT "{\"outcome\":\"REFER\"}"

static char g_uri[512], g_port[16], g_prefix[40], g_owner[64], g_runtime[64];
static int g_nschema;
static db_pool *g_root; /* superuser, no search_path */

/* ---- Fixture ------------------------------------------------------------------------------------------- */

typedef struct fx {
    char schema[64];
    db_pool *rt;   /* runtime role: the store's pool */
    db_pool *root; /* superuser, search_path = schema */
    char hash1[GS_HASH_LEN + 1];
} fx;

static void conninfo_for(const char *role, char out[256])
{
    snprintf(out, 256, "host=127.0.0.1 port=%s dbname=postgres user=%s password=" PW, g_port, role);
}

/* 64 lowercase hex digits from a seed (not a real hash: the store only checks the format). */
static void fake_hash(char out[GS_HASH_LEN + 1], unsigned seed)
{
    static const char digits[] = "0123456789abcdef";
    uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;
    for (int i = 0; i < GS_HASH_LEN; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = digits[(x >> 60) & 15];
    }
    out[GS_HASH_LEN] = '\0';
}

static void fake_id(char out[GS_ID_BUF], const char *prefix, unsigned n)
{
    snprintf(out, GS_ID_BUF, "%s%032x", prefix, n);
}

static void fx_open(fx *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->schema, sizeof f->schema, "%s_%d", g_prefix, g_nschema++);
    char owner[256], runtime[256];
    conninfo_for(g_owner, owner);
    conninfo_for(g_runtime, runtime);
    f->rt = testdb_pool(runtime, f->schema, 8);
    MUST(db_migrate_as_owner(f->rt, owner, f->schema, "alma-test", gs_migrate));
    f->root = testdb_pool(g_uri, f->schema, 2);
    fake_hash(f->hash1, 1);
}

static void fx_close(fx *f)
{
    db_pool_destroy(f->rt);
    db_pool_destroy(f->root);
    testdb_drop_schema(g_root, f->schema);
}

static base_result exec_sql(db_pool *pool, const char *sql, int n, const char *const *p)
{
    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(pool, 5000, &c));
    base_result r = db_exec(c, sql, n, p, NULL);
    db_conn_release(c);
    return r;
}

static int64_t query_int(db_pool *pool, const char *sql, int n, const char *const *p)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, sql, n, p, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

static void publish1(fx *f)
{
    bool created = false;
    MUST(gs_bundle_publish(f->rt, BID, "1.0.0", f->hash1, BJSON, strlen(BJSON), true, ACTOR, &created));
}

/* A review of the fixture's bundle. */
static void mk_review(fx *f, gs_review *r, const char *tenant, unsigned n, const char *referral,
                      const char *clinician, int outcome, const char *pathway)
{
    memset(r, 0, sizeof *r);
    fake_id(r->review_id, "rv_", n);
    snprintf(r->tenant_id, sizeof r->tenant_id, "%s", tenant);
    snprintf(r->referral_id, sizeof r->referral_id, "%s", referral);
    fake_id(r->patient_ref, "pt_", 1000 + n);
    snprintf(r->clinician_id, sizeof r->clinician_id, "%s", clinician);
    r->outcome = outcome;
    r->urgency = outcome == 1 ? 2 : 0;
    snprintf(r->pathway_id, sizeof r->pathway_id, "%s", pathway);
    snprintf(r->rule_id, sizeof r->rule_id, "%s", outcome == 5 ? "" : "default");
    snprintf(r->engine_version, sizeof r->engine_version, "alma-guideline/1");
    snprintf(r->bundle_id, sizeof r->bundle_id, BID);
    snprintf(r->bundle_version, sizeof r->bundle_version, "1.0.0");
    memcpy(r->bundle_hash, f->hash1, sizeof r->bundle_hash);
    fake_hash(r->input_hash, 100 + n);
    r->input_json = (char *)INPUT;
    r->input_len = strlen(INPUT);
    r->recommendation_json = (char *)OUTPUT;
    r->recommendation_len = strlen(OUTPUT);
}

static int64_t add_review(fx *f, const char *tenant, unsigned n, const char *referral, const char *clinician,
                          int outcome, const char *pathway)
{
    gs_review r;
    mk_review(f, &r, tenant, n, referral, clinician, outcome, pathway);
    int64_t at = 0;
    MUST(gs_review_insert(f->rt, &r, &at));
    assert_true(at > 0);
    return at;
}

static gs_decision mk_decision(const char *tenant, unsigned n, unsigned review, int kind, int reason)
{
    gs_decision d;
    memset(&d, 0, sizeof d);
    fake_id(d.decision_id, "dn_", n);
    fake_id(d.review_id, "rv_", review);
    snprintf(d.tenant_id, sizeof d.tenant_id, "%s", tenant);
    snprintf(d.clinician_id, sizeof d.clinician_id, "clinician-a");
    d.kind = kind;
    d.reason = reason;
    snprintf(d.comment, sizeof d.comment, "free text, may name the patient");
    return d;
}

static void add_decision(fx *f, const char *tenant, unsigned n, unsigned review, int kind, int reason)
{
    gs_decision d = mk_decision(tenant, n, review, kind, reason);
    int64_t at = 0;
    MUST(gs_decision_insert(f->rt, &d, &at));
    assert_true(at > 0);
}

/* ---- Bundles ------------------------------------------------------------------------------------------- */

static void test_bundles(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    gs_bundle b;
    EXPECT_ERR(gs_bundle_active(f.rt, &b), BASE_ERR_NOT_FOUND);

    bool created = false;
    MUST(gs_bundle_publish(f.rt, BID, "1.0.0", f.hash1, BJSON, strlen(BJSON), false, ACTOR, &created));
    assert_true(created);
    MUST(gs_bundle_publish(f.rt, BID, "1.0.0", f.hash1, BJSON, strlen(BJSON), false, ACTOR, &created));
    assert_false(created);
    char other[GS_HASH_LEN + 1];
    fake_hash(other, 2);
    EXPECT_ERR(gs_bundle_publish(f.rt, BID, "1.0.0", other, BJSON, strlen(BJSON), false, ACTOR, &created),
               BASE_ERR_CONFLICT);
    assert_string_equal(base_error_message(), "bundle version already published with other content");
    EXPECT_ERR(gs_bundle_active(f.rt, &b), BASE_ERR_NOT_FOUND);

    /* Activation switches the active bundle in one transaction; re-publishing activates an old one. */
    MUST(gs_bundle_publish(f.rt, BID, "1.1.0", other, BJSON, strlen(BJSON), true, ACTOR, &created));
    assert_true(created);
    MUST(gs_bundle_active(f.rt, &b));
    assert_string_equal(b.version, "1.1.0");
    assert_string_equal(b.hash, other);
    assert_true(b.active);
    gs_bundle_clear(&b);
    MUST(gs_bundle_publish(f.rt, BID, "1.0.0", f.hash1, BJSON, strlen(BJSON), true, ACTOR, &created));
    assert_false(created);
    MUST(gs_bundle_active(f.rt, &b));
    assert_string_equal(b.version, "1.0.0");
    assert_int_equal(b.json_len, strlen(BJSON));
    assert_string_equal(b.json, BJSON);
    assert_string_equal(b.published_by, ACTOR);
    assert_true(b.published_us > 0);
    gs_bundle_clear(&b);
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM bundles WHERE active", 0, NULL), 1);

    MUST(gs_bundle_get(f.rt, BID, "1.1.0", &b));
    assert_false(b.active);
    assert_string_equal(b.json, BJSON);
    gs_bundle_clear(&b);
    EXPECT_ERR(gs_bundle_get(f.rt, BID, "9.9.9", &b), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(gs_bundle_get(f.rt, "Bad_Id", "1.0.0", &b), BASE_ERR_INVALID);

    gs_bundle *bs = NULL;
    size_t n = 0;
    MUST(gs_bundles_list(f.rt, &bs, &n));
    assert_int_equal(n, 2);
    assert_string_equal(bs[0].version, "1.1.0"); /* newest first */
    assert_false(bs[0].active);
    assert_null(bs[0].json);
    assert_string_equal(bs[1].version, "1.0.0");
    assert_true(bs[1].active);
    gs_bundles_free(bs, n);

    /* Refused before the database: malformed fields. */
    EXPECT_ERR(gs_bundle_publish(f.rt, BID, "1.0", f.hash1, BJSON, strlen(BJSON), false, ACTOR, NULL),
               BASE_ERR_INVALID);
    EXPECT_ERR(gs_bundle_publish(f.rt, BID, "2.0.0", "ABC", BJSON, strlen(BJSON), false, ACTOR, NULL),
               BASE_ERR_INVALID);
    EXPECT_ERR(gs_bundle_publish(f.rt, BID, "2.0.0", f.hash1, BJSON, strlen(BJSON), false, "", NULL),
               BASE_ERR_INVALID);

    /* At most one active, even for the superuser; content never changes; nothing is deleted. */
    EXPECT_ERR(exec_sql(f.root, "UPDATE bundles SET active = true", 0, NULL), BASE_ERR_EXISTS);
    EXPECT_ERR(exec_sql(f.root, "UPDATE bundles SET json = '{}'", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.root, "UPDATE bundles SET content_hash = repeat('0', 64)", 0, NULL),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.root, "DELETE FROM bundles WHERE version = '1.1.0'", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.root, "TRUNCATE bundles CASCADE", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "UPDATE bundles SET json = '{}'", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "DELETE FROM bundles", 0, NULL), BASE_ERR_DENIED);
    MUST(exec_sql(f.rt, "UPDATE bundles SET active = false", 0, NULL)); /* the runtime's one UPDATE */
    EXPECT_ERR(gs_bundle_active(f.rt, &b), BASE_ERR_NOT_FOUND);
    MUST(gs_bundle_get(f.rt, BID, "1.0.0", &b));
    assert_string_equal(b.json, BJSON);
    gs_bundle_clear(&b);
    fx_close(&f);
}

/* Concurrent activations of different versions: every publish succeeds, exactly one ends up active. */
typedef struct pub_worker {
    fx *f;
    int idx;
    base_result r;
} pub_worker;

static void *pub_thread(void *arg)
{
    pub_worker *w = arg;
    char version[16], hash[GS_HASH_LEN + 1];
    snprintf(version, sizeof version, "2.%d.0", w->idx);
    fake_hash(hash, 50 + (unsigned)w->idx);
    for (int i = 0; i < 5 && base_is_ok(w->r); i++)
        w->r = gs_bundle_publish(w->f->rt, BID, version, hash, BJSON, strlen(BJSON), true, ACTOR, NULL);
    return NULL;
}

static void test_concurrent_activation(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    pub_worker w[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (pub_worker){.f = &f, .idx = i, .r = BASE_OK_RESULT};
        assert_int_equal(pthread_create(&t[i], NULL, pub_thread, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].r.err, BASE_OK);
    }
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM bundles WHERE active", 0, NULL), 1);
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM bundles", 0, NULL), 7);
    fx_close(&f);
}

/* ---- Reviews and decisions ----------------------------------------------------------------------------- */

static void test_reviews(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    gs_review in;
    mk_review(&f, &in, "acme", 1, "ref-1", "clinician-a", 1, "ckd-nephrology");
    int64_t at = 0;
    MUST(gs_review_insert(f.rt, &in, &at));
    EXPECT_ERR(gs_review_insert(f.rt, &in, NULL), BASE_ERR_EXISTS);

    gs_review out;
    MUST(gs_review_get(f.rt, "acme", in.review_id, &out));
    assert_string_equal(out.review_id, in.review_id);
    assert_string_equal(out.tenant_id, "acme");
    assert_string_equal(out.referral_id, "ref-1");
    assert_string_equal(out.patient_ref, in.patient_ref);
    assert_string_equal(out.clinician_id, "clinician-a");
    assert_int_equal(out.outcome, 1);
    assert_int_equal(out.urgency, 2);
    assert_string_equal(out.pathway_id, "ckd-nephrology");
    assert_string_equal(out.rule_id, "default");
    assert_string_equal(out.engine_version, "alma-guideline/1");
    assert_string_equal(out.bundle_id, BID);
    assert_string_equal(out.bundle_version, "1.0.0");
    assert_string_equal(out.bundle_hash, f.hash1);
    assert_string_equal(out.input_hash, in.input_hash);
    assert_int_equal(out.input_len, strlen(INPUT));
    assert_string_equal(out.input_json, INPUT);
    assert_int_equal(out.recommendation_len, strlen(OUTPUT));
    assert_string_equal(out.recommendation_json, OUTPUT);
    assert_int_equal(out.created_us, at);
    gs_review_clear(&out);

    /* Tenant isolation. */
    EXPECT_ERR(gs_review_get(f.rt, "globex", in.review_id, &out), BASE_ERR_NOT_FOUND);
    char missing[GS_ID_BUF];
    fake_id(missing, "rv_", 999);
    EXPECT_ERR(gs_review_get(f.rt, "acme", missing, &out), BASE_ERR_NOT_FOUND);

    /* NO_PATHWAY: no pathway and no rule. */
    mk_review(&f, &in, "acme", 2, "ref-2", "clinician-a", 5, "");
    MUST(gs_review_insert(f.rt, &in, NULL));
    mk_review(&f, &in, "acme", 3, "ref-2", "clinician-a", 1, "");
    EXPECT_ERR(gs_review_insert(f.rt, &in, NULL), BASE_ERR_INVALID);
    mk_review(&f, &in, "acme", 3, "ref/2", "clinician-a", 1, "ckd");
    EXPECT_ERR(gs_review_insert(f.rt, &in, NULL), BASE_ERR_INVALID);

    /* The bundle must be published, with that hash. */
    mk_review(&f, &in, "acme", 4, "ref-3", "clinician-a", 1, "ckd");
    snprintf(in.bundle_version, sizeof in.bundle_version, "3.0.0");
    EXPECT_ERR(gs_review_insert(f.rt, &in, NULL), BASE_ERR_CONFLICT);
    mk_review(&f, &in, "acme", 4, "ref-3", "clinician-a", 1, "ckd");
    fake_hash(in.bundle_hash, 77);
    EXPECT_ERR(gs_review_insert(f.rt, &in, NULL), BASE_ERR_CONFLICT);

    /* Reviews survive a re-open: a new pool (new connections, new sessions). */
    fake_id(missing, "rv_", 1);
    db_pool_destroy(f.rt);
    char runtime[256];
    conninfo_for(g_runtime, runtime);
    f.rt = testdb_pool(runtime, f.schema, 2);
    MUST(gs_review_get(f.rt, "acme", missing, &out));
    assert_int_equal(out.created_us, at);
    assert_string_equal(out.input_json, INPUT);
    gs_review_clear(&out);
    fx_close(&f);
}

/* The review writer (group commit): 16 threads store 25 reviews each at once. JSON that array quoting must
 * keep intact (quotes, backslashes, commas, braces, the word NULL, non-ASCII) comes back byte for byte; a
 * review of an unpublished bundle version and a review id already stored fail only their own callers, with
 * gs_review_insert's answers, even when they shared a batch with good reviews. */
#define WRITER_THREADS 16
#define WRITER_EACH    25
static const char WRITER_INPUT[] =
    "{\"note\":\"a \\\"quoted\\\" \\\\ back, {brace} NULL \u00e9\u00e8 \\u0000x\"}";

typedef struct writer_arg {
    fx *f;
    gs_writer *w;
    unsigned t;
    base_err errs[WRITER_EACH];
    int64_t at[WRITER_EACH];
} writer_arg;

static void *writer_thread(void *arg)
{
    writer_arg *a = arg;
    for (unsigned i = 0; i < WRITER_EACH; i++) {
        unsigned n = 10000 + a->t * 100 + i;
        gs_review r;
        mk_review(a->f, &r, "acme", n, "ref-w", "clinician-a", 1, "ckd");
        r.input_json = (char *)WRITER_INPUT;
        r.input_len = strlen(WRITER_INPUT);
        if (i % 10 == 3)
            snprintf(r.bundle_version, sizeof r.bundle_version, "9.9.9"); /* never published */
        if (i % 10 == 7)
            fake_id(r.review_id, "rv_", 1); /* stored before the threads start */
        base_result res = gs_writer_store(a->w, &r, &a->at[i]);
        a->errs[i] = res.err;
    }
    return NULL;
}

static void test_review_writer(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    gs_writer *w = NULL;
    MUST(gs_writer_open(f.rt, &w));
    gs_review first;
    mk_review(&f, &first, "acme", 1, "ref-w", "clinician-a", 1, "ckd");
    int64_t at1 = 0;
    MUST(gs_writer_store(w, &first, &at1)); /* a lone caller */
    assert_true(at1 > 0);

    /* Checked before it joins a batch. */
    gs_review bad;
    mk_review(&f, &bad, "acme", 2, "ref/w", "clinician-a", 1, "ckd");
    EXPECT_ERR(gs_writer_store(w, &bad, NULL), BASE_ERR_INVALID);

    pthread_t th[WRITER_THREADS];
    writer_arg args[WRITER_THREADS];
    for (unsigned t = 0; t < WRITER_THREADS; t++) {
        args[t] = (writer_arg){.f = &f, .w = w, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, writer_thread, &args[t]), 0);
    }
    for (unsigned t = 0; t < WRITER_THREADS; t++)
        pthread_join(th[t], NULL);
    size_t commits = 0, stored = 0, alone = 0;
    gs_writer_stats(w, &commits, &stored, &alone);
    gs_writer_close(w);

    size_t good = 0;
    for (unsigned t = 0; t < WRITER_THREADS; t++) {
        for (unsigned i = 0; i < WRITER_EACH; i++) {
            char id[GS_ID_BUF];
            fake_id(id, "rv_", 10000 + t * 100 + i);
            gs_review out;
            if (i % 10 == 3) {
                assert_int_equal(args[t].errs[i], BASE_ERR_CONFLICT);
                EXPECT_ERR(gs_review_get(f.rt, "acme", id, &out), BASE_ERR_NOT_FOUND);
            } else if (i % 10 == 7) {
                assert_int_equal(args[t].errs[i], BASE_ERR_EXISTS);
                EXPECT_ERR(gs_review_get(f.rt, "acme", id, &out), BASE_ERR_NOT_FOUND);
            } else {
                assert_int_equal(args[t].errs[i], BASE_OK);
                MUST(gs_review_get(f.rt, "acme", id, &out));
                assert_int_equal(out.input_len, strlen(WRITER_INPUT));
                assert_memory_equal(out.input_json, WRITER_INPUT, out.input_len);
                assert_string_equal(out.recommendation_json, OUTPUT);
                assert_string_equal(out.pathway_id, "ckd");
                assert_int_equal(out.created_us, args[t].at[i]);
                gs_review_clear(&out);
                good++;
            }
        }
    }
    const char *p[] = {"acme"};
    assert_int_equal(query_int(f.rt, "SELECT count(*) FROM reviews WHERE tenant_id = $1", 1, p),
                     (int64_t)good + 1);
    /* Every call went through the writer; some shared a commit (the stats count flushes, failed ones too). */
    assert_int_equal(stored, 1 + WRITER_THREADS * WRITER_EACH);
    assert_true(commits <= stored);
    /* A bad row's batch is stored one by one: at most every call, and at least the 64 bad ones when they
     * shared batches with others (some batch did when there were fewer flushes than calls). */
    assert_true(alone <= stored);
    if (commits < stored)
        assert_true(alone > 0);
    print_message("review writer: %zu reviews in %zu flushes, %zu stored alone\n", stored, commits, alone);
    fx_close(&f);
}

/* The database refusing the writer (its role may not log in; its connections ended): every caller gets
 * UNAVAILABLE, nothing is stored, and no review is tried again alone (that would hold the queue for a
 * connect timeout per row). When the role may log in again, the writer stores again. */
typedef struct down_arg {
    fx *f;
    gs_writer *w;
    unsigned n;
    pthread_barrier_t *go;
    base_err err;
} down_arg;

static void *down_thread(void *arg)
{
    down_arg *a = arg;
    gs_review r;
    mk_review(a->f, &r, "acme", 20000 + a->n, "ref-down", "clinician-a", 1, "ckd");
    pthread_barrier_wait(a->go);
    a->err = gs_writer_store(a->w, &r, NULL).err;
    return NULL;
}

static int64_t backends_of(const char *role)
{
    const char *p[] = {role};
    return query_int(g_root, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", 1, p);
}

/* Whatever the test did: the runtime role may log in again (the other tests use it). */
static int role_login_again(void **state)
{
    (void)state;
    testdb_with_role(
        g_root, g_runtime, NULL,
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I LOGIN', current_setting('alma.test_role')); END $$");
    return 0;
}

static void test_review_writer_database_down(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    gs_writer *w = NULL;
    MUST(gs_writer_open(f.rt, &w));
    testdb_with_role(
        g_root, g_runtime, NULL,
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I NOLOGIN', current_setting('alma.test_role')); END $$");
    testdb_with_role(g_root, g_runtime, NULL,
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = current_setting('alma.test_role')");
    for (int i = 0; i < 100 && backends_of(g_runtime) > 0; i++) /* terminate only signals */
        usleep(50 * 1000);
    assert_int_equal(backends_of(g_runtime), 0);

    enum { DOWN_THREADS = 16 };
    pthread_t th[DOWN_THREADS];
    down_arg args[DOWN_THREADS];
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, DOWN_THREADS), 0);
    for (unsigned t = 0; t < DOWN_THREADS; t++) {
        args[t] = (down_arg){.f = &f, .w = w, .n = t, .go = &go};
        assert_int_equal(pthread_create(&th[t], NULL, down_thread, &args[t]), 0);
    }
    for (unsigned t = 0; t < DOWN_THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].err, BASE_ERR_UNAVAILABLE);
    }
    pthread_barrier_destroy(&go);
    size_t commits = 0, stored = 0, alone = 0;
    gs_writer_stats(w, &commits, &stored, &alone);
    assert_int_equal(stored, DOWN_THREADS);
    assert_int_equal(alone, 0);
    print_message("database down: %zu calls in %zu flushes\n", stored, commits);

    testdb_with_role(
        g_root, g_runtime, NULL,
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I LOGIN', current_setting('alma.test_role')); END $$");
    const char *p[] = {"acme"};
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM reviews WHERE tenant_id = $1", 1, p), 0);
    gs_review r;
    mk_review(&f, &r, "acme", 30000, "ref-up", "clinician-a", 1, "ckd");
    int64_t at = 0;
    MUST(gs_writer_store(w, &r, &at));
    assert_true(at > 0);
    gs_writer_close(w);
    fx_close(&f);
}

static void test_decisions(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    add_review(&f, "acme", 1, "ref-1", "clinician-a", 1, "ckd");
    add_review(&f, "acme", 2, "ref-2", "clinician-a", 2, "ckd");
    add_review(&f, "globex", 3, "ref-1", "clinician-g", 1, "ckd");

    add_decision(&f, "acme", 1, 1, 1, 0);
    gs_decision d = mk_decision("acme", 2, 1, 2, 1);
    EXPECT_ERR(gs_decision_insert(f.rt, &d, NULL), BASE_ERR_EXISTS);
    assert_string_equal(base_error_message(), "review already decided");

    d = mk_decision("acme", 3, 2, 2, 0); /* override without a reason */
    EXPECT_ERR(gs_decision_insert(f.rt, &d, NULL), BASE_ERR_INVALID);
    d = mk_decision("acme", 3, 2, 1, 4); /* accept with a reason */
    EXPECT_ERR(gs_decision_insert(f.rt, &d, NULL), BASE_ERR_INVALID);
    d = mk_decision("acme", 3, 3, 1, 0); /* globex's review */
    EXPECT_ERR(gs_decision_insert(f.rt, &d, NULL), BASE_ERR_NOT_FOUND);
    d = mk_decision("acme", 3, 404, 1, 0);
    EXPECT_ERR(gs_decision_insert(f.rt, &d, NULL), BASE_ERR_NOT_FOUND);
    d = mk_decision("acme", 3, 2, 2, 6);
    memset(d.comment, 'x', sizeof d.comment); /* not terminated within 1000 bytes */
    EXPECT_ERR(gs_decision_insert(f.rt, &d, NULL), BASE_ERR_INVALID);
    add_decision(&f, "acme", 3, 2, 2, 6);
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM decisions", 0, NULL), 2);

    /* The schema refuses the same mistakes from any caller. */
    EXPECT_ERR(
        exec_sql(f.rt,
                 "INSERT INTO decisions (decision_id, review_id, tenant_id, clinician_id, kind, reason) "
                 "VALUES ('dn_"
                 "0000000000000000000000000000aaaa', 'rv_"
                 "00000000000000000000000000000003', "
                 "'acme', 'x', 1, 0)",
                 0, NULL),
        BASE_ERR_CONFLICT); /* the review is globex's */
    MUST(exec_sql(f.root, "SELECT 1", 0, NULL));
    add_review(&f, "acme", 4, "ref-4", "clinician-a", 1, "ckd");
    EXPECT_ERR(
        exec_sql(f.rt,
                 "INSERT INTO decisions (decision_id, review_id, tenant_id, clinician_id, kind, reason) "
                 "VALUES ('dn_"
                 "0000000000000000000000000000bbbb', 'rv_"
                 "00000000000000000000000000000004', "
                 "'acme', 'x', 2, 0)",
                 0, NULL),
        BASE_ERR_CONFLICT);
    EXPECT_ERR(
        exec_sql(f.rt,
                 "INSERT INTO decisions (decision_id, review_id, tenant_id, clinician_id, kind, reason) "
                 "VALUES ('dn_"
                 "0000000000000000000000000000bbbb', 'rv_"
                 "00000000000000000000000000000004', "
                 "'acme', 'x', 1, 3)",
                 0, NULL),
        BASE_ERR_CONFLICT);
    fx_close(&f);
}

static void test_history(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    int64_t t1 = add_review(&f, "acme", 1, "ref-1", "clinician-a", 4, "ckd");
    add_review(&f, "acme", 2, "ref-2", "clinician-a", 1, "ckd");
    int64_t t3 = add_review(&f, "acme", 3, "ref-1", "clinician-a", 2, "ckd");
    add_review(&f, "globex", 4, "ref-1", "clinician-g", 1, "ckd");
    int64_t t5 = add_review(&f, "acme", 5, "ref-1", "clinician-b", 1, "ckd");
    assert_true(t1 < t3 && t3 < t5);
    add_decision(&f, "acme", 1, 5, 2, 3);
    add_decision(&f, "acme", 2, 3, 1, 0);
    add_decision(&f, "globex", 3, 4, 1, 0);

    gs_review *rs = NULL;
    gs_decision *ds = NULL;
    size_t nr = 0, nd = 0;
    MUST(gs_referral_history(f.rt, "acme", "ref-1", &rs, &nr, &ds, &nd));
    assert_int_equal(nr, 3);
    char id[GS_ID_BUF];
    fake_id(id, "rv_", 1);
    assert_string_equal(rs[0].review_id, id);
    assert_int_equal(rs[0].created_us, t1);
    fake_id(id, "rv_", 3);
    assert_string_equal(rs[1].review_id, id);
    fake_id(id, "rv_", 5);
    assert_string_equal(rs[2].review_id, id);
    assert_string_equal(rs[2].input_json, INPUT);
    assert_int_equal(nd, 2);
    fake_id(id, "dn_", 1);
    assert_string_equal(ds[0].decision_id, id); /* decided first, though its review is the latest */
    fake_id(id, "rv_", 5);
    assert_string_equal(ds[0].review_id, id);
    assert_int_equal(ds[0].kind, 2);
    assert_int_equal(ds[0].reason, 3);
    assert_string_equal(ds[0].comment, "free text, may name the patient");
    assert_string_equal(ds[0].tenant_id, "acme");
    assert_true(ds[0].created_us > t5);
    fake_id(id, "dn_", 2);
    assert_string_equal(ds[1].decision_id, id);
    assert_true(ds[1].created_us > ds[0].created_us);
    gs_reviews_free(rs, nr);
    free(ds);

    MUST(gs_referral_history(f.rt, "globex", "ref-1", &rs, &nr, &ds, &nd));
    assert_int_equal(nr, 1);
    assert_int_equal(nd, 1);
    assert_string_equal(rs[0].tenant_id, "globex");
    gs_reviews_free(rs, nr);
    free(ds);
    MUST(gs_referral_history(f.rt, "acme", "ref-none", &rs, &nr, &ds, &nd));
    assert_int_equal(nr, 0);
    assert_int_equal(nd, 0);
    gs_reviews_free(rs, nr);
    free(ds);
    fx_close(&f);
}

/* ---- What-if ------------------------------------------------------------------------------------------- */

static void expect_ids(gs_review *rs, size_t n, const unsigned *want, size_t nwant)
{
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++) {
        char id[GS_ID_BUF];
        fake_id(id, "rv_", want[i]);
        assert_string_equal(rs[i].review_id, id);
        assert_string_equal(rs[i].input_json, INPUT);
    }
}

static void test_whatif(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    /* In this order: a1, b1, c1, a2, c2 (and another tenant's review of A in between). */
    int64_t ta1 = add_review(&f, "acme", 1, "A", "clinician-a", 1, "ckd");
    add_review(&f, "acme", 2, "B", "clinician-a", 1, "ckd");
    int64_t tc1 = add_review(&f, "acme", 3, "C", "clinician-a", 1, "ckd");
    add_review(&f, "globex", 9, "A", "clinician-g", 1, "ckd");
    add_review(&f, "acme", 4, "A", "clinician-a", 2, "ckd");
    int64_t tc2 = add_review(&f, "acme", 5, "C", "clinician-a", 3, "ckd");

    gs_review *rs = NULL;
    size_t n = 0;
    MUST(gs_reviews_for_whatif(f.rt, "acme", NULL, 0, 0, 0, 100, &rs, &n));
    expect_ids(rs, n, (const unsigned[]){2, 4, 5}, 3);
    gs_reviews_free(rs, n);

    /* The latest review made in the window, [start, end). */
    MUST(gs_reviews_for_whatif(f.rt, "acme", NULL, 0, ta1, tc2, 100, &rs, &n));
    expect_ids(rs, n, (const unsigned[]){2, 3, 4}, 3);
    gs_reviews_free(rs, n);
    MUST(gs_reviews_for_whatif(f.rt, "acme", NULL, 0, tc1, 0, 100, &rs, &n));
    expect_ids(rs, n, (const unsigned[]){4, 5}, 2);
    gs_reviews_free(rs, n);
    MUST(gs_reviews_for_whatif(f.rt, "acme", NULL, 0, 0, ta1, 100, &rs, &n));
    assert_int_equal(n, 0);
    gs_reviews_free(rs, n);

    /* Listed referrals. */
    const char *ids[] = {"C", "A"};
    MUST(gs_reviews_for_whatif(f.rt, "acme", ids, 2, 0, 0, 100, &rs, &n));
    expect_ids(rs, n, (const unsigned[]){4, 5}, 2);
    gs_reviews_free(rs, n);
    const char *ids2[] = {"B", "nope"};
    MUST(gs_reviews_for_whatif(f.rt, "acme", ids2, 2, 0, 0, 100, &rs, &n));
    expect_ids(rs, n, (const unsigned[]){2}, 1);
    gs_reviews_free(rs, n);
    MUST(gs_reviews_for_whatif(f.rt, "globex", ids, 2, 0, 0, 100, &rs, &n));
    expect_ids(rs, n, (const unsigned[]){9}, 1);
    gs_reviews_free(rs, n);

    /* At most max, the oldest. */
    MUST(gs_reviews_for_whatif(f.rt, "acme", NULL, 0, 0, 0, 2, &rs, &n));
    expect_ids(rs, n, (const unsigned[]){2, 4}, 2);
    gs_reviews_free(rs, n);
    EXPECT_ERR(gs_reviews_for_whatif(f.rt, "acme", NULL, 0, 0, 0, 0, &rs, &n), BASE_ERR_INVALID);
    EXPECT_ERR(gs_reviews_for_whatif(f.rt, "acme", NULL, 0, 0, 0, 10001, &rs, &n), BASE_ERR_INVALID);
    const char *bad[] = {"A", "x,y}"};
    EXPECT_ERR(gs_reviews_for_whatif(f.rt, "acme", bad, 2, 0, 0, 10, &rs, &n), BASE_ERR_INVALID);
    fx_close(&f);
}

/* ---- Concordance --------------------------------------------------------------------------------------- */

typedef struct want_row {
    const char *pathway, *clinician;
    int64_t reviews, refer, workup, manage, insufficient, no_pathway, decided, accepted, overridden;
    int64_t reasons[GS_REASONS];
} want_row;

static void expect_rows(const gs_concordance_row *rows, size_t n, const want_row *want, size_t nwant)
{
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++) {
        const gs_concordance_row *g = &rows[i];
        const want_row *w = &want[i];
        assert_string_equal(g->pathway_id, w->pathway);
        assert_string_equal(g->clinician_id, w->clinician);
        assert_int_equal(g->reviews, w->reviews);
        assert_int_equal(g->refer, w->refer);
        assert_int_equal(g->workup, w->workup);
        assert_int_equal(g->manage, w->manage);
        assert_int_equal(g->insufficient, w->insufficient);
        assert_int_equal(g->no_pathway, w->no_pathway);
        assert_int_equal(g->decided, w->decided);
        assert_int_equal(g->accepted, w->accepted);
        assert_int_equal(g->overridden, w->overridden);
        for (int k = 0; k < GS_REASONS; k++)
            assert_int_equal(g->override_reasons[k], w->reasons[k]);
    }
}

static void test_concordance(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    /* outcome: 1 REFER, 2 WORKUP, 3 MANAGE, 4 INSUFFICIENT, 5 NO_PATHWAY */
    int64_t t1 = add_review(&f, "acme", 1, "r1", "alice", 1, "ckd");
    add_review(&f, "acme", 2, "r2", "alice", 1, "ckd");
    add_review(&f, "acme", 3, "r3", "alice", 2, "ckd");
    add_review(&f, "acme", 4, "r4", "alice", 3, "ckd");
    int64_t t5 = add_review(&f, "acme", 5, "r5", "bob", 1, "ckd");
    add_review(&f, "acme", 6, "r6", "bob", 4, "ckd");
    add_review(&f, "acme", 7, "r7", "alice", 3, "knee");
    add_review(&f, "acme", 8, "r8", "bob", 5, "");
    add_review(&f, "globex", 9, "r9", "alice", 1, "ckd");
    add_decision(&f, "acme", 1, 1, 1, 0);
    add_decision(&f, "acme", 2, 2, 2, 1);
    add_decision(&f, "acme", 3, 3, 2, 3);
    add_decision(&f, "acme", 5, 5, 1, 0);
    add_decision(&f, "acme", 6, 6, 2, 3);
    add_decision(&f, "acme", 7, 7, 1, 0);
    add_decision(&f, "globex", 9, 9, 2, 6);

    gs_concordance_row *rows = NULL;
    size_t n = 0;
    MUST(gs_concordance(f.rt, "acme", 0, 0, NULL, NULL, &rows, &n));
    const want_row all[] = {
        {"", "", 1, 0, 0, 0, 0, 1, 0, 0, 0, {0}},
        {"", "bob", 1, 0, 0, 0, 0, 1, 0, 0, 0, {0}},
        {"ckd", "", 6, 3, 1, 1, 1, 0, 5, 2, 3, {0, 1, 0, 2, 0, 0, 0}},
        {"ckd", "alice", 4, 2, 1, 1, 0, 0, 3, 1, 2, {0, 1, 0, 1, 0, 0, 0}},
        {"ckd", "bob", 2, 1, 0, 0, 1, 0, 2, 1, 1, {0, 0, 0, 1, 0, 0, 0}},
        {"knee", "", 1, 0, 0, 1, 0, 0, 1, 1, 0, {0}},
        {"knee", "alice", 1, 0, 0, 1, 0, 0, 1, 1, 0, {0}},
    };
    expect_rows(rows, n, all, BASE_ARRAY_LEN(all));
    free(rows);

    MUST(gs_concordance(f.rt, "acme", 0, 0, "ckd", "", &rows, &n));
    expect_rows(rows, n, all + 2, 3);
    free(rows);

    MUST(gs_concordance(f.rt, "acme", 0, 0, NULL, "bob", &rows, &n));
    const want_row bob[] = {
        {"", "", 1, 0, 0, 0, 0, 1, 0, 0, 0, {0}},
        {"", "bob", 1, 0, 0, 0, 0, 1, 0, 0, 0, {0}},
        {"ckd", "", 2, 1, 0, 0, 1, 0, 2, 1, 1, {0, 0, 0, 1, 0, 0, 0}},
        {"ckd", "bob", 2, 1, 0, 0, 1, 0, 2, 1, 1, {0, 0, 0, 1, 0, 0, 0}},
    };
    expect_rows(rows, n, bob, BASE_ARRAY_LEN(bob));
    free(rows);

    /* Half-open: [t1, t5) holds r1..r4 (alice's ckd reviews) only. */
    MUST(gs_concordance(f.rt, "acme", t1, t5, NULL, NULL, &rows, &n));
    const want_row early[] = {
        {"ckd", "", 4, 2, 1, 1, 0, 0, 3, 1, 2, {0, 1, 0, 1, 0, 0, 0}},
        {"ckd", "alice", 4, 2, 1, 1, 0, 0, 3, 1, 2, {0, 1, 0, 1, 0, 0, 0}},
    };
    expect_rows(rows, n, early, BASE_ARRAY_LEN(early));
    free(rows);
    MUST(gs_concordance(f.rt, "acme", t5, 0, "knee", NULL, &rows, &n));
    expect_rows(rows, n, all + 5, 2);
    free(rows);

    MUST(gs_concordance(f.rt, "initech", 0, 0, NULL, NULL, &rows, &n));
    assert_int_equal(n, 0);
    free(rows);
    EXPECT_ERR(gs_concordance(f.rt, "acme", 0, 0, "Bad Pathway", NULL, &rows, &n), BASE_ERR_INVALID);
    fx_close(&f);
}

/* ---- Append-only --------------------------------------------------------------------------------------- */

static void test_append_only(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    add_review(&f, "acme", 1, "ref-1", "clinician-a", 1, "ckd");
    add_decision(&f, "acme", 1, 1, 2, 2);

    static const char *const refused[] = {
        "UPDATE reviews SET outcome = 2",
        "UPDATE reviews SET input_json = '{}'",
        "DELETE FROM reviews",
        "TRUNCATE reviews CASCADE",
        "UPDATE decisions SET reason = 1",
        "UPDATE decisions SET comment = ''",
        "DELETE FROM decisions",
        "TRUNCATE decisions",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(refused); i++) {
        EXPECT_ERR(exec_sql(f.rt, refused[i], 0, NULL), BASE_ERR_DENIED);   /* no privilege */
        EXPECT_ERR(exec_sql(f.root, refused[i], 0, NULL), BASE_ERR_DENIED); /* the triggers */
    }
    /* The runtime role cannot do DDL, read the migrations table or get around the triggers. */
    EXPECT_ERR(exec_sql(f.rt, "SELECT count(*) FROM schema_migrations", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "CREATE TABLE sneaky (a int)", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "ALTER TABLE reviews DISABLE TRIGGER reviews_append_only", 0, NULL),
               BASE_ERR_DENIED);
    EXPECT_ERR(gs_migrate(f.rt, f.schema), BASE_ERR_DENIED);

    assert_int_equal(query_int(f.root, "SELECT count(*) FROM reviews WHERE outcome = 1", 0, NULL), 1);
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM decisions WHERE reason = 2", 0, NULL), 1);
    /* Migrating again is a no-op and keeps the grants. */
    char owner[256];
    conninfo_for(g_owner, owner);
    MUST(db_migrate_as_owner(f.rt, owner, f.schema, "alma-test", gs_migrate));
    gs_review r;
    char id[GS_ID_BUF];
    fake_id(id, "rv_", 1);
    MUST(gs_review_get(f.rt, "acme", id, &r));
    gs_review_clear(&r);
    fx_close(&f);
}

/* The table's own rules on ids (migrations 0001 and 0003): each shape at its limits stored, one step past
 * them refused with a check violation (SQLSTATE 23514), written straight into the table as the superuser
 * so that the service's own validation is not what refuses them. */
static void test_row_shapes(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    publish1(&f);
    char hex32[33], hex64[65], t63[64], t64[65], r64[65], r65[66], p64[65], p65[66], e32[33], e33[34];
    fake_hash(hex64, 7);
    memcpy(hex32, hex64, 32);
    hex32[32] = '\0';
    memset(t63, 'a', 63), t63[63] = '\0';
    memset(t64, 'a', 64), t64[64] = '\0';
    memset(r64, 'R', 64), r64[64] = '\0';
    memset(r65, 'R', 65), r65[65] = '\0';
    memset(p64, 'p', 64), p64[64] = '\0';
    memset(p65, 'p', 65), p65[65] = '\0';
    memset(e32, 'E', 32), e32[32] = '\0';
    memset(e33, 'E', 33), e33[33] = '\0';
    /* review_id (without "rv_"), tenant, referral, patient (without "pt_"), pathway, rule, engine, input hash
     */
    typedef struct {
        const char *v[8];
        bool ok;
    } row;
    char id_upper[33], hash63[64], hash65[66], hash_upper[65];
    snprintf(id_upper, sizeof id_upper, "%s", hex32);
    id_upper[0] = 'A';
    snprintf(hash63, sizeof hash63, "%.63s", hex64);
    snprintf(hash65, sizeof hash65, "%s0", hex64);
    snprintf(hash_upper, sizeof hash_upper, "%s", hex64);
    hash_upper[63] = 'F';
    const row rows[] = {
        {{NULL}, true}, /* every column at the fixture's values */
        {{[1] = "ab"}, true},
        {{[1] = t63}, true},
        {{[1] = t64}, false},
        {{[1] = "a"}, false},
        {{[1] = "-ab"}, false},
        {{[1] = "Ab"}, false},
        {{[2] = r64}, true},
        {{[2] = r65}, false},
        {{[2] = ""}, false},
        {{[2] = "a b"}, false},
        {{[3] = "0123456789abcdef0123456789abcde"}, false},
        {{[3] = "0123456789abcdef0123456789abcdef0"}, false},
        {{[3] = "0123456789ABCDEF0123456789abcdef"}, false},
        {{[4] = p64, [5] = p64}, true},
        {{[4] = p65}, false},
        {{[5] = p65}, false},
        {{[4] = "_x"}, false},
        {{[6] = e32}, true},
        {{[6] = e33}, false},
        {{[6] = ".x"}, false},
        {{[7] = hash63}, false},
        {{[7] = hash65}, false},
        {{[7] = hash_upper}, false},
        {{[0] = "0123456789abcdef0123456789abcde"}, false},
        {{[0] = "0123456789abcdef0123456789abcdef0"}, false},
        {{[0] = id_upper}, false},
    };
    static const char sql[] =
        "INSERT INTO reviews (review_id, tenant_id, referral_id, patient_ref, clinician_id, outcome, "
        "urgency, "
        "pathway_id, rule_id, engine_version, bundle_id, bundle_version, bundle_hash, input_hash, "
        "input_json, "
        "recommendation_json) VALUES ('rv_' || $1, $2, $3, 'pt_' || $4, 'clinician-a', 1, 0, $5, $6, $7, $8, "
        "'1.0.0', $9, $10, '{}', '{}')";
    int stored = 0;
    for (size_t i = 0; i < BASE_ARRAY_LEN(rows); i++) {
        char id[33];
        snprintf(id, sizeof id, "%032zx", i + 100);
        const char *v[8] = {
            id,   "acme", "ref-1", "0123456789abcdef0123456789abcdef", "ckd", "default", "alma-guideline/1",
            hex64};
        for (int c = 0; c < 8; c++)
            if (rows[i].v[c])
                v[c] = rows[i].v[c];
        const char *p[10] = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], BID, f.hash1, v[7]};
        base_result r = exec_sql(f.root, sql, 10, p);
        if (rows[i].ok) {
            if (!base_is_ok(r))
                fail_msg("row %zu: refused: %s", i, base_error_message());
            stored++;
        } else if (r.err != BASE_ERR_CONFLICT || strcmp(db_last_sqlstate(), "23514") != 0) {
            fail_msg("row %zu: %s (%s), want a check violation", i,
                     base_is_ok(r) ? "stored" : base_err_name(r.err),
                     base_is_ok(r) ? "" : base_error_message());
        }
    }
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM reviews", 0, NULL), stored);
    /* decisions: decision_id and tenant_id */
    char rv[36];
    snprintf(rv, sizeof rv, "rv_%032x", 100);
    static const char dsql[] =
        "INSERT INTO decisions (decision_id, review_id, tenant_id, clinician_id, kind, "
        "reason) VALUES ('dn_' || $1, $2, $3, 'clinician-a', 1, 0)";
    const char *bad[][2] = {{"0123456789abcdef0123456789abcde", "acme"},
                            {"0123456789abcdef0123456789abcdef0", "acme"},
                            {"0123456789abcdef0123456789abcdeF", "acme"},
                            {"0123456789abcdef0123456789abcdef", t64}};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        base_result r = exec_sql(f.root, dsql, 3, (const char *const[]){bad[i][0], rv, bad[i][1]});
        if (r.err != BASE_ERR_CONFLICT || strcmp(db_last_sqlstate(), "23514") != 0)
            fail_msg("decision %zu: %s (%s), want a check violation", i,
                     base_is_ok(r) ? "stored" : base_err_name(r.err),
                     base_is_ok(r) ? "" : base_error_message());
    }
    MUST(exec_sql(f.root, dsql, 3, (const char *const[]){"0123456789abcdef0123456789abcdef", rv, "acme"}));
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM decisions", 0, NULL), 1);
    fx_close(&f);
}

/* ---- Group setup: an owner and a runtime role -----------------------------------------------------------
 */

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    snprintf(g_port, sizeof g_port, "5432");
    const char *colon = strrchr(g_uri, ':'); /* postgresql://postgres@127.0.0.1:PORT/postgres */
    if (colon) {
        size_t n = strcspn(colon + 1, "/");
        snprintf(g_port, sizeof g_port, "%.*s", (int)n, colon + 1);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "gst_%d_%lx", (int)getpid(),
             (unsigned long)(ts.tv_nsec ^ ts.tv_sec) & 0xfffff);
    snprintf(g_owner, sizeof g_owner, "%s_own", g_prefix);
    snprintf(g_runtime, sizeof g_runtime, "%s_rt", g_prefix);
    MUST(db_pool_create(g_uri, 2, 5000, &g_root));
    testdb_role_create(g_root, g_owner, PW, true);
    testdb_role_create(g_root, g_runtime, PW, false);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testdb_role_drop(g_root, g_runtime);
    testdb_role_drop(g_root, g_owner);
    db_pool_destroy(g_root);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bundles),
        cmocka_unit_test(test_concurrent_activation),
        cmocka_unit_test(test_reviews),
        cmocka_unit_test(test_review_writer),
        cmocka_unit_test_teardown(test_review_writer_database_down, role_login_again),
        cmocka_unit_test(test_decisions),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_whatif),
        cmocka_unit_test(test_concordance),
        cmocka_unit_test(test_append_only),
        cmocka_unit_test(test_row_shapes),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
