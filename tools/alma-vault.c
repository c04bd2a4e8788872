/* alma-vault-keys: operator commands for the vault's tenant keys, next to the vault database.
 *
 *     alma-vault-keys status  --tenant ID
 *     alma-vault-keys rotate  --tenant ID
 *     alma-vault-keys rewrap  --tenant ID [--batch N]
 *     alma-vault-keys retire  --tenant ID --min-version N
 *     (+ --pg-uri, --pg-schema, --master-key: the same settings, and ALMA_* variables, as alma-vault's)
 *
 * A key rotation is three steps. `rotate` makes a new KEK version: every data key wrapped from then on uses
 * it (each alma-vault replica notices at its next put). `rewrap` re-wraps every data key still under an
 * older version, --batch keys per transaction, printing progress to stderr; it can be interrupted (Ctrl-C,
 * a killed pod) at any point and simply run again: a batch commits whole or not at all, and each batch
 * looks afresh for what is left. `retire --min-version N` then destroys the versions below N; it refuses
 * while any data key is still wrapped by one of them. `status` shows the versions and how many data keys
 * each wraps. The binary is named alma-vault-keys because alma-vault is the service.
 *
 * Exit codes: 0 done, 1 failed (the message says why; nothing half-done stays behind), 2 usage. */
#include "base/config.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"
#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRAM    "alma-vault-keys"
#define EXIT_OK    0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

static const char *set_pg_uri, *set_pg_schema, *set_schema, *set_master_key, *set_vault_master_key,
    *set_tenant;
static long set_batch, set_min_version;

static const cfg_setting common_settings[] = {
    {"pg-uri", CFG_STRING, NULL, &set_pg_uri, 1, 4096,
     "PostgreSQL URI of the vault's runtime (or owner) role", true},
    {"pg-schema", CFG_STRING, "vault", &set_pg_schema, 1, 63, "schema of the vault tables", false},
    {"schema", CFG_STRING, "", &set_schema, 0, 63, "the same as --pg-schema (wins when set)", false},
    {"master-key", CFG_STRING, "", &set_master_key, 0, 4096,
     "the vault's master key provider: file:<path> or env:<VARIABLE> (as alma-vault's)", true},
    {"vault-master-key", CFG_STRING, "", &set_vault_master_key, 0, 4096,
     "the same as --master-key (used when --master-key is empty)", true},
    {"tenant", CFG_STRING, NULL, &set_tenant, 2, 63, "the tenant whose keys to work on", false},
};
static const cfg_setting rewrap_settings[] = {
    {"batch", CFG_INT, "1000", &set_batch, 1, 10000, "data keys re-wrapped per transaction", false},
};
static const cfg_setting retire_settings[] = {
    {"min-version", CFG_INT, NULL, &set_min_version, 2, 2147483647,
     "the oldest KEK version to keep; every older one is destroyed", false},
};

static const char *g_command = "";

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROGRAM " COMMAND --tenant ID [options]\n"
            "\n"
            "Operator commands for the vault's per-tenant key-encryption keys (KEKs).\n"
            "\n"
            "commands:\n"
            "  status                  KEK versions and how many data keys each still wraps\n"
            "  rotate                  make a new KEK version; new data keys are wrapped with it\n"
            "  rewrap [--batch N]      re-wrap every data key under an older version (resumable)\n"
            "  retire --min-version N  destroy the KEK versions below N (refused while any wraps a key)\n"
            "\n"
            "Run `" PROGRAM " COMMAND --help` for every setting of a command. Settings also come from\n"
            "ALMA_PG_URI, ALMA_PG_SCHEMA, ALMA_MASTER_KEY (or ALMA_VAULT_MASTER_KEY), ALMA_TENANT.\n"
            "Exit codes: 0 done, 1 failed, 2 usage.\n");
}

static int fail(const char *what)
{
    fprintf(stderr, PROGRAM ": %s: %s: %s\n", g_command, what, base_error_message());
    return EXIT_FAIL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_status(const vault_key_status *st)
{
    printf("tenant:               %s\n", set_tenant);
    printf("current version:      %" PRIu32 "\n", st->current_version);
    printf("min decrypt version:  %" PRIu32 "\n", st->min_decrypt_version);
    if (st->count == 0)
        printf("data keys:            none\n");
    for (size_t i = 0; i < st->count; i++)
        printf("data keys under v%-4" PRIu32 " %" PRIu64 "\n", st->wrapped[i].version,
               st->wrapped[i].data_keys);
}

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
    (void)arg;
    unsigned pct = total ? (unsigned)(done * 100 / total) : 100;
    fprintf(stderr, "rewrap: %" PRIu64 "/%" PRIu64 " data keys (%u%%)\n", done, total, pct);
}

static int run_command(vault_store *s)
{
    base_result r;
    vault_key_status st;
    if (strcmp(g_command, "status") == 0) {
        if (!base_is_ok(r = vault_store_key_status(s, set_tenant, &st)))
            return fail("reading the key status");
        print_status(&st);
        return EXIT_OK;
    }
    if (strcmp(g_command, "rotate") == 0) {
        uint32_t v = 0;
        if (!base_is_ok(r = vault_store_rotate(s, set_tenant, &v)))
            return fail("making a new KEK version (nothing was changed)");
        printf("rotate: tenant %s now wraps new data keys with KEK version %" PRIu32 "\n", set_tenant, v);
        printf("next: " PROGRAM " rewrap --tenant %s, then " PROGRAM
               " retire --tenant %s --min-version %" PRIu32 "\n",
               set_tenant, set_tenant, v);
        return EXIT_OK;
    }
    if (strcmp(g_command, "rewrap") == 0) {
        if (!base_is_ok(r = vault_store_key_status(s, set_tenant, &st)))
            return fail("reading the key status");
        double t0 = now_s();
        uint64_t done = 0;
        r = vault_store_rewrap(s, set_tenant, (size_t)set_batch, on_progress, NULL, &done);
        double dt = now_s() - t0;
        if (!base_is_ok(r)) {
            fprintf(stderr,
                    PROGRAM ": rewrap: stopped after %" PRIu64
                            " data keys (every finished batch is kept; run it "
                            "again to continue): %s\n",
                    done, base_error_message());
            return EXIT_FAIL;
        }
        printf("rewrap: %" PRIu64 " data keys of tenant %s re-wrapped with KEK version %" PRIu32 " in %.1f s "
               "(%.0f keys/s)\n",
               done, set_tenant, st.current_version, dt, dt > 0 ? (double)done / dt : 0.0);
        return EXIT_OK;
    }
    if (strcmp(g_command, "retire") == 0) {
        r = vault_store_retire(s, set_tenant, (uint32_t)set_min_version);
        if (r.err == BASE_ERR_CONFLICT) {
            fprintf(stderr, PROGRAM ": retire: %s (nothing was destroyed)\n", base_error_message());
            return EXIT_FAIL;
        }
        if (!base_is_ok(r))
            return fail("retiring (nothing was destroyed)");
        printf("retire: KEK versions below %ld of tenant %s are destroyed\n", set_min_version, set_tenant);
        return EXIT_OK;
    }
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    g_command = argv[1];
    cfg_table tables[2] = {{common_settings, BASE_ARRAY_LEN(common_settings)}, {NULL, 0}};
    size_t ntables = 1;
    if (strcmp(g_command, "rewrap") == 0)
        tables[ntables++] = (cfg_table){rewrap_settings, BASE_ARRAY_LEN(rewrap_settings)};
    else if (strcmp(g_command, "retire") == 0)
        tables[ntables++] = (cfg_table){retire_settings, BASE_ARRAY_LEN(retire_settings)};
    else if (strcmp(g_command, "status") != 0 && strcmp(g_command, "rotate") != 0) {
        fprintf(stderr, PROGRAM ": unknown command %s (try --help)\n", g_command);
        return EXIT_USAGE;
    }
    char prog[64];
    snprintf(prog, sizeof prog, PROGRAM " %s", g_command);
    bool help = false;
    base_result r = cfg_load(tables, ntables, argc - 1, argv + 1, prog,
                             "operator commands for the vault's KEKs", NULL, &help);
    if (!base_is_ok(r)) {
        fprintf(stderr, PROGRAM ": %s\n", base_error_message());
        return EXIT_USAGE;
    }
    if (help)
        return EXIT_OK;
    const char *spec = set_master_key[0] ? set_master_key : set_vault_master_key;
    if (!spec[0]) {
        fprintf(stderr, PROGRAM ": %s: --master-key (ALMA_MASTER_KEY or ALMA_VAULT_MASTER_KEY) is required\n",
                g_command);
        return EXIT_USAGE;
    }
    const char *schema = set_schema[0] ? set_schema : set_pg_schema;

    vault_keyprovider *kp = NULL;
    if (!base_is_ok(r = vault_keyprovider_open(spec, &kp)))
        return fail("master key");
    db_pool_config pc = db_pool_config_default(set_pg_uri, 2, 5000);
    pc.search_path = schema;
    pc.application_name = "alma-vault-keys";
    pc.statement_timeout_ms = 0; /* a big batch on a slow disk is not an error */
    db_pool *pool = NULL;
    vault_store *s = NULL;
    int rc = EXIT_FAIL;
    if (!base_is_ok(r = db_pool_create_config(&pc, &pool))) {
        rc = fail("database settings");
        goto out;
    }
    if (!base_is_ok(r = vault_store_open(pool, kp, &s))) {
        rc = fail("opening the store");
        goto out;
    }
    rc = run_command(s);
out:
    vault_store_close(s);
    db_pool_destroy(pool);
    vault_keyprovider_free(kp);
    return rc;
}
