/* libFuzzer target for the guideline engine's two parsers: the first input byte chooses between a bundle
 * (gl_bundle_load: content authors' JSON) and a referral input evaluated against the first bundle
 * (gl_evaluate: what a caller sends). Checks: no crash, no leak, no sanitizer report; an input that
 * evaluates gives byte-identical output twice, and the same bytes through gl_evaluate_tree (the service's
 * path over the parsed input). */
#include "bundle.h"
#include "engine.h"

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
    free(a);
    free(b);
    free(canon);
    return 0;
}
