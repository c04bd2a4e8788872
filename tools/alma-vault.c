/* alma-vault-admin: operator commands next to the vault database, for the tenant keys and offboarding.
 * (Built from this file, tools/alma-vault.c; the service binary itself is alma-vault.)
 *
 *     alma-vault-admin status   --tenant ID
 *     alma-vault-admin rotate   --tenant ID
 *     alma-vault-admin rewrap   --tenant ID [--batch N]
 *     alma-vault-admin retire   --tenant ID --min-version N
 *     alma-vault-admin offboard --tenant ID --out DIR --signing-key PEM --confirm-tenant ID [--actor NAME]
 *     (+ --pg-uri, --pg-schema, --master-key: the same settings, and ALMA_* variables, as alma-vault's)
 *
 * A key rotation is three steps. `rotate` makes a new KEK version: every data key wrapped from then on uses
 * it (each alma-vault replica notices at its next put). `rewrap` re-wraps every data key still under an
 * older version, --batch keys per transaction, printing progress to stderr; it can be interrupted (Ctrl-C,
 * a killed pod) at any point and simply run again: a batch commits whole or not at all, and each batch
 * looks afresh for what is left. `retire --min-version N` then destroys the versions below N; it refuses
 * while any data key is still wrapped by one of them. `status` shows the versions and how many data keys
 * each wraps.
 *
 * `offboard` (a tenant leaves): every patient of the tenant is exported as one FHIR R4 Bundle per line
 * into DIR/patients.ndjson (the same Bundle as ExportPatient: services/vault/patient_export.h), then
 * DIR/manifest.json (tenant, patients, bytes, sha256, created_at); both are written to a temporary name,
 * fsynced and renamed, and the directory fsynced. Only then are the tenant's key-encryption keys and index
 * key destroyed (vault_lifecycle_offboard_tenant) and the signed certificate written to
 * DIR/certificate.json. A crash before the keys are destroyed leaves them intact: run it again with a new
 * DIR. A crash after the keys were destroyed but before certificate.json was written: run it again with the
 * same DIR (the one exception to "DIR must be new or empty"), which only finishes the certificate. Once
 * the keys are destroyed nothing of the tenant can be exported any more, and the tool says so.
 *
 * Exit codes: 0 done, 1 failed (the message says why; nothing half-done stays behind), 2 usage. Messages
 * name tenants, record references, counts and files, never a value of a record. */
#include "base/config.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"
#include "lifecycle.h"
#include "patient_export.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM    "alma-vault-admin"
#define EXIT_OK    0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

#define PATIENTS_FILE    "patients.ndjson"
#define MANIFEST_FILE    "manifest.json"
#define CERTIFICATE_FILE "certificate.json"
#define MANIFEST_TYPE    "alma.vault.offboarding-export.v1"
#define LIST_PAGE        1000 /* patient refs per vault_store_list_patients call */
#define PROGRESS_EVERY   100  /* patients between progress lines (and at least one per second) */

static const char *set_pg_uri, *set_pg_schema, *set_schema, *set_master_key, *set_vault_master_key,
    *set_tenant, *set_out, *set_signing_key, *set_confirm_tenant, *set_actor;
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
    {"tenant", CFG_STRING, NULL, &set_tenant, 2, 63, "the tenant to work on", false},
};
static const cfg_setting rewrap_settings[] = {
    {"batch", CFG_INT, "1000", &set_batch, 1, 10000, "data keys re-wrapped per transaction", false},
};
static const cfg_setting retire_settings[] = {
    {"min-version", CFG_INT, NULL, &set_min_version, 2, 2147483647,
     "the oldest KEK version to keep; every older one is destroyed", false},
};
static const cfg_setting offboard_settings[] = {
    {"out", CFG_STRING, NULL, &set_out, 1, 4000,
     "directory for the export and the certificate: must not exist yet, or be empty", false},
    {"signing-key", CFG_STRING, NULL, &set_signing_key, 1, 4096,
     "PEM file with the Ed25519 private key that signs destruction certificates (alma-vault's)", false},
    {"confirm-tenant", CFG_STRING, "", &set_confirm_tenant, 0, 63,
     "the tenant again, on the command line: offboarding cannot be undone", false},
    {"actor", CFG_STRING, "", &set_actor, 0, VAULT_ACTOR_MAX,
     "who offboards, for the certificate (default: unix:<login name>)", false},
};

static const char *g_command = "";

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROGRAM " COMMAND --tenant ID [options]\n"
            "\n"
            "Operator commands for the vault's per-tenant key-encryption keys (KEKs) and offboarding.\n"
            "\n"
            "commands:\n"
            "  status                  KEK versions and how many data keys each still wraps\n"
            "  rotate                  make a new KEK version; new data keys are wrapped with it\n"
            "  rewrap [--batch N]      re-wrap every data key under an older version (resumable)\n"
            "  retire --min-version N  destroy the KEK versions below N (refused while any wraps a key)\n"
            "  offboard --out DIR --signing-key PEM --confirm-tenant ID [--actor NAME]\n"
            "                          export every patient of the tenant as FHIR R4 (NDJSON), then destroy\n"
            "                          the tenant's keys and write the signed certificate (irreversible)\n"
            "\n"
            "Run `" PROGRAM " COMMAND --help` for every setting of a command. Settings also come from\n"
            "ALMA_PG_URI, ALMA_PG_SCHEMA, ALMA_MASTER_KEY (or ALMA_VAULT_MASTER_KEY), ALMA_TENANT.\n"
            "Exit codes: 0 done, 1 failed, 2 usage.\n");
}

/* What `COMMAND --help` prints after the settings. */
static void command_notes(FILE *out)
{
    if (strcmp(g_command, "status") == 0)
        fprintf(out, "\nPrints the tenant's current KEK version, the lowest version still used for\n"
                     "decryption, and how many data keys each version wraps. Changes nothing.\n");
    else if (strcmp(g_command, "rotate") == 0)
        fprintf(out, "\nMakes a new KEK version; data keys made from now on are wrapped with it. Then run\n"
                     "`rewrap`, then `retire --min-version <new version>`.\n");
    else if (strcmp(g_command, "rewrap") == 0)
        fprintf(out, "\nRe-wraps every data key under an older KEK version with the current one, --batch\n"
                     "keys per transaction, with progress on stderr. Safe to interrupt and run again.\n");
    else if (strcmp(g_command, "retire") == 0)
        fprintf(out, "\nDestroys the KEK versions below --min-version; refused while any of them still\n"
                     "wraps a data key (run `rewrap` first).\n");
    else if (strcmp(g_command, "offboard") == 0)
        fprintf(out,
                "\nOffboards the tenant: IRREVERSIBLE. In order:\n"
                "  1. every patient of the tenant is exported as one FHIR R4 Bundle per line into\n"
                "     DIR/" PATIENTS_FILE " (progress on stderr), then DIR/" MANIFEST_FILE "\n"
                "     (tenant, patients, bytes, sha256 of the NDJSON file, created_at); each file is\n"
                "     written under a temporary name, fsynced and renamed. The export holds PHI: the files\n"
                "     are created 0600 (DIR 0700 when the tool creates it); hand them over as the\n"
                "     tenant's contract says.\n"
                "  2. only then the tenant's key-encryption keys and index key are destroyed: nothing\n"
                "     of the tenant can be decrypted any more and new records are refused;\n"
                "  3. the signed certificate (statement, base64 Ed25519 signature, verifier key) is\n"
                "     written to DIR/" CERTIFICATE_FILE " and its id printed.\n"
                "--confirm-tenant must repeat --tenant on the command line. DIR must not exist yet\n"
                "(its parent must) or be empty. Stop the tenant's writes first (disable it in identity):\n"
                "the run stops, destroying nothing, when the tenant's records change during the export.\n"
                "\n"
                "Interrupted before step 2: the keys are intact; run again with a new DIR (the export is\n"
                "redone). Interrupted between steps 2 and 3: run again with the same DIR; it only signs\n"
                "and writes the certificate. After the keys are destroyed nothing can be exported any\n"
                "more: a new run says so, prints the stored certificate's id and writes nothing.\n"
                "\n"
                "Audit: this tool has no service identity, so it does not append to the audit log. The\n"
                "offboarding is an operator action recorded by its signed certificate (stored in the\n"
                "vault's destruction_certificates table and written to DIR). TODO: append an ADMIN\n"
                "event through common/auditclient when given --audit-addr with --tls-cert, --tls-key\n"
                "and --tls-ca (an operator identity the audit service accepts).\n");
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

/* ---- offboard: files ------------------------------------------------------------------------------------
 */

static base_result io_fail(const char *what, const char *name)
{
    return base_fail(BASE_ERR_IO, "%s %s: %s", what, name, strerror(errno));
}

static base_result write_all(int fd, const void *p, size_t n, const char *name)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return io_fail("cannot write", name);
        b += w;
        n -= (size_t)w;
    }
    return BASE_OK_RESULT;
}

/* fsync the file, close it, rename tmp to name inside dirfd (never over an existing file), fsync dirfd. */
static base_result commit_file(int dirfd, int fd, const char *tmp, const char *name)
{
    if (fsync(fd) != 0) {
        base_result r = io_fail("cannot fsync", tmp);
        close(fd);
        return r;
    }
    if (close(fd) != 0)
        return io_fail("cannot close", tmp);
    if (faccessat(dirfd, name, F_OK, 0) == 0)
        return base_fail(BASE_ERR_EXISTS, "%s already exists: nothing is overwritten", name);
    if (renameat(dirfd, tmp, dirfd, name) != 0)
        return io_fail("cannot rename to", name);
    if (fsync(dirfd) != 0)
        return io_fail("cannot fsync the directory after writing", name);
    return BASE_OK_RESULT;
}

static base_result open_tmp(int dirfd, const char *tmp, int *ret_fd)
{
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return io_fail("cannot create", tmp);
    *ret_fd = fd;
    return BASE_OK_RESULT;
}

/* A small file written whole and made durable. */
static base_result write_durable(int dirfd, const char *name, const char *data, size_t len)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    unlinkat(dirfd, tmp, 0); /* a crashed run's; the real name is never replaced */
    int fd = -1;
    BASE_GUARD(open_tmp(dirfd, tmp, &fd));
    base_result r = write_all(fd, data, len, tmp);
    if (!base_is_ok(r)) {
        close(fd);
        unlinkat(dirfd, tmp, 0);
        return r;
    }
    r = commit_file(dirfd, fd, tmp, name);
    if (!base_is_ok(r))
        unlinkat(dirfd, tmp, 0);
    return r;
}

/* JSON text of o (sorted keys, two-space indent, newline at the end); free() it. */
static base_result json_text(json_t *o, char **ret)
{
    char *t = json_dumps(o, JSON_SORT_KEYS | JSON_INDENT(2) | JSON_ENSURE_ASCII);
    if (!t)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    size_t n = strlen(t);
    char *withnl = realloc(t, n + 2);
    if (!withnl) {
        free(t);
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    *ret = withnl;
    return BASE_OK_RESULT;
}

/* RFC 3339 UTC with microseconds. */
static void rfc3339(int64_t us, char out[64])
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 64, "%s.%06dZ", day, (int)(us % 1000000));
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void hex_of(const uint8_t *d, size_t n, char *out)
{
    static const char x[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = x[d[i] >> 4];
        out[2 * i + 1] = x[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The directory's state: 0 absent, 1 exists and empty, 2 exists and not empty; -1 (errno) otherwise. */
static int dir_state(const char *path, bool *ret_has[3])
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    DIR *d = opendir(path);
    if (!d)
        return -1;
    static const char *const names[3] = {PATIENTS_FILE, MANIFEST_FILE, CERTIFICATE_FILE};
    int state = 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        state = 2;
        for (int i = 0; i < 3; i++)
            if (strcmp(e->d_name, names[i]) == 0)
                *ret_has[i] = true;
    }
    closedir(d);
    return state;
}

/* mkdir path 0700, and fsync its parent so the new entry is durable too. */
static bool make_dir(const char *path)
{
    if (mkdir(path, 0700) != 0)
        return false;
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", path);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = fsync(fd) == 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return ok;
}

/* ---- offboard: the database -------------------------------------------------------------------------- */

/* Whether the tenant has keys, whether it was offboarded, and its offboarding certificate (if stored). */
static const char SQL_TENANT_STATE[] =
    "SELECT t.offboarded_at IS NOT NULL, (SELECT c.certificate_id FROM destruction_certificates c "
    "WHERE c.tenant_id = t.tenant_id AND c.patient_ref IS NULL) FROM tenants t WHERE t.tenant_id = $1";
/* The tenant's record versions: the same before the export and before the keys are destroyed, or the
 * tenant was written to meanwhile. */
static const char SQL_TENANT_VERSIONS[] = "SELECT count(*) FROM records WHERE tenant_id = $1";

typedef struct tenant_state {
    bool known, offboarded;
    char certificate_id[VAULT_ID_BUF]; /* "" when none is stored */
} tenant_state;

static base_result read_tenant_state(db_pool *pool, tenant_state *ret)
{
    memset(ret, 0, sizeof *ret);
    BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {set_tenant};
    BASE_GUARD(db_pool_acquire(pool, 10000, &c));
    BASE_GUARD(db_exec(c, SQL_TENANT_STATE, 1, p, &res));
    if (db_result_ntuples(res) == 0)
        return BASE_OK_RESULT;
    ret->known = true;
    ret->offboarded = strcmp(db_result_get(res, 0, 0), "t") == 0;
    if (!db_result_is_null(res, 0, 1))
        snprintf(ret->certificate_id, sizeof ret->certificate_id, "%s", db_result_get(res, 0, 1));
    return BASE_OK_RESULT;
}

static base_result tenant_versions(db_pool *pool, int64_t *ret)
{
    BASE_CLEANUP(db_conn_releasep) db_conn *c = NULL;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {set_tenant};
    BASE_GUARD(db_pool_acquire(pool, 10000, &c));
    BASE_GUARD(db_exec(c, SQL_TENANT_VERSIONS, 1, p, &res));
    return db_result_get_int64(res, 0, 0, ret);
}

/* ---- offboard: the export ---------------------------------------------------------------------------- */

typedef struct export_summary {
    size_t patients;
    uint64_t bytes;
    char sha256_hex[2 * ACRYPTO_SHA256_LEN + 1];
    int64_t created_us;
} export_summary;

static base_result count_patients(vault_store *s, char (*refs)[VAULT_ID_BUF], size_t *ret)
{
    size_t total = 0;
    char after[VAULT_ID_BUF] = "";
    for (;;) {
        size_t n = 0;
        BASE_GUARD(vault_store_list_patients(s, set_tenant, after, refs, LIST_PAGE, &n));
        total += n;
        if (n < LIST_PAGE)
            break;
        snprintf(after, sizeof after, "%s", refs[n - 1]);
    }
    *ret = total;
    return BASE_OK_RESULT;
}

/* Every patient's Bundle, one per line, into fd; hashes and counts what it writes. */
static base_result export_patients(vault_store *s, int fd, const char *tmp, char (*refs)[VAULT_ID_BUF],
                                   size_t total, export_summary *sum)
{
    acrypto_sha256_ctx *h = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&h));
    base_result r = acrypto_sha256_init(h);
    char after[VAULT_ID_BUF] = "";
    double last = now_s();
    fprintf(stderr, "offboard: 0/%zu patients exported\n", total);
    while (base_is_ok(r)) {
        size_t n = 0;
        r = vault_store_list_patients(s, set_tenant, after, refs, LIST_PAGE, &n);
        for (size_t i = 0; i < n && base_is_ok(r); i++) {
            char bundle_id[VAULT_ID_BUF];
            vault_random_id("ex_", bundle_id);
            char *json = NULL;
            size_t len = 0;
            r = vault_patient_bundle(s, set_tenant, refs[i], sum->created_us, bundle_id, &json, &len, NULL,
                                     NULL, NULL);
            if (!base_is_ok(r)) {
                r = base_fail(r.err, "patient %s (%zu of %zu): %s", refs[i], sum->patients + 1, total,
                              base_error_message());
                break;
            }
            json[len] = '\n'; /* in place of the NUL: the line as written */
            r = write_all(fd, json, len + 1, tmp);
            if (base_is_ok(r))
                r = acrypto_sha256_update(h, json, len + 1);
            acrypto_wipe(json, len + 1);
            free(json);
            if (!base_is_ok(r))
                break;
            sum->patients++;
            sum->bytes += len + 1;
            double t = now_s();
            if (sum->patients % PROGRESS_EVERY == 0 || t - last >= 1.0) {
                fprintf(stderr, "offboard: %zu/%zu patients exported\n", sum->patients, total);
                last = t;
            }
        }
        if (!base_is_ok(r) || n < LIST_PAGE)
            break;
        snprintf(after, sizeof after, "%s", refs[n - 1]);
    }
    uint8_t digest[ACRYPTO_SHA256_LEN];
    if (base_is_ok(r))
        r = acrypto_sha256_final(h, digest);
    acrypto_sha256_ctx_free(h);
    if (!base_is_ok(r))
        return r;
    hex_of(digest, sizeof digest, sum->sha256_hex);
    if (sum->patients != total)
        return base_fail(BASE_ERR_CONFLICT,
                         "the tenant's patients changed during the export (%zu listed, %zu exported): stop "
                         "its writes and run again with a new directory",
                         total, sum->patients);
    fprintf(stderr, "offboard: %zu/%zu patients exported\n", sum->patients, total);
    return BASE_OK_RESULT;
}

static base_result write_manifest(int dirfd, const export_summary *sum)
{
    char created[64];
    rfc3339(sum->created_us, created);
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= json_object_set_new(o, "type", json_string(MANIFEST_TYPE));
        bad |= json_object_set_new(o, "tenant", json_string(set_tenant));
        bad |= json_object_set_new(o, "patients", json_integer((json_int_t)sum->patients));
        bad |= json_object_set_new(o, "bytes", json_integer((json_int_t)sum->bytes));
        bad |= json_object_set_new(o, "sha256", json_string(sum->sha256_hex));
        bad |= json_object_set_new(o, "created_at", json_string(created));
        bad |= json_object_set_new(o, "file", json_string(PATIENTS_FILE));
        bad |=
            json_object_set_new(o, "format", json_string("application/fhir+ndjson; FHIR R4 Bundle per line"));
    }
    char *text = NULL;
    base_result r = bad ? base_fail(BASE_ERR_NOMEM, "out of memory") : json_text(o, &text);
    json_decref(o);
    if (base_is_ok(r))
        r = write_durable(dirfd, MANIFEST_FILE, text, strlen(text));
    free(text);
    return r;
}

/* The SHA-256 (hex) and size of a file in dirfd. */
static base_result hash_file(int dirfd, const char *name, char hex[2 * ACRYPTO_SHA256_LEN + 1],
                             uint64_t *ret_bytes)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return io_fail("cannot open", name);
    acrypto_sha256_ctx *h = NULL;
    base_result r = acrypto_sha256_ctx_new(&h);
    if (base_is_ok(r))
        r = acrypto_sha256_init(h);
    static uint8_t buf[1 << 16];
    uint64_t bytes = 0;
    while (base_is_ok(r)) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            r = io_fail("cannot read", name);
        if (n <= 0)
            break;
        bytes += (uint64_t)n;
        r = acrypto_sha256_update(h, buf, (size_t)n);
    }
    acrypto_wipe(buf, sizeof buf);
    close(fd);
    uint8_t digest[ACRYPTO_SHA256_LEN];
    if (base_is_ok(r))
        r = acrypto_sha256_final(h, digest);
    acrypto_sha256_ctx_free(h);
    if (!base_is_ok(r))
        return r;
    hex_of(digest, sizeof digest, hex);
    *ret_bytes = bytes;
    return BASE_OK_RESULT;
}

/* An earlier run's export in dirfd, checked: the manifest names this tenant and the file's hash and size. */
static base_result read_export(int dirfd, export_summary *ret)
{
    int fd = openat(dirfd, MANIFEST_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return io_fail("cannot open", MANIFEST_FILE);
    json_error_t err;
    json_t *o = json_loadfd(fd, 0, &err);
    close(fd);
    if (!o)
        return base_fail(BASE_ERR_INVALID, MANIFEST_FILE " is not JSON (line %d)", err.line);
    const char *tenant = json_string_value(json_object_get(o, "tenant"));
    const char *sha = json_string_value(json_object_get(o, "sha256"));
    json_t *patients = json_object_get(o, "patients"), *bytes = json_object_get(o, "bytes");
    base_result r = BASE_OK_RESULT;
    if (!tenant || strcmp(tenant, set_tenant) != 0)
        r = base_fail(BASE_ERR_INVALID, MANIFEST_FILE " is not an export of tenant %s", set_tenant);
    else if (!sha || strlen(sha) != 2 * ACRYPTO_SHA256_LEN || !json_is_integer(patients) ||
             json_integer_value(patients) < 0 || json_integer_value(patients) > UINT32_MAX ||
             !json_is_integer(bytes))
        r = base_fail(BASE_ERR_INVALID, MANIFEST_FILE " lacks sha256, patients or bytes");
    export_summary sum = {0};
    if (base_is_ok(r)) {
        r = hash_file(dirfd, PATIENTS_FILE, sum.sha256_hex, &sum.bytes);
        if (base_is_ok(r) &&
            (strcmp(sum.sha256_hex, sha) != 0 || sum.bytes != (uint64_t)json_integer_value(bytes)))
            r = base_fail(BASE_ERR_CRYPTO,
                          PATIENTS_FILE " does not match the sha256 and bytes of " MANIFEST_FILE);
        sum.patients = (size_t)json_integer_value(patients);
    }
    json_decref(o);
    if (base_is_ok(r))
        *ret = sum;
    return r;
}

/* ---- offboard: the certificate ------------------------------------------------------------------------ */

static base_result write_certificate(int dirfd, const vault_certificate *cert)
{
    char sig[128]; /* base64 of 64 bytes: 88 characters */
    size_t sig_len = 0;
    BASE_GUARD(acrypto_base64_encode(cert->signature, sizeof cert->signature, sig, sizeof sig, &sig_len));
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= json_object_set_new(o, "certificate_id", json_string(cert->certificate_id));
        bad |= json_object_set_new(o, "statement", json_stringn(cert->statement, cert->statement_len));
        bad |= json_object_set_new(o, "signature", json_stringn(sig, sig_len));
        bad |= json_object_set_new(o, "verifier_key", json_string(cert->verifier_key));
    }
    char *text = NULL;
    base_result r = bad ? base_fail(BASE_ERR_NOMEM, "out of memory") : json_text(o, &text);
    json_decref(o);
    if (base_is_ok(r))
        r = write_durable(dirfd, CERTIFICATE_FILE, text, strlen(text));
    free(text);
    return r;
}

/* The export a certificate names (its statement's export_sha256). */
static bool certificate_names(const vault_certificate *cert, const char *sha256_hex)
{
    json_error_t err;
    json_t *o = json_loadb(cert->statement, cert->statement_len, 0, &err);
    const char *sha = o ? json_string_value(json_object_get(o, "export_sha256")) : NULL;
    bool same = sha && strcmp(sha, sha256_hex) == 0;
    json_decref(o);
    return same;
}

static void default_actor(char out[VAULT_ACTOR_MAX + 1])
{
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &res) == 0 && res && res->pw_name[0])
        snprintf(out, VAULT_ACTOR_MAX + 1, "unix:%s", res->pw_name);
    else
        snprintf(out, VAULT_ACTOR_MAX + 1, "unix:uid-%u", (unsigned)geteuid());
}

/* Destroy the keys (or get the stored certificate) for the export `sum`, and write certificate.json. */
static int certify(vault_store *s, db_pool *pool, const acrypto_ed25519_key *signer, int dirfd,
                   const export_summary *sum)
{
    char actor[VAULT_ACTOR_MAX + 1];
    if (set_actor[0])
        snprintf(actor, sizeof actor, "%s", set_actor);
    else
        default_actor(actor);
    vault_certificate cert;
    memset(&cert, 0, sizeof cert);
    base_result r = vault_lifecycle_offboard_tenant(s, pool, signer, set_tenant, actor, sum->sha256_hex,
                                                    (uint32_t)sum->patients, &cert);
    if (!base_is_ok(r)) {
        fprintf(stderr,
                PROGRAM ": offboard: destroying the keys of tenant %s failed: %s\n"
                        "the export in %s is complete; run again with the same --out to finish (if the keys "
                        "are still intact, a new directory also works)\n",
                set_tenant, base_error_message(), set_out);
        return EXIT_FAIL;
    }
    if (!certificate_names(&cert, sum->sha256_hex)) {
        fprintf(stderr,
                PROGRAM ": offboard: tenant %s is offboarded with certificate %s, which names another export "
                        "than the one in %s: use the directory of the run that destroyed the keys\n",
                set_tenant, cert.certificate_id, set_out);
        vault_certificate_clear(&cert);
        return EXIT_FAIL;
    }
    r = write_certificate(dirfd, &cert);
    if (!base_is_ok(r)) {
        fprintf(stderr,
                PROGRAM ": offboard: the keys of tenant %s are destroyed (certificate %s is stored in the "
                        "vault) but %s could not be written: %s; run again with the same --out\n",
                set_tenant, cert.certificate_id, CERTIFICATE_FILE, base_error_message());
        vault_certificate_clear(&cert);
        return EXIT_FAIL;
    }
    printf("offboard: tenant %s offboarded: %zu patients exported to %s/" PATIENTS_FILE
           " (sha256 %s); keys destroyed, %" PRIu32 " records (%" PRIu32 " versions) unreadable\n",
           set_tenant, sum->patients, set_out, sum->sha256_hex, cert.records, cert.versions);
    printf("certificate: %s (%s/" CERTIFICATE_FILE ")\n", cert.certificate_id, set_out);
    vault_certificate_clear(&cert);
    return EXIT_OK;
}

/* The confirmation must be typed on the command line (an ALMA_CONFIRM_TENANT left in the environment does
 * not count). */
static bool confirm_on_command_line(int argc, char **argv)
{
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--confirm-tenant") == 0 || strncmp(argv[i], "--confirm-tenant=", 17) == 0)
            return true;
    return false;
}

/* Checks that need neither the database nor the keys; EXIT_OK when the run may go on. */
static int offboard_precheck(int argc, char **argv)
{
    if (!confirm_on_command_line(argc, argv) || strcmp(set_confirm_tenant, set_tenant) != 0) {
        fprintf(stderr,
                PROGRAM ": offboard: refused: --confirm-tenant must repeat --tenant (%s) on the command "
                        "line; offboarding destroys the tenant's keys and cannot be undone\n",
                set_tenant);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int run_offboard(vault_store *s, db_pool *pool)
{
    bool has_patients = false, has_manifest = false, has_cert = false;
    bool *has[3] = {&has_patients, &has_manifest, &has_cert};
    int state = dir_state(set_out, has);
    if (state < 0) {
        fprintf(stderr, PROGRAM ": offboard: --out %s: %s\n", set_out, strerror(errno));
        return EXIT_FAIL;
    }
    tenant_state ts;
    if (!base_is_ok(read_tenant_state(pool, &ts)))
        return fail("reading the tenant's state (nothing was changed)");
    if (!ts.known) {
        fprintf(stderr,
                PROGRAM ": offboard: tenant %s has no vault keys (no record was ever written for it): "
                        "nothing to offboard\n",
                set_tenant);
        return EXIT_FAIL;
    }
    /* The one case a non-empty directory is taken: the keys are destroyed and this directory holds the
     * complete export of that run, but no certificate yet. */
    bool finishing = ts.offboarded && state == 2 && has_patients && has_manifest && !has_cert;
    if (ts.offboarded && !finishing) {
        fprintf(stderr,
                PROGRAM ": offboard: tenant %s was already offboarded: its keys are destroyed, so nothing of "
                        "it can be exported any more (nothing was written to %s)\n",
                set_tenant, set_out);
        if (ts.certificate_id[0])
            printf("certificate: %s (stored in the vault)\n", ts.certificate_id);
        else
            fprintf(stderr,
                    PROGRAM ": offboard: no certificate is stored yet: run again with the --out of the "
                            "run that destroyed the keys to sign it\n");
        return EXIT_FAIL;
    }
    if (state == 2 && !finishing) {
        fprintf(stderr,
                PROGRAM ": offboard: refused: %s is not empty; give a new or empty directory (nothing was "
                        "exported or destroyed)\n",
                set_out);
        return EXIT_FAIL;
    }

    acrypto_ed25519_key *signer = NULL;
    if (!base_is_ok(acrypto_ed25519_private_from_pem_file(set_signing_key, &signer)))
        return fail("cannot load the certificate signing key (--signing-key; nothing was changed)");

    if (state == 0 && !make_dir(set_out)) {
        fprintf(stderr, PROGRAM ": offboard: cannot create %s: %s (its parent must exist)\n", set_out,
                strerror(errno));
        acrypto_ed25519_free(signer);
        return EXIT_FAIL;
    }
    int dirfd = open(set_out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        fprintf(stderr, PROGRAM ": offboard: cannot open %s: %s\n", set_out, strerror(errno));
        acrypto_ed25519_free(signer);
        return EXIT_FAIL;
    }
    int rc = EXIT_FAIL;
    export_summary sum = {0};
    char(*refs)[VAULT_ID_BUF] = NULL;
    if (finishing) {
        if (!base_is_ok(read_export(dirfd, &sum))) {
            rc = fail("the export in --out cannot be used to finish the offboarding");
            goto out;
        }
        fprintf(stderr,
                "offboard: tenant %s: keys already destroyed; finishing the certificate for the export in "
                "%s\n",
                set_tenant, set_out);
        rc = certify(s, pool, signer, dirfd, &sum);
        goto out;
    }

    /* 1. The export. */
    refs = calloc(LIST_PAGE, VAULT_ID_BUF);
    if (!refs) {
        fprintf(stderr, PROGRAM ": offboard: out of memory\n");
        goto out;
    }
    int64_t versions_before = 0, versions_after = 0;
    size_t total = 0;
    base_result r = tenant_versions(pool, &versions_before);
    if (base_is_ok(r))
        r = count_patients(s, refs, &total);
    if (base_is_ok(r) && total > UINT32_MAX)
        r = base_fail(BASE_ERR_LIMIT, "more patients than a certificate can count");
    if (!base_is_ok(r)) {
        rc = fail("listing the tenant's patients (nothing was destroyed)");
        goto out;
    }
    sum.created_us = wall_us();
    static const char tmp[] = PATIENTS_FILE ".tmp";
    int fd = -1;
    r = open_tmp(dirfd, tmp, &fd);
    if (base_is_ok(r)) {
        r = export_patients(s, fd, tmp, refs, total, &sum);
        if (base_is_ok(r))
            r = commit_file(dirfd, fd, tmp, PATIENTS_FILE);
        else
            close(fd);
        if (!base_is_ok(r))
            unlinkat(dirfd, tmp, 0);
    }
    if (base_is_ok(r))
        r = write_manifest(dirfd, &sum);
    if (base_is_ok(r))
        r = tenant_versions(pool, &versions_after);
    if (base_is_ok(r) && versions_after != versions_before)
        r = base_fail(BASE_ERR_CONFLICT,
                      "the tenant's records changed during the export (%" PRId64 " versions before, %" PRId64
                      " after): stop its writes and run again with a new directory",
                      versions_before, versions_after);
    if (!base_is_ok(r)) {
        rc = fail("exporting (nothing was destroyed; the keys are intact)");
        goto out;
    }
    fprintf(stderr, "offboard: export complete and durable: %zu patients, %" PRIu64 " bytes, sha256 %s\n",
            sum.patients, sum.bytes, sum.sha256_hex);

    /* 2 and 3. The keys, the certificate. */
    rc = certify(s, pool, signer, dirfd, &sum);
out:
    free(refs);
    close(dirfd);
    acrypto_ed25519_free(signer);
    return rc;
}

/* ---- the commands ------------------------------------------------------------------------------------- */

static int run_command(vault_store *s, db_pool *pool)
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
    if (strcmp(g_command, "offboard") == 0)
        return run_offboard(s, pool);
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
    const char *summary = "operator commands for the vault's KEKs";
    if (strcmp(g_command, "rewrap") == 0)
        tables[ntables++] = (cfg_table){rewrap_settings, BASE_ARRAY_LEN(rewrap_settings)};
    else if (strcmp(g_command, "retire") == 0)
        tables[ntables++] = (cfg_table){retire_settings, BASE_ARRAY_LEN(retire_settings)};
    else if (strcmp(g_command, "offboard") == 0) {
        tables[ntables++] = (cfg_table){offboard_settings, BASE_ARRAY_LEN(offboard_settings)};
        summary = "export every patient of a tenant, then destroy its keys (irreversible)";
    } else if (strcmp(g_command, "status") != 0 && strcmp(g_command, "rotate") != 0) {
        fprintf(stderr, PROGRAM ": unknown command %s (try --help)\n", g_command);
        return EXIT_USAGE;
    }
    char prog[64];
    snprintf(prog, sizeof prog, PROGRAM " %s", g_command);
    bool help = false;
    base_result r = cfg_load(tables, ntables, argc - 1, argv + 1, prog, summary, NULL, &help);
    if (!base_is_ok(r)) {
        fprintf(stderr, PROGRAM ": %s\n", base_error_message());
        return EXIT_USAGE;
    }
    if (help) {
        command_notes(stdout);
        return EXIT_OK;
    }
    const char *spec = set_master_key[0] ? set_master_key : set_vault_master_key;
    if (!spec[0]) {
        fprintf(stderr, PROGRAM ": %s: --master-key (ALMA_MASTER_KEY or ALMA_VAULT_MASTER_KEY) is required\n",
                g_command);
        return EXIT_USAGE;
    }
    if (strcmp(g_command, "offboard") == 0) {
        int rc = offboard_precheck(argc, argv);
        if (rc != EXIT_OK)
            return rc;
    }
    const char *schema = set_schema[0] ? set_schema : set_pg_schema;

    vault_keyprovider *kp = NULL;
    if (!base_is_ok(r = vault_keyprovider_open(spec, &kp)))
        return fail("master key");
    db_pool_config pc = db_pool_config_default(set_pg_uri, 2, 5000);
    pc.search_path = schema;
    pc.application_name = PROGRAM;
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
    rc = run_command(s, pool);
out:
    vault_store_close(s);
    db_pool_destroy(pool);
    vault_keyprovider_free(kp);
    return rc;
}
