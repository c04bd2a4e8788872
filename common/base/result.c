#include "result.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char base_last_message[256];

base_result base_fail(base_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base_last_message, sizeof base_last_message, fmt, ap);
    va_end(ap);
    return (base_result){err == BASE_OK ? BASE_ERR_INTERNAL : err};
}

const char *base_error_message(void)
{
    return base_last_message;
}

const char *base_err_name(base_err err)
{
    switch (err) {
    case BASE_OK:
        return "ok";
    case BASE_ERR_INVALID:
        return "invalid";
    case BASE_ERR_NOT_FOUND:
        return "not_found";
    case BASE_ERR_CONFLICT:
        return "conflict";
    case BASE_ERR_EXISTS:
        return "exists";
    case BASE_ERR_LIMIT:
        return "limit";
    case BASE_ERR_UNAVAILABLE:
        return "unavailable";
    case BASE_ERR_TIMEOUT:
        return "timeout";
    case BASE_ERR_DENIED:
        return "denied";
    case BASE_ERR_UNAUTH:
        return "unauthenticated";
    case BASE_ERR_CRYPTO:
        return "crypto";
    case BASE_ERR_NOMEM:
        return "nomem";
    case BASE_ERR_IO:
        return "io";
    case BASE_ERR_INTERNAL:
        return "internal";
    default:
        return "unknown";
    }
}
