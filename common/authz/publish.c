/* The publisher side (identity): revocations and the relationship / break-glass mirrors in Redis, with the
 * key schema of services/identity/README.md. Every id is checked against its rule before it goes into a key,
 * so no value can add a ':' segment or reach another key. A revocation is SET before it is PUBLISHed
 * (revocation.c relies on that order). */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static base_result ttl_ms(int64_t ttl_s, int64_t *ret)
{
    if (ttl_s < 0 || ttl_s > 30 * 86400)
        return base_fail(BASE_ERR_INVALID, "authz publish: ttl out of range");
    int64_t t = ttl_s ? ttl_s : AUTHZ_DEFAULT_REVOCATION_TTL_S;
    if (t < AUTHZ_DEFAULT_MAX_LIFETIME_S)
        t = AUTHZ_DEFAULT_MAX_LIFETIME_S; /* never forget a revocation before its tokens are dead */
    *ret = t * 1000;
    return BASE_OK_RESULT;
}

static base_result publish(cache_conn *conn, const char *message, size_t len)
{
    return cache_publish(conn, AUTHZ_REVOCATION_CHANNEL, message, len, NULL);
}

base_result authz_revoke_session(cache_conn *conn, const char *sid, int64_t ttl_s)
{
    BASE_ENSURE(conn && sid, BASE_ERR_INVALID, "authz publish: missing argument");
    BASE_ENSURE(authz_valid_session(sid), BASE_ERR_INVALID, "authz publish: session id malformed");
    int64_t ms = 0;
    BASE_GUARD(ttl_ms(ttl_s, &ms));
    char key[128], msg[128];
    snprintf(key, sizeof key, "authz:revoked:sid:%s", sid);
    int n = snprintf(msg, sizeof msg, "sid %s", sid);
    BASE_GUARD(cache_set(conn, key, "1", 1, ms, CACHE_SET_ALWAYS, NULL));
    return publish(conn, msg, (size_t)n);
}

/* SET key epoch PX ttl unless the key holds a larger epoch (then only extend the expiry). */
static const char revoke_sub_script[] = "local cur = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1\n"
                                        "if cur < tonumber(ARGV[1]) then\n"
                                        "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
                                        "elseif redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then\n"
                                        "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                        "end\n"
                                        "return 1\n";

base_result authz_revoke_principal(cache_conn *conn, const char *principal, int64_t not_before_epoch,
                                   int64_t ttl_s)
{
    BASE_ENSURE(conn && principal, BASE_ERR_INVALID, "authz publish: missing argument");
    BASE_ENSURE(authz_valid_principal(principal), BASE_ERR_INVALID, "authz publish: principal id malformed");
    BASE_ENSURE(not_before_epoch >= 0 && not_before_epoch <= AUTHZ__MAX_EPOCH, BASE_ERR_INVALID,
                "authz publish: not-before out of range");
    int64_t ms = 0;
    BASE_GUARD(ttl_ms(ttl_s, &ms));
    char key[128], epoch[32], ttl[32], msg[160];
    snprintf(key, sizeof key, "authz:revoked:sub:%s", principal);
    snprintf(epoch, sizeof epoch, "%lld", (long long)not_before_epoch);
    snprintf(ttl, sizeof ttl, "%lld", (long long)ms);
    int n = snprintf(msg, sizeof msg, "sub %s %s", principal, epoch);
    const char *argv[] = {"EVAL", revoke_sub_script, "1", key, epoch, ttl};
    cache_reply *reply = NULL;
    BASE_GUARD(cache_command_argv(conn, 6, argv, NULL, &reply));
    cache_reply_free(reply);
    return publish(conn, msg, (size_t)n);
}

/* authz:<what>:<tenant>:<principal>:<patient> after checking the three ids. */
static base_result mirror_key(const char *what, const char *tenant, const char *principal,
                              const char *patient, char key[256])
{
    BASE_ENSURE(tenant && principal && patient, BASE_ERR_INVALID, "authz publish: missing argument");
    BASE_ENSURE(authz_valid_tenant(tenant), BASE_ERR_INVALID, "authz publish: tenant id malformed");
    BASE_ENSURE(authz_valid_principal(principal), BASE_ERR_INVALID, "authz publish: principal id malformed");
    BASE_ENSURE(authz_valid_patient_ref(patient), BASE_ERR_INVALID, "authz publish: patient ref malformed");
    snprintf(key, 256, "authz:%s:%s:%s:%s", what, tenant, principal, patient);
    return BASE_OK_RESULT;
}

/* SET key value, expiring at end_epoch (0: never); a record already over is deleted instead. */
static base_result set_until(cache_conn *conn, const char *key, const char *value, size_t len,
                             int64_t end_epoch)
{
    int64_t ttl = 0;
    if (end_epoch != 0) {
        int64_t now = authz__now_s();
        if (end_epoch <= now)
            return cache_del(conn, key, NULL);
        ttl = (end_epoch - now) * 1000;
    }
    return cache_set(conn, key, value, len, ttl, CACHE_SET_ALWAYS, NULL);
}

base_result authz_mirror_relationship(cache_conn *conn, const char *tenant, const char *principal,
                                      const char *patient_ref, const char *relationship_id, const char *kind,
                                      int64_t start_epoch, int64_t end_epoch)
{
    BASE_ENSURE(conn && relationship_id && kind, BASE_ERR_INVALID, "authz publish: missing argument");
    char key[256];
    BASE_GUARD(mirror_key("rel", tenant, principal, patient_ref, key));
    BASE_ENSURE(authz__valid_record_id(relationship_id), BASE_ERR_INVALID,
                "authz publish: relationship id malformed");
    BASE_ENSURE(authz__valid_rel_kind(kind), BASE_ERR_INVALID, "authz publish: relationship kind malformed");
    BASE_ENSURE(start_epoch >= 0 && start_epoch <= AUTHZ__MAX_EPOCH && end_epoch >= 0 &&
                    end_epoch <= AUTHZ__MAX_EPOCH && (end_epoch == 0 || end_epoch > start_epoch),
                BASE_ERR_INVALID, "authz publish: relationship period out of range");
    char value[256];
    int n = snprintf(value, sizeof value, "%s %s %lld %lld", relationship_id, kind, (long long)start_epoch,
                     (long long)end_epoch);
    return set_until(conn, key, value, (size_t)n, end_epoch);
}

base_result authz_unmirror_relationship(cache_conn *conn, const char *tenant, const char *principal,
                                        const char *patient_ref)
{
    BASE_ENSURE(conn, BASE_ERR_INVALID, "authz publish: missing argument");
    char key[256];
    BASE_GUARD(mirror_key("rel", tenant, principal, patient_ref, key));
    return cache_del(conn, key, NULL);
}

base_result authz_mirror_break_glass(cache_conn *conn, const char *tenant, const char *principal,
                                     const char *patient_ref, const char *grant_id, int64_t end_epoch)
{
    BASE_ENSURE(conn && grant_id, BASE_ERR_INVALID, "authz publish: missing argument");
    char key[256];
    BASE_GUARD(mirror_key("bg", tenant, principal, patient_ref, key));
    BASE_ENSURE(authz__valid_record_id(grant_id), BASE_ERR_INVALID, "authz publish: grant id malformed");
    BASE_ENSURE(end_epoch > 0 && end_epoch <= AUTHZ__MAX_EPOCH, BASE_ERR_INVALID,
                "authz publish: grant end out of range");
    char value[128];
    int n = snprintf(value, sizeof value, "%s %lld", grant_id, (long long)end_epoch);
    return set_until(conn, key, value, (size_t)n, end_epoch);
}

base_result authz_unmirror_break_glass(cache_conn *conn, const char *tenant, const char *principal,
                                       const char *patient_ref)
{
    BASE_ENSURE(conn, BASE_ERR_INVALID, "authz publish: missing argument");
    char key[256];
    BASE_GUARD(mirror_key("bg", tenant, principal, patient_ref, key));
    return cache_del(conn, key, NULL);
}
