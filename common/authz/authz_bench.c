/* alma-authz-bench: authz_authorize() calls per second on one thread, median of 5 runs, for
 *   - a permission that is not patient-scoped (pure in-process: verify + revocation + rules), and
 *   - a patient-scoped one (the same plus one Redis GET of the relationship mirror),
 * each with the verified-token cache (the default; the same token on every call, as a client sends it for
 * its whole life) and without it (cache_entries -1: the signature is verified on every call), and, for
 * reference, authz_token_verify() alone. With --threads N (N > 1), also the role permission from N threads
 * at once, both ways (total calls/s). Not a test: it needs a Redis (the authorizer's revocation feed is
 * required for any decision).
 *
 *   alma-authz-bench [--redis-host H] [--redis-port P] [--iterations N] [--threads N]
 */
#include "authz/authz.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5

typedef struct bench_keys {
    char *jwks;
} bench_keys;

static base_result fetch_jwks(void *arg, char **ret_jwks)
{
    const bench_keys *k = arg;
    size_t n = strlen(k->jwks);
    char *copy = malloc(n + 1);
    if (!copy)
        return base_fail(BASE_ERR_NOMEM, "bench: out of memory");
    memcpy(copy, k->jwks, n + 1);
    *ret_jwks = copy;
    return BASE_OK_RESULT;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b ? 1 : 0;
}

static void die(const char *what)
{
    fprintf(stderr, "alma-authz-bench: %s: %s\n", what, base_error_message());
    exit(1);
}

typedef enum bench_kind { BENCH_VERIFY, BENCH_ROLE, BENCH_PATIENT } bench_kind;

typedef struct bench_ctx {
    authz *a; /* the authorizer under test: with or without the cache */
    const authz_keyset *ks;
    const char *bearer;
    const char *jwt;
    const char *tenant;
    const char *patient;
} bench_ctx;

/* One run of n calls; calls per second. */
static double run(const bench_ctx *b, bench_kind kind, long n)
{
    authz_resource res = {.tenant_id = b->tenant, .patient_ref = b->patient};
    authz_decision d;
    authz_claims c;
    int64_t epoch = (int64_t)time(NULL);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        base_result r;
        switch (kind) {
        case BENCH_VERIFY:
            r = authz_token_verify(b->ks, NULL, b->jwt, epoch, &c);
            break;
        case BENCH_ROLE:
            r = authz_authorize(b->a, b->bearer, "referral.review", &res, NULL, &d);
            break;
        case BENCH_PATIENT:
        default:
            r = authz_authorize(b->a, b->bearer, "phi.read.clinical", &res, NULL, &d);
            break;
        }
        if (!base_is_ok(r))
            die("call failed");
    }
    return (double)n / (now_s() - t0);
}

static void report(const char *name, const bench_ctx *b, bench_kind kind, long n)
{
    double rates[RUNS];
    (void)run(b, kind, 1); /* the first call of a cached run verifies and fills the cache */
    for (int i = 0; i < RUNS; i++)
        rates[i] = run(b, kind, n);
    qsort(rates, RUNS, sizeof rates[0], cmp_double);
    printf("%-52s median %9.0f calls/s  (%6.2f us/call; runs %.0f .. %.0f, %ld calls each)\n", name,
           rates[RUNS / 2], 1e6 / rates[RUNS / 2], rates[0], rates[RUNS - 1], n);
}

typedef struct bench_thread {
    pthread_t thread;
    const bench_ctx *b;
    long n;
} bench_thread;

static void *thread_main(void *arg)
{
    const bench_thread *t = arg;
    (void)run(t->b, BENCH_ROLE, t->n);
    return NULL;
}

/* The role permission from `threads` threads at once, n calls each: total calls per second, median of RUNS.
 */
static void report_threads(const char *name, const bench_ctx *b, int threads, long n)
{
    double rates[RUNS];
    bench_thread t[64];
    (void)run(b, BENCH_ROLE, 1);
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            t[i] = (bench_thread){.b = b, .n = n};
            if (pthread_create(&t[i].thread, NULL, thread_main, &t[i]) != 0)
                die("thread");
        }
        for (int i = 0; i < threads; i++)
            pthread_join(t[i].thread, NULL);
        rates[r] = (double)n * threads / (now_s() - t0);
    }
    qsort(rates, RUNS, sizeof rates[0], cmp_double);
    printf("%-52s median %9.0f calls/s  (runs %.0f .. %.0f, %d x %ld calls)\n", name, rates[RUNS / 2],
           rates[0], rates[RUNS - 1], threads, n);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = 6379;
    long iterations = 20000;
    long threads = 1;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--redis-host") == 0 && i + 1 < argc) {
            host = argv[++i];
        } else if (strcmp(argv[i], "--redis-port") == 0 && i + 1 < argc) {
            port = strtol(argv[++i], &end, 10);
            if (*end || port <= 0 || port > 65535) {
                fprintf(stderr, "alma-authz-bench: bad port\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            iterations = strtol(argv[++i], &end, 10);
            if (*end || iterations <= 0) {
                fprintf(stderr, "alma-authz-bench: bad iteration count\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = strtol(argv[++i], &end, 10);
            if (*end || threads <= 0 || threads > 64) {
                fprintf(stderr, "alma-authz-bench: bad thread count (1..64)\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: alma-authz-bench [--redis-host H] [--redis-port P] [--iterations N] "
                            "[--threads N]\n");
            return 2;
        }
    }

    cache_config cfg = {.host = host, .port = (int)port};
    acrypto_ed25519_key *key = NULL;
    authz_keyset *ks = NULL;
    bench_keys keys = {NULL};
    if (!base_is_ok(acrypto_ed25519_generate(&key)) || !base_is_ok(authz_keyset_new(&ks)) ||
        !base_is_ok(authz_keyset_add(ks, key)) || !base_is_ok(authz_keyset_to_jwks(ks, &keys.jwks)))
        die("keys");

    authz_claims cl;
    memset(&cl, 0, sizeof cl);
    int64_t now = (int64_t)time(NULL);
    snprintf(cl.iss, sizeof cl.iss, "%s", AUTHZ_DEFAULT_ISSUER);
    snprintf(cl.aud, sizeof cl.aud, "%s", AUTHZ_DEFAULT_AUDIENCE);
    snprintf(cl.sub, sizeof cl.sub, "usr_0123456789abcdef0123456789abcdef");
    snprintf(cl.tid, sizeof cl.tid, "bench-clinic");
    snprintf(cl.sid, sizeof cl.sid, "ses_0123456789abcdef0123456789abcdef");
    snprintf(cl.jti, sizeof cl.jti, "tok_0123456789abcdef0123456789abcdef");
    cl.iat = now;
    cl.nbf = now;
    cl.exp = now + AUTHZ_DEFAULT_MAX_LIFETIME_S; /* the longest accepted: long runs stay valid */
    cl.mfa = true;
    cl.role_count = 2;
    snprintf(cl.roles[0], sizeof cl.roles[0], "pcp_clinician");
    snprintf(cl.roles[1], sizeof cl.roles[1], "care_coordinator");
    /* A realistic clinician token: a dozen permissions, the one asked for last. */
    static const char *const perms[] = {
        "audit.read.own",     "care.plans.read",     "care.plans.write",   "scheduling.read",
        "scheduling.write",   "telehealth.join",     "guideline.evaluate", "phi.read.demographics",
        "phi.write.clinical", "identity.users.read", "phi.read.clinical",  "referral.review",
    };
    cl.perm_count = BASE_ARRAY_LEN(perms);
    for (size_t i = 0; i < cl.perm_count; i++)
        snprintf(cl.perm[i], sizeof cl.perm[i], "%s", perms[i]);
    char *jwt = NULL;
    if (!base_is_ok(authz_token_sign(&cl, key, NULL, &jwt)))
        die("sign");
    size_t bearer_len = strlen(jwt) + 8;
    char *bearer = malloc(bearer_len);
    if (!bearer)
        die("memory");
    snprintf(bearer, bearer_len, "Bearer %s", jwt);

    const char *patient = "pt_0000000000000000000000000000be0c";
    cache_conn *conn = NULL;
    if (!base_is_ok(cache_conn_new(&cfg, &conn)) ||
        !base_is_ok(authz_mirror_relationship(conn, cl.tid, cl.sub, patient, "rel_bench", "primary_care",
                                              now - 60, 0)))
        die("redis (give --redis-port)");

    authz *a = NULL, *nc = NULL;
    authz_config acfg = {.cache = &cfg, .fetch_jwks = fetch_jwks, .fetch_arg = &keys};
    authz_config nccfg = acfg;
    nccfg.cache_entries = -1;
    if (!base_is_ok(authz_new(&acfg, &a)) || !base_is_ok(authz_new(&nccfg, &nc)) ||
        !base_is_ok(authz_wait_ready(a, 5000)) || !base_is_ok(authz_wait_ready(nc, 5000)))
        die("authorizer");

    bench_ctx cached = {a, ks, bearer, jwt, cl.tid, patient};
    bench_ctx uncached = {nc, ks, bearer, jwt, cl.tid, patient};
    printf("alma-authz-bench: one thread, %d runs, token %zu bytes, %zu permissions\n", RUNS, strlen(jwt),
           cl.perm_count);
    report("authz_token_verify (verify only)", &uncached, BENCH_VERIFY, iterations);
    report("authz_authorize, role permission, no cache", &uncached, BENCH_ROLE, iterations);
    report("authz_authorize, role permission, cached", &cached, BENCH_ROLE, iterations);
    report("authz_authorize, patient-scoped (1 GET), no cache", &uncached, BENCH_PATIENT, iterations);
    report("authz_authorize, patient-scoped (1 GET), cached", &cached, BENCH_PATIENT, iterations);
    if (threads > 1) {
        char name[96];
        snprintf(name, sizeof name, "authz_authorize, role permission, no cache, %ld thr", threads);
        report_threads(name, &uncached, (int)threads, iterations / 4);
        snprintf(name, sizeof name, "authz_authorize, role permission, cached, %ld thr", threads);
        report_threads(name, &cached, (int)threads, iterations);
    }

    if (!base_is_ok(authz_unmirror_relationship(conn, cl.tid, cl.sub, patient)))
        fprintf(stderr, "alma-authz-bench: cleanup failed: %s\n", base_error_message());
    authz_free(a);
    authz_free(nc);
    cache_conn_free(conn);
    cache_thread_conn_release();
    free(bearer);
    free(jwt);
    free(keys.jwks);
    authz_keyset_free(ks);
    acrypto_ed25519_free(key);
    return 0;
}
