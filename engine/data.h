/* data: datasets and batches.
 *
 * Language modelling: a plain-text file, tokenized once into one stream of ids. Training batches
 * are B random windows of T+1 tokens (inputs and next-token targets), drawn from the caller's Rng;
 * evaluation walks non-overlapping windows from the start, so every eval sees the same tokens.
 *
 * Classification: a JSONL file of {"text": "...", "label": k} lines. Each example becomes
 * [BOS] + tokens, truncated to T and right-padded with PAD; the row is pooled at its last non-pad
 * position (HF LlamaForSequenceClassification). The reader bounds a label only to [0, 65535]: what
 * the model's head holds is checked by data_check_labels against each split before it is used
 * (train_run, eval_run), since a label past the head would index past its logits. */
#ifndef LL_DATA_H
#define LL_DATA_H

#include "core.h"
#include "model.h"
#include "rng.h"
#include "tokenizer.h"

typedef enum { DATA_LM, DATA_CLS } DataKind;

typedef struct {
    DataKind kind;
    char *path;
    /* LM */
    int *tokens;
    size_t n_tokens;
    /* CLS: example i has tokens ex_tokens[ex_off[i] .. ex_off[i] + ex_len[i]) */
    int n_ex;
    size_t *ex_off;
    int *ex_len;
    int *ex_label;
    int *ex_line; /* the file's line each example came from, for messages */
    int *ex_tokens;
    int n_labels; /* 1 + the largest label seen */
} Dataset;

LLStatus data_load_text(const char *path, const Tokenizer *tok, Dataset *d, LLError *err);
LLStatus data_load_jsonl(const char *path, const Tokenizer *tok, Dataset *d, LLError *err);
/* data_load_jsonl on text already in memory (len bytes, no NUL needed); `path` names the file in
 * messages and in d->path. Counts and lengths that would overflow an int are refused. */
LLStatus data_parse_jsonl(const char *text, size_t len, const char *path, const Tokenizer *tok, Dataset *d,
                          LLError *err);
void data_free(Dataset *d);
/* Every label of a classification set must index the model's head: LL_ERR_FORMAT naming the first
 * example at or above n_labels as path:line (a split other than the one a check saw can hold any
 * label in [0, 65535]). A language-modelling set passes. */
LLStatus data_check_labels(const Dataset *d, int n_labels, LLError *err);

/* Batch buffers for capacity (B, T). */
void batch_alloc(Batch *b, int B, int T);
void batch_free(Batch *b);

/* Training batch: random windows (LM) or random examples (CLS), B x T. */
void data_sample(const Dataset *d, Rng *r, Batch *b, int B, int T, int bos, int pad);
/* Evaluation batch `index`: deterministic; returns the rows filled (0 past the end; b->B is set). */
int data_eval_batch(const Dataset *d, int index, Batch *b, int B, int T, int bos, int pad);
/* How many eval batches cover the dataset. */
int data_eval_count(const Dataset *d, int B, int T);

#endif
