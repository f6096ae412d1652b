/* Kernels on f32 activations with weights used in place in their stored dtype (F32, F16, BF16;
 * row-major [out, in] as in PyTorch checkpoints), and the compute thread pool that splits them.
 * Every kernel has a scalar reference path plus AVX2/FMA and AVX-512 paths, chosen at run time
 * from CPUID; LLAVA_ISA=scalar|avx2|avx512 forces one (never beyond what the CPU has). */
#ifndef LLAVA_TENSOR_H
#define LLAVA_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"

/* ---- instruction sets ---- */

typedef enum tensor_isa { TENSOR_ISA_SCALAR, TENSOR_ISA_AVX2, TENSOR_ISA_AVX512 } tensor_isa;

/* The best path this CPU supports (AVX2 needs AVX2+FMA+F16C; AVX-512 needs F, BW, DQ, VL). */
tensor_isa tensor_isa_detect(void);
/* The path in use: detect(), lowered by LLAVA_ISA or tensor_isa_set. Any thread. */
tensor_isa tensor_isa_active(void);
/* Forces a path for tests (clamped to what the CPU has); returns the path now active. */
tensor_isa tensor_isa_set(tensor_isa isa);
const char *tensor_isa_name(tensor_isa isa);

/* ---- memory ---- */

/* Memory for activations, caches and weights made at load: 64-byte aligned (a cache line), so
 * that rows starting at multiples of 64 bytes are read and written in whole vectors that never
 * straddle two lines (malloc's large blocks start 16 bytes into a page: every 64-byte access
 * then touched two). Freed with free(); NULL when out of memory or when bytes overflows. */
void *tensor_alloc(size_t bytes);

/* ---- floating-point mode ---- */

/* An f32 multiply-add with a subnormal operand (|x| < 2^-126) costs x86 CPUs a microcode assist
 * (bench/isa_rates: 0.7 instead of 171 Gop/s on one core here). Softmax over scores 87 or more
 * apart and the activation functions far in their tails make such values. The model therefore
 * computes with them read as zero and results that small written as zero (MXCSR's DAZ and FTZ
 * on x86-64, as TensorFlow's compute threads run): no result changes by more than that size.
 * tensor_fp_enter sets the mode on the calling thread and returns the one it replaced, for
 * tensor_fp_leave; the pool's worker threads always run in it. Elsewhere both do nothing. */
unsigned tensor_fp_enter(void);
void tensor_fp_leave(unsigned saved);

/* ---- thread pool ---- */

/* A persistent pool of worker threads for slices of one kernel call. The thread that calls
 * tensor_pool_run takes part as thread 0. Not reentrant: one run at a time per pool. */
typedef struct tensor_pool tensor_pool;

/* n_threads <= 0: the number of online cores. Returns NULL on failure. */
tensor_pool *tensor_pool_create(int n_threads);
void tensor_pool_destroy(tensor_pool *pool);
int tensor_pool_threads(const tensor_pool *pool);
/* Runs fn(ctx, ith, nth) for ith = 0..nth-1 across the pool and returns when all are done.
 * pool may be NULL (runs fn(ctx, 0, 1) on the caller). */
void tensor_pool_run(tensor_pool *pool, void (*fn)(void *ctx, int ith, int nth), void *ctx);
/* Runs fn(ctx, item, ith) for item = 0..n_items-1, handing items to whichever thread is free
 * (ith: the thread running it, 0..threads-1, for per-thread scratch). Returns when all are done.
 * pool may be NULL (all items on the caller, in order). */
void tensor_pool_for(tensor_pool *pool, int n_items, void (*fn)(void *ctx, int item, int ith),
                     void *ctx);

/* ---- products ---- */

/* y[M,N] = x[M,K] · W[N,K]ᵀ (+ bias[N] if not NULL). W is F32, F16 or BF16, row stride K
 * elements. M == 1 is the decode case (memory-bound), large M the prompt/image case. Arithmetic
 * is f32 with f32 accumulation. pool may be NULL. y must not overlap x, W or bias. A weight type
 * other than those three is a caller bug: y is filled with NaN (see tensor_matmul_supports). */
void tensor_matmul(tensor_pool *pool, float *y, const float *x, const void *w, llava_dtype wtype,
                   const float *bias, int M, int N, int K);

/* 1 if tensor_matmul reads weights of type t. */
int tensor_matmul_supports(llava_dtype t);

/* y[M,N] = x[M,K] · B[K,N], B row-major of type btype (F32, F16 or BF16, converted exactly to
 * f32) with row stride ldb (>= N) elements; x has row stride ldx (>= K) and y row stride ldy
 * (>= N); f32 arithmetic. For attention (probabilities · V, V from an f32 or f16 KV cache). */
void tensor_matmul_nn(tensor_pool *pool, float *y, int ldy, const float *x, int ldx,
                      const void *b, llava_dtype btype, int ldb, int M, int N, int K);

/* One attention head for many queries: out[r·ldo + d] = Σ_j p_rj · v[j·ldv + d], p_r the softmax
 * over the keys row r sees of scale · (q_r · k_j), q_r = q + r·ldq, k_j = kmat + j·ldk (hd
 * elements each). K and V are of type kv_type (F32, F16 or BF16: a KV cache in f32 or f16),
 * read as their exact f32 values; the arithmetic is f32. Without a mask (pos0 < 0) row r sees all n_keys keys; with one, query row r is at
 * position pos0 + r and sees keys j <= pos0 + r, and with window > 0 only those with
 * pos0 + r - j <= window. A row that sees no key gets zeros. Scores are computed a block of
 * queries at a time, never all at once, and only for the keys a block sees. scratch: at least
 * tensor_attention_scratch_floats(n_keys, hd) floats. For few queries (decode) the two products
 * of tensor_matmul are faster: this one computes whole microkernel tiles of queries. */
void tensor_attention_head(float *out, size_t ldo, const float *q, size_t ldq, int n_q,
                           const void *kmat, size_t ldk, const void *v, size_t ldv, llava_dtype kv_type,
                           int n_keys, int hd, float scale, int pos0, int window, float *scratch);
size_t tensor_attention_scratch_floats(int n_keys, int hd);
/* The same head without a mask, with f32 keys and values, in half precision (the option
 * `--half vision`): each block of queries meets f16 panels of K and V in the half microkernel
 * (tensor_matmul_half's arithmetic: f16 sums over runs of 64, rows scaled by powers of two,
 * ~1e-3 relative), the softmax between the two products in f32. scratch:
 * tensor_attention_half_scratch_floats(n_keys, hd) floats. The exact head where there is no
 * half path (tensor_half_available() == 0) or K or V does not fit f16. */
void tensor_attention_head_half(float *out, size_t ldo, const float *q, size_t ldq, int n_q, const float *kmat,
                                size_t ldk, const float *v, size_t ldv, int n_keys, int hd, float scale,
                                float *scratch);
size_t tensor_attention_half_scratch_floats(int n_keys, int hd);

/* ---- half-precision products (an explicit option; never the default) ---- */

/* y[M,N] = x[M,K] · W[N,K]ᵀ (+ bias[N]) with IEEE half-precision multiply-adds, which AVX512-FP16
 * runs at twice the f32 rate: W rounded to f16 (exact for F16 weights), each row of x scaled by a
 * power of two and rounded to f16, products summed in f16 over runs of 64 k, the runs summed in
 * f32 and the row's scale undone (exactly). The scale is the largest power of two that keeps
 * |x·scale| <= min(2^15, 2^14 / (64 · w_absmax)), so no f16 sum can exceed 2^14 (f16 overflows
 * past 65504) and small values keep as many bits as the bound allows. Relative error of a dot
 * product about 1e-3 (f16's 11-bit significand), against the exact path's 1e-7.
 * w_absmax: max |W| (tensor_absmax). Falls back to tensor_matmul (exact) when the CPU has no
 * AVX512-FP16 (or the active path is below AVX-512), for M < 24 (few rows are memory-bound: no
 * gain), and when w_absmax is not finite or W does not fit f16. pool may be NULL. */
void tensor_matmul_half(tensor_pool *pool, float *y, const float *x, const void *w, llava_dtype wtype,
                        float w_absmax, const float *bias, int M, int N, int K);
/* W's panels made once, for weights used by many products (the vision tower's): bytes of
 * K × ceil(N/64)·64 f16 in the product's order (0 when tensor_half_available() is 0), and the
 * packing (0, or -1 without the half path or for a dtype the products do not read). pool may be
 * NULL. */
size_t tensor_half_packed_bytes(int N, int K);
int tensor_half_pack(tensor_pool *pool, uint16_t *dst, const void *w, llava_dtype t, int N, int K);
/* tensor_matmul_half on panels from tensor_half_pack (any M: the panels are the weights now;
 * w, the weights as stored, is read only if scratch memory cannot be had, for the exact
 * product). Only where tensor_half_available() was 1 for the packing. */
void tensor_matmul_half_packed(tensor_pool *pool, float *y, const float *x, const void *w, llava_dtype wtype,
                               const uint16_t *panels, float w_absmax, const float *bias, int M, int N, int K);
/* 1 if tensor_matmul_half computes in half precision here (AVX512-FP16, within tensor_isa_active). */
int tensor_half_available(void);
/* max |w[i]| over n values of an F32, F16 or BF16 array (NaN if any is NaN, inf if any is inf). */
float tensor_absmax(const void *w, llava_dtype t, size_t n);
/* Peak f16 FMA rate in flop/s on every thread of pool (as tensor_probe_peak_flops), or 0 when
 * tensor_half_available() is 0. The bound half-precision products are judged against. */
double tensor_half_probe_peak_flops(tensor_pool *pool, double seconds);

/* ---- element-wise and row kernels (in place unless noted; n = row length) ---- */

/* y = (x - mean) / sqrt(var + eps) * w + b over rows of n; rows independent. */
void tensor_layernorm(float *y, const float *x, const float *w, const float *b, int rows, int n,
                      float eps);
/* y = x * rsqrt(mean(x²) + eps) * w, HF LlamaRMSNorm (f32). */
void tensor_rmsnorm(float *y, const float *x, const float *w, int rows, int n, float eps);
/* Softmax over each row, in place, numerically stable (max subtracted). */
void tensor_softmax(float *x, int rows, int n);

void tensor_gelu(float *x, size_t n);       /* exact: 0.5·x·(1 + erf(x/√2)) */
void tensor_gelu_tanh(float *x, size_t n);  /* tanh approximation ("gelu_pytorch_tanh") */
void tensor_quick_gelu(float *x, size_t n); /* x·σ(1.702·x) */
void tensor_silu(float *x, size_t n);       /* x·σ(x) */
/* gate[i] = silu(gate[i]) * up[i]: the SwiGLU of LLaMA's MLP. */
void tensor_silu_mul(float *gate, const float *up, size_t n);

/* inv_freq[i] = 1 / theta^(2i/head_dim), i < head_dim/2, computed in float32 as transformers
 * does (the result differs from a double computation in the last bits, which shows in logits). */
void tensor_rope_inv_freq(float *inv_freq, int head_dim, double theta);
/* Rotates n_heads heads of head_dim at position pos in place, HF rotate_half layout
 * (pairs (i, i + head_dim/2)): x' = x·cos + rotate_half(x)·sin, angle = pos·inv_freq[i]
 * (computed in float32 like transformers: cos/sin of (float)pos * inv_freq). */
void tensor_rope(float *x, int n_heads, int head_dim, float pos, const float *inv_freq);
/* The same in two steps, for callers that rotate many heads or layers at one position:
 * cos_a/sin_a[i] = cos/sin((float)pos · inv_freq[i]) for i < head_dim/2, then the rotation. */
void tensor_rope_angles(float *cos_a, float *sin_a, int head_dim, float pos, const float *inv_freq);
void tensor_rope_apply(float *x, int n_heads, int head_dim, const float *cos_a, const float *sin_a);

/* dst[i] = float(src[i]) for F32/F16/BF16 src (embedding rows, small weights). */
void tensor_to_f32(float *dst, const void *src, llava_dtype type, size_t n);
/* dst[i] = f16(src[i]), round to nearest even, beyond the f16 range inf (as torch's .half()). */
void tensor_to_f16(uint16_t *dst, const float *src, size_t n);

/* ---- machine probes (the bounds `llava bench` reports figures against) ---- */

/* Read bandwidth in bytes/s: every thread of pool (NULL: the caller alone) sums its share of a
 * buffer of `bytes`, best of reps passes. Returns 0 if the buffer cannot be allocated. */
double tensor_probe_read_bandwidth(tensor_pool *pool, size_t bytes, int reps);
/* Peak f32 FMA rate in flop/s of the best path the CPU has, a register-only loop on every thread
 * of pool (NULL: the caller alone) for about `seconds`. */
double tensor_probe_peak_flops(tensor_pool *pool, double seconds);
/* The same, also giving (if per_cpu is not NULL) the best pass's rate divided by its CPU share,
 * CPU time / (wall × threads): the rate while the threads run, which on a machine shared with
 * other work is the figure to compare kernels against. */
double tensor_probe_read_bandwidth_ex(tensor_pool *pool, size_t bytes, int reps, double *per_cpu);
double tensor_probe_peak_flops_ex(tensor_pool *pool, double seconds, double *per_cpu);

#endif
