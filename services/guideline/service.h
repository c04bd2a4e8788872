/* The guideline service, alma.guideline.v1.Guideline (README.md). Settings are listed by
 * `alma-guideline --help`. */
#ifndef ALMA_GUIDELINE_SERVICE_H
#define ALMA_GUIDELINE_SERVICE_H

#include "base/config.h"
#include "rpc/rpc.h"

extern const rpc_method guideline_methods[];
extern const size_t guideline_method_count;
extern const cfg_setting guideline_settings[];
extern const size_t guideline_setting_count;

base_result guideline_service_init(void **ret_state);
void guideline_service_fini(void *state);

#endif
