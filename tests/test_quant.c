/* quant: NF4 and Q8_0 codes and values on blocks worked by hand from the tables (not from the code
 * under test), the 8-bit map of the double quantization against values bitsandbytes publishes,
 * tail blocks, zero and constant blocks, round-trip error bounds, and non-finite weights refused. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "model.h"
#include "ops.h"
#include "quant.h"
#include "rng.h"

/* The NormalFloat levels as QLoRA's appendix lists them (shared/reference section 1). */
static const double LEVELS[16] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                                  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                                  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                                  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};

/* The code nearest to y (in double), for values kept away from the midpoints. */
static int nearest_level(double y) {
    int best = 0;
    for (int c = 1; c < 16; c++)
        if (fabs(y - LEVELS[c]) < fabs(y - LEVELS[best])) best = c;
    return best;
}

static int nibble(const QuantTensor *q, size_t i) {
    uint8_t b = q->data[i / 2];
    return i % 2 ? b & 15 : b >> 4;
}

START_TEST(t_tables) {
    const float *lv = quant_nf4_levels();
    for (int c = 0; c < 16; c++) ck_assert(lv[c] == (float)LEVELS[c]);
    /* the boundaries are the midpoints of neighbouring levels: a value just above one goes up */
    for (int c = 0; c < 15; c++) {
        double mid = (LEVELS[c] + LEVELS[c + 1]) / 2;
        ck_assert_int_eq(quant_nf4_code((float)(mid + 1e-6)), c + 1);
        ck_assert_int_eq(quant_nf4_code((float)(mid - 1e-6)), c);
    }
    ck_assert_int_eq(quant_nf4_code(NAN), 0); /* 0 * (1/0) of an all-zero block */
    float map[256];
    quant_dynamic_map(map);
    /* entries of bitsandbytes' create_dynamic_map() as printed from torch (fp32) */
    const struct {
        int i;
        double v;
    } pub[] = {{0, -0.992968738079071},      {1, -0.9789062738418579},   {18, -0.7398437261581421},
               {20, -0.7117187976837158},     {25, -0.6414062976837158},  {36, -0.48671871423721313},
               {64, -0.09859374910593033},    {67, -0.09015624970197678}, {126, -5.500000384017767e-07},
               {127, 0.0},                    {128, 5.500000384017767e-07}, {131, 2.1249998098937795e-05},
               {191, 0.10703125596046448},    {196, 0.17734375596046448}, {234, 0.7117187976837158},
               {254, 0.992968738079071},      {255, 1.0}};
    for (size_t k = 0; k < sizeof pub / sizeof pub[0]; k++)
        ck_assert_msg(map[pub[k].i] == (float)pub[k].v, "map[%d] = %.17g, bitsandbytes %.17g", pub[k].i,
                      (double)map[pub[k].i], pub[k].v);
    for (int i = 0; i < 255; i++) ck_assert(map[i] < map[i + 1]);
    for (int i = 0; i < 127; i++) ck_assert(map[i] == -map[254 - i]);
    /* the search picks the nearest entry */
    for (int i = 0; i < 256; i++) ck_assert_int_eq(quant_dynamic_code(map, map[i]), i);
    int k500 = -1;
    for (int i = 0; i < 256; i++)
        if (map[i] == 0.500781238079071f) k500 = i;
    ck_assert_int_eq(quant_dynamic_code(map, 0.5f), k500);
    ck_assert_int_eq(quant_dynamic_code(map, -1.0f), 0);
    ck_assert_int_eq(quant_dynamic_code(map, 1.0f), 255);
    ck_assert_int_eq(quant_dynamic_code(map, 0.0f), 127);
}
END_TEST

START_TEST(t_fp16) {
    ck_assert_uint_eq(quant_fp32_to_fp16(1.0f), 0x3c00);
    ck_assert_uint_eq(quant_fp32_to_fp16(-2.0f), 0xc000);
    ck_assert_uint_eq(quant_fp32_to_fp16(65504.0f), 0x7bff);
    ck_assert_uint_eq(quant_fp32_to_fp16(65519.0f), 0x7bff);
    ck_assert_uint_eq(quant_fp32_to_fp16(65520.0f), 0x7c00);
    ck_assert_uint_eq(quant_fp32_to_fp16(1.0f / 3.0f), 0x3555);
    ck_assert_uint_eq(quant_fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);     /* tie to even */
    ck_assert_uint_eq(quant_fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);     /* tie to even, up */
    ck_assert_uint_eq(quant_fp32_to_fp16(ldexpf(1.0f, -14)), 0x0400);     /* smallest normal */
    ck_assert_uint_eq(quant_fp32_to_fp16(ldexpf(1.0f, -24)), 0x0001);     /* smallest subnormal */
    ck_assert_uint_eq(quant_fp32_to_fp16(ldexpf(1.0f, -26)), 0x0000);     /* a quarter of it */
    ck_assert_uint_eq(quant_fp32_to_fp16(ldexpf(3.0f, -25)), 0x0002);     /* 1.5 ulp: tie to even */
    for (uint32_t h = 0; h < 0x7c00; h++) { /* every finite half survives the round trip */
        ck_assert_uint_eq(quant_fp32_to_fp16(quant_fp16_to_fp32((uint16_t)h)), h);
        ck_assert_uint_eq(quant_fp32_to_fp16(quant_fp16_to_fp32((uint16_t)(h | 0x8000))), h | 0x8000);
    }
    ck_assert(quant_fp16_to_fp32(0x2c08) == (1.0f + 8.0f / 1024) / 16);
}
END_TEST

/* One NF4 block of 64 worked by hand: absmax 2, values chosen away from the boundaries. */
START_TEST(t_nf4_block) {
    float w[64];
    for (int i = 0; i < 64; i++) w[i] = (float)(2.0 * sin(0.37 * i + 0.1)); /* |w| < 2 */
    w[5] = 2.0f, w[6] = -2.0f, w[7] = 0.0f, w[8] = 1.0f, w[9] = -1.0f, w[10] = 0.1f, w[11] = -0.1f;
    LLError err;
    QuantTensor q;
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_NF4, 0, NULL, w, 2, 32, "w", &err), LL_OK);
    ck_assert_int_eq(q.n_blocks, 1);
    ck_assert(q.absmax[0] == 2.0f);
    const int fixed[][2] = {{5, 15}, {6, 0}, {7, 7}, {8, 12}, {9, 2}, {10, 8}, {11, 6}};
    for (int k = 0; k < 7; k++) ck_assert_int_eq(nibble(&q, fixed[k][0]), fixed[k][1]);
    /* byte j holds elements 2j (high nibble) and 2j + 1 */
    ck_assert_uint_eq(q.data[2] & 15, 15);
    ck_assert_uint_eq(q.data[3], 0x07);
    ck_assert_uint_eq(q.data[4], 0xC2);
    ck_assert_uint_eq(q.data[5], 0x86);
    float out[64];
    quant_dequant(&q, 0, 64, out);
    for (int i = 0; i < 64; i++) {
        double y = w[i] / 2.0;
        int c = nearest_level(y);
        double gap = 1.0;
        for (int k = 0; k < 15; k++) gap = fmin(gap, fabs(y - (LEVELS[k] + LEVELS[k + 1]) / 2));
        if (gap > 1e-5) ck_assert_msg(nibble(&q, i) == c, "element %d (%g): code %d, nearest %d", i, w[i], nibble(&q, i), c);
        ck_assert(out[i] == (float)LEVELS[nibble(&q, i)] * 2.0f);
    }
    quant_tensor_free(&q);
}
END_TEST

/* A tensor of 3 x 65 = 195 weights: blocks 0-2 whole, block 3 of 3 weights (one padded nibble).
 * Block 0 is all zero, block 1 constant 0.3, block 2 constant -0.3. */
START_TEST(t_nf4_edges) {
    float w[195];
    for (int i = 0; i < 195; i++) w[i] = i < 64 ? 0.0f : i < 128 ? 0.3f : i < 192 ? -0.3f : (float)(i - 193) * 0.25f;
    LLError err;
    QuantTensor q;
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_NF4, 0, NULL, w, 3, 65, "edges", &err), LL_OK);
    ck_assert_int_eq(q.n_blocks, 4);
    ck_assert_int_eq(quant_tensor_bytes(&q), 98 + 4 * 4);
    ck_assert(q.absmax[0] == 0.0f && q.absmax[1] == 0.3f && q.absmax[2] == 0.3f && q.absmax[3] == 0.25f);
    for (int i = 0; i < 64; i++) ck_assert_int_eq(nibble(&q, i), 0);       /* NaN codes of 0 * (1/0) */
    for (int i = 64; i < 128; i++) ck_assert_int_eq(nibble(&q, i), 15);
    for (int i = 128; i < 192; i++) ck_assert_int_eq(nibble(&q, i), 0);
    /* tail: -0.25, 0, 0.25 over absmax 0.25 -> codes 0, 7, 15; the pad nibble quantizes 0 -> 7 */
    ck_assert_int_eq(nibble(&q, 192), 0);
    ck_assert_int_eq(nibble(&q, 193), 7);
    ck_assert_int_eq(nibble(&q, 194), 15);
    ck_assert_int_eq(q.data[97] & 15, 7);
    float out[195];
    quant_dequant(&q, 0, 195, out);
    for (int i = 0; i < 64; i++) ck_assert(out[i] == 0.0f);
    for (int i = 64; i < 128; i++) ck_assert(out[i] == 0.3f);
    for (int i = 128; i < 192; i++) ck_assert(out[i] == -0.3f);
    ck_assert(out[192] == -0.25f && out[193] == 0.0f && out[194] == 0.25f);
    /* any range equals the whole, bitwise; columns too */
    float part[195], cols[3 * 7];
    for (size_t s = 0; s < 195; s += 17) {
        size_t c = 195 - s < 40 ? 195 - s : 40;
        quant_dequant(&q, s, c, part);
        ck_assert(memcmp(part, out + s, c * sizeof(float)) == 0);
    }
    quant_dequant_cols(&q, 58, 7, cols);
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 7; j++) ck_assert(cols[r * 7 + j] == out[r * 65 + 58 + j]);
    quant_tensor_free(&q);
}
END_TEST

/* Double quantization worked by hand: three blocks of absmax 1, 2, 3 -> offset 2, centred -1, 0, 1,
 * one second-level block with scale 1, codes 0, 127, 255 of the dynamic map. */
START_TEST(t_double_quant) {
    float w[192], map[256];
    for (int i = 0; i < 192; i++) w[i] = (float)(i / 64 + 1) * (i % 2 ? -1.0f : 1.0f) * (i % 64 == 0 ? 1.0f : 0.5f);
    quant_dynamic_map(map);
    LLError err;
    QuantTensor q, p;
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_NF4, 1, map, w, 3, 64, "dq", &err), LL_OK);
    ck_assert_int_eq(quant_tensor_quantize(&p, QUANT_NF4, 0, NULL, w, 3, 64, "plain", &err), LL_OK);
    ck_assert(q.offset == 2.0f && q.absmax2[0] == 1.0f);
    ck_assert_int_eq(q.qabsmax[0], 0);
    ck_assert_int_eq(q.qabsmax[1], 127);
    ck_assert_int_eq(q.qabsmax[2], 255);
    ck_assert(quant_nf4_absmax(&q, 0) == map[0] * 1.0f + 2.0f); /* 1.00703..., the map stops at -0.99297 */
    ck_assert(quant_nf4_absmax(&q, 1) == 2.0f && quant_nf4_absmax(&q, 2) == 3.0f);
    ck_assert(memcmp(q.data, p.data, 96) == 0); /* the 4-bit codes do not depend on it */
    ck_assert_int_eq(quant_tensor_bytes(&q), 96 + 3 + 4 + 4);
    float out[192];
    quant_dequant(&q, 0, 192, out);
    for (int i = 0; i < 192; i++)
        ck_assert(out[i] == quant_nf4_levels()[nibble(&q, i)] * quant_nf4_absmax(&q, (size_t)i / 64));
    quant_tensor_free(&q);
    quant_tensor_free(&p);
    /* all absmax equal: centred values are 0, the scale 0, and the code NaN's (0); absmax = offset */
    for (int i = 0; i < 192; i++) w[i] = i % 64 == 3 ? 0.5f : 0.1f;
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_NF4, 1, map, w, 1, 192, "flat", &err), LL_OK);
    ck_assert(q.absmax2[0] == 0.0f);
    for (int b = 0; b < 3; b++) ck_assert(quant_nf4_absmax(&q, (size_t)b) == 0.5f);
    quant_tensor_free(&q);
}
END_TEST

/* Gaussian weights: every element within the format's bound, any range equal to the whole, and
 * the bytes under 0.15 of fp32 for NF4 with double quantization. */
START_TEST(t_round_trip) {
    const int rows = 300, cols = 77; /* 23100: neither a multiple of 64 nor of 32 */
    const size_t n = (size_t)rows * cols;
    float *w = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float)), map[256];
    Rng r;
    rng_seed(&r, 7);
    rng_fill_normal(&r, w, n, 0.02f);
    w[100] = 0.3f; /* an outlier in one block */
    quant_dynamic_map(map);
    LLError err;
    for (int dq = 0; dq <= 1; dq++) {
        QuantTensor q;
        ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_NF4, dq, map, w, rows, cols, "g", &err), LL_OK);
        quant_dequant(&q, 0, n, out);
        double se = 0, sx = 0, a2max = 0;
        for (size_t c = 0; dq && c < (q.n_blocks + 255) / 256; c++) a2max = fmax(a2max, q.absmax2[c]);
        for (size_t i = 0; i < n; i++) {
            size_t b = i / 64;
            double a = 0;
            for (size_t j = b * 64; j < (b + 1) * 64 && j < n; j++) a = fmax(a, fabs(w[j]));
            /* half the widest gap of the table (0.1519 of absmax, between -1 and -0.696) plus the absmax's own error:
             * half the widest gap of the dynamic map (0.00703) times the second-level scale */
            double bound = 0.15191 * a + (dq ? 0.00704 * a2max : 0) + 1e-7;
            ck_assert_msg(fabs(out[i] - w[i]) <= bound, "dq %d element %zu: %g -> %g (bound %g)", dq, i, w[i], out[i],
                          bound);
            se += (out[i] - w[i]) * (double)(out[i] - w[i]), sx += (double)w[i] * w[i];
        }
        ck_assert_msg(sqrt(se / sx) < 0.12, "dq %d: relative RMS error %g", dq, sqrt(se / sx));
        if (dq) ck_assert_msg(quant_tensor_bytes(&q) <= 0.15 * n * 4, "%zu bytes", quant_tensor_bytes(&q));
        float part[500];
        for (size_t s = 0; s < n; s += 4099) {
            quant_dequant(&q, s, 500 < n - s ? 500 : n - s, part);
            ck_assert(memcmp(part, out + s, (500 < n - s ? 500 : n - s) * sizeof(float)) == 0);
        }
        quant_tensor_free(&q);
    }
    QuantTensor q;
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_Q8_0, 0, NULL, w, rows, cols, "g", &err), LL_OK);
    ck_assert_int_eq(quant_tensor_bytes(&q), (n + 31) / 32 * 34);
    quant_dequant(&q, 0, n, out);
    for (size_t i = 0; i < n; i++) {
        size_t b = i / 32;
        double a = 0;
        for (size_t j = b * 32; j < (b + 1) * 32 && j < n; j++) a = fmax(a, fabs(w[j]));
        /* half a step of d = a/127, plus 127 steps of fp16's rounding of d (2^-11 relative) */
        double bound = a / 254 + a / 2048 + a * 1e-6;
        ck_assert_msg(fabs(out[i] - w[i]) <= bound, "q8_0 element %zu: %g -> %g", i, w[i], out[i]);
    }
    quant_tensor_free(&q);
    free(w);
    free(out);
}
END_TEST

/* One Q8_0 block by hand, a tail block, zero and constant blocks. */
START_TEST(t_q8_0_blocks) {
    float w[32 * 3 + 5];
    for (int j = 0; j < 32; j++) w[j] = (float)(j - 16) * 0.5f; /* -8 .. 7.5: amax 8 */
    for (int j = 32; j < 64; j++) w[j] = 0.0f;
    for (int j = 64; j < 96; j++) w[j] = -0.7f;
    for (int j = 96; j < 101; j++) w[j] = 0.01f * (float)(j - 96);
    LLError err;
    QuantTensor q;
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_Q8_0, 0, NULL, w, 1, 101, "q", &err), LL_OK);
    ck_assert_int_eq(q.n_blocks, 4);
    const uint8_t *b0 = q.data;
    /* d = 8/127 = 0.0629921: fp16 1.0078125 * 2^-4 -> exponent 11, mantissa 8: 0x2C08 */
    ck_assert_uint_eq(b0[0], 0x08);
    ck_assert_uint_eq(b0[1], 0x2C);
    for (int j = 0; j < 32; j++) {
        int expect = (int)lround((j - 16) * 0.5 * 127.0 / 8.0); /* never a tie: multiples of 7.9375 */
        ck_assert_int_eq((int8_t)b0[2 + j], expect);
    }
    const uint8_t *b1 = q.data + 34, *b2 = q.data + 68, *b3 = q.data + 102;
    for (int j = 0; j < 34; j++) ck_assert_uint_eq(b1[j], 0);
    for (int j = 0; j < 32; j++) ck_assert_int_eq((int8_t)b2[2 + j], -127);
    /* tail: 0 .. 0.04, amax 0.04, the padding quantizes 0 */
    for (int j = 0; j < 32; j++) ck_assert_int_eq((int8_t)b3[2 + j], j < 5 ? (int)lround(j * 127.0 / 4.0) : 0);
    float out[101];
    quant_dequant(&q, 0, 101, out);
    const float d0 = (1.0f + 8.0f / 1024) / 16;
    for (int j = 0; j < 32; j++) ck_assert(out[j] == (float)(int8_t)b0[2 + j] * d0);
    for (int j = 32; j < 64; j++) ck_assert(out[j] == 0.0f);
    for (int j = 64; j < 96; j++) ck_assert(out[j] == -127.0f * quant_fp16_to_fp32(quant_fp32_to_fp16(0.7f / 127.0f)));
    ck_assert(fabsf(out[64] + 0.7f) <= 0.7f / 2048);
    quant_tensor_free(&q);
}
END_TEST

START_TEST(t_refused) {
    float w[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, NAN};
    LLError err;
    QuantTensor q;
    for (int f = 0; f < 2; f++) {
        QuantFormat fmt = f ? QUANT_Q8_0 : QUANT_NF4;
        ck_assert_int_eq(quant_tensor_quantize(&q, fmt, 0, NULL, w, 2, 3, "model.layers.0.mlp.up_proj.weight", &err),
                         LL_ERR_FORMAT);
        ck_assert_msg(strstr(err.msg, "up_proj") && strstr(err.msg, "[1, 2]") && strstr(err.msg, "NaN"), "%s", err.msg);
        ck_assert(q.data == NULL);
    }
    w[5] = -INFINITY;
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_NF4, 0, NULL, w, 2, 3, "t", &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "infinite"), "%s", err.msg);
    w[5] = 1e7f; /* d = 78740 > fp16's 65504 */
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_Q8_0, 0, NULL, w, 2, 3, "t", &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "too large"), "%s", err.msg);
    ck_assert_int_eq(quant_tensor_quantize(&q, QUANT_NF4, 0, NULL, w, 2, 3, "t", &err), LL_OK); /* NF4 scales are fp32 */
    quant_tensor_free(&q);
    QuantFormat f;
    ck_assert(quant_format_from_name("nf4", &f) && f == QUANT_NF4);
    ck_assert(quant_format_from_name("q8_0", &f) && f == QUANT_Q8_0);
    ck_assert(quant_format_from_name("none", &f) && f == QUANT_NONE);
    ck_assert(!quant_format_from_name("q4_0", &f));
}
END_TEST


/* ---- a model on a quantized base ---------------------------------------------------------------
 * C = 32 and F = 40: blocks of 64 straddle rows of down_proj (in = 40) and of q_proj's 32. */
enum { QB = 2, QT = 6, QV = 48 };

static ModelConfig small_config(void) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.V = QV, c.C = 32, c.L = 2, c.NH = 4, c.NKV = 2, c.HS = 8, c.F = 40, c.max_T = 16;
    c.eps = 1e-5f, c.rope_theta = 10000.0f, c.init_range = 0.25f;
    c.tied = 0, c.bos_id = 1, c.eos_id = 2, c.pad_id = 0;
    return c;
}

static void new_model(Model *m, const ModelConfig *c, int train_base) {
    ModelOptions o = {.B = QB, .T = QT, .training = 1, .train_base = train_base};
    LLError err;
    ck_assert_msg(model_init(m, c, &o, &err) == LL_OK, "%s", err.msg);
    model_init_weights(m, 4321);
}

typedef struct {
    int ids[QB * QT], targets[QB * QT];
    Batch b;
} QBatch;

static void new_batch(QBatch *q) {
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < QB * QT; i++) q->ids[i] = (int)rng_below(&r, QV);
    for (int i = 0; i < QB * QT; i++) q->targets[i] = i % QT + 1 < QT ? q->ids[i + 1] : -1;
    memset(&q->b, 0, sizeof q->b);
    q->b.B = QB, q->b.T = QT, q->b.ids = q->ids, q->b.targets = q->targets;
}

/* A quantized model (fp32 released) and its twin: the same fp32 model with every linear weight
 * replaced by dequant(Q). */
static void quantized_pair(Model *mq, Model *md, QuantFormat fmt) {
    ModelConfig c = small_config();
    LLError err;
    new_model(mq, &c, 0);
    new_model(md, &c, 0);
    ck_assert_msg(model_quantize_base(mq, fmt, 1, &err) == LL_OK, "%s", err.msg);
    model_release_fp32(mq);
    for (int l = 0; l < c.L; l++)
        for (int mod = 0; mod < MOD_COUNT; mod++) {
            const QuantTensor *q = model_quant_weight(mq, l, mod);
            quant_dequant(q, 0, q->n, model_weight(md, l, mod));
        }
    model_base_changed(md);
}

static Adapter *lora_on(Model *m, int dora, float dropout) {
    AdapterConfig c;
    adapter_config_defaults(&c, ADAPTER_LORA);
    c.r = 4, c.alpha = 8.0f, c.seed = 3, c.use_dora = dora, c.dropout = dropout;
    c.targets = (1u << MOD_COUNT) - 1;
    Adapter *a = NULL;
    LLError err;
    ck_assert_msg(adapter_create(&c, m, &a, &err) == LL_OK, "%s", err.msg);
    Rng r;
    rng_seed(&r, 77);
    for (int i = 0; i < a->n_sites; i++) { /* B != 0, so that the adapter's input gradient matters */
        const AdapterSite *s = &a->sites[i];
        if (s->active) rng_fill_normal(&r, a->params + s->off + (size_t)s->r * s->in, (size_t)s->out * s->r, 0.2f);
    }
    adapter_attach(m, a);
    return a;
}

static double rel(const float *a, const float *b, size_t n) {
    double d = 0, z = 0;
    for (size_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), z += (double)b[i] * b[i];
    return sqrt(d / (z > 0 ? z : 1));
}

/* Forward and backward through the quantized base equal those of the fp32 model holding
 * dequant(Q): bitwise with bf16 products (same panels, same kernels), to fp32 rounding with fp32
 * products (W is multiplied a chunk of rows at a time). LoRA and DoRA with dropout. */
START_TEST(t_model_matches_dequantized) {
    QBatch qb;
    new_batch(&qb);
    const size_t nl = (size_t)QB * QT * QV;
    LLError err;
    for (int f = 0; f < 2; f++)
        for (int bf = 0; bf <= 1; bf++)
            for (int dora = 0; dora <= 1; dora++) {
                if (bf && (!bf16_supported() || dora)) continue;
                Model mq, md;
                quantized_pair(&mq, &md, f ? QUANT_Q8_0 : QUANT_NF4);
                ck_assert(model_set_bf16(&mq, bf, &err) == LL_OK && model_set_bf16(&md, bf, &err) == LL_OK);
                Adapter *aq = lora_on(&mq, dora, dora ? 0.1f : 0.0f), *ad = lora_on(&md, dora, dora ? 0.1f : 0.0f);
                float lq = model_forward(&mq, &qb.b, 1), ld = model_forward(&md, &qb.b, 1);
                float *logq = malloc(nl * sizeof(float)), *logd = malloc(nl * sizeof(float));
                memcpy(logq, model_logits(&mq, 0, 0), nl * sizeof(float)); /* backward overwrites them */
                memcpy(logd, model_logits(&md, 0, 0), nl * sizeof(float));
                adapter_zero_grad(aq), adapter_zero_grad(ad);
                model_backward(&mq, &qb.b, 1.0f);
                model_backward(&md, &qb.b, 1.0f);
                const char *what = f ? "q8_0" : "nf4";
                if (bf) {
                    ck_assert_msg(lq == ld, "%s bf16: loss %.9g vs %.9g", what, lq, ld);
                    ck_assert(memcmp(logq, logd, nl * sizeof(float)) == 0);
                    ck_assert(memcmp(aq->grads, ad->grads, aq->n_params * sizeof(float)) == 0);
                } else {
                    ck_assert_msg(fabsf(lq - ld) <= 1e-5f * fabsf(ld), "%s dora %d: loss %.9g vs %.9g", what, dora, lq, ld);
                    ck_assert_msg(rel(logq, logd, nl) < 1e-5, "%s dora %d: logits off by %g", what, dora, rel(logq, logd, nl));
                    ck_assert_msg(rel(aq->grads, ad->grads, aq->n_params) < 1e-4, "%s dora %d: gradients off by %g",
                                  what, dora, rel(aq->grads, ad->grads, aq->n_params));
                }
                free(logq), free(logd);
                adapter_free(aq), adapter_free(ad);
                model_free(&mq), model_free(&md);
            }
}
END_TEST

/* LoRA's gradients through a quantized base against central differences of the loss (DoRA's
 * detach its row norm, so they are not the loss's: t_model_matches_dequantized checks them). */
START_TEST(t_model_grad_fd) {
    QBatch qb;
    new_batch(&qb);
    for (int f = 0; f < 2; f++) {
        Model mq, md;
        quantized_pair(&mq, &md, f ? QUANT_Q8_0 : QUANT_NF4);
        model_free(&md);
        Adapter *a = lora_on(&mq, 0, 0.0f);
        adapter_zero_grad(a);
        model_forward(&mq, &qb.b, 1);
        model_backward(&mq, &qb.b, 1.0f);
        float *g = malloc(a->n_params * sizeof(float));
        memcpy(g, a->grads, a->n_params * sizeof(float));
        Rng r;
        rng_seed(&r, 11);
        int checked = 0;
        for (int k = 0; k < 60; k++) {
            size_t i = (size_t)rng_below(&r, (uint32_t)a->n_params);
            float keep = a->params[i], eps = 1e-2f;
            a->params[i] = keep + eps;
            double lp = model_forward(&mq, &qb.b, 1);
            a->params[i] = keep - eps;
            double lm = model_forward(&mq, &qb.b, 1);
            a->params[i] = keep;
            double num = (lp - lm) / (2.0 * eps);
            ck_assert_msg(fabs(num - g[i]) <= 3e-4 + 3e-2 * fmax(fabs(num), fabs(g[i])),
                          "%s param %zu: analytic %.6g, numeric %.6g", f ? "q8_0" : "nf4", i, g[i], num);
            checked += fabs(num) > 1e-3;
        }
        ck_assert_msg(checked > 20, "only %d gradients were large enough to say anything", checked);
        free(g);
        adapter_free(a);
        model_free(&mq);
    }
}
END_TEST

/* The tiny preset's sizes (configs/models/tiny.yaml): the linear weights held in NF4 with double
 * quantization take at most 0.15 of fp32; the fp32 buffer keeps only the embedding and norms. */
START_TEST(t_model_memory) {
    ModelConfig c = small_config();
    c.V = 1024, c.C = 128, c.L = 4, c.NH = 4, c.NKV = 4, c.HS = 32, c.F = 344, c.tied = 1, c.init_range = 0.02f;
    LLError err;
    for (int f = 0; f < 2; f++) {
        Model m;
        new_model(&m, &c, 0);
        size_t fp32 = model_linear_bytes(&m), nlin = fp32 / 4;
        ck_assert_int_eq(nlin, (size_t)c.L * (4 * 128 * 128 + 3 * 128 * 344));
        ck_assert(model_quantize_base(&m, f ? QUANT_Q8_0 : QUANT_NF4, 1, &err) == LL_OK);
        ck_assert(model_weight(&m, 0, MOD_Q) != NULL); /* kept until released */
        model_release_fp32(&m);
        double ratio = (double)model_linear_bytes(&m) / (double)fp32;
        if (f) ck_assert_msg(ratio <= 34.0 / 128 + 1e-9, "q8_0: %.4f of fp32", ratio);
        else ck_assert_msg(ratio <= 0.15, "nf4: %.4f of fp32", ratio);
        ck_assert_int_eq(m.n_params_held, (size_t)c.V * c.C + (2 * c.L + 1) * (size_t)c.C);
        ck_assert_int_eq(m.n_params, model_param_count(&c));
        ck_assert(model_weight(&m, 1, MOD_DOWN) == NULL);
        for (int i = 0; i < model_n_tensors(&m); i++) {
            ModelTensor t;
            model_tensor(&m, i, &t);
            ck_assert((t.data == NULL) == (t.ndim == 2 && i != 0));
        }
        fprintf(stderr, "quant: tiny preset, %s linear weights %.4f of fp32 (%zu of %zu bytes)\n", f ? "q8_0" : "nf4 + dq",
                ratio, model_linear_bytes(&m), fp32);
        model_free(&m);
    }
}
END_TEST

/* merge onto a quantized base: dequant(Q) + ΔW, the same function as the unmerged model. */
START_TEST(t_model_merge) {
    QBatch qb;
    new_batch(&qb);
    Model mq, md;
    quantized_pair(&mq, &md, QUANT_NF4);
    model_free(&md);
    Adapter *a = lora_on(&mq, 0, 0.0f);
    const size_t nl = (size_t)QB * QT * QV;
    model_forward(&mq, &qb.b, 0);
    float *before = malloc(nl * sizeof(float));
    memcpy(before, model_logits(&mq, 0, 0), nl * sizeof(float));
    adapter_merge(a, &mq);
    ck_assert(mq.quant == QUANT_NONE && mq.n_params_held == mq.n_params && model_weight(&mq, 0, MOD_Q));
    model_forward(&mq, &qb.b, 0);
    ck_assert_msg(rel(model_logits(&mq, 0, 0), before, nl) < 1e-5, "merged logits off by %g",
                  rel(model_logits(&mq, 0, 0), before, nl));
    free(before);
    adapter_free(a);
    model_free(&mq);
}
END_TEST

START_TEST(t_model_refused) {
    ModelConfig c = small_config();
    LLError err;
    Model m;
    new_model(&m, &c, 1); /* full fine-tuning: the base has gradients */
    ck_assert_int_eq(model_quantize_base(&m, QUANT_NF4, 1, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "full fine-tuning"), "%s", err.msg);
    model_free(&m);
    new_model(&m, &c, 0);
    model_weight(&m, 1, MOD_DOWN)[7] = NAN;
    ck_assert_int_eq(model_quantize_base(&m, QUANT_Q8_0, 1, &err), LL_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "model.layers.1.mlp.down_proj.weight") && strstr(err.msg, "NaN"), "%s", err.msg);
    ck_assert(m.quant == QUANT_NONE && m.qw == NULL);
    model_weight(&m, 1, MOD_DOWN)[7] = 0.0f;
    ck_assert(model_quantize_base(&m, QUANT_NF4, 1, &err) == LL_OK);
    AdapterConfig ac;
    adapter_config_defaults(&ac, ADAPTER_LORA);
    ac.init = ADAPTER_INIT_PISSA;
    Adapter *a = NULL;
    ck_assert_int_eq(adapter_create(&ac, &m, &a, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "PiSSA") && strstr(err.msg, "loftq"), "%s", err.msg);
    model_free(&m);
}
END_TEST

/* LoftQ: s·B·A is the top-r part of the quantization residual W0 − dequant(Q), so the adapted
 * model starts closer to W0: per site the residual left shrinks by at least the share r/min(in, out)
 * of its energy that the top r singular values hold, and the start loss moves toward fp32's. */
START_TEST(t_loftq_init) {
    ModelConfig c = small_config();
    QBatch qb;
    new_batch(&qb);
    LLError err;
    Model m, ref;
    new_model(&m, &c, 0);
    new_model(&ref, &c, 0);
    float loss_fp32 = model_forward(&ref, &qb.b, 0);
    ck_assert(model_quantize_base(&m, QUANT_NF4, 1, &err) == LL_OK);
    float loss_q = model_forward(&m, &qb.b, 0);
    AdapterConfig ac;
    adapter_config_defaults(&ac, ADAPTER_LORA);
    ac.r = 8, ac.alpha = 16.0f, ac.init = ADAPTER_INIT_LOFTQ, ac.targets = (1u << MOD_COUNT) - 1;
    Adapter *a = NULL;
    ck_assert_msg(adapter_create(&ac, &m, &a, &err) == LL_OK, "%s", err.msg);
    for (int i = 0; i < a->n_sites; i++) {
        const AdapterSite *s = &a->sites[i];
        const size_t n = (size_t)s->in * s->out;
        float *dq = malloc(n * sizeof(float)), *ba = malloc(n * sizeof(float));
        quant_dequant(s->q0, 0, n, dq);
        a->ops->delta(a, s, ba); /* s·B·A */
        double r0 = 0, r1 = 0;
        for (size_t j = 0; j < n; j++) {
            double e = (double)s->w0[j] - dq[j];
            r0 += e * e, r1 += (e - ba[j]) * (e - ba[j]);
        }
        int k = s->in < s->out ? s->in : s->out;
        ck_assert_msg(r1 <= r0 * (1.0 - (double)s->r / k) * (1 + 1e-5), "layer %d %s: residual %g -> %g", s->layer,
                      model_module_name(s->mod), r0, r1);
        free(dq), free(ba);
    }
    model_release_fp32(&m);
    adapter_attach(&m, a);
    float loss_loftq = model_forward(&m, &qb.b, 0);
    ck_assert_msg(fabsf(loss_loftq - loss_fp32) < fabsf(loss_q - loss_fp32), "start loss fp32 %.6f, nf4 %.6f, loftq %.6f",
                  loss_fp32, loss_q, loss_loftq);
    adapter_free(a);
    model_free(&m);
    model_free(&ref);
    /* an fp32 base has no residual: refused by name */
    new_model(&m, &c, 0);
    ck_assert_int_eq(adapter_create(&ac, &m, &a, &err), LL_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "LoftQ") && strstr(err.msg, "base_quant"), "%s", err.msg);
    model_free(&m);
}
END_TEST

Suite *quant_suite(void) {
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, t_tables);
    tcase_add_test(tc, t_fp16);
    tcase_add_test(tc, t_nf4_block);
    tcase_add_test(tc, t_nf4_edges);
    tcase_add_test(tc, t_double_quant);
    tcase_add_test(tc, t_round_trip);
    tcase_add_test(tc, t_q8_0_blocks);
    suite_add_tcase(s, tc);
    TCase *model = tcase_create("model");
    tcase_add_test(model, t_model_matches_dequantized);
    tcase_add_test(model, t_model_memory);
    tcase_add_test(model, t_model_merge);
    tcase_add_test(model, t_loftq_init);
    tcase_set_timeout(model, 30);
    suite_add_tcase(s, model);
    TCase *grad = tcase_create("grad");
    tcase_add_test(grad, t_model_grad_fd);
    tcase_set_timeout(grad, 30);
    suite_add_tcase(s, grad);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, t_refused);
    tcase_add_test(lim, t_model_refused);
    suite_add_tcase(s, lim);
    return s;
}
