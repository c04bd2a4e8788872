/* The audit store against the real PostgreSQL of the "pg" fixture. Every test works in a schema of its own
 * (ast_<pid>_<random>_<n>, the store's cfg.schema), dropped at the end. */
#include "checkpoint.h"
#include "db/db.h"
#include "merkle.h"
#include "reader.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define ORIGIN "alma.test/audit"

static char g_uri[512];
static char g_prefix[40];
static int g_nschema;
static db_pool *g_root; /* superuser, no search_path */
static acrypto_ed25519_key *g_key;
static char *g_vkey;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Fixture: one schema, a superuser pool in it, a store --------------------------------------------- */

typedef struct fx {
    char schema[64];
    db_pool *pool;  /* the store's */
    db_pool *admin; /* superuser, search_path = schema */
    audit_store *store;
} fx;

static audit_store_config store_cfg(fx *f)
{
    audit_store_config cfg = {.pool = f->pool,
                              .schema = f->schema,
                              .origin = ORIGIN,
                              .key = g_key,
                              .max_wait_us = -1,
                              .checkpoint_interval_ms = 3600 * 1000};
    return cfg;
}

static void fx_open(fx *f, const char *conninfo)
{
    memset(f, 0, sizeof *f);
    snprintf(f->schema, sizeof f->schema, "%s_%d", g_prefix, g_nschema++);
    f->pool = testdb_pool(conninfo, f->schema, 8);
    f->admin = testdb_pool(g_uri, f->schema, 2);
    audit_store_config cfg = store_cfg(f);
    MUST(audit_store_open(&cfg, &f->store));
}

static void drop_schema(const char *schema)
{
    testdb_drop_schema(g_root, schema);
}

static void fx_close(fx *f)
{
    audit_store_close(f->store);
    db_pool_destroy(f->pool);
    db_pool_destroy(f->admin);
    drop_schema(f->schema);
}

static base_result admin_exec(fx *f, const char *sql)
{
    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(f->admin, 5000, &c));
    base_result r = db_exec(c, sql, 0, NULL, NULL);
    db_conn_release(c);
    return r;
}

static int64_t query_int(db_pool *pool, const char *sql)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, sql, 0, NULL, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

/* ---- Events ------------------------------------------------------------------------------------------ */

typedef struct enc_arg {
    char tag[32];
    int calls;
} enc_arg;

static base_result encode(void *arg, uint64_t seq, int64_t time_micros, char **ret_entry, size_t *ret_len)
{
    enc_arg *a = arg;
    a->calls++;
    char *b = malloc(128);
    if (!b)
        return base_fail(BASE_ERR_NOMEM, "test encoder: out of memory");
    int n =
        snprintf(b, 128, "{\"seq\":%" PRIu64 ",\"t\":%" PRId64 ",\"tag\":\"%s\"}", seq, time_micros, a->tag);
    *ret_entry = b;
    *ret_len = (size_t)n;
    return BASE_OK_RESULT;
}

static base_result encode_fail(void *arg, uint64_t seq, int64_t time_micros, char **ret_entry,
                               size_t *ret_len)
{
    (void)arg, (void)seq, (void)time_micros, (void)ret_entry, (void)ret_len;
    return base_fail(BASE_ERR_INVALID, "test encoder: refused");
}

/* Awkward for array literals on purpose: quotes, backslashes, commas, braces, spaces, the word NULL. */
#define TENANT "t\"1\\,{x} NULL"
#define ACTOR  "a b,\"c\"\\"

static audit_store_event event(enc_arg *a)
{
    audit_store_event ev = {.tenant_id = TENANT,
                            .action = 1,
                            .purpose = 2,
                            .outcome = 1,
                            .patient_ref = NULL,
                            .actor_id = ACTOR,
                            .encode = encode,
                            .encode_arg = a};
    return ev;
}

static uint64_t append_one(audit_store *s, const char *tag)
{
    enc_arg a = {0};
    snprintf(a.tag, sizeof a.tag, "%s", tag);
    audit_store_event ev = event(&a);
    uint64_t seq = 0;
    MUST(audit_store_append(s, &ev, &seq, NULL, NULL));
    return seq;
}

/* Every stored row: leaf hashes recomputed from entry, checked against the stored ones, seq 0..n-1. */
typedef struct rows {
    size_t n;
    uint8_t (*leaf)[32];
    char **entry;
} rows;

static void rows_load(db_pool *pool, rows *r)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, "SELECT seq, entry, leaf_hash FROM events ORDER BY seq", 0, NULL, &res));
    r->n = (size_t)db_result_ntuples(res);
    r->leaf = calloc(r->n + 1, sizeof *r->leaf);
    r->entry = calloc(r->n + 1, sizeof *r->entry);
    for (size_t i = 0; i < r->n; i++) {
        int64_t seq = -1;
        MUST(db_result_get_int64(res, (int)i, 0, &seq));
        assert_int_equal(seq, (int64_t)i);
        unsigned char *e = NULL, *h = NULL;
        size_t elen = 0, hlen = 0;
        MUST(db_result_get_bytea(res, (int)i, 1, &e, &elen));
        MUST(db_result_get_bytea(res, (int)i, 2, &h, &hlen));
        /* SHA-256(0x00 || entry), computed here without merkle.c. */
        unsigned char *buf = malloc(elen + 1);
        buf[0] = 0;
        memcpy(buf + 1, e, elen);
        MUST(acrypto_sha256(buf, elen + 1, r->leaf[i]));
        assert_int_equal(hlen, 32);
        assert_memory_equal(h, r->leaf[i], 32);
        r->entry[i] = calloc(1, elen + 1);
        memcpy(r->entry[i], e, elen);
        free(buf);
        free(e);
        free(h);
    }
    db_result_free(res);
    db_conn_release(c);
}

static void rows_free(rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->entry[i]);
    free(r->entry);
    free(r->leaf);
}

static base_result rows_leaf(void *ctx, uint64_t index, uint8_t ret_hash[32])
{
    rows *r = ctx;
    memcpy(ret_hash, r->leaf[index], 32);
    return BASE_OK_RESULT;
}

static void rows_root(rows *r, uint8_t root[32])
{
    audit_merkle_source src = {.leaf = rows_leaf, .ctx = r};
    MUST(audit_merkle_root(&src, r->n, root));
}

static void frontier_root(audit_store *s, uint64_t *size, uint8_t root[32])
{
    audit_merkle_frontier f;
    audit_store_frontier(s, &f);
    *size = audit_merkle_frontier_size(&f);
    MUST(audit_merkle_frontier_root(&f, root));
}

/* The stored leaf hash of seq i (a static buffer). */
static const uint8_t *got_leaf(fx *f, uint64_t i)
{
    static uint8_t h[32];
    db_conn *c = NULL;
    db_result *res = NULL;
    char seq[24];
    snprintf(seq, sizeof seq, "%" PRIu64, i);
    const char *p[] = {seq};
    MUST(db_pool_acquire(f->pool, 5000, &c));
    MUST(db_exec(c, "SELECT leaf_hash FROM events WHERE seq = $1::bigint", 1, p, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    unsigned char *d = NULL;
    size_t n = 0;
    MUST(db_result_get_bytea(res, 0, 0, &d, &n));
    assert_int_equal(n, 32);
    memcpy(h, d, 32);
    free(d);
    db_result_free(res);
    db_conn_release(c);
    return h;
}

/* ---- Tests ------------------------------------------------------------------------------------------- */

#define THREADS    64
#define PER_THREAD 50
#define TOTAL      (THREADS * PER_THREAD)

typedef struct worker {
    audit_store *s;
    int id;
    uint64_t seq[PER_THREAD];
    uint8_t leaf[PER_THREAD][32];
    int64_t time[PER_THREAD];
    base_err err;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        enc_arg a = {0};
        snprintf(a.tag, sizeof a.tag, "w%d-%d", w->id, i);
        audit_store_event ev = event(&a);
        if (i % 7 == 0)
            ev.patient_ref = "pt_0123456789abcdef0123456789abcdef";
        base_result r = audit_store_append(w->s, &ev, &w->seq[i], w->leaf[i], &w->time[i]);
        if (!base_is_ok(r)) {
            w->err = r.err;
            return NULL;
        }
    }
    return NULL;
}

static void test_concurrent_group_commit(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    static worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.s = f.store, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    rows r = {0};
    rows_load(f.pool, &r);
    assert_int_equal(r.n, TOTAL);
    static bool seen[TOTAL];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(w[i].err, BASE_OK);
        for (int j = 0; j < PER_THREAD; j++) {
            uint64_t seq = w[i].seq[j];
            assert_true(seq < TOTAL);
            assert_false(seen[seq]);
            seen[seq] = true;
            /* The returned leaf is the stored row's SHA-256(0x00 || entry), and the entry holds its seq,
             * time and this caller's tag. */
            assert_memory_equal(w[i].leaf[j], r.leaf[seq], 32);
            char want[128];
            snprintf(want, sizeof want, "{\"seq\":%" PRIu64 ",\"t\":%" PRId64 ",\"tag\":\"w%d-%d\"}", seq,
                     w[i].time[j], i, j);
            assert_string_equal(r.entry[seq], want);
        }
    }
    audit_store_stats st;
    audit_store_stats_get(f.store, &st);
    assert_int_equal(st.events, TOTAL);
    assert_true(st.batches < st.events);
    assert_int_equal(st.failed_batches, 0);
    print_message("group commit: %" PRIu64 " events in %" PRIu64 " batches\n", st.events, st.batches);

    /* The awkward strings survived the array literals, and NULL patient refs stayed NULL. */
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(f.pool, 5000, &c));
    MUST(db_exec(c,
                 "SELECT tenant_id, actor_id, count(*), count(patient_ref), min(action), max(purpose) "
                 "FROM events GROUP BY 1, 2",
                 0, NULL, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    assert_string_equal(db_result_get(res, 0, 0), TENANT);
    assert_string_equal(db_result_get(res, 0, 1), ACTOR);
    assert_string_equal(db_result_get(res, 0, 2), "3200");
    assert_string_equal(db_result_get(res, 0, 3), "512"); /* j % 7 == 0: 8 of 50 per thread */
    assert_string_equal(db_result_get(res, 0, 4), "1");
    assert_string_equal(db_result_get(res, 0, 5), "2");
    db_result_free(res);
    db_conn_release(c);

    uint8_t want[32], got[32];
    uint64_t size = 0;
    rows_root(&r, want);
    frontier_root(f.store, &size, got);
    assert_int_equal(size, TOTAL);
    assert_memory_equal(want, got, 32);
    rows_free(&r);

    audit_verify_report rep;
    MUST(audit_store_verify(f.store, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_OK);
    assert_int_equal(rep.leaves_checked, TOTAL);

    /* Every complete subtree was stored with the batch that closed it: n - popcount(n) of them. */
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM subtrees"), TOTAL - __builtin_popcount(TOTAL));
    /* Proofs read from the stored hashes verify against the root, for every leaf, in trees of every
     * size up to the log's (spot checks), with and without the cache. */
    audit_proof_cache *cache = audit_proof_cache_new();
    assert_non_null(cache);
    for (uint64_t i = 0; i < TOTAL; i++) {
        audit_merkle_proof proof;
        MUST(audit_read_inclusion_proof(f.pool, cache, i, TOTAL, &proof));
        MUST(audit_merkle_verify_inclusion(i, TOTAL, got_leaf(&f, i), proof.hashes, proof.len, want));
    }
    audit_proof_cache_free(cache);
    uint64_t sizes[] = {1, 2, 3, 7, 64, 65, 1000, 2047, 2048, TOTAL - 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint8_t old_root[32];
        rows part = {0};
        rows_load(f.pool, &part);
        part.n = sizes[k];
        rows_root(&part, old_root);
        part.n = TOTAL;
        rows_free(&part);
        audit_merkle_proof proof;
        MUST(audit_read_consistency_proof(f.pool, sizes[k], TOTAL, &proof));
        MUST(audit_merkle_verify_consistency(sizes[k], TOTAL, old_root, want, proof.hashes, proof.len));
        MUST(audit_read_inclusion_proof(f.pool, NULL, sizes[k] - 1, sizes[k], &proof));
        MUST(audit_merkle_verify_inclusion(sizes[k] - 1, sizes[k], got_leaf(&f, sizes[k] - 1), proof.hashes,
                                           proof.len, old_root));
    }
    audit_merkle_proof proof;
    assert_int_equal(audit_read_inclusion_proof(f.pool, NULL, 0, TOTAL + 1, &proof).err, BASE_ERR_NOT_FOUND);
    assert_int_equal(audit_read_inclusion_proof(f.pool, NULL, 5, 5, &proof).err, BASE_ERR_INVALID);
    assert_int_equal(audit_read_consistency_proof(f.pool, 6, 5, &proof).err, BASE_ERR_INVALID);
    fx_close(&f);
}

static void test_encoder_failure_fails_only_its_event(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    assert_int_equal(append_one(f.store, "a"), 0);
    audit_store_event ev = event(NULL);
    ev.encode = encode_fail;
    assert_int_equal(audit_store_append(f.store, &ev, NULL, NULL, NULL).err, BASE_ERR_INVALID);
    assert_int_equal(append_one(f.store, "b"), 1);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM events"), 2);
    fx_close(&f);
}

static void test_append_all_is_atomic(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    audit_read_checkpoint none;
    assert_int_equal(audit_read_latest_checkpoint(f.pool, &none).err, BASE_ERR_NOT_FOUND);
    assert_int_equal(append_one(f.store, "first"), 0);
    enc_arg a[5];
    audit_store_event evs[5];
    for (int i = 0; i < 5; i++) {
        memset(&a[i], 0, sizeof a[i]);
        snprintf(a[i].tag, sizeof a[i].tag, "g%d", i);
        evs[i] = event(&a[i]);
    }
    /* One event of the group cannot be encoded: nothing of the group is stored, and the error is its. */
    evs[3].encode = encode_fail;
    audit_store_result res[5];
    base_result r = audit_store_append_all(f.store, evs, 5, res);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "refused"));
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM events"), 1);
    /* The log continues without a gap; a good group gets consecutive seqs in order and one time. */
    evs[3].encode = encode;
    MUST(audit_store_append_all(f.store, evs, 5, res));
    for (int i = 0; i < 5; i++) {
        assert_int_equal(res[i].seq, (uint64_t)(1 + i));
        assert_int_equal(res[i].time_micros, res[0].time_micros);
    }
    assert_int_equal(append_one(f.store, "last"), 6);
    assert_int_equal(audit_store_append_all(f.store, evs, 0, res).err, BASE_ERR_INVALID);
    audit_verify_report rep;
    MUST(audit_store_verify(f.store, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_OK);
    assert_int_equal(rep.leaves_checked, 7);
    fx_close(&f);
}

typedef struct collected {
    size_t n;
    uint64_t seq[64];
    char tag[64][16];
} collected;

static base_result collect_row(void *arg, const audit_row *row)
{
    collected *c = arg;
    if (c->n >= 64)
        return base_fail(BASE_ERR_LIMIT, "test: too many rows");
    c->seq[c->n] = row->seq;
    const char *t = strstr(row->entry, "\"tag\":\"");
    snprintf(c->tag[c->n], sizeof c->tag[c->n], "%.*s", t ? 4 : 0, t ? t + 7 : "");
    /* The leaf hash delivered is SHA-256(0x00 || the entry delivered). */
    uint8_t leaf[32];
    BASE_GUARD(audit_merkle_leaf_hash(row->entry, row->entry_len, leaf));
    if (memcmp(leaf, row->leaf, 32) != 0)
        return base_fail(BASE_ERR_INTERNAL, "test: leaf does not match entry");
    c->n++;
    return BASE_OK_RESULT;
}

static void append_for(audit_store *s, const char *tenant, const char *patient, const char *actor, int action,
                       const char *tag)
{
    enc_arg a = {0};
    snprintf(a.tag, sizeof a.tag, "%s", tag);
    audit_store_event ev = event(&a);
    ev.tenant_id = tenant;
    ev.patient_ref = patient;
    ev.actor_id = actor;
    ev.action = action;
    MUST(audit_store_append(s, &ev, NULL, NULL, NULL));
}

#define PT_A "pt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define PT_B "pt_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void test_read_events_filters_and_pages(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    for (int i = 0; i < 10; i++) {
        char tag[8];
        snprintf(tag, sizeof tag, "a%03d", i);
        append_for(f.store, "tenant-a", i % 2 ? PT_A : NULL, i < 5 ? "u1" : "u2", i % 3 ? 2 : 5, tag);
        snprintf(tag, sizeof tag, "b%03d", i);
        append_for(f.store, "tenant-b", PT_A, "u1", 2, tag);
    }
    collected c = {0};
    size_t n = 0;
    bool more = false;
    audit_query q = {.tenant_id = "tenant-a", .limit = 100};
    MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
    assert_int_equal(n, 10);
    assert_false(more);
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(c.tag[i][0], 'a'); /* never another tenant's */
    /* Filters combine: PT_A is on odd i, u2 on i >= 5, action 5 on i % 3 == 0. */
    memset(&c, 0, sizeof c);
    q = (audit_query){.tenant_id = "tenant-a", .patient_ref = PT_A, .actor_id = "u2", .limit = 100};
    MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
    assert_int_equal(n, 3);
    assert_string_equal(c.tag[0], "a005");
    assert_string_equal(c.tag[2], "a009");
    memset(&c, 0, sizeof c);
    q = (audit_query){.tenant_id = "tenant-a", .action = 5, .limit = 100};
    MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
    assert_int_equal(n, 4);
    /* Another tenant's patient and actor never leak through a filter. */
    memset(&c, 0, sizeof c);
    q = (audit_query){.tenant_id = "tenant-a", .patient_ref = PT_B, .limit = 100};
    MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
    assert_int_equal(n, 0);
    /* Time range: nothing was logged in the future. */
    q = (audit_query){
        .tenant_id = "tenant-a", .has_start = true, .start_micros = INT64_C(4102444800000000), .limit = 100};
    MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
    assert_int_equal(n, 0);
    q = (audit_query){.tenant_id = "tenant-a",
                      .has_start = true,
                      .start_micros = 0,
                      .has_end = true,
                      .end_micros = INT64_C(4102444800000000),
                      .limit = 100};
    MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
    assert_int_equal(n, 10);
    /* Pages of 3 with the seq cursor: 3 + 3 + 3 + 1, in order, no repeats. */
    memset(&c, 0, sizeof c);
    q = (audit_query){.tenant_id = "tenant-a", .limit = 3};
    size_t pages = 0;
    do {
        size_t before = c.n;
        MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
        assert_int_equal(c.n - before, n);
        pages++;
        if (n > 0) {
            q.has_after = true;
            q.after_seq = c.seq[c.n - 1];
        }
    } while (more);
    assert_int_equal(pages, 4);
    assert_int_equal(c.n, 10);
    for (size_t i = 1; i < c.n; i++)
        assert_true(c.seq[i] > c.seq[i - 1]);
    /* below_seq bounds the page (an export's checkpoint). */
    memset(&c, 0, sizeof c);
    q = (audit_query){.tenant_id = "tenant-b", .below_seq = 4, .limit = 100};
    MUST(audit_read_events(f.pool, &q, collect_row, &c, &n, &more));
    assert_int_equal(n, 2); /* seqs 1 and 3 */
    q.limit = 0;
    assert_int_equal(audit_read_events(f.pool, &q, collect_row, &c, &n, &more).err, BASE_ERR_INVALID);
    q = (audit_query){.tenant_id = "", .limit = 10};
    assert_int_equal(audit_read_events(f.pool, &q, collect_row, &c, &n, &more).err, BASE_ERR_INVALID);
    /* The checkpoint reader sees the latest checkpoint. */
    audit_read_checkpoint ck;
    MUST(audit_store_checkpoint_now(f.store));
    MUST(audit_read_latest_checkpoint(f.pool, &ck));
    assert_int_equal(ck.tree_size, 20);
    assert_non_null(strstr(ck.signed_note, ORIGIN));
    audit_read_checkpoint_clear(&ck);
    fx_close(&f);
}

/* Two replicas appending at once: every event lands once, seqs stay contiguous, both frontiers agree. */
typedef struct replica_worker {
    audit_store *s;
    int id;
    base_err err;
} replica_worker;

static void *replica_main(void *arg)
{
    replica_worker *w = arg;
    for (int i = 0; i < 40; i++) {
        enc_arg a = {0};
        snprintf(a.tag, sizeof a.tag, "r%d-%d", w->id, i);
        audit_store_event ev = event(&a);
        base_result r = audit_store_append(w->s, &ev, NULL, NULL, NULL);
        if (!base_is_ok(r)) {
            w->err = r.err;
            return NULL;
        }
    }
    return NULL;
}

static void test_two_replicas_concurrently(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    audit_store_config cfg = store_cfg(&f);
    audit_store *other = NULL;
    MUST(audit_store_open(&cfg, &other));
    enum { PER = 8 };
    static replica_worker w[2 * PER];
    pthread_t t[2 * PER];
    for (int i = 0; i < 2 * PER; i++) {
        w[i] = (replica_worker){.s = i < PER ? f.store : other, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, replica_main, &w[i]), 0);
    }
    for (int i = 0; i < 2 * PER; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2 * PER; i++)
        assert_int_equal(w[i].err, BASE_OK);
    rows r = {0};
    rows_load(f.pool, &r); /* checks seq 0..n-1 and every leaf hash */
    assert_int_equal(r.n, 2 * PER * 40);
    uint8_t want[32], got[32];
    uint64_t size = 0;
    rows_root(&r, want);
    rows_free(&r);
    /* A final append on each folds the other's last leaves: both then hold the same tree. */
    append_one(f.store, "end-a");
    append_one(other, "end-b");
    append_one(f.store, "end-c");
    rows_load(f.pool, &r);
    rows_root(&r, want);
    rows_free(&r);
    frontier_root(f.store, &size, got);
    assert_int_equal(size, 2 * PER * 40 + 3);
    assert_memory_equal(want, got, 32);
    audit_store_stats st;
    audit_store_stats_get(f.store, &st);
    print_message("replica A folded %" PRIu64 " leaves of replica B\n", st.folded_leaves);
    assert_true(st.folded_leaves > 0);
    audit_store_close(other);
    audit_verify_report rep;
    MUST(audit_store_verify(f.store, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_OK);
    fx_close(&f);
}

/* Key rotation: a store opened with a new key and the old verifier key resumes from checkpoints signed by
 * the old key, signs new ones with the new key, and verifies both; without the old key it refuses to open. */
static void test_key_rotation(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    for (int i = 0; i < 5; i++)
        append_one(f.store, "old-key");
    MUST(audit_store_checkpoint_now(f.store));
    audit_store_close(f.store);
    f.store = NULL;

    acrypto_ed25519_key *new_key = NULL;
    MUST(acrypto_ed25519_generate(&new_key));
    audit_store_config cfg = store_cfg(&f);
    cfg.key = new_key;
    audit_store *s = NULL;
    assert_int_equal(audit_store_open(&cfg, &s).err, BASE_ERR_CRYPTO); /* old checkpoint, unknown key */
    const char *prev[] = {g_vkey};
    cfg.previous_vkeys = prev;
    cfg.n_previous_vkeys = 1;
    MUST(audit_store_open(&cfg, &s));
    assert_int_equal(append_one(s, "new-key"), 5);
    MUST(audit_store_checkpoint_now(s));
    audit_verify_report rep;
    MUST(audit_store_verify(s, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_OK);
    assert_true(rep.checkpoints_checked >= 2); /* signed by the old key and by the new one */
    const char *bad[] = {"not a key"};
    cfg.previous_vkeys = bad;
    audit_store *s2 = NULL;
    assert_int_equal(audit_store_open(&cfg, &s2).err, BASE_ERR_INVALID);
    f.store = s;
    fx_close(&f); /* the store keeps a pointer to the key: close it first */
    acrypto_ed25519_free(new_key);
}

static void test_restart_and_checkpoint(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    for (int i = 0; i < 10; i++)
        assert_int_equal(append_one(f.store, "r"), (uint64_t)i);

    /* Checkpoint: the signed note verifies with the vkey and carries the frontier root. */
    MUST(audit_store_checkpoint_now(f.store));
    uint8_t froot[32];
    uint64_t size = 0;
    frontier_root(f.store, &size, froot);
    assert_int_equal(size, 10);
    db_conn *c = NULL;
    db_result *res = NULL;
    MUST(db_pool_acquire(f.pool, 5000, &c));
    MUST(db_exec(c, "SELECT signed_note FROM checkpoints WHERE tree_size = 10", 0, NULL, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    audit_checkpoint *cp = NULL;
    MUST(audit_checkpoint_open_vkey(db_result_get(res, 0, 0), db_result_length(res, 0, 0), g_vkey, ORIGIN,
                                    &cp));
    assert_int_equal(cp->size, 10);
    assert_memory_equal(cp->root, froot, 32);
    audit_checkpoint_free(cp);
    db_result_free(res);
    db_conn_release(c);

    /* More leaves after the checkpoint, then a restart: checkpoint frontier + folded leaves. */
    for (int i = 10; i < 15; i++)
        assert_int_equal(append_one(f.store, "s"), (uint64_t)i);
    audit_store_close(f.store);
    f.store = NULL;
    audit_store_config cfg = store_cfg(&f);
    MUST(audit_store_open(&cfg, &f.store));
    rows r = {0};
    rows_load(f.pool, &r);
    uint8_t want[32], got[32];
    rows_root(&r, want);
    frontier_root(f.store, &size, got);
    assert_int_equal(size, 15);
    assert_memory_equal(want, got, 32);
    rows_free(&r);
    assert_int_equal(append_one(f.store, "t"), 15);

    /* Another replica (a second store on the same log) appends; the first folds its leaves in. */
    audit_store *other = NULL;
    MUST(audit_store_open(&cfg, &other));
    assert_int_equal(append_one(other, "o"), 16);
    assert_int_equal(append_one(other, "o"), 17);
    assert_int_equal(append_one(f.store, "u"), 18);
    audit_store_stats st;
    audit_store_stats_get(f.store, &st);
    assert_int_equal(st.folded_leaves, 2);
    audit_store_close(other);
    rows_load(f.pool, &r);
    rows_root(&r, want);
    frontier_root(f.store, &size, got);
    assert_int_equal(size, 19);
    assert_memory_equal(want, got, 32);
    rows_free(&r);

    /* A restart with no checkpoint at all works too (fold from 0) — and a tampered latest checkpoint is
     * refused. */
    MUST(admin_exec(&f, "ALTER TABLE checkpoints DISABLE TRIGGER checkpoints_append_only"));
    MUST(admin_exec(&f, "UPDATE checkpoints SET root_hash = sha256(root_hash)"));
    audit_store *bad = NULL;
    assert_int_equal(audit_store_open(&cfg, &bad).err, BASE_ERR_CRYPTO);
    MUST(admin_exec(&f, "DELETE FROM checkpoints"));
    MUST(audit_store_open(&cfg, &bad));
    frontier_root(bad, &size, got);
    assert_int_equal(size, 19);
    assert_memory_equal(want, got, 32);
    audit_store_close(bad);
    fx_close(&f);
}

static void test_tamper_detected(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    for (int i = 0; i < 30; i++)
        (void)append_one(f.store, "x");
    MUST(audit_store_checkpoint_now(f.store));
    for (int i = 30; i < 40; i++)
        (void)append_one(f.store, "y");
    MUST(audit_store_checkpoint_now(f.store));
    audit_verify_report rep;
    MUST(audit_store_verify(f.store, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_OK);
    assert_int_equal(rep.leaves_checked, 40);
    /* 3: the first batch after open checkpoints at once (size 1), then the two above. */
    assert_int_equal(rep.checkpoints_checked, 3);

    /* The triggers refuse UPDATE and DELETE, even for a superuser. */
    assert_int_equal(admin_exec(&f, "UPDATE events SET entry = '\\x7b7d' WHERE seq = 17").err,
                     BASE_ERR_DENIED);
    assert_int_equal(admin_exec(&f, "DELETE FROM events WHERE seq = 23").err, BASE_ERR_DENIED);
    assert_int_equal(admin_exec(&f, "TRUNCATE events").err, BASE_ERR_DENIED);
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM events"), 40);

    /* A superuser who disables the trigger can: verify names the first bad seq. */
    MUST(admin_exec(&f, "ALTER TABLE events DISABLE TRIGGER events_append_only"));
    MUST(admin_exec(&f, "UPDATE events SET entry = '\\x7b7d' WHERE seq = 17"));
    MUST(audit_store_verify(f.store, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_LEAF_MISMATCH);
    assert_int_equal(rep.first_bad_seq, 17);
    assert_string_equal(rep.what, "leaf hash mismatch");
    assert_int_equal(rep.leaves_checked, 17);

    /* Rewriting an entry together with its leaf hash passes the leaf check but not the checkpoint (leaves
     * before start contribute their stored hashes, so 17's original hash still counts here). */
    MUST(admin_exec(&f,
                    "UPDATE events SET entry = '\\x7b7d', leaf_hash = sha256('\\x007b7d') WHERE seq = 35"));
    MUST(audit_store_verify(f.store, 18, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_ROOT_MISMATCH);
    assert_int_equal(rep.checkpoint_size, 40);
    assert_int_equal(rep.checkpoints_checked, 2); /* 30 matched, 40 did not */

    /* The last row deleted: the log now ends before its checkpoint, which is a gap too. */
    MUST(admin_exec(&f, "DELETE FROM events WHERE seq = 39"));
    MUST(audit_store_verify(f.store, 36, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_GAP);
    assert_int_equal(rep.first_bad_seq, 39);

    /* A row deleted in the middle. */
    MUST(admin_exec(&f, "DELETE FROM events WHERE seq = 23"));
    MUST(audit_store_verify(f.store, 18, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_GAP);
    assert_int_equal(rep.first_bad_seq, 23);
    assert_string_equal(rep.what, "gap in seq");
    /* And the whole log still reports the first problem, seq 17. */
    MUST(audit_store_verify(f.store, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_LEAF_MISMATCH);
    assert_int_equal(rep.first_bad_seq, 17);

    /* The store refuses to append onto a log with a hole (max(seq) + 1 no longer matches its leaves). */
    enc_arg a = {0};
    audit_store_event ev = event(&a);
    assert_int_equal(audit_store_append(f.store, &ev, NULL, NULL, NULL).err, BASE_ERR_CONFLICT);
    fx_close(&f);
}

/* Backends of a role still in pg_stat_activity. */
static int64_t backends_of(const char *role)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    const char *p[] = {role};
    MUST(db_pool_acquire(g_root, 5000, &c));
    MUST(db_exec(c, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", 1, p, &res));
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

/* The table's own patient_ref rule (migrations 0001 and 0005), written straight into the table as the
 * superuser so that the service's validation is not what refuses: NULL and "pt_" + 32 lowercase hex stored,
 * one step off refused with a check violation (SQLSTATE 23514). */
static void test_patient_ref_shape(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, g_uri);
    static const struct {
        const char *patient_ref; /* NULL: SQL NULL */
        bool ok;
    } cases[] = {
        {NULL, true},
        {"pt_0123456789abcdef0123456789abcdef", true},
        {"pt_0123456789abcdef0123456789abcde", false},
        {"pt_0123456789abcdef0123456789abcdef0", false},
        {"pt_0123456789ABCDEF0123456789abcdef", false},
        {"px_0123456789abcdef0123456789abcdef", false},
        {"", false},
    };
    static const char sql[] =
        "INSERT INTO events (seq, tenant_id, logged_at, action, purpose, outcome, patient_ref, actor_id, "
        "entry, "
        "leaf_hash) VALUES ($1, 'tenant-a', now(), 1, 0, 1, $2, 'u1', '\\x7b7d', sha256('\\x00'))";
    int stored = 0;
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        char seq[24];
        snprintf(seq, sizeof seq, "%zu", 1000 + i);
        const char *p[2] = {seq, cases[i].patient_ref};
        const char *shown = cases[i].patient_ref ? cases[i].patient_ref : "NULL";
        db_conn *c = NULL;
        MUST(db_pool_acquire(f.admin, 5000, &c));
        base_result r = db_exec(c, sql, 2, p, NULL);
        db_conn_release(c);
        if (cases[i].ok) {
            if (!base_is_ok(r))
                fail_msg("\"%s\": refused: %s", shown, base_error_message());
            stored++;
        } else if (r.err != BASE_ERR_CONFLICT || strcmp(db_last_sqlstate(), "23514") != 0) {
            fail_msg("\"%s\": %s, want a check violation", shown,
                     base_is_ok(r) ? "stored" : base_error_message());
        }
    }
    assert_int_equal(query_int(f.pool, "SELECT count(*) FROM events WHERE seq >= 1000"), stored);
    fx_close(&f);
}

static void test_postgres_unreachable(void **state)
{
    (void)state;
    /* Down from the start: open fails promptly. */
    char uri[256];
    snprintf(uri, sizeof uri, "postgresql://postgres@127.0.0.1:%d/postgres", testenv_closed_port());
    db_pool *dead = testdb_pool(uri, "audit", 2);
    audit_store_config cfg = {.pool = dead, .origin = ORIGIN, .key = g_key, .max_wait_us = -1};
    audit_store *s = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(audit_store_open(&cfg, &s).err, BASE_ERR_UNAVAILABLE);
    assert_true(now_ms() - t0 < 3000);
    db_pool_destroy(dead);

    /* Down after open: the store runs as a role that then loses LOGIN and its connections. */
    char role[64], port[16] = "5432", conninfo[256];
    snprintf(role, sizeof role, "%s_role", g_prefix);
    const char *colon = strrchr(g_uri, ':'); /* postgresql://postgres@127.0.0.1:PORT/postgres */
    if (colon) {
        size_t n = strcspn(colon + 1, "/");
        snprintf(port, sizeof port, "%.*s", (int)n, colon + 1);
    }
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%s dbname=postgres user=%s password=store-test-pw", port, role);
    testdb_with_role(g_root, role, NULL,
                     "DO $$ BEGIN EXECUTE format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD "
                     "''store-test-pw''', current_setting('alma.test_role')); END $$");
    fx f;
    fx_open(&f, conninfo);
    assert_int_equal(append_one(f.store, "before"), 0);
    assert_int_equal(append_one(f.store, "before"), 1);

    testdb_with_role(g_root, role, NULL,
                     "DO $$ BEGIN EXECUTE format('ALTER ROLE %I NOLOGIN', "
                     "current_setting('alma.test_role')); END $$");
    testdb_with_role(g_root, role, NULL,
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = current_setting('alma.test_role')");
    /* pg_terminate_backend only signals: wait until the backends are gone, so the store's connections are
     * dead (not still answering) when it next uses them. Otherwise a busy machine lets one more statement
     * through and the encoder runs (a CI flake). */
    for (int i = 0; i < 100 && backends_of(role) > 0; i++)
        usleep(50 * 1000);
    assert_int_equal(backends_of(role), 0);
    enc_arg a = {0};
    audit_store_event ev = event(&a);
    t0 = now_ms();
    base_result r = audit_store_append(f.store, &ev, NULL, NULL, NULL);
    assert_int_equal(r.err, BASE_ERR_UNAVAILABLE);
    assert_true(now_ms() - t0 < 5000);
    assert_int_equal(a.calls, 0); /* never reached the encoder: nothing was assigned */
    assert_int_equal(query_int(f.admin, "SELECT count(*) FROM events"), 2);
    uint8_t root[32];
    uint64_t size = 0;
    frontier_root(f.store, &size, root);
    assert_int_equal(size, 2);

    /* Back up: appends continue at the next seq. */
    testdb_with_role(g_root, role, NULL,
                     "DO $$ BEGIN EXECUTE format('ALTER ROLE %I LOGIN', "
                     "current_setting('alma.test_role')); END $$");
    assert_int_equal(append_one(f.store, "after"), 2);
    audit_verify_report rep;
    MUST(audit_store_verify(f.store, 0, UINT64_MAX, &rep));
    assert_int_equal(rep.problem, AUDIT_VERIFY_OK);
    fx_close(&f);
    testdb_with_role(g_root, role, NULL,
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = current_setting('alma.test_role')");
    testdb_with_role(g_root, role, NULL,
                     "DO $$ BEGIN EXECUTE format('DROP ROLE IF EXISTS %I', "
                     "current_setting('alma.test_role')); END $$");
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "ast_%d_%lx", (int)getpid(),
             (unsigned long)(ts.tv_nsec ^ ts.tv_sec) & 0xfffff);
    MUST(db_pool_create(g_uri, 2, 5000, &g_root));
    MUST(acrypto_ed25519_generate(&g_key));
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    size_t len = 0;
    MUST(acrypto_ed25519_public_raw(g_key, pub));
    MUST(audit_note_vkey_format(ORIGIN, pub, &g_vkey, &len));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    db_pool_destroy(g_root);
    acrypto_ed25519_free(g_key);
    free(g_vkey);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_group_commit),
        cmocka_unit_test(test_encoder_failure_fails_only_its_event),
        cmocka_unit_test(test_append_all_is_atomic),
        cmocka_unit_test(test_read_events_filters_and_pages),
        cmocka_unit_test(test_two_replicas_concurrently),
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_restart_and_checkpoint),
        cmocka_unit_test(test_tamper_detected),
        cmocka_unit_test(test_patient_ref_shape),
        cmocka_unit_test(test_postgres_unreachable),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
