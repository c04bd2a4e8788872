/* The remote authorizer (remote.h). */
#include "remote.h"

#include "base/log.h"
#include "identity/v1/identity.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct authz_remote {
    rpc_channel *identity;
    cache_config cache;
    char redis_host[256];
    authz *az;
};

static base_result fetch_jwks(void *arg, char **ret)
{
    authz_remote *r = arg;
    Alma__Identity__V1__GetVerificationKeysRequest req =
        ALMA__IDENTITY__V1__GET_VERIFICATION_KEYS_REQUEST__INIT;
    rpc_call_opts o = {.timeout_ms = 2000};
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code =
        rpc_call_unary(r->identity, "/alma.identity.v1.Identity/GetVerificationKeys", &req.base,
                       &alma__identity__v1__get_verification_keys_response__descriptor, &o, &resp, &st);
    if (code != RPC_OK)
        return base_fail(BASE_ERR_UNAVAILABLE, "identity service unavailable (%s)", rpc_code_name(code));
    char *copy = strdup(((Alma__Identity__V1__GetVerificationKeysResponse *)resp)->jwks_json);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!copy)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    *ret = copy;
    return BASE_OK_RESULT;
}

static base_result parse_redis(authz_remote *r, const char *addr)
{
    const char *colon = strrchr(addr, ':');
    BASE_ENSURE(colon && colon != addr && (size_t)(colon - addr) < sizeof r->redis_host, BASE_ERR_INVALID,
                "redis-addr must be host:port");
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    BASE_ENSURE(errno == 0 && end && *end == '\0' && port > 0 && port < 65536, BASE_ERR_INVALID,
                "redis-addr must be host:port");
    memcpy(r->redis_host, addr, (size_t)(colon - addr));
    r->redis_host[colon - addr] = '\0';
    r->cache = (cache_config){.host = r->redis_host, .port = (int)port};
    return BASE_OK_RESULT;
}

base_result authz_remote_open(const char *identity_addr, const char *redis_addr, const rpc_client_tls *tls,
                              int wait_ready_ms, authz_remote **ret)
{
    BASE_ENSURE(identity_addr && identity_addr[0] && redis_addr && tls && ret, BASE_ERR_INVALID,
                "authorizer: identity and Redis addresses and TLS are required");
    authz_remote *r = calloc(1, sizeof *r);
    if (!r)
        return base_fail(BASE_ERR_NOMEM, "out of memory");
    base_result res = parse_redis(r, redis_addr);
    if (base_is_ok(res))
        res = rpc_channel_open(identity_addr, tls, &r->identity);
    if (base_is_ok(res)) {
        authz_config cfg = {.cache = &r->cache, .fetch_jwks = fetch_jwks, .fetch_arg = r};
        res = authz_new(&cfg, &r->az);
    }
    if (!base_is_ok(res)) {
        authz_remote_close(r);
        return res;
    }
    if (wait_ready_ms > 0 && !base_is_ok(authz_wait_ready(r->az, wait_ready_ms)))
        log_emit(LOG_WARN, NULL, "token checks not ready yet: calls needing a token fail until they are",
                 NULL);
    *ret = r;
    return BASE_OK_RESULT;
}

authz *authz_remote_authz(authz_remote *r)
{
    return r->az;
}

const cache_config *authz_remote_cache(const authz_remote *r)
{
    return &r->cache;
}

void authz_remote_close(authz_remote *r)
{
    if (!r)
        return;
    authz_free(r->az); /* first: its threads call fetch_jwks over the channel */
    rpc_channel_close(r->identity);
    free(r);
}
