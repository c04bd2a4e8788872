/* The guideline engine's Postgres store (migrations/): published bundles, reviews and decisions. Reviews and
 * decisions are append-only (triggers refuse UPDATE, DELETE and TRUNCATE for every role; the runtime role has
 * INSERT and SELECT only, except bundles.active); a bundle's (id, version) names exactly one content hash.
 * Every function runs in its own transaction on the pool (search_path = the guideline schema) and is
 * thread-safe. Messages never contain PHI or comment text. */
#ifndef ALMA_GUIDELINE_STORE_H
#define ALMA_GUIDELINE_STORE_H

#include "base/result.h"
#include "db/db.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GS_ID_BUF        36 /* "rv_"/"dn_" + 32 hex + NUL */
#define GS_TEXT_MAX      1000
#define GS_REFERRAL_MAX  64
#define GS_BUNDLE_ID_MAX 63
#define GS_VERSION_MAX   32
#define GS_HASH_LEN      64
#define GS_PATHWAY_MAX   64
#define GS_ACTOR_MAX     128
#define GS_LIST_MAX      500

BASE_MUST_USE base_result gs_migrate(db_pool *owner, const char *schema);

/* ---- bundles ---------------------------------------------------------------------------------------- */

typedef struct gs_bundle {
    char bundle_id[GS_BUNDLE_ID_MAX + 1];
    char version[GS_VERSION_MAX + 1];
    char hash[GS_HASH_LEN + 1];
    bool active;
    int64_t published_us;
    char published_by[GS_ACTOR_MAX + 1];
    char *json; /* the bundle text as published (malloc'd; NULL from gs_bundles_list) */
    size_t json_len;
} gs_bundle;
void gs_bundle_clear(gs_bundle *b);

/* Store a checked bundle (the caller loaded it with gl_bundle_load). The same id, version and hash again:
 * OK (idempotent, *ret_created false). The same id and version with another hash: BASE_ERR_CONFLICT "bundle
 * version already published with other content". activate: make it the one active bundle (the previous
 * active one is deactivated in the same transaction). */
BASE_MUST_USE base_result gs_bundle_publish(db_pool *pool, const char *bundle_id, const char *version,
                                            const char *hash, const char *json, size_t json_len,
                                            bool activate, const char *actor, bool *ret_created);
/* The active bundle (with its text): BASE_ERR_NOT_FOUND when none. */
BASE_MUST_USE base_result gs_bundle_active(db_pool *pool, gs_bundle *ret);
/* One bundle by id and version (with its text). */
BASE_MUST_USE base_result gs_bundle_get(db_pool *pool, const char *bundle_id, const char *version,
                                        gs_bundle *ret);
/* Every bundle, newest first, at most GS_LIST_MAX, without texts. *ret malloc'd (free with
 * gs_bundles_free). */
BASE_MUST_USE base_result gs_bundles_list(db_pool *pool, gs_bundle **ret, size_t *ret_n);
void gs_bundles_free(gs_bundle *bs, size_t n);

/* ---- reviews and decisions ------------------------------------------------------------------------- */

typedef struct gs_review {
    char review_id[GS_ID_BUF];
    char tenant_id[64];
    char referral_id[GS_REFERRAL_MAX + 1];
    char patient_ref[GS_ID_BUF];
    char clinician_id[GS_ACTOR_MAX + 1];
    int outcome; /* alma.guideline.v1.Outcome */
    int urgency; /* alma.guideline.v1.Urgency */
    char pathway_id[GS_PATHWAY_MAX + 1];
    char rule_id[GS_PATHWAY_MAX + 1];
    char engine_version[GS_VERSION_MAX + 1];
    char bundle_id[GS_BUNDLE_ID_MAX + 1];
    char bundle_version[GS_VERSION_MAX + 1];
    char bundle_hash[GS_HASH_LEN + 1];
    char input_hash[GS_HASH_LEN + 1];
    char *input_json; /* the canonical input snapshot (for what-if), malloc'd */
    size_t input_len;
    char *recommendation_json; /* the engine's canonical output, malloc'd */
    size_t recommendation_len;
    int64_t created_us;
} gs_review;
void gs_review_clear(gs_review *r);
void gs_reviews_free(gs_review *rs, size_t n);

/* Append a review (the caller fills every field; review_id "rv_" + 32 hex; the two JSON texts
 * NUL-terminated at their lengths). BASE_ERR_EXISTS for a review_id
 * already stored; BASE_ERR_CONFLICT when (bundle_id, bundle_version, bundle_hash) is not a published
 * bundle. */
BASE_MUST_USE base_result gs_review_insert(db_pool *pool, const gs_review *r, int64_t *ret_created_us);
/* The review writer: gs_review_insert with group commit. Concurrent callers' reviews are stored together,
 * up to 64 rows (and 4 MiB of JSON) in one INSERT and one commit, by one writer thread while each caller
 * waits for its own answer; a lone caller is stored at once. A batch that fails on a row is stored one review
 * at a time, so the answers are those of gs_review_insert; one that fails because of the database
 * (BASE_ERR_UNAVAILABLE, BASE_ERR_TIMEOUT) gives every caller that answer at once. input_json and
 * recommendation_json must be NUL-terminated at their lengths (as for gs_review_insert). Close it before its
 * pool. */
typedef struct gs_writer gs_writer;
BASE_MUST_USE base_result gs_writer_open(db_pool *pool, gs_writer **ret);
void gs_writer_close(gs_writer *w); /* stores what is queued first */
BASE_MUST_USE base_result gs_writer_store(gs_writer *w, const gs_review *r, int64_t *ret_created_us);
/* Flushes made (a commit each, or the batch's failure), reviews that went through the writer, and reviews
 * stored one by one after their batch failed on a row. Any pointer may be NULL. */
void gs_writer_stats(gs_writer *w, size_t *ret_commits, size_t *ret_reviews, size_t *ret_alone);

/* One review of the tenant (BASE_ERR_NOT_FOUND otherwise). */
BASE_MUST_USE base_result gs_review_get(db_pool *pool, const char *tenant_id, const char *review_id,
                                        gs_review *ret);

typedef struct gs_decision {
    char decision_id[GS_ID_BUF];
    char review_id[GS_ID_BUF];
    char tenant_id[64];
    char clinician_id[GS_ACTOR_MAX + 1];
    int kind;   /* alma.guideline.v1.DecisionKind */
    int reason; /* alma.guideline.v1.OverrideReason, 0 with ACCEPT */
    char comment[GS_TEXT_MAX + 1];
    int64_t created_us;
} gs_decision;

/* Append the decision of a review: once per review (BASE_ERR_EXISTS "review already decided"); the review
 * must exist in the tenant (BASE_ERR_NOT_FOUND). */
BASE_MUST_USE base_result gs_decision_insert(db_pool *pool, const gs_decision *d, int64_t *ret_created_us);

/* Every review and decision of a referral, oldest first (at most GS_LIST_MAX each); none is not an error
 * (both arrays are then allocated and empty). */
BASE_MUST_USE base_result gs_referral_history(db_pool *pool, const char *tenant_id, const char *referral_id,
                                              gs_review **ret_reviews, size_t *ret_nreviews,
                                              gs_decision **ret_decisions, size_t *ret_ndecisions);

/* The latest review of each referral of the tenant made in [start_us, end_us) (0 = open), or of the listed
 * referrals (n_ids > 0), at most max (1..10000), oldest first, with their input snapshots: what-if's
 * input. A window given with listed referrals applies to them too. */
BASE_MUST_USE base_result gs_reviews_for_whatif(db_pool *pool, const char *tenant_id,
                                                const char *const *referral_ids, size_t n_ids,
                                                int64_t start_us, int64_t end_us, size_t max, gs_review **ret,
                                                size_t *ret_n);

/* Concordance: per pathway (clinician_id "") and per pathway and clinician, in [start_us, end_us), optional
 * filters (NULL or ""). Counts of reviews by outcome, decided, accepted, overridden, and overrides by
 * reason. */
#define GS_REASONS 7
/* At most this many rows (BASE_ERR_LIMIT beyond: narrow the filters). Per-clinician rows count the reviews
 * the clinician asked for (gs_review.clinician_id), with their decisions. Rows come ordered by pathway, the
 * per-pathway row first, then by clinician. */
#define GS_CONCORDANCE_MAX 50000
typedef struct gs_concordance_row {
    char pathway_id[GS_PATHWAY_MAX + 1];
    char clinician_id[GS_ACTOR_MAX + 1];
    int64_t reviews, refer, workup, manage, insufficient, no_pathway;
    int64_t decided, accepted, overridden;
    int64_t override_reasons[GS_REASONS]; /* index = OverrideReason */
} gs_concordance_row;
BASE_MUST_USE base_result gs_concordance(db_pool *pool, const char *tenant_id, int64_t start_us,
                                         int64_t end_us, const char *pathway_id, const char *clinician_id,
                                         gs_concordance_row **ret, size_t *ret_n);

#endif
