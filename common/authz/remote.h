/* An authorizer for a service other than identity: verification keys fetched from the identity service's
 * GetVerificationKeys over mTLS, the revocation feed and relationship mirrors from Redis. What audit, vault
 * and every later service need to call authz_authorize(); one implementation instead of one per service.
 * Separate from authz.h because it brings in the RPC runtime and identity's API. */
#ifndef ALMA_AUTHZ_REMOTE_H
#define ALMA_AUTHZ_REMOTE_H

#include "authz.h"
#include "rpc/rpc.h"

typedef struct authz_remote authz_remote;

/* identity_addr and redis_addr are "host:port"; tls is this service's client certificate. Waits up to
 * wait_ready_ms for keys and the revocation feed (0: does not wait); not being ready is not an error
 * (decisions are UNAVAILABLE until it is), so a service can start before identity. */
BASE_MUST_USE base_result authz_remote_open(const char *identity_addr, const char *redis_addr,
                                            const rpc_client_tls *tls, int wait_ready_ms, authz_remote **ret);
authz *authz_remote_authz(authz_remote *r);
/* The Redis config the authorizer uses: pass this pointer to cache_thread_conn() too (authz.h). */
const cache_config *authz_remote_cache(const authz_remote *r);
void authz_remote_close(authz_remote *r); /* NULL ok */

#endif
