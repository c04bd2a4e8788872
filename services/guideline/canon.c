/* Canonical JSON (BUNDLE-FORMAT.md, "Canonical JSON"): object keys sorted bytewise, no whitespace, strings
 * escaped as jansson escapes them, numbers in one canonical form that does not depend on how the text wrote
 * them (30, 30.0 and 3e1 are all "30") nor on the platform's float printing (the shortest %.17g-style
 * decimal that reads back to the same double). Used for the bundle's content hash, the input hash and the
 * recommendation itself. */
#include "internal.h"

#include "crypto/crypto.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CANON_KEYS_ON_STACK 32
#define TWO_POW_53          9007199254740992.0

static bool buf_reserve(gl_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (extra > b->max || b->len + extra + 1 > b->max) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > b->max)
        cap = b->max;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void gl_buf_put(gl_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void gl_buf_puts(gl_buf *b, const char *s)
{
    gl_buf_put(b, s, strlen(s));
}

void gl_buf_free(gl_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void gl_buf_json_string(gl_buf *b, const char *s)
{
    static const char hexd[] = "0123456789ABCDEF";
    gl_buf_put(b, "\"", 1);
    const char *run = s;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c != '\0' && c >= 0x20 && c != '"' && c != '\\')
            continue;
        gl_buf_put(b, run, (size_t)(p - run));
        if (c == '\0')
            break;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hexd[c >> 4];
            esc[5] = hexd[c & 0xf];
            n = 6;
            break;
        }
        gl_buf_put(b, esc, n);
        run = p + 1;
    }
    gl_buf_put(b, "\"", 1);
}

void gl_buf_json_number(gl_buf *b, double v)
{
    char tmp[40];
    if (!isfinite(v)) { /* jansson never parses one; the evaluator never makes one */
        gl_buf_puts(b, "null");
        return;
    }
    if (v == floor(v) && fabs(v) < TWO_POW_53) {
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
        gl_buf_put(b, tmp, (size_t)n);
        return;
    }
    int n = 0;
    for (int prec = 1; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    gl_buf_put(b, tmp, (size_t)n);
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void gl_canon_dump(const json_t *j, gl_buf *b)
{
    if (b->failed)
        return;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(j);
        const char *stack_keys[CANON_KEYS_ON_STACK];
        const char **keys = stack_keys;
        if (n > CANON_KEYS_ON_STACK) {
            keys = malloc(n * sizeof *keys);
            if (!keys) {
                b->failed = true;
                return;
            }
        }
        size_t i = 0;
        const char *k;
        json_t *v;
        /* json_object_foreach needs a non-const object; it does not modify it. */
        json_object_foreach((json_t *)j, k, v)
        {
            keys[i++] = k;
        }
        qsort(keys, n, sizeof *keys, key_cmp);
        gl_buf_put(b, "{", 1);
        for (i = 0; i < n; i++) {
            if (i)
                gl_buf_put(b, ",", 1);
            gl_buf_json_string(b, keys[i]);
            gl_buf_put(b, ":", 1);
            gl_canon_dump(json_object_get(j, keys[i]), b);
        }
        gl_buf_put(b, "}", 1);
        if (keys != stack_keys)
            free(keys);
        break;
    }
    case JSON_ARRAY: {
        gl_buf_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i)
                gl_buf_put(b, ",", 1);
            gl_canon_dump(json_array_get(j, i), b);
        }
        gl_buf_put(b, "]", 1);
        break;
    }
    case JSON_STRING:
        gl_buf_json_string(b, json_string_value(j));
        break;
    case JSON_INTEGER: {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        gl_buf_put(b, tmp, (size_t)n);
        break;
    }
    case JSON_REAL:
        gl_buf_json_number(b, json_real_value(j));
        break;
    case JSON_TRUE:
        gl_buf_puts(b, "true");
        break;
    case JSON_FALSE:
        gl_buf_puts(b, "false");
        break;
    case JSON_NULL:
        gl_buf_puts(b, "null");
        break;
    default:
        b->failed = true;
        break;
    }
}

base_result gl_sha256_hex(const char *p, size_t n, char ret_hex[65])
{
    uint8_t d[ACRYPTO_SHA256_LEN];
    BASE_GUARD(acrypto_sha256(p, n, d));
    size_t hl;
    BASE_GUARD(acrypto_hex_encode(d, sizeof d, ret_hex, 65, &hl));
    return BASE_OK_RESULT;
}

base_result gl_canonical_json(const char *json, size_t len, size_t max_bytes, char **ret_json,
                              size_t *ret_len)
{
    if (!json || !ret_json)
        return base_fail(BASE_ERR_INVALID, "canonical json: missing argument");
    if (len > max_bytes)
        return base_fail(BASE_ERR_LIMIT, "canonical json: the text is over its limit of %zu bytes",
                         max_bytes);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return base_fail(BASE_ERR_INVALID, "canonical json: not valid JSON (line %d, column %d)", jerr.line,
                         jerr.column);
    /* Canonical text is never longer than a few times the source ("1e15" becomes 16 digits). */
    gl_buf b = {.max = 8 * len + 64};
    gl_canon_dump(root, &b);
    json_decref(root);
    if (b.failed || !b.p) {
        gl_buf_free(&b);
        return base_fail(BASE_ERR_NOMEM, "canonical json: out of memory");
    }
    *ret_json = b.p;
    if (ret_len)
        *ret_len = b.len;
    return BASE_OK_RESULT;
}
