/* RFC 9162 Merkle tree hashing, proofs and the append frontier (see merkle.h). */
#include "merkle.h"

#include "crypto/crypto.h"

#include <string.h>

_Static_assert(AUDIT_MERKLE_HASH_LEN == ACRYPTO_SHA256_LEN, "a Merkle hash is one SHA-256 digest");
_Static_assert(AUDIT_MERKLE_MAX_ENTRY == ACRYPTO_MAX_INPUT, "the entry limit is the crypto input limit");
_Static_assert(sizeof(unsigned long long) == sizeof(uint64_t), "the bit builtins below take 64-bit operands");
_Static_assert(AUDIT_MERKLE_FRONTIER_LEVELS == 64, "one frontier slot per bit of a uint64_t size");

#define HASH_LEN AUDIT_MERKLE_HASH_LEN

/* Every verification failure reads the same, so the message cannot tell a prober which check it tripped. */
#define NOT_VERIFIED "merkle: proof did not verify"

/* RFC 9162 2.1.1 domain separation: a leaf can never be mistaken for an interior node. */
static const uint8_t leaf_prefix = 0x00;
static const uint8_t node_prefix = 0x01;

static base_result not_verified(void)
{
    return base_fail(BASE_ERR_CRYPTO, NOT_VERIFIED);
}

static bool is_pow2(uint64_t n)
{
    return n != 0 && (n & (n - 1)) == 0;
}

/* k of RFC 9162 2.1.1: the largest power of two smaller than n (n >= 2). */
static uint64_t split_point(uint64_t n)
{
    return (uint64_t)1 << (63 - __builtin_clzll(n - 1));
}

static unsigned popcount64(uint64_t n)
{
    return (unsigned)__builtin_popcountll(n);
}

/* ---------------------------------------------------------------------------------------------------------
 * Hashing. */

/* With a context the digest reuses it: a root or proof hashes one node per interior node the source does not
 * serve, up to n - 1 of them. Without one it hashes a stack buffer, so the frontier stays a plain value that
 * needs no destructor. out may alias left or right: the inputs are consumed before it is written. */
static base_result hash_node(acrypto_sha256_ctx *sha, const uint8_t left[HASH_LEN],
                             const uint8_t right[HASH_LEN], uint8_t out[HASH_LEN])
{
    if (sha == NULL) {
        uint8_t buf[1 + 2 * HASH_LEN];
        buf[0] = node_prefix;
        memcpy(buf + 1, left, HASH_LEN);
        memcpy(buf + 1 + HASH_LEN, right, HASH_LEN);
        return acrypto_sha256(buf, sizeof buf, out);
    }
    BASE_GUARD(acrypto_sha256_init(sha));
    BASE_GUARD(acrypto_sha256_update(sha, &node_prefix, 1));
    BASE_GUARD(acrypto_sha256_update(sha, left, HASH_LEN));
    BASE_GUARD(acrypto_sha256_update(sha, right, HASH_LEN));
    return acrypto_sha256_final(sha, out);
}

base_result audit_merkle_leaf_hash(const void *entry, size_t entry_len,
                                   uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN])
{
    BASE_ENSURE(entry != NULL || entry_len == 0, BASE_ERR_INVALID, "merkle: leaf entry is NULL");
    BASE_ENSURE(ret_hash != NULL, BASE_ERR_INVALID, "merkle: ret_hash is NULL");
    BASE_ENSURE(entry_len <= AUDIT_MERKLE_MAX_ENTRY, BASE_ERR_LIMIT,
                "merkle: leaf entry is larger than AUDIT_MERKLE_MAX_ENTRY");
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *sha = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&sha));
    BASE_GUARD(acrypto_sha256_update(sha, &leaf_prefix, 1));
    BASE_GUARD(acrypto_sha256_update(sha, entry, entry_len));
    return acrypto_sha256_final(sha, ret_hash);
}

base_result audit_merkle_node_hash(const uint8_t left[AUDIT_MERKLE_HASH_LEN],
                                   const uint8_t right[AUDIT_MERKLE_HASH_LEN],
                                   uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN])
{
    BASE_ENSURE(left != NULL && right != NULL && ret_hash != NULL, BASE_ERR_INVALID,
                "merkle: node hash argument is NULL");
    return hash_node(NULL, left, right, ret_hash);
}

base_result audit_merkle_empty_root(uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN])
{
    BASE_ENSURE(ret_hash != NULL, BASE_ERR_INVALID, "merkle: ret_hash is NULL");
    return acrypto_sha256(NULL, 0, ret_hash);
}

/* ---------------------------------------------------------------------------------------------------------
 * MTH of a range from the source. */

typedef struct merkle_walk {
    const audit_merkle_source *src;
    acrypto_sha256_ctx *sha;
} merkle_walk;

static base_result check_source(const audit_merkle_source *src)
{
    BASE_ENSURE(src != NULL && src->leaf != NULL, BASE_ERR_INVALID, "merkle: source has no leaf callback");
    return BASE_OK_RESULT;
}

/* MTH(D[begin : begin + n]), n >= 1. Every range the RFC's recursion reaches starts at a multiple of any
 * power of two not above its length, so a power-of-two range here is always a stored-subtree candidate; the
 * alignment test only keeps a misuse from asking the source for a subtree that does not exist. Recursion
 * depth is at most 64 (the height of the tree). */
static base_result walk_mth(const merkle_walk *w, uint64_t begin, uint64_t n, uint8_t ret_hash[HASH_LEN])
{
    uint8_t h[HASH_LEN] = {0};
    if (n == 1) {
        /* Into a local: a callback that fails after a partial write must not leak into ret_hash. */
        BASE_GUARD(w->src->leaf(w->src->ctx, begin, h));
        memcpy(ret_hash, h, HASH_LEN);
        return BASE_OK_RESULT;
    }
    if (w->src->subtree != NULL && is_pow2(n) && begin % n == 0) {
        unsigned level = (unsigned)__builtin_ctzll(n);
        bool found = false;
        BASE_GUARD(w->src->subtree(w->src->ctx, level, begin >> level, &found, h));
        if (found) {
            memcpy(ret_hash, h, HASH_LEN);
            return BASE_OK_RESULT;
        }
    }
    uint64_t k = split_point(n);
    uint8_t left[HASH_LEN], right[HASH_LEN];
    BASE_GUARD(walk_mth(w, begin, k, left));
    BASE_GUARD(walk_mth(w, begin + k, n - k, right));
    return hash_node(w->sha, left, right, ret_hash);
}

base_result audit_merkle_root(const audit_merkle_source *src, uint64_t size,
                              uint8_t ret_root[AUDIT_MERKLE_HASH_LEN])
{
    BASE_GUARD(check_source(src));
    BASE_ENSURE(ret_root != NULL, BASE_ERR_INVALID, "merkle: ret_root is NULL");
    BASE_ENSURE(size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_LIMIT,
                "merkle: tree size is above AUDIT_MERKLE_MAX_TREE_SIZE");
    if (size == 0)
        return audit_merkle_empty_root(ret_root);
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *sha = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&sha));
    merkle_walk w = {src, sha};
    return walk_mth(&w, 0, size, ret_root);
}

/* ---------------------------------------------------------------------------------------------------------
 * Proofs. Both recursions of the RFC put the hash of the outer level last, so the loops below walk from the
 * root down, collect hashes outermost first, and reverse once at the end. */

static void proof_reverse(audit_merkle_proof *p)
{
    for (size_t i = 0, j = p->len; i + 1 < j; i++, j--) {
        uint8_t t[HASH_LEN];
        memcpy(t, p->hashes[i], HASH_LEN);
        memcpy(p->hashes[i], p->hashes[j - 1], HASH_LEN);
        memcpy(p->hashes[j - 1], t, HASH_LEN);
    }
}

/* Append MTH(D[begin : begin + n]) to p. The size limit keeps the length within bounds; the check is the
 * backstop should that reasoning ever be wrong. */
static base_result proof_push(const merkle_walk *w, audit_merkle_proof *p, uint64_t begin, uint64_t n)
{
    BASE_ENSURE(p->len < AUDIT_MERKLE_MAX_PROOF, BASE_ERR_INTERNAL,
                "merkle: proof longer than AUDIT_MERKLE_MAX_PROOF");
    BASE_GUARD(walk_mth(w, begin, n, p->hashes[p->len]));
    p->len++;
    return BASE_OK_RESULT;
}

base_result audit_merkle_inclusion_proof(const audit_merkle_source *src, uint64_t index, uint64_t size,
                                         audit_merkle_proof *ret_proof)
{
    BASE_GUARD(check_source(src));
    BASE_ENSURE(ret_proof != NULL, BASE_ERR_INVALID, "merkle: ret_proof is NULL");
    BASE_ENSURE(size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_LIMIT,
                "merkle: tree size is above AUDIT_MERKLE_MAX_TREE_SIZE");
    BASE_ENSURE(index < size, BASE_ERR_INVALID, "merkle: inclusion proof needs leaf index < tree size");
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *sha = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&sha));
    merkle_walk w = {src, sha};

    audit_merkle_proof p;
    memset(&p, 0, sizeof p);
    /* PATH(m, D[begin : begin + n]) with m relative to begin. */
    uint64_t begin = 0, n = size, m = index;
    while (n > 1) {
        uint64_t k = split_point(n);
        if (m < k) {
            BASE_GUARD(proof_push(&w, &p, begin + k, n - k));
            n = k;
        } else {
            BASE_GUARD(proof_push(&w, &p, begin, k));
            begin += k;
            m -= k;
            n -= k;
        }
    }
    proof_reverse(&p);
    *ret_proof = p;
    return BASE_OK_RESULT;
}

base_result audit_merkle_consistency_proof(const audit_merkle_source *src, uint64_t old_size,
                                           uint64_t new_size, audit_merkle_proof *ret_proof)
{
    BASE_GUARD(check_source(src));
    BASE_ENSURE(ret_proof != NULL, BASE_ERR_INVALID, "merkle: ret_proof is NULL");
    BASE_ENSURE(new_size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_LIMIT,
                "merkle: tree size is above AUDIT_MERKLE_MAX_TREE_SIZE");
    BASE_ENSURE(old_size <= new_size, BASE_ERR_INVALID,
                "merkle: consistency proof needs old size <= new size");

    audit_merkle_proof p;
    memset(&p, 0, sizeof p);
    if (old_size == 0 || old_size == new_size) {
        *ret_proof = p;
        return BASE_OK_RESULT;
    }
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *sha = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&sha));
    merkle_walk w = {src, sha};

    /* SUBPROOF(m, D[begin : begin + n], b): b stays true while the subtree still starts at leaf 0, i.e. while
     * the verifier already knows MTH(D[begin : begin + m]) as the old root and need not be sent it. */
    uint64_t begin = 0, n = new_size, m = old_size;
    bool b = true;
    while (m != n) {
        uint64_t k = split_point(n);
        if (m <= k) {
            BASE_GUARD(proof_push(&w, &p, begin + k, n - k));
            n = k;
        } else {
            BASE_GUARD(proof_push(&w, &p, begin, k));
            begin += k;
            m -= k;
            n -= k;
            b = false;
        }
    }
    if (!b)
        BASE_GUARD(proof_push(&w, &p, begin, n));
    proof_reverse(&p);
    *ret_proof = p;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Verification: RFC 9162 2.1.3.2 and 2.1.4.2 step by step, so each line can be checked against the text. */

base_result audit_merkle_verify_inclusion(uint64_t index, uint64_t size,
                                          const uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN],
                                          const uint8_t proof[][AUDIT_MERKLE_HASH_LEN], size_t proof_len,
                                          const uint8_t root[AUDIT_MERKLE_HASH_LEN])
{
    BASE_ENSURE(leaf_hash != NULL && root != NULL, BASE_ERR_INVALID, "merkle: verify argument is NULL");
    BASE_ENSURE(proof != NULL || proof_len == 0, BASE_ERR_INVALID, "merkle: proof is NULL");
    if (index >= size || size > AUDIT_MERKLE_MAX_TREE_SIZE || proof_len > AUDIT_MERKLE_MAX_PROOF)
        return not_verified();
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *sha = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&sha));

    uint64_t fn = index, sn = size - 1;
    uint8_t r[HASH_LEN];
    memcpy(r, leaf_hash, HASH_LEN);
    for (size_t i = 0; i < proof_len; i++) {
        if (sn == 0)
            return not_verified(); /* more hashes than the path has levels */
        if ((fn & 1) != 0 || fn == sn) {
            BASE_GUARD(hash_node(sha, proof[i], r, r));
            /* The right edge skips levels where the tree has no right sibling. */
            while ((fn & 1) == 0 && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            BASE_GUARD(hash_node(sha, r, proof[i], r));
        }
        fn >>= 1;
        sn >>= 1;
    }
    bool root_ok = acrypto_equal(r, root, HASH_LEN);
    if (sn != 0 || !root_ok)
        return not_verified();
    return BASE_OK_RESULT;
}

base_result audit_merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                                            const uint8_t old_root[AUDIT_MERKLE_HASH_LEN],
                                            const uint8_t new_root[AUDIT_MERKLE_HASH_LEN],
                                            const uint8_t proof[][AUDIT_MERKLE_HASH_LEN], size_t proof_len)
{
    BASE_ENSURE(old_root != NULL && new_root != NULL, BASE_ERR_INVALID, "merkle: verify argument is NULL");
    BASE_ENSURE(proof != NULL || proof_len == 0, BASE_ERR_INVALID, "merkle: proof is NULL");
    if (old_size > new_size || new_size > AUDIT_MERKLE_MAX_TREE_SIZE || proof_len > AUDIT_MERKLE_MAX_PROOF)
        return not_verified();
    if (old_size == new_size) {
        if (proof_len != 0 || !acrypto_equal(old_root, new_root, HASH_LEN))
            return not_verified();
        return BASE_OK_RESULT;
    }
    if (old_size == 0) {
        uint8_t empty[HASH_LEN];
        BASE_GUARD(audit_merkle_empty_root(empty));
        if (proof_len != 0 || !acrypto_equal(old_root, empty, HASH_LEN))
            return not_verified();
        return BASE_OK_RESULT;
    }
    /* From here 0 < old_size < new_size, the case the RFC's algorithm is written for. */
    if (proof_len == 0)
        return not_verified(); /* step 1 */
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *sha = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&sha));

    /* Step 2: an old tree of 2^k leaves is itself a node of the new tree, so the prover leaves it out and the
     * verifier puts old_root in front. Indexing through `skip` avoids copying the proof to prepend it. */
    size_t skip = is_pow2(old_size) ? 1 : 0;
    size_t total = proof_len + skip;
#define PROOF_ITEM(i) ((i) < skip ? old_root : proof[(i)-skip])

    uint64_t fn = old_size - 1, sn = new_size - 1; /* step 3 */
    while ((fn & 1) != 0) {                        /* step 4 */
        fn >>= 1;
        sn >>= 1;
    }
    uint8_t fr[HASH_LEN], sr[HASH_LEN]; /* step 5 */
    memcpy(fr, PROOF_ITEM(0), HASH_LEN);
    memcpy(sr, PROOF_ITEM(0), HASH_LEN);
    for (size_t i = 1; i < total; i++) { /* step 6 */
        const uint8_t *c = PROOF_ITEM(i);
        if (sn == 0)
            return not_verified();
        if ((fn & 1) != 0 || fn == sn) {
            BASE_GUARD(hash_node(sha, c, fr, fr));
            BASE_GUARD(hash_node(sha, c, sr, sr));
            while ((fn & 1) == 0 && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            BASE_GUARD(hash_node(sha, sr, c, sr));
        }
        fn >>= 1;
        sn >>= 1;
    }
#undef PROOF_ITEM
    /* Step 7. Both comparisons always run: which one failed is not the caller's business. */
    bool old_ok = acrypto_equal(fr, old_root, HASH_LEN);
    bool new_ok = acrypto_equal(sr, new_root, HASH_LEN);
    if (sn != 0 || !old_ok || !new_ok)
        return not_verified();
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * The frontier. */

void audit_merkle_frontier_init(audit_merkle_frontier *f)
{
    if (f != NULL)
        memset(f, 0, sizeof *f);
}

uint64_t audit_merkle_frontier_size(const audit_merkle_frontier *f)
{
    return f != NULL ? f->size : 0;
}

base_result audit_merkle_frontier_append(audit_merkle_frontier *f,
                                         const uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN])
{
    unsigned count = 0;
    return audit_merkle_frontier_append_nodes(f, leaf_hash, NULL, &count);
}

base_result audit_merkle_frontier_append_nodes(audit_merkle_frontier *f,
                                               const uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN],
                                               uint8_t (*ret_nodes)[AUDIT_MERKLE_HASH_LEN],
                                               unsigned *ret_count)
{
    BASE_ENSURE(f != NULL && leaf_hash != NULL && ret_count != NULL, BASE_ERR_INVALID,
                "merkle: frontier append argument is NULL");
    BASE_ENSURE(f->size < AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_LIMIT,
                "merkle: frontier is full (AUDIT_MERKLE_MAX_TREE_SIZE)");
    /* Like adding 1 to a binary counter: each set low bit is a complete subtree that merges with the carry;
     * every merge completes the subtree one level up. The outputs and the frontier are written only once
     * every hash succeeded. size < 2^63 keeps h below 64. */
    uint8_t carry[HASH_LEN];
    uint8_t nodes[AUDIT_MERKLE_FRONTIER_LEVELS][HASH_LEN];
    memcpy(carry, leaf_hash, HASH_LEN);
    unsigned h = 0;
    while (((f->size >> h) & 1) != 0) {
        BASE_GUARD(hash_node(NULL, f->level[h], carry, carry));
        memcpy(nodes[h], carry, HASH_LEN);
        h++;
    }
    if (ret_nodes)
        memcpy(ret_nodes, nodes, (size_t)h * HASH_LEN);
    *ret_count = h;
    memset(f->level, 0, (size_t)h * HASH_LEN);
    memcpy(f->level[h], carry, HASH_LEN);
    f->size++;
    return BASE_OK_RESULT;
}

base_result audit_merkle_frontier_root(const audit_merkle_frontier *f,
                                       uint8_t ret_root[AUDIT_MERKLE_HASH_LEN])
{
    BASE_ENSURE(f != NULL && ret_root != NULL, BASE_ERR_INVALID, "merkle: frontier root argument is NULL");
    BASE_ENSURE(f->size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_INVALID,
                "merkle: frontier size is above AUDIT_MERKLE_MAX_TREE_SIZE");
    if (f->size == 0)
        return audit_merkle_empty_root(ret_root);
    /* MTH splits off the largest complete subtree first, so the root folds the right edge from the smallest
     * subtree upwards: node(level[a], node(level[b], ... level[z])) for set bits a > b > ... > z. */
    unsigned h = (unsigned)__builtin_ctzll(f->size);
    uint8_t r[HASH_LEN];
    memcpy(r, f->level[h], HASH_LEN);
    for (h++; h < AUDIT_MERKLE_FRONTIER_LEVELS; h++)
        if (((f->size >> h) & 1) != 0)
            BASE_GUARD(hash_node(NULL, f->level[h], r, r));
    memcpy(ret_root, r, HASH_LEN);
    return BASE_OK_RESULT;
}

base_result audit_merkle_frontier_build(const audit_merkle_source *src, uint64_t size,
                                        audit_merkle_frontier *ret_frontier)
{
    BASE_GUARD(check_source(src));
    BASE_ENSURE(ret_frontier != NULL, BASE_ERR_INVALID, "merkle: ret_frontier is NULL");
    BASE_ENSURE(size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_LIMIT,
                "merkle: tree size is above AUDIT_MERKLE_MAX_TREE_SIZE");
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *sha = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&sha));
    merkle_walk w = {src, sha};

    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    /* Left to right, each subtree starts where the larger ones before it end: aligned to its own size. */
    uint64_t begin = 0;
    for (unsigned h = AUDIT_MERKLE_FRONTIER_LEVELS; h-- > 0;) {
        uint64_t n = (uint64_t)1 << h;
        if ((size & n) == 0)
            continue;
        BASE_GUARD(walk_mth(&w, begin, n, f.level[h]));
        begin += n;
    }
    f.size = size;
    *ret_frontier = f;
    return BASE_OK_RESULT;
}

base_result audit_merkle_frontier_serialise(const audit_merkle_frontier *f, uint8_t *out, size_t out_cap,
                                            size_t *ret_len)
{
    BASE_ENSURE(out != NULL || out_cap == 0, BASE_ERR_INVALID, "merkle: frontier output buffer is NULL");
    if (f == NULL || ret_len == NULL) {
        if (out != NULL)
            memset(out, 0, out_cap);
        return base_fail(BASE_ERR_INVALID, "merkle: frontier serialise argument is NULL");
    }
    if (f->size > AUDIT_MERKLE_MAX_TREE_SIZE) {
        if (out != NULL)
            memset(out, 0, out_cap);
        return base_fail(BASE_ERR_INVALID, "merkle: frontier size is above AUDIT_MERKLE_MAX_TREE_SIZE");
    }
    unsigned count = popcount64(f->size);
    size_t need = AUDIT_MERKLE_FRONTIER_HEADER + (size_t)count * HASH_LEN;
    if (out_cap < need) {
        if (out != NULL)
            memset(out, 0, out_cap);
        return base_fail(BASE_ERR_LIMIT, "merkle: frontier output buffer is too small");
    }
    out[0] = AUDIT_MERKLE_FRONTIER_VERSION;
    for (unsigned i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(f->size >> (56 - 8 * i));
    out[9] = (uint8_t)count;
    size_t off = AUDIT_MERKLE_FRONTIER_HEADER;
    for (unsigned h = AUDIT_MERKLE_FRONTIER_LEVELS; h-- > 0;) {
        if (((f->size >> h) & 1) == 0)
            continue;
        memcpy(out + off, f->level[h], HASH_LEN);
        off += HASH_LEN;
    }
    *ret_len = need;
    return BASE_OK_RESULT;
}

base_result audit_merkle_frontier_parse(const uint8_t *in, size_t in_len, audit_merkle_frontier *ret_frontier)
{
    BASE_ENSURE(in != NULL || in_len == 0, BASE_ERR_INVALID, "merkle: frontier input is NULL");
    BASE_ENSURE(ret_frontier != NULL, BASE_ERR_INVALID, "merkle: ret_frontier is NULL");
    BASE_ENSURE(in_len <= AUDIT_MERKLE_FRONTIER_MAX_BYTES, BASE_ERR_LIMIT,
                "merkle: frontier bytes are longer than AUDIT_MERKLE_FRONTIER_MAX_BYTES");
    BASE_ENSURE(in_len >= AUDIT_MERKLE_FRONTIER_HEADER, BASE_ERR_INVALID,
                "merkle: frontier bytes are truncated");
    BASE_ENSURE(in[0] == AUDIT_MERKLE_FRONTIER_VERSION, BASE_ERR_INVALID,
                "merkle: frontier version is unknown");
    uint64_t size = 0;
    for (unsigned i = 0; i < 8; i++)
        size = (size << 8) | in[1 + i];
    BASE_ENSURE(size <= AUDIT_MERKLE_MAX_TREE_SIZE, BASE_ERR_INVALID,
                "merkle: frontier size is above AUDIT_MERKLE_MAX_TREE_SIZE");
    /* The count repeats what the size implies, so a truncated record or most damage to the size is refused
     * here instead of being read as another tree. It is no checksum: comparing the root with the last signed
     * checkpoint on load is. */
    unsigned count = in[9];
    BASE_ENSURE(count == popcount64(size), BASE_ERR_INVALID,
                "merkle: frontier hash count does not match its size");
    BASE_ENSURE(in_len == AUDIT_MERKLE_FRONTIER_HEADER + (size_t)count * HASH_LEN, BASE_ERR_INVALID,
                "merkle: frontier length does not match its hash count");

    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    size_t off = AUDIT_MERKLE_FRONTIER_HEADER;
    for (unsigned h = AUDIT_MERKLE_FRONTIER_LEVELS; h-- > 0;) {
        if (((size >> h) & 1) == 0)
            continue;
        memcpy(f.level[h], in + off, HASH_LEN);
        off += HASH_LEN;
    }
    f.size = size;
    *ret_frontier = f;
    return BASE_OK_RESULT;
}
