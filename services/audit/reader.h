/* The audit log's read paths: checkpoints, proofs from stored hashes, filtered event pages in seq order.
 *
 * Everything here reads rows that never change once committed (events, subtrees and checkpoints are
 * append-only, and seqs become visible in order because appends hold the log's advisory lock until COMMIT),
 * so no statement needs a snapshot shared with another: a page, a proof or a checkpoint read on its own is
 * consistent with every later one.
 *
 * Proofs come from an audit_merkle_source over the events.leaf_hash and subtrees tables (0002_subtrees.sql):
 * O(log n) point lookups per proof. A log written before subtrees existed still works; its proofs then read
 * the leaf hashes they need. An audit_proof_cache remembers hashes across proofs of one export (neighbouring
 * leaves share most of their path).
 *
 * The pool's search_path must be the log's schema (as for the store). Error messages name the operation,
 * never a row value. */
#ifndef ALMA_AUDIT_READER_H
#define ALMA_AUDIT_READER_H

#include "base/result.h"
#include "db/db.h"
#include "merkle.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_READ_MAX_PAGE 1000

/* ---- Checkpoints and sizes ------------------------------------------------------------------------------
 */

typedef struct audit_read_checkpoint {
    uint64_t tree_size;
    uint8_t root[AUDIT_MERKLE_HASH_LEN];
    int64_t signed_at_micros;
    char *signed_note; /* malloc'd, NUL-terminated */
} audit_read_checkpoint;

/* The latest stored checkpoint; BASE_ERR_NOT_FOUND when the log has none yet. Free with
 * audit_read_checkpoint_clear. */
BASE_MUST_USE base_result audit_read_latest_checkpoint(db_pool *pool, audit_read_checkpoint *ret);
void audit_read_checkpoint_clear(audit_read_checkpoint *c);

/* How many leaves are committed (max(seq) + 1). */
BASE_MUST_USE base_result audit_read_log_size(db_pool *pool, uint64_t *ret_size);

/* ---- Proofs ---------------------------------------------------------------------------------------------
 */

typedef struct audit_proof_cache audit_proof_cache;
audit_proof_cache *audit_proof_cache_new(void); /* NULL on out of memory */
void audit_proof_cache_free(audit_proof_cache *c);

/* PATH(index, D[0:size]) and PROOF(old_size, D[0:new_size]) from stored hashes. BASE_ERR_INVALID for
 * index >= size or old_size > new_size; BASE_ERR_NOT_FOUND when size is beyond the committed log. cache may
 * be NULL. */
BASE_MUST_USE base_result audit_read_inclusion_proof(db_pool *pool, audit_proof_cache *cache, uint64_t index,
                                                     uint64_t size, audit_merkle_proof *ret_proof);
BASE_MUST_USE base_result audit_read_consistency_proof(db_pool *pool, uint64_t old_size, uint64_t new_size,
                                                       audit_merkle_proof *ret_proof);

/* ---- Events ---------------------------------------------------------------------------------------------
 */

/* A filter over one tenant's events. Zero / NULL fields match everything. */
typedef struct audit_query {
    const char *tenant_id;   /* required */
    const char *patient_ref; /* NULL = any */
    const char *actor_id;    /* NULL = any */
    int action, purpose, outcome;
    bool has_start, has_end;
    int64_t start_micros, end_micros; /* logged_at in [start, end) */
    bool has_after;
    uint64_t after_seq; /* the cursor: seq > after_seq */
    uint64_t below_seq; /* seq < below_seq; 0 = no bound (an export bounds itself by its checkpoint) */
    size_t limit;       /* 1..AUDIT_READ_MAX_PAGE */
} audit_query;

typedef struct audit_row {
    uint64_t seq;
    int64_t time_micros;
    const char *entry; /* the canonical entry bytes (NUL-terminated for convenience) */
    size_t entry_len;
    uint8_t leaf[AUDIT_MERKLE_HASH_LEN];
} audit_row;

/* Called for each row of the page in seq order, after the database connection was given back (a slow
 * consumer holds no connection). A failure stops the page and is returned. */
typedef base_result (*audit_row_fn)(void *arg, const audit_row *row);

/* One page of up to q->limit rows in seq order. *ret_count = rows delivered; *ret_more = the page was full
 * (there may be more: continue with has_after = true, after_seq = the last seq delivered). */
BASE_MUST_USE base_result audit_read_events(db_pool *pool, const audit_query *q, audit_row_fn fn, void *arg,
                                            size_t *ret_count, bool *ret_more);

#endif
