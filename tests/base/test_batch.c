/* base_batcher: group commit for blocking callers. The flush function here records what it was given and can
 * be held at a gate, so the tests decide exactly which jobs are queued when a flush starts. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "base/batch.h"

#define MAX_FLUSHES 64

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool hold;    /* the next flush waits at the gate while this is set */
    bool holding; /* a flush is waiting at the gate */
    size_t sizes[MAX_FLUSHES];
    int first[MAX_FLUSHES]; /* the first job's value in each flush */
    size_t n;
} rec;

/* Each job's arg is an int: negative fails (INVALID, message "job N refused"), 1000 is left unanswered. */
static void flush(void *ctx, base_batch_job *const *jobs, size_t n)
{
    rec *r = ctx;
    pthread_mutex_lock(&r->mu);
    if (r->n < MAX_FLUSHES) {
        r->sizes[r->n] = n;
        r->first[r->n] = *(int *)jobs[0]->arg;
    }
    r->n++;
    r->holding = r->hold;
    pthread_cond_broadcast(&r->cv);
    while (r->hold)
        pthread_cond_wait(&r->cv, &r->mu);
    r->holding = false;
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        int v = *(int *)jobs[i]->arg;
        if (v == 1000)
            continue;
        if (v < 0) {
            char m[64];
            snprintf(m, sizeof m, "job %d refused", v);
            base_batch_done(jobs[i], base_fail(BASE_ERR_INVALID, "ignored"), m);
        } else {
            *(int *)jobs[i]->arg = v * 10; /* the answer goes back through arg */
            base_batch_done(jobs[i], BASE_OK_RESULT, NULL);
        }
    }
}

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void rec_fini(rec *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

static void set_hold(rec *r, bool hold)
{
    pthread_mutex_lock(&r->mu);
    r->hold = hold;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void wait_holding(rec *r)
{
    pthread_mutex_lock(&r->mu);
    while (!r->holding)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

static void wait_queued(base_batcher *b, size_t want)
{
    for (int i = 0; i < 10000; i++) { /* at most 10 s */
        size_t q = 0;
        base_batcher_stats(b, NULL, NULL, &q);
        if (q == want)
            return;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    fail_msg("the queue never reached %zu jobs", want);
}

typedef struct caller {
    base_batcher *b;
    int value;
    size_t weight;
    base_err err;
    char msg[BASE_BATCH_MSG_MAX];
    pthread_t th;
} caller;

static void *call_main(void *arg)
{
    caller *c = arg;
    base_result r = base_batcher_run(c->b, &c->value, c->weight);
    c->err = r.err;
    snprintf(c->msg, sizeof c->msg, "%s", base_error_message());
    return NULL;
}

static void start(caller *c, base_batcher *b, int value, size_t weight)
{
    *c = (caller){.b = b, .value = value, .weight = weight};
    assert_int_equal(pthread_create(&c->th, NULL, call_main, c), 0);
}

static void join(caller *c)
{
    pthread_join(c->th, NULL);
}

static void test_lone_and_arguments(void **state)
{
    (void)state;
    base_batcher *b = NULL;
    rec r;
    rec_init(&r);
    assert_int_equal(base_batcher_open(0, 0, flush, &r, &b).err, BASE_ERR_INVALID);
    assert_int_equal(base_batcher_open(5000, 0, flush, &r, &b).err, BASE_ERR_INVALID);
    assert_int_equal(base_batcher_open(4, 0, NULL, &r, &b).err, BASE_ERR_INVALID);
    assert_true(base_is_ok(base_batcher_open(4, 0, flush, &r, &b)));
    int v = 7;
    assert_true(base_is_ok(base_batcher_run(b, &v, 1))); /* a lone caller is flushed at once */
    assert_int_equal(v, 70);
    v = -3;
    base_result res = base_batcher_run(b, &v, 1);
    assert_int_equal(res.err, BASE_ERR_INVALID);
    assert_string_equal(base_error_message(),
                        "job -3 refused"); /* the flush's message, on the caller's thread */
    v = 1000;
    assert_int_equal(base_batcher_run(b, &v, 1).err, BASE_ERR_INTERNAL); /* never left hanging */
    size_t flushes = 0, jobs = 0;
    base_batcher_stats(b, &flushes, &jobs, NULL);
    assert_int_equal(flushes, 3);
    assert_int_equal(jobs, 3);
    base_batcher_close(b);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.sizes[0], 1);
    rec_fini(&r);
}

/* While one flush is held, five callers queue; the next flush takes max_jobs (3) of them in order, then the
 * last two; each gets its own answer, a failing one only its own. */
static void test_batches_in_order(void **state)
{
    (void)state;
    base_batcher *b = NULL;
    rec r;
    rec_init(&r);
    assert_true(base_is_ok(base_batcher_open(3, 0, flush, &r, &b)));
    set_hold(&r, true);
    caller c[6];
    start(&c[0], b, 1, 1);
    wait_holding(&r);
    for (int i = 1; i < 6; i++) {
        start(&c[i], b, i == 4 ? -4 : i + 1, 1);
        wait_queued(b, (size_t)i); /* one at a time: the queue order is the start order */
    }
    set_hold(&r, false);
    for (int i = 0; i < 6; i++)
        join(&c[i]);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.sizes[0], 1);
    assert_int_equal(r.sizes[1], 3);
    assert_int_equal(r.first[1], 2);
    assert_int_equal(r.sizes[2], 2);
    assert_int_equal(r.first[2], -4);
    for (int i = 0; i < 6; i++) {
        if (i == 4) {
            assert_int_equal(c[i].err, BASE_ERR_INVALID);
            assert_string_equal(c[i].msg, "job -4 refused");
        } else {
            assert_int_equal(c[i].err, BASE_OK);
            assert_int_equal(c[i].value, (i + 1) * 10);
        }
    }
    base_batcher_close(b);
    rec_fini(&r);
}

/* max_weight 10: 4 + 4 share a flush, the next 4 does not fit; a job heavier than the limit goes alone. */
static void test_weight_limit(void **state)
{
    (void)state;
    base_batcher *b = NULL;
    rec r;
    rec_init(&r);
    assert_true(base_is_ok(base_batcher_open(16, 10, flush, &r, &b)));
    set_hold(&r, true);
    caller c[5];
    start(&c[0], b, 1, 1);
    wait_holding(&r);
    const size_t weights[] = {4, 4, 4, 50};
    for (int i = 1; i < 5; i++) {
        start(&c[i], b, i + 1, weights[i - 1]);
        wait_queued(b, (size_t)i);
    }
    set_hold(&r, false);
    for (int i = 0; i < 5; i++) {
        join(&c[i]);
        assert_int_equal(c[i].err, BASE_OK);
    }
    assert_int_equal(r.n, 4);
    assert_int_equal(r.sizes[1], 2); /* 4 + 4 */
    assert_int_equal(r.sizes[2], 1); /* 4: 4 + 50 is over */
    assert_int_equal(r.sizes[3], 1); /* 50 alone */
    assert_int_equal(r.first[3], 5);
    base_batcher_close(b);
    rec_fini(&r);
}

/* Closing flushes what is queued before it returns. */
static void *close_main(void *arg)
{
    base_batcher_close(arg);
    return NULL;
}

static void test_close_drains(void **state)
{
    (void)state;
    base_batcher *b = NULL;
    rec r;
    rec_init(&r);
    assert_true(base_is_ok(base_batcher_open(8, 0, flush, &r, &b)));
    set_hold(&r, true);
    caller c[4];
    start(&c[0], b, 1, 1);
    wait_holding(&r);
    for (int i = 1; i < 4; i++)
        start(&c[i], b, i + 1, 1);
    wait_queued(b, 3);
    pthread_t closer;
    assert_int_equal(pthread_create(&closer, NULL, close_main, b), 0);
    set_hold(&r, false);
    pthread_join(closer, NULL);
    for (int i = 0; i < 4; i++) {
        join(&c[i]);
        assert_int_equal(c[i].err, BASE_OK);
        assert_int_equal(c[i].value, (i + 1) * 10);
    }
    assert_int_equal(r.n, 2);
    assert_int_equal(r.sizes[1], 3);
    rec_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lone_and_arguments),
        cmocka_unit_test(test_batches_in_order),
        cmocka_unit_test(test_weight_limit),
        cmocka_unit_test(test_close_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
