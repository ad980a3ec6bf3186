/* adapter: the one interface every fine-tuning method plugs into.
 *
 * An Adapter is attached to a Model (model->adapter) and wraps a set of "sites": the (layer, module)
 * pairs of linear layers it adapts, chosen by target modules (a list or all-linear), an optional
 * layers_to_transform list, and per-module rank/alpha overrides (rank_pattern, alpha_pattern) matched
 * as PEFT does (peft-spec.md section 1.8). The model calls adapter_forward right after each base
 * product (y = x·W0ᵀ, then the adapter adds its delta into y) and adapter_backward right after the
 * base input gradient (the adapter adds its part into dx and accumulates its own gradients).
 *
 * Memory: every trainable float of every site sits in one flat buffer `params` with a matching
 * `grads`, so the optimizer runs one loop over it; frozen method state (VeRA's shared projections,
 * AdaLoRA's importance scores) lives in the method's private struct. Saved activations and scratch
 * for N = B*T rows are sized in adapter_create; forward and backward allocate nothing.
 *
 * Methods (one file each): lora.c (LoRA, rsLoRA, DoRA, PiSSA init), adalora.c, vera.c. Full
 * fine-tuning is not an adapter: it trains the base weights themselves (train.c). Model code never
 * switches on the method; only adapter.c maps a method name to its AdapterOps.
 */
#ifndef LL_ADAPTER_H
#define LL_ADAPTER_H

#include "core.h"
#include "model.h"
#include "rng.h"
#include "safetensors.h"

#include <cjson/cJSON.h>

typedef enum { ADAPTER_FULL, ADAPTER_LORA, ADAPTER_ADALORA, ADAPTER_VERA } AdapterMethod;
typedef enum { ADAPTER_INIT_KAIMING, ADAPTER_INIT_GAUSSIAN, ADAPTER_INIT_PISSA, ADAPTER_INIT_LOFTQ } AdapterInit;

/* ADAPTER_MAX_RANK: the largest rank adapter_config.json may name (r, init_r, target_r,
 * rank_pattern values), the same bound as the YAML's adapter.r. */
enum { ADAPTER_MAX_PATTERNS = 32, ADAPTER_MAX_LAYERS = 256, ADAPTER_MAX_RANK = 65536 };

typedef struct {
    char key[128]; /* module name or suffix, matched by the regex (.*\.)?(key)$ */
    float value;
} AdapterPattern;

typedef struct {
    AdapterMethod method;
    int r;            /* LoRA / VeRA rank */
    float alpha;      /* lora_alpha */
    float dropout;    /* lora_dropout / vera_dropout */
    int use_rslora;   /* scale alpha/sqrt(r) */
    int use_dora;     /* weight-decomposed LoRA (magnitude vector) */
    int lora_bias;    /* PEFT's lora_bias: lora_B has a bias b (out), y += s·(B·A·x + b); LoRA only, not DoRA */
    AdapterInit init; /* init_lora_weights */
    unsigned targets; /* bit (1u << MOD_*) per targeted module */
    /* target_modules given as one string (PEFT: a regular expression matched with re.fullmatch
     * against the module's full name, "model.layers.3.self_attn.q_proj"): the pattern, "" when
     * target_modules is a list. A site is then adapted when its module is in targets AND its name
     * matches. POSIX ERE (regex.h) anchored as ^(pattern)$; Python-only syntax is refused. */
    char target_regex[256];
    int n_layers;     /* layers_to_transform; 0 = every layer */
    int layers[ADAPTER_MAX_LAYERS];
    int n_rank_pattern, n_alpha_pattern;
    AdapterPattern rank_pattern[ADAPTER_MAX_PATTERNS], alpha_pattern[ADAPTER_MAX_PATTERNS];
    /* AdaLoRA (peft-spec.md section 2) */
    int init_r, target_r, tinit, tfinal, deltaT, total_step;
    float beta1, beta2, orth_reg_weight;
    /* VeRA (section 3) */
    uint32_t projection_prng_key;
    int save_projection;
    float d_initial;
    /* LoRA+ (Hayou et al. 2024, arXiv 2402.12354): the learning rate of B over that of A, PEFT's
     * loraplus_lr_ratio. 1 is plain LoRA. A training-time setting: never written to
     * adapter_config.json (PEFT's LoraConfig has no such key). LoRA-family methods only. */
    float lr_ratio;
    uint64_t seed; /* init and dropout streams */
} AdapterConfig;

/* PEFT's defaults for a method (LoraConfig, AdaLoraConfig, VeraConfig). */
void adapter_config_defaults(AdapterConfig *c, AdapterMethod method);
const char *adapter_method_name(AdapterMethod m); /* "full", "lora", "adalora", "vera" */
/* The method as results tables name it: "dora" for LoRA with use_dora, "pissa" for LoRA with PiSSA
 * init, "rslora" for LoRA with rsLoRA scaling, "loraplus" for LoRA with lr_ratio != 1 (the
 * structural variants name a combination: DoRA with a ratio is "dora"), else adapter_method_name. */
const char *adapter_variant_name(const AdapterConfig *c);
int adapter_method_from_name(const char *name, AdapterMethod *out);
/* Parses "q_proj,v_proj", "all-linear", "q,v" style lists into a target mask; an unknown name
 * fails and lists the names that exist. */
LLStatus adapter_parse_targets(const char *list, unsigned *mask, LLError *err);
/* Checks a regex-string target_modules (see AdapterConfig.target_regex): Python-only syntax ((?...),
 * \d \w \s \b and their capitals, \A \Z, lazy quantifiers) and patterns regcomp cannot take or that
 * would cost too much are refused, and so is a pattern that matches a module loralab cannot adapt
 * (lm_head, score, model.embed_tokens). The message names the pattern and what is wrong. */
LLStatus adapter_check_target_regex(const char *pattern, LLError *err);
void adapter_targets_string(unsigned mask, char *out, size_t cap);

typedef struct AdapterSite {
    int active;
    int layer, mod, in, out;
    int r;          /* allocated rank (AdaLoRA: init_r) */
    float alpha, scale;
    size_t off;     /* start of this site's trainable floats in params/grads */
    size_t n;       /* how many */
    float *w0;      /* the model's base weight W0 (out x in) of this site, refreshed by adapter_attach;
                     * read by methods whose forward or backward involves W0 (DoRA) and written
                     * only by init (PiSSA replaces W0 by its residual). On a quantized base W0 is
                     * dequant(q0): w0 is then NULL, or the fp32 original until the model releases
                     * it (model_release_fp32), which only LoftQ's init reads */
    const struct QuantTensor *q0; /* the site's quantized base weight, NULL on an fp32 base */
    float *saved;   /* activations saved for backward, method-defined, sized for N_max rows */
    float *xdrop;   /* dropout(x) saved for backward when dropout > 0 (N_max x in), else NULL */
    uint8_t *keep;  /* the dropout mask (N_max x in), else NULL */
} AdapterSite;

typedef struct Adapter Adapter;

/* Tensors a method exports for saving, in PEFT names relative to the site's module path (e.g.
 * "lora_A.weight"), or with s == NULL model-level names (VeRA's "base_model.vera_A"). */
typedef void (*AdapterTensorFn)(void *ctx, const struct AdapterSite *s, const char *name, int ndim,
                                const int64_t *shape, const float *data);

typedef struct {
    const char *name;      /* "lora" */
    const char *peft_type; /* "LORA" */
    /* Resolves the site's rank/scale (s->r, s->alpha set from config and patterns) and returns
     * its trainable float count; called once per active site before buffers exist. */
    size_t (*site_size)(Adapter *a, AdapterSite *s);
    /* Rows of saved activations per site (floats per row), for N_max rows. */
    size_t (*saved_per_row)(const Adapter *a, const AdapterSite *s);
    /* After buffers exist: initialises params and private state. */
    LLStatus (*init)(Adapter *a, Model *m, LLError *err);
    void (*forward)(Adapter *a, AdapterSite *s, const float *x, float *y, int N, int train);
    void (*backward)(Adapter *a, AdapterSite *s, const float *x, const float *dy, float *dx, int N);
    /* Optional: a regulariser added to the loss (AdaLoRA's orthogonality term); adds its gradient
     * (times weight) into grads and returns its value (unweighted). */
    float (*reg_loss)(Adapter *a, float weight);
    /* Optional: after each optimizer step, with that step's gradients still in grads (AdaLoRA's
     * rank allocation: post-step weights times pre-step gradients, as PEFT). */
    void (*on_step)(Adapter *a, int step);
    /* ΔW (out x in) of a site as it acts in forward: y += x·ΔWᵀ. For merge. */
    void (*delta)(const Adapter *a, const AdapterSite *s, float *dW);
    /* Optional (LoRA+): where, inside a site's trainable floats [0, s->n), the part trained at
     * lr·lr_ratio starts; it runs to the site's end. NULL: the method has no LoRA+ split. */
    size_t (*ratio_from)(const Adapter *a, const AdapterSite *s);
    /* Optional: method state beyond params that saving depends on (AdaLoRA's rank masks), copied
     * out and back for keeping the best weights of a run (state_bytes 0 or NULL: none). */
    size_t (*state_bytes)(const Adapter *a);
    void (*state_get)(const Adapter *a, void *buf);
    void (*state_set)(Adapter *a, const void *buf);
    /* Optional: state beyond params and state_* that the next training step depends on but saving
     * does not (AdaLoRA's importance averages), for a run's checkpoint (train_state.h): the
     * method's own contiguous buffer (*bytes long), written out and read back in place, so a
     * checkpoint costs no copy of it. NULL: none; the method's other private state is recomputed
     * from params each step. */
    void *(*resume_state)(Adapter *a, size_t *bytes);
    /* Export trainable (and, for VeRA, shared) tensors for saving. */
    void (*export_tensors)(const Adapter *a, AdapterTensorFn fn, void *ctx);
    /* Import from a loaded adapter file (adapter_read_site_tensor reads a site tensor by its
     * relative name, checking the shape); the message names the file and the tensor. */
    LLStatus (*import_tensors)(Adapter *a, const SafeTensors *st, const char *path, LLError *err);
    /* Method-specific keys of adapter_config.json. */
    void (*config_json)(const Adapter *a, cJSON *obj);
    /* Optional: reads method-specific keys of a loaded adapter_config.json that change the
     * adapter's state beyond its AdapterConfig (AdaLoRA's boolean rank_pattern: per-site masks
     * that size the tensors import_tensors then reads). Called after init, before import. */
    LLStatus (*config_load)(Adapter *a, const cJSON *obj, const char *path, LLError *err);
    /* Optional: merge (sign +1) or unmerge (sign -1) one site into its base weight W (out x in).
     * When NULL, merge adds sign·ΔW from `delta`; DoRA needs its own (the magnitude rescales
     * W + ΔW, so the merge is not additive). */
    void (*merge_site)(Adapter *a, AdapterSite *s, float *W, float sign);
    /* Optional: merge (sign +1) or unmerge (-1) the site's own bias into the base layer's bias b (out)
     * (LoRA's lora_bias: b += sign·s·b_B). Called only when the site has one (site_has_bias). */
    void (*merge_bias)(Adapter *a, AdapterSite *s, float *b, float sign);
    int (*site_has_bias)(const Adapter *a);
    void (*free_priv)(Adapter *a);
    /* Optional: the floats of method-private state that init will allocate (VeRA's projections,
     * AdaLoRA's importance averages, LoRA's transposes and DoRA's norms), computed from the
     * resolved sites, n_params and N_max alone (no buffer exists yet): adapter_memory_estimate. */
    double (*state_floats)(const Adapter *a);
} AdapterOps;

struct Adapter {
    const AdapterOps *ops;
    AdapterConfig cfg;
    ModelConfig mc;
    int N_max;
    int n_sites;          /* L * MOD_COUNT, indexed layer * MOD_COUNT + mod */
    AdapterSite *sites;
    float *params, *grads;
    size_t n_params;
    float *scratch;       /* N_max x max(in, out) + N_max x max r, for backward */
    float *scratch2;
    size_t scratch_floats;
    Rng drop_rng;
    int merged;           /* ΔW currently added into the base weights */
    void *priv;
};

/* Builds an adapter for model m (sized for m's batch capacity), initialised, not yet attached. */
LLStatus adapter_create(const AdapterConfig *cfg, Model *m, Adapter **out, LLError *err);
void adapter_free(Adapter *a);
/* Bytes adapter_create (sized for N rows) will allocate for cfg on a model of config mc: params
 * and grads, scratch, saved activations, dropout masks and method state (AdapterOps.state_floats),
 * plus, when training, AdamW's two moments and train_run's best-weights snapshot. Allocates
 * nothing that scales with the model; cfg is not validated (a site of rank < 1 counts 0). */
double adapter_memory_estimate(const AdapterConfig *cfg, const ModelConfig *mc, double N, int training);
void adapter_attach(Model *m, Adapter *a); /* NULL detaches: the base model alone */

void adapter_forward(Adapter *a, int layer, int mod, const float *x, float *y, int N, int train);
void adapter_backward(Adapter *a, int layer, int mod, const float *x, const float *dy, float *dx, int N);
float adapter_reg_loss(Adapter *a, float weight);
void adapter_on_step(Adapter *a, int step);
void adapter_zero_grad(Adapter *a);

/* The flat buffer as ranges of one learning-rate scale each, in order, adjacent ranges of equal
 * scale joined: [0, n_params) at 1 unless lr_ratio != 1, then per site [off, off + ratio_from)
 * at 1 and the rest at lr_ratio. Returns the count; *out is ll_malloc'd (ll_free it). */
typedef struct {
    size_t off, n;
    float lr_scale;
} AdapterLrRange;
int adapter_lr_ranges(const Adapter *a, AdapterLrRange **out);
/* Method state beyond params (see AdapterOps.state_bytes), for snapshots of the trainable state. */
size_t adapter_state_bytes(const Adapter *a);
void adapter_state_get(const Adapter *a, void *buf);
void adapter_state_set(Adapter *a, const void *buf);
/* Training state beyond that (see AdapterOps.resume_state), for a run's checkpoint: the buffer
 * and its size, or NULL and 0. */
void *adapter_resume_state(Adapter *a, size_t *bytes);

/* W += ΔW for every active site (merge) or W -= ΔW (unmerge). The adapter's forward is skipped
 * while merged. A quantized base is first turned into fp32 dequant(Q) (model_dequantize_base):
 * the merged weights are what the adapted model computed with. */
void adapter_merge(Adapter *a, Model *m);
/* LL_OK when adapter_merge can fold everything of a into m: an adapter with its own biases
 * (lora_bias) needs a bias in every base layer it adapts (attention_bias / mlp_bias), as PEFT,
 * which refuses the merge otherwise. LL_ERR_CONFIG naming the layer. */
LLStatus adapter_merge_check(const Adapter *a, const Model *m, LLError *err);
void adapter_unmerge(Adapter *a, Model *m);

/* The weight (out x in, model_module_dims) that linear layer (layer, mod) computes with: the base
 * weight as held (fp32, or dequant of a quantized base; PiSSA's residual) plus ΔW from the method's
 * `delta` when a adapts that layer; a NULL adapter (or an unadapted layer) gives the base weight
 * alone, which under full fine-tuning is the trained one. Nothing is merged or changed (a scratch
 * ΔW is allocated per call). For spectral diagnostics (analysis/diagnostics.h, called by run.c at
 * the end of a run). */
void adapter_effective_weight(const Adapter *a, Model *m, int layer, int mod, float *W);

/* PEFT's report: "trainable params: 4,194,304 || all params: ... || trainable%: 0.0622". */
void adapter_param_report(const Model *m, const Adapter *a, char *out, size_t cap);
size_t adapter_trainable_count(const Model *m, const Adapter *a); /* adapter + head, or all for NULL */

/* Adapter folders (PEFT layout): adapter_config.json + adapter_model.safetensors. */
LLStatus adapter_save(const Adapter *a, const Model *m, const char *dir, const char *base_name, LLError *err);
LLStatus adapter_load(const char *dir, Model *m, Adapter **out, LLError *err);
/* dir/adapter_config.json parsed (its path written into path): LL_ERR_IO when it cannot be read,
 * LL_ERR_FORMAT when it is not JSON. The caller cJSON_Deletes *out. */
LLStatus adapter_config_read(const char *dir, char *path, size_t cap, cJSON **out, LLError *err);
/* The number of classes of the classification head saved with the adapter in dir (the rows of its
 * score.weight), 0 when it has none. Open the base with that many labels before adapter_load, or
 * the head is not loaded. */
LLStatus adapter_saved_labels(const char *dir, int *n_labels, LLError *err);
/* The first step of adapter_load, from text in memory: an adapter_config.json -> AdapterConfig
 * (missing keys take PEFT's defaults, a key compat.h does not accept is refused by name; ranks and steps outside int's
 * range are refused). `path` only names the file in messages. LL_ERR_FORMAT or LL_ERR_CONFIG on
 * bad input. Not checked against a model: adapter_create does that. */
LLStatus adapter_config_parse(const char *json, size_t len, const char *path, AdapterConfig *out, LLError *err);

/* AdaLoRA (adalora.c). The rank a site currently keeps: the number of true entries of its mask
 * from the last budget masking (or from a loaded rank_pattern); init_r before any masking. */
int adalora_site_rank(const Adapter *a, const AdapterSite *s);
/* The budget schedule b(t) of peft-spec.md section 2.5 for n_sites adapted layers: returns the
 * total rank budget at `step` and sets *mask_now (may be NULL) when the schedule masks at that
 * step. init_bgt = init_r·n_sites, target_bgt = target_r·n_sites. */
int adalora_budget(const AdapterConfig *c, int n_sites, int step, int *mask_now);
/* Checks the AdaLoRA keys (ranks, schedule, betas, orth_reg_weight) as PEFT's AdaLoraConfig does. */
LLStatus adalora_validate(const AdapterConfig *c, LLError *err);

/* Shared by the methods. */
const AdapterOps *lora_ops(void);
const AdapterOps *adalora_ops(void);
const AdapterOps *vera_ops(void);
/* Inverted dropout of x into a->sites' xdrop buffer; returns the buffer to use as input. */
const float *adapter_dropout(Adapter *a, AdapterSite *s, const float *x, int N, int train);
/* dx += dxd ⊙ keep/(1-p), the dropout backward. */
void adapter_dropout_backward(const Adapter *a, const AdapterSite *s, const float *dxd, float *dx, int N);
/* Reads a site tensor "PREFIX<site path>.<name>" from an adapter file into out, checking its shape. */
LLStatus adapter_read_site_tensor(const SafeTensors *st, const char *path, const AdapterSite *s,
                                  const char *name, int ndim, const int64_t *shape, float *out, LLError *err);
/* A float config value as the shortest decimal that reads back to the same float, so that
 * adapter_config.json says 0.05 rather than 0.05000000074505806. */
double adapter_json_float(float v);
/* The PEFT module path of a site: "model.layers.3.self_attn.q_proj". */
void adapter_site_path(const AdapterSite *s, char *out, size_t cap);

#endif
