/* The identity service's credentials (§164.312(d) person or entity authentication): argon2id passwords, TOTP
 * second factor (RFC 6238), one-time recovery codes, and TOTP secrets sealed at rest. No RPC, no Postgres:
 * the service (service.c) stores what these functions produce and passes it back in.
 *
 * Passwords. argon2id (RFC 9106) through libargon2, stored as the standard encoded string
 *
 *     $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<base64 salt>$<base64 hash>     (base64 without padding)
 *
 * so the parameters are recorded with each hash and can be raised later: cred_password_verify() reports
 * needs_rehash when any recorded parameter (or the salt or hash length) is below the current ones, and the
 * service then stores a new hash of the password it has just verified. Verification compares in constant
 * time (argon2id_verify). A stored string is parsed strictly before it reaches libargon2, within bounds
 * (CRED_ARGON2_MAX_*), so a damaged row cannot make a login allocate gigabytes; a malformed one is
 * BASE_ERR_INTERNAL (a data problem to log), a wrong password BASE_ERR_UNAUTH. Both must reach the client
 * as the same UNAUTHENTICATED "invalid credentials". For a user that does not exist the service calls
 * cred_password_verify_unknown(), which costs the same time as a real verification and always fails, so the
 * response time does not tell whether a username exists.
 *
 * TOTP. HMAC-SHA1, 6 digits, 30 s steps from the epoch (the only combination every authenticator app
 * supports), through liboath's oath_totp_generate. A code is accepted for the current step or one step
 * either side (clock drift), compared in constant time against all three candidates, and only for a step
 * later than the last one accepted for that user: the caller stores the step returned and passes it back,
 * so a code (or an earlier one) cannot be used twice. liboath's oath_totp_validate*() are not used: they
 * compare with strcmp and stop at the first match.
 *
 * Recovery codes. CRED_RECOVERY_COUNT codes of 10 base32 characters (50 bits each) shown once as
 * "xxxxx-xxxxx", stored as lowercase hex HMAC-SHA-256(pepper, normalised code): the normalised code is the
 * input without '-' and spaces, in upper case. The pepper is a secret key of the service, kept out of the
 * database, so a copy of the database alone does not allow testing guesses. Verification compares against
 * every stored hash in constant time and returns the index that matched; the caller marks that code used
 * (removes it from the set it passes next time): each code works once.
 *
 * Sealed TOTP secrets. AES-256-GCM (acrypto) under a 32-byte key the service loads from its key file, with
 * associated data "alma-identity-totp|<tenant>|<principal>": a sealed secret copied to another principal's
 * or tenant's row does not open.
 *
 * Conventions (common/base/result.h): fallible functions are BASE_MUST_USE; ret_* outputs are written only
 * on success; messages never contain a password, a code, a secret or a username. Secrets are returned as
 * acrypto_secret (wiped when freed); anything secret copied to a local buffer is wiped before returning.
 * Passwords are byte strings with an explicit length (binary-safe). All functions are thread-safe. */
#ifndef ALMA_IDENTITY_CREDENTIALS_H
#define ALMA_IDENTITY_CREDENTIALS_H

#include "base/result.h"
#include "crypto/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------------------------------
 * Passwords. */

#define CRED_PASSWORD_MIN_BYTES 12  /* policy: at least this many bytes */
#define CRED_PASSWORD_MAX_BYTES 256 /* policy, and the longest password verify accepts */
#define CRED_SALT_LEN           16  /* bytes of random salt per hash */
#define CRED_HASH_LEN           32  /* bytes of argon2id output */
/* Room for any encoded string this module writes or accepts, the NUL included. */
#define CRED_PASSWORD_HASH_MAX 192

/* Production parameters: 64 MiB and 3 passes as in RFC 9106 §4's memory-constrained option, but one lane
 * (that option has 4), so a verification occupies one core. */
#define CRED_ARGON2_DEFAULT_M_KIB 65536
#define CRED_ARGON2_DEFAULT_T     3
#define CRED_ARGON2_DEFAULT_P     1
/* Bounds on parameters read from a stored hash or given for hashing (BASE_ERR_INTERNAL / BASE_ERR_INVALID
 * above them): a tampered row must not make a login allocate or compute without limit. */
#define CRED_ARGON2_MAX_M_KIB (4u * 1024 * 1024) /* 4 GiB */
#define CRED_ARGON2_MAX_T     64
#define CRED_ARGON2_MAX_P     64

typedef struct cred_argon2_params {
    uint32_t m_kib; /* memory in KiB; at least 8 * p (libargon2's minimum) */
    uint32_t t;     /* passes, >= 1 */
    uint32_t p;     /* lanes (and threads), >= 1 */
} cred_argon2_params;

/* {65536, 3, 1}. Tests use small parameters (e.g. {64, 1, 1}) to stay fast. */
cred_argon2_params cred_argon2_default(void);

/* The password policy for a new password (CreateUser, SetPassword, bootstrap):
 *   - CRED_PASSWORD_MIN_BYTES .. CRED_PASSWORD_MAX_BYTES bytes;
 *   - well-formed UTF-8 without U+0000;
 *   - not one character (code point) repeated;
 *   - not the username (compared ignoring ASCII case); username may be NULL.
 * BASE_ERR_INVALID with a message naming the rule (never the password or the username); BASE_OK otherwise. */
BASE_MUST_USE base_result cred_password_check_policy(const char *password, size_t password_len,
                                                     const char *username);

/* Hash a password with a fresh CSPRNG salt. ret_encoded receives the NUL-terminated encoded string. The
 * policy is not checked here (check it first for new passwords). BASE_ERR_INVALID for parameters libargon2
 * refuses or above the bounds, or a password over CRED_PASSWORD_MAX_BYTES. */
BASE_MUST_USE base_result cred_password_hash(const cred_argon2_params *params, const char *password,
                                             size_t password_len, char ret_encoded[CRED_PASSWORD_HASH_MAX]);

/* Verify a password against a stored encoded string, in constant time. BASE_OK when it matches, and then
 * *ret_needs_rehash (may be NULL) says whether the hash should be replaced (cred_password_needs_rehash).
 * BASE_ERR_UNAUTH when it does not match (or the password is longer than CRED_PASSWORD_MAX_BYTES);
 * BASE_ERR_INTERNAL when the stored string is malformed or outside the bounds; BASE_ERR_NOMEM. */
BASE_MUST_USE base_result cred_password_verify(const cred_argon2_params *current, const char *encoded,
                                               const char *password, size_t password_len,
                                               bool *ret_needs_rehash);

/* For a login whose user does not exist (or has no password): the same work as cred_password_verify with
 * the current parameters, then BASE_ERR_UNAUTH with the same message. Never returns BASE_OK. */
BASE_MUST_USE base_result cred_password_verify_unknown(const cred_argon2_params *current,
                                                       const char *password, size_t password_len);

/* The parameters recorded in a stored encoded string (strict parse; BASE_ERR_INTERNAL when malformed). */
BASE_MUST_USE base_result cred_password_params(const char *encoded, cred_argon2_params *ret_params);

/* Whether a stored hash is weaker than `current`: any of m, t or p below it, or a salt or hash shorter than
 * CRED_SALT_LEN / CRED_HASH_LEN. BASE_ERR_INTERNAL when the string is malformed. */
BASE_MUST_USE base_result cred_password_needs_rehash(const cred_argon2_params *current, const char *encoded,
                                                     bool *ret_needs_rehash);

/* ---------------------------------------------------------------------------------------------------------
 * TOTP (RFC 6238). */

#define CRED_TOTP_SECRET_LEN 20 /* bytes: RFC 4226 §4 recommends 160 bits for HMAC-SHA1 */
#define CRED_TOTP_DIGITS     6
#define CRED_TOTP_PERIOD     30 /* seconds */
#define CRED_TOTP_WINDOW     1  /* steps accepted either side of the current one */
#define CRED_TOTP_CODE_MAX   8  /* digits cred_totp_code can produce (liboath supports 6, 7, 8) */
/* Longest tenant id or username accepted in an otpauth URI label or sealing associated data. */
#define CRED_NAME_MAX 128

/* A fresh CRED_TOTP_SECRET_LEN-byte secret from the CSPRNG. */
BASE_MUST_USE base_result cred_totp_secret_new(acrypto_secret **ret_secret);

/* The enrolment URI (shown as a QR code; it contains the secret, hence returned as a secret, NUL-terminated):
 *
 *   otpauth://totp/Alma:<tenant>:<username>?secret=<BASE32>&issuer=Alma&algorithm=SHA1&digits=6&period=30
 *
 * tenant and username (1..CRED_NAME_MAX bytes) are percent-encoded (RFC 3986: everything but ALPHA, DIGIT
 * and "-._~", so '@' is %40 and ':' is %3A); the secret (16..64 bytes) is RFC 4648 base32, upper case,
 * without '=' padding. */
BASE_MUST_USE base_result cred_totp_uri(const acrypto_secret *secret, const char *tenant,
                                        const char *username, acrypto_secret **ret_uri);

/* The code for the step containing `now` (seconds since the epoch, >= 0), `digits` 6..8 (NUL-terminated):
 * for tests, the bootstrap tool and RFC 6238's published vectors (which use 8 digits). */
BASE_MUST_USE base_result cred_totp_code(const acrypto_secret *secret, int64_t now, unsigned digits,
                                         char ret_code[CRED_TOTP_CODE_MAX + 1]);

/* Verify a CRED_TOTP_DIGITS-digit code at `now` (>= 0) against the steps now/30 - 1 .. now/30 + 1.
 * last_step is the step accepted last for this user (0 if none); a code only counts for a step greater than
 * last_step. BASE_OK: *ret_step is the step it matched (the latest, if several did), which the caller stores
 * as the new last_step before answering. BASE_ERR_UNAUTH when it matches no step, is not exactly 6 ASCII
 * digits, or matches only steps <= last_step (message "one-time code already used"). BASE_ERR_INVALID for
 * a NULL, empty or over-long secret or a negative now or last_step. */
BASE_MUST_USE base_result cred_totp_verify(const acrypto_secret *secret, const char *code, int64_t now,
                                           int64_t last_step, int64_t *ret_step);

/* Seal a TOTP secret for storage: AES-256-GCM under `key` (exactly 32 bytes) with associated data
 * "alma-identity-totp|<tenant>|<principal>". tenant and principal: 1..CRED_NAME_MAX bytes without '|'.
 * *ret_sealed (malloc'd, free()) holds nonce | ciphertext | tag (acrypto_gcm_seal's layout). */
BASE_MUST_USE base_result cred_totp_seal(const acrypto_secret *key, const char *tenant, const char *principal,
                                         const acrypto_secret *totp_secret, uint8_t **ret_sealed,
                                         size_t *ret_sealed_len);
/* Open what cred_totp_seal produced for the same tenant and principal. BASE_ERR_CRYPTO (one message) for a
 * wrong key, another tenant or principal, or any change to the sealed bytes. */
BASE_MUST_USE base_result cred_totp_open(const acrypto_secret *key, const char *tenant, const char *principal,
                                         const void *sealed, size_t sealed_len,
                                         acrypto_secret **ret_totp_secret);

/* ---------------------------------------------------------------------------------------------------------
 * Recovery codes. */

#define CRED_RECOVERY_COUNT       10
#define CRED_RECOVERY_CHARS       10 /* base32 characters per code (50 bits) */
#define CRED_RECOVERY_DISPLAY_LEN 11 /* "xxxxx-xxxxx" */
#define CRED_RECOVERY_HASH_HEX    64 /* hex characters of a stored hash */
#define CRED_RECOVERY_INPUT_MAX   64 /* longest input verify looks at (dashes and spaces included) */

/* One set, as generated. `display` is secret: show it once, then cred_recovery_codes_wipe(). */
typedef struct cred_recovery_codes {
    char display[CRED_RECOVERY_COUNT][CRED_RECOVERY_DISPLAY_LEN + 1]; /* "xxxxx-xxxxx", lower case */
    char stored[CRED_RECOVERY_COUNT][CRED_RECOVERY_HASH_HEX + 1]; /* lowercase hex HMAC, for the database */
} cred_recovery_codes;

/* A fresh set from the CSPRNG, hashed under `pepper` (a non-empty secret key). */
BASE_MUST_USE base_result cred_recovery_generate(const acrypto_secret *pepper,
                                                 cred_recovery_codes *ret_codes);

/* Wipe a set (all of it). Accepts NULL. */
void cred_recovery_codes_wipe(cred_recovery_codes *codes);

/* The stored hash (lowercase hex, NUL-terminated) of a code as the user typed it (case, '-' and spaces
 * ignored). BASE_ERR_UNAUTH when it is not 10 base32 characters after normalising. */
BASE_MUST_USE base_result cred_recovery_hash(const acrypto_secret *pepper, const char *code, size_t code_len,
                                             char ret_hex[CRED_RECOVERY_HASH_HEX + 1]);

/* Check a typed code against the stored hashes of a user's unused codes. stored[i] may be NULL (a slot
 * whose code was used); entries that are not CRED_RECOVERY_HASH_HEX characters never match. Every entry is
 * compared, in constant time. BASE_OK: *ret_index is the entry that matched, which the caller must mark used
 * in the same transaction that lets the login through. BASE_ERR_UNAUTH otherwise (also for input that is
 * not a code at all). */
BASE_MUST_USE base_result cred_recovery_verify(const acrypto_secret *pepper, const char *code,
                                               size_t code_len, const char *const *stored, size_t count,
                                               size_t *ret_index);

#endif
