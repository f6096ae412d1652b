/* The scalar reference path: plain C for every entry of the kernel table. Every SIMD path is
 * tested against this one, and it is what runs on a CPU without AVX2. */
#include <math.h>
#include <string.h>

#include "tensor/kernels.h"

#define MR 4
#define NR 16

/* ---- products ---- */

static inline float w_at(const void *w, tensor_wfmt f, size_t i) {
    switch (f) {
    case TENSOR_WFMT_F16: return llava_f16_to_f32(((const uint16_t *)w)[i]);
    case TENSOR_WFMT_BF16: return llava_bf16_to_f32(((const uint16_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

/* Four partial sums keep the rounding error of long rows near √K·ε rather than K·ε. */
static void gemv_fmt(tensor_wfmt f, float *y, size_t ldy, const float *x, size_t ldx,
                     const void *w, size_t ldw, int M, int N, int K) {
    for (int n = 0; n < N; n++) {
        for (int m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * ldx;
            size_t base = (size_t)n * ldw;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            int k = 0;
            for (; k + 4 <= K; k += 4) {
                s0 += xr[k] * w_at(w, f, base + k);
                s1 += xr[k + 1] * w_at(w, f, base + k + 1);
                s2 += xr[k + 2] * w_at(w, f, base + k + 2);
                s3 += xr[k + 3] * w_at(w, f, base + k + 3);
            }
            for (; k < K; k++) s0 += xr[k] * w_at(w, f, base + k);
            y[(size_t)m * ldy + n] = (s0 + s1) + (s2 + s3);
        }
    }
}

static void gemv_f32(float *y, size_t ldy, const float *x, size_t ldx, const void *w, size_t ldw,
                     int M, int N, int K) {
    gemv_fmt(TENSOR_WFMT_F32, y, ldy, x, ldx, w, ldw, M, N, K);
}
static void gemv_f16(float *y, size_t ldy, const float *x, size_t ldx, const void *w, size_t ldw,
                     int M, int N, int K) {
    gemv_fmt(TENSOR_WFMT_F16, y, ldy, x, ldx, w, ldw, M, N, K);
}
static void gemv_bf16(float *y, size_t ldy, const float *x, size_t ldx, const void *w, size_t ldw,
                      int M, int N, int K) {
    gemv_fmt(TENSOR_WFMT_BF16, y, ldy, x, ldx, w, ldw, M, N, K);
}

static void pack_fmt(tensor_wfmt f, float *dst, const void *w, size_t ldw, int n, int kc) {
    for (int k = 0; k < kc; k++) {
        for (int j = 0; j < n; j++) dst[k * NR + j] = w_at(w, f, (size_t)j * ldw + k);
        for (int j = n; j < NR; j++) dst[k * NR + j] = 0;
    }
}
static void pack_f32(float *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt(TENSOR_WFMT_F32, dst, w, ldw, n, kc);
}
static void pack_f16(float *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt(TENSOR_WFMT_F16, dst, w, ldw, n, kc);
}
static void pack_bf16(float *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt(TENSOR_WFMT_BF16, dst, w, ldw, n, kc);
}

static void pack_b_fmt(tensor_wfmt f, float *dst, const void *b, size_t ldb, int n, int kc) {
    for (int k = 0; k < kc; k++)
        for (int j = 0; j < NR; j++) dst[k * NR + j] = j < n ? w_at(b, f, (size_t)k * ldb + (size_t)j) : 0.0f;
}
static void pack_b_f32(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_F32, d, b, ldb, n, kc); }
static void pack_b_f16(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_F16, d, b, ldb, n, kc); }
static void pack_b_bf16(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_BF16, d, b, ldb, n, kc); }

static void pack_x(float *dst, const float *x, size_t ldx, int rows, int kc) {
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < MR; i++) dst[k * MR + i] = i < rows ? x[(size_t)i * ldx + k] : 0.0f;
}

static void micro(int kc, const float *a, const float *b, float *c, size_t ldc, int accumulate) {
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] += a[k * MR + i] * b[k * NR + j];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

static void gemv_nn_fmt(tensor_wfmt f, float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    for (int j = 0; j < n; j++) y[j] = 0;
    for (int kk = 0; kk < k; kk++)
        for (int j = 0; j < n; j++) y[j] = fmaf(x[kk], w_at(b, f, (size_t)kk * ldb + (size_t)j), y[j]);
}
static void gemv_nn_f32(float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    gemv_nn_fmt(TENSOR_WFMT_F32, y, x, b, ldb, n, k);
}
static void gemv_nn_f16(float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    gemv_nn_fmt(TENSOR_WFMT_F16, y, x, b, ldb, n, k);
}
static void gemv_nn_bf16(float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    gemv_nn_fmt(TENSOR_WFMT_BF16, y, x, b, ldb, n, k);
}

static void to_f16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = llava_f32_to_f16(src[i]);
}

static void to_f32_f32(float *dst, const void *src, size_t n) { memcpy(dst, src, n * sizeof(float)); }
static void to_f32_f16(float *dst, const void *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = llava_f16_to_f32(((const uint16_t *)src)[i]);
}
static void to_f32_bf16(float *dst, const void *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = llava_bf16_to_f32(((const uint16_t *)src)[i]);
}

/* ---- rows ---- */

static float sum8(const float *x, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += x[i + j];
    for (; i < n; i++) s[0] += x[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Two passes like torch: the mean first, then the mean of squared deviations. */
static void layernorm(float *y, const float *x, const float *w, const float *b, int n, float eps) {
    float mean = sum8(x, n) / (float)n;
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += (x[i + j] - mean) * (x[i + j] - mean);
    for (; i < n; i++) s[0] += (x[i] - mean) * (x[i] - mean);
    float var = (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) / (float)n;
    float r = 1.0f / sqrtf(var + eps);
    for (i = 0; i < n; i++) {
        float v = (x[i] - mean) * r;
        y[i] = (w ? v * w[i] : v) + (b ? b[i] : 0.0f);
    }
}

static void rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += x[i + j] * x[i + j];
    for (; i < n; i++) s[0] += x[i] * x[i];
    float ms = (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) / (float)n;
    float r = 1.0f / sqrtf(ms + eps);
    for (i = 0; i < n; i++) y[i] = w ? w[i] * (x[i] * r) : x[i] * r;
}

/* A row that is entirely -inf (fully masked) becomes zeros rather than NaN. */
static void softmax(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    float s = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* In double: 1 + erf(x/√2) = erfc(−x/√2) has no cancellation for negative x, and the double
 * argument keeps the tail's relative precision. */
static void gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.5 * (double)x[i] * erfc(-(double)x[i] * M_SQRT1_2));
}

/* 0.5·x·(1 + tanh(u)) written as x·σ(2u), which has no cancellation for negative x. */
static void gelu_tanh(float *x, size_t n) {
    const float c = 0.7978845608028654f; /* √(2/π) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i], u = c * (v + 0.044715f * v * v * v);
        x[i] = v / (1.0f + expf(-2.0f * u));
    }
}

static void quick_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

static void silu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

static void silu_mul(float *g, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * up[i];
}

static void rope(float *x, const float *cs, const float *sn, int h) {
    for (int i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * cs[i] - b * sn[i];
        x[i + h] = b * cs[i] + a * sn[i];
    }
}

/* ---- half-precision GEMM: the arithmetic of the AVX512-FP16 one, in C ---- */

#define HNR 16

/* v rounded to the nearest f16 (ties to even; past 65504 to inf), as a double. */
static double round_f16(double v) {
    double a = fabs(v);
    if (!(a < INFINITY) || a == 0) return v;
    int e;
    frexp(a, &e);                  /* a in [2^(e-1), 2^e): 11 significant bits step 2^(e-11) */
    int q = e - 11 < -24 ? -24 : e - 11; /* below 2^-14 the step is the subnormals' 2^-24 */
    double r = ldexp(nearbyint(ldexp(v, -q)), q);
    return fabs(r) > 65504.0 ? copysign(INFINITY, v) : r;
}

static void pack_fmt_half(tensor_wfmt f, uint16_t *dst, const void *w, size_t ldw, int n, int kc) {
    for (int k = 0; k < kc; k++)
        for (int j = 0; j < HNR; j++)
            dst[(size_t)k * HNR + j] = j < n ? llava_f32_to_f16(w_at(w, f, (size_t)j * ldw + (size_t)k)) : 0;
}
static void pack_f32_half(uint16_t *d, const void *w, size_t ldw, int n, int kc) { pack_fmt_half(TENSOR_WFMT_F32, d, w, ldw, n, kc); }
static void pack_f16_half(uint16_t *d, const void *w, size_t ldw, int n, int kc) { pack_fmt_half(TENSOR_WFMT_F16, d, w, ldw, n, kc); }
static void pack_bf16_half(uint16_t *d, const void *w, size_t ldw, int n, int kc) { pack_fmt_half(TENSOR_WFMT_BF16, d, w, ldw, n, kc); }

/* On the magnitude bits: non-negative floats order as their patterns, NaNs above inf's. */
static float absmax_f32(const float *x, size_t n) {
    uint32_t mb = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, x + i, sizeof v);
        v &= 0x7fffffffu;
        mb = v > mb ? v : mb;
    }
    float f;
    memcpy(&f, &mb, sizeof f);
    return f;
}

static void to_half_words(uint32_t *dst, const float *x, float scale, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t h = llava_f32_to_f16(x[i] * scale);
        dst[i] = h | h << 16;
    }
}

/* a·b of two f16 is exact in double and so, but for far-apart magnitudes, is the sum with h:
 * rounding that once to f16 is the fused multiply-add of the instruction. */
static void micro_half(int kc, const uint32_t *a, const uint16_t *b, float *c, size_t ldc,
                       const float *unscale, int accumulate) {
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < HNR; j++) {
            float t = 0;
            for (int k0 = 0; k0 < kc; k0 += TENSOR_HALF_KB) {
                int ke = kc - k0 < TENSOR_HALF_KB ? kc : k0 + TENSOR_HALF_KB;
                double h = 0;
                for (int k = k0; k < ke; k++)
                    h = round_f16((double)llava_f16_to_f32((uint16_t)a[(size_t)k * MR + i]) *
                                      (double)llava_f16_to_f32(b[(size_t)k * HNR + j]) + h);
                t = k0 > 0 ? fmaf((float)h, unscale[i], t) : (float)h * unscale[i];
            }
            float *cij = c + (size_t)i * ldc + j;
            *cij = accumulate ? *cij + t : t;
        }
}

/* ---- machine probes ---- */

static float read_sum(const float *x, size_t n) {
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += x[i + j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static double fma_loop(long iters) {
    float a[8] = {1, 1, 1, 1, 1, 1, 1, 1}, m = 0.999999f, c = 1e-7f;
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < 8; j++) a[j] = a[j] * m + c;
    volatile float sink = a[0] + a[7];
    (void)sink;
    return 2.0 * 8.0 * (double)iters;
}

const tensor_kernels tensor_kernels_scalar = {
    .isa = TENSOR_ISA_SCALAR,
    .gemv = {gemv_f32, gemv_f16, gemv_bf16},
    .mr = MR,
    .nr = NR,
    .pack_w = {pack_f32, pack_f16, pack_bf16},
    .pack_b = {pack_b_f32, pack_b_f16, pack_b_bf16},
    .pack_x = pack_x,
    .micro = micro,
    .gemv_nn = {gemv_nn_f32, gemv_nn_f16, gemv_nn_bf16},
    .to_f16 = to_f16,
    .to_f32 = {to_f32_f32, to_f32_f16, to_f32_bf16},
    .absmax_f32 = absmax_f32,
    .layernorm = layernorm,
    .rmsnorm = rmsnorm,
    .softmax = softmax,
    .gelu = gelu,
    .gelu_tanh = gelu_tanh,
    .quick_gelu = quick_gelu,
    .silu = silu,
    .silu_mul = silu_mul,
    .rope = rope,
    .read_sum = read_sum,
    .fma_loop = fma_loop,
    .hnr = HNR,
    .pack_w_half = {pack_f32_half, pack_f16_half, pack_bf16_half},
    .to_half_words = to_half_words,
    .micro_half = micro_half,
};
