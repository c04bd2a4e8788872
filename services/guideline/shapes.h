/* The shapes of the identifiers a referral carries, shared by the service (review.c) and alma-cli, so that
 * the client refuses exactly what the service would refuse before anything is sent. */
#ifndef ALMA_GUIDELINE_SHAPES_H
#define ALMA_GUIDELINE_SHAPES_H

#include <stdbool.h>
#include <stddef.h>

#define GL_REFERRAL_ID_MAX 64
#define GL_ICD10_MAX       8
#define GL_NAME_MAX        64

/* A referral id: 1..GL_REFERRAL_ID_MAX of [A-Za-z0-9_-]. */
bool gl_valid_referral_id(const char *s);
/* ICD-10-CM syntax: a letter, a digit, a letter or digit, then optionally '.' and 1..4 letters or digits
 * (upper case). */
bool gl_valid_icd10(const char *s);
/* [first][rest]{0,max-1}: first from [a-z] (or [a-z0-9] when digit_first), rest [a-z0-9_] (+ '-' if dash).
 * A specialty is gl_valid_name(s, GL_NAME_MAX, true, true); a flag or finding name
 * gl_valid_name(s, GL_NAME_MAX, false, false). */
bool gl_valid_name(const char *s, size_t max, bool digit_first, bool dash);

#endif
