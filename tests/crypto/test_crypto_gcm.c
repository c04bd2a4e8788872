/* AES-256-GCM: McGrew-Viega / NIST vectors for the raw primitive, round trips, and tampering with every part
 * of the sealed buffer and the associated data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"
#include "crypto_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static acrypto_secret *random_key(void)
{
    acrypto_secret *k = NULL;
    ASSERT_OK(acrypto_secret_random(ACRYPTO_AES256_KEY_LEN, &k));
    return k;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13, 14 and 16 (AES-256, 96-bit IV). */
static const struct {
    const char *name, *key, *iv, *pt, *ad, *ct, *tag;
} gcm_vectors[] = {
    {"tc13", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    {"tc14", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18",
     "d0d1c8a799996bf0265b98b5d48ab919"},
    {"tc16", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf"
     "5aa0de6"
     "57ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6"
     "393ba7a0"
     "abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

static void test_gcm_published_vectors(void **state)
{
    for (size_t v = 0; v < BASE_ARRAY_LEN(gcm_vectors); v++) {
        acrypto_secret *key = secret_hex(gcm_vectors[v].key);
        uint8_t iv[ACRYPTO_GCM_NONCE_LEN], pt[128], ad[64], ct[128], tag[ACRYPTO_GCM_TAG_LEN];
        assert_int_equal(unhex(gcm_vectors[v].iv, iv, sizeof iv), sizeof iv);
        size_t pt_len = unhex(gcm_vectors[v].pt, pt, sizeof pt);
        size_t ad_len = unhex(gcm_vectors[v].ad, ad, sizeof ad);
        size_t ct_len = unhex(gcm_vectors[v].ct, ct, sizeof ct);
        assert_int_equal(unhex(gcm_vectors[v].tag, tag, sizeof tag), sizeof tag);
        assert_int_equal(ct_len, pt_len);

        uint8_t sealed[256];
        size_t sealed_len = 0;
        ASSERT_OK(acrypto__gcm_seal_with_nonce(key, iv, ad, ad_len, pt, pt_len, sealed, sizeof sealed,
                                               &sealed_len));
        assert_int_equal(sealed_len, pt_len + ACRYPTO_GCM_OVERHEAD);
        /* The documented layout: nonce || ciphertext || tag. */
        assert_memory_equal(sealed, iv, sizeof iv);
        if (ct_len > 0)
            assert_memory_equal(sealed + ACRYPTO_GCM_NONCE_LEN, ct, ct_len);
        assert_memory_equal(sealed + ACRYPTO_GCM_NONCE_LEN + ct_len, tag, sizeof tag);

        /* And open() accepts the published ciphertext built by hand. */
        uint8_t built[256];
        memcpy(built, iv, sizeof iv);
        memcpy(built + sizeof iv, ct, ct_len);
        memcpy(built + sizeof iv + ct_len, tag, sizeof tag);
        uint8_t out[128];
        size_t out_len = 99;
        ASSERT_OK(acrypto_gcm_open(key, ad, ad_len, built, ct_len + ACRYPTO_GCM_OVERHEAD, out, sizeof out,
                                   &out_len));
        assert_int_equal(out_len, pt_len);
        if (pt_len > 0)
            assert_memory_equal(out, pt, pt_len);
        acrypto_secret_free(key);
    }
}

static void test_gcm_round_trip_sizes(void **state)
{
    acrypto_secret *key = random_key();
    static const size_t sizes[] = {0, 1, 15, 16, 17, 255, 4096, 100000};
    const char ad[] = "tenant=t1|record=r42|version=3";
    for (size_t i = 0; i < BASE_ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        uint8_t *pt = malloc(n + 1);
        assert_non_null(pt);
        ASSERT_OK(acrypto_random(pt, n));
        uint8_t *sealed = NULL;
        size_t sealed_len = 0;
        ASSERT_OK(acrypto_gcm_seal_alloc(key, ad, strlen(ad), pt, n, &sealed, &sealed_len));
        assert_int_equal(sealed_len, n + ACRYPTO_GCM_OVERHEAD);
        uint8_t *out = malloc(n + 1);
        assert_non_null(out);
        size_t out_len = 0;
        ASSERT_OK(acrypto_gcm_open(key, ad, strlen(ad), sealed, sealed_len, out, n, &out_len));
        assert_int_equal(out_len, n);
        if (n > 0)
            assert_memory_equal(out, pt, n);
        free(out);
        free(sealed);
        free(pt);
    }
    acrypto_secret_free(key);
}

static void test_gcm_fresh_nonce_each_seal(void **state)
{
    acrypto_secret *key = random_key();
    const char pt[] = "same plaintext";
    uint8_t a[64], b[64];
    size_t a_len = 0, b_len = 0;
    ASSERT_OK(acrypto_gcm_seal(key, NULL, 0, pt, sizeof pt, a, sizeof a, &a_len));
    ASSERT_OK(acrypto_gcm_seal(key, NULL, 0, pt, sizeof pt, b, sizeof b, &b_len));
    assert_int_equal(a_len, b_len);
    assert_memory_not_equal(a, b, ACRYPTO_GCM_NONCE_LEN);
    assert_memory_not_equal(a + ACRYPTO_GCM_NONCE_LEN, b + ACRYPTO_GCM_NONCE_LEN, sizeof pt);
    acrypto_secret_free(key);
}

/* Fixture for the tampering tests: one sealed message with associated data. */
typedef struct sealed_msg {
    acrypto_secret *key;
    char ad[64];
    size_t ad_len;
    char pt[64];
    size_t pt_len;
    uint8_t sealed[128];
    size_t sealed_len;
} sealed_msg;

static void seal_msg(sealed_msg *m)
{
    memset(m, 0, sizeof *m);
    m->key = random_key();
    m->ad_len = (size_t)snprintf(m->ad, sizeof m->ad, "tenant=t1|record=r42|version=3");
    m->pt_len = (size_t)snprintf(m->pt, sizeof m->pt, "PATIENT Jane Doe, DOB 1970-01-01");
    ASSERT_OK(acrypto_gcm_seal(m->key, m->ad, m->ad_len, m->pt, m->pt_len, m->sealed, sizeof m->sealed,
                               &m->sealed_len));
}

/* open() must fail with BASE_ERR_CRYPTO and the generic message, release no plaintext (the whole output
 * buffer is zeroed, although GCM decrypts before it checks the tag), and leave ret_len untouched. */
static void expect_open_fails(const acrypto_secret *key, const void *ad, size_t ad_len, const uint8_t *sealed,
                              size_t sealed_len, const char *pt)
{
    uint8_t out[128];
    memset(out, 0xAA, sizeof out);
    size_t out_len = 12345;
    ASSERT_ERR(acrypto_gcm_open(key, ad, ad_len, sealed, sealed_len, out, sizeof out, &out_len),
               BASE_ERR_CRYPTO);
    assert_string_equal(base_error_message(),
                        "aes-256-gcm: decryption failed (authentication tag did not verify)");
    assert_null(strstr(base_error_message(), pt));
    assert_true(all_zero(out, sizeof out));
    assert_int_equal(out_len, 12345);

    acrypto_secret *plain = NULL;
    ASSERT_ERR(acrypto_gcm_open_secret(key, ad, ad_len, sealed, sealed_len, &plain), BASE_ERR_CRYPTO);
    assert_null(plain);
}

static void test_gcm_opens_untampered(void **state)
{
    sealed_msg m;
    seal_msg(&m);
    uint8_t out[128];
    size_t out_len = 0;
    ASSERT_OK(acrypto_gcm_open(m.key, m.ad, m.ad_len, m.sealed, m.sealed_len, out, sizeof out, &out_len));
    assert_int_equal(out_len, m.pt_len);
    assert_memory_equal(out, m.pt, m.pt_len);

    acrypto_secret *plain = NULL;
    ASSERT_OK(acrypto_gcm_open_secret(m.key, m.ad, m.ad_len, m.sealed, m.sealed_len, &plain));
    assert_int_equal(acrypto_secret_len(plain), m.pt_len);
    assert_string_equal((const char *)acrypto_secret_bytes(plain), m.pt);
    acrypto_secret_free(plain);
    acrypto_secret_free(m.key);
}

static void test_gcm_flip_every_region(void **state)
{
    sealed_msg m;
    seal_msg(&m);
    /* Nonce (first and last byte), ciphertext (first, middle, last), tag (first and last byte). */
    size_t ct0 = ACRYPTO_GCM_NONCE_LEN, tag0 = ACRYPTO_GCM_NONCE_LEN + m.pt_len;
    const size_t positions[] = {0,    ACRYPTO_GCM_NONCE_LEN - 1, ct0, ct0 + m.pt_len / 2, tag0 - 1,
                                tag0, m.sealed_len - 1};
    for (size_t i = 0; i < BASE_ARRAY_LEN(positions); i++) {
        for (unsigned bit = 0; bit < 8; bit += 7) {
            uint8_t t[128];
            memcpy(t, m.sealed, m.sealed_len);
            t[positions[i]] ^= (uint8_t)(1u << bit);
            expect_open_fails(m.key, m.ad, m.ad_len, t, m.sealed_len, m.pt);
        }
    }
    acrypto_secret_free(m.key);
}

static void test_gcm_tampered_ad(void **state)
{
    sealed_msg m;
    seal_msg(&m);
    char ad[64];
    memcpy(ad, m.ad, m.ad_len);
    ad[m.ad_len - 1] ^= 0x01; /* version=3 -> version=2 */
    expect_open_fails(m.key, ad, m.ad_len, m.sealed, m.sealed_len, m.pt);
    expect_open_fails(m.key, m.ad, m.ad_len - 1, m.sealed, m.sealed_len, m.pt); /* truncated AD */
    expect_open_fails(m.key, NULL, 0, m.sealed, m.sealed_len, m.pt);            /* AD left out */
    acrypto_secret_free(m.key);
}

static void test_gcm_wrong_key(void **state)
{
    sealed_msg m;
    seal_msg(&m);
    acrypto_secret *other = random_key();
    expect_open_fails(other, m.ad, m.ad_len, m.sealed, m.sealed_len, m.pt);
    /* The same key with one bit changed. */
    acrypto_secret *near = NULL;
    ASSERT_OK(acrypto_secret_from_bytes(acrypto_secret_bytes(m.key), ACRYPTO_AES256_KEY_LEN, &near));
    acrypto_secret_bytes_mut(near)[31] ^= 0x80;
    expect_open_fails(near, m.ad, m.ad_len, m.sealed, m.sealed_len, m.pt);
    acrypto_secret_free(near);
    acrypto_secret_free(other);
    acrypto_secret_free(m.key);
}

static void test_gcm_truncated(void **state)
{
    sealed_msg m;
    seal_msg(&m);
    const size_t lens[] = {m.sealed_len - 1,
                           m.sealed_len - ACRYPTO_GCM_TAG_LEN,
                           ACRYPTO_GCM_OVERHEAD,
                           ACRYPTO_GCM_OVERHEAD - 1,
                           ACRYPTO_GCM_NONCE_LEN,
                           1,
                           0};
    for (size_t i = 0; i < BASE_ARRAY_LEN(lens); i++)
        expect_open_fails(m.key, m.ad, m.ad_len, m.sealed, lens[i], m.pt);
    /* Extended by a byte: the tag is read from the wrong place. */
    uint8_t longer[129];
    memcpy(longer, m.sealed, m.sealed_len);
    longer[m.sealed_len] = 0;
    expect_open_fails(m.key, m.ad, m.ad_len, longer, m.sealed_len + 1, m.pt);
    acrypto_secret_free(m.key);
}

static void test_gcm_failed_open_wipes_output(void **state)
{
    /* A 4 KiB plaintext: GCM writes the decrypted bytes into out before the tag check fails. */
    acrypto_secret *key = random_key();
    static uint8_t pt[4096], sealed[4096 + ACRYPTO_GCM_OVERHEAD], out[4096 + 64];
    memset(pt, 'P', sizeof pt);
    size_t sealed_len = 0;
    ASSERT_OK(acrypto_gcm_seal(key, "ad", 2, pt, sizeof pt, sealed, sizeof sealed, &sealed_len));
    sealed[sealed_len - 1] ^= 0x01;
    memset(out, 0xAA, sizeof out);
    size_t out_len = 0;
    ASSERT_ERR(acrypto_gcm_open(key, "ad", 2, sealed, sealed_len, out, sizeof out, &out_len),
               BASE_ERR_CRYPTO);
    assert_true(all_zero(out, sizeof out));
    acrypto_secret_free(key);
}

static void test_gcm_data_key_wrapping(void **state)
{
    /* The envelope of ARCHITECTURE.md: a per-record data key wrapped by a tenant key, AD binding the record.
     */
    acrypto_secret *tenant_key = random_key();
    acrypto_secret *data_key = random_key();
    const char ad[] = "alma/vault/v1|tenant=t1|record=r42|version=1";
    uint8_t wrapped[ACRYPTO_AES256_KEY_LEN + ACRYPTO_GCM_OVERHEAD];
    size_t wrapped_len = 0;
    ASSERT_OK(acrypto_gcm_seal(tenant_key, ad, sizeof ad - 1, acrypto_secret_bytes(data_key),
                               acrypto_secret_len(data_key), wrapped, sizeof wrapped, &wrapped_len));
    assert_int_equal(wrapped_len, sizeof wrapped);
    acrypto_secret *unwrapped = NULL;
    ASSERT_OK(acrypto_gcm_open_secret(tenant_key, ad, sizeof ad - 1, wrapped, wrapped_len, &unwrapped));
    assert_int_equal(acrypto_secret_len(unwrapped), ACRYPTO_AES256_KEY_LEN);
    assert_true(acrypto_equal(acrypto_secret_bytes(unwrapped), acrypto_secret_bytes(data_key),
                              ACRYPTO_AES256_KEY_LEN));
    acrypto_secret_free(unwrapped);
    acrypto_secret_free(data_key);
    acrypto_secret_free(tenant_key);
}

static void test_gcm_argument_checks(void **state)
{
    acrypto_secret *key = random_key();
    acrypto_secret *short_key = NULL;
    ASSERT_OK(acrypto_secret_random(16, &short_key));
    uint8_t out[64];
    size_t len = 777;

    memset(out, 0xAA, sizeof out);
    ASSERT_ERR(acrypto_gcm_seal(short_key, NULL, 0, "x", 1, out, sizeof out, &len), BASE_ERR_INVALID);
    assert_true(all_zero(out, sizeof out));
    ASSERT_ERR(acrypto_gcm_seal(NULL, NULL, 0, "x", 1, out, sizeof out, &len), BASE_ERR_INVALID);
    /* Output one byte too small. */
    ASSERT_ERR(acrypto_gcm_seal(key, NULL, 0, "abcd", 4, out, 4 + ACRYPTO_GCM_OVERHEAD - 1, &len),
               BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_gcm_seal(key, NULL, 0, "x", 1, NULL, 0, &len), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_gcm_seal(key, NULL, 1, "x", 1, out, sizeof out, &len), BASE_ERR_INVALID);
    /* Output overlapping the plaintext. */
    ASSERT_ERR(acrypto_gcm_seal(key, NULL, 0, out + 4, 8, out, sizeof out, &len), BASE_ERR_INVALID);
    assert_int_equal(len, 777);

    uint8_t sealed[64];
    size_t sealed_len = 0;
    ASSERT_OK(acrypto_gcm_seal(key, NULL, 0, "abcd", 4, sealed, sizeof sealed, &sealed_len));
    ASSERT_ERR(acrypto_gcm_open(short_key, NULL, 0, sealed, sealed_len, out, sizeof out, &len),
               BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_gcm_open(key, NULL, 0, sealed, sealed_len, out, 3, &len), BASE_ERR_INVALID);
    assert_int_equal(len, 777);
    acrypto_secret_free(short_key);
    acrypto_secret_free(key);
}

static void test_gcm_size_limits(void **state)
{
    acrypto_secret *key = random_key();
    size_t big = ACRYPTO_MAX_INPUT + 1;
    uint8_t *buf = calloc(1, big + ACRYPTO_GCM_OVERHEAD + 1); /* untouched pages: cheap */
    assert_non_null(buf);
    uint8_t out[64];
    size_t len = 0;
    ASSERT_ERR(acrypto_gcm_seal(key, NULL, 0, buf, big, out, sizeof out, &len), BASE_ERR_LIMIT);
    ASSERT_ERR(acrypto_gcm_seal(key, buf, big, "x", 1, out, sizeof out, &len), BASE_ERR_LIMIT);
    uint8_t *sealed = NULL;
    ASSERT_ERR(acrypto_gcm_seal_alloc(key, NULL, 0, buf, big, &sealed, &len), BASE_ERR_LIMIT);
    assert_null(sealed);
    ASSERT_ERR(acrypto_gcm_open(key, NULL, 0, buf, big + ACRYPTO_GCM_OVERHEAD, out, sizeof out, &len),
               BASE_ERR_LIMIT);
    ASSERT_ERR(acrypto_gcm_open(key, buf, big, buf, ACRYPTO_GCM_OVERHEAD, out, sizeof out, &len),
               BASE_ERR_LIMIT);
    free(buf);
    acrypto_secret_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcm_published_vectors),
        cmocka_unit_test(test_gcm_round_trip_sizes),
        cmocka_unit_test(test_gcm_fresh_nonce_each_seal),
        cmocka_unit_test(test_gcm_opens_untampered),
        cmocka_unit_test(test_gcm_flip_every_region),
        cmocka_unit_test(test_gcm_tampered_ad),
        cmocka_unit_test(test_gcm_wrong_key),
        cmocka_unit_test(test_gcm_truncated),
        cmocka_unit_test(test_gcm_failed_open_wipes_output),
        cmocka_unit_test(test_gcm_data_key_wrapping),
        cmocka_unit_test(test_gcm_argument_checks),
        cmocka_unit_test(test_gcm_size_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
