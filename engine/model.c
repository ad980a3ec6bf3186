/* model: see model.h. */
#define _POSIX_C_SOURCE 200809L /* munmap */
#include "model.h"

#include "adapter.h"
#include "ops.h"
#include "rng.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const char *const module_names[MOD_COUNT] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};

const char *model_module_name(int mod) {
    LL_ASSERT(mod >= 0 && mod < MOD_COUNT);
    return module_names[mod];
}

int model_module_from_name(const char *name) {
    for (int i = 0; i < MOD_COUNT; i++)
        if (strcmp(name, module_names[i]) == 0) return i;
    return -1;
}

void model_module_dims(const ModelConfig *c, int mod, int *in, int *out) {
    int qd = c->NH * c->HS, kd = c->NKV * c->HS;
    switch (mod) {
    case MOD_Q: *in = c->C, *out = qd; break;
    case MOD_K:
    case MOD_V: *in = c->C, *out = kd; break;
    case MOD_O: *in = qd, *out = c->C; break;
    case MOD_GATE:
    case MOD_UP: *in = c->C, *out = c->F; break;
    case MOD_DOWN: *in = c->F, *out = c->C; break;
    default: LL_ASSERT(0);
    }
}

LLStatus model_config_validate(const ModelConfig *c, LLError *err) {
    struct { const char *key; int v; int lo, hi; } ints[] = {
        {"vocab_size", c->V, 2, 1 << 20},          {"hidden_size", c->C, 1, 1 << 16},
        {"num_hidden_layers", c->L, 1, 1024},      {"num_attention_heads", c->NH, 1, 1024},
        {"num_key_value_heads", c->NKV, 1, 1024},  {"head_dim", c->HS, 2, 4096},
        {"intermediate_size", c->F, 1, 1 << 18},   {"max_position_embeddings", c->max_T, 1, 1 << 20},
        {"num_labels", c->n_labels, 0, 1 << 16},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].v < ints[i].lo || ints[i].v > ints[i].hi)
            return ll_err(err, LL_ERR_CONFIG, "model key '%s' = %d is outside [%d, %d]", ints[i].key,
                          ints[i].v, ints[i].lo, ints[i].hi);
    if (c->NH % c->NKV != 0)
        return ll_err(err, LL_ERR_CONFIG,
                      "num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", c->NH, c->NKV);
    if (c->act < 0 || c->act >= ACT_COUNT) return ll_err(err, LL_ERR_CONFIG, "hidden_act %d is not an activation", c->act);
    if (c->HS % 2 != 0) return ll_err(err, LL_ERR_CONFIG, "head_dim (%d) must be even for RoPE", c->HS);
    if (!(c->eps > 0.0f) || !(c->rope_theta > 1.0f) || !(c->init_range > 0.0f))
        return ll_err(err, LL_ERR_CONFIG, "rms_norm_eps, rope_theta and initializer_range must be positive");
    int ids[3] = {c->bos_id, c->eos_id, c->pad_id};
    for (int i = 0; i < 3; i++)
        if (ids[i] < 0 || ids[i] >= c->V)
            return ll_err(err, LL_ERR_CONFIG, "special token id %d is outside the vocabulary (%d)", ids[i], c->V);
    return LL_OK;
}

int model_has_bias(const ModelConfig *c, int mod) { return mod <= MOD_O ? c->attn_bias != 0 : c->mlp_bias != 0; }

static int n_biased_mods(const ModelConfig *c) { return (c->attn_bias ? 4 : 0) + (c->mlp_bias ? 3 : 0); }

/* the k-th module with a bias (k < n_biased_mods) */
static int biased_mod(const ModelConfig *c, int k) {
    for (int mod = 0; mod < MOD_COUNT; mod++)
        if (model_has_bias(c, mod) && k-- == 0) return mod;
    LL_ASSERT(0);
    return -1;
}

static size_t layer_size(const ModelConfig *c) {
    size_t n = 2 * (size_t)c->C;
    for (int mod = 0; mod < MOD_COUNT; mod++) {
        int in, out;
        model_module_dims(c, mod, &in, &out);
        n += (size_t)in * out + (model_has_bias(c, mod) ? (size_t)out : 0);
    }
    return n;
}

size_t model_param_count(const ModelConfig *c) {
    size_t n = (size_t)c->V * c->C + (size_t)c->L * layer_size(c) + c->C;
    if (!c->tied) n += (size_t)c->V * c->C;
    return n;
}

/* Activation floats for capacity (B, T); one function so that the estimate and the allocation
 * cannot disagree. With `slices` non-NULL, also carves the buffer. */
static size_t act_layout(const ModelConfig *c, int B, int T, int training, float *base, ModelActs *a) {
    size_t N = (size_t)B * T, C = c->C, L = c->L, QD = (size_t)c->NH * c->HS,
           KD = (size_t)c->NKV * c->HS, F = c->F;
    size_t logits = c->n_labels > 0 ? (size_t)B * c->n_labels : N * c->V;
    size_t losses = c->n_labels > 0 ? (size_t)B : N;
    size_t off = 0;
#define CARVE(field, n)                                                                      \
    do {                                                                                     \
        if (base) a->field = base + off;                                                     \
        off += ((size_t)(n) + 15) & ~(size_t)15; /* keep every slice 64-byte aligned */      \
    } while (0)
    CARVE(res, (L + 1) * N * C);
    CARVE(x2, L * N * C);
    CARVE(ln1, L * N * C);
    CARVE(ln2, L * N * C);
    CARVE(rstd1, L * N);
    CARVE(rstd2, L * N);
    CARVE(q, L * N * QD);
    CARVE(k, L * N * KD);
    CARVE(v, L * N * KD);
    CARVE(att, L * N * QD);
    CARVE(probs, L * (size_t)B * c->NH * T * T);
    CARVE(g, L * N * F);
    CARVE(u, L * N * F);
    CARVE(s, L * N * F);
    CARVE(lnf, N * C);
    CARVE(rstdf, N);
    CARVE(logits, logits);
    CARVE(losses, losses);
    CARVE(lse, losses);
    CARVE(pooled, (size_t)B * C);
    CARVE(attn_scratch, (size_t)omp_get_max_threads() * attention_scratch_floats(T, c->HS));
    if (training) {
        size_t wide = QD > C ? QD : C;
        CARVE(dres, N * C);
        CARVE(dln, N * wide);
        CARVE(datt, N * QD);
        CARVE(dq, N * QD);
        CARVE(dk, N * KD);
        CARVE(dv, N * KD);
        CARVE(dg, N * F);
        CARVE(du, N * F);
        CARVE(ds, N * F);
        CARVE(dpooled, (size_t)B * C);
    }
#undef CARVE
    return off;
}

double model_memory_estimate(const ModelConfig *c, const ModelOptions *o) {
    ModelActs dummy;
    double floats = (double)model_param_count(c) * (o->train_base ? 4.0 : 1.0); /* w, g, m, v */
    floats += (double)act_layout(c, o->B, o->T, o->training, NULL, &dummy);
    floats += (double)c->max_T * c->HS;
    return floats * sizeof(float);
}

LLStatus model_init(Model *m, const ModelConfig *c, const ModelOptions *o, LLError *err) {
    LLStatus st = model_init_unbacked(m, c, o, err);
    if (st) return st;
    model_alloc_params(m);
    return LL_OK;
}

void model_alloc_params(Model *m) {
    LL_ASSERT(m->lay && !m->params);
    m->params = ll_alloc_floats(m->n_params);
}

LLStatus model_init_unbacked(Model *m, const ModelConfig *c, const ModelOptions *o, LLError *err) {
    memset(m, 0, sizeof *m);
    LLStatus st = model_config_validate(c, err);
    if (st) return st;
    if (o->B < 1 || o->T < 1 || o->T > c->max_T)
        return ll_err(err, LL_ERR_CONFIG, "batch %d x %d: the sequence length must be in [1, %d]", o->B,
                      o->T, c->max_T);
    m->cfg = *c;
    m->B = o->B;
    m->T = o->T;
    m->training = o->training;
    m->lay = ll_calloc((size_t)c->L, sizeof(LayerOffsets));
    size_t off = 0;
    m->off_embed = off;
    off += (size_t)c->V * c->C;
    for (int l = 0; l < c->L; l++) {
        LayerOffsets *lo = &m->lay[l];
        /* HF order within a layer: input_layernorm, self_attn.{q,k,v,o}, post_attention_layernorm, mlp */
        lo->ln1 = off;
        off += c->C;
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            if (mod == MOD_GATE) {
                lo->ln2 = off;
                off += c->C;
            }
            int in, out;
            model_module_dims(c, mod, &in, &out);
            lo->w[mod] = off;
            off += (size_t)in * out;
        }
    }
    m->off_lnf = off;
    off += c->C;
    m->off_lm = c->tied ? m->off_embed : off;
    if (!c->tied) off += (size_t)c->V * c->C;
    for (int l = 0; l < c->L; l++) /* the biases last, as in model_tensor */
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            int in, out;
            model_module_dims(c, mod, &in, &out);
            m->lay[l].b[mod] = model_has_bias(c, mod) ? off : SIZE_MAX;
            off += model_has_bias(c, mod) ? (size_t)out : 0;
        }
    LL_ASSERT(off == model_param_count(c));
    m->n_params = m->n_params_held = off;
    if (o->train_base) m->grads = ll_alloc_floats(off);
    if (c->n_labels > 0) {
        m->n_head = (size_t)c->n_labels * c->C;
        m->head = ll_alloc_floats(m->n_head);
        m->head_grad = ll_alloc_floats(m->n_head);
    }
    int half = c->HS / 2;
    m->rope_cos = ll_alloc_floats((size_t)c->max_T * half);
    m->rope_sin = ll_alloc_floats((size_t)c->max_T * half);
    rope_tables(m->rope_cos, m->rope_sin, c->max_T, c->HS, c->rope_theta);
    m->n_act = act_layout(c, o->B, o->T, o->training, NULL, &m->a);
    m->act_mem = ll_alloc_floats(m->n_act);
    act_layout(c, o->B, o->T, o->training, m->act_mem, &m->a);
    return LL_OK;
}

void model_free(Model *m) {
    ll_free(m->lay);
    if (m->params_mapped) munmap(m->map, m->map_len);
    else ll_free(m->params);
    ll_free(m->grads);
    ll_free(m->head);
    ll_free(m->head_grad);
    ll_free(m->rope_cos);
    ll_free(m->rope_sin);
    ll_free(m->act_mem);
    ll_free(m->packed);
    ll_free(m->bf16_scratch);
    ll_free(m->pk_fwd);
    ll_free(m->pk_bwd);
    for (int i = 0; m->qw && i < m->cfg.L * MOD_COUNT; i++) quant_tensor_free(&m->qw[i]);
    ll_free(m->qw);
    ll_free(m->q_scratch);
    ll_free(m->qb_scratch);
    memset(m, 0, sizeof *m);
}

void model_init_weights(Model *m, uint64_t seed) {
    const ModelConfig *c = &m->cfg;
    Rng r;
    rng_seed(&r, rng_derive(seed, 1));
    rng_fill_normal(&r, m->params + m->off_embed, (size_t)c->V * c->C, c->init_range);
    for (int l = 0; l < c->L; l++) {
        for (int i = 0; i < c->C; i++) m->params[m->lay[l].ln1 + i] = m->params[m->lay[l].ln2 + i] = 1.0f;
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            int in, out;
            model_module_dims(c, mod, &in, &out);
            rng_fill_normal(&r, m->params + m->lay[l].w[mod], (size_t)in * out, c->init_range);
        }
    }
    for (int i = 0; i < c->C; i++) m->params[m->off_lnf + i] = 1.0f;
    if (!c->tied) rng_fill_normal(&r, m->params + m->off_lm, (size_t)c->V * c->C, c->init_range);
    for (int l = 0; l < c->L; l++) /* HF's _init_weights zeroes Linear biases */
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            int in, out;
            model_module_dims(c, mod, &in, &out);
            if (model_has_bias(c, mod)) memset(m->params + m->lay[l].b[mod], 0, sizeof(float) * (size_t)out);
        }
    model_init_head(m, seed);
    model_base_changed(m);
}

void model_init_head(Model *m, uint64_t seed) {
    if (!m->head) return;
    Rng r;
    rng_seed(&r, rng_derive(seed, 2));
    rng_fill_normal(&r, m->head, m->n_head, m->cfg.init_range);
}

float *model_weight(Model *m, int layer, int mod) {
    return m->linear_released ? NULL : m->params + m->lay[layer].w[mod];
}

const QuantTensor *model_quant_weight(const Model *m, int layer, int mod) {
    return m->quant ? &m->qw[layer * MOD_COUNT + mod] : NULL;
}

float *model_weight_grad(Model *m, int layer, int mod) {
    return m->grads ? m->grads + m->lay[layer].w[mod] : NULL;
}

float *model_bias(Model *m, int layer, int mod) {
    return m->lay[layer].b[mod] == SIZE_MAX ? NULL : m->params + m->lay[layer].b[mod];
}

static float *bias_grad(Model *m, int layer, int mod) {
    return m->grads && m->lay[layer].b[mod] != SIZE_MAX ? m->grads + m->lay[layer].b[mod] : NULL;
}

int model_n_tensors(const Model *m) { return model_config_n_tensors(&m->cfg); }

/* The offset field of tensor i (model_tensor order): the one table both the reader
 * (model_tensor) and the writer (model_map_params) of the layout go through. */
static const size_t *tensor_offset(const Model *m, int i) {
    const int per = 2 + MOD_COUNT, n_plain = 1 + m->cfg.L * per + 1 + (m->cfg.tied ? 0 : 1);
    LL_ASSERT(i >= 0 && i < model_n_tensors(m));
    if (i >= n_plain) { /* a bias: layer by layer, the biased modules in module order */
        int nb = n_biased_mods(&m->cfg);
        return &m->lay[(i - n_plain) / nb].b[biased_mod(&m->cfg, (i - n_plain) % nb)];
    }
    if (i == 0) return &m->off_embed;
    i -= 1;
    if (i < m->cfg.L * per) {
        const LayerOffsets *lo = &m->lay[i / per];
        int j = i % per;
        return j == 0 ? &lo->ln1 : j == 1 ? &lo->ln2 : &lo->w[j - 2];
    }
    return i == m->cfg.L * per ? &m->off_lnf : &m->off_lm;
}

static int cmp_span(const void *pa, const void *pb) {
    const size_t *a = pa, *b = pb;
    return a[0] < b[0] ? -1 : a[0] > b[0];
}

void model_map_params(Model *m, void *map, size_t map_len, float *params, const size_t *offs) {
    LL_ASSERT(m->lay && !m->params && map && params && offs);
    LL_ASSERT((char *)params >= (char *)map && (size_t)((char *)params - (char *)map) <= map_len &&
              m->n_params <= (map_len - (size_t)((char *)params - (char *)map)) / sizeof(float));
    /* The tensors must tile [0, n_params): sorted by offset, each starts where the previous ends. */
    int n = model_n_tensors(m);
    size_t *span = ll_malloc((size_t)n, 2 * sizeof(size_t));
    for (int i = 0; i < n; i++) {
        ModelTensor t;
        model_tensor(m, i, &t);
        span[2 * i] = offs[i], span[2 * i + 1] = t.numel;
    }
    qsort(span, (size_t)n, 2 * sizeof(size_t), cmp_span);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        LL_ASSERT(span[2 * i] == at);
        at += span[2 * i + 1];
    }
    LL_ASSERT(at == m->n_params);
    ll_free(span);
    for (int i = 0; i < n; i++) *(size_t *)tensor_offset(m, i) = offs[i]; /* m is not const */
    if (m->cfg.tied) m->off_lm = m->off_embed;
    m->params = params;
    m->params_mapped = 1;
    m->map = map;
    m->map_len = map_len;
    model_base_changed(m);
}

static int n_plain_tensors(const ModelConfig *c) { return 1 + c->L * (2 + MOD_COUNT) + 1 + (c->tied ? 0 : 1); }

int model_config_n_tensors(const ModelConfig *c) { return n_plain_tensors(c) + c->L * n_biased_mods(c); }

void model_tensor(const Model *m, int i, ModelTensor *t) {
    model_config_tensor(&m->cfg, i, t);
    size_t off = *tensor_offset(m, i);
    t->data = m->params && off != SIZE_MAX ? m->params + off : NULL; /* SIZE_MAX: a released linear weight */
}

void model_config_tensor(const ModelConfig *c, int i, ModelTensor *t) {
    LL_ASSERT(i >= 0 && i < model_config_n_tensors(c));
    const int per = 2 + MOD_COUNT, j = (i - 1) % per;
    t->data = NULL;
    if (i >= n_plain_tensors(c)) {
        int nb = n_biased_mods(c), l = (i - n_plain_tensors(c)) / nb, mod = biased_mod(c, (i - n_plain_tensors(c)) % nb);
        int in, out;
        model_module_dims(c, mod, &in, &out);
        snprintf(t->name, sizeof t->name, "model.layers.%d.%s.%s.bias", l, mod <= MOD_O ? "self_attn" : "mlp",
                 module_names[mod]);
        t->ndim = 1, t->shape[0] = out, t->shape[1] = 1, t->numel = (size_t)out;
        return;
    }
    int ndim = 2, rows = c->V, cols = c->C; /* the embedding and the LM head */
    if (i == 0) {
        snprintf(t->name, sizeof t->name, "model.embed_tokens.weight");
    } else if (i - 1 < c->L * per && j < 2) {
        snprintf(t->name, sizeof t->name, "model.layers.%d.%s.weight", (i - 1) / per,
                 j == 0 ? "input_layernorm" : "post_attention_layernorm");
        ndim = 1, rows = c->C, cols = 1;
    } else if (i - 1 < c->L * per) {
        model_module_dims(c, j - 2, &cols, &rows);
        snprintf(t->name, sizeof t->name, "model.layers.%d.%s.%s.weight", (i - 1) / per,
                 j - 2 <= MOD_O ? "self_attn" : "mlp", module_names[j - 2]);
    } else if (i - 1 == c->L * per) {
        snprintf(t->name, sizeof t->name, "model.norm.weight");
        ndim = 1, rows = c->C, cols = 1;
    } else {
        snprintf(t->name, sizeof t->name, "lm_head.weight");
    }
    t->ndim = ndim, t->shape[0] = rows, t->shape[1] = cols;
    t->numel = (size_t)rows * (size_t)cols;
}

/* ---- bf16 packs ------------------------------------------------------------------------------ */

static const float *lm_weight(const Model *m) { return m->params + m->off_lm; }

LLStatus model_set_bf16(Model *m, int on, LLError *err) {
    if (!on) {
        m->bf16 = 0;
        return LL_OK;
    }
    if (!bf16_supported())
        return ll_err(err, LL_ERR_CONFIG,
                      "train.precision bf16 needs a CPU with AVX512_BF16 (and a build with -march "
                      "that has it); this one has none: use fp32");
    const ModelConfig *c = &m->cfg;
    int n = c->L * MOD_COUNT + 1;
    if (!m->packed) {
        m->pk_fwd = ll_malloc((size_t)n, sizeof(size_t));
        m->pk_bwd = ll_malloc((size_t)n, sizeof(size_t));
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            int in = c->C, out = c->V;
            if (i < c->L * MOD_COUNT) model_module_dims(c, i % MOD_COUNT, &in, &out);
            if (i < c->L * MOD_COUNT && m->quant) { /* quantized: its panels are filled per product */
                m->pk_fwd[i] = m->pk_bwd[i] = 0;
                continue;
            }
            m->pk_fwd[i] = total, total += bf16_panel_elems(in, out);
            m->pk_bwd[i] = total, total += bf16_panel_elems(out, in);
        }
        m->packed = ll_malloc(total, sizeof(uint16_t));
        if (m->grads) /* x of the widest weight gradient: the MLP's down_proj input, or C wide */
            m->bf16_scratch = ll_malloc(bf16_panel_elems(m->B * m->T, c->F > c->C ? c->F : c->C), sizeof(uint16_t));
    }
    m->bf16 = 1;
    m->packed_version = m->base_version - 1; /* stale */
    return LL_OK;
}

void model_base_changed(Model *m) { m->base_version++; }

static void repack(Model *m) {
    const ModelConfig *c = &m->cfg;
    for (int i = m->quant ? c->L * MOD_COUNT : 0; i <= c->L * MOD_COUNT; i++) {
        int in = c->C, out = c->V;
        const float *W = lm_weight(m);
        if (i < c->L * MOD_COUNT) {
            model_module_dims(c, i % MOD_COUNT, &in, &out);
            W = m->params + m->lay[i / MOD_COUNT].w[i % MOD_COUNT];
        }
        bf16_pack_panels(m->packed + m->pk_fwd[i], W, in, out, 1);
        bf16_pack_panels(m->packed + m->pk_bwd[i], W, out, in, 0);
    }
    m->packed_version = m->base_version;
}

/* The base product y = x·Wᵀ of weight i (l*MOD_COUNT + mod, or the LM head). */
static void base_forward(const Model *m, int i, const float *W, const float *x, float *y, int N, int in, int out) {
    if (m->quant && i < m->cfg.L * MOD_COUNT) {
        if (m->bf16) gemm_bf16_q(y, out, x, in, &m->qw[i], 1, N, out, in, 0, m->qb_scratch, m->qb_slots);
        else matmul_forward_q(y, x, &m->qw[i], N, m->q_scratch);
        return;
    }
    if (m->bf16) gemm_bf16(y, out, x, in, m->packed + m->pk_fwd[i], N, out, in, 0);
    else matmul_forward(y, x, W, N, in, out);
}

static void base_backward(Model *m, int i, const float *W, float *dW, const float *x, const float *dy,
                          float *dx, int N, int in, int out, int acc) {
    if (m->quant && i < m->cfg.L * MOD_COUNT) {
        LL_ASSERT(!dW); /* a quantized base is frozen */
        if (!dx) return;
        if (m->bf16) gemm_bf16_q(dx, in, dy, out, &m->qw[i], 0, N, in, out, acc, m->qb_scratch, m->qb_slots);
        else matmul_backward_q(dx, dy, &m->qw[i], N, acc, m->q_scratch);
        return;
    }
    if (m->bf16) {
        if (dx) gemm_bf16(dx, in, dy, out, m->packed + m->pk_bwd[i], N, in, out, acc);
        if (dW) { /* dW += dyᵀ·x; q, k, v (gate, up) come one after another with the same x */
            if (m->bf16_scratch_of != x) bf16_pack_panels(m->bf16_scratch, x, N, in, 0);
            m->bf16_scratch_of = x;
            gemm_bf16_tn(dW, in, dy, out, m->bf16_scratch, out, in, N, 1);
        }
    } else {
        matmul_backward(dx, dW, dy, x, W, N, in, out, acc);
    }
}

/* ---- quantized base ----------------------------------------------------------------------- */

/* model_tensor order: the embedding, then per layer ln1, ln2, q .. down; and back to l*MOD_COUNT + mod */
static int linear_tensor_index(int l, int mod) { return 1 + l * (2 + MOD_COUNT) + 2 + mod; }
static int linear_of_tensor(int i) { return (i - 1) / (2 + MOD_COUNT) * MOD_COUNT + (i - 1) % (2 + MOD_COUNT) - 2; }

static void free_packs(Model *m) {
    ll_free(m->packed);
    ll_free(m->pk_fwd);
    ll_free(m->pk_bwd);
    ll_free(m->bf16_scratch);
    m->packed = m->bf16_scratch = NULL;
    m->pk_fwd = m->pk_bwd = NULL;
    m->bf16_scratch_of = NULL;
}

LLStatus model_quantize_base(Model *m, QuantFormat fmt, int double_quant, LLError *err) {
    const ModelConfig *c = &m->cfg;
    LL_ASSERT(m->params && !m->quant && !m->linear_released);
    if (fmt == QUANT_NONE) return LL_OK;
    if (m->grads)
        return ll_err(err, LL_ERR_CONFIG,
                      "a %s base is frozen: full fine-tuning and pretraining train the base weights, which a quantized "
                      "base cannot (use an adapter method, or train.base_quant none)", quant_format_name(fmt));
    const int n = c->L * MOD_COUNT;
    quant_dynamic_map(m->qmap);
    QuantTensor *qw = ll_calloc((size_t)n, sizeof(QuantTensor));
    for (int i = 0; i < n; i++) {
        ModelTensor t;
        model_tensor(m, linear_tensor_index(i / MOD_COUNT, i % MOD_COUNT), &t);
        LLStatus st = quant_tensor_quantize(&qw[i], fmt, double_quant, m->qmap, t.data, (int)t.shape[0],
                                            (int)t.shape[1], t.name, err);
        if (st) {
            for (int j = 0; j < i; j++) quant_tensor_free(&qw[j]);
            ll_free(qw);
            return st;
        }
    }
    m->qw = qw;
    m->quant = fmt;
    m->double_quant = fmt == QUANT_NF4 && double_quant;
    /* scratch for the widest product: K (bf16) and in (fp32) range over C, NH*HS, NKV*HS and F */
    int wide = c->C;
    const int dims[3] = {c->NH * c->HS, c->NKV * c->HS, c->F};
    for (int k = 0; k < 3; k++) wide = dims[k] > wide ? dims[k] : wide;
    size_t qf = 0;
    for (int mod = 0; mod < MOD_COUNT; mod++) {
        int in, out;
        model_module_dims(c, mod, &in, &out);
        qf = matmul_q_scratch_floats(in) > qf ? matmul_q_scratch_floats(in) : qf;
    }
    m->q_scratch = ll_alloc_floats(qf);
    if (bf16_supported()) {
        m->qb_slots = omp_get_max_threads();
        m->qb_scratch = (uint16_t *)ll_alloc_floats(((size_t)m->qb_slots * gemm_bf16_q_scratch(wide) + 1) / 2);
    }
    if (m->packed) { /* the bf16 packs of the linear weights go; the LM head's are rebuilt */
        free_packs(m);
        if (m->bf16) {
            LLStatus st = model_set_bf16(m, 1, err);
            LL_ASSERT(st == LL_OK); /* it was on before */
        }
    }
    model_base_changed(m);
    return LL_OK;
}

/* 1 for the tensors model_quantize_base quantizes: the 2-D tensors of the layers (model_tensor order). */
static int is_linear_tensor(const Model *m, int i) {
    return i > 0 && i < 1 + m->cfg.L * (2 + MOD_COUNT) && (i - 1) % (2 + MOD_COUNT) >= 2;
}

void model_release_fp32(Model *m) {
    if (!m->quant || m->linear_released) return;
    const int nt = model_n_tensors(m);
    size_t keep = m->n_params;
    for (int i = 0; i < nt; i++)
        if (is_linear_tensor(m, i)) keep -= m->qw[linear_of_tensor(i)].n;
    float *np = ll_alloc_floats(keep);
    size_t at = 0;
    for (int i = 0; i < nt; i++) {
        ModelTensor t;
        model_tensor(m, i, &t);
        size_t *off = (size_t *)tensor_offset(m, i); /* m is not const */
        if (is_linear_tensor(m, i)) {
            *off = SIZE_MAX;
            continue;
        }
        memcpy(np + at, t.data, t.numel * sizeof(float));
        *off = at;
        at += t.numel;
    }
    LL_ASSERT(at == keep);
    if (m->cfg.tied) m->off_lm = m->off_embed;
    if (m->params_mapped) munmap(m->map, m->map_len);
    else ll_free(m->params);
    m->params_mapped = 0, m->map = NULL, m->map_len = 0;
    m->params = np;
    m->n_params_held = keep;
    m->linear_released = 1;
    m->bf16_scratch_of = NULL;
    model_base_changed(m);
}

void model_dequantize_base(Model *m) {
    if (!m->quant) return;
    const ModelConfig *c = &m->cfg;
    const int nt = model_n_tensors(m);
    float *np = ll_alloc_floats(m->n_params);
    size_t *offs = ll_malloc((size_t)nt, sizeof(size_t)), at = 0;
    for (int i = 0; i < nt; i++) { /* model_init's layout: model_tensor order */
        ModelTensor t;
        model_tensor(m, i, &t);
        if (is_linear_tensor(m, i)) {
            const QuantTensor *q = &m->qw[linear_of_tensor(i)];
            quant_dequant(q, 0, q->n, np + at);
        } else {
            memcpy(np + at, t.data, t.numel * sizeof(float));
        }
        offs[i] = at;
        at += t.numel;
    }
    LL_ASSERT(at == m->n_params);
    for (int i = 0; i < nt; i++) *(size_t *)tensor_offset(m, i) = offs[i];
    if (c->tied) m->off_lm = m->off_embed;
    ll_free(offs);
    if (m->params_mapped) munmap(m->map, m->map_len);
    else ll_free(m->params);
    m->params_mapped = 0, m->map = NULL, m->map_len = 0;
    m->params = np;
    m->n_params_held = m->n_params;
    for (int i = 0; i < c->L * MOD_COUNT; i++) quant_tensor_free(&m->qw[i]);
    ll_free(m->qw);
    ll_free(m->q_scratch);
    ll_free(m->qb_scratch);
    m->qw = NULL, m->q_scratch = NULL, m->qb_scratch = NULL, m->qb_slots = 0;
    m->quant = QUANT_NONE, m->double_quant = 0, m->linear_released = 0;
    if (m->packed) {
        free_packs(m);
        if (m->bf16) {
            LLStatus st = model_set_bf16(m, 1, NULL);
            LL_ASSERT(st == LL_OK);
        }
    }
    model_base_changed(m);
}

size_t model_linear_bytes(const Model *m) {
    size_t bytes = 0;
    for (int i = 0; i < m->cfg.L * MOD_COUNT; i++) {
        int in, out;
        model_module_dims(&m->cfg, i % MOD_COUNT, &in, &out);
        bytes += m->quant ? quant_tensor_bytes(&m->qw[i]) : (size_t)in * out * sizeof(float);
    }
    return bytes + (m->double_quant ? sizeof m->qmap : 0);
}

/* ---- forward -------------------------------------------------------------------------------- */

static void linear_forward(Model *m, int l, int mod, const float *x, float *y, int N, int train) {
    int in, out;
    model_module_dims(&m->cfg, mod, &in, &out);
    base_forward(m, l * MOD_COUNT + mod, model_weight(m, l, mod), x, y, N, in, out);
    if (m->adapter) adapter_forward(m->adapter, l, mod, x, y, N, train);
    const float *bias = model_bias(m, l, mod);
    if (bias) bias_forward(y, bias, N, out);
}

float model_forward(Model *m, const Batch *b, int train) {
    const ModelConfig *c = &m->cfg;
    const int B = b->B, T = b->T, N = B * T, C = c->C, QD = c->NH * c->HS, KD = c->NKV * c->HS, F = c->F;
    LL_ASSERT(B >= 1 && B <= m->B && T >= 1 && T <= m->T);
    ModelActs *a = &m->a;
    /* Per-layer slices use the capacity strides so that a smaller batch still fits. */
    const size_t sN = (size_t)m->B * m->T;
    m->last_B = B, m->last_T = T;
    if (m->bf16 && m->packed_version != m->base_version) repack(m);
    embedding_forward(a->res, b->ids, m->params + m->off_embed, N, C);
    for (int l = 0; l < c->L; l++) {
        const LayerOffsets *lo = &m->lay[l];
        float *x = a->res + l * sN * C, *x2 = a->x2 + l * sN * C, *xo = a->res + (l + 1) * sN * C;
        float *ln1 = a->ln1 + l * sN * C, *ln2 = a->ln2 + l * sN * C;
        float *q = a->q + l * sN * QD, *k = a->k + l * sN * KD, *v = a->v + l * sN * KD;
        float *att = a->att + l * sN * QD, *probs = a->probs + (size_t)l * m->B * c->NH * m->T * m->T;
        float *g = a->g + l * sN * F, *u = a->u + l * sN * F, *s = a->s + l * sN * F;
        rmsnorm_forward(ln1, a->rstd1 + l * sN, x, m->params + lo->ln1, N, C, c->eps);
        linear_forward(m, l, MOD_Q, ln1, q, N, train);
        linear_forward(m, l, MOD_K, ln1, k, N, train);
        linear_forward(m, l, MOD_V, ln1, v, N, train);
        rope_forward(q, m->rope_cos, m->rope_sin, B, T, c->NH, c->HS);
        rope_forward(k, m->rope_cos, m->rope_sin, B, T, c->NKV, c->HS);
        attention_forward(att, probs, q, k, v, a->attn_scratch, B, T, c->NH, c->NKV, c->HS);
        linear_forward(m, l, MOD_O, att, x2, N, train); /* x2 = o, then the residual in place */
        residual_forward(x2, x2, x, (size_t)N * C);
        rmsnorm_forward(ln2, a->rstd2 + l * sN, x2, m->params + lo->ln2, N, C, c->eps);
        linear_forward(m, l, MOD_GATE, ln2, g, N, train);
        linear_forward(m, l, MOD_UP, ln2, u, N, train);
        glu_forward(s, g, u, (size_t)N * F, (Activation)c->act);
        linear_forward(m, l, MOD_DOWN, s, xo, N, train);
        residual_forward(xo, xo, x2, (size_t)N * C);
    }
    const float *hL = a->res + c->L * sN * C;
    rmsnorm_forward(a->lnf, a->rstdf, hL, m->params + m->off_lnf, N, C, c->eps);
    double total = 0.0;
    if (c->n_labels > 0) {
        for (int i = 0; i < B; i++) {
            LL_ASSERT(b->pool[i] >= 0 && b->pool[i] < T);
            memcpy(a->pooled + (size_t)i * C, a->lnf + ((size_t)i * T + b->pool[i]) * C, sizeof(float) * C);
        }
        matmul_forward(a->logits, a->pooled, m->head, B, C, c->n_labels);
        m->n_counted = crossentropy_forward(a->losses, a->lse, a->logits, b->labels, B, c->n_labels);
        for (int i = 0; i < B; i++) total += a->losses[i];
    } else {
        base_forward(m, c->L * MOD_COUNT, lm_weight(m), a->lnf, a->logits, N, C, c->V);
        m->n_counted = crossentropy_forward(a->losses, a->lse, a->logits, b->targets, N, c->V);
        for (int i = 0; i < N; i++) total += a->losses[i]; /* fixed order: thread-count independent */
    }
    return m->n_counted > 0 ? (float)(total / m->n_counted) : NAN;
}

const float *model_logits(const Model *m, int b, int t) {
    if (m->cfg.n_labels > 0) return m->a.logits + (size_t)b * m->cfg.n_labels;
    return m->a.logits + ((size_t)b * m->last_T + t) * m->cfg.V;
}

/* ---- backward ------------------------------------------------------------------------------- */

static void linear_backward(Model *m, int l, int mod, const float *x, const float *dy, float *dx, int N,
                            int acc) {
    int in, out;
    model_module_dims(&m->cfg, mod, &in, &out);
    base_backward(m, l * MOD_COUNT + mod, model_weight(m, l, mod), model_weight_grad(m, l, mod), x, dy, dx, N,
                  in, out, acc);
    float *db = bias_grad(m, l, mod);
    if (db) bias_backward(db, dy, N, out);
    if (m->adapter) adapter_backward(m->adapter, l, mod, x, dy, dx, N);
}

void model_zero_grad(Model *m) {
    if (m->grads) memset(m->grads, 0, sizeof(float) * m->n_params);
    if (m->head_grad) memset(m->head_grad, 0, sizeof(float) * m->n_head);
}

void model_backward(Model *m, const Batch *b, float dloss) {
    const ModelConfig *c = &m->cfg;
    LL_ASSERT(m->training && b->B == m->last_B && b->T == m->last_T);
    const int B = b->B, T = b->T, N = B * T, C = c->C, QD = c->NH * c->HS, KD = c->NKV * c->HS, F = c->F;
    const size_t sN = (size_t)m->B * m->T;
    ModelActs *a = &m->a;
    float *g_params = m->grads;
    float scale = m->n_counted > 0 ? dloss / (float)m->n_counted : 0.0f;
    m->bf16_scratch_of = NULL; /* the activations were rewritten by the forward */

    /* loss -> dlnf (in a->dln) */
    if (c->n_labels > 0) {
        crossentropy_backward(a->logits, a->lse, b->labels, B, c->n_labels, scale);
        matmul_backward(a->dpooled, m->head_grad, a->logits, a->pooled, m->head, B, C, c->n_labels, 0);
        memset(a->dln, 0, sizeof(float) * (size_t)N * C);
        for (int i = 0; i < B; i++)
            memcpy(a->dln + ((size_t)i * T + b->pool[i]) * C, a->dpooled + (size_t)i * C, sizeof(float) * C);
    } else {
        crossentropy_backward(a->logits, a->lse, b->targets, N, c->V, scale);
        base_backward(m, c->L * MOD_COUNT, lm_weight(m), g_params ? g_params + m->off_lm : NULL, a->lnf,
                      a->logits, a->dln, N, C, c->V, 0);
    }
    rmsnorm_backward(a->dres, g_params ? g_params + m->off_lnf : NULL, a->dln, a->res + c->L * sN * C,
                     m->params + m->off_lnf, a->rstdf, N, C, 0);

    for (int l = c->L - 1; l >= 0; l--) {
        const LayerOffsets *lo = &m->lay[l];
        float *x = a->res + l * sN * C, *x2 = a->x2 + l * sN * C;
        float *ln1 = a->ln1 + l * sN * C, *ln2 = a->ln2 + l * sN * C;
        float *q = a->q + l * sN * QD, *k = a->k + l * sN * KD, *v = a->v + l * sN * KD;
        float *att = a->att + l * sN * QD, *probs = a->probs + (size_t)l * m->B * c->NH * m->T * m->T;
        float *g = a->g + l * sN * F, *u = a->u + l * sN * F, *s = a->s + l * sN * F;
        /* MLP: dres is d(x3); down, SwiGLU, gate/up, then RMSNorm back into dres (the residual
         * path passes dres through unchanged, so norm gradients accumulate onto it). */
        linear_backward(m, l, MOD_DOWN, s, a->dres, a->ds, N, 0);
        glu_backward(a->dg, a->du, a->ds, g, u, (size_t)N * F, (Activation)c->act);
        linear_backward(m, l, MOD_GATE, ln2, a->dg, a->dln, N, 0);
        linear_backward(m, l, MOD_UP, ln2, a->du, a->dln, N, 1);
        rmsnorm_backward(a->dres, g_params ? g_params + lo->ln2 : NULL, a->dln, x2, m->params + lo->ln2,
                         a->rstd2 + l * sN, N, C, 1);
        /* attention */
        linear_backward(m, l, MOD_O, att, a->dres, a->datt, N, 0);
        attention_backward(a->dq, a->dk, a->dv, a->datt, probs, q, k, v, a->attn_scratch, B, T, c->NH,
                           c->NKV, c->HS);
        rope_backward(a->dq, m->rope_cos, m->rope_sin, B, T, c->NH, c->HS);
        rope_backward(a->dk, m->rope_cos, m->rope_sin, B, T, c->NKV, c->HS);
        /* q, k were saved after RoPE, but the adapter and dW need the linear's input (ln1), which
         * is what we pass: x of every q/k/v product is ln1. */
        /* With a frozen base, nothing below layer 0's q/k/v products wants a gradient (the embedding
         * and the first norm are frozen): their adapters still get theirs, the input gradient is
         * skipped. */
        float *dln = g_params || l > 0 ? a->dln : NULL;
        linear_backward(m, l, MOD_Q, ln1, a->dq, dln, N, 0);
        linear_backward(m, l, MOD_K, ln1, a->dk, dln, N, 1);
        linear_backward(m, l, MOD_V, ln1, a->dv, dln, N, 1);
        if (dln)
            rmsnorm_backward(a->dres, g_params ? g_params + lo->ln1 : NULL, a->dln, x, m->params + lo->ln1,
                             a->rstd1 + l * sN, N, C, 1);
    }
    if (g_params) embedding_backward(g_params + m->off_embed, a->dres, b->ids, N, C);
}
