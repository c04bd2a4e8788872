/* Helpers the crypto tests share. Include after cmocka.h and crypto/crypto_internal.h. */
#ifndef ALMA_CRYPTO_TEST_H
#define ALMA_CRYPTO_TEST_H

#include <string.h>

#define ASSERT_OK(expr)                                                                                      \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        if (!base_is_ok(r_))                                                                                 \
            fail_msg("%s failed: %s", #expr, base_error_message());                                          \
    } while (0)

/* A failure must carry the expected code and leave OpenSSL's error queue empty. */
#define ASSERT_ERR(expr, code)                                                                               \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        assert_int_equal(r_.err, (code));                                                                    \
        assert_false(acrypto__ossl_errors_pending());                                                        \
    } while (0)

static inline size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    ASSERT_OK(acrypto_hex_decode(hex, strlen(hex), out, cap, &n));
    return n;
}

static inline acrypto_secret *secret_hex(const char *hex)
{
    uint8_t buf[256];
    size_t n = unhex(hex, buf, sizeof buf);
    acrypto_secret *s = NULL;
    ASSERT_OK(acrypto_secret_from_bytes(buf, n, &s));
    return s;
}

#endif
