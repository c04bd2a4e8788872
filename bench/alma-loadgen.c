/*
 * alma-loadgen: a closed-loop load generator for one unary gRPC method.
 *
 * Layering exception: in the suite only common/rpc includes <grpc/grpc.h>. The load generator includes it
 * directly on purpose: it measures the transport itself (our services against the C++ async greeter), so no
 * runtime layer of ours may sit in the client's path and be measured along with the servers.
 *
 * Design (what measured fastest on 2 cores): one completion queue polled by one thread (main); N slots, each
 * keeping one call in flight. A call is ONE batch of SEND_INITIAL_METADATA + SEND_MESSAGE +
 * SEND_CLOSE_FROM_CLIENT + RECV_INITIAL_METADATA + RECV_MESSAGE + RECV_STATUS_ON_CLIENT; when it completes
 * the slot records the latency and starts the next call. Phases: connect (one probe call per channel), warmup
 * (not recorded), measurement, drain (calls still in flight are cancelled and drained before teardown).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#define LG_MAX_CONCURRENCY  100000L
#define LG_MAX_CHANNELS     1024L
#define LG_MAX_DURATION_S   3600L
#define LG_MAX_WARMUP_S     600L
#define LG_MAX_DEADLINE_MS  3600000L
#define LG_MAX_PAYLOAD      (64L * 1024 * 1024)
#define LG_MAX_REQUEST_FILE (64L * 1024 * 1024)
#define LG_MAX_PEM          (1024L * 1024)
#define LG_MAX_METADATA     64
#define LG_MAX_MD_KEY       256
#define LG_MAX_MD_VALUE     8192
/* --payload identity-login / identity-check: the fields' bounds (proto/identity/v1/identity.proto). */
#define LG_MAX_ID_FIELD   128 /* tenant, username, principal, permission, patient reference */
#define LG_MAX_PASSWORD   256
#define LG_MAX_TOKEN      8192 /* common/authz AUTHZ_MAX_TOKEN_LEN */
#define LG_MAX_TOKEN_FILE (LG_MAX_TOKEN + 2)
/* Latency samples: every measured call is kept up to this many (8 bytes each); past it a uniform reservoir.
 */
#define LG_MAX_SAMPLES    (20L * 1000 * 1000)
#define LG_SAMPLES_PER_S  250000L
#define LG_PROBE_RETRY_NS (100LL * 1000 * 1000)
#define LG_POLL_MAX_NS    (100LL * 1000 * 1000)
#define LG_DRAIN_MAX_NS   (10LL * 1000 * 1000 * 1000)
#define LG_NCODES         17 /* GRPC_STATUS_OK .. GRPC_STATUS_UNAUTHENTICATED */
#define LG_DETAIL_LEN     200
/* More than 1 failed call in 1000 fails the benchmark. */
#define LG_MAX_ERROR_PERMILLE 1

#define NS_PER_S  1000000000LL
#define NS_PER_MS 1000000LL

enum { EXIT_BENCH_FAILED = 1, EXIT_USAGE = 2 };

struct lg_metadata {
    const char *key;
    size_t key_len;
    const char *value;
};

struct lg_config {
    const char *target;
    const char *method;
    long concurrency;
    long duration_s;
    long warmup_s;
    long payload_size;
    bool payload_size_set;
    const char *payload; /* NULL / "x": field 1 of --payload-size 'x'; "audit-event": an AppendEventRequest;
                          * "identity-login": a LoginRequest; "identity-check": a CheckRequest */
    const char *login_tenant;
    const char *login_username;
    const char *login_password_file;
    const char *check_principal;
    const char *check_permission;
    const char *check_patient;
    const char *authorization_file; /* a token, sent as "authorization: Bearer <token>" */
    long channels;
    long deadline_ms;
    const char *request_file;
    bool tls;
    const char *cert;
    const char *key;
    const char *ca;
    const char *server_name;
    struct lg_metadata md[LG_MAX_METADATA];
    size_t md_count;
    bool json;
};

struct lg_channel {
    grpc_channel *channel;
    void *method; /* grpc_channel_register_call handle */
    bool ready;
};

struct lg_slot {
    grpc_call *call;
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    int64_t start_ns;
    int64_t retry_at_ns; /* probes: when to try again, 0 = not waiting */
    uint32_t channel;
    bool in_flight;
};

struct lg {
    const struct lg_config *cfg;
    grpc_completion_queue *cq;
    struct lg_channel *channels;
    struct lg_slot *slots;  /* cfg->concurrency of them */
    struct lg_slot *probes; /* one per channel */
    grpc_metadata *md;
    size_t md_count; /* --metadata entries, and authorization from --authorization-file */
    grpc_slice request;
    size_t request_len;
    long inflight;
    bool draining; /* the measured window has closed */
    int64_t warm_end_ns;
    int64_t end_ns;

    /* Whole run (warmup, measurement, calls that end during drain; not the ones we cancel). */
    uint64_t calls_total;
    uint64_t errors_total;
    uint64_t by_code[LG_NCODES];
    char first_detail[LG_NCODES][LG_DETAIL_LEN];
    uint64_t warmup_calls;
    /* Measurement window. */
    uint64_t ok;
    uint64_t errors;
    uint64_t lat_sum_ns;
    uint64_t lat_max_ns;
    uint64_t *lat;
    size_t lat_cap;
    size_t lat_len;
    uint64_t rng;
    /* Connect phase: last failure seen by a probe. */
    grpc_status_code probe_code;
    char probe_detail[LG_DETAIL_LEN];
    uint64_t probe_attempts;
};

static const char *const lg_code_names[LG_NCODES] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* gRPC deadline `ns` nanoseconds from now. */
static gpr_timespec deadline_in(int64_t ns)
{
    if (ns < 0)
        ns = 0;
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(ns, GPR_TIMESPAN));
}

static size_t code_index(grpc_status_code code)
{
    return (code >= 0 && code < LG_NCODES) ? (size_t)code : (size_t)GRPC_STATUS_UNKNOWN;
}

/* ---- arguments ---- */

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: alma-loadgen --target HOST:PORT --method /pkg.Service/Method [options]\n"
        "\n"
        "Closed-loop load generator for one unary gRPC method (gRPC C core, asynchronous: one completion\n"
        "queue, one polling thread, N calls kept in flight; each call is one batch of all six client ops).\n"
        "\n"
        "  --target HOST:PORT      server address (required)\n"
        "  --method PATH           full method path, e.g. /alma.echo.v1.Echo/Echo (required)\n"
        "  --concurrency N         calls kept in flight (default 64, max %ld)\n"
        "  --duration S            measured seconds (default 10, max %ld)\n"
        "  --warmup S              seconds run first and not recorded (default 1, max %ld)\n"
        "  --payload-size BYTES    request = protobuf field 1 (string) of BYTES 'x' (default 16, max %ld);\n"
        "                          valid as alma.echo.v1.EchoRequest and as helloworld.HelloRequest\n"
        "  --payload KIND          x: the --payload-size request above (default); audit-event: a\n"
        "                          realistic alma.audit.v1.AppendEventRequest of 164 bytes (tenant,\n"
        "                          actor with a role, ACTION_READ, purpose treatment, outcome success,\n"
        "                          severity info, a pt_ patient reference, resource type and id, request\n"
        "                          id), the same bytes every call; identity-login: an\n"
        "                          alma.identity.v1.LoginRequest of --login-tenant, --login-username and\n"
        "                          the password in --login-password-file (no second factor: a user whose\n"
        "                          roles need no MFA); identity-check: an alma.identity.v1.CheckRequest of\n"
        "                          --check-permission (default referral.review) and, if given,\n"
        "                          --check-principal (default: the token's own) and --check-patient\n"
        "  --login-tenant T, --login-username U, --login-password-file F\n"
        "                          the LoginRequest of --payload identity-login (the file: the password\n"
        "                          on one line, at most %d bytes)\n"
        "  --check-permission X, --check-principal P, --check-patient pt_...\n"
        "                          the CheckRequest of --payload identity-check\n"
        "  --authorization-file F  send 'authorization: Bearer <token>' with every call, the token read\n"
        "                          from F (one line; kept out of argv, where other users could read it)\n"
        "  --request-file F        raw serialized request bytes (overrides --payload-size; not with "
        "--payload)\n"
        "  --channels C            spread the calls over C channels, each its own connection\n"
        "                          (default 1, at most the concurrency)\n"
        "  --tls                   TLS; needs --ca; with --cert and --key it is mTLS\n"
        "  --cert F --key F        client certificate chain and private key (PEM)\n"
        "  --ca F                  CA certificates that verify the server (PEM)\n"
        "  --server-name NAME      expected server name (TLS target name override)\n"
        "  --metadata key=value    request metadata; repeat for more (max %d)\n"
        "  --deadline-ms D         per-call deadline, and the time allowed to connect (default 5000)\n"
        "  --json                  print one JSON object on one line instead of text\n"
        "  --help                  this text\n"
        "\n"
        "Before the warmup each channel must answer one probe call (no wait-for-ready, retried every\n"
        "100 ms while UNAVAILABLE) within --deadline-ms; otherwise the status is reported and the exit\n"
        "status is 1. Benchmark calls use wait-for-ready. gRPC retries are disabled: every failure counts.\n"
        "\n"
        "Latency: from just before the call is created until its completion is dequeued. Percentiles are\n"
        "exact (nearest rank over sorted samples): every successful measured call is kept, up to\n"
        "min(%ld, duration x %ld) samples; past that a uniform reservoir sample of that size is sorted.\n"
        "calls/s counts successful calls that completed in the measured window.\n"
        "\n"
        "Every status is checked; non-OK statuses are counted by code and printed with the first message\n"
        "seen. Exit status: 0 ok, 1 benchmark failed (more than 0.1 %% of calls failed, no successful call,\n"
        "or the target was unreachable), 2 bad arguments.\n",
        LG_MAX_CONCURRENCY, LG_MAX_DURATION_S, LG_MAX_WARMUP_S, LG_MAX_PAYLOAD, LG_MAX_PASSWORD,
        LG_MAX_METADATA, LG_MAX_SAMPLES, LG_SAMPLES_PER_S);
}

/* Strict decimal integer in [min, max]: no sign tricks, no trailing or leading garbage, no overflow. */
static bool parse_long(const char *opt, const char *s, long min, long max, long *ret)
{
    if (s == NULL || *s == '\0' || !((*s >= '0' && *s <= '9') || *s == '-')) {
        fprintf(stderr, "alma-loadgen: %s: expected an integer, got '%s'\n", opt, s ? s : "");
        return false;
    }
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0') {
        fprintf(stderr, "alma-loadgen: %s: expected an integer, got '%s'\n", opt, s);
        return false;
    }
    if (errno == ERANGE || v < min || v > max) {
        fprintf(stderr, "alma-loadgen: %s: %s is out of range [%ld, %ld]\n", opt, s, min, max);
        return false;
    }
    *ret = v;
    return true;
}

static bool md_key_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

static bool parse_metadata(struct lg_config *cfg, const char *arg)
{
    if (cfg->md_count >= LG_MAX_METADATA) {
        fprintf(stderr, "alma-loadgen: --metadata: at most %d entries\n", LG_MAX_METADATA);
        return false;
    }
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg) {
        fprintf(stderr, "alma-loadgen: --metadata: expected key=value, got '%s'\n", arg);
        return false;
    }
    size_t key_len = (size_t)(eq - arg);
    if (key_len > LG_MAX_MD_KEY) {
        fprintf(stderr, "alma-loadgen: --metadata: key longer than %d characters\n", LG_MAX_MD_KEY);
        return false;
    }
    for (size_t i = 0; i < key_len; i++) {
        if (!md_key_char_ok(arg[i])) {
            fprintf(stderr,
                    "alma-loadgen: --metadata: key '%.*s' may only contain lowercase letters, digits, "
                    "'-', '_' and '.'\n",
                    (int)key_len, arg);
            return false;
        }
    }
    if (key_len >= 5 && memcmp(arg, "grpc-", 5) == 0) {
        fprintf(stderr, "alma-loadgen: --metadata: keys starting with 'grpc-' are reserved\n");
        return false;
    }
    const char *value = eq + 1;
    size_t value_len = strlen(value);
    if (value_len > LG_MAX_MD_VALUE) {
        fprintf(stderr, "alma-loadgen: --metadata: value longer than %d bytes\n", LG_MAX_MD_VALUE);
        return false;
    }
    bool binary = key_len >= 4 && memcmp(arg + key_len - 4, "-bin", 4) == 0;
    for (size_t i = 0; i < value_len && !binary; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c > 0x7e) {
            fprintf(stderr,
                    "alma-loadgen: --metadata: value of '%.*s' must be printable ASCII (or the key must end "
                    "in -bin)\n",
                    (int)key_len, arg);
            return false;
        }
    }
    cfg->md[cfg->md_count].key = arg;
    cfg->md[cfg->md_count].key_len = key_len;
    cfg->md[cfg->md_count].value = value;
    cfg->md_count++;
    return true;
}

/* A field of the identity requests: 1 to LG_MAX_ID_FIELD printable ASCII characters without spaces. */
static bool id_field_arg(const char *opt, const char *s, const char **ret)
{
    size_t n = strlen(s);
    bool ok = n > 0 && n <= LG_MAX_ID_FIELD;
    for (size_t i = 0; ok && i < n; i++)
        ok = s[i] > 0x20 && s[i] < 0x7f;
    if (!ok) {
        fprintf(stderr, "alma-loadgen: %s: expected 1 to %d printable ASCII characters without spaces\n", opt,
                LG_MAX_ID_FIELD);
        return false;
    }
    *ret = s;
    return true;
}

enum {
    OPT_TARGET = 1000,
    OPT_METHOD,
    OPT_CONCURRENCY,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_PAYLOAD,
    OPT_PAYLOAD_KIND,
    OPT_REQUEST_FILE,
    OPT_CHANNELS,
    OPT_TLS,
    OPT_CERT,
    OPT_KEY,
    OPT_CA,
    OPT_SERVER_NAME,
    OPT_METADATA,
    OPT_DEADLINE,
    OPT_JSON,
    OPT_HELP,
    OPT_LOGIN_TENANT,
    OPT_LOGIN_USERNAME,
    OPT_LOGIN_PASSWORD_FILE,
    OPT_CHECK_PRINCIPAL,
    OPT_CHECK_PERMISSION,
    OPT_CHECK_PATIENT,
    OPT_AUTHORIZATION_FILE,
};

/* Returns 0 to run, -1 on bad arguments, 1 when --help was printed. */
static int parse_args(int argc, char **argv, struct lg_config *cfg)
{
    static const struct option options[] = {
        {"target", required_argument, NULL, OPT_TARGET},
        {"method", required_argument, NULL, OPT_METHOD},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"payload-size", required_argument, NULL, OPT_PAYLOAD},
        {"payload", required_argument, NULL, OPT_PAYLOAD_KIND},
        {"request-file", required_argument, NULL, OPT_REQUEST_FILE},
        {"channels", required_argument, NULL, OPT_CHANNELS},
        {"tls", no_argument, NULL, OPT_TLS},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"ca", required_argument, NULL, OPT_CA},
        {"server-name", required_argument, NULL, OPT_SERVER_NAME},
        {"metadata", required_argument, NULL, OPT_METADATA},
        {"deadline-ms", required_argument, NULL, OPT_DEADLINE},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {"login-tenant", required_argument, NULL, OPT_LOGIN_TENANT},
        {"login-username", required_argument, NULL, OPT_LOGIN_USERNAME},
        {"login-password-file", required_argument, NULL, OPT_LOGIN_PASSWORD_FILE},
        {"check-principal", required_argument, NULL, OPT_CHECK_PRINCIPAL},
        {"check-permission", required_argument, NULL, OPT_CHECK_PERMISSION},
        {"check-patient", required_argument, NULL, OPT_CHECK_PATIENT},
        {"authorization-file", required_argument, NULL, OPT_AUTHORIZATION_FILE},
        {NULL, 0, NULL, 0},
    };
    *cfg = (struct lg_config){
        .concurrency = 64,
        .duration_s = 10,
        .warmup_s = 1,
        .payload_size = 16,
        .channels = 1,
        .deadline_ms = 5000,
    };
    opterr = 0;
    for (;;) {
        int idx = 0;
        int c = getopt_long(argc, argv, ":h", options, &idx);
        if (c == -1)
            break;
        bool ok = true;
        switch (c) {
        case OPT_TARGET:
            cfg->target = optarg;
            break;
        case OPT_METHOD:
            cfg->method = optarg;
            break;
        case OPT_CONCURRENCY:
            ok = parse_long("--concurrency", optarg, 1, LG_MAX_CONCURRENCY, &cfg->concurrency);
            break;
        case OPT_DURATION:
            ok = parse_long("--duration", optarg, 1, LG_MAX_DURATION_S, &cfg->duration_s);
            break;
        case OPT_WARMUP:
            ok = parse_long("--warmup", optarg, 0, LG_MAX_WARMUP_S, &cfg->warmup_s);
            break;
        case OPT_PAYLOAD:
            ok = parse_long("--payload-size", optarg, 0, LG_MAX_PAYLOAD, &cfg->payload_size);
            cfg->payload_size_set = true;
            break;
        case OPT_PAYLOAD_KIND:
            cfg->payload = optarg;
            if (strcmp(optarg, "x") != 0 && strcmp(optarg, "audit-event") != 0 &&
                strcmp(optarg, "identity-login") != 0 && strcmp(optarg, "identity-check") != 0) {
                fprintf(stderr,
                        "alma-loadgen: --payload: expected x, audit-event, identity-login or identity-check, "
                        "got '%s'\n",
                        optarg);
                ok = false;
            }
            break;
        case OPT_LOGIN_TENANT:
            ok = id_field_arg("--login-tenant", optarg, &cfg->login_tenant);
            break;
        case OPT_LOGIN_USERNAME:
            ok = id_field_arg("--login-username", optarg, &cfg->login_username);
            break;
        case OPT_LOGIN_PASSWORD_FILE:
            cfg->login_password_file = optarg;
            break;
        case OPT_CHECK_PRINCIPAL:
            ok = id_field_arg("--check-principal", optarg, &cfg->check_principal);
            break;
        case OPT_CHECK_PERMISSION:
            ok = id_field_arg("--check-permission", optarg, &cfg->check_permission);
            break;
        case OPT_CHECK_PATIENT:
            ok = id_field_arg("--check-patient", optarg, &cfg->check_patient);
            break;
        case OPT_AUTHORIZATION_FILE:
            cfg->authorization_file = optarg;
            break;
        case OPT_REQUEST_FILE:
            cfg->request_file = optarg;
            break;
        case OPT_CHANNELS:
            ok = parse_long("--channels", optarg, 1, LG_MAX_CHANNELS, &cfg->channels);
            break;
        case OPT_TLS:
            cfg->tls = true;
            break;
        case OPT_CERT:
            cfg->cert = optarg;
            break;
        case OPT_KEY:
            cfg->key = optarg;
            break;
        case OPT_CA:
            cfg->ca = optarg;
            break;
        case OPT_SERVER_NAME:
            cfg->server_name = optarg;
            break;
        case OPT_METADATA:
            ok = parse_metadata(cfg, optarg);
            break;
        case OPT_DEADLINE:
            ok = parse_long("--deadline-ms", optarg, 1, LG_MAX_DEADLINE_MS, &cfg->deadline_ms);
            break;
        case OPT_JSON:
            cfg->json = true;
            break;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            return 1;
        case ':':
            fprintf(stderr, "alma-loadgen: %s needs a value (see --help)\n", argv[optind - 1]);
            return -1;
        case '?':
        default:
            if (optopt >= OPT_TARGET)
                fprintf(stderr, "alma-loadgen: %s takes no value (see --help)\n", argv[optind - 1]);
            else
                fprintf(stderr, "alma-loadgen: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return -1;
        }
        if (!ok)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "alma-loadgen: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if (cfg->target == NULL || *cfg->target == '\0') {
        fprintf(stderr, "alma-loadgen: --target HOST:PORT is required (see --help)\n");
        return -1;
    }
    if (cfg->method == NULL || cfg->method[0] != '/' || strchr(cfg->method + 1, '/') == NULL) {
        fprintf(stderr, "alma-loadgen: --method must be a full path like /alma.echo.v1.Echo/Echo\n");
        return -1;
    }
    if (cfg->request_file != NULL && cfg->payload != NULL) {
        fprintf(stderr, "alma-loadgen: --request-file and --payload are two requests: give one\n");
        return -1;
    }
    if (cfg->payload != NULL && strcmp(cfg->payload, "x") != 0 && cfg->payload_size_set) {
        fprintf(stderr, "alma-loadgen: --payload %s has its own size: no --payload-size\n", cfg->payload);
        return -1;
    }
    bool login = cfg->payload != NULL && strcmp(cfg->payload, "identity-login") == 0;
    bool check = cfg->payload != NULL && strcmp(cfg->payload, "identity-check") == 0;
    if (login && (!cfg->login_tenant || !cfg->login_username || !cfg->login_password_file)) {
        fprintf(stderr, "alma-loadgen: --payload identity-login needs --login-tenant, --login-username and "
                        "--login-password-file\n");
        return -1;
    }
    if (!login && (cfg->login_tenant || cfg->login_username || cfg->login_password_file)) {
        fprintf(stderr, "alma-loadgen: --login-* options go with --payload identity-login\n");
        return -1;
    }
    if (!check && (cfg->check_principal || cfg->check_permission || cfg->check_patient)) {
        fprintf(stderr, "alma-loadgen: --check-* options go with --payload identity-check\n");
        return -1;
    }
    for (size_t i = 0; cfg->authorization_file && i < cfg->md_count; i++) {
        if (cfg->md[i].key_len == 13 && memcmp(cfg->md[i].key, "authorization", 13) == 0) {
            fprintf(stderr,
                    "alma-loadgen: --authorization-file and --metadata authorization=... both set the "
                    "authorization: give one\n");
            return -1;
        }
    }
    if (cfg->channels > cfg->concurrency) {
        fprintf(stderr, "alma-loadgen: --channels (%ld) may not exceed --concurrency (%ld)\n", cfg->channels,
                cfg->concurrency);
        return -1;
    }
    if (!cfg->tls && (cfg->cert || cfg->key || cfg->ca || cfg->server_name)) {
        fprintf(stderr, "alma-loadgen: --cert, --key, --ca and --server-name need --tls\n");
        return -1;
    }
    if (cfg->tls && cfg->ca == NULL) {
        fprintf(stderr, "alma-loadgen: --tls needs --ca\n");
        return -1;
    }
    if ((cfg->cert == NULL) != (cfg->key == NULL)) {
        fprintf(stderr, "alma-loadgen: --cert and --key go together\n");
        return -1;
    }
    return 0;
}

/* ---- files and the request ---- */

/* Reads at most `max` bytes of `path`; the buffer gets a NUL after the data. Prints its own error. */
static bool read_file(const char *what, const char *path, long max, unsigned char **ret, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "alma-loadgen: %s %s: %s\n", what, path, strerror(errno));
        return false;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "alma-loadgen: %s %s: not a regular file\n", what, path);
        fclose(f);
        return false;
    }
    if (st.st_size > max) {
        fprintf(stderr, "alma-loadgen: %s %s: larger than %ld bytes\n", what, path, max);
        fclose(f);
        return false;
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = malloc(size + 1);
    if (buf == NULL) {
        fprintf(stderr, "alma-loadgen: out of memory\n");
        fclose(f);
        return false;
    }
    size_t n = fread(buf, 1, size, f);
    bool failed = ferror(f) || n != size;
    fclose(f);
    if (failed) {
        fprintf(stderr, "alma-loadgen: %s %s: read failed\n", what, path);
        free(buf);
        return false;
    }
    buf[n] = '\0';
    *ret = buf;
    *ret_len = n;
    return true;
}

static bool read_pem(const char *what, const char *path, char **ret)
{
    unsigned char *buf;
    size_t len;
    if (!read_file(what, path, LG_MAX_PEM, &buf, &len))
        return false;
    if (memchr(buf, '\0', len) != NULL || strstr((char *)buf, "-----BEGIN ") == NULL) {
        fprintf(stderr, "alma-loadgen: %s %s: not a PEM file\n", what, path);
        free(buf);
        return false;
    }
    *ret = (char *)buf;
    return true;
}

/* Protobuf bytes of a message whose field 1 (string) is `size` bytes of 'x'. */
static unsigned char *build_default_request(size_t size, size_t *ret_len)
{
    unsigned char *buf = malloc(1 + 10 + size);
    if (buf == NULL)
        return NULL;
    size_t n = 0;
    buf[n++] = 0x0a; /* field 1, wire type 2 (length-delimited) */
    uint64_t v = size;
    do {
        unsigned char b = v & 0x7f;
        v >>= 7;
        buf[n++] = v ? (unsigned char)(b | 0x80) : b;
    } while (v);
    memset(buf + n, 'x', size);
    *ret_len = n + size;
    return buf;
}

/* A protobuf writer over a fixed buffer, just enough for the audit event (no protobuf library in the client's
 * path). The first overflow sticks and is checked once at the end. */
struct pb_buf {
    unsigned char data[1024];
    size_t len;
    bool overflow;
};

static void pb_raw(struct pb_buf *b, const void *p, size_t n)
{
    if (b->overflow || n > sizeof b->data - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void pb_varint(struct pb_buf *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        tmp[n++] = v ? (unsigned char)(c | 0x80) : c;
    } while (v);
    pb_raw(b, tmp, n);
}

/* Field `field`, wire type 0 (varint). */
static void pb_uint(struct pb_buf *b, unsigned field, uint64_t v)
{
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, v);
}

/* Field `field`, wire type 2 (length-delimited): a string, bytes or an embedded message. */
static void pb_len(struct pb_buf *b, unsigned field, const void *p, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    pb_raw(b, p, n);
}

static void pb_str(struct pb_buf *b, unsigned field, const char *s)
{
    pb_len(b, field, s, strlen(s));
}

/* alma.audit.v1.AppendEventRequest{event: EventInput} for what a typical suite call records: a clinician
 * (one role) read a referral of a pseudonymous patient for treatment, successfully. Field numbers and enum
 * values are those of proto/audit/v1/audit.proto and proto/common/v1/common.proto; the service's validator
 * accepts it (tests would catch a drift: the benchmark fails on INVALID_ARGUMENT). */
static unsigned char *build_audit_event_request(size_t *ret_len)
{
    enum {
        ACTION_READ = 2,
        PURPOSE_OF_USE_TREATMENT = 1,
        OUTCOME_SUCCESS = 1,
        SEVERITY_INFO = 1,
    };
    struct pb_buf actor = {0}, ev = {0}, req = {0};
    pb_str(&actor, 1, "usr_01JD3X8QK2V7N5M4");             /* Actor.principal_id */
    pb_str(&actor, 2, "pcp");                              /* Actor.roles */
    pb_str(&ev, 1, "tenant-bench-clinic");                 /* tenant_id */
    pb_len(&ev, 2, actor.data, actor.len);                 /* actor */
    pb_uint(&ev, 3, ACTION_READ);                          /* action */
    pb_uint(&ev, 4, PURPOSE_OF_USE_TREATMENT);             /* purpose */
    pb_uint(&ev, 5, OUTCOME_SUCCESS);                      /* outcome */
    pb_uint(&ev, 6, SEVERITY_INFO);                        /* severity */
    pb_str(&ev, 7, "pt_3f9a2c7e51b04d8e9a6c2f1b7d4e8a05"); /* patient_ref */
    pb_str(&ev, 8, "Referral");                            /* resource_type */
    pb_str(&ev, 9, "ref_01JD3X9B7M2K4Q8R5T");              /* resource_id */
    pb_str(&ev, 12, "req-01JD3XA4C6E8G0J2L4N6P8R0T2");     /* request_id */
    pb_len(&req, 1, ev.data, ev.len);                      /* AppendEventRequest.event */
    if (actor.overflow || ev.overflow || req.overflow)
        return NULL;
    unsigned char *out = malloc(req.len);
    if (out == NULL)
        return NULL;
    memcpy(out, req.data, req.len);
    *ret_len = req.len;
    return out;
}

/* The first line of a small secret file (a password, a token) into out[cap], without its line end; nothing
 * may follow but line ends. Messages name the file, never its content. */
static bool read_secret_line(const char *what, const char *path, long max, char *out, size_t cap)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    if (!read_file(what, path, max, &buf, &len))
        return false;
    size_t n = strcspn((const char *)buf, "\r\n");
    bool ok = memchr(buf, '\0', len) == NULL && n > 0 && n < cap;
    for (size_t i = n; ok && i < len; i++)
        ok = buf[i] == '\r' || buf[i] == '\n';
    if (ok) {
        memcpy(out, buf, n);
        out[n] = '\0';
    } else {
        fprintf(stderr, "alma-loadgen: %s %s: expected one non-empty line of at most %zu bytes\n", what, path,
                cap - 1);
    }
    memset(buf, 0, len);
    free(buf);
    return ok;
}

static unsigned char *pb_copy(const struct pb_buf *b, size_t *ret_len)
{
    if (b->overflow)
        return NULL;
    unsigned char *out = malloc(b->len ? b->len : 1);
    if (out == NULL)
        return NULL;
    memcpy(out, b->data, b->len);
    *ret_len = b->len;
    return out;
}

/* alma.identity.v1.LoginRequest{tenant_id = 1, username = 2, password = 3}: a password login without a
 * second factor. NULL (message printed) when the password file is unusable. */
static unsigned char *build_login_request(const struct lg_config *cfg, size_t *ret_len)
{
    char password[LG_MAX_PASSWORD + 1];
    if (!read_secret_line("--login-password-file", cfg->login_password_file, LG_MAX_PASSWORD + 2, password,
                          sizeof password))
        return NULL;
    struct pb_buf req = {0};
    pb_str(&req, 1, cfg->login_tenant);
    pb_str(&req, 2, cfg->login_username);
    pb_str(&req, 3, password);
    memset(password, 0, sizeof password);
    unsigned char *out = pb_copy(&req, ret_len);
    memset(req.data, 0, sizeof req.data);
    if (out == NULL)
        fprintf(stderr, "alma-loadgen: could not build the LoginRequest\n");
    return out;
}

/* alma.identity.v1.CheckRequest{principal_id = 1, permission = 2, patient_ref = 3}. */
static unsigned char *build_check_request(const struct lg_config *cfg, size_t *ret_len)
{
    struct pb_buf req = {0};
    if (cfg->check_principal)
        pb_str(&req, 1, cfg->check_principal);
    pb_str(&req, 2, cfg->check_permission ? cfg->check_permission : "referral.review");
    if (cfg->check_patient)
        pb_str(&req, 3, cfg->check_patient);
    unsigned char *out = pb_copy(&req, ret_len);
    if (out == NULL)
        fprintf(stderr, "alma-loadgen: could not build the CheckRequest\n");
    return out;
}

/* "Bearer <token>" from --authorization-file (one line: the token alone, base64url and '.'). */
static char *read_authorization(const char *path)
{
    char token[LG_MAX_TOKEN + 1];
    if (!read_secret_line("--authorization-file", path, LG_MAX_TOKEN_FILE, token, sizeof token))
        return NULL;
    size_t n = strlen(token);
    for (size_t i = 0; i < n; i++) {
        char c = token[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.')) {
            fprintf(stderr,
                    "alma-loadgen: --authorization-file %s: expected the token alone (base64url and "
                    "'.', no 'Bearer ')\n",
                    path);
            memset(token, 0, sizeof token);
            return NULL;
        }
    }
    char *out = malloc(n + sizeof "Bearer ");
    if (out != NULL)
        snprintf(out, n + sizeof "Bearer ", "Bearer %s", token);
    memset(token, 0, sizeof token);
    return out;
}

/* ---- statistics ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void record_latency(struct lg *lg, uint64_t ns)
{
    uint64_t seen = lg->ok; /* calls recorded before this one */
    lg->ok++;
    lg->lat_sum_ns += ns;
    if (ns > lg->lat_max_ns)
        lg->lat_max_ns = ns;
    if (lg->lat_len < lg->lat_cap) {
        lg->lat[lg->lat_len++] = ns;
        return;
    }
    /* Algorithm R: the kept samples stay a uniform sample of all calls. */
    uint64_t j = rng_next(&lg->rng) % (seen + 1);
    if (j < lg->lat_cap)
        lg->lat[j] = ns;
}

static void record_error(struct lg *lg, grpc_status_code code, const char *detail, size_t detail_len)
{
    size_t i = code_index(code);
    if (lg->by_code[i]++ == 0) {
        if (detail_len >= LG_DETAIL_LEN)
            detail_len = LG_DETAIL_LEN - 1;
        memcpy(lg->first_detail[i], detail, detail_len);
        lg->first_detail[i][detail_len] = '\0';
        for (size_t k = 0; k < detail_len; k++) /* one line, printable */
            if ((unsigned char)lg->first_detail[i][k] < 0x20 || lg->first_detail[i][k] == 0x7f)
                lg->first_detail[i][k] = ' ';
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples; `permille` in thousandths (999 = p99.9). */
static double percentile_us(const uint64_t *sorted, size_t n, unsigned permille)
{
    if (n == 0)
        return 0.0;
    size_t rank = (size_t)(((uint64_t)n * permille + 999) / 1000);
    if (rank == 0)
        rank = 1;
    return (double)sorted[rank - 1] / 1000.0;
}

/* ---- calls ---- */

static void die_call_error(const char *what, grpc_call_error err)
{
    /* Only a bug in this program gets here (a batch gRPC refuses); nothing sensible can continue. */
    fprintf(stderr, "alma-loadgen: internal error: %s: %s\n", what, grpc_call_error_to_string(err));
    abort();
}

static void start_call(struct lg *lg, struct lg_slot *s, bool wait_for_ready, int64_t timeout_ns)
{
    const struct lg_channel *ch = &lg->channels[s->channel];
    s->start_ns = mono_ns();
    s->call = grpc_channel_create_registered_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, lg->cq,
                                                  ch->method, deadline_in(timeout_ns), NULL);
    if (s->call == NULL)
        die_call_error("grpc_channel_create_registered_call", GRPC_CALL_ERROR);
    /* SEND_MESSAGE empties the buffer it is given: one fresh buffer per call (it refs the shared slice). */
    s->send_bb = grpc_raw_byte_buffer_create(&lg->request, 1);
    s->recv_bb = NULL;
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->status = GRPC_STATUS_UNKNOWN;
    s->details = grpc_empty_slice();
    s->error_string = NULL;

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = lg->md_count;
    ops[0].data.send_initial_metadata.metadata = lg->md;
    if (wait_for_ready)
        ops[0].flags =
            GRPC_INITIAL_METADATA_WAIT_FOR_READY | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    else
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    ops[5].data.recv_status_on_client.error_string = &s->error_string;

    grpc_call_error err = grpc_call_start_batch(s->call, ops, 6, s, NULL);
    if (err != GRPC_CALL_OK)
        die_call_error("grpc_call_start_batch", err);
    s->in_flight = true;
    lg->inflight++;
}

struct lg_outcome {
    grpc_status_code code;
    char detail[LG_DETAIL_LEN];
    size_t detail_len;
};

/* Takes the call's result and frees everything gRPC handed over for it. */
static void finish_call(struct lg *lg, struct lg_slot *s, int success, struct lg_outcome *out)
{
    out->code = success ? s->status : GRPC_STATUS_UNKNOWN;
    out->detail_len = 0;
    const char *msg = NULL;
    size_t msg_len = 0;
    if (!success) {
        msg = "batch failed";
        msg_len = strlen(msg);
    } else if (out->code == GRPC_STATUS_OK && s->recv_bb == NULL) {
        out->code = GRPC_STATUS_INTERNAL;
        msg = "status OK without a response message";
        msg_len = strlen(msg);
    } else if (out->code != GRPC_STATUS_OK) {
        msg = (const char *)GRPC_SLICE_START_PTR(s->details);
        msg_len = GRPC_SLICE_LENGTH(s->details);
        if (msg_len == 0 && s->error_string != NULL) {
            msg = s->error_string;
            msg_len = strlen(msg);
        }
    }
    if (msg_len >= LG_DETAIL_LEN)
        msg_len = LG_DETAIL_LEN - 1;
    if (msg_len > 0)
        memcpy(out->detail, msg, msg_len);
    out->detail[msg_len] = '\0';
    out->detail_len = msg_len;

    grpc_slice_unref(s->details);
    gpr_free((void *)s->error_string);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_byte_buffer_destroy(s->send_bb);
    if (s->recv_bb != NULL)
        grpc_byte_buffer_destroy(s->recv_bb);
    grpc_call_unref(s->call);
    s->call = NULL;
    s->send_bb = NULL;
    s->recv_bb = NULL;
    s->error_string = NULL;
    s->in_flight = false;
    lg->inflight--;
}

static void cancel_in_flight(struct lg_slot *slots, long n)
{
    for (long i = 0; i < n; i++)
        if (slots[i].in_flight)
            grpc_call_cancel(slots[i].call, NULL);
}

/* Waits for the cancelled calls; bounded, since a call that never completes would hang teardown forever. */
static bool drain(struct lg *lg)
{
    int64_t limit = mono_ns() + LG_DRAIN_MAX_NS;
    while (lg->inflight > 0) {
        int64_t now = mono_ns();
        if (now >= limit)
            return false;
        grpc_event ev = grpc_completion_queue_next(lg->cq, deadline_in(limit - now), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct lg_slot *s = ev.tag;
        struct lg_outcome out;
        finish_call(lg, s, ev.success, &out);
        if (out.code != GRPC_STATUS_OK && out.code != GRPC_STATUS_CANCELLED && lg->draining) {
            /* Failed on its own after the window closed: still a failure of the run. */
            lg->calls_total++;
            lg->errors_total++;
            record_error(lg, out.code, out.detail, out.detail_len);
        } else if (out.code == GRPC_STATUS_OK && lg->draining) {
            lg->calls_total++;
        }
    }
    return true;
}

/* ---- phases ---- */

/* One probe call per channel until each answers with anything but UNAVAILABLE, or the deadline passes. */
static bool connect_phase(struct lg *lg)
{
    const struct lg_config *cfg = lg->cfg;
    const int64_t limit = mono_ns() + cfg->deadline_ms * NS_PER_MS;
    long pending = cfg->channels;
    bool cancelled = false;
    for (long i = 0; i < cfg->channels; i++)
        lg->probes[i].retry_at_ns = 1; /* due now */

    while (pending > 0) {
        int64_t now = mono_ns();
        int64_t wait = LG_POLL_MAX_NS;
        if (now >= limit) {
            if (lg->inflight == 0)
                break;
            if (!cancelled)
                cancel_in_flight(lg->probes, cfg->channels);
            cancelled = true;
        } else {
            if (limit - now < wait)
                wait = limit - now;
            for (long i = 0; i < cfg->channels; i++) {
                struct lg_slot *p = &lg->probes[i];
                if (lg->channels[i].ready || p->in_flight)
                    continue;
                if (p->retry_at_ns <= now) {
                    lg->probe_attempts++;
                    start_call(lg, p, false, limit - now);
                } else if (p->retry_at_ns - now < wait) {
                    wait = p->retry_at_ns - now;
                }
            }
        }
        grpc_event ev = grpc_completion_queue_next(lg->cq, deadline_in(wait), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct lg_slot *p = ev.tag;
        struct lg_outcome out;
        finish_call(lg, p, ev.success, &out);
        if (out.code == GRPC_STATUS_UNAVAILABLE || out.code == GRPC_STATUS_CANCELLED ||
            out.code == GRPC_STATUS_DEADLINE_EXCEEDED) {
            /* Keep the most telling failure: UNAVAILABLE says why, our own cancellation does not. */
            if (out.code == GRPC_STATUS_UNAVAILABLE || lg->probe_detail[0] == '\0') {
                lg->probe_code = out.code;
                memcpy(lg->probe_detail, out.detail, out.detail_len + 1);
            }
            p->retry_at_ns = mono_ns() + LG_PROBE_RETRY_NS;
            continue;
        }
        /* Reached the server: an error here (UNIMPLEMENTED, PERMISSION_DENIED...) will show in the run. */
        lg->channels[p->channel].ready = true;
        pending--;
    }
    return pending == 0;
}

static void run_phase(struct lg *lg)
{
    const struct lg_config *cfg = lg->cfg;
    const int64_t deadline_ns = cfg->deadline_ms * NS_PER_MS;
    int64_t t0 = mono_ns();
    lg->warm_end_ns = t0 + cfg->warmup_s * NS_PER_S;
    lg->end_ns = lg->warm_end_ns + cfg->duration_s * NS_PER_S;
    for (long i = 0; i < cfg->concurrency; i++)
        start_call(lg, &lg->slots[i], true, deadline_ns);

    for (;;) {
        int64_t now = mono_ns();
        if (now >= lg->end_ns)
            break;
        int64_t wait = lg->end_ns - now;
        if (wait > LG_POLL_MAX_NS)
            wait = LG_POLL_MAX_NS;
        grpc_event ev = grpc_completion_queue_next(lg->cq, deadline_in(wait), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        now = mono_ns();
        struct lg_slot *s = ev.tag;
        int64_t latency = now - s->start_ns;
        struct lg_outcome out;
        finish_call(lg, s, ev.success, &out);
        if (now >= lg->end_ns) {
            /* Completed after the window: not measured, but a failure still counts. */
            lg->calls_total++;
            if (out.code != GRPC_STATUS_OK) {
                lg->errors_total++;
                record_error(lg, out.code, out.detail, out.detail_len);
            }
            break;
        }
        bool measured = now >= lg->warm_end_ns;
        lg->calls_total++;
        if (!measured)
            lg->warmup_calls++;
        if (out.code == GRPC_STATUS_OK) {
            if (measured)
                record_latency(lg, (uint64_t)latency);
        } else {
            lg->errors_total++;
            if (measured)
                lg->errors++;
            record_error(lg, out.code, out.detail, out.detail_len);
        }
        start_call(lg, s, true, deadline_ns);
    }
    lg->draining = true;
    cancel_in_flight(lg->slots, cfg->concurrency);
}

/* ---- output ---- */

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

struct lg_result {
    double calls_per_s;
    double p50_us, p90_us, p99_us, p999_us, max_us, mean_us;
    uint64_t calls; /* measured: successes + failures */
    bool failed;
    const char *why;
};

static void print_text(const struct lg *lg, const struct lg_result *r)
{
    const struct lg_config *cfg = lg->cfg;
    printf("target %s  method %s  %s\n", cfg->target, cfg->method,
           cfg->tls ? (cfg->cert ? "mTLS" : "TLS") : "plaintext");
    printf("concurrency %ld  channels %ld  request %zu bytes  warmup %ld s  duration %ld s\n",
           cfg->concurrency, cfg->channels, lg->request_len, cfg->warmup_s, cfg->duration_s);
    printf("calls/s  %.1f\n", r->calls_per_s);
    if (lg->lat_len > 0) {
        printf("p50      %.1f us\n", r->p50_us);
        printf("p90      %.1f us\n", r->p90_us);
        printf("p99      %.1f us\n", r->p99_us);
        printf("p99.9    %.1f us\n", r->p999_us);
        printf("max      %.1f us\n", r->max_us);
        printf("mean     %.1f us\n", r->mean_us);
    } else {
        printf("latency  none (no successful measured call)\n");
    }
    printf("calls    %" PRIu64 " (ok %" PRIu64 ", %zu latency samples; %" PRIu64
           " warmup calls not recorded)\n",
           r->calls, lg->ok, lg->lat_len, lg->warmup_calls);
    printf("errors   %" PRIu64 " measured, %" PRIu64 " of %" PRIu64 " in the whole run\n", lg->errors,
           lg->errors_total, lg->calls_total);
    for (size_t i = 1; i < LG_NCODES; i++)
        if (lg->by_code[i] > 0)
            printf("  %-20s %10" PRIu64 "  first: %s\n", lg_code_names[i], lg->by_code[i],
                   lg->first_detail[i]);
    if (r->failed)
        printf("FAILED: %s\n", r->why);
    else if (lg->errors_total > 0)
        printf("WARNING: the run had errors (within the 0.1 %% allowed)\n");
}

static void print_json(const struct lg *lg, const struct lg_result *r)
{
    const struct lg_config *cfg = lg->cfg;
    printf("{\"target\":");
    json_string(stdout, cfg->target);
    printf(",\"method\":");
    json_string(stdout, cfg->method);
    printf(",\"security\":\"%s\"", cfg->tls ? (cfg->cert ? "mtls" : "tls") : "plaintext");
    printf(",\"concurrency\":%ld,\"channels\":%ld,\"request_bytes\":%zu,\"warmup_s\":%ld,\"duration_s\":%ld",
           cfg->concurrency, cfg->channels, lg->request_len, cfg->warmup_s, cfg->duration_s);
    printf(",\"calls_per_s\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f"
           ",\"max_us\":%.1f,\"mean_us\":%.1f",
           r->calls_per_s, r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us, r->mean_us);
    printf(",\"calls\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"latency_samples\":%zu"
           ",\"warmup_calls\":%" PRIu64 ",\"calls_total\":%" PRIu64 ",\"errors_total\":%" PRIu64,
           r->calls, lg->ok, lg->errors, lg->lat_len, lg->warmup_calls, lg->calls_total, lg->errors_total);
    printf(",\"errors_by_code\":{");
    bool first = true;
    for (size_t i = 1; i < LG_NCODES; i++) {
        if (lg->by_code[i] == 0)
            continue;
        printf("%s\"%s\":%" PRIu64, first ? "" : ",", lg_code_names[i], lg->by_code[i]);
        first = false;
    }
    printf("},\"error_details\":{");
    first = true;
    for (size_t i = 1; i < LG_NCODES; i++) {
        if (lg->by_code[i] == 0)
            continue;
        printf("%s\"%s\":", first ? "" : ",", lg_code_names[i]);
        json_string(stdout, lg->first_detail[i]);
        first = false;
    }
    printf("},\"failed\":%s", r->failed ? "true" : "false");
    if (r->failed) {
        printf(",\"failure\":");
        json_string(stdout, r->why);
    }
    printf("}\n");
}

/* Prints the result; returns whether the benchmark passed. */
static bool report(struct lg *lg, bool connected)
{
    struct lg_result r = {0};
    r.calls = lg->ok + lg->errors;
    if (lg->lat_len > 0) {
        qsort(lg->lat, lg->lat_len, sizeof lg->lat[0], cmp_u64);
        r.p50_us = percentile_us(lg->lat, lg->lat_len, 500);
        r.p90_us = percentile_us(lg->lat, lg->lat_len, 900);
        r.p99_us = percentile_us(lg->lat, lg->lat_len, 990);
        r.p999_us = percentile_us(lg->lat, lg->lat_len, 999);
        r.max_us = (double)lg->lat_max_ns / 1000.0;
        r.mean_us = (double)lg->lat_sum_ns / (double)lg->ok / 1000.0;
    }
    r.calls_per_s = (double)lg->ok / (double)lg->cfg->duration_s;
    if (!connected) {
        r.failed = true;
        r.why = "target unreachable";
    } else if (lg->errors_total * 1000 > lg->calls_total * LG_MAX_ERROR_PERMILLE) {
        r.failed = true;
        r.why = "more than 0.1 % of calls failed";
    } else if (lg->ok == 0) {
        r.failed = true;
        r.why = "no successful call in the measured window";
    }
    if (lg->cfg->json)
        print_json(lg, &r);
    else
        print_text(lg, &r);
    fflush(stdout);
    return !r.failed;
}

/* ---- setup and teardown ---- */

static grpc_channel_credentials *make_credentials(const struct lg_config *cfg)
{
    if (!cfg->tls)
        return grpc_insecure_credentials_create();
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *creds = NULL;
    if (!read_pem("--ca", cfg->ca, &ca))
        goto out;
    if (cfg->cert != NULL) {
        if (!read_pem("--cert", cfg->cert, &cert) || !read_pem("--key", cfg->key, &key))
            goto out;
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_credentials_create_ex(ca, &pair, NULL, NULL);
    } else {
        creds = grpc_ssl_credentials_create_ex(ca, NULL, NULL, NULL);
    }
    if (creds == NULL)
        fprintf(stderr, "alma-loadgen: could not create TLS credentials\n");
out:
    if (key != NULL) {
        memset(key, 0, strlen(key));
        free(key);
    }
    free(cert);
    free(ca);
    return creds;
}

int main(int argc, char **argv)
{
    struct lg_config cfg;
    int pr = parse_args(argc, argv, &cfg);
    if (pr != 0)
        return pr > 0 ? 0 : EXIT_USAGE;

    unsigned char *request;
    size_t request_len;
    if (cfg.request_file != NULL) {
        if (!read_file("--request-file", cfg.request_file, LG_MAX_REQUEST_FILE, &request, &request_len))
            return EXIT_USAGE;
    } else if (cfg.payload != NULL && strcmp(cfg.payload, "audit-event") == 0) {
        request = build_audit_event_request(&request_len);
        if (request == NULL) {
            fprintf(stderr, "alma-loadgen: could not build the audit event (out of memory)\n");
            return EXIT_BENCH_FAILED;
        }
    } else if (cfg.payload != NULL && strcmp(cfg.payload, "identity-login") == 0) {
        if ((request = build_login_request(&cfg, &request_len)) == NULL)
            return EXIT_USAGE;
    } else if (cfg.payload != NULL && strcmp(cfg.payload, "identity-check") == 0) {
        if ((request = build_check_request(&cfg, &request_len)) == NULL)
            return EXIT_BENCH_FAILED;
    } else {
        request = build_default_request((size_t)cfg.payload_size, &request_len);
        if (request == NULL) {
            fprintf(stderr, "alma-loadgen: out of memory\n");
            return EXIT_BENCH_FAILED;
        }
    }

    char *authorization = NULL;
    if (cfg.authorization_file != NULL &&
        (authorization = read_authorization(cfg.authorization_file)) == NULL) {
        memset(request, 0, request_len);
        free(request);
        return EXIT_USAGE;
    }

    struct lg lg = {.cfg = &cfg, .request_len = request_len, .rng = 0x9E3779B97F4A7C15ULL};
    uint64_t want = (uint64_t)cfg.duration_s * LG_SAMPLES_PER_S;
    lg.lat_cap = want < (uint64_t)LG_MAX_SAMPLES ? (size_t)want : (size_t)LG_MAX_SAMPLES;
    /* Large enough that malloc maps fresh pages: only the ones written are ever touched. */
    lg.lat = malloc(lg.lat_cap * sizeof lg.lat[0]);
    lg.slots = calloc((size_t)cfg.concurrency, sizeof lg.slots[0]);
    lg.probes = calloc((size_t)cfg.channels, sizeof lg.probes[0]);
    lg.channels = calloc((size_t)cfg.channels, sizeof lg.channels[0]);
    lg.md = calloc(cfg.md_count + 2, sizeof lg.md[0]);
    if (lg.lat == NULL || lg.slots == NULL || lg.probes == NULL || lg.channels == NULL || lg.md == NULL) {
        fprintf(stderr, "alma-loadgen: out of memory\n");
        free(lg.lat), free(lg.slots), free(lg.probes), free(lg.channels), free(lg.md), free(request);
        free(authorization);
        return EXIT_BENCH_FAILED;
    }

    grpc_init();
    int rc = EXIT_BENCH_FAILED;
    lg.request = grpc_slice_from_copied_buffer((const char *)request, request_len);
    memset(request, 0, request_len); /* a LoginRequest holds a password */
    free(request);
    size_t md_count = cfg.md_count;
    for (size_t i = 0; i < cfg.md_count; i++) {
        lg.md[i].key = grpc_slice_from_copied_buffer(cfg.md[i].key, cfg.md[i].key_len);
        lg.md[i].value = grpc_slice_from_copied_string(cfg.md[i].value);
    }
    if (authorization != NULL) {
        lg.md[md_count].key = grpc_slice_from_static_string("authorization");
        lg.md[md_count].value = grpc_slice_from_copied_string(authorization);
        md_count++;
        memset(authorization, 0, strlen(authorization));
        free(authorization);
    }
    lg.md_count = md_count;
    lg.cq = grpc_completion_queue_create_for_next(NULL);

    grpc_channel_credentials *creds = make_credentials(&cfg);
    if (creds == NULL) {
        rc = EXIT_USAGE;
        goto teardown;
    }
    /* Each channel its own connection (local subchannel pool); fast reconnects; no transparent retries,
     * so every failure is seen and counted. */
    grpc_arg args[8];
    size_t nargs = 0;
    args[nargs++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1};
    args[nargs++] =
        (grpc_arg){.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ENABLE_RETRIES, .value.integer = 0};
    args[nargs++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = -1};
    args[nargs++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, .value.integer = 100};
    args[nargs++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, .value.integer = 100};
    args[nargs++] = (grpc_arg){
        .type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 1000};
    args[nargs++] = (grpc_arg){.type = GRPC_ARG_STRING,
                               .key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING,
                               .value.string = (char *)"alma-loadgen"};
    if (cfg.server_name != NULL)
        args[nargs++] = (grpc_arg){.type = GRPC_ARG_STRING,
                                   .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                   .value.string = (char *)cfg.server_name};
    grpc_channel_args chargs = {.num_args = nargs, .args = args};
    for (long i = 0; i < cfg.channels; i++) {
        lg.channels[i].channel = grpc_channel_create(cfg.target, creds, &chargs);
        lg.channels[i].method = grpc_channel_register_call(lg.channels[i].channel, cfg.method, NULL, NULL);
        lg.probes[i].channel = (uint32_t)i;
    }
    grpc_channel_credentials_release(creds);
    for (long i = 0; i < cfg.concurrency; i++)
        lg.slots[i].channel = (uint32_t)(i % cfg.channels);

    bool connected = connect_phase(&lg);
    if (connected) {
        run_phase(&lg);
        if (!drain(&lg)) {
            fprintf(stderr, "alma-loadgen: %ld calls did not finish after cancellation; giving up\n",
                    lg.inflight);
            _Exit(EXIT_BENCH_FAILED);
        }
    } else {
        if (!drain(&lg)) {
            fprintf(stderr, "alma-loadgen: probe calls did not finish after cancellation; giving up\n");
            _Exit(EXIT_BENCH_FAILED);
        }
        fprintf(stderr, "alma-loadgen: could not reach %s within %ld ms (%" PRIu64 " attempts): %s: %s\n",
                cfg.target, cfg.deadline_ms, lg.probe_attempts, lg_code_names[code_index(lg.probe_code)],
                lg.probe_detail);
        lg.calls_total += lg.probe_attempts;
        lg.errors_total += lg.probe_attempts;
        lg.by_code[code_index(lg.probe_code)] += lg.probe_attempts;
        memcpy(lg.first_detail[code_index(lg.probe_code)], lg.probe_detail, sizeof lg.probe_detail);
    }
    rc = report(&lg, connected) ? 0 : EXIT_BENCH_FAILED;

teardown:
    for (long i = 0; i < cfg.channels; i++)
        if (lg.channels[i].channel != NULL)
            grpc_channel_destroy(lg.channels[i].channel);
    grpc_completion_queue_shutdown(lg.cq);
    while (grpc_completion_queue_next(lg.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(lg.cq);
    for (size_t i = 0; i < lg.md_count; i++) {
        grpc_slice_unref(lg.md[i].key);
        grpc_slice_unref(lg.md[i].value);
    }
    grpc_slice_unref(lg.request);
    grpc_shutdown_blocking();
    free(lg.lat);
    free(lg.slots);
    free(lg.probes);
    free(lg.channels);
    free(lg.md);
    return rc;
}
