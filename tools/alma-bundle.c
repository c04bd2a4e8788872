/* alma-bundle: check a guideline bundle, or evaluate a referral input against one, with the engine's own
 * core library (services/guideline/bundle.h, engine.h) -- what authors run before a bundle is reviewed.
 *
 *     alma-bundle check BUNDLE.json
 *     alma-bundle evaluate BUNDLE.json INPUT.json
 *     alma-bundle canonical FILE.json
 *
 * Exit codes: 0 done, 1 the bundle or the input was refused (the message says where), 2 usage. */
#include "bundle.h"
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROGRAM    "alma-bundle"
#define EXIT_OK    0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: " PROGRAM " check BUNDLE.json\n"
        "       " PROGRAM " evaluate BUNDLE.json INPUT.json\n"
        "       " PROGRAM " canonical FILE.json\n"
        "       " PROGRAM " --help\n"
        "\n"
        "check      load and validate a guideline bundle (services/guideline/BUNDLE-FORMAT.md); print its\n"
        "           id, version, content hash (SHA-256 of its canonical JSON) and pathways\n"
        "evaluate   evaluate a referral input against the bundle and print the recommendation (canonical\n"
        "           JSON, one line)\n"
        "canonical  print the canonical JSON of a file (what the content and input hashes are taken of)\n"
        "\n"
        "Exit codes: 0 done, 1 the bundle or input was refused (the message says where), 2 usage.\n");
}

/* The whole file, at most max bytes (more is an error). */
static int read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, PROGRAM ": %s: cannot open (%s)\n", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(max + 1);
    if (!buf) {
        fclose(f);
        fprintf(stderr, PROGRAM ": out of memory\n");
        return -1;
    }
    size_t n = fread(buf, 1, max + 1, f);
    bool err = ferror(f);
    fclose(f);
    if (err || n > max) {
        fprintf(stderr, PROGRAM ": %s: %s\n", path, err ? "read failed" : "over the size limit");
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *ret = buf;
    *ret_len = n;
    return 0;
}

static int load_bundle(const char *path, gl_bundle **ret)
{
    base_result r = gl_bundle_load_file(path, ret);
    if (!base_is_ok(r)) {
        fprintf(stderr, PROGRAM ": %s: %s\n", path, base_error_message());
        return -1;
    }
    return 0;
}

static int cmd_check(const char *path)
{
    gl_bundle *b = NULL;
    if (load_bundle(path, &b) != 0)
        return EXIT_FAIL;
    printf("id: %s\nversion: %s\ntitle: %s\npublished: %s\nhash: %s\npathways: %zu\n", gl_bundle_id(b),
           gl_bundle_version(b), gl_bundle_title(b), gl_bundle_published(b), gl_bundle_hash(b),
           gl_bundle_pathway_count(b));
    for (size_t i = 0; i < gl_bundle_pathway_count(b); i++)
        printf("  %s: %s\n", gl_bundle_pathway_id(b, i), gl_bundle_pathway_title(b, i));
    gl_bundle_free(b);
    return EXIT_OK;
}

static int cmd_evaluate(const char *bundle_path, const char *input_path)
{
    gl_bundle *b = NULL;
    if (load_bundle(bundle_path, &b) != 0)
        return EXIT_FAIL;
    char *input = NULL;
    size_t len = 0;
    if (read_file(input_path, GL_INPUT_MAX_BYTES, &input, &len) != 0) {
        gl_bundle_free(b);
        return EXIT_FAIL;
    }
    gl_summary s;
    char *json = NULL;
    size_t json_len = 0;
    base_result r = gl_evaluate(b, input, len, &s, &json, &json_len);
    int rc = EXIT_OK;
    if (!base_is_ok(r)) {
        fprintf(stderr, PROGRAM ": %s: %s\n", input_path, base_error_message());
        rc = EXIT_FAIL;
    } else {
        fwrite(json, 1, json_len, stdout);
        fputc('\n', stdout);
    }
    free(json);
    free(input);
    gl_bundle_free(b);
    return rc;
}

static int cmd_canonical(const char *path)
{
    char *text = NULL, *canon = NULL;
    size_t len = 0, clen = 0;
    if (read_file(path, GL_BUNDLE_MAX_BYTES, &text, &len) != 0)
        return EXIT_FAIL;
    base_result r = gl_canonical_json(text, len, GL_BUNDLE_MAX_BYTES, &canon, &clen);
    free(text);
    if (!base_is_ok(r)) {
        fprintf(stderr, PROGRAM ": %s: %s\n", path, base_error_message());
        return EXIT_FAIL;
    }
    fwrite(canon, 1, clen, stdout);
    fputc('\n', stdout);
    free(canon);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return EXIT_OK;
    }
    if (argc == 3 && strcmp(argv[1], "check") == 0)
        return cmd_check(argv[2]);
    if (argc == 4 && strcmp(argv[1], "evaluate") == 0)
        return cmd_evaluate(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "canonical") == 0)
        return cmd_canonical(argv[2]);
    usage(stderr);
    return EXIT_USAGE;
}
