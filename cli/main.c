/* loralab: the command. Parses the subcommand and hands off; no logic of its own. */
#include <stdio.h>
#include <string.h>

#include "buildinfo.h"
#include "commands.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
    int own_help; /* the command prints its own --help; otherwise main prints the usage line */
} Command;

static const Command commands[] = {
    {"pretrain", cmd_pretrain, "pretrain CONFIG.yaml [--set k=v]...   train a base model from scratch -> model folder", 0},
    {"train", cmd_train, "train CONFIG.yaml [--set k=v]... [--db FILE]   one fine-tuning run -> adapter folder", 0},
    {"sweep", cmd_sweep, "sweep CONFIG.yaml [--jobs N] [--threads T] [--db FILE] [--shard I/N] [--dry-run] [--emit-slurm]", 1},
    {"runs", cmd_runs, "runs [--db FILE] [--sweep NAME] [--diff] [--csv | --json] [RUN...]   runs, what differs, exports", 1},
    {"report", cmd_report, "report --db FILE [--sweep NAME] [--out DIR]   figures, tables, index.html", 1},
    {"eval", cmd_eval, "eval --model DIR [--adapter DIR] --data FILE [--batch B] [--seq T] [--precision fp32|bf16] [--base-quant none|q8_0|nf4 [--no-double-quant]] [--json]", 0},
    {"generate", cmd_generate, "generate --model DIR [--adapter DIR] --prompt TEXT [--max-new N] [--temperature X] [--top-k K] [--seed S] [--ids] [--precision fp32|bf16] [--base-quant none|q8_0|nf4]", 0},
    {"tokenize", cmd_tokenize, "tokenize --model DIR                     text on stdin -> token ids on stdout", 0},
    {"merge", cmd_merge, "merge --model DIR --adapter DIR --out DIR [--base-quant none|q8_0|nf4] [--force]   a merged model folder (a quantized base: dequant(Q) + ΔW)", 0},
    {"merge-db", cmd_merge_db, "merge-db OUT.db IN.db...                 join shard databases", 1},
    {"analyze", cmd_analyze, "analyze --model DIR --adapter DIR [--adapter2 DIR] [--out DIR]   LoRA paper section 7: subspace similarity, amplification", 1},
};

static void usage(FILE *f) {
    fprintf(f, "usage: loralab COMMAND [ARGS]   (loralab --version: the build, BLAS kernels and CPU)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(f, "  loralab %s\n", commands[i].usage);
    fprintf(f, "\nexit status: 0 success, 1 a run failed, 2 bad usage or bad input\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        build_info_print(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        for (int k = 2; k < argc && !commands[i].own_help; k++)
            if (strcmp(argv[k], "-h") == 0 || strcmp(argv[k], "--help") == 0) {
                printf("usage: loralab %s\n\nexit status: 0 success, 1 a run failed, 2 bad usage or bad input; "
                       "README.md describes every flag\n", commands[i].usage);
                return 0;
            }
        return commands[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "loralab: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
