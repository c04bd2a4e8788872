/* Settings as Postfix-style name/default/variable triples (after mail_params.h).
 *
 * A program declares its settings in one or more static tables and loads them once, at startup, with
 * cfg_load(). Each setting has three spellings of one name:
 *
 *     name "api-addr"  ->  flag --api-addr=V  or  --api-addr V   ->  environment ALMA_API_ADDR
 *
 * Precedence, lowest first: the default, then the environment, then the command line. A flag given twice
 * takes its last value. Names are [a-z0-9-], start with a letter, at most CFG_NAME_MAX bytes; "help" is
 * reserved. A bool flag may also be given alone (--tls means --tls=true).
 *
 * Every value is checked (integers with full strtol checking and the range, booleans against a fixed word
 * list, strings for length and control characters) before any variable is written. Error messages name
 * the setting both ways and the rule that was broken, never the value: the value may be a secret.
 *
 * config.c is the only file in the suite allowed to read the environment (getenv is banned elsewhere). */
#ifndef ALMA_BASE_CONFIG_H
#define ALMA_BASE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "result.h"

/* Longest setting name; the environment name is "ALMA_" plus as many bytes. */
#define CFG_NAME_MAX 48
/* String length limit used when a CFG_STRING setting leaves max at 0. */
#define CFG_STRING_MAX_DEFAULT 4096

typedef enum cfg_type { CFG_STRING, CFG_INT, CFG_BOOL } cfg_type;

typedef struct cfg_setting {
    const char *name; /* "api-addr": flag --api-addr=V or --api-addr V, env ALMA_API_ADDR */
    cfg_type type;
    const char *default_value; /* NULL: required (missing -> error). Must itself be valid. */
    void *var;                 /* const char ** for CFG_STRING, long * for CFG_INT, bool * for CFG_BOOL */
    long min, max;             /* CFG_INT: inclusive range. CFG_STRING: length in bytes, min..max
                                  (max 0 = CFG_STRING_MAX_DEFAULT). Unused for CFG_BOOL. */
    const char *help;          /* one line */
    bool secret;               /* never printed back: help and cfg_print show "(secret)" */
} cfg_setting;

typedef struct cfg_table {
    const cfg_setting *settings;
    size_t count;
} cfg_table;

/* Load every setting of every table: default, then environment ALMA_<NAME upper, '-' -> '_'>, then
 * command-line flags (flags override the environment).
 *
 * Fails with BASE_ERR_INVALID (and a base_fail() message naming the setting, e.g. "invalid setting
 * ALMA_WORKERS (--workers): expected an integer from 1 to 256") on: an unknown flag, a positional
 * argument, a flag without its value, a missing required setting, a bad integer (trailing junk, out of
 * range, overflow), a bad boolean (accepted: true/false, yes/no, on/off, 1/0, any case), a string outside
 * its length limits or containing a control character. Fails with BASE_ERR_INTERNAL when the tables are
 * wrong: a bad name, the same name in two places, a bad range, a NULL var, an invalid default.
 *
 * --help or -h anywhere: print help (usage with `program`, `summary`, then one line per setting: flag,
 * environment name, default, help) to help_out (stdout if NULL), set *ret_help = true and return OK
 * without loading anything. Otherwise, on success, *ret_help = false.
 *
 * Variables are written only when everything loaded (all or nothing). String variables point into argv,
 * the environment or the default: nothing is allocated, so nothing needs freeing, but the environment
 * must not be changed afterwards. Not thread-safe: call once from main() before starting threads. */
BASE_MUST_USE base_result cfg_load(const cfg_table *tables, size_t ntables, int argc, char **argv,
                                   const char *program, const char *summary, FILE *help_out, bool *ret_help);

/* Print the effective configuration, one "name = value" line per setting; secrets are shown as
 * "(secret)". Call after a successful cfg_load(). */
void cfg_print(const cfg_table *tables, size_t ntables, FILE *out);

#endif
