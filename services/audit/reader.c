/* The audit log's read paths (reader.h). Every SQL statement is a constant (common/db's rule). */
#include "reader.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACQUIRE_TIMEOUT_MS 5000
#define CACHE_SLOTS        4096 /* direct-mapped; a power of two */

static const char SQL_LATEST[] = "SELECT tree_size, root_hash, signed_note, "
                                 "(extract(epoch FROM signed_at) * 1000000)::bigint "
                                 "FROM checkpoints ORDER BY tree_size DESC LIMIT 1";
static const char SQL_SIZE[] = "SELECT coalesce(max(seq) + 1, 0) FROM events";
static const char SQL_LEAF[] = "SELECT leaf_hash FROM events WHERE seq = $1::bigint";
static const char SQL_SUBTREE[] = "SELECT hash FROM subtrees WHERE level = $1::smallint AND idx = $2::bigint";
/* Optional filters are NULL / 0 parameters. libpq's unnamed statements are planned with the actual values,
 * so "$2 IS NULL OR ..." folds away and the (tenant_id, ...) indexes serve each combination. */
static const char SQL_EVENTS[] =
    "SELECT seq, (extract(epoch FROM logged_at) * 1000000)::bigint, entry, leaf_hash FROM events "
    "WHERE tenant_id = $1 "
    "AND ($2::text IS NULL OR patient_ref = $2::text) "
    "AND ($3::text IS NULL OR actor_id = $3::text) "
    "AND ($4::smallint = 0 OR action = $4::smallint) "
    "AND ($5::smallint = 0 OR purpose = $5::smallint) "
    "AND ($6::smallint = 0 OR outcome = $6::smallint) "
    "AND ($7::bigint IS NULL OR logged_at >= timestamptz 'epoch' + $7::bigint * interval '1 microsecond') "
    "AND ($8::bigint IS NULL OR logged_at < timestamptz 'epoch' + $8::bigint * interval '1 microsecond') "
    "AND seq > $9::bigint AND seq < $10::bigint "
    "ORDER BY seq LIMIT $11::int";

/* ---- Helpers ------------------------------------------------------------------------------------------- */

static base_result get_u64(const db_result *res, int row, int col, uint64_t *ret)
{
    int64_t v = 0;
    BASE_GUARD(db_result_get_int64(res, row, col, &v));
    if (v < 0)
        return base_fail(BASE_ERR_INTERNAL, "audit read: negative value in an unsigned column");
    *ret = (uint64_t)v;
    return BASE_OK_RESULT;
}

static base_result get_hash(const db_result *res, int row, int col, uint8_t ret[AUDIT_MERKLE_HASH_LEN])
{
    unsigned char *data = NULL;
    size_t len = 0;
    BASE_GUARD(db_result_get_bytea(res, row, col, &data, &len));
    bool ok = len == AUDIT_MERKLE_HASH_LEN;
    if (ok)
        memcpy(ret, data, AUDIT_MERKLE_HASH_LEN);
    free(data);
    if (!ok)
        return base_fail(BASE_ERR_INTERNAL, "audit read: stored hash has the wrong length");
    return BASE_OK_RESULT;
}

static void u64_text(char buf[24], uint64_t v)
{
    snprintf(buf, 24, "%" PRIu64, v);
}

static void i64_text(char buf[24], int64_t v)
{
    snprintf(buf, 24, "%" PRId64, v);
}

/* ---- Checkpoints and sizes ----------------------------------------------------------------------------- */

base_result audit_read_latest_checkpoint(db_pool *pool, audit_read_checkpoint *ret)
{
    BASE_ENSURE(pool && ret, BASE_ERR_INVALID, "audit read: NULL argument");
    BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_pool_acquire(pool, ACQUIRE_TIMEOUT_MS, &c));
    BASE_GUARD(db_exec(c, SQL_LATEST, 0, NULL, &res));
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "the log has no checkpoint yet");
    audit_read_checkpoint out = {0};
    BASE_GUARD(get_u64(res, 0, 0, &out.tree_size));
    BASE_GUARD(get_hash(res, 0, 1, out.root));
    BASE_GUARD(db_result_get_int64(res, 0, 3, &out.signed_at_micros));
    const char *note = db_result_get(res, 0, 2);
    if (!note)
        return base_fail(BASE_ERR_INTERNAL, "audit read: checkpoint without a note");
    size_t n = strlen(note) + 1;
    out.signed_note = malloc(n);
    if (!out.signed_note)
        return base_fail(BASE_ERR_NOMEM, "audit read: out of memory");
    memcpy(out.signed_note, note, n);
    *ret = out;
    return BASE_OK_RESULT;
}

void audit_read_checkpoint_clear(audit_read_checkpoint *c)
{
    if (!c)
        return;
    free(c->signed_note);
    memset(c, 0, sizeof *c);
}

base_result audit_read_log_size(db_pool *pool, uint64_t *ret_size)
{
    BASE_ENSURE(pool && ret_size, BASE_ERR_INVALID, "audit read: NULL argument");
    BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_pool_acquire(pool, ACQUIRE_TIMEOUT_MS, &c));
    BASE_GUARD(db_exec(c, SQL_SIZE, 0, NULL, &res));
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_INTERNAL, "audit read: expected one row");
    return get_u64(res, 0, 0, ret_size);
}

/* ---- Proofs -------------------------------------------------------------------------------------------- */

typedef struct cache_slot {
    bool used;
    uint8_t level; /* 0 = a leaf */
    uint64_t index;
    uint8_t hash[AUDIT_MERKLE_HASH_LEN];
} cache_slot;

struct audit_proof_cache {
    cache_slot slots[CACHE_SLOTS];
};

audit_proof_cache *audit_proof_cache_new(void)
{
    return calloc(1, sizeof(audit_proof_cache));
}

void audit_proof_cache_free(audit_proof_cache *c)
{
    free(c);
}

static cache_slot *cache_slot_for(audit_proof_cache *c, unsigned level, uint64_t index)
{
    uint64_t h = (index * UINT64_C(0x9E3779B97F4A7C15)) ^ ((uint64_t)level * UINT64_C(0xC2B2AE3D27D4EB4F));
    return &c->slots[(h >> 20) & (CACHE_SLOTS - 1)];
}

static bool cache_get(audit_proof_cache *c, unsigned level, uint64_t index,
                      uint8_t out[AUDIT_MERKLE_HASH_LEN])
{
    if (!c)
        return false;
    cache_slot *s = cache_slot_for(c, level, index);
    if (!s->used || s->level != level || s->index != index)
        return false;
    memcpy(out, s->hash, AUDIT_MERKLE_HASH_LEN);
    return true;
}

static void cache_put(audit_proof_cache *c, unsigned level, uint64_t index,
                      const uint8_t hash[AUDIT_MERKLE_HASH_LEN])
{
    if (!c)
        return;
    cache_slot *s = cache_slot_for(c, level, index);
    s->used = true;
    s->level = (uint8_t)level;
    s->index = index;
    memcpy(s->hash, hash, AUDIT_MERKLE_HASH_LEN);
}

typedef struct db_source {
    db_conn *conn;
    audit_proof_cache *cache;
} db_source;

static base_result src_leaf(void *ctx, uint64_t index, uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN])
{
    db_source *s = ctx;
    if (cache_get(s->cache, 0, index, ret_hash))
        return BASE_OK_RESULT;
    char idx[24];
    u64_text(idx, index);
    const char *p[] = {idx};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(s->conn, SQL_LEAF, 1, p, &res));
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "audit read: a leaf of the requested tree is missing");
    BASE_GUARD(get_hash(res, 0, 0, ret_hash));
    cache_put(s->cache, 0, index, ret_hash);
    return BASE_OK_RESULT;
}

static base_result src_subtree(void *ctx, unsigned level, uint64_t index, bool *ret_found,
                               uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN])
{
    db_source *s = ctx;
    if (cache_get(s->cache, level, index, ret_hash)) {
        *ret_found = true;
        return BASE_OK_RESULT;
    }
    char lv[24], idx[24];
    u64_text(lv, level);
    u64_text(idx, index);
    const char *p[] = {lv, idx};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(s->conn, SQL_SUBTREE, 2, p, &res));
    if (db_result_ntuples(res) != 1) {
        *ret_found = false;
        return BASE_OK_RESULT;
    }
    BASE_GUARD(get_hash(res, 0, 0, ret_hash));
    cache_put(s->cache, level, index, ret_hash);
    *ret_found = true;
    return BASE_OK_RESULT;
}

/* Checks that `size` leaves are committed, then runs the proof with a source on one connection. */
static base_result with_source(db_pool *pool, audit_proof_cache *cache, uint64_t size, db_conn **ret_conn,
                               audit_merkle_source *ret_src, db_source *ds)
{
    uint64_t log_size = 0;
    BASE_GUARD(audit_read_log_size(pool, &log_size));
    if (size > log_size)
        return base_fail(BASE_ERR_NOT_FOUND, "the tree size is beyond the committed log");
    BASE_GUARD(db_pool_acquire(pool, ACQUIRE_TIMEOUT_MS, ret_conn));
    ds->conn = *ret_conn;
    ds->cache = cache;
    *ret_src = (audit_merkle_source){.leaf = src_leaf, .subtree = src_subtree, .ctx = ds};
    return BASE_OK_RESULT;
}

base_result audit_read_inclusion_proof(db_pool *pool, audit_proof_cache *cache, uint64_t index, uint64_t size,
                                       audit_merkle_proof *ret_proof)
{
    BASE_ENSURE(pool && ret_proof, BASE_ERR_INVALID, "audit read: NULL argument");
    BASE_ENSURE(index < size, BASE_ERR_INVALID, "sequence must be below tree_size");
    BASE_ENSURE(size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_INVALID, "tree_size is too large");
    BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
    db_source ds;
    audit_merkle_source src;
    BASE_GUARD(with_source(pool, cache, size, &c, &src, &ds));
    return audit_merkle_inclusion_proof(&src, index, size, ret_proof);
}

base_result audit_read_consistency_proof(db_pool *pool, uint64_t old_size, uint64_t new_size,
                                         audit_merkle_proof *ret_proof)
{
    BASE_ENSURE(pool && ret_proof, BASE_ERR_INVALID, "audit read: NULL argument");
    BASE_ENSURE(old_size <= new_size, BASE_ERR_INVALID, "first_size must not exceed second_size");
    BASE_ENSURE(new_size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_INVALID, "second_size is too large");
    BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
    db_source ds;
    audit_merkle_source src;
    BASE_GUARD(with_source(pool, NULL, new_size, &c, &src, &ds));
    return audit_merkle_consistency_proof(&src, old_size, new_size, ret_proof);
}

/* ---- Events -------------------------------------------------------------------------------------------- */

base_result audit_read_events(db_pool *pool, const audit_query *q, audit_row_fn fn, void *arg,
                              size_t *ret_count, bool *ret_more)
{
    BASE_ENSURE(pool && q && fn && ret_count && ret_more, BASE_ERR_INVALID, "audit read: NULL argument");
    BASE_ENSURE(q->tenant_id && q->tenant_id[0], BASE_ERR_INVALID, "a tenant is required");
    BASE_ENSURE(q->limit >= 1 && q->limit <= AUDIT_READ_MAX_PAGE, BASE_ERR_INVALID,
                "page size must be 1..1000");
    char action[24], purpose[24], outcome[24], start[24], end[24], after[24], below[24], limit[24];
    i64_text(action, q->action);
    i64_text(purpose, q->purpose);
    i64_text(outcome, q->outcome);
    i64_text(start, q->start_micros);
    i64_text(end, q->end_micros);
    if (q->has_after) {
        BASE_ENSURE(q->after_seq < AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_INVALID, "cursor out of range");
        u64_text(after, q->after_seq);
    } else {
        i64_text(after, -1);
    }
    if (q->below_seq > 0 && q->below_seq <= (uint64_t)INT64_MAX)
        u64_text(below, q->below_seq);
    else
        i64_text(below, INT64_MAX);
    u64_text(limit, q->limit);
    const char *p[] = {q->tenant_id,
                       q->patient_ref && q->patient_ref[0] ? q->patient_ref : NULL,
                       q->actor_id && q->actor_id[0] ? q->actor_id : NULL,
                       action,
                       purpose,
                       outcome,
                       q->has_start ? start : NULL,
                       q->has_end ? end : NULL,
                       after,
                       below,
                       limit};

    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    {
        BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
        BASE_GUARD(db_pool_acquire(pool, ACQUIRE_TIMEOUT_MS, &c));
        BASE_GUARD(db_exec(c, SQL_EVENTS, (int)BASE_ARRAY_LEN(p), p, &res));
    } /* the connection is back in the pool before the consumer runs */

    int n = db_result_ntuples(res);
    size_t delivered = 0;
    for (int i = 0; i < n; i++) {
        audit_row row = {0};
        BASE_GUARD(get_u64(res, i, 0, &row.seq));
        BASE_GUARD(db_result_get_int64(res, i, 1, &row.time_micros));
        BASE_GUARD(get_hash(res, i, 3, row.leaf));
        unsigned char *entry = NULL;
        size_t len = 0;
        BASE_GUARD(db_result_get_bytea(res, i, 2, &entry, &len));
        char *text = realloc(entry, len + 1);
        if (!text) {
            free(entry);
            return base_fail(BASE_ERR_NOMEM, "audit read: out of memory");
        }
        text[len] = '\0';
        row.entry = text;
        row.entry_len = len;
        base_result r = fn(arg, &row);
        free(text);
        BASE_GUARD(r);
        delivered++;
    }
    *ret_count = delivered;
    *ret_more = (size_t)n == q->limit;
    return BASE_OK_RESULT;
}
