/* Tests of config loading and resolution (experiments/config.c): typed values and defaults, the
 * model presets, run identity (golden SHA-256 vectors and a golden run key, independence from key
 * order and spelling, keys a method ignores), and every class of bad input with its message.
 *
 * Preset tests read the files of configs/models/ relative to the working directory: `make test` runs from
 * the project root. */
#define _XOPEN_SOURCE 700
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "experiments/config.h"
#include "util.h"

#define BASE "base: {path: models/base}\ntask: {data: data/brown}\n"

/* Loads text as "t.yaml" with the --set list and resolves the document's own point. */
static LLStatus load_resolve(const char *text, const char *const *sets, int n_sets, RunConfig *rc, LLError *err) {
    ConfigDoc *d = NULL;
    memset(rc, 0, sizeof *rc);
    LLStatus st = config_load_text("t.yaml", text, sets, n_sets, &d, err);
    if (!st) st = config_resolve(d, NULL, 0, rc, err);
    config_doc_free(d);
    return st;
}

static void resolve_ok(const char *text, RunConfig *rc) {
    LLError err;
    LLStatus st = load_resolve(text, NULL, 0, rc, &err);
    ck_assert_msg(st == LL_OK, "config failed: %s\n---\n%s", err.msg, text);
}

/* The config must fail with LL_ERR_CONFIG and a message that contains `want`. */
static void expect_error(const char *text, const char *const *sets, int n_sets, const char *want) {
    RunConfig rc;
    LLError err;
    err.msg[0] = '\0';
    LLStatus st = load_resolve(text, sets, n_sets, &rc, &err);
    run_config_free(&rc);
    ck_assert_msg(st == LL_ERR_CONFIG, "expected LL_ERR_CONFIG for\n%s\ngot %s: %s", text, ll_status_name(st), err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message\n  %s\nlacks\n  %s", err.msg, want);
}

static void key_of(const char *text, char key[17]) {
    RunConfig rc;
    resolve_ok(text, &rc);
    memcpy(key, rc.key, 17);
    run_config_free(&rc);
}

/* ---- core ------------------------------------------------------------------------------------ */

START_TEST(t_sha256_vectors) {
    /* FIPS 180-4 examples (one block, two blocks) and the empty message. */
    char hex[65];
    config_sha256_hex("abc", 3, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    config_sha256_hex(two, strlen(two), hex);
    ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    config_sha256_hex("", 0, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* 55 and 56 bytes: the padding's length field just fits, then needs a second block. */
    char buf[64];
    memset(buf, 'a', sizeof buf);
    config_sha256_hex(buf, 55, hex);
    ck_assert_str_eq(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    config_sha256_hex(buf, 56, hex);
    ck_assert_str_eq(hex, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
}
END_TEST

START_TEST(t_values_and_defaults) {
    RunConfig rc;
    resolve_ok("name: demo\n" BASE
               "train:\n  steps: 200\n  lr: 2e-3\n  schedule: linear\n  seed: 7\n"
               "adapter:\n  r: 16\n  alpha: 32\n  dropout: 0.05\n  targets: [q, v, down_proj]\n  layers: [3, 1, 1]\n"
               "  use_rslora: yes\n  rank_pattern: {q_proj: 4}\n",
               &rc);
    TrainConfig td;
    train_config_defaults(&td);
    ck_assert_str_eq(rc.name, "demo");
    ck_assert_int_eq(rc.pretrain, 0);
    ck_assert_str_eq(rc.base_path, "models/base");
    ck_assert_str_eq(rc.task_data, "data/brown");
    ck_assert_int_eq(rc.task_cls, 0);
    ck_assert_int_eq(rc.train.steps, 200);
    ck_assert(rc.train.lr == 2e-3f);
    ck_assert_int_eq(rc.train.schedule, SCHED_LINEAR);
    ck_assert_int_eq(rc.train.batch, td.batch); /* engine defaults where the file is silent */
    ck_assert(rc.train.beta2 == td.beta2);
    ck_assert_int_eq(rc.adapter.method, ADAPTER_LORA);
    ck_assert_int_eq(rc.adapter.r, 16);
    ck_assert(rc.adapter.alpha == 32.0f && rc.adapter.dropout == 0.05f);
    ck_assert_uint_eq(rc.adapter.targets, (1u << MOD_Q) | (1u << MOD_V) | (1u << MOD_DOWN));
    ck_assert_int_eq(rc.adapter.n_layers, 2); /* a set, sorted */
    ck_assert_int_eq(rc.adapter.layers[0], 1);
    ck_assert_int_eq(rc.adapter.layers[1], 3);
    ck_assert_int_eq(rc.adapter.use_rslora, 1);
    ck_assert_int_eq(rc.adapter.n_rank_pattern, 1);
    ck_assert_str_eq(rc.adapter.rank_pattern[0].key, "q_proj");
    ck_assert(rc.adapter.rank_pattern[0].value == 4.0f);
    ck_assert_int_eq(rc.adapter.total_step, 200); /* = train.steps */
    ck_assert_uint_eq(rc.adapter.seed, 7);         /* follows train.seed */
    ck_assert_str_eq(rc.out_dir, CONFIG_DEFAULT_OUT_DIR);
    ck_assert_int_eq((int)strlen(rc.key), 16);
    run_config_free(&rc);

    /* PEFT's per-method defaults: VeRA's r is 256. An explicit adapter.seed is kept. */
    resolve_ok(BASE "adapter: {method: vera, seed: 5}\ntrain: {seed: 9}\n", &rc);
    ck_assert_int_eq(rc.adapter.r, 256);
    ck_assert_uint_eq(rc.adapter.seed, 5);
    run_config_free(&rc);
    /* Default name: the file's base name. */
    resolve_ok(BASE, &rc);
    ck_assert_str_eq(rc.name, "t");
    run_config_free(&rc);
}
END_TEST

START_TEST(t_presets) {
    static const struct { const char *name; int C, L, NH, F; size_t params; } want[] = {
        {"tiny", 128, 4, 4, 344, 922752}, {"small", 256, 6, 8, 688, 5008640}, {"medium", 512, 8, 8, 1376, 25829888}};
    for (int i = 0; i < 3; i++) {
        ModelConfig mc;
        char *canon = NULL;
        LLError err;
        LLStatus st = config_load_preset(want[i].name, &mc, &canon, &err);
        ck_assert_msg(st == LL_OK, "%s: %s", want[i].name, err.msg);
        ck_assert_int_eq(mc.C, want[i].C);
        ck_assert_int_eq(mc.L, want[i].L);
        ck_assert_int_eq(mc.NH, want[i].NH);
        ck_assert_int_eq(mc.NKV, want[i].NH);
        ck_assert_int_eq(mc.HS, want[i].C / want[i].NH);
        ck_assert_int_eq(mc.F, want[i].F);
        ck_assert_int_eq(mc.max_T, 512);
        ck_assert(mc.eps == 1e-5f && mc.rope_theta == 10000.0f && mc.init_range == 0.02f);
        ck_assert_int_eq(mc.tied, 1);
        ck_assert_int_eq(mc.V, 0); /* the tokenizer fills it */
        mc.V = 1024;
        ck_assert_uint_eq(model_param_count(&mc), want[i].params);
        ck_assert_ptr_nonnull(strstr(canon, "\"base.model.hidden_size\":"));
        free(canon);
    }
    RunConfig rc;
    resolve_ok("base: {preset: tiny, data: data/brown, steps: 50, vocab_size: 512}\ntask: {data: data/brown}\n", &rc);
    ck_assert_int_eq(rc.pretrain, 1);
    ck_assert_int_eq(rc.base_model.C, 128);
    ck_assert_int_eq(rc.base_vocab, 512);
    ck_assert_int_eq(rc.base_bpe, 1);
    ck_assert_int_eq(rc.base_train.steps, 50);
    ck_assert_int_eq((int)strlen(rc.base_hash), 16);
    char want_path[64];
    snprintf(want_path, sizeof want_path, "%s/%s", CONFIG_BASES_DIR, rc.base_hash);
    ck_assert_str_eq(rc.base_path, want_path);
    ck_assert_ptr_nonnull(strstr(rc.canonical_json, "\"base.model.num_hidden_layers\":4"));
    char base_hash[17];
    memcpy(base_hash, rc.base_hash, 17);
    run_config_free(&rc);
    /* The base hash depends on the base section only: fine-tuning keys leave it alone. */
    resolve_ok("base: {preset: tiny, data: data/brown, steps: 50, vocab_size: 512}\ntask: {data: data/other}\n"
               "adapter: {r: 2}\n", &rc);
    ck_assert_str_eq(rc.base_hash, base_hash);
    run_config_free(&rc);
    resolve_ok("base: {preset: tiny, data: data/brown, steps: 51, vocab_size: 512}\ntask: {data: data/brown}\n", &rc);
    ck_assert_str_ne(rc.base_hash, base_hash);
    run_config_free(&rc);
}
END_TEST

/* The canonical form and key of a fixed config. If this fails, run keys changed: every stored
 * result stops counting as done. Check the JSON diff and change the golden values on purpose. */
START_TEST(t_golden_key) {
    RunConfig rc;
    resolve_ok("name: golden\nbase: {path: models/base}\ntask: {type: lm, data: data/brown}\n"
               "train: {steps: 200, lr: 0.002, seed: 3}\nadapter: {method: lora, r: 4, alpha: 8, targets: [q, v]}\n",
               &rc);
    const char *json =
        "{\"adapter.alpha\":8,\"adapter.alpha_pattern\":{},\"adapter.dropout\":0,\"adapter.init\":\"kaiming\","
        "\"adapter.layers\":[],\"adapter.method\":\"lora\",\"adapter.r\":4,\"adapter.rank_pattern\":{},"
        "\"adapter.seed\":3,\"adapter.targets\":[\"q_proj\",\"v_proj\"],\"adapter.use_dora\":false,"
        "\"adapter.use_rslora\":false,\"base.path\":\"models/base\",\"task.data\":\"data/brown\","
        "\"task.type\":\"lm\",\"train.accum\":1,\"train.batch\":8,\"train.beta1\":0.9,\"train.beta2\":0.999,"
        "\"train.clip\":1,\"train.eps\":1e-08,\"train.eval_batches\":0,\"train.eval_every\":0,"
        "\"train.log_every\":10,\"train.lr\":0.002,\"train.max_minutes\":0,\"train.min_lr_ratio\":0.1,"
        "\"train.schedule\":\"cosine\",\"train.seed\":3,\"train.seq\":128,\"train.steps\":200,\"train.warmup\":0,"
        "\"train.weight_decay\":0}";
    ck_assert_str_eq(rc.canonical_json, json);
    /* = `printf '%s' "$json" | sha256sum | cut -c1-16` */
    ck_assert_str_eq(rc.key, "4683f669c32cbfa7");
    char hex[65];
    config_sha256_hex(json, strlen(json), hex);
    ck_assert_int_eq(strncmp(hex, rc.key, 16), 0);
    char v[64];
    ck_assert(config_canonical_get(&rc, "adapter.targets", v, sizeof v));
    ck_assert_str_eq(v, "[\"q_proj\",\"v_proj\"]");
    ck_assert(config_canonical_get(&rc, "train.lr", v, sizeof v));
    ck_assert_str_eq(v, "0.002");
    ck_assert(config_canonical_get(&rc, "train.weight_decay", v, sizeof v)); /* the last member */
    ck_assert_str_eq(v, "0");
    ck_assert(!config_canonical_get(&rc, "adapter.init_r", v, sizeof v)); /* LoRA ignores it */
    run_config_free(&rc);
}
END_TEST

START_TEST(t_key_stability) {
    char a[17], b[17], c[17], d[17];
    /* Key order, nesting vs dotted keys, number spelling and target spelling do not matter. */
    key_of(BASE "train: {lr: 0.001, steps: 50}\nadapter: {r: 8, targets: \"q_proj,v_proj\"}\n", a);
    key_of("adapter.targets: [v, q]\nadapter.r: 8\ntrain:\n  steps: 50\n  lr: 1.0e-3\n" BASE, b);
    ck_assert_str_eq(a, b);
    /* Labels are not part of a run. */
    key_of("name: other\ndescription: words\noutput: {dir: elsewhere}\n" BASE
           "train: {lr: 0.001, steps: 50}\nadapter: {r: 8}\n", c);
    ck_assert_str_eq(a, c);
    /* A real change is. */
    key_of(BASE "train: {lr: 0.001, steps: 51}\nadapter: {r: 8}\n", d);
    ck_assert_str_ne(a, d);
    /* Same config twice: same key (no hidden state). */
    key_of(BASE "train: {lr: 0.001, steps: 51}\nadapter: {r: 8}\n", c);
    ck_assert_str_eq(c, d);
}
END_TEST

START_TEST(t_irrelevant_keys) {
    char a[17], b[17];
    /* Full fine-tuning ignores every adapter key but the method and the seed. */
    key_of(BASE "adapter: {method: full, r: 1, alpha: 2, targets: q}\n", a);
    key_of(BASE "adapter: {method: full, r: 64, dropout: 0.3, use_dora: true}\n", b);
    ck_assert_str_eq(a, b);
    /* VeRA ignores alpha; LoRA does not. */
    key_of(BASE "adapter: {method: vera, alpha: 1}\n", a);
    key_of(BASE "adapter: {method: vera, alpha: 99}\n", b);
    ck_assert_str_eq(a, b);
    key_of(BASE "adapter: {method: lora, alpha: 1}\n", a);
    key_of(BASE "adapter: {method: lora, alpha: 99}\n", b);
    ck_assert_str_ne(a, b);
    /* AdaLoRA ignores r; LoRA ignores the AdaLoRA keys. */
    key_of(BASE "adapter: {method: adalora, r: 2, tfinal: 10}\n", a);
    key_of(BASE "adapter: {method: adalora, r: 32, tfinal: 10}\n", b);
    ck_assert_str_eq(a, b);
    key_of(BASE "adapter: {method: lora, init_r: 20, deltaT: 5}\n", a);
    key_of(BASE "adapter: {method: lora}\n", b);
    ck_assert_str_eq(a, b);
    /* ... and the ignored values are reset in the struct too, so equal keys mean equal runs. */
    RunConfig rc;
    resolve_ok(BASE "adapter: {method: vera, alpha: 99, init_r: 30}\n", &rc);
    AdapterConfig def;
    adapter_config_defaults(&def, ADAPTER_VERA);
    ck_assert(rc.adapter.alpha == def.alpha);
    ck_assert_int_eq(rc.adapter.init_r, def.init_r);
    run_config_free(&rc);
}
END_TEST

/* adapter.method takes the names results tables use: dora is LoRA with use_dora, and so on. The run
 * is the same run (same key) as the one written with the flag. */
START_TEST(t_method_variants) {
    static const char *const pairs[][2] = {
        {"adapter: {method: dora}\n", "adapter: {method: lora, use_dora: true}\n"},
        {"adapter: {method: rslora}\n", "adapter: {use_rslora: true}\n"},
        {"adapter: {method: pissa}\n", "adapter: {init: pissa}\n"},
    };
    static const char *const variant[] = {"dora", "rslora", "pissa"};
    char text[512], a[17], b[17];
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof text, BASE "%s", pairs[i][0]);
        key_of(text, a);
        RunConfig rc;
        resolve_ok(text, &rc);
        ck_assert_int_eq(rc.adapter.method, ADAPTER_LORA);
        ck_assert_str_eq(adapter_variant_name(&rc.adapter), variant[i]);
        run_config_free(&rc);
        ConfigDoc *d = NULL;
        LLError err;
        ck_assert_int_eq(config_load_text("t.yaml", text, NULL, 0, &d, &err), LL_OK);
        ck_assert_str_eq(config_variant(d, NULL, 0), variant[i]); /* before resolution, as the grid sees it */
        config_doc_free(d);
        snprintf(text, sizeof text, BASE "%s", pairs[i][1]);
        key_of(text, b);
        ck_assert_str_eq(a, b);
    }
    /* A key that contradicts the variant is refused, naming both. */
    expect_error(BASE "adapter: {method: dora, use_dora: false}\n", NULL, 0,
                 "t.yaml:3: adapter.method: 'dora' is LoRA with adapter.use_dora: true, but the config makes a 'lora' "
                 "run");
    expect_error(BASE "adapter: {method: rslora, use_dora: true}\n", NULL, 0, "makes a 'dora' run");
    /* loraplus is LoRA with adapter.lr_ratio != 1 (16 unless given); a ratio of 1 contradicts it. */
    key_of(BASE "adapter: {method: loraplus}\n", a);
    key_of(BASE "adapter: {lr_ratio: 16}\n", b);
    ck_assert_str_eq(a, b);
    key_of(BASE "adapter: {method: loraplus, lr_ratio: 4}\n", a);
    key_of(BASE "adapter: {lr_ratio: 4}\n", b);
    ck_assert_str_eq(a, b);
    expect_error(BASE "adapter: {method: loraplus, lr_ratio: 1}\n", NULL, 0,
                 "t.yaml:3: adapter.method: 'loraplus' is LoRA with adapter.lr_ratio != 1 (16 unless given), but the "
                 "config makes a 'lora' run");
    /* The variant table and the reasons a method ignores a key. */
    AdapterMethod m;
    ck_assert(config_variant_method("dora", &m) && m == ADAPTER_LORA);
    ck_assert(config_variant_method("loraplus", &m) && m == ADAPTER_LORA);
    ck_assert(config_variant_method("full", &m) && m == ADAPTER_FULL);
    ck_assert(!config_variant_method("lora+", &m));
    char why[200];
    ck_assert(config_method_ignores(ADAPTER_FULL, "adapter.r", why, sizeof why));
    ck_assert_str_eq(why, "full fine-tuning has no rank");
    ck_assert(config_method_ignores(ADAPTER_VERA, "adapter.alpha", why, sizeof why));
    ck_assert_ptr_nonnull(strstr(why, "VeRA has no alpha"));
    ck_assert(config_method_ignores(ADAPTER_LORA, "adapter.init_r", why, sizeof why));
    ck_assert_ptr_nonnull(strstr(why, "AdaLoRA key"));
    ck_assert(!config_method_ignores(ADAPTER_FULL, "train.lr", why, sizeof why));
    ck_assert(!config_method_ignores(ADAPTER_FULL, "adapter.seed", why, sizeof why));
    ck_assert(!config_method_ignores(ADAPTER_ADALORA, "adapter.alpha", why, sizeof why));
}
END_TEST

START_TEST(t_set_overrides) {
    const char *sets[] = {"train.lr=3e-4", "adapter.targets=[q,k,v]", "r=2", "adapter.rank_pattern={q_proj: 8}"};
    RunConfig rc;
    LLError err;
    LLStatus st = load_resolve(BASE "train: {lr: 0.1}\nadapter: {r: 16}\n", sets, 4, &rc, &err);
    ck_assert_msg(st == LL_OK, "%s", err.msg);
    ck_assert(rc.train.lr == 3e-4f);
    ck_assert_uint_eq(rc.adapter.targets, (1u << MOD_Q) | (1u << MOD_K) | (1u << MOD_V));
    ck_assert_int_eq(rc.adapter.r, 2);
    ck_assert_int_eq(rc.adapter.n_rank_pattern, 1);
    run_config_free(&rc);
    /* The document keeps the overrides as comments, for the record stored with the sweep. */
    ConfigDoc *d = NULL;
    ck_assert_int_eq(config_load_text("t.yaml", BASE, sets, 1, &d, &err), LL_OK);
    ck_assert_ptr_nonnull(strstr(d->text, "# --set train.lr=3e-4"));
    config_doc_free(d);
}
END_TEST

/* task.eval_sets and train.diagnostics: read into the RunConfig in file order, out of the run key
 * (the same key with and without them), not sweepable, and names that cannot be a metrics split
 * refused with the rule. */
START_TEST(t_eval_sets_and_diagnostics_keys) {
    RunConfig rc;
    resolve_ok(BASE, &rc);
    ck_assert(rc.n_eval_sets == 0 && rc.diagnostics == 1);
    char plain[17];
    memcpy(plain, rc.key, 17);
    run_config_free(&rc);
    resolve_ok(BASE "task.eval_sets: {sotu: data/sotu, brown.v2: 2024}\ntrain: {diagnostics: false}\n", &rc);
    ck_assert_int_eq(rc.n_eval_sets, 2);
    ck_assert_str_eq(rc.eval_set_names[0], "sotu");
    ck_assert_str_eq(rc.eval_set_paths[0], "data/sotu");
    ck_assert_str_eq(rc.eval_set_names[1], "brown.v2");
    ck_assert_str_eq(rc.eval_set_paths[1], "2024"); /* a plain number is a folder's name */
    ck_assert_int_eq(rc.diagnostics, 0);
    ck_assert_str_eq(rc.key, plain);
    ck_assert_ptr_null(strstr(rc.canonical_json, "eval_sets"));
    ck_assert_ptr_null(strstr(rc.canonical_json, "diagnostics"));
    run_config_free(&rc);
    const char *sets[] = {"task.eval_sets={moby: data/moby}", "train.diagnostics=off"};
    LLError err;
    CK_OK(load_resolve(BASE, sets, 2, &rc, &err));
    ck_assert(rc.n_eval_sets == 1 && strcmp(rc.eval_set_paths[0], "data/moby") == 0 && rc.diagnostics == 0);
    run_config_free(&rc);
    const char *none[] = {"task.eval_sets={}"};
    CK_OK(load_resolve(BASE "task.eval_sets: {a: b}\n", none, 1, &rc, &err));
    ck_assert_int_eq(rc.n_eval_sets, 0);
    run_config_free(&rc);

    expect_error(BASE "task.eval_sets: {eval: data/x}\n", NULL, 0, "'eval' cannot name an eval set");
    expect_error(BASE "task.eval_sets: {\"a b\": data/x}\n", NULL, 0, "cannot name an eval set");
    expect_error(BASE "task.eval_sets: {.x: data/x}\n", NULL, 0, "cannot name an eval set");
    expect_error(BASE "task.eval_sets: {x: ''}\n", NULL, 0, "x: the folder is empty");
    expect_error(BASE "task.eval_sets: {x: }\n", NULL, 0, "'x' has no value");
    expect_error(BASE "task.eval_sets: {x: a, x: b}\n", NULL, 0, "duplicate entry 'x'");
    expect_error(BASE "task.eval_sets: [data/x]\n", NULL, 0, "expected a mapping of names to strings");
    expect_error(BASE "task.eval_sets: {x: [a]}\n", NULL, 0, "expected a mapping of names to strings");
    expect_error(BASE "train: {diagnostics: 3}\n", NULL, 0, "train.diagnostics");
    expect_error(BASE "sweep: {grid: {train.diagnostics: [true, false]}}\n", NULL, 0, "is not a run setting");
}
END_TEST

START_TEST(t_schema_lookups) {
    char k[CONFIG_KEY_MAX];
    LLError err;
    ck_assert(config_short_name("r", k, sizeof k, &err));
    ck_assert_str_eq(k, "adapter.r");
    ck_assert(config_short_name("lr", k, sizeof k, &err)); /* base.lr does not compete */
    ck_assert_str_eq(k, "train.lr");
    ck_assert(!config_short_name("beta1", k, sizeof k, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "ambiguous"));
    ck_assert_str_eq(config_suggest_key("adapter.rank"), "adapter.r");
    ck_assert_str_eq(config_suggest_key("adaptor.alpha"), "adapter.alpha");
    ck_assert_str_eq(config_suggest_key("target_modules"), "adapter.targets");
    ck_assert_ptr_null(config_suggest_key("completely.unrelated.thing"));
    ck_assert(config_key_known("sweep.seeds"));
    ck_assert(!config_key_known("sweep.grid")); /* a structured section, not a value */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_describe(f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "adapter.dropout"));
    ck_assert_ptr_nonnull(strstr(buf, "[0, 1)"));
    free(buf);
}
END_TEST

/* ---- limits: bad input gives LL_ERR_CONFIG and a message with file, line and key ------------- */

START_TEST(t_unknown_key) {
    expect_error(BASE "adapter:\n  rank: 8\n", NULL, 0,
                 "t.yaml:4: unknown key 'adapter.rank'; did you mean 'adapter.r'?");
    expect_error(BASE "adapter: {lora_alpha: 16}\n", NULL, 0,
                 "t.yaml:3: unknown key 'adapter.lora_alpha'; did you mean 'adapter.alpha'?");
    expect_error(BASE "trian: {lr: 0.1}\n", NULL, 0, "t.yaml:3: unknown section 'trian'; did you mean 'train'?");
    expect_error(BASE "sweep:\n  grid:\n    adapter.rnak: [1, 2]\n", NULL, 0,
                 "t.yaml:5: sweep.grid: unknown key 'adapter.rnak'; did you mean 'adapter.r'?");
    expect_error(BASE "zzzzzzzz: 1\n", NULL, 0, "t.yaml:3: unknown key 'zzzzzzzz'");
}
END_TEST

START_TEST(t_wrong_type) {
    expect_error(BASE "train: {lr: fast}\n", NULL, 0, "t.yaml:3: train.lr: expected a number, got the string 'fast'");
    expect_error(BASE "train: {steps: 10.5}\n", NULL, 0, "t.yaml:3: train.steps: expected a whole number, got 10.5");
    expect_error(BASE "train: {steps: \"100\"}\n", NULL, 0,
                 "t.yaml:3: train.steps: expected a whole number, got the string '100'");
    expect_error(BASE "adapter: {use_dora: maybe}\n", NULL, 0, "t.yaml:3: adapter.use_dora: expected true or false");
    expect_error(BASE "adapter: {r: [4, 8]}\n", NULL, 0,
                 "t.yaml:3: adapter.r: expected a whole number, got a list (to sweep it, put it under sweep.grid)");
    expect_error(BASE "adapter: {r: }\n", NULL, 0, "t.yaml:3: adapter.r: no value given");
    expect_error(BASE "adapter: 4\n", NULL, 0, "t.yaml:3: 'adapter' is a section: expected a mapping of its keys");
    expect_error(BASE "adapter: {rank_pattern: {q_proj: many}}\n", NULL, 0,
                 "t.yaml:3: adapter.rank_pattern: 'q_proj' has no number");
    expect_error("- a\n- b\n", NULL, 0, "t.yaml:1: expected a mapping of keys");
}
END_TEST

START_TEST(t_impossible_value) {
    expect_error(BASE "adapter: {dropout: 1.0}\n", NULL, 0, "t.yaml:3: adapter.dropout: 1 is outside [0, 1)");
    expect_error(BASE "adapter: {r: 0}\n", NULL, 0, "t.yaml:3: adapter.r: 0 is outside [1, 65536]");
    expect_error(BASE "train: {lr: 0}\n", NULL, 0, "t.yaml:3: train.lr: 0 is outside (0, 10]");
    expect_error(BASE "train: {schedule: cosin}\n", NULL, 0,
                 "t.yaml:3: train.schedule: 'cosin' is not one of cosine|linear|constant");
    expect_error(BASE "adapter: {method: doria}\n", NULL, 0,
                 "t.yaml:3: adapter.method: 'doria' is not one of full|lora|adalora|vera|rslora|dora|pissa|loraplus");
    expect_error(BASE "adapter: {targets: [q, x]}\n", NULL, 0,
                 "t.yaml:3: adapter.targets: unknown target module 'x'; the linear layers");
    expect_error(BASE "adapter: {rank_pattern: {q_proj: 2.5}}\n", NULL, 0,
                 "adapter.rank_pattern: q_proj: 2.5 is not a whole number");
    expect_error(BASE "name: 'a b'\n", NULL, 0, "t.yaml:3: name: 'a b' must be");
    expect_error(BASE "train: {warmup: 500, steps: 100}\n", NULL, 0,
                 "train.warmup (500) is longer than train.steps (100)");
    expect_error(BASE "adapter: {method: adalora, tinit: 90, tfinal: 20}\ntrain: {steps: 100}\n", NULL, 0,
                 "t.yaml:3: AdaLoRA needs adapter.tinit (90) < train.steps (100) - adapter.tfinal (20)");
    expect_error(BASE "adapter: {method: adalora, init_r: 8, target_r: 8}\n", NULL, 0,
                 "AdaLoRA needs adapter.init_r (8) > adapter.target_r (8)");
    expect_error("base: {preset: tiny, data: d}\ntask: {data: d}\ntrain: {seq: 1024}\n", NULL, 0,
                 "t.yaml:3: train.seq (1024) exceeds max_position_embeddings (512) of preset 'tiny'");
    expect_error("base: {preset: tiny, data: d}\ntask: {data: d}\nadapter: {layers: [0, 4]}\n", NULL, 0,
                 "adapter.layers names layer 4; preset 'tiny' has 4 layers (0-3)");
}
END_TEST

START_TEST(t_bad_set) {
    const char *s1[] = {"adapter.rank=4"};
    expect_error(BASE, s1, 1, "--set: unknown key 'adapter.rank'; did you mean 'adapter.r'?");
    const char *s2[] = {"train.lr=abc"};
    expect_error(BASE, s2, 1, "--set: train.lr: expected a number, got the string 'abc'");
    const char *s3[] = {"train.steps"};
    expect_error(BASE, s3, 1, "--set: 'train.steps' is not KEY=VALUE");
    const char *s4[] = {"adapter.targets=[q,v"};
    expect_error(BASE, s4, 1, "--set: adapter.targets: cannot read '[q,v' as a YAML value");
    const char *s5[] = {"adapter.dropout=2"};
    expect_error(BASE, s5, 1, "--set: adapter.dropout: 2 is outside [0, 1)");
    const char *s6[] = {"sweep.grid={a: 1}"};
    expect_error(BASE, s6, 1, "--set: sweep.grid cannot be given on the command line");
    const char *s7[] = {"train.steps="};
    expect_error(BASE, s7, 1, "--set: train.steps: no value given");
}
END_TEST

START_TEST(t_malformed_yaml) {
    expect_error(BASE "train: {lr: 1e-3\nadapter: {r: 4}\n", NULL, 0,
                 "t.yaml:4: YAML syntax error: did not find expected ',' or '}'");
    expect_error(BASE "train:\n  lr: 1\n\tsteps: 3\n", NULL, 0, "t.yaml:5: YAML syntax error");
    expect_error(BASE "adapter: [r: 4\n", NULL, 0, "YAML syntax error");
}
END_TEST

START_TEST(t_duplicate_key) {
    expect_error(BASE "adapter:\n  r: 4\n  r: 8\n", NULL, 0, "t.yaml:5: duplicate key 'r' (first at line 4)");
    expect_error(BASE "adapter: {r: 4}\nadapter.r: 8\n", NULL, 0,
                 "t.yaml:4: duplicate key 'adapter.r' (first at line 3)");
    expect_error(BASE "sweep:\n  grid:\n    adapter.r: [1]\n    adapter: {r: [2]}\n", NULL, 0,
                 "t.yaml:6: sweep.grid: duplicate axis 'adapter.r' (first at line 5)");
}
END_TEST

START_TEST(t_base_choice) {
    expect_error("base: {path: m, preset: tiny, data: d}\ntask: {data: d}\n", NULL, 0,
                 "t.yaml:1: base.path and base.preset are both set (base.preset at t.yaml:1)");
    expect_error("task: {data: d}\n", NULL, 0, "t.yaml: no base model: set base.path");
    expect_error("base: {preset: tiny}\ntask: {data: d}\n", NULL, 0, "t.yaml:1: base.preset needs base.data");
    expect_error("base: {preset: huge, data: d}\ntask: {data: d}\n", NULL, 0,
                 "t.yaml:1: base.preset 'huge': cannot read configs/models/huge.yaml (presets in configs/models: "
                 "medium, small, tiny)");
    expect_error("base: {path: m}\n", NULL, 0, "task.data is not set");
}
END_TEST


/* sweep.early_stop and W&B's early_terminate: read, mapped, refused by name; the run key does not
 * depend on them (a pruned run is the same run, stopped). adapter.method: loraplus means lr_ratio 16. */
START_TEST(t_early_stop_section) {
    const char *base = BASE;
    char text[1024];
    ConfigDoc *d = NULL;
    LLError err;
    snprintf(text, sizeof text, "%ssweep:\n  early_stop: {type: median, metric: accuracy, min_steps: 50, grace_runs: 3}\n",
             base);
    ck_assert_int_eq(config_load_text("t.yaml", text, NULL, 0, &d, &err), LL_OK);
    const EarlyStopSpec *es = &d->sweep.early_stop;
    ck_assert(es->type == ES_MEDIAN && es->min_steps == 50 && es->grace_runs == 3 && es->line == 4);
    ck_assert_str_eq(es->metric, "accuracy");
    RunConfig rc;
    ck_assert_int_eq(config_resolve(d, NULL, 0, &rc, &err), LL_OK);
    char with[17], without[17];
    memcpy(with, rc.key, 17);
    run_config_free(&rc);
    config_doc_free(d);
    key_of(base, without);
    ck_assert_str_eq(with, without);
    snprintf(text, sizeof text, "%searly_terminate: {type: hyperband, min_iter: 30, eta: 4}\n", base);
    ck_assert_int_eq(config_load_text("t.yaml", text, NULL, 0, &d, &err), LL_OK);
    es = &d->sweep.early_stop;
    ck_assert(es->type == ES_ASHA && es->min_steps == 30 && es->reduction_factor == 4);
    ck_assert_msg(strstr(es->note, "read as ASHA"), "%s", es->note);
    config_doc_free(d);
    snprintf(text, sizeof text, "%ssweep: {early_stop: {type: asha}}\n", base);
    expect_error(text, NULL, 0, "t.yaml:3: sweep.early_stop needs min_steps");
    snprintf(text, sizeof text, "%ssweep: {early_stop: {type: asha, min_steps: 10, patience: 3}}\n", base);
    expect_error(text, NULL, 0, "unknown key 'patience'");
    snprintf(text, sizeof text, "%ssweep: {early_stop: {type: asha, min_steps: 10, metric: bleu}}\n", base);
    expect_error(text, NULL, 0, "'bleu' is not a validation metric");
    snprintf(text, sizeof text, "%ssweep: {early_stop: {type: asha, min_steps: 10, reduction_factor: 1}}\n", base);
    expect_error(text, NULL, 0, "reduction_factor: expected a whole number from 2");
    snprintf(text, sizeof text, "%searly_terminate: {type: envelope, min_iter: 3}\n", base);
    expect_error(text, NULL, 0, "is not hyperband");
    /* loraplus: lr_ratio 16 unless given, and the same run key as the spelled-out LoRA */
    char k1[17], k2[17];
    snprintf(text, sizeof text, "%sadapter: {method: loraplus}\n", base);
    resolve_ok(text, &rc);
    ck_assert(rc.adapter.lr_ratio == 16.0f);
    memcpy(k1, rc.key, 17);
    run_config_free(&rc);
    snprintf(text, sizeof text, "%sadapter: {method: lora, lr_ratio: 16}\n", base);
    key_of(text, k2);
    ck_assert_str_eq(k1, k2);
    snprintf(text, sizeof text, "%sadapter: {method: loraplus, lr_ratio: 4}\n", base);
    resolve_ok(text, &rc);
    ck_assert(rc.adapter.lr_ratio == 4.0f);
    run_config_free(&rc);
}
END_TEST

Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *core = tu_tcase(s, "core", 0, 0);
    tcase_add_test(core, t_sha256_vectors);
    tcase_add_test(core, t_values_and_defaults);
    tcase_add_test(core, t_presets);
    tcase_add_test(core, t_golden_key);
    tcase_add_test(core, t_key_stability);
    tcase_add_test(core, t_irrelevant_keys);
    tcase_add_test(core, t_set_overrides);
    tcase_add_test(core, t_method_variants);
    tcase_add_test(core, t_schema_lookups);
    tcase_add_test(core, t_early_stop_section);
    tcase_add_test(core, t_eval_sets_and_diagnostics_keys);
    TCase *limits = tu_tcase(s, "limits", 0, 0);
    tcase_add_test(limits, t_unknown_key);
    tcase_add_test(limits, t_wrong_type);
    tcase_add_test(limits, t_impossible_value);
    tcase_add_test(limits, t_bad_set);
    tcase_add_test(limits, t_malformed_yaml);
    tcase_add_test(limits, t_duplicate_key);
    tcase_add_test(limits, t_base_choice);
    return s;
}
