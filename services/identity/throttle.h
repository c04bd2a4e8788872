/* Login throttling and lockout in Redis, per user and per source (§164.312(d); NIST SP 800-63B §5.2.2).
 *
 * The service calls, for every Login:
 *
 *   throttle_check()    before verifying anything; BASE_ERR_LIMIT (RESOURCE_EXHAUSTED, with the retry-after
 *                       in the decision) refuses the attempt without looking at the password;
 *   throttle_failure()  after any failed attempt: wrong password, wrong or replayed second factor, disabled
 *                       user, AND a username that does not exist;
 *   throttle_success()  after a login that passed every factor.
 *
 * Counting unknown usernames exactly like known ones is what keeps the throttle from revealing which users
 * exist: nothing here knows whether a user exists, so the decisions (counts, lockouts, retry-after) for a
 * username are the same either way. (The service must also spend the same time on an unknown user:
 * cred_password_verify_unknown() in credentials.h.) The cost is that anyone can lock out a username by
 * guessing at it; the lock is temporary and the per-source limit slows whoever does it.
 *
 * Rules (all numbers from throttle_config):
 *   - user: failures for (tenant, username) are counted in a fixed window (user_window_s, from the first
 *     failure: cache_incr_expire). The user_max_failures-th failure in a window locks the user for
 *     lockout_base_s * 2^(level - 1), at most lockout_max_s, where level counts this user's lockouts and is
 *     forgotten lockout_level_ttl_s after the latest one (15 min, 30 min, 1 h, ... 24 h by default). Locking
 *     resets the failure count, so every lockout costs the guesser another user_max_failures attempts.
 *   - source: failures from one source (an opaque string: the client IP the gateway saw, or the peer
 *     service's name) are counted in a fixed window of source_window_s, across users and tenants; at
 *     source_max_failures the source is refused until that window ends.
 *   - a success clears the user's failure count only: not the lockout level (an attacker still guessing
 *     does not get shorter lockouts because the real user logged in) and not the source's count.
 *
 * Time: a user lockout stores its end ("until", epoch seconds from the caller's `now`) and is checked
 * against `now`, so the caller's clock decides (and tests can move it); its Redis TTL, the lockout period,
 * only removes the key. The failure windows are Redis TTLs (real time), and so is a source's retry-after.
 *
 * Redis keys (never a username, tenant or source in clear: h = lowercase hex SHA-256 of
 * "<tenant>|<username>", hs = of the source):
 *
 *   idn:thr:u:<h>     user failures in the current window     TTL user_window_s
 *   idn:thr:lock:<h>  "<until epoch seconds>"                 TTL the lockout period
 *   idn:thr:lvl:<h>   lockout level (count of lockouts)       TTL lockout_level_ttl_s, renewed per lockout
 *   idn:thr:s:<hs>    source failures in the current window   TTL source_window_s
 *
 * A plain SHA-256 keeps usernames out of Redis dumps and key listings but does not stop someone with the
 * keys from testing guessed usernames; Redis is internal and holds nothing else about users.
 *
 * Failures: Redis down, slow or answering errors -> BASE_ERR_UNAVAILABLE from every function (fail closed:
 * the service refuses logins it cannot throttle). Invalid arguments -> BASE_ERR_INVALID. A lock value that
 * is not a number -> BASE_ERR_INTERNAL (refused too). Messages name no user, tenant or source.
 *
 * Usernames are compared as given: pass the form the service looks users up by. tenant must not contain
 * '|' (tenant ids are [a-z0-9-]). A cache_conn is one thread's (cache.h). */
#ifndef ALMA_IDENTITY_THROTTLE_H
#define ALMA_IDENTITY_THROTTLE_H

#include "base/result.h"
#include "cache/cache.h"

#include <stdbool.h>
#include <stdint.h>

#define THROTTLE_NAME_MAX 256 /* longest tenant, username or source accepted, in bytes */

/* Settings. A zero field takes its default (so `throttle_config cfg = {0};` is the production setting, and
 * a NULL cfg means the same); negative fields are BASE_ERR_INVALID. */
typedef struct throttle_config {
    int64_t user_max_failures;   /* default 5 */
    int64_t user_window_s;       /* default 900 (15 min) */
    int64_t lockout_base_s;      /* default 900: the first lockout */
    int64_t lockout_max_s;       /* default 86400 (24 h): the longest lockout */
    int64_t lockout_level_ttl_s; /* default 86400: the level is forgotten this long after the last lockout */
    int64_t source_max_failures; /* default 50 */
    int64_t source_window_s;     /* default 900 */
} throttle_config;

/* Why an attempt is refused (bits). For logs and audit only: the client is told just "retry after". */
#define THROTTLE_LOCK_USER   1u
#define THROTTLE_LOCK_SOURCE 2u

typedef struct throttle_decision {
    bool locked;           /* refuse this (check) or the next (failure) attempt */
    unsigned locks;        /* THROTTLE_LOCK_* bits */
    int64_t retry_after_s; /* when locked: seconds until every lock that applies has ended, >= 1 */
    int64_t user_failures; /* failure(): the user's count in the window after this failure (0 once locked) */
    int64_t lockout_level; /* failure(): when this failure locked the user, the lockout's level (1, 2, ...) */
} throttle_decision;

/* The configuration with every default filled in (cfg may be NULL). */
BASE_MUST_USE base_result throttle_config_resolve(const throttle_config *cfg, throttle_config *ret_cfg);

/* Before verifying a login. BASE_OK: go on (decision->locked is false). BASE_ERR_LIMIT: locked; decision
 * says for how long (the message "too many failed logins; retry after N s" names no user). decision (may be
 * NULL) is written on BASE_OK and BASE_ERR_LIMIT only. */
BASE_MUST_USE base_result throttle_check(cache_conn *conn, const throttle_config *cfg, const char *tenant,
                                         const char *username, const char *source, int64_t now,
                                         throttle_decision *decision);

/* After a failed attempt (for any reason, unknown users included). Counts it for the user and the source
 * and locks the user when this was one failure too many. BASE_OK and *ret_decision (may be NULL) says
 * whether the user or source is now locked; the attempt itself is still answered "invalid credentials".
 * A failure while the user is already locked (a concurrent attempt that passed check just before the lock)
 * counts for the source only: it neither extends the lock nor counts towards the next one. */
BASE_MUST_USE base_result throttle_failure(cache_conn *conn, const throttle_config *cfg, const char *tenant,
                                           const char *username, const char *source, int64_t now,
                                           throttle_decision *ret_decision);

/* After a successful login: clears the user's failure count (not the lockout level, not the source). */
BASE_MUST_USE base_result throttle_success(cache_conn *conn, const throttle_config *cfg, const char *tenant,
                                           const char *username, const char *source, int64_t now);

#endif
