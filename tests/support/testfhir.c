/* The FHIR R4 schema validator in tests (testfhir.h). */
#include "testfhir.h"

#include "testenv.h"
#include "testproc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

void testfhir_write_file(const char *path, const char *text)
{
    FILE *out = fopen(path, "w");
    if (!out)
        fail_msg("cannot create %s", path);
    if (fputs(text, out) == EOF || fclose(out) != 0)
        fail_msg("cannot write %s", path);
}

int testfhir_validate(const char *type, const char *file, char **ret_out)
{
    const char *validator = testenv_source_path("deploy/fhir-schema/validate-fhir.js");
    const char *argv[] = {"/usr/bin/env", "node", validator, "--type", type, file, NULL};
    char *out = NULL, *err = NULL;
    int rc = testproc_run(argv, NULL, &out, &err);
    if (rc == 127)
        fail_msg("node is not installed: run deploy/deps.sh (it installs nodejs and the npm packages of "
                 "deploy/fhir-schema)\n%s",
                 err);
    if (rc != 0 && rc != 1)
        fail_msg("validate-fhir.js could not run (exit %d):\n%s%s", rc, out, err);
    free(err);
    *ret_out = out;
    return rc;
}

void testfhir_expect_invalid(const char *type, const char *file, const char *const *expect, size_t n)
{
    char *out = NULL;
    if (testfhir_validate(type, file, &out) != 1)
        fail_msg("the validator accepted %s, whose lines 2 to %zu are invalid", file, n + 1);
    for (size_t i = 0; i < n; i++) {
        char want[512];
        snprintf(want, sizeof want, "line %zu: %s", i + 2, expect[i]);
        if (!strstr(out, want))
            fail_msg("the validator's report lacks \"%s\":\n%s", want, out);
    }
    if (strstr(out, "line 1:"))
        fail_msg("line 1 is valid but was reported:\n%s", out);
    char summary[128];
    snprintf(summary, sizeof summary, ": %zu of %zu line(s) invalid against FHIR R4 %s", n, n + 1, type);
    if (!strstr(out, summary))
        fail_msg("the validator's summary lacks \"%s\":\n%s", summary, out);
    free(out);
}
