/* The client half of the runtime: channels (mTLS or plaintext), unary calls and streams with
 * protobuf-c messages. Each call owns a pluck completion queue, so a call blocks only its own
 * thread (a handler's worker, a command-line tool) and needs no shared polling thread. */
#include "internal.h"

#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <stdlib.h>
#include <string.h>

#define RPC_PEM_MAX            (1u << 20)
#define RPC_DEFAULT_TIMEOUT_MS 10000

/* ------------------------------------------------------------------ process-wide */

static pthread_mutex_t rpc_global_mu = PTHREAD_MUTEX_INITIALIZER;
static int rpc_global_refs;
static void (*rpc_log_sink)(int, const char *, int, const char *);

static void rpc_gpr_log(gpr_log_func_args *args)
{
    void (*sink)(int, const char *, int, const char *) = rpc_log_sink;
    if (!sink)
        return;
    int sev = args->severity == GPR_LOG_SEVERITY_ERROR ? 2 : args->severity == GPR_LOG_SEVERITY_INFO ? 1 : 0;
    sink(sev, args->file, args->line, args->message);
}

void rpc_set_log_sink(void (*sink)(int, const char *, int, const char *))
{
    rpc_log_sink = sink;
    gpr_set_log_function(sink ? rpc_gpr_log : NULL);
}

void rpc_global_init(void)
{
    pthread_mutex_lock(&rpc_global_mu);
    if (rpc_global_refs++ == 0)
        grpc_init();
    pthread_mutex_unlock(&rpc_global_mu);
}

void rpc_global_shutdown(void)
{
    pthread_mutex_lock(&rpc_global_mu);
    if (rpc_global_refs > 0 && --rpc_global_refs == 0)
        grpc_shutdown();
    pthread_mutex_unlock(&rpc_global_mu);
}

base_result rpc_read_pem(const char *path, const char *what, char **ret)
{
    BASE_ENSURE(path && *path, BASE_ERR_INVALID, "a TLS file setting is empty");
    FILE *f = fopen(path, "rb");
    if (!f)
        return base_fail(BASE_ERR_INVALID, "cannot read the file named by %s", what);
    char *buf = malloc(RPC_PEM_MAX + 1);
    if (!buf) {
        fclose(f);
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, RPC_PEM_MAX + 1, f);
    fclose(f);
    if (n == 0 || n > RPC_PEM_MAX || memchr(buf, '\0', n) || !strstr(buf, "-----BEGIN ")) {
        rpc_free_pem(buf);
        return base_fail(BASE_ERR_INVALID, "the file named by %s is not a PEM file of at most 1 MiB", what);
    }
    buf[n] = '\0';
    *ret = buf;
    return BASE_OK_RESULT;
}

void rpc_free_pem(char *pem)
{
    if (!pem)
        return;
    /* Key files are secrets: wipe before free (volatile so the compiler keeps the stores). */
    volatile char *p = pem;
    while (*p)
        *p++ = 0;
    free(pem);
}

void rpc_target_host(const char *target, char *buf, size_t n)
{
    const char *t = target;
    if (strncmp(t, "dns:///", 7) == 0)
        t += 7;
    else if (strncmp(t, "ipv4:", 5) == 0)
        t += 5;
    size_t len;
    if (*t == '[') { /* [::1]:port */
        const char *end = strchr(t, ']');
        t++;
        len = end ? (size_t)(end - t) : strlen(t);
    } else {
        const char *colon = strrchr(t, ':');
        len = colon ? (size_t)(colon - t) : strlen(t);
    }
    if (len >= n)
        len = n - 1;
    memcpy(buf, t, len);
    buf[len] = '\0';
}

/* ------------------------------------------------------------------ channels */

struct rpc_channel {
    grpc_channel *channel;
};

base_result rpc_channel_open(const char *target, const rpc_client_tls *tls, rpc_channel **ret)
{
    BASE_ENSURE(target && *target && strlen(target) < 512, BASE_ERR_INVALID, "bad target address");
    rpc_channel *ch = calloc(1, sizeof *ch);
    BASE_ENSURE(ch, BASE_ERR_NOMEM, "out of memory");
    rpc_global_init();
    grpc_channel_credentials *creds = NULL;
    char host[256];
    grpc_arg args[2];
    size_t nargs = 0;
    args[nargs++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 64 << 20};
    if (tls) {
        char *ca = NULL, *cert = NULL, *key = NULL;
        base_result r = BASE_OK_RESULT;
        BASE_GUARD_GOTO(r, rpc_read_pem(tls->files.ca, "the CA file", &ca), out);
        /* No certificate is allowed only so tests can show that such a client is refused. */
        if (tls->files.cert) {
            BASE_GUARD_GOTO(r, rpc_read_pem(tls->files.cert, "the certificate file", &cert), out);
            BASE_GUARD_GOTO(r, rpc_read_pem(tls->files.key, "the key file", &key), out);
        }
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
        if (tls->server_name)
            snprintf(host, sizeof host, "%s", tls->server_name);
        else
            rpc_target_host(target, host, sizeof host);
        args[nargs++] = (grpc_arg){
            .type = GRPC_ARG_STRING, .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, .value.string = host};
    out:
        rpc_free_pem(key);
        free(cert);
        free(ca);
        if (!base_is_ok(r) || !creds) {
            free(ch);
            rpc_global_shutdown();
            return base_is_ok(r) ? base_fail(BASE_ERR_INVALID, "TLS client credentials could not be created")
                                 : r;
        }
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_channel_args ca = {.num_args = nargs, .args = args};
    ch->channel = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!ch->channel) {
        free(ch);
        rpc_global_shutdown();
        return base_fail(BASE_ERR_INVALID, "channel could not be created");
    }
    *ret = ch;
    return BASE_OK_RESULT;
}

void rpc_channel_close(rpc_channel *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->channel);
    free(ch);
    rpc_global_shutdown();
}

/* ------------------------------------------------------------------ calls */

typedef struct rpc_client_call {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata md[4];
    size_t md_count;
    char request_id[65];
} rpc_client_call;

static void rpc_status_set(rpc_status *st, rpc_code code, const char *msg)
{
    if (!st)
        return;
    st->code = code;
    snprintf(st->message, sizeof st->message, "%s", msg);
}

static base_result rpc_client_call_start(rpc_channel *ch, const char *method, const rpc_call_opts *opts,
                                         rpc_client_call *cc)
{
    static const rpc_call_opts none = {0};
    if (!opts)
        opts = &none;
    BASE_ENSURE(method && method[0] == '/', BASE_ERR_INVALID, "method must be a full name starting with '/'");
    memset(cc, 0, sizeof *cc);
    int64_t timeout = opts->timeout_ms > 0 ? opts->timeout_ms : RPC_DEFAULT_TIMEOUT_MS;
    grpc_call *parent = NULL;
    if (opts->parent) {
        int64_t left = rpc_ctx_remaining_ms(opts->parent);
        if (left < timeout)
            timeout = left > 0 ? left : 1;
        parent = rpc_ctx_grpc_call(opts->parent);
    }
    const char *rid = opts->request_id;
    if (!rid && opts->parent)
        rid = rpc_ctx_request_id(opts->parent);
    if (rid)
        snprintf(cc->request_id, sizeof cc->request_id, "%s", rid);
    else
        rpc_new_request_id(cc->request_id, sizeof cc->request_id);
    cc->md[cc->md_count].key = grpc_slice_from_static_string("x-request-id");
    cc->md[cc->md_count].value = grpc_slice_from_copied_string(cc->request_id);
    cc->md_count++;
    if (opts->authorization && *opts->authorization) {
        cc->md[cc->md_count].key = grpc_slice_from_static_string("authorization");
        cc->md[cc->md_count].value = grpc_slice_from_copied_string(opts->authorization);
        cc->md_count++;
    }
    const char *client_addr = opts->client_addr;
    if (!client_addr && opts->parent)
        client_addr = rpc_ctx_client_addr(opts->parent);
    if (client_addr && *client_addr) {
        cc->md[cc->md_count].key = grpc_slice_from_static_string(RPC_CLIENT_ADDR_METADATA);
        cc->md[cc->md_count].value = grpc_slice_from_copied_string(client_addr);
        cc->md_count++;
    }
    if (opts->parent && rpc_ctx_traceparent(opts->parent)[0]) {
        cc->md[cc->md_count].key = grpc_slice_from_static_string("traceparent");
        cc->md[cc->md_count].value = grpc_slice_from_copied_string(rpc_ctx_traceparent(opts->parent));
        cc->md_count++;
    }
    cc->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    cc->call = grpc_channel_create_call(ch->channel, parent, parent ? GRPC_PROPAGATE_DEFAULTS : 0, cc->cq, m,
                                        NULL, rpc_deadline_from_ms(timeout), NULL);
    grpc_slice_unref(m);
    if (!cc->call) {
        grpc_completion_queue_destroy(cc->cq);
        for (size_t i = 0; i < cc->md_count; i++)
            grpc_slice_unref(cc->md[i].value);
        return base_fail(BASE_ERR_INTERNAL, "call could not be created");
    }
    return BASE_OK_RESULT;
}

static void rpc_client_call_end(rpc_client_call *cc)
{
    if (cc->call)
        grpc_call_unref(cc->call);
    if (cc->cq) {
        grpc_completion_queue_shutdown(cc->cq);
        while (grpc_completion_queue_pluck(cc->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(cc->cq);
    }
    for (size_t i = 0; i < cc->md_count; i++)
        grpc_slice_unref(cc->md[i].value);
    memset(cc, 0, sizeof *cc);
}

static bool rpc_pluck(grpc_completion_queue *cq, void *tag)
{
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void rpc_copy_details(grpc_slice details, char *out, size_t n)
{
    size_t len = GRPC_SLICE_LENGTH(details);
    if (len >= n)
        len = n - 1;
    memcpy(out, GRPC_SLICE_START_PTR(details), len);
    out[len] = '\0';
    for (size_t i = 0; i < len; i++) /* a status message is shown to people: keep it printable */
        if ((unsigned char)out[i] < 0x20)
            out[i] = ' ';
}

rpc_code rpc_call_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *opts,
                        ProtobufCMessage **ret_resp, rpc_status *st)
{
    rpc_client_call cc;
    if (!base_is_ok(rpc_client_call_start(ch, method, opts, &cc))) {
        rpc_status_set(st, RPC_INTERNAL, base_error_message());
        return RPC_INTERNAL;
    }
    grpc_byte_buffer *send = rpc_pack(req);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = cc.md_count;
    ops[0].data.send_initial_metadata.metadata = cc.md;
    ops[0].flags = opts && opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    rpc_code code;
    char msg[256] = "";
    if (grpc_call_start_batch(cc.call, ops, 6, &cc, NULL) != GRPC_CALL_OK || !rpc_pluck(cc.cq, &cc)) {
        code = RPC_INTERNAL;
        snprintf(msg, sizeof msg, "call failed to run");
    } else {
        code = (rpc_code)status;
        rpc_copy_details(details, msg, sizeof msg);
        if (code == RPC_OK) {
            ProtobufCMessage *m = NULL;
            if (recv) {
                grpc_slice s = rpc_flatten(recv);
                m = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
                grpc_slice_unref(s);
            }
            if (!m) {
                code = RPC_INTERNAL;
                snprintf(msg, sizeof msg, "response could not be decoded");
            } else {
                *ret_resp = m;
            }
        }
    }
    rpc_status_set(st, code, msg);
    grpc_byte_buffer_destroy(send);
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_slice_unref(details);
    rpc_client_call_end(&cc);
    return code;
}

/* ------------------------------------------------------------------ client streams */

struct rpc_client_stream {
    rpc_client_call cc;
    pthread_mutex_t mu;
    bool started; /* initial metadata + RECV_STATUS started */
    bool send_closed;
    bool finished;
    bool got_initial;
    grpc_metadata_array initial;
    grpc_metadata_array trailing;
    grpc_status_code status;
    grpc_slice details;
    int status_tag, send_tag, recv_tag; /* distinct addresses for pluck */
    bool wait_for_ready;
};

base_result rpc_client_stream_open(rpc_channel *ch, const char *method, const rpc_call_opts *opts,
                                   rpc_client_stream **ret)
{
    rpc_client_stream *s = calloc(1, sizeof *s);
    BASE_ENSURE(s, BASE_ERR_NOMEM, "out of memory");
    base_result r = rpc_client_call_start(ch, method, opts, &s->cc);
    if (!base_is_ok(r)) {
        free(s);
        return r;
    }
    pthread_mutex_init(&s->mu, NULL);
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);
    s->details = grpc_empty_slice();
    s->status = GRPC_STATUS_UNKNOWN;
    s->wait_for_ready = opts && opts->wait_for_ready;
    /* Initial metadata goes with the status op now, so the call starts even before the first send. */
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = s->cc.md_count;
    ops[0].data.send_initial_metadata.metadata = s->cc.md;
    ops[0].flags = s->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = &s->trailing;
    ops[1].data.recv_status_on_client.status = &s->status;
    ops[1].data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->cc.call, ops, 2, &s->status_tag, NULL) != GRPC_CALL_OK) {
        rpc_client_stream_free(s);
        return base_fail(BASE_ERR_INTERNAL, "stream could not start");
    }
    s->started = true;
    *ret = s;
    return BASE_OK_RESULT;
}

base_result rpc_client_stream_send(rpc_client_stream *s, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = rpc_pack(msg);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    bool ok = grpc_call_start_batch(s->cc.call, &op, 1, &s->send_tag, NULL) == GRPC_CALL_OK &&
              rpc_pluck(s->cc.cq, &s->send_tag);
    grpc_byte_buffer_destroy(bb);
    return ok ? BASE_OK_RESULT : base_fail(BASE_ERR_UNAVAILABLE, "stream is closed");
}

base_result rpc_client_stream_close_send(rpc_client_stream *s)
{
    if (s->send_closed)
        return BASE_OK_RESULT;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    s->send_closed = true;
    bool ok = grpc_call_start_batch(s->cc.call, &op, 1, &s->send_tag, NULL) == GRPC_CALL_OK &&
              rpc_pluck(s->cc.cq, &s->send_tag);
    return ok ? BASE_OK_RESULT : base_fail(BASE_ERR_UNAVAILABLE, "stream is closed");
}

base_result rpc_client_stream_recv(rpc_client_stream *s, const ProtobufCMessageDescriptor *desc,
                                   ProtobufCMessage **ret_msg, bool *ret_eof)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    /* A client sees no message before it has asked for the initial metadata: the first receive does. */
    if (!s->got_initial) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
        n++;
        s->got_initial = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &bb;
    n++;
    if (grpc_call_start_batch(s->cc.call, ops, n, &s->recv_tag, NULL) != GRPC_CALL_OK)
        return base_fail(BASE_ERR_INTERNAL, "stream receive could not start");
    if (!rpc_pluck(s->cc.cq, &s->recv_tag) || !bb) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        *ret_eof = true; /* the status (rpc_client_stream_finish) says whether it ended well */
        return BASE_OK_RESULT;
    }
    grpc_slice sl = rpc_flatten(bb);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    grpc_byte_buffer_destroy(bb);
    if (!m)
        return base_fail(BASE_ERR_INVALID, "stream message could not be decoded");
    *ret_eof = false;
    *ret_msg = m;
    return BASE_OK_RESULT;
}

void rpc_client_stream_cancel(rpc_client_stream *s)
{
    grpc_call_cancel(s->cc.call, NULL);
}

rpc_code rpc_client_stream_finish(rpc_client_stream *s, rpc_status *st)
{
    if (!s->finished) {
        /* A failed half-close means the call already ended; its status below says how. */
        if (!s->send_closed && !base_is_ok(rpc_client_stream_close_send(s)))
            s->send_closed = true;
        (void)rpc_pluck(s->cc.cq, &s->status_tag);
        s->finished = true;
    }
    char msg[256];
    rpc_copy_details(s->details, msg, sizeof msg);
    rpc_status_set(st, (rpc_code)s->status, msg);
    return (rpc_code)s->status;
}

void rpc_client_stream_free(rpc_client_stream *s)
{
    if (!s)
        return;
    if (s->started && !s->finished) {
        grpc_call_cancel(s->cc.call, NULL);
        (void)rpc_pluck(s->cc.cq, &s->status_tag);
    }
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_slice_unref(s->details);
    rpc_client_call_end(&s->cc);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
