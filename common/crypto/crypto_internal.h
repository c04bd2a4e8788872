/* Internal to common/crypto and its tests (libuv-style acrypto__ prefix): not part of the public API, never
 * included by services. No OpenSSL types here, so the tests need no OpenSSL headers either. */
#ifndef ALMA_CRYPTO_INTERNAL_H
#define ALMA_CRYPTO_INTERNAL_H

#include "crypto/crypto.h"

/* Clear OpenSSL's error queue (so a failure cannot leak into an unrelated later call) and fail with msg. */
BASE_MUST_USE base_result acrypto__ossl_fail(base_err err, const char *msg);

/* True when OpenSSL's error queue of this thread is not empty (tests check failures leave it clean). */
bool acrypto__ossl_errors_pending(void);

/* acrypto_gcm_seal() with a caller-chosen nonce, for published test vectors only. Production code must not
 * call this: reusing a nonce under one key breaks GCM completely. */
BASE_MUST_USE base_result acrypto__gcm_seal_with_nonce(const acrypto_secret *key,
                                                       const uint8_t nonce[ACRYPTO_GCM_NONCE_LEN],
                                                       const void *ad, size_t ad_len, const void *plaintext,
                                                       size_t plaintext_len, void *out, size_t out_cap,
                                                       size_t *ret_sealed_len);

/* Do two byte ranges overlap? (Outputs must not alias inputs.) */
bool acrypto__overlaps(const void *a, size_t a_len, const void *b, size_t b_len);

#endif
