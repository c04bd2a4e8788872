/* alma-admin: operator commands that run next to the identity database, not through an API.
 *
 *     alma-admin bootstrap --tenant ID --username NAME [--tenant-kind provider|health-plan]
 *                          [--display-name TEXT] [--password-file FILE]   (+ database and key settings)
 *
 * bootstrap creates the first tenant and its platform administrator — there is deliberately no
 * unauthenticated API for that. The administrator gets a password (read from --password-file, else from
 * standard input) and an enrolled TOTP second factor: the otpauth:// URI to scan and ten one-time recovery
 * codes are printed once. It refuses to run when any tenant already exists, so it cannot be used to
 * mint administrators later. Everything it writes (the tenant, the administrator with its password and
 * roles, the confirmed TOTP secret and the recovery codes) is written in ONE store transaction
 * (identity_store_tenant_create_with_admin), after every secret has been made: it either happens completely
 * or not at all, and a failed run can simply be run again. Settings come from ALMA_<NAME> or --<name> like
 * the services'.
 *
 *     alma-admin rotate-signing-key   (+ --pg-uri, --pg-schema, --master-key-file)
 *
 * rotate-signing-key makes a new Ed25519 token signing key, sealed under the master key exactly as
 * alma-identity seals its keys (services/identity/keys.c, compiled into both), and makes it current in one
 * store transaction: the current key becomes the previous one (still published, so the tokens it signed
 * keep working until they expire) and the previous one is retired (its tokens are refused from then on).
 * Every alma-identity replica signs with the new key within its key-reload-s; every service accepts it at
 * its next key refresh or on the first token that names it. Run it at most once per token lifetime plus a
 * minute, or tokens signed two keys ago are refused before they expire. */
#include "base/config.h"
#include "credentials.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "keys.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRAM       "alma-admin"
#define EXIT_OK       0
#define EXIT_FAIL     1
#define EXIT_USAGE    2
#define PASSWORD_READ 1024

static const char *set_pg_uri, *set_pg_schema, *set_master_key_file, *set_tenant, *set_tenant_kind,
    *set_display_name, *set_username, *set_password_file;
static long set_argon_m_kib, set_argon_t;

static const cfg_setting settings[] = {
    {"pg-uri", CFG_STRING, NULL, &set_pg_uri, 1, 4096,
     "PostgreSQL URI of the identity schema's owner role (ALMA_PG_OWNER_URI of the service)", true},
    {"pg-schema", CFG_STRING, "identity", &set_pg_schema, 1, 63, "schema of the identity tables", false},
    {"master-key-file", CFG_STRING, NULL, &set_master_key_file, 1, 4096,
     "the identity service's master key file (base64 of 32 bytes)", false},
    {"tenant", CFG_STRING, NULL, &set_tenant, 2, 63, "id of the first tenant ([a-z0-9][a-z0-9-]{1,62})",
     false},
    {"tenant-kind", CFG_STRING, "provider", &set_tenant_kind, 1, 16, "provider or health-plan", false},
    {"display-name", CFG_STRING, "Platform", &set_display_name, 1, 200, "the tenant's display name", false},
    {"username", CFG_STRING, NULL, &set_username, 3, 64, "the platform administrator's username", false},
    {"password-file", CFG_STRING, "", &set_password_file, 0, 4096,
     "file holding the administrator's password (empty: read one line from standard input)", false},
    {"argon2-m-kib", CFG_INT, "65536", &set_argon_m_kib, 8, 4194304,
     "argon2id memory (KiB), as the service's", false},
    {"argon2-t", CFG_INT, "3", &set_argon_t, 1, 64, "argon2id passes, as the service's", false},
};

/* The settings of rotate-signing-key: where the keys are and the master key that seals them. */
static const cfg_setting rotate_settings[] = {
    {"pg-uri", CFG_STRING, NULL, &set_pg_uri, 1, 4096,
     "PostgreSQL URI of the identity schema's owner role (ALMA_PG_OWNER_URI of the service)", true},
    {"pg-schema", CFG_STRING, "identity", &set_pg_schema, 1, 63, "schema of the identity tables", false},
    {"master-key-file", CFG_STRING, NULL, &set_master_key_file, 1, 4096,
     "the identity service's master key file (base64 of 32 bytes)", false},
};

static const char *g_command = "bootstrap";

static int fail(const char *what)
{
    fprintf(stderr, PROGRAM ": %s: %s: %s\n", g_command, what, base_error_message());
    return EXIT_FAIL;
}

/* One line (the password) from a file or standard input, without its newline. */
static bool read_password(char out[PASSWORD_READ])
{
    FILE *f = set_password_file[0] ? fopen(set_password_file, "r") : stdin;
    if (!f)
        return false;
    if (f == stdin)
        fprintf(stderr, PROGRAM ": password for the platform administrator (one line): ");
    bool ok = fgets(out, PASSWORD_READ, f) != NULL;
    if (f != stdin)
        fclose(f);
    if (!ok)
        return false;
    size_t n = strcspn(out, "\r\n");
    out[n] = '\0';
    return n > 0;
}

/* "usr_" + 32 random lowercase hex digits: the administrator's id, chosen before anything is written because
 * the TOTP secret is sealed for it. */
static base_result new_principal_id(char out[IDENTITY_ID_MAX + 1])
{
    uint8_t b[16];
    size_t len = 0;
    BASE_GUARD(acrypto_random(b, sizeof b));
    memcpy(out, "usr_", 4);
    return acrypto_hex_encode(b, sizeof b, out + 4, IDENTITY_ID_MAX + 1 - 4, &len);
}

static const char SQL_ANY_TENANT[] = "SELECT count(*) FROM tenants";

static int already_bootstrapped(void)
{
    fprintf(stderr, PROGRAM ": bootstrap: tenants already exist: administrators are created through the "
                            "identity API by an existing administrator\n");
    return EXIT_FAIL;
}

static int bootstrap(void)
{
    identity_tenant_kind kind;
    if (strcmp(set_tenant_kind, "provider") == 0)
        kind = IDENTITY_TENANT_PROVIDER;
    else if (strcmp(set_tenant_kind, "health-plan") == 0)
        kind = IDENTITY_TENANT_HEALTH_PLAN;
    else {
        fprintf(stderr, PROGRAM ": bootstrap: --tenant-kind must be provider or health-plan\n");
        return EXIT_USAGE;
    }
    /* The store's own checks of what it will be given, before anything else. */
    char admin_id[IDENTITY_ID_MAX + 1];
    const char *roles[] = {"platform_admin", "security_admin"};
    identity_principal_new in = {.tenant_id = set_tenant,
                                 .principal_id = admin_id,
                                 .kind = IDENTITY_PRINCIPAL_USER,
                                 .username = set_username,
                                 .display_name = "Platform administrator",
                                 .roles = roles,
                                 .nroles = 2,
                                 .created_by = "system:alma-admin"};
    base_result r = new_principal_id(admin_id);
    if (!base_is_ok(r))
        return fail("choosing the administrator's id");
    if (!base_is_ok(r = identity_store_tenant_check(set_tenant, kind, set_display_name)) ||
        !base_is_ok(r = identity_store_principal_check(&in))) {
        fprintf(stderr, PROGRAM ": bootstrap: %s\n", base_error_message());
        return EXIT_USAGE;
    }
    char password[PASSWORD_READ];
    if (!read_password(password)) {
        fprintf(stderr, PROGRAM ": bootstrap: no password given (--password-file or one line on stdin)\n");
        return EXIT_USAGE;
    }
    r = cred_password_check_policy(password, strlen(password), set_username);
    if (!base_is_ok(r)) {
        acrypto_wipe(password, sizeof password);
        fprintf(stderr, PROGRAM ": bootstrap: %s\n", base_error_message());
        return EXIT_USAGE;
    }
    acrypto_secret *master = NULL, *totp_key = NULL, *pepper = NULL;
    if (!base_is_ok(r = idn_master_key_load(set_master_key_file, &master))) {
        acrypto_wipe(password, sizeof password);
        return fail("master key");
    }
    r = idn_derive_key(master, "alma identity totp-seal v1", &totp_key);
    if (base_is_ok(r))
        r = idn_derive_key(master, "alma identity recovery-pepper v1", &pepper);
    acrypto_secret_free(master);
    if (!base_is_ok(r)) {
        acrypto_wipe(password, sizeof password);
        acrypto_secret_free(totp_key);
        return fail("key derivation");
    }

    db_pool_config pc = db_pool_config_default(set_pg_uri, 2, 5000);
    pc.search_path = set_pg_schema;
    pc.application_name = "alma-admin";
    db_pool *pool = NULL;
    int rc = EXIT_FAIL;
    char enc[CRED_PASSWORD_HASH_MAX];
    acrypto_secret *secret = NULL, *uri = NULL;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    cred_recovery_codes codes;
    memset(&codes, 0, sizeof codes);
    memset(enc, 0, sizeof enc);
    if (!base_is_ok(r = db_pool_create_config(&pc, &pool))) {
        rc = fail("database settings");
        goto out;
    }
    if (!base_is_ok(r = identity_store_migrate(pool, set_pg_schema))) {
        rc = fail("migrations");
        goto out;
    }
    {
        /* A friendly early refusal; the transaction below decides (first_tenant). */
        db_conn *c = NULL;
        db_result *res = NULL;
        int64_t tenants = -1;
        r = db_pool_acquire(pool, 5000, &c);
        if (base_is_ok(r))
            r = db_exec(c, SQL_ANY_TENANT, 0, NULL, &res);
        if (base_is_ok(r))
            r = db_result_get_int64(res, 0, 0, &tenants);
        db_result_free(res);
        db_conn_release(c);
        if (!base_is_ok(r)) {
            rc = fail("database");
            goto out;
        }
        if (tenants != 0) {
            rc = already_bootstrapped();
            goto out;
        }
    }
    /* Every secret first: password hash, TOTP secret sealed for the administrator, recovery codes. */
    cred_argon2_params ap = {.m_kib = (uint32_t)set_argon_m_kib, .t = (uint32_t)set_argon_t, .p = 1};
    unsigned char hmacs[CRED_RECOVERY_COUNT][IDENTITY_RECOVERY_HMAC_LEN];
    r = cred_password_hash(&ap, password, strlen(password), enc);
    if (base_is_ok(r))
        r = cred_totp_secret_new(&secret);
    if (base_is_ok(r))
        r = cred_totp_seal(totp_key, set_tenant, admin_id, secret, &sealed, &sealed_len);
    if (base_is_ok(r))
        r = cred_recovery_generate(pepper, &codes);
    for (size_t i = 0; base_is_ok(r) && i < CRED_RECOVERY_COUNT; i++) {
        size_t len = 0;
        r = acrypto_hex_decode(codes.stored[i], CRED_RECOVERY_HASH_HEX, hmacs[i], sizeof hmacs[i], &len);
    }
    if (base_is_ok(r))
        r = cred_totp_uri(secret, set_tenant, set_username, &uri);
    if (!base_is_ok(r)) {
        rc = fail("preparing the administrator's credentials");
        goto out;
    }
    /* Then one transaction: all of it, or nothing. */
    in.password_encoded = enc;
    identity_tenant_new tn = {.tenant_id = set_tenant,
                              .kind = kind,
                              .display_name = set_display_name,
                              .mfa_required_for_all = false,
                              .first_tenant = true};
    identity_admin_totp totp = {.sealed = sealed,
                                .sealed_len = sealed_len,
                                .codes = (const unsigned char(*)[IDENTITY_RECOVERY_HMAC_LEN])hmacs,
                                .ncodes = CRED_RECOVERY_COUNT};
    identity_tenant t;
    identity_principal p;
    r = identity_store_tenant_create_with_admin(pool, &tn, &in, &totp, &t, &p);
    acrypto_wipe(hmacs, sizeof hmacs);
    if (r.err == BASE_ERR_CONFLICT) {
        rc = already_bootstrapped();
        goto out;
    }
    if (!base_is_ok(r)) {
        rc = fail("creating the tenant and administrator (nothing was written)");
        goto out;
    }
    printf("tenant:         %s\n", t.tenant_id);
    printf("administrator:  %s (%s), roles platform_admin, security_admin\n", set_username, p.principal_id);
    printf("TOTP (scan or paste into an authenticator; shown once):\n  %s\n",
           (const char *)acrypto_secret_bytes(uri));
    printf("recovery codes (each works once; shown once: store them offline):\n");
    for (size_t i = 0; i < CRED_RECOVERY_COUNT; i++)
        printf("  %s\n", codes.display[i]);
    rc = EXIT_OK;
out:
    acrypto_wipe(password, sizeof password);
    acrypto_wipe(enc, sizeof enc);
    cred_recovery_codes_wipe(&codes);
    acrypto_secret_free(secret);
    acrypto_secret_free(uri);
    acrypto_secret_free(totp_key);
    acrypto_secret_free(pepper);
    free(sealed);
    db_pool_destroy(pool);
    return rc;
}

/* rotate-signing-key: a new current key; current -> previous, previous -> retired, in one transaction. */
static int rotate_signing_key(void)
{
    acrypto_secret *master = NULL, *seal_key = NULL;
    base_result r = idn_master_key_load(set_master_key_file, &master);
    if (!base_is_ok(r))
        return fail("master key");
    r = idn_derive_key(master, IDN_SIGNING_SEAL_INFO, &seal_key);
    acrypto_secret_free(master);
    if (!base_is_ok(r))
        return fail("key derivation");
    db_pool_config pc = db_pool_config_default(set_pg_uri, 1, 5000);
    pc.search_path = set_pg_schema;
    pc.application_name = "alma-admin";
    db_pool *pool = NULL;
    acrypto_ed25519_key *current = NULL, *key = NULL;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    int rc = EXIT_FAIL;
    identity_signing_keys before;
    memset(&before, 0, sizeof before);
    if (!base_is_ok(r = db_pool_create_config(&pc, &pool))) {
        rc = fail("database settings");
        goto out;
    }
    if (!base_is_ok(r = identity_store_signing_keys_list(pool, &before))) {
        rc = fail("reading the signing keys (is --pg-schema the identity service's?)");
        goto out;
    }
    if (before.n == 0 || before.keys[0].state != IDENTITY_KEY_CURRENT) {
        fprintf(stderr,
                PROGRAM ": rotate-signing-key: no current signing key yet: alma-identity makes the first "
                        "one when it first starts\n");
        goto out;
    }
    /* The master key must be the one the service uses, or the service could not open the new key: it would
     * keep signing with the old one, and fail to start. The current key proves which one that is. */
    r = idn_signing_key_open(seal_key, before.keys[0].kid, before.keys[0].sealed_private,
                             before.keys[0].sealed_len, &current);
    if (!base_is_ok(r)) {
        fprintf(stderr,
                PROGRAM ": rotate-signing-key: the current signing key does not open with this master "
                        "key: --master-key-file must be the identity service's; nothing was changed\n");
        goto out;
    }
    char kid[AUTHZ_KID_BUF];
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    if (!base_is_ok(r = idn_signing_key_new(seal_key, &key, kid, &sealed, &sealed_len, pub))) {
        rc = fail("making the new key (nothing was changed)");
        goto out;
    }
    if (!base_is_ok(r = identity_store_signing_key_rotate(pool, kid, sealed, sealed_len, pub))) {
        rc = fail("storing the new key (nothing was changed)");
        goto out;
    }
    printf("current:  %s (new: alma-identity signs with it within its key-reload-s)\n", kid);
    printf("previous: %s (still published: the tokens it signed keep working until they expire)\n",
           before.keys[0].kid);
    if (before.n > 1)
        printf("retired:  %s (no longer published: its tokens are refused)\n", before.keys[1].kid);
    rc = EXIT_OK;
out:
    acrypto_wipe(&before, sizeof before);
    acrypto_ed25519_free(current);
    acrypto_ed25519_free(key);
    free(sealed);
    acrypto_secret_free(seal_key);
    db_pool_destroy(pool);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: " PROGRAM " COMMAND [settings]   (" PROGRAM " COMMAND --help lists them)\n"
                 "  bootstrap            create the first tenant and its platform administrator with TOTP\n"
                 "  rotate-signing-key   make a new token signing key current; the current one stays\n"
                 "                       published as the previous key, the previous one is retired\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    bool rotate = strcmp(argv[1], "rotate-signing-key") == 0;
    if (!rotate && strcmp(argv[1], "bootstrap") != 0) {
        fprintf(stderr, PROGRAM ": unknown command %s (try --help)\n", argv[1]);
        return EXIT_USAGE;
    }
    g_command = argv[1];
    cfg_table t = rotate ? (cfg_table){rotate_settings, BASE_ARRAY_LEN(rotate_settings)}
                         : (cfg_table){settings, BASE_ARRAY_LEN(settings)};
    bool help = false;
    base_result r =
        rotate
            ? cfg_load(&t, 1, argc - 1, argv + 1, PROGRAM " rotate-signing-key",
                       "make a new token signing key current (the current one becomes the previous one, "
                       "still published; the previous one is retired)",
                       stdout, &help)
            : cfg_load(&t, 1, argc - 1, argv + 1, PROGRAM " bootstrap",
                       "create the first tenant and its platform administrator (with TOTP)", stdout, &help);
    if (!base_is_ok(r)) {
        fprintf(stderr, PROGRAM ": %s: %s\n", g_command, base_error_message());
        return EXIT_USAGE;
    }
    if (help)
        return EXIT_OK;
    return rotate ? rotate_signing_key() : bootstrap();
}
