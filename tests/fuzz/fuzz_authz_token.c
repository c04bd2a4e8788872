/* libFuzzer target for the parsers of common/authz: whatever the bytes, no out-of-bounds read, no unbounded
 * recursion, no leak, and an accepted token always has well-formed claims. The first byte picks the input:
 *   0: the JOSE header JSON (signed with a fixed key over a valid payload, so the header parser is reached)
 *   1: the claims JSON (signed under a valid header: the claims parser is only reached after the signature)
 *   2: a whole token as received
 *   3: a JWKS text */
#include "authz/authz.h"

#include <stdlib.h>
#include <string.h>

static acrypto_ed25519_key *fuzz_key;
static authz_keyset *fuzz_ks;
static char fuzz_header[128];

static void fuzz_init(void)
{
    char kid[AUTHZ_KID_BUF];
    if (!base_is_ok(acrypto_ed25519_generate(&fuzz_key)) || !base_is_ok(authz_keyset_new(&fuzz_ks)) ||
        !base_is_ok(authz_keyset_add(fuzz_ks, fuzz_key)) || !base_is_ok(authz_kid_for_key(fuzz_key, kid)))
        abort();
    memcpy(fuzz_header, "{\"alg\":\"EdDSA\",\"kid\":\"", 22);
    memcpy(fuzz_header + 22, kid, AUTHZ_KID_LEN);
    memcpy(fuzz_header + 22 + AUTHZ_KID_LEN, "\"}", 3);
}

/* base64url(header) "." base64url(payload) "." base64url(signature by fuzz_key) */
static char *fuzz_sign(const void *header, size_t hlen, const void *payload, size_t plen)
{
    size_t h64 = acrypto_base64url_encode_size(hlen), p64 = acrypto_base64url_encode_size(plen);
    size_t s64 = acrypto_base64url_encode_size(ACRYPTO_ED25519_SIG_LEN);
    char *out = malloc(h64 + p64 + s64);
    size_t n1 = 0, n2 = 0, n3 = 0;
    uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
    if (!out || !base_is_ok(acrypto_base64url_encode(header, hlen, out, h64, &n1)))
        abort();
    out[n1] = '.';
    if (!base_is_ok(acrypto_base64url_encode(payload, plen, out + n1 + 1, p64, &n2)))
        abort();
    out[n1 + 1 + n2] = '.';
    if (!base_is_ok(acrypto_ed25519_sign(fuzz_key, out, n1 + 1 + n2, sig)) ||
        !base_is_ok(acrypto_base64url_encode(sig, sizeof sig, out + n1 + 2 + n2, s64, &n3)))
        abort();
    return out;
}

static void fuzz_verify(const char *token)
{
    authz_claims c;
    if (base_is_ok(authz_token_verify(fuzz_ks, NULL, token, (int64_t)1700000000, &c)) &&
        !authz_claims_well_formed(&c))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_key)
        fuzz_init();
    if (size < 1 || size > 2 * AUTHZ_MAX_TOKEN_LEN)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    static const char valid_claims[] =
        "{\"iss\":\"alma-identity\",\"aud\":\"alma\",\"sub\":\"usr_0123456789abcdef0123456789abcdef\","
        "\"tid\":\"clinic\",\"sid\":\"ses_0123456789abcdef0123456789abcdef\","
        "\"jti\":\"tok_0123456789abcdef0123456789abcdef\",\"iat\":1700000000,\"nbf\":1700000000,"
        "\"exp\":1700000300,\"roles\":[],\"perm\":[\"a.b\"],\"mfa\":true,\"enr\":false}";
    char *token = NULL;
    switch (data[0] % 4) {
    case 0:
        token = fuzz_sign(in, n, valid_claims, strlen(valid_claims));
        fuzz_verify(token);
        break;
    case 1:
        token = fuzz_sign(fuzz_header, strlen(fuzz_header), in, n);
        fuzz_verify(token);
        break;
    case 2:
        token = malloc(n + 1);
        if (!token)
            abort();
        memcpy(token, in, n);
        token[n] = '\0';
        fuzz_verify(token);
        break;
    default: {
        authz_keyset *ks = NULL;
        if (base_is_ok(authz_keyset_from_jwks((const char *)in, n, &ks)) && authz_keyset_count(ks) == 0)
            abort();
        authz_keyset_free(ks);
        break;
    }
    }
    free(token);
    return 0;
}
