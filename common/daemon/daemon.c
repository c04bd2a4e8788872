#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The settings every service shares. Environment ALMA_<NAME>, flags --<name> override. */
static const char *daemon_api_addr, *daemon_admin_addr, *daemon_metrics_addr;
static const char *daemon_tls_cert, *daemon_tls_key, *daemon_tls_ca, *daemon_trust_domain;
static const char *daemon_log_level, *daemon_ready_file;
static bool daemon_insecure_api;
static long daemon_workers, daemon_max_queued, daemon_max_message_bytes, daemon_max_streams,
    daemon_drain_seconds;

static const cfg_setting daemon_settings[] = {
    {"api-addr", CFG_STRING, "0.0.0.0:7443", &daemon_api_addr, 0, 256,
     "API port (mTLS gRPC); :0 picks a free port", false},
    {"admin-addr", CFG_STRING, "0.0.0.0:9090", &daemon_admin_addr, 0, 256,
     "admin port: plaintext gRPC health for probes (empty = off)", false},
    {"metrics-addr", CFG_STRING, "0.0.0.0:9190", &daemon_metrics_addr, 0, 256,
     "Prometheus metrics over HTTP at /metrics (empty = off)", false},
    {"tls-cert", CFG_STRING, "", &daemon_tls_cert, 0, 4096,
     "PEM certificate of this service (SPIFFE URI SAN)", false},
    {"tls-key", CFG_STRING, "", &daemon_tls_key, 0, 4096, "PEM private key of this service", false},
    {"tls-ca", CFG_STRING, "", &daemon_tls_ca, 0, 4096, "PEM CA bundle that signs peer services", false},
    {"trust-domain", CFG_STRING, "alma.local", &daemon_trust_domain, 0, 255, "SPIFFE trust domain of peers",
     false},
    {"insecure-api", CFG_BOOL, "false", &daemon_insecure_api, 0, 0,
     "plaintext API port, for benchmarks and development only (callers are not authenticated)", false},
    {"workers", CFG_INT, "0", &daemon_workers, 0, 1024,
     "handler threads (they may block on Postgres/Redis); 0 = the service's default (8 unless it says)",
     false},
    {"max-queued", CFG_INT, "1024", &daemon_max_queued, 1, 65536,
     "calls waiting for a worker before RESOURCE_EXHAUSTED", false},
    {"max-message-bytes", CFG_INT, "4194304", &daemon_max_message_bytes, 1024, 67108864,
     "largest message accepted or sent", false},
    {"max-streams", CFG_INT, "256", &daemon_max_streams, 1, 10000, "concurrent calls per connection", false},
    {"drain-seconds", CFG_INT, "20", &daemon_drain_seconds, 0, 600,
     "on SIGTERM, how long in-flight calls may finish before they are cancelled", false},
    {"log-level", CFG_STRING, "info", &daemon_log_level, 0, 16, "debug, info, warn or error", false},
    {"ready-file", CFG_STRING, "", &daemon_ready_file, 0, 4096,
     "when serving, write the bound ports here (api=N admin=N metrics=N)", false},
};

rpc_tls_files daemon_tls_files(void)
{
    return (rpc_tls_files){daemon_tls_cert, daemon_tls_key, daemon_tls_ca};
}

static void daemon_grpc_log(int severity, const char *file, int line, const char *message)
{
    (void)file;
    (void)line;
    /* gRPC's own errors (e.g. a failed TLS handshake) carry no request data. */
    if (severity >= 2)
        log_emit(LOG_WARN, NULL, "grpc core", "error", message, NULL);
}

static void daemon_call_done(const char *method, rpc_code code, int64_t micros, const char *request_id,
                             const char *peer_service)
{
    log_level level = code == RPC_OK ? LOG_DEBUG : LOG_INFO;
    if (!log_enabled(level))
        return;
    char us[32];
    snprintf(us, sizeof us, "%.3f", (double)micros / 1000.0);
    /* Failures at info; successful calls only at debug so the hot path stays quiet. */
    log_emit(level, request_id, "call", "method", method, "code", rpc_code_name(code), "duration_ms", us,
             "peer", peer_service, NULL);
}

static base_result daemon_write_ready(const char *path, const rpc_server *srv)
{
    if (!path[0])
        return BASE_OK_RESULT;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return base_fail(BASE_ERR_IO, "cannot write the ready-file");
    fprintf(f, "api=%d admin=%d metrics=%d\n", rpc_server_api_port(srv), rpc_server_admin_port(srv),
            rpc_server_metrics_port(srv));
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return base_fail(BASE_ERR_IO, "cannot write the ready-file");
    return BASE_OK_RESULT;
}

int daemon_main(const daemon_service *svc, int argc, char **argv)
{
    /* Block the stop signals before any thread exists (gRPC's threads inherit the mask); this thread
     * waits for them with sigwait. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    cfg_table tables[2] = {{daemon_settings, BASE_ARRAY_LEN(daemon_settings)},
                           {svc->settings, svc->setting_count}};
    bool help = false;
    char program[64];
    snprintf(program, sizeof program, "alma-%s", svc->name);
    base_result r =
        cfg_load(tables, svc->setting_count ? 2 : 1, argc, argv, program, svc->summary, stdout, &help);
    if (!base_is_ok(r)) {
        fprintf(stderr, "%s: %s\n", program, base_error_message());
        return 2;
    }
    if (help)
        return 0;
    log_level level = LOG_INFO;
    if (!base_is_ok(log_level_parse(daemon_log_level, &level))) {
        fprintf(stderr,
                "%s: invalid setting ALMA_LOG_LEVEL (--log-level): expected debug, info, warn or error\n",
                program);
        return 2;
    }
    if (!daemon_insecure_api && (!daemon_tls_cert[0] || !daemon_tls_key[0] || !daemon_tls_ca[0])) {
        fprintf(
            stderr,
            "%s: settings ALMA_TLS_CERT, ALMA_TLS_KEY and ALMA_TLS_CA (--tls-cert, --tls-key, --tls-ca) are "
            "required (or --insecure-api true for development)\n",
            program);
        return 2;
    }
    log_init(svc->name, level);
    rpc_set_log_sink(daemon_grpc_log);
    if (daemon_insecure_api)
        log_emit(LOG_WARN, NULL, "API port is plaintext: callers are not authenticated (development only)",
                 NULL);

    void *state = NULL;
    if (svc->init) {
        r = svc->init(&state);
        if (!base_is_ok(r)) {
            log_emit(LOG_ERROR, NULL, "start-up failed", "error", base_error_message(), NULL);
            return 1;
        }
    }
    rpc_server_config cfg = {
        .service_name = svc->name,
        .api_addr = daemon_api_addr,
        .admin_addr = daemon_admin_addr[0] ? daemon_admin_addr : NULL,
        .metrics_addr = daemon_metrics_addr[0] ? daemon_metrics_addr : NULL,
        .tls = {daemon_tls_cert, daemon_tls_key, daemon_tls_ca},
        .insecure_api = daemon_insecure_api,
        .trust_domain = daemon_trust_domain,
        .workers = daemon_workers ? (int)daemon_workers
                                  : (svc->default_workers ? svc->default_workers : DAEMON_DEFAULT_WORKERS),
        .max_queued = (int)daemon_max_queued,
        .max_message_bytes = (uint32_t)daemon_max_message_bytes,
        .max_concurrent_streams = (uint32_t)daemon_max_streams,
        .methods = svc->methods,
        .method_count = svc->method_count,
        .service_state = state,
        .on_call_done = daemon_call_done,
    };
    rpc_server *srv = NULL;
    r = rpc_server_start(&cfg, &srv);
    if (!base_is_ok(r)) {
        log_emit(LOG_ERROR, NULL, "start-up failed", "error", base_error_message(), NULL);
        if (svc->fini)
            svc->fini(state);
        return 1;
    }
    char api[16], admin[16], metrics[16];
    snprintf(api, sizeof api, "%d", rpc_server_api_port(srv));
    snprintf(admin, sizeof admin, "%d", rpc_server_admin_port(srv));
    snprintf(metrics, sizeof metrics, "%d", rpc_server_metrics_port(srv));
    log_emit(LOG_INFO, NULL, "serving", "addr", daemon_api_addr, "port", api, "component", "api", NULL);
    log_emit(LOG_INFO, NULL, "serving", "port", admin, "component", "admin", NULL);
    log_emit(LOG_INFO, NULL, "serving", "port", metrics, "component", "metrics", NULL);
    r = daemon_write_ready(daemon_ready_file, srv);
    if (!base_is_ok(r))
        log_emit(LOG_WARN, NULL, "ready-file not written", "error", base_error_message(), NULL);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    char signame[16];
    snprintf(signame, sizeof signame, "%d", sig);
    log_emit(LOG_INFO, NULL, "draining", "signal", signame, NULL);
    int cancelled = rpc_server_shutdown(srv, (int)daemon_drain_seconds * 1000);
    char count[16];
    snprintf(count, sizeof count, "%d", cancelled);
    log_emit(cancelled ? LOG_WARN : LOG_INFO, NULL, "stopped", "count", count, NULL);
    rpc_server_free(srv);
    if (svc->fini)
        svc->fini(state);
    return 0;
}
