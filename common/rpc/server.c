/* The server half of the runtime: ports, the completion-queue thread, workers, calls, authorization.
 *
 * Lifecycle of a call (one rpc_ctx):
 *   queue thread: a request slot completes -> ctx created (1 ref: the handler side), slot re-armed ->
 *   peer authorised, metadata read, request decoded -> either the inline handler runs and one batch
 *   (RECV_CLOSE + initial metadata + message + status) answers, or RECV_CLOSE is started on its own
 *   (+1 ref, so cancellation and deadlines are seen while the handler blocks) and the call is queued
 *   for a worker. The worker runs the handler and starts the final batch (+1 ref). Each batch's tag
 *   drops its ref on completion; the last ref frees the call. */
#include "internal.h"
#include "base/clock.h"

#include <errno.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RPC_MD_AUTHORIZATION_MAX 8192
#define RPC_REQUEST_ID_MAX       64
#define RPC_ARENA_LIMIT          (64u << 20)

typedef struct rpc_port rpc_port;

typedef struct rpc_slot {
    rpc_tag tag;
    rpc_port *port;
    size_t index; /* into port->methods; SIZE_MAX = catch-all (unknown method) */
    void *handle; /* registered method handle */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} rpc_slot;

struct rpc_port {
    rpc_server *srv;
    grpc_server *server;
    bool secure; /* mTLS: peers are authenticated and authorised per method */
    int bound_port;
    const rpc_method **methods; /* the methods served on this port */
    size_t *metric_index;       /* per method: index into srv->metrics */
    size_t count;
    rpc_slot *slots; /* count + 1 (the catch-all) */
    rpc_tag shutdown_tag;
    bool shutdown_done;
};

struct rpc_server {
    rpc_server_config cfg;
    grpc_completion_queue *cq;
    pthread_t cq_thread;
    bool cq_thread_started;
    rpc_port api;
    rpc_port admin;
    bool has_admin;
    rpc_health health;
    rpc_metrics_http *metrics_http;
    int metrics_port;

    /* metrics: the service's methods, the two health methods, and one row for unknown methods */
    rpc_method_metrics *metrics;
    rpc_method_metrics **metric_ptrs;
    size_t metric_count;

    pthread_mutex_t mu;     /* guards the fields below and the work queue */
    pthread_cond_t work_cv; /* a call was queued (workers wait here; signalled one at a time) */
    pthread_cond_t cv;      /* shutdown progress: calls finished, ports down (only waited on by shutdown) */
    long active_calls;
    bool shutting_down;
    bool stopped;
    rpc_ctx **queue; /* ring buffer of calls waiting for a worker */
    int queue_cap, queue_head, queue_len;
    pthread_t *workers;
    int worker_count;
    bool workers_stop;
};

struct rpc_ctx {
    rpc_server *srv;
    rpc_port *port;
    const rpc_method *method;
    rpc_method_metrics *metrics;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    int64_t start_micros;
    atomic_int refs;
    atomic_bool cancelled;
    bool finished; /* final status batch started */

    rpc_arena arena;
    const ProtobufCMessage *request;
    ProtobufCMessage *response;
    rpc_code code;
    char message[256];

    char request_id[RPC_REQUEST_ID_MAX + 1];
    char traceparent[56];
    char client_addr[RPC_CLIENT_ADDR_MAX + 1]; /* x-alma-client-addr, "" when absent or malformed */
    char *authorization;
    char peer_id[256];
    char peer_service[64];

    /* batches: recv_close (cancellation), final (status), stream send and recv */
    rpc_tag close_tag;
    int close_cancelled;
    rpc_tag final_tag;
    grpc_byte_buffer *final_buf;
    grpc_slice final_details;

    pthread_mutex_t mu; /* stream completion flags */
    pthread_cond_t cv;
    pthread_mutex_t send_mu; /* one sender at a time */
    bool initial_md_sent;
    rpc_tag send_tag;
    bool send_done, send_ok;
    grpc_byte_buffer *send_buf;
    rpc_tag recv_tag;
    bool recv_done, recv_ok;
    grpc_byte_buffer *recv_buf;
};

/* ------------------------------------------------------------------ small helpers */

int64_t rpc_now_micros(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

gpr_timespec rpc_deadline_from_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

const char *rpc_code_name(rpc_code code)
{
    static const char *const names[RPC_CODE_COUNT] = {
        "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED",
    };
    return (unsigned)code < RPC_CODE_COUNT ? names[code] : "UNKNOWN";
}

rpc_code rpc_code_from_err(base_err err)
{
    switch (err) {
    case BASE_OK:
        return RPC_OK;
    case BASE_ERR_INVALID:
        return RPC_INVALID_ARGUMENT;
    case BASE_ERR_NOT_FOUND:
        return RPC_NOT_FOUND;
    case BASE_ERR_CONFLICT:
        return RPC_FAILED_PRECONDITION;
    case BASE_ERR_EXISTS:
        return RPC_ALREADY_EXISTS;
    case BASE_ERR_LIMIT:
        return RPC_RESOURCE_EXHAUSTED;
    case BASE_ERR_UNAVAILABLE:
    case BASE_ERR_IO:
        return RPC_UNAVAILABLE;
    case BASE_ERR_TIMEOUT:
        return RPC_DEADLINE_EXCEEDED;
    case BASE_ERR_DENIED:
        return RPC_PERMISSION_DENIED;
    case BASE_ERR_UNAUTH:
        return RPC_UNAUTHENTICATED;
    case BASE_ERR_CRYPTO:
    case BASE_ERR_NOMEM:
    case BASE_ERR_INTERNAL:
    default:
        return RPC_INTERNAL;
    }
}

/* Request ids need to be unique, not secret: a per-thread xorshift128+ seeded once from the kernel
 * keeps a syscall off every call that arrives without an x-request-id. */
static uint64_t rpc_rid_next(void)
{
    static _Thread_local uint64_t s0, s1;
    if (!s0 && !s1) {
        uint64_t seed[2] = {0, 0};
        if (getentropy(seed, sizeof seed) != 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
            seed[1] = (uint64_t)(uintptr_t)&s0;
        }
        s0 = seed[0] | 1;
        s1 = seed[1];
    }
    uint64_t a = s0, b = s1;
    s0 = b;
    a ^= a << 23;
    s1 = a ^ b ^ (a >> 17) ^ (b >> 26);
    return s1 + b;
}

void rpc_new_request_id(char *buf, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[16];
    uint64_t hi = rpc_rid_next(), lo = rpc_rid_next();
    for (int i = 0; i < 8; i++) {
        r[i] = (unsigned char)(hi >> (8 * i));
        r[8 + i] = (unsigned char)(lo >> (8 * i));
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* UUID version 4 layout */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    char out[37];
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 15];
    }
    out[o] = '\0';
    snprintf(buf, n, "%s", out);
}

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

grpc_slice rpc_flatten(grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return grpc_empty_slice();
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return s;
}

/* ------------------------------------------------------------------ arena */

struct rpc_arena_block {
    rpc_arena_block *next;
    size_t used, cap;
    max_align_t data[];
};

static void *rpc_arena_pb_alloc(void *a, size_t n)
{
    return rpc_arena_alloc(a, n);
}

static void rpc_arena_pb_free(void *a, void *p)
{
    (void)a;
    (void)p; /* freed with the call */
}

void rpc_arena_init(rpc_arena *a, size_t limit)
{
    a->head = NULL;
    a->total = 0;
    a->limit = limit;
    a->allocator.alloc = rpc_arena_pb_alloc;
    a->allocator.free = rpc_arena_pb_free;
    a->allocator.allocator_data = a;
}

void *rpc_arena_alloc(rpc_arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    rpc_arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        if (a->total + cap > a->limit)
            return NULL;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void rpc_arena_free_all(rpc_arena *a)
{
    while (a->head) {
        rpc_arena_block *next = a->head->next;
        /* A call's arena holds its request and response: PHI for the vault. Wipe before free (explicit_bzero
         * is not removed by the compiler), so nothing outlives the call in freed heap. */
        explicit_bzero(a->head->data, a->head->used);
        free(a->head);
        a->head = next;
    }
    a->total = 0;
}

/* ------------------------------------------------------------------ ctx accessors */

rpc_code rpc_fail(rpc_ctx *ctx, rpc_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    return code == RPC_OK ? RPC_INTERNAL : code;
}

rpc_code rpc_fail_result(rpc_ctx *ctx, base_result r)
{
    rpc_code code = rpc_code_from_err(r.err);
    if (code == RPC_INTERNAL)
        return rpc_fail(ctx, code, "internal error"); /* details stay in the server's own log */
    return rpc_fail(ctx, code, "%s", base_error_message());
}

ProtobufCAllocator *rpc_ctx_pb_allocator(rpc_ctx *ctx)
{
    return &ctx->arena.allocator;
}

void *rpc_ctx_alloc(rpc_ctx *ctx, size_t n)
{
    return rpc_arena_alloc(&ctx->arena, n);
}

char *rpc_ctx_strdup(rpc_ctx *ctx, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = rpc_arena_alloc(&ctx->arena, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

char *rpc_ctx_printf(rpc_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = rpc_arena_alloc(&ctx->arena, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

const char *rpc_ctx_method(const rpc_ctx *ctx)
{
    return ctx->method ? ctx->method->name : "";
}
const char *rpc_ctx_peer_id(const rpc_ctx *ctx)
{
    return ctx->peer_id;
}
const char *rpc_ctx_peer_service(const rpc_ctx *ctx)
{
    return ctx->peer_service;
}
const char *rpc_ctx_authorization(const rpc_ctx *ctx)
{
    return ctx->authorization ? ctx->authorization : "";
}
const char *rpc_ctx_request_id(const rpc_ctx *ctx)
{
    return ctx->request_id;
}
const char *rpc_ctx_client_addr(const rpc_ctx *ctx)
{
    return ctx->client_addr;
}

const char *rpc_ctx_traceparent(const rpc_ctx *ctx)
{
    return ctx->traceparent;
}
void *rpc_ctx_service_state(const rpc_ctx *ctx)
{
    return ctx->srv->cfg.service_state;
}
rpc_health *rpc_ctx_health(const rpc_ctx *ctx)
{
    return &ctx->srv->health;
}
const char *rpc_ctx_server_name(const rpc_ctx *ctx)
{
    return ctx->srv->cfg.service_name;
}

int64_t rpc_ctx_remaining_ms(const rpc_ctx *ctx)
{
    gpr_timespec d = gpr_convert_clock_type(ctx->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return INT64_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    return gpr_time_to_millis(left);
}

bool rpc_ctx_cancelled(const rpc_ctx *ctx)
{
    return atomic_load(&ctx->cancelled) || rpc_ctx_remaining_ms(ctx) <= 0;
}

grpc_call *rpc_ctx_grpc_call(const rpc_ctx *ctx)
{
    return ctx->call;
}

/* ------------------------------------------------------------------ call lifetime */

static void rpc_call_unref(rpc_ctx *ctx)
{
    if (atomic_fetch_sub(&ctx->refs, 1) != 1)
        return;
    rpc_server *srv = ctx->srv;
    if (ctx->call)
        grpc_call_unref(ctx->call);
    grpc_metadata_array_destroy(&ctx->md);
    if (ctx->payload)
        grpc_byte_buffer_destroy(ctx->payload);
    if (ctx->final_buf)
        grpc_byte_buffer_destroy(ctx->final_buf);
    if (ctx->send_buf)
        grpc_byte_buffer_destroy(ctx->send_buf);
    if (ctx->recv_buf)
        grpc_byte_buffer_destroy(ctx->recv_buf);
    grpc_slice_unref(ctx->final_details);
    rpc_arena_free_all(&ctx->arena);
    free(ctx->authorization);
    pthread_mutex_destroy(&ctx->mu);
    pthread_cond_destroy(&ctx->cv);
    pthread_mutex_destroy(&ctx->send_mu);
    free(ctx);
    pthread_mutex_lock(&srv->mu);
    srv->active_calls--;
    if (srv->shutting_down)
        pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static rpc_code rpc_observed_code(rpc_ctx *ctx, bool ok)
{
    if (ok && !ctx->close_cancelled)
        return ctx->code;
    /* The batch failed or the call was cancelled: the caller saw a deadline or a cancellation. */
    return rpc_ctx_remaining_ms(ctx) <= 0 ? RPC_DEADLINE_EXCEEDED : RPC_CANCELLED;
}

static void rpc_on_final(rpc_tag *tag, bool ok)
{
    rpc_ctx *ctx = RPC_CONTAINER_OF(tag, rpc_ctx, final_tag);
    rpc_code code = rpc_observed_code(ctx, ok);
    int64_t micros = rpc_now_micros() - ctx->start_micros;
    rpc_metrics_observe(ctx->metrics, code, micros);
    if (ctx->srv->cfg.on_call_done)
        ctx->srv->cfg.on_call_done(ctx->method ? ctx->method->name : "unknown", code, micros, ctx->request_id,
                                   ctx->peer_service);
    rpc_call_unref(ctx);
}

static void rpc_on_close(rpc_tag *tag, bool ok)
{
    rpc_ctx *ctx = RPC_CONTAINER_OF(tag, rpc_ctx, close_tag);
    (void)ok;
    if (ctx->close_cancelled) {
        pthread_mutex_lock(&ctx->mu);
        atomic_store(&ctx->cancelled, true);
        pthread_cond_broadcast(&ctx->cv);
        pthread_mutex_unlock(&ctx->mu);
    }
    rpc_call_unref(ctx);
}

/* Start the last batch of a call: initial metadata (if not sent), the response (unary OK), the status;
 * plus RECV_CLOSE when it was not started separately (the one-batch fast path). */
static void rpc_finish(rpc_ctx *ctx, bool include_close)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (include_close) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n].data.recv_close_on_server.cancelled = &ctx->close_cancelled;
        n++;
    }
    if (!ctx->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        ctx->initial_md_sent = true;
    }
    if (ctx->code == RPC_OK && ctx->response) {
        ctx->final_buf = rpc_pack(ctx->response);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = ctx->final_buf;
        n++;
    }
    /* A handler that stopped because rpc_ctx_cancelled() turned true after the deadline passed says
     * CANCELLED; the caller must see the same DEADLINE_EXCEEDED its own timer would give it. */
    if (ctx->code == RPC_CANCELLED && rpc_ctx_remaining_ms(ctx) <= 0) {
        ctx->code = RPC_DEADLINE_EXCEEDED;
        snprintf(ctx->message, sizeof ctx->message, "deadline exceeded");
    }
    if (ctx->code != RPC_OK && !ctx->message[0])
        snprintf(ctx->message, sizeof ctx->message, "%s", rpc_code_name(ctx->code));
    ctx->final_details = grpc_slice_from_copied_string(ctx->code == RPC_OK ? "" : ctx->message);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)ctx->code;
    ops[n].data.send_status_from_server.status_details = &ctx->final_details;
    n++;
    ctx->finished = true;
    atomic_fetch_add(&ctx->refs, 1);
    ctx->final_tag.fn = rpc_on_final;
    grpc_call_error e = grpc_call_start_batch(ctx->call, ops, n, &ctx->final_tag, NULL);
    if (e != GRPC_CALL_OK)
        rpc_on_final(&ctx->final_tag, false);
    rpc_call_unref(ctx); /* the handler side's reference */
}

/* Answer at once, before any handler ran (bad request, denied caller, unknown method, busy). */
static void rpc_finish_early(rpc_ctx *ctx, rpc_code code, const char *message)
{
    ctx->code = code;
    snprintf(ctx->message, sizeof ctx->message, "%s", message);
    ctx->response = NULL;
    rpc_finish(ctx, true);
}

/* ------------------------------------------------------------------ authorization and metadata */

static bool rpc_slice_eq(grpc_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return GRPC_SLICE_LENGTH(s) == n && memcmp(GRPC_SLICE_START_PTR(s), lit, n) == 0;
}

static bool rpc_printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    return true;
}

/* spiffe://<trust-domain>/ns/<namespace>/sa/<service> -> <service>, if the trust domain is ours. */
static bool rpc_spiffe_service(const char *id, const char *trust_domain, char *out, size_t n)
{
    static const char scheme[] = "spiffe://";
    if (strncmp(id, scheme, sizeof scheme - 1) != 0)
        return false;
    const char *td = id + sizeof scheme - 1;
    size_t tdlen = strlen(trust_domain);
    if (strncmp(td, trust_domain, tdlen) != 0 || td[tdlen] != '/')
        return false;
    const char *path = td + tdlen;
    if (strncmp(path, "/ns/", 4) != 0)
        return false;
    const char *sa = strstr(path + 4, "/sa/");
    if (!sa || sa == path + 4)
        return false;
    for (const char *p = path + 4; p < sa; p++)
        if (*p == '/')
            return false;
    const char *svc = sa + 4;
    size_t len = strlen(svc);
    if (len == 0 || len >= n || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = svc[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    memcpy(out, svc, len + 1);
    return true;
}

static void rpc_read_peer(rpc_ctx *ctx)
{
    grpc_auth_context *ac = grpc_call_auth_context(ctx->call);
    if (!ac)
        return;
    if (grpc_auth_context_peer_is_authenticated(ac)) {
        const grpc_auth_property *found = NULL;
        grpc_auth_property_iterator it =
            grpc_auth_context_find_properties_by_name(ac, GRPC_PEER_SPIFFE_ID_PROPERTY_NAME);
        found = grpc_auth_property_iterator_next(&it);
        if (!found) {
            it = grpc_auth_context_find_properties_by_name(ac, GRPC_X509_SAN_PROPERTY_NAME);
            const grpc_auth_property *p;
            while ((p = grpc_auth_property_iterator_next(&it)) != NULL)
                if (p->value_length > 9 && strncmp(p->value, "spiffe://", 9) == 0) {
                    found = p;
                    break;
                }
        }
        if (found && found->value_length < sizeof ctx->peer_id &&
            rpc_printable((const uint8_t *)found->value, found->value_length)) {
            memcpy(ctx->peer_id, found->value, found->value_length);
            ctx->peer_id[found->value_length] = '\0';
            if (!rpc_spiffe_service(ctx->peer_id, ctx->srv->cfg.trust_domain, ctx->peer_service,
                                    sizeof ctx->peer_service))
                ctx->peer_service[0] = '\0';
        }
    }
    grpc_auth_context_release(ac);
}

static bool rpc_peer_allowed(const rpc_ctx *ctx)
{
    const char *const *allowed = ctx->method->allowed_peers;
    if (!allowed)
        return false;
    for (; *allowed; allowed++) {
        if (strcmp(*allowed, RPC_ANY_PEER) == 0) {
            /* On a secure port "any" still means an authenticated peer of our trust domain. */
            if (!ctx->port->secure || ctx->peer_service[0])
                return true;
        } else if (ctx->port->secure && ctx->peer_service[0] && strcmp(*allowed, ctx->peer_service) == 0) {
            return true;
        }
    }
    return false;
}

static bool rpc_valid_traceparent(const uint8_t *p, size_t n)
{
    /* W3C: 2 hex version - 32 hex trace id - 16 hex parent id - 2 hex flags */
    if (n != 55 || p[2] != '-' || p[35] != '-' || p[52] != '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (i == 2 || i == 35 || i == 52)
            continue;
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    }
    return true;
}

/* Returns NULL, or a safe message for INVALID_ARGUMENT / UNAUTHENTICATED problems. */
static const char *rpc_read_metadata(rpc_ctx *ctx, rpc_code *code)
{
    for (size_t i = 0; i < ctx->md.count; i++) {
        grpc_slice k = ctx->md.metadata[i].key;
        grpc_slice v = ctx->md.metadata[i].value;
        const uint8_t *vp = GRPC_SLICE_START_PTR(v);
        size_t vn = GRPC_SLICE_LENGTH(v);
        if (rpc_slice_eq(k, "authorization")) {
            if (vn > RPC_MD_AUTHORIZATION_MAX || !rpc_printable(vp, vn)) {
                *code = RPC_UNAUTHENTICATED;
                return "authorization metadata is too long or not printable";
            }
            free(ctx->authorization);
            ctx->authorization = malloc(vn + 1);
            if (!ctx->authorization) {
                *code = RPC_RESOURCE_EXHAUSTED;
                return "out of memory";
            }
            memcpy(ctx->authorization, vp, vn);
            ctx->authorization[vn] = '\0';
        } else if (rpc_slice_eq(k, "x-request-id")) {
            if (vn == 0 || vn > RPC_REQUEST_ID_MAX || !rpc_printable(vp, vn)) {
                *code = RPC_INVALID_ARGUMENT;
                return "x-request-id must be 1 to 64 printable characters";
            }
            memcpy(ctx->request_id, vp, vn);
            ctx->request_id[vn] = '\0';
        } else if (rpc_slice_eq(k, RPC_CLIENT_ADDR_METADATA)) {
            /* An IPv4 or IPv6 address as text; anything else is ignored (never echoed). */
            bool ok = vn >= 2 && vn <= RPC_CLIENT_ADDR_MAX;
            for (size_t j = 0; ok && j < vn; j++)
                ok = (vp[j] >= '0' && vp[j] <= '9') || (vp[j] >= 'a' && vp[j] <= 'f') ||
                     (vp[j] >= 'A' && vp[j] <= 'F') || vp[j] == '.' || vp[j] == ':';
            if (ok) {
                memcpy(ctx->client_addr, vp, vn);
                ctx->client_addr[vn] = '\0';
            }
        } else if (rpc_slice_eq(k, "traceparent")) {
            if (rpc_valid_traceparent(vp, vn)) { /* a malformed one is ignored, per W3C */
                memcpy(ctx->traceparent, vp, vn);
                ctx->traceparent[vn] = '\0';
            }
        }
    }
    if (!ctx->request_id[0])
        rpc_new_request_id(ctx->request_id, sizeof ctx->request_id);
    return NULL;
}

/* Decode `bb` as `desc` into the call's arena. */
static rpc_code rpc_decode(rpc_ctx *ctx, grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                           ProtobufCAllocator *alloc, ProtobufCMessage **ret, const char **why)
{
    uint32_t max =
        ctx->method->max_request_bytes ? ctx->method->max_request_bytes : ctx->srv->cfg.max_message_bytes;
    if (grpc_byte_buffer_length(bb) > max) {
        *why = "request message is larger than this method accepts";
        return RPC_RESOURCE_EXHAUSTED;
    }
    grpc_slice s = rpc_flatten(bb);
    const uint8_t *p = GRPC_SLICE_START_PTR(s);
    size_t n = GRPC_SLICE_LENGTH(s);
    rpc_code code = RPC_OK;
    if (!base_is_ok(rpc_wire_check_strings(desc, p, n))) {
        *why = "request has a string field with a NUL byte or invalid UTF-8";
        code = RPC_INVALID_ARGUMENT;
    } else {
        ProtobufCMessage *m = protobuf_c_message_unpack(desc, alloc, n, p);
        if (!m) {
            *why = "request message could not be decoded";
            code = RPC_INVALID_ARGUMENT;
        } else {
            *ret = m;
        }
    }
    grpc_slice_unref(s);
    return code;
}

/* ------------------------------------------------------------------ workers */

static void rpc_run_handler(rpc_ctx *ctx)
{
    const rpc_method *m = ctx->method;
    if (rpc_ctx_cancelled(ctx)) {
        ctx->code = RPC_CANCELLED;
        rpc_finish(ctx, false);
        return;
    }
    if (m->kind == RPC_KIND_UNARY) {
        ctx->response = rpc_arena_alloc(&ctx->arena, m->response->sizeof_message);
        if (!ctx->response) {
            ctx->code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
        } else {
            protobuf_c_message_init(m->response, ctx->response);
            ctx->code = m->unary(ctx, ctx->request, ctx->response);
        }
    } else {
        ctx->response = NULL;
        ctx->code = m->stream(ctx, ctx->request, (rpc_stream *)ctx);
    }
    if (ctx->code == RPC_UNKNOWN) /* our contract: never UNKNOWN */
        ctx->code = RPC_INTERNAL;
    rpc_finish(ctx, false);
}

static void *rpc_worker_main(void *arg)
{
    rpc_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        while (srv->queue_len == 0 && !srv->workers_stop)
            pthread_cond_wait(&srv->work_cv, &srv->mu);
        if (srv->queue_len == 0 && srv->workers_stop)
            break;
        rpc_ctx *ctx = srv->queue[srv->queue_head];
        srv->queue_head = (srv->queue_head + 1) % srv->queue_cap;
        srv->queue_len--;
        pthread_mutex_unlock(&srv->mu);
        rpc_run_handler(ctx);
        pthread_mutex_lock(&srv->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

static bool rpc_enqueue(rpc_server *srv, rpc_ctx *ctx)
{
    pthread_mutex_lock(&srv->mu);
    bool ok = srv->queue_len < srv->queue_cap && !srv->workers_stop;
    if (ok) {
        srv->queue[(srv->queue_head + srv->queue_len) % srv->queue_cap] = ctx;
        srv->queue_len++;
        pthread_cond_signal(&srv->work_cv);
    }
    pthread_mutex_unlock(&srv->mu);
    return ok;
}

/* ------------------------------------------------------------------ new calls */

static void rpc_arm(rpc_slot *slot);

static void rpc_dispatch(rpc_ctx *ctx)
{
    if (!ctx->method) {
        rpc_finish_early(ctx, RPC_UNIMPLEMENTED, "unknown method");
        return;
    }
    if (ctx->port->secure)
        rpc_read_peer(ctx);
    if (!rpc_peer_allowed(ctx)) {
        rpc_finish_early(ctx, RPC_PERMISSION_DENIED, "this caller may not call this method");
        return;
    }
    rpc_code code = RPC_OK;
    const char *why = rpc_read_metadata(ctx, &code);
    if (why) {
        rpc_finish_early(ctx, code, why);
        return;
    }
    const rpc_method *m = ctx->method;
    if (m->kind != RPC_KIND_BIDI_STREAM) {
        ProtobufCMessage *req = NULL;
        if (!ctx->payload) {
            rpc_finish_early(ctx, RPC_INVALID_ARGUMENT, "missing request message");
            return;
        }
        code = rpc_decode(ctx, ctx->payload, m->request, &ctx->arena.allocator, &req, &why);
        grpc_byte_buffer_destroy(ctx->payload);
        ctx->payload = NULL;
        if (code != RPC_OK) {
            rpc_finish_early(ctx, code, why);
            return;
        }
        ctx->request = req;
    }
    if (m->kind == RPC_KIND_UNARY && m->inline_handler) {
        ctx->response = rpc_arena_alloc(&ctx->arena, m->response->sizeof_message);
        if (!ctx->response) {
            rpc_finish_early(ctx, RPC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        protobuf_c_message_init(m->response, ctx->response);
        ctx->code = m->unary(ctx, ctx->request, ctx->response);
        if (ctx->code == RPC_UNKNOWN)
            ctx->code = RPC_INTERNAL;
        rpc_finish(ctx, true);
        return;
    }
    /* Going to a worker: watch for cancellation and deadlines while the handler runs. */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &ctx->close_cancelled;
    ctx->close_tag.fn = rpc_on_close;
    atomic_fetch_add(&ctx->refs, 1);
    if (grpc_call_start_batch(ctx->call, &op, 1, &ctx->close_tag, NULL) != GRPC_CALL_OK) {
        rpc_call_unref(ctx);
        ctx->code = rpc_fail(ctx, RPC_INTERNAL, "internal error");
        rpc_finish(ctx, false);
        return;
    }
    if (!rpc_enqueue(ctx->srv, ctx)) {
        ctx->code = rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "server busy, retry later");
        rpc_finish(ctx, false);
    }
}

static void rpc_on_new_call(rpc_tag *tag, bool ok)
{
    rpc_slot *slot = RPC_CONTAINER_OF(tag, rpc_slot, tag);
    rpc_port *port = slot->port;
    rpc_server *srv = port->srv;
    if (!ok) { /* the server is shutting down: this slot is done */
        grpc_metadata_array_destroy(&slot->md);
        if (slot->index == SIZE_MAX)
            grpc_call_details_destroy(&slot->details);
        return;
    }
    rpc_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        grpc_call_cancel_with_status(slot->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        grpc_call_unref(slot->call);
        if (slot->payload)
            grpc_byte_buffer_destroy(slot->payload);
        grpc_metadata_array_destroy(&slot->md);
        slot->payload = NULL;
    } else {
        ctx->srv = srv;
        ctx->port = port;
        ctx->start_micros = rpc_now_micros();
        ctx->call = slot->call;
        ctx->deadline = slot->index == SIZE_MAX ? slot->details.deadline : slot->deadline;
        ctx->md = slot->md;
        ctx->payload = slot->payload;
        ctx->method = slot->index == SIZE_MAX ? NULL : port->methods[slot->index];
        ctx->metrics =
            &srv->metrics[slot->index == SIZE_MAX ? srv->metric_count - 1 : port->metric_index[slot->index]];
        ctx->final_details = grpc_empty_slice();
        atomic_init(&ctx->refs, 1);
        atomic_init(&ctx->cancelled, false);
        rpc_arena_init(&ctx->arena, RPC_ARENA_LIMIT);
        pthread_mutex_init(&ctx->mu, NULL);
        pthread_cond_init(&ctx->cv, NULL);
        pthread_mutex_init(&ctx->send_mu, NULL);
        pthread_mutex_lock(&srv->mu);
        srv->active_calls++;
        pthread_mutex_unlock(&srv->mu);
    }
    if (slot->index == SIZE_MAX)
        grpc_call_details_destroy(&slot->details);
    slot->call = NULL;
    slot->payload = NULL;
    rpc_arm(slot);
    if (ctx)
        rpc_dispatch(ctx);
}

static void rpc_arm(rpc_slot *slot)
{
    rpc_server *srv = slot->port->srv;
    pthread_mutex_lock(&srv->mu);
    bool stop = srv->shutting_down;
    pthread_mutex_unlock(&srv->mu);
    if (stop)
        return;
    grpc_metadata_array_init(&slot->md);
    slot->payload = NULL;
    slot->tag.fn = rpc_on_new_call;
    grpc_call_error e;
    if (slot->index == SIZE_MAX) {
        grpc_call_details_init(&slot->details);
        e = grpc_server_request_call(slot->port->server, &slot->call, &slot->details, &slot->md, srv->cq,
                                     srv->cq, &slot->tag);
    } else {
        bool has_payload = slot->port->methods[slot->index]->kind != RPC_KIND_BIDI_STREAM;
        e = grpc_server_request_registered_call(
            slot->port->server, slot->handle, &slot->call, &slot->deadline, &slot->md,
            has_payload ? &slot->payload : NULL, srv->cq, srv->cq, &slot->tag);
    }
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&slot->md);
        if (slot->index == SIZE_MAX)
            grpc_call_details_destroy(&slot->details);
    }
}

/* ------------------------------------------------------------------ streams */

static void rpc_on_send(rpc_tag *tag, bool ok)
{
    rpc_ctx *ctx = RPC_CONTAINER_OF(tag, rpc_ctx, send_tag);
    pthread_mutex_lock(&ctx->mu);
    ctx->send_done = true;
    ctx->send_ok = ok;
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
    rpc_call_unref(ctx);
}

static void rpc_on_recv(rpc_tag *tag, bool ok)
{
    rpc_ctx *ctx = RPC_CONTAINER_OF(tag, rpc_ctx, recv_tag);
    pthread_mutex_lock(&ctx->mu);
    ctx->recv_done = true;
    ctx->recv_ok = ok;
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
    rpc_call_unref(ctx);
}

base_result rpc_stream_send(rpc_stream *s, const ProtobufCMessage *msg)
{
    rpc_ctx *ctx = (rpc_ctx *)s;
    base_result r = BASE_OK_RESULT;
    pthread_mutex_lock(&ctx->send_mu);
    if (atomic_load(&ctx->cancelled) || ctx->finished) {
        r = base_fail(BASE_ERR_UNAVAILABLE, "stream is closed");
        goto out;
    }
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!ctx->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        ctx->initial_md_sent = true;
    }
    ctx->send_buf = rpc_pack(msg);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = ctx->send_buf;
    n++;
    pthread_mutex_lock(&ctx->mu);
    ctx->send_done = false;
    pthread_mutex_unlock(&ctx->mu);
    ctx->send_tag.fn = rpc_on_send;
    atomic_fetch_add(&ctx->refs, 1);
    if (grpc_call_start_batch(ctx->call, ops, n, &ctx->send_tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&ctx->refs, 1);
        r = base_fail(BASE_ERR_INTERNAL, "stream send could not start");
    } else {
        pthread_mutex_lock(&ctx->mu);
        while (!ctx->send_done)
            pthread_cond_wait(&ctx->cv, &ctx->mu);
        bool ok = ctx->send_ok;
        pthread_mutex_unlock(&ctx->mu);
        if (!ok)
            r = base_fail(BASE_ERR_UNAVAILABLE, "stream is closed");
    }
    grpc_byte_buffer_destroy(ctx->send_buf);
    ctx->send_buf = NULL;
out:
    pthread_mutex_unlock(&ctx->send_mu);
    return r;
}

base_result rpc_stream_recv(rpc_stream *s, ProtobufCMessage **ret_msg, bool *ret_eof)
{
    rpc_ctx *ctx = (rpc_ctx *)s;
    if (atomic_load(&ctx->cancelled))
        return base_fail(BASE_ERR_UNAVAILABLE, "stream is closed");
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &ctx->recv_buf;
    ctx->recv_buf = NULL;
    pthread_mutex_lock(&ctx->mu);
    ctx->recv_done = false;
    pthread_mutex_unlock(&ctx->mu);
    ctx->recv_tag.fn = rpc_on_recv;
    atomic_fetch_add(&ctx->refs, 1);
    if (grpc_call_start_batch(ctx->call, &op, 1, &ctx->recv_tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&ctx->refs, 1);
        return base_fail(BASE_ERR_INTERNAL, "stream receive could not start");
    }
    pthread_mutex_lock(&ctx->mu);
    while (!ctx->recv_done)
        pthread_cond_wait(&ctx->cv, &ctx->mu);
    bool ok = ctx->recv_ok;
    pthread_mutex_unlock(&ctx->mu);
    if (!ok || atomic_load(&ctx->cancelled)) {
        if (ctx->recv_buf)
            grpc_byte_buffer_destroy(ctx->recv_buf);
        ctx->recv_buf = NULL;
        return base_fail(BASE_ERR_UNAVAILABLE, "stream is closed");
    }
    if (!ctx->recv_buf) {
        *ret_eof = true;
        return BASE_OK_RESULT;
    }
    ProtobufCMessage *m = NULL;
    const char *why = NULL;
    rpc_code code = rpc_decode(ctx, ctx->recv_buf, ctx->method->request, NULL, &m, &why);
    grpc_byte_buffer_destroy(ctx->recv_buf);
    ctx->recv_buf = NULL;
    if (code != RPC_OK)
        return base_fail(code == RPC_RESOURCE_EXHAUSTED ? BASE_ERR_LIMIT : BASE_ERR_INVALID, "%s", why);
    *ret_eof = false;
    *ret_msg = m;
    return BASE_OK_RESULT;
}

/* ------------------------------------------------------------------ the queue thread */

static void *rpc_cq_main(void *arg)
{
    rpc_server *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            rpc_tag *tag = ev.tag;
            tag->fn(tag, ev.success != 0);
        }
    }
    return NULL;
}

static void rpc_on_port_shutdown(rpc_tag *tag, bool ok)
{
    rpc_port *port = RPC_CONTAINER_OF(tag, rpc_port, shutdown_tag);
    (void)ok;
    pthread_mutex_lock(&port->srv->mu);
    port->shutdown_done = true;
    pthread_cond_broadcast(&port->srv->cv);
    pthread_mutex_unlock(&port->srv->mu);
}

/* ------------------------------------------------------------------ start / stop */

static base_result rpc_port_setup(rpc_server *srv, rpc_port *port, const char *addr, bool secure,
                                  const rpc_method *const *methods, const size_t *metric_index, size_t count)
{
    port->srv = srv;
    port->secure = secure;
    port->count = count;
    port->methods = calloc(count ? count : 1, sizeof *port->methods);
    port->metric_index = calloc(count ? count : 1, sizeof *port->metric_index);
    port->slots = calloc(count + 1, sizeof *port->slots);
    if (!port->methods || !port->metric_index || !port->slots)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    memcpy(port->methods, methods, count * sizeof *methods);
    memcpy(port->metric_index, metric_index, count * sizeof *metric_index);

    grpc_arg args[4];
    args[0] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0};
    args[1] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         .value.integer = (int)srv->cfg.max_message_bytes};
    args[2] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                         .value.integer = (int)srv->cfg.max_message_bytes};
    args[3] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_MAX_CONCURRENT_STREAMS,
                         .value.integer = (int)srv->cfg.max_concurrent_streams};
    grpc_channel_args ca = {.num_args = 4, .args = args};
    port->server = grpc_server_create(&ca, NULL);
    grpc_server_register_completion_queue(port->server, srv->cq, NULL);
    for (size_t i = 0; i < count; i++) {
        const rpc_method *m = methods[i];
        port->slots[i].port = port;
        port->slots[i].index = i;
        port->slots[i].handle = grpc_server_register_method(port->server, m->name, NULL,
                                                            m->kind == RPC_KIND_BIDI_STREAM
                                                                ? GRPC_SRM_PAYLOAD_NONE
                                                                : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                                            0);
        if (!port->slots[i].handle)
            return base_fail(BASE_ERR_INVALID, "method %s could not be registered (duplicate?)", m->name);
    }
    port->slots[count].port = port;
    port->slots[count].index = SIZE_MAX;

    grpc_server_credentials *creds = NULL;
    if (secure) {
        char *ca_pem = NULL, *cert_pem = NULL, *key_pem = NULL;
        base_result r = BASE_OK_RESULT;
        BASE_GUARD_GOTO(r, rpc_read_pem(srv->cfg.tls.ca, "tls-ca", &ca_pem), tls_out);
        BASE_GUARD_GOTO(r, rpc_read_pem(srv->cfg.tls.cert, "tls-cert", &cert_pem), tls_out);
        BASE_GUARD_GOTO(r, rpc_read_pem(srv->cfg.tls.key, "tls-key", &key_pem), tls_out);
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key_pem, .cert_chain = cert_pem};
        grpc_ssl_server_certificate_config *cc = grpc_ssl_server_certificate_config_create(ca_pem, &pair, 1);
        grpc_ssl_server_credentials_options *opts = grpc_ssl_server_credentials_create_options_using_config(
            GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, cc);
        creds = grpc_ssl_server_credentials_create_with_options(opts);
    tls_out:
        rpc_free_pem(key_pem);
        free(cert_pem);
        free(ca_pem);
        BASE_GUARD(r);
        if (!creds)
            return base_fail(BASE_ERR_INVALID,
                             "TLS credentials could not be created (check tls-cert/tls-key)");
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    port->bound_port = grpc_server_add_http2_port(port->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port->bound_port == 0)
        return base_fail(BASE_ERR_IO, "cannot listen on %s (in use, or a bad address or certificate)", addr);
    return BASE_OK_RESULT;
}

static void rpc_render_metrics(void *arg, FILE *out)
{
    rpc_server_write_metrics(arg, out);
}

base_result rpc_server_start(const rpc_server_config *cfg, rpc_server **ret)
{
    BASE_ENSURE(cfg->service_name && cfg->api_addr, BASE_ERR_INVALID,
                "service name and api address are required");
    BASE_ENSURE(cfg->insecure_api || (cfg->tls.cert && cfg->tls.key && cfg->tls.ca), BASE_ERR_INVALID,
                "tls-cert, tls-key and tls-ca are required for the API port");
    for (size_t i = 0; i < cfg->method_count; i++) {
        const rpc_method *m = &cfg->methods[i];
        BASE_ENSURE(m->name && m->name[0] == '/' && m->request && m->response, BASE_ERR_INVALID,
                    "method table entry lacks a name or message types");
        BASE_ENSURE(m->kind == RPC_KIND_UNARY ? m->unary != NULL : m->stream != NULL, BASE_ERR_INVALID,
                    "method table entry lacks the handler for its kind");
        BASE_ENSURE(!m->inline_handler || m->kind == RPC_KIND_UNARY, BASE_ERR_INVALID,
                    "only unary handlers can be inline");
    }
    rpc_server *srv = calloc(1, sizeof *srv);
    BASE_ENSURE(srv, BASE_ERR_NOMEM, "out of memory");
    base_result r = BASE_OK_RESULT;
    const rpc_method **list = NULL;
    size_t *idx = NULL;
    srv->cfg = *cfg;
    if (!srv->cfg.trust_domain)
        srv->cfg.trust_domain = "alma.local";
    if (srv->cfg.workers <= 0)
        srv->cfg.workers = 8;
    if (srv->cfg.max_queued <= 0)
        srv->cfg.max_queued = 1024;
    if (srv->cfg.max_message_bytes == 0)
        srv->cfg.max_message_bytes = 4u << 20;
    if (srv->cfg.max_concurrent_streams == 0)
        srv->cfg.max_concurrent_streams = 256;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    pthread_cond_init(&srv->work_cv, NULL);
    pthread_mutex_init(&srv->health.mu, NULL);
    pthread_cond_init(&srv->health.cv, NULL);
    srv->health.serving = true;
    srv->health.max_watchers = srv->cfg.workers / 2 > 0 ? srv->cfg.workers / 2 : 1;
    rpc_global_init();

    /* metrics rows: service methods, health Check and Watch, unknown */
    srv->metric_count = cfg->method_count + 3;
    srv->metrics = calloc(srv->metric_count, sizeof *srv->metrics);
    srv->metric_ptrs = calloc(srv->metric_count, sizeof *srv->metric_ptrs);
    list = calloc(cfg->method_count + 2, sizeof *list);
    idx = calloc(cfg->method_count + 2, sizeof *idx);
    srv->queue_cap = srv->cfg.max_queued;
    srv->queue = calloc((size_t)srv->queue_cap, sizeof *srv->queue);
    srv->workers = calloc((size_t)srv->cfg.workers, sizeof *srv->workers);
    if (!srv->metrics || !srv->metric_ptrs || !list || !idx || !srv->queue || !srv->workers) {
        r = base_fail(BASE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->method_count; i++)
        srv->metrics[i].name = cfg->methods[i].name;
    srv->metrics[cfg->method_count].name = rpc_health_methods[0].name;
    srv->metrics[cfg->method_count + 1].name = rpc_health_methods[1].name;
    srv->metrics[cfg->method_count + 2].name = "unknown";
    for (size_t i = 0; i < srv->metric_count; i++)
        srv->metric_ptrs[i] = &srv->metrics[i];

    srv->cq = grpc_completion_queue_create_for_next(NULL);
    for (size_t i = 0; i < cfg->method_count; i++) {
        list[i] = &cfg->methods[i];
        idx[i] = i;
    }
    for (size_t i = 0; i < 2; i++) {
        list[cfg->method_count + i] = &rpc_health_methods[i];
        idx[cfg->method_count + i] = cfg->method_count + i;
    }
    BASE_GUARD_GOTO(
        r,
        rpc_port_setup(srv, &srv->api, cfg->api_addr, !cfg->insecure_api, list, idx, cfg->method_count + 2),
        fail);
    if (cfg->admin_addr) {
        srv->has_admin = true;
        BASE_GUARD_GOTO(r,
                        rpc_port_setup(srv, &srv->admin, cfg->admin_addr, false, list + cfg->method_count,
                                       idx + cfg->method_count, 2),
                        fail);
    }
    if (cfg->metrics_addr)
        BASE_GUARD_GOTO(r,
                        rpc_metrics_http_start(cfg->metrics_addr, rpc_render_metrics, srv, &srv->metrics_http,
                                               &srv->metrics_port),
                        fail);
    grpc_server_start(srv->api.server);
    if (srv->has_admin)
        grpc_server_start(srv->admin.server);
    for (size_t i = 0; i <= srv->api.count; i++)
        rpc_arm(&srv->api.slots[i]);
    if (srv->has_admin)
        for (size_t i = 0; i <= srv->admin.count; i++)
            rpc_arm(&srv->admin.slots[i]);
    /* The queue thread first: shutting down (also after a failed start) needs it to see the tags. */
    if (pthread_create(&srv->cq_thread, NULL, rpc_cq_main, srv) != 0) {
        r = base_fail(BASE_ERR_NOMEM, "cannot start the completion-queue thread");
        goto fail_started_no_thread;
    }
    srv->cq_thread_started = true;
    for (int i = 0; i < srv->cfg.workers; i++) {
        if (pthread_create(&srv->workers[i], NULL, rpc_worker_main, srv) != 0) {
            r = base_fail(BASE_ERR_NOMEM, "cannot start worker threads");
            goto fail_started;
        }
        srv->worker_count++;
    }
    free(list);
    free(idx);
    *ret = srv;
    return BASE_OK_RESULT;

fail_started_no_thread:
    srv->stopped = true; /* fall through: free() drains the queue itself */
fail_started:
    free(list);
    free(idx);
    rpc_server_free(srv);
    return r;
fail:
    free(list);
    free(idx);
    /* Nothing started yet: the servers never ran, so they can be destroyed after a shutdown. */
    srv->stopped = true;
    rpc_server_free(srv);
    return r;
}

int rpc_server_api_port(const rpc_server *srv)
{
    return srv->api.bound_port;
}
int rpc_server_admin_port(const rpc_server *srv)
{
    return srv->has_admin ? srv->admin.bound_port : 0;
}
int rpc_server_metrics_port(const rpc_server *srv)
{
    return srv->metrics_port;
}

void rpc_server_set_serving(rpc_server *srv, bool serving)
{
    pthread_mutex_lock(&srv->health.mu);
    if (srv->health.serving != serving) {
        srv->health.serving = serving;
        srv->health.version++;
        pthread_cond_broadcast(&srv->health.cv);
    }
    pthread_mutex_unlock(&srv->health.mu);
}

static bool rpc_ports_down(rpc_server *srv)
{
    return (!srv->api.server || srv->api.shutdown_done) && (!srv->has_admin || srv->admin.shutdown_done);
}

int rpc_server_shutdown(rpc_server *srv, int drain_ms)
{
    if (srv->stopped)
        return 0;
    rpc_server_set_serving(srv, false);
    pthread_mutex_lock(&srv->health.mu);
    srv->health.closing = true; /* ends Watch streams so they do not hold up the drain */
    pthread_cond_broadcast(&srv->health.cv);
    pthread_mutex_unlock(&srv->health.mu);

    pthread_mutex_lock(&srv->mu);
    srv->shutting_down = true;
    pthread_mutex_unlock(&srv->mu);
    srv->api.shutdown_tag.fn = rpc_on_port_shutdown;
    if (srv->api.server)
        grpc_server_shutdown_and_notify(srv->api.server, srv->cq, &srv->api.shutdown_tag);
    if (srv->has_admin) {
        srv->admin.shutdown_tag.fn = rpc_on_port_shutdown;
        grpc_server_shutdown_and_notify(srv->admin.server, srv->cq, &srv->admin.shutdown_tag);
    }

    struct timespec until = base_time_after_ms(CLOCK_REALTIME, drain_ms);
    int cancelled = 0;
    pthread_mutex_lock(&srv->mu);
    while (srv->active_calls > 0) {
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &until) == ETIMEDOUT)
            break;
    }
    if (srv->active_calls > 0) {
        cancelled = (int)srv->active_calls;
        pthread_mutex_unlock(&srv->mu);
        if (srv->api.server)
            grpc_server_cancel_all_calls(srv->api.server);
        if (srv->has_admin)
            grpc_server_cancel_all_calls(srv->admin.server);
        pthread_mutex_lock(&srv->mu);
    }
    while (srv->active_calls > 0 || !rpc_ports_down(srv))
        pthread_cond_wait(&srv->cv, &srv->mu);
    srv->workers_stop = true;
    pthread_cond_broadcast(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < srv->worker_count; i++)
        pthread_join(srv->workers[i], NULL);
    srv->worker_count = 0;
    grpc_completion_queue_shutdown(srv->cq);
    if (srv->cq_thread_started) {
        pthread_join(srv->cq_thread, NULL);
        srv->cq_thread_started = false;
    }
    rpc_metrics_http_stop(srv->metrics_http);
    srv->metrics_http = NULL;
    srv->stopped = true;
    return cancelled;
}

static void rpc_port_free(rpc_port *port)
{
    if (port->server)
        grpc_server_destroy(port->server);
    free(port->methods);
    free(port->metric_index);
    free(port->slots);
}

void rpc_server_free(rpc_server *srv)
{
    if (!srv)
        return;
    if (!srv->stopped) {
        (void)rpc_server_shutdown(srv, 0);
    } else if (srv->cq && !srv->api.shutdown_done && srv->api.server) {
        /* Start failed before serving: shut the servers down without a queue thread. */
        srv->api.shutdown_tag.fn = rpc_on_port_shutdown;
        grpc_server_shutdown_and_notify(srv->api.server, srv->cq, &srv->api.shutdown_tag);
        if (srv->has_admin && srv->admin.server)
            grpc_server_shutdown_and_notify(srv->admin.server, srv->cq, &srv->admin.shutdown_tag);
        grpc_server_cancel_all_calls(srv->api.server);
        grpc_completion_queue_shutdown(srv->cq);
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN)
                break;
        }
    } else if (srv->cq) {
        grpc_completion_queue_shutdown(srv->cq);
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN)
                break;
        }
    }
    rpc_port_free(&srv->api);
    if (srv->has_admin)
        rpc_port_free(&srv->admin);
    if (srv->cq)
        grpc_completion_queue_destroy(srv->cq);
    rpc_metrics_http_stop(srv->metrics_http);
    free(srv->metrics);
    free(srv->metric_ptrs);
    free(srv->queue);
    free(srv->workers);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    pthread_cond_destroy(&srv->work_cv);
    pthread_mutex_destroy(&srv->health.mu);
    pthread_cond_destroy(&srv->health.cv);
    free(srv);
    rpc_global_shutdown();
}

void rpc_server_write_metrics(rpc_server *srv, FILE *out)
{
    pthread_mutex_lock(&srv->mu);
    long inflight = srv->active_calls;
    long queued = srv->queue_len;
    pthread_mutex_unlock(&srv->mu);
    rpc_metrics_write(out, srv->cfg.service_name, srv->metric_ptrs, srv->metric_count, inflight, queued);
}
