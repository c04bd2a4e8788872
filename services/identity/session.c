/* Login sessions in Redis (session.h). */
#include "session.h"

#include "crypto/crypto.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_PREFIX      "idn:ses:"
#define USER_KEY_PREFIX "idn:ses:user:"
#define KEY_MAX         (sizeof USER_KEY_PREFIX + SESSION_MAX_PRINCIPAL + 1)
#define HASH_HEX_LEN    64
#define SESSION_BAD     "session is not valid" /* one answer for missing, ended, expired, wrong secret */

session_config session_config_default(void)
{
    return (session_config){.idle_s = 900, .absolute_s = 43200};
}

static bool id_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

static bool sid_ok(const char *sid)
{
    if (!sid || strlen(sid) != SESSION_ID_LEN || strncmp(sid, "ses_", 4) != 0)
        return false;
    for (size_t i = 4; i < SESSION_ID_LEN; i++)
        if (!((sid[i] >= '0' && sid[i] <= '9') || (sid[i] >= 'a' && sid[i] <= 'f')))
            return false;
    return true;
}

static void session_key(char out[KEY_MAX], const char *sid)
{
    snprintf(out, KEY_MAX, KEY_PREFIX "%s", sid);
}

static void user_key(char out[KEY_MAX], const char *principal)
{
    snprintf(out, KEY_MAX, USER_KEY_PREFIX "%s", principal);
}

static base_result secret_hash(const char *secret, char out[HASH_HEX_LEN + 1])
{
    uint8_t h[32];
    BASE_GUARD(acrypto_sha256(secret, strlen(secret), h));
    size_t n = 0;
    return acrypto_hex_encode(h, sizeof h, out, HASH_HEX_LEN + 1, &n);
}

static base_result cfg_ok(const session_config *cfg)
{
    BASE_ENSURE(cfg && cfg->idle_s > 0 && cfg->absolute_s >= cfg->idle_s, BASE_ERR_INVALID,
                "session config: idle timeout must be > 0 and not above the absolute timeout");
    return BASE_OK_RESULT;
}

base_result session_create(cache_conn *conn, const session_config *cfg, const char *tenant_id,
                           const char *principal_id, bool mfa, int64_t now, session_info *ret_info,
                           char ret_secret[SESSION_SECRET_LEN + 1])
{
    BASE_GUARD(cfg_ok(cfg));
    BASE_ENSURE(conn && ret_info && ret_secret, BASE_ERR_INVALID, "session: NULL argument");
    BASE_ENSURE(id_ok(tenant_id, SESSION_MAX_TENANT), BASE_ERR_INVALID, "session: tenant id is not valid");
    BASE_ENSURE(id_ok(principal_id, SESSION_MAX_PRINCIPAL), BASE_ERR_INVALID,
                "session: principal id is not valid");
    session_info info = {0};
    uint8_t rnd[16], sec[32];
    BASE_GUARD(acrypto_random(rnd, sizeof rnd));
    BASE_GUARD(acrypto_random(sec, sizeof sec));
    memcpy(info.sid, "ses_", 4);
    size_t n = 0;
    BASE_GUARD(acrypto_hex_encode(rnd, sizeof rnd, info.sid + 4, sizeof info.sid - 4, &n));
    char secret[SESSION_SECRET_LEN + 2];
    base_result r = acrypto_base64url_encode(sec, sizeof sec, secret, sizeof secret, &n);
    acrypto_wipe(sec, sizeof sec);
    BASE_GUARD(r);
    char hash[HASH_HEX_LEN + 1];
    BASE_GUARD(secret_hash(secret, hash));
    snprintf(info.tenant_id, sizeof info.tenant_id, "%s", tenant_id);
    snprintf(info.principal_id, sizeof info.principal_id, "%s", principal_id);
    info.mfa = mfa;
    info.created = now;
    info.abs_end = now + cfg->absolute_s;
    info.idle_end = now + cfg->idle_s;

    char key[KEY_MAX], ukey[KEY_MAX], created[24], abs_end[24];
    session_key(key, info.sid);
    user_key(ukey, principal_id);
    snprintf(created, sizeof created, "%" PRId64, info.created);
    snprintf(abs_end, sizeof abs_end, "%" PRId64, info.abs_end);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%" PRId64, cfg->idle_s);
    /* One MULTI/EXEC: the hash, its idle TTL, and the principal's index (kept for the absolute timeout). */
    const char *multi[] = {"MULTI"};
    const char *hset[] = {
        "HSET",          key,       "tid",   info.tenant_id, "sub",   info.principal_id, "mfa",
        mfa ? "1" : "0", "created", created, "abs_end",      abs_end, "refresh",         hash};
    const char *expire[] = {"EXPIRE", key, ttl};
    const char *sadd[] = {"SADD", ukey, info.sid};
    char uttl[24];
    snprintf(uttl, sizeof uttl, "%" PRId64, cfg->absolute_s);
    const char *uexpire[] = {"EXPIRE", ukey, uttl};
    const char *exec[] = {"EXEC"};
    struct {
        int argc;
        const char *const *argv;
    } cmds[] = {{1, multi}, {(int)BASE_ARRAY_LEN(hset), hset}, {3, expire}, {3, sadd}, {3, uexpire},
                {1, exec}};
    for (size_t i = 0; i < BASE_ARRAY_LEN(cmds); i++) {
        cache_reply *reply = NULL;
        r = cache_command_argv(conn, cmds[i].argc, cmds[i].argv, NULL, &reply);
        cache_reply_free(reply);
        if (!base_is_ok(r)) {
            if (i > 0 && i + 1 < BASE_ARRAY_LEN(cmds)) {
                const char *discard[] = {"DISCARD"};
                cache_reply *d = NULL;
                base_result dr = cache_command_argv(conn, 1, discard, NULL, &d);
                (void)dr; /* the connection is being dropped anyway if this fails */
                cache_reply_free(d);
            }
            acrypto_wipe(secret, sizeof secret);
            return r;
        }
    }
    memcpy(ret_secret, secret, SESSION_SECRET_LEN + 1);
    acrypto_wipe(secret, sizeof secret);
    *ret_info = info;
    return BASE_OK_RESULT;
}

/* The stored session, or BASE_ERR_UNAUTH. *ret_hash receives the stored refresh hash. */
static base_result load(cache_conn *conn, const char *sid, int64_t now, session_info *ret_info,
                        char ret_hash[HASH_HEX_LEN + 1])
{
    BASE_ENSURE(sid_ok(sid), BASE_ERR_UNAUTH, SESSION_BAD);
    char key[KEY_MAX];
    session_key(key, sid);
    cache_fields f = {0};
    BASE_GUARD(cache_hgetall(conn, key, &f));
    session_info info = {0};
    snprintf(info.sid, sizeof info.sid, "%s", sid);
    bool have[6] = {false};
    char hash[HASH_HEX_LEN + 1] = "";
    for (size_t i = 0; i < f.count; i++) {
        const char *name = (const char *)f.items[i].name.data;
        const char *value = (const char *)f.items[i].value.data;
        size_t vlen = f.items[i].value.len;
        if (!name || !value)
            continue;
        if (strcmp(name, "tid") == 0 && vlen <= SESSION_MAX_TENANT) {
            snprintf(info.tenant_id, sizeof info.tenant_id, "%s", value);
            have[0] = true;
        } else if (strcmp(name, "sub") == 0 && vlen <= SESSION_MAX_PRINCIPAL) {
            snprintf(info.principal_id, sizeof info.principal_id, "%s", value);
            have[1] = true;
        } else if (strcmp(name, "mfa") == 0) {
            info.mfa = value[0] == '1';
            have[2] = true;
        } else if (strcmp(name, "created") == 0) {
            info.created = strtoll(value, NULL, 10);
            have[3] = true;
        } else if (strcmp(name, "abs_end") == 0) {
            info.abs_end = strtoll(value, NULL, 10);
            have[4] = true;
        } else if (strcmp(name, "refresh") == 0 && vlen == HASH_HEX_LEN) {
            memcpy(hash, value, HASH_HEX_LEN + 1);
            have[5] = true;
        }
    }
    cache_fields_free(&f);
    for (size_t i = 0; i < BASE_ARRAY_LEN(have); i++)
        BASE_ENSURE(have[i], BASE_ERR_UNAUTH, SESSION_BAD);
    BASE_ENSURE(now < info.abs_end, BASE_ERR_UNAUTH, SESSION_BAD);
    int64_t ttl_ms = 0;
    BASE_GUARD(cache_ttl(conn, key, &ttl_ms));
    BASE_ENSURE(ttl_ms > 0, BASE_ERR_UNAUTH, SESSION_BAD);
    info.idle_end = now + (ttl_ms + 999) / 1000;
    if (ret_hash)
        memcpy(ret_hash, hash, sizeof hash);
    *ret_info = info;
    return BASE_OK_RESULT;
}

base_result session_refresh(cache_conn *conn, const session_config *cfg, const char *sid, const char *secret,
                            int64_t now, session_info *ret_info)
{
    BASE_GUARD(cfg_ok(cfg));
    BASE_ENSURE(conn && ret_info, BASE_ERR_INVALID, "session: NULL argument");
    BASE_ENSURE(secret && strlen(secret) == SESSION_SECRET_LEN, BASE_ERR_UNAUTH, SESSION_BAD);
    session_info info;
    char stored[HASH_HEX_LEN + 1], given[HASH_HEX_LEN + 1];
    BASE_GUARD(load(conn, sid, now, &info, stored));
    BASE_GUARD(secret_hash(secret, given));
    BASE_ENSURE(acrypto_equal(stored, given, HASH_HEX_LEN), BASE_ERR_UNAUTH, SESSION_BAD);
    /* Restart the idle timeout, never past the absolute end. */
    int64_t ttl = cfg->idle_s;
    if (now + ttl > info.abs_end)
        ttl = info.abs_end - now;
    char key[KEY_MAX];
    session_key(key, sid);
    bool set = false;
    BASE_GUARD(cache_expire(conn, key, ttl, &set));
    BASE_ENSURE(set, BASE_ERR_UNAUTH, SESSION_BAD);
    info.idle_end = now + ttl;
    *ret_info = info;
    return BASE_OK_RESULT;
}

base_result session_get(cache_conn *conn, const char *sid, int64_t now, session_info *ret_info)
{
    BASE_ENSURE(conn && ret_info, BASE_ERR_INVALID, "session: NULL argument");
    return load(conn, sid, now, ret_info, NULL);
}

base_result session_end(cache_conn *conn, const char *sid, bool *ret_ended)
{
    BASE_ENSURE(conn, BASE_ERR_INVALID, "session: NULL argument");
    BASE_ENSURE(sid_ok(sid), BASE_ERR_INVALID, "session id is not valid");
    char key[KEY_MAX];
    session_key(key, sid);
    cache_bytes sub = {0};
    bool found = false;
    BASE_GUARD(cache_hget(conn, key, "sub", &sub, &found));
    bool deleted = false;
    base_result r = cache_del(conn, key, &deleted);
    if (base_is_ok(r) && found && sub.len <= SESSION_MAX_PRINCIPAL) {
        char ukey[KEY_MAX], principal[SESSION_MAX_PRINCIPAL + 1];
        snprintf(principal, sizeof principal, "%.*s", (int)sub.len, (const char *)sub.data);
        user_key(ukey, principal);
        bool removed = false;
        r = cache_srem(conn, ukey, sid, &removed);
    }
    cache_bytes_free(&sub);
    BASE_GUARD(r);
    if (ret_ended)
        *ret_ended = deleted;
    return BASE_OK_RESULT;
}

base_result session_end_all(cache_conn *conn, const char *principal_id,
                            void (*on_ended)(void *arg, const char *sid), void *arg, int *ret_count)
{
    BASE_ENSURE(conn, BASE_ERR_INVALID, "session: NULL argument");
    BASE_ENSURE(id_ok(principal_id, SESSION_MAX_PRINCIPAL), BASE_ERR_INVALID,
                "session: principal id is not valid");
    char ukey[KEY_MAX];
    user_key(ukey, principal_id);
    cache_list members = {0};
    BASE_GUARD(cache_smembers(conn, ukey, &members));
    int count = 0;
    base_result r = BASE_OK_RESULT;
    for (size_t i = 0; i < members.count && base_is_ok(r); i++) {
        char sid[SESSION_ID_LEN + 1];
        if (members.items[i].len != SESSION_ID_LEN)
            continue;
        memcpy(sid, members.items[i].data, SESSION_ID_LEN);
        sid[SESSION_ID_LEN] = '\0';
        if (!sid_ok(sid))
            continue;
        char key[KEY_MAX];
        session_key(key, sid);
        bool deleted = false;
        r = cache_del(conn, key, &deleted);
        if (base_is_ok(r) && deleted)
            count++;
        /* Tokens may outlive an expired session's key too: revoke every id the index still names. */
        if (base_is_ok(r) && on_ended)
            on_ended(arg, sid);
    }
    cache_list_free(&members);
    BASE_GUARD(r);
    bool gone = false;
    BASE_GUARD(cache_del(conn, ukey, &gone));
    if (ret_count)
        *ret_count = count;
    return BASE_OK_RESULT;
}
