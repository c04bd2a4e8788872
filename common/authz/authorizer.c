/* The authorizer: verification keys (fetched through the service's callback, refreshed by a thread and, for
 * an unknown kid, rate-limited from the calling thread), the fail-closed rule of the revocation feed
 * (revocation.c), and authz_authorize() with the rules of services/identity/README.md.
 *
 * Locks: keys_lock guards the key-set pointer (readers verify under it; a refresh swaps it under the write
 * lock), rev_lock the revocation table. Both are writer-preferring rwlocks, never nested, held only for the
 * work itself (never across a fetch or a Redis call). Feed health is read lock-free from atomics, and so are
 * the verified-token cache (token_cache.c: per-entry seqlocks) and the key-set generation that validates its
 * entries: a cache hit takes no keys_lock. */
#include "internal.h"

#include "base/clock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AUTHZ__KEY_RETRY_MS 1000
#define AUTHZ__MAX_VALUE    256 /* a relationship or break-glass value in Redis */

/* ---- threads and stopping ------------------------------------------------------------------------------ */

bool authz__wait_stop(authz *a, int64_t ms)
{
    struct timespec until = base_time_after_ms(CLOCK_MONOTONIC, ms);
    pthread_mutex_lock(&a->stop_lock);
    while (!a->stopping) {
        if (pthread_cond_timedwait(&a->stop_cond, &a->stop_lock, &until) == ETIMEDOUT)
            break;
    }
    bool stopping = a->stopping;
    pthread_mutex_unlock(&a->stop_lock);
    return stopping;
}

int64_t authz__clock_s(const authz *a)
{
    return a->now_s ? a->now_s(a->now_arg) : authz__now_s();
}

/* ---- keys --------------------------------------------------------------------------------------------- */

/* Whether every key of `old` is in `fresh` under the same kid with the same public key: then whatever
 * verified with old verifies with fresh, and the cached tokens stay valid. A new key alone (a rotation
 * starting) keeps them; a key dropped (a rotation ending) or changed does not. */
static bool keyset_keeps(const authz_keyset *old, const authz_keyset *fresh)
{
    if (!old)
        return true;
    for (size_t i = 0; i < old->count; i++) {
        const acrypto_ed25519_key *k = authz__keyset_find(fresh, old->keys[i].kid, strlen(old->keys[i].kid));
        uint8_t was[ACRYPTO_ED25519_PUBLIC_LEN], is[ACRYPTO_ED25519_PUBLIC_LEN];
        if (!k || !base_is_ok(acrypto_ed25519_public_raw(old->keys[i].key, was)) ||
            !base_is_ok(acrypto_ed25519_public_raw(k, is)) || memcmp(was, is, sizeof was) != 0)
            return false;
    }
    return true;
}

static base_result fetch_and_install(authz *a)
{
    pthread_mutex_lock(&a->fetch_lock);
    char *text = NULL;
    authz_keyset *ks = NULL;
    base_result r = a->fetch_jwks(a->fetch_arg, &text);
    if (base_is_ok(r) && !text)
        r = base_fail(BASE_ERR_UNAVAILABLE, "authz: the key fetch returned no JWKS");
    if (base_is_ok(r))
        r = authz_keyset_from_jwks(text, strnlen(text, AUTHZ_MAX_JWKS_LEN + 1), &ks);
    free(text);
    if (base_is_ok(r)) {
        /* a->keys is only written here, under fetch_lock, which we hold: reading it needs no keys_lock. */
        bool keeps = keyset_keeps(a->keys, ks);
        pthread_rwlock_wrlock(&a->keys_lock);
        authz_keyset *old = a->keys;
        a->keys = ks;
        if (!keeps)
            atomic_fetch_add(&a->keys_gen, 1); /* every cached token is a miss from now on */
        pthread_rwlock_unlock(&a->keys_lock);
        authz_keyset_free(old);
    }
    pthread_mutex_unlock(&a->fetch_lock);
    return r;
}

base_result authz_refresh_keys(authz *a)
{
    BASE_ENSURE(a, BASE_ERR_INVALID, "authz: missing argument");
    return fetch_and_install(a);
}

static void *keys_main(void *arg)
{
    authz *a = arg;
    while (!atomic_load(&a->stop_flag)) {
        base_result r = fetch_and_install(a);
        int64_t wait = a->refresh_interval_ms;
        if (!base_is_ok(r) && wait > AUTHZ__KEY_RETRY_MS)
            wait = AUTHZ__KEY_RETRY_MS; /* keep trying while identity is not reachable */
        if (authz__wait_stop(a, wait))
            break;
    }
    return NULL;
}

/* One refetch for an unknown kid, unless another happened less than refetch_min_interval_ms ago (a flood of
 * made-up kids costs identity one fetch per interval). True when new keys were installed. */
static bool try_refetch(authz *a)
{
    int64_t now = authz__mono_ms();
    int64_t last = atomic_load(&a->last_refetch_ms);
    if (now - last < a->refetch_min_interval_ms)
        return false;
    if (!atomic_compare_exchange_strong(&a->last_refetch_ms, &last, now))
        return false; /* another thread is refetching */
    return base_is_ok(fetch_and_install(a));
}

/* ---- lifecycle ----------------------------------------------------------------------------------------- */

static base_result init_rwlock(pthread_rwlock_t *l)
{
    pthread_rwlockattr_t attr;
    if (pthread_rwlockattr_init(&attr) != 0)
        return base_fail(BASE_ERR_NOMEM, "authz: cannot create a lock");
    /* glibc prefers readers by default; a steady stream of authorize() calls would starve a key swap. */
    (void)pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(l, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0)
        return base_fail(BASE_ERR_NOMEM, "authz: cannot create a lock");
    return BASE_OK_RESULT;
}

static base_result check_interval(int v, int def, int min, const char *what, int *ret)
{
    if (v < 0 || (v > 0 && v < min) || v > 24 * 3600 * 1000)
        return base_fail(BASE_ERR_INVALID, "authz config: %s out of range", what);
    *ret = v ? v : def;
    return BASE_OK_RESULT;
}

base_result authz_new(const authz_config *cfg, authz **ret_authz)
{
    BASE_ENSURE(cfg && ret_authz, BASE_ERR_INVALID, "authz config: missing argument");
    BASE_ENSURE(cfg->cache, BASE_ERR_INVALID, "authz config: no cache config");
    BASE_ENSURE(cfg->fetch_jwks, BASE_ERR_INVALID, "authz config: no key fetch function");
    const char *issuer = cfg->issuer ? cfg->issuer : AUTHZ_DEFAULT_ISSUER;
    const char *audience = cfg->audience ? cfg->audience : AUTHZ_DEFAULT_AUDIENCE;
    BASE_ENSURE(authz__valid_uri(issuer), BASE_ERR_INVALID, "authz config: issuer malformed");
    BASE_ENSURE(authz__valid_uri(audience), BASE_ERR_INVALID, "authz config: audience malformed");
    BASE_ENSURE(cfg->max_lifetime_s >= 0 && cfg->max_lifetime_s <= 86400, BASE_ERR_INVALID,
                "authz config: max_lifetime_s out of range");
    int refresh = 0, refetch = 0;
    BASE_GUARD(check_interval(cfg->refresh_interval_ms, AUTHZ_DEFAULT_REFRESH_MS, 10, "refresh_interval_ms",
                              &refresh));
    BASE_GUARD(check_interval(cfg->refetch_min_interval_ms, AUTHZ_DEFAULT_REFETCH_MS, 1,
                              "refetch_min_interval_ms", &refetch));
    BASE_ENSURE(cfg->cache_entries >= -1 && cfg->cache_entries <= AUTHZ__TCACHE_MAX_ENTRIES, BASE_ERR_INVALID,
                "authz config: cache_entries out of range");

    authz *a = calloc(1, sizeof *a);
    if (!a)
        return base_fail(BASE_ERR_NOMEM, "authz: out of memory");
    (void)authz__copy(a->issuer, sizeof a->issuer, issuer);
    (void)authz__copy(a->audience, sizeof a->audience, audience);
    a->expect.issuer = a->issuer;
    a->expect.audience = a->audience;
    a->expect.max_lifetime_s = cfg->max_lifetime_s ? cfg->max_lifetime_s : AUTHZ_DEFAULT_MAX_LIFETIME_S;
    a->revocation_ttl_s = a->expect.max_lifetime_s + 2 * AUTHZ_LEEWAY_S;
    a->cache = cfg->cache;
    a->fetch_jwks = cfg->fetch_jwks;
    a->fetch_arg = cfg->fetch_arg;
    a->refresh_interval_ms = refresh;
    a->refetch_min_interval_ms = refetch;
    a->now_s = cfg->now_s;
    a->now_arg = cfg->now_arg;
    atomic_init(&a->last_refetch_ms, INT64_MIN / 2);
    atomic_init(&a->keys_gen, 0);
    atomic_init(&a->rev_overflow, false);
    atomic_init(&a->feed_synced, false);
    atomic_init(&a->feed_alive_ms, 0);
    atomic_init(&a->stop_flag, false);

    base_result r = BASE_OK_RESULT;
    bool keys_lock = false, rev_lock = false, fetch_lock = false, stop_lock = false, stop_cond = false;
    BASE_GUARD_GOTO(r, init_rwlock(&a->keys_lock), fail);
    keys_lock = true;
    BASE_GUARD_GOTO(r, init_rwlock(&a->rev_lock), fail);
    rev_lock = true;
    if (pthread_mutex_init(&a->fetch_lock, NULL) != 0) {
        r = base_fail(BASE_ERR_NOMEM, "authz: cannot create a lock");
        goto fail;
    }
    fetch_lock = true;
    if (pthread_mutex_init(&a->stop_lock, NULL) != 0) {
        r = base_fail(BASE_ERR_NOMEM, "authz: cannot create a lock");
        goto fail;
    }
    stop_lock = true;
    pthread_condattr_t cattr;
    if (pthread_condattr_init(&cattr) != 0) {
        r = base_fail(BASE_ERR_NOMEM, "authz: cannot create a condition variable");
        goto fail;
    }
    int rc = pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&a->stop_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    if (rc != 0) {
        r = base_fail(BASE_ERR_NOMEM, "authz: cannot create a condition variable");
        goto fail;
    }
    stop_cond = true;
    BASE_GUARD_GOTO(r, authz__rev_init(&a->rev), fail);
    BASE_GUARD_GOTO(r, authz__tcache_init(&a->tcache, cfg->cache_entries), fail);

    if (pthread_create(&a->keys_thread, NULL, keys_main, a) != 0) {
        r = base_fail(BASE_ERR_NOMEM, "authz: cannot start the key thread");
        goto fail;
    }
    a->keys_started = true;
    if (pthread_create(&a->feed_thread, NULL, authz__feed_main, a) != 0) {
        r = base_fail(BASE_ERR_NOMEM, "authz: cannot start the revocation thread");
        authz_free(a);
        return r;
    }
    a->feed_started = true;
    *ret_authz = a;
    return BASE_OK_RESULT;

fail:
    authz__tcache_destroy(&a->tcache);
    authz__rev_destroy(&a->rev);
    if (stop_cond)
        pthread_cond_destroy(&a->stop_cond);
    if (stop_lock)
        pthread_mutex_destroy(&a->stop_lock);
    if (fetch_lock)
        pthread_mutex_destroy(&a->fetch_lock);
    if (rev_lock)
        pthread_rwlock_destroy(&a->rev_lock);
    if (keys_lock)
        pthread_rwlock_destroy(&a->keys_lock);
    free(a);
    return r;
}

void authz_free(authz *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->stop_lock);
    a->stopping = true;
    atomic_store(&a->stop_flag, true);
    pthread_cond_broadcast(&a->stop_cond);
    pthread_mutex_unlock(&a->stop_lock);
    if (a->keys_started)
        pthread_join(a->keys_thread, NULL);
    if (a->feed_started)
        pthread_join(a->feed_thread, NULL);
    authz_keyset_free(a->keys);
    authz__rev_destroy(&a->rev);
    authz__tcache_destroy(&a->tcache);
    pthread_cond_destroy(&a->stop_cond);
    pthread_mutex_destroy(&a->stop_lock);
    pthread_mutex_destroy(&a->fetch_lock);
    pthread_rwlock_destroy(&a->rev_lock);
    pthread_rwlock_destroy(&a->keys_lock);
    free(a);
}

/* The fail-closed rule: synchronised once, a heartbeat seen within the grace period, nothing lost. */
static bool feed_healthy(authz *a)
{
    return atomic_load(&a->feed_synced) && !atomic_load(&a->rev_overflow) &&
           authz__mono_ms() - atomic_load(&a->feed_alive_ms) <= AUTHZ_FEED_GRACE_MS;
}

static bool keys_loaded(authz *a)
{
    pthread_rwlock_rdlock(&a->keys_lock);
    bool loaded = a->keys != NULL;
    pthread_rwlock_unlock(&a->keys_lock);
    return loaded;
}

bool authz_ready(authz *a)
{
    return a && feed_healthy(a) && keys_loaded(a);
}

base_result authz_wait_ready(authz *a, int timeout_ms)
{
    BASE_ENSURE(a, BASE_ERR_INVALID, "authz: missing argument");
    int64_t until = authz__mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (authz_ready(a))
            return BASE_OK_RESULT;
        if (authz__mono_ms() >= until)
            return base_fail(BASE_ERR_UNAVAILABLE, "authz: not ready (verification keys or revocation feed)");
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- decisions ---------------------------------------------------------------------------------------- */

static base_result decide(authz_decision *d, authz_code code, const char *decided_by, const char *fmt, ...)
    BASE_PRINTF(4, 5);

static base_result decide(authz_decision *d, authz_code code, const char *decided_by, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
    d->code = code;
    snprintf(d->decided_by, sizeof d->decided_by, "%s", code == AUTHZ_OK && decided_by ? decided_by : "");
    switch (code) {
    case AUTHZ_OK:
        return BASE_OK_RESULT;
    case AUTHZ_UNAUTHENTICATED:
        return base_fail(BASE_ERR_UNAUTH, "%s", d->reason);
    case AUTHZ_UNAVAILABLE:
        return base_fail(BASE_ERR_UNAVAILABLE, "%s", d->reason);
    case AUTHZ_PERMISSION_DENIED:
    default:
        return base_fail(BASE_ERR_DENIED, "%s", d->reason);
    }
}

/* "Bearer <jwt>" (scheme case-insensitive, RFC 7235) or a bare jwt; NULL when there is no token. */
static const char *bearer_token(const char *h)
{
    if (!h)
        return NULL;
    if (strncasecmp(h, "bearer", 6) == 0 && (h[6] == ' ' || h[6] == '\0')) {
        h += 6;
        while (*h == ' ')
            h++;
    }
    return *h ? h : NULL;
}

static bool has_permission(const authz_claims *c, const char *permission)
{
    for (size_t i = 0; i < c->perm_count; i++) {
        if (strcmp(c->perm[i], permission) == 0)
            return true;
    }
    return false;
}

/* Split s (NUL-terminated, at most AUTHZ__MAX_VALUE) at single spaces into exactly n fields. */
static bool split_fields(char *s, char **fields, size_t n)
{
    size_t k = 0;
    char *p = s;
    for (;;) {
        if (k == n || *p == '\0' || *p == ' ')
            return false; /* too many fields, or an empty one */
        fields[k++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    return k == n;
}

typedef enum lookup { LOOKUP_NONE, LOOKUP_ACTIVE, LOOKUP_FAILED } lookup;

/* GET key on this thread's connection into buf (NUL-terminated). */
static lookup get_value(authz *a, const char *key, char buf[AUTHZ__MAX_VALUE + 1], bool *ret_found)
{
    cache_conn *conn = cache_thread_conn(a->cache);
    if (!conn)
        return LOOKUP_FAILED;
    cache_bytes v = {NULL, 0};
    bool found = false;
    if (!base_is_ok(cache_get(conn, key, &v, &found)))
        return LOOKUP_FAILED;
    lookup res = LOOKUP_NONE;
    if (found) {
        if (v.len == 0 || v.len > AUTHZ__MAX_VALUE || memchr(v.data, 0, v.len)) {
            res = LOOKUP_FAILED;
        } else {
            memcpy(buf, v.data, v.len);
            buf[v.len] = '\0';
        }
    }
    cache_bytes_free(&v);
    *ret_found = found;
    return res;
}

/* authz:rel:<tenant>:<principal>:<patient> = "<relationship_id> <kind> <start_epoch> <end_epoch or 0>" */
static lookup relationship(authz *a, const authz_claims *c, const char *patient, int64_t now,
                           char id[AUTHZ_MAX_ID_LEN + 1])
{
    char key[256];
    snprintf(key, sizeof key, "authz:rel:%s:%s:%s", c->tid, c->sub, patient);
    char buf[AUTHZ__MAX_VALUE + 1];
    bool found = false;
    lookup res = get_value(a, key, buf, &found);
    if (res != LOOKUP_NONE || !found)
        return res;
    char *f[4];
    int64_t start = 0, end = 0;
    if (!split_fields(buf, f, 4) || !authz__valid_record_id(f[0]) || !authz__valid_rel_kind(f[1]) ||
        !authz__parse_epoch(f[2], strlen(f[2]), AUTHZ__MAX_EPOCH, &start) ||
        !authz__parse_epoch(f[3], strlen(f[3]), AUTHZ__MAX_EPOCH, &end))
        return LOOKUP_FAILED;
    if (start > now || (end != 0 && now >= end))
        return LOOKUP_NONE;
    (void)authz__copy(id, AUTHZ_MAX_ID_LEN + 1, f[0]);
    return LOOKUP_ACTIVE;
}

/* authz:bg:<tenant>:<principal>:<patient> = "<grant_id> <end_epoch>" */
static lookup break_glass(authz *a, const authz_claims *c, const char *patient, int64_t now,
                          char id[AUTHZ_MAX_ID_LEN + 1])
{
    char key[256];
    snprintf(key, sizeof key, "authz:bg:%s:%s:%s", c->tid, c->sub, patient);
    char buf[AUTHZ__MAX_VALUE + 1];
    bool found = false;
    lookup res = get_value(a, key, buf, &found);
    if (res != LOOKUP_NONE || !found)
        return res;
    char *f[2];
    int64_t end = 0;
    if (!split_fields(buf, f, 2) || !authz__valid_record_id(f[0]) ||
        !authz__parse_epoch(f[1], strlen(f[1]), AUTHZ__MAX_EPOCH, &end))
        return LOOKUP_FAILED;
    if (now >= end)
        return LOOKUP_NONE;
    (void)authz__copy(id, AUTHZ_MAX_ID_LEN + 1, f[0]);
    return LOOKUP_ACTIVE;
}

static base_result patient_decision(authz *a, const authz_claims *c, const char *permission,
                                    const char *patient, int64_t now, authz_decision *d)
{
    char id[AUTHZ_MAX_ID_LEN + 1];
    char by[AUTHZ_DECIDED_BY_LEN];
    lookup res = relationship(a, c, patient, now, id);
    if (res == LOOKUP_FAILED)
        return decide(d, AUTHZ_UNAVAILABLE, NULL, "care relationship lookup unavailable");
    if (res == LOOKUP_ACTIVE) {
        snprintf(by, sizeof by, "relationship:%s", id);
        return decide(d, AUTHZ_OK, by, "permission %s granted by role; treating relationship", permission);
    }
    res = break_glass(a, c, patient, now, id);
    if (res == LOOKUP_FAILED)
        return decide(d, AUTHZ_UNAVAILABLE, NULL, "break-glass lookup unavailable");
    if (res == LOOKUP_ACTIVE) {
        snprintf(by, sizeof by, "break_glass:%s", id);
        return decide(d, AUTHZ_OK, by, "permission %s granted by role; break-glass grant", permission);
    }
    return decide(d, AUTHZ_PERMISSION_DENIED, NULL,
                  "no treating relationship or break-glass grant for this patient");
}

/* Step 1 of the rules: the token's signature and claims, or their verified-token cache entry, which skips
 * the signature, the parse and the static claim checks (a token's bytes fix all three) but never the time
 * check. A cached entry is valid only for the key-set generation it was verified under: read atomically on a
 * hit, and under keys_lock together with the keys on a miss, so an entry is never stored under a generation
 * newer than its keys. Only a token that verified is cached. */
static authz__status verify_token(authz *a, const char *token, size_t len, int64_t now, authz_claims *c)
{
    uint64_t hash = 0;
    if (authz__tcache_enabled(&a->tcache)) {
        hash = authz__tcache_hash(&a->tcache, token, len);
        uint64_t gen = atomic_load_explicit(&a->keys_gen, memory_order_acquire);
        if (authz__tcache_get(&a->tcache, hash, token, len, gen, c))
            return authz__claims_time_check(c, now);
    }
    pthread_rwlock_rdlock(&a->keys_lock);
    const authz_keyset *ks = a->keys;
    uint64_t gen = atomic_load(&a->keys_gen);
    authz__status st = ks ? authz__token_check(ks, &a->expect, token, len, now, c) : AUTHZ__NO_KEYS;
    pthread_rwlock_unlock(&a->keys_lock);
    if (st == AUTHZ__KID_UNKNOWN && try_refetch(a)) {
        pthread_rwlock_rdlock(&a->keys_lock);
        gen = atomic_load(&a->keys_gen);
        st = authz__token_check(a->keys, &a->expect, token, len, now, c);
        pthread_rwlock_unlock(&a->keys_lock);
    }
    if (st == AUTHZ__OK && hash != 0)
        authz__tcache_put(&a->tcache, hash, token, len, gen, now, c);
    return st;
}

base_result authz_authenticate(authz *a, const char *authorization, authz_claims *claims,
                               authz_decision *decision)
{
    if (!decision)
        return base_fail(BASE_ERR_INVALID, "authz: no decision to write");
    decision->authenticated = false;
    if (!a || !claims) {
        (void)decide(decision, AUTHZ_UNAUTHENTICATED, NULL, "authenticator called without claims");
        return base_fail(BASE_ERR_INVALID, "authz: missing argument");
    }

    /* 0. Without a live revocation feed we cannot know whether a token is revoked. */
    if (!feed_healthy(a))
        return decide(decision, AUTHZ_UNAVAILABLE, NULL, "revocation feed unavailable");

    /* 1. The token. */
    const char *token = bearer_token(authorization);
    if (!token)
        return decide(decision, AUTHZ_UNAUTHENTICATED, NULL, AUTHZ_MSG_MISSING);
    size_t len = strnlen(token, AUTHZ_MAX_TOKEN_LEN + 1);
    if (len > AUTHZ_MAX_TOKEN_LEN)
        return decide(decision, AUTHZ_UNAUTHENTICATED, NULL, AUTHZ_MSG_TOO_LONG);
    int64_t now = authz__clock_s(a);
    authz_claims c;
    authz__status st = verify_token(a, token, len, now, &c);
    if (st == AUTHZ__NO_KEYS)
        return decide(decision, AUTHZ_UNAVAILABLE, NULL, "verification keys unavailable");
    if (st != AUTHZ__OK)
        return decide(decision, AUTHZ_UNAUTHENTICATED, NULL, "%s", authz__status_message(st));

    /* 2. Revocation. */
    pthread_rwlock_rdlock(&a->rev_lock);
    bool revoked = authz__rev_is_revoked(&a->rev, c.sid, c.sub, c.iat, now);
    pthread_rwlock_unlock(&a->rev_lock);
    if (revoked)
        return decide(decision, AUTHZ_UNAUTHENTICATED, NULL, "token revoked");
    decision->authenticated = true;
    memcpy(claims, &c, offsetof(authz_claims, roles));
    claims->role_count = c.role_count;
    memcpy(claims->roles, c.roles, c.role_count * sizeof c.roles[0]);
    claims->perm_count = c.perm_count;
    memcpy(claims->perm, c.perm, c.perm_count * sizeof c.perm[0]);
    return decide(decision, AUTHZ_OK, NULL, "token verified");
}

base_result authz_authorize(authz *a, const char *authorization, const char *permission,
                            const authz_resource *resource, authz_claims *claims, authz_decision *decision)
{
    if (!decision)
        return base_fail(BASE_ERR_INVALID, "authz: no decision to write");
    decision->authenticated = false;
    if (!a || !permission) {
        (void)decide(decision, AUTHZ_PERMISSION_DENIED, NULL, "authorizer called without a permission");
        return base_fail(BASE_ERR_INVALID, "authz: missing argument");
    }

    /* 0-2. Feed, token, revocation. */
    authz_claims c;
    base_result r = authz_authenticate(a, authorization, &c, decision);
    if (!base_is_ok(r))
        return r;
    if (claims) {
        memcpy(claims, &c, offsetof(authz_claims, roles));
        claims->role_count = c.role_count;
        memcpy(claims->roles, c.roles, c.role_count * sizeof c.roles[0]);
        claims->perm_count = c.perm_count;
        memcpy(claims->perm, c.perm, c.perm_count * sizeof c.perm[0]);
    }
    int64_t now = authz__clock_s(a);

    /* 3. Tenant, enrolment tokens, permission. */
    if (!authz_valid_name(permission))
        return decide(decision, AUTHZ_PERMISSION_DENIED, NULL, "permission name malformed");
    if (!resource || !resource->tenant_id || strcmp(resource->tenant_id, c.tid) != 0)
        return decide(decision, AUTHZ_PERMISSION_DENIED, NULL, "resource belongs to another tenant");
    if (c.enr && !authz_permission_is_enrolment(permission))
        return decide(decision, AUTHZ_PERMISSION_DENIED, NULL, "token allows MFA enrolment only");
    if (!has_permission(&c, permission))
        return decide(decision, AUTHZ_PERMISSION_DENIED, NULL, "permission %s not granted", permission);
    if (!authz_permission_is_patient_scoped(permission))
        return decide(decision, AUTHZ_OK, "role", "permission %s granted by role", permission);

    /* 4. Patient scope. */
    if (!resource->patient_ref || !authz_valid_patient_ref(resource->patient_ref))
        return decide(decision, AUTHZ_PERMISSION_DENIED, NULL,
                      "patient-scoped permission without a valid patient reference");
    return patient_decision(a, &c, permission, resource->patient_ref, now, decision);
}
