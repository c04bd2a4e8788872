/* Signed checkpoints of the audit log: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 only.
 *
 * Specifications (the behaviour below follows them; where they leave a choice, the choice is named):
 *   - signed note:  https://c2sp.org/signed-note (C2SP/C2SP signed-note.md) and its reference implementation
 *                   golang.org/x/mod/sumdb/note (note.go), which also defines the verifier key ("vkey") text;
 *   - checkpoint:   https://c2sp.org/tlog-checkpoint (C2SP/C2SP tlog-checkpoint.md).
 *
 * A signed note is
 *
 *     <text, one or more lines, each ending in \n>
 *     \n
 *     — <key name> <base64(4-byte key ID, big-endian ‖ signature)>\n      (one or more lines; "—" is U+2014)
 *
 * and a checkpoint is a note whose text is
 *
 *     <origin>\n<tree size in decimal>\n<base64 of the 32-byte root hash>\n[<extension line>\n ...]
 *
 * For Ed25519 (signature type 0x01) the key ID is SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4],
 * and a verifier key is written "<name>+<8 hex digits of the key ID>+<base64(0x01 ‖ public key)>".
 *
 * Reading a note is strict, and checks all of its syntax before any signature:
 *   - at most AUDIT_NOTE_MAX_LEN bytes and AUDIT_NOTE_MAX_SIGS signature lines;
 *   - valid UTF-8 (no overlong forms, surrogates or code points above U+10FFFF); no control character
 *     below U+0020 but newline (so no NUL, no CR: CRLF line ends are refused);
 *   - the text ends in \n and is split from the signatures at the last blank line; every signature line
 *     ends in \n; key names are non-empty, without Unicode spaces or '+'; signatures are strict base64 of at
 *     least 5 bytes;
 *   - a checkpoint has at least three lines, none empty; the size is decimal without leading zeros ("0"
 *     alone is allowed) and fits in 64 bits; the root is strict base64 of exactly 32 bytes.
 * Any of these failing is BASE_ERR_INVALID: a note is well-formed within the limits, or it is not.
 *
 * Then the signatures: a line is from a known key when both its key name and its key ID match a verifier
 * (name or ID alone is not enough, as the spec requires). Lines from unknown keys are ignored. Every line
 * from a known key is verified, and one that fails rejects the whole note; a note with no line from a known
 * key is rejected too. Both are BASE_ERR_CRYPTO. Two verifiers with the same name and key ID that both match
 * a line are a configuration error (BASE_ERR_INVALID), as in the Go package.
 *
 * Conventions (common/base/result.h): fallible functions are BASE_MUST_USE; ret_* outputs are written only
 * on success; returned strings are malloc'd, NUL-terminated, and freed by the caller with free(); messages
 * name the rule that failed, never the data. Verifier objects are immutable and may be shared by threads. */
#ifndef ALMA_AUDIT_CHECKPOINT_H
#define ALMA_AUDIT_CHECKPOINT_H

#include "base/result.h"
#include "crypto/crypto.h"

#include <stddef.h>
#include <stdint.h>

/* Largest signed note read or written, signatures included (1 MiB). */
#define AUDIT_NOTE_MAX_LEN ((size_t)1 << 20)
/* Most signature lines in a note (the Go package's limit; the spec asks for at least 16). */
#define AUDIT_NOTE_MAX_SIGS 100
/* Longest key name accepted in a verifier key or for signing, in bytes. Signature lines of other keys may
 * carry longer names: they are unknown keys, and the note length bounds them. */
#define AUDIT_NOTE_KEY_NAME_MAX 255
/* Longest verifier key text: name, '+', 8 hex digits, '+', base64 of 33 bytes. */
#define AUDIT_NOTE_VKEY_MAX (AUDIT_NOTE_KEY_NAME_MAX + 1 + 8 + 1 + 44)

/* The checkpoint body. */
#define AUDIT_CHECKPOINT_ROOT_LEN       32
#define AUDIT_CHECKPOINT_ORIGIN_MAX     255  /* bytes of the origin line, without its \n */
#define AUDIT_CHECKPOINT_EXTENSION_MAX  1024 /* bytes of one extension line, without its \n */
#define AUDIT_CHECKPOINT_MAX_EXTENSIONS 16

/* ---------------------------------------------------------------------------------------------------------
 * Verifier keys. */

/* The key ID of an Ed25519 key under `name` (a valid key name, see above). */
BASE_MUST_USE base_result audit_note_key_id(const char *name, const uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN],
                                            uint32_t *ret_key_id);

/* The verifier key text "<name>+<key ID in lowercase hex>+<base64(0x01 ‖ pub)>" for an Ed25519 public key. */
BASE_MUST_USE base_result audit_note_vkey_format(const char *name,
                                                 const uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN],
                                                 char **ret_vkey, size_t *ret_len);

typedef struct audit_note_verifier audit_note_verifier;

/* Parse a verifier key (NUL-terminated, at most AUDIT_NOTE_VKEY_MAX bytes). Bad syntax, a name that breaks
 * the name rules, hex other than 8 digits, bad base64, a signature type other than Ed25519 or a key of the
 * wrong length are BASE_ERR_INVALID; a key ID that is not the one computed from the name and key is
 * BASE_ERR_CRYPTO (the key was altered, or is not the one its ID names). */
BASE_MUST_USE base_result audit_note_verifier_new(const char *vkey, audit_note_verifier **ret_verifier);
/* Accepts NULL; returns NULL. */
audit_note_verifier *audit_note_verifier_free(audit_note_verifier *verifier);
void audit_note_verifier_freep(audit_note_verifier **verifier);
/* The key name (NUL-terminated, owned by the verifier) and key ID. */
const char *audit_note_verifier_name(const audit_note_verifier *verifier);
uint32_t audit_note_verifier_key_id(const audit_note_verifier *verifier);

/* ---------------------------------------------------------------------------------------------------------
 * Signed notes. */

/* Sign `text` (non-empty, ending in \n, valid UTF-8 without control characters other than \n) with an
 * Ed25519 key that has its private part, under `key_name`: ret_note is the text, a blank line and one
 * signature line. The result is at most AUDIT_NOTE_MAX_LEN bytes, or BASE_ERR_INVALID. */
BASE_MUST_USE base_result audit_note_sign(const char *text, size_t text_len, const char *key_name,
                                          const acrypto_ed25519_key *key, char **ret_note, size_t *ret_len);

/* Check the syntax of `note` and its signatures against `verifiers` (n_verifiers may be 0: the note is then
 * rejected). On success the verified text is the first *ret_text_len bytes of `note` (it ends in \n). */
BASE_MUST_USE base_result audit_note_open(const char *note, size_t note_len,
                                          const audit_note_verifier *const *verifiers, size_t n_verifiers,
                                          size_t *ret_text_len);

/* ---------------------------------------------------------------------------------------------------------
 * Checkpoints. */

typedef struct audit_checkpoint {
    char *origin; /* NUL-terminated; never contains \n */
    uint64_t size;
    uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN];
    char **extensions; /* n_extensions NUL-terminated lines, without their \n; NULL when there are none */
    size_t n_extensions;
} audit_checkpoint;

/* The checkpoint text for (origin, size, root, extension lines). The origin and each extension line must be
 * non-empty, at most AUDIT_CHECKPOINT_ORIGIN_MAX / AUDIT_CHECKPOINT_EXTENSION_MAX bytes, valid UTF-8 without
 * control characters; there are at most AUDIT_CHECKPOINT_MAX_EXTENSIONS of them (extensions may be NULL
 * when n_extensions is 0). The spec's advice that an origin be a schema-less URL without spaces or '+' is a
 * SHOULD, so such origins are accepted (the Go checksum database's origin is "go.sum database tree"). Sign
 * the result with audit_note_sign(), normally under a key name equal to the origin. */
BASE_MUST_USE base_result audit_checkpoint_format(const char *origin, uint64_t size,
                                                  const uint8_t root[AUDIT_CHECKPOINT_ROOT_LEN],
                                                  const char *const *extensions, size_t n_extensions,
                                                  char **ret_text, size_t *ret_len);

/* Parse and verify a signed checkpoint. When expected_origin is not NULL the origin must equal it, or the
 * result is BASE_ERR_CRYPTO: a checkpoint of another log signed by the same key is not the one asked for.
 * On success *ret_checkpoint is a new checkpoint for audit_checkpoint_free(). */
BASE_MUST_USE base_result audit_checkpoint_open(const char *note, size_t note_len,
                                                const audit_note_verifier *const *verifiers,
                                                size_t n_verifiers, const char *expected_origin,
                                                audit_checkpoint **ret_checkpoint);

/* The same with one verifier key given as text (parsed as audit_note_verifier_new() does). */
BASE_MUST_USE base_result audit_checkpoint_open_vkey(const char *note, size_t note_len, const char *vkey,
                                                     const char *expected_origin,
                                                     audit_checkpoint **ret_checkpoint);

/* Accepts NULL; returns NULL. */
audit_checkpoint *audit_checkpoint_free(audit_checkpoint *checkpoint);
void audit_checkpoint_freep(audit_checkpoint **checkpoint);

#endif
