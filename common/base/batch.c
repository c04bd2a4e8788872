/* Group commit for blocking callers (batch.h). Each waiting caller has its own condition variable, so a
 * finished batch wakes its callers only, not every waiter. */
#include "batch.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_JOBS_LIMIT 4096

typedef struct waiter {
    struct waiter *next;
    base_batch_job job;
    pthread_cond_t cv;
    bool finished; /* set by the flusher under the lock once the job is answered */
} waiter;

struct base_batcher {
    size_t max_jobs, max_weight;
    base_batch_flush flush;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t work; /* the flusher waits for jobs */
    waiter *head, *tail;
    bool stop;
    pthread_t flusher;
    size_t flushes, flushed, queued;
    waiter **batch;        /* max_jobs waiters: the batch being flushed */
    base_batch_job **jobs; /* their jobs, for the flush function */
};

void base_batch_done(base_batch_job *job, base_result r, const char *msg)
{
    job->err = r.err;
    if (!msg)
        msg = base_is_ok(r) ? "" : base_error_message();
    snprintf(job->msg, sizeof job->msg, "%s", msg);
    job->done = true;
}

static void *flusher_main(void *arg)
{
    base_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop)
            pthread_cond_wait(&b->work, &b->mu);
        if (!b->head && b->stop)
            break;
        size_t n = 0, weight = 0;
        while (b->head && n < b->max_jobs) {
            size_t w = b->head->job.weight;
            if (n > 0 && b->max_weight && (w > b->max_weight || weight + w > b->max_weight))
                break;
            weight += w;
            b->batch[n] = b->head;
            b->jobs[n] = &b->head->job;
            n++;
            b->head = b->head->next;
            b->queued--;
        }
        if (!b->head)
            b->tail = NULL;
        pthread_mutex_unlock(&b->mu);
        for (size_t i = 0; i < n; i++)
            b->jobs[i]->done = false;
        b->flush(b->ctx, b->jobs, n);
        pthread_mutex_lock(&b->mu);
        b->flushes++;
        b->flushed += n;
        for (size_t i = 0; i < n; i++) {
            if (!b->jobs[i]->done) /* a flush function that forgot one: never leave a caller hanging */
                base_batch_done(b->jobs[i], base_fail(BASE_ERR_INTERNAL, "batch: job left unanswered"), NULL);
            b->batch[i]->finished = true;
            pthread_cond_signal(&b->batch[i]->cv);
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

base_result base_batcher_open(size_t max_jobs, size_t max_weight, base_batch_flush flush, void *ctx,
                              base_batcher **ret)
{
    BASE_ENSURE(flush && ret, BASE_ERR_INVALID, "batch: flush function required");
    BASE_ENSURE(max_jobs >= 1 && max_jobs <= MAX_JOBS_LIMIT, BASE_ERR_INVALID,
                "batch: max_jobs must be 1..4096");
    base_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return base_fail(BASE_ERR_NOMEM, "batch: out of memory");
    b->batch = calloc(max_jobs, sizeof *b->batch);
    b->jobs = calloc(max_jobs, sizeof *b->jobs);
    if (!b->batch || !b->jobs) {
        free(b->batch);
        free(b->jobs);
        free(b);
        return base_fail(BASE_ERR_NOMEM, "batch: out of memory");
    }
    b->max_jobs = max_jobs;
    b->max_weight = max_weight;
    b->flush = flush;
    b->ctx = ctx;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->work, NULL);
    if (pthread_create(&b->flusher, NULL, flusher_main, b) != 0) {
        pthread_cond_destroy(&b->work);
        pthread_mutex_destroy(&b->mu);
        free(b->batch);
        free(b->jobs);
        free(b);
        return base_fail(BASE_ERR_INTERNAL, "batch: cannot start the flusher thread");
    }
    *ret = b;
    return BASE_OK_RESULT;
}

void base_batcher_close(base_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true; /* the flusher finishes what is queued first */
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->flusher, NULL);
    pthread_cond_destroy(&b->work);
    pthread_mutex_destroy(&b->mu);
    free(b->batch);
    free(b->jobs);
    free(b);
}

base_result base_batcher_run(base_batcher *b, void *arg, size_t weight)
{
    BASE_ENSURE(b, BASE_ERR_INVALID, "batch: NULL batcher");
    waiter w = {.job = {.arg = arg, .weight = weight}};
    pthread_cond_init(&w.cv, NULL);
    pthread_mutex_lock(&b->mu);
    if (b->stop) {
        pthread_mutex_unlock(&b->mu);
        pthread_cond_destroy(&w.cv);
        return base_fail(BASE_ERR_UNAVAILABLE, "%s", BASE_BATCH_CLOSING);
    }
    if (b->tail)
        b->tail->next = &w;
    else
        b->head = &w;
    b->tail = &w;
    b->queued++;
    pthread_cond_signal(&b->work);
    while (!w.finished)
        pthread_cond_wait(&w.cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&w.cv);
    if (w.job.err != BASE_OK)
        return base_fail(w.job.err, "%s", w.job.msg);
    return BASE_OK_RESULT;
}

void base_batcher_stats(base_batcher *b, size_t *ret_flushes, size_t *ret_jobs, size_t *ret_queued)
{
    pthread_mutex_lock(&b->mu);
    if (ret_queued)
        *ret_queued = b->queued;
    if (ret_flushes)
        *ret_flushes = b->flushes;
    if (ret_jobs)
        *ret_jobs = b->flushed;
    pthread_mutex_unlock(&b->mu);
}
