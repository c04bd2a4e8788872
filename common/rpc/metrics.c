/* Prometheus metrics of the runtime: calls by method and status code, a latency histogram per
 * method, calls in flight and queued. Labels are method names and status codes only — never data
 * from a request, so nothing a caller sends can reach a label (no PHI, bounded cardinality).
 * Served over HTTP by libevent's evhttp on the plaintext metrics port (not a hand-written parser). */
#include "internal.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in microseconds; the exposition prints seconds. */
static const uint64_t rpc_bucket_us[RPC_LATENCY_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 5000000,
};

void rpc_metrics_observe(rpc_method_metrics *m, rpc_code code, int64_t micros)
{
    if ((unsigned)code >= RPC_CODE_COUNT)
        code = RPC_UNKNOWN;
    if (micros < 0)
        micros = 0;
    atomic_fetch_add_explicit(&m->calls[code], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < RPC_LATENCY_BUCKETS && (uint64_t)micros > rpc_bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&m->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum_micros, (uint64_t)micros, memory_order_relaxed);
}

void rpc_metrics_write(FILE *out, const char *service, rpc_method_metrics *const *methods, size_t n,
                       long inflight, long queued)
{
    fprintf(out,
            "# HELP alma_rpc_server_calls_total RPCs completed by the server, by method and status code.\n");
    fprintf(out, "# TYPE alma_rpc_server_calls_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < RPC_CODE_COUNT; c++) {
            uint64_t v = atomic_load_explicit(&methods[i]->calls[c], memory_order_relaxed);
            /* OK and the codes seen are printed; unseen error codes are left out to keep the page short. */
            if (v == 0 && c != RPC_OK)
                continue;
            fprintf(out, "alma_rpc_server_calls_total{service=\"%s\",method=\"%s\",code=\"%s\"} %llu\n",
                    service, methods[i]->name, rpc_code_name((rpc_code)c), (unsigned long long)v);
        }
    fprintf(out, "# HELP alma_rpc_server_latency_seconds Time from call arrival to the final status.\n");
    fprintf(out, "# TYPE alma_rpc_server_latency_seconds histogram\n");
    for (size_t i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (size_t b = 0; b <= RPC_LATENCY_BUCKETS; b++) {
            cum += atomic_load_explicit(&methods[i]->buckets[b], memory_order_relaxed);
            if (b < RPC_LATENCY_BUCKETS)
                fprintf(
                    out,
                    "alma_rpc_server_latency_seconds_bucket{service=\"%s\",method=\"%s\",le=\"%g\"} %llu\n",
                    service, methods[i]->name, (double)rpc_bucket_us[b] / 1e6, (unsigned long long)cum);
            else
                fprintf(
                    out,
                    "alma_rpc_server_latency_seconds_bucket{service=\"%s\",method=\"%s\",le=\"+Inf\"} %llu\n",
                    service, methods[i]->name, (unsigned long long)cum);
        }
        fprintf(out, "alma_rpc_server_latency_seconds_sum{service=\"%s\",method=\"%s\"} %.6f\n", service,
                methods[i]->name,
                (double)atomic_load_explicit(&methods[i]->sum_micros, memory_order_relaxed) / 1e6);
        fprintf(out, "alma_rpc_server_latency_seconds_count{service=\"%s\",method=\"%s\"} %llu\n", service,
                methods[i]->name, (unsigned long long)cum);
    }
    fprintf(out, "# HELP alma_rpc_server_inflight_calls Calls accepted and not yet finished.\n");
    fprintf(out, "# TYPE alma_rpc_server_inflight_calls gauge\n");
    fprintf(out, "alma_rpc_server_inflight_calls{service=\"%s\"} %ld\n", service, inflight);
    fprintf(out, "# HELP alma_rpc_server_queued_calls Calls waiting for a worker thread.\n");
    fprintf(out, "# TYPE alma_rpc_server_queued_calls gauge\n");
    fprintf(out, "alma_rpc_server_queued_calls{service=\"%s\"} %ld\n", service, queued);
}

/* ------------------------------------------------------------------ HTTP endpoint */

struct rpc_metrics_http {
    struct event_base *base;
    struct evhttp *http;
    pthread_t thread;
    void (*render)(void *arg, FILE *out);
    void *arg;
};

static void rpc_metrics_handle(struct evhttp_request *req, void *arg)
{
    rpc_metrics_http *h = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET || !path || strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, "only GET /metrics is served here");
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    h->render(h->arg, f);
    fclose(f);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, text, len);
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
}

static void *rpc_metrics_main(void *arg)
{
    rpc_metrics_http *h = arg;
    event_base_dispatch(h->base);
    return NULL;
}

base_result rpc_metrics_http_start(const char *addr, void (*render)(void *arg, FILE *out), void *arg,
                                   rpc_metrics_http **ret, int *ret_port)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, (void (*)(void))evthread_use_pthreads);
    char host[256];
    rpc_target_host(addr, host, sizeof host);
    const char *colon = strrchr(addr, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || !end || *end || port < 0 || port > 65535)
        return base_fail(BASE_ERR_INVALID, "metrics address must be host:port");
    rpc_metrics_http *h = calloc(1, sizeof *h);
    BASE_ENSURE(h, BASE_ERR_NOMEM, "out of memory");
    h->render = render;
    h->arg = arg;
    h->base = event_base_new();
    h->http = h->base ? evhttp_new(h->base) : NULL;
    struct evhttp_bound_socket *sock = NULL;
    if (h->http) {
        evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET);
        evhttp_set_max_headers_size(h->http, 8192);
        evhttp_set_max_body_size(h->http, 0);
        evhttp_set_timeout(h->http, 10);
        evhttp_set_gencb(h->http, rpc_metrics_handle, h);
        sock = evhttp_bind_socket_with_handle(h->http, host, (ev_uint16_t)port);
    }
    if (!sock) {
        if (h->http)
            evhttp_free(h->http);
        if (h->base)
            event_base_free(h->base);
        free(h);
        return base_fail(BASE_ERR_IO, "cannot listen for metrics on %s", addr);
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int bound = (int)port;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    if (pthread_create(&h->thread, NULL, rpc_metrics_main, h) != 0) {
        evhttp_free(h->http);
        event_base_free(h->base);
        free(h);
        return base_fail(BASE_ERR_NOMEM, "cannot start the metrics thread");
    }
    *ret = h;
    *ret_port = bound;
    return BASE_OK_RESULT;
}

void rpc_metrics_http_stop(rpc_metrics_http *h)
{
    if (!h)
        return;
    event_base_loopbreak(h->base);
    pthread_join(h->thread, NULL);
    evhttp_free(h->http);
    event_base_free(h->base);
    free(h);
}
