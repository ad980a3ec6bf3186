/* keys: see keys.h for the table's role and invariants.
 *
 * Invariants kept here:
 *   - KEYS[] lists every key once; SWEEP_SPECIAL the sweep sub-sections parsed by dedicated code.
 *   - config_check_value leaves a value either of its key's type and within bounds (returns 1), or
 *     says why not (returns 0); it never accepts a value that config_resolve would have to refuse
 *     on its own (only cross-key rules are left to resolution).
 */
#define _POSIX_C_SOURCE 200809L
#include "keys.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "store.h"

/* ---- the schema ------------------------------------------------------------------------------ */

#define MAX_SEED 9007199254740992.0 /* 2^53: seeds survive a round trip through a double */
#define NUM(key, T, ST, STRUCT, field, FK, flags, lo, hi, doc) \
    {key, T, ST, offsetof(STRUCT, field), FK, flags, lo, hi, NULL, NULL, doc}
#define TRAIN(f, T, FK, flags, lo, hi, doc) NUM("train." #f, T, FS_TRAIN, TrainConfig, f, FK, flags, lo, hi, doc)
#define BASE(f, T, FK, flags, lo, hi, doc) NUM("base." #f, T, FS_BASE, TrainConfig, f, FK, flags, lo, hi, doc)
#define ADAPT(f, T, FK, flags, lo, hi, doc) \
    NUM("adapter." #f, T, FS_ADAPTER, AdapterConfig, f, FK, flags, lo, hi, doc)
#define SPECIAL(key, T, flags, lo, hi, choices, def, doc)                                                              \
    { key, T, FS_NONE, 0, FK_NONE, flags, lo, hi, choices, def, doc }
#define LOHI (B_LO | B_HI)

static const KeySpec KEYS[] = {
    SPECIAL("name", CFG_STRING, B_NOT_RUN, 0, 0, NULL, NULL,
            "sweep name: database results/<name>.db, outputs under output.dir/<name>/ (default: file name)"),
    SPECIAL("description", CFG_STRING, B_NOT_RUN, 0, 0, NULL, "", "free text, kept with the sweep"),
    SPECIAL("output.dir", CFG_STRING, B_NOT_RUN, 0, 0, NULL, CONFIG_DEFAULT_OUT_DIR,
            "where runs write <dir>/<name>/<run key>/"),
    SPECIAL("base.path", CFG_STRING, 0, 0, 0, NULL, NULL, "a model folder (config.json + model.safetensors)"),
    SPECIAL("base.preset", CFG_STRING, 0, 0, 0, NULL, NULL,
            "pretrain a base of this size: tiny|small|medium or a file of configs/models/"),
    SPECIAL("base.data", CFG_STRING, 0, 0, 0, NULL, NULL, "pretraining corpus folder (train.txt, valid.txt)"),
    SPECIAL("base.tokenizer", CFG_STRING, 0, 0, 0, "bpe|bytes", "bpe", "tokenizer trained for the base"),
    SPECIAL("base.vocab_size", CFG_INT, LOHI, 260, 1 << 20, NULL, "1024", "BPE vocabulary size"),
    BASE(steps, CFG_INT, FK_INT, LOHI, 1, 1e9, "pretraining steps"),
    BASE(batch, CFG_INT, FK_INT, LOHI, 1, 65536, "pretraining batch size (sequences)"),
    BASE(seq, CFG_INT, FK_INT, LOHI, 1, 1 << 20, "pretraining sequence length"),
    BASE(lr, CFG_FLOAT, FK_F32, LOHI | B_LO_OPEN, 0, 10, "pretraining peak learning rate"),
    BASE(warmup, CFG_INT, FK_INT, LOHI, 0, 1e9, "pretraining warmup steps"),
    BASE(seed, CFG_INT, FK_U64, LOHI, 0, MAX_SEED, "pretraining seed (weights and data order)"),
    BASE(min_lr_ratio, CFG_FLOAT, FK_F32, LOHI, 0, 1, "pretraining final lr / peak lr"),
    BASE(weight_decay, CFG_FLOAT, FK_F32, LOHI, 0, 10, "pretraining AdamW weight decay"),
    SPECIAL("task.type", CFG_STRING, 0, 0, 0, "lm|cls", "lm", "language modelling or classification"),
    SPECIAL("task.data", CFG_STRING, 0, 0, 0, NULL, NULL,
            "folder with train/valid/test .txt (lm) or .jsonl (cls)"),
    SPECIAL("task.eval_sets", CFG_STR_MAP, B_NOT_RUN, 0, 0, NULL, NULL,
            "{name: folder}: more validation sets (each folder's valid split, of the task's type), evaluated "
            "with the task's at every evaluation; not part of run keys"),
    TRAIN(steps, CFG_INT, FK_INT, LOHI, 1, 1e9, "optimizer steps"),
    TRAIN(batch, CFG_INT, FK_INT, LOHI, 1, 65536, "sequences per micro-batch"),
    TRAIN(seq, CFG_INT, FK_INT, LOHI, 1, 1 << 20, "sequence length (tokens)"),
    TRAIN(accum, CFG_INT, FK_INT, LOHI, 1, 65536, "micro-batches per step (gradient accumulation)"),
    TRAIN(lr, CFG_FLOAT, FK_F32, LOHI | B_LO_OPEN, 0, 10, "peak learning rate"),
    TRAIN(min_lr_ratio, CFG_FLOAT, FK_F32, LOHI, 0, 1, "final lr / peak lr"),
    TRAIN(weight_decay, CFG_FLOAT, FK_F32, LOHI, 0, 10, "AdamW decoupled weight decay"),
    TRAIN(beta1, CFG_FLOAT, FK_F32, LOHI | B_HI_OPEN, 0, 1, "AdamW beta1"),
    TRAIN(beta2, CFG_FLOAT, FK_F32, LOHI | B_HI_OPEN, 0, 1, "AdamW beta2"),
    TRAIN(eps, CFG_FLOAT, FK_F32, LOHI | B_LO_OPEN, 0, 1, "AdamW epsilon"),
    TRAIN(clip, CFG_FLOAT, FK_F32, LOHI, 0, 1e6, "global gradient-norm clip (0: off)"),
    TRAIN(warmup, CFG_INT, FK_INT, LOHI, 0, 1e9, "linear warmup steps"),
    SPECIAL("train.schedule", CFG_STRING, 0, 0, 0, "cosine|linear|constant", NULL, "lr decay after warmup"),
    SPECIAL("train.precision", CFG_STRING, 0, 0, 0, "fp32|bf16", "fp32",
            "bf16: the frozen base's products take bf16 inputs, fp32 sums (AVX512_BF16)"),
    SPECIAL("train.base_quant", CFG_STRING, 0, 0, 0, "none|q8_0|nf4", "none",
            "the frozen base held quantized (QLoRA): nf4 (bitsandbytes) or q8_0 (llama.cpp); adapters stay fp32"),
    TRAIN(double_quant, CFG_BOOL, FK_INT, 0, 0, 0, "nf4: quantize the absmax values too (QLoRA's double quantization)"),
    TRAIN(eval_every, CFG_INT, FK_INT, LOHI, 0, 1e9, "evaluate every N steps (0: only at the end; step 0 always)"),
    SPECIAL("train.keep", CFG_STRING, 0, 0, 0, "best|last", "best",
            "weights a run keeps: of its best validation evaluation, or of its last step"),
    TRAIN(eval_batches, CFG_INT, FK_INT, LOHI, 0, 1e9, "batches per evaluation (0: whole split)"),
    TRAIN(log_every, CFG_INT, FK_INT, LOHI, 1, 1e9, "train metrics every N steps"),
    SPECIAL("train.diagnostics", CFG_BOOL, B_NOT_RUN, 0, 0, NULL, "true",
            "spectral diagnostics of every adapted matrix at the end of a run (intruder dimensions, ...); "
            "not part of run keys"),
    TRAIN(seed, CFG_INT, FK_U64, LOHI, 0, MAX_SEED, "data order seed (adapter.seed follows it unless set)"),
    TRAIN(max_minutes, CFG_FLOAT, FK_F64, LOHI, 0, 1e7, "wall-clock bound in minutes (0: none)"),
    TRAIN(checkpoint_every, CFG_INT, FK_INT, LOHI | B_NOT_RUN, 0, 1e9,
          "save the run's training state every N steps, to resume after a kill (0: only when stopped by a "
          "signal or train.max_minutes); not part of run keys"),
    SPECIAL("adapter.method", CFG_STRING, 0, 0, 0, "full|lora|adalora|vera|rslora|dora|pissa|loraplus", "lora",
            "fine-tuning method; rslora, dora, pissa, loraplus are LoRA with what they imply"),
    ADAPT(r, CFG_INT, FK_INT, LOHI, 1, 65536, "rank (LoRA, VeRA)"),
    ADAPT(alpha, CFG_FLOAT, FK_F32, LOHI | B_LO_OPEN, 0, 1e6, "lora_alpha (scale alpha/r)"),
    ADAPT(dropout, CFG_FLOAT, FK_F32, LOHI | B_HI_OPEN, 0, 1, "dropout on the adapter input"),
    SPECIAL("adapter.targets", CFG_STR_LIST, 0, 0, 0, NULL, NULL,
            "target modules: q,k,v,o,gate,up,down (or *_proj), or all-linear"),
    SPECIAL("adapter.layers", CFG_INT_LIST, LOHI, 0, ADAPTER_MAX_LAYERS - 1, NULL, NULL,
            "layers_to_transform (empty: every layer)"),
    ADAPT(use_rslora, CFG_BOOL, FK_INT, 0, 0, 0, "rsLoRA scale alpha/sqrt(r)"),
    ADAPT(use_dora, CFG_BOOL, FK_INT, 0, 0, 0, "DoRA magnitude vector"),
    ADAPT(lr_ratio, CFG_FLOAT, FK_F32, LOHI | B_LO_OPEN, 0, 1e6,
          "LoRA+: learning rate of B over that of A (PEFT's loraplus_lr_ratio; 1: plain LoRA)"),
    SPECIAL("adapter.init", CFG_STRING, 0, 0, 0, "kaiming|gaussian|pissa|loftq", NULL,
            "init_lora_weights (loftq: the top-r SVD of W - dequant(Q), on a train.base_quant base)"),
    SPECIAL("adapter.rank_pattern", CFG_NUM_MAP, LOHI | B_INTEGRAL, 1, 65536, NULL, NULL,
            "per-module rank overrides {module suffix: r}"),
    SPECIAL("adapter.alpha_pattern", CFG_NUM_MAP, LOHI | B_LO_OPEN, 0, 1e6, NULL, NULL,
            "per-module alpha overrides {module suffix: alpha}"),
    ADAPT(init_r, CFG_INT, FK_INT, LOHI, 1, 65536, "AdaLoRA initial rank"),
    ADAPT(target_r, CFG_INT, FK_INT, LOHI, 1, 65536, "AdaLoRA average target rank"),
    ADAPT(tinit, CFG_INT, FK_INT, LOHI, 0, 1e9, "AdaLoRA warmup steps before budgeting"),
    ADAPT(tfinal, CFG_INT, FK_INT, LOHI, 0, 1e9, "AdaLoRA final fine-tuning steps"),
    ADAPT(deltaT, CFG_INT, FK_INT, LOHI, 1, 1e9, "AdaLoRA steps between rank allocations"),
    ADAPT(beta1, CFG_FLOAT, FK_F32, LOHI | B_HI_OPEN, 0, 1, "AdaLoRA sensitivity EMA"),
    ADAPT(beta2, CFG_FLOAT, FK_F32, LOHI | B_HI_OPEN, 0, 1, "AdaLoRA uncertainty EMA"),
    ADAPT(orth_reg_weight, CFG_FLOAT, FK_F32, LOHI, 0, 1e6, "AdaLoRA orthogonality weight"),
    ADAPT(projection_prng_key, CFG_INT, FK_U32, LOHI, 0, 4294967295.0, "VeRA projection seed"),
    ADAPT(save_projection, CFG_BOOL, FK_INT, 0, 0, 0, "VeRA: save vera_A/vera_B"),
    ADAPT(d_initial, CFG_FLOAT, FK_F32, LOHI, -1e6, 1e6, "VeRA initial lambda_d"),
    ADAPT(seed, CFG_INT, FK_U64, LOHI, 0, MAX_SEED,
          "adapter init, dropout and classification-head seed (default: train.seed)"),
    SPECIAL("sweep.seeds", CFG_INT_LIST, LOHI | B_NOT_RUN | B_LIST_ONLY, 0, MAX_SEED, NULL, NULL,
            "a train.seed axis (the slowest one)"),
    SPECIAL("sweep.random.n", CFG_INT, LOHI | B_NOT_RUN, 1, 1e6, NULL, NULL, "random-search points"),
    SPECIAL("sweep.random.seed", CFG_INT, LOHI | B_NOT_RUN, 0, MAX_SEED, NULL, "0", "random-search seed"),
    /* --emit-slurm's script (slurm.h); the command line's flags win over these */
    SPECIAL("slurm.partition", CFG_STRING, B_NOT_RUN, 0, 0, NULL, NULL, "#SBATCH --partition (--partition)"),
    SPECIAL("slurm.account", CFG_STRING, B_NOT_RUN, 0, 0, NULL, NULL, "#SBATCH --account (--account)"),
    SPECIAL("slurm.time", CFG_INT, LOHI | B_NOT_RUN, 1, 1e6, NULL, NULL, "minutes a task may run (--time; default: estimated)"),
    SPECIAL("slurm.mem", CFG_INT, LOHI | B_NOT_RUN, 1, 1e9, NULL, NULL, "MB a task may use (--mem; default: estimated)"),
    SPECIAL("slurm.local_db", CFG_BOOL, B_NOT_RUN, 0, 0, NULL, "false",
            "each task's database on node-local disk, copied back at its end (--local-db)"),
    SPECIAL("slurm.extra", CFG_STRING, B_NOT_RUN, 0, 0, NULL, NULL,
            "shell lines run before loralab in each task, one per line (module loads; a YAML block `|`)"),
};
#define N_KEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

/* Sweep sub-sections with a structure of their own (parsed by dedicated code below). */
static const char *const SWEEP_SPECIAL[] = {"sweep.grid", "sweep.derived", "sweep.exclude", "sweep.random.space",
                                            "sweep.per_method", "sweep.early_stop", "early_terminate"};
#define N_SWEEP_SPECIAL ((int)(sizeof SWEEP_SPECIAL / sizeof SWEEP_SPECIAL[0]))

/* Names people bring from PEFT/HF/W&B, matched on the last component of an unknown key. */
static const struct { const char *from, *to; } ALIASES[] = {
    {"lora_alpha", "adapter.alpha"},         {"lora_dropout", "adapter.dropout"},
    {"vera_dropout", "adapter.dropout"},     {"target_modules", "adapter.targets"},
    {"layers_to_transform", "adapter.layers"}, {"init_lora_weights", "adapter.init"},
    {"rank", "adapter.r"},                   {"learning_rate", "train.lr"},
    {"max_steps", "train.steps"},            {"batch_size", "train.batch"},
    {"warmup_steps", "train.warmup"},        {"parameters", "sweep.grid"},
};

const KeySpec *config_keys(int *n) {
    *n = N_KEYS;
    return KEYS;
}

const KeySpec *config_key_spec(const char *key) {
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].key, key) == 0) return &KEYS[i];
    return NULL;
}

int config_key_known(const char *key) { return config_key_spec(key) != NULL; }

ConfigType config_key_type(const char *key) {
    const KeySpec *ks = config_key_spec(key);
    LL_ASSERT(ks);
    return ks->type;
}

int config_key_is_sweep_special(const char *key) {
    for (int i = 0; i < N_SWEEP_SPECIAL; i++)
        if (strcmp(SWEEP_SPECIAL[i], key) == 0) return 1;
    return 0;
}

int config_key_is_section(const char *prefix) {
    size_t n = strlen(prefix);
    for (int i = 0; i < N_KEYS; i++)
        if (strncmp(KEYS[i].key, prefix, n) == 0 && KEYS[i].key[n] == '.') return 1;
    for (int i = 0; i < N_SWEEP_SPECIAL; i++)
        if (strncmp(SWEEP_SPECIAL[i], prefix, n) == 0 && SWEEP_SPECIAL[i][n] == '.') return 1;
    return 0;
}

/* ---- suggestions ----------------------------------------------------------------------------- */

int config_edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > 127 || nb > 127) return 1000;
    int prev[128], cur[128];
    for (size_t j = 0; j <= nb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(int) * (nb + 1));
    }
    return prev[nb];
}

const char *config_suggest_key(const char *key) {
    const char *last = strrchr(key, '.');
    last = last ? last + 1 : key;
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
        if (strcmp(ALIASES[i].from, last) == 0) return ALIASES[i].to;
    const char *best = NULL;
    int bd = 1 << 30;
    for (int i = 0; i < N_KEYS + N_SWEEP_SPECIAL; i++) {
        const char *k = i < N_KEYS ? KEYS[i].key : SWEEP_SPECIAL[i - N_KEYS];
        int d = config_edit_distance(key, k);
        if (d < bd) bd = d, best = k;
    }
    /* The bare last component often names the key ("rank_pattern" for "adapter.rank_pattern"). */
    for (int i = 0; i < N_KEYS; i++) {
        const char *kl = strrchr(KEYS[i].key, '.');
        if (kl && strcmp(kl + 1, key) == 0 && strncmp(KEYS[i].key, "base.", 5) != 0) return KEYS[i].key;
    }
    int limit = (int)strlen(key) / 3;
    if (limit < 2) limit = 2;
    return bd <= limit ? best : NULL;
}

int config_short_name(const char *name, char *out, size_t cap, LLError *err) {
    if (config_key_spec(name)) {
        snprintf(out, cap, "%s", name);
        return 1;
    }
    const char *found = NULL, *second = NULL;
    for (int i = 0; i < N_KEYS; i++) {
        const char *k = KEYS[i].key, *dot = strrchr(k, '.');
        if (!dot || strcmp(dot + 1, name) != 0) continue;
        if (strncmp(k, "base.", 5) == 0 || strncmp(k, "sweep.", 6) == 0) continue;
        if (!found) found = k;
        else if (!second) second = k;
    }
    if (found && !second) {
        snprintf(out, cap, "%s", found);
        return 1;
    }
    if (second)
        ll_err(err, LL_ERR_CONFIG, "name '%s' is ambiguous (%s, %s): write the full key", name, found, second);
    else {
        const char *s = config_suggest_key(name);
        if (s) ll_err(err, LL_ERR_CONFIG, "unknown name '%s'; did you mean '%s'?", name, s);
        else ll_err(err, LL_ERR_CONFIG, "unknown name '%s'", name);
    }
    return 0;
}

const char *config_suggest_section(const char *key, char *buf, size_t cap) {
    int bd = 1 << 30;
    for (int i = 0; i < N_KEYS + N_SWEEP_SPECIAL; i++) {
        const char *k = i < N_KEYS ? KEYS[i].key : SWEEP_SPECIAL[i - N_KEYS];
        for (const char *dot = strchr(k, '.'); dot; dot = strchr(dot + 1, '.')) {
            char prefix[CONFIG_KEY_MAX];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(dot - k), k);
            int d = config_edit_distance(key, prefix);
            if (d < bd) bd = d, snprintf(buf, cap, "%s", prefix);
        }
    }
    int limit = (int)strlen(key) / 3;
    return bd <= (limit < 2 ? 2 : limit) ? buf : NULL;
}

/* ---- values ---------------------------------------------------------------------------------- */

void config_value_free(ConfigValue *v) {
    if (!v) return;
    ll_free(v->s);
    for (int i = 0; i < v->n; i++)
        if (v->names) ll_free(v->names[i]);
    ll_free(v->names);
    ll_free(v->nums);
    for (int i = 0; i < v->n; i++)
        if (v->strs) ll_free(v->strs[i]);
    ll_free(v->strs);
    memset(v, 0, sizeof *v);
}

void config_value_copy(ConfigValue *dst, const ConfigValue *src) {
    *dst = *src;
    dst->s = src->s ? ll_strdup(src->s) : NULL;
    dst->names = NULL, dst->nums = NULL, dst->strs = NULL;
    if (src->names) {
        dst->names = ll_calloc((size_t)(src->n > 0 ? src->n : 1), sizeof(char *));
        for (int i = 0; i < src->n; i++) dst->names[i] = ll_strdup(src->names[i]);
    }
    if (src->strs) {
        dst->strs = ll_calloc((size_t)(src->n > 0 ? src->n : 1), sizeof(char *));
        for (int i = 0; i < src->n; i++) dst->strs[i] = ll_strdup(src->strs[i]);
    }
    if (src->nums) {
        dst->nums = ll_malloc((size_t)(src->n > 0 ? src->n : 1), sizeof(double));
        if (src->n > 0) memcpy(dst->nums, src->nums, sizeof(double) * (size_t)src->n);
    }
}

double config_value_number(const ConfigValue *v) {
    return v->type == CFG_FLOAT ? v->f : (double)v->i;
}

void config_append(char *out, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (k > 0) *len = *len + (size_t)k < cap ? *len + (size_t)k : cap - 1;
}

/* Shortest decimal text that reads back as the same float (f32 = 1) or double. Integral values
 * below 1e15 print without exponent ("16", not "1.6e+01"), so the text is stable and readable. */
void config_fmt_number(double v, int f32, char *out, size_t cap) {
    if (f32) v = (double)(float)v;
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, cap, "%.0f", v == 0.0 ? 0.0 : v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, v);
        if (f32 ? strtof(out, NULL) == (float)v : strtod(out, NULL) == v) return;
    }
}

void config_value_string(const ConfigValue *v, char *out, size_t cap) {
    size_t len = 0;
    char num[40];
    out[0] = '\0';
    switch (v->type) {
    case CFG_INT: snprintf(out, cap, "%lld", (long long)v->i); break;
    case CFG_FLOAT: config_fmt_number(v->f, 0, out, cap); break;
    case CFG_BOOL: snprintf(out, cap, "%s", v->i ? "true" : "false"); break;
    case CFG_STRING: snprintf(out, cap, "%s", v->s ? v->s : ""); break;
    case CFG_STR_LIST:
    case CFG_INT_LIST:
        config_append(out, cap, &len, "[");
        for (int i = 0; i < v->n; i++) {
            if (v->type == CFG_STR_LIST) config_append(out, cap, &len, "%s%s", i ? "," : "", v->names[i]);
            else config_append(out, cap, &len, "%s%lld", i ? "," : "", (long long)v->nums[i]);
        }
        config_append(out, cap, &len, "]");
        break;
    case CFG_NUM_MAP:
        config_append(out, cap, &len, "{");
        for (int i = 0; i < v->n; i++) {
            config_fmt_number(v->nums[i], 0, num, sizeof num);
            config_append(out, cap, &len, "%s%s:%s", i ? "," : "", v->names[i], num);
        }
        config_append(out, cap, &len, "}");
        break;
    case CFG_STR_MAP:
        config_append(out, cap, &len, "{");
        for (int i = 0; i < v->n; i++) config_append(out, cap, &len, "%s%s:%s", i ? "," : "", v->names[i], v->strs[i]);
        config_append(out, cap, &len, "}");
        break;
    }
}

unsigned config_targets_mask(const ConfigValue *v) {
    unsigned mask = 0, one;
    for (int i = 0; i < v->n; i++)
        if (adapter_parse_targets(v->names[i], &one, NULL) == LL_OK) mask |= one;
    return mask;
}

int config_value_equal(const char *key, const ConfigValue *a, const ConfigValue *b) {
    int an = a->type == CFG_INT || a->type == CFG_FLOAT, bn = b->type == CFG_INT || b->type == CFG_FLOAT;
    if (an && bn) return config_value_number(a) == config_value_number(b);
    if (a->type != b->type) return 0;
    if (key && strcmp(key, "adapter.targets") == 0 && a->type == CFG_STR_LIST)
        return config_targets_mask(a) == config_targets_mask(b);
    switch (a->type) {
    case CFG_BOOL: return a->i == b->i;
    case CFG_STRING: return strcmp(a->s, b->s) == 0;
    case CFG_STR_LIST:
    case CFG_INT_LIST:
    case CFG_NUM_MAP:
    case CFG_STR_MAP:
        if (a->n != b->n) return 0;
        for (int i = 0; i < a->n; i++) {
            if (a->names && strcmp(a->names[i], b->names[i]) != 0) return 0;
            if (a->nums && a->nums[i] != b->nums[i]) return 0;
            if (a->strs && strcmp(a->strs[i], b->strs[i]) != 0) return 0;
        }
        return 1;
    default: return 0;
    }
}

const char *config_type_name(ConfigType t) {
    switch (t) {
    case CFG_INT: return "a whole number";
    case CFG_FLOAT: return "a number";
    case CFG_BOOL: return "true or false";
    case CFG_STRING: return "a string";
    case CFG_STR_LIST: return "a list of strings";
    case CFG_INT_LIST: return "a list of whole numbers";
    case CFG_NUM_MAP: return "a mapping of names to numbers";
    case CFG_STR_MAP: return "a mapping of names to strings";
    }
    return "?";
}

static void bounds_text(const KeySpec *ks, char *out, size_t cap) {
    char lo[40], hi[40];
    config_fmt_number(ks->lo, 0, lo, sizeof lo);
    config_fmt_number(ks->hi, 0, hi, sizeof hi);
    if ((ks->flags & LOHI) == LOHI)
        snprintf(out, cap, "%s%.24s, %.24s%s", ks->flags & B_LO_OPEN ? "(" : "[", lo, hi,
                 ks->flags & B_HI_OPEN ? ")" : "]");
    else if (ks->flags & B_LO)
        snprintf(out, cap, "%s %.24s", ks->flags & B_LO_OPEN ? ">" : ">=", lo);
    else
        snprintf(out, cap, "%s %.24s", ks->flags & B_HI_OPEN ? "<" : "<=", hi);
}

static int in_bounds(const KeySpec *ks, double x) {
    if (!isfinite(x)) return 0;
    if (ks->flags & B_LO) {
        if (ks->flags & B_LO_OPEN ? !(x > ks->lo) : !(x >= ks->lo)) return 0;
    }
    if (ks->flags & B_HI) {
        if (ks->flags & B_HI_OPEN ? !(x < ks->hi) : !(x <= ks->hi)) return 0;
    }
    return 1;
}

static int choice_ok(const char *choices, const char *s) {
    size_t n = strlen(s);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

static int valid_name(const char *s) {
    if (!s[0] || s[0] == '.' || strlen(s) >= 128) return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') return 0;
    return 1;
}

/* Converts v to the type of ks (numbers between int and float, integral floats to ints) and checks
 * bounds, choices and key-specific rules. On failure writes what is wrong into msg (no key). */
int config_check_value(const KeySpec *ks, ConfigValue *v, char *msg, size_t cap) {
    char b[80], txt[256];
    if (ks->type == CFG_FLOAT && v->type == CFG_INT) v->f = (double)v->i, v->type = CFG_FLOAT;
    if (ks->type == CFG_INT && v->type == CFG_FLOAT) {
        if (!(v->f == floor(v->f)) || fabs(v->f) > 9.2e18) {
            config_fmt_number(v->f, 0, txt, sizeof txt);
            snprintf(msg, cap, "expected %s, got %s", config_type_name(ks->type), txt);
            return 0;
        }
        v->i = (int64_t)v->f, v->type = CFG_INT;
    }
    if (ks->type == CFG_INT_LIST && v->type == CFG_INT) { /* one number is a list of one */
        double x = (double)v->i;
        v->type = CFG_INT_LIST, v->n = 1;
        v->nums = ll_malloc(1, sizeof(double));
        v->nums[0] = x;
    }
    if (ks->type == CFG_STR_LIST && v->type == CFG_STRING) {
        char *s = v->s;
        v->s = NULL;
        v->type = CFG_STR_LIST;
        v->n = 0;
        v->names = ll_calloc(strlen(s) + 1, sizeof(char *));
        char *save = NULL;
        for (char *tok = strtok_r(s, ", []", &save); tok; tok = strtok_r(NULL, ", []", &save))
            v->names[v->n++] = ll_strdup(tok);
        ll_free(s);
    }
    if (v->type != ks->type) {
        config_value_string(v, txt, sizeof txt);
        snprintf(msg, cap, "expected %s, got %s%s%s", config_type_name(ks->type),
                 v->type == CFG_STRING ? "the string '" : "", txt, v->type == CFG_STRING ? "'" : "");
        return 0;
    }
    switch (ks->type) {
    case CFG_INT:
    case CFG_FLOAT:
        if (!in_bounds(ks, config_value_number(v))) {
            config_value_string(v, txt, sizeof txt);
            bounds_text(ks, b, sizeof b);
            snprintf(msg, cap, "%s is outside %s", txt, b);
            return 0;
        }
        break;
    case CFG_STRING:
        if (ks->choices && !choice_ok(ks->choices, v->s)) {
            snprintf(msg, cap, "'%.200s' is not one of %s", v->s, ks->choices);
            return 0;
        }
        if (strcmp(ks->key, "name") == 0 && !valid_name(v->s)) {
            snprintf(msg, cap, "'%.200s' must be 1-127 characters of letters, digits, '_', '-', '.' (not first)", v->s);
            return 0;
        }
        if (!v->s[0] && strcmp(ks->key, "description") != 0) {
            snprintf(msg, cap, "is empty");
            return 0;
        }
        break;
    case CFG_STR_LIST:
        if (v->n == 0) {
            snprintf(msg, cap, "the list is empty");
            return 0;
        }
        if (strcmp(ks->key, "adapter.targets") == 0) {
            LLError e;
            unsigned mask;
            for (int i = 0; i < v->n; i++)
                if (adapter_parse_targets(v->names[i], &mask, &e) != LL_OK) {
                    snprintf(msg, cap, "%.500s", e.msg);
                    return 0;
                }
        }
        break;
    case CFG_INT_LIST:
        if (v->n > ADAPTER_MAX_LAYERS) {
            snprintf(msg, cap, "%d items; at most %d", v->n, ADAPTER_MAX_LAYERS);
            return 0;
        }
        for (int i = 0; i < v->n; i++)
            if (v->nums[i] != floor(v->nums[i]) || !in_bounds(ks, v->nums[i])) {
                config_fmt_number(v->nums[i], 0, txt, sizeof txt);
                bounds_text(ks, b, sizeof b);
                snprintf(msg, cap, "item %s is not a whole number in %s", txt, b);
                return 0;
            }
        break;
    case CFG_NUM_MAP:
        if (v->n > ADAPTER_MAX_PATTERNS) {
            snprintf(msg, cap, "%d entries; at most %d", v->n, ADAPTER_MAX_PATTERNS);
            return 0;
        }
        for (int i = 0; i < v->n; i++) {
            if (strlen(v->names[i]) >= sizeof(((AdapterPattern *)0)->key) || !v->names[i][0]) {
                snprintf(msg, cap, "module name '%.60s' must be 1-127 characters", v->names[i]);
                return 0;
            }
            if (((ks->flags & B_INTEGRAL) && v->nums[i] != floor(v->nums[i])) || !in_bounds(ks, v->nums[i])) {
                config_fmt_number(v->nums[i], 0, txt, sizeof txt);
                bounds_text(ks, b, sizeof b);
                snprintf(msg, cap, "%s: %s is not %s in %s", v->names[i], txt,
                         ks->flags & B_INTEGRAL ? "a whole number" : "a number", b);
                return 0;
            }
        }
        break;
    case CFG_STR_MAP: /* task.eval_sets, the one key of this type */
        if (v->n > CONFIG_MAX_EVAL_SETS) {
            snprintf(msg, cap, "%d entries; at most %d", v->n, CONFIG_MAX_EVAL_SETS);
            return 0;
        }
        for (int i = 0; i < v->n; i++) {
            if (!store_eval_set_name_ok(v->names[i])) {
                snprintf(msg, cap,
                         "'%.60s' cannot name an eval set: 1-%d characters of letters, digits, '_', '.', '-' (not "
                         "first), other than train, eval and test (it becomes the metrics' split)",
                         v->names[i], STORE_SPLIT_MAX - 1);
                return 0;
            }
            if (!v->strs[i][0]) {
                snprintf(msg, cap, "%s: the folder is empty", v->names[i]);
                return 0;
            }
        }
        break;
    case CFG_BOOL: break;
    }
    return 1;
}

LLStatus config_value_check(const char *key, ConfigValue *v, LLError *err) {
    const KeySpec *ks = config_key_spec(key);
    if (!ks) return ll_err(err, LL_ERR_CONFIG, "unknown key '%s'", key);
    char msg[600];
    if (!config_check_value(ks, v, msg, sizeof msg)) return ll_err(err, LL_ERR_CONFIG, "%s: %s", key, msg);
    return LL_OK;
}


/* ---- keys and engine fields ------------------------------------------------------------------ */

void *config_field_ptr(RunConfig *rc, const KeySpec *ks) {
    switch (ks->st) {
    case FS_TRAIN: return (char *)&rc->train + ks->off;
    case FS_BASE: return (char *)&rc->base_train + ks->off;
    case FS_ADAPTER: return (char *)&rc->adapter + ks->off;
    default: return NULL;
    }
}

const void *config_field_cptr(const RunConfig *rc, const KeySpec *ks) { return config_field_ptr((RunConfig *)rc, ks); }

void config_field_write(void *p, FieldKind fk, double x) {
    switch (fk) {
    case FK_INT: *(int *)p = (int)x; break;
    case FK_F32: *(float *)p = (float)x; break;
    case FK_F64: *(double *)p = x; break;
    case FK_U64: *(uint64_t *)p = (uint64_t)x; break;
    case FK_U32: *(uint32_t *)p = (uint32_t)x; break;
    default: break;
    }
}

double config_field_read(const void *p, FieldKind fk) {
    switch (fk) {
    case FK_INT: return *(const int *)p;
    case FK_F32: return *(const float *)p;
    case FK_F64: return *(const double *)p;
    case FK_U64: return (double)*(const uint64_t *)p;
    case FK_U32: return *(const uint32_t *)p;
    default: return NAN;
    }
}

/* Defaults of the engine structs for a method, with the config layer's own rule on top. */
void config_engine_defaults(RunConfig *rc, AdapterMethod m) {
    train_config_defaults(&rc->train);
    train_config_defaults(&rc->base_train);
    adapter_config_defaults(&rc->adapter, m);
    rc->train.keep = TRAIN_KEEP_BEST; /* train.keep's default; pretraining (base_train) keeps its last */
}

/* Which keys a method reads (see config.h, "Run identity"). */
int config_method_reads(AdapterMethod m, const char *key) {
    static const char *const lora[] = {"r", "alpha", "dropout", "targets", "layers", "use_rslora", "use_dora",
                                       "lr_ratio", "init", "rank_pattern", "alpha_pattern", "seed", NULL};
    static const char *const adalora[] = {"alpha", "dropout", "targets", "layers", "init_r", "target_r", "tinit",
                                          "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight", "seed", NULL};
    static const char *const vera[] = {"r", "dropout", "targets", "layers", "projection_prng_key",
                                       "save_projection", "d_initial", "seed", NULL};
    if (strncmp(key, "adapter.", 8) != 0) return 1;
    key += 8;
    /* The seed also draws the classification head's init, which full fine-tuning trains too. */
    if (strcmp(key, "method") == 0 || strcmp(key, "seed") == 0) return 1;
    const char *const *list = m == ADAPTER_LORA      ? lora
                              : m == ADAPTER_ADALORA ? adalora
                              : m == ADAPTER_VERA    ? vera
                                                     : NULL;
    for (int i = 0; list && list[i]; i++)
        if (strcmp(list[i], key) == 0) return 1;
    return 0;
}

/* The variants results tables name (adapter_variant_name), the engine method behind each and
 * what a LoRA variant is made of (what `adapter.method: dora` sets). */
static const struct {
    const char *name;
    AdapterMethod m;
    const char *implies;
} VARIANTS[] = {
    {"full", ADAPTER_FULL, NULL},
    {"lora", ADAPTER_LORA, NULL},
    {"rslora", ADAPTER_LORA, "adapter.use_rslora: true"},
    {"dora", ADAPTER_LORA, "adapter.use_dora: true"},
    {"pissa", ADAPTER_LORA, "adapter.init: pissa"},
    {"loraplus", ADAPTER_LORA, "adapter.lr_ratio != 1 (16 unless given)"},
    {"adalora", ADAPTER_ADALORA, NULL},
    {"vera", ADAPTER_VERA, NULL},
};
#define N_VARIANTS ((int)(sizeof VARIANTS / sizeof VARIANTS[0]))

int config_variant_method(const char *variant, AdapterMethod *m) {
    for (int i = 0; i < N_VARIANTS; i++)
        if (strcmp(VARIANTS[i].name, variant) == 0) {
            if (m) *m = VARIANTS[i].m;
            return 1;
        }
    return 0;
}

const char *config_variant_implies(const char *variant) {
    for (int i = 0; i < N_VARIANTS; i++)
        if (strcmp(VARIANTS[i].name, variant) == 0) return VARIANTS[i].implies;
    return NULL;
}

void config_variant_list(char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < N_VARIANTS; i++) config_append(out, cap, &len, "%s%s", i ? ", " : "", VARIANTS[i].name);
}

int config_method_ignores(AdapterMethod m, const char *key, char *why, size_t cap) {
    if (config_method_reads(m, key)) return 0;
    const char *k = key + 8; /* every key a method ignores is an adapter.* key */
    int rank = !strcmp(k, "r") || !strcmp(k, "rank_pattern") || !strcmp(k, "init_r") || !strcmp(k, "target_r");
    int scale = !strcmp(k, "alpha") || !strcmp(k, "alpha_pattern") || !strcmp(k, "use_rslora");
    int lora_only = !strcmp(k, "use_rslora") || !strcmp(k, "use_dora") || !strcmp(k, "lr_ratio") || !strcmp(k, "init") ||
                    !strcmp(k, "alpha_pattern") || !strcmp(k, "rank_pattern");
    if (m == ADAPTER_FULL) {
        const char *r = rank    ? "full fine-tuning has no rank"
                        : scale ? "full fine-tuning has no adapter scale (alpha)"
                        : !strcmp(k, "targets") || !strcmp(k, "layers")
                            ? "full fine-tuning trains every weight of every layer"
                            : "full fine-tuning has no adapter";
        snprintf(why, cap, "%s", r);
    } else if (m == ADAPTER_ADALORA && (!strcmp(k, "r") || !strcmp(k, "rank_pattern")))
        snprintf(why, cap, "AdaLoRA allocates its ranks from adapter.init_r and adapter.target_r");
    else if (m == ADAPTER_VERA && (!strcmp(k, "alpha") || !strcmp(k, "alpha_pattern")))
        snprintf(why, cap, "VeRA has no alpha (its scaling vectors lambda_b, lambda_d are trained)");
    else if (lora_only)
        snprintf(why, cap, "%s does not use it (LoRA only)", m == ADAPTER_VERA ? "VeRA" : "AdaLoRA");
    else if (config_method_reads(ADAPTER_ADALORA, key))
        snprintf(why, cap, "it is an AdaLoRA key; %s ignores it", adapter_method_name(m));
    else if (config_method_reads(ADAPTER_VERA, key))
        snprintf(why, cap, "it is a VeRA key; %s ignores it", adapter_method_name(m));
    else snprintf(why, cap, "%s ignores it", adapter_method_name(m));
    return 1;
}

void config_describe(FILE *f) {
    RunConfig def;
    memset(&def, 0, sizeof def);
    char dv[64], b[80];
    fprintf(f, "%-28s %-29s %-14s %-22s %s\n", "key", "type", "default", "allowed", "meaning");
    for (int i = 0; i < N_KEYS; i++) {
        const KeySpec *ks = &KEYS[i];
        config_engine_defaults(&def, strcmp(ks->key, "adapter.init_r") == 0 ? ADAPTER_ADALORA : ADAPTER_LORA);
        if (ks->st != FS_NONE) {
            double x = config_field_read(config_field_cptr(&def, ks), ks->fk);
            if (ks->type == CFG_BOOL) snprintf(dv, sizeof dv, "%s", x != 0 ? "true" : "false");
            else config_fmt_number(x, ks->fk == FK_F32, dv, sizeof dv);
        } else if (strcmp(ks->key, "train.schedule") == 0)
            snprintf(dv, sizeof dv, "%s", lr_schedule_name(def.train.schedule));
        else if (strcmp(ks->key, "adapter.init") == 0) snprintf(dv, sizeof dv, "kaiming");
        else if (strcmp(ks->key, "adapter.targets") == 0) snprintf(dv, sizeof dv, "q_proj,v_proj");
        else snprintf(dv, sizeof dv, "%s", ks->def ? (ks->def[0] ? ks->def : "\"\"") : "-");
        if (strcmp(ks->key, "adapter.r") == 0) snprintf(dv, sizeof dv, "8 (vera 256)");
        if (strcmp(ks->key, "adapter.seed") == 0) snprintf(dv, sizeof dv, "train.seed");
        if (ks->choices) snprintf(b, sizeof b, "%s", ks->choices);
        else if (ks->flags & (B_LO | B_HI)) bounds_text(ks, b, sizeof b);
        else b[0] = '\0';
        fprintf(f, "%-28s %-29s %-14s %-22s %s\n", ks->key, config_type_name(ks->type), dv, b, ks->doc);
    }
    fprintf(f, "%-28s %-29s %-14s %-22s %s\n", "sweep.grid", "mapping key -> list", "-", "",
            "cartesian product, last key fastest");
    fprintf(f, "%-28s %-29s %-14s %-22s %s\n", "sweep.random.space", "mapping key -> space", "-", "",
            "[choices] | {uniform|log_uniform|int_log2: [lo, hi]}");
    fprintf(f, "%-28s %-29s %-14s %-22s %s\n", "sweep.derived", "mapping key -> expr", "-", "",
            "e.g. adapter.alpha: \"2*r\"");
    fprintf(f, "%-28s %-29s %-14s %-22s %s\n", "sweep.exclude", "list of mappings", "-", "",
            "points matching an entry are dropped");
}
