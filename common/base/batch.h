/* Group commit for callers that block: base_batcher.
 *
 * Concurrent callers each hand one job to base_batcher_run() and wait; one flusher thread takes up to
 * max_jobs queued jobs (and at most max_weight of their weights, always at least one job) and gives them to
 * the flush function in one call, which answers every job (base_batch_done) before it returns. Under load N
 * callers cost one round trip and one commit instead of N; a lone caller is flushed at once (the flusher does
 * not wait for company). Jobs are flushed in the order they were queued. The audit client (AppendEvents) and
 * the guideline review writer (one INSERT of many rows) are the users.
 *
 * A flush that cannot do the batch together should fall back to one job at a time, so that one bad job fails
 * only its own caller. The flush runs on the flusher thread: base_fail() messages must be copied into the job
 * (base_batch_done does), not left in the thread-local message. */
#ifndef ALMA_BASE_BATCH_H
#define ALMA_BASE_BATCH_H

#include "result.h"

#include <stdbool.h>
#include <stddef.h>

#define BASE_BATCH_MSG_MAX 320

typedef struct base_batcher base_batcher;

typedef struct base_batch_job {
    void *arg; /* the caller's request and room for its answer, for the flush function */
    size_t
        weight; /* e.g. bytes; the flusher keeps a batch's sum at most max_weight (one job may exceed it) */
    /* The answer, set by base_batch_done(). */
    base_err err;
    char msg[BASE_BATCH_MSG_MAX];
    bool done;
} base_batch_job;

/* Answer every one of jobs[0..n-1] with base_batch_done() before returning. */
typedef void (*base_batch_flush)(void *ctx, base_batch_job *const *jobs, size_t n);

/* max_jobs 1..4096; max_weight 0 means no weight limit. */
BASE_MUST_USE base_result base_batcher_open(size_t max_jobs, size_t max_weight, base_batch_flush flush,
                                            void *ctx, base_batcher **ret);
/* Flushes what is queued, then stops the flusher. Callers arriving after this started get UNAVAILABLE. */
void base_batcher_close(base_batcher *b);

/* Queue arg (with its weight) and wait until a flush answered it: the flush's result, with its message
 * as base_error_message(). UNAVAILABLE with the message BASE_BATCH_CLOSING when the batcher is closing. */
#define BASE_BATCH_CLOSING "batch: closing"
BASE_MUST_USE base_result base_batcher_run(base_batcher *b, void *arg, size_t weight);

/* The answer for one job: r, and msg (NULL: base_error_message() when r failed, "" when it succeeded). */
void base_batch_done(base_batch_job *job, base_result r, const char *msg);

/* What the flusher has done so far (for tests and metrics): flushes, jobs flushed, jobs waiting in the queue
 * (not yet taken by a flush). Any pointer may be NULL. */
void base_batcher_stats(base_batcher *b, size_t *ret_flushes, size_t *ret_jobs, size_t *ret_queued);

#endif
