/* quant: see quant.h for the formats and invariants. The references are bitsandbytes'
 * csrc kernels (kQuantizeBlockwise, dQuantizeNF4, dQuantize, kDequantizeBlockwise) and
 * functional.py (quantize_4bit, create_dynamic_map), and llama.cpp's ggml-quants.c
 * (quantize_row_q8_0_ref, dequantize_row_q8_0); the tests check codes and values computed from
 * the tables independently. */
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* NormalFloat levels by code, and the midpoints bitsandbytes' decision tree compares against
 * (boundary k separates codes k and k+1), both as the fp32 literals of its kernel. */
static const float NF4_LEVELS[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
static const float NF4_BOUNDS[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
    -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f, 0.2035212516784668f,
    0.2920137718319893f, 0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};

const char *quant_format_name(QuantFormat f) { return f == QUANT_NF4 ? "nf4" : f == QUANT_Q8_0 ? "q8_0" : "none"; }

int quant_format_from_name(const char *name, QuantFormat *out) {
    static const QuantFormat all[] = {QUANT_NONE, QUANT_Q8_0, QUANT_NF4};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, quant_format_name(all[i])) == 0) {
            *out = all[i];
            return 1;
        }
    return 0;
}

const float *quant_nf4_levels(void) { return NF4_LEVELS; }

/* The tree's answer is the number of boundaries x lies strictly above (the boundaries increase,
 * so every path of the tree agrees with the count); NaN lies above none and gets code 0, where
 * the tree's "else" branches take it. */
uint8_t quant_nf4_code(float x) {
    uint8_t c = 0;
    for (int k = 0; k < 15; k++) c += x > NF4_BOUNDS[k];
    return c;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void quant_dynamic_map(float map[256]) {
    int n = 0;
    /* signed, 7 exponent bits, 8 bits in all: for exponent i, 2^i fraction values, the means of
     * neighbours of linspace(0.1, 1, 2^i + 1), times 10^(i - 6), and their negatives; then 0 and 1 */
    for (int i = 0; i < 7; i++) {
        const int steps = (1 << i) + 1, half = steps / 2;
        const float start = 0.1f, end = 1.0f, step = (end - start) / (float)(steps - 1);
        float b[65];
        /* torch.linspace: the first half counted up from start, the rest down from end; on the
         * GPU each is one fused multiply-add */
        for (int k = 0; k < steps; k++)
            b[k] = k < half ? fmaf(step, (float)k, start) : fmaf(-step, (float)(steps - k - 1), end);
        const float scale = (float)pow(10.0, i - 6);
        for (int j = 0; j + 1 < steps; j++) {
            float v = scale * ((b[j] + b[j + 1]) / 2.0f);
            map[n++] = v;
            map[n++] = -v;
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    LL_ASSERT(n == 256);
    qsort(map, 256, sizeof(float), cmp_float);
}

uint8_t quant_dynamic_code(const float map[256], float x) {
    int pivot = 127, lo_i = 0, hi_i = 255;
    float lo = -1.0f, hi = 1.0f, v = map[pivot];
    for (int step = 64; step > 0; step >>= 1) {
        if (x > v) lo_i = pivot, lo = v, pivot += step;
        else hi_i = pivot, hi = v, pivot -= step;
        v = map[pivot];
    }
    if (hi_i == 255) hi = map[255];
    if (lo_i == 0) lo = map[0];
    if (x > v) return (uint8_t)(x > (hi + v) * 0.5f ? hi_i : pivot);
    return (uint8_t)(x < (lo + v) * 0.5f ? lo_i : pivot);
}

uint16_t quant_fp32_to_fp16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;  /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* 65520 and up round to inf */
    if (a < 0x38800000u) /* below 2^-14: a subnormal half, round(|f| * 2^24) to nearest even */
        return sign | (uint16_t)lrintf(fabsf(f) * 16777216.0f);
    uint32_t r = a - 0x38000000u; /* exponent bias 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}

float quant_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float f;
    if (e == 0) {
        f = (float)m * (1.0f / 16777216.0f); /* subnormal: m * 2^-24, exact */
        return sign ? -f : f;
    }
    uint32_t u = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112u) << 23) | (m << 13));
    memcpy(&f, &u, 4);
    return f;
}

/* ---- quantize ------------------------------------------------------------------------------- */

static size_t block_of(QuantFormat f) { return f == QUANT_NF4 ? QUANT_NF4_BLOCK : QUANT_Q8_0_BLOCK; }

static void quantize_nf4(QuantTensor *q, const float *w, float *amax) {
    const size_t n = q->n;
    #pragma omp parallel for schedule(static) if (n >= 1u << 16)
    for (size_t b = 0; b < q->n_blocks; b++) {
        size_t i0 = b * QUANT_NF4_BLOCK, i1 = i0 + QUANT_NF4_BLOCK < n ? i0 + QUANT_NF4_BLOCK : n;
        float a = 0.0f;
        for (size_t i = i0; i < i1; i++) a = fmaxf(a, fabsf(w[i]));
        amax[b] = a;
        const float inv = 1.0f / a; /* inf for an all-zero block: 0 * inf is NaN, code 0 */
        for (size_t i = i0; i < i0 + QUANT_NF4_BLOCK; i += 2) { /* the padding quantizes 0 */
            float x0 = i < n ? w[i] : 0.0f, x1 = i + 1 < n ? w[i + 1] : 0.0f;
            if (i < n) q->data[i / 2] = (uint8_t)(quant_nf4_code(x0 * inv) << 4 | quant_nf4_code(x1 * inv));
        }
    }
}

/* bitsandbytes' quantize_blockwise of the centred absmax values in blocks of 256. */
static void double_quantize(QuantTensor *q, const float *amax) {
    double sum = 0.0;
    for (size_t b = 0; b < q->n_blocks; b++) sum += amax[b];
    q->offset = (float)(sum / (double)q->n_blocks);
    size_t nb2 = (q->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK;
    for (size_t c = 0; c < nb2; c++) {
        size_t b0 = c * QUANT_DQ_BLOCK, b1 = b0 + QUANT_DQ_BLOCK < q->n_blocks ? b0 + QUANT_DQ_BLOCK : q->n_blocks;
        float a2 = 0.0f;
        for (size_t b = b0; b < b1; b++) a2 = fmaxf(a2, fabsf(amax[b] - q->offset));
        q->absmax2[c] = a2;
        const float inv = 1.0f / a2;
        for (size_t b = b0; b < b1; b++) q->qabsmax[b] = quant_dynamic_code(q->map, (amax[b] - q->offset) * inv);
    }
}

static void quantize_q8_0(QuantTensor *q, const float *w) {
    const size_t n = q->n;
    #pragma omp parallel for schedule(static) if (n >= 1u << 16)
    for (size_t b = 0; b < q->n_blocks; b++) {
        size_t i0 = b * QUANT_Q8_0_BLOCK;
        float x[QUANT_Q8_0_BLOCK], amax = 0.0f;
        for (int j = 0; j < QUANT_Q8_0_BLOCK; j++) {
            x[j] = i0 + j < n ? w[i0 + j] : 0.0f;
            amax = fmaxf(amax, fabsf(x[j]));
        }
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t *blk = q->data + b * QUANT_Q8_0_BYTES;
        uint16_t h = quant_fp32_to_fp16(d);
        blk[0] = (uint8_t)(h & 0xff), blk[1] = (uint8_t)(h >> 8); /* little-endian, as GGUF files */
        for (int j = 0; j < QUANT_Q8_0_BLOCK; j++) blk[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

LLStatus quant_tensor_quantize(QuantTensor *q, QuantFormat fmt, int double_quant, const float *map, const float *w,
                               int rows, int cols, const char *name, LLError *err) {
    memset(q, 0, sizeof *q);
    LL_ASSERT(rows > 0 && cols > 0 && (fmt == QUANT_NF4 || fmt == QUANT_Q8_0));
    LL_ASSERT(!(fmt == QUANT_NF4 && double_quant) || map);
    const size_t n = (size_t)rows * cols;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i]))
            return ll_err(err, LL_ERR_FORMAT, "tensor %s: element [%zu, %zu] is %s; a %s base needs finite weights",
                          name, i / (size_t)cols, i % (size_t)cols, isnan(w[i]) ? "NaN" : "infinite",
                          quant_format_name(fmt));
    if (fmt == QUANT_Q8_0) /* d = amax/127 must fit fp16 (65504), or every weight of the block dequantizes to inf */
        for (size_t i = 0; i < n; i++)
            if (fabsf(w[i]) / 127.0f >= 65520.0f)
                return ll_err(err, LL_ERR_FORMAT,
                              "tensor %s: element [%zu, %zu] = %g is too large for Q8_0 (its fp16 scale holds at most "
                              "65504 x 127)", name, i / (size_t)cols, i % (size_t)cols, w[i]);
    q->fmt = fmt, q->rows = rows, q->cols = cols, q->n = n;
    q->n_blocks = (n + block_of(fmt) - 1) / block_of(fmt);
    if (fmt == QUANT_Q8_0) {
        q->data = ll_malloc(q->n_blocks, QUANT_Q8_0_BYTES);
        quantize_q8_0(q, w);
        return LL_OK;
    }
    q->data = ll_malloc((n + 1) / 2, 1);
    float *amax = ll_malloc(q->n_blocks, sizeof(float));
    quantize_nf4(q, w, amax);
    if (!double_quant) {
        q->absmax = amax;
        return LL_OK;
    }
    q->map = map;
    q->qabsmax = ll_malloc(q->n_blocks, 1);
    q->absmax2 = ll_malloc((q->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK, sizeof(float));
    double_quantize(q, amax);
    ll_free(amax);
    return LL_OK;
}

void quant_tensor_free(QuantTensor *q) {
    if (!q) return;
    ll_free(q->data);
    ll_free(q->absmax);
    ll_free(q->qabsmax);
    ll_free(q->absmax2);
    memset(q, 0, sizeof *q);
}

size_t quant_tensor_bytes(const QuantTensor *q) {
    if (q->fmt == QUANT_Q8_0) return q->n_blocks * QUANT_Q8_0_BYTES;
    if (q->fmt != QUANT_NF4) return 0;
    size_t codes = (q->n + 1) / 2;
    if (q->absmax) return codes + q->n_blocks * sizeof(float);
    return codes + q->n_blocks + (q->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK * sizeof(float) + sizeof(float);
}

/* ---- dequantize ----------------------------------------------------------------------------- */

float quant_nf4_absmax(const QuantTensor *q, size_t b) {
    LL_ASSERT(q->fmt == QUANT_NF4 && b < q->n_blocks);
    if (q->absmax) return q->absmax[b];
    return q->map[q->qabsmax[b]] * q->absmax2[b / QUANT_DQ_BLOCK] + q->offset;
}

void quant_dequant(const QuantTensor *q, size_t start, size_t count, float *out) {
    LL_ASSERT(start <= q->n && count <= q->n - start);
    const size_t end = start + count, bs = block_of(q->fmt);
    for (size_t i = start; i < end;) {
        const size_t b = i / bs, stop = (b + 1) * bs < end ? (b + 1) * bs : end;
        if (q->fmt == QUANT_NF4) {
            /* level[code] * absmax for the block's 16 codes, then a lookup per weight: the same
             * one fp32 product per weight as bitsandbytes' dequantization */
            const float a = quant_nf4_absmax(q, b);
            float t[16];
            for (int c = 0; c < 16; c++) t[c] = NF4_LEVELS[c] * a;
            for (; i < stop; i++) {
                uint8_t byte = q->data[i >> 1];
                *out++ = t[(i & 1) ? byte & 15 : byte >> 4];
            }
        } else {
            const uint8_t *blk = q->data + b * QUANT_Q8_0_BYTES;
            const float d = quant_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8));
            for (; i < stop; i++) *out++ = (float)(int8_t)blk[2 + i % bs] * d;
        }
    }
}

void quant_dequant_cols(const QuantTensor *q, int c0, int nc, float *out) {
    LL_ASSERT(c0 >= 0 && nc >= 0 && c0 + nc <= q->cols);
    for (int r = 0; r < q->rows; r++) quant_dequant(q, (size_t)r * q->cols + c0, (size_t)nc, out + (size_t)r * nc);
}
