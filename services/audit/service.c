/* alma.audit.v1.Audit: the handlers (service.h says who may call what). */
#include "service.h"

#include "audit/v1/audit.pb-c.h"
#include "authz/authz.h"
#include "authz/remote.h"
#include "base/log.h"
#include "daemon/daemon.h"
#include "checkpoint.h"
#include "crypto/crypto.h"
#include "entry.h"
#include "entry_decode.h"
#include "export_file.h"
#include "reader.h"
#include "store.h"
#include "validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIST_DEFAULT_PAGE     100
#define STREAM_PAGE           500
#define MAX_DISCLOSURES       10000
#define ACCOUNTING_YEARS      6
#define PAGE_TOKEN_PREFIX     "c1."
#define SCRATCH_BLOCK         (64 * 1024)
#define AUDIT_METHOD(name)    "/alma.audit.v1.Audit/" name
#define MICROS_PER_SECOND     INT64_C(1000000)
#define MAX_TIMESTAMP_SECONDS INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

/* ---- Settings ------------------------------------------------------------------------------------------ */

static const char *set_pg_uri, *set_pg_owner_uri, *set_pg_schema, *set_signing_key, *set_origin,
    *set_key_name, *set_identity_addr, *set_redis_addr, *set_previous_vkeys;
static long set_pg_pool_size, set_max_batch, set_batch_wait_us, set_checkpoint_interval_ms;

const cfg_setting audit_settings[] = {
    {"pg-uri", CFG_STRING, NULL, &set_pg_uri, 1, 4096,
     "PostgreSQL URI of the runtime role (INSERT and SELECT on the log only)", true},
    {"pg-owner-uri", CFG_STRING, "", &set_pg_owner_uri, 0, 4096,
     "PostgreSQL URI of the schema owner: runs the migrations and grants the runtime role its rights "
     "(empty: the runtime role migrates, development only)",
     true},
    {"pg-schema", CFG_STRING, "audit", &set_pg_schema, 1, 63, "schema holding the log", false},
    {"pg-pool-size", CFG_INT, "16", &set_pg_pool_size, 2, 256, "database connections", false},
    {"signing-key", CFG_STRING, NULL, &set_signing_key, 1, 4096,
     "PEM file with the log's Ed25519 private key (signs checkpoints)", false},
    {"origin", CFG_STRING, "alma.local/audit", &set_origin, 1, 255,
     "checkpoint origin line: names this log (one per deployment or shard)", false},
    {"key-name", CFG_STRING, "", &set_key_name, 0, 255, "signed-note key name (empty: the origin)", false},
    {"max-batch", CFG_INT, "256", &set_max_batch, 1, AUDIT_STORE_MAX_BATCH, "events per group commit", false},
    {"batch-wait-us", CFG_INT, "0", &set_batch_wait_us, 0, 1000000,
     "how long the committer waits for more events before committing a partial batch (0: commit what is "
     "queued; appends arriving during a commit form the next batch)",
     false},
    {"checkpoint-interval-ms", CFG_INT, "1000", &set_checkpoint_interval_ms, 10, 3600000,
     "at most one signed checkpoint per interval (after appends)", false},
    {"previous-verifier-keys", CFG_STRING, "", &set_previous_vkeys, 0, 4096,
     "key rotation: comma-separated verifier keys of earlier signing keys, whose checkpoints still verify",
     false},
    {"identity-addr", CFG_STRING, "", &set_identity_addr, 0, 300,
     "the identity service's API host:port: when set, reads (queries, exports, accounting) need the caller's "
     "access token with audit.read in the tenant asked about; empty: the caller's service identity alone "
     "(development)",
     false},
    {"redis-addr", CFG_STRING, "127.0.0.1:6379", &set_redis_addr, 3, 300,
     "Redis host:port of the token revocation feed (with identity-addr)", false},
};
const size_t audit_setting_count = BASE_ARRAY_LEN(audit_settings);

/* ---- State --------------------------------------------------------------------------------------------- */

typedef struct audit_service {
    authz_remote *remote; /* NULL without identity-addr */
    authz *az;            /* its authorizer */
    db_pool *pool;
    acrypto_ed25519_key *key;
    audit_store *store;
    char *vkey;
    char *key_name; /* the signed-note key name of checkpoints and export statements */
} audit_service;

static audit_service *svc_of(rpc_ctx *ctx)
{
    return rpc_ctx_service_state(ctx);
}

/* Token checks for reads, when identity-addr is set. */
static base_result open_authz(audit_service *s)
{
    if (!set_identity_addr[0])
        return BASE_OK_RESULT;
    rpc_client_tls tls = {.files = daemon_tls_files()};
    BASE_GUARD(authz_remote_open(set_identity_addr, set_redis_addr, &tls, 5000, &s->remote));
    s->az = authz_remote_authz(s->remote);
    return BASE_OK_RESULT;
}

base_result audit_service_init(void **ret_state)
{
    audit_service *s = calloc(1, sizeof *s);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    base_result r = acrypto_ed25519_private_from_pem_file(set_signing_key, &s->key);
    if (!base_is_ok(r)) {
        r = base_fail(r.err, "cannot load the signing key (ALMA_SIGNING_KEY): %s", base_error_message());
        goto fail;
    }
    db_pool_config pcfg = db_pool_config_default(set_pg_uri, (int)set_pg_pool_size, 5000);
    pcfg.search_path = set_pg_schema;
    pcfg.application_name = "alma-audit";
    BASE_GUARD_GOTO(r, db_pool_create_config(&pcfg, &s->pool), fail);
    bool owner = set_pg_owner_uri[0] != '\0';
    if (owner)
        BASE_GUARD_GOTO(r,
                        db_migrate_as_owner(s->pool, set_pg_owner_uri, set_pg_schema, "alma-audit-migrate",
                                            audit_store_migrate),
                        fail);
    const char *key_name = set_key_name[0] ? set_key_name : set_origin;
    s->key_name = strdup(key_name);
    if (!s->key_name) {
        r = base_fail(BASE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    audit_store_config scfg = {
        .pool = s->pool,
        .schema = set_pg_schema,
        .origin = set_origin,
        .key = s->key,
        .key_name = key_name,
        .max_batch = (size_t)set_max_batch,
        .max_wait_us = (int)set_batch_wait_us,
        .checkpoint_interval_ms = (int)set_checkpoint_interval_ms,
        .skip_migrations = owner,
    };
    /* previous-verifier-keys: "vkey,vkey,..." (a vkey has no comma). */
    char prev_buf[4097];
    const char *prev[AUDIT_STORE_MAX_PREVIOUS_KEYS];
    size_t n_prev = 0;
    snprintf(prev_buf, sizeof prev_buf, "%s", set_previous_vkeys);
    for (char *p = prev_buf, *next = NULL; *p; p = next) {
        next = strchr(p, ',');
        if (next)
            *next++ = '\0';
        else
            next = p + strlen(p);
        if (!*p)
            continue;
        if (n_prev == AUDIT_STORE_MAX_PREVIOUS_KEYS) {
            r = base_fail(BASE_ERR_INVALID, "previous-verifier-keys: at most %d keys",
                          AUDIT_STORE_MAX_PREVIOUS_KEYS);
            goto fail;
        }
        prev[n_prev++] = p;
    }
    scfg.previous_vkeys = prev;
    scfg.n_previous_vkeys = n_prev;
    BASE_GUARD_GOTO(r, audit_store_open(&scfg, &s->store), fail);
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    size_t vlen = 0;
    BASE_GUARD_GOTO(r, acrypto_ed25519_public_raw(s->key, pub), fail);
    BASE_GUARD_GOTO(r, audit_note_vkey_format(key_name, pub, &s->vkey, &vlen), fail);
    BASE_GUARD_GOTO(r, open_authz(s), fail);
    log_emit(LOG_INFO, NULL, "audit log open", "component", "store", NULL);
    *ret_state = s;
    return BASE_OK_RESULT;
fail:
    audit_service_fini(s);
    return r;
}

void audit_service_fini(void *state)
{
    audit_service *s = state;
    if (!s)
        return;
    authz_remote_close(s->remote);
    audit_store_close(s->store);
    db_pool_destroy(s->pool);
    acrypto_ed25519_free(s->key);
    free(s->vkey);
    free(s->key_name);
    free(s);
}

/* ---- Helpers ------------------------------------------------------------------------------------------- */

static void *arena_alloc(void *ctx, size_t n)
{
    return rpc_ctx_alloc(ctx, n);
}

/* A scratch allocator for streams: reset after every message, so a long stream does not grow the call's
 * arena. */
typedef struct scratch_block {
    struct scratch_block *next;
    size_t used, cap;
    max_align_t data[];
} scratch_block;

typedef struct scratch {
    scratch_block *head;
} scratch;

static void *scratch_alloc(void *ctx, size_t n)
{
    scratch *sc = ctx;
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    scratch_block *b = sc->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > SCRATCH_BLOCK ? n : SCRATCH_BLOCK;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = sc->head;
        b->used = 0;
        b->cap = cap;
        sc->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

static void scratch_reset(scratch *sc)
{
    while (sc->head) {
        scratch_block *next = sc->head->next;
        free(sc->head);
        sc->head = next;
    }
}

static Google__Protobuf__Timestamp *timestamp_new(void *(*alloc)(void *, size_t), void *ctx, int64_t micros)
{
    Google__Protobuf__Timestamp *t = alloc(ctx, sizeof *t);
    if (!t)
        return NULL;
    google__protobuf__timestamp__init(t);
    int64_t secs = micros / MICROS_PER_SECOND, rem = micros % MICROS_PER_SECOND;
    if (rem < 0) {
        secs--;
        rem += MICROS_PER_SECOND;
    }
    t->seconds = secs;
    t->nanos = (int32_t)(rem * 1000);
    return t;
}

static bool timestamp_micros(const Google__Protobuf__Timestamp *t, int64_t *ret)
{
    if (t->seconds < 0 || t->seconds > MAX_TIMESTAMP_SECONDS || t->nanos < 0 || t->nanos > 999999999)
        return false;
    *ret = t->seconds * MICROS_PER_SECOND + t->nanos / 1000;
    return true;
}

static int64_t now_micros(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * MICROS_PER_SECOND + ts.tv_nsec / 1000;
}

static ProtobufCBinaryData bytes_copy(void *(*alloc)(void *, size_t), void *ctx, const void *p, size_t n)
{
    ProtobufCBinaryData b = {0, NULL};
    uint8_t *d = alloc(ctx, n);
    if (d) {
        memcpy(d, p, n);
        b.data = d;
        b.len = n;
    }
    return b;
}

/* The caller's principal as the audit log records it when a service acts on its own behalf. */
static const char *caller_principal(rpc_ctx *ctx)
{
    const char *svc = rpc_ctx_peer_service(ctx);
    return rpc_ctx_printf(ctx, "svc:%s", svc && svc[0] ? svc : "anonymous");
}

/* ---- Appends ------------------------------------------------------------------------------------------- */

typedef struct encode_arg {
    const Alma__Audit__V1__EventInput *ev;
    const char *service_identity;
} encode_arg;

static base_result encode_event(void *arg, uint64_t seq, int64_t time_micros, char **ret_entry,
                                size_t *ret_len)
{
    const encode_arg *a = arg;
    return audit_entry_encode(a->ev, seq, time_micros, a->service_identity, ret_entry, ret_len);
}

static audit_store_event store_event(const Alma__Audit__V1__EventInput *ev, encode_arg *arg)
{
    return (audit_store_event){
        .tenant_id = ev->tenant_id,
        .action = (int)ev->action,
        .purpose = (int)ev->purpose,
        .outcome = (int)ev->outcome,
        .patient_ref = ev->patient_ref && ev->patient_ref[0] ? ev->patient_ref : NULL,
        .actor_id = ev->actor->principal_id,
        .encode = encode_event,
        .encode_arg = arg,
    };
}

static void fill_append_response(rpc_ctx *ctx, Alma__Audit__V1__AppendEventResponse *resp,
                                 const audit_store_result *res)
{
    resp->sequence = res->seq;
    resp->leaf_hash = bytes_copy(arena_alloc, ctx, res->leaf, AUDIT_MERKLE_HASH_LEN);
    resp->time = timestamp_new(arena_alloc, ctx, res->time_micros);
}

static rpc_code h_append_event(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Audit__V1__AppendEventRequest *req = reqp;
    if (!req->event)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "event is required");
    base_result r = audit_validate_event(req->event);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    encode_arg arg = {req->event, rpc_ctx_peer_id(ctx)};
    audit_store_event ev = store_event(req->event, &arg);
    audit_store_result res;
    r = audit_store_append_all(svc_of(ctx)->store, &ev, 1, &res);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    fill_append_response(ctx, respp, &res);
    return RPC_OK;
}

static rpc_code h_append_events(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Audit__V1__AppendEventsRequest *req = reqp;
    Alma__Audit__V1__AppendEventsResponse *resp = respp;
    size_t n = req->n_events;
    if (n == 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "events must hold at least one event");
    if (n > AUDIT_MAX_BATCH)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "events must hold at most %d events", AUDIT_MAX_BATCH);
    /* Validate all before storing any: one bad event rejects the call and nothing is stored. */
    for (size_t i = 0; i < n; i++) {
        base_result r = audit_validate_event(req->events[i]);
        if (!base_is_ok(r))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "events[%zu]: %s", i, base_error_message());
    }
    encode_arg *args = rpc_ctx_alloc(ctx, n * sizeof *args);
    audit_store_event *evs = rpc_ctx_alloc(ctx, n * sizeof *evs);
    audit_store_result *res = rpc_ctx_alloc(ctx, n * sizeof *res);
    resp->results = rpc_ctx_alloc(ctx, n * sizeof *resp->results);
    if (!args || !evs || !res || !resp->results)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "request too large");
    for (size_t i = 0; i < n; i++) {
        args[i] = (encode_arg){req->events[i], rpc_ctx_peer_id(ctx)};
        evs[i] = store_event(req->events[i], &args[i]);
    }
    base_result r = audit_store_append_all(svc_of(ctx)->store, evs, n, res);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    for (size_t i = 0; i < n; i++) {
        Alma__Audit__V1__AppendEventResponse *one = rpc_ctx_alloc(ctx, sizeof *one);
        if (!one)
            return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "response too large");
        alma__audit__v1__append_event_response__init(one);
        fill_append_response(ctx, one, &res[i]);
        resp->results[i] = one;
    }
    resp->n_results = n;
    return RPC_OK;
}

/* Appends the service's own record of a read (a query, an export, an accounting) before any result goes
 * out. No PHI: the filter's field names, never their values; the patient appears as its pseudonymous
 * reference, which is what the log holds anyway. */
static rpc_code audit_read_access(rpc_ctx *ctx, const Alma__Audit__V1__EventFilter *f,
                                  const char *patient_ref, Alma__Audit__V1__Action action, const char *what)
{
    Alma__Audit__V1__Actor actor = ALMA__AUDIT__V1__ACTOR__INIT;
    actor.principal_id = (char *)caller_principal(ctx);
    audit_service *svc = svc_of(ctx);
    authz_claims claims;
    authz_decision d;
    bool denied = false;
    char *roles[16];
    if (svc->az) {
        /* Only roles with audit.read, in the tenant asked about; the denial is recorded too. */
        authz_resource res = {.tenant_id = f ? f->tenant_id : ""};
        base_result ar =
            authz_authorize(svc->az, rpc_ctx_authorization(ctx), "audit.read", &res, &claims, &d);
        if (!base_is_ok(ar) && (d.code != AUTHZ_PERMISSION_DENIED || !d.authenticated))
            return rpc_fail(ctx, (rpc_code)d.code, "%s", d.reason);
        denied = !base_is_ok(ar);
        actor.principal_id = rpc_ctx_strdup(ctx, claims.sub);
        for (size_t i = 0; i < claims.role_count && i < 16; i++)
            roles[i] = claims.roles[i];
        actor.roles = roles;
        actor.n_roles = claims.role_count < 16 ? claims.role_count : 16;
    }
    Alma__Audit__V1__EventInput ev = ALMA__AUDIT__V1__EVENT_INPUT__INIT;
    ev.tenant_id = f ? f->tenant_id : (char *)"";
    ev.actor = &actor;
    ev.action = action;
    ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_OPERATIONS;
    ev.outcome =
        denied ? ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED : ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    ev.severity = denied || action == ALMA__AUDIT__V1__ACTION__ACTION_EXPORT
                      ? ALMA__AUDIT__V1__SEVERITY__SEVERITY_HIGH
                      : ALMA__AUDIT__V1__SEVERITY__SEVERITY_NOTICE;
    ev.patient_ref = (char *)(patient_ref ? patient_ref : "");
    ev.resource_type = (char *)"AuditEvent";
    ev.request_id = (char *)rpc_ctx_request_id(ctx);
    Alma__Audit__V1__EventInput__DetailsEntry d_method = ALMA__AUDIT__V1__EVENT_INPUT__DETAILS_ENTRY__INIT;
    d_method.key = (char *)"read";
    d_method.value = (char *)what;
    Alma__Audit__V1__EventInput__DetailsEntry d_filter = ALMA__AUDIT__V1__EVENT_INPUT__DETAILS_ENTRY__INIT;
    char fields[160] = "";
    if (f) {
        snprintf(fields, sizeof fields, "%s%s%s%s%s%s%s", f->patient_ref[0] ? "patient_ref " : "",
                 f->actor_principal_id[0] ? "actor " : "", f->action ? "action " : "",
                 f->purpose ? "purpose " : "", f->outcome ? "outcome " : "",
                 f->start_time ? "start_time " : "", f->end_time ? "end_time" : "");
    }
    d_filter.key = (char *)"filter";
    d_filter.value = fields;
    Alma__Audit__V1__EventInput__DetailsEntry *details[] = {&d_method, &d_filter};
    ev.details = details;
    ev.n_details = 2;
    base_result r = audit_validate_event(&ev);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    encode_arg arg = {&ev, rpc_ctx_peer_id(ctx)};
    audit_store_event sev = store_event(&ev, &arg);
    audit_store_result res;
    r = audit_store_append_all(svc_of(ctx)->store, &sev, 1, &res);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    if (denied)
        return rpc_fail(ctx, RPC_PERMISSION_DENIED, "%s", d.reason);
    return RPC_OK;
}

/* ---- Checkpoints, proofs, verification ---------------------------------------------------------------- */

static rpc_code fill_checkpoint(rpc_ctx *ctx, Alma__Audit__V1__Checkpoint *out,
                                const audit_read_checkpoint *ck)
{
    out->tree_size = ck->tree_size;
    out->root_hash = bytes_copy(arena_alloc, ctx, ck->root, AUDIT_MERKLE_HASH_LEN);
    out->time = timestamp_new(arena_alloc, ctx, ck->signed_at_micros);
    out->signed_note = rpc_ctx_strdup(ctx, ck->signed_note);
    out->verifier_key = svc_of(ctx)->vkey;
    if (!out->root_hash.data || !out->time || !out->signed_note)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "response too large");
    return RPC_OK;
}

/* The latest checkpoint; with `fresh`, first sign one of everything committed so far. */
static rpc_code latest_checkpoint(rpc_ctx *ctx, bool fresh, audit_read_checkpoint *ck)
{
    audit_service *s = svc_of(ctx);
    base_result r = fresh ? audit_store_checkpoint_now(s->store) : BASE_OK_RESULT;
    if (base_is_ok(r))
        r = audit_read_latest_checkpoint(s->pool, ck);
    if (!base_is_ok(r) && r.err == BASE_ERR_NOT_FOUND && !fresh) {
        r = audit_store_checkpoint_now(s->store);
        if (base_is_ok(r))
            r = audit_read_latest_checkpoint(s->pool, ck);
    }
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    return RPC_OK;
}

static rpc_code h_get_checkpoint(rpc_ctx *ctx, const void *reqp, void *respp)
{
    (void)reqp;
    audit_read_checkpoint ck = {0};
    rpc_code code = latest_checkpoint(ctx, false, &ck);
    if (code == RPC_OK)
        code = fill_checkpoint(ctx, respp, &ck);
    audit_read_checkpoint_clear(&ck);
    return code;
}

static rpc_code proof_out(rpc_ctx *ctx, const audit_merkle_proof *p, size_t *ret_n, ProtobufCBinaryData **ret)
{
    ProtobufCBinaryData *h = rpc_ctx_alloc(ctx, (p->len ? p->len : 1) * sizeof *h);
    if (!h)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "response too large");
    for (size_t i = 0; i < p->len; i++) {
        h[i] = bytes_copy(arena_alloc, ctx, p->hashes[i], AUDIT_MERKLE_HASH_LEN);
        if (!h[i].data)
            return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "response too large");
    }
    *ret = h;
    *ret_n = p->len;
    return RPC_OK;
}

static rpc_code proof_fail(rpc_ctx *ctx, base_result r)
{
    if (r.err == BASE_ERR_NOT_FOUND)
        return rpc_fail(ctx, RPC_OUT_OF_RANGE, "tree size is beyond the committed log");
    return rpc_fail_result(ctx, r);
}

static rpc_code h_inclusion_proof(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Audit__V1__GetInclusionProofRequest *req = reqp;
    Alma__Audit__V1__InclusionProof *resp = respp;
    if (req->sequence >= req->tree_size)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "sequence must be below tree_size");
    audit_merkle_proof p;
    base_result r = audit_read_inclusion_proof(svc_of(ctx)->pool, NULL, req->sequence, req->tree_size, &p);
    if (!base_is_ok(r))
        return proof_fail(ctx, r);
    resp->sequence = req->sequence;
    resp->tree_size = req->tree_size;
    return proof_out(ctx, &p, &resp->n_hashes, &resp->hashes);
}

static rpc_code h_consistency_proof(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Audit__V1__GetConsistencyProofRequest *req = reqp;
    Alma__Audit__V1__ConsistencyProof *resp = respp;
    if (req->first_size > req->second_size)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "first_size must not exceed second_size");
    audit_merkle_proof p;
    base_result r = audit_read_consistency_proof(svc_of(ctx)->pool, req->first_size, req->second_size, &p);
    if (!base_is_ok(r))
        return proof_fail(ctx, r);
    resp->first_size = req->first_size;
    resp->second_size = req->second_size;
    return proof_out(ctx, &p, &resp->n_hashes, &resp->hashes);
}

static rpc_code h_verify_log(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Audit__V1__VerifyLogRequest *req = reqp;
    Alma__Audit__V1__VerifyLogResponse *resp = respp;
    uint64_t end = req->end ? req->end : UINT64_MAX;
    if (req->start > end)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "start must not exceed end");
    audit_verify_report rep;
    base_result r = audit_store_verify(svc_of(ctx)->store, req->start, end, &rep);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    resp->ok = rep.problem == AUDIT_VERIFY_OK;
    resp->verified_through = rep.leaves_checked;
    resp->first_bad_sequence = resp->ok ? 0 : rep.first_bad_seq;
    resp->problem = (char *)(resp->ok ? "" : rep.what);
    if (!resp->ok) {
        char seq[24];
        snprintf(seq, sizeof seq, "%" PRIu64, rep.first_bad_seq);
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "audit log verification failed", "sequence", seq,
                 "problem", rep.what, NULL);
    }
    return RPC_OK;
}

/* ---- Queries ------------------------------------------------------------------------------------------- */

static bool enum_known(const ProtobufCEnumDescriptor *d, int v)
{
    return v == 0 || protobuf_c_enum_descriptor_get_value(d, v) != NULL;
}

/* The filter's checks, then the reader's query (limit and cursor set by the caller). */
static rpc_code filter_query(rpc_ctx *ctx, const Alma__Audit__V1__EventFilter *f, audit_query *q)
{
    if (!f || !f->tenant_id[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.tenant_id is required");
    if (strlen(f->tenant_id) > AUDIT_MAX_TENANT)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.tenant_id is longer than %d bytes",
                        AUDIT_MAX_TENANT);
    if (f->patient_ref[0] && !audit_is_patient_ref(f->patient_ref))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "filter.patient_ref must be a pseudonymous reference (pt_ + 32 hex digits)");
    if (strlen(f->actor_principal_id) > AUDIT_MAX_ID)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.actor_principal_id is longer than %d bytes",
                        AUDIT_MAX_ID);
    if (!enum_known(&alma__audit__v1__action__descriptor, (int)f->action))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.action is not a known action");
    if (!enum_known(&alma__common__v1__purpose_of_use__descriptor, (int)f->purpose))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.purpose is not a known purpose of use");
    if (!enum_known(&alma__audit__v1__outcome__descriptor, (int)f->outcome))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.outcome is not a known outcome");
    *q = (audit_query){.tenant_id = f->tenant_id,
                       .patient_ref = f->patient_ref,
                       .actor_id = f->actor_principal_id,
                       .action = (int)f->action,
                       .purpose = (int)f->purpose,
                       .outcome = (int)f->outcome};
    if (f->start_time) {
        if (!timestamp_micros(f->start_time, &q->start_micros))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.start_time is out of range");
        q->has_start = true;
    }
    if (f->end_time) {
        if (!timestamp_micros(f->end_time, &q->end_micros))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.end_time is out of range");
        q->has_end = true;
    }
    if (q->has_start && q->has_end && q->start_micros >= q->end_micros)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "filter.start_time must be before filter.end_time");
    return RPC_OK;
}

/* A stored row as the API's Event, decoded from the entry (the log's source of truth). */
static base_result row_event(audit_alloc_fn alloc, void *actx, const audit_row *row,
                             Alma__Audit__V1__Event **ret)
{
    audit_decoded_entry d;
    BASE_GUARD(audit_entry_decode(row->entry, row->entry_len, alloc, actx, &d));
    if (d.seq != row->seq)
        return base_fail(BASE_ERR_INTERNAL, "stored entry does not match its sequence number");
    Alma__Audit__V1__Event *e = alloc(actx, sizeof *e);
    if (!e)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    alma__audit__v1__event__init(e);
    e->sequence = row->seq;
    e->time = timestamp_new(alloc, actx, d.time_micros);
    e->input = d.event;
    e->leaf_hash = bytes_copy(alloc, actx, row->leaf, AUDIT_MERKLE_HASH_LEN);
    if (!e->time || !e->leaf_hash.data)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    *ret = e;
    return BASE_OK_RESULT;
}

typedef struct list_acc {
    rpc_ctx *ctx;
    Alma__Audit__V1__ListEventsResponse *resp;
    uint64_t last_seq;
} list_acc;

static base_result list_row(void *arg, const audit_row *row)
{
    list_acc *a = arg;
    Alma__Audit__V1__Event *e = NULL;
    BASE_GUARD(row_event(arena_alloc, a->ctx, row, &e));
    a->resp->events[a->resp->n_events++] = e;
    a->last_seq = row->seq;
    return BASE_OK_RESULT;
}

static bool parse_page_token(const char *t, uint64_t *ret)
{
    size_t plen = strlen(PAGE_TOKEN_PREFIX);
    if (strncmp(t, PAGE_TOKEN_PREFIX, plen) != 0)
        return false;
    const char *d = t + plen;
    size_t n = strlen(d);
    if (n == 0 || n > 19 || (n > 1 && d[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(d[i] - '0');
    }
    if (v >= AUDIT_MERKLE_MAX_TREE_SIZE)
        return false;
    *ret = v;
    return true;
}

static rpc_code h_list_events(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Audit__V1__ListEventsRequest *req = reqp;
    Alma__Audit__V1__ListEventsResponse *resp = respp;
    audit_query q;
    rpc_code code = filter_query(ctx, req->filter, &q);
    if (code != RPC_OK)
        return code;
    if (req->page_size < 0 || req->page_size > AUDIT_READ_MAX_PAGE)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "page_size must be 1..%d", AUDIT_READ_MAX_PAGE);
    q.limit = req->page_size ? (size_t)req->page_size : LIST_DEFAULT_PAGE;
    if (req->page_token[0]) {
        if (!parse_page_token(req->page_token, &q.after_seq))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "page_token is not one this service issued");
        q.has_after = true;
    }
    code = audit_read_access(ctx, req->filter, req->filter->patient_ref,
                             ALMA__AUDIT__V1__ACTION__ACTION_QUERY, "ListEvents");
    if (code != RPC_OK)
        return code;
    resp->events = rpc_ctx_alloc(ctx, q.limit * sizeof *resp->events);
    if (!resp->events)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "response too large");
    list_acc acc = {ctx, resp, 0};
    size_t n = 0;
    bool more = false;
    base_result r = audit_read_events(svc_of(ctx)->pool, &q, list_row, &acc, &n, &more);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    if (more)
        resp->next_page_token = rpc_ctx_printf(ctx, PAGE_TOKEN_PREFIX "%" PRIu64, acc.last_seq);
    return RPC_OK;
}

typedef struct stream_acc {
    rpc_ctx *ctx;
    rpc_stream *stream;
    scratch sc;
    uint64_t last_seq;
} stream_acc;

static base_result stream_row(void *arg, const audit_row *row)
{
    stream_acc *a = arg;
    Alma__Audit__V1__Event *e = NULL;
    base_result r = row_event(scratch_alloc, &a->sc, row, &e);
    if (base_is_ok(r))
        r = rpc_stream_send(a->stream, &e->base);
    scratch_reset(&a->sc);
    BASE_GUARD(r);
    a->last_seq = row->seq;
    return BASE_OK_RESULT;
}

static rpc_code h_stream_events(rpc_ctx *ctx, const void *reqp, rpc_stream *stream)
{
    const Alma__Audit__V1__ListEventsRequest *req = reqp;
    audit_query q;
    rpc_code code = filter_query(ctx, req->filter, &q);
    if (code != RPC_OK)
        return code;
    if (req->page_size != 0 || req->page_token[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "StreamEvents takes no page_size or page_token");
    code = audit_read_access(ctx, req->filter, req->filter->patient_ref,
                             ALMA__AUDIT__V1__ACTION__ACTION_QUERY, "StreamEvents");
    if (code != RPC_OK)
        return code;
    q.limit = STREAM_PAGE;
    stream_acc acc = {.ctx = ctx, .stream = stream};
    bool more = true;
    while (more) {
        if (rpc_ctx_cancelled(ctx))
            return rpc_fail(ctx, RPC_CANCELLED, "call ended");
        size_t n = 0;
        base_result r = audit_read_events(svc_of(ctx)->pool, &q, stream_row, &acc, &n, &more);
        if (!base_is_ok(r))
            return rpc_fail_result(ctx, r);
        if (n == 0)
            break;
        q.has_after = true;
        q.after_seq = acc.last_seq;
    }
    return RPC_OK;
}

/* ---- Export -------------------------------------------------------------------------------------------- */

typedef struct export_acc {
    rpc_ctx *ctx;
    db_pool *pool;
    rpc_stream *stream;
    bool fhir;
    uint64_t tree_size;
    audit_proof_cache *cache;
    acrypto_sha256_ctx *leaves; /* over the leaf hashes sent, in order: the statement's "leaves" */
    uint64_t last_seq;
    uint64_t lines;
} export_acc;

static base_result export_row(void *arg, const audit_row *row)
{
    export_acc *a = arg;
    audit_merkle_proof proof;
    BASE_GUARD(audit_read_inclusion_proof(a->pool, a->cache, row->seq, a->tree_size, &proof));
    char *fhir = NULL;
    size_t fhir_len = 0;
    if (a->fhir)
        BASE_GUARD(audit_entry_to_fhir(row->entry, row->entry_len, &fhir, &fhir_len));
    ProtobufCBinaryData hashes[AUDIT_MERKLE_MAX_PROOF];
    for (size_t i = 0; i < proof.len; i++)
        hashes[i] = (ProtobufCBinaryData){AUDIT_MERKLE_HASH_LEN, proof.hashes[i]};
    Alma__Audit__V1__ExportLine line = ALMA__AUDIT__V1__EXPORT_LINE__INIT;
    line.sequence = row->seq;
    line.json = a->fhir ? fhir : (char *)row->entry;
    line.leaf_hash = (ProtobufCBinaryData){AUDIT_MERKLE_HASH_LEN, (uint8_t *)row->leaf};
    line.n_proof = proof.len;
    line.proof = hashes;
    line.entry = (ProtobufCBinaryData){row->entry_len, (uint8_t *)row->entry};
    Alma__Audit__V1__ExportChunk chunk = ALMA__AUDIT__V1__EXPORT_CHUNK__INIT;
    chunk.part_case = ALMA__AUDIT__V1__EXPORT_CHUNK__PART_LINE;
    chunk.line = &line;
    base_result r = rpc_stream_send(a->stream, &chunk.base);
    free(fhir);
    BASE_GUARD(r);
    BASE_GUARD(acrypto_sha256_update(a->leaves, row->leaf, AUDIT_MERKLE_HASH_LEN));
    a->last_seq = row->seq;
    a->lines++;
    return BASE_OK_RESULT;
}

/* The export statement (export_file.h), signed with the log's key under its key name, as the last chunk:
 * the log vouches for exactly which lines it sent, so none can be dropped or added on the way. */
static base_result export_statement(export_acc *a, const char *checkpoint_note, const char *tenant_id,
                                    const char *filter_json)
{
    audit_export_statement st = {.filter = filter_json,
                                 .filter_len = strlen(filter_json),
                                 .fhir = a->fhir,
                                 .tree_size = a->tree_size,
                                 .count = a->lines};
    const char *nl = strchr(checkpoint_note, '\n');
    size_t origin_len = nl ? (size_t)(nl - checkpoint_note) : 0;
    if (origin_len == 0 || origin_len >= sizeof st.origin || strlen(tenant_id) >= sizeof st.tenant_id)
        return base_fail(BASE_ERR_INTERNAL, "the checkpoint's origin or the tenant does not fit a statement");
    memcpy(st.origin, checkpoint_note, origin_len);
    st.origin[origin_len] = '\0';
    snprintf(st.tenant_id, sizeof st.tenant_id, "%s", tenant_id);
    BASE_GUARD(acrypto_sha256_final(a->leaves, st.leaves));
    char *text = NULL, *note = NULL;
    size_t text_len = 0, note_len = 0;
    BASE_GUARD(audit_export_statement_format(&st, &text, &text_len));
    audit_service *s = svc_of(a->ctx);
    base_result r = audit_note_sign(text, text_len, s->key_name, s->key, &note, &note_len);
    free(text);
    BASE_GUARD(r);
    Alma__Audit__V1__ExportChunk last = ALMA__AUDIT__V1__EXPORT_CHUNK__INIT;
    last.part_case = ALMA__AUDIT__V1__EXPORT_CHUNK__PART_STATEMENT;
    last.statement = note;
    r = rpc_stream_send(a->stream, &last.base);
    free(note);
    return r;
}

/* The export after its request was checked: the access record, the checkpoint, the lines, the statement. */
static rpc_code export_run(rpc_ctx *ctx, const Alma__Audit__V1__ExportEventsRequest *req, rpc_stream *stream,
                           bool fhir, audit_query *q, const char *filter_json)
{
    rpc_code code = audit_read_access(ctx, req->filter, req->filter->patient_ref,
                                      ALMA__AUDIT__V1__ACTION__ACTION_EXPORT, "ExportEvents");
    if (code != RPC_OK)
        return code;
    /* A checkpoint of everything committed so far, export record included: the lines are the tenant's
     * events below its size, each with its inclusion proof against it. */
    audit_read_checkpoint ck = {0};
    code = latest_checkpoint(ctx, true, &ck);
    if (code != RPC_OK)
        return code;
    Alma__Audit__V1__Checkpoint cmsg = ALMA__AUDIT__V1__CHECKPOINT__INIT;
    code = fill_checkpoint(ctx, &cmsg, &ck);
    uint64_t tree_size = ck.tree_size;
    audit_read_checkpoint_clear(&ck);
    if (code != RPC_OK)
        return code;
    Alma__Audit__V1__ExportChunk first = ALMA__AUDIT__V1__EXPORT_CHUNK__INIT;
    first.part_case = ALMA__AUDIT__V1__EXPORT_CHUNK__PART_CHECKPOINT;
    first.checkpoint = &cmsg;
    base_result r = rpc_stream_send(stream, &first.base);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    export_acc acc = {
        .ctx = ctx, .pool = svc_of(ctx)->pool, .stream = stream, .fhir = fhir, .tree_size = tree_size};
    acc.cache = audit_proof_cache_new();
    if (!acc.cache)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    r = acrypto_sha256_ctx_new(&acc.leaves);
    q->below_seq = tree_size;
    q->limit = STREAM_PAGE;
    bool more = tree_size > 0;
    while (more && base_is_ok(r)) {
        if (rpc_ctx_cancelled(ctx)) {
            r = base_fail(BASE_ERR_UNAVAILABLE, "call ended");
            break;
        }
        size_t n = 0;
        r = audit_read_events(svc_of(ctx)->pool, q, export_row, &acc, &n, &more);
        if (n == 0)
            break;
        q->has_after = true;
        q->after_seq = acc.last_seq;
    }
    if (base_is_ok(r))
        r = export_statement(&acc, cmsg.signed_note, req->filter->tenant_id, filter_json);
    acrypto_sha256_ctx_free(acc.leaves);
    audit_proof_cache_free(acc.cache);
    if (!base_is_ok(r))
        return rpc_fail_result(ctx, r);
    return RPC_OK;
}

static rpc_code h_export_events(rpc_ctx *ctx, const void *reqp, rpc_stream *stream)
{
    const Alma__Audit__V1__ExportEventsRequest *req = reqp;
    audit_query q;
    rpc_code code = filter_query(ctx, req->filter, &q);
    if (code != RPC_OK)
        return code;
    bool fhir = req->format == ALMA__AUDIT__V1__EXPORT_FORMAT__EXPORT_FORMAT_FHIR_AUDIT_EVENT_NDJSON;
    if (!fhir && req->format != ALMA__AUDIT__V1__EXPORT_FORMAT__EXPORT_FORMAT_JSON_LINES)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "format must be EXPORT_FORMAT_JSON_LINES or "
                        "EXPORT_FORMAT_FHIR_AUDIT_EVENT_NDJSON");
    /* The statement's filter line, before anything is recorded or sent. */
    char *filter_json = NULL;
    size_t filter_len = 0;
    base_result r = audit_export_filter_json(req->filter, &filter_json, &filter_len);
    if (!base_is_ok(r))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "%s", base_error_message());
    code = export_run(ctx, req, stream, fhir, &q, filter_json);
    free(filter_json);
    return code;
}

/* ---- Accounting of disclosures (§164.528) ---------------------------------------------------------------
 */

typedef struct accounting_acc {
    rpc_ctx *ctx;
    Alma__Audit__V1__GetAccountingOfDisclosuresResponse *resp;
    size_t cap;
    uint64_t last_seq;
    bool too_many;
} accounting_acc;

static base_result accounting_row(void *arg, const audit_row *row)
{
    accounting_acc *a = arg;
    a->last_seq = row->seq;
    audit_decoded_entry d;
    BASE_GUARD(audit_entry_decode(row->entry, row->entry_len, arena_alloc, a->ctx, &d));
    if (d.event->action != ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE ||
        audit_basis_excluded_from_accounting(d.event->basis))
        return BASE_OK_RESULT;
    if (a->resp->n_disclosures >= a->cap) {
        a->too_many = true;
        return base_fail(BASE_ERR_LIMIT, "more than %d disclosures", MAX_DISCLOSURES);
    }
    Alma__Audit__V1__Disclosure *x = rpc_ctx_alloc(a->ctx, sizeof *x);
    if (!x)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    alma__audit__v1__disclosure__init(x);
    x->time = timestamp_new(arena_alloc, a->ctx, d.time_micros);
    x->recipient = d.event->recipient;
    x->phi_description = d.event->phi_description;
    x->purpose = d.event->purpose;
    x->sequence = d.seq;
    a->resp->disclosures[a->resp->n_disclosures++] = x;
    return BASE_OK_RESULT;
}

/* as_of minus six calendar years (29 February falls back to 28 February). */
static int64_t years_before(int64_t micros, int years)
{
    time_t secs = (time_t)(micros / MICROS_PER_SECOND);
    struct tm tm;
    gmtime_r(&secs, &tm);
    tm.tm_year -= years;
    if (tm.tm_mon == 1 && tm.tm_mday == 29)
        tm.tm_mday = 28;
    return (int64_t)timegm(&tm) * MICROS_PER_SECOND + micros % MICROS_PER_SECOND;
}

static rpc_code h_accounting(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Audit__V1__GetAccountingOfDisclosuresRequest *req = reqp;
    Alma__Audit__V1__GetAccountingOfDisclosuresResponse *resp = respp;
    if (!req->tenant_id[0] || strlen(req->tenant_id) > AUDIT_MAX_TENANT)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "tenant_id is required (at most %d bytes)",
                        AUDIT_MAX_TENANT);
    if (!audit_is_patient_ref(req->patient_ref))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "patient_ref is required: a pseudonymous reference (pt_ + 32 hex digits)");
    int64_t as_of = now_micros();
    if (req->as_of && !timestamp_micros(req->as_of, &as_of))
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "as_of is out of range");
    Alma__Audit__V1__EventFilter f = ALMA__AUDIT__V1__EVENT_FILTER__INIT;
    f.tenant_id = req->tenant_id;
    f.patient_ref = req->patient_ref;
    f.action = ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE;
    rpc_code code = audit_read_access(ctx, &f, req->patient_ref, ALMA__AUDIT__V1__ACTION__ACTION_QUERY,
                                      "GetAccountingOfDisclosures");
    if (code != RPC_OK)
        return code;
    audit_query q = {.tenant_id = req->tenant_id,
                     .patient_ref = req->patient_ref,
                     .action = ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE,
                     .has_start = true,
                     .start_micros = years_before(as_of, ACCOUNTING_YEARS),
                     .has_end = true,
                     .end_micros = as_of + 1,
                     .limit = AUDIT_READ_MAX_PAGE};
    accounting_acc acc = {.ctx = ctx, .resp = resp, .cap = MAX_DISCLOSURES};
    resp->disclosures = rpc_ctx_alloc(ctx, MAX_DISCLOSURES * sizeof *resp->disclosures);
    if (!resp->disclosures)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
    bool more = true;
    while (more) {
        size_t n = 0;
        base_result r = audit_read_events(svc_of(ctx)->pool, &q, accounting_row, &acc, &n, &more);
        if (acc.too_many)
            return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED,
                            "more than %d accountable disclosures: use ExportEvents with action "
                            "ACTION_DISCLOSE for this patient",
                            MAX_DISCLOSURES);
        if (!base_is_ok(r))
            return rpc_fail_result(ctx, r);
        if (n == 0)
            break;
        q.has_after = true;
        q.after_seq = acc.last_seq;
    }
    return RPC_OK;
}

/* ---- Method table -------------------------------------------------------------------------------------- */

static const char *const appenders[] = {"identity", "vault",       "guideline", "signaling", "breach",
                                        "gateway",  "test-client", "bench",     NULL};
static const char *const any_peer[] = {RPC_ANY_PEER, NULL};
static const char *const operators[] = {"alma-cli", "test-client", NULL};
static const char *const readers[] = {"gateway", "breach", "alma-cli", "test-client", NULL};

#define UNARY(nm, req, resp, fn, peers)                                                                      \
    {                                                                                                        \
        .name = AUDIT_METHOD(nm), .kind = RPC_KIND_UNARY, .request = &req##__descriptor,                     \
        .response = &resp##__descriptor, .unary = fn, .allowed_peers = peers                                 \
    }
#define STREAM(nm, req, resp, fn, peers)                                                                     \
    {                                                                                                        \
        .name = AUDIT_METHOD(nm), .kind = RPC_KIND_SERVER_STREAM, .request = &req##__descriptor,             \
        .response = &resp##__descriptor, .stream = fn, .allowed_peers = peers                                \
    }

const rpc_method audit_methods[] = {
    UNARY("AppendEvent", alma__audit__v1__append_event_request, alma__audit__v1__append_event_response,
          h_append_event, appenders),
    UNARY("AppendEvents", alma__audit__v1__append_events_request, alma__audit__v1__append_events_response,
          h_append_events, appenders),
    UNARY("GetCheckpoint", alma__audit__v1__get_checkpoint_request, alma__audit__v1__checkpoint,
          h_get_checkpoint, any_peer),
    UNARY("GetInclusionProof", alma__audit__v1__get_inclusion_proof_request, alma__audit__v1__inclusion_proof,
          h_inclusion_proof, any_peer),
    UNARY("GetConsistencyProof", alma__audit__v1__get_consistency_proof_request,
          alma__audit__v1__consistency_proof, h_consistency_proof, any_peer),
    UNARY("VerifyLog", alma__audit__v1__verify_log_request, alma__audit__v1__verify_log_response,
          h_verify_log, operators),
    UNARY("ListEvents", alma__audit__v1__list_events_request, alma__audit__v1__list_events_response,
          h_list_events, readers),
    STREAM("StreamEvents", alma__audit__v1__list_events_request, alma__audit__v1__event, h_stream_events,
           readers),
    STREAM("ExportEvents", alma__audit__v1__export_events_request, alma__audit__v1__export_chunk,
           h_export_events, readers),
    UNARY("GetAccountingOfDisclosures", alma__audit__v1__get_accounting_of_disclosures_request,
          alma__audit__v1__get_accounting_of_disclosures_response, h_accounting, readers),
};
const size_t audit_method_count = BASE_ARRAY_LEN(audit_methods);
