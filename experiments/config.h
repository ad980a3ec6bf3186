/* config: YAML experiment files -> validated, resolved run configurations.
 *
 * The schema is one static table (keys.c; see keys.h) of every valid dotted key: its type (int,
 * float, bool, string, string list, int list, map string -> number), bounds or choices, default and
 * a one-line doc. A YAML file is read into (dotted key -> value, line) pairs: nesting and dotted keys are the
 * same thing (`adapter: {r: 8}` is `adapter.r: 8`). Every key is checked against the table and
 * every value against its type and bounds before anything runs; each error names the file, the
 * line and the key ("configs/x.yaml:12: unknown key 'adapter.rank'; did you mean 'adapter.r'?").
 * `--set key=value` overrides (the value is parsed as a YAML scalar or flow list/map) pass the same
 * checks and report as "--set: ...". A --set of a key that a sweep varies (grid axis, random-search
 * key, derived key) removes that axis: the command line wins.
 *
 * adapter.method also takes the LoRA variants results tables name (rslora, dora, pissa, loraplus):
 * each sets what makes it one (use_rslora, use_dora, init pissa; loraplus lr_ratio 16 unless given)
 * and resolves to method lora, so `method: dora` and `use_dora: true` are one run key; a config
 * whose other keys contradict the named variant is refused. sweep.per_method.<variant> holds axes
 * and random-search keys for one variant's points (grid.h); its keys must be read by the method
 * (config_method_ignores gives the reason otherwise) and swept nowhere else in the file.
 *
 * Resolution (config_resolve) turns the flat document plus one grid point's assignments into a
 * RunConfig: engine defaults (train_config_defaults, adapter_config_defaults for the method) are
 * the schema defaults; adapter.seed follows train.seed unless set; adapter.total_step is
 * train.steps. Cross-key checks (exactly one of base.path / base.preset, AdaLoRA's schedule, ...)
 * run here. Paths in a config (base.path, base.data, task.data, output.dir) are relative to the
 * working directory (the project root), not to the config file; presets are looked up as
 * configs/models/<preset>.yaml unless the value is itself a path (contains '/' or ends in .yaml).
 *
 * Run identity. Keys a method ignores are dropped from the canonical config AND reset to the
 * method's defaults in the resolved structs (full fine-tuning ignores every adapter key but the
 * method and the seed, which also seeds the classification head's init; VeRA ignores alpha,
 * rsLoRA/DoRA, init and the patterns; AdaLoRA ignores r, rsLoRA/DoRA, init and the patterns; LoRA
 * ignores the AdaLoRA and VeRA keys), so equal keys mean equal runs.
 * canonical_json is a compact JSON object of every remaining resolved key (defaults included),
 * flat dotted names in byte order, numbers in their shortest round-trip form for the field's C type
 * (so 1e-3 and 0.001 are one run), target modules as the sorted full names. Labels that do not
 * change what a run computes are left out: name, description, output.dir and the sweep section.
 * With a pretrained base, the preset's sizes enter as base.model.<hf key>.
 *   key      = the first 16 hex digits of SHA-256 (FIPS 180-4) of canonical_json's bytes; anyone can
 *              check one with `printf '%s' "$json" | sha256sum | cut -c1-16`.
 *   base_hash = the same over the canonical JSON of the base.* keys alone (the pretraining cache
 *              key: results/bases/<base_hash>).
 * Adding a key to the schema or changing a default changes every key (the canonical config lists
 * all resolved keys): do it knowingly, since old results then no longer count as done.
 */
#ifndef LL_CONFIG_H
#define LL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "adapter.h"
#include "core.h"
#include "early_stop.h"
#include "keys.h"
#include "model.h"
#include "train.h"

#define CONFIG_MODELS_DIR "configs/models"
#define CONFIG_BASES_DIR "results/bases"
#define CONFIG_DEFAULT_OUT_DIR "results/runs"
#define CONFIG_MAX_EVAL_SETS 16
/* One assignment of a sweep point (or an override given by a caller). */
typedef struct {
    char key[CONFIG_KEY_MAX];
    ConfigValue value;
} ConfigAssign;

void config_assign_free(ConfigAssign *a, int n); /* frees the values and the array */

/* The sweep section, parsed and type-checked (expanded by sweep.c). */
typedef struct {
    char key[CONFIG_KEY_MAX];
    ConfigValue *values;
    int n;
    int line;
} SweepAxis;

typedef enum { SPACE_CHOICE, SPACE_UNIFORM, SPACE_LOG_UNIFORM, SPACE_INT_LOG2 } SweepSpaceKind;

typedef struct {
    char key[CONFIG_KEY_MAX];
    SweepSpaceKind kind;
    ConfigValue *choices; /* SPACE_CHOICE */
    int n_choices;
    double lo, hi;        /* the others */
    int line;
} SweepSpace;

typedef struct {
    char key[CONFIG_KEY_MAX];
    char *expr;
    int line;
} SweepDerived;

/* sweep.per_method.<variant>: axes and random-search keys for the points of one method only. The
 * variant is the name the tables use (adapter_variant_name: lora, rslora, dora, pissa, loraplus,
 * adalora, vera, full). Its keys are read by that method and are swept nowhere else in the file. */
typedef struct {
    char variant[16];
    int line;
    SweepAxis *axes;   /* crossed with the grid for this method's points */
    int n_axes;
    SweepSpace *space; /* drawn with the random samples for this method's points */
    int n_space;
} SweepMethod;

typedef struct {
    ConfigAssign *match; /* a point matching every key is dropped; a key listed more than once
                          * (written `key: [a, b]`) matches any of its values */
    int n;
    int line;
} SweepExclude;

typedef struct {
    SweepAxis *axes;
    int n_axes;
    int64_t *seeds; /* sweep.seeds: a train.seed axis, the slowest one */
    int n_seeds;
    int random_n;   /* 0: no random search */
    uint64_t random_seed;
    SweepSpace *space;
    int n_space;
    SweepDerived *derived;
    int n_derived;
    SweepExclude *exclude;
    int n_exclude;
    SweepMethod *per_method;
    int n_per_method;
    EarlyStopSpec early_stop; /* type ES_NONE: no pruning */
} SweepSpec;

typedef struct {
    char key[CONFIG_KEY_MAX];
    ConfigValue value;
    int line;          /* 0 for --set */
    int from_set;      /* given on the command line */
} ConfigEntry;

typedef struct {
    char name[128];
    ModelConfig mc;
    char *canonical;   /* "\"base.model.hidden_size\":128,..." (no braces) */
} ConfigPreset;

/* A loaded, validated document: explicit values (file, then --set) plus the sweep section. */
typedef struct ConfigDoc {
    char path[1024];
    char *text;           /* the file's text, with the --set list appended as comments */
    char default_name[128]; /* the file's base name without extension */
    ConfigEntry *entries;
    int n_entries;
    SweepSpec sweep;
    ConfigPreset *presets; /* every preset the document can name, loaded once */
    int n_presets;
} ConfigDoc;

typedef struct RunConfig {
    char name[128];
    /* base model: either base.path (a model folder) or the pretraining keys */
    char base_path[1024];     /* resolved: given path, or results/bases/<base_hash> */
    int pretrain;             /* 1 when built from the base.* pretraining keys */
    char base_preset[64];     /* configs/models/<preset>.yaml holds the sizes */
    ModelConfig base_model;   /* sizes from the preset file (V = 0: the tokenizer fills it) */
    char base_data[1024];     /* pretraining corpus folder: train.txt, valid.txt */
    int base_bpe, base_vocab; /* base.tokenizer: bpe|bytes; base.vocab_size */
    TrainConfig base_train;   /* base.steps, base.batch, base.seq, base.lr, base.warmup, ... */
    char base_hash[17];       /* hash of the canonical base section (cache key) */
    int task_cls;             /* task.type: lm | cls */
    char task_data[1024];     /* folder with train/valid/test .txt (lm) or .jsonl (cls) */
    /* task.eval_sets: more validation sets, name -> folder (its valid.txt or valid.jsonl), in file
     * order; ll_malloc'd (run_config_free). Like train.diagnostics, not part of the run key: they
     * change what a run measures, not what it trains. */
    int n_eval_sets;
    char **eval_set_names, **eval_set_paths;
    int diagnostics;          /* train.diagnostics (default 1) */
    TrainConfig train;        /* train.* */
    AdapterConfig adapter;    /* adapter.*; total_step = train.steps */
    char out_dir[1024];       /* output.dir; a run writes <out_dir>/<sweep name>/<run key>/ */
    char key[17];             /* hash (16 hex chars) of canonical_json */
    char *canonical_json;     /* sorted-key JSON of every resolved key the run depends on */
} RunConfig;

/* Reads, parses and validates path (flat values, sweep section) and applies the --set overrides
 * ("key=value" strings). Every error is LL_ERR_CONFIG (LL_ERR_IO for an unreadable file) with a
 * message naming file:line and key. */
/* The value the file (or --set) gives key, NULL when it gives none (defaults are not filled in). */
const ConfigValue *config_doc_value(const struct ConfigDoc *doc, const char *key);

/* 1 when the file has a sweep section (grid, seeds, random search, derived keys, exclusions,
 * per-method axes or early stopping), which only `loralab sweep` acts on. */
int config_has_sweep(const struct ConfigDoc *doc);

LLStatus config_load(const char *path, const char *const *sets, int n_sets, struct ConfigDoc **doc,
                     LLError *err);
/* The same from text already in memory; `path` is only used in messages and for the default name. */
LLStatus config_load_text(const char *path, const char *text, const char *const *sets, int n_sets,
                          struct ConfigDoc **doc, LLError *err);
void config_doc_free(struct ConfigDoc *doc);

/* One point: the document's values, with overrides[0..n) on top (they win), resolved and checked.
 * rc is zeroed first; free it with run_config_free (also after a failure). */
LLStatus config_resolve(const struct ConfigDoc *doc, const ConfigAssign *overrides, int n, RunConfig *rc,
                        LLError *err);
void run_config_free(RunConfig *rc);

/* A numeric key of the canonical config as a double: the shortest decimal of the field's value
 * (0.003 for a train.lr of 0.003, where the float field reads 0.00300000002607703), which is what
 * the config wrote whenever it wrote no more digits than the field holds. NaN when the key is not
 * in the canonical config or not a number. What the store records, so `WHERE lr = 0.003` works. */
double config_written_number(const RunConfig *rc, const char *key);

/* The method a point's runs are reported as, before resolution's checks; what sweep.per_method is
 * keyed by: adapter.method when it names a variant (dora, loraplus, ...), else adapter_variant_name
 * of the point's values (so use_dora: true is dora too). Valid while doc lives. */
const char *config_variant(const struct ConfigDoc *doc, const ConfigAssign *overrides, int n);

/* The value of one key in the canonical config, as JSON text; returns 0 when the key is not part
 * of it (a key the method ignores). */
int config_canonical_get(const RunConfig *rc, const char *key, char *out, size_t cap);

/* The effective number of a numeric key for a point (override, file value, else default; adapter
 * defaults of the point's method): what derived expressions read. Returns 0 when the key is not
 * numeric. */
int config_number(const struct ConfigDoc *doc, const ConfigAssign *overrides, int n, const char *key,
                  double *out);

/* SHA-256 of data, as 64 lower-case hex digits plus NUL (out has room for 65). */
void config_sha256_hex(const void *data, size_t len, char out[65]);

/* Loads a model size file (HF key names); V stays 0. canonical receives the base.model.* JSON
 * members (malloc'd; may be NULL). */
LLStatus config_load_preset(const char *preset, ModelConfig *mc, char **canonical, LLError *err);

#endif
