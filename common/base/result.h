/* The suite's result type and guard macros (after s2n-tls's RESULT_GUARD / RESULT_ENSURE).
 *
 * A fallible function returns `base_result`, marked BASE_MUST_USE so the compiler rejects a caller
 * that ignores it. The result is a struct, not an int, so it cannot be mixed up with a count or a
 * boolean. Output parameters are named ret_* and written only on success.
 *
 * A failing function may attach a short message with base_fail(); it is kept per thread and read
 * with base_error_message(). Messages are written by library code and must never contain PHI or
 * secrets: they name settings, limits and operations, not values a user supplied. */
#ifndef ALMA_BASE_RESULT_H
#define ALMA_BASE_RESULT_H

#include <stdbool.h>
#include <stddef.h>

#define BASE_MUST_USE     __attribute__((warn_unused_result))
#define BASE_PRINTF(a, b) __attribute__((format(printf, a, b)))

typedef enum base_err {
    BASE_OK = 0,
    BASE_ERR_INVALID,     /* bad input: maps to INVALID_ARGUMENT */
    BASE_ERR_NOT_FOUND,   /* maps to NOT_FOUND */
    BASE_ERR_CONFLICT,    /* state conflict: FAILED_PRECONDITION */
    BASE_ERR_EXISTS,      /* already there: ALREADY_EXISTS */
    BASE_ERR_LIMIT,       /* a size or count limit: RESOURCE_EXHAUSTED / INVALID_ARGUMENT */
    BASE_ERR_UNAVAILABLE, /* a dependency is down; retryable: UNAVAILABLE */
    BASE_ERR_TIMEOUT,     /* a deadline passed: DEADLINE_EXCEEDED */
    BASE_ERR_DENIED,      /* PERMISSION_DENIED */
    BASE_ERR_UNAUTH,      /* UNAUTHENTICATED */
    BASE_ERR_CRYPTO,      /* verification or decryption failed: never says why in detail */
    BASE_ERR_NOMEM,       /* allocation failed */
    BASE_ERR_IO,          /* a file or socket operation failed */
    BASE_ERR_INTERNAL,    /* a bug or an impossible state */
} base_err;

typedef struct base_result {
    base_err err;
} base_result;

#define BASE_OK_RESULT ((base_result){BASE_OK})

static inline bool base_is_ok(base_result r)
{
    return r.err == BASE_OK;
}

/* Record a safe message for the current thread and return a failed result. */
BASE_MUST_USE base_result base_fail(base_err err, const char *fmt, ...) BASE_PRINTF(2, 3);

/* The message of the last base_fail() on this thread ("" if none). Valid until the next call. */
const char *base_error_message(void);

/* A stable lowercase name for an error code ("invalid", "unavailable", ...). */
const char *base_err_name(base_err err);

/* Return the failure from `expr` to the caller. */
#define BASE_GUARD(expr)                                                                                     \
    do {                                                                                                     \
        base_result base_guard_r__ = (expr);                                                                 \
        if (base_guard_r__.err != BASE_OK)                                                                   \
            return base_guard_r__;                                                                           \
    } while (0)

/* Fail with `err` and a fixed message unless `cond` holds. */
#define BASE_ENSURE(cond, err, msg)                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            return base_fail((err), "%s", (msg));                                                            \
    } while (0)

/* Jump to `label` with `r` set to the failure of `expr` (single-exit style). */
#define BASE_GUARD_GOTO(r, expr, label)                                                                      \
    do {                                                                                                     \
        (r) = (expr);                                                                                        \
        if ((r).err != BASE_OK)                                                                              \
            goto label;                                                                                      \
    } while (0)

#define BASE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* systemd-style scoped cleanup: `BASE_CLEANUP(free_fn) T *p = NULL;` calls free_fn(&p) on scope exit. */
#define BASE_CLEANUP(fn) __attribute__((cleanup(fn)))

#endif
