/* alma-guideline-eval-bench: how long one guideline evaluation takes (services/guideline/engine.h).
 *
 *     alma-guideline-eval-bench [--n N] [--summary-only] BUNDLE.json INPUT.json
 *
 * Loads the bundle and the input once, evaluates N times (default 200000) on one thread, timing each call
 * with CLOCK_MONOTONIC, and prints the median and p99 per evaluation in microseconds and evaluations per
 * second. Every evaluation is checked to give the same bytes as the first. --summary-only asks for the
 * summary without the recommendation's JSON. Exit codes: 0 done, 1 failed, 2 usage. */
#include "bundle.h"
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRAM    "alma-guideline-eval-bench"
#define DEFAULT_N  200000
#define MAX_N      100000000L
#define NS_PER_SEC 1000000000.0
#define EXIT_OK    0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: " PROGRAM " [--n N] [--summary-only] BUNDLE.json INPUT.json\n"
            "\n"
            "Evaluates INPUT.json against BUNDLE.json N times (default %d) on one thread and prints the\n"
            "median and p99 time per evaluation (microseconds) and evaluations per second.\n"
            "  --n N           evaluations (1..%ld)\n"
            "  --summary-only  do not build the recommendation JSON (ret_json NULL)\n",
            DEFAULT_N, MAX_N);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * NS_PER_SEC + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static char *read_file(const char *path, size_t max, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, PROGRAM ": %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (!buf || n > max) {
        fprintf(stderr, PROGRAM ": %s: unreadable or over %zu bytes\n", path, max);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *ret_len = n;
    return buf;
}

int main(int argc, char **argv)
{
    long n = DEFAULT_N;
    bool summary_only = false;
    const char *paths[2];
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            n = strtol(argv[++i], &end, 10);
            if (errno || *end || n < 1 || n > MAX_N) {
                usage(stderr);
                return EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--summary-only") == 0) {
            summary_only = true;
        } else if (argv[i][0] != '-' && npaths < 2) {
            paths[npaths++] = argv[i];
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (npaths != 2) {
        usage(stderr);
        return EXIT_USAGE;
    }

    gl_bundle *b = NULL;
    if (!base_is_ok(gl_bundle_load_file(paths[0], &b))) {
        fprintf(stderr, PROGRAM ": %s: %s\n", paths[0], base_error_message());
        return EXIT_FAIL;
    }
    size_t len = 0;
    char *input = read_file(paths[1], GL_INPUT_MAX_BYTES, &len);
    double *t = malloc((size_t)n * sizeof *t);
    if (!input || !t) {
        gl_bundle_free(b);
        free(input);
        free(t);
        return EXIT_FAIL;
    }
    int rc = EXIT_OK;
    char *first = NULL;
    gl_summary s;
    double start = now_ns();
    for (long i = 0; i < n; i++) {
        char *json = NULL;
        double t0 = now_ns();
        base_result r = gl_evaluate(b, input, len, &s, summary_only ? NULL : &json, NULL);
        t[i] = now_ns() - t0;
        if (!base_is_ok(r)) {
            fprintf(stderr, PROGRAM ": %s: %s\n", paths[1], base_error_message());
            rc = EXIT_FAIL;
            break;
        }
        if (!summary_only) {
            if (!first) {
                first = json;
                continue;
            }
            if (strcmp(first, json) != 0) {
                fprintf(stderr, PROGRAM ": evaluation %ld differs from the first\n", i);
                rc = EXIT_FAIL;
            }
            free(json);
            if (rc != EXIT_OK)
                break;
        }
    }
    double total = now_ns() - start;
    if (rc == EXIT_OK) {
        qsort(t, (size_t)n, sizeof *t, cmp_double);
        double median = t[n / 2] / 1000.0;
        double p99 = t[(size_t)((double)(n - 1) * 0.99)] / 1000.0;
        printf("bundle %s %s, pathway %s, outcome %s, rule %s, %zu fired%s\n", gl_bundle_id(b),
               gl_bundle_version(b), s.pathway, gl_outcome_name(s.outcome), s.rule, s.fired,
               summary_only ? " (summary only)" : "");
        printf("evaluations: %ld\nmedian: %.2f us\np99: %.2f us\nevaluations/s: %.0f\n", n, median, p99,
               (double)n / (total / NS_PER_SEC));
    }
    free(first);
    free(t);
    free(input);
    gl_bundle_free(b);
    return rc;
}
