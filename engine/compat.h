/* compat: the one list of the keys other tools write into config.json (transformers' LlamaConfig)
 * and adapter_config.json (PEFT's LoraConfig, AdaLoraConfig, VeraConfig), and what loralab does
 * with each.
 *
 * Invariant: no key of either file is silently dropped. Every key is one of
 *   COMPAT_READ      understood: its reader (checkpoint.c, adapter.c) uses and checks the value;
 *                    `accept`, when set, lists the only values implemented (others are refused);
 *   COMPAT_IGNORED   known to be irrelevant to what loralab computes, any value (`why` says why);
 *   COMPAT_REFUSED   a feature loralab does not implement: accepted only with one of the
 *                    `accept` values (the ones that ask for nothing), otherwise refused;
 * and a key in none of these (one the table does not know, or one of another PEFT method) is
 * refused. Refusals are LL_ERR_FORMAT naming the file, the key and the value (the commands exit 2).
 *
 * `accept` is JSON text: an array of the values allowed, compared with cJSON_Compare (0 and 0.0
 * are the same number). */
#ifndef LL_COMPAT_H
#define LL_COMPAT_H

#include "core.h"

#include <cjson/cJSON.h>

typedef enum { COMPAT_READ, COMPAT_IGNORED, COMPAT_REFUSED } CompatKind;
typedef enum { COMPAT_MODEL_CONFIG, COMPAT_ADAPTER_CONFIG } CompatFile;

/* Which PEFT methods a key of adapter_config.json belongs to (0 for config.json keys). */
enum { COMPAT_LORA = 1, COMPAT_ADALORA = 2, COMPAT_VERA = 4 };

typedef struct {
    const char *key;
    CompatKind kind;
    unsigned methods;   /* adapter_config.json: COMPAT_LORA | ...; config.json: 0 */
    const char *accept; /* JSON array of the allowed values, or NULL: any value (the reader checks) */
    const char *why;
} CompatKey;

/* The entry for key in file f (for adapter_config.json, of the method mask `method`), or NULL. */
const CompatKey *compat_lookup(CompatFile f, unsigned method, const char *key);
/* The table of file f: *n entries. */
const CompatKey *compat_table(CompatFile f, int *n);
/* Checks every key of obj (a parsed config.json or adapter_config.json of the PEFT method mask
 * `method`) against the table: the first unknown key, or known key with a value outside its
 * `accept` list, fails with LL_ERR_FORMAT naming path, key and value. */
LLStatus compat_check_keys(CompatFile f, unsigned method, const cJSON *obj, const char *path, LLError *err);

#endif
