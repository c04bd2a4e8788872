/* HMAC-SHA256 through EVP_MAC "HMAC" (RFC 2104), with a constant-time verify. */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <pthread.h>
#include <string.h>

#define HMAC_VERIFY_FAILED "hmac-sha256: MAC did not verify"

static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hmac_mac;

static void hmac_fetch(void)
{
    hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (hmac_mac == NULL)
        ERR_clear_error();
}

static base_result hmac_compute(const acrypto_secret *key, const void *msg, size_t msg_len,
                                uint8_t mac[ACRYPTO_HMAC_SHA256_LEN])
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "hmac-sha256: key is NULL");
    /* RFC 2104 allows it, but an empty key is always a configuration bug here. */
    BASE_ENSURE(acrypto_secret_len(key) > 0, BASE_ERR_INVALID, "hmac-sha256: key is empty");
    BASE_ENSURE(msg != NULL || msg_len == 0, BASE_ERR_INVALID, "hmac-sha256: message is NULL");
    if (pthread_once(&hmac_once, hmac_fetch) != 0 || hmac_mac == NULL)
        return base_fail(BASE_ERR_INTERNAL, "hmac-sha256: HMAC not available from the OpenSSL providers");

    char digest[] = "SHA256";
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();

    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_mac);
    if (ctx == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "hmac-sha256: out of memory");
    size_t out_len = 0;
    int ok = EVP_MAC_init(ctx, acrypto_secret_bytes(key), acrypto_secret_len(key), params) == 1 &&
             (msg_len == 0 || EVP_MAC_update(ctx, msg, msg_len) == 1) &&
             EVP_MAC_final(ctx, mac, &out_len, ACRYPTO_HMAC_SHA256_LEN) == 1 &&
             out_len == ACRYPTO_HMAC_SHA256_LEN;
    EVP_MAC_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(mac, ACRYPTO_HMAC_SHA256_LEN);
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "hmac-sha256: computation failed in OpenSSL");
    }
    return BASE_OK_RESULT;
}

base_result acrypto_hmac_sha256(const acrypto_secret *key, const void *msg, size_t msg_len,
                                uint8_t ret_mac[ACRYPTO_HMAC_SHA256_LEN])
{
    BASE_ENSURE(ret_mac != NULL, BASE_ERR_INVALID, "hmac-sha256: ret_mac is NULL");
    uint8_t mac[ACRYPTO_HMAC_SHA256_LEN];
    BASE_GUARD(hmac_compute(key, msg, msg_len, mac));
    memcpy(ret_mac, mac, sizeof mac);
    OPENSSL_cleanse(mac, sizeof mac);
    return BASE_OK_RESULT;
}

base_result acrypto_hmac_sha256_verify(const acrypto_secret *key, const void *msg, size_t msg_len,
                                       const void *mac, size_t mac_len)
{
    BASE_ENSURE(mac != NULL || mac_len == 0, BASE_ERR_INVALID, "hmac-sha256: MAC is NULL");
    uint8_t expected[ACRYPTO_HMAC_SHA256_LEN];
    BASE_GUARD(hmac_compute(key, msg, msg_len, expected));
    /* The length is public (always 32); only the bytes are compared in constant time. */
    bool ok = mac_len == ACRYPTO_HMAC_SHA256_LEN && CRYPTO_memcmp(expected, mac, sizeof expected) == 0;
    OPENSSL_cleanse(expected, sizeof expected);
    if (!ok)
        return base_fail(BASE_ERR_CRYPTO, HMAC_VERIFY_FAILED);
    return BASE_OK_RESULT;
}
