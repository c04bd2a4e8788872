/* The suite's RPC runtime on gRPC C core with protobuf-c. The only code in the suite that includes
 * grpc/grpc.h is under common/rpc (bench/ measures the transport itself and is the one exception).
 *
 * Server model (shared/design/GRPC-C-CORE.md): one completion-queue thread drives every call; handlers
 * run on a fixed pool of worker threads so they may block on Postgres or Redis; a handler marked
 * `inline` (never blocks) runs on the queue thread and answers in one batch — the fast path.
 *
 * A service describes itself with a table of rpc_method: full name, kind, message descriptors,
 * handler, and which peer services (the `sa/<name>` of their SPIFFE id) may call it. Deny by default.
 *
 * Memory: each call has an arena (rpc_ctx_alloc / rpc_ctx_strdup) freed when the call ends. The
 * request is unpacked into it; a unary handler fills a response the runtime allocated and initialised,
 * pointing its fields at the request, at static data or at arena memory. Nothing to free by hand. The
 * arena is wiped (explicit_bzero) before it is freed. */
#ifndef ALMA_RPC_H
#define ALMA_RPC_H

#include "base/result.h"

#include <protobuf-c/protobuf-c.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

/* gRPC status codes (same numbers as grpc_status_code). Never UNKNOWN from our own code. */
typedef enum rpc_code {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16,
} rpc_code;
#define RPC_CODE_COUNT 17

const char *rpc_code_name(rpc_code code); /* "OK", "INVALID_ARGUMENT", ... */
/* The status a base_err maps to (BASE_ERR_INVALID -> INVALID_ARGUMENT, ...; never UNKNOWN). */
rpc_code rpc_code_from_err(base_err err);

typedef struct rpc_ctx rpc_ctx;
typedef struct rpc_stream rpc_stream;

typedef enum rpc_kind { RPC_KIND_UNARY, RPC_KIND_SERVER_STREAM, RPC_KIND_BIDI_STREAM } rpc_kind;

/* A unary handler: `req` is the decoded request, `resp` a response message already initialised
 * (of the method's response type). Return RPC_OK, or rpc_fail(ctx, code, "safe message"). */
typedef rpc_code (*rpc_unary_fn)(rpc_ctx *ctx, const void *req, void *resp);
/* A streaming handler. Server streaming: `req` is the one request; bidi: `req` is NULL and the
 * handler reads with rpc_stream_recv. Responses go out with rpc_stream_send. Its return is the status. */
typedef rpc_code (*rpc_stream_fn)(rpc_ctx *ctx, const void *req, rpc_stream *stream);

#define RPC_ANY_PEER "*" /* in allowed_peers: any authenticated peer of our trust domain */

typedef struct rpc_method {
    const char *name; /* full method name: "/alma.echo.v1.Echo/Echo" */
    rpc_kind kind;
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    rpc_unary_fn unary;   /* for RPC_KIND_UNARY */
    rpc_stream_fn stream; /* for the streaming kinds */
    /* NULL-terminated list of peer service names allowed to call ({RPC_ANY_PEER, NULL} for any);
     * NULL denies every caller. */
    const char *const *allowed_peers;
    bool inline_handler;        /* never blocks: runs on the queue thread (unary only) */
    uint32_t max_request_bytes; /* 0 = the server's max_message_bytes */
} rpc_method;

/* ---- inside a handler ---- */

/* Record a status message safe to show the caller (no PHI, no secrets) and return `code`. */
rpc_code rpc_fail(rpc_ctx *ctx, rpc_code code, const char *fmt, ...) BASE_PRINTF(3, 4);
/* rpc_fail with the code mapped from a base_result and its message (base_error_message()). */
rpc_code rpc_fail_result(rpc_ctx *ctx, base_result r);

void *rpc_ctx_alloc(rpc_ctx *ctx, size_t n); /* zeroed, freed with the call; NULL on exhaustion */
/* The arena as a protobuf-c allocator: unpack a message (decrypted PHI, say) that lives and dies with the
 * call. The arena is wiped when the call ends. */
ProtobufCAllocator *rpc_ctx_pb_allocator(rpc_ctx *ctx);
char *rpc_ctx_strdup(rpc_ctx *ctx, const char *s);
char *rpc_ctx_printf(rpc_ctx *ctx, const char *fmt, ...) BASE_PRINTF(2, 3);

const char *rpc_ctx_method(const rpc_ctx *ctx);
/* The caller's SPIFFE id and its service name ("" on the plaintext admin port or insecure mode). */
const char *rpc_ctx_peer_id(const rpc_ctx *ctx);
const char *rpc_ctx_peer_service(const rpc_ctx *ctx);
/* Request metadata: `authorization` ("" if absent), the request id (from x-request-id, or generated),
 * `traceparent` ("" if absent or malformed). */
const char *rpc_ctx_authorization(const rpc_ctx *ctx);
const char *rpc_ctx_request_id(const rpc_ctx *ctx);
const char *rpc_ctx_traceparent(const rpc_ctx *ctx);
/* The end user's network address as a front service (the gateway) forwarded it in x-alma-client-addr
 * metadata: IPv4/IPv6 text, at most RPC_CLIENT_ADDR_MAX characters; "" when absent or malformed. Any peer
 * can send it: trust it only from a peer whose job is to set it (check rpc_ctx_peer_service first). */
const char *rpc_ctx_client_addr(const rpc_ctx *ctx);
#define RPC_CLIENT_ADDR_METADATA "x-alma-client-addr"
#define RPC_CLIENT_ADDR_MAX      45
/* Milliseconds left before the caller's deadline (INT64_MAX if none; <= 0 when passed). */
int64_t rpc_ctx_remaining_ms(const rpc_ctx *ctx);
/* True once the caller cancelled, the deadline passed, or the server is shutting down hard. */
bool rpc_ctx_cancelled(const rpc_ctx *ctx);
/* Per-service state given to rpc_server_create. */
void *rpc_ctx_service_state(const rpc_ctx *ctx);

/* Streams (from the handler's worker thread; send and recv may run on two different threads).
 * Both fail with BASE_ERR_UNAVAILABLE once the call is cancelled or finished. */
BASE_MUST_USE base_result rpc_stream_send(rpc_stream *s, const ProtobufCMessage *msg);
/* Bidi: the next request (free with protobuf_c_message_free_unpacked(msg, NULL)), or *ret_eof when
 * the client half-closed. Bad bytes -> BASE_ERR_INVALID. */
BASE_MUST_USE base_result rpc_stream_recv(rpc_stream *s, ProtobufCMessage **ret_msg, bool *ret_eof);

/* ---- server ---- */

typedef struct rpc_tls_files {
    const char *cert; /* PEM certificate chain file */
    const char *key;  /* PEM private key file */
    const char *ca;   /* PEM CA bundle that signs peers */
} rpc_tls_files;

typedef struct rpc_server_config {
    const char *service_name; /* "echo": metrics label and health service */
    const char *api_addr;     /* "127.0.0.1:7443" (":0" picks a free port) */
    const char *admin_addr;   /* plaintext gRPC health only; NULL = none */
    const char *metrics_addr; /* plaintext HTTP /metrics; NULL = none */
    rpc_tls_files tls;        /* required unless insecure_api */
    bool insecure_api;        /* plaintext API port: development and benchmarks only */
    const char *trust_domain; /* peers must be spiffe://<trust_domain>/... */
    int workers;              /* handler threads */
    int max_queued;           /* calls waiting for a worker before RESOURCE_EXHAUSTED */
    uint32_t max_message_bytes;
    uint32_t max_concurrent_streams; /* per connection */
    const rpc_method *methods;
    size_t method_count;
    void *service_state; /* handed to handlers by rpc_ctx_service_state */
    /* Called on the thread that finished a call (no PHI is passed): an access-log hook. */
    void (*on_call_done)(const char *method, rpc_code code, int64_t micros, const char *request_id,
                         const char *peer_service);
} rpc_server_config;

typedef struct rpc_server rpc_server;

/* Bind the ports and start serving (threads started). Failure names what failed (bind, certificate). */
BASE_MUST_USE base_result rpc_server_start(const rpc_server_config *cfg, rpc_server **ret);
/* The ports actually bound (useful with ":0"). 0 when not configured. */
int rpc_server_api_port(const rpc_server *srv);
int rpc_server_admin_port(const rpc_server *srv);
int rpc_server_metrics_port(const rpc_server *srv);
/* Health status of the whole server (service "") and of cfg->service_name. */
void rpc_server_set_serving(rpc_server *srv, bool serving);
/* Stop accepting calls, let in-flight calls finish for up to drain_ms, cancel the rest, stop threads.
 * Returns the number of calls that had to be cancelled. */
int rpc_server_shutdown(rpc_server *srv, int drain_ms);
void rpc_server_free(rpc_server *srv); /* shuts down first if needed; NULL ok */
/* Prometheus text exposition of the server's metrics into `out`. */
void rpc_server_write_metrics(rpc_server *srv, FILE *out);

/* ---- client ---- */

typedef struct rpc_channel rpc_channel;

typedef struct rpc_client_tls {
    rpc_tls_files files;     /* our client certificate, key, and the CA that signs servers
                              * (cert NULL: no client certificate; every API port refuses that) */
    const char *server_name; /* expected name in the server certificate; NULL = host of target */
} rpc_client_tls;

/* A channel to `target` ("host:port"). tls NULL = plaintext (admin port, tests). */
BASE_MUST_USE base_result rpc_channel_open(const char *target, const rpc_client_tls *tls, rpc_channel **ret);
void rpc_channel_close(rpc_channel *ch); /* NULL ok */

typedef struct rpc_call_opts {
    int timeout_ms;            /* 0 = 10 s; capped by the parent's deadline */
    const char *authorization; /* sent as `authorization` metadata; NULL none */
    const char *request_id;    /* NULL: the parent's, or a new one */
    const rpc_ctx *parent;     /* propagate deadline, cancellation, request id, traceparent */
    bool wait_for_ready;       /* wait for a server that is still starting, within the timeout */
    const char *client_addr; /* the end user's address to forward (x-alma-client-addr); NULL: the parent's */
} rpc_call_opts;

typedef struct rpc_status {
    rpc_code code;
    char message[256];
} rpc_status;

/* A unary call with protobuf-c messages. On RPC_OK *ret_resp is the decoded response (free with
 * protobuf_c_message_free_unpacked(resp, NULL)). Any other code: *ret_resp untouched, st says why. */
rpc_code rpc_call_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *opts,
                        ProtobufCMessage **ret_resp, rpc_status *st);

/* Client streams: open, send (zero or more), close_send, recv until eof, finish. Thread-safe for one
 * sender and one receiver. */
typedef struct rpc_client_stream rpc_client_stream;
BASE_MUST_USE base_result rpc_client_stream_open(rpc_channel *ch, const char *method,
                                                 const rpc_call_opts *opts, rpc_client_stream **ret);
BASE_MUST_USE base_result rpc_client_stream_send(rpc_client_stream *s, const ProtobufCMessage *msg);
BASE_MUST_USE base_result rpc_client_stream_close_send(rpc_client_stream *s);
BASE_MUST_USE base_result rpc_client_stream_recv(rpc_client_stream *s, const ProtobufCMessageDescriptor *desc,
                                                 ProtobufCMessage **ret_msg, bool *ret_eof);
/* Cancel the call (from any thread); the peer sees CANCELLED. */
void rpc_client_stream_cancel(rpc_client_stream *s);
/* Wait for the final status. */
rpc_code rpc_client_stream_finish(rpc_client_stream *s, rpc_status *st);
void rpc_client_stream_free(rpc_client_stream *s); /* cancels if not finished; NULL ok */

/* ---- process-wide ---- */

/* gRPC's own log (TLS handshake failures are only visible there) goes to this sink. */
void rpc_set_log_sink(void (*sink)(int severity /* 0 debug, 1 info, 2 error */, const char *file, int line,
                                   const char *message));
/* Reference-counted grpc_init / grpc_shutdown. Servers and channels call it themselves. */
void rpc_global_init(void);
void rpc_global_shutdown(void);

/* A new request id (36-char UUID) into buf (>= 37 bytes). */
void rpc_new_request_id(char *buf, size_t n);

/* Check that the protobuf wire bytes in `data` hold no string field with a NUL byte or invalid UTF-8,
 * at any nesting depth (protobuf-c would silently truncate at a NUL). BASE_ERR_INVALID if they do. */
BASE_MUST_USE base_result rpc_wire_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                                 size_t len);

#endif
