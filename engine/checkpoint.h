/* checkpoint: model folders that Hugging Face transformers can load.
 *
 *   DIR/config.json          LlamaConfig keys (architectures LlamaForCausalLM, or
 *                            LlamaForSequenceClassification with id2label/label2id)
 *   DIR/model.safetensors    HF tensor names (model.layers.0.self_attn.q_proj.weight, ...), F32;
 *                            no lm_head.weight when tied; score.weight for classification
 *   DIR/tokenizer.json ...   the tokenizer (tokenizer.h)
 *
 * A folder is written whole into DIR.tmp.PID and then renamed into place (an existing DIR is moved
 * aside first and removed after), so a crash or a full disk leaves the old folder or the new one. */
#ifndef LL_CHECKPOINT_H
#define LL_CHECKPOINT_H

#include "core.h"
#include "model.h"
#include "tokenizer.h"

/* Reads DIR/config.json into c (both rope_theta spellings of transformers v4/v5). */
LLStatus checkpoint_load_config(const char *dir, ModelConfig *c, LLError *err);
/* Checks DIR/model.safetensors' header (mapped, no data read) against config c: every tensor of
 * the model present with the shape c gives it (an untied lm_head.weight is required unless c has
 * a classification head). LL_ERR_FORMAT naming the file, the tensor and both shapes. checkpoint_open
 * calls it before sizing any buffer; a command calls it before its memory check, so that a
 * config.json that does not describe its weights ({} takes LlamaConfig's 7B defaults) is refused
 * as what it is. */
LLStatus checkpoint_check_tensors(const char *dir, const ModelConfig *c, LLError *err);
/* Loads the weights of DIR into an initialised model of the same config. score.weight is loaded
 * when present and the model has a head; *head_loaded says so. */
LLStatus checkpoint_load_weights(const char *dir, Model *m, int *head_loaded, LLError *err);
/* Writes a model folder: config, weights, and the tokenizer (tok may be NULL). label_names (may be
 * NULL) name the classes for id2label. */
LLStatus checkpoint_save(const Model *m, const Tokenizer *tok, const char *const *label_names, const char *dir,
                         LLError *err);
/* Model config -> config.json text (caller frees with free()). */
char *checkpoint_config_json(const ModelConfig *c, const char *const *label_names);

/* Everything a command needs to use a model folder: config, model of capacity (B, T), tokenizer. */
typedef struct {
    ModelConfig cfg;
    Model model;
    Tokenizer *tok;
} LoadedModel;
/* Opens a model folder. The base weights are mapped from model.safetensors (mmap MAP_PRIVATE,
 * model.params_mapped = 1) instead of copied whenever the file allows it: every tensor of the model
 * is F32 and they tile one contiguous, 4-byte-aligned range of the file, in any order (folders
 * written by checkpoint_save or by HF's writer qualify; F16/BF16 files, a classification folder
 * without lm_head, odd alignment do not). Parallel runs on the same base then share one copy of
 * the weights through the page cache; a run that writes them (full fine-tuning, PiSSA, merge) gets
 * private copies of the pages it writes, so results are bitwise those of the copy path. Otherwise,
 * and whenever mapping fails, the weights are copied as checkpoint_load_weights does, silently. */
LLStatus checkpoint_open(const char *dir, const ModelOptions *o, int n_labels, LoadedModel *lm, LLError *err);
void checkpoint_close(LoadedModel *lm);

#endif
