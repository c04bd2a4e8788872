/* The audit service: alma.audit.v1.Audit handlers over the store (appends) and the reader (everything else).
 *
 * Who may call what (deny by default; SPIFFE sa/<name> of the caller's mTLS certificate):
 *   AppendEvent(s)                every suite service, the test client and the load generator
 *   GetCheckpoint, proofs         any peer of the trust domain: they hold hashes only, no event content
 *   VerifyLog                     operators (alma-cli) and the test client: it re-reads the whole range
 *   List/Stream/Export, accounting  the gateway (health plans), the breach workflow, operators, the test
 *                                 client. Until the identity service's token library lands (issue 4), the
 *                                 caller's service identity is the gate; every such read is itself appended
 *                                 to the log (ACTION_QUERY / ACTION_EXPORT) and durable before any result
 *                                 is sent.
 *
 * Settings (environment ALMA_<NAME> or --<name>) are listed by `alma-audit --help`. */
#ifndef ALMA_AUDIT_SERVICE_H
#define ALMA_AUDIT_SERVICE_H

#include "base/config.h"
#include "rpc/rpc.h"

extern const rpc_method audit_methods[];
extern const size_t audit_method_count;
extern const cfg_setting audit_settings[];
extern const size_t audit_setting_count;

/* daemon_service.init / .fini: open the database pools (migrating as the owner role when pg-owner-uri is
 * set), load the signing key, open the store. */
base_result audit_service_init(void **ret_state);
void audit_service_fini(void *state);

#endif
