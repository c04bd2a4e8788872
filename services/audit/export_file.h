/* The on-disk export of the audit log (format version 1): a writer for the service and the CLI, a streaming
 * reader for the offline verifier (verify_tool.h). docs/audit-export.md explains it for a recipient.
 *
 * An export is a directory of six files (mode 0600 in a 0700 directory: it is audit data):
 *
 *   checkpoint     the C2SP signed note (checkpoint.h) exactly as the service served it. Every proof in the
 *                  export is for this checkpoint's tree size and root.
 *   events.jsonl   (content "jsonl") line i is the canonical entry of event i (entry.h), then "\n". Those
 *                  bytes are the leaf: leaf_hash = SHA-256(0x00 || line without its "\n").
 *   events.ndjson  (content "fhir-ndjson") line i is the FHIR R4 AuditEvent of event i, exactly
 *                  audit_entry_to_fhir(entry), then "\n".
 *   proofs.jsonl   line i (same order) is exactly these bytes (compact JSON, keys in this order):
 *                      {"seq":S,"leaf_hash":"<64 lowercase hex>","proof":["<64 lowercase hex>",...]}
 *                  and for fhir-ndjson content
 *                      {"seq":S,"leaf_hash":"...","proof":[...],"entry":"<standard base64 of the entry>"}
 *                  (the entry is the leaf's bytes, which the FHIR resource is not). S is decimal without
 *                  leading zeros; proof is the RFC 9162 inclusion proof of leaf S in the checkpoint's tree,
 *                  from the leaf up. The reader accepts no other spelling of the same object.
 *   statement      the export statement exactly as the service served it (the last chunk of ExportEvents): a
 *                  C2SP signed note by the log's key, under the checkpoint's key name, whose text is these
 *                  eight lines, each ending in "\n":
 *                      alma-audit-export/v1
 *                      origin <the checkpoint's origin>
 *                      tenant <tenant_id>
 *                      filter <JSON object>
 *                      format <jsonl|fhir-ndjson>
 *                      tree <the checkpoint's tree size, decimal>
 *                      count <number of lines, decimal>
 *                      leaves <standard base64 of SHA-256(leaf_hash_1 || ... || leaf_hash_count)>
 *                  filter is what the export was asked for: the fields of the request's EventFilter that were
 *                  set (tenant_id always; patient_ref, actor_principal_id; action, purpose, outcome as enum
 *                  names; start_time, end_time as RFC 3339 UTC with 6 fractional digits), compact JSON with
 *                  sorted keys, pure ASCII (audit_export_filter_json). leaves hashes the 32-byte leaf hashes
 *                  of the exported lines in export order (SHA-256 of nothing for an empty export). Decimals
 *                  have no leading zeros. So the log vouches for exactly which events went out: deleting,
 *                  adding or reordering lines changes count or leaves, which only the log's key can re-sign.
 *   manifest.json  written LAST (temporary name, fsync, rename, fsync of the directory), so an export cut
 *                  short has no manifest and is refused as incomplete. One JSON object and "\n":
 *                      {"format":"alma-audit-export","version":1,"content":"jsonl"|"fhir-ndjson",
 *                       "tenant_id":"...","count":N,"tree_size":T,"root_hash":"<64 hex>",
 *                       "origin":"<checkpoint origin>","created":"<RFC 3339 UTC>","filter":{...}}
 *                  count is the number of lines of events.* and of proofs.jsonl; tree_size, root_hash and
 *                  origin repeat the checkpoint's; filter is the statement's filter object (what the
 *                  export was asked for).
 *
 * Events appear in strictly increasing seq order; every seq is below the checkpoint's tree size. Lines are
 * bounded: an entry AUDIT_ENTRY_MAX bytes, a FHIR line AUDIT_EXPORT_FHIR_LINE_MAX, a proofs line
 * AUDIT_EXPORT_PROOF_LINE_MAX. The manifest is not signed: it describes the export; the checkpoint and the
 * statement are what the log vouches for (the verifier compares the three).
 *
 * Conventions (common/base/result.h): fallible functions are BASE_MUST_USE; ret_* outputs are written only
 * on success. Messages may name a path, never the content of an entry (audit data) or of a line. Writer
 * and reader objects are not thread-safe; distinct ones may be used by distinct threads. */
#ifndef ALMA_AUDIT_EXPORT_FILE_H
#define ALMA_AUDIT_EXPORT_FILE_H

#include "base/result.h"
#include "checkpoint.h"
#include "entry.h"
#include "merkle.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_EXPORT_FORMAT  "alma-audit-export"
#define AUDIT_EXPORT_VERSION 1

/* File names inside an export directory. */
#define AUDIT_EXPORT_CHECKPOINT_FILE "checkpoint"
#define AUDIT_EXPORT_EVENTS_JSONL    "events.jsonl"
#define AUDIT_EXPORT_EVENTS_NDJSON   "events.ndjson"
#define AUDIT_EXPORT_PROOFS_FILE     "proofs.jsonl"
#define AUDIT_EXPORT_STATEMENT_FILE  "statement"
#define AUDIT_EXPORT_MANIFEST_FILE   "manifest.json"
#define AUDIT_EXPORT_MANIFEST_TMP    "manifest.json.tmp"

/* Content names in the manifest. */
#define AUDIT_EXPORT_CONTENT_JSONL "jsonl"
#define AUDIT_EXPORT_CONTENT_FHIR  "fhir-ndjson"

/* Longest line of events.ndjson, without its "\n". A FHIR AuditEvent is larger than its entry (code systems,
 * codings per role); 16 times the largest entry is far above what any entry maps to. */
#define AUDIT_EXPORT_FHIR_LINE_MAX ((size_t)1 << 20)
/* Longest line of proofs.jsonl, without its "\n": seq, leaf hash, 64 proof hashes and the base64 of the
 * largest entry (87384 characters), with room to spare. */
#define AUDIT_EXPORT_PROOF_LINE_MAX ((size_t)96 * 1024)
/* Largest manifest.json, and largest filter object text given to the writer. */
#define AUDIT_EXPORT_MANIFEST_MAX ((size_t)1 << 20)
#define AUDIT_EXPORT_FILTER_MAX   ((size_t)64 * 1024)
/* A tenant id: 1 to 64 of [A-Za-z0-9._:-] (the validator's rule, validate.h). */
#define AUDIT_EXPORT_TENANT_MAX 64
/* "YYYY-MM-DDTHH:MM:SSZ" */
#define AUDIT_EXPORT_CREATED_LEN 20
/* The first line of an export statement's text (without its "\n"). */
#define AUDIT_EXPORT_STATEMENT_HEADER "alma-audit-export/v1"

/* ---------------------------------------------------------------------------------------------------------
 * Writer.
 *
 * Call order: open, checkpoint (exactly once, first), line (0..n times), statement (exactly once, after the
 * last line), finish, free; set_filter any time before finish. The writer checks what it is given and fails
 * with BASE_ERR_INVALID naming what is wrong, writing nothing for that call (the writer stays usable): a call
 * out of order, a seq not
 * above the previous one or not below the checkpoint's size, a leaf hash that is not SHA-256(0x00 || entry),
 * an entry that is not a version-1 entry of this seq and this tenant, a json line with a newline or NUL,
 * for jsonl json != entry, for fhir json != audit_entry_to_fhir(entry), an inclusion proof that does not
 * verify against the checkpoint, a line or entry over its bound, a statement that does not describe what was
 * written. It does not check the signatures of the checkpoint and the statement (it has no key); the verifier
 * does. IO errors are BASE_ERR_IO naming the file; after one the
 * writer refuses everything but free (BASE_ERR_CONFLICT), since a file may hold part of a line. */
typedef struct audit_export_writer audit_export_writer;

/* Create `dir` (mode 0700; its parent must exist; `dir` must not exist, or be an empty directory) and the
 * events and proofs files in it. fhir selects the content. tenant_id is the one tenant of every event. */
BASE_MUST_USE base_result audit_export_writer_open(const char *dir, bool fhir, const char *tenant_id,
                                                   audit_export_writer **ret);

/* The signed note, written to `checkpoint` as given. Parsed, without its signature checked, for the
 * origin, tree size and root of the manifest and of the proof checks. Must come first, exactly once. */
BASE_MUST_USE base_result audit_export_writer_checkpoint(audit_export_writer *w, const char *signed_note,
                                                         size_t len);

/* One event, in increasing seq order. json is the events line (without "\n"): the entry itself for jsonl,
 * its FHIR AuditEvent for fhir; entry is the canonical entry (== json for jsonl); leaf_hash its leaf hash;
 * proof its inclusion proof (proof_len <= AUDIT_MERKLE_MAX_PROOF hashes) in the checkpoint's tree. */
BASE_MUST_USE base_result audit_export_writer_line(audit_export_writer *w, uint64_t seq, const char *json,
                                                   size_t json_len, const char *entry, size_t entry_len,
                                                   const uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN],
                                                   const uint8_t (*proof)[AUDIT_MERKLE_HASH_LEN],
                                                   size_t proof_len);

/* The export statement (the stream's last chunk), written to `statement` as given, after the last line.
 * Parsed, without its signature checked, and refused unless its origin, tree size, tenant, format, count and
 * leaves digest are those of the checkpoint and of the lines written (the writer hashes the leaf hashes as
 * lines go): a statement that does not describe this export is BASE_ERR_INVALID. The first call ends the
 * lines: a line after it, even after a refused statement, is BASE_ERR_INVALID. Its filter becomes the
 * manifest's "filter". Exactly once; finish fails without it. */
BASE_MUST_USE base_result audit_export_writer_statement(audit_export_writer *w, const char *signed_note,
                                                        size_t len);

/* A description of what was exported for the manifest's "filter": the text of one JSON object (at most
 * AUDIT_EXPORT_FILTER_MAX bytes). The statement's filter replaces it (the statement is what the log signed);
 * it is kept for callers that set it before the stream starts. NULL: none. */
BASE_MUST_USE base_result audit_export_writer_set_filter(audit_export_writer *w, const char *filter_json);

/* Flush and fsync the files, then write manifest.json last (temporary name, fsync, rename, fsync of the
 * directory). Needs the checkpoint and the statement. After success only free is allowed. */
BASE_MUST_USE base_result audit_export_writer_finish(audit_export_writer *w);

/* Lines written so far. */
uint64_t audit_export_writer_count(const audit_export_writer *w);

/* Close and free; NULL is fine. Without a successful finish the directory stays incomplete (no manifest),
 * which the verifier refuses; it is not removed. */
void audit_export_writer_free(audit_export_writer *w);
void audit_export_writer_freep(audit_export_writer **w);

/* ---------------------------------------------------------------------------------------------------------
 * Reader: streams an export in constant memory, whatever its number of lines. It checks the syntax of the
 * files (the manifest's fields, each line's bound and JSON shape) and nothing cryptographic: that is the
 * verifier's job (verify_tool.h), which is built on it.
 *
 * Errors: BASE_ERR_NOT_FOUND when there is no manifest.json ("incomplete export: no manifest.json") or no
 * statement ("incomplete export: no statement"); BASE_ERR_IO when a file cannot be opened or read (message
 * names the path); BASE_ERR_INVALID for a file whose content is not the format (a fixed message naming the
 * file and the rule; for a line, its number is audit_export_reader_line()). */

typedef struct audit_export_manifest {
    bool fhir;                                   /* content "fhir-ndjson" (else "jsonl") */
    char tenant_id[AUDIT_EXPORT_TENANT_MAX + 1]; /* [A-Za-z0-9._:-], checked */
    uint64_t count;
    uint64_t tree_size;
    uint8_t root[AUDIT_MERKLE_HASH_LEN];
    char origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 1]; /* as the manifest says: compare with the checkpoint's */
    char created[64];                             /* as the manifest says, unchecked beyond printable ASCII */
} audit_export_manifest;

/* One line of the export. Pointers are into the reader and valid until the next call. */
typedef struct audit_export_record {
    uint64_t line; /* 1-based line number in events.* and proofs.jsonl */
    uint64_t seq;
    const char *json; /* the events line, without "\n" */
    size_t json_len;
    const char *entry; /* the canonical entry: == json for jsonl, decoded from "entry" for fhir */
    size_t entry_len;
    uint8_t leaf_hash[AUDIT_MERKLE_HASH_LEN];
    size_t proof_len;
    uint8_t proof[AUDIT_MERKLE_MAX_PROOF][AUDIT_MERKLE_HASH_LEN];
} audit_export_record;

typedef struct audit_export_reader audit_export_reader;

/* Read and check manifest.json, read the checkpoint and statement files (at most AUDIT_NOTE_MAX_LEN bytes
 * each) and open the events and proofs files. */
BASE_MUST_USE base_result audit_export_reader_open(const char *dir, audit_export_reader **ret);
const audit_export_manifest *audit_export_reader_manifest(const audit_export_reader *r);
/* The manifest's "filter" object as audit_export_filter_canonical() writes it (NUL-terminated). */
const char *audit_export_reader_filter(const audit_export_reader *r);
/* The checkpoint file's bytes (not NUL-terminated; len <= AUDIT_NOTE_MAX_LEN). Not yet verified. */
const char *audit_export_reader_checkpoint(const audit_export_reader *r, size_t *ret_len);
/* The statement file's bytes (not NUL-terminated; len <= AUDIT_NOTE_MAX_LEN). Not yet verified. */
const char *audit_export_reader_statement(const audit_export_reader *r, size_t *ret_len);

/* The next line of both files: *ret_done = false and *ret_rec set, or *ret_done = true (ret_rec untouched)
 * once both files ended together. BASE_ERR_INVALID when a line is too long, not the format, or present in
 * one file but not the other (a line count mismatch); the record is not returned then, but
 * audit_export_reader_line() and audit_export_reader_seq() say where. */
BASE_MUST_USE base_result audit_export_reader_next(audit_export_reader *r,
                                                   const audit_export_record **ret_rec, bool *ret_done);
/* The 1-based number of the line last read or failed on (0 before the first). */
uint64_t audit_export_reader_line(const audit_export_reader *r);
/* The seq of that line's proof when it could be read (true), else false. */
bool audit_export_reader_seq(const audit_export_reader *r, uint64_t *ret_seq);
/* The events file name for messages ("events.jsonl" or "events.ndjson"). */
const char *audit_export_reader_events_name(const audit_export_reader *r);

void audit_export_reader_free(audit_export_reader *r);
void audit_export_reader_freep(audit_export_reader **r);

/* ---------------------------------------------------------------------------------------------------------
 * The export statement's text (the format at the top of this file). The service formats and signs it; the
 * writer and the verifier parse it. */

typedef struct audit_export_statement {
    char origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 1];
    char tenant_id[AUDIT_EXPORT_TENANT_MAX + 1];
    const char *filter; /* the filter line's JSON object, not NUL-terminated: into the text parsed */
    size_t filter_len;
    bool fhir; /* format fhir-ndjson (else jsonl) */
    uint64_t tree_size;
    uint64_t count;
    uint8_t leaves[AUDIT_MERKLE_HASH_LEN]; /* SHA-256 of the exported lines' leaf hashes, in order */
} audit_export_statement;

/* The filter line for a request's filter: the fields that are set (see the top of this file) as compact JSON
 * with sorted keys, pure ASCII. BASE_ERR_INVALID for a filter without a valid tenant_id, an enum value that
 * is not defined, a time outside 1970..9999, text that is not UTF-8, or a result over
 * AUDIT_EXPORT_FILTER_MAX bytes. *ret_json is malloc'd and NUL-terminated. */
BASE_MUST_USE base_result audit_export_filter_json(const Alma__Audit__V1__EventFilter *f, char **ret_json,
                                                   size_t *ret_len);

/* The statement text for `st` (st->filter: filter_len bytes of one JSON object naming st->tenant_id as its
 * "tenant_id"). Everything audit_export_statement_parse() checks is checked: BASE_ERR_INVALID otherwise.
 * *ret_text is malloc'd and NUL-terminated; sign it with audit_note_sign(). */
BASE_MUST_USE base_result audit_export_statement_format(const audit_export_statement *st, char **ret_text,
                                                        size_t *ret_len);

/* Parse a statement's text (the note's text, signatures excluded: what audit_note_open() verified): exactly
 * the eight lines in order, an origin of 1 to AUDIT_CHECKPOINT_ORIGIN_MAX bytes of UTF-8 text, a valid
 * tenant, a filter that is a JSON object (at most AUDIT_EXPORT_FILTER_MAX bytes, no duplicate keys) whose
 * "tenant_id" is the tenant, a known format, decimals without leading zeros below 2^63, count <= tree, and
 * leaves the base64 of 32 bytes. BASE_ERR_INVALID with a fixed message ("export statement: ...") otherwise.
 * ret->filter points into `text`. */
BASE_MUST_USE base_result audit_export_statement_parse(const char *text, size_t len,
                                                       audit_export_statement *ret);

/* A JSON object's text (at most AUDIT_EXPORT_MANIFEST_MAX bytes, no duplicate keys) re-encoded compact, with
 * sorted keys, pure ASCII: two filters are the same object when these texts are equal. *ret is malloc'd and
 * NUL-terminated. BASE_ERR_INVALID when it is not a JSON object. */
BASE_MUST_USE base_result audit_export_filter_canonical(const char *json, size_t len, char **ret);

/* ---------------------------------------------------------------------------------------------------------
 * Shared checks. */

/* Is `entry` a JSON object with "v":1, "seq" equal to `seq` and "tenant_id" equal to `tenant_id`? (The rest
 * of the entry is not checked here; audit_entry_to_fhir() checks it all.) BASE_ERR_INVALID with a fixed
 * message naming the key otherwise. */
BASE_MUST_USE base_result audit_export_check_entry(const char *entry, size_t len, uint64_t seq,
                                                   const char *tenant_id);

/* Is `s` a tenant id: 1 to AUDIT_EXPORT_TENANT_MAX of [A-Za-z0-9._:-]? */
bool audit_export_tenant_ok(const char *s);

#endif
