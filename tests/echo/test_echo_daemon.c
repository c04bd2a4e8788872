/* The real alma-echo binary as a process: settings, the ready-file, health and mTLS calls, the SIGTERM
 * drain (with and without drain time), start-up failures and their exit codes, the log's redaction of
 * request data, and alma-cli end to end against it.
 *
 * Processes are started and watched with tests/support/testproc.h (fork/execve, no shell, an environment
 * without the developer's ALMA_* settings, bounded waits, children killed by the teardown). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "echo/v1/echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"
#include "testenv.h"
#include "testrpc.h"
#include "testproc.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO_METHOD       "/alma.echo.v1.Echo/Echo"
#define ECHO_SPIFFE_CLI   "spiffe://alma.local/ns/alma/sa/alma-cli"
#define ECHO_SPIFFE_TESTC "spiffe://alma.local/ns/alma/sa/test-client"

/* ------------------------------------------------------------------ the binaries */

static const char *echo_binary(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s", testenv_binary_path("services/echo/alma-echo"));
    return path;
}

static const char *cli_binary(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s", testenv_binary_path("tools/alma-cli"));
    return path;
}

/* Start alma-echo (the loopback ports, the dev PKI, a ready-file, then `extra`) and wait for its
 * ready-file. */
static void daemon_start(testproc_daemon *d, const char *const *extra)
{
    testproc_daemon_init(d, echo_binary(), "echo", extra, NULL);
    testproc_daemon_start(d);
}

/* ------------------------------------------------------------------ in-process clients */

static rpc_code echo_call(const char *addr, const char *client, const char *msg, uint32_t delay_ms,
                          int timeout_ms, char *ret_peer, size_t peer_size)
{
    rpc_client_tls t = testrpc_client_tls(client);
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(addr, &t, &ch)));
    Alma__Echo__V1__EchoRequest req = ALMA__ECHO__V1__ECHO_REQUEST__INIT;
    req.message = (char *)msg;
    req.delay_ms = delay_ms;
    rpc_call_opts o = {.timeout_ms = timeout_ms};
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code c = rpc_call_unary(ch, ECHO_METHOD, &req.base, &alma__echo__v1__echo_response__descriptor, &o,
                                &resp, &st);
    if (c == RPC_OK) {
        Alma__Echo__V1__EchoResponse *r = (Alma__Echo__V1__EchoResponse *)resp;
        assert_string_equal(r->message, msg);
        if (ret_peer)
            snprintf(ret_peer, peer_size, "%s", r->peer_identity);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_close(ch);
    return c;
}

/* grpc.health.v1 Check over plaintext (the admin port). */
static rpc_code health_check(const char *addr, int *ret_status)
{
    rpc_channel *ch = NULL;
    assert_true(base_is_ok(rpc_channel_open(addr, NULL, &ch)));
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_call_opts o = {.timeout_ms = 3000};
    rpc_code c = rpc_call_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                &grpc__health__v1__health_check_response__descriptor, &o, &resp, &st);
    if (c == RPC_OK) {
        *ret_status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_close(ch);
    return c;
}

/* A plain TCP connect to a loopback port: true when something accepts it. */
static bool tcp_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* An Echo call with a delay on its own thread: the call in flight while the daemon is told to stop. */
typedef struct slow_call {
    const char *addr;
    uint32_t delay_ms;
    rpc_code code;
    volatile bool done;
    pthread_t thread;
} slow_call;

static void *slow_call_main(void *arg)
{
    slow_call *c = arg;
    c->code = echo_call(c->addr, "test-client", "drain me", c->delay_ms, 20000, NULL, 0);
    c->done = true;
    return NULL;
}

/* ------------------------------------------------------------------ tests */

/* Health on the plaintext admin port, Echo over mTLS, then a clean stop. */
static void test_serves_health_and_mtls(void **state)
{
    (void)state;
    testproc_daemon d;
    daemon_start(&d, NULL);
    int status = -1;
    assert_int_equal(health_check(d.admin_addr, &status), RPC_OK);
    assert_int_equal(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    char peer[256] = "";
    assert_int_equal(echo_call(d.api_addr, "test-client", "hello", 0, 5000, peer, sizeof peer), RPC_OK);
    assert_string_equal(peer, ECHO_SPIFFE_TESTC);
    /* The metrics port accepts connections too (its content is test_rpc's business). */
    assert_true(tcp_accepts(d.metrics));
    assert_int_equal(testproc_daemon_stop(&d), 0);
}

/* SIGTERM while a call runs: the call finishes OK, new connections are refused during the drain, the
 * process exits 0 and says so in its log. */
static void test_sigterm_drains(void **state)
{
    (void)state;
    testproc_daemon d;
    daemon_start(&d, NULL);
    slow_call c = {.addr = d.api_addr, .delay_ms = 1500, .code = -1};
    assert_int_equal(pthread_create(&c.thread, NULL, slow_call_main, &c), 0);
    testproc_sleep_ms(300);
    assert_false(c.done);
    assert_int_equal(kill(d.pid, SIGTERM), 0);

    /* Once draining, the ports stop accepting (bounded wait: the listeners close asynchronously). */
    assert_true(testproc_daemon_log_wait(&d, "\"msg\":\"draining\"", 2000));
    int64_t until = testproc_now_ms() + 1000;
    while ((tcp_accepts(d.api) || tcp_accepts(d.admin)) && testproc_now_ms() < until)
        testproc_sleep_ms(10);
    assert_false(tcp_accepts(d.api));
    assert_false(tcp_accepts(d.admin));
    int status = -1;
    assert_int_equal(health_check(d.admin_addr, &status), RPC_UNAVAILABLE);
    /* All of that happened while the in-flight call was still being served. */
    assert_false(c.done);

    pthread_join(c.thread, NULL);
    assert_int_equal(c.code, RPC_OK);
    assert_int_equal(testproc_daemon_wait(&d, TESTPROC_EXIT_TIMEOUT_MS), 0);
    char *log = testproc_daemon_log(&d);
    assert_non_null(strstr(log, "\"msg\":\"draining\""));
    assert_non_null(strstr(log, "\"msg\":\"stopped\",\"count\":\"0\""));
    free(log);
}

/* With --drain-seconds 0 an in-flight call is cancelled at once, and the exit is still clean. */
static void test_sigterm_without_drain(void **state)
{
    (void)state;
    testproc_daemon d;
    const char *const extra[] = {"--drain-seconds", "0", NULL};
    daemon_start(&d, extra);
    slow_call c = {.addr = d.api_addr, .delay_ms = 5000, .code = -1};
    assert_int_equal(pthread_create(&c.thread, NULL, slow_call_main, &c), 0);
    testproc_sleep_ms(300);
    int64_t sent = testproc_now_ms();
    assert_int_equal(kill(d.pid, SIGTERM), 0);
    pthread_join(c.thread, NULL);
    assert_true(c.code == RPC_CANCELLED || c.code == RPC_UNAVAILABLE);
    assert_true(testproc_now_ms() - sent < 4000); /* ended by the stop, not by its 5 s delay */
    assert_int_equal(testproc_daemon_wait(&d, TESTPROC_EXIT_TIMEOUT_MS), 0);
    char *log = testproc_daemon_log(&d);
    assert_non_null(strstr(log, "\"msg\":\"stopped\",\"count\":\"1\""));
    free(log);
}

/* Run alma-echo with arguments that stop it before it serves; its exit status, stdout and stderr. It
 * must not have written its ready-file. */
static int daemon_run_bad(const char *const *extra, const char *const *env, bool with_tls, char **ret_out,
                          char **ret_err)
{
    testproc_daemon d;
    testproc_daemon_init(&d, echo_binary(), with_tls ? "echo" : NULL, extra, env);
    int code = testproc_daemon_run(&d, ret_out, ret_err);
    assert_false(testproc_file_exists(d.ready_path));
    return code;
}

static void test_bad_settings(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;

    const char *const too_many_workers[] = {"--workers", "5000", NULL};
    assert_int_equal(daemon_run_bad(too_many_workers, NULL, true, NULL, &err), 2);
    assert_non_null(strstr(err, "ALMA_WORKERS (--workers)"));
    free(err);

    /* From the environment: named, and the bad value is not repeated (it could be a secret). */
    const char *const env[] = {"ALMA_WORKERS=abc", NULL};
    assert_int_equal(daemon_run_bad(NULL, env, true, NULL, &err), 2);
    assert_non_null(strstr(err, "ALMA_WORKERS (--workers)"));
    assert_null(strstr(err, "abc"));
    free(err);

    /* No TLS files and no --insecure-api. */
    assert_int_equal(daemon_run_bad(NULL, NULL, false, NULL, &err), 2);
    assert_non_null(strstr(err, "ALMA_TLS_CERT"));
    free(err);

    const char *const unknown[] = {"--no-such-flag", "1", NULL};
    assert_int_equal(daemon_run_bad(unknown, NULL, true, NULL, &err), 2);
    assert_non_null(strstr(err, "unknown flag"));
    free(err);

    const char *const help[] = {"--help", NULL};
    assert_int_equal(daemon_run_bad(help, NULL, true, &out, NULL), 0);
    assert_non_null(strstr(out, "--api-addr"));
    assert_non_null(strstr(out, "ALMA_API_ADDR"));
    free(out);
}

/* An API address someone else holds: start-up fails with exit status 1 and says what it could not do. */
static void test_api_addr_in_use(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));

    const char *const extra[] = {"--api-addr", addr, NULL}; /* the last --api-addr wins */
    char *err = NULL;
    assert_int_equal(daemon_run_bad(extra, NULL, true, NULL, &err), 1);
    assert_non_null(strstr(err, "cannot listen"));
    assert_non_null(strstr(err, "\"msg\":\"start-up failed\""));
    free(err);
    close(fd);
}

/* At debug level every call is logged, but only method, code, duration and peer: never the message. */
static void test_no_phi_in_logs(void **state)
{
    (void)state;
    testproc_daemon d;
    const char *const extra[] = {"--log-level", "debug", NULL};
    daemon_start(&d, extra);
    static const char phi[] = "Jane Doe DOB 1970-01-01";
    assert_int_equal(echo_call(d.api_addr, "test-client", phi, 0, 5000, NULL, 0), RPC_OK);
    /* A failing call is logged at info, with its code: still without the request. */
    assert_int_equal(echo_call(d.api_addr, "test-client", phi, 600000, 5000, NULL, 0), RPC_INVALID_ARGUMENT);
    assert_int_equal(testproc_daemon_stop(&d), 0);
    char *log = testproc_daemon_log(&d);
    assert_non_null(strstr(log, "\"method\":\"/alma.echo.v1.Echo/Echo\",\"code\":\"OK\""));
    assert_non_null(strstr(log, "\"code\":\"INVALID_ARGUMENT\""));
    assert_null(strstr(log, "Jane Doe"));
    assert_null(strstr(log, "1970-01-01"));
    free(log);
}

/* ---- alma-cli */

/* argv for alma-cli: mTLS as `client` (NULL: --insecure) against `addr`, then `words`. */
static void cli_argv(const char **argv, const char *addr, const char *client, const char *const *words)
{
    static char cert[512], key[512], ca[512];
    int n = 0;
    argv[n++] = cli_binary();
    argv[n++] = "--addr";
    argv[n++] = addr;
    if (client) {
        snprintf(cert, sizeof cert, "%s", testenv_pki(client));
        snprintf(key, sizeof key, "%.*s-key.pem", (int)(strlen(cert) - 4), cert);
        snprintf(ca, sizeof ca, "%s", testenv_pki("ca.pem"));
        argv[n++] = "--cert";
        argv[n++] = cert;
        argv[n++] = "--key";
        argv[n++] = key;
        argv[n++] = "--ca";
        argv[n++] = ca;
    } else {
        argv[n++] = "--insecure";
    }
    for (int i = 0; words && words[i]; i++) {
        assert_true(n < TESTPROC_MAX_ARGS - 1);
        argv[n++] = words[i];
    }
    argv[n] = NULL;
}

static int cli_run(const char *addr, const char *client, const char *const *words, char **ret_out,
                   char **ret_err)
{
    const char *argv[TESTPROC_MAX_ARGS];
    cli_argv(argv, addr, client, words);
    return testproc_run(argv, NULL, ret_out, ret_err);
}

static void test_cli_end_to_end(void **state)
{
    (void)state;
    testproc_daemon d;
    daemon_start(&d, NULL);
    char *out = NULL, *err = NULL;

    const char *const echo[] = {"echo", "hello", NULL};
    assert_int_equal(cli_run(d.api_addr, "alma-cli.pem", echo, &out, &err), 0);
    assert_non_null(strstr(out, "message: hello\n"));
    assert_non_null(strstr(out, "peer_identity: " ECHO_SPIFFE_CLI "\n"));
    assert_non_null(strstr(out, "request_id: "));
    free(out);
    free(err);

    const char *const expand[] = {"expand", "tick", "3", NULL};
    assert_int_equal(cli_run(d.api_addr, "alma-cli.pem", expand, &out, NULL), 0);
    assert_string_equal(out, "0: tick\n1: tick\n2: tick\n");
    free(out);

    const char *const chat[] = {"chat", "one", "two", NULL};
    assert_int_equal(cli_run(d.api_addr, "alma-cli.pem", chat, &out, NULL), 0);
    assert_string_equal(out, "0: one\n1: two\n");
    free(out);

    const char *const health[] = {"health", NULL};
    assert_int_equal(cli_run(d.admin_addr, NULL, health, &out, NULL), 0);
    assert_string_equal(out, "SERVING\n");
    free(out);
    assert_int_equal(cli_run(d.api_addr, "alma-cli.pem", health, &out, NULL), 0); /* over mTLS */
    assert_string_equal(out, "SERVING\n");
    free(out);
    const char *const health_other[] = {"health", "nope", NULL};
    assert_int_equal(cli_run(d.admin_addr, NULL, health_other, NULL, &err), 1);
    assert_non_null(strstr(err, "alma-cli: NOT_FOUND: "));
    free(err);

    /* Settings from the environment. */
    const char *env[] = {NULL, "ALMA_CLI_INSECURE=true", NULL};
    char addr_env[64];
    snprintf(addr_env, sizeof addr_env, "ALMA_CLI_ADDR=%s", d.admin_addr);
    env[0] = addr_env;
    const char *const bare_health[] = {cli_binary(), "health", NULL};
    assert_int_equal(testproc_run(bare_health, env, &out, NULL), 0);
    assert_string_equal(out, "SERVING\n");
    free(out);

    /* A certificate from another CA (with test-client's SPIFFE id): the handshake fails. */
    assert_int_equal(cli_run(d.api_addr, "rogue-client.pem", echo, &out, &err), 1);
    assert_non_null(strstr(err, "alma-cli: UNAVAILABLE: "));
    assert_null(strstr(out, "hello"));
    free(out);
    free(err);

    /* A server error comes back as its code and message. */
    const char *const too_slow[] = {"echo", "x", "--delay-ms", "600000", NULL};
    assert_int_equal(cli_run(d.api_addr, "alma-cli.pem", too_slow, NULL, &err), 1);
    assert_non_null(strstr(err, "alma-cli: INVALID_ARGUMENT: delay_ms must be at most"));
    free(err);

    /* Usage errors: exit status 2, nothing sent. */
    const char *const none[] = {NULL};
    const char *const unknown[] = {"frobnicate", NULL};
    const char *const missing[] = {"expand", "tick", NULL};
    const char *const bad_count[] = {"expand", "tick", "3x", NULL};
    const char *const bad_timeout[] = {"--timeout-ms", "soon", "health", NULL};
    const char *const *usage[] = {none, unknown, missing, bad_count, bad_timeout};
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        assert_int_equal(cli_run(d.api_addr, "alma-cli.pem", usage[i], NULL, &err), 2);
        assert_non_null(strstr(err, "alma-cli: "));
        free(err);
    }
    const char *const no_tls[] = {cli_binary(), "--addr", d.api_addr, "health", NULL};
    assert_int_equal(testproc_run(no_tls, NULL, NULL, &err), 2);
    assert_non_null(strstr(err, "ALMA_CLI_CERT"));
    free(err);
    const char *const help[] = {cli_binary(), "--help", NULL};
    assert_int_equal(testproc_run(help, NULL, &out, NULL), 0);
    assert_non_null(strstr(out, "--addr"));
    assert_non_null(strstr(out, "ALMA_CLI_ADDR"));
    assert_non_null(strstr(out, "\n  health [SERVICE]"));
    free(out);

    /* watch on the admin port sees SERVING, then NOT_SERVING when the daemon is told to stop; the stream
     * then ends with the server's UNAVAILABLE. */
    const char *argv[TESTPROC_MAX_ARGS];
    const char *const watch[] = {"watch", NULL};
    cli_argv(argv, d.admin_addr, NULL, watch);
    pid_t w = testproc_spawn(argv, NULL, testproc_work_path("out3"), testproc_work_path("err3"));
    assert_true(testproc_file_wait_for(testproc_work_path("out3"), "SERVING\n", TESTPROC_READY_TIMEOUT_MS));
    assert_int_equal(testproc_daemon_stop(&d), 0);
    assert_int_equal(testproc_wait_exit(w, TESTPROC_EXIT_TIMEOUT_MS), 1);
    out = testenv_read_file(testproc_work_path("out3"));
    err = testenv_read_file(testproc_work_path("err3"));
    assert_string_equal(out, "SERVING\nNOT_SERVING\n");
    assert_non_null(strstr(err, "alma-cli: UNAVAILABLE: server is shutting down"));
    free(out);
    free(err);
}

/* watch ends on Ctrl-C (SIGINT) with exit status 0. */
static void test_cli_watch_interrupted(void **state)
{
    (void)state;
    testproc_daemon d;
    daemon_start(&d, NULL);
    const char *argv[TESTPROC_MAX_ARGS];
    const char *const watch[] = {"watch", NULL};
    cli_argv(argv, d.admin_addr, NULL, watch);
    pid_t w = testproc_spawn(argv, NULL, testproc_work_path("out3"), testproc_work_path("err3"));
    assert_true(testproc_file_wait_for(testproc_work_path("out3"), "SERVING\n", TESTPROC_READY_TIMEOUT_MS));
    assert_int_equal(kill(w, SIGINT), 0);
    assert_int_equal(testproc_wait_exit(w, TESTPROC_EXIT_TIMEOUT_MS), 0);
    assert_int_equal(testproc_daemon_stop(&d), 0);
}

int main(void)
{
    /* The binaries under test are built by the same tree (add_dependencies in CMakeLists.txt). */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_serves_health_and_mtls, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_drains, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_without_drain, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_bad_settings, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_api_addr_in_use, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_no_phi_in_logs, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_cli_end_to_end, testproc_setup, testproc_teardown),
        cmocka_unit_test_setup_teardown(test_cli_watch_interrupted, testproc_setup, testproc_teardown),
    };
    return cmocka_run_group_tests_name("echo_daemon", tests, NULL, NULL);
}
