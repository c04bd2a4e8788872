/* alma-audit verify (verify_tool.h). */
#include "verify_tool.h"

#include "crypto/crypto.h"
#include "entry.h"
#include "merkle.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VERIFY_PROGRAM           "alma-audit verify"
#define VERIFY_PROGRESS_INTERVAL 1000 /* ms between progress lines */
#define VERIFY_VKEY_FILE_MAX     4096 /* a verifier key file, whitespace included */
#define VERIFY_MESSAGE_MAX       (AUDIT_VERIFY_PROBLEM_MAX + 64)

static void verifier_freep(audit_note_verifier **v)
{
    audit_note_verifier_freep(v);
}

static void sha256_freep(acrypto_sha256_ctx **c)
{
    acrypto_sha256_ctx_freep(c);
}

static void text_freep(char **p)
{
    free(*p);
    *p = NULL;
}

#define VERIFY_STATEMENT_MISMATCH                                                                            \
    "the export statement does not match the exported lines (lines deleted, added or reordered)"

static int64_t verify_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hex32(const uint8_t h[AUDIT_MERKLE_HASH_LEN], char out[2 * AUDIT_MERKLE_HASH_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < AUDIT_MERKLE_HASH_LEN; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 0x0f];
    }
    out[2 * AUDIT_MERKLE_HASH_LEN] = '\0';
}

/* Record the problem (a fixed text) at a line and return BASE_ERR_CRYPTO with "line L (seq S): problem". */
static base_result verify_fail(audit_verify_export_report *report, uint64_t line, bool has_seq, uint64_t seq,
                               const char *problem)
{
    report->line = line;
    report->has_seq = has_seq;
    report->seq = has_seq ? seq : 0;
    snprintf(report->problem, sizeof report->problem, "%s", problem);
    if (line == 0)
        return base_fail(BASE_ERR_CRYPTO, "%s", report->problem);
    if (!has_seq)
        return base_fail(BASE_ERR_CRYPTO, "line %" PRIu64 ": %s", line, report->problem);
    return base_fail(BASE_ERR_CRYPTO, "line %" PRIu64 " (seq %" PRIu64 "): %s", line, seq, report->problem);
}

/* The same with the message of the last failure as the problem (messages of this module and of
 * export_file.c are fixed texts). */
static base_result verify_fail_last(audit_verify_export_report *report, uint64_t line, bool has_seq,
                                    uint64_t seq)
{
    char problem[AUDIT_VERIFY_PROBLEM_MAX];
    snprintf(problem, sizeof problem, "%s", base_error_message());
    return verify_fail(report, line, has_seq, seq, problem);
}

static void verify_progress(FILE *progress, uint64_t done, uint64_t total)
{
    double pct = total ? 100.0 * (double)done / (double)total : 100.0;
    fprintf(progress, "verified %" PRIu64 " of %" PRIu64 " events (%u%%)\n", done, total, (unsigned)pct);
    fflush(progress);
}

/* One line's checks after the reader parsed it. */
static base_result verify_record(const audit_export_record *rec, const audit_checkpoint *cp,
                                 const audit_export_manifest *m, bool have_prev, uint64_t prev_seq,
                                 audit_verify_export_report *report)
{
    const uint64_t line = rec->line, seq = rec->seq;
    if (have_prev && seq <= prev_seq)
        return verify_fail(report, line, true, seq,
                           "seq is not above the previous line's (lines reordered or repeated)");
    if (seq >= cp->size)
        return verify_fail(report, line, true, seq, "seq is not below the checkpoint's tree size");

    uint8_t leaf[AUDIT_MERKLE_HASH_LEN];
    BASE_GUARD(audit_merkle_leaf_hash(rec->entry, rec->entry_len, leaf));
    if (!acrypto_equal(leaf, rec->leaf_hash, sizeof leaf))
        return verify_fail(report, line, true, seq,
                           m->fhir ? "the entry does not match its leaf_hash (entry altered?)"
                                   : "the event does not match its leaf_hash (event altered?)");

    base_result r = audit_export_check_entry(rec->entry, rec->entry_len, seq, m->tenant_id);
    if (!base_is_ok(r))
        return verify_fail_last(report, line, true, seq);

    if (m->fhir) {
        char *fhir = NULL;
        size_t fhir_len = 0;
        r = audit_entry_to_fhir(rec->entry, rec->entry_len, &fhir, &fhir_len);
        if (r.err == BASE_ERR_NOMEM)
            return r;
        if (!base_is_ok(r))
            return verify_fail(report, line, true, seq, "the entry is not a valid version-1 audit entry");
        bool same = fhir_len == rec->json_len && memcmp(fhir, rec->json, fhir_len) == 0;
        free(fhir);
        if (!same)
            return verify_fail(report, line, true, seq,
                               "the FHIR AuditEvent is not the one of its entry (FHIR line altered?)");
    }

    r = audit_merkle_verify_inclusion(seq, cp->size, rec->leaf_hash,
                                      (const uint8_t(*)[AUDIT_MERKLE_HASH_LEN])rec->proof, rec->proof_len,
                                      cp->root);
    if (!base_is_ok(r))
        return verify_fail(report, line, true, seq,
                           "the inclusion proof does not verify against the checkpoint");
    return BASE_OK_RESULT;
}

/* The export statement: signed by the checkpoint's key, and naming this export's origin, tree size, tenant,
 * content and filter. Its count and leaves digest are checked once the lines are read. */
static base_result verify_statement(const audit_export_reader *reader, const audit_note_verifier *const *list,
                                    const audit_checkpoint *cp, const audit_export_manifest *m,
                                    audit_export_statement *st, audit_verify_export_report *report)
{
    size_t note_len = 0, text_len = 0;
    const char *note = audit_export_reader_statement(reader, &note_len);
    base_result r = audit_note_open(note, note_len, list, 1, &text_len);
    if (r.err == BASE_ERR_INVALID)
        return verify_fail(report, 0, false, 0, "export statement: not a well-formed signed note");
    if (r.err == BASE_ERR_CRYPTO)
        return verify_fail(report, 0, false, 0,
                           "export statement: the signature does not verify with the given key (wrong key, "
                           "or statement altered)");
    BASE_GUARD(r);
    r = audit_export_statement_parse(note, text_len, st);
    if (r.err == BASE_ERR_INVALID)
        return verify_fail_last(report, 0, false, 0);
    BASE_GUARD(r);
    if (strcmp(st->origin, cp->origin) != 0)
        return verify_fail(report, 0, false, 0, "export statement: origin is not the checkpoint's");
    if (st->tree_size != cp->size)
        return verify_fail(report, 0, false, 0, "export statement: tree size is not the checkpoint's");
    if (strcmp(st->tenant_id, m->tenant_id) != 0)
        return verify_fail(report, 0, false, 0,
                           "export statement: tenant is not the manifest's (a statement of another export?)");
    if (st->fhir != m->fhir)
        return verify_fail(report, 0, false, 0, "export statement: format is not the manifest's content");
    BASE_CLEANUP(text_freep) char *filter = NULL;
    r = audit_export_filter_canonical(st->filter, st->filter_len, &filter);
    if (r.err == BASE_ERR_INVALID)
        return verify_fail_last(report, 0, false, 0);
    BASE_GUARD(r);
    if (strcmp(filter, audit_export_reader_filter(reader)) != 0)
        return verify_fail(report, 0, false, 0, "manifest: filter is not the export statement's");
    report->statement_verified = true;
    return BASE_OK_RESULT;
}

base_result audit_verify_export(const char *dir, const char *vkey, FILE *progress,
                                audit_verify_export_report *report)
{
    if (!report)
        return base_fail(BASE_ERR_INVALID, "audit_verify_export: NULL report");
    memset(report, 0, sizeof *report);
    if (!dir || !vkey)
        return base_fail(BASE_ERR_INVALID, "audit_verify_export: NULL argument");

    BASE_CLEANUP(verifier_freep) audit_note_verifier *verifier = NULL;
    base_result r = audit_note_verifier_new(vkey, &verifier);
    if (!base_is_ok(r)) {
        char why[AUDIT_VERIFY_PROBLEM_MAX];
        snprintf(why, sizeof why, "%s", base_error_message());
        return base_fail(BASE_ERR_INVALID, "the verifier key is not valid: %s", why);
    }

    BASE_CLEANUP(audit_export_reader_freep) audit_export_reader *reader = NULL;
    r = audit_export_reader_open(dir, &reader);
    if (r.err == BASE_ERR_INVALID)
        return verify_fail_last(report, 0, false, 0);
    BASE_GUARD(r);
    const audit_export_manifest *m = audit_export_reader_manifest(reader);
    report->expected = m->count;
    report->fhir = m->fhir;
    memcpy(report->tenant_id, m->tenant_id, sizeof report->tenant_id);

    size_t note_len = 0;
    const char *note = audit_export_reader_checkpoint(reader, &note_len);
    const audit_note_verifier *list[1] = {verifier};
    BASE_CLEANUP(audit_checkpoint_freep) audit_checkpoint *cp = NULL;
    r = audit_checkpoint_open(note, note_len, list, 1, NULL, &cp);
    if (r.err == BASE_ERR_INVALID)
        return verify_fail(report, 0, false, 0, "checkpoint: not a well-formed signed checkpoint");
    if (r.err == BASE_ERR_CRYPTO)
        return verify_fail(report, 0, false, 0,
                           "checkpoint: the signature does not verify with the given key (wrong key, or "
                           "checkpoint altered)");
    BASE_GUARD(r);
    report->checkpoint_verified = true;
    report->tree_size = cp->size;
    hex32(cp->root, report->root_hex);
    snprintf(report->origin, sizeof report->origin, "%s", cp->origin);

    if (strcmp(m->origin, cp->origin) != 0)
        return verify_fail(report, 0, false, 0, "manifest: origin is not the checkpoint's");
    if (m->tree_size != cp->size)
        return verify_fail(report, 0, false, 0, "manifest: tree_size is not the checkpoint's");
    if (!acrypto_equal(m->root, cp->root, AUDIT_MERKLE_HASH_LEN))
        return verify_fail(report, 0, false, 0, "manifest: root_hash is not the checkpoint's");

    audit_export_statement st;
    BASE_GUARD(verify_statement(reader, list, cp, m, &st, report));
    BASE_CLEANUP(sha256_freep) acrypto_sha256_ctx *leaves = NULL;
    BASE_GUARD(acrypto_sha256_ctx_new(&leaves));

    int64_t last_progress = verify_now_ms();
    bool have_prev = false;
    uint64_t prev_seq = 0;
    for (;;) {
        const audit_export_record *rec = NULL;
        bool done = false;
        r = audit_export_reader_next(reader, &rec, &done);
        if (r.err == BASE_ERR_INVALID) {
            uint64_t seq = 0;
            bool has_seq = audit_export_reader_seq(reader, &seq);
            return verify_fail_last(report, audit_export_reader_line(reader), has_seq, seq);
        }
        BASE_GUARD(r);
        if (done)
            break;
        BASE_GUARD(verify_record(rec, cp, m, have_prev, prev_seq, report));
        BASE_GUARD(acrypto_sha256_update(leaves, rec->leaf_hash, AUDIT_MERKLE_HASH_LEN));
        have_prev = true;
        prev_seq = rec->seq;
        report->verified++;
        if (progress) {
            int64_t now = verify_now_ms();
            if (now - last_progress >= VERIFY_PROGRESS_INTERVAL) {
                last_progress = now;
                verify_progress(progress, report->verified, m->count);
            }
        }
    }
    uint8_t digest[ACRYPTO_SHA256_LEN];
    BASE_GUARD(acrypto_sha256_final(leaves, digest));
    if (report->verified != st.count || !acrypto_equal(digest, st.leaves, sizeof digest)) {
        (void)verify_fail(report, 0, false, 0, VERIFY_STATEMENT_MISMATCH);
        return base_fail(BASE_ERR_CRYPTO, "%s (statement %" PRIu64 " events, export %" PRIu64 ")",
                         report->problem, st.count, report->verified);
    }
    if (report->verified != m->count) {
        (void)verify_fail(report, 0, false, 0, "manifest: count is not the number of events in the export");
        return base_fail(BASE_ERR_CRYPTO, "%s (manifest %" PRIu64 ", export %" PRIu64 ")", report->problem,
                         m->count, report->verified);
    }
    if (progress)
        verify_progress(progress, report->verified, m->count);
    return BASE_OK_RESULT;
}

int audit_verify_exit_code(base_result r)
{
    if (base_is_ok(r))
        return AUDIT_VERIFY_EXIT_OK;
    if (r.err == BASE_ERR_CRYPTO)
        return AUDIT_VERIFY_EXIT_FAILED;
    return AUDIT_VERIFY_EXIT_USAGE;
}

void audit_verify_usage(FILE *out)
{
    fputs(
        "Usage: alma-audit verify --export DIR (--vkey VKEY | --vkey-file FILE) [--quiet]\n"
        "       alma-audit verify --help\n"
        "\n"
        "Verifies an export of the audit log offline, with no access to the service: the checkpoint's\n"
        "signature with the log's verifier key, then for every event its leaf hash and its inclusion proof\n"
        "in that checkpoint's tree, the order of the events, their tenant, and that the export statement\n"
        "the log signed names exactly these events (count and leaf hashes, in order) and the manifest.\n"
        "\n"
        "  --export DIR      the export directory (manifest.json, checkpoint, statement, events.jsonl\n"
        "                    or events.ndjson, proofs.jsonl)\n"
        "  --vkey VKEY       the log's verifier key, <name>+<key id>+<base64 key>, obtained from the\n"
        "                    operator of the log out of band (not from the export)\n"
        "  --vkey-file FILE  the same, read from FILE (one line)\n"
        "  --quiet           no progress lines on stderr\n"
        "  --help            this text\n"
        "\n"
        "Exit status: 0 the export verifies; 1 it does not (the first problem is printed as\n"
        "\"line L (seq S): <problem>\"); 2 a usage error, a file that cannot be read, or an incomplete\n"
        "export (no manifest.json, or no statement).\n"
        "\n"
        "A verified export proves that each event in it is in the signed log, unaltered, at its seq, and\n"
        "that no line was removed from or added to what the log exported. It cannot prove that the log\n"
        "exported every event of the tenant: see docs/audit-export.md.\n",
        out);
}

static int verify_usage_error(FILE *err, const char *fmt, ...) BASE_PRINTF(2, 3);

static int verify_usage_error(FILE *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(VERIFY_PROGRAM ": ", err);
    vfprintf(err, fmt, ap);
    va_end(ap);
    fputs("\nTry '" VERIFY_PROGRAM " --help'.\n", err);
    return AUDIT_VERIFY_EXIT_USAGE;
}

/* Option `name` at argv[*i], as "--name VALUE" or "--name=VALUE": 1 matched (value set, *i advanced past
 * it), 0 another option, -1 the value is missing. */
static int verify_option(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *value = argv[++*i];
    return 1;
}

/* The verifier key in `path`: one line, surrounding whitespace removed. */
static int verify_read_vkey_file(const char *path, char *buf, size_t cap, FILE *err)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(err, VERIFY_PROGRAM ": cannot open the verifier key file %.200s: %s\n", path,
                strerror(errno));
        return AUDIT_VERIFY_EXIT_USAGE;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    bool bad = ferror(f) != 0;
    bool more = !bad && n == cap - 1 && fgetc(f) != EOF;
    fclose(f);
    if (bad) {
        fprintf(err, VERIFY_PROGRAM ": cannot read the verifier key file %.200s\n", path);
        return AUDIT_VERIFY_EXIT_USAGE;
    }
    if (more) {
        fprintf(err, VERIFY_PROGRAM ": the verifier key file %.200s is larger than %d bytes\n", path,
                VERIFY_VKEY_FILE_MAX);
        return AUDIT_VERIFY_EXIT_USAGE;
    }
    buf[n] = '\0';
    size_t start = 0;
    while (start < n && (buf[start] == ' ' || buf[start] == '\t' || buf[start] == '\n' || buf[start] == '\r'))
        start++;
    while (n > start && (buf[n - 1] == ' ' || buf[n - 1] == '\t' || buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    memmove(buf, buf + start, n - start + 1);
    if (buf[0] == '\0' || strchr(buf, '\n')) {
        fprintf(err, VERIFY_PROGRAM ": the verifier key file %.200s must hold one verifier key on one line\n",
                path);
        return AUDIT_VERIFY_EXIT_USAGE;
    }
    return AUDIT_VERIFY_EXIT_OK;
}

int audit_verify_run(int argc, char **argv, FILE *out, FILE *err)
{
    const char *dir = NULL, *vkey = NULL, *vkey_file = NULL;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!a)
            return verify_usage_error(err, "missing argument");
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            audit_verify_usage(out);
            return AUDIT_VERIFY_EXIT_OK;
        }
        if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = true;
            continue;
        }
        static const char *const names[] = {"--export", "--vkey-file", "--vkey"};
        const char **slots[] = {&dir, &vkey_file, &vkey};
        bool matched = false;
        for (size_t k = 0; k < BASE_ARRAY_LEN(names) && !matched; k++) {
            const char *value = NULL;
            int m = verify_option(argc, argv, &i, names[k], &value);
            if (m < 0)
                return verify_usage_error(err, "%s needs a value", names[k]);
            if (m == 0)
                continue;
            if (*slots[k])
                return verify_usage_error(err, "%s given twice", names[k]);
            if (!value[0])
                return verify_usage_error(err, "%s needs a non-empty value", names[k]);
            *slots[k] = value;
            matched = true;
        }
        if (!matched)
            return verify_usage_error(err, "unknown argument: %.100s", a);
    }
    if (!dir)
        return verify_usage_error(err, "--export DIR is required");
    if ((vkey != NULL) == (vkey_file != NULL))
        return verify_usage_error(err, "give exactly one of --vkey and --vkey-file");

    char key_buf[VERIFY_VKEY_FILE_MAX];
    if (vkey_file) {
        int rc = verify_read_vkey_file(vkey_file, key_buf, sizeof key_buf, err);
        if (rc != AUDIT_VERIFY_EXIT_OK)
            return rc;
        vkey = key_buf;
    }

    audit_verify_export_report report;
    base_result r = audit_verify_export(dir, vkey, quiet ? NULL : err, &report);
    int code = audit_verify_exit_code(r);
    if (code == AUDIT_VERIFY_EXIT_OK) {
        fprintf(out,
                "OK: %" PRIu64
                " events of tenant %s verified against the checkpoint of %s (tree size %" PRIu64
                ", root %s) and the log's signed export statement\n",
                report.verified, report.tenant_id, report.origin, report.tree_size, report.root_hex);
        return code;
    }
    if (code == AUDIT_VERIFY_EXIT_FAILED) {
        fprintf(err, VERIFY_PROGRAM ": the export does not verify: %s\n", base_error_message());
        return code;
    }
    fprintf(err, VERIFY_PROGRAM ": %s\n", base_error_message());
    return code;
}

int audit_verify_main(int argc, char **argv)
{
    return audit_verify_run(argc, argv, stdout, stderr);
}
