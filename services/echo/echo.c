/* The runtime's demo service: handlers for alma.echo.v1.Echo. It holds no data and talks to nothing,
 * which makes it the baseline every other service is measured against. */
#include "echo.h"

#include "echo/v1/echo.pb-c.h"

#include <time.h>

/* Bounds on what a caller may ask of us. */
#define ECHO_MAX_DELAY_MS    60000u
#define ECHO_MAX_COUNT       10000u
#define ECHO_MAX_INTERVAL_MS 10000u
#define ECHO_MAX_MESSAGE     65536u

static const char *const echo_any_peer[] = {RPC_ANY_PEER, NULL};

static void echo_fill(rpc_ctx *ctx, Alma__Echo__V1__EchoResponse *resp, const char *message, uint32_t index)
{
    resp->message = (char *)message;
    resp->index = index;
    resp->peer_identity = (char *)rpc_ctx_peer_id(ctx);
    resp->request_id = (char *)rpc_ctx_request_id(ctx);
}

/* Sleeps in short steps so a cancelled call or a passed deadline ends the wait early. */
static bool echo_sleep(rpc_ctx *ctx, uint32_t ms)
{
    for (uint32_t slept = 0; slept < ms; slept += 10) {
        if (rpc_ctx_cancelled(ctx))
            return false;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return !rpc_ctx_cancelled(ctx);
}

static rpc_code echo_check(rpc_ctx *ctx, const Alma__Echo__V1__EchoRequest *req)
{
    if (strlen(req->message) > ECHO_MAX_MESSAGE)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "message is longer than %u bytes", ECHO_MAX_MESSAGE);
    if (req->delay_ms > ECHO_MAX_DELAY_MS)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "delay_ms must be at most %u", ECHO_MAX_DELAY_MS);
    return RPC_OK;
}

static rpc_code echo_echo(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Echo__V1__EchoRequest *req = reqp;
    rpc_code code = echo_check(ctx, req);
    if (code != RPC_OK)
        return code;
    if (req->delay_ms && !echo_sleep(ctx, req->delay_ms))
        return rpc_fail(ctx, RPC_CANCELLED, "call ended before the delay passed");
    echo_fill(ctx, respp, req->message, 0);
    return RPC_OK;
}

static rpc_code echo_echo_inline(rpc_ctx *ctx, const void *reqp, void *respp)
{
    const Alma__Echo__V1__EchoRequest *req = reqp;
    rpc_code code = echo_check(ctx, req);
    if (code != RPC_OK)
        return code;
    if (req->delay_ms)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "delay_ms must be 0 for EchoInline (use Echo)");
    echo_fill(ctx, respp, req->message, 0);
    return RPC_OK;
}

static rpc_code echo_expand(rpc_ctx *ctx, const void *reqp, rpc_stream *stream)
{
    const Alma__Echo__V1__ExpandRequest *req = reqp;
    if (strlen(req->message) > ECHO_MAX_MESSAGE)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "message is longer than %u bytes", ECHO_MAX_MESSAGE);
    if (req->count > ECHO_MAX_COUNT)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "count must be at most %u", ECHO_MAX_COUNT);
    if (req->interval_ms > ECHO_MAX_INTERVAL_MS)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "interval_ms must be at most %u", ECHO_MAX_INTERVAL_MS);
    for (uint32_t i = 0; i < req->count; i++) {
        if (i && req->interval_ms && !echo_sleep(ctx, req->interval_ms))
            return rpc_fail(ctx, RPC_CANCELLED, "call ended");
        Alma__Echo__V1__EchoResponse resp = ALMA__ECHO__V1__ECHO_RESPONSE__INIT;
        echo_fill(ctx, &resp, req->message, i);
        if (!base_is_ok(rpc_stream_send(stream, &resp.base)))
            return rpc_fail(ctx, RPC_CANCELLED, "call ended");
    }
    return RPC_OK;
}

static rpc_code echo_chat(rpc_ctx *ctx, const void *unused, rpc_stream *stream)
{
    (void)unused;
    for (uint32_t i = 0;; i++) {
        ProtobufCMessage *m = NULL;
        bool eof = false;
        base_result r = rpc_stream_recv(stream, &m, &eof);
        if (!base_is_ok(r))
            return r.err == BASE_ERR_UNAVAILABLE ? rpc_fail(ctx, RPC_CANCELLED, "call ended")
                                                 : rpc_fail_result(ctx, r);
        if (eof)
            return RPC_OK;
        Alma__Echo__V1__EchoRequest *req = (Alma__Echo__V1__EchoRequest *)m;
        rpc_code code = echo_check(ctx, req);
        if (code == RPC_OK) {
            Alma__Echo__V1__EchoResponse resp = ALMA__ECHO__V1__ECHO_RESPONSE__INIT;
            echo_fill(ctx, &resp, req->message, i);
            if (!base_is_ok(rpc_stream_send(stream, &resp.base)))
                code = rpc_fail(ctx, RPC_CANCELLED, "call ended");
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (code != RPC_OK)
            return code;
    }
}

const rpc_method echo_methods[] = {
    {
        .name = "/alma.echo.v1.Echo/Echo",
        .kind = RPC_KIND_UNARY,
        .request = &alma__echo__v1__echo_request__descriptor,
        .response = &alma__echo__v1__echo_response__descriptor,
        .unary = echo_echo,
        .allowed_peers = echo_any_peer,
    },
    {
        .name = "/alma.echo.v1.Echo/EchoInline",
        .kind = RPC_KIND_UNARY,
        .request = &alma__echo__v1__echo_request__descriptor,
        .response = &alma__echo__v1__echo_response__descriptor,
        .unary = echo_echo_inline,
        .allowed_peers = echo_any_peer,
        .inline_handler = true,
    },
    {
        .name = "/alma.echo.v1.Echo/Expand",
        .kind = RPC_KIND_SERVER_STREAM,
        .request = &alma__echo__v1__expand_request__descriptor,
        .response = &alma__echo__v1__echo_response__descriptor,
        .stream = echo_expand,
        .allowed_peers = echo_any_peer,
    },
    {
        .name = "/alma.echo.v1.Echo/Chat",
        .kind = RPC_KIND_BIDI_STREAM,
        .request = &alma__echo__v1__echo_request__descriptor,
        .response = &alma__echo__v1__echo_response__descriptor,
        .stream = echo_chat,
        .allowed_peers = echo_any_peer,
    },
};
const size_t echo_method_count = BASE_ARRAY_LEN(echo_methods);
