/* The compiled form of a bundle, shared by the loader (bundle.c), the evaluator (engine.c) and the canonical
 * JSON writer (canon.c). Private to the guideline core: nothing outside services/guideline includes it. */
#ifndef ALMA_GUIDELINE_INTERNAL_H
#define ALMA_GUIDELINE_INTERNAL_H

#include "bundle.h"
#include "engine.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>

/* Limits of the format (BUNDLE-FORMAT.md). */
#define GL_MAX_PATHWAYS      64
#define GL_MAX_DATA          64 /* data elements per pathway */
#define GL_MAX_RULES         128
#define GL_MAX_DEPTH         8
#define GL_MAX_CHILDREN      32
#define GL_MAX_CRITERIA      256 /* criteria (every node) per rule */
#define GL_MAX_TEXT          200
#define GL_MAX_SECTION       100
#define GL_MAX_ID            64
#define GL_MAX_QUANTITIES    64
#define GL_MAX_ACCEPT        16
#define GL_MAX_UNIT          64
#define GL_MAX_LIST          32 /* specialties, codes of an element, classes, values, `in` */
#define GL_MAX_APPLY_CODES   64
#define GL_MAX_ITEMS         8 /* tests, steps, needs */
#define GL_MAX_BOUNDS        8
#define GL_MAX_WINDOW_DAYS   3650
#define GL_ICD_KEY           8 /* an ICD-10-CM code without its dot (at most 7 characters) and a NUL */
#define GL_MAX_ABS_THRESHOLD 1e12

typedef enum gl_tri { GL_FALSE = 0, GL_TRUE = 1, GL_UNKNOWN = 2 } gl_tri;

typedef enum gl_op { GL_OP_LT, GL_OP_LE, GL_OP_GT, GL_OP_GE, GL_OP_EQ, GL_OP_NE } gl_op;

typedef enum gl_sex { GL_SEX_FEMALE, GL_SEX_MALE, GL_SEX_OTHER, GL_SEX_UNKNOWN } gl_sex;

/* Medication statement statuses (FHIR MedicationStatement.status, the ones a referral can carry). */
typedef enum gl_med_status {
    GL_MED_ACTIVE,
    GL_MED_COMPLETED,
    GL_MED_STOPPED,
    GL_MED_ON_HOLD,
    GL_MED_INTENDED,
    GL_MED_NOT_TAKEN,
    GL_MED_STATUS_COUNT
} gl_med_status;

/* An inclusive ICD-10-CM range over dot-less keys: key k is in it when k >= from and k's first to_len
 * characters are <= to (so every code below `to` is in; a single `code` is from == to). */
typedef struct gl_icd_range {
    char from[GL_ICD_KEY];
    char to[GL_ICD_KEY];
    uint8_t to_len;
} gl_icd_range;

typedef enum gl_ckind {
    GL_C_ALL,
    GL_C_ANY,
    GL_C_NOT,
    GL_C_LATEST,
    GL_C_COUNT,
    GL_C_DECLINE,
    GL_C_SLOPE,
    GL_C_CATEGORY_DROP,
    GL_C_FLAG,
    GL_C_FINDING_CMP,
    GL_C_FINDING_IN,
    GL_C_MEDICATION,
    GL_C_PROBLEM,
    GL_C_AGE,
    GL_C_SEX,
    GL_C_MISSING
} gl_ckind;

typedef struct gl_crit {
    gl_ckind kind;
    gl_op op;
    uint16_t data; /* index into the pathway's data */
    double value;  /* the threshold of op */
    gl_op where_op;
    double where_value;    /* count */
    double percent;        /* decline */
    int32_t min_span_days; /* decline, slope, category_drop */
    uint32_t min_points;   /* slope */
    int32_t min_days;      /* medication */
    uint32_t mask;         /* finding `in`: bit per value index; medication: bit per status; sex: the sex */
    uint32_t nbounds;      /* category_drop */
    double bounds[GL_MAX_BOUNDS];
    struct gl_crit *kids; /* all, any (nkids), not (1) */
    uint32_t nkids;
} gl_crit;

typedef enum gl_dkind { GL_D_OBS, GL_D_MED, GL_D_FLAG, GL_D_FINDING, GL_D_PROBLEM } gl_dkind;

typedef struct gl_data {
    const char *id;
    gl_dkind kind;
    uint32_t quantity;   /* obs: index into the bundle's quantities */
    int32_t window_days; /* obs */
    const char **codes;  /* obs: LOINC; med: RxNorm */
    uint32_t ncodes;
    const char **classes; /* med */
    uint32_t nclasses;
    const char *name;    /* flag, finding */
    bool numeric;        /* finding */
    const char **values; /* finding (text) */
    uint32_t nvalues;
    gl_icd_range *ranges; /* problem */
    uint32_t nranges;
} gl_data;

typedef struct gl_unit {
    const char *unit;
    double factor;
} gl_unit;

typedef struct gl_quantity {
    const char *kind;
    const char *canonical;
    gl_unit *accept;
    uint32_t naccept;
} gl_quantity;

typedef struct gl_action {
    gl_outcome outcome;
    const char *urgency; /* REFER only; "" otherwise */
    const char *explain; /* "" when absent */
    const char **tests;
    uint32_t ntests;
    const char **steps;
    uint32_t nsteps;
    const char **needs; /* data ids, resolved at load */
    uint32_t nneeds;
    const char *guideline;
    int year;
    const char *section;
} gl_action;

typedef struct gl_rule {
    const char *id;
    gl_crit when;
    gl_action act;
} gl_rule;

/* A LOINC code and the observation element it feeds (sorted by code, then element). */
typedef struct gl_code_ref {
    const char *code;
    uint32_t data;
} gl_code_ref;

typedef struct gl_pathway {
    const char *id;
    const char *title;
    const char **specialties;
    uint32_t nspecialties;
    gl_icd_range *codes;
    uint32_t ncodes;
    int age_min;   /* -1: none */
    int age_max;   /* -1: none */
    gl_data *data; /* sorted by id */
    uint32_t ndata;
    gl_rule *rules;
    uint32_t nrules;
    gl_action dflt;
    gl_code_ref *obs_index;
    uint32_t nobs_index;
} gl_pathway;

typedef struct gl_arena_chunk gl_arena_chunk;

struct gl_bundle {
    gl_arena_chunk *arena;
    const char *id;
    const char *version;
    const char *title;
    const char *published;
    char hash[65];
    gl_quantity *quantities; /* sorted by kind */
    uint32_t nquantities;
    gl_pathway *pathways;
    uint32_t npathways;
};

/* ---- A bounded growable buffer (canon.c) ---- */
typedef struct gl_buf {
    char *p;
    size_t len;
    size_t cap;
    size_t max; /* the most it may hold, its NUL included */
    bool failed;
} gl_buf;

void gl_buf_put(gl_buf *b, const char *s, size_t n);
void gl_buf_puts(gl_buf *b, const char *s);
void gl_buf_free(gl_buf *b);
/* A JSON string literal (jansson's escaping: \" \\ \b \f \n \r \t, other control bytes as \u00XX). */
void gl_buf_json_string(gl_buf *b, const char *s);
/* A number in its canonical form: an integral value of magnitude below 2^53 as an integer, anything else
 * as the shortest %.17g-style decimal that reads back to the same double. */
void gl_buf_json_number(gl_buf *b, double v);
/* The canonical JSON of a jansson value into b. */
void gl_canon_dump(const json_t *j, gl_buf *b);
/* SHA-256 of (p, n) as 64 lowercase hex and a NUL. */
BASE_MUST_USE base_result gl_sha256_hex(const char *p, size_t n, char ret_hex[65]);

/* ---- Shared helpers (bundle.c) ---- */
/* Days since 1970-01-01 of a strict YYYY-MM-DD (years 1900..2199); false if it is not one. */
bool gl_parse_date(const char *s, int32_t *ret_days);
/* The dot-less key of an ICD-10-CM code `A00` or `A00.xxxx` (letter, digit, digit-or-letter, then up to 4
 * digits or letters after the dot); false if the syntax is wrong. */
bool gl_icd_key(const char *code, char ret_key[GL_ICD_KEY]);
bool gl_icd_in(const gl_icd_range *r, const char *key);
bool gl_icd_in_any(const gl_icd_range *r, uint32_t n, const char *key);
/* LOINC code syntax: 1..7 digits, '-', one check digit. */
bool gl_loinc_ok(const char *s);
/* [a-z][a-z0-9_]{0,31}: quantity kinds and medication classes. */
bool gl_name_ok(const char *s);
/* Ids (pathway, data, rule), specialties and finding text values: [a-z0-9][a-z0-9_-]{0,63}. */
bool gl_id_ok(const char *s);
/* [a-z][a-z0-9_]{0,63}: flag and finding names. */
bool gl_flag_name_ok(const char *s);
/* A unit string: 1..64 printable ASCII characters, no space. */
bool gl_unit_ok(const char *s);

#endif
