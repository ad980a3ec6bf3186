/* simd: AVX-512 helpers shared by the element-wise kernels (ops_mlp, ops_loss, ops_attention).
 *
 * ll_exp16 is expf on 16 lanes: x = n·ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2 so that
 * r is exact), e^r by the degree-7 polynomial of Cephes' expf (S. Moshier; max relative error
 * about 1 ulp on that interval), then 2^n put into the exponent field. Below -87.3 the result is 0
 * (expf would give a denormal under 1.2e-38, which no sum or gradient here can see); above 88.7 it
 * is +inf; NaN stays NaN. Lanes are independent, so results do not depend on how work is split.
 *
 * LL_SIMD is 1 when these are compiled in; each kernel keeps its scalar loop as the fallback. */
#ifndef LL_SIMD_H
#define LL_SIMD_H

#if defined(__AVX512F__)
#define LL_SIMD 1
#include <immintrin.h>
#include <stddef.h>

static inline __m512 ll_exp16(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.72283935546875f), lo = _mm512_set1_ps(-87.33654022216797f);
    const __m512 x0 = x;
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    /* n = round(x / ln2); r = x - n·ln2 with ln2 = C1 + C2 (C1 has few bits, so n·C1 is exact) */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    /* 2^n: n in [-126, 128]; split as 2^(n/2)·2^(n - n/2) so that n = 128 does not overflow the
     * exponent field before the multiply (e^88.72 is just below FLT_MAX). */
    __m512i ni = _mm512_cvtps_epi32(n);
    __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    y = _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
    y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(__builtin_inff()));
    return _mm512_mask_mov_ps(y, nan, x0);
}

/* r[0..15] = the 16 x 16 block whose rows were r[0..15], transposed: 32-bit interleave of row
 * pairs, 64-bit interleave of those, then the 128-bit lanes of four rows gathered per column. */
static inline void ll_transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { /* u[4i + c], lane L: column 4L + c of rows 4i .. 4i+3 */
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 w0 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
        __m512 v1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
        r[c] = _mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
        r[c + 8] = _mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
        r[c + 4] = _mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0));
        r[c + 12] = _mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

#if defined(__AMX_TILE__)
/* Loads the one AMX tile configuration used here (palette 1): all 8 tiles of 16 rows x 64 bytes,
 * as accumulators (16 x 16 fp32) or bf16 operands (16 x 32). Per thread; _tile_release ends it. */
static inline void ll_amx_config(void) {
    struct {
        unsigned char palette, start_row, reserved[14];
        unsigned short colsb[16];
        unsigned char rows[16];
    } cfg = {.palette = 1};
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    _tile_loadconfig(&cfg);
}
#endif

/* The lanes [0, n) of a 16-lane block, n <= 16. */
static inline __mmask16 ll_mask16(size_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* max of x[0, n), n >= 1 (lane-wise, then reduced: the order does not matter for a max). */
static inline float ll_max16(const float *x, int n) {
    __m512 m = _mm512_set1_ps(-__builtin_inff());
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = ll_mask16((size_t)(n - j));
        m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + j));
    }
    return _mm512_reduce_max_ps(m);
}

/* Widens v to double and adds its low 8 lanes to *lo, its high 8 to *hi: 16-lane sums kept in
 * double (the caller reduces lo + hi once, in a fixed order). */
static inline void ll_add_widened(__m512d *lo, __m512d *hi, __m512 v) {
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

#else
#define LL_SIMD 0
#endif

#endif
