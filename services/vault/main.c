/* alma-vault: the PHI vault (envelope-encrypted records, minimum-necessary views, patient rights,
 * retention and verified deletion). */
#include "daemon/daemon.h"
#include "service.h"

int main(int argc, char **argv)
{
    const daemon_service svc = {
        .name = "vault",
        .summary = "the PHI vault (alma.vault.v1.Vault)",
        .methods = vault_methods,
        .method_count = vault_method_count,
        /* Every call waits on the audit log's group commit and a Postgres commit: more handler threads
         * than cores keep the pipeline full (the same reason as alma-audit's 128). */
        .default_workers = 64,
        .settings = vault_settings,
        .setting_count = vault_setting_count,
        .init = vault_service_init,
        .fini = vault_service_fini,
    };
    return daemon_main(&svc, argc, argv);
}
