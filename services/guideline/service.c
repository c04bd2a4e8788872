/* alma.guideline.v1.Guideline: state, settings, the bundle cache, authorisation, audit, publishing and the
 * method table (service_internal.h has the order every handler follows). */
#include "service.h"
#include "service_internal.h"

#include "base/log.h"
#include "cache/cache.h"
#include "crypto/crypto.h"
#include "daemon/daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GUIDELINE_METHOD(n) "/alma.guideline.v1.Guideline/" n
#define ACTIVE_REREAD_US    (3 * 1000000LL) /* the active bundle's name is re-read at most this often */
#define PUBLISH_PERMISSION  "guideline.content.publish"

/* ---- Settings ------------------------------------------------------------------------------------------ */

static const char *set_pg_uri, *set_pg_owner_uri, *set_pg_schema, *set_identity_addr, *set_redis_addr,
    *set_audit_addr, *set_vault_addr, *set_bundle_file;
static long set_pg_pool_size;

const cfg_setting guideline_settings[] = {
    {"pg-uri", CFG_STRING, NULL, &set_pg_uri, 1, 4096, "PostgreSQL URI of the runtime role", true},
    {"pg-owner-uri", CFG_STRING, "", &set_pg_owner_uri, 0, 4096,
     "PostgreSQL URI of the schema owner: runs the migrations and grants the runtime role its rights "
     "(empty: the runtime role migrates, development only)",
     true},
    {"pg-schema", CFG_STRING, "guideline", &set_pg_schema, 1, 63, "schema of the guideline tables", false},
    {"pg-pool-size", CFG_INT, "32", &set_pg_pool_size, 2, 256, "database connections", false},
    {"identity-addr", CFG_STRING, NULL, &set_identity_addr, 3, 300,
     "the identity service's API host:port (token verification keys)", false},
    {"redis-addr", CFG_STRING, "127.0.0.1:6379", &set_redis_addr, 3, 300,
     "Redis host:port: token revocations, care relationships and break-glass grants", false},
    {"audit-addr", CFG_STRING, NULL, &set_audit_addr, 3, 300, "the audit service's API host:port", false},
    {"vault-addr", CFG_STRING, "", &set_vault_addr, 0, 300,
     "the vault's API host:port, for reviews with from_vault (empty: from_vault is UNIMPLEMENTED)", false},
    {"bundle-file", CFG_STRING, "", &set_bundle_file, 0, 4096,
     "a bundle JSON file published and activated at start when no bundle is active (empty: none)", false},
};
const size_t guideline_setting_count = BASE_ARRAY_LEN(guideline_settings);

/* ---- Helpers ------------------------------------------------------------------------------------------- */

gsvc_service *gsvc_of(rpc_ctx *ctx)
{
    return rpc_ctx_service_state(ctx);
}

int64_t gsvc_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

Google__Protobuf__Timestamp *gsvc_timestamp(rpc_ctx *ctx, int64_t micros)
{
    if (micros <= 0)
        return NULL;
    Google__Protobuf__Timestamp *t = rpc_ctx_alloc(ctx, sizeof *t);
    if (!t)
        return NULL;
    google__protobuf__timestamp__init(t);
    t->seconds = micros / 1000000;
    t->nanos = (int32_t)(micros % 1000000) * 1000;
    return t;
}

int64_t gsvc_timestamp_us(const Google__Protobuf__Timestamp *t)
{
    if (!t || t->seconds <= 0)
        return 0;
    return t->seconds * 1000000 + t->nanos / 1000;
}

rpc_code gsvc_fail(rpc_ctx *ctx, base_result r)
{
    return rpc_fail_result(ctx, r);
}

rpc_code gsvc_check_tenant(rpc_ctx *ctx, const char *tenant_id)
{
    if (!tenant_id || !authz_valid_tenant(tenant_id))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "tenant_id: required, [a-z0-9][a-z0-9-]{1,62}");
    return RPC_OK;
}

bool gsvc_is_hex(const char *s, size_t n)
{
    if (!s)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

base_result gsvc_new_id(const char *prefix, char ret[GS_ID_BUF])
{
    uint8_t raw[16];
    BASE_GUARD(acrypto_random(raw, sizeof raw));
    size_t n = 0;
    memcpy(ret, prefix, 3);
    return acrypto_hex_encode(raw, sizeof raw, ret + 3, GS_ID_BUF - 3, &n);
}

Alma__Guideline__V1__BundleRef *gsvc_bundle_ref(rpc_ctx *ctx, const char *id, const char *version,
                                                const char *hash)
{
    Alma__Guideline__V1__BundleRef *b = rpc_ctx_alloc(ctx, sizeof *b);
    if (!b)
        return NULL;
    alma__guideline__v1__bundle_ref__init(b);
    b->bundle_id = rpc_ctx_strdup(ctx, id ? id : "");
    b->version = rpc_ctx_strdup(ctx, version ? version : "");
    b->content_hash = rpc_ctx_strdup(ctx, hash ? hash : "");
    return b;
}

/* ---- Bundle cache -------------------------------------------------------------------------------------- */

static const gsvc_loaded *cache_find(gsvc_service *s, const char *id, const char *version)
{
    for (size_t i = 0; i < s->n_loaded; i++)
        if (strcmp(s->loaded[i].bundle_id, id) == 0 && strcmp(s->loaded[i].version, version) == 0)
            return &s->loaded[i];
    return NULL;
}

void gsvc_active_invalidate(gsvc_service *s)
{
    pthread_mutex_lock(&s->mu);
    s->active_read_us = 0;
    pthread_mutex_unlock(&s->mu);
}

/* Load a stored bundle into the cache (s->mu held). */
static rpc_code cache_load(rpc_ctx *ctx, gsvc_service *s, const gs_bundle *stored, const gsvc_loaded **ret)
{
    gl_bundle *b = NULL;
    base_result r = gl_bundle_load(stored->json, stored->json_len, &b);
    if (!base_is_ok(r)) {
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "a stored bundle no longer loads", "bundle",
                 stored->bundle_id, "version", stored->version, NULL);
        return rpc_fail(ctx, RPC_DATA_LOSS, "the stored bundle no longer loads");
    }
    if (strcmp(gl_bundle_hash(b), stored->hash) != 0) {
        gl_bundle_free(b);
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "a stored bundle does not match its content hash",
                 "bundle", stored->bundle_id, "version", stored->version, NULL);
        return rpc_fail(ctx, RPC_DATA_LOSS, "the stored bundle does not match its content hash");
    }
    if (s->n_loaded == s->cap_loaded) {
        size_t cap = s->cap_loaded ? s->cap_loaded * 2 : 8;
        gsvc_loaded *grown = realloc(s->loaded, cap * sizeof *grown);
        if (!grown) {
            gl_bundle_free(b);
            return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
        }
        s->loaded = grown;
        s->cap_loaded = cap;
    }
    gsvc_loaded *l = &s->loaded[s->n_loaded];
    memset(l, 0, sizeof *l);
    snprintf(l->bundle_id, sizeof l->bundle_id, "%s", stored->bundle_id);
    snprintf(l->version, sizeof l->version, "%s", stored->version);
    snprintf(l->hash, sizeof l->hash, "%s", stored->hash);
    l->bundle = b;
    s->n_loaded++;
    *ret = l;
    return RPC_OK;
}

rpc_code gsvc_bundle(rpc_ctx *ctx, const char *bundle_id, const char *version, const gsvc_loaded **ret)
{
    gsvc_service *s = gsvc_of(ctx);
    bool active = !bundle_id || !bundle_id[0];
    char id[GS_BUNDLE_ID_MAX + 1], ver[GS_VERSION_MAX + 1];
    pthread_mutex_lock(&s->mu);
    if (active && s->active_read_us && gsvc_now_us() - s->active_read_us < ACTIVE_REREAD_US) {
        snprintf(id, sizeof id, "%s", s->active_id);
        snprintf(ver, sizeof ver, "%s", s->active_version);
        active = false;
    } else if (!active) {
        snprintf(id, sizeof id, "%s", bundle_id);
        snprintf(ver, sizeof ver, "%s", version ? version : "");
    }
    if (!active) {
        const gsvc_loaded *l = cache_find(s, id, ver);
        pthread_mutex_unlock(&s->mu);
        if (l) {
            *ret = l;
            return RPC_OK;
        }
    } else {
        pthread_mutex_unlock(&s->mu);
    }

    /* Not cached (or the active one's name is due): read the store outside the lock. */
    gs_bundle stored;
    memset(&stored, 0, sizeof stored);
    base_result r = active ? gs_bundle_active(s->pool, &stored) : gs_bundle_get(s->pool, id, ver, &stored);
    if (!base_is_ok(r)) {
        if (r.err == BASE_ERR_NOT_FOUND)
            return rpc_fail(ctx, active ? RPC_FAILED_PRECONDITION : RPC_NOT_FOUND,
                            active ? "no guideline bundle is active" : "bundle: no such bundle version");
        return gsvc_fail(ctx, r);
    }
    pthread_mutex_lock(&s->mu);
    if (active) {
        snprintf(s->active_id, sizeof s->active_id, "%s", stored.bundle_id);
        snprintf(s->active_version, sizeof s->active_version, "%s", stored.version);
        s->active_read_us = gsvc_now_us();
    }
    rpc_code code = RPC_OK;
    const gsvc_loaded *l = cache_find(s, stored.bundle_id, stored.version);
    if (!l)
        code = cache_load(ctx, s, &stored, &l);
    pthread_mutex_unlock(&s->mu);
    gs_bundle_clear(&stored);
    if (code == RPC_OK)
        *ret = l;
    return code;
}

/* ---- Audit --------------------------------------------------------------------------------------------- */

base_result gsvc_audit(rpc_ctx *ctx, const gsvc_event *e)
{
    base_result r = audit_client_record(gsvc_of(ctx)->audit, e, ctx, NULL);
    if (!base_is_ok(r))
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "audit append failed", "error", base_error_message(),
                 NULL);
    return r;
}

rpc_code gsvc_audit_or_fail(rpc_ctx *ctx, const gsvc_event *ev, const char *what)
{
    return audit_client_require(gsvc_of(ctx)->audit, ev, ctx, what);
}

rpc_code gsvc_audit_failed(rpc_ctx *ctx, const gsvc_event *intent, base_result r)
{
    rpc_code code = gsvc_fail(ctx, r);
    audit_client_record_error(gsvc_of(ctx)->audit, intent, NULL, r.err, ctx);
    return code;
}

/* ---- Authorisation ------------------------------------------------------------------------------------- */

static void audit_denial(rpc_ctx *ctx, const char *tenant_id, const authz_decision *d,
                         const authz_claims *claims, const char *permission, const char *patient_ref)
{
    if (!d->authenticated)
        return; /* no principal to record */
    bool phi = patient_ref && patient_ref[0];
    gsvc_event ev = {.tenant_id = tenant_id && authz_valid_tenant(tenant_id) ? tenant_id : claims->tid,
                     .claims = claims,
                     .action = ALMA__AUDIT__V1__ACTION__ACTION_ACCESS_DENIED,
                     .outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED,
                     .severity = phi ? ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH
                                     : ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE,
                     .patient_ref = phi ? patient_ref : NULL,
                     .resource_type = phi ? "Patient" : NULL,
                     .resource_id = phi ? patient_ref : NULL,
                     .details = (const char *const[]){"permission", permission ? permission : "", "method",
                                                      rpc_ctx_method(ctx), NULL}};
    (void)gsvc_audit(ctx, &ev); /* best effort: the call is refused either way */
}

rpc_code gsvc_require(rpc_ctx *ctx, const char *tenant_id, const char *permission, const char *patient_ref,
                      authz_claims *claims)
{
    gsvc_service *s = gsvc_of(ctx);
    authz_decision d;
    authz_resource res = {.tenant_id = tenant_id, .patient_ref = patient_ref};
    memset(claims, 0, sizeof *claims);
    base_result r = authz_authorize(s->az, rpc_ctx_authorization(ctx), permission, &res, claims, &d);
    if (base_is_ok(r))
        return RPC_OK;
    if (d.code == AUTHZ_PERMISSION_DENIED)
        audit_denial(ctx, tenant_id, &d, claims, permission, patient_ref);
    return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
}

rpc_code gsvc_require_any(rpc_ctx *ctx, const char *tenant_id, const char *const *perms, authz_claims *claims)
{
    gsvc_service *s = gsvc_of(ctx);
    authz_decision d;
    memset(claims, 0, sizeof *claims);
    authz_resource res = {.tenant_id = tenant_id};
    for (size_t i = 0; perms[i]; i++) {
        base_result r = authz_authorize(s->az, rpc_ctx_authorization(ctx), perms[i], &res, claims, &d);
        if (base_is_ok(r))
            return RPC_OK;
        if (d.code != AUTHZ_PERMISSION_DENIED)
            return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
    }
    audit_denial(ctx, tenant_id, &d, claims, perms[0], NULL);
    return rpc_fail(ctx, RPC_PERMISSION_DENIED, "%s", d.reason);
}

/* ---- PublishBundle, ListBundles ------------------------------------------------------------------------ */

static rpc_code bundle_info(rpc_ctx *ctx, const gs_bundle *b, const gl_bundle *loaded,
                            Alma__Guideline__V1__BundleInfo *out)
{
    out->bundle = gsvc_bundle_ref(ctx, b->bundle_id, b->version, b->hash);
    out->active = b->active;
    out->publish_time = gsvc_timestamp(ctx, b->published_us);
    out->published_by = rpc_ctx_strdup(ctx, b->published_by);
    if (loaded) {
        out->title = rpc_ctx_strdup(ctx, gl_bundle_title(loaded));
        size_t n = gl_bundle_pathway_count(loaded);
        out->pathway_ids = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *out->pathway_ids);
        if (!out->pathway_ids)
            return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < n; i++)
            out->pathway_ids[i] = rpc_ctx_strdup(ctx, gl_bundle_pathway_id(loaded, i));
        out->n_pathway_ids = n;
    }
    if (!out->bundle)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return RPC_OK;
}

rpc_code gsvc_h_publish_bundle(rpc_ctx *ctx, const void *vreq, void *vresp)
{
    const Alma__Guideline__V1__PublishBundleRequest *req = vreq;
    Alma__Guideline__V1__BundleInfo *resp = vresp;
    gsvc_service *s = gsvc_of(ctx);

    /* Bundles are shared by every tenant: the permission is checked in the caller's own tenant. */
    authz_claims claims;
    authz_decision d;
    memset(&claims, 0, sizeof claims);
    if (!base_is_ok(authz_authenticate(s->az, rpc_ctx_authorization(ctx), &claims, &d)))
        return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
    char tenant[sizeof claims.tid];
    snprintf(tenant, sizeof tenant, "%s", claims.tid);
    rpc_code code = gsvc_require(ctx, tenant, PUBLISH_PERMISSION, NULL, &claims);
    if (code != RPC_OK)
        return code;

    size_t len = req->bundle_json ? strlen(req->bundle_json) : 0;
    if (len == 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "bundle_json: required");
    if (len > GL_BUNDLE_MAX_BYTES)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "bundle_json: at most %d bytes", GL_BUNDLE_MAX_BYTES);
    gl_bundle *b = NULL;
    base_result r = gl_bundle_load(req->bundle_json, len, &b);
    if (!base_is_ok(r)) /* bundles are content, not PHI: the loader's message names the rule */
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "bundle_json: %s", base_error_message());
    char id[GS_BUNDLE_ID_MAX + 1], version[GS_VERSION_MAX + 1], hash[GS_HASH_LEN + 1];
    snprintf(id, sizeof id, "%s", gl_bundle_id(b));
    snprintf(version, sizeof version, "%s", gl_bundle_version(b));
    snprintf(hash, sizeof hash, "%s", gl_bundle_hash(b));
    gl_bundle_free(b);

    char *resource = rpc_ctx_printf(ctx, "%s:%s", id, version);
    gsvc_event ev = {.tenant_id = tenant,
                     .claims = &claims,
                     .action = ALMA__AUDIT__V1__ACTION__ACTION_ADMIN,
                     .resource_type = "GuidelineBundle",
                     .resource_id = resource,
                     .details = (const char *const[]){"change", "publish_bundle", "content_hash", hash,
                                                      "activate", req->activate ? "true" : "false", NULL}};
    code = gsvc_audit_or_fail(ctx, &ev, "nothing was published");
    if (code != RPC_OK)
        return code;
    bool created = false;
    r = gs_bundle_publish(s->pool, id, version, hash, req->bundle_json, len, req->activate, claims.sub,
                          &created);
    if (!base_is_ok(r))
        return gsvc_audit_failed(ctx, &ev, r);
    if (req->activate)
        gsvc_active_invalidate(s);

    gs_bundle stored;
    memset(&stored, 0, sizeof stored);
    r = gs_bundle_get(s->pool, id, version, &stored);
    if (!base_is_ok(r))
        return gsvc_fail(ctx, r);
    const gsvc_loaded *l = NULL;
    code = gsvc_bundle(ctx, id, version, &l);
    if (code == RPC_OK)
        code = bundle_info(ctx, &stored, l->bundle, resp);
    gs_bundle_clear(&stored);
    return code;
}

rpc_code gsvc_h_list_bundles(rpc_ctx *ctx, const void *vreq, void *vresp)
{
    (void)vreq;
    Alma__Guideline__V1__ListBundlesResponse *resp = vresp;
    gsvc_service *s = gsvc_of(ctx);
    authz_claims claims;
    authz_decision d;
    memset(&claims, 0, sizeof claims);
    if (!base_is_ok(authz_authenticate(s->az, rpc_ctx_authorization(ctx), &claims, &d)))
        return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
    gs_bundle *bs = NULL;
    size_t n = 0;
    base_result r = gs_bundles_list(s->pool, &bs, &n);
    if (!base_is_ok(r))
        return gsvc_fail(ctx, r);
    rpc_code code = RPC_OK;
    resp->bundles = rpc_ctx_alloc(ctx, (n ? n : 1) * sizeof *resp->bundles);
    if (!resp->bundles)
        code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; code == RPC_OK && i < n; i++) {
        Alma__Guideline__V1__BundleInfo *info = rpc_ctx_alloc(ctx, sizeof *info);
        if (!info) {
            code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        alma__guideline__v1__bundle_info__init(info);
        const gsvc_loaded *l = NULL;
        code = gsvc_bundle(ctx, bs[i].bundle_id, bs[i].version, &l);
        if (code == RPC_OK)
            code = bundle_info(ctx, &bs[i], l->bundle, info);
        resp->bundles[resp->n_bundles++] = info;
    }
    gs_bundles_free(bs, n);
    return code;
}

/* ---- Life cycle ---------------------------------------------------------------------------------------- */

static base_result migrate(db_pool *runtime)
{
    if (!set_pg_owner_uri[0])
        return gs_migrate(runtime, set_pg_schema);
    return db_migrate_as_owner(runtime, set_pg_owner_uri, set_pg_schema, "alma-guideline-migrate",
                               gs_migrate);
}

static base_result read_file(const char *path, char **ret, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return base_fail(BASE_ERR_IO, "cannot open the bundle file (bundle-file): %s", strerror(errno));
    char *buf = malloc(GL_BUNDLE_MAX_BYTES + 2);
    if (!buf) {
        fclose(f);
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, GL_BUNDLE_MAX_BYTES + 1, f);
    bool err = ferror(f) != 0;
    fclose(f);
    if (err || n > GL_BUNDLE_MAX_BYTES) {
        free(buf);
        return base_fail(err ? BASE_ERR_IO : BASE_ERR_LIMIT, "the bundle file (bundle-file) is %s",
                         err ? "unreadable" : "larger than 1 MiB");
    }
    buf[n] = '\0';
    *ret = buf;
    *ret_len = n;
    return BASE_OK_RESULT;
}

/* The bundle-file setting: published and activated (actor GSVC_SYSTEM_ACTOR) when no bundle is active. */
static base_result seed_bundle(gsvc_service *s)
{
    if (!set_bundle_file[0])
        return BASE_OK_RESULT;
    gs_bundle active;
    memset(&active, 0, sizeof active);
    base_result r = gs_bundle_active(s->pool, &active);
    gs_bundle_clear(&active);
    if (base_is_ok(r) || r.err != BASE_ERR_NOT_FOUND)
        return r;
    char *text = NULL;
    size_t len = 0;
    BASE_GUARD(read_file(set_bundle_file, &text, &len));
    gl_bundle *b = NULL;
    r = gl_bundle_load(text, len, &b);
    if (!base_is_ok(r)) {
        free(text);
        return base_fail(r.err, "the bundle file (bundle-file) does not load: %s", base_error_message());
    }
    bool created = false;
    r = gs_bundle_publish(s->pool, gl_bundle_id(b), gl_bundle_version(b), gl_bundle_hash(b), text, len, true,
                          GSVC_SYSTEM_ACTOR, &created);
    if (base_is_ok(r))
        log_emit(LOG_INFO, NULL, "bundle from bundle-file activated", "bundle", gl_bundle_id(b), "version",
                 gl_bundle_version(b), NULL);
    gl_bundle_free(b);
    free(text);
    return r;
}

base_result guideline_service_init(void **ret_state)
{
    gsvc_service *s = calloc(1, sizeof *s);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    base_result r;
    db_pool_config pcfg = db_pool_config_default(set_pg_uri, (int)set_pg_pool_size, 5000);
    pcfg.search_path = set_pg_schema;
    pcfg.application_name = "alma-guideline";
    BASE_GUARD_GOTO(r, db_pool_create_config(&pcfg, &s->pool), fail);
    BASE_GUARD_GOTO(r, migrate(s->pool), fail);
    BASE_GUARD_GOTO(r, seed_bundle(s), fail);
    BASE_GUARD_GOTO(r, gs_writer_open(s->pool, &s->writer), fail);

    rpc_client_tls tls = {.files = daemon_tls_files()};
    BASE_GUARD_GOTO(r, authz_remote_open(set_identity_addr, set_redis_addr, &tls, 5000, &s->remote), fail);
    s->az = authz_remote_authz(s->remote);
    BASE_GUARD_GOTO(r, audit_client_open(set_audit_addr, &tls, 5000, &s->audit), fail);
    if (set_vault_addr[0])
        BASE_GUARD_GOTO(r, rpc_channel_open(set_vault_addr, &tls, &s->vault), fail);
    *ret_state = s;
    return BASE_OK_RESULT;
fail:
    guideline_service_fini(s);
    return r;
}

void guideline_service_fini(void *state)
{
    gsvc_service *s = state;
    if (!s)
        return;
    authz_remote_close(s->remote);
    audit_client_close(s->audit);
    rpc_channel_close(s->vault);
    gs_writer_close(s->writer);
    db_pool_destroy(s->pool);
    for (size_t i = 0; i < s->n_loaded; i++)
        gl_bundle_free(s->loaded[i].bundle);
    free(s->loaded);
    pthread_mutex_destroy(&s->mu);
    cache_thread_conn_release();
    free(s);
}

/* ---- Method table -------------------------------------------------------------------------------------- */

/* Clinicians through the gateway (and its CDS Hooks endpoint), operators through alma-cli, tests and the
 * load generator. Every method also checks the caller's token. */
static const char *const callers[] = {"gateway", "alma-cli", "test-client", "bench", NULL};

#define UNARY(nm, req, resp, fn)                                                                             \
    {                                                                                                        \
        .name = GUIDELINE_METHOD(nm), .kind = RPC_KIND_UNARY,                                                \
        .request = &alma__guideline__v1__##req##__descriptor,                                                \
        .response = &alma__guideline__v1__##resp##__descriptor, .unary = fn, .allowed_peers = callers        \
    }

const rpc_method guideline_methods[] = {
    UNARY("ReviewReferral", review_referral_request, review, gsvc_h_review_referral),
    UNARY("RecordDecision", record_decision_request, decision, gsvc_h_record_decision),
    UNARY("GetReferralHistory", get_referral_history_request, referral_history, gsvc_h_referral_history),
    UNARY("PublishBundle", publish_bundle_request, bundle_info, gsvc_h_publish_bundle),
    UNARY("ListBundles", list_bundles_request, list_bundles_response, gsvc_h_list_bundles),
    UNARY("WhatIf", what_if_request, what_if_report, gsvc_h_what_if),
    UNARY("GetConcordance", get_concordance_request, concordance_report, gsvc_h_concordance),
};
const size_t guideline_method_count = BASE_ARRAY_LEN(guideline_methods);
