/* The guideline evaluator (BUNDLE-FORMAT.md): a referral input against a loaded bundle gives a
 * recommendation. Pure: no database, no RPC, no logging, no global state; any number of threads may evaluate
 * at once against the same bundle.
 *
 * The input is untrusted. It is validated strictly before anything is evaluated; a failure is
 * BASE_ERR_INVALID (BASE_ERR_LIMIT only for a text over GL_INPUT_MAX_BYTES) whose message names the field and
 * the rule it breaks ("input: observations[3].date: after as_of"), never a value nor an unknown key's name.
 */
#ifndef ALMA_GUIDELINE_ENGINE_H
#define ALMA_GUIDELINE_ENGINE_H

#include "base/result.h"
#include "bundle.h"

#include <stddef.h>

#define GL_ENGINE_VERSION "alma-guideline/1"

/* Limits of the referral input (BUNDLE-FORMAT.md, "The referral input"). */
#define GL_INPUT_MAX_BYTES        (256 * 1024) /* the JSON text */
#define GL_INPUT_MAX_OBSERVATIONS 500
#define GL_INPUT_MAX_PROBLEMS     100
#define GL_INPUT_MAX_MEDICATIONS  100
#define GL_INPUT_MAX_REASON_CODES 32
#define GL_INPUT_MAX_FLAGS        64  /* entries of `flags` */
#define GL_INPUT_MAX_FINDINGS     64  /* entries of `findings` */
#define GL_INPUT_MAX_TEXT         200 /* bytes of a free-text string (medication name, finding text) */
#define GL_INPUT_MAX_UNIT         64  /* bytes of a unit string */
#define GL_INPUT_MAX_AGE          150
#define GL_INPUT_MAX_ABS_VALUE    1e12 /* |observation value| and |finding number| */

typedef enum gl_outcome {
    GL_NO_PATHWAY = 0,
    GL_REFER = 1,
    GL_WORKUP = 2,
    GL_MANAGE = 3,
    GL_INSUFFICIENT = 4
} gl_outcome;

typedef struct gl_summary {
    gl_outcome outcome;
    char urgency[16];    /* "routine" | "urgent" | "emergency" | "" */
    char pathway[65];    /* "" for GL_NO_PATHWAY */
    char rule[65];       /* the deciding rule id, or "default" ("" for GL_NO_PATHWAY) */
    char input_hash[65]; /* sha256 hex of the canonical input */
    size_t fired;        /* rules that fired */
} gl_summary;

/* Evaluate the referral input (JSON text, BUNDLE-FORMAT.md "The referral input", at most GL_INPUT_MAX_BYTES)
 * against the bundle. *ret_json: the recommendation's canonical JSON (malloc'd, NUL-terminated, free());
 * ret_json may be NULL when only the summary is wanted (ret_len may then be NULL too). Outputs are written
 * only on success. Input errors: BASE_ERR_INVALID naming the field and rule, never a value. */
BASE_MUST_USE base_result gl_evaluate(const gl_bundle *b, const char *input, size_t len,
                                      gl_summary *ret_summary, char **ret_json, size_t *ret_len);

/* gl_evaluate over an input already parsed (jansson's json_t; borrowed, not changed), for a caller that
 * built or merged it: no text round trip. Also returns the input's canonical JSON (what input_hash is the
 * SHA-256 of; malloc'd, NUL-terminated, free()), at most GL_INPUT_MAX_BYTES (else BASE_ERR_LIMIT). */
struct json_t;
BASE_MUST_USE base_result gl_evaluate_tree(const gl_bundle *b, struct json_t *input, gl_summary *ret_summary,
                                           char **ret_json, size_t *ret_len, char **ret_canon,
                                           size_t *ret_canon_len);

const char *gl_outcome_name(gl_outcome o); /* "NO_PATHWAY", "REFER", "WORKUP", "MANAGE", "INSUFFICIENT" */

#endif
