/* The PHI vault service (README.md). Settings are listed by `alma-vault --help`. */
#ifndef ALMA_VAULT_SERVICE_H
#define ALMA_VAULT_SERVICE_H

#include "base/config.h"
#include "rpc/rpc.h"

extern const rpc_method vault_methods[];
extern const size_t vault_method_count;
extern const cfg_setting vault_settings[];
extern const size_t vault_setting_count;

base_result vault_service_init(void **ret_state);
void vault_service_fini(void *state);

#endif
