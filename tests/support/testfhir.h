/* HL7's FHIR R4 JSON schema in a test: the repository's ajv validator (deploy/fhir-schema/validate-fhir.js,
 * node and the pinned npm packages from deploy/deps.sh), as the vault's and the guideline's FHIR tests use
 * it. Never skips: a missing node or validator fails the running test. */
#ifndef ALMA_TESTFHIR_H
#define ALMA_TESTFHIR_H

#include <stddef.h>

/* Write text to path (fails the test on error). */
void testfhir_write_file(const char *path, const char *text);
/* node validate-fhir.js --type TYPE FILE (one resource, or one per line): 0 valid, 1 invalid; its stdout
 * (malloc'd) in *ret_out, which names each problem's path. Fails the test when the validator cannot run. */
int testfhir_validate(const char *type, const char *file, char **ret_out);
/* file holds n + 1 resources of TYPE, one per line: line 1 valid, line i + 2 invalid with a report that
 * contains expect[i]. Fails the test when the validator accepts the file, reports line 1, misses one of the
 * expected problems or its summary does not count n invalid lines. */
void testfhir_expect_invalid(const char *type, const char *file, const char *const *expect, size_t n);

#endif
