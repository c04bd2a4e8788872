/* Ed25519: RFC 8032 section 7.1 test vectors 1-3, RFC 8410 PEM keys, tampering, wrong keys, PEM files. */
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
#include <sys/stat.h>
#include <unistd.h>

/* RFC 8032 section 7.1, TEST 1-3: SECRET KEY is the 32-byte seed. */
static const struct {
    const char *seed, *pub, *msg, *sig;
} rfc8032[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f"
     "0595bbe"
     "24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2ea"
     "eb4302a"
     "eeb00d291612bb0c00"},
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e"
     "9716ed2"
     "8dc027beceea1ec40a"},
};

/* RFC 8410 section 10.1 and 10.3: one Ed25519 key pair as PEM. */
static const char rfc8410_private_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                                          "MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n"
                                          "-----END PRIVATE KEY-----\n";
static const char rfc8410_public_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                                         "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
                                         "-----END PUBLIC KEY-----\n";
static const char rfc8410_seed[] = "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842";
static const char rfc8410_pub[] = "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";

/* Keys that must be refused: an X25519 key, and an Ed25519 key encrypted with a passphrase. */
static const char x25519_private_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                                         "MC4CAQAwBQYDK2VuBCIEIFhdlVFdRnO1oCvCdPvdk2rn4RBO+RBdW+vNf1IE1oVB\n"
                                         "-----END PRIVATE KEY-----\n";
static const char encrypted_pem[] = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
                                    "MIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAgexX2XthrOsAICCAAw\n"
                                    "DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEGXnpCPBzMdZMUzQx5mO+2oEQKRQ\n"
                                    "jJkGNQ5Jiwu6g+gAjAougZuc/FS0WmNw/Rn3W74byWGi4v78pk66+TDDxPJc62AY\n"
                                    "YFUsab1xhJb0dzVoK98=\n"
                                    "-----END ENCRYPTED PRIVATE KEY-----\n";

static void test_ed25519_rfc8032_vectors(void **state)
{
    for (size_t i = 0; i < BASE_ARRAY_LEN(rfc8032); i++) {
        acrypto_secret *seed = secret_hex(rfc8032[i].seed);
        uint8_t want_pub[32], msg[8], want_sig[64];
        assert_int_equal(unhex(rfc8032[i].pub, want_pub, sizeof want_pub), 32);
        size_t msg_len = unhex(rfc8032[i].msg, msg, sizeof msg);
        assert_int_equal(unhex(rfc8032[i].sig, want_sig, sizeof want_sig), 64);

        acrypto_ed25519_key *key = NULL;
        ASSERT_OK(acrypto_ed25519_from_seed(seed, &key));
        assert_true(acrypto_ed25519_has_private(key));
        uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
        ASSERT_OK(acrypto_ed25519_public_raw(key, pub));
        assert_memory_equal(pub, want_pub, 32);

        uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
        ASSERT_OK(acrypto_ed25519_sign(key, msg_len ? msg : NULL, msg_len, sig));
        assert_memory_equal(sig, want_sig, 64); /* exactly the published signature */
        ASSERT_OK(acrypto_ed25519_verify(key, msg, msg_len, sig, sizeof sig));

        /* A verifier holding only the published public key accepts the published signature... */
        acrypto_ed25519_key *verifier = NULL;
        ASSERT_OK(acrypto_ed25519_from_public(want_pub, sizeof want_pub, &verifier));
        assert_false(acrypto_ed25519_has_private(verifier));
        ASSERT_OK(acrypto_ed25519_verify(verifier, msg, msg_len, want_sig, sizeof want_sig));
        /* ...and cannot sign or export a seed. */
        uint8_t untouched[ACRYPTO_ED25519_SIG_LEN] = {0};
        ASSERT_ERR(acrypto_ed25519_sign(verifier, msg, msg_len, untouched), BASE_ERR_INVALID);
        for (size_t b = 0; b < sizeof untouched; b++)
            assert_int_equal(untouched[b], 0);
        acrypto_secret *no_seed = NULL;
        ASSERT_ERR(acrypto_ed25519_private_seed(verifier, &no_seed), BASE_ERR_INVALID);
        assert_null(no_seed);

        acrypto_secret *exported = NULL;
        ASSERT_OK(acrypto_ed25519_private_seed(key, &exported));
        assert_int_equal(acrypto_secret_len(exported), 32);
        assert_true(acrypto_equal(acrypto_secret_bytes(exported), acrypto_secret_bytes(seed), 32));
        acrypto_secret_free(exported);
        acrypto_ed25519_free(verifier);
        acrypto_ed25519_free(key);
        acrypto_secret_free(seed);
    }
}

static void test_ed25519_rejects_tampering(void **state)
{
    acrypto_secret *seed = secret_hex(rfc8032[2].seed);
    acrypto_ed25519_key *key = NULL;
    ASSERT_OK(acrypto_ed25519_from_seed(seed, &key));
    const char msg[] = "audit checkpoint 1024 root=ab12";
    uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
    ASSERT_OK(acrypto_ed25519_sign(key, msg, sizeof msg - 1, sig));
    ASSERT_OK(acrypto_ed25519_verify(key, msg, sizeof msg - 1, sig, sizeof sig));

    /* Every bit of R and S matters: flip a few across the signature. */
    for (size_t i = 0; i < sizeof sig; i += 9) {
        sig[i] ^= (uint8_t)(1u << (i % 8));
        ASSERT_ERR(acrypto_ed25519_verify(key, msg, sizeof msg - 1, sig, sizeof sig), BASE_ERR_CRYPTO);
        assert_string_equal(base_error_message(), "ed25519: signature did not verify");
        sig[i] ^= (uint8_t)(1u << (i % 8));
    }
    /* Changed message, shorter message, wrong signature lengths. */
    char changed[sizeof msg];
    memcpy(changed, msg, sizeof msg);
    changed[6] ^= 0x20;
    ASSERT_ERR(acrypto_ed25519_verify(key, changed, sizeof msg - 1, sig, sizeof sig), BASE_ERR_CRYPTO);
    ASSERT_ERR(acrypto_ed25519_verify(key, msg, sizeof msg - 2, sig, sizeof sig), BASE_ERR_CRYPTO);
    ASSERT_ERR(acrypto_ed25519_verify(key, msg, sizeof msg - 1, sig, sizeof sig - 1), BASE_ERR_CRYPTO);
    ASSERT_ERR(acrypto_ed25519_verify(key, msg, sizeof msg - 1, sig, 0), BASE_ERR_CRYPTO);
    uint8_t longer[65];
    memcpy(longer, sig, 64);
    longer[64] = 0;
    ASSERT_ERR(acrypto_ed25519_verify(key, msg, sizeof msg - 1, longer, sizeof longer), BASE_ERR_CRYPTO);
    uint8_t zeros[64] = {0};
    ASSERT_ERR(acrypto_ed25519_verify(key, msg, sizeof msg - 1, zeros, sizeof zeros), BASE_ERR_CRYPTO);

    /* A valid signature by another key does not verify under this one (and vice versa). */
    acrypto_ed25519_key *other = NULL;
    ASSERT_OK(acrypto_ed25519_generate(&other));
    uint8_t other_sig[ACRYPTO_ED25519_SIG_LEN];
    ASSERT_OK(acrypto_ed25519_sign(other, msg, sizeof msg - 1, other_sig));
    ASSERT_OK(acrypto_ed25519_verify(other, msg, sizeof msg - 1, other_sig, sizeof other_sig));
    ASSERT_ERR(acrypto_ed25519_verify(key, msg, sizeof msg - 1, other_sig, sizeof other_sig),
               BASE_ERR_CRYPTO);
    ASSERT_ERR(acrypto_ed25519_verify(other, msg, sizeof msg - 1, sig, sizeof sig), BASE_ERR_CRYPTO);
    /* The RFC vector 2 signature (another key, another message) is not accepted either. */
    uint8_t rfc_sig[64];
    unhex(rfc8032[1].sig, rfc_sig, sizeof rfc_sig);
    ASSERT_ERR(acrypto_ed25519_verify(key, "\x72", 1, rfc_sig, sizeof rfc_sig), BASE_ERR_CRYPTO);

    acrypto_ed25519_free(other);
    acrypto_ed25519_free(key);
    acrypto_secret_free(seed);
}

static void test_ed25519_generate_round_trip(void **state)
{
    acrypto_ed25519_key *a = NULL, *b = NULL;
    ASSERT_OK(acrypto_ed25519_generate(&a));
    ASSERT_OK(acrypto_ed25519_generate(&b));
    uint8_t pa[32], pb[32];
    ASSERT_OK(acrypto_ed25519_public_raw(a, pa));
    ASSERT_OK(acrypto_ed25519_public_raw(b, pb));
    assert_memory_not_equal(pa, pb, 32);

    /* Raw seed + raw public key out, back in: same key, same (deterministic) signature. */
    acrypto_secret *seed = NULL;
    ASSERT_OK(acrypto_ed25519_private_seed(a, &seed));
    acrypto_ed25519_key *a2 = NULL, *a_pub = NULL;
    ASSERT_OK(acrypto_ed25519_from_seed(seed, &a2));
    ASSERT_OK(acrypto_ed25519_from_public(pa, sizeof pa, &a_pub));
    uint8_t s1[64], s2[64];
    ASSERT_OK(acrypto_ed25519_sign(a, "note", 4, s1));
    ASSERT_OK(acrypto_ed25519_sign(a2, "note", 4, s2));
    assert_memory_equal(s1, s2, 64);
    ASSERT_OK(acrypto_ed25519_verify(a_pub, "note", 4, s1, sizeof s1));

    acrypto_secret_free(seed);
    acrypto_ed25519_free(a_pub);
    acrypto_ed25519_free(a2);
    acrypto_ed25519_free(b);
    acrypto_ed25519_free(a);
    assert_null(acrypto_ed25519_free(NULL));
    acrypto_ed25519_freep(NULL);
}

static void test_ed25519_bad_raw_keys(void **state)
{
    acrypto_ed25519_key *untouched = NULL;
    uint8_t pub[33] = {0};
    ASSERT_ERR(acrypto_ed25519_from_public(pub, 31, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_from_public(pub, 33, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_from_public(NULL, 32, &untouched), BASE_ERR_INVALID);
    acrypto_secret *short_seed = NULL;
    ASSERT_OK(acrypto_secret_random(31, &short_seed));
    ASSERT_ERR(acrypto_ed25519_from_seed(short_seed, &untouched), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_from_seed(NULL, &untouched), BASE_ERR_INVALID);
    assert_null(untouched);
    acrypto_secret_free(short_seed);
}

static void test_ed25519_pem_rfc8410(void **state)
{
    acrypto_ed25519_key *priv = NULL, *pub = NULL;
    ASSERT_OK(acrypto_ed25519_private_from_pem(rfc8410_private_pem, strlen(rfc8410_private_pem), &priv));
    ASSERT_OK(acrypto_ed25519_public_from_pem(rfc8410_public_pem, strlen(rfc8410_public_pem), &pub));
    assert_true(acrypto_ed25519_has_private(priv));
    assert_false(acrypto_ed25519_has_private(pub));

    uint8_t want_seed[32], want_pub[32], raw[32];
    unhex(rfc8410_seed, want_seed, sizeof want_seed);
    unhex(rfc8410_pub, want_pub, sizeof want_pub);
    acrypto_secret *seed = NULL;
    ASSERT_OK(acrypto_ed25519_private_seed(priv, &seed));
    assert_memory_equal(acrypto_secret_bytes(seed), want_seed, 32);
    ASSERT_OK(acrypto_ed25519_public_raw(priv, raw));
    assert_memory_equal(raw, want_pub, 32);
    ASSERT_OK(acrypto_ed25519_public_raw(pub, raw));
    assert_memory_equal(raw, want_pub, 32);

    uint8_t sig[64];
    ASSERT_OK(acrypto_ed25519_sign(priv, "destruction certificate", 23, sig));
    ASSERT_OK(acrypto_ed25519_verify(pub, "destruction certificate", 23, sig, sizeof sig));

    /* Export gives back the RFC's PEM text byte for byte. */
    acrypto_secret *pem = NULL;
    ASSERT_OK(acrypto_ed25519_private_to_pem(priv, &pem));
    assert_string_equal((const char *)acrypto_secret_bytes(pem), rfc8410_private_pem);
    assert_int_equal(acrypto_secret_len(pem), strlen(rfc8410_private_pem));
    char *pub_pem = NULL;
    size_t pub_pem_len = 0;
    ASSERT_OK(acrypto_ed25519_public_to_pem(priv, &pub_pem, &pub_pem_len));
    assert_string_equal(pub_pem, rfc8410_public_pem);
    assert_int_equal(pub_pem_len, strlen(rfc8410_public_pem));
    free(pub_pem);
    ASSERT_OK(acrypto_ed25519_public_to_pem(pub, &pub_pem, &pub_pem_len));
    assert_string_equal(pub_pem, rfc8410_public_pem);
    free(pub_pem);
    acrypto_secret *no_pem = NULL;
    ASSERT_ERR(acrypto_ed25519_private_to_pem(pub, &no_pem), BASE_ERR_INVALID);
    assert_null(no_pem);

    acrypto_secret_free(pem);
    acrypto_secret_free(seed);
    acrypto_ed25519_free(pub);
    acrypto_ed25519_free(priv);
}

static void test_ed25519_pem_rejects(void **state)
{
    acrypto_ed25519_key *k = NULL;
    /* Another key type, an encrypted key (no passphrase prompt: it just fails), the wrong PEM kind, garbage.
     */
    ASSERT_ERR(acrypto_ed25519_private_from_pem(x25519_private_pem, strlen(x25519_private_pem), &k),
               BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_private_from_pem(encrypted_pem, strlen(encrypted_pem), &k), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_private_from_pem(rfc8410_public_pem, strlen(rfc8410_public_pem), &k),
               BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_public_from_pem(rfc8410_private_pem, strlen(rfc8410_private_pem), &k),
               BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_private_from_pem("not a pem", 9, &k), BASE_ERR_INVALID);
    ASSERT_ERR(acrypto_ed25519_private_from_pem("", 0, &k), BASE_ERR_INVALID);
    /* A corrupted body (one base64 character changed). */
    char bad[sizeof rfc8410_private_pem];
    memcpy(bad, rfc8410_private_pem, sizeof bad);
    bad[40] = (char)(bad[40] == 'A' ? 'B' : 'A');
    acrypto_ed25519_key *maybe = NULL;
    base_result r = acrypto_ed25519_private_from_pem(bad, strlen(bad), &maybe);
    if (base_is_ok(r)) { /* the change fell inside the seed: a different, valid key */
        uint8_t raw[32], want[32];
        ASSERT_OK(acrypto_ed25519_public_raw(maybe, raw));
        unhex(rfc8410_pub, want, sizeof want);
        assert_memory_not_equal(raw, want, 32);
        acrypto_ed25519_free(maybe);
    } else {
        assert_int_equal(r.err, BASE_ERR_INVALID);
        assert_false(acrypto__ossl_errors_pending());
    }
    /* The message never echoes the PEM. */
    ASSERT_ERR(acrypto_ed25519_private_from_pem(x25519_private_pem, strlen(x25519_private_pem), &k),
               BASE_ERR_INVALID);
    assert_null(strstr(base_error_message(), "MC4C"));
    assert_null(k);
}

static char tmp_dir[64];

static const char *write_tmp(const char *name, const char *text, size_t len)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

static int make_tmp_dir(void **state)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/alma-crypto-test-XXXXXX");
    return mkdtemp(tmp_dir) == NULL ? -1 : 0;
}

static int remove_tmp_dir(void **state)
{
    const char *names[] = {"priv.pem", "pub.pem", "big.pem", "x25519.pem"};
    char path[128];
    for (size_t i = 0; i < BASE_ARRAY_LEN(names); i++) {
        snprintf(path, sizeof path, "%s/%s", tmp_dir, names[i]);
        unlink(path);
    }
    return rmdir(tmp_dir);
}

static void test_ed25519_pem_files(void **state)
{
    acrypto_ed25519_key *priv = NULL, *pub = NULL, *k = NULL;
    ASSERT_OK(acrypto_ed25519_private_from_pem_file(
        write_tmp("priv.pem", rfc8410_private_pem, strlen(rfc8410_private_pem)), &priv));
    ASSERT_OK(acrypto_ed25519_public_from_pem_file(
        write_tmp("pub.pem", rfc8410_public_pem, strlen(rfc8410_public_pem)), &pub));
    uint8_t sig[64];
    ASSERT_OK(acrypto_ed25519_sign(priv, "x", 1, sig));
    ASSERT_OK(acrypto_ed25519_verify(pub, "x", 1, sig, sizeof sig));

    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing.pem", tmp_dir);
    ASSERT_ERR(acrypto_ed25519_private_from_pem_file(missing, &k), BASE_ERR_NOT_FOUND);
    ASSERT_ERR(acrypto_ed25519_private_from_pem_file(tmp_dir, &k), BASE_ERR_INVALID); /* a directory */
    ASSERT_ERR(acrypto_ed25519_private_from_pem_file(
                   write_tmp("x25519.pem", x25519_private_pem, strlen(x25519_private_pem)), &k),
               BASE_ERR_INVALID);
    /* Larger than ACRYPTO_PEM_FILE_MAX: refused without parsing. */
    size_t big_len = ACRYPTO_PEM_FILE_MAX + 1;
    char *big = malloc(big_len);
    assert_non_null(big);
    memset(big, '\n', big_len);
    memcpy(big, rfc8410_private_pem, strlen(rfc8410_private_pem));
    ASSERT_ERR(acrypto_ed25519_private_from_pem_file(write_tmp("big.pem", big, big_len), &k), BASE_ERR_LIMIT);
    ASSERT_ERR(acrypto_ed25519_private_from_pem(big, big_len, &k), BASE_ERR_LIMIT);
    /* Exactly at the limit is fine. */
    ASSERT_OK(acrypto_ed25519_private_from_pem_file(write_tmp("big.pem", big, big_len - 1), &k));
    free(big);
    acrypto_ed25519_free(k);
    acrypto_ed25519_free(pub);
    acrypto_ed25519_free(priv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ed25519_rfc8032_vectors),
        cmocka_unit_test(test_ed25519_rejects_tampering),
        cmocka_unit_test(test_ed25519_generate_round_trip),
        cmocka_unit_test(test_ed25519_bad_raw_keys),
        cmocka_unit_test(test_ed25519_pem_rfc8410),
        cmocka_unit_test(test_ed25519_pem_rejects),
        cmocka_unit_test_setup_teardown(test_ed25519_pem_files, make_tmp_dir, remove_tmp_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
