/* The per-instruction-set kernel table behind tensor.h: each ISA file (kern_*.c / matmul_*.c)
 * fills one const table, isa.c picks one at run time, and the drivers (matmul.c, ops.c) call only
 * through it. Internal to src/tensor/. */
#ifndef LLAVA_TENSOR_KERNELS_H
#define LLAVA_TENSOR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

/* Weight formats the products read. Indexes the per-format entries of the table; a new format
 * (a quantized block type) adds a value here and its entries in each ISA's table. */
typedef enum tensor_wfmt { TENSOR_WFMT_F32, TENSOR_WFMT_F16, TENSOR_WFMT_BF16, TENSOR_WFMT_COUNT } tensor_wfmt;

/* The largest microkernel tile of any table (driver scratch is sized by it). */
#define TENSOR_MR_MAX 16
#define TENSOR_NR_MAX 32
/* The widest half-precision microkernel tile (its height is the table's mr), and the run of k
 * each of its f16 sums covers (the overflow bound of tensor_matmul_half's row scaling counts on
 * at most this many products per f16 sum). */
#define TENSOR_HNR_MAX 64
#define TENSOR_HALF_KB 64

typedef struct tensor_kernels {
    tensor_isa isa;

    /* Decode-style product, weights read once: y[m*ldy + n] = Σ_k x[m*ldx + k] · W[n*ldw + k]
     * for m < M, n < N (stores, does not accumulate). W in the table's format. */
    void (*gemv[TENSOR_WFMT_COUNT])(float *y, size_t ldy, const float *x, size_t ldx,
                                    const void *w, size_t ldw, int M, int N, int K);

    /* GEMM microkernel tile: mr rows of x by nr columns of y. */
    int mr, nr;
    /* Packs a panel of W (n <= nr rows of stride ldw elements, kc columns from its start) into
     * dst[k*nr + j] = f32(W[j*ldw + k]), zero for j >= n: the transposed f32 panel the
     * microkernel streams. */
    void (*pack_w[TENSOR_WFMT_COUNT])(float *dst, const void *w, size_t ldw, int n, int kc);
    /* Packs kc rows of a row-major B in the entry's format (stride ldb elements), columns
     * [0, n), n <= nr, as f32 in the same layout. */
    void (*pack_b[TENSOR_WFMT_COUNT])(float *dst, const void *b, size_t ldb, int n, int kc);
    /* Packs rows <= mr of x (stride ldx), kc columns from its start, into dst[k*mr + i], zero
     * for i >= rows: the interleaved panel whose elements the microkernel broadcasts. */
    void (*pack_x)(float *dst, const float *x, size_t ldx, int rows, int kc);
    /* c[i*ldc + j] (+)= Σ_k a[k*mr + i] · b[k*nr + j] over a full mr × nr tile; accumulate
     * selects += over =. a is the packed x panel (f32, mr rows interleaved). */
    void (*micro)(int kc, const float *a, const float *b, float *c, size_t ldc, int accumulate);

    /* One row of x times B (the entry's format, row stride ldb elements): y[j] = Σ_kk x[kk] ·
     * f32(b[kk*ldb + j]) for j < n, kk < k, summed in kk order with one fused multiply-add each
     * (stores, does not accumulate). matmul_nn with few rows: probabilities · V over the KV
     * cache in decode, where B streams from memory once, so it is read ahead by prefetch. */
    void (*gemv_nn[TENSOR_WFMT_COUNT])(float *y, const float *x, const void *b, size_t ldb, int n, int k);
    /* dst[i] = f16(src[i]), nearest even, beyond 65504 inf (rows of an f16 KV cache). */
    void (*to_f16)(uint16_t *dst, const float *src, size_t n);

    /* Half-precision GEMM (tensor_matmul_half), where the table has one (hnr = 0: none): tiles of
     * mr rows (as the f32 one's) × hnr columns. Each f16 value of x is stored twice in a 32-bit
     * word, so that a 32-bit broadcast (a plain load) fills every f16 lane with it; the x panels
     * of such words are pack_x's (it moves 32-bit values without arithmetic). Only called when
     * the CPU has the instructions (tensor_half_available); the scalar table's versions compute
     * the same bits in C. */
    int hnr;
    /* dst[k*hnr + j] = f16(W[j*ldw + k]) (nearest even), zero for j >= n (n <= hnr). */
    void (*pack_w_half[TENSOR_WFMT_COUNT])(uint16_t *dst, const void *w, size_t ldw, int n, int kc);
    /* dst[i] = f16(x[i] · scale) (nearest even) in both halves of the word, i < n: a row of x
     * in the words the x panels are made of (converted once per product, not once per panel). */
    void (*to_half_words)(uint32_t *dst, const float *x, float scale, size_t n);
    /* Over a full mr × hnr tile, for each run of TENSOR_HALF_KB k (from 0):
     *   h = 0 (f16); for k in the run: h = fma_f16(a[k*mr + i], b[k*hnr + j], h)
     *   t = fma_f32(f32(h), unscale[i], t)        (t = f32(h) · unscale[i] for the first run)
     * then c[i*ldc + j] = accumulate ? c + t : t. fma_f16 rounds once to f16, as vfmadd231ph. */
    void (*micro_half)(int kc, const uint32_t *a, const uint16_t *b, float *c, size_t ldc,
                       const float *unscale, int accumulate);
    /* A register-only loop of f16 FMAs: the flops done (the half path's peak, for bench). */
    double (*fma_loop_half)(long iters);

    /* dst[i] = f32(src[i]). */
    void (*to_f32[TENSOR_WFMT_COUNT])(float *dst, const void *src, size_t n);
    /* max |x[i]|, i < n, as the largest magnitude bit pattern: inf if an inf, NaN if a NaN is
     * there (tensor_absmax, the half products' row scales). */
    float (*absmax_f32)(const float *x, size_t n);

    /* Row kernels, contracts as in tensor.h for one row. */
    void (*layernorm)(float *y, const float *x, const float *w, const float *b, int n, float eps);
    void (*rmsnorm)(float *y, const float *x, const float *w, int n, float eps);
    void (*softmax)(float *x, int n);
    void (*gelu)(float *x, size_t n);
    void (*gelu_tanh)(float *x, size_t n);
    void (*quick_gelu)(float *x, size_t n);
    void (*silu)(float *x, size_t n);
    void (*silu_mul)(float *gate, const float *up, size_t n);
    /* x[i] = x[i]·cos[i] - x[i+h]·sin[i], x[i+h] = x[i+h]·cos[i] + x[i]·sin[i], i < h. */
    void (*rope)(float *x, const float *cos, const float *sin, int h);

    /* Machine probes for `llava bench`: a sum over n floats (read bandwidth) and a register-only
     * FMA loop of iters iterations returning the flops done (peak rate). */
    float (*read_sum)(const float *x, size_t n);
    double (*fma_loop)(long iters);
} tensor_kernels;

extern const tensor_kernels tensor_kernels_scalar;
extern const tensor_kernels tensor_kernels_avx2;
extern const tensor_kernels tensor_kernels_avx512;

/* The table of the active path (tensor_isa_active). */
const tensor_kernels *tensor_kernels_active(void);
/* The table of a given path (no clamping; callers check the CPU). */
const tensor_kernels *tensor_kernels_for(tensor_isa isa);

/* A buffer of at least `bytes` (64-byte aligned) that thread ith of the pool may use during the
 * current run; kept and reused by the pool until it is destroyed. NULL if it cannot be had
 * (the caller then allocates its own). */
void *tensor_pool_scratch(tensor_pool *pool, int ith, size_t bytes);
/* A buffer of at least `bytes` that all threads of the next run share (the caller fills it or
 * hands parts of it out), kept and reused by the pool until it is destroyed; called by the
 * pool's owner outside any run, as the run itself is. NULL if it cannot be had, or pool is NULL. */
void *tensor_pool_shared_scratch(tensor_pool *pool, size_t bytes);

/* The half products' rows of x (tensor_matmul_half): the largest |x·scale| a row may reach
 * against weights of max |W| w_absmax, and one row of n values into f16 words with the largest
 * power-of-two scale that keeps it within cap (*unscale undoes it; 1 for a zero row, or one
 * whose maximum is not finite). */
float tensor_half_x_bound(float w_absmax);
void tensor_half_row(const tensor_kernels *k, uint32_t *dst, const float *x, size_t n, float cap, float *unscale);
/* tensor_attention_head_half through a given table (hnr > 0), whatever the CPU: tests compare
 * tables with it. */
void tensor_attention_head_half_with(const tensor_kernels *k, float *out, size_t ldo, const float *q, size_t ldq,
                                     int n_q, const float *kmat, size_t ldk, const float *v, size_t ldv,
                                     int n_keys, int hd, float scale, float *scratch);

/* tensor_matmul_half through a given table (hnr > 0), whatever the CPU: tests compare tables
 * with it (the scalar table runs anywhere). panels: W packed by tensor_half_pack_with with the
 * same table, or NULL (packed per block as the product goes). */
void tensor_matmul_half_with(const tensor_kernels *k, tensor_pool *pool, float *y, const float *x,
                             const void *w, llava_dtype wtype, const uint16_t *panels, float w_absmax,
                             const float *bias, int M, int N, int K);
/* tensor_half_pack and its size for a given table (panels of its hnr). */
size_t tensor_half_packed_bytes_with(const tensor_kernels *k, int N, int K);
int tensor_half_pack_with(const tensor_kernels *k, tensor_pool *pool, uint16_t *dst, const void *w,
                          llava_dtype t, int N, int K);

/* Weight format of a dtype, or -1 when the products do not read it. */
int tensor_wfmt_of(llava_dtype t);

#endif
