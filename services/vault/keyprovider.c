/* The vault's master-key providers (keyprovider.h). The local providers ("file:", "env:", "mem") hold the
 * 32-byte master key in a wiped secret and wrap with AES-256-GCM under a key HKDF-derived from it; a KMS or
 * PKCS#11 provider would be one more vault_keyprovider_ops whose wrap/unwrap call out instead. */
#include "keyprovider.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MASTER_KEY_LEN 32
#define KEY_TEXT_MAX   1024 /* a key file or variable longer than this is refused */
#define WRAP_KEY_MAX   64
#define ENV_NAME_MAX   128
#define ID_INFO        "alma vault master-key id v1"
#define ID_HEX_DIGITS  16
#define SPEC_MAX       4096

struct vault_keyprovider {
    const vault_keyprovider_ops *ops;
    void *state;
    char id[VAULT_KP_ID_MAX + 1];
};

/* ---- the local master key ------------------------------------------------------------------------------ */

typedef struct local_state {
    acrypto_secret *wrap_key; /* HKDF(master, VAULT_KP_WRAP_INFO): the master key itself is not kept */
} local_state;

static base_result local_wrap(void *state, const void *ad, size_t ad_len, const acrypto_secret *key,
                              uint8_t **ret_wrapped, size_t *ret_len)
{
    local_state *st = state;
    return acrypto_gcm_seal_alloc(st->wrap_key, ad, ad_len, acrypto_secret_bytes(key),
                                  acrypto_secret_len(key), ret_wrapped, ret_len);
}

static base_result local_unwrap(void *state, const void *ad, size_t ad_len, const uint8_t *wrapped,
                                size_t len, acrypto_secret **ret_key)
{
    local_state *st = state;
    base_result r = acrypto_gcm_open_secret(st->wrap_key, ad, ad_len, wrapped, len, ret_key);
    if (!base_is_ok(r))
        return base_fail(BASE_ERR_CRYPTO, "vault key provider: a wrapped key failed its integrity check");
    return r;
}

static void local_free(void *state)
{
    local_state *st = state;
    if (!st)
        return;
    acrypto_secret_free(st->wrap_key);
    free(st);
}

static const vault_keyprovider_ops file_ops = {"file", local_wrap, local_unwrap, local_free};
static const vault_keyprovider_ops env_ops = {"env", local_wrap, local_unwrap, local_free};
static const vault_keyprovider_ops mem_ops = {"mem", local_wrap, local_unwrap, local_free};

/* A provider over the 32-byte master key: the wrap key and the id are derived, the master is not kept. */
static base_result local_open(const vault_keyprovider_ops *ops, const acrypto_secret *master,
                              vault_keyprovider **ret)
{
    BASE_ENSURE(master && acrypto_secret_len(master) == MASTER_KEY_LEN, BASE_ERR_INVALID,
                "vault key provider: the master key must be exactly 32 bytes");
    uint8_t mac[ACRYPTO_HMAC_SHA256_LEN];
    char hex[2 * ACRYPTO_HMAC_SHA256_LEN + 1];
    size_t hex_len = 0;
    BASE_GUARD(acrypto_hmac_sha256(master, ID_INFO, strlen(ID_INFO), mac));
    base_result r = acrypto_hex_encode(mac, ID_HEX_DIGITS / 2, hex, sizeof hex, &hex_len);
    acrypto_wipe(mac, sizeof mac);
    BASE_GUARD(r);
    local_state *st = calloc(1, sizeof *st);
    vault_keyprovider *p = calloc(1, sizeof *p);
    if (!st || !p) {
        free(st);
        free(p);
        return base_fail(BASE_ERR_NOMEM, "vault key provider: out of memory");
    }
    r = acrypto_hkdf_sha256_secret(master, NULL, 0, VAULT_KP_WRAP_INFO, strlen(VAULT_KP_WRAP_INFO),
                                   ACRYPTO_AES256_KEY_LEN, &st->wrap_key);
    if (!base_is_ok(r)) {
        free(st);
        free(p);
        return r;
    }
    int n = snprintf(p->id, sizeof p->id, "%s:%s", ops->scheme, hex);
    if (n <= 0 || (size_t)n >= sizeof p->id) {
        local_free(st);
        free(p);
        return base_fail(BASE_ERR_INTERNAL, "vault key provider: id too long");
    }
    p->ops = ops;
    p->state = st;
    *ret = p;
    return BASE_OK_RESULT;
}

/* The key text: base64 of 32 bytes, or 64 hex digits (either case), trailing whitespace ignored. */
static base_result parse_key_text(const char *text, size_t n, const char *where, acrypto_secret **ret)
{
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    uint8_t key[KEY_TEXT_MAX];
    char lower[2 * MASTER_KEY_LEN];
    size_t len = 0;
    bool ok = false;
    if (n == 2 * MASTER_KEY_LEN) {
        bool hex = true;
        for (size_t i = 0; i < n; i++) {
            char c = text[i];
            if (c >= 'A' && c <= 'F')
                c = (char)(c - 'A' + 'a');
            hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
            lower[i] = c;
        }
        ok = hex && base_is_ok(acrypto_hex_decode(lower, n, key, sizeof key, &len)) && len == MASTER_KEY_LEN;
    }
    if (!ok)
        ok = base_is_ok(acrypto_base64_decode(text, n, key, sizeof key, &len)) && len == MASTER_KEY_LEN;
    base_result r =
        ok ? acrypto_secret_from_bytes(key, MASTER_KEY_LEN, ret)
           : base_fail(BASE_ERR_INVALID,
                       "vault master key (%s) must be the base64 or 64 hex digits of exactly 32 bytes",
                       where);
    acrypto_wipe(key, sizeof key);
    acrypto_wipe(lower, sizeof lower);
    return r;
}

static base_result read_key_file(const char *path, acrypto_secret **ret)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return base_fail(BASE_ERR_IO, "cannot read the vault master key file");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return base_fail(BASE_ERR_IO, "the vault master key file is not a readable regular file");
    }
    /* Group read is allowed: a Kubernetes Secret volume reaches a non-root container only through its fsGroup
     * (defaultMode 0440). Anything for others, or group write, is refused. */
    if (st.st_mode & 027) {
        close(fd);
        return base_fail(BASE_ERR_DENIED,
                         "the vault master key file is writable by its group or open to others (chmod 400)");
    }
    char text[KEY_TEXT_MAX + 1];
    size_t n = 0;
    base_result r = BASE_OK_RESULT;
    while (n <= KEY_TEXT_MAX) {
        ssize_t got = read(fd, text + n, KEY_TEXT_MAX + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = base_fail(BASE_ERR_IO, "cannot read the vault master key file");
            break;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (base_is_ok(r) && n > KEY_TEXT_MAX)
        r = base_fail(BASE_ERR_INVALID, "the vault master key file is too long");
    if (base_is_ok(r))
        r = parse_key_text(text, n, "file", ret);
    acrypto_wipe(text, sizeof text);
    return r;
}

static bool valid_env_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > ENV_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static base_result read_key_env(const char *name, acrypto_secret **ret)
{
    BASE_ENSURE(valid_env_name(name), BASE_ERR_INVALID,
                "vault master key spec: env:NAME needs a variable name [A-Z_][A-Z0-9_]*");
    /* The env: provider is configuration loading: it reads the one variable the operator named. */
    const char *v =
        getenv(name); /* alma-allow-banned: the env: key provider reads the variable it is given */
    if (!v)
        return base_fail(BASE_ERR_IO, "vault master key: the named environment variable is not set");
    size_t n = strnlen(v, KEY_TEXT_MAX + 1);
    BASE_ENSURE(n <= KEY_TEXT_MAX, BASE_ERR_INVALID,
                "vault master key: the environment variable is too long");
    return parse_key_text(v, n, "environment", ret);
}

/* ---- the interface ------------------------------------------------------------------------------------- */

base_result vault_keyprovider_open(const char *spec, vault_keyprovider **ret)
{
    BASE_ENSURE(spec && ret, BASE_ERR_INVALID, "vault master key spec: missing");
    BASE_ENSURE(strnlen(spec, SPEC_MAX + 1) <= SPEC_MAX, BASE_ERR_INVALID, "vault master key spec: too long");
    acrypto_secret *master = NULL;
    const vault_keyprovider_ops *ops = NULL;
    if (strncmp(spec, "file:", 5) == 0 && spec[5]) {
        ops = &file_ops;
        BASE_GUARD(read_key_file(spec + 5, &master));
    } else if (strncmp(spec, "env:", 4) == 0) {
        ops = &env_ops;
        BASE_GUARD(read_key_env(spec + 4, &master));
    } else {
        return base_fail(BASE_ERR_INVALID, "vault master key spec: expected file:<path> or env:<NAME>");
    }
    base_result r = local_open(ops, master, ret);
    acrypto_secret_free(master);
    return r;
}

base_result vault_keyprovider_from_secret(const acrypto_secret *master, vault_keyprovider **ret)
{
    BASE_ENSURE(master && ret, BASE_ERR_INVALID, "vault key provider: master key missing");
    return local_open(&mem_ops, master, ret);
}

const char *vault_keyprovider_id(const vault_keyprovider *p)
{
    return p ? p->id : "";
}

base_result vault_keyprovider_wrap(vault_keyprovider *p, const void *ad, size_t ad_len,
                                   const acrypto_secret *key, uint8_t **ret_wrapped, size_t *ret_len)
{
    BASE_ENSURE(p && key && ret_wrapped && ret_len, BASE_ERR_INVALID,
                "vault key provider: wrap: missing argument");
    size_t n = acrypto_secret_len(key);
    BASE_ENSURE(n >= 1 && n <= WRAP_KEY_MAX, BASE_ERR_INVALID,
                "vault key provider: a key to wrap is 1..64 bytes");
    return p->ops->wrap(p->state, ad, ad_len, key, ret_wrapped, ret_len);
}

base_result vault_keyprovider_unwrap(vault_keyprovider *p, const void *ad, size_t ad_len,
                                     const uint8_t *wrapped, size_t len, acrypto_secret **ret_key)
{
    BASE_ENSURE(p && ret_key, BASE_ERR_INVALID, "vault key provider: unwrap: missing argument");
    if (!wrapped || len < 1 + ACRYPTO_GCM_OVERHEAD || len > WRAP_KEY_MAX + ACRYPTO_GCM_OVERHEAD)
        return base_fail(BASE_ERR_CRYPTO, "vault key provider: a wrapped key failed its integrity check");
    return p->ops->unwrap(p->state, ad, ad_len, wrapped, len, ret_key);
}

void vault_keyprovider_free(vault_keyprovider *p)
{
    if (!p)
        return;
    p->ops->free(p->state);
    acrypto_wipe(p, sizeof *p);
    free(p);
}
