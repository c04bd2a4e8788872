/* The guideline engine's Postgres store (store.h has the contract; migrations/0001_guideline.sql the schema).
 *
 * Every statement is a constant (common/db's rule): data travels as $n parameters, long texts (bundles,
 * input snapshots, recommendations) as binary text parameters with their length, lists as array literals.
 * Every function is one db_transaction() on the caller's pool (search_path = the guideline schema), so the
 * store keeps no state of its own and is thread-safe.
 *
 * Round trips. Publishing takes a transaction-scoped advisory lock (one per schema) so two concurrent
 * activations cannot both deactivate the old bundle and then collide on the one-active index; a decision is
 * ONE statement that finds the review in the tenant, inserts the decision unless the review already has one,
 * and says which of the two stopped it. Reads are one SELECT each (the referral history two, in one
 * REPEATABLE READ snapshot). Concordance is one aggregate over GROUPING SETS.
 *
 * Messages name fields and limits, never values: ids may be references to patients and comments may hold
 * PHI. */
#include "store.h"

#include "guideline_migrations.h"

#include "base/batch.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SCHEMA "guideline"
#define TXN_ATTEMPTS   10
#define JSON_MAX       (1024 * 1024)
#define WHATIF_MAX     10000
#define INT_BUF        24

/* ---- SQL (constants only) ------------------------------------------------------------------------------ */

#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"
#define TS(p)   "('epoch'::timestamptz + " p "::bigint * interval '1 microsecond')"

/* One lock per schema serializes publishing (hashtext is stable across servers of one major version; a
 * collision only serializes two publishers more than needed). */
static const char SQL_PUBLISH_LOCK[] =
    "SELECT pg_advisory_xact_lock(hashtext('alma-guideline-bundles'), hashtext(current_schema()))";
static const char SQL_BUNDLE_INSERT[] =
    "INSERT INTO bundles (bundle_id, version, content_hash, json, published_by) "
    "VALUES ($1, $2, $3, $4::text, $5) ON CONFLICT (bundle_id, version) DO NOTHING RETURNING 1";
static const char SQL_BUNDLE_HASH[] =
    "SELECT content_hash FROM bundles WHERE bundle_id = $1 AND version = $2";
static const char SQL_BUNDLE_DEACTIVATE[] =
    "UPDATE bundles SET active = false WHERE active AND NOT (bundle_id = $1 AND version = $2)";
static const char SQL_BUNDLE_ACTIVATE[] =
    "UPDATE bundles SET active = true WHERE bundle_id = $1 AND version = $2 AND NOT active";

#define BUNDLE_COLS "bundle_id, version, content_hash, active, " US("published_at") ", published_by"
enum { B_ID, B_VERSION, B_HASH, B_ACTIVE, B_PUBLISHED, B_BY, B_JSON };
static const char SQL_BUNDLE_ACTIVE[] = "SELECT " BUNDLE_COLS ", json FROM bundles WHERE active";
static const char SQL_BUNDLE_GET[] =
    "SELECT " BUNDLE_COLS ", json FROM bundles WHERE bundle_id = $1 AND version = $2";
static const char SQL_BUNDLE_LIST[] =
    "SELECT " BUNDLE_COLS " FROM bundles "
    "ORDER BY published_at DESC, bundle_id DESC, version DESC LIMIT $1::integer";

static const char SQL_REVIEW_INSERT[] =
    "INSERT INTO reviews (review_id, tenant_id, referral_id, patient_ref, clinician_id, outcome, urgency, "
    "pathway_id, rule_id, engine_version, bundle_id, bundle_version, bundle_hash, input_hash, input_json, "
    "recommendation_json) VALUES ($1, $2, $3, $4, $5, $6::smallint, $7::smallint, $8, $9, $10, $11, $12, "
    "$13, "
    "$14, $15::text, $16::text) RETURNING " US("created_at");
/* Many reviews in one statement (the review writer): one array per column, rows in array order. */
static const char SQL_REVIEW_INSERT_MANY[] =
    "INSERT INTO reviews (review_id, tenant_id, referral_id, patient_ref, clinician_id, outcome, urgency, "
    "pathway_id, rule_id, engine_version, bundle_id, bundle_version, bundle_hash, input_hash, input_json, "
    "recommendation_json) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::smallint[], $7::smallint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], "
    "$13::text[], $14::text[], $15::text[], $16::text[]) RETURNING " US("created_at");

#define REVIEW_COLS                                                                                          \
    "r.review_id, r.tenant_id, r.referral_id, r.patient_ref, r.clinician_id, r.outcome, r.urgency, "         \
    "r.pathway_id, r.rule_id, r.engine_version, r.bundle_id, r.bundle_version, r.bundle_hash, "              \
    "r.input_hash, "                                                                                         \
    "r.input_json, r.recommendation_json, " US("r.created_at") " AS created_us"
enum {
    R_ID,
    R_TENANT,
    R_REFERRAL,
    R_PATIENT,
    R_CLINICIAN,
    R_OUTCOME,
    R_URGENCY,
    R_PATHWAY,
    R_RULE,
    R_ENGINE,
    R_BUNDLE,
    R_BVERSION,
    R_BHASH,
    R_IHASH,
    R_INPUT,
    R_RECOMMENDATION,
    R_CREATED
};
static const char SQL_REVIEW_GET[] =
    "SELECT " REVIEW_COLS " FROM reviews r WHERE r.tenant_id = $1 AND r.review_id = $2";
static const char SQL_HISTORY_REVIEWS[] =
    "SELECT " REVIEW_COLS " FROM reviews r WHERE r.tenant_id = $1 AND r.referral_id = $2 "
    "ORDER BY r.created_at, r.review_id LIMIT $3::integer";

/* The review is looked up in the tenant; the insert happens only when it is there and has no decision yet.
 * One row back: created_us (NULL when nothing was inserted) and whether the review was found. */
static const char SQL_DECISION_INSERT[] =
    "WITH rv AS (SELECT review_id, tenant_id FROM reviews WHERE review_id = $2 AND tenant_id = $3), "
    "ins AS (INSERT INTO decisions (decision_id, review_id, tenant_id, clinician_id, kind, reason, comment) "
    "SELECT $1, rv.review_id, rv.tenant_id, $4, $5::smallint, $6::smallint, $7 FROM rv "
    "ON CONFLICT (review_id) DO NOTHING RETURNING created_at) "
    "SELECT (SELECT " US("created_at") " FROM ins), EXISTS (SELECT 1 FROM rv)";

#define DECISION_COLS                                                                                        \
    "d.decision_id, d.review_id, d.tenant_id, d.clinician_id, d.kind, d.reason, d.comment, " US(             \
        "d.created_at")
enum { D_ID, D_REVIEW, D_TENANT, D_CLINICIAN, D_KIND, D_REASON, D_COMMENT, D_CREATED };
static const char SQL_HISTORY_DECISIONS[] =
    "SELECT " DECISION_COLS " FROM decisions d JOIN reviews r ON r.review_id = d.review_id "
    "AND r.tenant_id = d.tenant_id WHERE r.tenant_id = $1 AND r.referral_id = $2 "
    "ORDER BY d.created_at, d.decision_id LIMIT $3::integer";

/* $1 tenant, $2 referral ids (text[] or NULL: every referral), $3 start_us, $4 end_us (0 = open), $5 max. */
static const char SQL_WHATIF[] =
    "SELECT * FROM (SELECT DISTINCT ON (r.referral_id) " REVIEW_COLS " FROM reviews r "
    "WHERE r.tenant_id = $1 AND ($2::text[] IS NULL OR r.referral_id = ANY ($2::text[])) "
    "AND ($3::bigint = 0 OR r.created_at >= " TS("$3") ") AND ($4::bigint = 0 OR r.created_at < " TS(
        "$4") ") "
              "ORDER BY r.referral_id, r.created_at DESC, r.review_id DESC) AS l "
              "ORDER BY l.created_us, l.review_id LIMIT $5::integer";

/* Per pathway (GROUPING(clinician) = 1, clinician "") then per pathway and clinician (the review's, i.e.
 * who asked), reviews in [start, end). $1 tenant, $2 start_us, $3 end_us (0 = open), $4 pathway ("" = any),
 * $5 clinician ("" = any), $6 row limit. */
static const char SQL_CONCORDANCE[] =
    "SELECT r.pathway_id, coalesce(r.clinician_id, '') AS clinician, GROUPING(r.clinician_id) AS "
    "per_pathway, "
    "count(*), count(*) FILTER (WHERE r.outcome = 1), count(*) FILTER (WHERE r.outcome = 2), "
    "count(*) FILTER (WHERE r.outcome = 3), count(*) FILTER (WHERE r.outcome = 4), "
    "count(*) FILTER (WHERE r.outcome = 5), count(d.decision_id), count(*) FILTER (WHERE d.kind = 1), "
    "count(*) FILTER (WHERE d.kind = 2), count(*) FILTER (WHERE d.kind = 2 AND d.reason = 1), "
    "count(*) FILTER (WHERE d.kind = 2 AND d.reason = 2), count(*) FILTER (WHERE d.kind = 2 AND d.reason = "
    "3), "
    "count(*) FILTER (WHERE d.kind = 2 AND d.reason = 4), count(*) FILTER (WHERE d.kind = 2 AND d.reason = "
    "5), "
    "count(*) FILTER (WHERE d.kind = 2 AND d.reason = 6) "
    "FROM reviews r LEFT JOIN decisions d ON d.review_id = r.review_id AND d.tenant_id = r.tenant_id "
    "WHERE r.tenant_id = $1 AND ($2::bigint = 0 OR r.created_at >= " TS(
        "$2") ") "
              "AND ($3::bigint = 0 OR r.created_at < " TS(
                  "$3") ") AND ($4 = '' OR r.pathway_id = $4) "
                        "AND ($5 = '' OR r.clinician_id = $5) "
                        "GROUP BY GROUPING SETS ((r.pathway_id), (r.pathway_id, r.clinician_id)) "
                        "ORDER BY r.pathway_id, per_pathway DESC, clinician LIMIT $6::integer";
enum { C_PATHWAY, C_CLINICIAN, C_PER_PATHWAY, C_COUNT0 };

/* ---- Validation (messages name the field, never its value) -----------------------------------------------
 */

static bool in_buf(const char *s, size_t cap)
{
    return s && memchr(s, '\0', cap) != NULL;
}

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool valid_hex(const char *s, size_t n)
{
    if (!s)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_hex_lower(s[i]))
            return false;
    return s[n] == '\0';
}

/* prefix ("rv_", "dn_", "pt_") + 32 lowercase hex. */
static bool valid_ref(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, 3) == 0 && valid_hex(s + 3, 32);
}

/* [a-z0-9][a-z0-9-]{1,62}: tenants and bundle ids. */
static bool valid_slug(const char *s)
{
    if (!s || !is_lower_alnum(s[0]))
        return false;
    size_t n = 1;
    for (; s[n]; n++)
        if (n > 62 || !(is_lower_alnum(s[n]) || s[n] == '-'))
            return false;
    return n >= 2;
}

/* [a-z0-9][a-z0-9_-]{0,63}, or "" when allowed: pathway and rule ids. */
static bool valid_token(const char *s, bool allow_empty)
{
    if (!s)
        return false;
    if (!s[0])
        return allow_empty;
    if (!is_lower_alnum(s[0]))
        return false;
    for (size_t n = 1; s[n]; n++)
        if (n > 63 || !(is_lower_alnum(s[n]) || s[n] == '-' || s[n] == '_'))
            return false;
    return true;
}

/* [A-Za-z0-9_-]{1,64}. */
static bool valid_referral(const char *s)
{
    if (!s || !s[0])
        return false;
    for (size_t n = 0; s[n]; n++) {
        char c = s[n];
        if (n >= GS_REFERRAL_MAX || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                      (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* MAJOR.MINOR.PATCH, digits only, no leading zeros, each at most 9999. */
static bool valid_semver(const char *s)
{
    if (!s)
        return false;
    for (int part = 0; part < 3; part++) {
        size_t n = 0;
        while (s[n] >= '0' && s[n] <= '9')
            n++;
        if (n == 0 || n > 4 || (n > 1 && s[0] == '0'))
            return false;
        s += n;
        if (part < 2) {
            if (*s != '.')
                return false;
            s++;
        }
    }
    return *s == '\0';
}

/* 1..128 bytes without control characters: clinicians and publishers. */
static bool valid_actor(const char *s)
{
    if (!s || !s[0])
        return false;
    for (size_t n = 0; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= GS_ACTOR_MAX || c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* [A-Za-z0-9][A-Za-z0-9._/+-]{0,31}: "alma-guideline/1". */
static bool valid_engine(const char *s)
{
    if (!s || !s[0])
        return false;
    for (size_t n = 0; s[n]; n++) {
        char c = s[n];
        bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (n >= GS_VERSION_MAX ||
            !(alnum || (n > 0 && (c == '.' || c == '_' || c == '/' || c == '+' || c == '-'))))
            return false;
    }
    return true;
}

static bool valid_json_text(const char *s, size_t len)
{
    return s && len >= 2 && len <= JSON_MAX && memchr(s, '\0', len) == NULL && s[len] == '\0';
}

#define CHECK_TENANT(t)                                                                                      \
    BASE_ENSURE(valid_slug(t), BASE_ERR_INVALID,                                                             \
                "guideline store: tenant_id: must be [a-z0-9][a-z0-9-]{1,62}")

/* ---- Transactions and results ------------------------------------------------------------------------- */

static base_result run(db_pool *pool, db_isolation iso, db_txn_fn fn, void *arg)
{
    BASE_ENSURE(pool, BASE_ERR_INVALID, "guideline store: pool: missing");
    return db_transaction(pool, iso, TXN_ATTEMPTS, fn, arg);
}

/* One statement in its own transaction; *ret receives the rows. */
typedef struct query_arg {
    const char *sql;
    int n;
    const char *const *params;
    const int *lengths;
    const int *formats;
    db_result *res;
} query_arg;

static base_result query_body(db_conn *c, void *arg)
{
    query_arg *q = arg;
    db_result_free(q->res);
    q->res = NULL;
    return db_exec_params(c, q->sql, q->n, q->params, q->lengths, q->formats, &q->res);
}

static base_result query(db_pool *pool, const char *sql, int n, const char *const *params, db_result **ret)
{
    query_arg q = {.sql = sql, .n = n, .params = params};
    base_result r = run(pool, DB_READ_COMMITTED, query_body, &q);
    if (!base_is_ok(r)) {
        db_result_free(q.res);
        return r;
    }
    *ret = q.res;
    return BASE_OK_RESULT;
}

static base_result col_copy(const db_result *res, int row, int col, char *out, size_t cap)
{
    const char *v = db_result_get(res, row, col);
    BASE_ENSURE(v, BASE_ERR_INTERNAL, "guideline store: unexpected NULL column");
    size_t n = db_result_length(res, row, col);
    BASE_ENSURE(n < cap, BASE_ERR_INTERNAL, "guideline store: stored value longer than its field");
    memcpy(out, v, n);
    out[n] = '\0';
    return BASE_OK_RESULT;
}

static base_result col_dup(const db_result *res, int row, int col, char **ret, size_t *ret_len)
{
    const char *v = db_result_get(res, row, col);
    BASE_ENSURE(v, BASE_ERR_INTERNAL, "guideline store: unexpected NULL column");
    size_t n = db_result_length(res, row, col);
    char *p = malloc(n + 1);
    BASE_ENSURE(p, BASE_ERR_NOMEM, "guideline store: out of memory");
    memcpy(p, v, n);
    p[n] = '\0';
    *ret = p;
    *ret_len = n;
    return BASE_OK_RESULT;
}

static base_result col_int(const db_result *res, int row, int col, int *ret)
{
    int64_t v = 0;
    BASE_GUARD(db_result_get_int64(res, row, col, &v));
    BASE_ENSURE(v >= INT32_MIN && v <= INT32_MAX, BASE_ERR_INTERNAL, "guideline store: integer out of range");
    *ret = (int)v;
    return BASE_OK_RESULT;
}

static void fmt_i64(char buf[INT_BUF], int64_t v)
{
    snprintf(buf, INT_BUF, "%" PRId64, v);
}

/* ---- Migrate ---------------------------------------------------------------------------------------------
 */

base_result gs_migrate(db_pool *owner, const char *schema)
{
    BASE_ENSURE(owner, BASE_ERR_INVALID, "guideline store: pool: missing");
    db_migration_set set = guideline_migrations;
    set.schema = schema ? schema : DEFAULT_SCHEMA;
    return db_migrate(owner, &set, NULL);
}

/* ---- Bundles ------------------------------------------------------------------------------------------- */

void gs_bundle_clear(gs_bundle *b)
{
    if (!b)
        return;
    free(b->json);
    memset(b, 0, sizeof *b);
}

void gs_bundles_free(gs_bundle *bs, size_t n)
{
    if (!bs)
        return;
    for (size_t i = 0; i < n; i++)
        gs_bundle_clear(&bs[i]);
    free(bs);
}

static base_result parse_bundle(const db_result *res, int row, bool with_json, gs_bundle *out)
{
    memset(out, 0, sizeof *out);
    base_result r = col_copy(res, row, B_ID, out->bundle_id, sizeof out->bundle_id);
    if (base_is_ok(r))
        r = col_copy(res, row, B_VERSION, out->version, sizeof out->version);
    if (base_is_ok(r))
        r = col_copy(res, row, B_HASH, out->hash, sizeof out->hash);
    if (base_is_ok(r)) {
        const char *a = db_result_get(res, row, B_ACTIVE);
        out->active = a && a[0] == 't';
        r = db_result_get_int64(res, row, B_PUBLISHED, &out->published_us);
    }
    if (base_is_ok(r))
        r = col_copy(res, row, B_BY, out->published_by, sizeof out->published_by);
    if (base_is_ok(r) && with_json)
        r = col_dup(res, row, B_JSON, &out->json, &out->json_len);
    if (!base_is_ok(r))
        gs_bundle_clear(out);
    return r;
}

typedef struct publish_arg {
    const char *const *p; /* id, version, hash, json, actor */
    const int *lengths, *formats;
    bool activate;
    bool created;
} publish_arg;

static base_result publish_body(db_conn *c, void *arg)
{
    publish_arg *a = arg;
    a->created = false;
    BASE_GUARD(db_exec(c, SQL_PUBLISH_LOCK, 0, NULL, NULL));
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec_params(c, SQL_BUNDLE_INSERT, 5, a->p, a->lengths, a->formats, &res));
    if (db_result_ntuples(res) == 1) {
        a->created = true;
    } else {
        db_result_free(res);
        res = NULL;
        BASE_GUARD(db_exec(c, SQL_BUNDLE_HASH, 2, a->p, &res));
        const char *h = db_result_ntuples(res) == 1 ? db_result_get(res, 0, 0) : NULL;
        BASE_ENSURE(h, BASE_ERR_INTERNAL, "guideline store: bundle vanished while publishing");
        if (strcmp(h, a->p[2]) != 0)
            return base_fail(BASE_ERR_CONFLICT, "bundle version already published with other content");
    }
    if (a->activate) {
        BASE_GUARD(db_exec(c, SQL_BUNDLE_DEACTIVATE, 2, a->p, NULL));
        BASE_GUARD(db_exec(c, SQL_BUNDLE_ACTIVATE, 2, a->p, NULL));
    }
    return BASE_OK_RESULT;
}

base_result gs_bundle_publish(db_pool *pool, const char *bundle_id, const char *version, const char *hash,
                              const char *json, size_t json_len, bool activate, const char *actor,
                              bool *ret_created)
{
    BASE_ENSURE(valid_slug(bundle_id), BASE_ERR_INVALID,
                "guideline store: bundle_id: must be [a-z0-9][a-z0-9-]{1,62}");
    BASE_ENSURE(valid_semver(version), BASE_ERR_INVALID,
                "guideline store: version: must be MAJOR.MINOR.PATCH");
    BASE_ENSURE(valid_hex(hash, GS_HASH_LEN), BASE_ERR_INVALID,
                "guideline store: hash: must be 64 lowercase hex digits");
    BASE_ENSURE(valid_json_text(json, json_len), BASE_ERR_INVALID,
                "guideline store: bundle text: must be 2 bytes to 1 MiB without NUL");
    BASE_ENSURE(valid_actor(actor), BASE_ERR_INVALID,
                "guideline store: actor: must be 1..128 bytes without control characters");
    const char *p[] = {bundle_id, version, hash, json, actor};
    const int lengths[] = {0, 0, 0, (int)json_len, 0};
    const int formats[] = {0, 0, 0, 1, 0};
    publish_arg a = {.p = p, .lengths = lengths, .formats = formats, .activate = activate};
    BASE_GUARD(run(pool, DB_READ_COMMITTED, publish_body, &a));
    if (ret_created)
        *ret_created = a.created;
    return BASE_OK_RESULT;
}

base_result gs_bundle_active(db_pool *pool, gs_bundle *ret)
{
    BASE_ENSURE(ret, BASE_ERR_INVALID, "guideline store: missing");
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query(pool, SQL_BUNDLE_ACTIVE, 0, NULL, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "no active bundle");
    gs_bundle b;
    BASE_GUARD(parse_bundle(res, 0, true, &b));
    *ret = b;
    return BASE_OK_RESULT;
}

base_result gs_bundle_get(db_pool *pool, const char *bundle_id, const char *version, gs_bundle *ret)
{
    BASE_ENSURE(ret, BASE_ERR_INVALID, "guideline store: missing");
    BASE_ENSURE(valid_slug(bundle_id), BASE_ERR_INVALID,
                "guideline store: bundle_id: must be [a-z0-9][a-z0-9-]{1,62}");
    BASE_ENSURE(valid_semver(version), BASE_ERR_INVALID,
                "guideline store: version: must be MAJOR.MINOR.PATCH");
    const char *p[] = {bundle_id, version};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query(pool, SQL_BUNDLE_GET, 2, p, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "no such bundle version");
    gs_bundle b;
    BASE_GUARD(parse_bundle(res, 0, true, &b));
    *ret = b;
    return BASE_OK_RESULT;
}

base_result gs_bundles_list(db_pool *pool, gs_bundle **ret, size_t *ret_n)
{
    BASE_ENSURE(ret && ret_n, BASE_ERR_INVALID, "guideline store: missing");
    char lbuf[INT_BUF];
    fmt_i64(lbuf, GS_LIST_MAX);
    const char *p[] = {lbuf};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query(pool, SQL_BUNDLE_LIST, 1, p, &res));
    int n = db_result_ntuples(res);
    gs_bundle *bs = calloc(n > 0 ? (size_t)n : 1, sizeof *bs);
    BASE_ENSURE(bs, BASE_ERR_NOMEM, "guideline store: out of memory");
    for (int i = 0; i < n; i++) {
        base_result r = parse_bundle(res, i, false, &bs[i]);
        if (!base_is_ok(r)) {
            gs_bundles_free(bs, (size_t)n);
            return r;
        }
    }
    *ret = bs;
    *ret_n = (size_t)n;
    return BASE_OK_RESULT;
}

/* ---- Reviews ------------------------------------------------------------------------------------------- */

void gs_review_clear(gs_review *r)
{
    if (!r)
        return;
    free(r->input_json);
    free(r->recommendation_json);
    memset(r, 0, sizeof *r);
}

void gs_reviews_free(gs_review *rs, size_t n)
{
    if (!rs)
        return;
    for (size_t i = 0; i < n; i++)
        gs_review_clear(&rs[i]);
    free(rs);
}

static base_result parse_review(const db_result *res, int row, gs_review *out)
{
    memset(out, 0, sizeof *out);
    base_result r = col_copy(res, row, R_ID, out->review_id, sizeof out->review_id);
    if (base_is_ok(r))
        r = col_copy(res, row, R_TENANT, out->tenant_id, sizeof out->tenant_id);
    if (base_is_ok(r))
        r = col_copy(res, row, R_REFERRAL, out->referral_id, sizeof out->referral_id);
    if (base_is_ok(r))
        r = col_copy(res, row, R_PATIENT, out->patient_ref, sizeof out->patient_ref);
    if (base_is_ok(r))
        r = col_copy(res, row, R_CLINICIAN, out->clinician_id, sizeof out->clinician_id);
    if (base_is_ok(r))
        r = col_int(res, row, R_OUTCOME, &out->outcome);
    if (base_is_ok(r))
        r = col_int(res, row, R_URGENCY, &out->urgency);
    if (base_is_ok(r))
        r = col_copy(res, row, R_PATHWAY, out->pathway_id, sizeof out->pathway_id);
    if (base_is_ok(r))
        r = col_copy(res, row, R_RULE, out->rule_id, sizeof out->rule_id);
    if (base_is_ok(r))
        r = col_copy(res, row, R_ENGINE, out->engine_version, sizeof out->engine_version);
    if (base_is_ok(r))
        r = col_copy(res, row, R_BUNDLE, out->bundle_id, sizeof out->bundle_id);
    if (base_is_ok(r))
        r = col_copy(res, row, R_BVERSION, out->bundle_version, sizeof out->bundle_version);
    if (base_is_ok(r))
        r = col_copy(res, row, R_BHASH, out->bundle_hash, sizeof out->bundle_hash);
    if (base_is_ok(r))
        r = col_copy(res, row, R_IHASH, out->input_hash, sizeof out->input_hash);
    if (base_is_ok(r))
        r = col_dup(res, row, R_INPUT, &out->input_json, &out->input_len);
    if (base_is_ok(r))
        r = col_dup(res, row, R_RECOMMENDATION, &out->recommendation_json, &out->recommendation_len);
    if (base_is_ok(r))
        r = db_result_get_int64(res, row, R_CREATED, &out->created_us);
    if (!base_is_ok(r))
        gs_review_clear(out);
    return r;
}

static base_result parse_reviews(const db_result *res, gs_review **ret, size_t *ret_n)
{
    int n = db_result_ntuples(res);
    gs_review *rs = calloc(n > 0 ? (size_t)n : 1, sizeof *rs);
    BASE_ENSURE(rs, BASE_ERR_NOMEM, "guideline store: out of memory");
    for (int i = 0; i < n; i++) {
        base_result r = parse_review(res, i, &rs[i]);
        if (!base_is_ok(r)) {
            gs_reviews_free(rs, (size_t)n);
            return r;
        }
    }
    *ret = rs;
    *ret_n = (size_t)n;
    return BASE_OK_RESULT;
}

static base_result check_review(const gs_review *r)
{
    BASE_ENSURE(r, BASE_ERR_INVALID, "guideline store: review: missing");
    BASE_ENSURE(in_buf(r->review_id, sizeof r->review_id) && valid_ref(r->review_id, "rv_"), BASE_ERR_INVALID,
                "guideline store: review_id: must be rv_ and 32 lowercase hex digits");
    BASE_ENSURE(in_buf(r->tenant_id, sizeof r->tenant_id), BASE_ERR_INVALID,
                "guideline store: tenant_id: too long");
    CHECK_TENANT(r->tenant_id);
    BASE_ENSURE(in_buf(r->referral_id, sizeof r->referral_id) && valid_referral(r->referral_id),
                BASE_ERR_INVALID, "guideline store: referral_id: must be 1..64 of [A-Za-z0-9_-]");
    BASE_ENSURE(in_buf(r->patient_ref, sizeof r->patient_ref) && valid_ref(r->patient_ref, "pt_"),
                BASE_ERR_INVALID, "guideline store: patient_ref: must be pt_ and 32 lowercase hex digits");
    BASE_ENSURE(in_buf(r->clinician_id, sizeof r->clinician_id) && valid_actor(r->clinician_id),
                BASE_ERR_INVALID,
                "guideline store: clinician_id: must be 1..128 bytes without control characters");
    BASE_ENSURE(r->outcome >= 1 && r->outcome <= 5, BASE_ERR_INVALID,
                "guideline store: outcome: must be 1..5");
    BASE_ENSURE(r->urgency >= 0 && r->urgency <= 3, BASE_ERR_INVALID,
                "guideline store: urgency: must be 0..3");
    bool no_pathway = r->outcome == 5;
    BASE_ENSURE(in_buf(r->pathway_id, sizeof r->pathway_id) && valid_token(r->pathway_id, no_pathway) &&
                    (r->pathway_id[0] == '\0') == no_pathway,
                BASE_ERR_INVALID, "guideline store: pathway_id: an id, and empty exactly with NO_PATHWAY");
    BASE_ENSURE(in_buf(r->rule_id, sizeof r->rule_id) && valid_token(r->rule_id, no_pathway) &&
                    (r->rule_id[0] == '\0') == no_pathway,
                BASE_ERR_INVALID, "guideline store: rule_id: an id, and empty exactly with NO_PATHWAY");
    BASE_ENSURE(in_buf(r->engine_version, sizeof r->engine_version) && valid_engine(r->engine_version),
                BASE_ERR_INVALID, "guideline store: engine_version: malformed");
    BASE_ENSURE(in_buf(r->bundle_id, sizeof r->bundle_id) && valid_slug(r->bundle_id), BASE_ERR_INVALID,
                "guideline store: bundle_id: must be [a-z0-9][a-z0-9-]{1,62}");
    BASE_ENSURE(in_buf(r->bundle_version, sizeof r->bundle_version) && valid_semver(r->bundle_version),
                BASE_ERR_INVALID, "guideline store: bundle_version: must be MAJOR.MINOR.PATCH");
    BASE_ENSURE(in_buf(r->bundle_hash, sizeof r->bundle_hash) && valid_hex(r->bundle_hash, GS_HASH_LEN),
                BASE_ERR_INVALID, "guideline store: bundle_hash: must be 64 lowercase hex digits");
    BASE_ENSURE(in_buf(r->input_hash, sizeof r->input_hash) && valid_hex(r->input_hash, GS_HASH_LEN),
                BASE_ERR_INVALID, "guideline store: input_hash: must be 64 lowercase hex digits");
    BASE_ENSURE(valid_json_text(r->input_json, r->input_len), BASE_ERR_INVALID,
                "guideline store: input_json: must be 2 bytes to 1 MiB without NUL");
    BASE_ENSURE(valid_json_text(r->recommendation_json, r->recommendation_len), BASE_ERR_INVALID,
                "guideline store: recommendation_json: must be 2 bytes to 1 MiB without NUL");
    return BASE_OK_RESULT;
}

base_result gs_review_insert(db_pool *pool, const gs_review *r, int64_t *ret_created_us)
{
    BASE_GUARD(check_review(r));
    char obuf[INT_BUF], ubuf[INT_BUF];
    fmt_i64(obuf, r->outcome);
    fmt_i64(ubuf, r->urgency);
    const char *p[] = {r->review_id,
                       r->tenant_id,
                       r->referral_id,
                       r->patient_ref,
                       r->clinician_id,
                       obuf,
                       ubuf,
                       r->pathway_id,
                       r->rule_id,
                       r->engine_version,
                       r->bundle_id,
                       r->bundle_version,
                       r->bundle_hash,
                       r->input_hash,
                       r->input_json,
                       r->recommendation_json};
    int lengths[16] = {0}, formats[16] = {0};
    lengths[14] = (int)r->input_len;
    formats[14] = 1;
    lengths[15] = (int)r->recommendation_len;
    formats[15] = 1;
    query_arg q = {.sql = SQL_REVIEW_INSERT, .n = 16, .params = p, .lengths = lengths, .formats = formats};
    base_result res = run(pool, DB_READ_COMMITTED, query_body, &q);
    if (!base_is_ok(res)) {
        db_result_free(q.res);
        if (strcmp(db_last_sqlstate(), "23503") == 0)
            return base_fail(BASE_ERR_CONFLICT, "review: bundle version not published with that hash");
        if (res.err == BASE_ERR_EXISTS)
            return base_fail(BASE_ERR_EXISTS, "review already stored");
        return res;
    }
    int64_t created = 0;
    res = db_result_get_int64(q.res, 0, 0, &created);
    db_result_free(q.res);
    BASE_GUARD(res);
    if (ret_created_us)
        *ret_created_us = created;
    return BASE_OK_RESULT;
}

/* ---- The review writer: group commit of reviews -------------------------------------------------------- */

#define WRITER_MAX_ROWS  64
#define WRITER_MAX_BYTES ((size_t)4 << 20) /* input + recommendation JSON per statement */
#define REVIEW_COLUMNS   16

struct gs_writer {
    db_pool *pool;
    base_batcher *batcher;
    atomic_size_t alone; /* reviews stored one by one after their batch failed */
};

typedef struct writer_job {
    const gs_review *r;
    int64_t created_us;
} writer_job;

static void store_one(gs_writer *w, base_batch_job *j)
{
    writer_job *wj = j->arg;
    base_batch_done(j, gs_review_insert(w->pool, wj->r, &wj->created_us), NULL);
}

/* The batcher's flush: every review of the batch in one INSERT ... SELECT FROM unnest(...) and one commit.
 * If a row made it fail (a conflict, a constraint), each review is stored alone, so each caller gets its own
 * answer and one bad review fails only its caller. If the database did (down, refusing, too slow), every
 * caller gets that answer at once: trying each row again would hold the whole queue for a connect timeout per
 * row. */
static void flush_reviews(void *ctx, base_batch_job *const *jobs, size_t n)
{
    gs_writer *w = ctx;
    if (n == 1) {
        store_one(w, jobs[0]);
        return;
    }
    db_array cols[REVIEW_COLUMNS];
    memset(cols, 0, sizeof cols);
    for (int c = 0; c < REVIEW_COLUMNS; c++)
        db_array_begin(&cols[c]);
    for (size_t i = 0; i < n; i++) {
        const gs_review *r = ((writer_job *)jobs[i]->arg)->r;
        db_array_text(&cols[0], r->review_id);
        db_array_text(&cols[1], r->tenant_id);
        db_array_text(&cols[2], r->referral_id);
        db_array_text(&cols[3], r->patient_ref);
        db_array_text(&cols[4], r->clinician_id);
        db_array_int(&cols[5], r->outcome);
        db_array_int(&cols[6], r->urgency);
        db_array_text(&cols[7], r->pathway_id);
        db_array_text(&cols[8], r->rule_id);
        db_array_text(&cols[9], r->engine_version);
        db_array_text(&cols[10], r->bundle_id);
        db_array_text(&cols[11], r->bundle_version);
        db_array_text(&cols[12], r->bundle_hash);
        db_array_text(&cols[13], r->input_hash);
        db_array_text(&cols[14], r->input_json);
        db_array_text(&cols[15], r->recommendation_json);
    }
    base_result res = BASE_OK_RESULT;
    const char *p[REVIEW_COLUMNS];
    for (int c = 0; c < REVIEW_COLUMNS; c++) {
        base_result e = db_array_end(&cols[c]);
        if (!base_is_ok(e))
            res = e;
        p[c] = cols[c].text;
    }
    query_arg q = {.sql = SQL_REVIEW_INSERT_MANY, .n = REVIEW_COLUMNS, .params = p};
    if (base_is_ok(res))
        res = run(w->pool, DB_READ_COMMITTED, query_body, &q);
    int64_t created = 0;
    if (base_is_ok(res)) {
        if (db_result_ntuples(q.res) != (int)n)
            res = base_fail(BASE_ERR_INTERNAL, "review writer: wrong number of rows stored");
        else
            res = db_result_get_int64(q.res, 0, 0, &created); /* now(): one value per transaction */
    }
    db_result_free(q.res);
    for (int c = 0; c < REVIEW_COLUMNS; c++)
        db_array_free(&cols[c]);
    bool database =
        res.err == BASE_ERR_UNAVAILABLE || res.err == BASE_ERR_TIMEOUT || res.err == BASE_ERR_NOMEM;
    char msg[BASE_BATCH_MSG_MAX];
    snprintf(msg, sizeof msg, "%s", base_is_ok(res) ? "" : base_error_message());
    for (size_t i = 0; i < n; i++) {
        if (base_is_ok(res)) {
            ((writer_job *)jobs[i]->arg)->created_us = created;
            base_batch_done(jobs[i], BASE_OK_RESULT, NULL);
        } else if (database) {
            base_batch_done(jobs[i], res, msg);
        } else {
            atomic_fetch_add(&w->alone, 1);
            store_one(w, jobs[i]);
        }
    }
}

base_result gs_writer_open(db_pool *pool, gs_writer **ret)
{
    BASE_ENSURE(pool && ret, BASE_ERR_INVALID, "guideline store: writer: pool required");
    gs_writer *w = calloc(1, sizeof *w);
    if (!w)
        return base_fail(BASE_ERR_NOMEM, "guideline store: out of memory");
    w->pool = pool;
    base_result r = base_batcher_open(WRITER_MAX_ROWS, WRITER_MAX_BYTES, flush_reviews, w, &w->batcher);
    if (!base_is_ok(r)) {
        free(w);
        return r;
    }
    *ret = w;
    return BASE_OK_RESULT;
}

void gs_writer_close(gs_writer *w)
{
    if (!w)
        return;
    base_batcher_close(w->batcher);
    free(w);
}

base_result gs_writer_store(gs_writer *w, const gs_review *r, int64_t *ret_created_us)
{
    BASE_ENSURE(w, BASE_ERR_INVALID, "guideline store: writer: missing");
    BASE_GUARD(check_review(r)); /* a bad review never joins a batch */
    writer_job j = {.r = r};
    BASE_GUARD(base_batcher_run(w->batcher, &j, r->input_len + r->recommendation_len));
    if (ret_created_us)
        *ret_created_us = j.created_us;
    return BASE_OK_RESULT;
}

void gs_writer_stats(gs_writer *w, size_t *ret_commits, size_t *ret_reviews, size_t *ret_alone)
{
    base_batcher_stats(w->batcher, ret_commits, ret_reviews, NULL);
    if (ret_alone)
        *ret_alone = atomic_load(&w->alone);
}

base_result gs_review_get(db_pool *pool, const char *tenant_id, const char *review_id, gs_review *ret)
{
    BASE_ENSURE(ret, BASE_ERR_INVALID, "guideline store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_ref(review_id, "rv_"), BASE_ERR_INVALID,
                "guideline store: review_id: must be rv_ and 32 lowercase hex digits");
    const char *p[] = {tenant_id, review_id};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query(pool, SQL_REVIEW_GET, 2, p, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "no such review");
    gs_review rv;
    BASE_GUARD(parse_review(res, 0, &rv));
    *ret = rv;
    return BASE_OK_RESULT;
}

/* ---- Decisions ----------------------------------------------------------------------------------------- */

base_result gs_decision_insert(db_pool *pool, const gs_decision *d, int64_t *ret_created_us)
{
    BASE_ENSURE(d, BASE_ERR_INVALID, "guideline store: decision: missing");
    BASE_ENSURE(in_buf(d->decision_id, sizeof d->decision_id) && valid_ref(d->decision_id, "dn_"),
                BASE_ERR_INVALID, "guideline store: decision_id: must be dn_ and 32 lowercase hex digits");
    BASE_ENSURE(in_buf(d->review_id, sizeof d->review_id) && valid_ref(d->review_id, "rv_"), BASE_ERR_INVALID,
                "guideline store: review_id: must be rv_ and 32 lowercase hex digits");
    BASE_ENSURE(in_buf(d->tenant_id, sizeof d->tenant_id), BASE_ERR_INVALID,
                "guideline store: tenant_id: too long");
    CHECK_TENANT(d->tenant_id);
    BASE_ENSURE(in_buf(d->clinician_id, sizeof d->clinician_id) && valid_actor(d->clinician_id),
                BASE_ERR_INVALID,
                "guideline store: clinician_id: must be 1..128 bytes without control characters");
    BASE_ENSURE(d->kind == 1 || d->kind == 2, BASE_ERR_INVALID,
                "guideline store: kind: must be ACCEPT or OVERRIDE");
    BASE_ENSURE(d->kind != 2 || (d->reason >= 1 && d->reason < GS_REASONS), BASE_ERR_INVALID,
                "guideline store: reason: an override needs a reason");
    BASE_ENSURE(d->kind != 1 || d->reason == 0, BASE_ERR_INVALID,
                "guideline store: reason: an accept takes none");
    BASE_ENSURE(in_buf(d->comment, sizeof d->comment), BASE_ERR_INVALID,
                "guideline store: comment: at most 1000 bytes");
    char kbuf[INT_BUF], rbuf[INT_BUF];
    fmt_i64(kbuf, d->kind);
    fmt_i64(rbuf, d->reason);
    const char *p[] = {d->decision_id, d->review_id, d->tenant_id, d->clinician_id, kbuf, rbuf, d->comment};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query(pool, SQL_DECISION_INSERT, 7, p, &res));
    BASE_ENSURE(db_result_ntuples(res) == 1, BASE_ERR_INTERNAL, "guideline store: decision: no result row");
    if (db_result_is_null(res, 0, 0)) {
        const char *found = db_result_get(res, 0, 1);
        if (found && found[0] == 't')
            return base_fail(BASE_ERR_EXISTS, "review already decided");
        return base_fail(BASE_ERR_NOT_FOUND, "no such review");
    }
    int64_t created = 0;
    BASE_GUARD(db_result_get_int64(res, 0, 0, &created));
    if (ret_created_us)
        *ret_created_us = created;
    return BASE_OK_RESULT;
}

static base_result parse_decision(const db_result *res, int row, gs_decision *out)
{
    memset(out, 0, sizeof *out);
    BASE_GUARD(col_copy(res, row, D_ID, out->decision_id, sizeof out->decision_id));
    BASE_GUARD(col_copy(res, row, D_REVIEW, out->review_id, sizeof out->review_id));
    BASE_GUARD(col_copy(res, row, D_TENANT, out->tenant_id, sizeof out->tenant_id));
    BASE_GUARD(col_copy(res, row, D_CLINICIAN, out->clinician_id, sizeof out->clinician_id));
    BASE_GUARD(col_int(res, row, D_KIND, &out->kind));
    BASE_GUARD(col_int(res, row, D_REASON, &out->reason));
    BASE_GUARD(col_copy(res, row, D_COMMENT, out->comment, sizeof out->comment));
    return db_result_get_int64(res, row, D_CREATED, &out->created_us);
}

/* ---- History ------------------------------------------------------------------------------------------- */

typedef struct history_arg {
    const char *const *p;
    db_result *reviews, *decisions;
} history_arg;

static base_result history_body(db_conn *c, void *arg)
{
    history_arg *h = arg;
    db_result_free(h->reviews);
    db_result_free(h->decisions);
    h->reviews = h->decisions = NULL;
    BASE_GUARD(db_exec(c, SQL_HISTORY_REVIEWS, 3, h->p, &h->reviews));
    return db_exec(c, SQL_HISTORY_DECISIONS, 3, h->p, &h->decisions);
}

base_result gs_referral_history(db_pool *pool, const char *tenant_id, const char *referral_id,
                                gs_review **ret_reviews, size_t *ret_nreviews, gs_decision **ret_decisions,
                                size_t *ret_ndecisions)
{
    BASE_ENSURE(ret_reviews && ret_nreviews && ret_decisions && ret_ndecisions, BASE_ERR_INVALID,
                "guideline store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_referral(referral_id), BASE_ERR_INVALID,
                "guideline store: referral_id: must be 1..64 of [A-Za-z0-9_-]");
    char lbuf[INT_BUF];
    fmt_i64(lbuf, GS_LIST_MAX);
    const char *p[] = {tenant_id, referral_id, lbuf};
    history_arg h = {.p = p};
    base_result r = run(pool, DB_REPEATABLE_READ, history_body, &h);
    gs_review *rs = NULL;
    size_t nr = 0;
    gs_decision *ds = NULL;
    int nd = 0;
    if (base_is_ok(r))
        r = parse_reviews(h.reviews, &rs, &nr);
    if (base_is_ok(r)) {
        nd = db_result_ntuples(h.decisions);
        ds = calloc(nd > 0 ? (size_t)nd : 1, sizeof *ds);
        if (!ds)
            r = base_fail(BASE_ERR_NOMEM, "guideline store: out of memory");
        for (int i = 0; base_is_ok(r) && i < nd; i++)
            r = parse_decision(h.decisions, i, &ds[i]);
    }
    db_result_free(h.reviews);
    db_result_free(h.decisions);
    if (!base_is_ok(r)) {
        gs_reviews_free(rs, nr);
        free(ds);
        return r;
    }
    *ret_reviews = rs;
    *ret_nreviews = nr;
    *ret_decisions = ds;
    *ret_ndecisions = (size_t)nd;
    return BASE_OK_RESULT;
}

/* ---- What-if ------------------------------------------------------------------------------------------- */

base_result gs_reviews_for_whatif(db_pool *pool, const char *tenant_id, const char *const *referral_ids,
                                  size_t n_ids, int64_t start_us, int64_t end_us, size_t max, gs_review **ret,
                                  size_t *ret_n)
{
    BASE_ENSURE(ret && ret_n, BASE_ERR_INVALID, "guideline store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(max >= 1 && max <= WHATIF_MAX, BASE_ERR_INVALID, "guideline store: max: must be 1..10000");
    BASE_ENSURE(n_ids <= WHATIF_MAX, BASE_ERR_LIMIT, "guideline store: referral_ids: at most 10000");
    BASE_ENSURE(n_ids == 0 || referral_ids, BASE_ERR_INVALID, "guideline store: referral_ids: missing");
    for (size_t i = 0; i < n_ids; i++)
        BASE_ENSURE(valid_referral(referral_ids[i]), BASE_ERR_INVALID,
                    "guideline store: referral_ids: each must be 1..64 of [A-Za-z0-9_-]");
    BASE_ENSURE(start_us >= 0 && end_us >= 0, BASE_ERR_INVALID, "guideline store: time range: negative");
    char *ids = NULL;
    if (n_ids > 0)
        BASE_GUARD(db_text_array(referral_ids, n_ids, &ids));
    char sbuf[INT_BUF], ebuf[INT_BUF], mbuf[INT_BUF];
    fmt_i64(sbuf, start_us);
    fmt_i64(ebuf, end_us);
    fmt_i64(mbuf, (int64_t)max);
    const char *p[] = {tenant_id, ids, sbuf, ebuf, mbuf};
    db_result *res = NULL;
    base_result r = query(pool, SQL_WHATIF, 5, p, &res);
    free(ids);
    if (base_is_ok(r))
        r = parse_reviews(res, ret, ret_n);
    db_result_free(res);
    return r;
}

/* ---- Concordance --------------------------------------------------------------------------------------- */

base_result gs_concordance(db_pool *pool, const char *tenant_id, int64_t start_us, int64_t end_us,
                           const char *pathway_id, const char *clinician_id, gs_concordance_row **ret,
                           size_t *ret_n)
{
    BASE_ENSURE(ret && ret_n, BASE_ERR_INVALID, "guideline store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(start_us >= 0 && end_us >= 0, BASE_ERR_INVALID, "guideline store: time range: negative");
    const char *pw = pathway_id ? pathway_id : "";
    const char *cl = clinician_id ? clinician_id : "";
    BASE_ENSURE(valid_token(pw, true), BASE_ERR_INVALID, "guideline store: pathway_id: malformed");
    BASE_ENSURE(!cl[0] || valid_actor(cl), BASE_ERR_INVALID, "guideline store: clinician_id: malformed");
    char sbuf[INT_BUF], ebuf[INT_BUF], lbuf[INT_BUF];
    fmt_i64(sbuf, start_us);
    fmt_i64(ebuf, end_us);
    fmt_i64(lbuf, GS_CONCORDANCE_MAX + 1);
    const char *p[] = {tenant_id, sbuf, ebuf, pw, cl, lbuf};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(query(pool, SQL_CONCORDANCE, 6, p, &res));
    int n = db_result_ntuples(res);
    BASE_ENSURE(n <= GS_CONCORDANCE_MAX, BASE_ERR_LIMIT,
                "guideline store: concordance: too many pathway and clinician rows (narrow the filters)");
    gs_concordance_row *rows = calloc(n > 0 ? (size_t)n : 1, sizeof *rows);
    BASE_ENSURE(rows, BASE_ERR_NOMEM, "guideline store: out of memory");
    base_result r = BASE_OK_RESULT;
    for (int i = 0; base_is_ok(r) && i < n; i++) {
        gs_concordance_row *row = &rows[i];
        r = col_copy(res, i, C_PATHWAY, row->pathway_id, sizeof row->pathway_id);
        if (base_is_ok(r))
            r = col_copy(res, i, C_CLINICIAN, row->clinician_id, sizeof row->clinician_id);
        int64_t *dst[] = {&row->reviews, &row->refer,        &row->workup,
                          &row->manage,  &row->insufficient, &row->no_pathway,
                          &row->decided, &row->accepted,     &row->overridden};
        int col = C_COUNT0;
        for (size_t k = 0; base_is_ok(r) && k < BASE_ARRAY_LEN(dst); k++)
            r = db_result_get_int64(res, i, col++, dst[k]);
        for (int reason = 1; base_is_ok(r) && reason < GS_REASONS; reason++)
            r = db_result_get_int64(res, i, col++, &row->override_reasons[reason]);
    }
    if (!base_is_ok(r)) {
        free(rows);
        return r;
    }
    *ret = rows;
    *ret_n = (size_t)n;
    return BASE_OK_RESULT;
}
