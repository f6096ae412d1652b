/* Quantized weights: Q8_0 (8-bit) and Q4_0 (4-bit), each with one f16 scale per 32 weights of a
 * row (ggml's formats and quantization rules), and the product y = x · Wᵀ on them with x
 * quantized to 8 bits per block of 32 on the fly, so that the CPU's int8 dot-product
 * instructions (AVX-512 VNNI, AVX-VNNI; AVX2's pmaddubsw otherwise) do the arithmetic.
 *
 * Layout. Rows are stored in groups of 16, and one block holds 32 columns of 16 rows, interleaved
 * so that 4 consecutive weights of each of the 16 rows are one 32-bit lane: a 64-byte load is 16
 * rows × 4 columns, exactly what vpdpbusd multiplies against 4 broadcast activation bytes. A row
 * group is K/32 consecutive blocks; a matrix is ceil(N/16) groups, rows past N zero. The bytes
 * per weight are ggml's (Q8_0: 34 per 32, Q4_0: 18 per 32); only their order differs.
 *
 *   Q8_0 block (544 bytes): d[16] f16 scales (row r), then q[j][r][i], j < 8, r < 16, i < 4:
 *        weight (r, 4j + i) = (q - 128) · d[r]   (q stored as unsigned, 1..255)
 *   Q4_0 block (288 bytes): d[16] f16 scales, then q[j][r][i], j < 4, r < 16, i < 4:
 *        weight (r, 4j + i)      = ((q & 15) - 8) · d[r]
 *        weight (r, 16 + 4j + i) = ((q >> 4) - 8) · d[r]
 *
 * Storing Q8_0 offset by 128 makes both formats unsigned, so one instruction form (unsigned
 * weights × signed activations) serves both, corrected by off · Σ activations per block
 * (off = 128 or 8), which is exact integer arithmetic. */
#ifndef LLAVA_TENSOR_QUANT_H
#define LLAVA_TENSOR_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "tensor/tensor.h"

#define TENSOR_QK 32    /* columns per block (one scale) */
#define TENSOR_QROWS 16 /* rows per block (interleaved) */

typedef struct tensor_block_q8_0 {
    uint16_t d[TENSOR_QROWS];         /* f16 scale of each row */
    uint8_t q[8][TENSOR_QROWS][4];    /* weight + 128 */
} tensor_block_q8_0;
_Static_assert(sizeof(tensor_block_q8_0) == TENSOR_QROWS * (2 + TENSOR_QK), "Q8_0: 34 bytes per 32 weights");

typedef struct tensor_block_q4_0 {
    uint16_t d[TENSOR_QROWS];         /* f16 scale of each row */
    uint8_t q[4][TENSOR_QROWS][4];    /* low nibble: column 4j+i, high: 16+4j+i; weight + 8 */
} tensor_block_q4_0;
_Static_assert(sizeof(tensor_block_q4_0) == TENSOR_QROWS * (2 + TENSOR_QK / 2), "Q4_0: 18 bytes per 32 weights");

typedef enum tensor_qtype { TENSOR_Q8_0, TENSOR_Q4_0, TENSOR_QTYPE_COUNT } tensor_qtype;

/* "q8_0" / "q4_0". */
const char *tensor_qtype_name(tensor_qtype t);
/* Parses "q8_0" / "q4_0" (case-insensitive); returns 0 and sets *out, or -1. */
int tensor_qtype_parse(const char *name, tensor_qtype *out);
/* Bytes of one block (16 rows × 32 columns). */
size_t tensor_qtype_block_bytes(tensor_qtype t);
/* 1 if a [rows, cols] matrix can be quantized: cols a positive multiple of 32, rows positive. */
int tensor_quant_shape_ok(int rows, int cols);
/* Bytes of a quantized [rows, cols] matrix (rows rounded up to 16). */
size_t tensor_quant_bytes(tensor_qtype t, int rows, int cols);

/* Quantizes W [rows, cols] (F32, F16 or BF16, row-major) into dst (tensor_quant_bytes). Returns
 * 0, or -1 for a shape (tensor_quant_shape_ok) or dtype it does not take. pool may be NULL. */
int tensor_quantize(tensor_pool *pool, void *dst, tensor_qtype t, const void *w, llava_dtype wtype,
                    int rows, int cols);
/* Row r of a quantized [rows, cols] matrix back to f32 (cols values). */
void tensor_dequantize_row(float *dst, const void *q, tensor_qtype t, int cols, int r);

/* y[M,N] = x[M,K] · W[N,K]ᵀ (+ bias[N] if not NULL), W quantized as t. Each row of x is
 * quantized per block of 32 (scale max|x|/127, round to nearest even) and the products are
 * exact integer sums per block, scaled by the two f32 scales and accumulated in f32 block by
 * block, so every path gives the same bits as the scalar reference. pool may be NULL. Allocates
 * only when M·K > 16384 (prompt and image products), never for one row of a 7B model. */
void tensor_matmul_q(tensor_pool *pool, float *y, const float *x, const void *w, tensor_qtype t,
                     const float *bias, int M, int N, int K);

/* Peak rate of the int8 path in use, in operations per second (a multiply-add counts 2, as
 * flops do): a register-only loop of its dot-product instruction on every thread of pool (NULL:
 * the caller alone) for about `seconds`. The bound quantized prompt and image products are
 * judged against, as tensor_probe_peak_flops is for f32 ones. */
double tensor_quant_probe_peak_ops(tensor_pool *pool, double seconds);

/* The int8 path in use ("scalar", "avx2", "avx-vnni", "avx512-vnni"): the best the CPU has
 * within tensor_isa_active(). */
const char *tensor_quant_path_name(void);

#endif
