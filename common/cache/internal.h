/* Private to common/cache: what cache.c (commands) and sub.c (subscriber) share. Internal names use the
 * cache__ prefix. This header, unlike cache.h, includes hiredis. */
#ifndef ALMA_CACHE_INTERNAL_H
#define ALMA_CACHE_INTERNAL_H

#include "cache.h"

#include <hiredis/hiredis.h>
#include <signal.h>

#define CACHE__MAX_HOST_BYTES       255
#define CACHE__MAX_CREDENTIAL_BYTES 1024
#define CACHE__MAX_TIMEOUT_MS       3600000
#define CACHE__MAX_VALUE_CAP        (512u << 20) /* Redis's own proto-max-bulk-len default */
#define CACHE__MAX_KEY_CAP          (64u << 10)
#define CACHE__MAX_ELEMENTS_CAP     10000000u

/* A checked, owned copy of a cache_config with the defaults applied. */
typedef struct cache__settings {
    char *host;
    int port;
    char *username; /* NULL: default user */
    char *password; /* NULL: no AUTH; wiped on clear */
    size_t password_len;
    int db;
    int connect_timeout_ms;
    int command_timeout_ms;
    size_t max_value_bytes;
    size_t max_key_bytes;
    size_t max_elements;
} cache__settings;

BASE_MUST_USE base_result cache__settings_init(cache__settings *s, const cache_config *cfg);
void cache__settings_clear(cache__settings *s);

/* Open a connection: connect (connect timeout), command timeout, keepalive, AUTH, SELECT. */
BASE_MUST_USE base_result cache__connect(const cache__settings *s, redisContext **ret_ctx);

/* The failure for a context whose ctx->err is set; `saved_errno` is errno right after the failing call. */
BASE_MUST_USE base_result cache__io_failure(const redisContext *ctx, int saved_errno);
/* The failure for a top-level REDIS_REPLY_ERROR: the code word only, never the rest of the text. */
BASE_MUST_USE base_result cache__error_reply(const redisReply *reply);

/* A key-like argument (key, field, member, channel): not NULL, not empty, at most max_key_bytes. */
BASE_MUST_USE base_result cache__check_name(const cache__settings *s, const char *name, size_t *ret_len);

/* Copy bytes into a fresh cache_bytes (NUL-terminated). */
BASE_MUST_USE base_result cache__bytes_copy(const char *data, size_t len, cache_bytes *ret);

/* hiredis writes with write(2), so a peer that closed the socket raises SIGPIPE, which kills a process that
 * did not ignore it. common/ must not change process-wide signal handling, so each send blocks SIGPIPE for
 * the calling thread and discards one that became pending meanwhile (the approach of libcurl). */
typedef struct cache__sigpipe {
    sigset_t old;
    bool blocked;
} cache__sigpipe;
void cache__sigpipe_block(cache__sigpipe *g);
void cache__sigpipe_restore(cache__sigpipe *g);

long long cache__now_ms(void);

#endif
