/* compat: see compat.h. The tables below are the one place where a key of config.json or
 * adapter_config.json is classified; the README's "Models and adapters other tools read" section
 * summarises them. */
#include "compat.h"

#include <stdio.h>
#include <string.h>

#define GEN "a generation default of older configs (now generation_config.json): eval and training do not sample, and generate takes its settings from its flags"

static const CompatKey model_keys[] = {
    /* understood */
    {"architectures", COMPAT_READ, 0, NULL, "LlamaForCausalLM or LlamaForSequenceClassification"},
    {"model_type", COMPAT_READ, 0, "[\"llama\"]", "the architecture loralab implements"},
    {"vocab_size", COMPAT_READ, 0, NULL, "the vocabulary size V"},
    {"hidden_size", COMPAT_READ, 0, NULL, "the width C"},
    {"intermediate_size", COMPAT_READ, 0, NULL, "the MLP width F"},
    {"num_hidden_layers", COMPAT_READ, 0, NULL, "the layer count L"},
    {"num_attention_heads", COMPAT_READ, 0, NULL, "the head count NH"},
    {"num_key_value_heads", COMPAT_READ, 0, NULL, "NKV (grouped-query attention)"},
    {"head_dim", COMPAT_READ, 0, NULL, "the head size HS"},
    {"max_position_embeddings", COMPAT_READ, 0, NULL, "the context length: longer sequences are refused"},
    {"initializer_range", COMPAT_READ, 0, NULL, "std of the init of new weights"},
    {"rms_norm_eps", COMPAT_READ, 0, NULL, "RMSNorm's epsilon"},
    {"rope_theta", COMPAT_READ, 0, NULL, "RoPE's base (transformers v4)"},
    {"rope_parameters", COMPAT_READ, 0, NULL, "RoPE's base (transformers v5); rope_type other than default is refused"},
    {"tie_word_embeddings", COMPAT_READ, 0, NULL, "the LM head is the embedding"},
    {"bos_token_id", COMPAT_READ, 0, NULL, "the start token of classification rows"},
    {"eos_token_id", COMPAT_READ, 0, NULL, "generate stops at it (a single id; a list is refused)"},
    {"pad_token_id", COMPAT_READ, 0, NULL, "the padding of classification rows"},
    {"id2label", COMPAT_READ, 0, NULL, "the classes of a classification head"},
    {"label2id", COMPAT_READ, 0, NULL, "the inverse of id2label"},
    {"num_labels", COMPAT_READ, 0, NULL, "the class count when id2label is absent"},
    {"problem_type", COMPAT_READ, 0, "[null, \"single_label_classification\"]",
     "loralab's classification loss is single-label cross-entropy (regression and multi-label are not implemented)"},
    {"hidden_act", COMPAT_READ, 0, "[\"silu\", \"gelu\", \"gelu_pytorch_tanh\", \"relu\"]",
     "the MLP's activation: SiLU, exact GELU, tanh GELU and ReLU are implemented (gelu_new and others are not)"},
    {"attention_bias", COMPAT_READ, 0, "[false, true, null]", "q/k/v/o_proj have a .bias tensor each"},
    {"mlp_bias", COMPAT_READ, 0, "[false, true, null]", "gate/up/down_proj have a .bias tensor each"},
    {"rope_scaling", COMPAT_REFUSED, 0, "[null]",
     "scaled RoPE (linear, dynamic, yarn, longrope, llama3) is not implemented"},
    {"attention_dropout", COMPAT_REFUSED, 0, "[0, null]",
     "dropout on the attention probabilities (HF applies it in training) is not implemented"},
    {"quantization_config", COMPAT_REFUSED, 0, "[null]",
     "a pre-quantized checkpoint (GPTQ, AWQ, bitsandbytes): loralab reads float tensors (and quantizes them itself with --base-quant)"},
    {"pruned_heads", COMPAT_REFUSED, 0, "[null, {}]", "pruned attention heads are not implemented"},
    {"is_encoder_decoder", COMPAT_REFUSED, 0, "[false, null]", "Llama is a decoder only"},
    {"add_cross_attention", COMPAT_REFUSED, 0, "[false, null]", "cross-attention is not implemented"},
    {"cross_attention_hidden_size", COMPAT_REFUSED, 0, "[null]", "cross-attention is not implemented"},
    {"tie_encoder_decoder", COMPAT_REFUSED, 0, "[false, null]", "Llama has no encoder"},
    /* irrelevant */
    {"pretraining_tp", COMPAT_IGNORED, 0, NULL,
     "HF splits each projection into pretraining_tp slices and sums them: the same products in another order"},
    {"use_cache", COMPAT_IGNORED, 0, NULL, "whether HF keeps a key/value cache: the same numbers either way"},
    {"torch_dtype", COMPAT_IGNORED, 0, NULL,
     "the dtype the weights were saved in: loralab reads F32, F16 and BF16 tensors and computes in fp32"},
    {"dtype", COMPAT_IGNORED, 0, NULL, "torch_dtype's name in transformers v5"},
    {"transformers_version", COMPAT_IGNORED, 0, NULL, "the release that wrote the file"},
    {"_name_or_path", COMPAT_IGNORED, 0, NULL, "where the model was loaded from"},
    {"_commit_hash", COMPAT_IGNORED, 0, NULL, "the hub revision it was loaded from"},
    {"_attn_implementation", COMPAT_IGNORED, 0, NULL,
     "which kernel (eager, sdpa, flash) computes the same softmax attention"},
    {"_attn_implementation_autoset", COMPAT_IGNORED, 0, NULL, "the same"},
    {"output_attentions", COMPAT_IGNORED, 0, NULL, "what HF returns besides the logits"},
    {"output_hidden_states", COMPAT_IGNORED, 0, NULL, "what HF returns besides the logits"},
    {"return_dict", COMPAT_IGNORED, 0, NULL, "the Python type of HF's outputs"},
    {"torchscript", COMPAT_IGNORED, 0, NULL, "PyTorch export"},
    {"use_bfloat16", COMPAT_IGNORED, 0, NULL, "a TensorFlow/JAX dtype hint"},
    {"tf_legacy_loss", COMPAT_IGNORED, 0, NULL, "TensorFlow only"},
    {"chunk_size_feed_forward", COMPAT_IGNORED, 0, NULL, "Llama's modeling code does not use it"},
    {"is_decoder", COMPAT_IGNORED, 0, NULL, "Llama is causal whatever it says"},
    {"finetuning_task", COMPAT_IGNORED, 0, NULL, "a label for people"},
    {"tokenizer_class", COMPAT_IGNORED, 0, NULL, "the tokenizer is read from tokenizer.json"},
    {"prefix", COMPAT_IGNORED, 0, NULL, "a prompt prefix for pipelines"},
    {"task_specific_params", COMPAT_IGNORED, 0, NULL, "pipeline settings"},
    {"sep_token_id", COMPAT_IGNORED, 0, NULL, "Llama uses no separator token"},
    {"decoder_start_token_id", COMPAT_IGNORED, 0, NULL, "encoder-decoder models only"},
    {"max_length", COMPAT_IGNORED, 0, NULL, GEN},
    {"min_length", COMPAT_IGNORED, 0, NULL, GEN},
    {"do_sample", COMPAT_IGNORED, 0, NULL, GEN},
    {"early_stopping", COMPAT_IGNORED, 0, NULL, GEN},
    {"num_beams", COMPAT_IGNORED, 0, NULL, GEN},
    {"num_beam_groups", COMPAT_IGNORED, 0, NULL, GEN},
    {"diversity_penalty", COMPAT_IGNORED, 0, NULL, GEN},
    {"temperature", COMPAT_IGNORED, 0, NULL, GEN},
    {"top_k", COMPAT_IGNORED, 0, NULL, GEN},
    {"top_p", COMPAT_IGNORED, 0, NULL, GEN},
    {"typical_p", COMPAT_IGNORED, 0, NULL, GEN},
    {"repetition_penalty", COMPAT_IGNORED, 0, NULL, GEN},
    {"length_penalty", COMPAT_IGNORED, 0, NULL, GEN},
    {"no_repeat_ngram_size", COMPAT_IGNORED, 0, NULL, GEN},
    {"encoder_no_repeat_ngram_size", COMPAT_IGNORED, 0, NULL, GEN},
    {"bad_words_ids", COMPAT_IGNORED, 0, NULL, GEN},
    {"num_return_sequences", COMPAT_IGNORED, 0, NULL, GEN},
    {"output_scores", COMPAT_IGNORED, 0, NULL, GEN},
    {"return_dict_in_generate", COMPAT_IGNORED, 0, NULL, GEN},
    {"forced_bos_token_id", COMPAT_IGNORED, 0, NULL, GEN},
    {"forced_eos_token_id", COMPAT_IGNORED, 0, NULL, GEN},
    {"remove_invalid_values", COMPAT_IGNORED, 0, NULL, GEN},
    {"exponential_decay_length_penalty", COMPAT_IGNORED, 0, NULL, GEN},
    {"suppress_tokens", COMPAT_IGNORED, 0, NULL, GEN},
    {"begin_suppress_tokens", COMPAT_IGNORED, 0, NULL, GEN},
};

enum { L_ = COMPAT_LORA, A_ = COMPAT_ADALORA, V_ = COMPAT_VERA, LA_ = COMPAT_LORA | COMPAT_ADALORA, ALL_ = 7 };

static const CompatKey adapter_keys[] = {
    /* PeftConfig: every method */
    {"peft_type", COMPAT_READ, ALL_, NULL, "LORA, ADALORA or VERA"},
    {"task_type", COMPAT_READ, ALL_, "[null, \"CAUSAL_LM\", \"SEQ_CLS\"]",
     "a causal LM, or a classifier with a score head (other heads are not implemented)"},
    {"base_model_name_or_path", COMPAT_IGNORED, ALL_, NULL,
     "the base it was trained on: loralab uses the --model folder it is given and checks every tensor's shape against it"},
    {"revision", COMPAT_IGNORED, ALL_, NULL, "the hub revision of that base"},
    {"inference_mode", COMPAT_IGNORED, ALL_, NULL, "PEFT's train/eval switch (save_pretrained always writes true)"},
    {"auto_mapping", COMPAT_IGNORED, ALL_, NULL, "which Python class PEFT instantiates"},
    {"peft_version", COMPAT_IGNORED, ALL_, NULL, "the release that wrote the file"},
    {"runtime_config", COMPAT_IGNORED, ALL_, NULL, "PEFT drops it before saving"},
    /* the tuners' common keys */
    {"r", COMPAT_READ, ALL_, NULL, "the rank (AdaLoRA uses init_r)"},
    {"target_modules", COMPAT_READ, ALL_, NULL, "which linear layers are adapted"},
    {"layers_to_transform", COMPAT_READ, ALL_, NULL, "which layers are adapted"},
    {"layers_pattern", COMPAT_READ, ALL_, "[null, \"layers\", [\"layers\"]]",
     "Llama's decoder layers are model.layers, the only pattern there is"},
    {"modules_to_save", COMPAT_READ, ALL_,
     "[null, [], [\"score\"], [\"classifier\", \"score\"], [\"score\", \"classifier\"], [\"classifier\"]]",
     "the classification head (score.weight) is saved and loaded; other fully trained modules are not implemented"},
    {"fan_in_fan_out", COMPAT_IGNORED, ALL_, NULL,
     "Llama's projections are nn.Linear, for which PEFT itself forces false (with a warning)"},
    {"bias", COMPAT_REFUSED, ALL_, "[\"none\", null]",
     "'all' and 'lora_only' train and save the base layers' biases, which loralab does not"},
    /* LoRA and AdaLoRA (AdaLoraConfig extends LoraConfig) */
    {"lora_alpha", COMPAT_READ, LA_, NULL, "the scale's numerator"},
    {"lora_dropout", COMPAT_READ, LA_, NULL, "dropout on the adapter's input (training only)"},
    {"use_rslora", COMPAT_READ, LA_, NULL, "scale alpha/sqrt(r)"},
    {"use_dora", COMPAT_READ, LA_, NULL, "DoRA's magnitude vector"},
    {"init_lora_weights", COMPAT_READ, LA_, NULL,
     "true, false, gaussian, pissa (re-applied to the base on load) and loftq; other inits are refused"},
    {"rank_pattern", COMPAT_READ, LA_, NULL, "per-module ranks (AdaLoRA: the saved rank masks)"},
    {"alpha_pattern", COMPAT_READ, LA_, NULL, "per-module alphas"},
    {"loftq_config", COMPAT_IGNORED, LA_, NULL, "LoftQ's settings at init time: a LoftQ adapter's A and B come from the file"},
    {"eva_config", COMPAT_IGNORED, LA_, NULL, "EVA's init-time settings (init_lora_weights 'eva' itself is refused)"},
    {"corda_config", COMPAT_IGNORED, LA_, NULL, "CorDA's init-time settings (init_lora_weights 'corda' itself is refused)"},
    {"lora_ga_config", COMPAT_IGNORED, LA_, NULL, "LoRA-GA's init-time settings (its init is refused by init_lora_weights)"},
    {"megatron_core", COMPAT_IGNORED, LA_, NULL, "the Megatron module path, used only with megatron_config"},
    {"qalora_group_size", COMPAT_IGNORED, LA_, NULL, "used only with use_qalora"},
    {"ensure_weight_tying", COMPAT_IGNORED, LA_, NULL,
     "keeps adapters of tied embedding and LM head tied: loralab adapts neither"},
    {"lora_bias", COMPAT_READ, L_, "[false, true, null]", "lora_B's bias: y += s·(B·A·x + b), merged into the base bias"},
    {"lora_bias", COMPAT_REFUSED, A_, "[false, null]", "a bias on AdaLoRA's lora_B is not implemented"},
    {"exclude_modules", COMPAT_REFUSED, LA_, "[null, []]", "excluding modules is not implemented"},
    {"megatron_config", COMPAT_REFUSED, LA_, "[null, {}]", "Megatron's parallel layers"},
    {"trainable_token_indices", COMPAT_REFUSED, LA_, "[null, [], {}]", "training selected embedding rows is not implemented"},
    {"layer_replication", COMPAT_REFUSED, LA_, "[null, []]", "stacking replicated layers is not implemented"},
    {"use_qalora", COMPAT_REFUSED, LA_, "[false, null]", "QALoRA (GPTQ bases) is not implemented"},
    {"target_parameters", COMPAT_REFUSED, LA_, "[null, []]", "LoRA on bare parameters (MoE experts) is not implemented"},
    {"alora_invocation_tokens", COMPAT_REFUSED, LA_, "[null, []]",
     "activated LoRA (the adapter acts only after these tokens) is not implemented"},
    {"arrow_config", COMPAT_REFUSED, LA_, "[null]", "Arrow routing among LoRA experts is not implemented"},
    {"use_bdlora", COMPAT_REFUSED, LA_, "[false, null]", "block-diagonal LoRA is not implemented"},
    /* AdaLoRA */
    {"target_r", COMPAT_READ, A_, NULL, "the average final rank"},
    {"init_r", COMPAT_READ, A_, NULL, "the initial rank"},
    {"tinit", COMPAT_READ, A_, NULL, "the budget schedule"},
    {"tfinal", COMPAT_READ, A_, NULL, "the budget schedule"},
    {"deltaT", COMPAT_READ, A_, NULL, "the budget schedule"},
    {"beta1", COMPAT_READ, A_, NULL, "importance smoothing"},
    {"beta2", COMPAT_READ, A_, NULL, "uncertainty smoothing"},
    {"orth_reg_weight", COMPAT_READ, A_, NULL, "the orthogonality regulariser"},
    {"total_step", COMPAT_READ, A_, NULL, "the budget schedule"},
    /* VeRA */
    {"projection_prng_key", COMPAT_READ, V_, NULL, "the seed of the shared projections"},
    {"save_projection", COMPAT_READ, V_, NULL, "whether vera_A/vera_B are in the file"},
    {"vera_dropout", COMPAT_READ, V_, NULL, "dropout on the adapter's input (training only)"},
    {"d_initial", COMPAT_READ, V_, NULL, "the init of lambda_d"},
    {"init_weights", COMPAT_IGNORED, V_, NULL, "VeRA's init switch: the saved lambdas replace what it made"},
};

const CompatKey *compat_table(CompatFile f, int *n) {
    if (f == COMPAT_MODEL_CONFIG) {
        *n = (int)(sizeof model_keys / sizeof model_keys[0]);
        return model_keys;
    }
    *n = (int)(sizeof adapter_keys / sizeof adapter_keys[0]);
    return adapter_keys;
}

const CompatKey *compat_lookup(CompatFile f, unsigned method, const char *key) {
    int n;
    const CompatKey *t = compat_table(f, &n);
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].key, key) == 0 && (f == COMPAT_MODEL_CONFIG || (t[i].methods & method))) return &t[i];
    return NULL;
}

/* v as compact JSON, cut to fit `cap` with "..." */
static void value_text(const cJSON *v, char *out, size_t cap) {
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(out, cap, "?");
        return;
    }
    if (strlen(s) >= cap && cap > 4) snprintf(out, cap, "%.*s...", (int)(cap - 4), s);
    else snprintf(out, cap, "%s", s);
    cJSON_free(s);
}

static int accepted(const char *accept, const cJSON *v) {
    cJSON *list = cJSON_Parse(accept);
    LL_ASSERT(cJSON_IsArray(list)); /* the table is ours */
    int ok = 0;
    for (const cJSON *a = list->child; a && !ok; a = a->next) ok = cJSON_Compare(a, v, 1);
    cJSON_Delete(list);
    return ok;
}

LLStatus compat_check_keys(CompatFile f, unsigned method, const cJSON *obj, const char *path, LLError *err) {
    if (!cJSON_IsObject(obj)) return ll_err(err, LL_ERR_FORMAT, "%s: not a JSON object", path);
    for (const cJSON *v = obj->child; v; v = v->next) {
        const CompatKey *k = compat_lookup(f, method, v->string);
        char val[96];
        if (!k) {
            value_text(v, val, sizeof val);
            return ll_err(err, LL_ERR_FORMAT,
                          "%s: key '%s' (%s) is not one loralab knows%s, so it cannot tell whether it changes what "
                          "the file means: refused (remove the key if it asks for nothing)",
                          path, v->string, val, f == COMPAT_ADAPTER_CONFIG ? " for this peft_type" : "");
        }
        if (k->accept && !accepted(k->accept, v)) {
            value_text(v, val, sizeof val);
            return ll_err(err, LL_ERR_FORMAT, "%s: key '%s' is %s, which loralab does not implement: %s (accepted: %s)",
                          path, v->string, val, k->why, k->accept);
        }
    }
    return LL_OK;
}
