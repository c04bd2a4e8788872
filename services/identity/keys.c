/* Token signing keys: the master key file, the sealing key, making and opening a sealed signing key
 * (keys.h). Shared by alma-identity (service.c) and alma-admin rotate-signing-key. */
#include "keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MASTER_KEY_FILE_MAX 1024
#define SEAL_AD_MAX         128

base_result idn_master_key_load(const char *path, acrypto_secret **ret_master)
{
    BASE_ENSURE(path && ret_master, BASE_ERR_INVALID, "master key file: missing");
    FILE *f = fopen(path, "r");
    if (!f)
        return base_fail(BASE_ERR_IO, "cannot read the master key file (ALMA_MASTER_KEY_FILE)");
    char text[MASTER_KEY_FILE_MAX + 1];
    size_t n = fread(text, 1, MASTER_KEY_FILE_MAX + 1, f);
    fclose(f);
    base_result r = BASE_OK_RESULT;
    if (n > MASTER_KEY_FILE_MAX)
        r = base_fail(BASE_ERR_INVALID, "the master key file is too long (expected the base64 of 32 bytes)");
    while (base_is_ok(r) && n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        n--;
    uint8_t key[64];
    size_t len = 0;
    if (base_is_ok(r) &&
        (!base_is_ok(acrypto_base64_decode(text, n, key, sizeof key, &len)) || len != IDN_MASTER_KEY_LEN))
        r = base_fail(BASE_ERR_INVALID, "the master key file must hold the base64 of exactly 32 bytes");
    if (base_is_ok(r))
        r = acrypto_secret_from_bytes(key, IDN_MASTER_KEY_LEN, ret_master);
    acrypto_wipe(key, sizeof key);
    acrypto_wipe(text, sizeof text);
    return r;
}

base_result idn_derive_key(const acrypto_secret *master, const char *info, acrypto_secret **ret_key)
{
    return acrypto_hkdf_sha256_secret(master, NULL, 0, info, strlen(info), 32, ret_key);
}

static base_result seal_ad(const char *kid, char out[SEAL_AD_MAX])
{
    int n = snprintf(out, SEAL_AD_MAX, IDN_SIGNING_AD_PREFIX "%s", kid);
    BASE_ENSURE(n > 0 && n < SEAL_AD_MAX, BASE_ERR_INVALID, "signing key id too long");
    return BASE_OK_RESULT;
}

base_result idn_signing_key_new(const acrypto_secret *seal_key, acrypto_ed25519_key **ret_key,
                                char ret_kid[AUTHZ_KID_BUF], uint8_t **ret_sealed, size_t *ret_sealed_len,
                                uint8_t ret_public[ACRYPTO_ED25519_PUBLIC_LEN])
{
    acrypto_ed25519_key *key = NULL;
    BASE_GUARD(acrypto_ed25519_generate(&key));
    acrypto_secret *seed = NULL;
    char kid[AUTHZ_KID_BUF], ad[SEAL_AD_MAX];
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    base_result r = authz_kid_for_key(key, kid);
    if (base_is_ok(r))
        r = acrypto_ed25519_public_raw(key, pub);
    if (base_is_ok(r))
        r = acrypto_ed25519_private_seed(key, &seed);
    if (base_is_ok(r))
        r = seal_ad(kid, ad);
    if (base_is_ok(r))
        r = acrypto_gcm_seal_alloc(seal_key, ad, strlen(ad), acrypto_secret_bytes(seed),
                                   acrypto_secret_len(seed), &sealed, &sealed_len);
    acrypto_secret_free(seed);
    if (!base_is_ok(r)) {
        acrypto_ed25519_free(key);
        return r;
    }
    *ret_key = key;
    memcpy(ret_kid, kid, AUTHZ_KID_BUF);
    memcpy(ret_public, pub, sizeof pub);
    *ret_sealed = sealed;
    *ret_sealed_len = sealed_len;
    return BASE_OK_RESULT;
}

base_result idn_signing_key_open(const acrypto_secret *seal_key, const char *kid, const uint8_t *sealed,
                                 size_t sealed_len, acrypto_ed25519_key **ret_key)
{
    char ad[SEAL_AD_MAX];
    BASE_GUARD(seal_ad(kid, ad));
    acrypto_secret *seed = NULL;
    BASE_GUARD(acrypto_gcm_open_secret(seal_key, ad, strlen(ad), sealed, sealed_len, &seed));
    base_result r = acrypto_ed25519_from_seed(seed, ret_key);
    acrypto_secret_free(seed);
    return r;
}
