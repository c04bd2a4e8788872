/* The audit log's Merkle tree: RFC 9162 (RFC 6962) hashing, tree heads, inclusion and consistency proofs.
 *
 *     leaf hash  = SHA-256(0x00 || entry)
 *     node hash  = SHA-256(0x01 || left || right)
 *     MTH({})    = SHA-256()                              (the empty tree)
 *     MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n]))         k = the largest power of two smaller than n
 *
 * The log lives in Postgres and may hold hundreds of millions of leaves, so nothing here wants the leaves in
 * memory. Tree heads and proofs are computed from an audit_merkle_source: a callback that returns one stored
 * leaf hash, and optionally one that returns the stored hash of a complete subtree. Without the second, a
 * root or proof over n leaves reads O(n) leaf hashes; with it (and every complete subtree stored) O(log n)
 * lookups suffice, because every range the RFC's recursion visits is either a complete subtree aligned to
 * its size or the right edge of the tree, which splits into at most log2(n) complete ones.
 *
 * For appends the service keeps an audit_merkle_frontier (a "compact range" over [0, size)): the roots of
 * the complete subtrees along the right edge, at most 64 hashes, enough to append a leaf and produce the new
 * root without reading any earlier leaf. It is persisted with audit_merkle_frontier_serialise(); on load,
 * compare its root with the last signed checkpoint before trusting it.
 *
 * Conventions (common/base/result.h): fallible functions are BASE_MUST_USE; ret_* outputs are written only
 * on success. Generators fail with BASE_ERR_INVALID for a caller bug (index >= size, m > n, NULL pointers)
 * and BASE_ERR_LIMIT past AUDIT_MERKLE_MAX_TREE_SIZE; callback failures are returned unchanged. Verifiers
 * treat every claim (index, sizes, proof length and contents, roots) as untrusted: anything that does not
 * verify is BASE_ERR_CRYPTO with one fixed message, whatever the reason, as in common/crypto; only NULL
 * pointers are BASE_ERR_INVALID. Hashes are compared in constant time. Pointers with a zero length may be
 * NULL. Nothing here keeps global state; one frontier must not be used by two threads at once. */
#ifndef ALMA_AUDIT_MERKLE_H
#define ALMA_AUDIT_MERKLE_H

#include "base/result.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_MERKLE_HASH_LEN 32

/* The largest tree any function accepts. Below 2^63 leaves a consistency proof has at most
 * ceil(log2 n) + 1 <= 64 hashes, so one fixed bound covers every proof. */
#define AUDIT_MERKLE_MAX_TREE_SIZE ((uint64_t)1 << 63)
/* The most hashes in an inclusion or consistency proof (generated or accepted). */
#define AUDIT_MERKLE_MAX_PROOF 64
/* The largest entry audit_merkle_leaf_hash() hashes (ACRYPTO_MAX_INPUT). */
#define AUDIT_MERKLE_MAX_ENTRY ((size_t)64 * 1024 * 1024)

/* ---------------------------------------------------------------------------------------------------------
 * Hashing. */

/* SHA-256(0x00 || entry); entry_len <= AUDIT_MERKLE_MAX_ENTRY (BASE_ERR_LIMIT). */
BASE_MUST_USE base_result audit_merkle_leaf_hash(const void *entry, size_t entry_len,
                                                 uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN]);
/* SHA-256(0x01 || left || right). */
BASE_MUST_USE base_result audit_merkle_node_hash(const uint8_t left[AUDIT_MERKLE_HASH_LEN],
                                                 const uint8_t right[AUDIT_MERKLE_HASH_LEN],
                                                 uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN]);
/* MTH({}) = SHA-256 of nothing: the root of a tree of size 0. */
BASE_MUST_USE base_result audit_merkle_empty_root(uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN]);

/* ---------------------------------------------------------------------------------------------------------
 * Where leaf and subtree hashes come from. */

/* The stored leaf hash of leaf `index` (always < the tree size asked about). Write ret_hash and return
 * BASE_OK, or return any failure, which is passed back to the caller unchanged. */
typedef base_result (*audit_merkle_leaf_fn)(void *ctx, uint64_t index,
                                            uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN]);

/* An optional shortcut: the stored hash of the complete subtree over leaves [index << level,
 * (index + 1) << level), level >= 1. Set *ret_found = false (ret_hash untouched) when it is not stored; the
 * hash is then computed from its two halves. Any failure is passed back unchanged. A wrong hash here makes
 * wrong tree heads and proofs, which clients reject; it cannot make a bad proof verify. */
typedef base_result (*audit_merkle_subtree_fn)(void *ctx, unsigned level, uint64_t index, bool *ret_found,
                                               uint8_t ret_hash[AUDIT_MERKLE_HASH_LEN]);

typedef struct audit_merkle_source {
    audit_merkle_leaf_fn leaf;       /* required */
    audit_merkle_subtree_fn subtree; /* may be NULL */
    void *ctx;                       /* passed to both */
} audit_merkle_source;

/* ---------------------------------------------------------------------------------------------------------
 * Tree heads and proofs from a source. */

/* A proof: hashes[0 .. len) in the RFC's order (from the leaf or the old tree up). */
typedef struct audit_merkle_proof {
    size_t len;
    uint8_t hashes[AUDIT_MERKLE_MAX_PROOF][AUDIT_MERKLE_HASH_LEN];
} audit_merkle_proof;

/* MTH(D[0:size]); size 0 gives the empty root without calling the source. */
BASE_MUST_USE base_result audit_merkle_root(const audit_merkle_source *src, uint64_t size,
                                            uint8_t ret_root[AUDIT_MERKLE_HASH_LEN]);

/* PATH(index, D[0:size]) (RFC 9162 2.1.3.1); needs index < size. */
BASE_MUST_USE base_result audit_merkle_inclusion_proof(const audit_merkle_source *src, uint64_t index,
                                                       uint64_t size, audit_merkle_proof *ret_proof);

/* PROOF(old_size, D[0:new_size]) (RFC 9162 2.1.4.1); needs old_size <= new_size. The RFC defines it for
 * 0 < old_size < new_size; for old_size == 0 or old_size == new_size the proof is empty, which is what
 * audit_merkle_verify_consistency() expects for those sizes. */
BASE_MUST_USE base_result audit_merkle_consistency_proof(const audit_merkle_source *src, uint64_t old_size,
                                                         uint64_t new_size, audit_merkle_proof *ret_proof);

/* ---------------------------------------------------------------------------------------------------------
 * Verification (RFC 9162 2.1.3.2 and 2.1.4.2). BASE_OK, or BASE_ERR_CRYPTO for anything that does not
 * verify: index >= size, old_size > new_size, a size above AUDIT_MERKLE_MAX_TREE_SIZE, more than
 * AUDIT_MERKLE_MAX_PROOF hashes, a proof too short or too long for the sizes, or a hash that does not match.
 *
 * A proof commits to the root, not to the size: the verifier only uses a size to decide on which side each
 * hash goes, and different sizes can give the same sides (the path of leaf 0 is three right siblings in every
 * tree of 5 to 8 leaves), so a proof for one of them also verifies under another with the same root. Take the
 * size and the root together from one checkpoint whose signature was checked, never from separate sources. */

/* Does `proof` show that the leaf with hash leaf_hash is leaf `index` of the tree of `size` leaves whose
 * root is `root`? */
BASE_MUST_USE base_result audit_merkle_verify_inclusion(uint64_t index, uint64_t size,
                                                        const uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN],
                                                        const uint8_t proof[][AUDIT_MERKLE_HASH_LEN],
                                                        size_t proof_len,
                                                        const uint8_t root[AUDIT_MERKLE_HASH_LEN]);

/* Does `proof` show that the tree (new_size, new_root) extends the tree (old_size, old_root)?
 * Sizes the RFC leaves out: old_size == new_size needs an empty proof and equal roots; old_size == 0 needs
 * an empty proof and old_root == MTH({}) (every tree extends the empty one, but only one root has size 0). */
BASE_MUST_USE base_result audit_merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                                                          const uint8_t old_root[AUDIT_MERKLE_HASH_LEN],
                                                          const uint8_t new_root[AUDIT_MERKLE_HASH_LEN],
                                                          const uint8_t proof[][AUDIT_MERKLE_HASH_LEN],
                                                          size_t proof_len);

/* ---------------------------------------------------------------------------------------------------------
 * The frontier: the right edge of the tree over [0, size), O(log n) state.
 *
 * A plain value (copy it, keep it on the stack, no destructor), but read and change it only through these
 * functions. Invariant: for every bit h set in size, level[h] holds the root of the complete subtree of
 * 2^h leaves that the tree's right edge has at that height; every other slot is zero. */
#define AUDIT_MERKLE_FRONTIER_LEVELS 64

typedef struct audit_merkle_frontier {
    uint64_t size;
    uint8_t level[AUDIT_MERKLE_FRONTIER_LEVELS][AUDIT_MERKLE_HASH_LEN];
} audit_merkle_frontier;

/* The frontier of the empty tree. */
void audit_merkle_frontier_init(audit_merkle_frontier *f);
uint64_t audit_merkle_frontier_size(const audit_merkle_frontier *f);

/* Append one leaf hash (from audit_merkle_leaf_hash()). BASE_ERR_LIMIT once size reaches
 * AUDIT_MERKLE_MAX_TREE_SIZE. On failure the frontier is unchanged. */
BASE_MUST_USE base_result audit_merkle_frontier_append(audit_merkle_frontier *f,
                                                       const uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN]);
/* The same, also reporting the complete subtrees this leaf closes: with n the size after the append,
 * ret_nodes[k] (k < *ret_count = number of trailing zero bits of n) is the hash of the subtree at level k + 1
 * with index (n >> (k + 1)) - 1, i.e. over leaves [n - 2^(k+1), n). A store that keeps them can answer an
 * audit_merkle_subtree_fn, making roots and proofs O(log n) lookups. ret_nodes may be NULL; it needs room
 * for AUDIT_MERKLE_FRONTIER_LEVELS hashes. */
BASE_MUST_USE base_result audit_merkle_frontier_append_nodes(audit_merkle_frontier *f,
                                                             const uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN],
                                                             uint8_t (*ret_nodes)[AUDIT_MERKLE_HASH_LEN],
                                                             unsigned *ret_count);
/* MTH(D[0:size]): equal to audit_merkle_root() over the same leaves. */
BASE_MUST_USE base_result audit_merkle_frontier_root(const audit_merkle_frontier *f,
                                                     uint8_t ret_root[AUDIT_MERKLE_HASH_LEN]);
/* The frontier of the first `size` leaves of `src`: rebuilds a lost or rejected one with popcount(size)
 * subtree hashes (O(log n) lookups when the source stores complete subtrees). */
BASE_MUST_USE base_result audit_merkle_frontier_build(const audit_merkle_source *src, uint64_t size,
                                                      audit_merkle_frontier *ret_frontier);

/* Serialised form, all integers big-endian:
 *
 *     offset 0         1            9          10
 *            | version | size (8)   | count (1) | count hashes of 32 bytes, largest subtree first |
 *
 * version is AUDIT_MERKLE_FRONTIER_VERSION and count is popcount(size), so the length is exactly
 * AUDIT_MERKLE_FRONTIER_HEADER + 32 * count, at most AUDIT_MERKLE_FRONTIER_MAX_BYTES. */
#define AUDIT_MERKLE_FRONTIER_VERSION   1
#define AUDIT_MERKLE_FRONTIER_HEADER    10
#define AUDIT_MERKLE_FRONTIER_MAX_BYTES (AUDIT_MERKLE_FRONTIER_HEADER + 64 * AUDIT_MERKLE_HASH_LEN)

/* Write the serialised frontier to out (out_cap >= AUDIT_MERKLE_FRONTIER_MAX_BYTES always suffices;
 * BASE_ERR_LIMIT if too small). On failure out_cap bytes of out are zeroed. */
BASE_MUST_USE base_result audit_merkle_frontier_serialise(const audit_merkle_frontier *f, uint8_t *out,
                                                          size_t out_cap, size_t *ret_len);
/* Parse bytes from audit_merkle_frontier_serialise(). BASE_ERR_INVALID for anything else: another version,
 * a size above AUDIT_MERKLE_MAX_TREE_SIZE, count != popcount(size), a length other than the exact one
 * (truncated or trailing bytes). More than AUDIT_MERKLE_FRONTIER_MAX_BYTES is BASE_ERR_LIMIT. */
BASE_MUST_USE base_result audit_merkle_frontier_parse(const uint8_t *in, size_t in_len,
                                                      audit_merkle_frontier *ret_frontier);

#endif
