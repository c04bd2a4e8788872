/* Text-format array literals for array parameters (db.h, "Array parameters"). */
#include "db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(db_array *a, const char *s, size_t n)
{
    if (a->oom)
        return;
    if (a->len + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        while (cap < a->len + n + 1)
            cap *= 2;
        char *p = realloc(a->text, cap);
        if (!p) {
            a->oom = true;
            return;
        }
        a->text = p;
        a->cap = cap;
    }
    memcpy(a->text + a->len, s, n);
    a->len += n;
    a->text[a->len] = '\0';
}

static void putc1(db_array *a, char c)
{
    put(a, &c, 1);
}

static void separator(db_array *a)
{
    if (a->count++ > 0)
        putc1(a, ',');
}

void db_array_begin(db_array *a)
{
    memset(a, 0, sizeof *a);
    putc1(a, '{');
}

void db_array_text(db_array *a, const char *s)
{
    separator(a);
    if (!s) {
        put(a, "NULL", 4);
        return;
    }
    putc1(a, '"');
    for (const char *c = s; *c; c++) {
        if (*c == '"' || *c == '\\')
            putc1(a, '\\');
        putc1(a, *c);
    }
    putc1(a, '"');
}

void db_array_int(db_array *a, int64_t v)
{
    separator(a);
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    put(a, tmp, (size_t)n);
}

void db_array_hex(db_array *a, const void *data, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *d = data;
    separator(a);
    putc1(a, '"');
    for (size_t i = 0; i < n; i++) {
        char two[2] = {digits[d[i] >> 4], digits[d[i] & 15]};
        put(a, two, 2);
    }
    putc1(a, '"');
}

db_array_mark db_array_save(const db_array *a)
{
    return (db_array_mark){a->len, a->count};
}

void db_array_restore(db_array *a, db_array_mark m)
{
    if (m.len > a->len)
        return;
    a->len = m.len;
    a->count = m.count;
    if (a->text)
        a->text[a->len] = '\0';
}

base_result db_array_end(db_array *a)
{
    putc1(a, '}');
    if (a->oom)
        return base_fail(BASE_ERR_NOMEM, "db: out of memory building an array parameter");
    return BASE_OK_RESULT;
}

void db_array_free(db_array *a)
{
    free(a->text);
    memset(a, 0, sizeof *a);
}

base_result db_text_array(const char *const *v, size_t n, char **ret_literal)
{
    db_array a;
    db_array_begin(&a);
    for (size_t i = 0; i < n; i++)
        db_array_text(&a, v[i]);
    base_result r = db_array_end(&a);
    if (!base_is_ok(r)) {
        db_array_free(&a);
        return r;
    }
    *ret_literal = a.text;
    return BASE_OK_RESULT;
}
