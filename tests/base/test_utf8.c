/* base_utf8_next: the suite's one strict UTF-8 decoder (RFC 3629). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/utf8.h"

static size_t next(const char *s, size_t n, uint32_t *cp)
{
    return base_utf8_next((const unsigned char *)s, n, cp);
}

static void test_well_formed(void **state)
{
    (void)state;
    uint32_t cp = 0;
    assert_int_equal(next("A", 1, &cp), 1);
    assert_int_equal(cp, 'A');
    assert_int_equal(next("\0", 1, &cp), 1); /* NUL is well formed; callers decide */
    assert_int_equal(cp, 0);
    assert_int_equal(next("\xc3\xa9", 2, &cp), 2);
    assert_int_equal(cp, 0xe9);
    assert_int_equal(next("\xe2\x82\xac", 3, &cp), 3);
    assert_int_equal(cp, 0x20ac);
    assert_int_equal(next("\xf0\x9f\x98\x80", 4, &cp), 4);
    assert_int_equal(cp, 0x1f600);
    assert_int_equal(next("\xf4\x8f\xbf\xbf", 4, NULL), 4); /* U+10FFFF */
}

static void test_ill_formed(void **state)
{
    (void)state;
    uint32_t cp = 7;
    assert_int_equal(next("", 0, &cp), 0);
    assert_int_equal(next("\x80", 1, &cp), 0);             /* stray continuation */
    assert_int_equal(next("\xc0\xaf", 2, &cp), 0);         /* overlong '/' */
    assert_int_equal(next("\xe0\x80\xaf", 3, &cp), 0);     /* overlong */
    assert_int_equal(next("\xed\xa0\x80", 3, &cp), 0);     /* surrogate */
    assert_int_equal(next("\xf4\x90\x80\x80", 4, &cp), 0); /* above U+10FFFF */
    assert_int_equal(next("\xf5\x80\x80\x80", 4, &cp), 0);
    assert_int_equal(next("\xe2\x82\xac", 2, &cp), 0); /* cut short by n */
    assert_int_equal(next("\xe2\x82", 3, &cp), 0);     /* cut short by a NUL */
    assert_int_equal(cp, 7);                           /* untouched on failure */
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_well_formed), cmocka_unit_test(test_ill_formed)};
    return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
