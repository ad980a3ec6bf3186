/* tokenizer: byte-level BPE (GPT-2 style), trained here or loaded from a Hugging Face
 * `tokenizer.json`, and saved in that format so `PreTrainedTokenizerFast(tokenizer_file=...)`
 * loads it and encodes every text to the same ids.
 *
 * Ids. A tokenizer made here has ids 0..255 for the 256 bytes (id b is the byte b), then one id
 * per BPE merge result in merge order, then the special tokens <s> (BOS), </s> (EOS) and <pad>
 * (PAD) right after the last regular token. A loaded file may number its tokens differently;
 * the only requirements are that the ids are 0..V-1 without holes, that every byte has a
 * single-byte token, and that the three specials exist (added_tokens with special: true).
 *
 * Encoding (the same steps as Hugging Face `tokenizers` with this configuration):
 *   1. The text is cut at every occurrence of a special token's content ("<s>", ...): those
 *      become their ids (leftmost, longest first), like HF's added-token matching.
 *   2. Each remaining stretch is pre-split into words by TOK_SPLIT_REGEX (below), the rule HF
 *      runs as a `Split` pre-tokenizer with behavior "Isolated": a word is one of
 *        'Apostrophe contractions  's 't 're 've 'm 'll 'd
 *        an optional space + a run of letters,  an optional space + a run of digits 0-9,
 *        an optional space + a run of other non-space characters,
 *        a run of whitespace (when followed by a non-space, the run minus its last character,
 *        so that the last space can start the next word, as in GPT-2).
 *      Whitespace is ASCII \t \n \v \f \r and space. Letters are A-Z, a-z and every non-ASCII
 *      code point outside U+0080..U+00BF (Latin-1 punctuation, NBSP) and U+2000..U+206F (general
 *      punctuation: dashes, curly quotes, ellipsis, Unicode spaces), which count as "other".
 *      Bytes that are not valid UTF-8 count as "other", one byte each (HF cannot be given
 *      invalid UTF-8, so there is nothing to match there).
 *   3. Each word's bytes start as single-byte tokens; merges are applied lowest rank first,
 *      leftmost first among equal ranks, exactly as HF's BPE `merge_all` does (a heap of
 *      (rank, position), entries checked against the current pair before merging).
 * Decoding concatenates the tokens' bytes; specials decode to nothing.
 *
 * Training (tok_train_bpe): the text is pre-split as above, unique words are counted, then the
 * most frequent adjacent pair (ties: smallest left id, then smallest right id) is merged
 * repeatedly, with pair counts updated incrementally from the words that contain the pair. A
 * merge whose result equals an existing token's bytes reuses that token's id (as HF's trainer).
 *
 * A Tokenizer is immutable after creation except for tok_set_max_length, so one object may be
 * shared by threads that encode concurrently (encode keeps its word cache per call).
 */
#ifndef LL_TOKENIZER_H
#define LL_TOKENIZER_H

#include <stddef.h>

#include "core.h"

/* The pre-split rule as the Oniguruma regex written into tokenizer.json. */
#define TOK_SPLIT_REGEX                                                                        \
    "'s|'t|'re|'ve|'m|'ll|'d"                                                                  \
    "| ?[A-Za-z\\x{C0}-\\x{1FFF}\\x{2070}-\\x{10FFFF}]+"                                       \
    "| ?[0-9]+"                                                                                \
    "| ?[^\\t\\n\\x0B\\f\\r A-Za-z0-9\\x{C0}-\\x{1FFF}\\x{2070}-\\x{10FFFF}]+"                  \
    "|[\\t\\n\\x0B\\f\\r ]+(?![^\\t\\n\\x0B\\f\\r ])"                                          \
    "|[\\t\\n\\x0B\\f\\r ]+"

#define TOK_BOS_TEXT "<s>"
#define TOK_EOS_TEXT "</s>"
#define TOK_PAD_TEXT "<pad>"
/* Largest vocabulary tok_train_bpe accepts (ids must fit the model's int token ids easily). */
#define TOK_MAX_TRAIN_VOCAB (1 << 20)

typedef struct Tokenizer Tokenizer;

/* The pure byte-level tokenizer: 256 bytes + BOS/EOS/PAD (ids 256, 257, 258), no merges. */
Tokenizer *tok_new_bytes(void);
/* Trains byte-level BPE on text to at most vocab_size ids in all (bytes + merges + 3 specials;
 * fewer when the text runs out of pairs). vocab_size must be in [259, TOK_MAX_TRAIN_VOCAB]
 * (LL_ERR_CONFIG otherwise). Deterministic: the same text and size give the same merges. */
LLStatus tok_train_bpe(const char *text, size_t len, int vocab_size, Tokenizer **out, LLError *err);
void tok_free(Tokenizer *t);

int tok_vocab_size(const Tokenizer *t); /* total ids including specials */
int tok_bos(const Tokenizer *t);
int tok_eos(const Tokenizer *t);
int tok_pad(const Tokenizer *t);
int tok_n_merges(const Tokenizer *t);
/* 1 when tokenizer_config.json asks for a BOS before every encoded text (add_bos_token true, or
 * absent with tokenizer_class LlamaTokenizer/LlamaTokenizerFast, whose default it is): what
 * transformers' tokenizer(text) does on this folder. tok_encode itself never adds one. */
int tok_add_bos(const Tokenizer *t);
/* Merge of rank r (0 = first learned): left + right -> result ids. r must be < tok_n_merges. */
void tok_merge(const Tokenizer *t, int rank, int *left, int *right, int *result);
/* The bytes of a token (not NUL-terminated; a special's content text); NULL for a bad id. */
const char *tok_token_bytes(const Tokenizer *t, int id, size_t *len);
int tok_is_special(const Tokenizer *t, int id);
/* model_max_length written to tokenizer_config.json (default 2048). */
void tok_set_max_length(Tokenizer *t, int n);
int tok_max_length(const Tokenizer *t);

/* Encodes text into ids; returns the count. *ids (capacity *cap ints) is grown with ll_realloc
 * as needed (the caller frees it with ll_free); *ids may be NULL with *cap 0. */
size_t tok_encode(const Tokenizer *t, const char *text, size_t len, int **ids, size_t *cap);
/* Decodes one id to its bytes (for streaming generation): writes min(len, cap) bytes to out and
 * returns the token's full length; specials and ids out of range decode to "" (0). */
size_t tok_decode_one(const Tokenizer *t, int id, char *out, size_t cap);
/* Decodes n ids into *out (grown with ll_realloc, capacity *cap, NUL-terminated); returns the
 * byte count excluding the NUL. */
size_t tok_decode(const Tokenizer *t, const int *ids, size_t n, char **out, size_t *cap);

/* Writes DIR/tokenizer.json, DIR/tokenizer_config.json and DIR/special_tokens_map.json (each
 * atomically); creates DIR if needed. */
LLStatus tok_save(const Tokenizer *t, const char *dir, LLError *err);
/* Loads DIR/tokenizer.json (or the file itself when path is a file) and, when present beside
 * it, model_max_length from tokenizer_config.json. Malformed content -> LL_ERR_FORMAT with a
 * message naming the file and what is wrong. */
LLStatus tok_load(const char *path, Tokenizer **out, LLError *err);
/* Parses and validates the text of a tokenizer.json (never crashes on any input). */
LLStatus tok_parse_json(const char *json, size_t len, Tokenizer **out, LLError *err);

/* End of the pre-split word that starts at byte i of s[0..n) (i < n): the rule above, exposed so
 * tests and tools can see the words the encoder and the trainer see. */
size_t tok_split_next(const char *s, size_t n, size_t i);

/* GPT-2's byte-to-unicode table (as HF's ByteLevel): the code point that stands for byte b in
 * token strings of tokenizer.json. */
unsigned tok_byte_to_unicode(unsigned char b);

#endif
