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
    json_t *filter; /* NULL: {} */
    char *line;     /* the proofs line being built: AUDIT_EXPORT_PROOF_LINE_MAX + 2 bytes */
    bool broken;    /* an IO error: a file may hold part of a line */
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

/* The checkpoint body of a signed note, without checking its signatures: the text ends at the last blank
 * line; its first three lines are origin, decimal size and base64 root (checkpoint.h). */
static base_result note_body_parse(const char *note, size_t len, char origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 1],
                                   uint64_t *ret_size, uint8_t root[HL])
{
    BASE_ENSURE(len >= 2 && len <= AUDIT_NOTE_MAX_LEN, BASE_ERR_INVALID,
                "export writer: checkpoint is empty or larger than 1 MiB");
    BASE_ENSURE(memchr(note, '\0', len) == NULL && note[len - 1] == '\n', BASE_ERR_INVALID,
                "export writer: checkpoint is not a signed note (NUL byte, or no final newline)");
    size_t split = len;
    for (size_t i = len - 1; i-- > 0;) {
        if (note[i] == '\n' && note[i + 1] == '\n') {
            split = i;
            break;
        }
    }
    BASE_ENSURE(split != len && split + 2 < len, BASE_ERR_INVALID,
                "export writer: checkpoint is not a signed note (no signature after a blank line)");
    size_t text_len = split + 1, pos = 0;
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

    int fd = openat(w->dirfd, AUDIT_EXPORT_CHECKPOINT_FILE,
                    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return writer_io_fail(w, AUDIT_EXPORT_CHECKPOINT_FILE, errno);
    base_result r = write_all(fd, signed_note, len, w->dir, AUDIT_EXPORT_CHECKPOINT_FILE);
    if (base_is_ok(r) && fsync(fd) != 0)
        r = base_fail(BASE_ERR_IO, "export: fsync of %.*s/%s failed: %s", PATH_SHOWN, w->dir,
                      AUDIT_EXPORT_CHECKPOINT_FILE, strerror(errno));
    if (close(fd) != 0 && base_is_ok(r))
        r = base_fail(BASE_ERR_IO, "export: closing %.*s/%s failed: %s", PATH_SHOWN, w->dir,
                      AUDIT_EXPORT_CHECKPOINT_FILE, strerror(errno));
    if (!base_is_ok(r)) {
        w->broken = true;
        return r;
    }
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
    w->have_seq = true;
    w->last_seq = seq;
    w->count++;
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
    json_t *filter = w->filter ? json_incref(w->filter) : json_object();
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
    char *checkpoint;
    size_t checkpoint_len;
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
    free(r->checkpoint);
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

const char *audit_export_reader_checkpoint(const audit_export_reader *r, size_t *ret_len)
{
    *ret_len = r->checkpoint_len;
    return r->checkpoint;
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

static base_result manifest_parse(const char *text, size_t len, audit_export_manifest *out)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    BASE_CLEANUP(export_json_decref) json_t *m = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!m || !json_is_object(m))
        return base_fail(BASE_ERR_INVALID, "manifest.json: not a JSON object");
    const char *s;
    size_t n;
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
    BASE_ENSURE(json_is_object(json_object_get(m, "filter")), BASE_ERR_INVALID,
                "manifest.json: \"filter\" is not an object");
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
    res = manifest_parse(text, len, &r->manifest);
    free(text);
    BASE_GUARD(res);

    res = read_small_file(r->dirfd, dir, AUDIT_EXPORT_CHECKPOINT_FILE, AUDIT_NOTE_MAX_LEN, &r->checkpoint,
                          &r->checkpoint_len);
    if (res.err == BASE_ERR_NOT_FOUND)
        return base_fail(BASE_ERR_IO, "export: %.*s has no checkpoint file", PATH_SHOWN, dir);
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
