/* The audit log's durable append path: group commit under an advisory lock, frontier catch-up, checkpoints,
 * verification. See store.h for the design; the SQL below is all constant (common/db's rule). */
#include "store.h"

#include "audit_migrations.h"
#include "base/clock.h"
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE_MSG_MAX    256
#define FOLD_BATCH       10000 /* leaf hashes read per statement when catching up */
#define VERIFY_BATCH     1000  /* rows (entries up to 64 KiB) read per statement when verifying */
#define TXN_MAX_ATTEMPTS 3
#define DEFAULT_SCHEMA   "audit"

/* ---- SQL (constants only) --------------------------------------------------------------------------- */

static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock($1::bigint)";
static const char SQL_NEXT_SEQ[] = "SELECT coalesce(max(seq) + 1, 0) FROM events";
static const char SQL_FOLD[] =
    "SELECT seq, leaf_hash FROM events WHERE seq >= $1::bigint AND seq < $2::bigint "
    "ORDER BY seq LIMIT 10000";
/* One statement per batch: the rows travel as array literals (text parameters), bytea as hex text. */
/* One statement per batch, one round trip (0004_append_batch.sql): the rows and the subtree hashes they close
 * travel as array literals (text parameters, bytea as hex). */
static const char SQL_APPEND[] =
    "SELECT append_batch($1::bigint, $2::bigint, $3::bigint, $4::bigint[], $5::text[], $6::smallint[], "
    "$7::smallint[], $8::smallint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::smallint[], "
    "$14::bigint[], $15::text[])";
static const char SQL_LATEST_CHECKPOINT[] =
    "SELECT tree_size, root_hash, signed_note, frontier FROM checkpoints ORDER BY tree_size DESC LIMIT 1";
static const char SQL_INSERT_CHECKPOINT[] =
    "INSERT INTO checkpoints (tree_size, root_hash, signed_at, signed_note, frontier) "
    "VALUES ($1::bigint, $2::bytea, now(), $3, $4::bytea) ON CONFLICT (tree_size) DO NOTHING";
static const char SQL_MAX_CHECKPOINT[] = "SELECT coalesce(max(tree_size), 0) FROM checkpoints";
static const char SQL_CHECKPOINTS_IN[] = "SELECT tree_size, root_hash, signed_note FROM checkpoints "
                                         "WHERE tree_size > $1::bigint AND tree_size <= $2::bigint "
                                         "ORDER BY tree_size";
static const char SQL_VERIFY_ROWS[] = "SELECT seq, entry, leaf_hash FROM events "
                                      "WHERE seq >= $1::bigint AND seq < $2::bigint ORDER BY seq LIMIT 1000";

/* ---- Types ------------------------------------------------------------------------------------------ */

/* One waiting event, owned by its appender. The committer fills the result fields, then sets done. The
 * events of one audit_store_append_all() call are queued back to back; the first has group_len = their
 * count (the others 0) and the committer never splits a group across transactions. */
typedef struct pending {
    const audit_store_event *ev;
    struct pending *next;
    size_t group_len;
    bool done;
    base_err err;
    char msg[STORE_MSG_MAX];
    uint64_t seq;
    uint8_t leaf[AUDIT_MERKLE_HASH_LEN];
    int64_t time_micros;
    /* committer scratch, reset on every attempt of the transaction */
    char *entry;
    size_t entry_len;
    bool enc_failed;
} pending;

struct audit_store {
    db_pool *pool;
    char *origin;
    char *key_name;
    char *vkey;
    /* Checkpoints verify with the current key or a previous one (rotation): [0] is the current key. */
    audit_note_verifier *verifiers[1 + AUDIT_STORE_MAX_PREVIOUS_KEYS];
    size_t n_verifiers;
    const acrypto_ed25519_key *key;
    size_t max_batch;
    int max_wait_us;
    int checkpoint_interval_ms;

    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* committer waits: queue non-empty, closing */
    pthread_cond_t done_cv; /* appenders wait: their pending is done */
    pthread_t committer;
    bool committer_started;
    bool closing;
    pending *head, *tail;
    size_t queued;

    /* Written by the committer (and open) under mu; the committer may read it without mu. */
    audit_merkle_frontier frontier;
    audit_store_stats stats;
    uint64_t last_ckpt_size;
    bool have_ckpt;
    int64_t last_ckpt_ms;
};

/* ---- Helpers ---------------------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t real_micros(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void copy_msg(char dst[STORE_MSG_MAX], const char *src)
{
    snprintf(dst, STORE_MSG_MAX, "%s", src ? src : "");
}

static base_result get_u64(const db_result *res, int row, int col, uint64_t *ret)
{
    int64_t v = 0;
    BASE_GUARD(db_result_get_int64(res, row, col, &v));
    if (v < 0)
        return base_fail(BASE_ERR_INTERNAL, "audit store: negative value in an unsigned column");
    *ret = (uint64_t)v;
    return BASE_OK_RESULT;
}

static base_result get_hash(const db_result *res, int row, int col, uint8_t ret[AUDIT_MERKLE_HASH_LEN])
{
    unsigned char *data = NULL;
    size_t len = 0;
    BASE_GUARD(db_result_get_bytea(res, row, col, &data, &len));
    if (len != AUDIT_MERKLE_HASH_LEN) {
        free(data);
        return base_fail(BASE_ERR_INTERNAL, "audit store: stored hash has the wrong length");
    }
    memcpy(ret, data, AUDIT_MERKLE_HASH_LEN);
    free(data);
    return BASE_OK_RESULT;
}

static base_result query_u64(db_conn *c, const char *sql, uint64_t *ret)
{
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, sql, 0, NULL, &res));
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_INTERNAL, "audit store: expected one row");
    return get_u64(res, 0, 0, ret);
}

/* Append the stored leaf hashes of seqs [f->size, upto) to f, in order. A missing seq is BASE_ERR_CONFLICT
 * "gap in seq" (f then holds the leaves before the gap). */
static base_result fold_leaves(db_conn *c, audit_merkle_frontier *f, uint64_t upto, uint64_t *ret_folded)
{
    uint64_t folded = 0;
    while (f->size < upto) {
        char from[24], to[24];
        snprintf(from, sizeof from, "%" PRIu64, f->size);
        snprintf(to, sizeof to, "%" PRIu64, upto);
        const char *p[] = {from, to};
        BASE_CLEANUP(db_result_freep) db_result *res = NULL;
        BASE_GUARD(db_exec(c, SQL_FOLD, 2, p, &res));
        int n = db_result_ntuples(res);
        if (n == 0)
            break;
        for (int i = 0; i < n; i++) {
            uint64_t seq = 0;
            uint8_t h[AUDIT_MERKLE_HASH_LEN];
            BASE_GUARD(get_u64(res, i, 0, &seq));
            if (seq != f->size)
                return base_fail(BASE_ERR_CONFLICT, "audit store: gap in seq");
            BASE_GUARD(get_hash(res, i, 1, h));
            BASE_GUARD(audit_merkle_frontier_append(f, h));
            folded++;
        }
        if (n < FOLD_BATCH)
            break;
    }
    if (f->size != upto)
        return base_fail(BASE_ERR_CONFLICT, "audit store: gap in seq");
    if (ret_folded)
        *ret_folded = folded;
    return BASE_OK_RESULT;
}

/* ---- Checkpoints ------------------------------------------------------------------------------------ */

static base_result store_checkpoint(audit_store *s, const audit_merkle_frontier *f)
{
    uint8_t root[AUDIT_MERKLE_HASH_LEN];
    uint8_t ser[AUDIT_MERKLE_FRONTIER_MAX_BYTES];
    size_t ser_len = 0;
    BASE_GUARD(audit_merkle_frontier_root(f, root));
    BASE_GUARD(audit_merkle_frontier_serialise(f, ser, sizeof ser, &ser_len));

    char *text = NULL, *note = NULL;
    size_t text_len = 0, note_len = 0;
    BASE_GUARD(audit_checkpoint_format(s->origin, f->size, root, NULL, 0, &text, &text_len));
    base_result r = audit_note_sign(text, text_len, s->key_name, s->key, &note, &note_len);
    free(text);
    BASE_GUARD(r);

    char size[24];
    snprintf(size, sizeof size, "%" PRIu64, f->size);
    const char *p[] = {size, (const char *)root, note, (const char *)ser};
    const int lengths[] = {0, AUDIT_MERKLE_HASH_LEN, 0, (int)ser_len};
    const int formats[] = {0, 1, 0, 1};
    db_conn *c = NULL;
    r = db_pool_acquire(s->pool, 5000, &c);
    if (base_is_ok(r))
        r = db_exec_params(c, SQL_INSERT_CHECKPOINT, 4, p, lengths, formats, NULL);
    db_conn_release(c);
    free(note);
    BASE_GUARD(r);

    pthread_mutex_lock(&s->mu);
    if (!s->have_ckpt || f->size > s->last_ckpt_size) {
        s->last_ckpt_size = f->size;
        s->have_ckpt = true;
    }
    s->last_ckpt_ms = mono_ms();
    s->stats.checkpoints++;
    pthread_mutex_unlock(&s->mu);
    return BASE_OK_RESULT;
}

base_result audit_store_checkpoint_now(audit_store *s)
{
    BASE_ENSURE(s, BASE_ERR_INVALID, "audit store: NULL store");
    audit_merkle_frontier f;
    pthread_mutex_lock(&s->mu);
    f = s->frontier;
    pthread_mutex_unlock(&s->mu);
    return store_checkpoint(s, &f);
}

/* ---- The committer ---------------------------------------------------------------------------------- */

typedef struct batch {
    audit_store *s;
    pending **items;
    size_t n;
    audit_merkle_frontier base; /* the log before this batch: the committer's frontier plus folded leaves */
    audit_merkle_frontier work; /* the frontier after this batch, valid when the statement committed */
    uint64_t folded;
    uint64_t behind; /* set by append_batch(): the log's next seq when another replica appended first */
} batch;

static void free_entries(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->items[i]->entry);
        b->items[i]->entry = NULL;
        b->items[i]->entry_len = 0;
    }
}

/* Forget what a previous attempt of the transaction encoded. */
static void reset_scratch(batch *b)
{
    free_entries(b);
    for (size_t i = 0; i < b->n; i++)
        b->items[i]->enc_failed = false;
}

/* Every event of items [start, end) fails: `culprit` with its own error, the others because they belong to
 * its group. Entries the members already hold are freed (their rows were taken out of the batch). */
static void group_fail(batch *b, size_t start, size_t end, size_t culprit, base_err err, const char *why)
{
    for (size_t j = start; j < end && j < b->n; j++) {
        pending *m = b->items[j];
        free(m->entry);
        m->entry = NULL;
        m->entry_len = 0;
        m->enc_failed = true;
        m->err = err;
        if (j == culprit)
            copy_msg(m->msg, why);
        else
            snprintf(m->msg, STORE_MSG_MAX, "audit store: another event of the same batch failed: %.*s",
                     STORE_MSG_MAX / 2, why);
    }
}

/* Encode the batch against b->base and append it with one autocommitted append_batch() call (lock, check of
 * the log's end, rows and subtrees: 0004_append_batch.sql). When another replica appended first nothing is
 * written and b->behind says where the log ends. */
static base_result commit_body(db_conn *c, void *arg)
{
    batch *b = arg;
    reset_scratch(b);
    b->work = b->base;
    b->behind = 0;

    int64_t t = real_micros();
    enum {
        SEQ,
        TENANT,
        ACTION,
        PURPOSE,
        OUTCOME,
        PATIENT,
        ACTOR,
        ENTRY,
        LEAF,
        ST_LEVEL,
        ST_IDX,
        ST_HASH,
        NCOL
    };
    db_array col[NCOL];
    db_array_mark saved[NCOL];
    for (size_t k = 0; k < NCOL; k++)
        db_array_begin(&col[k]);

    base_result r = BASE_OK_RESULT;
    size_t n_ok = 0;
    /* What a group started from, to undo it when one of its events cannot be encoded. */
    size_t group_start = 0, group_end = 0, saved_ok = 0;
    audit_merkle_frontier saved_work = b->work;
    for (size_t i = 0; i < b->n; i++) {
        pending *p = b->items[i];
        const audit_store_event *ev = p->ev;
        if (i >= group_end) {
            group_start = i;
            group_end = i + (p->group_len ? p->group_len : 1);
            saved_ok = n_ok;
            saved_work = b->work;
            for (size_t k = 0; k < NCOL; k++)
                saved[k] = db_array_save(&col[k]);
        }
        uint64_t seq = b->work.size;
        char *entry = NULL;
        size_t len = 0;
        base_result er = ev->encode(ev->encode_arg, seq, t, &entry, &len);
        if (base_is_ok(er) && (!entry || len == 0 || len > AUDIT_STORE_MAX_ENTRY)) {
            free(entry);
            entry = NULL;
            er = base_fail(BASE_ERR_LIMIT, "audit store: encoded entry is empty or too long");
        }
        uint8_t leaf[AUDIT_MERKLE_HASH_LEN];
        if (base_is_ok(er))
            er = audit_merkle_leaf_hash(entry, len, leaf);
        uint8_t nodes[AUDIT_MERKLE_FRONTIER_LEVELS][AUDIT_MERKLE_HASH_LEN];
        unsigned n_nodes = 0;
        if (base_is_ok(er))
            er = audit_merkle_frontier_append_nodes(&b->work, leaf, nodes, &n_nodes);
        if (!base_is_ok(er)) {
            free(entry);
            /* The whole group fails with this event: undo the members already added, skip the rest. */
            char why[STORE_MSG_MAX];
            copy_msg(why, base_error_message());
            for (size_t k = 0; k < NCOL; k++)
                db_array_restore(&col[k], saved[k]);
            n_ok = saved_ok;
            b->work = saved_work;
            group_fail(b, group_start, group_end, i, er.err, why);
            i = group_end - 1;
            continue;
        }
        p->entry = entry;
        p->entry_len = len;
        p->seq = seq;
        p->time_micros = t;
        memcpy(p->leaf, leaf, sizeof leaf);

        db_array_int(&col[SEQ], (int64_t)seq);
        db_array_text(&col[TENANT], ev->tenant_id);
        db_array_int(&col[ACTION], ev->action);
        db_array_int(&col[PURPOSE], ev->purpose);
        db_array_int(&col[OUTCOME], ev->outcome);
        db_array_text(&col[PATIENT], ev->patient_ref);
        db_array_text(&col[ACTOR], ev->actor_id);
        db_array_hex(&col[ENTRY], entry, len);
        db_array_hex(&col[LEAF], leaf, sizeof leaf);
        n_ok++;
        /* The subtrees this leaf closes: level k + 1, index ((seq + 1) >> (k + 1)) - 1. */
        for (unsigned k = 0; k < n_nodes; k++) {
            db_array_int(&col[ST_LEVEL], (int64_t)k + 1);
            db_array_int(&col[ST_IDX], (int64_t)(((seq + 1) >> (k + 1)) - 1));
            db_array_hex(&col[ST_HASH], nodes[k], AUDIT_MERKLE_HASH_LEN);
        }
    }
    for (size_t k = 0; k < NCOL; k++) {
        base_result er = db_array_end(&col[k]);
        if (base_is_ok(r) && !base_is_ok(er))
            r = er;
    }
    if (base_is_ok(r) && n_ok > 0) {
        char tbuf[24], key[24], expected[24];
        snprintf(tbuf, sizeof tbuf, "%" PRId64, t);
        snprintf(key, sizeof key, "%" PRId64, AUDIT_STORE_LOCK_KEY);
        snprintf(expected, sizeof expected, "%" PRIu64, b->base.size);
        const char *p[] = {key,
                           expected,
                           tbuf,
                           col[SEQ].text,
                           col[TENANT].text,
                           col[ACTION].text,
                           col[PURPOSE].text,
                           col[OUTCOME].text,
                           col[PATIENT].text,
                           col[ACTOR].text,
                           col[ENTRY].text,
                           col[LEAF].text,
                           col[ST_LEVEL].text,
                           col[ST_IDX].text,
                           col[ST_HASH].text};
        db_result *res = NULL;
        r = db_exec(c, SQL_APPEND, (int)BASE_ARRAY_LEN(p), p, &res);
        int64_t inserted = 0;
        if (base_is_ok(r))
            r = db_result_get_int64(res, 0, 0, &inserted);
        if (base_is_ok(r) && inserted < 0)
            b->behind = (uint64_t)(-(inserted + 1));
        else if (base_is_ok(r) && inserted != (int64_t)n_ok)
            r = base_fail(BASE_ERR_INTERNAL, "audit store: batch insert count mismatch");
        db_result_free(res);
    }
    for (size_t k = 0; k < NCOL; k++)
        db_array_free(&col[k]);
    return r;
}

/* The batch under the log's lock, taken first: fold in what other replicas appended, then append. */
static base_result locked_body(db_conn *c, void *arg)
{
    batch *b = arg;
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, AUDIT_STORE_LOCK_KEY);
    const char *kp[] = {key};
    BASE_GUARD(db_exec(c, SQL_LOCK, 1, kp, NULL));
    uint64_t next = 0;
    BASE_GUARD(query_u64(c, SQL_NEXT_SEQ, &next));
    if (next < b->base.size)
        return base_fail(BASE_ERR_CONFLICT, "audit store: the log is shorter than the in-memory frontier");
    if (next > b->base.size) {
        uint64_t folded = 0;
        BASE_GUARD(fold_leaves(c, &b->base, next, &folded));
        b->folded += folded;
    }
    BASE_GUARD(commit_body(c, b));
    if (b->behind != 0)
        return base_fail(BASE_ERR_INTERNAL, "audit store: the log moved while its lock was held");
    return BASE_OK_RESULT;
}

static void run_batch(audit_store *s, pending **items, size_t n)
{
    batch b = {.s = s, .items = items, .n = n, .base = s->frontier}; /* only the committer writes it */
    /* Optimistic first: one round trip. If another replica appended first, take the lock before reading
     * where the log ends (a transaction), so this batch cannot lose the race again. */
    db_conn *c = NULL;
    base_result r = db_pool_acquire(s->pool, 5000, &c);
    if (base_is_ok(r))
        r = commit_body(c, &b);
    db_conn_release(c);
    if (base_is_ok(r) && b.behind != 0)
        r = db_transaction(s->pool, DB_READ_COMMITTED, TXN_MAX_ATTEMPTS, locked_body, &b);
    char msg[STORE_MSG_MAX];
    copy_msg(msg, base_is_ok(r) ? "" : base_error_message());
    free_entries(&b);

    pthread_mutex_lock(&s->mu);
    if (base_is_ok(r)) {
        size_t ok = 0;
        for (size_t i = 0; i < n; i++)
            ok += !items[i]->enc_failed;
        s->frontier = b.work;
        s->stats.batches++;
        s->stats.events += ok;
        s->stats.folded_leaves += b.folded;
    } else {
        s->stats.failed_batches++;
    }
    for (size_t i = 0; i < n; i++) {
        pending *p = items[i];
        if (!base_is_ok(r) && !p->enc_failed) {
            p->err = r.err;
            copy_msg(p->msg, msg);
        } else if (!p->enc_failed) {
            p->err = BASE_OK;
        }
        p->done = true;
    }
    pthread_cond_broadcast(&s->done_cv);
    bool want_ckpt = base_is_ok(r) && mono_ms() - s->last_ckpt_ms >= s->checkpoint_interval_ms &&
                     (!s->have_ckpt || s->frontier.size != s->last_ckpt_size);
    audit_merkle_frontier snap = s->frontier;
    pthread_mutex_unlock(&s->mu);

    if (want_ckpt && !base_is_ok(store_checkpoint(s, &snap))) {
        pthread_mutex_lock(&s->mu);
        s->stats.checkpoint_failures++;
        s->last_ckpt_ms = mono_ms(); /* do not retry after every batch while the database is sick */
        pthread_mutex_unlock(&s->mu);
    }
}

static void *committer_main(void *arg)
{
    audit_store *s = arg;
    /* A group is never split, so a batch may exceed max_batch by up to one group. */
    pending **items = calloc(s->max_batch + AUDIT_STORE_MAX_GROUP, sizeof *items);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->closing) {
            /* Idle with leaves no checkpoint covers yet: sign one when the interval is up, so the latest
             * checkpoint is never more than an interval behind the last append. */
            bool behind = !s->have_ckpt || s->frontier.size != s->last_ckpt_size;
            if (!behind) {
                pthread_cond_wait(&s->work_cv, &s->mu);
                continue;
            }
            int64_t due = s->last_ckpt_ms + s->checkpoint_interval_ms - mono_ms();
            if (due > 0) {
                struct timespec dl = base_time_after_ms(CLOCK_REALTIME, due);
                pthread_cond_timedwait(&s->work_cv, &s->mu, &dl);
                continue;
            }
            audit_merkle_frontier snap = s->frontier;
            pthread_mutex_unlock(&s->mu);
            bool ok = base_is_ok(store_checkpoint(s, &snap));
            pthread_mutex_lock(&s->mu);
            if (!ok) {
                s->stats.checkpoint_failures++;
                s->last_ckpt_ms = mono_ms();
            }
        }
        if (!s->head)
            break; /* closing and drained */
        if (s->queued < s->max_batch && s->max_wait_us > 0 && !s->closing) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_nsec += (long)s->max_wait_us * 1000;
            dl.tv_sec += dl.tv_nsec / 1000000000;
            dl.tv_nsec %= 1000000000;
            while (s->queued < s->max_batch && !s->closing)
                if (pthread_cond_timedwait(&s->work_cv, &s->mu, &dl) == ETIMEDOUT)
                    break;
        }
        size_t n = 0;
        while (s->head && n < s->max_batch) {
            size_t g = s->head->group_len ? s->head->group_len : 1;
            for (size_t k = 0; k < g && s->head; k++) {
                pending *p = s->head;
                s->head = p->next;
                if (!s->head)
                    s->tail = NULL;
                s->queued--;
                if (items)
                    items[n++] = p;
                else { /* no memory for the batch array: fail the appends one by one */
                    p->err = BASE_ERR_NOMEM;
                    copy_msg(p->msg, "audit store: out of memory");
                    p->done = true;
                    pthread_cond_broadcast(&s->done_cv);
                }
            }
        }
        if (n == 0)
            continue;
        pthread_mutex_unlock(&s->mu);
        run_batch(s, items, n);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(items);
    return NULL;
}

base_result audit_store_append_all(audit_store *s, const audit_store_event *evs, size_t n,
                                   audit_store_result *ret_results)
{
    BASE_ENSURE(s && evs && n >= 1 && ret_results, BASE_ERR_INVALID,
                "audit store: append needs a store, events and room for the results");
    BASE_ENSURE(n <= AUDIT_STORE_MAX_GROUP, BASE_ERR_LIMIT, "audit store: too many events in one append");
    for (size_t i = 0; i < n; i++)
        BASE_ENSURE(evs[i].encode && evs[i].tenant_id && evs[i].actor_id, BASE_ERR_INVALID,
                    "audit store: every event needs a tenant, an actor and an encoder");
    pending one;
    pending *ps = n == 1 ? &one : calloc(n, sizeof *ps);
    if (!ps)
        return base_fail(BASE_ERR_NOMEM, "audit store: out of memory");
    memset(ps, 0, n * sizeof *ps);
    for (size_t i = 0; i < n; i++) {
        ps[i].ev = &evs[i];
        ps[i].next = i + 1 < n ? &ps[i + 1] : NULL;
    }
    ps[0].group_len = n;
    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        if (ps != &one)
            free(ps);
        return base_fail(BASE_ERR_UNAVAILABLE, "audit store: closing");
    }
    if (s->tail)
        s->tail->next = &ps[0];
    else
        s->head = &ps[0];
    s->tail = &ps[n - 1];
    s->queued += n;
    pthread_cond_signal(&s->work_cv);
    for (size_t i = 0; i < n; i++)
        while (!ps[i].done)
            pthread_cond_wait(&s->done_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    /* A group commits or fails as a whole: report the first failure. */
    base_result r = BASE_OK_RESULT;
    for (size_t i = 0; i < n; i++) {
        if (ps[i].err != BASE_OK) {
            r = base_fail(ps[i].err, "%s", ps[i].msg);
            break;
        }
    }
    if (base_is_ok(r))
        for (size_t i = 0; i < n; i++) {
            ret_results[i].seq = ps[i].seq;
            memcpy(ret_results[i].leaf, ps[i].leaf, AUDIT_MERKLE_HASH_LEN);
            ret_results[i].time_micros = ps[i].time_micros;
        }
    if (ps != &one)
        free(ps);
    return r;
}

base_result audit_store_append(audit_store *s, const audit_store_event *ev, uint64_t *ret_seq,
                               uint8_t ret_leaf[AUDIT_MERKLE_HASH_LEN], int64_t *ret_time_micros)
{
    BASE_ENSURE(ev, BASE_ERR_INVALID, "audit store: append needs an event");
    audit_store_result res = {0};
    BASE_GUARD(audit_store_append_all(s, ev, 1, &res));
    if (ret_seq)
        *ret_seq = res.seq;
    if (ret_leaf)
        memcpy(ret_leaf, res.leaf, AUDIT_MERKLE_HASH_LEN);
    if (ret_time_micros)
        *ret_time_micros = res.time_micros;
    return BASE_OK_RESULT;
}

/* ---- Open / close ----------------------------------------------------------------------------------- */

typedef struct load_ctx {
    audit_store *s;
    audit_merkle_frontier f;
    bool have_ckpt;
    uint64_t ckpt_size;
} load_ctx;

static base_result load_body(db_conn *c, void *arg)
{
    load_ctx *l = arg;
    audit_merkle_frontier_init(&l->f);
    l->have_ckpt = false;
    l->ckpt_size = 0;

    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_LATEST_CHECKPOINT, 0, NULL, &res));
    if (db_result_ntuples(res) == 1) {
        uint64_t size = 0;
        uint8_t root[AUDIT_MERKLE_HASH_LEN], froot[AUDIT_MERKLE_HASH_LEN];
        BASE_GUARD(get_u64(res, 0, 0, &size));
        BASE_GUARD(get_hash(res, 0, 1, root));
        unsigned char *fr = NULL;
        size_t fr_len = 0;
        BASE_GUARD(db_result_get_bytea(res, 0, 3, &fr, &fr_len));
        base_result r = audit_merkle_frontier_parse(fr, fr_len, &l->f);
        free(fr);
        if (!base_is_ok(r))
            return base_fail(BASE_ERR_CRYPTO, "audit store: latest checkpoint's frontier does not parse");
        BASE_GUARD(audit_merkle_frontier_root(&l->f, froot));
        const char *note = db_result_get(res, 0, 2);
        audit_checkpoint *cp = NULL;
        bool good = l->f.size == size && acrypto_equal(root, froot, sizeof root) && note &&
                    base_is_ok(audit_checkpoint_open(note, db_result_length(res, 0, 2),
                                                     (const audit_note_verifier *const *)l->s->verifiers,
                                                     l->s->n_verifiers, l->s->origin, &cp)) &&
                    cp->size == size && acrypto_equal(cp->root, root, sizeof root);
        audit_checkpoint_free(cp);
        if (!good)
            return base_fail(BASE_ERR_CRYPTO, "audit store: latest checkpoint does not verify");
        l->have_ckpt = true;
        l->ckpt_size = size;
    }
    uint64_t next = 0;
    BASE_GUARD(query_u64(c, SQL_NEXT_SEQ, &next));
    if (next < l->f.size)
        return base_fail(BASE_ERR_CONFLICT, "audit store: the log is shorter than its latest checkpoint");
    return fold_leaves(c, &l->f, next, NULL);
}

base_result audit_store_migrate(db_pool *pool, const char *schema)
{
    BASE_ENSURE(pool, BASE_ERR_INVALID, "audit store: NULL pool");
    db_migration_set set = audit_migrations;
    if (schema)
        set.schema = schema;
    return db_migrate(pool, &set, NULL);
}

base_result audit_store_open(const audit_store_config *cfg, audit_store **ret_store)
{
    BASE_ENSURE(cfg && ret_store && cfg->pool && cfg->origin && cfg->key, BASE_ERR_INVALID,
                "audit store: config needs a pool, an origin and a key");
    BASE_ENSURE(acrypto_ed25519_has_private(cfg->key), BASE_ERR_INVALID,
                "audit store: the signing key has no private part");
    BASE_ENSURE(cfg->max_batch <= AUDIT_STORE_MAX_BATCH, BASE_ERR_INVALID,
                "audit store: max_batch too large");

    db_migration_set set = audit_migrations;
    if (cfg->schema)
        set.schema = cfg->schema;
    if (!cfg->skip_migrations)
        BASE_GUARD(db_migrate(cfg->pool, &set, NULL));

    audit_store *s = calloc(1, sizeof *s);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "audit store: out of memory");
    base_result r = BASE_OK_RESULT;
    s->pool = cfg->pool;
    s->key = cfg->key;
    s->max_batch = cfg->max_batch ? cfg->max_batch : AUDIT_STORE_DEFAULT_MAX_BATCH;
    s->max_wait_us = cfg->max_wait_us >= 0 ? cfg->max_wait_us : AUDIT_STORE_DEFAULT_MAX_WAIT_US;
    s->checkpoint_interval_ms = cfg->checkpoint_interval_ms > 0 ? cfg->checkpoint_interval_ms
                                                                : AUDIT_STORE_DEFAULT_CHECKPOINT_INTERVAL;
    s->origin = dup_str(cfg->origin);
    s->key_name = dup_str(cfg->key_name ? cfg->key_name : cfg->origin);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    if (!s->origin || !s->key_name) {
        r = base_fail(BASE_ERR_NOMEM, "audit store: out of memory");
        goto out;
    }
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    size_t vkey_len = 0;
    BASE_GUARD_GOTO(r, acrypto_ed25519_public_raw(cfg->key, pub), out);
    BASE_GUARD_GOTO(r, audit_note_vkey_format(s->key_name, pub, &s->vkey, &vkey_len), out);
    BASE_GUARD_GOTO(r, audit_note_verifier_new(s->vkey, &s->verifiers[0]), out);
    s->n_verifiers = 1;
    if (cfg->n_previous_vkeys > AUDIT_STORE_MAX_PREVIOUS_KEYS) {
        r = base_fail(BASE_ERR_INVALID, "audit store: too many previous verifier keys");
        goto out;
    }
    for (size_t i = 0; i < cfg->n_previous_vkeys; i++) {
        r = audit_note_verifier_new(cfg->previous_vkeys[i], &s->verifiers[s->n_verifiers]);
        if (!base_is_ok(r)) {
            r = base_fail(BASE_ERR_INVALID, "audit store: previous verifier key %zu is not a verifier key",
                          i + 1);
            goto out;
        }
        s->n_verifiers++;
    }

    load_ctx l = {.s = s};
    BASE_GUARD_GOTO(r, db_transaction(s->pool, DB_REPEATABLE_READ, TXN_MAX_ATTEMPTS, load_body, &l), out);
    s->frontier = l.f;
    s->have_ckpt = l.have_ckpt;
    s->last_ckpt_size = l.ckpt_size;
    s->last_ckpt_ms = mono_ms() - s->checkpoint_interval_ms; /* the first batch may checkpoint at once */

    if (pthread_create(&s->committer, NULL, committer_main, s) != 0) {
        r = base_fail(BASE_ERR_INTERNAL, "audit store: cannot start the committer thread");
        goto out;
    }
    s->committer_started = true;
    *ret_store = s;
    return BASE_OK_RESULT;
out:
    audit_store_close(s);
    return r;
}

void audit_store_close(audit_store *s)
{
    if (!s)
        return;
    if (s->committer_started) {
        pthread_mutex_lock(&s->mu);
        s->closing = true;
        pthread_cond_broadcast(&s->work_cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->committer, NULL);
    }
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->origin);
    free(s->key_name);
    free(s->vkey);
    for (size_t i = 0; i < s->n_verifiers; i++)
        audit_note_verifier_freep(&s->verifiers[i]);
    free(s);
}

void audit_store_frontier(audit_store *s, audit_merkle_frontier *ret_frontier)
{
    pthread_mutex_lock(&s->mu);
    *ret_frontier = s->frontier;
    pthread_mutex_unlock(&s->mu);
}

void audit_store_stats_get(audit_store *s, audit_store_stats *ret_stats)
{
    pthread_mutex_lock(&s->mu);
    *ret_stats = s->stats;
    pthread_mutex_unlock(&s->mu);
}

/* ---- Verification ----------------------------------------------------------------------------------- */

typedef struct verify_ctx {
    audit_store *s;
    uint64_t start, end;
    audit_verify_report rep;
} verify_ctx;

static void report(audit_verify_report *rep, audit_verify_problem problem, uint64_t seq, uint64_t ckpt_size,
                   const char *what)
{
    rep->problem = problem;
    rep->first_bad_seq = seq;
    rep->checkpoint_size = ckpt_size;
    rep->what = what;
}

/* Compare the root of f with checkpoint row i of cks (tree_size == f->size). False when a problem was
 * reported. */
static bool check_checkpoint(verify_ctx *v, const db_result *cks, int i, const audit_merkle_frontier *f)
{
    uint8_t root[AUDIT_MERKLE_HASH_LEN], stored[AUDIT_MERKLE_HASH_LEN];
    v->rep.checkpoints_checked++;
    const char *note = db_result_get(cks, i, 2);
    audit_checkpoint *cp = NULL;
    bool sig_ok = base_is_ok(get_hash(cks, i, 1, stored)) && note &&
                  base_is_ok(audit_checkpoint_open(note, db_result_length(cks, i, 2),
                                                   (const audit_note_verifier *const *)v->s->verifiers,
                                                   v->s->n_verifiers, v->s->origin, &cp)) &&
                  cp->size == f->size && acrypto_equal(cp->root, stored, sizeof stored);
    audit_checkpoint_free(cp);
    if (!sig_ok) {
        report(&v->rep, AUDIT_VERIFY_CHECKPOINT_INVALID, f->size - 1, f->size,
               "checkpoint signature or contents do not verify");
        return false;
    }
    if (!base_is_ok(audit_merkle_frontier_root(f, root)) || !acrypto_equal(root, stored, sizeof root)) {
        report(&v->rep, AUDIT_VERIFY_ROOT_MISMATCH, f->size - 1, f->size, "checkpoint root mismatch");
        return false;
    }
    return true;
}

static base_result verify_body(db_conn *c, void *arg)
{
    verify_ctx *v = arg;
    audit_verify_report *rep = &v->rep;
    memset(rep, 0, sizeof *rep);
    rep->what = "ok";

    uint64_t log_size = 0, ck_max = 0;
    BASE_GUARD(query_u64(c, SQL_NEXT_SEQ, &log_size));
    BASE_GUARD(query_u64(c, SQL_MAX_CHECKPOINT, &ck_max));
    uint64_t limit = log_size > ck_max ? log_size : ck_max;
    uint64_t end = v->end < limit ? v->end : limit;
    uint64_t start = v->start < end ? v->start : end;
    rep->start = start;
    rep->end = end;

    /* The frontier at start, from the stored leaf hashes before it. */
    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    base_result r = fold_leaves(c, &f, start, NULL);
    if (r.err == BASE_ERR_CONFLICT) {
        report(rep, AUDIT_VERIFY_GAP, f.size, 0, "gap in seq");
        return BASE_OK_RESULT;
    }
    BASE_GUARD(r);

    char a[24], b[24];
    snprintf(a, sizeof a, "%" PRIu64, start);
    snprintf(b, sizeof b, "%" PRIu64, end);
    const char *range[] = {a, b};
    BASE_CLEANUP(db_result_freep) db_result *cks = NULL;
    BASE_GUARD(db_exec(c, SQL_CHECKPOINTS_IN, 2, range, &cks));
    int n_ck = db_result_ntuples(cks), ck = 0;
    uint64_t ck_size = 0;
    if (n_ck > 0)
        BASE_GUARD(get_u64(cks, 0, 0, &ck_size));

    uint64_t next = start;
    while (next < end) {
        snprintf(a, sizeof a, "%" PRIu64, next);
        const char *p[] = {a, b};
        BASE_CLEANUP(db_result_freep) db_result *rows = NULL;
        BASE_GUARD(db_exec(c, SQL_VERIFY_ROWS, 2, p, &rows));
        int n = db_result_ntuples(rows);
        for (int i = 0; i < n; i++) {
            uint64_t seq = 0;
            uint8_t stored[AUDIT_MERKLE_HASH_LEN], leaf[AUDIT_MERKLE_HASH_LEN];
            BASE_GUARD(get_u64(rows, i, 0, &seq));
            if (seq != next) {
                report(rep, AUDIT_VERIFY_GAP, next, 0, "gap in seq");
                return BASE_OK_RESULT;
            }
            unsigned char *entry = NULL;
            size_t len = 0;
            BASE_GUARD(db_result_get_bytea(rows, i, 1, &entry, &len));
            r = audit_merkle_leaf_hash(entry, len, leaf);
            free(entry);
            BASE_GUARD(r);
            if (!base_is_ok(get_hash(rows, i, 2, stored)) || !acrypto_equal(leaf, stored, sizeof leaf)) {
                report(rep, AUDIT_VERIFY_LEAF_MISMATCH, seq, 0, "leaf hash mismatch");
                return BASE_OK_RESULT;
            }
            BASE_GUARD(audit_merkle_frontier_append(&f, leaf));
            rep->leaves_checked++;
            next++;
            while (ck < n_ck && ck_size == next) {
                if (!check_checkpoint(v, cks, ck, &f))
                    return BASE_OK_RESULT;
                if (++ck < n_ck)
                    BASE_GUARD(get_u64(cks, ck, 0, &ck_size));
            }
        }
        if (n < VERIFY_BATCH)
            break;
    }
    if (next < end)
        report(rep, AUDIT_VERIFY_GAP, next, 0, "gap in seq");
    return BASE_OK_RESULT;
}

base_result audit_store_verify(audit_store *s, uint64_t start, uint64_t end, audit_verify_report *ret_report)
{
    BASE_ENSURE(s && ret_report, BASE_ERR_INVALID, "audit store: verify needs a store and a report");
    BASE_ENSURE(start <= end, BASE_ERR_INVALID, "audit store: verify range start after end");
    verify_ctx v = {.s = s, .start = start, .end = end};
    BASE_GUARD(db_transaction(s->pool, DB_REPEATABLE_READ, TXN_MAX_ATTEMPTS, verify_body, &v));
    *ret_report = v.rep;
    return BASE_OK_RESULT;
}
