/* Identifier shapes (shapes.h). */
#include "shapes.h"

#include <string.h>

bool gl_valid_referral_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > GL_REFERRAL_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

bool gl_valid_name(const char *s, size_t max, bool digit_first, bool dash)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || ((i > 0 || digit_first) && c >= '0' && c <= '9') ||
                  (i > 0 && (c == '_' || (dash && c == '-')));
        if (!ok)
            return false;
    }
    return true;
}

bool gl_valid_icd10(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 3 || n > GL_ICD10_MAX || !(s[0] >= 'A' && s[0] <= 'Z') || !(s[1] >= '0' && s[1] <= '9'))
        return false;
    if (!((s[2] >= '0' && s[2] <= '9') || (s[2] >= 'A' && s[2] <= 'Z')))
        return false;
    if (n == 3)
        return true;
    if (s[3] != '.' || n < 5)
        return false;
    for (size_t i = 4; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return true;
}
