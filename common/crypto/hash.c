/* SHA-256, one-shot and incremental, through EVP_MD. */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct acrypto_sha256_ctx {
    EVP_MD_CTX *md_ctx;
    bool ready; /* initialised and not yet finalised */
};

/* Fetched once: the Merkle tree hashes many small nodes, and an implicit fetch per digest costs a lookup. */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256_md == NULL)
        ERR_clear_error();
}

static const EVP_MD *sha256_get(void)
{
    if (pthread_once(&sha256_once, sha256_fetch) != 0)
        return NULL;
    return sha256_md;
}

#define SHA256_UNAVAILABLE "sha-256: digest not available from the OpenSSL providers"

base_result acrypto_sha256(const void *data, size_t len, uint8_t ret_digest[ACRYPTO_SHA256_LEN])
{
    BASE_ENSURE(data != NULL || len == 0, BASE_ERR_INVALID, "sha-256: data is NULL");
    BASE_ENSURE(ret_digest != NULL, BASE_ERR_INVALID, "sha-256: ret_digest is NULL");
    const EVP_MD *md = sha256_get();
    if (md == NULL)
        return base_fail(BASE_ERR_INTERNAL, SHA256_UNAVAILABLE);
    uint8_t digest[ACRYPTO_SHA256_LEN];
    unsigned int n = 0;
    if (EVP_Digest(len > 0 ? data : "", len, digest, &n, md, NULL) != 1 || n != sizeof digest)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "sha-256: digest failed in OpenSSL");
    memcpy(ret_digest, digest, sizeof digest);
    return BASE_OK_RESULT;
}

base_result acrypto_sha256_ctx_new(acrypto_sha256_ctx **ret_ctx)
{
    BASE_ENSURE(ret_ctx != NULL, BASE_ERR_INVALID, "sha-256: ret_ctx is NULL");
    acrypto_sha256_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return base_fail(BASE_ERR_NOMEM, "sha-256: out of memory");
    ctx->md_ctx = EVP_MD_CTX_new();
    if (ctx->md_ctx == NULL) {
        free(ctx);
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "sha-256: out of memory");
    }
    base_result r = acrypto_sha256_init(ctx);
    if (!base_is_ok(r)) {
        acrypto_sha256_ctx_free(ctx);
        return r;
    }
    *ret_ctx = ctx;
    return BASE_OK_RESULT;
}

base_result acrypto_sha256_init(acrypto_sha256_ctx *ctx)
{
    BASE_ENSURE(ctx != NULL, BASE_ERR_INVALID, "sha-256: context is NULL");
    ctx->ready = false;
    const EVP_MD *md = sha256_get();
    if (md == NULL)
        return base_fail(BASE_ERR_INTERNAL, SHA256_UNAVAILABLE);
    if (EVP_DigestInit_ex2(ctx->md_ctx, md, NULL) != 1)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "sha-256: digest init failed in OpenSSL");
    ctx->ready = true;
    return BASE_OK_RESULT;
}

base_result acrypto_sha256_update(acrypto_sha256_ctx *ctx, const void *data, size_t len)
{
    BASE_ENSURE(ctx != NULL, BASE_ERR_INVALID, "sha-256: context is NULL");
    BASE_ENSURE(data != NULL || len == 0, BASE_ERR_INVALID, "sha-256: data is NULL");
    BASE_ENSURE(ctx->ready, BASE_ERR_CONFLICT, "sha-256: context is finished; call acrypto_sha256_init()");
    if (len == 0)
        return BASE_OK_RESULT;
    if (EVP_DigestUpdate(ctx->md_ctx, data, len) != 1) {
        ctx->ready = false;
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "sha-256: digest update failed in OpenSSL");
    }
    return BASE_OK_RESULT;
}

base_result acrypto_sha256_final(acrypto_sha256_ctx *ctx, uint8_t ret_digest[ACRYPTO_SHA256_LEN])
{
    BASE_ENSURE(ctx != NULL, BASE_ERR_INVALID, "sha-256: context is NULL");
    BASE_ENSURE(ret_digest != NULL, BASE_ERR_INVALID, "sha-256: ret_digest is NULL");
    BASE_ENSURE(ctx->ready, BASE_ERR_CONFLICT, "sha-256: context is finished; call acrypto_sha256_init()");
    ctx->ready = false;
    uint8_t digest[ACRYPTO_SHA256_LEN];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx->md_ctx, digest, &n) != 1 || n != sizeof digest)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "sha-256: digest final failed in OpenSSL");
    memcpy(ret_digest, digest, sizeof digest);
    return BASE_OK_RESULT;
}

acrypto_sha256_ctx *acrypto_sha256_ctx_free(acrypto_sha256_ctx *ctx)
{
    if (ctx == NULL)
        return NULL;
    EVP_MD_CTX_free(ctx->md_ctx);
    free(ctx);
    return NULL;
}

void acrypto_sha256_ctx_freep(acrypto_sha256_ctx **ctx)
{
    if (ctx != NULL)
        *ctx = acrypto_sha256_ctx_free(*ctx);
}
