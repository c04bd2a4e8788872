/* The daemon skeleton every service's main() calls (after Postfix's single_server_main): settings,
 * logging, signals, the RPC server on its API, admin and metrics ports, and a graceful SIGTERM.
 * Unlike the libraries below it, this layer logs and decides the exit code. */
#ifndef ALMA_DAEMON_H
#define ALMA_DAEMON_H

#include "base/config.h"
#include "base/log.h"
#include "rpc/rpc.h"

#define DAEMON_DEFAULT_WORKERS 8

typedef struct daemon_service {
    const char *name;    /* "echo": log and metrics name, health service name */
    const char *summary; /* one line for --help */
    const rpc_method *methods;
    size_t method_count;
    /* Handler threads when the workers setting is 0 (its default): 0 = DAEMON_DEFAULT_WORKERS. A service
     * whose handlers wait long on something shared (the audit log's group commit) wants more. */
    int default_workers;
    const cfg_setting *settings; /* the service's own settings, beside the common ones */
    size_t setting_count;
    /* After settings are loaded, before serving: open pools, run migrations. NULL = none. */
    base_result (*init)(void **ret_state);
    /* After the server has drained and stopped. NULL = none. */
    void (*fini)(void *state);
} daemon_service;

/* This process's own TLS files (the common tls-cert, tls-key, tls-ca settings), for a service's init() that
 * opens mTLS channels to other services (e.g. the audit log). Valid after settings are loaded. */
rpc_tls_files daemon_tls_files(void);

/* Runs the service until SIGTERM or SIGINT; returns the process exit code (0 after a clean drain,
 * 2 for bad settings, 1 when start-up fails). */
int daemon_main(const daemon_service *svc, int argc, char **argv);

#endif
