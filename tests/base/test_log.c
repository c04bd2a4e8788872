/* log_emit(): every line is one valid JSON object (checked by a small strict parser here, and by Python's
 * json module when python3 is on the PATH), values off the allowlist are redacted, escaping, level
 * filtering, bounded lines, and whole lines under concurrency. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"

/* ---- A strict little JSON reader for the objects log_emit() writes (string/null/true values). ---- */

typedef struct json_field {
    char key[64];
    char value[LOG_LINE_MAX]; /* decoded UTF-8; "null"/"true" for those literals */
    bool is_string;
} json_field;

typedef struct json_object {
    json_field fields[48];
    size_t count;
} json_object;

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

static int json_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Valid UTF-8 sequence length at p (no overlongs, surrogates or > U+10FFFF), 0 if invalid. */
static size_t json_utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (p[0] >= 0xe0 && p[0] <= 0xef) {
        unsigned lo = p[0] == 0xe0 ? 0xa0 : 0x80, hi = p[0] == 0xed ? 0x9f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        unsigned lo = p[0] == 0xf0 ? 0x90 : 0x80, hi = p[0] == 0xf4 ? 0x8f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* Parse a JSON string at p into out (NUL-terminated); returns the position after it or NULL. */
static const char *json_string(const char *p, char *out, size_t size)
{
    size_t n = 0;
    if (*p++ != '"')
        return NULL;
    for (;;) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            break;
        if (c < 0x20) /* includes the NUL terminator: unterminated string */
            return NULL;
        char buf[4];
        size_t len = 0;
        if (c == '\\') {
            p++;
            switch (*p) {
            case '"':
            case '\\':
            case '/':
                buf[len++] = *p;
                break;
            case 'b':
                buf[len++] = '\b';
                break;
            case 'f':
                buf[len++] = '\f';
                break;
            case 'n':
                buf[len++] = '\n';
                break;
            case 'r':
                buf[len++] = '\r';
                break;
            case 't':
                buf[len++] = '\t';
                break;
            case 'u': {
                unsigned cp = 0;
                for (int i = 1; i <= 4; i++) {
                    int h = json_hex(p[i]);
                    if (h < 0)
                        return NULL;
                    cp = cp * 16 + (unsigned)h;
                }
                p += 4;
                if (cp >= 0xd800 && cp <= 0xdfff) /* log_emit never needs surrogate pairs */
                    return NULL;
                if (cp < 0x80) {
                    buf[len++] = (char)cp;
                } else if (cp < 0x800) {
                    buf[len++] = (char)(0xc0 | (cp >> 6));
                    buf[len++] = (char)(0x80 | (cp & 0x3f));
                } else {
                    buf[len++] = (char)(0xe0 | (cp >> 12));
                    buf[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    buf[len++] = (char)(0x80 | (cp & 0x3f));
                }
                break;
            }
            default:
                return NULL;
            }
            p++;
        } else {
            len = json_utf8_len((const unsigned char *)p);
            if (len == 0)
                return NULL;
            memcpy(buf, p, len);
            p += len;
        }
        if (n + len >= size)
            return NULL;
        memcpy(out + n, buf, len);
        n += len;
    }
    out[n] = '\0';
    return p + 1;
}

/* Parse one line "{...}\n" (nothing else) into obj. Returns false if it is not valid JSON of that shape. */
static bool json_parse_line(const char *line, size_t len, json_object *obj)
{
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
        return false;
    char *copy = malloc(len + 1);
    assert_non_null(copy);
    memcpy(copy, line, len);
    copy[len] = '\0';
    obj->count = 0;
    bool ok = false;
    const char *p = json_ws(copy);
    if (*p++ != '{')
        goto out;
    p = json_ws(p);
    if (*p == '}') {
        p++;
    } else {
        for (;;) {
            if (obj->count == BASE_ARRAY_LEN(obj->fields))
                goto out;
            json_field *f = &obj->fields[obj->count++];
            p = json_string(json_ws(p), f->key, sizeof f->key);
            if (!p)
                goto out;
            p = json_ws(p);
            if (*p++ != ':')
                goto out;
            p = json_ws(p);
            f->is_string = *p == '"';
            if (f->is_string) {
                p = json_string(p, f->value, sizeof f->value);
                if (!p)
                    goto out;
            } else if (strncmp(p, "null", 4) == 0 || strncmp(p, "true", 4) == 0) {
                memcpy(f->value, p, 4);
                f->value[4] = '\0';
                p += 4;
            } else {
                goto out;
            }
            p = json_ws(p);
            if (*p == '}') {
                p++;
                break;
            }
            if (*p++ != ',')
                goto out;
        }
    }
    ok = *json_ws(p) == '\0';
out:
    free(copy);
    return ok;
}

static const json_field *json_get(const json_object *obj, const char *key)
{
    for (size_t i = 0; i < obj->count; i++) {
        if (strcmp(obj->fields[i].key, key) == 0)
            return &obj->fields[i];
    }
    return NULL;
}

static const char *json_get_string(const json_object *obj, const char *key)
{
    const json_field *f = json_get(obj, key);
    if (!f)
        fail_msg("no key \"%s\" in the line", key);
    assert_true(f->is_string);
    return f->value;
}

/* ---- Capturing output ---- */

static FILE *capture;

static int setup(void **state)
{
    (void)state;
    capture = tmpfile();
    assert_non_null(capture);
    log_set_output(capture);
    log_init("echo", LOG_DEBUG);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    log_set_output(NULL);
    fclose(capture);
    capture = NULL;
    return 0;
}

/* Everything written so far (malloc'd, NUL-terminated; *ret_len without the NUL). */
static char *captured(size_t *ret_len)
{
    fflush(capture);
    long n = ftell(capture);
    assert_true(n >= 0);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    rewind(capture);
    assert_int_equal(fread(buf, 1, (size_t)n, capture), (size_t)n);
    buf[n] = '\0';
    fseek(capture, 0, SEEK_END);
    if (ret_len)
        *ret_len = (size_t)n;
    return buf;
}

static size_t count_lines(const char *text, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += text[i] == '\n';
    return n;
}

/* Every line of `text` is a JSON object with ts, level, service and msg, according to Python. Skipped
 * (with a note) when python3 is not installed. */
static void python_check(const char *text, size_t len)
{
    static int have_python = -1;
    if (have_python < 0) {
        have_python = system("command -v python3 >/dev/null 2>&1") == 0;
        if (!have_python)
            print_message("note: python3 not found, JSON checked by the built-in parser only\n");
    }
    if (!have_python)
        return;
    FILE *py =
        popen("python3 -c '"
              "import json, sys\n"
              "for line in sys.stdin.buffer.read().split(b\"\\n\")[:-1]:\n"
              "    o = json.loads(line.decode(\"utf-8\", \"strict\"))\n"
              "    assert isinstance(o, dict), line\n"
              "    assert all(isinstance(o[k], str) for k in (\"ts\", \"level\", \"service\", \"msg\"))\n"
              "'",
              "w");
    assert_non_null(py);
    assert_int_equal(fwrite(text, 1, len, py), len);
    int status = pclose(py);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The single line captured so far, parsed and checked. */
static void one_line(json_object *obj, char **ret_text)
{
    size_t len;
    char *text = captured(&len);
    assert_int_equal(count_lines(text, len), 1);
    assert_true(len <= LOG_LINE_MAX);
    if (!json_parse_line(text, len, obj))
        fail_msg("not a valid JSON line: %s", text);
    python_check(text, len);
    if (ret_text)
        *ret_text = text;
    else
        free(text);
}

static void assert_ts_format(const char *ts)
{
    /* 2026-11-23T12:00:00.123Z */
    static const char pattern[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    assert_int_equal(strlen(ts), strlen(pattern));
    for (size_t i = 0; pattern[i]; i++) {
        if (pattern[i] == 'd')
            assert_true(ts[i] >= '0' && ts[i] <= '9');
        else
            assert_int_equal(ts[i], pattern[i]);
    }
}

/* ---- Tests ---- */

static void test_line_fields(void **state)
{
    (void)state;
    static json_object obj;
    log_emit(LOG_INFO, "req-1", "call done", "method", "/alma.echo.v1.Echo/Say", "code", "OK", "duration_ms",
             "12", NULL);
    one_line(&obj, NULL);
    assert_ts_format(json_get_string(&obj, "ts"));
    assert_string_equal(json_get_string(&obj, "level"), "info");
    assert_string_equal(json_get_string(&obj, "service"), "echo");
    assert_string_equal(json_get_string(&obj, "request_id"), "req-1");
    assert_string_equal(json_get_string(&obj, "msg"), "call done");
    assert_string_equal(json_get_string(&obj, "method"), "/alma.echo.v1.Echo/Say");
    assert_string_equal(json_get_string(&obj, "code"), "OK");
    assert_string_equal(json_get_string(&obj, "duration_ms"), "12");
    assert_int_equal(obj.count, 8);
    /* The fixed keys come first, in order. */
    assert_string_equal(obj.fields[0].key, "ts");
    assert_string_equal(obj.fields[1].key, "level");
    assert_string_equal(obj.fields[2].key, "service");
    assert_string_equal(obj.fields[3].key, "request_id");
    assert_string_equal(obj.fields[4].key, "msg");
}

static void test_no_request_id_no_fields(void **state)
{
    (void)state;
    static json_object obj;
    log_emit(LOG_ERROR, NULL, "starting", NULL);
    one_line(&obj, NULL);
    assert_null(json_get(&obj, "request_id"));
    assert_string_equal(json_get_string(&obj, "level"), "error");
    assert_int_equal(obj.count, 4);
}

static void test_redaction(void **state)
{
    (void)state;
    static json_object obj;
    char *text;
    log_emit(LOG_WARN, "req-2", "lookup", "patient_name", "Jane Doe", "ssn", "123-45-6789", "peer",
             "10.1.2.3:5000", "mrn", "MRN0042", NULL);
    one_line(&obj, &text);
    assert_string_equal(json_get_string(&obj, "patient_name"), "[redacted]");
    assert_string_equal(json_get_string(&obj, "ssn"), "[redacted]");
    assert_string_equal(json_get_string(&obj, "mrn"), "[redacted]");
    assert_string_equal(json_get_string(&obj, "peer"), "10.1.2.3:5000");
    assert_null(strstr(text, "Jane Doe"));
    assert_null(strstr(text, "Jane"));
    assert_null(strstr(text, "123-45-6789"));
    assert_null(strstr(text, "MRN0042"));
    free(text);
}

static void test_every_allowed_key(void **state)
{
    (void)state;
    static const char *const allowed[] = {
        "method",    "code",    "status", "duration_ms", "peer",        "addr",    "port",      "error",
        "setting",   "version", "count",  "limit",       "signal",      "workers", "tenant",    "table",
        "migration", "attempt", "path",   "state",       "reason_code", "event",   "component",
    };
    static json_object obj;
    for (size_t i = 0; i < BASE_ARRAY_LEN(allowed); i++) {
        rewind(capture);
        assert_int_equal(ftruncate(fileno(capture), 0), 0);
        log_emit(LOG_INFO, NULL, "m", allowed[i], "visible-value", NULL);
        one_line(&obj, NULL);
        assert_string_equal(json_get_string(&obj, allowed[i]), "visible-value");
    }
}

static void test_bad_keys_dropped(void **state)
{
    (void)state;
    static json_object obj;
    char *text;
    log_emit(LOG_INFO, NULL, "keys", "Method", "v1", "bad-key", "v2", "", "v3", "key with space", "v4",
             "quote\"key", "v5", "abcdefghijklmnopqrstuvwxyz0123456", "v6", "na\xc3\xafve", "v7", "ts", "v8",
             "msg", "v9", "level", "v10", "request_id", "v11", "service", "v12",
             "abcdefghijklmnopqrstuvwxyz012345", "kept", "code", "OK", NULL);
    one_line(&obj, &text);
    /* Header (ts, level, service, msg) + the 32-character key (redacted) + code. */
    assert_int_equal(obj.count, 6);
    assert_string_equal(json_get_string(&obj, "abcdefghijklmnopqrstuvwxyz012345"), "[redacted]");
    assert_string_equal(json_get_string(&obj, "code"), "OK");
    assert_string_equal(json_get_string(&obj, "msg"), "keys");
    assert_string_equal(json_get_string(&obj, "service"), "echo");
    for (int i = 1; i <= 12; i++) {
        char v[8];
        snprintf(v, sizeof v, "\"v%d\"", i);
        assert_null(strstr(text, v));
    }
    free(text);
}

static void test_escaping(void **state)
{
    (void)state;
    static json_object obj;
    char *text;
    const char *tricky = "say \"hi\"\n\tback\\slash \x01 \x1b[2J \x7f end";
    log_emit(LOG_INFO, "rid\"\n", "msg with \"quotes\"\n", "error", tricky, NULL);
    one_line(&obj, &text);
    assert_string_equal(json_get_string(&obj, "error"), tricky);
    assert_string_equal(json_get_string(&obj, "msg"), "msg with \"quotes\"\n");
    assert_string_equal(json_get_string(&obj, "request_id"), "rid\"\n");
    assert_non_null(strstr(text, "\\u0001"));
    assert_non_null(strstr(text, "\\u001b"));
    assert_non_null(strstr(text, "\\u007f"));
    assert_non_null(strstr(text, "\\\""));
    assert_non_null(strstr(text, "\\\\slash"));
    assert_null(strchr(text, '\x1b'));
    free(text);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    static json_object obj;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"ok \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
         "ok \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"}, /* valid: kept */
        {"ab\xff"
         "cd",
         "ab\xef\xbf\xbd"
         "cd"},                                                                   /* never valid */
        {"x\xc3(", "x\xef\xbf\xbd("},                                             /* cut sequence */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong '/' */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* surrogate */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"end\xe2\x82", "end\xef\xbf\xbd\xef\xbf\xbd"},                           /* truncated at the end */
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        rewind(capture);
        assert_int_equal(ftruncate(fileno(capture), 0), 0);
        log_emit(LOG_INFO, cases[i].in, cases[i].in, "path", cases[i].in, NULL);
        one_line(&obj, NULL);
        assert_string_equal(json_get_string(&obj, "path"), cases[i].out);
        assert_string_equal(json_get_string(&obj, "msg"), cases[i].out);
        assert_string_equal(json_get_string(&obj, "request_id"), cases[i].out);
    }
}

static void test_null_value(void **state)
{
    (void)state;
    static json_object obj;
    /* A NULL value is written as null and ends the list. */
    log_emit(LOG_INFO, NULL, "m", "peer", "p", "addr", (const char *)NULL, NULL);
    one_line(&obj, NULL);
    assert_string_equal(json_get_string(&obj, "peer"), "p");
    const json_field *f = json_get(&obj, "addr");
    assert_non_null(f);
    assert_false(f->is_string);
    assert_string_equal(f->value, "null");
}

static void test_level_filter(void **state)
{
    (void)state;
    log_init("filtered", LOG_WARN);
    log_emit(LOG_DEBUG, NULL, "debug line", NULL);
    log_emit(LOG_INFO, NULL, "info line", NULL);
    log_emit(LOG_WARN, NULL, "warn line", NULL);
    log_emit(LOG_ERROR, NULL, "error line", NULL);
    size_t len;
    char *text = captured(&len);
    assert_int_equal(count_lines(text, len), 2);
    assert_null(strstr(text, "debug line"));
    assert_null(strstr(text, "info line"));
    assert_non_null(strstr(text, "\"level\":\"warn\",\"service\":\"filtered\""));
    assert_non_null(strstr(text, "\"level\":\"error\""));
    python_check(text, len);
    free(text);

    log_init("echo", LOG_ERROR);
    log_emit(LOG_WARN, NULL, "dropped", NULL);
    text = captured(&len);
    assert_int_equal(count_lines(text, len), 2);
    free(text);
}

static void test_level_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        log_level level;
    } ok[] = {{"debug", LOG_DEBUG},
              {"info", LOG_INFO},
              {"warn", LOG_WARN},
              {"error", LOG_ERROR},
              {"WARN", LOG_WARN}};
    for (size_t i = 0; i < BASE_ARRAY_LEN(ok); i++) {
        log_level l = (log_level)99;
        assert_true(base_is_ok(log_level_parse(ok[i].s, &l)));
        assert_int_equal(l, ok[i].level);
    }
    static const char *const bad[] = {"", "warning", "verbose", "info ", "3"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        log_level l = (log_level)99;
        assert_int_equal(log_level_parse(bad[i], &l).err, BASE_ERR_INVALID);
        assert_int_equal(l, 99); /* untouched on failure */
    }
    log_level l = (log_level)99;
    assert_int_equal(log_level_parse(NULL, &l).err, BASE_ERR_INVALID);
    assert_string_equal(log_level_name(LOG_INFO), "info");
}

static void test_long_value_truncated(void **state)
{
    (void)state;
    static json_object obj;
    static char big[10000];
    memset(big, 'a', sizeof big - 1);
    log_emit(LOG_INFO, NULL, "big", "error", big, "code", "OK", NULL);
    one_line(&obj, NULL);
    const char *v = json_get_string(&obj, "error");
    size_t n = strlen(v);
    assert_true(n <= LOG_VALUE_MAX);
    assert_true(n > LOG_VALUE_MAX - 8);
    assert_string_equal(v + n - 3, "\xe2\x80\xa6"); /* ends with "…" */
    assert_int_equal(strspn(v, "a"), n - 3);
    /* A later short field still made it. */
    assert_string_equal(json_get_string(&obj, "code"), "OK");
    assert_null(json_get(&obj, "truncated"));
}

static void test_truncation_keeps_characters_whole(void **state)
{
    (void)state;
    static json_object obj;
    /* Multi-byte characters and escapes: a cut must not split either. */
    static char big[6000];
    size_t n = 0;
    while (n + 4 < sizeof big) {
        memcpy(big + n, "\xe2\x82\xac\x01", 4); /* "€" then a control character (6 bytes escaped) */
        n += 4;
    }
    big[n] = '\0';
    log_emit(LOG_INFO, NULL, big, "path", big, "peer", big, NULL);
    one_line(&obj, NULL);
    const char *v = json_get_string(&obj, "path");
    assert_string_equal(v + strlen(v) - 3, "\xe2\x80\xa6");
}

static void test_line_bounded(void **state)
{
    (void)state;
    static json_object obj;
    static char big[3000];
    memset(big, '"', sizeof big - 1); /* every byte doubles when escaped */
    log_emit(LOG_INFO, big, big, "method", big, "code", big, "status", big, "peer", big, "addr", big, "port",
             big, "error", big, "path", big, NULL);
    size_t len;
    char *text = captured(&len);
    assert_true(len <= LOG_LINE_MAX);
    assert_int_equal(count_lines(text, len), 1);
    assert_true(json_parse_line(text, len, &obj));
    python_check(text, len);
    /* Fields that did not fit were dropped, and the line says so. */
    const json_field *t = json_get(&obj, "truncated");
    assert_non_null(t);
    assert_string_equal(t->value, "true");
    assert_null(json_get(&obj, "path"));
    assert_non_null(json_get(&obj, "method"));
    free(text);
}

static void test_errno_preserved(void **state)
{
    (void)state;
    errno = ERANGE;
    log_emit(LOG_INFO, NULL, "m", NULL);
    assert_int_equal(errno, ERANGE);
}

static int parse_small_int(const char *s)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    assert_true(end != s && *end == '\0' && v >= 0 && v < 1000000);
    return (int)v;
}

#define THREADS          4
#define LINES_PER_THREAD 500

static void *log_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    char count[16], worker[16];
    char payload[600];
    memset(payload, 'a' + id, sizeof payload - 1);
    payload[sizeof payload - 1] = '\0';
    snprintf(worker, sizeof worker, "%d", id);
    for (int i = 0; i < LINES_PER_THREAD; i++) {
        snprintf(count, sizeof count, "%d", i);
        log_emit(LOG_INFO, NULL, "concurrent", "workers", worker, "count", count, "path", payload, NULL);
    }
    return NULL;
}

static void test_concurrent_whole_lines(void **state)
{
    (void)state;
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, log_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);

    size_t len;
    char *text = captured(&len);
    assert_int_equal(count_lines(text, len), THREADS * LINES_PER_THREAD);
    int next[THREADS] = {0};
    static json_object obj;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        assert_non_null(eol);
        if (!json_parse_line(line, (size_t)(eol - line + 1), &obj))
            fail_msg("interleaved or broken line: %.*s", (int)(eol - line), line);
        int id = parse_small_int(json_get_string(&obj, "workers"));
        assert_true(id >= 0 && id < THREADS);
        /* Each thread's lines arrive whole and in its own order. */
        assert_int_equal(parse_small_int(json_get_string(&obj, "count")), next[id]);
        next[id]++;
        const char *payload = json_get_string(&obj, "path");
        assert_int_equal(strlen(payload), 599);
        assert_int_equal(strspn(payload, (char[]){(char)('a' + id), 0}), 599);
        line = eol + 1;
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(next[i], LINES_PER_THREAD);
    python_check(text, len);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_line_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_request_id_no_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_allowed_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_value_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_keeps_characters_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_line_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errno_preserved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_whole_lines, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
