/* JWS (RFC 7515, compact, EdDSA per RFC 8037) and JWT (RFC 7519) access tokens: signing, strict verification,
 * the claim rules.
 *
 * Verification never allocates: the parts are decoded into bounded stack buffers and the JSON of the header
 * and of the claims is read by the small strict reader below (a cursor over a bounded buffer, s2n-style),
 * which accepts RFC 8259 JSON only: no trailing data, no control characters, valid UTF-8, paired surrogates,
 * no \u0000, nesting depth bounded. Members we need are decoded into fixed-size fields; a member we need that
 * appears twice makes the document malformed; others are skipped. */
#include "internal.h"

#include "base/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- small helpers ------------------------------------------------------------------------------------ */

bool authz__copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

bool authz__parse_epoch(const char *s, size_t n, int64_t max, int64_t *ret_value)
{
    if (n == 0 || n > 18 || (n > 1 && s[0] == '0'))
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *ret_value = v;
    return true;
}

int64_t authz__now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t authz__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *authz__status_message(authz__status st)
{
    switch (st) {
    case AUTHZ__OK:
        return "token verified";
    case AUTHZ__TOO_LONG:
        return AUTHZ_MSG_TOO_LONG;
    case AUTHZ__MALFORMED:
        return AUTHZ_MSG_MALFORMED;
    case AUTHZ__ALG:
        return AUTHZ_MSG_ALG;
    case AUTHZ__NO_KID:
        return AUTHZ_MSG_NO_KID;
    case AUTHZ__KID_UNKNOWN:
        return AUTHZ_MSG_KID_UNKNOWN;
    case AUTHZ__SIGNATURE:
        return AUTHZ_MSG_SIGNATURE;
    case AUTHZ__CLAIMS:
        return AUTHZ_MSG_CLAIMS;
    case AUTHZ__ISSUER:
        return AUTHZ_MSG_ISSUER;
    case AUTHZ__AUDIENCE:
        return AUTHZ_MSG_AUDIENCE;
    case AUTHZ__LIFETIME:
        return AUTHZ_MSG_LIFETIME;
    case AUTHZ__EXPIRED:
        return AUTHZ_MSG_EXPIRED;
    case AUTHZ__NOT_YET_VALID:
        return AUTHZ_MSG_NOT_YET;
    default:
        return AUTHZ_MSG_MALFORMED;
    }
}

/* ---- the claim rules ---------------------------------------------------------------------------------- */

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool is_lower_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z');
}

/* prefix + exactly 32 lowercase hex digits */
static bool prefixed_hex32(const char *s, const char *prefix)
{
    size_t p = strlen(prefix);
    if (!s || strncmp(s, prefix, p) != 0)
        return false;
    s += p;
    for (size_t i = 0; i < 32; i++) {
        if (!is_lower_hex(s[i]))
            return false;
    }
    return s[32] == '\0';
}

bool authz_valid_principal(const char *s)
{
    if (prefixed_hex32(s, "usr_"))
        return true;
    if (!s || strncmp(s, "svc_", 4) != 0)
        return false;
    size_t n = 0;
    for (const char *p = s + 4; *p; p++, n++) {
        if (!is_lower_alnum(*p) && *p != '_' && *p != '-')
            return false;
    }
    return n >= 1 && n <= 60;
}

bool authz_valid_tenant(const char *s)
{
    if (!s || !is_lower_alnum(s[0]))
        return false;
    size_t n = 1;
    for (const char *p = s + 1; *p; p++, n++) {
        if (!is_lower_alnum(*p) && *p != '-')
            return false;
    }
    return n >= 2 && n <= 63;
}

bool authz_valid_session(const char *s)
{
    return prefixed_hex32(s, "ses_");
}

static bool valid_jti(const char *s)
{
    return prefixed_hex32(s, "tok_");
}

bool authz_valid_patient_ref(const char *s)
{
    return prefixed_hex32(s, "pt_");
}

bool authz_valid_name(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool ok = is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_' || c == '.' || c == ':' ||
                  c == '/' || c == '-';
        if (!ok)
            return false;
    }
    return n >= 1 && n <= AUTHZ_MAX_NAME_LEN;
}

bool authz__valid_record_id(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!(is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_' || c == '-') || n >= AUTHZ_MAX_ID_LEN)
            return false;
    }
    return n >= 1;
}

bool authz__valid_rel_kind(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        if (!(is_lower_alnum(s[n]) || s[n] == '_') || n >= AUTHZ__MAX_REL_KIND)
            return false;
    }
    return n >= 1;
}

/* iss / aud: printable ASCII without '"' and '\\', so they can be written into JSON as they are. */
bool authz__valid_uri(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
        if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\')
            return false;
    }
    return n >= 1 && n <= AUTHZ_MAX_URI_LEN;
}

static bool valid_epoch(int64_t t)
{
    return t >= 0 && t <= AUTHZ__MAX_EPOCH;
}

bool authz_claims_well_formed(const authz_claims *c)
{
    if (!c)
        return false;
    /* Every string field must be terminated inside its array before it is read as a string. */
    if (!memchr(c->iss, 0, sizeof c->iss) || !memchr(c->aud, 0, sizeof c->aud) ||
        !memchr(c->sub, 0, sizeof c->sub) || !memchr(c->tid, 0, sizeof c->tid) ||
        !memchr(c->sid, 0, sizeof c->sid) || !memchr(c->jti, 0, sizeof c->jti))
        return false;
    if (!authz__valid_uri(c->iss) || !authz__valid_uri(c->aud) || !authz_valid_principal(c->sub) ||
        !authz_valid_tenant(c->tid) || !authz_valid_session(c->sid) || !valid_jti(c->jti))
        return false;
    if (!valid_epoch(c->iat) || !valid_epoch(c->nbf) || !valid_epoch(c->exp) || c->exp <= c->iat ||
        c->exp <= c->nbf)
        return false;
    if (c->role_count > AUTHZ_MAX_ROLES || c->perm_count > AUTHZ_MAX_PERMS)
        return false;
    for (size_t i = 0; i < c->role_count; i++) {
        if (!memchr(c->roles[i], 0, sizeof c->roles[i]) || !authz_valid_name(c->roles[i]))
            return false;
    }
    for (size_t i = 0; i < c->perm_count; i++) {
        if (!memchr(c->perm[i], 0, sizeof c->perm[i]) || !authz_valid_name(c->perm[i]))
            return false;
    }
    return true;
}

bool authz_permission_is_patient_scoped(const char *permission)
{
    if (!permission)
        return false;
    size_t p = strlen(AUTHZ_PATIENT_SCOPE_PREFIX);
    return strncmp(permission, AUTHZ_PATIENT_SCOPE_PREFIX, p) == 0 &&
           strcmp(permission, AUTHZ_PERM_BREAK_GLASS) != 0;
}

bool authz_permission_is_enrolment(const char *permission)
{
    return permission && strcmp(permission, AUTHZ_PERM_MFA_ENROLL) == 0;
}

/* ---- the strict JSON reader -----------------------------------------------------------------------------
 */

#define JSON_MAX_DEPTH 16

typedef struct jcur {
    const unsigned char *p;
    size_t n;
    size_t i;
} jcur;

static void j_ws(jcur *c)
{
    while (c->i < c->n &&
           (c->p[c->i] == ' ' || c->p[c->i] == '\t' || c->p[c->i] == '\n' || c->p[c->i] == '\r'))
        c->i++;
}

/* Consume `ch` (after whitespace) if it is next. */
static bool j_take(jcur *c, char ch)
{
    j_ws(c);
    if (c->i < c->n && c->p[c->i] == (unsigned char)ch) {
        c->i++;
        return true;
    }
    return false;
}

static bool j_hex4(jcur *c, uint32_t *ret)
{
    if (c->n - c->i < 4)
        return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char h = c->p[c->i++];
        uint32_t d;
        if (h >= '0' && h <= '9')
            d = h - '0';
        else if (h >= 'a' && h <= 'f')
            d = h - 'a' + 10;
        else if (h >= 'A' && h <= 'F')
            d = h - 'A' + 10;
        else
            return false;
        v = (v << 4) | d;
    }
    *ret = v;
    return true;
}

static size_t utf8_encode(uint32_t cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string value. With out: decoded into out[cap] and NUL-terminated; *ret_fits false (and the rest still
 * read) when it does not fit. Without out: validated and skipped. False on malformed JSON. */
static bool j_string(jcur *c, char *out, size_t cap, bool *ret_fits)
{
    j_ws(c);
    if (c->i >= c->n || c->p[c->i] != '"')
        return false;
    c->i++;
    size_t o = 0;
    bool fits = true;
    for (;;) {
        if (c->i >= c->n)
            return false;
        unsigned char ch = c->p[c->i];
        unsigned char enc[4];
        size_t k;
        if (ch == '"') {
            c->i++;
            break;
        }
        if (ch == '\\') {
            if (c->n - c->i < 2)
                return false;
            unsigned char e = c->p[c->i + 1];
            c->i += 2;
            uint32_t cp;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                cp = e;
                break;
            case 'b':
                cp = '\b';
                break;
            case 'f':
                cp = '\f';
                break;
            case 'n':
                cp = '\n';
                break;
            case 'r':
                cp = '\r';
                break;
            case 't':
                cp = '\t';
                break;
            case 'u':
                if (!j_hex4(c, &cp))
                    return false;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (c->n - c->i < 2 || c->p[c->i] != '\\' || c->p[c->i + 1] != 'u')
                        return false;
                    c->i += 2;
                    if (!j_hex4(c, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        return false;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return false;
                }
                if (cp == 0)
                    return false; /* a NUL would cut the decoded C string short */
                break;
            default:
                return false;
            }
            k = utf8_encode(cp, enc);
        } else {
            if (ch < 0x20)
                return false;
            k = base_utf8_next(c->p + c->i, c->n - c->i, NULL);
            if (k == 0)
                return false;
            memcpy(enc, c->p + c->i, k);
            c->i += k;
        }
        if (out && fits) {
            if (o + k + 1 > cap) {
                fits = false;
            } else {
                memcpy(out + o, enc, k);
                o += k;
            }
        }
    }
    if (out) {
        if (fits)
            out[o] = '\0';
        else if (cap > 0)
            out[0] = '\0';
    }
    if (ret_fits)
        *ret_fits = fits;
    return true;
}

/* A non-negative integer (NumericDate without fraction or exponent). */
static bool j_epoch(jcur *c, int64_t *ret)
{
    j_ws(c);
    size_t start = c->i;
    while (c->i < c->n && c->p[c->i] >= '0' && c->p[c->i] <= '9')
        c->i++;
    if (c->i < c->n && (c->p[c->i] == '.' || c->p[c->i] == 'e' || c->p[c->i] == 'E'))
        return false;
    return authz__parse_epoch((const char *)c->p + start, c->i - start, AUTHZ__MAX_EPOCH, ret);
}

static bool j_word(jcur *c, const char *w)
{
    size_t n = strlen(w);
    if (c->n - c->i < n || memcmp(c->p + c->i, w, n) != 0)
        return false;
    c->i += n;
    return true;
}

static bool j_bool(jcur *c, bool *ret)
{
    j_ws(c);
    if (j_word(c, "true")) {
        *ret = true;
        return true;
    }
    if (j_word(c, "false")) {
        *ret = false;
        return true;
    }
    return false;
}

static bool j_digits(jcur *c)
{
    size_t start = c->i;
    while (c->i < c->n && c->p[c->i] >= '0' && c->p[c->i] <= '9')
        c->i++;
    return c->i > start;
}

/* Any number, by the RFC 8259 grammar. */
static bool j_number(jcur *c)
{
    if (c->i < c->n && c->p[c->i] == '-')
        c->i++;
    if (c->i < c->n && c->p[c->i] == '0')
        c->i++;
    else if (!(c->i < c->n && c->p[c->i] >= '1' && c->p[c->i] <= '9') || !j_digits(c))
        return false;
    if (c->i < c->n && c->p[c->i] == '.') {
        c->i++;
        if (!j_digits(c))
            return false;
    }
    if (c->i < c->n && (c->p[c->i] == 'e' || c->p[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->p[c->i] == '+' || c->p[c->i] == '-'))
            c->i++;
        if (!j_digits(c))
            return false;
    }
    return true;
}

/* Validate and skip any value. */
static bool j_skip(jcur *c, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return false;
    j_ws(c);
    if (c->i >= c->n)
        return false;
    switch (c->p[c->i]) {
    case '"':
        return j_string(c, NULL, 0, NULL);
    case '{':
        c->i++;
        if (j_take(c, '}'))
            return true;
        do {
            if (!j_string(c, NULL, 0, NULL) || !j_take(c, ':') || !j_skip(c, depth + 1))
                return false;
        } while (j_take(c, ','));
        return j_take(c, '}');
    case '[':
        c->i++;
        if (j_take(c, ']'))
            return true;
        do {
            if (!j_skip(c, depth + 1))
                return false;
        } while (j_take(c, ','));
        return j_take(c, ']');
    case 't':
        return j_word(c, "true");
    case 'f':
        return j_word(c, "false");
    case 'n':
        return j_word(c, "null");
    default:
        return j_number(c);
    }
}

/* Nothing but whitespace left. */
static bool j_end(jcur *c)
{
    j_ws(c);
    return c->i == c->n;
}

/* ---- JOSE header ----------------------------------------------------------------------------------------
 */

typedef struct jose_header {
    bool has_kid;
    char kid[AUTHZ_MAX_KID_LEN + 1];
} jose_header;

static bool valid_kid(const char *kid, size_t n)
{
    if (n == 0 || n > AUTHZ_MAX_KID_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = kid[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return false;
    }
    return true;
}

/* alg must be "EdDSA"; typ, when present, "JWT"; crit (extensions we would have to understand) and cty
 * (nested tokens) are refused; kid is kept. */
static authz__status parse_header(const unsigned char *json, size_t n, jose_header *ret)
{
    jcur c = {json, n, 0};
    enum { H_ALG = 1, H_KID = 2, H_TYP = 4 };
    unsigned seen = 0;
    bool alg_ok = false;
    jose_header h = {0};
    if (!j_take(&c, '{'))
        return AUTHZ__MALFORMED;
    if (!j_take(&c, '}')) {
        do {
            char name[8];
            bool fits = false;
            if (!j_string(&c, name, sizeof name, &fits) || !j_take(&c, ':'))
                return AUTHZ__MALFORMED;
            if (fits && strcmp(name, "alg") == 0) {
                char alg[16];
                bool afits = false;
                if ((seen & H_ALG) || !j_string(&c, alg, sizeof alg, &afits))
                    return AUTHZ__MALFORMED;
                seen |= H_ALG;
                alg_ok = afits && strcmp(alg, "EdDSA") == 0;
            } else if (fits && strcmp(name, "kid") == 0) {
                bool kfits = false;
                if ((seen & H_KID) || !j_string(&c, h.kid, sizeof h.kid, &kfits))
                    return AUTHZ__MALFORMED;
                seen |= H_KID;
                if (!kfits || !valid_kid(h.kid, strlen(h.kid)))
                    return AUTHZ__MALFORMED;
                h.has_kid = true;
            } else if (fits && strcmp(name, "typ") == 0) {
                char typ[8];
                bool tfits = false;
                if ((seen & H_TYP) || !j_string(&c, typ, sizeof typ, &tfits))
                    return AUTHZ__MALFORMED;
                seen |= H_TYP;
                if (!tfits || strcasecmp(typ, "JWT") != 0)
                    return AUTHZ__MALFORMED;
            } else if (fits && (strcmp(name, "crit") == 0 || strcmp(name, "cty") == 0)) {
                return AUTHZ__MALFORMED;
            } else if (!j_skip(&c, 1)) {
                return AUTHZ__MALFORMED;
            }
        } while (j_take(&c, ','));
        if (!j_take(&c, '}'))
            return AUTHZ__MALFORMED;
    }
    if (!j_end(&c))
        return AUTHZ__MALFORMED;
    if (!alg_ok)
        return AUTHZ__ALG;
    *ret = h;
    return AUTHZ__OK;
}

/* ---- claims ------------------------------------------------------------------------------------------- */

enum {
    C_ISS = 1 << 0,
    C_AUD = 1 << 1,
    C_SUB = 1 << 2,
    C_TID = 1 << 3,
    C_SID = 1 << 4,
    C_JTI = 1 << 5,
    C_IAT = 1 << 6,
    C_NBF = 1 << 7,
    C_EXP = 1 << 8,
    C_ROLES = 1 << 9,
    C_PERM = 1 << 10,
    C_MFA = 1 << 11,
    C_ENR = 1 << 12,
    C_ALL = (1 << 13) - 1,
};

/* A string claim into a fixed field, which must fit. */
static bool claim_string(jcur *c, char *field, size_t cap)
{
    bool fits = false;
    return j_string(c, field, cap, &fits) && fits;
}

/* An array of names into names[max][AUTHZ_MAX_NAME_LEN + 1]. */
static bool claim_names(jcur *c, char (*names)[AUTHZ_MAX_NAME_LEN + 1], size_t max, size_t *ret_count)
{
    size_t count = 0;
    if (!j_take(c, '['))
        return false;
    if (!j_take(c, ']')) {
        do {
            if (count == max || !claim_string(c, names[count], AUTHZ_MAX_NAME_LEN + 1) ||
                !authz_valid_name(names[count]))
                return false;
            count++;
        } while (j_take(c, ','));
        if (!j_take(c, ']'))
            return false;
    }
    *ret_count = count;
    return true;
}

/* aud: a string, or an array of strings; matched against the expected audience. */
static bool claim_aud(jcur *c, const char *expected, bool *ret_match)
{
    char one[AUTHZ_MAX_URI_LEN + 1];
    bool match = false;
    j_ws(c);
    if (c->i < c->n && c->p[c->i] == '[') {
        size_t count = 0;
        c->i++;
        if (!j_take(c, ']')) {
            do {
                if (count == AUTHZ_MAX_AUD_ENTRIES || !claim_string(c, one, sizeof one) ||
                    !authz__valid_uri(one))
                    return false;
                count++;
                match = match || strcmp(one, expected) == 0;
            } while (j_take(c, ','));
            if (!j_take(c, ']'))
                return false;
        }
    } else {
        if (!claim_string(c, one, sizeof one) || !authz__valid_uri(one))
            return false;
        match = strcmp(one, expected) == 0;
    }
    *ret_match = match;
    return true;
}

/* Parse the claims; *ret_aud_match says whether aud named the expected audience. */
static bool parse_claims(const unsigned char *json, size_t n, const char *audience, authz_claims *cl,
                         bool *ret_aud_match)
{
    jcur c = {json, n, 0};
    unsigned seen = 0;
    bool aud_match = false;
    if (!j_take(&c, '{') || j_take(&c, '}'))
        return false;
    do {
        char name[8];
        bool fits = false;
        if (!j_string(&c, name, sizeof name, &fits) || !j_take(&c, ':'))
            return false;
        unsigned bit = 0;
        bool ok = true;
        if (!fits) {
            ok = j_skip(&c, 1);
        } else if (strcmp(name, "iss") == 0) {
            bit = C_ISS;
            ok = claim_string(&c, cl->iss, sizeof cl->iss) && authz__valid_uri(cl->iss);
        } else if (strcmp(name, "aud") == 0) {
            bit = C_AUD;
            ok = claim_aud(&c, audience, &aud_match);
        } else if (strcmp(name, "sub") == 0) {
            bit = C_SUB;
            ok = claim_string(&c, cl->sub, sizeof cl->sub) && authz_valid_principal(cl->sub);
        } else if (strcmp(name, "tid") == 0) {
            bit = C_TID;
            ok = claim_string(&c, cl->tid, sizeof cl->tid) && authz_valid_tenant(cl->tid);
        } else if (strcmp(name, "sid") == 0) {
            bit = C_SID;
            ok = claim_string(&c, cl->sid, sizeof cl->sid) && authz_valid_session(cl->sid);
        } else if (strcmp(name, "jti") == 0) {
            bit = C_JTI;
            ok = claim_string(&c, cl->jti, sizeof cl->jti) && valid_jti(cl->jti);
        } else if (strcmp(name, "iat") == 0) {
            bit = C_IAT;
            ok = j_epoch(&c, &cl->iat);
        } else if (strcmp(name, "nbf") == 0) {
            bit = C_NBF;
            ok = j_epoch(&c, &cl->nbf);
        } else if (strcmp(name, "exp") == 0) {
            bit = C_EXP;
            ok = j_epoch(&c, &cl->exp);
        } else if (strcmp(name, "roles") == 0) {
            bit = C_ROLES;
            ok = claim_names(&c, cl->roles, AUTHZ_MAX_ROLES, &cl->role_count);
        } else if (strcmp(name, "perm") == 0) {
            bit = C_PERM;
            ok = claim_names(&c, cl->perm, AUTHZ_MAX_PERMS, &cl->perm_count);
        } else if (strcmp(name, "mfa") == 0) {
            bit = C_MFA;
            ok = j_bool(&c, &cl->mfa);
        } else if (strcmp(name, "enr") == 0) {
            bit = C_ENR;
            ok = j_bool(&c, &cl->enr);
        } else {
            ok = j_skip(&c, 1);
        }
        if (!ok || (seen & bit))
            return false;
        seen |= bit;
    } while (j_take(&c, ','));
    if (!j_take(&c, '}') || !j_end(&c) || seen != C_ALL)
        return false;
    if (!authz__copy(cl->aud, sizeof cl->aud, audience))
        return false;
    *ret_aud_match = aud_match;
    return true;
}

/* ---- the JWS layer ------------------------------------------------------------------------------------ */

typedef struct jws_parts {
    const char *header;
    size_t header_len;
    const char *payload;
    size_t payload_len;
    const char *sig;
    size_t sig_len;
} jws_parts;

static authz__status split_jws(const char *s, size_t n, jws_parts *ret)
{
    if (n > AUTHZ_MAX_TOKEN_LEN)
        return AUTHZ__TOO_LONG;
    const char *d1 = memchr(s, '.', n);
    if (!d1)
        return AUTHZ__MALFORMED;
    const char *d2 = memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - s));
    if (!d2 || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - s)))
        return AUTHZ__MALFORMED;
    jws_parts p = {s, (size_t)(d1 - s), d1 + 1, (size_t)(d2 - d1 - 1), d2 + 1, n - (size_t)(d2 + 1 - s)};
    /* An empty signature ("alg":"none") is refused after the header, as the algorithm it is. */
    if (p.header_len == 0 || p.header_len > AUTHZ_MAX_HEADER_LEN)
        return AUTHZ__MALFORMED;
    *ret = p;
    return AUTHZ__OK;
}

/* Decode and check the header, pick the key (the given one, or the header's kid in ks), check the
 * signature, and decode the payload into payload[cap]. */
static authz__status jws_check(const authz_keyset *ks, const acrypto_ed25519_key *key, const char *s,
                               size_t n, unsigned char *payload, size_t cap, size_t *ret_len)
{
    jws_parts p;
    authz__status st = split_jws(s, n, &p);
    if (st != AUTHZ__OK)
        return st;

    unsigned char hbuf[AUTHZ_MAX_HEADER_LEN];
    size_t hlen = 0;
    if (!base_is_ok(acrypto_base64url_decode(p.header, p.header_len, hbuf, sizeof hbuf, &hlen)))
        return AUTHZ__MALFORMED;
    jose_header h;
    st = parse_header(hbuf, hlen, &h);
    if (st != AUTHZ__OK)
        return st;

    uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
    size_t sig_len = 0;
    if (p.sig_len != 86 ||
        !base_is_ok(acrypto_base64url_decode(p.sig, p.sig_len, sig, sizeof sig, &sig_len)) ||
        sig_len != sizeof sig)
        return AUTHZ__MALFORMED;

    /* The payload is decoded before the signature is checked only to reject malformed encodings early; it
     * is not interpreted until the signature verified. */
    if (acrypto_base64_decode_size(p.payload_len) > cap)
        return AUTHZ__TOO_LONG;
    size_t plen = 0;
    if (p.payload_len > 0 &&
        !base_is_ok(acrypto_base64url_decode(p.payload, p.payload_len, payload, cap, &plen)))
        return AUTHZ__MALFORMED;

    if (!key) {
        if (!h.has_kid)
            return AUTHZ__NO_KID;
        key = ks ? authz__keyset_find(ks, h.kid, strlen(h.kid)) : NULL;
        if (!key)
            return AUTHZ__KID_UNKNOWN;
    }
    /* The signing input is the ASCII of "header.payload", exactly as received. */
    size_t signing_len = p.header_len + 1 + p.payload_len;
    if (!base_is_ok(acrypto_ed25519_verify(key, s, signing_len, sig, sizeof sig)))
        return AUTHZ__SIGNATURE;
    *ret_len = plen;
    return AUTHZ__OK;
}

base_result authz_jws_verify(const acrypto_ed25519_key *key, const char *jws, size_t jws_len, void *payload,
                             size_t cap, size_t *ret_len)
{
    BASE_ENSURE(key && jws && ret_len && (payload || cap == 0), BASE_ERR_INVALID,
                "jws verify: missing argument");
    unsigned char buf[AUTHZ_MAX_TOKEN_LEN];
    size_t len = 0;
    authz__status st = jws_check(NULL, key, jws, jws_len, buf, sizeof buf, &len);
    if (st != AUTHZ__OK)
        return base_fail(BASE_ERR_UNAUTH, "%s", authz__status_message(st));
    if (len > cap)
        return base_fail(BASE_ERR_LIMIT, "jws verify: payload larger than the buffer");
    if (len > 0)
        memcpy(payload, buf, len);
    *ret_len = len;
    return BASE_OK_RESULT;
}

/* ---- tokens ---------------------------------------------------------------------------------------------
 */

authz__status authz__claims_time_check(const authz_claims *claims, int64_t now)
{
    if (now >= claims->exp + AUTHZ_LEEWAY_S)
        return AUTHZ__EXPIRED;
    if (now + AUTHZ_LEEWAY_S < claims->nbf || now + AUTHZ_LEEWAY_S < claims->iat)
        return AUTHZ__NOT_YET_VALID;
    return AUTHZ__OK;
}

authz__status authz__token_check(const authz_keyset *ks, const authz__expect *expect, const char *jwt,
                                 size_t token_len, int64_t now, authz_claims *ret_claims)
{
    unsigned char payload[AUTHZ_MAX_TOKEN_LEN];
    size_t plen = 0;
    authz__status st = jws_check(ks, NULL, jwt, token_len, payload, sizeof payload, &plen);
    if (st != AUTHZ__OK)
        return st;

    authz_claims cl;
    memset(&cl, 0, offsetof(authz_claims, roles)); /* the arrays are written as they are parsed */
    cl.role_count = 0;
    cl.perm_count = 0;
    bool aud_match = false;
    if (!parse_claims(payload, plen, expect->audience, &cl, &aud_match))
        return AUTHZ__CLAIMS;
    if (strcmp(cl.iss, expect->issuer) != 0)
        return AUTHZ__ISSUER;
    if (!aud_match)
        return AUTHZ__AUDIENCE;
    if (cl.exp <= cl.iat || cl.exp <= cl.nbf)
        return AUTHZ__CLAIMS;
    if (cl.exp - cl.iat > expect->max_lifetime_s)
        return AUTHZ__LIFETIME;
    st = authz__claims_time_check(&cl, now);
    if (st != AUTHZ__OK)
        return st;
    memcpy(ret_claims, &cl, offsetof(authz_claims, roles));
    ret_claims->role_count = cl.role_count;
    memcpy(ret_claims->roles, cl.roles, cl.role_count * sizeof cl.roles[0]);
    ret_claims->perm_count = cl.perm_count;
    memcpy(ret_claims->perm, cl.perm, cl.perm_count * sizeof cl.perm[0]);
    return AUTHZ__OK;
}

base_result authz_token_verify(const authz_keyset *ks, const authz_verify_opts *opts, const char *jwt,
                               int64_t now, authz_claims *ret_claims)
{
    BASE_ENSURE(ks && jwt && ret_claims, BASE_ERR_INVALID, "token verify: missing argument");
    authz__expect e = {AUTHZ_DEFAULT_ISSUER, AUTHZ_DEFAULT_AUDIENCE, AUTHZ_DEFAULT_MAX_LIFETIME_S};
    if (opts && opts->issuer)
        e.issuer = opts->issuer;
    if (opts && opts->audience)
        e.audience = opts->audience;
    if (opts && opts->max_lifetime_s > 0)
        e.max_lifetime_s = opts->max_lifetime_s;
    BASE_ENSURE(authz__valid_uri(e.issuer) && authz__valid_uri(e.audience), BASE_ERR_INVALID,
                "token verify: expected issuer or audience malformed");
    size_t n = strnlen(jwt, AUTHZ_MAX_TOKEN_LEN + 1);
    if (n == 0)
        return base_fail(BASE_ERR_UNAUTH, "%s", AUTHZ_MSG_MISSING);
    authz__status st = authz__token_check(ks, &e, jwt, n, now, ret_claims);
    if (st != AUTHZ__OK)
        return base_fail(BASE_ERR_UNAUTH, "%s", authz__status_message(st));
    return BASE_OK_RESULT;
}

/* ---- signing ------------------------------------------------------------------------------------------ */

/* A bounded text builder. */
typedef struct sbuf {
    char *p;
    size_t cap;
    size_t len;
    bool overflow;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->overflow || n >= b->cap - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* "name":"value" (values follow the claim rules: nothing to escape). */
static void sb_member(sbuf *b, const char *name, const char *value)
{
    sb_str(b, "\"");
    sb_str(b, name);
    sb_str(b, "\":\"");
    sb_str(b, value);
    sb_str(b, "\"");
}

static void sb_int(sbuf *b, const char *name, int64_t v)
{
    char num[32];
    int k = snprintf(num, sizeof num, "%lld", (long long)v);
    sb_str(b, "\"");
    sb_str(b, name);
    sb_str(b, "\":");
    sb_add(b, num, k > 0 ? (size_t)k : 0);
}

static void sb_names(sbuf *b, const char *name, const char (*names)[AUTHZ_MAX_NAME_LEN + 1], size_t count)
{
    sb_str(b, "\"");
    sb_str(b, name);
    sb_str(b, "\":[");
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            sb_str(b, ",");
        sb_str(b, "\"");
        sb_str(b, names[i]);
        sb_str(b, "\"");
    }
    sb_str(b, "]");
}

/* header-json -> base64url(header) "." base64url(payload) "." base64url(sig), malloc'd. */
static base_result jws_assemble(const acrypto_ed25519_key *key, const char *header, const void *payload,
                                size_t payload_len, char **ret_jws)
{
    size_t hlen = strlen(header);
    size_t h64 = acrypto_base64url_encode_size(hlen);
    size_t p64 = acrypto_base64url_encode_size(payload_len);
    size_t s64 = acrypto_base64url_encode_size(ACRYPTO_ED25519_SIG_LEN);
    /* Each size counts a NUL; the token is the three parts and two dots: h64 + p64 + s64 - 1 characters. */
    if (payload_len > AUTHZ_MAX_TOKEN_LEN || h64 + p64 + s64 - 1 > AUTHZ_MAX_TOKEN_LEN)
        return base_fail(BASE_ERR_LIMIT, "jws sign: token longer than %d bytes", AUTHZ_MAX_TOKEN_LEN);
    char *out = malloc(h64 + p64 + s64);
    if (!out)
        return base_fail(BASE_ERR_NOMEM, "jws sign: out of memory");
    size_t n1 = 0, n2 = 0, n3 = 0;
    uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
    base_result r;
    BASE_GUARD_GOTO(r, acrypto_base64url_encode(header, hlen, out, h64, &n1), fail);
    out[n1] = '.';
    BASE_GUARD_GOTO(r, acrypto_base64url_encode(payload, payload_len, out + n1 + 1, p64, &n2), fail);
    out[n1 + 1 + n2] = '.';
    BASE_GUARD_GOTO(r, acrypto_ed25519_sign(key, out, n1 + 1 + n2, sig), fail);
    BASE_GUARD_GOTO(r, acrypto_base64url_encode(sig, sizeof sig, out + n1 + 2 + n2, s64, &n3), fail);
    *ret_jws = out;
    return BASE_OK_RESULT;
fail:
    free(out);
    return r;
}

base_result authz_jws_sign(const acrypto_ed25519_key *key, const char *kid, const void *payload,
                           size_t payload_len, char **ret_jws)
{
    BASE_ENSURE(key && ret_jws && (payload || payload_len == 0), BASE_ERR_INVALID,
                "jws sign: missing argument");
    BASE_ENSURE(!kid || valid_kid(kid, strnlen(kid, AUTHZ_MAX_KID_LEN + 1)), BASE_ERR_INVALID,
                "jws sign: kid malformed");
    char header[AUTHZ_MAX_KID_LEN + 64];
    sbuf b = {header, sizeof header, 0, false};
    sb_str(&b, "{\"alg\":\"EdDSA\"");
    if (kid) {
        sb_str(&b, ",");
        sb_member(&b, "kid", kid);
    }
    sb_str(&b, "}");
    BASE_ENSURE(!b.overflow, BASE_ERR_INTERNAL, "jws sign: header buffer");
    return jws_assemble(key, header, payload, payload_len, ret_jws);
}

base_result authz_token_sign(const authz_claims *claims, const acrypto_ed25519_key *key, const char *kid,
                             char **ret_jwt)
{
    BASE_ENSURE(claims && key && ret_jwt, BASE_ERR_INVALID, "token sign: missing argument");
    BASE_ENSURE(authz_claims_well_formed(claims), BASE_ERR_INVALID, "token sign: claims malformed");
    BASE_ENSURE(claims->exp - claims->iat <= AUTHZ_DEFAULT_MAX_LIFETIME_S, BASE_ERR_INVALID,
                "token sign: lifetime longer than the maximum");
    char derived[AUTHZ_KID_BUF];
    if (!kid) {
        BASE_GUARD(authz_kid_for_key(key, derived));
        kid = derived;
    }
    BASE_ENSURE(valid_kid(kid, strnlen(kid, AUTHZ_MAX_KID_LEN + 1)), BASE_ERR_INVALID,
                "token sign: kid malformed");

    char header[AUTHZ_MAX_KID_LEN + 64];
    sbuf h = {header, sizeof header, 0, false};
    sb_str(&h, "{\"alg\":\"EdDSA\",");
    sb_member(&h, "kid", kid);
    sb_str(&h, ",\"typ\":\"JWT\"}");
    BASE_ENSURE(!h.overflow, BASE_ERR_INTERNAL, "token sign: header buffer");

    char body[AUTHZ_MAX_TOKEN_LEN];
    sbuf b = {body, sizeof body, 0, false};
    sb_str(&b, "{");
    sb_member(&b, "iss", claims->iss);
    sb_str(&b, ",");
    sb_member(&b, "aud", claims->aud);
    sb_str(&b, ",");
    sb_member(&b, "sub", claims->sub);
    sb_str(&b, ",");
    sb_member(&b, "tid", claims->tid);
    sb_str(&b, ",");
    sb_member(&b, "sid", claims->sid);
    sb_str(&b, ",");
    sb_member(&b, "jti", claims->jti);
    sb_str(&b, ",");
    sb_int(&b, "iat", claims->iat);
    sb_str(&b, ",");
    sb_int(&b, "nbf", claims->nbf);
    sb_str(&b, ",");
    sb_int(&b, "exp", claims->exp);
    sb_str(&b, ",");
    sb_names(&b, "roles", claims->roles, claims->role_count);
    sb_str(&b, ",");
    sb_names(&b, "perm", claims->perm, claims->perm_count);
    sb_str(&b, claims->mfa ? ",\"mfa\":true" : ",\"mfa\":false");
    sb_str(&b, claims->enr ? ",\"enr\":true}" : ",\"enr\":false}");
    if (b.overflow)
        return base_fail(BASE_ERR_LIMIT, "token sign: token longer than %d bytes", AUTHZ_MAX_TOKEN_LEN);
    return jws_assemble(key, header, body, b.len, ret_jwt);
}
