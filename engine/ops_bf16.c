/* ops_bf16: linear products against a frozen weight held in bf16, for CPUs with AVX512_BF16.
 *
 * C[M,N] (+)= A[M,K] · B[K,N], with A fp32 (activations, rounded to bf16 while packed), B a weight
 * packed once into bf16 panels, and fp32 accumulation: VDPBF16PS does, per fp32 lane,
 * acc += a[2i]·b[2i] + a[2i+1]·b[2i+1], twice the multiply-adds of an fp32 FMA per instruction.
 * This is the "bf16 inputs, fp32 accumulate" product of mixed-precision training (Micikevicius et
 * al. 2018; Kalamkar et al. 2019, "A study of BFLOAT16 for deep learning training").
 *
 * Packed weight layout: N is cut into panels of NR = 32 columns (the last padded with zeros); a
 * panel is [ceil(K/2) pairs][32 columns][2] bf16, so one k-pair of a panel is two 512-bit
 * vectors. The A side is packed per block into [pairs][MR rows] of 32-bit (two bf16) words, one
 * broadcast per row and pair.
 *
 * Determinism: every C element is summed by one thread over K in a fixed order (pairs inside a
 * KC block, blocks in turn), whatever the tiling and the thread count, so results do not depend on
 * the number of threads.
 */
#include "ops.h"
#include "core.h"

#include <omp.h>
#include <string.h>

#define NR 32      /* panel width: two zmm of fp32 accumulators per row */
#define MR 12      /* rows per microkernel: 24 accumulators + 2 B vectors of 32 registers */
#define KC 256     /* k per block: a B micro-panel (16 KiB) stays in L1 across an A block */
#define MC (MR * 8) /* rows per A block (48 KiB of bf16, kept in L2) */

static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float bf16_round(float f) {
    uint32_t u = (uint32_t)f32_to_bf16(f) << 16;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

size_t bf16_panel_elems(int K, int N) {
    return (size_t)((N + NR - 1) / NR) * (size_t)((K + 1) / 2) * NR * 2;
}

/* B[k][n] = src[n*ld + k] when trans (y = x·Wᵀ with W (N, K)), src[k*ld + n] otherwise. */
void bf16_pack_panels(uint16_t *dst, const float *src, int K, int N, int trans) {
    int np = (N + NR - 1) / NR, kp = (K + 1) / 2;
    #pragma omp parallel for schedule(static) if ((size_t)K * N >= LL_OMP_MIN_WORK)
    for (int j = 0; j < np; j++) {
        uint16_t *panel = dst + (size_t)j * kp * NR * 2;
        for (int p = 0; p < kp; p++)
            for (int c = 0; c < NR; c++)
                for (int h = 0; h < 2; h++) {
                    int k = 2 * p + h, n = j * NR + c;
                    float v = 0.0f;
                    if (k < K && n < N) v = trans ? src[(size_t)n * K + k] : src[(size_t)k * N + n];
                    panel[((size_t)p * NR + c) * 2 + h] = f32_to_bf16(v);
                }
    }
}

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>

int bf16_supported(void) { return __builtin_cpu_supports("avx512bf16"); }

/* Packs rows [0, mr) x k [k0, k0 + kc) of A into [pairs][MR] words; rows past mr and the odd k
 * tail are zero. */
static void pack_a(uint32_t *dst, const float *A, int lda, int mr, int k0, int kc) {
    int kp = (kc + 1) / 2;
    uint32_t tmp[16];
    for (int r = 0; r < MR; r++) {
        if (r >= mr) {
            for (int p = 0; p < kp; p++) dst[(size_t)p * MR + r] = 0;
            continue;
        }
        const float *row = A + (size_t)r * lda + k0;
        for (int k = 0; k < kc; k += 32) {
            int n = kc - k < 32 ? kc - k : 32;
            __mmask16 lo = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
            __mmask16 hi = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1 : 0);
            __m512 x0 = _mm512_maskz_loadu_ps(lo, row + k);
            __m512 x1 = _mm512_maskz_loadu_ps(hi, row + k + 16);
            _mm512_storeu_si512(tmp, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
            int pairs = (n + 1) / 2;
            for (int q = 0; q < pairs; q++) dst[(size_t)(k / 2 + q) * MR + r] = tmp[q];
        }
    }
}

/* c[mr, nr] (+)= a[kp pairs][MR] · b[kp pairs][NR][2]. */
static void kernel(int kp, const uint32_t *restrict a, const uint16_t *restrict b, float *c, int ldc,
                   int mr, int nr, int add) {
    __m512 acc[MR][2];
    #pragma GCC unroll 12
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + (size_t)p * NR * 2);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + (size_t)p * NR * 2 + 32);
        const uint32_t *ap = a + (size_t)p * MR;
        #pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)ap[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xffff : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    #pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        if (r >= mr) break;
        float *cr = c + (size_t)r * ldc;
        __m512 v0 = acc[r][0], v1 = acc[r][1];
        if (add) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), v1);
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

void gemm_bf16(float *C, int ldc, const float *A, int lda, const uint16_t *Bp, int M, int N, int K,
               int acc) {
    int np = (N + NR - 1) / NR, kp_all = (K + 1) / 2;
    int mblocks = (M + MC - 1) / MC;
    int nthreads = omp_in_parallel() ? 1 : omp_get_max_threads();
    /* Enough tiles for every thread (split N when M is short, as in generation). */
    int ngroups = (4 * nthreads + mblocks - 1) / mblocks;
    if (ngroups > np) ngroups = np;
    if ((size_t)M * N * K < (size_t)LL_OMP_MIN_WORK * 64) ngroups = 1;
    int gsize = (np + ngroups - 1) / ngroups;
    ngroups = (np + gsize - 1) / gsize;
    int tiles = mblocks * ngroups;
    #pragma omp parallel for schedule(static) if (tiles > 1 && (size_t)M * N * K >= (size_t)LL_OMP_MIN_WORK * 64)
    for (int t = 0; t < tiles; t++) {
        int mb = t / ngroups, g = t % ngroups;
        int m0 = mb * MC, m1 = m0 + MC < M ? m0 + MC : M;
        int j0 = g * gsize, j1 = j0 + gsize < np ? j0 + gsize : np;
        _Alignas(64) uint32_t apack[(MC / MR) * (KC / 2) * MR];
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC, kp = (kc + 1) / 2;
            for (int i = m0; i < m1; i += MR)
                pack_a(apack + (size_t)((i - m0) / MR) * (KC / 2) * MR, A + (size_t)i * lda, lda,
                       m1 - i < MR ? m1 - i : MR, k0, kc);
            int add = acc || k0 > 0;
            for (int j = j0; j < j1; j++) {
                const uint16_t *bp = Bp + ((size_t)j * kp_all + (size_t)k0 / 2) * NR * 2;
                int nr = N - j * NR < NR ? N - j * NR : NR;
                for (int i = m0; i < m1; i += MR)
                    kernel(kp, apack + (size_t)((i - m0) / MR) * (KC / 2) * MR, bp, C + (size_t)i * ldc + j * NR,
                           ldc, m1 - i < MR ? m1 - i : MR, nr, add);
            }
        }
    }
}

#else

int bf16_supported(void) { return 0; }

void gemm_bf16(float *C, int ldc, const float *A, int lda, const uint16_t *Bp, int M, int N, int K,
               int acc) {
    (void)C, (void)ldc, (void)A, (void)lda, (void)Bp, (void)M, (void)N, (void)K, (void)acc;
    LL_ASSERT(!"gemm_bf16 called on a build without AVX512_BF16");
}

#endif
