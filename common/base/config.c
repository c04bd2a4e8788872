/* Settings loading: defaults, then the environment, then flags. See config.h.
 *
 * The one file of the suite that may call getenv(). Loading runs in three passes so that no variable is
 * written unless every setting is valid: check the tables, walk argv once to reject unknown flags and
 * positional arguments, then resolve and convert every setting twice (check, then store). Conversion is
 * deterministic, so the second pass cannot fail where the first succeeded. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CFG_ENV_PREFIX "ALMA_"
/* "ALMA_" + name + NUL */
#define CFG_ENV_NAME_SIZE (sizeof CFG_ENV_PREFIX + CFG_NAME_MAX)
/* How much of an unknown flag's name an error message repeats (sanitized, never its value). */
#define CFG_UNKNOWN_FLAG_ECHO 48

typedef enum cfg_source { CFG_SRC_NONE, CFG_SRC_DEFAULT, CFG_SRC_ENV, CFG_SRC_FLAG } cfg_source;

typedef union cfg_value {
    const char *s;
    long i;
    bool b;
} cfg_value;

static bool cfg_name_valid(const char *name)
{
    size_t len = strnlen(name, CFG_NAME_MAX + 1);
    if (len == 0 || len > CFG_NAME_MAX)
        return false;
    if (name[0] < 'a' || name[0] > 'z' || name[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok || (c == '-' && name[i + 1] == '-'))
            return false;
    }
    /* --help is ours. */
    return strcmp(name, "help") != 0;
}

/* "api-addr" -> "ALMA_API_ADDR". The name was checked by cfg_name_valid(), so it fits. */
static void cfg_env_name(const char *name, char env[static CFG_ENV_NAME_SIZE])
{
    size_t n = sizeof CFG_ENV_PREFIX - 1;
    memcpy(env, CFG_ENV_PREFIX, n);
    for (size_t i = 0; name[i] != '\0' && n < CFG_ENV_NAME_SIZE - 1; i++, n++) {
        char c = name[i];
        env[n] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    env[n] = '\0';
}

static long cfg_string_max(const cfg_setting *s)
{
    return s->max == 0 ? CFG_STRING_MAX_DEFAULT : s->max;
}

static base_result cfg_convert(const cfg_setting *s, const char *text, cfg_source src, cfg_value *ret);

static base_result cfg_check_setting(const cfg_setting *s)
{
    if (!s->name || !cfg_name_valid(s->name))
        return base_fail(BASE_ERR_INTERNAL, "config table: invalid setting name");
    if (!s->var)
        return base_fail(BASE_ERR_INTERNAL, "config table: setting --%s has no variable", s->name);
    switch (s->type) {
    case CFG_STRING:
        if (s->min < 0 || s->max < 0 || s->min > cfg_string_max(s))
            return base_fail(BASE_ERR_INTERNAL, "config table: setting --%s has a bad length range", s->name);
        break;
    case CFG_INT:
        if (s->min > s->max)
            return base_fail(BASE_ERR_INTERNAL, "config table: setting --%s has min > max", s->name);
        break;
    case CFG_BOOL:
        break;
    default:
        return base_fail(BASE_ERR_INTERNAL, "config table: setting --%s has an unknown type", s->name);
    }
    /* A bad default is a bug even while a flag or the environment hides it. */
    if (s->default_value) {
        cfg_value unused;
        BASE_GUARD(cfg_convert(s, s->default_value, CFG_SRC_DEFAULT, &unused));
    }
    return BASE_OK_RESULT;
}

/* Every setting well formed, and no name twice (in one table or across tables). */
static base_result cfg_check_tables(const cfg_table *tables, size_t ntables)
{
    if (ntables > 0 && !tables)
        return base_fail(BASE_ERR_INTERNAL, "config table: NULL table list");
    for (size_t t = 0; t < ntables; t++) {
        if (tables[t].count > 0 && !tables[t].settings)
            return base_fail(BASE_ERR_INTERNAL, "config table: NULL settings");
        for (size_t i = 0; i < tables[t].count; i++)
            BASE_GUARD(cfg_check_setting(&tables[t].settings[i]));
    }
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].count; i++) {
            const char *name = tables[t].settings[i].name;
            for (size_t u = t; u < ntables; u++) {
                for (size_t j = (u == t ? i + 1 : 0); j < tables[u].count; j++) {
                    if (strcmp(name, tables[u].settings[j].name) == 0)
                        return base_fail(BASE_ERR_INTERNAL, "config table: setting --%s is defined twice",
                                         name);
                }
            }
        }
    }
    return BASE_OK_RESULT;
}

static const cfg_setting *cfg_find(const cfg_table *tables, size_t ntables, const char *name, size_t len)
{
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].count; i++) {
            const cfg_setting *s = &tables[t].settings[i];
            if (strncmp(s->name, name, len) == 0 && s->name[len] == '\0')
                return s;
        }
    }
    return NULL;
}

static bool cfg_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

static bool cfg_has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return true;
    }
    return false;
}

/* Parse `text` for setting `s`. The failure message names the setting, never the text. */
static base_result cfg_convert(const cfg_setting *s, const char *text, cfg_source src, cfg_value *ret)
{
    char env[CFG_ENV_NAME_SIZE];
    cfg_env_name(s->name, env);
    /* A bad default is a bug in the program, not in its configuration. */
    base_err err = src == CFG_SRC_DEFAULT ? BASE_ERR_INTERNAL : BASE_ERR_INVALID;
    const char *what = src == CFG_SRC_DEFAULT ? "invalid default for setting" : "invalid setting";

    switch (s->type) {
    case CFG_STRING: {
        long max = cfg_string_max(s);
        size_t len = strnlen(text, (size_t)max + 1);
        if ((long)len > max || (long)len < s->min || cfg_has_control(text)) {
            if (s->min > 0)
                return base_fail(err, "%s %s (--%s): expected %ld to %ld bytes without control characters",
                                 what, env, s->name, s->min, max);
            return base_fail(err, "%s %s (--%s): expected at most %ld bytes without control characters", what,
                             env, s->name, max);
        }
        ret->s = text;
        return BASE_OK_RESULT;
    }
    case CFG_INT: {
        /* strtol alone accepts leading spaces, "" and trailing junk: check all of that here. */
        char *end = NULL;
        errno = 0;
        long v = 0;
        bool ok = text[0] == '-' || text[0] == '+' || (text[0] >= '0' && text[0] <= '9');
        if (ok) {
            v = strtol(text, &end, 10);
            ok = errno == 0 && end != text && *end == '\0' && v >= s->min && v <= s->max;
        }
        if (!ok)
            return base_fail(err, "%s %s (--%s): expected an integer from %ld to %ld", what, env, s->name,
                             s->min, s->max);
        ret->i = v;
        return BASE_OK_RESULT;
    }
    case CFG_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (size_t k = 0; k < BASE_ARRAY_LEN(yes); k++) {
            if (strcasecmp(text, yes[k]) == 0) {
                ret->b = true;
                return BASE_OK_RESULT;
            }
            if (strcasecmp(text, no[k]) == 0) {
                ret->b = false;
                return BASE_OK_RESULT;
            }
        }
        return base_fail(err, "%s %s (--%s): expected true/false, yes/no, on/off or 1/0", what, env, s->name);
    }
    default:
        return base_fail(BASE_ERR_INTERNAL, "config table: setting --%s has an unknown type", s->name);
    }
}

/* Copy an unknown flag's name (up to '=', never the value) for an error message, replacing anything
 * outside [A-Za-z0-9_-] so a message cannot carry control characters. */
static void cfg_flag_echo(const char *arg, char out[static CFG_UNKNOWN_FLAG_ECHO + 4])
{
    size_t n = 0;
    for (; arg[n] != '\0' && arg[n] != '=' && n < CFG_UNKNOWN_FLAG_ECHO; n++) {
        char c = arg[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_';
        out[n] = ok ? c : '?';
    }
    if (arg[n] != '\0' && arg[n] != '=') {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

/* The next flag of argv at *i: sets *ret_setting and *ret_value and advances *i past it. */
static base_result cfg_next_flag(const cfg_table *tables, size_t ntables, int argc, char **argv, int *i,
                                 const cfg_setting **ret_setting, const char **ret_value)
{
    const char *arg = argv[*i];
    if (arg[0] != '-' || arg[1] == '\0')
        return base_fail(BASE_ERR_INVALID, "unexpected positional argument %d (flags are --name=value)", *i);
    if (strcmp(arg, "--") == 0) {
        if (*i + 1 < argc)
            return base_fail(BASE_ERR_INVALID, "unexpected positional argument %d (flags are --name=value)",
                             *i + 1);
        *ret_setting = NULL;
        *ret_value = NULL;
        *i = argc;
        return BASE_OK_RESULT;
    }
    const cfg_setting *s = NULL;
    const char *eq = NULL;
    if (arg[1] == '-') {
        const char *name = arg + 2;
        eq = strchr(name, '=');
        s = cfg_find(tables, ntables, name, eq ? (size_t)(eq - name) : strlen(name));
    }
    if (!s) {
        char echo[CFG_UNKNOWN_FLAG_ECHO + 4];
        cfg_flag_echo(arg, echo);
        return base_fail(BASE_ERR_INVALID, "unknown flag %s (see --help)", echo);
    }

    const char *value = NULL;
    int next = *i + 1;
    if (eq) {
        value = eq + 1;
    } else if (s->type == CFG_BOOL) {
        /* "--tls" alone means true; "--tls off" takes the next word unless it is another flag. */
        if (next < argc && argv[next][0] != '-') {
            value = argv[next];
            next++;
        } else {
            value = "true";
        }
    } else if (next < argc) {
        value = argv[next];
        next++;
    } else {
        char env[CFG_ENV_NAME_SIZE];
        cfg_env_name(s->name, env);
        return base_fail(BASE_ERR_INVALID, "invalid setting %s (--%s): missing value after the flag", env,
                         s->name);
    }
    *ret_setting = s;
    *ret_value = value;
    *i = next;
    return BASE_OK_RESULT;
}

/* Check the whole command line: only known flags, each with its value, and no positional arguments. */
static base_result cfg_check_argv(const cfg_table *tables, size_t ntables, int argc, char **argv)
{
    for (int i = 1; i < argc;) {
        const cfg_setting *s;
        const char *value;
        BASE_GUARD(cfg_next_flag(tables, ntables, argc, argv, &i, &s, &value));
    }
    return BASE_OK_RESULT;
}

/* The text that applies to `s`: its last flag, else its environment variable, else its default. */
static void cfg_resolve(const cfg_setting *s, const cfg_table *tables, size_t ntables, int argc, char **argv,
                        const char **ret_text, cfg_source *ret_src)
{
    const char *text = s->default_value;
    cfg_source src = text ? CFG_SRC_DEFAULT : CFG_SRC_NONE;

    char env[CFG_ENV_NAME_SIZE];
    cfg_env_name(s->name, env);
    const char *from_env = getenv(env);
    if (from_env) {
        text = from_env;
        src = CFG_SRC_ENV;
    }
    for (int i = 1; i < argc;) {
        const cfg_setting *f = NULL;
        const char *value = NULL;
        /* argv was checked by cfg_check_argv(): this cannot fail. */
        if (!base_is_ok(cfg_next_flag(tables, ntables, argc, argv, &i, &f, &value)))
            break;
        if (f == s) {
            text = value;
            src = CFG_SRC_FLAG;
        }
    }
    *ret_text = text;
    *ret_src = src;
}

static base_result cfg_load_one(const cfg_setting *s, const cfg_table *tables, size_t ntables, int argc,
                                char **argv, bool store)
{
    const char *text;
    cfg_source src;
    cfg_resolve(s, tables, ntables, argc, argv, &text, &src);
    if (src == CFG_SRC_NONE) {
        char env[CFG_ENV_NAME_SIZE];
        cfg_env_name(s->name, env);
        return base_fail(BASE_ERR_INVALID, "missing required setting %s (--%s)", env, s->name);
    }
    cfg_value v;
    BASE_GUARD(cfg_convert(s, text, src, &v));
    if (store) {
        switch (s->type) {
        case CFG_STRING:
            *(const char **)s->var = v.s;
            break;
        case CFG_INT:
            *(long *)s->var = v.i;
            break;
        case CFG_BOOL:
            *(bool *)s->var = v.b;
            break;
        default:
            return base_fail(BASE_ERR_INTERNAL, "config table: setting --%s has an unknown type", s->name);
        }
    }
    return BASE_OK_RESULT;
}

static const char *cfg_type_word(const cfg_setting *s)
{
    switch (s->type) {
    case CFG_STRING:
        return "<string>";
    case CFG_INT:
        return "<int>";
    case CFG_BOOL:
        return "<bool>";
    default:
        return "<?>";
    }
}

/* The default column of the help line: never a secret's value. */
static int cfg_help_default(const cfg_setting *s, char *buf, size_t size)
{
    if (!s->default_value)
        return snprintf(buf, size, "%s", s->secret ? "required (secret)" : "required");
    if (s->secret)
        return snprintf(buf, size, "default (secret)");
    switch (s->type) {
    case CFG_INT:
        return snprintf(buf, size, "default %s (%ld..%ld)", s->default_value, s->min, s->max);
    case CFG_STRING:
        return snprintf(buf, size, "default \"%s\"", s->default_value);
    case CFG_BOOL:
    default:
        return snprintf(buf, size, "default %s", s->default_value);
    }
}

static void cfg_print_help(const cfg_table *tables, size_t ntables, const char *program, const char *summary,
                           FILE *out)
{
    fprintf(out, "Usage: %s [--name=value]...\n", program ? program : "program");
    if (summary && *summary)
        fprintf(out, "%s\n", summary);
    fprintf(out,
            "\nEvery setting is a flag or an environment variable; a flag wins over the environment.\n\n");

    /* Column widths; a long string default just pushes its own help text to the right. */
    enum { CFG_HELP_DEFAULT_WIDTH_MAX = 40 };
    int flag_width = (int)strlen("--help, -h");
    int env_width = 0;
    int default_width = 0;
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].count; i++) {
            const cfg_setting *s = &tables[t].settings[i];
            char dflt[128];
            int w = (int)(strlen(s->name) + strlen(cfg_type_word(s)) + 3);
            if (w > flag_width)
                flag_width = w;
            w = (int)(strlen(CFG_ENV_PREFIX) + strlen(s->name));
            if (w > env_width)
                env_width = w;
            w = cfg_help_default(s, dflt, sizeof dflt);
            if (w > default_width && w <= CFG_HELP_DEFAULT_WIDTH_MAX)
                default_width = w;
        }
    }
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].count; i++) {
            const cfg_setting *s = &tables[t].settings[i];
            char flag[CFG_NAME_MAX + 16];
            snprintf(flag, sizeof flag, "--%s=%s", s->name, cfg_type_word(s));
            char env[CFG_ENV_NAME_SIZE];
            cfg_env_name(s->name, env);
            char dflt[128];
            cfg_help_default(s, dflt, sizeof dflt);
            fprintf(out, "  %-*s  %-*s  %-*s  %s\n", flag_width, flag, env_width, env, default_width, dflt,
                    s->help ? s->help : "");
        }
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", flag_width, "--help, -h", env_width, "", default_width, "",
            "print this help and exit");
}

base_result cfg_load(const cfg_table *tables, size_t ntables, int argc, char **argv, const char *program,
                     const char *summary, FILE *help_out, bool *ret_help)
{
    BASE_ENSURE(ret_help, BASE_ERR_INTERNAL, "cfg_load: ret_help is NULL");
    BASE_ENSURE(argc <= 0 || argv, BASE_ERR_INTERNAL, "cfg_load: argv is NULL");
    BASE_GUARD(cfg_check_tables(tables, ntables));
    if (argc < 0)
        argc = 0;
    /* Tolerate an argv shorter than argc says. */
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) {
            argc = i;
            break;
        }
    }

    /* Help wins over any other problem on the command line, so a confused user can always get it. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (cfg_is_help(argv[i])) {
            cfg_print_help(tables, ntables, program, summary, help_out ? help_out : stdout);
            *ret_help = true;
            return BASE_OK_RESULT;
        }
    }

    BASE_GUARD(cfg_check_argv(tables, ntables, argc, argv));
    for (int pass = 0; pass < 2; pass++) {
        for (size_t t = 0; t < ntables; t++) {
            for (size_t i = 0; i < tables[t].count; i++)
                BASE_GUARD(cfg_load_one(&tables[t].settings[i], tables, ntables, argc, argv, pass == 1));
        }
    }
    *ret_help = false;
    return BASE_OK_RESULT;
}

/* Values passed cfg_load() without control characters; replace any anyway, in case the variable was
 * changed since. */
static void cfg_print_string(const char *s, FILE *out)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, out);
}

void cfg_print(const cfg_table *tables, size_t ntables, FILE *out)
{
    if (!out || (ntables > 0 && !tables))
        return;
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].count && tables[t].settings; i++) {
            const cfg_setting *s = &tables[t].settings[i];
            if (!s->name || !s->var)
                continue;
            fprintf(out, "%s = ", s->name);
            if (s->secret) {
                fputs("(secret)", out);
            } else {
                switch (s->type) {
                case CFG_STRING: {
                    const char *v = *(const char *const *)s->var;
                    if (v)
                        cfg_print_string(v, out);
                    else
                        fputs("(unset)", out);
                    break;
                }
                case CFG_INT:
                    fprintf(out, "%ld", *(const long *)s->var);
                    break;
                case CFG_BOOL:
                    fputs(*(const bool *)s->var ? "true" : "false", out);
                    break;
                default:
                    fputs("?", out);
                    break;
                }
            }
            fputc('\n', out);
        }
    }
}
