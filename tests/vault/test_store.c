/* The vault store against the real PostgreSQL of the "pg" fixture, run as production runs it: the schema is
 * migrated by an owner role (no superuser) and the store uses a least-privilege runtime role holding only
 * what grant_runtime() gives it. A superuser pool plays the attacker with database access (a changed byte,
 * parts and keys moved between rows, a row moved to another tenant) and the backup that outlives a shred. */
#include "crypto/crypto.h"
#include "db/db.h"
#include "keyprovider.h"
#include "store.h"
#include "testdb.h"
#include "testenv.h"

#include <inttypes.h>
#include <pthread.h>
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

#define ACTOR "usr_0123456789abcdef0123456789abcdef"
#define PW    "vault-store-test-pw"

static char g_uri[512], g_port[16], g_prefix[40], g_owner[64], g_runtime[64];
static int g_nschema;
static db_pool *g_root; /* superuser, no search_path */

/* ---- Fixture ------------------------------------------------------------------------------------------- */

typedef struct fx {
    char schema[64];
    db_pool *rt;   /* runtime role: the store's pool */
    db_pool *root; /* superuser, search_path = schema: the attacker and the backup */
    acrypto_secret *master;
    vault_keyprovider *kp;
    vault_store *s;
} fx;

static void conninfo_for(const char *role, char out[256])
{
    snprintf(out, 256, "host=127.0.0.1 port=%s dbname=postgres user=%s password=" PW, g_port, role);
}

static void fx_open(fx *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->schema, sizeof f->schema, "%s_%d", g_prefix, g_nschema++);
    char owner[256], runtime[256];
    conninfo_for(g_owner, owner);
    conninfo_for(g_runtime, runtime);
    f->rt = testdb_pool(runtime, f->schema, 8);
    MUST(db_migrate_as_owner(f->rt, owner, f->schema, "alma-test", vault_store_migrate));
    f->root = testdb_pool(g_uri, f->schema, 2);
    MUST(acrypto_secret_random(32, &f->master));
    MUST(vault_keyprovider_from_secret(f->master, &f->kp));
    MUST(vault_store_open(f->rt, f->kp, &f->s));
}

static void fx_close(fx *f)
{
    vault_store_close(f->s);
    vault_keyprovider_free(f->kp);
    acrypto_secret_free(f->master);
    db_pool_destroy(f->rt);
    db_pool_destroy(f->root);
    testdb_drop_schema(g_root, f->schema);
}

static base_result exec_sql(db_pool *pool, const char *sql, int n, const char *const *p)
{
    db_conn *c = NULL;
    BASE_GUARD(db_pool_acquire(pool, 5000, &c));
    base_result r = db_exec(c, sql, n, p, NULL);
    db_conn_release(c);
    return r;
}

static int64_t query_int(db_pool *pool, const char *sql, int n, const char *const *p)
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

/* Tamper as the superuser with the records guard off (an attacker with database access). */
static void tamper(fx *f, const char *sql, int n, const char *const *p)
{
    MUST(exec_sql(f->root, "ALTER TABLE records DISABLE TRIGGER records_guard", 0, NULL));
    MUST(exec_sql(f->root, sql, n, p));
    MUST(exec_sql(f->root, "ALTER TABLE records ENABLE TRIGGER records_guard", 0, NULL));
}

/* ---- Records ------------------------------------------------------------------------------------------- */

static const char *const CAT_TEXT[VAULT_CATEGORY_MAX + 1] = {
    NULL,
    "demographic: Jane Q Testpatient 1970-01-01",
    "contact: 1 Main St, +1 555 0100",
    "identifier: MRN 123-45-6789",
    "clinical: type 2 diabetes, HbA1c 8.1%",
    "sensitive: behavioral health note",
    "financial: plan 42 member M-777",
};

typedef struct rec_in {
    const char *text[VAULT_CATEGORY_MAX + 1];
} rec_in;

static vault_put mk_put(const char *tenant, const char *record_id, const char *patient_ref, int kind,
                        uint32_t expected, unsigned cats, const rec_in *in)
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
        if (!(cats & VAULT_CATEGORY_BIT(c)))
            continue;
        const char *t = in && in->text[c] ? in->text[c] : CAT_TEXT[c];
        p.parts[c] = (const uint8_t *)t;
        p.part_len[c] = strlen(t);
    }
    return p;
}

static void new_patient(fx *f, const char *tenant, char id[VAULT_ID_BUF], unsigned cats)
{
    vault_random_id("pt_", id);
    vault_put p = mk_put(tenant, id, id, 1, 0, cats, NULL);
    uint32_t v = 0;
    MUST(vault_store_put(f->s, &p, &v, NULL));
    assert_int_equal(v, 1);
}

static void new_item(fx *f, const char *tenant, const char *patient, int kind, char id[VAULT_ID_BUF],
                     unsigned cats)
{
    vault_random_id("it_", id);
    vault_put p = mk_put(tenant, id, patient, kind, 0, cats, NULL);
    MUST(vault_store_put(f->s, &p, NULL, NULL));
}

static void expect_part(const vault_record *r, int c, const char *text)
{
    if (!r->parts[c])
        fail_msg("category %d missing", c);
    assert_int_equal(acrypto_secret_len(r->parts[c]), strlen(text));
    assert_memory_equal(acrypto_secret_bytes(r->parts[c]), text, strlen(text));
}

static void expect_no_parts(const vault_record *r)
{
    for (int c = 0; c <= VAULT_CATEGORY_MAX; c++)
        assert_null(r->parts[c]);
}

/* get must fail with err and return nothing. */
static void expect_get_fails(fx *f, vault_store *s, const char *tenant, const char *id, uint32_t version,
                             unsigned mask, base_err err)
{
    vault_record r;
    memset(&r, 0, sizeof r);
    EXPECT_ERR(vault_store_get(s, tenant, id, version, mask, &r), err);
    expect_no_parts(&r);
    assert_string_equal(r.record_id, "");
    if (err == BASE_ERR_CRYPTO)
        assert_string_equal(base_error_message(), "record failed its integrity check");
    (void)f;
}

/* ---- Tests --------------------------------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], it[VAULT_ID_BUF];
    vault_random_id("pt_", pt);
    vault_put p = mk_put("acme", pt, pt, 1, 0, VAULT_ALL_CATEGORIES, NULL);
    uint32_t v = 0;
    int64_t created = 0;
    MUST(vault_store_put(f.s, &p, &v, &created));
    assert_int_equal(v, 1);
    assert_true(created > 1600000000000000LL);

    /* Each category alone, then all. */
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        vault_record r;
        MUST(vault_store_get(f.s, "acme", pt, 0, VAULT_CATEGORY_BIT(c), &r));
        for (int o = 1; o <= VAULT_CATEGORY_MAX; o++) {
            if (o == c)
                expect_part(&r, c, CAT_TEXT[c]);
            else
                assert_null(r.parts[o]);
        }
        vault_record_clear(&r);
    }
    vault_record r;
    MUST(vault_store_get(f.s, "acme", pt, 1, VAULT_ALL_CATEGORIES, &r));
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
        expect_part(&r, c, CAT_TEXT[c]);
    assert_string_equal(r.record_id, pt);
    assert_string_equal(r.patient_ref, pt);
    assert_int_equal(r.kind, 1);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.categories, VAULT_ALL_CATEGORIES);
    assert_int_equal(r.kek_version, 1);
    assert_int_equal(r.created_us, created);
    assert_string_equal(r.created_by, ACTOR);
    assert_string_equal(r.amendment_request_id, "");
    vault_record_clear(&r);
    MUST(vault_store_head(f.s, "acme", pt, 0, &r));
    expect_no_parts(&r);
    assert_int_equal(r.categories, VAULT_ALL_CATEGORIES);

    /* Binary parts with zero bytes; an empty part; an amendment; a clinical item. */
    static const uint8_t bin[] = {0, 1, 2, 0, 255, 0};
    char am[VAULT_ID_BUF];
    vault_random_id("am_", am);
    vault_random_id("it_", it);
    vault_put ip = mk_put("acme", it, pt, 3, 0, VAULT_CATEGORY_BIT(4), NULL);
    ip.parts[4] = bin;
    ip.part_len[4] = sizeof bin;
    ip.parts[5] = (const uint8_t *)"";
    ip.part_len[5] = 0;
    ip.amendment_request_id = am;
    MUST(vault_store_put(f.s, &ip, &v, NULL));
    MUST(vault_store_get(f.s, "acme", it, 0, VAULT_ALL_CATEGORIES, &r));
    assert_int_equal(r.kind, 3);
    assert_int_equal(r.categories, VAULT_CATEGORY_BIT(4) | VAULT_CATEGORY_BIT(5));
    assert_int_equal(acrypto_secret_len(r.parts[4]), sizeof bin);
    assert_memory_equal(acrypto_secret_bytes(r.parts[4]), bin, sizeof bin);
    assert_int_equal(acrypto_secret_len(r.parts[5]), 0);
    assert_null(r.parts[1]);
    assert_string_equal(r.amendment_request_id, am);
    vault_record_clear(&r);

    /* Postgres never sees the plaintext. */
    const char *needle[] = {"Testpatient"};
    assert_int_equal(query_int(f.root,
                               "SELECT count(*) FROM records WHERE position(convert_to($1, 'UTF8') IN "
                               "coalesce(part_demographic, '') || coalesce(part_clinical, '')) > 0",
                               1, needle),
                     0);

    /* Versions: expected_version. */
    rec_in v2 = {.text = {[4] = "clinical: v2"}};
    vault_put up = mk_put("acme", pt, pt, 1, 1, VAULT_CATEGORY_BIT(4), &v2);
    MUST(vault_store_put(f.s, &up, &v, NULL));
    assert_int_equal(v, 2);
    EXPECT_ERR(vault_store_put(f.s, &up, &v, NULL), BASE_ERR_CONFLICT); /* expected 1, latest is 2 */
    assert_string_equal(base_error_message(), "record changed since expected_version");
    up.expected_version = 5;
    EXPECT_ERR(vault_store_put(f.s, &up, &v, NULL), BASE_ERR_CONFLICT);
    up.expected_version = 0;
    EXPECT_ERR(vault_store_put(f.s, &up, &v, NULL), BASE_ERR_EXISTS);
    MUST(vault_store_get(f.s, "acme", pt, 0, VAULT_ALL_CATEGORIES, &r));
    assert_int_equal(r.version, 2);
    assert_int_equal(r.categories, VAULT_CATEGORY_BIT(4));
    expect_part(&r, 4, "clinical: v2");
    vault_record_clear(&r);
    MUST(vault_store_get(f.s, "acme", pt, 1, VAULT_CATEGORY_BIT(4), &r));
    expect_part(&r, 4, CAT_TEXT[4]);
    vault_record_clear(&r);

    /* Not found: a missing record, version, tenant; an item of another patient; no patient. */
    char other[VAULT_ID_BUF], ghost[VAULT_ID_BUF];
    new_patient(&f, "acme", other, VAULT_CATEGORY_BIT(1));
    vault_random_id("pt_", ghost);
    expect_get_fails(&f, f.s, "acme", ghost, 0, VAULT_ALL_CATEGORIES, BASE_ERR_NOT_FOUND);
    expect_get_fails(&f, f.s, "acme", pt, 3, VAULT_ALL_CATEGORIES, BASE_ERR_NOT_FOUND);
    expect_get_fails(&f, f.s, "other-tenant", pt, 0, VAULT_ALL_CATEGORIES, BASE_ERR_NOT_FOUND);
    vault_put wrongpt = mk_put("acme", it, other, 3, 1, VAULT_CATEGORY_BIT(4), NULL);
    EXPECT_ERR(vault_store_put(f.s, &wrongpt, &v, NULL), BASE_ERR_NOT_FOUND);
    vault_put missing = mk_put("acme", ghost, ghost, 1, 1, VAULT_CATEGORY_BIT(4), NULL);
    EXPECT_ERR(vault_store_put(f.s, &missing, &v, NULL), BASE_ERR_NOT_FOUND);
    char orphan[VAULT_ID_BUF];
    vault_random_id("it_", orphan);
    vault_put op = mk_put("acme", orphan, ghost, 2, 0, VAULT_CATEGORY_BIT(4), NULL);
    EXPECT_ERR(vault_store_put(f.s, &op, &v, NULL), BASE_ERR_NOT_FOUND);

    /* Refused before anything is written. */
    vault_put bad = mk_put("Acme!", pt, pt, 1, 0, VAULT_CATEGORY_BIT(1), NULL);
    EXPECT_ERR(vault_store_put(f.s, &bad, &v, NULL), BASE_ERR_INVALID);
    bad = mk_put("acme", pt, pt, 1, 0, 0, NULL);
    EXPECT_ERR(vault_store_put(f.s, &bad, &v, NULL), BASE_ERR_INVALID);
    bad = mk_put("acme", it, pt, 1, 0, VAULT_CATEGORY_BIT(1), NULL); /* a patient whose id is not its ref */
    EXPECT_ERR(vault_store_put(f.s, &bad, &v, NULL), BASE_ERR_INVALID);
    bad = mk_put("acme", pt, pt, 1, 2, VAULT_CATEGORY_BIT(1), NULL);
    bad.part_len[1] = VAULT_PART_MAX + 1;
    EXPECT_ERR(vault_store_put(f.s, &bad, &v, NULL), BASE_ERR_LIMIT);
    vault_blind bl = {VAULT_BLIND_MRN, "1", 1};
    bad = mk_put("acme", it, pt, 3, 1, VAULT_CATEGORY_BIT(4), NULL);
    bad.blind = &bl;
    bad.blind_count = 1;
    EXPECT_ERR(vault_store_put(f.s, &bad, &v, NULL), BASE_ERR_INVALID); /* blind values on an item */
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM records", 0, NULL), 4);
    fx_close(&f);
}

static void test_integrity(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], a[VAULT_ID_BUF], b[VAULT_ID_BUF], c[VAULT_ID_BUF], d[VAULT_ID_BUF],
        e[VAULT_ID_BUF];
    new_patient(&f, "acme", pt, VAULT_ALL_CATEGORIES);
    new_item(&f, "acme", pt, 2, a, VAULT_CATEGORY_BIT(1) | VAULT_CATEGORY_BIT(4));
    new_item(&f, "acme", pt, 2, b, VAULT_CATEGORY_BIT(1) | VAULT_CATEGORY_BIT(4));
    new_item(&f, "acme", pt, 2, c, VAULT_CATEGORY_BIT(4));
    new_item(&f, "acme", pt, 2, d, VAULT_CATEGORY_BIT(4));
    new_item(&f, "acme", pt, 2, e, VAULT_CATEGORY_BIT(4));

    /* (a) One flipped bit in a part: that part fails, the record's other part still opens. */
    const char *pa[] = {a};
    tamper(&f,
           "UPDATE records SET part_clinical = set_byte(part_clinical, 20, get_byte(part_clinical, 20) # 1) "
           "WHERE record_id = $1",
           1, pa);
    expect_get_fails(&f, f.s, "acme", a, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CRYPTO);
    expect_get_fails(&f, f.s, "acme", a, 0, VAULT_ALL_CATEGORIES, BASE_ERR_CRYPTO);
    vault_record r;
    MUST(vault_store_get(f.s, "acme", a, 0, VAULT_CATEGORY_BIT(1), &r)); /* only what is asked is opened */
    expect_part(&r, 1, CAT_TEXT[1]);
    vault_record_clear(&r);

    /* (b) Parts and data keys copied between rows: b gets c's clinical part, d gets e's wrapped DEK. */
    const char *pbc[] = {b, c};
    tamper(&f,
           "UPDATE records SET part_clinical = (SELECT part_clinical FROM records WHERE record_id = $2) "
           "WHERE record_id = $1",
           2, pbc);
    expect_get_fails(&f, f.s, "acme", b, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CRYPTO);
    const char *pde[] = {d, e};
    tamper(&f,
           "UPDATE records SET wrapped_dek = (SELECT wrapped_dek FROM records WHERE record_id = $2) "
           "WHERE record_id = $1",
           2, pde);
    expect_get_fails(&f, f.s, "acme", d, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CRYPTO);
    /* Two rows swapped whole (ids exchanged): each row's key and parts are bound to the other id. */
    const char *tmp = "it_ffffffffffffffffffffffffffffffff";
    const char *s1[] = {tmp, c}, *s2[] = {c, e}, *s3[] = {e, tmp};
    tamper(&f, "UPDATE records SET record_id = $1 WHERE record_id = $2", 2, s1);
    tamper(&f, "UPDATE records SET record_id = $1 WHERE record_id = $2", 2, s2);
    tamper(&f, "UPDATE records SET record_id = $1 WHERE record_id = $2", 2, s3);
    expect_get_fails(&f, f.s, "acme", c, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CRYPTO);
    expect_get_fails(&f, f.s, "acme", e, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CRYPTO);
    /* A version renumbered. */
    const char *ppt[] = {pt};
    tamper(&f, "UPDATE records SET version = 9 WHERE record_id = $1", 1, ppt);
    expect_get_fails(&f, f.s, "acme", pt, 9, VAULT_CATEGORY_BIT(1), BASE_ERR_CRYPTO);

    /* (c) A row moved to another tenant (which has keys of its own). */
    char opt[VAULT_ID_BUF], moved[VAULT_ID_BUF];
    new_patient(&f, "other", opt, VAULT_CATEGORY_BIT(1));
    new_item(&f, "acme", pt, 2, moved, VAULT_CATEGORY_BIT(4));
    const char *pm[] = {moved, opt};
    tamper(&f, "UPDATE records SET tenant_id = 'other', patient_ref = $2 WHERE record_id = $1", 2, pm);
    expect_get_fails(&f, f.s, "other", moved, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CRYPTO);
    /* Untouched rows still open. */
    MUST(vault_store_get(f.s, "other", opt, 0, VAULT_CATEGORY_BIT(1), &r));
    expect_part(&r, 1, CAT_TEXT[1]);
    vault_record_clear(&r);
    fx_close(&f);
}

/* The key-level tamper and master-key tests, in a schema of their own. */
static void test_master_key(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF];
    new_patient(&f, "acme", pt, VAULT_CATEGORY_BIT(4));

    /* (d) Another master key: refused up front, no plaintext. */
    acrypto_secret *m2 = NULL;
    vault_keyprovider *kp2 = NULL;
    vault_store *s2 = NULL;
    MUST(acrypto_secret_random(32, &m2));
    MUST(vault_keyprovider_from_secret(m2, &kp2));
    MUST(vault_store_open(f.rt, kp2, &s2));
    expect_get_fails(&f, s2, "acme", pt, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CONFLICT);
    assert_string_equal(base_error_message(), "master key does not match the stored keys");
    EXPECT_ERR(vault_store_tenant_ensure(s2, "acme"), BASE_ERR_CONFLICT);
    char it[VAULT_ID_BUF];
    vault_random_id("it_", it);
    vault_put p = mk_put("acme", it, pt, 2, 0, VAULT_CATEGORY_BIT(4), NULL);
    EXPECT_ERR(vault_store_put(s2, &p, NULL, NULL), BASE_ERR_CONFLICT);
    char ps[VAULT_ID_BUF];
    EXPECT_ERR(vault_store_pseudonym(s2, "acme", pt, ps), BASE_ERR_CONFLICT);
    /* Stored ids forged to name the wrong master key: it passes the id check and still opens nothing. */
    const char *forged[] = {vault_keyprovider_id(kp2)};
    MUST(exec_sql(f.root, "UPDATE tenants SET provider_id = $1", 1, forged));
    MUST(exec_sql(f.root, "UPDATE tenant_keys SET provider_id = $1", 1, forged));
    vault_store_close(s2);
    MUST(vault_store_open(f.rt, kp2, &s2));
    expect_get_fails(&f, s2, "acme", pt, 0, VAULT_CATEGORY_BIT(4), BASE_ERR_CRYPTO);
    EXPECT_ERR(vault_store_put(s2, &p, NULL, NULL), BASE_ERR_CRYPTO);
    vault_store_close(s2);
    vault_keyprovider_free(kp2);
    acrypto_secret_free(m2);

    /* A flipped byte in the wrapped KEK: a fresh store with the right master key fails the integrity check.
     */
    char id[VAULT_KP_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", vault_keyprovider_id(f.kp));
    const char *pid[] = {id};
    MUST(exec_sql(f.root, "UPDATE tenants SET provider_id = $1", 1, pid));
    MUST(exec_sql(f.root, "UPDATE tenant_keys SET provider_id = $1", 1, pid));
    MUST(exec_sql(
        f.root, "UPDATE tenant_keys SET wrapped_key = set_byte(wrapped_key, 5, get_byte(wrapped_key, 5) # 1)",
        0, NULL));
    vault_store *s3 = NULL;
    MUST(vault_store_open(f.rt, f.kp, &s3));
    EXPECT_ERR(vault_store_get(s3, "acme", pt, 0, VAULT_CATEGORY_BIT(4), &(vault_record){0}),
               BASE_ERR_CRYPTO);
    vault_store_close(s3);
    fx_close(&f);
}

static void test_find_and_pseudonym(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char p1[VAULT_ID_BUF], p2[VAULT_ID_BUF], p3[VAULT_ID_BUF];
    vault_random_id("pt_", p1);
    vault_random_id("pt_", p2);
    vault_random_id("pt_", p3);
    vault_blind b1[] = {{VAULT_BLIND_MRN, "12345", 5},
                        {VAULT_BLIND_MEMBER_ID, "m-1", 3},
                        {VAULT_BLIND_MRN, "12345", 5}}; /* a duplicate is kept once */
    vault_blind b2[] = {{VAULT_BLIND_MRN, "99999", 5}};
    vault_blind b3[] = {{VAULT_BLIND_MRN, "12345", 5}, {VAULT_BLIND_NAME_DOB, "doe|jane|1970-01-01", 19}};
    vault_put p = mk_put("acme", p1, p1, 1, 0, VAULT_CATEGORY_BIT(1), NULL);
    p.blind = b1;
    p.blind_count = 3;
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    p = mk_put("acme", p2, p2, 1, 0, VAULT_CATEGORY_BIT(1), NULL);
    p.blind = b2;
    p.blind_count = 1;
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    p = mk_put("acme", p3, p3, 1, 0, VAULT_CATEGORY_BIT(1), NULL);
    p.blind = b3;
    p.blind_count = 2;
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM blind_index", 0, NULL), 5);

    char refs[VAULT_FIND_MAX][VAULT_ID_BUF];
    size_t n = 0;
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MRN, "12345", 5, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 2);
    const char *lo = strcmp(p1, p3) < 0 ? p1 : p3, *hi = lo == p1 ? p3 : p1;
    assert_string_equal(refs[0], lo);
    assert_string_equal(refs[1], hi);
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MRN, "12345", 5, refs, 1, &n));
    assert_int_equal(n, 1);
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MEMBER_ID, "12345", 5, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 0); /* the kind is part of the digest */
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_NAME_DOB, "doe|jane|1970-01-01", 19, refs, VAULT_FIND_MAX,
                          &n));
    assert_int_equal(n, 1);
    assert_string_equal(refs[0], p3);
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MRN, "1234", 4, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 0);
    MUST(vault_store_find(f.s, "nobody", VAULT_BLIND_MRN, "12345", 5, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 0);

    /* Only the latest version matches: p1's MRN changes. */
    vault_blind b1v2[] = {{VAULT_BLIND_MRN, "55555", 5}};
    p = mk_put("acme", p1, p1, 1, 1, VAULT_CATEGORY_BIT(1), NULL);
    p.blind = b1v2;
    p.blind_count = 1;
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MRN, "12345", 5, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 1);
    assert_string_equal(refs[0], p3);
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MRN, "55555", 5, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 1);
    assert_string_equal(refs[0], p1);
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MEMBER_ID, "m-1", 3, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 0);

    /* The same value in another tenant: another digest. */
    char q[VAULT_ID_BUF];
    vault_random_id("pt_", q);
    p = mk_put("beta", q, q, 1, 0, VAULT_CATEGORY_BIT(1), NULL);
    p.blind = b2;
    p.blind_count = 1;
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    assert_int_equal(query_int(f.root,
                               "SELECT count(*) FROM blind_index a JOIN blind_index b ON a.digest = b.digest "
                               "AND a.tenant_id <> b.tenant_id",
                               0, NULL),
                     0);
    MUST(vault_store_find(f.s, "beta", VAULT_BLIND_MRN, "99999", 5, refs, VAULT_FIND_MAX, &n));
    assert_int_equal(n, 1);
    assert_string_equal(refs[0], q);

    /* Pseudonyms: stable, per tenant and patient, "ps_" + 32 hex. */
    char ps1[VAULT_ID_BUF], ps1b[VAULT_ID_BUF], ps2[VAULT_ID_BUF], psb[VAULT_ID_BUF];
    MUST(vault_store_pseudonym(f.s, "acme", p1, ps1));
    MUST(vault_store_pseudonym(f.s, "acme", p2, ps2));
    MUST(vault_store_pseudonym(f.s, "beta", p1, psb));
    vault_store *fresh = NULL;
    MUST(vault_store_open(f.rt, f.kp, &fresh));
    MUST(vault_store_pseudonym(fresh, "acme", p1, ps1b));
    vault_store_close(fresh);
    assert_int_equal(strlen(ps1), VAULT_ID_LEN);
    assert_memory_equal(ps1, "ps_", 3);
    assert_string_equal(ps1, ps1b);
    assert_string_not_equal(ps1, ps2);
    assert_string_not_equal(ps1, psb);
    EXPECT_ERR(vault_store_pseudonym(f.s, "nobody", p1, ps1), BASE_ERR_NOT_FOUND);
    fx_close(&f);
}

static void test_list_and_history(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], other[VAULT_ID_BUF], items[7][VAULT_ID_BUF];
    new_patient(&f, "acme", pt, VAULT_CATEGORY_BIT(1));
    new_patient(&f, "acme", other, VAULT_CATEGORY_BIT(1));
    for (int i = 0; i < 7; i++)
        new_item(&f, "acme", pt, i % 2 ? 3 : 2, items[i], VAULT_CATEGORY_BIT(4));
    char oi[VAULT_ID_BUF];
    new_item(&f, "acme", other, 2, oi, VAULT_CATEGORY_BIT(4));
    /* items[0] gets versions 2 and 3. */
    rec_in t2 = {.text = {[4] = "clinical: second"}}, t3 = {.text = {[4] = "clinical: third"}};
    vault_put p = mk_put("acme", items[0], pt, 2, 1, VAULT_CATEGORY_BIT(4), &t2);
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    p = mk_put("acme", items[0], pt, 2, 2, VAULT_CATEGORY_BIT(4), &t3);
    MUST(vault_store_put(f.s, &p, NULL, NULL));

    char sorted[7][VAULT_ID_BUF];
    memcpy(sorted, items, sizeof sorted);
    qsort(sorted, 7, VAULT_ID_BUF, (int (*)(const void *, const void *))strcmp);
    char after[VAULT_ID_BUF] = "";
    size_t seen = 0;
    for (int page = 0; page < 5; page++) {
        vault_record *rs = NULL;
        size_t n = 0;
        bool more = false;
        MUST(vault_store_list(f.s, "acme", pt, 0, after, 3, VAULT_CATEGORY_BIT(4), &rs, &n, &more));
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(rs[i].record_id, sorted[seen + i]);
            assert_string_equal(rs[i].patient_ref, pt);
            if (strcmp(rs[i].record_id, items[0]) == 0) {
                assert_int_equal(rs[i].version, 3);
                expect_part(&rs[i], 4, "clinical: third");
            } else {
                assert_int_equal(rs[i].version, 1);
                expect_part(&rs[i], 4, CAT_TEXT[4]);
            }
        }
        seen += n;
        if (n)
            snprintf(after, sizeof after, "%s", rs[n - 1].record_id);
        vault_records_free(rs, n);
        assert_int_equal(more, seen < 7);
        if (!more)
            break;
    }
    assert_int_equal(seen, 7);
    vault_record *rs = NULL;
    size_t n = 0;
    bool more = true;
    MUST(vault_store_list(f.s, "acme", pt, 3, "", 100, 0, &rs, &n, &more));
    assert_int_equal(n, 3); /* kind 3: items 1, 3, 5 */
    assert_false(more);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rs[i].kind, 3);
        expect_no_parts(&rs[i]);
    }
    vault_records_free(rs, n);
    EXPECT_ERR(vault_store_list(f.s, "acme", pt, 1, "", 10, 0, &rs, &n, &more), BASE_ERR_INVALID);
    EXPECT_ERR(vault_store_list(f.s, "acme", pt, 0, "", 0, 0, &rs, &n, &more), BASE_ERR_INVALID);

    MUST(vault_store_history(f.s, "acme", items[0], VAULT_CATEGORY_BIT(4), &rs, &n));
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rs[i].version, i + 1);
    expect_part(&rs[0], 4, CAT_TEXT[4]);
    expect_part(&rs[1], 4, "clinical: second");
    expect_part(&rs[2], 4, "clinical: third");
    vault_records_free(rs, n);
    char ghost[VAULT_ID_BUF];
    vault_random_id("it_", ghost);
    EXPECT_ERR(vault_store_history(f.s, "acme", ghost, 0, &rs, &n), BASE_ERR_NOT_FOUND);

    /* Patients, paged. */
    char refs[2][VAULT_ID_BUF];
    MUST(vault_store_list_patients(f.s, "acme", "", refs, 1, &n));
    assert_int_equal(n, 1);
    const char *lo = strcmp(pt, other) < 0 ? pt : other, *hi = lo == pt ? other : pt;
    assert_string_equal(refs[0], lo);
    MUST(vault_store_list_patients(f.s, "acme", refs[0], refs, 2, &n));
    assert_int_equal(n, 1);
    assert_string_equal(refs[0], hi);
    MUST(vault_store_list_patients(f.s, "acme", hi, refs, 2, &n));
    assert_int_equal(n, 0);
    fx_close(&f);
}

typedef struct progress_log {
    int calls;
    uint64_t done[16], total[16];
} progress_log;

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
    progress_log *l = arg;
    if (l->calls < 16) {
        l->done[l->calls] = done;
        l->total[l->calls] = total;
    }
    l->calls++;
}

static uint64_t keys_under(const vault_key_status *st, uint32_t version)
{
    for (size_t i = 0; i < st->count; i++) {
        if (st->wrapped[i].version == version)
            return st->wrapped[i].data_keys;
    }
    return 0;
}

static void test_rotation(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pts[20][VAULT_ID_BUF];
    for (int i = 0; i < 20; i++)
        new_patient(&f, "acme", pts[i], VAULT_CATEGORY_BIT(1) | VAULT_CATEGORY_BIT(4));
    /* A second replica that has the tenant's v1 keys cached. */
    vault_store *replica = NULL;
    MUST(vault_store_open(f.rt, f.kp, &replica));
    char rp[VAULT_ID_BUF];
    vault_random_id("pt_", rp);
    vault_put p = mk_put("acme", rp, rp, 1, 0, VAULT_CATEGORY_BIT(4), NULL);
    MUST(vault_store_put(replica, &p, NULL, NULL));

    vault_key_status st;
    MUST(vault_store_key_status(f.s, "acme", &st));
    assert_int_equal(st.current_version, 1);
    assert_int_equal(st.min_decrypt_version, 1);
    assert_int_equal(st.count, 1);
    assert_int_equal(keys_under(&st, 1), 21);
    EXPECT_ERR(vault_store_retire(f.s, "acme", 2), BASE_ERR_INVALID); /* above current */
    EXPECT_ERR(vault_store_rotate(f.s, "nobody", NULL), BASE_ERR_NOT_FOUND);

    uint32_t v = 0;
    MUST(vault_store_rotate(f.s, "acme", &v));
    assert_int_equal(v, 2);
    char fresh[5][VAULT_ID_BUF];
    for (int i = 0; i < 5; i++)
        new_patient(&f, "acme", fresh[i], VAULT_CATEGORY_BIT(4));
    vault_record r;
    MUST(vault_store_head(f.s, "acme", fresh[0], 0, &r));
    assert_int_equal(r.kek_version, 2);
    /* The replica still has v1 as current; its put finds v2 and wraps with it. */
    p = mk_put("acme", rp, rp, 1, 1, VAULT_CATEGORY_BIT(4), NULL);
    MUST(vault_store_put(replica, &p, NULL, NULL));
    MUST(vault_store_head(f.s, "acme", rp, 2, &r));
    assert_int_equal(r.kek_version, 2);

    MUST(vault_store_key_status(f.s, "acme", &st));
    assert_int_equal(st.current_version, 2);
    assert_int_equal(keys_under(&st, 1), 21);
    assert_int_equal(keys_under(&st, 2), 6);
    EXPECT_ERR(vault_store_retire(f.s, "acme", 2), BASE_ERR_CONFLICT); /* before the rewrap */
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM tenant_keys WHERE wrapped_key IS NULL", 0, NULL),
                     0);

    progress_log log = {0};
    uint64_t done = 0;
    EXPECT_ERR(vault_store_rewrap(f.s, "acme", 0, NULL, NULL, &done), BASE_ERR_INVALID);
    MUST(vault_store_rewrap(f.s, "acme", 8, on_progress, &log, &done));
    assert_int_equal(done, 21);
    assert_int_equal(log.calls, 3);
    assert_int_equal(log.done[0], 8);
    assert_int_equal(log.done[1], 16);
    assert_int_equal(log.done[2], 21);
    assert_int_equal(log.total[0], 21);
    assert_int_equal(log.total[2], 21);
    MUST(vault_store_key_status(f.s, "acme", &st));
    assert_int_equal(st.count, 1);
    assert_int_equal(keys_under(&st, 2), 27);
    MUST(vault_store_rewrap(f.s, "acme", 8, NULL, NULL, &done));
    assert_int_equal(done, 0);

    MUST(vault_store_retire(f.s, "acme", 2));
    MUST(vault_store_retire(f.s, "acme", 2)); /* again: nothing to do */
    assert_int_equal(query_int(f.root,
                               "SELECT count(*) FROM tenant_keys WHERE version = 1 AND wrapped_key IS NULL "
                               "AND destroyed_at IS NOT NULL",
                               0, NULL),
                     1);
    assert_int_equal(query_int(f.root, "SELECT min_decrypt_version FROM tenants", 0, NULL), 2);
    MUST(vault_store_key_status(f.s, "acme", &st));
    assert_int_equal(st.min_decrypt_version, 2);

    /* Everything decrypts, from this store, the replica, and a fresh one (old KEK destroyed). */
    vault_store *cold = NULL;
    MUST(vault_store_open(f.rt, f.kp, &cold));
    vault_store *stores[] = {f.s, replica, cold};
    for (size_t k = 0; k < 3; k++) {
        for (int i = 0; i < 20; i++) {
            MUST(vault_store_get(stores[k], "acme", pts[i], 0, VAULT_ALL_CATEGORIES, &r));
            assert_int_equal(r.kek_version, 2);
            expect_part(&r, 1, CAT_TEXT[1]);
            expect_part(&r, 4, CAT_TEXT[4]);
            vault_record_clear(&r);
        }
        MUST(vault_store_get(stores[k], "acme", rp, 1, VAULT_CATEGORY_BIT(4), &r));
        expect_part(&r, 4, CAT_TEXT[4]);
        vault_record_clear(&r);
    }
    /* A version-1 wrapping put back by an attacker is refused, not opened with a cached old key. */
    const char *pp[] = {pts[0]};
    MUST(exec_sql(f.root, "ALTER TABLE records DISABLE TRIGGER records_guard", 0, NULL));
    MUST(exec_sql(f.root, "UPDATE records SET kek_version = 1 WHERE record_id = $1", 1, pp));
    MUST(exec_sql(f.root, "ALTER TABLE records ENABLE TRIGGER records_guard", 0, NULL));
    expect_get_fails(&f, replica, "acme", pts[0], 0, VAULT_CATEGORY_BIT(1), BASE_ERR_CRYPTO);
    /* Rotate twice more: versions 3 and 4; status lists what still wraps keys. */
    MUST(vault_store_rotate(f.s, "acme", &v));
    MUST(vault_store_rotate(f.s, "acme", &v));
    assert_int_equal(v, 4);
    vault_store_close(cold);
    vault_store_close(replica);
    fx_close(&f);
}

static void test_shredding(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], keep[VAULT_ID_BUF], items[3][VAULT_ID_BUF], kept_item[VAULT_ID_BUF];
    vault_random_id("pt_", pt);
    vault_blind bl[] = {{VAULT_BLIND_MRN, "777", 3}};
    vault_put p = mk_put("acme", pt, pt, 1, 0, VAULT_ALL_CATEGORIES, NULL);
    p.blind = bl;
    p.blind_count = 1;
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    p.expected_version = 1;
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    for (int i = 0; i < 3; i++)
        new_item(&f, "acme", pt, 2, items[i], VAULT_CATEGORY_BIT(4));
    p = mk_put("acme", items[0], pt, 2, 1, VAULT_CATEGORY_BIT(4), NULL);
    MUST(vault_store_put(f.s, &p, NULL, NULL));
    uint32_t v = 0;
    MUST(vault_store_rotate(f.s, "acme", &v));
    p.expected_version = 2;
    MUST(vault_store_put(f.s, &p, NULL, NULL)); /* items[0] v3 under KEK 2 */
    new_patient(&f, "acme", keep, VAULT_ALL_CATEGORIES);
    new_item(&f, "acme", keep, 2, kept_item, VAULT_CATEGORY_BIT(4));
    const char *ppt[] = {pt};
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM records WHERE patient_ref = $1", 1, ppt), 7);

    /* Step 1. */
    vault_shred_summary sum;
    memset(&sum, 0, sizeof sum);
    MUST(vault_store_shred_keys(f.s, "acme", pt, &sum));
    assert_int_equal(sum.records, 4);
    assert_int_equal(sum.versions, 7);
    assert_int_equal(sum.kek_min, 1);
    assert_int_equal(sum.kek_max, 2);
    assert_true(sum.keys_destroyed_us > 0);
    assert_int_equal(sum.rows_deleted_us, 0);
    for (uint32_t i = 1; i < sum.records; i++)
        assert_true(strcmp(sum.record_ids[i - 1], sum.record_ids[i]) < 0);
    bool found_pt = false;
    for (uint32_t i = 0; i < sum.records; i++)
        found_pt = found_pt || strcmp(sum.record_ids[i], pt) == 0;
    assert_true(found_pt);

    /* A dump taken now still holds the ciphertext ... */
    db_conn *c = NULL;
    db_result *res = NULL;
    const char *pq[] = {pt, "1"};
    MUST(db_pool_acquire(f.root, 5000, &c));
    MUST(db_exec(c, "SELECT part_clinical FROM records WHERE record_id = $1 AND version = $2::integer", 2, pq,
                 &res));
    assert_int_equal(db_result_ntuples(res), 1);
    uint8_t *ct = NULL;
    size_t ct_len = 0;
    MUST(db_result_get_bytea(res, 0, 0, &ct, &ct_len));
    db_result_free(res);
    assert_true(ct_len > ACRYPTO_GCM_OVERHEAD);
    /* ... but no wrapped key of the patient is left anywhere ... */
    assert_int_equal(
        query_int(f.root, "SELECT count(*) FROM records WHERE patient_ref = $1 AND wrapped_dek IS NOT NULL",
                  1, ppt),
        0);
    /* ... and no data key the tenant still has opens it: every remaining wrapped DEK, unwrapped with the
     * tenant's KEKs (read and unwrapped here the way the store does), fails on it. */
    acrypto_secret *keks[3] = {NULL};
    MUST(db_exec(c, "SELECT version, wrapped_key FROM tenant_keys WHERE tenant_id = 'acme' ORDER BY version",
                 0, NULL, &res));
    assert_int_equal(db_result_ntuples(res), 2);
    for (int i = 0; i < 2; i++) {
        uint8_t *w = NULL;
        size_t wl = 0;
        char ad[64];
        MUST(db_result_get_bytea(res, i, 1, &w, &wl));
        int n = snprintf(ad, sizeof ad, "alma-vault-kek|v1|acme|%d", i + 1);
        MUST(vault_keyprovider_unwrap(f.kp, ad, (size_t)n, w, wl, &keks[i + 1]));
        free(w);
    }
    db_result_free(res);
    MUST(db_exec(c,
                 "SELECT record_id, version, kek_version, wrapped_dek FROM records "
                 "WHERE tenant_id = 'acme' AND wrapped_dek IS NOT NULL",
                 0, NULL, &res));
    int remaining = db_result_ntuples(res);
    assert_int_equal(remaining, 2);
    char part_ad[128];
    int part_ad_len = snprintf(part_ad, sizeof part_ad, "alma-vault-part|v1|acme|%s|1|4", pt);
    for (int i = 0; i < remaining; i++) {
        int64_t ver = 0, k = 0;
        uint8_t *w = NULL, out[256];
        size_t wl = 0, got = 0;
        char ad[128];
        MUST(db_result_get_int64(res, i, 1, &ver));
        MUST(db_result_get_int64(res, i, 2, &k));
        MUST(db_result_get_bytea(res, i, 3, &w, &wl));
        int n = snprintf(ad, sizeof ad, "alma-vault-dek|v1|acme|%s|%" PRId64 "|%" PRId64,
                         db_result_get(res, i, 0), ver, k);
        acrypto_secret *dek = NULL;
        MUST(acrypto_gcm_open_secret(keks[k], ad, (size_t)n, w, wl, &dek)); /* a live key opens its own row */
        EXPECT_ERR(acrypto_gcm_open(dek, part_ad, (size_t)part_ad_len, ct, ct_len, out, sizeof out, &got),
                   BASE_ERR_CRYPTO);
        acrypto_secret_free(dek);
        free(w);
    }
    db_result_free(res);
    db_conn_release(c);
    acrypto_secret_free(keks[1]);
    acrypto_secret_free(keks[2]);
    free(ct);

    /* Through the store: gone; the other patient is untouched; nothing new can be added to the patient. */
    expect_get_fails(&f, f.s, "acme", pt, 0, VAULT_ALL_CATEGORIES, BASE_ERR_NOT_FOUND);
    expect_get_fails(&f, f.s, "acme", items[1], 0, VAULT_ALL_CATEGORIES, BASE_ERR_NOT_FOUND);
    char refs[4][VAULT_ID_BUF];
    size_t n = 0;
    MUST(vault_store_find(f.s, "acme", VAULT_BLIND_MRN, "777", 3, refs, 4, &n));
    assert_int_equal(n, 0);
    char late[VAULT_ID_BUF];
    vault_random_id("it_", late);
    p = mk_put("acme", late, pt, 2, 0, VAULT_CATEGORY_BIT(4), NULL);
    EXPECT_ERR(vault_store_put(f.s, &p, NULL, NULL), BASE_ERR_NOT_FOUND);
    p = mk_put("acme", pt, pt, 1, 2, VAULT_CATEGORY_BIT(4), NULL);
    EXPECT_ERR(vault_store_put(f.s, &p, NULL, NULL), BASE_ERR_NOT_FOUND);
    vault_record r;
    MUST(vault_store_get(f.s, "acme", kept_item, 0, VAULT_CATEGORY_BIT(4), &r));
    expect_part(&r, 4, CAT_TEXT[4]);
    vault_record_clear(&r);
    /* The runtime role cannot bring a key back. */
    EXPECT_ERR(
        exec_sql(f.rt,
                 "UPDATE records SET wrapped_dek = decode(repeat('00', 60), 'hex'), shredded_at = NULL "
                 "WHERE wrapped_dek IS NULL",
                 0, NULL),
        BASE_ERR_DENIED);
    /* A retry of step 1 (after a crash between the steps) counts the same. */
    vault_shred_summary again;
    memset(&again, 0, sizeof again);
    MUST(vault_store_shred_keys(f.s, "acme", pt, &again));
    assert_int_equal(again.versions, 7);
    assert_int_equal(again.records, 4);
    vault_shred_summary_free(&again);

    /* Step 2. */
    MUST(vault_store_shred_rows(f.s, "acme", pt, &sum));
    assert_true(sum.rows_deleted_us >= sum.keys_destroyed_us);
    assert_int_equal(sum.versions, 7);
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM records WHERE patient_ref = $1", 1, ppt), 0);
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM blind_index WHERE patient_ref = $1", 1, ppt), 0);
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM records", 0, NULL), 2);
    vault_shred_summary_free(&sum);
    EXPECT_ERR(vault_store_shred_keys(f.s, "acme", pt, &sum), BASE_ERR_NOT_FOUND);
    fx_close(&f);
}

static void test_offboarding(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF], other[VAULT_ID_BUF];
    new_patient(&f, "acme", pt, VAULT_ALL_CATEGORIES);
    new_patient(&f, "beta", other, VAULT_CATEGORY_BIT(1));
    uint32_t v = 0;
    MUST(vault_store_rotate(f.s, "acme", &v));
    vault_store *replica = NULL; /* has acme's keys cached */
    MUST(vault_store_open(f.rt, f.kp, &replica));
    vault_record r;
    MUST(vault_store_get(replica, "acme", pt, 0, VAULT_CATEGORY_BIT(1), &r));
    vault_record_clear(&r);
    char refs[4][VAULT_ID_BUF];
    size_t n = 0;
    MUST(vault_store_list_patients(f.s, "acme", "", refs, 4, &n));
    assert_int_equal(n, 1);

    uint32_t destroyed = 0;
    MUST(vault_store_destroy_tenant_keys(f.s, "acme", &destroyed));
    assert_int_equal(destroyed, 2);
    const char *pa[] = {"acme"};
    assert_int_equal(
        query_int(f.root, "SELECT count(*) FROM tenant_keys WHERE tenant_id = $1 AND wrapped_key IS NOT NULL",
                  1, pa),
        0);
    assert_int_equal(
        query_int(f.root,
                  "SELECT count(*) FROM tenants WHERE tenant_id = $1 AND index_key_wrapped IS NULL "
                  "AND offboarded_at IS NOT NULL",
                  1, pa),
        1);
    expect_get_fails(&f, f.s, "acme", pt, 0, VAULT_CATEGORY_BIT(1), BASE_ERR_CONFLICT);
    expect_get_fails(&f, replica, "acme", pt, 0, VAULT_CATEGORY_BIT(1), BASE_ERR_CONFLICT);
    char np[VAULT_ID_BUF];
    vault_random_id("pt_", np);
    vault_put p = mk_put("acme", np, np, 1, 0, VAULT_CATEGORY_BIT(1), NULL);
    EXPECT_ERR(vault_store_put(f.s, &p, NULL, NULL), BASE_ERR_CONFLICT);
    EXPECT_ERR(vault_store_put(replica, &p, NULL, NULL), BASE_ERR_CONFLICT);
    assert_string_equal(base_error_message(), "tenant offboarded");
    EXPECT_ERR(vault_store_tenant_ensure(f.s, "acme"), BASE_ERR_CONFLICT);
    EXPECT_ERR(vault_store_rotate(f.s, "acme", &v), BASE_ERR_CONFLICT);
    char ps[VAULT_ID_BUF];
    EXPECT_ERR(vault_store_pseudonym(replica, "acme", pt, ps), BASE_ERR_CONFLICT);
    MUST(vault_store_destroy_tenant_keys(f.s, "acme", &destroyed));
    assert_int_equal(destroyed, 0);
    /* Another tenant is untouched. */
    MUST(vault_store_get(f.s, "beta", other, 0, VAULT_CATEGORY_BIT(1), &r));
    expect_part(&r, 1, CAT_TEXT[1]);
    vault_record_clear(&r);
    EXPECT_ERR(vault_store_destroy_tenant_keys(f.s, "nobody", &destroyed), BASE_ERR_NOT_FOUND);
    vault_store_close(replica);
    fx_close(&f);
}

static void test_runtime_role(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char pt[VAULT_ID_BUF];
    new_patient(&f, "acme", pt, VAULT_ALL_CATEGORIES);
    uint32_t v = 0;
    MUST(vault_store_rotate(f.s, "acme", &v));
    EXPECT_ERR(exec_sql(f.rt, "UPDATE records SET part_clinical = '\\x00'::bytea", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "UPDATE records SET created_by = 'someone'", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "DELETE FROM records", 0, NULL), BASE_ERR_DENIED); /* not shredded */
    EXPECT_ERR(exec_sql(f.rt, "TRUNCATE records", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "UPDATE records SET kek_version = 2, wrapped_dek = NULL", 0, NULL),
               BASE_ERR_CONFLICT);
    EXPECT_ERR(exec_sql(f.rt, "UPDATE tenants SET provider_id = 'mem:0'", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "UPDATE tenant_keys SET version = 9", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "DELETE FROM tenant_keys", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "DELETE FROM tenants", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt,
                        "INSERT INTO views (role_id, purpose, view_id, categories, permission) "
                        "VALUES ('x_role', 1, 'x_view', '{1}', 'phi.read.x')",
                        0, NULL),
               BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "UPDATE blind_index SET kind = 2", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "SELECT count(*) FROM schema_migrations", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "CREATE TABLE sneaky (a int)", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(exec_sql(f.rt, "ALTER TABLE records DISABLE TRIGGER records_guard", 0, NULL), BASE_ERR_DENIED);
    EXPECT_ERR(vault_store_migrate(f.rt, f.schema), BASE_ERR_DENIED);
    /* A re-wrap downwards is refused by the guard even with the column grant. */
    MUST(vault_store_rewrap(f.s, "acme", 10, NULL, NULL, NULL));
    EXPECT_ERR(exec_sql(f.rt, "UPDATE records SET kek_version = 1", 0, NULL), BASE_ERR_DENIED);
    vault_record r;
    MUST(vault_store_get(f.s, "acme", pt, 0, VAULT_ALL_CATEGORIES, &r));
    expect_part(&r, 6, CAT_TEXT[6]);
    vault_record_clear(&r);
    fx_close(&f);
}

/* Puts from several threads while the tenant's key rotates: every put lands under the version current when
 * it committed, nothing is lost, the rewrap leaves none behind and retire succeeds. */
typedef struct worker {
    fx *f;
    int n, failures;
    char ids[60][VAULT_ID_BUF];
} worker;

static void *put_worker(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        vault_random_id("pt_", w->ids[i]);
        vault_put p = mk_put("acme", w->ids[i], w->ids[i], 1, 0, VAULT_CATEGORY_BIT(4), NULL);
        if (!base_is_ok(vault_store_put(w->f->s, &p, NULL, NULL)))
            w->failures++;
    }
    return NULL;
}

static void test_concurrent_rotation(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    MUST(vault_store_tenant_ensure(f.s, "acme"));
    worker ws[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ws[i] = (worker){.f = &f, .n = 60};
        assert_int_equal(pthread_create(&th[i], NULL, put_worker, &ws[i]), 0);
    }
    uint32_t v = 0;
    usleep(20000);
    MUST(vault_store_rotate(f.s, "acme", &v));
    MUST(vault_store_rewrap(f.s, "acme", 16, NULL, NULL, NULL));
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    MUST(vault_store_rewrap(f.s, "acme", 16, NULL, NULL, NULL));
    MUST(vault_store_retire(f.s, "acme", 2));
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM records WHERE kek_version <> 2", 0, NULL), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ws[i].failures, 0);
        for (int k = 0; k < ws[i].n; k++) {
            vault_record r;
            MUST(vault_store_get(f.s, "acme", ws[i].ids[k], 0, VAULT_CATEGORY_BIT(4), &r));
            expect_part(&r, 4, CAT_TEXT[4]);
            vault_record_clear(&r);
        }
    }
    assert_int_equal(query_int(f.root, "SELECT count(*) FROM records", 0, NULL), 240);
    fx_close(&f);
}

/* ---- Roles --------------------------------------------------------------------------------------------- */

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
    snprintf(g_prefix, sizeof g_prefix, "vst_%d_%lx", (int)getpid(),
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
        cmocka_unit_test(test_round_trip),       cmocka_unit_test(test_integrity),
        cmocka_unit_test(test_master_key),       cmocka_unit_test(test_find_and_pseudonym),
        cmocka_unit_test(test_list_and_history), cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_shredding),        cmocka_unit_test(test_offboarding),
        cmocka_unit_test(test_runtime_role),     cmocka_unit_test(test_concurrent_rotation),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
