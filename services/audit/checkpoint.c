/* C2SP signed notes and tlog-checkpoints with Ed25519 (see checkpoint.h for the format and the rules).
 *
 * Reading is two steps: note_parse() checks all the syntax of a note and decodes its signature lines into
 * spans of the caller's buffer, then note_verify() checks the lines from known keys. A checkpoint body is
 * parsed between the two, so every malformed input is BASE_ERR_INVALID whatever its signatures, and no
 * signature is checked on a note that would be refused anyway. */
#include "checkpoint.h"

#include "base/utf8.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The signature type byte of Ed25519 in key IDs and verifier keys (C2SP signed-note, "Signature types"). */
#define NOTE_ALG_ED25519 0x01
/* "— " : U+2014 EM DASH in UTF-8, then a space, opens every signature line. */
#define NOTE_SIG_PREFIX     "\xE2\x80\x94 "
#define NOTE_SIG_PREFIX_LEN 4
#define NOTE_KEY_ID_LEN     4
/* An Ed25519 signature line's payload: key ID ‖ signature, and its base64 length. */
#define NOTE_ED25519_PAYLOAD_LEN (NOTE_KEY_ID_LEN + ACRYPTO_ED25519_SIG_LEN)
#define NOTE_ED25519_PAYLOAD_B64 92 /* 4 * ceil(68 / 3) */
/* A verifier key's base64 part: 0x01 ‖ 32-byte public key, 33 bytes, 44 characters without padding. */
#define VKEY_KEY_LEN     (1 + ACRYPTO_ED25519_PUBLIC_LEN)
#define VKEY_KEY_B64_LEN 44
#define VKEY_HASH_HEX    8
/* Base64 of the 32-byte root: 44 characters, one '='. */
#define ROOT_B64_LEN 44
/* UINT64_MAX has 20 decimal digits. */
#define SIZE_DIGITS_MAX 20

struct audit_note_verifier {
    char name[AUDIT_NOTE_KEY_NAME_MAX + 1];
    size_t name_len;
    uint32_t key_id;
    acrypto_ed25519_key *key;
};

/* One signature line of a parsed note: spans into the note, and what the base64 decoded to. */
typedef struct note_sig {
    const char *name;
    size_t name_len;
    const char *b64;
    size_t b64_len;
    uint32_t key_id;
    size_t sig_len; /* decoded bytes after the key ID */
} note_sig;

typedef struct note_view {
    size_t text_len; /* the signed text is note[0, text_len) and ends in \n */
    size_t n_sigs;
    note_sig sigs[AUDIT_NOTE_MAX_SIGS];
} note_view;

/* ---------------------------------------------------------------------------------------------------------
 * Text rules. */

/* The signed-note rule for all of a note: valid UTF-8 and no control character below U+0020 other than
 * newline (and newline only where allowed). */
static bool text_ok(const char *s, size_t n, bool allow_newline)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = base_utf8_next(p + i, n - i, &cp);
        if (len == 0 || (cp < 0x20 && !(cp == '\n' && allow_newline)))
            return false;
        i += len;
    }
    return true;
}

/* Go's unicode.IsSpace, which golang.org/x/mod/sumdb/note applies to key names: the White_Space property. */
static bool unicode_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* Key names (signed-note, "Format"): non-empty, no Unicode space, no '+'; here also valid UTF-8 without
 * control characters, since a note cannot carry those anyway. */
static bool key_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = base_utf8_next(p + i, n - i, &cp);
        if (len == 0 || cp < 0x20 || cp == '+' || unicode_space(cp))
            return false;
        i += len;
    }
    return true;
}

/* A checkpoint line (origin or extension): non-empty, bounded, no newline, note-valid text. */
static bool line_ok(const char *s, size_t n, size_t max)
{
    return n > 0 && n <= max && text_ok(s, n, false);
}

/* Length of a C string up to max + 1, so a longer one is seen as too long without reading all of it. */
static size_t bounded_len(const char *s, size_t max)
{
    return strnlen(s, max + 1);
}

static uint32_t be32_load(const uint8_t b[4])
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static void be32_store(uint32_t v, uint8_t b[4])
{
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* ---------------------------------------------------------------------------------------------------------
 * Key IDs and verifier keys. */

/* SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pub)[:4], big-endian (signed-note, "Ed25519 signatures"). name_len is at
 * most AUDIT_NOTE_KEY_NAME_MAX, checked by every caller. */
static base_result key_id_compute(const char *name, size_t name_len,
                                  const uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN], uint32_t *ret_key_id)
{
    uint8_t buf[AUDIT_NOTE_KEY_NAME_MAX + 2 + ACRYPTO_ED25519_PUBLIC_LEN];
    memcpy(buf, name, name_len);
    buf[name_len] = '\n';
    buf[name_len + 1] = NOTE_ALG_ED25519;
    memcpy(buf + name_len + 2, pub, ACRYPTO_ED25519_PUBLIC_LEN);
    uint8_t digest[ACRYPTO_SHA256_LEN];
    BASE_GUARD(acrypto_sha256(buf, name_len + 2 + ACRYPTO_ED25519_PUBLIC_LEN, digest));
    *ret_key_id = be32_load(digest);
    return BASE_OK_RESULT;
}

/* A caller-supplied key name: a C string of at most AUDIT_NOTE_KEY_NAME_MAX bytes following the rules. */
static base_result key_name_check(const char *name, size_t *ret_len)
{
    BASE_ENSURE(name != NULL, BASE_ERR_INVALID, "note: key name is NULL");
    size_t len = bounded_len(name, AUDIT_NOTE_KEY_NAME_MAX);
    BASE_ENSURE(len <= AUDIT_NOTE_KEY_NAME_MAX, BASE_ERR_INVALID, "note: key name longer than 255 bytes");
    BASE_ENSURE(key_name_ok(name, len), BASE_ERR_INVALID,
                "note: key name must be non-empty UTF-8 without spaces, '+' or control characters");
    *ret_len = len;
    return BASE_OK_RESULT;
}

base_result audit_note_key_id(const char *name, const uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN],
                              uint32_t *ret_key_id)
{
    BASE_ENSURE(pub != NULL && ret_key_id != NULL, BASE_ERR_INVALID,
                "note: public key or ret_key_id is NULL");
    size_t name_len = 0;
    BASE_GUARD(key_name_check(name, &name_len));
    return key_id_compute(name, name_len, pub, ret_key_id);
}

base_result audit_note_vkey_format(const char *name, const uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN],
                                   char **ret_vkey, size_t *ret_len)
{
    BASE_ENSURE(pub != NULL && ret_vkey != NULL && ret_len != NULL, BASE_ERR_INVALID,
                "vkey: public key or an output is NULL");
    size_t name_len = 0;
    BASE_GUARD(key_name_check(name, &name_len));
    uint32_t key_id = 0;
    BASE_GUARD(key_id_compute(name, name_len, pub, &key_id));

    uint8_t id_be[NOTE_KEY_ID_LEN], key[VKEY_KEY_LEN];
    be32_store(key_id, id_be);
    key[0] = NOTE_ALG_ED25519;
    memcpy(key + 1, pub, ACRYPTO_ED25519_PUBLIC_LEN);
    char hex[VKEY_HASH_HEX + 1], b64[VKEY_KEY_B64_LEN + 1];
    size_t hex_len = 0, b64_len = 0;
    BASE_GUARD(acrypto_hex_encode(id_be, sizeof id_be, hex, sizeof hex, &hex_len));
    BASE_GUARD(acrypto_base64_encode(key, sizeof key, b64, sizeof b64, &b64_len));

    size_t len = name_len + 1 + hex_len + 1 + b64_len;
    char *out = malloc(len + 1);
    if (out == NULL)
        return base_fail(BASE_ERR_NOMEM, "vkey: out of memory");
    size_t o = 0;
    memcpy(out + o, name, name_len);
    o += name_len;
    out[o++] = '+';
    memcpy(out + o, hex, hex_len);
    o += hex_len;
    out[o++] = '+';
    memcpy(out + o, b64, b64_len);
    o += b64_len;
    out[o] = '\0';
    *ret_vkey = out;
    *ret_len = len;
    return BASE_OK_RESULT;
}

base_result audit_note_verifier_new(const char *vkey, audit_note_verifier **ret_verifier)
{
    BASE_ENSURE(vkey != NULL && ret_verifier != NULL, BASE_ERR_INVALID, "vkey: vkey or ret_verifier is NULL");
    size_t len = bounded_len(vkey, AUDIT_NOTE_VKEY_MAX);
    BASE_ENSURE(len <= AUDIT_NOTE_VKEY_MAX, BASE_ERR_INVALID, "vkey: longer than the verifier key limit");

    /* "<name>+<hash>+<key>": the name has no '+', the hash is hex, so the first two '+' split it; the
     * base64 key may itself contain '+'. */
    const char *plus1 = memchr(vkey, '+', len);
    BASE_ENSURE(plus1 != NULL, BASE_ERR_INVALID, "vkey: expected <name>+<key ID>+<key>");
    size_t name_len = (size_t)(plus1 - vkey);
    const char *hash = plus1 + 1;
    const char *plus2 = memchr(hash, '+', len - name_len - 1);
    BASE_ENSURE(plus2 != NULL, BASE_ERR_INVALID, "vkey: expected <name>+<key ID>+<key>");
    size_t hash_len = (size_t)(plus2 - hash);
    const char *key64 = plus2 + 1;
    size_t key64_len = len - name_len - 1 - hash_len - 1;

    BASE_ENSURE(name_len <= AUDIT_NOTE_KEY_NAME_MAX && key_name_ok(vkey, name_len), BASE_ERR_INVALID,
                "vkey: key name must be 1-255 bytes of UTF-8 without spaces, '+' or control characters");
    BASE_ENSURE(hash_len == VKEY_HASH_HEX, BASE_ERR_INVALID, "vkey: key ID must be 8 hex digits");
    uint8_t id_be[NOTE_KEY_ID_LEN];
    size_t id_len = 0;
    base_result r = acrypto_hex_decode(hash, hash_len, id_be, sizeof id_be, &id_len);
    BASE_ENSURE(base_is_ok(r) && id_len == NOTE_KEY_ID_LEN, BASE_ERR_INVALID,
                "vkey: key ID must be 8 hex digits");
    BASE_ENSURE(key64_len == VKEY_KEY_B64_LEN, BASE_ERR_INVALID,
                "vkey: key must be the base64 of a type byte and a 32-byte Ed25519 key");
    uint8_t key[VKEY_KEY_LEN];
    size_t key_len = 0;
    r = acrypto_base64_decode(key64, key64_len, key, sizeof key, &key_len);
    BASE_ENSURE(base_is_ok(r) && key_len == VKEY_KEY_LEN, BASE_ERR_INVALID,
                "vkey: key must be the base64 of a type byte and a 32-byte Ed25519 key");
    BASE_ENSURE(key[0] == NOTE_ALG_ED25519, BASE_ERR_INVALID, "vkey: signature type is not Ed25519 (0x01)");

    uint32_t want = 0;
    BASE_GUARD(key_id_compute(vkey, name_len, key + 1, &want));
    if (want != be32_load(id_be))
        return base_fail(BASE_ERR_CRYPTO, "vkey: key ID does not match the key name and public key");

    audit_note_verifier *v = calloc(1, sizeof *v);
    if (v == NULL)
        return base_fail(BASE_ERR_NOMEM, "vkey: out of memory");
    r = acrypto_ed25519_from_public(key + 1, ACRYPTO_ED25519_PUBLIC_LEN, &v->key);
    if (!base_is_ok(r)) {
        free(v);
        return r;
    }
    memcpy(v->name, vkey, name_len);
    v->name[name_len] = '\0';
    v->name_len = name_len;
    v->key_id = want;
    *ret_verifier = v;
    return BASE_OK_RESULT;
}

audit_note_verifier *audit_note_verifier_free(audit_note_verifier *verifier)
{
    if (verifier == NULL)
        return NULL;
    verifier->key = acrypto_ed25519_free(verifier->key);
    free(verifier);
    return NULL;
}

void audit_note_verifier_freep(audit_note_verifier **verifier)
{
    if (verifier != NULL)
        *verifier = audit_note_verifier_free(*verifier);
}

const char *audit_note_verifier_name(const audit_note_verifier *verifier)
{
    return verifier != NULL ? verifier->name : "";
}

uint32_t audit_note_verifier_key_id(const audit_note_verifier *verifier)
{
    return verifier != NULL ? verifier->key_id : 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * Signed notes. */

base_result audit_note_sign(const char *text, size_t text_len, const char *key_name,
                            const acrypto_ed25519_key *key, char **ret_note, size_t *ret_len)
{
    BASE_ENSURE(text != NULL && key != NULL && ret_note != NULL && ret_len != NULL, BASE_ERR_INVALID,
                "note sign: text, key or an output is NULL");
    BASE_ENSURE(text_len > 0 && text[text_len - 1] == '\n', BASE_ERR_INVALID,
                "note sign: text must be non-empty and end in a newline");
    BASE_ENSURE(text_len <= AUDIT_NOTE_MAX_LEN, BASE_ERR_INVALID, "note sign: note larger than 1 MiB");
    BASE_ENSURE(text_ok(text, text_len, true), BASE_ERR_INVALID,
                "note sign: text must be UTF-8 without control characters other than newline");
    size_t name_len = 0;
    BASE_GUARD(key_name_check(key_name, &name_len));
    BASE_ENSURE(acrypto_ed25519_has_private(key), BASE_ERR_INVALID, "note sign: key has no private part");
    size_t len = text_len + 1 + NOTE_SIG_PREFIX_LEN + name_len + 1 + NOTE_ED25519_PAYLOAD_B64 + 1;
    BASE_ENSURE(len <= AUDIT_NOTE_MAX_LEN, BASE_ERR_INVALID, "note sign: note larger than 1 MiB");

    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    BASE_GUARD(acrypto_ed25519_public_raw(key, pub));
    uint32_t key_id = 0;
    BASE_GUARD(key_id_compute(key_name, name_len, pub, &key_id));
    uint8_t payload[NOTE_ED25519_PAYLOAD_LEN];
    be32_store(key_id, payload);
    BASE_GUARD(acrypto_ed25519_sign(key, text, text_len, payload + NOTE_KEY_ID_LEN));
    char b64[NOTE_ED25519_PAYLOAD_B64 + 1];
    size_t b64_len = 0;
    BASE_GUARD(acrypto_base64_encode(payload, sizeof payload, b64, sizeof b64, &b64_len));

    char *out = malloc(len + 1);
    if (out == NULL)
        return base_fail(BASE_ERR_NOMEM, "note sign: out of memory");
    size_t o = 0;
    memcpy(out + o, text, text_len);
    o += text_len;
    out[o++] = '\n';
    memcpy(out + o, NOTE_SIG_PREFIX, NOTE_SIG_PREFIX_LEN);
    o += NOTE_SIG_PREFIX_LEN;
    memcpy(out + o, key_name, name_len);
    o += name_len;
    out[o++] = ' ';
    memcpy(out + o, b64, b64_len);
    o += b64_len;
    out[o++] = '\n';
    out[o] = '\0';
    *ret_note = out;
    *ret_len = len;
    return BASE_OK_RESULT;
}

/* One signature line "— <name> <base64>" (without its \n) into sig, base64 not yet decoded. */
static base_result sig_line_split(const char *line, size_t len, note_sig *sig)
{
    BASE_ENSURE(len > NOTE_SIG_PREFIX_LEN && memcmp(line, NOTE_SIG_PREFIX, NOTE_SIG_PREFIX_LEN) == 0,
                BASE_ERR_INVALID, "note: a signature line does not start with an em dash and a space");
    const char *name = line + NOTE_SIG_PREFIX_LEN;
    size_t rest = len - NOTE_SIG_PREFIX_LEN;
    const char *space = memchr(name, ' ', rest);
    BASE_ENSURE(space != NULL, BASE_ERR_INVALID, "note: a signature line has no signature");
    size_t name_len = (size_t)(space - name);
    BASE_ENSURE(key_name_ok(name, name_len), BASE_ERR_INVALID,
                "note: a signature line has an invalid key name");
    size_t b64_len = rest - name_len - 1;
    BASE_ENSURE(b64_len > 0, BASE_ERR_INVALID, "note: a signature line has an empty signature");
    *sig = (note_sig){.name = name, .name_len = name_len, .b64 = space + 1, .b64_len = b64_len};
    return BASE_OK_RESULT;
}

/* Decode every signature (strict base64, at least a key ID and one byte) to learn its key ID and length. */
static base_result sigs_decode(note_view *view)
{
    size_t max_b64 = 0;
    for (size_t i = 0; i < view->n_sigs; i++)
        if (view->sigs[i].b64_len > max_b64)
            max_b64 = view->sigs[i].b64_len;
    /* One scratch buffer for the longest; signatures of unknown types may be kilobytes (post-quantum). */
    size_t cap = acrypto_base64_decode_size(max_b64);
    uint8_t *scratch = malloc(cap);
    if (scratch == NULL)
        return base_fail(BASE_ERR_NOMEM, "note: out of memory");
    base_result r = BASE_OK_RESULT;
    for (size_t i = 0; i < view->n_sigs; i++) {
        note_sig *sig = &view->sigs[i];
        size_t n = 0;
        if (!base_is_ok(acrypto_base64_decode(sig->b64, sig->b64_len, scratch, cap, &n)) ||
            n <= NOTE_KEY_ID_LEN) {
            r = base_fail(BASE_ERR_INVALID, "note: a signature is not base64 of a key ID and a signature");
            break;
        }
        sig->key_id = be32_load(scratch);
        sig->sig_len = n - NOTE_KEY_ID_LEN;
    }
    free(scratch);
    return r;
}

/* All the syntax of a signed note (checkpoint.h); fills view on success. */
static base_result note_parse(const char *note, size_t note_len, note_view *view)
{
    BASE_ENSURE(note != NULL || note_len == 0, BASE_ERR_INVALID, "note: note is NULL");
    BASE_ENSURE(note_len <= AUDIT_NOTE_MAX_LEN, BASE_ERR_INVALID, "note: larger than 1 MiB");
    BASE_ENSURE(note_len >= 2, BASE_ERR_INVALID, "note: too short");
    BASE_ENSURE(text_ok(note, note_len, true), BASE_ERR_INVALID,
                "note: not UTF-8, or a control character other than newline");

    /* The text ends at the last blank line (signed-note, "Format"); it keeps its final newline. */
    size_t split = note_len;
    for (size_t i = note_len - 1; i-- > 0;) {
        if (note[i] == '\n' && note[i + 1] == '\n') {
            split = i;
            break;
        }
    }
    BASE_ENSURE(split != note_len, BASE_ERR_INVALID, "note: no blank line before the signatures");
    size_t pos = split + 2;
    BASE_ENSURE(pos < note_len && note[note_len - 1] == '\n', BASE_ERR_INVALID,
                "note: signatures missing or not ending in a newline");

    view->text_len = split + 1;
    view->n_sigs = 0;
    while (pos < note_len) {
        const char *line = note + pos;
        const char *nl = memchr(line, '\n', note_len - pos); /* found: the note ends in \n */
        size_t len = (size_t)(nl - line);
        BASE_ENSURE(view->n_sigs < AUDIT_NOTE_MAX_SIGS, BASE_ERR_INVALID, "note: more than 100 signatures");
        BASE_GUARD(sig_line_split(line, len, &view->sigs[view->n_sigs]));
        view->n_sigs++;
        pos += len + 1;
    }
    return sigs_decode(view);
}

/* Verify every signature line from a known key (name and key ID both match); at least one must exist. */
static base_result note_verify(const char *note, const note_view *view,
                               const audit_note_verifier *const *verifiers, size_t n_verifiers)
{
    BASE_ENSURE(verifiers != NULL || n_verifiers == 0, BASE_ERR_INVALID, "note: verifier list is NULL");
    for (size_t j = 0; j < n_verifiers; j++)
        BASE_ENSURE(verifiers[j] != NULL, BASE_ERR_INVALID, "note: a verifier is NULL");

    size_t verified = 0;
    for (size_t i = 0; i < view->n_sigs; i++) {
        const note_sig *sig = &view->sigs[i];
        const audit_note_verifier *match = NULL;
        for (size_t j = 0; j < n_verifiers; j++) {
            const audit_note_verifier *v = verifiers[j];
            if (v->key_id == sig->key_id && v->name_len == sig->name_len &&
                memcmp(v->name, sig->name, sig->name_len) == 0) {
                BASE_ENSURE(match == NULL, BASE_ERR_INVALID,
                            "note: two verifiers have the same name and key ID");
                match = v;
            }
        }
        if (match == NULL)
            continue; /* an unknown key: ignored (signed-note, "Signatures") */
        if (sig->sig_len != ACRYPTO_ED25519_SIG_LEN)
            return base_fail(BASE_ERR_CRYPTO, "note: a signature from a known key does not verify");
        uint8_t payload[NOTE_ED25519_PAYLOAD_LEN];
        size_t n = 0;
        BASE_GUARD(acrypto_base64_decode(sig->b64, sig->b64_len, payload, sizeof payload, &n));
        base_result r = acrypto_ed25519_verify(match->key, note, view->text_len, payload + NOTE_KEY_ID_LEN,
                                               ACRYPTO_ED25519_SIG_LEN);
        if (r.err == BASE_ERR_CRYPTO)
            return base_fail(BASE_ERR_CRYPTO, "note: a signature from a known key does not verify");
        BASE_GUARD(r);
        verified++;
    }
    BASE_ENSURE(verified > 0, BASE_ERR_CRYPTO, "note: no signature from a known key");
    return BASE_OK_RESULT;
}

base_result audit_note_open(const char *note, size_t note_len, const audit_note_verifier *const *verifiers,
                            size_t n_verifiers, size_t *ret_text_len)
{
    BASE_ENSURE(ret_text_len != NULL, BASE_ERR_INVALID, "note: ret_text_len is NULL");
    note_view view;
    BASE_GUARD(note_parse(note, note_len, &view));
    BASE_GUARD(note_verify(note, &view, verifiers, n_verifiers));
    *ret_text_len = view.text_len;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Checkpoints. */

static char *str_dup_n(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    if (out != NULL) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}

/* Decimal without leading zeros ("0" alone is zero), fitting in 64 bits (tlog-checkpoint, "Note text"). */
static bool size_parse(const char *s, size_t n, uint64_t *ret_size)
{
    if (n == 0 || n > SIZE_DIGITS_MAX || (s[0] == '0' && n > 1))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *ret_size = v;
    return true;
}

static bool root_parse(const char *s, size_t n, uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN])
{
    if (n != ROOT_B64_LEN)
        return false;
    uint8_t buf[AUDIT_CHECKPOINT_ROOT_LEN + 1]; /* 44 characters decode to at most 33 bytes */
    size_t len = 0;
    if (!base_is_ok(acrypto_base64_decode(s, n, buf, sizeof buf, &len)) || len != AUDIT_CHECKPOINT_ROOT_LEN)
        return false;
    memcpy(root, buf, AUDIT_CHECKPOINT_ROOT_LEN);
    return true;
}

static base_result checkpoint_fail(audit_checkpoint *cp, base_err err, const char *msg)
{
    audit_checkpoint_free(cp);
    return base_fail(err, "%s", msg);
}

/* The checkpoint body text[0, text_len), which ends in \n and is note-valid text already. */
static base_result checkpoint_parse(const char *text, size_t text_len, audit_checkpoint **ret_checkpoint)
{
    audit_checkpoint *cp = calloc(1, sizeof *cp);
    if (cp == NULL)
        return base_fail(BASE_ERR_NOMEM, "checkpoint: out of memory");
    size_t line_no = 0, pos = 0;
    while (pos < text_len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', text_len - pos); /* found: the text ends in \n */
        size_t len = (size_t)(nl - line);
        pos += len + 1;
        if (len == 0)
            return checkpoint_fail(cp, BASE_ERR_INVALID, "checkpoint: empty line");
        switch (line_no++) {
        case 0:
            if (!line_ok(line, len, AUDIT_CHECKPOINT_ORIGIN_MAX))
                return checkpoint_fail(cp, BASE_ERR_INVALID, "checkpoint: origin longer than 255 bytes");
            cp->origin = str_dup_n(line, len);
            if (cp->origin == NULL)
                return checkpoint_fail(cp, BASE_ERR_NOMEM, "checkpoint: out of memory");
            break;
        case 1:
            if (!size_parse(line, len, &cp->size))
                return checkpoint_fail(
                    cp, BASE_ERR_INVALID,
                    "checkpoint: tree size is not decimal without leading zeros in 64 bits");
            break;
        case 2:
            if (!root_parse(line, len, cp->root))
                return checkpoint_fail(cp, BASE_ERR_INVALID,
                                       "checkpoint: root hash is not base64 of 32 bytes");
            break;
        default:
            if (cp->n_extensions == AUDIT_CHECKPOINT_MAX_EXTENSIONS)
                return checkpoint_fail(cp, BASE_ERR_INVALID, "checkpoint: more than 16 extension lines");
            if (!line_ok(line, len, AUDIT_CHECKPOINT_EXTENSION_MAX))
                return checkpoint_fail(cp, BASE_ERR_INVALID,
                                       "checkpoint: extension line longer than 1024 bytes");
            if (cp->extensions == NULL) {
                cp->extensions = calloc(AUDIT_CHECKPOINT_MAX_EXTENSIONS, sizeof *cp->extensions);
                if (cp->extensions == NULL)
                    return checkpoint_fail(cp, BASE_ERR_NOMEM, "checkpoint: out of memory");
            }
            cp->extensions[cp->n_extensions] = str_dup_n(line, len);
            if (cp->extensions[cp->n_extensions] == NULL)
                return checkpoint_fail(cp, BASE_ERR_NOMEM, "checkpoint: out of memory");
            cp->n_extensions++;
            break;
        }
    }
    if (line_no < 3)
        return checkpoint_fail(cp, BASE_ERR_INVALID, "checkpoint: fewer than three lines");
    *ret_checkpoint = cp;
    return BASE_OK_RESULT;
}

base_result audit_checkpoint_format(const char *origin, uint64_t size,
                                    const uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN],
                                    const char *const *extensions, size_t n_extensions, char **ret_text,
                                    size_t *ret_len)
{
    BASE_ENSURE(origin != NULL && root != NULL && ret_text != NULL && ret_len != NULL, BASE_ERR_INVALID,
                "checkpoint: origin, root or an output is NULL");
    BASE_ENSURE(extensions != NULL || n_extensions == 0, BASE_ERR_INVALID, "checkpoint: extensions is NULL");
    BASE_ENSURE(n_extensions <= AUDIT_CHECKPOINT_MAX_EXTENSIONS, BASE_ERR_INVALID,
                "checkpoint: more than 16 extension lines");
    size_t origin_len = bounded_len(origin, AUDIT_CHECKPOINT_ORIGIN_MAX);
    BASE_ENSURE(line_ok(origin, origin_len, AUDIT_CHECKPOINT_ORIGIN_MAX), BASE_ERR_INVALID,
                "checkpoint: origin must be 1-255 bytes of UTF-8 without control characters");
    size_t ext_len[AUDIT_CHECKPOINT_MAX_EXTENSIONS];
    size_t len = origin_len + 1;
    for (size_t i = 0; i < n_extensions; i++) {
        BASE_ENSURE(extensions[i] != NULL, BASE_ERR_INVALID, "checkpoint: an extension line is NULL");
        ext_len[i] = bounded_len(extensions[i], AUDIT_CHECKPOINT_EXTENSION_MAX);
        BASE_ENSURE(line_ok(extensions[i], ext_len[i], AUDIT_CHECKPOINT_EXTENSION_MAX), BASE_ERR_INVALID,
                    "checkpoint: extension lines must be 1-1024 bytes of UTF-8 without control characters");
        len += ext_len[i] + 1;
    }
    char size_dec[SIZE_DIGITS_MAX + 1];
    int size_len = snprintf(size_dec, sizeof size_dec, "%" PRIu64, size);
    BASE_ENSURE(size_len > 0 && (size_t)size_len < sizeof size_dec, BASE_ERR_INTERNAL,
                "checkpoint: tree size formatting failed");
    char root_b64[ROOT_B64_LEN + 1];
    size_t root_len = 0;
    BASE_GUARD(acrypto_base64_encode(root, AUDIT_CHECKPOINT_ROOT_LEN, root_b64, sizeof root_b64, &root_len));
    len += (size_t)size_len + 1 + root_len + 1;

    char *out = malloc(len + 1);
    if (out == NULL)
        return base_fail(BASE_ERR_NOMEM, "checkpoint: out of memory");
    size_t o = 0;
    memcpy(out + o, origin, origin_len);
    o += origin_len;
    out[o++] = '\n';
    memcpy(out + o, size_dec, (size_t)size_len);
    o += (size_t)size_len;
    out[o++] = '\n';
    memcpy(out + o, root_b64, root_len);
    o += root_len;
    out[o++] = '\n';
    for (size_t i = 0; i < n_extensions; i++) {
        memcpy(out + o, extensions[i], ext_len[i]);
        o += ext_len[i];
        out[o++] = '\n';
    }
    out[o] = '\0';
    *ret_text = out;
    *ret_len = len;
    return BASE_OK_RESULT;
}

base_result audit_checkpoint_open(const char *note, size_t note_len,
                                  const audit_note_verifier *const *verifiers, size_t n_verifiers,
                                  const char *expected_origin, audit_checkpoint **ret_checkpoint)
{
    BASE_ENSURE(ret_checkpoint != NULL, BASE_ERR_INVALID, "checkpoint: ret_checkpoint is NULL");
    note_view view;
    BASE_GUARD(note_parse(note, note_len, &view));
    audit_checkpoint *cp = NULL;
    BASE_GUARD(checkpoint_parse(note, view.text_len, &cp));
    base_result r = note_verify(note, &view, verifiers, n_verifiers);
    if (!base_is_ok(r)) {
        audit_checkpoint_free(cp);
        return r;
    }
    if (expected_origin != NULL && strcmp(cp->origin, expected_origin) != 0)
        return checkpoint_fail(cp, BASE_ERR_CRYPTO, "checkpoint: origin is not the expected one");
    *ret_checkpoint = cp;
    return BASE_OK_RESULT;
}

base_result audit_checkpoint_open_vkey(const char *note, size_t note_len, const char *vkey,
                                       const char *expected_origin, audit_checkpoint **ret_checkpoint)
{
    BASE_CLEANUP(audit_note_verifier_freep) audit_note_verifier *verifier = NULL;
    BASE_GUARD(audit_note_verifier_new(vkey, &verifier));
    const audit_note_verifier *list[1] = {verifier};
    return audit_checkpoint_open(note, note_len, list, 1, expected_origin, ret_checkpoint);
}

audit_checkpoint *audit_checkpoint_free(audit_checkpoint *checkpoint)
{
    if (checkpoint == NULL)
        return NULL;
    free(checkpoint->origin);
    if (checkpoint->extensions != NULL)
        for (size_t i = 0; i < checkpoint->n_extensions; i++)
            free(checkpoint->extensions[i]);
    free(checkpoint->extensions);
    free(checkpoint);
    return NULL;
}

void audit_checkpoint_freep(audit_checkpoint **checkpoint)
{
    if (checkpoint != NULL)
        *checkpoint = audit_checkpoint_free(*checkpoint);
}
