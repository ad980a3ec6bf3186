/* keys: the schema of an experiment file: every valid dotted key, its type, bounds or choices,
 * default, the engine field it sets, which methods read it, and the typed values keys hold.
 *
 * Invariants:
 *   - The table in keys.c (config_keys) is the single source of truth: YAML parsing, type checks,
 *     --set, suggestions, resolution, the canonical config (run keys), `loralab sweep --keys` and
 *     the runs table's columns all walk it. Adding a key or changing a default changes every run
 *     key (see config.h, "Run identity") unless the canonical config leaves it out at its default.
 *   - A key with an engine field (st != FS_NONE) takes its default from train_config_defaults /
 *     adapter_config_defaults (config_engine_defaults), never from a copy in the table.
 *   - config_check_value is the only place a value is checked against its key: after it, a value
 *     has the key's type and lies within its bounds and choices.
 *   - config_method_reads(m, key) is the one list of which adapter keys each method reads; the
 *     canonical config drops the others and a per-method sweep space refuses them.
 */
#ifndef LL_KEYS_H
#define LL_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "adapter.h"
#include "core.h"

#define CONFIG_KEY_MAX 96

typedef enum {
    CFG_INT,      /* whole number */
    CFG_FLOAT,    /* number (an int is accepted) */
    CFG_BOOL,     /* true/false (yes/no, on/off) */
    CFG_STRING,   /* any scalar */
    CFG_STR_LIST, /* a list of strings, or one scalar "a,b" split at commas */
    CFG_INT_LIST, /* a list of whole numbers, or one */
    CFG_NUM_MAP,  /* a mapping of string -> number */
    CFG_STR_MAP   /* a mapping of string -> string (task.eval_sets: name -> folder) */
} ConfigType;

/* A typed value. Lists and maps keep n items in `names` (strings, map keys), `nums` (int list
 * items, number map values) and `strs` (string map values); ints and bools in i, floats in f,
 * strings in s. Owned; config_value_free. */
typedef struct {
    ConfigType type;
    int64_t i;
    double f;
    char *s;
    int n;
    char **names;
    double *nums;
    char **strs;
} ConfigValue;

/* Which engine struct a key's field lives in, and the field's C type. */
typedef enum { FS_NONE, FS_TRAIN, FS_BASE, FS_ADAPTER } FieldStruct;
typedef enum { FK_NONE, FK_INT, FK_F32, FK_F64, FK_U64, FK_U32 } FieldKind;
enum {
    B_LO = 1,        /* lo applies */
    B_HI = 2,        /* hi applies */
    B_LO_OPEN = 4,   /* value > lo */
    B_HI_OPEN = 8,   /* value < hi */
    B_INTEGRAL = 16, /* map values must be whole numbers */
    B_NOT_RUN = 32,  /* not part of a run (labels, sweep section): never swept, never hashed */
    B_LIST_ONLY = 64 /* a list key that refuses one scalar (`seeds: 2` reads as two seeds or as seed 2) */
};

typedef struct {
    const char *key;
    ConfigType type;
    FieldStruct st;
    size_t off;          /* offset of the field in its struct (st != FS_NONE) */
    FieldKind fk;
    unsigned flags;
    double lo, hi;
    const char *choices; /* "a|b|c" */
    const char *def;     /* default of a key without an engine field (NULL: none) */
    const char *doc;
} KeySpec;

/* The table, in its fixed order. */
const KeySpec *config_keys(int *n);
const KeySpec *config_key_spec(const char *key); /* NULL when unknown */
int config_key_known(const char *key);           /* 1 for a valid dotted key */
ConfigType config_key_type(const char *key);     /* the key must be known */
static inline int config_key_numeric(const KeySpec *ks) { return ks->type == CFG_INT || ks->type == CFG_FLOAT; }
/* sweep.grid, sweep.derived, sweep.exclude, sweep.random.space, sweep.per_method: sub-sections with a structure of
 * their own (parsed by config.c). */
int config_key_is_sweep_special(const char *key);
/* "adapter" is a section because "adapter.r" exists. */
int config_key_is_section(const char *prefix);
/* 1 when method m reads key (every non-adapter key is read by every method). */
int config_method_reads(AdapterMethod m, const char *key);

/* The variants results tables name a run by (adapter_variant_name: full, lora, rslora, dora, pissa,
 * loraplus, adalora, vera): 1 when variant is one, with the engine method behind it in *m. */
int config_variant_method(const char *variant, AdapterMethod *m);
void config_variant_list(char *out, size_t cap); /* "full, lora, ..." for messages */
/* What a LoRA variant is made of ("adapter.use_dora: true" for dora); NULL for a method itself. */
const char *config_variant_implies(const char *variant);
/* 1 when method m ignores key, with the reason in why ("full fine-tuning has no rank"). */
int config_method_ignores(AdapterMethod m, const char *key, char *why, size_t cap);

/* A bare name such as "r" -> "adapter.r" (unique suffix among non-base keys). Returns 0 and fills
 * err when unknown or ambiguous. */
int config_short_name(const char *name, char *out, size_t cap, LLError *err);
/* The nearest valid key by edit distance (or a known alias such as lora_alpha -> adapter.alpha);
 * NULL when nothing is close. */
const char *config_suggest_key(const char *key);
/* The nearest section prefix ("train" for "trian") into buf, or NULL. */
const char *config_suggest_section(const char *key, char *buf, size_t cap);
int config_edit_distance(const char *a, const char *b);
/* Prints the schema: key, type, default, bounds, doc (for `loralab sweep --keys` and the docs). */
void config_describe(FILE *f);

void config_value_free(ConfigValue *v);
void config_value_copy(ConfigValue *dst, const ConfigValue *src);
double config_value_number(const ConfigValue *v); /* an int or float value as a double */
/* Compares values of the same key: numbers numerically, target lists as sets of modules. */
int config_value_equal(const char *key, const ConfigValue *a, const ConfigValue *b);
/* Short text for tables and messages ("8", "0.001", "[q_proj,v_proj]"). */
void config_value_string(const ConfigValue *v, char *out, size_t cap);
/* Checks v (any numeric or scalar type) against key's schema entry and converts it to the key's
 * type (an integral float to an int key, a number to a float key). Fills err with "KEY: what". */
LLStatus config_value_check(const char *key, ConfigValue *v, LLError *err);
/* The same against a spec; on failure writes what is wrong (without the key) into msg. */
int config_check_value(const KeySpec *ks, ConfigValue *v, char *msg, size_t cap);
const char *config_type_name(ConfigType t); /* "a whole number", ... */
unsigned config_targets_mask(const ConfigValue *v); /* a target list as a module bit mask */

/* Shortest decimal text that reads back as the same float (f32 = 1) or double. */
void config_fmt_number(double v, int f32, char *out, size_t cap);
/* printf into out[*len..cap), advancing *len; truncates safely. */
void config_append(char *out, size_t cap, size_t *len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Keys <-> the engine structs of a resolved config. */
struct RunConfig;
void *config_field_ptr(struct RunConfig *rc, const KeySpec *ks); /* NULL for FS_NONE */
const void *config_field_cptr(const struct RunConfig *rc, const KeySpec *ks);
double config_field_read(const void *p, FieldKind fk);
void config_field_write(void *p, FieldKind fk, double x);
/* The engine structs' defaults for a method (what a key left unset resolves to). */
void config_engine_defaults(struct RunConfig *rc, AdapterMethod m);

#endif
