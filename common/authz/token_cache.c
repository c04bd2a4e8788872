/* The verified-token cache of the authorizer (README.md, "Verified-token cache"; the contract is in
 * internal.h).
 *
 * Entry layout (every word an _Atomic uint64_t, accessed with relaxed loads and stores between the acquire
 * and release of the entry's sequence word; Boehm, "Can seqlocks get along with programming language memory
 * models?", 2012):
 *
 *   word[W_HASH]   the token's slot hash; 0: empty
 *   word[W_GEN]    the key-set generation the token verified under
 *   word[W_LENS]   token length | packed-claims length << 32
 *   word[W_IAT], word[W_NBF], word[W_EXP]
 *   word[W_FLAGS]  mfa | enr << 1 | role_count << 8 | perm_count << 16
 *   word[W_DATA..] the token bytes, zero-padded to a word; then the packed claims: iss, aud, sub, tid, sid,
 *                  jti, the roles, the permissions, each NUL-terminated
 *
 * A writer makes the sequence odd with a compare-and-swap (a writer that finds it odd, or loses the race,
 * leaves the entry alone: this is a cache), writes, and makes it even again. A reader loads the sequence,
 * the words it needs, then the sequence again: a change, or an odd value, is a miss. Nothing read is
 * interpreted before that check, and every length read is bounded before it is used. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define PAGE 4096

enum { W_HASH, W_GEN, W_LENS, W_IAT, W_NBF, W_EXP, W_FLAGS, W_DATA };
_Static_assert(W_DATA == AUTHZ__TCACHE_HEADER_WORDS, "header words");
_Static_assert(sizeof(authz__tcache_entry) == AUTHZ__TCACHE_ENTRY_BYTES, "an entry is one page");
_Static_assert(AUTHZ__TCACHE_ENTRY_BYTES == PAGE, "an entry is one page");
_Static_assert(AUTHZ_MAX_ROLES < 256 && AUTHZ_MAX_PERMS < 65536, "counts fit their flag bits");

#define DATA_WORDS (AUTHZ__TCACHE_WORDS - W_DATA)

/* ---- lifecycle ----------------------------------------------------------------------------------------- */

base_result authz__tcache_init(authz__tcache *c, int entries)
{
    memset(c, 0, sizeof *c);
    if (entries == -1)
        return BASE_OK_RESULT;
    if (entries < -1 || entries > AUTHZ__TCACHE_MAX_ENTRIES)
        return base_fail(BASE_ERR_INVALID, "authz config: cache_entries out of range");
    size_t n = entries == 0 ? AUTHZ__TCACHE_DEFAULT_ENTRIES : (size_t)entries;
    size_t want = AUTHZ__TCACHE_WAYS;
    while (want < n)
        want *= 2;
    BASE_GUARD(acrypto_random(&c->seed, sizeof c->seed));
    /* calloc: large blocks come zeroed from mmap and are only made resident when an entry is first written,
     * so the memory used grows with the tokens seen (one page each) up to the bound. One extra page to align
     * the entries on a page. */
    c->mem = calloc(want + 1, sizeof(authz__tcache_entry));
    if (!c->mem)
        return base_fail(BASE_ERR_NOMEM, "authz: out of memory for the token cache");
    uintptr_t p = ((uintptr_t)c->mem + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
    c->entries = (authz__tcache_entry *)p;
    c->set_mask = want / AUTHZ__TCACHE_WAYS - 1;
    return BASE_OK_RESULT;
}

void authz__tcache_destroy(authz__tcache *c)
{
    free(c->mem);
    memset(c, 0, sizeof *c);
}

bool authz__tcache_enabled(const authz__tcache *c)
{
    return c->entries != NULL;
}

size_t authz__tcache_capacity(const authz__tcache *c)
{
    return c->entries ? (c->set_mask + 1) * AUTHZ__TCACHE_WAYS : 0;
}

/* ---- the slot hash ------------------------------------------------------------------------------------- */

/* Not a cryptographic hash: it only picks the set (a hit compares the whole token). Four independent lanes of
 * multiply-rotate over 32-byte blocks, then the murmur3 finaliser; seeded per cache. */
#define P1 UINT64_C(0x9e3779b97f4a7c15)
#define P2 UINT64_C(0xc2b2ae3d27d4eb4f)

static uint64_t load64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t lane(uint64_t h, uint64_t w)
{
    return rotl(h ^ (w * P2), 31) * P1;
}

static uint64_t fmix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

uint64_t authz__tcache_hash(const authz__tcache *c, const char *token, size_t len)
{
    uint64_t h[4] = {c->seed, c->seed ^ P1, c->seed ^ P2, c->seed ^ (P1 * P2)};
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        for (int k = 0; k < 4; k++)
            h[k] = lane(h[k], load64(token + i + 8 * (size_t)k));
    }
    unsigned char tail[32] = {0};
    memcpy(tail, token + i, len - i);
    for (int k = 0; k < 4; k++)
        h[k] = lane(h[k], load64(tail + 8 * k));
    uint64_t x = fmix(h[0] ^ rotl(h[1], 17) ^ rotl(h[2], 29) ^ rotl(h[3], 43) ^ (uint64_t)len);
    return x ? x : 1;
}

/* ---- packing the claims -------------------------------------------------------------------------------- */

static bool pack_str(unsigned char *out, size_t cap, size_t *pos, const char *s, size_t field_cap)
{
    size_t n = strnlen(s, field_cap);
    if (n >= field_cap || *pos + n + 1 > cap)
        return false;
    memcpy(out + *pos, s, n + 1);
    *pos += n + 1;
    return true;
}

static bool pack_claims(const authz_claims *cl, unsigned char *out, size_t cap, size_t *ret_len)
{
    size_t pos = 0;
    if (cl->role_count > AUTHZ_MAX_ROLES || cl->perm_count > AUTHZ_MAX_PERMS)
        return false;
    if (!pack_str(out, cap, &pos, cl->iss, sizeof cl->iss) ||
        !pack_str(out, cap, &pos, cl->aud, sizeof cl->aud) ||
        !pack_str(out, cap, &pos, cl->sub, sizeof cl->sub) ||
        !pack_str(out, cap, &pos, cl->tid, sizeof cl->tid) ||
        !pack_str(out, cap, &pos, cl->sid, sizeof cl->sid) ||
        !pack_str(out, cap, &pos, cl->jti, sizeof cl->jti))
        return false;
    for (size_t i = 0; i < cl->role_count; i++) {
        if (!pack_str(out, cap, &pos, cl->roles[i], sizeof cl->roles[i]))
            return false;
    }
    for (size_t i = 0; i < cl->perm_count; i++) {
        if (!pack_str(out, cap, &pos, cl->perm[i], sizeof cl->perm[i]))
            return false;
    }
    *ret_len = pos;
    return true;
}

static bool unpack_str(const unsigned char **p, size_t *left, char *field, size_t field_cap)
{
    size_t n = strnlen((const char *)*p, *left);
    if (n == *left || n >= field_cap)
        return false;
    memcpy(field, *p, n + 1);
    *p += n + 1;
    *left -= n + 1;
    return true;
}

static bool unpack_claims(const unsigned char *in, size_t len, const uint64_t hdr[W_DATA], authz_claims *cl)
{
    memset(cl, 0, offsetof(authz_claims, roles));
    cl->iat = (int64_t)hdr[W_IAT];
    cl->nbf = (int64_t)hdr[W_NBF];
    cl->exp = (int64_t)hdr[W_EXP];
    cl->mfa = (hdr[W_FLAGS] & 1) != 0;
    cl->enr = (hdr[W_FLAGS] & 2) != 0;
    cl->role_count = (size_t)(hdr[W_FLAGS] >> 8 & 0xff);
    cl->perm_count = (size_t)(hdr[W_FLAGS] >> 16 & 0xffff);
    if (cl->role_count > AUTHZ_MAX_ROLES || cl->perm_count > AUTHZ_MAX_PERMS)
        return false;
    const unsigned char *p = in;
    size_t left = len;
    if (!unpack_str(&p, &left, cl->iss, sizeof cl->iss) || !unpack_str(&p, &left, cl->aud, sizeof cl->aud) ||
        !unpack_str(&p, &left, cl->sub, sizeof cl->sub) || !unpack_str(&p, &left, cl->tid, sizeof cl->tid) ||
        !unpack_str(&p, &left, cl->sid, sizeof cl->sid) || !unpack_str(&p, &left, cl->jti, sizeof cl->jti))
        return false;
    for (size_t i = 0; i < cl->role_count; i++) {
        if (!unpack_str(&p, &left, cl->roles[i], sizeof cl->roles[i]))
            return false;
    }
    for (size_t i = 0; i < cl->perm_count; i++) {
        if (!unpack_str(&p, &left, cl->perm[i], sizeof cl->perm[i]))
            return false;
    }
    return left == 0;
}

/* ---- lookups ------------------------------------------------------------------------------------------- */

static uint64_t ld(const authz__tcache_entry *e, size_t i)
{
    return atomic_load_explicit(&e->word[i], memory_order_relaxed);
}

static void st(authz__tcache_entry *e, size_t i, uint64_t v)
{
    atomic_store_explicit(&e->word[i], v, memory_order_relaxed);
}

static authz__tcache_entry *set_of(const authz__tcache *c, uint64_t hash)
{
    return &c->entries[(size_t)(hash & c->set_mask) * AUTHZ__TCACHE_WAYS];
}

/* One entry: the token compared in full (every word, whatever differs, so the time does not say where), the
 * header and packed claims copied out, then the sequence checked again. */
static bool entry_get(const authz__tcache_entry *e, uint64_t hash, const char *token, size_t len,
                      uint64_t gen, authz_claims *ret_claims)
{
    uint64_t s0 = atomic_load_explicit(&e->seq, memory_order_acquire);
    if ((s0 & 1) || ld(e, W_HASH) != hash || ld(e, W_GEN) != gen)
        return false;
    uint64_t hdr[W_DATA];
    for (size_t i = 0; i < W_DATA; i++)
        hdr[i] = ld(e, i);
    size_t tlen = (size_t)(hdr[W_LENS] & 0xffffffffu), plen = (size_t)(hdr[W_LENS] >> 32);
    size_t twords = (len + 7) / 8, pwords = (plen + 7) / 8;
    if (tlen != len || twords + pwords > DATA_WORDS)
        return false; /* another token, or a torn read */
    uint64_t diff = 0;
    size_t i = 0;
    for (; i + 1 < twords; i++)
        diff |= ld(e, W_DATA + i) ^ load64(token + 8 * i);
    uint64_t last = 0;
    memcpy(&last, token + 8 * i, len - 8 * i);
    diff |= ld(e, W_DATA + i) ^ last;
    uint64_t packed[DATA_WORDS];
    for (size_t k = 0; k < pwords; k++)
        packed[k] = ld(e, W_DATA + twords + k);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s0 || diff != 0)
        return false;
    return unpack_claims((const unsigned char *)packed, plen, hdr, ret_claims);
}

bool authz__tcache_get(const authz__tcache *c, uint64_t hash, const char *token, size_t len, uint64_t gen,
                       authz_claims *ret_claims)
{
    if (!c->entries || len == 0 || len > AUTHZ_MAX_TOKEN_LEN)
        return false;
    const authz__tcache_entry *set = set_of(c, hash);
    for (size_t w = 0; w < AUTHZ__TCACHE_WAYS; w++) {
        if (entry_get(&set[w], hash, token, len, gen, ret_claims))
            return true;
    }
    return false;
}

/* ---- inserts ------------------------------------------------------------------------------------------- */

static void entry_put(authz__tcache_entry *e, uint64_t hash, const char *token, size_t len, uint64_t gen,
                      const authz_claims *cl, const unsigned char *packed, size_t plen)
{
    uint64_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);
    if ((s & 1) || !atomic_compare_exchange_strong_explicit(&e->seq, &s, s + 1, memory_order_relaxed,
                                                            memory_order_relaxed))
        return; /* another writer has it */
    atomic_thread_fence(memory_order_release);
    st(e, W_HASH, hash);
    st(e, W_GEN, gen);
    st(e, W_LENS, (uint64_t)len | (uint64_t)plen << 32);
    st(e, W_IAT, (uint64_t)cl->iat);
    st(e, W_NBF, (uint64_t)cl->nbf);
    st(e, W_EXP, (uint64_t)cl->exp);
    st(e, W_FLAGS,
       (uint64_t)cl->mfa | (uint64_t)cl->enr << 1 | (uint64_t)cl->role_count << 8 |
           (uint64_t)cl->perm_count << 16);
    size_t twords = (len + 7) / 8, i = 0;
    for (; i + 1 < twords; i++)
        st(e, W_DATA + i, load64(token + 8 * i));
    uint64_t last = 0;
    memcpy(&last, token + 8 * i, len - 8 * i);
    st(e, W_DATA + i, last);
    for (size_t k = 0; k < (plen + 7) / 8; k++) {
        uint64_t v = 0;
        memcpy(&v, packed + 8 * k, plen - 8 * k < 8 ? plen - 8 * k : 8);
        st(e, W_DATA + twords + k, v);
    }
    atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

void authz__tcache_put(authz__tcache *c, uint64_t hash, const char *token, size_t len, uint64_t gen,
                       int64_t now, const authz_claims *claims)
{
    if (!c->entries || len == 0 || len > AUTHZ_MAX_TOKEN_LEN)
        return;
    size_t twords = (len + 7) / 8;
    if (twords >= DATA_WORDS)
        return;
    unsigned char packed[DATA_WORDS * 8];
    size_t plen = 0;
    if (!pack_claims(claims, packed, (DATA_WORDS - twords) * 8, &plen))
        return; /* too big to cache: it is verified on every call, as without a cache */

    /* The victim: an empty entry, one of another generation or already expired, else the one that expires
     * first. What is read here is a hint (no sequence check); a wrong guess only evicts another token. */
    authz__tcache_entry *set = set_of(c, hash), *victim = NULL;
    int64_t victim_rank = INT64_MAX;
    for (size_t w = 0; w < AUTHZ__TCACHE_WAYS; w++) {
        authz__tcache_entry *e = &set[w];
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) & 1)
            continue;
        uint64_t h = ld(e, W_HASH), g = ld(e, W_GEN);
        int64_t exp = (int64_t)ld(e, W_EXP);
        if (h == hash && g == gen && (ld(e, W_LENS) & 0xffffffffu) == len)
            return; /* already there (another thread verified it too) */
        int64_t rank = (h == 0 || g != gen || now - AUTHZ_LEEWAY_S >= exp) ? INT64_MIN : exp;
        if (rank < victim_rank) {
            victim = e;
            victim_rank = rank;
        }
    }
    if (victim)
        entry_put(victim, hash, token, len, gen, claims, packed, plen);
}
