/* adapter: site resolution, dispatch, merge, parameter report and PEFT-layout adapter folders.
 * The methods themselves are in lora.c (LoRA, rsLoRA, DoRA, PiSSA), adalora.c and vera.c.
 *
 * Invariants: sites[] has one entry per (layer, module), active or not; active sites' trainable
 * floats tile params/grads in site order (site i at sites[i].off, sites[i].n floats, no gaps);
 * every buffer forward/backward touches (saved activations, dropout masks, scratch) is sized for
 * N_max = B·T rows of the model the adapter was created for.
 *
 * Loading an adapter folder: adapter_config.json -> AdapterConfig (every key checked against
 * compat.h's table, missing ones PEFT's defaults) -> adapter_create (sites, buffers, the method's init: PiSSA re-runs its SVD
 * here) -> the method's config_load (AdaLoRA's rank_pattern) -> import_tensors from
 * adapter_model.safetensors (shapes checked) -> the score head, if the model has one. */
#define _POSIX_C_SOURCE 200809L
#include "adapter.h"
#include "compat.h"
#include "ops.h"
#include "outdir.h"

#include <cblas.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const method_names[] = {"full", "lora", "adalora", "vera"};

const char *adapter_method_name(AdapterMethod m) { return method_names[m]; }

const char *adapter_variant_name(const AdapterConfig *c) {
    if (c->method == ADAPTER_LORA) {
        if (c->use_dora) return "dora";
        if (c->init == ADAPTER_INIT_PISSA) return "pissa";
        if (c->use_rslora) return "rslora";
        if (c->lr_ratio != 1.0f) return "loraplus";
    }
    return adapter_method_name(c->method);
}

int adapter_method_from_name(const char *name, AdapterMethod *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(name, method_names[i]) == 0) {
            *out = (AdapterMethod)i;
            return 1;
        }
    return 0;
}

void adapter_config_defaults(AdapterConfig *c, AdapterMethod method) {
    memset(c, 0, sizeof *c);
    c->method = method;
    c->r = method == ADAPTER_VERA ? 256 : 8; /* VeraConfig r=256, LoraConfig r=8 */
    c->alpha = 8.0f;
    c->init = ADAPTER_INIT_KAIMING;
    c->targets = (1u << MOD_Q) | (1u << MOD_V); /* PEFT's Llama default */
    c->init_r = 12, c->target_r = 8, c->deltaT = 1;
    c->beta1 = 0.85f, c->beta2 = 0.85f, c->orth_reg_weight = 0.5f;
    c->projection_prng_key = 0, c->save_projection = 1, c->d_initial = 0.1f;
    c->lr_ratio = 1.0f;
}

LLStatus adapter_parse_targets(const char *list, unsigned *mask, LLError *err) {
    *mask = 0;
    if (strcasecmp(list, "all-linear") == 0 || strcasecmp(list, "all") == 0) {
        *mask = (1u << MOD_COUNT) - 1;
        return LL_OK;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", []", &save); tok; tok = strtok_r(NULL, ", []", &save)) {
        int mod = model_module_from_name(tok);
        if (mod < 0) { /* short forms q, k, v, o, gate, up, down */
            char longer[64];
            snprintf(longer, sizeof longer, "%s_proj", tok);
            mod = model_module_from_name(longer);
        }
        if (mod < 0)
            return ll_err(err, LL_ERR_CONFIG,
                          "unknown target module '%s'; the linear layers of this model are q_proj, k_proj, "
                          "v_proj, o_proj, gate_proj, up_proj, down_proj (or all-linear)", tok);
        *mask |= 1u << mod;
    }
    if (*mask == 0) return ll_err(err, LL_ERR_CONFIG, "target_modules is empty");
    return LL_OK;
}

void adapter_targets_string(unsigned mask, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int mod = 0; mod < MOD_COUNT; mod++)
        if (mask & (1u << mod))
            n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", n ? "," : "", model_module_name(mod));
}

void adapter_site_path(const AdapterSite *s, char *out, size_t cap) {
    snprintf(out, cap, "model.layers.%d.%s.%s", s->layer, s->mod <= MOD_O ? "self_attn" : "mlp",
             model_module_name(s->mod));
}

double adapter_json_float(float v) {
    if (!isfinite(v)) return (double)v;
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) { /* 9 significant digits always round-trip a float */
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

/* glibc's regcomp expands x+ into x x* and x{m,n} into up to n copies of x, so stacked or nested
 * repetitions grow the compiled pattern exponentially: a 128-byte key "q+++++...+" takes
 * gigabytes. And its epsilon closures take time exponential in how deeply repetitions nest,
 * stacked ("q*****...*": 43 stars took minutes) or through groups ("((q*)*)*"). Module-name
 * patterns need few repetitions and no nesting, so both are bounded: the product of the copies
 * each repetition makes (an escaped character is a literal; '*' and '?' make no copies), and the
 * nesting depth of repetitions (a repetition of a repeated atom or of a group holding one counts
 * one deeper). */
#define PATTERN_MAX_COPIES 4096
#define PATTERN_MAX_NESTING 3
static int pattern_too_costly(const char *key) {
    double copies = 1;
    int depth_of[64], depth = 0, group_max = 0, last = -1, worst = 0; /* last: nesting of the last atom */
    for (const char *p = key; *p; p++) {
        int rep = 0;
        if (*p == '\\' && p[1]) {
            p++;
            last = 0;
        } else if (*p == '[') { /* a bracket expression is one atom; ']' first is a literal */
            p++;
            if (*p == '^') p++;
            if (*p == ']') p++;
            while (*p && *p != ']') p++;
            if (!*p) break;
            last = 0;
        } else if (*p == '(') {
            if (depth == 64) return 1;
            depth_of[depth++] = group_max;
            group_max = 0, last = -1;
        } else if (*p == ')' && depth > 0) {
            last = group_max;
            group_max = depth_of[--depth];
            group_max = last > group_max ? last : group_max;
        } else if (*p == '|') {
            last = -1;
        } else if (*p == '*' || *p == '?') {
            rep = 1;
        } else if (*p == '+') {
            copies *= 2, rep = 1;
        } else if (*p == '{') {
            double most = 0, v = 0;
            for (p++; *p && *p != '}'; p++) {
                if (*p >= '0' && *p <= '9') v = v * 10 + (*p - '0');
                else most = v > most ? v : most, v = 0;
            }
            most = v > most ? v : most;
            copies *= most + 1, rep = 1;
            if (!*p) break;
        } else {
            last = 0;
        }
        if (rep && last >= 0) {
            last++;
            group_max = last > group_max ? last : group_max;
            worst = last > worst ? last : worst;
        }
    }
    return copies > PATTERN_MAX_COPIES || worst > PATTERN_MAX_NESTING;
}

static LLStatus check_patterns(const AdapterPattern *pats, int n, const char *what, LLError *err) {
    for (int i = 0; i < n; i++)
        if (pattern_too_costly(pats[i].key))
            return ll_err(err, LL_ERR_CONFIG,
                          "%s key '%.60s%s' repeats too much ('+' and '{m,n}', or repetitions nested more than %d "
                          "deep) to be used as a regular expression",
                          what, pats[i].key, strlen(pats[i].key) > 60 ? "..." : "", PATTERN_MAX_NESTING);
    return LL_OK;
}

/* PEFT's pattern rule: the first key k (in order) with re.match(f"(.*\.)?({k})$", name). */
static int pattern_lookup(const AdapterPattern *pats, int n, const char *path, float *value) {
    for (int i = 0; i < n; i++) {
        char rx[300];
        snprintf(rx, sizeof rx, "^(.*\\.)?(%s)$", pats[i].key);
        regex_t re;
        if (regcomp(&re, rx, REG_EXTENDED | REG_NOSUB) != 0) continue; /* validated by the config loader */
        int hit = regexec(&re, path, 0, NULL, 0) == 0;
        regfree(&re);
        if (hit) {
            *value = pats[i].value;
            return 1;
        }
    }
    return 0;
}

/* re.fullmatch(pattern, name) with POSIX ERE: ^(pattern)$. -1 when the pattern does not compile. */
static int regex_fullmatch(const char *pattern, const char *name) {
    char rx[300];
    snprintf(rx, sizeof rx, "^(%s)$", pattern);
    regex_t re;
    if (regcomp(&re, rx, REG_EXTENDED | REG_NOSUB) != 0) return -1;
    int hit = regexec(&re, name, 0, NULL, 0) == 0;
    regfree(&re);
    return hit;
}

LLStatus adapter_check_target_regex(const char *p, LLError *err) {
    const char *why = NULL;
    for (const char *c = p; *c && !why; c++) {
        if (c[0] == '(' && c[1] == '?') why = "a (?...) group";
        else if (c[0] == '\\' && c[1] && strchr("dDwWsSbBAZ", c[1])) why = "a Python character class or anchor (\\d, \\w, \\s, \\b, \\A, \\Z; write [0-9], [A-Za-z0-9_], ...)";
        else if (c[0] == '\\' && c[1]) c++;
        else if (strchr("*+?}", c[0]) && c[1] == '?') why = "a lazy quantifier (*?, +? or ?\?)";
    }
    if (!why && strlen(p) > 200) why = "more than 200 characters";
    if (!why && pattern_too_costly(p)) why = "too many nested or stacked repetitions";
    if (!why && regex_fullmatch(p, "x") < 0) why = "a pattern POSIX extended regular expressions cannot compile";
    const char *outside[] = {"lm_head", "score", "model.embed_tokens", "model.norm"};
    for (size_t i = 0; !why && i < sizeof outside / sizeof outside[0]; i++)
        if (regex_fullmatch(p, outside[i]) == 1) why = outside[i][0] == 'l' ? "it matches lm_head, which loralab does not adapt"
                                                   : outside[i][0] == 's' ? "it matches score, which loralab does not adapt"
                                                                          : "it matches a module loralab does not adapt";
    if (why)
        return ll_err(err, LL_ERR_FORMAT, "target_modules regular expression '%.80s' is refused: %s", p, why);
    return LL_OK;
}

static int layer_selected(const AdapterConfig *c, int layer) {
    if (c->n_layers == 0) return 1;
    for (int i = 0; i < c->n_layers; i++)
        if (c->layers[i] == layer) return 1;
    return 0;
}

static const AdapterOps *ops_for(AdapterMethod m) {
    switch (m) {
    case ADAPTER_LORA: return lora_ops();
    case ADAPTER_ADALORA: return adalora_ops();
    case ADAPTER_VERA: return vera_ops();
    case ADAPTER_FULL: return NULL;
    }
    return NULL;
}

/* Site (l, mod) of a (a->cfg and a->mc set): its dims, and when the config targets it its rank
 * and alpha (patterns applied), active and trainable float count n. Returns s->active. */
static int site_resolve(Adapter *a, AdapterSite *s, int l, int mod) {
    const AdapterConfig *cfg = &a->cfg;
    s->layer = l, s->mod = mod;
    model_module_dims(&a->mc, mod, &s->in, &s->out);
    if (!(cfg->targets & (1u << mod)) || !layer_selected(cfg, l)) return 0;
    char path[128];
    adapter_site_path(s, path, sizeof path);
    if (cfg->target_regex[0] && regex_fullmatch(cfg->target_regex, path) != 1) return 0;
    float v;
    s->r = cfg->r;
    s->alpha = cfg->alpha;
    if (pattern_lookup(cfg->rank_pattern, cfg->n_rank_pattern, path, &v)) s->r = (int)v;
    if (pattern_lookup(cfg->alpha_pattern, cfg->n_alpha_pattern, path, &v)) s->alpha = v;
    s->active = 1;
    s->n = a->ops->site_size(a, s);
    return 1;
}

double adapter_memory_estimate(const AdapterConfig *cfg, const ModelConfig *mc, double N, int training) {
    const AdapterOps *ops = ops_for(cfg->method);
    if (!ops || mc->L < 1) return 0.0;
    /* The same resolution as adapter_create, on a shell with no buffers: only the sites array
     * (L x MOD_COUNT small structs) is allocated. */
    Adapter a = {0};
    a.ops = ops;
    a.cfg = *cfg;
    a.mc = *mc;
    a.N_max = N < 2147483647.0 ? (int)N : 2147483647;
    a.n_sites = mc->L * MOD_COUNT;
    a.sites = ll_calloc((size_t)a.n_sites, sizeof(AdapterSite));
    double params = 0.0, saved = 0.0, dropout = 0.0, wide = 0.0, rmax = 1.0;
    for (int l = 0; l < mc->L; l++)
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            AdapterSite *s = &a.sites[l * MOD_COUNT + mod];
            if (!site_resolve(&a, s, l, mod) || s->r < 1) {
                s->active = 0;
                continue;
            }
            s->off = (size_t)params;
            params += (double)s->n;
            saved += N * (double)ops->saved_per_row(&a, s);
            if (cfg->dropout > 0.0f) dropout += N * s->in * (sizeof(float) + 1.0) / sizeof(float);
            double w = s->in > s->out ? s->in : s->out;
            wide = w > wide ? w : wide;
            rmax = s->r > rmax ? s->r : rmax;
        }
    a.n_params = (size_t)params;
    /* params and grads always; AdamW's m and v and the best-weights snapshot when training */
    double floats = params * (training ? 5.0 : 2.0);
    floats += N * (wide > rmax ? wide : rmax) + N * rmax; /* scratch, scratch2 */
    floats += saved + dropout;
    if (ops->state_floats) floats += ops->state_floats(&a);
    ll_free(a.sites);
    return floats * sizeof(float);
}

LLStatus adapter_create(const AdapterConfig *cfg, Model *m, Adapter **out, LLError *err) {
    *out = NULL;
    const AdapterOps *ops = ops_for(cfg->method);
    if (!ops) return ll_err(err, LL_ERR_CONFIG, "method '%s' has no adapter", adapter_method_name(cfg->method));
    if (cfg->targets == 0) return ll_err(err, LL_ERR_CONFIG, "no target modules");
    LLStatus bad_pattern = check_patterns(cfg->rank_pattern, cfg->n_rank_pattern, "rank_pattern", err);
    if (!bad_pattern) bad_pattern = check_patterns(cfg->alpha_pattern, cfg->n_alpha_pattern, "alpha_pattern", err);
    if (bad_pattern) return bad_pattern;
    if (cfg->dropout < 0.0f || cfg->dropout >= 1.0f)
        return ll_err(err, LL_ERR_CONFIG, "dropout %g must be in [0, 1)", cfg->dropout);
    if (!(isfinite(cfg->lr_ratio) && cfg->lr_ratio > 0.0f))
        return ll_err(err, LL_ERR_CONFIG, "lr_ratio %g must be a positive number (1: plain LoRA)", cfg->lr_ratio);
    if (cfg->lora_bias && (cfg->method != ADAPTER_LORA || cfg->use_dora || cfg->init != ADAPTER_INIT_KAIMING))
        return ll_err(err, LL_ERR_CONFIG,
                      "lora_bias applies to plain LoRA with init_lora_weights true or false (PEFT's rule): not to %s",
                      cfg->method != ADAPTER_LORA ? adapter_method_name(cfg->method) : cfg->use_dora ? "DoRA" : "this init");
    if (cfg->lr_ratio != 1.0f && !ops->ratio_from)
        return ll_err(err, LL_ERR_CONFIG, "lr_ratio %g is LoRA+, which applies to LoRA-family methods, not %s",
                      cfg->lr_ratio, adapter_method_name(cfg->method));
    for (int i = 0; i < cfg->n_layers; i++)
        if (cfg->layers[i] < 0 || cfg->layers[i] >= m->cfg.L)
            return ll_err(err, LL_ERR_CONFIG, "layers_to_transform names layer %d; the model has layers 0..%d",
                          cfg->layers[i], m->cfg.L - 1);
    Adapter *a = ll_calloc(1, sizeof *a);
    a->ops = ops;
    a->cfg = *cfg;
    a->mc = m->cfg;
    a->N_max = m->B * m->T;
    a->n_sites = m->cfg.L * MOD_COUNT;
    a->sites = ll_calloc((size_t)a->n_sites, sizeof(AdapterSite));
    size_t total = 0, wide = 0, rmax = 1;
    int any = 0;
    for (int l = 0; l < m->cfg.L; l++)
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            AdapterSite *s = &a->sites[l * MOD_COUNT + mod];
            s->w0 = model_weight(m, l, mod);
            s->q0 = model_quant_weight(m, l, mod);
            if (!site_resolve(a, s, l, mod)) continue;
            any = 1;
            s->off = total;
            if (s->r < 1) {
                char path[128];
                adapter_site_path(s, path, sizeof path);
                LLStatus bad = ll_err(err, LL_ERR_CONFIG, "rank of %s is %d; it must be at least 1", path, s->r);
                ll_free(a->sites); /* s points into it */
                ll_free(a);
                return bad;
            }
            total += s->n;
            size_t w = (size_t)(s->in > s->out ? s->in : s->out);
            wide = w > wide ? w : wide;
            rmax = (size_t)s->r > rmax ? (size_t)s->r : rmax;
        }
    if (!any) {
        ll_free(a->sites);
        ll_free(a);
        return ll_err(err, LL_ERR_CONFIG, "the target modules and layers_to_transform select no layer");
    }
    a->n_params = total;
    a->params = ll_alloc_floats(total);
    a->grads = ll_alloc_floats(total);
    a->scratch_floats = (size_t)a->N_max * (wide > rmax ? wide : rmax);
    a->scratch = ll_alloc_floats(a->scratch_floats);
    a->scratch2 = ll_alloc_floats((size_t)a->N_max * rmax);
    for (int i = 0; i < a->n_sites; i++) {
        AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        size_t per = ops->saved_per_row(a, s);
        if (per) s->saved = ll_alloc_floats((size_t)a->N_max * per);
        if (cfg->dropout > 0.0f) {
            s->xdrop = ll_alloc_floats((size_t)a->N_max * s->in);
            s->keep = ll_malloc((size_t)a->N_max * s->in, 1);
        }
    }
    rng_seed(&a->drop_rng, rng_derive(cfg->seed, 11));
    LLStatus st = ops->init(a, m, err);
    model_base_changed(m); /* PiSSA rewrites W0 */
    if (st) {
        adapter_free(a);
        return st;
    }
    *out = a;
    return LL_OK;
}

void adapter_free(Adapter *a) {
    if (!a) return;
    if (a->ops && a->ops->free_priv) a->ops->free_priv(a);
    for (int i = 0; i < a->n_sites; i++) {
        ll_free(a->sites[i].saved);
        ll_free(a->sites[i].xdrop);
        ll_free(a->sites[i].keep);
    }
    ll_free(a->sites);
    ll_free(a->params);
    ll_free(a->grads);
    ll_free(a->scratch);
    ll_free(a->scratch2);
    ll_free(a);
}

void adapter_attach(Model *m, Adapter *a) {
    if (a) {
        LL_ASSERT(a->mc.C == m->cfg.C && a->mc.L == m->cfg.L && a->N_max >= m->B * m->T);
        for (int i = 0; i < a->n_sites; i++) {
            AdapterSite *s = &a->sites[i];
            s->w0 = model_weight(m, s->layer, s->mod);
            s->q0 = model_quant_weight(m, s->layer, s->mod);
        }
    }
    m->adapter = a;
}

void adapter_forward(Adapter *a, int layer, int mod, const float *x, float *y, int N, int train) {
    AdapterSite *s = &a->sites[layer * MOD_COUNT + mod];
    if (!s->active || a->merged) return;
    LL_ASSERT(N <= a->N_max);
    a->ops->forward(a, s, x, y, N, train);
}

void adapter_backward(Adapter *a, int layer, int mod, const float *x, const float *dy, float *dx, int N) {
    AdapterSite *s = &a->sites[layer * MOD_COUNT + mod];
    if (!s->active) return;
    LL_ASSERT(!a->merged);
    a->ops->backward(a, s, x, dy, dx, N);
}

float adapter_reg_loss(Adapter *a, float weight) {
    return a->ops->reg_loss ? a->ops->reg_loss(a, weight) : 0.0f;
}

void adapter_on_step(Adapter *a, int step) {
    if (a->ops->on_step) a->ops->on_step(a, step);
}

void adapter_zero_grad(Adapter *a) { memset(a->grads, 0, sizeof(float) * a->n_params); }

/* LoRA+ ranges. Which floats train at lr·lr_ratio follows PEFT's create_loraplus_optimizer
 * (peft/optimizers/loraplus.py): a trainable parameter goes to the ratio group when its name holds
 * "lora_B" or it is one-dimensional, else to the base-lr group. So B, and DoRA's magnitude vector
 * (lora_magnitude_vector, 1-D), train at the ratio; A at lr. The classification head (score.weight,
 * 2-D) stays at lr and is added by the trainer, outside these ranges. */
int adapter_lr_ranges(const Adapter *a, AdapterLrRange **out) {
    int cap = 1, n = 0;
    if (a->cfg.lr_ratio != 1.0f && a->ops->ratio_from)
        for (int i = 0; i < a->n_sites; i++) cap += 2 * (a->sites[i].active != 0);
    AdapterLrRange *r = ll_malloc((size_t)cap, sizeof *r);
    if (cap == 1) {
        r[n++] = (AdapterLrRange){0, a->n_params, 1.0f};
    } else {
        for (int i = 0; i < a->n_sites; i++) {
            const AdapterSite *s = &a->sites[i];
            if (!s->active) continue;
            size_t from = a->ops->ratio_from(a, s);
            LL_ASSERT(from <= s->n);
            AdapterLrRange part[2] = {{s->off, from, 1.0f}, {s->off + from, s->n - from, a->cfg.lr_ratio}};
            for (int k = 0; k < 2; k++) {
                if (part[k].n == 0) continue;
                if (n > 0 && r[n - 1].lr_scale == part[k].lr_scale && r[n - 1].off + r[n - 1].n == part[k].off)
                    r[n - 1].n += part[k].n;
                else r[n++] = part[k];
            }
        }
    }
    *out = r;
    return n;
}

size_t adapter_state_bytes(const Adapter *a) { return a->ops->state_bytes ? a->ops->state_bytes(a) : 0; }

void adapter_state_get(const Adapter *a, void *buf) {
    if (adapter_state_bytes(a) > 0) a->ops->state_get(a, buf);
}

void adapter_state_set(Adapter *a, const void *buf) {
    if (adapter_state_bytes(a) > 0) a->ops->state_set(a, buf);
}

void *adapter_resume_state(Adapter *a, size_t *bytes) {
    *bytes = 0;
    return a->ops->resume_state ? a->ops->resume_state(a, bytes) : NULL;
}

const float *adapter_dropout(Adapter *a, AdapterSite *s, const float *x, int N, int train) {
    float p = a->cfg.dropout;
    if (!train || p <= 0.0f) return x;
    /* Inverted dropout (peft-spec.md section 1.5); a fresh mask per call, drawn serially from the
     * adapter's stream so that it does not depend on the thread count. */
    float keep_scale = 1.0f / (1.0f - p);
    size_t n = (size_t)N * s->in;
    for (size_t i = 0; i < n; i++) {
        uint8_t k = rng_uniform(&a->drop_rng) >= p;
        s->keep[i] = k;
        s->xdrop[i] = k ? x[i] * keep_scale : 0.0f;
    }
    return s->xdrop;
}

void adapter_dropout_backward(const Adapter *a, const AdapterSite *s, const float *dxd, float *dx, int N) {
    float keep_scale = 1.0f / (1.0f - a->cfg.dropout);
    size_t n = (size_t)N * s->in;
    #pragma omp parallel for schedule(static) if (n >= LL_OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        if (s->keep[i]) dx[i] += dxd[i] * keep_scale;
}

static void merge_sign(Adapter *a, Model *m, float sign) {
    if (m->quant) { /* a quantized base is merged as what it computes with: fp32 dequant(Q) + ΔW */
        model_dequantize_base(m);
        for (int i = 0; i < a->n_sites; i++) {
            a->sites[i].w0 = model_weight(m, a->sites[i].layer, a->sites[i].mod);
            a->sites[i].q0 = NULL;
        }
    }
    size_t cap = 0;
    for (int i = 0; i < a->n_sites; i++)
        if (a->sites[i].active) {
            size_t n = (size_t)a->sites[i].in * a->sites[i].out;
            cap = n > cap ? n : cap;
        }
    float *dW = ll_alloc_floats(cap);
    for (int i = 0; i < a->n_sites; i++) {
        AdapterSite *s = &a->sites[i];
        if (!s->active) continue;
        float *W = model_weight(m, s->layer, s->mod);
        if (a->ops->site_has_bias && a->ops->site_has_bias(a)) {
            float *b = model_bias(m, s->layer, s->mod);
            LL_ASSERT(b); /* adapter_merge_check */
            a->ops->merge_bias(a, s, b, sign);
        }
        if (a->ops->merge_site) {
            a->ops->merge_site(a, s, W, sign);
            continue;
        }
        a->ops->delta(a, s, dW);
        size_t n = (size_t)s->in * s->out;
        for (size_t j = 0; j < n; j++) W[j] += sign * dW[j];
    }
    ll_free(dW);
    model_base_changed(m);
}

void adapter_effective_weight(const Adapter *a, Model *m, int layer, int mod, float *W) {
    LL_ASSERT(layer >= 0 && layer < m->cfg.L && mod >= 0 && mod < MOD_COUNT);
    int in, out;
    model_module_dims(&m->cfg, mod, &in, &out);
    const size_t n = (size_t)in * out;
    const QuantTensor *q = model_quant_weight(m, layer, mod);
    if (q) {
        quant_dequant(q, 0, n, W);
    } else {
        const float *W0 = model_weight(m, layer, mod);
        LL_ASSERT(W0 != NULL);
        memcpy(W, W0, n * sizeof *W);
    }
    const AdapterSite *s = a ? &a->sites[layer * MOD_COUNT + mod] : NULL;
    if (!s || !s->active || a->merged) return; /* merged: ΔW is already in the held weight */
    float *dW = ll_alloc_floats(n);
    a->ops->delta(a, s, dW);
    for (size_t i = 0; i < n; i++) W[i] += dW[i];
    ll_free(dW);
}

LLStatus adapter_merge_check(const Adapter *a, const Model *m, LLError *err) {
    if (!a->ops->site_has_bias || !a->ops->site_has_bias(a)) return LL_OK;
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        if (s->active && !model_has_bias(&m->cfg, s->mod))
            return ll_err(err, LL_ERR_CONFIG,
                          "the adapter has lora_bias, and layer %d %s of the base has no bias to merge it into (%s is "
                          "false in config.json; PEFT refuses this merge too): use the adapter unmerged", s->layer,
                          model_module_name(s->mod), s->mod <= MOD_O ? "attention_bias" : "mlp_bias");
    }
    return LL_OK;
}

void adapter_merge(Adapter *a, Model *m) {
    LL_ASSERT(!a->merged);
    merge_sign(a, m, 1.0f);
    a->merged = 1;
}

void adapter_unmerge(Adapter *a, Model *m) {
    LL_ASSERT(a->merged);
    merge_sign(a, m, -1.0f);
    a->merged = 0;
}

size_t adapter_trainable_count(const Model *m, const Adapter *a) {
    if (!a) return m->n_params + m->n_head;
    return a->n_params + m->n_head;
}

/* n with thousands separators, as Python's f"{n:,d}". */
static void with_commas(size_t n, char *out, size_t cap) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%zu", n), j = 0;
    for (int i = 0; i < len && (size_t)j + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0) out[j++] = ',';
        out[j++] = digits[i];
    }
    out[j] = '\0';
}

void adapter_param_report(const Model *m, const Adapter *a, char *out, size_t cap) {
    /* PEFT's print_trainable_parameters counts every parameter of the wrapped model: the base,
     * the adapter, and for a classification head (modules_to_save) both the frozen original and
     * its trainable copy. VeRA's shared projections are buffers, not parameters: not counted. */
    size_t trainable = adapter_trainable_count(m, a);
    size_t all = m->n_params + m->n_head + (a ? a->n_params + m->n_head : 0);
    char t[40], l[40];
    with_commas(trainable, t, sizeof t);
    with_commas(all, l, sizeof l);
    snprintf(out, cap, "trainable params: %s || all params: %s || trainable%%: %.4f", t, l,
             100.0 * (double)trainable / (double)all);
}

/* ---- adapter folders ------------------------------------------------------------------------ */

#define PEFT_PREFIX "base_model.model."

static void export_one(void *ctx, const AdapterSite *s, const char *name, int ndim, const int64_t *shape,
                       const float *data) {
    char full[256];
    if (!s) {
        snprintf(full, sizeof full, "%s", name);
    } else {
        char path[128];
        adapter_site_path(s, path, sizeof path);
        snprintf(full, sizeof full, PEFT_PREFIX "%s.%s", path, name);
    }
    st_writer_add_f32((StWriter *)ctx, full, ndim, shape, data);
}

static int cmp_json_keys(const void *x, const void *y) {
    const cJSON *const *a = x, *const *b = y;
    return strcmp((*a)->string, (*b)->string);
}

/* PEFT writes adapter_config.json with sort_keys=True; cJSON keeps insertion order, so sort. */
static void json_sort_keys(cJSON *obj) {
    int n = cJSON_GetArraySize(obj);
    if (n < 2) return;
    cJSON **items = ll_malloc((size_t)n, sizeof *items);
    int i = 0;
    for (cJSON *c = obj->child; c; c = c->next) items[i++] = c;
    qsort(items, (size_t)n, sizeof *items, cmp_json_keys);
    for (i = 0; i < n; i++) {
        items[i]->prev = i ? items[i - 1] : items[n - 1]; /* cJSON: child->prev is the last item */
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    obj->child = items[0];
    ll_free(items);
}

/* A growable text buffer for the JSON writer below. */
typedef struct {
    char *s;
    size_t n, cap;
} Text;

static void text_add(Text *t, const char *s, size_t n) {
    if (t->n + n + 1 > t->cap) {
        t->cap = (t->n + n + 1) * 2;
        t->s = ll_realloc(t->s, t->cap, 1);
    }
    memcpy(t->s + t->n, s, n);
    t->n += n;
    t->s[t->n] = '\0';
}

static void text_str(Text *t, const char *s) { text_add(t, s, strlen(s)); }

/* A JSON string as Python's json.dumps writes it (ensure_ascii: non-ASCII as \uXXXX). */
static void json_dump_string(Text *t, const char *s) {
    text_str(t, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        char buf[16];
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            buf[0] = '\\', buf[1] = (char)c, buf[2] = '\0';
            p++;
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            char e = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == '\b' ? 'b' : 'f';
            snprintf(buf, sizeof buf, "\\%c", e);
            p++;
        } else if (c < 0x20) {
            snprintf(buf, sizeof buf, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            buf[0] = (char)c, buf[1] = '\0';
            p++;
        } else { /* decode UTF-8 (cJSON validated nothing; a bad byte is written as U+FFFD) */
            unsigned cp = 0xFFFD;
            int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
            int ok = len > 1;
            for (int i = 1; ok && i < len; i++) ok = (p[i] & 0xC0) == 0x80;
            if (ok) {
                cp = c & (0xFF >> (len + 1));
                for (int i = 1; i < len; i++) cp = (cp << 6) | (p[i] & 0x3F);
            } else {
                len = 1;
            }
            p += len;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else {
                snprintf(buf, sizeof buf, "\\u%04x", cp);
            }
        }
        text_str(t, buf);
    }
    text_str(t, "\"");
}

/* json.dumps(obj, indent=2, sort_keys=True), as PEFT writes adapter_config.json: every object's
 * keys sorted, nested ones too (so a LoRA rank_pattern comes back in sorted order, which is also
 * the order PEFT matches it in after a reload). Integral numbers are written as integers, others
 * as the shortest decimal that reads back to the same double (Python's repr). */
static void json_dump(Text *t, cJSON *v, int depth) {
    char buf[64];
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        int obj = cJSON_IsObject(v);
        if (obj) json_sort_keys(v);
        if (!v->child) {
            text_str(t, obj ? "{}" : "[]");
            return;
        }
        text_str(t, obj ? "{" : "[");
        for (cJSON *c = v->child; c; c = c->next) {
            text_str(t, "\n");
            for (int i = 0; i < 2 * (depth + 1); i++) text_str(t, " ");
            if (obj) {
                json_dump_string(t, c->string);
                text_str(t, ": ");
            }
            json_dump(t, c, depth + 1);
            if (c->next) text_str(t, ",");
        }
        text_str(t, "\n");
        for (int i = 0; i < 2 * depth; i++) text_str(t, " ");
        text_str(t, obj ? "}" : "]");
    } else if (cJSON_IsString(v)) {
        json_dump_string(t, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0) {
            snprintf(buf, sizeof buf, "%.0f", d);
        } else {
            for (int prec = 1; prec <= 17; prec++) { /* Python's repr: the shortest round trip */
                snprintf(buf, sizeof buf, "%.*g", prec, d);
                if (strtod(buf, NULL) == d) break;
            }
        }
        text_str(t, buf);
    } else if (cJSON_IsTrue(v)) {
        text_str(t, "true");
    } else if (cJSON_IsFalse(v)) {
        text_str(t, "false");
    } else {
        text_str(t, "null");
    }
}

/* Written into DIR.tmp.PID and swapped in whole (outdir_replace): a full disk or a crash while the
 * weights or the config are written leaves the previous adapter folder as it was. */
static LLStatus adapter_write(const Adapter *a, const Model *m, const char *dir, const char *base_name, LLError *err);

LLStatus adapter_save(const Adapter *a, const Model *m, const char *dir, const char *base_name, LLError *err) {
    char tmp[4096];
    LLStatus st = outdir_tmp_create(dir, tmp, sizeof tmp, err);
    if (!st) st = adapter_write(a, m, tmp, base_name, err);
    if (st) {
        outdir_remove_tree(tmp);
        return ll_err_prefix(err, "writing adapter folder '%s' (nothing was replaced)", dir);
    }
    return outdir_replace(tmp, dir, "adapter", err);
}

static LLStatus adapter_write(const Adapter *a, const Model *m, const char *dir, const char *base_name, LLError *err) {
    LLStatus st = ll_mkdirs(dir, err);
    if (st) return st;
    LL_ASSERT(!a->merged);
    StWriter *w = st_writer_new();
    st_writer_meta(w, "format", "pt");
    a->ops->export_tensors(a, export_one, w);
    if (m->head) {
        int64_t shape[2] = {m->cfg.n_labels, m->cfg.C};
        st_writer_add_f32(w, PEFT_PREFIX "score.weight", 2, shape, m->head);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st = st_writer_write(w, path, err);
    st_writer_free(w);
    if (st) return st;

    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "peft_type", a->ops->peft_type);
    cJSON_AddStringToObject(c, "task_type", m->cfg.n_labels > 0 ? "SEQ_CLS" : "CAUSAL_LM");
    cJSON_AddItemToObject(c, "auto_mapping", cJSON_CreateNull());
    if (base_name) cJSON_AddStringToObject(c, "base_model_name_or_path", base_name);
    else cJSON_AddItemToObject(c, "base_model_name_or_path", cJSON_CreateNull());
    cJSON_AddItemToObject(c, "revision", cJSON_CreateNull());
    cJSON_AddBoolToObject(c, "inference_mode", 1);
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "fan_in_fan_out", 0);
    if (a->cfg.target_regex[0]) {
        cJSON_AddStringToObject(c, "target_modules", a->cfg.target_regex);
    } else {
        cJSON *targets = cJSON_CreateArray();
        for (int mod = 0; mod < MOD_COUNT; mod++)
            if (a->cfg.targets & (1u << mod)) cJSON_AddItemToArray(targets, cJSON_CreateString(model_module_name(mod)));
        cJSON_AddItemToObject(c, "target_modules", targets);
    }
    if (a->cfg.n_layers > 0) {
        cJSON *ls = cJSON_CreateArray();
        for (int i = 0; i < a->cfg.n_layers; i++) cJSON_AddItemToArray(ls, cJSON_CreateNumber(a->cfg.layers[i]));
        cJSON_AddItemToObject(c, "layers_to_transform", ls);
    } else {
        cJSON_AddItemToObject(c, "layers_to_transform", cJSON_CreateNull());
    }
    cJSON_AddItemToObject(c, "layers_pattern", cJSON_CreateNull());
    if (m->head) {
        cJSON *mts = cJSON_CreateArray();
        cJSON_AddItemToArray(mts, cJSON_CreateString("score"));
        cJSON_AddItemToObject(c, "modules_to_save", mts);
    } else {
        cJSON_AddItemToObject(c, "modules_to_save", cJSON_CreateNull());
    }
    a->ops->config_json(a, c);
    Text text = {0};
    json_dump(&text, c, 0);
    cJSON_Delete(c);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    st = ll_write_file_atomic(path, text.s, text.n, err);
    ll_free(text.s);
    return st;
}

LLStatus adapter_read_site_tensor(const SafeTensors *st, const char *path, const AdapterSite *s,
                                  const char *name, int ndim, const int64_t *shape, float *out, LLError *err) {
    char sp[128], full[256];
    adapter_site_path(s, sp, sizeof sp);
    snprintf(full, sizeof full, PEFT_PREFIX "%s.%s", sp, name);
    if (!st_find(st, full)) {
        /* PEFT tolerates keys saved without the base_model.model. prefix */
        snprintf(full, sizeof full, "%s.%s", sp, name);
        if (!st_find(st, full))
            return ll_err(err, LL_ERR_FORMAT, "%s: tensor '" PEFT_PREFIX "%s.%s' is missing", path, sp, name);
    }
    LLStatus rc = st_read_f32(st, full, ndim, shape, out, err);
    if (rc) ll_err_prefix(err, "%s", path);
    return rc;
}

static double json_num(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(v)) return v->valuedouble;
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static LLStatus read_patterns(const cJSON *o, const char *key, AdapterPattern *pats, int *n, const char *path,
                              LLError *err) {
    *n = 0;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!p || cJSON_IsNull(p)) return LL_OK;
    if (!cJSON_IsObject(p)) return ll_err(err, LL_ERR_FORMAT, "%s: '%s' must be an object", path, key);
    for (const cJSON *c = p->child; c; c = c->next) {
        if (!cJSON_IsNumber(c)) continue; /* AdaLoRA's boolean masks use the same key; adalora.c reads them */
        if (*n >= ADAPTER_MAX_PATTERNS)
            return ll_err(err, LL_ERR_FORMAT, "%s: more than %d entries in '%s'", path, ADAPTER_MAX_PATTERNS, key);
        snprintf(pats[*n].key, sizeof pats[*n].key, "%s", c->string);
        pats[*n].value = (float)c->valuedouble;
        (*n)++;
    }
    return LL_OK;
}

/* A whole-number key as an int in [lo, hi]: out-of-range values are refused here, because
 * converting a double outside int's range (r: 1e300) is undefined behaviour. */
static LLStatus json_int(const cJSON *o, const char *key, int dflt, double lo, double hi, const char *path,
                         int *out, LLError *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (j && !cJSON_IsNull(j) && !cJSON_IsNumber(j) && !cJSON_IsBool(j))
        return ll_err(err, LL_ERR_FORMAT, "%s: '%s' must be a whole number, not a %s", path, key,
                      cJSON_IsString(j) ? "string" : cJSON_IsArray(j) ? "list" : "object");
    double v = json_num(o, key, dflt);
    if (v != floor(v))
        return ll_err(err, LL_ERR_FORMAT, "%s: '%s' is %g; it must be a whole number", path, key, v);
    if (!(v >= lo && v <= hi))
        return ll_err(err, LL_ERR_FORMAT, "%s: '%s' is %g; it must be in [%.0f, %.0f]", path, key, v, lo, hi);
    *out = (int)v;
    return LL_OK;
}

/* Every field of an AdapterConfig from a parsed adapter_config.json (see adapter_config_parse). */
static LLStatus config_from_json(const cJSON *c, const char *path, AdapterConfig *cfg, LLError *err) {
    LLStatus st = LL_OK;
    if (!cJSON_IsObject(c)) return ll_err(err, LL_ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(c, "peft_type");
    AdapterMethod method;
    if (!cJSON_IsString(pt)) return ll_err(err, LL_ERR_FORMAT, "%s: 'peft_type' is missing", path);
    if (strcmp(pt->valuestring, "LORA") == 0) method = ADAPTER_LORA;
    else if (strcmp(pt->valuestring, "ADALORA") == 0) method = ADAPTER_ADALORA;
    else if (strcmp(pt->valuestring, "VERA") == 0) method = ADAPTER_VERA;
    else
        return ll_err(err, LL_ERR_FORMAT, "%s: peft_type '%s' is not supported (LORA, ADALORA, VERA are)", path,
                      pt->valuestring);
    /* Every key understood, known irrelevant or refused by name (compat.h): nothing a file asks
     * for is silently dropped. */
    st = compat_check_keys(COMPAT_ADAPTER_CONFIG,
                           method == ADAPTER_LORA ? COMPAT_LORA : method == ADAPTER_ADALORA ? COMPAT_ADALORA : COMPAT_VERA,
                           c, path, err);
    if (st) return st;
    adapter_config_defaults(cfg, method);
    /* Missing keys take PEFT's defaults (peft-spec.md section 5.2).
     * Ranks and steps must fit an int; flags are read as numbers (true = 1). */
    const double big = 2147483647.0;
    /* ranks as the YAML bounds them (adapter.r, init_r, target_r, rank_pattern): every site's
     * buffers scale with them, and 2^31 - 1 would ask for terabytes */
    const double rank_max = ADAPTER_MAX_RANK;
    int rslora = 0, dora = 0, save_proj = 1;
    double key = json_num(c, "projection_prng_key", 0);
    if (!st) st = json_int(c, "r", cfg->r, -big, rank_max, path, &cfg->r, err);
    if (!st) st = json_int(c, "use_rslora", 0, -big, big, path, &rslora, err);
    if (!st) st = json_int(c, "use_dora", 0, -big, big, path, &dora, err);
    if (!st) st = json_int(c, "lora_bias", 0, 0, 1, path, &cfg->lora_bias, err);
    if (!st) st = json_int(c, "init_r", cfg->init_r, -big, rank_max, path, &cfg->init_r, err);
    if (!st) st = json_int(c, "target_r", cfg->target_r, -big, rank_max, path, &cfg->target_r, err);
    if (!st) st = json_int(c, "tinit", 0, -big, big, path, &cfg->tinit, err);
    if (!st) st = json_int(c, "tfinal", 0, -big, big, path, &cfg->tfinal, err);
    if (!st) st = json_int(c, "deltaT", 1, -big, big, path, &cfg->deltaT, err);
    if (!st) st = json_int(c, "total_step", 0, -big, big, path, &cfg->total_step, err);
    if (!st) st = json_int(c, "save_projection", 1, -big, big, path, &save_proj, err);
    if (!st && !(key >= 0 && key <= 4294967295.0))
        st = ll_err(err, LL_ERR_FORMAT, "%s: 'projection_prng_key' is %g; it must be in [0, 4294967295]", path, key);
    if (st) return st;
    cfg->use_rslora = rslora, cfg->use_dora = dora, cfg->save_projection = save_proj;
    cfg->projection_prng_key = (uint32_t)key;
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(c, "lora_alpha");
    if (la && !cJSON_IsNull(la) && !(cJSON_IsNumber(la) && isfinite(la->valuedouble) && la->valuedouble >= 0.0))
        return ll_err(err, LL_ERR_FORMAT, "%s: 'lora_alpha' must be a number >= 0%s", path,
                      cJSON_IsNumber(la) ? "" : ", not a string or other value");
    cfg->alpha = (float)json_num(c, "lora_alpha", cfg->alpha);
    cfg->dropout = (float)json_num(c, method == ADAPTER_VERA ? "vera_dropout" : "lora_dropout", 0.0);
    cfg->beta1 = (float)json_num(c, "beta1", cfg->beta1);
    cfg->beta2 = (float)json_num(c, "beta2", cfg->beta2);
    cfg->orth_reg_weight = (float)json_num(c, "orth_reg_weight", cfg->orth_reg_weight);
    cfg->d_initial = (float)json_num(c, "d_initial", cfg->d_initial);
    /* A loaded AdaLoRA adapter serves inference; configs from PEFT releases that allowed
     * total_step = null are accepted with a schedule that never masks (its masks come from the
     * saved rank_pattern, read by adalora.c). */
    if (method == ADAPTER_ADALORA && cfg->total_step <= 0) {
        double t = (double)cfg->tinit + cfg->tfinal + 1;
        if (t > big) return ll_err(err, LL_ERR_FORMAT, "%s: tinit + tfinal is too large", path);
        cfg->total_step = (int)t;
    }
    const cJSON *ilw = cJSON_GetObjectItemCaseSensitive(c, "init_lora_weights");
    if (cJSON_IsString(ilw)) {
        /* PiSSA is re-applied on load, as PEFT does: the SVD of the original base weights gives
         * the residual the adapter was trained on (deterministic for a given base). */
        if (strcmp(ilw->valuestring, "gaussian") == 0) cfg->init = ADAPTER_INIT_GAUSSIAN;
        else if (strcmp(ilw->valuestring, "pissa") == 0) cfg->init = ADAPTER_INIT_PISSA;
        else if (strcmp(ilw->valuestring, "loftq") == 0) cfg->init = ADAPTER_INIT_LOFTQ; /* A, B come from the file */
        else st = ll_err(err, LL_ERR_CONFIG,
                         "init_lora_weights '%s' is not supported (true, false, \"gaussian\", \"pissa\" and \"loftq\" are)",
                         ilw->valuestring);
    }
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(c, "target_modules");
    if (st) {
        /* reported below */
    } else if (cJSON_IsString(tm) && strcasecmp(tm->valuestring, "all-linear") == 0) {
        cfg->targets = (1u << MOD_COUNT) - 1;
    } else if (cJSON_IsString(tm)) { /* PEFT: re.fullmatch(target_modules, module name) */
        st = adapter_check_target_regex(tm->valuestring, err);
        const cJSON *lt = cJSON_GetObjectItemCaseSensitive(c, "layers_to_transform");
        if (!st && lt && !cJSON_IsNull(lt))
            st = ll_err(err, LL_ERR_FORMAT, "layers_to_transform cannot be used with a regular-expression target_modules "
                        "(PEFT refuses it too)");
        if (!st) {
            snprintf(cfg->target_regex, sizeof cfg->target_regex, "%s", tm->valuestring);
            cfg->targets = (1u << MOD_COUNT) - 1; /* the pattern decides, site by site */
        }
    } else if (cJSON_IsArray(tm)) {
        cfg->targets = 0;
        for (const cJSON *t = tm->child; t && !st; t = t->next) {
            unsigned one;
            if (!cJSON_IsString(t)) st = ll_err(err, LL_ERR_FORMAT, "%s: target_modules holds a non-string", path);
            else if (!(st = adapter_parse_targets(t->valuestring, &one, err))) cfg->targets |= one;
        }
    }
    const cJSON *ltt = cJSON_GetObjectItemCaseSensitive(c, "layers_to_transform");
    if (!st && cJSON_IsNumber(ltt)) {
        cfg->n_layers = 1, cfg->layers[0] = ltt->valueint;
    } else if (!st && cJSON_IsArray(ltt)) {
        for (const cJSON *t = ltt->child; t; t = t->next)
            if (cJSON_IsNumber(t) && cfg->n_layers < ADAPTER_MAX_LAYERS) cfg->layers[cfg->n_layers++] = t->valueint;
    }
    if (!st && method == ADAPTER_LORA)
        st = read_patterns(c, "rank_pattern", cfg->rank_pattern, &cfg->n_rank_pattern, path, err);
    for (int i = 0; !st && i < cfg->n_rank_pattern; i++) /* becomes an int rank in adapter_create */
        if (!(cfg->rank_pattern[i].value >= -big && cfg->rank_pattern[i].value <= rank_max) ||
            cfg->rank_pattern[i].value != floorf(cfg->rank_pattern[i].value))
            st = ll_err(err, LL_ERR_FORMAT, "rank_pattern '%s' is %g, not a rank (a whole number up to %.0f)",
                        cfg->rank_pattern[i].key, (double)cfg->rank_pattern[i].value, rank_max);
    if (!st) st = read_patterns(c, "alpha_pattern", cfg->alpha_pattern, &cfg->n_alpha_pattern, path, err);
    if (!st) st = check_patterns(cfg->rank_pattern, cfg->n_rank_pattern, "rank_pattern", err);
    if (!st) st = check_patterns(cfg->alpha_pattern, cfg->n_alpha_pattern, "alpha_pattern", err);
    if (st) return ll_err_prefix(err, "%s", path);
    return LL_OK;
}

LLStatus adapter_config_parse(const char *json, size_t len, const char *path, AdapterConfig *out, LLError *err) {
    cJSON *c = cJSON_ParseWithLength(json, len);
    if (!c) return ll_err(err, LL_ERR_FORMAT, "%s: not a JSON object", path);
    LLStatus st = config_from_json(c, path, out, err);
    cJSON_Delete(c);
    return st;
}

LLStatus adapter_config_read(const char *dir, char *path, size_t cap, cJSON **out, LLError *err) {
    *out = NULL;
    snprintf(path, cap, "%s/adapter_config.json", dir);
    char *text = NULL;
    size_t len = 0;
    LLStatus st = ll_read_file(path, &text, &len, err);
    if (st) return st;
    *out = cJSON_ParseWithLength(text, len);
    ll_free(text);
    return *out ? LL_OK : ll_err(err, LL_ERR_FORMAT, "%s: not a JSON object", path);
}

LLStatus adapter_saved_labels(const char *dir, int *n_labels, LLError *err) {
    char path[2048];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    SafeTensors sf;
    *n_labels = 0;
    LLStatus st = st_load(path, &sf, err);
    if (st) return st;
    const StTensor *t = st_find(&sf, PEFT_PREFIX "score.weight");
    if (t && t->ndim == 2 && t->shape[0] >= 1 && t->shape[0] <= 1 << 20) *n_labels = (int)t->shape[0];
    else if (t) st = ll_err(err, LL_ERR_FORMAT, "%s: score.weight is not a [labels, hidden] matrix", path);
    st_free(&sf);
    return st;
}

/* Every tensor of an adapter file is used: one of an adapted module (lora_B.bias only with
 * lora_bias), the shared VeRA projections, or the score head. A tensor of a module the config does
 * not adapt, or a lora_B bias the config does not declare, would be dropped silently (PEFT warns
 * and drops it): refused by name. */
static LLStatus check_all_used(const Adapter *a, const SafeTensors *sf, const char *path, LLError *err) {
    for (int i = 0; i < sf->n; i++) {
        const char *n = sf->tensors[i].name, *s = n;
        if (strncmp(s, PEFT_PREFIX, strlen(PEFT_PREFIX)) == 0) s += strlen(PEFT_PREFIX);
        if (strcmp(s, "score.weight") == 0 || strncmp(n, "base_model.vera_", 16) == 0) continue;
        int layer = -1, used = 0;
        char part[16], mod[16];
        if (sscanf(s, "model.layers.%d.%15[a-z_].%15[a-z_]", &layer, part, mod) == 3 && layer >= 0 && layer < a->mc.L &&
            model_module_from_name(mod) >= 0)
            used = a->sites[layer * MOD_COUNT + model_module_from_name(mod)].active;
        if (!used)
            return ll_err(err, LL_ERR_FORMAT,
                          "%s: tensor '%s' belongs to no module adapter_config.json adapts (target_modules, "
                          "layers_to_transform): it would be ignored", path, n);
        size_t len = strlen(n);
        if (!a->cfg.lora_bias && len > 12 && strcmp(n + len - 12, ".lora_B.bias") == 0)
            return ll_err(err, LL_ERR_FORMAT,
                          "%s: tensor '%s' is a bias of lora_B, but adapter_config.json says lora_bias is false: the "
                          "bias would be dropped", path, n);
    }
    return LL_OK;
}

LLStatus adapter_load(const char *dir, Model *m, Adapter **out, LLError *err) {
    *out = NULL;
    char path[4096];
    cJSON *c = NULL;
    LLStatus st = adapter_config_read(dir, path, sizeof path, &c, err);
    if (st) return st == LL_ERR_IO ? ll_err_prefix(err, "loading adapter folder '%s'", dir) : st;
    AdapterConfig cfg;
    st = config_from_json(c, path, &cfg, err);
    if (st) {
        cJSON_Delete(c);
        return st;
    }

    Adapter *a = NULL;
    st = adapter_create(&cfg, m, &a, err);
    if (!st && a->ops->config_load) st = a->ops->config_load(a, c, path, err);
    cJSON_Delete(c);
    if (st) {
        adapter_free(a);
        return ll_err_prefix(err, "%s", path);
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    SafeTensors sf;
    st = st_load(path, &sf, err);
    if (!st) {
        st = a->ops->import_tensors(a, &sf, path, err);
        if (!st) st = check_all_used(a, &sf, path, err);
        if (!st && m->head) {
            int64_t shape[2] = {m->cfg.n_labels, m->cfg.C};
            const char *hn = PEFT_PREFIX "score.weight";
            if (st_find(&sf, hn)) st = st_read_f32(&sf, hn, 2, shape, m->head, err);
        }
        st_free(&sf);
    }
    if (st) {
        adapter_free(a);
        return st;
    }
    *out = a;
    return LL_OK;
}
