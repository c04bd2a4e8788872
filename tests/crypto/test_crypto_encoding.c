/* base64, base64url (no padding) and hex: RFC 4648 section 10 vectors, round trips, strict rejection. */
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

typedef base_result (*encode_fn)(const void *, size_t, char *, size_t, size_t *);
typedef base_result (*decode_fn)(const char *, size_t, void *, size_t, size_t *);
typedef size_t (*size_fn)(size_t);

typedef struct codec {
    const char *name;
    encode_fn encode;
    decode_fn decode;
    size_fn encode_size;
    size_fn decode_size;
} codec;

static const codec codecs[] = {
    {"base64", acrypto_base64_encode, acrypto_base64_decode, acrypto_base64_encode_size,
     acrypto_base64_decode_size},
    {"base64url", acrypto_base64url_encode, acrypto_base64url_decode, acrypto_base64url_encode_size,
     acrypto_base64_decode_size},
    {"hex", acrypto_hex_encode, acrypto_hex_decode, acrypto_hex_encode_size, acrypto_hex_decode_size},
};
enum { B64, B64URL, HEX };

static void expect_encode(const codec *c, const void *in, size_t n, const char *want)
{
    char out[128];
    size_t len = 0;
    ASSERT_OK(c->encode(in, n, out, sizeof out, &len));
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    assert_int_equal(c->encode_size(n), len + 1);
    /* Exactly encode_size() is enough; one byte less is not. */
    char exact[128];
    ASSERT_OK(c->encode(in, n, exact, c->encode_size(n), &len));
    ASSERT_ERR(c->encode(in, n, exact, c->encode_size(n) - 1, &len), BASE_ERR_INVALID);

    uint8_t back[128];
    size_t back_len = 999;
    ASSERT_OK(c->decode(want, strlen(want), back, sizeof back, &back_len));
    assert_int_equal(back_len, n);
    if (n > 0)
        assert_memory_equal(back, in, n);
    assert_true(c->decode_size(strlen(want)) >= n);
}

/* Decoding must fail with BASE_ERR_INVALID, zero the output and leave ret_len alone. */
static void expect_reject(const codec *c, const char *in, size_t in_len)
{
    uint8_t out[64];
    memset(out, 0xAA, sizeof out);
    size_t len = 4242;
    base_result r = c->decode(in, in_len, out, sizeof out, &len);
    if (r.err != BASE_ERR_INVALID)
        fail_msg("%s decode accepted or misreported %zu-byte input \"%.*s\"", c->name, in_len, (int)in_len,
                 in);
    assert_int_equal(len, 4242);
    for (size_t i = 0; i < sizeof out; i++)
        assert_int_equal(out[i], 0);
}

static void test_rfc4648_vectors(void **state)
{
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *b64[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *b64url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    static const char *hex[] = {"", "66", "666f", "666f6f", "666f6f62", "666f6f6261", "666f6f626172"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(plain); i++) {
        expect_encode(&codecs[B64], plain[i], strlen(plain[i]), b64[i]);
        expect_encode(&codecs[B64URL], plain[i], strlen(plain[i]), b64url[i]);
        expect_encode(&codecs[HEX], plain[i], strlen(plain[i]), hex[i]);
    }
}

static void test_alphabet_differences(void **state)
{
    const uint8_t a[] = {0xfb, 0xff};
    expect_encode(&codecs[B64], a, sizeof a, "+/8=");
    expect_encode(&codecs[B64URL], a, sizeof a, "-_8");
    const uint8_t b[] = {0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff};
    expect_encode(&codecs[B64], b, sizeof b, "++++////");
    expect_encode(&codecs[B64URL], b, sizeof b, "----____");
    const uint8_t c[] = {0x00, 0x01, 0xfe, 0xff, 0xab, 0xcd};
    expect_encode(&codecs[HEX], c, sizeof c, "0001feffabcd");
    /* Hex decoding takes upper case too. */
    uint8_t out[8];
    size_t n = 0;
    ASSERT_OK(acrypto_hex_decode("0001FEFFABCD", 12, out, sizeof out, &n));
    assert_int_equal(n, 6);
    assert_memory_equal(out, c, 6);
    /* A JWT header: {"alg":"EdDSA","typ":"JWT"} */
    const char *hdr = "{\"alg\":\"EdDSA\",\"typ\":\"JWT\"}";
    expect_encode(&codecs[B64URL], hdr, strlen(hdr), "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9");
}

static void test_round_trip_all_bytes_all_lengths(void **state)
{
    uint8_t all[256];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)i;
    for (size_t ci = 0; ci < BASE_ARRAY_LEN(codecs); ci++) {
        const codec *c = &codecs[ci];
        for (size_t n = 0; n <= sizeof all; n += (n < 10 ? 1 : 37)) {
            size_t cap = c->encode_size(n);
            char *text = malloc(cap);
            assert_non_null(text);
            size_t len = 0;
            ASSERT_OK(c->encode(all + (256 - n), n, text, cap, &len));
            assert_int_equal(len + 1, cap);
            assert_int_equal(text[len], '\0');
            size_t dcap = c->decode_size(len);
            uint8_t *back = malloc(dcap + 1);
            assert_non_null(back);
            size_t back_len = 0;
            ASSERT_OK(c->decode(text, len, back, dcap, &back_len));
            assert_int_equal(back_len, n);
            if (n > 0)
                assert_memory_equal(back, all + (256 - n), n);
            free(back);
            free(text);
        }
    }
}

static void test_base64_rejects(void **state)
{
    const codec *c = &codecs[B64];
    /* Characters outside the alphabet, including whitespace, NUL, the url alphabet and non-ASCII. */
    expect_reject(c, "Zm9v!A==", 8);
    expect_reject(c, "Zm9v Zg=", 8);
    expect_reject(c, "Zm9v\nZg=", 8);
    expect_reject(c, "Zm9\0", 4);
    expect_reject(c, "Zm-v", 4);
    expect_reject(c, "Zm_v", 4);
    expect_reject(c, "Zm\xc3\xa9", 4);
    /* Length not a multiple of 4 (padding is mandatory). */
    expect_reject(c, "Zm9vY", 5);
    expect_reject(c, "Zg", 2);
    expect_reject(c, "Zg=", 3);
    expect_reject(c, "Z", 1);
    /* Padding in the wrong place or too much of it. */
    expect_reject(c, "=Zg=", 4);
    expect_reject(c, "Z===", 4);
    expect_reject(c, "====", 4);
    expect_reject(c, "Zg=a", 4);
    expect_reject(c, "Zg==Zg==", 8);
    expect_reject(c, "Zm9vZ===", 8);
    /* Non-zero unused bits: not the canonical encoding of anything. */
    expect_reject(c, "Zh==", 4);
    expect_reject(c, "Zm9=", 4);
    /* Output buffer too small. */
    uint8_t out[2];
    size_t n = 0;
    ASSERT_ERR(acrypto_base64_decode("Zm9v", 4, out, sizeof out, &n), BASE_ERR_INVALID);
    /* The canonical forms are accepted. */
    ASSERT_OK(acrypto_base64_decode("Zg==", 4, out, sizeof out, &n));
    assert_int_equal(n, 1);
}

static void test_base64url_rejects(void **state)
{
    const codec *c = &codecs[B64URL];
    expect_reject(c, "Zm+v", 4);
    expect_reject(c, "Zm/v", 4);
    expect_reject(c, "Zg==", 4); /* padding is not part of unpadded base64url */
    expect_reject(c, "Zg=", 3);
    expect_reject(c, "Zm9v.", 5); /* a JWT separator is not base64url */
    expect_reject(c, "Zm9v\r\n", 6);
    expect_reject(c, "Z", 1);
    expect_reject(c, "Zm9vY", 5); /* length 1 mod 4 */
    expect_reject(c, "Zh", 2);    /* non-zero unused bits */
    expect_reject(c, "Zm9", 3);
}

static void test_hex_rejects(void **state)
{
    const codec *c = &codecs[HEX];
    expect_reject(c, "abc", 3);
    expect_reject(c, "0g", 2);
    expect_reject(c, "0x00", 4);
    expect_reject(c, " 00", 3);
    expect_reject(c, "0\0", 2);
    expect_reject(c, "@0", 2);
    expect_reject(c, "G0", 2);
    expect_reject(c, "`0", 2);
}

static void test_limits_and_nulls(void **state)
{
    char out[8];
    size_t n = 77;
    ASSERT_ERR(acrypto_base64_encode(NULL, 1, out, sizeof out, &n), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_base64_encode("x", 1, NULL, 0, &n), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_hex_encode(out, ACRYPTO_MAX_INPUT + 1, out, sizeof out, &n), BASE_ERR_LIMIT);
    ASSERT_ERR(acrypto_base64url_decode(out, ACRYPTO_MAX_INPUT + 1, out, sizeof out, &n), BASE_ERR_LIMIT);
    assert_int_equal(n, 77);
    /* Empty input with no output buffer is fine. */
    ASSERT_OK(acrypto_base64url_decode("", 0, NULL, 0, &n));
    assert_int_equal(n, 0);
    ASSERT_OK(acrypto_hex_encode(NULL, 0, out, 1, &n));
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_alphabet_differences),
        cmocka_unit_test(test_round_trip_all_bytes_all_lengths),
        cmocka_unit_test(test_base64_rejects),
        cmocka_unit_test(test_base64url_rejects),
        cmocka_unit_test(test_hex_rejects),
        cmocka_unit_test(test_limits_and_nulls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
