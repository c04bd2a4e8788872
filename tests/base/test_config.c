/* cfg_load(): precedence (default < environment < flag), both flag forms, and every way a setting can be
 * wrong, with the rule that an error message names the setting and never repeats the bad value. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"

#define SECRET_DEFAULT "default-pass-xyz"

static const char *api_addr;
static long workers;
static bool tls;
static const char *db_password;
static const char *db_uri;

static const cfg_setting main_settings[] = {
    {"api-addr", CFG_STRING, "0.0.0.0:50051", &api_addr, 0, 64, "address to listen on", false},
    {"workers", CFG_INT, "4", &workers, 1, 256, "worker threads", false},
    {"tls", CFG_BOOL, "true", &tls, 0, 0, "serve TLS", false},
    {"db-password", CFG_STRING, SECRET_DEFAULT, &db_password, 0, 0, "database password", true},
};
static const cfg_table main_table[] = {{main_settings, BASE_ARRAY_LEN(main_settings)}};

static const cfg_setting required_settings[] = {
    {"db-uri", CFG_STRING, NULL, &db_uri, 1, 0, "database URI", true},
};
static const cfg_table two_tables[] = {
    {main_settings, BASE_ARRAY_LEN(main_settings)},
    {required_settings, BASE_ARRAY_LEN(required_settings)},
};

static const char *const all_env[] = {"ALMA_API_ADDR", "ALMA_WORKERS", "ALMA_TLS", "ALMA_DB_PASSWORD",
                                      "ALMA_DB_URI"};

/* Markers the loader never produces, to see whether a variable was written. */
static const char untouched_str[] = "untouched";
#define UNTOUCHED_INT -12345L

static int reset(void **state)
{
    (void)state;
    for (size_t i = 0; i < BASE_ARRAY_LEN(all_env); i++)
        unsetenv(all_env[i]);
    api_addr = untouched_str;
    workers = UNTOUCHED_INT;
    tls = false;
    db_password = untouched_str;
    db_uri = untouched_str;
    return 0;
}

static int argv_count(char **argv)
{
    int n = 0;
    while (argv[n])
        n++;
    return n;
}

/* argv must end with NULL; argv[0] is the program. */
static base_result load(const cfg_table *tables, size_t ntables, char **argv, bool *ret_help)
{
    return cfg_load(tables, ntables, argv_count(argv), argv, "alma-test", "A test program.", NULL, ret_help);
}

static base_result load_main(char **argv)
{
    bool help = true;
    base_result r = load(main_table, 1, argv, &help);
    if (base_is_ok(r))
        assert_false(help);
    return r;
}

#define ARGV(...) ((char *[]){"prog", __VA_ARGS__, NULL})
#define NO_ARGS   ((char *[]){"prog", NULL})

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_not_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle))
        fail_msg("did not expect \"%s\" in \"%s\"", needle, haystack);
}

/* A load that must fail as INVALID, leave every variable alone, and name `env` and `flag`. */
static void expect_invalid(char **argv, const char *env, const char *flag, const char *bad_value)
{
    base_result r = load_main(argv);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    const char *m = base_error_message();
    if (env)
        assert_contains(m, env);
    if (flag)
        assert_contains(m, flag);
    /* Values of one or two characters ("-", "0") can occur in any message by chance. */
    if (bad_value && strlen(bad_value) >= 3)
        assert_not_contains(m, bad_value);
    assert_ptr_equal(api_addr, untouched_str);
    assert_int_equal(workers, UNTOUCHED_INT);
    assert_ptr_equal(db_password, untouched_str);
}

static void expect_invalid_int_flag(const char *value)
{
    char arg[128];
    snprintf(arg, sizeof arg, "--workers=%s", value);
    expect_invalid(ARGV(arg), "ALMA_WORKERS", "--workers", value);
    assert_contains(base_error_message(), "expected an integer from 1 to 256");
}

static void test_defaults(void **state)
{
    (void)state;
    assert_true(base_is_ok(load_main(NO_ARGS)));
    assert_string_equal(api_addr, "0.0.0.0:50051");
    assert_int_equal(workers, 4);
    assert_true(tls);
    assert_string_equal(db_password, SECRET_DEFAULT);
}

static void test_env_overrides_default(void **state)
{
    (void)state;
    setenv("ALMA_API_ADDR", "10.0.0.1:7000", 1);
    setenv("ALMA_WORKERS", "16", 1);
    setenv("ALMA_TLS", "off", 1);
    setenv("ALMA_DB_PASSWORD", "from-env", 1);
    assert_true(base_is_ok(load_main(NO_ARGS)));
    assert_string_equal(api_addr, "10.0.0.1:7000");
    assert_int_equal(workers, 16);
    assert_false(tls);
    assert_string_equal(db_password, "from-env");
}

static void test_flag_overrides_env(void **state)
{
    (void)state;
    setenv("ALMA_WORKERS", "16", 1);
    setenv("ALMA_API_ADDR", "10.0.0.1:7000", 1);
    assert_true(base_is_ok(load_main(ARGV("--workers", "32", "--api-addr=127.0.0.1:9"))));
    assert_int_equal(workers, 32);
    assert_string_equal(api_addr, "127.0.0.1:9");

    reset(NULL);
    setenv("ALMA_WORKERS", "16", 1);
    assert_true(base_is_ok(load_main(ARGV("--workers=33"))));
    assert_int_equal(workers, 33);
}

static void test_flag_forms(void **state)
{
    (void)state;
    /* "--name value": the variable points at the argv string itself (no copy). */
    char **argv = ARGV("--api-addr", "127.0.0.1:1", "--workers", "-0", "--workers", "+7");
    assert_true(base_is_ok(load_main(argv)));
    assert_ptr_equal(api_addr, argv[2]);
    assert_int_equal(workers, 7); /* the last one wins */

    /* "--name=value": points just past the '='. */
    argv = ARGV("--api-addr=[::1]:2", "--workers=256");
    assert_true(base_is_ok(load_main(argv)));
    assert_ptr_equal(api_addr, argv[1] + strlen("--api-addr="));
    assert_int_equal(workers, 256);

    /* An empty value is a value. */
    assert_true(base_is_ok(load_main(ARGV("--api-addr="))));
    assert_string_equal(api_addr, "");

    /* A value may start with '-' in the two-word form. */
    assert_true(base_is_ok(load_main(ARGV("--api-addr", "-x"))));
    assert_string_equal(api_addr, "-x");

    /* "--" ends the flags. */
    assert_true(base_is_ok(load_main(ARGV("--workers=9", "--"))));
    assert_int_equal(workers, 9);
}

static void test_bool_forms(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
    static const char *const no[] = {"false", "no", "off", "0", "FALSE", "Off"};
    char arg[64];
    for (size_t i = 0; i < BASE_ARRAY_LEN(yes); i++) {
        tls = false;
        snprintf(arg, sizeof arg, "--tls=%s", yes[i]);
        assert_true(base_is_ok(load_main(ARGV(arg))));
        assert_true(tls);
        tls = true;
        snprintf(arg, sizeof arg, "--tls=%s", no[i]);
        assert_true(base_is_ok(load_main(ARGV(arg))));
        assert_false(tls);
        tls = true;
        assert_true(base_is_ok(load_main(ARGV("--tls", (char *)no[i]))));
        assert_false(tls);
    }
    /* Alone, a bool flag means true, also when another flag follows. */
    setenv("ALMA_TLS", "no", 1);
    assert_true(base_is_ok(load_main(ARGV("--tls"))));
    assert_true(tls);
    tls = false;
    assert_true(base_is_ok(load_main(ARGV("--tls", "--workers=2"))));
    assert_true(tls);
    assert_int_equal(workers, 2);
}

static void test_required_missing(void **state)
{
    (void)state;
    bool help = true;
    base_result r = load(two_tables, 2, NO_ARGS, &help);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_true(help); /* ret_help untouched on failure */
    assert_contains(base_error_message(), "ALMA_DB_URI");
    assert_contains(base_error_message(), "--db-uri");
    assert_ptr_equal(db_uri, untouched_str);
    assert_ptr_equal(api_addr, untouched_str);

    /* Required with min length 1: set but empty is as bad as missing. */
    r = load(two_tables, 2, ARGV("--db-uri="), &help);
    assert_int_equal(r.err, BASE_ERR_INVALID);
    assert_contains(base_error_message(), "ALMA_DB_URI");

    setenv("ALMA_DB_URI", "postgresql://db/alma", 1);
    assert_true(base_is_ok(load(two_tables, 2, NO_ARGS, &help)));
    assert_false(help);
    assert_string_equal(db_uri, "postgresql://db/alma");
    assert_int_equal(workers, 4);
}

static void test_bad_int(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "12abc",
        "abc",
        "",
        " 5",
        "5 ",
        "0x10",
        "1.5",
        "-",
        "+",
        "0",
        "257",
        "-1",
        "99999999999999999999999",
        "-99999999999999999999999",
        "9223372036854775808",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++)
        expect_invalid_int_flag(bad[i]);

    /* The same rules for the environment. */
    setenv("ALMA_WORKERS", "12abc", 1);
    expect_invalid(NO_ARGS, "ALMA_WORKERS", "--workers", "12abc");
    setenv("ALMA_WORKERS", "1000", 1);
    expect_invalid(NO_ARGS, "ALMA_WORKERS", "--workers", "1000");

    /* Overflow is caught by strtol's ERANGE, not just by the range, for a setting that allows any long. */
    static long any;
    static const cfg_setting any_long[] = {
        {"any", CFG_INT, "0", &any, LONG_MIN, LONG_MAX, "any long", false}};
    bool help = false;
    any = 5;
    assert_int_equal(load(&(cfg_table){any_long, 1}, 1, ARGV("--any=9223372036854775808"), &help).err,
                     BASE_ERR_INVALID);
    assert_int_equal(load(&(cfg_table){any_long, 1}, 1, ARGV("--any=-9223372036854775809"), &help).err,
                     BASE_ERR_INVALID);
    assert_int_equal(any, 5);
    assert_true(base_is_ok(load(&(cfg_table){any_long, 1}, 1, ARGV("--any=-9223372036854775808"), &help)));
    assert_int_equal(any, LONG_MIN);
    assert_true(base_is_ok(load(&(cfg_table){any_long, 1}, 1, ARGV("--any", "9223372036854775807"), &help)));
    assert_int_equal(any, LONG_MAX);

    /* Only the effective value is checked: a bad environment value is fine when a flag overrides it. */
    assert_true(base_is_ok(load_main(ARGV("--workers=1"))));
    assert_int_equal(workers, 1);
}

static void test_bad_bool(void **state)
{
    (void)state;
    static const char *const bad[] = {"maybe", "", "2", "truee", "y", "ture", "yes "};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--tls=%s", bad[i]);
        expect_invalid(ARGV(arg), "ALMA_TLS", "--tls", bad[i]);
        assert_contains(base_error_message(), "expected true/false");
    }
    setenv("ALMA_TLS", "enabled", 1);
    expect_invalid(NO_ARGS, "ALMA_TLS", "--tls", "enabled");
    /* "--tls maybe": the next word is taken as the value, and is bad. */
    unsetenv("ALMA_TLS");
    expect_invalid(ARGV("--tls", "maybe"), "ALMA_TLS", "--tls", "maybe");
}

static void test_unknown_flag(void **state)
{
    (void)state;
    expect_invalid(ARGV("--nope"), NULL, "--nope", NULL);
    assert_contains(base_error_message(), "unknown flag");
    /* The unknown flag's name is repeated, its value is not. */
    expect_invalid(ARGV("--db-pasword=hunter2xyz"), NULL, "--db-pasword", "hunter2xyz");
    expect_invalid(ARGV("-x"), NULL, "-x", NULL);
    expect_invalid(ARGV("---workers=3"), NULL, NULL, NULL);
    /* Flags are case-sensitive and "help" cannot be given a value. */
    expect_invalid(ARGV("--Workers=3"), NULL, NULL, NULL);
    expect_invalid(ARGV("--help=1"), NULL, NULL, NULL);
    /* Control characters in an unknown flag name are not echoed. */
    expect_invalid(ARGV("--a\x1b[2Jb"), NULL, NULL, "\x1b");
    /* A prefix of a flag is not the flag. */
    expect_invalid(ARGV("--work=3"), NULL, NULL, NULL);
}

static void test_positional(void **state)
{
    (void)state;
    expect_invalid(ARGV("extra-secret"), NULL, NULL, "extra-secret");
    assert_contains(base_error_message(), "positional");
    expect_invalid(ARGV("--workers=2", "-"), NULL, NULL, NULL);
    expect_invalid(ARGV("--", "after"), NULL, NULL, "after");
    expect_invalid(ARGV("--workers", "2", "3"), NULL, NULL, NULL);
}

static void test_missing_value(void **state)
{
    (void)state;
    expect_invalid(ARGV("--workers"), "ALMA_WORKERS", "--workers", NULL);
    assert_contains(base_error_message(), "missing value");
    expect_invalid(ARGV("--tls=1", "--api-addr"), "ALMA_API_ADDR", "--api-addr", NULL);
}

static void test_string_limits(void **state)
{
    (void)state;
    char value[5000];
    char arg[5100];

    /* api-addr: at most 64 bytes. */
    memset(value, 'a', 64);
    value[64] = '\0';
    snprintf(arg, sizeof arg, "--api-addr=%s", value);
    assert_true(base_is_ok(load_main(ARGV(arg))));
    assert_int_equal(strlen(api_addr), 64);

    reset(NULL);
    memset(value, 'b', 65);
    value[65] = '\0';
    snprintf(arg, sizeof arg, "--api-addr=%s", value);
    expect_invalid(ARGV(arg), "ALMA_API_ADDR", "--api-addr", value);
    assert_contains(base_error_message(), "at most 64 bytes");

    /* db-password: max 0 means the default limit, 4096 bytes. */
    memset(value, 'c', CFG_STRING_MAX_DEFAULT);
    value[CFG_STRING_MAX_DEFAULT] = '\0';
    setenv("ALMA_DB_PASSWORD", value, 1);
    assert_true(base_is_ok(load_main(NO_ARGS)));
    assert_int_equal(strlen(db_password), CFG_STRING_MAX_DEFAULT);

    reset(NULL);
    memset(value, 'd', CFG_STRING_MAX_DEFAULT + 1);
    value[CFG_STRING_MAX_DEFAULT + 1] = '\0';
    setenv("ALMA_DB_PASSWORD", value, 1);
    expect_invalid(NO_ARGS, "ALMA_DB_PASSWORD", "--db-password", "dddddddd");
}

static void test_control_chars(void **state)
{
    (void)state;
    static const char *const bad[] = {"a\tb", "a\nb", "line\r", "\x1b[31mred", "del\x7f", "x\x01y"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--api-addr=%s", bad[i]);
        expect_invalid(ARGV(arg), "ALMA_API_ADDR", "--api-addr", bad[i]);
        assert_contains(base_error_message(), "control characters");
    }
    /* A secret with a control character: the message must not carry any of the secret. */
    setenv("ALMA_DB_PASSWORD", "hunter2\x01tail", 1);
    expect_invalid(NO_ARGS, "ALMA_DB_PASSWORD", "--db-password", "hunter2");
    /* UTF-8 is not a control character. */
    unsetenv("ALMA_DB_PASSWORD");
    assert_true(base_is_ok(load_main(ARGV("--api-addr=h\xc3\xb4te:1"))));
}

static void test_duplicate_name_across_tables(void **state)
{
    (void)state;
    static long other_workers = 99;
    static const cfg_setting dup[] = {
        {"workers", CFG_INT, "1", &other_workers, 1, 2, "the same name again", false},
    };
    const cfg_table tables[] = {
        {main_settings, BASE_ARRAY_LEN(main_settings)},
        {dup, BASE_ARRAY_LEN(dup)},
    };
    bool help = false;
    base_result r = load(tables, 2, NO_ARGS, &help);
    assert_int_equal(r.err, BASE_ERR_INTERNAL);
    assert_contains(base_error_message(), "workers");
    assert_int_equal(other_workers, 99);
    assert_int_equal(workers, UNTOUCHED_INT);

    /* Also within one table, and even when --help is asked for. */
    static const cfg_setting dup_one[] = {
        {"a", CFG_BOOL, "true", &tls, 0, 0, "a", false},
        {"a", CFG_BOOL, "true", &tls, 0, 0, "a again", false},
    };
    const cfg_table one[] = {{dup_one, 2}};
    r = load(one, 1, ARGV("--help"), &help);
    assert_int_equal(r.err, BASE_ERR_INTERNAL);
}

static void test_bad_tables(void **state)
{
    (void)state;
    static long v;
    static const cfg_setting bad_name[] = {{"API_ADDR", CFG_INT, "1", &v, 0, 9, "", false}};
    static const cfg_setting reserved[] = {{"help", CFG_BOOL, "false", &v, 0, 0, "", false}};
    static const cfg_setting no_var[] = {{"x", CFG_INT, "1", NULL, 0, 9, "", false}};
    static const cfg_setting bad_range[] = {{"x", CFG_INT, NULL, &v, 9, 0, "", false}};
    static const cfg_setting bad_default[] = {{"x", CFG_INT, "ten", &v, 0, 9, "", false}};
    static const cfg_setting default_out_of_range[] = {{"x", CFG_INT, "10", &v, 0, 9, "", false}};
    const cfg_table cases[] = {
        {bad_name, 1},  {reserved, 1},    {no_var, 1},
        {bad_range, 1}, {bad_default, 1}, {default_out_of_range, 1},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        bool help = false;
        v = 77;
        base_result r = load(&cases[i], 1, NO_ARGS, &help);
        assert_int_equal(r.err, BASE_ERR_INTERNAL);
        assert_int_equal(v, 77);
    }
    /* A bad default is reported even when a valid flag hides it. */
    bool help = false;
    assert_int_equal(load(&cases[4], 1, ARGV("--x=3"), &help).err, BASE_ERR_INTERNAL);
    assert_contains(base_error_message(), "invalid default");
    assert_int_equal(v, 77);
}

static char *read_stream(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    assert_true(n >= 0);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    rewind(f);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    return buf;
}

static void test_help(void **state)
{
    (void)state;
    static const char *const help_args[] = {"--help", "-h"};
    for (size_t k = 0; k < BASE_ARRAY_LEN(help_args); k++) {
        FILE *out = tmpfile();
        assert_non_null(out);
        bool help = false;
        /* Help wins over other problems on the command line and loads nothing. */
        char **argv = ARGV("--bogus", (char *)help_args[k], "positional");
        base_result r =
            cfg_load(two_tables, 2, argv_count(argv), argv, "alma-test", "A test program.", out, &help);
        assert_true(base_is_ok(r));
        assert_true(help);
        assert_ptr_equal(api_addr, untouched_str);
        assert_int_equal(workers, UNTOUCHED_INT);

        char *text = read_stream(out);
        fclose(out);
        assert_contains(text, "alma-test");
        assert_contains(text, "A test program.");
        static const char *const expected[] = {
            "--api-addr",    "ALMA_API_ADDR",        "--workers",        "ALMA_WORKERS", "--tls",
            "ALMA_TLS",      "--db-password",        "ALMA_DB_PASSWORD", "--db-uri",     "ALMA_DB_URI",
            "0.0.0.0:50051", "address to listen on", "(secret)",         "required",     "--help",
        };
        for (size_t i = 0; i < BASE_ARRAY_LEN(expected); i++)
            assert_contains(text, expected[i]);
        assert_not_contains(text, SECRET_DEFAULT);
        /* One line per setting: the flag and its environment name on the same line. */
        const char *line = strstr(text, "--workers");
        const char *eol = strchr(line, '\n');
        const char *env = strstr(line, "ALMA_WORKERS");
        assert_true(env && env < eol);
        free(text);
    }

    /* After "--" it is not a help flag but a positional argument. */
    expect_invalid(ARGV("--", "--help"), NULL, NULL, NULL);
}

static void test_print(void **state)
{
    (void)state;
    setenv("ALMA_DB_PASSWORD", "s3cret-value", 1);
    assert_true(base_is_ok(load_main(ARGV("--workers=12", "--tls=off"))));
    FILE *out = tmpfile();
    assert_non_null(out);
    cfg_print(main_table, 1, out);
    char *text = read_stream(out);
    fclose(out);
    assert_contains(text, "api-addr = 0.0.0.0:50051\n");
    assert_contains(text, "workers = 12\n");
    assert_contains(text, "tls = false\n");
    assert_contains(text, "db-password = (secret)\n");
    assert_not_contains(text, "s3cret-value");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, reset),
        cmocka_unit_test_setup(test_env_overrides_default, reset),
        cmocka_unit_test_setup(test_flag_overrides_env, reset),
        cmocka_unit_test_setup(test_flag_forms, reset),
        cmocka_unit_test_setup(test_bool_forms, reset),
        cmocka_unit_test_setup(test_required_missing, reset),
        cmocka_unit_test_setup(test_bad_int, reset),
        cmocka_unit_test_setup(test_bad_bool, reset),
        cmocka_unit_test_setup(test_unknown_flag, reset),
        cmocka_unit_test_setup(test_positional, reset),
        cmocka_unit_test_setup(test_missing_value, reset),
        cmocka_unit_test_setup(test_string_limits, reset),
        cmocka_unit_test_setup(test_control_chars, reset),
        cmocka_unit_test_setup(test_duplicate_name_across_tables, reset),
        cmocka_unit_test_setup(test_bad_tables, reset),
        cmocka_unit_test_setup(test_help, reset),
        cmocka_unit_test_setup(test_print, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
