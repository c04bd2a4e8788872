/* alma-cli: the command-line client of the suite, for operators and developers.
 *
 *     alma-cli [--addr HOST:PORT] [--cert F --key F --ca F | --insecure] [--server-name NAME]
 *              [--timeout-ms N] [--authorization TOKEN] [--verbose] COMMAND [ARGS]
 *
 * The flags before COMMAND are settings loaded with cfg_load (defaults, then the environment
 * ALMA_CLI_<NAME>, then flags). Their table names carry a "cli-" prefix so the environment names are
 * ALMA_CLI_ADDR, ALMA_CLI_CERT, ...; on the command line they are spelled without it (--addr), and this
 * file translates. cfg_load rejects positional words, so argv is split at the first word that is not a
 * flag or a flag's value: that word is COMMAND and what follows is the command's own, parsed here.
 *
 * Adding a command for a new service is one entry in cli_commands[] plus its function.
 *
 * Exit status: 0 success (health: only SERVING), 1 an RPC failed or the server is not serving,
 * 2 a usage or settings error. Anything a server sends is printed with control characters replaced,
 * so a hostile server cannot drive the terminal. */
#include "base/config.h"
#include "rpc/rpc.h"

#include "echo/v1/echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CLI_PROGRAM "alma-cli"

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* Most words accepted before COMMAND, and after it. */
#define CLI_MAX_GLOBAL_ARGS  64
#define CLI_MAX_COMMAND_ARGS 256
/* The prefix of the setting names (environment ALMA_CLI_*), absent from the flags. */
#define CLI_PREFIX     "cli-"
#define CLI_PREFIX_LEN (sizeof CLI_PREFIX - 1)
/* watch has no deadline of its own: it runs until Ctrl-C or the stream ends (INT_MAX ms is 24 days). */
#define CLI_WATCH_TIMEOUT_MS INT_MAX

/* ------------------------------------------------------------------ settings */

static const char *cli_addr, *cli_cert, *cli_key, *cli_ca, *cli_server_name, *cli_authorization;
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
     "deadline of each call in milliseconds (watch has none)", false},
    {"cli-authorization", CFG_STRING, "", &cli_authorization, 0, 8192,
     "sent as authorization metadata (prefer the environment: argv is visible to other users)", true},
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

/* Open the channel the settings describe. Failures here are settings errors (a missing file, a bad
 * address): exit status 2. */
static int cli_connect(cli_call *c)
{
    memset(c, 0, sizeof *c);
    c->opts.timeout_ms = (int)cli_timeout_ms;
    c->opts.authorization = cli_authorization[0] ? cli_authorization : NULL;
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
static bool cli_parse_uint(const char *s, unsigned long max, uint32_t *ret)
{
    if (!s || s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *ret = (uint32_t)v;
    return true;
}

/* The options a command takes: name (without "--"), and where a number goes (NULL: a flag). */
typedef struct cli_option {
    const char *name;
    uint32_t *number;
    unsigned long max;
    bool *flag;
} cli_option;

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
            if (!cli_parse_uint(value, o->max, o->number))
                return cli_usage_error("%s: option --%s expects a number from 0 to %lu", a->command, o->name,
                                       o->max);
            continue;
        }
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

/* Ctrl-C (or SIGTERM) during watch cancels the stream from a signal thread; the receive loop then ends. */
typedef struct cli_watch_signals {
    pthread_mutex_t mu;
    rpc_client_stream *stream; /* NULL once the stream is done */
    bool interrupted;
    pthread_t thread;
} cli_watch_signals;

static sigset_t cli_stop_signals;

static void *cli_watch_signal_main(void *arg)
{
    cli_watch_signals *w = arg;
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

static int cli_cmd_watch(cli_args *a)
{
    int rc = cli_parse_command_args(a, NULL, 0, 0, 1);
    if (rc)
        return rc;
    /* Block the stop signals before gRPC starts its threads (they inherit the mask). */
    sigemptyset(&cli_stop_signals);
    sigaddset(&cli_stop_signals, SIGINT);
    sigaddset(&cli_stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &cli_stop_signals, NULL);
    cli_call c;
    if ((rc = cli_connect(&c)))
        return rc;
    c.opts.timeout_ms = CLI_WATCH_TIMEOUT_MS;
    cli_watch_signals w = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_client_stream *s = NULL;
    base_result r = rpc_client_stream_open(c.ch, HEALTH_WATCH, &c.opts, &s);
    if (!base_is_ok(r)) {
        rpc_status st = {.code = rpc_code_from_err(r.err)};
        snprintf(st.message, sizeof st.message, "%s", base_error_message());
        cli_disconnect(&c);
        return cli_rpc_error(&st);
    }
    w.stream = s;
    bool have_thread = pthread_create(&w.thread, NULL, cli_watch_signal_main, &w) == 0;
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
    pthread_mutex_lock(&w.mu);
    bool interrupted = w.interrupted;
    w.stream = NULL;
    pthread_mutex_unlock(&w.mu);
    if (have_thread) {
        if (!interrupted)
            pthread_kill(w.thread, SIGTERM); /* blocked everywhere: only its sigwait takes it */
        pthread_join(w.thread, NULL);
    }
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

/* ------------------------------------------------------------------ the command table */

typedef struct cli_command {
    const char *name;
    const char *args; /* synopsis of the command's own arguments */
    const char *help; /* one line */
    int (*run)(cli_args *a);
} cli_command;

static const cli_command cli_commands[] = {
    {"health", "[SERVICE]",
     "grpc.health.v1 Check: prints SERVING, NOT_SERVING, ...; exit 0 only when SERVING", cli_cmd_health},
    {"watch", "[SERVICE]", "grpc.health.v1 Watch: prints each status change until Ctrl-C or the stream ends",
     cli_cmd_watch},
    {"echo", "MESSAGE [--delay-ms N] [--inline]",
     "Echo (EchoInline with --inline): prints the message, the peer identity the server saw and the "
     "request id",
     cli_cmd_echo},
    {"expand", "MESSAGE COUNT [--interval-ms N]", "Echo/Expand server stream: prints each response",
     cli_cmd_expand},
    {"chat", "MESSAGE...", "Echo/Chat bidi stream: sends each message in turn and prints each answer",
     cli_cmd_chat},
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
        char synopsis[96];
        snprintf(synopsis, sizeof synopsis, "%s %s", cli_commands[i].name, cli_commands[i].args);
        fprintf(out, "  %-40s %s\n", synopsis, cli_commands[i].help);
    }
    fprintf(out, "\nExit status: 0 success, 1 the call failed or the server is not serving, 2 usage or "
                 "settings error.\n");
}

static void cli_print_command_help(const cli_command *cmd, FILE *out)
{
    fprintf(out, "Usage: %s [FLAGS] %s %s\n%s\n", CLI_PROGRAM, cmd->name, cmd->args, cmd->help);
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
    for (int i = 0; i < owned_count; i++)
        free(owned[i]);
    return rc;
}
