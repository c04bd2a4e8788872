#include "testrpc.h"

#include "testenv.h"

#include <stdio.h>

rpc_client_tls testrpc_client_tls(const char *name)
{
    static char cert[8][512], key[8][512], ca[8][512];
    static int slot;
    int i = slot++ % 8;
    char file[128];
    snprintf(file, sizeof file, "%s.pem", name);
    snprintf(cert[i], sizeof cert[i], "%s", testenv_pki(file));
    snprintf(file, sizeof file, "%s-key.pem", name);
    snprintf(key[i], sizeof key[i], "%s", testenv_pki(file));
    snprintf(ca[i], sizeof ca[i], "%s", testenv_pki("ca.pem"));
    return (rpc_client_tls){.files = {.cert = cert[i], .key = key[i], .ca = ca[i]},
                            .server_name = "localhost"};
}
