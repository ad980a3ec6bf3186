/* checkpoint: see checkpoint.h. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include "compat.h"
#include "ops.h"
#include "outdir.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

char *checkpoint_config_json(const ModelConfig *c, const char *const *label_names) {
    cJSON *o = cJSON_CreateObject();
    cJSON *arch = cJSON_CreateArray();
    cJSON_AddItemToArray(arch, cJSON_CreateString(c->n_labels > 0 ? "LlamaForSequenceClassification" : "LlamaForCausalLM"));
    cJSON_AddItemToObject(o, "architectures", arch);
    cJSON_AddStringToObject(o, "model_type", "llama");
    cJSON_AddNumberToObject(o, "vocab_size", c->V);
    cJSON_AddNumberToObject(o, "hidden_size", c->C);
    cJSON_AddNumberToObject(o, "intermediate_size", c->F);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->L);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->NH);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->NKV);
    cJSON_AddNumberToObject(o, "head_dim", c->HS);
    cJSON_AddStringToObject(o, "hidden_act", act_name((Activation)c->act));
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_T);
    cJSON_AddNumberToObject(o, "initializer_range", c->init_range);
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->eps);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    cJSON_AddItemToObject(o, "rope_scaling", cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "attention_bias", c->attn_bias);
    cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
    cJSON_AddBoolToObject(o, "mlp_bias", c->mlp_bias);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tied);
    cJSON_AddNumberToObject(o, "pretraining_tp", 1);
    cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
    cJSON_AddNumberToObject(o, "pad_token_id", c->pad_id);
    cJSON_AddStringToObject(o, "torch_dtype", "float32");
    cJSON_AddBoolToObject(o, "use_cache", 1);
    if (c->n_labels > 0) {
        cJSON *id2 = cJSON_CreateObject(), *l2id = cJSON_CreateObject();
        for (int k = 0; k < c->n_labels; k++) {
            char idx[16], fallback[32];
            snprintf(idx, sizeof idx, "%d", k);
            snprintf(fallback, sizeof fallback, "LABEL_%d", k);
            const char *name = label_names && label_names[k] ? label_names[k] : fallback;
            cJSON_AddStringToObject(id2, idx, name);
            cJSON_AddNumberToObject(l2id, name, k);
        }
        cJSON_AddItemToObject(o, "id2label", id2);
        cJSON_AddItemToObject(o, "label2id", l2id);
        cJSON_AddStringToObject(o, "problem_type", "single_label_classification");
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    return text;
}

/* *bad names the first key of the wrong type (it stays NULL while all are fine). */
static int get_int(const cJSON *o, const char *key, int dflt, const char **bad) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    /* range first: converting a double outside int's range (1e300) is undefined behaviour */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= INT_MIN && v->valuedouble <= INT_MAX) ||
        v->valuedouble != (double)(int)v->valuedouble) {
        if (!*bad) *bad = key;
        return dflt;
    }
    return v->valueint;
}

static double get_num(const cJSON *o, const char *key, double dflt, const char **bad) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    if (!cJSON_IsNumber(v)) {
        if (!*bad) *bad = key;
        return dflt;
    }
    return v->valuedouble;
}

LLStatus checkpoint_load_config(const char *dir, ModelConfig *c, LLError *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text;
    size_t len;
    if (ll_read_file(path, &text, &len, err)) return ll_err_prefix(err, "model folder '%s'", dir);
    cJSON *o = cJSON_ParseWithLength(text, len);
    ll_free(text);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return ll_err(err, LL_ERR_FORMAT, "%s: not a JSON object", path);
    }
    /* every key understood, known irrelevant or refused by name (compat.h) */
    LLStatus st = compat_check_keys(COMPAT_MODEL_CONFIG, 0, o, path, err);
    if (st) {
        cJSON_Delete(o);
        return st;
    }
    const char *bad = NULL;
    memset(c, 0, sizeof *c);
    /* defaults: LlamaConfig's class defaults where a key is absent */
    c->V = get_int(o, "vocab_size", 32000, &bad);
    c->C = get_int(o, "hidden_size", 4096, &bad);
    c->F = get_int(o, "intermediate_size", 11008, &bad);
    c->L = get_int(o, "num_hidden_layers", 32, &bad);
    c->NH = get_int(o, "num_attention_heads", 32, &bad);
    c->NKV = get_int(o, "num_key_value_heads", c->NH, &bad);
    c->HS = get_int(o, "head_dim", c->NH > 0 ? c->C / c->NH : 0, &bad);
    c->max_T = get_int(o, "max_position_embeddings", 2048, &bad);
    c->init_range = (float)get_num(o, "initializer_range", 0.02, &bad);
    c->eps = (float)get_num(o, "rms_norm_eps", 1e-6, &bad);
    c->rope_theta = (float)get_num(o, "rope_theta", 10000.0, &bad);
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(o, "rope_parameters"); /* transformers v5 */
    if (cJSON_IsObject(rp)) {
        for (const cJSON *k = rp->child; k; k = k->next) {
            int fine = strcmp(k->string, "rope_theta") == 0 ||
                       (strcmp(k->string, "rope_type") == 0 && cJSON_IsString(k) && strcmp(k->valuestring, "default") == 0);
            if (!fine) {
                char *v = cJSON_PrintUnformatted(k);
                st = ll_err(err, LL_ERR_FORMAT,
                            "%s: key 'rope_parameters' holds '%s': %.60s, which loralab does not implement (plain RoPE "
                            "only: rope_type \"default\" and rope_theta)", path, k->string, v ? v : "?");
                cJSON_free(v);
                cJSON_Delete(o);
                return st;
            }
        }
        c->rope_theta = (float)get_num(rp, "rope_theta", c->rope_theta, &bad);
    } else if (rp && !cJSON_IsNull(rp) && !bad) {
        bad = "rope_parameters";
    }
    const cJSON *ha = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    Activation act = ACT_SILU;
    if (cJSON_IsString(ha)) act_from_name(ha->valuestring, &act); /* the name is one of compat's list */
    c->act = (int)act;
    c->attn_bias = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "attention_bias"));
    c->mlp_bias = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "mlp_bias"));
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(o, "tie_word_embeddings");
    c->tied = cJSON_IsTrue(tie);
    c->bos_id = get_int(o, "bos_token_id", 1, &bad);
    c->eos_id = get_int(o, "eos_token_id", 2, &bad);
    c->pad_id = get_int(o, "pad_token_id", c->eos_id, &bad);
    const cJSON *id2 = cJSON_GetObjectItemCaseSensitive(o, "id2label");
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(o, "architectures");
    int is_cls = 0;
    if (arch && !cJSON_IsNull(arch)) {
        const char *a0 = cJSON_IsArray(arch) && cJSON_GetArraySize(arch) == 1 && cJSON_IsString(arch->child)
                             ? arch->child->valuestring
                             : NULL;
        is_cls = a0 && strcmp(a0, "LlamaForSequenceClassification") == 0;
        if (!a0 || (!is_cls && strcmp(a0, "LlamaForCausalLM") != 0)) {
            char *v = cJSON_PrintUnformatted(arch);
            st = ll_err(err, LL_ERR_FORMAT,
                        "%s: key 'architectures' is %.80s; loralab implements [\"LlamaForCausalLM\"] and "
                        "[\"LlamaForSequenceClassification\"]", path, v ? v : "?");
            cJSON_free(v);
            cJSON_Delete(o);
            return st;
        }
    }
    int num_labels = get_int(o, "num_labels", 0, &bad);
    c->n_labels = !is_cls ? 0 : cJSON_IsObject(id2) ? cJSON_GetArraySize(id2) : num_labels;
    if (bad) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, bad);
        char *vt = v ? cJSON_PrintUnformatted(v) : NULL;
        st = ll_err(err, LL_ERR_FORMAT, "%s: key '%s' is %.60s; it must be %s", path, bad, vt ? vt : "?",
                    strcmp(bad, "eos_token_id") == 0 && cJSON_IsArray(v)
                        ? "a single token id (a list of stop tokens is not implemented)"
                        : strcmp(bad, "rope_parameters") == 0 ? "an object" : "a number of the right kind (a whole number for sizes and ids)");
        cJSON_free(vt);
        cJSON_Delete(o);
        return st;
    }
    cJSON_Delete(o);
    st = model_config_validate(c, err);
    if (st) return ll_err_prefix(err, "%s", path);
    return LL_OK;
}

/* "[a, b]" or "[a]" into buf. */
static const char *shape_text(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* An untied LM head is a tensor of its own; a model opened with a classification head (n_labels)
 * does not use it, and classification folders (checkpoint_save) do not write it. */
static int lm_head_optional(const ModelConfig *c, const char *name) {
    return c->n_labels > 0 && strcmp(name, "lm_head.weight") == 0;
}

LLStatus checkpoint_check_tensors(const char *dir, const ModelConfig *c, LLError *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    SafeTensors st;
    LLStatus rc = st_map(path, &st, err);
    if (rc == LL_ERR_IO) rc = st_load(path, &st, err); /* mapping failed: read it, as the copy path will */
    if (rc) return rc;
    for (int i = 0; i < model_config_n_tensors(c) && !rc; i++) {
        ModelTensor t;
        model_config_tensor(c, i, &t);
        const StTensor *f = st_find(&st, t.name);
        if (!f) {
            if (lm_head_optional(c, t.name)) continue;
            rc = ll_err(err, LL_ERR_FORMAT, "%s: tensor '%s' is missing%s", path, t.name,
                        strcmp(t.name, "lm_head.weight") == 0
                            ? " (config.json says tie_word_embeddings: false, so the LM head is a tensor of its own)"
                            : "");
            break;
        }
        int same = f->ndim == t.ndim;
        for (int d = 0; same && d < t.ndim; d++) same = f->shape[d] == t.shape[d];
        if (!same) {
            char want[64], got[8 * 24];
            rc = ll_err(err, LL_ERR_FORMAT, "%s: tensor '%s' has shape %s, but %s/config.json says %s", path, t.name,
                        shape_text(got, sizeof got, f->ndim, f->shape), dir,
                        shape_text(want, sizeof want, t.ndim, t.shape));
        }
    }
    st_free(&st);
    return rc;
}

LLStatus checkpoint_load_weights(const char *dir, Model *m, int *head_loaded, LLError *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    SafeTensors st;
    LLStatus rc = st_load(path, &st, err);
    if (rc) return rc;
    if (head_loaded) *head_loaded = 0;
    for (int i = 0; i < model_n_tensors(m) && !rc; i++) {
        ModelTensor t;
        model_tensor(m, i, &t);
        if (!st_find(&st, t.name)) {
            if (lm_head_optional(&m->cfg, t.name)) continue; /* a seq-cls model has no LM head */
            rc = ll_err(err, LL_ERR_FORMAT, "%s: tensor '%s' is missing", path, t.name);
            break;
        }
        rc = st_read_f32(&st, t.name, t.ndim, t.shape, t.data, err);
    }
    if (!rc && m->head && st_find(&st, "score.weight")) {
        int64_t shape[2] = {m->cfg.n_labels, m->cfg.C};
        rc = st_read_f32(&st, "score.weight", 2, shape, m->head, err);
        if (!rc && head_loaded) *head_loaded = 1;
    }
    st_free(&st);
    model_base_changed(m);
    return rc;
}

LLStatus checkpoint_save(const Model *m, const Tokenizer *tok, const char *const *label_names, const char *dir,
                         LLError *err) {
    char tmp[4096], path[4200];
    LLStatus rc = outdir_tmp_create(dir, tmp, sizeof tmp, err);
    if (rc) return ll_err_prefix(err, "writing model folder '%s' (nothing was replaced)", dir);
    char *cfg = checkpoint_config_json(&m->cfg, label_names);
    snprintf(path, sizeof path, "%s/config.json", tmp);
    rc = ll_write_file_atomic(path, cfg, strlen(cfg), err);
    cJSON_free(cfg);
    if (!rc) {
        StWriter *w = st_writer_new();
        st_writer_meta(w, "format", "pt");
        for (int i = 0; i < model_n_tensors(m); i++) {
            ModelTensor t;
            model_tensor(m, i, &t);
            if (m->cfg.n_labels > 0 && strcmp(t.name, "lm_head.weight") == 0) continue;
            st_writer_add_f32(w, t.name, t.ndim, t.shape, t.data);
        }
        if (m->head) {
            int64_t shape[2] = {m->cfg.n_labels, m->cfg.C};
            st_writer_add_f32(w, "score.weight", 2, shape, m->head);
        }
        snprintf(path, sizeof path, "%s/model.safetensors", tmp);
        rc = st_writer_write(w, path, err);
        st_writer_free(w);
    }
    if (!rc && tok) rc = tok_save(tok, tmp, err);
    if (rc) {
        outdir_remove_tree(tmp);
        return ll_err_prefix(err, "writing model folder '%s' (nothing was replaced)", dir);
    }
    return outdir_replace(tmp, dir, "model", err);
}

/* The mapped path of checkpoint_open: makes m's base weights (m from model_init_unbacked) the
 * data of DIR/model.safetensors in place, mapped MAP_PRIVATE, when the file allows it: every tensor
 * of the model present as F32 with the model's shape, together tiling one gap-free byte range of
 * the file (in any order: the model adopts the file's layout, so the name-sorted files that
 * checkpoint_save and HF's writer produce qualify) that starts 4-byte aligned in the file (the
 * mapping is page-aligned, so params is then float-aligned). Extra tensors elsewhere in the file
 * are fine; score.weight, when the model has a head, is copied into m->head as the copy path does.
 * Returns 1 when mapped; 0 (nothing changed, m->params still NULL) when the layout does not
 * qualify, the file cannot be opened or mapped, or it is malformed: the copy path then reads the
 * file and reports any error itself, so nothing is reported here.
 *
 * Why sharing is safe: every process that maps the same file shares its page-cache pages until
 * it writes one; a write (an optimizer step of full fine-tuning, PiSSA rewriting W0, a merge) gives
 * the writer a private copy of that page only, so no process ever sees another's writes and the
 * file never changes. Nor can a mapping see a half-written file: model folders are only ever
 * written whole under a temporary name and renamed into place (checkpoint_save -> outdir_replace,
 * ll_write_file_atomic), so a path names either the old inode, which stays intact for as long as
 * it is mapped, or the complete new one; nothing in loralab truncates or rewrites a model file in
 * place (which, for a mapped file, would show the new bytes or raise SIGBUS). */
static int map_weights(const char *dir, Model *m) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) return 0; /* the file's floats are little-endian */
    SafeTensors st;
    LLError ignored;
    if (st_map(path, &st, &ignored) != LL_OK) return 0;
    int n = model_n_tensors(m);
    size_t *offs = ll_malloc((size_t)n, sizeof *offs);
    size_t lo = SIZE_MAX, hi = 0, bytes = 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        ModelTensor mt;
        model_tensor(m, i, &mt);
        const StTensor *t = st_find(&st, mt.name);
        ok = t && t->dtype == ST_F32 && t->ndim == mt.ndim && t->shape[0] == mt.shape[0] &&
             (mt.ndim == 1 || t->shape[1] == mt.shape[1]);
        if (!ok) break;
        /* st_map checked the sizes (end - begin == numel * 4) and that no two tensors overlap */
        offs[i] = t->begin; /* bytes into the data section, for now */
        if (t->begin < lo) lo = t->begin;
        if (t->end > hi) hi = t->end;
        bytes += t->end - t->begin;
    }
    /* No overlaps and a span equal to the sum of the sizes: the tensors tile [lo, hi). */
    ok = ok && bytes == m->n_params * sizeof(float) && hi - lo == bytes &&
         (8 + st.header_len + lo) % sizeof(float) == 0;
    if (ok && m->head && st_find(&st, "score.weight")) {
        int64_t shape[2] = {m->cfg.n_labels, m->cfg.C};
        ok = st_read_f32(&st, "score.weight", 2, shape, m->head, &ignored) == LL_OK;
    }
    if (ok) {
        for (int i = 0; i < n; i++) offs[i] = (offs[i] - lo) / sizeof(float);
        char *base = (char *)st.map + 8 + st.header_len + lo;
        /* Read-ahead of the weights: advice only, so a failure changes nothing. */
        long ps = sysconf(_SC_PAGESIZE);
        size_t page = ps > 0 ? (size_t)ps : 4096;
        size_t from = (size_t)(base - (char *)st.map) / page * page;
        (void)posix_madvise((char *)st.map + from, st.map_len - from, POSIX_MADV_WILLNEED);
        model_map_params(m, st.map, st.map_len, (float *)(void *)base, offs);
        st.map = NULL; /* the model owns the mapping now */
    }
    ll_free(offs);
    st_free(&st);
    return ok;
}

LLStatus checkpoint_open(const char *dir, const ModelOptions *o, int n_labels, LoadedModel *lm, LLError *err) {
    memset(lm, 0, sizeof *lm);
    LLStatus rc = checkpoint_load_config(dir, &lm->cfg, err);
    if (rc) return rc;
    if (n_labels > 0) lm->cfg.n_labels = n_labels;
    rc = tok_load(dir, &lm->tok, err);
    if (rc) return ll_err_prefix(err, "model folder '%s'", dir);
    if (tok_vocab_size(lm->tok) > lm->cfg.V) {
        rc = ll_err(err, LL_ERR_FORMAT, "model folder '%s': the tokenizer has %d ids but vocab_size is %d", dir,
                    tok_vocab_size(lm->tok), lm->cfg.V);
        checkpoint_close(lm);
        return rc;
    }
    ModelOptions opts = *o;
    if (opts.T > lm->cfg.max_T) opts.T = lm->cfg.max_T;
    rc = checkpoint_check_tensors(dir, &lm->cfg, err); /* before any buffer is sized from config.json */
    if (!rc) rc = model_init_unbacked(&lm->model, &lm->cfg, &opts, err);
    if (!rc && !map_weights(dir, &lm->model)) { /* the copy path, as checkpoint_load_weights does */
        model_alloc_params(&lm->model);
        rc = checkpoint_load_weights(dir, &lm->model, NULL, err);
    }
    if (rc) {
        checkpoint_close(lm);
        return rc;
    }
    return LL_OK;
}

void checkpoint_close(LoadedModel *lm) {
    if (lm->model.lay) model_free(&lm->model); /* initialised, with or without weights */
    if (lm->tok) tok_free(lm->tok);
    memset(lm, 0, sizeof *lm);
}
