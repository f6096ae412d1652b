/* The AVX-512 path (F, BW, DQ, VL): decode products with 4 weight rows in flight, a 14 × 32
 * register-blocked GEMM microkernel over packed f32 panels, and vector row kernels. Every
 * function carries its own target attribute, so the file builds without -mavx512f and runs only
 * after isa.c has checked the CPU. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "tensor/kernels.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

#define MR 14
#define NR 32
/* Decode products read weights this many bytes ahead of use (a prefetch per row stream): the
 * memory is latency-bound per core, and the hardware prefetcher alone leaves it idle at the start
 * of each 4 KiB page. */
#define PFD 1024

/* ---- loads of 16 weights as f32 (n < 16 elements when masked) ---- */

INL __m512 load16(const void *p, tensor_wfmt f) {
    switch (f) {
    case TENSOR_WFMT_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    case TENSOR_WFMT_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    default: return _mm512_loadu_ps(p);
    }
}

INL __m512 load16_mask(const void *p, tensor_wfmt f, __mmask16 m) {
    switch (f) {
    case TENSOR_WFMT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    case TENSOR_WFMT_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    default: return _mm512_maskz_loadu_ps(m, p);
    }
}

INL size_t esz(tensor_wfmt f) { return f == TENSOR_WFMT_F32 ? 4 : 2; }

/* ---- decode product ---- */

/* R weight rows against MM rows of x: out[m][r]. R, MM compile-time after inlining. */
INL void dot_block(tensor_wfmt f, int R, int MM, float *y, size_t ldy, const float *x, size_t ldx,
                   const char *w, size_t row_bytes, int K) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[m][r] = _mm512_setzero_ps();
    /* Rows shorter than the distance (keys of an attention head: 256-512 bytes) are read one
     * after another, so the distance spans rows: twice as far keeps enough of them in flight
     * (decode attention over an f16 cache, `bench/decode_parts`: 6 of 7 alternated pairs faster,
     * about 5 %). */
    size_t pfd = row_bytes < PFD ? 2 * PFD : PFD;
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            _mm_prefetch(w + (size_t)r * row_bytes + (size_t)k * esz(f) + pfd, _MM_HINT_T0);
            wv[r] = load16(w + (size_t)r * row_bytes + (size_t)k * esz(f), f);
        }
#pragma GCC unroll 4
        for (int m = 0; m < MM; m++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)m * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
        }
    }
    if (k < K) {
        __mmask16 mk = (__mmask16)((1u << (K - k)) - 1);
        __m512 wv[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = load16_mask(w + (size_t)r * row_bytes + (size_t)k * esz(f), f, mk);
#pragma GCC unroll 4
        for (int m = 0; m < MM; m++) {
            __m512 xv = _mm512_maskz_loadu_ps(mk, x + (size_t)m * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MM; m++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) y[(size_t)m * ldy + r] = _mm512_reduce_add_ps(acc[m][r]);
}

INL void gemv_fmt(tensor_wfmt f, float *y, size_t ldy, const float *x, size_t ldx, const void *w,
                  size_t ldw, int M, int N, int K) {
    size_t row_bytes = ldw * esz(f);
    const char *wb = w;
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const char *wr = wb + (size_t)n * row_bytes;
        int m = 0;
        for (; m + 4 <= M; m += 4) dot_block(f, 4, 4, y + (size_t)m * ldy + n, ldy, x + (size_t)m * ldx, ldx, wr, row_bytes, K);
        switch (M - m) {
        case 3: dot_block(f, 4, 3, y + (size_t)m * ldy + n, ldy, x + (size_t)m * ldx, ldx, wr, row_bytes, K); break;
        case 2: dot_block(f, 4, 2, y + (size_t)m * ldy + n, ldy, x + (size_t)m * ldx, ldx, wr, row_bytes, K); break;
        case 1: dot_block(f, 4, 1, y + (size_t)m * ldy + n, ldy, x + (size_t)m * ldx, ldx, wr, row_bytes, K); break;
        default: break;
        }
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

/* 16 rows × 16 columns of f32 in registers, transposed in place. */
INL void transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    /* Now r[4i + q] holds, per 128-bit lane L, row (4i..4i+3) element (4L + q). Gather lanes. */
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        __m512 a = r[q], b = r[4 + q], c = r[8 + q], d = r[12 + q];
        __m512 ab0 = _mm512_shuffle_f32x4(a, b, 0x44), ab1 = _mm512_shuffle_f32x4(a, b, 0xee);
        __m512 cd0 = _mm512_shuffle_f32x4(c, d, 0x44), cd1 = _mm512_shuffle_f32x4(c, d, 0xee);
        t[q] = _mm512_shuffle_f32x4(ab0, cd0, 0x88);      /* lane 0 of each: column q */
        t[4 + q] = _mm512_shuffle_f32x4(ab0, cd0, 0xdd);  /* lane 1: column 4 + q */
        t[8 + q] = _mm512_shuffle_f32x4(ab1, cd1, 0x88);  /* lane 2: column 8 + q */
        t[12 + q] = _mm512_shuffle_f32x4(ab1, cd1, 0xdd); /* lane 3: column 12 + q */
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* dst[k*NR + j] = W[j, k] for a 16-row half (j0 = 0 or 16) of the panel. */
INL void pack_half(tensor_wfmt f, float *dst, const char *w, size_t row_bytes, int rows, int kc) {
    int k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 r[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            r[j] = j < rows ? load16(w + (size_t)j * row_bytes + (size_t)k * esz(f), f) : _mm512_setzero_ps();
        transpose16(r);
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (size_t)(k + i) * NR, r[i]);
    }
    if (k < kc) {
        __mmask16 mk = (__mmask16)((1u << (kc - k)) - 1);
        __m512 r[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            r[j] = j < rows ? load16_mask(w + (size_t)j * row_bytes + (size_t)k * esz(f), f, mk) : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < kc - k; i++) _mm512_storeu_ps(dst + (size_t)(k + i) * NR, r[i]);
    }
}

INL void pack_fmt(tensor_wfmt f, float *dst, const void *w, size_t ldw, int n, int kc) {
    size_t row_bytes = ldw * esz(f);
    pack_half(f, dst, w, row_bytes, n < 16 ? n : 16, kc);
    if (n > 16) pack_half(f, dst + 16, (const char *)w + 16 * row_bytes, row_bytes, n - 16, kc);
    else pack_half(f, dst + 16, w, row_bytes, 0, kc); /* zero columns */
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
    __mmask16 m0 = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
    __mmask16 m1 = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1 : 0);
    for (int k = 0; k < kc; k++) {
        const char *src = (const char *)b + (size_t)k * ldb * esz(f);
        _mm512_storeu_ps(dst + (size_t)k * NR, load16_mask(src, f, m0));
        _mm512_storeu_ps(dst + (size_t)k * NR + 16, load16_mask(src + 16 * esz(f), f, m1));
    }
}
static TGT void pack_b_f32(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_F32, d, b, ldb, n, kc); }
static TGT void pack_b_f16(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_F16, d, b, ldb, n, kc); }
static TGT void pack_b_bf16(float *d, const void *b, size_t ldb, int n, int kc) { pack_b_fmt(TENSOR_WFMT_BF16, d, b, ldb, n, kc); }

/* 14 rows of x, 16 columns at a time: two zero rows pad the block to a 16 × 16 transpose, and
 * each transposed column (one k, all rows) is stored as its 14 meaningful lanes. */
static TGT void pack_x(float *dst, const float *x, size_t ldx, int rows, int kc) {
    for (int k = 0; k < kc; k += 16) {
        __mmask16 mk = (__mmask16)(kc - k >= 16 ? 0xffff : (1u << (kc - k)) - 1);
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            r[i] = i < rows ? _mm512_maskz_loadu_ps(mk, x + (size_t)i * ldx + k) : _mm512_setzero_ps();
        transpose16(r);
        int n = kc - k < 16 ? kc - k : 16;
        for (int i = 0; i < n; i++) _mm512_mask_storeu_ps(dst + (size_t)(k + i) * MR, (__mmask16)0x3fff, r[i]);
    }
}

static TGT void micro(int kc, const float *a, const float *b, float *c, size_t ldc, int accumulate) {
    /* The C tile is read and written once per K block and usually lives in L3 or memory:
     * fetch it now, behind the k loop, rather than stall on it at the end. */
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + (size_t)i * ldc + 16), _MM_HINT_T0);
    }
    __m512 acc[MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b + (size_t)k * NR), b1 = _mm512_loadu_ps(b + (size_t)k * NR + 16);
        /* The W panel streams from L2 (the x panel stays in L1): ask for it a few k ahead. */
        _mm_prefetch((const char *)(b + (size_t)(k + 6) * NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (size_t)(k + 6) * NR + 16), _MM_HINT_T0);
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[(size_t)k * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        float *ci = c + (size_t)i * ldc;
        if (accumulate) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(ci));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(ci + 16));
        }
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
    }
}

/* ---- half-precision GEMM (AVX512-FP16) ----
 *
 * 14 rows of x × 64 columns (two registers of 32 f16 lanes) in 28 f16 accumulators. The f16
 * multiply-adds are written as instructions (vfmadd231ph on the f32-typed registers holding the
 * f16 lanes): the compilers this builds with do not all have the FP16 intrinsics, while every
 * assembler in Debian 12 knows the instruction. Runs only when isa.c found AVX512-FP16. */

#define HNR 64
#define NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* 16 rows of W (row j0 + j), 16 k at a time through the f32 transpose, stored as 16 f16 of each
 * k's column slice dst[k*HNR + j]. */
INL void pack_quarter_half(tensor_wfmt f, uint16_t *dst, const char *w, size_t row_bytes, int rows, int kc) {
    for (int k = 0; k < kc; k += 16) {
        __mmask16 mk = (__mmask16)(kc - k >= 16 ? 0xffff : (1u << (kc - k)) - 1);
        __m512 r[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            r[j] = j < rows ? load16_mask(w + (size_t)j * row_bytes + (size_t)k * esz(f), f, mk) : _mm512_setzero_ps();
        transpose16(r);
        int n = kc - k < 16 ? kc - k : 16;
        for (int i = 0; i < n; i++)
            _mm256_storeu_si256((__m256i *)(dst + (size_t)(k + i) * HNR), _mm512_cvtps_ph(r[i], NEAREST));
    }
}

INL void pack_fmt_half(tensor_wfmt f, uint16_t *dst, const void *w, size_t ldw, int n, int kc) {
    size_t row_bytes = ldw * esz(f);
    for (int q = 0; q < 4; q++) {
        int rows = n - 16 * q;
        rows = rows < 0 ? 0 : rows > 16 ? 16 : rows;
        pack_quarter_half(f, dst + 16 * q, (const char *)w + (size_t)(rows ? 16 * q : 0) * row_bytes, row_bytes, rows, kc);
    }
}

static TGT void pack_f32_half(uint16_t *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt_half(TENSOR_WFMT_F32, dst, w, ldw, n, kc);
}
static TGT void pack_f16_half(uint16_t *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt_half(TENSOR_WFMT_F16, dst, w, ldw, n, kc);
}
static TGT void pack_bf16_half(uint16_t *dst, const void *w, size_t ldw, int n, int kc) {
    pack_fmt_half(TENSOR_WFMT_BF16, dst, w, ldw, n, kc);
}

/* As the scalar one, on the magnitude bits (unsigned max): the same value, NaNs included. */
static TGT float absmax_f32(const float *x, size_t n) {
    __m512i mx = _mm512_setzero_si512(), mask = _mm512_set1_epi32(0x7fffffff);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_loadu_si512(x + i), mask));
    if (i < n)
        mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32((__mmask16)((1u << (n - i)) - 1), x + i), mask));
    uint32_t mb = _mm512_reduce_max_epu32(mx);
    float f;
    memcpy(&f, &mb, sizeof f);
    return f;
}

static TGT void to_half_words(uint32_t *dst, const float *x, float scale, size_t n) {
    __m512 s = _mm512_set1_ps(scale);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m512i h = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), s), NEAREST));
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_or_si512(h, _mm512_slli_epi32(h, 16)));
    }
}

/* f16 lanes of v (32) as two f32 registers, times u, into c[0..31]. */
INL void flush_half(float *c, __m512 v, __m512 u, int add) {
    __m512i bits = _mm512_castps_si512(v);
    __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));
    __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1));
    if (add) {
        lo = _mm512_fmadd_ps(lo, u, _mm512_loadu_ps(c));
        hi = _mm512_fmadd_ps(hi, u, _mm512_loadu_ps(c + 16));
    } else {
        lo = _mm512_mul_ps(lo, u);
        hi = _mm512_mul_ps(hi, u);
    }
    _mm512_storeu_ps(c, lo);
    _mm512_storeu_ps(c + 16, hi);
}

/* Each run's sums go into a contiguous f32 tile that stays in L1, and C (rows a whole row of y
 * apart, which map to the same L1 sets) is read and written once per call. */
static TGT void micro_half(int kc, const uint32_t *a, const uint16_t *b, float *c, size_t ldc,
                           const float *unscale, int accumulate) {
    float t[MR * HNR] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < kc; k0 += TENSOR_HALF_KB) {
        int ke = kc - k0 < TENSOR_HALF_KB ? kc : k0 + TENSOR_HALF_KB;
        __m512 acc[MR][2];
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        for (int k = k0; k < ke; k++) {
            __m512 b0 = _mm512_loadu_ps((const float *)(b + (size_t)k * HNR));
            __m512 b1 = _mm512_loadu_ps((const float *)(b + (size_t)k * HNR + 32));
            _mm_prefetch((const char *)(b + (size_t)(k + 6) * HNR), _MM_HINT_T0);
            _mm_prefetch((const char *)(b + (size_t)(k + 6) * HNR + 32), _MM_HINT_T0);
            /* and the next tile (the one after this in the panels) into L2: on a W block's first
             * row panel the tiles come from memory, faster than the hardware prefetcher fetches
             * them (0.94 of the time on three of the tower's four shapes, 2 threads) */
            _mm_prefetch((const char *)(b + (size_t)(k + kc) * HNR), _MM_HINT_T1);
            _mm_prefetch((const char *)(b + (size_t)(k + kc) * HNR + 32), _MM_HINT_T1);
#pragma GCC unroll 14
            for (int i = 0; i < MR; i++) {
                __m512 ai = _mm512_set1_ps(((const float *)a)[(size_t)k * MR + i]);
                __asm__("vfmadd231ph %2, %3, %0\n\tvfmadd231ph %2, %4, %1"
                        : "+v"(acc[i][0]), "+v"(acc[i][1])
                        : "v"(ai), "v"(b0), "v"(b1));
            }
        }
        int add = k0 > 0;
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            __m512 u = _mm512_set1_ps(unscale[i]);
            flush_half(t + i * HNR, acc[i][0], u, add);
            flush_half(t + i * HNR + 32, acc[i][1], u, add);
        }
    }
    for (int i = 0; i < MR; i++) {
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 4
        for (int j = 0; j < HNR; j += 16) {
            __m512 v = _mm512_load_ps(t + i * HNR + j);
            if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(ci + j));
            _mm512_storeu_ps(ci + j, v);
        }
    }
}

/* 12 independent chains of f16 FMAs, 64 flops each. */
static TGT double fma_loop_half(long iters) {
    __m512 a[12];
    __m512 m = _mm512_castsi512_ps(_mm512_set1_epi16(0x3bff)), c = _mm512_castsi512_ps(_mm512_set1_epi16(0x0001));
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm512_castsi512_ps(_mm512_set1_epi16((short)(0x3c00 + i)));
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) __asm__("vfmadd213ph %2, %1, %0" : "+v"(a[i]) : "v"(m), "v"(c));
    }
    __m512 s = a[0];
#pragma GCC unroll 11
    for (int i = 1; i < 12; i++) s = _mm512_or_ps(s, a[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 64.0 * 12.0 * (double)iters;
}

/* Rows of B are prefetched this many f32 rows' bytes ahead in gemv_nn: 4 rows of f32, 8 of f16
 * (the same bytes in flight; 4 rows of an f16 cache were too few: decode attention 17.5-18.8 ms
 * vs 14.2-17.3 ms with 8, three alternated runs of `bench/decode_parts`). */
#define NN_AHEAD 4

/* 128 columns at a time in 8 accumulators (a 7B head in one pass), then 16 with a mask. */
INL void gemv_nn_fmt(tensor_wfmt f, float *y, const float *x, const void *b, size_t ldb, int n, int k) {
    const char *bb = b;
    size_t row_bytes = ldb * esz(f);
    int j = 0;
    for (; j + 128 <= n; j += 128) {
        __m512 acc[8];
        for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
        for (int kk = 0; kk < k; kk++) {
            const char *r = bb + (size_t)kk * row_bytes + (size_t)j * esz(f);
            /* 128 columns: 8 lines of f32, 4 of f16 */
            for (int i = 0; i < 2 * (int)esz(f); i++) _mm_prefetch(r + NN_AHEAD * 4 / esz(f) * row_bytes + 64 * i, _MM_HINT_T0);
            __m512 xv = _mm512_set1_ps(x[kk]);
            for (int i = 0; i < 8; i++) acc[i] = _mm512_fmadd_ps(xv, load16(r + 16 * i * esz(f), f), acc[i]);
        }
        for (int i = 0; i < 8; i++) _mm512_storeu_ps(y + j + 16 * i, acc[i]);
    }
    for (; j < n; j += 16) {
        __mmask16 m = (__mmask16)(n - j >= 16 ? 0xffff : (1u << (n - j)) - 1);
        __m512 acc = _mm512_setzero_ps();
        for (int kk = 0; kk < k; kk++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(x[kk]), load16_mask(bb + ((size_t)kk * ldb + j) * esz(f), f, m), acc);
        _mm512_mask_storeu_ps(y + j, m, acc);
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
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), NEAREST));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), NEAREST));
    }
}

INL void to_f32_fmt(tensor_wfmt f, float *dst, const void *src, size_t n) {
    const char *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load16(s + i * esz(f), f));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, load16_mask(s + i * esz(f), f, m));
    }
}
static TGT void to_f32_f32(float *d, const void *s, size_t n) { to_f32_fmt(TENSOR_WFMT_F32, d, s, n); }
static TGT void to_f32_f16(float *d, const void *s, size_t n) { to_f32_fmt(TENSOR_WFMT_F16, d, s, n); }
static TGT void to_f32_bf16(float *d, const void *s, size_t n) { to_f32_fmt(TENSOR_WFMT_BF16, d, s, n); }

/* ---- vector math ---- */

/* e^x to about 1 ulp (Cephes polynomial on [-ln2/2, ln2/2]); overflows to inf, underflows to 0,
 * NaN stays NaN (the clamps keep a NaN operand because max/min return their second operand). */
INL __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* x·σ(k·x) = x / (1 + e^(-k·x)). */
INL __m512 x_sigmoid(__m512 x, float k) {
    __m512 e = exp16(_mm512_mul_ps(x, _mm512_set1_ps(-k)));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* 1 + erf(x/√2) with small relative error everywhere (it is the factor GELU needs): through
 * erfc(z) = t·exp(-z² + P(t)), t = 1/(1 + z/2) (Numerical Recipes' erfcc, fractional error
 * < 1.2e-7), with z² exact as hi + lo so that large |x| keeps its relative precision. */
INL __m512 one_plus_erf(__m512 x) {
    __m512 z = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    /* z² = x²/2 exactly as hi + lo (x² split by an FMA, then halved), so the rounding of z
     * itself does not reach the exponent. */
    __m512 hi = _mm512_mul_ps(x, x), lo = _mm512_fmsub_ps(x, x, hi);
    hi = _mm512_mul_ps(hi, _mm512_set1_ps(-0.5f));
    lo = _mm512_mul_ps(lo, _mm512_set1_ps(-0.5f));
    __m512 erfc = _mm512_mul_ps(t, _mm512_mul_ps(exp16(_mm512_add_ps(p, lo)), exp16(hi)));
    /* Past z = 10, erfc is below 1e-44: zero, also where x² would overflow into NaN. */
    erfc = _mm512_mask_mov_ps(erfc, _mm512_cmp_ps_mask(z, _mm512_set1_ps(10.0f), _CMP_GT_OQ), _mm512_setzero_ps());
    __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), erfc), erfc);
}

INL __mmask16 tail_mask(size_t left) { return (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1); }

/* ---- rows ---- */

static TGT void layernorm(float *y, const float *x, const float *w, const float *b, int n, float eps) {
    __m512 s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask((size_t)(n - i)), x + i));
    float mean = _mm512_reduce_add_ps(s) / (float)n;
    __m512 mv = _mm512_set1_ps(mean), v = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((size_t)(n - i));
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), mv);
        v = _mm512_fmadd_ps(d, d, v);
    }
    float r = 1.0f / sqrtf(_mm512_reduce_add_ps(v) / (float)n + eps);
    __m512 rv = _mm512_set1_ps(r);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((size_t)(n - i));
        __m512 o = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv), rv);
        if (w) o = _mm512_mul_ps(o, _mm512_maskz_loadu_ps(m, w + i));
        if (b) o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(y + i, m, o);
    }
}

static TGT void rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    __m512 s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask((size_t)(n - i)), x + i);
        s = _mm512_fmadd_ps(v, v, s);
    }
    __m512 rv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(s) / (float)n + eps));
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((size_t)(n - i));
        __m512 o = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), rv);
        if (w) o = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), o);
        _mm512_mask_storeu_ps(y + i, m, o);
    }
}

static TGT void softmax(float *x, int n) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16)
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask((size_t)(n - i)), x + i));
    float m = _mm512_reduce_max_ps(mx);
    if (m == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    __m512 mv = _mm512_set1_ps(m), s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask((size_t)(n - i));
        __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv)));
        s = _mm512_add_ps(s, e);
        _mm512_mask_storeu_ps(x + i, k, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask((size_t)(n - i));
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv));
    }
}

static TGT void gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), one_plus_erf(v)));
    }
}

static TGT void gelu_tanh(float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                 _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), v), _mm512_mul_ps(v, v), v));
        __m512 e = exp16(_mm512_mul_ps(u, _mm512_set1_ps(-2.0f)));
        _mm512_mask_storeu_ps(x + i, k, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
}

static TGT void quick_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, x_sigmoid(_mm512_maskz_loadu_ps(k, x + i), 1.702f));
    }
}

static TGT void silu(float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, x_sigmoid(_mm512_maskz_loadu_ps(k, x + i), 1.0f));
    }
}

static TGT void silu_mul(float *g, const float *up, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 s = x_sigmoid(_mm512_maskz_loadu_ps(k, g + i), 1.0f);
        _mm512_mask_storeu_ps(g + i, k, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(k, up + i)));
    }
}

static TGT void rope(float *x, const float *cs, const float *sn, int h) {
    for (int i = 0; i < h; i += 16) {
        __mmask16 k = tail_mask((size_t)(h - i));
        __m512 a = _mm512_maskz_loadu_ps(k, x + i), b = _mm512_maskz_loadu_ps(k, x + h + i);
        __m512 c = _mm512_maskz_loadu_ps(k, cs + i), s = _mm512_maskz_loadu_ps(k, sn + i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_fmsub_ps(a, c, _mm512_mul_ps(b, s)));
        _mm512_mask_storeu_ps(x + h + i, k, _mm512_fmadd_ps(b, c, _mm512_mul_ps(a, s)));
    }
}

/* ---- machine probes ---- */

static TGT float read_sum(const float *x, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps(x + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(x + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(x + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(x + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) s += x[i];
    return s;
}

/* 16 independent chains: enough to cover the FMA latency on two FMA ports. */
static TGT double fma_loop(long iters) {
    __m512 a[16];
    __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) a[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) a[j] = _mm512_fmadd_ps(a[j], m, c);
    }
    __m512 s = a[0];
#pragma GCC unroll 16
    for (int j = 1; j < 16; j++) s = _mm512_add_ps(s, a[j]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 2.0 * 16.0 * 16.0 * (double)iters;
}

const tensor_kernels tensor_kernels_avx512 = {
    .isa = TENSOR_ISA_AVX512,
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
    .fma_loop_half = fma_loop_half,
};
#endif
