/* JSON-lines logging with a key allowlist. See log.h. */
#include "log.h"
#include "utf8.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LOG_SERVICE_MAX    64  /* bytes of the service name kept by log_init() */
#define LOG_SERVICE_ESC    128 /* escaped bytes of the service name in a line */
#define LOG_REQUEST_ID_ESC 128 /* escaped bytes of the request id in a line */
#define LOG_KEY_MAX        32

/* "…" in UTF-8: ends a value that was cut. */
static const char log_cut_marker[] = "\xe2\x80\xa6";
#define LOG_CUT_MARKER_LEN (sizeof log_cut_marker - 1)
/* Appended when fields were dropped for lack of room; its room is kept free from the start. */
static const char log_truncated_tail[] = ",\"truncated\":true";
static const char log_line_end[] = "}\n";
#define LOG_RESERVED (sizeof log_truncated_tail - 1 + sizeof log_line_end - 1)

/* The only keys whose values are written. Chosen to carry no PHI: names of operations, codes, counts,
 * infrastructure addresses. Add to it only after review. */
static const char *const log_allowed_keys[] = {
    "method", "code",      "status",  "duration_ms", "peer",  "service",     "addr",    "port",
    "error",  "setting",   "version", "count",       "limit", "signal",      "workers", "tenant",
    "table",  "migration", "attempt", "path",        "state", "reason_code", "event",   "component",
};

/* Keys of the line itself: a field may not repeat them (a repeated JSON key is read as the last one by
 * most parsers, so a field "service" would hide the service that wrote the line). */
static const char *const log_reserved_keys[] = {"ts", "level", "service", "request_id", "msg", "truncated"};

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_out;                         /* NULL: stderr; guarded by log_mutex */
static char log_service[LOG_SERVICE_MAX + 1]; /* guarded by log_mutex */
static atomic_int log_min_level = LOG_DEBUG;

typedef struct log_line {
    char data[LOG_LINE_MAX];
    size_t len;
    size_t limit; /* data[limit..] stays free for log_truncated_tail and log_line_end */
} log_line;

static log_level log_level_clamp(log_level level)
{
    if ((int)level < (int)LOG_DEBUG)
        return LOG_DEBUG;
    if ((int)level > (int)LOG_ERROR)
        return LOG_ERROR;
    return level;
}

const char *log_level_name(log_level level)
{
    switch (log_level_clamp(level)) {
    case LOG_DEBUG:
        return "debug";
    case LOG_INFO:
        return "info";
    case LOG_WARN:
        return "warn";
    case LOG_ERROR:
        return "error";
    default:
        return "error";
    }
}

base_result log_level_parse(const char *s, log_level *ret)
{
    static const log_level levels[] = {LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR};
    BASE_ENSURE(ret, BASE_ERR_INTERNAL, "log_level_parse: ret is NULL");
    for (size_t i = 0; s && i < BASE_ARRAY_LEN(levels); i++) {
        if (strcasecmp(s, log_level_name(levels[i])) == 0) {
            *ret = levels[i];
            return BASE_OK_RESULT;
        }
    }
    return base_fail(BASE_ERR_INVALID, "invalid log level: expected debug, info, warn or error");
}

bool log_enabled(log_level level)
{
    return (int)level >= atomic_load(&log_min_level);
}

void log_init(const char *service, log_level min_level)
{
    pthread_mutex_lock(&log_mutex);
    size_t n = service ? strnlen(service, LOG_SERVICE_MAX) : 0;
    memcpy(log_service, service ? service : "", n);
    log_service[n] = '\0';
    pthread_mutex_unlock(&log_mutex);
    atomic_store(&log_min_level, (int)log_level_clamp(min_level));
}

void log_set_output(FILE *f)
{
    pthread_mutex_lock(&log_mutex);
    log_out = f;
    pthread_mutex_unlock(&log_mutex);
}

/* Escape the character (or invalid byte) at s into out; returns the escaped length and sets *consumed. */
static size_t log_escape_unit(const unsigned char *s, char out[static 8], size_t *consumed)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char c = s[0];
    *consumed = 1;
    switch (c) {
    case '"':
        memcpy(out, "\\\"", 2);
        return 2;
    case '\\':
        memcpy(out, "\\\\", 2);
        return 2;
    case '\n':
        memcpy(out, "\\n", 2);
        return 2;
    case '\r':
        memcpy(out, "\\r", 2);
        return 2;
    case '\t':
        memcpy(out, "\\t", 2);
        return 2;
    default:
        break;
    }
    if (c < 0x20 || c == 0x7f) {
        memcpy(out, "\\u00", 4);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 0xf];
        return 6;
    }
    /* A NUL ends the string and is never a continuation byte, so at most 4 bytes up to it matter. */
    size_t n = base_utf8_next(s, strnlen((const char *)s, 4), NULL);
    if (n == 0) {
        memcpy(out, "\\ufffd", 6);
        return 6;
    }
    memcpy(out, s, n);
    *consumed = n;
    return n;
}

static bool log_put_raw(log_line *l, const char *s, size_t n)
{
    if (n > l->limit - l->len)
        return false;
    memcpy(l->data + l->len, s, n);
    l->len += n;
    return true;
}

static bool log_put_str(log_line *l, const char *s)
{
    return log_put_raw(l, s, strlen(s));
}

/* Write `s` as a quoted JSON string whose escaped body takes at most `cap` bytes; a longer string is
 * cut at a character boundary and ends with "…". Returns false (line unchanged) if even that won't fit. */
static bool log_put_quoted(log_line *l, const char *s, size_t cap)
{
    size_t room = l->limit - l->len;
    if (room < 2)
        return false;
    if (cap > room - 2)
        cap = room - 2;

    /* First pass: does all of it fit? */
    const unsigned char *p = (const unsigned char *)s;
    size_t total = 0;
    bool fits = true;
    while (*p) {
        char unit[8];
        size_t used;
        size_t n = log_escape_unit(p, unit, &used);
        if (total + n > cap) {
            fits = false;
            break;
        }
        total += n;
        p += used;
    }
    if (!fits && cap < LOG_CUT_MARKER_LEN)
        return false;

    size_t budget = fits ? cap : cap - LOG_CUT_MARKER_LEN;
    l->data[l->len++] = '"';
    p = (const unsigned char *)s;
    size_t written = 0;
    while (*p) {
        char unit[8];
        size_t used;
        size_t n = log_escape_unit(p, unit, &used);
        if (written + n > budget)
            break;
        memcpy(l->data + l->len, unit, n);
        l->len += n;
        written += n;
        p += used;
    }
    if (!fits) {
        memcpy(l->data + l->len, log_cut_marker, LOG_CUT_MARKER_LEN);
        l->len += LOG_CUT_MARKER_LEN;
    }
    l->data[l->len++] = '"';
    return true;
}

static bool log_in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(key, list[i]) == 0)
            return true;
    }
    return false;
}

static bool log_key_valid(const char *key)
{
    size_t n = strnlen(key, LOG_KEY_MAX + 1);
    if (n == 0 || n > LOG_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return !log_in_list(key, log_reserved_keys, BASE_ARRAY_LEN(log_reserved_keys));
}

/* Append ,"key":value for one field. Returns false (line unchanged) if it does not fit. */
static bool log_put_field(log_line *l, const char *key, const char *value)
{
    size_t mark = l->len;
    bool ok = log_put_str(l, ",\"") && log_put_str(l, key) && log_put_str(l, "\":");
    if (ok) {
        if (!value)
            ok = log_put_str(l, "null");
        else if (log_in_list(key, log_allowed_keys, BASE_ARRAY_LEN(log_allowed_keys)))
            ok = log_put_quoted(l, value, LOG_VALUE_MAX);
        else
            ok = log_put_str(l, "\"[redacted]\"");
    }
    if (!ok)
        l->len = mark;
    return ok;
}

static void log_put_timestamp(log_line *l)
{
    struct timespec now = {0, 0};
    struct tm tm;
    char ts[48];
    clock_gettime(CLOCK_REALTIME, &now);
    if (!gmtime_r(&now.tv_sec, &tm))
        memset(&tm, 0, sizeof tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000L);
    log_put_quoted(l, ts, sizeof ts);
}

void log_emit(log_level level, const char *request_id, const char *msg, ...)
{
    level = log_level_clamp(level);
    if ((int)level < atomic_load(&log_min_level))
        return;
    int saved_errno = errno;

    char service[LOG_SERVICE_MAX + 1];
    pthread_mutex_lock(&log_mutex);
    memcpy(service, log_service, sizeof service);
    pthread_mutex_unlock(&log_mutex);

    /* The header is bounded well below the line limit (timestamp, level, 128 + 128 + LOG_VALUE_MAX), so
     * it always fits; only fields can run out of room. */
    log_line l;
    l.len = 0;
    l.limit = sizeof l.data - LOG_RESERVED;
    log_put_str(&l, "{\"ts\":");
    log_put_timestamp(&l);
    log_put_str(&l, ",\"level\":\"");
    log_put_str(&l, log_level_name(level));
    log_put_str(&l, "\",\"service\":");
    log_put_quoted(&l, service, LOG_SERVICE_ESC);
    if (request_id) {
        log_put_str(&l, ",\"request_id\":");
        log_put_quoted(&l, request_id, LOG_REQUEST_ID_ESC);
    }
    log_put_str(&l, ",\"msg\":");
    log_put_quoted(&l, msg ? msg : "", LOG_VALUE_MAX);

    bool dropped = false;
    va_list ap;
    va_start(ap, msg);
    for (int i = 0; i < LOG_FIELDS_MAX; i++) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *value = va_arg(ap, const char *);
        if (log_key_valid(key) && !dropped && !log_put_field(&l, key, value))
            dropped = true;
        if (!value)
            break;
    }
    va_end(ap);

    /* The reserved tail room makes these two always fit. */
    l.limit = sizeof l.data;
    if (dropped)
        log_put_str(&l, log_truncated_tail);
    log_put_str(&l, log_line_end);

    pthread_mutex_lock(&log_mutex);
    FILE *out = log_out ? log_out : stderr;
    fwrite(l.data, 1, l.len, out);
    fflush(out);
    pthread_mutex_unlock(&log_mutex);
    errno = saved_errno;
}
