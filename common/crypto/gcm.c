/* AES-256-GCM seal/open over one buffer: nonce (12) || ciphertext || tag (16). See crypto.h for the layout.
 */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* One message for every way open can fail to authenticate, so a caller (or an attacker watching error
 * strings) cannot tell a wrong key from a changed byte or a truncated buffer. */
#define GCM_OPEN_FAILED "aes-256-gcm: decryption failed (authentication tag did not verify)"

/* Fetch the cipher once: an explicit fetch per call costs a provider lookup under a lock. */
static pthread_once_t gcm_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *gcm_cipher;

static void gcm_fetch(void)
{
    gcm_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (gcm_cipher == NULL)
        ERR_clear_error();
}

static const EVP_CIPHER *gcm_get(void)
{
    if (pthread_once(&gcm_once, gcm_fetch) != 0)
        return NULL;
    return gcm_cipher;
}

static base_result gcm_check_key(const acrypto_secret *key)
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "aes-256-gcm: key is NULL");
    BASE_ENSURE(acrypto_secret_len(key) == ACRYPTO_AES256_KEY_LEN, BASE_ERR_INVALID,
                "aes-256-gcm: key must be 32 bytes");
    return BASE_OK_RESULT;
}

static base_result gcm_check_seal_args(const acrypto_secret *key, const void *ad, size_t ad_len,
                                       const void *plaintext, size_t plaintext_len, const void *out,
                                       size_t out_cap, const size_t *ret_sealed_len)
{
    BASE_ENSURE(ret_sealed_len != NULL, BASE_ERR_INVALID, "aes-256-gcm: ret_sealed_len is NULL");
    BASE_GUARD(gcm_check_key(key));
    BASE_ENSURE(ad != NULL || ad_len == 0, BASE_ERR_INVALID, "aes-256-gcm: associated data is NULL");
    BASE_ENSURE(plaintext != NULL || plaintext_len == 0, BASE_ERR_INVALID, "aes-256-gcm: plaintext is NULL");
    BASE_ENSURE(ad_len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT,
                "aes-256-gcm: associated data larger than the 64 MiB limit");
    BASE_ENSURE(plaintext_len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT,
                "aes-256-gcm: plaintext larger than the 64 MiB limit");
    BASE_ENSURE(out != NULL, BASE_ERR_INVALID, "aes-256-gcm: output buffer is NULL");
    size_t sealed_len = plaintext_len + ACRYPTO_GCM_OVERHEAD;
    BASE_ENSURE(out_cap >= sealed_len, BASE_ERR_INVALID,
                "aes-256-gcm: output buffer smaller than plaintext + ACRYPTO_GCM_OVERHEAD");
    BASE_ENSURE(!acrypto__overlaps(out, sealed_len, plaintext, plaintext_len) &&
                    !acrypto__overlaps(out, sealed_len, ad, ad_len),
                BASE_ERR_INVALID, "aes-256-gcm: output buffer overlaps an input");
    return BASE_OK_RESULT;
}

base_result acrypto__gcm_seal_with_nonce(const acrypto_secret *key,
                                         const uint8_t nonce[ACRYPTO_GCM_NONCE_LEN], const void *ad,
                                         size_t ad_len, const void *plaintext, size_t plaintext_len,
                                         void *out, size_t out_cap, size_t *ret_sealed_len)
{
    base_result r =
        gcm_check_seal_args(key, ad, ad_len, plaintext, plaintext_len, out, out_cap, ret_sealed_len);
    if (base_is_ok(r) && nonce == NULL)
        r = base_fail(BASE_ERR_INVALID, "aes-256-gcm: nonce is NULL");
    if (!base_is_ok(r)) {
        acrypto_wipe(out, out_cap);
        return r;
    }

    uint8_t *o = out;
    uint8_t *ct = o + ACRYPTO_GCM_NONCE_LEN;
    uint8_t *tag = ct + plaintext_len;
    uint8_t final_block[32];
    int len = 0;
    EVP_CIPHER_CTX *ctx = NULL;
    const EVP_CIPHER *cipher = gcm_get();
    if (cipher == NULL) {
        r = base_fail(BASE_ERR_INTERNAL, "aes-256-gcm: cipher not available from the OpenSSL providers");
        goto out;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        r = acrypto__ossl_fail(BASE_ERR_NOMEM, "aes-256-gcm: out of memory");
        goto out;
    }
    /* The default GCM IV length is 12 bytes, the one size GCM is designed for. */
    if (EVP_EncryptInit_ex2(ctx, cipher, acrypto_secret_bytes(key), nonce, NULL) != 1)
        goto ossl_fail;
    memcpy(o, nonce, ACRYPTO_GCM_NONCE_LEN);
    if (ad_len > 0 && EVP_EncryptUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1)
        goto ossl_fail;
    if (plaintext_len > 0) {
        if (EVP_EncryptUpdate(ctx, ct, &len, plaintext, (int)plaintext_len) != 1 ||
            (size_t)len != plaintext_len)
            goto ossl_fail;
    }
    if (EVP_EncryptFinal_ex(ctx, final_block, &len) != 1 || len != 0)
        goto ossl_fail;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, ACRYPTO_GCM_TAG_LEN, tag) != 1)
        goto ossl_fail;
    *ret_sealed_len = plaintext_len + ACRYPTO_GCM_OVERHEAD;
    r = BASE_OK_RESULT;
    goto out;

ossl_fail:
    r = acrypto__ossl_fail(BASE_ERR_INTERNAL, "aes-256-gcm: encryption failed in OpenSSL");
out:
    if (!base_is_ok(r))
        acrypto_wipe(out, out_cap);
    EVP_CIPHER_CTX_free(ctx); /* also cleanses the key schedule */
    return r;
}

base_result acrypto_gcm_seal(const acrypto_secret *key, const void *ad, size_t ad_len, const void *plaintext,
                             size_t plaintext_len, void *out, size_t out_cap, size_t *ret_sealed_len)
{
    base_result r =
        gcm_check_seal_args(key, ad, ad_len, plaintext, plaintext_len, out, out_cap, ret_sealed_len);
    if (!base_is_ok(r)) {
        acrypto_wipe(out, out_cap);
        return r;
    }
    /* A fresh random nonce per message: callers cannot get nonce management wrong. */
    uint8_t nonce[ACRYPTO_GCM_NONCE_LEN];
    r = acrypto_random(nonce, sizeof nonce);
    if (!base_is_ok(r)) {
        acrypto_wipe(out, out_cap);
        return r;
    }
    return acrypto__gcm_seal_with_nonce(key, nonce, ad, ad_len, plaintext, plaintext_len, out, out_cap,
                                        ret_sealed_len);
}

base_result acrypto_gcm_seal_alloc(const acrypto_secret *key, const void *ad, size_t ad_len,
                                   const void *plaintext, size_t plaintext_len, uint8_t **ret_sealed,
                                   size_t *ret_sealed_len)
{
    BASE_ENSURE(ret_sealed != NULL && ret_sealed_len != NULL, BASE_ERR_INVALID,
                "aes-256-gcm: ret_sealed or ret_sealed_len is NULL");
    BASE_ENSURE(plaintext_len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT,
                "aes-256-gcm: plaintext larger than the 64 MiB limit");
    size_t cap = plaintext_len + ACRYPTO_GCM_OVERHEAD;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return base_fail(BASE_ERR_NOMEM, "aes-256-gcm: out of memory");
    size_t sealed_len = 0;
    base_result r = acrypto_gcm_seal(key, ad, ad_len, plaintext, plaintext_len, buf, cap, &sealed_len);
    if (!base_is_ok(r)) {
        free(buf);
        return r;
    }
    *ret_sealed = buf;
    *ret_sealed_len = sealed_len;
    return BASE_OK_RESULT;
}

static base_result gcm_open_checked(const acrypto_secret *key, const void *ad, size_t ad_len,
                                    const uint8_t *sealed, size_t sealed_len, uint8_t *out, size_t out_cap,
                                    size_t *ret_plaintext_len)
{
    BASE_ENSURE(ret_plaintext_len != NULL, BASE_ERR_INVALID, "aes-256-gcm: ret_plaintext_len is NULL");
    BASE_GUARD(gcm_check_key(key));
    BASE_ENSURE(out != NULL || out_cap == 0, BASE_ERR_INVALID, "aes-256-gcm: output buffer is NULL");
    BASE_ENSURE(ad != NULL || ad_len == 0, BASE_ERR_INVALID, "aes-256-gcm: associated data is NULL");
    BASE_ENSURE(sealed != NULL || sealed_len == 0, BASE_ERR_INVALID, "aes-256-gcm: sealed buffer is NULL");
    BASE_ENSURE(ad_len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT,
                "aes-256-gcm: associated data larger than the 64 MiB limit");
    BASE_ENSURE(sealed_len <= ACRYPTO_MAX_INPUT + ACRYPTO_GCM_OVERHEAD, BASE_ERR_LIMIT,
                "aes-256-gcm: sealed buffer larger than the 64 MiB limit");
    /* Too short to hold a nonce and a tag: it cannot authenticate, and says so the same way as a bad tag. */
    BASE_ENSURE(sealed_len >= ACRYPTO_GCM_OVERHEAD, BASE_ERR_CRYPTO, GCM_OPEN_FAILED);
    size_t pt_len = sealed_len - ACRYPTO_GCM_OVERHEAD;
    BASE_ENSURE(out_cap >= pt_len, BASE_ERR_INVALID,
                "aes-256-gcm: output buffer smaller than sealed length - ACRYPTO_GCM_OVERHEAD");
    BASE_ENSURE(!acrypto__overlaps(out, out_cap, sealed, sealed_len) &&
                    !acrypto__overlaps(out, out_cap, ad, ad_len),
                BASE_ERR_INVALID, "aes-256-gcm: output buffer overlaps an input");

    const uint8_t *nonce = sealed;
    const uint8_t *ct = sealed + ACRYPTO_GCM_NONCE_LEN;
    uint8_t tag[ACRYPTO_GCM_TAG_LEN]; /* the ctrl takes a non-const pointer */
    memcpy(tag, ct + pt_len, sizeof tag);
    uint8_t final_block[32];
    int len = 0;
    base_result r;

    const EVP_CIPHER *cipher = gcm_get();
    if (cipher == NULL)
        return base_fail(BASE_ERR_INTERNAL, "aes-256-gcm: cipher not available from the OpenSSL providers");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "aes-256-gcm: out of memory");
    if (EVP_DecryptInit_ex2(ctx, cipher, acrypto_secret_bytes(key), nonce, NULL) != 1)
        goto internal;
    if (ad_len > 0 && EVP_DecryptUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1)
        goto internal;
    /* GCM releases plaintext here, before the tag is checked: the caller's wrapper wipes it on failure. */
    if (pt_len > 0) {
        if (EVP_DecryptUpdate(ctx, out, &len, ct, (int)pt_len) != 1 || (size_t)len != pt_len)
            goto internal;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, ACRYPTO_GCM_TAG_LEN, tag) != 1)
        goto internal;
    if (EVP_DecryptFinal_ex(ctx, final_block, &len) != 1 || len != 0) {
        r = acrypto__ossl_fail(BASE_ERR_CRYPTO, GCM_OPEN_FAILED);
        goto out;
    }
    *ret_plaintext_len = pt_len;
    r = BASE_OK_RESULT;
    goto out;

internal:
    r = acrypto__ossl_fail(BASE_ERR_INTERNAL, "aes-256-gcm: decryption failed in OpenSSL");
out:
    EVP_CIPHER_CTX_free(ctx);
    return r;
}

base_result acrypto_gcm_open(const acrypto_secret *key, const void *ad, size_t ad_len, const void *sealed,
                             size_t sealed_len, void *out, size_t out_cap, size_t *ret_plaintext_len)
{
    base_result r = gcm_open_checked(key, ad, ad_len, sealed, sealed_len, out, out_cap, ret_plaintext_len);
    if (!base_is_ok(r))
        acrypto_wipe(out, out_cap); /* no partial plaintext leaves a failed open */
    return r;
}

base_result acrypto_gcm_open_secret(const acrypto_secret *key, const void *ad, size_t ad_len,
                                    const void *sealed, size_t sealed_len, acrypto_secret **ret_plaintext)
{
    BASE_ENSURE(ret_plaintext != NULL, BASE_ERR_INVALID, "aes-256-gcm: ret_plaintext is NULL");
    BASE_ENSURE(sealed_len <= ACRYPTO_MAX_INPUT + ACRYPTO_GCM_OVERHEAD, BASE_ERR_LIMIT,
                "aes-256-gcm: sealed buffer larger than the 64 MiB limit");
    size_t pt_len = sealed_len >= ACRYPTO_GCM_OVERHEAD ? sealed_len - ACRYPTO_GCM_OVERHEAD : 0;
    acrypto_secret *pt = NULL;
    BASE_GUARD(acrypto_secret_new(pt_len, &pt));
    size_t got = 0;
    base_result r =
        acrypto_gcm_open(key, ad, ad_len, sealed, sealed_len, acrypto_secret_bytes_mut(pt), pt_len, &got);
    if (!base_is_ok(r)) {
        acrypto_secret_free(pt);
        return r;
    }
    *ret_plaintext = pt;
    return BASE_OK_RESULT;
}
