/* Integration tests of the RPC runtime: a real server in this process serving the echo handlers on
 * loopback with mTLS (dev PKI from the harness), called through the runtime's own client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "echo.h"
#include "echo/v1/echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc_test.pb-c.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ECHO "/alma.echo.v1.Echo/Echo"

static const char *const only_test_client[] = {"test-client", NULL};

/* The echo table, with Echo narrowed to the test-client identity and a small request limit, plus Relay. */
static rpc_method test_methods[8];
static size_t test_method_count;

/* Relay: a handler that calls this same server's Echo (delay 3 s) with the incoming call as parent, so the
 * inner call inherits the caller's deadline and request id. What the inner call saw is kept here. */
static char relay_target[64];
static rpc_code relay_inner_code;
static int64_t relay_inner_ms;
static char relay_inner_request_id[65];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rpc_code relay(rpc_ctx *ctx, const void *reqp, void *respp)
{
    rpc_client_tls t = {.files = {.cert = testenv_pki("test-client.pem"),
                                  .key = testenv_pki("test-client-key.pem"),
                                  .ca = testenv_pki("ca.pem")},
                        .server_name = "localhost"};
    rpc_channel *ch = NULL;
    if (!base_is_ok(rpc_channel_open(relay_target, &t, &ch)))
        return rpc_fail(ctx, RPC_INTERNAL, "relay channel");
    Alma__Echo__V1__EchoRequest req = ALMA__ECHO__V1__ECHO_REQUEST__INIT;
    req.message = (char *)((const Alma__Echo__V1__EchoRequest *)reqp)->message;
    req.delay_ms = 3000;
    rpc_call_opts o = {.timeout_ms = 20000, .parent = ctx};
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    int64_t t0 = now_ms();
    relay_inner_code = rpc_call_unary(ch, "/alma.echo.v1.Echo/Echo", &req.base,
                                      &alma__echo__v1__echo_response__descriptor, &o, &resp, &st);
    relay_inner_ms = now_ms() - t0;
    if (resp) {
        snprintf(relay_inner_request_id, sizeof relay_inner_request_id, "%s",
                 ((Alma__Echo__V1__EchoResponse *)resp)->request_id);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_close(ch);
    (void)respp;
    return relay_inner_code == RPC_OK ? RPC_OK : rpc_fail(ctx, relay_inner_code, "inner call failed");
}

static const char *const any_peer[] = {RPC_ANY_PEER, NULL};

/* Answers with the forwarded end-user address it was given ("" when none or malformed). */
static rpc_code who_is(rpc_ctx *ctx, const void *reqp, void *respp)
{
    (void)reqp;
    ((Alma__Echo__V1__EchoResponse *)respp)->message = (char *)rpc_ctx_client_addr(ctx);
    return RPC_OK;
}

typedef struct fixture {
    rpc_server *srv;
    char api[64], admin[64];
    int metrics_port;
} fixture;

static rpc_client_tls tls_for(const char *name, const char *ca)
{
    static char cert[8][512], key[8][512];
    static int slot;
    int i = slot++ % 8;
    snprintf(cert[i], sizeof cert[i], "%s", testenv_pki(name));
    size_t n = strlen(cert[i]);
    snprintf(key[i], sizeof key[i], "%.*s-key.pem", (int)(n - 4), cert[i]);
    rpc_client_tls t = {.files = {.cert = cert[i], .key = key[i], .ca = testenv_pki(ca)},
                        .server_name = "localhost"};
    return t;
}

static int setup(void **state)
{
    memcpy(test_methods, echo_methods, echo_method_count * sizeof *echo_methods);
    test_methods[0].allowed_peers = only_test_client;
    test_methods[0].max_request_bytes = 1024;
    test_methods[echo_method_count] = (rpc_method){
        .name = "/alma.echo.v1.Echo/Relay",
        .kind = RPC_KIND_UNARY,
        .request = &alma__echo__v1__echo_request__descriptor,
        .response = &alma__echo__v1__echo_response__descriptor,
        .unary = relay,
        .allowed_peers = any_peer,
    };
    test_methods[echo_method_count + 1] = (rpc_method){
        .name = "/alma.echo.v1.Echo/WhoIs",
        .kind = RPC_KIND_UNARY,
        .request = &alma__echo__v1__echo_request__descriptor,
        .response = &alma__echo__v1__echo_response__descriptor,
        .unary = who_is,
        .allowed_peers = any_peer,
    };
    test_method_count = echo_method_count + 2;
    fixture *f = calloc(1, sizeof *f);
    rpc_server_config cfg = {
        .service_name = "echo",
        .api_addr = "127.0.0.1:0",
        .admin_addr = "127.0.0.1:0",
        .metrics_addr = "127.0.0.1:0",
        .tls = {strdup(testenv_pki("echo.pem")), strdup(testenv_pki("echo-key.pem")),
                strdup(testenv_pki("ca.pem"))},
        .trust_domain = "alma.local",
        .workers = 4,
        .methods = test_methods,
        .method_count = test_method_count,
    };
    base_result r = rpc_server_start(&cfg, &f->srv);
    if (!base_is_ok(r))
        fprintf(stderr, "server start: %s\n", base_error_message());
    assert_true(base_is_ok(r));
    free((void *)cfg.tls.cert);
    free((void *)cfg.tls.key);
    free((void *)cfg.tls.ca);
    snprintf(f->api, sizeof f->api, "127.0.0.1:%d", rpc_server_api_port(f->srv));
    snprintf(f->admin, sizeof f->admin, "127.0.0.1:%d", rpc_server_admin_port(f->srv));
    f->metrics_port = rpc_server_metrics_port(f->srv);
    snprintf(relay_target, sizeof relay_target, "%s", f->api);
    assert_true(rpc_server_api_port(f->srv) > 0 && rpc_server_admin_port(f->srv) > 0 && f->metrics_port > 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(rpc_server_shutdown(f->srv, 2000), 0);
    rpc_server_free(f->srv);
    free(f);
    return 0;
}

static rpc_channel *open_as(const fixture *f, const char *who, const char *ca)
{
    rpc_client_tls t = tls_for(who, ca);
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(f->api, &t, &ch)));
    return ch;
}

static rpc_code echo_call(rpc_channel *ch, const char *method, const char *msg, uint32_t delay,
                          int timeout_ms, Alma__Echo__V1__EchoResponse **ret, rpc_status *st)
{
    Alma__Echo__V1__EchoRequest req = ALMA__ECHO__V1__ECHO_REQUEST__INIT;
    req.message = (char *)msg;
    req.delay_ms = delay;
    rpc_call_opts o = {.timeout_ms = timeout_ms, .request_id = "req-test-1"};
    ProtobufCMessage *resp = NULL;
    rpc_code c =
        rpc_call_unary(ch, method, &req.base, &alma__echo__v1__echo_response__descriptor, &o, &resp, st);
    if (c == RPC_OK && ret)
        *ret = (Alma__Echo__V1__EchoResponse *)resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

static void test_unary_mtls(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    Alma__Echo__V1__EchoResponse *resp = NULL;
    rpc_status st;
    assert_int_equal(echo_call(ch, ECHO, "hello", 0, 5000, &resp, &st), RPC_OK);
    assert_string_equal(resp->message, "hello");
    assert_string_equal(resp->peer_identity, "spiffe://alma.local/ns/alma/sa/test-client");
    assert_string_equal(resp->request_id, "req-test-1");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    resp = NULL;
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/EchoInline", "fast", 0, 5000, &resp, &st), RPC_OK);
    assert_string_equal(resp->message, "fast");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_channel_close(ch);
}

static void test_wrong_caller_denied(void **state)
{
    fixture *f = *state;
    /* A valid certificate from our CA, but Echo admits only test-client. */
    rpc_channel *ch = open_as(f, "intruder.pem", "ca.pem");
    rpc_status st;
    assert_int_equal(echo_call(ch, ECHO, "hi", 0, 5000, NULL, &st), RPC_PERMISSION_DENIED);
    assert_non_null(strstr(st.message, "may not call"));
    /* The same peer may call a method open to any peer of the trust domain. */
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/EchoInline", "hi", 0, 5000, NULL, &st), RPC_OK);
    rpc_channel_close(ch);
}

static void test_no_client_cert_refused(void **state)
{
    fixture *f = *state;
    rpc_client_tls t = {.files = {.cert = NULL, .key = NULL, .ca = testenv_pki("ca.pem")},
                        .server_name = "localhost"};
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(f->api, &t, &ch)));
    rpc_status st;
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/EchoInline", "hi", 0, 3000, NULL, &st),
                     RPC_UNAVAILABLE);
    rpc_channel_close(ch);
}

static void test_other_ca_refused(void **state)
{
    fixture *f = *state;
    /* rogue-client carries test-client's SPIFFE id, signed by an unrelated CA. */
    rpc_client_tls t = tls_for("rogue-client.pem", "ca.pem");
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(f->api, &t, &ch)));
    rpc_status st;
    assert_int_equal(echo_call(ch, ECHO, "hi", 0, 3000, NULL, &st), RPC_UNAVAILABLE);
    rpc_channel_close(ch);
}

static void test_plaintext_client_refused(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(f->api, NULL, &ch)));
    rpc_status st;
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/EchoInline", "hi", 0, 3000, NULL, &st),
                     RPC_UNAVAILABLE);
    rpc_channel_close(ch);
}

static void test_server_stream(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_client_stream *s = NULL;
    assert_true(base_is_ok(rpc_client_stream_open(ch, "/alma.echo.v1.Echo/Expand", NULL, &s)));
    Alma__Echo__V1__ExpandRequest req = ALMA__ECHO__V1__EXPAND_REQUEST__INIT;
    req.message = "tick";
    req.count = 5;
    assert_true(base_is_ok(rpc_client_stream_send(s, &req.base)));
    assert_true(base_is_ok(rpc_client_stream_close_send(s)));
    uint32_t got = 0;
    for (;;) {
        ProtobufCMessage *m = NULL;
        bool eof = false;
        assert_true(
            base_is_ok(rpc_client_stream_recv(s, &alma__echo__v1__echo_response__descriptor, &m, &eof)));
        if (eof)
            break;
        Alma__Echo__V1__EchoResponse *r = (Alma__Echo__V1__EchoResponse *)m;
        assert_string_equal(r->message, "tick");
        assert_int_equal(r->index, got);
        got++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_int_equal(got, 5);
    rpc_status st;
    assert_int_equal(rpc_client_stream_finish(s, &st), RPC_OK);
    rpc_client_stream_free(s);
    rpc_channel_close(ch);
}

static void test_bidi_stream(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_client_stream *s = NULL;
    assert_true(base_is_ok(rpc_client_stream_open(ch, "/alma.echo.v1.Echo/Chat", NULL, &s)));
    const char *words[] = {"one", "two", "three"};
    for (uint32_t i = 0; i < 3; i++) {
        Alma__Echo__V1__EchoRequest req = ALMA__ECHO__V1__ECHO_REQUEST__INIT;
        req.message = (char *)words[i];
        assert_true(base_is_ok(rpc_client_stream_send(s, &req.base)));
        ProtobufCMessage *m = NULL;
        bool eof = true;
        assert_true(
            base_is_ok(rpc_client_stream_recv(s, &alma__echo__v1__echo_response__descriptor, &m, &eof)));
        assert_false(eof);
        Alma__Echo__V1__EchoResponse *r = (Alma__Echo__V1__EchoResponse *)m;
        assert_string_equal(r->message, words[i]);
        assert_int_equal(r->index, i);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_true(base_is_ok(rpc_client_stream_close_send(s)));
    ProtobufCMessage *m = NULL;
    bool eof = false;
    assert_true(base_is_ok(rpc_client_stream_recv(s, &alma__echo__v1__echo_response__descriptor, &m, &eof)));
    assert_true(eof);
    rpc_status st;
    assert_int_equal(rpc_client_stream_finish(s, &st), RPC_OK);
    rpc_client_stream_free(s);
    rpc_channel_close(ch);
}

static void test_deadline_exceeded(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_status st;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(echo_call(ch, ECHO, "slow", 5000, 200, NULL, &st), RPC_DEADLINE_EXCEEDED);
    clock_gettime(CLOCK_MONOTONIC, &b);
    /* The deadline, not the 5 s handler delay, ended the call (a bound, not a timing benchmark). */
    assert_true(b.tv_sec - a.tv_sec < 4);
    rpc_channel_close(ch);
}

/* A call made from a handler with .parent inherits the caller's deadline (300 ms here, though the inner
 * call asked for 20 s and its handler sleeps 3 s) and the caller's request id. */
static void test_deadline_propagates(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_status st;
    relay_inner_code = RPC_OK;
    relay_inner_ms = -1;
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/Relay", "via", 0, 300, NULL, &st),
                     RPC_DEADLINE_EXCEEDED);
    /* Wait (bounded) for the relay handler to see its inner call end. */
    for (int i = 0; i < 300 && relay_inner_ms < 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(relay_inner_ms >= 0);
    assert_true(relay_inner_ms < 2500); /* ended by the parent's deadline, not the 3 s sleep */
    assert_true(relay_inner_code == RPC_DEADLINE_EXCEEDED || relay_inner_code == RPC_CANCELLED);

    /* With time enough, the inner call succeeds and carries the outer request id. */
    relay_inner_request_id[0] = '\0';
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/Relay", "via", 0, 10000, NULL, &st), RPC_OK);
    assert_string_equal(relay_inner_request_id, "req-test-1");
    rpc_channel_close(ch);
}

static void test_forwarded_client_addr(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    const char *cases[][2] = {{"203.0.113.7", "203.0.113.7"},
                              {"2001:db8::1", "2001:db8::1"},
                              {"1.2.3.4; drop", ""},
                              {"x", ""},
                              {"0123456789012345678901234567890123456789012345", ""}, /* 46 > the limit */
                              {NULL, ""}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Alma__Echo__V1__EchoRequest req = ALMA__ECHO__V1__ECHO_REQUEST__INIT;
        rpc_call_opts o = {.timeout_ms = 5000, .client_addr = cases[i][0]};
        ProtobufCMessage *resp = NULL;
        rpc_status st;
        assert_int_equal(rpc_call_unary(ch, "/alma.echo.v1.Echo/WhoIs", &req.base,
                                        &alma__echo__v1__echo_response__descriptor, &o, &resp, &st),
                         RPC_OK);
        assert_string_equal(((Alma__Echo__V1__EchoResponse *)resp)->message, cases[i][1]);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_close(ch);
}

static void test_cancelled_stream(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_client_stream *s = NULL;
    assert_true(base_is_ok(rpc_client_stream_open(ch, "/alma.echo.v1.Echo/Expand", NULL, &s)));
    Alma__Echo__V1__ExpandRequest req = ALMA__ECHO__V1__EXPAND_REQUEST__INIT;
    req.message = "long";
    req.count = 1000;
    req.interval_ms = 50;
    assert_true(base_is_ok(rpc_client_stream_send(s, &req.base)));
    assert_true(base_is_ok(rpc_client_stream_close_send(s)));
    ProtobufCMessage *m = NULL;
    bool eof = true;
    assert_true(base_is_ok(rpc_client_stream_recv(s, &alma__echo__v1__echo_response__descriptor, &m, &eof)));
    assert_false(eof);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_client_stream_cancel(s);
    rpc_status st;
    assert_int_equal(rpc_client_stream_finish(s, &st), RPC_CANCELLED);
    rpc_client_stream_free(s);
    rpc_channel_close(ch);
}

static void test_unknown_method_unimplemented(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_status st;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/Nope", "x", 0, 5000, NULL, &st), RPC_UNIMPLEMENTED);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_true(b.tv_sec - a.tv_sec < 4); /* answered, not left to the deadline */
    rpc_channel_close(ch);
}

static rpc_code raw_call(rpc_channel *ch, const void *bytes, size_t n, rpc_status *st)
{
    Alma__Rpctest__V1__RawEcho raw = ALMA__RPCTEST__V1__RAW_ECHO__INIT;
    raw.message.data = (uint8_t *)bytes;
    raw.message.len = n;
    ProtobufCMessage *resp = NULL;
    rpc_code c =
        rpc_call_unary(ch, ECHO, &raw.base, &alma__echo__v1__echo_response__descriptor, NULL, &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

static void test_bad_requests_rejected(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_status st;
    assert_int_equal(raw_call(ch, "abc\0DROP", 8, &st), RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "NUL byte or invalid UTF-8"));
    assert_null(strstr(st.message, "DROP")); /* the error never echoes the caller's data */
    assert_int_equal(raw_call(ch, "\xc3\x28", 2, &st), RPC_INVALID_ARGUMENT);
    assert_int_equal(raw_call(ch, "\xed\xa0\x80", 3, &st), RPC_INVALID_ARGUMENT); /* a UTF-16 surrogate */
    assert_int_equal(raw_call(ch, "h\xc3\xa9llo", 6, &st), RPC_OK);               /* valid UTF-8 passes */
    char big[2048];
    memset(big, 'x', sizeof big);
    assert_int_equal(raw_call(ch, big, sizeof big, &st), RPC_RESOURCE_EXHAUSTED); /* over Echo's 1 KiB */
    assert_int_equal(echo_call(ch, ECHO, "x", 600000, 5000, NULL, &st), RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "delay_ms"));
    rpc_channel_close(ch);
}

static rpc_code health_check(const char *addr, const rpc_client_tls *tls, const char *service,
                             int *ret_status)
{
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(addr, tls, &ch)));
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code c = rpc_call_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                &grpc__health__v1__health_check_response__descriptor, NULL, &resp, &st);
    if (c == RPC_OK) {
        *ret_status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_close(ch);
    return c;
}

static void test_health(void **state)
{
    fixture *f = *state;
    int status = -1;
    assert_int_equal(health_check(f->admin, NULL, "", &status), RPC_OK);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    assert_int_equal(health_check(f->admin, NULL, "echo", &status), RPC_OK);
    assert_int_equal(health_check(f->admin, NULL, "nope", &status), RPC_NOT_FOUND);
    rpc_client_tls t = tls_for("intruder.pem", "ca.pem");
    assert_int_equal(health_check(f->api, &t, "", &status), RPC_OK); /* on the API port too, over mTLS */

    /* Watch on the admin port sees SERVING, then NOT_SERVING when the server says so. */
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(f->admin, NULL, &ch)));
    rpc_client_stream *s = NULL;
    assert_true(base_is_ok(rpc_client_stream_open(ch, "/grpc.health.v1.Health/Watch", NULL, &s)));
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    assert_true(base_is_ok(rpc_client_stream_send(s, &req.base)));
    assert_true(base_is_ok(rpc_client_stream_close_send(s)));
    int expect[2] = {GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING};
    for (int i = 0; i < 2; i++) {
        ProtobufCMessage *m = NULL;
        bool eof = true;
        assert_true(base_is_ok(
            rpc_client_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m, &eof)));
        assert_false(eof);
        assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status, expect[i]);
        protobuf_c_message_free_unpacked(m, NULL);
        if (i == 0)
            rpc_server_set_serving(f->srv, false);
    }
    rpc_client_stream_cancel(s);
    rpc_status st;
    (void)rpc_client_stream_finish(s, &st);
    rpc_client_stream_free(s);
    rpc_channel_close(ch);
    assert_int_equal(health_check(f->admin, NULL, "", &status), RPC_OK);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    rpc_server_set_serving(f->srv, true);

    /* The admin port is plaintext and serves health only. */
    assert_true(base_is_ok(rpc_channel_open(f->admin, NULL, &ch)));
    assert_int_equal(echo_call(ch, "/alma.echo.v1.Echo/EchoInline", "x", 0, 3000, NULL, &st),
                     RPC_UNIMPLEMENTED);
    rpc_channel_close(ch);
}

/* A bare HTTP/1.0 GET, enough to fetch the metrics page. */
static char *http_get(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    ssize_t got;
    while ((got = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)got;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void test_metrics_scrape(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = open_as(f, "test-client.pem", "ca.pem");
    rpc_status st;
    for (int i = 0; i < 3; i++)
        assert_int_equal(echo_call(ch, ECHO, "m", 0, 5000, NULL, &st), RPC_OK);
    rpc_channel_close(ch);
    char *page = http_get(f->metrics_port, "/metrics");
    assert_non_null(strstr(page, "200 OK"));
    assert_non_null(strstr(page,
                           "alma_rpc_server_calls_total{service=\"echo\",method=\"/alma.echo.v1.Echo/Echo\","
                           "code=\"OK\"}"));
    assert_non_null(strstr(page, "alma_rpc_server_latency_seconds_bucket"));
    char *body = strstr(page, "\r\n\r\n");
    assert_non_null(body);
    char path[] = "/tmp/alma-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t blen = strlen(body + 4);
    assert_int_equal(write(fd, body + 4, blen), (ssize_t)blen);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0); /* promtool accepts the exposition */
    free(page);
    page = http_get(f->metrics_port, "/other");
    assert_non_null(strstr(page, "404"));
    free(page);
}

typedef struct slow_call {
    const char *addr;
    rpc_code code;
} slow_call;

static void *slow_call_main(void *arg)
{
    slow_call *c = arg;
    rpc_client_tls t = tls_for("test-client.pem", "ca.pem");
    rpc_channel *ch = NULL;
    if (!base_is_ok(rpc_channel_open(c->addr, &t, &ch)))
        return NULL;
    rpc_status st;
    c->code = echo_call(ch, ECHO, "drain", 700, 10000, NULL, &st);
    rpc_channel_close(ch);
    return NULL;
}

/* Shutdown lets an in-flight call finish within the drain time, and cancels it past that. */
static void test_shutdown_drains(void **state)
{
    (void)state;
    for (int drain_ms = 5000; drain_ms >= 0; drain_ms -= 5000) {
        fixture *f = NULL;
        assert_int_equal(setup((void **)&f), 0);
        slow_call c = {.addr = f->api, .code = -1};
        pthread_t t;
        pthread_create(&t, NULL, slow_call_main, &c);
        struct timespec ts = {0, 300 * 1000000L}; /* the call is in its 700 ms delay */
        nanosleep(&ts, NULL);
        int cancelled = rpc_server_shutdown(f->srv, drain_ms);
        pthread_join(t, NULL);
        if (drain_ms) {
            assert_int_equal(cancelled, 0);
            assert_int_equal(c.code, RPC_OK);
        } else {
            assert_int_equal(cancelled, 1);
            assert_int_not_equal(c.code, RPC_OK);
        }
        rpc_server_free(f->srv);
        free(f);
    }
}

static void test_spiffe_and_codes(void **state)
{
    (void)state;
    assert_int_equal(rpc_code_from_err(BASE_ERR_INVALID), RPC_INVALID_ARGUMENT);
    assert_int_equal(rpc_code_from_err(BASE_ERR_UNAVAILABLE), RPC_UNAVAILABLE);
    assert_int_equal(rpc_code_from_err(BASE_ERR_CRYPTO), RPC_INTERNAL);
    for (int e = BASE_OK; e <= BASE_ERR_INTERNAL; e++)
        assert_int_not_equal(rpc_code_from_err((base_err)e), RPC_UNKNOWN);
    assert_string_equal(rpc_code_name(RPC_PERMISSION_DENIED), "PERMISSION_DENIED");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forwarded_client_addr), cmocka_unit_test(test_unary_mtls),
        cmocka_unit_test(test_wrong_caller_denied),   cmocka_unit_test(test_no_client_cert_refused),
        cmocka_unit_test(test_other_ca_refused),      cmocka_unit_test(test_plaintext_client_refused),
        cmocka_unit_test(test_server_stream),         cmocka_unit_test(test_bidi_stream),
        cmocka_unit_test(test_deadline_exceeded),     cmocka_unit_test(test_cancelled_stream),
        cmocka_unit_test(test_deadline_propagates),   cmocka_unit_test(test_unknown_method_unimplemented),
        cmocka_unit_test(test_bad_requests_rejected), cmocka_unit_test(test_health),
        cmocka_unit_test(test_metrics_scrape),
    };
    const struct CMUnitTest standalone[] = {
        cmocka_unit_test(test_shutdown_drains),
        cmocka_unit_test(test_spiffe_and_codes),
    };
    int failed = cmocka_run_group_tests_name("rpc", tests, setup, teardown);
    failed += cmocka_run_group_tests_name("rpc_lifecycle", standalone, NULL, NULL);
    return failed;
}
