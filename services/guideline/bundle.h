/* Guideline bundles (BUNDLE-FORMAT.md): load, check and pre-compile one bundle.
 *
 * gl_bundle_load() parses the JSON text, validates every part of the format (types, unknown keys, limits, id
 * syntax and uniqueness, every data reference, units, citations, outcome fields, ICD-10-CM ranges,
 * unreachable rules) and compiles it into C structures: criteria trees with resolved data indices and
 * numeric thresholds, parsed ICD-10-CM ranges, sorted code tables. A loaded bundle is immutable; any number
 * of threads may evaluate against it at once (engine.h) without locking.
 *
 * Failures are BASE_ERR_INVALID (BASE_ERR_LIMIT for an oversize file) with a message that points at the
 * offending part, e.g. `pathways[0] (ckd-nephrology) rules[3] (ckd-albuminuria): when.any[1].latest: unknown
 * data element "acrr"`. Bundles are clinical content, not PHI, so messages may quote them. */
#ifndef ALMA_GUIDELINE_BUNDLE_H
#define ALMA_GUIDELINE_BUNDLE_H

#include "base/result.h"

#include <stddef.h>

typedef struct gl_bundle gl_bundle;

#define GL_BUNDLE_MAX_BYTES (1024 * 1024)

BASE_MUST_USE base_result gl_bundle_load(const char *json, size_t len, gl_bundle **ret);
/* Reads at most GL_BUNDLE_MAX_BYTES (a larger file is BASE_ERR_LIMIT; an unreadable one BASE_ERR_IO). */
BASE_MUST_USE base_result gl_bundle_load_file(const char *path, gl_bundle **ret);

const char *gl_bundle_id(const gl_bundle *b);
const char *gl_bundle_version(const gl_bundle *b);
const char *gl_bundle_hash(const gl_bundle *b); /* 64 lowercase hex: SHA-256 of the canonical JSON */
const char *gl_bundle_title(const gl_bundle *b);
const char *gl_bundle_published(const gl_bundle *b); /* YYYY-MM-DD */
size_t gl_bundle_pathway_count(const gl_bundle *b);
const char *gl_bundle_pathway_id(const gl_bundle *b, size_t i);    /* NULL when i is out of range */
const char *gl_bundle_pathway_title(const gl_bundle *b, size_t i); /* NULL when i is out of range */
void gl_bundle_free(gl_bundle *b);                                 /* NULL ok */

/* The canonical JSON (BUNDLE-FORMAT.md, "Canonical JSON") of any JSON text of at most max_bytes: object keys
 * sorted, no whitespace, numbers in their canonical form. *ret_json is malloc'd and NUL-terminated. Used for
 * the bundle's content hash and the input hash; exposed so tools and tests can show what is hashed. */
BASE_MUST_USE base_result gl_canonical_json(const char *json, size_t len, size_t max_bytes, char **ret_json,
                                            size_t *ret_len);

#endif
