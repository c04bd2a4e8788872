/* libFuzzer target for the guideline engine's two parsers: the first input byte chooses between a bundle
 * (gl_bundle_load: content authors' JSON) and a referral input evaluated against the first bundle
 * (gl_evaluate: what a caller sends). Checks: no crash, no leak, no sanitizer report; an input that
 * evaluates gives byte-identical output twice. */
#include "bundle.h"
#include "engine.h"

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
    free(a);
    free(b);
    return 0;
}
