/* alma-vault-admin offboard end to end, against the real PostgreSQL of the "pg" fixture, run as production
 * runs it: the schema migrated by an owner role, the tool connected as a least-privilege runtime role, the
 * master key in a file, the certificate key in a PEM file. Two tenants hold synthetic patients made from
 * real protobuf messages (model.h packs them), so the export unpacks and builds real Bundles.
 *
 *   refusals    no --confirm-tenant, a different one, a non-empty --out, an unknown tenant: nothing is
 *               exported or destroyed;
 *   offboard    one valid Bundle per patient in patients.ndjson, the manifest's sha256 matches the file,
 *               certificate.json verifies and names the export; afterwards the tenant cannot be read or
 *               written, the other tenant still decrypts; running again fails cleanly, writes nothing;
 *   finish      keys destroyed after a complete export but before the certificate (a crash in between):
 *               the run with the same directory signs and writes the certificate; a directory whose file
 *               does not match its manifest is refused. */
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"
#include "lifecycle.h"
#include "model.h"
#include "patient_export.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"
#include "testproc.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MUST(expr)                                                                                           \
    do {                                                                                                     \
        base_result must_r__ = (expr);                                                                       \
        if (!base_is_ok(must_r__))                                                                           \
            fail_msg("%s failed: %s: %s", #expr, base_err_name(must_r__.err), base_error_message());         \
    } while (0)
#define EXPECT_ERR(expr, want)                                                                               \
    do {                                                                                                     \
        base_result exp_r__ = (expr);                                                                        \
        if (exp_r__.err != (want))                                                                           \
            fail_msg("%s: got %s (%s), want %s", #expr, base_err_name(exp_r__.err), base_error_message(),    \
                     base_err_name(want));                                                                   \
    } while (0)

#define ACTOR    "usr_0123456789abcdef0123456789abcdef"
#define PW       "vault-offboard-test-pw"
#define TENANT   "acme-clinic"
#define OTHER    "other-clinic"
#define PATIENTS 3

static char g_uri[512], g_port[16], g_prefix[40], g_owner[64], g_runtime[64];
static int g_nschema;
static db_pool *g_root; /* superuser, no search_path */

/* ---- fixture ------------------------------------------------------------------------------------------- */

typedef struct fx {
    char schema[64];
    char rt_conninfo[256];
    db_pool *rt;   /* runtime role */
    db_pool *root; /* superuser, search_path = schema: checks behind the tool's back */
    char key_spec[TESTPROC_PATH_MAX + 8];
    char signing_key[TESTPROC_PATH_MAX];
    char *verifier_pem;
    vault_keyprovider *kp;
    vault_store *s;
    char pt[PATIENTS][VAULT_ID_BUF]; /* TENANT's patients */
    char other_pt[VAULT_ID_BUF];     /* OTHER's patient */
} fx;

static void conninfo_for(const char *role, char out[256])
{
    snprintf(out, 256, "host=127.0.0.1 port=%s dbname=postgres user=%s password=" PW, g_port, role);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0600), 0);
}

static void fx_open(fx *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->schema, sizeof f->schema, "%s_%d", g_prefix, g_nschema++);
    char owner[256];
    conninfo_for(g_owner, owner);
    conninfo_for(g_runtime, f->rt_conninfo);
    f->rt = testdb_pool(f->rt_conninfo, f->schema, 4);
    MUST(db_migrate_as_owner(f->rt, owner, f->schema, "alma-test", vault_store_migrate));
    f->root = testdb_pool(g_uri, f->schema, 2);

    /* The master key in a file only the owner can read, as in a pod. */
    uint8_t key[32];
    char b64[64];
    size_t b64_len = 0;
    MUST(acrypto_random(key, sizeof key));
    MUST(acrypto_base64_encode(key, sizeof key, b64, sizeof b64 - 1, &b64_len));
    acrypto_wipe(key, sizeof key);
    b64[b64_len++] = '\n';
    const char *key_path = testproc_work_path("master.key");
    write_file(key_path, b64, b64_len);
    snprintf(f->key_spec, sizeof f->key_spec, "file:%s", key_path);
    MUST(vault_keyprovider_open(f->key_spec, &f->kp));
    MUST(vault_store_open(f->rt, f->kp, &f->s));

    /* The certificate key. */
    acrypto_ed25519_key *signer = NULL;
    acrypto_secret *pem = NULL;
    size_t pub_len = 0;
    MUST(acrypto_ed25519_generate(&signer));
    MUST(acrypto_ed25519_private_to_pem(signer, &pem));
    MUST(acrypto_ed25519_public_to_pem(signer, &f->verifier_pem, &pub_len));
    snprintf(f->signing_key, sizeof f->signing_key, "%s", testproc_work_path("signing.pem"));
    write_file(f->signing_key, acrypto_secret_bytes(pem), acrypto_secret_len(pem));
    acrypto_secret_free(pem);
    acrypto_ed25519_free(signer);
}

static void fx_close(fx *f)
{
    vault_store_close(f->s);
    vault_keyprovider_free(f->kp);
    free(f->verifier_pem);
    db_pool_destroy(f->rt);
    db_pool_destroy(f->root);
    testdb_drop_schema(g_root, f->schema);
}

static int64_t query_int(db_pool *pool, const char *sql, const char *param)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    const char *p[] = {param};
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, sql, param ? 1 : 0, param ? p : NULL, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

/* ---- synthetic records (real messages, packed by model.c) ---------------------------------------------- */

static void put_parts(fx *f, const char *tenant, const char *record_id, const char *patient_ref, int kind,
                      uint32_t expected, vault_parts *parts)
{
    vault_put p;
    memset(&p, 0, sizeof p);
    p.tenant_id = tenant;
    p.record_id = record_id;
    p.patient_ref = patient_ref;
    p.kind = kind;
    p.expected_version = expected;
    p.created_by = ACTOR;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        p.parts[c] = parts->data[c];
        p.part_len[c] = parts->len[c];
    }
    MUST(vault_store_put(f->s, &p, NULL, NULL));
    vault_parts_free(parts);
}

static void put_patient(fx *f, const char *tenant, const char *family, const char *mrn,
                        char ref[VAULT_ID_BUF])
{
    Alma__Vault__V1__Demographics d = ALMA__VAULT__V1__DEMOGRAPHICS__INIT;
    char *given[] = {"Alex"};
    d.family_name = (char *)family;
    d.given_names = given;
    d.n_given_names = 1;
    d.birth_date = "1980-02-03";
    d.sex = ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_FEMALE;
    Alma__Vault__V1__Identifiers ids = ALMA__VAULT__V1__IDENTIFIERS__INIT;
    ids.mrn = (char *)mrn;
    Alma__Vault__V1__Contact contact = ALMA__VAULT__V1__CONTACT__INIT;
    contact.phone = "+15555550100";
    Alma__Vault__V1__Patient p = ALMA__VAULT__V1__PATIENT__INIT;
    p.demographics = &d;
    p.identifiers = &ids;
    p.contact = &contact;
    MUST(vault_validate_patient(&p, time(NULL)));
    vault_parts parts;
    MUST(vault_patient_pack(&p, &parts));
    vault_random_id("pt_", ref);
    put_parts(f, tenant, ref, ref, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT, 0, &parts);
}

static void put_note(fx *f, const char *tenant, const char *patient, char id[VAULT_ID_BUF], uint32_t expected,
                     const char *text)
{
    Alma__Vault__V1__Note note = ALMA__VAULT__V1__NOTE__INIT;
    note.title = "Visit note";
    note.text = (char *)text;
    note.date = "2024-03-01";
    Alma__Vault__V1__Item item = ALMA__VAULT__V1__ITEM__INIT;
    item.body_case = ALMA__VAULT__V1__ITEM__BODY_NOTE;
    item.note = &note;
    MUST(vault_validate_item(&item, time(NULL)));
    vault_parts parts;
    MUST(vault_item_pack(&item, &parts));
    if (expected == 0)
        vault_random_id("it_", id);
    put_parts(f, tenant, id, patient, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_NOTE, expected, &parts);
}

static void put_problem(fx *f, const char *tenant, const char *patient)
{
    Alma__Vault__V1__Code code = ALMA__VAULT__V1__CODE__INIT;
    code.system = VAULT_SYSTEM_ICD10CM;
    code.code = "F32.9"; /* chapter F: stored as sensitive clinical */
    code.display = "Synthetic diagnosis";
    Alma__Vault__V1__Problem problem = ALMA__VAULT__V1__PROBLEM__INIT;
    problem.code = &code;
    problem.onset_date = "2023-01-01";
    problem.status = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE;
    Alma__Vault__V1__Item item = ALMA__VAULT__V1__ITEM__INIT;
    item.body_case = ALMA__VAULT__V1__ITEM__BODY_PROBLEM;
    item.problem = &problem;
    MUST(vault_validate_item(&item, time(NULL)));
    vault_parts parts;
    MUST(vault_item_pack(&item, &parts));
    assert_true(parts.categories & VAULT_CATEGORY_BIT(5));
    char id[VAULT_ID_BUF];
    vault_random_id("it_", id);
    put_parts(f, tenant, id, patient, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PROBLEM, 0, &parts);
}

/* TENANT: 3 patients, each with a note and a problem, the first note in two versions (9 records, 10
 * versions). OTHER: 1 patient with a note. */
static void load(fx *f)
{
    static const char *const mrns[PATIENTS] = {"MRN-1001", "MRN-1002", "MRN-1003"};
    for (int i = 0; i < PATIENTS; i++) {
        char note[VAULT_ID_BUF];
        put_patient(f, TENANT, "Testperson", mrns[i], f->pt[i]);
        put_note(f, TENANT, f->pt[i], note, 0, "Synthetic note text.");
        if (i == 0)
            put_note(f, TENANT, f->pt[i], note, 1, "Synthetic note text, amended.");
        put_problem(f, TENANT, f->pt[i]);
    }
    char note[VAULT_ID_BUF];
    put_patient(f, OTHER, "Otherperson", "MRN-9001", f->other_pt);
    put_note(f, OTHER, f->other_pt, note, 0, "Another synthetic note.");
}

/* ---- the tool ------------------------------------------------------------------------------------------ */

static const char *tool_path(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s", testenv_binary_path("tools/alma-vault-admin"));
    return path;
}

/* Run `alma-vault-admin offboard` for tenant with the fixture's settings and up to 6 extra arguments
 * (NULL-terminated list). */
static int run_offboard(fx *f, const char *tenant, char **out, char **err, ...)
{
    const char *argv[32];
    size_t n = 0;
    argv[n++] = tool_path();
    argv[n++] = "offboard";
    argv[n++] = "--pg-uri";
    argv[n++] = f->rt_conninfo;
    argv[n++] = "--pg-schema";
    argv[n++] = f->schema;
    argv[n++] = "--master-key";
    argv[n++] = f->key_spec;
    argv[n++] = "--signing-key";
    argv[n++] = f->signing_key;
    argv[n++] = "--tenant";
    argv[n++] = tenant;
    va_list ap;
    va_start(ap, err);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 30)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return testproc_run(argv, NULL, out, err);
}

static char *path_in(const char *dir, const char *name)
{
    static char buf[4][TESTPROC_PATH_MAX + 64];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static void sha256_hex(const char *data, size_t len, char hex[65])
{
    uint8_t d[ACRYPTO_SHA256_LEN];
    size_t n = 0;
    MUST(acrypto_sha256(data, len, d));
    MUST(acrypto_hex_encode(d, sizeof d, hex, 65, &n));
}

/* The tenant's keys are all intact, and a record of it still decrypts through a fresh store. */
static void expect_keys_intact(fx *f)
{
    assert_int_equal(query_int(f->root,
                               "SELECT count(*) FROM tenant_keys WHERE tenant_id = $1 AND "
                               "wrapped_key IS NULL",
                               TENANT),
                     0);
    assert_int_equal(query_int(f->root,
                               "SELECT count(*) FROM tenants WHERE tenant_id = $1 AND "
                               "offboarded_at IS NOT NULL",
                               TENANT),
                     0);
    vault_store *fresh = NULL;
    MUST(vault_store_open(f->rt, f->kp, &fresh));
    vault_record r;
    MUST(vault_store_get(fresh, TENANT, f->pt[0], 0, VAULT_ALL_CATEGORIES, &r));
    assert_non_null(r.parts[1]);
    vault_record_clear(&r);
    vault_store_close(fresh);
}

/* ---- refusals ------------------------------------------------------------------------------------------ */

static void test_refusals(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    load(&f);
    char *out = NULL, *err = NULL;
    char dir[TESTPROC_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", testproc_work_path("export"));

    /* No confirmation: usage, nothing created. */
    assert_int_equal(run_offboard(&f, TENANT, &out, &err, "--out", dir, NULL), 2);
    assert_non_null(strstr(err, "--confirm-tenant must repeat --tenant"));
    assert_false(testproc_file_exists(dir));
    free(out);
    free(err);
    /* A different tenant confirmed. */
    assert_int_equal(run_offboard(&f, TENANT, &out, &err, "--out", dir, "--confirm-tenant", OTHER, NULL), 2);
    assert_non_null(strstr(err, "--confirm-tenant must repeat --tenant"));
    assert_false(testproc_file_exists(dir));
    free(out);
    free(err);
    /* The confirmation from the environment does not count. */
    const char *argv[] = {
        tool_path(), "offboard",      "--pg-uri",    f.rt_conninfo, "--pg-schema", f.schema, "--master-key",
        f.key_spec,  "--signing-key", f.signing_key, "--tenant",    TENANT,        "--out",  dir,
        NULL};
    const char *env[] = {"ALMA_CONFIRM_TENANT=" TENANT, NULL};
    assert_int_equal(testproc_run(argv, env, NULL, &err), 2);
    assert_non_null(strstr(err, "on the command line"));
    free(err);
    assert_false(testproc_file_exists(dir));

    /* A non-empty directory (a half-written earlier export, say). */
    assert_int_equal(mkdir(dir, 0700), 0);
    write_file(path_in(dir, "patients.ndjson.tmp"), "{}\n", 3);
    assert_int_equal(run_offboard(&f, TENANT, &out, &err, "--out", dir, "--confirm-tenant", TENANT, NULL), 1);
    assert_non_null(strstr(err, "is not empty"));
    assert_non_null(strstr(err, "nothing was exported or destroyed"));
    free(out);
    free(err);
    assert_false(testproc_file_exists(path_in(dir, "patients.ndjson")));
    assert_false(testproc_file_exists(path_in(dir, "manifest.json")));
    char *kept = testproc_read_or_empty(path_in(dir, "patients.ndjson.tmp"));
    assert_string_equal(kept, "{}\n");
    free(kept);

    /* --out is a file. */
    assert_int_equal(run_offboard(&f, TENANT, &out, &err, "--out", path_in(dir, "patients.ndjson.tmp"),
                                  "--confirm-tenant", TENANT, NULL),
                     1);
    free(out);
    free(err);

    /* A bad signing key stops it before anything is exported. */
    char fresh_dir[TESTPROC_PATH_MAX];
    snprintf(fresh_dir, sizeof fresh_dir, "%s", testproc_work_path("export-badkey"));
    write_file(testproc_work_path("bad.pem"), "not a key\n", 10);
    char bad_key[TESTPROC_PATH_MAX];
    snprintf(bad_key, sizeof bad_key, "%s", testproc_work_path("bad.pem"));
    assert_int_equal(run_offboard(&f, TENANT, &out, &err, "--out", fresh_dir, "--confirm-tenant", TENANT,
                                  "--signing-key", bad_key, NULL),
                     1);
    assert_non_null(strstr(err, "signing key"));
    assert_false(testproc_file_exists(fresh_dir));
    free(out);
    free(err);

    /* An unknown tenant. */
    assert_int_equal(
        run_offboard(&f, "nobody", &out, &err, "--out", fresh_dir, "--confirm-tenant", "nobody", NULL), 1);
    assert_non_null(strstr(err, "has no vault keys"));
    assert_false(testproc_file_exists(fresh_dir));
    free(out);
    free(err);

    expect_keys_intact(&f);

    /* Help on every command; usage errors are 2. */
    static const char *const cmds[] = {"status", "rotate", "rewrap", "retire", "offboard"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        const char *help[] = {tool_path(), cmds[i], "--help", NULL};
        assert_int_equal(testproc_run(help, NULL, &out, NULL), 0);
        assert_non_null(strstr(out, "--tenant"));
        free(out);
    }
    const char *help[] = {tool_path(), "offboard", "--help", NULL};
    assert_int_equal(testproc_run(help, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "IRREVERSIBLE"));
    assert_non_null(strstr(out, "Audit:"));
    free(out);
    const char *top[] = {tool_path(), "--help", NULL};
    assert_int_equal(testproc_run(top, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "offboard"));
    free(out);
    const char *bad[] = {tool_path(), "frobnicate", NULL};
    assert_int_equal(testproc_run(bad, NULL, NULL, NULL), 2);
    fx_close(&f);
}

/* ---- a full offboarding -------------------------------------------------------------------------------- */

/* The FHIR id of a vault reference ('_' -> '-'). */
static void fhir_id_of(const char *ref, char out[VAULT_ID_BUF])
{
    snprintf(out, VAULT_ID_BUF, "%s", ref);
    for (char *p = out; *p; p++)
        if (*p == '_')
            *p = '-';
}

/* The Patient resource's id in a Bundle, or NULL. */
static const char *bundle_patient_id(json_t *bundle)
{
    json_t *entries = json_object_get(bundle, "entry");
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        json_t *res = json_object_get(e, "resource");
        const char *type = json_string_value(json_object_get(res, "resourceType"));
        if (type && strcmp(type, "Patient") == 0)
            return json_string_value(json_object_get(res, "id"));
    }
    return NULL;
}

static void check_export(fx *f, const char *dir, char manifest_sha[65])
{
    char *nd = testproc_read_or_empty(path_in(dir, "patients.ndjson"));
    size_t nd_len = strlen(nd);
    assert_true(nd_len > 0);
    assert_int_equal(nd[nd_len - 1], '\n');
    struct stat st;
    assert_int_equal(stat(path_in(dir, "patients.ndjson"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* One valid Bundle per line, one per patient of the tenant, none of the other tenant. */
    bool seen[PATIENTS] = {false};
    char other_id[VAULT_ID_BUF];
    fhir_id_of(f->other_pt, other_id);
    size_t lines = 0;
    for (char *line = nd; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        json_error_t jerr;
        json_t *b = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        if (!b)
            fail_msg("line %zu is not JSON: %s", lines + 1, jerr.text);
        assert_string_equal(json_string_value(json_object_get(b, "resourceType")), "Bundle");
        const char *pid = bundle_patient_id(b);
        assert_non_null(pid);
        assert_string_not_equal(pid, other_id);
        for (int i = 0; i < PATIENTS; i++) {
            char want[VAULT_ID_BUF];
            fhir_id_of(f->pt[i], want);
            if (strcmp(pid, want) == 0) {
                assert_false(seen[i]);
                seen[i] = true;
                /* patient, note, problem */
                assert_int_equal(json_array_size(json_object_get(b, "entry")), 3);
            }
        }
        json_decref(b);
        lines++;
        line = nl + 1;
    }
    assert_int_equal(lines, PATIENTS);
    for (int i = 0; i < PATIENTS; i++)
        assert_true(seen[i]);
    /* The amended note is exported at its latest version (an attachment: base64). */
    static const char amended[] = "Synthetic note text, amended.";
    char b64[128];
    size_t b64_len = 0;
    MUST(acrypto_base64_encode(amended, sizeof amended - 1, b64, sizeof b64, &b64_len));
    assert_non_null(strstr(nd, b64));

    /* The manifest describes the file. */
    char sha[65];
    sha256_hex(nd, nd_len, sha);
    json_error_t jerr;
    json_t *m = json_load_file(path_in(dir, "manifest.json"), 0, &jerr);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "tenant")), TENANT);
    assert_int_equal(json_integer_value(json_object_get(m, "patients")), PATIENTS);
    assert_int_equal(json_integer_value(json_object_get(m, "bytes")), (json_int_t)nd_len);
    assert_string_equal(json_string_value(json_object_get(m, "sha256")), sha);
    assert_non_null(json_string_value(json_object_get(m, "created_at")));
    json_decref(m);
    snprintf(manifest_sha, 65, "%s", sha);
    free(nd);
}

/* certificate.json verifies, names the export, and is signed by the fixture's key; its id is returned. */
static void check_certificate(fx *f, const char *dir, const char *sha, char id[VAULT_ID_BUF])
{
    json_error_t jerr;
    json_t *c = json_load_file(path_in(dir, "certificate.json"), 0, &jerr);
    assert_non_null(c);
    const char *statement = json_string_value(json_object_get(c, "statement"));
    const char *sig_b64 = json_string_value(json_object_get(c, "signature"));
    const char *verifier = json_string_value(json_object_get(c, "verifier_key"));
    assert_non_null(statement);
    assert_non_null(sig_b64);
    assert_non_null(verifier);
    assert_string_equal(verifier, f->verifier_pem);
    uint8_t sig[96];
    size_t sig_len = 0;
    MUST(acrypto_base64_decode(sig_b64, strlen(sig_b64), sig, sizeof sig, &sig_len));
    assert_int_equal(sig_len, ACRYPTO_ED25519_SIG_LEN);
    MUST(vault_certificate_verify(statement, strlen(statement), sig, sig_len, verifier));
    json_t *s = json_loads(statement, 0, &jerr);
    assert_non_null(s);
    assert_string_equal(json_string_value(json_object_get(s, "type")), VAULT_OFFBOARDING_TYPE);
    assert_string_equal(json_string_value(json_object_get(s, "tenant_id")), TENANT);
    assert_string_equal(json_string_value(json_object_get(s, "export_sha256")), sha);
    assert_int_equal(json_integer_value(json_object_get(s, "patients_exported")), PATIENTS);
    assert_int_equal(json_integer_value(json_object_get(s, "records")), 3 * PATIENTS);
    assert_int_equal(json_integer_value(json_object_get(s, "versions")), 3 * PATIENTS + 1);
    const char *cid = json_string_value(json_object_get(s, "certificate_id"));
    assert_non_null(cid);
    assert_string_equal(json_string_value(json_object_get(c, "certificate_id")), cid);
    snprintf(id, VAULT_ID_BUF, "%s", cid);
    /* The same certificate is stored in the vault. */
    vault_certificate stored;
    MUST(vault_certificate_get(f->rt, TENANT, id, &stored));
    assert_string_equal(stored.statement, statement);
    vault_certificate_clear(&stored);
    json_decref(s);
    json_decref(c);
}

/* Nothing of TENANT reads or writes any more; OTHER still decrypts. */
static void expect_offboarded(fx *f)
{
    vault_store *fresh = NULL;
    MUST(vault_store_open(f->rt, f->kp, &fresh));
    vault_record r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < PATIENTS; i++) {
        base_result res = vault_store_get(fresh, TENANT, f->pt[i], 0, VAULT_ALL_CATEGORIES, &r);
        assert_false(base_is_ok(res));
        for (int c = 0; c <= VAULT_CATEGORY_MAX; c++)
            assert_null(r.parts[c]);
    }
    char note[VAULT_ID_BUF];
    vault_random_id("it_", note);
    static const char body[] = "x";
    vault_put put = {.tenant_id = TENANT,
                     .record_id = note,
                     .patient_ref = f->pt[0],
                     .kind = ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_NOTE,
                     .created_by = ACTOR};
    put.parts[4] = (const uint8_t *)body;
    put.part_len[4] = 1;
    EXPECT_ERR(vault_store_put(fresh, &put, NULL, NULL), BASE_ERR_CONFLICT);
    assert_int_equal(query_int(f->root,
                               "SELECT count(*) FROM tenant_keys WHERE tenant_id = $1 AND "
                               "wrapped_key IS NOT NULL",
                               TENANT),
                     0);

    /* The other tenant: untouched, decrypts, unpacks, exports. */
    MUST(vault_store_get(fresh, OTHER, f->other_pt, 0, VAULT_ALL_CATEGORIES, &r));
    Alma__Vault__V1__Patient *p = NULL;
    MUST(vault_patient_unpack(&r, NULL, &p));
    assert_non_null(p);
    assert_string_equal(p->demographics->family_name, "Otherperson");
    alma__vault__v1__patient__free_unpacked(p, NULL);
    vault_record_clear(&r);
    char *json = NULL;
    size_t len = 0, items = 0;
    MUST(vault_patient_bundle(fresh, OTHER, f->other_pt, 1700000000000000, "ex_test", &json, &len, NULL, NULL,
                              &items));
    assert_int_equal(items, 1);
    free(json);
    assert_int_equal(query_int(f->root,
                               "SELECT count(*) FROM tenants WHERE tenant_id = $1 AND "
                               "offboarded_at IS NULL",
                               OTHER),
                     1);
    vault_store_close(fresh);
}

static void test_offboard(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    load(&f);
    char *out = NULL, *err = NULL;
    char dir[TESTPROC_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", testproc_work_path("export"));
    assert_int_equal(mkdir(dir, 0700), 0); /* an empty directory is taken */
    int rc = run_offboard(&f, TENANT, &out, &err, "--out", dir, "--confirm-tenant", TENANT, "--actor",
                          "operator:test", NULL);
    if (rc != 0)
        fail_msg("offboard exited %d: %s", rc, err);
    print_message("offboard: %s%s", err, out);
    assert_non_null(strstr(err, "offboard: 3/3 patients exported"));
    assert_non_null(strstr(out, "certificate: dc_"));
    char sha[65], cert_id[VAULT_ID_BUF];
    check_export(&f, dir, sha);
    check_certificate(&f, dir, sha, cert_id);
    assert_non_null(strstr(out, cert_id));
    assert_false(testproc_file_exists(path_in(dir, "patients.ndjson.tmp")));
    free(out);
    free(err);
    expect_offboarded(&f);

    /* Again, with a new directory: the keys are gone, nothing can be exported; it says so and writes
     * nothing. */
    char *before_nd = testproc_read_or_empty(path_in(dir, "patients.ndjson"));
    char *before_m = testproc_read_or_empty(path_in(dir, "manifest.json"));
    char *before_c = testproc_read_or_empty(path_in(dir, "certificate.json"));
    char dir2[TESTPROC_PATH_MAX];
    snprintf(dir2, sizeof dir2, "%s", testproc_work_path("export-again"));
    rc = run_offboard(&f, TENANT, &out, &err, "--out", dir2, "--confirm-tenant", TENANT, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "already offboarded"));
    assert_non_null(strstr(err, "nothing of it can be exported any more"));
    assert_non_null(strstr(out, cert_id));
    assert_false(testproc_file_exists(dir2));
    free(out);
    free(err);
    /* Again, with the same directory: refused the same way, nothing overwritten. */
    rc = run_offboard(&f, TENANT, &out, &err, "--out", dir, "--confirm-tenant", TENANT, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "already offboarded"));
    free(out);
    free(err);
    char *after_nd = testproc_read_or_empty(path_in(dir, "patients.ndjson"));
    char *after_m = testproc_read_or_empty(path_in(dir, "manifest.json"));
    char *after_c = testproc_read_or_empty(path_in(dir, "certificate.json"));
    assert_string_equal(before_nd, after_nd);
    assert_string_equal(before_m, after_m);
    assert_string_equal(before_c, after_c);
    free(before_nd);
    free(before_m);
    free(before_c);
    free(after_nd);
    free(after_m);
    free(after_c);
    assert_int_equal(
        query_int(f.root, "SELECT count(*) FROM destruction_certificates WHERE tenant_id = $1", TENANT), 1);
    fx_close(&f);
}

/* ---- a crash between key destruction and the certificate ------------------------------------------------
 */

/* Write what a run writes before destroying the keys (patients.ndjson and manifest.json), the Bundles made
 * by the same function the tool uses. */
static void write_export(fx *f, const char *dir, char sha[65])
{
    assert_int_equal(mkdir(dir, 0700), 0);
    size_t cap = 1 << 20, len = 0;
    char *all = malloc(cap);
    assert_non_null(all);
    for (int i = 0; i < PATIENTS; i++) {
        char *json = NULL;
        size_t n = 0;
        MUST(vault_patient_bundle(f->s, TENANT, f->pt[i], 1700000000000000, "ex_crash", &json, &n, NULL, NULL,
                                  NULL));
        assert_true(len + n + 1 < cap);
        memcpy(all + len, json, n);
        all[len + n] = '\n';
        len += n + 1;
        free(json);
    }
    write_file(path_in(dir, "patients.ndjson"), all, len);
    sha256_hex(all, len, sha);
    char manifest[512];
    int m = snprintf(manifest, sizeof manifest,
                     "{\"tenant\": \"%s\", \"patients\": %d, \"bytes\": %zu, \"sha256\": \"%s\", "
                     "\"created_at\": \"2023-11-14T22:13:20.000000Z\"}\n",
                     TENANT, PATIENTS, len, sha);
    write_file(path_in(dir, "manifest.json"), manifest, (size_t)m);
    free(all);
}

static void test_finish_after_crash(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    load(&f);
    char dir[TESTPROC_PATH_MAX], sha[65];
    snprintf(dir, sizeof dir, "%s", testproc_work_path("export"));
    write_export(&f, dir, sha);
    /* Another run's directory whose file no longer matches its manifest. */
    char dir3[TESTPROC_PATH_MAX], sha3[65];
    snprintf(dir3, sizeof dir3, "%s", testproc_work_path("export-tampered"));
    write_export(&f, dir3, sha3);
    FILE *fp = fopen(path_in(dir3, "patients.ndjson"), "a");
    assert_non_null(fp);
    fputs("{}\n", fp);
    fclose(fp);
    /* The crash: keys destroyed, no certificate. */
    uint32_t destroyed = 0;
    MUST(vault_store_destroy_tenant_keys(f.s, TENANT, &destroyed));
    assert_int_equal(destroyed, 1);
    assert_int_equal(
        query_int(f.root, "SELECT count(*) FROM destruction_certificates WHERE tenant_id = $1", TENANT), 0);

    /* A new directory: nothing to export, no certificate to show. */
    char *out = NULL, *err = NULL;
    char dir2[TESTPROC_PATH_MAX];
    snprintf(dir2, sizeof dir2, "%s", testproc_work_path("export-new"));
    assert_int_equal(run_offboard(&f, TENANT, &out, &err, "--out", dir2, "--confirm-tenant", TENANT, NULL),
                     1);
    assert_non_null(strstr(err, "already offboarded"));
    assert_non_null(strstr(err, "no certificate is stored yet"));
    assert_false(testproc_file_exists(dir2));
    free(out);
    free(err);

    /* A directory whose file does not match its manifest is refused. */
    assert_int_equal(run_offboard(&f, TENANT, &out, &err, "--out", dir3, "--confirm-tenant", TENANT, NULL),
                     1);
    assert_non_null(strstr(err, "does not match"));
    assert_false(testproc_file_exists(path_in(dir3, "certificate.json")));
    free(out);
    free(err);
    assert_int_equal(
        query_int(f.root, "SELECT count(*) FROM destruction_certificates WHERE tenant_id = $1", TENANT), 0);

    /* The run's own directory: the certificate is signed for its export and written. */
    int rc = run_offboard(&f, TENANT, &out, &err, "--out", dir, "--confirm-tenant", TENANT, NULL);
    if (rc != 0)
        fail_msg("finishing exited %d: %s", rc, err);
    assert_non_null(strstr(err, "keys already destroyed"));
    char cert_id[VAULT_ID_BUF];
    check_certificate(&f, dir, sha, cert_id);
    assert_non_null(strstr(out, cert_id));
    free(out);
    free(err);
    expect_offboarded(&f);
    fx_close(&f);
}

/* ---- group --------------------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    snprintf(g_port, sizeof g_port, "5432");
    const char *colon = strrchr(g_uri, ':'); /* postgresql://postgres@127.0.0.1:PORT/postgres */
    if (colon) {
        size_t n = strcspn(colon + 1, "/");
        snprintf(g_port, sizeof g_port, "%.*s", (int)n, colon + 1);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "vob_%d_%lx", (int)getpid(),
             (unsigned long)(ts.tv_nsec ^ ts.tv_sec) & 0xfffff);
    snprintf(g_owner, sizeof g_owner, "%s_own", g_prefix);
    snprintf(g_runtime, sizeof g_runtime, "%s_rt", g_prefix);
    MUST(db_pool_create(g_uri, 2, 5000, &g_root));
    testdb_role_create(g_root, g_owner, PW, true);
    testdb_role_create(g_root, g_runtime, PW, false);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testdb_role_drop(g_root, g_runtime);
    testdb_role_drop(g_root, g_owner);
    db_pool_destroy(g_root);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_offboard, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_finish_after_crash, testproc_setup, testproc_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
