/* Ed25519 (RFC 8032) through EVP_PKEY "ED25519": raw and PEM (RFC 8410) import/export, sign, verify. */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct acrypto_ed25519_key {
    EVP_PKEY *pkey;   /* always an ED25519 key */
    bool has_private; /* false for a key loaded from public bytes or a public PEM */
};

#define ED25519_VERIFY_FAILED "ed25519: signature did not verify"

/* Wrap pkey (taking ownership) after checking it really is Ed25519: a PEM may hold any key type. */
static base_result key_wrap(EVP_PKEY *pkey, bool has_private, acrypto_ed25519_key **ret_key)
{
    if (!EVP_PKEY_is_a(pkey, "ED25519")) {
        EVP_PKEY_free(pkey);
        return acrypto__ossl_fail(BASE_ERR_INVALID, "ed25519: the key is not an Ed25519 key");
    }
    acrypto_ed25519_key *key = calloc(1, sizeof *key);
    if (key == NULL) {
        EVP_PKEY_free(pkey);
        return base_fail(BASE_ERR_NOMEM, "ed25519: out of memory");
    }
    key->pkey = pkey;
    key->has_private = has_private;
    *ret_key = key;
    return BASE_OK_RESULT;
}

base_result acrypto_ed25519_generate(acrypto_ed25519_key **ret_key)
{
    BASE_ENSURE(ret_key != NULL, BASE_ERR_INVALID, "ed25519: ret_key is NULL");
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (pkey == NULL)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: key generation failed in OpenSSL");
    return key_wrap(pkey, true, ret_key);
}

base_result acrypto_ed25519_from_seed(const acrypto_secret *seed, acrypto_ed25519_key **ret_key)
{
    BASE_ENSURE(ret_key != NULL, BASE_ERR_INVALID, "ed25519: ret_key is NULL");
    BASE_ENSURE(seed != NULL, BASE_ERR_INVALID, "ed25519: seed is NULL");
    BASE_ENSURE(acrypto_secret_len(seed) == ACRYPTO_ED25519_SEED_LEN, BASE_ERR_INVALID,
                "ed25519: private seed must be 32 bytes");
    EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, acrypto_secret_bytes(seed),
                                                     ACRYPTO_ED25519_SEED_LEN);
    if (pkey == NULL)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: private key import failed in OpenSSL");
    return key_wrap(pkey, true, ret_key);
}

base_result acrypto_ed25519_from_public(const void *pub, size_t pub_len, acrypto_ed25519_key **ret_key)
{
    BASE_ENSURE(ret_key != NULL, BASE_ERR_INVALID, "ed25519: ret_key is NULL");
    BASE_ENSURE(pub != NULL, BASE_ERR_INVALID, "ed25519: public key is NULL");
    BASE_ENSURE(pub_len == ACRYPTO_ED25519_PUBLIC_LEN, BASE_ERR_INVALID,
                "ed25519: public key must be 32 bytes");
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, pub, pub_len);
    if (pkey == NULL)
        return acrypto__ossl_fail(BASE_ERR_INVALID, "ed25519: public key import failed");
    return key_wrap(pkey, false, ret_key);
}

/* Never prompt on a terminal for a passphrase: an encrypted PEM simply fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

static base_result pem_load(const char *pem, size_t pem_len, bool private_part, acrypto_ed25519_key **ret_key)
{
    BASE_ENSURE(ret_key != NULL, BASE_ERR_INVALID, "ed25519: ret_key is NULL");
    BASE_ENSURE(pem != NULL, BASE_ERR_INVALID, "ed25519: PEM text is NULL");
    BASE_ENSURE(pem_len <= ACRYPTO_PEM_FILE_MAX, BASE_ERR_LIMIT,
                "ed25519: PEM text larger than the 64 KiB limit");
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (bio == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "ed25519: out of memory");
    EVP_PKEY *pkey = private_part ? PEM_read_bio_PrivateKey_ex(bio, NULL, no_passphrase, NULL, NULL, NULL)
                                  : PEM_read_bio_PUBKEY_ex(bio, NULL, no_passphrase, NULL, NULL, NULL);
    BIO_free(bio);
    if (pkey == NULL)
        return acrypto__ossl_fail(BASE_ERR_INVALID,
                                  private_part ? "ed25519: no unencrypted PRIVATE KEY found in the PEM"
                                               : "ed25519: no PUBLIC KEY found in the PEM");
    return key_wrap(pkey, private_part, ret_key);
}

base_result acrypto_ed25519_private_from_pem(const char *pem, size_t pem_len, acrypto_ed25519_key **ret_key)
{
    return pem_load(pem, pem_len, true, ret_key);
}

base_result acrypto_ed25519_public_from_pem(const char *pem, size_t pem_len, acrypto_ed25519_key **ret_key)
{
    return pem_load(pem, pem_len, false, ret_key);
}

/* Read a whole key file, bounded, into a secret (wiped when freed, whatever the file holds). */
static base_result pem_read_file(const char *path, acrypto_secret **ret_text, size_t *ret_len)
{
    BASE_ENSURE(path != NULL, BASE_ERR_INVALID, "ed25519: key file path is NULL");
    FILE *f = fopen(path, "rbe");
    if (f == NULL) {
        int e = errno;
        return base_fail(e == ENOENT ? BASE_ERR_NOT_FOUND : BASE_ERR_IO,
                         "ed25519: cannot open key file %.160s: %s", path, strerror(e));
    }
    /* Kubernetes mounts Secrets as symlinks, so links are followed; but the target must be a regular file. */
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return base_fail(BASE_ERR_INVALID, "ed25519: key file %.160s is not a regular file", path);
    }
    acrypto_secret *text = NULL;
    base_result r = acrypto_secret_new(ACRYPTO_PEM_FILE_MAX + 1, &text);
    if (!base_is_ok(r)) {
        fclose(f);
        return r;
    }
    uint8_t *buf = acrypto_secret_bytes_mut(text);
    size_t n = 0;
    while (n < ACRYPTO_PEM_FILE_MAX + 1) {
        size_t got = fread(buf + n, 1, ACRYPTO_PEM_FILE_MAX + 1 - n, f);
        if (got == 0)
            break;
        n += got;
    }
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) {
        acrypto_secret_free(text);
        return base_fail(BASE_ERR_IO, "ed25519: cannot read key file %.160s", path);
    }
    if (n > ACRYPTO_PEM_FILE_MAX) {
        acrypto_secret_free(text);
        return base_fail(BASE_ERR_LIMIT, "ed25519: key file %.160s larger than the 64 KiB limit", path);
    }
    *ret_text = text;
    *ret_len = n;
    return BASE_OK_RESULT;
}

static base_result pem_load_file(const char *path, bool private_part, acrypto_ed25519_key **ret_key)
{
    BASE_ENSURE(ret_key != NULL, BASE_ERR_INVALID, "ed25519: ret_key is NULL");
    BASE_CLEANUP(acrypto_secret_freep) acrypto_secret *text = NULL;
    size_t len = 0;
    BASE_GUARD(pem_read_file(path, &text, &len));
    return pem_load((const char *)acrypto_secret_bytes(text), len, private_part, ret_key);
}

base_result acrypto_ed25519_private_from_pem_file(const char *path, acrypto_ed25519_key **ret_key)
{
    return pem_load_file(path, true, ret_key);
}

base_result acrypto_ed25519_public_from_pem_file(const char *path, acrypto_ed25519_key **ret_key)
{
    return pem_load_file(path, false, ret_key);
}

bool acrypto_ed25519_has_private(const acrypto_ed25519_key *key)
{
    return key != NULL && key->has_private;
}

base_result acrypto_ed25519_private_seed(const acrypto_ed25519_key *key, acrypto_secret **ret_seed)
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "ed25519: key is NULL");
    BASE_ENSURE(ret_seed != NULL, BASE_ERR_INVALID, "ed25519: ret_seed is NULL");
    BASE_ENSURE(key->has_private, BASE_ERR_INVALID, "ed25519: the key has no private part");
    acrypto_secret *seed = NULL;
    BASE_GUARD(acrypto_secret_new(ACRYPTO_ED25519_SEED_LEN, &seed));
    size_t len = ACRYPTO_ED25519_SEED_LEN;
    if (EVP_PKEY_get_raw_private_key(key->pkey, acrypto_secret_bytes_mut(seed), &len) != 1 ||
        len != ACRYPTO_ED25519_SEED_LEN) {
        acrypto_secret_free(seed);
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: private key export failed in OpenSSL");
    }
    *ret_seed = seed;
    return BASE_OK_RESULT;
}

base_result acrypto_ed25519_public_raw(const acrypto_ed25519_key *key,
                                       uint8_t ret_pub[ACRYPTO_ED25519_PUBLIC_LEN])
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "ed25519: key is NULL");
    BASE_ENSURE(ret_pub != NULL, BASE_ERR_INVALID, "ed25519: ret_pub is NULL");
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    size_t len = sizeof pub;
    if (EVP_PKEY_get_raw_public_key(key->pkey, pub, &len) != 1 || len != sizeof pub)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: public key export failed in OpenSSL");
    memcpy(ret_pub, pub, sizeof pub);
    return BASE_OK_RESULT;
}

base_result acrypto_ed25519_private_to_pem(const acrypto_ed25519_key *key, acrypto_secret **ret_pem)
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "ed25519: key is NULL");
    BASE_ENSURE(ret_pem != NULL, BASE_ERR_INVALID, "ed25519: ret_pem is NULL");
    BASE_ENSURE(key->has_private, BASE_ERR_INVALID, "ed25519: the key has no private part");
    /* A secure-memory BIO, and its buffer wiped below before it is freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    if (bio == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "ed25519: out of memory");
    base_result r;
    char *data = NULL;
    long n = 0;
    if (PEM_write_bio_PrivateKey(bio, key->pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(bio, &data)) <= 0 || data == NULL) {
        r = acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: PEM export failed in OpenSSL");
    } else {
        acrypto_secret *pem = NULL;
        r = acrypto_secret_from_bytes(data, (size_t)n, &pem);
        if (base_is_ok(r))
            *ret_pem = pem;
        OPENSSL_cleanse(data, (size_t)n);
    }
    BIO_free(bio);
    return r;
}

base_result acrypto_ed25519_public_to_pem(const acrypto_ed25519_key *key, char **ret_pem, size_t *ret_len)
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "ed25519: key is NULL");
    BASE_ENSURE(ret_pem != NULL && ret_len != NULL, BASE_ERR_INVALID, "ed25519: ret_pem or ret_len is NULL");
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "ed25519: out of memory");
    base_result r;
    char *data = NULL;
    long n = 0;
    if (PEM_write_bio_PUBKEY(bio, key->pkey) != 1 || (n = BIO_get_mem_data(bio, &data)) <= 0 ||
        data == NULL) {
        r = acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: PEM export failed in OpenSSL");
    } else {
        char *pem = malloc((size_t)n + 1);
        if (pem == NULL) {
            r = base_fail(BASE_ERR_NOMEM, "ed25519: out of memory");
        } else {
            memcpy(pem, data, (size_t)n);
            pem[n] = '\0';
            *ret_pem = pem;
            *ret_len = (size_t)n;
            r = BASE_OK_RESULT;
        }
    }
    BIO_free(bio);
    return r;
}

base_result acrypto_ed25519_sign(const acrypto_ed25519_key *key, const void *msg, size_t msg_len,
                                 uint8_t ret_sig[ACRYPTO_ED25519_SIG_LEN])
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "ed25519: key is NULL");
    BASE_ENSURE(ret_sig != NULL, BASE_ERR_INVALID, "ed25519: ret_sig is NULL");
    BASE_ENSURE(msg != NULL || msg_len == 0, BASE_ERR_INVALID, "ed25519: message is NULL");
    BASE_ENSURE(msg_len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT,
                "ed25519: message larger than the 64 MiB limit");
    BASE_ENSURE(key->has_private, BASE_ERR_INVALID, "ed25519: cannot sign with a public-only key");
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    if (mctx == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "ed25519: out of memory");
    uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
    size_t sig_len = sizeof sig;
    /* Ed25519 is "pure": no digest is named, the whole message goes to the one-shot EVP_DigestSign. */
    int ok = EVP_DigestSignInit_ex(mctx, NULL, NULL, NULL, NULL, key->pkey, NULL) == 1 &&
             EVP_DigestSign(mctx, sig, &sig_len, msg_len > 0 ? msg : (const void *)"", msg_len) == 1 &&
             sig_len == sizeof sig;
    EVP_MD_CTX_free(mctx);
    if (!ok)
        return acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: signing failed in OpenSSL");
    memcpy(ret_sig, sig, sizeof sig);
    return BASE_OK_RESULT;
}

base_result acrypto_ed25519_verify(const acrypto_ed25519_key *key, const void *msg, size_t msg_len,
                                   const void *sig, size_t sig_len)
{
    BASE_ENSURE(key != NULL, BASE_ERR_INVALID, "ed25519: key is NULL");
    BASE_ENSURE(msg != NULL || msg_len == 0, BASE_ERR_INVALID, "ed25519: message is NULL");
    BASE_ENSURE(sig != NULL || sig_len == 0, BASE_ERR_INVALID, "ed25519: signature is NULL");
    BASE_ENSURE(msg_len <= ACRYPTO_MAX_INPUT, BASE_ERR_LIMIT,
                "ed25519: message larger than the 64 MiB limit");
    if (sig_len != ACRYPTO_ED25519_SIG_LEN)
        return base_fail(BASE_ERR_CRYPTO, ED25519_VERIFY_FAILED);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    if (mctx == NULL)
        return acrypto__ossl_fail(BASE_ERR_NOMEM, "ed25519: out of memory");
    base_result r = BASE_OK_RESULT;
    if (EVP_DigestVerifyInit_ex(mctx, NULL, NULL, NULL, NULL, key->pkey, NULL) != 1)
        r = acrypto__ossl_fail(BASE_ERR_INTERNAL, "ed25519: verification setup failed in OpenSSL");
    else if (EVP_DigestVerify(mctx, sig, sig_len, msg_len > 0 ? msg : (const void *)"", msg_len) != 1)
        r = acrypto__ossl_fail(BASE_ERR_CRYPTO, ED25519_VERIFY_FAILED);
    EVP_MD_CTX_free(mctx);
    return r;
}

acrypto_ed25519_key *acrypto_ed25519_free(acrypto_ed25519_key *key)
{
    if (key == NULL)
        return NULL;
    EVP_PKEY_free(key->pkey); /* OpenSSL wipes the private key as it frees it */
    free(key);
    return NULL;
}

void acrypto_ed25519_freep(acrypto_ed25519_key **key)
{
    if (key != NULL)
        *key = acrypto_ed25519_free(*key);
}
