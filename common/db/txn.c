/* Transactions with retry: serializable (and repeatable read) transactions in Postgres may fail with 40001 or
 * 40P01 through no fault of the caller; the cure is to run them again, after a short random pause so that
 * the two contenders do not collide again in lock step. */
#include "db_internal.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

static const char *db_begin_sql(db_isolation iso)
{
    switch (iso) {
    case DB_READ_COMMITTED:
        return "BEGIN ISOLATION LEVEL READ COMMITTED";
    case DB_REPEATABLE_READ:
        return "BEGIN ISOLATION LEVEL REPEATABLE READ";
    case DB_SERIALIZABLE:
        return "BEGIN ISOLATION LEVEL SERIALIZABLE";
    default:
        return NULL;
    }
}

/* Jitter only has to decorrelate threads: a per-thread xorshift seeded from the clock and the thread. */
static uint64_t db_jitter_next(void)
{
    static _Thread_local uint64_t s;
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&s;
        if (s == 0)
            s = 0x9e3779b97f4a7c15ULL;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

/* Wait between attempts: up to 2, 4, 8 ... ms, capped at 100 ms, at least half of it. */
static void db_backoff(int attempt)
{
    int shift = attempt < 7 ? attempt : 7;
    int64_t cap_us = (int64_t)1000 << shift;
    if (cap_us > 100000)
        cap_us = 100000;
    int64_t us = cap_us / 2 + (int64_t)(db_jitter_next() % (uint64_t)(cap_us / 2 + 1));
    struct timespec d = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};
    while (nanosleep(&d, &d) != 0) {
    }
}

/* Leave no transaction open on a connection we hand back. */
static void db_end_failed(db_conn *c)
{
    if (!c->pg)
        return;
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        if (!db__exec_quiet(c, "ROLLBACK", 0, NULL))
            c->broken = true;
    } else if (ts != PQTRANS_IDLE) {
        c->broken = true;
    }
}

base_result db_transaction(db_pool *pool, db_isolation iso, int max_attempts, db_txn_fn fn, void *arg)
{
    BASE_ENSURE(pool && fn, BASE_ERR_INVALID, "db_transaction: missing argument");
    BASE_ENSURE(max_attempts >= 1 && max_attempts <= DB_MAX_ATTEMPTS, BASE_ERR_LIMIT,
                "db_transaction: max_attempts out of range");
    const char *begin = db_begin_sql(iso);
    BASE_ENSURE(begin, BASE_ERR_INVALID, "db_transaction: unknown isolation level");

    for (int attempt = 1;; attempt++) {
        db_conn *c = NULL;
        BASE_GUARD(db_pool_acquire(pool, pool->acquire_timeout_ms, &c));
        bool retry = false;
        char retry_state[6] = "";
        base_result r = db_exec(c, begin, 0, NULL, NULL);
        if (!base_is_ok(r)) {
            /* Nothing ran: a connection that broke under BEGIN can safely be tried again. */
            retry = c->broken;
        } else {
            r = fn(c, arg);
            if (base_is_ok(r)) {
                PGTransactionStatusType ts = c->pg ? PQtransactionStatus(c->pg) : PQTRANS_UNKNOWN;
                if (ts == PQTRANS_INERROR)
                    r = base_fail(BASE_ERR_INTERNAL,
                                  "db_transaction: body returned success after a failed statement");
                else if (ts != PQTRANS_INTRANS)
                    r = base_fail(BASE_ERR_INTERNAL, "db_transaction: body ended the transaction itself");
                else
                    r = db_exec(c, "COMMIT", 0, NULL, NULL);
            }
            /* A serialization failure or deadlock (in the body or at COMMIT) means the server rolled the
             * transaction back: running it again is safe. A connection lost during COMMIT is not. */
            if (!base_is_ok(r) && c->retry_sqlstate[0] && !c->broken) {
                retry = true;
                memcpy(retry_state, c->retry_sqlstate, sizeof retry_state);
            }
        }
        if (!base_is_ok(r))
            db_end_failed(c);
        db_conn_release(c);
        if (base_is_ok(r))
            return r;
        if (!retry)
            return r;
        if (attempt >= max_attempts) {
            if (!retry_state[0])
                return r;
            db__set_last_sqlstate(retry_state);
            return base_fail(BASE_ERR_UNAVAILABLE,
                             "database: transaction conflict persisted after %d attempts (SQLSTATE %s)",
                             attempt, retry_state);
        }
        db_backoff(attempt);
    }
}
