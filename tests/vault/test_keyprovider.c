/* The vault's master-key providers (keyprovider.h): file and env specs, key text formats, the file mode
 * check, the provider id, wrap/unwrap bound to associated data. */
#include "crypto/crypto.h"
#include "keyprovider.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)
#define EXPECT_ERR(expr, want)                                                                               \
    do {                                                                                                     \
        base_result exp_r__ = (expr);                                                                        \
        if (exp_r__.err != (want))                                                                           \
            fail_msg("%s: got %s (%s), want %s", #expr, base_err_name(exp_r__.err), base_error_message(),    \
                     base_err_name(want));                                                                   \
    } while (0)

/* 32 bytes 0x00..0x1f in both spellings. */
#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static char g_dir[64];

static const char *write_key(const char *name, const char *text, mode_t mode)
{
    static char path[8][128];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 128, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

static const char *spec_of(const char *path)
{
    static char spec[160];
    snprintf(spec, sizeof spec, "file:%s", path);
    return spec;
}

static void round_trip(vault_keyprovider *p)
{
    acrypto_secret *key = NULL, *back = NULL;
    uint8_t *w = NULL;
    size_t wlen = 0;
    MUST(acrypto_secret_random(32, &key));
    MUST(vault_keyprovider_wrap(p, "ad-1", 4, key, &w, &wlen));
    assert_int_equal(wlen, 32 + ACRYPTO_GCM_OVERHEAD);
    MUST(vault_keyprovider_unwrap(p, "ad-1", 4, w, wlen, &back));
    assert_int_equal(acrypto_secret_len(back), 32);
    assert_memory_equal(acrypto_secret_bytes(back), acrypto_secret_bytes(key), 32);
    acrypto_secret_free(back);
    back = NULL;
    EXPECT_ERR(vault_keyprovider_unwrap(p, "ad-2", 4, w, wlen, &back), BASE_ERR_CRYPTO);
    assert_null(back);
    w[wlen - 1] ^= 1;
    EXPECT_ERR(vault_keyprovider_unwrap(p, "ad-1", 4, w, wlen, &back), BASE_ERR_CRYPTO);
    EXPECT_ERR(vault_keyprovider_unwrap(p, "ad-1", 4, w, 10, &back), BASE_ERR_CRYPTO);
    assert_null(back);
    free(w);
    acrypto_secret_free(key);
}

static void test_file_provider(void **state)
{
    (void)state;
    vault_keyprovider *a = NULL, *b = NULL;
    MUST(vault_keyprovider_open(spec_of(write_key("hex", KEY_HEX "\n", 0600)), &a));
    MUST(vault_keyprovider_open(spec_of(write_key("b64", KEY_B64 " \r\n", 0400)), &b));
    const char *id = vault_keyprovider_id(a);
    assert_int_equal(strlen(id), 5 + 16);
    assert_memory_equal(id, "file:", 5);
    for (size_t i = 5; i < strlen(id); i++)
        assert_non_null(strchr("0123456789abcdef", id[i]));
    assert_string_equal(vault_keyprovider_id(a), vault_keyprovider_id(b)); /* same key, two spellings */
    round_trip(a);
    /* What a wraps, b (same master key) unwraps. */
    acrypto_secret *key = NULL, *back = NULL;
    uint8_t *w = NULL;
    size_t wlen = 0;
    MUST(acrypto_secret_random(16, &key));
    MUST(vault_keyprovider_wrap(a, "x", 1, key, &w, &wlen));
    MUST(vault_keyprovider_unwrap(b, "x", 1, w, wlen, &back));
    assert_memory_equal(acrypto_secret_bytes(back), acrypto_secret_bytes(key), 16);
    acrypto_secret_free(back);
    /* Upper-case hex is the same key. */
    char upper[80];
    snprintf(upper, sizeof upper, "%s", KEY_HEX);
    for (char *c = upper; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    vault_keyprovider *u = NULL;
    MUST(vault_keyprovider_open(spec_of(write_key("upper", upper, 0600)), &u));
    assert_string_equal(vault_keyprovider_id(u), vault_keyprovider_id(a));
    vault_keyprovider_free(u);
    free(w);
    acrypto_secret_free(key);
    vault_keyprovider_free(a);
    vault_keyprovider_free(b);
}

static void test_file_refusals(void **state)
{
    (void)state;
    vault_keyprovider *p = NULL;
    EXPECT_ERR(vault_keyprovider_open(spec_of(write_key("open", KEY_HEX, 0660)), &p), BASE_ERR_DENIED);
    EXPECT_ERR(vault_keyprovider_open(spec_of(write_key("world", KEY_HEX, 0604)), &p), BASE_ERR_DENIED);
    /* A Kubernetes Secret through fsGroup: group-readable, nothing else. */
    assert_true(base_is_ok(vault_keyprovider_open(spec_of(write_key("fsgroup", KEY_HEX, 0440)), &p)));
    vault_keyprovider_free(p);
    p = NULL;
    EXPECT_ERR(vault_keyprovider_open(spec_of(write_key("short", "AAEC", 0600)), &p), BASE_ERR_INVALID);
    const char *junk = "not a key at all but fairly long text that is no base64 ###";
    EXPECT_ERR(vault_keyprovider_open(spec_of(write_key("junk", junk, 0600)), &p), BASE_ERR_INVALID);
    assert_null(strstr(base_error_message(), "fairly long"));
    /* 33 bytes of base64 */
    EXPECT_ERR(vault_keyprovider_open(
                   spec_of(write_key("long", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", 0600)), &p),
               BASE_ERR_INVALID);
    char big[4000];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    EXPECT_ERR(vault_keyprovider_open(spec_of(write_key("big", big, 0600)), &p), BASE_ERR_INVALID);
    char missing[160];
    snprintf(missing, sizeof missing, "file:%s/nope", g_dir);
    EXPECT_ERR(vault_keyprovider_open(missing, &p), BASE_ERR_IO);
    EXPECT_ERR(vault_keyprovider_open("file:", &p), BASE_ERR_INVALID);
    EXPECT_ERR(vault_keyprovider_open("kms:whatever", &p), BASE_ERR_INVALID);
    EXPECT_ERR(vault_keyprovider_open("", &p), BASE_ERR_INVALID);
    assert_null(p);
}

static void test_env_provider(void **state)
{
    (void)state;
    vault_keyprovider *e = NULL, *f = NULL, *p = NULL;
    assert_int_equal(setenv("ALMA_TEST_VAULT_KEY_1", KEY_B64, 1), 0);
    MUST(vault_keyprovider_open("env:ALMA_TEST_VAULT_KEY_1", &e));
    MUST(vault_keyprovider_open(spec_of(write_key("envsame", KEY_HEX, 0600)), &f));
    const char *eid = vault_keyprovider_id(e), *fid = vault_keyprovider_id(f);
    assert_memory_equal(eid, "env:", 4);
    assert_string_equal(eid + 4, fid + 5); /* the same fingerprint behind another scheme */
    round_trip(e);
    unsetenv("ALMA_TEST_VAULT_KEY_UNSET");
    EXPECT_ERR(vault_keyprovider_open("env:ALMA_TEST_VAULT_KEY_UNSET", &p), BASE_ERR_IO);
    EXPECT_ERR(vault_keyprovider_open("env:lower_case", &p), BASE_ERR_INVALID);
    EXPECT_ERR(vault_keyprovider_open("env:1ABC", &p), BASE_ERR_INVALID);
    EXPECT_ERR(vault_keyprovider_open("env:", &p), BASE_ERR_INVALID);
    assert_int_equal(setenv("ALMA_TEST_VAULT_KEY_2", "secret-looking-garbage", 1), 0);
    EXPECT_ERR(vault_keyprovider_open("env:ALMA_TEST_VAULT_KEY_2", &p), BASE_ERR_INVALID);
    assert_null(strstr(base_error_message(), "garbage"));
    assert_null(p);
    vault_keyprovider_free(e);
    vault_keyprovider_free(f);
}

static void test_mem_provider(void **state)
{
    (void)state;
    acrypto_secret *m1 = NULL, *m2 = NULL, *bad = NULL, *key = NULL, *back = NULL;
    MUST(acrypto_secret_random(32, &m1));
    MUST(acrypto_secret_random(32, &m2));
    MUST(acrypto_secret_random(16, &bad));
    vault_keyprovider *a = NULL, *b = NULL, *p = NULL;
    MUST(vault_keyprovider_from_secret(m1, &a));
    MUST(vault_keyprovider_from_secret(m2, &b));
    EXPECT_ERR(vault_keyprovider_from_secret(bad, &p), BASE_ERR_INVALID);
    assert_memory_equal(vault_keyprovider_id(a), "mem:", 4);
    assert_string_not_equal(vault_keyprovider_id(a), vault_keyprovider_id(b));
    round_trip(a);
    uint8_t *w = NULL;
    size_t wlen = 0;
    MUST(acrypto_secret_random(32, &key));
    MUST(vault_keyprovider_wrap(a, "k", 1, key, &w, &wlen));
    EXPECT_ERR(vault_keyprovider_unwrap(b, "k", 1, w, wlen, &back), BASE_ERR_CRYPTO); /* another master */
    assert_null(back);
    acrypto_secret *empty = NULL, *huge = NULL;
    uint8_t *w2 = NULL;
    size_t w2len = 0;
    MUST(acrypto_secret_new(0, &empty));
    MUST(acrypto_secret_new(65, &huge));
    EXPECT_ERR(vault_keyprovider_wrap(a, "k", 1, empty, &w2, &w2len), BASE_ERR_INVALID);
    EXPECT_ERR(vault_keyprovider_wrap(a, "k", 1, huge, &w2, &w2len), BASE_ERR_INVALID);
    assert_null(w2);
    free(w);
    acrypto_secret_free(empty);
    acrypto_secret_free(huge);
    acrypto_secret_free(key);
    acrypto_secret_free(m1);
    acrypto_secret_free(m2);
    acrypto_secret_free(bad);
    vault_keyprovider_free(a);
    vault_keyprovider_free(b);
    vault_keyprovider_free(NULL);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/alma-vkp-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    static const char *names[] = {"hex",   "b64",  "upper", "open", "world",
                                  "short", "junk", "long",  "big",  "envsame"};
    char p[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
        unlink(p);
    }
    rmdir(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_provider),
        cmocka_unit_test(test_file_refusals),
        cmocka_unit_test(test_env_provider),
        cmocka_unit_test(test_mem_provider),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
