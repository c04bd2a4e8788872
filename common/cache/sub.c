/* The pub/sub subscriber (cache.h). A connection in SUBSCRIBE mode only receives pushes, so reads are
 * driven by poll(2) with the caller's timeout: a quiet channel is a timeout, not a broken connection
 * (hiredis's own socket timeout would poison the context). */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

struct cache_sub {
    cache__settings s;
    redisContext *ctx; /* NULL: not connected; the next call connects and subscribes again */
    char *channels[CACHE_SUB_MAX_CHANNELS];
    size_t nchannels;
    /* Messages that arrived while waiting for a SUBSCRIBE confirmation, oldest first. */
    redisReply **pending;
    size_t pending_head, pending_count, pending_cap;
};

static void cache__sub_drop_pending(cache_sub *sub)
{
    for (size_t i = 0; i < sub->pending_count; i++)
        freeReplyObject(sub->pending[sub->pending_head + i]);
    sub->pending_head = sub->pending_count = 0;
}

static void cache__sub_close(cache_sub *sub)
{
    if (sub->ctx) {
        redisFree(sub->ctx);
        sub->ctx = NULL;
    }
}

base_result cache_sub_new(const cache_config *cfg, cache_sub **ret_sub)
{
    cache_sub *sub = calloc(1, sizeof *sub);
    if (!sub)
        return base_fail(BASE_ERR_NOMEM, "cache: out of memory");
    base_result r = cache__settings_init(&sub->s, cfg);
    if (!base_is_ok(r)) {
        free(sub);
        return r;
    }
    *ret_sub = sub;
    return BASE_OK_RESULT;
}

void cache_sub_free(cache_sub *sub)
{
    if (!sub)
        return;
    cache__sub_close(sub);
    cache__sub_drop_pending(sub);
    free(sub->pending);
    for (size_t i = 0; i < sub->nchannels; i++)
        free(sub->channels[i]);
    cache__settings_clear(&sub->s);
    free(sub);
}

static bool cache__sub_has(const cache_sub *sub, const char *name, size_t len, size_t *ret_index)
{
    for (size_t i = 0; i < sub->nchannels; i++) {
        if (strlen(sub->channels[i]) == len && memcmp(sub->channels[i], name, len) == 0) {
            if (ret_index)
                *ret_index = i;
            return true;
        }
    }
    return false;
}

static void cache__sub_forget(cache_sub *sub, size_t i)
{
    free(sub->channels[i]);
    sub->channels[i] = sub->channels[--sub->nchannels];
    sub->channels[sub->nchannels] = NULL;
}

/* Send a command without waiting for its reply (the replies of a subscriber are read by cache__sub_read). */
static base_result cache__sub_send(cache_sub *sub, int argc, const char **argv, const size_t *lens)
{
    if (redisAppendCommandArgv(sub->ctx, argc, argv, lens) != REDIS_OK) {
        cache__sub_close(sub);
        return base_fail(BASE_ERR_NOMEM, "redis subscriber: out of memory");
    }
    base_result r = BASE_OK_RESULT;
    cache__sigpipe g;
    cache__sigpipe_block(&g);
    int done = 0;
    while (!done) {
        errno = 0;
        if (redisBufferWrite(sub->ctx, &done) != REDIS_OK) {
            r = cache__io_failure(sub->ctx, errno);
            break;
        }
    }
    cache__sigpipe_restore(&g);
    if (!base_is_ok(r))
        cache__sub_close(sub);
    return r;
}

/* The next reply, waiting until deadline_ms (monotonic). A timeout leaves the connection usable, with any
 * partial reply kept in hiredis's reader for the next call. */
static base_result cache__sub_read(cache_sub *sub, long long deadline_ms, redisReply **ret)
{
    for (;;) {
        void *reply = NULL;
        if (redisGetReplyFromReader(sub->ctx, &reply) != REDIS_OK) {
            base_result r = cache__io_failure(sub->ctx, 0);
            cache__sub_close(sub);
            return r;
        }
        if (reply) {
            *ret = reply;
            return BASE_OK_RESULT;
        }
        long long left = deadline_ms - cache__now_ms();
        if (left < 0)
            left = 0;
        struct pollfd p = {.fd = sub->ctx->fd, .events = POLLIN};
        int n = poll(&p, 1, (int)left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            cache__sub_close(sub);
            return base_fail(BASE_ERR_UNAVAILABLE, "redis unavailable: poll failed");
        }
        if (n == 0)
            return base_fail(BASE_ERR_TIMEOUT, "redis subscriber: nothing received before the timeout");
        errno = 0;
        if (redisBufferRead(sub->ctx) != REDIS_OK) {
            base_result r = cache__io_failure(sub->ctx, errno);
            cache__sub_close(sub);
            return r;
        }
    }
}

static bool cache__is_push(const redisReply *r, const char *kind, size_t nelements)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements == nelements &&
           r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == strlen(kind) &&
           memcmp(r->element[0]->str, kind, r->element[0]->len) == 0;
}

static base_result cache__sub_queue(cache_sub *sub, redisReply *reply)
{
    if (sub->pending_count >= sub->s.max_elements) {
        freeReplyObject(reply);
        cache__sub_close(sub);
        cache__sub_drop_pending(sub);
        return base_fail(BASE_ERR_LIMIT, "redis subscriber: too many messages while subscribing");
    }
    if (sub->pending_head + sub->pending_count == sub->pending_cap) {
        if (sub->pending_head > 0) {
            memmove(sub->pending, sub->pending + sub->pending_head,
                    sub->pending_count * sizeof *sub->pending);
            sub->pending_head = 0;
        } else {
            size_t cap = sub->pending_cap ? sub->pending_cap * 2 : 16;
            redisReply **p = realloc(sub->pending, cap * sizeof *p);
            if (!p) {
                freeReplyObject(reply);
                return base_fail(BASE_ERR_NOMEM, "redis subscriber: out of memory");
            }
            sub->pending = p;
            sub->pending_cap = cap;
        }
    }
    sub->pending[sub->pending_head + sub->pending_count++] = reply;
    return BASE_OK_RESULT;
}

/* SUBSCRIBE to channels and wait for one confirmation per channel; messages arriving meanwhile are queued. */
static base_result cache__sub_subscribe_now(cache_sub *sub, size_t first, size_t count)
{
    const char *argv[1 + CACHE_SUB_MAX_CHANNELS];
    size_t lens[1 + CACHE_SUB_MAX_CHANNELS];
    argv[0] = "SUBSCRIBE";
    lens[0] = 9;
    for (size_t i = 0; i < count; i++) {
        argv[1 + i] = sub->channels[first + i];
        lens[1 + i] = strlen(sub->channels[first + i]);
    }
    BASE_GUARD(cache__sub_send(sub, (int)(1 + count), argv, lens));

    long long deadline = cache__now_ms() + sub->s.command_timeout_ms;
    size_t confirmed = 0;
    while (confirmed < count) {
        redisReply *reply = NULL;
        base_result r = cache__sub_read(sub, deadline, &reply);
        if (!base_is_ok(r)) {
            /* Not knowing whether the subscription took, start over on a new connection next time. */
            cache__sub_close(sub);
            if (r.err == BASE_ERR_TIMEOUT)
                return base_fail(BASE_ERR_TIMEOUT, "redis subscriber: SUBSCRIBE not confirmed in time");
            return r;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            r = cache__error_reply(reply);
            freeReplyObject(reply);
            cache__sub_close(sub);
            return r;
        }
        if (cache__is_push(reply, "message", 3)) {
            BASE_GUARD(cache__sub_queue(sub, reply));
            continue;
        }
        if (cache__is_push(reply, "subscribe", 3))
            confirmed++;
        freeReplyObject(reply); /* confirmations of earlier (un)subscribes */
    }
    return BASE_OK_RESULT;
}

/* Connect and subscribe to every channel (first use, or after the connection was lost). */
static base_result cache__sub_connect(cache_sub *sub)
{
    BASE_GUARD(cache__connect(&sub->s, &sub->ctx));
    if (sub->nchannels == 0)
        return BASE_OK_RESULT;
    return cache__sub_subscribe_now(sub, 0, sub->nchannels);
}

base_result cache_sub_subscribe(cache_sub *sub, const char *channel)
{
    if (!sub)
        return base_fail(BASE_ERR_INVALID, "cache: no subscriber");
    size_t len;
    BASE_GUARD(cache__check_name(&sub->s, channel, &len));
    if (cache__sub_has(sub, channel, len, NULL))
        return BASE_OK_RESULT;
    if (sub->nchannels >= CACHE_SUB_MAX_CHANNELS)
        return base_fail(BASE_ERR_LIMIT, "redis subscriber: too many channels");
    char *copy = strdup(channel);
    if (!copy)
        return base_fail(BASE_ERR_NOMEM, "redis subscriber: out of memory");
    size_t index = sub->nchannels;
    sub->channels[sub->nchannels++] = copy;

    base_result r;
    if (!sub->ctx)
        r = cache__sub_connect(sub); /* subscribes to all, this one included */
    else
        r = cache__sub_subscribe_now(sub, index, 1);
    if (!base_is_ok(r))
        cache__sub_forget(sub, index);
    return r;
}

base_result cache_sub_unsubscribe(cache_sub *sub, const char *channel)
{
    if (!sub)
        return base_fail(BASE_ERR_INVALID, "cache: no subscriber");
    size_t len, index;
    BASE_GUARD(cache__check_name(&sub->s, channel, &len));
    if (!cache__sub_has(sub, channel, len, &index))
        return BASE_OK_RESULT;
    cache__sub_forget(sub, index);
    if (!sub->ctx)
        return BASE_OK_RESULT;
    const char *argv[2] = {"UNSUBSCRIBE", channel};
    const size_t lens[2] = {11, len};
    /* The confirmation is skipped by cache_sub_next; a failure here only means a reconnect later, which
     * subscribes to the remaining channels only. */
    return cache__sub_send(sub, 2, argv, lens);
}

base_result cache_sub_next(cache_sub *sub, int timeout_ms, cache_bytes *ret_channel, cache_bytes *ret_message)
{
    if (!sub)
        return base_fail(BASE_ERR_INVALID, "cache: no subscriber");
    if (timeout_ms < 0)
        return base_fail(BASE_ERR_INVALID, "redis subscriber: negative timeout");
    if (sub->nchannels == 0)
        return base_fail(BASE_ERR_INVALID, "redis subscriber: no channel subscribed");
    long long deadline = cache__now_ms() + timeout_ms;
    if (!sub->ctx)
        BASE_GUARD(cache__sub_connect(sub));

    for (;;) {
        redisReply *reply = NULL;
        if (sub->pending_count > 0) {
            reply = sub->pending[sub->pending_head++];
            if (--sub->pending_count == 0)
                sub->pending_head = 0;
        } else {
            BASE_GUARD(cache__sub_read(sub, deadline, &reply));
        }
        if (!cache__is_push(reply, "message", 3) || reply->element[1]->type != REDIS_REPLY_STRING ||
            reply->element[2]->type != REDIS_REPLY_STRING ||
            !cache__sub_has(sub, reply->element[1]->str, reply->element[1]->len, NULL)) {
            /* (un)subscribe confirmations, or a message of a channel just unsubscribed */
            freeReplyObject(reply);
            continue;
        }
        base_result r = BASE_OK_RESULT;
        cache_bytes channel = {NULL, 0}, message = {NULL, 0};
        if (reply->element[2]->len > sub->s.max_value_bytes) {
            r = base_fail(BASE_ERR_LIMIT, "redis subscriber: message exceeds max_value_bytes");
            goto out;
        }
        BASE_GUARD_GOTO(r, cache__bytes_copy(reply->element[1]->str, reply->element[1]->len, &channel), out);
        BASE_GUARD_GOTO(r, cache__bytes_copy(reply->element[2]->str, reply->element[2]->len, &message), out);
        if (ret_channel) {
            *ret_channel = channel;
            channel = (cache_bytes){NULL, 0};
        }
        if (ret_message) {
            *ret_message = message;
            message = (cache_bytes){NULL, 0};
        }
    out:
        cache_bytes_free(&channel);
        cache_bytes_free(&message);
        freeReplyObject(reply);
        return r;
    }
}
