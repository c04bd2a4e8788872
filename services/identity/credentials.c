/* Passwords, TOTP, recovery codes and sealed TOTP secrets (credentials.h). */
#include "credentials.h"

#include "base/utf8.h"

#include <argon2.h>
#include <liboath/oath.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define INVALID_CREDENTIALS "invalid credentials"
#define STORED_MALFORMED    "stored password hash is malformed"
#define ENCODED_PREFIX      "$argon2id$v=19$m="
#define SALT_MIN            8  /* libargon2's minimum salt */
#define SALT_MAX            64 /* accepted in a stored string */
#define HASH_MIN            16 /* accepted in a stored string */
#define HASH_MAX            64
#define TOTP_SECRET_MIN     16 /* RFC 4226 §4: at least 128 bits */
#define TOTP_SECRET_MAX     64
#define TOTP_MAX_NOW        INT64_C(253402300799) /* 9999-12-31T23:59:59Z: keeps step arithmetic in range */
#define TOTP_AD_PREFIX      "alma-identity-totp|"
#define TOTP_AD_MAX         (sizeof TOTP_AD_PREFIX + CRED_NAME_MAX + 1 + CRED_NAME_MAX + 1)
#define OTPAUTH_PREFIX      "otpauth://totp/Alma:"
#define OTPAUTH_SECRET      "?secret="
#define OTPAUTH_SUFFIX      "&issuer=Alma&algorithm=SHA1&digits=6&period=30"

cred_argon2_params cred_argon2_default(void)
{
    return (cred_argon2_params){
        .m_kib = CRED_ARGON2_DEFAULT_M_KIB, .t = CRED_ARGON2_DEFAULT_T, .p = CRED_ARGON2_DEFAULT_P};
}

/* ---- passwords ----------------------------------------------------------------------------------------- */

static bool params_in_bounds(const cred_argon2_params *p)
{
    return p->t >= 1 && p->t <= CRED_ARGON2_MAX_T && p->p >= 1 && p->p <= CRED_ARGON2_MAX_P &&
           p->m_kib >= 8 * p->p && p->m_kib <= CRED_ARGON2_MAX_M_KIB;
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

base_result cred_password_check_policy(const char *password, size_t password_len, const char *username)
{
    BASE_ENSURE(password != NULL || password_len == 0, BASE_ERR_INVALID, "password is missing");
    BASE_ENSURE(password_len >= CRED_PASSWORD_MIN_BYTES, BASE_ERR_INVALID,
                "password must be at least 12 bytes long");
    BASE_ENSURE(password_len <= CRED_PASSWORD_MAX_BYTES, BASE_ERR_INVALID,
                "password must be at most 256 bytes long");

    const unsigned char *s = (const unsigned char *)password;
    uint32_t first = 0;
    bool all_same = true;
    for (size_t i = 0; i < password_len;) {
        uint32_t cp = 0;
        size_t n = base_utf8_next(s + i, password_len - i, &cp);
        BASE_ENSURE(n != 0, BASE_ERR_INVALID, "password must be valid UTF-8");
        BASE_ENSURE(cp != 0, BASE_ERR_INVALID, "password must not contain NUL characters");
        if (i == 0)
            first = cp;
        else if (cp != first)
            all_same = false;
        i += n;
    }
    BASE_ENSURE(!all_same, BASE_ERR_INVALID, "password must not be a single character repeated");

    if (username != NULL && strlen(username) == password_len) {
        bool same = true;
        for (size_t i = 0; i < password_len; i++)
            if (ascii_lower(password[i]) != ascii_lower(username[i]))
                same = false;
        BASE_ENSURE(!same, BASE_ERR_INVALID, "password must not be the username");
    }
    return BASE_OK_RESULT;
}

base_result cred_password_hash(const cred_argon2_params *params, const char *password, size_t password_len,
                               char ret_encoded[CRED_PASSWORD_HASH_MAX])
{
    BASE_ENSURE(params != NULL && ret_encoded != NULL, BASE_ERR_INVALID, "password hash: NULL argument");
    BASE_ENSURE(password != NULL || password_len == 0, BASE_ERR_INVALID, "password hash: NULL password");
    BASE_ENSURE(password_len <= CRED_PASSWORD_MAX_BYTES, BASE_ERR_INVALID,
                "password hash: password longer than 256 bytes");
    BASE_ENSURE(params_in_bounds(params), BASE_ERR_INVALID,
                "password hash: argon2id parameters out of range");

    uint8_t salt[CRED_SALT_LEN];
    BASE_GUARD(acrypto_random(salt, sizeof salt));
    char encoded[CRED_PASSWORD_HASH_MAX];
    int rc = argon2id_hash_encoded(params->t, params->m_kib, params->p, password ? password : "",
                                   password_len, salt, sizeof salt, CRED_HASH_LEN, encoded, sizeof encoded);
    acrypto_wipe(salt, sizeof salt);
    if (rc != ARGON2_OK) {
        acrypto_wipe(encoded, sizeof encoded);
        if (rc == ARGON2_MEMORY_ALLOCATION_ERROR)
            return base_fail(BASE_ERR_NOMEM, "password hash: out of memory");
        return base_fail(BASE_ERR_INVALID, "password hash: argon2id refused the parameters (%s)",
                         argon2_error_message(rc));
    }
    memcpy(ret_encoded, encoded, sizeof encoded);
    return BASE_OK_RESULT;
}

typedef struct parsed_hash {
    cred_argon2_params params;
    size_t salt_len;
    size_t hash_len;
} parsed_hash;

/* An unsigned decimal without sign or leading zero, at most UINT32_MAX; advances *s. */
static bool parse_u32(const char **s, uint32_t *ret)
{
    const char *p = *s;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return false;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return false;
        p++;
    }
    *ret = (uint32_t)v;
    *s = p;
    return true;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Unpadded standard base64 up to `stop` (or the end): canonical (unused trailing bits zero). The salt and
 * hash are not secret from whoever can read the stored string, so plain branches are fine here. */
static bool parse_b64(const char **s, char stop, size_t *ret_decoded_len)
{
    const char *p = *s;
    size_t n = 0;
    int last = 0;
    while (*p != '\0' && *p != stop) {
        last = b64_value(*p);
        if (last < 0)
            return false;
        n++;
        p++;
    }
    if (n == 0 || n % 4 == 1)
        return false;
    if ((n % 4 == 2 && (last & 0x0f) != 0) || (n % 4 == 3 && (last & 0x03) != 0))
        return false;
    *ret_decoded_len = n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
    *s = p;
    return true;
}

static base_result parse_encoded(const char *encoded, parsed_hash *ret)
{
    BASE_ENSURE(encoded != NULL, BASE_ERR_INTERNAL, STORED_MALFORMED);
    BASE_ENSURE(strnlen(encoded, CRED_PASSWORD_HASH_MAX) < CRED_PASSWORD_HASH_MAX, BASE_ERR_INTERNAL,
                STORED_MALFORMED);
    BASE_ENSURE(strncmp(encoded, ENCODED_PREFIX, strlen(ENCODED_PREFIX)) == 0, BASE_ERR_INTERNAL,
                STORED_MALFORMED);
    const char *s = encoded + strlen(ENCODED_PREFIX);
    parsed_hash out = {0};
    BASE_ENSURE(parse_u32(&s, &out.params.m_kib), BASE_ERR_INTERNAL, STORED_MALFORMED);
    BASE_ENSURE(strncmp(s, ",t=", 3) == 0, BASE_ERR_INTERNAL, STORED_MALFORMED);
    s += 3;
    BASE_ENSURE(parse_u32(&s, &out.params.t), BASE_ERR_INTERNAL, STORED_MALFORMED);
    BASE_ENSURE(strncmp(s, ",p=", 3) == 0, BASE_ERR_INTERNAL, STORED_MALFORMED);
    s += 3;
    BASE_ENSURE(parse_u32(&s, &out.params.p), BASE_ERR_INTERNAL, STORED_MALFORMED);
    BASE_ENSURE(*s == '$', BASE_ERR_INTERNAL, STORED_MALFORMED);
    s++;
    BASE_ENSURE(parse_b64(&s, '$', &out.salt_len) && *s == '$', BASE_ERR_INTERNAL, STORED_MALFORMED);
    s++;
    BASE_ENSURE(parse_b64(&s, '\0', &out.hash_len) && *s == '\0', BASE_ERR_INTERNAL, STORED_MALFORMED);
    BASE_ENSURE(params_in_bounds(&out.params), BASE_ERR_INTERNAL,
                "stored password hash: argon2id parameters out of range");
    BASE_ENSURE(out.salt_len >= SALT_MIN && out.salt_len <= SALT_MAX && out.hash_len >= HASH_MIN &&
                    out.hash_len <= HASH_MAX,
                BASE_ERR_INTERNAL, "stored password hash: salt or hash length out of range");
    *ret = out;
    return BASE_OK_RESULT;
}

static bool weaker(const parsed_hash *h, const cred_argon2_params *current)
{
    return h->params.m_kib < current->m_kib || h->params.t < current->t || h->params.p < current->p ||
           h->salt_len < CRED_SALT_LEN || h->hash_len < CRED_HASH_LEN;
}

base_result cred_password_params(const char *encoded, cred_argon2_params *ret_params)
{
    BASE_ENSURE(ret_params != NULL, BASE_ERR_INVALID, "password params: NULL argument");
    parsed_hash h;
    BASE_GUARD(parse_encoded(encoded, &h));
    *ret_params = h.params;
    return BASE_OK_RESULT;
}

base_result cred_password_needs_rehash(const cred_argon2_params *current, const char *encoded,
                                       bool *ret_needs_rehash)
{
    BASE_ENSURE(current != NULL && ret_needs_rehash != NULL, BASE_ERR_INVALID,
                "password needs_rehash: NULL argument");
    parsed_hash h;
    BASE_GUARD(parse_encoded(encoded, &h));
    *ret_needs_rehash = weaker(&h, current);
    return BASE_OK_RESULT;
}

base_result cred_password_verify(const cred_argon2_params *current, const char *encoded, const char *password,
                                 size_t password_len, bool *ret_needs_rehash)
{
    BASE_ENSURE(current != NULL, BASE_ERR_INVALID, "password verify: NULL parameters");
    BASE_ENSURE(password != NULL || password_len == 0, BASE_ERR_INVALID, "password verify: NULL password");
    parsed_hash h;
    BASE_GUARD(parse_encoded(encoded, &h));
    /* No password longer than the policy allows was ever stored: refuse without spending argon2 time on a
     * megabyte of input. */
    BASE_ENSURE(password_len <= CRED_PASSWORD_MAX_BYTES, BASE_ERR_UNAUTH, INVALID_CREDENTIALS);

    int rc = argon2id_verify(encoded, password ? password : "", password_len);
    switch (rc) {
    case ARGON2_OK:
        break;
    case ARGON2_VERIFY_MISMATCH:
        return base_fail(BASE_ERR_UNAUTH, INVALID_CREDENTIALS);
    case ARGON2_MEMORY_ALLOCATION_ERROR:
        return base_fail(BASE_ERR_NOMEM, "password verify: out of memory");
    default:
        return base_fail(BASE_ERR_INTERNAL, STORED_MALFORMED);
    }
    if (ret_needs_rehash != NULL)
        *ret_needs_rehash = weaker(&h, current);
    return BASE_OK_RESULT;
}

base_result cred_password_verify_unknown(const cred_argon2_params *current, const char *password,
                                         size_t password_len)
{
    BASE_ENSURE(current != NULL, BASE_ERR_INVALID, "password verify: NULL parameters");
    BASE_ENSURE(params_in_bounds(current), BASE_ERR_INVALID,
                "password verify: argon2id parameters out of range");
    BASE_ENSURE(password != NULL || password_len == 0, BASE_ERR_INVALID, "password verify: NULL password");
    BASE_ENSURE(password_len <= CRED_PASSWORD_MAX_BYTES, BASE_ERR_UNAUTH, INVALID_CREDENTIALS);
    uint8_t salt[CRED_SALT_LEN];
    uint8_t hash[CRED_HASH_LEN];
    BASE_GUARD(acrypto_random(salt, sizeof salt));
    int rc = argon2id_hash_raw(current->t, current->m_kib, current->p, password ? password : "", password_len,
                               salt, sizeof salt, hash, sizeof hash);
    acrypto_wipe(hash, sizeof hash);
    if (rc == ARGON2_MEMORY_ALLOCATION_ERROR)
        return base_fail(BASE_ERR_NOMEM, "password verify: out of memory");
    return base_fail(BASE_ERR_UNAUTH, INVALID_CREDENTIALS);
}

/* ---- base32, percent-encoding -------------------------------------------------------------------------- */

/* RFC 4648 base32 digit for v in 0..31 without a table lookup or a branch on v (v may be secret). */
static char b32_char(unsigned v, bool lower)
{
    int x = (int)(v & 31);
    int mask = (25 - x) >> 8; /* -1 when x > 25, else 0 */
    int c = (lower ? 'a' : 'A') + x + (mask & ('2' - (lower ? 'a' : 'A') - 26));
    return (char)c;
}

/* Characters of base32 without padding for n bytes. */
static size_t b32_len(size_t n)
{
    return (n * 8 + 4) / 5;
}

static void b32_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32_char((acc >> (bits - 5)) & 31, false);
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = b32_char((acc << (5 - bits)) & 31, false);
    acc = 0;
    acrypto_wipe(&acc, sizeof acc);
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static size_t pct_len(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += unreserved(*p) ? 1 : 3;
    return n;
}

static size_t pct_encode(const char *s, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p)) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    return o;
}

static bool name_ok(const char *s, bool allow_pipe)
{
    size_t n = s ? strnlen(s, CRED_NAME_MAX + 1) : 0;
    if (n == 0 || n > CRED_NAME_MAX)
        return false;
    return allow_pipe || memchr(s, '|', n) == NULL;
}

/* ---- TOTP ---------------------------------------------------------------------------------------------- */

static pthread_once_t oath_once = PTHREAD_ONCE_INIT;
static int oath_init_rc = OATH_OK;

static void oath_init_once(void)
{
    oath_init_rc = oath_init();
}

static base_result oath_ready(void)
{
    BASE_ENSURE(pthread_once(&oath_once, oath_init_once) == 0 && oath_init_rc == OATH_OK, BASE_ERR_INTERNAL,
                "totp: liboath initialisation failed");
    return BASE_OK_RESULT;
}

static base_result totp_secret_ok(const acrypto_secret *secret)
{
    BASE_ENSURE(secret != NULL && acrypto_secret_len(secret) >= TOTP_SECRET_MIN &&
                    acrypto_secret_len(secret) <= TOTP_SECRET_MAX,
                BASE_ERR_INVALID, "totp: secret must be 16..64 bytes");
    return BASE_OK_RESULT;
}

base_result cred_totp_secret_new(acrypto_secret **ret_secret)
{
    BASE_ENSURE(ret_secret != NULL, BASE_ERR_INVALID, "totp: NULL argument");
    return acrypto_secret_random(CRED_TOTP_SECRET_LEN, ret_secret);
}

base_result cred_totp_uri(const acrypto_secret *secret, const char *tenant, const char *username,
                          acrypto_secret **ret_uri)
{
    BASE_ENSURE(ret_uri != NULL, BASE_ERR_INVALID, "totp uri: NULL argument");
    BASE_GUARD(totp_secret_ok(secret));
    BASE_ENSURE(name_ok(tenant, true), BASE_ERR_INVALID, "totp uri: tenant must be 1..128 bytes");
    BASE_ENSURE(name_ok(username, true), BASE_ERR_INVALID, "totp uri: username must be 1..128 bytes");

    size_t slen = acrypto_secret_len(secret);
    size_t len = strlen(OTPAUTH_PREFIX) + pct_len(tenant) + 1 + pct_len(username) + strlen(OTPAUTH_SECRET) +
                 b32_len(slen) + strlen(OTPAUTH_SUFFIX);
    acrypto_secret *uri = NULL;
    BASE_GUARD(acrypto_secret_new(len, &uri));
    char *out = (char *)acrypto_secret_bytes_mut(uri);
    size_t o = 0;
    memcpy(out + o, OTPAUTH_PREFIX, strlen(OTPAUTH_PREFIX));
    o += strlen(OTPAUTH_PREFIX);
    o += pct_encode(tenant, out + o);
    out[o++] = ':';
    o += pct_encode(username, out + o);
    memcpy(out + o, OTPAUTH_SECRET, strlen(OTPAUTH_SECRET));
    o += strlen(OTPAUTH_SECRET);
    b32_encode(acrypto_secret_bytes(secret), slen, out + o);
    o += b32_len(slen);
    memcpy(out + o, OTPAUTH_SUFFIX, strlen(OTPAUTH_SUFFIX));
    o += strlen(OTPAUTH_SUFFIX);
    if (o != len) {
        acrypto_secret_free(uri);
        return base_fail(BASE_ERR_INTERNAL, "totp uri: length mismatch");
    }
    *ret_uri = uri;
    return BASE_OK_RESULT;
}

/* The code of one step into out (digits + NUL). */
static base_result totp_at_step(const acrypto_secret *secret, int64_t step, unsigned digits,
                                char out[CRED_TOTP_CODE_MAX + 1])
{
    char buf[CRED_TOTP_CODE_MAX + 2] = {0}; /* liboath writes digits + NUL */
    int rc = oath_totp_generate((const char *)acrypto_secret_bytes(secret), acrypto_secret_len(secret),
                                (time_t)(step * CRED_TOTP_PERIOD), CRED_TOTP_PERIOD, 0, digits, buf);
    if (rc != OATH_OK || strnlen(buf, sizeof buf) != digits) {
        acrypto_wipe(buf, sizeof buf);
        return base_fail(BASE_ERR_INTERNAL, "totp: code generation failed");
    }
    memcpy(out, buf, digits + 1);
    acrypto_wipe(buf, sizeof buf);
    return BASE_OK_RESULT;
}

base_result cred_totp_code(const acrypto_secret *secret, int64_t now, unsigned digits,
                           char ret_code[CRED_TOTP_CODE_MAX + 1])
{
    BASE_ENSURE(ret_code != NULL, BASE_ERR_INVALID, "totp: NULL argument");
    BASE_GUARD(totp_secret_ok(secret));
    BASE_ENSURE(digits >= 6 && digits <= CRED_TOTP_CODE_MAX, BASE_ERR_INVALID, "totp: digits must be 6..8");
    BASE_ENSURE(now >= 0 && now <= TOTP_MAX_NOW, BASE_ERR_INVALID, "totp: time out of range");
    BASE_GUARD(oath_ready());
    char code[CRED_TOTP_CODE_MAX + 1];
    BASE_GUARD(totp_at_step(secret, now / CRED_TOTP_PERIOD, digits, code));
    memcpy(ret_code, code, sizeof code);
    acrypto_wipe(code, sizeof code);
    return BASE_OK_RESULT;
}

base_result cred_totp_verify(const acrypto_secret *secret, const char *code, int64_t now, int64_t last_step,
                             int64_t *ret_step)
{
    BASE_ENSURE(ret_step != NULL, BASE_ERR_INVALID, "totp: NULL argument");
    BASE_GUARD(totp_secret_ok(secret));
    BASE_ENSURE(now >= 0 && now <= TOTP_MAX_NOW, BASE_ERR_INVALID, "totp: time out of range");
    BASE_ENSURE(last_step >= 0, BASE_ERR_INVALID, "totp: last accepted step out of range");
    BASE_GUARD(oath_ready());

    bool well_formed = code != NULL && strnlen(code, CRED_TOTP_DIGITS + 1) == CRED_TOTP_DIGITS;
    for (size_t i = 0; well_formed && i < CRED_TOTP_DIGITS; i++)
        well_formed = code[i] >= '0' && code[i] <= '9';
    BASE_ENSURE(well_formed, BASE_ERR_UNAUTH, INVALID_CREDENTIALS);

    /* Every candidate is computed and compared; the latest matching step wins. */
    int64_t step = now / CRED_TOTP_PERIOD;
    int64_t matched = -1;
    base_result r = BASE_OK_RESULT;
    for (int64_t s = step - CRED_TOTP_WINDOW; s <= step + CRED_TOTP_WINDOW; s++) {
        if (s < 0)
            continue;
        char candidate[CRED_TOTP_CODE_MAX + 1];
        r = totp_at_step(secret, s, CRED_TOTP_DIGITS, candidate);
        if (!base_is_ok(r))
            break;
        int64_t eq = (int64_t)acrypto_equal(candidate, code, CRED_TOTP_DIGITS);
        acrypto_wipe(candidate, sizeof candidate);
        int64_t mask = -eq; /* all ones when equal */
        matched = (matched & ~mask) | (s & mask);
    }
    if (!base_is_ok(r))
        return r;
    BASE_ENSURE(matched >= 0, BASE_ERR_UNAUTH, INVALID_CREDENTIALS);
    BASE_ENSURE(matched > last_step, BASE_ERR_UNAUTH, "one-time code already used");
    *ret_step = matched;
    return BASE_OK_RESULT;
}

static void totp_ad(const char *tenant, const char *principal, char out[TOTP_AD_MAX], size_t *ret_len)
{
    size_t o = 0;
    memcpy(out + o, TOTP_AD_PREFIX, strlen(TOTP_AD_PREFIX));
    o += strlen(TOTP_AD_PREFIX);
    memcpy(out + o, tenant, strlen(tenant));
    o += strlen(tenant);
    out[o++] = '|';
    memcpy(out + o, principal, strlen(principal));
    o += strlen(principal);
    *ret_len = o;
}

static base_result seal_args_ok(const acrypto_secret *key, const char *tenant, const char *principal)
{
    BASE_ENSURE(key != NULL && acrypto_secret_len(key) == ACRYPTO_AES256_KEY_LEN, BASE_ERR_INVALID,
                "totp seal: the key must be 32 bytes");
    BASE_ENSURE(name_ok(tenant, false), BASE_ERR_INVALID,
                "totp seal: tenant must be 1..128 bytes without '|'");
    BASE_ENSURE(name_ok(principal, false), BASE_ERR_INVALID,
                "totp seal: principal must be 1..128 bytes without '|'");
    return BASE_OK_RESULT;
}

base_result cred_totp_seal(const acrypto_secret *key, const char *tenant, const char *principal,
                           const acrypto_secret *totp_secret, uint8_t **ret_sealed, size_t *ret_sealed_len)
{
    BASE_ENSURE(ret_sealed != NULL && ret_sealed_len != NULL, BASE_ERR_INVALID, "totp seal: NULL argument");
    BASE_GUARD(seal_args_ok(key, tenant, principal));
    BASE_GUARD(totp_secret_ok(totp_secret));
    char ad[TOTP_AD_MAX];
    size_t ad_len = 0;
    totp_ad(tenant, principal, ad, &ad_len);
    return acrypto_gcm_seal_alloc(key, ad, ad_len, acrypto_secret_bytes(totp_secret),
                                  acrypto_secret_len(totp_secret), ret_sealed, ret_sealed_len);
}

base_result cred_totp_open(const acrypto_secret *key, const char *tenant, const char *principal,
                           const void *sealed, size_t sealed_len, acrypto_secret **ret_totp_secret)
{
    BASE_ENSURE(ret_totp_secret != NULL, BASE_ERR_INVALID, "totp open: NULL argument");
    BASE_GUARD(seal_args_ok(key, tenant, principal));
    char ad[TOTP_AD_MAX];
    size_t ad_len = 0;
    totp_ad(tenant, principal, ad, &ad_len);
    acrypto_secret *plain = NULL;
    BASE_GUARD(acrypto_gcm_open_secret(key, ad, ad_len, sealed, sealed_len, &plain));
    if (!base_is_ok(totp_secret_ok(plain))) {
        acrypto_secret_free(plain);
        return base_fail(BASE_ERR_CRYPTO, "totp open: sealed secret has the wrong length");
    }
    *ret_totp_secret = plain;
    return BASE_OK_RESULT;
}

/* ---- recovery codes ------------------------------------------------------------------------------------ */

/* Normalise typed input to CRED_RECOVERY_CHARS upper-case base32 characters. */
static bool recovery_normalise(const char *code, size_t code_len, char out[CRED_RECOVERY_CHARS])
{
    if (code == NULL || code_len > CRED_RECOVERY_INPUT_MAX)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < code_len; i++) {
        char c = code[i];
        if (c == '-' || c == ' ')
            continue;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (!((c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7')) || n == CRED_RECOVERY_CHARS)
            return false;
        out[n++] = c;
    }
    return n == CRED_RECOVERY_CHARS;
}

static base_result recovery_hash_normalised(const acrypto_secret *pepper,
                                            const char norm[CRED_RECOVERY_CHARS],
                                            char ret_hex[CRED_RECOVERY_HASH_HEX + 1])
{
    uint8_t mac[ACRYPTO_HMAC_SHA256_LEN];
    BASE_GUARD(acrypto_hmac_sha256(pepper, norm, CRED_RECOVERY_CHARS, mac));
    size_t n = 0;
    base_result r = acrypto_hex_encode(mac, sizeof mac, ret_hex, CRED_RECOVERY_HASH_HEX + 1, &n);
    acrypto_wipe(mac, sizeof mac);
    return r;
}

static base_result pepper_ok(const acrypto_secret *pepper)
{
    BASE_ENSURE(pepper != NULL && acrypto_secret_len(pepper) > 0, BASE_ERR_INVALID,
                "recovery codes: the pepper must be a non-empty key");
    return BASE_OK_RESULT;
}

void cred_recovery_codes_wipe(cred_recovery_codes *codes)
{
    acrypto_wipe(codes, codes ? sizeof *codes : 0);
}

base_result cred_recovery_generate(const acrypto_secret *pepper, cred_recovery_codes *ret_codes)
{
    BASE_ENSURE(ret_codes != NULL, BASE_ERR_INVALID, "recovery codes: NULL argument");
    BASE_GUARD(pepper_ok(pepper));
    cred_recovery_codes *codes = calloc(1, sizeof *codes);
    BASE_ENSURE(codes != NULL, BASE_ERR_NOMEM, "recovery codes: out of memory");
    uint8_t rnd[CRED_RECOVERY_CHARS];
    char norm[CRED_RECOVERY_CHARS];
    base_result r = BASE_OK_RESULT;
    for (size_t i = 0; i < CRED_RECOVERY_COUNT && base_is_ok(r); i++) {
        r = acrypto_random(rnd, sizeof rnd);
        if (!base_is_ok(r))
            break;
        /* 32 divides 256: each character is uniform. */
        for (size_t j = 0; j < CRED_RECOVERY_CHARS; j++) {
            norm[j] = b32_char(rnd[j], false);
            codes->display[i][j < 5 ? j : j + 1] = b32_char(rnd[j], true);
        }
        codes->display[i][5] = '-';
        codes->display[i][CRED_RECOVERY_DISPLAY_LEN] = '\0';
        r = recovery_hash_normalised(pepper, norm, codes->stored[i]);
    }
    acrypto_wipe(rnd, sizeof rnd);
    acrypto_wipe(norm, sizeof norm);
    if (base_is_ok(r))
        memcpy(ret_codes, codes, sizeof *codes);
    cred_recovery_codes_wipe(codes);
    free(codes);
    return r;
}

base_result cred_recovery_hash(const acrypto_secret *pepper, const char *code, size_t code_len,
                               char ret_hex[CRED_RECOVERY_HASH_HEX + 1])
{
    BASE_ENSURE(ret_hex != NULL, BASE_ERR_INVALID, "recovery codes: NULL argument");
    BASE_GUARD(pepper_ok(pepper));
    char norm[CRED_RECOVERY_CHARS];
    bool ok = recovery_normalise(code, code_len, norm);
    base_result r = ok ? BASE_OK_RESULT : base_fail(BASE_ERR_UNAUTH, INVALID_CREDENTIALS);
    char hex[CRED_RECOVERY_HASH_HEX + 1];
    if (ok)
        r = recovery_hash_normalised(pepper, norm, hex);
    acrypto_wipe(norm, sizeof norm);
    if (base_is_ok(r))
        memcpy(ret_hex, hex, sizeof hex);
    return r;
}

base_result cred_recovery_verify(const acrypto_secret *pepper, const char *code, size_t code_len,
                                 const char *const *stored, size_t count, size_t *ret_index)
{
    BASE_ENSURE(ret_index != NULL && (stored != NULL || count == 0), BASE_ERR_INVALID,
                "recovery codes: NULL argument");
    char hex[CRED_RECOVERY_HASH_HEX + 1];
    BASE_GUARD(cred_recovery_hash(pepper, code, code_len, hex));
    size_t found = 0;
    size_t any = 0;
    for (size_t i = 0; i < count; i++) {
        if (stored[i] == NULL || strnlen(stored[i], CRED_RECOVERY_HASH_HEX + 1) != CRED_RECOVERY_HASH_HEX)
            continue;
        size_t eq = (size_t)acrypto_equal(hex, stored[i], CRED_RECOVERY_HASH_HEX);
        size_t mask = (size_t)0 - eq;
        found = (found & ~mask) | (i & mask);
        any |= eq;
    }
    acrypto_wipe(hex, sizeof hex);
    BASE_ENSURE(any, BASE_ERR_UNAUTH, INVALID_CREDENTIALS);
    *ret_index = found;
    return BASE_OK_RESULT;
}
