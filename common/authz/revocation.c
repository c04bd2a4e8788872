/* The revocation feed: an in-memory set of revoked sessions and per-principal not-before epochs, kept by one
 * background thread per authorizer from the Redis channel AUTHZ_REVOCATION_CHANNEL, and the liveness rule
 * that makes decisions fail closed when the feed cannot be trusted.
 *
 * Completeness. Publishers SET the key before they PUBLISH (publish.c). The thread SUBSCRIBEs (and waits for
 * the confirmation) before it SCANs the keys, so every revocation is either in the SCAN (published before the
 * subscription) or delivered on the channel (after it). A reload merges into the set rather than replacing
 * it: a revocation is never undone, so what we knew stays known (even if Redis lost it) until it expires.
 *
 * Liveness. A subscription can die silently (a half-open TCP connection shows no error), so the thread also
 * subscribes to a channel of its own and publishes "hb <monotonic ms>" on it every AUTHZ__HB_INTERVAL_MS from
 * its second connection. Redis delivers a subscriber's messages in the order it executed the PUBLISHes, so a
 * heartbeat sent at T and received means every revocation published before T has been received too:
 * feed_alive_ms = T. authz_authorize() fails closed when now - feed_alive_ms > AUTHZ_FEED_GRACE_MS; the
 * thread itself drops and re-makes the subscription (with a full reload) when it sees that, or any error.
 *
 * Memory. An open-addressing table (linear probing, at most half full) of fixed-size entries. Lookups run
 * under the read lock without allocating; the thread inserts under the write lock and rebuilds the table
 * (dropping expired entries, growing) outside it, swapping the result in. More than AUTHZ_MAX_REVOKED live
 * entries sets rev_overflow, which fails every decision closed (a revocation we could not record must not be
 * ignored). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AUTHZ__HB_INTERVAL_MS    250
#define AUTHZ__RETRY_MS          100
#define AUTHZ__POLL_MS           50
#define AUTHZ__PURGE_INTERVAL_MS 30000
#define AUTHZ__REV_INITIAL_CAP   1024
#define AUTHZ__SCAN_COUNT        "1000"
#define AUTHZ__MGET_BATCH        256
#define AUTHZ__MAX_MESSAGE       256

#define KEY_PREFIX_SID "authz:revoked:sid:"
#define KEY_PREFIX_SUB "authz:revoked:sub:"

/* ---- the table ---------------------------------------------------------------------------------------- */

static uint64_t rev_hash(uint8_t kind, const char *id)
{
    uint64_t h =
        UINT64_C(1469598103934665603); /* FNV-1a: ids are issued by identity, not chosen by callers */
    h = (h ^ kind) * UINT64_C(1099511628211);
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return h ? h : 1;
}

static base_result rev_alloc(size_t cap, authz__rev_table *ret)
{
    authz__rev_entry *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return base_fail(BASE_ERR_NOMEM, "authz: out of memory for the revocation set");
    *ret = (authz__rev_table){slots, cap, 0};
    return BASE_OK_RESULT;
}

base_result authz__rev_init(authz__rev_table *t)
{
    return rev_alloc(AUTHZ__REV_INITIAL_CAP, t);
}

void authz__rev_destroy(authz__rev_table *t)
{
    free(t->slots);
    *t = (authz__rev_table){NULL, 0, 0};
}

static authz__rev_entry *rev_find(const authz__rev_table *t, uint8_t kind, const char *id, uint64_t h)
{
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        authz__rev_entry *e = &t->slots[i];
        if (e->hash == 0)
            return NULL;
        if (e->hash == h && e->kind == kind && strcmp(e->id, id) == 0)
            return e;
    }
}

/* Place an entry known to be absent (the table has room). */
static void rev_place(authz__rev_table *t, const authz__rev_entry *src)
{
    size_t mask = t->cap - 1;
    size_t i = src->hash & mask;
    while (t->slots[i].hash != 0)
        i = (i + 1) & mask;
    t->slots[i] = *src;
    t->count++;
}

bool authz__rev_is_revoked(const authz__rev_table *t, const char *sid, const char *sub, int64_t iat,
                           int64_t now)
{
    const authz__rev_entry *e = rev_find(t, AUTHZ__REV_SID, sid, rev_hash(AUTHZ__REV_SID, sid));
    if (e && e->expires_at > now)
        return true;
    e = rev_find(t, AUTHZ__REV_SUB, sub, rev_hash(AUTHZ__REV_SUB, sub));
    return e && e->expires_at > now && iat <= e->not_before;
}

/* A new table without the expired entries, big enough for `extra` more at most half full. Runs on the feed
 * thread, the only writer, so reading a->rev without the lock is safe. */
static base_result rev_rebuild(authz *a, size_t extra, int64_t now)
{
    size_t live = 0;
    for (size_t i = 0; i < a->rev.cap; i++) {
        if (a->rev.slots[i].hash != 0 && a->rev.slots[i].expires_at > now)
            live++;
    }
    if (live + extra > AUTHZ_MAX_REVOKED)
        return base_fail(BASE_ERR_LIMIT, "authz: more than %d revocations", AUTHZ_MAX_REVOKED);
    size_t cap = AUTHZ__REV_INITIAL_CAP;
    while (cap < 2 * (live + extra) + 2)
        cap *= 2;
    authz__rev_table fresh;
    BASE_GUARD(rev_alloc(cap, &fresh));
    for (size_t i = 0; i < a->rev.cap; i++) {
        if (a->rev.slots[i].hash != 0 && a->rev.slots[i].expires_at > now)
            rev_place(&fresh, &a->rev.slots[i]);
    }
    authz__rev_table old;
    pthread_rwlock_wrlock(&a->rev_lock);
    old = a->rev;
    a->rev = fresh;
    pthread_rwlock_unlock(&a->rev_lock);
    authz__rev_destroy(&old);
    return BASE_OK_RESULT;
}

/* Record a revocation (merging with what is known: the later expiry, the larger not-before). */
static base_result rev_apply(authz *a, uint8_t kind, const char *id, int64_t not_before, int64_t expires_at,
                             int64_t now)
{
    if (expires_at <= now)
        return BASE_OK_RESULT; /* every token it could concern has expired */
    authz__rev_entry in = {
        .hash = rev_hash(kind, id), .expires_at = expires_at, .not_before = not_before, .kind = kind};
    if (!authz__copy(in.id, sizeof in.id, id))
        return base_fail(BASE_ERR_INVALID, "authz: revoked id too long");

    pthread_rwlock_wrlock(&a->rev_lock);
    authz__rev_entry *e = rev_find(&a->rev, kind, id, in.hash);
    if (e) {
        if (expires_at > e->expires_at)
            e->expires_at = expires_at;
        if (not_before > e->not_before)
            e->not_before = not_before;
        pthread_rwlock_unlock(&a->rev_lock);
        return BASE_OK_RESULT;
    }
    bool room = 2 * (a->rev.count + 1) <= a->rev.cap;
    if (room)
        rev_place(&a->rev, &in);
    pthread_rwlock_unlock(&a->rev_lock);
    if (room)
        return BASE_OK_RESULT;

    base_result r = rev_rebuild(a, 1, now);
    if (!base_is_ok(r)) {
        /* Not recorded: fail closed until a reload records everything (feed thread, after a purge). */
        a->reload_overflow = true;
        atomic_store(&a->rev_overflow, true);
        return r;
    }
    pthread_rwlock_wrlock(&a->rev_lock);
    rev_place(&a->rev, &in);
    pthread_rwlock_unlock(&a->rev_lock);
    return BASE_OK_RESULT;
}

static base_result revoke_session(authz *a, const char *sid, int64_t now)
{
    if (!authz_valid_session(sid))
        return base_fail(BASE_ERR_INVALID, "authz: revoked session id malformed");
    return rev_apply(a, AUTHZ__REV_SID, sid, 0, now + a->revocation_ttl_s, now);
}

static base_result revoke_principal(authz *a, const char *sub, int64_t not_before, int64_t now)
{
    if (!authz_valid_principal(sub))
        return base_fail(BASE_ERR_INVALID, "authz: revoked principal id malformed");
    /* A token issued at or before not_before expires by not_before + max lifetime (+ leeway). */
    return rev_apply(a, AUTHZ__REV_SUB, sub, not_before, not_before + a->revocation_ttl_s, now);
}

/* ---- messages ------------------------------------------------------------------------------------------ */

/* "sid <sid>" or "sub <principal> <epoch>"; anything else is ignored (a newer identity may say more). */
static void apply_message(authz *a, const unsigned char *msg, size_t len)
{
    char buf[AUTHZ__MAX_MESSAGE + 1];
    if (len == 0 || len > AUTHZ__MAX_MESSAGE || memchr(msg, 0, len))
        return;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    int64_t now = authz__clock_s(a);
    base_result r = BASE_OK_RESULT;
    if (strncmp(buf, "sid ", 4) == 0) {
        r = revoke_session(a, buf + 4, now);
    } else if (strncmp(buf, "sub ", 4) == 0) {
        char *sp = strchr(buf + 4, ' ');
        int64_t epoch = 0;
        if (!sp || !authz__parse_epoch(sp + 1, strlen(sp + 1), AUTHZ__MAX_EPOCH, &epoch))
            return;
        *sp = '\0';
        r = revoke_principal(a, buf + 4, epoch, now);
    }
    (void)r; /* malformed: ignored; overflow: already fails every decision closed */
}

/* ---- full reload ----------------------------------------------------------------------------------------
 */

/* One key of a SCAN page with its MGET value (NULL when it expired in between). */
static void reload_one(authz *a, const char *key, const cache_reply *value, int64_t now)
{
    if (!key || cache_reply_typeof(value) != CACHE_REPLY_STRING)
        return;
    if (strncmp(key, KEY_PREFIX_SID, strlen(KEY_PREFIX_SID)) == 0) {
        (void)revoke_session(a, key + strlen(KEY_PREFIX_SID), now); /* any value: revoked */
    } else if (strncmp(key, KEY_PREFIX_SUB, strlen(KEY_PREFIX_SUB)) == 0) {
        size_t vlen = 0;
        const char *v = cache_reply_string(value, &vlen);
        int64_t epoch = 0;
        /* A value we cannot read revokes everything issued until now: fail closed. */
        if (!v || !authz__parse_epoch(v, vlen, AUTHZ__MAX_EPOCH, &epoch))
            epoch = now;
        (void)revoke_principal(a, key + strlen(KEY_PREFIX_SUB), epoch, now);
    }
}

static base_result reload_batch(authz *a, cache_conn *conn, const cache_reply *keys, size_t from, size_t n,
                                int64_t now)
{
    const char *argv[AUTHZ__MGET_BATCH + 1];
    argv[0] = "MGET";
    for (size_t i = 0; i < n; i++) {
        argv[i + 1] = cache_reply_string(cache_reply_element(keys, from + i), NULL);
        if (!argv[i + 1])
            return base_fail(BASE_ERR_UNAVAILABLE, "authz: unexpected SCAN reply");
    }
    cache_reply *values = NULL;
    BASE_GUARD(cache_command_argv(conn, (int)n + 1, argv, NULL, &values));
    base_result r = BASE_OK_RESULT;
    if (cache_reply_typeof(values) != CACHE_REPLY_ARRAY || cache_reply_count(values) != n)
        r = base_fail(BASE_ERR_UNAVAILABLE, "authz: unexpected MGET reply");
    for (size_t i = 0; base_is_ok(r) && i < n; i++)
        reload_one(a, argv[i + 1], cache_reply_element(values, i), now);
    cache_reply_free(values);
    return r;
}

/* SCAN MATCH authz:revoked:* and merge every key found. rev_overflow ends up saying whether every key found
 * could be recorded. */
static base_result reload(authz *a, cache_conn *conn)
{
    a->reload_overflow = false;
    char cursor[32] = "0";
    int64_t now = authz__clock_s(a);
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", "authz:revoked:*", "COUNT", AUTHZ__SCAN_COUNT};
        cache_reply *reply = NULL;
        BASE_GUARD(cache_command_argv(conn, 6, argv, NULL, &reply));
        base_result r = BASE_OK_RESULT;
        size_t clen = 0;
        const char *next = cache_reply_string(cache_reply_element(reply, 0), &clen);
        const cache_reply *keys = cache_reply_element(reply, 1);
        if (cache_reply_typeof(reply) != CACHE_REPLY_ARRAY || cache_reply_count(reply) != 2 || !next ||
            clen == 0 || clen >= sizeof cursor || cache_reply_typeof(keys) != CACHE_REPLY_ARRAY)
            r = base_fail(BASE_ERR_UNAVAILABLE, "authz: unexpected SCAN reply");
        size_t count = base_is_ok(r) ? cache_reply_count(keys) : 0;
        for (size_t from = 0; base_is_ok(r) && from < count; from += AUTHZ__MGET_BATCH) {
            size_t n = count - from < AUTHZ__MGET_BATCH ? count - from : AUTHZ__MGET_BATCH;
            r = reload_batch(a, conn, keys, from, n, now);
        }
        if (base_is_ok(r)) {
            memcpy(cursor, next, clen);
            cursor[clen] = '\0';
        }
        cache_reply_free(reply);
        BASE_GUARD(r);
    } while (strcmp(cursor, "0") != 0);
    atomic_store(&a->rev_overflow, a->reload_overflow);
    return BASE_OK_RESULT;
}

/* ---- the thread --------------------------------------------------------------------------------------- */

/* Subscribe to the revocation channel and our heartbeat channel, then reload. */
static base_result feed_connect(authz *a, cache_conn *conn, const char *hb_channel, cache_sub **ret_sub)
{
    cache_sub *sub = NULL;
    BASE_GUARD(cache_sub_new(a->cache, &sub));
    base_result r;
    BASE_GUARD_GOTO(r, cache_sub_subscribe(sub, AUTHZ_REVOCATION_CHANNEL), fail);
    BASE_GUARD_GOTO(r, cache_sub_subscribe(sub, hb_channel), fail);
    BASE_GUARD_GOTO(r, reload(a, conn), fail);
    *ret_sub = sub;
    return BASE_OK_RESULT;
fail:
    cache_sub_free(sub);
    return r;
}

static void on_heartbeat(authz *a, const unsigned char *msg, size_t len)
{
    int64_t sent = 0;
    if (len < 4 || memcmp(msg, "hb ", 3) != 0 ||
        !authz__parse_epoch((const char *)msg + 3, len - 3, INT64_MAX / 2, &sent))
        return;
    int64_t cur = atomic_load(&a->feed_alive_ms);
    if (sent > cur)
        atomic_store(&a->feed_alive_ms, sent); /* the only writer is this thread */
}

void *authz__feed_main(void *arg)
{
    authz *a = arg;
    cache_conn *conn = NULL;
    cache_sub *sub = NULL;
    char hb_channel[64];
    uint8_t rnd[8];
    char rnd_hex[17];
    size_t n = 0;
    if (!base_is_ok(acrypto_random(rnd, sizeof rnd)) ||
        !base_is_ok(acrypto_hex_encode(rnd, sizeof rnd, rnd_hex, sizeof rnd_hex, &n)))
        memcpy(rnd_hex, "0000000000000000", 17); /* still unique enough per process: the pid follows */
    snprintf(hb_channel, sizeof hb_channel, "authz:hb:%s:%ld", rnd_hex, (long)getpid());

    int64_t last_hb = 0;
    int64_t sub_since = 0; /* when the current subscription was made */
    int64_t last_purge = authz__mono_ms();
    while (!atomic_load(&a->stop_flag)) {
        if (!conn && !base_is_ok(cache_conn_new(a->cache, &conn))) {
            conn = NULL;
            if (authz__wait_stop(a, AUTHZ__RETRY_MS))
                break;
            continue;
        }
        if (!sub) {
            if (!base_is_ok(feed_connect(a, conn, hb_channel, &sub))) {
                sub = NULL;
                if (authz__wait_stop(a, AUTHZ__RETRY_MS))
                    break;
                continue;
            }
            atomic_store(&a->feed_synced, true);
            sub_since = authz__mono_ms();
            last_hb = 0; /* at once: the feed is healthy again when this heartbeat comes back */
        }
        int64_t now = authz__mono_ms();
        if (now - last_hb >= AUTHZ__HB_INTERVAL_MS) {
            char hb[40];
            int k = snprintf(hb, sizeof hb, "hb %lld", (long long)now);
            base_result pr = cache_publish(conn, hb_channel, hb, (size_t)k, NULL);
            (void)pr; /* a lost heartbeat shows as silence */
            last_hb = now;
        }
        int64_t alive = atomic_load(&a->feed_alive_ms);
        if (now - (alive > sub_since ? alive : sub_since) > AUTHZ_FEED_GRACE_MS + AUTHZ__HB_INTERVAL_MS) {
            /* Silent for too long, with no error: assume a dead connection and start over. */
            cache_sub_free(sub);
            sub = NULL;
            continue;
        }
        if (now - last_purge >= AUTHZ__PURGE_INTERVAL_MS) {
            /* on failure the old table stays, and is still right */
            (void)rev_rebuild(a, 0, authz__clock_s(a));
            last_purge = now;
            if (atomic_load(&a->rev_overflow)) {
                /* Expired entries are gone now: a reload may record everything again. */
                cache_sub_free(sub);
                sub = NULL;
                continue;
            }
        }
        cache_bytes ch = {NULL, 0}, msg = {NULL, 0};
        base_result r = cache_sub_next(sub, AUTHZ__POLL_MS, &ch, &msg);
        if (base_is_ok(r)) {
            if (strcmp((const char *)ch.data, AUTHZ_REVOCATION_CHANNEL) == 0)
                apply_message(a, msg.data, msg.len);
            else if (strcmp((const char *)ch.data, hb_channel) == 0)
                on_heartbeat(a, msg.data, msg.len);
            cache_bytes_free(&ch);
            cache_bytes_free(&msg);
        } else if (r.err != BASE_ERR_TIMEOUT) {
            /* Lost: make a new subscription and reload. The decisions stay allowed for the rest of the
             * grace period (the README's "down for more than a second"), then fail closed. */
            cache_sub_free(sub);
            sub = NULL;
        }
    }
    cache_sub_free(sub);
    cache_conn_free(conn);
    return NULL;
}
