/* safetensors: reading and writing the safetensors tensor file format (Hugging Face), as used by
 * `model.safetensors` and PEFT's `adapter_model.safetensors`. Format: reference/peft-spec.md,
 * section 6.
 *
 *     [8 bytes]  N, unsigned 64-bit little-endian: byte length of the header
 *     [N bytes]  header: UTF-8 JSON object, first byte '{', possibly right-padded with spaces
 *     [rest]     data buffer: raw little-endian tensors in C order
 *
 * Reader. st_load / st_parse read the whole file into one buffer, st_map maps it (mmap,
 * MAP_PRIVATE) without reading the data; all three validate the whole header against the file's
 * size before returning, so that every later access (st_find, st_read_f32, StTensor.begin/end) is
 * in bounds by construction. A file is refused (LL_ERR_FORMAT, message naming the file, the tensor and the
 * fault) unless:
 *   - it holds at least 8 bytes, N <= 100,000,000 and 8 + N <= file size;
 *   - the header is valid UTF-8 without NUL bytes, starts with '{', is one valid JSON object
 *     (trailing JSON whitespace allowed, for the padding) and no object in it repeats a key;
 *   - every entry other than "__metadata__" is an object with a known "dtype", a "shape" that is
 *     a list of at most ST_MAX_DIMS non-negative integers (no floats, no exponents) and
 *     "data_offsets" [begin, end] of two integers with begin <= end (other fields are ignored,
 *     as the reference reader does);
 *   - end - begin == numel * bits / 8 exactly, computed with overflow checks, numel * bits being a
 *     multiple of 8;
 *   - sorted by (begin, end), the tensors tile the data buffer: first begin 0, each begin equal
 *     to the previous end, last end equal to the data length (no holes, overlaps or trailing
 *     bytes); an empty file ({} header) has an empty data buffer;
 *   - "__metadata__", when present and not null, maps strings to strings.
 * Zero-size tensors (a 0 dimension) have begin == end. A scalar has ndim 0 and one element.
 * Numbers in the header are read from their JSON text, not from cJSON's doubles, so integers up
 * to 2^64-1 are exact; dimensions must also fit in int64_t.
 *
 * Invariants after a successful load: tensors[] is in data order (by begin, zero-size ties in
 * header order), 0 <= begin <= end <= data_len, names are unique, and data[begin..end) holds
 * exactly numel elements of dtype. The host must be little-endian (asserted).
 *
 * Writer. Reproduces the reference (Rust) writer byte for byte: compact JSON, "__metadata__"
 * first (its keys sorted bytewise, since the reference's map order is unspecified), then tensors
 * sorted by dtype in descending StDtype order, then by name bytewise, fields in the order dtype,
 * shape, data_offsets; data in the same order with no per-tensor alignment; header padded with
 * spaces to a multiple of 8. The file is written atomically (ll_write_file_atomic).
 */
#ifndef LL_SAFETENSORS_H
#define LL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER 100000000u /* the reference reader's limit on N */

/* All dtypes of the format, in the declaration order of the reference's Rust `Dtype` enum
 * (lowest first). The order is the writer's sort key (descending), so it must not change;
 * ST_DTYPE_COUNT is not a dtype. */
typedef enum {
    ST_BOOL,
    ST_F4,
    ST_F6_E2M3,
    ST_F6_E3M2,
    ST_U8,
    ST_I8,
    ST_F8_E5M2,
    ST_F8_E4M3,
    ST_F8_E8M0,
    ST_F8_E4M3FNUZ,
    ST_F8_E5M2FNUZ,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_C64,
    ST_F64,
    ST_I64,
    ST_U64,
    ST_DTYPE_COUNT
} StDtype;

/* The dtype's name in the file ("F32", "F8_E4M3", ...); "?" for an invalid value. */
const char *st_dtype_name(StDtype dt);
/* Bits per element: 4 (F4), 6 (F6_*), 8, 16, 32 or 64 (C64 = two F32). */
int st_dtype_bits(StDtype dt);
/* Parses a dtype name (exact, case-sensitive); returns 0 if unknown. */
int st_dtype_parse(const char *name, StDtype *out);

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;                     /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS];   /* shape[0..ndim) */
    size_t begin, end;            /* byte offsets into SafeTensors.data, end exclusive */
} StTensor;

typedef struct {
    char *path;          /* the file's path for messages ("(memory buffer)" for st_parse) */
    char *buf;           /* the whole file (st_load, st_parse); NULL for st_map */
    size_t size;
    size_t header_len;   /* N */
    const char *data;    /* buf + 8 + N, or map + 8 + N */
    size_t data_len;
    StTensor *tensors;   /* in data order */
    int n;
    cJSON *metadata;     /* the "__metadata__" object (string values only), or NULL */
    void *map;           /* st_map: the whole file, mapped MAP_PRIVATE read-write; else NULL */
    size_t map_len;      /* bytes mapped (== size) */
} SafeTensors;

/* Reads and validates a whole file. On failure *st is left empty (st_free is still safe). */
LLStatus st_load(const char *path, SafeTensors *st, LLError *err);
/* Maps a whole file (mmap PROT_READ|PROT_WRITE, MAP_PRIVATE: writes stay in this process, as
 * private copies of the pages written) and validates it exactly as st_load does, reading only the
 * header: the data pages are not touched. Fails with LL_ERR_IO when the file cannot be opened or
 * mapped (a caller can fall back to st_load), and with st_load's LL_ERR_FORMAT messages for a
 * malformed file. st_free unmaps; a caller that wants the mapping to outlive *st takes map and
 * map_len and sets st->map to NULL (it then unmaps with munmap(map, map_len)). The file must not
 * be truncated while mapped (a read past its new end is SIGBUS): write such files to a new name
 * and rename (ll_write_file_atomic), as loralab does. */
LLStatus st_map(const char *path, SafeTensors *st, LLError *err);
/* The same on a memory buffer, which is copied (the caller keeps ownership of bytes). */
LLStatus st_parse(const void *bytes, size_t len, SafeTensors *st, LLError *err);
void st_free(SafeTensors *st);

/* The tensor named `name`, or NULL. Linear in the number of tensors. */
const StTensor *st_find(const SafeTensors *st, const char *name);
/* Number of elements (1 for a scalar); cannot overflow for a tensor of a loaded file. */
size_t st_tensor_numel(const StTensor *t);
/* The "__metadata__" value of `key`, or NULL. */
const char *st_meta_get(const SafeTensors *st, const char *key);

/* Copies tensor `name` into `out` (numel floats), converting F32, F16, BF16 exactly and F64 by
 * rounding to nearest. Fails (LL_ERR_FORMAT) when the tensor is missing, its dtype is not one of
 * those, or its shape differs from shape[0..ndim); the message names the file, the tensor, and
 * both shapes. ndim must be in [0, ST_MAX_DIMS]. */
LLStatus st_read_f32(const SafeTensors *st, const char *name, int ndim, const int64_t *shape,
                     float *out, LLError *err);

/* Element conversions used by st_read_f32 and the writer (exact, NaN kept NaN). */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
/* Round to nearest even, as torch does for float -> bfloat16; NaN stays a quiet NaN. */
uint16_t st_f32_to_bf16(float f);

/* Writer. The add functions keep pointers to `data` (not copies): the data must stay valid and
 * unchanged until st_writer_write. Shapes are copied. Mistakes that depend on the caller's input
 * (a repeated tensor name, the name "__metadata__", a size overflow) are reported by
 * st_writer_write (LL_ERR_STATE); ndim outside [0, ST_MAX_DIMS] or a negative dimension is a bug
 * (assert). Repeating a metadata key replaces its value. */
typedef struct StWriter StWriter;
StWriter *st_writer_new(void);
void st_writer_meta(StWriter *w, const char *key, const char *value);
void st_writer_add_f32(StWriter *w, const char *name, int ndim, const int64_t *shape,
                       const float *data);
/* Stores raw bfloat16 bits (data must stay valid, as above). */
void st_writer_add_bf16(StWriter *w, const char *name, int ndim, const int64_t *shape,
                        const uint16_t *data);
/* Converts fp32 data to bfloat16 now (st_f32_to_bf16); the writer keeps the converted copy, so
 * `data` need not outlive this call. */
void st_writer_add_f32_as_bf16(StWriter *w, const char *name, int ndim, const int64_t *shape,
                               const float *data);
/* Serialises to memory (the exact bytes st_writer_write puts in the file); *out is ll_malloc'd. */
LLStatus st_writer_serialize(StWriter *w, char **out, size_t *len, LLError *err);
LLStatus st_writer_write(StWriter *w, const char *path, LLError *err);
void st_writer_free(StWriter *w);

#endif
