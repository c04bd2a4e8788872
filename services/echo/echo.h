#ifndef ALMA_ECHO_H
#define ALMA_ECHO_H

#include "rpc/rpc.h"

#include <string.h>

/* The Echo service's method table (services/echo/echo.c); tests serve it in-process. */
extern const rpc_method echo_methods[];
extern const size_t echo_method_count;

#endif
