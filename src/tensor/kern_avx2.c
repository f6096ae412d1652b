/* The AVX2 + FMA + F16C path: decode products with 4 weight rows in flight, a 6 × 16
 * register-blocked GEMM microkernel over packed f32 panels, and vector row kernels. Every
 * function carries its own target attribute; isa.c selects the table after checking the CPU. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "tensor/kernels.h"

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

#define MR 6
#define NR 16
/* Decode products read weights this many bytes ahead of use (see kern_avx512.c). */
#define PFD 1024

INL float w_scalar(const void *p, tensor_wfmt f, size_t i) {
    switch (f) {
    case TENSOR_WFMT_F16: return llava_f16_to_f32(((const uint16_t *)p)[i]);
    case TENSOR_WFMT_BF16: return llava_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

INL __m256 load8(const void *p, tensor_wfmt f) {
    switch (f) {
    case TENSOR_WFMT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    case TENSOR_WFMT_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    default: return _mm256_loadu_ps(p);
    }
}

INL size_t esz(tensor_wfmt f) { return f == TENSOR_WFMT_F32 ? 4 : 2; }

INL float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- decode product ---- */

INL void dot_block(tensor_wfmt f, int R, int MM, float *y, size_t ldy, const float *x, size_t ldx,
                   const char *w, size_t row_bytes, int K) {
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[m][r] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            _mm_prefetch(w + (size_t)r * row_bytes + (size_t)k * esz(f) + PFD, _MM_HINT_T0);
            wv[r] = load8(w + (size_t)r * row_bytes + (size_t)k * esz(f), f);
        }
#pragma GCC unroll 4
        for (int m = 0; m < MM; m++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)m * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[m][r] = _mm256_fmadd_ps(wv[r], xv, acc[m][r]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MM; m++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            float s = hsum8(acc[m][r]);
            for (int kk = k; kk < K; kk++)
                s += x[(size_t)m * ldx + kk] * w_scalar(w + (size_t)r * row_bytes, f, (size_t)kk);
            y[(size_t)m * ldy + r] = s;
        }
}

INL void gemv_fmt(tensor_wfmt f, float *y, size_t ldy, const float *x, size_t ldx, const void *w,
                  size_t ldw, int M, int N, int K) {
    size_t row_bytes = ldw * esz(f);
    const char *wb = w;
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const char *wr = wb + (size_t)n * row_bytes;
        int m = 0;
        for (; m + 2 <= M; m += 2) dot_block(f, 4, 2, y + (size_t)m * ldy + n, ldy, x + (size_t)m * ldx, ldx, wr, row_bytes, K);
        if (m < M) dot_block(f, 4, 1, y + (size_t)m * ldy + n, ldy, x + (size_t)m * ldx, ldx, wr, row_bytes, K);
    }
    for (; n < N; n++) {
        const char *wr = wb + (size_t)n * row_bytes;
        for (int m = 0; m < M; m++)
            dot_block(f, 1, 1, y + (size_t)m * ldy + n, ldy, x + (size_t)m * ldx, ldx, wr, row_bytes, K);
    }
}

static TGT void gemv_f32(float *y, size_t ldy, const float *x, size_t ldx, const void *w,
                         size_t ldw, int M, int N, int K) {
    gemv_fmt(TENSOR_WFMT_F32, y, ldy, x, ldx, w, ldw, M, N, K);
}
static TGT void gemv_f16(float *y, size_t ldy, const float *x, size_t ldx, const void *w,
                         size_t ldw, int M, int N, int K) {
    gemv_fmt(TENSOR_WFMT_F16, y, ldy, x, ldx, w, ldw, M, N, K);
}
static TGT void gemv_bf16(float *y, size_t ldy, const float *x, size_t ldx, const void *w,
                          size_t ldw, int M, int N, int K) {
    gemv_fmt(TENSOR_WFMT_BF16, y, ldy, x, ldx, w, ldw, M, N, K);
}

/* ---- GEMM: packing and microkernel ---- */

INL void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x20);
        r[4 + q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x31);
    }
}

/* dst[k*NR + j] = W[j, k] for an 8-row group of the panel (rows < 8 are zero-filled). */
INL void pack_group(tensor_wfmt f, float *dst, const char *w, size_t row_bytes, int rows, int kc) {
    int k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            r[j] = j < rows ? load8(w + (size_t)j * row_bytes + (size_t)k * esz(f), f) : _mm256_setzero_ps();
        transpose8(r);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (size_t)(k + i) * NR, r[i]);
    }
    for (; k < kc; k++)
        for (int j = 0; j < 8; j++)
            dst[(size_t)k * NR + j] = j < rows ? w_scalar(w + (size_t)j * row_bytes, f, (size_t)k) : 0.0f;
}

INL void pack_fmt(tensor_wfmt f, float *dst, const void *w, size_t ldw, int n, int kc) {
    size_t row_bytes = ldw * esz(f);
    pack_group(f, dst, w, row_bytes, n < 8 ? n : 8, kc);
    if (n > 8) pack_group(f, dst + 8, (const char *)w + 8 * row_bytes, row_bytes, n - 8, kc);
    else pack_group(f, dst + 8, w, row_bytes, 0, kc);
}

static TGT void pack_f32(float *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt(TENSOR_WFMT_F32, dst, w, ldw, n, kc);
}
static TGT void pack_f16(float *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt(TENSOR_WFMT_F16, dst, w, ldw, n, kc);
}
static TGT void pack_bf16(float *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt(TENSOR_WFMT_BF16, dst, w, ldw, n, kc);
}

INL void pack_b_fmt(tensor_wfmt f, float *dst, const void *b, size_t ldb, int n, int kc) {
    for (int k = 0; k < kc; k++) {
        const char *src = (const char *)b + (size_t)k * ldb * esz(f);
        float *d = dst + (size_t)k * NR;
        if (n == NR) {
            _mm256_storeu_ps(d, load8(src, f));
            _mm256_storeu_ps(d + 8, load8(src + 8 * esz(f), f));
        } else {
            for (int j = 0; j < NR; j++) d[j] = j < n ? w_scalar(src, f, (size_t)j) : 0.0f;
        }
    }
}
static TGT void pack_b_f32(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_F32, d, b, ldb, n, kc); }
static TGT void pack_b_f16(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_F16, d, b, ldb, n, kc); }
static TGT void pack_b_bf16(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_BF16, d, b, ldb, n, kc); }

/* 6 rows of x, 8 columns at a time through an 8 × 8 transpose (two zero rows), storing the
 * 6 meaningful lanes of each column; the last columns one by one. */
static TGT void pack_x(float *dst, const float *x, size_t ldx, int rows, int kc) {
    const __m256i keep6 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    int k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) r[i] = i < rows ? _mm256_loadu_ps(x + (size_t)i * ldx + k) : _mm256_setzero_ps();
        transpose8(r);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) _mm256_maskstore_ps(dst + (size_t)(k + i) * MR, keep6, r[i]);
    }
    for (; k < kc; k++)
        for (int i = 0; i < MR; i++) dst[(size_t)k * MR + i] = i < rows ? x[(size_t)i * ldx + k] : 0.0f;
}

static TGT void micro(int kc, const float *a, const float *b, float *c, size_t ldc, int accumulate) {
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b + (size_t)k * NR), b1 = _mm256_loadu_ps(b + (size_t)k * NR + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + (size_t)k * MR + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        float *ci = c + (size_t)i * ldc;
        if (accumulate) {
            acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(ci));
            acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(ci + 8));
        }
        _mm256_storeu_ps(ci, acc[i][0]);
        _mm256_storeu_ps(ci + 8, acc[i][1]);
    }
}

/* Rows of B are prefetched this many f32 rows' bytes ahead in gemv_nn (8 rows of f16). */
#define NN_AHEAD 4

/* 64 columns at a time in 8 accumulators, then 8, then single columns. */
INL void gemv_nn_fmt(tensor_wfmt f, float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    const char *bb = b;
    size_t row_bytes = ldb * esz(f);
    int j = 0;
    for (; j + 64 <= n; j += 64) {
        __m256 acc[8];
        for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
        for (int kk = 0; kk < k; kk++) {
            const char *r = bb + (size_t)kk * row_bytes + (size_t)j * esz(f);
            for (int i = 0; i < (int)esz(f); i++) _mm_prefetch(r + NN_AHEAD * 4 / esz(f) * row_bytes + 64 * i, _MM_HINT_T0);
            __m256 xv = _mm256_set1_ps(x[kk]);
            for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(xv, load8(r + 8 * i * esz(f), f), acc[i]);
        }
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(y + j + 8 * i, acc[i]);
    }
    for (; j + 8 <= n; j += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int kk = 0; kk < k; kk++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(x[kk]), load8(bb + ((size_t)kk * ldb + j) * esz(f), f), acc);
        _mm256_storeu_ps(y + j, acc);
    }
    for (; j < n; j++) {
        float acc = 0;
        for (int kk = 0; kk < k; kk++) acc = fmaf(x[kk], w_scalar(b, f, (size_t)kk * ldb + j), acc);
        y[j] = acc;
    }
}
static TGT void gemv_nn_f32(float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    gemv_nn_fmt(TENSOR_WFMT_F32, y, x, b, ldb, n, k);
}
static TGT void gemv_nn_f16(float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    gemv_nn_fmt(TENSOR_WFMT_F16, y, x, b, ldb, n, k);
}
static TGT void gemv_nn_bf16(float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    gemv_nn_fmt(TENSOR_WFMT_BF16, y, x, b, ldb, n, k);
}

static TGT void to_f16(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = llava_f32_to_f16(src[i]);
}

INL void to_f32_fmt(tensor_wfmt f, float *dst, const void *src, size_t n) {
    const char *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(s + i * esz(f), f));
    for (; i < n; i++) dst[i] = w_scalar(src, f, i);
}
static TGT void to_f32_f32(float *d, const void *s, size_t n) { to_f32_fmt(TENSOR_WFMT_F32, d, s, n); }
static TGT void to_f32_f16(float *d, const void *s, size_t n) { to_f32_fmt(TENSOR_WFMT_F16, d, s, n); }
static TGT void to_f32_bf16(float *d, const void *s, size_t n) { to_f32_fmt(TENSOR_WFMT_BF16, d, s, n); }

/* On the magnitude bits (unsigned max), as the scalar one: the same value, NaNs included. */
static TGT float absmax_f32(const float *x, size_t n) {
    __m256i mx = _mm256_setzero_si256(), mask = _mm256_set1_epi32(0x7fffffff);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), mask));
    if (i < n) { /* the tail through a masked load: lanes past n read as 0 */
        __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_maskload_epi32((const int *)(x + i), live), mask));
    }
    uint32_t lanes[8], mb = 0;
    _mm256_storeu_si256((__m256i *)lanes, mx);
    for (int j = 0; j < 8; j++) mb = lanes[j] > mb ? lanes[j] : mb;
    float f;
    memcpy(&f, &mb, sizeof f);
    return f;
}

/* ---- vector math ---- */

/* e^x to about 1 ulp (Cephes polynomial); 2^n applied as two exact halves so the whole normal
 * range is covered; below -88 gives 0 (the true value is subnormal), above 88.72 inf, NaN stays
 * NaN (max/min return their second operand for NaN). */
INL __m256 exp8(__m256 x) {
    __m256 xc = _mm256_max_ps(_mm256_set1_ps(-88.0f), x);
    xc = _mm256_min_ps(_mm256_set1_ps(88.72f), xc);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    __m256 res = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    res = _mm256_blendv_ps(res, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-88.0f), _CMP_LT_OQ));
    return _mm256_blendv_ps(res, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(88.72f), _CMP_GT_OQ));
}

INL __m256 x_sigmoid(__m256 x, float k) {
    __m256 e = exp8(_mm256_mul_ps(x, _mm256_set1_ps(-k)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* 1 + erf(x/√2), as in the AVX-512 path (erfcc with z² split into hi + lo). */
INL __m256 one_plus_erf(__m256 x) {
    __m256 z = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(0.17087277f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
    /* z² = x²/2 exactly as hi + lo (x² split by an FMA, then halved), so the rounding of z
     * itself does not reach the exponent. */
    __m256 hi = _mm256_mul_ps(x, x), lo = _mm256_fmsub_ps(x, x, hi);
    hi = _mm256_mul_ps(hi, _mm256_set1_ps(-0.5f));
    lo = _mm256_mul_ps(lo, _mm256_set1_ps(-0.5f));
    __m256 erfc = _mm256_mul_ps(t, _mm256_mul_ps(exp8(_mm256_add_ps(p, lo)), exp8(hi)));
    erfc = _mm256_blendv_ps(erfc, _mm256_setzero_ps(), _mm256_cmp_ps(z, _mm256_set1_ps(10.0f), _CMP_GT_OQ));
    __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc), erfc, neg);
}

/* Loads of the last, partial vector of a row: the missing lanes read as `fill`. */
INL __m256 load_part(const float *p, size_t left, float fill) {
    float tmp[8];
    for (size_t i = 0; i < 8; i++) tmp[i] = i < left ? p[i] : fill;
    return _mm256_loadu_ps(tmp);
}
INL void store_part(float *p, __m256 v, size_t left) {
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (size_t i = 0; i < left; i++) p[i] = tmp[i];
}

/* ---- rows ---- */

static TGT void layernorm(float *y, const float *x, const float *w, const float *b, int n, float eps) {
    __m256 s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(x + i));
    if (i < n) s = _mm256_add_ps(s, load_part(x + i, (size_t)(n - i), 0.0f));
    float mean = hsum8(s) / (float)n;
    __m256 mv = _mm256_set1_ps(mean), v = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
        v = _mm256_fmadd_ps(d, d, v);
    }
    if (i < n) {
        __m256 d = _mm256_sub_ps(load_part(x + i, (size_t)(n - i), mean), mv);
        v = _mm256_fmadd_ps(d, d, v);
    }
    float r = 1.0f / sqrtf(hsum8(v) / (float)n + eps);
    __m256 rv = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 o = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
        if (w) o = _mm256_mul_ps(o, _mm256_loadu_ps(w + i));
        if (b) o = _mm256_add_ps(o, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(y + i, o);
    }
    for (; i < n; i++) {
        float o = (x[i] - mean) * r;
        if (w) o *= w[i];
        if (b) o += b[i];
        y[i] = o;
    }
}

static TGT void rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    __m256 s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        s = _mm256_fmadd_ps(v, v, s);
    }
    if (i < n) {
        __m256 v = load_part(x + i, (size_t)(n - i), 0.0f);
        s = _mm256_fmadd_ps(v, v, s);
    }
    float r = 1.0f / sqrtf(hsum8(s) / (float)n + eps);
    __m256 rv = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 o = _mm256_mul_ps(_mm256_loadu_ps(x + i), rv);
        if (w) o = _mm256_mul_ps(_mm256_loadu_ps(w + i), o);
        _mm256_storeu_ps(y + i, o);
    }
    for (; i < n; i++) y[i] = w ? w[i] * (x[i] * r) : x[i] * r;
}

static TGT void softmax(float *x, int n) {
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
    if (i < n) mx = _mm256_max_ps(mx, load_part(x + i, (size_t)(n - i), -INFINITY));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float m = _mm_cvtss_f32(m4);
    if (m == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    __m256 mv = _mm256_set1_ps(m), s = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        s = _mm256_add_ps(s, e);
        _mm256_storeu_ps(x + i, e);
    }
    if (i < n) {
        __m256 e = exp8(_mm256_sub_ps(load_part(x + i, (size_t)(n - i), -INFINITY), mv));
        s = _mm256_add_ps(s, e);
        store_part(x + i, e, (size_t)(n - i));
    }
    __m256 inv = _mm256_set1_ps(1.0f / hsum8(s));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= _mm256_cvtss_f32(inv);
}

/* Applies op to x[0..n) 8 at a time, the tail through a padded copy. */
#define EACH8(x, n, OP)                                                  \
    do {                                                                 \
        size_t i_ = 0;                                                   \
        for (; i_ + 8 <= (n); i_ += 8) {                                 \
            __m256 v = _mm256_loadu_ps((x) + i_);                        \
            _mm256_storeu_ps((x) + i_, OP);                              \
        }                                                                \
        if (i_ < (n)) {                                                  \
            __m256 v = load_part((x) + i_, (n) - i_, 0.0f);              \
            store_part((x) + i_, OP, (n) - i_);                          \
        }                                                                \
    } while (0)

static TGT void gelu(float *x, size_t n) {
    EACH8(x, n, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), one_plus_erf(v)));
}

static TGT void gelu_tanh(float *x, size_t n) {
    EACH8(x, n,
          _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f),
                                         exp8(_mm256_mul_ps(_mm256_set1_ps(-2.0f * 0.7978845608028654f),
                                                            _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v),
                                                                            _mm256_mul_ps(v, v), v))))));
}

static TGT void quick_gelu(float *x, size_t n) { EACH8(x, n, x_sigmoid(v, 1.702f)); }
static TGT void silu(float *x, size_t n) { EACH8(x, n, x_sigmoid(v, 1.0f)); }

static TGT void silu_mul(float *g, const float *up, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(g + i, _mm256_mul_ps(x_sigmoid(_mm256_loadu_ps(g + i), 1.0f), _mm256_loadu_ps(up + i)));
    if (i < n)
        store_part(g + i, _mm256_mul_ps(x_sigmoid(load_part(g + i, n - i, 0.0f), 1.0f), load_part(up + i, n - i, 0.0f)), n - i);
}

static TGT void rope(float *x, const float *cs, const float *sn, int h) {
    int i = 0;
    for (; i + 8 <= h; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + h + i);
        __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
        _mm256_storeu_ps(x + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
        _mm256_storeu_ps(x + h + i, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
    }
    for (; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = fmaf(a, cs[i], -(b * sn[i]));
        x[i + h] = fmaf(b, cs[i], a * sn[i]);
    }
}

/* ---- machine probes ---- */

static TGT float read_sum(const float *x, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(x + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(x + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(x + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(x + i + 24));
    }
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += x[i];
    return s;
}

static TGT double fma_loop(long iters) {
    __m256 a[12];
    __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
    for (int j = 0; j < 12; j++) a[j] = _mm256_set1_ps((float)j);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], m, c);
    }
    __m256 s = a[0];
#pragma GCC unroll 12
    for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, a[j]);
    volatile float sink = hsum8(s);
    (void)sink;
    return 2.0 * 8.0 * 12.0 * (double)iters;
}

const tensor_kernels tensor_kernels_avx2 = {
    .isa = TENSOR_ISA_AVX2,
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
};
#endif
