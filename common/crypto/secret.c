/* Secrets, randomness, constant-time comparison, wiping, and the shared OpenSSL error helper. */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct acrypto_secret {
    size_t len;
    uint8_t *bytes; /* len + 1 bytes: the last is always NUL (see crypto.h) */
};

base_result acrypto__ossl_fail(base_err err, const char *msg)
{
    ERR_clear_error();
    return base_fail(err, "%s", msg);
}

bool acrypto__ossl_errors_pending(void)
{
    return ERR_peek_error() != 0;
}

bool acrypto__overlaps(const void *a, size_t a_len, const void *b, size_t b_len)
{
    if (a == NULL || b == NULL || a_len == 0 || b_len == 0)
        return false;
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + b_len && pb < pa + a_len;
}

base_result acrypto_secret_new(size_t len, acrypto_secret **ret_secret)
{
    BASE_ENSURE(ret_secret != NULL, BASE_ERR_INVALID, "secret: ret_secret is NULL");
    BASE_ENSURE(len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT, "secret: longer than the 64 MiB limit");
    acrypto_secret *s = calloc(1, sizeof *s);
    if (s == NULL)
        return base_fail(BASE_ERR_NOMEM, "secret: out of memory");
    s->bytes = calloc(1, len + 1);
    if (s->bytes == NULL) {
        free(s);
        return base_fail(BASE_ERR_NOMEM, "secret: out of memory");
    }
    s->len = len;
    *ret_secret = s;
    return BASE_OK_RESULT;
}

base_result acrypto_secret_from_bytes(const void *bytes, size_t len, acrypto_secret **ret_secret)
{
    BASE_ENSURE(bytes != NULL || len == 0, BASE_ERR_INVALID, "secret: bytes is NULL");
    acrypto_secret *s = NULL;
    BASE_GUARD(acrypto_secret_new(len, &s));
    if (len > 0)
        memcpy(s->bytes, bytes, len);
    *ret_secret = s;
    return BASE_OK_RESULT;
}

base_result acrypto_secret_random(size_t len, acrypto_secret **ret_secret)
{
    acrypto_secret *s = NULL;
    BASE_GUARD(acrypto_secret_new(len, &s));
    base_result r = acrypto_random(s->bytes, len);
    if (!base_is_ok(r)) {
        acrypto_secret_free(s);
        return r;
    }
    *ret_secret = s;
    return BASE_OK_RESULT;
}

acrypto_secret *acrypto_secret_free(acrypto_secret *secret)
{
    if (secret == NULL)
        return NULL;
    OPENSSL_cleanse(secret->bytes, secret->len + 1);
    free(secret->bytes);
    OPENSSL_cleanse(secret, sizeof *secret);
    free(secret);
    return NULL;
}

void acrypto_secret_freep(acrypto_secret **secret)
{
    if (secret != NULL)
        *secret = acrypto_secret_free(*secret);
}

const uint8_t *acrypto_secret_bytes(const acrypto_secret *secret)
{
    return secret != NULL ? secret->bytes : NULL;
}

uint8_t *acrypto_secret_bytes_mut(acrypto_secret *secret)
{
    return secret != NULL ? secret->bytes : NULL;
}

size_t acrypto_secret_len(const acrypto_secret *secret)
{
    return secret != NULL ? secret->len : 0;
}

base_result acrypto_random(void *buf, size_t n)
{
    BASE_ENSURE(buf != NULL || n == 0, BASE_ERR_INVALID, "random: buffer is NULL");
    BASE_ENSURE(n <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT, "random: request larger than the 64 MiB limit");
    if (n == 0)
        return BASE_OK_RESULT;
    if (RAND_bytes(buf, (int)n) != 1) {
        OPENSSL_cleanse(buf, n);
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "random: the OpenSSL CSPRNG failed");
    }
    return BASE_OK_RESULT;
}

bool acrypto_equal(const void *a, const void *b, size_t n)
{
    if (n == 0)
        return true;
    return CRYPTO_memcmp(a, b, n) == 0;
}

void acrypto_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}
