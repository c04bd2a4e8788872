/* alma-guideline: Referral Review (alma.guideline.v1.Guideline): versioned guideline bundles, deterministic
 * recommendations, the clinician's decisions, what-if and concordance (README.md). */
#include "daemon/daemon.h"
#include "service.h"

int main(int argc, char **argv)
{
    const daemon_service svc = {
        .name = "guideline",
        .summary = "Referral Review (alma.guideline.v1.Guideline)",
        .methods = guideline_methods,
        .method_count = guideline_method_count,
        /* Every review waits on the audit log's group commit and a Postgres commit: more handler threads
         * than cores keep the pipeline full (as alma-vault). */
        .default_workers = 64,
        .settings = guideline_settings,
        .setting_count = guideline_setting_count,
        .init = guideline_service_init,
        .fini = guideline_service_fini,
    };
    return daemon_main(&svc, argc, argv);
}
