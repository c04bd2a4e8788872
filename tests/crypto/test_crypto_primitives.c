/* Secrets, randomness, constant-time comparison, SHA-256 (FIPS 180-2 vectors), HMAC-SHA256 (RFC 4231) and
 * HKDF-SHA256 (RFC 5869). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"
#include "crypto_test.h"

#include <stdlib.h>
#include <string.h>

static acrypto_secret *secret_fill(uint8_t byte, size_t n)
{
    acrypto_secret *s = NULL;
    ASSERT_OK(acrypto_secret_new(n, &s));
    memset(acrypto_secret_bytes_mut(s), byte, n);
    return s;
}

static void assert_hex(const uint8_t *bytes, size_t n, const char *hex)
{
    uint8_t want[512];
    size_t want_len = unhex(hex, want, sizeof want);
    assert_int_equal(n, want_len);
    assert_memory_equal(bytes, want, n);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* ---- secrets, random, equal, wipe ---- */

static void test_secret_lifecycle(void **state)
{
    acrypto_secret *s = NULL;
    ASSERT_OK(acrypto_secret_new(32, &s));
    assert_int_equal(acrypto_secret_len(s), 32);
    assert_true(all_zero(acrypto_secret_bytes(s), 32));
    assert_int_equal(acrypto_secret_bytes(s)[32], '\0'); /* the uncounted NUL */
    s = acrypto_secret_free(s);
    assert_null(s);

    ASSERT_OK(acrypto_secret_from_bytes("hunter2", 7, &s));
    assert_int_equal(acrypto_secret_len(s), 7);
    assert_string_equal((const char *)acrypto_secret_bytes(s), "hunter2");
    acrypto_secret_freep(&s);
    assert_null(s);

    ASSERT_OK(acrypto_secret_new(0, &s));
    assert_int_equal(acrypto_secret_len(s), 0);
    assert_non_null(acrypto_secret_bytes(s));
    acrypto_secret_free(s);

    /* Destructors accept NULL. */
    assert_null(acrypto_secret_free(NULL));
    acrypto_secret_freep(NULL);
    {
        BASE_CLEANUP(acrypto_secret_freep) acrypto_secret *scoped = NULL;
        ASSERT_OK(acrypto_secret_random(16, &scoped));
    }

    acrypto_secret *untouched = (acrypto_secret *)&untouched;
    ASSERT_ERR(acrypto_secret_new(ACRYPTO_MAX_INPUT + 1, &untouched), BASE_ERR_LIMIT);
    ASSERT_ERR(acrypto_secret_from_bytes(NULL, 3, &untouched), BASE_ERR_INVALID);
    assert_ptr_equal(untouched, (acrypto_secret *)&untouched);
}

static void test_secret_random_and_random(void **state)
{
    acrypto_secret *a = NULL, *b = NULL;
    ASSERT_OK(acrypto_secret_random(32, &a));
    ASSERT_OK(acrypto_secret_random(32, &b));
    assert_false(acrypto_equal(acrypto_secret_bytes(a), acrypto_secret_bytes(b), 32));
    assert_false(all_zero(acrypto_secret_bytes(a), 32));
    acrypto_secret_free(a);
    acrypto_secret_free(b);

    uint8_t x[64] = {0}, y[64] = {0};
    ASSERT_OK(acrypto_random(x, sizeof x));
    ASSERT_OK(acrypto_random(y, sizeof y));
    assert_memory_not_equal(x, y, sizeof x);
    ASSERT_OK(acrypto_random(NULL, 0));
    ASSERT_ERR(acrypto_random(NULL, 1), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_random(x, ACRYPTO_MAX_INPUT + 1), BASE_ERR_LIMIT);
}

static void test_equal_and_wipe(void **state)
{
    uint8_t a[32], b[32];
    memset(a, 0x5c, sizeof a);
    memset(b, 0x5c, sizeof b);
    assert_true(acrypto_equal(a, b, sizeof a));
    b[31] ^= 1;
    assert_false(acrypto_equal(a, b, sizeof a));
    b[31] ^= 1;
    b[0] ^= 0x80;
    assert_false(acrypto_equal(a, b, sizeof a));
    assert_true(acrypto_equal(a, b, 0));
    acrypto_wipe(a, sizeof a);
    assert_true(all_zero(a, sizeof a));
    acrypto_wipe(NULL, 10);
}

/* ---- SHA-256 (FIPS 180-2 appendix B) ---- */

static void test_sha256_vectors(void **state)
{
    uint8_t d[ACRYPTO_SHA256_LEN];
    ASSERT_OK(acrypto_sha256("abc", 3, d));
    assert_hex(d, sizeof d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_OK(acrypto_sha256(NULL, 0, d));
    assert_hex(d, sizeof d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ASSERT_OK(acrypto_sha256(m2, strlen(m2), d));
    assert_hex(d, sizeof d, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_sha256_incremental(void **state)
{
    BASE_CLEANUP(acrypto_sha256_ctx_freep) acrypto_sha256_ctx *ctx = NULL;
    ASSERT_OK(acrypto_sha256_ctx_new(&ctx));
    /* One million 'a' (FIPS 180-2 B.3) in uneven chunks. */
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000, step = 1;
    while (left > 0) {
        size_t n = step < left ? step : left;
        if (n > sizeof chunk)
            n = sizeof chunk;
        ASSERT_OK(acrypto_sha256_update(ctx, chunk, n));
        left -= n;
        step = step * 3 + 1;
    }
    uint8_t d[ACRYPTO_SHA256_LEN];
    ASSERT_OK(acrypto_sha256_final(ctx, d));
    assert_hex(d, sizeof d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    /* A finished context refuses more input until init(); then it is reusable (Merkle nodes). */
    uint8_t untouched[ACRYPTO_SHA256_LEN];
    memset(untouched, 0xEE, sizeof untouched);
    ASSERT_ERR(acrypto_sha256_update(ctx, "x", 1), BASE_ERR_CONFLICT);
    ASSERT_ERR(acrypto_sha256_final(ctx, untouched), BASE_ERR_CONFLICT);
    assert_int_equal(untouched[0], 0xEE);
    for (int round = 0; round < 3; round++) {
        ASSERT_OK(acrypto_sha256_init(ctx));
        ASSERT_OK(acrypto_sha256_update(ctx, "a", 1));
        ASSERT_OK(acrypto_sha256_update(ctx, NULL, 0));
        ASSERT_OK(acrypto_sha256_update(ctx, "bc", 2));
        ASSERT_OK(acrypto_sha256_final(ctx, d));
        assert_hex(d, sizeof d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
    /* RFC 6962-style node hash equals the one-shot hash of the concatenation. */
    uint8_t left_h[32], right_h[32], node[65], one_shot[32], inc[32];
    ASSERT_OK(acrypto_sha256("L", 1, left_h));
    ASSERT_OK(acrypto_sha256("R", 1, right_h));
    node[0] = 0x01;
    memcpy(node + 1, left_h, 32);
    memcpy(node + 33, right_h, 32);
    ASSERT_OK(acrypto_sha256(node, sizeof node, one_shot));
    ASSERT_OK(acrypto_sha256_init(ctx));
    ASSERT_OK(acrypto_sha256_update(ctx, node, 1));
    ASSERT_OK(acrypto_sha256_update(ctx, left_h, 32));
    ASSERT_OK(acrypto_sha256_update(ctx, right_h, 32));
    ASSERT_OK(acrypto_sha256_final(ctx, inc));
    assert_memory_equal(one_shot, inc, 32);

    assert_null(acrypto_sha256_ctx_free(NULL));
    ASSERT_ERR(acrypto_sha256_update(NULL, "x", 1), BASE_ERR_INVALID);
}

/* ---- HMAC-SHA256 (RFC 4231 section 4) ---- */

static const struct {
    const char *key_hex; /* NULL: key_byte repeated key_len times */
    uint8_t key_byte;
    size_t key_len;
    const char *data; /* NULL: data_byte repeated data_len times */
    uint8_t data_byte;
    size_t data_len;
    const char *mac;
} hmac_vectors[] = {
    {NULL, 0x0b, 20, "Hi There", 0, 0, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {"4a656665", 0, 0, "what do ya want for nothing?", 0, 0,
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {NULL, 0xaa, 20, NULL, 0xdd, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    {"0102030405060708090a0b0c0d0e0f10111213141516171819", 0, 0, NULL, 0xcd, 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    /* Test case 5 is truncated to 128 bits: compared on its prefix below. */
    {NULL, 0x0c, 20, "Test With Truncation", 0, 0, "a3b6167473100ee06e0c796c2955552b"},
    {NULL, 0xaa, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 0, 0,
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    {NULL, 0xaa, 131,
     "This is a test using a larger than block-size key and a larger than block-size data. The key needs to "
     "be "
     "hashed before being used by the HMAC algorithm.",
     0, 0, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
};

static void test_hmac_rfc4231(void **state)
{
    for (size_t i = 0; i < BASE_ARRAY_LEN(hmac_vectors); i++) {
        acrypto_secret *key = hmac_vectors[i].key_hex
                                  ? secret_hex(hmac_vectors[i].key_hex)
                                  : secret_fill(hmac_vectors[i].key_byte, hmac_vectors[i].key_len);
        uint8_t data[256];
        size_t data_len;
        if (hmac_vectors[i].data) {
            data_len = strlen(hmac_vectors[i].data);
            memcpy(data, hmac_vectors[i].data, data_len);
        } else {
            data_len = hmac_vectors[i].data_len;
            memset(data, hmac_vectors[i].data_byte, data_len);
        }
        uint8_t want[32];
        size_t want_len = unhex(hmac_vectors[i].mac, want, sizeof want);
        uint8_t mac[ACRYPTO_HMAC_SHA256_LEN];
        ASSERT_OK(acrypto_hmac_sha256(key, data, data_len, mac));
        assert_memory_equal(mac, want, want_len);
        ASSERT_OK(acrypto_hmac_sha256_verify(key, data, data_len, mac, sizeof mac));
        if (want_len < sizeof mac) /* a truncated MAC is refused by verify */
            ASSERT_ERR(acrypto_hmac_sha256_verify(key, data, data_len, want, want_len), BASE_ERR_CRYPTO);
        acrypto_secret_free(key);
    }
}

static void test_hmac_verify_rejects(void **state)
{
    acrypto_secret *key = secret_fill(0x0b, 20);
    const char *msg = "Hi There";
    uint8_t mac[ACRYPTO_HMAC_SHA256_LEN];
    ASSERT_OK(acrypto_hmac_sha256(key, msg, strlen(msg), mac));
    for (size_t i = 0; i < sizeof mac; i += 31) {
        mac[i] ^= 0x01;
        ASSERT_ERR(acrypto_hmac_sha256_verify(key, msg, strlen(msg), mac, sizeof mac), BASE_ERR_CRYPTO);
        assert_string_equal(base_error_message(), "hmac-sha256: MAC did not verify");
        mac[i] ^= 0x01;
    }
    ASSERT_ERR(acrypto_hmac_sha256_verify(key, "Hi there", 8, mac, sizeof mac), BASE_ERR_CRYPTO);
    ASSERT_ERR(acrypto_hmac_sha256_verify(key, msg, strlen(msg), mac, sizeof mac - 1), BASE_ERR_CRYPTO);
    ASSERT_ERR(acrypto_hmac_sha256_verify(key, msg, strlen(msg), mac, 0), BASE_ERR_CRYPTO);
    acrypto_secret *other = secret_fill(0x0c, 20);
    ASSERT_ERR(acrypto_hmac_sha256_verify(other, msg, strlen(msg), mac, sizeof mac), BASE_ERR_CRYPTO);
    acrypto_secret *empty = NULL;
    ASSERT_OK(acrypto_secret_new(0, &empty));
    ASSERT_ERR(acrypto_hmac_sha256(empty, msg, 1, mac), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_hmac_sha256(NULL, msg, 1, mac), BASE_ERR_INVALID);
    acrypto_secret_free(empty);
    acrypto_secret_free(other);
    acrypto_secret_free(key);
}

/* ---- HKDF-SHA256 (RFC 5869 appendix A, test cases 1-3) ---- */

static void test_hkdf_rfc5869(void **state)
{
    uint8_t salt[80], info[80], okm[82];
    size_t salt_len, info_len;

    /* Test case 1 */
    acrypto_secret *ikm = secret_fill(0x0b, 22);
    salt_len = unhex("000102030405060708090a0b0c", salt, sizeof salt);
    info_len = unhex("f0f1f2f3f4f5f6f7f8f9", info, sizeof info);
    ASSERT_OK(acrypto_hkdf_sha256(ikm, salt, salt_len, info, info_len, okm, 42));
    assert_hex(okm, 42,
               "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
    acrypto_secret_free(ikm);

    /* Test case 2: 80-byte inputs, 82-byte output */
    acrypto_secret *ikm2 = NULL;
    ASSERT_OK(acrypto_secret_new(80, &ikm2));
    for (size_t i = 0; i < 80; i++) {
        acrypto_secret_bytes_mut(ikm2)[i] = (uint8_t)i;
        salt[i] = (uint8_t)(0x60 + i);
        info[i] = (uint8_t)(0xb0 + i);
    }
    ASSERT_OK(acrypto_hkdf_sha256(ikm2, salt, 80, info, 80, okm, 82));
    assert_hex(
        okm, 82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da32"
        "75600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87");
    acrypto_secret_free(ikm2);

    /* Test case 3: empty salt and info */
    acrypto_secret *ikm3 = secret_fill(0x0b, 22);
    ASSERT_OK(acrypto_hkdf_sha256(ikm3, NULL, 0, NULL, 0, okm, 42));
    assert_hex(okm, 42,
               "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");

    /* The secret-returning variant gives the same bytes. */
    acrypto_secret *derived = NULL;
    ASSERT_OK(acrypto_hkdf_sha256_secret(ikm3, NULL, 0, NULL, 0, 42, &derived));
    assert_int_equal(acrypto_secret_len(derived), 42);
    assert_memory_equal(acrypto_secret_bytes(derived), okm, 42);
    acrypto_secret_free(derived);
    acrypto_secret_free(ikm3);
}

static void test_hkdf_info_separates_and_limits(void **state)
{
    acrypto_secret *ikm = NULL;
    ASSERT_OK(acrypto_secret_random(32, &ikm));
    uint8_t a[32], b[32];
    ASSERT_OK(acrypto_hkdf_sha256(ikm, "salt", 4, "alma tenant-key v1", 18, a, sizeof a));
    ASSERT_OK(acrypto_hkdf_sha256(ikm, "salt", 4, "alma token-key v1", 17, b, sizeof b));
    assert_false(acrypto_equal(a, b, sizeof a));

    uint8_t out[64];
    memset(out, 0xAA, sizeof out);
    ASSERT_ERR(acrypto_hkdf_sha256(ikm, NULL, 0, NULL, 0, out, 0), BASE_ERR_INVALID);
    static uint8_t big_info[ACRYPTO_HKDF_MAX_INFO + 1];
    ASSERT_ERR(acrypto_hkdf_sha256(ikm, NULL, 0, big_info, sizeof big_info, out, sizeof out), BASE_ERR_LIMIT);
    assert_true(all_zero(out, sizeof out)); /* out is zeroed on failure */
    ASSERT_OK(acrypto_hkdf_sha256(ikm, NULL, 0, big_info, ACRYPTO_HKDF_MAX_INFO, out, sizeof out));
    static uint8_t max_out[ACRYPTO_HKDF_MAX_OUT + 1];
    ASSERT_OK(acrypto_hkdf_sha256(ikm, NULL, 0, NULL, 0, max_out, ACRYPTO_HKDF_MAX_OUT));
    ASSERT_ERR(acrypto_hkdf_sha256(ikm, NULL, 0, NULL, 0, max_out, ACRYPTO_HKDF_MAX_OUT + 1), BASE_ERR_LIMIT);

    acrypto_secret *empty = NULL, *untouched = NULL;
    ASSERT_OK(acrypto_secret_new(0, &empty));
    ASSERT_ERR(acrypto_hkdf_sha256(empty, NULL, 0, NULL, 0, out, sizeof out), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_hkdf_sha256_secret(empty, NULL, 0, NULL, 0, 32, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_hkdf_sha256_secret(ikm, NULL, 0, NULL, 0, 0, &untouched), BASE_ERR_INVALID);
    assert_null(untouched);
    acrypto_secret_free(empty);
    acrypto_secret_free(ikm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_lifecycle),
        cmocka_unit_test(test_secret_random_and_random),
        cmocka_unit_test(test_equal_and_wipe),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_incremental),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_verify_rejects),
        cmocka_unit_test(test_hkdf_rfc5869),
        cmocka_unit_test(test_hkdf_info_separates_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
