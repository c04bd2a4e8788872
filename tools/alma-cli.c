/* alma-cli: the command-line client of the suite, for operators and developers.
 *
 *     alma-cli [--addr HOST:PORT] [--cert F --key F --ca F | --insecure] [--server-name NAME]
 *              [--timeout-ms N] [--token-file F | --token TOKEN | --authorization VALUE] [--verbose]
 *              COMMAND [ARGS]
 *
 * The flags before COMMAND are settings loaded with cfg_load (defaults, then the environment
 * ALMA_CLI_<NAME>, then flags). Their table names carry a "cli-" prefix so the environment names are
 * ALMA_CLI_ADDR, ALMA_CLI_CERT, ...; on the command line they are spelled without it (--addr), and this
 * file translates. cfg_load rejects positional words, so argv is split at the first word that is not a
 * flag or a flag's value: that word is COMMAND and what follows is the command's own, parsed here.
 *
 * Adding a command for a new service is one entry in cli_commands[] plus its function.
 *
 * Exit status: 0 success (health: only SERVING; audit-verify-log: only a log that verifies; identity-check:
 * only allowed), 1 an RPC failed, the server is not serving, the log does not verify or the check denied,
 * 2 a usage or settings error. Anything a server sends is printed with control characters replaced, so a
 * hostile server cannot drive the terminal. Error messages name options and fields, never their values: an
 * audit event's content may be sensitive, and a password, refresh secret or access token is a secret (the
 * access token is printed only by identity-login and identity-refresh, alone on standard output). */
#include "base/config.h"
#include "base/utf8.h"
#include "rpc/rpc.h"

#include "audit/v1/audit.pb-c.h"
#include "echo/v1/echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "guideline/v1/guideline.pb-c.h"
#include "identity/v1/identity.pb-c.h"
#include "vault/v1/vault.pb-c.h"

#include "checkpoint.h"
#include "bundle.h" /* services/guideline: the service's own bundle loader */
#include "crypto/crypto.h"
#include "engine.h" /* services/guideline: the referral input's limits */
#include "shapes.h" /* services/guideline: referral id, ICD-10-CM and name shapes */
#include "export_file.h"
#include "model.h" /* services/vault: the vault's own validation */
#include "validate.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CLI_PROGRAM "alma-cli"

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* Most words accepted before COMMAND, and after it. */
#define CLI_MAX_GLOBAL_ARGS  64
#define CLI_MAX_COMMAND_ARGS 256
/* The prefix of the setting names (environment ALMA_CLI_*), absent from the flags. */
#define CLI_PREFIX     "cli-"
#define CLI_PREFIX_LEN (sizeof CLI_PREFIX - 1)
/* watch and audit-export have no deadline of their own: they run until Ctrl-C or the stream ends (INT_MAX
 * ms is 24 days). */
#define CLI_WATCH_TIMEOUT_MS INT_MAX
/* An access token (a JWT of common/authz: AUTHZ_MAX_TOKEN_LEN) and the file that may hold it. */
#define CLI_TOKEN_MAX      8192
#define CLI_TOKEN_FILE_MAX (CLI_TOKEN_MAX + 2)

/* ------------------------------------------------------------------ settings */

static const char *cli_addr, *cli_cert, *cli_key, *cli_ca, *cli_server_name, *cli_authorization, *cli_token,
    *cli_token_file;
static bool cli_insecure, cli_verbose;
static long cli_timeout_ms;

static const cfg_setting cli_settings[] = {
    {"cli-addr", CFG_STRING, "127.0.0.1:7443", &cli_addr, 1, 255, "server address HOST:PORT", false},
    {"cli-cert", CFG_STRING, "", &cli_cert, 0, 4096, "PEM client certificate for mTLS", false},
    {"cli-key", CFG_STRING, "", &cli_key, 0, 4096, "PEM private key of the certificate", false},
    {"cli-ca", CFG_STRING, "", &cli_ca, 0, 4096, "PEM CA bundle that signs the server", false},
    {"cli-insecure", CFG_BOOL, "false", &cli_insecure, 0, 0,
     "plaintext, no TLS (the admin port); --cert/--key/--ca are then ignored", false},
    {"cli-server-name", CFG_STRING, "localhost", &cli_server_name, 1, 255,
     "name the server certificate must carry", false},
    {"cli-timeout-ms", CFG_INT, "10000", &cli_timeout_ms, 1, 3600000,
     "deadline of each call in milliseconds (watch and audit-export have none)", false},
    {"cli-authorization", CFG_STRING, "", &cli_authorization, 0, 8192,
     "sent as authorization metadata as given (prefer the environment: argv is visible to other users)",
     true},
    {"cli-token", CFG_STRING, "", &cli_token, 0, CLI_TOKEN_MAX,
     "access token (identity-login prints one), sent as authorization: Bearer TOKEN (prefer the environment "
     "or --token-file: argv is visible to other users)",
     true},
    {"cli-token-file", CFG_STRING, "", &cli_token_file, 0, 4096,
     "file holding the access token (one line), e.g. TOKEN=$(alma-cli identity-login ...) saved with umask "
     "077",
     false},
    {"cli-verbose", CFG_BOOL, "false", &cli_verbose, 0, 0,
     "print gRPC's own log lines on stderr (GRPC_VERBOSITY=debug for more)", false},
};

static const cfg_table cli_tables[] = {{cli_settings, BASE_ARRAY_LEN(cli_settings)}};

static const cfg_setting *cli_find_setting(const char *name, size_t len)
{
    for (size_t i = 0; i < BASE_ARRAY_LEN(cli_settings); i++) {
        const char *short_name = cli_settings[i].name + CLI_PREFIX_LEN;
        if (strncmp(short_name, name, len) == 0 && short_name[len] == '\0')
            return &cli_settings[i];
    }
    return NULL;
}

/* ------------------------------------------------------------------ output helpers */

/* Print text that came from the network or the user: control characters become '?'. */
static void cli_put_safe(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, out);
}

/* Print a cfg_load message with the flags spelled as this program takes them ("--cli-addr" -> "--addr"). */
static void cli_put_cfg_message(FILE *out, const char *msg)
{
    static const char from[] = "--" CLI_PREFIX;
    for (const char *p = msg; *p;) {
        if (strncmp(p, from, sizeof from - 1) == 0) {
            fputs("--", out);
            p += sizeof from - 1;
        } else {
            fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, out);
            p++;
        }
    }
}

static int cli_usage_error(const char *fmt, ...) BASE_PRINTF(1, 2);
static int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(CLI_PROGRAM ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

/* "alma-cli: <CODE>: <message>", exit status 1. */
static int cli_rpc_error(const rpc_status *st)
{
    fprintf(stderr, CLI_PROGRAM ": %s: ", rpc_code_name(st->code));
    cli_put_safe(stderr, st->message[0] ? st->message : "(no message)");
    fputc('\n', stderr);
    /* The two UNAVAILABLE cases an operator meets most, said plainly. A client certificate the server
     * refuses is seen here only as a closed socket: the reason is in the server's log. */
    if (st->code == RPC_UNAVAILABLE && strstr(st->message, "Connection refused"))
        fprintf(stderr, CLI_PROGRAM ": nothing accepts connections at %s\n", cli_addr);
    else if (st->code == RPC_UNAVAILABLE && strstr(st->message, "Socket closed"))
        fprintf(stderr, CLI_PROGRAM ": the server closed the connection: %s\n",
                cli_insecure ? "is this a TLS port? (--insecure is for the admin port)"
                             : "it may have refused the client certificate (its log says why)");
    return CLI_EXIT_FAIL;
}

static void cli_grpc_log(int severity, const char *file, int line, const char *message)
{
    (void)severity; /* gRPC filters by GRPC_VERBOSITY (default: errors only) before we see a line */
    (void)file;
    (void)line;
    if (!cli_verbose)
        return;
    fputs(CLI_PROGRAM ": grpc: ", stderr);
    cli_put_safe(stderr, message);
    fputc('\n', stderr);
}

/* ------------------------------------------------------------------ calls */

typedef struct cli_call {
    rpc_channel *ch;
    rpc_call_opts opts;
} cli_call;

/* The authorization metadata of every call: --authorization as given, or "Bearer " and the access token of
 * --token / --token-file. Made once, by the first cli_connect; never printed, freed (wiped) by main. */
static char *cli_bearer;
static bool cli_bearer_loaded;

/* Is s a bare access token: 1 to CLI_TOKEN_MAX of base64url and '.' (a compact JWS)? */
static bool cli_is_token(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CLI_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

static bool cli_read_small(const char *what, const char *path, char *buf, size_t cap, size_t *ret_len);
static bool cli_first_line(char *buf, size_t n, size_t *ret_len);

static int cli_load_authorization(void)
{
    if (cli_bearer_loaded)
        return CLI_EXIT_OK;
    if (cli_token[0] && cli_token_file[0])
        return cli_usage_error(
            "--token and --token-file (ALMA_CLI_TOKEN, ALMA_CLI_TOKEN_FILE) are two tokens: "
            "give one");
    if (cli_authorization[0] && (cli_token[0] || cli_token_file[0]))
        return cli_usage_error(
            "--authorization and --token/--token-file both set the authorization metadata: "
            "give one");
    const char *token = cli_token;
    char buf[CLI_TOKEN_FILE_MAX + 1];
    if (cli_token_file[0]) {
        size_t n = 0;
        if (!cli_read_small("--token-file", cli_token_file, buf, sizeof buf, &n))
            return CLI_EXIT_USAGE;
        if (!cli_first_line(buf, n, &n)) {
            explicit_bzero(buf, sizeof buf);
            return cli_usage_error("--token-file must hold one line: the access token");
        }
        token = buf;
    }
    if (token[0]) {
        if (!cli_is_token(token)) {
            explicit_bzero(buf, sizeof buf);
            return cli_usage_error("%s must hold an access token alone: 1 to %d base64url characters and '.' "
                                   "(no 'Bearer ', no spaces)",
                                   cli_token_file[0] ? "--token-file" : "--token (ALMA_CLI_TOKEN)",
                                   CLI_TOKEN_MAX);
        }
        size_t n = strlen(token) + sizeof "Bearer ";
        cli_bearer = malloc(n);
        if (!cli_bearer) {
            explicit_bzero(buf, sizeof buf);
            return cli_usage_error("out of memory");
        }
        snprintf(cli_bearer, n, "Bearer %s", token);
        explicit_bzero(buf, sizeof buf);
    }
    cli_bearer_loaded = true;
    return CLI_EXIT_OK;
}

/* Open the channel the settings describe, for calls that send the authorization (with_token) or none (the
 * identity calls that make a token). Failures here are settings errors (a missing file, a bad address, a
 * malformed token): exit status 2. */
static int cli_connect_as(cli_call *c, bool with_token)
{
    memset(c, 0, sizeof *c);
    int rc = with_token ? cli_load_authorization() : CLI_EXIT_OK;
    if (rc)
        return rc;
    c->opts.timeout_ms = (int)cli_timeout_ms;
    if (with_token)
        c->opts.authorization = cli_bearer ? cli_bearer : cli_authorization[0] ? cli_authorization : NULL;
    rpc_client_tls tls = {.files = {.cert = cli_cert, .key = cli_key, .ca = cli_ca},
                          .server_name = cli_server_name};
    if (!cli_insecure && (!cli_cert[0] || !cli_key[0] || !cli_ca[0]))
        return cli_usage_error("settings ALMA_CLI_CERT, ALMA_CLI_KEY and ALMA_CLI_CA (--cert, --key, --ca) "
                               "are required for mTLS, or --insecure for a plaintext port such as the admin "
                               "port");
    base_result r = rpc_channel_open(cli_addr, cli_insecure ? NULL : &tls, &c->ch);
    if (!base_is_ok(r))
        return cli_usage_error("cannot set up the channel to %s: %s", cli_addr, base_error_message());
    return CLI_EXIT_OK;
}

static int cli_connect(cli_call *c)
{
    return cli_connect_as(c, true);
}

static void cli_disconnect(cli_call *c)
{
    rpc_channel_close(c->ch);
    c->ch = NULL;
}

/* ------------------------------------------------------------------ command arguments */

/* A command's words: positional words and --name VALUE options, parsed by the command itself. */
typedef struct cli_args {
    const char *command;
    int argc;
    char **argv;
    const char *words[CLI_MAX_COMMAND_ARGS];
    int word_count;
} cli_args;

/* A decimal number from 0 to max, digits only. */
static bool cli_parse_u64(const char *s, unsigned long long max, uint64_t *ret)
{
    if (!s || s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *ret = (uint64_t)v;
    return true;
}

static bool cli_parse_uint(const char *s, unsigned long max, uint32_t *ret)
{
    uint64_t v = 0;
    if (max > UINT32_MAX || !cli_parse_u64(s, max, &v))
        return false;
    *ret = (uint32_t)v;
    return true;
}

/* Is s[0, n) well-formed UTF-8 without control characters? */
static bool cli_is_text(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = base_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (k == 0 || cp < 0x20 || cp == 0x7f)
            return false;
        i += k;
    }
    return true;
}

/* A repeatable option (--detail K=V ...): its values in order, at most cap. */
typedef struct cli_list {
    const char **items;
    size_t count, cap;
} cli_list;

/* The options a command takes: name (without "--") and where its value goes, exactly one of:
 *   number    a number from 0 to max (the last one given wins)
 *   number64  the same, 64-bit
 *   flag      no value
 *   text      a word of at most max bytes, given at most once
 *   list      a word of at most max bytes each time, up to list->cap times
 * Text and list values must be UTF-8 without control characters, unless `path` (a file name: any bytes). */
typedef struct cli_option {
    const char *name;
    uint32_t *number;
    uint64_t *number64;
    unsigned long max;
    bool *flag;
    const char **text;
    cli_list *list;
    bool path;
} cli_option;

/* Store an option's value. Messages name the option, never the value. */
static int cli_set_option(const cli_args *a, const cli_option *o, const char *value)
{
    if (o->number || o->number64) {
        bool ok =
            o->number ? cli_parse_uint(value, o->max, o->number) : cli_parse_u64(value, o->max, o->number64);
        if (!ok)
            return cli_usage_error("%s: option --%s expects a number from 0 to %lu", a->command, o->name,
                                   o->max);
        return CLI_EXIT_OK;
    }
    if (strlen(value) > o->max)
        return cli_usage_error("%s: option --%s is longer than %lu bytes", a->command, o->name, o->max);
    if (!o->path && !cli_is_text(value))
        return cli_usage_error("%s: option --%s must be UTF-8 text without control characters", a->command,
                               o->name);
    if (o->text) {
        if (*o->text)
            return cli_usage_error("%s: option --%s is given more than once", a->command, o->name);
        *o->text = value;
        return CLI_EXIT_OK;
    }
    if (o->list->count >= o->list->cap)
        return cli_usage_error("%s: option --%s is given more than %zu times", a->command, o->name,
                               o->list->cap);
    o->list->items[o->list->count++] = value;
    return CLI_EXIT_OK;
}

/* Split the command's words into positional words (args->words) and the options it knows. */
static int cli_parse_command_args(cli_args *a, const cli_option *opts, size_t nopts, int min_words,
                                  int max_words)
{
    bool only_words = false; /* after "--" */
    for (int i = 0; i < a->argc; i++) {
        const char *w = a->argv[i];
        if (!only_words && strcmp(w, "--") == 0) {
            only_words = true;
            continue;
        }
        if (!only_words && w[0] == '-' && w[1] != '\0') {
            const cli_option *o = NULL;
            const char *eq = NULL;
            if (w[1] == '-') { /* options are --name, --name=VALUE or --name VALUE */
                const char *name = w + 2;
                eq = strchr(name, '=');
                size_t len = eq ? (size_t)(eq - name) : strlen(name);
                for (size_t k = 0; k < nopts && !o; k++)
                    if (strncmp(opts[k].name, name, len) == 0 && opts[k].name[len] == '\0')
                        o = &opts[k];
            }
            if (!o) {
                char shown[68]; /* the option's name only, never a value */
                snprintf(shown, sizeof shown, "%.*s", (int)strcspn(w, "="), w);
                fprintf(stderr, CLI_PROGRAM ": %s: unknown option ", a->command);
                cli_put_safe(stderr, shown);
                fprintf(stderr, " (see %s %s --help)\n", CLI_PROGRAM, a->command);
                return CLI_EXIT_USAGE;
            }
            if (o->flag) {
                if (eq)
                    return cli_usage_error("%s: option --%s takes no value", a->command, o->name);
                *o->flag = true;
                continue;
            }
            const char *value = eq ? eq + 1 : (i + 1 < a->argc ? a->argv[++i] : NULL);
            if (!value)
                return cli_usage_error("%s: option --%s needs a value", a->command, o->name);
            int rc = cli_set_option(a, o, value);
            if (rc)
                return rc;
            continue;
        }
        if (max_words == 0) /* the word is not shown: it may be a value that lost its option */
            return cli_usage_error(
                "%s: unexpected argument: this command takes options only (see %s %s --help)", a->command,
                CLI_PROGRAM, a->command);
        if (a->word_count >= max_words)
            return cli_usage_error("%s: too many arguments (at most %d; see %s %s --help)", a->command,
                                   max_words, CLI_PROGRAM, a->command);
        a->words[a->word_count++] = w;
    }
    if (a->word_count < min_words)
        return cli_usage_error("%s: missing argument (see %s %s --help)", a->command, CLI_PROGRAM,
                               a->command);
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------------ grpc.health.v1 */

#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define HEALTH_WATCH "/grpc.health.v1.Health/Watch"

static const char *cli_health_name(Grpc__Health__V1__HealthCheckResponse__ServingStatus s)
{
    switch (s) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
        return "SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
        return "NOT_SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
        return "SERVICE_UNKNOWN";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN:
    default:
        return "UNKNOWN";
    }
}

static int cli_cmd_health(cli_args *a)
{
    int rc = cli_parse_command_args(a, NULL, 0, 0, 1);
    if (rc)
        return rc;
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(a->word_count ? a->words[0] : "");
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c.ch, HEALTH_CHECK, &req.base,
                                   &grpc__health__v1__health_check_response__descriptor, &c.opts, &resp, &st);
    if (code != RPC_OK) {
        rc = cli_rpc_error(&st);
    } else {
        Grpc__Health__V1__HealthCheckResponse *h = (Grpc__Health__V1__HealthCheckResponse *)resp;
        printf("%s\n", cli_health_name(h->status));
        rc = h->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? CLI_EXIT_OK
                                                                                           : CLI_EXIT_FAIL;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cli_disconnect(&c);
    return rc;
}

/* Ctrl-C (or SIGTERM) during a long stream (watch, audit-export) cancels the stream from a signal thread;
 * the receive loop then ends. The stop signals are blocked before gRPC starts its threads (they inherit
 * the mask), so only the signal thread's sigwait takes them. */
typedef struct cli_stream_signals {
    pthread_mutex_t mu;
    rpc_client_stream *stream; /* NULL once the stream is done */
    bool interrupted;
    bool have_thread;
    pthread_t thread;
} cli_stream_signals;

static sigset_t cli_stop_signals;

static void cli_block_stop_signals(void)
{
    sigemptyset(&cli_stop_signals);
    sigaddset(&cli_stop_signals, SIGINT);
    sigaddset(&cli_stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &cli_stop_signals, NULL);
}

static void *cli_signal_main(void *arg)
{
    cli_stream_signals *w = arg;
    int sig = 0;
    while (sigwait(&cli_stop_signals, &sig) != 0)
        ;
    pthread_mutex_lock(&w->mu);
    if (w->stream) {
        w->interrupted = true;
        rpc_client_stream_cancel(w->stream);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Start watching for the stop signals on behalf of stream s (after cli_block_stop_signals). */
static void cli_signals_start(cli_stream_signals *w, rpc_client_stream *s)
{
    *w = (cli_stream_signals){.mu = PTHREAD_MUTEX_INITIALIZER, .stream = s};
    w->have_thread = pthread_create(&w->thread, NULL, cli_signal_main, w) == 0;
}

/* Stop watching (before the stream is freed); true when a stop signal cancelled the stream. */
static bool cli_signals_stop(cli_stream_signals *w)
{
    pthread_mutex_lock(&w->mu);
    bool interrupted = w->interrupted;
    w->stream = NULL;
    pthread_mutex_unlock(&w->mu);
    if (w->have_thread) {
        if (!interrupted)
            pthread_kill(w->thread, SIGTERM); /* blocked everywhere: only its sigwait takes it */
        pthread_join(w->thread, NULL);
    }
    return interrupted;
}

static int cli_cmd_watch(cli_args *a)
{
    int rc = cli_parse_command_args(a, NULL, 0, 0, 1);
    if (rc)
        return rc;
    cli_block_stop_signals();
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    c.opts.timeout_ms = CLI_WATCH_TIMEOUT_MS;
    rpc_client_stream *s = NULL;
    base_result r = rpc_client_stream_open(c.ch, HEALTH_WATCH, &c.opts, &s);
    if (!base_is_ok(r)) {
        rpc_status st = {.code = rpc_code_from_err(r.err)};
        snprintf(st.message, sizeof st.message, "%s", base_error_message());
        cli_disconnect(&c);
        return cli_rpc_error(&st);
    }
    cli_stream_signals w;
    cli_signals_start(&w, s);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(a->word_count ? a->words[0] : "");
    if (base_is_ok(rpc_client_stream_send(s, &req.base)) && base_is_ok(rpc_client_stream_close_send(s))) {
        for (;;) {
            ProtobufCMessage *m = NULL;
            bool eof = false;
            r = rpc_client_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m, &eof);
            if (!base_is_ok(r)) {
                rpc_client_stream_cancel(s);
                break;
            }
            if (eof)
                break;
            printf("%s\n", cli_health_name(((Grpc__Health__V1__HealthCheckResponse *)m)->status));
            fflush(stdout);
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    rpc_status st;
    rpc_code code = rpc_client_stream_finish(s, &st);
    bool interrupted = cli_signals_stop(&w);
    rpc_client_stream_free(s);
    cli_disconnect(&c);
    if (interrupted || code == RPC_OK)
        return CLI_EXIT_OK; /* the user stopped it, or the server ended the stream cleanly */
    return cli_rpc_error(&st);
}

/* ------------------------------------------------------------------ alma.echo.v1.Echo */

static void cli_print_echo(const Alma__Echo__V1__EchoResponse *resp)
{
    fputs("message: ", stdout);
    cli_put_safe(stdout, resp->message);
    fputs("\npeer_identity: ", stdout);
    cli_put_safe(stdout, resp->peer_identity[0] ? resp->peer_identity : "(none: plaintext)");
    fputs("\nrequest_id: ", stdout);
    cli_put_safe(stdout, resp->request_id);
    fputc('\n', stdout);
}

static int cli_cmd_echo(cli_args *a)
{
    uint32_t delay_ms = 0;
    bool use_inline = false;
    const cli_option opts[] = {
        {.name = "delay-ms", .number = &delay_ms, .max = UINT32_MAX},
        {.name = "inline", .flag = &use_inline},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 1, 1);
    if (rc)
        return rc;
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    Alma__Echo__V1__EchoRequest req = ALMA__ECHO__V1__ECHO_REQUEST__INIT;
    req.message = (char *)a->words[0];
    req.delay_ms = delay_ms;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code =
        rpc_call_unary(c.ch, use_inline ? "/alma.echo.v1.Echo/EchoInline" : "/alma.echo.v1.Echo/Echo",
                       &req.base, &alma__echo__v1__echo_response__descriptor, &c.opts, &resp, &st);
    if (code != RPC_OK) {
        rc = cli_rpc_error(&st);
    } else {
        cli_print_echo((const Alma__Echo__V1__EchoResponse *)resp);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cli_disconnect(&c);
    return rc;
}

/* Receive and print responses until the end of the stream; then its status decides the exit code. */
static int cli_drain_stream(rpc_client_stream *s)
{
    for (;;) {
        ProtobufCMessage *m = NULL;
        bool eof = false;
        base_result r = rpc_client_stream_recv(s, &alma__echo__v1__echo_response__descriptor, &m, &eof);
        if (!base_is_ok(r)) {
            rpc_client_stream_cancel(s);
            break;
        }
        if (eof)
            break;
        const Alma__Echo__V1__EchoResponse *resp = (const Alma__Echo__V1__EchoResponse *)m;
        printf("%u: ", resp->index);
        cli_put_safe(stdout, resp->message);
        fputc('\n', stdout);
        fflush(stdout);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    rpc_status st;
    if (rpc_client_stream_finish(s, &st) != RPC_OK)
        return cli_rpc_error(&st);
    return CLI_EXIT_OK;
}

static int cli_stream_open_failed(base_result r)
{
    rpc_status st = {.code = rpc_code_from_err(r.err)};
    snprintf(st.message, sizeof st.message, "%s", base_error_message());
    return cli_rpc_error(&st);
}

static int cli_cmd_expand(cli_args *a)
{
    uint32_t interval_ms = 0;
    const cli_option opts[] = {{.name = "interval-ms", .number = &interval_ms, .max = UINT32_MAX}};
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 2, 2);
    if (rc)
        return rc;
    uint32_t count = 0;
    if (!cli_parse_uint(a->words[1], UINT32_MAX, &count))
        return cli_usage_error("expand: COUNT must be a number from 0 to %lu", (unsigned long)UINT32_MAX);
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    rpc_client_stream *s = NULL;
    base_result r = rpc_client_stream_open(c.ch, "/alma.echo.v1.Echo/Expand", &c.opts, &s);
    if (!base_is_ok(r)) {
        cli_disconnect(&c);
        return cli_stream_open_failed(r);
    }
    Alma__Echo__V1__ExpandRequest req = ALMA__ECHO__V1__EXPAND_REQUEST__INIT;
    req.message = (char *)a->words[0];
    req.count = count;
    req.interval_ms = interval_ms;
    /* A failed send or half-close means the call already ended: its status says why. */
    if (base_is_ok(rpc_client_stream_send(s, &req.base)) && !base_is_ok(rpc_client_stream_close_send(s)))
        rpc_client_stream_cancel(s);
    rc = cli_drain_stream(s);
    rpc_client_stream_free(s);
    cli_disconnect(&c);
    return rc;
}

static int cli_cmd_chat(cli_args *a)
{
    int rc = cli_parse_command_args(a, NULL, 0, 1, CLI_MAX_COMMAND_ARGS);
    if (rc)
        return rc;
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    rpc_client_stream *s = NULL;
    base_result r = rpc_client_stream_open(c.ch, "/alma.echo.v1.Echo/Chat", &c.opts, &s);
    if (!base_is_ok(r)) {
        cli_disconnect(&c);
        return cli_stream_open_failed(r);
    }
    /* One request, then its answer, in turn: the output order matches the input. */
    bool ok = true;
    for (int i = 0; i < a->word_count && ok; i++) {
        Alma__Echo__V1__EchoRequest req = ALMA__ECHO__V1__ECHO_REQUEST__INIT;
        req.message = (char *)a->words[i];
        ProtobufCMessage *m = NULL;
        bool eof = false;
        ok = base_is_ok(rpc_client_stream_send(s, &req.base)) &&
             base_is_ok(rpc_client_stream_recv(s, &alma__echo__v1__echo_response__descriptor, &m, &eof)) &&
             !eof;
        if (m) {
            const Alma__Echo__V1__EchoResponse *resp = (const Alma__Echo__V1__EchoResponse *)m;
            printf("%u: ", resp->index);
            cli_put_safe(stdout, resp->message);
            fputc('\n', stdout);
            fflush(stdout);
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    /* A failed send, receive or half-close means the call already ended: its status says why. */
    if (ok && !base_is_ok(rpc_client_stream_close_send(s)))
        rpc_client_stream_cancel(s);
    rc = cli_drain_stream(s);
    rpc_client_stream_free(s);
    cli_disconnect(&c);
    return rc;
}

/* ------------------------------------------------------------------ alma.audit.v1.Audit */

#define AUDIT_RPC(name) "/alma.audit.v1.Audit/" name
/* Bounds of the audit commands' own inputs (the event fields' bounds are validate.h's). */
#define CLI_PATH_MAX       4096 /* --out, --note-out, --vkey-out, --vkey-file */
#define CLI_PAGE_TOKEN_MAX 64
#define CLI_ENUM_WORD_MAX  64
#define CLI_TIME_WORD_MAX  40 /* "2026-11-23T12:00:00.123456789Z" is 30 */
#define CLI_TIME_LEN       48 /* buffer for a formatted time */
#define CLI_DETAIL_MAX     (AUDIT_MAX_DETAIL_KEY + 1 + AUDIT_MAX_DETAIL_VALUE)
#define CLI_GUIDELINE_MAX  AUDIT_MAX_TEXT
#define CLI_PAGE_SIZE_MAX  1000 /* ListEvents page_size: 1..1000 */
#define CLI_LIST_ALL_PAGE  1000 /* page size of audit-list --all when --page-size is not given */
#define CLI_HEX_MAX        64   /* bytes of a hash printed in hex (a SHA-256 is 32) */
/* Smallest and largest times the service accepts (1970-01-01T00:00:00Z, 9999-12-31T23:59:59Z). */
#define CLI_MAX_SECONDS INT64_C(253402300799)

/* One of the API's enums, spelled on the command line as its value names without the prefix, in lower case
 * with '-' for '_': ACTION_BREAK_GLASS is "break-glass" (also accepted: "BREAK_GLASS", "ACTION_BREAK_GLASS").
 * protobuf-c's descriptor is the table, so every value the proto defines works. */
typedef struct cli_enum {
    const ProtobufCEnumDescriptor *desc;
    const char *prefix;
} cli_enum;

static const cli_enum cli_enum_action = {&alma__audit__v1__action__descriptor, "ACTION_"};
static const cli_enum cli_enum_purpose = {&alma__common__v1__purpose_of_use__descriptor, "PURPOSE_OF_USE_"};
static const cli_enum cli_enum_outcome = {&alma__audit__v1__outcome__descriptor, "OUTCOME_"};
static const cli_enum cli_enum_severity = {&alma__audit__v1__severity__descriptor, "SEVERITY_"};
static const cli_enum cli_enum_basis = {&alma__audit__v1__disclosure_basis__descriptor, "DISCLOSURE_BASIS_"};

/* A word as an enum value other than UNSPECIFIED (0). */
static bool cli_enum_parse(const cli_enum *e, const char *word, int *ret)
{
    size_t plen = strlen(e->prefix), n = strlen(word);
    char name[2 * CLI_ENUM_WORD_MAX + 1];
    if (n == 0 || n > CLI_ENUM_WORD_MAX || plen > CLI_ENUM_WORD_MAX)
        return false;
    memcpy(name, e->prefix, plen);
    for (size_t i = 0; i < n; i++)
        name[plen + i] = word[i] == '-' ? '_' : (char)toupper((unsigned char)word[i]);
    name[plen + n] = '\0';
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(e->desc, name);
    if (!v && strncmp(name + plen, e->prefix, plen) == 0) /* given with its prefix */
        v = protobuf_c_enum_descriptor_get_value_by_name(e->desc, name + plen);
    if (!v || v->value == 0)
        return false;
    *ret = v->value;
    return true;
}

/* The command-line name of a value ("break-glass"), or its number when the descriptor does not know it. */
static const char *cli_enum_name(const cli_enum *e, int value, char *buf, size_t cap)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(e->desc, value);
    if (!v) {
        snprintf(buf, cap, "%d", value);
        return buf;
    }
    const char *s = v->name;
    size_t plen = strlen(e->prefix), k = 0;
    if (strncmp(s, e->prefix, plen) == 0)
        s += plen;
    for (; s[k] && k + 1 < cap; k++)
        buf[k] = s[k] == '_' ? '-' : (char)tolower((unsigned char)s[k]);
    buf[k] = '\0';
    return buf;
}

static void cli_enum_choices(const cli_enum *e, FILE *out)
{
    char name[CLI_ENUM_WORD_MAX + 1];
    bool first = true;
    for (unsigned i = 0; i < e->desc->n_values; i++) {
        if (e->desc->values[i].value == 0)
            continue;
        fprintf(out, "%s%s", first ? "" : ", ",
                cli_enum_name(e, e->desc->values[i].value, name, sizeof name));
        first = false;
    }
}

/* An enum option's value into *ret; *ret untouched when the option was not given (word NULL). */
static int cli_enum_option(const cli_args *a, const char *option, const cli_enum *e, const char *word,
                           int *ret)
{
    if (!word || cli_enum_parse(e, word, ret))
        return CLI_EXIT_OK;
    fprintf(stderr, CLI_PROGRAM ": %s: --%s must be one of: ", a->command, option);
    cli_enum_choices(e, stderr);
    fputc('\n', stderr);
    return CLI_EXIT_USAGE;
}

/* Lowercase hex of p[0, n) (at most CLI_HEX_MAX bytes) into out[2 * CLI_HEX_MAX + 1]. */
static const char *cli_hex(const uint8_t *p, size_t n, char out[2 * CLI_HEX_MAX + 1])
{
    static const char digits[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < n && i < CLI_HEX_MAX; i++) {
        out[k++] = digits[p[i] >> 4];
        out[k++] = digits[p[i] & 15];
    }
    out[k] = '\0';
    return out;
}

static bool cli_is_id(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!isalnum((unsigned char)c) && c != '-' && c != '_' && c != '.' && c != ':')
            return false;
    }
    return true;
}

/* ---- times */

static int cli_digits(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* RFC 3339 in UTC: "YYYY-MM-DDTHH:MM:SS[.F]Z" with 1 to 9 fraction digits, from 1970 to 9999. */
static bool cli_parse_time(const char *s, Google__Protobuf__Timestamp *ret)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    const size_t n = sizeof shape - 1;
    if (strlen(s) < n + 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool ok = shape[i] == 'd' ? s[i] >= '0' && s[i] <= '9'
                                  : s[i] == shape[i] || (shape[i] == 'T' && s[i] == 't');
        if (!ok)
            return false;
    }
    int year = cli_digits(s, 4), mon = cli_digits(s + 5, 2), day = cli_digits(s + 8, 2);
    int hour = cli_digits(s + 11, 2), min = cli_digits(s + 14, 2), sec = cli_digits(s + 17, 2);
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || hour > 23 || min > 59 || sec > 59)
        return false;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[mon - 1] + (mon == 2 && leap))
        return false;
    const char *p = s + n;
    int32_t nanos = 0;
    if (*p == '.') {
        int k = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, k++) {
            if (k == 9)
                return false;
            nanos = nanos * 10 + (*p - '0');
        }
        if (k == 0)
            return false;
        for (; k < 9; k++)
            nanos *= 10;
    }
    if ((p[0] != 'Z' && p[0] != 'z') || p[1] != '\0')
        return false;
    struct tm tm = {.tm_year = year - 1900,
                    .tm_mon = mon - 1,
                    .tm_mday = day,
                    .tm_hour = hour,
                    .tm_min = min,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || (int64_t)t > CLI_MAX_SECONDS)
        return false;
    ret->seconds = (int64_t)t;
    ret->nanos = nanos;
    return true;
}

/* "2026-11-23T12:00:00Z", with .ffffff (or .fffffffff) when there is a fraction; "-" for no time. */
static const char *cli_format_time(const Google__Protobuf__Timestamp *t, char buf[CLI_TIME_LEN])
{
    if (!t)
        return "-";
    struct tm tm;
    time_t secs = (time_t)t->seconds;
    char base[32];
    if (t->seconds < 0 || t->seconds > CLI_MAX_SECONDS || t->nanos < 0 || t->nanos > 999999999 ||
        !gmtime_r(&secs, &tm) || strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        return "(invalid time)";
    if (t->nanos == 0)
        snprintf(buf, CLI_TIME_LEN, "%sZ", base);
    else if (t->nanos % 1000 == 0)
        snprintf(buf, CLI_TIME_LEN, "%s.%06dZ", base, (int)(t->nanos / 1000));
    else
        snprintf(buf, CLI_TIME_LEN, "%s.%09dZ", base, (int)t->nanos);
    return buf;
}

static int cli_time_option(const cli_args *a, const char *option, const char *word,
                           Google__Protobuf__Timestamp *ts)
{
    google__protobuf__timestamp__init(ts);
    if (!cli_parse_time(word, ts))
        return cli_usage_error("%s: --%s must be an RFC 3339 UTC time from 1970 to 9999 such as "
                               "2026-11-23T12:00:00Z (fractional seconds allowed)",
                               a->command, option);
    return CLI_EXIT_OK;
}

/* ---- output */

/* Server text with control characters replaced, "-" when empty. */
static void cli_put_field(FILE *out, const char *s)
{
    cli_put_safe(out, s && s[0] ? s : "-");
}

/* A signed note as served: its lines kept, any other control character replaced. */
static void cli_put_note(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p == '\n' || (*p >= 0x20 && *p != 0x7f) ? *p : '?', out);
}

/* Write len bytes to path (created or truncated). Errors name the file, never its content. */
static bool cli_write_file(const char *command, const char *what, const char *path, const char *data,
                           size_t len)
{
    FILE *f = fopen(path, "w");
    bool ok = f && fwrite(data, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok) {
        fprintf(stderr, CLI_PROGRAM ": %s: cannot write the %s to ", command, what);
        cli_put_safe(stderr, path);
        fprintf(stderr, ": %s\n", strerror(errno));
    }
    return ok;
}

/* ---- the event filter shared by audit-list and audit-export */

typedef struct cli_filter {
    const char *tenant, *patient, *actor, *action, *purpose, *outcome, *since, *until;
    Alma__Audit__V1__EventFilter msg;
    Google__Protobuf__Timestamp start, end;
} cli_filter;

#define CLI_FILTER_OPTION_COUNT 8

static void cli_filter_options(cli_filter *f, cli_option opts[CLI_FILTER_OPTION_COUNT])
{
    const cli_option o[CLI_FILTER_OPTION_COUNT] = {
        {.name = "tenant", .text = &f->tenant, .max = AUDIT_MAX_TENANT},
        {.name = "patient", .text = &f->patient, .max = 35},
        {.name = "actor", .text = &f->actor, .max = AUDIT_MAX_ID},
        {.name = "action", .text = &f->action, .max = CLI_ENUM_WORD_MAX},
        {.name = "purpose", .text = &f->purpose, .max = CLI_ENUM_WORD_MAX},
        {.name = "outcome", .text = &f->outcome, .max = CLI_ENUM_WORD_MAX},
        {.name = "since", .text = &f->since, .max = CLI_TIME_WORD_MAX},
        {.name = "until", .text = &f->until, .max = CLI_TIME_WORD_MAX},
    };
    memcpy(opts, o, sizeof o);
}

static int cli_require_tenant(const cli_args *a, const char *tenant)
{
    if (!tenant)
        return cli_usage_error("%s: --tenant is required (see %s %s --help)", a->command, CLI_PROGRAM,
                               a->command);
    if (!cli_is_id(tenant, AUDIT_MAX_TENANT))
        return cli_usage_error("%s: --tenant must be 1 to %d of [A-Za-z0-9._:-]", a->command,
                               AUDIT_MAX_TENANT);
    return CLI_EXIT_OK;
}

static int cli_require_patient(const cli_args *a, const char *patient)
{
    if (!audit_is_patient_ref(patient))
        return cli_usage_error(
            "%s: --patient must be a pseudonymous reference: pt_ and 32 lowercase hex digits", a->command);
    return CLI_EXIT_OK;
}

/* Check the filter options and fill f->msg. */
static int cli_filter_build(const cli_args *a, cli_filter *f)
{
    alma__audit__v1__event_filter__init(&f->msg);
    int rc = cli_require_tenant(a, f->tenant);
    if (rc)
        return rc;
    f->msg.tenant_id = (char *)f->tenant;
    if (f->patient) {
        if ((rc = cli_require_patient(a, f->patient)))
            return rc;
        f->msg.patient_ref = (char *)f->patient;
    }
    if (f->actor) {
        if (!cli_is_id(f->actor, AUDIT_MAX_ID))
            return cli_usage_error("%s: --actor must be 1 to %d of [A-Za-z0-9._:-]", a->command,
                                   AUDIT_MAX_ID);
        f->msg.actor_principal_id = (char *)f->actor;
    }
    int v = 0;
    if ((rc = cli_enum_option(a, "action", &cli_enum_action, f->action, &v)))
        return rc;
    f->msg.action = (Alma__Audit__V1__Action)v;
    v = 0;
    if ((rc = cli_enum_option(a, "purpose", &cli_enum_purpose, f->purpose, &v)))
        return rc;
    f->msg.purpose = (Alma__Common__V1__PurposeOfUse)v;
    v = 0;
    if ((rc = cli_enum_option(a, "outcome", &cli_enum_outcome, f->outcome, &v)))
        return rc;
    f->msg.outcome = (Alma__Audit__V1__Outcome)v;
    if (f->since) {
        if ((rc = cli_time_option(a, "since", f->since, &f->start)))
            return rc;
        f->msg.start_time = &f->start;
    }
    if (f->until) {
        if ((rc = cli_time_option(a, "until", f->until, &f->end)))
            return rc;
        f->msg.end_time = &f->end;
    }
    if (f->since && f->until &&
        (f->start.seconds > f->end.seconds ||
         (f->start.seconds == f->end.seconds && f->start.nanos >= f->end.nanos)))
        return cli_usage_error("%s: --since must be before --until", a->command);
    return CLI_EXIT_OK;
}

/* The filter as a JSON object for the export manifest: the fields given, enums by their proto names. */
static char *cli_filter_json(const cli_filter *f, bool fhir)
{
    json_t *o = json_object();
    char t[CLI_TIME_LEN];
    bool ok = o != NULL;
    ok = ok && json_object_set_new(o, "tenant_id", json_string(f->msg.tenant_id)) == 0;
    if (f->patient)
        ok = ok && json_object_set_new(o, "patient_ref", json_string(f->msg.patient_ref)) == 0;
    if (f->actor)
        ok = ok && json_object_set_new(o, "actor_principal_id", json_string(f->msg.actor_principal_id)) == 0;
    const struct {
        const char *key;
        const cli_enum *e;
        int value;
    } enums[] = {{"action", &cli_enum_action, (int)f->msg.action},
                 {"purpose", &cli_enum_purpose, (int)f->msg.purpose},
                 {"outcome", &cli_enum_outcome, (int)f->msg.outcome}};
    for (size_t i = 0; i < BASE_ARRAY_LEN(enums); i++) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(enums[i].e->desc, enums[i].value);
        if (enums[i].value && v)
            ok = ok && json_object_set_new(o, enums[i].key, json_string(v->name)) == 0;
    }
    if (f->msg.start_time)
        ok = ok && json_object_set_new(o, "start_time", json_string(cli_format_time(&f->start, t))) == 0;
    if (f->msg.end_time)
        ok = ok && json_object_set_new(o, "end_time", json_string(cli_format_time(&f->end, t))) == 0;
    ok = ok && json_object_set_new(o, "format",
                                   json_string(fhir ? "EXPORT_FORMAT_FHIR_AUDIT_EVENT_NDJSON"
                                                    : "EXPORT_FORMAT_JSON_LINES")) == 0;
    char *text = ok ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* ---- audit-append */

/* The validator's field names (validate.h) as this command's options, for its messages. */
static const struct {
    const char *field, *option;
} cli_append_fields[] = {
    {"event.actor.principal_id", "--actor"},
    {"event.actor.roles", "--role"},
    {"event.actor", "--actor"},
    {"event.tenant_id", "--tenant"},
    {"event.action", "--action"},
    {"event.purpose", "--purpose"},
    {"event.outcome", "--outcome"},
    {"event.severity", "--severity"},
    {"event.patient_ref", "--patient"},
    {"event.resource_type", "--resource-type"},
    {"event.resource_id", "--resource-id"},
    {"event.request_id", "--request-id"},
    {"event.phi_description", "--phi-description"},
    {"event.details keys", "--detail keys"},
    {"event.details values", "--detail values"},
    {"event.details", "--detail"},
    {"event.recipient.name", "--recipient"},
    {"event.recipient fields", "--recipient and --recipient-address"},
    {"event.recipient", "--recipient"},
    {"event.basis", "--basis"},
    {"event.guideline fields", "--guideline-* options"},
    {"event.guideline needs engine_version, bundle_id, bundle_version, bundle_hash and source",
     "--guideline-engine-version, --guideline-bundle-id, --guideline-bundle-version, --guideline-bundle-hash "
     "and --guideline-source are required"},
    {"event.guideline", "--guideline-*"},
    {"ACTION_DISCLOSE", "--action disclose"},
    {"ACTION_RECOMMEND", "--action recommend"},
    {"ACTION_DECIDE", "--action decide"},
    {"ACTION_BREAK_GLASS", "--action break-glass"},
    {"SUCCESS, DENIED or ERROR", "success, denied or error"},
    {"UNSPECIFIED", "unspecified"},
};

/* A validation message (fixed text naming fields, never values) with the fields spelled as options. */
static void cli_put_validation_message(FILE *out, const char *msg)
{
    for (const char *p = msg; *p;) {
        size_t i = 0;
        while (i < BASE_ARRAY_LEN(cli_append_fields) &&
               strncmp(p, cli_append_fields[i].field, strlen(cli_append_fields[i].field)) != 0)
            i++;
        if (i < BASE_ARRAY_LEN(cli_append_fields)) {
            fputs(cli_append_fields[i].option, out);
            p += strlen(cli_append_fields[i].field);
        } else {
            fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, out);
            p++;
        }
    }
}

static int cli_cmd_audit_append(cli_args *a)
{
    const char *tenant = NULL, *actor = NULL, *action = NULL, *purpose = NULL, *outcome = NULL,
               *severity = NULL, *patient = NULL, *resource_type = NULL, *resource_id = NULL,
               *recipient = NULL, *recipient_address = NULL, *basis = NULL, *phi = NULL, *request_id = NULL,
               *g_engine = NULL, *g_bundle_id = NULL, *g_bundle_version = NULL, *g_bundle_hash = NULL,
               *g_source = NULL;
    const char *role_items[AUDIT_MAX_ROLES], *detail_items[AUDIT_MAX_DETAILS];
    cli_list roles = {role_items, 0, AUDIT_MAX_ROLES}, details = {detail_items, 0, AUDIT_MAX_DETAILS};
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = AUDIT_MAX_TENANT},
        {.name = "actor", .text = &actor, .max = AUDIT_MAX_ID},
        {.name = "role", .list = &roles, .max = AUDIT_MAX_ROLE},
        {.name = "action", .text = &action, .max = CLI_ENUM_WORD_MAX},
        {.name = "purpose", .text = &purpose, .max = CLI_ENUM_WORD_MAX},
        {.name = "outcome", .text = &outcome, .max = CLI_ENUM_WORD_MAX},
        {.name = "severity", .text = &severity, .max = CLI_ENUM_WORD_MAX},
        {.name = "patient", .text = &patient, .max = 35},
        {.name = "resource-type", .text = &resource_type, .max = AUDIT_MAX_RESOURCE_TYPE},
        {.name = "resource-id", .text = &resource_id, .max = AUDIT_MAX_ID},
        {.name = "recipient", .text = &recipient, .max = AUDIT_MAX_TEXT},
        {.name = "recipient-address", .text = &recipient_address, .max = AUDIT_MAX_TEXT},
        {.name = "basis", .text = &basis, .max = CLI_ENUM_WORD_MAX},
        {.name = "phi-description", .text = &phi, .max = AUDIT_MAX_TEXT},
        {.name = "request-id", .text = &request_id, .max = 64},
        {.name = "detail", .list = &details, .max = CLI_DETAIL_MAX},
        {.name = "guideline-engine-version", .text = &g_engine, .max = 64},
        {.name = "guideline-bundle-id", .text = &g_bundle_id, .max = AUDIT_MAX_ID},
        {.name = "guideline-bundle-version", .text = &g_bundle_version, .max = 64},
        {.name = "guideline-bundle-hash", .text = &g_bundle_hash, .max = 128},
        {.name = "guideline-source", .text = &g_source, .max = CLI_GUIDELINE_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!tenant || !actor || !action)
        return cli_usage_error("%s: --tenant, --actor and --action are required (see %s %s --help)",
                               a->command, CLI_PROGRAM, a->command);

    Alma__Audit__V1__Actor act = ALMA__AUDIT__V1__ACTOR__INIT;
    act.principal_id = (char *)actor;
    act.roles = (char **)role_items;
    act.n_roles = roles.count;
    Alma__Audit__V1__EventInput ev = ALMA__AUDIT__V1__EVENT_INPUT__INIT;
    ev.tenant_id = (char *)tenant;
    ev.actor = &act;
    int v = 0;
    if ((rc = cli_enum_option(a, "action", &cli_enum_action, action, &v)))
        return rc;
    ev.action = (Alma__Audit__V1__Action)v;
    v = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_OPERATIONS;
    if ((rc = cli_enum_option(a, "purpose", &cli_enum_purpose, purpose, &v)))
        return rc;
    ev.purpose = (Alma__Common__V1__PurposeOfUse)v;
    v = ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    if ((rc = cli_enum_option(a, "outcome", &cli_enum_outcome, outcome, &v)))
        return rc;
    ev.outcome = (Alma__Audit__V1__Outcome)v;
    v = 0;
    if ((rc = cli_enum_option(a, "severity", &cli_enum_severity, severity, &v)))
        return rc;
    ev.severity = (Alma__Audit__V1__Severity)v;
    v = 0;
    if ((rc = cli_enum_option(a, "basis", &cli_enum_basis, basis, &v)))
        return rc;
    ev.basis = (Alma__Audit__V1__DisclosureBasis)v;
    if (patient)
        ev.patient_ref = (char *)patient;
    if (resource_type)
        ev.resource_type = (char *)resource_type;
    if (resource_id)
        ev.resource_id = (char *)resource_id;
    if (phi)
        ev.phi_description = (char *)phi;
    if (request_id)
        ev.request_id = (char *)request_id;
    Alma__Audit__V1__Recipient rcpt = ALMA__AUDIT__V1__RECIPIENT__INIT;
    if (recipient || recipient_address) {
        rcpt.name = (char *)(recipient ? recipient : "");
        rcpt.address = (char *)(recipient_address ? recipient_address : "");
        ev.recipient = &rcpt;
    }
    Alma__Audit__V1__GuidelineRef guide = ALMA__AUDIT__V1__GUIDELINE_REF__INIT;
    if (g_engine || g_bundle_id || g_bundle_version || g_bundle_hash || g_source) {
        guide.engine_version = (char *)(g_engine ? g_engine : "");
        guide.bundle_id = (char *)(g_bundle_id ? g_bundle_id : "");
        guide.bundle_version = (char *)(g_bundle_version ? g_bundle_version : "");
        guide.bundle_hash = (char *)(g_bundle_hash ? g_bundle_hash : "");
        guide.source = (char *)(g_source ? g_source : "");
        ev.guideline = &guide;
    }
    /* --detail KEY=VALUE: split into copies (the words themselves stay as given). */
    struct {
        char key[AUDIT_MAX_DETAIL_KEY + 1];
        char value[AUDIT_MAX_DETAIL_VALUE + 1];
    } kv[AUDIT_MAX_DETAILS];
    Alma__Audit__V1__EventInput__DetailsEntry entries[AUDIT_MAX_DETAILS], *entry_ptrs[AUDIT_MAX_DETAILS];
    for (size_t i = 0; i < details.count; i++) {
        const char *w = details.items[i], *eq = strchr(w, '=');
        size_t klen = eq ? (size_t)(eq - w) : 0;
        if (!eq || klen == 0 || klen > AUDIT_MAX_DETAIL_KEY || strlen(eq + 1) > AUDIT_MAX_DETAIL_VALUE)
            return cli_usage_error("%s: --detail expects KEY=VALUE with a KEY of 1 to %d of [a-z0-9_] and a "
                                   "VALUE of at most %d bytes",
                                   a->command, AUDIT_MAX_DETAIL_KEY, AUDIT_MAX_DETAIL_VALUE);
        memcpy(kv[i].key, w, klen);
        kv[i].key[klen] = '\0';
        snprintf(kv[i].value, sizeof kv[i].value, "%s", eq + 1);
        alma__audit__v1__event_input__details_entry__init(&entries[i]);
        entries[i].key = kv[i].key;
        entries[i].value = kv[i].value;
        entry_ptrs[i] = &entries[i];
    }
    ev.details = entry_ptrs;
    ev.n_details = details.count;

    /* The service's own rules, checked here first so a mistake is a usage error and nothing is sent. */
    base_result r = audit_validate_event(&ev);
    if (!base_is_ok(r)) {
        fprintf(stderr, CLI_PROGRAM ": %s: ", a->command);
        cli_put_validation_message(stderr, base_error_message());
        fputs(" (nothing was sent)\n", stderr);
        return CLI_EXIT_USAGE;
    }

    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    Alma__Audit__V1__AppendEventRequest req = ALMA__AUDIT__V1__APPEND_EVENT_REQUEST__INIT;
    req.event = &ev;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c.ch, AUDIT_RPC("AppendEvent"), &req.base,
                                   &alma__audit__v1__append_event_response__descriptor, &c.opts, &resp, &st);
    if (code != RPC_OK) {
        rc = cli_rpc_error(&st);
        if (code == RPC_PERMISSION_DENIED)
            fprintf(stderr,
                    CLI_PROGRAM ": %s: the audit service takes appends only from suite services and the "
                                "test-client and bench identities (--cert test-client.pem in development)\n",
                    a->command);
    } else {
        const Alma__Audit__V1__AppendEventResponse *out = (const Alma__Audit__V1__AppendEventResponse *)resp;
        char hex[2 * CLI_HEX_MAX + 1], t[CLI_TIME_LEN];
        printf("seq=%" PRIu64 " leaf=%s time=%s\n", out->sequence,
               cli_hex(out->leaf_hash.data, out->leaf_hash.len, hex), cli_format_time(out->time, t));
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cli_disconnect(&c);
    return rc;
}

/* ---- audit-checkpoint */

/* A verifier key from a file written by --vkey-out: one line, surrounding white space ignored. */
static bool cli_read_vkey_file(const char *command, const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    bool ok = f && !ferror(f) && (n < cap - 1 || fgetc(f) == EOF);
    if (f)
        fclose(f);
    if (!ok) {
        int err = errno;
        fprintf(stderr, CLI_PROGRAM ": %s: cannot read the verifier key file ", command);
        cli_put_safe(stderr, path);
        if (f)
            fprintf(stderr, " (unreadable or larger than %zu bytes)\n", cap - 1);
        else
            fprintf(stderr, ": %s\n", strerror(err));
        return false;
    }
    buf[n] = '\0';
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        buf[--n] = '\0';
    size_t start = strspn(buf, " \t\r\n");
    memmove(buf, buf + start, n - start + 1);
    if (!buf[0] || strchr(buf, '\n')) {
        fprintf(stderr, CLI_PROGRAM ": %s: the verifier key file ", command);
        cli_put_safe(stderr, path);
        fputs(" must hold one line\n", stderr);
        return false;
    }
    return true;
}

static int cli_cmd_audit_checkpoint(cli_args *a)
{
    const char *note_out = NULL, *vkey_out = NULL, *vkey_file = NULL;
    const cli_option opts[] = {
        {.name = "note-out", .text = &note_out, .max = CLI_PATH_MAX, .path = true},
        {.name = "vkey-out", .text = &vkey_out, .max = CLI_PATH_MAX, .path = true},
        {.name = "vkey-file", .text = &vkey_file, .max = CLI_PATH_MAX, .path = true},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    char pinned[AUDIT_NOTE_VKEY_MAX + 2];
    if (vkey_file && !cli_read_vkey_file(a->command, vkey_file, pinned, sizeof pinned))
        return CLI_EXIT_USAGE;
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    Alma__Audit__V1__GetCheckpointRequest req = ALMA__AUDIT__V1__GET_CHECKPOINT_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c.ch, AUDIT_RPC("GetCheckpoint"), &req.base,
                                   &alma__audit__v1__checkpoint__descriptor, &c.opts, &resp, &st);
    cli_disconnect(&c);
    if (code != RPC_OK)
        return cli_rpc_error(&st);
    const Alma__Audit__V1__Checkpoint *ck = (const Alma__Audit__V1__Checkpoint *)resp;
    char hex[2 * CLI_HEX_MAX + 1], t[CLI_TIME_LEN];
    printf("tree_size=%" PRIu64 "\nroot=%s\ntime=%s\nvkey=", ck->tree_size,
           cli_hex(ck->root_hash.data, ck->root_hash.len, hex), cli_format_time(ck->time, t));
    cli_put_safe(stdout, ck->verifier_key);
    fputc('\n', stdout);

    /* The note must verify with the key (the pinned one with --vkey-file, else the one served) and say the
     * same size and root as the message. */
    const char *vkey = vkey_file ? pinned : ck->verifier_key;
    audit_checkpoint *parsed = NULL;
    base_result r = audit_checkpoint_open_vkey(ck->signed_note, strlen(ck->signed_note), vkey, NULL, &parsed);
    bool same = base_is_ok(r) && parsed->size == ck->tree_size &&
                ck->root_hash.len == AUDIT_CHECKPOINT_ROOT_LEN &&
                memcmp(parsed->root, ck->root_hash.data, AUDIT_CHECKPOINT_ROOT_LEN) == 0;
    audit_checkpoint_free(parsed);
    if (same) {
        printf("signature=ok (%s)\n", vkey_file ? "the key of --vkey-file" : "the key the server sent");
    } else {
        printf("signature=BAD\n");
        fprintf(stderr, CLI_PROGRAM ": %s: ", a->command);
        if (!base_is_ok(r))
            cli_put_safe(stderr, base_error_message());
        else
            fputs("the signed note's tree size or root differs from the checkpoint's", stderr);
        fprintf(stderr, " (verified with %s)\n",
                vkey_file ? "the key of --vkey-file" : "the key the server sent");
        rc = CLI_EXIT_FAIL;
    }
    fputc('\n', stdout);
    cli_put_note(stdout, ck->signed_note);
    if (rc == CLI_EXIT_OK && note_out &&
        !cli_write_file(a->command, "signed note", note_out, ck->signed_note, strlen(ck->signed_note)))
        rc = CLI_EXIT_FAIL;
    if (rc == CLI_EXIT_OK && vkey_out) {
        size_t n = strlen(ck->verifier_key);
        char *line = malloc(n + 2);
        if (line) {
            memcpy(line, ck->verifier_key, n);
            line[n] = '\n';
            line[n + 1] = '\0';
        }
        if (!line || !cli_write_file(a->command, "verifier key", vkey_out, line, n + 1))
            rc = CLI_EXIT_FAIL;
        free(line);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- audit-verify-log */

static int cli_cmd_audit_verify_log(cli_args *a)
{
    uint64_t start = 0, end = 0;
    const cli_option opts[] = {
        {.name = "start", .number64 = &start, .max = (unsigned long)INT64_MAX},
        {.name = "end", .number64 = &end, .max = (unsigned long)INT64_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (end != 0 && start >= end)
        return cli_usage_error("%s: --start must be below --end (--end is one past the last sequence; 0 or "
                               "absent: the whole log)",
                               a->command);
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    Alma__Audit__V1__VerifyLogRequest req = ALMA__AUDIT__V1__VERIFY_LOG_REQUEST__INIT;
    req.start = start;
    req.end = end;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c.ch, AUDIT_RPC("VerifyLog"), &req.base,
                                   &alma__audit__v1__verify_log_response__descriptor, &c.opts, &resp, &st);
    cli_disconnect(&c);
    if (code != RPC_OK)
        return cli_rpc_error(&st);
    const Alma__Audit__V1__VerifyLogResponse *v = (const Alma__Audit__V1__VerifyLogResponse *)resp;
    if (v->ok) {
        printf("ok: %" PRIu64 " events verified\n", v->verified_through);
    } else {
        printf("NOT OK: first bad sequence %" PRIu64 ": ", v->first_bad_sequence);
        cli_put_field(stdout, v->problem);
        printf(" (%" PRIu64 " events checked)\n", v->verified_through);
        rc = CLI_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- audit-list */

/* One event as a line: seq time action outcome actor patient resource (fields never hold spaces). */
static void cli_print_event_line(const Alma__Audit__V1__Event *e)
{
    static const Alma__Audit__V1__EventInput empty = ALMA__AUDIT__V1__EVENT_INPUT__INIT;
    const Alma__Audit__V1__EventInput *in = e->input ? e->input : &empty;
    char t[CLI_TIME_LEN], action[CLI_ENUM_WORD_MAX + 1], outcome[CLI_ENUM_WORD_MAX + 1];
    printf("%" PRIu64 " %s %s %s ", e->sequence, cli_format_time(e->time, t),
           cli_enum_name(&cli_enum_action, (int)in->action, action, sizeof action),
           cli_enum_name(&cli_enum_outcome, (int)in->outcome, outcome, sizeof outcome));
    cli_put_field(stdout, in->actor ? in->actor->principal_id : NULL);
    fputc(' ', stdout);
    cli_put_field(stdout, in->patient_ref);
    fputc(' ', stdout);
    cli_put_field(stdout, in->resource_type);
    if (in->resource_id && in->resource_id[0]) {
        fputc('/', stdout);
        cli_put_safe(stdout, in->resource_id);
    }
    fputc('\n', stdout);
}

/* One event as a compact JSON object on a line. False when a field is not valid UTF-8. */
static bool cli_print_event_json(const Alma__Audit__V1__Event *e)
{
    static const Alma__Audit__V1__EventInput empty = ALMA__AUDIT__V1__EVENT_INPUT__INIT;
    const Alma__Audit__V1__EventInput *in = e->input ? e->input : &empty;
    char t[CLI_TIME_LEN], hex[2 * CLI_HEX_MAX + 1], action[CLI_ENUM_WORD_MAX + 1],
        purpose[CLI_ENUM_WORD_MAX + 1], outcome[CLI_ENUM_WORD_MAX + 1];
    json_t *o = json_object();
    bool ok = o != NULL;
    ok = ok && json_object_set_new(o, "seq", json_integer((json_int_t)e->sequence)) == 0;
    ok = ok && json_object_set_new(o, "time",
                                   e->time ? json_string(cli_format_time(e->time, t)) : json_null()) == 0;
    ok = ok && json_object_set_new(o, "tenant_id", json_string(in->tenant_id)) == 0;
    ok = ok && json_object_set_new(
                   o, "action",
                   json_string(cli_enum_name(&cli_enum_action, (int)in->action, action, sizeof action))) == 0;
    ok = ok && json_object_set_new(o, "purpose",
                                   json_string(cli_enum_name(&cli_enum_purpose, (int)in->purpose, purpose,
                                                             sizeof purpose))) == 0;
    ok = ok && json_object_set_new(o, "outcome",
                                   json_string(cli_enum_name(&cli_enum_outcome, (int)in->outcome, outcome,
                                                             sizeof outcome))) == 0;
    ok = ok && json_object_set_new(o, "actor", json_string(in->actor ? in->actor->principal_id : "")) == 0;
    ok = ok && json_object_set_new(o, "patient_ref", json_string(in->patient_ref)) == 0;
    ok = ok && json_object_set_new(o, "resource_type", json_string(in->resource_type)) == 0;
    ok = ok && json_object_set_new(o, "resource_id", json_string(in->resource_id)) == 0;
    ok = ok && json_object_set_new(o, "leaf_hash",
                                   json_string(cli_hex(e->leaf_hash.data, e->leaf_hash.len, hex))) == 0;
    char *text = ok ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return false;
    puts(text);
    free(text);
    return true;
}

static int cli_cmd_audit_list(cli_args *a)
{
    cli_filter f = {0};
    uint32_t page_size = UINT32_MAX; /* not given (its max is CLI_PAGE_SIZE_MAX) */
    const char *page_token = NULL;
    bool all = false, as_json = false;
    cli_option opts[CLI_FILTER_OPTION_COUNT + 4];
    cli_filter_options(&f, opts);
    opts[CLI_FILTER_OPTION_COUNT] =
        (cli_option){.name = "page-size", .number = &page_size, .max = CLI_PAGE_SIZE_MAX};
    opts[CLI_FILTER_OPTION_COUNT + 1] =
        (cli_option){.name = "page-token", .text = &page_token, .max = CLI_PAGE_TOKEN_MAX};
    opts[CLI_FILTER_OPTION_COUNT + 2] = (cli_option){.name = "all", .flag = &all};
    opts[CLI_FILTER_OPTION_COUNT + 3] = (cli_option){.name = "json", .flag = &as_json};
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_filter_build(a, &f)))
        return rc;
    if (page_size == 0)
        return cli_usage_error("%s: --page-size must be 1 to %d", a->command, CLI_PAGE_SIZE_MAX);
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    char token[CLI_PAGE_TOKEN_MAX + 1] = "";
    if (page_token)
        snprintf(token, sizeof token, "%s", page_token);
    for (;;) {
        Alma__Audit__V1__ListEventsRequest req = ALMA__AUDIT__V1__LIST_EVENTS_REQUEST__INIT;
        req.filter = &f.msg;
        req.page_size = (int32_t)(page_size != UINT32_MAX ? page_size : all ? CLI_LIST_ALL_PAGE : 0);
        req.page_token = token;
        ProtobufCMessage *resp = NULL;
        rpc_status st;
        rpc_code code =
            rpc_call_unary(c.ch, AUDIT_RPC("ListEvents"), &req.base,
                           &alma__audit__v1__list_events_response__descriptor, &c.opts, &resp, &st);
        if (code != RPC_OK) {
            rc = cli_rpc_error(&st);
            break;
        }
        const Alma__Audit__V1__ListEventsResponse *page = (const Alma__Audit__V1__ListEventsResponse *)resp;
        for (size_t i = 0; i < page->n_events && rc == CLI_EXIT_OK; i++) {
            if (!page->events[i])
                continue;
            if (!as_json) {
                cli_print_event_line(page->events[i]);
            } else if (!cli_print_event_json(page->events[i])) {
                fprintf(stderr, CLI_PROGRAM ": %s: event %" PRIu64 " has a field that is not valid UTF-8\n",
                        a->command, page->events[i]->sequence);
                rc = CLI_EXIT_FAIL;
            }
        }
        fflush(stdout);
        const char *next = page->next_page_token ? page->next_page_token : "";
        bool more = next[0] != '\0';
        if (more && (strlen(next) > CLI_PAGE_TOKEN_MAX || strcmp(next, token) == 0)) {
            fprintf(stderr, CLI_PROGRAM ": %s: the server sent an unusable next page token\n", a->command);
            rc = CLI_EXIT_FAIL;
        }
        if (rc == CLI_EXIT_OK && more && !all) {
            fprintf(stderr, CLI_PROGRAM ": %s: more events: --page-token ", a->command);
            cli_put_safe(stderr, next);
            fputc('\n', stderr);
        }
        if (rc == CLI_EXIT_OK && more)
            snprintf(token, sizeof token, "%s", next);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (rc != CLI_EXIT_OK || !more || !all)
            break;
    }
    cli_disconnect(&c);
    return rc;
}

/* ---- audit-export */

typedef struct cli_export {
    audit_export_writer *w;
    bool have_checkpoint;
    bool have_statement;
    char vkey[512]; /* the key the server stated, to check its statement as its checkpoint */
    uint64_t tree_size;
    uint8_t root[AUDIT_MERKLE_HASH_LEN];
    char problem[256]; /* why the export failed on this side: a fixed text or the writer's message */
} cli_export;

static bool cli_export_fail(cli_export *x, const char *what)
{
    snprintf(x->problem, sizeof x->problem, "%s", what);
    return false;
}

/* One chunk of the stream into the writer. */
static bool cli_export_chunk(cli_export *x, const Alma__Audit__V1__ExportChunk *chunk)
{
    if (chunk->part_case == ALMA__AUDIT__V1__EXPORT_CHUNK__PART_CHECKPOINT && chunk->checkpoint) {
        const Alma__Audit__V1__Checkpoint *ck = chunk->checkpoint;
        if (x->have_checkpoint)
            return cli_export_fail(x, "the server sent a second checkpoint");
        if (ck->root_hash.len != AUDIT_MERKLE_HASH_LEN)
            return cli_export_fail(x, "the server's checkpoint has no 32-byte root hash");
        /* The note must verify with the key the server states and say the same size and root as the
         * message (the export itself is verified with a key the recipient got out of band). */
        if (ck->verifier_key[0]) {
            audit_checkpoint *parsed = NULL;
            base_result v = audit_checkpoint_open_vkey(ck->signed_note, strlen(ck->signed_note),
                                                       ck->verifier_key, NULL, &parsed);
            bool same = base_is_ok(v) && parsed->size == ck->tree_size &&
                        memcmp(parsed->root, ck->root_hash.data, AUDIT_MERKLE_HASH_LEN) == 0;
            audit_checkpoint_free(parsed);
            if (!same)
                return cli_export_fail(x, "the server's checkpoint does not verify with its own key or "
                                          "differs from its signed note");
        }
        base_result r = audit_export_writer_checkpoint(x->w, ck->signed_note, strlen(ck->signed_note));
        if (!base_is_ok(r))
            return cli_export_fail(x, base_error_message());
        x->have_checkpoint = true;
        snprintf(x->vkey, sizeof x->vkey, "%s", ck->verifier_key);
        x->tree_size = ck->tree_size;
        memcpy(x->root, ck->root_hash.data, AUDIT_MERKLE_HASH_LEN);
        return true;
    }
    if (x->have_statement)
        return cli_export_fail(x, "the server sent more after its export statement");
    if (chunk->part_case == ALMA__AUDIT__V1__EXPORT_CHUNK__PART_STATEMENT && chunk->statement) {
        if (!x->have_checkpoint)
            return cli_export_fail(x, "the server sent its export statement before the checkpoint");
        if (x->vkey[0]) {
            audit_note_verifier *v = NULL;
            size_t text_len = 0;
            base_result vr = audit_note_verifier_new(x->vkey, &v);
            if (base_is_ok(vr)) {
                const audit_note_verifier *vs[] = {v};
                vr = audit_note_open(chunk->statement, strlen(chunk->statement), vs, 1, &text_len);
            }
            audit_note_verifier_freep(&v);
            if (!base_is_ok(vr))
                return cli_export_fail(x, "the server's export statement does not verify with its own key");
        }
        base_result r = audit_export_writer_statement(x->w, chunk->statement, strlen(chunk->statement));
        if (!base_is_ok(r))
            return cli_export_fail(x, base_error_message());
        x->have_statement = true;
        return true;
    }
    if (chunk->part_case != ALMA__AUDIT__V1__EXPORT_CHUNK__PART_LINE || !chunk->line)
        return cli_export_fail(x, "the server sent an empty chunk");
    const Alma__Audit__V1__ExportLine *l = chunk->line;
    if (!x->have_checkpoint)
        return cli_export_fail(x, "the server sent a line before the checkpoint");
    if (l->leaf_hash.len != AUDIT_MERKLE_HASH_LEN || l->n_proof > AUDIT_MERKLE_MAX_PROOF)
        return cli_export_fail(x, "the server sent a line with a malformed leaf hash or proof");
    uint8_t proof[AUDIT_MERKLE_MAX_PROOF][AUDIT_MERKLE_HASH_LEN];
    for (size_t i = 0; i < l->n_proof; i++) {
        if (l->proof[i].len != AUDIT_MERKLE_HASH_LEN)
            return cli_export_fail(x, "the server sent a line with a malformed proof hash");
        memcpy(proof[i], l->proof[i].data, AUDIT_MERKLE_HASH_LEN);
    }
    base_result r = audit_export_writer_line(x->w, l->sequence, l->json, strlen(l->json),
                                             (const char *)l->entry.data, l->entry.len, l->leaf_hash.data,
                                             (const uint8_t(*)[AUDIT_MERKLE_HASH_LEN])proof, l->n_proof);
    if (!base_is_ok(r))
        return cli_export_fail(x, base_error_message());
    return true;
}

static int64_t cli_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cli_export_incomplete(const char *command, const char *dir)
{
    fprintf(stderr, CLI_PROGRAM ": %s: the export in ", command);
    cli_put_safe(stderr, dir);
    fputs(" is incomplete (no manifest.json): delete it and export again\n", stderr);
}

static int cli_cmd_audit_export(cli_args *a)
{
    cli_filter f = {0};
    const char *format = NULL, *out = NULL;
    cli_option opts[CLI_FILTER_OPTION_COUNT + 2];
    cli_filter_options(&f, opts);
    opts[CLI_FILTER_OPTION_COUNT] = (cli_option){.name = "format", .text = &format, .max = CLI_ENUM_WORD_MAX};
    opts[CLI_FILTER_OPTION_COUNT + 1] =
        (cli_option){.name = "out", .text = &out, .max = CLI_PATH_MAX, .path = true};
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_filter_build(a, &f)))
        return rc;
    if (!format || (strcmp(format, "jsonl") != 0 && strcmp(format, "fhir") != 0))
        return cli_usage_error(
            "%s: --format must be jsonl (JSON Lines of the log's entries) or fhir (FHIR R4 "
            "AuditEvent NDJSON)",
            a->command);
    if (!out || !out[0])
        return cli_usage_error("%s: --out DIR is required: a new directory (or an empty one)", a->command);
    bool fhir = strcmp(format, "fhir") == 0;

    /* The directory first: a bad --out is a usage error and nothing is asked of the server. */
    cli_export x = {0};
    base_result r = audit_export_writer_open(out, fhir, f.tenant, &x.w);
    if (!base_is_ok(r)) {
        fprintf(stderr, CLI_PROGRAM ": %s: ", a->command);
        cli_put_safe(stderr, base_error_message());
        fputc('\n', stderr);
        return CLI_EXIT_USAGE;
    }
    char *filter_json = cli_filter_json(&f, fhir);
    r = filter_json ? audit_export_writer_set_filter(x.w, filter_json)
                    : base_fail(BASE_ERR_NOMEM, "cannot describe the filter");
    free(filter_json);
    if (!base_is_ok(r)) {
        fprintf(stderr, CLI_PROGRAM ": %s: ", a->command);
        cli_put_safe(stderr, base_error_message());
        fputc('\n', stderr);
        audit_export_writer_free(x.w);
        cli_export_incomplete(a->command, out);
        return CLI_EXIT_FAIL;
    }

    cli_block_stop_signals();
    cli_call c;
    if ((rc = cli_connect(&c))) {
        audit_export_writer_free(x.w);
        cli_export_incomplete(a->command, out);
        return rc;
    }
    c.opts.timeout_ms = CLI_WATCH_TIMEOUT_MS;
    rpc_client_stream *s = NULL;
    r = rpc_client_stream_open(c.ch, AUDIT_RPC("ExportEvents"), &c.opts, &s);
    if (!base_is_ok(r)) {
        cli_disconnect(&c);
        audit_export_writer_free(x.w);
        rc = cli_stream_open_failed(r);
        cli_export_incomplete(a->command, out);
        return rc;
    }
    cli_stream_signals sig;
    cli_signals_start(&sig, s);
    Alma__Audit__V1__ExportEventsRequest req = ALMA__AUDIT__V1__EXPORT_EVENTS_REQUEST__INIT;
    req.filter = &f.msg;
    req.format = fhir ? ALMA__AUDIT__V1__EXPORT_FORMAT__EXPORT_FORMAT_FHIR_AUDIT_EVENT_NDJSON
                      : ALMA__AUDIT__V1__EXPORT_FORMAT__EXPORT_FORMAT_JSON_LINES;
    bool local_failure = false;
    int64_t last_progress = cli_monotonic_ms();
    if (base_is_ok(rpc_client_stream_send(s, &req.base)) && base_is_ok(rpc_client_stream_close_send(s))) {
        for (;;) {
            ProtobufCMessage *m = NULL;
            bool eof = false;
            r = rpc_client_stream_recv(s, &alma__audit__v1__export_chunk__descriptor, &m, &eof);
            if (!base_is_ok(r)) {
                cli_export_fail(&x, base_error_message());
                local_failure = true;
                rpc_client_stream_cancel(s);
                break;
            }
            if (eof)
                break;
            bool ok = cli_export_chunk(&x, (const Alma__Audit__V1__ExportChunk *)m);
            protobuf_c_message_free_unpacked(m, NULL);
            if (!ok) {
                local_failure = true;
                rpc_client_stream_cancel(s);
                break;
            }
            int64_t now = cli_monotonic_ms();
            if (now - last_progress >= 1000) {
                fprintf(stderr, CLI_PROGRAM ": %s: exported %" PRIu64 " events\n", a->command,
                        audit_export_writer_count(x.w));
                last_progress = now;
            }
        }
    }
    rpc_status st;
    rpc_code code = rpc_client_stream_finish(s, &st);
    bool interrupted = cli_signals_stop(&sig);
    rpc_client_stream_free(s);
    cli_disconnect(&c);

    if (interrupted) {
        fprintf(stderr, CLI_PROGRAM ": %s: interrupted\n", a->command);
        rc = CLI_EXIT_FAIL;
    } else if (local_failure) {
        fprintf(stderr, CLI_PROGRAM ": %s: ", a->command);
        cli_put_safe(stderr, x.problem);
        fputc('\n', stderr);
        rc = CLI_EXIT_FAIL;
    } else if (code != RPC_OK) {
        rc = cli_rpc_error(&st);
    } else if (!x.have_checkpoint) {
        fprintf(stderr, CLI_PROGRAM ": %s: the server ended the export without a checkpoint\n", a->command);
        rc = CLI_EXIT_FAIL;
    } else if (!x.have_statement) {
        fprintf(stderr, CLI_PROGRAM ": %s: the server ended the export without its signed statement\n",
                a->command);
        rc = CLI_EXIT_FAIL;
    } else if (!base_is_ok(r = audit_export_writer_finish(x.w))) {
        fprintf(stderr, CLI_PROGRAM ": %s: ", a->command);
        cli_put_safe(stderr, base_error_message());
        fputc('\n', stderr);
        rc = CLI_EXIT_FAIL;
    } else {
        char hex[2 * CLI_HEX_MAX + 1];
        uint64_t n = audit_export_writer_count(x.w);
        printf("exported %" PRIu64 " event%s to ", n, n == 1 ? "" : "s");
        cli_put_safe(stdout, out);
        printf(" (%s; checkpoint tree_size=%" PRIu64 " root=%s)\n", fhir ? "fhir-ndjson" : "jsonl",
               x.tree_size, cli_hex(x.root, sizeof x.root, hex));
        rc = CLI_EXIT_OK;
    }
    if (rc != CLI_EXIT_OK)
        cli_export_incomplete(a->command, out);
    audit_export_writer_free(x.w);
    return rc;
}

/* ---- audit-accounting */

static int cli_cmd_audit_accounting(cli_args *a)
{
    const char *tenant = NULL, *patient = NULL, *as_of = NULL;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = AUDIT_MAX_TENANT},
        {.name = "patient", .text = &patient, .max = 35},
        {.name = "as-of", .text = &as_of, .max = CLI_TIME_WORD_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_require_tenant(a, tenant)))
        return rc;
    if (!patient)
        return cli_usage_error("%s: --patient is required (see %s %s --help)", a->command, CLI_PROGRAM,
                               a->command);
    if ((rc = cli_require_patient(a, patient)))
        return rc;
    Alma__Audit__V1__GetAccountingOfDisclosuresRequest req =
        ALMA__AUDIT__V1__GET_ACCOUNTING_OF_DISCLOSURES_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.patient_ref = (char *)patient;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (as_of) {
        if ((rc = cli_time_option(a, "as-of", as_of, &ts)))
            return rc;
        req.as_of = &ts;
    }
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    rpc_code code = rpc_call_unary(c.ch, AUDIT_RPC("GetAccountingOfDisclosures"), &req.base,
                                   &alma__audit__v1__get_accounting_of_disclosures_response__descriptor,
                                   &c.opts, &resp, &st);
    cli_disconnect(&c);
    if (code != RPC_OK)
        return cli_rpc_error(&st);
    const Alma__Audit__V1__GetAccountingOfDisclosuresResponse *acc =
        (const Alma__Audit__V1__GetAccountingOfDisclosuresResponse *)resp;
    for (size_t i = 0; i < acc->n_disclosures; i++) {
        const Alma__Audit__V1__Disclosure *d = acc->disclosures[i];
        if (!d)
            continue;
        char t[CLI_TIME_LEN], purpose[CLI_ENUM_WORD_MAX + 1];
        printf("%s\t", cli_format_time(d->time, t));
        cli_put_field(stdout, d->recipient ? d->recipient->name : NULL);
        if (d->recipient && d->recipient->address && d->recipient->address[0]) {
            fputs(" (", stdout);
            cli_put_safe(stdout, d->recipient->address);
            fputc(')', stdout);
        }
        printf("\t%s\t", cli_enum_name(&cli_enum_purpose, (int)d->purpose, purpose, sizeof purpose));
        cli_put_field(stdout, d->phi_description);
        printf("\tseq=%" PRIu64 "\n", d->sequence);
    }
    char t[CLI_TIME_LEN];
    fprintf(stderr, CLI_PROGRAM ": %s: %zu accountable disclosure%s in the 6 years before %s\n", a->command,
            acc->n_disclosures, acc->n_disclosures == 1 ? "" : "s", as_of ? cli_format_time(&ts, t) : "now");
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

/* ---- help of the audit commands */

static void cli_help_enum(FILE *out, const char *option, const char *what, const cli_enum *e)
{
    fprintf(out, "  --%-24s %s: ", option, what);
    cli_enum_choices(e, out);
    fputc('\n', out);
}

static void cli_help_filters(FILE *out)
{
    fprintf(out,
            "Filters (all optional but --tenant; an event must match every one given):\n"
            "  --tenant T                 the tenant (1 to %d of [A-Za-z0-9._:-]), required\n"
            "  --patient pt_<32 hex>      the pseudonymous patient reference\n"
            "  --actor P                  the acting principal's id\n",
            AUDIT_MAX_TENANT);
    cli_help_enum(out, "action A", "one of", &cli_enum_action);
    cli_help_enum(out, "purpose P", "one of", &cli_enum_purpose);
    cli_help_enum(out, "outcome O", "one of", &cli_enum_outcome);
    fputs("  --since TIME               events logged at or after TIME (RFC 3339 UTC: 2026-11-23T12:00:00Z)\n"
          "  --until TIME               events logged before TIME\n",
          out);
}

static void cli_help_audit_append(FILE *out)
{
    fprintf(out,
            "Options:\n"
            "  --tenant T                 the tenant (1 to %d of [A-Za-z0-9._:-]), required\n"
            "  --actor P                  the acting principal's id, required\n"
            "  --role R                   a role of the actor (repeatable, at most %d)\n",
            AUDIT_MAX_TENANT, AUDIT_MAX_ROLES);
    cli_help_enum(out, "action A", "required, one of", &cli_enum_action);
    cli_help_enum(out, "purpose P", "default operations; one of", &cli_enum_purpose);
    cli_help_enum(out, "outcome O", "default success; one of", &cli_enum_outcome);
    cli_help_enum(out, "severity S", "one of", &cli_enum_severity);
    fprintf(
        out,
        "  --patient pt_<32 hex>      the pseudonymous patient reference (never a name, MRN or other PHI)\n"
        "  --resource-type X          e.g. Patient, Referral; --resource-id Y needs it\n"
        "  --resource-id Y            the resource's id\n"
        "  --recipient NAME           disclose: who received the PHI (required for disclose)\n"
        "  --recipient-address ADDR   disclose: the recipient's address, if known\n");
    cli_help_enum(out, "basis B", "disclose: required, one of", &cli_enum_basis);
    fprintf(
        out,
        "  --phi-description TEXT     disclose: the categories of PHI disclosed, no values (required)\n"
        "  --detail KEY=VALUE         repeatable, at most %d; KEY [a-z0-9_]{1,%d}, VALUE at most %d bytes\n"
        "  --request-id ID            the request this event belongs to\n"
        "  --guideline-engine-version V, --guideline-bundle-id ID, --guideline-bundle-version V,\n"
        "  --guideline-bundle-hash H, --guideline-source TEXT\n"
        "                             recommend: what produced the recommendation (all five required)\n"
        "The event is checked with the service's own rules before anything is sent. The audit service takes\n"
        "AppendEvent only from the suite's services and the test-client and bench identities, not from\n"
        "alma-cli's certificate: in development use --cert/--key of test-client (pki/test-client.pem).\n",
        AUDIT_MAX_DETAILS, AUDIT_MAX_DETAIL_KEY, AUDIT_MAX_DETAIL_VALUE);
}

static void cli_help_audit_checkpoint(FILE *out)
{
    fputs("Prints tree_size=, root=, time=, vkey= and signature= lines, a blank line, then the signed note.\n"
          "The note's signature is checked with the key the server sent, or with --vkey-file's (a key saved\n"
          "earlier: that is what detects a server whose key changed); exit 1 when it does not verify.\n"
          "  --note-out FILE            also write the signed note, exactly as served, to FILE\n"
          "  --vkey-out FILE            also write the verifier key (one line) to FILE, for\n"
          "                             alma-audit verify --vkey-file FILE\n"
          "  --vkey-file FILE           verify the note with this key instead of the one served\n",
          out);
}

static void cli_help_audit_verify_log(FILE *out)
{
    fputs(
        "The service recomputes every leaf hash and the tree over [start, end) and compares them with what\n"
        "it stored and signed. Prints \"ok: N events verified\" (exit 0) or \"NOT OK: first bad sequence S:\n"
        "PROBLEM\" (exit 1).\n"
        "  --start N                  first sequence (default 0)\n"
        "  --end N                    one past the last sequence (default: the whole log)\n",
        out);
}

static void cli_help_audit_list(FILE *out)
{
    cli_help_filters(out);
    fprintf(out,
            "  --page-size N              events per call, 1 to %d (default: the server's, 100; --all: %d)\n"
            "  --page-token X             continue after a previous page (its token is printed on stderr)\n"
            "  --all                      follow the page tokens to the last event\n"
            "  --json                     one JSON object per line instead of text\n"
            "Text lines: SEQ TIME ACTION OUTCOME ACTOR PATIENT RESOURCE (\"-\" when empty; RESOURCE is "
            "Type/id).\n"
            "Every call is itself recorded in the audit log.\n",
            CLI_PAGE_SIZE_MAX, CLI_LIST_ALL_PAGE);
}

static void cli_help_audit_export(FILE *out)
{
    cli_help_filters(out);
    fputs("  --format F                 jsonl (the log's entries, JSON Lines) or fhir (FHIR R4 AuditEvent "
          "NDJSON)\n"
          "  --out DIR                  a new (or empty) directory; its parent must exist\n"
          "Writes the export format of services/audit/export_file.h: the checkpoint, the events, their\n"
          "inclusion proofs, and manifest.json last. Check it with alma-audit verify --export DIR "
          "--vkey-file F.\n"
          "Progress goes to stderr. On any error or Ctrl-C the directory is left without manifest.json\n"
          "(incomplete: the verifier refuses it) and the exit status is 1 (2 when DIR cannot be created).\n"
          "No deadline (--timeout-ms does not apply). The export is itself recorded in the audit log.\n",
          out);
}

static void cli_help_audit_accounting(FILE *out)
{
    fputs("  --tenant T                 the tenant, required\n"
          "  --patient pt_<32 hex>      the patient, required\n"
          "  --as-of TIME               the end of the 6-year window (RFC 3339 UTC; default now)\n"
          "Prints one tab-separated line per disclosure the patient may ask an accounting of (HIPAA\n"
          "45 CFR 164.528; the excluded bases are left out): TIME, RECIPIENT (ADDRESS), PURPOSE, PHI "
          "DESCRIPTION,\n"
          "seq=N; the count goes to stderr. The request is itself recorded in the audit log.\n",
          out);
}

/* ------------------------------------------------------------------ alma.identity.v1.Identity */

#define IDENTITY_RPC(name) "/alma.identity.v1.Identity/" name
/* Bounds of the identity commands' own inputs: proto/identity/v1/identity.proto and the service's limits
 * (services/identity/store.h, credentials.h). */
#define CLI_TENANT_ID_MAX       63 /* [a-z0-9][a-z0-9-]{1,62} */
#define CLI_USERNAME_MIN        3
#define CLI_USERNAME_MAX        64 /* [a-z0-9._@-]{3,64} */
#define CLI_PRINCIPAL_MAX       36 /* usr_ (or svc_) and 32 hex */
#define CLI_OBJECT_ID_MAX       36 /* rel_ and 32 hex; bg_ and 32 hex */
#define CLI_DISPLAY_NAME_MAX    200
#define CLI_DISABLE_REASON_MAX  500
#define CLI_ROLE_MAX            64 /* [a-z][a-z0-9_]{1,63} */
#define CLI_ROLES_MAX           64
#define CLI_PERMISSION_MAX      128
#define CLI_PASSWORD_MIN        12 /* the service's policy for a new password */
#define CLI_PASSWORD_MAX        256
#define CLI_PASSWORD_READ       1024 /* a longer first line is refused, never cut */
#define CLI_TOTP_MIN            6
#define CLI_TOTP_MAX            8
#define CLI_RECOVERY_MAX        64
#define CLI_BREAK_GLASS_MIN_LEN 20
#define CLI_BREAK_GLASS_MAX_LEN 1000
#define CLI_BREAK_GLASS_MAX_MIN 240
#define CLI_SESSION_ID_MAX      64
#define CLI_REFRESH_SECRET_MAX  256
#define CLI_SESSION_FILE_MAX    1024

static const cli_enum cli_enum_relationship = {&alma__identity__v1__relationship_kind__descriptor,
                                               "RELATIONSHIP_KIND_"};

/* ---- secrets from files and the terminal */

/* The whole of a small file (a regular file, or a pipe such as <(pass show x) or /dev/stdin) into buf, at
 * most cap - 1 bytes, NUL-terminated. Messages name the option (`what`) and the file, never the content. */
static bool cli_read_small(const char *what, const char *path, char *buf, size_t cap, size_t *ret_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int err = errno;
        fprintf(stderr, CLI_PROGRAM ": %s: cannot read ", what);
        cli_put_safe(stderr, path);
        fprintf(stderr, ": %s\n", strerror(err));
        return false;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    bool ok = !ferror(f) && (n < cap - 1 || fgetc(f) == EOF);
    fclose(f);
    if (!ok) {
        explicit_bzero(buf, cap);
        fprintf(stderr, CLI_PROGRAM ": %s: ", what);
        cli_put_safe(stderr, path);
        fprintf(stderr, " is unreadable or larger than %zu bytes\n", cap - 1);
        return false;
    }
    buf[n] = '\0';
    *ret_len = n;
    return true;
}

/* Cut buf[0, n) to its first line (without "\n" or "\r\n"). False when anything but line ends follows that
 * line, or the text holds a NUL. */
static bool cli_first_line(char *buf, size_t n, size_t *ret_len)
{
    if (memchr(buf, '\0', n))
        return false;
    size_t len = strcspn(buf, "\n");
    for (size_t i = len; i < n; i++)
        if (buf[i] != '\n' && buf[i] != '\r')
            return false;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    *ret_len = len;
    return true;
}

static bool cli_is_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = base_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (k == 0 || cp == 0)
            return false;
        i += k;
    }
    return true;
}

/* The terminal's settings while a password is typed without echo, restored by a stop signal too. */
static struct termios cli_saved_tty;
static volatile sig_atomic_t cli_tty_quiet;

static void cli_restore_tty(int sig)
{
    if (cli_tty_quiet)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &cli_saved_tty);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* One line from standard input; prompted for and not echoed when it is a terminal. */
static bool cli_read_stdin_line(const char *prompt, char *buf, size_t cap)
{
    bool tty = isatty(STDIN_FILENO) == 1;
    static const int stop[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction saved[BASE_ARRAY_LEN(stop)];
    bool installed[BASE_ARRAY_LEN(stop)] = {false};
    if (tty && tcgetattr(STDIN_FILENO, &cli_saved_tty) == 0) {
        /* A stop signal while echo is off restores the terminal first (unless the signal is ignored). */
        for (size_t i = 0; i < BASE_ARRAY_LEN(stop); i++) {
            struct sigaction sa = {.sa_handler = cli_restore_tty};
            sigemptyset(&sa.sa_mask);
            installed[i] = sigaction(stop[i], NULL, &saved[i]) == 0 && saved[i].sa_handler != SIG_IGN &&
                           sigaction(stop[i], &sa, NULL) == 0;
        }
        struct termios quiet = cli_saved_tty;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        cli_tty_quiet = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
    }
    if (tty) {
        fprintf(stderr, CLI_PROGRAM ": %s: ", prompt);
        fflush(stderr);
    }
    bool ok = fgets(buf, (int)cap, stdin) != NULL;
    if (cli_tty_quiet) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &cli_saved_tty);
        cli_tty_quiet = 0;
        fputc('\n', stderr);
    }
    for (size_t i = 0; i < BASE_ARRAY_LEN(stop); i++)
        if (installed[i])
            sigaction(stop[i], &saved[i], NULL);
    return ok;
}

/* A password into buf[CLI_PASSWORD_READ]: the one line of --password-file, else one line of standard input.
 * Valid UTF-8 of min to CLI_PASSWORD_MAX bytes. The caller wipes buf. */
static int cli_read_password(const cli_args *a, const char *path, size_t min, char *buf)
{
    char what[96];
    size_t n = 0;
    snprintf(what, sizeof what, "%s: --password-file", a->command);
    if (path) {
        if (!cli_read_small(what, path, buf, CLI_PASSWORD_READ, &n))
            return CLI_EXIT_USAGE;
        if (!cli_first_line(buf, n, &n))
            return cli_usage_error("%s: --password-file must hold one line: the password", a->command);
    } else {
        if (!cli_read_stdin_line("password", buf, CLI_PASSWORD_READ))
            return cli_usage_error("%s: no password: give --password-file FILE or one line on standard input",
                                   a->command);
        n = strlen(buf);
        if (n == CLI_PASSWORD_READ - 1 && buf[n - 1] != '\n')
            return cli_usage_error("%s: the password line is longer than %d bytes", a->command,
                                   CLI_PASSWORD_MAX);
        if (!cli_first_line(buf, n, &n))
            return cli_usage_error("%s: the password must not contain a NUL byte", a->command);
    }
    if (n < min || n > CLI_PASSWORD_MAX)
        return cli_usage_error("%s: the password must be %zu to %d bytes", a->command, min, CLI_PASSWORD_MAX);
    if (!cli_is_utf8(buf, n))
        return cli_usage_error("%s: the password must be valid UTF-8", a->command);
    return CLI_EXIT_OK;
}

/* ---- the session file of identity-login --session-out, read by identity-refresh and identity-logout */

typedef struct cli_session {
    char id[CLI_SESSION_ID_MAX + 1];
    char secret[CLI_REFRESH_SECRET_MAX + 1];
} cli_session;

/* A refresh secret as this tool stores it: 1 to CLI_REFRESH_SECRET_MAX printable ASCII characters, no space.
 */
static bool cli_is_refresh_secret(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CLI_REFRESH_SECRET_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return false;
    return true;
}

/* "session_id=..." and "refresh_secret=..." lines ('#' starts a comment). */
static int cli_session_read(const cli_args *a, const char *path, cli_session *ret)
{
    char buf[CLI_SESSION_FILE_MAX + 1], what[96];
    size_t n = 0;
    snprintf(what, sizeof what, "%s: --session-file", a->command);
    memset(ret, 0, sizeof *ret);
    if (!cli_read_small(what, path, buf, sizeof buf, &n))
        return CLI_EXIT_USAGE;
    bool ok = !memchr(buf, '\0', n);
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); ok && line; line = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        if (strncmp(line, "session_id=", 11) == 0 && !ret->id[0] && len - 11 <= CLI_SESSION_ID_MAX)
            snprintf(ret->id, sizeof ret->id, "%s", line + 11);
        else if (strncmp(line, "refresh_secret=", 15) == 0 && !ret->secret[0] &&
                 len - 15 <= CLI_REFRESH_SECRET_MAX)
            snprintf(ret->secret, sizeof ret->secret, "%s", line + 15);
        else
            ok = false;
    }
    explicit_bzero(buf, sizeof buf);
    if (!ok || !cli_is_id(ret->id, CLI_SESSION_ID_MAX) || !cli_is_refresh_secret(ret->secret)) {
        explicit_bzero(ret, sizeof *ret);
        fprintf(stderr, CLI_PROGRAM ": %s: ", what);
        cli_put_safe(stderr, path);
        fputs(" is not a session file of identity-login --session-out (session_id= and refresh_secret= "
              "lines)\n",
              stderr);
        return CLI_EXIT_USAGE;
    }
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077)) {
        fprintf(stderr, CLI_PROGRAM ": %s: warning: ", what);
        cli_put_safe(stderr, path);
        fputs(" is readable or writable by others: its refresh secret is a credential (chmod 600)\n", stderr);
    }
    return CLI_EXIT_OK;
}

/* --session-out: opened (mode 0600, created if missing) before anything is sent, so a bad path is a usage
 * error; written only after a successful login; removed again when this run created it and the login
 * failed. An existing file is kept as it was until the new session replaces it. */
typedef struct cli_session_out {
    const char *path;
    int fd;
    bool created;
} cli_session_out;

static int cli_session_out_open(const cli_args *a, const char *path, cli_session_out *o)
{
    *o = (cli_session_out){.path = path, .fd = -1};
    if (!path)
        return CLI_EXIT_OK;
    o->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    o->created = o->fd >= 0;
    if (o->fd < 0 && errno == EEXIST)
        o->fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    const char *why = NULL;
    if (o->fd < 0)
        why = strerror(errno);
    else if (fstat(o->fd, &st) != 0 || !S_ISREG(st.st_mode))
        why = "not a regular file";
    else if (fchmod(o->fd, 0600) != 0)
        why = strerror(errno);
    if (!why)
        return CLI_EXIT_OK;
    fprintf(stderr, CLI_PROGRAM ": %s: cannot use --session-out ", a->command);
    cli_put_safe(stderr, path);
    fprintf(stderr, ": %s\n", why);
    if (o->fd >= 0)
        close(o->fd);
    if (o->created)
        unlink(path);
    o->fd = -1;
    return CLI_EXIT_USAGE;
}

static void cli_session_out_abandon(cli_session_out *o)
{
    if (o->fd < 0)
        return;
    close(o->fd);
    if (o->created)
        unlink(o->path);
    o->fd = -1;
}

static bool cli_session_out_write(const cli_args *a, cli_session_out *o, const char *sid, const char *secret)
{
    char text[CLI_SESSION_FILE_MAX];
    int n = snprintf(text, sizeof text,
                     "# alma-cli identity session (identity-login --session-out): a credential, keep it "
                     "private\nsession_id=%s\nrefresh_secret=%s\n",
                     sid, secret);
    bool ok = n > 0 && (size_t)n < sizeof text && ftruncate(o->fd, 0) == 0;
    for (size_t done = 0; ok && done < (size_t)n;) {
        ssize_t w = write(o->fd, text + done, (size_t)n - done);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        if (ok)
            done += (size_t)w;
    }
    int err = errno;
    explicit_bzero(text, sizeof text);
    if (close(o->fd) != 0)
        ok = false;
    o->fd = -1;
    if (!ok) {
        fprintf(stderr, CLI_PROGRAM ": %s: cannot write --session-out ", a->command);
        cli_put_safe(stderr, o->path);
        fprintf(stderr, ": %s\n", strerror(err));
        if (o->created)
            unlink(o->path);
    }
    return ok;
}

/* ---- input checks (messages name the option and the rule, never the value) */

static bool cli_is_word_of(const char *s, size_t min, size_t max, const char *extra, bool upper)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (upper && c >= 'A' && c <= 'Z') ||
                  (c && strchr(extra, c));
        if (!ok)
            return false;
    }
    return true;
}

static int cli_check_tenant_id(const cli_args *a, const char *tenant)
{
    if (!cli_is_word_of(tenant, 2, CLI_TENANT_ID_MAX, "-", false) || tenant[0] == '-')
        return cli_usage_error("%s: --tenant must be a tenant id: [a-z0-9][a-z0-9-]{1,62}", a->command);
    return CLI_EXIT_OK;
}

static int cli_check_username(const cli_args *a, const char *username)
{
    if (!cli_is_word_of(username, CLI_USERNAME_MIN, CLI_USERNAME_MAX, "._@-", false))
        return cli_usage_error("%s: --username must be %d to %d of [a-z0-9._@-]", a->command,
                               CLI_USERNAME_MIN, CLI_USERNAME_MAX);
    return CLI_EXIT_OK;
}

static int cli_check_principal(const cli_args *a, const char *option, const char *principal)
{
    if (!cli_is_word_of(principal, 1, CLI_PRINCIPAL_MAX, "_", false))
        return cli_usage_error("%s: --%s must be a principal id such as usr_ and 32 hex digits (1 to %d of "
                               "[a-z0-9_])",
                               a->command, option, CLI_PRINCIPAL_MAX);
    return CLI_EXIT_OK;
}

static int cli_check_role(const cli_args *a, const char *role)
{
    if (!cli_is_word_of(role, 2, CLI_ROLE_MAX, "_", false) || !(role[0] >= 'a' && role[0] <= 'z'))
        return cli_usage_error("%s: --role must be a role id: [a-z][a-z0-9_]{1,63}, e.g. pcp_clinician",
                               a->command);
    return CLI_EXIT_OK;
}

static int cli_check_text(const cli_args *a, const char *option, const char *text, size_t min, size_t max)
{
    size_t n = strlen(text);
    if (n < min || n > max)
        return cli_usage_error("%s: --%s must be %zu to %zu bytes", a->command, option, min, max);
    return CLI_EXIT_OK;
}

static int cli_check_totp(const cli_args *a, const char *option, const char *code)
{
    size_t n = strlen(code);
    if (n < CLI_TOTP_MIN || n > CLI_TOTP_MAX || strspn(code, "0123456789") != n)
        return cli_usage_error("%s: --%s must be the %d digits the authenticator shows", a->command, option,
                               CLI_TOTP_MIN);
    return CLI_EXIT_OK;
}

/* ---- calls and output */

/* A failed identity call: the status, and for a refused or missing token what to do about it. */
static int cli_identity_error(const cli_args *a, const rpc_status *st, bool needs_token)
{
    int rc = cli_rpc_error(st);
    if (st->code == RPC_UNAUTHENTICATED && needs_token && !cli_bearer && !cli_authorization[0])
        fprintf(stderr,
                CLI_PROGRAM ": %s: this call needs an access token: --token-file F or ALMA_CLI_TOKEN "
                            "(identity-login prints one)\n",
                a->command);
    else if (st->code == RPC_UNAUTHENTICATED && needs_token)
        fprintf(stderr,
                CLI_PROGRAM
                ": %s: the access token was refused: tokens live minutes (identity-refresh "
                "--session-file F makes a new one) and die at logout and when the user's roles or "
                "state change\n",
                a->command);
    return rc;
}

/* Connect, make one call, print its failure. CLI_EXIT_OK and *resp (protobuf_c_message_free_unpacked), or
 * the exit status. The calls that need no token (Login, Refresh, GetVerificationKeys) are sent without one,
 * so a stale or missing --token-file does not stand in the way of getting a new token. */
static int cli_identity_call(const cli_args *a, const char *method, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *desc, bool needs_token,
                             ProtobufCMessage **resp)
{
    cli_call c;
    int rc = cli_connect_as(&c, needs_token);
    if (rc)
        return rc;
    rpc_status st;
    rpc_code code = rpc_call_unary(c.ch, method, req, desc, &c.opts, resp, &st);
    cli_disconnect(&c);
    if (code != RPC_OK)
        return cli_identity_error(a, &st, needs_token);
    return CLI_EXIT_OK;
}

static void cli_print_line(const char *name, const char *value)
{
    fputs(name, stdout);
    fputs(": ", stdout);
    cli_put_field(stdout, value);
    fputc('\n', stdout);
}

static void cli_print_time_line(const char *name, const Google__Protobuf__Timestamp *t)
{
    char buf[CLI_TIME_LEN];
    printf("%s: %s\n", name, cli_format_time(t, buf));
}

static void cli_print_user(const Alma__Identity__V1__User *u)
{
    cli_print_line("principal_id", u->principal_id);
    cli_print_line("tenant_id", u->tenant_id);
    cli_print_line("username", u->username);
    cli_print_line("display_name", u->display_name);
    printf("state: %s\n", u->state == ALMA__IDENTITY__V1__USER_STATE__USER_STATE_ACTIVE     ? "active"
                          : u->state == ALMA__IDENTITY__V1__USER_STATE__USER_STATE_DISABLED ? "disabled"
                                                                                            : "unspecified");
    fputs("roles: ", stdout);
    for (size_t i = 0; i < u->n_roles; i++) {
        if (i)
            fputc(',', stdout);
        cli_put_safe(stdout, u->roles[i]);
    }
    fputs(u->n_roles ? "\n" : "-\n", stdout);
    printf("totp_enrolled: %s\nmfa_required: %s\n", u->totp_enrolled ? "yes" : "no",
           u->mfa_required ? "yes" : "no");
    cli_print_time_line("create_time", u->create_time);
}

/* The User response of a call as lines; the exit status. */
static int cli_user_call(const cli_args *a, const char *method, const ProtobufCMessage *req)
{
    ProtobufCMessage *resp = NULL;
    int rc = cli_identity_call(a, method, req, &alma__identity__v1__user__descriptor, true, &resp);
    if (rc)
        return rc;
    cli_print_user((const Alma__Identity__V1__User *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

static void cli_print_relationship(const Alma__Identity__V1__CareRelationship *r)
{
    char kind[CLI_ENUM_WORD_MAX + 1];
    cli_print_line("relationship_id", r->relationship_id);
    cli_print_line("tenant_id", r->tenant_id);
    cli_print_line("clinician_id", r->clinician_id);
    cli_print_line("patient_ref", r->patient_ref);
    printf("kind: %s\n", cli_enum_name(&cli_enum_relationship, (int)r->kind, kind, sizeof kind));
    cli_print_time_line("start_time", r->start_time);
    if (r->end_time)
        cli_print_time_line("end_time", r->end_time);
    else
        fputs("end_time: - (open-ended)\n", stdout);
}

/* Access tokens go to standard output alone (TOKEN=$(alma-cli identity-login ...)); what else the response
 * says goes to standard error. False when the server sent something that is not a token. */
static bool cli_print_token(const cli_args *a, const Alma__Identity__V1__LoginResponse *l)
{
    if (!l->access_token || !cli_is_token(l->access_token)) {
        fprintf(stderr, CLI_PROGRAM ": %s: the server sent a malformed access token\n", a->command);
        return false;
    }
    printf("%s\n", l->access_token);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, CLI_PROGRAM ": %s: cannot write the access token to standard output: %s\n",
                a->command, strerror(errno));
        return false;
    }
    char t1[CLI_TIME_LEN], t2[CLI_TIME_LEN];
    fprintf(stderr, CLI_PROGRAM ": %s: session ", a->command);
    cli_put_field(stderr, l->session_id);
    fprintf(stderr, "; access token valid until %s; the session ends at %s at the latest\n",
            cli_format_time(l->access_token_expire_time, t1), cli_format_time(l->session_expire_time, t2));
    if (l->mfa_enrollment_required)
        fprintf(stderr,
                CLI_PROGRAM ": %s: MFA is required but not enrolled: this token may only call "
                            "identity-enroll-totp and identity-confirm-totp; then log in again with --totp\n",
                a->command);
    return true;
}

static void cli_wipe_login(Alma__Identity__V1__LoginResponse *l)
{
    if (l->access_token)
        explicit_bzero(l->access_token, strlen(l->access_token));
    if (l->refresh_secret)
        explicit_bzero(l->refresh_secret, strlen(l->refresh_secret));
}

/* Best effort: end a session just made whose refresh secret could not be saved. */
static void cli_logout_token(const char *token)
{
    size_t n = strlen(token) + sizeof "Bearer ";
    char *bearer = malloc(n);
    cli_call c;
    if (!bearer)
        return;
    snprintf(bearer, n, "Bearer %s", token);
    if (cli_connect_as(&c, false) == CLI_EXIT_OK) {
        c.opts.authorization = bearer;
        Alma__Identity__V1__LogoutRequest req = ALMA__IDENTITY__V1__LOGOUT_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        rpc_status st;
        if (rpc_call_unary(c.ch, IDENTITY_RPC("Logout"), &req.base,
                           &alma__identity__v1__logout_response__descriptor, &c.opts, &resp, &st) == RPC_OK) {
            fputs(CLI_PROGRAM ": the new session was ended again (logout)\n", stderr);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        cli_disconnect(&c);
    }
    explicit_bzero(bearer, n);
    free(bearer);
}

/* ---- identity-login, identity-refresh, identity-logout */

static int cli_cmd_identity_login(cli_args *a)
{
    const char *tenant = NULL, *username = NULL, *password_file = NULL, *totp = NULL, *recovery = NULL,
               *session_out = NULL;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "username", .text = &username, .max = CLI_USERNAME_MAX},
        {.name = "password-file", .text = &password_file, .max = CLI_PATH_MAX, .path = true},
        {.name = "totp", .text = &totp, .max = CLI_TOTP_MAX},
        {.name = "recovery-code", .text = &recovery, .max = CLI_RECOVERY_MAX},
        {.name = "session-out", .text = &session_out, .max = CLI_PATH_MAX, .path = true},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!tenant || !username)
        return cli_usage_error("%s: --tenant and --username are required (see %s %s --help)", a->command,
                               CLI_PROGRAM, a->command);
    if ((rc = cli_check_tenant_id(a, tenant)) || (rc = cli_check_username(a, username)))
        return rc;
    if (totp && recovery)
        return cli_usage_error("%s: give --totp or --recovery-code, not both", a->command);
    if (totp && (rc = cli_check_totp(a, "totp", totp)))
        return rc;
    if (recovery && !cli_is_word_of(recovery, 1, CLI_RECOVERY_MAX, "- ", true))
        return cli_usage_error("%s: --recovery-code must be one of the codes as printed (letters, digits and "
                               "'-')",
                               a->command);
    cli_session_out out;
    if ((rc = cli_session_out_open(a, session_out, &out)))
        return rc;
    char password[CLI_PASSWORD_READ];
    rc = cli_read_password(a, password_file, 1, password);
    if (rc) {
        explicit_bzero(password, sizeof password);
        cli_session_out_abandon(&out);
        return rc;
    }
    Alma__Identity__V1__LoginRequest req = ALMA__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.username = (char *)username;
    req.password = password;
    req.totp_code = (char *)(totp ? totp : "");
    req.recovery_code = (char *)(recovery ? recovery : "");
    ProtobufCMessage *resp = NULL;
    rc = cli_identity_call(a, IDENTITY_RPC("Login"), &req.base,
                           &alma__identity__v1__login_response__descriptor, false, &resp);
    explicit_bzero(password, sizeof password);
    if (rc) {
        cli_session_out_abandon(&out);
        return rc;
    }
    Alma__Identity__V1__LoginResponse *l = (Alma__Identity__V1__LoginResponse *)resp;
    if (session_out) {
        bool ok = cli_is_id(l->session_id, CLI_SESSION_ID_MAX) && cli_is_refresh_secret(l->refresh_secret);
        if (!ok)
            fprintf(stderr, CLI_PROGRAM ": %s: the server sent a malformed session id or refresh secret\n",
                    a->command);
        if (ok)
            ok = cli_session_out_write(a, &out, l->session_id, l->refresh_secret);
        else
            cli_session_out_abandon(&out);
        if (!ok) {
            if (cli_is_token(l->access_token))
                cli_logout_token(l->access_token);
            cli_wipe_login(l);
            protobuf_c_message_free_unpacked(resp, NULL);
            return CLI_EXIT_FAIL;
        }
    }
    rc = cli_print_token(a, l) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    if (rc != CLI_EXIT_OK && !session_out && cli_is_token(l->access_token))
        cli_logout_token(l->access_token); /* nobody has its token: do not leave the session open */
    if (rc == CLI_EXIT_OK && session_out) {
        fprintf(stderr, CLI_PROGRAM ": %s: session and refresh secret saved in ", a->command);
        cli_put_safe(stderr, session_out);
        fputs(" (mode 600): identity-refresh --session-file makes new tokens\n", stderr);
    }
    cli_wipe_login(l);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cli_cmd_identity_refresh(cli_args *a)
{
    const char *session_file = NULL;
    const cli_option opts[] = {
        {.name = "session-file", .text = &session_file, .max = CLI_PATH_MAX, .path = true},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!session_file)
        return cli_usage_error("%s: --session-file F is required (written by identity-login --session-out F)",
                               a->command);
    cli_session s;
    if ((rc = cli_session_read(a, session_file, &s)))
        return rc;
    Alma__Identity__V1__RefreshRequest req = ALMA__IDENTITY__V1__REFRESH_REQUEST__INIT;
    req.session_id = s.id;
    req.refresh_secret = s.secret;
    ProtobufCMessage *resp = NULL;
    rc = cli_identity_call(a, IDENTITY_RPC("Refresh"), &req.base,
                           &alma__identity__v1__login_response__descriptor, false, &resp);
    explicit_bzero(&s, sizeof s);
    if (rc) {
        fprintf(stderr,
                CLI_PROGRAM ": %s: an ended session (logout, idle or absolute timeout) needs "
                            "identity-login again\n",
                a->command);
        return rc;
    }
    Alma__Identity__V1__LoginResponse *l = (Alma__Identity__V1__LoginResponse *)resp;
    rc = cli_print_token(a, l) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    cli_wipe_login(l);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cli_cmd_identity_logout(cli_args *a)
{
    const char *session = NULL, *session_file = NULL;
    const cli_option opts[] = {
        {.name = "session", .text = &session, .max = CLI_SESSION_ID_MAX},
        {.name = "session-file", .text = &session_file, .max = CLI_PATH_MAX, .path = true},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (session && session_file)
        return cli_usage_error("%s: give --session or --session-file, not both", a->command);
    if (session && !cli_is_id(session, CLI_SESSION_ID_MAX))
        return cli_usage_error("%s: --session must be a session id (ses_ and 32 hex digits)", a->command);
    cli_session s = {{0}, {0}};
    if (session_file && (rc = cli_session_read(a, session_file, &s)))
        return rc;
    if (session)
        snprintf(s.id, sizeof s.id, "%s", session);
    explicit_bzero(s.secret, sizeof s.secret);
    Alma__Identity__V1__LogoutRequest req = ALMA__IDENTITY__V1__LOGOUT_REQUEST__INIT;
    req.session_id = s.id;
    ProtobufCMessage *resp = NULL;
    rc = cli_identity_call(a, IDENTITY_RPC("Logout"), &req.base,
                           &alma__identity__v1__logout_response__descriptor, true, &resp);
    if (rc)
        return rc;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (s.id[0])
        printf("logged out: session %s ended\n", s.id);
    else
        printf("logged out: the session of the token ended\n");
    return CLI_EXIT_OK;
}

/* ---- users and roles */

static int cli_cmd_identity_create_user(cli_args *a)
{
    const char *username = NULL, *display_name = NULL, *password_file = NULL;
    const char *role_items[CLI_ROLES_MAX];
    cli_list roles = {role_items, 0, CLI_ROLES_MAX};
    const cli_option opts[] = {
        {.name = "username", .text = &username, .max = CLI_USERNAME_MAX},
        {.name = "display-name", .text = &display_name, .max = CLI_DISPLAY_NAME_MAX},
        {.name = "password-file", .text = &password_file, .max = CLI_PATH_MAX, .path = true},
        {.name = "role", .list = &roles, .max = CLI_ROLE_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!username || !display_name)
        return cli_usage_error("%s: --username and --display-name are required (see %s %s --help)",
                               a->command, CLI_PROGRAM, a->command);
    if ((rc = cli_check_username(a, username)) ||
        (rc = cli_check_text(a, "display-name", display_name, 1, CLI_DISPLAY_NAME_MAX)))
        return rc;
    for (size_t i = 0; i < roles.count; i++)
        if ((rc = cli_check_role(a, role_items[i])))
            return rc;
    char password[CLI_PASSWORD_READ];
    rc = cli_read_password(a, password_file, CLI_PASSWORD_MIN, password);
    if (rc == CLI_EXIT_OK) {
        Alma__Identity__V1__CreateUserRequest req = ALMA__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
        req.username = (char *)username;
        req.display_name = (char *)display_name;
        req.initial_password = password;
        req.roles = (char **)role_items;
        req.n_roles = roles.count;
        rc = cli_user_call(a, IDENTITY_RPC("CreateUser"), &req.base);
    }
    explicit_bzero(password, sizeof password);
    return rc;
}

static int cli_cmd_identity_get_user(cli_args *a)
{
    const char *principal = NULL;
    const cli_option opts[] = {{.name = "principal", .text = &principal, .max = CLI_PRINCIPAL_MAX}};
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (principal && (rc = cli_check_principal(a, "principal", principal)))
        return rc;
    Alma__Identity__V1__GetUserRequest req = ALMA__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.principal_id = (char *)(principal ? principal : "");
    return cli_user_call(a, IDENTITY_RPC("GetUser"), &req.base);
}

static int cli_cmd_identity_disable_user(cli_args *a)
{
    const char *principal = NULL, *reason = NULL;
    const cli_option opts[] = {
        {.name = "principal", .text = &principal, .max = CLI_PRINCIPAL_MAX},
        {.name = "reason", .text = &reason, .max = CLI_DISABLE_REASON_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!principal || !reason)
        return cli_usage_error("%s: --principal and --reason are required (see %s %s --help)", a->command,
                               CLI_PROGRAM, a->command);
    if ((rc = cli_check_principal(a, "principal", principal)) ||
        (rc = cli_check_text(a, "reason", reason, 1, CLI_DISABLE_REASON_MAX)))
        return rc;
    Alma__Identity__V1__DisableUserRequest req = ALMA__IDENTITY__V1__DISABLE_USER_REQUEST__INIT;
    req.principal_id = (char *)principal;
    req.reason = (char *)reason;
    return cli_user_call(a, IDENTITY_RPC("DisableUser"), &req.base);
}

static int cli_grant_or_revoke(cli_args *a, bool grant)
{
    const char *principal = NULL, *role = NULL;
    const cli_option opts[] = {
        {.name = "principal", .text = &principal, .max = CLI_PRINCIPAL_MAX},
        {.name = "role", .text = &role, .max = CLI_ROLE_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!principal || !role)
        return cli_usage_error("%s: --principal and --role are required (see %s %s --help)", a->command,
                               CLI_PROGRAM, a->command);
    if ((rc = cli_check_principal(a, "principal", principal)) || (rc = cli_check_role(a, role)))
        return rc;
    if (grant) {
        Alma__Identity__V1__GrantRoleRequest req = ALMA__IDENTITY__V1__GRANT_ROLE_REQUEST__INIT;
        req.principal_id = (char *)principal;
        req.role_id = (char *)role;
        return cli_user_call(a, IDENTITY_RPC("GrantRole"), &req.base);
    }
    Alma__Identity__V1__RevokeRoleRequest req = ALMA__IDENTITY__V1__REVOKE_ROLE_REQUEST__INIT;
    req.principal_id = (char *)principal;
    req.role_id = (char *)role;
    return cli_user_call(a, IDENTITY_RPC("RevokeRole"), &req.base);
}

static int cli_cmd_identity_grant_role(cli_args *a)
{
    return cli_grant_or_revoke(a, true);
}

static int cli_cmd_identity_revoke_role(cli_args *a)
{
    return cli_grant_or_revoke(a, false);
}

static int cli_cmd_identity_list_roles(cli_args *a)
{
    int rc = cli_parse_command_args(a, NULL, 0, 0, 0);
    if (rc)
        return rc;
    Alma__Identity__V1__ListRolesRequest req = ALMA__IDENTITY__V1__LIST_ROLES_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("ListRoles"), &req.base,
                                &alma__identity__v1__list_roles_response__descriptor, true, &resp)))
        return rc;
    const Alma__Identity__V1__ListRolesResponse *l = (const Alma__Identity__V1__ListRolesResponse *)resp;
    for (size_t i = 0; i < l->n_roles; i++) {
        const Alma__Identity__V1__Role *r = l->roles[i];
        if (!r)
            continue;
        cli_put_field(stdout, r->role_id);
        printf("\tv%" PRId64 "\t%s\t%s\t", r->version, r->built_in ? "built-in" : "tenant",
               r->requires_mfa ? "mfa" : "-");
        for (size_t k = 0; k < r->n_permissions; k++) {
            if (k)
                fputc(',', stdout);
            cli_put_safe(stdout, r->permissions[k]);
        }
        fputs(r->n_permissions ? "\t" : "-\t", stdout);
        cli_put_field(stdout, r->display_name);
        fputc('\n', stdout);
    }
    fflush(stdout);
    fprintf(stderr, CLI_PROGRAM ": %s: %zu role%s\n", a->command, l->n_roles, l->n_roles == 1 ? "" : "s");
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

/* ---- TOTP enrolment */

static int cli_cmd_identity_enroll_totp(cli_args *a)
{
    int rc = cli_parse_command_args(a, NULL, 0, 0, 0);
    if (rc)
        return rc;
    Alma__Identity__V1__EnrollTotpRequest req = ALMA__IDENTITY__V1__ENROLL_TOTP_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("EnrollTotp"), &req.base,
                                &alma__identity__v1__enroll_totp_response__descriptor, true, &resp)))
        return rc;
    Alma__Identity__V1__EnrollTotpResponse *e = (Alma__Identity__V1__EnrollTotpResponse *)resp;
    cli_put_field(stdout, e->otpauth_uri);
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr,
            CLI_PROGRAM ": %s: scan or paste the URI into an authenticator (it holds the TOTP secret: do not "
                        "keep it), then: %s identity-confirm-totp --code CODE\n",
            a->command, CLI_PROGRAM);
    if (e->otpauth_uri)
        explicit_bzero(e->otpauth_uri, strlen(e->otpauth_uri));
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

static int cli_cmd_identity_confirm_totp(cli_args *a)
{
    const char *code = NULL;
    const cli_option opts[] = {{.name = "code", .text = &code, .max = CLI_TOTP_MAX}};
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!code)
        return cli_usage_error("%s: --code is required: the code the authenticator shows now", a->command);
    if ((rc = cli_check_totp(a, "code", code)))
        return rc;
    Alma__Identity__V1__ConfirmTotpRequest req = ALMA__IDENTITY__V1__CONFIRM_TOTP_REQUEST__INIT;
    req.totp_code = (char *)code;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("ConfirmTotp"), &req.base,
                                &alma__identity__v1__confirm_totp_response__descriptor, true, &resp)))
        return rc;
    Alma__Identity__V1__ConfirmTotpResponse *c = (Alma__Identity__V1__ConfirmTotpResponse *)resp;
    for (size_t i = 0; i < c->n_recovery_codes; i++) {
        cli_put_field(stdout, c->recovery_codes[i]);
        fputc('\n', stdout);
        if (c->recovery_codes[i])
            explicit_bzero(c->recovery_codes[i], strlen(c->recovery_codes[i]));
    }
    fflush(stdout);
    fprintf(stderr,
            CLI_PROGRAM ": %s: TOTP enrolled. The %zu recovery codes above are shown once, each works once: "
                        "store them offline. Log in again with --totp for a token with MFA.\n",
            a->command, c->n_recovery_codes);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

/* ---- care relationships, break-glass, Check, keys */

static int cli_cmd_identity_relationship_create(cli_args *a)
{
    const char *clinician = NULL, *patient = NULL, *kind = NULL, *start = NULL, *end = NULL;
    const cli_option opts[] = {
        {.name = "clinician", .text = &clinician, .max = CLI_PRINCIPAL_MAX},
        {.name = "patient", .text = &patient, .max = 35},
        {.name = "kind", .text = &kind, .max = CLI_ENUM_WORD_MAX},
        {.name = "start", .text = &start, .max = CLI_TIME_WORD_MAX},
        {.name = "end", .text = &end, .max = CLI_TIME_WORD_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!clinician || !patient || !kind)
        return cli_usage_error("%s: --clinician, --patient and --kind are required (see %s %s --help)",
                               a->command, CLI_PROGRAM, a->command);
    if ((rc = cli_check_principal(a, "clinician", clinician)) || (rc = cli_require_patient(a, patient)))
        return rc;
    int k = 0;
    if ((rc = cli_enum_option(a, "kind", &cli_enum_relationship, kind, &k)))
        return rc;
    Alma__Identity__V1__CareRelationship rel = ALMA__IDENTITY__V1__CARE_RELATIONSHIP__INIT;
    Google__Protobuf__Timestamp ts_start, ts_end;
    if (start) {
        if ((rc = cli_time_option(a, "start", start, &ts_start)))
            return rc;
        rel.start_time = &ts_start;
    }
    if (end) {
        if ((rc = cli_time_option(a, "end", end, &ts_end)))
            return rc;
        rel.end_time = &ts_end;
    }
    if (start && end &&
        (ts_start.seconds > ts_end.seconds ||
         (ts_start.seconds == ts_end.seconds && ts_start.nanos >= ts_end.nanos)))
        return cli_usage_error("%s: --start must be before --end", a->command);
    rel.clinician_id = (char *)clinician;
    rel.patient_ref = (char *)patient;
    rel.kind = (Alma__Identity__V1__RelationshipKind)k;
    Alma__Identity__V1__CreateCareRelationshipRequest req =
        ALMA__IDENTITY__V1__CREATE_CARE_RELATIONSHIP_REQUEST__INIT;
    req.relationship = &rel;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("CreateCareRelationship"), &req.base,
                                &alma__identity__v1__care_relationship__descriptor, true, &resp)))
        return rc;
    cli_print_relationship((const Alma__Identity__V1__CareRelationship *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

static int cli_cmd_identity_relationship_end(cli_args *a)
{
    const char *id = NULL, *end = NULL;
    const cli_option opts[] = {
        {.name = "id", .text = &id, .max = CLI_OBJECT_ID_MAX},
        {.name = "end", .text = &end, .max = CLI_TIME_WORD_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!id)
        return cli_usage_error("%s: --id is required: the relationship id (rel_...)", a->command);
    if (!cli_is_word_of(id, 1, CLI_OBJECT_ID_MAX, "_", false))
        return cli_usage_error("%s: --id must be a relationship id: rel_ and 32 hex digits", a->command);
    Alma__Identity__V1__EndCareRelationshipRequest req =
        ALMA__IDENTITY__V1__END_CARE_RELATIONSHIP_REQUEST__INIT;
    Google__Protobuf__Timestamp ts;
    req.relationship_id = (char *)id;
    if (end) {
        if ((rc = cli_time_option(a, "end", end, &ts)))
            return rc;
        req.end_time = &ts;
    }
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("EndCareRelationship"), &req.base,
                                &alma__identity__v1__care_relationship__descriptor, true, &resp)))
        return rc;
    cli_print_relationship((const Alma__Identity__V1__CareRelationship *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

static int cli_cmd_identity_break_glass(cli_args *a)
{
    const char *patient = NULL, *reason = NULL;
    uint32_t minutes = 0;
    const cli_option opts[] = {
        {.name = "patient", .text = &patient, .max = 35},
        {.name = "reason", .text = &reason, .max = CLI_BREAK_GLASS_MAX_LEN},
        {.name = "minutes", .number = &minutes, .max = CLI_BREAK_GLASS_MAX_MIN},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!patient || !reason || minutes == 0)
        return cli_usage_error(
            "%s: --patient, --reason and --minutes (1 to %d) are required (see %s %s --help)", a->command,
            CLI_BREAK_GLASS_MAX_MIN, CLI_PROGRAM, a->command);
    if ((rc = cli_require_patient(a, patient)) ||
        (rc = cli_check_text(a, "reason", reason, CLI_BREAK_GLASS_MIN_LEN, CLI_BREAK_GLASS_MAX_LEN)))
        return rc;
    Alma__Identity__V1__BreakGlassRequest req = ALMA__IDENTITY__V1__BREAK_GLASS_REQUEST__INIT;
    req.patient_ref = (char *)patient;
    req.reason = (char *)reason;
    req.duration_minutes = (int32_t)minutes;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("BreakGlass"), &req.base,
                                &alma__identity__v1__break_glass_grant__descriptor, true, &resp)))
        return rc;
    const Alma__Identity__V1__BreakGlassGrant *g = (const Alma__Identity__V1__BreakGlassGrant *)resp;
    cli_print_line("grant_id", g->grant_id);
    cli_print_line("tenant_id", g->tenant_id);
    cli_print_line("clinician_id", g->clinician_id);
    cli_print_line("patient_ref", g->patient_ref);
    cli_print_time_line("start_time", g->start_time);
    cli_print_time_line("end_time", g->end_time);
    fprintf(stderr,
            CLI_PROGRAM ": %s: break-glass access is audited at high severity and reviewed by the privacy "
                        "officer\n",
            a->command);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

static int cli_cmd_identity_check(cli_args *a)
{
    const char *principal = NULL, *permission = NULL, *patient = NULL;
    const cli_option opts[] = {
        {.name = "principal", .text = &principal, .max = CLI_PRINCIPAL_MAX},
        {.name = "permission", .text = &permission, .max = CLI_PERMISSION_MAX},
        {.name = "patient", .text = &patient, .max = 35},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!permission)
        return cli_usage_error("%s: --permission is required, e.g. referral.review (see %s %s --help)",
                               a->command, CLI_PROGRAM, a->command);
    if (principal && (rc = cli_check_principal(a, "principal", principal)))
        return rc;
    if (!cli_is_word_of(permission, 1, CLI_PERMISSION_MAX, "._:/-", true))
        return cli_usage_error("%s: --permission must be 1 to %d of [A-Za-z0-9._:/-], e.g. phi.read.clinical",
                               a->command, CLI_PERMISSION_MAX);
    bool scoped = strncmp(permission, "phi.", 4) == 0 && strcmp(permission, "phi.break_glass") != 0;
    if (scoped && !patient)
        return cli_usage_error("%s: --patient pt_... is required for a patient-scoped permission (phi.*)",
                               a->command);
    if (patient && (rc = cli_require_patient(a, patient)))
        return rc;
    Alma__Identity__V1__CheckRequest req = ALMA__IDENTITY__V1__CHECK_REQUEST__INIT;
    req.principal_id = (char *)(principal ? principal : "");
    req.permission = (char *)permission;
    req.patient_ref = (char *)(patient ? patient : "");
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("Check"), &req.base,
                                &alma__identity__v1__check_response__descriptor, true, &resp)))
        return rc;
    const Alma__Identity__V1__CheckResponse *d = (const Alma__Identity__V1__CheckResponse *)resp;
    printf("%s\n", d->allowed ? "allowed" : "denied");
    cli_print_line("decided_by", d->decided_by);
    cli_print_line("reason", d->reason);
    rc = d->allowed ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cli_cmd_identity_keys(cli_args *a)
{
    int rc = cli_parse_command_args(a, NULL, 0, 0, 0);
    if (rc)
        return rc;
    Alma__Identity__V1__GetVerificationKeysRequest req =
        ALMA__IDENTITY__V1__GET_VERIFICATION_KEYS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_identity_call(a, IDENTITY_RPC("GetVerificationKeys"), &req.base,
                                &alma__identity__v1__get_verification_keys_response__descriptor, false,
                                &resp)))
        return rc;
    const char *jwks = ((const Alma__Identity__V1__GetVerificationKeysResponse *)resp)->jwks_json;
    /* Indented when it parses (it should), else as served. */
    json_t *doc = jwks ? json_loads(jwks, JSON_REJECT_DUPLICATES, NULL) : NULL;
    char *pretty = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    cli_put_note(stdout, pretty ? pretty : jwks && jwks[0] ? jwks : "-");
    fputc('\n', stdout);
    free(pretty);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

/* ---- help of the identity commands */

static void cli_help_identity_token(FILE *out)
{
    fputs("Needs an access token: --token-file F, or ALMA_CLI_TOKEN (identity-login prints one).\n", out);
}

static void cli_help_identity_login(FILE *out)
{
    fprintf(
        out,
        "  --tenant T                 the tenant id, required\n"
        "  --username U               required\n"
        "  --password-file F          a file holding the password on one line (default: one line from\n"
        "                             standard input, not echoed on a terminal); at most %d bytes\n"
        "  --totp CODE                the authenticator's current code (users whose role or tenant needs "
        "MFA)\n"
        "  --recovery-code C          a recovery code instead (each works once)\n"
        "  --session-out F            write the session id and its refresh secret to F (mode 600), for\n"
        "                             identity-refresh and identity-logout --session-file F\n"
        "Prints the access token alone on standard output: TOKEN=$(%s identity-login ...). The session,\n"
        "the expiry times and whether MFA enrolment is needed go to standard error. Every failure is the\n"
        "service's one \"invalid credentials\" (RESOURCE_EXHAUSTED while locked out).\n",
        CLI_PASSWORD_MAX, CLI_PROGRAM);
}

static void cli_help_identity_refresh(FILE *out)
{
    fputs(
        "  --session-file F           the file identity-login --session-out F wrote, required\n"
        "Prints a new access token alone on standard output (the session's idle timeout restarts; the token\n"
        "carries the user's rights as they are now).\n",
        out);
}

static void cli_help_identity_logout(FILE *out)
{
    fputs("  --session ID               end this session of the caller (default: the token's own)\n"
          "  --session-file F           end the session of this file (identity-login --session-out)\n"
          "The session's tokens stop working in every service within a second.\n",
          out);
    cli_help_identity_token(out);
}

static void cli_help_identity_create_user(FILE *out)
{
    fprintf(
        out,
        "  --username U               [a-z0-9._@-]{3,64}, unique in the tenant\n"
        "  --display-name N           1 to %d bytes\n"
        "  --password-file F          the initial password on one line (default: standard input); %d to %d\n"
        "                             bytes, not a repeated character, not the username\n"
        "  --role R                   repeatable (at most %d): a role id such as pcp_clinician\n"
        "Needs identity.users.manage, and every permission of each role (no escalation by grant).\n",
        CLI_DISPLAY_NAME_MAX, CLI_PASSWORD_MIN, CLI_PASSWORD_MAX, CLI_ROLES_MAX);
    cli_help_identity_token(out);
}

static void cli_help_identity_user(FILE *out)
{
    fputs(
        "Prints principal_id, tenant_id, username, display_name, state, roles, totp_enrolled, mfa_required\n"
        "and create_time lines.\n",
        out);
    cli_help_identity_token(out);
}

static void cli_help_identity_list_roles(FILE *out)
{
    fputs(
        "One tab-separated line per role of the tenant (built-in and its own): ROLE VERSION built-in|tenant\n"
        "mfa|- PERMISSIONS DISPLAY-NAME. Needs identity.roles.read.\n",
        out);
    cli_help_identity_token(out);
}

static void cli_help_identity_totp(FILE *out)
{
    fputs(
        "identity-enroll-totp prints an otpauth:// URI (it holds the secret: scan it, do not keep it);\n"
        "identity-confirm-totp --code C with the authenticator's current code prints ten one-time recovery\n"
        "codes, shown once. An MFA-enrolment-only token (identity-login says so) may call these two.\n",
        out);
    cli_help_identity_token(out);
}

static void cli_help_identity_relationship(FILE *out)
{
    fputs("  --clinician P              the clinician's principal id (create)\n"
          "  --patient pt_<32 hex>      the pseudonymous patient reference (create)\n",
          out);
    cli_help_enum(out, "kind K", "create", &cli_enum_relationship);
    fputs("  --start TIME, --end TIME   RFC 3339 UTC; create: default now and open-ended; end: default now\n"
          "  --id rel_...               the relationship to end (end)\n"
          "Needs care.relationships.manage. Every service sees the change within a second (Redis mirror).\n",
          out);
    cli_help_identity_token(out);
}

static void cli_help_identity_break_glass(FILE *out)
{
    fprintf(
        out,
        "  --patient pt_<32 hex>      the patient, required\n"
        "  --reason TEXT              %d to %d bytes, shown to privacy officers (never in the audit log)\n"
        "  --minutes N                1 to %d\n"
        "Opens a time-limited grant for the caller (phi.break_glass), audited at high severity.\n",
        CLI_BREAK_GLASS_MIN_LEN, CLI_BREAK_GLASS_MAX_LEN, CLI_BREAK_GLASS_MAX_MIN);
    cli_help_identity_token(out);
}

static void cli_help_identity_check(FILE *out)
{
    fputs(
        "  --principal P              whose access (default: the caller; another needs identity.users.read)\n"
        "  --permission X             e.g. referral.review, phi.read.clinical\n"
        "  --patient pt_<32 hex>      required for patient-scoped permissions (phi.*)\n"
        "Prints allowed or denied, then decided_by: (role:, relationship:, break_glass:) and reason: lines.\n"
        "Exit 0 when allowed, 1 when denied. A denied PHI permission is audited.\n",
        out);
    cli_help_identity_token(out);
}

static void cli_help_identity_keys(FILE *out)
{
    fputs("Prints the JWKS (RFC 7517) of the token verification keys, the current and the previous one.\n"
          "Needs no token.\n",
          out);
}

/* ------------------------------------------------------------------ alma.vault.v1.Vault */

#define VAULT_RPC(name) "/alma.vault.v1.Vault/" name
/* Bounds of the vault commands' own inputs (the record fields' bounds are model.h's). */
#define CLI_VAULT_ID_LEN        35                  /* "pt_" or "it_" and 32 lowercase hex digits */
#define CLI_VAULT_ACCESS_ID_MAX 64                  /* ExportPatient access_request_id: [A-Za-z0-9_-] */
#define CLI_VAULT_REASON_MAX    64                  /* DestroyPatient reason_code: [a-z0-9_] */
#define CLI_VAULT_PAGE_MAX      100                 /* ListItems page_size */
#define CLI_VAULT_PHONE_MAX     16                  /* E.164: '+' and up to 15 digits */
#define CLI_VAULT_POSTAL_MAX    10                  /* "12345-6789" */
#define CLI_VAULT_NUMBER_MAX    64                  /* --value */
#define CLI_VAULT_EXPORT_MAX    ((uint64_t)1 << 30) /* a Bundle larger than 1 GiB is refused */

static const cli_enum cli_enum_sex = {&alma__vault__v1__administrative_sex__descriptor,
                                      "ADMINISTRATIVE_SEX_"};
static const cli_enum cli_enum_record_kind = {&alma__vault__v1__record_kind__descriptor, "RECORD_KIND_"};
static const cli_enum cli_enum_category = {&alma__vault__v1__category__descriptor, "CATEGORY_"};
static const cli_enum cli_enum_problem_status = {&alma__vault__v1__problem_status__descriptor,
                                                 "PROBLEM_STATUS_"};
static const cli_enum cli_enum_medication_status = {&alma__vault__v1__medication_status__descriptor,
                                                    "MEDICATION_STATUS_"};

/* ---- input checks (messages name the option and the rule, never the value: the values are PHI) */

static int cli_vault_tenant(const cli_args *a, const char *tenant)
{
    if (!tenant)
        return cli_usage_error("%s: --tenant is required (see %s %s --help)", a->command, CLI_PROGRAM,
                               a->command);
    return cli_check_tenant_id(a, tenant);
}

static int cli_vault_patient(const cli_args *a, const char *patient)
{
    if (!patient)
        return cli_usage_error("%s: --patient pt_... is required (see %s %s --help)", a->command, CLI_PROGRAM,
                               a->command);
    return cli_require_patient(a, patient);
}

static int cli_vault_purpose(const cli_args *a, const char *purpose, int *ret)
{
    if (!purpose) {
        fprintf(stderr, CLI_PROGRAM ": %s: --purpose is required, one of: ", a->command);
        cli_enum_choices(&cli_enum_purpose, stderr);
        fputc('\n', stderr);
        return CLI_EXIT_USAGE;
    }
    return cli_enum_option(a, "purpose", &cli_enum_purpose, purpose, ret);
}

/* "it_" (or "pt_") and 32 lowercase hex digits. */
static bool cli_is_vault_id(const char *s, const char *prefix)
{
    if (strlen(s) != CLI_VAULT_ID_LEN || strncmp(s, prefix, 3) != 0)
        return false;
    for (size_t i = 3; i < CLI_VAULT_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* A real calendar date "YYYY-MM-DD" (the service also bounds it by 1900-01-01 and today). */
static bool cli_is_calendar_date(const char *s)
{
    static const char shape[] = "dddd-dd-dd";
    if (strlen(s) != sizeof shape - 1)
        return false;
    for (size_t i = 0; i < sizeof shape - 1; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year = cli_digits(s, 4), mon = cli_digits(s + 5, 2), day = cli_digits(s + 8, 2);
    if (mon < 1 || mon > 12 || day < 1)
        return false;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return day <= mdays[mon - 1] + (mon == 2 && leap);
}

/* The model's field paths (model.h: "patient.demographics.birth_date", indexes dropped) as the options that
 * set them. */
static const struct {
    const char *field, *option;
} cli_vault_fields[] = {
    {"patient.demographics.family_name", "--family"},
    {"patient.demographics.given_names", "--given"},
    {"patient.demographics.birth_date", "--birth-date"},
    {"patient.demographics.sex", "--sex"},
    {"patient.contact.address.lines", "--address-line"},
    {"patient.contact.address.city", "--city"},
    {"patient.contact.address.state", "--state"},
    {"patient.contact.address.postal_code", "--postal-code"},
    {"patient.contact.phone", "--phone"},
    {"patient.contact.email", "--email"},
    {"patient.identifiers.mrn", "--mrn"},
    {"patient.coverage.payer_id", "--payer-id"},
    {"patient.coverage.plan_name", "--plan-name"},
    {"patient.coverage.member_id", "--member-id"},
    {"patient.coverage.start_date", "--coverage-start"},
    {"item.problem.code.code", "--problem"},
    {"item.problem.code.display", "--display"},
    {"item.problem.onset_date", "--onset"},
    {"item.problem.status", "--status"},
    {"item.observation.code.code", "--observation"},
    {"item.observation.code.display", "--display"},
    {"item.observation.quantity", "--value"},
    {"item.observation.unit", "--unit"},
    {"item.observation.effective_date", "--date"},
    {"item.medication.code.code", "--rxnorm"},
    {"item.medication.code.display", "--display"},
    {"item.medication.name", "--medication"},
    {"item.medication.dose", "--dose"},
    {"item.medication.start_date", "--start"},
    {"item.medication.status", "--status"},
    {"item.note.title", "--title"},
    {"item.note.text", "--note-file (its text)"},
    {"item.note.date", "--date"},
};

/* A validation message of model.h ("<field path>: <rule>", never a value) with the field spelled as the
 * option that sets it; exit status 2. */
static int cli_vault_invalid(const cli_args *a, const char *msg)
{
    const char *colon = strstr(msg, ": ");
    const char *end = colon ? colon : msg + strlen(msg);
    char path[128];
    size_t k = 0;
    for (const char *p = msg; p < end && k + 1 < sizeof path; p++) {
        const char *close = *p == '[' ? memchr(p, ']', (size_t)(end - p)) : NULL;
        if (close) {
            p = close;
            continue;
        }
        path[k++] = *p;
    }
    path[k] = '\0';
    const char *shown = path;
    for (size_t i = 0; i < BASE_ARRAY_LEN(cli_vault_fields); i++)
        if (strcmp(path, cli_vault_fields[i].field) == 0)
            shown = cli_vault_fields[i].option;
    fprintf(stderr, CLI_PROGRAM ": %s: ", a->command);
    cli_put_safe(stderr, shown);
    if (colon) {
        fputs(": ", stderr);
        cli_put_safe(stderr, colon + 2);
    }
    fputs(" (nothing was sent)\n", stderr);
    return CLI_EXIT_USAGE;
}

/* ---- calls */

/* A failed call to a service that checks user tokens (the vault, the guideline service): the status, what to
 * do about a refused token, and on PERMISSION_DENIED what the call needs (`needs`) and which certificates
 * the service takes calls from (`peers`). Those services' status messages name fields, never values. */
static int cli_token_call_error(const cli_args *a, const rpc_status *st, const char *needs, const char *peers)
{
    int rc = cli_identity_error(a, st, true);
    if (st->code == RPC_PERMISSION_DENIED)
        fprintf(stderr, CLI_PROGRAM ": %s: this call needs %s (%s)\n", a->command, needs, peers);
    return rc;
}

static int cli_token_call(const cli_args *a, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *desc, const char *needs, const char *peers,
                          ProtobufCMessage **resp)
{
    cli_call c;
    int rc = cli_connect(&c);
    if (rc)
        return rc;
    rpc_status st;
    rpc_code code = rpc_call_unary(c.ch, method, req, desc, &c.opts, resp, &st);
    cli_disconnect(&c);
    if (code != RPC_OK)
        return cli_token_call_error(a, &st, needs, peers);
    return CLI_EXIT_OK;
}

#define CLI_VAULT_PEERS                                                                                      \
    "the vault takes calls from the alma-cli, gateway, guideline, test-client and bench certificates"

static int cli_vault_call(const cli_args *a, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *desc, const char *needs, ProtobufCMessage **resp)
{
    return cli_token_call(a, method, req, desc, needs, CLI_VAULT_PEERS, resp);
}

#define CLI_NEEDS_READ                                                                                       \
    "a role whose view allows the purpose and, for patient data, a care relationship with the patient or a " \
    "break-glass grant"

/* ---- protobuf as JSON (proto3 JSON mapping, field names as in the .proto; Timestamp as RFC 3339) */

static json_t *cli_pb_json(const ProtobufCMessage *m);

static size_t cli_pb_elt_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(int64_t);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return sizeof(int32_t);
    }
}

static json_t *cli_json_double(double d)
{
    if (isfinite(d))
        return json_real(d);
    return json_string(isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
}

static json_t *cli_pb_value(const ProtobufCFieldDescriptor *f, const void *p)
{
    char buf[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer((json_int_t) * (const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, sizeof buf, "%" PRId64, *(const int64_t *)p);
        return json_string(buf);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, sizeof buf, "%" PRIu64, *(const uint64_t *)p);
        return json_string(buf);
    case PROTOBUF_C_TYPE_FLOAT:
        return cli_json_double(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return cli_json_double(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return ev ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s ? s : ""); /* NULL when not UTF-8 */
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        if (b->len == 0)
            return json_string("");
        if (b->len > ACRYPTO_MAX_INPUT)
            return NULL;
        size_t cap = acrypto_base64_encode_size(b->len), n = 0;
        char *text = malloc(cap);
        json_t *v = NULL;
        if (text && base_is_ok(acrypto_base64_encode(b->data, b->len, text, cap, &n)))
            v = json_stringn(text, n);
        if (text)
            explicit_bzero(text, cap);
        free(text);
        return v;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub ? cli_pb_json(sub) : json_null();
    }
    default:
        return NULL;
    }
}

/* Is a singular field set? proto3: a oneof member by its case, the rest by a value other than the default. */
static bool cli_pb_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const void *p)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
        return *(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset);
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s && s[0];
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len > 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p != NULL;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p != 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p != 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)p;
    default: {
        size_t n = cli_pb_elt_size(f->type);
        static const uint8_t zero[8] = {0};
        return memcmp(p, zero, n) != 0;
    }
    }
}

/* The message as a JSON object (a Timestamp as a string); NULL when a string is not valid UTF-8 or memory
 * runs out. */
static json_t *cli_pb_json(const ProtobufCMessage *m)
{
    if (m->descriptor == &google__protobuf__timestamp__descriptor) {
        char t[CLI_TIME_LEN];
        return json_string(cli_format_time((const Google__Protobuf__Timestamp *)m, t));
    }
    json_t *o = json_object();
    bool ok = o != NULL;
    for (unsigned i = 0; ok && i < m->descriptor->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[i];
        const char *p = (const char *)m + f->offset;
        json_t *v = NULL;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            if (n == 0)
                continue;
            const char *items = *(const char *const *)p;
            size_t elt = cli_pb_elt_size(f->type);
            v = json_array();
            for (size_t k = 0; v && k < n; k++) {
                json_t *e = cli_pb_value(f, items + k * elt);
                if (!e || json_array_append_new(v, e) != 0) {
                    json_decref(v);
                    v = NULL;
                }
            }
        } else {
            if (!cli_pb_present(m, f, p))
                continue;
            v = cli_pb_value(f, p);
        }
        ok = v && json_object_set_new(o, f->name, v) == 0;
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The message as JSON on standard output (indented, or one compact line). False when it cannot be. */
static bool cli_print_pb_json(const cli_args *a, const ProtobufCMessage *m, bool indent)
{
    json_t *o = cli_pb_json(m);
    char *text =
        o ? json_dumps(o, indent ? JSON_INDENT(2) | JSON_PRESERVE_ORDER : JSON_COMPACT | JSON_PRESERVE_ORDER)
          : NULL;
    json_decref(o);
    if (!text) {
        fprintf(stderr, CLI_PROGRAM ": %s: the response has a field that is not valid UTF-8\n", a->command);
        return false;
    }
    cli_put_note(stdout, text);
    fputc('\n', stdout);
    explicit_bzero(text, strlen(text));
    free(text);
    return true;
}

/* ---- human-readable output */

static void cli_print_categories(const char *name, const Alma__Vault__V1__Category *cats, size_t n)
{
    char word[CLI_ENUM_WORD_MAX + 1];
    printf("%s: ", name);
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? "," : "", cli_enum_name(&cli_enum_category, (int)cats[i], word, sizeof word));
    fputs(n ? "\n" : "-\n", stdout);
}

static void cli_print_record_info(const Alma__Vault__V1__RecordInfo *info)
{
    if (!info)
        return;
    char word[CLI_ENUM_WORD_MAX + 1];
    cli_print_line("record_id", info->record_id);
    cli_print_line("patient_ref", info->patient_ref);
    printf("kind: %s\nversion: %" PRIu32 "\n",
           cli_enum_name(&cli_enum_record_kind, (int)info->kind, word, sizeof word), info->version);
    cli_print_time_line("create_time", info->create_time);
    cli_print_line("created_by", info->created_by);
    if (info->amendment_request_id && info->amendment_request_id[0])
        cli_print_line("amendment_request_id", info->amendment_request_id);
    cli_print_categories("withheld", info->withheld, info->n_withheld);
}

static void cli_print_view(const Alma__Vault__V1__ViewInfo *v)
{
    if (!v)
        return;
    cli_print_line("view_id", v->view_id);
    cli_print_categories("view_categories", v->categories, v->n_categories);
    printf("pseudonymous: %s\n", v->pseudonymous ? "yes" : "no");
}

/* A field of the record: printed only when it holds something. */
static void cli_print_set(const char *name, const char *value)
{
    if (value && value[0])
        cli_print_line(name, value);
}

static void cli_print_patient(const Alma__Vault__V1__GetPatientResponse *g)
{
    char word[CLI_ENUM_WORD_MAX + 1];
    cli_print_record_info(g->info);
    cli_print_view(g->view);
    if (g->view && g->view->pseudonymous)
        printf("age_years: %" PRIu32 "\n", g->age_years);
    const Alma__Vault__V1__Patient *p = g->patient;
    if (!p)
        return;
    if (p->demographics) {
        const Alma__Vault__V1__Demographics *d = p->demographics;
        cli_print_set("family_name", d->family_name);
        fputs("given_names: ", stdout);
        for (size_t i = 0; i < d->n_given_names; i++) {
            if (i)
                fputc(' ', stdout);
            cli_put_safe(stdout, d->given_names[i] ? d->given_names[i] : "");
        }
        fputs(d->n_given_names ? "\n" : "-\n", stdout);
        cli_print_set("birth_date", d->birth_date);
        printf("sex: %s\n", cli_enum_name(&cli_enum_sex, (int)d->sex, word, sizeof word));
    }
    if (p->identifiers)
        cli_print_set("mrn", p->identifiers->mrn);
    if (p->contact) {
        cli_print_set("phone", p->contact->phone);
        cli_print_set("email", p->contact->email);
        const Alma__Vault__V1__Address *ad = p->contact->address;
        if (ad) {
            for (size_t i = 0; i < ad->n_lines; i++)
                cli_print_set("address_line", ad->lines[i]);
            cli_print_set("city", ad->city);
            cli_print_set("state", ad->state);
            cli_print_set("postal_code", ad->postal_code);
            cli_print_set("country", ad->country);
        }
    }
    for (size_t i = 0; i < p->n_coverage; i++) {
        const Alma__Vault__V1__Coverage *c = p->coverage[i];
        if (!c)
            continue;
        char name[48];
#define CLI_COVERAGE_FIELD(field)                                                                            \
    snprintf(name, sizeof name, "coverage[%zu]." #field, i);                                                 \
    cli_print_set(name, c->field)
        CLI_COVERAGE_FIELD(payer_id);
        CLI_COVERAGE_FIELD(plan_name);
        CLI_COVERAGE_FIELD(member_id);
        CLI_COVERAGE_FIELD(group_number);
        CLI_COVERAGE_FIELD(start_date);
        CLI_COVERAGE_FIELD(end_date);
#undef CLI_COVERAGE_FIELD
    }
}

/* " (display)" of a code when it has one. */
static void cli_put_code(const Alma__Vault__V1__Code *c)
{
    if (!c)
        return;
    cli_put_field(stdout, c->code);
    if (c->display && c->display[0]) {
        fputs(" (", stdout);
        cli_put_safe(stdout, c->display);
        fputc(')', stdout);
    }
}

/* One item as a tab-separated line: RECORD_ID VERSION KIND CATEGORY SUMMARY. */
static void cli_print_item_line(const Alma__Vault__V1__GetItemResponse *it)
{
    char word[CLI_ENUM_WORD_MAX + 1];
    const Alma__Vault__V1__RecordInfo *info = it->info;
    cli_put_field(stdout, info ? info->record_id : NULL);
    printf("\tv%" PRIu32 "\t%s\t", info ? info->version : 0,
           cli_enum_name(&cli_enum_record_kind, info ? (int)info->kind : 0, word, sizeof word));
    const Alma__Vault__V1__Item *item = it->item;
    if (!item) {
        fputs("withheld\t(", stdout);
        for (size_t i = 0; info && i < info->n_withheld; i++)
            printf("%s%s", i ? "," : "",
                   cli_enum_name(&cli_enum_category, (int)info->withheld[i], word, sizeof word));
        fputs(" withheld by the view)\n", stdout);
        return;
    }
    fputs(item->sensitive ? "sensitive\t" : "clinical\t", stdout);
    switch (item->body_case) {
    case ALMA__VAULT__V1__ITEM__BODY_PROBLEM: {
        const Alma__Vault__V1__Problem *p = item->problem;
        cli_put_code(p->code);
        if (p->onset_date && p->onset_date[0]) {
            fputs("; onset ", stdout);
            cli_put_safe(stdout, p->onset_date);
        }
        printf("; %s", cli_enum_name(&cli_enum_problem_status, (int)p->status, word, sizeof word));
        break;
    }
    case ALMA__VAULT__V1__ITEM__BODY_OBSERVATION: {
        const Alma__Vault__V1__Observation *o = item->observation;
        cli_put_code(o->code);
        fputs(" = ", stdout);
        if (o->value_case == ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY) {
            printf("%.15g ", o->quantity);
            cli_put_field(stdout, o->unit);
        } else {
            cli_put_field(stdout, o->text);
        }
        fputs(" on ", stdout);
        cli_put_field(stdout, o->effective_date);
        break;
    }
    case ALMA__VAULT__V1__ITEM__BODY_MEDICATION: {
        const Alma__Vault__V1__Medication *m = item->medication;
        cli_put_field(stdout, m->name);
        if (m->dose && m->dose[0]) {
            fputs(", ", stdout);
            cli_put_safe(stdout, m->dose);
        }
        if (m->code) {
            fputs(" [RxNorm ", stdout);
            cli_put_field(stdout, m->code->code);
            fputc(']', stdout);
        }
        fputs("; from ", stdout);
        cli_put_field(stdout, m->start_date);
        if (m->end_date && m->end_date[0]) {
            fputs(" to ", stdout);
            cli_put_safe(stdout, m->end_date);
        }
        printf("; %s", cli_enum_name(&cli_enum_medication_status, (int)m->status, word, sizeof word));
        break;
    }
    case ALMA__VAULT__V1__ITEM__BODY_NOTE:
        cli_put_field(stdout, item->note->title);
        fputs("; ", stdout);
        cli_put_field(stdout, item->note->date);
        printf("; %zu bytes of text", item->note->text ? strlen(item->note->text) : 0);
        break;
    case ALMA__VAULT__V1__ITEM__BODY_DOCUMENT:
        cli_put_field(stdout, item->document->title);
        fputs("; ", stdout);
        cli_put_field(stdout, item->document->date);
        fputs("; ", stdout);
        cli_put_field(stdout, item->document->media_type);
        printf(", %zu bytes", item->document->content.len);
        break;
    default:
        fputs("(no body)", stdout);
        break;
    }
    fputc('\n', stdout);
}

/* ---- output files: a temporary file (mode 0600) next to the target, renamed over it once complete */

typedef struct cli_out_file {
    const char *option, *path;
    char tmp[CLI_PATH_MAX + 16];
    int fd;
} cli_out_file;

/* Made before anything is sent, so a bad path is a usage error and no call is made. */
static int cli_out_file_open(const cli_args *a, const char *option, const char *path, cli_out_file *o)
{
    *o = (cli_out_file){.option = option, .path = path, .fd = -1};
    struct stat st;
    if (!path[0] || path[strlen(path) - 1] == '/' || (stat(path, &st) == 0 && !S_ISREG(st.st_mode)))
        return cli_usage_error("%s: %s must name a file (it is replaced when it exists)", a->command, option);
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp-XXXXXX", path);
    o->fd = mkstemp(o->tmp); /* mode 0600 */
    if (o->fd < 0) {
        int err = errno;
        fprintf(stderr, CLI_PROGRAM ": %s: cannot create a file next to %s ", a->command, option);
        cli_put_safe(stderr, path);
        fprintf(stderr, ": %s\n", strerror(err));
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

static bool cli_out_file_write(cli_out_file *o, const void *data, size_t len)
{
    const char *p = data;
    for (size_t done = 0; done < len;) {
        ssize_t w = write(o->fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        done += (size_t)w;
    }
    return true;
}

/* Remove the temporary file (an incomplete or failed output). */
static void cli_out_file_abandon(cli_out_file *o)
{
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    if (o->tmp[0])
        unlink(o->tmp);
    o->tmp[0] = '\0';
}

/* fsync, close and rename over the target. False (and the temporary file removed) on failure. */
static bool cli_out_file_commit(const cli_args *a, cli_out_file *o)
{
    bool ok = fsync(o->fd) == 0;
    int err = errno;
    if (close(o->fd) != 0 && ok) {
        ok = false;
        err = errno;
    }
    o->fd = -1;
    if (ok && rename(o->tmp, o->path) != 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        fprintf(stderr, CLI_PROGRAM ": %s: cannot write %s ", a->command, o->option);
        cli_put_safe(stderr, o->path);
        fprintf(stderr, ": %s\n", strerror(err));
        cli_out_file_abandon(o);
        return false;
    }
    o->tmp[0] = '\0';
    return true;
}

/* ---- vault-create-patient */

static int cli_cmd_vault_create_patient(cli_args *a)
{
    const char *tenant = NULL, *family = NULL, *birth = NULL, *sex = NULL, *mrn = NULL, *phone = NULL,
               *email = NULL, *city = NULL, *state = NULL, *postal = NULL, *payer = NULL, *plan = NULL,
               *member = NULL, *cov_start = NULL;
    const char *given_items[VAULT_GIVEN_NAMES_MAX], *line_items[VAULT_ADDRESS_LINES_MAX];
    cli_list given = {given_items, 0, VAULT_GIVEN_NAMES_MAX};
    cli_list lines = {line_items, 0, VAULT_ADDRESS_LINES_MAX};
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "family", .text = &family, .max = VAULT_NAME_MAX},
        {.name = "given", .list = &given, .max = VAULT_NAME_MAX},
        {.name = "birth-date", .text = &birth, .max = VAULT_DATE_LEN},
        {.name = "sex", .text = &sex, .max = CLI_ENUM_WORD_MAX},
        {.name = "mrn", .text = &mrn, .max = VAULT_MRN_MAX},
        {.name = "phone", .text = &phone, .max = CLI_VAULT_PHONE_MAX},
        {.name = "email", .text = &email, .max = VAULT_EMAIL_MAX},
        {.name = "address-line", .list = &lines, .max = VAULT_NAME_MAX},
        {.name = "city", .text = &city, .max = VAULT_NAME_MAX},
        {.name = "state", .text = &state, .max = 2},
        {.name = "postal-code", .text = &postal, .max = CLI_VAULT_POSTAL_MAX},
        {.name = "payer-id", .text = &payer, .max = VAULT_PAYER_ID_MAX},
        {.name = "plan-name", .text = &plan, .max = VAULT_NAME_MAX},
        {.name = "member-id", .text = &member, .max = VAULT_MRN_MAX},
        {.name = "coverage-start", .text = &cov_start, .max = VAULT_DATE_LEN},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)))
        return rc;
    if (!family || given.count == 0 || !birth || !sex || !mrn)
        return cli_usage_error("%s: --family, --given, --birth-date, --sex and --mrn are required (see %s %s "
                               "--help)",
                               a->command, CLI_PROGRAM, a->command);
    int sex_value = 0;
    if ((rc = cli_enum_option(a, "sex", &cli_enum_sex, sex, &sex_value)))
        return rc;
    bool any_address = lines.count || city || state || postal;
    if (any_address && !(lines.count && city && state && postal))
        return cli_usage_error("%s: --address-line, --city, --state and --postal-code go together",
                               a->command);
    bool any_coverage = payer || plan || member || cov_start;
    if (any_coverage && !(payer && plan && member && cov_start))
        return cli_usage_error("%s: --payer-id, --plan-name, --member-id and --coverage-start go together",
                               a->command);

    Alma__Vault__V1__Demographics demo = ALMA__VAULT__V1__DEMOGRAPHICS__INIT;
    demo.family_name = (char *)family;
    demo.given_names = (char **)given_items;
    demo.n_given_names = given.count;
    demo.birth_date = (char *)birth;
    demo.sex = (Alma__Vault__V1__AdministrativeSex)sex_value;
    Alma__Vault__V1__Identifiers ids = ALMA__VAULT__V1__IDENTIFIERS__INIT;
    ids.mrn = (char *)mrn;
    Alma__Vault__V1__Address addr = ALMA__VAULT__V1__ADDRESS__INIT;
    Alma__Vault__V1__Contact contact = ALMA__VAULT__V1__CONTACT__INIT;
    Alma__Vault__V1__Coverage cov = ALMA__VAULT__V1__COVERAGE__INIT;
    Alma__Vault__V1__Coverage *covs[1] = {&cov};
    Alma__Vault__V1__Patient patient = ALMA__VAULT__V1__PATIENT__INIT;
    patient.demographics = &demo;
    patient.identifiers = &ids;
    if (any_address) {
        addr.lines = (char **)line_items;
        addr.n_lines = lines.count;
        addr.city = (char *)city;
        addr.state = (char *)state;
        addr.postal_code = (char *)postal;
        contact.address = &addr;
    }
    if (phone)
        contact.phone = (char *)phone;
    if (email)
        contact.email = (char *)email;
    if (any_address || phone || email)
        patient.contact = &contact;
    if (any_coverage) {
        cov.payer_id = (char *)payer;
        cov.plan_name = (char *)plan;
        cov.member_id = (char *)member;
        cov.start_date = (char *)cov_start;
        patient.coverage = covs;
        patient.n_coverage = 1;
    }
    /* The service's own rules, checked here first so a mistake is a usage error and nothing is sent. */
    base_result r = vault_validate_patient(&patient, (int64_t)time(NULL));
    if (!base_is_ok(r))
        return cli_vault_invalid(a, base_error_message());

    Alma__Vault__V1__CreatePatientRequest req = ALMA__VAULT__V1__CREATE_PATIENT_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.patient = &patient;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_vault_call(a, VAULT_RPC("CreatePatient"), &req.base,
                             &alma__vault__v1__create_patient_response__descriptor, "patient.register",
                             &resp)))
        return rc;
    const Alma__Vault__V1__CreatePatientResponse *out = (const Alma__Vault__V1__CreatePatientResponse *)resp;
    cli_print_line("patient_ref", out->patient_ref);
    printf("version: %" PRIu32 "\n", out->version);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

/* ---- vault-get-patient */

static int cli_cmd_vault_get_patient(cli_args *a)
{
    const char *tenant = NULL, *patient = NULL, *purpose = NULL;
    uint32_t version = 0;
    bool as_json = false;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "patient", .text = &patient, .max = CLI_VAULT_ID_LEN},
        {.name = "purpose", .text = &purpose, .max = CLI_ENUM_WORD_MAX},
        {.name = "version", .number = &version, .max = UINT32_MAX},
        {.name = "json", .flag = &as_json},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    int pou = 0;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_vault_patient(a, patient)) ||
        (rc = cli_vault_purpose(a, purpose, &pou)))
        return rc;
    Alma__Vault__V1__GetPatientRequest req = ALMA__VAULT__V1__GET_PATIENT_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.patient_ref = (char *)patient;
    req.purpose = (Alma__Common__V1__PurposeOfUse)pou;
    req.version = version;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_vault_call(a, VAULT_RPC("GetPatient"), &req.base,
                             &alma__vault__v1__get_patient_response__descriptor, CLI_NEEDS_READ, &resp)))
        return rc;
    if (as_json)
        rc = cli_print_pb_json(a, resp, true) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    else
        cli_print_patient((const Alma__Vault__V1__GetPatientResponse *)resp);
    fflush(stdout);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- vault-find-patients */

static int cli_cmd_vault_find_patients(cli_args *a)
{
    const char *tenant = NULL, *mrn = NULL, *member = NULL, *family = NULL, *given = NULL, *birth = NULL;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "mrn", .text = &mrn, .max = VAULT_MRN_MAX},
        {.name = "member-id", .text = &member, .max = VAULT_MRN_MAX},
        {.name = "family", .text = &family, .max = VAULT_NAME_MAX},
        {.name = "given", .text = &given, .max = VAULT_NAME_MAX},
        {.name = "birth-date", .text = &birth, .max = VAULT_DATE_LEN},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)))
        return rc;
    bool by_name = family || given || birth;
    if ((mrn != NULL) + (member != NULL) + by_name != 1)
        return cli_usage_error(
            "%s: give one of --mrn M, --member-id M, or --family F --given G --birth-date D", a->command);
    Alma__Vault__V1__FindPatientsRequest req = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__INIT;
    Alma__Vault__V1__NameAndBirthDate nb = ALMA__VAULT__V1__NAME_AND_BIRTH_DATE__INIT;
    req.tenant_id = (char *)tenant;
    if (mrn) {
        if (!cli_is_word_of(mrn, 1, VAULT_MRN_MAX, "-", true))
            return cli_usage_error("%s: --mrn must be 1 to %d of [A-Za-z0-9-]", a->command, VAULT_MRN_MAX);
        req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MRN;
        req.mrn = (char *)mrn;
    } else if (member) {
        if (!cli_is_word_of(member, 1, VAULT_MRN_MAX, "-", true))
            return cli_usage_error("%s: --member-id must be 1 to %d of [A-Za-z0-9-]", a->command,
                                   VAULT_MRN_MAX);
        req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MEMBER_ID;
        req.member_id = (char *)member;
    } else {
        if (!family || !given || !birth)
            return cli_usage_error("%s: --family, --given and --birth-date go together", a->command);
        if (!family[0] || !given[0])
            return cli_usage_error("%s: --family and --given must not be empty", a->command);
        if (!cli_is_calendar_date(birth))
            return cli_usage_error("%s: --birth-date must be a calendar date YYYY-MM-DD", a->command);
        nb.family_name = (char *)family;
        nb.given_name = (char *)given;
        nb.birth_date = (char *)birth;
        req.by_case = ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_NAME_AND_BIRTH_DATE;
        req.name_and_birth_date = &nb;
    }
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_vault_call(a, VAULT_RPC("FindPatients"), &req.base,
                             &alma__vault__v1__find_patients_response__descriptor, "patient.search", &resp)))
        return rc;
    const Alma__Vault__V1__FindPatientsResponse *f = (const Alma__Vault__V1__FindPatientsResponse *)resp;
    for (size_t i = 0; i < f->n_patient_refs; i++) {
        cli_put_field(stdout, f->patient_refs[i]);
        fputc('\n', stdout);
    }
    fflush(stdout);
    fprintf(stderr, CLI_PROGRAM ": %s: %zu patient%s found\n", a->command, f->n_patient_refs,
            f->n_patient_refs == 1 ? "" : "s");
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

/* ---- vault-put-item */

/* --value: a finite decimal number ("7.1", "-0.5", "1e3"). */
static bool cli_parse_decimal(const char *s, double *ret)
{
    if (!s[0] || strspn(s, "0123456789.eE+-") != strlen(s))
        return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return false;
    *ret = v;
    return true;
}

/* An option that belongs to other kinds of item. */
static int cli_vault_not_for(const cli_args *a, const char *option, const char *kind)
{
    return cli_usage_error("%s: --%s does not apply to %s (see %s %s --help)", a->command, option, kind,
                           CLI_PROGRAM, a->command);
}

static int cli_cmd_vault_put_item(cli_args *a)
{
    const char *tenant = NULL, *patient = NULL, *problem = NULL, *display = NULL, *onset = NULL,
               *status = NULL, *observation = NULL, *value = NULL, *unit = NULL, *date = NULL,
               *medication = NULL, *rxnorm = NULL, *start = NULL, *dose = NULL, *note_file = NULL,
               *title = NULL, *record = NULL;
    bool sensitive = false;
    uint32_t expected = 0;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "patient", .text = &patient, .max = CLI_VAULT_ID_LEN},
        {.name = "problem", .text = &problem, .max = VAULT_CODE_MAX},
        {.name = "display", .text = &display, .max = VAULT_DISPLAY_MAX},
        {.name = "onset", .text = &onset, .max = VAULT_DATE_LEN},
        {.name = "status", .text = &status, .max = CLI_ENUM_WORD_MAX},
        {.name = "observation", .text = &observation, .max = VAULT_CODE_MAX},
        {.name = "value", .text = &value, .max = CLI_VAULT_NUMBER_MAX},
        {.name = "unit", .text = &unit, .max = VAULT_UNIT_MAX},
        {.name = "date", .text = &date, .max = VAULT_DATE_LEN},
        {.name = "medication", .text = &medication, .max = VAULT_TITLE_MAX},
        {.name = "rxnorm", .text = &rxnorm, .max = VAULT_CODE_MAX},
        {.name = "start", .text = &start, .max = VAULT_DATE_LEN},
        {.name = "dose", .text = &dose, .max = VAULT_DOSE_MAX},
        {.name = "note-file", .text = &note_file, .max = CLI_PATH_MAX, .path = true},
        {.name = "title", .text = &title, .max = VAULT_TITLE_MAX},
        {.name = "sensitive", .flag = &sensitive},
        {.name = "record", .text = &record, .max = CLI_VAULT_ID_LEN},
        {.name = "expected-version", .number = &expected, .max = UINT32_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_vault_patient(a, patient)))
        return rc;
    if ((problem != NULL) + (observation != NULL) + (medication != NULL) + (note_file != NULL) != 1)
        return cli_usage_error(
            "%s: give exactly one of --problem, --observation, --medication and --note-file "
            "(see %s %s --help)",
            a->command, CLI_PROGRAM, a->command);
    if (record && !cli_is_vault_id(record, "it_"))
        return cli_usage_error("%s: --record must be an item id: it_ and 32 lowercase hex digits",
                               a->command);
    if ((record != NULL) != (expected != 0))
        return cli_usage_error("%s: --record and --expected-version (from 1) go together: a new version of "
                               "that item",
                               a->command);

    /* Which options each kind takes. */
    const char *kind = problem       ? "--problem"
                       : observation ? "--observation"
                       : medication  ? "--medication"
                                     : "--note-file";
    if (onset && !problem)
        return cli_vault_not_for(a, "onset", kind);
    if (status && !problem && !medication)
        return cli_vault_not_for(a, "status", kind);
    if (display && note_file)
        return cli_vault_not_for(a, "display", kind);
    if ((value || unit) && !observation)
        return cli_vault_not_for(a, value ? "value" : "unit", kind);
    if (date && !observation && !note_file)
        return cli_vault_not_for(a, "date", kind);
    if ((rxnorm || start || dose) && !medication)
        return cli_vault_not_for(a, rxnorm ? "rxnorm" : start ? "start" : "dose", kind);
    if (title && !note_file)
        return cli_vault_not_for(a, "title", kind);
    if (display && medication && !rxnorm)
        return cli_usage_error("%s: --display of a medication is the display of its --rxnorm code",
                               a->command);

    Alma__Vault__V1__Code code = ALMA__VAULT__V1__CODE__INIT;
    code.display = (char *)(display ? display : "");
    Alma__Vault__V1__Problem prob = ALMA__VAULT__V1__PROBLEM__INIT;
    Alma__Vault__V1__Observation obs = ALMA__VAULT__V1__OBSERVATION__INIT;
    Alma__Vault__V1__Medication med = ALMA__VAULT__V1__MEDICATION__INIT;
    Alma__Vault__V1__Note note = ALMA__VAULT__V1__NOTE__INIT;
    Alma__Vault__V1__Item item = ALMA__VAULT__V1__ITEM__INIT;
    item.sensitive = sensitive;
    int st = 0;
    char *text = NULL; /* the note's text: PHI, wiped */
    size_t text_cap = 0;
    if (problem) {
        st = ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE;
        if ((rc = cli_enum_option(a, "status", &cli_enum_problem_status, status, &st)))
            return rc;
        code.system = VAULT_SYSTEM_ICD10CM;
        code.code = (char *)problem;
        prob.code = &code;
        prob.onset_date = (char *)(onset ? onset : "");
        prob.status = (Alma__Vault__V1__ProblemStatus)st;
        item.body_case = ALMA__VAULT__V1__ITEM__BODY_PROBLEM;
        item.problem = &prob;
    } else if (observation) {
        if (!value || !unit || !date)
            return cli_usage_error("%s: --observation needs --value, --unit and --date", a->command);
        double v = 0;
        if (!cli_parse_decimal(value, &v))
            return cli_usage_error("%s: --value must be a finite decimal number such as 7.1", a->command);
        code.system = VAULT_SYSTEM_LOINC;
        code.code = (char *)observation;
        obs.code = &code;
        obs.value_case = ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY;
        obs.quantity = v;
        obs.unit = (char *)unit;
        obs.effective_date = (char *)date;
        item.body_case = ALMA__VAULT__V1__ITEM__BODY_OBSERVATION;
        item.observation = &obs;
    } else if (medication) {
        if (!start)
            return cli_usage_error("%s: --medication needs --start", a->command);
        st = ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_ACTIVE;
        if ((rc = cli_enum_option(a, "status", &cli_enum_medication_status, status, &st)))
            return rc;
        if (rxnorm) {
            code.system = VAULT_SYSTEM_RXNORM;
            code.code = (char *)rxnorm;
            med.code = &code;
        }
        med.name = (char *)medication;
        med.dose = (char *)(dose ? dose : "");
        med.start_date = (char *)start;
        med.status = (Alma__Vault__V1__MedicationStatus)st;
        item.body_case = ALMA__VAULT__V1__ITEM__BODY_MEDICATION;
        item.medication = &med;
    } else {
        if (!title || !date)
            return cli_usage_error("%s: --note-file needs --title and --date", a->command);
        char what[96];
        size_t n = 0;
        snprintf(what, sizeof what, "%s: --note-file", a->command);
        text_cap = VAULT_NOTE_TEXT_MAX + 2;
        text = malloc(text_cap);
        if (!text)
            return cli_usage_error("out of memory");
        if (!cli_read_small(what, note_file, text, text_cap, &n)) {
            free(text);
            return CLI_EXIT_USAGE;
        }
        /* CRLF line ends become LF (a carriage return is a control character to the service). */
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n'))
                text[k++] = text[i];
        text[k] = '\0';
        if (memchr(text, '\0', k)) {
            explicit_bzero(text, text_cap);
            free(text);
            return cli_usage_error("%s: --note-file must hold text (it holds a NUL byte)", a->command);
        }
        note.title = (char *)title;
        note.text = text;
        note.date = (char *)date;
        item.body_case = ALMA__VAULT__V1__ITEM__BODY_NOTE;
        item.note = &note;
    }
    base_result r = vault_validate_item(&item, (int64_t)time(NULL));
    if (!base_is_ok(r)) {
        rc = cli_vault_invalid(a, base_error_message());
    } else {
        Alma__Vault__V1__PutItemRequest req = ALMA__VAULT__V1__PUT_ITEM_REQUEST__INIT;
        req.tenant_id = (char *)tenant;
        req.patient_ref = (char *)patient;
        req.record_id = (char *)(record ? record : "");
        req.expected_version = expected;
        req.item = &item;
        ProtobufCMessage *resp = NULL;
        rc = cli_vault_call(
            a, VAULT_RPC("PutItem"), &req.base, &alma__vault__v1__put_item_response__descriptor,
            "phi.write.clinical and a care relationship with the patient (or break-glass)", &resp);
        if (rc == CLI_EXIT_OK) {
            const Alma__Vault__V1__PutItemResponse *out = (const Alma__Vault__V1__PutItemResponse *)resp;
            cli_print_line("record_id", out->record_id);
            printf("version: %" PRIu32 "\n", out->version);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    if (text) {
        explicit_bzero(text, text_cap);
        free(text);
    }
    return rc;
}

/* ---- vault-list-items */

static int cli_cmd_vault_list_items(cli_args *a)
{
    const char *tenant = NULL, *patient = NULL, *purpose = NULL, *kind = NULL, *page_token = NULL;
    uint32_t page_size = 0;
    bool all = false, as_json = false;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "patient", .text = &patient, .max = CLI_VAULT_ID_LEN},
        {.name = "purpose", .text = &purpose, .max = CLI_ENUM_WORD_MAX},
        {.name = "kind", .text = &kind, .max = CLI_ENUM_WORD_MAX},
        {.name = "page-size", .number = &page_size, .max = CLI_VAULT_PAGE_MAX},
        {.name = "page-token", .text = &page_token, .max = CLI_PAGE_TOKEN_MAX},
        {.name = "all", .flag = &all},
        {.name = "json", .flag = &as_json},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    int pou = 0, k = 0;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_vault_patient(a, patient)) ||
        (rc = cli_vault_purpose(a, purpose, &pou)))
        return rc;
    if (kind && (!cli_enum_parse(&cli_enum_record_kind, kind, &k) ||
                 k == ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT))
        return cli_usage_error("%s: --kind must be one of: problem, observation, medication, note, document",
                               a->command);
    if (page_token && !cli_is_id(page_token, CLI_PAGE_TOKEN_MAX))
        return cli_usage_error("%s: --page-token must be a token as printed by a previous page", a->command);
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    char token[CLI_PAGE_TOKEN_MAX + 1] = "";
    if (page_token)
        snprintf(token, sizeof token, "%s", page_token);
    size_t shown = 0;
    bool view_shown = false;
    for (;;) {
        Alma__Vault__V1__ListItemsRequest req = ALMA__VAULT__V1__LIST_ITEMS_REQUEST__INIT;
        req.tenant_id = (char *)tenant;
        req.patient_ref = (char *)patient;
        req.purpose = (Alma__Common__V1__PurposeOfUse)pou;
        req.kind = (Alma__Vault__V1__RecordKind)k;
        req.page_size = (int32_t)(page_size ? page_size : all ? CLI_VAULT_PAGE_MAX : 0);
        req.page_token = token;
        ProtobufCMessage *resp = NULL;
        rpc_status st;
        rpc_code code =
            rpc_call_unary(c.ch, VAULT_RPC("ListItems"), &req.base,
                           &alma__vault__v1__list_items_response__descriptor, &c.opts, &resp, &st);
        if (code != RPC_OK) {
            rc = cli_token_call_error(a, &st, CLI_NEEDS_READ, CLI_VAULT_PEERS);
            break;
        }
        const Alma__Vault__V1__ListItemsResponse *page = (const Alma__Vault__V1__ListItemsResponse *)resp;
        if (!view_shown && page->view) {
            char cats[256] = "";
            size_t used = 0;
            for (size_t i = 0; i < page->view->n_categories && used < sizeof cats; i++) {
                char word[CLI_ENUM_WORD_MAX + 1];
                int n = snprintf(
                    cats + used, sizeof cats - used, "%s%s", i ? "," : "",
                    cli_enum_name(&cli_enum_category, (int)page->view->categories[i], word, sizeof word));
                used += n > 0 ? (size_t)n : 0;
            }
            fprintf(stderr, CLI_PROGRAM ": %s: view ", a->command);
            cli_put_field(stderr, page->view->view_id);
            fprintf(stderr, " (%s%s)\n", cats[0] ? cats : "no categories",
                    page->view->pseudonymous ? "; pseudonymous" : "");
            view_shown = true;
        }
        for (size_t i = 0; i < page->n_items && rc == CLI_EXIT_OK; i++) {
            if (!page->items[i])
                continue;
            if (!as_json)
                cli_print_item_line(page->items[i]);
            else if (!cli_print_pb_json(a, &page->items[i]->base, false))
                rc = CLI_EXIT_FAIL;
            shown++;
        }
        fflush(stdout);
        const char *next = page->next_page_token ? page->next_page_token : "";
        bool more = next[0] != '\0';
        if (more && (strlen(next) > CLI_PAGE_TOKEN_MAX || strcmp(next, token) == 0)) {
            fprintf(stderr, CLI_PROGRAM ": %s: the server sent an unusable next page token\n", a->command);
            rc = CLI_EXIT_FAIL;
        }
        if (rc == CLI_EXIT_OK && more && !all) {
            fprintf(stderr, CLI_PROGRAM ": %s: more items: --page-token ", a->command);
            cli_put_safe(stderr, next);
            fputc('\n', stderr);
        }
        if (rc == CLI_EXIT_OK && more)
            snprintf(token, sizeof token, "%s", next);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (rc != CLI_EXIT_OK || !more || !all)
            break;
    }
    cli_disconnect(&c);
    if (rc == CLI_EXIT_OK)
        fprintf(stderr, CLI_PROGRAM ": %s: %zu item%s\n", a->command, shown, shown == 1 ? "" : "s");
    return rc;
}

/* ---- vault-export-patient */

static int cli_cmd_vault_export_patient(cli_args *a)
{
    const char *tenant = NULL, *patient = NULL, *access = NULL, *out = NULL;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "patient", .text = &patient, .max = CLI_VAULT_ID_LEN},
        {.name = "access-request", .text = &access, .max = CLI_VAULT_ACCESS_ID_MAX},
        {.name = "out", .text = &out, .max = CLI_PATH_MAX, .path = true},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_vault_patient(a, patient)))
        return rc;
    if (!access || !cli_is_word_of(access, 1, CLI_VAULT_ACCESS_ID_MAX, "_-", true))
        return cli_usage_error("%s: --access-request is required: the patient's request id, 1 to %d of "
                               "[A-Za-z0-9_-]",
                               a->command, CLI_VAULT_ACCESS_ID_MAX);
    if (!out)
        return cli_usage_error("%s: --out FILE is required", a->command);
    acrypto_sha256_ctx *hash = NULL;
    if (!base_is_ok(acrypto_sha256_ctx_new(&hash)))
        return cli_usage_error("%s: cannot set up SHA-256", a->command);
    cli_out_file of;
    if ((rc = cli_out_file_open(a, "--out", out, &of))) {
        acrypto_sha256_ctx_free(hash);
        return rc;
    }
    cli_block_stop_signals();
    cli_call c;
    if ((rc = cli_connect(&c))) {
        cli_out_file_abandon(&of);
        acrypto_sha256_ctx_free(hash);
        return rc;
    }
    c.opts.timeout_ms = CLI_WATCH_TIMEOUT_MS; /* a large chart takes its time; Ctrl-C stops it */
    rpc_client_stream *s = NULL;
    base_result r = rpc_client_stream_open(c.ch, VAULT_RPC("ExportPatient"), &c.opts, &s);
    if (!base_is_ok(r)) {
        cli_disconnect(&c);
        cli_out_file_abandon(&of);
        acrypto_sha256_ctx_free(hash);
        return cli_stream_open_failed(r);
    }
    cli_stream_signals sig;
    cli_signals_start(&sig, s);
    Alma__Vault__V1__ExportPatientRequest req = ALMA__VAULT__V1__EXPORT_PATIENT_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.patient_ref = (char *)patient;
    req.access_request_id = (char *)access;
    const char *problem = NULL; /* a failure on this side: fixed text */
    bool last = false;
    uint64_t total = 0;
    uint32_t resources = 0;
    uint8_t sent[ACRYPTO_SHA256_LEN] = {0}, got[ACRYPTO_SHA256_LEN];
    if (base_is_ok(rpc_client_stream_send(s, &req.base)) && base_is_ok(rpc_client_stream_close_send(s))) {
        for (;;) {
            ProtobufCMessage *m = NULL;
            bool eof = false;
            r = rpc_client_stream_recv(s, &alma__vault__v1__export_chunk__descriptor, &m, &eof);
            if (!base_is_ok(r)) {
                problem = "the stream failed";
                rpc_client_stream_cancel(s);
                break;
            }
            if (eof)
                break;
            const Alma__Vault__V1__ExportChunk *ch = (const Alma__Vault__V1__ExportChunk *)m;
            if (last)
                problem = "the server sent more after the last chunk";
            else if (total + ch->data.len > CLI_VAULT_EXPORT_MAX)
                problem = "the bundle is larger than 1 GiB";
            else if (ch->data.len && (!base_is_ok(acrypto_sha256_update(hash, ch->data.data, ch->data.len)) ||
                                      !cli_out_file_write(&of, ch->data.data, ch->data.len)))
                problem = "cannot write the bundle to --out";
            else if (ch->last && ch->sha256.len != ACRYPTO_SHA256_LEN)
                problem = "the last chunk has no SHA-256";
            total += ch->data.len;
            if (!problem && ch->last) {
                last = true;
                memcpy(sent, ch->sha256.data, ACRYPTO_SHA256_LEN);
                resources = ch->resource_count;
            }
            if (ch->data.len)
                explicit_bzero(ch->data.data, ch->data.len); /* PHI */
            protobuf_c_message_free_unpacked(m, NULL);
            if (problem) {
                rpc_client_stream_cancel(s);
                break;
            }
        }
    }
    rpc_status st;
    rpc_code code = rpc_client_stream_finish(s, &st);
    bool interrupted = cli_signals_stop(&sig);
    rpc_client_stream_free(s);
    cli_disconnect(&c);
    bool hashed = base_is_ok(acrypto_sha256_final(hash, got));
    acrypto_sha256_ctx_free(hash);
    if (interrupted) {
        fprintf(stderr, CLI_PROGRAM ": %s: interrupted\n", a->command);
        rc = CLI_EXIT_FAIL;
    } else if (problem) {
        fprintf(stderr, CLI_PROGRAM ": %s: %s\n", a->command, problem);
        rc = CLI_EXIT_FAIL;
    } else if (code != RPC_OK) {
        rc = cli_token_call_error(a, &st, "privacy.review", CLI_VAULT_PEERS);
    } else if (!last) {
        fprintf(stderr, CLI_PROGRAM ": %s: the server ended the export without its last chunk\n", a->command);
        rc = CLI_EXIT_FAIL;
    } else if (!hashed || memcmp(sent, got, sizeof got) != 0) {
        fprintf(stderr, CLI_PROGRAM ": %s: the bundle's SHA-256 differs from the one the server sent\n",
                a->command);
        rc = CLI_EXIT_FAIL;
    } else if (!cli_out_file_commit(a, &of)) {
        rc = CLI_EXIT_FAIL;
    } else {
        char hex[2 * CLI_HEX_MAX + 1];
        printf("resources: %" PRIu32 "\nbytes: %" PRIu64 "\nsha256: %s\nfile: ", resources, total,
               cli_hex(got, sizeof got, hex));
        cli_put_safe(stdout, out);
        fputc('\n', stdout);
        rc = CLI_EXIT_OK;
    }
    if (rc != CLI_EXIT_OK) {
        cli_out_file_abandon(&of);
        fprintf(stderr, CLI_PROGRAM ": %s: nothing was written to --out\n", a->command);
    }
    return rc;
}

/* ---- vault-destroy-patient */

static int cli_cmd_vault_destroy_patient(cli_args *a)
{
    const char *tenant = NULL, *patient = NULL, *reason = NULL, *cert_out = NULL;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "patient", .text = &patient, .max = CLI_VAULT_ID_LEN},
        {.name = "reason", .text = &reason, .max = CLI_VAULT_REASON_MAX},
        {.name = "certificate-out", .text = &cert_out, .max = CLI_PATH_MAX, .path = true},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_vault_patient(a, patient)))
        return rc;
    if (!reason || !cli_is_word_of(reason, 1, CLI_VAULT_REASON_MAX, "_", false))
        return cli_usage_error("%s: --reason is required: a reason code, 1 to %d of [a-z0-9_] such as "
                               "retention_expired",
                               a->command, CLI_VAULT_REASON_MAX);
    cli_out_file of = {.fd = -1};
    if (cert_out && (rc = cli_out_file_open(a, "--certificate-out", cert_out, &of)))
        return rc;
    Alma__Vault__V1__DestroyPatientRequest req = ALMA__VAULT__V1__DESTROY_PATIENT_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.patient_ref = (char *)patient;
    req.reason_code = (char *)reason;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_vault_call(a, VAULT_RPC("DestroyPatient"), &req.base,
                             &alma__vault__v1__destruction_certificate__descriptor, "vault.records.destroy",
                             &resp))) {
        if (cert_out)
            cli_out_file_abandon(&of);
        return rc;
    }
    const Alma__Vault__V1__DestructionCertificate *dc = (const Alma__Vault__V1__DestructionCertificate *)resp;
    cli_print_line("certificate_id", dc->certificate_id);
    cli_print_line("tenant_id", dc->tenant_id);
    cli_print_line("patient_ref", dc->patient_ref);
    cli_print_time_line("destroyed_time", dc->destroyed_time);
    printf("records: %" PRIu32 "\nversions: %" PRIu32 "\n", dc->records, dc->versions);
    fflush(stdout);
    if (cert_out) {
        json_t *o = cli_pb_json(resp);
        char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        bool ok = text && cli_out_file_write(&of, text, strlen(text)) && cli_out_file_write(&of, "\n", 1);
        free(text);
        if (!ok) {
            fprintf(stderr, CLI_PROGRAM ": %s: cannot write --certificate-out ", a->command);
            cli_put_safe(stderr, cert_out);
            fputc('\n', stderr);
            cli_out_file_abandon(&of);
        }
        if (ok && (ok = cli_out_file_commit(a, &of))) {
            fputs("certificate: ", stdout);
            cli_put_safe(stdout, cert_out);
            fputc('\n', stdout);
        }
        if (!ok) {
            fprintf(stderr,
                    CLI_PROGRAM ": %s: the patient WAS destroyed; the certificate id above fetches the "
                                "certificate again (GetDestructionCertificate)\n",
                    a->command);
            rc = CLI_EXIT_FAIL;
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- vault-key-status, vault-rotate-key */

static int cli_vault_key_command(cli_args *a, bool rotate)
{
    const char *tenant = NULL;
    const cli_option opts[] = {{.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX}};
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)))
        return rc;
    ProtobufCMessage *resp = NULL;
    if (rotate) {
        Alma__Vault__V1__RotateTenantKeyRequest req = ALMA__VAULT__V1__ROTATE_TENANT_KEY_REQUEST__INIT;
        req.tenant_id = (char *)tenant;
        rc = cli_vault_call(a, VAULT_RPC("RotateTenantKey"), &req.base,
                            &alma__vault__v1__tenant_key_status__descriptor, "vault.keys.manage", &resp);
    } else {
        Alma__Vault__V1__GetTenantKeyStatusRequest req = ALMA__VAULT__V1__GET_TENANT_KEY_STATUS_REQUEST__INIT;
        req.tenant_id = (char *)tenant;
        rc = cli_vault_call(a, VAULT_RPC("GetTenantKeyStatus"), &req.base,
                            &alma__vault__v1__tenant_key_status__descriptor, "vault.keys.manage", &resp);
    }
    if (rc)
        return rc;
    const Alma__Vault__V1__TenantKeyStatus *k = (const Alma__Vault__V1__TenantKeyStatus *)resp;
    cli_print_line("tenant_id", k->tenant_id);
    printf("current_version: %" PRIu32 "\nmin_decrypt_version: %" PRIu32 "\n", k->current_version,
           k->min_decrypt_version);
    for (size_t i = 0; i < k->n_wrapped; i++)
        if (k->wrapped[i])
            printf("wrapped: version %" PRIu32 ": %" PRIu64 " data key%s\n", k->wrapped[i]->version,
                   k->wrapped[i]->data_keys, k->wrapped[i]->data_keys == 1 ? "" : "s");
    if (rotate)
        fprintf(stderr,
                CLI_PROGRAM ": %s: new data keys are wrapped by version %" PRIu32 " now; existing ones move "
                            "with alma-vault-admin rewrap\n",
                a->command, k->current_version);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

static int cli_cmd_vault_key_status(cli_args *a)
{
    return cli_vault_key_command(a, false);
}

static int cli_cmd_vault_rotate_key(cli_args *a)
{
    return cli_vault_key_command(a, true);
}

/* ---- help of the vault commands */

static void cli_help_vault_common(FILE *out)
{
    fputs("Needs an access token (--token-file F or ALMA_CLI_TOKEN) and --addr of the vault. Every read and\n"
          "write is recorded in the audit log. Error messages name options and fields, never their values.\n",
          out);
}

static void cli_help_vault_create_patient(FILE *out)
{
    fprintf(out,
            "  --tenant T                 the tenant id, required\n"
            "  --family F                 family name, 1 to %d bytes, required\n"
            "  --given G                  given name, repeatable (1 to %d), required\n"
            "  --birth-date YYYY-MM-DD    a calendar date from 1900-01-01 to today, required\n"
            "  --sex S                    required: female, male, other or unknown\n"
            "  --mrn M                    medical record number, 1 to %d of [A-Za-z0-9-], required\n"
            "  --phone P                  E.164, e.g. +15555550123\n"
            "  --email E                  local@domain\n"
            "  --address-line L           repeatable (at most %d); with --city C --state S (two-letter US\n"
            "                             code) --postal-code Z (12345 or 12345-6789): all four together\n"
            "  --payer-id X --plan-name N --member-id M --coverage-start YYYY-MM-DD\n"
            "                             one health-plan coverage: all four together\n"
            "Checked with the vault's own rules before anything is sent. Prints patient_ref: and version:.\n"
            "Needs patient.register (pcp_clinician, specialist_clinician, care_coordinator, scheduler). The\n"
            "registering user is not yet in a care relationship with the patient: "
            "identity-relationship-create.\n",
            VAULT_NAME_MAX, VAULT_GIVEN_NAMES_MAX, VAULT_MRN_MAX, VAULT_ADDRESS_LINES_MAX);
    cli_help_vault_common(out);
}

static void cli_help_vault_get_patient(FILE *out)
{
    fputs("  --tenant T                 the tenant id, required\n"
          "  --patient pt_<32 hex>      the patient, required\n",
          out);
    cli_help_enum(out, "purpose P", "required, one of", &cli_enum_purpose);
    fputs("  --version N                an earlier version of the record (default: the latest)\n"
          "  --json                     the GetPatientResponse as JSON (proto field names) instead of lines\n"
          "Prints record_id:, patient_ref:, kind:, version:, create_time:, created_by:, withheld: (the "
          "record's\n"
          "categories the view left out), view_id:, view_categories:, pseudonymous: and the fields the view\n"
          "returned (family_name:, given_names:, birth_date:, sex:, mrn:, phone:, ..., coverage[i].*);\n"
          "age_years: instead of the birth date under a pseudonymous view. The view comes from the caller's\n"
          "roles and the purpose; patient data also needs a care relationship or a break-glass grant.\n",
          out);
    cli_help_vault_common(out);
}

static void cli_help_vault_find_patients(FILE *out)
{
    fputs(
        "  --tenant T                 the tenant id, required\n"
        "  --mrn M                    by medical record number, or\n"
        "  --member-id M              by health-plan member id, or\n"
        "  --family F --given G --birth-date YYYY-MM-DD\n"
        "                             by family name, first given name and birth date\n"
        "Prints the matching patient refs one per line (at most 20; the count goes to stderr; none found is\n"
        "not an error). Searches blind indexes: the values never reach the database in clear.\n"
        "Needs patient.search.\n",
        out);
    cli_help_vault_common(out);
}

static void cli_help_vault_put_item(FILE *out)
{
    fputs("  --tenant T, --patient pt_<32 hex>   required\n"
          "One kind of item:\n"
          "  --problem ICD10 [--display D] [--onset YYYY-MM-DD] [--status active|resolved|inactive]\n"
          "                             a problem coded in ICD-10-CM, e.g. E11.9 (status default active)\n"
          "  --observation LOINC --value NUM --unit UCUM --date YYYY-MM-DD [--display D]\n"
          "                             a LOINC-coded result, e.g. 4548-4 7.1 %\n"
          "  --medication NAME --start YYYY-MM-DD [--dose TEXT] [--rxnorm CODE [--display D]]\n"
          "                             [--status active|completed|stopped] (default active)\n"
          "  --note-file F --title T --date YYYY-MM-DD\n"
          "                             a note: the text of F (UTF-8, at most 65536 bytes; CRLF becomes LF)\n"
          "  --sensitive                sensitive clinical category (behavioural health, substance use,\n"
          "                             reproductive, HIV); ICD-10-CM F01-F99 problems are so anyway\n"
          "  --record it_... --expected-version N\n"
          "                             a new version of that item, based on version N\n"
          "Checked with the vault's own rules (code formats and check digits, dates) before anything is\n"
          "sent. Prints record_id: and version:. Needs phi.write.clinical and a care relationship with the\n"
          "patient.\n",
          out);
    cli_help_vault_common(out);
}

static void cli_help_vault_list_items(FILE *out)
{
    fputs("  --tenant T, --patient pt_<32 hex>   required\n", out);
    cli_help_enum(out, "purpose P", "required, one of", &cli_enum_purpose);
    fprintf(
        out,
        "  --kind K                   problem, observation, medication, note or document (default: all)\n"
        "  --page-size N              items per call, 1 to %d (default: the server's, 50)\n"
        "  --page-token X             continue after a previous page (its token is printed on stderr)\n"
        "  --all                      follow the page tokens to the last item\n"
        "  --json                     one GetItemResponse as JSON per line instead of text\n"
        "Text lines, tab-separated: RECORD_ID VERSION KIND CATEGORY SUMMARY (CATEGORY clinical, sensitive\n"
        "or withheld; a note's text and a document's content are not shown). The view goes to stderr.\n",
        CLI_VAULT_PAGE_MAX);
    cli_help_vault_common(out);
}

static void cli_help_vault_export_patient(FILE *out)
{
    fputs("  --tenant T, --patient pt_<32 hex>   required\n"
          "  --access-request ID        the patient's right-of-access request (your reference), required\n"
          "  --out FILE                 where the FHIR R4 Bundle (JSON) goes, required: written to a\n"
          "                             temporary file (mode 600) next to it, renamed over FILE once the\n"
          "                             whole bundle arrived and its SHA-256 matches the server's\n"
          "Prints resources:, bytes:, sha256: and file:. No deadline (--timeout-ms does not apply); Ctrl-C\n"
          "stops it and leaves FILE as it was. Needs privacy.review (privacy_officer, MFA). The export is a\n"
          "disclosure to the individual, recorded in the audit log.\n",
          out);
    cli_help_vault_common(out);
}

static void cli_help_vault_destroy_patient(FILE *out)
{
    fputs(
        "  --tenant T, --patient pt_<32 hex>   required\n"
        "  --reason CODE              required, [a-z0-9_]{1,64}: retention_expired,\n"
        "                             patient_request_state_law, ...\n"
        "  --certificate-out F        also write the signed destruction certificate as JSON to F (mode\n"
        "                             600; statement is the signed text, signature base64, verifier_key "
        "PEM)\n"
        "Crypto-shredding: destroys the patient's data keys, then the rows. IRREVERSIBLE. The vault refuses\n"
        "it under a legal hold or before every category's retention has run out. Prints certificate_id:,\n"
        "tenant_id:, patient_ref:, destroyed_time:, records: and versions:. Needs vault.records.destroy.\n",
        out);
    cli_help_vault_common(out);
}

static void cli_help_vault_keys(FILE *out)
{
    fputs("  --tenant T                 the tenant id, required\n"
          "Prints tenant_id:, current_version:, min_decrypt_version: and one wrapped: line per tenant-key\n"
          "version with the number of data keys it still wraps. vault-rotate-key makes a new version that\n"
          "wraps new data keys at once; alma-vault-admin rewrap moves the existing ones. Needs\n"
          "vault.keys.manage (security_admin, MFA).\n",
          out);
    cli_help_vault_common(out);
}

/* ------------------------------------------------------------------ alma.guideline.v1.Guideline */

#define GUIDELINE_RPC(name) "/alma.guideline.v1.Guideline/" name
/* Bounds of the guideline commands' inputs: the service's own (services/guideline/review.c, store.h,
 * engine.h, bundle.h), checked here first so a mistake is a usage error and nothing is sent. */
#define CLI_GL_REFERRAL_MAX GL_REFERRAL_ID_MAX /* shapes.h: the id shapes themselves */
#define CLI_GL_REVIEW_LEN   35                 /* "rv_" and 32 lowercase hex digits */
#define CLI_GL_SPECIALTY    GL_NAME_MAX
#define CLI_GL_REASONS_MAX  16 /* reason_codes: 1..16 ICD-10-CM codes */
#define CLI_GL_ICD10_MAX    GL_ICD10_MAX
#define CLI_GL_NAME_MAX     GL_NAME_MAX
#define CLI_GL_FLAGS_MAX    GL_INPUT_MAX_FLAGS
#define CLI_GL_FINDINGS_MAX GL_INPUT_MAX_FINDINGS
#define CLI_GL_PAIR_MAX     (CLI_GL_NAME_MAX + 1 + GL_INPUT_MAX_TEXT) /* --flag N=V, --finding N=V */
#define CLI_GL_COMMENT_MAX  1000                                      /* RecordDecision comment */
#define CLI_GL_BUNDLE_ID    63
#define CLI_GL_VERSION      32
#define CLI_GL_HASH_LEN     64
#define CLI_GL_PATHWAY_MAX  64
#define CLI_GL_WHATIF_IDS   1000  /* WhatIf referral_ids */
#define CLI_GL_WHATIF_MAX   10000 /* WhatIf max_referrals */

static const cli_enum cli_enum_gl_outcome = {&alma__guideline__v1__outcome__descriptor, "OUTCOME_"};
static const cli_enum cli_enum_gl_urgency = {&alma__guideline__v1__urgency__descriptor, "URGENCY_"};
static const cli_enum cli_enum_gl_kind = {&alma__guideline__v1__decision_kind__descriptor, "DECISION_KIND_"};
static const cli_enum cli_enum_gl_reason = {&alma__guideline__v1__override_reason__descriptor,
                                            "OVERRIDE_REASON_"};

/* ---- input checks (messages name the option and the rule, never the value) */

static int cli_gl_referral(const cli_args *a, const char *option, const char *referral)
{
    if (!referral)
        return cli_usage_error("%s: --%s ID is required (see %s %s --help)", a->command, option, CLI_PROGRAM,
                               a->command);
    if (!gl_valid_referral_id(referral))
        return cli_usage_error("%s: --%s must be a referral id: 1 to %d of [A-Za-z0-9_-]", a->command, option,
                               CLI_GL_REFERRAL_MAX);
    return CLI_EXIT_OK;
}

/* A flag's or finding's name (the n bytes before '='), in the service's shape (shapes.h). */
static bool cli_is_gl_name(const char *s, size_t n)
{
    char name[GL_NAME_MAX + 1];
    if (n < 1 || n > GL_NAME_MAX)
        return false;
    memcpy(name, s, n);
    name[n] = '\0';
    return gl_valid_name(name, GL_NAME_MAX, false, false);
}

/* --bundle-id, --bundle-version, --bundle-hash into b: all absent (b untouched, *ret_named false), or id and
 * version together, the hash optional. */
static int cli_gl_bundle_ref(const cli_args *a, const char *id, const char *version, const char *hash,
                             bool required, Alma__Guideline__V1__BundleRef *b, bool *ret_named)
{
    *ret_named = false;
    if (!id && !version && !hash) {
        if (required)
            return cli_usage_error("%s: --bundle-id and --bundle-version are required (see %s %s --help)",
                                   a->command, CLI_PROGRAM, a->command);
        return CLI_EXIT_OK;
    }
    if (!id || !version)
        return cli_usage_error("%s: --bundle-id and --bundle-version go together (--bundle-hash optional)",
                               a->command);
    if (!cli_is_word_of(id, 1, CLI_GL_BUNDLE_ID, "._-", false))
        return cli_usage_error("%s: --bundle-id must be 1 to %d of [a-z0-9._-], e.g. alma-referral-core",
                               a->command, CLI_GL_BUNDLE_ID);
    if (!cli_is_word_of(version, 1, CLI_GL_VERSION, ".+_-", true))
        return cli_usage_error("%s: --bundle-version must be 1 to %d of [A-Za-z0-9.+_-], e.g. 1.0.0",
                               a->command, CLI_GL_VERSION);
    if (hash && (strlen(hash) != CLI_GL_HASH_LEN || strspn(hash, "0123456789abcdef") != CLI_GL_HASH_LEN))
        return cli_usage_error("%s: --bundle-hash must be 64 lowercase hex digits (the content hash)",
                               a->command);
    b->bundle_id = (char *)id;
    b->version = (char *)version;
    b->content_hash = (char *)(hash ? hash : "");
    *ret_named = true;
    return CLI_EXIT_OK;
}

/* The optional --start and --end of a period: RFC 3339 UTC, end after start. */
static int cli_gl_period(const cli_args *a, const char *start, const char *end,
                         Google__Protobuf__Timestamp *ts, Google__Protobuf__Timestamp *te)
{
    int rc;
    if (start && (rc = cli_time_option(a, "start", start, ts)))
        return rc;
    if (end && (rc = cli_time_option(a, "end", end, te)))
        return rc;
    if (start && end && (te->seconds < ts->seconds || (te->seconds == ts->seconds && te->nanos <= ts->nanos)))
        return cli_usage_error("%s: --end must be after --start", a->command);
    return CLI_EXIT_OK;
}

/* A JSON file of at most max bytes into a malloc'd NUL-terminated buffer (*ret, *ret_len; free it wiped).
 * The size is checked by fstat before anything is read and again while reading (a pipe has no size), so a
 * large file is refused without reading it all. Messages name the option and the file, never the content. */
static int cli_gl_read_file(const cli_args *a, const char *option, const char *path, size_t max, char **ret,
                            size_t *ret_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        fprintf(stderr, CLI_PROGRAM ": %s: %s: cannot read ", a->command, option);
        cli_put_safe(stderr, path);
        fprintf(stderr, ": %s (nothing was sent)\n", strerror(err));
        return CLI_EXIT_USAGE;
    }
    if (S_ISDIR(st.st_mode) || (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max)) {
        close(fd);
        return cli_usage_error("%s: %s must name a file of at most %zu bytes (nothing was sent)", a->command,
                               option, max);
    }
    char *buf = malloc(max + 2);
    if (!buf) {
        close(fd);
        return cli_usage_error("out of memory");
    }
    size_t n = 0;
    bool ok = true;
    while (n < max + 1) { /* one byte more than allowed tells a longer stream */
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            ok = false;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!ok || n > max || n == 0 || memchr(buf, '\0', n)) {
        explicit_bzero(buf, max + 2);
        free(buf);
        return cli_usage_error("%s: %s must name a readable, non-empty text file of at most %zu bytes "
                               "(nothing was sent)",
                               a->command, option, max);
    }
    buf[n] = '\0';
    *ret = buf;
    *ret_len = n;
    return CLI_EXIT_OK;
}

/* ---- calls */

#define CLI_GL_PEERS                                                                                         \
    "the guideline service takes calls from the alma-cli, gateway, test-client and bench certificates"

static int cli_gl_call(const cli_args *a, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *desc, const char *needs, ProtobufCMessage **resp)
{
    return cli_token_call(a, method, req, desc, needs, CLI_GL_PEERS, resp);
}

#define CLI_GL_NEEDS_REVIEW                                                                                  \
    "referral.review and phi.read.clinical for the patient (a care relationship or break-glass)"

/* ---- output */

static void cli_gl_print_enum_line(const char *name, const cli_enum *e, int value)
{
    char word[CLI_ENUM_WORD_MAX + 1];
    printf("%s: %s\n", name, cli_enum_name(e, value, word, sizeof word));
}

static void cli_gl_print_bundle_ref(const char *name, const Alma__Guideline__V1__BundleRef *b)
{
    fputs(name, stdout);
    fputs(": ", stdout);
    if (!b || !b->bundle_id || !b->bundle_id[0]) {
        fputs("-\n", stdout);
        return;
    }
    cli_put_field(stdout, b->bundle_id);
    fputc(' ', stdout);
    cli_put_field(stdout, b->version);
    fputc(' ', stdout);
    cli_put_field(stdout, b->content_hash);
    fputc('\n', stdout);
}

static void cli_gl_print_list(const char *name, char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cli_print_line(name, items[i]);
}

/* One line per fired rule: "<label>: <rule_id> <values_json>". */
static void cli_gl_print_fired(const char *label, Alma__Guideline__V1__FiredRule *const *fired, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!fired[i])
            continue;
        printf("%s: ", label);
        cli_put_field(stdout, fired[i]->rule_id);
        fputc(' ', stdout);
        cli_put_field(stdout, fired[i]->values_json);
        fputc('\n', stdout);
    }
}

static void cli_gl_print_review(const Alma__Guideline__V1__Review *r)
{
    cli_print_line("review_id", r->review_id);
    cli_print_line("tenant_id", r->tenant_id);
    cli_print_line("referral_id", r->referral_id);
    cli_print_line("patient_ref", r->patient_ref);
    cli_print_line("clinician_id", r->clinician_id);
    cli_gl_print_enum_line("outcome", &cli_enum_gl_outcome, (int)r->outcome);
    if (r->urgency == ALMA__GUIDELINE__V1__URGENCY__URGENCY_UNSPECIFIED)
        fputs("urgency: -\n", stdout);
    else
        cli_gl_print_enum_line("urgency", &cli_enum_gl_urgency, (int)r->urgency);
    cli_print_line("pathway_id", r->pathway_id);
    cli_print_line("rule_id", r->rule_id);
    cli_print_line("explain", r->explain);
    cli_gl_print_list("test", r->tests, r->n_tests);
    cli_gl_print_list("step", r->steps, r->n_steps);
    cli_gl_print_list("need", r->needs, r->n_needs);
    cli_gl_print_fired("fired", r->fired, r->n_fired);
    for (size_t i = 0; i < r->n_citations; i++) {
        const Alma__Guideline__V1__Citation *c = r->citations[i];
        if (!c)
            continue;
        fputs("citation: ", stdout);
        cli_put_field(stdout, c->rule_id);
        fputs(": ", stdout);
        cli_put_field(stdout, c->guideline);
        printf(" %" PRId32 ", ", c->year);
        cli_put_field(stdout, c->section);
        fputc('\n', stdout);
    }
    cli_gl_print_bundle_ref("bundle", r->bundle);
    cli_print_line("engine_version", r->engine_version);
    cli_print_line("input_hash", r->input_hash);
    cli_print_time_line("create_time", r->create_time);
}

/* The canonical recommendation JSON, as the engine wrote it (control characters replaced). */
static void cli_gl_print_recommendation(const Alma__Guideline__V1__Review *r)
{
    const uint8_t *p = r->recommendation_json.data;
    for (size_t i = 0; i < r->recommendation_json.len; i++)
        fputc(p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i], stdout);
    fputc('\n', stdout);
}

static void cli_gl_print_decision(const Alma__Guideline__V1__Decision *d)
{
    cli_print_line("decision_id", d->decision_id);
    cli_print_line("review_id", d->review_id);
    cli_print_line("tenant_id", d->tenant_id);
    cli_print_line("clinician_id", d->clinician_id);
    cli_gl_print_enum_line("kind", &cli_enum_gl_kind, (int)d->kind);
    if (d->reason == ALMA__GUIDELINE__V1__OVERRIDE_REASON__OVERRIDE_REASON_UNSPECIFIED)
        fputs("reason: -\n", stdout);
    else
        cli_gl_print_enum_line("reason", &cli_enum_gl_reason, (int)d->reason);
    cli_print_time_line("create_time", d->create_time);
}

/* ---- guideline-review */

/* The stateless input: read (at most GL_INPUT_MAX_BYTES), a JSON object; its specialty and reason codes are
 * the defaults of --specialty and --reason-code (the request's replace the input's in the service). */
static int cli_gl_load_input(const cli_args *a, const char *path, char **ret_text, json_t **ret_root)
{
    char *text = NULL;
    size_t n = 0;
    int rc = cli_gl_read_file(a, "--input", path, GL_INPUT_MAX_BYTES, &text, &n);
    if (rc)
        return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        /* Where, never what: jansson's text may quote the input. */
        if (root)
            rc = cli_usage_error("%s: --input must hold one JSON object, the referral input of "
                                 "services/guideline/BUNDLE-FORMAT.md (nothing was sent)",
                                 a->command);
        else
            rc = cli_usage_error("%s: --input is not valid JSON (line %d, column %d; nothing was sent)",
                                 a->command, jerr.line, jerr.column);
        json_decref(root);
        explicit_bzero(text, n);
        free(text);
        return rc;
    }
    *ret_text = text;
    *ret_root = root;
    return CLI_EXIT_OK;
}

static int cli_cmd_guideline_review(cli_args *a)
{
    const char *tenant = NULL, *referral = NULL, *patient = NULL, *input = NULL, *specialty = NULL,
               *bundle_id = NULL, *bundle_version = NULL, *bundle_hash = NULL;
    const char *reason_items[CLI_GL_REASONS_MAX], *flag_items[CLI_GL_FLAGS_MAX],
        *finding_items[CLI_GL_FINDINGS_MAX];
    cli_list reasons = {reason_items, 0, CLI_GL_REASONS_MAX};
    cli_list flags = {flag_items, 0, CLI_GL_FLAGS_MAX};
    cli_list findings = {finding_items, 0, CLI_GL_FINDINGS_MAX};
    bool from_vault = false, as_json = false;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "referral", .text = &referral, .max = CLI_GL_REFERRAL_MAX},
        {.name = "patient", .text = &patient, .max = CLI_VAULT_ID_LEN},
        {.name = "input", .text = &input, .max = CLI_PATH_MAX, .path = true},
        {.name = "from-vault", .flag = &from_vault},
        {.name = "specialty", .text = &specialty, .max = CLI_GL_SPECIALTY},
        {.name = "reason-code", .list = &reasons, .max = CLI_GL_ICD10_MAX},
        {.name = "flag", .list = &flags, .max = CLI_GL_PAIR_MAX},
        {.name = "finding", .list = &findings, .max = CLI_GL_PAIR_MAX},
        {.name = "bundle-id", .text = &bundle_id, .max = CLI_GL_BUNDLE_ID},
        {.name = "bundle-version", .text = &bundle_version, .max = CLI_GL_VERSION},
        {.name = "bundle-hash", .text = &bundle_hash, .max = CLI_GL_HASH_LEN},
        {.name = "json", .flag = &as_json},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_gl_referral(a, "referral", referral)) ||
        (rc = cli_vault_patient(a, patient)))
        return rc;
    if ((input != NULL) == from_vault)
        return cli_usage_error("%s: give exactly one of --input FILE (stateless) and --from-vault (see %s %s "
                               "--help)",
                               a->command, CLI_PROGRAM, a->command);
    if (specialty && !gl_valid_name(specialty, GL_NAME_MAX, true, true))
        return cli_usage_error("%s: --specialty must be [a-z0-9][a-z0-9_-]{0,63}, e.g. nephrology",
                               a->command);
    for (size_t i = 0; i < reasons.count; i++)
        if (!gl_valid_icd10(reason_items[i]))
            return cli_usage_error("%s: --reason-code must be an ICD-10-CM code such as N18.31 (upper case)",
                                   a->command);
    if (from_vault && (!specialty || reasons.count == 0))
        return cli_usage_error("%s: --from-vault needs --specialty and at least one --reason-code",
                               a->command);

    /* --flag NAME=true|false, --finding NAME=VALUE */
    Alma__Guideline__V1__ReviewReferralRequest__FlagsEntry flag_msgs[CLI_GL_FLAGS_MAX];
    Alma__Guideline__V1__ReviewReferralRequest__FlagsEntry *flag_ptrs[CLI_GL_FLAGS_MAX];
    char flag_names[CLI_GL_FLAGS_MAX][CLI_GL_NAME_MAX + 1];
    for (size_t i = 0; i < flags.count; i++) {
        const char *eq = strchr(flag_items[i], '=');
        size_t n = eq ? (size_t)(eq - flag_items[i]) : 0;
        bool value = eq && strcmp(eq + 1, "true") == 0;
        if (!eq || !cli_is_gl_name(flag_items[i], n) || (!value && strcmp(eq + 1, "false") != 0))
            return cli_usage_error("%s: --flag must be NAME=true or NAME=false, NAME [a-z][a-z0-9_]{0,63}",
                                   a->command);
        for (size_t k = 0; k < i; k++)
            if (strlen(flag_names[k]) == n && strncmp(flag_names[k], flag_items[i], n) == 0)
                return cli_usage_error("%s: --flag names a flag twice", a->command);
        memcpy(flag_names[i], flag_items[i], n);
        flag_names[i][n] = '\0';
        alma__guideline__v1__review_referral_request__flags_entry__init(&flag_msgs[i]);
        flag_msgs[i].key = flag_names[i];
        flag_msgs[i].value = value;
        flag_ptrs[i] = &flag_msgs[i];
    }
    Alma__Guideline__V1__ReviewReferralRequest__FindingsEntry finding_msgs[CLI_GL_FINDINGS_MAX];
    Alma__Guideline__V1__ReviewReferralRequest__FindingsEntry *finding_ptrs[CLI_GL_FINDINGS_MAX];
    char finding_names[CLI_GL_FINDINGS_MAX][CLI_GL_NAME_MAX + 1];
    for (size_t i = 0; i < findings.count; i++) {
        const char *eq = strchr(finding_items[i], '=');
        size_t n = eq ? (size_t)(eq - finding_items[i]) : 0;
        if (!eq || !cli_is_gl_name(finding_items[i], n) || strlen(eq + 1) < 1 ||
            strlen(eq + 1) > GL_INPUT_MAX_TEXT)
            return cli_usage_error(
                "%s: --finding must be NAME=VALUE, NAME [a-z][a-z0-9_]{0,63}, VALUE a number "
                "or 1 to %d bytes of text",
                a->command, GL_INPUT_MAX_TEXT);
        for (size_t k = 0; k < i; k++)
            if (strlen(finding_names[k]) == n && strncmp(finding_names[k], finding_items[i], n) == 0)
                return cli_usage_error("%s: --finding names a finding twice", a->command);
        memcpy(finding_names[i], finding_items[i], n);
        finding_names[i][n] = '\0';
        alma__guideline__v1__review_referral_request__findings_entry__init(&finding_msgs[i]);
        finding_msgs[i].key = finding_names[i];
        finding_msgs[i].value = (char *)(eq + 1);
        finding_ptrs[i] = &finding_msgs[i];
    }
    Alma__Guideline__V1__BundleRef bref = ALMA__GUIDELINE__V1__BUNDLE_REF__INIT;
    bool named = false;
    if ((rc = cli_gl_bundle_ref(a, bundle_id, bundle_version, bundle_hash, false, &bref, &named)))
        return rc;

    char *text = NULL; /* the input: PHI, wiped */
    json_t *root = NULL;
    if (input && (rc = cli_gl_load_input(a, input, &text, &root)))
        return rc;
    /* Stateless: the input's specialty and reason codes unless given on the command line. */
    if (root && !specialty) {
        specialty = json_string_value(json_object_get(root, "specialty"));
        if (!specialty || !gl_valid_name(specialty, GL_NAME_MAX, true, true))
            rc = cli_usage_error("%s: --specialty is required: the --input has no valid \"specialty\"",
                                 a->command);
    }
    if (rc == CLI_EXIT_OK && root && reasons.count == 0) {
        json_t *codes = json_object_get(root, "reason_codes");
        size_t n = json_array_size(codes);
        if (n < 1 || n > CLI_GL_REASONS_MAX)
            rc = cli_usage_error("%s: --reason-code is required: the --input has no \"reason_codes\" (1 to "
                                 "%d)",
                                 a->command, CLI_GL_REASONS_MAX);
        for (size_t i = 0; rc == CLI_EXIT_OK && i < n; i++) {
            const char *code = json_string_value(json_array_get(codes, i));
            if (!code || !gl_valid_icd10(code))
                rc = cli_usage_error("%s: --input \"reason_codes\" must be ICD-10-CM codes such as N18.31",
                                     a->command);
            else
                reason_items[reasons.count++] = code;
        }
    }
    if (rc == CLI_EXIT_OK) {
        Alma__Guideline__V1__ReviewReferralRequest req = ALMA__GUIDELINE__V1__REVIEW_REFERRAL_REQUEST__INIT;
        req.tenant_id = (char *)tenant;
        req.referral_id = (char *)referral;
        req.patient_ref = (char *)patient;
        req.specialty = (char *)specialty;
        req.reason_codes = (char **)reason_items;
        req.n_reason_codes = reasons.count;
        if (from_vault) {
            req.data_case = ALMA__GUIDELINE__V1__REVIEW_REFERRAL_REQUEST__DATA_FROM_VAULT;
            req.from_vault = true;
        } else {
            req.data_case = ALMA__GUIDELINE__V1__REVIEW_REFERRAL_REQUEST__DATA_INPUT_JSON;
            req.input_json = text;
        }
        req.flags = flag_ptrs;
        req.n_flags = flags.count;
        req.findings = finding_ptrs;
        req.n_findings = findings.count;
        if (named)
            req.bundle = &bref;
        ProtobufCMessage *resp = NULL;
        rc = cli_gl_call(a, GUIDELINE_RPC("ReviewReferral"), &req.base,
                         &alma__guideline__v1__review__descriptor, CLI_GL_NEEDS_REVIEW, &resp);
        if (rc == CLI_EXIT_OK) {
            const Alma__Guideline__V1__Review *r = (const Alma__Guideline__V1__Review *)resp;
            if (as_json) {
                cli_gl_print_recommendation(r);
                fprintf(stderr, CLI_PROGRAM ": %s: review ", a->command);
                cli_put_field(stderr, r->review_id);
                fputc('\n', stderr);
            } else {
                cli_gl_print_review(r);
            }
            fflush(stdout);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    json_decref(root);
    if (text) {
        explicit_bzero(text, strlen(text));
        free(text);
    }
    return rc;
}

/* ---- guideline-decide */

static int cli_cmd_guideline_decide(cli_args *a)
{
    const char *tenant = NULL, *review = NULL, *reason = NULL, *comment = NULL;
    bool accept = false, override = false;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "review", .text = &review, .max = CLI_GL_REVIEW_LEN},
        {.name = "accept", .flag = &accept},
        {.name = "override", .flag = &override},
        {.name = "reason", .text = &reason, .max = CLI_ENUM_WORD_MAX},
        {.name = "comment", .text = &comment, .max = CLI_GL_COMMENT_MAX},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)))
        return rc;
    if (!review)
        return cli_usage_error("%s: --review rv_... is required (see %s %s --help)", a->command, CLI_PROGRAM,
                               a->command);
    if (!cli_is_vault_id(review, "rv_"))
        return cli_usage_error("%s: --review must be a review id: rv_ and 32 lowercase hex digits",
                               a->command);
    if (accept == override)
        return cli_usage_error("%s: give exactly one of --accept and --override (see %s %s --help)",
                               a->command, CLI_PROGRAM, a->command);
    int why = 0;
    if (override && !reason) {
        fprintf(stderr, CLI_PROGRAM ": %s: --override needs --reason, one of: ", a->command);
        cli_enum_choices(&cli_enum_gl_reason, stderr);
        fputs(" (nothing was sent)\n", stderr);
        return CLI_EXIT_USAGE;
    }
    if (accept && reason)
        return cli_usage_error("%s: --reason goes with --override only", a->command);
    if ((rc = cli_enum_option(a, "reason", &cli_enum_gl_reason, reason, &why)))
        return rc;
    Alma__Guideline__V1__RecordDecisionRequest req = ALMA__GUIDELINE__V1__RECORD_DECISION_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.review_id = (char *)review;
    req.kind = accept ? ALMA__GUIDELINE__V1__DECISION_KIND__DECISION_KIND_ACCEPT
                      : ALMA__GUIDELINE__V1__DECISION_KIND__DECISION_KIND_OVERRIDE;
    req.reason = (Alma__Guideline__V1__OverrideReason)why;
    req.comment = (char *)(comment ? comment : "");
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_gl_call(a, GUIDELINE_RPC("RecordDecision"), &req.base,
                          &alma__guideline__v1__decision__descriptor, CLI_GL_NEEDS_REVIEW, &resp)))
        return rc;
    cli_gl_print_decision((const Alma__Guideline__V1__Decision *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_EXIT_OK;
}

/* ---- guideline-history */

static int cli_cmd_guideline_history(cli_args *a)
{
    const char *tenant = NULL, *referral = NULL;
    bool as_json = false;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "referral", .text = &referral, .max = CLI_GL_REFERRAL_MAX},
        {.name = "json", .flag = &as_json},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_gl_referral(a, "referral", referral)))
        return rc;
    Alma__Guideline__V1__GetReferralHistoryRequest req =
        ALMA__GUIDELINE__V1__GET_REFERRAL_HISTORY_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.referral_id = (char *)referral;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_gl_call(a, GUIDELINE_RPC("GetReferralHistory"), &req.base,
                          &alma__guideline__v1__referral_history__descriptor, CLI_GL_NEEDS_REVIEW, &resp)))
        return rc;
    const Alma__Guideline__V1__ReferralHistory *h = (const Alma__Guideline__V1__ReferralHistory *)resp;
    if (as_json) {
        rc = cli_print_pb_json(a, resp, true) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    } else {
        char t[CLI_TIME_LEN], w1[CLI_ENUM_WORD_MAX + 1], w2[CLI_ENUM_WORD_MAX + 1];
        for (size_t i = 0; i < h->n_reviews; i++) {
            const Alma__Guideline__V1__Review *r = h->reviews[i];
            if (!r)
                continue;
            printf("review\t%s\t", cli_format_time(r->create_time, t));
            cli_put_field(stdout, r->review_id);
            printf("\t%s\t%s\t", cli_enum_name(&cli_enum_gl_outcome, (int)r->outcome, w1, sizeof w1),
                   r->urgency ? cli_enum_name(&cli_enum_gl_urgency, (int)r->urgency, w2, sizeof w2) : "-");
            cli_put_field(stdout, r->pathway_id);
            fputc('\t', stdout);
            cli_put_field(stdout, r->rule_id);
            fputc('\t', stdout);
            cli_put_field(stdout, r->bundle ? r->bundle->bundle_id : NULL);
            fputc('@', stdout);
            cli_put_field(stdout, r->bundle ? r->bundle->version : NULL);
            fputc('\t', stdout);
            cli_put_field(stdout, r->clinician_id);
            fputc('\n', stdout);
        }
        for (size_t i = 0; i < h->n_decisions; i++) {
            const Alma__Guideline__V1__Decision *d = h->decisions[i];
            if (!d)
                continue;
            printf("decision\t%s\t", cli_format_time(d->create_time, t));
            cli_put_field(stdout, d->decision_id);
            fputc('\t', stdout);
            cli_put_field(stdout, d->review_id);
            printf("\t%s\t%s\t", cli_enum_name(&cli_enum_gl_kind, (int)d->kind, w1, sizeof w1),
                   d->reason ? cli_enum_name(&cli_enum_gl_reason, (int)d->reason, w2, sizeof w2) : "-");
            cli_put_field(stdout, d->clinician_id);
            fputc('\t', stdout);
            cli_put_field(stdout, d->comment);
            fputc('\n', stdout);
        }
    }
    fflush(stdout);
    if (rc == CLI_EXIT_OK)
        fprintf(stderr, CLI_PROGRAM ": %s: %zu review%s, %zu decision%s\n", a->command, h->n_reviews,
                h->n_reviews == 1 ? "" : "s", h->n_decisions, h->n_decisions == 1 ? "" : "s");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- guideline-bundles, guideline-publish */

static void cli_gl_print_bundle_line(const Alma__Guideline__V1__BundleInfo *b)
{
    char t[CLI_TIME_LEN];
    cli_put_field(stdout, b->bundle ? b->bundle->bundle_id : NULL);
    fputc('\t', stdout);
    cli_put_field(stdout, b->bundle ? b->bundle->version : NULL);
    printf("\t%s\t", b->active ? "active" : "inactive");
    cli_put_field(stdout, b->bundle ? b->bundle->content_hash : NULL);
    printf("\t%s\t", cli_format_time(b->publish_time, t));
    cli_put_field(stdout, b->published_by);
    printf("\t%zu pathways\t", b->n_pathway_ids);
    cli_put_field(stdout, b->title);
    fputc('\n', stdout);
}

static int cli_cmd_guideline_bundles(cli_args *a)
{
    bool as_json = false;
    const cli_option opts[] = {{.name = "json", .flag = &as_json}};
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    Alma__Guideline__V1__ListBundlesRequest req = ALMA__GUIDELINE__V1__LIST_BUNDLES_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_gl_call(a, GUIDELINE_RPC("ListBundles"), &req.base,
                          &alma__guideline__v1__list_bundles_response__descriptor, "an access token", &resp)))
        return rc;
    const Alma__Guideline__V1__ListBundlesResponse *l =
        (const Alma__Guideline__V1__ListBundlesResponse *)resp;
    for (size_t i = 0; i < l->n_bundles && rc == CLI_EXIT_OK; i++) {
        if (!l->bundles[i])
            continue;
        if (as_json)
            rc = cli_print_pb_json(a, &l->bundles[i]->base, false) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
        else
            cli_gl_print_bundle_line(l->bundles[i]);
    }
    fflush(stdout);
    fprintf(stderr, CLI_PROGRAM ": %s: %zu bundle%s\n", a->command, l->n_bundles,
            l->n_bundles == 1 ? "" : "s");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cli_cmd_guideline_publish(cli_args *a)
{
    const char *file = NULL;
    bool activate = false, as_json = false;
    const cli_option opts[] = {
        {.name = "file", .text = &file, .max = CLI_PATH_MAX, .path = true},
        {.name = "activate", .flag = &activate},
        {.name = "json", .flag = &as_json},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    if (!file)
        return cli_usage_error("%s: --file BUNDLE.json is required (see %s %s --help)", a->command,
                               CLI_PROGRAM, a->command);
    char *text = NULL;
    size_t n = 0;
    if ((rc = cli_gl_read_file(a, "--file", file, GL_BUNDLE_MAX_BYTES, &text, &n)))
        return rc;
    /* The service's own loader first: a bad bundle is a usage error naming the rule, and nothing is sent.
     * Bundles are clinical content, not PHI: the loader's message may quote them. */
    gl_bundle *b = NULL;
    base_result r = gl_bundle_load(text, n, &b);
    if (!base_is_ok(r)) {
        fprintf(stderr, CLI_PROGRAM ": %s: --file: ", a->command);
        cli_put_safe(stderr, base_error_message());
        fputs(" (nothing was sent)\n", stderr);
        free(text);
        return CLI_EXIT_USAGE;
    }
    gl_bundle_free(b);
    Alma__Guideline__V1__PublishBundleRequest req = ALMA__GUIDELINE__V1__PUBLISH_BUNDLE_REQUEST__INIT;
    req.bundle_json = text;
    req.activate = activate;
    ProtobufCMessage *resp = NULL;
    rc = cli_gl_call(a, GUIDELINE_RPC("PublishBundle"), &req.base,
                     &alma__guideline__v1__bundle_info__descriptor,
                     "guideline.content.publish (platform_admin)", &resp);
    free(text);
    if (rc)
        return rc;
    const Alma__Guideline__V1__BundleInfo *info = (const Alma__Guideline__V1__BundleInfo *)resp;
    if (as_json) {
        rc = cli_print_pb_json(a, resp, true) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    } else {
        cli_print_line("bundle_id", info->bundle ? info->bundle->bundle_id : NULL);
        cli_print_line("version", info->bundle ? info->bundle->version : NULL);
        cli_print_line("content_hash", info->bundle ? info->bundle->content_hash : NULL);
        cli_print_line("title", info->title);
        cli_gl_print_list("pathway", info->pathway_ids, info->n_pathway_ids);
        printf("active: %s\n", info->active ? "yes" : "no");
        cli_print_time_line("publish_time", info->publish_time);
        cli_print_line("published_by", info->published_by);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- guideline-whatif */

static int cli_cmd_guideline_whatif(cli_args *a)
{
    const char *tenant = NULL, *bundle_id = NULL, *bundle_version = NULL, *bundle_hash = NULL, *start = NULL,
               *end = NULL;
    const char **ids = calloc(CLI_GL_WHATIF_IDS, sizeof *ids);
    if (!ids)
        return cli_usage_error("out of memory");
    cli_list referrals = {ids, 0, CLI_GL_WHATIF_IDS};
    uint32_t max = 0;
    bool as_json = false;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "bundle-id", .text = &bundle_id, .max = CLI_GL_BUNDLE_ID},
        {.name = "bundle-version", .text = &bundle_version, .max = CLI_GL_VERSION},
        {.name = "bundle-hash", .text = &bundle_hash, .max = CLI_GL_HASH_LEN},
        {.name = "referral", .list = &referrals, .max = CLI_GL_REFERRAL_MAX},
        {.name = "start", .text = &start, .max = CLI_TIME_WORD_MAX},
        {.name = "end", .text = &end, .max = CLI_TIME_WORD_MAX},
        {.name = "max", .number = &max, .max = CLI_GL_WHATIF_MAX},
        {.name = "json", .flag = &as_json},
    };
    Alma__Guideline__V1__BundleRef to = ALMA__GUIDELINE__V1__BUNDLE_REF__INIT;
    Google__Protobuf__Timestamp ts, te;
    bool named = false;
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (!rc)
        rc = cli_vault_tenant(a, tenant);
    if (!rc)
        rc = cli_gl_bundle_ref(a, bundle_id, bundle_version, bundle_hash, true, &to, &named);
    for (size_t i = 0; !rc && i < referrals.count; i++)
        rc = cli_gl_referral(a, "referral", ids[i]);
    if (!rc)
        rc = cli_gl_period(a, start, end, &ts, &te);
    if (rc) {
        free(ids);
        return rc;
    }
    Alma__Guideline__V1__WhatIfRequest req = ALMA__GUIDELINE__V1__WHAT_IF_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.bundle = &to;
    req.referral_ids = (char **)ids;
    req.n_referral_ids = referrals.count;
    req.start_time = start ? &ts : NULL;
    req.end_time = end ? &te : NULL;
    req.max_referrals = (int32_t)max;
    ProtobufCMessage *resp = NULL;
    rc = cli_gl_call(a, GUIDELINE_RPC("WhatIf"), &req.base, &alma__guideline__v1__what_if_report__descriptor,
                     "referral.read.plan, audit.read or referral.review", &resp);
    free(ids);
    if (rc)
        return rc;
    const Alma__Guideline__V1__WhatIfReport *w = (const Alma__Guideline__V1__WhatIfReport *)resp;
    if (as_json) {
        rc = cli_print_pb_json(a, resp, true) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    } else {
        cli_gl_print_bundle_ref("from_bundle", w->from_bundle);
        cli_gl_print_bundle_ref("to_bundle", w->to_bundle);
        printf("compared: %" PRId32 "\nchanged: %" PRId32 "\n", w->compared, w->changed);
        char o1[CLI_ENUM_WORD_MAX + 1], o2[CLI_ENUM_WORD_MAX + 1], u1[CLI_ENUM_WORD_MAX + 1],
            u2[CLI_ENUM_WORD_MAX + 1];
        for (size_t i = 0; i < w->n_changes; i++) {
            const Alma__Guideline__V1__WhatIfChange *c = w->changes[i];
            if (!c)
                continue;
            fputs("change: ", stdout);
            cli_put_field(stdout, c->referral_id);
            fputc(' ', stdout);
            cli_put_field(stdout, c->review_id);
            printf(" %s -> %s (", cli_enum_name(&cli_enum_gl_outcome, (int)c->old_outcome, o1, sizeof o1),
                   cli_enum_name(&cli_enum_gl_outcome, (int)c->new_outcome, o2, sizeof o2));
            cli_put_field(stdout, c->old_rule_id);
            fputs(" -> ", stdout);
            cli_put_field(stdout, c->new_rule_id);
            printf("; urgency %s -> %s)\n",
                   c->old_urgency ? cli_enum_name(&cli_enum_gl_urgency, (int)c->old_urgency, u1, sizeof u1)
                                  : "-",
                   c->new_urgency ? cli_enum_name(&cli_enum_gl_urgency, (int)c->new_urgency, u2, sizeof u2)
                                  : "-");
            if (strcmp(c->old_pathway_id, c->new_pathway_id) != 0) {
                fputs("  pathway: ", stdout);
                cli_put_field(stdout, c->old_pathway_id[0] ? c->old_pathway_id : "-");
                fputs(" -> ", stdout);
                cli_put_field(stdout, c->new_pathway_id[0] ? c->new_pathway_id : "-");
                fputc('\n', stdout);
            }
            if (c->new_error[0]) {
                fputs("  refused by the version tried: ", stdout);
                cli_put_field(stdout, c->new_error);
                fputc('\n', stdout);
            }
            cli_gl_print_fired("  was fired", c->old_fired, c->n_old_fired);
            cli_gl_print_fired("  now fired", c->new_fired, c->n_new_fired);
            if (c->new_explain[0]) {
                fputs("  now: ", stdout);
                cli_put_field(stdout, c->new_explain);
                fputc('\n', stdout);
            }
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- guideline-concordance */

static int cli_cmd_guideline_concordance(cli_args *a)
{
    const char *tenant = NULL, *start = NULL, *end = NULL, *pathway = NULL, *clinician = NULL;
    bool as_json = false;
    const cli_option opts[] = {
        {.name = "tenant", .text = &tenant, .max = CLI_TENANT_ID_MAX},
        {.name = "start", .text = &start, .max = CLI_TIME_WORD_MAX},
        {.name = "end", .text = &end, .max = CLI_TIME_WORD_MAX},
        {.name = "pathway", .text = &pathway, .max = CLI_GL_PATHWAY_MAX},
        {.name = "clinician", .text = &clinician, .max = CLI_PRINCIPAL_MAX},
        {.name = "json", .flag = &as_json},
    };
    int rc = cli_parse_command_args(a, opts, BASE_ARRAY_LEN(opts), 0, 0);
    if (rc)
        return rc;
    Google__Protobuf__Timestamp ts, te;
    if ((rc = cli_vault_tenant(a, tenant)) || (rc = cli_gl_period(a, start, end, &ts, &te)))
        return rc;
    if (pathway && !cli_is_word_of(pathway, 1, CLI_GL_PATHWAY_MAX, "_-", false))
        return cli_usage_error(
            "%s: --pathway must be a pathway id: 1 to %d of [a-z0-9_-], e.g. ckd-nephrology", a->command,
            CLI_GL_PATHWAY_MAX);
    if (clinician && (rc = cli_check_principal(a, "clinician", clinician)))
        return rc;
    Alma__Guideline__V1__GetConcordanceRequest req = ALMA__GUIDELINE__V1__GET_CONCORDANCE_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    req.start_time = start ? &ts : NULL;
    req.end_time = end ? &te : NULL;
    req.pathway_id = (char *)(pathway ? pathway : "");
    req.clinician_id = (char *)(clinician ? clinician : "");
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_gl_call(a, GUIDELINE_RPC("GetConcordance"), &req.base,
                          &alma__guideline__v1__concordance_report__descriptor,
                          "referral.read.plan or audit.read", &resp)))
        return rc;
    const Alma__Guideline__V1__ConcordanceReport *rep = (const Alma__Guideline__V1__ConcordanceReport *)resp;
    for (size_t i = 0; i < rep->n_rows && rc == CLI_EXIT_OK; i++) {
        const Alma__Guideline__V1__ConcordanceRow *row = rep->rows[i];
        if (!row)
            continue;
        if (as_json) {
            rc = cli_print_pb_json(a, &row->base, false) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
            continue;
        }
        cli_put_field(stdout, row->pathway_id);
        fputc('\t', stdout);
        cli_put_field(stdout, row->clinician_id);
        printf("\treviews=%" PRId64 " refer=%" PRId64 " workup=%" PRId64 " manage=%" PRId64
               " insufficient=%" PRId64 " decided=%" PRId64 " accepted=%" PRId64 " overridden=%" PRId64 "\t",
               row->reviews, row->refer, row->workup, row->manage, row->insufficient, row->decided,
               row->accepted, row->overridden);
        if (row->n_override_reasons == 0)
            fputc('-', stdout);
        for (size_t k = 0; k < row->n_override_reasons; k++) {
            const Alma__Guideline__V1__ConcordanceRow__OverrideReasonsEntry *e = row->override_reasons[k];
            if (!e)
                continue;
            const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(
                &alma__guideline__v1__override_reason__descriptor, e->key);
            char word[CLI_ENUM_WORD_MAX + 1];
            if (k)
                fputc(',', stdout);
            if (v)
                fputs(cli_enum_name(&cli_enum_gl_reason, v->value, word, sizeof word), stdout);
            else
                cli_put_field(stdout, e->key);
            printf("=%" PRId64, e->value);
        }
        fputc('\n', stdout);
    }
    fflush(stdout);
    fprintf(stderr, CLI_PROGRAM ": %s: %zu row%s\n", a->command, rep->n_rows, rep->n_rows == 1 ? "" : "s");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- help of the guideline commands */

static void cli_help_guideline_common(FILE *out)
{
    fputs(
        "Needs an access token (--token-file F or ALMA_CLI_TOKEN) and --addr of the guideline service (the\n"
        "local stack: 127.0.0.1:7447). Reviews, decisions and history reads are recorded in the audit log.\n"
        "Error messages name options and fields, never their values. Exit status 2: refused before anything\n"
        "was sent; 1: the call failed.\n",
        out);
}

static void cli_help_guideline_review(FILE *out)
{
    fprintf(
        out,
        "  --tenant T                 the tenant id, required\n"
        "  --referral ID              your referral id, 1 to %d of [A-Za-z0-9_-], required; reviews of one\n"
        "                             referral share it (guideline-history)\n"
        "  --patient pt_<32 hex>      the patient, required (a care relationship or break-glass grant)\n"
        "One source of the clinical data:\n"
        "  --input FILE               stateless: the referral input JSON of\n"
        "                             services/guideline/BUNDLE-FORMAT.md (at most %d bytes; the size is\n"
        "                             checked before it is read); tests/guideline/vignettes/ has examples\n"
        "  --from-vault               the patient's problems, observations and medications in the vault\n"
        "  --specialty S              nephrology, endocrinology, gastroenterology, orthopaedics, ...\n"
        "                             (default with --input: the input's \"specialty\")\n"
        "  --reason-code ICD10        the referral's reason, repeatable (1 to %d; default with --input: the\n"
        "                             input's \"reason_codes\"); both required with --from-vault\n"
        "  --flag NAME=true|false     a clinician-stated finding (red flag), repeatable (at most %d)\n"
        "  --finding NAME=VALUE       a named value, e.g. thyroid_nodule_size_cm=1.4 (at most %d)\n"
        "  --bundle-id ID --bundle-version V [--bundle-hash HEX]\n"
        "                             review against that bundle (default: the active one)\n"
        "  --json                     print the engine's canonical recommendation JSON instead (the\n"
        "                             review id goes to stderr)\n"
        "Prints review_id:, tenant_id:, referral_id:, patient_ref:, clinician_id:, outcome: (refer, workup,\n"
        "manage, insufficient, no-pathway), urgency:, pathway_id:, rule_id:, explain:, test:/step:/need:\n"
        "lines, one fired: line per rule that fired with the values it used (JSON), one citation: line per\n"
        "citation, bundle: (id, version, content hash), engine_version:, input_hash: and create_time:.\n"
        "Needs " CLI_GL_NEEDS_REVIEW ".\n",
        CLI_GL_REFERRAL_MAX, GL_INPUT_MAX_BYTES, CLI_GL_REASONS_MAX, CLI_GL_FLAGS_MAX, CLI_GL_FINDINGS_MAX);
    cli_help_guideline_common(out);
}

static void cli_help_guideline_decide(FILE *out)
{
    fprintf(out, "  --tenant T                 the tenant id, required\n"
                 "  --review rv_<32 hex>       the review (guideline-review prints it), required\n"
                 "  --accept                   accept the recommendation, or\n"
                 "  --override --reason CODE   override it; the reason is required, one of:\n"
                 "                             ");
    cli_enum_choices(&cli_enum_gl_reason, out);
    fprintf(out,
            "\n"
            "  --comment TEXT             optional, at most %d bytes (may hold PHI: shown only to callers\n"
            "                             allowed to see the patient's reviews, never logged or audited)\n"
            "Once per review (ALREADY_EXISTS after that). Prints decision_id:, review_id:, tenant_id:,\n"
            "clinician_id:, kind:, reason: and create_time:.\nNeeds " CLI_GL_NEEDS_REVIEW ".\n",
            CLI_GL_COMMENT_MAX);
    cli_help_guideline_common(out);
}

static void cli_help_guideline_history(FILE *out)
{
    fputs("  --tenant T, --referral ID   required\n"
          "  --json                     the ReferralHistory as JSON (recommendation_json base64)\n"
          "Tab-separated lines, oldest first: every review\n"
          "  review TIME REVIEW_ID OUTCOME URGENCY PATHWAY RULE BUNDLE@VERSION CLINICIAN\n"
          "then every decision\n"
          "  decision TIME DECISION_ID REVIEW_ID KIND REASON CLINICIAN COMMENT\n"
          "and the counts on stderr.\nNeeds " CLI_GL_NEEDS_REVIEW ".\n",
          out);
    cli_help_guideline_common(out);
}

static void cli_help_guideline_bundles(FILE *out)
{
    fputs("  --json                     one BundleInfo as JSON per line instead of text\n"
          "Tab-separated lines: BUNDLE_ID VERSION active|inactive CONTENT_HASH PUBLISH_TIME PUBLISHED_BY\n"
          "N pathways TITLE. Any authenticated caller.\n",
          out);
    cli_help_guideline_common(out);
}

static void cli_help_guideline_publish(FILE *out)
{
    fprintf(
        out,
        "  --file BUNDLE.json         the bundle (services/guideline/BUNDLE-FORMAT.md), at most %d bytes,\n"
        "                             required; the size is checked before it is read, then the bundle\n"
        "                             is checked with the service's own loader before it is sent\n"
        "  --activate                 make it the active bundle (new reviews use it)\n"
        "  --json                     the BundleInfo as JSON\n"
        "A published bundle is immutable: the same id and version with other content is refused. Prints\n"
        "bundle_id:, version:, content_hash:, title:, one pathway: line per pathway, active:,\n"
        "publish_time: and published_by:. Needs guideline.content.publish (platform_admin).\n",
        GL_BUNDLE_MAX_BYTES);
    cli_help_guideline_common(out);
}

static void cli_help_guideline_whatif(FILE *out)
{
    fprintf(out,
            "  --tenant T                 the tenant id, required\n"
            "  --bundle-id ID --bundle-version V [--bundle-hash HEX]\n"
            "                             the bundle version to try, required\n"
            "  --referral ID              only this referral, repeatable (at most %d; default: the tenant's\n"
            "                             reviews in the period)\n"
            "  --start TIME, --end TIME   the period (RFC 3339 UTC, e.g. 2026-11-01T00:00:00Z)\n"
            "  --max N                    at most N referrals, 1 to %d (default: the server's, 1000)\n"
            "  --json                     the WhatIfReport as JSON\n"
            "Re-runs the stored inputs against the bundle without writing reviews. Prints from_bundle:,\n"
            "to_bundle:, compared:, changed: and one change: line per referral whose recommendation changes\n"
            "(REFERRAL REVIEW OLD -> NEW (OLD_RULE -> NEW_RULE; urgency OLD -> NEW)). Needs\n"
            "referral.read.plan, audit.read or referral.review.\n",
            CLI_GL_WHATIF_IDS, CLI_GL_WHATIF_MAX);
    cli_help_guideline_common(out);
}

static void cli_help_guideline_concordance(FILE *out)
{
    fputs(
        "  --tenant T                 the tenant id, required\n"
        "  --start TIME, --end TIME   the period (RFC 3339 UTC; default: all)\n"
        "  --pathway ID               only this pathway, e.g. ckd-nephrology\n"
        "  --clinician usr_...        only this clinician\n"
        "  --json                     one ConcordanceRow as JSON per line\n"
        "Tab-separated lines: PATHWAY CLINICIAN (- in the per-pathway rows) COUNTS (reviews, refer, workup,\n"
        "manage, insufficient, decided, accepted, overridden) OVERRIDE-REASONS (reason=count,...). Needs\n"
        "referral.read.plan or audit.read (plan_reviewer, auditor).\n",
        out);
    cli_help_guideline_common(out);
}

/* ------------------------------------------------------------------ the command table */

typedef struct cli_command {
    const char *name;
    const char *args; /* synopsis of the command's own arguments */
    const char *help; /* one line */
    int (*run)(cli_args *a);
    void (*more_help)(FILE *out); /* the rest of COMMAND --help (options, output), or NULL */
} cli_command;

static const cli_command cli_commands[] = {
    {"health", "[SERVICE]",
     "grpc.health.v1 Check: prints SERVING, NOT_SERVING, ...; exit 0 only when SERVING", cli_cmd_health,
     NULL},
    {"watch", "[SERVICE]", "grpc.health.v1 Watch: prints each status change until Ctrl-C or the stream ends",
     cli_cmd_watch, NULL},
    {"echo", "MESSAGE [--delay-ms N] [--inline]",
     "Echo (EchoInline with --inline): prints the message, the peer identity the server saw and the "
     "request id",
     cli_cmd_echo, NULL},
    {"expand", "MESSAGE COUNT [--interval-ms N]", "Echo/Expand server stream: prints each response",
     cli_cmd_expand, NULL},
    {"chat", "MESSAGE...", "Echo/Chat bidi stream: sends each message in turn and prints each answer",
     cli_cmd_chat, NULL},
    {"audit-append", "--tenant T --actor P --action A [OPTIONS]",
     "Audit/AppendEvent: appends one event, prints seq=, leaf= and time= (needs the test-client "
     "certificate)",
     cli_cmd_audit_append, cli_help_audit_append},
    {"audit-checkpoint", "[--note-out F] [--vkey-out F] [--vkey-file F]",
     "Audit/GetCheckpoint: prints the tree size, root, verifier key and signed note; checks the signature",
     cli_cmd_audit_checkpoint, cli_help_audit_checkpoint},
    {"audit-verify-log", "[--start N] [--end N]",
     "Audit/VerifyLog: prints ok or the first bad sequence and the problem; exit 0 only when ok",
     cli_cmd_audit_verify_log, cli_help_audit_verify_log},
    {"audit-list", "--tenant T [FILTERS] [--page-size N] [--page-token X] [--all] [--json]",
     "Audit/ListEvents: one line per event (seq, time, action, outcome, actor, patient, resource)",
     cli_cmd_audit_list, cli_help_audit_list},
    {"audit-export", "--tenant T [FILTERS] --format jsonl|fhir --out DIR",
     "Audit/ExportEvents: writes a verifiable export directory (alma-audit verify)", cli_cmd_audit_export,
     cli_help_audit_export},
    {"audit-accounting", "--tenant T --patient pt_... [--as-of TIME]",
     "Audit/GetAccountingOfDisclosures: one line per accountable disclosure of the patient",
     cli_cmd_audit_accounting, cli_help_audit_accounting},
    {"identity-login",
     "--tenant T --username U [--password-file F] [--totp C | --recovery-code C] [--session-out F]",
     "Identity/Login: prints the access token alone on stdout (session and expiry on stderr)",
     cli_cmd_identity_login, cli_help_identity_login},
    {"identity-refresh", "--session-file F", "Identity/Refresh: prints a new access token alone on stdout",
     cli_cmd_identity_refresh, cli_help_identity_refresh},
    {"identity-logout", "[--session ID | --session-file F]",
     "Identity/Logout: ends the token's session (or the one given)", cli_cmd_identity_logout,
     cli_help_identity_logout},
    {"identity-create-user", "--username U --display-name N [--password-file F] [--role R]...",
     "Identity/CreateUser: creates a user of the token's tenant, prints it", cli_cmd_identity_create_user,
     cli_help_identity_create_user},
    {"identity-get-user", "[--principal P]", "Identity/GetUser: prints a user (default: the caller)",
     cli_cmd_identity_get_user, cli_help_identity_user},
    {"identity-disable-user", "--principal P --reason TEXT",
     "Identity/DisableUser: disables a user, ends its sessions, prints it", cli_cmd_identity_disable_user,
     cli_help_identity_user},
    {"identity-grant-role", "--principal P --role R", "Identity/GrantRole: grants a role, prints the user",
     cli_cmd_identity_grant_role, cli_help_identity_user},
    {"identity-revoke-role", "--principal P --role R", "Identity/RevokeRole: revokes a role, prints the user",
     cli_cmd_identity_revoke_role, cli_help_identity_user},
    {"identity-list-roles", "", "Identity/ListRoles: one line per role with its permissions",
     cli_cmd_identity_list_roles, cli_help_identity_list_roles},
    {"identity-enroll-totp", "", "Identity/EnrollTotp: prints the otpauth:// URI for an authenticator",
     cli_cmd_identity_enroll_totp, cli_help_identity_totp},
    {"identity-confirm-totp", "--code C",
     "Identity/ConfirmTotp: confirms the authenticator, prints the one-time recovery codes",
     cli_cmd_identity_confirm_totp, cli_help_identity_totp},
    {"identity-relationship-create",
     "--clinician P --patient pt_... --kind primary-care|specialist|care-team|covering [--start T] [--end T]",
     "Identity/CreateCareRelationship: prints the relationship", cli_cmd_identity_relationship_create,
     cli_help_identity_relationship},
    {"identity-relationship-end", "--id rel_... [--end T]",
     "Identity/EndCareRelationship: prints the relationship", cli_cmd_identity_relationship_end,
     cli_help_identity_relationship},
    {"identity-break-glass", "--patient pt_... --reason TEXT --minutes N",
     "Identity/BreakGlass: opens a time-limited emergency grant, prints it", cli_cmd_identity_break_glass,
     cli_help_identity_break_glass},
    {"identity-check", "[--principal P] --permission X [--patient pt_...]",
     "Identity/Check: prints allowed or denied and why; exit 0 only when allowed", cli_cmd_identity_check,
     cli_help_identity_check},
    {"identity-keys", "", "Identity/GetVerificationKeys: prints the JWKS", cli_cmd_identity_keys,
     cli_help_identity_keys},
    {"vault-create-patient",
     "--tenant T --family F --given G [--given G2] --birth-date YYYY-MM-DD --sex female|male|other|unknown "
     "--mrn M [--phone P] [--email E] [--address-line L --city C --state S --postal-code Z] [--payer-id X "
     "--plan-name N --member-id M --coverage-start D]",
     "Vault/CreatePatient: registers a patient, prints its patient_ref and version",
     cli_cmd_vault_create_patient, cli_help_vault_create_patient},
    {"vault-get-patient", "--tenant T --patient pt_... --purpose P [--version N] [--json]",
     "Vault/GetPatient: prints the fields the view returned, the view and the withheld categories",
     cli_cmd_vault_get_patient, cli_help_vault_get_patient},
    {"vault-find-patients", "--tenant T (--mrn M | --member-id M | --family F --given G --birth-date D)",
     "Vault/FindPatients: prints the matching patient refs, one per line", cli_cmd_vault_find_patients,
     cli_help_vault_find_patients},
    {"vault-put-item",
     "--tenant T --patient pt_... (--problem ICD10 | --observation LOINC --value NUM --unit U --date D | "
     "--medication NAME --start D | --note-file F --title T --date D) [--sensitive] [--record it_... "
     "--expected-version N]",
     "Vault/PutItem: adds a clinical item (or a new version of one), prints its record id and version",
     cli_cmd_vault_put_item, cli_help_vault_put_item},
    {"vault-list-items", "--tenant T --patient pt_... --purpose P [--kind K] [--all] [--json]",
     "Vault/ListItems: one line per item the view shows", cli_cmd_vault_list_items,
     cli_help_vault_list_items},
    {"vault-export-patient", "--tenant T --patient pt_... --access-request ID --out FILE",
     "Vault/ExportPatient: writes the FHIR Bundle (right of access), checks and prints its SHA-256",
     cli_cmd_vault_export_patient, cli_help_vault_export_patient},
    {"vault-destroy-patient", "--tenant T --patient pt_... --reason CODE [--certificate-out F]",
     "Vault/DestroyPatient: crypto-shreds a patient, prints the destruction certificate",
     cli_cmd_vault_destroy_patient, cli_help_vault_destroy_patient},
    {"vault-key-status", "--tenant T", "Vault/GetTenantKeyStatus: the tenant key versions and what they wrap",
     cli_cmd_vault_key_status, cli_help_vault_keys},
    {"vault-rotate-key", "--tenant T", "Vault/RotateTenantKey: a new tenant key version, prints the status",
     cli_cmd_vault_rotate_key, cli_help_vault_keys},
    {"guideline-review",
     "--tenant T --referral ID --patient pt_... (--input FILE | --from-vault) [--specialty S] [--reason-code "
     "ICD10]... [--flag N=true|false]... [--finding N=V]... [--bundle-id ID --bundle-version V] [--json]",
     "Guideline/ReviewReferral: reviews a referral, prints the outcome, rules fired, citations, bundle and "
     "review id",
     cli_cmd_guideline_review, cli_help_guideline_review},
    {"guideline-decide", "--tenant T --review rv_... (--accept | --override --reason CODE) [--comment TEXT]",
     "Guideline/RecordDecision: accepts or overrides a review, prints the decision", cli_cmd_guideline_decide,
     cli_help_guideline_decide},
    {"guideline-history", "--tenant T --referral ID [--json]",
     "Guideline/GetReferralHistory: one line per review and decision, oldest first",
     cli_cmd_guideline_history, cli_help_guideline_history},
    {"guideline-bundles", "[--json]", "Guideline/ListBundles: one line per published bundle",
     cli_cmd_guideline_bundles, cli_help_guideline_bundles},
    {"guideline-publish", "--file BUNDLE.json [--activate] [--json]",
     "Guideline/PublishBundle: checks and publishes a bundle, prints it", cli_cmd_guideline_publish,
     cli_help_guideline_publish},
    {"guideline-whatif",
     "--tenant T --bundle-id ID --bundle-version V [--referral ID]... [--start T] [--end T] [--max N] "
     "[--json]",
     "Guideline/WhatIf: which stored referrals another bundle version would decide differently",
     cli_cmd_guideline_whatif, cli_help_guideline_whatif},
    {"guideline-concordance", "--tenant T [--start T] [--end T] [--pathway P] [--clinician P] [--json]",
     "Guideline/GetConcordance: reviews, outcomes, accept and override rates per pathway and clinician",
     cli_cmd_guideline_concordance, cli_help_guideline_concordance},
};

static const cli_command *cli_find_command(const char *name)
{
    for (size_t i = 0; i < BASE_ARRAY_LEN(cli_commands); i++)
        if (strcmp(cli_commands[i].name, name) == 0)
            return &cli_commands[i];
    return NULL;
}

/* ------------------------------------------------------------------ help */

static const char cli_summary[] =
    "The command-line client of the Alma services (mTLS gRPC; plaintext with --insecure for the admin port).";

/* cfg_load's own help, with the flags spelled as this program takes them, then the commands. */
static void cli_print_help(FILE *out)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (mem) {
        char arg0[] = CLI_PROGRAM, arg1[] = "--help";
        char *hargv[] = {arg0, arg1, NULL};
        bool help = false;
        base_result r =
            cfg_load(cli_tables, BASE_ARRAY_LEN(cli_tables), 2, hargv, CLI_PROGRAM, cli_summary, mem, &help);
        fclose(mem);
        (void)r;
    }
    for (const char *line = text ? text : ""; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        static const char flag_prefix[] = "  --" CLI_PREFIX;
        if (strncmp(line, "Usage:", 6) == 0) {
            fprintf(out, "Usage: %s [--name=value]... COMMAND [ARGS]\n", CLI_PROGRAM);
        } else if (strncmp(line, flag_prefix, sizeof flag_prefix - 1) == 0) {
            /* "  --cli-addr=<string>  ALMA_CLI_ADDR ..." -> "  --addr=<string>      ALMA_CLI_ADDR ...":
             * the removed prefix is added back as spaces so the columns stay aligned. */
            const char *flag = line + sizeof flag_prefix - 1;
            size_t flag_len = strcspn(flag, " \n");
            fprintf(out, "  --%.*s%*s%.*s", (int)flag_len, flag, (int)CLI_PREFIX_LEN, "",
                    (int)(n - (size_t)(flag - line) - flag_len), flag + flag_len);
        } else {
            fwrite(line, 1, n, out);
        }
        line += n;
    }
    free(text);
    fprintf(out, "\nCommands (alma-cli COMMAND --help for one):\n");
    for (size_t i = 0; i < BASE_ARRAY_LEN(cli_commands); i++) {
        const cli_command *cmd = &cli_commands[i];
        int width = (int)(strlen(cmd->name) + 1 + strlen(cmd->args));
        if (width <= 40)
            fprintf(out, "  %s %s%*s %s\n", cmd->name, cmd->args, 40 - width, "", cmd->help);
        else /* a long synopsis gets a line of its own */
            fprintf(out, "  %s %s\n  %40s %s\n", cmd->name, cmd->args, "", cmd->help);
    }
    fprintf(out, "\nExit status: 0 success, 1 the call failed, the server is not serving, the audit log does "
                 "not verify or identity-check denied, 2 usage or settings error.\n");
}

static void cli_print_command_help(const cli_command *cmd, FILE *out)
{
    fprintf(out, "Usage: %s [FLAGS] %s %s\n%s\n", CLI_PROGRAM, cmd->name, cmd->args, cmd->help);
    if (cmd->more_help)
        cmd->more_help(out);
}

/* ------------------------------------------------------------------ main */

static bool cli_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

static bool cli_is_bool_word(const char *w)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", "1", "0"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(words); i++)
        if (strcasecmp(w, words[i]) == 0)
            return true;
    return false;
}

/* Where COMMAND is: the first word that is neither a flag nor a flag's value. *ret_help when --help or
 * -h comes before it. */
static int cli_find_command_index(int argc, char **argv, bool *ret_help)
{
    *ret_help = false;
    int i = 1;
    while (i < argc) {
        const char *w = argv[i];
        if (cli_is_help(w)) {
            *ret_help = true;
            return i;
        }
        if (w[0] != '-' || w[1] == '\0')
            return i;
        i++;
        if (w[1] != '-' || strchr(w, '='))
            continue;
        const cfg_setting *s = cli_find_setting(w + 2, strlen(w + 2));
        if (!s)
            continue; /* unknown: cfg_load says so */
        if (s->type != CFG_BOOL)
            i++; /* its value, whatever it looks like (as cfg_load reads it) */
        else if (i < argc && cli_is_bool_word(argv[i]))
            i++;
    }
    return argc;
}

int main(int argc, char **argv)
{
    bool help = false;
    int cmd_at = cli_find_command_index(argc, argv, &help);
    if (help) {
        cli_print_help(stdout);
        return CLI_EXIT_OK;
    }
    if (cmd_at - 1 > CLI_MAX_GLOBAL_ARGS)
        return cli_usage_error("too many flags (at most %d)", CLI_MAX_GLOBAL_ARGS);

    /* The flags for cfg_load, renamed to the settings' names: --addr=X -> --cli-addr=X. */
    char *cfg_argv[CLI_MAX_GLOBAL_ARGS + 2] = {argv[0]};
    char *owned[CLI_MAX_GLOBAL_ARGS + 1];
    int owned_count = 0, cfg_argc = 1;
    int rc = CLI_EXIT_OK;
    for (int i = 1; i < cmd_at; i++) {
        const char *w = argv[i];
        const cfg_setting *s = NULL;
        if (w[0] == '-' && w[1] == '-')
            s = cli_find_setting(w + 2, strcspn(w + 2, "="));
        if (!s) {
            cfg_argv[cfg_argc++] = argv[i]; /* unknown: cfg_load names it */
            continue;
        }
        size_t n = strlen(w) + CLI_PREFIX_LEN + 1;
        char *renamed = malloc(n);
        if (!renamed) {
            rc = cli_usage_error("out of memory");
            goto out;
        }
        snprintf(renamed, n, "--%s%s", CLI_PREFIX, w + 2);
        owned[owned_count++] = renamed;
        cfg_argv[cfg_argc++] = renamed;
        /* A separate value is passed on as is (the same words cli_find_command_index skipped). */
        if (!strchr(w, '=') && i + 1 < cmd_at && (s->type != CFG_BOOL || cli_is_bool_word(argv[i + 1])))
            cfg_argv[cfg_argc++] = argv[++i];
    }
    cfg_argv[cfg_argc] = NULL;

    /* cfg_load looks for --help in every word, values included: "--authorization -h" is read as help. */
    bool help_in_value = false;
    base_result r = cfg_load(cli_tables, BASE_ARRAY_LEN(cli_tables), cfg_argc, cfg_argv, CLI_PROGRAM,
                             cli_summary, stdout, &help_in_value);
    if (!base_is_ok(r)) {
        fputs(CLI_PROGRAM ": ", stderr);
        cli_put_cfg_message(stderr, base_error_message());
        fputc('\n', stderr);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (help_in_value)
        goto out;
    if (cmd_at >= argc) {
        rc = cli_usage_error("no command given (see %s --help)", CLI_PROGRAM);
        goto out;
    }
    const cli_command *cmd = cli_find_command(argv[cmd_at]);
    if (!cmd) {
        fputs(CLI_PROGRAM ": unknown command \"", stderr);
        cli_put_safe(stderr, argv[cmd_at]);
        fprintf(stderr, "\" (see %s --help)\n", CLI_PROGRAM);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    cli_args a = {.command = cmd->name, .argc = argc - cmd_at - 1, .argv = argv + cmd_at + 1};
    if (a.argc > CLI_MAX_COMMAND_ARGS) {
        rc = cli_usage_error("%s: too many arguments (at most %d)", cmd->name, CLI_MAX_COMMAND_ARGS);
        goto out;
    }
    for (int i = 0; i < a.argc && strcmp(a.argv[i], "--") != 0; i++) {
        if (cli_is_help(a.argv[i])) {
            cli_print_command_help(cmd, stdout);
            goto out;
        }
    }
    rpc_set_log_sink(cli_grpc_log);
    rc = cmd->run(&a);
out:
    for (int i = 0; i < owned_count; i++) { /* "--cli-token=..." holds a secret */
        explicit_bzero(owned[i], strlen(owned[i]));
        free(owned[i]);
    }
    if (cli_bearer) {
        explicit_bzero(cli_bearer, strlen(cli_bearer));
        free(cli_bearer);
    }
    return rc;
}
