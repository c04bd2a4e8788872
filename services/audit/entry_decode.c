/* Canonical entry -> EventInput (entry_decode.h). The key table mirrors entry.h's FORMAT section. */
#include "entry_decode.h"

#include "entry.h"

#include <ctype.h>
#include <jansson.h>
#include <string.h>
#include <time.h>

typedef struct decoder {
    audit_alloc_fn alloc;
    void *ctx;
} decoder;

static void *dec_alloc(decoder *d, size_t n)
{
    return d->alloc(d->ctx, n ? n : 1);
}

/* A copy of a JSON string value in the allocator's memory. */
static base_result dec_string(decoder *d, json_t *v, const char *key, char **ret)
{
    if (!json_is_string(v))
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" must be a string", key);
    size_t n = json_string_length(v);
    if (memchr(json_string_value(v), '\0', n))
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" holds a NUL character", key);
    char *s = dec_alloc(d, n + 1);
    if (!s)
        return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
    memcpy(s, json_string_value(v), n);
    s[n] = '\0';
    *ret = s;
    return BASE_OK_RESULT;
}

/* An optional string member of obj: absent -> "" (protobuf-c's empty string default). */
static base_result dec_opt_string(decoder *d, json_t *obj, const char *key, char **ret)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *ret = (char *)protobuf_c_empty_string;
        return BASE_OK_RESULT;
    }
    return dec_string(d, v, key, ret);
}

static base_result dec_enum(json_t *obj, const char *key, const ProtobufCEnumDescriptor *desc, bool required,
                            int *ret)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return base_fail(BASE_ERR_INVALID, "entry: \"%s\" is missing", key);
        *ret = 0;
        return BASE_OK_RESULT;
    }
    if (!json_is_string(v))
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" must be a string", key);
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(desc, json_string_value(v));
    if (!ev || ev->value == 0)
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" is not a known value", key);
    *ret = ev->value;
    return BASE_OK_RESULT;
}

static base_result dec_object(json_t *obj, const char *key, json_t **ret)
{
    json_t *v = json_object_get(obj, key);
    if (v && !json_is_object(v))
        return base_fail(BASE_ERR_INVALID, "entry: \"%s\" must be an object", key);
    *ret = v;
    return BASE_OK_RESULT;
}

base_result audit_entry_parse_time(const char *text, int64_t *ret_micros)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    BASE_ENSURE(text && ret_micros, BASE_ERR_INVALID, "entry: NULL time");
    BASE_ENSURE(strlen(text) == sizeof shape - 1, BASE_ERR_INVALID,
                "entry: \"time\" must be YYYY-MM-DDTHH:MM:SS.ffffffZ");
    for (size_t i = 0; shape[i]; i++) {
        bool ok = shape[i] == 'd' ? isdigit((unsigned char)text[i]) != 0 : text[i] == shape[i];
        BASE_ENSURE(ok, BASE_ERR_INVALID, "entry: \"time\" must be YYYY-MM-DDTHH:MM:SS.ffffffZ");
    }
#define DIGITS(off, n)                                                                                       \
    ({                                                                                                       \
        int v_ = 0;                                                                                          \
        for (int k_ = 0; k_ < (n); k_++)                                                                     \
            v_ = v_ * 10 + (text[(off) + k_] - '0');                                                         \
        v_;                                                                                                  \
    })
    struct tm tm = {0};
    tm.tm_year = DIGITS(0, 4) - 1900;
    tm.tm_mon = DIGITS(5, 2) - 1;
    tm.tm_mday = DIGITS(8, 2);
    tm.tm_hour = DIGITS(11, 2);
    tm.tm_min = DIGITS(14, 2);
    tm.tm_sec = DIGITS(17, 2);
    int micros = DIGITS(20, 6);
#undef DIGITS
    BASE_ENSURE(tm.tm_year >= 70 && tm.tm_mon <= 11 && tm.tm_mday >= 1 && tm.tm_mday <= 31 &&
                    tm.tm_hour <= 23 && tm.tm_min <= 59 && tm.tm_sec <= 59,
                BASE_ERR_INVALID, "entry: \"time\" is not a valid instant");
    struct tm check = tm;
    time_t secs = timegm(&check);
    /* timegm normalises Feb 30 to Mar 2: a date that moved was not a real date. */
    BASE_ENSURE(secs >= 0 && check.tm_mday == tm.tm_mday && check.tm_mon == tm.tm_mon, BASE_ERR_INVALID,
                "entry: \"time\" is not a valid instant");
    *ret_micros = (int64_t)secs * 1000000 + micros;
    return BASE_OK_RESULT;
}

static base_result dec_actor(decoder *d, json_t *root, Alma__Audit__V1__EventInput *ev)
{
    json_t *a = NULL;
    BASE_GUARD(dec_object(root, "actor", &a));
    if (!a)
        return base_fail(BASE_ERR_INVALID, "entry: \"actor\" is missing");
    Alma__Audit__V1__Actor *actor = dec_alloc(d, sizeof *actor);
    if (!actor)
        return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
    alma__audit__v1__actor__init(actor);
    json_t *pid = json_object_get(a, "principal_id");
    if (!pid)
        return base_fail(BASE_ERR_INVALID, "entry: \"actor.principal_id\" is missing");
    BASE_GUARD(dec_string(d, pid, "actor.principal_id", &actor->principal_id));
    BASE_GUARD(dec_opt_string(d, a, "service_identity", &actor->service_identity));
    json_t *roles = json_object_get(a, "roles");
    if (roles) {
        if (!json_is_array(roles) || json_array_size(roles) > 64)
            return base_fail(BASE_ERR_INVALID, "entry: \"actor.roles\" must be a short array");
        size_t n = json_array_size(roles);
        actor->roles = dec_alloc(d, n * sizeof *actor->roles);
        if (!actor->roles)
            return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
        for (size_t i = 0; i < n; i++)
            BASE_GUARD(dec_string(d, json_array_get(roles, i), "actor.roles", &actor->roles[i]));
        actor->n_roles = n;
    }
    ev->actor = actor;
    return BASE_OK_RESULT;
}

static base_result dec_parts(decoder *d, json_t *root, Alma__Audit__V1__EventInput *ev)
{
    json_t *o = NULL;
    BASE_GUARD(dec_object(root, "recipient", &o));
    if (o) {
        Alma__Audit__V1__Recipient *r = dec_alloc(d, sizeof *r);
        if (!r)
            return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
        alma__audit__v1__recipient__init(r);
        BASE_GUARD(dec_opt_string(d, o, "name", &r->name));
        BASE_GUARD(dec_opt_string(d, o, "address", &r->address));
        ev->recipient = r;
    }
    BASE_GUARD(dec_object(root, "guideline", &o));
    if (o) {
        Alma__Audit__V1__GuidelineRef *g = dec_alloc(d, sizeof *g);
        if (!g)
            return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
        alma__audit__v1__guideline_ref__init(g);
        BASE_GUARD(dec_opt_string(d, o, "engine_version", &g->engine_version));
        BASE_GUARD(dec_opt_string(d, o, "bundle_id", &g->bundle_id));
        BASE_GUARD(dec_opt_string(d, o, "bundle_version", &g->bundle_version));
        BASE_GUARD(dec_opt_string(d, o, "bundle_hash", &g->bundle_hash));
        BASE_GUARD(dec_opt_string(d, o, "source", &g->source));
        ev->guideline = g;
    }
    BASE_GUARD(dec_object(root, "resource", &o));
    if (o) {
        BASE_GUARD(dec_opt_string(d, o, "type", &ev->resource_type));
        BASE_GUARD(dec_opt_string(d, o, "id", &ev->resource_id));
    }
    BASE_GUARD(dec_object(root, "details", &o));
    if (o) {
        size_t n = json_object_size(o);
        if (n > 64)
            return base_fail(BASE_ERR_INVALID, "entry: \"details\" has too many keys");
        ev->details = dec_alloc(d, n * sizeof *ev->details);
        if (!ev->details)
            return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
        const char *key;
        json_t *value;
        size_t i = 0;
        json_object_foreach(o, key, value)
        {
            Alma__Audit__V1__EventInput__DetailsEntry *e = dec_alloc(d, sizeof *e);
            if (!e)
                return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
            alma__audit__v1__event_input__details_entry__init(e);
            size_t klen = strlen(key);
            e->key = dec_alloc(d, klen + 1);
            if (!e->key)
                return base_fail(BASE_ERR_NOMEM, "entry: out of memory");
            memcpy(e->key, key, klen + 1);
            BASE_GUARD(dec_string(d, value, "details", &e->value));
            ev->details[i++] = e;
        }
        ev->n_details = i;
    }
    return BASE_OK_RESULT;
}

base_result audit_entry_decode(const char *entry, size_t len, audit_alloc_fn alloc, void *ctx,
                               audit_decoded_entry *ret)
{
    BASE_ENSURE(entry && alloc && ret, BASE_ERR_INVALID, "entry: NULL argument");
    BASE_ENSURE(len <= AUDIT_ENTRY_MAX, BASE_ERR_LIMIT, "entry: longer than the largest entry");
    json_error_t jerr;
    json_t *root = json_loadb(entry, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return base_fail(BASE_ERR_INVALID, "entry: not valid JSON");
    decoder d = {alloc, ctx};
    base_result r = BASE_OK_RESULT;
    audit_decoded_entry out = {0};
    Alma__Audit__V1__EventInput *ev = dec_alloc(&d, sizeof *ev);
    if (!ev) {
        r = base_fail(BASE_ERR_NOMEM, "entry: out of memory");
        goto done;
    }
    alma__audit__v1__event_input__init(ev);
    if (!json_is_object(root)) {
        r = base_fail(BASE_ERR_INVALID, "entry: not a JSON object");
        goto done;
    }
    json_t *v = json_object_get(root, "v");
    if (!json_is_integer(v) || json_integer_value(v) != AUDIT_ENTRY_VERSION) {
        r = base_fail(BASE_ERR_INVALID, "entry: \"v\" must be %d", AUDIT_ENTRY_VERSION);
        goto done;
    }
    json_t *seq = json_object_get(root, "seq");
    if (!json_is_integer(seq) || json_integer_value(seq) < 0) {
        r = base_fail(BASE_ERR_INVALID, "entry: \"seq\" must be a non-negative integer");
        goto done;
    }
    out.seq = (uint64_t)json_integer_value(seq);
    json_t *t = json_object_get(root, "time");
    if (!json_is_string(t)) {
        r = base_fail(BASE_ERR_INVALID, "entry: \"time\" is missing");
        goto done;
    }
    BASE_GUARD_GOTO(r, audit_entry_parse_time(json_string_value(t), &out.time_micros), done);
    json_t *tenant = json_object_get(root, "tenant_id");
    if (!tenant) {
        r = base_fail(BASE_ERR_INVALID, "entry: \"tenant_id\" is missing");
        goto done;
    }
    BASE_GUARD_GOTO(r, dec_string(&d, tenant, "tenant_id", &ev->tenant_id), done);
    int e = 0;
    BASE_GUARD_GOTO(r, dec_enum(root, "action", &alma__audit__v1__action__descriptor, true, &e), done);
    ev->action = (Alma__Audit__V1__Action)e;
    BASE_GUARD_GOTO(r, dec_enum(root, "outcome", &alma__audit__v1__outcome__descriptor, false, &e), done);
    ev->outcome = (Alma__Audit__V1__Outcome)e;
    BASE_GUARD_GOTO(r, dec_enum(root, "severity", &alma__audit__v1__severity__descriptor, false, &e), done);
    ev->severity = (Alma__Audit__V1__Severity)e;
    BASE_GUARD_GOTO(r, dec_enum(root, "purpose", &alma__common__v1__purpose_of_use__descriptor, false, &e),
                    done);
    ev->purpose = (Alma__Common__V1__PurposeOfUse)e;
    BASE_GUARD_GOTO(r, dec_enum(root, "basis", &alma__audit__v1__disclosure_basis__descriptor, false, &e),
                    done);
    ev->basis = (Alma__Audit__V1__DisclosureBasis)e;
    BASE_GUARD_GOTO(r, dec_opt_string(&d, root, "patient_ref", &ev->patient_ref), done);
    BASE_GUARD_GOTO(r, dec_opt_string(&d, root, "request_id", &ev->request_id), done);
    BASE_GUARD_GOTO(r, dec_opt_string(&d, root, "phi_description", &ev->phi_description), done);
    BASE_GUARD_GOTO(r, dec_actor(&d, root, ev), done);
    BASE_GUARD_GOTO(r, dec_parts(&d, root, ev), done);
    out.event = ev;
    *ret = out;
done:
    json_decref(root);
    return r;
}
