/* The vault's record lifecycle (services/vault/lifecycle.h) against the real PostgreSQL of the "pg" fixture.
 * Every test works in a schema of its own, migrated by the owner (the harness superuser) with
 * vault_store_migrate and granted to one least-privilege runtime role with grant_runtime(); the store and
 * every lifecycle call run as that role, so the grants of migration 0002 are exercised. Records are real:
 * vault_store_put under a random master key (vault_keyprovider_from_secret). */
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"
#include "lifecycle.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"

#include <jansson.h>

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* expr fails with err and a message containing `text`. */
#define EXPECT_MSG(expr, want, text)                                                                         \
    do {                                                                                                     \
        EXPECT_ERR(expr, want);                                                                              \
        if (!strstr(base_error_message(), (text)))                                                           \
            fail_msg("%s: message \"%s\" lacks \"%s\"", #expr, base_error_message(), (text));                \
    } while (0)

#define ACTOR     "pr_test_privacy_officer"
#define TENANT    "acme-clinic"
#define HOUR_US   INT64_C(3600000000)
#define DAY_US    (24 * HOUR_US)
#define RT_PASSWD "vault-lifecycle-test-pw"

static char g_uri[512];
static char g_prefix[40];
static char g_role[64];
static char g_rt_conninfo[256];
static int g_nschema;
static db_pool *g_root; /* superuser, no search_path */

/* ---- fixture --------------------------------------------------------------------------------------------
 */

typedef struct fx {
    char schema[64];
    db_pool *owner; /* superuser, search_path = schema: migrations and checks behind the runtime's back */
    db_pool *rt;    /* the runtime role: the store and the lifecycle */
    acrypto_secret *master;
    vault_keyprovider *kp;
    vault_store *store;
    acrypto_ed25519_key *signer;
} fx;

static base_result exec_sql(db_pool *pool, const char *sql)
{
    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(pool, 5000, &c));
    base_result r = db_exec(c, sql, 0, NULL, NULL);
    db_conn_release(c);
    return r;
}

static base_result exec_sql_p(db_pool *pool, const char *sql, int n, const char *const *p)
{
    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(pool, 5000, &c));
    base_result r = db_exec(c, sql, n, p, NULL);
    db_conn_release(c);
    return r;
}

static int64_t query_int_p(db_pool *pool, const char *sql, int n, const char *const *p)
{
    db_conn *c = NULL;
    db_result *res = NULL;
    int64_t v = -1;
    MUST(db_pool_acquire(pool, 5000, &c));
    MUST(db_exec(c, sql, n, p, &res));
    assert_int_equal(db_result_ntuples(res), 1);
    MUST(db_result_get_int64(res, 0, 0, &v));
    db_result_free(res);
    db_conn_release(c);
    return v;
}

static void fx_open(fx *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->schema, sizeof f->schema, "%s_%d", g_prefix, g_nschema++);
    f->owner = testdb_pool(g_uri, f->schema, 4);
    MUST(vault_store_migrate(f->owner, f->schema));
    const char *p[] = {f->schema, g_role};
    MUST(exec_sql_p(f->owner, "SELECT grant_runtime($1, $2)", 2, p));
    f->rt = testdb_pool(g_rt_conninfo, f->schema, 8);
    MUST(acrypto_secret_random(32, &f->master));
    MUST(vault_keyprovider_from_secret(f->master, &f->kp));
    MUST(vault_store_open(f->rt, f->kp, &f->store));
    MUST(acrypto_ed25519_generate(&f->signer));
}

static void fx_close(fx *f)
{
    vault_store_close(f->store);
    vault_keyprovider_free(f->kp);
    acrypto_secret_free(f->master);
    acrypto_ed25519_free(f->signer);
    db_pool_destroy(f->rt);
    db_pool_destroy(f->owner);
    testdb_drop_schema(g_root, f->schema);
}

/* A patient record (demographic and identifier parts), version 1. */
static void mk_patient(fx *f, const char *tenant, char ref[VAULT_ID_BUF])
{
    vault_random_id("pt_", ref);
    static const char demo[] = "{\"family\":\"Testperson\"}", mrn[] = "{\"mrn\":\"MRN-1\"}";
    vault_put put = {
        .tenant_id = tenant, .record_id = ref, .patient_ref = ref, .kind = 1, .created_by = ACTOR};
    put.parts[1] = (const uint8_t *)demo;
    put.part_len[1] = sizeof demo - 1;
    put.parts[3] = (const uint8_t *)mrn;
    put.part_len[3] = sizeof mrn - 1;
    uint32_t v = 0;
    int64_t at = 0;
    MUST(vault_store_put(f->store, &put, &v, &at));
    assert_int_equal(v, 1);
}

/* A note (clinical, or sensitive clinical) of the patient: a new item (expected 0, *id made here) or the
 * next version of *id. Returns the version. */
static uint32_t put_note(fx *f, const char *tenant, const char *patient, char id[VAULT_ID_BUF],
                         uint32_t expected, int category, const char *amendment_request_id)
{
    if (expected == 0)
        vault_random_id("it_", id);
    static const char note[] = "{\"title\":\"Visit\",\"text\":\"Feels better.\"}";
    vault_put put = {.tenant_id = tenant,
                     .record_id = id,
                     .patient_ref = patient,
                     .kind = 5,
                     .expected_version = expected,
                     .created_by = ACTOR,
                     .amendment_request_id = amendment_request_id};
    put.parts[category] = (const uint8_t *)note;
    put.part_len[category] = sizeof note - 1;
    uint32_t v = 0;
    int64_t at = 0;
    MUST(vault_store_put(f->store, &put, &v, &at));
    return v;
}

static void retention_all(fx *f, const char *tenant, uint32_t years)
{
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
        MUST(vault_retention_set(f->rt, tenant, c, years, ACTOR, NULL));
}

static int64_t patient_rows(fx *f, const char *tenant, const char *patient)
{
    const char *p[] = {tenant, patient};
    return query_int_p(f->owner, "SELECT count(*) FROM records WHERE tenant_id = $1 AND patient_ref = $2", 2,
                       p);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The certificate verifies, and its statement says what it should. ids: the destroyed record ids (any
 * order). */
static void check_destruction_cert(fx *f, const vault_certificate *c, const char *tenant, const char *patient,
                                   const char **ids, size_t nids, uint32_t versions, const char *reason)
{
    MUST(vault_certificate_verify(c->statement, c->statement_len, c->signature, sizeof c->signature,
                                  c->verifier_key));
    assert_int_equal(strncmp(c->certificate_id, "dc_", 3), 0);
    assert_string_equal(c->tenant_id, tenant);
    assert_string_equal(c->patient_ref, patient);
    assert_int_equal(c->records, nids);
    assert_int_equal(c->versions, versions);
    assert_true(c->destroyed_us > 0);
    /* The verifier key is the signer's public key. */
    char *pem = NULL;
    size_t pem_len = 0;
    MUST(acrypto_ed25519_public_to_pem(f->signer, &pem, &pem_len));
    assert_string_equal(c->verifier_key, pem);
    free(pem);

    json_error_t err;
    json_t *o = json_loads(c->statement, 0, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "type")), VAULT_DESTRUCTION_TYPE);
    assert_string_equal(json_string_value(json_object_get(o, "certificate_id")), c->certificate_id);
    assert_string_equal(json_string_value(json_object_get(o, "tenant_id")), tenant);
    assert_string_equal(json_string_value(json_object_get(o, "patient_ref")), patient);
    assert_string_equal(json_string_value(json_object_get(o, "reason_code")), reason);
    assert_string_equal(json_string_value(json_object_get(o, "actor")), ACTOR);
    assert_string_equal(json_string_value(json_object_get(o, "method")), VAULT_DESTRUCTION_METHOD);
    assert_int_equal(json_integer_value(json_object_get(o, "records")), nids);
    assert_int_equal(json_integer_value(json_object_get(o, "versions")), versions);
    const char *kd = json_string_value(json_object_get(o, "keys_destroyed_at"));
    const char *rd = json_string_value(json_object_get(o, "rows_deleted_at"));
    assert_non_null(kd);
    assert_non_null(rd);
    assert_int_equal(strlen(kd), 27);
    assert_int_equal(kd[26], 'Z');
    assert_true(strcmp(kd, rd) <= 0);
    json_t *keks = json_object_get(o, "kek_versions");
    assert_int_equal(json_array_size(keks), 2);
    assert_true(json_integer_value(json_array_get(keks, 0)) >= 1);
    assert_true(json_integer_value(json_array_get(keks, 0)) <= json_integer_value(json_array_get(keks, 1)));
    json_t *rids = json_object_get(o, "record_ids");
    assert_int_equal(json_array_size(rids), nids);
    const char **sorted = calloc(nids, sizeof *sorted);
    assert_non_null(sorted);
    memcpy(sorted, ids, nids * sizeof *ids);
    qsort(sorted, nids, sizeof *sorted, cmp_id);
    for (size_t i = 0; i < nids; i++)
        assert_string_equal(json_string_value(json_array_get(rids, i)), sorted[i]);
    free(sorted);
    /* Canonical: dumping it again the same way gives the same text. */
    char *again = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    assert_string_equal(again, c->statement);
    free(again);
    json_decref(o);
}

/* ---- retention ------------------------------------------------------------------------------------------
 */

static void test_retention(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    vault_retention r;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        MUST(vault_retention_get(f.rt, TENANT, c, &r));
        assert_int_equal(r.years, VAULT_RETENTION_DEFAULT);
        assert_true(r.is_default);
        assert_int_equal(r.category, c);
    }
    MUST(vault_retention_set(f.rt, TENANT, 4, 7, ACTOR, &r));
    assert_int_equal(r.years, 7);
    assert_false(r.is_default);
    assert_string_equal(r.updated_by, ACTOR);
    MUST(vault_retention_get(f.rt, TENANT, 4, &r));
    assert_int_equal(r.years, 7);
    assert_false(r.is_default);
    MUST(vault_retention_set(f.rt, TENANT, 4, 0, ACTOR, &r)); /* replaces */
    MUST(vault_retention_get(f.rt, TENANT, 4, &r));
    assert_int_equal(r.years, 0);
    MUST(vault_retention_get(f.rt, TENANT, 5, &r)); /* other categories keep the default */
    assert_int_equal(r.years, VAULT_RETENTION_DEFAULT);
    MUST(vault_retention_get(f.rt, "other-tenant", 4, &r)); /* other tenants too */
    assert_int_equal(r.years, VAULT_RETENTION_DEFAULT);
    assert_true(r.is_default);

    EXPECT_ERR(vault_retention_set(f.rt, TENANT, 0, 5, ACTOR, NULL), BASE_ERR_INVALID);
    EXPECT_ERR(vault_retention_set(f.rt, TENANT, 7, 5, ACTOR, NULL), BASE_ERR_INVALID);
    EXPECT_ERR(vault_retention_set(f.rt, TENANT, 1, 101, ACTOR, NULL), BASE_ERR_INVALID);
    EXPECT_ERR(vault_retention_set(f.rt, "Bad Tenant", 1, 5, ACTOR, NULL), BASE_ERR_INVALID);
    EXPECT_ERR(vault_retention_set(f.rt, TENANT, 1, 5, "", NULL), BASE_ERR_INVALID);
    EXPECT_ERR(vault_retention_get(f.rt, "", 1, &r), BASE_ERR_INVALID);
    /* The built-in defaults cannot be changed at run time, not even by a role allowed to update. */
    EXPECT_ERR(exec_sql(f.rt, "UPDATE retention SET years = 0 WHERE tenant_id = ''"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "INSERT INTO retention (tenant_id, category, years, updated_by) "
                              "VALUES ('', 1, 0, 'x') ON CONFLICT DO NOTHING"),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "DELETE FROM retention"), BASE_ERR_DENIED);
    fx_close(&f);
}

/* ---- legal holds ----------------------------------------------------------------------------------------
 */

static void test_legal_hold_blocks_destroy(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], it[VAULT_ID_BUF];
    mk_patient(&f, TENANT, pt);
    put_note(&f, TENANT, pt, it, 0, 4, NULL);
    retention_all(&f, TENANT, 0);

    vault_legal_hold h1, h2, got;
    MUST(vault_hold_place(f.store, f.rt, TENANT, pt, "litigation", ACTOR, &h1));
    assert_int_equal(strncmp(h1.hold_id, "lh_", 3), 0);
    assert_string_equal(h1.patient_ref, pt);
    assert_string_equal(h1.reason_code, "litigation");
    assert_int_equal(h1.released_us, 0);
    MUST(vault_hold_place(f.store, f.rt, TENANT, pt, "investigation", ACTOR, &h2));

    vault_certificate cert;
    memset(&cert, 0, sizeof cert);
    EXPECT_MSG(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "retention_expired",
                                               ACTOR, &cert),
               BASE_ERR_CONFLICT, "legal hold in force");
    assert_int_equal(patient_rows(&f, TENANT, pt), 2);

    MUST(vault_hold_release(f.rt, TENANT, h1.hold_id, "pr_release_officer", &got));
    assert_true(got.released_us >= got.placed_us);
    assert_string_equal(got.released_by, "pr_release_officer");
    EXPECT_MSG(vault_hold_release(f.rt, TENANT, h1.hold_id, ACTOR, &got), BASE_ERR_CONFLICT,
               "already released");
    /* One hold is still in force. */
    EXPECT_MSG(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "retention_expired",
                                               ACTOR, &cert),
               BASE_ERR_CONFLICT, "legal hold in force");

    vault_legal_hold *list = NULL;
    size_t n = 0;
    MUST(vault_holds_list(f.rt, TENANT, pt, false, &list, &n));
    assert_int_equal(n, 1);
    assert_string_equal(list[0].hold_id, h2.hold_id);
    free(list);
    MUST(vault_holds_list(f.rt, TENANT, pt, true, &list, &n));
    assert_int_equal(n, 2);
    assert_string_equal(list[0].hold_id, h1.hold_id);
    assert_true(list[0].released_us > 0);
    free(list);

    MUST(vault_hold_release(f.rt, TENANT, h2.hold_id, ACTOR, &got));
    MUST(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "retention_expired", ACTOR,
                                         &cert));
    const char *ids[] = {pt, it};
    check_destruction_cert(&f, &cert, TENANT, pt, ids, 2, 2, "retention_expired");
    vault_certificate_clear(&cert);

    /* Holds are never deleted, and released only once (the trigger, behind the library). */
    const char *p[] = {h1.hold_id};
    EXPECT_ERR(exec_sql_p(f.rt, "DELETE FROM legal_holds WHERE hold_id = $1", 1, p), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.rt,
                          "UPDATE legal_holds SET released_at = NULL, released_by = NULL WHERE hold_id = $1",
                          1, p),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.owner, "DELETE FROM legal_holds WHERE hold_id = $1", 1, p), BASE_ERR_DENIED);

    /* Unknown patients and holds, other tenants, malformed input. */
    char nobody[VAULT_ID_BUF];
    vault_random_id("pt_", nobody);
    EXPECT_ERR(vault_hold_place(f.store, f.rt, TENANT, nobody, "litigation", ACTOR, &got),
               BASE_ERR_NOT_FOUND);
    EXPECT_ERR(vault_hold_release(f.rt, "other-tenant", h2.hold_id, ACTOR, &got), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(vault_hold_place(f.store, f.rt, TENANT, pt, "Litigation!", ACTOR, &got), BASE_ERR_INVALID);
    EXPECT_ERR(vault_hold_place(f.store, f.rt, TENANT, "pt_123", "litigation", ACTOR, &got),
               BASE_ERR_INVALID);
    fx_close(&f);
}

/* ---- retention and destruction ------------------------------------------------------------------------- */

static void test_retention_blocks_destroy(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], it[VAULT_ID_BUF];
    mk_patient(&f, TENANT, pt);
    put_note(&f, TENANT, pt, it, 0, 5, NULL); /* sensitive clinical */
    vault_certificate cert;
    memset(&cert, 0, sizeof cert);
    /* The defaults: 10 years for everything; demographic is the first category present. */
    EXPECT_MSG(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "retention_expired",
                                               ACTOR, &cert),
               BASE_ERR_CONFLICT, "retention period not over for demographic");
    MUST(vault_retention_set(f.rt, TENANT, 1, 0, ACTOR, NULL));
    MUST(vault_retention_set(f.rt, TENANT, 3, 0, ACTOR, NULL));
    MUST(vault_retention_set(f.rt, TENANT, 4, 0, ACTOR, NULL)); /* no part of the patient is clinical */
    EXPECT_MSG(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "retention_expired",
                                               ACTOR, &cert),
               BASE_ERR_CONFLICT, "retention period not over for sensitive_clinical");
    assert_int_equal(patient_rows(&f, TENANT, pt), 2);
    /* Nothing was begun: a hold can still be placed and released. */
    vault_legal_hold h;
    MUST(vault_hold_place(f.store, f.rt, TENANT, pt, "audit", ACTOR, &h));
    MUST(vault_hold_release(f.rt, TENANT, h.hold_id, ACTOR, &h));
    /* Contact and financial are absent from every version: their 10 years do not matter. */
    MUST(vault_retention_set(f.rt, TENANT, 5, 0, ACTOR, NULL));
    MUST(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "retention_expired", ACTOR,
                                         &cert));
    assert_int_equal(cert.records, 2);
    vault_certificate_clear(&cert);
    fx_close(&f);
}

static void test_destroy_certificate(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], it1[VAULT_ID_BUF], it2[VAULT_ID_BUF], other[VAULT_ID_BUF], other_it[VAULT_ID_BUF];
    mk_patient(&f, TENANT, pt);
    put_note(&f, TENANT, pt, it1, 0, 4, NULL);
    assert_int_equal(put_note(&f, TENANT, pt, it1, 1, 4, NULL), 2);
    put_note(&f, TENANT, pt, it2, 0, 5, NULL);
    mk_patient(&f, TENANT, other); /* another patient: untouched */
    put_note(&f, TENANT, other, other_it, 0, 4, NULL);
    retention_all(&f, TENANT, 0);

    vault_certificate cert, got, again;
    memset(&cert, 0, sizeof cert);
    EXPECT_ERR(
        vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "Bad Reason", ACTOR, &cert),
        BASE_ERR_INVALID);
    EXPECT_ERR(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, "other-tenant", pt,
                                               "retention_expired", ACTOR, &cert),
               BASE_ERR_NOT_FOUND);
    MUST(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "patient_request_state_law",
                                         ACTOR, &cert));
    const char *ids[] = {pt, it1, it2};
    check_destruction_cert(&f, &cert, TENANT, pt, ids, 3, 4, "patient_request_state_law");

    /* The rows are gone, blind indexes and all; reads say NOT_FOUND; the other patient is intact. */
    assert_int_equal(patient_rows(&f, TENANT, pt), 0);
    const char *pp[] = {TENANT, pt};
    assert_int_equal(query_int_p(f.owner,
                                 "SELECT count(*) FROM blind_index WHERE tenant_id = $1 AND patient_ref = $2",
                                 2, pp),
                     0);
    assert_int_equal(
        query_int_p(f.owner, "SELECT count(*) FROM destructions WHERE tenant_id = $1 AND patient_ref = $2", 2,
                    pp),
        0);
    vault_record rec;
    memset(&rec, 0, sizeof rec);
    EXPECT_ERR(vault_store_head(f.store, TENANT, pt, 0, &rec), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(vault_store_head(f.store, TENANT, it1, 0, &rec), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(vault_store_get(f.store, TENANT, it2, 0, VAULT_ALL_CATEGORIES, &rec), BASE_ERR_NOT_FOUND);
    MUST(vault_store_get(f.store, TENANT, other_it, 0, VAULT_ALL_CATEGORIES, &rec));
    vault_record_clear(&rec);
    assert_int_equal(patient_rows(&f, TENANT, other), 2);

    /* Stored as returned. */
    MUST(vault_certificate_get(f.rt, TENANT, cert.certificate_id, &got));
    assert_string_equal(got.statement, cert.statement);
    assert_memory_equal(got.signature, cert.signature, sizeof cert.signature);
    assert_string_equal(got.verifier_key, cert.verifier_key);
    assert_int_equal(got.destroyed_us, cert.destroyed_us);
    assert_int_equal(got.records, 3);
    assert_int_equal(got.versions, 4);
    vault_certificate_clear(&got);
    EXPECT_ERR(vault_certificate_get(f.rt, "other-tenant", cert.certificate_id, &got), BASE_ERR_NOT_FOUND);

    /* A repeat (a lost answer) returns the same certificate. */
    MUST(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "patient_request_state_law",
                                         ACTOR, &again));
    assert_string_equal(again.certificate_id, cert.certificate_id);
    assert_string_equal(again.statement, cert.statement);
    vault_certificate_clear(&again);
    char nobody[VAULT_ID_BUF];
    vault_random_id("pt_", nobody);
    EXPECT_ERR(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, nobody, "retention_expired",
                                               ACTOR, &again),
               BASE_ERR_NOT_FOUND);

    /* Tampering: any changed byte of the statement or signature, or another key, fails verification. */
    char *tampered = strdup(cert.statement);
    char *hit = strstr(tampered, "\"versions\":4");
    assert_non_null(hit);
    hit[11] = '3';
    EXPECT_ERR(vault_certificate_verify(tampered, strlen(tampered), cert.signature, sizeof cert.signature,
                                        cert.verifier_key),
               BASE_ERR_CRYPTO);
    free(tampered);
    uint8_t sig[ACRYPTO_ED25519_SIG_LEN];
    memcpy(sig, cert.signature, sizeof sig);
    sig[10] ^= 1;
    EXPECT_ERR(
        vault_certificate_verify(cert.statement, cert.statement_len, sig, sizeof sig, cert.verifier_key),
        BASE_ERR_CRYPTO);
    EXPECT_ERR(
        vault_certificate_verify(cert.statement, cert.statement_len, cert.signature, 63, cert.verifier_key),
        BASE_ERR_CRYPTO);
    acrypto_ed25519_key *stranger = NULL;
    char *stranger_pem = NULL;
    size_t stranger_len = 0;
    MUST(acrypto_ed25519_generate(&stranger));
    MUST(acrypto_ed25519_public_to_pem(stranger, &stranger_pem, &stranger_len));
    EXPECT_ERR(vault_certificate_verify(cert.statement, cert.statement_len, cert.signature,
                                        sizeof cert.signature, stranger_pem),
               BASE_ERR_CRYPTO);
    EXPECT_ERR(vault_certificate_verify(cert.statement, cert.statement_len, cert.signature,
                                        sizeof cert.signature, "not a key"),
               BASE_ERR_INVALID);
    free(stranger_pem);
    acrypto_ed25519_free(stranger);

    /* Certificates are append-only: no privilege for the runtime, a trigger for everyone. */
    const char *cp[] = {cert.certificate_id};
    EXPECT_ERR(
        exec_sql_p(f.rt, "UPDATE destruction_certificates SET records = 0 WHERE certificate_id = $1", 1, cp),
        BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.rt, "DELETE FROM destruction_certificates WHERE certificate_id = $1", 1, cp),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "TRUNCATE destruction_certificates"), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.owner,
                          "UPDATE destruction_certificates SET statement = '{}' WHERE certificate_id = $1", 1,
                          cp),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.owner, "DELETE FROM destruction_certificates WHERE certificate_id = $1", 1, cp),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.owner, "TRUNCATE destruction_certificates"), BASE_ERR_DENIED);
    MUST(vault_certificate_get(f.rt, TENANT, cert.certificate_id, &got));
    assert_string_equal(got.statement, cert.statement);
    vault_certificate_clear(&got);
    vault_certificate_clear(&cert);
    fx_close(&f);
}

/* A destruction interrupted after step B (data keys destroyed, rows still there) completes on a repeat;
 * one interrupted after step C (rows deleted, certificate not stored) completes from what step B saved. */
static void test_destroy_retry(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    retention_all(&f, TENANT, 0);

    /* Crash after B: only the keys were destroyed (the store called directly). */
    char pt[VAULT_ID_BUF], it[VAULT_ID_BUF];
    mk_patient(&f, TENANT, pt);
    put_note(&f, TENANT, pt, it, 0, 4, NULL);
    put_note(&f, TENANT, pt, it, 1, 4, NULL);
    vault_shred_summary s;
    memset(&s, 0, sizeof s);
    MUST(vault_store_shred_keys(f.store, TENANT, pt, &s));
    assert_int_equal(s.records, 2);
    assert_int_equal(s.versions, 3);
    int64_t first_shred_us = s.keys_destroyed_us;
    vault_shred_summary_free(&s);
    vault_record rec;
    memset(&rec, 0, sizeof rec);
    EXPECT_ERR(vault_store_get(f.store, TENANT, it, 0, VAULT_ALL_CATEGORIES, &rec), BASE_ERR_NOT_FOUND);
    assert_int_equal(patient_rows(&f, TENANT, pt), 3);
    vault_certificate cert;
    MUST(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt, "retention_expired", ACTOR,
                                         &cert));
    const char *ids[] = {pt, it};
    check_destruction_cert(&f, &cert, TENANT, pt, ids, 2, 3, "retention_expired");
    assert_int_equal(patient_rows(&f, TENANT, pt), 0);
    /* keys_destroyed_at is when the keys really went, not the repeat's second pass. */
    char when[40], want[128];
    time_t secs = (time_t)(first_shred_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(want, sizeof want, "\"keys_destroyed_at\":\"%s.%06dZ\"", when, (int)(first_shred_us % 1000000));
    assert_non_null(strstr(cert.statement, want));
    vault_certificate_clear(&cert);

    /* Crash after C: the row step A wrote and step B filled, the store's two steps done, no certificate. */
    char pt2[VAULT_ID_BUF], it2[VAULT_ID_BUF], cid[VAULT_ID_BUF];
    mk_patient(&f, TENANT, pt2);
    put_note(&f, TENANT, pt2, it2, 0, 5, NULL);
    vault_random_id("dc_", cid);
    /* Step A: the row, as an earlier call wrote it. */
    const char *ap[] = {TENANT, pt2, cid, "patient_request_state_law", "pr_first_officer"};
    MUST(exec_sql_p(f.rt,
                    "INSERT INTO destructions (tenant_id, patient_ref, certificate_id, reason_code, actor) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    5, ap));
    /* While it is unfinished no hold can be placed (the hold check passed when it began). */
    vault_legal_hold h;
    EXPECT_MSG(vault_hold_place(f.store, f.rt, TENANT, pt2, "litigation", ACTOR, &h), BASE_ERR_CONFLICT,
               "destruction in progress");
    /* Step B, and what it reported saved in the row. */
    memset(&s, 0, sizeof s);
    MUST(vault_store_shred_keys(f.store, TENANT, pt2, &s));
    char ids_lit[128], recs[16], vers[16], kmin[16], kmax[16], kd[24];
    const char *first = strcmp(pt2, it2) < 0 ? pt2 : it2, *second = strcmp(pt2, it2) < 0 ? it2 : pt2;
    snprintf(ids_lit, sizeof ids_lit, "{%s,%s}", first, second);
    snprintf(recs, sizeof recs, "%u", s.records);
    snprintf(vers, sizeof vers, "%u", s.versions);
    snprintf(kmin, sizeof kmin, "%u", s.kek_min);
    snprintf(kmax, sizeof kmax, "%u", s.kek_max);
    snprintf(kd, sizeof kd, "%" PRId64, s.keys_destroyed_us);
    const char *bp[] = {TENANT, pt2, recs, vers, ids_lit, kmin, kmax, kd};
    MUST(exec_sql_p(
        f.rt,
        "UPDATE destructions SET records = $3::integer, versions = $4::integer, record_ids = $5::text[], "
        "kek_min = $6::integer, kek_max = $7::integer, "
        "keys_destroyed_at = timestamptz 'epoch' + $8::bigint * interval '1 microsecond' "
        "WHERE tenant_id = $1 AND patient_ref = $2",
        8, bp));
    /* Step C; then the crash. */
    MUST(vault_store_shred_rows(f.store, TENANT, pt2, &s));
    vault_shred_summary_free(&s);
    assert_int_equal(patient_rows(&f, TENANT, pt2), 0);
    MUST(vault_lifecycle_destroy_patient(f.store, f.rt, f.signer, TENANT, pt2, "retention_expired",
                                         "pr_second_officer", &cert));
    assert_string_equal(cert.certificate_id, cid);
    const char *ids2[] = {pt2, it2};
    MUST(vault_certificate_verify(cert.statement, cert.statement_len, cert.signature, sizeof cert.signature,
                                  cert.verifier_key));
    assert_int_equal(cert.records, 2);
    assert_int_equal(cert.versions, 2);
    assert_non_null(strstr(cert.statement, "\"actor\":\"pr_first_officer\""));
    assert_non_null(strstr(cert.statement, "\"reason_code\":\"patient_request_state_law\""));
    assert_non_null(strstr(cert.statement, ids2[0]));
    assert_non_null(strstr(cert.statement, ids2[1]));
    const char *pp[] = {TENANT, pt2};
    assert_int_equal(
        query_int_p(f.owner, "SELECT count(*) FROM destructions WHERE tenant_id = $1 AND patient_ref = $2", 2,
                    pp),
        0);
    vault_certificate_clear(&cert);
    fx_close(&f);
}

/* ---- amendments -----------------------------------------------------------------------------------------
 */

static void test_amendments(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], it[VAULT_ID_BUF], pt_b[VAULT_ID_BUF];
    mk_patient(&f, TENANT, pt);
    put_note(&f, TENANT, pt, it, 0, 4, NULL);
    mk_patient(&f, TENANT, pt_b);

    vault_amendment a, got;
    EXPECT_ERR(vault_amendment_create(f.store, f.rt, TENANT, pt_b, it, ACTOR, &a), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(vault_amendment_create(f.store, f.rt, "other-tenant", pt, it, ACTOR, &a), BASE_ERR_NOT_FOUND);
    EXPECT_ERR(vault_amendment_create(f.store, f.rt, TENANT, pt, "xx_123", ACTOR, &a), BASE_ERR_INVALID);
    MUST(vault_amendment_create(f.store, f.rt, TENANT, pt, it, "pr_intake", &a));
    assert_int_equal(strncmp(a.request_id, "am_", 3), 0);
    assert_int_equal(a.status, VAULT_AMENDMENT_RECEIVED);
    assert_string_equal(a.record_id, it);
    assert_int_equal(a.due_us - a.received_us, 60 * DAY_US);
    assert_int_equal(a.decided_us, 0);

    /* Extend once: +30 days. */
    MUST(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_EXTENDED, 0, ACTOR, &got));
    assert_int_equal(got.status, VAULT_AMENDMENT_EXTENDED);
    assert_int_equal(got.due_us - got.received_us, 90 * DAY_US);
    assert_true(got.extended_us >= got.received_us);
    EXPECT_MSG(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_EXTENDED, 0, ACTOR, &got),
               BASE_ERR_CONFLICT, "already extended");
    /* Accepting needs the amended version. */
    EXPECT_MSG(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_ACCEPTED, 0, ACTOR, &got),
               BASE_ERR_CONFLICT, "no record version");
    /* A version of another record naming the request does not count. */
    char it_other[VAULT_ID_BUF];
    put_note(&f, TENANT, pt, it_other, 0, 4, a.request_id);
    EXPECT_MSG(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_ACCEPTED, 0, ACTOR, &got),
               BASE_ERR_CONFLICT, "no record version");
    assert_int_equal(put_note(&f, TENANT, pt, it, 1, 4, a.request_id), 2);
    EXPECT_ERR(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_ACCEPTED, 2, ACTOR, &got),
               BASE_ERR_INVALID);
    MUST(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_ACCEPTED, 0, "pr_decider", &got));
    assert_int_equal(got.status, VAULT_AMENDMENT_ACCEPTED);
    assert_int_equal(got.amended_version, 2);
    assert_string_equal(got.decided_by, "pr_decider");
    assert_true(got.decided_us > 0);
    EXPECT_MSG(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_DENIED, 4, ACTOR, &got),
               BASE_ERR_CONFLICT, "already decided");
    EXPECT_MSG(vault_amendment_decide(f.rt, TENANT, a.request_id, VAULT_AMENDMENT_EXTENDED, 0, ACTOR, &got),
               BASE_ERR_CONFLICT, "already decided");

    vault_amendment_event ev[4];
    size_t nev = 0;
    MUST(vault_amendment_events(f.rt, TENANT, a.request_id, ev, &nev));
    assert_int_equal(nev, 3);
    assert_int_equal(ev[0].status, VAULT_AMENDMENT_RECEIVED);
    assert_string_equal(ev[0].actor, "pr_intake");
    assert_int_equal(ev[1].status, VAULT_AMENDMENT_EXTENDED);
    assert_int_equal(ev[2].status, VAULT_AMENDMENT_ACCEPTED);
    assert_string_equal(ev[2].actor, "pr_decider");

    /* Denying needs a basis. */
    vault_amendment b;
    MUST(vault_amendment_create(f.store, f.rt, TENANT, pt, pt, ACTOR, &b));
    EXPECT_ERR(vault_amendment_decide(f.rt, TENANT, b.request_id, VAULT_AMENDMENT_DENIED, 0, ACTOR, &got),
               BASE_ERR_INVALID);
    EXPECT_ERR(vault_amendment_decide(f.rt, TENANT, b.request_id, VAULT_AMENDMENT_DENIED, 5, ACTOR, &got),
               BASE_ERR_INVALID);
    EXPECT_ERR(vault_amendment_decide(f.rt, TENANT, b.request_id, VAULT_AMENDMENT_RECEIVED, 0, ACTOR, &got),
               BASE_ERR_INVALID);
    EXPECT_ERR(
        vault_amendment_decide(f.rt, "other-tenant", b.request_id, VAULT_AMENDMENT_DENIED, 4, ACTOR, &got),
        BASE_ERR_NOT_FOUND);
    MUST(vault_amendment_decide(f.rt, TENANT, b.request_id, VAULT_AMENDMENT_DENIED,
                                VAULT_DENIAL_ACCURATE_AND_COMPLETE, ACTOR, &got));
    assert_int_equal(got.status, VAULT_AMENDMENT_DENIED);
    assert_int_equal(got.denial_basis, VAULT_DENIAL_ACCURATE_AND_COMPLETE);
    assert_int_equal(got.amended_version, 0);
    MUST(vault_amendment_events(f.rt, TENANT, b.request_id, ev, &nev));
    assert_int_equal(nev, 2);
    assert_int_equal(ev[1].status, VAULT_AMENDMENT_DENIED);

    /* Past the due date: no extension (received 61 days ago, behind the guard's back), a decision still. */
    vault_amendment c;
    MUST(vault_amendment_create(f.store, f.rt, TENANT, pt, it, ACTOR, &c));
    const char *cp[] = {c.request_id};
    MUST(exec_sql(f.owner, "ALTER TABLE amendment_requests DISABLE TRIGGER amendment_requests_guard"));
    MUST(exec_sql_p(f.owner,
                    "UPDATE amendment_requests SET received_at = received_at - interval '61 days', "
                    "due_at = due_at - interval '61 days' WHERE request_id = $1",
                    1, cp));
    MUST(exec_sql(f.owner, "ALTER TABLE amendment_requests ENABLE TRIGGER amendment_requests_guard"));
    EXPECT_MSG(vault_amendment_decide(f.rt, TENANT, c.request_id, VAULT_AMENDMENT_EXTENDED, 0, ACTOR, &got),
               BASE_ERR_CONFLICT, "past its due date");
    MUST(vault_amendment_get(f.rt, TENANT, c.request_id, &got));
    assert_int_equal(got.status, VAULT_AMENDMENT_RECEIVED);

    /* Lists: the patient's, oldest first; the tenant's open ones. */
    vault_amendment *list = NULL;
    size_t n = 0;
    MUST(vault_amendments_list(f.rt, TENANT, pt, &list, &n));
    assert_int_equal(n, 3);
    assert_string_equal(list[0].request_id, c.request_id); /* received 61 days ago */
    assert_string_equal(list[1].request_id, a.request_id);
    free(list);
    MUST(vault_amendments_list(f.rt, TENANT, "", &list, &n));
    assert_int_equal(n, 1);
    assert_string_equal(list[0].request_id, c.request_id);
    free(list);
    MUST(vault_amendments_list(f.rt, TENANT, pt_b, &list, &n));
    assert_int_equal(n, 0);
    MUST(vault_amendment_get(f.rt, TENANT, a.request_id, &got));
    assert_int_equal(got.amended_version, 2);
    EXPECT_ERR(vault_amendment_get(f.rt, "other-tenant", a.request_id, &got), BASE_ERR_NOT_FOUND);

    /* Nothing is deleted; events are append-only; a decision cannot be rewritten behind the library. */
    const char *ap[] = {a.request_id};
    EXPECT_ERR(exec_sql_p(f.rt, "DELETE FROM amendment_requests WHERE request_id = $1", 1, ap),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.rt, "DELETE FROM amendment_events WHERE request_id = $1", 1, ap),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.rt, "UPDATE amendment_events SET actor = 'x' WHERE request_id = $1", 1, ap),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.owner, "UPDATE amendment_events SET actor = 'x' WHERE request_id = $1", 1, ap),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql_p(f.owner, "DELETE FROM amendment_events WHERE request_id = $1", 1, ap),
               BASE_ERR_DENIED);
    EXPECT_ERR(
        exec_sql_p(f.rt,
                   "UPDATE amendment_requests SET status = 4, denial_basis = 1, amended_version = NULL "
                   "WHERE request_id = $1",
                   1, ap),
        BASE_ERR_DENIED);
    const char *cp2[] = {c.request_id};
    EXPECT_ERR(exec_sql_p(f.rt,
                          "UPDATE amendment_requests SET status = 3, decided_at = now(), decided_by = 'x', "
                          "amended_version = 1 WHERE request_id = $1",
                          1, cp2),
               BASE_ERR_DENIED); /* no version names it */
    fx_close(&f);
}

/* ---- offboarding ----------------------------------------------------------------------------------------
 */

static void test_offboarding(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], it[VAULT_ID_BUF], pt2[VAULT_ID_BUF];
    mk_patient(&f, TENANT, pt);
    put_note(&f, TENANT, pt, it, 0, 4, NULL);
    uint32_t kv = 0;
    MUST(vault_store_rotate(f.store, TENANT, &kv));
    assert_int_equal(kv, 2);
    put_note(&f, TENANT, pt, it, 1, 4, NULL);
    mk_patient(&f, TENANT, pt2);
    mk_patient(&f, "bystander", pt2); /* another tenant: untouched */

    static const char sha[] = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    vault_certificate cert, again;
    EXPECT_ERR(vault_lifecycle_offboard_tenant(f.store, f.rt, f.signer, TENANT, ACTOR, "abc", 2, &cert),
               BASE_ERR_INVALID);
    MUST(vault_lifecycle_offboard_tenant(f.store, f.rt, f.signer, TENANT, ACTOR, sha, 2, &cert));
    MUST(vault_certificate_verify(cert.statement, cert.statement_len, cert.signature, sizeof cert.signature,
                                  cert.verifier_key));
    assert_string_equal(cert.patient_ref, "");
    assert_int_equal(cert.records, 3);
    assert_int_equal(cert.versions, 4);
    json_error_t err;
    json_t *o = json_loads(cert.statement, 0, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "type")), VAULT_OFFBOARDING_TYPE);
    assert_string_equal(json_string_value(json_object_get(o, "tenant_id")), TENANT);
    assert_string_equal(json_string_value(json_object_get(o, "export_sha256")), sha);
    assert_int_equal(json_integer_value(json_object_get(o, "patients_exported")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "kek_versions_destroyed")), 2);
    assert_null(json_object_get(o, "patient_ref"));
    json_decref(o);

    /* Nothing of the tenant can be read or written any more; the other tenant is fine. */
    vault_record rec;
    memset(&rec, 0, sizeof rec);
    base_result r = vault_store_get(f.store, TENANT, it, 0, VAULT_ALL_CATEGORIES, &rec);
    assert_false(base_is_ok(r));
    char it3[VAULT_ID_BUF];
    vault_random_id("it_", it3);
    static const char note[] = "{}";
    vault_put put = {
        .tenant_id = TENANT, .record_id = it3, .patient_ref = pt, .kind = 5, .created_by = ACTOR};
    put.parts[4] = (const uint8_t *)note;
    put.part_len[4] = 2;
    uint32_t v = 0;
    int64_t at = 0;
    EXPECT_ERR(vault_store_put(f.store, &put, &v, &at), BASE_ERR_CONFLICT);
    MUST(vault_store_get(f.store, "bystander", pt2, 0, VAULT_ALL_CATEGORIES, &rec));
    vault_record_clear(&rec);

    /* A repeat returns the stored certificate. */
    MUST(vault_lifecycle_offboard_tenant(f.store, f.rt, f.signer, TENANT, ACTOR, sha, 2, &again));
    assert_string_equal(again.certificate_id, cert.certificate_id);
    assert_string_equal(again.statement, cert.statement);
    vault_certificate_clear(&again);
    MUST(vault_certificate_get(f.rt, TENANT, cert.certificate_id, &again));
    assert_string_equal(again.patient_ref, "");
    vault_certificate_clear(&again);
    vault_certificate_clear(&cert);
    fx_close(&f);
}

/* ---- group ----------------------------------------------------------------------------------------------
 */

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_uri, sizeof g_uri, "%s", testenv_pg_uri());
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_prefix, sizeof g_prefix, "vlc_%d_%lx", (int)getpid(),
             (unsigned long)(ts.tv_nsec ^ ts.tv_sec) & 0xfffff);
    snprintf(g_role, sizeof g_role, "%s_rt", g_prefix);
    char port[16] = "5432";
    const char *colon = strrchr(g_uri, ':'); /* postgresql://postgres@127.0.0.1:PORT/postgres */
    if (colon) {
        size_t n = strcspn(colon + 1, "/");
        snprintf(port, sizeof port, "%.*s", (int)n, colon + 1);
    }
    snprintf(g_rt_conninfo, sizeof g_rt_conninfo,
             "host=127.0.0.1 port=%s dbname=postgres user=%s password=" RT_PASSWD, port, g_role);
    MUST(db_pool_create(g_uri, 2, 5000, &g_root));
    testdb_role_create(g_root, g_role, RT_PASSWD, false);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testdb_role_drop(g_root, g_role);
    db_pool_destroy(g_root);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_legal_hold_blocks_destroy),
        cmocka_unit_test(test_retention_blocks_destroy),
        cmocka_unit_test(test_destroy_certificate),
        cmocka_unit_test(test_destroy_retry),
        cmocka_unit_test(test_amendments),
        cmocka_unit_test(test_offboarding),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
