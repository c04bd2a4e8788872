/* alma-identity: tenants, users, MFA, sessions, tokens, roles, care relationships, break-glass. */
#include "daemon/daemon.h"
#include "service.h"

int main(int argc, char **argv)
{
    const daemon_service svc = {
        .name = "identity",
        .summary = "identity and role-based access (alma.identity.v1.Identity)",
        .methods = identity_methods,
        .method_count = identity_method_count,
        .settings = identity_settings,
        .setting_count = identity_setting_count,
        .init = identity_service_init,
        .fini = identity_service_fini,
    };
    return daemon_main(&svc, argc, argv);
}
