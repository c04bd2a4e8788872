/* A real alma-vault inside the suite (vaultd.h). */
#include "vaultd.h"

#include "crypto/crypto.h"
#include "testdb.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OK(expr)                                                                                             \
    do {                                                                                                     \
        base_result ok_r_ = (expr);                                                                          \
        if (!base_is_ok(ok_r_))                                                                              \
            fail_msg("%s: %s", #expr, base_error_message());                                                 \
    } while (0)

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0600), 0);
}

static void write_keys(vaultd *v)
{
    uint8_t key[32];
    OK(acrypto_random(key, sizeof key));
    char b64[64];
    size_t n = 0;
    OK(acrypto_base64_encode(key, sizeof key, b64, sizeof b64, &n));
    b64[n++] = '\n';
    snprintf(v->master_path, sizeof v->master_path, "%s", testproc_work_path("vault-master.key"));
    write_file(v->master_path, b64, n);
    acrypto_ed25519_key *k = NULL;
    OK(acrypto_ed25519_generate(&k));
    acrypto_secret *pem = NULL;
    OK(acrypto_ed25519_private_to_pem(k, &pem));
    snprintf(v->cert_key_path, sizeof v->cert_key_path, "%s", testproc_work_path("vault-cert-key.pem"));
    write_file(v->cert_key_path, acrypto_secret_bytes(pem), acrypto_secret_len(pem));
    char *pub = NULL;
    size_t pub_len = 0;
    OK(acrypto_ed25519_public_to_pem(k, &pub, &pub_len));
    snprintf(v->vkey_pem, sizeof v->vkey_pem, "%s", pub);
    free(pub);
    acrypto_secret_free(pem);
    acrypto_ed25519_free(k);
}

static void launch(vaultd *v, testsuite *ts)
{
    char env_pg[600], env_owner[600], env_schema[100], env_redis[100], env_audit[100], env_idn[100],
        env_master[400], env_key[400];
    snprintf(env_pg, sizeof env_pg, "ALMA_PG_URI=%s", ts->app_uri);
    snprintf(env_owner, sizeof env_owner, "ALMA_PG_OWNER_URI=%s", ts->owner_uri);
    snprintf(env_schema, sizeof env_schema, "ALMA_PG_SCHEMA=%s", v->schema);
    snprintf(env_redis, sizeof env_redis, "ALMA_REDIS_ADDR=%s", ts->redis_addr);
    snprintf(env_audit, sizeof env_audit, "ALMA_AUDIT_ADDR=%s", ts->audit.api_addr);
    snprintf(env_idn, sizeof env_idn, "ALMA_IDENTITY_ADDR=%s", ts->identity.api_addr);
    snprintf(env_master, sizeof env_master, "ALMA_MASTER_KEY=file:%s", v->master_path);
    snprintf(env_key, sizeof env_key, "ALMA_SIGNING_KEY=%s", v->cert_key_path);
    const char *env[] = {env_pg,  env_owner,  env_schema, env_redis, env_audit,
                         env_idn, env_master, env_key,    NULL};
    char api[64];
    const char *args[] = {"--workers", "8", NULL, NULL, NULL};
    if (v->d.api) { /* a restart keeps its port */
        snprintf(api, sizeof api, "127.0.0.1:%d", v->d.api);
        args[2] = "--api-addr";
        args[3] = api;
    }
    testproc_daemon_init(&v->d, testsuite_binary("services/vault/alma-vault"), "vault", args, env);
    testproc_daemon_start(&v->d);
}

void vaultd_start(vaultd *v, testsuite *ts, const char *tag)
{
    memset(v, 0, sizeof *v);
    snprintf(v->schema, sizeof v->schema, "%s_vlt_%d_%d", tag, (int)getpid(), ts->counter);
    write_keys(v);
    launch(v, ts);
    v->db = testdb_pool(ts->pg_uri, v->schema, 2);
}

void vaultd_restart(vaultd *v, testsuite *ts)
{
    int api = v->d.api;
    assert_int_equal(testproc_daemon_stop(&v->d), 0);
    v->d.api = api;
    launch(v, ts);
}

bool vaultd_stop(vaultd *v, testsuite *ts)
{
    bool ok = true;
    if (v->d.pid) {
        int code = testproc_daemon_stop(&v->d);
        char *log = testproc_daemon_log(&v->d);
        if (code != 0 || testsuite_sanitizer_report(log)) {
            size_t len = strlen(log);
            fprintf(stderr, "alma-vault exited %d; the end of its log:\n%s\n", code,
                    log + (len > 6000 ? len - 6000 : 0));
            ok = false;
        }
        free(log);
    }
    db_pool_destroy(v->db);
    v->db = NULL;
    testdb_drop_schema(ts->root, v->schema);
    return ok;
}
