/* common/authz tokens and key sets, without Redis: the RFC 8037 vectors for the JWS layer, round trips, and
 * negative tests that really tamper with tokens (every rejection is checked for its own reason, so a token
 * refused for an unrelated reason would fail the test). */
#include "authz_test.h"

/* RFC 8037, Appendix A.1 (key), A.4 (JWS), A.5 (verification). */
static const char rfc_d[] = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
static const char rfc_x[] = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
static const char rfc_payload[] = "Example of Ed25519 signing";
static const char rfc_jws[] =
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-"
    "09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
/* The same JWS as once quoted with the second half of its signature garbled: a valid encoding of 64 bytes
 * that are not the signature, so it must be refused as one. */
static const char garbled_jws[] =
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-"
    "09PGcvMg3AIbQR6dWbhijcmR4cI0-mF1sm6P7L9fG4XxyWb5S-ZuqcmxBw";
/* base64url(SHA-256(x)[0..8]), computed independently (Python hashlib). */
static const char rfc_kid[] = "If4x36FUomE";

static acrypto_ed25519_key *g_key;   /* signs the tokens */
static acrypto_ed25519_key *g_other; /* a key not in the set */
static authz_keyset *g_ks;           /* holds g_key only */
static char g_kid[AUTHZ_KID_BUF];
static const char g_tenant[] = "clinic-one";
static const char *const g_perms[] = {"referral.review", "phi.read.clinical", NULL};

static int setup(void **state)
{
    (void)state;
    if (!base_is_ok(acrypto_ed25519_generate(&g_key)) || !base_is_ok(acrypto_ed25519_generate(&g_other)) ||
        !base_is_ok(authz_keyset_new(&g_ks)) || !base_is_ok(authz_keyset_add(g_ks, g_key)) ||
        !base_is_ok(authz_kid_for_key(g_key, g_kid)))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    authz_keyset_free(g_ks);
    acrypto_ed25519_free(g_key);
    acrypto_ed25519_free(g_other);
    return 0;
}

static acrypto_ed25519_key *rfc_public_key(void)
{
    uint8_t pub[32];
    size_t n = 0;
    acrypto_ed25519_key *k = NULL;
    OK(acrypto_base64url_decode(rfc_x, strlen(rfc_x), pub, sizeof pub, &n));
    assert_int_equal(n, 32);
    OK(acrypto_ed25519_from_public(pub, n, &k));
    return k;
}

/* ---- the JWS layer: RFC 8037 ----------------------------------------------------------------------- */

static void test_rfc8037_verify(void **state)
{
    (void)state;
    acrypto_ed25519_key *k = rfc_public_key();
    char payload[64];
    size_t n = 0;
    OK(authz_jws_verify(k, rfc_jws, strlen(rfc_jws), payload, sizeof payload, &n));
    assert_int_equal(n, strlen(rfc_payload));
    assert_memory_equal(payload, rfc_payload, n);

    /* The same JWS with one signature bit flipped, and with the payload changed. */
    char *bad = strdup(rfc_jws);
    size_t len = strlen(bad);
    bad[len - 10] = bad[len - 10] == 'A' ? 'B' : 'A';
    FAILS_WITH_MSG(authz_jws_verify(k, bad, len, payload, sizeof payload, &n), BASE_ERR_UNAUTH,
                   AUTHZ_MSG_SIGNATURE);
    free(bad);
    char *p2 = t_b64("Example of Ed25519 signinG", 26);
    char tampered[256];
    snprintf(tampered, sizeof tampered, "eyJhbGciOiJFZERTQSJ9.%s.%s", p2, strrchr(rfc_jws, '.') + 1);
    free(p2);
    FAILS_WITH_MSG(authz_jws_verify(k, tampered, strlen(tampered), payload, sizeof payload, &n),
                   BASE_ERR_UNAUTH, AUTHZ_MSG_SIGNATURE);
    FAILS_WITH_MSG(authz_jws_verify(k, garbled_jws, strlen(garbled_jws), payload, sizeof payload, &n),
                   BASE_ERR_UNAUTH, AUTHZ_MSG_SIGNATURE);
    /* Another key. */
    FAILS_WITH_MSG(authz_jws_verify(g_other, rfc_jws, strlen(rfc_jws), payload, sizeof payload, &n),
                   BASE_ERR_UNAUTH, AUTHZ_MSG_SIGNATURE);
    /* A buffer too small for a payload that verified. */
    FAILS_WITH(authz_jws_verify(k, rfc_jws, strlen(rfc_jws), payload, 4, &n), BASE_ERR_LIMIT);
    acrypto_ed25519_free(k);
}

static void test_rfc8037_sign(void **state)
{
    (void)state;
    uint8_t d[32];
    size_t n = 0;
    OK(acrypto_base64url_decode(rfc_d, strlen(rfc_d), d, sizeof d, &n));
    acrypto_secret *seed = NULL;
    acrypto_ed25519_key *k = NULL;
    OK(acrypto_secret_from_bytes(d, sizeof d, &seed));
    OK(acrypto_ed25519_from_seed(seed, &k));
    acrypto_secret_free(seed);
    char *jws = NULL;
    OK(authz_jws_sign(k, NULL, rfc_payload, strlen(rfc_payload), &jws));
    assert_string_equal(jws, rfc_jws); /* Ed25519 is deterministic: exactly the RFC's bytes */
    free(jws);

    /* The kid convention on the RFC key, and the JWK the key set publishes for it. */
    char kid[AUTHZ_KID_BUF];
    OK(authz_kid_for_key(k, kid));
    assert_string_equal(kid, rfc_kid);
    authz_keyset *ks = NULL;
    char *text = NULL;
    OK(authz_keyset_new(&ks));
    OK(authz_keyset_add(ks, k));
    OK(authz_keyset_to_jwks(ks, &text));
    assert_string_equal(
        text, "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiM"
              "lrwIaaPcHURo\",\"kid\":\"If4x36FUomE\",\"use\":\"sig\",\"alg\":\"EdDSA\"}]}");
    free(text);
    authz_keyset_free(ks);
    acrypto_ed25519_free(k);
}

/* ---- round trip ------------------------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    c.role_count = 2;
    snprintf(c.roles[1], sizeof c.roles[1], "care_coordinator");
    c.enr = false;
    char *jwt = t_token(&c, g_key, false);
    /* The header is exactly the README's. */
    char header[128];
    size_t hn = 0;
    OK(acrypto_base64url_decode(jwt, (size_t)(strchr(jwt, '.') - jwt), header, sizeof header - 1, &hn));
    header[hn] = '\0';
    char expect[128];
    snprintf(expect, sizeof expect, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"JWT\"}", g_kid);
    assert_string_equal(header, expect);

    memset(&got, 0x5a, sizeof got);
    OK(authz_token_verify(g_ks, NULL, jwt, t_now(), &got));
    assert_string_equal(got.iss, c.iss);
    assert_string_equal(got.aud, c.aud);
    assert_string_equal(got.sub, c.sub);
    assert_string_equal(got.tid, c.tid);
    assert_string_equal(got.sid, c.sid);
    assert_string_equal(got.jti, c.jti);
    assert_int_equal(got.iat, c.iat);
    assert_int_equal(got.nbf, c.nbf);
    assert_int_equal(got.exp, c.exp);
    assert_true(got.mfa);
    assert_false(got.enr);
    assert_int_equal(got.role_count, 2);
    assert_string_equal(got.roles[0], "pcp_clinician");
    assert_string_equal(got.roles[1], "care_coordinator");
    assert_int_equal(got.perm_count, 2);
    assert_string_equal(got.perm[0], "referral.review");
    assert_string_equal(got.perm[1], "phi.read.clinical");
    free(jwt);

    /* A service principal with no roles and no permissions, an enrolment token. */
    t_claims(&c, g_tenant, NULL);
    snprintf(c.sub, sizeof c.sub, "svc_guideline");
    c.role_count = 0;
    c.enr = true;
    c.mfa = false;
    jwt = t_token(&c, g_key, false);
    OK(authz_token_verify(g_ks, NULL, jwt, t_now(), &got));
    assert_string_equal(got.sub, "svc_guideline");
    assert_int_equal(got.role_count, 0);
    assert_int_equal(got.perm_count, 0);
    assert_true(got.enr);
    assert_false(got.mfa);
    free(jwt);
}

/* ---- tampering ------------------------------------------------------------------------------------- */

/* Replace part `idx` (0 header, 1 payload, 2 signature) of a JWS. */
static char *replace_part(const char *jws, int idx, const char *part)
{
    const char *d1 = strchr(jws, '.');
    const char *d2 = strchr(d1 + 1, '.');
    const char *start[3] = {jws, d1 + 1, d2 + 1};
    size_t len[3] = {(size_t)(d1 - jws), (size_t)(d2 - d1 - 1), strlen(d2 + 1)};
    size_t cap = strlen(jws) + strlen(part) + 4;
    char *out = malloc(cap);
    assert_non_null(out);
    snprintf(out, cap, "%.*s.%.*s.%.*s", idx == 0 ? (int)strlen(part) : (int)len[0],
             idx == 0 ? part : start[0], idx == 1 ? (int)strlen(part) : (int)len[1],
             idx == 1 ? part : start[1], idx == 2 ? (int)strlen(part) : (int)len[2],
             idx == 2 ? part : start[2]);
    return out;
}

/* Decode part idx, flip one bit of byte `at`, re-encode. */
static char *flip_in_part(const char *jws, int idx, size_t at)
{
    const char *d1 = strchr(jws, '.');
    const char *d2 = strchr(d1 + 1, '.');
    const char *start[3] = {jws, d1 + 1, d2 + 1};
    size_t len[3] = {(size_t)(d1 - jws), (size_t)(d2 - d1 - 1), strlen(d2 + 1)};
    uint8_t buf[AUTHZ_MAX_TOKEN_LEN];
    size_t n = 0;
    OK(acrypto_base64url_decode(start[idx], len[idx], buf, sizeof buf, &n));
    assert_true(at < n);
    buf[at] ^= 0x01;
    char *enc = t_b64(buf, n);
    char *out = replace_part(jws, idx, enc);
    free(enc);
    return out;
}

static void test_tampered(void **state)
{
    (void)state;
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    char *jwt = t_token(&c, g_key, false);
    OK(authz_token_verify(g_ks, NULL, jwt, t_now(), &got));

    /* A payload byte inside the sub claim: the signature is checked before any claim is read. */
    char payload_json[2048];
    const char *d1 = strchr(jwt, '.');
    size_t pn = 0;
    OK(acrypto_base64url_decode(d1 + 1, (size_t)(strchr(d1 + 1, '.') - d1 - 1), payload_json,
                                sizeof payload_json - 1, &pn));
    payload_json[pn] = '\0';
    char *sub_at = strstr(payload_json, "\"sub\":\"usr_");
    assert_non_null(sub_at);
    size_t at = (size_t)(sub_at - payload_json) + 11; /* first hex digit of the principal */
    char *t = flip_in_part(jwt, 1, at);
    base_result r = authz_token_verify(g_ks, NULL, t, t_now(), &got);
    assert_int_equal(r.err, BASE_ERR_UNAUTH);
    assert_string_equal(base_error_message(), AUTHZ_MSG_SIGNATURE);
    free(t);

    /* Every byte of the payload, header and signature, one at a time: never accepted. */
    for (int part = 0; part < 3; part++) {
        const char *p0 = part == 0 ? jwt : part == 1 ? d1 + 1 : strrchr(jwt, '.') + 1;
        size_t plen = part == 2 ? strlen(p0) : (size_t)(strchr(p0, '.') - p0);
        size_t bytes = plen * 3 / 4;
        for (size_t i = 0; i < bytes; i++) {
            t = flip_in_part(jwt, part, i);
            FAILS_WITH(authz_token_verify(g_ks, NULL, t, t_now(), &got), BASE_ERR_UNAUTH);
            free(t);
        }
    }

    /* A header changed in a way the parser accepts (an extra member): the signature covers it. */
    char header[160];
    snprintf(header, sizeof header,
             "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"JWT\",\"x5u\":\"https://e\"}", g_kid);
    char *h64 = t_b64(header, strlen(header));
    t = replace_part(jwt, 0, h64);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, t, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_SIGNATURE);
    free(t);
    free(h64);

    /* The signature of another token, and a signature by a key outside the set under our kid. */
    authz_claims c2;
    t_claims(&c2, g_tenant, g_perms);
    char *jwt2 = t_token(&c2, g_key, false);
    t = replace_part(jwt, 2, strrchr(jwt2, '.') + 1);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, t, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_SIGNATURE);
    free(t);
    free(jwt2);
    char *forged = NULL;
    OK(authz_token_sign(&c, g_other, g_kid, &forged));
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, forged, t_now(), &got), BASE_ERR_UNAUTH,
                   AUTHZ_MSG_SIGNATURE);
    free(forged);
    free(jwt);
}

/* ---- header rules ----------------------------------------------------------------------------------- */

static char *claims_json(const authz_claims *c)
{
    /* The JSON a correct signer writes, built here independently of the library. */
    char *out = malloc(4096);
    assert_non_null(out);
    snprintf(
        out, 4096,
        "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"tid\":\"%s\",\"sid\":\"%s\",\"jti\":\"%s\","
        "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld,\"roles\":[\"pcp_clinician\"],\"perm\":[\"referral.review\"],"
        "\"mfa\":true,\"enr\":false}",
        c->iss, c->aud, c->sub, c->tid, c->sid, c->jti, (long long)c->iat, (long long)c->nbf,
        (long long)c->exp);
    return out;
}

static void expect_header(const char *header, base_err err, const char *msg)
{
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    char *payload = claims_json(&c);
    char *t = t_jws_raw(g_key, header, payload, NULL);
    base_result r = authz_token_verify(g_ks, NULL, t, t_now(), &got);
    if (r.err != err || (msg && strcmp(base_error_message(), msg) != 0))
        fail_msg("header %s: expected %s \"%s\", got %s \"%s\"", header, base_err_name(err), msg ? msg : "",
                 base_err_name(r.err), base_error_message());
    free(t);
    free(payload);
}

static void test_header_rules(void **state)
{
    (void)state;
    char h[256];
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"JWT\"}", g_kid);
    expect_header(h, BASE_OK, NULL);
    snprintf(h, sizeof h, "{\"kid\":\"%s\",\"alg\":\"EdDSA\"}", g_kid); /* typ optional, any order */
    expect_header(h, BASE_OK, NULL);
    snprintf(h, sizeof h, " { \"alg\" : \"EdDSA\" , \"kid\" : \"%s\" , \"typ\" : \"jwt\" } ", g_kid);
    expect_header(h, BASE_OK, NULL);
    snprintf(h, sizeof h, "{\"alg\":\"Ed\\u0044SA\",\"kid\":\"%s\"}", g_kid); /* escapes decode */
    expect_header(h, BASE_OK, NULL);

    /* Algorithms other than EdDSA, signed correctly with Ed25519: refused for the algorithm. */
    static const char *const algs[] = {"none", "HS256", "RS256", "ES256", "eddsa", "EdDSA ", "Ed25519", ""};
    for (size_t i = 0; i < BASE_ARRAY_LEN(algs); i++) {
        snprintf(h, sizeof h, "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}", algs[i], g_kid);
        expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_ALG);
    }
    snprintf(h, sizeof h, "{\"kid\":\"%s\",\"typ\":\"JWT\"}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_ALG);
    snprintf(h, sizeof h, "{\"alg\":null,\"kid\":\"%s\"}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(h, sizeof h, "{\"alg\":[\"EdDSA\"],\"kid\":\"%s\"}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);

    /* Duplicate alg (a parser that kept the first or the last would disagree with another). */
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"alg\":\"none\",\"kid\":\"%s\"}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"kid\":\"%s\"}", g_kid, g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    /* crit, cty, another typ: refused. */
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"crit\":[\"exp\"],\"exp\":1}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"cty\":\"JWT\"}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);

    /* kid: missing, unknown, of a key outside the set, malformed. */
    expect_header("{\"alg\":\"EdDSA\",\"typ\":\"JWT\"}", BASE_ERR_UNAUTH, AUTHZ_MSG_NO_KID);
    expect_header("{\"alg\":\"EdDSA\",\"kid\":\"AAAAAAAAAAA\"}", BASE_ERR_UNAUTH, AUTHZ_MSG_KID_UNKNOWN);
    char other_kid[AUTHZ_KID_BUF];
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", t_kid(g_other, other_kid));
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_KID_UNKNOWN);
    expect_header("{\"alg\":\"EdDSA\",\"kid\":\"\"}", BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    expect_header("{\"alg\":\"EdDSA\",\"kid\":\"a b\"}", BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    expect_header("{\"alg\":\"EdDSA\",\"kid\":7}", BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);

    /* Not an object; trailing data; bad JSON. */
    expect_header("[\"EdDSA\"]", BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}x", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",}", g_kid);
    expect_header(h, BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
}

/* The classic confusions: "alg":"none" with an empty signature, and HS256 keyed with the public key. */
static void test_alg_none_and_hs256(void **state)
{
    (void)state;
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    char *payload = claims_json(&c);
    char h[160];
    snprintf(h, sizeof h, "{\"alg\":\"none\",\"kid\":\"%s\",\"typ\":\"JWT\"}", g_kid);
    char *t = t_jws_raw(g_key, h, payload, "");
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, t, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_ALG);
    free(t);

    snprintf(h, sizeof h, "{\"alg\":\"HS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", g_kid);
    char *h64 = t_b64(h, strlen(h));
    char *p64 = t_b64(payload, strlen(payload));
    char input[4096];
    snprintf(input, sizeof input, "%s.%s", h64, p64);
    uint8_t pub[32], mac[32];
    OK(acrypto_ed25519_public_raw(g_key, pub));
    acrypto_secret *secret = NULL;
    OK(acrypto_secret_from_bytes(pub, sizeof pub, &secret));
    OK(acrypto_hmac_sha256(secret, input, strlen(input), mac));
    acrypto_secret_free(secret);
    char *m64 = t_b64(mac, sizeof mac);
    char tok[4200];
    snprintf(tok, sizeof tok, "%s.%s", input, m64);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, tok, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_ALG);
    free(h64);
    free(p64);
    free(m64);
    free(payload);
}

/* ---- structure ---------------------------------------------------------------------------------------- */

static void test_structure(void **state)
{
    (void)state;
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    char *jwt = t_token(&c, g_key, false);
    size_t n = strlen(jwt);
    char buf[AUTHZ_MAX_TOKEN_LEN + 64];

    /* two parts, four parts, empty header */
    snprintf(buf, sizeof buf, "%.*s", (int)(strrchr(jwt, '.') - jwt), jwt);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(buf, sizeof buf, "%s.AAAA", jwt);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(buf, sizeof buf, "%s", strchr(jwt, '.'));
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    /* padding, whitespace, the other base64 alphabet */
    snprintf(buf, sizeof buf, "%s=", jwt);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(buf, sizeof buf, "%s ", jwt);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(buf, sizeof buf, " %s", jwt);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_MALFORMED);
    snprintf(buf, sizeof buf, "%s", jwt);
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '-' || buf[i] == '_') {
            buf[i] = buf[i] == '-' ? '+' : '/';
            FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH,
                           AUTHZ_MSG_MALFORMED);
            break;
        }
    }
    /* a truncated signature */
    snprintf(buf, sizeof buf, "%.*s", (int)n - 2, jwt);
    FAILS_WITH(authz_token_verify(g_ks, NULL, buf, t_now(), &got), BASE_ERR_UNAUTH);
    /* empty */
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, "", t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_MISSING);
    /* longer than the limit */
    char *big = malloc(AUTHZ_MAX_TOKEN_LEN + 2);
    assert_non_null(big);
    memset(big, 'A', AUTHZ_MAX_TOKEN_LEN + 1);
    big[AUTHZ_MAX_TOKEN_LEN + 1] = '\0';
    memcpy(big, jwt, n);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, big, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_TOO_LONG);
    free(big);
    free(jwt);
}

/* ---- claims ---------------------------------------------------------------------------------------------
 */

/* Sign a raw payload under our kid and verify it now. */
static base_result verify_payload(const char *payload, authz_claims *got)
{
    char h[128];
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"JWT\"}", g_kid);
    char *t = t_jws_raw(g_key, h, payload, NULL);
    base_result r = authz_token_verify(g_ks, NULL, t, t_now(), got);
    free(t);
    return r;
}

#define CLAIMS_FMT                                                                                           \
    "{\"iss\":\"alma-identity\",\"aud\":%s,\"sub\":\"%s\",\"tid\":\"clinic-one\",\"sid\":\"%s\","            \
    "\"jti\":\"tok_0123456789abcdef0123456789abcdef\",\"iat\":%s,\"nbf\":%lld,\"exp\":%lld,"                 \
    "\"roles\":%s,\"perm\":%s,\"mfa\":%s,\"enr\":false%s}"

typedef struct claim_variant {
    const char *aud, *sub, *sid, *iat, *roles, *perm, *mfa, *extra;
} claim_variant;

static base_result verify_variant(const claim_variant *v, authz_claims *got)
{
    char iat[32];
    long long now = (long long)t_now();
    snprintf(iat, sizeof iat, "%lld", now);
    char *payload = malloc(16384);
    assert_non_null(payload);
    snprintf(payload, 16384, CLAIMS_FMT, v->aud ? v->aud : "\"alma\"",
             v->sub ? v->sub : "usr_0123456789abcdef0123456789abcdef",
             v->sid ? v->sid : "ses_0123456789abcdef0123456789abcdef", v->iat ? v->iat : iat, now, now + 300,
             v->roles ? v->roles : "[\"pcp_clinician\"]", v->perm ? v->perm : "[\"referral.review\"]",
             v->mfa ? v->mfa : "true", v->extra ? v->extra : "");
    base_result r = verify_payload(payload, got);
    free(payload);
    return r;
}

static void test_claims_rules(void **state)
{
    (void)state;
    authz_claims got;
    claim_variant base = {0};
    OK(verify_variant(&base, &got));

    /* unknown claims (even nested) are ignored; aud as an array containing ours */
    claim_variant v = base;
    v.extra = ",\"x-ext\":{\"a\":[1,2.5e3,-0.1,{\"b\":null}],\"c\":\"\\u00e9\\ud83d\\ude00\"},\"z\":true";
    OK(verify_variant(&v, &got));
    v = base;
    v.aud = "[\"other\",\"alma\"]";
    OK(verify_variant(&v, &got));
    assert_string_equal(got.aud, "alma");

    struct {
        claim_variant v;
        const char *msg;
    } bad[] = {
        {{.aud = "\"other\""}, AUTHZ_MSG_AUDIENCE},
        {{.aud = "[\"other\"]"}, AUTHZ_MSG_AUDIENCE},
        {{.aud = "[]"}, AUTHZ_MSG_AUDIENCE},
        {{.aud = "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"alma\"]"}, AUTHZ_MSG_CLAIMS},
        {{.aud = "7"}, AUTHZ_MSG_CLAIMS},
        {{.sub = "usr_0123"}, AUTHZ_MSG_CLAIMS},
        {{.sub = "usr_0123456789ABCDEF0123456789abcdef"}, AUTHZ_MSG_CLAIMS},
        {{.sub = "svc_"}, AUTHZ_MSG_CLAIMS},
        {{.sub = "svc_a:b"}, AUTHZ_MSG_CLAIMS},
        {{.sub = "admin"}, AUTHZ_MSG_CLAIMS},
        {{.sid = "ses_0123456789abcdef0123456789abcdef0"}, AUTHZ_MSG_CLAIMS},
        {{.sid = "ses_0123456789abcdef0123456789abcde\\u0000"}, AUTHZ_MSG_CLAIMS},
        {{.iat = "\"1700000000\""}, AUTHZ_MSG_CLAIMS},
        {{.iat = "1700000000.5"}, AUTHZ_MSG_CLAIMS},
        {{.iat = "1.7e9"}, AUTHZ_MSG_CLAIMS},
        {{.iat = "-1"}, AUTHZ_MSG_CLAIMS},
        {{.iat = "01700000000"}, AUTHZ_MSG_CLAIMS},
        {{.iat = "99999999999999999999"}, AUTHZ_MSG_CLAIMS},
        {{.roles = "\"pcp_clinician\""}, AUTHZ_MSG_CLAIMS},
        {{.roles = "[\"pcp clinician\"]"}, AUTHZ_MSG_CLAIMS},
        {{.roles = "[\"\"]"}, AUTHZ_MSG_CLAIMS},
        {{.roles = "[1]"}, AUTHZ_MSG_CLAIMS},
        {{.perm = "[\"referral.review\",]"}, AUTHZ_MSG_CLAIMS},
        {{.perm = "[\"phi.read\\\"x\"]"}, AUTHZ_MSG_CLAIMS},
        {{.perm = "[\"a123456789b123456789c123456789d123456789e123456789f123456789g1234\"]"},
         AUTHZ_MSG_CLAIMS},
        {{.mfa = "\"true\""}, AUTHZ_MSG_CLAIMS},
        {{.mfa = "1"}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"sub\":\"usr_0123456789abcdef0123456789abcdef\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"s\\u0075b\":\"usr_0123456789abcdef0123456789abcdef\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"perm\":[]"}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":\"\\ud800\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":\"\\udc00\\ud800\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":\"\\q\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":\"\x01\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":\"\xc3\x28\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":\"\xed\xa0\x80\""}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":01"}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":1."}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":tru"}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]"}, AUTHZ_MSG_CLAIMS},
        {{.extra = "} "}, AUTHZ_MSG_CLAIMS},
        {{.extra = ",}"}, AUTHZ_MSG_CLAIMS},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        claim_variant w = bad[i].v;
        base_result r = verify_variant(&w, &got);
        if (r.err != BASE_ERR_UNAUTH || strcmp(base_error_message(), bad[i].msg) != 0)
            fail_msg("case %zu: expected \"%s\", got %s \"%s\"", i, bad[i].msg, base_err_name(r.err),
                     base_error_message());
    }

    /* Too many roles / permissions. */
    char many[4096];
    size_t off = (size_t)snprintf(many, sizeof many, "[");
    for (int i = 0; i <= AUTHZ_MAX_ROLES; i++)
        off += (size_t)snprintf(many + off, sizeof many - off, "%s\"r%d\"", i ? "," : "", i);
    snprintf(many + off, sizeof many - off, "]");
    v = base;
    v.roles = many;
    FAILS_WITH_MSG(verify_variant(&v, &got), BASE_ERR_UNAUTH, AUTHZ_MSG_CLAIMS);
    off = (size_t)snprintf(many, sizeof many, "[");
    for (int i = 0; i < AUTHZ_MAX_PERMS; i++)
        off += (size_t)snprintf(many + off, sizeof many - off, "%s\"p%d\"", i ? "," : "", i);
    snprintf(many + off, sizeof many - off, "]");
    v = base;
    v.perm = many;
    OK(verify_variant(&v, &got)); /* exactly the limit */
    assert_int_equal(got.perm_count, AUTHZ_MAX_PERMS);
    snprintf(many + off, sizeof many - off, ",\"one-more\"]");
    FAILS_WITH_MSG(verify_variant(&v, &got), BASE_ERR_UNAUTH, AUTHZ_MSG_CLAIMS);

    /* Each required claim missing. */
    static const char *const required[] = {"iss", "aud", "sub",   "tid",  "sid", "jti", "iat",
                                           "nbf", "exp", "roles", "perm", "mfa", "enr"};
    authz_claims c;
    t_claims(&c, g_tenant, g_perms);
    char *full = claims_json(&c);
    OK(verify_payload(full, &got));
    for (size_t i = 0; i < BASE_ARRAY_LEN(required); i++) {
        char name[16];
        snprintf(name, sizeof name, "\"%s\":", required[i]);
        char *at = strstr(full, name);
        assert_non_null(at);
        /* cut from the name to the next top-level comma (values here contain no commas except arrays of 1) */
        char *end = strchr(at, ',');
        char *cut = malloc(strlen(full) + 1);
        assert_non_null(cut);
        if (end) {
            snprintf(cut, strlen(full) + 1, "%.*s%s", (int)(at - full), full, end + 1);
        } else { /* the last member: drop the comma before it */
            snprintf(cut, strlen(full) + 1, "%.*s}", (int)(at - full - 1), full);
        }
        FAILS_WITH_MSG(verify_payload(cut, &got), BASE_ERR_UNAUTH, AUTHZ_MSG_CLAIMS);
        free(cut);
    }
    free(full);

    /* Not an object, empty object, empty payload. */
    FAILS_WITH_MSG(verify_payload("[]", &got), BASE_ERR_UNAUTH, AUTHZ_MSG_CLAIMS);
    FAILS_WITH_MSG(verify_payload("{}", &got), BASE_ERR_UNAUTH, AUTHZ_MSG_CLAIMS);
    FAILS_WITH_MSG(verify_payload("", &got), BASE_ERR_UNAUTH, AUTHZ_MSG_CLAIMS);
}

static void test_issuer_audience(void **state)
{
    (void)state;
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    char *jwt = t_token(&c, g_key, false);
    authz_verify_opts other_iss = {.issuer = "someone-else"};
    authz_verify_opts other_aud = {.audience = "billing-only"};
    FAILS_WITH_MSG(authz_token_verify(g_ks, &other_iss, jwt, t_now(), &got), BASE_ERR_UNAUTH,
                   AUTHZ_MSG_ISSUER);
    FAILS_WITH_MSG(authz_token_verify(g_ks, &other_aud, jwt, t_now(), &got), BASE_ERR_UNAUTH,
                   AUTHZ_MSG_AUDIENCE);
    free(jwt);

    snprintf(c.iss, sizeof c.iss, "https://id.example/alma");
    snprintf(c.aud, sizeof c.aud, "billing-only");
    jwt = t_token(&c, g_key, false);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, jwt, t_now(), &got), BASE_ERR_UNAUTH, AUTHZ_MSG_ISSUER);
    authz_verify_opts both = {.issuer = "https://id.example/alma", .audience = "billing-only"};
    OK(authz_token_verify(g_ks, &both, jwt, t_now(), &got));
    assert_string_equal(got.iss, "https://id.example/alma");
    free(jwt);
}

static void test_times(void **state)
{
    (void)state;
    authz_claims c, got;
    int64_t now = t_now();
    struct {
        int64_t iat, nbf, exp;
        const char *msg; /* NULL: accepted */
    } cases[] = {
        {now - 100, now - 100, now + 200, NULL},
        {now - 300, now - 300, now - AUTHZ_LEEWAY_S + 5, NULL}, /* expired 25 s ago: inside the leeway */
        {now - 300, now - 300, now - AUTHZ_LEEWAY_S, AUTHZ_MSG_EXPIRED},
        {now - 400, now - 400, now - 100, AUTHZ_MSG_EXPIRED},
        {now, now + AUTHZ_LEEWAY_S - 5, now + 300, NULL}, /* not before 25 s from now: inside the leeway */
        {now, now + AUTHZ_LEEWAY_S + 5, now + 300, AUTHZ_MSG_NOT_YET},
        {now + 60, now + 60, now + 360, AUTHZ_MSG_NOT_YET}, /* issued in the future */
        {now, now, now + AUTHZ_DEFAULT_MAX_LIFETIME_S, NULL},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        t_claims(&c, g_tenant, g_perms);
        c.iat = cases[i].iat;
        c.nbf = cases[i].nbf;
        c.exp = cases[i].exp;
        char *jwt = t_token(&c, g_key, false);
        base_result r = authz_token_verify(g_ks, NULL, jwt, now, &got);
        if (cases[i].msg == NULL && !base_is_ok(r))
            fail_msg("case %zu: refused: %s", i, base_error_message());
        if (cases[i].msg != NULL &&
            (r.err != BASE_ERR_UNAUTH || strcmp(base_error_message(), cases[i].msg) != 0))
            fail_msg("case %zu: expected \"%s\", got %s \"%s\"", i, cases[i].msg, base_err_name(r.err),
                     base_error_message());
        free(jwt);
    }

    /* Lifetime: the signer refuses more than the maximum; a raw token with more is refused on verify, also
     * against a tighter verifier setting. */
    t_claims(&c, g_tenant, g_perms);
    c.exp = c.iat + AUTHZ_DEFAULT_MAX_LIFETIME_S + 1;
    char *jwt = NULL;
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_INVALID);
    char payload[1024], h[128];
    snprintf(
        payload, sizeof payload,
        "{\"iss\":\"alma-identity\",\"aud\":\"alma\",\"sub\":\"%s\",\"tid\":\"clinic-one\",\"sid\":\"%s\","
        "\"jti\":\"%s\",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld,\"roles\":[],\"perm\":[],\"mfa\":false,"
        "\"enr\":false}",
        c.sub, c.sid, c.jti, (long long)c.iat, (long long)c.nbf, (long long)c.exp);
    snprintf(h, sizeof h, "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", g_kid);
    char *t = t_jws_raw(g_key, h, payload, NULL);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, t, now, &got), BASE_ERR_UNAUTH, AUTHZ_MSG_LIFETIME);
    free(t);
    t_claims(&c, g_tenant, g_perms);
    c.exp = c.iat + 120;
    jwt = t_token(&c, g_key, false);
    authz_verify_opts tight = {.max_lifetime_s = 60};
    FAILS_WITH_MSG(authz_token_verify(g_ks, &tight, jwt, now, &got), BASE_ERR_UNAUTH, AUTHZ_MSG_LIFETIME);
    OK(authz_token_verify(g_ks, NULL, jwt, now, &got));
    free(jwt);
    /* exp not after iat */
    snprintf(
        payload, sizeof payload,
        "{\"iss\":\"alma-identity\",\"aud\":\"alma\",\"sub\":\"%s\",\"tid\":\"clinic-one\",\"sid\":\"%s\","
        "\"jti\":\"%s\",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld,\"roles\":[],\"perm\":[],\"mfa\":false,"
        "\"enr\":false}",
        c.sub, c.sid, c.jti, (long long)now, (long long)now, (long long)now);
    t = t_jws_raw(g_key, h, payload, NULL);
    FAILS_WITH_MSG(authz_token_verify(g_ks, NULL, t, now, &got), BASE_ERR_UNAUTH, AUTHZ_MSG_CLAIMS);
    free(t);
}

static void test_sign_refuses(void **state)
{
    (void)state;
    authz_claims c;
    char *jwt = NULL;
    t_claims(&c, g_tenant, g_perms);
    snprintf(c.sub, sizeof c.sub, "usr_x\"");
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_INVALID);
    t_claims(&c, g_tenant, g_perms);
    snprintf(c.tid, sizeof c.tid, "Clinic");
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_INVALID);
    t_claims(&c, g_tenant, g_perms);
    snprintf(c.iss, sizeof c.iss, "a\"b");
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_INVALID);
    t_claims(&c, g_tenant, g_perms);
    snprintf(c.perm[0], sizeof c.perm[0], "phi read");
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_INVALID);
    t_claims(&c, g_tenant, g_perms);
    c.perm_count = AUTHZ_MAX_PERMS + 1;
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_INVALID);
    t_claims(&c, g_tenant, g_perms);
    memset(c.jti, 'a', sizeof c.jti); /* not terminated */
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_INVALID);
    t_claims(&c, g_tenant, g_perms);
    FAILS_WITH(authz_token_sign(&c, g_key, "bad kid", &jwt), BASE_ERR_INVALID);
    /* a public-only key cannot sign */
    uint8_t pub[32];
    acrypto_ed25519_key *pk = NULL;
    OK(acrypto_ed25519_public_raw(g_key, pub));
    OK(acrypto_ed25519_from_public(pub, sizeof pub, &pk));
    FAILS_WITH(authz_token_sign(&c, pk, NULL, &jwt), BASE_ERR_INVALID);
    acrypto_ed25519_free(pk);
    /* 128 permissions of 64 characters do not fit a token */
    t_claims(&c, g_tenant, NULL);
    c.perm_count = AUTHZ_MAX_PERMS;
    for (size_t i = 0; i < c.perm_count; i++) {
        memset(c.perm[i], 'a', AUTHZ_MAX_NAME_LEN);
        c.perm[i][AUTHZ_MAX_NAME_LEN] = '\0';
        c.perm[i][0] = (char)('a' + i % 26);
    }
    FAILS_WITH(authz_token_sign(&c, g_key, NULL, &jwt), BASE_ERR_LIMIT);
    assert_null(jwt);

    /* Growing the token to the limit: whatever the signer accepts, the verifier accepts (same bound). */
    t_claims(&c, g_tenant, NULL);
    size_t longest = 0;
    for (size_t count = 1; count <= AUTHZ_MAX_PERMS; count++) {
        c.perm_count = count;
        snprintf(c.perm[count - 1], sizeof c.perm[0], "perm.%zu.", count);
        size_t len = strlen(c.perm[count - 1]);
        memset(c.perm[count - 1] + len, 'x', AUTHZ_MAX_NAME_LEN - len - (count % 4)); /* vary the length */
        c.perm[count - 1][AUTHZ_MAX_NAME_LEN - (count % 4)] = '\0';
        base_result r = authz_token_sign(&c, g_key, NULL, &jwt);
        if (r.err == BASE_ERR_LIMIT)
            break;
        OK(r);
        longest = strlen(jwt);
        assert_true(longest <= AUTHZ_MAX_TOKEN_LEN);
        authz_claims got;
        OK(authz_token_verify(g_ks, NULL, jwt, t_now(), &got));
        assert_int_equal(got.perm_count, count);
        free(jwt);
        jwt = NULL;
    }
    assert_true(longest > AUTHZ_MAX_TOKEN_LEN - 100);
}

/* ---- key sets ----------------------------------------------------------------------------------------- */

static void expect_jwks(const char *text, base_err err)
{
    authz_keyset *ks = NULL;
    base_result r = authz_keyset_from_jwks(text, strlen(text), &ks);
    if (r.err != err)
        fail_msg("jwks %s: expected %s, got %s (%s)", text, base_err_name(err), base_err_name(r.err),
                 base_error_message());
    if (base_is_ok(r))
        assert_non_null(ks);
    else
        assert_null(ks);
    authz_keyset_free(ks);
}

static void test_jwks(void **state)
{
    (void)state;
    /* Round trip of two keys, current first. */
    authz_keyset *ks = NULL, *back = NULL;
    char *text = NULL;
    char k1[AUTHZ_KID_BUF], k2[AUTHZ_KID_BUF];
    OK(authz_keyset_new(&ks));
    OK(authz_keyset_add(ks, g_other));
    OK(authz_keyset_add(ks, g_key));
    FAILS_WITH(authz_keyset_add(ks, g_key), BASE_ERR_EXISTS);
    OK(authz_keyset_to_jwks(ks, &text));
    OK(authz_keyset_from_jwks(text, strlen(text), &back));
    assert_int_equal(authz_keyset_count(back), 2);
    assert_true(authz_keyset_has(back, t_kid(g_other, k1)));
    assert_true(authz_keyset_has(back, t_kid(g_key, k2)));
    assert_true(strstr(text, k1) < strstr(text, k2));
    assert_false(authz_keyset_has(back, "AAAAAAAAAAA"));
    /* A token signed by either verifies against the parsed set. */
    authz_claims c, got;
    t_claims(&c, g_tenant, g_perms);
    char *jwt = t_token(&c, g_other, false);
    OK(authz_token_verify(back, NULL, jwt, t_now(), &got));
    free(jwt);
    free(text);
    authz_keyset_free(back);
    authz_keyset_free(ks);

    char good[512], x[64];
    snprintf(x, sizeof x, "%s", rfc_x);
    snprintf(good, sizeof good,
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"}]}", x, rfc_kid);
    expect_jwks(good, BASE_OK);
    char t[1024];
#define JWK(fmt, ...) (snprintf(t, sizeof t, "{\"keys\":[" fmt "]}", __VA_ARGS__), t)
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\",\"use\":\"sig\","
                    "\"alg\":\"EdDSA\",\"key_ops\":[\"verify\"]}",
                    x, rfc_kid),
                BASE_OK);
    expect_jwks(
        JWK("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\",\"kid\":\"%s\"}", x, x, rfc_kid),
        BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\",\"kid\":\"%s\"}", x, rfc_kid),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"oct\",\"k\":\"%s\",\"kid\":\"%s\"}", x, rfc_kid), BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"%s\",\"kid\":\"%s\"}", x, rfc_kid),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"%s\",\"kid\":\"%s\"}", x, rfc_kid),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\",\"d\":\"%s\"}", x,
                    rfc_kid, rfc_d),
                BASE_ERR_INVALID);
    expect_jwks(
        JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\",\"use\":\"enc\"}", x, rfc_kid),
        BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\",\"alg\":\"ES256\"}", x,
                    rfc_kid),
                BASE_ERR_INVALID);
    /* kid: missing, not the convention, duplicate (the same key twice) */
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"}", x), BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"}", x, "key-2024"),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"},"
                    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"}",
                    x, rfc_kid, x, rfc_kid),
                BASE_ERR_INVALID);
    /* x: short, padded, wrong alphabet, trailing bits, not a string */
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%.42s\",\"kid\":\"%s\"}", x, rfc_kid),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s=\",\"kid\":\"%s\"}", x, rfc_kid),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"}",
                    "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo", rfc_kid),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"}",
                    "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURp", rfc_kid),
                BASE_ERR_INVALID);
    expect_jwks(JWK("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":%d,\"kid\":\"%s\"}", 5, rfc_kid),
                BASE_ERR_INVALID);
    /* the set itself */
    expect_jwks("{\"keys\":[]}", BASE_ERR_INVALID);
    expect_jwks("{\"keys\":{}}", BASE_ERR_INVALID);
    expect_jwks("{}", BASE_ERR_INVALID);
    expect_jwks("[]", BASE_ERR_INVALID);
    expect_jwks("not json", BASE_ERR_INVALID);
    expect_jwks("{\"keys\":[],\"keys\":[]}", BASE_ERR_INVALID);
    snprintf(t, sizeof t,
             "{\"keys\":[{\"kty\":\"OKP\",\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"}]}",
             x, rfc_kid);
    expect_jwks(t, BASE_ERR_INVALID);
    /* more than AUTHZ_MAX_KEYS */
    char *nine = malloc(8192);
    assert_non_null(nine);
    size_t off = (size_t)snprintf(nine, 8192, "{\"keys\":[");
    for (int i = 0; i <= AUTHZ_MAX_KEYS; i++) {
        acrypto_ed25519_key *k = NULL;
        uint8_t pub[32];
        char kid[AUTHZ_KID_BUF];
        OK(acrypto_ed25519_generate(&k));
        OK(acrypto_ed25519_public_raw(k, pub));
        char *x64 = t_b64(pub, sizeof pub);
        off += (size_t)snprintf(nine + off, 8192 - off,
                                "%s{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\"}",
                                i ? "," : "", x64, t_kid(k, kid));
        free(x64);
        acrypto_ed25519_free(k);
    }
    snprintf(nine + off, 8192 - off, "]}");
    expect_jwks(nine, BASE_ERR_LIMIT);
    free(nine);
#undef JWK
}

/* ---- the rule functions ----------------------------------------------------------------------------- */

static void test_rule_functions(void **state)
{
    (void)state;
    assert_true(authz_permission_is_patient_scoped("phi.read.clinical"));
    assert_true(authz_permission_is_patient_scoped("phi.write"));
    assert_false(authz_permission_is_patient_scoped("phi.break_glass"));
    assert_false(authz_permission_is_patient_scoped("phi"));
    assert_false(authz_permission_is_patient_scoped("referral.review"));
    assert_false(authz_permission_is_patient_scoped("xphi.read"));
    assert_false(authz_permission_is_patient_scoped(NULL));
    assert_true(authz_permission_is_enrolment(AUTHZ_PERM_MFA_ENROLL));
    assert_false(authz_permission_is_enrolment("identity.users.manage"));
    assert_true(authz_valid_patient_ref("pt_0123456789abcdef0123456789abcdef"));
    assert_false(authz_valid_patient_ref("pt_0123456789abcdef0123456789abcde:"));
    assert_false(authz_valid_patient_ref("pt_0123"));
    assert_true(authz_valid_tenant("ab"));
    assert_false(authz_valid_tenant("a"));
    assert_false(authz_valid_tenant("-ab"));
    assert_false(authz_valid_tenant("a:b"));
    assert_true(authz_valid_principal("svc_vault"));
    assert_false(authz_valid_principal("svc_vault:x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc8037_verify),  cmocka_unit_test(test_rfc8037_sign),
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_header_rules),    cmocka_unit_test(test_alg_none_and_hs256),
        cmocka_unit_test(test_structure),       cmocka_unit_test(test_claims_rules),
        cmocka_unit_test(test_issuer_audience), cmocka_unit_test(test_times),
        cmocka_unit_test(test_sign_refuses),    cmocka_unit_test(test_jwks),
        cmocka_unit_test(test_rule_functions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
