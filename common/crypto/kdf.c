/* HKDF-SHA256 through EVP_KDF "HKDF" (RFC 5869, extract-and-expand). */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <pthread.h>

static pthread_once_t hkdf_once = PTHREAD_ONCE_INIT;
static EVP_KDF *hkdf_kdf;

static void hkdf_fetch(void)
{
    hkdf_kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (hkdf_kdf == NULL)
        ERR_clear_error();
}

static base_result hkdf_check(const acrypto_secret *ikm, const void *salt, size_t salt_len, const void *info,
                              size_t info_len, size_t out_len)
{
    BASE_ENSURE(ikm != NULL, BASE_ERR_INVALID, "hkdf-sha256: input key material is NULL");
    BASE_ENSURE(acrypto_secret_len(ikm) > 0, BASE_ERR_INVALID, "hkdf-sha256: input key material is empty");
    BASE_ENSURE(salt != NULL || salt_len == 0, BASE_ERR_INVALID, "hkdf-sha256: salt is NULL");
    BASE_ENSURE(info != NULL || info_len == 0, BASE_ERR_INVALID, "hkdf-sha256: info is NULL");
    BASE_ENSURE(salt_len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT,
                "hkdf-sha256: salt larger than the 64 MiB limit");
    BASE_ENSURE(info_len <= ACRYPTO_HKDF_MAX_INFO, BASE_ERR_LIMIT,
                "hkdf-sha256: info longer than ACRYPTO_HKDF_MAX_INFO (1024) bytes");
    BASE_ENSURE(out_len > 0, BASE_ERR_INVALID, "hkdf-sha256: output length is 0");
    BASE_ENSURE(out_len <= ACRYPTO_HKDF_MAX_OUT, BASE_ERR_LIMIT,
                "hkdf-sha256: output longer than ACRYPTO_HKDF_MAX_OUT (8160) bytes");
    return BASE_OK_RESULT;
}

static base_result hkdf_derive(const acrypto_secret *ikm, const void *salt, size_t salt_len, const void *info,
                               size_t info_len, void *out, size_t out_len)
{
    BASE_GUARD(hkdf_check(ikm, salt, salt_len, info, info_len, out_len));
    BASE_ENSURE(out != NULL, BASE_ERR_INVALID, "hkdf-sha256: output buffer is NULL");
    if (pthread_once(&hkdf_once, hkdf_fetch) != 0 || hkdf_kdf == NULL)
        return base_fail(BASE_ERR_INTERNAL, "hkdf-sha256: HKDF not available from the OpenSSL providers");

    char digest[] = "SHA256";
    OSSL_PARAM params[5];
    OSSL_PARAM *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)acrypto_secret_bytes(ikm),
                                             acrypto_secret_len(ikm));
    /* Empty salt and info are left out: OpenSSL then applies RFC 5869's defaults (HashLen zeros, ""). */
    if (salt_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    if (info_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();

    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(hkdf_kdf);
    if (kctx == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "hkdf-sha256: out of memory");
    int ok = EVP_KDF_derive(kctx, out, out_len, params);
    EVP_KDF_CTX_free(kctx); /* cleanses its copy of the key material */
    if (ok != 1)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "hkdf-sha256: derivation failed in OpenSSL");
    return BASE_OK_RESULT;
}

base_result acrypto_hkdf_sha256(const acrypto_secret *ikm, const void *salt, size_t salt_len,
                                const void *info, size_t info_len, void *out, size_t out_len)
{
    base_result r = hkdf_derive(ikm, salt, salt_len, info, info_len, out, out_len);
    if (!base_is_ok(r))
        acrypto_wipe(out, out_len);
    return r;
}

base_result acrypto_hkdf_sha256_secret(const acrypto_secret *ikm, const void *salt, size_t salt_len,
                                       const void *info, size_t info_len, size_t out_len,
                                       acrypto_secret **ret_key)
{
    BASE_ENSURE(ret_key != NULL, BASE_ERR_INVALID, "hkdf-sha256: ret_key is NULL");
    BASE_GUARD(hkdf_check(ikm, salt, salt_len, info, info_len, out_len));
    acrypto_secret *key = NULL;
    BASE_GUARD(acrypto_secret_new(out_len, &key));
    base_result r = hkdf_derive(ikm, salt, salt_len, info, info_len, acrypto_secret_bytes_mut(key), out_len);
    if (!base_is_ok(r)) {
        acrypto_secret_free(key);
        return r;
    }
    *ret_key = key;
    return BASE_OK_RESULT;
}
