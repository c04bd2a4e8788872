/* common/cache: the suite's Redis client, the one home of hiredis (which this header does not expose).
 *
 * Redis holds only state that may be lost or rebuilt: sessions, rate limits, live telehealth state. Never
 * PHI, never the only copy of anything (see README.md).
 *
 * Threading: a cache_conn is one connection and is NOT thread-safe. Give each worker thread its own, either
 * with cache_conn_new() or lazily with cache_thread_conn(). A cache_sub (pub/sub subscriber) is a second,
 * dedicated connection, also for one thread.
 *
 * Failures: Redis down or the connection lost -> BASE_ERR_UNAVAILABLE ("redis unavailable: ..."); no reply
 * within command_timeout_ms -> BASE_ERR_TIMEOUT; a Redis error reply -> BASE_ERR_CONFLICT (WRONGTYPE,
 * EXECABORT) or BASE_ERR_INVALID (ERR and other codes), BASE_ERR_UNAVAILABLE (LOADING, BUSY, READONLY,
 * authentication), BASE_ERR_LIMIT (OOM); an argument over a limit -> BASE_ERR_LIMIT before anything is
 * sent. Messages name the operation and the Redis error code only: never a key, a value or the password.
 *
 * Reconnect: an I/O error, EOF or timeout closes the connection; the next command opens a new one. The
 * commands marked [retried] below are also retried once, transparently, when they fail on a connection that
 * was opened before the call (a stale connection, e.g. after a Redis restart): they are idempotent, so
 * running them twice is harmless. The flag a retried HSET/HDEL/SADD/SREM/DEL returns describes the second
 * attempt. The others (INCR, SET NX/XX, PUBLISH, cache_command_argv) are never retried: they return
 * BASE_ERR_UNAVAILABLE and the caller decides.
 *
 * Keys, hash field names, set members and channel names are NUL-terminated strings (at most max_key_bytes,
 * not empty); values and messages are byte strings with a length and may contain NUL bytes. */
#ifndef ALMA_CACHE_H
#define ALMA_CACHE_H

#include "base/result.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_DEFAULT_HOST               "127.0.0.1"
#define CACHE_DEFAULT_PORT               6379
#define CACHE_DEFAULT_CONNECT_TIMEOUT_MS 1000
#define CACHE_DEFAULT_COMMAND_TIMEOUT_MS 1000
#define CACHE_DEFAULT_MAX_VALUE_BYTES    (1u << 20)
#define CACHE_DEFAULT_MAX_KEY_BYTES      512
#define CACHE_DEFAULT_MAX_ELEMENTS       10000
#define CACHE_MAX_ARGS                   4096

/* Connection settings. A zero-initialised field takes its default, so `cache_config cfg = {0};` plus a port
 * is a valid config. cache_conn_new() copies everything: the struct may be freed afterwards. */
typedef struct cache_config {
    const char *host;       /* default CACHE_DEFAULT_HOST */
    int port;               /* default CACHE_DEFAULT_PORT */
    const char *username;   /* ACL user (Redis 6+); NULL: the default user */
    const char *password;   /* NULL: no AUTH. A secret: copied, wiped on free, never in a message */
    int db;                 /* SELECT index; 0 by default */
    int connect_timeout_ms; /* default CACHE_DEFAULT_CONNECT_TIMEOUT_MS */
    int command_timeout_ms; /* per command (send + reply); default CACHE_DEFAULT_COMMAND_TIMEOUT_MS */
    size_t max_value_bytes; /* largest value or message sent or accepted; default 1 MiB */
    size_t max_key_bytes;   /* largest key, field, member or channel name; default 512 */
    size_t max_elements;    /* largest array reply accepted by the typed helpers; default 10000 */
} cache_config;

/* A byte string owned by the caller. `data` is malloc'd and followed by a NUL byte not counted in `len`, so
 * text values can be used as C strings; it is NULL only when nothing was found. */
typedef struct cache_bytes {
    unsigned char *data;
    size_t len;
} cache_bytes;

/* Wipe and free the bytes and reset to {NULL, 0}. Accepts NULL and already-freed values. */
void cache_bytes_free(cache_bytes *b);

typedef struct cache_list {
    cache_bytes *items;
    size_t count;
} cache_list;
void cache_list_free(cache_list *l);

typedef struct cache_field {
    cache_bytes name;
    cache_bytes value;
} cache_field;

typedef struct cache_fields {
    cache_field *items;
    size_t count;
} cache_fields;
void cache_fields_free(cache_fields *f);

/* ---- connections ---------------------------------------------------------------------------------- */

typedef struct cache_conn cache_conn;

/* Check and copy the config. Does not connect: the first command does (or cache_conn_connect). */
BASE_MUST_USE base_result cache_conn_new(const cache_config *cfg, cache_conn **ret_conn);
/* Close and free; wipes the copied password. Accepts NULL. */
void cache_conn_free(cache_conn *conn);
/* Connect now if not connected (AUTH, SELECT) and PING: a readiness check for startup and health probes. */
BASE_MUST_USE base_result cache_conn_connect(cache_conn *conn);
/* Whether the connection is currently open (false after a failure until the next command reconnects). */
bool cache_conn_is_connected(const cache_conn *conn);

/* This thread's connection for `cfg`, created on first use and freed when the thread exits (or by
 * cache_thread_conn_release). Workers call it per request instead of sharing a connection. Calling it with
 * a different cfg pointer on the same thread replaces (and frees) the previous connection. NULL only when
 * the config is invalid or memory ran out (base_error_message() says which). */
cache_conn *cache_thread_conn(const cache_config *cfg);
/* Free this thread's connection now (e.g. on the main thread, whose thread-exit destructors do not run). */
void cache_thread_conn_release(void);

/* ---- typed commands ------------------------------------------------------------------------------- */

typedef enum cache_set_mode {
    CACHE_SET_ALWAYS = 0, /* SET */
    CACHE_SET_NX,         /* only if the key does not exist */
    CACHE_SET_XX,         /* only if the key exists */
} cache_set_mode;

#define CACHE_TTL_NONE    (-1) /* cache_ttl: the key exists without an expiry */
#define CACHE_TTL_MISSING (-2) /* cache_ttl: no such key */

/* ret_* outputs may be NULL when the caller does not need them; they are written only on success. */

/* GET [retried]. Not found: *ret_found = false and *ret_value = {NULL, 0}. */
BASE_MUST_USE base_result cache_get(cache_conn *conn, const char *key, cache_bytes *ret_value,
                                    bool *ret_found);
/* SET key value [PX ttl_ms] [NX|XX]. ttl_ms 0: no expiry. *ret_stored false when NX/XX prevented it.
 * [retried] for CACHE_SET_ALWAYS only. */
BASE_MUST_USE base_result cache_set(cache_conn *conn, const char *key, const void *value, size_t value_len,
                                    int64_t ttl_ms, cache_set_mode mode, bool *ret_stored);
/* DEL [retried]. */
BASE_MUST_USE base_result cache_del(cache_conn *conn, const char *key, bool *ret_deleted);
/* EXPIRE / PEXPIRE [retried]. *ret_set false when the key does not exist. */
BASE_MUST_USE base_result cache_expire(cache_conn *conn, const char *key, int64_t ttl_s, bool *ret_set);
BASE_MUST_USE base_result cache_pexpire(cache_conn *conn, const char *key, int64_t ttl_ms, bool *ret_set);
/* PTTL [retried]: remaining time in ms, or CACHE_TTL_NONE / CACHE_TTL_MISSING. */
BASE_MUST_USE base_result cache_ttl(cache_conn *conn, const char *key, int64_t *ret_ttl_ms);
/* INCR. */
BASE_MUST_USE base_result cache_incr(cache_conn *conn, const char *key, int64_t *ret_value);
/* INCR, and PEXPIRE ttl_ms when the key is new (or has lost its expiry), atomically (one Lua EVAL): a
 * fixed-window rate-limit counter. ttl_ms must be > 0. */
BASE_MUST_USE base_result cache_incr_expire(cache_conn *conn, const char *key, int64_t ttl_ms,
                                            int64_t *ret_value);

/* Hashes (sessions). HSET/HGET/HGETALL/HDEL [retried]. */
BASE_MUST_USE base_result cache_hset(cache_conn *conn, const char *key, const char *field, const void *value,
                                     size_t value_len, bool *ret_created);
BASE_MUST_USE base_result cache_hget(cache_conn *conn, const char *key, const char *field,
                                     cache_bytes *ret_value, bool *ret_found);
/* A missing key gives zero fields. More than max_elements fields -> BASE_ERR_LIMIT. */
BASE_MUST_USE base_result cache_hgetall(cache_conn *conn, const char *key, cache_fields *ret_fields);
BASE_MUST_USE base_result cache_hdel(cache_conn *conn, const char *key, const char *field, bool *ret_deleted);

/* Sets (a user's sessions). SADD/SREM/SMEMBERS [retried]. */
BASE_MUST_USE base_result cache_sadd(cache_conn *conn, const char *key, const char *member, bool *ret_added);
BASE_MUST_USE base_result cache_srem(cache_conn *conn, const char *key, const char *member,
                                     bool *ret_removed);
BASE_MUST_USE base_result cache_smembers(cache_conn *conn, const char *key, cache_list *ret_members);

/* PUBLISH (never retried: a retry could deliver twice). *ret_receivers: subscribers that got it. */
BASE_MUST_USE base_result cache_publish(cache_conn *conn, const char *channel, const void *message,
                                        size_t message_len, int64_t *ret_receivers);

/* ---- any command -------------------------------------------------------------------------------- */

typedef struct cache_reply cache_reply;

typedef enum cache_reply_type {
    CACHE_REPLY_NIL = 0,
    CACHE_REPLY_STRING, /* bulk string */
    CACHE_REPLY_STATUS, /* simple string, e.g. "OK" */
    CACHE_REPLY_INTEGER,
    CACHE_REPLY_ARRAY,
    CACHE_REPLY_ERROR, /* only inside an array (EXEC, EVAL); a top-level error fails the command */
} cache_reply_type;

/* Send one command given as argv (binary-safe: each argument is sent with its length, never interpreted as a
 * format). lens may be NULL when every argument is a C string. Never retried. Each argument after argv[0] is
 * limited by max_value_bytes; SUBSCRIBE-like commands and MONITOR are refused (use cache_sub). A Redis error
 * reply fails with its mapped code. The reply belongs to the caller: cache_reply_free(). */
BASE_MUST_USE base_result cache_command_argv(cache_conn *conn, int argc, const char *const *argv,
                                             const size_t *lens, cache_reply **ret_reply);
/* Free a reply returned by cache_command_argv (not an element of one). Accepts NULL. */
void cache_reply_free(cache_reply *reply);
cache_reply_type cache_reply_typeof(const cache_reply *reply);
/* The integer of an INTEGER reply; 0 otherwise. */
long long cache_reply_integer(const cache_reply *reply);
/* The bytes of a STRING, STATUS or ERROR reply (NUL-terminated, binary-safe with *ret_len); NULL otherwise.
 */
const char *cache_reply_string(const cache_reply *reply, size_t *ret_len);
/* Number of elements of an ARRAY reply; 0 otherwise. */
size_t cache_reply_count(const cache_reply *reply);
/* Element i of an ARRAY reply (owned by the array); NULL when out of range or not an array. */
const cache_reply *cache_reply_element(const cache_reply *reply, size_t i);

/* ---- pub/sub subscriber ----------------------------------------------------------------------------- */

/* A dedicated subscriber connection (a connection in SUBSCRIBE mode cannot run other commands). Not
 * thread-safe: one thread reads it. Delivery is at most once, as in Redis: when the connection drops,
 * cache_sub_next reports BASE_ERR_UNAVAILABLE once; the next call reconnects and subscribes again to every
 * channel, and messages published in between are lost, so a caller that keeps state from messages should
 * rebuild it after an UNAVAILABLE. */
typedef struct cache_sub cache_sub;

BASE_MUST_USE base_result cache_sub_new(const cache_config *cfg, cache_sub **ret_sub);
void cache_sub_free(cache_sub *sub);
/* SUBSCRIBE and wait for Redis to confirm, so a message published after this returns is delivered. At most
 * CACHE_SUB_MAX_CHANNELS channels. Subscribing twice to a channel is a no-op. */
#define CACHE_SUB_MAX_CHANNELS 256
BASE_MUST_USE base_result cache_sub_subscribe(cache_sub *sub, const char *channel);
/* UNSUBSCRIBE; messages of that channel still in flight are dropped. */
BASE_MUST_USE base_result cache_sub_unsubscribe(cache_sub *sub, const char *channel);
/* Wait up to timeout_ms (0: just poll) for the next message. BASE_ERR_TIMEOUT when none came. On success
 * *ret_channel and *ret_message belong to the caller (cache_bytes_free). */
BASE_MUST_USE base_result cache_sub_next(cache_sub *sub, int timeout_ms, cache_bytes *ret_channel,
                                         cache_bytes *ret_message);

#endif
