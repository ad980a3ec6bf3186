/* cmd_merge_db: `loralab merge-db OUT IN...`: joins shard databases (one per SLURM array task, or
 * per machine) into OUT, which is created when missing. Each input is merged in its own
 * transaction, so an error in one input leaves the inputs before it merged; merging an input
 * again adds nothing (see store_merge for the rules). */
#include "commands.h"

#include <stdio.h>
#include <string.h>

#include "core.h"
#include "experiments/store.h"

static void usage(FILE *f) {
    fprintf(f, "usage: loralab merge-db OUT.db IN.db...\n"
               "  joins the runs of every IN into OUT (created when missing); a run already in OUT\n"
               "  is replaced only by a more finished one (done > diverged > failed > interrupted\n"
               "  > running > pending), so merging twice changes nothing\n");
}

static int exit_code(LLStatus st) {
    return st == LL_ERR_IO || st == LL_ERR_FORMAT || st == LL_ERR_CONFIG ? 2 : 1;
}

int cmd_merge_db(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "loralab merge-db: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (argc < 3) {
        fprintf(stderr, "loralab merge-db: needs an output database and at least one input\n");
        usage(stderr);
        return 2;
    }
    const char *out = argv[1];
    /* Check every input first: a typo should not leave OUT half-merged. */
    for (int i = 2; i < argc; i++) {
        if (!ll_file_exists(argv[i])) {
            fprintf(stderr, "loralab merge-db: no database at '%s'; nothing merged\n", argv[i]);
            return 2;
        }
    }
    LLError err = {0};
    Store *s = NULL;
    LLStatus st = store_open(out, 0, &s, &err);
    if (st != LL_OK) {
        fprintf(stderr, "loralab merge-db: %s\n", err.msg);
        return exit_code(st);
    }
    StoreMergeCounts all = {0, 0, 0};
    for (int i = 2; i < argc; i++) {
        StoreMergeCounts c;
        st = store_merge(s, argv[i], &c, &err);
        if (st != LL_OK) {
            fprintf(stderr, "loralab merge-db: %s\n", err.msg);
            if (i > 2)
                fprintf(stderr, "loralab merge-db: the inputs before '%s' are merged into '%s'\n",
                        argv[i], out);
            store_close(s);
            return exit_code(st);
        }
        printf("%s: %d added, %d upgraded (a better status than here), %d unchanged\n", argv[i], c.added,
               c.upgraded, c.unchanged);
        all.added += c.added, all.upgraded += c.upgraded, all.unchanged += c.unchanged;
    }
    store_close(s);
    printf("%s: %d added, %d upgraded, %d unchanged in all\n", out, all.added, all.upgraded, all.unchanged);
    return 0;
}
