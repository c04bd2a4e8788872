/* Login throttling and lockout in Redis (throttle.h). */
#include "throttle.h"

#include "crypto/crypto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_USER   "idn:thr:u:"
#define KEY_LOCK   "idn:thr:lock:"
#define KEY_LEVEL  "idn:thr:lvl:"
#define KEY_SOURCE "idn:thr:s:"
#define HEX_LEN    (2 * ACRYPTO_SHA256_LEN)
#define KEY_MAX    (sizeof KEY_LOCK + HEX_LEN)
#define MAX_SECS   (INT64_C(30) * 86400) /* no window or lockout longer than 30 days */
#define MAX_COUNT  INT64_C(1000000000)

typedef struct throttle_keys {
    char user[KEY_MAX];
    char lock[KEY_MAX];
    char level[KEY_MAX];
    char source[KEY_MAX];
} throttle_keys;

/* ---- configuration and arguments ----------------------------------------------------------------------- */

static base_result field(int64_t v, int64_t def, int64_t max, const char *name, int64_t *out)
{
    if (v < 0 || v > max)
        return base_fail(BASE_ERR_INVALID, "throttle config: %s out of range", name);
    *out = v == 0 ? def : v;
    return BASE_OK_RESULT;
}

base_result throttle_config_resolve(const throttle_config *cfg, throttle_config *ret_cfg)
{
    BASE_ENSURE(ret_cfg != NULL, BASE_ERR_INVALID, "throttle config: NULL argument");
    throttle_config in = cfg ? *cfg : (throttle_config){0};
    throttle_config out = {0};
    BASE_GUARD(field(in.user_max_failures, 5, MAX_COUNT, "user_max_failures", &out.user_max_failures));
    BASE_GUARD(field(in.user_window_s, 900, MAX_SECS, "user_window_s", &out.user_window_s));
    BASE_GUARD(field(in.lockout_base_s, 900, MAX_SECS, "lockout_base_s", &out.lockout_base_s));
    BASE_GUARD(field(in.lockout_max_s, 86400, MAX_SECS, "lockout_max_s", &out.lockout_max_s));
    BASE_GUARD(
        field(in.lockout_level_ttl_s, 86400, MAX_SECS, "lockout_level_ttl_s", &out.lockout_level_ttl_s));
    BASE_GUARD(field(in.source_max_failures, 50, MAX_COUNT, "source_max_failures", &out.source_max_failures));
    BASE_GUARD(field(in.source_window_s, 900, MAX_SECS, "source_window_s", &out.source_window_s));
    BASE_ENSURE(out.lockout_base_s <= out.lockout_max_s, BASE_ERR_INVALID,
                "throttle config: lockout_base_s above lockout_max_s");
    *ret_cfg = out;
    return BASE_OK_RESULT;
}

static bool name_ok(const char *s, bool forbid_pipe)
{
    size_t n = s ? strnlen(s, THROTTLE_NAME_MAX + 1) : 0;
    if (n == 0 || n > THROTTLE_NAME_MAX)
        return false;
    return !forbid_pipe || memchr(s, '|', n) == NULL;
}

static base_result hex_sha256(const void *data, size_t len, char out[HEX_LEN + 1])
{
    uint8_t digest[ACRYPTO_SHA256_LEN];
    BASE_GUARD(acrypto_sha256(data, len, digest));
    size_t n = 0;
    return acrypto_hex_encode(digest, sizeof digest, out, HEX_LEN + 1, &n);
}

/* Check the arguments, resolve the config and derive the keys. */
static base_result prepare(cache_conn *conn, const throttle_config *cfg, const char *tenant,
                           const char *username, const char *source, int64_t now, throttle_config *ret_cfg,
                           throttle_keys *ret_keys)
{
    BASE_ENSURE(conn != NULL, BASE_ERR_INVALID, "throttle: NULL connection");
    BASE_ENSURE(name_ok(tenant, true), BASE_ERR_INVALID, "throttle: tenant must be 1..256 bytes without '|'");
    BASE_ENSURE(name_ok(username, false), BASE_ERR_INVALID, "throttle: username must be 1..256 bytes");
    BASE_ENSURE(name_ok(source, false), BASE_ERR_INVALID, "throttle: source must be 1..256 bytes");
    BASE_ENSURE(now >= 0 && now <= INT64_MAX / 2, BASE_ERR_INVALID, "throttle: time out of range");
    BASE_GUARD(throttle_config_resolve(cfg, ret_cfg));

    char who[2 * THROTTLE_NAME_MAX + 2];
    size_t tl = strlen(tenant), ul = strlen(username);
    memcpy(who, tenant, tl);
    who[tl] = '|';
    memcpy(who + tl + 1, username, ul);
    char h[HEX_LEN + 1], hs[HEX_LEN + 1];
    base_result r = hex_sha256(who, tl + 1 + ul, h);
    acrypto_wipe(who, sizeof who);
    BASE_GUARD(r);
    BASE_GUARD(hex_sha256(source, strlen(source), hs));
    snprintf(ret_keys->user, KEY_MAX, KEY_USER "%s", h);
    snprintf(ret_keys->lock, KEY_MAX, KEY_LOCK "%s", h);
    snprintf(ret_keys->level, KEY_MAX, KEY_LEVEL "%s", h);
    snprintf(ret_keys->source, KEY_MAX, KEY_SOURCE "%s", hs);
    return BASE_OK_RESULT;
}

/* ---- Redis --------------------------------------------------------------------------------------------- */

/* Any Redis failure fails closed as UNAVAILABLE (the cache's messages name no key or value). */
static base_result redis(base_result r)
{
    if (base_is_ok(r))
        return r;
    char why[160];
    snprintf(why, sizeof why, "%s", base_error_message());
    return base_fail(BASE_ERR_UNAVAILABLE, "login throttle unavailable: %s", why);
}

static bool parse_i64(const cache_bytes *b, int64_t *ret)
{
    if (b->data == NULL || b->len == 0 || b->len > 20)
        return false;
    const char *s = (const char *)b->data;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end != s + b->len || v < 0)
        return false;
    *ret = (int64_t)v;
    return true;
}

/* An integer key: 0 when missing. */
static base_result get_int(cache_conn *conn, const char *key, int64_t *ret)
{
    cache_bytes value = {NULL, 0};
    bool found = false;
    BASE_GUARD(redis(cache_get(conn, key, &value, &found)));
    int64_t v = 0;
    bool ok = !found || parse_i64(&value, &v);
    cache_bytes_free(&value);
    BASE_ENSURE(ok, BASE_ERR_INTERNAL, "login throttle: stored state is corrupt");
    *ret = v;
    return BASE_OK_RESULT;
}

/* Seconds until a source window ends (>= 1), from the counter's real TTL. */
static base_result source_retry_after(cache_conn *conn, const throttle_config *cfg, const char *key,
                                      int64_t *ret)
{
    int64_t ttl_ms = 0;
    BASE_GUARD(redis(cache_ttl(conn, key, &ttl_ms)));
    if (ttl_ms == CACHE_TTL_MISSING)
        ttl_ms = 0; /* the window ended just now */
    else if (ttl_ms < 0)
        ttl_ms = cfg->source_window_s * 1000; /* no expiry: cannot happen with cache_incr_expire */
    *ret = ttl_ms <= 0 ? 0 : (ttl_ms + 999) / 1000;
    return BASE_OK_RESULT;
}

static void lock_user(throttle_decision *d, int64_t retry_after)
{
    d->locked = true;
    d->locks |= THROTTLE_LOCK_USER;
    if (retry_after > d->retry_after_s)
        d->retry_after_s = retry_after;
}

static void lock_source(throttle_decision *d, int64_t retry_after)
{
    if (retry_after <= 0)
        return;
    d->locked = true;
    d->locks |= THROTTLE_LOCK_SOURCE;
    if (retry_after > d->retry_after_s)
        d->retry_after_s = retry_after;
}

/* ---- the API ------------------------------------------------------------------------------------------- */

base_result throttle_check(cache_conn *conn, const throttle_config *cfg, const char *tenant,
                           const char *username, const char *source, int64_t now, throttle_decision *decision)
{
    throttle_config c;
    throttle_keys k;
    BASE_GUARD(prepare(conn, cfg, tenant, username, source, now, &c, &k));

    throttle_decision d = {0};
    int64_t until = 0;
    BASE_GUARD(get_int(conn, k.lock, &until));
    if (until > now)
        lock_user(&d, until - now);

    int64_t failures = 0;
    BASE_GUARD(get_int(conn, k.source, &failures));
    if (failures >= c.source_max_failures) {
        int64_t retry = 0;
        BASE_GUARD(source_retry_after(conn, &c, k.source, &retry));
        lock_source(&d, retry);
    }

    if (decision != NULL)
        *decision = d;
    if (d.locked)
        return base_fail(BASE_ERR_LIMIT, "too many failed logins; retry after %" PRId64 " s",
                         d.retry_after_s);
    return BASE_OK_RESULT;
}

/* The lockout period of a level (1, 2, ...): base doubled level - 1 times, at most max. */
static int64_t lockout_period(const throttle_config *c, int64_t level)
{
    int64_t period = c->lockout_base_s;
    for (int64_t i = 1; i < level && period < c->lockout_max_s; i++)
        period *= 2;
    return period < c->lockout_max_s ? period : c->lockout_max_s;
}

base_result throttle_failure(cache_conn *conn, const throttle_config *cfg, const char *tenant,
                             const char *username, const char *source, int64_t now,
                             throttle_decision *ret_decision)
{
    throttle_config c;
    throttle_keys k;
    BASE_GUARD(prepare(conn, cfg, tenant, username, source, now, &c, &k));

    throttle_decision d = {0};
    int64_t until = 0;
    BASE_GUARD(get_int(conn, k.lock, &until));

    int64_t source_failures = 0;
    BASE_GUARD(redis(cache_incr_expire(conn, k.source, c.source_window_s * 1000, &source_failures)));

    if (until > now) {
        lock_user(&d, until - now); /* already locked: counts for the source only */
    } else {
        int64_t user_failures = 0;
        BASE_GUARD(redis(cache_incr_expire(conn, k.user, c.user_window_s * 1000, &user_failures)));
        d.user_failures = user_failures;
        if (user_failures >= c.user_max_failures) {
            int64_t level = 0;
            BASE_GUARD(redis(cache_incr(conn, k.level, &level)));
            BASE_GUARD(redis(cache_expire(conn, k.level, c.lockout_level_ttl_s, NULL)));
            int64_t period = lockout_period(&c, level);
            char value[24];
            int n = snprintf(value, sizeof value, "%" PRId64, now + period);
            BASE_GUARD(
                redis(cache_set(conn, k.lock, value, (size_t)n, period * 1000, CACHE_SET_ALWAYS, NULL)));
            BASE_GUARD(redis(cache_del(conn, k.user, NULL)));
            d.user_failures = 0;
            d.lockout_level = level;
            lock_user(&d, period);
        }
    }

    if (source_failures >= c.source_max_failures) {
        int64_t retry = 0;
        BASE_GUARD(source_retry_after(conn, &c, k.source, &retry));
        lock_source(&d, retry);
    }
    if (ret_decision != NULL)
        *ret_decision = d;
    return BASE_OK_RESULT;
}

base_result throttle_success(cache_conn *conn, const throttle_config *cfg, const char *tenant,
                             const char *username, const char *source, int64_t now)
{
    throttle_config c;
    throttle_keys k;
    BASE_GUARD(prepare(conn, cfg, tenant, username, source, now, &c, &k));
    return redis(cache_del(conn, k.user, NULL));
}
