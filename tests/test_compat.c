/* test_compat: every key transformers and PEFT write into config.json and adapter_config.json is
 * understood, known irrelevant or refused by name (engine/compat.h), and the refusals name the
 * file, the key and the value.
 *
 * The key lists below are what the tools write today: LlamaConfig (transformers 4.4x-5: its own
 * __init__ arguments, PretrainedConfig's common attributes, the v5 spellings dtype and
 * rope_parameters) and PEFT 0.19's LoraConfig, AdaLoraConfig and VeraConfig (their dataclass
 * fields and PeftConfig's base keys), read from the tools' sources. A key PEFT or transformers adds
 * later is refused until it is added to compat.c's table, which this test then covers. */
#define _XOPEN_SOURCE 700
#define TU_TMP_NAME "compat"
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "adapter.h"
#include "checkpoint.h"
#include "compat.h"
#include "ops.h"
#include "rng.h"
#include "tokenizer.h"
#include "util.h"

static const char *const llama_keys[] = {
    /* LlamaConfig.__init__ */
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "use_cache", "pad_token_id", "bos_token_id", "eos_token_id", "pretraining_tp", "tie_word_embeddings",
    "rope_theta", "rope_scaling", "attention_bias", "attention_dropout", "mlp_bias", "head_dim",
    /* written by to_json_string / save_pretrained */
    "architectures", "model_type", "torch_dtype", "transformers_version", "_name_or_path",
    /* transformers v5 */
    "dtype", "rope_parameters",
    /* PretrainedConfig's common attributes (to_dict without the diff) */
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size",
    "add_cross_attention", "tie_encoder_decoder", "max_length", "min_length", "do_sample", "early_stopping",
    "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix",
    "sep_token_id", "decoder_start_token_id", "task_specific_params", "problem_type", "_commit_hash",
    "_attn_implementation", "quantization_config",
};

#define PEFT_BASE "peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping", "peft_version"
#define LORA_FIELDS                                                                                              \
    "r", "target_modules", "exclude_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora", \
        "modules_to_save", "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern",           \
        "alpha_pattern", "megatron_config", "megatron_core", "trainable_token_indices", "loftq_config",            \
        "eva_config", "corda_config", "use_dora", "use_qalora", "qalora_group_size", "layer_replication",          \
        "lora_bias", "target_parameters", "alora_invocation_tokens", "arrow_config", "ensure_weight_tying",       \
        "lora_ga_config", "use_bdlora"

static const char *const lora_keys[] = {PEFT_BASE, LORA_FIELDS};
static const char *const adalora_keys[] = {PEFT_BASE, LORA_FIELDS, "target_r", "init_r", "tinit", "tfinal",
                                           "deltaT", "beta1", "beta2", "orth_reg_weight", "total_step"};
static const char *const vera_keys[] = {PEFT_BASE, "r", "target_modules", "projection_prng_key", "save_projection",
                                        "vera_dropout", "d_initial", "fan_in_fan_out", "bias", "modules_to_save",
                                        "init_weights", "layers_to_transform", "layers_pattern"};

static void check_keys(CompatFile f, unsigned method, const char *const *keys, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        const CompatKey *k = compat_lookup(f, method, keys[i]);
        ck_assert_msg(k != NULL, "%s key '%s' is in none of the three lists", what, keys[i]);
        ck_assert_msg(k->kind == COMPAT_READ || k->kind == COMPAT_IGNORED || k->kind == COMPAT_REFUSED, "%s", keys[i]);
        ck_assert_msg(k->why && strlen(k->why) > 3, "%s key '%s' says no why", what, keys[i]);
        /* a refused feature must say which values ask for nothing */
        if (k->kind == COMPAT_REFUSED) ck_assert_msg(k->accept != NULL, "%s key '%s' refused without an accept list", what, keys[i]);
    }
}

START_TEST(t_every_key_classified) {
    check_keys(COMPAT_MODEL_CONFIG, 0, llama_keys, sizeof llama_keys / sizeof llama_keys[0], "LlamaConfig");
    check_keys(COMPAT_ADAPTER_CONFIG, COMPAT_LORA, lora_keys, sizeof lora_keys / sizeof lora_keys[0], "LoraConfig");
    check_keys(COMPAT_ADAPTER_CONFIG, COMPAT_ADALORA, adalora_keys, sizeof adalora_keys / sizeof adalora_keys[0],
               "AdaLoraConfig");
    check_keys(COMPAT_ADAPTER_CONFIG, COMPAT_VERA, vera_keys, sizeof vera_keys / sizeof vera_keys[0], "VeraConfig");
    /* every accept list of the tables parses as a JSON array; no key is listed twice per method */
    for (int f = 0; f < 2; f++) {
        int n;
        const CompatKey *t = compat_table((CompatFile)f, &n);
        for (int i = 0; i < n; i++) {
            if (t[i].accept) {
                cJSON *a = cJSON_Parse(t[i].accept);
                ck_assert_msg(cJSON_IsArray(a), "accept list of '%s' is not a JSON array", t[i].key);
                cJSON_Delete(a);
            }
            for (int j = i + 1; j < n; j++)
                ck_assert_msg(strcmp(t[i].key, t[j].key) != 0 || !(t[i].methods & t[j].methods) || f == 0 ? 1 : 0,
                              "'%s' listed twice", t[i].key);
            for (int j = i + 1; f == 0 && j < n; j++) ck_assert_msg(strcmp(t[i].key, t[j].key) != 0, "'%s' twice", t[i].key);
        }
    }
    /* a key of another method is not one of this method's */
    ck_assert_ptr_null(compat_lookup(COMPAT_ADAPTER_CONFIG, COMPAT_LORA, "vera_dropout"));
    ck_assert_ptr_null(compat_lookup(COMPAT_ADAPTER_CONFIG, COMPAT_VERA, "lora_alpha"));
    ck_assert_ptr_null(compat_lookup(COMPAT_MODEL_CONFIG, 0, "no_such_key"));
}
END_TEST

/* The config.json loralab writes, with `key` set to `value` (JSON text; NULL removes nothing). */
static void write_model_config(const char *dir, const char *key, const char *value) {
    ModelConfig c = {0};
    c.V = 300, c.C = 16, c.L = 1, c.NH = 2, c.NKV = 2, c.HS = 8, c.F = 32, c.max_T = 64;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.02f, c.tied = 1, c.bos_id = 256, c.eos_id = 257, c.pad_id = 258;
    char *text = checkpoint_config_json(&c, NULL);
    cJSON *o = cJSON_Parse(text);
    cJSON_free(text);
    if (key) {
        cJSON_DeleteItemFromObjectCaseSensitive(o, key);
        cJSON_AddItemToObject(o, key, cJSON_Parse(value));
    }
    text = cJSON_Print(o);
    cJSON_Delete(o);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    tu_write_text(path, text);
    cJSON_free(text);
}

START_TEST(t_model_config_refusals) {
    LLError err;
    ModelConfig c;
    write_model_config(tu_dir, NULL, NULL);
    CK_OK(checkpoint_load_config(tu_dir, &c, &err));
    /* what HF writes with the neutral values loads */
    const char *fine[][2] = {{"attention_bias", "false"}, {"mlp_bias", "false"}, {"rope_scaling", "null"},
                             {"attention_dropout", "0.0"}, {"transformers_version", "\"4.46.0\""},
                             {"torch_dtype", "\"bfloat16\""}, {"pretraining_tp", "2"},
                             {"rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 500000.0}"}};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        write_model_config(tu_dir, fine[i][0], fine[i][1]);
        CK_OK(checkpoint_load_config(tu_dir, &c, &err));
    }
    ck_assert_float_eq(c.rope_theta, 500000.0f);
    const char *bad[][3] = {
        {"hidden_act", "\"swish\"", "swish"},
        {"rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "llama3"},
        {"rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", "yarn"},
        {"attention_dropout", "0.1", "0.1"},
        {"quantization_config", "{\"quant_method\": \"gptq\"}", "gptq"},
        {"some_future_key", "1", "1"},
        {"architectures", "[\"LlamaForTokenClassification\"]", "LlamaForTokenClassification"},
        {"eos_token_id", "[128001, 128009]", "128009"},
        {"problem_type", "\"regression\"", "regression"},
        {"model_type", "\"mistral\"", "mistral"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_model_config(tu_dir, bad[i][0], bad[i][1]);
        LLStatus st = checkpoint_load_config(tu_dir, &c, &err);
        ck_assert_msg(st == LL_ERR_FORMAT, "%s = %s loaded (%s)", bad[i][0], bad[i][1], ll_status_name(st));
        ck_assert_msg(strstr(err.msg, "config.json") && strstr(err.msg, bad[i][0]) && strstr(err.msg, bad[i][2]),
                      "message does not name file, key and value: %s", err.msg);
    }
}
END_TEST

static LLStatus parse_adapter(const char *json, LLError *err) {
    AdapterConfig c;
    return adapter_config_parse(json, strlen(json), "ad/adapter_config.json", &c, err);
}

START_TEST(t_adapter_config_refusals) {
    LLError err;
    /* a PEFT 0.19 LoRA config with every key at its default loads */
    const char *peft =
        "{\"alora_invocation_tokens\": null, \"alpha_pattern\": {}, \"arrow_config\": null, \"auto_mapping\": null,"
        " \"base_model_name_or_path\": \"x\", \"bias\": \"none\", \"corda_config\": null, \"ensure_weight_tying\": false,"
        " \"eva_config\": null, \"exclude_modules\": null, \"fan_in_fan_out\": false, \"inference_mode\": true,"
        " \"init_lora_weights\": true, \"layer_replication\": null, \"layers_pattern\": null,"
        " \"layers_to_transform\": null, \"loftq_config\": {}, \"lora_alpha\": 16, \"lora_bias\": false,"
        " \"lora_dropout\": 0.05, \"lora_ga_config\": null, \"megatron_config\": null, \"megatron_core\": \"megatron.core\","
        " \"modules_to_save\": null, \"peft_type\": \"LORA\", \"peft_version\": \"0.19.1\", \"qalora_group_size\": 16,"
        " \"r\": 8, \"rank_pattern\": {}, \"revision\": null, \"target_modules\": [\"q_proj\", \"v_proj\"],"
        " \"target_parameters\": null, \"task_type\": \"CAUSAL_LM\", \"trainable_token_indices\": null,"
        " \"use_bdlora\": null, \"use_dora\": false, \"use_qalora\": false, \"use_rslora\": false}";
    CK_OK(parse_adapter(peft, &err));
    CK_OK(parse_adapter("{\"peft_type\": \"VERA\", \"r\": 4, \"init_weights\": true, \"vera_dropout\": 0.0,"
                        " \"save_projection\": true, \"projection_prng_key\": 0, \"d_initial\": 0.1}", &err));
    const char *bad[][2] = {
        {"{\"peft_type\": \"LORA\", \"bias\": \"all\"}", "bias"},
        {"{\"peft_type\": \"LORA\", \"exclude_modules\": [\"q_proj\"]}", "exclude_modules"},
        {"{\"peft_type\": \"LORA\", \"modules_to_save\": [\"lm_head\"]}", "lm_head"},
        {"{\"peft_type\": \"LORA\", \"layer_replication\": [[0, 1]]}", "layer_replication"},
        {"{\"peft_type\": \"LORA\", \"task_type\": \"TOKEN_CLS\"}", "TOKEN_CLS"},
        {"{\"peft_type\": \"LORA\", \"vera_dropout\": 0.1}", "vera_dropout"},
        {"{\"peft_type\": \"VERA\", \"lora_alpha\": 8}", "lora_alpha"},
        {"{\"peft_type\": \"LORA\", \"a_new_peft_key\": null}", "a_new_peft_key"},
        {"{\"peft_type\": \"LORA\", \"layers_pattern\": \"h\"}", "layers_pattern"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        LLStatus st = parse_adapter(bad[i][0], &err);
        ck_assert_msg(st == LL_ERR_FORMAT, "%s loaded (%s)", bad[i][0], ll_status_name(st));
        ck_assert_msg(strstr(err.msg, "ad/adapter_config.json") && strstr(err.msg, bad[i][1]),
                      "message does not name the file and the key: %s", err.msg);
    }
}
END_TEST

/* A model folder with attention_bias, mlp_bias and hidden_act gelu_pytorch_tanh: config.json says
 * so, model.safetensors holds HF's .bias tensors, and the folder opens to the same logits (both the
 * mapped and the copy path read the biases). */
START_TEST(t_biased_model_folder) {
    LLError err;
    ModelConfig c = {0};
    c.V = 300, c.C = 16, c.L = 2, c.NH = 2, c.NKV = 1, c.HS = 8, c.F = 24, c.max_T = 8;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.1f, c.tied = 0, c.bos_id = 256, c.eos_id = 257, c.pad_id = 258;
    c.act = ACT_GELU_TANH, c.attn_bias = 1, c.mlp_bias = 1;
    Model m;
    ModelOptions o = {1, 8, 0, 0};
    CK_OK(model_init(&m, &c, &o, &err));
    model_init_weights(&m, 5);
    Rng r;
    rng_seed(&r, 6);
    for (int l = 0; l < c.L; l++)
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            int in, out;
            model_module_dims(&c, mod, &in, &out);
            rng_fill_normal(&r, model_bias(&m, l, mod), (size_t)out, 0.5f);
        }
    int ids[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tg[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    Batch b = {.B = 1, .T = 8, .ids = ids, .targets = tg};
    float want = model_forward(&m, &b, 0);
    Tokenizer *tok = tok_new_bytes();
    char dir[512];
    CK_OK(checkpoint_save(&m, tok, NULL, tu_path(dir, sizeof dir, "biased"), &err));
    tok_free(tok);
    ModelConfig back;
    CK_OK(checkpoint_load_config(dir, &back, &err));
    ck_assert(back.attn_bias == 1 && back.mlp_bias == 1 && back.act == ACT_GELU_TANH);
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = tu_slurp(path, NULL);
    cJSON *cj = cJSON_Parse(text);
    ck_assert_msg(cJSON_IsTrue(cJSON_GetObjectItem(cj, "attention_bias")) && cJSON_IsTrue(cJSON_GetObjectItem(cj, "mlp_bias")) &&
                      strcmp(cJSON_GetObjectItem(cj, "hidden_act")->valuestring, "gelu_pytorch_tanh") == 0,
                  "%s", text);
    cJSON_Delete(cj);
    ll_free(text);
    LoadedModel lm;
    CK_OK(checkpoint_open(dir, &o, 0, &lm, &err));
    ck_assert(model_forward(&lm.model, &b, 0) == want);
    ck_assert_ptr_nonnull(model_bias(&lm.model, 1, MOD_DOWN));
    ck_assert(model_bias(&lm.model, 1, MOD_DOWN)[3] == model_bias(&m, 1, MOD_DOWN)[3]);
    checkpoint_close(&lm);
    model_free(&m);
    /* a config that asks for biases its file lacks is refused, naming the tensor */
    ModelConfig p = {0};
    p.V = 300, p.C = 16, p.L = 1, p.NH = 2, p.NKV = 2, p.HS = 8, p.F = 32, p.max_T = 64;
    p.eps = 1e-5f, p.rope_theta = 10000.0f, p.init_range = 0.02f, p.tied = 1, p.bos_id = 256, p.eos_id = 257, p.pad_id = 258;
    CK_OK(model_init(&m, &p, &o, &err));
    model_init_weights(&m, 5);
    tok = tok_new_bytes();
    CK_OK(checkpoint_save(&m, tok, NULL, tu_path(dir, sizeof dir, "plain"), &err));
    tok_free(tok);
    model_free(&m);
    write_model_config(dir, "attention_bias", "true"); /* the same config as p, but with biases */
    CK_OK(checkpoint_load_config(dir, &back, &err));
    ck_assert_int_eq(checkpoint_check_tensors(dir, &back, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "model.layers.0.self_attn.q_proj.bias' is missing"), "%s", err.msg);
}
END_TEST

Suite *compat_suite(void) {
    Suite *s = suite_create("compat");
    TCase *tc = tu_tcase(s, "core", 0, 0);
    tcase_add_test(tc, t_every_key_classified);
    TCase *lim = tu_tcase(s, "limits", 1, 0);
    tcase_add_test(lim, t_model_config_refusals);
    tcase_add_test(lim, t_adapter_config_refusals);
    tcase_add_test(lim, t_biased_model_folder);
    return s;
}
