/* Credentials (services/identity/credentials.h): argon2id passwords with recorded parameters, the password
 * policy, TOTP against RFC 6238's published vectors and at the edges of its window, replay refusal, the
 * otpauth URI, recovery codes used once, and TOTP secrets sealed to their tenant and principal. Hashing uses
 * small argon2id parameters except in one production-parameter round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "credentials.h"

#include <argon2.h>
#include <liboath/oath.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)

#define FAILS_WITH(expr, code)                                                                               \
    do {                                                                                                     \
        base_result fw_r__ = (expr);                                                                         \
        if (fw_r__.err != (code))                                                                            \
            fail_msg("%s: expected %s, got %s (%s)", #expr, base_err_name(code), base_err_name(fw_r__.err),  \
                     base_error_message());                                                                  \
    } while (0)

static const cred_argon2_params SMALL = {.m_kib = 64, .t = 1, .p = 1};

#define PASSWORD "correct horse battery staple"

static acrypto_secret *secret_of(const char *s)
{
    acrypto_secret *out = NULL;
    MUST(acrypto_secret_from_bytes(s, strlen(s), &out));
    return out;
}

/* ---- passwords ----------------------------------------------------------------------------------------- */

static void test_password_round_trip(void **state)
{
    (void)state;
    char enc[CRED_PASSWORD_HASH_MAX];
    MUST(cred_password_hash(&SMALL, PASSWORD, strlen(PASSWORD), enc));
    assert_true(strncmp(enc, "$argon2id$v=19$m=64,t=1,p=1$", 28) == 0);
    assert_null(strstr(enc, "horse"));
    /* 16-byte salt (22 base64 chars), 32-byte hash (43). */
    const char *salt = enc + 28;
    const char *dollar = strchr(salt, '$');
    assert_non_null(dollar);
    assert_int_equal(dollar - salt, 22);
    assert_int_equal(strlen(dollar + 1), 43);

    bool rehash = true;
    MUST(cred_password_verify(&SMALL, enc, PASSWORD, strlen(PASSWORD), &rehash));
    assert_false(rehash);
    MUST(cred_password_verify(&SMALL, enc, PASSWORD, strlen(PASSWORD), NULL));

    /* Wrong passwords: one character off, a prefix, a longer one, empty. One message for all. */
    FAILS_WITH(cred_password_verify(&SMALL, enc, "correct horse battery staplE", 28, &rehash),
               BASE_ERR_UNAUTH);
    assert_string_equal(base_error_message(), "invalid credentials");
    FAILS_WITH(cred_password_verify(&SMALL, enc, PASSWORD, strlen(PASSWORD) - 1, &rehash), BASE_ERR_UNAUTH);
    FAILS_WITH(cred_password_verify(&SMALL, enc, PASSWORD "!", strlen(PASSWORD) + 1, &rehash),
               BASE_ERR_UNAUTH);
    FAILS_WITH(cred_password_verify(&SMALL, enc, "", 0, &rehash), BASE_ERR_UNAUTH);
    FAILS_WITH(cred_password_verify(&SMALL, enc, NULL, 0, &rehash), BASE_ERR_UNAUTH);

    /* The same password hashes differently each time (fresh salt); both verify. */
    char enc2[CRED_PASSWORD_HASH_MAX];
    MUST(cred_password_hash(&SMALL, PASSWORD, strlen(PASSWORD), enc2));
    assert_string_not_equal(enc, enc2);
    MUST(cred_password_verify(&SMALL, enc2, PASSWORD, strlen(PASSWORD), NULL));

    /* Binary-safe: the length counts, not a NUL. */
    static const char with_nul[] = "abc\0defghijklmn";
    MUST(cred_password_hash(&SMALL, with_nul, sizeof with_nul - 1, enc2));
    MUST(cred_password_verify(&SMALL, enc2, with_nul, sizeof with_nul - 1, NULL));
    FAILS_WITH(cred_password_verify(&SMALL, enc2, "abc", 3, NULL), BASE_ERR_UNAUTH);

    /* Longer than any password the policy allows: refused without hashing. */
    char big[CRED_PASSWORD_MAX_BYTES + 1];
    memset(big, 'x', sizeof big);
    FAILS_WITH(cred_password_verify(&SMALL, enc, big, sizeof big, NULL), BASE_ERR_UNAUTH);
    FAILS_WITH(cred_password_hash(&SMALL, big, sizeof big, enc2), BASE_ERR_INVALID);
}

static void test_password_params_and_rehash(void **state)
{
    (void)state;
    char enc[CRED_PASSWORD_HASH_MAX];
    cred_argon2_params p = {.m_kib = 128, .t = 2, .p = 2};
    MUST(cred_password_hash(&p, PASSWORD, strlen(PASSWORD), enc));
    assert_true(strncmp(enc, "$argon2id$v=19$m=128,t=2,p=2$", 29) == 0);
    cred_argon2_params got = {0};
    MUST(cred_password_params(enc, &got));
    assert_int_equal(got.m_kib, 128);
    assert_int_equal(got.t, 2);
    assert_int_equal(got.p, 2);

    /* needs_rehash when any current parameter is above the recorded one; not when equal or below. */
    const struct {
        cred_argon2_params current;
        bool rehash;
    } cases[] = {
        {{128, 2, 2}, false}, {{64, 1, 1}, false}, {{256, 2, 2}, true},
        {{128, 3, 2}, true},  {{128, 2, 4}, true}, {{64, 1, 4}, true},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        bool rehash = !cases[i].rehash;
        MUST(cred_password_verify(&cases[i].current, enc, PASSWORD, strlen(PASSWORD), &rehash));
        if (rehash != cases[i].rehash)
            fail_msg("case %zu: needs_rehash %d", i, rehash);
        rehash = !cases[i].rehash;
        MUST(cred_password_needs_rehash(&cases[i].current, enc, &rehash));
        assert_true(rehash == cases[i].rehash);
    }

    /* A hash with a shorter salt and output than this module writes (made with libargon2 directly, as an
     * older configuration might have) verifies, and asks to be rehashed even at the same m, t, p. */
    char older[CRED_PASSWORD_HASH_MAX];
    assert_int_equal(
        argon2id_hash_encoded(1, 64, 1, PASSWORD, strlen(PASSWORD), "somesalt", 8, 16, older, sizeof older),
        ARGON2_OK);
    bool rehash = false;
    MUST(cred_password_verify(&SMALL, older, PASSWORD, strlen(PASSWORD), &rehash));
    assert_true(rehash);
    FAILS_WITH(cred_password_verify(&SMALL, older, "not the password", 16, &rehash), BASE_ERR_UNAUTH);
}

static void test_password_production_params(void **state)
{
    (void)state;
    cred_argon2_params prod = cred_argon2_default();
    assert_int_equal(prod.m_kib, 65536);
    assert_int_equal(prod.t, 3);
    assert_int_equal(prod.p, 1);
    char enc[CRED_PASSWORD_HASH_MAX];
    MUST(cred_password_hash(&prod, PASSWORD, strlen(PASSWORD), enc));
    assert_true(strncmp(enc, "$argon2id$v=19$m=65536,t=3,p=1$", 31) == 0);
    bool rehash = true;
    MUST(cred_password_verify(&prod, enc, PASSWORD, strlen(PASSWORD), &rehash));
    assert_false(rehash);
    FAILS_WITH(cred_password_verify(&prod, enc, "wrong password!!", 16, &rehash), BASE_ERR_UNAUTH);

    /* A hash made with the small test parameters is weaker than production: rehash. */
    char weak[CRED_PASSWORD_HASH_MAX];
    MUST(cred_password_hash(&SMALL, PASSWORD, strlen(PASSWORD), weak));
    MUST(cred_password_verify(&prod, weak, PASSWORD, strlen(PASSWORD), &rehash));
    assert_true(rehash);
}

/* Replace the character at offset i of a copy of enc. */
static void tamper(char *dst, const char *enc, size_t i, char c)
{
    snprintf(dst, CRED_PASSWORD_HASH_MAX, "%s", enc);
    dst[i] = c;
}

static char other_b64(char c)
{
    return c == 'A' ? 'B' : 'A';
}

static void test_password_tampered(void **state)
{
    (void)state;
    char enc[CRED_PASSWORD_HASH_MAX];
    MUST(cred_password_hash(&SMALL, PASSWORD, strlen(PASSWORD), enc));
    size_t len = strlen(enc);
    const char *last_dollar = strrchr(enc, '$');
    size_t hash_at = (size_t)(last_dollar - enc) + 1;
    size_t salt_at = 28;
    char t[CRED_PASSWORD_HASH_MAX];

    /* One character of the hash or of the salt changed: the password no longer verifies. */
    tamper(t, enc, hash_at + 10, other_b64(enc[hash_at + 10]));
    FAILS_WITH(cred_password_verify(&SMALL, t, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_UNAUTH);
    tamper(t, enc, hash_at, other_b64(enc[hash_at]));
    FAILS_WITH(cred_password_verify(&SMALL, t, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_UNAUTH);
    tamper(t, enc, salt_at + 3, other_b64(enc[salt_at + 3]));
    FAILS_WITH(cred_password_verify(&SMALL, t, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_UNAUTH);

    /* The recorded parameters are part of what is verified: m=64 -> m=72, t=1 -> t=2, p=1 -> p=2. */
    tamper(t, enc, 18, '2'); /* "m=64" -> "m=62" */
    FAILS_WITH(cred_password_verify(&SMALL, t, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_UNAUTH);
    tamper(t, enc, 22, '2'); /* "t=1" -> "t=2" */
    assert_int_equal(strncmp(t, "$argon2id$v=19$m=64,t=2,p=1$", 28), 0);
    FAILS_WITH(cred_password_verify(&SMALL, t, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_UNAUTH);
    tamper(t, enc, 26, '2'); /* "p=1" -> "p=2" */
    assert_int_equal(strncmp(t, "$argon2id$v=19$m=64,t=1,p=2$", 28), 0);
    FAILS_WITH(cred_password_verify(&SMALL, t, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_UNAUTH);

    /* A non-canonical last hash character (unused low bits set) is refused as malformed, not accepted as
     * the same hash. 43 characters: the last carries 2 bits and 4 unused ones. */
    assert_int_equal(len - hash_at, 43);
    char last = enc[len - 1];
    char noncanon = (char)(last == 'A' ? 'B' : (last == 'Q' ? 'R' : (last == 'g' ? 'h' : 'x')));
    tamper(t, enc, len - 1, noncanon);
    FAILS_WITH(cred_password_verify(&SMALL, t, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_INTERNAL);

    /* Malformed strings: never OK, INTERNAL (data problem), and quick. */
    static const char *const bad[] = {
        "",
        "plain text password",
        "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2d$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=16$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=064,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=0,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=0,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=1,p=0$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=8,t=1,p=2$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        /* 4 GiB + 1 KiB, 2^32, a huge t: must be refused before libargon2 tries to allocate or loop. */
        "$argon2id$v=19$m=4194305,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=4294967296,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$"
        "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=4000000,p=1$c29tZXNhbHRzb21lc2FsdA$"
        "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        /* salt too short (4 bytes), hash too short (8 bytes), padding, bad characters, missing parts */
        "$argon2id$v=19$m=64,t=1,p=1$c29tZQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA==$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRz-21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA",
        "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$",
        "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g$",
        "$argon2id$v=19$m=64,t=1,p=1,k=2$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        base_result r = cred_password_verify(&SMALL, bad[i], PASSWORD, strlen(PASSWORD), NULL);
        if (r.err != BASE_ERR_INTERNAL)
            fail_msg("bad[%zu]: expected internal, got %s", i, base_err_name(r.err));
        assert_null(strstr(base_error_message(), "horse"));
        cred_argon2_params p;
        FAILS_WITH(cred_password_params(bad[i], &p), BASE_ERR_INTERNAL);
    }
    FAILS_WITH(cred_password_verify(&SMALL, NULL, PASSWORD, strlen(PASSWORD), NULL), BASE_ERR_INTERNAL);

    /* A well-formed string of the right shape whose bytes were never a hash of this password. */
    FAILS_WITH(
        cred_password_verify(
            &SMALL,
            "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            PASSWORD, strlen(PASSWORD), NULL),
        BASE_ERR_UNAUTH);
}

static void test_password_unknown_user(void **state)
{
    (void)state;
    FAILS_WITH(cred_password_verify_unknown(&SMALL, PASSWORD, strlen(PASSWORD)), BASE_ERR_UNAUTH);
    assert_string_equal(base_error_message(), "invalid credentials");
    FAILS_WITH(cred_password_verify_unknown(&SMALL, "", 0), BASE_ERR_UNAUTH);
    cred_argon2_params bad = {.m_kib = 4, .t = 1, .p = 1};
    FAILS_WITH(cred_password_verify_unknown(&bad, PASSWORD, strlen(PASSWORD)), BASE_ERR_INVALID);
    char enc[CRED_PASSWORD_HASH_MAX];
    FAILS_WITH(cred_password_hash(&bad, PASSWORD, strlen(PASSWORD), enc), BASE_ERR_INVALID);
    bad = (cred_argon2_params){.m_kib = 64, .t = 0, .p = 1};
    FAILS_WITH(cred_password_hash(&bad, PASSWORD, strlen(PASSWORD), enc), BASE_ERR_INVALID);
    bad = (cred_argon2_params){.m_kib = CRED_ARGON2_MAX_M_KIB + 1, .t = 1, .p = 1};
    FAILS_WITH(cred_password_hash(&bad, PASSWORD, strlen(PASSWORD), enc), BASE_ERR_INVALID);
}

/* A policy failure: INVALID, and the message contains neither the password nor the username. */
static void policy_fails(const char *pw, size_t len, const char *username, const char *why)
{
    base_result r = cred_password_check_policy(pw, len, username);
    if (r.err != BASE_ERR_INVALID)
        fail_msg("policy accepted a password (%s)", why);
    const char *msg = base_error_message();
    if (strstr(msg, why) == NULL)
        fail_msg("message \"%s\" does not say \"%s\"", msg, why);
    if (len > 0 && memmem(msg, strlen(msg), pw, len) != NULL)
        fail_msg("message echoes the password");
    if (len >= 4 && memmem(msg, strlen(msg), pw, 4) != NULL)
        fail_msg("message echoes part of the password");
    if (username != NULL && strstr(msg, username) != NULL)
        fail_msg("message echoes the username");
}

static void test_password_policy(void **state)
{
    (void)state;
    MUST(cred_password_check_policy("Tr0ub4dor&3x", 12, "alice"));
    MUST(cred_password_check_policy(PASSWORD, strlen(PASSWORD), NULL));
    MUST(cred_password_check_policy("aaaaaaaaaaab", 12, "alice"));
    MUST(cred_password_check_policy("pässwörd-ünd-mehr", strlen("pässwörd-ünd-mehr"), "alice"));
    MUST(cred_password_check_policy("alice.smith@x1", 14, "alice.smith@x"));

    policy_fails("Zq8#mP2!vL4", 11, "alice", "at least 12 bytes");
    policy_fails("", 0, "alice", "at least 12 bytes");
    /* Bytes, not characters: 6 two-byte characters = 12 bytes passes, 5 fail. */
    MUST(cred_password_check_policy("äöüßéè", strlen("äöüßéè"), NULL));
    policy_fails("äöüßé", strlen("äöüßé"), NULL, "at least 12 bytes");

    char longest[CRED_PASSWORD_MAX_BYTES + 1];
    for (size_t i = 0; i < sizeof longest; i++)
        longest[i] = (char)('a' + i % 26);
    MUST(cred_password_check_policy(longest, CRED_PASSWORD_MAX_BYTES, NULL));
    policy_fails(longest, CRED_PASSWORD_MAX_BYTES + 1, NULL, "at most 256 bytes");

    policy_fails("Secret\xff password", 16, NULL, "valid UTF-8");
    policy_fails("Secret\xc0\xafpassword", 16, NULL, "valid UTF-8");     /* overlong '/' */
    policy_fails("Secret\xed\xa0\x80password", 17, NULL, "valid UTF-8"); /* surrogate */
    policy_fails("Secret password\xe2\x82", 17, NULL, "valid UTF-8");    /* cut short */
    policy_fails("Secret\0password12", 18, NULL, "NUL");

    policy_fails("aaaaaaaaaaaa", 12, NULL, "single character");
    policy_fails("éééééééééééé", strlen("éééééééééééé"), NULL, "single character");
    policy_fails("😀😀😀😀", strlen("😀😀😀😀"), NULL, "single character");

    policy_fails("alice.smith@example.org", 23, "alice.smith@example.org", "username");
    policy_fails("ALICE.SMITH@Example.org", 23, "alice.smith@example.org", "username");
}

/* ---- TOTP ---------------------------------------------------------------------------------------------- */

#define RFC_SEED "12345678901234567890"

static void test_totp_rfc6238_vectors(void **state)
{
    (void)state;
    /* RFC 6238 Appendix B, SHA1 column (8 digits). */
    static const struct {
        int64_t t;
        const char *code;
    } v[] = {
        {59, "94287082"},         {1111111109, "07081804"}, {1111111111, "14050471"},
        {1234567890, "89005924"}, {2000000000, "69279037"}, {20000000000, "65353130"},
    };
    acrypto_secret *seed = secret_of(RFC_SEED);
    char code[CRED_TOTP_CODE_MAX + 1];
    for (size_t i = 0; i < BASE_ARRAY_LEN(v); i++) {
        MUST(cred_totp_code(seed, v[i].t, 8, code));
        assert_string_equal(code, v[i].code);
        /* The product's 6 digits are the same truncation mod 10^6: the last six. */
        MUST(cred_totp_code(seed, v[i].t, 6, code));
        assert_string_equal(code, v[i].code + 2);
    }
    /* Step boundaries: 59 and 60 are different steps, 30 and 59 the same. */
    char a[CRED_TOTP_CODE_MAX + 1], b[CRED_TOTP_CODE_MAX + 1];
    MUST(cred_totp_code(seed, 30, 6, a));
    MUST(cred_totp_code(seed, 59, 6, b));
    assert_string_equal(a, b);
    MUST(cred_totp_code(seed, 60, 6, b));
    assert_string_not_equal(a, b);

    FAILS_WITH(cred_totp_code(seed, 59, 5, code), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_code(seed, 59, 9, code), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_code(seed, -1, 6, code), BASE_ERR_INVALID);
    acrypto_secret *short_secret = secret_of("0123456789");
    FAILS_WITH(cred_totp_code(short_secret, 59, 6, code), BASE_ERR_INVALID);
    acrypto_secret_free(short_secret);
    acrypto_secret_free(seed);
}

static void test_totp_window_and_replay(void **state)
{
    (void)state;
    acrypto_secret *seed = secret_of(RFC_SEED);
    const int64_t now = 1700000015; /* 5 s into step 56666667 */
    const int64_t step = now / 30;
    char codes[5][CRED_TOTP_CODE_MAX + 1];
    for (int k = -2; k <= 2; k++)
        MUST(cred_totp_code(seed, now + 30 * k, 6, codes[k + 2]));
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            assert_string_not_equal(codes[i], codes[j]); /* else the edges below prove nothing */

    int64_t got = -1;
    FAILS_WITH(cred_totp_verify(seed, codes[0], now, 0, &got), BASE_ERR_UNAUTH); /* -2 steps */
    FAILS_WITH(cred_totp_verify(seed, codes[4], now, 0, &got), BASE_ERR_UNAUTH); /* +2 steps */
    assert_int_equal(got, -1);
    for (int k = -1; k <= 1; k++) {
        MUST(cred_totp_verify(seed, codes[k + 2], now, 0, &got));
        assert_int_equal(got, step + k);
    }
    /* At the very start and end of the current step the same three steps are accepted. */
    MUST(cred_totp_verify(seed, codes[1], step * 30, 0, &got));
    assert_int_equal(got, step - 1);
    MUST(cred_totp_verify(seed, codes[3], step * 30 + 29, 0, &got));
    assert_int_equal(got, step + 1);
    FAILS_WITH(cred_totp_verify(seed, codes[0], step * 30, 0, &got), BASE_ERR_UNAUTH);
    FAILS_WITH(cred_totp_verify(seed, codes[4], step * 30 + 29, 0, &got), BASE_ERR_UNAUTH);

    /* Replay: once step s is accepted, its code and earlier ones are refused; a later one is accepted. */
    int64_t last = 0;
    MUST(cred_totp_verify(seed, codes[2], now, last, &last));
    assert_int_equal(last, step);
    got = -1;
    FAILS_WITH(cred_totp_verify(seed, codes[2], now, last, &got), BASE_ERR_UNAUTH);
    assert_string_equal(base_error_message(), "one-time code already used");
    FAILS_WITH(cred_totp_verify(seed, codes[2], now + 20, last, &got), BASE_ERR_UNAUTH);
    FAILS_WITH(cred_totp_verify(seed, codes[1], now, last, &got), BASE_ERR_UNAUTH);
    assert_int_equal(got, -1);
    MUST(cred_totp_verify(seed, codes[3], now, last, &last));
    assert_int_equal(last, step + 1);
    FAILS_WITH(cred_totp_verify(seed, codes[3], now + 30, last, &got), BASE_ERR_UNAUTH);
    FAILS_WITH(cred_totp_verify(seed, codes[2], now + 30, last, &got), BASE_ERR_UNAUTH);
    /* The next step's code, once its time has come. */
    char next[CRED_TOTP_CODE_MAX + 1];
    MUST(cred_totp_code(seed, now + 60, 6, next));
    MUST(cred_totp_verify(seed, next, now + 60, last, &last));
    assert_int_equal(last, step + 2);

    /* A code one digit off (first or last) is refused: every digit is compared. */
    char off[CRED_TOTP_CODE_MAX + 1];
    snprintf(off, sizeof off, "%s", codes[2]);
    off[5] = (char)(off[5] == '9' ? '0' : off[5] + 1);
    FAILS_WITH(cred_totp_verify(seed, off, now, 0, &got), BASE_ERR_UNAUTH);
    snprintf(off, sizeof off, "%s", codes[2]);
    off[0] = (char)(off[0] == '9' ? '0' : off[0] + 1);
    FAILS_WITH(cred_totp_verify(seed, off, now, 0, &got), BASE_ERR_UNAUTH);

    /* Malformed codes and a wrong secret. */
    static const char *const bad[] = {"", "12345", "1234567", "12345a", " 12345", "123 45", "+12345"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++)
        FAILS_WITH(cred_totp_verify(seed, bad[i], now, 0, &got), BASE_ERR_UNAUTH);
    FAILS_WITH(cred_totp_verify(seed, NULL, now, 0, &got), BASE_ERR_UNAUTH);
    acrypto_secret *other = secret_of("12345678901234567891");
    FAILS_WITH(cred_totp_verify(other, codes[2], now, 0, &got), BASE_ERR_UNAUTH);
    acrypto_secret_free(other);
    FAILS_WITH(cred_totp_verify(seed, codes[2], -5, 0, &got), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_verify(seed, codes[2], now, -1, &got), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_verify(NULL, codes[2], now, 0, &got), BASE_ERR_INVALID);
    acrypto_secret_free(seed);
}

/* A code valid for two steps of the window (found by searching secrets: "alma-collision-72751" gives
 * 651872 for both step - 1 and step + 1 at this time): it counts for the latest, so it cannot be replayed
 * as the earlier one after being accepted as the later. */
static void test_totp_same_code_two_steps(void **state)
{
    (void)state;
    acrypto_secret *seed = secret_of("alma-collision-72751");
    const int64_t now = 1700000015;
    const int64_t step = now / 30;
    char c[CRED_TOTP_CODE_MAX + 1];
    MUST(cred_totp_code(seed, now - 30, 6, c));
    assert_string_equal(c, "651872");
    MUST(cred_totp_code(seed, now + 30, 6, c));
    assert_string_equal(c, "651872");
    MUST(cred_totp_code(seed, now, 6, c));
    assert_string_not_equal(c, "651872");

    int64_t got = 0;
    MUST(cred_totp_verify(seed, "651872", now, 0, &got));
    assert_int_equal(got, step + 1);
    MUST(cred_totp_verify(seed, "651872", now, step, &got));
    assert_int_equal(got, step + 1);
    FAILS_WITH(cred_totp_verify(seed, "651872", now, step + 1, &got), BASE_ERR_UNAUTH);
    assert_string_equal(base_error_message(), "one-time code already used");
    acrypto_secret_free(seed);
}

static void test_totp_secret_and_uri(void **state)
{
    (void)state;
    acrypto_secret *seed = secret_of(RFC_SEED);
    acrypto_secret *uri = NULL;
    MUST(cred_totp_uri(seed, "acme-clinic", "alice@example.org", &uri));
    assert_string_equal(
        (const char *)acrypto_secret_bytes(uri),
        "otpauth://totp/Alma:acme-clinic:alice%40example.org"
        "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Alma&algorithm=SHA1&digits=6&period=30");
    assert_int_equal(acrypto_secret_len(uri), strlen((const char *)acrypto_secret_bytes(uri)));
    acrypto_secret_free(uri);

    /* Label parts are percent-encoded (a ':' inside a part cannot split the label), unreserved kept. */
    MUST(cred_totp_uri(seed, "t:1", "a b/c~d_e.f-g+ü", &uri));
    assert_string_equal(
        (const char *)acrypto_secret_bytes(uri),
        "otpauth://totp/Alma:t%3A1:a%20b%2Fc~d_e.f-g%2B%C3%BC"
        "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Alma&algorithm=SHA1&digits=6&period=30");
    acrypto_secret_free(uri);

    /* A fresh secret: 20 bytes, differs each time; its URI's base32 decodes (liboath) to the same bytes,
     * without padding. */
    acrypto_secret *s1 = NULL, *s2 = NULL;
    MUST(cred_totp_secret_new(&s1));
    MUST(cred_totp_secret_new(&s2));
    assert_int_equal(acrypto_secret_len(s1), CRED_TOTP_SECRET_LEN);
    assert_memory_not_equal(acrypto_secret_bytes(s1), acrypto_secret_bytes(s2), CRED_TOTP_SECRET_LEN);
    MUST(cred_totp_uri(s1, "acme", "bob", &uri));
    const char *u = (const char *)acrypto_secret_bytes(uri);
    const char *b32 = strstr(u, "?secret=") + 8;
    const char *amp = strchr(b32, '&');
    assert_int_equal(amp - b32, 32);
    assert_null(memchr(b32, '=', (size_t)(amp - b32)));
    assert_int_equal(oath_init(), OATH_OK);
    char *decoded = NULL;
    size_t decoded_len = 0;
    assert_int_equal(oath_base32_decode(b32, (size_t)(amp - b32), &decoded, &decoded_len), OATH_OK);
    assert_int_equal(decoded_len, CRED_TOTP_SECRET_LEN);
    assert_memory_equal(decoded, acrypto_secret_bytes(s1), CRED_TOTP_SECRET_LEN);
    acrypto_wipe(decoded, decoded_len);
    free(decoded);
    acrypto_secret_free(uri);

    /* A 16-byte secret (26 base32 characters, where RFC 4648 would pad with six '='). */
    acrypto_secret *s16 = secret_of("0123456789abcdef");
    MUST(cred_totp_uri(s16, "acme", "bob", &uri));
    assert_non_null(strstr((const char *)acrypto_secret_bytes(uri), "?secret=GAYTEMZUGU3DOOBZMFRGGZDFMY&"));
    acrypto_secret_free(uri);
    acrypto_secret_free(s16);

    FAILS_WITH(cred_totp_uri(seed, "", "bob", &uri), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_uri(seed, "acme", NULL, &uri), BASE_ERR_INVALID);
    char longname[CRED_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    FAILS_WITH(cred_totp_uri(seed, "acme", longname, &uri), BASE_ERR_INVALID);
    acrypto_secret_free(s1);
    acrypto_secret_free(s2);
    acrypto_secret_free(seed);
}

static void test_totp_sealed(void **state)
{
    (void)state;
    acrypto_secret *key = NULL, *key2 = NULL, *sa = NULL, *sb = NULL;
    MUST(acrypto_secret_random(32, &key));
    MUST(acrypto_secret_random(32, &key2));
    MUST(cred_totp_secret_new(&sa));
    MUST(cred_totp_secret_new(&sb));

    uint8_t *blob_a = NULL, *blob_b = NULL;
    size_t len_a = 0, len_b = 0;
    MUST(cred_totp_seal(key, "acme", "usr_a", sa, &blob_a, &len_a));
    MUST(cred_totp_seal(key, "acme", "usr_b", sb, &blob_b, &len_b));
    assert_int_equal(len_a, CRED_TOTP_SECRET_LEN + ACRYPTO_GCM_OVERHEAD);
    assert_null(memmem(blob_a, len_a, acrypto_secret_bytes(sa), CRED_TOTP_SECRET_LEN));

    acrypto_secret *out = NULL;
    MUST(cred_totp_open(key, "acme", "usr_a", blob_a, len_a, &out));
    assert_int_equal(acrypto_secret_len(out), CRED_TOTP_SECRET_LEN);
    assert_memory_equal(acrypto_secret_bytes(out), acrypto_secret_bytes(sa), CRED_TOTP_SECRET_LEN);
    out = acrypto_secret_free(out);

    /* Moved to another principal, another tenant, swapped between rows, wrong key, tampered, truncated. */
    FAILS_WITH(cred_totp_open(key, "acme", "usr_b", blob_a, len_a, &out), BASE_ERR_CRYPTO);
    FAILS_WITH(cred_totp_open(key, "acme", "usr_a", blob_b, len_b, &out), BASE_ERR_CRYPTO);
    FAILS_WITH(cred_totp_open(key, "other", "usr_a", blob_a, len_a, &out), BASE_ERR_CRYPTO);
    FAILS_WITH(cred_totp_open(key, "acm", "eusr_a", blob_a, len_a, &out), BASE_ERR_CRYPTO);
    FAILS_WITH(cred_totp_open(key2, "acme", "usr_a", blob_a, len_a, &out), BASE_ERR_CRYPTO);
    for (size_t i = 0; i < len_a; i += 7) {
        blob_a[i] ^= 0x01;
        FAILS_WITH(cred_totp_open(key, "acme", "usr_a", blob_a, len_a, &out), BASE_ERR_CRYPTO);
        blob_a[i] ^= 0x01;
    }
    FAILS_WITH(cred_totp_open(key, "acme", "usr_a", blob_a, len_a - 1, &out), BASE_ERR_CRYPTO);
    assert_null(out);
    MUST(cred_totp_open(key, "acme", "usr_b", blob_b, len_b, &out));
    assert_memory_equal(acrypto_secret_bytes(out), acrypto_secret_bytes(sb), CRED_TOTP_SECRET_LEN);
    out = acrypto_secret_free(out);

    /* '|' would make the associated data ambiguous; keys must be AES-256. */
    uint8_t *blob = NULL;
    size_t len = 0;
    FAILS_WITH(cred_totp_seal(key, "acme|x", "usr_a", sa, &blob, &len), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_seal(key, "acme", "usr|a", sa, &blob, &len), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_seal(key, "", "usr_a", sa, &blob, &len), BASE_ERR_INVALID);
    acrypto_secret *key16 = NULL;
    MUST(acrypto_secret_random(16, &key16));
    FAILS_WITH(cred_totp_seal(key16, "acme", "usr_a", sa, &blob, &len), BASE_ERR_INVALID);
    FAILS_WITH(cred_totp_open(key16, "acme", "usr_a", blob_a, len_a, &out), BASE_ERR_INVALID);
    assert_null(blob);

    free(blob_a);
    free(blob_b);
    acrypto_secret_free(key16);
    acrypto_secret_free(key);
    acrypto_secret_free(key2);
    acrypto_secret_free(sa);
    acrypto_secret_free(sb);
}

/* ---- recovery codes ------------------------------------------------------------------------------------ */

static bool is_b32_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

static void test_recovery_codes(void **state)
{
    (void)state;
    acrypto_secret *pepper = NULL, *pepper2 = NULL;
    MUST(acrypto_secret_random(32, &pepper));
    MUST(acrypto_secret_random(32, &pepper2));
    cred_recovery_codes *codes = calloc(1, sizeof *codes);
    assert_non_null(codes);
    MUST(cred_recovery_generate(pepper, codes));

    const char *stored[CRED_RECOVERY_COUNT];
    for (size_t i = 0; i < CRED_RECOVERY_COUNT; i++) {
        const char *d = codes->display[i];
        assert_int_equal(strlen(d), CRED_RECOVERY_DISPLAY_LEN);
        for (size_t j = 0; j < CRED_RECOVERY_DISPLAY_LEN; j++)
            assert_true(j == 5 ? d[j] == '-' : is_b32_lower(d[j]));
        assert_int_equal(strlen(codes->stored[i]), CRED_RECOVERY_HASH_HEX);
        assert_null(memmem(codes->stored[i], CRED_RECOVERY_HASH_HEX, d, 5));
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(codes->display[i], codes->display[j]);
            assert_string_not_equal(codes->stored[i], codes->stored[j]);
        }
        stored[i] = codes->stored[i];
    }

    /* Stored = hex HMAC-SHA-256(pepper, code upper case without the dash), checked independently. */
    char norm[CRED_RECOVERY_CHARS + 1];
    for (size_t j = 0, o = 0; j < CRED_RECOVERY_DISPLAY_LEN; j++)
        if (codes->display[0][j] != '-')
            norm[o++] =
                (char)(codes->display[0][j] >= 'a' ? codes->display[0][j] - 'a' + 'A' : codes->display[0][j]);
    norm[CRED_RECOVERY_CHARS] = '\0';
    uint8_t mac[ACRYPTO_HMAC_SHA256_LEN];
    MUST(acrypto_hmac_sha256(pepper, norm, CRED_RECOVERY_CHARS, mac));
    char hex[CRED_RECOVERY_HASH_HEX + 1];
    size_t hex_len = 0;
    MUST(acrypto_hex_encode(mac, sizeof mac, hex, sizeof hex, &hex_len));
    assert_string_equal(hex, codes->stored[0]);

    /* Typed in any case, with or without the dash, with spaces: the same code. */
    char typed[32];
    MUST(cred_recovery_hash(pepper, norm, strlen(norm), hex));
    assert_string_equal(hex, codes->stored[0]);
    snprintf(typed, sizeof typed, " %.5s %.5s ", norm, norm + 5);
    MUST(cred_recovery_hash(pepper, typed, strlen(typed), hex));
    assert_string_equal(hex, codes->stored[0]);

    /* Each code matches its own index. */
    size_t idx = 99;
    for (size_t i = 0; i < CRED_RECOVERY_COUNT; i++) {
        MUST(cred_recovery_verify(pepper, codes->display[i], CRED_RECOVERY_DISPLAY_LEN, stored,
                                  CRED_RECOVERY_COUNT, &idx));
        assert_int_equal(idx, i);
    }
    MUST(cred_recovery_verify(pepper, typed, strlen(typed), stored, CRED_RECOVERY_COUNT, &idx));
    assert_int_equal(idx, 0);

    /* Single use: the caller marks index 3 used (drops it from the set); it no longer works, others do. */
    MUST(cred_recovery_verify(pepper, codes->display[3], CRED_RECOVERY_DISPLAY_LEN, stored,
                              CRED_RECOVERY_COUNT, &idx));
    assert_int_equal(idx, 3);
    stored[3] = NULL;
    idx = 99;
    FAILS_WITH(cred_recovery_verify(pepper, codes->display[3], CRED_RECOVERY_DISPLAY_LEN, stored,
                                    CRED_RECOVERY_COUNT, &idx),
               BASE_ERR_UNAUTH);
    assert_int_equal(idx, 99);
    MUST(cred_recovery_verify(pepper, codes->display[4], CRED_RECOVERY_DISPLAY_LEN, stored,
                              CRED_RECOVERY_COUNT, &idx));
    assert_int_equal(idx, 4);
    /* A compacted set (the used row deleted) reports the position in what was passed. */
    const char *compact[CRED_RECOVERY_COUNT - 1];
    for (size_t i = 0, o = 0; i < CRED_RECOVERY_COUNT; i++)
        if (i != 3)
            compact[o++] = codes->stored[i];
    MUST(cred_recovery_verify(pepper, codes->display[9], CRED_RECOVERY_DISPLAY_LEN, compact,
                              CRED_RECOVERY_COUNT - 1, &idx));
    assert_int_equal(idx, 8);
    FAILS_WITH(cred_recovery_verify(pepper, codes->display[3], CRED_RECOVERY_DISPLAY_LEN, compact,
                                    CRED_RECOVERY_COUNT - 1, &idx),
               BASE_ERR_UNAUTH);

    /* Wrong pepper, an empty set, malformed input, a damaged stored entry. */
    FAILS_WITH(cred_recovery_verify(pepper2, codes->display[0], CRED_RECOVERY_DISPLAY_LEN, stored,
                                    CRED_RECOVERY_COUNT, &idx),
               BASE_ERR_UNAUTH);
    FAILS_WITH(cred_recovery_verify(pepper, codes->display[0], CRED_RECOVERY_DISPLAY_LEN, NULL, 0, &idx),
               BASE_ERR_UNAUTH);
    static const char *const bad[] = {
        "",
        "abcde",
        "abcde-fghij-k",
        "abcde-fghi1",
        "abcde-fghi0",
        "abcde_fghij",
        "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++)
        FAILS_WITH(cred_recovery_verify(pepper, bad[i], strlen(bad[i]), stored, CRED_RECOVERY_COUNT, &idx),
                   BASE_ERR_UNAUTH);
    char damaged[CRED_RECOVERY_HASH_HEX + 1];
    snprintf(damaged, sizeof damaged, "%s", codes->stored[5]);
    damaged[CRED_RECOVERY_HASH_HEX - 1] = damaged[CRED_RECOVERY_HASH_HEX - 1] == '0' ? '1' : '0';
    stored[5] = damaged;
    FAILS_WITH(cred_recovery_verify(pepper, codes->display[5], CRED_RECOVERY_DISPLAY_LEN, stored,
                                    CRED_RECOVERY_COUNT, &idx),
               BASE_ERR_UNAUTH);
    damaged[CRED_RECOVERY_HASH_HEX - 1] = '\0'; /* truncated: never matches */
    FAILS_WITH(cred_recovery_verify(pepper, codes->display[5], CRED_RECOVERY_DISPLAY_LEN, stored,
                                    CRED_RECOVERY_COUNT, &idx),
               BASE_ERR_UNAUTH);
    FAILS_WITH(cred_recovery_generate(NULL, codes), BASE_ERR_INVALID);

    /* Two sets differ. */
    cred_recovery_codes *again = calloc(1, sizeof *again);
    assert_non_null(again);
    MUST(cred_recovery_generate(pepper, again));
    assert_string_not_equal(again->display[0], codes->display[0]);

    cred_recovery_codes_wipe(codes);
    static const cred_recovery_codes zero;
    assert_memory_equal(codes, &zero, sizeof zero);
    cred_recovery_codes_wipe(NULL);
    cred_recovery_codes_wipe(again);
    free(again);
    free(codes);
    acrypto_secret_free(pepper);
    acrypto_secret_free(pepper2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_round_trip),
        cmocka_unit_test(test_password_params_and_rehash),
        cmocka_unit_test(test_password_production_params),
        cmocka_unit_test(test_password_tampered),
        cmocka_unit_test(test_password_unknown_user),
        cmocka_unit_test(test_password_policy),
        cmocka_unit_test(test_totp_rfc6238_vectors),
        cmocka_unit_test(test_totp_window_and_replay),
        cmocka_unit_test(test_totp_same_code_two_steps),
        cmocka_unit_test(test_totp_secret_and_uri),
        cmocka_unit_test(test_totp_sealed),
        cmocka_unit_test(test_recovery_codes),
    };
    return cmocka_run_group_tests_name("identity_credentials", tests, NULL, NULL);
}
