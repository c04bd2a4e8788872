/* Alma crypto helpers: the one home of OpenSSL's libcrypto in common/ (OpenSSL 3 EVP only).
 *
 * Callers never include OpenSSL: key objects are opaque and every buffer is plain bytes.
 *
 * Conventions (common/base/result.h):
 *   - every fallible function returns base_result and is BASE_MUST_USE;
 *   - ret_* output parameters (pointers, lengths, fixed-size arrays) are written only on success;
 *   - a caller-provided variable-size output buffer (`out`, `out_cap`) is zeroed on failure, so no partial
 *     plaintext, key or digest is ever released;
 *   - messages (base_error_message()) name the operation and the limit, never key material or data;
 *   - BASE_ERR_CRYPTO means "did not verify / did not decrypt" and never says why in more detail;
 *     BASE_ERR_INVALID is a caller bug (bad key length, NULL buffer); BASE_ERR_LIMIT a size limit;
 *   - OpenSSL's per-thread error queue is cleared after any OpenSSL failure, so it cannot leak into
 *     unrelated later calls;
 *   - destructors accept NULL and return NULL (`k = acrypto_ed25519_free(k);`); each type also has a
 *     *_freep() for BASE_CLEANUP.
 *
 * All functions are thread-safe; a key object may be shared between threads for sign/verify, a SHA-256
 * context may not. Pointers with a zero length may be NULL. */
#ifndef ALMA_CRYPTO_H
#define ALMA_CRYPTO_H

#include "base/result.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest message, plaintext, associated data or encoder input any function accepts (BASE_ERR_LIMIT above).
 * Large enough for any record the suite stores, small enough that lengths never overflow an int. */
#define ACRYPTO_MAX_INPUT ((size_t)64 * 1024 * 1024)

/* ---------------------------------------------------------------------------------------------------------
 * Secrets: key material in a dedicated heap buffer, wiped (OPENSSL_cleanse) when freed.
 * The bytes are always followed by one NUL byte that is not counted in the length, so a text secret (a PEM
 * private key) can be read as a C string. Maximum length ACRYPTO_MAX_INPUT. */
typedef struct acrypto_secret acrypto_secret;

/* A zero-filled secret of `len` bytes (len may be 0), to be filled through acrypto_secret_bytes_mut(). */
BASE_MUST_USE base_result acrypto_secret_new(size_t len, acrypto_secret **ret_secret);
/* A secret holding a copy of `bytes`. The caller still owns (and should wipe) its own copy. */
BASE_MUST_USE base_result acrypto_secret_from_bytes(const void *bytes, size_t len,
                                                    acrypto_secret **ret_secret);
/* A secret of `len` bytes from the CSPRNG: a fresh data key is acrypto_secret_random(32, &key). */
BASE_MUST_USE base_result acrypto_secret_random(size_t len, acrypto_secret **ret_secret);
/* Wipe and free; accepts NULL; returns NULL. */
acrypto_secret *acrypto_secret_free(acrypto_secret *secret);
void acrypto_secret_freep(acrypto_secret **secret);

const uint8_t *acrypto_secret_bytes(const acrypto_secret *secret);
uint8_t *acrypto_secret_bytes_mut(acrypto_secret *secret);
size_t acrypto_secret_len(const acrypto_secret *secret);

/* ---------------------------------------------------------------------------------------------------------
 * Randomness, comparison, wiping. */

/* Fill buf with n bytes from OpenSSL's CSPRNG (RAND_bytes). n <= ACRYPTO_MAX_INPUT. buf is zeroed on failure.
 */
BASE_MUST_USE base_result acrypto_random(void *buf, size_t n);
/* Constant-time equality of two n-byte buffers (CRYPTO_memcmp): use it for MACs, tokens, anything secret. */
bool acrypto_equal(const void *a, const void *b, size_t n);
/* Zero n bytes in a way the compiler cannot remove (OPENSSL_cleanse). Accepts NULL. */
void acrypto_wipe(void *p, size_t n);

/* ---------------------------------------------------------------------------------------------------------
 * AES-256-GCM with associated data.
 *
 * Sealed layout (one buffer):
 *
 *     offset 0            12                     12 + plaintext_len
 *            | nonce (12) | ciphertext (plaintext_len) | tag (16) |
 *
 * so sealed_len = plaintext_len + ACRYPTO_GCM_OVERHEAD. The nonce is 96 random bits drawn inside seal for
 * every call; NIST SP 800-38D then allows at most 2^32 seals under one key, which is why the suite uses a
 * fresh data key per record. The associated data (tenant, record id, version, ...) is authenticated but not
 * stored: open needs exactly the same bytes. Plaintext and AD are each at most ACRYPTO_MAX_INPUT. */
#define ACRYPTO_AES256_KEY_LEN 32
#define ACRYPTO_GCM_NONCE_LEN  12
#define ACRYPTO_GCM_TAG_LEN    16
#define ACRYPTO_GCM_OVERHEAD   28 /* ACRYPTO_GCM_NONCE_LEN + ACRYPTO_GCM_TAG_LEN */

/* Encrypt into out (out_cap >= plaintext_len + ACRYPTO_GCM_OVERHEAD; out must not overlap the inputs).
 * ret_sealed_len = plaintext_len + ACRYPTO_GCM_OVERHEAD. */
BASE_MUST_USE base_result acrypto_gcm_seal(const acrypto_secret *key, const void *ad, size_t ad_len,
                                           const void *plaintext, size_t plaintext_len, void *out,
                                           size_t out_cap, size_t *ret_sealed_len);
/* The same into a new malloc'd buffer the caller free()s (ciphertext is not secret). */
BASE_MUST_USE base_result acrypto_gcm_seal_alloc(const acrypto_secret *key, const void *ad, size_t ad_len,
                                                 const void *plaintext, size_t plaintext_len,
                                                 uint8_t **ret_sealed, size_t *ret_sealed_len);
/* Verify and decrypt `sealed` into out (out_cap >= sealed_len - ACRYPTO_GCM_OVERHEAD; no overlap).
 * A wrong key, a changed nonce / ciphertext / tag / AD, or a truncated buffer all give BASE_ERR_CRYPTO with
 * the same message; on any failure all out_cap bytes of out are zeroed. */
BASE_MUST_USE base_result acrypto_gcm_open(const acrypto_secret *key, const void *ad, size_t ad_len,
                                           const void *sealed, size_t sealed_len, void *out, size_t out_cap,
                                           size_t *ret_plaintext_len);
/* The same into a new secret (wiped when freed): for unwrapping data keys and for PHI plaintext. */
BASE_MUST_USE base_result acrypto_gcm_open_secret(const acrypto_secret *key, const void *ad, size_t ad_len,
                                                  const void *sealed, size_t sealed_len,
                                                  acrypto_secret **ret_plaintext);

/* ---------------------------------------------------------------------------------------------------------
 * HKDF-SHA256 (RFC 5869, extract then expand). */
#define ACRYPTO_HKDF_MAX_OUT  (255 * 32) /* RFC 5869: 255 * HashLen */
#define ACRYPTO_HKDF_MAX_INFO 1024       /* OpenSSL 3.0 caps HKDF info at 1024 bytes */

/* Derive out_len (1..ACRYPTO_HKDF_MAX_OUT) bytes from ikm (non-empty). Salt may be empty (RFC 5869 then uses
 * HashLen zero bytes); info binds the output to its purpose ("alma tenant-key v1"). out is zeroed on failure.
 */
BASE_MUST_USE base_result acrypto_hkdf_sha256(const acrypto_secret *ikm, const void *salt, size_t salt_len,
                                              const void *info, size_t info_len, void *out, size_t out_len);
/* The same into a new secret of out_len bytes: derive a key without it touching unwiped memory. */
BASE_MUST_USE base_result acrypto_hkdf_sha256_secret(const acrypto_secret *ikm, const void *salt,
                                                     size_t salt_len, const void *info, size_t info_len,
                                                     size_t out_len, acrypto_secret **ret_key);

/* ---------------------------------------------------------------------------------------------------------
 * HMAC-SHA256 (RFC 2104). Keys must be non-empty. */
#define ACRYPTO_HMAC_SHA256_LEN 32

BASE_MUST_USE base_result acrypto_hmac_sha256(const acrypto_secret *key, const void *msg, size_t msg_len,
                                              uint8_t ret_mac[ACRYPTO_HMAC_SHA256_LEN]);
/* BASE_OK when mac (exactly ACRYPTO_HMAC_SHA256_LEN bytes; truncated MACs are refused) matches, compared in
 * constant time; BASE_ERR_CRYPTO otherwise. */
BASE_MUST_USE base_result acrypto_hmac_sha256_verify(const acrypto_secret *key, const void *msg,
                                                     size_t msg_len, const void *mac, size_t mac_len);

/* ---------------------------------------------------------------------------------------------------------
 * SHA-256. */
#define ACRYPTO_SHA256_LEN 32

BASE_MUST_USE base_result acrypto_sha256(const void *data, size_t len,
                                         uint8_t ret_digest[ACRYPTO_SHA256_LEN]);

/* Incremental hashing. A context is created ready to hash; after final() call init() to reuse it (cheaper
 * than a new context per Merkle node). update()/final() on a finished context give BASE_ERR_CONFLICT. */
typedef struct acrypto_sha256_ctx acrypto_sha256_ctx;

BASE_MUST_USE base_result acrypto_sha256_ctx_new(acrypto_sha256_ctx **ret_ctx);
BASE_MUST_USE base_result acrypto_sha256_init(acrypto_sha256_ctx *ctx);
BASE_MUST_USE base_result acrypto_sha256_update(acrypto_sha256_ctx *ctx, const void *data, size_t len);
BASE_MUST_USE base_result acrypto_sha256_final(acrypto_sha256_ctx *ctx,
                                               uint8_t ret_digest[ACRYPTO_SHA256_LEN]);
acrypto_sha256_ctx *acrypto_sha256_ctx_free(acrypto_sha256_ctx *ctx);
void acrypto_sha256_ctx_freep(acrypto_sha256_ctx **ctx);

/* ---------------------------------------------------------------------------------------------------------
 * Ed25519 (RFC 8032, pure). A key holds a public key and, optionally, the private part. The private key is
 * the 32-byte seed of RFC 8032 (what "SECRET KEY" means in its test vectors). PEM is PKCS#8 "PRIVATE KEY" /
 * SubjectPublicKeyInfo "PUBLIC KEY" (RFC 8410); encrypted PEM is refused, keys of other types are refused. */
#define ACRYPTO_ED25519_SEED_LEN   32
#define ACRYPTO_ED25519_PUBLIC_LEN 32
#define ACRYPTO_ED25519_SIG_LEN    64
#define ACRYPTO_PEM_FILE_MAX       (64 * 1024) /* a key file larger than this is refused (BASE_ERR_LIMIT) */

typedef struct acrypto_ed25519_key acrypto_ed25519_key;

/* A fresh key pair from the CSPRNG. Export it with acrypto_ed25519_private_seed() and _public_raw(). */
BASE_MUST_USE base_result acrypto_ed25519_generate(acrypto_ed25519_key **ret_key);
BASE_MUST_USE base_result acrypto_ed25519_from_seed(const acrypto_secret *seed,
                                                    acrypto_ed25519_key **ret_key);
BASE_MUST_USE base_result acrypto_ed25519_from_public(const void *pub, size_t pub_len,
                                                      acrypto_ed25519_key **ret_key);
BASE_MUST_USE base_result acrypto_ed25519_private_from_pem(const char *pem, size_t pem_len,
                                                           acrypto_ed25519_key **ret_key);
BASE_MUST_USE base_result acrypto_ed25519_private_from_pem_file(const char *path,
                                                                acrypto_ed25519_key **ret_key);
/* A public-only key from a "PUBLIC KEY" PEM. */
BASE_MUST_USE base_result acrypto_ed25519_public_from_pem(const char *pem, size_t pem_len,
                                                          acrypto_ed25519_key **ret_key);
BASE_MUST_USE base_result acrypto_ed25519_public_from_pem_file(const char *path,
                                                               acrypto_ed25519_key **ret_key);

bool acrypto_ed25519_has_private(const acrypto_ed25519_key *key);
/* The 32-byte seed (BASE_ERR_INVALID for a public-only key). */
BASE_MUST_USE base_result acrypto_ed25519_private_seed(const acrypto_ed25519_key *key,
                                                       acrypto_secret **ret_seed);
BASE_MUST_USE base_result acrypto_ed25519_public_raw(const acrypto_ed25519_key *key,
                                                     uint8_t ret_pub[ACRYPTO_ED25519_PUBLIC_LEN]);
/* PKCS#8 PEM text of the private key, unencrypted, in a secret (NUL-terminated; length without the NUL). */
BASE_MUST_USE base_result acrypto_ed25519_private_to_pem(const acrypto_ed25519_key *key,
                                                         acrypto_secret **ret_pem);
/* "PUBLIC KEY" PEM text in a new malloc'd NUL-terminated string the caller free()s. */
BASE_MUST_USE base_result acrypto_ed25519_public_to_pem(const acrypto_ed25519_key *key, char **ret_pem,
                                                        size_t *ret_len);

/* Sign msg (<= ACRYPTO_MAX_INPUT bytes); BASE_ERR_INVALID for a public-only key. Ed25519 is deterministic. */
BASE_MUST_USE base_result acrypto_ed25519_sign(const acrypto_ed25519_key *key, const void *msg,
                                               size_t msg_len, uint8_t ret_sig[ACRYPTO_ED25519_SIG_LEN]);
/* BASE_OK if sig is a valid signature of msg by key; BASE_ERR_CRYPTO otherwise (wrong length included). */
BASE_MUST_USE base_result acrypto_ed25519_verify(const acrypto_ed25519_key *key, const void *msg,
                                                 size_t msg_len, const void *sig, size_t sig_len);

acrypto_ed25519_key *acrypto_ed25519_free(acrypto_ed25519_key *key);
void acrypto_ed25519_freep(acrypto_ed25519_key **key);

/* ---------------------------------------------------------------------------------------------------------
 * Text encodings (RFC 4648): base64 with padding, base64url without padding (JWT, signed notes), lowercase
 * hex. Encoders write a NUL-terminated string; ret_len excludes the NUL. Decoders are strict: any character
 * outside the alphabet (whitespace, NUL, the other alphabet's '+/' or '-_'), an impossible length, misplaced
 * or (for base64url) any padding, or non-zero unused trailing bits give BASE_ERR_INVALID. Hex decoding takes
 * either case. Character handling is branch-free, so decoding a key does not leak it through timing.
 * Inputs are at most ACRYPTO_MAX_INPUT bytes. On failure, out is zeroed. */

/* Buffer sizes to pass as out_cap, the NUL included (for n <= ACRYPTO_MAX_INPUT). */
size_t acrypto_base64_encode_size(size_t n);
size_t acrypto_base64url_encode_size(size_t n);
size_t acrypto_hex_encode_size(size_t n);
/* An upper bound of the decoded length of an in_len-character input (either base64 flavour; hex). */
size_t acrypto_base64_decode_size(size_t in_len);
size_t acrypto_hex_decode_size(size_t in_len);

BASE_MUST_USE base_result acrypto_base64_encode(const void *in, size_t n, char *out, size_t out_cap,
                                                size_t *ret_len);
BASE_MUST_USE base_result acrypto_base64_decode(const char *in, size_t in_len, void *out, size_t out_cap,
                                                size_t *ret_len);
BASE_MUST_USE base_result acrypto_base64url_encode(const void *in, size_t n, char *out, size_t out_cap,
                                                   size_t *ret_len);
BASE_MUST_USE base_result acrypto_base64url_decode(const char *in, size_t in_len, void *out, size_t out_cap,
                                                   size_t *ret_len);
BASE_MUST_USE base_result acrypto_hex_encode(const void *in, size_t n, char *out, size_t out_cap,
                                             size_t *ret_len);
BASE_MUST_USE base_result acrypto_hex_decode(const char *in, size_t in_len, void *out, size_t out_cap,
                                             size_t *ret_len);

#endif
