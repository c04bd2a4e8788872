/* The client every service uses to write to the audit log (services/audit): "no PHI leaves a service unless
 * the disclosure is durably recorded first" (ARCHITECTURE.md). A call returns only once the audit service has
 * committed the event; any failure is an error the caller must act on (fail its own call with UNAVAILABLE
 * and disclose nothing), never something to log and ignore.
 *
 * The client fills what it can: the request id from the parent call (rpc_ctx_request_id) when the event has
 * none. The audit service adds the caller's SPIFFE id from mTLS, the sequence number and the time.
 *
 * Errors: the audit service's status mapped back (INVALID_ARGUMENT -> BASE_ERR_INVALID with the service's
 * message, which names the field and never its value; UNAVAILABLE, DEADLINE_EXCEEDED and anything else ->
 * BASE_ERR_UNAVAILABLE "audit log unavailable"). Thread-safe: one client per process is enough.
 *
 * Batching: concurrent callers' events are sent together by the client's sender thread as one AppendEvents
 * (one group commit on the server); each caller still returns only when its own event is committed. A
 * batch refused as invalid is re-sent event by event, so one bad event fails only its own caller. A caller's
 * deadline does not shorten the batch's (timeout_ms). */
#ifndef ALMA_AUDITCLIENT_H
#define ALMA_AUDITCLIENT_H

#include "audit/v1/audit.pb-c.h"
#include "base/result.h"
#include "rpc/rpc.h"

#include <stdint.h>

typedef struct audit_client audit_client;

/* target "host:port" of the audit service's API; tls: this service's certificate (mTLS). timeout_ms: per
 * append (0 = 5000), capped by the parent call's deadline. */
BASE_MUST_USE base_result audit_client_open(const char *target, const rpc_client_tls *tls, int timeout_ms,
                                            audit_client **ret);
void audit_client_close(audit_client *c); /* NULL ok */

/* Append one event durably. parent may be NULL (no RPC in progress, e.g. a background job). ret_seq may be
 * NULL. */
BASE_MUST_USE base_result audit_client_append(audit_client *c, Alma__Audit__V1__EventInput *ev,
                                              const rpc_ctx *parent, uint64_t *ret_seq);

/* The common shape of a service's audit event, built into an EventInput by audit_client_record (so each
 * service does not copy the actor/details plumbing). Strings may be NULL (= ""). details: NULL-terminated
 * pairs key, value, at most AUDIT_CLIENT_MAX_DETAILS pairs; values longer than the audit limit (256 bytes)
 * are cut. Never PHI: references, counts, category names. */
#define AUDIT_CLIENT_MAX_DETAILS 16
struct authz_claims;
typedef struct audit_client_event {
    const char *tenant_id;
    const char *actor;        /* principal id, or "system:<service>"; NULL: the subject of claims */
    const char *const *roles; /* the actor's roles (at most 16 used); NULL: the roles of claims */
    size_t role_count;
    /* The caller's verified claims (common/authz), or NULL: where a NULL actor and NULL roles come from. An
     * event with neither an actor nor a claims subject is refused (BASE_ERR_INVALID) before it is sent. */
    const struct authz_claims *claims;
    Alma__Audit__V1__Action action;
    Alma__Common__V1__PurposeOfUse purpose; /* 0: OPERATIONS */
    Alma__Audit__V1__Outcome outcome;       /* 0: SUCCESS */
    Alma__Audit__V1__Severity severity;     /* 0: INFO */
    const char *patient_ref;
    const char *resource_type;
    const char *resource_id;
    const char *const *details;
    /* disclosures (ACTION_DISCLOSE) */
    const char *recipient_name;
    Alma__Audit__V1__DisclosureBasis basis;
    const char *phi_description;
    /* recommendations (ACTION_RECOMMEND, the guideline engine) */
    const Alma__Audit__V1__GuidelineRef *guideline;
} audit_client_event;

BASE_MUST_USE base_result audit_client_record(audit_client *c, const audit_client_event *e,
                                              const rpc_ctx *parent, uint64_t *ret_seq);

/* The two halves of "audit first" every service's handlers use.
 *
 * audit_client_require: record e, which must be durable before the call goes on (a change's intent, a
 * disclosure): RPC_OK, or the call fails with UNAVAILABLE "audit log unavailable: <what>" (what the caller
 * therefore did not do, e.g. "nothing was changed"), logged.
 *
 * audit_client_record_error: a change whose intent was recorded did not happen: the same event again with
 * outcome ERROR and the details change=<change> (NULL: "failed") and error=<base_err_name(err)>. Best effort
 * (the call is failing anyway): logged when this append fails too. Map the failure to the call's status
 * before calling it: the append replaces the thread's error message. */
rpc_code audit_client_require(audit_client *c, const audit_client_event *e, rpc_ctx *ctx, const char *what);
void audit_client_record_error(audit_client *c, const audit_client_event *intent, const char *change,
                               base_err err, rpc_ctx *ctx);

#endif
