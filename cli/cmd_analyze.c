/* cmd_analyze: `loralab analyze --model DIR --adapter DIR [--adapter2 DIR] [--out DIR] [--layer L]
 * [--module q_proj[,v_proj]] [--seed S] [--no-render]`: the LoRA paper's section 7 tools on adapter
 * folders (analysis/lora_analysis.h): phi heatmaps of two adapters' A and B matrices, the
 * amplification table and the spectral diagnostics (analysis/diagnostics.h) of every adapted module. The model folder defaults to the adapter's base_model_name_or_path (the
 * base a sweep trained it on); the output folder to results/analysis/<adapter>[_vs_<adapter2>].
 * Exit status: 0 written (also without gnuplot: then scripts and data only), 1 gnuplot failed on a
 * script (everything else written), 2 bad usage or bad input (a refused method, a missing or
 * malformed folder, a layer or module that no adapter adapts). */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "analysis/lora_analysis.h"
#include "core.h"
#include "model.h"
#include "outdir.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: loralab analyze --adapter DIR [--adapter2 DIR] [--model DIR] [--out DIR]\n"
            "                       [--layer L] [--module q_proj[,v_proj...]] [--seed S] [--no-render]\n"
            "  LoRA paper (Hu et al. 2021) section 7 on LoRA / rsLoRA adapter folders:\n"
            "  --adapter DIR    the adapter (adapter_config.json + adapter_model.safetensors)\n"
            "  --adapter2 DIR   a second adapter of the same base (other rank or seed): phi heatmaps\n"
            "                   phi_<layer>_<module> (A, input space) and phi_B_<layer>_<module> (B)\n"
            "  --model DIR      the base model folder (default: the adapter's base_model_name_or_path)\n"
            "  --out DIR        output folder (default results/analysis/<adapter>[_vs_<adapter2>])\n"
            "  --layer L        only layer L (default: every adapted layer)\n"
            "  --module LIST    only these modules (default: phi on every module adapted in both,\n"
            "                   amplification on q_proj and v_proj)\n"
            "  --seed S         seed of the random subspace in the amplification table (default 0)\n"
            "  --no-render      write the .gp scripts and .dat data without running gnuplot\n"
            "  and the spectral diagnostics (intruder dimensions, effective rank of dW, magnitude and\n"
            "  direction change) of every adapted module within --layer/--module\n"
            "writes phi_*.{dat,gp,pdf,svg,png}, phi_summary.{md,tsv}, amplification.{md,tsv},\n"
            "diagnostics.{md,tsv}\n");
}

static void folder_name(const char *dir, char *out, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), dir + b);
    if (!out[0] || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) snprintf(out, cap, "adapter");
}

static int bad(const char *msg, const char *arg) {
    fprintf(stderr, "loralab analyze: %s%s%s%s\n", msg, arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
    usage(stderr);
    return 2;
}

int cmd_analyze(int argc, char **argv) {
    LAOptions o;
    la_options_defaults(&o);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = NULL;
        if (strcmp(f, "-h") == 0 || strcmp(f, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(f, "--no-render") == 0) {
            o.render = 0;
            continue;
        }
        if (cli_flag(argc, argv, &i, "--model", &v)) o.model_dir = v;
        else if (cli_flag(argc, argv, &i, "--adapter2", &v)) o.adapter2 = v;
        else if (cli_flag(argc, argv, &i, "--adapter", &v)) o.adapter1 = v;
        else if (cli_flag(argc, argv, &i, "--out", &v)) o.out_dir = v;
        else if (cli_flag(argc, argv, &i, "--layer", &v)) {
            char *end;
            long l = strtol(v, &end, 10);
            if (*end || end == v || l < 0 || l > 1000000) return bad("--layer needs a layer number >= 0, not", v);
            o.layer = (int)l;
        } else if (cli_flag(argc, argv, &i, "--module", &v)) {
            LLError e;
            if (adapter_parse_targets(v, &o.modules, &e)) return bad(e.msg, NULL);
        } else if (cli_flag(argc, argv, &i, "--seed", &v)) {
            char *end;
            unsigned long long s = strtoull(v, &end, 10);
            if (*end || end == v || v[0] == '-') return bad("--seed needs a whole number >= 0, not", v);
            o.seed = s;
        } else {
            return bad(i + 1 >= argc ? "unknown flag, or a flag missing its value:" : "unknown flag", f);
        }
    }
    if (!o.adapter1) return bad("--adapter DIR is required", NULL);
    char out_buf[512];
    if (!o.out_dir) {
        char n1[200], n2[200];
        folder_name(o.adapter1, n1, sizeof n1);
        if (o.adapter2) {
            folder_name(o.adapter2, n2, sizeof n2);
            snprintf(out_buf, sizeof out_buf, "results/analysis/%s_vs_%s", n1, n2);
        } else {
            snprintf(out_buf, sizeof out_buf, "results/analysis/%s", n1);
        }
        o.out_dir = out_buf;
    }

    LASummary sum;
    LLError err = {0};
    /* Written file by file: only into a folder that is new, empty or an analysis's. */
    if (outdir_claim(o.out_dir, "analysis", &err)) {
        fprintf(stderr, "loralab analyze: %s\n", err.msg);
        return 2;
    }
    LLStatus st = la_analyze(&o, &sum, &err);
    if (st && !sum.render_failed) {
        fprintf(stderr, "loralab analyze: %s\n", err.msg);
        la_summary_free(&sum);
        return 2;
    }
    printf("analysis of %s%s%s on %s -> %s\n", o.adapter1, o.adapter2 ? " and " : "", o.adapter2 ? o.adapter2 : "",
           sum.model_dir, o.out_dir);
    if (sum.n_phi) {
        printf("subspace similarity (section 7.2): phi(1,1) and phi(r1,r2); random subspaces give max(i,j)/dim\n");
        printf("  %-5s %-9s %4s %4s  %8s %8s  %8s %8s\n", "layer", "module", "r1", "r2", "A(1,1)", "A(r1,r2)",
               "B(1,1)", "B(r1,r2)");
        for (int i = 0; i < sum.n_phi; i++) {
            const LAPhiRow *p = &sum.phi[i];
            printf("  %-5d %-9s %4d %4d  %8.3f %8.3f  %8.3f %8.3f\n", p->layer, model_module_name(p->mod), p->r1,
                   p->r2, p->phiA_11, p->phiA_last, p->phiB_11, p->phiB_last);
        }
    } else {
        printf("subspace similarity: needs --adapter2 (a second adapter to compare with)\n");
    }
    printf("amplification (section 7.3, Table 7): ||dW||_F / ||U^T W V||_F, U,V top-r of dW\n");
    printf("  %-3s %-5s %-9s %4s  %9s %9s  %9s %9s %9s  %8s\n", "ad", "layer", "module", "r", "||dW||", "||W||",
           "dW dirs", "W dirs", "random", "ampl.");
    for (int i = 0; i < sum.n_amp; i++) {
        const LAAmpRow *a = &sum.amp[i];
        printf("  %-3d %-5d %-9s %4d  %9.4g %9.4g  %9.4g %9.4g %9.4g  %8.4g\n", a->adapter, a->layer,
               model_module_name(a->mod), a->amp.r, a->amp.dw_fro, a->amp.w_fro, a->amp.proj_dw, a->amp.proj_w,
               a->amp.proj_random, a->amp.amplification);
    }
    printf("spectral diagnostics: intruders among W1's top k singular vectors (best |cos| with W0's < %g),\n"
           "effective rank of dW, DoRA's magnitude (dM) and direction (dD) change\n",
           DIAG_INTRUDER_EPS);
    printf("  %-3s %-5s %-9s %9s %8s %8s  %9s %9s  %9s %9s\n", "ad", "layer", "module", "intruders", "min cos",
           "eff.rank", "||dW||", "||W0||", "dM", "dD");
    for (int i = 0; i < sum.n_diag; i++) {
        const LADiagRow *r = &sum.diag[i];
        const DiagMatrix *d = &r->site.d;
        printf("  %-3d %-5d %-9s %6d/%-2d %8.4f %8.3f  %9.4g %9.4g  %9.4g %9.4g\n", r->adapter, r->site.layer,
               model_module_name(r->site.mod), d->intruders, d->k, d->min_max_cos, d->eff_rank, d->dw_fro,
               r->site.w0_fro, d->d_mag, d->d_dir);
    }
    printf("  tables   %s/amplification.{md,tsv}, diagnostics.{md,tsv}%s\n", o.out_dir,
           sum.n_phi ? ", phi_summary.{md,tsv}" : "");
    if (sum.n_figs)
        printf("  figures  %d of %d rendered: %s/phi_*.{pdf,svg,png} (scripts phi_*.gp, data phi_*.dat)\n",
               sum.n_rendered, sum.n_figs, o.out_dir);
    if (sum.n_figs && sum.gnuplot_missing)
        fprintf(stderr,
                "loralab analyze: gnuplot not found: figures were not rendered (scripts and data were written). "
                "Install it with scripts/deps.sh, then run `gnuplot NAME.gp` in %s, or rerun this command.\n",
                o.out_dir);
    if (sum.unsandboxed[0])
        fprintf(stderr, "loralab analyze: note: gnuplot ran without its process sandbox (%s)\n", sum.unsandboxed);
    la_summary_free(&sum);
    if (st) {
        fprintf(stderr, "loralab analyze: %s\n", err.msg);
        return 1;
    }
    return 0;
}
