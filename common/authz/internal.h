/* common/authz private declarations: shared between jwt.c, jwks.c, authorizer.c, revocation.c, publish.c,
 * token_cache.c. Never included outside common/authz, except by its white-box test (tests/authz/
 * test_authz_cache.c). */
#ifndef ALMA_AUTHZ_INTERNAL_H
#define ALMA_AUTHZ_INTERNAL_H

#include "authz.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest NumericDate accepted: 9999-12-31T23:59:59Z. */
#define AUTHZ__MAX_EPOCH INT64_C(253402300799)

/* ---- verification outcome (jwt.c) -------------------------------------------------------------------- */

typedef enum authz__status {
    AUTHZ__OK = 0,
    AUTHZ__TOO_LONG,
    AUTHZ__MALFORMED,
    AUTHZ__ALG,
    AUTHZ__NO_KID,
    AUTHZ__KID_UNKNOWN,
    AUTHZ__SIGNATURE,
    AUTHZ__CLAIMS,
    AUTHZ__ISSUER,
    AUTHZ__AUDIENCE,
    AUTHZ__LIFETIME,
    AUTHZ__EXPIRED,
    AUTHZ__NOT_YET_VALID,
    AUTHZ__NO_KEYS, /* the authorizer only: no key set loaded yet (UNAVAILABLE, not a token failure) */
} authz__status;

const char *authz__status_message(authz__status st);

/* Expectations with the defaults filled in. */
typedef struct authz__expect {
    const char *issuer;
    const char *audience;
    int64_t max_lifetime_s;
} authz__expect;

/* The whole token check, allocation-free: jwt is token_len bytes (no NUL needed). On AUTHZ__OK the claims
 * are in *ret_claims. */
authz__status authz__token_check(const authz_keyset *ks, const authz__expect *expect, const char *jwt,
                                 size_t token_len, int64_t now, authz_claims *ret_claims);
/* The time-dependent part of that check alone (the last one it makes): expired (now >= exp + leeway) ->
 * AUTHZ__EXPIRED, not yet valid (now + leeway < nbf or < iat) -> AUTHZ__NOT_YET_VALID, else AUTHZ__OK. A
 * cached token goes through exactly this on every call. */
authz__status authz__claims_time_check(const authz_claims *claims, int64_t now);

/* ---- key sets (jwks.c) ------------------------------------------------------------------------------- */

typedef struct authz__key {
    char kid[AUTHZ_KID_BUF];
    acrypto_ed25519_key *key; /* public only */
} authz__key;

struct authz_keyset {
    size_t count;
    authz__key keys[AUTHZ_MAX_KEYS];
};

/* The key for a kid of kid_len bytes, or NULL. */
const acrypto_ed25519_key *authz__keyset_find(const authz_keyset *ks, const char *kid, size_t kid_len);

/* ---- small shared helpers (jwt.c) --------------------------------------------------------------------- */

/* iss / aud: 1..AUTHZ_MAX_URI_LEN printable ASCII without '"' and '\\'. */
bool authz__valid_uri(const char *s);
/* Relationship and grant ids in the mirrors: 1..AUTHZ_MAX_ID_LEN of [A-Za-z0-9_-]. */
bool authz__valid_record_id(const char *s);
/* Relationship kinds: 1..AUTHZ__MAX_REL_KIND of [a-z0-9_]. */
#define AUTHZ__MAX_REL_KIND 32
bool authz__valid_rel_kind(const char *s);
/* Copy a C string into dst[cap] when it fits (with its NUL); false otherwise (dst untouched). */
bool authz__copy(char *dst, size_t cap, const char *src);
/* Strict non-negative decimal (no sign, no leading zeros except "0") of n bytes, at most max. */
bool authz__parse_epoch(const char *s, size_t n, int64_t max, int64_t *ret_value);
/* Seconds since the epoch (CLOCK_REALTIME) and a monotonic millisecond clock. */
int64_t authz__now_s(void);
int64_t authz__mono_ms(void);

/* ---- revocation set (revocation.c) ------------------------------------------------------------------- */

typedef enum authz__rev_kind { AUTHZ__REV_SID = 1, AUTHZ__REV_SUB = 2 } authz__rev_kind;

typedef struct authz__rev_entry {
    uint64_t hash;      /* 0: empty slot */
    int64_t expires_at; /* epoch seconds after which the entry is dropped */
    int64_t not_before; /* AUTHZ__REV_SUB: tokens with iat <= this are revoked */
    uint8_t kind;
    char id[AUTHZ_MAX_ID_LEN + 1];
} authz__rev_entry;

typedef struct authz__rev_table {
    authz__rev_entry *slots; /* open addressing, linear probing; capacity a power of two */
    size_t cap;
    size_t count;
} authz__rev_table;

/* ---- verified-token cache (token_cache.c) ------------------------------------------------------------ */

/* Tokens whose signature and static claims verified, keyed by their exact bytes, with their claims: a hit
 * skips the signature, the parse and the static checks, never the time, revocation and rule checks (the
 * caller makes those on every call). Fixed size, set-associative (AUTHZ__TCACHE_WAYS ways per set, the set
 * picked by a seeded 64-bit hash of the token), a per-entry seqlock: readers never write shared memory, a
 * writer that finds an entry busy skips it. Every word of an entry is an atomic (relaxed loads and stores
 * inside the seqlock), so a reader racing a writer is defined behaviour and gets a miss, never a mix. No
 * allocation after init. An entry is one page: the token bytes (zero-padded to a word), then the claims
 * packed as NUL-terminated strings; a token whose bytes and packed claims do not fit is not cached. */
#define AUTHZ__TCACHE_WAYS            4
#define AUTHZ__TCACHE_DEFAULT_ENTRIES 4096
#define AUTHZ__TCACHE_MAX_ENTRIES     65536
#define AUTHZ__TCACHE_ENTRY_BYTES     4096
#define AUTHZ__TCACHE_WORDS           (AUTHZ__TCACHE_ENTRY_BYTES / 8 - 1) /* after the sequence word */
#define AUTHZ__TCACHE_HEADER_WORDS    7
#define AUTHZ__TCACHE_DATA_BYTES      ((AUTHZ__TCACHE_WORDS - AUTHZ__TCACHE_HEADER_WORDS) * 8)

typedef struct authz__tcache_entry {
    _Atomic uint64_t seq; /* even: stable; odd: being written */
    _Atomic uint64_t word[AUTHZ__TCACHE_WORDS];
} authz__tcache_entry;

typedef struct authz__tcache {
    void *mem;                    /* what was allocated (entries is aligned to a page inside it) */
    authz__tcache_entry *entries; /* (set_mask + 1) * AUTHZ__TCACHE_WAYS; NULL: the cache is disabled */
    size_t set_mask;
    uint64_t seed; /* of the slot hash: random per cache, so nobody can aim tokens at one set */
} authz__tcache;

/* entries: -1 disabled, 0 AUTHZ__TCACHE_DEFAULT_ENTRIES, else 1..AUTHZ__TCACHE_MAX_ENTRIES (rounded up to a
 * power of two, at least AUTHZ__TCACHE_WAYS). */
base_result authz__tcache_init(authz__tcache *c, int entries);
void authz__tcache_destroy(authz__tcache *c);
bool authz__tcache_enabled(const authz__tcache *c);
size_t authz__tcache_capacity(const authz__tcache *c); /* entries; 0 when disabled */
/* The slot hash of a token (never 0). */
uint64_t authz__tcache_hash(const authz__tcache *c, const char *token, size_t len);
/* True, with the claims, when an entry holds exactly these len bytes (compared in full, in constant time),
 * stored under key-set generation `gen`. Otherwise false (and *ret_claims is garbage). */
bool authz__tcache_get(const authz__tcache *c, uint64_t hash, const char *token, size_t len, uint64_t gen,
                       authz_claims *ret_claims);
/* Remember that the token verified under generation gen with these claims. Replaces, in its set, an empty
 * entry, or one of another generation, or one expired at now, or else the one that expires first. Best
 * effort: a token that does not fit, or a set whose entries are all being written, is not cached. */
void authz__tcache_put(authz__tcache *c, uint64_t hash, const char *token, size_t len, uint64_t gen,
                       int64_t now, const authz_claims *claims);

/* ---- the authorizer ---------------------------------------------------------------------------------- */

struct authz {
    /* settings (immutable after authz_new) */
    char issuer[AUTHZ_MAX_URI_LEN + 1];
    char audience[AUTHZ_MAX_URI_LEN + 1];
    authz__expect expect;
    const cache_config *cache;
    authz_fetch_jwks_fn fetch_jwks;
    void *fetch_arg;
    int refresh_interval_ms;
    int refetch_min_interval_ms;
    int64_t revocation_ttl_s;    /* max lifetime + 2 leeways */
    int64_t (*now_s)(void *arg); /* the wall clock; NULL: authz__now_s() */
    void *now_arg;

    /* keys: the pointer is swapped under the write lock; readers verify under the read lock */
    pthread_rwlock_t keys_lock;
    authz_keyset *keys;              /* NULL until the first fetch succeeds */
    pthread_mutex_t fetch_lock;      /* one fetch at a time */
    _Atomic int64_t last_refetch_ms; /* monotonic; of the last unknown-kid refetch */
    /* Bumped (under the keys write lock) when a new key set drops or changes a key of the previous one: cache
     * entries remember the generation they were verified under and are misses once it differs. */
    _Atomic uint64_t keys_gen;

    /* verified tokens (token_cache.c): lock-free reads */
    authz__tcache tcache;

    /* revocations: the table is read under the read lock, changed by the feed thread under the write lock */
    pthread_rwlock_t rev_lock;
    authz__rev_table rev;
    _Atomic bool rev_overflow; /* a revocation could not be recorded: fail closed */
    bool reload_overflow;      /* feed thread only: the current reload could not record a revocation */

    /* feed health, read lock-free on the hot path */
    _Atomic bool feed_synced;      /* a full reload completed since the last (re)subscription */
    _Atomic int64_t feed_alive_ms; /* monotonic time the feed was last proven alive */

    /* threads */
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond; /* CLOCK_MONOTONIC */
    bool stopping;            /* under stop_lock */
    _Atomic bool stop_flag;   /* the same, for loops that do not take the lock */
    pthread_t keys_thread;
    pthread_t feed_thread;
    bool keys_started, feed_started;
};

/* revocation.c */
base_result authz__rev_init(authz__rev_table *t);
void authz__rev_destroy(authz__rev_table *t);
/* Whether the session or the principal (for a token issued at iat) is revoked at now. Caller holds the
 * read lock. */
bool authz__rev_is_revoked(const authz__rev_table *t, const char *sid, const char *sub, int64_t iat,
                           int64_t now);
void *authz__feed_main(void *arg);

/* The authorizer's wall clock: the config's now_s hook (tests) or the system clock. */
int64_t authz__clock_s(const authz *a);

/* Sleep up to ms on the stop condition; true when stopping. */
bool authz__wait_stop(authz *a, int64_t ms);

#endif
