/* Tests of the quantized formats and products (src/tensor/quant*.c): the block layout against a
 * hand-computed block, quantization error bounds, the scalar reference product against a
 * float64 sum of the same integers, every int8 path this CPU has against the scalar reference
 * bit for bit (activation quantization and products, awkward shapes, threads), and the error of
 * the quantized product against the f32 product. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/quant.h"
#include "tensor/quant_kernels.h"

typedef struct rng {
    uint64_t s;
} rng;

static uint32_t rng_u32(rng *r) {
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (uint32_t)(r->s >> 16);
}
/* Uniform in [-1, 1). */
static float rng_f(rng *r) { return (float)rng_u32(r) / 2147483648.0f - 1.0f; }

/* Values with a spread of magnitudes per block (as real weights and activations have), some
 * blocks all zero, some holding exact ties of the rounding. */
static void fill(rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) {
        size_t b = i / 32;
        float block_scale = (b % 7 == 3) ? 0.0f : scale * (float)(1 + b % 5);
        x[i] = block_scale * rng_f(r);
    }
    /* a block where x · (1/d) lands on .5: max 127 → d = 1, values k + 0.5 */
    if (n >= 64) {
        for (int k = 0; k < 32; k++) x[32 + k] = (float)(k % 9) - 4.5f;
        x[32] = 127.0f;
    }
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static uint16_t *to_f16(const float *x, size_t n) {
    uint16_t *h = xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = llava_f32_to_f16(x[i]);
    return h;
}

/* ---- formats ---- */

static void test_names_and_sizes(void **state) {
    (void)state;
    tensor_qtype t;
    assert_int_equal(tensor_qtype_parse("q8_0", &t), 0);
    assert_int_equal(t, TENSOR_Q8_0);
    assert_int_equal(tensor_qtype_parse("Q4_0", &t), 0);
    assert_int_equal(t, TENSOR_Q4_0);
    assert_int_equal(tensor_qtype_parse("q4_1", &t), -1);
    assert_int_equal(tensor_qtype_parse(NULL, &t), -1);
    assert_string_equal(tensor_qtype_name(TENSOR_Q8_0), "q8_0");
    assert_string_equal(tensor_qtype_name(TENSOR_Q4_0), "q4_0");
    assert_int_equal(tensor_qtype_block_bytes(TENSOR_Q8_0), 544);
    assert_int_equal(tensor_qtype_block_bytes(TENSOR_Q4_0), 288);
    /* 4096 × 11008: 256 groups × 344 blocks */
    assert_int_equal(tensor_quant_bytes(TENSOR_Q8_0, 4096, 11008), (size_t)256 * 344 * 544);
    assert_int_equal(tensor_quant_bytes(TENSOR_Q4_0, 4096, 11008), (size_t)4096 * 11008 / 32 * 18);
    /* rows round up to 16 */
    assert_int_equal(tensor_quant_bytes(TENSOR_Q8_0, 17, 64), (size_t)2 * 2 * 544);
    assert_true(tensor_quant_shape_ok(1, 32));
    assert_false(tensor_quant_shape_ok(1, 48));
    assert_false(tensor_quant_shape_ok(0, 32));
    assert_false(tensor_quant_shape_ok(3, 588)); /* CLIP's patch kernel: stays unquantized */
}

/* One row of 32 known values: where each lands in the interleaved block. */
static void test_block_layout(void **state) {
    (void)state;
    float w[32];
    for (int k = 0; k < 32; k++) w[k] = (float)(k - 16); /* -16..15: Q8_0 d = 16/127 */
    tensor_block_q8_0 q8[1];
    assert_int_equal(tensor_quantize(NULL, q8, TENSOR_Q8_0, w, LLAVA_DTYPE_F32, 1, 32), 0);
    assert_int_equal(q8->d[0], llava_f32_to_f16(16.0f / 127.0f));
    float id = 1.0f / (16.0f / 127.0f);
    for (int k = 0; k < 32; k++)
        assert_int_equal(q8->q[k / 4][0][k % 4], (int)nearbyintf(w[k] * id) + 128);
    for (int r = 1; r < 16; r++) { /* absent rows: zero scale, stored zero (128) */
        assert_int_equal(q8->d[r], 0);
        for (int k = 0; k < 32; k++) assert_int_equal(q8->q[k / 4][r][k % 4], 128);
    }
    /* Q4_0: the largest magnitude (-16) maps to -8: d = -16 / -8 = 2 */
    tensor_block_q4_0 q4[1];
    assert_int_equal(tensor_quantize(NULL, q4, TENSOR_Q4_0, w, LLAVA_DTYPE_F32, 1, 32), 0);
    assert_int_equal(q4->d[0], llava_f32_to_f16(2.0f));
    for (int k = 0; k < 16; k++) {
        int lo = (int)((float)(k - 16) * 0.5f + 8.5f), hi = (int)((float)k * 0.5f + 8.5f);
        if (hi > 15) hi = 15;
        assert_int_equal(q4->q[k / 4][0][k % 4], lo | (hi << 4));
    }
    for (int r = 1; r < 16; r++)
        for (int k = 0; k < 16; k++) assert_int_equal(q4->q[k / 4][r][k % 4], 0x88);
    float back[32];
    tensor_dequantize_row(back, q4, TENSOR_Q4_0, 32, 0);
    for (int k = 0; k < 32; k++) assert_true(fabsf(back[k] - w[k]) <= 1.0f); /* |d| / 2 */
    tensor_dequantize_row(back, q4, TENSOR_Q4_0, 32, 5);
    for (int k = 0; k < 32; k++) assert_true(back[k] == 0.0f);
}

/* Dequantized weights within the format's rounding of the originals: Q8_0 within d/2 of the
 * scale it quantized with plus the f16 rounding of d (2^-11 relative, times |q| <= 127); Q4_0
 * within |d| (the clamp at +7 on the side opposite the largest magnitude) plus the same. */
static void test_quantize_error(void **state) {
    (void)state;
    rng r = {0x1234567u};
    const int rows = 37, cols = 320;
    float *w = xmalloc(sizeof(float) * rows * cols), *back = xmalloc(sizeof(float) * cols);
    fill(&r, w, (size_t)rows * cols, 0.05f);
    uint16_t *wh = to_f16(w, (size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = llava_f16_to_f32(wh[i]);
    for (int t = 0; t < TENSOR_QTYPE_COUNT; t++) {
        void *q = xmalloc(tensor_quant_bytes((tensor_qtype)t, rows, cols));
        assert_int_equal(tensor_quantize(NULL, q, (tensor_qtype)t, wh, LLAVA_DTYPE_F16, rows, cols), 0);
        for (int row = 0; row < rows; row++) {
            tensor_dequantize_row(back, q, (tensor_qtype)t, cols, row);
            for (int b = 0; b < cols / 32; b++) {
                float amax = 0;
                for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(w[(size_t)row * cols + b * 32 + k]));
                float d = t == TENSOR_Q8_0 ? amax / 127.0f : amax / 8.0f;
                float bound = (t == TENSOR_Q8_0 ? 0.5f * d : d) + amax * 0x1p-10f + 1e-12f;
                for (int k = 0; k < 32; k++) {
                    float e = fabsf(back[b * 32 + k] - w[(size_t)row * cols + b * 32 + k]);
                    if (e > bound) fail_msg("%s row %d col %d: error %g > %g", tensor_qtype_name((tensor_qtype)t), row, b * 32 + k, e, bound);
                }
            }
        }
        /* the same values from F32 and BF16-exact inputs give the same blocks as from F16 */
        void *q32 = xmalloc(tensor_quant_bytes((tensor_qtype)t, rows, cols));
        assert_int_equal(tensor_quantize(NULL, q32, (tensor_qtype)t, w, LLAVA_DTYPE_F32, rows, cols), 0);
        assert_memory_equal(q, q32, tensor_quant_bytes((tensor_qtype)t, rows, cols));
        /* threads split row groups: same bytes */
        tensor_pool *pool = tensor_pool_create(2);
        assert_non_null(pool);
        assert_int_equal(tensor_quantize(pool, q32, (tensor_qtype)t, w, LLAVA_DTYPE_F32, rows, cols), 0);
        assert_memory_equal(q, q32, tensor_quant_bytes((tensor_qtype)t, rows, cols));
        tensor_pool_destroy(pool);
        free(q32);
        free(q);
    }
    /* refusals */
    char dummy[1024];
    assert_int_equal(tensor_quantize(NULL, dummy, TENSOR_Q8_0, w, LLAVA_DTYPE_F32, 1, 48), -1);
    assert_int_equal(tensor_quantize(NULL, dummy, TENSOR_Q8_0, w, LLAVA_DTYPE_I8, 1, 32), -1);
    free(wh);
    free(w);
    free(back);
}

/* ---- activations ---- */

static void test_quantize_act_paths(void **state) {
    (void)state;
    rng r = {0xabcdefu};
    const int K = 1024;
    float *x = xmalloc(sizeof(float) * K);
    fill(&r, x, K, 3.0f);
    int8_t q0[1024], q1[1024];
    float d0[32], d1[32];
    int32_t s0[32], s1[32];
    quant_kernels_scalar.quantize_act(q0, d0, s0, x, K);
    /* the reference's own contract */
    for (int b = 0; b < K / 32; b++) {
        float amax = 0;
        int32_t sum = 0;
        for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(x[b * 32 + k]));
        assert_true(d0[b] == amax / 127.0f);
        for (int k = 0; k < 32; k++) {
            assert_true(abs(q0[b * 32 + k]) <= 127);
            if (amax > 0) assert_true(fabsf(q0[b * 32 + k] * d0[b] - x[b * 32 + k]) <= 0.5001f * d0[b]);
            else assert_int_equal(q0[b * 32 + k], 0);
            sum += q0[b * 32 + k];
        }
        assert_int_equal(s0[b], sum);
    }
    assert_int_equal(q0[32], 127);
    assert_int_equal(q0[33], -4); /* -3.5 → ties to even */
    assert_int_equal(q0[34], -2); /* -2.5 */
    for (int p = 1; p < QUANT_PATH_COUNT; p++) {
        if (!quant_path_supported((quant_path)p)) continue;
        const quant_kernels *k = quant_kernels_for((quant_path)p);
        memset(q1, 0x55, sizeof q1);
        k->quantize_act(q1, d1, s1, x, K);
        assert_memory_equal(q0, q1, sizeof q0);
        assert_memory_equal(d0, d1, sizeof d0);
        assert_memory_equal(s0, s1, sizeof s0);
    }
    free(x);
}

/* ---- products ---- */

/* The scalar reference against the same computation in float64 from the same integers: the only
 * difference is f32 rounding of the per-block terms and of the running sum. */
static void test_reference_product(void **state) {
    (void)state;
    rng r = {0x5eed};
    const int M = 3, N = 40, K = 256, nb = K / 32;
    float *x = xmalloc(sizeof(float) * M * K), *w = xmalloc(sizeof(float) * N * K);
    float *y = xmalloc(sizeof(float) * M * N), *wd = xmalloc(sizeof(float) * K), bias[40];
    fill(&r, x, (size_t)M * K, 1.0f);
    fill(&r, w, (size_t)N * K, 0.05f);
    for (int n = 0; n < N; n++) bias[n] = rng_f(&r);
    for (int t = 0; t < TENSOR_QTYPE_COUNT; t++) {
        void *q = xmalloc(tensor_quant_bytes((tensor_qtype)t, N, K));
        assert_int_equal(tensor_quantize(NULL, q, (tensor_qtype)t, w, LLAVA_DTYPE_F32, N, K), 0);
        quant_matmul_with(&quant_kernels_scalar, NULL, y, x, q, (tensor_qtype)t, bias, M, N, K);
        for (int m = 0; m < M; m++) {
            int8_t aq[256];
            float ad[8];
            int32_t as[8];
            quant_kernels_scalar.quantize_act(aq, ad, as, x + (size_t)m * K, K);
            for (int n = 0; n < N; n++) {
                tensor_dequantize_row(wd, q, (tensor_qtype)t, K, n);
                double want = 0, mag = 0;
                for (int b = 0; b < nb; b++)
                    for (int k = 0; k < 32; k++) {
                        double v = (double)wd[b * 32 + k] * aq[b * 32 + k] * ad[b];
                        want += v;
                        mag += fabs(v);
                    }
                want += bias[n];
                double got = y[(size_t)m * N + n];
                if (fabs(got - want) > 1e-6 * (mag + fabs(bias[n])) + 1e-30)
                    fail_msg("%s y[%d,%d] = %.9g, float64 %.9g", tensor_qtype_name((tensor_qtype)t), m, n, got, want);
            }
        }
        free(q);
    }
    free(x);
    free(w);
    free(y);
    free(wd);
}

/* Every path against the scalar reference, bit for bit, over shapes that exercise partial tiles,
 * a last row group with absent rows, K in several chunks, with and without bias and threads. */
static void test_paths_match_reference(void **state) {
    (void)state;
    static const int Ms[] = {1, 2, 3, 4, 5, 7, 9, 33};
    static const int Ns[] = {16, 32, 40, 64, 100}; /* 1, 2, 3, 4 and 4 + 3 row groups */
    static const int Ks[] = {32, 96, 1056, 2048};
    rng r = {0xfeedu};
    tensor_pool *pool = tensor_pool_create(2);
    assert_non_null(pool);
    int tested = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
            int N = Ns[ni], K = Ks[ki];
            float *w = xmalloc(sizeof(float) * N * K), *bias = xmalloc(sizeof(float) * N);
            fill(&r, w, (size_t)N * K, 0.03f);
            for (int n = 0; n < N; n++) bias[n] = rng_f(&r);
            for (int t = 0; t < TENSOR_QTYPE_COUNT; t++) {
                void *q = xmalloc(tensor_quant_bytes((tensor_qtype)t, N, K));
                assert_int_equal(tensor_quantize(NULL, q, (tensor_qtype)t, w, LLAVA_DTYPE_F32, N, K), 0);
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                    int M = Ms[mi];
                    float *x = xmalloc(sizeof(float) * M * K);
                    float *y0 = xmalloc(sizeof(float) * M * N), *y1 = xmalloc(sizeof(float) * M * N);
                    fill(&r, x, (size_t)M * K, 2.0f);
                    const float *bb = (mi % 2) ? bias : NULL;
                    quant_matmul_with(&quant_kernels_scalar, NULL, y0, x, q, (tensor_qtype)t, bb, M, N, K);
                    for (int p = 1; p < QUANT_PATH_COUNT; p++) {
                        if (!quant_path_supported((quant_path)p)) continue;
                        for (int th = 0; th < 2; th++) {
                            memset(y1, 0x7f, sizeof(float) * M * N);
                            quant_matmul_with(quant_kernels_for((quant_path)p), th ? pool : NULL, y1, x, q,
                                              (tensor_qtype)t, bb, M, N, K);
                            if (memcmp(y0, y1, sizeof(float) * M * N)) {
                                for (int i = 0; i < M * N; i++)
                                    if (memcmp(&y0[i], &y1[i], sizeof(float)))
                                        fail_msg("%s %s M=%d N=%d K=%d threads=%d: y[%d] = %.9g, scalar %.9g",
                                                 quant_kernels_for((quant_path)p)->name,
                                                 tensor_qtype_name((tensor_qtype)t), M, N, K, th ? 2 : 1, i,
                                                 y1[i], y0[i]);
                            }
                            tested++;
                        }
                    }
                    free(x);
                    free(y0);
                    free(y1);
                }
                free(q);
            }
            free(w);
            free(bias);
        }
    tensor_pool_destroy(pool);
    print_message("compared %d products (paths: avx2 %d, avx-vnni %d, avx512-vnni %d)\n", tested,
                  quant_path_supported(QUANT_PATH_AVX2), quant_path_supported(QUANT_PATH_AVXVNNI),
                  quant_path_supported(QUANT_PATH_AVX512VNNI));
}

/* What quantization costs against the exact f32 product on LLaVA-like values (relative
 * Frobenius error; measured about 0.5% for Q8_0 and 6% for Q4_0 on these distributions, bounds
 * with room): the figure the CLI reports for --quant. */
static void test_error_vs_f32(void **state) {
    (void)state;
    rng r = {0x777u};
    const int M = 8, N = 256, K = 1024;
    float *x = xmalloc(sizeof(float) * M * K), *w = xmalloc(sizeof(float) * N * K);
    float *y = xmalloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++) x[i] = rng_f(&r);
    for (int i = 0; i < N * K; i++) w[i] = 0.02f * rng_f(&r);
    double ref_norm = 0;
    double *ref = xmalloc(sizeof(double) * M * N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)x[(size_t)m * K + k] * w[(size_t)n * K + k];
            ref[m * N + n] = s;
            ref_norm += s * s;
        }
    static const double bound[TENSOR_QTYPE_COUNT] = {0.02, 0.2};
    for (int t = 0; t < TENSOR_QTYPE_COUNT; t++) {
        void *q = xmalloc(tensor_quant_bytes((tensor_qtype)t, N, K));
        assert_int_equal(tensor_quantize(NULL, q, (tensor_qtype)t, w, LLAVA_DTYPE_F32, N, K), 0);
        tensor_matmul_q(NULL, y, x, q, (tensor_qtype)t, NULL, M, N, K);
        double err = 0;
        for (int i = 0; i < M * N; i++) err += (y[i] - ref[i]) * (y[i] - ref[i]);
        double rel = sqrt(err / ref_norm);
        print_message("%s: relative error %.4f against the f32 product (path %s)\n",
                      tensor_qtype_name((tensor_qtype)t), rel, tensor_quant_path_name());
        assert_true(rel < bound[t]);
        free(q);
    }
    free(ref);
    free(x);
    free(w);
    free(y);
}

/* A shape the formats do not take: NaN in the output, not a crash or a silent wrong value. */
static void test_bad_shape(void **state) {
    (void)state;
    float x[48] = {0}, y[2];
    uint8_t q[1088] = {0};
    tensor_matmul_q(NULL, y, x, q, TENSOR_Q8_0, NULL, 1, 2, 48);
    assert_true(isnan(y[0]) && isnan(y[1]));
}

/* The int8 peak probe runs and gives a rate above the same path's useful work in the products
 * (a bound must not be below what is achieved). */
static void test_peak_probe(void **state) {
    (void)state;
    double peak = tensor_quant_probe_peak_ops(NULL, 0.05);
    assert_true(peak > 1e8);
    print_message("int8 peak, 1 thread: %.1f GOP/s (%s)\n", peak * 1e-9, tensor_quant_path_name());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_sizes),
        cmocka_unit_test(test_block_layout),
        cmocka_unit_test(test_quantize_error),
        cmocka_unit_test(test_quantize_act_paths),
        cmocka_unit_test(test_reference_product),
        cmocka_unit_test(test_paths_match_reference),
        cmocka_unit_test(test_error_vs_f32),
        cmocka_unit_test(test_bad_shape),
        cmocka_unit_test(test_peak_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
