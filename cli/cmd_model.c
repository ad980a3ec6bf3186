/* The commands that use one model folder: eval, generate, tokenize, merge. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter.h"
#include "checkpoint.h"
#include "commands.h"
#include "data.h"
#include "memory.h"
#include "outdir.h"
#include "rng.h"
#include "train.h"

typedef struct {
    const char *model, *adapter, *data, *prompt, *out;
    int json, max_new, top_k, batch, seq;
    int ids; /* generate --ids: print the token ids too */
    int force; /* merge --force: replace an existing model folder that loralab wrote */
    int bf16; /* --precision bf16: the base's linear products in bf16 (train.precision) */
    QuantFormat quant; /* --base-quant: the base held as training held it (train.base_quant) */
    int double_quant;  /* --no-double-quant: train.double_quant false */
    float temperature;
    uint64_t seed;
} Args;

static int bad_usage(const char *cmd, const char *msg) {
    fprintf(stderr, "loralab %s: %s (see `loralab --help`)\n", cmd, msg);
    return 2;
}

/* A whole-string integer in [lo, hi] (no trailing text, no wrap-around). */
static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* The whole-number flags: 1 when argv[*i] is one of them (its value read, or *rc = 2 with a message). */
static int int_flag(const char *cmd, int argc, char **argv, int *i, Args *a, int *rc) {
    const struct {
        const char *name;
        int lo, *dst;
    } flags[] = {{"--max-new", 0, &a->max_new}, {"--top-k", 0, &a->top_k}, {"--batch", 1, &a->batch}, {"--seq", 2, &a->seq}};
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++) {
        const char *v;
        long long n;
        if (!cli_flag(argc, argv, i, flags[k].name, &v)) continue;
        if (parse_int(v, flags[k].lo, 1 << 24, &n)) {
            *flags[k].dst = (int)n;
        } else {
            char msg[128];
            snprintf(msg, sizeof msg, "%s must be a whole number >= %d, not '%s'", flags[k].name, flags[k].lo, v);
            *rc = bad_usage(cmd, msg);
        }
        return 1;
    }
    return 0;
}

/* Parses the flags these commands share; returns 0 or prints a message and returns 2. */
static int parse(const char *cmd, int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    a->max_new = 200, a->top_k = 40, a->temperature = 0.8f, a->batch = 8, a->seq = 0; /* seq 0: 128, or the context when shorter */
    const char *precision = "fp32", *base_quant = "none";
    a->double_quant = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        long long n = 0;
        int rc = 0;
        char msg[256];
        if (strcmp(argv[i], "--json") == 0) a->json = 1;
        else if (strcmp(argv[i], "--ids") == 0) a->ids = 1;
        else if (strcmp(argv[i], "--force") == 0) a->force = 1;
        else if (strcmp(argv[i], "--no-double-quant") == 0) a->double_quant = 0;
        else if (cli_flag(argc, argv, &i, "--base-quant", &v)) base_quant = v;
        else if (cli_flag(argc, argv, &i, "--model", &v)) a->model = v;
        else if (cli_flag(argc, argv, &i, "--adapter", &v)) a->adapter = v;
        else if (cli_flag(argc, argv, &i, "--data", &v)) a->data = v;
        else if (cli_flag(argc, argv, &i, "--prompt", &v)) a->prompt = v;
        else if (cli_flag(argc, argv, &i, "--out", &v)) a->out = v;
        else if (cli_flag(argc, argv, &i, "--precision", &v)) precision = v;
        else if (cli_flag(argc, argv, &i, "--temperature", &v)) {
            char *end;
            a->temperature = strtof(v, &end);
            if (end == v || *end || !(a->temperature >= 0.0f) || !isfinite(a->temperature))
                return bad_usage(cmd, "--temperature must be a number >= 0");
        } else if (cli_flag(argc, argv, &i, "--seed", &v)) {
            if (!parse_int(v, 0, (long long)1 << 53, &n)) return bad_usage(cmd, "--seed must be a whole number >= 0");
            a->seed = (uint64_t)n;
        } else if (int_flag(cmd, argc, argv, &i, a, &rc)) {
            if (rc) return rc;
        } else {
            snprintf(msg, sizeof msg, strncmp(argv[i], "--", 2) == 0 && i + 1 >= argc
                                          ? "flag '%s' is unknown or missing its value"
                                          : "unknown flag '%s'",
                     argv[i]);
            return bad_usage(cmd, msg);
        }
    }
    if (!a->model) return bad_usage(cmd, "--model DIR is required");
    if (strcmp(precision, "fp32") != 0 && strcmp(precision, "bf16") != 0)
        return bad_usage(cmd, "--precision must be fp32 or bf16");
    a->bf16 = strcmp(precision, "bf16") == 0;
    if (!quant_format_from_name(base_quant, &a->quant)) return bad_usage(cmd, "--base-quant must be none, q8_0 or nf4");
    return 0;
}

static int fail(const char *cmd, const LLError *e) {
    fprintf(stderr, "loralab %s: %s\n", cmd, e->msg);
    return e->code == LL_ERR_DIVERGED || e->code == LL_ERR_INTERRUPTED ? 1 : 2;
}

/* Before anything is sized: the model folder's weights must match its config.json, the adapter's
 * config must parse (ranks bounded), and model, adapter and a batch of B x T must fit the memory
 * budget (memory.h), as train checks. `keys` says what the user can lower. */
static int check_fit(const char *cmd, const Args *a, int B, int T, int n_labels, const char *keys) {
    LLError e;
    ModelConfig mc;
    if (checkpoint_load_config(a->model, &mc, &e)) return fail(cmd, &e);
    if (n_labels > 0) mc.n_labels = n_labels;
    if (checkpoint_check_tensors(a->model, &mc, &e)) return fail(cmd, &e);
    AdapterConfig ac;
    if (a->adapter) {
        char path[4096];
        snprintf(path, sizeof path, "%s/adapter_config.json", a->adapter);
        char *text;
        size_t len;
        if (ll_read_file(path, &text, &len, &e)) {
            ll_err_prefix(&e, "loading adapter folder '%s'", a->adapter);
            return fail(cmd, &e);
        }
        LLStatus st = adapter_config_parse(text, len, path, &ac, &e);
        ll_free(text);
        if (st) return fail(cmd, &e);
    }
    ModelOptions o = {B, T < mc.max_T ? T : mc.max_T, 0, 0};
    if (memory_check_model(&mc, &o, a->adapter ? &ac : NULL, keys, &e)) return fail(cmd, &e);
    return 0;
}

/* Opens the model (with n_labels for a classification task) and the adapter, if given, after
 * check_fit. */
static int open_model(const char *cmd, const Args *a, int B, int T, int n_labels, const char *keys, LoadedModel *lm,
                      Adapter **ad) {
    LLError e;
    ModelOptions o = {B, T, 0, 0};
    *ad = NULL;
    int rc = check_fit(cmd, a, B, T, n_labels, keys);
    if (rc) return rc;
    if (checkpoint_open(a->model, &o, n_labels, lm, &e)) return fail(cmd, &e);
    if (model_quantize_base(&lm->model, a->quant, a->double_quant, &e)) {
        checkpoint_close(lm);
        return fail(cmd, &e);
    }
    if (a->adapter) {
        if (adapter_load(a->adapter, &lm->model, ad, &e)) {
            checkpoint_close(lm);
            return fail(cmd, &e);
        }
        adapter_attach(&lm->model, *ad);
    }
    model_release_fp32(&lm->model);
    if (a->bf16 && model_set_bf16(&lm->model, 1, &e)) {
        adapter_free(*ad);
        *ad = NULL;
        checkpoint_close(lm);
        return fail(cmd, &e);
    }
    return 0;
}

static int count_labels_file(const char *data_path) {
    char dir[2048], path[2100];
    snprintf(dir, sizeof dir, "%s", data_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    snprintf(path, sizeof path, "%s/labels.txt", dir);
    char *text;
    size_t len;
    if (ll_read_file(path, &text, &len, NULL)) return 0; /* a folder or a FIFO counts as absent, never blocks */
    int n = 0;
    for (const char *p = text; *p;) { /* non-empty lines */
        const char *nl = strchr(p, '\n');
        n += (nl ? nl : p + strlen(p)) > p;
        if (!nl) break;
        p = nl + 1;
    }
    ll_free(text);
    return n;
}

int cmd_eval(int argc, char **argv) {
    Args a;
    if (parse("eval", argc, argv, &a)) return 2;
    if (!a.data) return bad_usage("eval", "--data FILE is required");
    size_t n = strlen(a.data);
    int cls = n > 6 && strcmp(a.data + n - 6, ".jsonl") == 0;
    int n_labels = 0;
    if (cls) {
        ModelConfig mc;
        LLError e;
        if (checkpoint_load_config(a.model, &mc, &e)) return fail("eval", &e);
        n_labels = mc.n_labels > 0 ? mc.n_labels : count_labels_file(a.data);
        if (n_labels < 2) {
            fprintf(stderr, "loralab eval: '%s' is classification data, but neither the model nor a labels.txt beside it says how many labels\n", a.data);
            return 2;
        }
    }
    ModelConfig mc;
    LLError ce;
    if (checkpoint_load_config(a.model, &mc, &ce)) return fail("eval", &ce);
    if (a.seq == 0) a.seq = mc.max_T < 128 ? mc.max_T : 128;
    if (a.seq > mc.max_T) { /* HF would index positions past its RoPE table: refuse, never shorten */
        fprintf(stderr, "loralab eval: --seq %d is longer than the model's context: max_position_embeddings is %d in "
                "%s/config.json (give --seq %d or less)\n", a.seq, mc.max_T, a.model, mc.max_T);
        return 2;
    }
    LoadedModel lm;
    Adapter *ad;
    int rc = open_model("eval", &a, a.batch, a.seq, n_labels, "--batch or --seq", &lm, &ad);
    if (rc) return rc;
    Dataset d;
    LLError e;
    LLStatus st = cls ? data_load_jsonl(a.data, lm.tok, &d, &e) : data_load_text(a.data, lm.tok, &d, &e);
    EvalResult r;
    double dt = 0.0;
    if (!st) {
        Batch b;
        batch_alloc(&b, a.batch, lm.model.T);
        double t0 = ll_now();
        st = eval_run(&lm.model, &d, &b, a.batch, lm.model.T, 0, &r, &e);
        dt = ll_now() - t0;
        batch_free(&b);
        data_free(&d);
    }
    if (st) {
        adapter_free(ad);
        checkpoint_close(&lm);
        return fail("eval", &e);
    }
    if (a.json) {
        printf("{\"data\": \"%s\", \"loss\": %.6f, \"perplexity\": %.6f, \"n\": %ld", a.data, r.loss, r.ppl, r.n);
        if (cls) printf(", \"accuracy\": %.6f, \"macro_f1\": %.6f", r.accuracy, r.macro_f1);
        printf(", \"seconds\": %.3f}\n", dt);
    } else {
        printf("%s: loss %.4f  perplexity %.3f  (%ld %s)", a.data, r.loss, r.ppl, r.n, cls ? "examples" : "tokens");
        if (cls) printf("  accuracy %.4f  macro-F1 %.4f", r.accuracy, r.macro_f1);
        printf("\n");
    }
    adapter_free(ad);
    checkpoint_close(&lm);
    return isfinite(r.loss) ? 0 : 1;
}

int cmd_generate(int argc, char **argv) {
    Args a;
    if (parse("generate", argc, argv, &a)) return 2;
    if (!a.prompt) return bad_usage("generate", "--prompt TEXT is required");
    ModelConfig mc;
    LLError e;
    if (checkpoint_load_config(a.model, &mc, &e)) return fail("generate", &e);
    if (mc.n_labels > 0) return bad_usage("generate", "the model is a classifier; generation needs a causal LM");
    /* The prompt exactly as transformers' tokenizer(prompt) encodes it on this folder: a BOS only
     * where tokenizer_config.json asks for one (tok_add_bos). */
    Tokenizer *tok;
    if (tok_load(a.model, &tok, &e)) return fail("generate", &e);
    int *ids = NULL;
    size_t cap = 0;
    size_t n = tok_encode(tok, a.prompt, strlen(a.prompt), &ids, &cap);
    int bos = tok_add_bos(tok), bos_id = tok_bos(tok); /* the tokenizer's BOS, as transformers' */
    tok_free(tok);
    size_t want = n + (size_t)bos + (size_t)a.max_new;
    if (n + (size_t)bos == 0) {
        ll_free(ids);
        return bad_usage("generate", "the prompt encodes to no token (give a non-empty --prompt)");
    }
    if (n + (size_t)bos > (size_t)mc.max_T) {
        fprintf(stderr, "loralab generate: the prompt is %zu tokens, longer than the model's context "
                "(max_position_embeddings %d in %s/config.json)\n", n + (size_t)bos, mc.max_T, a.model);
        ll_free(ids);
        return 2;
    }
    /* One forward over the whole sequence per token (no KV cache: the models here are small), with
     * positions 0.. as transformers' generate; it stops at the context length rather than slide a
     * window whose positions would restart. */
    int T = want < (size_t)mc.max_T ? (int)want : mc.max_T;
    LoadedModel lm;
    Adapter *ad;
    int rc = open_model("generate", &a, 1, T, 0, "the model or adapter size", &lm, &ad);
    if (rc) {
        ll_free(ids);
        return rc;
    }
    Model *m = &lm.model;
    int *ctx = ll_malloc(want + 1, sizeof(int));
    size_t len = 0;
    if (bos) ctx[len++] = bos_id;
    memcpy(ctx + len, ids, n * sizeof(int));
    len += n;
    const size_t n_prompt = len;
    Batch b;
    batch_alloc(&b, 1, T);
    Rng r;
    rng_seed(&r, a.seed);
    float *probs = ll_alloc_floats((size_t)mc.V);
    int *order = ll_malloc((size_t)mc.V, sizeof(int));
    fputs(a.prompt, stdout);
    int at_context = 0;
    for (int step = 0; step < a.max_new; step++) {
        if (len >= (size_t)mc.max_T) {
            at_context = 1;
            break;
        }
        int t = (int)len;
        b.B = 1, b.T = t;
        memcpy(b.ids, ctx, sizeof(int) * (size_t)t);
        for (int i = 0; i < t; i++) b.targets[i] = -1;
        model_forward(m, &b, 0);
        const float *z = model_logits(m, 0, t - 1);
        int next = 0;
        if (a.temperature == 0.0f) {
            for (int v = 1; v < mc.V; v++) next = z[v] > z[next] ? v : next;
        } else {
            /* top-k then softmax at the temperature */
            int k = a.top_k > 0 && a.top_k < mc.V ? a.top_k : mc.V;
            for (int v = 0; v < mc.V; v++) order[v] = v;
            for (int i = 0; i < k; i++) { /* partial selection sort: k is small */
                int best = i;
                for (int v = i + 1; v < mc.V; v++) best = z[order[v]] > z[order[best]] ? v : best;
                int tmp = order[i];
                order[i] = order[best], order[best] = tmp;
            }
            double s = 0.0, mx = z[order[0]];
            for (int i = 0; i < k; i++) s += probs[i] = (float)exp((z[order[i]] - mx) / a.temperature);
            double u = rng_uniform(&r) * s, acc = 0.0;
            next = order[k - 1];
            for (int i = 0; i < k; i++)
                if ((acc += probs[i]) >= u) {
                    next = order[i];
                    break;
                }
        }
        if (next == mc.eos_id) break;
        ctx[len++] = next;
        char buf[256];
        size_t nb = tok_decode_one(lm.tok, next, buf, sizeof buf);
        fwrite(buf, 1, nb, stdout);
        fflush(stdout);
    }
    fputc('\n', stdout);
    if (a.ids) { /* the whole sequence, as transformers' generate returns it: prompt | continuation */
        fputs("ids:", stdout);
        for (size_t i = 0; i < len; i++) printf("%s %d", i == n_prompt ? " |" : "", ctx[i]);
        if (len == n_prompt) fputs(" |", stdout);
        fputc('\n', stdout);
    }
    fflush(stdout); /* the text and ids first, then the note, also where both go to one file */
    if (at_context)
        fprintf(stderr, "loralab generate: stopped at the model's context length (max_position_embeddings %d) after "
                "%zu new tokens\n", mc.max_T, len - n_prompt);
    ll_free(ids), ll_free(ctx), ll_free(probs), ll_free(order);
    batch_free(&b);
    adapter_free(ad);
    checkpoint_close(&lm);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    Args a;
    if (parse("tokenize", argc, argv, &a)) return 2;
    LLError e;
    Tokenizer *tok;
    if (tok_load(a.model, &tok, &e)) return fail("tokenize", &e);
    size_t cap = 1 << 16, len = 0, got;
    char *text = ll_malloc(cap, 1);
    while ((got = fread(text + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) text = ll_realloc(text, cap *= 2, 1);
    }
    int *ids = NULL;
    size_t idcap = 0, n = tok_encode(tok, text, len, &ids, &idcap);
    for (size_t i = 0; i < n; i++) printf("%d%c", ids[i], i + 1 == n ? '\n' : ' ');
    ll_free(text), ll_free(ids);
    tok_free(tok);
    return 0;
}

/* 1 when paths A and B name the same file or folder (same device and inode). */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Where merge may write: never over one of its inputs, and over an existing folder only with
 * --force (and then only one that loralab wrote: outdir_replace checks that). */
static int merge_out_ok(const Args *a) {
    if (same_file(a->out, a->model) || same_file(a->out, a->adapter)) {
        fprintf(stderr, "loralab merge: --out '%s' is the %s folder being merged: refusing to replace an input\n", a->out,
                same_file(a->out, a->model) ? "model" : "adapter");
        return 0;
    }
    outdir_recover(a->out);
    if (outdir_occupied(a->out) && !a->force) {
        fprintf(stderr, "loralab merge: --out '%s' already exists: refusing to replace it (add --force to replace a "
                "model folder that loralab wrote; other folders and files are never replaced)\n", a->out);
        return 0;
    }
    return 1;
}

int cmd_merge(int argc, char **argv) {
    Args a;
    if (parse("merge", argc, argv, &a)) return 2;
    if (!a.adapter || !a.out) return bad_usage("merge", "--adapter DIR and --out DIR are required");
    if (!merge_out_ok(&a)) return 2;
    LoadedModel lm;
    Adapter *ad;
    LLError e;
    int n_labels = 0; /* a classification adapter carries its score head: the merged model keeps it */
    if (adapter_saved_labels(a.adapter, &n_labels, &e)) return fail("merge", &e);
    int rc = open_model("merge", &a, 1, 2, n_labels, "the model or adapter size", &lm, &ad);
    if (rc) return rc;
    if (lm.model.quant) /* adapter_merge dequantizes: say so, the merged folder is fp32 */
        printf("merge: the base is held as %s%s, as in training: its linear weights are dequantized to fp32 and "
               "the adapter merged onto them\n", quant_format_name(lm.model.quant),
               lm.model.double_quant ? " (double quantization)" : "");
    LLStatus mst = adapter_merge_check(ad, &lm.model, &e);
    if (mst) {
        adapter_free(ad);
        checkpoint_close(&lm);
        return fail("merge", &e);
    }
    adapter_merge(ad, &lm.model);
    adapter_attach(&lm.model, NULL);
    LLStatus st = checkpoint_save(&lm.model, lm.tok, NULL, a.out, &e);
    adapter_free(ad);
    checkpoint_close(&lm);
    if (st) return fail("merge", &e);
    printf("merged %s into %s -> %s\n", a.adapter, a.model, a.out);
    return 0;
}
