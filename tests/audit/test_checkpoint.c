/* Signed notes and checkpoints (services/audit/checkpoint.c).
 *
 * Published vectors, reproduced byte for byte (Ed25519 is deterministic):
 *   - golang.org/x/mod/sumdb/note, note_test.go (TestNewVerifier, TestNewSigner, TestSign, TestVerifierList,
 *     TestOpen) and the example in the package comment of note.go: the PeterNeumann and EnochRoot keys, the
 *     note text "If you think cryptography is the answer to your problem,\n..." and its signature lines;
 *   - golang.org/x/mod/sumdb/tlog, note_test.go (TestFormatTree, TestParseTree): the "go.sum database tree"
 *     body for size 123456789012 and RecordHash("hello world");
 *   - C2SP/C2SP signed-note.md (the quasimodo.example/salvatore note) and tlog-cosignature.md (the
 *     example.com/behind-the-sofa checkpoint with a log signature and a witness cosignature). Their public
 * keys are not published, so they serve as well-formed notes whose signatures are all from unknown keys.
 * Everything else is tampering with notes this module signed itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_OK(expr)                                                                                      \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        if (!base_is_ok(r_))                                                                                 \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(r_.err), base_error_message());               \
    } while (0)

#define ASSERT_ERR(expr, code)                                                                               \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        if (r_.err != (code))                                                                                \
            fail_msg("line %d: %s gave %s (%s), want %s", __LINE__, #expr, base_err_name(r_.err),            \
                     base_error_message(), base_err_name(code));                                             \
    } while (0)

#define EM_DASH "\xE2\x80\x94" /* U+2014 in UTF-8 */

/* golang.org/x/mod/sumdb/note note_test.go: TestSign's signer key is
 * "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"; its last field is
 * base64(0x01 ‖ 32-byte Ed25519 seed). */
static const char peter_skey_b64[] = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
/* note_test.go TestNewVerifier / TestOpen. */
static const char peter_vkey[] = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
static const char enoch_vkey[] = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
/* note_test.go TestSign / TestOpen. */
static const char go_text[] = "If you think cryptography is the answer to your problem,\n"
                              "then you don't know what your problem is.\n";
static const char peter_sig[] =
    EM_DASH " PeterNeumann "
            "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
static const char enoch_sig[] =
    EM_DASH " EnochRoot "
            "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

/* golang.org/x/mod/sumdb/tlog note_test.go TestFormatTree: FormatTree(Tree{123456789012,
 * RecordHash([]byte("hello world"))}), where RecordHash(data) = SHA-256(0x00 ‖ data) (RFC 6962 leaf hash). */
static const char go_tree_body[] =
    "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n";

/* C2SP/C2SP signed-note.md, the example at the top: a text with an empty line in it. */
static const char c2sp_note_text[] = "Ognuno sta solo sul cuor della terra\n"
                                     "trafitto da un raggio di sole:\n"
                                     "\n"
                                     "ed \xC3\xA8 subito sera.\n";
static const char c2sp_note_sig[] =
    EM_DASH " quasimodo.example/salvatore "
            "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";

/* C2SP/C2SP tlog-cosignature.md, the example at the top (the same body as tlog-checkpoint.md's example): a
 * log signature and an Ed25519 witness cosignature, whose payload is 4 + 8 + 64 bytes. */
static const char sofa_body[] =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
static const char sofa_sigs[] = EM_DASH
    " example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n" EM_DASH
    " witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/"
    "zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";

#define ORIGIN "alma.example/audit/log0"

/* ---------------------------------------------------------------------------------------------------------
 * Helpers. */

/* The concatenation of the NULL-terminated list of strings, malloc'd. */
static char *cat(const char *first, ...)
{
    size_t len = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s != NULL; s = va_arg(ap, const char *))
        len += strlen(s);
    va_end(ap);
    char *out = malloc(len + 1);
    assert_non_null(out);
    size_t o = 0;
    va_start(ap, first);
    for (const char *s = first; s != NULL; s = va_arg(ap, const char *)) {
        memcpy(out + o, s, strlen(s));
        o += strlen(s);
    }
    va_end(ap);
    out[o] = '\0';
    return out;
}

/* s with its first occurrence of `from` replaced by `to`, malloc'd; `from` must occur. */
static char *replace1(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    assert_non_null(at);
    size_t pre = (size_t)(at - s), from_len = strlen(from), to_len = strlen(to), rest = strlen(at + from_len);
    char *out = malloc(pre + to_len + rest + 1);
    assert_non_null(out);
    memcpy(out, s, pre);
    memcpy(out + pre, to, to_len);
    memcpy(out + pre + to_len, at + from_len, rest + 1);
    return out;
}

static acrypto_ed25519_key *key_from_seed(const uint8_t seed[ACRYPTO_ED25519_SEED_LEN])
{
    acrypto_secret *secret = NULL;
    ASSERT_OK(acrypto_secret_from_bytes(seed, ACRYPTO_ED25519_SEED_LEN, &secret));
    acrypto_ed25519_key *key = NULL;
    ASSERT_OK(acrypto_ed25519_from_seed(secret, &key));
    acrypto_secret_free(secret);
    return key;
}

/* The PeterNeumann signer of the Go tests. */
static acrypto_ed25519_key *peter_key(void)
{
    uint8_t raw[33];
    size_t n = 0;
    ASSERT_OK(acrypto_base64_decode(peter_skey_b64, strlen(peter_skey_b64), raw, sizeof raw, &n));
    assert_int_equal(n, 33);
    assert_int_equal(raw[0], 0x01); /* Ed25519 */
    return key_from_seed(raw + 1);
}

/* A fixed test key, so failures reproduce: the seed is `fill` repeated. */
static acrypto_ed25519_key *test_key(uint8_t fill)
{
    uint8_t seed[ACRYPTO_ED25519_SEED_LEN];
    memset(seed, fill, sizeof seed);
    return key_from_seed(seed);
}

static char *vkey_of(const char *name, const acrypto_ed25519_key *key)
{
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    ASSERT_OK(acrypto_ed25519_public_raw(key, pub));
    char *vkey = NULL;
    size_t len = 0;
    ASSERT_OK(audit_note_vkey_format(name, pub, &vkey, &len));
    assert_int_equal(len, strlen(vkey));
    return vkey;
}

static audit_note_verifier *verifier(const char *vkey)
{
    audit_note_verifier *v = NULL;
    ASSERT_OK(audit_note_verifier_new(vkey, &v));
    return v;
}

static char *sign(const char *text, const char *name, const acrypto_ed25519_key *key)
{
    char *note = NULL;
    size_t len = 0;
    ASSERT_OK(audit_note_sign(text, strlen(text), name, key, &note, &len));
    assert_int_equal(len, strlen(note));
    return note;
}

/* audit_note_open over a NUL-terminated note with the given verifiers. */
static base_result open_note(const char *note, const audit_note_verifier *const *vs, size_t n)
{
    size_t text_len = 0;
    return audit_note_open(note, strlen(note), vs, n, &text_len);
}

/* audit_checkpoint_open_vkey over a NUL-terminated note; the checkpoint is freed. */
static base_result open_cp(const char *note, const char *vkey)
{
    audit_checkpoint *cp = NULL;
    base_result r = audit_checkpoint_open_vkey(note, strlen(note), vkey, NULL, &cp);
    assert_true(base_is_ok(r) == (cp != NULL));
    audit_checkpoint_free(cp);
    return r;
}

/* A checkpoint signed with test_key(1) under ORIGIN. */
static char *signed_cp(const char *body)
{
    acrypto_ed25519_key *key = test_key(1);
    char *note = sign(body, ORIGIN, key);
    acrypto_ed25519_free(key);
    return note;
}

static char *test_vkey(void)
{
    acrypto_ed25519_key *key = test_key(1);
    char *vkey = vkey_of(ORIGIN, key);
    acrypto_ed25519_free(key);
    return vkey;
}

static void root_fill(uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN], uint8_t seed)
{
    for (size_t i = 0; i < AUDIT_CHECKPOINT_ROOT_LEN; i++)
        root[i] = (uint8_t)(seed + 7 * i);
}

static char *b64_of(const uint8_t *root, size_t n)
{
    char *out = malloc(acrypto_base64_encode_size(n));
    assert_non_null(out);
    size_t len = 0;
    ASSERT_OK(acrypto_base64_encode(root, n, out, acrypto_base64_encode_size(n), &len));
    return out;
}

/* ---------------------------------------------------------------------------------------------------------
 * The Go note package's vectors. */

static void test_go_keys(void **state)
{
    acrypto_ed25519_key *key = peter_key();
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    ASSERT_OK(acrypto_ed25519_public_raw(key, pub));
    uint32_t id = 0;
    ASSERT_OK(audit_note_key_id("PeterNeumann", pub, &id));
    assert_int_equal(id, 0xc74f20a3);
    char *vkey = vkey_of("PeterNeumann", key);
    assert_string_equal(vkey, peter_vkey); /* the signer's key gives the published verifier key */
    free(vkey);

    audit_note_verifier *peter = verifier(peter_vkey);
    assert_string_equal(audit_note_verifier_name(peter), "PeterNeumann");
    assert_int_equal(audit_note_verifier_key_id(peter), 0xc74f20a3);
    audit_note_verifier *enoch = verifier(enoch_vkey);
    assert_string_equal(audit_note_verifier_name(enoch), "EnochRoot");
    assert_int_equal(audit_note_verifier_key_id(enoch), 0xaf0cfe78);
    audit_note_verifier_free(peter);
    audit_note_verifier_free(enoch);
    acrypto_ed25519_free(key);
}

static void test_go_sign(void **state)
{
    acrypto_ed25519_key *key = peter_key();
    char *want = cat(go_text, "\n", peter_sig, NULL);
    char *note = NULL;
    size_t len = 0;
    ASSERT_OK(audit_note_sign(go_text, strlen(go_text), "PeterNeumann", key, &note, &len));
    assert_int_equal(len, strlen(want));
    assert_memory_equal(note, want, len); /* byte for byte TestSign's `want` */
    assert_int_equal(note[len], '\0');

    audit_note_verifier *peter = verifier(peter_vkey);
    const audit_note_verifier *vs[] = {peter};
    size_t text_len = 0;
    ASSERT_OK(audit_note_open(note, len, vs, 1, &text_len));
    assert_int_equal(text_len, strlen(go_text));
    audit_note_verifier_free(peter);
    free(note);
    free(want);
    acrypto_ed25519_free(key);
}

/* TestOpen, with this module's error codes: bad syntax is INVALID, an unverified note is CRYPTO. */
static void test_go_open(void **state)
{
    audit_note_verifier *peter = verifier(peter_vkey), *enoch = verifier(enoch_vkey);
    const audit_note_verifier *only_peter[] = {peter}, *both[] = {peter, enoch}, *only_enoch[] = {enoch};
    const audit_note_verifier *dup[] = {enoch, peter, enoch};

    char *two = cat(go_text, "\n", peter_sig, enoch_sig, NULL);
    size_t text_len = 0;
    ASSERT_OK(audit_note_open(two, strlen(two), only_peter, 1, &text_len)); /* one verified, one unknown */
    assert_int_equal(text_len, strlen(go_text));
    ASSERT_OK(open_note(two, both, 2));
    ASSERT_OK(open_note(two, only_enoch, 1));
    ASSERT_ERR(open_note(two, NULL, 0), BASE_ERR_CRYPTO); /* no known key */

    /* A duplicated verifier is ambiguous when it matches a line, harmless otherwise. */
    char *enoch_only = cat(go_text, "\n", enoch_sig, NULL);
    ASSERT_ERR(open_note(enoch_only, dup, 3), BASE_ERR_INVALID);
    char *peter_only = cat(go_text, "\n", peter_sig, NULL);
    ASSERT_OK(open_note(peter_only, dup, 3));

    /* 100 signature lines are accepted, 101 are not. */
    size_t sig_len = strlen(peter_sig), base = strlen(go_text) + 1;
    char *many = malloc(base + 101 * sig_len + 1);
    assert_non_null(many);
    memcpy(many, go_text, base - 1);
    many[base - 1] = '\n';
    for (size_t i = 0; i < 101; i++)
        memcpy(many + base + i * sig_len, peter_sig, sig_len);
    size_t ret_len = 0;
    ASSERT_OK(audit_note_open(many, base + 100 * sig_len, only_peter, 1, &ret_len));
    ASSERT_ERR(audit_note_open(many, base + 101 * sig_len, only_peter, 1, &ret_len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_note_open(many, base + 101 * sig_len, NULL, 0, &ret_len), BASE_ERR_INVALID);

    /* "Invalid signature": four characters inserted into Peter's base64 keep the key ID, break the signature.
     */
    char peter_abcd[sizeof peter_sig + 4];
    memcpy(peter_abcd, peter_sig, 60);
    memcpy(peter_abcd + 60, "ABCD", 4);
    memcpy(peter_abcd + 64, peter_sig + 60, sizeof peter_sig - 60);
    char *bad = cat(go_text, "\n", peter_abcd, NULL);
    ASSERT_ERR(open_note(bad, only_peter, 1), BASE_ERR_CRYPTO);

    /* Repeated and unknown lines beside a good one; a broken line from a known key rejects the whole note. */
    char enoch_abcd[sizeof enoch_sig + 4];
    memcpy(enoch_abcd, enoch_sig, 60);
    memcpy(enoch_abcd + 60, "ABCD", 4);
    memcpy(enoch_abcd + 64, enoch_sig + 60, sizeof enoch_sig - 60);
    char *mixed = cat(go_text, "\n", peter_sig, peter_sig, enoch_sig, enoch_sig, enoch_abcd, NULL);
    ASSERT_OK(open_note(mixed, only_peter, 1));
    ASSERT_ERR(open_note(mixed, both, 2), BASE_ERR_CRYPTO);

    /* TestOpen's badMsgs. */
    char *bad_msgs[] = {
        cat(go_text, NULL),
        cat(go_text, "\n", NULL),
        cat(go_text, "\n", NULL), /* then peter_sig without its newline, below */
        cat("\x01", go_text, "\n", peter_sig, NULL),
        cat("\xff", go_text, "\n", peter_sig, NULL),
        cat(go_text, "\n",
            EM_DASH
            " Bad Name "
            "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
            NULL),
        cat(go_text, "\n", peter_sig, "Unexpected line.\n", NULL),
    };
    char *trunc = cat(bad_msgs[2], peter_sig, NULL);
    trunc[strlen(trunc) - 1] = '\0';
    free(bad_msgs[2]);
    bad_msgs[2] = trunc;
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_msgs); i++) {
        ASSERT_ERR(open_note(bad_msgs[i], only_peter, 1), BASE_ERR_INVALID);
        free(bad_msgs[i]);
    }

    /* A line whose name or key ID differs from the known key's is an unknown key: not verified, ignored. */
    char *misnamed = replace1(peter_only, "PeterNeumann", "CarmenSandiego");
    ASSERT_ERR(open_note(misnamed, only_peter, 1), BASE_ERR_CRYPTO);
    char *wrong_id = replace1(peter_only, "x08g", "xxxx");
    ASSERT_ERR(open_note(wrong_id, only_peter, 1), BASE_ERR_CRYPTO);

    free(misnamed);
    free(wrong_id);
    free(mixed);
    free(bad);
    free(many);
    free(peter_only);
    free(enoch_only);
    free(two);
    audit_note_verifier_free(peter);
    audit_note_verifier_free(enoch);
}

/* TestNewVerifier: every proper substring and every one-byte increment of the vkey is refused. */
static void test_go_vkey_manglings(void **state)
{
    char buf[sizeof peter_vkey];
    size_t len = strlen(peter_vkey);
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i + 1; j <= len; j++) {
            if (i == 0 && j == len)
                continue;
            memcpy(buf, peter_vkey + i, j - i);
            buf[j - i] = '\0';
            audit_note_verifier *v = NULL;
            base_result r = audit_note_verifier_new(buf, &v);
            if (base_is_ok(r) || v != NULL)
                fail_msg("substring [%zu, %zu) of the vkey was accepted", i, j);
        }
    }
    memcpy(buf, peter_vkey, sizeof buf);
    for (size_t i = 0; i < len; i++) {
        buf[i]++;
        audit_note_verifier *v = NULL;
        base_result r = audit_note_verifier_new(buf, &v);
        if (base_is_ok(r) || v != NULL)
            fail_msg("vkey with byte %zu incremented was accepted", i);
        buf[i]--;
    }
    audit_note_verifier *v = NULL;
    /* TestNewVerifier: wrong length key, and unknown algorithm, each with an adjusted key hash. */
    ASSERT_ERR(audit_note_verifier_new(
                   "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", &v),
               BASE_ERR_INVALID);
    ASSERT_ERR(
        audit_note_verifier_new("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", &v),
        BASE_ERR_INVALID);
    /* A key hash that does not match the name and key: CRYPTO. */
    ASSERT_ERR(
        audit_note_verifier_new("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", &v),
        BASE_ERR_CRYPTO);
    ASSERT_ERR(
        audit_note_verifier_new("PeterNeumann+c74f20a3+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop", &v),
        BASE_ERR_CRYPTO); /* Peter's name and ID with Enoch's key */
    ASSERT_ERR(audit_note_verifier_new("EnochRoot+af0cfe78+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", &v),
               BASE_ERR_CRYPTO); /* Enoch's name and ID with Peter's key */
    /* The hex is case-insensitive, as Go's strconv.ParseUint(hash, 16, 32). */
    v = verifier("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW");
    assert_int_equal(audit_note_verifier_key_id(v), 0xc74f20a3);
    v = audit_note_verifier_free(v);
    /* Names: '+' splits, spaces and control characters are refused, longer than 255 bytes too. */
    ASSERT_ERR(
        audit_note_verifier_new("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", &v),
        BASE_ERR_INVALID);
    ASSERT_ERR(audit_note_verifier_new("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", &v),
               BASE_ERR_INVALID);
    ASSERT_ERR(audit_note_verifier_new(NULL, &v), BASE_ERR_INVALID);
    assert_null(v);
}

/* ---------------------------------------------------------------------------------------------------------
 * Checkpoints. */

/* TestFormatTree's body, then TestParseTree's bad trees (signed, so only their syntax is wrong). */
static void test_go_tree_vectors(void **state)
{
    uint8_t leaf[12] = {0x00};
    memcpy(leaf + 1, "hello world", 11);
    uint8_t root[ACRYPTO_SHA256_LEN];
    ASSERT_OK(acrypto_sha256(leaf, sizeof leaf, root));
    char *body = NULL;
    size_t len = 0;
    ASSERT_OK(audit_checkpoint_format("go.sum database tree", 123456789012u, root, NULL, 0, &body, &len));
    assert_int_equal(len, strlen(go_tree_body));
    assert_string_equal(body, go_tree_body);

    /* Key names cannot hold spaces, origins may: the key is named differently from this origin. */
    acrypto_ed25519_key *key = test_key(2);
    char *vkey = vkey_of("alma.test/sumdb", key);
    char *note = sign(body, "alma.test/sumdb", key);
    audit_checkpoint *cp = NULL;
    ASSERT_OK(audit_checkpoint_open_vkey(note, strlen(note), vkey, "go.sum database tree", &cp));
    assert_string_equal(cp->origin, "go.sum database tree");
    assert_true(cp->size == 123456789012u);
    assert_memory_equal(cp->root, root, 32);
    assert_int_equal(cp->n_extensions, 0);
    assert_null(cp->extensions);
    cp = audit_checkpoint_free(cp);

    const char *bad[] = {
        "go.sum database tree\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        char *n = sign(bad[i], "alma.test/sumdb", key);
        ASSERT_ERR(open_cp(n, vkey), BASE_ERR_INVALID);
        free(n);
    }
    free(note);
    free(vkey);
    free(body);
    acrypto_ed25519_free(key);
}

static void test_checkpoint_round_trip(void **state)
{
    acrypto_ed25519_key *key = test_key(1);
    char *vkey = vkey_of(ORIGIN, key);
    const char *exts[] = {"first extension", "zwei: \xC3\xBC" /* UTF-8 is allowed */};
    const uint64_t sizes[] = {0, 1, 42, 1000000007, UINT64_MAX};
    for (size_t i = 0; i < BASE_ARRAY_LEN(sizes); i++) {
        uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN];
        root_fill(root, (uint8_t)i);
        size_t n_ext = i % 3 == 0 ? 0 : (i % 3 == 1 ? 1 : 2);
        char *body = NULL;
        size_t body_len = 0;
        ASSERT_OK(audit_checkpoint_format(ORIGIN, sizes[i], root, exts, n_ext, &body, &body_len));
        char *note = sign(body, ORIGIN, key);
        audit_checkpoint *cp = NULL;
        ASSERT_OK(audit_checkpoint_open_vkey(note, strlen(note), vkey, ORIGIN, &cp));
        assert_string_equal(cp->origin, ORIGIN);
        assert_true(cp->size == sizes[i]);
        assert_memory_equal(cp->root, root, sizeof root);
        assert_int_equal(cp->n_extensions, n_ext);
        for (size_t e = 0; e < n_ext; e++)
            assert_string_equal(cp->extensions[e], exts[e]);
        cp = audit_checkpoint_free(cp);

        /* No origin check; a wrong expected origin; the verified text is exactly the body. */
        ASSERT_OK(open_cp(note, vkey));
        audit_checkpoint *untouched = (audit_checkpoint *)&untouched;
        ASSERT_ERR(
            audit_checkpoint_open_vkey(note, strlen(note), vkey, "alma.example/audit/log1", &untouched),
            BASE_ERR_CRYPTO);
        assert_ptr_equal(untouched, (audit_checkpoint *)&untouched);
        audit_note_verifier *v = verifier(vkey);
        const audit_note_verifier *vs[] = {v};
        size_t text_len = 0;
        ASSERT_OK(audit_note_open(note, strlen(note), vs, 1, &text_len));
        assert_int_equal(text_len, body_len);
        assert_memory_equal(note, body, body_len);
        audit_note_verifier_free(v);
        free(note);
        free(body);
    }
    char *body = NULL;
    size_t body_len = 0;
    uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN];
    root_fill(root, 9);
    ASSERT_OK(audit_checkpoint_format(ORIGIN, UINT64_MAX, root, NULL, 0, &body, &body_len));
    assert_non_null(strstr(body, "\n18446744073709551615\n"));
    free(body);
    free(vkey);
    acrypto_ed25519_free(key);
}

/* Each change to a signed checkpoint, or the wrong key, fails verification. */
static void test_checkpoint_tamper(void **state)
{
    uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN];
    root_fill(root, 3);
    char *body = NULL;
    size_t body_len = 0;
    ASSERT_OK(audit_checkpoint_format(ORIGIN, 42, root, NULL, 0, &body, &body_len));
    char *note = signed_cp(body);
    char *vkey = test_vkey();
    ASSERT_OK(open_cp(note, vkey));

    char *size = replace1(note, "\n42\n", "\n43\n");
    ASSERT_ERR(open_cp(size, vkey), BASE_ERR_CRYPTO);
    char *origin = replace1(note, ORIGIN "\n", "alma.example/audit/log1\n");
    ASSERT_ERR(open_cp(origin, vkey), BASE_ERR_CRYPTO);
    char *old_root = b64_of(root, sizeof root);
    root[17] ^= 0x01;
    char *new_root = b64_of(root, sizeof root);
    char *rooted = replace1(note, old_root, new_root);
    ASSERT_ERR(open_cp(rooted, vkey), BASE_ERR_CRYPTO);

    /* One bit of the signature flipped (re-encoded, so the base64 stays valid), then one of the key ID. */
    const char *line = strstr(note, EM_DASH " " ORIGIN " ");
    assert_non_null(line);
    const char *b64 = line + strlen(EM_DASH " " ORIGIN " ");
    size_t b64_len = strlen(b64) - 1;
    uint8_t payload[68];
    size_t n = 0;
    ASSERT_OK(acrypto_base64_decode(b64, b64_len, payload, sizeof payload, &n));
    assert_int_equal(n, 68);
    const size_t flips[] = {4 + 10, 4 + 63, 0};
    for (size_t i = 0; i < BASE_ARRAY_LEN(flips); i++) {
        payload[flips[i]] ^= 0x20;
        char *flipped_b64 = b64_of(payload, sizeof payload);
        char *old_b64 = malloc(b64_len + 1);
        assert_non_null(old_b64);
        memcpy(old_b64, b64, b64_len);
        old_b64[b64_len] = '\0';
        char *flipped = replace1(note, old_b64, flipped_b64);
        ASSERT_ERR(open_cp(flipped, vkey), BASE_ERR_CRYPTO);
        /* Beside the good line, a bad one from the same key still rejects the note (signed-note: every
         * signature from a known key is verified); with its key ID changed it is from an unknown key. */
        char *good_and_bad = cat(note, flipped + body_len + 1, NULL);
        ASSERT_ERR(open_cp(good_and_bad, vkey), flips[i] >= 4 ? BASE_ERR_CRYPTO : BASE_OK);
        free(good_and_bad);
        payload[flips[i]] ^= 0x20;
        free(flipped);
        free(old_b64);
        free(flipped_b64);
    }

    /* Another key under the same name: its ID differs, so the line is from an unknown key. */
    acrypto_ed25519_key *other = test_key(7);
    char *other_vkey = vkey_of(ORIGIN, other);
    ASSERT_ERR(open_cp(note, other_vkey), BASE_ERR_CRYPTO);
    /* The right name and ID with another public key, and the right key with another ID: the vkey's hash does
     * not match. */
    const char *plus = strrchr(vkey, '+');
    const char *other_plus = strrchr(other_vkey, '+');
    char *swapped = replace1(vkey, plus, other_plus);
    ASSERT_ERR(open_cp(note, swapped), BASE_ERR_CRYPTO);
    char *rehashed = strdup(vkey);
    assert_non_null(rehashed);
    char *hex = rehashed + strlen(ORIGIN) + 1;
    hex[0] = hex[0] == '0' ? '1' : '0';
    ASSERT_ERR(open_cp(note, rehashed), BASE_ERR_CRYPTO);

    free(rehashed);
    free(swapped);
    free(other_vkey);
    acrypto_ed25519_free(other);
    free(rooted);
    free(new_root);
    free(old_root);
    free(origin);
    free(size);
    free(vkey);
    free(note);
    free(body);
}

/* Malformed notes and bodies are INVALID, even when a known key signed them. */
static void test_checkpoint_malformed(void **state)
{
    uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN + 1] = {0}; /* one spare byte for the 33-byte root */
    root_fill(root, 5);
    char *r44 = b64_of(root, 32), *r31 = b64_of(root, 31), *r33 = b64_of(root, 33);
    char *vkey = test_vkey();
    char *body = cat(ORIGIN "\n42\n", r44, "\n", NULL);
    char *good = signed_cp(body);
    ASSERT_OK(open_cp(good, vkey));

    /* Note syntax. */
    char *no_blank = replace1(good, "\n\n", "\n");
    ASSERT_ERR(open_cp(no_blank, vkey), BASE_ERR_INVALID);
    char *crlf = malloc(2 * strlen(good) + 1);
    assert_non_null(crlf);
    size_t o = 0;
    for (const char *p = good; *p != '\0'; p++) {
        if (*p == '\n')
            crlf[o++] = '\r';
        crlf[o++] = *p;
    }
    crlf[o] = '\0';
    ASSERT_ERR(open_cp(crlf, vkey), BASE_ERR_INVALID);
    char *no_final = strdup(good);
    assert_non_null(no_final);
    no_final[strlen(no_final) - 1] = '\0';
    ASSERT_ERR(open_cp(no_final, vkey), BASE_ERR_INVALID);
    char *cr_only = replace1(good, "\n42\n", "\n42\r\n"); /* a lone CR is a control character too */
    ASSERT_ERR(open_cp(cr_only, vkey), BASE_ERR_INVALID);

    /* A NUL inside the origin (the length is passed, so the NUL is really in the note). */
    size_t good_len = strlen(good);
    char *nul = strdup(good);
    assert_non_null(nul);
    nul[5] = '\0';
    audit_checkpoint *cp = NULL;
    ASSERT_ERR(audit_checkpoint_open_vkey(nul, good_len, vkey, NULL, &cp), BASE_ERR_INVALID);
    assert_null(cp);

    /* Body syntax, each signed with the right key. */
    char *bodies[] = {
        cat(ORIGIN "\n042\n", r44, "\n", NULL),                  /* leading zero */
        cat(ORIGIN "\n00\n", r44, "\n", NULL),                   /* leading zero */
        cat(ORIGIN "\n+42\n", r44, "\n", NULL),                  /* sign */
        cat(ORIGIN "\n-1\n", r44, "\n", NULL),                   /* sign */
        cat(ORIGIN "\n 42\n", r44, "\n", NULL),                  /* space */
        cat(ORIGIN "\n4 2\n", r44, "\n", NULL),                  /* space */
        cat(ORIGIN "\n18446744073709551616\n", r44, "\n", NULL), /* UINT64_MAX + 1 */
        cat(ORIGIN "\n\n", r44, "\n", NULL),                     /* empty size: also an empty line */
        cat(ORIGIN "\n42\n", r31, "\n", NULL),                   /* 31-byte root */
        cat(ORIGIN "\n42\n", r33, "\n", NULL),                   /* 33-byte root */
        cat(ORIGIN "\n42\n*", r44 + 1, "\n", NULL),              /* bad base64 character */
        cat(ORIGIN "\n42\n", r44, "=\n", NULL),                  /* extra padding */
        cat(ORIGIN "\n42\n", NULL),                              /* two lines */
        cat(ORIGIN "\n", NULL),                                  /* one line */
        cat("\n42\n", r44, "\n", NULL),                          /* empty origin (and a blank first line) */
        cat(ORIGIN "\n42\n", r44, "\n\next\n", NULL),            /* empty extension line */
    };
    /* Base64 whose unused trailing bits are not zero: no two texts for one root. */
    char *noncanonical = strdup(r44);
    assert_non_null(noncanonical);
    noncanonical[42] = noncanonical[42] == 'A' ? 'B' : (char)(noncanonical[42] ^ 0x01);
    char *bad_bits = cat(ORIGIN "\n42\n", noncanonical, "\n", NULL);
    for (size_t i = 0; i < BASE_ARRAY_LEN(bodies); i++) {
        char *note = signed_cp(bodies[i]);
        ASSERT_ERR(open_cp(note, vkey), BASE_ERR_INVALID);
        free(note);
        free(bodies[i]);
    }
    char *bits_note = signed_cp(bad_bits);
    ASSERT_ERR(open_cp(bits_note, vkey), BASE_ERR_INVALID);

    /* Extension lines: at most 16, each at most 1024 bytes. */
    char long_ext[AUDIT_CHECKPOINT_EXTENSION_MAX + 2];
    memset(long_ext, 'x', sizeof long_ext - 1);
    long_ext[sizeof long_ext - 1] = '\0';
    char *long_body = cat(body, long_ext, "\n", NULL);
    char *long_note = signed_cp(long_body);
    ASSERT_ERR(open_cp(long_note, vkey), BASE_ERR_INVALID);
    long_ext[AUDIT_CHECKPOINT_EXTENSION_MAX] = '\0';
    char *max_body = cat(body, long_ext, "\n", NULL);
    char *max_note = signed_cp(max_body);
    ASSERT_OK(open_cp(max_note, vkey));
    char *ext_body = strdup(body);
    assert_non_null(ext_body);
    for (int i = 0; i < AUDIT_CHECKPOINT_MAX_EXTENSIONS; i++) {
        char *next = cat(ext_body, "ext\n", NULL);
        free(ext_body);
        ext_body = next;
    }
    char *sixteen = signed_cp(ext_body);
    ASSERT_OK(open_cp(sixteen, vkey));
    char *seventeen_body = cat(ext_body, "ext\n", NULL);
    char *seventeen = signed_cp(seventeen_body);
    ASSERT_ERR(open_cp(seventeen, vkey), BASE_ERR_INVALID);

    /* Invalid UTF-8 and control characters in the origin: '/' overlong in 2, 3 and 4 bytes, a surrogate,
     * U+110000, 0xFF, a truncated sequence, a tab, a CR, an escape. Hand-made notes, since the signer refuses
     * them too. */
    const char *bad_text[] = {
        "alma\xC0\xAF",
        "alma\xE0\x80\xAF",
        "alma\xF0\x80\x80\xAF",
        "alma\xED\xA0\x80",
        "alma\xF4\x90\x80\x80",
        "alma\xFF",
        "alma\xE2\x80",
        "alma\t",
        "alma\r",
        "alma\x1b",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_text); i++) {
        char *text = cat(bad_text[i], "\n42\n", r44, "\n", NULL);
        char *n = cat(text, "\n", EM_DASH " " ORIGIN " AAAAAAA=\n", NULL);
        ASSERT_ERR(open_cp(n, vkey), BASE_ERR_INVALID);
        char *out = NULL;
        size_t out_len = 0;
        acrypto_ed25519_key *key = test_key(1);
        ASSERT_ERR(audit_note_sign(text, strlen(text), ORIGIN, key, &out, &out_len), BASE_ERR_INVALID);
        assert_null(out);
        acrypto_ed25519_free(key);
        free(n);
        free(text);
    }

    /* Signature lines: each must be well-formed even when its key is unknown. */
    const char *bad_lines[] = {
        "- " ORIGIN " AAAAAAA=\n",    /* hyphen, not an em dash */
        EM_DASH ORIGIN " AAAAAAA=\n", /* no space after the dash */
        EM_DASH "  AAAAAAA=\n",       /* empty name */
        EM_DASH " a+b AAAAAAA=\n",    /* '+' in the name */
        EM_DASH " a\xC2\xA0"
                "b AAAAAAA=\n", /* U+00A0 in the name */
        EM_DASH " a\xE3\x80\x80"
                "b AAAAAAA=\n",       /* U+3000 in the name */
        EM_DASH " other\n",           /* no signature */
        EM_DASH " other \n",          /* empty signature */
        EM_DASH " other AAAAAA==\n",  /* 4 bytes: a key ID and nothing */
        EM_DASH " other AAAA AAA=\n", /* space in the base64 */
        EM_DASH " other AAAAAAA\n",   /* missing padding */
        EM_DASH " other AAAAAAB=\n",  /* non-zero trailing bits */
        EM_DASH " other -_AAAAA=\n",  /* base64url alphabet */
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_lines); i++) {
        char *n = cat(good, bad_lines[i], NULL); /* after a good, known signature */
        if (!(open_cp(n, vkey).err == BASE_ERR_INVALID))
            fail_msg("signature line %zu was not refused as INVALID", i);
        free(n);
    }

    /* Overlong: a checkpoint that is fine but for a huge unknown signature line past 1 MiB. */
    size_t huge_b64 = AUDIT_NOTE_MAX_LEN; /* a multiple of 4: valid base64 of 'A's */
    char *huge = malloc(good_len + strlen(EM_DASH " x ") + huge_b64 + 2);
    assert_non_null(huge);
    memcpy(huge, good, good_len);
    o = good_len;
    memcpy(huge + o, EM_DASH " x ", strlen(EM_DASH " x "));
    o += strlen(EM_DASH " x ");
    memset(huge + o, 'A', huge_b64);
    o += huge_b64;
    huge[o++] = '\n';
    huge[o] = '\0';
    ASSERT_ERR(open_cp(huge, vkey), BASE_ERR_INVALID);

    free(huge);
    free(seventeen);
    free(seventeen_body);
    free(sixteen);
    free(ext_body);
    free(max_note);
    free(max_body);
    free(long_note);
    free(long_body);
    free(bits_note);
    free(bad_bits);
    free(noncanonical);
    free(nul);
    free(cr_only);
    free(no_final);
    free(crlf);
    free(no_blank);
    free(good);
    free(body);
    free(vkey);
    free(r33);
    free(r31);
    free(r44);
}

/* A note of exactly 1 MiB is read; one byte more is refused, by the signer and by the reader. */
static void test_note_size_limit(void **state)
{
    acrypto_ed25519_key *key = test_key(1);
    char *vkey = test_vkey();
    audit_note_verifier *v = verifier(vkey);
    const audit_note_verifier *vs[] = {v};
    size_t sig_line = 1 + strlen(EM_DASH " " ORIGIN " ") + 92 + 1; /* blank line + signature line */
    size_t text_len = AUDIT_NOTE_MAX_LEN - sig_line;
    char *text = malloc(text_len + 2);
    assert_non_null(text);
    memset(text, 'a', text_len + 1);
    for (size_t i = 80; i < text_len; i += 81)
        text[i] = '\n';
    text[text_len - 1] = '\n';
    text[text_len] = '\0';
    char *note = NULL;
    size_t note_len = 0;
    ASSERT_OK(audit_note_sign(text, text_len, ORIGIN, key, &note, &note_len));
    assert_int_equal(note_len, AUDIT_NOTE_MAX_LEN);
    size_t got = 0;
    ASSERT_OK(audit_note_open(note, note_len, vs, 1, &got));
    assert_int_equal(got, text_len);

    text[text_len - 1] = 'a';
    text[text_len] = '\n';
    char *out = NULL;
    size_t out_len = 0;
    ASSERT_ERR(audit_note_sign(text, text_len + 1, ORIGIN, key, &out, &out_len), BASE_ERR_INVALID);
    assert_null(out);
    char *longer = malloc(note_len + 1);
    assert_non_null(longer);
    longer[0] = 'a';
    memcpy(longer + 1, note, note_len);
    got = 12345;
    ASSERT_ERR(audit_note_open(longer, note_len + 1, vs, 1, &got), BASE_ERR_INVALID);
    assert_int_equal(got, 12345);

    free(longer);
    free(note);
    free(text);
    audit_note_verifier_free(v);
    free(vkey);
    acrypto_ed25519_free(key);
}

/* Signatures from unknown keys are ignored when a known one verifies, and not enough on their own. */
static void test_unknown_keys_ignored(void **state)
{
    acrypto_ed25519_key *key = test_key(1), *other = test_key(9);
    char *vkey = vkey_of(ORIGIN, key);
    uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN];
    root_fill(root, 11);
    char *body = NULL;
    size_t body_len = 0;
    ASSERT_OK(audit_checkpoint_format(ORIGIN, 7, root, NULL, 0, &body, &body_len));
    char *mine = sign(body, ORIGIN, key);
    char *theirs = sign(body, "witness.example/w2", other);
    char *theirs_same_name = sign(body, ORIGIN, other); /* same name, other key: other key ID */
    const char *my_line = mine + body_len + 1, *their_line = theirs + body_len + 1;
    const char *their_same_line = theirs_same_name + body_len + 1;

    char *before = cat(body, "\n", their_line, their_same_line, my_line, NULL);
    char *after = cat(body, "\n", my_line, their_line, their_same_line, NULL);
    char *with_c2sp = cat(body, "\n", sofa_sigs, my_line, NULL); /* foreign lines of other types and sizes */
    ASSERT_OK(open_cp(before, vkey));
    ASSERT_OK(open_cp(after, vkey));
    ASSERT_OK(open_cp(with_c2sp, vkey));
    ASSERT_ERR(open_cp(theirs, vkey), BASE_ERR_CRYPTO);
    ASSERT_ERR(open_cp(theirs_same_name, vkey), BASE_ERR_CRYPTO);

    /* The C2SP examples are well-formed (CRYPTO, not INVALID): none of their keys is known here. */
    char *sofa = cat(sofa_body, "\n", sofa_sigs, NULL);
    ASSERT_ERR(open_cp(sofa, vkey), BASE_ERR_CRYPTO);
    char *quasimodo = cat(c2sp_note_text, "\n", c2sp_note_sig, NULL);
    audit_note_verifier *v = verifier(vkey);
    const audit_note_verifier *vs[] = {v};
    ASSERT_ERR(open_note(quasimodo, vs, 1), BASE_ERR_CRYPTO);

    /* Countersigned by a known key, the spec's checkpoint opens, and its fields are the spec's. */
    char *sofa_mine = sign(sofa_body, ORIGIN, key);
    char *sofa_both = cat(sofa_body, "\n", sofa_sigs, sofa_mine + strlen(sofa_body) + 1, NULL);
    audit_checkpoint *cp = NULL;
    ASSERT_OK(
        audit_checkpoint_open_vkey(sofa_both, strlen(sofa_both), vkey, "example.com/behind-the-sofa", &cp));
    assert_string_equal(cp->origin, "example.com/behind-the-sofa");
    assert_true(cp->size == 20852163);
    uint8_t want_root[AUDIT_CHECKPOINT_ROOT_LEN];
    size_t n = 0;
    ASSERT_OK(acrypto_base64_decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", 44, want_root,
                                    sizeof want_root, &n));
    assert_memory_equal(cp->root, want_root, sizeof want_root);
    cp = audit_checkpoint_free(cp);

    /* The signed-note example's text keeps its empty line: the text ends at the last blank line. */
    char *quasi_mine = sign(c2sp_note_text, ORIGIN, key);
    char *quasi_both =
        cat(c2sp_note_text, "\n", c2sp_note_sig, quasi_mine + strlen(c2sp_note_text) + 1, NULL);
    size_t text_len = 0;
    ASSERT_OK(audit_note_open(quasi_both, strlen(quasi_both), vs, 1, &text_len));
    assert_int_equal(text_len, strlen(c2sp_note_text));
    /* ...but a checkpoint cannot have an empty line. */
    ASSERT_ERR(open_cp(quasi_both, vkey), BASE_ERR_INVALID);

    free(quasi_both);
    free(quasi_mine);
    free(sofa_both);
    free(sofa_mine);
    audit_note_verifier_free(v);
    free(quasimodo);
    free(sofa);
    free(with_c2sp);
    free(after);
    free(before);
    free(theirs_same_name);
    free(theirs);
    free(mine);
    free(body);
    free(vkey);
    acrypto_ed25519_free(other);
    acrypto_ed25519_free(key);
}

/* Verifier lists: none, a NULL entry, the same key twice. */
static void test_verifier_list(void **state)
{
    char *vkey = test_vkey();
    char *note = signed_cp("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n");
    audit_note_verifier *v = verifier(vkey), *w = verifier(vkey);
    const audit_note_verifier *twice[] = {v, w}, *with_null[] = {v, NULL};
    ASSERT_OK(open_note(note, twice, 1));
    ASSERT_ERR(open_note(note, twice, 2), BASE_ERR_INVALID);
    ASSERT_ERR(open_note(note, with_null, 2), BASE_ERR_INVALID);
    ASSERT_ERR(open_note(note, NULL, 0), BASE_ERR_CRYPTO);
    ASSERT_ERR(open_note(note, NULL, 1), BASE_ERR_INVALID);
    audit_checkpoint *cp = NULL;
    ASSERT_OK(audit_checkpoint_open(note, strlen(note), twice, 1, "o", &cp));
    assert_string_equal(cp->origin, "o");
    audit_checkpoint_freep(&cp);
    assert_null(cp);
    audit_note_verifier_freep(&w);
    assert_null(w);
    audit_note_verifier_free(v);
    free(note);
    free(vkey);
}

/* The writers refuse bad input and leave their outputs alone. */
static void test_writers_reject(void **state)
{
    acrypto_ed25519_key *key = test_key(1);
    char *out = (char *)&out; /* a sentinel: must be unchanged */
    size_t out_len = 777;
    const char *bad_names[] = {"",
                               "a b",
                               "a+b",
                               "a\tb",
                               "a\xC2\xA0"
                               "b",
                               "a\xFF"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_names); i++) {
        ASSERT_ERR(audit_note_sign("x\n", 2, bad_names[i], key, &out, &out_len), BASE_ERR_INVALID);
        uint8_t pub[32] = {0};
        ASSERT_ERR(audit_note_vkey_format(bad_names[i], pub, &out, &out_len), BASE_ERR_INVALID);
        uint32_t id = 5;
        ASSERT_ERR(audit_note_key_id(bad_names[i], pub, &id), BASE_ERR_INVALID);
        assert_int_equal(id, 5);
    }
    char long_name[AUDIT_NOTE_KEY_NAME_MAX + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    ASSERT_ERR(audit_note_sign("x\n", 2, long_name, key, &out, &out_len), BASE_ERR_INVALID);
    long_name[AUDIT_NOTE_KEY_NAME_MAX] = '\0'; /* 255 bytes: fine */
    char *vkey = vkey_of(long_name, key);
    audit_note_verifier *v = verifier(vkey);
    audit_note_verifier_free(v);
    free(vkey);

    ASSERT_ERR(audit_note_sign("", 0, ORIGIN, key, &out, &out_len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_note_sign("x", 1, ORIGIN, key, &out, &out_len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_note_sign("x\r\n", 3, ORIGIN, key, &out, &out_len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_note_sign("x\0y\n", 4, ORIGIN, key, &out, &out_len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_note_sign(NULL, 2, ORIGIN, key, &out, &out_len), BASE_ERR_INVALID);
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    ASSERT_OK(acrypto_ed25519_public_raw(key, pub));
    acrypto_ed25519_key *public_only = NULL;
    ASSERT_OK(acrypto_ed25519_from_public(pub, sizeof pub, &public_only));
    ASSERT_ERR(audit_note_sign("x\n", 2, ORIGIN, public_only, &out, &out_len), BASE_ERR_INVALID);
    acrypto_ed25519_free(public_only);

    uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN] = {0};
    char long_origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 2];
    memset(long_origin, 'o', sizeof long_origin - 1);
    long_origin[sizeof long_origin - 1] = '\0';
    const char *bad_origins[] = {"", "a\nb", "a\rb", "a\x01", "a\xC0\xAF", long_origin};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_origins); i++)
        ASSERT_ERR(audit_checkpoint_format(bad_origins[i], 1, root, NULL, 0, &out, &out_len),
                   BASE_ERR_INVALID);
    long_origin[AUDIT_CHECKPOINT_ORIGIN_MAX] = '\0'; /* 255 bytes: fine */
    char *body = NULL;
    size_t body_len = 0;
    ASSERT_OK(audit_checkpoint_format(long_origin, 1, root, NULL, 0, &body, &body_len));
    free(body);
    ASSERT_ERR(audit_checkpoint_format(ORIGIN, 1, NULL, NULL, 0, &out, &out_len), BASE_ERR_INVALID);
    ASSERT_ERR(audit_checkpoint_format(ORIGIN, 1, root, NULL, 1, &out, &out_len), BASE_ERR_INVALID);
    const char *bad_exts[][1] = {{""}, {"a\nb"}, {"a\x7f\x01"}, {NULL}};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_exts); i++)
        ASSERT_ERR(audit_checkpoint_format(ORIGIN, 1, root, bad_exts[i], 1, &out, &out_len),
                   BASE_ERR_INVALID);
    const char *many[AUDIT_CHECKPOINT_MAX_EXTENSIONS + 1];
    for (size_t i = 0; i < BASE_ARRAY_LEN(many); i++)
        many[i] = "e";
    ASSERT_ERR(audit_checkpoint_format(ORIGIN, 1, root, many, BASE_ARRAY_LEN(many), &out, &out_len),
               BASE_ERR_INVALID);
    ASSERT_OK(
        audit_checkpoint_format(ORIGIN, 1, root, many, AUDIT_CHECKPOINT_MAX_EXTENSIONS, &body, &body_len));
    free(body);

    assert_ptr_equal(out, (char *)&out);
    assert_int_equal(out_len, 777);
    acrypto_ed25519_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_go_keys),           cmocka_unit_test(test_go_sign),
        cmocka_unit_test(test_go_open),           cmocka_unit_test(test_go_vkey_manglings),
        cmocka_unit_test(test_go_tree_vectors),   cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_checkpoint_tamper), cmocka_unit_test(test_checkpoint_malformed),
        cmocka_unit_test(test_note_size_limit),   cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_verifier_list),     cmocka_unit_test(test_writers_reject),
    };
    return cmocka_run_group_tests_name("audit_checkpoint", tests, NULL, NULL);
}
