/* The audit log client (auditclient.h).
 *
 * Appends are batched on the client: concurrent callers' events travel together in one AppendEvents call
 * (all-or-nothing on the server, one group commit there), sent by one sender thread while the callers wait,
 * each for its own result. Under load this turns N unary calls into one, for both sides; a lone caller
 * still costs one call (the sender does not wait for company). A batch the server refuses as invalid is
 * re-sent one event at a time, so one bad event fails only its own caller. Every caller still returns only
 * once its event is durably committed, or with the error. */
#include "auditclient.h"
#include "authz/authz.h"

#include "base/batch.h"
#include "base/log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPEND_METHOD      "/alma.audit.v1.Audit/AppendEvent"
#define APPENDS_METHOD     "/alma.audit.v1.Audit/AppendEvents"
#define DEFAULT_TIMEOUT_MS 5000
#define BATCH_MAX          128 /* events per AppendEvents (the server takes up to 500) */
#define MSG_MAX            320

/* One caller's event and its answer (the sequence), the argument of its batch job. */
typedef struct pending {
    Alma__Audit__V1__EventInput *ev;
    uint64_t seq;
} pending;

struct audit_client {
    rpc_channel *ch;
    int timeout_ms;
    base_batcher *batcher;
};

/* The server's status as the caller's error (auditclient.h: INVALID keeps the server's message). */
static void fail_from(base_batch_job *j, rpc_code code, const rpc_status *st)
{
    char m[MSG_MAX];
    if (code == RPC_INVALID_ARGUMENT) {
        snprintf(m, sizeof m, "audit event refused: %s", st->message);
        base_batch_done(j, base_fail(BASE_ERR_INVALID, "audit event refused"), m);
    } else if (code == RPC_PERMISSION_DENIED) {
        base_batch_done(j, base_fail(BASE_ERR_DENIED, "audit log refused this service"),
                        "audit log refused this service (its SPIFFE id is not an appender)");
    } else {
        snprintf(m, sizeof m, "audit log unavailable (%s)", rpc_code_name(code));
        base_batch_done(j, base_fail(BASE_ERR_UNAVAILABLE, "audit log unavailable"), m);
    }
}

static void send_one(audit_client *c, base_batch_job *j)
{
    pending *p = j->arg;
    Alma__Audit__V1__AppendEventRequest req = ALMA__AUDIT__V1__APPEND_EVENT_REQUEST__INIT;
    req.event = p->ev;
    rpc_call_opts opts = {.timeout_ms = c->timeout_ms};
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c->ch, APPEND_METHOD, &req.base,
                                   &alma__audit__v1__append_event_response__descriptor, &opts, &resp, &st);
    if (code != RPC_OK) {
        fail_from(j, code, &st);
        return;
    }
    p->seq = ((Alma__Audit__V1__AppendEventResponse *)resp)->sequence;
    base_batch_done(j, BASE_OK_RESULT, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* One AppendEvents for the batch (n >= 1), each result to its caller (the batcher's flush function). */
static void send_batch(void *ctx, base_batch_job *const *jobs, size_t n)
{
    audit_client *c = ctx;
    if (n == 1) {
        send_one(c, jobs[0]);
        return;
    }
    Alma__Audit__V1__EventInput *evs[BATCH_MAX];
    for (size_t i = 0; i < n; i++)
        evs[i] = ((pending *)jobs[i]->arg)->ev;
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
            send_one(c, jobs[i]);
        return;
    }
    Alma__Audit__V1__AppendEventsResponse *r = (Alma__Audit__V1__AppendEventsResponse *)resp;
    if (code == RPC_OK && r->n_results != n) {
        code = RPC_INTERNAL;
        snprintf(st.message, sizeof st.message, "wrong number of results");
    }
    for (size_t i = 0; i < n; i++) {
        if (code != RPC_OK) {
            fail_from(jobs[i], code, &st);
        } else {
            ((pending *)jobs[i]->arg)->seq = r->results[i] ? r->results[i]->sequence : 0;
            base_batch_done(jobs[i], BASE_OK_RESULT, NULL);
        }
    }
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
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
    r = base_batcher_open(BATCH_MAX, 0, send_batch, c, &c->batcher);
    if (!base_is_ok(r)) {
        audit_client_close(c);
        return base_fail(r.err, "audit client: cannot start its sender thread");
    }
    *ret = c;
    return BASE_OK_RESULT;
}

void audit_client_close(audit_client *c)
{
    if (!c)
        return;
    base_batcher_close(c->batcher); /* the sender finishes what is queued first */
    rpc_channel_close(c->ch);
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
    base_result r = base_batcher_run(c->batcher, &p, 1);
    ev->request_id = saved_request_id;
    if (r.err == BASE_ERR_UNAVAILABLE && strcmp(base_error_message(), BASE_BATCH_CLOSING) == 0)
        return base_fail(BASE_ERR_UNAVAILABLE, "audit log unavailable (client closing)");
    BASE_GUARD(r);
    if (ret_seq)
        *ret_seq = p.seq;
    return BASE_OK_RESULT;
}
base_result audit_client_record(audit_client *c, const audit_client_event *e, const rpc_ctx *parent,
                                uint64_t *ret_seq)
{
    BASE_ENSURE(c && e, BASE_ERR_INVALID, "audit client: NULL argument");
    Alma__Audit__V1__Actor actor = ALMA__AUDIT__V1__ACTOR__INIT;
    const char *principal = e->actor ? e->actor : e->claims ? e->claims->sub : "";
    BASE_ENSURE(principal[0], BASE_ERR_INVALID, "audit event: no actor (neither actor nor a claims subject)");
    actor.principal_id = (char *)principal;
    char *claim_roles[AUTHZ_MAX_ROLES];
    if (e->roles) {
        actor.roles = (char **)e->roles;
        actor.n_roles = e->role_count < 16 ? e->role_count : 16;
    } else if (e->claims) {
        for (size_t i = 0; i < e->claims->role_count && i < AUTHZ_MAX_ROLES && i < 16; i++)
            claim_roles[actor.n_roles++] = (char *)e->claims->roles[i];
        actor.roles = claim_roles;
    }
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
    ev.guideline = (Alma__Audit__V1__GuidelineRef *)e->guideline;
    return audit_client_append(c, &ev, parent, ret_seq);
}

rpc_code audit_client_require(audit_client *c, const audit_client_event *e, rpc_ctx *ctx, const char *what)
{
    base_result r = audit_client_record(c, e, ctx, NULL);
    if (base_is_ok(r))
        return RPC_OK;
    log_emit(LOG_ERROR, rpc_ctx_request_id(ctx), "audit append failed", "error", base_error_message(), NULL);
    return rpc_fail(ctx, RPC_UNAVAILABLE, "audit log unavailable: %s", what);
}

void audit_client_record_error(audit_client *c, const audit_client_event *intent, const char *change,
                               base_err err, rpc_ctx *ctx)
{
    audit_client_event ev = *intent;
    ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_ERROR;
    ev.details =
        (const char *const[]){"change", change ? change : "failed", "error", base_err_name(err), NULL};
    if (!base_is_ok(audit_client_record(c, &ev, ctx, NULL)))
        log_emit(LOG_ERROR, rpc_ctx_request_id(ctx),
                 "a change audited beforehand did not happen, and its ERROR event could not be written",
                 "change", ev.details[1], NULL);
}
