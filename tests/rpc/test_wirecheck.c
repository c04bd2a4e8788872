/* rpc_wire_check_strings: the pass that keeps NUL bytes and invalid UTF-8 out of string fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "rpc/rpc.h"
#include "rpc_test.pb-c.h"

#include <string.h>

static const ProtobufCMessageDescriptor *nest = &alma__rpctest__v1__nest__descriptor;

static bool ok(const void *p, size_t n)
{
    return base_is_ok(rpc_wire_check_strings(nest, p, n));
}

static void test_plain_strings(void **state)
{
    (void)state;
    assert_true(ok("", 0));
    assert_true(ok("\x0a\x03"
                   "abc",
                   5));
    assert_true(ok("\x0a\x02\xc3\xa9", 4)); /* é */
    assert_false(ok("\x0a\x03"
                    "a\0c",
                    5));                             /* NUL */
    assert_false(ok("\x0a\x02\xc0\xaf", 4));         /* overlong */
    assert_false(ok("\x0a\x03\xed\xa0\x80", 5));     /* surrogate */
    assert_false(ok("\x0a\x04\xf4\x90\x80\x80", 6)); /* above U+10FFFF */
    assert_false(ok("\x0a\x02\xe2\x82", 4));         /* truncated sequence */
}

static void test_bytes_may_hold_anything(void **state)
{
    (void)state;
    assert_true(ok("\x1a\x03"
                   "a\0\xff",
                   5));
}

static void test_nested_and_maps(void **state)
{
    (void)state;
    /* children { name: "a\0" } */
    assert_false(ok("\x12\x04\x0a\x02"
                    "a\0",
                    6));
    assert_true(ok("\x12\x04\x0a\x02"
                   "ab",
                   6));
    /* labels { key: "k" value: "\xff" } */
    assert_false(ok("\x22\x06\x0a\x01k\x12\x01\xff", 8));
    assert_true(ok("\x22\x06\x0a\x01k\x12\x01v", 8));
}

static void test_malformed(void **state)
{
    (void)state;
    assert_false(ok("\x0a\x05"
                    "ab",
                    4));                                                  /* length past the end */
    assert_false(ok("\x0a", 1));                                          /* missing length */
    assert_false(ok("\x08\x80\x80", 3));                                  /* truncated varint */
    assert_false(ok("\x0b", 1));                                          /* group start */
    assert_false(ok("\x0f", 1));                                          /* wire type 7 */
    assert_false(ok("\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11)); /* huge length */
    assert_true(ok("\x28\x01\x31\0\0\0\0\0\0\0\0", 11)); /* unknown varint + fixed64 fields pass */
}

static void test_depth_limit(void **state)
{
    (void)state;
    /* 40 nested children: deeper than the walk allows. Built inside out. */
    uint8_t buf[256];
    size_t len = 0;
    for (int i = 0; i < 40; i++) {
        memmove(buf + 2, buf, len);
        buf[0] = 0x12;
        buf[1] = (uint8_t)len;
        len += 2;
    }
    assert_false(ok(buf, len));
    /* 10 levels is fine */
    len = 0;
    for (int i = 0; i < 10; i++) {
        memmove(buf + 2, buf, len);
        buf[0] = 0x12;
        buf[1] = (uint8_t)len;
        len += 2;
    }
    assert_true(ok(buf, len));
    const char *msg = base_error_message();
    (void)msg;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_strings),   cmocka_unit_test(test_bytes_may_hold_anything),
        cmocka_unit_test(test_nested_and_maps), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_depth_limit),
    };
    return cmocka_run_group_tests_name("wirecheck", tests, NULL, NULL);
}
