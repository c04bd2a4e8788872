/* The master key behind a small key-provider interface (ARCHITECTURE.md, "Crypto"): the vault never holds
 * the master key's bytes outside a provider, and only asks it to wrap and unwrap tenant keys. Providers now:
 *
 *   "file:<path>"  a file holding the base64 (or 64 lowercase/uppercase hex digits) of exactly 32 random
 *                  bytes, trailing whitespace ignored; refused when others may read it or its group
 *                  may write it (mode & 027; group read is how a Kubernetes Secret reaches a non-root
 *                  container through fsGroup: mount it with defaultMode 0440);
 *   "env:<NAME>"   the same text in environment variable NAME (a Secret as env), NAME [A-Z_][A-Z0-9_]*.
 *
 * A KMS or PKCS#11 provider is one more vault_keyprovider_ops (wrap/unwrap over its own API) registered in
 * keyprovider.c. Wrapping is AES-256-GCM with a key HKDF-derived from the master key (info
 * VAULT_KP_WRAP_INFO) and the caller's associated data.
 *
 * The provider id names the master key without revealing it: "<scheme>:" + the first 16 hex digits of
 * HMAC-SHA256(master, "alma vault master-key id v1"). Stored beside every wrapped tenant key, so a vault
 * started with the wrong master key says so (BASE_ERR_CONFLICT "master key does not match the stored keys")
 * instead of failing to decrypt later.
 *
 * Errors never carry key material or file contents: BASE_ERR_INVALID (malformed spec or key text),
 * BASE_ERR_IO (unreadable file, unset variable), BASE_ERR_DENIED (file mode too open), BASE_ERR_CRYPTO
 * (unwrap failed). Thread-safe after open. */
#ifndef ALMA_VAULT_KEYPROVIDER_H
#define ALMA_VAULT_KEYPROVIDER_H

#include "base/result.h"
#include "crypto/crypto.h"

#include <stddef.h>
#include <stdint.h>

#define VAULT_KP_WRAP_INFO "alma vault master-key wrap v1"
#define VAULT_KP_ID_MAX    64

typedef struct vault_keyprovider vault_keyprovider;

typedef struct vault_keyprovider_ops {
    const char *scheme; /* "file", "env", ... */
    base_result (*wrap)(void *state, const void *ad, size_t ad_len, const acrypto_secret *key,
                        uint8_t **ret_wrapped, size_t *ret_len);
    base_result (*unwrap)(void *state, const void *ad, size_t ad_len, const uint8_t *wrapped, size_t len,
                          acrypto_secret **ret_key);
    void (*free)(void *state);
} vault_keyprovider_ops;

BASE_MUST_USE base_result vault_keyprovider_open(const char *spec, vault_keyprovider **ret);
/* A provider over a master key already in memory (tests, tools): id scheme "mem". */
BASE_MUST_USE base_result vault_keyprovider_from_secret(const acrypto_secret *master,
                                                        vault_keyprovider **ret);
const char *vault_keyprovider_id(const vault_keyprovider *p);
/* Wrap a key (1..64 bytes) bound to ad: *ret_wrapped is malloc'd (key_len + ACRYPTO_GCM_OVERHEAD bytes). */
BASE_MUST_USE base_result vault_keyprovider_wrap(vault_keyprovider *p, const void *ad, size_t ad_len,
                                                 const acrypto_secret *key, uint8_t **ret_wrapped,
                                                 size_t *ret_len);
BASE_MUST_USE base_result vault_keyprovider_unwrap(vault_keyprovider *p, const void *ad, size_t ad_len,
                                                   const uint8_t *wrapped, size_t len,
                                                   acrypto_secret **ret_key);
void vault_keyprovider_free(vault_keyprovider *p); /* NULL ok; wipes */

#endif
