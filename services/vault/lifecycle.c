/* The vault's record lifecycle: retention, legal holds, amendment requests, destruction certificates.
 * lifecycle.h is the contract, migrations/0002_lifecycle.sql the schema.
 *
 * Every statement is a constant with $n parameters (common/db). Timestamps cross the boundary as
 * microseconds since the epoch (TS / US below). Each transaction body may run more than once (a retried
 * serialization failure), so it writes only into its context, resetting it first; the public function
 * copies the context out after the commit.
 *
 * Destruction runs in steps, each one committed before the next, so that any of them can be repeated:
 *   A  under the patient's advisory lock: checks (legal hold, retention) and a `destructions` row with the
 *      certificate id, reason and actor. vault_hold_place takes the same lock and refuses while the row
 *      exists, so no hold can slip in between the check and the shredding.
 *   B  vault_store_shred_keys; what it reports is saved in the row.
 *   C  vault_store_shred_rows; the time saved in the row.
 *   D  the signed certificate inserted and the row deleted, in one transaction.
 * A repeat finds the row and goes on from where the data is: rows still there (shredded or not) are
 * shredded again; rows gone means B and C are done and the row holds what they reported. */
#include "lifecycle.h"

#include <jansson.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TXN_ATTEMPTS 10

#define FAIL_FIELD(field, what) base_fail(BASE_ERR_INVALID, "vault lifecycle: %s: %s", (field), (what))

/* ---- SQL (constants only) --------------------------------------------------------------------------- */

#define TS(n)   "(timestamptz 'epoch' + $" #n "::bigint * interval '1 microsecond')"
#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

/* Serialises a destruction's checks with the placing of holds on the same patient. */
static const char SQL_LOCK_PATIENT[] =
    "SELECT pg_advisory_xact_lock(hashtextextended('alma-vault-lifecycle|' || $1 || '|' || $2, 0))";

static const char SQL_RETENTION_SET[] =
    "INSERT INTO retention (tenant_id, category, years, updated_at, updated_by) "
    "VALUES ($1, $2::smallint, $3::smallint, now(), $4) "
    "ON CONFLICT (tenant_id, category) DO UPDATE SET years = EXCLUDED.years, updated_at = "
    "EXCLUDED.updated_at, "
    "updated_by = EXCLUDED.updated_by "
    "RETURNING years, false, " US("updated_at") ", updated_by";
/* The tenant's row sorts before the built-in '' row. */
static const char SQL_RETENTION_GET[] = "SELECT years, tenant_id = '', " US(
    "updated_at") ", updated_by "
                  "FROM retention WHERE tenant_id IN ('', $1) AND category = $2::smallint "
                  "ORDER BY tenant_id DESC LIMIT 1";

#define HOLD_COLS                                                                                            \
    "hold_id, tenant_id, patient_ref, reason_code, " US("placed_at") ", placed_by, " US(                     \
        "released_at") ", coalesce(released_by, '')"
static const char SQL_DESTRUCTION_PENDING[] =
    "SELECT 1 FROM destructions WHERE tenant_id = $1 AND patient_ref = $2";
static const char SQL_HOLD_INSERT[] =
    "INSERT INTO legal_holds (hold_id, tenant_id, patient_ref, reason_code, "
    "placed_by) VALUES ($1, $2, $3, $4, $5) RETURNING " HOLD_COLS;
static const char SQL_HOLD_RELEASE[] =
    "UPDATE legal_holds SET released_at = now(), released_by = $3 "
    "WHERE tenant_id = $1 AND hold_id = $2 AND released_at IS NULL RETURNING " HOLD_COLS;
static const char SQL_HOLD_EXISTS[] = "SELECT 1 FROM legal_holds WHERE tenant_id = $1 AND hold_id = $2";
static const char SQL_HOLDS_LIST[] =
    "SELECT " HOLD_COLS " FROM legal_holds WHERE tenant_id = $1 AND patient_ref = $2 "
    "AND ($3::boolean OR released_at IS NULL) ORDER BY placed_at, hold_id LIMIT 100";
static const char SQL_HOLD_IN_FORCE[] =
    "SELECT 1 FROM legal_holds WHERE tenant_id = $1 AND patient_ref = $2 AND released_at IS NULL LIMIT 1";

#define AM_COLS                                                                                              \
    "request_id, tenant_id, patient_ref, record_id, status, " US("received_at") ", " US("due_at") ", " US(   \
        "extended_at") ", " US("decided_at") ", coalesce(decided_by, ''), coalesce(amended_version, 0), "    \
                                             "coalesce(denial_basis, 0)"
/* Days as 24-hour periods (the migration says why): 60 days = 1440 hours, 90 days = 2160 hours. */
static const char SQL_AM_INSERT[] =
    "INSERT INTO amendment_requests (request_id, tenant_id, patient_ref, record_id, status, received_at, "
    "due_at) "
    "VALUES ($1, $2, $3, $4, 1, now(), now() + interval '1440 hours') RETURNING " AM_COLS;
static const char SQL_AM_EVENT[] =
    "INSERT INTO amendment_events (request_id, status, at, actor) VALUES ($1, $2::smallint, now(), $3)";
static const char SQL_AM_LOCK[] = "SELECT status, now() < due_at FROM amendment_requests "
                                  "WHERE tenant_id = $1 AND request_id = $2 FOR UPDATE";
static const char SQL_AM_EXTEND[] = "UPDATE amendment_requests SET status = 2, extended_at = now(), due_at = "
                                    "received_at + interval '2160 hours' "
                                    "WHERE tenant_id = $1 AND request_id = $2 RETURNING " AM_COLS;
static const char SQL_AM_AMENDED_VERSION[] =
    "SELECT max(r.version) FROM records r JOIN amendment_requests a "
    "ON a.tenant_id = r.tenant_id AND a.record_id = r.record_id AND a.request_id = r.amendment_request_id "
    "WHERE a.tenant_id = $1 AND a.request_id = $2";
static const char SQL_AM_ACCEPT[] = "UPDATE amendment_requests SET status = 3, decided_at = now(), "
                                    "decided_by = $3, amended_version = $4::integer "
                                    "WHERE tenant_id = $1 AND request_id = $2 RETURNING " AM_COLS;
static const char SQL_AM_DENY[] = "UPDATE amendment_requests SET status = 4, decided_at = now(), decided_by "
                                  "= $3, denial_basis = $4::smallint "
                                  "WHERE tenant_id = $1 AND request_id = $2 RETURNING " AM_COLS;
static const char SQL_AM_GET[] =
    "SELECT " AM_COLS " FROM amendment_requests WHERE tenant_id = $1 AND request_id = $2";
static const char SQL_AM_LIST_PATIENT[] = "SELECT " AM_COLS " FROM amendment_requests "
                                          "WHERE tenant_id = $1 AND patient_ref = $2 "
                                          "ORDER BY received_at, request_id LIMIT 500";
static const char SQL_AM_LIST_OPEN[] = "SELECT " AM_COLS " FROM amendment_requests "
                                       "WHERE tenant_id = $1 AND status IN (1, 2) "
                                       "ORDER BY received_at, request_id LIMIT 500";
static const char SQL_AM_EVENTS[] =
    "SELECT e.status, " US("e.at") ", e.actor FROM amendment_events e "
                                   "JOIN amendment_requests a ON a.request_id = e.request_id "
                                   "WHERE a.tenant_id = $1 AND e.request_id = $2 ORDER BY e.at, e.status";

/* For each category present in any version of the patient's records, the latest last-version time of a
 * record holding it; the first category (by number) whose retention, the tenant's or the built-in default,
 * has not run out yet. */
static const char SQL_RETENTION_BLOCKER[] =
    "WITH v AS (SELECT categories, max(created_at) OVER (PARTITION BY record_id) AS last_at "
    "           FROM records WHERE tenant_id = $1 AND patient_ref = $2), "
    "c AS (SELECT g.c AS category, max(v.last_at) AS last_at FROM v CROSS JOIN generate_series(1, 6) AS g(c) "
    "      WHERE v.categories & (1 << g.c) <> 0 GROUP BY g.c) "
    "SELECT c.category FROM c WHERE c.last_at + make_interval(years => "
    "  (SELECT r.years FROM retention r WHERE r.tenant_id IN ('', $1) AND r.category = c.category "
    "   ORDER BY r.tenant_id DESC LIMIT 1)) > now() "
    "ORDER BY c.category LIMIT 1";
/* How many rows the patient has, and when the first of their data keys was destroyed (NULL: none yet). */
static const char SQL_PATIENT_ROWS[] =
    "SELECT count(*), " US("min(shredded_at)") " FROM records "
                                               "WHERE tenant_id = $1 AND patient_ref = $2";

#define DESTRUCTION_COLS                                                                                     \
    "certificate_id, reason_code, actor, coalesce(records, 0), coalesce(versions, 0), coalesce(kek_min, "    \
    "0), "                                                                                                   \
    "coalesce(kek_max, 0), " US("keys_destroyed_at") ", " US("rows_deleted_at")
static const char SQL_DESTRUCTION_GET[] =
    "SELECT " DESTRUCTION_COLS " FROM destructions WHERE tenant_id = $1 AND patient_ref = $2";
static const char SQL_DESTRUCTION_IDS[] =
    "SELECT u.id FROM destructions d, unnest(d.record_ids) WITH ORDINALITY AS u(id, n) "
    "WHERE d.tenant_id = $1 AND d.patient_ref = $2 ORDER BY u.n";
static const char SQL_DESTRUCTION_INSERT[] =
    "INSERT INTO destructions (tenant_id, patient_ref, certificate_id, reason_code, actor) "
    "VALUES ($1, $2, $3, $4, $5)";
static const char SQL_DESTRUCTION_KEYS[] =
    "UPDATE destructions SET records = $3::integer, versions = $4::integer, record_ids = $5::text[], "
    "kek_min = $6::integer, kek_max = $7::integer, keys_destroyed_at = " TS(
        8) ", rows_deleted_at = NULL "
           "WHERE tenant_id = $1 AND patient_ref = $2";
static const char SQL_DESTRUCTION_ROWS[] =
    "UPDATE destructions SET rows_deleted_at = " TS(3) " WHERE tenant_id = $1 AND patient_ref = $2";
static const char SQL_DESTRUCTION_DELETE[] =
    "DELETE FROM destructions WHERE tenant_id = $1 AND patient_ref = $2";
static const char SQL_DESTRUCTION_DONE[] = "DELETE FROM destructions WHERE certificate_id = $1";
static const char SQL_NOW_US[] = "SELECT " US("now()");

#define CERT_COLS                                                                                            \
    "certificate_id, tenant_id, coalesce(patient_ref, ''), " US("destroyed_at") ", records, versions, "      \
                                                                                "statement, signature, "     \
                                                                                "verifier_key"
static const char SQL_CERT_INSERT[] =
    "INSERT INTO destruction_certificates (certificate_id, tenant_id, patient_ref, destroyed_at, records, "
    "versions, statement, signature, verifier_key) "
    "VALUES ($1, $2, $3, " TS(4) ", $5::integer, $6::integer, $7, $8::bytea, $9) ON CONFLICT DO NOTHING";
static const char SQL_CERT_GET[] =
    "SELECT " CERT_COLS " FROM destruction_certificates WHERE tenant_id = $1 AND certificate_id = $2";
static const char SQL_CERT_OF_PATIENT[] =
    "SELECT " CERT_COLS " FROM destruction_certificates WHERE tenant_id = $1 AND patient_ref = $2 "
    "ORDER BY created_at DESC LIMIT 1";
static const char SQL_CERT_OF_TENANT[] =
    "SELECT " CERT_COLS " FROM destruction_certificates WHERE tenant_id = $1 AND patient_ref IS NULL";

static const char SQL_TENANT_COUNTS[] =
    "SELECT count(DISTINCT record_id), count(*) FROM records WHERE tenant_id = $1";
/* When the tenant was offboarded, and how many KEK versions that destroyed: the store destroys them in the
 * transaction that sets offboarded_at, so they share its time (versions retired earlier do not). */
static const char SQL_TENANT_OFFBOARDED[] =
    "SELECT " US("t.offboarded_at") ", (SELECT count(*) FROM tenant_keys k WHERE k.tenant_id = t.tenant_id "
                                    "AND k.destroyed_at = t.offboarded_at) FROM tenants t WHERE t.tenant_id "
                                    "= $1 AND t.offboarded_at IS NOT NULL";

/* ---- validation (pure) ------------------------------------------------------------------------------ */

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static base_result check_tenant(const char *t)
{
    if (!t)
        return FAIL_FIELD("tenant_id", "required");
    size_t n = strlen(t);
    if (n < 2 || n > 63 || !((t[0] >= 'a' && t[0] <= 'z') || (t[0] >= '0' && t[0] <= '9')))
        return FAIL_FIELD("tenant_id", "must be 2..63 of [a-z0-9-], starting with [a-z0-9]");
    for (size_t i = 1; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '-'))
            return FAIL_FIELD("tenant_id", "must be 2..63 of [a-z0-9-], starting with [a-z0-9]");
    return BASE_OK_RESULT;
}

/* prefix_a (or prefix_b when not NULL) + 32 lowercase hex digits. */
static base_result check_id(const char *field, const char *id, const char *prefix_a, const char *prefix_b)
{
    if (!id || strlen(id) != VAULT_ID_LEN ||
        (strncmp(id, prefix_a, 3) != 0 && !(prefix_b && strncmp(id, prefix_b, 3) == 0)))
        return FAIL_FIELD(field, "malformed reference");
    for (size_t i = 3; i < VAULT_ID_LEN; i++)
        if (!is_lower_hex(id[i]))
            return FAIL_FIELD(field, "malformed reference");
    return BASE_OK_RESULT;
}

static base_result check_reason(const char *r)
{
    size_t n = r ? strlen(r) : 0;
    if (n < 1 || n > VAULT_REASON_MAX)
        return FAIL_FIELD("reason_code", "must be 1..64 of [a-z0-9_]");
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '_'))
            return FAIL_FIELD("reason_code", "must be 1..64 of [a-z0-9_]");
    return BASE_OK_RESULT;
}

/* A principal id: 1..VAULT_ACTOR_MAX printable ASCII bytes (they go into signed JSON verbatim). */
static base_result check_actor(const char *a)
{
    size_t n = a ? strlen(a) : 0;
    if (n < 1 || n > VAULT_ACTOR_MAX)
        return FAIL_FIELD("actor", "must be 1..128 printable ASCII characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)a[i] < 0x20 || (unsigned char)a[i] > 0x7e)
            return FAIL_FIELD("actor", "must be 1..128 printable ASCII characters");
    return BASE_OK_RESULT;
}

static base_result check_category(int c)
{
    if (c < 1 || c > VAULT_CATEGORY_MAX)
        return FAIL_FIELD("category", "must be 1..6");
    return BASE_OK_RESULT;
}

/* ---- result helpers --------------------------------------------------------------------------------- */

static base_result col_str(const db_result *res, int row, int col, char *dst, size_t cap)
{
    const char *v = db_result_get(res, row, col);
    size_t n = v ? db_result_length(res, row, col) : 0;
    if (n >= cap)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: a stored value is longer than its limit");
    if (n)
        memcpy(dst, v, n);
    dst[n] = '\0';
    return BASE_OK_RESULT;
}

/* An integer column; SQL NULL reads as 0. */
static base_result col_i64(const db_result *res, int row, int col, int64_t *ret)
{
    if (db_result_is_null(res, row, col)) {
        *ret = 0;
        return BASE_OK_RESULT;
    }
    return db_result_get_int64(res, row, col, ret);
}

static base_result col_u32(const db_result *res, int row, int col, uint32_t *ret)
{
    int64_t v = 0;
    BASE_GUARD(col_i64(res, row, col, &v));
    if (v < 0 || v > UINT32_MAX)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: a stored count is out of range");
    *ret = (uint32_t)v;
    return BASE_OK_RESULT;
}

static base_result col_int(const db_result *res, int row, int col, int *ret)
{
    int64_t v = 0;
    BASE_GUARD(col_i64(res, row, col, &v));
    if (v < 0 || v > 1000000)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: a stored code is out of range");
    *ret = (int)v;
    return BASE_OK_RESULT;
}

/* One constant statement on conn, with the rows in *ret (freed by the caller). */
static base_result run(db_conn *conn, const char *sql, int n, const char *const *p, db_result **ret)
{
    return db_exec(conn, sql, n, p, ret);
}

static void u64_text(char buf[24], uint64_t v)
{
    snprintf(buf, 24, "%" PRIu64, v);
}

static void i64_text(char buf[24], int64_t v)
{
    snprintf(buf, 24, "%" PRId64, v);
}

/* ---- retention -------------------------------------------------------------------------------------- */

typedef struct retention_ctx {
    const char *tenant_id, *actor;
    int category;
    uint32_t years;
    bool set;
    vault_retention out;
} retention_ctx;

static base_result retention_row(const db_result *res, int category, vault_retention *out)
{
    memset(out, 0, sizeof *out);
    out->category = category;
    const char *dflt = db_result_get(res, 0, 1);
    out->is_default = dflt && dflt[0] == 't';
    BASE_GUARD(col_u32(res, 0, 0, &out->years));
    BASE_GUARD(col_i64(res, 0, 2, &out->updated_us));
    return col_str(res, 0, 3, out->updated_by, sizeof out->updated_by);
}

static base_result retention_txn(db_conn *conn, void *arg)
{
    retention_ctx *c = arg;
    char cat[24], years[24];
    i64_text(cat, c->category);
    u64_text(years, c->years);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    if (c->set) {
        const char *p[] = {c->tenant_id, cat, years, c->actor};
        BASE_GUARD(run(conn, SQL_RETENTION_SET, 4, p, &res));
    } else {
        const char *p[] = {c->tenant_id, cat};
        BASE_GUARD(run(conn, SQL_RETENTION_GET, 2, p, &res));
    }
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: no built-in retention for a category");
    return retention_row(res, c->category, &c->out);
}

base_result vault_retention_set(db_pool *pool, const char *tenant_id, int category, uint32_t years,
                                const char *actor, vault_retention *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_category(category));
    BASE_GUARD(check_actor(actor));
    if (years > VAULT_RETENTION_YEARS_MAX)
        return FAIL_FIELD("years", "must be 0..100");
    retention_ctx c = {
        .tenant_id = tenant_id, .actor = actor, .category = category, .years = years, .set = true};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, retention_txn, &c));
    if (ret)
        *ret = c.out;
    return BASE_OK_RESULT;
}

base_result vault_retention_get(db_pool *pool, const char *tenant_id, int category, vault_retention *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_category(category));
    retention_ctx c = {.tenant_id = tenant_id, .category = category};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, retention_txn, &c));
    *ret = c.out;
    return BASE_OK_RESULT;
}

/* ---- legal holds ------------------------------------------------------------------------------------ */

static base_result hold_row(const db_result *res, int row, vault_legal_hold *h)
{
    memset(h, 0, sizeof *h);
    BASE_GUARD(col_str(res, row, 0, h->hold_id, sizeof h->hold_id));
    BASE_GUARD(col_str(res, row, 1, h->tenant_id, sizeof h->tenant_id));
    BASE_GUARD(col_str(res, row, 2, h->patient_ref, sizeof h->patient_ref));
    BASE_GUARD(col_str(res, row, 3, h->reason_code, sizeof h->reason_code));
    BASE_GUARD(col_i64(res, row, 4, &h->placed_us));
    BASE_GUARD(col_str(res, row, 5, h->placed_by, sizeof h->placed_by));
    BASE_GUARD(col_i64(res, row, 6, &h->released_us));
    return col_str(res, row, 7, h->released_by, sizeof h->released_by);
}

typedef struct hold_ctx {
    const char *tenant_id, *patient_ref, *hold_id, *reason_code, *actor;
    bool include_released;
    vault_legal_hold one;
    vault_legal_hold *list;
    size_t n;
} hold_ctx;

static base_result hold_place_txn(db_conn *conn, void *arg)
{
    hold_ctx *c = arg;
    const char *pp[] = {c->tenant_id, c->patient_ref};
    BASE_GUARD(run(conn, SQL_LOCK_PATIENT, 2, pp, NULL));
    BASE_CLEANUP(db_result_freep) db_result *pending = NULL;
    BASE_GUARD(run(conn, SQL_DESTRUCTION_PENDING, 2, pp, &pending));
    if (db_result_ntuples(pending) > 0)
        return base_fail(BASE_ERR_CONFLICT, "patient destruction in progress");
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {c->hold_id, c->tenant_id, c->patient_ref, c->reason_code, c->actor};
    BASE_GUARD(run(conn, SQL_HOLD_INSERT, 5, p, &res));
    return hold_row(res, 0, &c->one);
}

base_result vault_hold_place(vault_store *store, db_pool *pool, const char *tenant_id,
                             const char *patient_ref, const char *reason_code, const char *actor,
                             vault_legal_hold *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("patient_ref", patient_ref, "pt_", NULL));
    BASE_GUARD(check_reason(reason_code));
    BASE_GUARD(check_actor(actor));
    vault_record head;
    memset(&head, 0, sizeof head);
    base_result r = vault_store_head(store, tenant_id, patient_ref, 0, &head);
    vault_record_clear(&head);
    if (r.err == BASE_ERR_NOT_FOUND)
        return base_fail(BASE_ERR_NOT_FOUND, "patient not found");
    BASE_GUARD(r);
    char hold_id[VAULT_ID_BUF];
    vault_random_id("lh_", hold_id);
    hold_ctx c = {.tenant_id = tenant_id,
                  .patient_ref = patient_ref,
                  .hold_id = hold_id,
                  .reason_code = reason_code,
                  .actor = actor};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, hold_place_txn, &c));
    *ret = c.one;
    return BASE_OK_RESULT;
}

static base_result hold_release_txn(db_conn *conn, void *arg)
{
    hold_ctx *c = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {c->tenant_id, c->hold_id, c->actor};
    BASE_GUARD(run(conn, SQL_HOLD_RELEASE, 3, p, &res));
    if (db_result_ntuples(res) == 1)
        return hold_row(res, 0, &c->one);
    BASE_CLEANUP(db_result_freep) db_result *exists = NULL;
    BASE_GUARD(run(conn, SQL_HOLD_EXISTS, 2, p, &exists));
    if (db_result_ntuples(exists) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "legal hold not found");
    return base_fail(BASE_ERR_CONFLICT, "legal hold already released");
}

base_result vault_hold_release(db_pool *pool, const char *tenant_id, const char *hold_id, const char *actor,
                               vault_legal_hold *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("hold_id", hold_id, "lh_", NULL));
    BASE_GUARD(check_actor(actor));
    hold_ctx c = {.tenant_id = tenant_id, .hold_id = hold_id, .actor = actor};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, hold_release_txn, &c));
    *ret = c.one;
    return BASE_OK_RESULT;
}

static base_result holds_list_txn(db_conn *conn, void *arg)
{
    hold_ctx *c = arg;
    free(c->list);
    c->list = NULL;
    c->n = 0;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {c->tenant_id, c->patient_ref, c->include_released ? "true" : "false"};
    BASE_GUARD(run(conn, SQL_HOLDS_LIST, 3, p, &res));
    int n = db_result_ntuples(res);
    if (n == 0)
        return BASE_OK_RESULT;
    c->list = calloc((size_t)n, sizeof *c->list);
    if (!c->list)
        return base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory listing legal holds");
    for (int i = 0; i < n; i++)
        BASE_GUARD(hold_row(res, i, &c->list[i]));
    c->n = (size_t)n;
    return BASE_OK_RESULT;
}

base_result vault_holds_list(db_pool *pool, const char *tenant_id, const char *patient_ref,
                             bool include_released, vault_legal_hold **ret, size_t *ret_n)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("patient_ref", patient_ref, "pt_", NULL));
    hold_ctx c = {.tenant_id = tenant_id, .patient_ref = patient_ref, .include_released = include_released};
    base_result r = db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, holds_list_txn, &c);
    if (!base_is_ok(r)) {
        free(c.list);
        return r;
    }
    *ret = c.list;
    *ret_n = c.n;
    return BASE_OK_RESULT;
}

/* ---- amendment requests ----------------------------------------------------------------------------- */

static base_result amendment_row(const db_result *res, int row, vault_amendment *a)
{
    memset(a, 0, sizeof *a);
    BASE_GUARD(col_str(res, row, 0, a->request_id, sizeof a->request_id));
    BASE_GUARD(col_str(res, row, 1, a->tenant_id, sizeof a->tenant_id));
    BASE_GUARD(col_str(res, row, 2, a->patient_ref, sizeof a->patient_ref));
    BASE_GUARD(col_str(res, row, 3, a->record_id, sizeof a->record_id));
    BASE_GUARD(col_int(res, row, 4, &a->status));
    BASE_GUARD(col_i64(res, row, 5, &a->received_us));
    BASE_GUARD(col_i64(res, row, 6, &a->due_us));
    BASE_GUARD(col_i64(res, row, 7, &a->extended_us));
    BASE_GUARD(col_i64(res, row, 8, &a->decided_us));
    BASE_GUARD(col_str(res, row, 9, a->decided_by, sizeof a->decided_by));
    BASE_GUARD(col_u32(res, row, 10, &a->amended_version));
    return col_int(res, row, 11, &a->denial_basis);
}

typedef struct amendment_ctx {
    const char *tenant_id, *patient_ref, *record_id, *request_id, *actor;
    int status, denial_basis;
    vault_amendment one;
    vault_amendment *list;
    size_t n;
    vault_amendment_event events[4];
} amendment_ctx;

static base_result amendment_event(db_conn *conn, const char *request_id, int status, const char *actor)
{
    char st[24];
    i64_text(st, status);
    const char *p[] = {request_id, st, actor};
    return run(conn, SQL_AM_EVENT, 3, p, NULL);
}

static base_result amendment_create_txn(db_conn *conn, void *arg)
{
    amendment_ctx *c = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {c->request_id, c->tenant_id, c->patient_ref, c->record_id};
    BASE_GUARD(run(conn, SQL_AM_INSERT, 4, p, &res));
    BASE_GUARD(amendment_row(res, 0, &c->one));
    return amendment_event(conn, c->request_id, VAULT_AMENDMENT_RECEIVED, c->actor);
}

base_result vault_amendment_create(vault_store *store, db_pool *pool, const char *tenant_id,
                                   const char *patient_ref, const char *record_id, const char *actor,
                                   vault_amendment *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("patient_ref", patient_ref, "pt_", NULL));
    BASE_GUARD(check_id("record_id", record_id, "pt_", "it_"));
    BASE_GUARD(check_actor(actor));
    vault_record head;
    memset(&head, 0, sizeof head);
    base_result r = vault_store_head(store, tenant_id, record_id, 0, &head);
    bool same_patient = base_is_ok(r) && strcmp(head.patient_ref, patient_ref) == 0;
    vault_record_clear(&head);
    if (r.err == BASE_ERR_NOT_FOUND || (base_is_ok(r) && !same_patient))
        return base_fail(BASE_ERR_NOT_FOUND, "record not found for the patient");
    BASE_GUARD(r);
    char request_id[VAULT_ID_BUF];
    vault_random_id("am_", request_id);
    amendment_ctx c = {.tenant_id = tenant_id,
                       .patient_ref = patient_ref,
                       .record_id = record_id,
                       .request_id = request_id,
                       .actor = actor};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, amendment_create_txn, &c));
    *ret = c.one;
    return BASE_OK_RESULT;
}

static base_result amendment_decide_txn(db_conn *conn, void *arg)
{
    amendment_ctx *c = arg;
    const char *p2[] = {c->tenant_id, c->request_id};
    BASE_CLEANUP(db_result_freep) db_result *lock = NULL;
    BASE_GUARD(run(conn, SQL_AM_LOCK, 2, p2, &lock));
    if (db_result_ntuples(lock) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "amendment request not found");
    int status = 0;
    BASE_GUARD(col_int(lock, 0, 0, &status));
    const char *before_due = db_result_get(lock, 0, 1);
    if (status != VAULT_AMENDMENT_RECEIVED && status != VAULT_AMENDMENT_EXTENDED)
        return base_fail(BASE_ERR_CONFLICT, "amendment request already decided");

    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    switch (c->status) {
    case VAULT_AMENDMENT_EXTENDED:
        if (status == VAULT_AMENDMENT_EXTENDED)
            return base_fail(BASE_ERR_CONFLICT, "amendment request already extended");
        if (!before_due || before_due[0] != 't')
            return base_fail(BASE_ERR_CONFLICT, "amendment request is past its due date");
        BASE_GUARD(run(conn, SQL_AM_EXTEND, 2, p2, &res));
        break;
    case VAULT_AMENDMENT_ACCEPTED: {
        BASE_CLEANUP(db_result_freep) db_result *ver = NULL;
        BASE_GUARD(run(conn, SQL_AM_AMENDED_VERSION, 2, p2, &ver));
        if (db_result_ntuples(ver) != 1 || db_result_is_null(ver, 0, 0))
            return base_fail(BASE_ERR_CONFLICT, "no record version written for the amendment request");
        const char *p4[] = {c->tenant_id, c->request_id, c->actor, db_result_get(ver, 0, 0)};
        BASE_GUARD(run(conn, SQL_AM_ACCEPT, 4, p4, &res));
        break;
    }
    case VAULT_AMENDMENT_DENIED: {
        char basis[24];
        i64_text(basis, c->denial_basis);
        const char *p4[] = {c->tenant_id, c->request_id, c->actor, basis};
        BASE_GUARD(run(conn, SQL_AM_DENY, 4, p4, &res));
        break;
    }
    default:
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: unexpected amendment status");
    }
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: amendment request vanished");
    BASE_GUARD(amendment_row(res, 0, &c->one));
    return amendment_event(conn, c->request_id, c->status, c->actor);
}

base_result vault_amendment_decide(db_pool *pool, const char *tenant_id, const char *request_id, int status,
                                   int denial_basis, const char *actor, vault_amendment *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("request_id", request_id, "am_", NULL));
    BASE_GUARD(check_actor(actor));
    switch (status) {
    case VAULT_AMENDMENT_EXTENDED:
    case VAULT_AMENDMENT_ACCEPTED:
        if (denial_basis != 0)
            return FAIL_FIELD("denial_basis", "only with DENIED");
        break;
    case VAULT_AMENDMENT_DENIED:
        if (denial_basis < VAULT_DENIAL_NOT_CREATED_BY_ENTITY ||
            denial_basis > VAULT_DENIAL_ACCURATE_AND_COMPLETE)
            return FAIL_FIELD("denial_basis", "required with DENIED: a §164.526(a)(2) basis");
        break;
    default:
        return FAIL_FIELD("status", "must be EXTENDED, ACCEPTED or DENIED");
    }
    amendment_ctx c = {.tenant_id = tenant_id,
                       .request_id = request_id,
                       .actor = actor,
                       .status = status,
                       .denial_basis = denial_basis};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, amendment_decide_txn, &c));
    *ret = c.one;
    return BASE_OK_RESULT;
}

static base_result amendment_get_txn(db_conn *conn, void *arg)
{
    amendment_ctx *c = arg;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {c->tenant_id, c->request_id};
    BASE_GUARD(run(conn, SQL_AM_GET, 2, p, &res));
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "amendment request not found");
    return amendment_row(res, 0, &c->one);
}

base_result vault_amendment_get(db_pool *pool, const char *tenant_id, const char *request_id,
                                vault_amendment *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("request_id", request_id, "am_", NULL));
    amendment_ctx c = {.tenant_id = tenant_id, .request_id = request_id};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, amendment_get_txn, &c));
    *ret = c.one;
    return BASE_OK_RESULT;
}

static base_result amendments_list_txn(db_conn *conn, void *arg)
{
    amendment_ctx *c = arg;
    free(c->list);
    c->list = NULL;
    c->n = 0;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    if (c->patient_ref) {
        const char *p[] = {c->tenant_id, c->patient_ref};
        BASE_GUARD(run(conn, SQL_AM_LIST_PATIENT, 2, p, &res));
    } else {
        const char *p[] = {c->tenant_id};
        BASE_GUARD(run(conn, SQL_AM_LIST_OPEN, 1, p, &res));
    }
    int n = db_result_ntuples(res);
    if (n == 0)
        return BASE_OK_RESULT;
    c->list = calloc((size_t)n, sizeof *c->list);
    if (!c->list)
        return base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory listing amendment requests");
    for (int i = 0; i < n; i++)
        BASE_GUARD(amendment_row(res, i, &c->list[i]));
    c->n = (size_t)n;
    return BASE_OK_RESULT;
}

base_result vault_amendments_list(db_pool *pool, const char *tenant_id, const char *patient_ref,
                                  vault_amendment **ret, size_t *ret_n)
{
    BASE_GUARD(check_tenant(tenant_id));
    if (patient_ref && !patient_ref[0])
        patient_ref = NULL;
    if (patient_ref)
        BASE_GUARD(check_id("patient_ref", patient_ref, "pt_", NULL));
    amendment_ctx c = {.tenant_id = tenant_id, .patient_ref = patient_ref};
    base_result r = db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, amendments_list_txn, &c);
    if (!base_is_ok(r)) {
        free(c.list);
        return r;
    }
    *ret = c.list;
    *ret_n = c.n;
    return BASE_OK_RESULT;
}

static base_result amendment_events_txn(db_conn *conn, void *arg)
{
    amendment_ctx *c = arg;
    c->n = 0;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {c->tenant_id, c->request_id};
    BASE_GUARD(run(conn, SQL_AM_EVENTS, 2, p, &res));
    int n = db_result_ntuples(res);
    if (n > 4)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: more amendment events than statuses");
    for (int i = 0; i < n; i++) {
        vault_amendment_event *e = &c->events[i];
        memset(e, 0, sizeof *e);
        BASE_GUARD(col_int(res, i, 0, &e->status));
        BASE_GUARD(col_i64(res, i, 1, &e->at_us));
        BASE_GUARD(col_str(res, i, 2, e->actor, sizeof e->actor));
    }
    c->n = (size_t)n;
    return BASE_OK_RESULT;
}

base_result vault_amendment_events(db_pool *pool, const char *tenant_id, const char *request_id,
                                   vault_amendment_event ret[4], size_t *ret_n)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("request_id", request_id, "am_", NULL));
    amendment_ctx c = {.tenant_id = tenant_id, .request_id = request_id};
    BASE_GUARD(db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, amendment_events_txn, &c));
    memcpy(ret, c.events, c.n * sizeof c.events[0]);
    *ret_n = c.n;
    return BASE_OK_RESULT;
}

/* ---- certificates ----------------------------------------------------------------------------------- */

void vault_certificate_clear(vault_certificate *c)
{
    if (!c)
        return;
    free(c->statement);
    free(c->verifier_key);
    memset(c, 0, sizeof *c);
}

static base_result cert_row(const db_result *res, int row, vault_certificate *out)
{
    vault_certificate c;
    memset(&c, 0, sizeof c);
    base_result r;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    BASE_GUARD_GOTO(r, col_str(res, row, 0, c.certificate_id, sizeof c.certificate_id), out);
    BASE_GUARD_GOTO(r, col_str(res, row, 1, c.tenant_id, sizeof c.tenant_id), out);
    BASE_GUARD_GOTO(r, col_str(res, row, 2, c.patient_ref, sizeof c.patient_ref), out);
    BASE_GUARD_GOTO(r, col_i64(res, row, 3, &c.destroyed_us), out);
    BASE_GUARD_GOTO(r, col_u32(res, row, 4, &c.records), out);
    BASE_GUARD_GOTO(r, col_u32(res, row, 5, &c.versions), out);
    BASE_GUARD_GOTO(r, db_result_get_bytea(res, row, 7, &sig, &sig_len), out);
    if (sig_len != sizeof c.signature) {
        r = base_fail(BASE_ERR_INTERNAL, "vault lifecycle: a stored signature has the wrong length");
        goto out;
    }
    memcpy(c.signature, sig, sig_len);
    c.statement_len = db_result_length(res, row, 6);
    c.statement = strdup(db_result_get(res, row, 6) ? db_result_get(res, row, 6) : "");
    c.verifier_key = strdup(db_result_get(res, row, 8) ? db_result_get(res, row, 8) : "");
    if (!c.statement || !c.verifier_key) {
        r = base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory reading a certificate");
        goto out;
    }
    *out = c;
    memset(&c, 0, sizeof c);
    r = BASE_OK_RESULT;
out:
    free(sig);
    vault_certificate_clear(&c);
    return r;
}

typedef struct cert_ctx {
    const char *tenant_id, *certificate_id, *patient_ref;
    vault_certificate out;
    bool found;
} cert_ctx;

static base_result cert_get_txn(db_conn *conn, void *arg)
{
    cert_ctx *c = arg;
    vault_certificate_clear(&c->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    const char *p[] = {c->tenant_id, c->certificate_id};
    BASE_GUARD(run(conn, SQL_CERT_GET, 2, p, &res));
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_NOT_FOUND, "destruction certificate not found");
    return cert_row(res, 0, &c->out);
}

base_result vault_certificate_get(db_pool *pool, const char *tenant_id, const char *certificate_id,
                                  vault_certificate *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("certificate_id", certificate_id, "dc_", NULL));
    cert_ctx c = {.tenant_id = tenant_id, .certificate_id = certificate_id};
    base_result r = db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, cert_get_txn, &c);
    if (!base_is_ok(r)) {
        vault_certificate_clear(&c.out);
        return r;
    }
    *ret = c.out;
    return BASE_OK_RESULT;
}

base_result vault_certificate_verify(const char *statement, size_t statement_len, const uint8_t *signature,
                                     size_t signature_len, const char *verifier_key_pem)
{
    if (!statement || !signature || !verifier_key_pem)
        return FAIL_FIELD("certificate", "statement, signature and verifier key are required");
    BASE_CLEANUP(acrypto_ed25519_freep) acrypto_ed25519_key *key = NULL;
    base_result r = acrypto_ed25519_public_from_pem(verifier_key_pem, strlen(verifier_key_pem), &key);
    if (!base_is_ok(r))
        return FAIL_FIELD("verifier_key", "not an Ed25519 public key (PEM)");
    r = acrypto_ed25519_verify(key, statement, statement_len, signature, signature_len);
    if (!base_is_ok(r))
        return base_fail(BASE_ERR_CRYPTO, "destruction certificate signature does not verify");
    return BASE_OK_RESULT;
}

/* RFC 3339 UTC with microseconds ("2031-05-04T10:20:30.123456Z"). */
#define TIME_LEN 27
static base_result format_time(int64_t us, char out[TIME_LEN + 1])
{
    if (us < 0)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: a time before 1970");
    time_t secs = (time_t)(us / 1000000);
    int frac = (int)(us % 1000000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm) || tm.tm_year + 1900 > 9999)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: a time out of range");
    int n = snprintf(out, TIME_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    if (n != TIME_LEN)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: time formatting failed");
    return BASE_OK_RESULT;
}

static int put_str(json_t *o, const char *k, const char *v)
{
    return json_object_set_new(o, k, json_string(v));
}

static int put_time(json_t *o, const char *k, int64_t us)
{
    char t[TIME_LEN + 1];
    if (!base_is_ok(format_time(us, t)))
        return -1;
    return put_str(o, k, t);
}

/* The canonical text of a statement (sorted keys, no whitespace, ASCII): what is signed. Consumes o. */
static base_result statement_text(json_t *o, char **ret)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!text)
        return base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory encoding a certificate");
    *ret = text;
    return BASE_OK_RESULT;
}

/* Sign `statement` (taken over) into a certificate. */
static base_result certificate_sign(const acrypto_ed25519_key *signer, char *statement,
                                    const char *certificate_id, const char *tenant_id,
                                    const char *patient_ref, int64_t destroyed_us, uint32_t records,
                                    uint32_t versions, vault_certificate *ret)
{
    vault_certificate c;
    memset(&c, 0, sizeof c);
    c.statement = statement;
    c.statement_len = strlen(statement);
    base_result r;
    size_t pem_len = 0;
    BASE_GUARD_GOTO(r, acrypto_ed25519_sign(signer, c.statement, c.statement_len, c.signature), out);
    BASE_GUARD_GOTO(r, acrypto_ed25519_public_to_pem(signer, &c.verifier_key, &pem_len), out);
    snprintf(c.certificate_id, sizeof c.certificate_id, "%s", certificate_id);
    snprintf(c.tenant_id, sizeof c.tenant_id, "%s", tenant_id);
    snprintf(c.patient_ref, sizeof c.patient_ref, "%s", patient_ref ? patient_ref : "");
    c.destroyed_us = destroyed_us;
    c.records = records;
    c.versions = versions;
    *ret = c;
    return BASE_OK_RESULT;
out:
    vault_certificate_clear(&c);
    return r;
}

/* Insert a signed certificate (if its id is not stored yet), delete the patient's destruction row, and read
 * back what is stored under the id: the caller's, or the one a concurrent call stored first. */
typedef struct cert_store_ctx {
    const vault_certificate *cert;
    bool tenant_scope;
    vault_certificate out;
} cert_store_ctx;

static base_result cert_store_txn(db_conn *conn, void *arg)
{
    cert_store_ctx *c = arg;
    vault_certificate_clear(&c->out);
    const vault_certificate *k = c->cert;
    char destroyed[24], records[24], versions[24];
    i64_text(destroyed, k->destroyed_us);
    u64_text(records, k->records);
    u64_text(versions, k->versions);
    const char *p[] = {k->certificate_id,
                       k->tenant_id,
                       c->tenant_scope ? NULL : k->patient_ref,
                       destroyed,
                       records,
                       versions,
                       k->statement,
                       (const char *)k->signature,
                       k->verifier_key};
    const int lengths[] = {0, 0, 0, 0, 0, 0, 0, (int)sizeof k->signature, 0};
    const int formats[] = {0, 0, 0, 0, 0, 0, 0, 1, 0};
    BASE_GUARD(db_exec_params(conn, SQL_CERT_INSERT, 9, p, lengths, formats, NULL));
    if (!c->tenant_scope) {
        const char *d[] = {k->certificate_id};
        BASE_GUARD(run(conn, SQL_DESTRUCTION_DONE, 1, d, NULL));
    }
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    if (c->tenant_scope) {
        const char *g[] = {k->tenant_id};
        BASE_GUARD(run(conn, SQL_CERT_OF_TENANT, 1, g, &res));
    } else {
        const char *g[] = {k->tenant_id, k->certificate_id};
        BASE_GUARD(run(conn, SQL_CERT_GET, 2, g, &res));
    }
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: the stored certificate is missing");
    return cert_row(res, 0, &c->out);
}

static base_result certificate_store(db_pool *pool, const vault_certificate *cert, bool tenant_scope,
                                     vault_certificate *ret)
{
    cert_store_ctx c = {.cert = cert, .tenant_scope = tenant_scope};
    base_result r = db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, cert_store_txn, &c);
    if (!base_is_ok(r)) {
        vault_certificate_clear(&c.out);
        return r;
    }
    *ret = c.out;
    return BASE_OK_RESULT;
}

/* ---- destroying a patient --------------------------------------------------------------------------- */

/* What step A found or made: the destruction row, or a certificate already stored for the patient. */
typedef struct destroy_ctx {
    const char *tenant_id, *patient_ref, *reason_code, *actor;
    const char *new_certificate_id;
    /* step A's findings */
    int64_t rows;           /* the patient's record rows now */
    int64_t first_shred_us; /* the earliest shredded_at among them (0: none) */
    bool done;              /* no rows, no destruction row, a certificate exists: `done_cert` */
    vault_certificate done_cert;
    char certificate_id[VAULT_ID_BUF]; /* of the destruction row */
    char reason_code_kept[VAULT_REASON_MAX + 1];
    char actor_kept[VAULT_ACTOR_MAX + 1];
    vault_shred_summary saved; /* what the row holds (record_ids malloc'd; keys_destroyed_us 0: nothing) */
} destroy_ctx;

static void destroy_ctx_reset(destroy_ctx *c)
{
    c->rows = 0;
    c->first_shred_us = 0;
    c->done = false;
    vault_certificate_clear(&c->done_cert);
    c->certificate_id[0] = '\0';
    vault_shred_summary_free(&c->saved);
    memset(&c->saved, 0, sizeof c->saved);
}

static base_result destruction_load(db_conn *conn, destroy_ctx *c, bool *ret_found)
{
    const char *pp[] = {c->tenant_id, c->patient_ref};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(run(conn, SQL_DESTRUCTION_GET, 2, pp, &res));
    if (db_result_ntuples(res) != 1) {
        *ret_found = false;
        return BASE_OK_RESULT;
    }
    BASE_GUARD(col_str(res, 0, 0, c->certificate_id, sizeof c->certificate_id));
    BASE_GUARD(col_str(res, 0, 1, c->reason_code_kept, sizeof c->reason_code_kept));
    BASE_GUARD(col_str(res, 0, 2, c->actor_kept, sizeof c->actor_kept));
    vault_shred_summary *s = &c->saved;
    BASE_GUARD(col_u32(res, 0, 3, &s->records));
    BASE_GUARD(col_u32(res, 0, 4, &s->versions));
    BASE_GUARD(col_u32(res, 0, 5, &s->kek_min));
    BASE_GUARD(col_u32(res, 0, 6, &s->kek_max));
    BASE_GUARD(col_i64(res, 0, 7, &s->keys_destroyed_us));
    BASE_GUARD(col_i64(res, 0, 8, &s->rows_deleted_us));
    *ret_found = true;
    if (s->keys_destroyed_us == 0)
        return BASE_OK_RESULT;
    BASE_CLEANUP(db_result_freep) db_result *ids = NULL;
    BASE_GUARD(run(conn, SQL_DESTRUCTION_IDS, 2, pp, &ids));
    int n = db_result_ntuples(ids);
    if ((uint32_t)n != s->records)
        return base_fail(BASE_ERR_INTERNAL,
                         "vault lifecycle: a destruction's record ids do not match its count");
    if (n > 0) {
        s->record_ids = calloc((size_t)n, sizeof *s->record_ids);
        if (!s->record_ids)
            return base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory reading a destruction");
        for (int i = 0; i < n; i++)
            BASE_GUARD(col_str(ids, i, 0, s->record_ids[i], sizeof s->record_ids[i]));
    }
    return BASE_OK_RESULT;
}

/* Step A. */
static base_result destroy_begin_txn(db_conn *conn, void *arg)
{
    destroy_ctx *c = arg;
    destroy_ctx_reset(c);
    const char *pp[] = {c->tenant_id, c->patient_ref};
    BASE_GUARD(run(conn, SQL_LOCK_PATIENT, 2, pp, NULL));

    BASE_CLEANUP(db_result_freep) db_result *rows = NULL;
    BASE_GUARD(run(conn, SQL_PATIENT_ROWS, 2, pp, &rows));
    BASE_GUARD(col_i64(rows, 0, 0, &c->rows));
    BASE_GUARD(col_i64(rows, 0, 1, &c->first_shred_us));

    bool found = false;
    BASE_GUARD(destruction_load(conn, c, &found));
    if (found)
        return BASE_OK_RESULT; /* begun earlier: its checks passed then, go on */

    if (c->rows == 0) {
        BASE_CLEANUP(db_result_freep) db_result *cert = NULL;
        BASE_GUARD(run(conn, SQL_CERT_OF_PATIENT, 2, pp, &cert));
        if (db_result_ntuples(cert) != 1)
            return base_fail(BASE_ERR_NOT_FOUND, "patient not found");
        c->done = true;
        return cert_row(cert, 0, &c->done_cert);
    }

    BASE_CLEANUP(db_result_freep) db_result *hold = NULL;
    BASE_GUARD(run(conn, SQL_HOLD_IN_FORCE, 2, pp, &hold));
    if (db_result_ntuples(hold) > 0)
        return base_fail(BASE_ERR_CONFLICT, "legal hold in force");

    BASE_CLEANUP(db_result_freep) db_result *ret = NULL;
    BASE_GUARD(run(conn, SQL_RETENTION_BLOCKER, 2, pp, &ret));
    if (db_result_ntuples(ret) > 0) {
        int category = 0;
        BASE_GUARD(col_int(ret, 0, 0, &category));
        return base_fail(BASE_ERR_CONFLICT, "retention period not over for %s",
                         vault_category_name(category));
    }

    const char *p[] = {c->tenant_id, c->patient_ref, c->new_certificate_id, c->reason_code, c->actor};
    BASE_GUARD(run(conn, SQL_DESTRUCTION_INSERT, 5, p, NULL));
    snprintf(c->certificate_id, sizeof c->certificate_id, "%s", c->new_certificate_id);
    snprintf(c->reason_code_kept, sizeof c->reason_code_kept, "%s", c->reason_code);
    snprintf(c->actor_kept, sizeof c->actor_kept, "%s", c->actor);
    return BASE_OK_RESULT;
}

/* After step B: what the store reported, saved in the row. */
typedef struct destroy_save_ctx {
    const char *tenant_id, *patient_ref;
    const vault_shred_summary *s;
    const char *ids_literal;
    bool rows_only; /* after step C: only rows_deleted_at */
    bool forget;    /* nothing was destroyed after all: delete the row */
    int64_t now_us;
} destroy_save_ctx;

static base_result destroy_save_txn(db_conn *conn, void *arg)
{
    destroy_save_ctx *c = arg;
    const vault_shred_summary *s = c->s;
    if (c->forget) {
        const char *p[] = {c->tenant_id, c->patient_ref};
        return run(conn, SQL_DESTRUCTION_DELETE, 2, p, NULL);
    }
    if (c->rows_only) {
        char when[24];
        i64_text(when, s->rows_deleted_us);
        const char *p[] = {c->tenant_id, c->patient_ref, when};
        return run(conn, SQL_DESTRUCTION_ROWS, 3, p, NULL);
    }
    char records[24], versions[24], kmin[24], kmax[24], when[24];
    u64_text(records, s->records);
    u64_text(versions, s->versions);
    u64_text(kmin, s->kek_min);
    u64_text(kmax, s->kek_max);
    i64_text(when, s->keys_destroyed_us);
    const char *p[] = {c->tenant_id, c->patient_ref, records, versions, c->ids_literal, kmin, kmax, when};
    return run(conn, SQL_DESTRUCTION_KEYS, 8, p, NULL);
}

static base_result destroy_save(db_pool *pool, destroy_save_ctx *c)
{
    return db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, destroy_save_txn, c);
}

static base_result save_keys(db_pool *pool, const char *tenant_id, const char *patient_ref,
                             const vault_shred_summary *s)
{
    const char **ids = NULL;
    if (s->records > 0) {
        ids = calloc(s->records, sizeof *ids);
        if (!ids)
            return base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory saving a destruction");
        for (uint32_t i = 0; i < s->records; i++)
            ids[i] = s->record_ids[i];
    }
    char *literal = NULL;
    base_result r = db_text_array(ids, s->records, &literal);
    free(ids);
    BASE_GUARD(r);
    destroy_save_ctx c = {.tenant_id = tenant_id, .patient_ref = patient_ref, .s = s, .ids_literal = literal};
    r = destroy_save(pool, &c);
    free(literal);
    return r;
}

static base_result db_now_txn(db_conn *conn, void *arg)
{
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(run(conn, SQL_NOW_US, 0, NULL, &res));
    return db_result_get_int64(res, 0, 0, arg);
}

static base_result destruction_statement(const destroy_ctx *c, const vault_shred_summary *s, char **ret)
{
    json_t *o = json_object();
    json_t *ids = json_array();
    json_t *keks = json_array();
    int bad = !o || !ids || !keks;
    for (uint32_t i = 0; !bad && i < s->records; i++)
        bad |= json_array_append_new(ids, json_string(s->record_ids[i]));
    if (!bad) {
        bad |= json_array_append_new(keks, json_integer(s->kek_min));
        bad |= json_array_append_new(keks, json_integer(s->kek_max));
        bad |= put_str(o, "type", VAULT_DESTRUCTION_TYPE);
        bad |= put_str(o, "certificate_id", c->certificate_id);
        bad |= put_str(o, "tenant_id", c->tenant_id);
        bad |= put_str(o, "patient_ref", c->patient_ref);
        bad |= put_str(o, "reason_code", c->reason_code_kept);
        bad |= put_str(o, "actor", c->actor_kept);
        bad |= put_time(o, "keys_destroyed_at", s->keys_destroyed_us);
        bad |= put_time(o, "rows_deleted_at", s->rows_deleted_us);
        bad |= json_object_set_new(o, "records", json_integer(s->records));
        bad |= json_object_set_new(o, "versions", json_integer(s->versions));
        bad |= json_object_set_new(o, "record_ids", ids);
        bad |= json_object_set_new(o, "kek_versions", keks);
        bad |= put_str(o, "method", VAULT_DESTRUCTION_METHOD);
        ids = keks = NULL; /* owned by o now (json_object_set_new steals even on failure) */
    }
    json_decref(ids);
    json_decref(keks);
    if (bad) {
        json_decref(o);
        return base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory encoding a certificate");
    }
    return statement_text(o, ret);
}

base_result vault_lifecycle_destroy_patient(vault_store *store, db_pool *pool,
                                            const acrypto_ed25519_key *signer, const char *tenant_id,
                                            const char *patient_ref, const char *reason_code,
                                            const char *actor, vault_certificate *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_id("patient_ref", patient_ref, "pt_", NULL));
    BASE_GUARD(check_reason(reason_code));
    BASE_GUARD(check_actor(actor));
    if (!signer || !acrypto_ed25519_has_private(signer))
        return FAIL_FIELD("signer", "the certificate key with its private half is required");

    char new_id[VAULT_ID_BUF];
    vault_random_id("dc_", new_id);
    destroy_ctx c;
    memset(&c, 0, sizeof c);
    c.tenant_id = tenant_id;
    c.patient_ref = patient_ref;
    c.reason_code = reason_code;
    c.actor = actor;
    c.new_certificate_id = new_id;
    vault_shred_summary fresh;
    memset(&fresh, 0, sizeof fresh);
    const vault_shred_summary *use = &c.saved;
    char *statement = NULL;
    vault_certificate signed_cert;
    memset(&signed_cert, 0, sizeof signed_cert);
    base_result r;

    /* A */
    BASE_GUARD_GOTO(r, db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, destroy_begin_txn, &c), out);
    if (c.done) {
        *ret = c.done_cert;
        memset(&c.done_cert, 0, sizeof c.done_cert);
        r = BASE_OK_RESULT;
        goto out;
    }

    /* B: rows still there (shredded or not) are shredded, again if need be. */
    r = vault_store_shred_keys(store, tenant_id, patient_ref, &fresh);
    if (base_is_ok(r)) {
        /* Keys destroyed by an earlier, interrupted attempt were gone since then. */
        if (c.saved.keys_destroyed_us && c.saved.keys_destroyed_us < fresh.keys_destroyed_us)
            fresh.keys_destroyed_us = c.saved.keys_destroyed_us;
        if (c.first_shred_us && c.first_shred_us < fresh.keys_destroyed_us)
            fresh.keys_destroyed_us = c.first_shred_us;
        BASE_GUARD_GOTO(r, save_keys(pool, tenant_id, patient_ref, &fresh), out);
        /* C */
        BASE_GUARD_GOTO(r, vault_store_shred_rows(store, tenant_id, patient_ref, &fresh), out);
        destroy_save_ctx rows = {
            .tenant_id = tenant_id, .patient_ref = patient_ref, .s = &fresh, .rows_only = true};
        BASE_GUARD_GOTO(r, destroy_save(pool, &rows), out);
        use = &fresh;
    } else if (r.err == BASE_ERR_NOT_FOUND && c.saved.keys_destroyed_us) {
        /* The rows are gone: B and C were done by an earlier call, which saved what B reported. */
        if (!c.saved.rows_deleted_us) /* C committed, its time was not saved: when we saw it done */
            BASE_GUARD_GOTO(
                r,
                db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, db_now_txn, &c.saved.rows_deleted_us),
                out);
        use = &c.saved;
    } else if (r.err == BASE_ERR_NOT_FOUND) {
        /* Nothing was shredded under this row, and the rows are gone: nothing to certify. */
        destroy_save_ctx forget = {.tenant_id = tenant_id, .patient_ref = patient_ref, .forget = true};
        BASE_GUARD_GOTO(r, destroy_save(pool, &forget), out);
        r = base_fail(BASE_ERR_NOT_FOUND, "patient not found");
        goto out;
    } else {
        goto out;
    }

    /* D */
    BASE_GUARD_GOTO(r, destruction_statement(&c, use, &statement), out);
    BASE_GUARD_GOTO(r,
                    certificate_sign(signer, statement, c.certificate_id, tenant_id, patient_ref,
                                     use->rows_deleted_us, use->records, use->versions, &signed_cert),
                    out);
    statement = NULL;
    BASE_GUARD_GOTO(r, certificate_store(pool, &signed_cert, false, ret), out);
    r = BASE_OK_RESULT;
out:
    free(statement);
    vault_certificate_clear(&signed_cert);
    vault_shred_summary_free(&fresh);
    destroy_ctx_reset(&c);
    return r;
}

/* ---- offboarding ------------------------------------------------------------------------------------ */

typedef struct offboard_ctx {
    const char *tenant_id;
    bool done;
    vault_certificate done_cert;
    uint32_t records, versions;
    bool was_offboarded; /* before this call: an earlier one was interrupted after destroying the keys */
    int64_t offboarded_us;
    uint32_t kek_versions; /* destroyed when it was offboarded */
} offboard_ctx;

/* Before: a certificate already stored (a repeat), and the counts of what becomes unreadable. */
static base_result offboard_before_txn(db_conn *conn, void *arg)
{
    offboard_ctx *c = arg;
    c->done = false;
    vault_certificate_clear(&c->done_cert);
    const char *p[] = {c->tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *cert = NULL;
    BASE_GUARD(run(conn, SQL_CERT_OF_TENANT, 1, p, &cert));
    if (db_result_ntuples(cert) == 1) {
        c->done = true;
        return cert_row(cert, 0, &c->done_cert);
    }
    BASE_CLEANUP(db_result_freep) db_result *counts = NULL;
    BASE_GUARD(run(conn, SQL_TENANT_COUNTS, 1, p, &counts));
    BASE_GUARD(col_u32(counts, 0, 0, &c->records));
    BASE_GUARD(col_u32(counts, 0, 1, &c->versions));
    BASE_CLEANUP(db_result_freep) db_result *off = NULL;
    BASE_GUARD(run(conn, SQL_TENANT_OFFBOARDED, 1, p, &off));
    c->was_offboarded = db_result_ntuples(off) == 1;
    return BASE_OK_RESULT;
}

static base_result offboard_after_txn(db_conn *conn, void *arg)
{
    offboard_ctx *c = arg;
    const char *p[] = {c->tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(run(conn, SQL_TENANT_OFFBOARDED, 1, p, &res));
    if (db_result_ntuples(res) != 1)
        return base_fail(BASE_ERR_INTERNAL, "vault lifecycle: the tenant is not marked offboarded");
    BASE_GUARD(col_i64(res, 0, 0, &c->offboarded_us));
    return col_u32(res, 0, 1, &c->kek_versions);
}

static base_result check_sha256_hex(const char *h)
{
    if (!h || strlen(h) != 64)
        return FAIL_FIELD("export_sha256", "must be 64 lowercase hex digits");
    for (size_t i = 0; i < 64; i++)
        if (!is_lower_hex(h[i]))
            return FAIL_FIELD("export_sha256", "must be 64 lowercase hex digits");
    return BASE_OK_RESULT;
}

base_result vault_lifecycle_offboard_tenant(vault_store *store, db_pool *pool,
                                            const acrypto_ed25519_key *signer, const char *tenant_id,
                                            const char *actor, const char *export_sha256_hex,
                                            uint32_t exported_patients, vault_certificate *ret)
{
    BASE_GUARD(check_tenant(tenant_id));
    BASE_GUARD(check_actor(actor));
    BASE_GUARD(check_sha256_hex(export_sha256_hex));
    if (!signer || !acrypto_ed25519_has_private(signer))
        return FAIL_FIELD("signer", "the certificate key with its private half is required");

    offboard_ctx c;
    memset(&c, 0, sizeof c);
    c.tenant_id = tenant_id;
    vault_certificate signed_cert;
    memset(&signed_cert, 0, sizeof signed_cert);
    char *statement = NULL;
    base_result r;
    BASE_GUARD_GOTO(r, db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, offboard_before_txn, &c), out);
    if (c.done) {
        *ret = c.done_cert;
        memset(&c.done_cert, 0, sizeof c.done_cert);
        r = BASE_OK_RESULT;
        goto out;
    }
    uint32_t kek_versions = 0;
    BASE_GUARD_GOTO(r, vault_store_destroy_tenant_keys(store, tenant_id, &kek_versions), out);
    BASE_GUARD_GOTO(r, db_transaction(pool, DB_READ_COMMITTED, TXN_ATTEMPTS, offboard_after_txn, &c), out);
    if (c.was_offboarded) /* this call destroyed nothing: what the interrupted one destroyed */
        kek_versions = c.kek_versions;

    char certificate_id[VAULT_ID_BUF];
    vault_random_id("dc_", certificate_id);
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put_str(o, "type", VAULT_OFFBOARDING_TYPE);
        bad |= put_str(o, "certificate_id", certificate_id);
        bad |= put_str(o, "tenant_id", tenant_id);
        bad |= put_str(o, "actor", actor);
        bad |= put_time(o, "keys_destroyed_at", c.offboarded_us);
        bad |= json_object_set_new(o, "records", json_integer(c.records));
        bad |= json_object_set_new(o, "versions", json_integer(c.versions));
        bad |= put_str(o, "export_sha256", export_sha256_hex);
        bad |= json_object_set_new(o, "patients_exported", json_integer(exported_patients));
        bad |= json_object_set_new(o, "kek_versions_destroyed", json_integer(kek_versions));
        bad |= put_str(o, "method", VAULT_OFFBOARDING_METHOD);
    }
    if (bad) {
        json_decref(o);
        r = base_fail(BASE_ERR_NOMEM, "vault lifecycle: out of memory encoding a certificate");
        goto out;
    }
    BASE_GUARD_GOTO(r, statement_text(o, &statement), out);
    BASE_GUARD_GOTO(r,
                    certificate_sign(signer, statement, certificate_id, tenant_id, NULL, c.offboarded_us,
                                     c.records, c.versions, &signed_cert),
                    out);
    statement = NULL;
    BASE_GUARD_GOTO(r, certificate_store(pool, &signed_cert, true, ret), out);
    r = BASE_OK_RESULT;
out:
    free(statement);
    vault_certificate_clear(&signed_cert);
    vault_certificate_clear(&c.done_cert);
    return r;
}
