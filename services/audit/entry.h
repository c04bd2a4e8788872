/* The audit log's canonical entry: the exact bytes of one committed event, and its FHIR R4 view.
 *
 * The entry is what is stored in events.entry, hashed as the Merkle leaf (audit_merkle_leaf_hash(entry,
 * len): SHA-256(0x00 || entry), RFC 9162 §2.1.1) and emitted unchanged as one line of the JSON Lines
 * export. An offline verifier needs only these bytes: it hashes them as given and never re-encodes, so it
 * need not reproduce the rules below; they are written down so that a verifier can *read* an entry, and so
 * that this encoder stays byte-stable (same input, same bytes, on every build and host).
 *
 * FORMAT, version 1 ("v":1)
 *
 *   - One JSON object (RFC 8259), compact: no whitespace anywhere, no trailing newline. A JSON Lines export
 *     separates entries with "\n", which is not part of the entry and not hashed.
 *   - Pure ASCII: every character above U+007F is written as \uXXXX (a surrogate pair above U+FFFF),
 *     hex digits upper case, so the bytes survive any transport or database encoding. Inside strings,
 *     '"' and '\' are escaped as \" and \\; U+0008, U+000C, U+000A, U+000D, U+0009 as \b \f \n \r \t;
 *     other characters below U+0020 as \u00XX. Nothing else is escaped ('/' and U+007F are literal).
 *     (jansson json_dumps with JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII.)
 *   - Keys of every object, nested ones included, in ascending byte order (all keys are ASCII).
 *   - Values are only strings, integers (decimal, no sign unless negative, no leading zeros, no exponent),
 *     objects and arrays. No floats, booleans or nulls.
 *   - An optional field that is empty is omitted, key and all: an empty string, an enum equal to 0
 *     (*_UNSPECIFIED), an empty list or map, or a nested object all of whose members are omitted.
 *
 *   key              type     content
 *   "action"         string   Action enum name as in audit.proto, e.g. "ACTION_READ"            (required)
 *   "actor"          object   (required)
 *       "principal_id"     string  actor.principal_id                                          (required)
 *       "roles"            array   actor.roles as strings, in the order given (not sorted)
 *       "service_identity" string  the caller's mTLS identity (SPIFFE id), set by the server;
 *                                  actor.service_identity from the request is ignored
 *   "basis"          string   DisclosureBasis enum name, e.g. "DISCLOSURE_BASIS_PUBLIC_HEALTH"
 *   "details"        object   the details map: each key to its string value (values may be "")
 *   "guideline"      object   "bundle_hash", "bundle_id", "bundle_version", "engine_version", "source"
 *                             (each a string, each omitted when empty)
 *   "outcome"        string   Outcome enum name, e.g. "OUTCOME_SUCCESS"
 *   "patient_ref"    string   pseudonymous patient reference ("pt_" + 32 hex)
 *   "phi_description" string  disclosures: the PHI categories disclosed
 *   "purpose"        string   PurposeOfUse enum name, e.g. "PURPOSE_OF_USE_TREATMENT"
 *   "recipient"      object   "address", "name" (strings, each omitted when empty)
 *   "request_id"     string
 *   "resource"       object   "id" (resource_id), "type" (resource_type), each omitted when empty
 *   "seq"            integer  the leaf index, from 0, below 2^63                                (required)
 *   "severity"       string   Severity enum name, e.g. "SEVERITY_HIGH"
 *   "tenant_id"      string                                                                     (required)
 *   "time"           string   commit time, RFC 3339 UTC, always 6 fractional digits:
 *                             "YYYY-MM-DDTHH:MM:SS.ffffffZ", years 1970..9999                  (required)
 *   "v"              integer  1, the format version                                            (required)
 *
 * Example (the output is one line; wrapped here):
 *   {"action":"ACTION_READ","actor":{"principal_id":"usr_42","roles":["pcp"],"service_identity":
 *   "spiffe://alma/ns/prod/sa/referral"},"outcome":"OUTCOME_SUCCESS","patient_ref":
 *   "pt_0123456789abcdef0123456789abcdef","purpose":"PURPOSE_OF_USE_TREATMENT","resource":{"id":"rec_1",
 *   "type":"Patient"},"seq":7,"severity":"SEVERITY_INFO","tenant_id":"tenant-a","time":
 *   "2026-11-23T12:00:00.123456Z","v":1}
 *
 * Readers must accept keys they do not know within version 1 (a later field is added as an optional key);
 * a change to the meaning or encoding of an existing key bumps "v".
 *
 * Conventions (common/base/result.h): ret_* outputs are written only on success; *ret_json is
 * NUL-terminated (ret_len excludes the NUL) and freed with free(). Failures: BASE_ERR_INVALID for NULL
 * pointers, a missing required part, an enum value the proto does not define, invalid UTF-8, a repeated
 * details key or a time out of range; BASE_ERR_LIMIT for seq >= 2^63 or an entry over AUDIT_ENTRY_MAX;
 * BASE_ERR_NOMEM. Messages name the field, never its value. No global state; thread-safe. */
#ifndef ALMA_AUDIT_ENTRY_H
#define ALMA_AUDIT_ENTRY_H

#include "audit/v1/audit.pb-c.h"
#include "base/result.h"

#include <stddef.h>
#include <stdint.h>

/* The format version written as "v". */
#define AUDIT_ENTRY_VERSION 1
/* The largest entry (events.entry's check constraint). A validated event stays far below it. */
#define AUDIT_ENTRY_MAX ((size_t)65536)

/* The canonical entry of `ev` committed as leaf `seq` at `time_unix_micros` (microseconds since the Unix
 * epoch, UTC) by the caller authenticated as `service_identity` (NULL or "" to omit). `ev` should have
 * passed audit_validate_event(); this checks only what it needs to produce a well-formed entry. */
BASE_MUST_USE base_result audit_entry_encode(const Alma__Audit__V1__EventInput *ev, uint64_t seq,
                                             int64_t time_unix_micros, const char *service_identity,
                                             char **ret_json, size_t *ret_len);

/* One canonical entry (version 1) as a FHIR R4 AuditEvent resource: compact JSON, ASCII, members in a fixed
 * order (resourceType first), so it too is byte-stable. The mapping is documented in entry.c. The entry is
 * untrusted here (it may come from storage or an export): anything that is not a version-1 entry with the
 * required keys and known enum names is BASE_ERR_INVALID with a message naming the key. len <=
 * AUDIT_ENTRY_MAX (BASE_ERR_LIMIT). */
BASE_MUST_USE base_result audit_entry_to_fhir(const char *entry_json, size_t len, char **ret_json,
                                              size_t *ret_len);

#endif
