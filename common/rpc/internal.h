/* Private to common/rpc: shared between server.c, client.c, health.c, metrics.c. */
#ifndef ALMA_RPC_INTERNAL_H
#define ALMA_RPC_INTERNAL_H

#include "rpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>

/* Every completion-queue tag begins with the function the queue thread calls for it. */
typedef struct rpc_tag {
    void (*fn)(struct rpc_tag *tag, bool ok);
} rpc_tag;

#define RPC_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- per-call arena (also a ProtobufCAllocator for unpacking requests) ---- */
typedef struct rpc_arena_block rpc_arena_block;
typedef struct rpc_arena {
    rpc_arena_block *head;
    size_t total;
    size_t limit;
    ProtobufCAllocator allocator;
} rpc_arena;
void rpc_arena_init(rpc_arena *a, size_t limit);
void *rpc_arena_alloc(rpc_arena *a, size_t n);
void rpc_arena_free_all(rpc_arena *a);

/* ---- byte buffers ---- */
/* Pack a message into a new byte buffer (NULL on allocation failure). */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg);
/* Flatten a byte buffer; the slice must be unreffed by the caller. */
grpc_slice rpc_flatten(grpc_byte_buffer *bb);

/* ---- metrics ---- */
#define RPC_LATENCY_BUCKETS 14
typedef struct rpc_method_metrics {
    const char *name;
    atomic_uint_fast64_t calls[RPC_CODE_COUNT];
    atomic_uint_fast64_t buckets[RPC_LATENCY_BUCKETS + 1]; /* last = +Inf */
    atomic_uint_fast64_t sum_micros;
} rpc_method_metrics;
void rpc_metrics_observe(rpc_method_metrics *m, rpc_code code, int64_t micros);
void rpc_metrics_write(FILE *out, const char *service, rpc_method_metrics *const *methods, size_t n,
                       long inflight, long queued);

typedef struct rpc_metrics_http rpc_metrics_http;
BASE_MUST_USE base_result rpc_metrics_http_start(const char *addr, void (*render)(void *arg, FILE *out),
                                                 void *arg, rpc_metrics_http **ret, int *ret_port);
void rpc_metrics_http_stop(rpc_metrics_http *h);

/* ---- health (grpc.health.v1) ---- */
typedef struct rpc_health {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool serving;
    bool closing;
    uint64_t version;
    int watchers;     /* Watch streams open; each holds a worker thread */
    int max_watchers; /* at most half the workers, so probes cannot starve the service */
} rpc_health;
extern const rpc_method rpc_health_methods[2]; /* Check (inline), Watch (server streaming) */

/* Accessors the health handlers need from the server. */
rpc_health *rpc_ctx_health(const rpc_ctx *ctx);
const char *rpc_ctx_server_name(const rpc_ctx *ctx);

/* The address part of "host:port" for TLS name checks; writes into buf. */
void rpc_target_host(const char *target, char *buf, size_t n);

/* Read a PEM file (bounded size) for TLS; `what` names the setting in errors. Free with rpc_free_pem
 * (wipes it: the key file is a secret). */
BASE_MUST_USE base_result rpc_read_pem(const char *path, const char *what, char **ret);
void rpc_free_pem(char *pem);
/* The grpc_call behind a server ctx (client calls made from a handler propagate from it). */
grpc_call *rpc_ctx_grpc_call(const rpc_ctx *ctx);

gpr_timespec rpc_deadline_from_ms(int64_t ms);
int64_t rpc_now_micros(void);

#endif
