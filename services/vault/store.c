/* The vault's records and keys in Postgres: envelope encryption, key rotation, shredding (store.h has the
 * contract and the exact associated-data bytes; migrations/0001_records.sql the schema).
 *
 * Every statement is a constant (common/db's rule): data travels as $n parameters, bytes as binary
 * parameters or hex text decoded server-side, lists as array literals built by db_array.
 *
 * Round trips. A put is ONE statement, sent as its own (autocommit) transaction: a CTE that reads the
 * tenant's current KEK version (FOR SHARE, so a concurrent retire or rotate waits for it), the record's
 * latest version and the patient's record (FOR SHARE, so a concurrent shred waits for it), inserts the
 * version only when all of them agree, inserts its blind-index rows, and reports what it saw, so a refused
 * put says why without a second query. Reads are one SELECT each. Key changes (tenant creation, rotate,
 * retire, rewrap batches, shredding, offboarding) run in db_transaction()s.
 *
 * Keys in memory. Per tenant: the index key and every KEK version used so far, unwrapped once by the key
 * provider and kept (wiped on close or forget). The put statement checks that the KEK version it wraps
 * with is still the tenant's current one; when a rotation made a newer one, the put reloads the tenant,
 * re-wraps its data key and runs again, so no replica wraps with an old version once a rotation committed.
 * Reads join the tenants row and refuse a version below min_decrypt_version or an offboarded tenant, so a
 * key retired or destroyed by another replica is never used from this cache. Secrets leave the cache as
 * copies (acrypto_secret), so a concurrent forget cannot free a key in use. */
#include "store.h"

#include "vault_migrations.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SCHEMA   "vault"
#define TXN_ATTEMPTS     10
#define STMT_ATTEMPTS    5
#define ACQUIRE_MS       DB_DEFAULT_ACQUIRE_TIMEOUT_MS
#define TENANT_BUF       64
#define AD_MAX           256
#define DEK_LEN          32
#define KEK_LEN          32
#define INDEX_KEY_LEN    32
#define CACHE_BUCKETS    64
#define PUT_ROTATIONS    3 /* a put re-wraps at most this often for rotations that land while it runs */
#define REWRAP_MAX       10000
#define PATIENTS_MAX     100000
#define INTEGRITY_MSG    "record failed its integrity check"
#define INT_ARRAY_DIGITS 12

#define AD_PART  "alma-vault-part|v1|"
#define AD_DEK   "alma-vault-dek|v1|"
#define AD_KEK   "alma-vault-kek|v1|"
#define AD_INDEX "alma-vault-index|v1|"

/* ---- SQL (constants only) ------------------------------------------------------------------------------ */

#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

static const char SQL_TENANT_LOAD[] =
    "SELECT t.current_version, t.min_decrypt_version, t.index_key_wrapped, t.provider_id, "
    "t.offboarded_at IS NOT NULL, k.wrapped_key, k.provider_id "
    "FROM tenants t LEFT JOIN tenant_keys k ON k.tenant_id = t.tenant_id AND k.version = t.current_version "
    "WHERE t.tenant_id = $1";
static const char SQL_TENANT_INSERT[] =
    "INSERT INTO tenants (tenant_id, current_version, min_decrypt_version, index_key_wrapped, provider_id) "
    "VALUES ($1, 1, 1, $2::bytea, $3) ON CONFLICT (tenant_id) DO NOTHING";
static const char SQL_KEK_INSERT[] = "INSERT INTO tenant_keys (tenant_id, version, wrapped_key, provider_id) "
                                     "VALUES ($1, $2::integer, $3::bytea, $4)";
static const char SQL_KEK_LOAD[] =
    "SELECT wrapped_key, provider_id FROM tenant_keys WHERE tenant_id = $1 AND version = $2::integer";

/* Parameters: $1 tenant, $2 record_id, $3 new version, $4 patient_ref, $5 kind, $6 created_by,
 * $7 amendment_request_id, $8 categories, $9 KEK version, $10 wrapped DEK, $11..$16 parts,
 * $17 blind-index kinds, $18 blind-index digests (hex). One row back: created_us (NULL when nothing was
 * inserted), then what the statement saw, for telling why. */
static const char SQL_PUT[] =
    "WITH t AS (SELECT current_version, offboarded_at IS NOT NULL AS off FROM tenants WHERE tenant_id = $1 "
    "FOR SHARE), "
    "latest AS (SELECT version, patient_ref, kind, shredded_at IS NOT NULL AS shredded FROM records "
    "WHERE tenant_id = $1 AND record_id = $2 AND $3::integer > 1 ORDER BY version DESC LIMIT 1 FOR SHARE), "
    "patient AS (SELECT shredded_at IS NOT NULL AS shredded FROM records "
    "WHERE tenant_id = $1 AND record_id = $4 AND $5::smallint <> 1 ORDER BY version DESC LIMIT 1 FOR SHARE), "
    "ins AS (INSERT INTO records (tenant_id, record_id, version, patient_ref, kind, created_by, "
    "amendment_request_id, categories, kek_version, wrapped_dek, part_demographic, part_contact, "
    "part_identifier, part_clinical, part_sensitive, part_financial) "
    "SELECT $1, $2, $3::integer, $4, $5::smallint, $6, $7, $8::smallint, $9::integer, $10::bytea, "
    "$11::bytea, "
    "$12::bytea, $13::bytea, $14::bytea, $15::bytea, $16::bytea FROM t "
    "WHERE NOT t.off AND t.current_version = $9::integer "
    "AND ($5::smallint = 1 OR EXISTS (SELECT 1 FROM patient WHERE NOT patient.shredded)) "
    "AND ($3::integer = 1 OR EXISTS (SELECT 1 FROM latest l WHERE l.version = $3::integer - 1 "
    "AND l.patient_ref = $4 AND l.kind = $5::smallint AND NOT l.shredded)) "
    "RETURNING created_at), "
    "bi AS (INSERT INTO blind_index (tenant_id, kind, digest, patient_ref, version) "
    "SELECT $1, u.k, decode(u.d, 'hex'), $4, $3::integer FROM ins, unnest($17::smallint[], $18::text[]) AS "
    "u(k, d)) "
    "SELECT (SELECT " US("created_at") " FROM ins), (SELECT current_version FROM t), (SELECT off FROM t), "
                                       "(SELECT version FROM latest), (SELECT patient_ref FROM latest), "
                                       "(SELECT kind FROM latest), "
                                       "(SELECT shredded FROM latest), (SELECT shredded FROM patient)";

/* A record version's columns, with the parts asked for in the mask, always parameter $1 (others read as
 * NULL, so a 1 MiB document not asked for never crosses the wire). */
#define RECORD_COLS                                                                                          \
    "r.record_id, r.patient_ref, r.kind, r.version, " US(                                                    \
        "r.created_at") ", r.created_by, "                                                                   \
                        "coalesce(r.amendment_request_id, ''), r.categories, r.kek_version, r.wrapped_dek, " \
                        "t.min_decrypt_version, t.offboarded_at IS NOT NULL, "                               \
                        "CASE WHEN $1::integer & 2 <> 0 THEN r.part_demographic END, "                       \
                        "CASE WHEN $1::integer & 4 <> 0 THEN r.part_contact END, "                           \
                        "CASE WHEN $1::integer & 8 <> 0 THEN r.part_identifier END, "                        \
                        "CASE WHEN $1::integer & 16 <> 0 THEN r.part_clinical END, "                         \
                        "CASE WHEN $1::integer & 32 <> 0 THEN r.part_sensitive END, "                        \
                        "CASE WHEN $1::integer & 64 <> 0 THEN r.part_financial END"
enum {
    COL_ID,
    COL_PATIENT,
    COL_KIND,
    COL_VERSION,
    COL_CREATED,
    COL_BY,
    COL_AMEND,
    COL_CATS,
    COL_KEK,
    COL_DEK,
    COL_MIN,
    COL_OFF,
    COL_PART0
};

static const char SQL_GET[] =
    "SELECT " RECORD_COLS " FROM records r JOIN tenants t ON t.tenant_id = r.tenant_id "
    "WHERE r.tenant_id = $2 AND r.record_id = $3 AND r.shredded_at IS NULL "
    "AND ($4::integer = 0 OR r.version = $4::integer) ORDER BY r.version DESC LIMIT 1";
static const char SQL_LIST[] =
    "SELECT DISTINCT ON (r.record_id) " RECORD_COLS
    " FROM records r JOIN tenants t ON t.tenant_id = r.tenant_id "
    "WHERE r.tenant_id = $2 AND r.patient_ref = $3 AND r.kind <> 1 AND ($4::integer = 0 OR r.kind = "
    "$4::integer) "
    "AND r.record_id > $5 AND r.shredded_at IS NULL ORDER BY r.record_id, r.version DESC LIMIT $6::integer";
/* The latest VAULT_HISTORY_MAX versions, oldest first. */
static const char SQL_HISTORY[] =
    "SELECT * FROM (SELECT " RECORD_COLS " FROM records r JOIN tenants t ON t.tenant_id = r.tenant_id "
    "WHERE r.tenant_id = $2 AND r.record_id = $3 AND r.shredded_at IS NULL ORDER BY r.version DESC "
    "LIMIT $4::integer) AS h ORDER BY h.version";
/* Patients whose latest (unshredded) patient-record version holds the digest. */
static const char SQL_FIND[] =
    "SELECT b.patient_ref FROM blind_index b JOIN records r ON r.tenant_id = b.tenant_id "
    "AND r.record_id = b.patient_ref AND r.version = b.version AND r.shredded_at IS NULL "
    "WHERE b.tenant_id = $1 AND b.kind = $2::smallint AND b.digest = $3::bytea "
    "AND NOT EXISTS (SELECT 1 FROM records n WHERE n.tenant_id = b.tenant_id AND n.record_id = b.patient_ref "
    "AND n.version > b.version) ORDER BY b.patient_ref LIMIT $4::integer";
static const char SQL_PATIENTS[] =
    "SELECT DISTINCT patient_ref FROM records WHERE tenant_id = $1 AND kind = 1 AND shredded_at IS NULL "
    "AND patient_ref > $2 ORDER BY patient_ref LIMIT $3::integer";

static const char SQL_TENANT_LOCK[] =
    "SELECT current_version, min_decrypt_version, offboarded_at IS NOT NULL, provider_id FROM tenants "
    "WHERE tenant_id = $1 FOR UPDATE";
static const char SQL_TENANT_SHARE[] = "SELECT current_version, min_decrypt_version, offboarded_at IS NOT "
                                       "NULL FROM tenants WHERE tenant_id = $1 "
                                       "FOR SHARE";
static const char SQL_ROTATE[] = "UPDATE tenants SET current_version = $2::integer WHERE tenant_id = $1";
static const char SQL_STATUS_TENANT[] =
    "SELECT current_version, min_decrypt_version FROM tenants WHERE tenant_id = $1";
static const char SQL_STATUS_KEYS[] =
    "SELECT kek_version, count(*) FROM records WHERE tenant_id = $1 AND wrapped_dek IS NOT NULL "
    "GROUP BY kek_version ORDER BY kek_version";
static const char SQL_COUNT_OLD[] = "SELECT count(*) FROM records WHERE tenant_id = $1 AND kek_version < "
                                    "$2::integer AND wrapped_dek IS NOT NULL";
static const char SQL_REWRAP_PICK[] =
    "SELECT record_id, version, kek_version, wrapped_dek FROM records "
    "WHERE tenant_id = $1 AND kek_version < $2::integer AND wrapped_dek IS NOT NULL "
    "ORDER BY kek_version, record_id, version LIMIT $3::integer FOR UPDATE";
static const char SQL_REWRAP_UPDATE[] =
    "UPDATE records r SET wrapped_dek = decode(u.w, 'hex'), kek_version = $2::integer "
    "FROM unnest($3::text[], $4::integer[], $5::integer[], $6::text[]) AS u(id, v, k, w) "
    "WHERE r.tenant_id = $1 AND r.record_id = u.id AND r.version = u.v AND r.kek_version = u.k "
    "AND r.wrapped_dek IS NOT NULL";
static const char SQL_RETIRE_KEYS[] =
    "UPDATE tenant_keys SET wrapped_key = NULL, destroyed_at = now() "
    "WHERE tenant_id = $1 AND version < $2::integer AND wrapped_key IS NOT NULL";
static const char SQL_RETIRE_MIN[] =
    "UPDATE tenants SET min_decrypt_version = $2::integer WHERE tenant_id = $1";

/* Shredding: the patient record's rows locked first (every put for the patient holds one FOR SHARE), so the
 * UPDATE, a new statement with a new snapshot, sees every version committed before it. */
static const char SQL_SHRED_LOCK[] =
    "SELECT 1 FROM records WHERE tenant_id = $1 AND record_id = $2 FOR UPDATE";
static const char SQL_SHRED_KEYS[] =
    "UPDATE records SET wrapped_dek = NULL, shredded_at = coalesce(shredded_at, now()) "
    "WHERE tenant_id = $1 AND patient_ref = $2 RETURNING record_id, kek_version, " US("now()");
static const char SQL_SHRED_INDEX[] = "DELETE FROM blind_index WHERE tenant_id = $1 AND patient_ref = $2";
static const char SQL_SHRED_ROWS[] =
    "DELETE FROM records WHERE tenant_id = $1 AND patient_ref = $2 AND wrapped_dek IS NULL "
    "RETURNING record_id, kek_version, " US("now()");
static const char SQL_NOW[] = "SELECT " US("now()");
static const char SQL_OFFBOARD[] = "UPDATE tenants SET index_key_wrapped = NULL, offboarded_at = now() "
                                   "WHERE tenant_id = $1 AND offboarded_at IS NULL";
static const char SQL_DESTROY_KEKS[] = "UPDATE tenant_keys SET wrapped_key = NULL, destroyed_at = now() "
                                       "WHERE tenant_id = $1 AND wrapped_key IS NOT "
                                       "NULL";
static const char SQL_TENANT_EXISTS[] = "SELECT 1 FROM tenants WHERE tenant_id = $1";

/* ---- The key cache ------------------------------------------------------------------------------------- */

typedef struct kek_slot {
    uint32_t version;
    acrypto_secret *key;
} kek_slot;

typedef struct tenant_entry {
    struct tenant_entry *next;
    char tenant_id[TENANT_BUF];
    uint32_t current, min_decrypt;
    acrypto_secret *index_key;
    size_t nkeks;
    kek_slot keks[VAULT_KEY_VERSIONS_MAX];
} tenant_entry;

struct vault_store {
    db_pool *pool;
    vault_keyprovider *kp;
    pthread_mutex_t mu;
    tenant_entry *buckets[CACHE_BUCKETS];
};

static size_t bucket_of(const char *tenant_id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)tenant_id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % CACHE_BUCKETS;
}

static tenant_entry *cache_find_locked(vault_store *s, const char *tenant_id)
{
    for (tenant_entry *e = s->buckets[bucket_of(tenant_id)]; e; e = e->next) {
        if (strcmp(e->tenant_id, tenant_id) == 0)
            return e;
    }
    return NULL;
}

static void entry_free(tenant_entry *e)
{
    if (!e)
        return;
    acrypto_secret_free(e->index_key);
    for (size_t i = 0; i < e->nkeks; i++)
        acrypto_secret_free(e->keks[i].key);
    acrypto_wipe(e, sizeof *e);
    free(e);
}

static base_result copy_secret(const acrypto_secret *k, acrypto_secret **ret)
{
    return acrypto_secret_from_bytes(acrypto_secret_bytes(k), acrypto_secret_len(k), ret);
}

/* Add a KEK version to an entry (taking ownership); the oldest slot makes room when full. */
static void entry_add_kek_locked(tenant_entry *e, uint32_t version, acrypto_secret *key)
{
    for (size_t i = 0; i < e->nkeks; i++) {
        if (e->keks[i].version == version) {
            acrypto_secret_free(key);
            return;
        }
    }
    if (e->nkeks == VAULT_KEY_VERSIONS_MAX) {
        size_t oldest = 0;
        for (size_t i = 1; i < e->nkeks; i++) {
            if (e->keks[i].version < e->keks[oldest].version)
                oldest = i;
        }
        acrypto_secret_free(e->keks[oldest].key);
        e->keks[oldest] = e->keks[--e->nkeks];
    }
    e->keks[e->nkeks++] = (kek_slot){version, key};
}

static void entry_drop_below_locked(tenant_entry *e, uint32_t min_decrypt)
{
    if (min_decrypt > e->min_decrypt)
        e->min_decrypt = min_decrypt;
    for (size_t i = 0; i < e->nkeks;) {
        if (e->keks[i].version < e->min_decrypt) {
            acrypto_secret_free(e->keks[i].key);
            e->keks[i] = e->keks[--e->nkeks];
        } else {
            i++;
        }
    }
}

/* Remember a tenant's state and keys (ownership of index_key and kek passes to the cache, either may be
 * NULL). Versions only move forward. */
static base_result cache_store(vault_store *s, const char *tenant_id, uint32_t current, uint32_t min_decrypt,
                               acrypto_secret *index_key, uint32_t kek_version, acrypto_secret *kek)
{
    pthread_mutex_lock(&s->mu);
    tenant_entry *e = cache_find_locked(s, tenant_id);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&s->mu);
            acrypto_secret_free(index_key);
            acrypto_secret_free(kek);
            return base_fail(BASE_ERR_NOMEM, "vault store: out of memory");
        }
        memcpy(e->tenant_id, tenant_id, strlen(tenant_id) + 1);
        size_t b = bucket_of(tenant_id);
        e->next = s->buckets[b];
        s->buckets[b] = e;
    }
    if (current > e->current)
        e->current = current;
    if (index_key) {
        acrypto_secret_free(e->index_key);
        e->index_key = index_key;
    }
    if (kek)
        entry_add_kek_locked(e, kek_version, kek);
    entry_drop_below_locked(e, min_decrypt);
    pthread_mutex_unlock(&s->mu);
    return BASE_OK_RESULT;
}

/* Copies of what a put needs: the current version, its KEK and the index key. false when not all cached. */
static bool cache_current(vault_store *s, const char *tenant_id, uint32_t *ret_version,
                          acrypto_secret **ret_kek, acrypto_secret **ret_index)
{
    bool ok = false;
    pthread_mutex_lock(&s->mu);
    tenant_entry *e = cache_find_locked(s, tenant_id);
    if (e && e->index_key) {
        for (size_t i = 0; i < e->nkeks; i++) {
            if (e->keks[i].version != e->current)
                continue;
            acrypto_secret *k = NULL, *x = NULL;
            if (ret_kek && !base_is_ok(copy_secret(e->keks[i].key, &k)))
                break;
            if (ret_index && !base_is_ok(copy_secret(e->index_key, &x))) {
                acrypto_secret_free(k);
                break;
            }
            *ret_version = e->current;
            if (ret_kek)
                *ret_kek = k;
            if (ret_index)
                *ret_index = x;
            ok = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static bool cache_kek(vault_store *s, const char *tenant_id, uint32_t version, acrypto_secret **ret)
{
    bool ok = false;
    pthread_mutex_lock(&s->mu);
    tenant_entry *e = cache_find_locked(s, tenant_id);
    for (size_t i = 0; e && i < e->nkeks; i++) {
        if (e->keks[i].version == version && version >= e->min_decrypt) {
            ok = base_is_ok(copy_secret(e->keks[i].key, ret));
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void cache_raise_min(vault_store *s, const char *tenant_id, uint32_t min_decrypt)
{
    pthread_mutex_lock(&s->mu);
    tenant_entry *e = cache_find_locked(s, tenant_id);
    if (e)
        entry_drop_below_locked(e, min_decrypt);
    pthread_mutex_unlock(&s->mu);
}

void vault_store_forget_tenant(vault_store *s, const char *tenant_id)
{
    if (!s || !tenant_id)
        return;
    pthread_mutex_lock(&s->mu);
    tenant_entry **pp = &s->buckets[bucket_of(tenant_id)];
    while (*pp) {
        if (strcmp((*pp)->tenant_id, tenant_id) == 0) {
            tenant_entry *e = *pp;
            *pp = e->next;
            entry_free(e);
            break;
        }
        pp = &(*pp)->next;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- Small helpers ------------------------------------------------------------------------------------- */

static bool valid_tenant(const char *t)
{
    if (!t)
        return false;
    size_t n = strnlen(t, TENANT_BUF);
    if (n < 2 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-');
        if (!ok)
            return false;
    }
    return true;
}

/* prefix (3 bytes, "xx_") + 32 lowercase hex digits; prefix2 may be NULL. */
static bool valid_id(const char *id, const char *prefix, const char *prefix2)
{
    if (!id || strnlen(id, VAULT_ID_BUF) != VAULT_ID_LEN)
        return false;
    if (strncmp(id, prefix, 3) != 0 && !(prefix2 && strncmp(id, prefix2, 3) == 0))
        return false;
    for (size_t i = 3; i < VAULT_ID_LEN; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

#define CHECK_TENANT(t)                                                                                      \
    BASE_ENSURE(valid_tenant(t), BASE_ERR_INVALID,                                                           \
                "vault store: tenant_id: must match [a-z0-9][a-z0-9-]{1,62}")

static void fmt_u32(char buf[16], uint32_t v)
{
    snprintf(buf, 16, "%" PRIu32, v);
}

static base_result fmt_ad(char out[AD_MAX], size_t *ret_len, const char *fmt, ...) BASE_PRINTF(3, 4);
static base_result fmt_ad(char out[AD_MAX], size_t *ret_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, AD_MAX, fmt, ap);
    va_end(ap);
    BASE_ENSURE(n > 0 && n < AD_MAX, BASE_ERR_INTERNAL, "vault store: associated data too long");
    *ret_len = (size_t)n;
    return BASE_OK_RESULT;
}

static base_result ad_part(char out[AD_MAX], size_t *n, const char *t, const char *rec, uint32_t v, int cat)
{
    return fmt_ad(out, n, AD_PART "%s|%s|%" PRIu32 "|%d", t, rec, v, cat);
}

static base_result ad_dek(char out[AD_MAX], size_t *n, const char *t, const char *rec, uint32_t v, uint32_t k)
{
    return fmt_ad(out, n, AD_DEK "%s|%s|%" PRIu32 "|%" PRIu32, t, rec, v, k);
}

static base_result ad_kek(char out[AD_MAX], size_t *n, const char *t, uint32_t k)
{
    return fmt_ad(out, n, AD_KEK "%s|%" PRIu32, t, k);
}

static base_result ad_index(char out[AD_MAX], size_t *n, const char *t)
{
    return fmt_ad(out, n, AD_INDEX "%s", t);
}

static base_result integrity_failure(void)
{
    return base_fail(BASE_ERR_CRYPTO, INTEGRITY_MSG);
}

/* The stored provider id names the same master key as ours: the fingerprint after "<scheme>:" is compared,
 * so moving the key from a file to an environment variable (same bytes) keeps working. */
static bool same_master(const vault_store *s, const char *stored)
{
    const char *mine = strchr(vault_keyprovider_id(s->kp), ':');
    const char *theirs = stored ? strchr(stored, ':') : NULL;
    return mine && theirs && strcmp(mine, theirs) == 0;
}

static base_result master_mismatch(void)
{
    return base_fail(BASE_ERR_CONFLICT, "master key does not match the stored keys");
}

static base_result col_u32(const db_result *res, int row, int col, uint32_t *ret)
{
    int64_t v = 0;
    BASE_GUARD(db_result_get_int64(res, row, col, &v));
    BASE_ENSURE(v >= 0 && v <= UINT32_MAX, BASE_ERR_INTERNAL, "vault store: a stored number is out of range");
    *ret = (uint32_t)v;
    return BASE_OK_RESULT;
}

static bool col_true(const db_result *res, int row, int col)
{
    const char *v = db_result_get(res, row, col);
    return v && v[0] == 't';
}

static base_result col_copy(const db_result *res, int row, int col, char *dst, size_t cap)
{
    const char *v = db_result_get(res, row, col);
    size_t n = v ? strlen(v) : 0;
    BASE_ENSURE(n < cap, BASE_ERR_INTERNAL, "vault store: a stored value is longer than its field");
    memcpy(dst, v ? v : "", n + 1);
    return BASE_OK_RESULT;
}

static void backoff(int attempt)
{
    uint32_t jitter = 0;
    if (getrandom(&jitter, sizeof jitter, GRND_NONBLOCK) != (ssize_t)sizeof jitter)
        jitter = 0;
    usleep((useconds_t)(1000u * (1u << (attempt < 6 ? attempt : 6)) + jitter % 1000u));
}

/* One statement as its own transaction (autocommit): one round trip. Retried after a deadlock or a
 * serialization failure, which the server rolled back whole. */
static base_result exec_once(vault_store *s, const char *sql, int n, const char *const *p, const int *lengths,
                             const int *formats, db_result **ret)
{
    for (int attempt = 1;; attempt++) {
        db_conn *c = NULL;
        BASE_GUARD(db_pool_acquire(s->pool, ACQUIRE_MS, &c));
        base_result r = db_exec_params(c, sql, n, p, lengths, formats, ret);
        bool retry = !base_is_ok(r) && db_sqlstate_retryable(db_last_sqlstate());
        db_conn_release(c);
        if (!retry || attempt >= STMT_ATTEMPTS)
            return r;
        backoff(attempt);
    }
}

static base_result run(vault_store *s, db_txn_fn fn, void *arg)
{
    return db_transaction(s->pool, DB_READ_COMMITTED, TXN_ATTEMPTS, fn, arg);
}

/* ---- Open, close, migrate ------------------------------------------------------------------------------ */

base_result vault_store_migrate(db_pool *owner, const char *schema)
{
    BASE_ENSURE(owner, BASE_ERR_INVALID, "vault store: pool: missing");
    db_migration_set set = vault_migrations;
    set.schema = schema ? schema : DEFAULT_SCHEMA;
    return db_migrate(owner, &set, NULL);
}

base_result vault_store_open(db_pool *pool, vault_keyprovider *master, vault_store **ret)
{
    BASE_ENSURE(pool && master && ret, BASE_ERR_INVALID, "vault store: pool and master key are required");
    vault_store *s = calloc(1, sizeof *s);
    BASE_ENSURE(s, BASE_ERR_NOMEM, "vault store: out of memory");
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return base_fail(BASE_ERR_INTERNAL, "vault store: mutex");
    }
    s->pool = pool;
    s->kp = master;
    *ret = s;
    return BASE_OK_RESULT;
}

void vault_store_close(vault_store *s)
{
    if (!s)
        return;
    for (size_t b = 0; b < CACHE_BUCKETS; b++) {
        tenant_entry *e = s->buckets[b];
        while (e) {
            tenant_entry *next = e->next;
            entry_free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void vault_random_id(const char *prefix, char out[VAULT_ID_BUF])
{
    static const char digits[] = "0123456789abcdef";
    size_t p = prefix ? strlen(prefix) : 0;
    if (p + 32 >= VAULT_ID_BUF) {
        out[0] = '\0';
        return;
    }
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) { /* getrandom blocks only before the kernel's pool is seeded */
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    memcpy(out, prefix, p);
    for (size_t i = 0; i < sizeof b; i++) {
        out[p + 2 * i] = digits[b[i] >> 4];
        out[p + 2 * i + 1] = digits[b[i] & 15];
    }
    out[p + 32] = '\0';
}

/* ---- Tenant keys --------------------------------------------------------------------------------------- */

static base_result unwrap_kek(vault_store *s, const char *tenant_id, uint32_t version, const db_result *res,
                              int row, int col, acrypto_secret **ret)
{
    if (db_result_is_null(res, row, col))
        return integrity_failure(); /* destroyed */
    uint8_t *w = NULL;
    size_t wlen = 0;
    char ad[AD_MAX];
    size_t adn = 0;
    BASE_GUARD(ad_kek(ad, &adn, tenant_id, version));
    BASE_GUARD(db_result_get_bytea(res, row, col, &w, &wlen));
    base_result r = vault_keyprovider_unwrap(s->kp, ad, adn, w, wlen, ret);
    free(w);
    if (r.err == BASE_ERR_CRYPTO)
        return integrity_failure();
    return r;
}

/* Read the tenant's row and current KEK into the cache. NOT_FOUND when the tenant has no keys. */
static base_result tenant_load(vault_store *s, const char *tenant_id)
{
    const char *p[] = {tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(exec_once(s, SQL_TENANT_LOAD, 1, p, NULL, NULL, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: the tenant has no vault keys");
    if (col_true(res, 0, 4)) {
        vault_store_forget_tenant(s, tenant_id);
        return base_fail(BASE_ERR_CONFLICT, "tenant offboarded");
    }
    if (!same_master(s, db_result_get(res, 0, 3)) || !same_master(s, db_result_get(res, 0, 6)))
        return master_mismatch();
    uint32_t current = 0, min_decrypt = 0;
    BASE_GUARD(col_u32(res, 0, 0, &current));
    BASE_GUARD(col_u32(res, 0, 1, &min_decrypt));
    char ad[AD_MAX];
    size_t adn = 0;
    BASE_GUARD(ad_index(ad, &adn, tenant_id));
    uint8_t *w = NULL;
    size_t wlen = 0;
    acrypto_secret *index_key = NULL, *kek = NULL;
    BASE_GUARD(db_result_get_bytea(res, 0, 2, &w, &wlen));
    base_result r = vault_keyprovider_unwrap(s->kp, ad, adn, w, wlen, &index_key);
    free(w);
    if (!base_is_ok(r))
        return r.err == BASE_ERR_CRYPTO
                   ? base_fail(BASE_ERR_CRYPTO, "vault store: the tenant's index key failed "
                                                "its integrity check")
                   : r;
    r = unwrap_kek(s, tenant_id, current, res, 0, 5, &kek);
    if (!base_is_ok(r)) {
        acrypto_secret_free(index_key);
        return r;
    }
    return cache_store(s, tenant_id, current, min_decrypt, index_key, current, kek);
}

typedef struct create_ctx {
    const char *params[4];
    int lengths[4], formats[4];
    const uint8_t *kek_w, *index_w;
    size_t kek_len, index_len;
} create_ctx;

static base_result tenant_create_body(db_conn *c, void *arg)
{
    create_ctx *x = arg;
    const char *p[] = {x->params[0], (const char *)x->index_w, x->params[2]};
    const int len[] = {0, (int)x->index_len, 0}, fmt[] = {0, 1, 0};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec_params(c, SQL_TENANT_INSERT, 3, p, len, fmt, &res));
    if (db_result_affected_rows(res) == 0)
        return BASE_OK_RESULT; /* another replica made them first */
    const char *k[] = {x->params[0], "1", (const char *)x->kek_w, x->params[2]};
    const int klen[] = {0, 0, (int)x->kek_len, 0}, kfmt[] = {0, 0, 1, 0};
    return db_exec_params(c, SQL_KEK_INSERT, 4, k, klen, kfmt, NULL);
}

base_result vault_store_tenant_ensure(vault_store *s, const char *tenant_id)
{
    BASE_ENSURE(s, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    uint32_t v = 0;
    if (cache_current(s, tenant_id, &v, NULL, NULL))
        return BASE_OK_RESULT;
    base_result r = tenant_load(s, tenant_id);
    if (r.err != BASE_ERR_NOT_FOUND)
        return r;
    /* New keys, wrapped before the transaction (the provider may be remote). */
    acrypto_secret *kek = NULL, *index_key = NULL;
    uint8_t *kek_w = NULL, *index_w = NULL;
    size_t kek_len = 0, index_len = 0, adn = 0;
    char ad[AD_MAX];
    r = acrypto_secret_random(KEK_LEN, &kek);
    if (base_is_ok(r))
        r = acrypto_secret_random(INDEX_KEY_LEN, &index_key);
    if (base_is_ok(r))
        r = ad_kek(ad, &adn, tenant_id, 1);
    if (base_is_ok(r))
        r = vault_keyprovider_wrap(s->kp, ad, adn, kek, &kek_w, &kek_len);
    if (base_is_ok(r))
        r = ad_index(ad, &adn, tenant_id);
    if (base_is_ok(r))
        r = vault_keyprovider_wrap(s->kp, ad, adn, index_key, &index_w, &index_len);
    acrypto_secret_free(kek);
    acrypto_secret_free(index_key);
    if (base_is_ok(r)) {
        create_ctx x = {.params = {tenant_id, NULL, vault_keyprovider_id(s->kp)},
                        .kek_w = kek_w,
                        .kek_len = kek_len,
                        .index_w = index_w,
                        .index_len = index_len};
        r = run(s, tenant_create_body, &x);
    }
    free(kek_w);
    free(index_w);
    BASE_GUARD(r);
    return tenant_load(s, tenant_id);
}

/* The KEK of a version, from the cache or read on conn (NULL: a pooled connection) and unwrapped. */
static base_result kek_get(vault_store *s, db_conn *conn, const char *tenant_id, uint32_t version,
                           acrypto_secret **ret)
{
    if (cache_kek(s, tenant_id, version, ret))
        return BASE_OK_RESULT;
    char vbuf[16];
    fmt_u32(vbuf, version);
    const char *p[] = {tenant_id, vbuf};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    if (conn)
        BASE_GUARD(db_exec(conn, SQL_KEK_LOAD, 2, p, &res));
    else
        BASE_GUARD(exec_once(s, SQL_KEK_LOAD, 2, p, NULL, NULL, &res));
    if (db_result_ntuples(res) == 0)
        return integrity_failure();
    if (!same_master(s, db_result_get(res, 0, 1)))
        return master_mismatch();
    acrypto_secret *kek = NULL, *copy = NULL;
    BASE_GUARD(unwrap_kek(s, tenant_id, version, res, 0, 0, &kek));
    base_result r = copy_secret(kek, &copy);
    if (!base_is_ok(r)) {
        acrypto_secret_free(kek);
        return r;
    }
    r = cache_store(s, tenant_id, 0, 0, NULL, version, kek);
    if (!base_is_ok(r)) {
        acrypto_secret_free(copy);
        return r;
    }
    *ret = copy;
    return BASE_OK_RESULT;
}

/* ---- Put ----------------------------------------------------------------------------------------------- */

static base_result put_check(const vault_put *in)
{
    BASE_ENSURE(in, BASE_ERR_INVALID, "vault store: put: missing");
    CHECK_TENANT(in->tenant_id);
    BASE_ENSURE(in->kind >= 1 && in->kind <= 6, BASE_ERR_INVALID, "vault store: kind: must be 1..6");
    BASE_ENSURE(valid_id(in->patient_ref, "pt_", NULL), BASE_ERR_INVALID,
                "vault store: patient_ref: must be pt_ and 32 lowercase hex digits");
    if (in->kind == 1)
        BASE_ENSURE(in->record_id && strcmp(in->record_id, in->patient_ref) == 0, BASE_ERR_INVALID,
                    "vault store: record_id: a patient record's id is its patient_ref");
    else
        BASE_ENSURE(valid_id(in->record_id, "it_", NULL), BASE_ERR_INVALID,
                    "vault store: record_id: must be it_ and 32 lowercase hex digits");
    BASE_ENSURE(in->expected_version < INT32_MAX, BASE_ERR_INVALID,
                "vault store: expected_version: too large");
    size_t by = in->created_by ? strnlen(in->created_by, VAULT_ACTOR_MAX + 1) : 0;
    BASE_ENSURE(by >= 1 && by <= VAULT_ACTOR_MAX, BASE_ERR_INVALID,
                "vault store: created_by: must be 1..128 bytes");
    BASE_ENSURE(!in->amendment_request_id || valid_id(in->amendment_request_id, "am_", NULL),
                BASE_ERR_INVALID,
                "vault store: amendment_request_id: must be am_ and 32 lowercase hex digits");
    unsigned cats = 0;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        if (!in->parts[c])
            continue;
        BASE_ENSURE(in->part_len[c] <= VAULT_PART_MAX, BASE_ERR_LIMIT,
                    "vault store: a part is larger than VAULT_PART_MAX");
        cats |= VAULT_CATEGORY_BIT(c);
    }
    BASE_ENSURE(cats, BASE_ERR_INVALID, "vault store: parts: at least one category is required");
    BASE_ENSURE(in->parts[0] == NULL, BASE_ERR_INVALID, "vault store: parts: category 0 does not exist");
    BASE_ENSURE(in->blind_count <= VAULT_BLIND_MAX, BASE_ERR_LIMIT,
                "vault store: too many blind-index values");
    BASE_ENSURE(in->blind_count == 0 || in->kind == 1, BASE_ERR_INVALID,
                "vault store: blind: only a patient record has blind-index values");
    BASE_ENSURE(in->blind_count == 0 || in->blind, BASE_ERR_INVALID, "vault store: blind: missing");
    for (size_t i = 0; i < in->blind_count; i++) {
        const vault_blind *b = &in->blind[i];
        BASE_ENSURE(b->kind >= VAULT_BLIND_MRN && b->kind <= VAULT_BLIND_NAME_DOB, BASE_ERR_INVALID,
                    "vault store: blind: kind must be 1..3");
        BASE_ENSURE(b->value && b->len >= 1 && b->len <= VAULT_BLIND_VALUE_MAX, BASE_ERR_INVALID,
                    "vault store: blind: a value must be 1..512 bytes");
    }
    return BASE_OK_RESULT;
}

/* HMAC-SHA256(index key, kind byte || 0x00 || value). */
static base_result blind_digest(const acrypto_secret *index_key, int kind, const void *value, size_t len,
                                uint8_t out[ACRYPTO_HMAC_SHA256_LEN])
{
    uint8_t msg[2 + VAULT_BLIND_VALUE_MAX];
    BASE_ENSURE(len <= VAULT_BLIND_VALUE_MAX, BASE_ERR_INVALID, "vault store: blind: value too long");
    msg[0] = (uint8_t)kind;
    msg[1] = 0;
    memcpy(msg + 2, value, len);
    base_result r = acrypto_hmac_sha256(index_key, msg, len + 2, out);
    acrypto_wipe(msg, sizeof msg);
    return r;
}

typedef struct put_job {
    const vault_put *in;
    uint32_t version, kek_version;
    char vbuf[16], kbuf[16], cbuf[16], kindbuf[16];
    acrypto_secret *dek;
    uint8_t *sealed[VAULT_CATEGORY_MAX + 1];
    size_t sealed_len[VAULT_CATEGORY_MAX + 1];
    uint8_t *wrapped;
    size_t wrapped_len;
    db_array bkinds, bdigests;
} put_job;

static void put_job_free(put_job *j)
{
    acrypto_secret_free(j->dek);
    for (int c = 0; c <= VAULT_CATEGORY_MAX; c++)
        free(j->sealed[c]);
    free(j->wrapped);
    db_array_free(&j->bkinds);
    db_array_free(&j->bdigests);
}

static base_result put_wrap_dek(put_job *j, const acrypto_secret *kek)
{
    char ad[AD_MAX];
    size_t adn = 0;
    free(j->wrapped);
    j->wrapped = NULL;
    BASE_GUARD(ad_dek(ad, &adn, j->in->tenant_id, j->in->record_id, j->version, j->kek_version));
    BASE_GUARD(acrypto_gcm_seal_alloc(kek, ad, adn, acrypto_secret_bytes(j->dek), DEK_LEN, &j->wrapped,
                                      &j->wrapped_len));
    fmt_u32(j->kbuf, j->kek_version);
    return BASE_OK_RESULT;
}

/* Seal the parts under a fresh DEK, wrap it, digest the blind values (sorted out duplicates). */
static base_result put_prepare(put_job *j, const acrypto_secret *kek, const acrypto_secret *index_key)
{
    const vault_put *in = j->in;
    char ad[AD_MAX];
    size_t adn = 0;
    unsigned cats = 0;
    BASE_GUARD(acrypto_secret_random(DEK_LEN, &j->dek));
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        if (!in->parts[c])
            continue;
        cats |= VAULT_CATEGORY_BIT(c);
        BASE_GUARD(ad_part(ad, &adn, in->tenant_id, in->record_id, j->version, c));
        BASE_GUARD(acrypto_gcm_seal_alloc(j->dek, ad, adn, in->parts[c], in->part_len[c], &j->sealed[c],
                                          &j->sealed_len[c]));
    }
    BASE_GUARD(put_wrap_dek(j, kek));
    fmt_u32(j->vbuf, j->version);
    snprintf(j->cbuf, sizeof j->cbuf, "%u", cats);
    snprintf(j->kindbuf, sizeof j->kindbuf, "%d", in->kind);
    db_array_begin(&j->bkinds);
    db_array_begin(&j->bdigests);
    uint8_t digests[VAULT_BLIND_MAX][ACRYPTO_HMAC_SHA256_LEN];
    int kinds[VAULT_BLIND_MAX];
    size_t n = 0;
    for (size_t i = 0; i < in->blind_count; i++) {
        BASE_GUARD(
            blind_digest(index_key, in->blind[i].kind, in->blind[i].value, in->blind[i].len, digests[n]));
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = kinds[k] == in->blind[i].kind &&
                  acrypto_equal(digests[k], digests[n], ACRYPTO_HMAC_SHA256_LEN);
        if (dup)
            continue;
        kinds[n] = in->blind[i].kind;
        db_array_int(&j->bkinds, kinds[n]);
        db_array_hex(&j->bdigests, digests[n], ACRYPTO_HMAC_SHA256_LEN);
        n++;
    }
    BASE_GUARD(db_array_end(&j->bkinds));
    return db_array_end(&j->bdigests);
}

typedef enum put_outcome { PUT_DONE, PUT_NEWER_KEK, PUT_REFUSED } put_outcome;

static base_result put_exec(vault_store *s, put_job *j, put_outcome *ret_outcome, int64_t *ret_created)
{
    const vault_put *in = j->in;
    const char *p[18] = {in->tenant_id,
                         in->record_id,
                         j->vbuf,
                         in->patient_ref,
                         j->kindbuf,
                         in->created_by,
                         in->amendment_request_id,
                         j->cbuf,
                         j->kbuf,
                         (const char *)j->wrapped};
    int len[18] = {0}, fmt[18] = {0};
    len[9] = (int)j->wrapped_len;
    fmt[9] = 1;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++) {
        p[9 + c] = (const char *)j->sealed[c];
        len[9 + c] = (int)j->sealed_len[c];
        fmt[9 + c] = 1;
    }
    p[16] = j->bkinds.text;
    p[17] = j->bdigests.text;
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    base_result r = exec_once(s, SQL_PUT, 18, p, len, fmt, &res);
    if (r.err == BASE_ERR_EXISTS)
        return j->version == 1
                   ? base_fail(BASE_ERR_EXISTS, "vault store: record_id: the record already exists")
                   : base_fail(BASE_ERR_CONFLICT, "record changed since expected_version");
    BASE_GUARD(r);
    BASE_ENSURE(db_result_ntuples(res) == 1, BASE_ERR_INTERNAL, "vault store: put: no outcome");
    if (!db_result_is_null(res, 0, 0)) {
        BASE_GUARD(db_result_get_int64(res, 0, 0, ret_created));
        *ret_outcome = PUT_DONE;
        return BASE_OK_RESULT;
    }
    *ret_outcome = PUT_REFUSED;
    if (db_result_is_null(res, 0, 1))
        return base_fail(BASE_ERR_CONFLICT, "vault store: the tenant has no vault keys");
    if (col_true(res, 0, 2)) {
        vault_store_forget_tenant(s, in->tenant_id);
        return base_fail(BASE_ERR_CONFLICT, "tenant offboarded");
    }
    uint32_t current = 0;
    BASE_GUARD(col_u32(res, 0, 1, &current));
    if (current != j->kek_version) {
        BASE_ENSURE(current > j->kek_version, BASE_ERR_INTERNAL,
                    "vault store: the tenant's KEK version went back");
        *ret_outcome = PUT_NEWER_KEK;
        return BASE_OK_RESULT;
    }
    if (in->kind != 1 && (db_result_is_null(res, 0, 7) || col_true(res, 0, 7)))
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: patient_ref: no such patient in the tenant");
    if (j->version > 1) {
        const char *ref = db_result_get(res, 0, 4);
        if (db_result_is_null(res, 0, 3) || !ref || strcmp(ref, in->patient_ref) != 0 || col_true(res, 0, 6))
            return base_fail(BASE_ERR_NOT_FOUND, "vault store: record_id: no such record of the patient");
        int64_t kind = 0, latest = 0;
        BASE_GUARD(db_result_get_int64(res, 0, 5, &kind));
        if (kind != in->kind)
            return base_fail(BASE_ERR_INVALID, "vault store: kind: differs from the record's kind");
        BASE_GUARD(db_result_get_int64(res, 0, 3, &latest));
        if (latest != (int64_t)j->version - 1)
            return base_fail(BASE_ERR_CONFLICT, "record changed since expected_version");
    }
    return base_fail(BASE_ERR_INTERNAL, "vault store: put refused for no known reason");
}

base_result vault_store_put(vault_store *s, const vault_put *put, uint32_t *ret_version,
                            int64_t *ret_created_us)
{
    BASE_ENSURE(s, BASE_ERR_INVALID, "vault store: missing");
    BASE_GUARD(put_check(put));
    BASE_GUARD(vault_store_tenant_ensure(s, put->tenant_id));
    put_job j;
    memset(&j, 0, sizeof j);
    j.in = put;
    j.version = put->expected_version + 1;
    acrypto_secret *kek = NULL, *index_key = NULL;
    base_result r = BASE_OK_RESULT;
    if (!cache_current(s, put->tenant_id, &j.kek_version, &kek, &index_key)) {
        r = tenant_load(s, put->tenant_id);
        if (base_is_ok(r) && !cache_current(s, put->tenant_id, &j.kek_version, &kek, &index_key))
            r = base_fail(BASE_ERR_INTERNAL, "vault store: the tenant's keys are not loaded");
    }
    if (base_is_ok(r))
        r = put_prepare(&j, kek, index_key);
    int64_t created = 0;
    for (int round = 0; base_is_ok(r); round++) {
        put_outcome outcome = PUT_REFUSED;
        r = put_exec(s, &j, &outcome, &created);
        if (!base_is_ok(r) || outcome == PUT_DONE)
            break;
        /* A rotation committed since our keys were loaded: take the new version and wrap again. */
        if (round >= PUT_ROTATIONS) {
            r = base_fail(BASE_ERR_UNAVAILABLE, "vault store: the tenant's keys keep changing; try again");
            break;
        }
        acrypto_secret_free(kek);
        kek = NULL;
        r = tenant_load(s, put->tenant_id);
        if (base_is_ok(r) && !cache_current(s, put->tenant_id, &j.kek_version, &kek, NULL))
            r = base_fail(BASE_ERR_INTERNAL, "vault store: the tenant's keys are not loaded");
        if (base_is_ok(r))
            r = put_wrap_dek(&j, kek);
    }
    acrypto_secret_free(kek);
    acrypto_secret_free(index_key);
    put_job_free(&j);
    BASE_GUARD(r);
    if (ret_version)
        *ret_version = j.version;
    if (ret_created_us)
        *ret_created_us = created;
    return BASE_OK_RESULT;
}

/* ---- Reads --------------------------------------------------------------------------------------------- */

void vault_record_clear(vault_record *r)
{
    if (!r)
        return;
    for (int c = 0; c <= VAULT_CATEGORY_MAX; c++)
        acrypto_secret_free(r->parts[c]);
    memset(r, 0, sizeof *r);
}

void vault_records_free(vault_record *rs, size_t n)
{
    if (!rs)
        return;
    for (size_t i = 0; i < n; i++)
        vault_record_clear(&rs[i]);
    free(rs);
}

static base_result parse_meta(const db_result *res, int row, vault_record *out)
{
    memset(out, 0, sizeof *out);
    int64_t kind = 0, cats = 0;
    BASE_GUARD(col_copy(res, row, COL_ID, out->record_id, sizeof out->record_id));
    BASE_GUARD(col_copy(res, row, COL_PATIENT, out->patient_ref, sizeof out->patient_ref));
    BASE_GUARD(db_result_get_int64(res, row, COL_KIND, &kind));
    out->kind = (int)kind;
    BASE_GUARD(col_u32(res, row, COL_VERSION, &out->version));
    BASE_GUARD(db_result_get_int64(res, row, COL_CREATED, &out->created_us));
    BASE_GUARD(col_copy(res, row, COL_BY, out->created_by, sizeof out->created_by));
    BASE_GUARD(col_copy(res, row, COL_AMEND, out->amendment_request_id, sizeof out->amendment_request_id));
    BASE_GUARD(db_result_get_int64(res, row, COL_CATS, &cats));
    out->categories = (unsigned)cats & VAULT_ALL_CATEGORIES;
    return col_u32(res, row, COL_KEK, &out->kek_version);
}

/* Decrypt the parts in mask of one row into out (metadata already parsed). Any failure: BASE_ERR_CRYPTO
 * (or a database error), and out keeps no plaintext. */
static base_result decrypt_parts(vault_store *s, const char *tenant_id, const db_result *res, int row,
                                 unsigned mask, vault_record *out)
{
    unsigned want = mask & out->categories;
    if (!want)
        return BASE_OK_RESULT;
    if (col_true(res, row, COL_OFF)) {
        vault_store_forget_tenant(s, tenant_id);
        return base_fail(BASE_ERR_CONFLICT, "tenant offboarded");
    }
    uint32_t min_decrypt = 0;
    BASE_GUARD(col_u32(res, row, COL_MIN, &min_decrypt));
    if (out->kek_version < min_decrypt) {
        cache_raise_min(s, tenant_id, min_decrypt);
        return integrity_failure();
    }
    if (db_result_is_null(res, row, COL_DEK))
        return integrity_failure();
    acrypto_secret *kek = NULL, *dek = NULL;
    BASE_GUARD(kek_get(s, NULL, tenant_id, out->kek_version, &kek));
    char ad[AD_MAX];
    size_t adn = 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    base_result r = ad_dek(ad, &adn, tenant_id, out->record_id, out->version, out->kek_version);
    if (base_is_ok(r))
        r = db_result_get_bytea(res, row, COL_DEK, &buf, &len);
    if (base_is_ok(r) && (len != DEK_LEN + ACRYPTO_GCM_OVERHEAD ||
                          !base_is_ok(acrypto_gcm_open_secret(kek, ad, adn, buf, len, &dek))))
        r = integrity_failure();
    free(buf);
    buf = NULL;
    acrypto_secret_free(kek);
    for (int c = 1; base_is_ok(r) && c <= VAULT_CATEGORY_MAX; c++) {
        if (!(want & VAULT_CATEGORY_BIT(c)))
            continue;
        int col = COL_PART0 + c - 1;
        if (db_result_is_null(res, row, col)) {
            r = integrity_failure();
            break;
        }
        r = ad_part(ad, &adn, tenant_id, out->record_id, out->version, c);
        if (base_is_ok(r))
            r = db_result_get_bytea(res, row, col, &buf, &len);
        if (base_is_ok(r) && !base_is_ok(acrypto_gcm_open_secret(dek, ad, adn, buf, len, &out->parts[c])))
            r = integrity_failure();
        free(buf);
        buf = NULL;
    }
    acrypto_secret_free(dek);
    if (!base_is_ok(r)) {
        for (int c = 0; c <= VAULT_CATEGORY_MAX; c++)
            out->parts[c] = acrypto_secret_free(out->parts[c]);
    }
    return r;
}

static base_result read_rows(vault_store *s, const char *tenant_id, const db_result *res, int n,
                             unsigned mask, vault_record **ret, size_t *ret_n)
{
    vault_record *rs = calloc(n > 0 ? (size_t)n : 1, sizeof *rs);
    BASE_ENSURE(rs, BASE_ERR_NOMEM, "vault store: out of memory");
    base_result r = BASE_OK_RESULT;
    for (int i = 0; base_is_ok(r) && i < n; i++) {
        r = parse_meta(res, i, &rs[i]);
        if (base_is_ok(r))
            r = decrypt_parts(s, tenant_id, res, i, mask, &rs[i]);
    }
    if (!base_is_ok(r)) {
        vault_records_free(rs, (size_t)n);
        return r;
    }
    *ret = rs;
    *ret_n = (size_t)n;
    return BASE_OK_RESULT;
}

static base_result get_common(vault_store *s, const char *tenant_id, const char *record_id, uint32_t version,
                              unsigned mask, vault_record *ret)
{
    BASE_ENSURE(s && ret, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_id(record_id, "pt_", "it_"), BASE_ERR_INVALID,
                "vault store: record_id: must be pt_ or it_ and 32 lowercase hex digits");
    BASE_ENSURE(version <= INT32_MAX, BASE_ERR_INVALID, "vault store: version: too large");
    char vbuf[16], mbuf[16];
    fmt_u32(vbuf, version);
    fmt_u32(mbuf, mask & VAULT_ALL_CATEGORIES);
    const char *p[] = {mbuf, tenant_id, record_id, vbuf};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(exec_once(s, SQL_GET, 4, p, NULL, NULL, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: no such record");
    vault_record rec;
    BASE_GUARD(parse_meta(res, 0, &rec));
    BASE_GUARD(decrypt_parts(s, tenant_id, res, 0, mask, &rec));
    *ret = rec;
    return BASE_OK_RESULT;
}

base_result vault_store_head(vault_store *s, const char *tenant_id, const char *record_id, uint32_t version,
                             vault_record *ret)
{
    return get_common(s, tenant_id, record_id, version, 0, ret);
}

base_result vault_store_get(vault_store *s, const char *tenant_id, const char *record_id, uint32_t version,
                            unsigned mask, vault_record *ret)
{
    return get_common(s, tenant_id, record_id, version, mask, ret);
}

base_result vault_store_list(vault_store *s, const char *tenant_id, const char *patient_ref, int kind,
                             const char *after_record_id, size_t limit, unsigned mask, vault_record **ret,
                             size_t *ret_n, bool *ret_more)
{
    BASE_ENSURE(s && ret && ret_n && ret_more, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_id(patient_ref, "pt_", NULL), BASE_ERR_INVALID, "vault store: patient_ref: malformed");
    BASE_ENSURE(kind == 0 || (kind >= 2 && kind <= 6), BASE_ERR_INVALID,
                "vault store: kind: 0 or a clinical item kind (2..6)");
    BASE_ENSURE(limit >= 1 && limit <= 100, BASE_ERR_INVALID, "vault store: limit: must be 1..100");
    const char *after = after_record_id ? after_record_id : "";
    BASE_ENSURE(after[0] == '\0' || valid_id(after, "it_", NULL), BASE_ERR_INVALID,
                "vault store: after_record_id: malformed");
    char kbuf[16], lbuf[16], mbuf[16];
    snprintf(kbuf, sizeof kbuf, "%d", kind);
    snprintf(lbuf, sizeof lbuf, "%zu", limit + 1);
    fmt_u32(mbuf, mask & VAULT_ALL_CATEGORIES);
    const char *p[] = {mbuf, tenant_id, patient_ref, kbuf, after, lbuf};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(exec_once(s, SQL_LIST, 6, p, NULL, NULL, &res));
    int n = db_result_ntuples(res);
    bool more = (size_t)n > limit;
    if (more)
        n = (int)limit;
    BASE_GUARD(read_rows(s, tenant_id, res, n, mask, ret, ret_n));
    *ret_more = more;
    return BASE_OK_RESULT;
}

base_result vault_store_history(vault_store *s, const char *tenant_id, const char *record_id, unsigned mask,
                                vault_record **ret, size_t *ret_n)
{
    BASE_ENSURE(s && ret && ret_n, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_id(record_id, "pt_", "it_"), BASE_ERR_INVALID, "vault store: record_id: malformed");
    char mbuf[16], lbuf[16];
    fmt_u32(mbuf, mask & VAULT_ALL_CATEGORIES);
    snprintf(lbuf, sizeof lbuf, "%d", VAULT_HISTORY_MAX);
    const char *p[] = {mbuf, tenant_id, record_id, lbuf};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(exec_once(s, SQL_HISTORY, 4, p, NULL, NULL, &res));
    int n = db_result_ntuples(res);
    if (n == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: no such record");
    return read_rows(s, tenant_id, res, n, mask, ret, ret_n);
}

/* The tenant's index key (a copy); NOT_FOUND when the tenant has no keys. */
static base_result index_key_get(vault_store *s, const char *tenant_id, acrypto_secret **ret)
{
    uint32_t v = 0;
    if (cache_current(s, tenant_id, &v, NULL, ret))
        return BASE_OK_RESULT;
    BASE_GUARD(tenant_load(s, tenant_id));
    if (cache_current(s, tenant_id, &v, NULL, ret))
        return BASE_OK_RESULT;
    return base_fail(BASE_ERR_INTERNAL, "vault store: the tenant's keys are not loaded");
}

base_result vault_store_find(vault_store *s, const char *tenant_id, int kind, const char *value, size_t len,
                             char (*ret_refs)[VAULT_ID_BUF], size_t cap, size_t *ret_n)
{
    BASE_ENSURE(s && ret_refs && ret_n, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(kind >= VAULT_BLIND_MRN && kind <= VAULT_BLIND_NAME_DOB, BASE_ERR_INVALID,
                "vault store: kind: must be 1..3");
    BASE_ENSURE(value && len >= 1 && len <= VAULT_BLIND_VALUE_MAX, BASE_ERR_INVALID,
                "vault store: value: must be 1..512 bytes");
    BASE_ENSURE(cap >= 1, BASE_ERR_INVALID, "vault store: cap: at least 1");
    if (cap > VAULT_FIND_MAX)
        cap = VAULT_FIND_MAX;
    acrypto_secret *index_key = NULL;
    base_result r = index_key_get(s, tenant_id, &index_key);
    if (r.err == BASE_ERR_NOT_FOUND) {
        *ret_n = 0; /* a tenant without keys has no patients */
        return BASE_OK_RESULT;
    }
    BASE_GUARD(r);
    uint8_t digest[ACRYPTO_HMAC_SHA256_LEN];
    r = blind_digest(index_key, kind, value, len, digest);
    acrypto_secret_free(index_key);
    BASE_GUARD(r);
    char kbuf[16], lbuf[16];
    snprintf(kbuf, sizeof kbuf, "%d", kind);
    snprintf(lbuf, sizeof lbuf, "%zu", cap);
    const char *p[] = {tenant_id, kbuf, (const char *)digest, lbuf};
    const int lens[] = {0, 0, (int)sizeof digest, 0}, fmts[] = {0, 0, 1, 0};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(exec_once(s, SQL_FIND, 4, p, lens, fmts, &res));
    int n = db_result_ntuples(res);
    for (int i = 0; i < n && (size_t)i < cap; i++)
        BASE_GUARD(col_copy(res, i, 0, ret_refs[i], VAULT_ID_BUF));
    *ret_n = (size_t)n < cap ? (size_t)n : cap;
    return BASE_OK_RESULT;
}

base_result vault_store_pseudonym(vault_store *s, const char *tenant_id, const char *patient_ref,
                                  char ret[VAULT_ID_BUF])
{
    BASE_ENSURE(s && ret, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_id(patient_ref, "pt_", NULL), BASE_ERR_INVALID, "vault store: patient_ref: malformed");
    acrypto_secret *index_key = NULL;
    BASE_GUARD(index_key_get(s, tenant_id, &index_key));
    uint8_t msg[16 + VAULT_ID_BUF], mac[ACRYPTO_HMAC_SHA256_LEN];
    static const char label[] = "pseudonym";
    memcpy(msg, label, sizeof label); /* includes the 0x00 separator */
    memcpy(msg + sizeof label, patient_ref, VAULT_ID_LEN);
    base_result r = acrypto_hmac_sha256(index_key, msg, sizeof label + VAULT_ID_LEN, mac);
    acrypto_secret_free(index_key);
    BASE_GUARD(r);
    char out[VAULT_ID_BUF];
    size_t hex_len = 0;
    memcpy(out, "ps_", 3);
    BASE_GUARD(acrypto_hex_encode(mac, 16, out + 3, sizeof out - 3, &hex_len));
    memcpy(ret, out, VAULT_ID_BUF);
    return BASE_OK_RESULT;
}

base_result vault_store_list_patients(vault_store *s, const char *tenant_id, const char *after,
                                      char (*ret_refs)[VAULT_ID_BUF], size_t cap, size_t *ret_n)
{
    BASE_ENSURE(s && ret_refs && ret_n, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    const char *a = after ? after : "";
    BASE_ENSURE(a[0] == '\0' || valid_id(a, "pt_", NULL), BASE_ERR_INVALID, "vault store: after: malformed");
    BASE_ENSURE(cap >= 1 && cap <= PATIENTS_MAX, BASE_ERR_INVALID, "vault store: cap: must be 1..100000");
    char lbuf[24];
    snprintf(lbuf, sizeof lbuf, "%zu", cap);
    const char *p[] = {tenant_id, a, lbuf};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(exec_once(s, SQL_PATIENTS, 3, p, NULL, NULL, &res));
    int n = db_result_ntuples(res);
    for (int i = 0; i < n; i++)
        BASE_GUARD(col_copy(res, i, 0, ret_refs[i], VAULT_ID_BUF));
    *ret_n = (size_t)n;
    return BASE_OK_RESULT;
}

/* ---- Rotation ------------------------------------------------------------------------------------------ */

typedef struct rotate_ctx {
    vault_store *s;
    const char *tenant_id;
    uint32_t version;    /* out */
    acrypto_secret *kek; /* out: the new KEK */
} rotate_ctx;

static base_result rotate_body(db_conn *c, void *arg)
{
    rotate_ctx *x = arg;
    x->kek = acrypto_secret_free(x->kek);
    const char *p[] = {x->tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_TENANT_LOCK, 1, p, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: the tenant has no vault keys");
    if (col_true(res, 0, 2))
        return base_fail(BASE_ERR_CONFLICT, "tenant offboarded");
    if (!same_master(x->s, db_result_get(res, 0, 3)))
        return master_mismatch();
    uint32_t current = 0;
    BASE_GUARD(col_u32(res, 0, 0, &current));
    BASE_ENSURE(current < INT32_MAX, BASE_ERR_LIMIT, "vault store: no more KEK versions");
    uint32_t next = current + 1;
    char ad[AD_MAX], vbuf[16];
    size_t adn = 0, wlen = 0;
    uint8_t *w = NULL;
    BASE_GUARD(ad_kek(ad, &adn, x->tenant_id, next));
    BASE_GUARD(acrypto_secret_random(KEK_LEN, &x->kek));
    BASE_GUARD(vault_keyprovider_wrap(x->s->kp, ad, adn, x->kek, &w, &wlen));
    fmt_u32(vbuf, next);
    const char *k[] = {x->tenant_id, vbuf, (const char *)w, vault_keyprovider_id(x->s->kp)};
    const int klen[] = {0, 0, (int)wlen, 0}, kfmt[] = {0, 0, 1, 0};
    base_result r = db_exec_params(c, SQL_KEK_INSERT, 4, k, klen, kfmt, NULL);
    free(w);
    BASE_GUARD(r);
    const char *u[] = {x->tenant_id, vbuf};
    BASE_GUARD(db_exec(c, SQL_ROTATE, 2, u, NULL));
    x->version = next;
    return BASE_OK_RESULT;
}

base_result vault_store_rotate(vault_store *s, const char *tenant_id, uint32_t *ret_version)
{
    BASE_ENSURE(s, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    rotate_ctx x = {.s = s, .tenant_id = tenant_id};
    base_result r = run(s, rotate_body, &x);
    if (!base_is_ok(r)) {
        acrypto_secret_free(x.kek);
        return r;
    }
    BASE_GUARD(cache_store(s, tenant_id, x.version, 0, NULL, x.version, x.kek));
    if (ret_version)
        *ret_version = x.version;
    return BASE_OK_RESULT;
}

base_result vault_store_key_status(vault_store *s, const char *tenant_id, vault_key_status *ret)
{
    BASE_ENSURE(s && ret, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    const char *p[] = {tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *t = NULL;
    BASE_CLEANUP(db_result_freep) db_result *k = NULL;
    BASE_GUARD(exec_once(s, SQL_STATUS_TENANT, 1, p, NULL, NULL, &t));
    if (db_result_ntuples(t) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: the tenant has no vault keys");
    vault_key_status st;
    memset(&st, 0, sizeof st);
    BASE_GUARD(col_u32(t, 0, 0, &st.current_version));
    BASE_GUARD(col_u32(t, 0, 1, &st.min_decrypt_version));
    BASE_GUARD(exec_once(s, SQL_STATUS_KEYS, 1, p, NULL, NULL, &k));
    int n = db_result_ntuples(k);
    for (int i = 0; i < n && st.count < VAULT_KEY_VERSIONS_MAX; i++) {
        int64_t cnt = 0;
        BASE_GUARD(col_u32(k, i, 0, &st.wrapped[st.count].version));
        BASE_GUARD(db_result_get_int64(k, i, 1, &cnt));
        st.wrapped[st.count++].data_keys = (uint64_t)cnt;
    }
    *ret = st;
    return BASE_OK_RESULT;
}

typedef struct rewrap_ctx {
    vault_store *s;
    const char *tenant_id;
    char limit[16];
    size_t done; /* out: keys re-wrapped by this batch */
} rewrap_ctx;

static base_result rewrap_body(db_conn *c, void *arg)
{
    rewrap_ctx *x = arg;
    x->done = 0;
    const char *p[] = {x->tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *t = NULL;
    BASE_CLEANUP(db_result_freep) db_result *rows = NULL;
    /* FOR SHARE: a retire waits for this batch rather than destroying a key it is re-wrapping from. */
    BASE_GUARD(db_exec(c, SQL_TENANT_SHARE, 1, p, &t));
    if (db_result_ntuples(t) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: the tenant has no vault keys");
    if (col_true(t, 0, 2))
        return base_fail(BASE_ERR_CONFLICT, "tenant offboarded");
    uint32_t current = 0;
    BASE_GUARD(col_u32(t, 0, 0, &current));
    char cbuf[16];
    fmt_u32(cbuf, current);
    const char *q[] = {x->tenant_id, cbuf, x->limit};
    BASE_GUARD(db_exec(c, SQL_REWRAP_PICK, 3, q, &rows));
    int n = db_result_ntuples(rows);
    if (n == 0)
        return BASE_OK_RESULT;
    acrypto_secret *new_kek = NULL, *old_kek = NULL;
    uint32_t old_version = 0;
    BASE_GUARD(kek_get(x->s, c, x->tenant_id, current, &new_kek));
    db_array ids, versions, olds, wrapped;
    db_array_begin(&ids);
    db_array_begin(&versions);
    db_array_begin(&olds);
    db_array_begin(&wrapped);
    base_result r = BASE_OK_RESULT;
    for (int i = 0; base_is_ok(r) && i < n; i++) {
        const char *id = db_result_get(rows, i, 0);
        uint32_t version = 0, k = 0;
        uint8_t *w = NULL, *nw = NULL;
        size_t wlen = 0, nwlen = 0, adn = 0;
        char ad[AD_MAX];
        acrypto_secret *dek = NULL;
        r = col_u32(rows, i, 1, &version);
        if (base_is_ok(r))
            r = col_u32(rows, i, 2, &k);
        if (base_is_ok(r) && (!old_kek || k != old_version)) {
            old_kek = acrypto_secret_free(old_kek);
            old_version = k;
            r = kek_get(x->s, c, x->tenant_id, k, &old_kek);
        }
        if (base_is_ok(r))
            r = db_result_get_bytea(rows, i, 3, &w, &wlen);
        if (base_is_ok(r))
            r = ad_dek(ad, &adn, x->tenant_id, id, version, k);
        if (base_is_ok(r) && !base_is_ok(acrypto_gcm_open_secret(old_kek, ad, adn, w, wlen, &dek)))
            r = base_fail(BASE_ERR_CRYPTO, "vault store: rewrap: a data key failed its integrity check");
        if (base_is_ok(r))
            r = ad_dek(ad, &adn, x->tenant_id, id, version, current);
        if (base_is_ok(r))
            r = acrypto_gcm_seal_alloc(new_kek, ad, adn, acrypto_secret_bytes(dek), acrypto_secret_len(dek),
                                       &nw, &nwlen);
        if (base_is_ok(r)) {
            db_array_text(&ids, id);
            db_array_int(&versions, version);
            db_array_int(&olds, k);
            db_array_hex(&wrapped, nw, nwlen);
        }
        acrypto_secret_free(dek);
        free(w);
        free(nw);
    }
    acrypto_secret_free(old_kek);
    acrypto_secret_free(new_kek);
    if (base_is_ok(r))
        r = db_array_end(&ids);
    if (base_is_ok(r))
        r = db_array_end(&versions);
    if (base_is_ok(r))
        r = db_array_end(&olds);
    if (base_is_ok(r))
        r = db_array_end(&wrapped);
    db_result *upd = NULL;
    if (base_is_ok(r)) {
        const char *u[] = {x->tenant_id, cbuf, ids.text, versions.text, olds.text, wrapped.text};
        r = db_exec(c, SQL_REWRAP_UPDATE, 6, u, &upd);
    }
    if (base_is_ok(r) && db_result_affected_rows(upd) != n)
        r = base_fail(BASE_ERR_INTERNAL, "vault store: rewrap: a locked row changed under the batch");
    db_result_free(upd);
    db_array_free(&ids);
    db_array_free(&versions);
    db_array_free(&olds);
    db_array_free(&wrapped);
    if (base_is_ok(r))
        x->done = (size_t)n;
    return r;
}

base_result vault_store_rewrap(vault_store *s, const char *tenant_id, size_t batch,
                               vault_progress_fn progress, void *arg, uint64_t *ret_done)
{
    BASE_ENSURE(s, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(batch >= 1 && batch <= REWRAP_MAX, BASE_ERR_INVALID, "vault store: batch: must be 1..10000");
    vault_key_status st;
    BASE_GUARD(vault_store_key_status(s, tenant_id, &st));
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < st.count; i++) {
        if (st.wrapped[i].version < st.current_version)
            total += st.wrapped[i].data_keys;
    }
    rewrap_ctx x = {.s = s, .tenant_id = tenant_id};
    snprintf(x.limit, sizeof x.limit, "%zu", batch);
    for (;;) {
        base_result r = run(s, rewrap_body, &x);
        if (!base_is_ok(r)) {
            if (ret_done)
                *ret_done = done;
            return r;
        }
        if (x.done == 0)
            break;
        done += x.done;
        if (done > total)
            total = done; /* keys wrapped under an old version after the count (a rotation meanwhile) */
        if (progress)
            progress(arg, done, total);
    }
    if (ret_done)
        *ret_done = done;
    return BASE_OK_RESULT;
}

typedef struct retire_ctx {
    vault_store *s;
    const char *tenant_id;
    uint32_t min_version;
} retire_ctx;

static base_result retire_body(db_conn *c, void *arg)
{
    retire_ctx *x = arg;
    const char *p[] = {x->tenant_id};
    BASE_CLEANUP(db_result_freep) db_result *t = NULL;
    BASE_CLEANUP(db_result_freep) db_result *cnt = NULL;
    /* FOR UPDATE waits for every put holding the tenants row FOR SHARE, so the count below sees them. */
    BASE_GUARD(db_exec(c, SQL_TENANT_LOCK, 1, p, &t));
    if (db_result_ntuples(t) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: the tenant has no vault keys");
    if (col_true(t, 0, 2))
        return base_fail(BASE_ERR_CONFLICT, "tenant offboarded");
    uint32_t current = 0, min_decrypt = 0;
    BASE_GUARD(col_u32(t, 0, 0, &current));
    BASE_GUARD(col_u32(t, 0, 1, &min_decrypt));
    if (x->min_version > current)
        return base_fail(BASE_ERR_INVALID, "vault store: min_version: above the current KEK version");
    if (x->min_version <= min_decrypt)
        return BASE_OK_RESULT;
    char vbuf[16];
    fmt_u32(vbuf, x->min_version);
    const char *q[] = {x->tenant_id, vbuf};
    BASE_GUARD(db_exec(c, SQL_COUNT_OLD, 2, q, &cnt));
    int64_t left = 0;
    BASE_GUARD(db_result_get_int64(cnt, 0, 0, &left));
    if (left > 0)
        return base_fail(BASE_ERR_CONFLICT,
                         "vault store: data keys are still wrapped by a KEK version to retire: rewrap first");
    BASE_GUARD(db_exec(c, SQL_RETIRE_KEYS, 2, q, NULL));
    return db_exec(c, SQL_RETIRE_MIN, 2, q, NULL);
}

base_result vault_store_retire(vault_store *s, const char *tenant_id, uint32_t min_version)
{
    BASE_ENSURE(s, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(min_version >= 1 && min_version <= INT32_MAX, BASE_ERR_INVALID,
                "vault store: min_version: must be at least 1");
    retire_ctx x = {.s = s, .tenant_id = tenant_id, .min_version = min_version};
    BASE_GUARD(run(s, retire_body, &x));
    cache_raise_min(s, tenant_id, min_version);
    return BASE_OK_RESULT;
}

/* ---- Shredding and offboarding ------------------------------------------------------------------------- */

void vault_shred_summary_free(vault_shred_summary *s)
{
    if (!s)
        return;
    free(s->record_ids);
    s->record_ids = NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Fill a summary from rows (record_id, kek_version, now_us). */
static base_result summarise(const db_result *res, vault_shred_summary *out, int64_t *ret_now)
{
    int n = db_result_ntuples(res);
    BASE_ENSURE(n <= VAULT_SHRED_RECORDS_MAX * VAULT_HISTORY_MAX, BASE_ERR_LIMIT,
                "vault store: too many rows");
    char(*ids)[VAULT_ID_BUF] = calloc(n > 0 ? (size_t)n : 1, VAULT_ID_BUF);
    BASE_ENSURE(ids, BASE_ERR_NOMEM, "vault store: out of memory");
    uint32_t kmin = 0, kmax = 0;
    base_result r = BASE_OK_RESULT;
    for (int i = 0; base_is_ok(r) && i < n; i++) {
        uint32_t k = 0;
        r = col_copy(res, i, 0, ids[i], VAULT_ID_BUF);
        if (base_is_ok(r))
            r = col_u32(res, i, 1, &k);
        if (base_is_ok(r)) {
            kmin = (i == 0 || k < kmin) ? k : kmin;
            kmax = k > kmax ? k : kmax;
        }
        if (base_is_ok(r) && i == 0)
            r = db_result_get_int64(res, 0, 2, ret_now);
    }
    if (!base_is_ok(r)) {
        free(ids);
        return r;
    }
    qsort(ids, (size_t)n, VAULT_ID_BUF, cmp_id);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (k == 0 || strcmp(ids[k - 1], ids[i]) != 0)
            memmove(ids[k++], ids[i], VAULT_ID_BUF);
    }
    BASE_ENSURE(k <= VAULT_SHRED_RECORDS_MAX, BASE_ERR_LIMIT, "vault store: too many records for one shred");
    out->records = (uint32_t)k;
    out->versions = (uint32_t)n;
    out->kek_min = kmin;
    out->kek_max = kmax;
    out->record_ids = ids;
    return BASE_OK_RESULT;
}

typedef struct shred_ctx {
    const char *params[2];
    vault_shred_summary out;
    int64_t now_us;
} shred_ctx;

static base_result shred_keys_body(db_conn *c, void *arg)
{
    shred_ctx *x = arg;
    vault_shred_summary_free(&x->out);
    memset(&x->out, 0, sizeof x->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_GUARD(db_exec(c, SQL_SHRED_LOCK, 2, x->params, NULL));
    BASE_GUARD(db_exec(c, SQL_SHRED_KEYS, 2, x->params, &res));
    if (db_result_ntuples(res) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: the patient has no records");
    return summarise(res, &x->out, &x->now_us);
}

base_result vault_store_shred_keys(vault_store *s, const char *tenant_id, const char *patient_ref,
                                   vault_shred_summary *ret)
{
    BASE_ENSURE(s && ret, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_id(patient_ref, "pt_", NULL), BASE_ERR_INVALID, "vault store: patient_ref: malformed");
    shred_ctx x = {.params = {tenant_id, patient_ref}};
    base_result r = run(s, shred_keys_body, &x);
    if (!base_is_ok(r)) {
        vault_shred_summary_free(&x.out);
        return r;
    }
    x.out.keys_destroyed_us = x.now_us;
    *ret = x.out;
    return BASE_OK_RESULT;
}

static base_result shred_rows_body(db_conn *c, void *arg)
{
    shred_ctx *x = arg;
    vault_shred_summary_free(&x->out);
    memset(&x->out, 0, sizeof x->out);
    BASE_CLEANUP(db_result_freep) db_result *res = NULL;
    BASE_CLEANUP(db_result_freep) db_result *now = NULL;
    BASE_GUARD(db_exec(c, SQL_SHRED_INDEX, 2, x->params, NULL));
    BASE_GUARD(db_exec(c, SQL_SHRED_ROWS, 2, x->params, &res));
    BASE_GUARD(db_exec(c, SQL_NOW, 0, NULL, &now));
    BASE_GUARD(db_result_get_int64(now, 0, 0, &x->now_us));
    int64_t ignored = 0;
    return summarise(res, &x->out, &ignored);
}

base_result vault_store_shred_rows(vault_store *s, const char *tenant_id, const char *patient_ref,
                                   vault_shred_summary *ret)
{
    BASE_ENSURE(s && ret, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    BASE_ENSURE(valid_id(patient_ref, "pt_", NULL), BASE_ERR_INVALID, "vault store: patient_ref: malformed");
    shred_ctx x = {.params = {tenant_id, patient_ref}};
    base_result r = run(s, shred_rows_body, &x);
    if (!base_is_ok(r)) {
        vault_shred_summary_free(&x.out);
        return r;
    }
    /* A summary from step 1 stays as it was; a caller that did not keep one (a retry after a crash) gets the
     * counts of the rows this step deleted. */
    if (!ret->record_ids) {
        int64_t destroyed = ret->keys_destroyed_us;
        *ret = x.out;
        ret->keys_destroyed_us = destroyed;
    } else {
        vault_shred_summary_free(&x.out);
    }
    ret->rows_deleted_us = x.now_us;
    return BASE_OK_RESULT;
}

typedef struct destroy_ctx {
    const char *params[1];
    uint32_t versions;
} destroy_ctx;

static base_result destroy_body(db_conn *c, void *arg)
{
    destroy_ctx *x = arg;
    x->versions = 0;
    BASE_CLEANUP(db_result_freep) db_result *t = NULL;
    BASE_CLEANUP(db_result_freep) db_result *k = NULL;
    BASE_GUARD(db_exec(c, SQL_TENANT_EXISTS, 1, x->params, &t));
    if (db_result_ntuples(t) == 0)
        return base_fail(BASE_ERR_NOT_FOUND, "vault store: the tenant has no vault keys");
    BASE_GUARD(db_exec(c, SQL_OFFBOARD, 1, x->params, NULL));
    BASE_GUARD(db_exec(c, SQL_DESTROY_KEKS, 1, x->params, &k));
    x->versions = (uint32_t)db_result_affected_rows(k);
    return BASE_OK_RESULT;
}

base_result vault_store_destroy_tenant_keys(vault_store *s, const char *tenant_id, uint32_t *ret_versions)
{
    BASE_ENSURE(s, BASE_ERR_INVALID, "vault store: missing");
    CHECK_TENANT(tenant_id);
    destroy_ctx x = {.params = {tenant_id}};
    base_result r = run(s, destroy_body, &x);
    vault_store_forget_tenant(s, tenant_id);
    BASE_GUARD(r);
    if (ret_versions)
        *ret_versions = x.versions;
    return BASE_OK_RESULT;
}

const char *vault_category_name(int category)
{
    static const char *const names[VAULT_CATEGORY_MAX + 1] = {
        "unknown", "demographic", "contact", "identifier", "clinical", "sensitive_clinical", "financial"};
    if (category < 1 || category > VAULT_CATEGORY_MAX)
        return "unknown";
    return names[category];
}
