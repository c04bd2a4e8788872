/* alma-audit: the audit log service, and its offline verifier (`alma-audit verify`, which needs no service
 * and no database: what a health plan or an auditor runs on an export). */
#include "daemon/daemon.h"
#include "service.h"

#include <string.h>

int audit_verify_main(int argc, char **argv); /* verify_tool.c */

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "verify") == 0)
        return audit_verify_main(argc - 1, argv + 1);
    const daemon_service svc = {
        .name = "audit",
        .summary = "append-only, tamper-evident audit log (alma.audit.v1.Audit); `alma-audit verify --help` "
                   "for the offline export verifier",
        .methods = audit_methods,
        /* An append holds its worker until its batch commits, so the workers bound the batch size: 128
         * waiting appends make batches of up to 128 events per fsync (docs/benchmarks.md). */
        .default_workers = 128,
        .method_count = audit_method_count,
        .settings = audit_settings,
        .setting_count = audit_setting_count,
        .init = audit_service_init,
        .fini = audit_service_fini,
    };
    return daemon_main(&svc, argc, argv);
}
