/* The evaluator (engine.h, BUNDLE-FORMAT.md "Criteria", "Rules and the decision", "The recommendation").
 *
 * One evaluation: parse and validate the input into flat C arrays (strings point into the parsed tree, which
 * lives until the end of the call), hash its canonical JSON, choose the pathway, build one view per data
 * element (usable points sorted by date, stale and unusable marks, flag and finding values), evaluate every
 * rule's criteria tree in three-valued logic, and write the recommendation's canonical JSON directly (its
 * keys are written in sorted order by hand; tests re-canonicalise it to prove that). Nothing is shared
 * between calls and the bundle is only read, so concurrent calls need no lock. */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAYS_PER_YEAR 365.25
#define ICD_BUF       GL_ICD_KEY

/* ---------------------------------------------------------------------------------------------------------
 * The parsed input. */

typedef struct in_obs {
    const char *code;
    const char *unit;
    const char *date;
    double value;
    int32_t day;
} in_obs;

typedef struct in_med {
    const char *cls; /* NULL when absent */
    const char *rx;  /* NULL when absent */
    const char *start_text;
    int32_t start;
    int32_t end;
    bool has_start;
    bool has_end;
    uint8_t status;
} in_med;

typedef struct in_prob {
    char key[ICD_BUF];
    const char *code;
    bool active;
} in_prob;

typedef struct ev_input {
    json_t *root;
    const char *as_of_text;
    int32_t as_of;
    const char *specialty;
    char reason[GL_INPUT_MAX_REASON_CODES][ICD_BUF];
    uint32_t nreason;
    int age;
    gl_sex sex;
    int pregnant; /* -1 not stated */
    bool has_problems;
    bool has_meds;
    uint32_t nprobs, nobs, nmeds;
    json_t *flags;    /* NULL when absent */
    json_t *findings; /* NULL when absent */
    in_prob probs[GL_INPUT_MAX_PROBLEMS];
    in_obs obs[GL_INPUT_MAX_OBSERVATIONS];
    in_med meds[GL_INPUT_MAX_MEDICATIONS];
} ev_input;

static base_result in_bad(const char *field, const char *rule)
{
    return base_fail(BASE_ERR_INVALID, "input: %s: %s", field, rule);
}

#define IN_FIELD 96

static bool only_keys_in(json_t *obj, const char *const *allowed)
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
            return false;
    }
    return true;
}

static bool text_ok(json_t *v, size_t max)
{
    if (!json_is_string(v))
        return false;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* A date member: required or optional, not after as_of (when as_of is known). */
static base_result in_date(json_t *obj, const char *key, const char *field, bool required, int32_t as_of,
                           const char **ret_text, int32_t *ret_day, bool *ret_present)
{
    char f[IN_FIELD];
    snprintf(f, sizeof f, "%s%s%s", field, field[0] ? "." : "", key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return in_bad(f, "missing");
        if (ret_present)
            *ret_present = false;
        return BASE_OK_RESULT;
    }
    if (!json_is_string(v) || json_string_length(v) != 10 || !gl_parse_date(json_string_value(v), ret_day))
        return in_bad(f, "not a date YYYY-MM-DD (1900..2199)");
    if (*ret_day > as_of)
        return in_bad(f, "after as_of");
    *ret_text = json_string_value(v);
    if (ret_present)
        *ret_present = true;
    return BASE_OK_RESULT;
}

static base_result parse_input(ev_input *in)
{
    json_t *root = in->root;
    if (!json_is_object(root))
        return in_bad("(document)", "must be a JSON object");
    static const char *const keys[] = {"as_of",        "specialty",   "reason_codes", "patient",  "problems",
                                       "observations", "medications", "flags",        "findings", NULL};
    if (!only_keys_in(root, keys))
        return in_bad("(document)", "has an unknown key");
    char f[IN_FIELD];

    bool present;
    BASE_GUARD(in_date(root, "as_of", "", true, INT32_MAX, &in->as_of_text, &in->as_of, &present));

    json_t *sp = json_object_get(root, "specialty");
    if (!sp)
        return in_bad("specialty", "missing");
    if (!text_ok(sp, GL_MAX_ID) || !gl_id_ok(json_string_value(sp)))
        return in_bad("specialty", "not a specialty ([a-z0-9][a-z0-9_-]{0,63})");
    in->specialty = json_string_value(sp);

    json_t *rc = json_object_get(root, "reason_codes");
    if (rc) {
        if (!json_is_array(rc))
            return in_bad("reason_codes", "not an array");
        if (json_array_size(rc) > GL_INPUT_MAX_REASON_CODES)
            return base_fail(BASE_ERR_INVALID, "input: reason_codes: more than %d entries",
                             GL_INPUT_MAX_REASON_CODES);
        for (size_t i = 0; i < json_array_size(rc); i++) {
            json_t *c = json_array_get(rc, i);
            if (!json_is_string(c) || json_string_length(c) > 16 ||
                !gl_icd_key(json_string_value(c), in->reason[in->nreason])) {
                snprintf(f, sizeof f, "reason_codes[%zu]", i);
                return in_bad(f, "not an ICD-10-CM code (A00 or A00.xxxx)");
            }
            in->nreason++;
        }
    }

    json_t *pt = json_object_get(root, "patient");
    if (!pt)
        return in_bad("patient", "missing");
    if (!json_is_object(pt))
        return in_bad("patient", "not an object");
    static const char *const pkeys[] = {"age", "sex", "pregnant", NULL};
    if (!only_keys_in(pt, pkeys))
        return in_bad("patient", "has an unknown key");
    json_t *age = json_object_get(pt, "age");
    if (!age)
        return in_bad("patient.age", "missing");
    if (!json_is_integer(age) || json_integer_value(age) < 0 || json_integer_value(age) > GL_INPUT_MAX_AGE)
        return base_fail(BASE_ERR_INVALID, "input: patient.age: not an integer 0..%d", GL_INPUT_MAX_AGE);
    in->age = (int)json_integer_value(age);
    json_t *sex = json_object_get(pt, "sex");
    if (!sex)
        return in_bad("patient.sex", "missing");
    const char *sx = json_is_string(sex) ? json_string_value(sex) : "";
    if (strcmp(sx, "female") == 0)
        in->sex = GL_SEX_FEMALE;
    else if (strcmp(sx, "male") == 0)
        in->sex = GL_SEX_MALE;
    else if (strcmp(sx, "other") == 0)
        in->sex = GL_SEX_OTHER;
    else if (strcmp(sx, "unknown") == 0)
        in->sex = GL_SEX_UNKNOWN;
    else
        return in_bad("patient.sex", "not one of female, male, other, unknown");
    json_t *preg = json_object_get(pt, "pregnant");
    in->pregnant = -1;
    if (preg) {
        if (!json_is_boolean(preg))
            return in_bad("patient.pregnant", "not true or false");
        in->pregnant = json_is_true(preg);
    }

    json_t *probs = json_object_get(root, "problems");
    if (probs) {
        if (!json_is_array(probs))
            return in_bad("problems", "not an array");
        if (json_array_size(probs) > GL_INPUT_MAX_PROBLEMS)
            return base_fail(BASE_ERR_INVALID, "input: problems: more than %d entries",
                             GL_INPUT_MAX_PROBLEMS);
        in->has_problems = true;
        static const char *const prkeys[] = {"code", "status", NULL};
        for (size_t i = 0; i < json_array_size(probs); i++) {
            json_t *p = json_array_get(probs, i);
            in_prob *o = &in->probs[in->nprobs];
            snprintf(f, sizeof f, "problems[%zu]", i);
            if (!json_is_object(p))
                return in_bad(f, "not an object");
            if (!only_keys_in(p, prkeys))
                return in_bad(f, "has an unknown key");
            json_t *code = json_object_get(p, "code");
            snprintf(f, sizeof f, "problems[%zu].code", i);
            if (!code)
                return in_bad(f, "missing");
            if (!json_is_string(code) || json_string_length(code) > 16 ||
                !gl_icd_key(json_string_value(code), o->key))
                return in_bad(f, "not an ICD-10-CM code (A00 or A00.xxxx)");
            o->code = json_string_value(code);
            json_t *st = json_object_get(p, "status");
            snprintf(f, sizeof f, "problems[%zu].status", i);
            if (!st)
                return in_bad(f, "missing");
            const char *s = json_is_string(st) ? json_string_value(st) : "";
            if (strcmp(s, "active") == 0 || strcmp(s, "recurrence") == 0 || strcmp(s, "relapse") == 0)
                o->active = true;
            else if (strcmp(s, "inactive") == 0 || strcmp(s, "remission") == 0 || strcmp(s, "resolved") == 0)
                o->active = false;
            else
                return in_bad(f, "not one of active, recurrence, relapse, inactive, remission, resolved");
            in->nprobs++;
        }
    }

    json_t *obs = json_object_get(root, "observations");
    if (obs) {
        if (!json_is_array(obs))
            return in_bad("observations", "not an array");
        if (json_array_size(obs) > GL_INPUT_MAX_OBSERVATIONS)
            return base_fail(BASE_ERR_INVALID, "input: observations: more than %d entries",
                             GL_INPUT_MAX_OBSERVATIONS);
        static const char *const okeys[] = {"code", "value", "unit", "date", NULL};
        for (size_t i = 0; i < json_array_size(obs); i++) {
            json_t *o = json_array_get(obs, i);
            in_obs *d = &in->obs[in->nobs];
            snprintf(f, sizeof f, "observations[%zu]", i);
            if (!json_is_object(o))
                return in_bad(f, "not an object");
            if (!only_keys_in(o, okeys))
                return in_bad(f, "has an unknown key");
            json_t *code = json_object_get(o, "code");
            snprintf(f, sizeof f, "observations[%zu].code", i);
            if (!code)
                return in_bad(f, "missing");
            if (!json_is_string(code) || json_string_length(code) > 16 ||
                !gl_loinc_ok(json_string_value(code)))
                return in_bad(f, "not a LOINC code (digits, '-', check digit)");
            d->code = json_string_value(code);
            json_t *val = json_object_get(o, "value");
            snprintf(f, sizeof f, "observations[%zu].value", i);
            if (!val)
                return in_bad(f, "missing");
            if (!json_is_number(val) || !isfinite(json_number_value(val)) ||
                fabs(json_number_value(val)) > GL_INPUT_MAX_ABS_VALUE)
                return in_bad(f, "not a number of magnitude at most 1e12");
            d->value = json_number_value(val);
            json_t *unit = json_object_get(o, "unit");
            snprintf(f, sizeof f, "observations[%zu].unit", i);
            if (!unit)
                return in_bad(f, "missing");
            if (!json_is_string(unit) || json_string_length(unit) > GL_INPUT_MAX_UNIT ||
                !gl_unit_ok(json_string_value(unit)))
                return in_bad(f, "not a unit string (1..64 printable ASCII, no space)");
            d->unit = json_string_value(unit);
            snprintf(f, sizeof f, "observations[%zu]", i);
            BASE_GUARD(in_date(o, "date", f, true, in->as_of, &d->date, &d->day, NULL));
            in->nobs++;
        }
    }

    json_t *meds = json_object_get(root, "medications");
    if (meds) {
        if (!json_is_array(meds))
            return in_bad("medications", "not an array");
        if (json_array_size(meds) > GL_INPUT_MAX_MEDICATIONS)
            return base_fail(BASE_ERR_INVALID, "input: medications: more than %d entries",
                             GL_INPUT_MAX_MEDICATIONS);
        in->has_meds = true;
        static const char *const mkeys[] = {"name", "class", "rxnorm", "start", "end", "status", NULL};
        static const char *const statuses[] = {"active",  "completed", "stopped",
                                               "on-hold", "intended",  "not-taken"};
        for (size_t i = 0; i < json_array_size(meds); i++) {
            json_t *m = json_array_get(meds, i);
            in_med *d = &in->meds[in->nmeds];
            memset(d, 0, sizeof *d);
            snprintf(f, sizeof f, "medications[%zu]", i);
            if (!json_is_object(m))
                return in_bad(f, "not an object");
            if (!only_keys_in(m, mkeys))
                return in_bad(f, "has an unknown key");
            json_t *name = json_object_get(m, "name");
            snprintf(f, sizeof f, "medications[%zu].name", i);
            if (name && !text_ok(name, GL_INPUT_MAX_TEXT))
                return in_bad(f, "not a text of 1..200 bytes without control characters");
            json_t *cls = json_object_get(m, "class");
            snprintf(f, sizeof f, "medications[%zu].class", i);
            if (cls &&
                (!json_is_string(cls) || json_string_length(cls) > 32 || !gl_name_ok(json_string_value(cls))))
                return in_bad(f, "not a class ([a-z][a-z0-9_]{0,31})");
            d->cls = cls ? json_string_value(cls) : NULL;
            json_t *rx = json_object_get(m, "rxnorm");
            snprintf(f, sizeof f, "medications[%zu].rxnorm", i);
            if (rx) {
                const char *s = json_is_string(rx) ? json_string_value(rx) : "";
                size_t n = 0;
                while (s[n] >= '0' && s[n] <= '9')
                    n++;
                if (n < 1 || n > 10 || s[n] != '\0')
                    return in_bad(f, "not an RxNorm code (1..10 digits)");
                d->rx = s;
            }
            snprintf(f, sizeof f, "medications[%zu]", i);
            const char *end_text = NULL;
            BASE_GUARD(in_date(m, "start", f, false, in->as_of, &d->start_text, &d->start, &d->has_start));
            BASE_GUARD(in_date(m, "end", f, false, in->as_of, &end_text, &d->end, &d->has_end));
            if (d->has_start && d->has_end && d->end < d->start) {
                snprintf(f, sizeof f, "medications[%zu].end", i);
                return in_bad(f, "before start");
            }
            json_t *st = json_object_get(m, "status");
            snprintf(f, sizeof f, "medications[%zu].status", i);
            if (!st)
                return in_bad(f, "missing");
            const char *s = json_is_string(st) ? json_string_value(st) : "";
            uint8_t k = 0;
            while (k < GL_MED_STATUS_COUNT && strcmp(statuses[k], s) != 0)
                k++;
            if (k == GL_MED_STATUS_COUNT)
                return in_bad(f, "not one of active, completed, stopped, on-hold, intended, not-taken");
            d->status = k;
            in->nmeds++;
        }
    }

    json_t *flags = json_object_get(root, "flags");
    if (flags) {
        if (!json_is_object(flags))
            return in_bad("flags", "not an object");
        if (json_object_size(flags) > GL_INPUT_MAX_FLAGS)
            return base_fail(BASE_ERR_INVALID, "input: flags: more than %d entries", GL_INPUT_MAX_FLAGS);
        const char *k;
        json_t *v;
        size_t i = 0;
        json_object_foreach(flags, k, v)
        {
            snprintf(f, sizeof f, "flags (entry %zu)", i++);
            if (!gl_flag_name_ok(k))
                return in_bad(f, "the name is not [a-z][a-z0-9_]{0,63}");
            if (!json_is_boolean(v))
                return in_bad(f, "not true or false");
        }
        in->flags = flags;
        json_t *fp = json_object_get(flags, "pregnant");
        if (fp && in->pregnant >= 0 && json_is_true(fp) != (in->pregnant == 1))
            return in_bad("flags.pregnant", "contradicts patient.pregnant");
    }

    json_t *findings = json_object_get(root, "findings");
    if (findings) {
        if (!json_is_object(findings))
            return in_bad("findings", "not an object");
        if (json_object_size(findings) > GL_INPUT_MAX_FINDINGS)
            return base_fail(BASE_ERR_INVALID, "input: findings: more than %d entries",
                             GL_INPUT_MAX_FINDINGS);
        const char *k;
        json_t *v;
        size_t i = 0;
        json_object_foreach(findings, k, v)
        {
            snprintf(f, sizeof f, "findings (entry %zu)", i++);
            if (!gl_flag_name_ok(k))
                return in_bad(f, "the name is not [a-z][a-z0-9_]{0,63}");
            if (json_is_number(v)) {
                if (!isfinite(json_number_value(v)) || fabs(json_number_value(v)) > GL_INPUT_MAX_ABS_VALUE)
                    return in_bad(f, "a number of magnitude above 1e12");
            } else if (!text_ok(v, GL_INPUT_MAX_TEXT)) {
                return in_bad(f, "not a number nor a text of 1..200 bytes without control characters");
            }
        }
        in->findings = findings;
    }
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Views of the chosen pathway's data. */

typedef struct ev_point {
    double v; /* canonical unit */
    int32_t day;
    uint32_t obs;
    uint32_t data;
} ev_point;

typedef struct ev_unusable {
    uint32_t data;
    const char *unit; /* NULL: a finding's value */
} ev_unusable;

typedef struct ev_view {
    ev_point *pts; /* usable, in the window, oldest first */
    uint32_t n;
    bool had_stale;
    gl_tri flag;
    bool finding_known;
    double fnum;
    int ftext; /* index into the element's values */
    const char *ftext_s;
} ev_view;

typedef enum ev_vkind { V_POINT, V_NUM, V_TEXT, V_BOOL, V_NULL, V_DAYS } ev_vkind;

typedef struct ev_val {
    uint32_t data; /* UINT32_MAX: age; UINT32_MAX - 1: sex */
    ev_vkind kind;
    double num;
    const char *text; /* V_TEXT; V_POINT/V_DAYS: the date */
    bool b;
} ev_val;

#define DATA_AGE UINT32_MAX
#define DATA_SEX (UINT32_MAX - 1)

typedef struct ev_vals {
    ev_val *v;
    size_t n, cap;
    bool failed;
} ev_vals;

typedef struct ev {
    const gl_bundle *b;
    const gl_pathway *pw;
    const ev_input *in;
    ev_view views[GL_MAX_DATA];
    ev_point *pts;
    size_t npts;
    ev_unusable *unusable;
    size_t nunusable;
    ev_vals vals; /* the current rule's values */
} ev;

static void val_add(ev_vals *vs, ev_val v)
{
    for (size_t i = 0; i < vs->n; i++) {
        const ev_val *x = &vs->v[i];
        if (x->data == v.data && x->kind == v.kind && x->num == v.num && x->text == v.text && x->b == v.b)
            return;
    }
    if (vs->n == vs->cap) {
        size_t cap = vs->cap ? vs->cap * 2 : 16;
        ev_val *p = realloc(vs->v, cap * sizeof *p);
        if (!p) {
            vs->failed = true;
            return;
        }
        vs->v = p;
        vs->cap = cap;
    }
    vs->v[vs->n++] = v;
}

static void val_point(ev *e, const ev_point *p)
{
    val_add(&e->vals,
            (ev_val){.data = p->data, .kind = V_POINT, .num = p->v, .text = e->in->obs[p->obs].date});
}

static int point_cmp(const void *a, const void *b)
{
    const ev_point *x = a, *y = b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    if (x->day != y->day)
        return x->day < y->day ? -1 : 1;
    return (x->obs > y->obs) - (x->obs < y->obs);
}

static int unusable_cmp(const void *a, const void *b)
{
    const ev_unusable *x = a, *y = b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    if (!x->unit || !y->unit)
        return (x->unit != NULL) - (y->unit != NULL);
    return strcmp(x->unit, y->unit);
}

static bool add_unusable(ev *e, uint32_t data, const char *unit)
{
    for (size_t i = 0; i < e->nunusable; i++) {
        const ev_unusable *u = &e->unusable[i];
        if (u->data == data && ((!u->unit && !unit) || (u->unit && unit && strcmp(u->unit, unit) == 0)))
            return true;
    }
    e->unusable[e->nunusable++] = (ev_unusable){.data = data, .unit = unit};
    return true;
}

/* The range [lo, hi) of obs_index entries with this code. */
static void obs_index_range(const gl_pathway *pw, const char *code, uint32_t *lo_out, uint32_t *hi_out)
{
    uint32_t lo = 0, hi = pw->nobs_index;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (strcmp(pw->obs_index[mid].code, code) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint32_t end = lo;
    while (end < pw->nobs_index && strcmp(pw->obs_index[end].code, code) == 0)
        end++;
    *lo_out = lo;
    *hi_out = end;
}

static base_result build_views(ev *e)
{
    const gl_pathway *pw = e->pw;
    const ev_input *in = e->in;
    size_t npairs = 0;
    for (uint32_t i = 0; i < in->nobs; i++) {
        uint32_t lo, hi;
        obs_index_range(pw, in->obs[i].code, &lo, &hi);
        npairs += hi - lo;
    }
    /* Every pair is a point or one entry of unusable at most; findings add at most one each. */
    e->pts = malloc((npairs ? npairs : 1) * sizeof *e->pts);
    e->unusable = malloc((npairs + pw->ndata + 1) * sizeof *e->unusable);
    if (!e->pts || !e->unusable)
        return base_fail(BASE_ERR_NOMEM, "evaluate: out of memory");
    for (uint32_t i = 0; i < in->nobs; i++) {
        const in_obs *o = &in->obs[i];
        uint32_t lo, hi;
        obs_index_range(pw, o->code, &lo, &hi);
        for (uint32_t k = lo; k < hi; k++) {
            uint32_t di = pw->obs_index[k].data;
            const gl_data *d = &pw->data[di];
            if (in->as_of - o->day > d->window_days) {
                e->views[di].had_stale = true;
                continue;
            }
            const gl_quantity *q = &e->b->quantities[d->quantity];
            const gl_unit *u = NULL;
            for (uint32_t j = 0; j < q->naccept; j++) {
                if (strcmp(q->accept[j].unit, o->unit) == 0) {
                    u = &q->accept[j];
                    break;
                }
            }
            if (!u) {
                add_unusable(e, di, o->unit);
                continue;
            }
            e->pts[e->npts++] = (ev_point){.v = o->value * u->factor, .day = o->day, .obs = i, .data = di};
        }
    }
    qsort(e->pts, e->npts, sizeof *e->pts, point_cmp);
    for (size_t i = 0; i < e->npts;) {
        size_t j = i;
        while (j < e->npts && e->pts[j].data == e->pts[i].data)
            j++;
        e->views[e->pts[i].data].pts = &e->pts[i];
        e->views[e->pts[i].data].n = (uint32_t)(j - i);
        i = j;
    }
    for (uint32_t di = 0; di < pw->ndata; di++) {
        const gl_data *d = &pw->data[di];
        ev_view *v = &e->views[di];
        if (d->kind == GL_D_FLAG) {
            json_t *f = in->flags ? json_object_get(in->flags, d->name) : NULL;
            if (f)
                v->flag = json_is_true(f) ? GL_TRUE : GL_FALSE;
            else if (strcmp(d->name, "pregnant") == 0 && in->pregnant >= 0)
                v->flag = in->pregnant ? GL_TRUE : GL_FALSE;
            else
                v->flag = GL_UNKNOWN;
        } else if (d->kind == GL_D_FINDING) {
            json_t *f = in->findings ? json_object_get(in->findings, d->name) : NULL;
            if (!f)
                continue;
            if (d->numeric && json_is_number(f)) {
                v->finding_known = true;
                v->fnum = json_number_value(f);
            } else if (!d->numeric && json_is_string(f)) {
                const char *s = json_string_value(f);
                for (uint32_t j = 0; j < d->nvalues; j++) {
                    if (strcmp(d->values[j], s) == 0) {
                        v->finding_known = true;
                        v->ftext = (int)j;
                        v->ftext_s = d->values[j];
                    }
                }
            }
            if (!v->finding_known)
                add_unusable(e, di, NULL);
        }
    }
    qsort(e->unusable, e->nunusable, sizeof *e->unusable, unusable_cmp);
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Criteria. */

static bool cmp(gl_op op, double a, double b)
{
    switch (op) {
    case GL_OP_LT:
        return a < b;
    case GL_OP_LE:
        return a <= b;
    case GL_OP_GT:
        return a > b;
    case GL_OP_GE:
        return a >= b;
    case GL_OP_EQ:
        return a == b;
    case GL_OP_NE:
        return a != b;
    default:
        return false;
    }
}

static gl_tri tri(bool b)
{
    return b ? GL_TRUE : GL_FALSE;
}

static uint32_t category(const gl_crit *c, double v)
{
    uint32_t k = 0;
    while (k < c->nbounds && v < c->bounds[k])
        k++;
    return k;
}

static gl_tri eval_crit(ev *e, const gl_crit *c)
{
    const ev_input *in = e->in;
    switch (c->kind) {
    case GL_C_ALL: {
        gl_tri r = GL_TRUE;
        for (uint32_t i = 0; i < c->nkids; i++) {
            gl_tri k = eval_crit(e, &c->kids[i]);
            if (k == GL_FALSE)
                r = GL_FALSE;
            else if (k == GL_UNKNOWN && r == GL_TRUE)
                r = GL_UNKNOWN;
        }
        return r;
    }
    case GL_C_ANY: {
        gl_tri r = GL_FALSE;
        for (uint32_t i = 0; i < c->nkids; i++) {
            gl_tri k = eval_crit(e, &c->kids[i]);
            if (k == GL_TRUE)
                r = GL_TRUE;
            else if (k == GL_UNKNOWN && r == GL_FALSE)
                r = GL_UNKNOWN;
        }
        return r;
    }
    case GL_C_NOT: {
        gl_tri k = eval_crit(e, c->kids);
        return k == GL_UNKNOWN ? GL_UNKNOWN : k == GL_TRUE ? GL_FALSE : GL_TRUE;
    }
    case GL_C_LATEST: {
        const ev_view *v = &e->views[c->data];
        if (v->n == 0)
            return GL_UNKNOWN;
        val_point(e, &v->pts[v->n - 1]);
        return tri(cmp(c->op, v->pts[v->n - 1].v, c->value));
    }
    case GL_C_COUNT: {
        const ev_view *v = &e->views[c->data];
        if (v->n == 0)
            return GL_UNKNOWN;
        uint32_t k = 0;
        for (uint32_t i = 0; i < v->n; i++) {
            if (cmp(c->where_op, v->pts[i].v, c->where_value)) {
                k++;
                val_point(e, &v->pts[i]);
            }
        }
        return tri(cmp(c->op, (double)k, c->value));
    }
    case GL_C_DECLINE:
    case GL_C_CATEGORY_DROP: {
        const ev_view *v = &e->views[c->data];
        if (v->n < 2)
            return GL_UNKNOWN;
        const ev_point *first = &v->pts[0], *last = &v->pts[v->n - 1];
        if (last->day - first->day < c->min_span_days || last->day == first->day)
            return GL_UNKNOWN;
        val_point(e, first);
        val_point(e, last);
        if (c->kind == GL_C_CATEGORY_DROP)
            return tri(category(c, last->v) > category(c, first->v));
        if (first->v <= 0)
            return GL_UNKNOWN;
        /* (first - last) / first > percent / 100, without the division's rounding. */
        return tri((first->v - last->v) * 100.0 > c->percent * first->v);
    }
    case GL_C_SLOPE: {
        const ev_view *v = &e->views[c->data];
        if (v->n < c->min_points || v->n < 2)
            return GL_UNKNOWN;
        int32_t d0 = v->pts[0].day;
        if (v->pts[v->n - 1].day - d0 < c->min_span_days)
            return GL_UNKNOWN;
        double mx = 0, my = 0;
        for (uint32_t i = 0; i < v->n; i++) {
            mx += (v->pts[i].day - d0) / DAYS_PER_YEAR;
            my += v->pts[i].v;
        }
        mx /= v->n;
        my /= v->n;
        double sxx = 0, sxy = 0;
        for (uint32_t i = 0; i < v->n; i++) {
            double dx = (v->pts[i].day - d0) / DAYS_PER_YEAR - mx;
            sxx += dx * dx;
            sxy += dx * (v->pts[i].v - my);
        }
        if (sxx <= 0)
            return GL_UNKNOWN;
        for (uint32_t i = 0; i < v->n; i++)
            val_point(e, &v->pts[i]);
        return tri(cmp(c->op, sxy / sxx, c->value));
    }
    case GL_C_FLAG: {
        gl_tri t = e->views[c->data].flag;
        if (t != GL_UNKNOWN)
            val_add(&e->vals, (ev_val){.data = c->data, .kind = V_BOOL, .b = t == GL_TRUE});
        return t;
    }
    case GL_C_FINDING_CMP:
    case GL_C_FINDING_IN: {
        const ev_view *v = &e->views[c->data];
        if (!v->finding_known)
            return GL_UNKNOWN;
        if (c->kind == GL_C_FINDING_CMP) {
            val_add(&e->vals, (ev_val){.data = c->data, .kind = V_NUM, .num = v->fnum});
            return tri(cmp(c->op, v->fnum, c->value));
        }
        val_add(&e->vals, (ev_val){.data = c->data, .kind = V_TEXT, .text = v->ftext_s});
        return tri((c->mask >> v->ftext) & 1u);
    }
    case GL_C_MEDICATION: {
        if (!in->has_meds)
            return GL_UNKNOWN;
        const gl_data *d = &e->pw->data[c->data];
        bool unknown = false;
        for (uint32_t i = 0; i < in->nmeds; i++) {
            const in_med *m = &in->meds[i];
            if (!((c->mask >> m->status) & 1u))
                continue;
            bool match = false;
            for (uint32_t j = 0; j < d->nclasses && !match; j++)
                match = m->cls && strcmp(m->cls, d->classes[j]) == 0;
            for (uint32_t j = 0; j < d->ncodes && !match; j++)
                match = m->rx && strcmp(m->rx, d->codes[j]) == 0;
            if (!match)
                continue;
            if (!m->has_start) {
                if (c->min_days == 0) {
                    val_add(&e->vals, (ev_val){.data = c->data, .kind = V_NULL});
                    return GL_TRUE;
                }
                unknown = true;
                continue;
            }
            int32_t days = (m->has_end ? m->end : in->as_of) - m->start;
            if (days >= c->min_days) {
                val_add(&e->vals,
                        (ev_val){.data = c->data, .kind = V_DAYS, .num = days, .text = m->start_text});
                return GL_TRUE;
            }
        }
        return unknown ? GL_UNKNOWN : GL_FALSE;
    }
    case GL_C_PROBLEM: {
        if (!in->has_problems)
            return GL_UNKNOWN;
        const gl_data *d = &e->pw->data[c->data];
        for (uint32_t i = 0; i < in->nprobs; i++) {
            if (in->probs[i].active && gl_icd_in_any(d->ranges, d->nranges, in->probs[i].key)) {
                val_add(&e->vals, (ev_val){.data = c->data, .kind = V_TEXT, .text = in->probs[i].code});
                return GL_TRUE;
            }
        }
        return GL_FALSE;
    }
    case GL_C_AGE:
        val_add(&e->vals, (ev_val){.data = DATA_AGE, .kind = V_NUM, .num = in->age});
        return tri(cmp(c->op, in->age, c->value));
    case GL_C_SEX: {
        static const char *const names[] = {"female", "male", "other", "unknown"};
        if (in->sex == GL_SEX_UNKNOWN)
            return GL_UNKNOWN;
        val_add(&e->vals, (ev_val){.data = DATA_SEX, .kind = V_TEXT, .text = names[in->sex]});
        return tri((uint32_t)in->sex == c->mask);
    }
    case GL_C_MISSING: {
        const gl_data *d = &e->pw->data[c->data];
        const ev_view *v = &e->views[c->data];
        bool missing;
        switch (d->kind) {
        case GL_D_OBS:
            missing = v->n == 0;
            break;
        case GL_D_FLAG:
            missing = v->flag == GL_UNKNOWN;
            break;
        case GL_D_FINDING:
            missing = !v->finding_known;
            break;
        case GL_D_MED:
            missing = !in->has_meds;
            break;
        case GL_D_PROBLEM:
            missing = !in->has_problems;
            break;
        default:
            missing = true;
            break;
        }
        if (missing)
            val_add(&e->vals, (ev_val){.data = c->data, .kind = V_NULL});
        else if (d->kind == GL_D_OBS) /* present: the value that made it so, for {"not": {"missing": ...}} */
            val_point(e, &v->pts[v->n - 1]);
        else if (d->kind == GL_D_FLAG)
            val_add(&e->vals, (ev_val){.data = c->data, .kind = V_BOOL, .b = v->flag == GL_TRUE});
        else if (d->kind == GL_D_FINDING && d->numeric)
            val_add(&e->vals, (ev_val){.data = c->data, .kind = V_NUM, .num = v->fnum});
        else if (d->kind == GL_D_FINDING)
            val_add(&e->vals, (ev_val){.data = c->data, .kind = V_TEXT, .text = v->ftext_s});
        return tri(missing);
    }
    default:
        return GL_UNKNOWN;
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Pathway selection. */

static bool pathway_applies(const gl_pathway *pw, const ev_input *in)
{
    bool spec = false;
    for (uint32_t i = 0; i < pw->nspecialties && !spec; i++)
        spec = strcmp(pw->specialties[i], in->specialty) == 0;
    if (!spec)
        return false;
    if (pw->age_min >= 0 && in->age < pw->age_min)
        return false;
    if (pw->age_max >= 0 && in->age > pw->age_max)
        return false;
    for (uint32_t i = 0; i < in->nreason; i++)
        if (gl_icd_in_any(pw->codes, pw->ncodes, in->reason[i]))
            return true;
    for (uint32_t i = 0; i < in->nprobs; i++)
        if (in->probs[i].active && gl_icd_in_any(pw->codes, pw->ncodes, in->probs[i].key))
            return true;
    return false;
}

/* ---------------------------------------------------------------------------------------------------------
 * The recommendation. */

typedef struct fired_rule {
    uint32_t rule;
    ev_val *vals;
    size_t nvals;
} fired_rule;

static const char *data_name(const ev *e, uint32_t data)
{
    if (data == DATA_AGE)
        return "age";
    if (data == DATA_SEX)
        return "sex";
    return e->pw->data[data].id;
}

static void put_kv_str(gl_buf *o, const char *key, const char *v, bool comma)
{
    if (comma)
        gl_buf_put(o, ",", 1);
    gl_buf_json_string(o, key);
    gl_buf_put(o, ":", 1);
    gl_buf_json_string(o, v);
}

static void put_str_list(gl_buf *o, const char *key, const char *const *items, uint32_t n)
{
    gl_buf_put(o, ",", 1);
    gl_buf_json_string(o, key);
    gl_buf_put(o, ":[", 2);
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            gl_buf_put(o, ",", 1);
        gl_buf_json_string(o, items[i]);
    }
    gl_buf_put(o, "]", 1);
}

static void put_citation(gl_buf *o, const char *rule, const gl_action *a, bool comma)
{
    char year[16];
    snprintf(year, sizeof year, "%d", a->year);
    if (comma)
        gl_buf_put(o, ",", 1);
    gl_buf_put(o, "{", 1);
    put_kv_str(o, "guideline", a->guideline, false);
    put_kv_str(o, "rule", rule, true);
    put_kv_str(o, "section", a->section, true);
    gl_buf_puts(o, ",\"year\":");
    gl_buf_puts(o, year);
    gl_buf_put(o, "}", 1);
}

/* Keys of a value, sorted: data, date, unit, value. */
static void put_value(gl_buf *o, const ev *e, const ev_val *v)
{
    gl_buf_put(o, "{", 1);
    put_kv_str(o, "data", data_name(e, v->data), false);
    if ((v->kind == V_POINT || v->kind == V_DAYS) && v->text)
        put_kv_str(o, "date", v->text, true);
    if (v->kind == V_POINT)
        put_kv_str(o, "unit", e->b->quantities[e->pw->data[v->data].quantity].canonical, true);
    else if (v->kind == V_DAYS)
        put_kv_str(o, "unit", "d", true);
    gl_buf_puts(o, ",\"value\":");
    switch (v->kind) {
    case V_POINT:
    case V_NUM:
    case V_DAYS:
        gl_buf_json_number(o, v->num);
        break;
    case V_TEXT:
        gl_buf_json_string(o, v->text);
        break;
    case V_BOOL:
        gl_buf_puts(o, v->b ? "true" : "false");
        break;
    case V_NULL:
    default:
        gl_buf_puts(o, "null");
        break;
    }
    gl_buf_put(o, "}", 1);
}

static void write_recommendation(gl_buf *o, const ev *e, const char *input_hash, gl_outcome outcome,
                                 const char *rule_id, const gl_action *act, const fired_rule *fired,
                                 size_t nfired, const uint32_t *others, size_t nothers)
{
    const gl_bundle *b = e->b;
    const gl_pathway *pw = e->pw;
    gl_buf_puts(o, "{\"bundle\":{");
    put_kv_str(o, "hash", b->hash, false);
    put_kv_str(o, "id", b->id, true);
    put_kv_str(o, "version", b->version, true);
    gl_buf_puts(o, "},\"citations\":[");
    for (size_t i = 0; i < nfired; i++)
        put_citation(o, pw->rules[fired[i].rule].id, &pw->rules[fired[i].rule].act, i > 0);
    if (pw && nfired == 0)
        put_citation(o, "default", &pw->dflt, false);
    gl_buf_put(o, "]", 1);
    put_kv_str(o, "engine", GL_ENGINE_VERSION, true);
    put_kv_str(o, "explain", act ? act->explain : "", true);
    gl_buf_puts(o, ",\"fired\":[");
    for (size_t i = 0; i < nfired; i++) {
        if (i)
            gl_buf_put(o, ",", 1);
        gl_buf_put(o, "{", 1);
        put_kv_str(o, "rule", pw->rules[fired[i].rule].id, false);
        gl_buf_puts(o, ",\"values\":[");
        for (size_t j = 0; j < fired[i].nvals; j++) {
            if (j)
                gl_buf_put(o, ",", 1);
            put_value(o, e, &fired[i].vals[j]);
        }
        gl_buf_puts(o, "]}");
    }
    gl_buf_put(o, "]", 1);
    put_kv_str(o, "input_hash", input_hash, true);
    put_str_list(o, "needs", act ? act->needs : NULL, act ? act->nneeds : 0);
    gl_buf_puts(o, ",\"other_pathways\":[");
    for (size_t i = 0; i < nothers; i++) {
        if (i)
            gl_buf_put(o, ",", 1);
        gl_buf_json_string(o, b->pathways[others[i]].id);
    }
    gl_buf_put(o, "]", 1);
    put_kv_str(o, "outcome", gl_outcome_name(outcome), true);
    put_kv_str(o, "pathway", pw ? pw->id : "", true);
    put_kv_str(o, "rule", rule_id, true);
    gl_buf_puts(o, ",\"stale\":[");
    bool first = true;
    for (uint32_t i = 0; pw && i < pw->ndata; i++) {
        if (e->views[i].had_stale && e->views[i].n == 0) {
            if (!first)
                gl_buf_put(o, ",", 1);
            gl_buf_json_string(o, pw->data[i].id);
            first = false;
        }
    }
    gl_buf_put(o, "]", 1);
    put_str_list(o, "steps", act ? act->steps : NULL, act ? act->nsteps : 0);
    put_str_list(o, "tests", act ? act->tests : NULL, act ? act->ntests : 0);
    gl_buf_puts(o, ",\"unusable\":[");
    for (size_t i = 0; i < e->nunusable; i++) {
        const ev_unusable *u = &e->unusable[i];
        if (i)
            gl_buf_put(o, ",", 1);
        gl_buf_put(o, "{", 1);
        put_kv_str(o, "data", pw->data[u->data].id, false);
        if (u->unit)
            put_kv_str(o, "unit", u->unit, true);
        else
            put_kv_str(o, "reason", "value", true);
        gl_buf_put(o, "}", 1);
    }
    gl_buf_put(o, "]", 1);
    put_kv_str(o, "urgency", act ? act->urgency : "", true);
    gl_buf_put(o, "}", 1);
}

static void copy_field(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The evaluation of a parsed input. root is consumed (decref'd); canon_max bounds its canonical text. */
static base_result evaluate(const gl_bundle *b, json_t *root, size_t canon_max, gl_summary *ret_summary,
                            char **ret_json, size_t *ret_len, char **ret_canon, size_t *ret_canon_len)
{
    base_result r = BASE_OK_RESULT;
    ev e = {.b = b};
    gl_buf canon = {.max = canon_max};
    gl_buf out = {.max = 16 * 1024 * 1024};
    fired_rule *fired = NULL;
    size_t nfired = 0;
    uint32_t others[GL_MAX_PATHWAYS];
    size_t nothers = 0;
    ev_input *in = malloc(sizeof *in);
    if (!in) {
        json_decref(root);
        return base_fail(BASE_ERR_NOMEM, "evaluate: out of memory");
    }
    in->nreason = in->nprobs = in->nobs = in->nmeds = 0;
    in->has_problems = in->has_meds = false;
    in->flags = in->findings = NULL;
    in->root = root;
    e.in = in;
    BASE_GUARD_GOTO(r, parse_input(in), out);

    char input_hash[65];
    gl_canon_dump(in->root, &canon);
    if (canon.failed || !canon.p) {
        r = base_fail(BASE_ERR_NOMEM, "evaluate: out of memory");
        goto out;
    }
    if (ret_canon && canon.len > GL_INPUT_MAX_BYTES) { /* the snapshot that is stored */
        r = base_fail(BASE_ERR_LIMIT, "input: over the limit of %d bytes", GL_INPUT_MAX_BYTES);
        goto out;
    }
    BASE_GUARD_GOTO(r, gl_sha256_hex(canon.p, canon.len, input_hash), out);

    for (uint32_t i = 0; i < b->npathways; i++) {
        if (!pathway_applies(&b->pathways[i], in))
            continue;
        if (!e.pw)
            e.pw = &b->pathways[i];
        else
            others[nothers++] = i;
    }

    gl_outcome outcome = GL_NO_PATHWAY;
    const char *rule_id = "";
    const gl_action *act = NULL;
    if (e.pw) {
        BASE_GUARD_GOTO(r, build_views(&e), out);
        fired = calloc(e.pw->nrules ? e.pw->nrules : 1, sizeof *fired);
        if (!fired) {
            r = base_fail(BASE_ERR_NOMEM, "evaluate: out of memory");
            goto out;
        }
        for (uint32_t i = 0; i < e.pw->nrules; i++) {
            e.vals.n = 0;
            if (eval_crit(&e, &e.pw->rules[i].when) != GL_TRUE)
                continue;
            fired_rule *f = &fired[nfired++];
            f->rule = i;
            if (ret_json && e.vals.n) {
                f->vals = malloc(e.vals.n * sizeof *f->vals);
                if (!f->vals) {
                    r = base_fail(BASE_ERR_NOMEM, "evaluate: out of memory");
                    goto out;
                }
                memcpy(f->vals, e.vals.v, e.vals.n * sizeof *f->vals);
                f->nvals = e.vals.n;
            }
        }
        if (e.vals.failed) {
            r = base_fail(BASE_ERR_NOMEM, "evaluate: out of memory");
            goto out;
        }
        if (nfired) {
            act = &e.pw->rules[fired[0].rule].act;
            rule_id = e.pw->rules[fired[0].rule].id;
        } else {
            act = &e.pw->dflt;
            rule_id = "default";
        }
        outcome = act->outcome;
    }

    if (ret_json) {
        write_recommendation(&out, &e, input_hash, outcome, rule_id, act, fired, nfired, others, nothers);
        if (out.failed || !out.p) {
            r = base_fail(BASE_ERR_NOMEM, "evaluate: out of memory");
            goto out;
        }
    }
    if (ret_summary) {
        memset(ret_summary, 0, sizeof *ret_summary);
        ret_summary->outcome = outcome;
        copy_field(ret_summary->urgency, sizeof ret_summary->urgency, act ? act->urgency : "");
        copy_field(ret_summary->pathway, sizeof ret_summary->pathway, e.pw ? e.pw->id : "");
        copy_field(ret_summary->rule, sizeof ret_summary->rule, rule_id);
        copy_field(ret_summary->input_hash, sizeof ret_summary->input_hash, input_hash);
        ret_summary->fired = nfired;
    }
    if (ret_json) {
        *ret_json = out.p;
        if (ret_len)
            *ret_len = out.len;
        out.p = NULL;
    }
    if (ret_canon) {
        *ret_canon = canon.p;
        *ret_canon_len = canon.len;
        canon.p = NULL;
    }
out:
    for (size_t i = 0; i < nfired; i++)
        free(fired[i].vals);
    free(fired);
    free(e.vals.v);
    free(e.pts);
    free(e.unusable);
    gl_buf_free(&canon);
    gl_buf_free(&out);
    if (in->root)
        json_decref(in->root);
    free(in);
    return r;
}

base_result gl_evaluate(const gl_bundle *b, const char *input, size_t len, gl_summary *ret_summary,
                        char **ret_json, size_t *ret_len)
{
    if (!b || !input)
        return base_fail(BASE_ERR_INVALID, "evaluate: missing argument");
    if (len > GL_INPUT_MAX_BYTES)
        return base_fail(BASE_ERR_LIMIT, "input: over the limit of %d bytes", GL_INPUT_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(input, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) /* jerr.text may quote the input: give only the position. */
        return base_fail(BASE_ERR_INVALID, "input: not valid JSON (line %d, column %d)", jerr.line,
                         jerr.column);
    return evaluate(b, root, 8 * len + 64, ret_summary, ret_json, ret_len, NULL, NULL);
}

base_result gl_evaluate_tree(const gl_bundle *b, struct json_t *input, gl_summary *ret_summary,
                             char **ret_json, size_t *ret_len, char **ret_canon, size_t *ret_canon_len)
{
    if (!b || !input || !ret_canon || !ret_canon_len)
        return base_fail(BASE_ERR_INVALID, "evaluate: missing argument");
    json_incref(input);
    return evaluate(b, input, 8 * (size_t)GL_INPUT_MAX_BYTES + 64, ret_summary, ret_json, ret_len, ret_canon,
                    ret_canon_len);
}

const char *gl_outcome_name(gl_outcome o)
{
    switch (o) {
    case GL_NO_PATHWAY:
        return "NO_PATHWAY";
    case GL_REFER:
        return "REFER";
    case GL_WORKUP:
        return "WORKUP";
    case GL_MANAGE:
        return "MANAGE";
    case GL_INSUFFICIENT:
        return "INSUFFICIENT";
    default:
        return "UNKNOWN";
    }
}
