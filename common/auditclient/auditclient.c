/* The audit log client (auditclient.h).
 *
 * Appends are batched on the client: concurrent callers' events travel together in one AppendEvents call
 * (all-or-nothing on the server, one group commit there), sent by one sender thread while the callers wait,
 * each for its own result. Under load this turns N unary calls into one, for both sides; a lone caller
 * still costs one call (the sender does not wait for company). A batch the server refuses as invalid is
 * re-sent one event at a time, so one bad event fails only its own caller. Every caller still returns only
 * once its event is durably committed, or with the error. */
#include "auditclient.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPEND_METHOD      "/alma.audit.v1.Audit/AppendEvent"
#define APPENDS_METHOD     "/alma.audit.v1.Audit/AppendEvents"
#define DEFAULT_TIMEOUT_MS 5000
#define BATCH_MAX          128 /* events per AppendEvents (the server takes up to 500) */
#define MSG_MAX            320

/* One waiting caller; lives on the caller's stack until done. */
typedef struct pending {
    struct pending *next;
    Alma__Audit__V1__EventInput *ev;
    pthread_cond_t cv; /* its own: a finished batch wakes its callers only, not every waiter */
    bool done;
    base_err err;
    char msg[MSG_MAX];
    uint64_t seq;
} pending;

struct audit_client {
    rpc_channel *ch;
    int timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t work; /* the sender waits for events */
    pending *head, *tail;
    bool stop;
    pthread_t sender;
    bool sender_started;
};

static void finish(pending *p, base_result r, const char *msg, uint64_t seq)
{
    p->err = r.err;
    snprintf(p->msg, sizeof p->msg, "%s", msg ? msg : "");
    p->seq = seq;
}

/* The server's status as the caller's error (auditclient.h: INVALID keeps the server's message). */
static void fail_from(pending *p, rpc_code code, const rpc_status *st)
{
    if (code == RPC_INVALID_ARGUMENT) {
        char m[MSG_MAX];
        snprintf(m, sizeof m, "audit event refused: %s", st->message);
        finish(p, base_fail(BASE_ERR_INVALID, "audit event refused"), m, 0);
    } else if (code == RPC_PERMISSION_DENIED) {
        finish(p, base_fail(BASE_ERR_DENIED, "audit log refused this service"),
               "audit log refused this service (its SPIFFE id is not an appender)", 0);
    } else {
        char m[MSG_MAX];
        snprintf(m, sizeof m, "audit log unavailable (%s)", rpc_code_name(code));
        finish(p, base_fail(BASE_ERR_UNAVAILABLE, "audit log unavailable"), m, 0);
    }
}

static void send_one(audit_client *c, pending *p)
{
    Alma__Audit__V1__AppendEventRequest req = ALMA__AUDIT__V1__APPEND_EVENT_REQUEST__INIT;
    req.event = p->ev;
    rpc_call_opts opts = {.timeout_ms = c->timeout_ms};
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c->ch, APPEND_METHOD, &req.base,
                                   &alma__audit__v1__append_event_response__descriptor, &opts, &resp, &st);
    if (code != RPC_OK) {
        fail_from(p, code, &st);
        return;
    }
    finish(p, BASE_OK_RESULT, NULL, ((Alma__Audit__V1__AppendEventResponse *)resp)->sequence);
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* One AppendEvents for the batch (n >= 1), each result to its caller. */
static void send_batch(audit_client *c, pending **batch, size_t n)
{
    if (n == 1) {
        send_one(c, batch[0]);
        return;
    }
    Alma__Audit__V1__EventInput *evs[BATCH_MAX];
    for (size_t i = 0; i < n; i++)
        evs[i] = batch[i]->ev;
    Alma__Audit__V1__AppendEventsRequest req = ALMA__AUDIT__V1__APPEND_EVENTS_REQUEST__INIT;
    req.events = evs;
    req.n_events = n;
    rpc_call_opts opts = {.timeout_ms = c->timeout_ms};
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c->ch, APPENDS_METHOD, &req.base,
                                   &alma__audit__v1__append_events_response__descriptor, &opts, &resp, &st);
    if (code == RPC_INVALID_ARGUMENT) {
        /* Nothing was stored (all-or-nothing): find the bad one(s) by sending each alone. */
        for (size_t i = 0; i < n; i++)
            send_one(c, batch[i]);
        return;
    }
    Alma__Audit__V1__AppendEventsResponse *r = (Alma__Audit__V1__AppendEventsResponse *)resp;
    if (code == RPC_OK && r->n_results != n) {
        code = RPC_INTERNAL;
        snprintf(st.message, sizeof st.message, "wrong number of results");
    }
    for (size_t i = 0; i < n; i++) {
        if (code != RPC_OK)
            fail_from(batch[i], code, &st);
        else
            finish(batch[i], BASE_OK_RESULT, NULL, r->results[i] ? r->results[i]->sequence : 0);
    }
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
}

static void *sender_main(void *arg)
{
    audit_client *c = arg;
    pending *batch[BATCH_MAX];
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->head && !c->stop)
            pthread_cond_wait(&c->work, &c->mu);
        if (!c->head && c->stop)
            break;
        size_t n = 0;
        while (c->head && n < BATCH_MAX) {
            batch[n++] = c->head;
            c->head = c->head->next;
        }
        if (!c->head)
            c->tail = NULL;
        pthread_mutex_unlock(&c->mu);
        send_batch(c, batch, n);
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < n; i++) {
            batch[i]->done = true;
            pthread_cond_signal(&batch[i]->cv);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

base_result audit_client_open(const char *target, const rpc_client_tls *tls, int timeout_ms,
                              audit_client **ret)
{
    BASE_ENSURE(target && target[0] && tls && ret, BASE_ERR_INVALID,
                "audit client: target and TLS are required");
    BASE_ENSURE(timeout_ms >= 0, BASE_ERR_INVALID, "audit client: timeout must not be negative");
    audit_client *c = calloc(1, sizeof *c);
    if (!c)
        return base_fail(BASE_ERR_NOMEM, "audit client: out of memory");
    c->timeout_ms = timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS;
    base_result r = rpc_channel_open(target, tls, &c->ch);
    if (!base_is_ok(r)) {
        free(c);
        return r;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->work, NULL);
    if (pthread_create(&c->sender, NULL, sender_main, c) != 0) {
        audit_client_close(c);
        return base_fail(BASE_ERR_INTERNAL, "audit client: cannot start its sender thread");
    }
    c->sender_started = true;
    *ret = c;
    return BASE_OK_RESULT;
}

void audit_client_close(audit_client *c)
{
    if (!c)
        return;
    if (c->sender_started) {
        pthread_mutex_lock(&c->mu);
        c->stop = true; /* the sender finishes what is queued first */
        pthread_cond_signal(&c->work);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->sender, NULL);
    }
    rpc_channel_close(c->ch);
    pthread_cond_destroy(&c->work);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

base_result audit_client_append(audit_client *c, Alma__Audit__V1__EventInput *ev, const rpc_ctx *parent,
                                uint64_t *ret_seq)
{
    BASE_ENSURE(c && ev, BASE_ERR_INVALID, "audit client: NULL argument");
    char *saved_request_id = ev->request_id;
    if (parent && (!ev->request_id || !ev->request_id[0]))
        ev->request_id = (char *)rpc_ctx_request_id(parent);
    pending p = {.ev = ev};
    pthread_cond_init(&p.cv, NULL);
    pthread_mutex_lock(&c->mu);
    if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&p.cv);
        ev->request_id = saved_request_id;
        return base_fail(BASE_ERR_UNAVAILABLE, "audit log unavailable (client closing)");
    }
    if (c->tail)
        c->tail->next = &p;
    else
        c->head = &p;
    c->tail = &p;
    pthread_cond_signal(&c->work);
    while (!p.done)
        pthread_cond_wait(&p.cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&p.cv);
    ev->request_id = saved_request_id;
    if (p.err != BASE_OK)
        return base_fail(p.err, "%s", p.msg);
    if (ret_seq)
        *ret_seq = p.seq;
    return BASE_OK_RESULT;
}
base_result audit_client_record(audit_client *c, const audit_client_event *e, const rpc_ctx *parent,
                                uint64_t *ret_seq)
{
    BASE_ENSURE(c && e, BASE_ERR_INVALID, "audit client: NULL argument");
    Alma__Audit__V1__Actor actor = ALMA__AUDIT__V1__ACTOR__INIT;
    actor.principal_id = (char *)(e->actor ? e->actor : "");
    actor.roles = (char **)e->roles;
    actor.n_roles = e->roles ? (e->role_count < 16 ? e->role_count : 16) : 0;
    Alma__Audit__V1__EventInput ev = ALMA__AUDIT__V1__EVENT_INPUT__INIT;
    ev.tenant_id = (char *)(e->tenant_id ? e->tenant_id : "");
    ev.actor = &actor;
    ev.action = e->action;
    ev.purpose = e->purpose ? e->purpose : ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_OPERATIONS;
    ev.outcome = e->outcome ? e->outcome : ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    ev.severity = e->severity ? e->severity : ALMA__AUDIT__V1__SEVERITY__SEVERITY_INFO;
    ev.patient_ref = (char *)(e->patient_ref ? e->patient_ref : "");
    ev.resource_type = (char *)(e->resource_type ? e->resource_type : "");
    ev.resource_id = (char *)(e->resource_id ? e->resource_id : "");
    ev.phi_description = (char *)(e->phi_description ? e->phi_description : "");
    ev.basis = e->basis;
    Alma__Audit__V1__Recipient recipient = ALMA__AUDIT__V1__RECIPIENT__INIT;
    if (e->recipient_name) {
        recipient.name = (char *)e->recipient_name;
        ev.recipient = &recipient;
    }
    Alma__Audit__V1__EventInput__DetailsEntry entries[AUDIT_CLIENT_MAX_DETAILS];
    Alma__Audit__V1__EventInput__DetailsEntry *ptrs[AUDIT_CLIENT_MAX_DETAILS];
    char values[AUDIT_CLIENT_MAX_DETAILS][257];
    size_t n = 0;
    for (size_t i = 0; e->details && e->details[i] && e->details[i + 1] && n < AUDIT_CLIENT_MAX_DETAILS;
         i += 2, n++) {
        alma__audit__v1__event_input__details_entry__init(&entries[n]);
        entries[n].key = (char *)e->details[i];
        snprintf(values[n], sizeof values[n], "%s", e->details[i + 1]);
        entries[n].value = values[n];
        ptrs[n] = &entries[n];
    }
    ev.details = ptrs;
    ev.n_details = n;
    return audit_client_append(c, &ev, parent, ret_seq);
}
