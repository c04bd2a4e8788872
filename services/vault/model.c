/* The vault's data model (model.h): validation, classification, parts, blind-index values, ages.
 *
 * Every validation message is built from constant text, a field path made of field names and indexes, and
 * numeric limits: never from the value being checked. */
#include "model.h"

#include "crypto/crypto.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INTEGRITY_MSG "record failed its integrity check"

typedef Alma__Vault__V1__Patient pb_patient;
typedef Alma__Vault__V1__Demographics pb_demographics;
typedef Alma__Vault__V1__Contact pb_contact;
typedef Alma__Vault__V1__Address pb_address;
typedef Alma__Vault__V1__Identifiers pb_identifiers;
typedef Alma__Vault__V1__Coverage pb_coverage;
typedef Alma__Vault__V1__Code pb_code;
typedef Alma__Vault__V1__Item pb_item;

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

static base_result invalid(const char *path, const char *field, const char *rule)
{
    return base_fail(BASE_ERR_INVALID, "%s.%s: %s", path, field, rule);
}

/* ---- Text --------------------------------------------------------------------------------------------- */

/* Length of the UTF-8 sequence at s[0..len) and its code point, or 0 when it is not valid (overlong forms,
 * surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *ret_cp)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) {
        *ret_cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        n = 2, cp = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, cp = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, cp = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *ret_cp = cp;
    return n;
}

typedef enum text_fault { TEXT_OK, TEXT_BAD_UTF8, TEXT_CONTROL } text_fault;

/* Valid UTF-8 without C0 controls, DEL or C1 controls; `multiline` also admits '\n' and '\t'. */
static text_fault text_check(const char *s, size_t len, bool multiline)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t cp = 0;
        size_t n = utf8_decode(u + i, len - i, &cp);
        if (n == 0)
            return TEXT_BAD_UTF8;
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) {
            if (!(multiline && (cp == '\n' || cp == '\t')))
                return TEXT_CONTROL;
        }
        i += n;
    }
    return TEXT_OK;
}

/* A free-text field of min..max bytes (min 0: optional). */
static base_result check_text_ml(const char *path, const char *field, const char *s, size_t min, size_t max,
                                 bool multiline)
{
    s = str_or_empty(s);
    size_t len = strlen(s);
    if (len == 0 && min > 0)
        return invalid(path, field, "required");
    if (len < min || len > max)
        return base_fail(BASE_ERR_INVALID, "%s.%s: %zu..%zu bytes", path, field, min, max);
    switch (text_check(s, len, multiline)) {
    case TEXT_OK:
        return BASE_OK_RESULT;
    case TEXT_BAD_UTF8:
        return invalid(path, field, "not valid UTF-8");
    case TEXT_CONTROL:
        return invalid(path, field, "control characters are not allowed");
    default:
        return invalid(path, field, "not valid text");
    }
}

static base_result check_text(const char *path, const char *field, const char *s, size_t min, size_t max)
{
    return check_text_ml(path, field, s, min, max, false);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}
static bool is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}
static bool is_alnum(char c)
{
    return is_digit(c) || is_upper(c) || is_lower(c);
}

/* 1..max (min 0: 0..max) characters, each alphanumeric or in `extra`, with at least one alphanumeric. */
static base_result check_charset(const char *path, const char *field, const char *s, size_t min, size_t max,
                                 const char *extra, const char *rule)
{
    s = str_or_empty(s);
    size_t len = strlen(s);
    if (len == 0 && min == 0)
        return BASE_OK_RESULT;
    if (len == 0)
        return invalid(path, field, "required");
    bool alnum = false;
    for (size_t i = 0; i < len; i++) {
        if (is_alnum(s[i]))
            alnum = true;
        else if (!strchr(extra, s[i]))
            return invalid(path, field, rule);
    }
    if (len > max || len < min)
        return invalid(path, field, rule);
    if (!alnum)
        return invalid(path, field, "must contain a letter or digit");
    return BASE_OK_RESULT;
}

/* ---- Dates -------------------------------------------------------------------------------------------- */

static bool leap_year(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap_year(y) ? 29 : days[m - 1];
}

/* "YYYY-MM-DD" naming a real day of the Gregorian calendar, any year from 0001. */
static bool parse_ymd(const char *s, int *ret_y, int *ret_m, int *ret_d)
{
    if (!s || strlen(s) != VAULT_DATE_LEN || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < VAULT_DATE_LEN; i++) {
        if (i != 4 && i != 7 && !is_digit(s[i]))
            return false;
    }
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > month_days(y, m))
        return false;
    *ret_y = y, *ret_m = m, *ret_d = d;
    return true;
}

/* A calendar date from 1900-01-01. */
static bool parse_date(const char *s, int *ret_y, int *ret_m, int *ret_d)
{
    return parse_ymd(s, ret_y, ret_m, ret_d) && *ret_y >= 1900;
}

bool vault_is_calendar_date(const char *s)
{
    int y, m, d;
    return parse_date(s, &y, &m, &d);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *ret_y, int *ret_m, int *ret_d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    const int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    const int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *ret_y = (int)(yoe + era * 400 + (m <= 2));
    *ret_m = m;
    *ret_d = d;
}

static int64_t utc_day(int64_t now_s)
{
    return now_s >= 0 ? now_s / 86400 : -((-now_s + 86399) / 86400);
}

/* A date field: empty allowed unless `required`; a calendar date from 1900-01-01 to today + ahead_days.
 * *ret_days (may be NULL) gets its day number, or INT64_MIN when empty. */
static base_result check_date(const char *path, const char *field, const char *s, bool required,
                              int64_t ahead_days, int64_t now_s, int64_t *ret_days)
{
    s = str_or_empty(s);
    if (!*s) {
        if (required)
            return invalid(path, field, "required");
        if (ret_days)
            *ret_days = INT64_MIN;
        return BASE_OK_RESULT;
    }
    int y, m, d;
    if (!parse_ymd(s, &y, &m, &d))
        return invalid(path, field, "not a calendar date YYYY-MM-DD");
    if (y < 1900)
        return invalid(path, field, "before 1900-01-01");
    int64_t days = days_from_civil(y, m, d);
    if (days > utc_day(now_s) + ahead_days) {
        if (ahead_days <= 1)
            return invalid(path, field, "in the future (after today + 1 day)");
        return base_fail(BASE_ERR_INVALID, "%s.%s: more than %d days in the future", path, field,
                         (int)ahead_days);
    }
    if (ret_days)
        *ret_days = days;
    return BASE_OK_RESULT;
}

BASE_MUST_USE base_result vault_age_years(const char *birth_date, int64_t now_s, uint32_t *ret_years)
{
    int by, bm, bd, ty, tm, td;
    if (!parse_date(birth_date, &by, &bm, &bd))
        return base_fail(BASE_ERR_INVALID, "birth_date: not a calendar date YYYY-MM-DD");
    civil_from_days(utc_day(now_s), &ty, &tm, &td);
    int age = ty - by;
    if (tm < bm || (tm == bm && td < bd))
        age--;
    *ret_years = age > 0 ? (uint32_t)age : 0;
    return BASE_OK_RESULT;
}

/* ---- Field formats ------------------------------------------------------------------------------------ */

/* E.164: '+', a non-zero digit, 7..15 digits in all. */
static bool is_e164(const char *s)
{
    if (s[0] != '+' || s[1] < '1' || s[1] > '9')
        return false;
    size_t n = 0;
    for (const char *p = s + 1; *p; p++, n++) {
        if (!is_digit(*p))
            return false;
    }
    return n >= 7 && n <= 15;
}

/* local@domain: local 1..64 of atext and '.', no leading, trailing or double '.'; domain of two or more
 * labels of [A-Za-z0-9-] (1..63, no leading or trailing '-'), the last one at least two letters. */
static bool is_email(const char *s)
{
    size_t len = strlen(s);
    if (len < 3 || len > VAULT_EMAIL_MAX)
        return false;
    const char *at = strchr(s, '@');
    if (!at || strchr(at + 1, '@'))
        return false;
    size_t local = (size_t)(at - s);
    if (local < 1 || local > 64 || s[0] == '.' || at[-1] == '.')
        return false;
    for (size_t i = 0; i < local; i++) {
        char c = s[i];
        if (c == '.' && s[i + 1] == '.')
            return false;
        if (!is_alnum(c) && !strchr(".!#$%&'*+/=?^_`{|}~-", c))
            return false;
    }
    const char *dom = at + 1;
    size_t labels = 0, label_len = 0;
    bool last_alpha = true;
    for (const char *p = dom;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label_len < 1 || label_len > 63 || p[-1] == '-')
                return false;
            labels++;
            if (*p == '\0')
                break;
            label_len = 0;
            last_alpha = true;
            continue;
        }
        if (!is_alnum(*p) && *p != '-')
            return false;
        if (label_len == 0 && *p == '-')
            return false;
        if (!is_upper(*p) && !is_lower(*p))
            last_alpha = false;
        label_len++;
    }
    return labels >= 2 && label_len >= 2 && last_alpha;
}

/* The 50 states, DC, the territories (AS GU MP PR VI UM), the freely associated states served by USPS
 * (FM MH PW) and the military "states" (AA AE AP). */
static bool is_us_state(const char *s)
{
    static const char codes[] = "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO "
                                "MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY "
                                "DC AS GU MP PR VI UM FM MH PW AA AE AP";
    if (strlen(s) != 2 || !is_upper(s[0]) || !is_upper(s[1]))
        return false;
    for (size_t i = 0; i + 1 < sizeof codes; i += 3) {
        if (codes[i] == s[0] && codes[i + 1] == s[1])
            return true;
    }
    return false;
}

static bool is_postal_code(const char *s)
{
    size_t len = strlen(s);
    if (len != 5 && len != 10)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (i == 5) {
            if (s[i] != '-')
                return false;
        } else if (!is_digit(s[i])) {
            return false;
        }
    }
    return true;
}

/* ICD-10-CM: a letter, a digit, a letter or digit, then optionally '.' and 1..4 letters or digits
 * ("E11.9", "N18.3", "M54.50", "F32.A"). Upper case only. */
static bool is_icd10cm(const char *s)
{
    size_t len = strlen(s);
    if (len < 3 || !is_upper(s[0]) || !is_digit(s[1]) || !(is_upper(s[2]) || is_digit(s[2])))
        return false;
    if (len == 3)
        return true;
    if (s[3] != '.' || len < 5 || len > 8)
        return false;
    for (size_t i = 4; i < len; i++) {
        if (!is_upper(s[i]) && !is_digit(s[i]))
            return false;
    }
    return true;
}

typedef enum code_fault { CODE_OK, CODE_FORMAT, CODE_CHECK } code_fault;

/* LOINC: 1..7 digits, '-', the mod-10 check digit (LOINC's algorithm, which is Luhn's over the digits). */
static code_fault loinc_check(const char *s)
{
    size_t len = strlen(s);
    if (len < 3 || len > 9 || s[len - 2] != '-' || !is_digit(s[len - 1]))
        return CODE_FORMAT;
    size_t n = len - 2;
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[n - 1 - i]; /* i = 0 is the rightmost digit */
        if (!is_digit(c))
            return CODE_FORMAT;
        int v = c - '0';
        if (i % 2 == 0) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return (10 - sum % 10) % 10 == s[len - 1] - '0' ? CODE_OK : CODE_CHECK;
}

/* SNOMED CT concept id: 6..18 digits, no leading zero, partition identifier (second and third digits from
 * the right) 00 or 10 (a concept), and a valid Verhoeff check digit (the last digit). */
static code_fault snomed_check(const char *s)
{
    static const unsigned char d[10][10] = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5},
                                            {2, 3, 4, 0, 1, 7, 8, 9, 5, 6}, {3, 4, 0, 1, 2, 8, 9, 5, 6, 7},
                                            {4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
                                            {6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3},
                                            {8, 7, 6, 5, 9, 3, 2, 1, 0, 4}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}};
    static const unsigned char p[8][10] = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
                                           {5, 8, 0, 3, 7, 9, 6, 1, 4, 2}, {8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
                                           {9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
                                           {2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8}};
    size_t len = strlen(s);
    if (len < 6 || len > 18 || s[0] == '0')
        return CODE_FORMAT;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return CODE_FORMAT;
    }
    if (s[len - 2] != '0' || (s[len - 3] != '0' && s[len - 3] != '1'))
        return CODE_FORMAT;
    unsigned c = 0;
    for (size_t i = 0; i < len; i++)
        c = d[c][p[i % 8][s[len - 1 - i] - '0']];
    return c == 0 ? CODE_OK : CODE_CHECK;
}

/* RxNorm RxCUI: 1..12 digits, no leading zero. */
static bool is_rxnorm(const char *s)
{
    size_t len = strlen(s);
    if (len < 1 || len > 12 || s[0] == '0')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return false;
    }
    return true;
}

enum { SYS_ICD10CM = 1, SYS_LOINC = 2, SYS_RXNORM = 4, SYS_SNOMED = 8 };

static int code_system(const char *s)
{
    if (strcmp(s, VAULT_SYSTEM_ICD10CM) == 0)
        return SYS_ICD10CM;
    if (strcmp(s, VAULT_SYSTEM_LOINC) == 0)
        return SYS_LOINC;
    if (strcmp(s, VAULT_SYSTEM_RXNORM) == 0)
        return SYS_RXNORM;
    if (strcmp(s, VAULT_SYSTEM_SNOMED) == 0)
        return SYS_SNOMED;
    return 0;
}

/* path is e.g. "item.problem.code"; allowed is a SYS_* mask; allowed_rule names it for the message. */
static base_result check_code(const char *path, const pb_code *c, int allowed, const char *allowed_rule)
{
    const char *system = str_or_empty(c->system), *code = str_or_empty(c->code);
    if (!*system)
        return invalid(path, "system", "required");
    int sys = code_system(system);
    if (sys == 0)
        return invalid(path, "system", "not a known code system (ICD-10-CM, LOINC, RxNorm or SNOMED CT URI)");
    if (!(sys & allowed))
        return invalid(path, "system", allowed_rule);
    if (!*code)
        return invalid(path, "code", "required");
    if (strlen(code) > VAULT_CODE_MAX)
        return base_fail(BASE_ERR_INVALID, "%s.code: at most %d bytes", path, VAULT_CODE_MAX);
    code_fault f = CODE_OK;
    switch (sys) {
    case SYS_ICD10CM:
        if (!is_icd10cm(code))
            return invalid(path, "code",
                           "not an ICD-10-CM code (letter, digit, letter or digit, optional '.' and 1-4 "
                           "letters or digits, upper case)");
        break;
    case SYS_LOINC:
        f = loinc_check(code);
        if (f == CODE_FORMAT)
            return invalid(path, "code", "not a LOINC code (digits, '-', check digit)");
        if (f == CODE_CHECK)
            return invalid(path, "code", "LOINC check digit does not match");
        break;
    case SYS_RXNORM:
        if (!is_rxnorm(code))
            return invalid(path, "code", "not an RxNorm code (1..12 digits)");
        break;
    case SYS_SNOMED:
        f = snomed_check(code);
        if (f == CODE_FORMAT)
            return invalid(path, "code", "not a SNOMED CT concept id (6..18 digits, concept partition)");
        if (f == CODE_CHECK)
            return invalid(path, "code", "SNOMED CT Verhoeff check digit does not match");
        break;
    default:
        return invalid(path, "system", "not a known code system");
    }
    return check_text(path, "display", c->display, 0, VAULT_DISPLAY_MAX);
}

/* ---- Patient ------------------------------------------------------------------------------------------ */

static base_result check_demographics(const pb_demographics *d, int64_t now_s)
{
    static const char *const path = "patient.demographics";
    BASE_GUARD(check_text(path, "family_name", d->family_name, 1, VAULT_NAME_MAX));
    if (d->n_given_names < 1 || d->n_given_names > VAULT_GIVEN_NAMES_MAX)
        return base_fail(BASE_ERR_INVALID, "%s.given_names: 1..%d names", path, VAULT_GIVEN_NAMES_MAX);
    for (size_t i = 0; i < d->n_given_names; i++) {
        char field[64];
        snprintf(field, sizeof field, "given_names[%zu]", i);
        BASE_GUARD(check_text(path, field, d->given_names[i], 1, VAULT_NAME_MAX));
    }
    BASE_GUARD(check_date(path, "birth_date", d->birth_date, true, 1, now_s, NULL));
    switch (d->sex) {
    case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_FEMALE:
    case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_MALE:
    case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_OTHER:
    case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_UNKNOWN:
        return BASE_OK_RESULT;
    case ALMA__VAULT__V1__ADMINISTRATIVE_SEX__ADMINISTRATIVE_SEX_UNSPECIFIED:
        return invalid(path, "sex", "required");
    default:
        return invalid(path, "sex", "not a known value");
    }
}

static base_result check_address(const pb_address *a)
{
    static const char *const path = "patient.contact.address";
    if (a->n_lines > VAULT_ADDRESS_LINES_MAX)
        return base_fail(BASE_ERR_INVALID, "%s.lines: at most %d lines", path, VAULT_ADDRESS_LINES_MAX);
    for (size_t i = 0; i < a->n_lines; i++) {
        char field[64];
        snprintf(field, sizeof field, "lines[%zu]", i);
        BASE_GUARD(check_text(path, field, a->lines[i], 1, VAULT_NAME_MAX));
    }
    BASE_GUARD(check_text(path, "city", a->city, 0, VAULT_NAME_MAX));
    const char *state = str_or_empty(a->state), *postal = str_or_empty(a->postal_code);
    const char *country = str_or_empty(a->country);
    if (*state && !is_us_state(state))
        return invalid(path, "state", "not a two-letter US state or territory code");
    if (*postal && !is_postal_code(postal))
        return invalid(path, "postal_code", "not a postal code (5 digits or 5+4 \"NNNNN-NNNN\")");
    if (*country && (strlen(country) != 2 || !is_upper(country[0]) || !is_upper(country[1])))
        return invalid(path, "country", "not an ISO 3166-1 alpha-2 code (two upper-case letters)");
    return BASE_OK_RESULT;
}

static base_result check_contact(const pb_contact *c)
{
    static const char *const path = "patient.contact";
    if (c->address)
        BASE_GUARD(check_address(c->address));
    const char *phone = str_or_empty(c->phone), *email = str_or_empty(c->email);
    if (*phone && !is_e164(phone))
        return invalid(path, "phone", "not an E.164 number ('+' and 7..15 digits)");
    if (*email && !is_email(email))
        return base_fail(BASE_ERR_INVALID, "%s.email: not an email address (local@domain, at most %d bytes)",
                         path, VAULT_EMAIL_MAX);
    return BASE_OK_RESULT;
}

static base_result check_coverage(size_t index, const pb_coverage *c, int64_t now_s)
{
    char path[64];
    snprintf(path, sizeof path, "patient.coverage[%zu]", index);
    BASE_GUARD(check_charset(path, "payer_id", c->payer_id, 1, VAULT_PAYER_ID_MAX, "._-",
                             "1..64 of [A-Za-z0-9._-]"));
    BASE_GUARD(check_text(path, "plan_name", c->plan_name, 1, VAULT_NAME_MAX));
    BASE_GUARD(
        check_charset(path, "member_id", c->member_id, 1, VAULT_MRN_MAX, "-", "1..32 of [A-Za-z0-9-]"));
    BASE_GUARD(
        check_charset(path, "group_number", c->group_number, 0, VAULT_MRN_MAX, "-", "0..32 of [A-Za-z0-9-]"));
    int64_t start = 0, end = 0;
    BASE_GUARD(check_date(path, "start_date", c->start_date, false, VAULT_PLANNED_DATE_DAYS, now_s, &start));
    BASE_GUARD(check_date(path, "end_date", c->end_date, false, VAULT_PLANNED_DATE_DAYS, now_s, &end));
    if (start != INT64_MIN && end != INT64_MIN && end < start)
        return invalid(path, "end_date", "before start_date");
    return BASE_OK_RESULT;
}

/* Whether m or any message inside it carries fields this build does not know. protobuf-c keeps them and
 * would pack them into the stored part unvalidated: a caller could store bytes no check has seen. A newer
 * client's field is refused rather than silently kept or dropped. */
static bool has_unknown_fields(const ProtobufCMessage *m, int depth)
{
    if (!m)
        return false;
    if (m->n_unknown_fields > 0 || depth > 16)
        return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const ProtobufCMessage *const *v = *(const ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (has_unknown_fields(v[k], depth + 1))
                    return true;
        } else if (has_unknown_fields(*(const ProtobufCMessage *const *)(base + f->offset), depth + 1)) {
            return true;
        }
    }
    return false;
}

BASE_MUST_USE base_result vault_validate_patient(const Alma__Vault__V1__Patient *p, int64_t now_s)
{
    if (!p)
        return base_fail(BASE_ERR_INVALID, "patient: required");
    if (has_unknown_fields(&p->base, 0))
        return base_fail(BASE_ERR_INVALID,
                         "patient: holds fields this server does not know (refused, not stored)");
    if (!p->demographics)
        return base_fail(BASE_ERR_INVALID, "patient.demographics: required");
    BASE_GUARD(check_demographics(p->demographics, now_s));
    if (p->contact)
        BASE_GUARD(check_contact(p->contact));
    if (!p->identifiers)
        return base_fail(BASE_ERR_INVALID, "patient.identifiers: required");
    BASE_GUARD(check_charset("patient.identifiers", "mrn", p->identifiers->mrn, 1, VAULT_MRN_MAX, "-",
                             "1..32 of [A-Za-z0-9-]"));
    if (p->n_coverage > VAULT_COVERAGE_MAX)
        return base_fail(BASE_ERR_INVALID, "patient.coverage: at most %d entries", VAULT_COVERAGE_MAX);
    for (size_t i = 0; i < p->n_coverage; i++) {
        if (!p->coverage[i])
            return base_fail(BASE_ERR_INVALID, "patient.coverage[%zu]: required", i);
        BASE_GUARD(check_coverage(i, p->coverage[i], now_s));
    }
    return BASE_OK_RESULT;
}

/* ---- Items -------------------------------------------------------------------------------------------- */

static base_result check_problem(const Alma__Vault__V1__Problem *pr, int64_t now_s)
{
    static const char *const path = "item.problem";
    if (!pr->code)
        return invalid(path, "code", "required");
    BASE_GUARD(check_code("item.problem.code", pr->code, SYS_ICD10CM | SYS_SNOMED,
                          "must be ICD-10-CM or SNOMED CT for a problem"));
    BASE_GUARD(check_date(path, "onset_date", pr->onset_date, false, 1, now_s, NULL));
    switch (pr->status) {
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_ACTIVE:
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_RESOLVED:
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_INACTIVE:
        return BASE_OK_RESULT;
    case ALMA__VAULT__V1__PROBLEM_STATUS__PROBLEM_STATUS_UNSPECIFIED:
        return invalid(path, "status", "required");
    default:
        return invalid(path, "status", "not a known value");
    }
}

static bool unit_chars_ok(const char *s)
{
    for (; *s; s++) {
        if (*s < 0x21 || *s > 0x7E)
            return false;
    }
    return true;
}

static base_result check_observation(const Alma__Vault__V1__Observation *o, int64_t now_s)
{
    static const char *const path = "item.observation";
    if (!o->code)
        return invalid(path, "code", "required");
    BASE_GUARD(check_code("item.observation.code", o->code, SYS_LOINC, "must be LOINC for an observation"));
    const char *unit = str_or_empty(o->unit);
    switch (o->value_case) {
    case ALMA__VAULT__V1__OBSERVATION__VALUE_QUANTITY:
        if (!isfinite(o->quantity))
            return invalid(path, "quantity", "not a finite number");
        if (!*unit)
            return invalid(path, "unit", "required with a quantity");
        if (strlen(unit) > VAULT_UNIT_MAX || !unit_chars_ok(unit))
            return base_fail(BASE_ERR_INVALID, "%s.unit: 1..%d printable ASCII characters (UCUM)", path,
                             VAULT_UNIT_MAX);
        break;
    case ALMA__VAULT__V1__OBSERVATION__VALUE_TEXT:
        BASE_GUARD(check_text(path, "text", o->text, 1, VAULT_OBS_TEXT_MAX));
        if (*unit)
            return invalid(path, "unit", "only with a quantity");
        break;
    case ALMA__VAULT__V1__OBSERVATION__VALUE__NOT_SET:
        return invalid(path, "value", "one of quantity or text is required");
    default:
        return invalid(path, "value", "not a known value kind");
    }
    return check_date(path, "effective_date", o->effective_date, true, 1, now_s, NULL);
}

static base_result check_medication(const Alma__Vault__V1__Medication *m, int64_t now_s)
{
    static const char *const path = "item.medication";
    if (m->code)
        BASE_GUARD(
            check_code("item.medication.code", m->code, SYS_RXNORM, "must be RxNorm for a medication"));
    BASE_GUARD(check_text(path, "name", m->name, 1, VAULT_TITLE_MAX));
    BASE_GUARD(check_text(path, "dose", m->dose, 0, VAULT_DOSE_MAX));
    int64_t start = 0, end = 0;
    BASE_GUARD(check_date(path, "start_date", m->start_date, true, 1, now_s, &start));
    BASE_GUARD(check_date(path, "end_date", m->end_date, false, VAULT_PLANNED_DATE_DAYS, now_s, &end));
    if (end != INT64_MIN && end < start)
        return invalid(path, "end_date", "before start_date");
    switch (m->status) {
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_ACTIVE:
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_COMPLETED:
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_STOPPED:
        return BASE_OK_RESULT;
    case ALMA__VAULT__V1__MEDICATION_STATUS__MEDICATION_STATUS_UNSPECIFIED:
        return invalid(path, "status", "required");
    default:
        return invalid(path, "status", "not a known value");
    }
}

static base_result check_note(const Alma__Vault__V1__Note *n, int64_t now_s)
{
    static const char *const path = "item.note";
    BASE_GUARD(check_text(path, "title", n->title, 1, VAULT_TITLE_MAX));
    BASE_GUARD(check_text_ml(path, "text", n->text, 1, VAULT_NOTE_TEXT_MAX, true));
    return check_date(path, "date", n->date, true, 1, now_s, NULL);
}

/* The content must look like its media type, so a viewer never gets, say, HTML labelled as a PNG. */
static bool content_matches(const char *media_type, const ProtobufCBinaryData *c)
{
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (strcmp(media_type, "application/pdf") == 0)
        return c->len >= 5 && memcmp(c->data, "%PDF-", 5) == 0;
    if (strcmp(media_type, "image/png") == 0)
        return c->len >= sizeof png && memcmp(c->data, png, sizeof png) == 0;
    if (strcmp(media_type, "image/jpeg") == 0)
        return c->len >= 3 && c->data[0] == 0xFF && c->data[1] == 0xD8 && c->data[2] == 0xFF;
    if (strcmp(media_type, "text/plain") == 0) {
        if (memchr(c->data, 0, c->len))
            return false;
        const unsigned char *u = c->data;
        for (size_t i = 0; i < c->len;) {
            uint32_t cp = 0;
            size_t n = utf8_decode(u + i, c->len - i, &cp);
            if (n == 0)
                return false;
            i += n;
        }
        return true;
    }
    return false;
}

static base_result check_document(const Alma__Vault__V1__Document *d, int64_t now_s)
{
    static const char *const path = "item.document";
    BASE_GUARD(check_text(path, "title", d->title, 1, VAULT_TITLE_MAX));
    const char *mt = str_or_empty(d->media_type);
    if (!*mt)
        return invalid(path, "media_type", "required");
    if (strcmp(mt, "application/pdf") != 0 && strcmp(mt, "text/plain") != 0 && strcmp(mt, "image/png") != 0 &&
        strcmp(mt, "image/jpeg") != 0)
        return invalid(path, "media_type", "one of application/pdf, text/plain, image/png, image/jpeg");
    if (d->content.len < 1 || !d->content.data)
        return invalid(path, "content", "required");
    if (d->content.len > VAULT_DOCUMENT_MAX)
        return base_fail(BASE_ERR_INVALID, "%s.content: 1..%u bytes", path, VAULT_DOCUMENT_MAX);
    if (!content_matches(mt, &d->content))
        return invalid(path, "content", "does not match media_type");
    return check_date(path, "date", d->date, true, 1, now_s, NULL);
}

BASE_MUST_USE base_result vault_validate_item(const Alma__Vault__V1__Item *item, int64_t now_s)
{
    if (!item)
        return base_fail(BASE_ERR_INVALID, "item: required");
    if (has_unknown_fields(&item->base, 0))
        return base_fail(BASE_ERR_INVALID,
                         "item: holds fields this server does not know (refused, not stored)");
    switch (item->body_case) {
    case ALMA__VAULT__V1__ITEM__BODY_PROBLEM:
        if (!item->problem)
            break;
        return check_problem(item->problem, now_s);
    case ALMA__VAULT__V1__ITEM__BODY_OBSERVATION:
        if (!item->observation)
            break;
        return check_observation(item->observation, now_s);
    case ALMA__VAULT__V1__ITEM__BODY_MEDICATION:
        if (!item->medication)
            break;
        return check_medication(item->medication, now_s);
    case ALMA__VAULT__V1__ITEM__BODY_NOTE:
        if (!item->note)
            break;
        return check_note(item->note, now_s);
    case ALMA__VAULT__V1__ITEM__BODY_DOCUMENT:
        if (!item->document)
            break;
        return check_document(item->document, now_s);
    case ALMA__VAULT__V1__ITEM__BODY__NOT_SET:
    default:
        break;
    }
    return base_fail(BASE_ERR_INVALID,
                     "item.body: one of problem, observation, medication, note, document is required");
}

/* ---- Classification ----------------------------------------------------------------------------------- */

int vault_item_category(const Alma__Vault__V1__Item *item)
{
    if (!item)
        return ALMA__VAULT__V1__CATEGORY__CATEGORY_CLINICAL;
    if (item->sensitive)
        return ALMA__VAULT__V1__CATEGORY__CATEGORY_SENSITIVE_CLINICAL;
    if (item->body_case == ALMA__VAULT__V1__ITEM__BODY_PROBLEM && item->problem && item->problem->code) {
        const pb_code *c = item->problem->code;
        /* ICD-10-CM chapter 5 is exactly F01-F99: any F code is mental or behavioural. Case-insensitive so
         * that classification never depends on validation having run first. */
        const char *code = str_or_empty(c->code);
        if (strcmp(str_or_empty(c->system), VAULT_SYSTEM_ICD10CM) == 0 && (code[0] == 'F' || code[0] == 'f'))
            return ALMA__VAULT__V1__CATEGORY__CATEGORY_SENSITIVE_CLINICAL;
    }
    return ALMA__VAULT__V1__CATEGORY__CATEGORY_CLINICAL;
}

int vault_item_kind(const Alma__Vault__V1__Item *item)
{
    if (!item)
        return ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_UNSPECIFIED;
    switch (item->body_case) {
    case ALMA__VAULT__V1__ITEM__BODY_PROBLEM:
        return ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PROBLEM;
    case ALMA__VAULT__V1__ITEM__BODY_OBSERVATION:
        return ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_OBSERVATION;
    case ALMA__VAULT__V1__ITEM__BODY_MEDICATION:
        return ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_MEDICATION;
    case ALMA__VAULT__V1__ITEM__BODY_NOTE:
        return ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_NOTE;
    case ALMA__VAULT__V1__ITEM__BODY_DOCUMENT:
        return ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_DOCUMENT;
    case ALMA__VAULT__V1__ITEM__BODY__NOT_SET:
    default:
        return ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_UNSPECIFIED;
    }
}

/* ---- Parts -------------------------------------------------------------------------------------------- */

void vault_parts_free(vault_parts *parts)
{
    if (!parts)
        return;
    for (int c = 0; c <= VAULT_CATEGORY_MAX; c++) {
        if (parts->data[c]) {
            acrypto_wipe(parts->data[c], parts->len[c]);
            free(parts->data[c]);
        }
    }
    memset(parts, 0, sizeof *parts);
}

/* Serialise m into parts->data[category] (at least one byte allocated). */
static base_result pack_part(const ProtobufCMessage *m, int category, vault_parts *parts)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    if (size > VAULT_PART_MAX)
        return base_fail(BASE_ERR_LIMIT, "%s part: more than %u bytes", vault_category_name(category),
                         (unsigned)VAULT_PART_MAX);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return base_fail(BASE_ERR_NOMEM, "out of memory packing a record part");
    size_t n = protobuf_c_message_pack(m, buf);
    if (n != size) {
        acrypto_wipe(buf, size);
        free(buf);
        return base_fail(BASE_ERR_INTERNAL, "record part packed to an unexpected size");
    }
    parts->data[category] = buf;
    parts->len[category] = size;
    parts->categories |= VAULT_CATEGORY_BIT((unsigned)category);
    return BASE_OK_RESULT;
}

BASE_MUST_USE base_result vault_patient_pack(const Alma__Vault__V1__Patient *p, vault_parts *ret)
{
    if (!p || (!p->demographics && !p->identifiers))
        return base_fail(BASE_ERR_INVALID, "patient: demographics and identifiers are required");
    vault_parts parts;
    memset(&parts, 0, sizeof parts);
    base_result r = BASE_OK_RESULT;
    if (p->demographics)
        BASE_GUARD_GOTO(
            r, pack_part(&p->demographics->base, ALMA__VAULT__V1__CATEGORY__CATEGORY_DEMOGRAPHIC, &parts),
            fail);
    /* An empty Contact (no field set) carries nothing: it is left out rather than stored as an empty part. */
    if (p->contact && protobuf_c_message_get_packed_size(&p->contact->base) > 0)
        BASE_GUARD_GOTO(r, pack_part(&p->contact->base, ALMA__VAULT__V1__CATEGORY__CATEGORY_CONTACT, &parts),
                        fail);
    if (p->identifiers)
        BASE_GUARD_GOTO(
            r, pack_part(&p->identifiers->base, ALMA__VAULT__V1__CATEGORY__CATEGORY_IDENTIFIER, &parts),
            fail);
    if (p->n_coverage > 0) {
        pb_patient wrapper = ALMA__VAULT__V1__PATIENT__INIT;
        wrapper.n_coverage = p->n_coverage;
        wrapper.coverage = p->coverage;
        BASE_GUARD_GOTO(r, pack_part(&wrapper.base, ALMA__VAULT__V1__CATEGORY__CATEGORY_FINANCIAL, &parts),
                        fail);
    }
    *ret = parts;
    return BASE_OK_RESULT;
fail:
    vault_parts_free(&parts);
    return r;
}

BASE_MUST_USE base_result vault_item_pack(const Alma__Vault__V1__Item *item, vault_parts *ret)
{
    if (vault_item_kind(item) == ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_UNSPECIFIED)
        return base_fail(BASE_ERR_INVALID, "item.body: required");
    vault_parts parts;
    memset(&parts, 0, sizeof parts);
    base_result r = pack_part(&item->base, vault_item_category(item), &parts);
    if (!base_is_ok(r))
        return r;
    *ret = parts;
    return BASE_OK_RESULT;
}

static base_result integrity_failure(void)
{
    return base_fail(BASE_ERR_CRYPTO, INTEGRITY_MSG);
}

static size_t put_varint(uint8_t *out, size_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* The FINANCIAL part is a Patient holding coverage only; anything else in it would be merged into the
 * categories the caller did not ask for, so it is refused. */
static base_result check_financial_part(const uint8_t *data, size_t len)
{
    pb_patient *w = alma__vault__v1__patient__unpack(NULL, len, data);
    if (!w)
        return integrity_failure();
    bool ok = !w->demographics && !w->contact && !w->identifiers && w->n_coverage > 0;
    alma__vault__v1__patient__free_unpacked(w, NULL);
    return ok ? BASE_OK_RESULT : integrity_failure();
}

BASE_MUST_USE base_result vault_patient_unpack(const vault_record *r, ProtobufCAllocator *alloc,
                                               Alma__Vault__V1__Patient **ret)
{
    /* Field numbers of Patient that hold each category's message (length-delimited: wire type 2). */
    static const struct {
        int category;
        uint8_t tag;
    } wrapped[] = {
        {ALMA__VAULT__V1__CATEGORY__CATEGORY_DEMOGRAPHIC, (1 << 3) | 2},
        {ALMA__VAULT__V1__CATEGORY__CATEGORY_CONTACT, (2 << 3) | 2},
        {ALMA__VAULT__V1__CATEGORY__CATEGORY_IDENTIFIER, (3 << 3) | 2},
    };
    const int fin = ALMA__VAULT__V1__CATEGORY__CATEGORY_FINANCIAL;
    if (!r)
        return base_fail(BASE_ERR_INTERNAL, "no record to unpack");
    if (r->kind != ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT)
        return base_fail(BASE_ERR_INTERNAL, "not a patient record");

    /* The serialised Patient is the concatenation of each present category as its field (tag, length,
     * message) and the FINANCIAL part, which is already a serialised Patient. One unpack then builds one
     * message that free_unpacked() frees as a whole. */
    size_t total = 0;
    bool any = false;
    for (size_t i = 0; i < BASE_ARRAY_LEN(wrapped); i++) {
        const acrypto_secret *s = r->parts[wrapped[i].category];
        if (!s)
            continue;
        if (acrypto_secret_len(s) > VAULT_PART_MAX)
            return integrity_failure();
        total += 1 + 10 + acrypto_secret_len(s);
        any = true;
    }
    if (r->parts[fin]) {
        if (acrypto_secret_len(r->parts[fin]) > VAULT_PART_MAX)
            return integrity_failure();
        BASE_GUARD(
            check_financial_part(acrypto_secret_bytes(r->parts[fin]), acrypto_secret_len(r->parts[fin])));
        total += acrypto_secret_len(r->parts[fin]);
        any = true;
    }
    if (!any) {
        *ret = NULL;
        return BASE_OK_RESULT;
    }
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf)
        return base_fail(BASE_ERR_NOMEM, "out of memory unpacking a record");
    size_t n = 0;
    for (size_t i = 0; i < BASE_ARRAY_LEN(wrapped); i++) {
        const acrypto_secret *s = r->parts[wrapped[i].category];
        if (!s)
            continue;
        size_t len = acrypto_secret_len(s);
        buf[n++] = wrapped[i].tag;
        n += put_varint(buf + n, len);
        if (len)
            memcpy(buf + n, acrypto_secret_bytes(s), len);
        n += len;
    }
    if (r->parts[fin]) {
        size_t len = acrypto_secret_len(r->parts[fin]);
        if (len)
            memcpy(buf + n, acrypto_secret_bytes(r->parts[fin]), len);
        n += len;
    }
    pb_patient *p = alma__vault__v1__patient__unpack(alloc, n, buf);
    acrypto_wipe(buf, total);
    free(buf);
    if (!p)
        return integrity_failure();
    *ret = p;
    return BASE_OK_RESULT;
}

BASE_MUST_USE base_result vault_item_unpack(const vault_record *r, ProtobufCAllocator *alloc,
                                            Alma__Vault__V1__Item **ret)
{
    if (!r)
        return base_fail(BASE_ERR_INTERNAL, "no record to unpack");
    if (r->kind < ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PROBLEM ||
        r->kind > ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_DOCUMENT)
        return base_fail(BASE_ERR_INTERNAL, "not an item record");
    const acrypto_secret *clin = r->parts[ALMA__VAULT__V1__CATEGORY__CATEGORY_CLINICAL];
    const acrypto_secret *sens = r->parts[ALMA__VAULT__V1__CATEGORY__CATEGORY_SENSITIVE_CLINICAL];
    if (clin && sens)
        return integrity_failure();
    const acrypto_secret *s = clin ? clin : sens;
    if (!s) {
        *ret = NULL;
        return BASE_OK_RESULT;
    }
    if (acrypto_secret_len(s) > VAULT_PART_MAX)
        return integrity_failure();
    pb_item *item = alma__vault__v1__item__unpack(alloc, acrypto_secret_len(s), acrypto_secret_bytes(s));
    if (!item)
        return integrity_failure();
    if (vault_item_kind(item) != r->kind) {
        alma__vault__v1__item__free_unpacked(item, alloc);
        return integrity_failure();
    }
    *ret = item;
    return BASE_OK_RESULT;
}

/* ---- Blind-index values ------------------------------------------------------------------------------- */

void vault_blind_buf_wipe(vault_blind_buf *b)
{
    if (b)
        acrypto_wipe(b, sizeof *b);
}

/* MRN / member id: ASCII letters upper-cased, ' ' and '-' removed, other bytes kept. Returns the length, or
 * 0 when nothing is left or it would not fit in cap. */
static size_t normalise_id(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s; s++) {
        char c = *s;
        if (c == ' ' || c == '-')
            continue;
        if (is_lower(c))
            c = (char)(c - 'a' + 'A');
        if (n >= cap)
            return 0;
        out[n++] = c;
    }
    return n;
}

/* A name: ASCII letters lower-cased, other ASCII bytes removed, bytes >= 0x80 kept. Appends to out at *n. */
static bool normalise_name(const char *s, char *out, size_t cap, size_t *n)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (is_upper((char)c))
            c = (unsigned char)(c - 'A' + 'a');
        else if (c < 0x80 && !is_lower((char)c))
            continue;
        if (*n >= cap)
            return false;
        out[(*n)++] = (char)c;
    }
    return true;
}

static bool append_byte(char *out, size_t cap, size_t *n, char c)
{
    if (*n >= cap)
        return false;
    out[(*n)++] = c;
    return true;
}

static size_t name_dob_value(const char *family, const char *given, const char *birth_date, char *out,
                             size_t cap)
{
    size_t n = 0;
    if (!normalise_name(family, out, cap, &n) || !append_byte(out, cap, &n, 0x1f) ||
        !normalise_name(given, out, cap, &n) || !append_byte(out, cap, &n, 0x1f))
        return 0;
    size_t dl = strlen(birth_date);
    if (n + dl > cap)
        return 0;
    memcpy(out + n, birth_date, dl);
    return n + dl;
}

static void blind_add(vault_blind_buf *b, int kind, size_t len)
{
    b->values[b->count].kind = kind;
    b->values[b->count].value = b->bytes[b->count];
    b->values[b->count].len = len;
    b->count++;
}

static bool blind_has(const vault_blind_buf *b, int kind, const char *v, size_t len)
{
    for (size_t i = 0; i < b->count; i++) {
        if (b->values[i].kind == kind && b->values[i].len == len && memcmp(b->values[i].value, v, len) == 0)
            return true;
    }
    return false;
}

/* The buffer is large (8 KiB) and holds PHI-derived bytes: built in place, wiped on failure. */
BASE_MUST_USE base_result vault_blind_values(const Alma__Vault__V1__Patient *p, vault_blind_buf *ret)
{
    if (!p)
        return base_fail(BASE_ERR_INVALID, "patient: required");
    if (p->n_coverage > VAULT_COVERAGE_MAX)
        return base_fail(BASE_ERR_INVALID, "patient.coverage: at most %d entries", VAULT_COVERAGE_MAX);
    memset(ret, 0, sizeof *ret);
    base_result r = BASE_OK_RESULT;
    if (p->identifiers) {
        size_t len =
            normalise_id(str_or_empty(p->identifiers->mrn), ret->bytes[ret->count], VAULT_BLIND_VALUE_MAX);
        if (len == 0) {
            r = base_fail(BASE_ERR_INVALID, "patient.identifiers.mrn: has no letters or digits");
            goto fail;
        }
        blind_add(ret, VAULT_BLIND_MRN, len);
    }
    for (size_t i = 0; i < p->n_coverage; i++) {
        if (!p->coverage[i])
            continue;
        char *slot = ret->bytes[ret->count];
        size_t len = normalise_id(str_or_empty(p->coverage[i]->member_id), slot, VAULT_BLIND_VALUE_MAX);
        if (len == 0) {
            r = base_fail(BASE_ERR_INVALID, "patient.coverage[%zu].member_id: has no letters or digits", i);
            goto fail;
        }
        if (blind_has(ret, VAULT_BLIND_MEMBER_ID, slot, len)) {
            acrypto_wipe(slot, len);
            continue;
        }
        blind_add(ret, VAULT_BLIND_MEMBER_ID, len);
    }
    const pb_demographics *d = p->demographics;
    if (d && d->n_given_names > 0 && d->given_names[0] && vault_is_calendar_date(d->birth_date)) {
        size_t len = name_dob_value(str_or_empty(d->family_name), d->given_names[0], d->birth_date,
                                    ret->bytes[ret->count], VAULT_BLIND_VALUE_MAX);
        if (len == 0) {
            r = base_fail(BASE_ERR_INVALID, "patient.demographics: name too long for the search index");
            goto fail;
        }
        blind_add(ret, VAULT_BLIND_NAME_DOB, len);
    }
    return BASE_OK_RESULT;
fail:
    vault_blind_buf_wipe(ret);
    return r;
}

/* A query id (mrn or member_id): 1..64 bytes of [A-Za-z0-9 -] that normalise to 1..32 of [A-Z0-9]. */
static base_result query_id(const char *field, const char *s, vault_blind_buf *b, int kind)
{
    s = str_or_empty(s);
    size_t len = strlen(s);
    if (len == 0)
        return base_fail(BASE_ERR_INVALID, "%s: required", field);
    if (len > 2 * VAULT_MRN_MAX)
        return base_fail(BASE_ERR_INVALID, "%s: 1..32 of [A-Za-z0-9-]", field);
    for (size_t i = 0; i < len; i++) {
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != ' ')
            return base_fail(BASE_ERR_INVALID, "%s: 1..32 of [A-Za-z0-9-]", field);
    }
    size_t n = normalise_id(s, b->bytes[0], VAULT_MRN_MAX);
    if (n == 0) {
        vault_blind_buf_wipe(b);
        return base_fail(BASE_ERR_INVALID, "%s: 1..32 of [A-Za-z0-9-]", field);
    }
    blind_add(b, kind, n);
    return BASE_OK_RESULT;
}

BASE_MUST_USE base_result vault_blind_for_query(const Alma__Vault__V1__FindPatientsRequest *req,
                                                vault_blind_buf *ret)
{
    if (!req)
        return base_fail(BASE_ERR_INVALID, "request: required");
    memset(ret, 0, sizeof *ret);
    switch (req->by_case) {
    case ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MRN:
        return query_id("mrn", req->mrn, ret, VAULT_BLIND_MRN);
    case ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_MEMBER_ID:
        return query_id("member_id", req->member_id, ret, VAULT_BLIND_MEMBER_ID);
    case ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY_NAME_AND_BIRTH_DATE: {
        const Alma__Vault__V1__NameAndBirthDate *q = req->name_and_birth_date;
        static const char *const path = "name_and_birth_date";
        if (!q)
            return base_fail(BASE_ERR_INVALID, "%s: required", path);
        BASE_GUARD(check_text(path, "family_name", q->family_name, 1, VAULT_NAME_MAX));
        BASE_GUARD(check_text(path, "given_name", q->given_name, 1, VAULT_NAME_MAX));
        if (!*str_or_empty(q->birth_date))
            return invalid(path, "birth_date", "required");
        if (!vault_is_calendar_date(q->birth_date))
            return invalid(path, "birth_date", "not a calendar date YYYY-MM-DD");
        size_t len = name_dob_value(q->family_name, q->given_name, q->birth_date, ret->bytes[0],
                                    VAULT_BLIND_VALUE_MAX);
        if (len == 0) {
            vault_blind_buf_wipe(ret);
            return base_fail(BASE_ERR_INVALID, "%s: too long", path);
        }
        blind_add(ret, VAULT_BLIND_NAME_DOB, len);
        return BASE_OK_RESULT;
    }
    case ALMA__VAULT__V1__FIND_PATIENTS_REQUEST__BY__NOT_SET:
    default:
        return base_fail(BASE_ERR_INVALID, "by: one of mrn, member_id, name_and_birth_date is required");
    }
}
