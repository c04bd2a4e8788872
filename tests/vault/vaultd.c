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
    char env_master[400], env_key[400];
    snprintf(env_master, sizeof env_master, "ALMA_MASTER_KEY=file:%s", v->master_path);
    snprintf(env_key, sizeof env_key, "ALMA_SIGNING_KEY=%s", v->cert_key_path);
    testsuite_daemon_start(ts, &v->d, "services/vault/alma-vault", "vault", v->schema, 8,
                           (const char *const[]){env_master, env_key, NULL});
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
    bool ok = testsuite_daemon_stop(&v->d, "alma-vault");
    db_pool_destroy(v->db);
    v->db = NULL;
    testdb_drop_schema(ts->root, v->schema);
    return ok;
}
