/* The first bundle and the vignette files for the engine's tests (vignette_files.h). */
#include "vignette_files.h"

#include "testenv.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gl_bundle *vignette_bundle(void)
{
    gl_bundle *b = NULL;
    base_result r = gl_bundle_load_file(testenv_source_path(VIGNETTE_BUNDLE_PATH), &b);
    if (!base_is_ok(r))
        fail_msg("bundle %s: %s: %s", VIGNETTE_BUNDLE_PATH, base_err_name(r.err), base_error_message());
    return b;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

size_t vignette_files(char dir[1024], char *names[VIGNETTE_FILES_MAX])
{
    snprintf(dir, 1024, "%s", testenv_source_path(VIGNETTES_DIR));
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
            if (n == VIGNETTE_FILES_MAX)
                fail_msg("more than %d vignette files", VIGNETTE_FILES_MAX);
            names[n++] = strdup(e->d_name);
            if (!names[n - 1])
                fail_msg("out of memory");
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_names);
    return n;
}

json_t *vignettes_all(void)
{
    char dir[1024];
    char *names[VIGNETTE_FILES_MAX];
    size_t n = vignette_files(dir, names);
    json_t *all = json_array();
    for (size_t i = 0; i < n; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        json_error_t err;
        json_t *arr = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_array(arr))
            fail_msg("%s: not a JSON array of vignettes (%s)", path, err.text);
        json_array_extend(all, arr);
        json_decref(arr);
        free(names[i]);
    }
    if (json_array_size(all) < VIGNETTES_MIN)
        fail_msg("only %zu vignettes, want at least %d", json_array_size(all), VIGNETTES_MIN);
    return all;
}
