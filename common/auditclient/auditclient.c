/* The audit log client (auditclient.h). */
#include "auditclient.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPEND_METHOD      "/alma.audit.v1.Audit/AppendEvent"
#define DEFAULT_TIMEOUT_MS 5000

struct audit_client {
    rpc_channel *ch;
    int timeout_ms;
};

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
    *ret = c;
    return BASE_OK_RESULT;
}

void audit_client_close(audit_client *c)
{
    if (!c)
        return;
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
    Alma__Audit__V1__AppendEventRequest req = ALMA__AUDIT__V1__APPEND_EVENT_REQUEST__INIT;
    req.event = ev;
    rpc_call_opts opts = {.timeout_ms = c->timeout_ms, .parent = parent};
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c->ch, APPEND_METHOD, &req.base,
                                   &alma__audit__v1__append_event_response__descriptor, &opts, &resp, &st);
    ev->request_id = saved_request_id;
    if (code == RPC_INVALID_ARGUMENT)
        return base_fail(BASE_ERR_INVALID, "audit event refused: %s", st.message);
    if (code == RPC_PERMISSION_DENIED)
        return base_fail(BASE_ERR_DENIED,
                         "audit log refused this service (its SPIFFE id is not an appender)");
    if (code != RPC_OK)
        return base_fail(BASE_ERR_UNAVAILABLE, "audit log unavailable (%s)", rpc_code_name(code));
    if (ret_seq)
        *ret_seq = ((Alma__Audit__V1__AppendEventResponse *)resp)->sequence;
    protobuf_c_message_free_unpacked(resp, NULL);
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
