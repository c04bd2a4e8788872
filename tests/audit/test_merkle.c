/* The audit log's Merkle tree (services/audit/merkle.h): published RFC 6962 vectors, an independent naive
 * reference for every tree up to 70 leaves, tampered proofs, the size-0 and size-limit rules, and the
 * frontier's persisted form.
 *
 * Where the vectors come from: the RFC 6962 reference test data of the Certificate Transparency projects
 * (eight leaves "", 00, 10, 2021, 3031, 40414243, 5051525354555657, 606162636465666768696a6b6c6d6e6f; the
 * roots of the trees over the first 1..8 of them; known inclusion and consistency proofs), as published in
 * transparency-dev/merkle proof/verify_test.go (commit 02194e9afb6c1d95b5381350007963aa70fff472) — the same
 * values as google/certificate-transparency src/merkletree/MerkleTreeTest.cc — and the hasher vectors of
 * transparency-dev/merkle rfc6962/rfc6962_test.go. Go numbers inclusion-proof leaves from 1; here they are
 * numbered from 0 as in RFC 9162. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto/crypto.h"
#include "merkle.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HL AUDIT_MERKLE_HASH_LEN

#define ASSERT_OK(expr)                                                                                      \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        if (!base_is_ok(r_))                                                                                 \
            fail_msg("%s failed: %s", #expr, base_error_message());                                          \
    } while (0)

#define ASSERT_ERR(expr, code)                                                                               \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        if (r_.err != (code))                                                                                \
            fail_msg("%s gave %s, want %s", #expr, base_err_name(r_.err), base_err_name(code));              \
    } while (0)

static void unhex(const char *hex, uint8_t *out, size_t cap, size_t *ret_len)
{
    size_t n = 0;
    ASSERT_OK(acrypto_hex_decode(hex, strlen(hex), out, cap, &n));
    if (ret_len != NULL)
        *ret_len = n;
}

static void unhex32(const char *hex, uint8_t out[HL])
{
    size_t n = 0;
    unhex(hex, out, HL, &n);
    assert_int_equal(n, HL);
}

/* ---- published vectors ---- */

static const char *const vec_leaves[8] = {
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
};

static const char *const vec_roots[8] = {
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

typedef struct proof_vector {
    uint64_t a, b; /* inclusion: leaf index, tree size; consistency: old size, new size */
    size_t len;
    const char *hashes[3];
} proof_vector;

static const proof_vector vec_inclusion[] = {
    {0, 1, 0, {NULL}},
    {0,
     8,
     3,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {5,
     8,
     3,
     {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2, 3, 1, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
    {1,
     5,
     3,
     {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
};

static const proof_vector vec_consistency[] = {
    {1, 1, 0, {NULL}},
    {1,
     8,
     3,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {6,
     8,
     3,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2,
     5,
     2,
     {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
    {6,
     7,
     3,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
};

#define EMPTY_ROOT "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- an independent naive reference: arrays in memory, recursion exactly as the RFC writes it ---- */

static void ref_leaf_hash(const uint8_t *entry, size_t len, uint8_t out[HL])
{
    uint8_t buf[1 + 64];
    assert_true(len <= 64);
    buf[0] = 0x00;
    if (len > 0)
        memcpy(buf + 1, entry, len);
    ASSERT_OK(acrypto_sha256(buf, len + 1, out));
}

static void ref_node(const uint8_t l[HL], const uint8_t r[HL], uint8_t out[HL])
{
    uint8_t buf[1 + 2 * HL];
    buf[0] = 0x01;
    memcpy(buf + 1, l, HL);
    memcpy(buf + 1 + HL, r, HL);
    ASSERT_OK(acrypto_sha256(buf, sizeof buf, out));
}

static uint64_t ref_split(uint64_t n)
{
    uint64_t k = 1;
    while (k * 2 < n)
        k *= 2;
    return k;
}

static void ref_mth(const uint8_t (*d)[HL], uint64_t n, uint8_t out[HL])
{
    if (n == 0) {
        ASSERT_OK(acrypto_sha256(NULL, 0, out));
        return;
    }
    if (n == 1) {
        memcpy(out, d[0], HL);
        return;
    }
    uint64_t k = ref_split(n);
    uint8_t l[HL], r[HL];
    ref_mth(d, k, l);
    ref_mth(d + k, n - k, r);
    ref_node(l, r, out);
}

static void ref_path(uint64_t m, const uint8_t (*d)[HL], uint64_t n, uint8_t (*out)[HL], size_t *len)
{
    if (n == 1)
        return;
    uint64_t k = ref_split(n);
    if (m < k) {
        ref_path(m, d, k, out, len);
        ref_mth(d + k, n - k, out[(*len)++]);
    } else {
        ref_path(m - k, d + k, n - k, out, len);
        ref_mth(d, k, out[(*len)++]);
    }
}

static void ref_subproof(uint64_t m, const uint8_t (*d)[HL], uint64_t n, bool b, uint8_t (*out)[HL],
                         size_t *len)
{
    if (m == n) {
        if (!b)
            ref_mth(d, n, out[(*len)++]);
        return;
    }
    uint64_t k = ref_split(n);
    if (m <= k) {
        ref_subproof(m, d, k, b, out, len);
        ref_mth(d + k, n - k, out[(*len)++]);
    } else {
        ref_subproof(m - k, d + k, n - k, false, out, len);
        ref_mth(d, k, out[(*len)++]);
    }
}

/* The shape of a proof: what the verifier does with each hash, read off the RFC's recursions. A verifier sees
 * only the claimed sizes, the proof and the roots, so two claims with the same shape are indistinguishable to
 * it: PATH(0, D[5]) and PATH(0, D[8]) both put three siblings on the right, and a proof for one verifies
 * against the same root under the other size. That is why a size is only ever trusted together with the root
 * it was signed with; the tamper tests below expect acceptance exactly when the shapes agree. */
enum { SIB_RIGHT = 1, SIB_LEFT, NEW_ONLY_RIGHT, BOTH_LEFT, SEED_ITEM, SEED_OLD_ROOT };

typedef struct shape {
    size_t len;
    int step[2 * AUDIT_MERKLE_MAX_PROOF];
} shape;

static void ref_path_shape(uint64_t m, uint64_t n, shape *s)
{
    if (n == 1)
        return;
    uint64_t k = ref_split(n);
    if (m < k) {
        ref_path_shape(m, k, s);
        s->step[s->len++] = SIB_RIGHT;
    } else {
        ref_path_shape(m - k, n - k, s);
        s->step[s->len++] = SIB_LEFT;
    }
}

static void ref_subproof_shape(uint64_t m, uint64_t n, bool b, shape *s)
{
    if (m == n) {
        s->step[s->len++] = b ? SEED_OLD_ROOT : SEED_ITEM;
        return;
    }
    uint64_t k = ref_split(n);
    if (m <= k) {
        ref_subproof_shape(m, k, b, s);
        s->step[s->len++] = NEW_ONLY_RIGHT;
    } else {
        ref_subproof_shape(m - k, n - k, false, s);
        s->step[s->len++] = BOTH_LEFT;
    }
}

static bool same_shape(const shape *a, const shape *b)
{
    return a->len == b->len && memcmp(a->step, b->step, a->len * sizeof a->step[0]) == 0;
}

/* Would a verifier that accepts (index, size) also accept (index2, size2) with the same hashes and root? */
static bool inclusion_alias(uint64_t index, uint64_t size, uint64_t index2, uint64_t size2)
{
    if (index >= size || index2 >= size2)
        return false;
    shape a = {0}, b = {0};
    ref_path_shape(index, size, &a);
    ref_path_shape(index2, size2, &b);
    return same_shape(&a, &b);
}

/* The same for consistency, where the RFC's algorithm applies (0 < old < new). */
static bool consistency_alias(uint64_t m, uint64_t n, uint64_t m2, uint64_t n2)
{
    if (m == 0 || m >= n || m2 == 0 || m2 >= n2)
        return false;
    shape a = {0}, b = {0};
    ref_subproof_shape(m, n, true, &a);
    ref_subproof_shape(m2, n2, true, &b);
    return same_shape(&a, &b);
}

/* ---- a log in memory behind the source callbacks ---- */

#define MAX_LEAVES 70

typedef struct test_log {
    uint8_t leaves[MAX_LEAVES][HL];
    uint64_t size;          /* how many leaves exist: the code must never ask past them */
    uint64_t leaf_calls;    /* reads of single leaves */
    uint64_t subtree_calls; /* lookups of stored subtrees */
    unsigned stored_levels; /* bit h set: the subtree callback "stores" complete subtrees of 2^h leaves */
    bool fail_leaf;         /* the leaf callback fails at fail_index */
    uint64_t fail_index;
    bool fail_subtree; /* the subtree callback fails */
} test_log;

static base_result log_leaf(void *ctx, uint64_t index, uint8_t ret_hash[HL])
{
    test_log *log = ctx;
    if (index >= log->size)
        fail_msg("leaf %" PRIu64 " asked of a log of %" PRIu64 " leaves", index, log->size);
    log->leaf_calls++;
    if (log->fail_leaf && index == log->fail_index)
        return base_fail(BASE_ERR_UNAVAILABLE, "test: leaf store is down");
    memcpy(ret_hash, log->leaves[index], HL);
    return BASE_OK_RESULT;
}

static base_result log_subtree(void *ctx, unsigned level, uint64_t index, bool *ret_found,
                               uint8_t ret_hash[HL])
{
    test_log *log = ctx;
    if (level == 0 || level >= 63 || ((index + 1) << level) > log->size)
        fail_msg("subtree level %u index %" PRIu64 " asked of a log of %" PRIu64, level, index, log->size);
    log->subtree_calls++;
    if (log->fail_subtree)
        return base_fail(BASE_ERR_TIMEOUT, "test: subtree store timed out");
    if ((log->stored_levels & (1u << level)) == 0) {
        *ret_found = false;
        return BASE_OK_RESULT;
    }
    ref_mth((const uint8_t(*)[HL])log->leaves + (index << level), (uint64_t)1 << level, ret_hash);
    *ret_found = true;
    return BASE_OK_RESULT;
}

static audit_merkle_source log_source(test_log *log)
{
    return (audit_merkle_source){.leaf = log_leaf, .subtree = NULL, .ctx = log};
}

static audit_merkle_source log_source_cached(test_log *log, unsigned stored_levels)
{
    log->stored_levels = stored_levels;
    return (audit_merkle_source){.leaf = log_leaf, .subtree = log_subtree, .ctx = log};
}

/* The eight vector leaves. */
static void log_vectors(test_log *log)
{
    memset(log, 0, sizeof *log);
    for (size_t i = 0; i < 8; i++) {
        uint8_t entry[16];
        size_t n = 0;
        unhex(vec_leaves[i], entry, sizeof entry, &n);
        ASSERT_OK(audit_merkle_leaf_hash(n > 0 ? entry : NULL, n, log->leaves[i]));
        uint8_t ref[HL];
        ref_leaf_hash(entry, n, ref);
        assert_memory_equal(log->leaves[i], ref, HL);
    }
    log->size = 8;
}

/* MAX_LEAVES distinct leaves "audit event 0", "audit event 1", ... */
static void log_events(test_log *log)
{
    memset(log, 0, sizeof *log);
    for (unsigned i = 0; i < MAX_LEAVES; i++) {
        char entry[32];
        int n = snprintf(entry, sizeof entry, "audit event %u", i);
        assert_true(n > 0 && (size_t)n < sizeof entry);
        ASSERT_OK(audit_merkle_leaf_hash(entry, (size_t)n, log->leaves[i]));
        uint8_t ref[HL];
        ref_leaf_hash((const uint8_t *)entry, (size_t)n, ref);
        assert_memory_equal(log->leaves[i], ref, HL);
    }
    log->size = MAX_LEAVES;
}

static void log_root(test_log *log, uint64_t n, uint8_t out[HL])
{
    ref_mth((const uint8_t(*)[HL])log->leaves, n, out);
}

/* ---- hashing ---- */

static void test_hash_vectors(void **state)
{
    uint8_t h[HL], want[HL];
    ASSERT_OK(audit_merkle_empty_root(h));
    unhex32(EMPTY_ROOT, want);
    assert_memory_equal(h, want, HL);

    /* rfc6962_test.go: the empty leaf, distinct from the empty tree, and "L123456". */
    ASSERT_OK(audit_merkle_leaf_hash(NULL, 0, h));
    unhex32("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", want);
    assert_memory_equal(h, want, HL);
    ASSERT_OK(audit_merkle_leaf_hash("L123456", 7, h));
    unhex32("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56", want);
    assert_memory_equal(h, want, HL);

    /* A node is SHA-256(0x01 || left || right), order matters, and it is not the leaf hash of left || right
     * (the second-preimage separation RFC 9162 2.1.1 is for). */
    uint8_t l[HL], r[HL], lr[2 * HL], forged[HL], swapped[HL];
    ASSERT_OK(audit_merkle_leaf_hash("Hello", 5, l));
    ASSERT_OK(audit_merkle_leaf_hash("World", 5, r));
    ASSERT_OK(audit_merkle_node_hash(l, r, h));
    ref_node(l, r, want);
    assert_memory_equal(h, want, HL);
    ASSERT_OK(audit_merkle_node_hash(r, l, swapped));
    assert_memory_not_equal(h, swapped, HL);
    memcpy(lr, l, HL);
    memcpy(lr + HL, r, HL);
    ASSERT_OK(audit_merkle_leaf_hash(lr, sizeof lr, forged));
    assert_memory_not_equal(h, forged, HL);

    /* Limits and NULLs; outputs untouched. */
    uint8_t untouched[HL];
    memset(untouched, 0xEE, HL);
    ASSERT_ERR(audit_merkle_leaf_hash("x", AUDIT_MERKLE_MAX_ENTRY + 1, untouched), BASE_ERR_LIMIT);
    ASSERT_ERR(audit_merkle_leaf_hash(NULL, 1, untouched), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_leaf_hash("x", 1, NULL), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_node_hash(NULL, r, untouched), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_node_hash(l, NULL, untouched), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_node_hash(l, r, NULL), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_empty_root(NULL), BASE_ERR_INVALID);
    for (size_t i = 0; i < HL; i++)
        assert_int_equal(untouched[i], 0xEE);
}

/* ---- roots ---- */

static void test_roots_match_vectors(void **state)
{
    test_log log;
    log_vectors(&log);
    audit_merkle_source src = log_source(&log);
    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    for (uint64_t n = 1; n <= 8; n++) {
        uint8_t want[HL], got[HL], fr[HL];
        unhex32(vec_roots[n - 1], want);
        ASSERT_OK(audit_merkle_root(&src, n, got));
        assert_memory_equal(got, want, HL);
        ASSERT_OK(audit_merkle_frontier_append(&f, log.leaves[n - 1]));
        assert_int_equal(audit_merkle_frontier_size(&f), n);
        ASSERT_OK(audit_merkle_frontier_root(&f, fr));
        assert_memory_equal(fr, want, HL);
    }

    /* Size 0 is the empty tree, and the source is not read for it. */
    uint8_t h[HL], want[HL];
    unhex32(EMPTY_ROOT, want);
    log.leaf_calls = 0;
    ASSERT_OK(audit_merkle_root(&src, 0, h));
    assert_memory_equal(h, want, HL);
    assert_int_equal(log.leaf_calls, 0);
    audit_merkle_frontier_init(&f);
    ASSERT_OK(audit_merkle_frontier_root(&f, h));
    assert_memory_equal(h, want, HL);
}

/* ---- inclusion proofs ---- */

/* Every way the brief and RFC 9162 care about of making an inclusion claim wrong must give BASE_ERR_CRYPTO.
 */
static void expect_inclusion_rejected(const char *what, uint64_t index, uint64_t size, const uint8_t leaf[HL],
                                      const uint8_t (*proof)[HL], size_t len, const uint8_t root[HL])
{
    base_result r = audit_merkle_verify_inclusion(index, size, leaf, proof, len, root);
    if (r.err != BASE_ERR_CRYPTO)
        fail_msg("inclusion %s (index %" PRIu64 ", size %" PRIu64 ", %zu hashes): got %s, want crypto", what,
                 index, size, len, base_err_name(r.err));
    assert_string_equal(base_error_message(), "merkle: proof did not verify");
}

static void tamper_inclusion(uint64_t index, uint64_t size, const uint8_t leaf[HL],
                             const audit_merkle_proof *p, const uint8_t root[HL])
{
    ASSERT_OK(audit_merkle_verify_inclusion(index, size, leaf, p->hashes, p->len, root));

    uint8_t buf[AUDIT_MERKLE_MAX_PROOF + 2][HL];
    static const uint8_t zero[HL];

    /* Every bit of every proof hash, of the leaf hash and of the root. */
    for (size_t i = 0; i < p->len; i++) {
        for (unsigned bit = 0; bit < 8 * HL; bit++) {
            memcpy(buf, p->hashes, p->len * HL);
            buf[i][bit / 8] ^= (uint8_t)(1u << (bit % 8));
            expect_inclusion_rejected("flipped proof bit", index, size, leaf, (const uint8_t(*)[HL])buf,
                                      p->len, root);
        }
    }
    for (unsigned bit = 0; bit < 8 * HL; bit++) {
        uint8_t x[HL];
        memcpy(x, leaf, HL);
        x[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_inclusion_rejected("flipped leaf bit", index, size, x, p->hashes, p->len, root);
        memcpy(x, root, HL);
        x[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_inclusion_rejected("flipped root bit", index, size, leaf, p->hashes, p->len, x);
    }

    /* Wrong index (including past the end) and wrong size (including 0 and sizes too small for the index):
     * rejected unless the claimed position has the very same shape (see inclusion_alias). */
    for (uint64_t i = 0; i < size + 3; i++) {
        if (i == index)
            continue;
        assert_false(inclusion_alias(index, size, i, size)); /* one size: another index is another path */
        expect_inclusion_rejected("wrong index", i, size, leaf, p->hashes, p->len, root);
    }
    for (uint64_t n = 0; n <= 2 * size + 2; n++) {
        if (n == size)
            continue;
        if (inclusion_alias(index, size, index, n))
            ASSERT_OK(audit_merkle_verify_inclusion(index, n, leaf, p->hashes, p->len, root));
        else
            expect_inclusion_rejected("wrong size", index, n, leaf, p->hashes, p->len, root);
    }
    expect_inclusion_rejected("double size", index, 2 * size, leaf, p->hashes, p->len, root);
    if (size / 2 > index)
        expect_inclusion_rejected("half size", index, size / 2, leaf, p->hashes, p->len, root);
    expect_inclusion_rejected("huge size", index, AUDIT_MERKLE_MAX_TREE_SIZE, leaf, p->hashes, p->len, root);

    /* Truncated, emptied, extended at either end, a hash inserted, neighbours swapped. */
    if (p->len > 0) {
        expect_inclusion_rejected("truncated", index, size, leaf, p->hashes, p->len - 1, root);
        expect_inclusion_rejected("empty", index, size, leaf, NULL, 0, root);
    }
    const uint8_t *extra[] = {zero, root, leaf, p->len > 0 ? p->hashes[0] : zero};
    for (size_t e = 0; e < BASE_ARRAY_LEN(extra); e++) {
        memcpy(buf, p->hashes, p->len * HL);
        memcpy(buf[p->len], extra[e], HL);
        expect_inclusion_rejected("extended", index, size, leaf, (const uint8_t(*)[HL])buf, p->len + 1, root);
        memcpy(buf[0], extra[e], HL);
        memcpy(buf + 1, p->hashes, p->len * HL);
        expect_inclusion_rejected("prepended", index, size, leaf, (const uint8_t(*)[HL])buf, p->len + 1,
                                  root);
    }
    for (size_t at = 1; at < p->len; at++) {
        memcpy(buf, p->hashes, at * HL);
        memcpy(buf[at], zero, HL);
        memcpy(buf + at + 1, p->hashes + at, (p->len - at) * HL);
        expect_inclusion_rejected("inserted", index, size, leaf, (const uint8_t(*)[HL])buf, p->len + 1, root);
        memcpy(buf, p->hashes, p->len * HL);
        memcpy(buf[at - 1], p->hashes[at], HL);
        memcpy(buf[at], p->hashes[at - 1], HL);
        expect_inclusion_rejected("swapped", index, size, leaf, (const uint8_t(*)[HL])buf, p->len, root);
    }
}

static void test_inclusion_vectors(void **state)
{
    test_log log;
    log_vectors(&log);
    audit_merkle_source src = log_source(&log);
    for (size_t v = 0; v < BASE_ARRAY_LEN(vec_inclusion); v++) {
        const proof_vector *tv = &vec_inclusion[v];
        audit_merkle_proof p;
        ASSERT_OK(audit_merkle_inclusion_proof(&src, tv->a, tv->b, &p));
        assert_int_equal(p.len, tv->len);
        for (size_t i = 0; i < tv->len; i++) {
            uint8_t want[HL];
            unhex32(tv->hashes[i], want);
            assert_memory_equal(p.hashes[i], want, HL);
        }
        uint8_t root[HL];
        unhex32(vec_roots[tv->b - 1], root);
        tamper_inclusion(tv->a, tv->b, log.leaves[tv->a], &p, root);
    }
}

static void test_inclusion_all_small_trees(void **state)
{
    test_log log;
    log_vectors(&log);
    audit_merkle_source src = log_source(&log);
    uint8_t roots[9][HL];
    for (uint64_t n = 1; n <= 8; n++)
        unhex32(vec_roots[n - 1], roots[n]);

    for (uint64_t n = 1; n <= 8; n++) {
        for (uint64_t i = 0; i < n; i++) {
            audit_merkle_proof p;
            ASSERT_OK(audit_merkle_inclusion_proof(&src, i, n, &p));
            tamper_inclusion(i, n, log.leaves[i], &p, roots[n]);
            /* Presented as any other (index, size) with that size's true root, it must not verify either: the
             * same hashes cannot place this leaf anywhere else. */
            for (uint64_t n2 = 1; n2 <= 8; n2++)
                for (uint64_t i2 = 0; i2 < n2; i2++)
                    if (i2 != i || n2 != n)
                        expect_inclusion_rejected("other position", i2, n2, log.leaves[i], p.hashes, p.len,
                                                  roots[n2]);
        }
    }
}

/* ---- consistency proofs ---- */

static void expect_consistency_rejected(const char *what, uint64_t m, uint64_t n, const uint8_t old_root[HL],
                                        const uint8_t new_root[HL], const uint8_t (*proof)[HL], size_t len)
{
    base_result r = audit_merkle_verify_consistency(m, n, old_root, new_root, proof, len);
    if (r.err != BASE_ERR_CRYPTO)
        fail_msg("consistency %s (%" PRIu64 " -> %" PRIu64 ", %zu hashes): got %s, want crypto", what, m, n,
                 len, base_err_name(r.err));
    assert_string_equal(base_error_message(), "merkle: proof did not verify");
}

static void tamper_consistency(uint64_t m, uint64_t n, const uint8_t old_root[HL], const uint8_t new_root[HL],
                               const audit_merkle_proof *p)
{
    ASSERT_OK(audit_merkle_verify_consistency(m, n, old_root, new_root, p->hashes, p->len));
    uint8_t buf[AUDIT_MERKLE_MAX_PROOF + 2][HL];
    static const uint8_t zero[HL];

    for (size_t i = 0; i < p->len; i++) {
        for (unsigned bit = 0; bit < 8 * HL; bit++) {
            memcpy(buf, p->hashes, p->len * HL);
            buf[i][bit / 8] ^= (uint8_t)(1u << (bit % 8));
            expect_consistency_rejected("flipped proof bit", m, n, old_root, new_root,
                                        (const uint8_t(*)[HL])buf, p->len);
        }
    }
    for (unsigned bit = 0; bit < 8 * HL; bit++) {
        uint8_t x[HL];
        memcpy(x, old_root, HL);
        x[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_consistency_rejected("flipped old root bit", m, n, x, new_root, p->hashes, p->len);
        memcpy(x, new_root, HL);
        x[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_consistency_rejected("flipped new root bit", m, n, old_root, x, p->hashes, p->len);
    }
    if (!acrypto_equal(old_root, new_root, HL))
        expect_consistency_rejected("swapped roots", m, n, new_root, old_root, p->hashes, p->len);

    /* Wrong sizes: rejected unless the claimed pair has the very same shape (see consistency_alias). */
    for (uint64_t m2 = 0; m2 <= n + 2; m2++) {
        if (m2 == m)
            continue;
        if (consistency_alias(m, n, m2, n))
            ASSERT_OK(audit_merkle_verify_consistency(m2, n, old_root, new_root, p->hashes, p->len));
        else
            expect_consistency_rejected("wrong old size", m2, n, old_root, new_root, p->hashes, p->len);
    }
    for (uint64_t n2 = 0; n2 <= 2 * n + 2; n2++) {
        if (n2 == n)
            continue;
        if (consistency_alias(m, n, m, n2))
            ASSERT_OK(audit_merkle_verify_consistency(m, n2, old_root, new_root, p->hashes, p->len));
        else
            expect_consistency_rejected("wrong new size", m, n2, old_root, new_root, p->hashes, p->len);
    }
    if (m > 0 && m < n) {
        expect_consistency_rejected("double new size", m, 2 * n, old_root, new_root, p->hashes, p->len);
        expect_consistency_rejected("old size - 1", m - 1, n, old_root, new_root, p->hashes, p->len);
        expect_consistency_rejected("old size + 1", m + 1, n, old_root, new_root, p->hashes, p->len);
    }
    expect_consistency_rejected("huge new size", m, AUDIT_MERKLE_MAX_TREE_SIZE + 1, old_root, new_root,
                                p->hashes, p->len);

    if (p->len > 0) {
        expect_consistency_rejected("truncated", m, n, old_root, new_root, p->hashes, p->len - 1);
        expect_consistency_rejected("empty", m, n, old_root, new_root, NULL, 0);
    }
    const uint8_t *extra[] = {zero, old_root, new_root, p->len > 0 ? p->hashes[0] : zero};
    for (size_t e = 0; e < BASE_ARRAY_LEN(extra); e++) {
        memcpy(buf, p->hashes, p->len * HL);
        memcpy(buf[p->len], extra[e], HL);
        expect_consistency_rejected("extended", m, n, old_root, new_root, (const uint8_t(*)[HL])buf,
                                    p->len + 1);
        memcpy(buf[0], extra[e], HL);
        memcpy(buf + 1, p->hashes, p->len * HL);
        expect_consistency_rejected("prepended", m, n, old_root, new_root, (const uint8_t(*)[HL])buf,
                                    p->len + 1);
    }
    for (size_t at = 1; at < p->len; at++) {
        memcpy(buf, p->hashes, p->len * HL);
        memcpy(buf[at - 1], p->hashes[at], HL);
        memcpy(buf[at], p->hashes[at - 1], HL);
        expect_consistency_rejected("swapped", m, n, old_root, new_root, (const uint8_t(*)[HL])buf, p->len);
    }
}

static void test_consistency_vectors(void **state)
{
    test_log log;
    log_vectors(&log);
    audit_merkle_source src = log_source(&log);
    for (size_t v = 0; v < BASE_ARRAY_LEN(vec_consistency); v++) {
        const proof_vector *tv = &vec_consistency[v];
        audit_merkle_proof p;
        ASSERT_OK(audit_merkle_consistency_proof(&src, tv->a, tv->b, &p));
        assert_int_equal(p.len, tv->len);
        for (size_t i = 0; i < tv->len; i++) {
            uint8_t want[HL];
            unhex32(tv->hashes[i], want);
            assert_memory_equal(p.hashes[i], want, HL);
        }
        uint8_t old_root[HL], new_root[HL];
        unhex32(vec_roots[tv->a - 1], old_root);
        unhex32(vec_roots[tv->b - 1], new_root);
        tamper_consistency(tv->a, tv->b, old_root, new_root, &p);
    }
}

static void test_consistency_all_small_trees(void **state)
{
    test_log log;
    log_vectors(&log);
    audit_merkle_source src = log_source(&log);
    uint8_t roots[9][HL];
    unhex32(EMPTY_ROOT, roots[0]);
    for (uint64_t n = 1; n <= 8; n++)
        unhex32(vec_roots[n - 1], roots[n]);

    for (uint64_t n = 0; n <= 8; n++) {
        for (uint64_t m = 0; m <= n; m++) {
            audit_merkle_proof p;
            ASSERT_OK(audit_merkle_consistency_proof(&src, m, n, &p));
            if (m == 0 || m == n) {
                assert_int_equal(p.len, 0);
                ASSERT_OK(audit_merkle_verify_consistency(m, n, roots[m], roots[n], NULL, 0));
                continue;
            }
            assert_true(p.len > 0);
            tamper_consistency(m, n, roots[m], roots[n], &p);
            /* Presented for any other pair of sizes, with those sizes' true roots, it must not verify. */
            for (uint64_t n2 = 0; n2 <= 8; n2++)
                for (uint64_t m2 = 0; m2 <= n2; m2++)
                    if (m2 != m || n2 != n)
                        expect_consistency_rejected("other sizes", m2, n2, roots[m2], roots[n2], p.hashes,
                                                    p.len);
        }
    }
}

/* ---- the size-0 rules and bad arguments ---- */

static void test_size_rules_and_arguments(void **state)
{
    test_log log;
    log_vectors(&log);
    audit_merkle_source src = log_source(&log);
    uint8_t empty[HL], r1[HL], r8[HL], leaf0[HL];
    unhex32(EMPTY_ROOT, empty);
    unhex32(vec_roots[0], r1);
    unhex32(vec_roots[7], r8);
    memcpy(leaf0, log.leaves[0], HL);

    /* Inclusion in the empty tree: nothing is in it. */
    expect_inclusion_rejected("size 0", 0, 0, leaf0, NULL, 0, empty);
    expect_inclusion_rejected("size 0", 0, 0, empty, NULL, 0, empty);
    /* A one-leaf tree: the proof is empty and the root is the leaf hash. */
    ASSERT_OK(audit_merkle_verify_inclusion(0, 1, leaf0, NULL, 0, r1));
    expect_inclusion_rejected("index past size 1", 1, 1, leaf0, NULL, 0, r1);

    /* Consistency with sizes the RFC leaves out. */
    ASSERT_OK(audit_merkle_verify_consistency(0, 0, empty, empty, NULL, 0));
    ASSERT_OK(audit_merkle_verify_consistency(0, 8, empty, r8, NULL, 0));
    ASSERT_OK(audit_merkle_verify_consistency(8, 8, r8, r8, NULL, 0));
    ASSERT_OK(audit_merkle_verify_consistency(1, 1, r1, r1, NULL, 0));
    expect_consistency_rejected("0 -> 0, other root", 0, 0, empty, r1, NULL, 0);
    expect_consistency_rejected("0 -> 8, old root not empty", 0, 8, r1, r8, NULL, 0);
    expect_consistency_rejected("0 -> 8 with a proof", 0, 8, empty, r8, (const uint8_t(*)[HL])empty, 1);
    expect_consistency_rejected("0 -> 0 with a proof", 0, 0, empty, empty, (const uint8_t(*)[HL])empty, 1);
    expect_consistency_rejected("n -> n, roots differ", 8, 8, r1, r8, NULL, 0);
    expect_consistency_rejected("n -> n with a proof", 1, 1, r1, r1, (const uint8_t(*)[HL])r1, 1);
    expect_consistency_rejected("time travel", 8, 1, r8, r1, NULL, 0);
    expect_consistency_rejected("time travel", 2, 1, r8, r1, (const uint8_t(*)[HL])r1, 1);
    expect_consistency_rejected("1 -> 8, empty proof", 1, 8, r1, r8, NULL, 0);

    /* Over-long proofs are refused before any hashing; NULLs are caller bugs. */
    static uint8_t long_proof[AUDIT_MERKLE_MAX_PROOF + 1][HL];
    expect_inclusion_rejected("65 hashes", 0, 8, leaf0, (const uint8_t(*)[HL])long_proof,
                              AUDIT_MERKLE_MAX_PROOF + 1, r8);
    expect_consistency_rejected("65 hashes", 3, 8, r1, r8, (const uint8_t(*)[HL])long_proof,
                                AUDIT_MERKLE_MAX_PROOF + 1);
    expect_inclusion_rejected("size above the limit", 0, AUDIT_MERKLE_MAX_TREE_SIZE + 1, leaf0,
                              (const uint8_t(*)[HL])long_proof, 64, r8);
    expect_inclusion_rejected("size UINT64_MAX", 0, UINT64_MAX, leaf0, (const uint8_t(*)[HL])long_proof, 64,
                              r8);
    ASSERT_ERR(audit_merkle_verify_inclusion(0, 1, NULL, NULL, 0, r1), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_verify_inclusion(0, 1, leaf0, NULL, 0, NULL), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_verify_inclusion(0, 2, leaf0, NULL, 1, r1), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_verify_consistency(1, 2, NULL, r1, NULL, 0), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_verify_consistency(1, 2, r1, NULL, NULL, 0), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_verify_consistency(1, 2, r1, r8, NULL, 1), BASE_ERR_INVALID);

    /* Generators: caller bugs are INVALID, sizes past the limit LIMIT; ret_* untouched. */
    audit_merkle_proof untouched;
    memset(&untouched, 0xEE, sizeof untouched);
    uint8_t untouched_root[HL];
    memset(untouched_root, 0xEE, HL);
    ASSERT_ERR(audit_merkle_inclusion_proof(&src, 0, 0, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_inclusion_proof(&src, 8, 8, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_inclusion_proof(&src, 0, AUDIT_MERKLE_MAX_TREE_SIZE + 1, &untouched),
               BASE_ERR_LIMIT);
    ASSERT_ERR(audit_merkle_inclusion_proof(NULL, 0, 1, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_inclusion_proof(&src, 0, 1, NULL), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_consistency_proof(&src, 5, 4, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_consistency_proof(&src, 1, AUDIT_MERKLE_MAX_TREE_SIZE + 1, &untouched),
               BASE_ERR_LIMIT);
    ASSERT_ERR(audit_merkle_consistency_proof(&src, 1, 2, NULL), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_root(&src, AUDIT_MERKLE_MAX_TREE_SIZE + 1, untouched_root), BASE_ERR_LIMIT);
    ASSERT_ERR(audit_merkle_root(&src, 1, NULL), BASE_ERR_INVALID);
    audit_merkle_source no_leaf = {.leaf = NULL, .subtree = NULL, .ctx = &log};
    ASSERT_ERR(audit_merkle_root(&no_leaf, 1, untouched_root), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_consistency_proof(&no_leaf, 1, 2, &untouched), BASE_ERR_INVALID);
    audit_merkle_proof ref;
    memset(&ref, 0xEE, sizeof ref);
    assert_memory_equal(&untouched, &ref, sizeof ref);
    for (size_t i = 0; i < HL; i++)
        assert_int_equal(untouched_root[i], 0xEE);

    /* Consistency from size 0 or to the same size is an empty proof, and reads nothing. */
    audit_merkle_proof p;
    log.leaf_calls = 0;
    ASSERT_OK(audit_merkle_consistency_proof(&src, 0, 8, &p));
    assert_int_equal(p.len, 0);
    ASSERT_OK(audit_merkle_consistency_proof(&src, 8, 8, &p));
    assert_int_equal(p.len, 0);
    ASSERT_OK(audit_merkle_consistency_proof(&src, 0, 0, &p));
    assert_int_equal(p.len, 0);
    assert_int_equal(log.leaf_calls, 0);
}

/* ---- brute force against the naive reference ---- */

static void test_brute_force_up_to_70(void **state)
{
    test_log log;
    log_events(&log);
    audit_merkle_source plain = log_source(&log);
    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    uint8_t roots[MAX_LEAVES + 1][HL];

    for (uint64_t n = 0; n <= MAX_LEAVES; n++) {
        if (n > 0)
            ASSERT_OK(audit_merkle_frontier_append(&f, log.leaves[n - 1]));
        uint8_t naive[HL], recursive[HL], frontier[HL], built_root[HL];
        log_root(&log, n, naive);
        ASSERT_OK(audit_merkle_root(&plain, n, recursive));
        ASSERT_OK(audit_merkle_frontier_root(&f, frontier));
        assert_memory_equal(recursive, naive, HL);
        assert_memory_equal(frontier, naive, HL);
        memcpy(roots[n], naive, HL);

        audit_merkle_frontier built;
        ASSERT_OK(audit_merkle_frontier_build(&plain, n, &built));
        assert_memory_equal(&built, &f, sizeof f); /* canonical: unused slots are zero in both */
        ASSERT_OK(audit_merkle_frontier_root(&built, built_root));
        assert_memory_equal(built_root, naive, HL);
    }

    for (uint64_t n = 1; n <= MAX_LEAVES; n++) {
        for (uint64_t i = 0; i < n; i++) {
            audit_merkle_proof p;
            ASSERT_OK(audit_merkle_inclusion_proof(&plain, i, n, &p));
            uint8_t want[AUDIT_MERKLE_MAX_PROOF][HL];
            size_t want_len = 0;
            ref_path(i, (const uint8_t(*)[HL])log.leaves, n, want, &want_len);
            assert_int_equal(p.len, want_len);
            assert_memory_equal(p.hashes, want, want_len * HL);
            ASSERT_OK(audit_merkle_verify_inclusion(i, n, log.leaves[i], p.hashes, p.len, roots[n]));
            if (i + 1 < n)
                expect_inclusion_rejected("neighbour", i + 1, n, log.leaves[i], p.hashes, p.len, roots[n]);
            if (!inclusion_alias(i, n, i, n + 1))
                expect_inclusion_rejected("one larger", i, n + 1, log.leaves[i], p.hashes, p.len, roots[n]);
            if (n < MAX_LEAVES)
                expect_inclusion_rejected("true root of one larger", i, n + 1, log.leaves[i], p.hashes, p.len,
                                          roots[n + 1]);
        }
        for (uint64_t m = 1; m < n; m++) {
            audit_merkle_proof p;
            ASSERT_OK(audit_merkle_consistency_proof(&plain, m, n, &p));
            uint8_t want[AUDIT_MERKLE_MAX_PROOF][HL];
            size_t want_len = 0;
            ref_subproof(m, (const uint8_t(*)[HL])log.leaves, n, true, want, &want_len);
            assert_int_equal(p.len, want_len);
            assert_memory_equal(p.hashes, want, want_len * HL);
            ASSERT_OK(audit_merkle_verify_consistency(m, n, roots[m], roots[n], p.hashes, p.len));
            expect_consistency_rejected("old size + 1", m + 1, n, roots[m], roots[n], p.hashes, p.len);
            expect_consistency_rejected("old root of m + 1", m, n, roots[m + 1], roots[n], p.hashes, p.len);
        }
    }
}

/* ---- a source that stores complete subtrees ---- */

static void test_subtree_source(void **state)
{
    test_log log;
    log_events(&log);
    audit_merkle_source plain = log_source(&log);
    /* Every level stored, only some (the rest computed from their halves), none stored at all. */
    const unsigned masks[] = {0xFFFFFFFEu, 0x54u, 0x0u};
    for (size_t mi = 0; mi < BASE_ARRAY_LEN(masks); mi++) {
        audit_merkle_source cached = log_source_cached(&log, masks[mi]);
        for (uint64_t n = 1; n <= MAX_LEAVES; n++) {
            uint8_t want[HL], got[HL];
            log_root(&log, n, want);
            log.leaf_calls = log.subtree_calls = 0;
            ASSERT_OK(audit_merkle_root(&cached, n, got));
            assert_memory_equal(got, want, HL);
            if (mi == 0) {
                /* One lookup per complete subtree of the right edge, at most one leaf (an odd size's last).
                 */
                assert_true(log.leaf_calls <= 1);
                assert_true(log.subtree_calls <= 7);
            }

            audit_merkle_frontier a, b;
            ASSERT_OK(audit_merkle_frontier_build(&cached, n, &a));
            ASSERT_OK(audit_merkle_frontier_build(&plain, n, &b));
            assert_memory_equal(&a, &b, sizeof a);

            for (uint64_t i = 0; i < n; i += 3) {
                audit_merkle_proof pc, pp;
                log.leaf_calls = log.subtree_calls = 0;
                ASSERT_OK(audit_merkle_inclusion_proof(&cached, i, n, &pc));
                if (mi == 0)
                    assert_true(log.leaf_calls + log.subtree_calls <= 2 * 7 * 7);
                ASSERT_OK(audit_merkle_inclusion_proof(&plain, i, n, &pp));
                assert_int_equal(pc.len, pp.len);
                assert_memory_equal(pc.hashes, pp.hashes, pp.len * HL);
            }
            for (uint64_t m = 1; m < n; m += 5) {
                audit_merkle_proof pc, pp;
                ASSERT_OK(audit_merkle_consistency_proof(&cached, m, n, &pc));
                ASSERT_OK(audit_merkle_consistency_proof(&plain, m, n, &pp));
                assert_int_equal(pc.len, pp.len);
                assert_memory_equal(pc.hashes, pp.hashes, pp.len * HL);
            }
        }
    }
}

/* ---- a failing source: the failure comes back unchanged and nothing is written ---- */

static void test_source_failures(void **state)
{
    test_log log;
    log_events(&log);
    audit_merkle_source plain = log_source(&log);
    log.fail_leaf = true;
    log.fail_index = 37;

    uint8_t root[HL];
    memset(root, 0xEE, HL);
    ASSERT_ERR(audit_merkle_root(&plain, 70, root), BASE_ERR_UNAVAILABLE);
    assert_string_equal(base_error_message(), "test: leaf store is down");
    for (size_t i = 0; i < HL; i++)
        assert_int_equal(root[i], 0xEE);

    audit_merkle_proof p, ref;
    memset(&p, 0xEE, sizeof p);
    memset(&ref, 0xEE, sizeof ref);
    ASSERT_ERR(audit_merkle_inclusion_proof(&plain, 3, 70, &p), BASE_ERR_UNAVAILABLE);
    ASSERT_ERR(audit_merkle_consistency_proof(&plain, 3, 70, &p), BASE_ERR_UNAVAILABLE);
    assert_memory_equal(&p, &ref, sizeof p);

    audit_merkle_frontier f, fref;
    memset(&f, 0xEE, sizeof f);
    memset(&fref, 0xEE, sizeof fref);
    ASSERT_ERR(audit_merkle_frontier_build(&plain, 70, &f), BASE_ERR_UNAVAILABLE);
    assert_memory_equal(&f, &fref, sizeof f);

    /* A tree that does not reach the broken leaf is unaffected. */
    ASSERT_OK(audit_merkle_root(&plain, 37, root));

    log.fail_leaf = false;
    log.fail_subtree = true;
    audit_merkle_source cached = log_source_cached(&log, 0xFFFFFFFEu);
    ASSERT_ERR(audit_merkle_root(&cached, 70, root), BASE_ERR_TIMEOUT);
    ASSERT_ERR(audit_merkle_inclusion_proof(&cached, 0, 70, &p), BASE_ERR_TIMEOUT);
    assert_memory_equal(&p, &ref, sizeof p);
    ASSERT_OK(audit_merkle_root(&cached, 1, root)); /* a single leaf needs no subtree */
}

/* ---- a tree of 2^63 leaves: only the right edge is ever read ---- */

/* Every leaf is the same, so the complete subtree of 2^h leaves has a known hash P[h] and a source can
 * answer for any tree size without storing anything. */
typedef struct const_log {
    uint8_t p[64][HL];
    uint64_t calls;
} const_log;

static base_result const_leaf(void *ctx, uint64_t index, uint8_t ret_hash[HL])
{
    const_log *c = ctx;
    c->calls++;
    memcpy(ret_hash, c->p[0], HL);
    return BASE_OK_RESULT;
}

static base_result const_subtree(void *ctx, unsigned level, uint64_t index, bool *ret_found,
                                 uint8_t ret_hash[HL])
{
    const_log *c = ctx;
    c->calls++;
    if (level == 0 || level > 63 || index >= ((uint64_t)1 << (63 - level)))
        fail_msg("subtree level %u index %" PRIu64 " is outside a tree of 2^63 leaves", level, index);
    memcpy(ret_hash, c->p[level], HL);
    *ret_found = true;
    return BASE_OK_RESULT;
}

static void test_huge_tree(void **state)
{
    const_log c;
    memset(&c, 0, sizeof c);
    ASSERT_OK(audit_merkle_leaf_hash("same event", 10, c.p[0]));
    for (unsigned h = 1; h < 64; h++)
        ref_node(c.p[h - 1], c.p[h - 1], c.p[h]);
    audit_merkle_source src = {.leaf = const_leaf, .subtree = const_subtree, .ctx = &c};

    const uint64_t max = AUDIT_MERKLE_MAX_TREE_SIZE;
    const uint64_t sizes[] = {max, max - 1, max / 2 + 1, ((uint64_t)1 << 40) + 12345, 1000000007, 3};
    for (size_t s = 0; s < BASE_ARRAY_LEN(sizes); s++) {
        uint64_t n = sizes[s];
        uint8_t root[HL], froot[HL];
        c.calls = 0;
        ASSERT_OK(audit_merkle_root(&src, n, root));
        assert_true(c.calls <= 64);
        audit_merkle_frontier f;
        ASSERT_OK(audit_merkle_frontier_build(&src, n, &f));
        ASSERT_OK(audit_merkle_frontier_root(&f, froot));
        assert_memory_equal(root, froot, HL);
        if (n == max)
            assert_memory_equal(root, c.p[63], HL);

        const uint64_t indexes[] = {0, n / 3, n - 1};
        for (size_t k = 0; k < BASE_ARRAY_LEN(indexes); k++) {
            audit_merkle_proof p;
            c.calls = 0;
            ASSERT_OK(audit_merkle_inclusion_proof(&src, indexes[k], n, &p));
            assert_true(c.calls <= 64 * 64);
            assert_true(p.len <= 63);
            ASSERT_OK(audit_merkle_verify_inclusion(indexes[k], n, c.p[0], p.hashes, p.len, root));
            if (p.len > 0)
                expect_inclusion_rejected("huge truncated", indexes[k], n, c.p[0], p.hashes, p.len - 1, root);
        }
    }

    /* The longest inclusion proof (63) and the longest consistency proof (exactly AUDIT_MERKLE_MAX_PROOF). */
    uint8_t r_max[HL], r_prev[HL];
    ASSERT_OK(audit_merkle_root(&src, max, r_max));
    ASSERT_OK(audit_merkle_root(&src, max - 1, r_prev));
    audit_merkle_proof p;
    ASSERT_OK(audit_merkle_inclusion_proof(&src, max - 1, max, &p));
    assert_int_equal(p.len, 63);
    ASSERT_OK(audit_merkle_consistency_proof(&src, max - 1, max, &p));
    assert_int_equal(p.len, AUDIT_MERKLE_MAX_PROOF);
    ASSERT_OK(audit_merkle_verify_consistency(max - 1, max, r_prev, r_max, p.hashes, p.len));
    expect_consistency_rejected("huge truncated", max - 1, max, r_prev, r_max, p.hashes, p.len - 1);
    p.hashes[40][7] ^= 0x20;
    expect_consistency_rejected("huge flipped", max - 1, max, r_prev, r_max, p.hashes, p.len);
    ASSERT_OK(audit_merkle_consistency_proof(&src, ((uint64_t)1 << 40) + 3, max - 1, &p));
    assert_true(p.len <= AUDIT_MERKLE_MAX_PROOF);

    /* The frontier fills up at the limit: appending past it is refused and changes nothing. */
    audit_merkle_frontier f, before;
    ASSERT_OK(audit_merkle_frontier_build(&src, max - 1, &f));
    assert_int_equal(audit_merkle_frontier_size(&f), max - 1);
    ASSERT_OK(audit_merkle_frontier_append(&f, c.p[0]));
    assert_int_equal(audit_merkle_frontier_size(&f), max);
    uint8_t froot[HL];
    ASSERT_OK(audit_merkle_frontier_root(&f, froot));
    assert_memory_equal(froot, c.p[63], HL);
    before = f;
    ASSERT_ERR(audit_merkle_frontier_append(&f, c.p[0]), BASE_ERR_LIMIT);
    assert_memory_equal(&f, &before, sizeof f);
    ASSERT_ERR(audit_merkle_frontier_build(&src, max + 1, &f), BASE_ERR_LIMIT);
    assert_memory_equal(&f, &before, sizeof f);
}

/* ---- the frontier's persisted form ---- */

static void test_frontier_serialise_round_trip(void **state)
{
    test_log log;
    log_events(&log);
    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    for (uint64_t n = 0; n <= MAX_LEAVES; n++) {
        if (n > 0)
            ASSERT_OK(audit_merkle_frontier_append(&f, log.leaves[n - 1]));
        uint8_t buf[AUDIT_MERKLE_FRONTIER_MAX_BYTES];
        size_t len = 0;
        ASSERT_OK(audit_merkle_frontier_serialise(&f, buf, sizeof buf, &len));
        assert_int_equal(len, AUDIT_MERKLE_FRONTIER_HEADER + HL * (size_t)__builtin_popcountll(n));
        audit_merkle_frontier g;
        ASSERT_OK(audit_merkle_frontier_parse(buf, len, &g));
        assert_memory_equal(&g, &f, sizeof f);
        /* A restored frontier keeps growing the same tree. */
        if (n < MAX_LEAVES) {
            uint8_t want[HL], got[HL];
            ASSERT_OK(audit_merkle_frontier_append(&g, log.leaves[n]));
            ASSERT_OK(audit_merkle_frontier_root(&g, got));
            log_root(&log, n + 1, want);
            assert_memory_equal(got, want, HL);
        }
    }

    /* Layout of size 5 (0b101): version, big-endian size, count 2, the 4-leaf subtree, then leaf 4. */
    audit_merkle_frontier_init(&f);
    for (unsigned i = 0; i < 5; i++)
        ASSERT_OK(audit_merkle_frontier_append(&f, log.leaves[i]));
    uint8_t buf[AUDIT_MERKLE_FRONTIER_MAX_BYTES];
    size_t len = 0;
    ASSERT_OK(audit_merkle_frontier_serialise(&f, buf, sizeof buf, &len));
    assert_int_equal(len, 10 + 2 * HL);
    const uint8_t header[10] = {1, 0, 0, 0, 0, 0, 0, 0, 5, 2};
    assert_memory_equal(buf, header, sizeof header);
    uint8_t four[HL];
    log_root(&log, 4, four);
    assert_memory_equal(buf + 10, four, HL);
    assert_memory_equal(buf + 10 + HL, log.leaves[4], HL);

    /* The largest frontier fits AUDIT_MERKLE_FRONTIER_MAX_BYTES exactly; a short buffer is zeroed. */
    uint8_t bytes[AUDIT_MERKLE_FRONTIER_MAX_BYTES];
    memset(bytes, 0, sizeof bytes);
    bytes[0] = AUDIT_MERKLE_FRONTIER_VERSION;
    for (unsigned i = 2; i < 9; i++)
        bytes[i] = 0xFF;
    bytes[1] = 0x7F; /* size 2^63 - 1: 63 subtrees */
    bytes[9] = 63;
    for (size_t i = 10; i < 10 + 63 * HL; i++)
        bytes[i] = (uint8_t)i;
    ASSERT_OK(audit_merkle_frontier_parse(bytes, 10 + 63 * HL, &f));
    assert_int_equal(audit_merkle_frontier_size(&f), AUDIT_MERKLE_MAX_TREE_SIZE - 1);
    uint8_t again[AUDIT_MERKLE_FRONTIER_MAX_BYTES];
    ASSERT_OK(audit_merkle_frontier_serialise(&f, again, sizeof again, &len));
    assert_int_equal(len, 10 + 63 * HL);
    assert_memory_equal(again, bytes, len);
    memset(again, 0xEE, sizeof again);
    size_t untouched_len = 12345;
    ASSERT_ERR(audit_merkle_frontier_serialise(&f, again, len - 1, &untouched_len), BASE_ERR_LIMIT);
    assert_int_equal(untouched_len, 12345);
    for (size_t i = 0; i < len - 1; i++)
        assert_int_equal(again[i], 0);
    assert_int_equal(again[len - 1], 0xEE);
    ASSERT_ERR(audit_merkle_frontier_serialise(NULL, again, sizeof again, &len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_frontier_serialise(&f, NULL, 10, &len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_frontier_serialise(&f, again, sizeof again, NULL), BASE_ERR_INVALID);
}

static void expect_parse_rejected(const char *what, const uint8_t *in, size_t len, base_err want)
{
    audit_merkle_frontier f, ref;
    memset(&f, 0xEE, sizeof f);
    memset(&ref, 0xEE, sizeof ref);
    base_result r = audit_merkle_frontier_parse(in, len, &f);
    if (r.err != want)
        fail_msg("parse %s (%zu bytes): got %s, want %s", what, len, base_err_name(r.err),
                 base_err_name(want));
    assert_memory_equal(&f, &ref, sizeof f);
}

static void test_frontier_parse_rejects(void **state)
{
    test_log log;
    log_events(&log);
    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    for (unsigned i = 0; i < 11; i++) /* 0b1011: three subtrees */
        ASSERT_OK(audit_merkle_frontier_append(&f, log.leaves[i]));
    uint8_t good[AUDIT_MERKLE_FRONTIER_MAX_BYTES + 1];
    size_t len = 0;
    ASSERT_OK(audit_merkle_frontier_serialise(&f, good, sizeof good, &len));
    assert_int_equal(len, 10 + 3 * HL);
    uint8_t bad[sizeof good];

    for (size_t cut = 0; cut < len; cut++)
        expect_parse_rejected("truncated", good, cut, BASE_ERR_INVALID);
    memcpy(bad, good, len);
    bad[len] = 0;
    expect_parse_rejected("trailing byte", bad, len + 1, BASE_ERR_INVALID);
    const uint8_t versions[] = {0, 2, 0xFF};
    for (size_t v = 0; v < BASE_ARRAY_LEN(versions); v++) {
        memcpy(bad, good, len);
        bad[0] = versions[v];
        expect_parse_rejected("version", bad, len, BASE_ERR_INVALID);
    }
    const uint8_t counts[] = {0, 2, 4, 64, 255};
    for (size_t c = 0; c < BASE_ARRAY_LEN(counts); c++) {
        memcpy(bad, good, len);
        bad[9] = counts[c];
        expect_parse_rejected("count != popcount(size)", bad, len, BASE_ERR_INVALID);
    }
    /* A size whose popcount differs from the stored count (11 -> 15 has four subtrees). */
    memcpy(bad, good, len);
    bad[8] = 15;
    expect_parse_rejected("size and count disagree", bad, len, BASE_ERR_INVALID);
    /* Count and length consistent with each other but not with the size. */
    memcpy(bad, good, len);
    bad[8] = 12; /* popcount 2 */
    bad[9] = 2;
    expect_parse_rejected("length for another count", bad, len, BASE_ERR_INVALID);
    /* Sizes past the limit, even when count and length match them. */
    uint8_t over[10 + 2 * HL];
    memset(over, 0, sizeof over);
    over[0] = AUDIT_MERKLE_FRONTIER_VERSION;
    over[1] = 0x80;
    over[8] = 0x01; /* 2^63 + 1 */
    over[9] = 2;
    expect_parse_rejected("size above the limit", over, sizeof over, BASE_ERR_INVALID);
    over[8] = 0x00; /* exactly 2^63: allowed, one subtree */
    over[9] = 1;
    audit_merkle_frontier top;
    ASSERT_OK(audit_merkle_frontier_parse(over, 10 + HL, &top));
    assert_int_equal(audit_merkle_frontier_size(&top), AUDIT_MERKLE_MAX_TREE_SIZE);

    memset(bad, 0, sizeof bad);
    expect_parse_rejected("too long", bad, AUDIT_MERKLE_FRONTIER_MAX_BYTES + 1, BASE_ERR_LIMIT);
    expect_parse_rejected("NULL input", NULL, 10, BASE_ERR_INVALID);
    expect_parse_rejected("empty", NULL, 0, BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_frontier_parse(good, len, NULL), BASE_ERR_INVALID);

    /* The empty tree: header only. */
    const uint8_t empty[10] = {AUDIT_MERKLE_FRONTIER_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    ASSERT_OK(audit_merkle_frontier_parse(empty, sizeof empty, &f));
    assert_int_equal(audit_merkle_frontier_size(&f), 0);
    uint8_t h[HL], want[HL];
    ASSERT_OK(audit_merkle_frontier_root(&f, h));
    unhex32(EMPTY_ROOT, want);
    assert_memory_equal(h, want, HL);

    /* NULL frontiers. */
    assert_int_equal(audit_merkle_frontier_size(NULL), 0);
    audit_merkle_frontier_init(NULL);
    ASSERT_ERR(audit_merkle_frontier_append(NULL, h), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_frontier_append(&f, NULL), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_frontier_root(NULL, h), BASE_ERR_INVALID);
    ASSERT_ERR(audit_merkle_frontier_root(&f, NULL), BASE_ERR_INVALID);
}

/* append_nodes reports exactly the complete subtrees each leaf closes, with their reference hashes. */
static void test_frontier_append_nodes(void **state)
{
    (void)state;
    test_log log;
    log_events(&log);
    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    uint64_t total = 0;
    for (uint64_t i = 0; i < MAX_LEAVES; i++) {
        uint8_t nodes[AUDIT_MERKLE_FRONTIER_LEVELS][HL];
        unsigned count = 99;
        ASSERT_OK(audit_merkle_frontier_append_nodes(&f, log.leaves[i], nodes, &count));
        uint64_t n = i + 1;
        assert_int_equal(count, (unsigned)__builtin_ctzll(n));
        for (unsigned k = 0; k < count; k++) {
            uint64_t width = (uint64_t)1 << (k + 1);
            uint8_t want[HL];
            ref_mth((const uint8_t(*)[HL])log.leaves + (n - width), width, want);
            assert_memory_equal(nodes[k], want, HL);
        }
        total += count;
        uint8_t root[HL], want_root[HL];
        ASSERT_OK(audit_merkle_frontier_root(&f, root));
        log_root(&log, n, want_root);
        assert_memory_equal(root, want_root, HL);
    }
    /* A tree of n leaves has n - popcount(n) complete internal nodes. */
    assert_int_equal(total, MAX_LEAVES - (uint64_t)__builtin_popcountll(MAX_LEAVES));
    unsigned count = 0;
    ASSERT_ERR(audit_merkle_frontier_append_nodes(&f, log.leaves[0], NULL, NULL), BASE_ERR_INVALID);
    ASSERT_OK(audit_merkle_frontier_append_nodes(&f, log.leaves[0], NULL, &count));
    assert_int_equal(count, (unsigned)__builtin_ctzll(MAX_LEAVES + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_vectors),
        cmocka_unit_test(test_roots_match_vectors),
        cmocka_unit_test(test_inclusion_vectors),
        cmocka_unit_test(test_inclusion_all_small_trees),
        cmocka_unit_test(test_consistency_vectors),
        cmocka_unit_test(test_consistency_all_small_trees),
        cmocka_unit_test(test_size_rules_and_arguments),
        cmocka_unit_test(test_brute_force_up_to_70),
        cmocka_unit_test(test_subtree_source),
        cmocka_unit_test(test_source_failures),
        cmocka_unit_test(test_huge_tree),
        cmocka_unit_test(test_frontier_serialise_round_trip),
        cmocka_unit_test(test_frontier_parse_rejects),
        cmocka_unit_test(test_frontier_append_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
