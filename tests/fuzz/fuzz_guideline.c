/* libFuzzer target for the guideline engine's parsers: the first input byte chooses between a bundle
 * (odd: gl_bundle_load, content authors' JSON), a stored recommendation ('R': gl_fhir_guidance_response and
 * gl_cds_card, guidance.h) and a referral input evaluated against the first bundle (any other even byte:
 * gl_evaluate, what a caller sends). Checks: no crash, no leak, no sanitizer report; an input that evaluates
 * gives byte-identical output twice, and the same bytes through gl_evaluate_tree (the service's path over
 * the parsed input); its recommendation always maps to a GuidanceResponse and a card. */
#include "bundle.h"
#include "engine.h"
#include "guidance.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static gl_bundle *g_bundle;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!base_is_ok(gl_bundle_load_file(ALMA_FUZZ_BUNDLE, &g_bundle)))
        abort();
    return 0;
}

/* A review of the first bundle; input_hash is the recommendation's own when it has one, so the fuzzer gets
 * past the cross-check without guessing a hash. */
static gl_fhir_review fuzz_review(const char *input_hash)
{
    return (gl_fhir_review){.review_id = "rv_0123456789abcdef0123456789abcdef",
                            .tenant_id = "tenant-a",
                            .referral_id = "ref-1",
                            .patient_ref = "pt_0123456789abcdef0123456789abcdef",
                            .clinician_id = "cl_1",
                            .created_us = INT64_C(1795424887654321),
                            .engine_version = GL_ENGINE_VERSION,
                            .bundle_id = gl_bundle_id(g_bundle),
                            .bundle_version = gl_bundle_version(g_bundle),
                            .bundle_hash = gl_bundle_hash(g_bundle),
                            .input_hash = input_hash};
}

/* Both documents of a recommendation; must_build: it came from the engine, so both must be made. */
static void map_recommendation(const char *rec, size_t len, const char *input_hash, int must_build)
{
    gl_fhir_review rv = fuzz_review(input_hash);
    char *out = NULL;
    size_t out_len = 0;
    if (base_is_ok(gl_fhir_guidance_response(&rv, rec, len, &out, &out_len)))
        free(out);
    else if (must_build)
        abort();
    out = NULL;
    if (base_is_ok(gl_cds_card(&rv, rec, len, &out, &out_len)))
        free(out);
    else if (must_build)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        gl_bundle *b = NULL;
        if (base_is_ok(gl_bundle_load(text, len, &b)))
            gl_bundle_free(b);
        return 0;
    }
    if (data[0] == 'R') {
        json_t *root = json_loadb(text, len, 0, NULL);
        const char *h = json_string_value(json_object_get(root, "input_hash"));
        char hash[65] = "0000000000000000000000000000000000000000000000000000000000000000";
        if (h && strlen(h) == 64)
            memcpy(hash, h, 64);
        json_decref(root);
        map_recommendation(text, len, hash, 0);
        return 0;
    }
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    gl_summary s;
    if (!base_is_ok(gl_evaluate(g_bundle, text, len, &s, &a, &alen)))
        return 0;
    if (!base_is_ok(gl_evaluate(g_bundle, text, len, &s, &b, &blen)) || alen != blen ||
        memcmp(a, b, alen) != 0)
        abort(); /* deterministic */
    free(b);
    json_t *tree = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    char *canon = NULL;
    size_t clen = 0;
    b = NULL;
    if (!tree)
        abort(); /* gl_evaluate parsed it */
    base_result r = gl_evaluate_tree(g_bundle, tree, &s, &b, &blen, &canon, &clen);
    /* The tree path may refuse only a canonical snapshot over the limit, which the text path does not check.
     */
    if (base_is_ok(r) ? (alen != blen || memcmp(a, b, alen) != 0) : r.err != BASE_ERR_LIMIT)
        abort();
    json_decref(tree);
    map_recommendation(a, alen, s.input_hash, 1);
    free(a);
    free(b);
    free(canon);
    return 0;
}
