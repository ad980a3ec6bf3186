/* ops: every kernel of the model as a forward/backward pair, side by side.
 *
 * Conventions (dimension letters as in model.h; N = B*T rows of activations):
 * - Row-major everywhere. A linear weight W has the PyTorch shape (out, in): y = x·Wᵀ.
 * - Backward functions ACCUMULATE into parameter gradients (+=). For activation gradients, an
 *   `acc` flag says whether to add into (1) or overwrite (0) the destination, so that scratch
 *   buffers need no zeroing pass.
 * - OpenMP parallelism sits inside the kernels and is always over the dimension that owns the
 *   written buffer (rows for activations, columns for a weight gradient summed over rows). No
 *   atomics, no cross-thread float reductions: results do not depend on the thread count.
 * - A base model's linear products go through cblas_sgemm (fp32, matmul_forward_naive is the
 *   reference it is tested against) or gemm_bf16 (bf16 base products); the small products of
 *   attention and of adapters through gemm_small's register tiles.
 */
#ifndef LL_OPS_H
#define LL_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Below this many elements of work a kernel runs on the calling thread: a parallel region costs a
 * few microseconds on an idle machine and up to a scheduler time slice on a busy one, more than
 * small loops of the tiny models take. Which thread computes an element never changes its value,
 * so this threshold does not change results. */
#define LL_OMP_MIN_WORK 32768

/* ---- linear: y[N,out] = x[N,in] · W[out,in]ᵀ ---------------------------------------------- */
void matmul_forward(float *y, const float *x, const float *W, int N, int in, int out);
void matmul_forward_naive(float *y, const float *x, const float *W, int N, int in, int out);
/* The bias of a linear layer: y[N,out] += b (every row); db[out] += Σ_rows dy (parallel over the
 * columns, each thread owning its slice of db, rows summed in order). */
void bias_forward(float *y, const float *b, int N, int out);
void bias_backward(float *db, const float *dy, int N, int out);
/* dx[N,in] (+)= dy·W  (skipped when dx is NULL); dW[out,in] += dyᵀ·x  (skipped when dW is NULL) */
void matmul_backward(float *dx, float *dW, const float *dy, const float *x, const float *W, int N,
                     int in, int out, int acc);

/* ---- bf16 products against a frozen weight (ops_bf16.c; AVX512_BF16) ------------------------
 * A weight is packed once into bf16 panels; activations are rounded to bf16 as they are packed;
 * sums are fp32. bf16_supported() says whether this CPU and build can run them. The test's
 * reference is the same sum in double over bf16_round'ed inputs. */
int bf16_supported(void);
/* The kernel the products run on: "amx" (AMX tiles, TDPBF16PS) where the CPU has AMX-BF16 and the
 * OS grants the tile state, else "avx512bf16" (VDPBF16PS), or "none". LORALAB_BF16_KERNEL=avx512bf16
 * in the environment keeps AMX off. bf16_use_amx(0) switches to the vector kernel, (1) back to AMX
 * where it is available; it returns whether AMX is now in use. */
const char *bf16_kernel(void);
int bf16_use_amx(int on);
float bf16_round(float f);                 /* round to nearest even, as the packing does */
size_t bf16_panel_elems(int K, int N);     /* uint16 elements of a packed [K, N] operand */
/* dst = B[K,N] in panels; B[k][n] = src[n*K + k] when trans (a PyTorch (out, in) weight used as
 * Wᵀ, for y = x·Wᵀ), src[k*N + n] otherwise (for dx = dy·W). */
void bf16_pack_panels(uint16_t *dst, const float *src, int K, int N, int trans);
/* C[M,N] (+= when acc) A[M,K] · B, A row-major with leading dimension lda. */
void gemm_bf16(float *C, int ldc, const float *A, int lda, const uint16_t *Bp, int M, int N, int K, int acc);
/* C[M,N] (+= when acc) Atᵀ · B for a weight gradient dW = dyᵀ·x: At is [K, M] (leading dimension
 * lda), Bp is B = x [K, N] packed by bf16_pack_panels(.., trans 0), so that the weights that share
 * an input (q, k, v; gate, up) share its pack. */
void gemm_bf16_tn(float *C, int ldc, const float *At, int lda, const uint16_t *Bp, int M, int N, int K, int acc);

/* ---- products against a quantized frozen weight W (rows x cols = out x in; quant.h) ------------
 * bf16 (ops_bf16.c): C[M,N] (+= when acc) A[M,K] · B with B[k][n] = W[n][k] when trans (y = x·Wᵀ:
 * N = out, K = in) or W[k][n] otherwise (dx = dy·W: K = out, N = in). W is dequantized into packed
 * panels a few at a time, never whole; the result is bitwise gemm_bf16's against
 * bf16_pack_panels(dequant(W)). scratch holds `slots` (>= the threads that may run it) times
 * gemm_bf16_q_scratch(K) uint16 elements.
 * fp32 (ops_quant.c): y[N,out] = x · dequant(W)ᵀ and dx[N,in] (+)= dy · dequant(W), by chunks of
 * W's rows dequantized into scratch (matmul_q_scratch_floats(in) floats) and cblas_sgemm. */
struct QuantTensor;
size_t gemm_bf16_q_scratch(int K);
void gemm_bf16_q(float *C, int ldc, const float *A, int lda, const struct QuantTensor *W, int trans, int M, int N,
                 int K, int acc, uint16_t *scratch, int slots);
size_t matmul_q_scratch_floats(int in);
void matmul_forward_q(float *y, const float *x, const struct QuantTensor *W, int N, float *scratch);
void matmul_backward_q(float *dx, const float *dy, const struct QuantTensor *W, int N, int acc, float *scratch);

/* ---- embedding: out[N,C] = E[ids[i]] ---------------------------------------------------------- */
void embedding_forward(float *out, const int *ids, const float *E, int N, int C);
/* dE[V,C] += scatter of dout rows; parallel over column blocks so each thread owns its columns. */
void embedding_backward(float *dE, const float *dout, const int *ids, int N, int C);

/* ---- RMSNorm (HF Llama): out = w ⊙ x / sqrt(mean(x²) + eps). Saves rstd[N] for backward. ---- */
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);
/* dx[N,C] (+)= ...; dw[C] += ... (dw may be NULL when the weight is frozen). */
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C, int acc);

/* ---- RoPE, HF rotate-half on split halves, in place on x[B*T, NHx, HS] -------------------- */
/* cos/sin tables: [T_max, HS/2], inv_freq_j = theta^(-2j/HS) in fp32 as HF computes it. */
void rope_tables(float *cosv, float *sinv, int T_max, int HS, float theta);
void rope_forward(float *x, const float *cosv, const float *sinv, int B, int T, int NHx, int HS);
/* The rotation is orthogonal: backward rotates the gradient by the negative angle, in place. */
void rope_backward(float *dx, const float *cosv, const float *sinv, int B, int T, int NHx, int HS);

/* ---- small products by register tiles (ops_tile.c) -----------------------------------------
 * C[m, n] (+)= alpha · A · B, A[r][k] = a[r*rsa + k*csa] with rsa == 1 or csa == 1 (A or a
 * transposed operand), B[k][j] = b[k*ldb + j]; acc = 0 overwrites C. gemm_small runs the tiles in
 * parallel when the product is big enough (cblas_sgemm without AVX-512). gemm_tile (AVX-512 builds
 * only) is one tile of mr <= GEMM_TILE_M rows and n <= GEMM_TILE_N columns over all of k. */
enum { GEMM_TILE_M = 12, GEMM_TILE_N = 32 };
void gemm_small(int m, int n, int k, float alpha, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b,
                ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc);
void gemm_tile(int mr, int kn, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t ldb, float *c,
               ptrdiff_t ldc, int n, float alpha, int acc);
/* dst[c*rows + i] = src[i*ld + c]: a rows x cols block (leading dimension ld) transposed into a
 * dense cols x rows one, for a product whose B operand is stored the other way (Kᵀ, Vᵀ, a LoRA
 * factor). */
void gemm_transpose(float *dst, const float *src, int rows, int cols, ptrdiff_t ld);

/* ---- causal attention with grouped kv heads ---------------------------------------------------
 * q[B*T, NH*HS], k/v[B*T, NKV*HS] (post-RoPE) -> out[B*T, NH*HS]; probs[B, NH, T, T] saved (the
 * softmax, zero above the diagonal up to the end of the row's 64-row block; further right it is
 * not written). Products per (b, head) in blocks of query rows, parallel over
 * (b, head); query head h reads kv head h / (NH/NKV). scratch needs attention_scratch_floats(T, HS)
 * floats per thread slot (max_threads of them), in forward and backward. */
size_t attention_scratch_floats(int T, int HS);
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v, float *scratch,
                       int B, int T, int NH, int NKV, int HS);
/* dq, dk, dv are overwritten. Parallel over (b, kv head): each task owns its dk/dv slice and the dq
 * slices of its query-head group, so no two threads write the same element. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                        const float *q, const float *k, const float *v, float *scratch, int B, int T,
                        int NH, int NKV, int HS);

/* ---- SwiGLU: out = SiLU(g) ⊙ u, SiLU(z) = z·σ(z) ----------------------------------------- */
void swiglu_forward(float *out, const float *g, const float *u, size_t n);
void swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n);
/* The gated MLP with the activation config.json's hidden_act names (HF's ACT2FN): out = act(g) ⊙ u.
 * ACT_SILU is swiglu_*; ACT_GELU the exact z·Φ(z) (erf), ACT_GELU_TANH PyTorch's tanh approximation
 * 0.5·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))), ACT_RELU max(z, 0) (derivative 0 at 0, as PyTorch).
 * The non-SiLU activations are evaluated in double per element and rounded once. */
typedef enum { ACT_SILU, ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_COUNT } Activation;
const char *act_name(Activation a); /* "silu", "gelu", "gelu_pytorch_tanh", "relu" */
int act_from_name(const char *name, Activation *out); /* 0 when unknown */
void glu_forward(float *out, const float *g, const float *u, size_t n, Activation act);
void glu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n, Activation act);

/* ---- residual: y = a + b ------------------------------------------------------------------ */
void residual_forward(float *y, const float *a, const float *b, size_t n);

/* ---- softmax cross-entropy, fused ---------------------------------------------------------
 * logits[N,V], targets[N] (a negative target is ignored, like HF's -100). Writes the per-row loss
 * (0 for ignored rows) and the per-row log-sum-exp, both in double-accumulated fp32. Returns the
 * number of counted rows. */
int crossentropy_forward(float *losses, float *lse, const float *logits, const int *targets, int N, int V);
/* In place: logits become dlogits = (softmax - onehot) * scale for counted rows, 0 for ignored. */
void crossentropy_backward(float *logits, const float *lse, const int *targets, int N, int V, float scale);

#endif
