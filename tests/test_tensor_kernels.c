/* Tests of src/tensor: every kernel path this CPU has against float64 references (products on
 * awkward shapes, norms, softmax, activations, RoPE, conversions), and the thread pool.
 * Error bounds are stated next to each check. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/kernels.h"
#include "tensor/tensor.h"

/* ---- helpers ---- */

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

static void fill(rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_f(r);
}

/* Weights of n values in dtype t, and their exact f32 values. */
static void *make_weights(rng *r, llava_dtype t, size_t n, float *exact) {
    void *w = malloc(n * llava_dtype_size(t));
    assert_non_null(w);
    for (size_t i = 0; i < n; i++) {
        float v = rng_f(r);
        if (t == LLAVA_DTYPE_F16) {
            ((uint16_t *)w)[i] = llava_f32_to_f16(v);
            exact[i] = llava_f16_to_f32(((uint16_t *)w)[i]);
        } else if (t == LLAVA_DTYPE_BF16) {
            ((uint16_t *)w)[i] = llava_f32_to_bf16(v);
            exact[i] = llava_bf16_to_f32(((uint16_t *)w)[i]);
        } else {
            ((float *)w)[i] = v;
            exact[i] = v;
        }
    }
    return w;
}

/* The paths to test: every one this CPU has. */
static int n_paths(void) { return (int)tensor_isa_detect() + 1; }

static void restore_isa(void) { tensor_isa_set(tensor_isa_detect()); }

/* ---- ISA selection ---- */

static void test_isa_selection(void **state) {
    (void)state;
    tensor_isa best = tensor_isa_detect();
    for (int i = 0; i <= (int)TENSOR_ISA_AVX512; i++) {
        tensor_isa got = tensor_isa_set((tensor_isa)i);
        assert_int_equal(got, i <= (int)best ? i : (int)best); /* clamped to what the CPU has */
        assert_int_equal(tensor_isa_active(), got);
    }
    assert_string_equal(tensor_isa_name(TENSOR_ISA_SCALAR), "scalar");
    assert_string_equal(tensor_isa_name(TENSOR_ISA_AVX2), "avx2");
    assert_string_equal(tensor_isa_name(TENSOR_ISA_AVX512), "avx512");
    restore_isa();
}

/* ---- products ---- */

/* Bound for f32 arithmetic: |y − y_ref| ≤ 1e-5 · Σ_k |x_k · w_k| (+ |bias| · 1e-6), y_ref in
 * float64 from the exact f32 values of the stored weights. The scale Σ|x·w| is what rounding
 * errors of a sum are proportional to; 1e-5 leaves room for K up to a few thousand. */
static void check_matmul(tensor_pool *pool, llava_dtype t, int M, int N, int K, int with_bias, rng *r,
                         const char *what) {
    float *x = malloc(sizeof(float) * (size_t)M * (size_t)(K ? K : 1));
    float *we = malloc(sizeof(float) * (size_t)N * (size_t)(K ? K : 1));
    float *bias = malloc(sizeof(float) * (size_t)N);
    float *y = malloc(sizeof(float) * (size_t)M * (size_t)N);
    assert_true(x && we && bias && y);
    fill(r, x, (size_t)M * K, 2.0f);
    fill(r, bias, (size_t)N, 1.0f);
    void *w = make_weights(r, t, (size_t)N * K, we);
    for (size_t i = 0; i < (size_t)M * N; i++) y[i] = 12345.0f; /* must be overwritten */
    tensor_matmul(pool, y, x, w, t, with_bias ? bias : NULL, M, N, K);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = with_bias ? bias[n] : 0, scale = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)x[(size_t)m * K + k] * we[(size_t)n * K + k];
                ref += p;
                scale += fabs(p);
            }
            double err = fabs((double)y[(size_t)m * N + n] - ref);
            double bound = 1e-5 * scale + (with_bias ? 1e-6 * fabs(bias[n]) : 0) + 1e-30;
            if (!(err <= bound)) {
                fail_msg("%s %s %s M=%d N=%d K=%d: y[%d,%d]=%.9g ref=%.9g err=%.3g bound=%.3g", what,
                         tensor_isa_name(tensor_isa_active()), llava_dtype_name(t), M, N, K, m, n,
                         (double)y[(size_t)m * N + n], ref, err, bound);
            }
        }
    free(x);
    free(we);
    free(bias);
    free(y);
    free(w);
}

static const llava_dtype wtypes[] = {LLAVA_DTYPE_F32, LLAVA_DTYPE_F16, LLAVA_DTYPE_BF16};

/* Decode-sized and awkward shapes: 1×N, N×1, K off the vector widths, every M up to 17. */
static void test_matmul_small_shapes(void **state) {
    (void)state;
    rng r = {0x1234567u};
    tensor_pool *pool = tensor_pool_create(3);
    assert_non_null(pool);
    static const int Ks[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100};
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (int t = 0; t < 3; t++) {
            for (int M = 1; M <= 17; M++)
                for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
                    int N = 1 + (M * 7 + (int)ki * 5) % 33; /* N sweeps 1..33 */
                    check_matmul(M % 2 ? pool : NULL, wtypes[t], M, N, Ks[ki], (M + (int)ki) % 3 == 0, &r, "small");
                }
            for (int N = 1; N <= 33; N++) check_matmul(pool, wtypes[t], 1, N, 1, 0, &r, "Kx1");
            check_matmul(pool, wtypes[t], 1, 1, 1000, 1, &r, "1x1");
            check_matmul(pool, wtypes[t], 1, 300, 130, 1, &r, "row");
        }
    }
    tensor_pool_destroy(pool);
    restore_isa();
}

/* GEMM-sized: several K blocks, column blocks, edge tiles in both directions, row splits. */
static void test_matmul_gemm_shapes(void **state) {
    (void)state;
    rng r = {0xfeedbeefu};
    tensor_pool *pool = tensor_pool_create(2);
    tensor_pool *pool5 = tensor_pool_create(5);
    assert_true(pool && pool5);
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (int t = 0; t < 3; t++) {
            check_matmul(pool, wtypes[t], 40, 300, 600, 1, &r, "gemm");
            check_matmul(NULL, wtypes[t], 29, 77, 257, 0, &r, "gemm");
            check_matmul(pool5, wtypes[t], 200, 33, 70, 1, &r, "gemm-narrow");
            check_matmul(pool, wtypes[t], 18, 520, 33, 0, &r, "gemm-wide");
            /* wider than a column block: x packed once for all items, which also split M */
            check_matmul(pool5, wtypes[t], 101, 1100, 530, 1, &r, "gemm-packed-x");
            check_matmul(pool, wtypes[t], 23, 65, 300, 1, &r, "below-gemm"); /* either side of */
            check_matmul(pool, wtypes[t], 24, 65, 300, 1, &r, "gemm-min");   /* the GEMM threshold */
        }
    }
    tensor_pool_destroy(pool);
    tensor_pool_destroy(pool5);
    restore_isa();
}

/* Same inputs on every path: results agree with the scalar path within the same bound. */
static void test_matmul_zero_k_and_bias(void **state) {
    (void)state;
    float y[6] = {1, 2, 3, 4, 5, 6}, bias[3] = {0.5f, -1, 2};
    float dummy = 0;
    tensor_matmul(NULL, y, &dummy, &dummy, LLAVA_DTYPE_F32, bias, 2, 3, 0);
    for (int i = 0; i < 6; i++) assert_true(y[i] == bias[i % 3]);
    assert_true(tensor_matmul_supports(LLAVA_DTYPE_BF16));
    assert_false(tensor_matmul_supports(LLAVA_DTYPE_I8));
    int8_t w8[3] = {1, 2, 3};
    float x1 = 1;
    tensor_matmul(NULL, y, &x1, w8, LLAVA_DTYPE_I8, NULL, 1, 3, 1);
    assert_true(isnan(y[0]) && isnan(y[2]));
}

/* b's elements rounded to type t (F16 or BF16) into bt, and b set to their exact values, so that
 * a reference over b is the reference of a product reading bt; F32 leaves both as they are. */
static const void *typed_copy(float *b, uint16_t *bt, size_t n, llava_dtype t) {
    if (t == LLAVA_DTYPE_F32) return b;
    for (size_t i = 0; i < n; i++) {
        bt[i] = t == LLAVA_DTYPE_F16 ? llava_f32_to_f16(b[i]) : llava_f32_to_bf16(b[i]);
        b[i] = t == LLAVA_DTYPE_F16 ? llava_f16_to_f32(bt[i]) : llava_bf16_to_f32(bt[i]);
    }
    return bt;
}

static void check_matmul_nn(tensor_pool *pool, llava_dtype bt, int M, int N, int K, rng *r) {
    int ldx = K + 3, ldb = N + 5, ldy = N + 2;
    size_t nb = (size_t)(K ? K : 1) * ldb;
    float *x = malloc(sizeof(float) * (size_t)M * ldx), *b = malloc(sizeof(float) * nb);
    float *y = malloc(sizeof(float) * (size_t)M * ldy);
    uint16_t *b16 = malloc(sizeof(uint16_t) * nb);
    assert_true(x && b && y && b16);
    fill(r, x, (size_t)M * ldx, 1.0f);
    fill(r, b, nb, 1.0f);
    const void *bp = typed_copy(b, b16, nb, bt);
    for (size_t i = 0; i < (size_t)M * ldy; i++) y[i] = 777.0f;
    tensor_matmul_nn(pool, y, ldy, x, ldx, bp, bt, ldb, M, N, K);
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            double ref = 0, scale = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)x[(size_t)m * ldx + k] * b[(size_t)k * ldb + n];
                ref += p;
                scale += fabs(p);
            }
            double err = fabs(y[(size_t)m * ldy + n] - ref);
            if (!(err <= 1e-5 * scale + 1e-30))
                fail_msg("nn %s %s M=%d N=%d K=%d [%d,%d] %.9g vs %.9g", tensor_isa_name(tensor_isa_active()),
                         llava_dtype_name(bt), M, N, K, m, n, (double)y[(size_t)m * ldy + n], ref);
        }
        for (int n = N; n < ldy; n++) assert_true(y[(size_t)m * ldy + n] == 777.0f); /* padding untouched */
    }
    free(x);
    free(b);
    free(y);
    free(b16);
}

static void test_matmul_nn(void **state) {
    (void)state;
    rng r = {42};
    tensor_pool *pool = tensor_pool_create(2);
    static const llava_dtype bts[] = {LLAVA_DTYPE_F32, LLAVA_DTYPE_F16, LLAVA_DTYPE_BF16};
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (int t = 0; t < 3; t++) {
            check_matmul_nn(pool, bts[t], 1, 128, 37, &r);
            check_matmul_nn(NULL, bts[t], 3, 17, 5, &r);
            check_matmul_nn(pool, bts[t], 1, 300, 1, &r);
            check_matmul_nn(pool, bts[t], 1, 200, 70, &r); /* a 128-column run, then 72 */
            check_matmul_nn(pool, bts[t], 50, 64, 50, &r);
            check_matmul_nn(pool, bts[t], 130, 40, 300, &r);
            check_matmul_nn(pool, bts[t], 60, 600, 300, &r); /* x packed once */
            check_matmul_nn(NULL, bts[t], 7, 1, 9, &r);
            check_matmul_nn(pool, bts[t], 2, 5, 0, &r);
        }
    }
    /* a type it cannot read: NaN, as tensor_matmul */
    float y[2] = {0, 0}, x1 = 1;
    int8_t b8[2] = {1, 2};
    tensor_matmul_nn(NULL, y, 2, &x1, 1, b8, LLAVA_DTYPE_I8, 2, 1, 2, 1);
    assert_true(isnan(y[0]) && isnan(y[1]));
    tensor_pool_destroy(pool);
    restore_isa();
}

/* ---- half-precision products ---- */

/* Half-precision products through a table against float64: each element within
 * 2e-2 · Σ_k |x_k · w_k| (the worst case of 32 f16 roundings in a run, each at most 2^-11 of the
 * run's Σ|x·w|, plus the inputs' own rounding), and the whole output's RMS error within 3e-3 of
 * its RMS (the typical f16 error is ~1e-3; the exact path's bound above is 1e-5). Rows span
 * 10^-3 .. 10^3 in magnitude and one is zero, so the per-row scaling is exercised; the weights
 * are scaled by wscale (large ones test the overflow bound). Returns the output, for the caller
 * to compare paths bit for bit. */
static float *check_half(const tensor_kernels *k, tensor_pool *pool, llava_dtype t, int M, int N, int K,
                         float wscale, int with_bias, int packed, uint64_t seed) {
    rng r = {seed};
    float *x = malloc(sizeof(float) * (size_t)M * K), *we = malloc(sizeof(float) * (size_t)N * K);
    float *bias = malloc(sizeof(float) * (size_t)N), *y = malloc(sizeof(float) * (size_t)M * N);
    assert_true(x && we && bias && y);
    for (int m = 0; m < M; m++) fill(&r, x + (size_t)m * K, (size_t)K, m == 3 ? 0.0f : powf(10.0f, (float)(m % 7 - 3)));
    fill(&r, bias, (size_t)N, 1.0f);
    void *w = make_weights(&r, t, (size_t)N * K, we);
    if (wscale != 1.0f) {
        for (size_t i = 0; i < (size_t)N * K; i++) {
            float v = we[i] * wscale;
            if (t == LLAVA_DTYPE_F16) ((uint16_t *)w)[i] = llava_f32_to_f16(v), we[i] = llava_f16_to_f32(((uint16_t *)w)[i]);
            else if (t == LLAVA_DTYPE_BF16) ((uint16_t *)w)[i] = llava_f32_to_bf16(v), we[i] = llava_bf16_to_f32(((uint16_t *)w)[i]);
            else ((float *)w)[i] = v, we[i] = v;
        }
    }
    float absmax = tensor_absmax(w, t, (size_t)N * K);
    for (size_t i = 0; i < (size_t)M * N; i++) y[i] = 12345.0f;
    uint16_t *panels = NULL;
    if (packed) {
        panels = malloc(tensor_half_packed_bytes_with(k, N, K));
        assert_non_null(panels);
        assert_int_equal(tensor_half_pack_with(k, pool, panels, w, t, N, K), 0);
    }
    tensor_matmul_half_with(k, pool, y, x, w, t, panels, absmax, with_bias ? bias : NULL, M, N, K);
    free(panels);
    double se = 0, sr = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = with_bias ? bias[n] : 0, scale = 0;
            for (int kk = 0; kk < K; kk++) {
                double p = (double)x[(size_t)m * K + kk] * we[(size_t)n * K + kk];
                ref += p;
                scale += fabs(p);
            }
            double got = y[(size_t)m * N + n], err = fabs(got - ref);
            if (!(err <= 2e-2 * scale + 1e-6 * fabs(ref) + 1e-30))
                fail_msg("half %s %s M=%d N=%d K=%d wscale=%g: y[%d,%d]=%.7g ref=%.7g (Σ|x·w| %.3g)",
                         tensor_isa_name(k->isa), llava_dtype_name(t), M, N, K, (double)wscale, m, n, got, ref, scale);
            /* rows are weighed alike: each row's error against its own size */
            double rs = powf(10.0f, (float)(m % 7 - 3)) * wscale;
            se += (err / rs) * (err / rs);
            sr += (ref / rs) * (ref / rs);
        }
    double rel = sqrt(se / (sr > 0 ? sr : 1));
    print_message("half %-6s %-4s M=%-3d N=%-3d K=%-4d wscale=%-6g RMS relative error %.2e%s\n", tensor_isa_name(k->isa),
                  llava_dtype_name(t), M, N, K, (double)wscale, rel, with_bias ? " (with bias: not checked)" : "");
    /* With a bias (~1) added to rows of 1e-6, the f32 rounding of the sum is itself ~1e-2 of
     * such a row: only the per-element bound applies there. */
    if (!with_bias && !(rel <= 3e-3))
        fail_msg("half %s %s M=%d N=%d K=%d: RMS relative error %.3g", tensor_isa_name(k->isa), llava_dtype_name(t), M, N, K, rel);
    free(x);
    free(we);
    free(bias);
    free(w);
    return y;
}

/* absmax_f32 of every path: the largest magnitude over lengths off the vector widths, inf and
 * NaN reported as such, and tensor_absmax of the 16-bit formats. */
static void test_absmax(void **state) {
    (void)state;
    float x[37];
    for (int p = 0; p < n_paths(); p++) {
        const tensor_kernels *k = tensor_kernels_for((tensor_isa)p);
        for (int n = 0; n <= 37; n++) {
            rng r = {(uint64_t)(n + 1)};
            fill(&r, x, 37, 3.0f);
            float want = 0;
            for (int i = 0; i < n; i++) want = fabsf(x[i]) > want ? fabsf(x[i]) : want;
            assert_true(k->absmax_f32(x, (size_t)n) == want);
        }
        x[20] = -INFINITY;
        assert_true(isinf(k->absmax_f32(x, 37)));
        x[33] = NAN;
        assert_true(isnan(k->absmax_f32(x, 37)));
    }
    uint16_t h[3] = {llava_f32_to_f16(0.5f), llava_f32_to_f16(-2.0f), 0};
    assert_true(tensor_absmax(h, LLAVA_DTYPE_F16, 3) == 2.0f);
    h[2] = 0x7e00; /* NaN */
    assert_true(isnan(tensor_absmax(h, LLAVA_DTYPE_F16, 3)));
    uint16_t b[2] = {llava_f32_to_bf16(-7.0f), llava_f32_to_bf16(1.0f)};
    assert_true(tensor_absmax(b, LLAVA_DTYPE_BF16, 2) == 7.0f);
}

static void test_matmul_half(void **state) {
    (void)state;
    tensor_isa_set(TENSOR_ISA_AVX512);
    int fast = tensor_half_available(); /* this CPU runs the AVX512-FP16 table */
    restore_isa();
    const tensor_kernels *simd = tensor_kernels_for(TENSOR_ISA_AVX512);
    tensor_pool *pool = tensor_pool_create(2);
    assert_non_null(pool);
    static const int shapes[][3] = {{24, 64, 32}, {37, 100, 100}, {29, 130, 1030}, {64, 600, 300}, {14, 64, 33}};
    uint64_t seed = 11;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int ti = 0; ti < 3; ti++) {
            int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            float wscale = si == 2 ? 500.0f : si == 4 ? 1e-3f : 1.0f;
            float *ys = check_half(&tensor_kernels_scalar, NULL, wtypes[ti], M, N, K, wscale, (int)(si % 2), 0, seed);
            /* W packed once: the same bits as packed per block */
            float *ysp = check_half(&tensor_kernels_scalar, pool, wtypes[ti], M, N, K, wscale, (int)(si % 2), 1, seed);
            assert_memory_equal(ys, ysp, (size_t)M * N * sizeof(float));
            free(ysp);
            if (fast) {
                /* the same arithmetic: the same bits, with and without threads and packing */
                float *yv = check_half(simd, NULL, wtypes[ti], M, N, K, wscale, (int)(si % 2), 0, seed);
                float *yp = check_half(simd, pool, wtypes[ti], M, N, K, wscale, (int)(si % 2), 1, seed);
                for (size_t i = 0; i < (size_t)M * N; i++)
                    if (memcmp(&ys[i], &yv[i], 4) || memcmp(&yv[i], &yp[i], 4))
                        fail_msg("half %s M=%d N=%d K=%d: element %zu scalar %.9g avx512 %.9g packed, pool %.9g",
                                 llava_dtype_name(wtypes[ti]), M, N, K, i, (double)ys[i], (double)yv[i], (double)yp[i]);
                free(yv);
                free(yp);
            }
            free(ys);
            seed++;
        }
    /* Few rows, no FP16, or weights f16 cannot hold: the exact product. */
    rng r = {5};
    float x[24 * 32], we[64 * 32], y1[24 * 64], y2[24 * 64];
    fill(&r, x, 24 * 32, 1.0f);
    for (int i = 0; i < 64 * 32; i++) we[i] = rng_f(&r) * 1e5f;
    tensor_matmul_half(NULL, y1, x, we, LLAVA_DTYPE_F32, tensor_absmax(we, LLAVA_DTYPE_F32, 64 * 32), NULL, 24, 64, 32);
    tensor_matmul(NULL, y2, x, we, LLAVA_DTYPE_F32, NULL, 24, 64, 32);
    assert_memory_equal(y1, y2, sizeof y1);
    tensor_matmul_half(NULL, y1, x, we, LLAVA_DTYPE_F32, 1.0f, NULL, 23, 64, 32);
    tensor_matmul(NULL, y2, x, we, LLAVA_DTYPE_F32, NULL, 23, 64, 32);
    assert_memory_equal(y1, y2, 23 * 64 * sizeof(float));
    assert_true(isnan(tensor_absmax((float[]){1.0f, NAN}, LLAVA_DTYPE_F32, 2)));
    assert_true(tensor_absmax((float[]){1.0f, -3.0f, 2.0f}, LLAVA_DTYPE_F32, 3) == 3.0f);
    if (fast) assert_true(tensor_half_probe_peak_flops(NULL, 0.05) > 0);
    tensor_pool_destroy(pool);
}

/* ---- attention, a block of queries at a time ---- */

/* tensor_attention_head against a float64 softmax(scale·QKᵀ)·V over the keys each row sees.
 * Strided q, k, v and out (heads side by side), outputs' padding untouched. */
/* With K and V of type kt (an f16 cache): the same bits as the f32 call on their exact values. */
static void check_attention(llava_dtype kt, int n_q, int n_keys, int hd, int pos0, int window, rng *r) {
    int ldq = hd * 3 + 1, ldk = hd * 2 + 5, ldo = hd + 7;
    size_t nkv = (size_t)n_keys * ldk;
    float *q = malloc(sizeof(float) * (size_t)n_q * ldq), *k = malloc(sizeof(float) * nkv);
    float *v = malloc(sizeof(float) * nkv), *out = malloc(sizeof(float) * (size_t)n_q * ldo);
    float *out32 = malloc(sizeof(float) * (size_t)n_q * ldo);
    uint16_t *k16 = malloc(sizeof(uint16_t) * nkv), *v16 = malloc(sizeof(uint16_t) * nkv);
    float *scratch = malloc(sizeof(float) * tensor_attention_scratch_floats(n_keys, hd));
    double *p = malloc(sizeof(double) * (size_t)n_keys);
    assert_true(q && k && v && out && out32 && k16 && v16 && scratch && p);
    fill(r, q, (size_t)n_q * ldq, 2.0f);
    fill(r, k, nkv, 2.0f);
    fill(r, v, nkv, 1.0f);
    const char *kp = typed_copy(k, k16, nkv, kt), *vp = typed_copy(v, v16, nkv, kt);
    for (size_t i = 0; i < (size_t)n_q * ldo; i++) out[i] = out32[i] = 777.0f;
    /* garbage in the scratch must not matter */
    for (size_t i = 0; i < tensor_attention_scratch_floats(n_keys, hd); i++) scratch[i] = __builtin_nanf("");
    float scale = 1.0f / sqrtf((float)hd);
    tensor_attention_head(out, ldo, q, ldq, n_q, kp, ldk, vp + llava_dtype_size(kt), ldk, kt, n_keys, hd, scale,
                          pos0, window, scratch);
    if (kt != LLAVA_DTYPE_F32) {
        tensor_attention_head(out32, ldo, q, ldq, n_q, k, ldk, v + 1, ldk, LLAVA_DTYPE_F32, n_keys, hd, scale,
                              pos0, window, scratch);
        assert_memory_equal(out, out32, sizeof(float) * (size_t)n_q * ldo);
    }
    for (int i = 0; i < n_q; i++) {
        int lo = 0, hi = n_keys - 1;
        if (pos0 >= 0) {
            if (pos0 + i < hi) hi = pos0 + i;
            if (window > 0 && pos0 + i - window > lo) lo = pos0 + i - window;
        }
        double mx = -INFINITY, sum = 0;
        for (int j = lo; j <= hi; j++) {
            double d = 0;
            for (int c = 0; c < hd; c++) d += (double)q[(size_t)i * ldq + c] * k[(size_t)j * ldk + c];
            p[j] = d * scale;
            if (p[j] > mx) mx = p[j];
        }
        for (int j = lo; j <= hi; j++) sum += (p[j] = exp(p[j] - mx));
        for (int c = 0; c < hd; c++) {
            double ref = 0;
            for (int j = lo; j <= hi; j++) ref += p[j] / sum * v[(size_t)j * ldk + 1 + c];
            double got = out[(size_t)i * ldo + c];
            /* f32 scores of |q·k| up to 4·hd·scale, then a convex mix of |v| <= 1 */
            if (!(fabs(got - ref) <= 2e-5 + 1e-5 * sqrt((double)hd)))
                fail_msg("attention %s %s n_q=%d keys=%d hd=%d pos0=%d window=%d [%d,%d] %.9g vs %.9g",
                         tensor_isa_name(tensor_isa_active()), llava_dtype_name(kt), n_q, n_keys, hd, pos0, window, i,
                         c, got, ref);
        }
        for (int c = hd; c < ldo; c++) assert_true(out[(size_t)i * ldo + c] == 777.0f);
    }
    free(q);
    free(k);
    free(v);
    free(k16);
    free(v16);
    free(out32);
    free(out);
    free(scratch);
    free(p);
}

static void test_attention_head(void **state) {
    (void)state;
    rng r = {0xa77e};
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (int t = 0; t < 2; t++) {
            llava_dtype kt = t ? LLAVA_DTYPE_F16 : LLAVA_DTYPE_F32;
            check_attention(kt, 37, 37, 64, -1, 0, &r);   /* vision-like: all keys, edge tiles */
            check_attention(kt, 30, 300, 80, -1, 0, &r);  /* head size not a multiple of the tile */
            check_attention(kt, 50, 50, 128, 0, 0, &r);   /* causal prompt from position 0 */
            check_attention(kt, 29, 600, 64, 571, 0, &r); /* causal chunk after a cache: > one key block */
            check_attention(kt, 40, 70, 32, 30, 6, &r);   /* sliding window */
            check_attention(kt, 1, 5, 16, 4, 0, &r);      /* one query */
            check_attention(kt, 16, 3, 8, -1, 0, &r);     /* fewer keys than a tile */
        }
    }
    restore_isa();
}

/* tensor_attention_head_half through table kt against a float64 softmax(scale·QKᵀ)·V: f16
 * products (q·k of |q|, |k| <= 2, and probabilities times |v| <= 1) keep each output within
 * about 1e-3 of the truth; a wrong panel, scale or padding gives errors of order 1. Strided
 * rows, the outputs' padding untouched, garbage in the scratch. */
static void check_attention_half(const tensor_kernels *kt, int n_q, int n_keys, int hd, rng *r) {
    int ldq = hd * 3 + 1, ldk = hd * 2 + 5, ldo = hd + 7;
    size_t nkv = (size_t)n_keys * ldk + 1, sf = tensor_attention_half_scratch_floats(n_keys, hd);
    float *q = malloc(sizeof(float) * (size_t)n_q * ldq), *k = malloc(sizeof(float) * nkv);
    float *v = malloc(sizeof(float) * nkv), *out = malloc(sizeof(float) * (size_t)n_q * ldo);
    float *scratch = malloc(sizeof(float) * sf);
    double *p = malloc(sizeof(double) * (size_t)(n_keys > 0 ? n_keys : 1));
    assert_true(q && k && v && out && scratch && p);
    fill(r, q, (size_t)n_q * ldq, 2.0f);
    fill(r, k, nkv, 2.0f);
    fill(r, v, nkv, 1.0f);
    for (size_t i = 0; i < (size_t)n_q * ldo; i++) out[i] = 777.0f;
    for (size_t i = 0; i < sf; i++) scratch[i] = __builtin_nanf("");
    float scale = 1.0f / sqrtf((float)hd);
    tensor_attention_head_half_with(kt, out, ldo, q, ldq, n_q, k, ldk, v + 1, ldk, n_keys, hd, scale, scratch);
    double worst = 0;
    for (int i = 0; i < n_q; i++) {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < n_keys; j++) {
            double d = 0;
            for (int c = 0; c < hd; c++) d += (double)q[(size_t)i * ldq + c] * k[(size_t)j * ldk + c];
            p[j] = d * scale;
            if (p[j] > mx) mx = p[j];
        }
        for (int j = 0; j < n_keys; j++) sum += (p[j] = exp(p[j] - mx));
        for (int c = 0; c < hd; c++) {
            double ref = 0;
            for (int j = 0; j < n_keys; j++) ref += p[j] / sum * v[(size_t)j * ldk + 1 + c];
            double err = fabs(out[(size_t)i * ldo + c] - ref);
            if (!(err <= 1e-2))
                fail_msg("half attention (mr %d, hnr %d) n_q=%d keys=%d hd=%d [%d,%d] %.9g vs %.9g", kt->mr, kt->hnr,
                         n_q, n_keys, hd, i, c, (double)out[(size_t)i * ldo + c], ref);
            if (err > worst) worst = err;
        }
        for (int c = hd; c < ldo; c++) assert_true(out[(size_t)i * ldo + c] == 777.0f);
    }
    printf("half attention %-6s n_q=%-3d keys=%-4d hd=%-3d max abs error %.2e\n", kt == &tensor_kernels_scalar ? "scalar" : "avx512",
           n_q, n_keys, hd, worst);
    /* half precision, not the exact arithmetic by mistake (whose error is ~1e-6 here) */
    if (n_keys > 1) assert_true(worst > 1e-5);
    free(q);
    free(k);
    free(v);
    free(out);
    free(scratch);
    free(p);
}

static void test_attention_head_half(void **state) {
    (void)state;
    tensor_isa_set(TENSOR_ISA_AVX512);
    int fast = tensor_half_available();
    restore_isa();
    rng r = {0x4a1f};
    const tensor_kernels *tables[2] = {&tensor_kernels_scalar, tensor_kernels_for(TENSOR_ISA_AVX512)};
    for (int t = 0; t < 1 + fast; t++) {
        check_attention_half(tables[t], 37, 37, 64, &r);   /* vision-like, edge tiles both ways */
        check_attention_half(tables[t], 30, 300, 80, &r);  /* head size not a multiple of the tile */
        check_attention_half(tables[t], 29, 600, 64, &r);  /* more keys than a key block */
        check_attention_half(tables[t], 16, 3, 8, &r);     /* fewer keys than a tile */
        check_attention_half(tables[t], 24, 1, 16, &r);    /* one key: every weight 1 */
    }
    /* no keys: zeros; keys f16 cannot hold: the exact head's bits */
    float q[24 * 16], kv[40 * 16], out[24 * 16], exact[24 * 16];
    float *scratch = malloc(sizeof(float) * tensor_attention_half_scratch_floats(40, 16));
    assert_non_null(scratch);
    fill(&r, q, 24 * 16, 1.0f);
    fill(&r, kv, 40 * 16, 1.0f);
    for (int i = 0; i < 24 * 16; i++) out[i] = 1.0f;
    tensor_attention_head_half(out, 16, q, 16, 24, kv, 16, kv, 16, 0, 16, 0.25f, scratch);
    for (int i = 0; i < 24 * 16; i++) assert_true(out[i] == 0.0f);
    kv[17] = 1e6f;
    tensor_attention_head_half(out, 16, q, 16, 24, kv, 16, kv, 16, 40, 16, 0.25f, scratch);
    tensor_attention_head(exact, 16, q, 16, 24, kv, 16, kv, 16, LLAVA_DTYPE_F32, 40, 16, 0.25f, -1, 0, scratch);
    assert_memory_equal(out, exact, sizeof out);
    free(scratch);
}

/* ---- norms, softmax ---- */

static void test_norms(void **state) {
    (void)state;
    rng r = {7};
    static const int ns[] = {1, 5, 16, 33, 64, 1000, 4096};
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            int n = ns[ni], rows = 3;
            float *x = malloc(sizeof(float) * (size_t)rows * n), *y = malloc(sizeof(float) * (size_t)rows * n);
            float *w = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
            fill(&r, x, (size_t)rows * n, 3.0f);
            for (int i = 0; i < rows * n; i++) x[i] += 1.5f; /* a mean far from 0 */
            fill(&r, w, (size_t)n, 1.0f);
            fill(&r, b, (size_t)n, 1.0f);
            /* LayerNorm: relative to the normalised scale, |err| ≤ 2e-6·(|w·v| + |b|) + 2e-6·|w|. */
            tensor_layernorm(y, x, w, b, rows, n, 1e-5f);
            for (int q = 0; q < rows; q++) {
                const float *xr = x + (size_t)q * n;
                double mean = 0, var = 0;
                for (int i = 0; i < n; i++) mean += xr[i];
                mean /= n;
                for (int i = 0; i < n; i++) var += (xr[i] - mean) * (xr[i] - mean);
                var /= n;
                for (int i = 0; i < n; i++) {
                    double v = (xr[i] - mean) / sqrt(var + 1e-5), ref = v * w[i] + b[i];
                    double err = fabs(y[(size_t)q * n + i] - ref);
                    if (!(err <= 2e-6 * (fabs(v * w[i]) + fabs(b[i])) + 2e-6 * fabs(w[i])))
                        fail_msg("layernorm %s n=%d i=%d %.9g vs %.9g", tensor_isa_name(tensor_isa_active()), n, i,
                                 (double)y[(size_t)q * n + i], ref);
                }
            }
            /* RMSNorm (HF LlamaRMSNorm in f32): relative error ≤ 2e-6. In place too. */
            memcpy(y, x, sizeof(float) * (size_t)rows * n);
            tensor_rmsnorm(y, y, w, rows, n, 1e-6f);
            for (int q = 0; q < rows; q++) {
                const float *xr = x + (size_t)q * n;
                double ms = 0;
                for (int i = 0; i < n; i++) ms += (double)xr[i] * xr[i];
                double rs = 1.0 / sqrt(ms / n + 1e-6);
                for (int i = 0; i < n; i++) {
                    double ref = w[i] * (xr[i] * rs);
                    if (!(fabs(y[(size_t)q * n + i] - ref) <= 2e-6 * fabs(ref) + 1e-30))
                        fail_msg("rmsnorm %s n=%d i=%d %.9g vs %.9g", tensor_isa_name(tensor_isa_active()), n, i,
                                 (double)y[(size_t)q * n + i], ref);
                }
            }
            free(x);
            free(y);
            free(w);
            free(b);
        }
    }
    restore_isa();
}

/* Softmax: relative error ≤ 2e-6 + 6e-8·|x_i − max| per element against float64 (the second
 * term is the float32 rounding of the difference, which torch has too); -inf entries give 0;
 * huge logits do not overflow; a row of only -inf gives zeros. */
static void test_softmax(void **state) {
    (void)state;
    rng r = {99};
    static const int ns[] = {1, 2, 7, 16, 17, 100, 1030};
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            int n = ns[ni];
            float *x = malloc(sizeof(float) * (size_t)n * 3), *x0 = malloc(sizeof(float) * (size_t)n * 3);
            fill(&r, x, (size_t)n * 3, 20.0f);
            for (int i = 0; i < n; i++) {
                x[n + i] += 1e30f * (i == n / 2);                 /* one huge value */
                if (i % 3 == 1) x[2 * n + i] = -INFINITY;        /* masked entries */
                if (i % 5 == 2) x[2 * n + i] = 3e38f * (i % 2 ? 1 : -1);
            }
            memcpy(x0, x, sizeof(float) * (size_t)n * 3);
            tensor_softmax(x, 3, n);
            for (int q = 0; q < 3; q++) {
                const float *in = x0 + (size_t)q * n;
                double mx = -INFINITY, s = 0;
                for (int i = 0; i < n; i++) mx = in[i] > mx ? in[i] : mx;
                for (int i = 0; i < n; i++) s += exp((double)in[i] - mx);
                for (int i = 0; i < n; i++) {
                    double ref = exp((double)in[i] - mx) / s, got = x[(size_t)q * n + i];
                    if (in[i] == -INFINITY) assert_true(got == 0.0f);
                    double d = in[i] == -INFINITY ? 0 : fabs((double)in[i] - mx);
                    if (!(fabs(got - ref) <= (2e-6 + 6e-8 * d) * ref + 1e-37))
                        fail_msg("softmax %s n=%d row %d i=%d %.9g vs %.9g", tensor_isa_name(tensor_isa_active()), n,
                                 q, i, got, ref);
                }
            }
            for (int i = 0; i < n; i++) x[i] = -INFINITY;
            tensor_softmax(x, 1, n);
            for (int i = 0; i < n; i++) assert_true(x[i] == 0.0f);
            free(x);
            free(x0);
        }
    }
    restore_isa();
}

/* ---- activations ---- */

static double ref_gelu(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }
/* 0.5·x·(1 + tanh(u)) = x / (1 + e^(−2u)); the latter keeps the negative tail in float64 too. */
static double ref_gelu_tanh(double x) {
    return x / (1 + exp(-2 * sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double ref_quick(double x) { return x / (1 + exp(-1.702 * x)); }
static double ref_silu(double x) { return x / (1 + exp(-x)); }

typedef struct act_case {
    const char *name;
    void (*fn)(float *, size_t);
    double (*ref)(double);
    double k; /* the exponent is k·x in float32: its rounding (2 ulp) joins the bound */
} act_case;

/* Activations over [-12, 12] plus special values, against float64 formulas:
 *   |err| ≤ (1e-6 + 1.2e-7·|k·x|)·|ref| + 1e-30
 * where k·x is the float32 argument of exp (torch rounds it the same way) and 1e-30 covers
 * results that underflow. Exact GELU has k = 0: its paths keep x²/2 exact and compute 1 + erf as
 * erfc, so it holds to 1e-6 relative everywhere, negative tail included. */
static void test_activations(void **state) {
    (void)state;
    const act_case cases[] = {
        {"gelu", tensor_gelu, ref_gelu, 0},
        {"gelu_tanh", tensor_gelu_tanh, ref_gelu_tanh, 2 * 0.7978845608 * 1.1},
        {"quick_gelu", tensor_quick_gelu, ref_quick, 1.702},
        {"silu", tensor_silu, ref_silu, 1},
    };
    size_t n = 24001 + 5;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n - 5; i++) x[i] = -12.0f + 24.0f * (float)i / (float)(n - 6);
    x[n - 5] = 0.0f;
    x[n - 4] = -0.0f;
    x[n - 3] = 1e-20f;
    x[n - 2] = 80.0f;
    x[n - 1] = -80.0f;
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            double worst = 0;
            for (size_t len = 1; len <= n; len = len == n ? n + 1 : (len * 3 + 1 > n ? n : len * 3 + 1)) {
                memcpy(y, x, sizeof(float) * n);
                cases[c].fn(y, len);
                for (size_t i = 0; i < len; i++) {
                    double ref = cases[c].ref(x[i]), err = fabs(y[i] - ref);
                    double arg = fabs(cases[c].k * x[i]) * (1 + 0.044715 * x[i] * x[i] * (c == 1));
                    if (fabs(ref) > 1e-30 && err / fabs(ref) > worst) worst = err / fabs(ref);
                    if (!(err <= (1e-6 + 1.2e-7 * arg) * fabs(ref) + 1e-30))
                        fail_msg("%s %s x=%.9g got %.9g ref %.9g", cases[c].name, tensor_isa_name(tensor_isa_active()),
                                 (double)x[i], (double)y[i], ref);
                }
                for (size_t i = len; i < n; i++) assert_true(y[i] == x[i]); /* past n untouched */
            }
            printf("# %-10s %-6s worst relative error %.2e\n", cases[c].name, tensor_isa_name(tensor_isa_active()), worst);
        }
        /* silu_mul = silu(gate)·up */
        float g[37], u[37];
        for (int i = 0; i < 37; i++) {
            g[i] = (float)(i - 18) * 0.7f;
            u[i] = (float)(i % 5) - 2.0f;
        }
        float g0[37];
        memcpy(g0, g, sizeof g);
        tensor_silu_mul(g, u, 37);
        for (int i = 0; i < 37; i++) {
            double ref = ref_silu(g0[i]) * u[i];
            assert_true(fabs(g[i] - ref) <= 2e-6 * fabs(ref) + 1e-38);
        }
    }
    free(x);
    free(y);
    restore_isa();
}

/* ---- RoPE ---- */

/* inv_freq as transformers computes it, element by element in float32. */
static void test_rope_inv_freq(void **state) {
    (void)state;
    static const int dims[] = {8, 16, 64, 80, 128};
    static const double thetas[] = {10000.0, 1000000.0, 500000.0};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (size_t t = 0; t < sizeof thetas / sizeof thetas[0]; t++) {
            float f[64];
            tensor_rope_inv_freq(f, dims[d], thetas[t]);
            for (int i = 0; i < dims[d] / 2; i++) {
                float e = (float)(2 * i) / (float)dims[d];
                double ref = 1.0 / pow(thetas[t], (double)e);
                assert_true(fabs(f[i] - ref) <= 2.5e-7 * ref); /* float32 pow then division */
            }
            assert_true(f[0] == 1.0f);
        }
    /* LLaMA's θ = 1e4, head_dim 128: entries where the float32 computation of transformers
     * (Debian's torch 1.13) differs from a correctly rounded double one, bit for bit, from
     *   (1.0 / (10000.0 ** (torch.arange(0, 128, 2, dtype=torch.int64).float() / 128)))
     *       .numpy().view(numpy.uint32)[[7, 10, 15, 18, 20, 63]] */
    static const int idx[] = {7, 10, 15, 18, 20, 63};
    static const uint32_t torch_bits[] = {0x3ebaf81b, 0x3e72d423, 0x3dec7fd6, 0x3d99940d, 0x3d6655c2, 0x38f22ce2};
    float f[64];
    tensor_rope_inv_freq(f, 128, 10000.0);
    for (int i = 0; i < 6; i++) {
        uint32_t bits;
        memcpy(&bits, &f[idx[i]], 4);
        if (bits != torch_bits[i]) fail_msg("inv_freq[%d] = 0x%08x, transformers 0x%08x", idx[i], bits, torch_bits[i]);
    }
}

/* Against the direct formula x' = x·cos + rotate_half(x)·sin with float64 trigonometry of the
 * float32 angle: |err| ≤ 1e-6·(|x_i| + |x_{i+h}|). */
static void test_rope(void **state) {
    (void)state;
    rng r = {5};
    static const int dims[] = {2, 8, 16, 34, 64, 128};
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
            int hd = dims[d], nh = 3, h = hd / 2;
            float inv[64], x[3 * 128], x0[3 * 128];
            tensor_rope_inv_freq(inv, hd, 10000.0);
            static const float positions[] = {0, 1, 7, 100, 2047, 4095};
            for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
                float pos = positions[pi];
                fill(&r, x, (size_t)nh * hd, 1.0f);
                memcpy(x0, x, sizeof(float) * (size_t)nh * hd);
                tensor_rope(x, nh, hd, pos, inv);
                for (int q = 0; q < nh; q++)
                    for (int i = 0; i < hd; i++) {
                        int j = i % h;
                        double ang = (double)(pos * inv[j]), c = cos(ang), s = sin(ang);
                        double a = x0[q * hd + j], b = x0[q * hd + j + h];
                        double ref = i < h ? a * c - b * s : b * c + a * s;
                        if (!(fabs(x[q * hd + i] - ref) <= 1e-6 * (fabs(a) + fabs(b))))
                            fail_msg("rope %s hd=%d pos=%g i=%d %.9g vs %.9g", tensor_isa_name(tensor_isa_active()), hd,
                                     (double)pos, i, (double)x[q * hd + i], ref);
                    }
            }
        }
    }
    restore_isa();
}

/* ---- conversions ---- */

static void test_to_f32(void **state) {
    (void)state;
    size_t n = 70000;
    uint16_t *h = malloc(n * 2);
    float *f = malloc(n * 4), *src = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        h[i] = (uint16_t)(i * 7919u);
        src[i] = (float)i * 0.25f - 3.0f;
    }
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (size_t len = 0; len < 40; len++) { /* every tail length; exact, bit for bit */
            tensor_to_f32(f, h, LLAVA_DTYPE_F16, len);
            for (size_t i = 0; i < len; i++) {
                float e = llava_f16_to_f32(h[i]);
                assert_true(memcmp(&f[i], &e, 4) == 0 || (isnan(f[i]) && isnan(e)));
            }
        }
        tensor_to_f32(f, h, LLAVA_DTYPE_F16, n);
        for (size_t i = 0; i < n; i++) {
            float e = llava_f16_to_f32(h[i]);
            assert_true(memcmp(&f[i], &e, 4) == 0 || (isnan(f[i]) && isnan(e)));
        }
        tensor_to_f32(f, h, LLAVA_DTYPE_BF16, n);
        for (size_t i = 0; i < n; i++) {
            float e = llava_bf16_to_f32(h[i]);
            assert_true(memcmp(&f[i], &e, 4) == 0);
        }
        tensor_to_f32(f, src, LLAVA_DTYPE_F32, 1001);
        assert_memory_equal(f, src, 1001 * 4);
    }
    free(h);
    free(f);
    free(src);
    restore_isa();
}

/* Every path rounds as llava_f32_to_f16 (nearest even; subnormals; beyond 65504 inf), bit for
 * bit but for NaN payloads (a NaN stays a NaN), every tail length. */
static void test_to_f16(void **state) {
    (void)state;
    size_t n = 70000;
    float *src = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    assert_true(src && h);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)(i * 2654435761u); /* every exponent, sign and mantissa */
        memcpy(&src[i], &bits, 4);
    }
    /* ties at the f16 precision, both parities; the edges of the range */
    static const float edges[] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65519.0f, 65520.0f,
                                  0x1p-24f, 0x1p-25f, 0x1.8p-25f, -0x1p-14f, 0.0f, -0.0f, INFINITY};
    memcpy(src, edges, sizeof edges);
    for (int p = 0; p < n_paths(); p++) {
        tensor_isa_set((tensor_isa)p);
        for (size_t len = 0; len < 40; len++) {
            tensor_to_f16(h, src, len);
            for (size_t i = 0; i < len; i++) {
                uint16_t e = llava_f32_to_f16(src[i]);
                assert_true(h[i] == e || (isnan(src[i]) && (h[i] & 0x7c00) == 0x7c00 && (h[i] & 0x3ff)));
            }
        }
        tensor_to_f16(h, src, n);
        for (size_t i = 0; i < n; i++) {
            uint16_t e = llava_f32_to_f16(src[i]);
            if (!(h[i] == e || (isnan(src[i]) && (h[i] & 0x7c00) == 0x7c00 && (h[i] & 0x3ff))))
                fail_msg("to_f16 %s [%zu] %a: 0x%04x vs 0x%04x", tensor_isa_name(tensor_isa_active()), i,
                         (double)src[i], h[i], e);
        }
    }
    free(src);
    free(h);
    restore_isa();
}

/* ---- thread pool ---- */

typedef struct count_ctx {
    atomic_int calls[64];
    atomic_int total;
    atomic_int nth_seen;
} count_ctx;

static void count_slice(void *ctx, int ith, int nth) {
    count_ctx *c = ctx;
    atomic_fetch_add(&c->calls[ith], 1);
    atomic_fetch_add(&c->total, 1);
    atomic_store(&c->nth_seen, nth);
}

typedef struct items_ctx {
    atomic_int hits[1000];
    atomic_int bad_ith;
    int nth;
} items_ctx;

static void item_fn(void *ctx, int item, int ith) {
    items_ctx *c = ctx;
    atomic_fetch_add(&c->hits[item], 1);
    if (ith < 0 || ith >= c->nth) atomic_fetch_add(&c->bad_ith, 1);
}

static void test_pool(void **state) {
    (void)state;
    static const int sizes[] = {1, 2, 3, 8};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        tensor_pool *pool = tensor_pool_create(sizes[s]);
        assert_non_null(pool);
        int nth = tensor_pool_threads(pool);
        assert_int_equal(nth, sizes[s]);
        /* Each run calls every slice exactly once, over many runs (workers spin and sleep). */
        static count_ctx c;
        memset(&c, 0, sizeof c);
        int runs = 2000;
        for (int i = 0; i < runs; i++) tensor_pool_run(pool, count_slice, &c);
        assert_int_equal(atomic_load(&c.total), runs * nth);
        for (int i = 0; i < nth; i++) assert_int_equal(atomic_load(&c.calls[i]), runs);
        assert_int_equal(atomic_load(&c.nth_seen), nth);
        /* More items than threads: every item exactly once. */
        static items_ctx it;
        for (int n_items = 0; n_items <= 1000; n_items += 333) {
            memset(&it, 0, sizeof it);
            it.nth = nth;
            tensor_pool_for(pool, n_items, item_fn, &it);
            for (int i = 0; i < 1000; i++) assert_int_equal(atomic_load(&it.hits[i]), i < n_items ? 1 : 0);
            assert_int_equal(atomic_load(&it.bad_ith), 0);
        }
        tensor_pool_destroy(pool);
    }
    /* A NULL pool runs on the caller. */
    static count_ctx c0;
    memset(&c0, 0, sizeof c0);
    tensor_pool_run(NULL, count_slice, &c0);
    assert_int_equal(atomic_load(&c0.total), 1);
    assert_int_equal(tensor_pool_threads(NULL), 1);
    tensor_pool_destroy(NULL);
}

/* Whether this thread now reads a subnormal operand as zero and writes a subnormal result as
 * zero (volatile: computed at run time, in the thread's mode). */
static int flushes_subnormals(void) {
    volatile float tiny = 1e-39f, one = 1.0f, small = 1e-30f, smaller = 1e-10f;
    float read = tiny * one, made = small * smaller;
    return read == 0.0f && made == 0.0f;
}

typedef struct fp_ctx {
    atomic_int flushing, threads;
} fp_ctx;

static void fp_slice(void *ctx, int ith, int nth) {
    fp_ctx *c = ctx;
    (void)nth;
    if (ith > 0) {
        atomic_fetch_add(&c->threads, 1);
        atomic_fetch_add(&c->flushing, flushes_subnormals());
    }
}

/* tensor_fp_enter flushes subnormals on this thread until tensor_fp_leave gives the caller's mode
 * back; the pool's workers always flush. (x86-64 only: elsewhere both do nothing.) */
static void test_fp_mode(void **state) {
    (void)state;
#if defined(__x86_64__)
    assert_false(flushes_subnormals()); /* the C default: IEEE gradual underflow */
    unsigned saved = tensor_fp_enter();
    assert_true(flushes_subnormals());
    unsigned inner = tensor_fp_enter(); /* nested: the outer mode comes back */
    tensor_fp_leave(inner);
    assert_true(flushes_subnormals());
    tensor_fp_leave(saved);
    assert_false(flushes_subnormals());
    tensor_pool *pool = tensor_pool_create(3);
    assert_non_null(pool);
    static fp_ctx c;
    for (int run = 0; run < 50; run++) tensor_pool_run(pool, fp_slice, &c);
    assert_int_equal(atomic_load(&c.threads), 100);
    assert_int_equal(atomic_load(&c.flushing), 100);
    assert_false(flushes_subnormals()); /* the caller's own mode is untouched by the pool */
    tensor_pool_destroy(pool);
#else
    skip();
#endif
}

/* A pool idle long enough for its workers to fall asleep wakes up for the next run. */
static void test_pool_sleep_wake(void **state) {
    (void)state;
    tensor_pool *pool = tensor_pool_create(3);
    assert_non_null(pool);
    static count_ctx c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < 3; i++) {
        struct timespec ts = {0, 5 * 1000 * 1000}; /* well past the spin time */
        nanosleep(&ts, NULL);
        tensor_pool_run(pool, count_slice, &c);
    }
    assert_int_equal(atomic_load(&c.total), 9);
    tensor_pool_destroy(pool);
}

/* ---- probes ---- */

static void test_probes(void **state) {
    (void)state;
    tensor_pool *pool = tensor_pool_create(2);
    double bw = tensor_probe_read_bandwidth(pool, 8u << 20, 2);
    double fl = tensor_probe_peak_flops(NULL, 0.02);
    assert_true(bw > 1e8 && bw < 1e13);
    assert_true(fl > 1e8 && fl < 1e13);
    /* Per CPU share: at least about the wall-clock rate (the share is at most 1, up to the
     * granularity of the kernel's CPU accounting on short passes). */
    double pc_bw, pc_fl;
    double bw2 = tensor_probe_read_bandwidth_ex(pool, 8u << 20, 2, &pc_bw);
    double fl2 = tensor_probe_peak_flops_ex(pool, 0.02, &pc_fl);
    assert_true(bw2 > 0 && isfinite(pc_bw) && pc_bw >= bw2 * 0.5);
    assert_true(fl2 > 0 && isfinite(pc_fl) && pc_fl >= fl2 * 0.5);
    tensor_pool_destroy(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_selection),
        cmocka_unit_test(test_matmul_small_shapes),
        cmocka_unit_test(test_matmul_gemm_shapes),
        cmocka_unit_test(test_matmul_zero_k_and_bias),
        cmocka_unit_test(test_matmul_nn),
        cmocka_unit_test(test_absmax),
        cmocka_unit_test(test_matmul_half),
        cmocka_unit_test(test_attention_head),
        cmocka_unit_test(test_attention_head_half),
        cmocka_unit_test(test_norms),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_rope_inv_freq),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_to_f32),
        cmocka_unit_test(test_to_f16),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_sleep_wake),
        cmocka_unit_test(test_fp_mode),
        cmocka_unit_test(test_probes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
