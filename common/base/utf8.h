/* Strict UTF-8 decoding (RFC 3629): the one decoder the suite uses to check text. */
#ifndef ALMA_BASE_UTF8_H
#define ALMA_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1-4) of the well-formed UTF-8 sequence at s[0, n), with its code point in *ret_cp (may be NULL);
 * 0 if there is none: n == 0, an overlong form, a surrogate, a value above U+10FFFF, a stray continuation
 * byte, or a sequence cut short by the end of the input. U+0000 is well formed; callers that forbid NUL
 * check the code point. */
size_t base_utf8_next(const unsigned char *s, size_t n, uint32_t *ret_cp);

#endif
