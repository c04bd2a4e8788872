/* Key sets and JWKS (RFC 7517) of OKP Ed25519 keys (RFC 8037), and the kid convention:
 *
 *     kid = base64url(SHA-256(raw 32-byte public key)[0..8])      (11 characters, no padding)
 *
 * so a kid names exactly one key, every service computes the same kid from the same key, and a JWKS whose
 * kid does not match its key is refused. The JWKS text is read with jansson (duplicate names refused) and
 * bounded by AUTHZ_MAX_JWKS_LEN; any key we do not understand refuses the whole set, so a service keeps the
 * keys it had rather than running with part of a set it cannot check. */
#include "internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

base_result authz_kid_for_key(const acrypto_ed25519_key *key, char ret_kid[AUTHZ_KID_BUF])
{
    BASE_ENSURE(key && ret_kid, BASE_ERR_INVALID, "kid: missing argument");
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    uint8_t digest[ACRYPTO_SHA256_LEN];
    BASE_GUARD(acrypto_ed25519_public_raw(key, pub));
    BASE_GUARD(acrypto_sha256(pub, sizeof pub, digest));
    char kid[AUTHZ_KID_BUF];
    size_t n = 0;
    BASE_GUARD(acrypto_base64url_encode(digest, 8, kid, sizeof kid, &n));
    BASE_ENSURE(n == AUTHZ_KID_LEN, BASE_ERR_INTERNAL, "kid: unexpected length");
    memcpy(ret_kid, kid, sizeof kid);
    return BASE_OK_RESULT;
}

base_result authz_keyset_new(authz_keyset **ret_keyset)
{
    BASE_ENSURE(ret_keyset, BASE_ERR_INVALID, "keyset: missing argument");
    authz_keyset *ks = calloc(1, sizeof *ks);
    if (!ks)
        return base_fail(BASE_ERR_NOMEM, "keyset: out of memory");
    *ret_keyset = ks;
    return BASE_OK_RESULT;
}

void authz_keyset_free(authz_keyset *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->count; i++)
        ks->keys[i].key = acrypto_ed25519_free(ks->keys[i].key);
    free(ks);
}

size_t authz_keyset_count(const authz_keyset *ks)
{
    return ks ? ks->count : 0;
}

const acrypto_ed25519_key *authz__keyset_find(const authz_keyset *ks, const char *kid, size_t kid_len)
{
    if (kid_len != AUTHZ_KID_LEN)
        return NULL;
    for (size_t i = 0; i < ks->count; i++) {
        if (memcmp(ks->keys[i].kid, kid, AUTHZ_KID_LEN) == 0)
            return ks->keys[i].key;
    }
    return NULL;
}

bool authz_keyset_has(const authz_keyset *ks, const char *kid)
{
    return ks && kid && authz__keyset_find(ks, kid, strnlen(kid, AUTHZ_KID_BUF)) != NULL;
}

/* Add a public key from its raw bytes; the kid is derived. */
static base_result keyset_add_raw(authz_keyset *ks, const uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN])
{
    if (ks->count == AUTHZ_MAX_KEYS)
        return base_fail(BASE_ERR_LIMIT, "keyset: more than %d keys", AUTHZ_MAX_KEYS);
    acrypto_ed25519_key *key = NULL;
    BASE_GUARD(acrypto_ed25519_from_public(pub, ACRYPTO_ED25519_PUBLIC_LEN, &key));
    char kid[AUTHZ_KID_BUF];
    base_result r = authz_kid_for_key(key, kid);
    if (base_is_ok(r) && authz__keyset_find(ks, kid, AUTHZ_KID_LEN))
        r = base_fail(BASE_ERR_EXISTS, "keyset: key already present");
    if (!base_is_ok(r)) {
        acrypto_ed25519_free(key);
        return r;
    }
    memcpy(ks->keys[ks->count].kid, kid, sizeof kid);
    ks->keys[ks->count].key = key;
    ks->count++;
    return BASE_OK_RESULT;
}

base_result authz_keyset_add(authz_keyset *ks, const acrypto_ed25519_key *key)
{
    BASE_ENSURE(ks && key, BASE_ERR_INVALID, "keyset: missing argument");
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    BASE_GUARD(acrypto_ed25519_public_raw(key, pub));
    return keyset_add_raw(ks, pub);
}

/* A string member, or NULL when absent; *ret_bad when present but not a string. */
static const char *member_string(json_t *obj, const char *name, bool *ret_bad)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return NULL;
    if (!json_is_string(v)) {
        *ret_bad = true;
        return NULL;
    }
    return json_string_value(v);
}

static base_result parse_jwk(authz_keyset *ks, json_t *jwk)
{
    BASE_ENSURE(json_is_object(jwk), BASE_ERR_INVALID, "jwks: a key is not an object");
    bool bad = false;
    const char *kty = member_string(jwk, "kty", &bad);
    const char *crv = member_string(jwk, "crv", &bad);
    const char *x = member_string(jwk, "x", &bad);
    const char *kid = member_string(jwk, "kid", &bad);
    const char *use = member_string(jwk, "use", &bad);
    const char *alg = member_string(jwk, "alg", &bad);
    BASE_ENSURE(!bad, BASE_ERR_INVALID, "jwks: a key member is not a string");
    BASE_ENSURE(kty && strcmp(kty, "OKP") == 0, BASE_ERR_INVALID, "jwks: key type is not OKP");
    BASE_ENSURE(crv && strcmp(crv, "Ed25519") == 0, BASE_ERR_INVALID, "jwks: curve is not Ed25519");
    BASE_ENSURE(json_object_get(jwk, "d") == NULL, BASE_ERR_INVALID, "jwks: a key carries private material");
    BASE_ENSURE(!use || strcmp(use, "sig") == 0, BASE_ERR_INVALID, "jwks: key use is not sig");
    BASE_ENSURE(!alg || strcmp(alg, "EdDSA") == 0, BASE_ERR_INVALID, "jwks: key alg is not EdDSA");
    BASE_ENSURE(x && kid, BASE_ERR_INVALID, "jwks: key without x or kid");

    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    size_t n = 0;
    size_t xlen = strlen(x);
    if (xlen != 43 || !base_is_ok(acrypto_base64url_decode(x, xlen, pub, sizeof pub, &n)) || n != sizeof pub)
        return base_fail(BASE_ERR_INVALID, "jwks: x is not the base64url of 32 bytes");

    size_t before = ks->count;
    base_result r = keyset_add_raw(ks, pub);
    if (r.err == BASE_ERR_EXISTS)
        return base_fail(BASE_ERR_INVALID, "jwks: duplicate key");
    BASE_GUARD(r);
    if (strlen(kid) != AUTHZ_KID_LEN || memcmp(ks->keys[before].kid, kid, AUTHZ_KID_LEN) != 0) {
        ks->count = before;
        ks->keys[before].key = acrypto_ed25519_free(ks->keys[before].key);
        return base_fail(BASE_ERR_INVALID, "jwks: kid does not follow the key-id convention");
    }
    return BASE_OK_RESULT;
}

base_result authz_keyset_from_jwks(const char *jwks, size_t len, authz_keyset **ret_keyset)
{
    BASE_ENSURE(jwks && ret_keyset, BASE_ERR_INVALID, "jwks: missing argument");
    if (len > AUTHZ_MAX_JWKS_LEN)
        return base_fail(BASE_ERR_LIMIT, "jwks: longer than %d bytes", AUTHZ_MAX_JWKS_LEN);
    json_error_t jerr;
    json_t *root = json_loadb(jwks, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return base_fail(BASE_ERR_INVALID, "jwks: not valid JSON");
    authz_keyset *ks = NULL;
    base_result r = BASE_OK_RESULT;
    json_t *keys = json_is_object(root) ? json_object_get(root, "keys") : NULL;
    if (!json_is_array(keys) || json_array_size(keys) == 0) {
        r = base_fail(BASE_ERR_INVALID, "jwks: no keys array");
        goto out;
    }
    if (json_array_size(keys) > AUTHZ_MAX_KEYS) {
        r = base_fail(BASE_ERR_LIMIT, "jwks: more than %d keys", AUTHZ_MAX_KEYS);
        goto out;
    }
    BASE_GUARD_GOTO(r, authz_keyset_new(&ks), out);
    for (size_t i = 0; i < json_array_size(keys); i++)
        BASE_GUARD_GOTO(r, parse_jwk(ks, json_array_get(keys, i)), out);
    *ret_keyset = ks;
    ks = NULL;
out:
    authz_keyset_free(ks);
    json_decref(root);
    return r;
}

base_result authz_keyset_to_jwks(const authz_keyset *ks, char **ret_jwks)
{
    BASE_ENSURE(ks && ret_jwks, BASE_ERR_INVALID, "jwks: missing argument");
    base_result r = BASE_OK_RESULT;
    char *text = NULL;
    json_t *root = json_object();
    json_t *keys = json_array();
    if (!root || !keys || json_object_set(root, "keys", keys) != 0) {
        r = base_fail(BASE_ERR_NOMEM, "jwks: out of memory");
        goto out;
    }
    for (size_t i = 0; i < ks->count; i++) {
        uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
        char x[64];
        size_t n = 0;
        BASE_GUARD_GOTO(r, acrypto_ed25519_public_raw(ks->keys[i].key, pub), out);
        BASE_GUARD_GOTO(r, acrypto_base64url_encode(pub, sizeof pub, x, sizeof x, &n), out);
        json_t *k = json_object();
        /* The _new setters take ownership even when they fail. */
        if (!k || json_array_append_new(keys, k) != 0 ||
            json_object_set_new(k, "kty", json_string("OKP")) != 0 ||
            json_object_set_new(k, "crv", json_string("Ed25519")) != 0 ||
            json_object_set_new(k, "x", json_string(x)) != 0 ||
            json_object_set_new(k, "kid", json_string(ks->keys[i].kid)) != 0 ||
            json_object_set_new(k, "use", json_string("sig")) != 0 ||
            json_object_set_new(k, "alg", json_string("EdDSA")) != 0) {
            r = base_fail(BASE_ERR_NOMEM, "jwks: out of memory");
            goto out;
        }
    }
    char *dumped = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!dumped) {
        r = base_fail(BASE_ERR_NOMEM, "jwks: out of memory");
        goto out;
    }
    /* Copy into our own allocation, so the caller's free() never depends on jansson's allocator. */
    size_t len = strlen(dumped);
    text = malloc(len + 1);
    if (text)
        memcpy(text, dumped, len + 1);
    free(dumped);
    if (!text) {
        r = base_fail(BASE_ERR_NOMEM, "jwks: out of memory");
        goto out;
    }
    *ret_jwks = text;
out:
    json_decref(keys);
    json_decref(root);
    return r;
}
