/* Structured logging: one JSON object per line, on stderr by default.
 *
 *     {"ts":"2026-11-23T12:00:00.123Z","level":"info","service":"echo","request_id":"...","msg":"call done",
 *      "method":"/alma.echo.v1.Echo/Say","code":"OK"}
 *
 * No PHI in logs. The redaction rule is enforced here, not left to callers: a field's value is written
 * only when its key is on a fixed allowlist (method, code, status, duration_ms, peer, service, addr,
 * port, error, setting, version, count, limit, signal, workers, tenant, table, migration, attempt, path,
 * state, reason_code, event, component). Any other key is written with the value "[redacted]". A key that
 * is not [a-z0-9_]{1,32}, or that would repeat a key of the line itself (ts, level, service, request_id,
 * msg, truncated), is dropped.
 *
 * Lines are bounded: at most LOG_LINE_MAX bytes with the newline. A value longer than its share is cut
 * at a character boundary and ends with "…"; fields that no longer fit are dropped and the line then
 * ends with "truncated":true. Everything is JSON-escaped (control characters as \u00XX, invalid UTF-8
 * bytes as \ufffd), so every line is valid JSON whatever the input.
 *
 * Thread-safe: each line is written with one fwrite() and fflush() under a mutex, so lines never
 * interleave. Library code in common/ does not log (STYLE.md): services and the server skeleton do. */
#ifndef ALMA_BASE_LOG_H
#define ALMA_BASE_LOG_H

#include <stdio.h>

#include "result.h"

/* Longest line written, including the trailing newline. */
#define LOG_LINE_MAX 4096
/* Longest escaped value of one field (and of msg) before it is cut with "…". */
#define LOG_VALUE_MAX 1024
/* Most fields read from one log_emit() call; further arguments are ignored. */
#define LOG_FIELDS_MAX 32

typedef enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Set the service name written into every line (copied, at most 64 bytes) and the lowest level written.
 * Call from main() before logging; until then lines carry service "" and every level is written. */
void log_init(const char *service, log_level min_level);

/* "debug", "info", "warn" or "error" (any case). *ret is written only on success. */
BASE_MUST_USE base_result log_level_parse(const char *s, log_level *ret);

/* "debug", "info", "warn", "error". */
const char *log_level_name(log_level level);

/* Where lines go: stderr by default and after log_set_output(NULL). The caller keeps `f` open. */
void log_set_output(FILE *f);

/* Whether a line at `level` would be written: lets a hot path skip formatting its fields. */
bool log_enabled(log_level level);

/* Write one line if `level` is at least the minimum level.
 *
 * request_id may be NULL (then omitted). `msg` must be a constant string by convention: it says what
 * happened, and every variable part goes into a field, where the allowlist applies. (It is escaped and
 * bounded like any value, but it is not redacted.)
 *
 * The variable arguments are key/value string pairs ended by NULL:
 *     log_emit(LOG_INFO, rid, "call done", "method", m, "code", "OK", NULL);
 * A NULL value is written as null and also ends the list (a NULL where a value belongs cannot be told
 * apart from the terminator): pass "" rather than NULL for an absent value. errno is preserved. */
void log_emit(log_level level, const char *request_id, const char *msg, ...) __attribute__((sentinel));

#endif
