/* Login sessions in Redis, with the two timeouts of §164.312(a)(2)(iii) automatic logoff:
 *
 *   idle      a session not refreshed for idle_s seconds ends (the key's TTL; every refresh restarts it);
 *   absolute  a session ends absolute_s seconds after login whatever happens (abs_end, checked on every
 *             refresh, and the TTL is never set past it).
 *
 * A session is the hash idn:ses:<sid> {tid, sub, mfa, created, abs_end, refresh} where refresh is the
 * SHA-256 (hex) of the refresh secret handed to the client once; a principal's sessions are also listed in
 * the set idn:ses:user:<principal> so they can all be ended at once (logout everywhere, a disabled user, a
 * role change). Ending a session deletes it: a refresh then fails, and the caller (service.c) revokes the
 * session's live access tokens through common/authz (authz:revoked:sid:<sid>).
 *
 * Redis holds nothing that cannot be lost: losing it logs everyone out. Errors: BASE_ERR_UNAUTH with one
 * fixed message for any session that is missing, ended, expired or whose secret does not match (the caller
 * cannot tell which); BASE_ERR_UNAVAILABLE when Redis is down; BASE_ERR_INVALID for malformed ids. */
#ifndef ALMA_IDENTITY_SESSION_H
#define ALMA_IDENTITY_SESSION_H

#include "base/result.h"
#include "cache/cache.h"

#include <stdbool.h>
#include <stdint.h>

#define SESSION_ID_LEN        36 /* "ses_" + 32 hex */
#define SESSION_SECRET_LEN    43 /* base64url of 32 random bytes, no padding */
#define SESSION_MAX_PRINCIPAL 64
#define SESSION_MAX_TENANT    64

typedef struct session_config {
    int64_t idle_s;     /* default 900 (15 min) */
    int64_t absolute_s; /* default 43200 (12 h) */
} session_config;

typedef struct session_info {
    char sid[SESSION_ID_LEN + 1];
    char tenant_id[SESSION_MAX_TENANT + 1];
    char principal_id[SESSION_MAX_PRINCIPAL + 1];
    bool mfa;         /* the login passed a second factor */
    int64_t created;  /* epoch seconds */
    int64_t abs_end;  /* epoch seconds: the absolute timeout */
    int64_t idle_end; /* epoch seconds: when it ends unless refreshed */
} session_info;

session_config session_config_default(void);

/* A new session; *ret_secret receives the refresh secret (NUL-terminated, SESSION_SECRET_LEN chars), which
 * is stored only as its hash. */
BASE_MUST_USE base_result session_create(cache_conn *conn, const session_config *cfg, const char *tenant_id,
                                         const char *principal_id, bool mfa, int64_t now,
                                         session_info *ret_info, char ret_secret[SESSION_SECRET_LEN + 1]);

/* Check the refresh secret (constant time) and both timeouts; restart the idle timeout. */
BASE_MUST_USE base_result session_refresh(cache_conn *conn, const session_config *cfg, const char *sid,
                                          const char *secret, int64_t now, session_info *ret_info);

/* The live session (no secret needed: for the service's own checks, e.g. Logout of the caller's session). */
BASE_MUST_USE base_result session_get(cache_conn *conn, const char *sid, int64_t now, session_info *ret_info);

/* End one session. *ret_ended (may be NULL) says whether it existed. */
BASE_MUST_USE base_result session_end(cache_conn *conn, const char *sid, bool *ret_ended);

/* End every session of a principal; the ids ended are passed to on_ended (may be NULL) so the caller can
 * revoke their tokens. *ret_count (may be NULL) receives how many. */
BASE_MUST_USE base_result session_end_all(cache_conn *conn, const char *principal_id,
                                          void (*on_ended)(void *arg, const char *sid), void *arg,
                                          int *ret_count);

#endif
