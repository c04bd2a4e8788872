/* Token signing keys as the store holds them, made and opened the same way by alma-identity (the first key,
 * and every start-up) and alma-admin rotate-signing-key (every later key):
 *
 *   - the master key file: the base64 of 32 random bytes (the service's master-key-file setting);
 *   - the sealing key: HKDF-SHA256 of the master key, info IDN_SIGNING_SEAL_INFO, 32 bytes;
 *   - a signing key: an Ed25519 key under its conventional kid (authz_kid_for_key), whose 32-byte private
 *     seed is sealed with AES-256-GCM under the sealing key, additional data IDN_SIGNING_AD_PREFIX + kid (so
 *     a sealed seed cannot be moved to another kid's row).
 *
 * Not a public interface: linked into alma-identity and alma-admin only. */
#ifndef ALMA_IDENTITY_KEYS_H
#define ALMA_IDENTITY_KEYS_H

#include "authz/authz.h"
#include "base/result.h"
#include "crypto/crypto.h"

#include <stddef.h>
#include <stdint.h>

#define IDN_MASTER_KEY_LEN    32
#define IDN_SIGNING_SEAL_INFO "alma identity signing-key-seal v1"
#define IDN_SIGNING_AD_PREFIX "alma-identity-signing-key|"

/* Read the master key file (base64 of exactly 32 bytes; trailing newlines and spaces ignored).
 * BASE_ERR_IO when the file cannot be read, BASE_ERR_INVALID when it holds anything else. */
BASE_MUST_USE base_result idn_master_key_load(const char *path, acrypto_secret **ret_master);

/* HKDF-SHA256(master, info) -> 32 bytes: the keys identity derives from its master key. */
BASE_MUST_USE base_result idn_derive_key(const acrypto_secret *master, const char *info,
                                         acrypto_secret **ret_key);

/* A new Ed25519 signing key: *ret_key (free with acrypto_ed25519_free), its kid, its raw public key and its
 * seed sealed under seal_key (*ret_sealed malloc'd, *ret_sealed_len bytes). Nothing is written on failure. */
BASE_MUST_USE base_result idn_signing_key_new(const acrypto_secret *seal_key, acrypto_ed25519_key **ret_key,
                                              char ret_kid[AUTHZ_KID_BUF], uint8_t **ret_sealed,
                                              size_t *ret_sealed_len,
                                              uint8_t ret_public[ACRYPTO_ED25519_PUBLIC_LEN]);

/* Open a sealed seed stored for `kid`: the signing key. BASE_ERR_CRYPTO when the seal key, the kid or the
 * bytes are not the ones it was sealed with. */
BASE_MUST_USE base_result idn_signing_key_open(const acrypto_secret *seal_key, const char *kid,
                                               const uint8_t *sealed, size_t sealed_len,
                                               acrypto_ed25519_key **ret_key);

#endif
