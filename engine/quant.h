/* quant: block-quantized weights for a frozen base, NF4 (QLoRA) and Q8_0 (GGML), bit-exact to the
 * formats' reference implementations.
 *
 * A QuantTensor holds one linear weight W (rows x cols, PyTorch's (out, in)). Blocks run over the
 * rows*cols elements in row-major order, as bitsandbytes flattens a tensor; a block may straddle
 * two rows, and the last block is padded with zeros.
 *
 * NF4 (Dettmers et al. 2023, QLoRA; bitsandbytes quantize_4bit(quant_type="nf4"), blocksize 64):
 *   absmax_b = max |x| over block b (fp32); each x is mapped as x * (1.0f / absmax_b), then coded by
 *   bitsandbytes' decision tree over the 16 NormalFloat levels (a value strictly above a boundary
 *   goes up; NaN, as 0 * (1/0) of an all-zero block, falls to code 0). Element 2j of the tensor is
 *   the HIGH nibble of byte j, element 2j+1 the low one. Dequantized: level[code] * absmax_b (an
 *   all-zero block gives -0.0, as bitsandbytes does).
 *   Double quantization (QLoRA section 3, compress_statistics=True): offset = mean of all absmax_b
 *   (fp32; summed in double here, where torch's mean may differ in the last bit); the values
 *   absmax_b - offset are quantized like bitsandbytes' quantize_blockwise in blocks of 256: an
 *   fp32 scale absmax2_c = max |.| of the block and 8-bit codes of the signed dynamic map
 *   (create_dynamic_map, quant_dynamic_map below) chosen by the CUDA kernel's binary search
 *   (quant_dynamic_code). Dequantized: absmax_b = map[code_b] * absmax2_c + offset, in fp32.
 *   Memory: 4 + 8/64 + 32/(64*256) bits a weight, plus the offset and the 1 KiB map (shared).
 * Q8_0 (llama.cpp's block_q8_0, quantize_row_q8_0_ref): blocks of 32, each 34 bytes, an fp16 scale
 *   d (little-endian) then 32 int8 q. d = amax / 127 in fp32, stored rounded to fp16 (nearest
 *   even); q = roundf(x * (1/d)) with the fp32 d (0 where d = 0); dequantized q * fp16(d). When
 *   cols is a multiple of 32 no block straddles a row and the bytes are those llama.cpp writes for
 *   the tensor; otherwise (llama.cpp refuses such rows) the flattened blocks are kept.
 *
 * Invariants:
 *   - quant_tensor_quantize refuses a non-finite weight (NaN or Inf), naming the tensor and the
 *     element, and a Q8_0 scale past fp16's range; it never produces a NaN code path.
 *   - Dequantization is a pure function of the stored bytes: quant_dequant of any range equals the
 *     same elements of a whole-tensor dequantization, bitwise.
 *   - A tensor never keeps fp32 weights: after quantization the caller may drop its copy.
 */
#ifndef LL_QUANT_H
#define LL_QUANT_H

#include "core.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { QUANT_NONE = 0, QUANT_Q8_0, QUANT_NF4 } QuantFormat;

enum {
    QUANT_NF4_BLOCK = 64,  /* weights per NF4 block */
    QUANT_DQ_BLOCK = 256,  /* absmax values per second-level block */
    QUANT_Q8_0_BLOCK = 32, /* weights per Q8_0 block */
    QUANT_Q8_0_BYTES = 34  /* bytes per Q8_0 block: fp16 d + 32 int8 */
};

typedef struct QuantTensor {
    QuantFormat fmt;
    int rows, cols;       /* (out, in) */
    size_t n;             /* rows * cols */
    size_t n_blocks;      /* ceil(n / block size) */
    uint8_t *data;        /* NF4: ceil(n/2) code bytes; Q8_0: n_blocks * 34 bytes */
    /* NF4 scales: plain (absmax, n_blocks fp32) or double-quantized (qabsmax, absmax2, offset) */
    float *absmax;
    uint8_t *qabsmax;     /* n_blocks codes of the dynamic map */
    float *absmax2;       /* ceil(n_blocks / 256) fp32 scales */
    float offset;
    const float *map;     /* the dynamic map (256 floats) of qabsmax, owned by the caller */
} QuantTensor;

const char *quant_format_name(QuantFormat f); /* "none", "q8_0", "nf4" */
/* 1 and *out set when name is one of those names, else 0. */
int quant_format_from_name(const char *name, QuantFormat *out);

/* The 16 NormalFloat levels by code (bitsandbytes' table, QLoRA appendix E). */
const float *quant_nf4_levels(void);
/* The NF4 code of a value already scaled by 1/absmax: bitsandbytes' decision tree. */
uint8_t quant_nf4_code(float x);
/* bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted, with
 * fp32 arithmetic as torch computes it on the GPU (linspace with its halfway split, contracted
 * multiply-adds; then the fp32 product 10^(i-6) * mean). */
void quant_dynamic_map(float map[256]);
/* The code of x (already scaled by 1/absmax2) in a sorted 256-entry map, as bitsandbytes' CUDA
 * kernel chooses it (dQuantize without stochastic rounding: a binary search from index 127 with
 * steps 64 .. 1, then the nearer of the last pivot and its neighbour by midpoint). */
uint8_t quant_dynamic_code(const float map[256], float x);
uint16_t quant_fp32_to_fp16(float f); /* round to nearest even; overflow to inf */
float quant_fp16_to_fp32(uint16_t h);

/* Quantizes w (rows x cols, row-major) into q (which it allocates; quant_tensor_free releases).
 * double_quant applies to NF4 only; map (from quant_dynamic_map) must outlive q when it is used.
 * name names the tensor in messages. LL_ERR_FORMAT on a non-finite weight or an unrepresentable
 * scale; q is then empty. */
LLStatus quant_tensor_quantize(QuantTensor *q, QuantFormat fmt, int double_quant, const float *map, const float *w,
                               int rows, int cols, const char *name, LLError *err);
void quant_tensor_free(QuantTensor *q);
/* Bytes the tensor holds (codes and scales; the shared map is not counted). */
size_t quant_tensor_bytes(const QuantTensor *q);
/* The absmax of NF4 block b as dequantization uses it (after the double quantization, if any). */
float quant_nf4_absmax(const QuantTensor *q, size_t b);
/* out[0, count) = dequantized elements [start, start + count) of the row-major tensor. */
void quant_dequant(const QuantTensor *q, size_t start, size_t count, float *out);
/* out[r * nc + j] = W[r][c0 + j] for every row r and j < nc: a column strip. */
void quant_dequant_cols(const QuantTensor *q, int c0, int nc, float *out);

#endif
