/* The bundle loader (bundle.h): parse, validate every rule of BUNDLE-FORMAT.md, compile.
 *
 * The whole compiled bundle lives in one arena owned by the gl_bundle, so a failed load frees everything with
 * one call and a loaded bundle is a read-only tree of plain C structures. Messages locate the failure as
 * "<where>: <path>: <what>", where <where> names the pathway and rule by index and id and <path> is the JSON
 * path inside it; bundles are clinical content, not PHI, so messages may quote the bundle. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define id_ok         gl_id_ok
#define ARENA_CHUNK   (64 * 1024)
#define WHERE_MAX     256
#define PATH_MAX_GL   256
#define MSG_MAX       384
#define MAX_SORT_KEYS 128

/* ---------------------------------------------------------------------------------------------------------
 * The arena. */

struct gl_arena_chunk {
    gl_arena_chunk *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

static void *arena_alloc(gl_bundle *b, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    gl_arena_chunk *c = b->arena;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = b->arena;
        c->used = 0;
        c->cap = cap;
        b->arena = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static char *arena_strdup(gl_bundle *b, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(b, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void gl_bundle_free(gl_bundle *b)
{
    if (!b)
        return;
    gl_arena_chunk *c = b->arena;
    while (c) {
        gl_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(b);
}

/* ---------------------------------------------------------------------------------------------------------
 * Syntax helpers shared with the evaluator. */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

bool gl_parse_date(const char *s, int32_t *ret_days)
{
    for (int i = 0; i < 10; i++) {
        if (i == 4 || i == 7) {
            if (s[i] != '-')
                return false;
        } else if (!is_digit(s[i])) {
            return false;
        }
    }
    if (s[10] != '\0')
        return false;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1900 || y > 2199 || m < 1 || m > 12 || d < 1)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] + (m == 2 && leap ? 1 : 0))
        return false;
    /* days_from_civil (H. Hinnant). */
    int yy = m <= 2 ? y - 1 : y;
    int era = yy / 400;
    int yoe = yy - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *ret_days = (int32_t)(era * 146097 + doe - 719468);
    return true;
}

bool gl_icd_key(const char *code, char ret_key[GL_ICD_KEY])
{
    if (!is_upper(code[0]) || !is_digit(code[1]) || !(is_digit(code[2]) || is_upper(code[2])))
        return false;
    char key[GL_ICD_KEY] = {code[0], code[1], code[2]};
    size_t n = 3;
    const char *p = code + 3;
    if (*p == '.') {
        p++;
        size_t ext = 0;
        while (*p && ext < 4 && (is_digit(*p) || is_upper(*p))) {
            key[n++] = *p++;
            ext++;
        }
        if (ext == 0)
            return false;
    }
    if (*p != '\0')
        return false;
    key[n] = '\0';
    memcpy(ret_key, key, GL_ICD_KEY);
    return true;
}

bool gl_icd_in(const gl_icd_range *r, const char *key)
{
    return strcmp(key, r->from) >= 0 && strncmp(key, r->to, r->to_len) <= 0;
}

bool gl_icd_in_any(const gl_icd_range *r, uint32_t n, const char *key)
{
    for (uint32_t i = 0; i < n; i++)
        if (gl_icd_in(&r[i], key))
            return true;
    return false;
}

bool gl_loinc_ok(const char *s)
{
    size_t n = 0;
    while (is_digit(s[n]))
        n++;
    return n >= 1 && n <= 7 && s[n] == '-' && is_digit(s[n + 1]) && s[n + 2] == '\0';
}

bool gl_name_ok(const char *s)
{
    if (!is_lower(s[0]))
        return false;
    size_t n = 1;
    for (; s[n]; n++)
        if (!(is_lower(s[n]) || is_digit(s[n]) || s[n] == '_'))
            return false;
    return n <= 32;
}

bool gl_flag_name_ok(const char *s)
{
    if (!is_lower(s[0]))
        return false;
    size_t n = 1;
    for (; s[n]; n++)
        if (!(is_lower(s[n]) || is_digit(s[n]) || s[n] == '_'))
            return false;
    return n <= 64;
}

bool gl_unit_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f)
            return false;
    return n >= 1 && n <= GL_MAX_UNIT;
}

bool gl_id_ok(const char *s)
{
    if (!(is_lower(s[0]) || is_digit(s[0])))
        return false;
    size_t n = 1;
    for (; s[n]; n++)
        if (!(is_lower(s[n]) || is_digit(s[n]) || s[n] == '-' || s[n] == '_'))
            return false;
    return n <= GL_MAX_ID;
}

/* bundle_id: [a-z0-9][a-z0-9-]{1,62}. */
static bool bundle_id_ok(const char *s)
{
    if (!(is_lower(s[0]) || is_digit(s[0])))
        return false;
    size_t n = 1;
    for (; s[n]; n++)
        if (!(is_lower(s[n]) || is_digit(s[n]) || s[n] == '-'))
            return false;
    return n >= 2 && n <= 63;
}

/* MAJOR.MINOR.PATCH, digits only, no leading zeros, each <= 9999. */
static bool semver_ok(const char *s)
{
    for (int part = 0; part < 3; part++) {
        size_t n = 0;
        while (is_digit(s[n]))
            n++;
        if (n == 0 || n > 4 || (n > 1 && s[0] == '0'))
            return false;
        s += n;
        if (part < 2) {
            if (*s != '.')
                return false;
            s++;
        }
    }
    return *s == '\0';
}

/* Finding text values and specialties: [a-z0-9][a-z0-9_-]{0,63}, like ids. */
#define value_ok id_ok

/* ---------------------------------------------------------------------------------------------------------
 * The loading context and its messages. */

typedef struct ld {
    gl_bundle *b;
    char where[WHERE_MAX]; /* "pathways[0] (ckd-nephrology) rules[3] (ckd-albuminuria)" or "bundle" */
} ld;

static base_result bad(const ld *c, const char *path, const char *fmt, ...) BASE_PRINTF(3, 4);

static base_result bad(const ld *c, const char *path, const char *fmt, ...)
{
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path && path[0])
        return base_fail(BASE_ERR_INVALID, "%s: %s: %s", c->where, path, msg);
    return base_fail(BASE_ERR_INVALID, "%s: %s", c->where, msg);
}

static base_result nomem(void)
{
    return base_fail(BASE_ERR_NOMEM, "bundle: out of memory");
}

/* path + "." + key (or "[i]") into out; a path too long for the buffer ends in "...". */
static void path_fix(char out[PATH_MAX_GL], int n)
{
    if (n < 0 || n >= PATH_MAX_GL)
        memcpy(out + PATH_MAX_GL - 4, "...", 4);
}

static void path_key(char out[PATH_MAX_GL], const char *path, const char *key)
{
    if (path && path[0])
        path_fix(out, snprintf(out, PATH_MAX_GL, "%s.%s", path, key));
    else
        path_fix(out, snprintf(out, PATH_MAX_GL, "%s", key));
}

static void path_index(char out[PATH_MAX_GL], const char *path, size_t i)
{
    path_fix(out, snprintf(out, PATH_MAX_GL, "%s[%zu]", path, i));
}

static base_result only_keys(const ld *c, const char *path, json_t *obj, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, k) == 0)
                ok = true;
        if (!ok)
            return bad(c, path, "unknown key \"%.64s\"", k);
    }
    return BASE_OK_RESULT;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of obj (at most MAX_SORT_KEYS, checked by the caller) in sorted order. */
static size_t sorted_keys(json_t *obj, const char **keys)
{
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (n < MAX_SORT_KEYS)
            keys[n++] = k;
    }
    qsort(keys, n, sizeof *keys, str_cmp);
    return n;
}

/* A member that must be an object (required) or may be absent (*ret NULL). */
static base_result get_object(const ld *c, const char *path, json_t *obj, const char *key, bool required,
                              json_t **ret)
{
    char p[PATH_MAX_GL];
    path_key(p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return bad(c, path, "missing \"%s\"", key);
        *ret = NULL;
        return BASE_OK_RESULT;
    }
    if (!json_is_object(v))
        return bad(c, p, "not an object");
    *ret = v;
    return BASE_OK_RESULT;
}

static base_result get_array(const ld *c, const char *path, json_t *obj, const char *key, bool required,
                             size_t min, size_t max, json_t **ret)
{
    char p[PATH_MAX_GL];
    path_key(p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return bad(c, path, "missing \"%s\"", key);
        *ret = NULL;
        return BASE_OK_RESULT;
    }
    if (!json_is_array(v))
        return bad(c, p, "not an array");
    if (json_array_size(v) < min || json_array_size(v) > max)
        return bad(c, p, "must have %zu..%zu entries", min, max);
    *ret = v;
    return BASE_OK_RESULT;
}

/* A string value checked for length (bytes) and, unlike free JSON, no control characters. */
static base_result check_text(const ld *c, const char *path, json_t *v, size_t min, size_t max,
                              const char **ret)
{
    if (!json_is_string(v))
        return bad(c, path, "not a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n < min || n > max)
        return bad(c, path, "must be %zu..%zu bytes", min, max);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return bad(c, path, "control characters are not allowed");
    *ret = s;
    return BASE_OK_RESULT;
}

static base_result get_text(const ld *c, const char *path, json_t *obj, const char *key, bool required,
                            size_t min, size_t max, const char **ret)
{
    char p[PATH_MAX_GL];
    path_key(p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return bad(c, path, "missing \"%s\"", key);
        *ret = NULL;
        return BASE_OK_RESULT;
    }
    const char *s = NULL;
    BASE_GUARD(check_text(c, p, v, min, max, &s));
    char *d = arena_strdup(c->b, s);
    if (!d)
        return nomem();
    *ret = d;
    return BASE_OK_RESULT;
}

/* A string member checked by a syntax predicate; `what` describes the syntax for the message. */
static base_result get_token(const ld *c, const char *path, json_t *obj, const char *key, bool required,
                             bool (*ok)(const char *), const char *what, const char **ret)
{
    const char *s = NULL;
    BASE_GUARD(get_text(c, path, obj, key, required, 1, GL_MAX_TEXT, &s));
    if (s && !ok(s)) {
        char p[PATH_MAX_GL];
        path_key(p, path, key);
        return bad(c, p, "\"%.64s\" is not %s", s, what);
    }
    *ret = s;
    return BASE_OK_RESULT;
}

static base_result get_number(const ld *c, const char *path, json_t *obj, const char *key, bool required,
                              double lo, double hi, bool *ret_present, double *ret)
{
    char p[PATH_MAX_GL];
    path_key(p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return bad(c, path, "missing \"%s\"", key);
        *ret_present = false;
        return BASE_OK_RESULT;
    }
    if (!json_is_number(v))
        return bad(c, p, "not a number");
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return bad(c, p, "must be %g..%g", lo, hi);
    *ret_present = true;
    *ret = d;
    return BASE_OK_RESULT;
}

static base_result get_int(const ld *c, const char *path, json_t *obj, const char *key, bool required,
                           long lo, long hi, bool *ret_present, long *ret)
{
    char p[PATH_MAX_GL];
    path_key(p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return bad(c, path, "missing \"%s\"", key);
        *ret_present = false;
        return BASE_OK_RESULT;
    }
    /* 730, 730.0 and 7.3e2 are one canonical number (canon.c), so all three are an integer here. */
    double d = json_number_value(v);
    if (!json_is_number(v) || d != floor(d))
        return bad(c, p, "not an integer");
    if (d < (double)lo || d > (double)hi)
        return bad(c, p, "must be %ld..%ld", lo, hi);
    *ret_present = true;
    *ret = (long)d;
    return BASE_OK_RESULT;
}

/* An array of strings (each checked by ok, unique) copied into the arena. */
static base_result get_token_list(const ld *c, const char *path, json_t *obj, const char *key, bool required,
                                  size_t min, size_t max, bool (*ok)(const char *), const char *what,
                                  const char ***ret, uint32_t *ret_n)
{
    json_t *arr;
    BASE_GUARD(get_array(c, path, obj, key, required, min, max, &arr));
    if (!arr) {
        *ret = NULL;
        *ret_n = 0;
        return BASE_OK_RESULT;
    }
    char p[PATH_MAX_GL], pi[PATH_MAX_GL];
    path_key(p, path, key);
    size_t n = json_array_size(arr);
    const char **list = arena_alloc(c->b, (n ? n : 1) * sizeof *list);
    if (!list)
        return nomem();
    for (size_t i = 0; i < n; i++) {
        path_index(pi, p, i);
        const char *s = NULL;
        BASE_GUARD(check_text(c, pi, json_array_get(arr, i), 1, GL_MAX_TEXT, &s));
        if (ok && !ok(s))
            return bad(c, pi, "\"%.64s\" is not %s", s, what);
        for (size_t j = 0; j < i; j++)
            if (strcmp(list[j], s) == 0)
                return bad(c, pi, "\"%.64s\" is listed twice", s);
        if (!(list[i] = arena_strdup(c->b, s)))
            return nomem();
    }
    *ret = list;
    *ret_n = (uint32_t)n;
    return BASE_OK_RESULT;
}

static bool any_text_ok(const char *s)
{
    (void)s;
    return true;
}

static bool rxnorm_ok(const char *s)
{
    size_t n = 0;
    while (is_digit(s[n]))
        n++;
    return n >= 1 && n <= 10 && s[n] == '\0';
}

/* ---------------------------------------------------------------------------------------------------------
 * ICD-10-CM code references: {"system": "icd10cm", "code": "N18"} or {"system": "icd10cm", "from", "to"}. */

static base_result compile_code_ref(const ld *c, const char *path, json_t *v, gl_icd_range *out)
{
    static const char *const keys[] = {"system", "code", "from", "to", NULL};
    if (!json_is_object(v))
        return bad(c, path, "not an object");
    BASE_GUARD(only_keys(c, path, v, keys));
    const char *system, *code, *from, *to;
    BASE_GUARD(get_text(c, path, v, "system", true, 1, GL_MAX_TEXT, &system));
    if (strcmp(system, "icd10cm") != 0)
        return bad(c, path, "system \"%.64s\" is not supported (only \"icd10cm\")", system);
    BASE_GUARD(get_text(c, path, v, "code", false, 1, 16, &code));
    BASE_GUARD(get_text(c, path, v, "from", false, 1, 16, &from));
    BASE_GUARD(get_text(c, path, v, "to", false, 1, 16, &to));
    if (code && (from || to))
        return bad(c, path, "give either \"code\" or \"from\" and \"to\", not both");
    if (!code && !(from && to))
        return bad(c, path, "needs \"code\", or both \"from\" and \"to\"");
    if (code) {
        from = code;
        to = code;
    }
    if (!gl_icd_key(from, out->from))
        return bad(c, path, "\"%s\" is not an ICD-10-CM code (e.g. N18 or N18.31)", from);
    if (!gl_icd_key(to, out->to))
        return bad(c, path, "\"%s\" is not an ICD-10-CM code (e.g. N18 or N18.31)", to);
    if (strcmp(out->from, out->to) > 0)
        return bad(c, path, "\"from\" %s is after \"to\" %s", from, to);
    out->to_len = (uint8_t)strlen(out->to);
    return BASE_OK_RESULT;
}

static base_result compile_code_refs(const ld *c, const char *path, json_t *obj, const char *key, size_t max,
                                     gl_icd_range **ret, uint32_t *ret_n)
{
    json_t *arr;
    BASE_GUARD(get_array(c, path, obj, key, true, 1, max, &arr));
    char p[PATH_MAX_GL], pi[PATH_MAX_GL];
    path_key(p, path, key);
    size_t n = json_array_size(arr);
    gl_icd_range *r = arena_alloc(c->b, n * sizeof *r);
    if (!r)
        return nomem();
    for (size_t i = 0; i < n; i++) {
        path_index(pi, p, i);
        BASE_GUARD(compile_code_ref(c, pi, json_array_get(arr, i), &r[i]));
    }
    *ret = r;
    *ret_n = (uint32_t)n;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Units. */

static base_result compile_units(ld *c, json_t *units)
{
    gl_bundle *b = c->b;
    if (json_object_size(units) > GL_MAX_QUANTITIES)
        return bad(c, "units", "at most %d quantity kinds", GL_MAX_QUANTITIES);
    const char *kinds[MAX_SORT_KEYS];
    size_t n = sorted_keys(units, kinds);
    b->quantities = arena_alloc(b, (n ? n : 1) * sizeof *b->quantities);
    if (!b->quantities)
        return nomem();
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX_GL], pa[PATH_MAX_GL], pu[PATH_MAX_GL];
        path_key(p, "units", kinds[i]);
        if (!gl_name_ok(kinds[i]))
            return bad(c, p, "a quantity kind must be [a-z][a-z0-9_]{0,31}");
        json_t *q = json_object_get(units, kinds[i]);
        if (!json_is_object(q))
            return bad(c, p, "not an object");
        static const char *const keys[] = {"canonical", "accept", NULL};
        BASE_GUARD(only_keys(c, p, q, keys));
        gl_quantity *out = &b->quantities[i];
        if (!(out->kind = arena_strdup(b, kinds[i])))
            return nomem();
        BASE_GUARD(get_token(c, p, q, "canonical", true, gl_unit_ok,
                             "a unit (1..64 printable ASCII, no space)", &out->canonical));
        json_t *acc;
        BASE_GUARD(get_object(c, p, q, "accept", true, &acc));
        path_key(pa, p, "accept");
        size_t na = json_object_size(acc);
        if (na < 1 || na > GL_MAX_ACCEPT)
            return bad(c, pa, "must list 1..%d units", GL_MAX_ACCEPT);
        const char *units_sorted[MAX_SORT_KEYS];
        sorted_keys(acc, units_sorted);
        out->accept = arena_alloc(b, na * sizeof *out->accept);
        if (!out->accept)
            return nomem();
        bool canonical_listed = false;
        for (size_t j = 0; j < na; j++) {
            path_key(pu, pa, units_sorted[j]);
            if (!gl_unit_ok(units_sorted[j]))
                return bad(c, pu, "not a unit (1..64 printable ASCII, no space)");
            json_t *f = json_object_get(acc, units_sorted[j]);
            if (!json_is_number(f))
                return bad(c, pu, "the factor is not a number");
            double factor = json_number_value(f);
            if (!isfinite(factor) || factor <= 0 || factor > GL_MAX_ABS_THRESHOLD || factor < 1e-12)
                return bad(c, pu, "the factor must be positive (1e-12..1e12)");
            if (strcmp(units_sorted[j], out->canonical) == 0) {
                if (factor != 1)
                    return bad(c, pu, "the canonical unit's factor must be 1");
                canonical_listed = true;
            }
            out->accept[j].factor = factor;
            if (!(out->accept[j].unit = arena_strdup(b, units_sorted[j])))
                return nomem();
        }
        if (!canonical_listed)
            return bad(c, pa, "must list the canonical unit \"%s\" with factor 1", out->canonical);
        out->naccept = (uint32_t)na;
    }
    b->nquantities = (uint32_t)n;
    return BASE_OK_RESULT;
}

static int find_quantity(const gl_bundle *b, const char *kind)
{
    for (uint32_t i = 0; i < b->nquantities; i++)
        if (strcmp(b->quantities[i].kind, kind) == 0)
            return (int)i;
    return -1;
}

/* ---------------------------------------------------------------------------------------------------------
 * Data elements. */

static int find_data(const gl_pathway *pw, const char *id)
{
    size_t lo = 0, hi = pw->ndata;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = strcmp(pw->data[mid].id, id);
        if (cmp == 0)
            return (int)mid;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static base_result compile_data_element(ld *c, const char *p, json_t *v, gl_data *d)
{
    gl_bundle *b = c->b;
    if (!json_is_object(v))
        return bad(c, p, "not an object");
    static const char *const kinds[] = {"observation", "medication", "flag", "finding", "problem"};
    int kind = -1;
    for (int k = 0; k < (int)BASE_ARRAY_LEN(kinds); k++) {
        if (json_object_get(v, kinds[k])) {
            if (kind >= 0)
                return bad(c, p, "names both \"%s\" and \"%s\": a data element has one kind", kinds[kind],
                           kinds[k]);
            kind = k;
        }
    }
    if (kind < 0)
        return bad(c, p, "needs one of \"observation\", \"medication\", \"flag\", \"finding\", \"problem\"");
    char pk[PATH_MAX_GL];
    path_key(pk, p, kinds[kind]);
    switch (kind) {
    case 0: {
        static const char *const keys[] = {"observation", "window_days", NULL};
        static const char *const okeys[] = {"codes", "quantity", NULL};
        BASE_GUARD(only_keys(c, p, v, keys));
        json_t *o;
        BASE_GUARD(get_object(c, p, v, "observation", true, &o));
        BASE_GUARD(only_keys(c, pk, o, okeys));
        d->kind = GL_D_OBS;
        BASE_GUARD(get_token_list(c, pk, o, "codes", true, 1, GL_MAX_LIST, gl_loinc_ok,
                                  "a LOINC code (e.g. 33914-3)", &d->codes, &d->ncodes));
        const char *qk;
        BASE_GUARD(get_text(c, pk, o, "quantity", true, 1, GL_MAX_TEXT, &qk));
        int q = find_quantity(b, qk);
        if (q < 0) {
            char pq[PATH_MAX_GL];
            path_key(pq, pk, "quantity");
            return bad(c, pq, "unknown quantity kind \"%.64s\" (not in \"units\")", qk);
        }
        d->quantity = (uint32_t)q;
        bool present;
        long w;
        BASE_GUARD(get_int(c, p, v, "window_days", true, 1, GL_MAX_WINDOW_DAYS, &present, &w));
        d->window_days = (int32_t)w;
        break;
    }
    case 1: {
        static const char *const keys[] = {"medication", NULL};
        static const char *const mkeys[] = {"codes", "classes", NULL};
        BASE_GUARD(only_keys(c, p, v, keys));
        json_t *m;
        BASE_GUARD(get_object(c, p, v, "medication", true, &m));
        BASE_GUARD(only_keys(c, pk, m, mkeys));
        d->kind = GL_D_MED;
        BASE_GUARD(get_token_list(c, pk, m, "codes", false, 1, GL_MAX_LIST, rxnorm_ok,
                                  "an RxNorm code (1..10 digits)", &d->codes, &d->ncodes));
        BASE_GUARD(get_token_list(c, pk, m, "classes", false, 1, GL_MAX_LIST, gl_name_ok,
                                  "a class ([a-z][a-z0-9_]{0,31})", &d->classes, &d->nclasses));
        if (d->ncodes == 0 && d->nclasses == 0)
            return bad(c, pk, "needs \"codes\" or \"classes\"");
        break;
    }
    case 2: {
        static const char *const keys[] = {"flag", NULL};
        BASE_GUARD(only_keys(c, p, v, keys));
        d->kind = GL_D_FLAG;
        BASE_GUARD(get_token(c, p, v, "flag", true, gl_flag_name_ok, "a flag name ([a-z][a-z0-9_]{0,63})",
                             &d->name));
        break;
    }
    case 3: {
        static const char *const keys[] = {"finding", "type", "values", NULL};
        BASE_GUARD(only_keys(c, p, v, keys));
        d->kind = GL_D_FINDING;
        BASE_GUARD(get_token(c, p, v, "finding", true, gl_flag_name_ok,
                             "a finding name ([a-z][a-z0-9_]{0,63})", &d->name));
        const char *type;
        BASE_GUARD(get_text(c, p, v, "type", true, 1, GL_MAX_TEXT, &type));
        char pt[PATH_MAX_GL];
        path_key(pt, p, "type");
        if (strcmp(type, "number") == 0) {
            d->numeric = true;
            if (json_object_get(v, "values"))
                return bad(c, p, "\"values\" is only for a finding of type \"text\"");
        } else if (strcmp(type, "text") == 0) {
            BASE_GUARD(get_token_list(c, p, v, "values", true, 1, GL_MAX_LIST, value_ok,
                                      "a value ([a-z0-9][a-z0-9_-]{0,63})", &d->values, &d->nvalues));
        } else {
            return bad(c, pt, "must be \"number\" or \"text\"");
        }
        break;
    }
    case 4: {
        static const char *const keys[] = {"problem", NULL};
        static const char *const pkeys[] = {"codes", NULL};
        BASE_GUARD(only_keys(c, p, v, keys));
        json_t *pr;
        BASE_GUARD(get_object(c, p, v, "problem", true, &pr));
        BASE_GUARD(only_keys(c, pk, pr, pkeys));
        d->kind = GL_D_PROBLEM;
        BASE_GUARD(compile_code_refs(c, pk, pr, "codes", GL_MAX_APPLY_CODES, &d->ranges, &d->nranges));
        break;
    }
    default:
        return base_fail(BASE_ERR_INTERNAL, "bundle: impossible data kind");
    }
    return BASE_OK_RESULT;
}

static int code_ref_cmp(const void *a, const void *b)
{
    const gl_code_ref *x = a, *y = b;
    int cmp = strcmp(x->code, y->code);
    if (cmp)
        return cmp;
    return (x->data > y->data) - (x->data < y->data);
}

static base_result compile_data(ld *c, json_t *data, gl_pathway *pw)
{
    gl_bundle *b = c->b;
    if (json_object_size(data) > GL_MAX_DATA)
        return bad(c, "data", "at most %d data elements", GL_MAX_DATA);
    const char *ids[MAX_SORT_KEYS];
    size_t n = sorted_keys(data, ids);
    pw->data = arena_alloc(b, (n ? n : 1) * sizeof *pw->data);
    if (!pw->data)
        return nomem();
    size_t nidx = 0;
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX_GL];
        path_key(p, "data", ids[i]);
        if (!id_ok(ids[i]))
            return bad(c, p, "a data id must be [a-z0-9][a-z0-9_-]{0,63}");
        if (strcmp(ids[i], "age") == 0 || strcmp(ids[i], "sex") == 0)
            return bad(c, p, "\"age\" and \"sex\" are built in: choose another id");
        gl_data *d = &pw->data[i];
        if (!(d->id = arena_strdup(b, ids[i])))
            return nomem();
        BASE_GUARD(compile_data_element(c, p, json_object_get(data, ids[i]), d));
        if (d->kind == GL_D_OBS)
            nidx += d->ncodes;
    }
    pw->ndata = (uint32_t)n;
    pw->obs_index = arena_alloc(b, (nidx ? nidx : 1) * sizeof *pw->obs_index);
    if (!pw->obs_index)
        return nomem();
    size_t k = 0;
    for (uint32_t i = 0; i < pw->ndata; i++) {
        if (pw->data[i].kind != GL_D_OBS)
            continue;
        for (uint32_t j = 0; j < pw->data[i].ncodes; j++)
            pw->obs_index[k++] = (gl_code_ref){.code = pw->data[i].codes[j], .data = i};
    }
    qsort(pw->obs_index, k, sizeof *pw->obs_index, code_ref_cmp);
    pw->nobs_index = (uint32_t)k;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Criteria. A criterion object has exactly one of the kind keys and only that kind's other keys. */

typedef struct crit_ctx {
    const gl_pathway *pw;
    uint32_t count; /* criteria compiled in this rule */
} crit_ctx;

static const char *const crit_kinds[] = {"all",        "any",     "not",           "latest", "count",
                                         "decline",    "slope",   "category_drop", "flag",   "finding",
                                         "medication", "problem", "age",           "sex",    "missing"};

/* The gl_ckind of each entry of crit_kinds ("finding" is refined to CMP or IN by its element's type). */
static const gl_ckind crit_kind_enum[] = {GL_C_ALL,   GL_C_ANY,         GL_C_NOT,        GL_C_LATEST,
                                          GL_C_COUNT, GL_C_DECLINE,     GL_C_SLOPE,      GL_C_CATEGORY_DROP,
                                          GL_C_FLAG,  GL_C_FINDING_CMP, GL_C_MEDICATION, GL_C_PROBLEM,
                                          GL_C_AGE,   GL_C_SEX,         GL_C_MISSING};

static base_result parse_op(const ld *c, const char *path, json_t *obj, const char *key, gl_op *ret)
{
    const char *s = NULL;
    BASE_GUARD(get_text(c, path, obj, key, true, 1, 2, &s));
    static const char *const ops[] = {"<", "<=", ">", ">=", "==", "!="};
    for (size_t i = 0; i < BASE_ARRAY_LEN(ops); i++) {
        if (strcmp(ops[i], s) == 0) {
            *ret = (gl_op)i;
            return BASE_OK_RESULT;
        }
    }
    char p[PATH_MAX_GL];
    path_key(p, path, key);
    return bad(c, p, "must be one of < <= > >= == !=");
}

/* The data element a criterion names, of the wanted kind. */
static base_result resolve_data(const ld *c, const crit_ctx *cc, const char *path, json_t *obj,
                                const char *key, gl_dkind want, bool any_kind, uint16_t *ret)
{
    char p[PATH_MAX_GL];
    path_key(p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return bad(c, p, "must name a data element (a string)");
    const char *id = json_string_value(v);
    int i = find_data(cc->pw, id);
    if (i < 0)
        return bad(c, p, "unknown data element \"%.64s\"", id);
    static const char *const kind_names[] = {"observation", "medication", "flag", "finding", "problem"};
    if (!any_kind && cc->pw->data[i].kind != want)
        return bad(c, p, "data element \"%.64s\" is a %s, not a %s", id, kind_names[cc->pw->data[i].kind],
                   kind_names[want]);
    *ret = (uint16_t)i;
    return BASE_OK_RESULT;
}

static base_result get_span(const ld *c, const char *path, json_t *obj, int32_t *ret)
{
    bool present;
    long v = 0;
    BASE_GUARD(get_int(c, path, obj, "min_span_days", false, 0, GL_MAX_WINDOW_DAYS, &present, &v));
    *ret = present ? (int32_t)v : 0;
    return BASE_OK_RESULT;
}

/* konst: 1 when the criterion is true whatever the data, 0 when it is always false, -1 otherwise. */
static base_result compile_crit(ld *c, crit_ctx *cc, const char *path, json_t *v, int depth, gl_crit *out,
                                int *konst)
{
    gl_bundle *b = c->b;
    *konst = -1;
    if (!json_is_object(v))
        return bad(c, path, "a criterion must be an object");
    if (depth > GL_MAX_DEPTH)
        return bad(c, path, "criteria nested deeper than %d", GL_MAX_DEPTH);
    if (++cc->count > GL_MAX_CRITERIA)
        return bad(c, path, "more than %d criteria in one rule", GL_MAX_CRITERIA);
    int kind = -1;
    for (int k = 0; k < (int)BASE_ARRAY_LEN(crit_kinds); k++) {
        if (json_object_get(v, crit_kinds[k])) {
            if (kind >= 0)
                return bad(c, path, "names both \"%s\" and \"%s\": a criterion has one kind",
                           crit_kinds[kind], crit_kinds[k]);
            kind = k;
        }
    }
    if (kind < 0)
        return bad(c, path,
                   "not a criterion (no all, any, not, latest, count, decline, slope, category_drop, "
                   "flag, finding, medication, problem, age, sex or missing)");
    char pk[PATH_MAX_GL];
    path_key(pk, path, crit_kinds[kind]);
    out->kind = crit_kind_enum[kind];
    bool present;
    switch (out->kind) {
    case GL_C_ALL:
    case GL_C_ANY: {
        const char *const keys[] = {crit_kinds[kind], NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        json_t *arr;
        BASE_GUARD(get_array(c, path, v, crit_kinds[kind], true, 0, GL_MAX_CHILDREN, &arr));
        size_t n = json_array_size(arr);
        out->kids = arena_alloc(b, (n ? n : 1) * sizeof *out->kids);
        if (!out->kids)
            return nomem();
        out->nkids = (uint32_t)n;
        bool all_true = true, all_false = true, some_true = false, some_false = false;
        for (size_t i = 0; i < n; i++) {
            char pi[PATH_MAX_GL];
            path_index(pi, pk, i);
            int kk;
            BASE_GUARD(compile_crit(c, cc, pi, json_array_get(arr, i), depth + 1, &out->kids[i], &kk));
            all_true &= kk == 1;
            all_false &= kk == 0;
            some_true |= kk == 1;
            some_false |= kk == 0;
        }
        if (out->kind == GL_C_ALL)
            *konst = some_false ? 0 : all_true ? 1 : -1;
        else
            *konst = some_true ? 1 : all_false ? 0 : -1;
        break;
    }
    case GL_C_NOT: {
        static const char *const keys[] = {"not", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        out->kids = arena_alloc(b, sizeof *out->kids);
        if (!out->kids)
            return nomem();
        out->nkids = 1;
        int kk;
        BASE_GUARD(compile_crit(c, cc, pk, json_object_get(v, "not"), depth + 1, out->kids, &kk));
        *konst = kk < 0 ? -1 : !kk;
        break;
    }
    case GL_C_LATEST: {
        static const char *const keys[] = {"latest", "op", "value", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "latest", GL_D_OBS, false, &out->data));
        BASE_GUARD(parse_op(c, path, v, "op", &out->op));
        BASE_GUARD(get_number(c, path, v, "value", true, -GL_MAX_ABS_THRESHOLD, GL_MAX_ABS_THRESHOLD,
                              &present, &out->value));
        break;
    }
    case GL_C_COUNT: {
        static const char *const keys[] = {"count", "where", "op", "value", NULL};
        static const char *const wkeys[] = {"op", "value", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "count", GL_D_OBS, false, &out->data));
        json_t *w;
        BASE_GUARD(get_object(c, path, v, "where", true, &w));
        char pw[PATH_MAX_GL];
        path_key(pw, path, "where");
        BASE_GUARD(only_keys(c, pw, w, wkeys));
        BASE_GUARD(parse_op(c, pw, w, "op", &out->where_op));
        BASE_GUARD(get_number(c, pw, w, "value", true, -GL_MAX_ABS_THRESHOLD, GL_MAX_ABS_THRESHOLD, &present,
                              &out->where_value));
        BASE_GUARD(parse_op(c, path, v, "op", &out->op));
        long n;
        BASE_GUARD(get_int(c, path, v, "value", true, 0, GL_INPUT_MAX_OBSERVATIONS, &present, &n));
        out->value = (double)n;
        break;
    }
    case GL_C_DECLINE: {
        static const char *const keys[] = {"decline", "percent", "min_span_days", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "decline", GL_D_OBS, false, &out->data));
        BASE_GUARD(get_number(c, path, v, "percent", true, 0, 100, &present, &out->percent));
        if (out->percent <= 0 || out->percent >= 100)
            return bad(c, path, "percent: must be above 0 and below 100");
        BASE_GUARD(get_span(c, path, v, &out->min_span_days));
        break;
    }
    case GL_C_SLOPE: {
        static const char *const keys[] = {"slope",         "op",         "value", "per",
                                           "min_span_days", "min_points", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "slope", GL_D_OBS, false, &out->data));
        BASE_GUARD(parse_op(c, path, v, "op", &out->op));
        BASE_GUARD(get_number(c, path, v, "value", true, -GL_MAX_ABS_THRESHOLD, GL_MAX_ABS_THRESHOLD,
                              &present, &out->value));
        const char *per;
        BASE_GUARD(get_text(c, path, v, "per", false, 1, GL_MAX_TEXT, &per));
        if (per && strcmp(per, "year") != 0)
            return bad(c, path, "per: only \"year\" is supported");
        BASE_GUARD(get_span(c, path, v, &out->min_span_days));
        long mp = 2;
        BASE_GUARD(get_int(c, path, v, "min_points", false, 2, GL_INPUT_MAX_OBSERVATIONS, &present, &mp));
        out->min_points = present ? (uint32_t)mp : 2;
        break;
    }
    case GL_C_CATEGORY_DROP: {
        static const char *const keys[] = {"category_drop", "bounds", "min_span_days", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "category_drop", GL_D_OBS, false, &out->data));
        json_t *arr;
        BASE_GUARD(get_array(c, path, v, "bounds", true, 1, GL_MAX_BOUNDS, &arr));
        char pb[PATH_MAX_GL];
        path_key(pb, path, "bounds");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *x = json_array_get(arr, i);
            if (!json_is_number(x))
                return bad(c, pb, "bounds must be numbers");
            out->bounds[i] = json_number_value(x);
            if (i > 0 && !(out->bounds[i] < out->bounds[i - 1]))
                return bad(c, pb, "bounds must be strictly descending");
        }
        out->nbounds = (uint32_t)json_array_size(arr);
        BASE_GUARD(get_span(c, path, v, &out->min_span_days));
        break;
    }
    case GL_C_FLAG: {
        static const char *const keys[] = {"flag", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "flag", GL_D_FLAG, false, &out->data));
        break;
    }
    case GL_C_FINDING_CMP: {
        BASE_GUARD(resolve_data(c, cc, path, v, "finding", GL_D_FINDING, false, &out->data));
        const gl_data *d = &cc->pw->data[out->data];
        if (d->numeric) {
            static const char *const keys[] = {"finding", "op", "value", NULL};
            BASE_GUARD(only_keys(c, path, v, keys));
            BASE_GUARD(parse_op(c, path, v, "op", &out->op));
            BASE_GUARD(get_number(c, path, v, "value", true, -GL_MAX_ABS_THRESHOLD, GL_MAX_ABS_THRESHOLD,
                                  &present, &out->value));
            out->kind = GL_C_FINDING_CMP;
        } else {
            static const char *const keys[] = {"finding", "in", NULL};
            BASE_GUARD(only_keys(c, path, v, keys));
            const char **in;
            uint32_t nin;
            BASE_GUARD(get_token_list(c, path, v, "in", true, 1, GL_MAX_LIST, any_text_ok, "", &in, &nin));
            out->mask = 0;
            for (uint32_t i = 0; i < nin; i++) {
                uint32_t j = 0;
                while (j < d->nvalues && strcmp(d->values[j], in[i]) != 0)
                    j++;
                if (j == d->nvalues)
                    return bad(c, path, "in: \"%.64s\" is not one of the values of \"%s\"", in[i], d->id);
                out->mask |= UINT32_C(1) << j;
            }
            out->kind = GL_C_FINDING_IN;
        }
        break;
    }
    case GL_C_MEDICATION: {
        static const char *const keys[] = {"medication", "min_days", "status", NULL};
        static const char *const statuses[] = {"active",  "completed", "stopped",
                                               "on-hold", "intended",  "not-taken"};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "medication", GL_D_MED, false, &out->data));
        long md = 0;
        BASE_GUARD(get_int(c, path, v, "min_days", false, 0, GL_MAX_WINDOW_DAYS, &present, &md));
        out->min_days = present ? (int32_t)md : 0;
        const char **st;
        uint32_t nst;
        BASE_GUARD(
            get_token_list(c, path, v, "status", false, 1, GL_MED_STATUS_COUNT, any_text_ok, "", &st, &nst));
        if (nst == 0) {
            out->mask = (1u << GL_MED_ACTIVE) | (1u << GL_MED_COMPLETED) | (1u << GL_MED_STOPPED) |
                        (1u << GL_MED_ON_HOLD);
        }
        for (uint32_t i = 0; i < nst; i++) {
            uint32_t j = 0;
            while (j < GL_MED_STATUS_COUNT && strcmp(statuses[j], st[i]) != 0)
                j++;
            if (j == GL_MED_STATUS_COUNT)
                return bad(c, path,
                           "status: \"%.64s\" is not one of active, completed, stopped, on-hold, "
                           "intended, not-taken",
                           st[i]);
            out->mask |= 1u << j;
        }
        break;
    }
    case GL_C_PROBLEM: {
        static const char *const keys[] = {"problem", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "problem", GL_D_PROBLEM, false, &out->data));
        break;
    }
    case GL_C_AGE: {
        static const char *const keys[] = {"age", NULL};
        static const char *const akeys[] = {"op", "value", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        json_t *a;
        BASE_GUARD(get_object(c, path, v, "age", true, &a));
        BASE_GUARD(only_keys(c, pk, a, akeys));
        BASE_GUARD(parse_op(c, pk, a, "op", &out->op));
        BASE_GUARD(get_number(c, pk, a, "value", true, 0, GL_INPUT_MAX_AGE, &present, &out->value));
        break;
    }
    case GL_C_SEX: {
        static const char *const keys[] = {"sex", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        const char *s = NULL;
        BASE_GUARD(get_text(c, path, v, "sex", true, 1, GL_MAX_TEXT, &s));
        if (strcmp(s, "female") == 0)
            out->mask = GL_SEX_FEMALE;
        else if (strcmp(s, "male") == 0)
            out->mask = GL_SEX_MALE;
        else if (strcmp(s, "other") == 0)
            out->mask = GL_SEX_OTHER;
        else
            return bad(c, pk, "must be \"female\", \"male\" or \"other\"");
        break;
    }
    case GL_C_MISSING: {
        static const char *const keys[] = {"missing", NULL};
        BASE_GUARD(only_keys(c, path, v, keys));
        BASE_GUARD(resolve_data(c, cc, path, v, "missing", GL_D_OBS, true, &out->data));
        break;
    }
    default:
        return base_fail(BASE_ERR_INTERNAL, "bundle: impossible criterion kind");
    }
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Rules and the default. */

static base_result compile_action(ld *c, const gl_pathway *pw, json_t *v, gl_action *a)
{
    gl_bundle *b = c->b;
    const char *outcome;
    BASE_GUARD(get_text(c, "", v, "outcome", true, 1, GL_MAX_TEXT, &outcome));
    bool has_urgency = json_object_get(v, "urgency") != NULL;
    bool has_tests = json_object_get(v, "tests") != NULL;
    bool has_steps = json_object_get(v, "steps") != NULL;
    bool has_needs = json_object_get(v, "needs") != NULL;
    if (strcmp(outcome, "REFER") == 0) {
        a->outcome = GL_REFER;
        if (!has_urgency)
            return bad(c, "", "outcome REFER needs \"urgency\" (routine, urgent or emergency)");
        BASE_GUARD(get_text(c, "", v, "urgency", true, 1, GL_MAX_TEXT, &a->urgency));
        if (strcmp(a->urgency, "routine") != 0 && strcmp(a->urgency, "urgent") != 0 &&
            strcmp(a->urgency, "emergency") != 0)
            return bad(c, "urgency", "must be \"routine\", \"urgent\" or \"emergency\"");
    } else if (strcmp(outcome, "WORKUP") == 0) {
        a->outcome = GL_WORKUP;
        if (!has_tests)
            return bad(c, "", "outcome WORKUP needs \"tests\" (1..%d named tests)", GL_MAX_ITEMS);
    } else if (strcmp(outcome, "MANAGE") == 0) {
        a->outcome = GL_MANAGE;
        if (!has_steps)
            return bad(c, "", "outcome MANAGE needs \"steps\" (1..%d first steps)", GL_MAX_ITEMS);
    } else if (strcmp(outcome, "INSUFFICIENT") == 0) {
        a->outcome = GL_INSUFFICIENT;
        if (!has_needs)
            return bad(c, "", "outcome INSUFFICIENT needs \"needs\" (1..%d data ids)", GL_MAX_ITEMS);
    } else {
        return bad(c, "outcome", "\"%.64s\" is not REFER, WORKUP, MANAGE or INSUFFICIENT", outcome);
    }
    if (has_urgency && a->outcome != GL_REFER)
        return bad(c, "urgency", "only an outcome REFER has an urgency");
    if (has_tests && a->outcome != GL_WORKUP)
        return bad(c, "tests", "only an outcome WORKUP has tests");
    if (has_steps && a->outcome != GL_MANAGE)
        return bad(c, "steps", "only an outcome MANAGE has steps");
    if (has_needs && a->outcome != GL_INSUFFICIENT)
        return bad(c, "needs", "only an outcome INSUFFICIENT has needs");
    if (!a->urgency)
        a->urgency = "";
    BASE_GUARD(
        get_token_list(c, "", v, "tests", false, 1, GL_MAX_ITEMS, any_text_ok, "", &a->tests, &a->ntests));
    BASE_GUARD(
        get_token_list(c, "", v, "steps", false, 1, GL_MAX_ITEMS, any_text_ok, "", &a->steps, &a->nsteps));
    BASE_GUARD(
        get_token_list(c, "", v, "needs", false, 1, GL_MAX_ITEMS, any_text_ok, "", &a->needs, &a->nneeds));
    for (uint32_t i = 0; i < a->nneeds; i++) {
        int d = find_data(pw, a->needs[i]);
        if (d < 0) {
            char p[PATH_MAX_GL];
            path_index(p, "needs", i);
            return bad(c, p, "unknown data element \"%.64s\"", a->needs[i]);
        }
        a->needs[i] = pw->data[d].id;
    }
    BASE_GUARD(get_text(c, "", v, "explain", false, 1, GL_MAX_TEXT, &a->explain));
    if (!a->explain)
        a->explain = "";
    json_t *cite;
    if (!json_object_get(v, "cite"))
        return bad(c, "", "missing \"cite\" (guideline, year, section)");
    BASE_GUARD(get_object(c, "", v, "cite", true, &cite));
    static const char *const ckeys[] = {"guideline", "year", "section", NULL};
    BASE_GUARD(only_keys(c, "cite", cite, ckeys));
    BASE_GUARD(get_text(c, "cite", cite, "guideline", true, 1, GL_MAX_TEXT, &a->guideline));
    bool present;
    long year;
    BASE_GUARD(get_int(c, "cite", cite, "year", true, 1900, 2100, &present, &year));
    a->year = (int)year;
    BASE_GUARD(get_text(c, "cite", cite, "section", true, 1, GL_MAX_SECTION, &a->section));
    (void)b;
    return BASE_OK_RESULT;
}

static base_result compile_rules(ld *c, const char *pw_where, json_t *rules, gl_pathway *pw)
{
    gl_bundle *b = c->b;
    size_t n = json_array_size(rules);
    pw->rules = arena_alloc(b, (n ? n : 1) * sizeof *pw->rules);
    if (!pw->rules)
        return nomem();
    const char *always_rule = NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(rules, i);
        gl_rule *out = &pw->rules[i];
        snprintf(c->where, sizeof c->where, "%s rules[%zu]", pw_where, i);
        if (!json_is_object(r))
            return bad(c, "", "a rule must be an object");
        static const char *const keys[] = {"id",    "when",  "outcome", "urgency", "tests",
                                           "steps", "needs", "explain", "cite",    NULL};
        json_t *idv = json_object_get(r, "id");
        if (json_is_string(idv) && id_ok(json_string_value(idv)))
            snprintf(c->where, sizeof c->where, "%s rules[%zu] (%s)", pw_where, i, json_string_value(idv));
        BASE_GUARD(only_keys(c, "", r, keys));
        BASE_GUARD(get_token(c, "", r, "id", true, id_ok, "an id ([a-z0-9][a-z0-9_-]{0,63})", &out->id));
        if (strcmp(out->id, "default") == 0)
            return bad(c, "id", "\"default\" names the pathway's default: choose another id");
        for (size_t j = 0; j < i; j++)
            if (strcmp(pw->rules[j].id, out->id) == 0)
                return bad(c, "id", "duplicate rule id \"%s\" (also rules[%zu])", out->id, j);
        if (always_rule)
            return bad(c, "", "unreachable: rule \"%s\" before it is always true", always_rule);
        json_t *when = json_object_get(r, "when");
        if (!when)
            return bad(c, "", "missing \"when\"");
        crit_ctx cc = {.pw = pw};
        int konst;
        BASE_GUARD(compile_crit(c, &cc, "when", when, 1, &out->when, &konst));
        if (konst == 0)
            return bad(c, "when", "can never be true, so the rule can never fire");
        if (konst == 1)
            always_rule = out->id;
        BASE_GUARD(compile_action(c, pw, r, &out->act));
    }
    pw->nrules = (uint32_t)n;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Pathways. */

static bool specialty_ok(const char *s)
{
    return id_ok(s);
}

static base_result compile_pathway(ld *c, size_t index, json_t *v, gl_pathway *pw)
{
    gl_bundle *b = c->b;
    char pw_where[WHERE_MAX];
    snprintf(c->where, sizeof c->where, "pathways[%zu]", index);
    if (!json_is_object(v))
        return bad(c, "", "a pathway must be an object");
    json_t *idv = json_object_get(v, "id");
    if (json_is_string(idv) && id_ok(json_string_value(idv)))
        snprintf(c->where, sizeof c->where, "pathways[%zu] (%s)", index, json_string_value(idv));
    memcpy(pw_where, c->where, sizeof pw_where);
    static const char *const keys[] = {"id", "title", "applies", "data", "rules", "default", NULL};
    BASE_GUARD(only_keys(c, "", v, keys));
    BASE_GUARD(get_token(c, "", v, "id", true, id_ok, "an id ([a-z0-9][a-z0-9_-]{0,63})", &pw->id));
    for (size_t j = 0; j < index; j++)
        if (strcmp(b->pathways[j].id, pw->id) == 0)
            return bad(c, "id", "duplicate pathway id \"%s\" (also pathways[%zu])", pw->id, j);
    BASE_GUARD(get_text(c, "", v, "title", true, 1, GL_MAX_TEXT, &pw->title));

    json_t *applies;
    BASE_GUARD(get_object(c, "", v, "applies", true, &applies));
    static const char *const akeys[] = {"specialties", "codes", "age", NULL};
    BASE_GUARD(only_keys(c, "applies", applies, akeys));
    BASE_GUARD(get_token_list(c, "applies", applies, "specialties", true, 1, GL_MAX_LIST, specialty_ok,
                              "a specialty ([a-z0-9][a-z0-9_-]{0,63})", &pw->specialties, &pw->nspecialties));
    BASE_GUARD(
        compile_code_refs(c, "applies", applies, "codes", GL_MAX_APPLY_CODES, &pw->codes, &pw->ncodes));
    json_t *age;
    BASE_GUARD(get_object(c, "applies", applies, "age", false, &age));
    pw->age_min = pw->age_max = -1;
    if (age) {
        static const char *const agekeys[] = {"min", "max", NULL};
        BASE_GUARD(only_keys(c, "applies.age", age, agekeys));
        bool has_min, has_max;
        long mn = -1, mx = -1;
        BASE_GUARD(get_int(c, "applies.age", age, "min", false, 0, GL_INPUT_MAX_AGE, &has_min, &mn));
        BASE_GUARD(get_int(c, "applies.age", age, "max", false, 0, GL_INPUT_MAX_AGE, &has_max, &mx));
        if (!has_min && !has_max)
            return bad(c, "applies.age", "needs \"min\", \"max\" or both");
        if (has_min && has_max && mn > mx)
            return bad(c, "applies.age", "min is above max");
        pw->age_min = has_min ? (int)mn : -1;
        pw->age_max = has_max ? (int)mx : -1;
    }

    json_t *data;
    BASE_GUARD(get_object(c, "", v, "data", true, &data));
    BASE_GUARD(compile_data(c, data, pw));

    json_t *rules;
    BASE_GUARD(get_array(c, "", v, "rules", true, 0, GL_MAX_RULES, &rules));
    BASE_GUARD(compile_rules(c, pw_where, rules, pw));

    json_t *dflt;
    memcpy(c->where, pw_where, sizeof pw_where);
    BASE_GUARD(get_object(c, "", v, "default", true, &dflt));
    /* "<pathway> default", cut so the suffix always fits (a where is a message prefix, never data). */
    size_t wl = strnlen(pw_where, sizeof c->where - sizeof " default");
    memcpy(c->where, pw_where, wl);
    memcpy(c->where + wl, " default", sizeof " default");
    static const char *const dkeys[] = {"outcome", "urgency", "tests", "steps",
                                        "needs",   "explain", "cite",  NULL};
    BASE_GUARD(only_keys(c, "", dflt, dkeys));
    BASE_GUARD(compile_action(c, pw, dflt, &pw->dflt));
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * The bundle. */

static base_result compile_bundle(ld *c, json_t *root)
{
    gl_bundle *b = c->b;
    snprintf(c->where, sizeof c->where, "bundle");
    if (!json_is_object(root))
        return bad(c, "", "the document must be a JSON object");
    static const char *const keys[] = {"format",    "bundle_id", "version",  "title",
                                       "published", "units",     "pathways", NULL};
    BASE_GUARD(only_keys(c, "", root, keys));
    bool present;
    long format;
    json_t *fv = json_object_get(root, "format");
    if (!fv)
        return bad(c, "", "missing \"format\"");
    if (!json_is_number(fv) || json_number_value(fv) != 1)
        return bad(c, "format", "must be 1 (this engine reads format 1 only)");
    BASE_GUARD(get_int(c, "", root, "format", true, 1, 1, &present, &format));
    BASE_GUARD(get_token(c, "", root, "bundle_id", true, bundle_id_ok,
                         "a bundle id ([a-z0-9][a-z0-9-]{1,62})", &b->id));
    BASE_GUARD(get_token(c, "", root, "version", true, semver_ok,
                         "a version MAJOR.MINOR.PATCH (digits, no leading zeros, each <= 9999)",
                         &b->version));
    BASE_GUARD(get_text(c, "", root, "title", true, 1, GL_MAX_TEXT, &b->title));
    BASE_GUARD(get_text(c, "", root, "published", true, 10, 10, &b->published));
    int32_t days;
    if (!gl_parse_date(b->published, &days))
        return bad(c, "published", "not a date YYYY-MM-DD");
    json_t *units;
    BASE_GUARD(get_object(c, "", root, "units", true, &units));
    BASE_GUARD(compile_units(c, units));
    json_t *pathways;
    BASE_GUARD(get_array(c, "", root, "pathways", true, 1, GL_MAX_PATHWAYS, &pathways));
    size_t n = json_array_size(pathways);
    b->pathways = arena_alloc(b, n * sizeof *b->pathways);
    if (!b->pathways)
        return nomem();
    for (size_t i = 0; i < n; i++) {
        BASE_GUARD(compile_pathway(c, i, json_array_get(pathways, i), &b->pathways[i]));
        b->npathways = (uint32_t)(i + 1);
    }
    return BASE_OK_RESULT;
}

base_result gl_bundle_load(const char *json, size_t len, gl_bundle **ret)
{
    if (!json || !ret)
        return base_fail(BASE_ERR_INVALID, "bundle: missing argument");
    if (len > GL_BUNDLE_MAX_BYTES)
        return base_fail(BASE_ERR_LIMIT, "bundle: over the limit of %d bytes", GL_BUNDLE_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return base_fail(BASE_ERR_INVALID, "bundle: not valid JSON (line %d, column %d): %.120s", jerr.line,
                         jerr.column, jerr.text);
    base_result r = BASE_OK_RESULT;
    gl_buf canon = {.max = 8 * len + 64};
    gl_bundle *b = calloc(1, sizeof *b);
    if (!b) {
        r = nomem();
        goto out;
    }
    ld c = {.b = b};
    BASE_GUARD_GOTO(r, compile_bundle(&c, root), out);
    gl_canon_dump(root, &canon);
    if (canon.failed || !canon.p) {
        r = nomem();
        goto out;
    }
    BASE_GUARD_GOTO(r, gl_sha256_hex(canon.p, canon.len, b->hash), out);
    *ret = b;
    b = NULL;
out:
    gl_buf_free(&canon);
    gl_bundle_free(b);
    json_decref(root);
    return r;
}

base_result gl_bundle_load_file(const char *path, gl_bundle **ret)
{
    if (!path || !ret)
        return base_fail(BASE_ERR_INVALID, "bundle: missing argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return base_fail(BASE_ERR_IO, "bundle: cannot open the file (errno %d)", errno);
    size_t cap = GL_BUNDLE_MAX_BYTES + 1;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return nomem();
    }
    size_t len = 0;
    while (len < cap) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return base_fail(BASE_ERR_IO, "bundle: cannot read the file (errno %d)", e);
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    base_result r;
    if (len > GL_BUNDLE_MAX_BYTES)
        r = base_fail(BASE_ERR_LIMIT, "bundle: the file is over the limit of %d bytes", GL_BUNDLE_MAX_BYTES);
    else
        r = gl_bundle_load(buf, len, ret);
    free(buf);
    return r;
}

const char *gl_bundle_id(const gl_bundle *b)
{
    return b->id;
}

const char *gl_bundle_version(const gl_bundle *b)
{
    return b->version;
}

const char *gl_bundle_hash(const gl_bundle *b)
{
    return b->hash;
}

const char *gl_bundle_title(const gl_bundle *b)
{
    return b->title;
}

const char *gl_bundle_published(const gl_bundle *b)
{
    return b->published;
}

size_t gl_bundle_pathway_count(const gl_bundle *b)
{
    return b->npathways;
}

const char *gl_bundle_pathway_id(const gl_bundle *b, size_t i)
{
    return i < b->npathways ? b->pathways[i].id : NULL;
}

const char *gl_bundle_pathway_title(const gl_bundle *b, size_t i)
{
    return i < b->npathways ? b->pathways[i].title : NULL;
}
