/* Minimum-necessary views (views.h): the `views` table loaded into memory, resolved per caller, and a cache
 * that reloads it. */
#include "views.h"

#include "store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct view_row {
    char tenant_id[VAULT_VIEW_TENANT_MAX + 1];
    char role_id[VAULT_VIEW_NAME_MAX + 1];
    int purpose;
    char view_id[VAULT_VIEW_NAME_MAX + 1];
    unsigned categories;
    bool pseudonymous;
    char permission[VAULT_VIEW_PERM_MAX + 1];
} view_row;

struct vault_views {
    view_row *rows; /* sorted by (tenant_id, role_id, purpose), strcmp order */
    size_t count;
};

/* The category mask is computed by the server from the smallint[]; LIMIT one more than we accept, to tell
 * "too many" from "exactly the limit". */
#define VIEWS_SQL                                                                                            \
    "SELECT tenant_id, role_id, purpose, view_id, "                                                          \
    "(SELECT coalesce(bit_or(1 << c::int), 0) FROM unnest(categories) AS c) AS mask, "                       \
    "pseudonymous, permission FROM views ORDER BY tenant_id, role_id, purpose LIMIT 10001"

_Static_assert(VAULT_VIEWS_MAX == 10000, "VIEWS_SQL's LIMIT is VAULT_VIEWS_MAX + 1");

static int row_cmp(const view_row *a, const view_row *b)
{
    int c = strcmp(a->tenant_id, b->tenant_id);
    if (c)
        return c;
    c = strcmp(a->role_id, b->role_id);
    if (c)
        return c;
    return (a->purpose > b->purpose) - (a->purpose < b->purpose);
}

static int row_qsort_cmp(const void *a, const void *b)
{
    return row_cmp(a, b);
}

static base_result bad_row(const char *what)
{
    return base_fail(BASE_ERR_INTERNAL, "vault views table: %s", what);
}

/* Copy a text column into dst (cap bytes with the NUL); empty allowed only when allow_empty. */
static bool copy_col(const db_result *res, int row, int col, char *dst, size_t cap, bool allow_empty)
{
    const char *s = db_result_get(res, row, col);
    if (!s)
        return false;
    size_t len = db_result_length(res, row, col);
    if (len >= cap || (len == 0 && !allow_empty) || strlen(s) != len)
        return false;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return true;
}

typedef struct load_arg {
    view_row *rows;
    size_t count;
} load_arg;

static base_result load_txn(db_conn *conn, void *argp)
{
    load_arg *arg = argp;
    free(arg->rows); /* a retried transaction starts over */
    arg->rows = NULL;
    arg->count = 0;

    db_result *res = NULL;
    BASE_GUARD(db_exec(conn, VIEWS_SQL, 0, NULL, &res));
    base_result r = BASE_OK_RESULT;
    int n = db_result_ntuples(res);
    if (n < 0 || (size_t)n > VAULT_VIEWS_MAX) {
        r = base_fail(BASE_ERR_LIMIT, "vault views table: more than %d rows", VAULT_VIEWS_MAX);
        goto out;
    }
    arg->rows = calloc(n > 0 ? (size_t)n : 1, sizeof *arg->rows);
    if (!arg->rows) {
        r = base_fail(BASE_ERR_NOMEM, "out of memory loading the vault views");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        view_row *v = &arg->rows[i];
        int64_t purpose = 0, mask = 0;
        if (!copy_col(res, i, 0, v->tenant_id, sizeof v->tenant_id, true)) {
            r = bad_row("tenant_id longer than the limit");
            goto out;
        }
        if (!copy_col(res, i, 1, v->role_id, sizeof v->role_id, false) ||
            !copy_col(res, i, 3, v->view_id, sizeof v->view_id, false)) {
            r = bad_row("role_id or view_id outside 1..64 bytes");
            goto out;
        }
        if (!copy_col(res, i, 6, v->permission, sizeof v->permission, false)) {
            r = bad_row("permission outside 1..128 bytes");
            goto out;
        }
        if (!base_is_ok(db_result_get_int64(res, i, 2, &purpose)) || purpose < 1 ||
            purpose > VAULT_VIEW_PURPOSE_MAX) {
            r = bad_row("purpose outside 1..8");
            goto out;
        }
        if (!base_is_ok(db_result_get_int64(res, i, 4, &mask)) || mask == 0 ||
            ((uint64_t)mask & ~(uint64_t)VAULT_ALL_CATEGORIES) != 0) {
            r = bad_row("categories outside 1..6");
            goto out;
        }
        const char *pseudo = db_result_get(res, i, 5);
        if (!pseudo || (strcmp(pseudo, "t") != 0 && strcmp(pseudo, "f") != 0)) {
            r = bad_row("pseudonymous is not a boolean");
            goto out;
        }
        v->purpose = (int)purpose;
        v->categories = (unsigned)mask;
        v->pseudonymous = pseudo[0] == 't';
    }
    arg->count = (size_t)n;
out:
    db_result_free(res);
    return r;
}

BASE_MUST_USE base_result vault_views_load(db_pool *pool, vault_views **ret)
{
    if (!pool)
        return base_fail(BASE_ERR_INVALID, "vault views: no database pool");
    load_arg arg = {0};
    base_result r = db_transaction(pool, DB_READ_COMMITTED, 3, load_txn, &arg);
    if (!base_is_ok(r)) {
        free(arg.rows);
        return r;
    }
    vault_views *v = malloc(sizeof *v);
    if (!v) {
        free(arg.rows);
        return base_fail(BASE_ERR_NOMEM, "out of memory loading the vault views");
    }
    qsort(arg.rows, arg.count, sizeof *arg.rows, row_qsort_cmp);
    v->rows = arg.rows;
    v->count = arg.count;
    *ret = v;
    return BASE_OK_RESULT;
}

void vault_views_free(vault_views *v)
{
    if (!v)
        return;
    free(v->rows);
    free(v);
}

size_t vault_views_count(const vault_views *v)
{
    return v ? v->count : 0;
}

/* The first row at or after (tenant, role, purpose). */
static size_t lower_bound(const vault_views *v, const char *tenant, const char *role, int purpose)
{
    view_row key;
    memset(&key, 0, sizeof key);
    /* Keys longer than any stored value cannot match; truncation would only make them compare differently
     * from every row of that exact name, which the equality checks of the callers reject. */
    size_t tl = strlen(tenant), rl = strlen(role);
    if (tl > VAULT_VIEW_TENANT_MAX)
        tl = VAULT_VIEW_TENANT_MAX;
    if (rl > VAULT_VIEW_NAME_MAX)
        rl = VAULT_VIEW_NAME_MAX;
    memcpy(key.tenant_id, tenant, tl);
    memcpy(key.role_id, role, rl);
    key.purpose = purpose;
    size_t lo = 0, hi = v->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (row_cmp(&v->rows[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool has_role_rows(const vault_views *v, const char *tenant, const char *role)
{
    size_t i = lower_bound(v, tenant, role, 0);
    return i < v->count && strcmp(v->rows[i].tenant_id, tenant) == 0 && strcmp(v->rows[i].role_id, role) == 0;
}

static const view_row *find_row(const vault_views *v, const char *tenant, const char *role, int purpose)
{
    size_t i = lower_bound(v, tenant, role, purpose);
    if (i < v->count && strcmp(v->rows[i].tenant_id, tenant) == 0 && strcmp(v->rows[i].role_id, role) == 0 &&
        v->rows[i].purpose == purpose)
        return &v->rows[i];
    return NULL;
}

static int str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sort and remove duplicates in place; returns the new count. */
static size_t sort_unique(const char **v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, str_ptr_cmp);
    size_t out = 1;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(v[i], v[out - 1]) != 0)
            v[out++] = v[i];
    }
    return out;
}

BASE_MUST_USE base_result vault_views_resolve(const vault_views *v, const char *tenant_id,
                                              const char *const *roles, size_t n_roles, int purpose,
                                              vault_view *ret)
{
    if (!v)
        return base_fail(BASE_ERR_INTERNAL, "vault views not loaded");
    if (purpose < 1 || purpose > VAULT_VIEW_PURPOSE_MAX)
        return base_fail(BASE_ERR_INVALID, "purpose: a known purpose of use is required");
    if (n_roles > VAULT_VIEW_ROLES_MAX)
        return base_fail(BASE_ERR_LIMIT, "roles: more than %d", VAULT_VIEW_ROLES_MAX);
    const char *tenant = tenant_id ? tenant_id : "";

    const view_row *found[VAULT_VIEW_ROLES_MAX];
    size_t n_found = 0;
    for (size_t i = 0; i < n_roles; i++) {
        const char *role = roles ? roles[i] : NULL;
        if (!role || !*role)
            continue;
        /* A tenant's rows for the role replace the built-in ones, for every purpose. */
        const char *source = (*tenant && has_role_rows(v, tenant, role)) ? tenant : "";
        const view_row *row = find_row(v, source, role, purpose);
        if (!row)
            continue;
        bool dup = false;
        for (size_t j = 0; j < n_found; j++)
            dup = dup || found[j] == row;
        if (!dup)
            found[n_found++] = row;
    }
    if (n_found == 0)
        return base_fail(BASE_ERR_DENIED, "no view for the caller's roles and this purpose");

    vault_view out;
    memset(&out, 0, sizeof out);
    out.pseudonymous = true;
    const char *ids[VAULT_VIEW_ROLES_MAX], *perms[VAULT_VIEW_ROLES_MAX];
    for (size_t i = 0; i < n_found; i++) {
        out.categories |= found[i]->categories;
        out.pseudonymous = out.pseudonymous && found[i]->pseudonymous;
        ids[i] = found[i]->view_id;
        perms[i] = found[i]->permission;
    }
    size_t n_ids = sort_unique(ids, n_found), n_perms = sort_unique(perms, n_found);
    if (n_perms > VAULT_VIEW_PERMS_MAX)
        return base_fail(BASE_ERR_LIMIT, "view: more than %d permissions", VAULT_VIEW_PERMS_MAX);
    for (size_t i = 0; i < n_perms; i++) {
        size_t len = strlen(perms[i]);
        memcpy(out.permissions[i], perms[i], len + 1);
    }
    out.n_permissions = n_perms;
    size_t pos = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t len = strlen(ids[i]);
        if (pos + (i > 0) + len + 1 > sizeof out.view_id)
            return base_fail(BASE_ERR_LIMIT, "view: joined view id longer than %d bytes",
                             VAULT_VIEW_ID_BUF - 1);
        if (i > 0)
            out.view_id[pos++] = '+';
        memcpy(out.view_id + pos, ids[i], len);
        pos += len;
    }
    out.view_id[pos] = '\0';
    *ret = out;
    return BASE_OK_RESULT;
}

/* ---- Cache -------------------------------------------------------------------------------------------- */

struct vault_views_cache {
    db_pool *pool;
    int64_t refresh_ns;
    pthread_rwlock_t lock; /* guards views */
    vault_views *views;
    pthread_mutex_t reload_mu;      /* one reloader at a time */
    _Atomic int64_t next_reload_ns; /* CLOCK_MONOTONIC */
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* With reload_mu held: load, swap under the write lock, free the old rows. The next attempt is due one
 * refresh period from now whether or not this one worked. */
static base_result reload_locked(vault_views_cache *c)
{
    atomic_store(&c->next_reload_ns, mono_ns() + c->refresh_ns);
    vault_views *fresh = NULL;
    BASE_GUARD(vault_views_load(c->pool, &fresh));
    pthread_rwlock_wrlock(&c->lock);
    vault_views *old = c->views;
    c->views = fresh;
    pthread_rwlock_unlock(&c->lock);
    vault_views_free(old);
    return BASE_OK_RESULT;
}

BASE_MUST_USE base_result vault_views_cache_open(db_pool *pool, int refresh_s, vault_views_cache **ret)
{
    if (!pool)
        return base_fail(BASE_ERR_INVALID, "vault views cache: no database pool");
    if (refresh_s < 1 || refresh_s > 86400)
        return base_fail(BASE_ERR_INVALID, "vault views cache: refresh interval outside 1..86400 seconds");
    vault_views *views = NULL;
    BASE_GUARD(vault_views_load(pool, &views));
    vault_views_cache *c = calloc(1, sizeof *c);
    if (!c) {
        vault_views_free(views);
        return base_fail(BASE_ERR_NOMEM, "out of memory opening the vault views cache");
    }
    if (pthread_rwlock_init(&c->lock, NULL) != 0) {
        free(c);
        vault_views_free(views);
        return base_fail(BASE_ERR_INTERNAL, "vault views cache: rwlock init failed");
    }
    if (pthread_mutex_init(&c->reload_mu, NULL) != 0) {
        pthread_rwlock_destroy(&c->lock);
        free(c);
        vault_views_free(views);
        return base_fail(BASE_ERR_INTERNAL, "vault views cache: mutex init failed");
    }
    c->pool = pool;
    c->refresh_ns = (int64_t)refresh_s * 1000000000;
    c->views = views;
    atomic_store(&c->next_reload_ns, mono_ns() + c->refresh_ns);
    *ret = c;
    return BASE_OK_RESULT;
}

void vault_views_cache_close(vault_views_cache *c)
{
    if (!c)
        return;
    vault_views_free(c->views);
    pthread_mutex_destroy(&c->reload_mu);
    pthread_rwlock_destroy(&c->lock);
    free(c);
}

BASE_MUST_USE base_result vault_views_cache_reload(vault_views_cache *c)
{
    if (!c)
        return base_fail(BASE_ERR_INTERNAL, "vault views cache not open");
    pthread_mutex_lock(&c->reload_mu);
    base_result r = reload_locked(c);
    pthread_mutex_unlock(&c->reload_mu);
    return r;
}

BASE_MUST_USE base_result vault_views_cache_resolve(vault_views_cache *c, const char *tenant_id,
                                                    const char *const *roles, size_t n_roles, int purpose,
                                                    vault_view *ret)
{
    if (!c)
        return base_fail(BASE_ERR_INTERNAL, "vault views cache not open");
    /* Stale: one thread reloads, the others carry on with the rows they have. A failed reload keeps the
     * rows (its message is replaced by the resolve's below). */
    if (mono_ns() >= atomic_load(&c->next_reload_ns) && pthread_mutex_trylock(&c->reload_mu) == 0) {
        if (mono_ns() >= atomic_load(&c->next_reload_ns)) {
            base_result ignored = reload_locked(c);
            (void)ignored;
        }
        pthread_mutex_unlock(&c->reload_mu);
    }
    pthread_rwlock_rdlock(&c->lock);
    base_result r = vault_views_resolve(c->views, tenant_id, roles, n_roles, purpose, ret);
    pthread_rwlock_unlock(&c->lock);
    return r;
}
