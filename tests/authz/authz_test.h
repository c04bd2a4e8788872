/* Shared helpers of the common/authz tests: result checks, fresh ids, valid claims, raw JWS assembly (to
 * build the tokens a correct signer would never make), and a JWKS source for authorizers. Header-only. */
#ifndef ALMA_AUTHZ_TEST_H
#define ALMA_AUTHZ_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "authz/authz.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OK(expr)                                                                                             \
    do {                                                                                                     \
        base_result ok_r__ = (expr);                                                                         \
        if (!base_is_ok(ok_r__))                                                                             \
            fail_msg("%s: %s (%s)", #expr, base_err_name(ok_r__.err), base_error_message());                 \
    } while (0)

#define FAILS_WITH(expr, code)                                                                               \
    do {                                                                                                     \
        base_result fw_r__ = (expr);                                                                         \
        if (fw_r__.err != (code))                                                                            \
            fail_msg("%s: expected %s, got %s (%s)", #expr, base_err_name(code), base_err_name(fw_r__.err),  \
                     base_error_message());                                                                  \
    } while (0)

/* Fails with `code` and exactly the message `msg`. */
#define FAILS_WITH_MSG(expr, code, msg)                                                                      \
    do {                                                                                                     \
        FAILS_WITH(expr, code);                                                                              \
        if (strcmp(base_error_message(), (msg)) != 0)                                                        \
            fail_msg("%s: expected message \"%s\", got \"%s\"", #expr, (msg), base_error_message());         \
    } while (0)

static inline int64_t t_now(void)
{
    return (int64_t)time(NULL);
}

static inline int64_t t_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void t_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* prefix + 32 random lowercase hex digits into out[cap] (e.g. a fresh "ses_..." for every test). */
static inline const char *t_id(char *out, size_t cap, const char *prefix)
{
    uint8_t rnd[16];
    char hex[33];
    size_t n = 0;
    OK(acrypto_random(rnd, sizeof rnd));
    OK(acrypto_hex_encode(rnd, sizeof rnd, hex, sizeof hex, &n));
    snprintf(out, cap, "%s%s", prefix, hex);
    return out;
}

/* A fresh tenant id: "t-" + 16 hex. */
static inline const char *t_tenant(char *out, size_t cap)
{
    char id[64];
    t_id(id, sizeof id, "t-");
    snprintf(out, cap, "%.18s", id);
    return out;
}

/* Valid claims for a fresh principal/session in `tenant`, issued now for 5 minutes, with the permissions
 * given (NULL-terminated). */
static inline void t_claims(authz_claims *c, const char *tenant, const char *const *perms)
{
    memset(c, 0, sizeof *c);
    int64_t now = t_now();
    snprintf(c->iss, sizeof c->iss, "%s", AUTHZ_DEFAULT_ISSUER);
    snprintf(c->aud, sizeof c->aud, "%s", AUTHZ_DEFAULT_AUDIENCE);
    t_id(c->sub, sizeof c->sub, "usr_");
    snprintf(c->tid, sizeof c->tid, "%s", tenant);
    t_id(c->sid, sizeof c->sid, "ses_");
    t_id(c->jti, sizeof c->jti, "tok_");
    c->iat = now;
    c->nbf = now;
    c->exp = now + 300;
    c->mfa = true;
    c->role_count = 1;
    snprintf(c->roles[0], sizeof c->roles[0], "pcp_clinician");
    for (size_t i = 0; perms && perms[i]; i++)
        snprintf(c->perm[c->perm_count++], sizeof c->perm[0], "%s", perms[i]);
}

/* base64url of a C string into a new malloc'd string. */
static inline char *t_b64(const void *data, size_t len)
{
    size_t cap = acrypto_base64url_encode_size(len), n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    OK(acrypto_base64url_encode(data, len, out, cap, &n));
    return out;
}

/* A compact JWS from raw header and payload JSON, signed with key (as a correct signer would, whatever the
 * header says). sig_override: use this third part instead (e.g. "" for alg none). malloc'd. */
static inline char *t_jws_raw(const acrypto_ed25519_key *key, const char *header, const char *payload,
                              const char *sig_override)
{
    char *h = t_b64(header, strlen(header));
    char *p = t_b64(payload, strlen(payload));
    size_t in_len = strlen(h) + 1 + strlen(p);
    char *out = malloc(in_len + 100);
    assert_non_null(out);
    snprintf(out, in_len + 100, "%s.%s", h, p);
    char *s;
    if (sig_override) {
        s = malloc(strlen(sig_override) + 1);
        assert_non_null(s);
        memcpy(s, sig_override, strlen(sig_override) + 1);
    } else {
        uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
        OK(acrypto_ed25519_sign(key, out, in_len, sig));
        s = t_b64(sig, sizeof sig);
    }
    snprintf(out + in_len, 100, ".%s", s);
    free(h);
    free(p);
    free(s);
    return out;
}

/* The kid of a key. */
static inline const char *t_kid(const acrypto_ed25519_key *key, char out[AUTHZ_KID_BUF])
{
    OK(authz_kid_for_key(key, out));
    return out;
}

/* A JWKS source for authorizers: the text it serves and how often it was asked. */
typedef struct t_jwks_source {
    pthread_mutex_t lock;
    char *jwks;
    int fetches;
    bool fail;
} t_jwks_source;

static inline base_result t_fetch(void *arg, char **ret_jwks)
{
    t_jwks_source *s = arg;
    pthread_mutex_lock(&s->lock);
    s->fetches++;
    base_result r = BASE_OK_RESULT;
    if (s->fail || !s->jwks) {
        r = base_fail(BASE_ERR_UNAVAILABLE, "test: key source down");
    } else {
        size_t n = strlen(s->jwks);
        char *copy = malloc(n + 1);
        if (copy) {
            memcpy(copy, s->jwks, n + 1);
            *ret_jwks = copy;
        } else {
            r = base_fail(BASE_ERR_NOMEM, "test: out of memory");
        }
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

static inline int t_fetches(t_jwks_source *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->fetches;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Serve the public keys given (NULL-terminated), in that order. */
static inline void t_serve_keys(t_jwks_source *s, const acrypto_ed25519_key *const *keys)
{
    authz_keyset *ks = NULL;
    char *text = NULL;
    OK(authz_keyset_new(&ks));
    for (size_t i = 0; keys[i]; i++)
        OK(authz_keyset_add(ks, keys[i]));
    OK(authz_keyset_to_jwks(ks, &text));
    authz_keyset_free(ks);
    pthread_mutex_lock(&s->lock);
    free(s->jwks);
    s->jwks = text;
    pthread_mutex_unlock(&s->lock);
}

/* A signed token for claims c ("Bearer " prefix when bearer), malloc'd. (noinline: GCC's dangling-pointer
 * analysis otherwise mistakes the freed unprefixed copy for the result.) */
__attribute__((noinline, unused)) static char *t_token(const authz_claims *c, const acrypto_ed25519_key *key,
                                                       bool bearer)
{
    char *jwt = NULL;
    OK(authz_token_sign(c, key, NULL, &jwt));
    if (!bearer)
        return jwt;
    size_t n = strlen(jwt) + 8;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "Bearer %s", jwt);
    free(jwt);
    return out;
}

#endif
