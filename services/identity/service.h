/* The identity service (README.md): tenants, users, MFA, sessions, tokens, roles, care relationships,
 * break-glass, partner clients. Settings are listed by `alma-identity --help`. */
#ifndef ALMA_IDENTITY_SERVICE_H
#define ALMA_IDENTITY_SERVICE_H

#include "base/config.h"
#include "rpc/rpc.h"

extern const rpc_method identity_methods[];
extern const size_t identity_method_count;
extern const cfg_setting identity_settings[];
extern const size_t identity_setting_count;

base_result identity_service_init(void **ret_state);
void identity_service_fini(void *state);

#endif
