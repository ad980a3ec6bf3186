/* model: a decoder-only, Llama-style transformer (HF LlamaForCausalLM / ...ForSequenceClassification).
 *
 * Dimension letters used across the engine:
 *   B batch, T time (sequence), N = B*T rows, C channels (hidden), L layers, NH attention heads,
 *   NKV kv heads (grouped-query attention when NKV < NH), HS head size, F ffn width, V vocabulary,
 *   R adapter rank.
 *
 * Block (HF Llama, fp32): h = E[ids]; per layer: a = RMSNorm(h); q,k,v = a·Wqᵀ, a·Wkᵀ, a·Wvᵀ;
 * RoPE on q,k (rotate-half); causal softmax attention; h += o·Woᵀ; b = RMSNorm(h);
 * h += (act(b·Wgᵀ) ⊙ b·Wuᵀ)·Wdᵀ (act: SiLU, or GELU / ReLU as hidden_act says); then RMSNorm and the LM head (tied to E or not), or, with
 * n_labels > 0, the `score` head pooled at each row's last non-pad token.
 *
 * Biases (attention_bias, mlp_bias): y = x·Wᵀ + b, the bias added after the adapter's delta (so DoRA
 * rescales x·W0ᵀ alone, as PEFT, which takes the bias out first). They are tensors of their own,
 * listed after every other tensor (model_tensor order), zero-initialised, trained under full
 * fine-tuning without weight decay, and never quantized.
 *
 * Memory: the base weights are one contiguous buffer (`params`, HF names via model_tensor);
 * where each tensor sits in it is recorded in the offsets (off_embed, lay[l], off_lnf, off_lm),
 * which every access goes through: model_init lays the tensors out in model_tensor order,
 * model_map_params in the order of the file it maps. The buffer is either malloc'd or a private
 * file mapping (params_mapped; see model_map_params). Their gradient buffer, in the same layout,
 * exists only when the base is trained (full fine-tuning, pretraining). The
 * `score` head has its own buffer and gradient, because it is trained under every method (PEFT's
 * modules_to_save). Activations for a (B, T) capacity are sized once in model_init; forward and
 * backward allocate nothing.
 *
 * Quantized base (model_quantize_base, QLoRA): the linear weights of the blocks are held as
 * QuantTensors (NF4 or Q8_0, quant.h), qw[l*MOD_COUNT + mod]; the embedding, the norms and an
 * untied LM head stay fp32. Their products dequantize W a few panels (bf16) or a chunk of rows
 * (fp32) at a time into scratch sized once. The model holds either fp32 or quantized linear
 * weights, never both, except between model_quantize_base and model_release_fp32, where the
 * fp32 originals are kept for an adapter init that needs them (LoftQ); every product already
 * reads the quantized ones. After the release params holds only the fp32 tensors, and
 * model_weight of a linear layer is NULL. A quantized base is frozen: it has no gradient buffer.
 *
 * Every linear layer calls into the attached adapter (if any) right after its base product; the
 * model never asks which method the adapter is.
 */
#ifndef LL_MODEL_H
#define LL_MODEL_H

#include "core.h"
#include "quant.h"

#include <stddef.h>

enum { MOD_Q, MOD_K, MOD_V, MOD_O, MOD_GATE, MOD_UP, MOD_DOWN, MOD_COUNT };

typedef struct {
    int V, C, L, NH, NKV, HS, F;
    int max_T;        /* max_position_embeddings */
    float eps;        /* rms_norm_eps */
    float rope_theta;
    float init_range; /* initializer_range: std of the normal init of linear weights */
    int tied;         /* tie_word_embeddings */
    int n_labels;     /* 0: causal LM; > 0: sequence classification with a `score` head */
    int bos_id, eos_id, pad_id;
    int act;          /* hidden_act: an Activation (ops.h); 0 is silu */
    int attn_bias;    /* attention_bias: q/k/v/o_proj have a .bias (out) */
    int mlp_bias;     /* mlp_bias: gate/up/down_proj have a .bias (out) */
} ModelConfig;

typedef struct {
    size_t ln1, ln2, w[MOD_COUNT];
    size_t b[MOD_COUNT]; /* the linear layer's bias, SIZE_MAX when it has none */
} LayerOffsets;

/* One batch. LM: targets[B*T] are the next-token ids already shifted (position t predicts
 * targets[t]); a negative target is ignored (HF's -100). Classification: labels[B] and pool[B], the
 * index of each row's last non-pad token; targets is NULL. */
typedef struct {
    int B, T;
    int *ids;
    int *targets;
    int *labels;
    int *pool;
} Batch;

struct Adapter;

typedef struct {
    /* saved for backward, per layer l at [l * size] */
    float *res;   /* (L+1) x N x C: residual stream entering each layer, and leaving the last */
    float *x2;    /* L x N x C: residual after attention */
    float *ln1, *ln2;     /* L x N x C */
    float *rstd1, *rstd2; /* L x N */
    float *q;     /* L x N x NH*HS, after RoPE */
    float *k, *v; /* L x N x NKV*HS (k after RoPE) */
    float *att;   /* L x N x NH*HS: attention output before o_proj */
    float *probs; /* L x B x NH x T x T */
    float *g, *u, *s; /* L x N x F: gate, up, SiLU(gate)*up */
    float *lnf, *rstdf; /* N x C, N */
    float *logits;      /* LM: N x V (becomes dlogits in backward); CLS: B x n_labels */
    float *losses, *lse; /* N (LM) or B (CLS) */
    float *pooled;      /* CLS: B x C */
    /* backward scratch (training only), reused by every layer */
    float *dres, *dln, *datt, *dq, *dk, *dv, *dg, *du, *ds, *attn_scratch, *dpooled;
} ModelActs;

typedef struct Model {
    ModelConfig cfg;
    int B, T;          /* activation capacity */
    int training;      /* backward scratch exists */
    float *params;     /* base weights, HF layout */
    float *grads;      /* same layout; NULL when the base is frozen */
    size_t n_params;
    size_t off_embed, off_lnf, off_lm;
    LayerOffsets *lay;
    float *head, *head_grad; /* score [n_labels, C]; NULL for causal LM */
    size_t n_head;
    float *rope_cos, *rope_sin;
    float *act_mem;
    size_t n_act;
    ModelActs a;
    struct Adapter *adapter; /* the active adapter, or NULL; switching is a pointer swap */
    /* bf16 base products (model_set_bf16): every base linear weight and the LM head packed twice
     * into bf16 panels, for y = x·Wᵀ (pk_fwd) and dx = dy·W (pk_bwd); index l*MOD_COUNT + mod, the
     * LM head at L*MOD_COUNT. The packs follow params lazily: whoever writes params calls
     * model_base_changed, and the next forward repacks. */
    int bf16;
    uint16_t *packed;
    uint16_t *bf16_scratch;  /* the packed x of a weight gradient (full fine-tuning in bf16) */
    const float *bf16_scratch_of; /* the x packed there in this backward (NULL: none yet) */
    size_t *pk_fwd, *pk_bwd;
    uint64_t base_version, packed_version;
    int last_B, last_T;      /* shape of the last forward, for backward */
    int n_counted;           /* rows counted in the last loss */
    /* params_mapped: params points into [map, map + map_len), a MAP_PRIVATE file mapping the model
     * owns (model_free munmaps it); 0: params is malloc'd (model_free frees it). */
    int params_mapped;
    void *map;
    size_t map_len;
    /* quantized base (QUANT_NONE: none) */
    QuantFormat quant;
    int double_quant;
    QuantTensor *qw;        /* L * MOD_COUNT tensors */
    float qmap[256];        /* the dynamic map of the double quantization, shared by qw */
    int linear_released;    /* params no longer holds the linear weights (model_release_fp32) */
    size_t n_params_held;   /* floats in params (n_params until the release) */
    float *q_scratch;       /* fp32 products: one chunk of dequantized rows */
    uint16_t *qb_scratch;   /* bf16 products: panel groups, qb_slots threads */
    int qb_slots;
} Model;

typedef struct {
    int B, T;          /* largest batch the model will see */
    int training;      /* allocate backward scratch */
    int train_base;    /* allocate gradients for the base weights (full fine-tuning, pretraining) */
} ModelOptions;

const char *model_module_name(int mod);   /* "q_proj", ... */
int model_module_from_name(const char *name); /* -1 if unknown */
void model_module_dims(const ModelConfig *c, int mod, int *in, int *out);

/* Checks sizes (positive, heads divide, HS even, ...); fills err naming the bad key. */
LLStatus model_config_validate(const ModelConfig *c, LLError *err);
size_t model_param_count(const ModelConfig *c);        /* base weights, without the score head */
/* Bytes model_init would allocate (weights, gradients, activations, scratch): checked before any
 * allocation so that a model that does not fit is refused with the estimate. */
double model_memory_estimate(const ModelConfig *c, const ModelOptions *o);

LLStatus model_init(Model *m, const ModelConfig *c, const ModelOptions *o, LLError *err);
void model_free(Model *m);
/* model_init in two steps, for base weights that may come from a file mapping (checkpoint_open).
 * model_init_unbacked is model_init without the base weight buffer: m->params is NULL (and
 * model_tensor's data pointers NULL) until exactly one of model_alloc_params (model_init's
 * zeroed buffer, model_init's layout) or model_map_params gives it one. model_free works at every
 * step. */
LLStatus model_init_unbacked(Model *m, const ModelConfig *c, const ModelOptions *o, LLError *err);
void model_alloc_params(Model *m);
/* Makes `params`, which lies inside the private file mapping [map, map + map_len), the base weight
 * buffer: tensor i (model_tensor order) starts offs[i] floats after params, and the tensors
 * must tile [params, params + n_params) exactly (asserted). The model takes the mapping over
 * (params_mapped = 1; model_free munmaps it). Writes to params (an optimizer step, PiSSA, merge)
 * go to this process's private copies of the pages written, never to the file. */
void model_map_params(Model *m, void *map, size_t map_len, float *params, const size_t *offs);
/* Normal(0, init_range) for linear weights and embeddings, 1 for norms (HF _init_weights). */
void model_init_weights(Model *m, uint64_t seed);

/* bf16 base products: the base's linear products (forward, the input gradient and, when the base is
 * trained, the weight gradient) take bf16-rounded inputs with fp32 sums (AVX512_BF16); weights,
 * gradients, optimizer state, adapters, norms, attention and the loss stay fp32. Fails with
 * LL_ERR_CONFIG on a CPU without AVX512_BF16. */
LLStatus model_set_bf16(Model *m, int on, LLError *err);
/* Call after writing m->params (optimizer step, load, merge, PiSSA): the bf16 packs are rebuilt
 * before the next forward. */
void model_base_changed(Model *m);
void model_init_head(Model *m, uint64_t seed);

/* Quantizes the linear weights of the blocks (fmt QUANT_NONE: nothing to do). The fp32 originals
 * stay in params until model_release_fp32, but from now on every product uses the quantized
 * weights. LL_ERR_CONFIG for a model with base gradients (full fine-tuning or pretraining trains
 * the base: a quantized base is frozen); LL_ERR_FORMAT for a non-finite weight (named). */
LLStatus model_quantize_base(Model *m, QuantFormat fmt, int double_quant, LLError *err);
/* Drops the fp32 linear weights of a quantized model: params is rebuilt with the other tensors
 * only (a file mapping is unmapped). No-op without quantization or when already done. */
void model_release_fp32(Model *m);
/* Back to an fp32 base whose linear weights are dequant(Q) (what the model computed with): for
 * merge and for saving. The quantized tensors are freed. */
void model_dequantize_base(Model *m);
/* Bytes the linear weights of the blocks occupy as held: quantized codes and scales (plus the
 * shared map), or fp32. */
size_t model_linear_bytes(const Model *m);
/* The quantized weight of a linear layer, NULL when the base is not quantized. */
const QuantTensor *model_quant_weight(const Model *m, int layer, int mod);
float *model_weight(Model *m, int layer, int mod);     /* W (out, in) of a linear layer; NULL once released */
float *model_weight_grad(Model *m, int layer, int mod); /* NULL when frozen */
int model_has_bias(const ModelConfig *c, int mod);     /* attention_bias for q..o, mlp_bias for gate..down */
float *model_bias(Model *m, int layer, int mod);       /* b (out) of a linear layer; NULL when it has none */
/* The tensor table in HF names (score excluded; a tied LM head is the embedding, not a tensor of
 * its own): tensor i's name, shape (a vector has ndim 1 and shape[1] = 1), element count and data
 * (NULL before the model has a weight buffer). */
typedef struct {
    char name[128];
    int ndim;
    int64_t shape[2];
    size_t numel;
    float *data;
} ModelTensor;
int model_n_tensors(const Model *m);
void model_tensor(const Model *m, int i, ModelTensor *t);
/* The same table from a config alone (data NULL), for checking a file before any model exists. */
int model_config_n_tensors(const ModelConfig *c);
void model_config_tensor(const ModelConfig *c, int i, ModelTensor *t);

/* Forward over a batch (B <= capacity, T <= capacity). Returns the mean cross-entropy over counted
 * rows (NaN when none counted). With train set, adapters apply dropout. */
float model_forward(Model *m, const Batch *b, int train);
/* Backward of dloss * (last forward's mean loss): accumulates into base/head/adapter gradients. */
void model_backward(Model *m, const Batch *b, float dloss);
void model_zero_grad(Model *m); /* base and head gradients */
/* Logits of the last forward: LM row (b, t) of length V, or CLS row b of length n_labels. */
const float *model_logits(const Model *m, int b, int t);

#endif
