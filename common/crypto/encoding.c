/* base64 (padded), base64url (unpadded) and hex (RFC 4648), strict, with branch-free character mapping so
 * encoding or decoding key material does not leak it through table lookups or data-dependent branches.
 * Lengths and the position of padding are public and may be branched on. */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#include <stdint.h>
#include <string.h>

/* Masks for byte-sized values x, y (0..255): 0xff when the relation holds, 0 otherwise. */
static unsigned ct_lt(unsigned x, unsigned y)
{
    return ((x - y) >> 8) & 0xff;
}

static unsigned ct_ge(unsigned x, unsigned y)
{
    return ct_lt(x, y) ^ 0xff;
}

static unsigned ct_le(unsigned x, unsigned y)
{
    return ct_lt(y, x) ^ 0xff;
}

static unsigned ct_eq(unsigned x, unsigned y)
{
    return ct_lt(x ^ y, 1);
}

static unsigned ct_nonzero(unsigned x)
{
    return ((0u - x) >> 8) & 0xff;
}

typedef struct b64_alphabet {
    const char *name; /* for messages */
    unsigned c62, c63;
    bool pad;
} b64_alphabet;

static const b64_alphabet b64_std = {"base64", '+', '/', true};
static const b64_alphabet b64_url = {"base64url", '-', '_', false};

static char b64_char(const b64_alphabet *a, unsigned v)
{
    unsigned c = (ct_lt(v, 26) & (v + 'A')) | (ct_ge(v, 26) & ct_lt(v, 52) & (v - 26 + 'a')) |
                 (ct_ge(v, 52) & ct_lt(v, 62) & (v - 52 + '0')) | (ct_eq(v, 62) & a->c62) |
                 (ct_eq(v, 63) & a->c63);
    return (char)c;
}

/* The 6-bit value of character c; ORs 0xff into *invalid when c is not in the alphabet. */
static unsigned b64_value(const b64_alphabet *a, unsigned char ch, unsigned *invalid)
{
    unsigned c = ch;
    unsigned upper = ct_ge(c, 'A') & ct_le(c, 'Z');
    unsigned lower = ct_ge(c, 'a') & ct_le(c, 'z');
    unsigned digit = ct_ge(c, '0') & ct_le(c, '9');
    unsigned is62 = ct_eq(c, a->c62);
    unsigned is63 = ct_eq(c, a->c63);
    unsigned v =
        (upper & (c - 'A')) | (lower & (c - 'a' + 26)) | (digit & (c - '0' + 52)) | (is62 & 62) | (is63 & 63);
    *invalid |= (upper | lower | digit | is62 | is63) ^ 0xff;
    return v & 0x3f;
}

size_t acrypto_base64_encode_size(size_t n)
{
    return (n + 2) / 3 * 4 + 1;
}

size_t acrypto_base64url_encode_size(size_t n)
{
    size_t rem = n % 3;
    return n / 3 * 4 + (rem == 0 ? 0 : rem + 1) + 1;
}

size_t acrypto_hex_encode_size(size_t n)
{
    return 2 * n + 1;
}

size_t acrypto_base64_decode_size(size_t in_len)
{
    return (in_len + 3) / 4 * 3;
}

size_t acrypto_hex_decode_size(size_t in_len)
{
    return in_len / 2;
}

static base_result encode_check(const char *name, const void *in, size_t n, const char *out, size_t out_cap,
                                size_t need, const size_t *ret_len)
{
    BASE_ENSURE(in != NULL || n == 0, BASE_ERR_INVALID, "encode: input is NULL");
    BASE_ENSURE(out != NULL && ret_len != NULL, BASE_ERR_INVALID, "encode: out or ret_len is NULL");
    if (n > ACRYPTO_MAX_INPUT)
        return base_fail(BASE_ERR_LIMIT, "%s encode: input larger than the 64 MiB limit", name);
    if (out_cap < need)
        return base_fail(BASE_ERR_INVALID, "%s encode: output buffer too small", name);
    return BASE_OK_RESULT;
}

static base_result b64_encode(const b64_alphabet *a, const void *in, size_t n, char *out, size_t out_cap,
                              size_t *ret_len)
{
    size_t need = n <= ACRYPTO_MAX_INPUT
                      ? (a->pad ? acrypto_base64_encode_size(n) : acrypto_base64url_encode_size(n))
                      : 0;
    base_result r = encode_check(a->name, in, n, out, out_cap, need, ret_len);
    if (!base_is_ok(r)) {
        acrypto_wipe(out, out_cap);
        return r;
    }
    const uint8_t *p = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned b0 = p[i], b1 = p[i + 1], b2 = p[i + 2];
        out[o++] = b64_char(a, b0 >> 2);
        out[o++] = b64_char(a, ((b0 & 0x03) << 4) | (b1 >> 4));
        out[o++] = b64_char(a, ((b1 & 0x0f) << 2) | (b2 >> 6));
        out[o++] = b64_char(a, b2 & 0x3f);
    }
    if (n - i == 1) {
        unsigned b0 = p[i];
        out[o++] = b64_char(a, b0 >> 2);
        out[o++] = b64_char(a, (b0 & 0x03) << 4);
        if (a->pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        unsigned b0 = p[i], b1 = p[i + 1];
        out[o++] = b64_char(a, b0 >> 2);
        out[o++] = b64_char(a, ((b0 & 0x03) << 4) | (b1 >> 4));
        out[o++] = b64_char(a, (b1 & 0x0f) << 2);
        if (a->pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    *ret_len = o;
    return BASE_OK_RESULT;
}

static base_result decode_check(const char *name, const char *in, size_t in_len, const void *out,
                                const size_t *ret_len)
{
    BASE_ENSURE(in != NULL || in_len == 0, BASE_ERR_INVALID, "decode: input is NULL");
    BASE_ENSURE(ret_len != NULL, BASE_ERR_INVALID, "decode: ret_len is NULL");
    if (in_len > ACRYPTO_MAX_INPUT)
        return base_fail(BASE_ERR_LIMIT, "%s decode: input larger than the 64 MiB limit", name);
    return BASE_OK_RESULT;
}

static base_result b64_decode_impl(const b64_alphabet *a, const char *in, size_t in_len, uint8_t *out,
                                   size_t out_cap, size_t *ret_len)
{
    BASE_GUARD(decode_check(a->name, in, in_len, out, ret_len));
    size_t n = in_len; /* characters that carry data */
    if (a->pad) {
        if (in_len % 4 != 0)
            return base_fail(BASE_ERR_INVALID, "%s decode: length is not a multiple of 4", a->name);
        /* At most two '=' and only at the end; a '=' anywhere else fails as a bad character below. */
        if (n > 0 && in[n - 1] == '=')
            n--;
        if (n > 0 && in[n - 1] == '=')
            n--;
    }
    size_t rem = n % 4;
    if (rem == 1)
        return base_fail(BASE_ERR_INVALID, "%s decode: impossible length", a->name);
    size_t out_len = n / 4 * 3 + (rem == 0 ? 0 : rem - 1);
    if (out_len > 0 && out == NULL)
        return base_fail(BASE_ERR_INVALID, "%s decode: output buffer is NULL", a->name);
    if (out_cap < out_len)
        return base_fail(BASE_ERR_INVALID, "%s decode: output buffer too small", a->name);

    const unsigned char *s = (const unsigned char *)in;
    unsigned invalid = 0;
    size_t i = 0, o = 0;
    for (; i + 4 <= n; i += 4) {
        unsigned v0 = b64_value(a, s[i], &invalid), v1 = b64_value(a, s[i + 1], &invalid);
        unsigned v2 = b64_value(a, s[i + 2], &invalid), v3 = b64_value(a, s[i + 3], &invalid);
        out[o++] = (uint8_t)((v0 << 2) | (v1 >> 4));
        out[o++] = (uint8_t)(((v1 & 0x0f) << 4) | (v2 >> 2));
        out[o++] = (uint8_t)(((v2 & 0x03) << 6) | v3);
    }
    /* RFC 4648 3.5: the unused bits of the last character must be zero (one canonical encoding per input). */
    if (rem == 2) {
        unsigned v0 = b64_value(a, s[i], &invalid), v1 = b64_value(a, s[i + 1], &invalid);
        out[o++] = (uint8_t)((v0 << 2) | (v1 >> 4));
        invalid |= ct_nonzero(v1 & 0x0f);
    } else if (rem == 3) {
        unsigned v0 = b64_value(a, s[i], &invalid), v1 = b64_value(a, s[i + 1], &invalid);
        unsigned v2 = b64_value(a, s[i + 2], &invalid);
        out[o++] = (uint8_t)((v0 << 2) | (v1 >> 4));
        out[o++] = (uint8_t)(((v1 & 0x0f) << 4) | (v2 >> 2));
        invalid |= ct_nonzero(v2 & 0x03);
    }
    if (invalid != 0)
        return base_fail(BASE_ERR_INVALID, "%s decode: invalid character, padding or trailing bits", a->name);
    *ret_len = o;
    return BASE_OK_RESULT;
}

static base_result b64_decode(const b64_alphabet *a, const char *in, size_t in_len, void *out, size_t out_cap,
                              size_t *ret_len)
{
    base_result r = b64_decode_impl(a, in, in_len, out, out_cap, ret_len);
    if (!base_is_ok(r))
        acrypto_wipe(out, out_cap);
    return r;
}

base_result acrypto_base64_encode(const void *in, size_t n, char *out, size_t out_cap, size_t *ret_len)
{
    return b64_encode(&b64_std, in, n, out, out_cap, ret_len);
}

base_result acrypto_base64_decode(const char *in, size_t in_len, void *out, size_t out_cap, size_t *ret_len)
{
    return b64_decode(&b64_std, in, in_len, out, out_cap, ret_len);
}

base_result acrypto_base64url_encode(const void *in, size_t n, char *out, size_t out_cap, size_t *ret_len)
{
    return b64_encode(&b64_url, in, n, out, out_cap, ret_len);
}

base_result acrypto_base64url_decode(const char *in, size_t in_len, void *out, size_t out_cap,
                                     size_t *ret_len)
{
    return b64_decode(&b64_url, in, in_len, out, out_cap, ret_len);
}

/* '0' + v for v < 10, 'a' + v - 10 otherwise, without a branch. */
static char hex_char(unsigned v)
{
    return (char)((ct_lt(v, 10) & ('0' + v)) | (ct_ge(v, 10) & ('a' + v - 10)));
}

base_result acrypto_hex_encode(const void *in, size_t n, char *out, size_t out_cap, size_t *ret_len)
{
    base_result r = encode_check("hex", in, n, out, out_cap,
                                 n <= ACRYPTO_MAX_INPUT ? acrypto_hex_encode_size(n) : 0, ret_len);
    if (!base_is_ok(r)) {
        acrypto_wipe(out, out_cap);
        return r;
    }
    const uint8_t *p = in;
    for (size_t i = 0; i < n; i++) {
        unsigned hi = p[i] >> 4, lo = p[i] & 0x0f;
        out[2 * i] = hex_char(hi);
        out[2 * i + 1] = hex_char(lo);
    }
    out[2 * n] = '\0';
    *ret_len = 2 * n;
    return BASE_OK_RESULT;
}

/* The 4-bit value of a hex digit (either case); ORs 0xff into *invalid otherwise. */
static unsigned hex_value(unsigned char ch, unsigned *invalid)
{
    unsigned c = ch;
    unsigned digit = ct_ge(c, '0') & ct_le(c, '9');
    unsigned lower = ct_ge(c, 'a') & ct_le(c, 'f');
    unsigned upper = ct_ge(c, 'A') & ct_le(c, 'F');
    *invalid |= (digit | lower | upper) ^ 0xff;
    return ((digit & (c - '0')) | (lower & (c - 'a' + 10)) | (upper & (c - 'A' + 10))) & 0x0f;
}

static base_result hex_decode_impl(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                                   size_t *ret_len)
{
    BASE_GUARD(decode_check("hex", in, in_len, out, ret_len));
    BASE_ENSURE(in_len % 2 == 0, BASE_ERR_INVALID, "hex decode: odd length");
    size_t out_len = in_len / 2;
    BASE_ENSURE(out != NULL || out_len == 0, BASE_ERR_INVALID, "hex decode: output buffer is NULL");
    BASE_ENSURE(out_cap >= out_len, BASE_ERR_INVALID, "hex decode: output buffer too small");
    const unsigned char *s = (const unsigned char *)in;
    unsigned invalid = 0;
    for (size_t i = 0; i < out_len; i++) {
        unsigned hi = hex_value(s[2 * i], &invalid);
        unsigned lo = hex_value(s[2 * i + 1], &invalid);
        out[i] = (uint8_t)((hi << 4) | lo);
    }
    BASE_ENSURE(invalid == 0, BASE_ERR_INVALID, "hex decode: invalid character");
    *ret_len = out_len;
    return BASE_OK_RESULT;
}

base_result acrypto_hex_decode(const char *in, size_t in_len, void *out, size_t out_cap, size_t *ret_len)
{
    base_result r = hex_decode_impl(in, in_len, out, out_cap, ret_len);
    if (!base_is_ok(r))
        acrypto_wipe(out, out_cap);
    return r;
}
