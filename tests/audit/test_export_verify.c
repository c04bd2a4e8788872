/* The export format (export_file.c) and the offline verifier (verify_tool.c), with real crypto throughout.
 *
 * A log of LOG_SIZE canonical entries of two tenants is built in memory: Ed25519 keys from the crypto
 * library, entries from audit_entry_encode, leaf hashes, the root, a checkpoint signed as a C2SP note,
 * inclusion proofs from audit_merkle_inclusion_proof over the leaf array, and export statements formatted by
 * audit_export_statement_format and signed with audit_note_sign, as the service does. Exports of tenant-a
 * are written with the writer in both contents into a mkdtemp directory, verified clean, then tampered with
 * one way at a time: each tamper must be caught with BASE_ERR_CRYPTO (exit 1), naming the right line and
 * seq. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "checkpoint.h"
#include "crypto/crypto.h"
#include "entry.h"
#include "export_file.h"
#include "merkle.h"
#include "verify_tool.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HL       AUDIT_MERKLE_HASH_LEN
#define ORIGIN   "alma.example/audit/log1"
#define LOG_SIZE 301 /* not a power of two; exports of tenant-a exceed the reader's 64 KiB chunks */
#define WHEN     INT64_C(1795435200123456)
#define TENANT_A "tenant-a"
#define TENANT_B "tenant-b"
#define PT       "pt_0123456789abcdef0123456789abcdef"
#define SVC      "spiffe://alma.example/ns/prod/sa/referral"

#define ASSERT_OK(expr)                                                                                      \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        if (!base_is_ok(r_))                                                                                 \
            fail_msg("line %d: %s failed: %s: %s", __LINE__, #expr, base_err_name(r_.err),                   \
                     base_error_message());                                                                  \
    } while (0)

#define ASSERT_ERR(expr, code)                                                                               \
    do {                                                                                                     \
        base_result r_ = (expr);                                                                             \
        if (r_.err != (code))                                                                                \
            fail_msg("line %d: %s gave %s (%s), want %s", __LINE__, #expr, base_err_name(r_.err),            \
                     base_error_message(), base_err_name(code));                                             \
    } while (0)

/* ---------------------------------------------------------------------------------------------------------
 * The log. */

static struct {
    char base[64]; /* mkdtemp directory of this run */
    int serial;
    acrypto_ed25519_key *key, *other_key;
    char *vkey, *other_vkey;
    char *entries[LOG_SIZE];
    size_t entry_lens[LOG_SIZE];
    uint8_t leaves[LOG_SIZE][HL];
    uint8_t root[HL];
    char *note;       /* checkpoint of the log, signed by key */
    char *other_note; /* the same checkpoint signed by other_key under the same name */
    char *big_note;   /* a checkpoint of a larger tree (LOG_SIZE + 5), signed by key */
    uint8_t big_root[HL];
    char *filter_a, *filter_b; /* the statement's filter line of an export of each tenant */
} g;

#define FILTER_A "{\"start_time\":\"2026-11-01T00:00:00.000000Z\",\"tenant_id\":\"tenant-a\"}"

static const char *tenant_of(uint64_t seq)
{
    return seq % 3 == 1 ? TENANT_B : TENANT_A;
}

/* tenant-a's seqs in order: 0, 2, 3, 5, 6, ... */
static uint64_t a_seq(size_t line_index)
{
    return (line_index / 2) * 3 + (line_index % 2 == 0 ? 0 : 2);
}

static size_t a_count(void)
{
    size_t n = 0;
    for (uint64_t s = 0; s < LOG_SIZE; s++)
        n += strcmp(tenant_of(s), TENANT_A) == 0;
    return n;
}

static base_result leaf_fn(void *ctx, uint64_t index, uint8_t ret_hash[HL])
{
    const uint8_t(*leaves)[HL] = ctx;
    memcpy(ret_hash, leaves[index], HL);
    return BASE_OK_RESULT;
}

static char *sign_checkpoint(uint64_t size, const uint8_t root[HL], const acrypto_ed25519_key *key)
{
    char *text = NULL, *note = NULL;
    size_t text_len = 0, note_len = 0;
    ASSERT_OK(audit_checkpoint_format(ORIGIN, size, root, NULL, 0, &text, &text_len));
    ASSERT_OK(audit_note_sign(text, text_len, ORIGIN, key, &note, &note_len));
    free(text);
    return note;
}

static char *vkey_of(const acrypto_ed25519_key *key)
{
    uint8_t pub[ACRYPTO_ED25519_PUBLIC_LEN];
    ASSERT_OK(acrypto_ed25519_public_raw(key, pub));
    char *vkey = NULL;
    size_t len = 0;
    ASSERT_OK(audit_note_vkey_format(ORIGIN, pub, &vkey, &len));
    return vkey;
}

/* The filter line of an export of every event of `tenant` since 2026-11-01 (as the service writes it). */
static char *filter_of(const char *tenant)
{
    Alma__Audit__V1__EventFilter f;
    Google__Protobuf__Timestamp start;
    alma__audit__v1__event_filter__init(&f);
    google__protobuf__timestamp__init(&start);
    start.seconds = 1793491200; /* 2026-11-01T00:00:00Z */
    f.tenant_id = (char *)tenant;
    f.start_time = &start;
    char *json = NULL;
    size_t len = 0;
    ASSERT_OK(audit_export_filter_json(&f, &json, &len));
    assert_int_equal(len, strlen(json));
    return json;
}

/* The statement of an export of `n` lines with these seqs, signed by `key` under the log's name. */
static char *sign_statement(const char *tenant, bool fhir, uint64_t tree_size, const uint64_t *seqs, size_t n,
                            const acrypto_ed25519_key *key)
{
    audit_export_statement st = {.fhir = fhir, .tree_size = tree_size, .count = n};
    snprintf(st.origin, sizeof st.origin, "%s", ORIGIN);
    snprintf(st.tenant_id, sizeof st.tenant_id, "%s", tenant);
    char *own = NULL;
    st.filter = strcmp(tenant, TENANT_A) == 0   ? g.filter_a
                : strcmp(tenant, TENANT_B) == 0 ? g.filter_b
                                                : NULL;
    if (!st.filter)
        st.filter = own = filter_of(tenant);
    st.filter_len = strlen(st.filter);
    acrypto_sha256_ctx *h = NULL;
    ASSERT_OK(acrypto_sha256_ctx_new(&h));
    for (size_t i = 0; i < n; i++)
        ASSERT_OK(acrypto_sha256_update(h, g.leaves[seqs[i]], HL));
    ASSERT_OK(acrypto_sha256_final(h, st.leaves));
    acrypto_sha256_ctx_free(h);
    char *text = NULL, *note = NULL;
    size_t text_len = 0, note_len = 0;
    ASSERT_OK(audit_export_statement_format(&st, &text, &text_len));
    ASSERT_OK(audit_note_sign(text, text_len, ORIGIN, key, &note, &note_len));
    free(text);
    free(own);
    return note;
}

/* The seqs of every event of `tenant`, in order; returns how many. */
static size_t seqs_of(const char *tenant, uint64_t seqs[LOG_SIZE])
{
    size_t n = 0;
    for (uint64_t s = 0; s < LOG_SIZE; s++) {
        if (strcmp(tenant_of(s), tenant) == 0)
            seqs[n++] = s;
    }
    return n;
}

static void encode_event(uint64_t seq, char **ret, size_t *ret_len)
{
    Alma__Audit__V1__EventInput ev;
    Alma__Audit__V1__Actor actor;
    alma__audit__v1__event_input__init(&ev);
    alma__audit__v1__actor__init(&actor);
    char principal[32], resource[32];
    snprintf(principal, sizeof principal, "usr_%" PRIu64, seq % 7);
    snprintf(resource, sizeof resource, "rec_%" PRIu64, seq);
    char *roles[1] = {"pcp"};
    actor.principal_id = principal;
    actor.roles = roles;
    actor.n_roles = 1;
    ev.tenant_id = (char *)tenant_of(seq);
    ev.actor = &actor;
    ev.action = seq % 5 == 0 ? ALMA__AUDIT__V1__ACTION__ACTION_UPDATE : ALMA__AUDIT__V1__ACTION__ACTION_READ;
    ev.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT;
    ev.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_SUCCESS;
    ev.patient_ref = PT;
    ev.resource_type = "Patient";
    ev.resource_id = resource;
    ASSERT_OK(audit_entry_encode(&ev, seq, WHEN + (int64_t)seq * 1000, SVC, ret, ret_len));
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g.base, sizeof g.base, "/tmp/alma-test-export-XXXXXX");
    if (!mkdtemp(g.base)) {
        fprintf(stderr, "cannot make a temporary directory: %s\n", strerror(errno));
        return -1;
    }
    ASSERT_OK(acrypto_ed25519_generate(&g.key));
    ASSERT_OK(acrypto_ed25519_generate(&g.other_key));
    g.vkey = vkey_of(g.key);
    g.other_vkey = vkey_of(g.other_key);
    audit_merkle_frontier f;
    audit_merkle_frontier_init(&f);
    for (uint64_t s = 0; s < LOG_SIZE; s++) {
        encode_event(s, &g.entries[s], &g.entry_lens[s]);
        ASSERT_OK(audit_merkle_leaf_hash(g.entries[s], g.entry_lens[s], g.leaves[s]));
        ASSERT_OK(audit_merkle_frontier_append(&f, g.leaves[s]));
    }
    ASSERT_OK(audit_merkle_frontier_root(&f, g.root));
    /* The frontier and the RFC recursion agree. */
    audit_merkle_source src = {leaf_fn, NULL, g.leaves};
    uint8_t again[HL];
    ASSERT_OK(audit_merkle_root(&src, LOG_SIZE, again));
    assert_memory_equal(again, g.root, HL);
    g.note = sign_checkpoint(LOG_SIZE, g.root, g.key);
    g.other_note = sign_checkpoint(LOG_SIZE, g.root, g.other_key);
    for (int i = 0; i < 5; i++) {
        uint8_t extra[HL];
        ASSERT_OK(audit_merkle_leaf_hash("x", 1, extra));
        extra[0] ^= (uint8_t)i;
        ASSERT_OK(audit_merkle_frontier_append(&f, extra));
    }
    ASSERT_OK(audit_merkle_frontier_root(&f, g.big_root));
    g.big_note = sign_checkpoint(LOG_SIZE + 5, g.big_root, g.key);
    g.filter_a = filter_of(TENANT_A);
    g.filter_b = filter_of(TENANT_B);
    assert_string_equal(g.filter_a, FILTER_A);
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (strncmp(g.base, "/tmp/alma-test-export-", 22) == 0)
        nftw(g.base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < LOG_SIZE; i++)
        free(g.entries[i]);
    free(g.vkey);
    free(g.other_vkey);
    free(g.note);
    free(g.other_note);
    free(g.big_note);
    free(g.filter_a);
    free(g.filter_b);
    acrypto_ed25519_free(g.key);
    acrypto_ed25519_free(g.other_key);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * Files. */

/* A new path under the run's directory (not created). Returned in a static rotating buffer. */
static const char *new_path(const char *what)
{
    static char buf[8][256];
    static int slot;
    char *out = buf[slot++ % 8];
    snprintf(out, sizeof buf[0], "%s/%s-%d", g.base, what, g.serial++);
    return out;
}

static const char *in_dir(const char *dir, const char *name)
{
    static char buf[8][320];
    static int slot;
    char *out = buf[slot++ % 8];
    snprintf(out, sizeof buf[0], "%s/%s", dir, name);
    return out;
}

static char *slurp(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[len] = '\0';
    if (ret_len)
        *ret_len = len;
    return buf;
}

static void spit(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Offset and length (without "\n") of 0-based line k of buf. */
static size_t line_at(const char *buf, size_t len, size_t k, size_t *ret_len)
{
    size_t pos = 0;
    for (size_t i = 0; i < k; i++) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl)
            fail_msg("no line %zu", k);
        pos = (size_t)(nl - buf) + 1;
    }
    const char *nl = memchr(buf + pos, '\n', len - pos);
    if (!nl)
        fail_msg("no line %zu", k);
    *ret_len = (size_t)(nl - (buf + pos));
    return pos;
}

/* Line k of the file, malloc'd, without "\n". */
static char *get_line(const char *path, size_t k)
{
    size_t len, n;
    char *buf = slurp(path, &len);
    size_t off = line_at(buf, len, k, &n);
    char *out = strndup(buf + off, n);
    assert_non_null(out);
    free(buf);
    return out;
}

static void delete_line(const char *path, size_t k)
{
    size_t len, n;
    char *buf = slurp(path, &len);
    size_t off = line_at(buf, len, k, &n);
    memmove(buf + off, buf + off + n + 1, len - off - n - 1);
    spit(path, buf, len - n - 1);
    free(buf);
}

/* Insert `line` (without "\n") before line k. */
static void insert_line(const char *path, size_t k, const char *line)
{
    size_t len, n;
    char *buf = slurp(path, &len);
    size_t off = line_at(buf, len, k, &n);
    size_t add = strlen(line) + 1;
    char *out = malloc(len + add);
    assert_non_null(out);
    memcpy(out, buf, off);
    memcpy(out + off, line, add - 1);
    out[off + add - 1] = '\n';
    memcpy(out + off + add, buf + off, len - off);
    spit(path, out, len + add);
    free(out);
    free(buf);
}

/* Swap lines k and k + 1. */
static void swap_lines(const char *path, size_t k)
{
    char *a = get_line(path, k);
    char *b = get_line(path, k + 1);
    delete_line(path, k);
    delete_line(path, k);
    insert_line(path, k, a);
    insert_line(path, k, b);
    free(a);
    free(b);
}

/* Replace the first `from` in line k (or in the whole file for k == SIZE_MAX) with `to`. */
static void replace_in(const char *path, size_t k, const char *from, const char *to)
{
    size_t len, n = 0;
    char *buf = slurp(path, &len);
    size_t off = 0;
    if (k == SIZE_MAX)
        n = len;
    else
        off = line_at(buf, len, k, &n);
    char saved = buf[off + n];
    buf[off + n] = '\0';
    char *at = strstr(buf + off, from);
    buf[off + n] = saved;
    if (!at)
        fail_msg("%s not found in line %zu of %s", from, k, path);
    size_t from_len = strlen(from), to_len = strlen(to);
    char *out = malloc(len - from_len + to_len + 1);
    assert_non_null(out);
    size_t pre = (size_t)(at - buf);
    memcpy(out, buf, pre);
    memcpy(out + pre, to, to_len);
    memcpy(out + pre + to_len, at + from_len, len - pre - from_len);
    spit(path, out, len - from_len + to_len);
    free(out);
    free(buf);
}

/* Flip one bit of byte `at` of line k. */
static void flip_byte(const char *path, size_t k, size_t at)
{
    size_t len, n;
    char *buf = slurp(path, &len);
    size_t off = line_at(buf, len, k, &n);
    assert_true(at < n);
    buf[off + at] ^= 0x01;
    spit(path, buf, len);
    free(buf);
}

/* ---------------------------------------------------------------------------------------------------------
 * Writing exports. */

static void write_line(audit_export_writer *w, uint64_t seq, bool fhir)
{
    audit_merkle_source src = {leaf_fn, NULL, g.leaves};
    audit_merkle_proof proof;
    ASSERT_OK(audit_merkle_inclusion_proof(&src, seq, LOG_SIZE, &proof));
    char *fhir_json = NULL;
    size_t fhir_len = 0;
    if (fhir)
        ASSERT_OK(audit_entry_to_fhir(g.entries[seq], g.entry_lens[seq], &fhir_json, &fhir_len));
    ASSERT_OK(audit_export_writer_line(w, seq, fhir ? fhir_json : g.entries[seq],
                                       fhir ? fhir_len : g.entry_lens[seq], g.entries[seq], g.entry_lens[seq],
                                       g.leaves[seq], (const uint8_t(*)[HL])proof.hashes, proof.len));
    free(fhir_json);
}

/* Give the writer the statement of these lines (signed by the log's key) and finish. */
static void finish_export(audit_export_writer *w, const char *tenant, bool fhir, const uint64_t *seqs,
                          size_t n)
{
    char *st = sign_statement(tenant, fhir, LOG_SIZE, seqs, n, g.key);
    ASSERT_OK(audit_export_writer_statement(w, st, strlen(st)));
    free(st);
    ASSERT_OK(audit_export_writer_finish(w));
}

/* An export of every event of `tenant` in a new directory; returns its path (static rotating buffer). */
static const char *make_export(bool fhir, const char *tenant)
{
    const char *dir = new_path(fhir ? "fhir" : "jsonl");
    audit_export_writer *w = NULL;
    ASSERT_OK(audit_export_writer_open(dir, fhir, tenant, &w));
    /* A caller's own description, replaced by the statement's filter in the manifest. */
    ASSERT_OK(audit_export_writer_set_filter(w, "{\"tenant_id\":\"tenant-a\",\"from\":\"2026-11-01\"}"));
    ASSERT_OK(audit_export_writer_checkpoint(w, g.note, strlen(g.note)));
    uint64_t seqs[LOG_SIZE];
    size_t n = seqs_of(tenant, seqs);
    for (size_t i = 0; i < n; i++)
        write_line(w, seqs[i], fhir);
    finish_export(w, tenant, fhir, seqs, n);
    audit_export_writer_free(w);
    return dir;
}

static const char *statement_of(const char *dir)
{
    return in_dir(dir, AUDIT_EXPORT_STATEMENT_FILE);
}

static const char *events_of(const char *dir, bool fhir)
{
    return in_dir(dir, fhir ? AUDIT_EXPORT_EVENTS_NDJSON : AUDIT_EXPORT_EVENTS_JSONL);
}

static const char *proofs_of(const char *dir)
{
    return in_dir(dir, AUDIT_EXPORT_PROOFS_FILE);
}

/* ---------------------------------------------------------------------------------------------------------
 * Verifying. */

static void expect_ok(const char *dir, size_t count)
{
    audit_verify_export_report rep;
    ASSERT_OK(audit_verify_export(dir, g.vkey, NULL, &rep));
    assert_int_equal(rep.verified, count);
    assert_int_equal(rep.expected, count);
    assert_int_equal(rep.tree_size, LOG_SIZE);
    assert_true(rep.checkpoint_verified);
    assert_string_equal(rep.origin, ORIGIN);
    char hex[2 * HL + 1];
    size_t n = 0;
    ASSERT_OK(acrypto_hex_encode(g.root, HL, hex, sizeof hex, &n));
    assert_string_equal(rep.root_hex, hex);
    assert_string_equal(rep.problem, "");
}

/* The export does not verify, at 1-based `line` (0: not a line) with `seq` (UINT64_MAX: none), and the
 * problem holds `needle`. */
static void expect_fail_with(const char *dir, const char *vkey, uint64_t line, uint64_t seq,
                             const char *needle)
{
    audit_verify_export_report rep;
    base_result r = audit_verify_export(dir, vkey, NULL, &rep);
    if (r.err != BASE_ERR_CRYPTO)
        fail_msg("verify gave %s (%s), want crypto / %s", base_err_name(r.err), base_error_message(), needle);
    assert_int_equal(audit_verify_exit_code(r), AUDIT_VERIFY_EXIT_FAILED);
    if (!strstr(rep.problem, needle))
        fail_msg("problem \"%s\" does not name \"%s\"", rep.problem, needle);
    if (rep.line != line)
        fail_msg("problem \"%s\" at line %" PRIu64 ", want %" PRIu64, rep.problem, rep.line, line);
    if (seq == UINT64_MAX) {
        assert_false(rep.has_seq);
    } else {
        assert_true(rep.has_seq);
        assert_int_equal(rep.seq, seq);
        char want[96];
        snprintf(want, sizeof want, "line %" PRIu64 " (seq %" PRIu64 "): ", line, seq);
        if (strncmp(base_error_message(), want, strlen(want)) != 0)
            fail_msg("message \"%s\" does not start with \"%s\"", base_error_message(), want);
    }
}

static void expect_fail(const char *dir, uint64_t line, uint64_t seq, const char *needle)
{
    expect_fail_with(dir, g.vkey, line, seq, needle);
}

/* ---------------------------------------------------------------------------------------------------------
 * Tests: clean exports. */

static void test_clean_exports_verify(void **state)
{
    (void)state;
    for (int fhir = 0; fhir <= 1; fhir++) {
        const char *dir = make_export(fhir, TENANT_A);
        expect_ok(dir, a_count());
        /* Larger than one read chunk, so the line reader refills and compacts its buffer. */
        struct stat st;
        assert_int_equal(stat(events_of(dir, fhir), &st), 0);
        assert_true(st.st_size > 64 * 1024);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(stat(dir, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
        assert_int_equal(access(in_dir(dir, AUDIT_EXPORT_MANIFEST_TMP), F_OK), -1);
    }
    /* The other tenant's export verifies as well. */
    expect_ok(make_export(false, TENANT_B), LOG_SIZE - a_count());
}

static void test_export_files_are_the_format(void **state)
{
    (void)state;
    const char *dir = make_export(false, TENANT_A);
    /* events.jsonl: line i is the canonical entry, byte for byte. */
    for (size_t i = 0; i < 3; i++) {
        char *line = get_line(events_of(dir, false), i);
        assert_string_equal(line, g.entries[a_seq(i)]);
        free(line);
    }
    /* The checkpoint as served. */
    char *cp = slurp(in_dir(dir, AUDIT_EXPORT_CHECKPOINT_FILE), NULL);
    assert_string_equal(cp, g.note);
    free(cp);
    /* proofs.jsonl: compact, keys in order, lowercase hex, no entry for jsonl. */
    char *p = get_line(proofs_of(dir), 1);
    char want[160], hex[2 * HL + 1];
    size_t n = 0;
    ASSERT_OK(acrypto_hex_encode(g.leaves[2], HL, hex, sizeof hex, &n));
    snprintf(want, sizeof want, "{\"seq\":2,\"leaf_hash\":\"%s\",\"proof\":[\"", hex);
    assert_true(strncmp(p, want, strlen(want)) == 0);
    assert_null(strstr(p, "\"entry\""));
    free(p);
    /* manifest.json */
    char *m = slurp(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), &n);
    assert_true(n > 0 && m[n - 1] == '\n');
    ASSERT_OK(acrypto_hex_encode(g.root, HL, hex, sizeof hex, &n));
    char head[512];
    snprintf(
        head, sizeof head,
        "{\"format\":\"alma-audit-export\",\"version\":1,\"content\":\"jsonl\",\"tenant_id\":\"tenant-a\","
        "\"count\":%zu,\"tree_size\":%d,\"root_hash\":\"%s\",\"origin\":\"" ORIGIN "\",\"created\":\"",
        a_count(), LOG_SIZE, hex);
    if (strncmp(m, head, strlen(head)) != 0)
        fail_msg("manifest %s does not start with %s", m, head);
    /* The filter is the statement's (set_filter's description was replaced). */
    assert_non_null(strstr(m, "\"filter\":" FILTER_A "}\n"));
    free(m);

    /* statement: the signed note as served, whose text names this export's lines. */
    char *st = slurp(statement_of(dir), &n);
    uint64_t seqs[LOG_SIZE];
    size_t count = seqs_of(TENANT_A, seqs);
    char *want_st = sign_statement(TENANT_A, false, LOG_SIZE, seqs, count, g.key);
    assert_string_equal(st, want_st);
    free(want_st);
    acrypto_sha256_ctx *h = NULL;
    uint8_t digest[HL];
    ASSERT_OK(acrypto_sha256_ctx_new(&h));
    for (size_t i = 0; i < count; i++)
        ASSERT_OK(acrypto_sha256_update(h, g.leaves[a_seq(i)], HL));
    ASSERT_OK(acrypto_sha256_final(h, digest));
    acrypto_sha256_ctx_free(h);
    char b64d[64];
    ASSERT_OK(acrypto_base64_encode(digest, HL, b64d, sizeof b64d, &n));
    char text[512];
    snprintf(text, sizeof text,
             "alma-audit-export/v1\norigin " ORIGIN "\ntenant tenant-a\nfilter " FILTER_A
             "\nformat jsonl\ntree %d\ncount %zu\nleaves %s\n\n\u2014 " ORIGIN " ",
             LOG_SIZE, count, b64d);
    if (strncmp(st, text, strlen(text)) != 0)
        fail_msg("statement %s does not start with %s", st, text);
    free(st);

    /* FHIR: events line is audit_entry_to_fhir(entry); the proof carries the entry in base64. */
    dir = make_export(true, TENANT_A);
    char *line = get_line(events_of(dir, true), 0);
    char *fhir = NULL;
    size_t fhir_len = 0;
    ASSERT_OK(audit_entry_to_fhir(g.entries[0], g.entry_lens[0], &fhir, &fhir_len));
    assert_string_equal(line, fhir);
    free(fhir);
    free(line);
    p = get_line(proofs_of(dir), 0);
    char b64[4096];
    ASSERT_OK(acrypto_base64_encode(g.entries[0], g.entry_lens[0], b64, sizeof b64, &n));
    char tail[4200];
    snprintf(tail, sizeof tail, "],\"entry\":\"%s\"}", b64);
    assert_string_equal(p + strlen(p) - strlen(tail), tail);
    free(p);
}

static void test_reader_roundtrip(void **state)
{
    (void)state;
    for (int fhir = 0; fhir <= 1; fhir++) {
        const char *dir = make_export(fhir, TENANT_A);
        audit_export_reader *r = NULL;
        ASSERT_OK(audit_export_reader_open(dir, &r));
        const audit_export_manifest *m = audit_export_reader_manifest(r);
        assert_int_equal(m->fhir, fhir);
        assert_string_equal(m->tenant_id, TENANT_A);
        assert_int_equal(m->count, a_count());
        assert_int_equal(m->tree_size, LOG_SIZE);
        assert_memory_equal(m->root, g.root, HL);
        assert_string_equal(m->origin, ORIGIN);
        assert_int_equal(strlen(m->created), AUDIT_EXPORT_CREATED_LEN);
        size_t cp_len = 0;
        const char *cp = audit_export_reader_checkpoint(r, &cp_len);
        assert_int_equal(cp_len, strlen(g.note));
        assert_memory_equal(cp, g.note, cp_len);
        audit_merkle_source src = {leaf_fn, NULL, g.leaves};
        size_t i = 0;
        for (;;) {
            const audit_export_record *rec = NULL;
            bool done = true;
            ASSERT_OK(audit_export_reader_next(r, &rec, &done));
            if (done)
                break;
            uint64_t seq = a_seq(i);
            assert_int_equal(rec->line, i + 1);
            assert_int_equal(rec->seq, seq);
            assert_int_equal(rec->entry_len, g.entry_lens[seq]);
            assert_memory_equal(rec->entry, g.entries[seq], rec->entry_len);
            assert_memory_equal(rec->leaf_hash, g.leaves[seq], HL);
            audit_merkle_proof proof;
            ASSERT_OK(audit_merkle_inclusion_proof(&src, seq, LOG_SIZE, &proof));
            assert_int_equal(rec->proof_len, proof.len);
            assert_memory_equal(rec->proof, proof.hashes, proof.len * HL);
            i++;
        }
        assert_int_equal(i, a_count());
        bool done = false;
        const audit_export_record *rec = NULL;
        ASSERT_OK(audit_export_reader_next(r, &rec, &done)); /* stays done */
        assert_true(done);
        audit_export_reader_free(r);
    }
}

static void test_empty_export_verifies(void **state)
{
    (void)state;
    const char *dir = new_path("empty");
    audit_export_writer *w = NULL;
    ASSERT_OK(audit_export_writer_open(dir, false, "tenant-none", &w));
    ASSERT_OK(audit_export_writer_checkpoint(w, g.note, strlen(g.note)));
    finish_export(w, "tenant-none", false, NULL, 0);
    audit_export_writer_free(w);
    audit_verify_export_report rep;
    ASSERT_OK(audit_verify_export(dir, g.vkey, NULL, &rep));
    assert_int_equal(rep.verified, 0);
    assert_true(rep.statement_verified);
    /* Its statement's leaves digest is SHA-256 of nothing. */
    char *st = slurp(statement_of(dir), NULL);
    assert_non_null(strstr(st, "\ncount 0\nleaves 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n"));
    free(st);
}

/* ---------------------------------------------------------------------------------------------------------
 * Tests: tampering. */

static void test_changed_byte_in_entry(void **state)
{
    (void)state;
    /* jsonl: one byte of the event on line 5 (0-based 4). */
    const char *dir = make_export(false, TENANT_A);
    flip_byte(events_of(dir, false), 4, 40);
    expect_fail(dir, 5, a_seq(4), "does not match its leaf_hash");

    /* A change that keeps the JSON valid and the hash check first: the resource id. */
    dir = make_export(false, TENANT_A);
    char from[32], to[32];
    snprintf(from, sizeof from, "\"rec_%" PRIu64 "\"", a_seq(7));
    snprintf(to, sizeof to, "\"rec_%" PRIu64 "\"", a_seq(7) + 1000);
    replace_in(events_of(dir, false), 7, from, to);
    expect_fail(dir, 8, a_seq(7), "does not match its leaf_hash");

    /* fhir: a byte of the base64 entry in proofs.jsonl (still valid base64: 'A' <-> 'B'). */
    dir = make_export(true, TENANT_A);
    char *p = get_line(proofs_of(dir), 2);
    const char *e = strstr(p, "\"entry\":\"");
    assert_non_null(e);
    size_t at = (size_t)(e - p) + 9 + 8;
    free(p);
    flip_byte(proofs_of(dir), 2, at); /* another base64 character: another entry */
    audit_verify_export_report rep;
    base_result r = audit_verify_export(dir, g.vkey, NULL, &rep);
    assert_int_equal(r.err, BASE_ERR_CRYPTO);
    assert_int_equal(rep.line, 3);
    assert_true(rep.has_seq);
    assert_int_equal(rep.seq, a_seq(2));
}

static void test_deleted_line(void **state)
{
    (void)state;
    /* From events only: line 6 now holds the next event, whose hash is not line 6's proof's. */
    const char *dir = make_export(false, TENANT_A);
    delete_line(events_of(dir, false), 5);
    expect_fail(dir, 6, a_seq(5), "does not match its leaf_hash");

    /* From events only, fhir: the FHIR line is not the one of the entry in the proof. */
    dir = make_export(true, TENANT_A);
    delete_line(events_of(dir, true), 5);
    expect_fail(dir, 6, a_seq(5), "FHIR AuditEvent is not the one of its entry");

    /* From proofs only. */
    dir = make_export(false, TENANT_A);
    delete_line(proofs_of(dir), 5);
    expect_fail(dir, 6, a_seq(6), "does not match its leaf_hash");

    /* The last line from events only: the line counts differ. */
    dir = make_export(false, TENANT_A);
    delete_line(events_of(dir, false), a_count() - 1);
    expect_fail(dir, a_count(), UINT64_MAX, "proofs.jsonl has more lines than events.jsonl");

    /* An extra line at the end of events only. */
    dir = make_export(false, TENANT_A);
    char *first = get_line(events_of(dir, false), 0);
    FILE *f = fopen(events_of(dir, false), "ab");
    assert_non_null(f);
    fprintf(f, "%s\n", first);
    fclose(f);
    free(first);
    expect_fail(dir, a_count() + 1, UINT64_MAX, "events.jsonl has more lines than proofs.jsonl");

    /* From both files: every remaining line verifies, but they are not the lines the log's statement
     * names; lowering the manifest's count to match does not help (the statement is signed). */
    char from[32], to[32];
    snprintf(from, sizeof from, "\"count\":%zu,", a_count());
    snprintf(to, sizeof to, "\"count\":%zu,", a_count() - 1);
    for (int fhir = 0; fhir <= 1; fhir++) {
        for (int lower = 0; lower <= 1; lower++) {
            dir = make_export(fhir, TENANT_A);
            delete_line(events_of(dir, fhir), 10);
            delete_line(proofs_of(dir), 10);
            if (lower)
                replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, from, to);
            expect_fail(dir, 0, UINT64_MAX,
                        "the export statement does not match the exported lines (lines deleted, added or "
                        "reordered)");
            char counts[64];
            snprintf(counts, sizeof counts, "(statement %zu events, export %zu)", a_count(), a_count() - 1);
            assert_non_null(strstr(base_error_message(), counts));
        }
    }
    /* The last line from both files, with the count lowered: the same. */
    dir = make_export(false, TENANT_A);
    delete_line(events_of(dir, false), a_count() - 1);
    delete_line(proofs_of(dir), a_count() - 1);
    replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, from, to);
    expect_fail(dir, 0, UINT64_MAX, "the export statement does not match the exported lines");
}

static void test_swapped_lines(void **state)
{
    (void)state;
    /* In both files: the order of seqs breaks at the second of the two. */
    for (int fhir = 0; fhir <= 1; fhir++) {
        const char *dir = make_export(fhir, TENANT_A);
        swap_lines(events_of(dir, fhir), 3);
        swap_lines(proofs_of(dir), 3);
        expect_fail(dir, 5, a_seq(3), "seq is not above the previous line's");
    }
    /* In events only: the first no longer matches its proof. */
    const char *dir = make_export(false, TENANT_A);
    swap_lines(events_of(dir, false), 3);
    expect_fail(dir, 4, a_seq(3), "does not match its leaf_hash");
    /* The proof's seq changed to the neighbour's, with the entry: the entry's "seq" is another. */
    dir = make_export(false, TENANT_A);
    char from[32], to[32];
    snprintf(from, sizeof from, "{\"seq\":%" PRIu64 ",", a_seq(3));
    snprintf(to, sizeof to, "{\"seq\":%" PRIu64 ",", a_seq(3) + 1);
    replace_in(proofs_of(dir), 3, from, to);
    expect_fail(dir, 4, a_seq(3) + 1, "entry \"seq\" is not the seq of its proof");
}

static void test_fhir_line_edited(void **state)
{
    (void)state;
    const char *dir = make_export(true, TENANT_A);
    /* The FHIR resource claims another outcome; the entry in proofs.jsonl is intact. */
    replace_in(events_of(dir, true), 9, "\"outcome\":\"0\"", "\"outcome\":\"4\"");
    expect_fail(dir, 10, a_seq(9), "FHIR AuditEvent is not the one of its entry");
}

static void test_proof_changed(void **state)
{
    (void)state;
    for (int fhir = 0; fhir <= 1; fhir++) {
        /* One hex digit of a proof hash. */
        const char *dir = make_export(fhir, TENANT_A);
        char *p = get_line(proofs_of(dir), 12);
        const char *h = strstr(p, "\"proof\":[\"");
        assert_non_null(h);
        size_t at = (size_t)(h - p) + 10 + 20;
        char digit = p[at];
        free(p);
        size_t len, n;
        char *buf = slurp(proofs_of(dir), &len);
        size_t off = line_at(buf, len, 12, &n);
        buf[off + at] = digit == '0' ? '1' : '0';
        spit(proofs_of(dir), buf, len);
        free(buf);
        expect_fail(dir, 13, a_seq(12), "inclusion proof does not verify");

        /* A proof hash dropped. */
        dir = make_export(fhir, TENANT_A);
        p = get_line(proofs_of(dir), 12);
        h = strstr(p, "\"proof\":[\"");
        char drop[2 * HL + 4];
        memcpy(drop, h + 9, 2 * HL + 3); /* "<hex>", */
        drop[2 * HL + 3] = '\0';
        free(p);
        replace_in(proofs_of(dir), 12, drop, "");
        expect_fail(dir, 13, a_seq(12), "inclusion proof does not verify");

        /* The leaf hash of the proof line: it no longer matches the entry. */
        dir = make_export(fhir, TENANT_A);
        p = get_line(proofs_of(dir), 0);
        char lh[2 * HL + 1];
        memcpy(lh, strstr(p, "\"leaf_hash\":\"") + 13, 2 * HL);
        lh[2 * HL] = '\0';
        free(p);
        char other[2 * HL + 1];
        memcpy(other, lh, sizeof other);
        other[0] = other[0] == 'a' ? 'b' : 'a';
        replace_in(proofs_of(dir), 0, lh, other);
        expect_fail(dir, 1, 0, "leaf_hash");
    }
}

static void test_wrong_key_or_checkpoint(void **state)
{
    (void)state;
    for (int fhir = 0; fhir <= 1; fhir++) {
        /* The checkpoint signed by another key under the log's name. */
        const char *dir = make_export(fhir, TENANT_A);
        spit(in_dir(dir, AUDIT_EXPORT_CHECKPOINT_FILE), g.other_note, strlen(g.other_note));
        expect_fail(dir, 0, UINT64_MAX, "signature does not verify");
        /* ... which, with the statement signed by it too, verifies with the other key: the key is what the
         * verifier trusts. */
        uint64_t seqs[LOG_SIZE];
        size_t n_seqs = seqs_of(TENANT_A, seqs);
        char *st = sign_statement(TENANT_A, fhir, LOG_SIZE, seqs, n_seqs, g.other_key);
        spit(statement_of(dir), st, strlen(st));
        free(st);
        audit_verify_export_report rep;
        ASSERT_OK(audit_verify_export(dir, g.other_vkey, NULL, &rep));

        /* A genuine export checked with the wrong key. */
        dir = make_export(fhir, TENANT_A);
        expect_fail_with(dir, g.other_vkey, 0, UINT64_MAX, "signature does not verify");

        /* The signed size changed in the note. */
        dir = make_export(fhir, TENANT_A);
        char size_line[32], other_line[32];
        snprintf(size_line, sizeof size_line, "\n%d\n", LOG_SIZE);
        snprintf(other_line, sizeof other_line, "\n%d\n", LOG_SIZE + 1);
        replace_in(in_dir(dir, AUDIT_EXPORT_CHECKPOINT_FILE), SIZE_MAX, size_line, other_line);
        expect_fail(dir, 0, UINT64_MAX, "signature does not verify");

        /* Not a signed note at all. */
        dir = make_export(fhir, TENANT_A);
        spit(in_dir(dir, AUDIT_EXPORT_CHECKPOINT_FILE), "hello\n", 6);
        expect_fail(dir, 0, UINT64_MAX, "not a well-formed signed checkpoint");

        /* A genuine checkpoint of another (larger) tree: the manifest no longer matches it... */
        dir = make_export(fhir, TENANT_A);
        spit(in_dir(dir, AUDIT_EXPORT_CHECKPOINT_FILE), g.big_note, strlen(g.big_note));
        expect_fail(dir, 0, UINT64_MAX, "tree_size is not the checkpoint's");
        /* ... and with the manifest edited to match, the proofs do not verify against it. */
        char from[128], to[128], hex[2 * HL + 1], big_hex[2 * HL + 1];
        size_t n = 0;
        ASSERT_OK(acrypto_hex_encode(g.root, HL, hex, sizeof hex, &n));
        ASSERT_OK(acrypto_hex_encode(g.big_root, HL, big_hex, sizeof big_hex, &n));
        snprintf(from, sizeof from, "\"tree_size\":%d,\"root_hash\":\"%s\"", LOG_SIZE, hex);
        snprintf(to, sizeof to, "\"tree_size\":%d,\"root_hash\":\"%s\"", LOG_SIZE + 5, big_hex);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, from, to);
        expect_fail(dir, 0, UINT64_MAX, "export statement: tree size is not the checkpoint's");
        /* ... and with a statement for that tree too, the proofs do not verify against it. */
        st = sign_statement(TENANT_A, fhir, LOG_SIZE + 5, seqs, n_seqs, g.key);
        spit(statement_of(dir), st, strlen(st));
        free(st);
        expect_fail(dir, 1, 0, "inclusion proof does not verify");
    }
}

static void test_manifest_edited(void **state)
{
    (void)state;
    char from[64], to[64], hex[2 * HL + 1], other[2 * HL + 1];
    size_t n = 0;
    ASSERT_OK(acrypto_hex_encode(g.root, HL, hex, sizeof hex, &n));
    memcpy(other, hex, sizeof other);
    other[10] = other[10] == 'f' ? 'e' : 'f';
    for (int fhir = 0; fhir <= 1; fhir++) {
        const char *dir = make_export(fhir, TENANT_A);
        snprintf(from, sizeof from, "\"count\":%zu,", a_count());
        snprintf(to, sizeof to, "\"count\":%zu,", a_count() + 1);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, from, to);
        expect_fail(dir, 0, UINT64_MAX, "count is not the number of events");

        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, hex, other);
        expect_fail(dir, 0, UINT64_MAX, "root_hash is not the checkpoint's");

        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, "\"origin\":\"alma.", "\"origin\":\"evil.");
        expect_fail(dir, 0, UINT64_MAX, "origin is not the checkpoint's");

        /* The tenant: the signed statement names another. */
        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, "\"tenant_id\":\"tenant-a\"",
                   "\"tenant_id\":\"tenant-b\"");
        expect_fail(dir, 0, UINT64_MAX, "export statement: tenant is not the manifest's");

        /* The filter: the manifest no longer says what the log was asked for. */
        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, "\"start_time\":\"2026-11-01",
                   "\"start_time\":\"2026-10-01");
        expect_fail(dir, 0, UINT64_MAX, "manifest: filter is not the export statement's");
        /* ... but the same object spelt differently (key order) is the same filter. */
        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, "\"filter\":" FILTER_A,
                   "\"filter\":{\"tenant_id\":\"tenant-a\", \"start_time\":\"2026-11-01T00:00:00.000000Z\"}");
        expect_ok(dir, a_count());

        /* The content: the files the manifest names are not there. */
        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, fhir ? "\"fhir-ndjson\"" : "\"jsonl\"",
                   fhir ? "\"jsonl\"" : "\"fhir-ndjson\"");
        audit_verify_export_report rep;
        base_result r = audit_verify_export(dir, g.vkey, NULL, &rep);
        assert_int_equal(r.err, BASE_ERR_IO);
        assert_int_equal(audit_verify_exit_code(r), AUDIT_VERIFY_EXIT_USAGE);

        /* An unknown version or format. */
        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, "\"version\":1", "\"version\":2");
        expect_fail(dir, 0, UINT64_MAX, "\"version\" is not 1");
        dir = make_export(fhir, TENANT_A);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, "alma-audit-export", "alma-audit-exporT");
        expect_fail(dir, 0, UINT64_MAX, "\"format\"");
        dir = make_export(fhir, TENANT_A);
        spit(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), "[]\n", 3);
        expect_fail(dir, 0, UINT64_MAX, "manifest.json: not a JSON object");
    }
}

static void test_missing_manifest_is_incomplete(void **state)
{
    (void)state;
    const char *dir = make_export(false, TENANT_A);
    assert_int_equal(unlink(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE)), 0);
    audit_verify_export_report rep;
    base_result r = audit_verify_export(dir, g.vkey, NULL, &rep);
    assert_int_equal(r.err, BASE_ERR_NOT_FOUND);
    assert_string_equal(base_error_message(), "incomplete export: no manifest.json");
    assert_int_equal(audit_verify_exit_code(r), AUDIT_VERIFY_EXIT_USAGE);

    /* An export whose writer was freed before finish: every line is written, the manifest is not. */
    dir = new_path("interrupted");
    audit_export_writer *w = NULL;
    ASSERT_OK(audit_export_writer_open(dir, true, TENANT_A, &w));
    ASSERT_OK(audit_export_writer_checkpoint(w, g.note, strlen(g.note)));
    write_line(w, 0, true);
    write_line(w, 2, true);
    assert_int_equal(audit_export_writer_count(w), 2);
    audit_export_writer_free(w);
    r = audit_verify_export(dir, g.vkey, NULL, &rep);
    assert_int_equal(r.err, BASE_ERR_NOT_FOUND);

    /* No statement: incomplete as well (the stream ended before the log's last chunk). */
    dir = make_export(true, TENANT_A);
    assert_int_equal(unlink(statement_of(dir)), 0);
    r = audit_verify_export(dir, g.vkey, NULL, &rep);
    assert_int_equal(r.err, BASE_ERR_NOT_FOUND);
    assert_string_equal(base_error_message(), "incomplete export: no statement");
    assert_int_equal(audit_verify_exit_code(r), AUDIT_VERIFY_EXIT_USAGE);

    /* Other missing files are unreadable exports (exit 2), not failed verifications. */
    dir = make_export(false, TENANT_A);
    assert_int_equal(unlink(proofs_of(dir)), 0);
    r = audit_verify_export(dir, g.vkey, NULL, &rep);
    assert_int_equal(r.err, BASE_ERR_IO);
    dir = make_export(false, TENANT_A);
    assert_int_equal(unlink(in_dir(dir, AUDIT_EXPORT_CHECKPOINT_FILE)), 0);
    r = audit_verify_export(dir, g.vkey, NULL, &rep);
    assert_int_equal(r.err, BASE_ERR_IO);
    r = audit_verify_export(new_path("nothing"), g.vkey, NULL, &rep);
    assert_int_equal(r.err, BASE_ERR_IO);
}

static void test_other_tenant_inserted(void **state)
{
    (void)state;
    /* tenant-b's seq 4 (line 2 of its own export) goes between tenant-a's seqs 3 and 5 (before line 4),
     * with its own valid inclusion proof: everything verifies but the tenant. */
    for (int fhir = 0; fhir <= 1; fhir++) {
        const char *b = make_export(fhir, TENANT_B);
        char *ev = get_line(events_of(b, fhir), 1);
        char *pr = get_line(proofs_of(b), 1);
        assert_non_null(strstr(pr, "{\"seq\":4,"));
        const char *dir = make_export(fhir, TENANT_A);
        insert_line(events_of(dir, fhir), 3, ev);
        insert_line(proofs_of(dir), 3, pr);
        expect_fail(dir, 4, 4, "entry \"tenant_id\" is not the export's tenant");
        free(ev);
        free(pr);
    }
}

static void test_malformed_lines(void **state)
{
    (void)state;
    /* A last line without its newline (a truncated copy). */
    const char *dir = make_export(false, TENANT_A);
    size_t len;
    char *buf = slurp(events_of(dir, false), &len);
    spit(events_of(dir, false), buf, len - 1);
    free(buf);
    expect_fail(dir, a_count(), UINT64_MAX, "last line has no newline");

    /* A line over the bound, without reading it all into memory. */
    dir = make_export(false, TENANT_A);
    size_t big = AUDIT_ENTRY_MAX + 10;
    char *line = malloc(big + 1);
    assert_non_null(line);
    memset(line, 'x', big);
    line[big] = '\0';
    insert_line(events_of(dir, false), 2, line);
    free(line);
    expect_fail(dir, 3, UINT64_MAX, "line longer than 65536 bytes");

    /* A proofs line that is not JSON, an empty events line, a proof line with an unknown key. */
    dir = make_export(false, TENANT_A);
    replace_in(proofs_of(dir), 6, "{\"seq\"", "[\"seq\"");
    expect_fail(dir, 7, UINT64_MAX, "proofs.jsonl: line does not start with {\"seq\":");
    /* Only the writer's exact bytes: the same object spelt with a space is refused. */
    dir = make_export(false, TENANT_A);
    replace_in(proofs_of(dir), 6, "\"proof\":[", "\"proof\": [");
    expect_fail(dir, 7, a_seq(6), "unexpected key or order");
    dir = make_export(false, TENANT_A);
    replace_in(proofs_of(dir), 6, "{\"seq\":", "{\"seq\":0");
    expect_fail(dir, 7, UINT64_MAX, "\"seq\" is not a decimal integer");
    dir = make_export(false, TENANT_A);
    delete_line(events_of(dir, false), 6);
    insert_line(events_of(dir, false), 6, "");
    expect_fail(dir, 7, a_seq(6), "empty line");
    dir = make_export(false, TENANT_A);
    replace_in(proofs_of(dir), 6, "\"proof\":", "\"extra\":1,\"proof\":");
    expect_fail(dir, 7, a_seq(6), "unexpected key");
    /* An "entry" in a jsonl export is not silently ignored. */
    dir = make_export(false, TENANT_A);
    replace_in(proofs_of(dir), 6, "\"proof\":", "\"entry\":\"e30=\",\"proof\":");
    expect_fail(dir, 7, a_seq(6), "unexpected key");
    /* Uppercase hex is not the format. */
    dir = make_export(false, TENANT_A);
    char *p = get_line(proofs_of(dir), 0);
    char lower[2 * HL + 1], upper[2 * HL + 1];
    memcpy(lower, strstr(p, "\"leaf_hash\":\"") + 13, 2 * HL);
    lower[2 * HL] = '\0';
    free(p);
    for (size_t i = 0; i <= 2 * HL; i++)
        upper[i] = lower[i] >= 'a' && lower[i] <= 'f' ? (char)(lower[i] - 'a' + 'A') : lower[i];
    replace_in(proofs_of(dir), 0, lower, upper);
    expect_fail(dir, 1, 0, "\"leaf_hash\" is not 64 lowercase hex digits");
    /* A seq beyond the checkpoint's tree. */
    dir = make_export(false, TENANT_A);
    char last[32], beyond[32];
    snprintf(last, sizeof last, "{\"seq\":%" PRIu64 ",", a_seq(a_count() - 1));
    snprintf(beyond, sizeof beyond, "{\"seq\":%d,", LOG_SIZE);
    replace_in(proofs_of(dir), a_count() - 1, last, beyond);
    expect_fail(dir, a_count(), LOG_SIZE, "seq is not below the checkpoint's tree size");
}

/* ---------------------------------------------------------------------------------------------------------
 * Tests: the command line. */

static int run_tool(const char *const *args, char **ret_out, char **ret_err)
{
    char *argv[16];
    int argc = 0;
    argv[argc++] = "verify";
    for (size_t i = 0; args[i]; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    FILE *out = tmpfile(), *err = tmpfile();
    assert_non_null(out);
    assert_non_null(err);
    int code = audit_verify_run(argc, argv, out, err);
    FILE *files[2] = {out, err};
    char **rets[2] = {ret_out, ret_err};
    for (int k = 0; k < 2; k++) {
        long n = ftell(files[k]);
        assert_true(n >= 0);
        char *text = calloc(1, (size_t)n + 1);
        assert_non_null(text);
        rewind(files[k]);
        assert_int_equal(fread(text, 1, (size_t)n, files[k]), (size_t)n);
        fclose(files[k]);
        if (rets[k])
            *rets[k] = text;
        else
            free(text);
    }
    return code;
}

#define EXPECT_RUN(code, needle_out, needle_err, ...)                                                        \
    do {                                                                                                     \
        const char *args_[] = {__VA_ARGS__, NULL};                                                           \
        char *o_ = NULL, *e_ = NULL;                                                                         \
        int c_ = run_tool(args_, &o_, &e_);                                                                  \
        if (c_ != (code) || !strstr(o_, (needle_out)) || !strstr(e_, (needle_err)))                          \
            fail_msg("line %d: exit %d (want %d)\nstdout: %s\nstderr: %s", __LINE__, c_, (code), o_, e_);    \
        free(o_);                                                                                            \
        free(e_);                                                                                            \
    } while (0)

static void test_tool_exit_codes(void **state)
{
    (void)state;
    const char *dir = make_export(true, TENANT_A);
    char count[64];
    snprintf(count, sizeof count, "OK: %zu events of tenant tenant-a verified", a_count());
    char progress[64];
    snprintf(progress, sizeof progress, "verified %zu of %zu events (100%%)", a_count(), a_count());

    EXPECT_RUN(0, count, progress, "--export", dir, "--vkey", g.vkey);
    /* --quiet: no progress. */
    {
        const char *args[] = {"--export", dir, "--vkey", g.vkey, "--quiet", NULL};
        char *o = NULL, *e = NULL;
        assert_int_equal(run_tool(args, &o, &e), 0);
        assert_non_null(strstr(o, count));
        assert_string_equal(e, "");
        free(o);
        free(e);
    }
    /* --name=value and a key file with a trailing newline. */
    const char *key_file = new_path("vkey");
    char key_text[512];
    snprintf(key_text, sizeof key_text, "%s\n", g.vkey);
    spit(key_file, key_text, strlen(key_text));
    char export_arg[320];
    snprintf(export_arg, sizeof export_arg, "--export=%s", dir);
    EXPECT_RUN(0, count, "", export_arg, "--vkey-file", key_file, "-q");

    /* Does not verify: 1, with line and seq. */
    const char *bad = make_export(false, TENANT_A);
    flip_byte(events_of(bad, false), 1, 30);
    char where[64];
    snprintf(where, sizeof where, "line 2 (seq %" PRIu64 "): ", a_seq(1));
    EXPECT_RUN(1, "", where, "--export", bad, "--vkey", g.vkey);
    EXPECT_RUN(1, "", "signature does not verify", "--export", dir, "--vkey", g.other_vkey);

    /* 2: usage, incomplete, unreadable. */
    const char *incomplete = make_export(false, TENANT_A);
    assert_int_equal(unlink(in_dir(incomplete, AUDIT_EXPORT_MANIFEST_FILE)), 0);
    EXPECT_RUN(2, "", "incomplete export: no manifest.json", "--export", incomplete, "--vkey", g.vkey);
    const char *no_statement = make_export(false, TENANT_A);
    assert_int_equal(unlink(statement_of(no_statement)), 0);
    EXPECT_RUN(2, "", "incomplete export: no statement", "--export", no_statement, "--vkey", g.vkey);
    /* Lines deleted from both files and the manifest's count lowered: 1. */
    const char *cut = make_export(false, TENANT_A);
    delete_line(events_of(cut, false), 4);
    delete_line(proofs_of(cut), 4);
    char from[32], to[32];
    snprintf(from, sizeof from, "\"count\":%zu,", a_count());
    snprintf(to, sizeof to, "\"count\":%zu,", a_count() - 1);
    replace_in(in_dir(cut, AUDIT_EXPORT_MANIFEST_FILE), 0, from, to);
    EXPECT_RUN(1, "", "the export statement does not match the exported lines", "--export", cut, "--vkey",
               g.vkey);
    EXPECT_RUN(2, "", "cannot open", "--export", new_path("absent"), "--vkey", g.vkey);
    EXPECT_RUN(2, "", "--export DIR is required", "--vkey", g.vkey);
    EXPECT_RUN(2, "", "exactly one of --vkey and --vkey-file", "--export", dir);
    EXPECT_RUN(2, "", "exactly one of --vkey and --vkey-file", "--export", dir, "--vkey", g.vkey,
               "--vkey-file", key_file);
    EXPECT_RUN(2, "", "unknown argument", "--export", dir, "--vkey", g.vkey, "--fast");
    EXPECT_RUN(2, "", "--vkey needs a value", "--export", dir, "--vkey");
    EXPECT_RUN(2, "", "given twice", "--export", dir, "--export", dir, "--vkey", g.vkey);
    EXPECT_RUN(2, "", "the verifier key is not valid", "--export", dir, "--vkey", "not-a-key");
    EXPECT_RUN(2, "", "cannot open the verifier key file", "--export", dir, "--vkey-file", new_path("nokey"));
    {
        char *argv[] = {"verify", NULL};
        FILE *devnull = fopen("/dev/null", "w");
        assert_non_null(devnull);
        assert_int_equal(audit_verify_run(1, argv, devnull, devnull), 2);
        fclose(devnull);
    }

    /* --help: usage on stdout, 0, whatever else is given. */
    EXPECT_RUN(0, "Usage: alma-audit verify --export DIR", "", "--help");
    EXPECT_RUN(0, "Exit status: 0", "", "--export", dir, "--help");
}

/* ---------------------------------------------------------------------------------------------------------
 * Tests: writer misuse. */

static void test_writer_misuse(void **state)
{
    (void)state;
    audit_export_writer *w = NULL;
    const char *dir = new_path("misuse");
    ASSERT_ERR(audit_export_writer_open(dir, false, "", &w), BASE_ERR_INVALID);
    ASSERT_ERR(audit_export_writer_open(dir, false, "tenant a", &w), BASE_ERR_INVALID);
    ASSERT_ERR(audit_export_writer_open(NULL, false, TENANT_A, &w), BASE_ERR_INVALID);
    ASSERT_ERR(audit_export_writer_open(in_dir(new_path("no-parent"), "x"), false, TENANT_A, &w),
               BASE_ERR_IO);
    assert_null(w);

    ASSERT_OK(audit_export_writer_open(dir, false, TENANT_A, &w));
    audit_merkle_source src = {leaf_fn, NULL, g.leaves};
    audit_merkle_proof proof;
    ASSERT_OK(audit_merkle_inclusion_proof(&src, 3, LOG_SIZE, &proof));
    const uint8_t(*hashes)[HL] = (const uint8_t(*)[HL])proof.hashes;
    const char *e3 = g.entries[3];
    size_t l3 = g.entry_lens[3];

    /* Before the checkpoint. */
    ASSERT_ERR(audit_export_writer_line(w, 3, e3, l3, e3, l3, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    ASSERT_ERR(audit_export_writer_finish(w), BASE_ERR_INVALID);
    /* Not a signed note. */
    ASSERT_ERR(audit_export_writer_checkpoint(w, "x\n", 2), BASE_ERR_INVALID);
    char *text = NULL;
    size_t text_len = 0;
    ASSERT_OK(audit_checkpoint_format(ORIGIN, LOG_SIZE, g.root, NULL, 0, &text, &text_len));
    ASSERT_ERR(audit_export_writer_checkpoint(w, text, text_len), BASE_ERR_INVALID); /* no signature */
    free(text);
    ASSERT_OK(audit_export_writer_checkpoint(w, g.note, strlen(g.note)));
    ASSERT_ERR(audit_export_writer_checkpoint(w, g.note, strlen(g.note)), BASE_ERR_INVALID);

    /* Wrong leaf hash, json != entry, newline in json, proof of another leaf or tree, wrong tenant. */
    ASSERT_ERR(audit_export_writer_line(w, 3, e3, l3, e3, l3, g.leaves[4], hashes, proof.len),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "leaf_hash"));
    ASSERT_ERR(audit_export_writer_line(w, 3, e3, l3 - 1, e3, l3, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    char *nl = strdup(e3);
    nl[5] = '\n';
    ASSERT_ERR(audit_export_writer_line(w, 3, nl, l3, nl, l3, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    free(nl);
    ASSERT_ERR(audit_export_writer_line(w, 3, e3, l3, e3, l3, g.leaves[3], hashes, proof.len - 1),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "inclusion proof"));
    ASSERT_ERR(audit_export_writer_line(w, 4, g.entries[4], g.entry_lens[4], g.entries[4], g.entry_lens[4],
                                        g.leaves[4], hashes, proof.len),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "tenant"));
    /* The entry's seq is not the seq given. */
    ASSERT_ERR(audit_export_writer_line(w, 5, e3, l3, e3, l3, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "\"seq\""));
    /* Nothing was written by the failed calls. */
    assert_int_equal(audit_export_writer_count(w), 0);

    /* Order: strictly increasing, below the tree size. */
    write_line(w, 3, false);
    ASSERT_ERR(audit_export_writer_line(w, 3, e3, l3, e3, l3, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "not above the previous"));
    ASSERT_ERR(audit_export_writer_line(w, 2, g.entries[2], g.entry_lens[2], g.entries[2], g.entry_lens[2],
                                        g.leaves[2], hashes, proof.len),
               BASE_ERR_INVALID);
    ASSERT_ERR(audit_export_writer_line(w, LOG_SIZE, e3, l3, e3, l3, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "tree size"));
    write_line(w, 5, false);

    /* Filters must be JSON objects. */
    ASSERT_ERR(audit_export_writer_set_filter(w, "[1]"), BASE_ERR_INVALID);
    ASSERT_ERR(audit_export_writer_set_filter(w, "{"), BASE_ERR_INVALID);
    ASSERT_OK(audit_export_writer_set_filter(w, "{\"action\":\"ACTION_READ\"}"));
    /* No finish without the statement. */
    ASSERT_ERR(audit_export_writer_finish(w), BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "statement"));
    const uint64_t written[] = {3, 5};
    finish_export(w, TENANT_A, false, written, 2);
    ASSERT_ERR(audit_export_writer_finish(w), BASE_ERR_CONFLICT);
    ASSERT_ERR(audit_export_writer_line(w, 6, g.entries[6], g.entry_lens[6], g.entries[6], g.entry_lens[6],
                                        g.leaves[6], hashes, proof.len),
               BASE_ERR_CONFLICT);
    audit_export_writer_free(w);
    w = NULL;
    expect_ok(dir, 2);

    /* The directory must be new or empty. */
    ASSERT_ERR(audit_export_writer_open(dir, false, TENANT_A, &w), BASE_ERR_EXISTS);
    const char *file = new_path("plain-file");
    spit(file, "x", 1);
    ASSERT_ERR(audit_export_writer_open(file, false, TENANT_A, &w), BASE_ERR_EXISTS);
    const char *empty = new_path("empty-dir");
    assert_int_equal(mkdir(empty, 0700), 0);
    ASSERT_OK(audit_export_writer_open(empty, true, TENANT_A, &w));

    /* fhir: the json line must be the entry's FHIR AuditEvent; an entry must be given. */
    ASSERT_OK(audit_export_writer_checkpoint(w, g.note, strlen(g.note)));
    char *fhir = NULL;
    size_t fhir_len = 0;
    ASSERT_OK(audit_entry_to_fhir(e3, l3, &fhir, &fhir_len));
    ASSERT_ERR(audit_export_writer_line(w, 3, e3, l3, e3, l3, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "audit_entry_to_fhir"));
    ASSERT_ERR(audit_export_writer_line(w, 3, fhir, fhir_len, NULL, 0, g.leaves[3], hashes, proof.len),
               BASE_ERR_INVALID);
    ASSERT_OK(audit_export_writer_line(w, 3, fhir, fhir_len, e3, l3, g.leaves[3], hashes, proof.len));
    free(fhir);
    ASSERT_OK(audit_export_writer_set_filter(w, NULL));
    audit_export_writer_free(w); /* unfinished: stays incomplete */
    audit_verify_export_report rep;
    ASSERT_ERR(audit_verify_export(empty, g.vkey, NULL, &rep), BASE_ERR_NOT_FOUND);
    audit_export_writer_free(NULL);
}

/* ---------------------------------------------------------------------------------------------------------
 * Tests: the export statement. */

static void test_statement_tampered(void **state)
{
    (void)state;
    uint64_t seqs[LOG_SIZE];
    size_t n = seqs_of(TENANT_A, seqs);
    for (int fhir = 0; fhir <= 1; fhir++) {
        /* Signed by another key under the log's name. */
        const char *dir = make_export(fhir, TENANT_A);
        char *st = sign_statement(TENANT_A, fhir, LOG_SIZE, seqs, n, g.other_key);
        spit(statement_of(dir), st, strlen(st));
        free(st);
        expect_fail(dir, 0, UINT64_MAX, "export statement: the signature does not verify with the given key");

        /* Its count lowered (to match lines deleted from both files): the signature breaks. */
        dir = make_export(fhir, TENANT_A);
        char from[32], to[32];
        snprintf(from, sizeof from, "\ncount %zu\n", n);
        snprintf(to, sizeof to, "\ncount %zu\n", n - 1);
        replace_in(statement_of(dir), SIZE_MAX, from, to);
        delete_line(events_of(dir, fhir), 7);
        delete_line(proofs_of(dir), 7);
        snprintf(from, sizeof from, "\"count\":%zu,", n);
        snprintf(to, sizeof to, "\"count\":%zu,", n - 1);
        replace_in(in_dir(dir, AUDIT_EXPORT_MANIFEST_FILE), 0, from, to);
        expect_fail(dir, 0, UINT64_MAX, "export statement: the signature does not verify");

        /* A genuine statement of another tenant's export. */
        dir = make_export(fhir, TENANT_A);
        const char *b = make_export(fhir, TENANT_B);
        size_t len = 0;
        st = slurp(statement_of(b), &len);
        spit(statement_of(dir), st, len);
        free(st);
        expect_fail(dir, 0, UINT64_MAX, "export statement: tenant is not the manifest's");

        /* A genuine statement of the same lines in the other content. */
        dir = make_export(fhir, TENANT_A);
        st = sign_statement(TENANT_A, !fhir, LOG_SIZE, seqs, n, g.key);
        spit(statement_of(dir), st, strlen(st));
        free(st);
        expect_fail(dir, 0, UINT64_MAX, "export statement: format is not the manifest's content");

        /* A genuine statement of fewer lines (an export of the first n - 1): one line too many. */
        dir = make_export(fhir, TENANT_A);
        st = sign_statement(TENANT_A, fhir, LOG_SIZE, seqs, n - 1, g.key);
        spit(statement_of(dir), st, strlen(st));
        free(st);
        expect_fail(dir, 0, UINT64_MAX, "the export statement does not match the exported lines");

        /* The same count, another line: a line of the export replaced by one not in the statement. */
        dir = make_export(fhir, TENANT_A);
        uint64_t other[LOG_SIZE];
        memcpy(other, seqs, n * sizeof *other);
        other[5] = seqs[4]; /* a statement of lines 1..5, 5, 7..n: the lines are not those */
        st = sign_statement(TENANT_A, fhir, LOG_SIZE, other, n, g.key);
        spit(statement_of(dir), st, strlen(st));
        free(st);
        expect_fail(dir, 0, UINT64_MAX, "the export statement does not match the exported lines");

        /* Not a signed note, or empty. */
        dir = make_export(fhir, TENANT_A);
        spit(statement_of(dir), "hello\n", 6);
        expect_fail(dir, 0, UINT64_MAX, "export statement: not a well-formed signed note");
        spit(statement_of(dir), "", 0);
        expect_fail(dir, 0, UINT64_MAX, "export statement: not a well-formed signed note");
        /* The checkpoint in place of the statement: signed by the key, but not a statement. */
        spit(statement_of(dir), g.note, strlen(g.note));
        expect_fail(dir, 0, UINT64_MAX, "export statement: the first line is not");
    }
}

static void test_statement_text(void **state)
{
    (void)state;
    audit_export_statement st = {
        .filter = FILTER_A, .filter_len = strlen(FILTER_A), .tree_size = 10, .count = 3};
    snprintf(st.origin, sizeof st.origin, "%s", ORIGIN);
    snprintf(st.tenant_id, sizeof st.tenant_id, "%s", TENANT_A);
    memset(st.leaves, 0xab, HL);
    char *text = NULL;
    size_t len = 0;
    ASSERT_OK(audit_export_statement_format(&st, &text, &len));
    const char *want =
        "alma-audit-export/v1\norigin " ORIGIN "\ntenant tenant-a\nfilter " FILTER_A
        "\nformat jsonl\ntree 10\ncount 3\nleaves q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n";
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    audit_export_statement back;
    ASSERT_OK(audit_export_statement_parse(text, len, &back));
    assert_string_equal(back.origin, ORIGIN);
    assert_string_equal(back.tenant_id, TENANT_A);
    assert_int_equal(back.filter_len, strlen(FILTER_A));
    assert_memory_equal(back.filter, FILTER_A, back.filter_len);
    assert_false(back.fhir);
    assert_int_equal(back.tree_size, 10);
    assert_int_equal(back.count, 3);
    assert_memory_equal(back.leaves, st.leaves, HL);
    free(text);

    /* Strict: each of these is refused. */
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"alma-audit-export/v2\n", "the first line"},
        {"alma-audit-export/v1\norigin \ntenant a\n", "origin is empty"},
        {"alma-audit-export/v1\norigin o\ntenant a b\n", "tenant is not"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {}\n", "\"tenant_id\" is not the statement's"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"b\"}\n",
         "is not the statement's"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter [\"a\"]\n", "not a JSON object"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"a\",\"tenant_id\":\"a\"}\n",
         "not a JSON object"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"a\"}\nformat csv\n", "format"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"a\"}\nformat jsonl\ntree 010\n",
         "tree size"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"a\"}\nformat jsonl\ntree "
         "9\ncount "
         "10\n",
         "larger than the tree size"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"a\"}\nformat jsonl\ntree "
         "9\ncount "
         "1\nleaves AAAA\n",
         "leaves digest"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"a\"}\nformat jsonl\ntree "
         "9\ncount "
         "1\nleaves q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\nmore x\n",
         "more than eight lines"},
        {"alma-audit-export/v1\norigin o\ntenant a\nfilter {\"tenant_id\":\"a\"}\nformat jsonl\ncount 1\n",
         "line 6"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        base_result r = audit_export_statement_parse(bad[i].text, strlen(bad[i].text), &back);
        if (r.err != BASE_ERR_INVALID || !strstr(base_error_message(), bad[i].needle))
            fail_msg("case %zu: %s (%s), want invalid / %s", i, base_err_name(r.err), base_error_message(),
                     bad[i].needle);
    }
    /* A field that would break the text is refused by the formatter. */
    snprintf(st.origin, sizeof st.origin, "%s", "a\nb");
    ASSERT_ERR(audit_export_statement_format(&st, &text, &len), BASE_ERR_INVALID);
    snprintf(st.origin, sizeof st.origin, "%s", ORIGIN);
    st.count = 11;
    ASSERT_ERR(audit_export_statement_format(&st, &text, &len), BASE_ERR_INVALID);

    /* The filter line: only the fields set, enum names, microsecond UTC times, sorted keys, ASCII. */
    Alma__Audit__V1__EventFilter f;
    Google__Protobuf__Timestamp start, end;
    alma__audit__v1__event_filter__init(&f);
    google__protobuf__timestamp__init(&start);
    google__protobuf__timestamp__init(&end);
    start.seconds = 1793491200;
    start.nanos = 123456789;
    end.seconds = 1796083200;
    f.tenant_id = TENANT_A;
    f.patient_ref = PT;
    f.actor_principal_id = "usr_\xc3\xa9";
    f.action = ALMA__AUDIT__V1__ACTION__ACTION_DISCLOSE;
    f.purpose = ALMA__COMMON__V1__PURPOSE_OF_USE__PURPOSE_OF_USE_TREATMENT;
    f.outcome = ALMA__AUDIT__V1__OUTCOME__OUTCOME_DENIED;
    f.start_time = &start;
    f.end_time = &end;
    char *json = NULL;
    ASSERT_OK(audit_export_filter_json(&f, &json, &len));
    assert_string_equal(json, "{\"action\":\"ACTION_DISCLOSE\",\"actor_principal_id\":\"usr_\\u00E9\","
                              "\"end_time\":\"2026-12-01T00:00:00.000000Z\",\"outcome\":\"OUTCOME_DENIED\","
                              "\"patient_ref\":\"" PT "\",\"purpose\":\"PURPOSE_OF_USE_TREATMENT\","
                              "\"start_time\":\"2026-11-01T00:00:00.123456Z\",\"tenant_id\":\"tenant-a\"}");
    free(json);
    f.action = (Alma__Audit__V1__Action)99;
    ASSERT_ERR(audit_export_filter_json(&f, &json, &len), BASE_ERR_INVALID);
    f.action = ALMA__AUDIT__V1__ACTION__ACTION_UNSPECIFIED;
    f.actor_principal_id = "usr_\xff";
    ASSERT_ERR(audit_export_filter_json(&f, &json, &len), BASE_ERR_INVALID);
    f.actor_principal_id = "";
    start.seconds = -1;
    ASSERT_ERR(audit_export_filter_json(&f, &json, &len), BASE_ERR_INVALID);
    f.start_time = NULL;
    f.tenant_id = "";
    ASSERT_ERR(audit_export_filter_json(&f, &json, &len), BASE_ERR_INVALID);
}

static void test_writer_checks_the_statement(void **state)
{
    (void)state;
    const char *dir = new_path("writer-statement");
    audit_export_writer *w = NULL;
    ASSERT_OK(audit_export_writer_open(dir, true, TENANT_A, &w));
    uint64_t seqs[3] = {0, 2, 3};
    char *st = sign_statement(TENANT_A, true, LOG_SIZE, seqs, 3, g.key);
    /* Not before the checkpoint. */
    ASSERT_ERR(audit_export_writer_statement(w, st, strlen(st)), BASE_ERR_INVALID);
    ASSERT_OK(audit_export_writer_checkpoint(w, g.note, strlen(g.note)));
    for (size_t i = 0; i < 3; i++)
        write_line(w, seqs[i], true);
    free(st);

    /* Each field must describe what was written; nothing is written meanwhile. */
    static const struct {
        const char *tenant;
        bool fhir;
        uint64_t tree;
        size_t n;
        bool swap;
        const char *needle;
    } bad[] = {
        {TENANT_B, true, LOG_SIZE, 3, false, "tenant"},
        {TENANT_A, false, LOG_SIZE, 3, false, "format"},
        {TENANT_A, true, LOG_SIZE + 5, 3, false, "tree size"},
        {TENANT_A, true, LOG_SIZE, 2, false, "count"},
        {TENANT_A, true, LOG_SIZE, 3, true, "leaves digest"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        uint64_t order[3] = {0, 2, 3};
        if (bad[i].swap) {
            order[1] = 3;
            order[2] = 2;
        }
        st = sign_statement(bad[i].tenant, bad[i].fhir, bad[i].tree, order, bad[i].n, g.key);
        base_result r = audit_export_writer_statement(w, st, strlen(st));
        if (r.err != BASE_ERR_INVALID || !strstr(base_error_message(), bad[i].needle))
            fail_msg("case %zu: %s (%s), want invalid / %s", i, base_err_name(r.err), base_error_message(),
                     bad[i].needle);
        free(st);
        assert_int_equal(access(statement_of(dir), F_OK), -1);
    }
    /* Another origin; not a signed note; not a statement. */
    char *text = NULL;
    size_t text_len = 0;
    audit_export_statement other = {
        .filter = FILTER_A, .filter_len = strlen(FILTER_A), .fhir = true, .tree_size = LOG_SIZE, .count = 3};
    snprintf(other.origin, sizeof other.origin, "%s", "evil.example/audit");
    snprintf(other.tenant_id, sizeof other.tenant_id, "%s", TENANT_A);
    ASSERT_OK(audit_export_statement_format(&other, &text, &text_len));
    char *note = NULL;
    size_t note_len = 0;
    ASSERT_OK(audit_note_sign(text, text_len, ORIGIN, g.key, &note, &note_len));
    ASSERT_ERR(audit_export_writer_statement(w, note, note_len), BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "origin"));
    free(note);
    ASSERT_ERR(audit_export_writer_statement(w, text, text_len), BASE_ERR_INVALID); /* no signature */
    free(text);
    ASSERT_ERR(audit_export_writer_statement(w, g.note, strlen(g.note)), BASE_ERR_INVALID);
    ASSERT_ERR(audit_export_writer_statement(w, NULL, 0), BASE_ERR_INVALID);

    /* Once a statement was offered, no more lines; the right one is accepted, once. */
    audit_merkle_source src = {leaf_fn, NULL, g.leaves};
    audit_merkle_proof proof;
    ASSERT_OK(audit_merkle_inclusion_proof(&src, 5, LOG_SIZE, &proof));
    char *fhir = NULL;
    size_t fhir_len = 0;
    ASSERT_OK(audit_entry_to_fhir(g.entries[5], g.entry_lens[5], &fhir, &fhir_len));
    ASSERT_ERR(audit_export_writer_line(w, 5, fhir, fhir_len, g.entries[5], g.entry_lens[5], g.leaves[5],
                                        (const uint8_t(*)[HL])proof.hashes, proof.len),
               BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "after the statement"));
    free(fhir);
    st = sign_statement(TENANT_A, true, LOG_SIZE, seqs, 3, g.key);
    ASSERT_OK(audit_export_writer_statement(w, st, strlen(st)));
    ASSERT_ERR(audit_export_writer_statement(w, st, strlen(st)), BASE_ERR_INVALID);
    assert_non_null(strstr(base_error_message(), "twice"));
    ASSERT_OK(audit_export_writer_finish(w));
    audit_export_writer_free(w);
    /* The file is the note as given, 0600. */
    size_t len = 0;
    char *file = slurp(statement_of(dir), &len);
    assert_int_equal(len, strlen(st));
    assert_memory_equal(file, st, len);
    free(file);
    free(st);
    struct stat sb;
    assert_int_equal(stat(statement_of(dir), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    expect_ok(dir, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_exports_verify),
        cmocka_unit_test(test_export_files_are_the_format),
        cmocka_unit_test(test_reader_roundtrip),
        cmocka_unit_test(test_empty_export_verifies),
        cmocka_unit_test(test_changed_byte_in_entry),
        cmocka_unit_test(test_deleted_line),
        cmocka_unit_test(test_swapped_lines),
        cmocka_unit_test(test_fhir_line_edited),
        cmocka_unit_test(test_proof_changed),
        cmocka_unit_test(test_wrong_key_or_checkpoint),
        cmocka_unit_test(test_manifest_edited),
        cmocka_unit_test(test_missing_manifest_is_incomplete),
        cmocka_unit_test(test_other_tenant_inserted),
        cmocka_unit_test(test_malformed_lines),
        cmocka_unit_test(test_tool_exit_codes),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_statement_tampered),
        cmocka_unit_test(test_statement_text),
        cmocka_unit_test(test_writer_checks_the_statement),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
