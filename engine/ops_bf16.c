/* ops_bf16: linear products with bf16 inputs and fp32 sums, for CPUs with AVX512_BF16, on the
 * AMX tile unit where the CPU has AMX-BF16 (see the AMX section) and in vector registers otherwise.
 *
 * C[M,N] (+)= A[M,K] · B[K,N]. VDPBF16PS does, per fp32 lane, acc += a[2i]·b[2i] + a[2i+1]·b[2i+1]:
 * twice the multiply-adds of an fp32 FMA per instruction. This is the "bf16 inputs, fp32
 * accumulate" product of mixed-precision training (Micikevicius et al. 2018; Kalamkar et al. 2019,
 * "A study of BFLOAT16 for deep learning training"). Rounding is to nearest even, and denormal
 * inputs become zero, as VCVTNE2PS2BF16 does (bf16_round models exactly that).
 *
 * B layout ("panels"): N is cut into panels of NR = 32 columns (the last padded with zeros); a panel
 * is [pairs][32 columns][2] bf16, ceil(K/2) pairs padded with zero pairs to a multiple of 16, so
 * one k-pair of a panel is two 512-bit vectors and 16 pairs are two AMX B tiles. A frozen
 * weight is packed once (model.c keeps both orientations); an activation used as B (the weight
 * gradient's x) is packed per product into caller scratch.
 * A layout: per block of MC rows and KC k, 32-bit words (two bf16 of consecutive k), one broadcast
 * per row and pair (see pack_a). A is read row-major (A[m][k] = a[m*lda + k]) or transposed
 * (a[k*lda + m], for the weight gradient dyᵀ·x).
 *
 * Determinism: every C element is summed by one thread over K in a fixed order (pairs inside a
 * KC block, blocks in turn), whatever the tiling and the thread count, so results do not depend on
 * the number of threads.
 */
#define _GNU_SOURCE /* syscall */
#include "ops.h"
#include "core.h"
#include "quant.h"
#include "simd.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define NR 32 /* panel width: two zmm of fp32 accumulators per row */
#define MR 12 /* rows per microkernel: 24 accumulators + 2 B vectors of 32 registers */
#define AMX_ROWS 32 /* rows per AMX block: two A tiles of 16 rows */
#define QG 4 /* quantized B: panels per task (128 columns, kept in L2 while all of A's rows pass) */
#ifndef KC
#define KC 512 /* k per block: a B micro-panel (32 KiB) stays in L1 across an A block */
#endif
#ifndef MC
#define MC (MR * 8) /* rows per A block (96 KiB of bf16, kept in L2) */
#endif

static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u); /* denormal: signed zero */
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

/* Pairs per panel: ceil(K/2) rounded up to a multiple of 16 with zero pairs, the k depth of one
 * AMX B tile (16 rows of pairs), so a tile never reads past its panel. */
static int panel_pairs(int K) { return ((K + 1) / 2 + 15) / 16 * 16; }

size_t bf16_panel_elems(int K, int N) { return (size_t)((N + NR - 1) / NR) * (size_t)panel_pairs(K) * NR * 2; }

/* A task's slot in gemm_bf16_q's scratch: QG panels, then a strip of NR x K fp32. */
static size_t q_panels_elems(int K) { return (size_t)QG * panel_pairs(K) * NR * 2; }

size_t gemm_bf16_q_scratch(int K) { return q_panels_elems(K) + (size_t)NR * K * 2; }

static int amx_on(void); /* whether the products run on AMX (end of file) */

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

int bf16_supported(void) { return __builtin_cpu_supports("avx512bf16"); }

static inline __mmask16 mask16(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* 16 pairs (r0[i], r1[i]) as bf16, interleaved: [r0[0], r1[0], r0[1], r1[1], ...]. */
static inline __m512i pairs16(__m512 r0, __m512 r1) {
    static const uint16_t idx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(idx), (__m512i)_mm512_cvtne2ps_pbh(r1, r0));
}

/* row[0, n) as ceil(n/2) words of two bf16, word q at dst[q*stride] (a transposing store). */
static void row_to_words(uint32_t *dst, size_t stride, const float *row, int n) {
    uint32_t tmp[16];
    for (int k = 0; k < n; k += 32) {
        __m512 x0 = _mm512_maskz_loadu_ps(mask16(n - k), row + k);
        __m512 x1 = _mm512_maskz_loadu_ps(mask16(n - k - 16), row + k + 16);
        _mm512_storeu_si512(tmp, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
        int pairs = n - k < 32 ? (n - k + 1) / 2 : 16;
        for (int q = 0; q < pairs; q++) dst[(size_t)(k / 2 + q) * stride] = tmp[q];
    }
}

/* Panel j of B[K, N] (see bf16_pack_panels) into panel, which holds panel_pairs(K) * NR words. */
static void pack_panel(uint32_t *panel, const float *src, int K, int N, int trans, int j) {
    int kp = (K + 1) / 2, kpp = panel_pairs(K);
    memset(panel + (size_t)kp * NR, 0, (size_t)(kpp - kp) * NR * sizeof(uint32_t));
    int n0 = j * NR, nn = N - n0 < NR ? N - n0 : NR;
    if (!trans) { /* B[k][n] = src[k*N + n]: rows 2p and 2p+1, 16 columns at a time */
        for (int p = 0; p < kp; p++) {
            const float *r0 = src + (size_t)(2 * p) * N + n0, *r1 = r0 + N;
            int has1 = 2 * p + 1 < K;
            for (int c = 0; c < NR; c += 16) {
                __mmask16 m = mask16(nn - c);
                __m512 a = _mm512_maskz_loadu_ps(m, r0 + c);
                __m512 b = has1 ? _mm512_maskz_loadu_ps(m, r1 + c) : _mm512_setzero_ps();
                _mm512_storeu_si512(panel + (size_t)p * NR + c, pairs16(a, b));
            }
        }
    } else { /* B[k][n] = src[n*K + k]: row n's pair p goes to word [p][n - n0] */
        for (int c = 0; c < NR; c++) {
            if (c < nn) row_to_words(panel + c, NR, src + (size_t)(n0 + c) * K, K);
            else
                for (int p = 0; p < kp; p++) panel[(size_t)p * NR + c] = 0;
        }
    }
}

void bf16_pack_panels(uint16_t *dst, const float *src, int K, int N, int trans) {
    int np = (N + NR - 1) / NR, kpp = panel_pairs(K);
    #pragma omp parallel for schedule(static) if ((size_t)K * N >= LL_OMP_MIN_WORK)
    for (int j = 0; j < np; j++) pack_panel((uint32_t *)(dst + (size_t)j * kpp * NR * 2), src, K, N, trans, j);
}

/* Rows [m0, m1) x k [k0, k0 + kc) of row-major A as bf16 rows of KC elements (row r at dst + r*KC,
 * two consecutive k per 32-bit word), rows up to rows_pad and k up to the next multiple of 32 zero.
 * The layout both kernels read: the vector kernel broadcasts word p of row r, the tile kernel
 * loads 16 rows x 32 k at a time. */
static void pack_rows(uint16_t *dst, const float *A, int lda, int m0, int m1, int rows_pad, int k0, int kc) {
    int rows = m1 - m0;
    for (int r = 0; r < rows_pad; r++) {
        const float *row = A + (size_t)(m0 + r) * lda + k0;
        for (int k = 0; k < kc; k += 32) {
            __m512 x0 = r < rows ? _mm512_maskz_loadu_ps(mask16(kc - k), row + k) : _mm512_setzero_ps();
            __m512 x1 = r < rows ? _mm512_maskz_loadu_ps(mask16(kc - k - 16), row + k + 16) : _mm512_setzero_ps();
            _mm512_storeu_si512(dst + (size_t)r * KC + k, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
        }
    }
}

/* Packs rows [m0, m1) x k [k0, k0 + kc) of A as 32-bit words (two bf16 of consecutive k), one
 * block of MR rows after another (block g at dst + g*MR*KC/2), zero past m1 and past K. Row-major A
 * becomes [MR rows][KC/2 words] per block (a plain conversion, no transposition: the kernel
 * broadcasts word p of row r from r*KC/2 + p, a constant displacement). Transposed A (the weight
 * gradient's dyᵀ, A[m][k] = a[k*lda + m]) becomes [pairs][MR] per block, two k rows interleaved;
 * it is read one k row at a time across all the blocks, so each row of dy is streamed once. */
static void pack_a(uint32_t *dst, const float *A, int lda, int a_trans, int m0, int m1, int k0, int kc, int K) {
    int kp = (kc + 1) / 2, blocks = (m1 - m0 + MR - 1) / MR;
    if (a_trans) {
        for (int p = 0; p < kp; p++) {
            int k = k0 + 2 * p;
            const float *r0 = A + (size_t)k * lda, *r1 = r0 + lda;
            for (int g = 0; g < blocks; g++) {
                int m = m0 + g * MR;
                __mmask16 km = mask16(m1 - m < MR ? m1 - m : MR);
                __m512 a = _mm512_maskz_loadu_ps(km, r0 + m);
                __m512 b = k + 1 < K ? _mm512_maskz_loadu_ps(km, r1 + m) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(dst + (size_t)g * MR * (KC / 2) + (size_t)p * MR, (__mmask16)((1u << MR) - 1),
                                         pairs16(a, b));
            }
        }
        return;
    }
    pack_rows((uint16_t *)dst, A, lda, m0, m1, blocks * MR, k0, kc);
}

/* c[mr, nr] (+)= a · b[kp pairs][NR][2], word p of A row r at a[r*RS + p*PS]: RS, PS are constants
 * of the two A layouts, so every broadcast is base + constant displacement. */
static inline __attribute__((always_inline)) void kernel_body(int kp, const uint32_t *restrict a, const uint16_t *restrict b,
                                                              float *c, int ldc, int mr, int nr, int add, const int RS,
                                                              const int PS) {
    __m512 acc[MR][2];
    #pragma GCC unroll 12
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + (size_t)p * NR * 2);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + (size_t)p * NR * 2 + 32);
        const uint32_t *ap = a + (size_t)p * PS;
        #pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)ap[r * RS]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    __mmask16 m0 = mask16(nr), m1 = mask16(nr - 16);
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

static void kernel_rows(int kp, const uint32_t *a, const uint16_t *b, float *c, int ldc, int mr, int nr, int add) {
    kernel_body(kp, a, b, c, ldc, mr, nr, add, KC / 2, 1);
}

static void kernel_pairs(int kp, const uint32_t *a, const uint16_t *b, float *c, int ldc, int mr, int nr, int add) {
    kernel_body(kp, a, b, c, ldc, mr, nr, add, 1, MR);
}

/* How C is cut into tiles for the threads: row blocks of rb rows (a multiple of MR, at most MC),
 * panel groups of gsize panels, and the order of the tiles: row-block-major (by_group = 0) or
 * group-major (1, every thread then takes all rows of its own panels). */
typedef struct {
    int rb, gsize, by_group;
} TilePlan;

/* The plan for nthreads threads, costed as if under OpenMP's static schedule (contiguous runs of
 * tiles, the first tiles % nthreads threads one more): each candidate by its busiest thread, a tile
 * counting rows (rounded up to MR) x (panels + about a tenth of a panel for packing its A block)
 * plus a fixed cost of one MR x panel kernel; the cheapest wins, fewest tiles first. So a weight
 * gradient of a small layer (M = 128 is 96 + 32 rows at MC) splits its panels evenly instead.
 * Plans are remembered per thread for the last shapes: a training step asks for the same dozen. */
static TilePlan plan_tiles(int M, int np, int nthreads, int mr) {
    enum { SLOTS = 32 };
    static _Thread_local struct {
        int M, np, nthreads, mr;
        TilePlan plan;
    } memo[SLOTS];
    static _Thread_local int next;
    for (int i = 0; i < SLOTS; i++)
        if (memo[i].M == M && memo[i].np == np && memo[i].nthreads == nthreads && memo[i].mr == mr) return memo[i].plan;
    TilePlan best = {MC, np, 0};
    double best_cost = -1.0;
    for (int rb = MC; rb >= mr; rb -= mr) {
        int nb = (M + rb - 1) / rb;
        if (nb > 8 * nthreads) break; /* smaller blocks only add tiles */
        for (int ng = 1; ng <= np && ng <= 2 * nthreads; ng++)
            for (int by_group = 0; by_group <= (ng > 1); by_group++) {
                int gsize = (np + ng - 1) / ng, groups = (np + gsize - 1) / gsize, tiles = nb * groups;
                double worst = 0.0;
                for (int th = 0, t = 0; th < nthreads; th++) {
                    int count = tiles / nthreads + (th < tiles % nthreads);
                    double work = 0.0;
                    for (int e = t + count; t < e; t++) {
                        int mb = by_group ? t % nb : t / groups, g = by_group ? t / nb : t % groups;
                        int rows = M - mb * rb < rb ? M - mb * rb : rb;
                        int panels = np - g * gsize < gsize ? np - g * gsize : gsize;
                        work += (double)((rows + mr - 1) / mr * mr) * (panels + 0.1) + mr;
                    }
                    worst = work > worst ? work : worst;
                }
                if (best_cost < 0.0 || worst < best_cost * 0.999) {
                    best_cost = worst;
                    best = (TilePlan){rb, gsize, by_group};
                }
            }
    }
    memo[next].M = M, memo[next].np = np, memo[next].nthreads = nthreads, memo[next].mr = mr, memo[next].plan = best;
    next = (next + 1) % SLOTS;
    return best;
}

/* C rows [m0, m1) (at most MC) x panels [j0, j1): the A block packed once per k block, then every
 * panel against it. Bp holds the panels from jb on (jb = 0: all of B). */
static void gemm_block(float *C, int ldc, const float *A, int lda, int a_trans, const uint16_t *Bp, int N, int K,
                       int acc, int m0, int m1, int j0, int j1, int jb) {
    int kpp = panel_pairs(K);
    _Alignas(64) uint32_t apack[(MC / MR) * (KC / 2) * MR];
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC, kp = (kc + 1) / 2;
        pack_a(apack, A, lda, a_trans, m0, m1, k0, kc, K);
        int add = acc || k0 > 0;
        for (int j = j0; j < j1; j++) {
            const uint16_t *bp = Bp + ((size_t)(j - jb) * kpp + (size_t)k0 / 2) * NR * 2;
            int nr = N - j * NR < NR ? N - j * NR : NR;
            for (int i = m0; i < m1; i += MR)
                (a_trans ? kernel_pairs : kernel_rows)(kp, apack + (size_t)((i - m0) / MR) * (KC / 2) * MR, bp,
                                                       C + (size_t)i * ldc + j * NR, ldc, m1 - i < MR ? m1 - i : MR, nr,
                                                       add);
        }
    }
}

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
/* ---- AMX: the same product on the tile unit (TDPBF16PS) -------------------------------------
 * One TDPBF16PS multiplies a 16 x 32 bf16 A tile by a 32 x 16 B tile held as 16 rows of k pairs,
 * into 16 x 16 fp32 sums: 16 times the multiply-adds of a VDPBF16PS. A B tile is exactly one half
 * of a panel's 16 pairs (64 bytes of each 128-byte pair row), so the panels serve both kernels.
 * A is packed as plain bf16 rows, [rows][KC] per block, rows padded with zeros to a multiple of 32
 * and k to a multiple of 32. Each 32 x 32 block of C is four accumulator tiles (0-3) fed by two A
 * tiles (4, 5) and two B tiles (6, 7); C goes through the tiles once per KC block, so the order
 * of the sums, and so every value, is fixed by K alone, as in the vector kernel. The two kernels
 * round the same bf16 inputs but may sum a pair of products in a different order: their results
 * agree to fp32 rounding, not bitwise. Linux hands out the tile state only on request
 * (arch_prctl ARCH_REQ_XCOMP_PERM); where that is refused the vector kernel runs. */
static void pack_a_amx(uint16_t *dst, const float *A, int lda, int a_trans, int m0, int m1, int k0, int kc) {
    int rows = m1 - m0, rows_pad = (rows + AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS, kc32 = (kc + 31) / 32 * 32;
    if (!a_trans) {
        pack_rows(dst, A, lda, m0, m1, rows_pad, k0, kc);
        return;
    }
    /* A[m][k] = At[k*lda + m]: 16 rows x 32 k at a time, as 16 vectors of pair words (one per k
     * pair, lane = row), then a 16 x 16 transpose of the words gives each row its 32 bf16. */
    for (int g = 0; g < rows_pad; g += 16) {
        __mmask16 mm = mask16(rows - g);
        for (int k = 0; k < kc32; k += 32) {
            __m512 w[16];
            for (int p = 0; p < 16; p++) {
                int kk = k + 2 * p;
                const float *r0 = A + (size_t)(k0 + kk) * lda + m0 + g;
                __m512 a = kk < kc ? _mm512_maskz_loadu_ps(mm, r0) : _mm512_setzero_ps();
                __m512 b = kk + 1 < kc ? _mm512_maskz_loadu_ps(mm, r0 + lda) : _mm512_setzero_ps();
                w[p] = _mm512_castsi512_ps(pairs16(a, b));
            }
            ll_transpose16(w);
            for (int r = 0; r < 16; r++) _mm512_store_ps((float *)(dst + (size_t)(g + r) * KC + k), w[r]);
        }
    }
}

/* C[rows, cols] (+)= A (2 tiles of 16 rows at a, KC apart) · B (steps k-steps of 32 from the panel
 * at b), rows, cols <= 32. A block that is not whole goes through a staging copy. */
static void amx_block(const uint16_t *a, const uint16_t *b, int steps, float *c, int ldc, int rows, int cols,
                      int add) {
    _Alignas(64) float stage[AMX_ROWS * NR];
    int whole = rows == AMX_ROWS && cols == NR;
    float *cp = whole ? c : stage;
    size_t cs = whole ? (size_t)ldc * sizeof(float) : NR * sizeof(float);
    if (!whole)
        for (int r = 0; r < AMX_ROWS; r++) {
            const float *cr = c + (size_t)r * ldc;
            int on = add && r < rows;
            _mm512_store_ps(stage + r * NR, on ? _mm512_maskz_loadu_ps(mask16(cols), cr) : _mm512_setzero_ps());
            _mm512_store_ps(stage + r * NR + 16, on ? _mm512_maskz_loadu_ps(mask16(cols - 16), cr + 16) : _mm512_setzero_ps());
        }
    if (add || !whole) {
        _tile_loadd(0, cp, cs);
        _tile_loadd(1, cp + 16, cs);
        _tile_loadd(2, (const char *)cp + 16 * cs, cs);
        _tile_loadd(3, (const char *)cp + 16 * cs + 64, cs);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int s = 0; s < steps; s++) {
        _tile_loadd(4, a + 32 * s, KC * sizeof(uint16_t));
        _tile_loadd(5, a + 16 * KC + 32 * s, KC * sizeof(uint16_t));
        _tile_loadd(6, b + (size_t)s * 16 * NR * 2, NR * 2 * sizeof(uint16_t));
        _tile_loadd(7, b + (size_t)s * 16 * NR * 2 + 32, NR * 2 * sizeof(uint16_t));
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, cp, cs);
    _tile_stored(1, cp + 16, cs);
    _tile_stored(2, (char *)cp + 16 * cs, cs);
    _tile_stored(3, (char *)cp + 16 * cs + 64, cs);
    if (!whole)
        for (int r = 0; r < rows; r++) {
            float *cr = c + (size_t)r * ldc;
            _mm512_mask_storeu_ps(cr, mask16(cols), _mm512_load_ps(stage + r * NR));
            _mm512_mask_storeu_ps(cr + 16, mask16(cols - 16), _mm512_load_ps(stage + r * NR + 16));
        }
}

/* gemm_block on the tile unit. The tile configuration is per thread: loaded here, released at the
 * end so that a context switch does not save 8 KiB of tile data for a thread that is done. */
static void gemm_block_amx(float *C, int ldc, const float *A, int lda, int a_trans, const uint16_t *Bp, int N, int K,
                           int acc, int m0, int m1, int j0, int j1, int jb) {
    ll_amx_config();
    int kpp = panel_pairs(K);
    _Alignas(64) uint16_t apack[MC * KC];
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC, steps = (kc + 31) / 32;
        pack_a_amx(apack, A, lda, a_trans, m0, m1, k0, kc);
        int add = acc || k0 > 0;
        for (int j = j0; j < j1; j++) {
            const uint16_t *bp = Bp + ((size_t)(j - jb) * kpp + (size_t)k0 / 2) * NR * 2;
            int cols = N - j * NR < NR ? N - j * NR : NR;
            for (int i = m0; i < m1; i += AMX_ROWS)
                amx_block(apack + (size_t)(i - m0) * KC, bp, steps, C + (size_t)i * ldc + j * NR, ldc,
                          m1 - i < AMX_ROWS ? m1 - i : AMX_ROWS, cols, add);
        }
    }
    _tile_release();
}

/* 1 when the CPU has AMX-BF16, LORALAB_BF16_KERNEL is not "avx512bf16" and Linux grants the tile
 * state. */
static int amx_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 22)) || !(d & (1u << 24))) return 0;
    const char *env = getenv("LORALAB_BF16_KERNEL");
    if (env && strcmp(env, "avx512bf16") == 0) return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

#else
static int amx_available(void) { return 0; }
static void gemm_block_amx(float *C, int ldc, const float *A, int lda, int a_trans, const uint16_t *Bp, int N, int K,
                           int acc, int m0, int m1, int j0, int j1, int jb) {
    (void)C, (void)ldc, (void)A, (void)lda, (void)a_trans, (void)Bp, (void)N, (void)K, (void)acc, (void)m0, (void)m1;
    (void)j0, (void)j1, (void)jb;
    LL_ASSERT(!"gemm_block_amx on a build without AMX");
}
#endif

static void gemm_core(float *C, int ldc, const float *A, int lda, int a_trans, const uint16_t *Bp, int M, int N,
                      int K, int acc) {
    int np = (N + NR - 1) / NR;
    int nthreads = omp_in_parallel() ? 1 : omp_get_max_threads();
    /* LL_OMP_MIN_WORK counts element-wise work; M·N·K multiply-adds go 32 to an instruction here,
     * so the threshold is scaled up (by 64) to keep the product well above a parallel region's cost. */
    int parallel = nthreads > 1 && (size_t)M * N * K >= (size_t)LL_OMP_MIN_WORK * 64;
    int amx = amx_on();
    TilePlan plan = parallel ? plan_tiles(M, np, nthreads, amx ? AMX_ROWS : MR) : (TilePlan){MC, np, 0};
    int rb = plan.rb, gsize = plan.gsize, nb = (M + rb - 1) / rb, ngroups = (np + gsize - 1) / gsize;
    int tiles = nb * ngroups;
    /* Tiles are handed out dynamically: on the 2-vCPU machine this was tuned on, one core at times
     * runs FMA loops 5-7% slower than the other, and an equal static split leaves the faster one
     * waiting at every product's end (7% of a small-model step in barrier spins, 3% after).
     * Which thread computes a tile never changes its values. */
    #pragma omp parallel for schedule(dynamic) if (parallel && tiles > 1)
    for (int t = 0; t < tiles; t++) {
        int mb = plan.by_group ? t % nb : t / ngroups, g = plan.by_group ? t / nb : t % ngroups;
        int m0 = mb * rb, m1 = m0 + rb < M ? m0 + rb : M;
        int j0 = g * gsize, j1 = j0 + gsize < np ? j0 + gsize : np;
        (amx ? gemm_block_amx : gemm_block)(C, ldc, A, lda, a_trans, Bp, N, K, acc, m0, m1, j0, j1, 0);
    }
}

void gemm_bf16(float *C, int ldc, const float *A, int lda, const uint16_t *Bp, int M, int N, int K, int acc) {
    gemm_core(C, ldc, A, lda, 0, Bp, M, N, K, acc);
}

void gemm_bf16_tn(float *C, int ldc, const float *At, int lda, const uint16_t *Bp, int M, int N, int K, int acc) {
    gemm_core(C, ldc, At, lda, 1, Bp, M, N, K, acc);
}

/* ---- products against a quantized weight ----------------------------------------------------
 * The panels of B are not kept: each task dequantizes a group of at most QG panels into its
 * thread's slot of scratch (through a staging strip of fp32, NR rows or columns of W), packs them
 * with the same packer as bf16_pack_panels, and runs every row block of C against them with the
 * same block kernels as gemm_bf16. Every panel is dequantized once per product, by one thread, and
 * every C element is summed as gemm_bf16 sums it against the packed dequantized weight: results
 * are bitwise those of gemm_bf16 on bf16_pack_panels(dequant(W)), whatever the thread count. */
void gemm_bf16_q(float *C, int ldc, const float *A, int lda, const QuantTensor *W, int trans, int M, int N, int K,
                 int acc, uint16_t *scratch, int slots) {
    LL_ASSERT(trans ? W->rows == N && W->cols == K : W->rows == K && W->cols == N);
    int np = (N + NR - 1) / NR, kpp = panel_pairs(K);
    int nthreads = omp_in_parallel() ? 1 : omp_get_max_threads();
    int parallel = nthreads > 1 && (size_t)M * N * K >= (size_t)LL_OMP_MIN_WORK * 64;
    /* at least two tasks per thread where the panels allow, for the dynamic schedule to even out */
    int gsize = parallel ? (np + 2 * nthreads - 1) / (2 * nthreads) : QG;
    gsize = gsize < 1 ? 1 : gsize > QG ? QG : gsize;
    int ngroups = (np + gsize - 1) / gsize, amx = amx_on();
    const size_t per = gemm_bf16_q_scratch(K);
    LL_ASSERT(!parallel || nthreads <= slots);
    #pragma omp parallel for schedule(dynamic) if (parallel && ngroups > 1)
    for (int g = 0; g < ngroups; g++) {
        int t = omp_get_thread_num();
        LL_ASSERT(t < slots);
        uint16_t *bp = scratch + (size_t)t * per;
        float *strip = (float *)(bp + q_panels_elems(K));
        int j0 = g * gsize, j1 = j0 + gsize < np ? j0 + gsize : np;
        for (int j = j0; j < j1; j++) {
            int n0 = j * NR, nn = N - n0 < NR ? N - n0 : NR;
            if (trans) quant_dequant(W, (size_t)n0 * K, (size_t)nn * K, strip); /* rows n0.. of W: nn x K */
            else quant_dequant_cols(W, n0, nn, strip);                          /* K x nn */
            pack_panel((uint32_t *)(bp + (size_t)(j - j0) * kpp * NR * 2), strip, K, nn, trans, 0);
        }
        for (int m0 = 0; m0 < M; m0 += MC)
            (amx ? gemm_block_amx : gemm_block)(C, ldc, A, lda, 0, bp, N, K, acc, m0, m0 + MC < M ? m0 + MC : M, j0,
                                                j1, j0);
    }
}

#else

int bf16_supported(void) { return 0; }
static int amx_available(void) { return 0; }

/* Scalar packing, so that packs can be built and inspected anywhere; the products need the ISA. */
void bf16_pack_panels(uint16_t *dst, const float *src, int K, int N, int trans) {
    int np = (N + NR - 1) / NR, kpp = panel_pairs(K);
    for (int j = 0; j < np; j++) {
        uint16_t *panel = dst + (size_t)j * kpp * NR * 2;
        for (int p = 0; p < kpp; p++)
            for (int c = 0; c < NR; c++)
                for (int h = 0; h < 2; h++) {
                    int k = 2 * p + h, n = j * NR + c;
                    float v = 0.0f;
                    if (k < K && n < N) v = trans ? src[(size_t)n * K + k] : src[(size_t)k * N + n];
                    panel[((size_t)p * NR + c) * 2 + h] = f32_to_bf16(v);
                }
    }
}

void gemm_bf16(float *C, int ldc, const float *A, int lda, const uint16_t *Bp, int M, int N, int K, int acc) {
    (void)C, (void)ldc, (void)A, (void)lda, (void)Bp, (void)M, (void)N, (void)K, (void)acc;
    LL_ASSERT(!"gemm_bf16 called on a build without AVX512_BF16");
}

void gemm_bf16_tn(float *C, int ldc, const float *At, int lda, const uint16_t *Bp, int M, int N, int K, int acc) {
    (void)C, (void)ldc, (void)At, (void)lda, (void)Bp, (void)M, (void)N, (void)K, (void)acc;
    LL_ASSERT(!"gemm_bf16_tn called on a build without AVX512_BF16");
}

void gemm_bf16_q(float *C, int ldc, const float *A, int lda, const QuantTensor *W, int trans, int M, int N, int K,
                 int acc, uint16_t *scratch, int slots) {
    (void)C, (void)ldc, (void)A, (void)lda, (void)W, (void)trans, (void)M, (void)N, (void)K, (void)acc, (void)scratch;
    (void)slots;
    LL_ASSERT(!"gemm_bf16_q called on a build without AVX512_BF16");
}

#endif

/* -1 until asked, then whether the products run on AMX. */
static int amx_state = -1;

static int amx_on(void) {
    int s = __atomic_load_n(&amx_state, __ATOMIC_ACQUIRE);
    if (s < 0) {
        s = amx_available();
        __atomic_store_n(&amx_state, s, __ATOMIC_RELEASE);
    }
    return s;
}

int bf16_use_amx(int on) {
    int s = on ? amx_available() : 0;
    __atomic_store_n(&amx_state, s, __ATOMIC_RELEASE);
    return s;
}

const char *bf16_kernel(void) { return !bf16_supported() ? "none" : amx_on() ? "amx" : "avx512bf16"; }
