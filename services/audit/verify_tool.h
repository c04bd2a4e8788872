/* alma-audit verify: the offline verifier of an audit log export (export_file.h, docs/audit-export.md).
 *
 *     alma-audit verify --export DIR (--vkey VKEY | --vkey-file FILE) [--quiet] [--help]
 *
 * What a health plan or a data validation contractor runs on an export it was given, with no access to the
 * service: only the export directory and the log's verifier key ("<name>+<key id>+<base64>", checkpoint.h),
 * obtained from the operator out of band. It checks, streaming (constant memory, any number of lines):
 *
 *   - the checkpoint's signature with the verifier key (audit_checkpoint_open);
 *   - the manifest: format, version 1, a known content, and tree_size, root_hash and origin equal to the
 *     verified checkpoint's;
 *   - the export statement (export_file.h): its signature with the same key (audit_note_open), its origin
 *     and tree size equal to the checkpoint's, its tenant, format and filter equal to the manifest's;
 *   - every line: an events line and a proofs line both present; seq strictly increasing and below the tree
 *     size; SHA-256(0x00 || entry) equal to the line's leaf_hash (jsonl: the entry is the events line; fhir:
 *     the base64 "entry" of the proofs line, and the events line must be byte-equal to
 *     audit_entry_to_fhir(entry)); the entry a JSON object with "v":1, "seq" equal to the proof's seq and
 *     "tenant_id" equal to the manifest's; the inclusion proof verifying against the checkpoint's size and
 *     root (audit_merkle_verify_inclusion);
 *   - at the end, the number of lines equal to the statement's count and SHA-256 over the lines' leaf
 *     hashes, in order, equal to its leaves digest (so no line was deleted, added or reordered), then the
 *     number of lines equal to the manifest's count.
 *
 * It stops at the first problem. Progress goes to `progress` (stderr in the tool) at most once a second as
 * "verified N of M events (P%)", and a final summary line on success.
 *
 * What this proves, and what it cannot: every event in the export is in the log the key signed, unaltered, at
 * its seq, and the export holds exactly the events the log said it exported for that filter and checkpoint
 * (the signed statement): nobody between the log and the recipient removed, added or reordered a line. It
 * cannot prove that the log itself left no event of the tenant out: the log is shared by tenants, so the
 * gaps between seqs are other tenants' events as far as the verifier can tell. */
#ifndef ALMA_AUDIT_VERIFY_TOOL_H
#define ALMA_AUDIT_VERIFY_TOOL_H

#include "base/result.h"
#include "checkpoint.h"
#include "export_file.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes of the tool. */
enum {
    AUDIT_VERIFY_EXIT_OK = 0,     /* the export verifies */
    AUDIT_VERIFY_EXIT_FAILED = 1, /* the export does not verify */
    AUDIT_VERIFY_EXIT_USAGE =
        2, /* usage, unreadable files, incomplete export (no manifest.json or statement) */
};

#define AUDIT_VERIFY_PROBLEM_MAX 192

/* What audit_verify_export found. Filled as far as it got, on success and on failure alike. */
typedef struct audit_verify_export_report {
    uint64_t verified;                           /* lines that passed every check */
    uint64_t expected;                           /* the manifest's count (0 before it was read) */
    bool fhir;                                   /* the manifest's content */
    char tenant_id[AUDIT_EXPORT_TENANT_MAX + 1]; /* the manifest's tenant ("" before it was read) */
    bool checkpoint_verified;                    /* the fields below are the verified checkpoint's */
    uint64_t tree_size;
    char root_hex[2 * AUDIT_MERKLE_HASH_LEN + 1];
    char origin[AUDIT_CHECKPOINT_ORIGIN_MAX + 1];
    bool statement_verified; /* the statement's signature and its fields but count and leaves were checked */
    /* When the export does not verify: */
    uint64_t line; /* 1-based line of events.* and proofs.jsonl; 0 when the problem is not one line */
    bool has_seq;  /* seq is that line's (its proof's "seq" could be read) */
    uint64_t seq;
    char problem[AUDIT_VERIFY_PROBLEM_MAX]; /* a fixed text; never content of the export */
} audit_verify_export_report;

/* Verify the export in `dir` against the NUL-terminated verifier key `vkey`. progress: where progress lines
 * go, NULL for none. Returns
 *   BASE_OK              it verifies (report->verified events);
 *   BASE_ERR_CRYPTO      it does not: report->line, ->seq and ->problem say where and why, and
 *                        base_error_message() is "line L (seq S): <problem>" ("line L: <problem>" when
 *                        the seq could not be read; "<problem>" for line 0, with both counts appended
 *                        when the statement's lines or the manifest's count are not the export's);
 *   BASE_ERR_NOT_FOUND   no manifest.json or no statement: "incomplete export: no manifest.json",
 *                        "incomplete export: no statement";
 *   BASE_ERR_INVALID     a NULL argument, or vkey is not a valid verifier key;
 *   BASE_ERR_IO          a file cannot be opened or read; BASE_ERR_NOMEM. */
BASE_MUST_USE base_result audit_verify_export(const char *dir, const char *vkey, FILE *progress,
                                              audit_verify_export_report *report);

/* The tool's exit code for a result of audit_verify_export: 0 OK, 1 BASE_ERR_CRYPTO, 2 anything else. */
int audit_verify_exit_code(base_result r);

/* The tool's usage text. */
void audit_verify_usage(FILE *out);

/* The tool with its output streams given (tests): argv[0] is "verify", the options follow. The result goes
 * to `out`, progress and errors to `err`. Returns the exit code. */
int audit_verify_run(int argc, char **argv, FILE *out, FILE *err);

/* `alma-audit verify ...`: main() calls this with argv[0] = "verify" (stdout, stderr). */
int audit_verify_main(int argc, char **argv);

#endif
