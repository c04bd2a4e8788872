/* The audit log's durable append path (the only audit file that uses common/db).
 *
 * Appends: many threads call audit_store_append() at once. Each enqueues its event and waits on a condition
 * variable; ONE committer thread takes up to max_batch queued events, assigns them the seqs after its
 * in-memory frontier, encodes and hashes each entry, and makes them durable with ONE autocommitted statement,
 * SELECT append_batch(...) (migrations/0004_append_batch.sql), which
 *
 *     takes pg_advisory_xact_lock(AUDIT_STORE_LOCK_KEY)        -- one appender at a time, across replicas
 *     checks coalesce(max(seq) + 1, 0) = the frontier's size  -- else another replica appended: nothing is
 *                                                                written; the committer then runs the batch
 *                                                                in a transaction that takes the lock
 *                                                                first, folds the new leaves in and encodes
 *                                                                again (so it cannot lose the race twice)
 *     INSERTs the rows and the subtree hashes they close, FROM unnest($n::bigint[], ...)
 *
 * so a batch costs one round trip and one WAL flush. The committer
 * then advances the in-memory frontier and wakes every waiter with its sequence, leaf hash and time.
 * A failure fails the whole batch with the same error (BASE_ERR_UNAVAILABLE when Postgres is down): nothing
 * of it is visible and the frontier does not move.
 *
 * The entry must contain its own sequence number and time, which only exist at commit, so the caller does
 * not pass bytes but an encoder: audit_store_event.encode(arg, seq, time_micros, &entry, &len), called on the
 * committer thread before the statement is sent. It returns a malloc'd buffer the store frees. It may be
 * called more than once for one event (encoded again after another replica appended; the seq then differs):
 * only the bytes of the last call are committed, and the caller learns the seq and time they hold from the
 * append's outputs, so the encoder should be a pure function of (its arg, seq, time) and must not block or
 * call the store. An encoder failure fails only its own event: the rest of the batch commits without it.
 *
 * Checkpoints: after a commit, when checkpoint_interval_ms has passed since the last one and the size
 * changed, the committer signs origin/size/root (audit_checkpoint_format + audit_note_sign) and stores it
 * with the serialised frontier. On open the latest checkpoint's frontier is loaded (its root and signature
 * checked against the store's own key) and the leaves after it are folded in, checking that seqs have no
 * gaps.
 *
 * SQL: every statement is a constant. The batch travels as text-format array literals whose elements are
 * all double-quoted with '\' and '"' backslash-escaped (PostgreSQL array input syntax), bytea as hex text
 * decoded server-side, SQL NULL as an unquoted NULL element: data never reaches the SQL text.
 *
 * The pool's search_path must be the log's schema (cfg.schema, default "audit"): statements name events and
 * checkpoints unqualified. Error messages name operations and SQLSTATEs, never row values. */
#ifndef ALMA_AUDIT_STORE_H
#define ALMA_AUDIT_STORE_H

#include "base/result.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "merkle.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* pg_advisory_xact_lock key of the log: hashtextextended('alma.audit.log', 0) would do as well; a constant
 * keeps it visible in pg_locks. One log per database (per schema would need a per-schema key). */
#define AUDIT_STORE_LOCK_KEY INT64_C(0x616c6d6141554449) /* "almaAUDI" */

#define AUDIT_STORE_DEFAULT_MAX_BATCH           256
#define AUDIT_STORE_MAX_BATCH                   4096
#define AUDIT_STORE_DEFAULT_MAX_WAIT_US         0
#define AUDIT_STORE_DEFAULT_CHECKPOINT_INTERVAL 1000  /* ms */
#define AUDIT_STORE_MAX_ENTRY                   65536 /* the events.entry check constraint */
#define AUDIT_STORE_MAX_GROUP                   1000  /* events in one audit_store_append_all */
#define AUDIT_STORE_MAX_PREVIOUS_KEYS           8

typedef struct audit_store_config {
    db_pool *pool;                  /* required; search_path = schema; shared, not owned */
    const char *schema;             /* NULL = "audit"; migrations are applied into it */
    const char *origin;             /* checkpoint origin line, required */
    const acrypto_ed25519_key *key; /* signing key with its private part, required; not owned */
    const char *key_name;           /* signed-note key name, NULL = origin */
    size_t max_batch;               /* events per transaction, 0 = default, at most AUDIT_STORE_MAX_BATCH */
    int max_wait_us;                /* how long the committer waits for more events, <0 = default */
    int checkpoint_interval_ms;     /* <= 0 = default */
    bool skip_migrations;           /* the schema was migrated by an owner role (runtime role: no DDL) */
    /* Key rotation: verifier keys ("<name>+<hash>+<base64>") of earlier signing keys. Checkpoints signed by
     * them still verify (on open and in audit_store_verify); new ones are signed with `key`. */
    const char *const *previous_vkeys;
    size_t n_previous_vkeys; /* at most AUDIT_STORE_MAX_PREVIOUS_KEYS */
} audit_store_config;

/* The canonical entry of an event, given its sequence number and time (see above). *ret_entry is malloc'd,
 * 1..AUDIT_STORE_MAX_ENTRY bytes. */
typedef base_result (*audit_store_encode_fn)(void *arg, uint64_t seq, int64_t time_micros, char **ret_entry,
                                             size_t *ret_len);

/* The index columns of one event and its encoder. Strings are NUL-terminated and must stay valid until
 * audit_store_append() returns. Validation (lengths, pt_ pattern) belongs to validate.c; the table's check
 * constraints refuse what slips through (BASE_ERR_CONFLICT for the whole batch). */
typedef struct audit_store_event {
    const char *tenant_id;
    int action;
    int purpose;
    int outcome;
    const char *patient_ref; /* NULL for none */
    const char *actor_id;
    audit_store_encode_fn encode;
    void *encode_arg;
} audit_store_event;

typedef struct audit_store audit_store;

typedef struct audit_store_stats {
    uint64_t batches;             /* committed transactions */
    uint64_t events;              /* committed events */
    uint64_t failed_batches;      /* transactions that failed (their events failed) */
    uint64_t checkpoints;         /* checkpoints stored by this process */
    uint64_t checkpoint_failures; /* checkpoints that could not be signed or stored (appends unaffected) */
    uint64_t folded_leaves;       /* leaves appended by other replicas and folded in */
} audit_store_stats;

/* Validate cfg, run the migrations (unless skip_migrations), load the latest checkpoint and fold in the later
 * leaves, start the committer. BASE_ERR_UNAVAILABLE when Postgres is down, BASE_ERR_CRYPTO when the latest
 * checkpoint's frontier, root or signature do not match, BASE_ERR_CONFLICT for a gap in seq. */
BASE_MUST_USE base_result audit_store_open(const audit_store_config *cfg, audit_store **ret_store);

/* Apply the log's migrations to `schema` (NULL = "audit") through `pool`: for an owner role that migrates
 * before the runtime role opens the store with skip_migrations. */
BASE_MUST_USE base_result audit_store_migrate(db_pool *pool, const char *schema);

/* Drain the queue (pending appends finish or fail), stop the committer, free. Accepts NULL. */
void audit_store_close(audit_store *s);

/* Append one event; blocks until its batch commits or fails. Thread-safe. Outputs (each may be NULL) are
 * written only on success. After close has begun: BASE_ERR_UNAVAILABLE. */
BASE_MUST_USE base_result audit_store_append(audit_store *s, const audit_store_event *ev, uint64_t *ret_seq,
                                             uint8_t ret_leaf[AUDIT_MERKLE_HASH_LEN],
                                             int64_t *ret_time_micros);

/* Append n events atomically and in order: they commit in one transaction with consecutive seqs, or none
 * does (an event that cannot be encoded fails the whole group; its error is returned). Blocks like
 * audit_store_append. ret_results[i] is written for every event on success. n <= AUDIT_STORE_MAX_GROUP. */
typedef struct audit_store_result {
    uint64_t seq;
    uint8_t leaf[AUDIT_MERKLE_HASH_LEN];
    int64_t time_micros;
} audit_store_result;
BASE_MUST_USE base_result audit_store_append_all(audit_store *s, const audit_store_event *evs, size_t n,
                                                 audit_store_result *ret_results);

/* Sign and store a checkpoint of the current frontier now (no-op if one of that size exists). */
BASE_MUST_USE base_result audit_store_checkpoint_now(audit_store *s);

/* The in-memory frontier (a copy) and counters. */
void audit_store_frontier(audit_store *s, audit_merkle_frontier *ret_frontier);
void audit_store_stats_get(audit_store *s, audit_store_stats *ret_stats);

/* ---- Verification -------------------------------------------------------------------------------------- */

typedef enum audit_verify_problem {
    AUDIT_VERIFY_OK = 0,
    AUDIT_VERIFY_GAP,               /* first_bad_seq is missing */
    AUDIT_VERIFY_LEAF_MISMATCH,     /* SHA-256(0x00 || entry) != leaf_hash at first_bad_seq */
    AUDIT_VERIFY_ROOT_MISMATCH,     /* recomputed root != checkpoint root at checkpoint_size */
    AUDIT_VERIFY_CHECKPOINT_INVALID /* the checkpoint at checkpoint_size does not verify or disagrees */
} audit_verify_problem;

typedef struct audit_verify_report {
    uint64_t start, end;          /* the range checked (end clamped to the log and its checkpoints) */
    uint64_t leaves_checked;      /* leaves whose hash was recomputed */
    uint64_t checkpoints_checked; /* checkpoints with tree_size in (start, end] compared */
    audit_verify_problem problem; /* the first problem in seq order, or AUDIT_VERIFY_OK */
    uint64_t first_bad_seq;       /* for GAP and LEAF_MISMATCH; for checkpoint problems checkpoint_size - 1 */
    uint64_t checkpoint_size;     /* for the checkpoint problems */
    const char *what;             /* static text: "gap in seq", "leaf hash mismatch", ... or "ok" */
} audit_verify_report;

/* Re-read rows [start, end) in seq order, recompute each leaf hash from entry and compare it with the stored
 * leaf_hash, find gaps, and at every stored checkpoint of size in (start, end] compare the recomputed root
 * with the checkpoint's root and check its signature and origin. Leaves before start contribute their
 * stored hashes (verify that range to check them). end is clamped to max(log size, largest checkpoint size),
 * so rows missing at the tail under a checkpoint are a gap. One REPEATABLE READ snapshot. Returns BASE_OK
 * with the report whatever it found; a failure means the check could not run. */
BASE_MUST_USE base_result audit_store_verify(audit_store *s, uint64_t start, uint64_t end,
                                             audit_verify_report *ret_report);

#endif
