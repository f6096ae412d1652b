/* The per-path kernels behind quant.h: each file (quant.c for the scalar reference,
 * quant_avx2.c, quant_avx512.c) fills one table, quant.c picks one at run time from the CPU and
 * tensor_isa_active(), and the driver calls only through it. Internal to src/tensor/ and tests. */
#ifndef LLAVA_TENSOR_QUANT_KERNELS_H
#define LLAVA_TENSOR_QUANT_KERNELS_H

#include "tensor/quant.h"

typedef enum quant_path {
    QUANT_PATH_SCALAR,
    QUANT_PATH_AVX2,        /* pmaddubsw + pmaddwd */
    QUANT_PATH_AVXVNNI,     /* vpdpbusd on 256-bit registers (VEX) */
    QUANT_PATH_AVX512VNNI,  /* vpdpbusd on 512-bit registers */
    QUANT_PATH_COUNT
} quant_path;

/* Rows of x quantized per block of 32: row m's values are qs[m*K + k] (int8, |q| <= 127), its
 * scales d[m*nb + b] (f32) and its block sums s[m*nb + b] = Σ q over the block. */
typedef struct quant_act {
    const int8_t *qs;
    const float *d;
    const int32_t *s;
    int K, nb;
} quant_act;

#define QUANT_MR_MAX 4 /* rows of x per tile, at most, in any table */
#define QUANT_NG_MAX 4 /* row groups of W per tile, at most */

typedef struct quant_kernels {
    quant_path path;
    const char *name;
    int mr, ng; /* the tile this path is fastest with */

    /* One row x[K] (K a multiple of 32) into qs[K], d[K/32], s[K/32]: per block, d = max|x|/127,
     * q = nearest-even(x · (1/d)) (0 when the block is all zero), s = Σ q. */
    void (*quantize_act)(int8_t *qs, float *d, int32_t *s, const float *x, int K);

    /* Tile of the product over blocks [b0, b1) of K: for m < mr (<= QUANT_MR_MAX) rows of a from
     * m0 and g < ng (<= QUANT_NG_MAX) row groups of W, element (m, n = 16g + r):
     *   acc = accumulate ? y[m*ldy + n] : 0;
     *   for b: acc = fma(dw(n, b) · da(m, b), (float)(Σ_k wq·aq - off · s(m, b)), acc)
     *   y[m*ldy + n] = acc
     * w points at group 0's block b0; group g's block b0 is at w + g·gstride bytes. */
    void (*tile[TENSOR_QTYPE_COUNT])(float *y, size_t ldy, const quant_act *a, int m0, int mr,
                                     const uint8_t *w, size_t gstride, int ng, int b0, int b1,
                                     int accumulate);

    /* iters rounds of independent dot-product instructions on registers only; returns the
     * operations done (2 per multiply-add), for tensor_quant_probe_peak_ops. */
    double (*dot_loop)(long iters);
} quant_kernels;

extern const quant_kernels quant_kernels_scalar;
#if defined(__x86_64__)
extern const quant_kernels quant_kernels_avx2;
extern const quant_kernels quant_kernels_avxvnni;
extern const quant_kernels quant_kernels_avx512vnni;
#endif

/* 1 if this CPU can run the path (whatever tensor_isa_active says). */
int quant_path_supported(quant_path p);
/* The table of a path (callers check quant_path_supported). */
const quant_kernels *quant_kernels_for(quant_path p);
/* The table in use: the best supported path within tensor_isa_active(). */
const quant_kernels *quant_kernels_active(void);

/* The product through a given table (tests compare tables with it). */
void quant_matmul_with(const quant_kernels *k, tensor_pool *pool, float *y, const float *x,
                       const void *w, tensor_qtype t, const float *bias, int M, int N, int K);

#endif
