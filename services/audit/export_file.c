/* The on-disk export (format in export_file.h): writer and streaming reader. */
#include "export_file.h"

#include "base/utf8.h"
#include "crypto/crypto.h"

#include <jansson.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HL      AUDIT_MERKLE_HASH_LEN
#define HEX_LEN (2 * HL)
/* The base64 of the largest entry, without the NUL. */
#define ENTRY_B64_MAX (((AUDIT_ENTRY_MAX + 2) / 3) * 4)
/* Bytes read from a file at a time (beyond a line's bound). */
#define READ_CHUNK ((size_t)64 * 1024)
/* stdio buffer of each file the writer appends to. */
#define WRITE_BUFFER ((size_t)256 * 1024)
/* Paths in messages are cut to this many bytes. */
#define PATH_SHOWN 200

static void export_json_decref(json_t **j)
{
    if (*j)
        json_decref(*j);
}

/* ---------------------------------------------------------------------------------------------------------
 * Small helpers. */

bool audit_export_tenant_ok(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, AUDIT_EXPORT_TENANT_MAX + 1);
    if (n == 0 || n > AUDIT_EXPORT_TENANT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* UTF-8 without control characters below U+0020 (the signed-note text rule for one line). */
static bool line_text_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = base_utf8_next(p + i, n - i, &cp);
        if (len == 0 || cp < 0x20)
            return false;
        i += len;
    }
    return true;
}

/* Exactly 64 lowercase hex digits, decoded. (Hashes are public: no constant-time decoding needed.) */
static bool hex_hash_parse(const char *s, size_t n, uint8_t out[HL])
{
    if (n != HEX_LEN)
        return false;
    for (size_t i = 0; i < HL; i++) {
        unsigned v = 0;
        for (size_t k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            if (c >= '0' && c <= '9')
                v = (v << 4) | (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v = (v << 4) | (unsigned)(c - 'a' + 10);
            else
                return false;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

static void hex_hash(const uint8_t h[HL], char out[HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < HL; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 0x0f];
    }
    out[HEX_LEN] = '\0';
}

static base_result write_all(int fd, const void *buf, size_t len, const char *dir, const char *name)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return base_fail(BASE_ERR_IO, "export: writing %.*s/%s failed: %s", PATH_SHOWN, dir, name,
                             strerror(n < 0 ? errno : EIO));
        p += n;
        len -= (size_t)n;
    }
    return BASE_OK_RESULT;
}

/* Read all of dirfd/name (at most max bytes; more is BASE_ERR_INVALID) into a new buffer with a NUL after
 * it. ENOENT is BASE_ERR_NOT_FOUND, other failures BASE_ERR_IO. */
static base_result read_small_file(int dirfd, const char *dir, const char *name, size_t max, char **ret,
                                   size_t *ret_len)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return base_fail(e == ENOENT ? BASE_ERR_NOT_FOUND : BASE_ERR_IO, "export: cannot open %.*s/%s: %s",
                         PATH_SHOWN, dir, name, strerror(e));
    }
    char *buf = malloc(max + 2);
    if (!buf) {
        close(fd);
        return base_fail(BASE_ERR_NOMEM, "export: out of memory reading %s", name);
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, max + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return base_fail(BASE_ERR_IO, "export: reading %.*s/%s failed: %s", PATH_SHOWN, dir, name,
                             strerror(e));
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            close(fd);
            free(buf);
            return base_fail(BASE_ERR_INVALID, "%s: larger than %zu bytes", name, max);
        }
    }
    close(fd);
    buf[len] = '\0';
    *ret = buf;
    *ret_len = len;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Shared checks. */

base_result audit_export_check_entry(const char *entry, size_t len, uint64_t seq, const char *tenant_id)
{
    if (!entry || !tenant_id)
        return base_fail(BASE_ERR_INVALID, "audit_export_check_entry: NULL argument");
    if (len > AUDIT_ENTRY_MAX)
        return base_fail(BASE_ERR_INVALID, "entry is larger than %zu bytes", AUDIT_ENTRY_MAX);
    json_error_t jerr;
    /* The parser's error text may quote the input: it is not passed on. */
    BASE_CLEANUP(export_json_decref) json_t *e = json_loadb(entry, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!e || !json_is_object(e))
        return base_fail(BASE_ERR_INVALID, "entry is not a JSON object");
    const json_t *v = json_object_get(e, "v");
    if (!json_is_integer(v) || json_integer_value(v) != AUDIT_ENTRY_VERSION)
        return base_fail(BASE_ERR_INVALID, "entry \"v\" is not %d", AUDIT_ENTRY_VERSION);
    const json_t *s = json_object_get(e, "seq");
    if (!json_is_integer(s) || json_integer_value(s) < 0 || (uint64_t)json_integer_value(s) != seq)
        return base_fail(BASE_ERR_INVALID, "entry \"seq\" is not the seq of its proof");
    const json_t *t = json_object_get(e, "tenant_id");
    if (!json_is_string(t) || strcmp(json_string_value(t), tenant_id) != 0)
        return base_fail(BASE_ERR_INVALID, "entry \"tenant_id\" is not the export's tenant");
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * The export statement. */

/* Decimal without sign or leading zeros, below 2^63. */
static bool statement_decimal(const char *s, size_t n, uint64_t *ret)
{
    if (n == 0 || n > 19 || (s[0] == '0' && n > 1))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *ret = v;
    return true;
}

/* The next line of text[*pos..len) if it starts with `key` and a space: its value (without the \n). */
static bool statement_line(const char *text, size_t len, size_t *pos, const char *key, const char **ret,
                           size_t *ret_len)
{
    if (*pos >= len)
        return false;
    const char *start = text + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    if (!nl)
        return false;
    size_t n = (size_t)(nl - start), k = strlen(key);
    if (n < k + 1 || memcmp(start, key, k) != 0 || start[k] != ' ')
        return false;
    *ret = start + k + 1;
    *ret_len = n - k - 1;
    *pos += n + 1;
    return true;
}

base_result audit_export_statement_parse(const char *text, size_t len, audit_export_statement *ret)
{
    if (!text || !ret)
        return base_fail(BASE_ERR_INVALID, "audit_export_statement_parse: NULL argument");
    BASE_ENSURE(len <= AUDIT_NOTE_MAX_LEN, BASE_ERR_INVALID, "export statement: larger than 1 MiB");
    audit_export_statement st;
    memset(&st, 0, sizeof st);
    const size_t hlen = strlen(AUDIT_EXPORT_STATEMENT_HEADER);
    BASE_ENSURE(len > hlen && memcmp(text, AUDIT_EXPORT_STATEMENT_HEADER, hlen) == 0 && text[hlen] == '\n',
                BASE_ERR_INVALID,
                "export statement: the first line is not \"" AUDIT_EXPORT_STATEMENT_HEADER "\"");
    size_t pos = hlen + 1, n = 0;
    const char *v = NULL;

    BASE_ENSURE(statement_line(text, len, &pos, "origin", &v, &n), BASE_ERR_INVALID,
                "export statement: line 2 is not \"origin <origin>\"");
    BASE_ENSURE(n > 0 && n <= AUDIT_CHECKPOINT_ORIGIN_MAX && line_text_ok(v, n), BASE_ERR_INVALID,
                "export statement: the origin is empty, too long or not UTF-8 text");
    memcpy(st.origin, v, n);
    st.origin[n] = '\0';

    BASE_ENSURE(statement_line(text, len, &pos, "tenant", &v, &n), BASE_ERR_INVALID,
                "export statement: line 3 is not \"tenant <tenant_id>\"");
    BASE_ENSURE(n <= AUDIT_EXPORT_TENANT_MAX, BASE_ERR_INVALID,
                "export statement: the tenant is not 1 to 64 of [A-Za-z0-9._:-]");
    memcpy(st.tenant_id, v, n);
    st.tenant_id[n] = '\0';
    BASE_ENSURE(audit_export_tenant_ok(st.tenant_id), BASE_ERR_INVALID,
                "export statement: the tenant is not 1 to 64 of [A-Za-z0-9._:-]");

    BASE_ENSURE(statement_line(text, len, &pos, "filter", &v, &n), BASE_ERR_INVALID,
                "export statement: line 4 is not \"filter <JSON object>\"");
    BASE_ENSURE(n > 0 && n <= AUDIT_EXPORT_FILTER_MAX && line_text_ok(v, n), BASE_ERR_INVALID,
                "export statement: the filter is empty, larger than 65536 bytes or not UTF-8 text");
    {
        json_error_t jerr;
        BASE_CLEANUP(export_json_decref) json_t *f = json_loadb(v, n, JSON_REJECT_DUPLICATES, &jerr);
        BASE_ENSURE(f && json_is_object(f), BASE_ERR_INVALID,
                    "export statement: the filter is not a JSON object");
        const json_t *t = json_object_get(f, "tenant_id");
        BASE_ENSURE(json_is_string(t) && strcmp(json_string_value(t), st.tenant_id) == 0, BASE_ERR_INVALID,
                    "export statement: the filter's \"tenant_id\" is not the statement's tenant");
    }
    st.filter = v;
    st.filter_len = n;

    BASE_ENSURE(statement_line(text, len, &pos, "format", &v, &n), BASE_ERR_INVALID,
                "export statement: line 5 is not \"format <jsonl|fhir-ndjson>\"");
    if (n == strlen(AUDIT_EXPORT_CONTENT_FHIR) && memcmp(v, AUDIT_EXPORT_CONTENT_FHIR, n) == 0)
        st.fhir = true;
    else
        BASE_ENSURE(n == strlen(AUDIT_EXPORT_CONTENT_JSONL) && memcmp(v, AUDIT_EXPORT_CONTENT_JSONL, n) == 0,
                    BASE_ERR_INVALID, "export statement: the format is not \"jsonl\" or \"fhir-ndjson\"");

    BASE_ENSURE(statement_line(text, len, &pos, "tree", &v, &n), BASE_ERR_INVALID,
                "export statement: line 6 is not \"tree <tree size>\"");
    BASE_ENSURE(statement_decimal(v, n, &st.tree_size), BASE_ERR_INVALID,
                "export statement: the tree size is not a decimal below 2^63");
    BASE_ENSURE(statement_line(text, len, &pos, "count", &v, &n), BASE_ERR_INVALID,
                "export statement: line 7 is not \"count <lines>\"");
    BASE_ENSURE(statement_decimal(v, n, &st.count), BASE_ERR_INVALID,
                "export statement: the count is not a decimal below 2^63");
    BASE_ENSURE(st.count <= st.tree_size, BASE_ERR_INVALID,
                "export statement: the count is larger than the tree size");

    BASE_ENSURE(statement_line(text, len, &pos, "leaves", &v, &n), BASE_ERR_INVALID,
                "export statement: line 8 is not \"leaves <base64 digest>\"");
    uint8_t buf[HL + 2];
    size_t dlen = 0;
    BASE_ENSURE(n == 44 && base_is_ok(acrypto_base64_decode(v, n, buf, sizeof buf, &dlen)) && dlen == HL,
                BASE_ERR_INVALID, "export statement: the leaves digest is not base64 of 32 bytes");
    memcpy(st.leaves, buf, HL);
    BASE_ENSURE(pos == len, BASE_ERR_INVALID, "export statement: more than eight lines");
    *ret = st;
    return BASE_OK_RESULT;
}

base_result audit_export_statement_format(const audit_export_statement *st, char **ret_text, size_t *ret_len)
{
    if (!st || !ret_text || !ret_len || (!st->filter && st->filter_len > 0))
        return base_fail(BASE_ERR_INVALID, "audit_export_statement_format: NULL argument");
    BASE_ENSURE(st->filter_len <= AUDIT_EXPORT_FILTER_MAX, BASE_ERR_INVALID,
                "export statement: the filter is larger than 65536 bytes");
    char leaves[HL * 2];
    size_t leaves_len = 0;
    BASE_GUARD(acrypto_base64_encode(st->leaves, HL, leaves, sizeof leaves, &leaves_len));
    size_t origin_len = strnlen(st->origin, sizeof st->origin);
    size_t tenant_len = strnlen(st->tenant_id, sizeof st->tenant_id);
    BASE_ENSURE(origin_len < sizeof st->origin && tenant_len < sizeof st->tenant_id, BASE_ERR_INVALID,
                "export statement: origin or tenant is not NUL-terminated");
    size_t cap = origin_len + tenant_len + st->filter_len + leaves_len + 256;
    char *text = malloc(cap);
    if (!text)
        return base_fail(BASE_ERR_NOMEM, "export statement: out of memory");
    int n = snprintf(
        text, cap,
        AUDIT_EXPORT_STATEMENT_HEADER "\norigin %s\ntenant %s\nfilter %.*s\nformat %s\ntree %" PRIu64
                                      "\ncount %" PRIu64 "\nleaves %s\n",
        st->origin, st->tenant_id, (int)st->filter_len, st->filter ? st->filter : "",
        st->fhir ? AUDIT_EXPORT_CONTENT_FHIR : AUDIT_EXPORT_CONTENT_JSONL, st->tree_size, st->count, leaves);
    if (n < 0 || (size_t)n >= cap) {
        free(text);
        return base_fail(BASE_ERR_INTERNAL, "export statement: formatting failed");
    }
    /* What is formatted must parse back to the same statement (a NUL or newline in a field would not). */
    audit_export_statement back;
    base_result r = audit_export_statement_parse(text, (size_t)n, &back);
    if (base_is_ok(r) && (strcmp(back.origin, st->origin) != 0 || back.filter_len != st->filter_len ||
                          back.tree_size != st->tree_size || back.count != st->count))
        r = base_fail(BASE_ERR_INVALID, "export statement: a field holds a newline or NUL byte");
    if (!base_is_ok(r)) {
        free(text);
        return r;
    }
    *ret_text = text;
    *ret_len = (size_t)n;
    return BASE_OK_RESULT;
}

/* RFC 3339 UTC with 6 fractional digits, as entries write times (entry.h). */
static base_result filter_time(const Google__Protobuf__Timestamp *t, const char *field, json_t *obj)
{
    if (t->seconds < 0 || t->seconds > INT64_C(253402300799) || t->nanos < 0 || t->nanos > 999999999)
        return base_fail(BASE_ERR_INVALID, "export filter: %s is out of range", field);
    time_t secs = (time_t)t->seconds;
    struct tm tm;
    char buf[40];
    if (!gmtime_r(&secs, &tm))
        return base_fail(BASE_ERR_INVALID, "export filter: %s is out of range", field);
    int n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(t->nanos / 1000));
    if (n != 27)
        return base_fail(BASE_ERR_INTERNAL, "export filter: formatting %s failed", field);
    if (json_object_set_new(obj, field, json_string(buf)) != 0)
        return base_fail(BASE_ERR_NOMEM, "export filter: out of memory");
    return BASE_OK_RESULT;
}

static base_result filter_string(json_t *obj, const char *field, const char *value)
{
    if (!value || !value[0])
        return BASE_OK_RESULT;
    json_t *s = json_string(value);
    if (!s)
        return base_fail(BASE_ERR_INVALID, "export filter: %s is not UTF-8 text", field);
    if (json_object_set_new(obj, field, s) != 0)
        return base_fail(BASE_ERR_NOMEM, "export filter: out of memory");
    return BASE_OK_RESULT;
}

static base_result filter_enum(json_t *obj, const char *field, const ProtobufCEnumDescriptor *d, int value)
{
    if (value == 0)
        return BASE_OK_RESULT;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, value);
    if (!ev)
        return base_fail(BASE_ERR_INVALID, "export filter: %s is not a defined value", field);
    if (json_object_set_new(obj, field, json_string(ev->name)) != 0)
        return base_fail(BASE_ERR_NOMEM, "export filter: out of memory");
    return BASE_OK_RESULT;
}

base_result audit_export_filter_json(const Alma__Audit__V1__EventFilter *f, char **ret_json, size_t *ret_len)
{
    if (!f || !ret_json || !ret_len)
        return base_fail(BASE_ERR_INVALID, "audit_export_filter_json: NULL argument");
    BASE_ENSURE(audit_export_tenant_ok(f->tenant_id), BASE_ERR_INVALID,
                "export filter: tenant_id is not 1 to 64 of [A-Za-z0-9._:-]");
    BASE_CLEANUP(export_json_decref) json_t *o = json_object();
    if (!o)
        return base_fail(BASE_ERR_NOMEM, "export filter: out of memory");
    BASE_GUARD(filter_string(o, "tenant_id", f->tenant_id));
    BASE_GUARD(filter_string(o, "patient_ref", f->patient_ref));
    BASE_GUARD(filter_string(o, "actor_principal_id", f->actor_principal_id));
    BASE_GUARD(filter_enum(o, "action", &alma__audit__v1__action__descriptor, (int)f->action));
    BASE_GUARD(filter_enum(o, "purpose", &alma__common__v1__purpose_of_use__descriptor, (int)f->purpose));
    BASE_GUARD(filter_enum(o, "outcome", &alma__audit__v1__outcome__descriptor, (int)f->outcome));
    if (f->start_time)
        BASE_GUARD(filter_time(f->start_time, "start_time", o));
    if (f->end_time)
        BASE_GUARD(filter_time(f->end_time, "end_time", o));
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!text)
        return base_fail(BASE_ERR_NOMEM, "export filter: out of memory");
    size_t n = strlen(text);
    if (n > AUDIT_EXPORT_FILTER_MAX) {
        free(text);
        return base_fail(BASE_ERR_INVALID, "export filter: larger than 65536 bytes");
    }
    *ret_json = text;
    *ret_len = n;
    return BASE_OK_RESULT;
}

base_result audit_export_filter_canonical(const char *json, size_t len, char **ret)
{
    if (!json || !ret)
        return base_fail(BASE_ERR_INVALID, "audit_export_filter_canonical: NULL argument");
    BASE_ENSURE(len <= AUDIT_EXPORT_MANIFEST_MAX, BASE_ERR_INVALID, "filter: larger than 1 MiB");
    json_error_t jerr;
    BASE_CLEANUP(export_json_decref) json_t *f = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    BASE_ENSURE(f && json_is_object(f), BASE_ERR_INVALID, "filter: not a JSON object");
    char *text = json_dumps(f, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!text)
        return base_fail(BASE_ERR_NOMEM, "filter: out of memory");
    *ret = text;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Writer. */

struct audit_export_writer {
    char *dir; /* as given, for messages */
    int dirfd;
    bool fhir;
    char tenant[AUDIT_EXPORT_TENANT_MAX + 1];
    const char *events_name;
    FILE *events;
    FILE *proofs;
    bool have_checkpoint;
    uint64_t tree_size;
    uint8_t root[HL];
    char origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 1];
    bool have_seq;
    uint64_t last_seq;
    uint64_t count;
    json_t *filter;             /* set_filter's; NULL: {} */
    acrypto_sha256_ctx *leaves; /* SHA-256 over the leaf hashes of the lines written, in order */
    bool leaves_closed;         /* a statement was offered: leaves_digest is final, no more lines */
    uint8_t leaves_digest[HL];  /* valid once leaves_closed */
    bool have_statement;        /* the statement was checked and written */
    json_t *statement_filter;   /* its filter object: the manifest's "filter" */
    char *line;                 /* the proofs line being built: AUDIT_EXPORT_PROOF_LINE_MAX + 2 bytes */
    bool broken;                /* an IO error: a file may hold part of a line */
    bool finished;
};

static base_result writer_io_fail(audit_export_writer *w, const char *name, int e)
{
    w->broken = true;
    return base_fail(BASE_ERR_IO, "export: writing %.*s/%s failed: %s", PATH_SHOWN, w->dir, name,
                     strerror(e));
}

static base_result writer_usable(const audit_export_writer *w)
{
    if (!w)
        return base_fail(BASE_ERR_INVALID, "export writer: NULL writer");
    if (w->broken)
        return base_fail(BASE_ERR_CONFLICT, "export writer: an earlier write failed");
    if (w->finished)
        return base_fail(BASE_ERR_CONFLICT, "export writer: already finished");
    return BASE_OK_RESULT;
}

/* Is the directory open as fd empty (only . and ..)? */
static base_result dir_is_empty(int fd, const char *dir, bool *ret_empty)
{
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return base_fail(BASE_ERR_IO, "export: cannot read %.*s: %s", PATH_SHOWN, dir, strerror(errno));
    DIR *d = fdopendir(dup_fd);
    if (!d) {
        int e = errno;
        close(dup_fd);
        return base_fail(BASE_ERR_IO, "export: cannot read %.*s: %s", PATH_SHOWN, dir, strerror(e));
    }
    bool empty = true;
    errno = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    }
    int e = errno;
    closedir(d);
    if (empty && e != 0)
        return base_fail(BASE_ERR_IO, "export: cannot read %.*s: %s", PATH_SHOWN, dir, strerror(e));
    *ret_empty = empty;
    return BASE_OK_RESULT;
}

/* fsync the directory that holds `path`, so a new entry in it survives a crash. */
static base_result fsync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return base_fail(BASE_ERR_NOMEM, "export: out of memory");
    const char *parent = dirname(copy);
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    base_result r = BASE_OK_RESULT;
    if (fd < 0) {
        r = base_fail(BASE_ERR_IO, "export: cannot open the parent of %.*s: %s", PATH_SHOWN, path,
                      strerror(errno));
    } else {
        if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
            r = base_fail(BASE_ERR_IO, "export: fsync of the parent of %.*s failed: %s", PATH_SHOWN, path,
                          strerror(errno));
        close(fd);
    }
    free(copy);
    return r;
}

static base_result writer_create_file(audit_export_writer *w, const char *name, FILE **ret)
{
    int fd = openat(w->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return base_fail(BASE_ERR_IO, "export: cannot create %.*s/%s: %s", PATH_SHOWN, w->dir, name,
                         strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        return base_fail(BASE_ERR_IO, "export: cannot open %.*s/%s: %s", PATH_SHOWN, w->dir, name,
                         strerror(e));
    }
    setvbuf(f, NULL, _IOFBF, WRITE_BUFFER);
    *ret = f;
    return BASE_OK_RESULT;
}

void audit_export_writer_free(audit_export_writer *w)
{
    if (!w)
        return;
    if (w->events)
        fclose(w->events);
    if (w->proofs)
        fclose(w->proofs);
    if (w->dirfd >= 0) {
        if (!w->finished)
            (void)unlinkat(w->dirfd, AUDIT_EXPORT_MANIFEST_TMP, 0);
        close(w->dirfd);
    }
    if (w->filter)
        json_decref(w->filter);
    if (w->statement_filter)
        json_decref(w->statement_filter);
    acrypto_sha256_ctx_free(w->leaves);
    free(w->line);
    free(w->dir);
    free(w);
}

void audit_export_writer_freep(audit_export_writer **w)
{
    if (w) {
        audit_export_writer_free(*w);
        *w = NULL;
    }
}

uint64_t audit_export_writer_count(const audit_export_writer *w)
{
    return w ? w->count : 0;
}

base_result audit_export_writer_open(const char *dir, bool fhir, const char *tenant_id,
                                     audit_export_writer **ret)
{
    if (!dir || !dir[0] || !tenant_id || !ret)
        return base_fail(BASE_ERR_INVALID, "audit_export_writer_open: NULL or empty argument");
    if (!audit_export_tenant_ok(tenant_id))
        return base_fail(BASE_ERR_INVALID, "export writer: tenant_id must be 1 to %d of [A-Za-z0-9._:-]",
                         AUDIT_EXPORT_TENANT_MAX);
    BASE_CLEANUP(audit_export_writer_freep) audit_export_writer *w = calloc(1, sizeof *w);
    if (!w)
        return base_fail(BASE_ERR_NOMEM, "export writer: out of memory");
    w->dirfd = -1;
    w->fhir = fhir;
    w->events_name = fhir ? AUDIT_EXPORT_EVENTS_NDJSON : AUDIT_EXPORT_EVENTS_JSONL;
    memcpy(w->tenant, tenant_id, strlen(tenant_id) + 1);
    w->dir = strdup(dir);
    w->line = malloc(AUDIT_EXPORT_PROOF_LINE_MAX + 2);
    if (!w->dir || !w->line)
        return base_fail(BASE_ERR_NOMEM, "export writer: out of memory");
    BASE_GUARD(acrypto_sha256_ctx_new(&w->leaves));

    bool created = mkdir(dir, 0700) == 0;
    if (!created && errno != EEXIST)
        return base_fail(BASE_ERR_IO, "export: cannot create %.*s: %s", PATH_SHOWN, dir, strerror(errno));
    w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (w->dirfd < 0) {
        int e = errno;
        if (e == ENOTDIR || e == ELOOP)
            return base_fail(BASE_ERR_EXISTS, "export: %.*s exists and is not a directory", PATH_SHOWN, dir);
        return base_fail(BASE_ERR_IO, "export: cannot open %.*s: %s", PATH_SHOWN, dir, strerror(e));
    }
    if (created) {
        BASE_GUARD(fsync_parent(dir));
    } else {
        bool empty = false;
        BASE_GUARD(dir_is_empty(w->dirfd, dir, &empty));
        if (!empty)
            return base_fail(BASE_ERR_EXISTS, "export: %.*s exists and is not empty", PATH_SHOWN, dir);
    }
    BASE_GUARD(writer_create_file(w, w->events_name, &w->events));
    BASE_GUARD(writer_create_file(w, AUDIT_EXPORT_PROOFS_FILE, &w->proofs));
    *ret = w;
    w = NULL;
    return BASE_OK_RESULT;
}

/* Write `name` (new, 0600) with `data`, fsync'd. An IO error breaks the writer. */
static base_result writer_small_file(audit_export_writer *w, const char *name, const char *data, size_t len)
{
    int fd = openat(w->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return writer_io_fail(w, name, errno);
    base_result r = write_all(fd, data, len, w->dir, name);
    if (base_is_ok(r) && fsync(fd) != 0)
        r = base_fail(BASE_ERR_IO, "export: fsync of %.*s/%s failed: %s", PATH_SHOWN, w->dir, name,
                      strerror(errno));
    if (close(fd) != 0 && base_is_ok(r))
        r = base_fail(BASE_ERR_IO, "export: closing %.*s/%s failed: %s", PATH_SHOWN, w->dir, name,
                      strerror(errno));
    if (!base_is_ok(r))
        w->broken = true;
    return r;
}

/* The length of a signed note's text, without checking its signatures: the text ends at the last blank
 * line, and at least one signature line follows it. `what` names the note in messages. */
static base_result note_text_len(const char *note, size_t len, const char *what, size_t *ret_text_len)
{
    if (len < 2 || len > AUDIT_NOTE_MAX_LEN)
        return base_fail(BASE_ERR_INVALID, "export writer: %s is empty or larger than 1 MiB", what);
    if (memchr(note, '\0', len) != NULL || note[len - 1] != '\n')
        return base_fail(BASE_ERR_INVALID,
                         "export writer: %s is not a signed note (NUL byte, or no final newline)", what);
    size_t split = len;
    for (size_t i = len - 1; i-- > 0;) {
        if (note[i] == '\n' && note[i + 1] == '\n') {
            split = i;
            break;
        }
    }
    if (split == len || split + 2 >= len)
        return base_fail(BASE_ERR_INVALID,
                         "export writer: %s is not a signed note (no signature after a blank line)", what);
    *ret_text_len = split + 1;
    return BASE_OK_RESULT;
}

/* The checkpoint body of a signed note, without checking its signatures: its first three lines are origin,
 * decimal size and base64 root (checkpoint.h). */
static base_result note_body_parse(const char *note, size_t len, char origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 1],
                                   uint64_t *ret_size, uint8_t root[HL])
{
    size_t text_len = 0, pos = 0;
    BASE_GUARD(note_text_len(note, len, "checkpoint", &text_len));
    const char *lines[3];
    size_t lens[3];
    for (size_t i = 0; i < 3; i++) {
        BASE_ENSURE(pos < text_len, BASE_ERR_INVALID, "export writer: checkpoint has fewer than three lines");
        const char *nl = memchr(note + pos, '\n', text_len - pos);
        lines[i] = note + pos;
        lens[i] = (size_t)(nl - lines[i]);
        pos += lens[i] + 1;
    }
    BASE_ENSURE(lens[0] > 0 && lens[0] <= AUDIT_CHECKPOINT_ORIGIN_MAX && line_text_ok(lines[0], lens[0]),
                BASE_ERR_INVALID, "export writer: checkpoint origin is empty, too long or not UTF-8 text");
    uint64_t size = 0;
    BASE_ENSURE(lens[1] > 0 && lens[1] <= 20 && !(lines[1][0] == '0' && lens[1] > 1), BASE_ERR_INVALID,
                "export writer: checkpoint tree size is not decimal");
    for (size_t i = 0; i < lens[1]; i++) {
        char c = lines[1][i];
        BASE_ENSURE(c >= '0' && c <= '9', BASE_ERR_INVALID,
                    "export writer: checkpoint tree size is not decimal");
        unsigned d = (unsigned)(c - '0');
        BASE_ENSURE(size <= (UINT64_MAX - d) / 10, BASE_ERR_INVALID,
                    "export writer: checkpoint tree size does not fit in 64 bits");
        size = size * 10 + d;
    }
    BASE_ENSURE(size <= (uint64_t)INT64_MAX, BASE_ERR_INVALID,
                "export writer: checkpoint tree size is 2^63 or more");
    uint8_t buf[HL + 2];
    size_t root_len = 0;
    BASE_ENSURE(lens[2] == 44 &&
                    base_is_ok(acrypto_base64_decode(lines[2], lens[2], buf, sizeof buf, &root_len)) &&
                    root_len == HL,
                BASE_ERR_INVALID, "export writer: checkpoint root is not base64 of 32 bytes");
    memcpy(origin, lines[0], lens[0]);
    origin[lens[0]] = '\0';
    memcpy(root, buf, HL);
    *ret_size = size;
    return BASE_OK_RESULT;
}

base_result audit_export_writer_checkpoint(audit_export_writer *w, const char *signed_note, size_t len)
{
    BASE_GUARD(writer_usable(w));
    BASE_ENSURE(signed_note != NULL, BASE_ERR_INVALID, "export writer: checkpoint is NULL");
    BASE_ENSURE(!w->have_checkpoint, BASE_ERR_INVALID, "export writer: checkpoint given twice");
    char origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 1];
    uint64_t size = 0;
    uint8_t root[HL];
    BASE_GUARD(note_body_parse(signed_note, len, origin, &size, root));

    BASE_GUARD(writer_small_file(w, AUDIT_EXPORT_CHECKPOINT_FILE, signed_note, len));
    memcpy(w->origin, origin, sizeof origin);
    w->tree_size = size;
    memcpy(w->root, root, HL);
    w->have_checkpoint = true;
    return BASE_OK_RESULT;
}

/* Appends to the proofs line being built; the caller sized everything below the bound. */
typedef struct line_builder {
    char *buf;
    size_t len;
    size_t cap;
    bool overflow;
} line_builder;

static void lb_add(line_builder *b, const char *s, size_t n)
{
    if (b->overflow || n > b->cap - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void lb_str(line_builder *b, const char *s)
{
    lb_add(b, s, strlen(s));
}

static void lb_hash(line_builder *b, const uint8_t h[HL])
{
    char hex[HEX_LEN + 1];
    hex_hash(h, hex);
    lb_add(b, "\"", 1);
    lb_add(b, hex, HEX_LEN);
    lb_add(b, "\"", 1);
}

static base_result writer_build_proof_line(audit_export_writer *w, uint64_t seq, const char *entry,
                                           size_t entry_len, const uint8_t leaf_hash[HL],
                                           const uint8_t (*proof)[HL], size_t proof_len, size_t *ret_len)
{
    line_builder b = {w->line, 0, AUDIT_EXPORT_PROOF_LINE_MAX, false};
    char num[32];
    int n = snprintf(num, sizeof num, "{\"seq\":%" PRIu64, seq);
    if (n < 0 || (size_t)n >= sizeof num)
        return base_fail(BASE_ERR_INTERNAL, "export writer: formatting seq failed");
    lb_add(&b, num, (size_t)n);
    lb_str(&b, ",\"leaf_hash\":");
    lb_hash(&b, leaf_hash);
    lb_str(&b, ",\"proof\":[");
    for (size_t i = 0; i < proof_len; i++) {
        if (i > 0)
            lb_add(&b, ",", 1);
        lb_hash(&b, proof[i]);
    }
    lb_add(&b, "]", 1);
    if (w->fhir) {
        lb_str(&b, ",\"entry\":\"");
        size_t room = b.cap - b.len;
        size_t need = acrypto_base64_encode_size(entry_len);
        if (b.overflow || need > room)
            b.overflow = true;
        else {
            size_t enc = 0;
            BASE_GUARD(acrypto_base64_encode(entry, entry_len, b.buf + b.len, room, &enc));
            b.len += enc;
        }
        lb_add(&b, "\"", 1);
    }
    lb_add(&b, "}", 1);
    if (b.overflow)
        return base_fail(BASE_ERR_LIMIT, "export writer: proofs line longer than %zu bytes",
                         AUDIT_EXPORT_PROOF_LINE_MAX);
    *ret_len = b.len;
    return BASE_OK_RESULT;
}

base_result audit_export_writer_line(audit_export_writer *w, uint64_t seq, const char *json, size_t json_len,
                                     const char *entry, size_t entry_len, const uint8_t leaf_hash[HL],
                                     const uint8_t (*proof)[HL], size_t proof_len)
{
    BASE_GUARD(writer_usable(w));
    BASE_ENSURE(w->have_checkpoint, BASE_ERR_INVALID, "export writer: the checkpoint must come first");
    BASE_ENSURE(!w->leaves_closed, BASE_ERR_INVALID, "export writer: a line after the statement");
    BASE_ENSURE(json && entry && leaf_hash && (proof || proof_len == 0), BASE_ERR_INVALID,
                "audit_export_writer_line: NULL argument");
    BASE_ENSURE(!w->have_seq || seq > w->last_seq, BASE_ERR_INVALID,
                "export writer: seq is not above the previous line's");
    BASE_ENSURE(seq < w->tree_size, BASE_ERR_INVALID,
                "export writer: seq is not below the checkpoint's tree size");
    BASE_ENSURE(entry_len > 0 && entry_len <= AUDIT_ENTRY_MAX, BASE_ERR_INVALID,
                "export writer: entry is empty or larger than 65536 bytes");
    size_t json_max = w->fhir ? AUDIT_EXPORT_FHIR_LINE_MAX : AUDIT_ENTRY_MAX;
    BASE_ENSURE(json_len > 0 && json_len <= json_max, BASE_ERR_INVALID,
                "export writer: json line is empty or longer than its bound");
    BASE_ENSURE(!memchr(json, '\n', json_len) && !memchr(json, '\0', json_len), BASE_ERR_INVALID,
                "export writer: json line holds a newline or NUL byte");
    BASE_ENSURE(w->fhir || (json_len == entry_len && memcmp(json, entry, json_len) == 0), BASE_ERR_INVALID,
                "export writer: for jsonl content the json line must be the entry");
    BASE_ENSURE(proof_len <= AUDIT_MERKLE_MAX_PROOF, BASE_ERR_INVALID,
                "export writer: proof has more than 64 hashes");

    uint8_t computed[HL];
    BASE_GUARD(audit_merkle_leaf_hash(entry, entry_len, computed));
    BASE_ENSURE(memcmp(computed, leaf_hash, HL) == 0, BASE_ERR_INVALID,
                "export writer: leaf_hash is not SHA-256(0x00 || entry)");
    base_result r = audit_export_check_entry(entry, entry_len, seq, w->tenant);
    if (!base_is_ok(r)) {
        char why[128]; /* base_fail's format must not read the message it replaces */
        snprintf(why, sizeof why, "%s", base_error_message());
        return base_fail(BASE_ERR_INVALID, "export writer: %s", why);
    }
    if (w->fhir) {
        char *fhir = NULL;
        size_t fhir_len = 0;
        r = audit_entry_to_fhir(entry, entry_len, &fhir, &fhir_len);
        if (!base_is_ok(r))
            return base_fail(BASE_ERR_INVALID, "export writer: entry is not a valid version-1 entry");
        bool same = fhir_len == json_len && memcmp(fhir, json, json_len) == 0;
        free(fhir);
        BASE_ENSURE(same, BASE_ERR_INVALID, "export writer: json line is not audit_entry_to_fhir(entry)");
    }
    r = audit_merkle_verify_inclusion(seq, w->tree_size, leaf_hash, proof, proof_len, w->root);
    if (!base_is_ok(r))
        return base_fail(BASE_ERR_INVALID,
                         "export writer: inclusion proof does not verify against the checkpoint");

    size_t line_len = 0;
    BASE_GUARD(writer_build_proof_line(w, seq, entry, entry_len, leaf_hash, proof, proof_len, &line_len));
    w->line[line_len++] = '\n';

    errno = 0;
    if (fwrite(json, 1, json_len, w->events) != json_len || putc('\n', w->events) == EOF)
        return writer_io_fail(w, w->events_name, errno ? errno : EIO);
    if (fwrite(w->line, 1, line_len, w->proofs) != line_len)
        return writer_io_fail(w, AUDIT_EXPORT_PROOFS_FILE, errno ? errno : EIO);
    if (!base_is_ok(acrypto_sha256_update(w->leaves, leaf_hash, HL))) {
        w->broken = true; /* the line is written but not hashed: the statement could not be checked */
        return base_fail(BASE_ERR_INTERNAL, "export writer: hashing the leaf hash failed");
    }
    w->have_seq = true;
    w->last_seq = seq;
    w->count++;
    return BASE_OK_RESULT;
}

base_result audit_export_writer_statement(audit_export_writer *w, const char *signed_note, size_t len)
{
    BASE_GUARD(writer_usable(w));
    BASE_ENSURE(signed_note != NULL, BASE_ERR_INVALID, "export writer: statement is NULL");
    BASE_ENSURE(w->have_checkpoint, BASE_ERR_INVALID, "export writer: the checkpoint must come first");
    BASE_ENSURE(!w->have_statement, BASE_ERR_INVALID, "export writer: statement given twice");
    size_t text_len = 0;
    BASE_GUARD(note_text_len(signed_note, len, "statement", &text_len));
    audit_export_statement st;
    base_result r = audit_export_statement_parse(signed_note, text_len, &st);
    if (!base_is_ok(r)) {
        char why[160]; /* base_fail's format must not read the message it replaces */
        snprintf(why, sizeof why, "%s", base_error_message());
        return base_fail(BASE_ERR_INVALID, "export writer: %s", why);
    }
    if (!w->leaves_closed) {
        BASE_GUARD(acrypto_sha256_final(w->leaves, w->leaves_digest));
        w->leaves_closed = true;
    }
    BASE_ENSURE(strcmp(st.origin, w->origin) == 0, BASE_ERR_INVALID,
                "export writer: the statement's origin is not the checkpoint's");
    BASE_ENSURE(st.tree_size == w->tree_size, BASE_ERR_INVALID,
                "export writer: the statement's tree size is not the checkpoint's");
    BASE_ENSURE(strcmp(st.tenant_id, w->tenant) == 0, BASE_ERR_INVALID,
                "export writer: the statement's tenant is not the export's");
    BASE_ENSURE(st.fhir == w->fhir, BASE_ERR_INVALID,
                "export writer: the statement's format is not the export's content");
    BASE_ENSURE(st.count == w->count, BASE_ERR_INVALID,
                "export writer: the statement's count is not the number of lines written");
    BASE_ENSURE(memcmp(st.leaves, w->leaves_digest, HL) == 0, BASE_ERR_INVALID,
                "export writer: the statement's leaves digest is not that of the lines written");
    json_error_t jerr;
    json_t *filter = json_loadb(st.filter, st.filter_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!filter)
        return base_fail(BASE_ERR_NOMEM, "export writer: out of memory reading the statement's filter");
    r = writer_small_file(w, AUDIT_EXPORT_STATEMENT_FILE, signed_note, len);
    if (!base_is_ok(r)) {
        json_decref(filter);
        return r;
    }
    w->statement_filter = filter;
    w->have_statement = true;
    return BASE_OK_RESULT;
}

base_result audit_export_writer_set_filter(audit_export_writer *w, const char *filter_json)
{
    BASE_GUARD(writer_usable(w));
    json_t *f = NULL;
    if (filter_json) {
        size_t n = strnlen(filter_json, AUDIT_EXPORT_FILTER_MAX + 1);
        BASE_ENSURE(n <= AUDIT_EXPORT_FILTER_MAX, BASE_ERR_INVALID,
                    "export writer: filter is larger than 65536 bytes");
        json_error_t jerr;
        f = json_loadb(filter_json, n, JSON_REJECT_DUPLICATES, &jerr);
        if (!f || !json_is_object(f)) {
            if (f)
                json_decref(f);
            return base_fail(BASE_ERR_INVALID, "export writer: filter is not a JSON object");
        }
    }
    if (w->filter)
        json_decref(w->filter);
    w->filter = f;
    return BASE_OK_RESULT;
}

static base_result writer_close_file(audit_export_writer *w, FILE **f, const char *name)
{
    FILE *file = *f;
    *f = NULL;
    errno = 0;
    if (fflush(file) != 0 || ferror(file)) {
        int e = errno ? errno : EIO;
        fclose(file);
        return writer_io_fail(w, name, e);
    }
    if (fsync(fileno(file)) != 0) {
        int e = errno;
        fclose(file);
        return writer_io_fail(w, name, e);
    }
    if (fclose(file) != 0)
        return writer_io_fail(w, name, errno);
    return BASE_OK_RESULT;
}

static base_result writer_manifest_text(const audit_export_writer *w, char **ret, size_t *ret_len)
{
    char root_hex[HEX_LEN + 1];
    hex_hash(w->root, root_hex);
    char created[AUDIT_EXPORT_CREATED_LEN + 1];
    struct timespec now;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0 || !gmtime_r(&now.tv_sec, &tm) ||
        strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm) != AUDIT_EXPORT_CREATED_LEN)
        return base_fail(BASE_ERR_INTERNAL, "export writer: cannot format the current time");
    json_t *filter = w->statement_filter ? json_incref(w->statement_filter)
                     : w->filter         ? json_incref(w->filter)
                                         : json_object();
    /* "o" consumes filter, also on failure. Members keep this order (no JSON_SORT_KEYS). */
    BASE_CLEANUP(export_json_decref)
    json_t *m = json_pack("{s:s,s:i,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:o}", "format", AUDIT_EXPORT_FORMAT,
                          "version", AUDIT_EXPORT_VERSION, "content",
                          w->fhir ? AUDIT_EXPORT_CONTENT_FHIR : AUDIT_EXPORT_CONTENT_JSONL, "tenant_id",
                          w->tenant, "count", (json_int_t)w->count, "tree_size", (json_int_t)w->tree_size,
                          "root_hash", root_hex, "origin", w->origin, "created", created, "filter", filter);
    if (!m)
        return base_fail(BASE_ERR_NOMEM, "export writer: cannot build the manifest");
    char *text = json_dumps(m, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!text)
        return base_fail(BASE_ERR_NOMEM, "export writer: cannot build the manifest");
    size_t n = strlen(text);
    char *out = realloc(text, n + 2);
    if (!out) {
        free(text);
        return base_fail(BASE_ERR_NOMEM, "export writer: cannot build the manifest");
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    *ret = out;
    *ret_len = n + 1;
    return BASE_OK_RESULT;
}

base_result audit_export_writer_finish(audit_export_writer *w)
{
    BASE_GUARD(writer_usable(w));
    BASE_ENSURE(w->have_checkpoint, BASE_ERR_INVALID, "export writer: finish without a checkpoint");
    BASE_ENSURE(w->have_statement, BASE_ERR_INVALID, "export writer: finish without the export statement");
    char *text = NULL;
    size_t len = 0;
    BASE_GUARD(writer_manifest_text(w, &text, &len));

    base_result r = writer_close_file(w, &w->events, w->events_name);
    if (base_is_ok(r))
        r = writer_close_file(w, &w->proofs, AUDIT_EXPORT_PROOFS_FILE);
    if (!base_is_ok(r)) {
        free(text);
        return r;
    }

    int fd = openat(w->dirfd, AUDIT_EXPORT_MANIFEST_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY,
                    0600);
    if (fd < 0) {
        free(text);
        return writer_io_fail(w, AUDIT_EXPORT_MANIFEST_TMP, errno);
    }
    r = write_all(fd, text, len, w->dir, AUDIT_EXPORT_MANIFEST_TMP);
    free(text);
    if (base_is_ok(r) && fsync(fd) != 0)
        r = writer_io_fail(w, AUDIT_EXPORT_MANIFEST_TMP, errno);
    if (close(fd) != 0 && base_is_ok(r))
        r = writer_io_fail(w, AUDIT_EXPORT_MANIFEST_TMP, errno);
    if (base_is_ok(r) &&
        renameat(w->dirfd, AUDIT_EXPORT_MANIFEST_TMP, w->dirfd, AUDIT_EXPORT_MANIFEST_FILE) != 0)
        r = writer_io_fail(w, AUDIT_EXPORT_MANIFEST_FILE, errno);
    if (base_is_ok(r) && fsync(w->dirfd) != 0)
        r = base_fail(BASE_ERR_IO, "export: fsync of %.*s failed: %s", PATH_SHOWN, w->dir, strerror(errno));
    if (!base_is_ok(r)) {
        w->broken = true;
        return r;
    }
    w->finished = true;
    return BASE_OK_RESULT;
}

/* ---------------------------------------------------------------------------------------------------------
 * Reader. */

/* Lines of one file, read in chunks into one buffer: a line is returned in place, and never longer than
 * max bytes, so memory is max + READ_CHUNK whatever the file. */
typedef struct line_reader {
    int fd;
    const char *name;
    size_t max;
    char *buf;
    size_t cap, start, end, scanned;
    bool eof;
} line_reader;

static base_result line_reader_open(int dirfd, const char *dir, const char *name, size_t max, line_reader *l)
{
    l->fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (l->fd < 0)
        return base_fail(BASE_ERR_IO, "export: cannot open %.*s/%s: %s", PATH_SHOWN, dir, name,
                         strerror(errno));
    l->name = name;
    l->max = max;
    l->cap = max + 1 + READ_CHUNK;
    l->buf = malloc(l->cap);
    if (!l->buf)
        return base_fail(BASE_ERR_NOMEM, "export: out of memory reading %s", name);
    return BASE_OK_RESULT;
}

static void line_reader_close(line_reader *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    free(l->buf);
    l->buf = NULL;
}

/* The next line without its "\n" (*ret_eof = false), or *ret_eof = true at the end of the file. */
static base_result line_reader_next(line_reader *l, const char **ret_line, size_t *ret_len, bool *ret_eof)
{
    for (;;) {
        char *nl = memchr(l->buf + l->scanned, '\n', l->end - l->scanned);
        if (nl) {
            const char *line = l->buf + l->start;
            size_t len = (size_t)(nl - line);
            l->start = l->scanned = (size_t)(nl - l->buf) + 1;
            if (len > l->max)
                return base_fail(BASE_ERR_INVALID, "%s: line longer than %zu bytes", l->name, l->max);
            *ret_line = line;
            *ret_len = len;
            *ret_eof = false;
            return BASE_OK_RESULT;
        }
        l->scanned = l->end;
        if (l->end - l->start > l->max)
            return base_fail(BASE_ERR_INVALID, "%s: line longer than %zu bytes", l->name, l->max);
        if (l->eof) {
            if (l->end > l->start)
                return base_fail(BASE_ERR_INVALID, "%s: last line has no newline (truncated file?)", l->name);
            *ret_eof = true;
            return BASE_OK_RESULT;
        }
        if (l->start > 0) {
            memmove(l->buf, l->buf + l->start, l->end - l->start);
            l->end -= l->start;
            l->scanned -= l->start;
            l->start = 0;
        }
        ssize_t n = read(l->fd, l->buf + l->end, l->cap - l->end);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return base_fail(BASE_ERR_IO, "export: reading %s failed: %s", l->name, strerror(errno));
        if (n == 0)
            l->eof = true;
        else
            l->end += (size_t)n;
    }
}

struct audit_export_reader {
    char *dir;
    int dirfd;
    audit_export_manifest manifest;
    char *filter; /* the manifest's filter, canonical */
    char *checkpoint;
    size_t checkpoint_len;
    char *statement;
    size_t statement_len;
    const char *events_name;
    line_reader events;
    line_reader proofs;
    uint64_t line;
    bool have_seq;
    uint64_t seq;
    bool done;
    char *entry_buf; /* decoded "entry" of fhir content: AUDIT_ENTRY_MAX + 3 bytes */
    audit_export_record rec;
};

void audit_export_reader_free(audit_export_reader *r)
{
    if (!r)
        return;
    line_reader_close(&r->events);
    line_reader_close(&r->proofs);
    if (r->dirfd >= 0)
        close(r->dirfd);
    free(r->filter);
    free(r->checkpoint);
    free(r->statement);
    free(r->entry_buf);
    free(r->dir);
    free(r);
}

void audit_export_reader_freep(audit_export_reader **r)
{
    if (r) {
        audit_export_reader_free(*r);
        *r = NULL;
    }
}

const audit_export_manifest *audit_export_reader_manifest(const audit_export_reader *r)
{
    return &r->manifest;
}

const char *audit_export_reader_filter(const audit_export_reader *r)
{
    return r->filter;
}

const char *audit_export_reader_checkpoint(const audit_export_reader *r, size_t *ret_len)
{
    *ret_len = r->checkpoint_len;
    return r->checkpoint;
}

const char *audit_export_reader_statement(const audit_export_reader *r, size_t *ret_len)
{
    *ret_len = r->statement_len;
    return r->statement;
}

uint64_t audit_export_reader_line(const audit_export_reader *r)
{
    return r->line;
}

bool audit_export_reader_seq(const audit_export_reader *r, uint64_t *ret_seq)
{
    if (r->have_seq)
        *ret_seq = r->seq;
    return r->have_seq;
}

const char *audit_export_reader_events_name(const audit_export_reader *r)
{
    return r->events_name;
}

static base_result manifest_uint(const json_t *m, const char *key, uint64_t *ret)
{
    const json_t *v = json_object_get(m, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return base_fail(BASE_ERR_INVALID, "manifest.json: \"%s\" is not a non-negative integer", key);
    *ret = (uint64_t)json_integer_value(v);
    return BASE_OK_RESULT;
}

static base_result manifest_string(const json_t *m, const char *key, const char **ret, size_t *ret_len)
{
    const json_t *v = json_object_get(m, key);
    if (!json_is_string(v))
        return base_fail(BASE_ERR_INVALID, "manifest.json: \"%s\" is not a string", key);
    *ret = json_string_value(v);
    *ret_len = json_string_length(v);
    return BASE_OK_RESULT;
}

static base_result manifest_parse(const char *text, size_t len, audit_export_manifest *out, char **ret_filter)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    BASE_CLEANUP(export_json_decref) json_t *m = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!m || !json_is_object(m))
        return base_fail(BASE_ERR_INVALID, "manifest.json: not a JSON object");
    const char *s = NULL;
    size_t n = 0;
    BASE_GUARD(manifest_string(m, "format", &s, &n));
    BASE_ENSURE(strcmp(s, AUDIT_EXPORT_FORMAT) == 0, BASE_ERR_INVALID,
                "manifest.json: \"format\" is not \"" AUDIT_EXPORT_FORMAT "\"");
    const json_t *v = json_object_get(m, "version");
    if (!json_is_integer(v) || json_integer_value(v) != AUDIT_EXPORT_VERSION)
        return base_fail(BASE_ERR_INVALID,
                         "manifest.json: \"version\" is not %d (the only version this reads)",
                         AUDIT_EXPORT_VERSION);
    BASE_GUARD(manifest_string(m, "content", &s, &n));
    if (strcmp(s, AUDIT_EXPORT_CONTENT_FHIR) == 0)
        out->fhir = true;
    else if (strcmp(s, AUDIT_EXPORT_CONTENT_JSONL) != 0)
        return base_fail(BASE_ERR_INVALID, "manifest.json: \"content\" is not \"jsonl\" or \"fhir-ndjson\"");
    BASE_GUARD(manifest_string(m, "tenant_id", &s, &n));
    BASE_ENSURE(n == strlen(s) && audit_export_tenant_ok(s), BASE_ERR_INVALID,
                "manifest.json: \"tenant_id\" is not 1 to 64 of [A-Za-z0-9._:-]");
    memcpy(out->tenant_id, s, n + 1);
    BASE_GUARD(manifest_uint(m, "count", &out->count));
    BASE_GUARD(manifest_uint(m, "tree_size", &out->tree_size));
    BASE_GUARD(manifest_string(m, "root_hash", &s, &n));
    BASE_ENSURE(hex_hash_parse(s, n, out->root), BASE_ERR_INVALID,
                "manifest.json: \"root_hash\" is not 64 lowercase hex digits");
    BASE_GUARD(manifest_string(m, "origin", &s, &n));
    BASE_ENSURE(n > 0 && n <= AUDIT_CHECKPOINT_ORIGIN_MAX && line_text_ok(s, n), BASE_ERR_INVALID,
                "manifest.json: \"origin\" is not a checkpoint origin");
    memcpy(out->origin, s, n + 1);
    BASE_GUARD(manifest_string(m, "created", &s, &n));
    BASE_ENSURE(n < sizeof out->created, BASE_ERR_INVALID, "manifest.json: \"created\" is too long");
    for (size_t i = 0; i < n; i++)
        BASE_ENSURE(s[i] >= 0x20 && s[i] < 0x7f, BASE_ERR_INVALID,
                    "manifest.json: \"created\" is not printable ASCII");
    memcpy(out->created, s, n + 1);
    const json_t *filter = json_object_get(m, "filter");
    BASE_ENSURE(json_is_object(filter), BASE_ERR_INVALID, "manifest.json: \"filter\" is not an object");
    char *canonical = json_dumps(filter, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!canonical)
        return base_fail(BASE_ERR_NOMEM, "manifest.json: out of memory");
    *ret_filter = canonical;
    return BASE_OK_RESULT;
}

base_result audit_export_reader_open(const char *dir, audit_export_reader **ret)
{
    if (!dir || !dir[0] || !ret)
        return base_fail(BASE_ERR_INVALID, "audit_export_reader_open: NULL or empty argument");
    BASE_CLEANUP(audit_export_reader_freep) audit_export_reader *r = calloc(1, sizeof *r);
    if (!r)
        return base_fail(BASE_ERR_NOMEM, "export reader: out of memory");
    r->dirfd = -1;
    r->events.fd = -1;
    r->proofs.fd = -1;
    r->dir = strdup(dir);
    if (!r->dir)
        return base_fail(BASE_ERR_NOMEM, "export reader: out of memory");
    r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->dirfd < 0)
        return base_fail(BASE_ERR_IO, "export: cannot open the directory %.*s: %s", PATH_SHOWN, dir,
                         strerror(errno));

    char *text = NULL;
    size_t len = 0;
    base_result res =
        read_small_file(r->dirfd, dir, AUDIT_EXPORT_MANIFEST_FILE, AUDIT_EXPORT_MANIFEST_MAX, &text, &len);
    if (res.err == BASE_ERR_NOT_FOUND)
        return base_fail(BASE_ERR_NOT_FOUND, "incomplete export: no manifest.json");
    BASE_GUARD(res);
    res = manifest_parse(text, len, &r->manifest, &r->filter);
    free(text);
    BASE_GUARD(res);

    res = read_small_file(r->dirfd, dir, AUDIT_EXPORT_CHECKPOINT_FILE, AUDIT_NOTE_MAX_LEN, &r->checkpoint,
                          &r->checkpoint_len);
    if (res.err == BASE_ERR_NOT_FOUND)
        return base_fail(BASE_ERR_IO, "export: %.*s has no checkpoint file", PATH_SHOWN, dir);
    BASE_GUARD(res);
    res = read_small_file(r->dirfd, dir, AUDIT_EXPORT_STATEMENT_FILE, AUDIT_NOTE_MAX_LEN, &r->statement,
                          &r->statement_len);
    if (res.err == BASE_ERR_NOT_FOUND)
        return base_fail(BASE_ERR_NOT_FOUND, "incomplete export: no statement");
    BASE_GUARD(res);

    r->events_name = r->manifest.fhir ? AUDIT_EXPORT_EVENTS_NDJSON : AUDIT_EXPORT_EVENTS_JSONL;
    BASE_GUARD(line_reader_open(r->dirfd, dir, r->events_name,
                                r->manifest.fhir ? AUDIT_EXPORT_FHIR_LINE_MAX : AUDIT_ENTRY_MAX, &r->events));
    BASE_GUARD(
        line_reader_open(r->dirfd, dir, AUDIT_EXPORT_PROOFS_FILE, AUDIT_EXPORT_PROOF_LINE_MAX, &r->proofs));
    if (r->manifest.fhir) {
        r->entry_buf = malloc(AUDIT_ENTRY_MAX + 3);
        if (!r->entry_buf)
            return base_fail(BASE_ERR_NOMEM, "export reader: out of memory");
    }
    *ret = r;
    r = NULL;
    return BASE_OK_RESULT;
}

/* A cursor over one proofs line. The line has exactly the bytes the writer produces (export_file.h): this is
 * checked byte by byte rather than with a general JSON parser, which would also accept other spellings of the
 * same object (whitespace, escapes, key order, duplicate keys) and is several times slower on lines that are
 * mostly hex. */
typedef struct proof_cursor {
    const char *p;
    const char *end;
} proof_cursor;

static bool pc_lit(proof_cursor *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* "<64 lowercase hex>" */
static bool pc_hash(proof_cursor *c, uint8_t out[HL])
{
    if ((size_t)(c->end - c->p) < HEX_LEN + 2 || c->p[0] != '"' || c->p[HEX_LEN + 1] != '"' ||
        !hex_hash_parse(c->p + 1, HEX_LEN, out))
        return false;
    c->p += HEX_LEN + 2;
    return true;
}

/* Decimal without sign or leading zeros, below 2^63. */
static bool pc_seq(proof_cursor *c, uint64_t *ret)
{
    const char *start = c->p;
    uint64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        c->p++;
    }
    size_t n = (size_t)(c->p - start);
    if (n == 0 || (start[0] == '0' && n > 1))
        return false;
    *ret = v;
    return true;
}

static base_result proof_line_parse(audit_export_reader *r, const char *line, size_t len)
{
    audit_export_record *rec = &r->rec;
    proof_cursor c = {line, line + len};
    if (!pc_lit(&c, "{\"seq\":"))
        return base_fail(BASE_ERR_INVALID, "proofs.jsonl: line does not start with {\"seq\":");
    if (!pc_seq(&c, &rec->seq))
        return base_fail(BASE_ERR_INVALID, "proofs.jsonl: \"seq\" is not a decimal integer below 2^63");
    r->seq = rec->seq;
    r->have_seq = true;
    if (!pc_lit(&c, ",\"leaf_hash\":"))
        return base_fail(BASE_ERR_INVALID,
                         "proofs.jsonl: unexpected key or order after \"seq\" (want \"leaf_hash\")");
    if (!pc_hash(&c, rec->leaf_hash))
        return base_fail(BASE_ERR_INVALID, "proofs.jsonl: \"leaf_hash\" is not 64 lowercase hex digits");
    if (!pc_lit(&c, ",\"proof\":["))
        return base_fail(BASE_ERR_INVALID,
                         "proofs.jsonl: unexpected key or order after \"leaf_hash\" (want \"proof\")");
    rec->proof_len = 0;
    if (!pc_lit(&c, "]")) {
        for (;;) {
            if (rec->proof_len == AUDIT_MERKLE_MAX_PROOF || !pc_hash(&c, rec->proof[rec->proof_len]))
                return base_fail(
                    BASE_ERR_INVALID,
                    "proofs.jsonl: \"proof\" is not an array of at most 64 hashes of 64 lowercase "
                    "hex digits");
            rec->proof_len++;
            if (pc_lit(&c, "]"))
                break;
            if (!pc_lit(&c, ","))
                return base_fail(
                    BASE_ERR_INVALID,
                    "proofs.jsonl: \"proof\" is not an array of at most 64 hashes of 64 lowercase "
                    "hex digits");
        }
    }
    if (r->manifest.fhir) {
        if (!pc_lit(&c, ",\"entry\":\""))
            return base_fail(BASE_ERR_INVALID,
                             "proofs.jsonl: \"entry\" missing after \"proof\" (fhir-ndjson content)");
        const char *b64 = c.p;
        const char *q = memchr(b64, '"', (size_t)(c.end - b64));
        size_t n = q ? (size_t)(q - b64) : 0;
        size_t out = 0;
        if (!q || n == 0 || n > ENTRY_B64_MAX ||
            !base_is_ok(acrypto_base64_decode(b64, n, r->entry_buf, AUDIT_ENTRY_MAX + 3, &out)) || out == 0 ||
            out > AUDIT_ENTRY_MAX)
            return base_fail(BASE_ERR_INVALID, "proofs.jsonl: \"entry\" is not base64 of 1 to 65536 bytes");
        c.p = q + 1;
        r->entry_buf[out] = '\0';
        rec->entry = r->entry_buf;
        rec->entry_len = out;
    }
    if (!pc_lit(&c, "}") || c.p != c.end)
        return base_fail(BASE_ERR_INVALID, "proofs.jsonl: unexpected key or data after \"%s\"",
                         r->manifest.fhir ? "entry" : "proof");
    return BASE_OK_RESULT;
}

base_result audit_export_reader_next(audit_export_reader *r, const audit_export_record **ret_rec,
                                     bool *ret_done)
{
    if (!r || !ret_rec || !ret_done)
        return base_fail(BASE_ERR_INVALID, "audit_export_reader_next: NULL argument");
    if (r->done) {
        *ret_done = true;
        return BASE_OK_RESULT;
    }
    r->line++;
    r->have_seq = false;
    const char *ev = NULL, *pr = NULL;
    size_t ev_len = 0, pr_len = 0;
    bool ev_eof = false, pr_eof = false;
    BASE_GUARD(line_reader_next(&r->proofs, &pr, &pr_len, &pr_eof));
    BASE_GUARD(line_reader_next(&r->events, &ev, &ev_len, &ev_eof));
    if (ev_eof && pr_eof) {
        r->line--;
        r->done = true;
        *ret_done = true;
        return BASE_OK_RESULT;
    }
    if (ev_eof)
        return base_fail(BASE_ERR_INVALID, "proofs.jsonl has more lines than %s", r->events_name);
    if (pr_eof)
        return base_fail(BASE_ERR_INVALID, "%s has more lines than proofs.jsonl", r->events_name);

    audit_export_record *rec = &r->rec;
    rec->line = r->line;
    BASE_GUARD(proof_line_parse(r, pr, pr_len));
    if (ev_len == 0)
        return base_fail(BASE_ERR_INVALID, "%s: empty line", r->events_name);
    rec->json = ev;
    rec->json_len = ev_len;
    if (!r->manifest.fhir) {
        rec->entry = ev;
        rec->entry_len = ev_len;
    }
    *ret_rec = rec;
    *ret_done = false;
    return BASE_OK_RESULT;
}
