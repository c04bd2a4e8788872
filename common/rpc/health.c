/* grpc.health.v1.Health, served on the API port (to authenticated peers) and the plaintext admin port
 * (Kubernetes probes cannot do TLS). The server has one status for "" and for its own service name;
 * any other service name is NOT_FOUND, as the health protocol specifies. */
#include "internal.h"
#include "base/clock.h"

#include "grpc/health/v1/health.pb-c.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static const char *const rpc_health_peers[] = {RPC_ANY_PEER, NULL};

static bool rpc_health_known(const rpc_ctx *ctx, const char *service)
{
    return service[0] == '\0' || strcmp(service, rpc_ctx_server_name(ctx)) == 0;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus rpc_health_status(bool serving)
{
    return serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static rpc_code rpc_health_check(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Grpc__Health__V1__HealthCheckRequest *req = reqp;
    Grpc__Health__V1__HealthCheckResponse *resp = respp;
    if (!rpc_health_known(ctx, req->service))
        return rpc_fail(ctx, RPC_NOT_FOUND, "unknown service");
    rpc_health *h = rpc_ctx_health(ctx);
    pthread_mutex_lock(&h->mu);
    resp->status = rpc_health_status(h->serving);
    pthread_mutex_unlock(&h->mu);
    return RPC_OK;
}

static rpc_code rpc_health_watch_loop(rpc_ctx *ctx, rpc_health *h, bool known, rpc_stream *stream);

/* Sends the status now and at every change, until the caller leaves or the server shuts down. */
static rpc_code rpc_health_watch(rpc_ctx *ctx, const void *reqp, rpc_stream *stream)
{
    const Grpc__Health__V1__HealthCheckRequest *req = reqp;
    rpc_health *h = rpc_ctx_health(ctx);
    bool known = rpc_health_known(ctx, req->service);
    pthread_mutex_lock(&h->mu);
    bool admitted = h->watchers < h->max_watchers;
    if (admitted)
        h->watchers++;
    pthread_mutex_unlock(&h->mu);
    if (!admitted)
        return rpc_fail(ctx, RPC_RESOURCE_EXHAUSTED, "too many health watchers; use Check");
    rpc_code code = rpc_health_watch_loop(ctx, h, known, stream);
    pthread_mutex_lock(&h->mu);
    h->watchers--;
    pthread_mutex_unlock(&h->mu);
    return code;
}

static rpc_code rpc_health_watch_loop(rpc_ctx *ctx, rpc_health *h, bool known, rpc_stream *stream)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    uint64_t seen = UINT64_MAX;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (h->version == seen && !h->closing && !rpc_ctx_cancelled(ctx)) {
            /* Wake up now and then to notice a cancelled caller. */
            struct timespec until = base_time_after_ms(CLOCK_REALTIME, 200);
            (void)pthread_cond_timedwait(&h->cv, &h->mu, &until);
        }
        bool closing = h->closing;
        bool changed = h->version != seen;
        seen = h->version;
        resp.status = known ? rpc_health_status(h->serving)
                            : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        pthread_mutex_unlock(&h->mu);
        if (rpc_ctx_cancelled(ctx))
            return RPC_CANCELLED;
        if (changed && !base_is_ok(rpc_stream_send(stream, &resp.base)))
            return RPC_CANCELLED;
        if (closing)
            return rpc_fail(ctx, RPC_UNAVAILABLE, "server is shutting down");
    }
}

const rpc_method rpc_health_methods[2] = {
    {
        .name = "/grpc.health.v1.Health/Check",
        .kind = RPC_KIND_UNARY,
        .request = &grpc__health__v1__health_check_request__descriptor,
        .response = &grpc__health__v1__health_check_response__descriptor,
        .unary = rpc_health_check,
        .allowed_peers = rpc_health_peers,
        .inline_handler = true,
        .max_request_bytes = 1024,
    },
    {
        .name = "/grpc.health.v1.Health/Watch",
        .kind = RPC_KIND_SERVER_STREAM,
        .request = &grpc__health__v1__health_check_request__descriptor,
        .response = &grpc__health__v1__health_check_response__descriptor,
        .stream = rpc_health_watch,
        .allowed_peers = rpc_health_peers,
        .max_request_bytes = 1024,
    },
};
