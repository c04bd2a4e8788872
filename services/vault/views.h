/* Minimum-necessary views as data: the `views` table (migrations/0001_records.sql) says, for a role and a
 * purpose of use, which categories a reader sees, whether patient references are replaced by pseudonyms,
 * and which permission the caller must hold for the patient.
 *
 * Resolution for a caller (tenant, roles, purpose):
 *   - per role, the tenant's own rows for that role if it has any (for any purpose), else the built-in rows
 *     (tenant_id ''): a tenant's rows replace the built-in ones for the role as a whole, so a tenant can
 *     also take a purpose away from a role;
 *   - the rows of those sets for the purpose, one per role at most, are the contributing views;
 *   - categories: the union; pseudonymous: only if every contributing view is; permissions: each view's,
 *     distinct, sorted (the caller must hold all of them); view_id: the single view's id, or the distinct
 *     ids sorted and joined with '+' ("billing+plan_review").
 *   No contributing view: BASE_ERR_DENIED "no view for the caller's roles and this purpose".
 *
 * Messages never contain role, tenant or view names a caller sent, only limits and table facts. */
#ifndef ALMA_VAULT_VIEWS_H
#define ALMA_VAULT_VIEWS_H

#include "base/result.h"
#include "db/db.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VAULT_VIEWS_MAX        10000 /* rows loaded; more is BASE_ERR_LIMIT */
#define VAULT_VIEW_NAME_MAX    64    /* role_id, view_id (the table's CHECK) */
#define VAULT_VIEW_TENANT_MAX  63
#define VAULT_VIEW_PERM_MAX    128
#define VAULT_VIEW_PERMS_MAX   16  /* distinct permissions of one resolved view */
#define VAULT_VIEW_ID_BUF      256 /* joined view ids + NUL; more is BASE_ERR_LIMIT */
#define VAULT_VIEW_ROLES_MAX   64  /* roles of one caller considered */
#define VAULT_VIEW_PURPOSE_MAX 8   /* alma.common.v1.PurposeOfUse 1..8 */

/* Every row of the table, loaded once. Immutable after load: safe to share between threads. */
typedef struct vault_views vault_views;

/* A caller's resolved view. */
typedef struct vault_view {
    char view_id[VAULT_VIEW_ID_BUF];
    unsigned categories; /* VAULT_CATEGORY_BIT (store.h) of each category */
    bool pseudonymous;
    size_t n_permissions;
    char permissions[VAULT_VIEW_PERMS_MAX][VAULT_VIEW_PERM_MAX + 1]; /* sorted, distinct */
} vault_view;

/* Load every row of `views` (search_path of the pool = the vault schema). A row outside the limits above or
 * the table's rules: BASE_ERR_INTERNAL naming the limit. */
BASE_MUST_USE base_result vault_views_load(db_pool *pool, vault_views **ret);
void vault_views_free(vault_views *v); /* NULL ok */
size_t vault_views_count(const vault_views *v);

/* The caller's view (see the top of this file). purpose outside 1..8: BASE_ERR_INVALID "purpose: ...".
 * tenant_id NULL or "": built-in rows only. NULL or empty role strings are skipped; at most
 * VAULT_VIEW_ROLES_MAX roles are considered (more: BASE_ERR_LIMIT). */
BASE_MUST_USE base_result vault_views_resolve(const vault_views *v, const char *tenant_id,
                                              const char *const *roles, size_t n_roles, int purpose,
                                              vault_view *ret);

/* ---- The service's cache ------------------------------------------------------------------------------ */

/* The views of the running service, reloaded from the database at most every refresh_s seconds (on the
 * first resolve after that time, by one thread while the others keep resolving against the loaded rows).
 * A failed reload keeps the rows already loaded (the last policy that was read) and is tried again after
 * another refresh_s. Thread-safe (a rwlock around the rows). */
typedef struct vault_views_cache vault_views_cache;

/* Loads the rows once now: a failure here (database down, bad rows) is returned. refresh_s 1..86400.
 * `pool` is not owned and must outlive the cache. */
BASE_MUST_USE base_result vault_views_cache_open(db_pool *pool, int refresh_s, vault_views_cache **ret);
void vault_views_cache_close(vault_views_cache *c); /* NULL ok */

/* vault_views_resolve over the cached rows, reloading first when they are older than refresh_s. */
BASE_MUST_USE base_result vault_views_cache_resolve(vault_views_cache *c, const char *tenant_id,
                                                    const char *const *roles, size_t n_roles, int purpose,
                                                    vault_view *ret);

/* Reload now (an administrative change that must apply at once, tests). On failure the rows stay. */
BASE_MUST_USE base_result vault_views_cache_reload(vault_views_cache *c);

#endif
