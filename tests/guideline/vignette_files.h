/* The first guideline bundle and the clinical vignettes of tests/guideline/vignettes/ (the format is in
 * test_vignettes.c), for the tests that evaluate every vignette (test_vignettes.c, test_fhir.c). Failures
 * fail the running cmocka test. */
#ifndef ALMA_TEST_VIGNETTE_FILES_H
#define ALMA_TEST_VIGNETTE_FILES_H

#include "bundle.h"

#include <jansson.h>
#include <stddef.h>

#define VIGNETTE_BUNDLE_PATH "services/guideline/bundles/alma-referral-core-1.0.0.json"
#define VIGNETTES_DIR        "tests/guideline/vignettes"
#define VIGNETTE_FILES_MAX   64
#define VIGNETTES_MIN        60 /* fewer means files went missing */

/* VIGNETTE_BUNDLE_PATH loaded. */
gl_bundle *vignette_bundle(void);
/* The *.json files of VIGNETTES_DIR, sorted by name (malloc'd names, at most VIGNETTE_FILES_MAX); dir gets
 * the directory's path. */
size_t vignette_files(char dir[1024], char *names[VIGNETTE_FILES_MAX]);
/* Every vignette of every file, in file then array order, as one array (the caller's reference); at least
 * VIGNETTES_MIN. */
json_t *vignettes_all(void);

#endif
