/* Helpers for tests that make mTLS calls with the dev PKI of the harness (tests/harness/pki.cmake). */
#ifndef ALMA_TESTRPC_H
#define ALMA_TESTRPC_H

#include "rpc/rpc.h"

/* Client TLS as the dev certificate `name` ("test-client", "alma-cli", "intruder", "rogue-client", ...):
 * <name>.pem, <name>-key.pem, the dev CA, server name "localhost". The paths live in one of 8 rotating
 * static slots: use the result before 8 more calls. */
rpc_client_tls testrpc_client_tls(const char *name);

#endif
