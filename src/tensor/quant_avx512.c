/* The AVX-512 VNNI int8 path of quant.h: one ZMM register is a whole row group's 16 rows × 4
 * columns, so a vpdpbusd against 4 broadcast activation bytes is 64 multiply-adds into the 16
 * rows' accumulators, and a tile of 4 rows of x × 2 row groups keeps 8 such chains in flight.
 * Decode (one row of x) takes 4 row groups per tile instead: four streams of W from memory at
 * once rather than two (bench/decode_parts: Q4_0 products 83 → 95 % of the read probe).
 * Every function carries its own target attribute; quant.c runs it only after checking CPUID. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "tensor/quant_kernels.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

#define MR 4
#define NG 4      /* row groups per tile call: one row of x takes them at once */
#define NG_BODY 2 /* with more rows of x, the registers hold two at a time */
/* With one row of x (decode), weights are prefetched this many bytes ahead of use, as the f32
 * path's decode product does (kern_avx512.c): the hardware prefetcher alone leaves the memory
 * idle at the start of each 4 KiB page. */
#define PFD 1024

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- activations: one row into int8 blocks (same bits as the scalar reference) ---- */

static TGT void quantize_act_avx512(int8_t *qs, float *d, int32_t *s, const float *x, int K) {
    for (int b = 0; b < K / 32; b++) {
        const float *xb = x + (size_t)b * 32;
        __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)); /* nearest even */
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
        _mm_storeu_si128((__m128i *)(qs + (size_t)b * 32), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(qs + (size_t)b * 32 + 16), _mm512_cvtsepi32_epi8(q1));
        d[b] = db;
        s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

/* ---- tiles ---- */

/* mr rows of x by ng row groups over blocks [b0, b1), both compile-time constants once inlined;
 * q4 picks the block format. Stored values are unsigned (Q8_0: weight + 128, Q4_0: nibble), so
 * each block's integer accumulator starts at -off · Σa and ends as the exact Σ weight · a. */
INL void tile_body(float *y, size_t ldy, const quant_act *a, int m0, const int mr, const uint8_t *w,
                   size_t gstride, const int ng, int b0, int b1, int accumulate, const int q4) {
    const size_t bsize = q4 ? sizeof(tensor_block_q4_0) : sizeof(tensor_block_q8_0);
    const int off = q4 ? 8 : 128;
    const __m512i low4 = _mm512_set1_epi8(15);
    __m512 acc[MR][NG]; /* sized for the widest body: (1, 4); (4, 2) uses 8 */
    for (int m = 0; m < mr; m++)
        for (int g = 0; g < ng; g++)
            acc[m][g] = accumulate ? _mm512_loadu_ps(y + (size_t)m * ldy + 16 * g) : _mm512_setzero_ps();
    for (int b = b0; b < b1; b++) {
        const uint8_t *blk[NG];
        for (int g = 0; g < ng; g++) blk[g] = w + g * gstride + (size_t)(b - b0) * bsize;
        __m512i iacc[MR][NG];
        for (int m = 0; m < mr; m++) {
            __m512i init = _mm512_set1_epi32(-off * a->s[(size_t)(m0 + m) * a->nb + b]);
            for (int g = 0; g < ng; g++) iacc[m][g] = init;
        }
        const int steps = q4 ? 4 : 8;
        if (mr == 1) /* decode: W streams from memory once; its last line is the one the steps skip */
            for (int g = 0; g < ng; g++) _mm_prefetch((const char *)blk[g] + bsize - 1 + PFD, _MM_HINT_T0);
        for (int j = 0; j < steps; j++) {
            __m512i wlo[NG], whi[NG];
            for (int g = 0; g < ng; g++) {
                if (mr == 1) _mm_prefetch((const char *)blk[g] + (size_t)j * 64 + PFD, _MM_HINT_T0);
                __m512i wv = _mm512_loadu_si512(blk[g] + 32 + (size_t)j * 64);
                if (q4) {
                    wlo[g] = _mm512_and_si512(wv, low4);
                    whi[g] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
                } else {
                    wlo[g] = wv;
                }
            }
            for (int m = 0; m < mr; m++) {
                const int8_t *ab = a->qs + (size_t)(m0 + m) * a->K + (size_t)b * 32;
                __m512i alo = _mm512_set1_epi32(load_i32(ab + 4 * j));
                for (int g = 0; g < ng; g++) iacc[m][g] = _mm512_dpbusd_epi32(iacc[m][g], wlo[g], alo);
                if (q4) {
                    __m512i ahi = _mm512_set1_epi32(load_i32(ab + 16 + 4 * j));
                    for (int g = 0; g < ng; g++) iacc[m][g] = _mm512_dpbusd_epi32(iacc[m][g], whi[g], ahi);
                }
            }
        }
        for (int g = 0; g < ng; g++) {
            __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk[g]));
            for (int m = 0; m < mr; m++) {
                __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(a->d[(size_t)(m0 + m) * a->nb + b]));
                acc[m][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[m][g]), sc, acc[m][g]);
            }
        }
    }
    for (int m = 0; m < mr; m++)
        for (int g = 0; g < ng; g++) _mm512_storeu_ps(y + (size_t)m * ldy + 16 * g, acc[m][g]);
}

/* Several rows of x: the groups two at a time (then one). */
#define TILE_CASE(MRC, q4)                                                                               \
    case MRC:                                                                                            \
        for (int gg = 0; gg < ng; gg += NG_BODY) {                                                       \
            float *yg = y + (size_t)gg * TENSOR_QROWS;                                                   \
            const uint8_t *wg = w + (size_t)gg * gstride;                                                \
            if (ng - gg >= NG_BODY) tile_body(yg, ldy, a, m0, MRC, wg, gstride, NG_BODY, b0, b1, accumulate, q4); \
            else tile_body(yg, ldy, a, m0, MRC, wg, gstride, 1, b0, b1, accumulate, q4);                \
        }                                                                                                \
        break;
/* One row of x (decode): all four groups in one pass, each group's weights one stream. */
#define TILE_ONE_ROW(q4)                                                                                 \
    default:                                                                                             \
        if (ng == 4) tile_body(y, ldy, a, m0, 1, w, gstride, 4, b0, b1, accumulate, q4);                \
        else if (ng == 3) tile_body(y, ldy, a, m0, 1, w, gstride, 3, b0, b1, accumulate, q4);           \
        else if (ng == 2) tile_body(y, ldy, a, m0, 1, w, gstride, 2, b0, b1, accumulate, q4);           \
        else tile_body(y, ldy, a, m0, 1, w, gstride, 1, b0, b1, accumulate, q4);                        \
        break;

static TGT void tile_q8_0_avx512(float *y, size_t ldy, const quant_act *a, int m0, int mr, const uint8_t *w,
                                 size_t gstride, int ng, int b0, int b1, int accumulate) {
    switch (mr) {
        TILE_CASE(4, 0)
        TILE_CASE(3, 0)
        TILE_CASE(2, 0)
        TILE_ONE_ROW(0)
    }
}

static TGT void tile_q4_0_avx512(float *y, size_t ldy, const quant_act *a, int m0, int mr, const uint8_t *w,
                                 size_t gstride, int ng, int b0, int b1, int accumulate) {
    switch (mr) {
        TILE_CASE(4, 1)
        TILE_CASE(3, 1)
        TILE_CASE(2, 1)
        TILE_ONE_ROW(1)
    }
}

/* Register-only loop of vpdpbusd, 12 independent chains (enough to cover its latency at two per
 * cycle). The instruction is written in asm because GCC, given the intrinsic, copies every
 * accumulator to a spare register each pass, and those copies halved the measured rate. */
static TGT double dot_loop_avx512(long iters) {
    __m512i acc[12];
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
#pragma GCC unroll 12
    for (int j = 0; j < 12; j++) acc[j] = _mm512_set1_epi32(j);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc[j]) : "v"(a), "v"(b));
    }
    __m512i s = acc[0];
#pragma GCC unroll 12
    for (int j = 1; j < 12; j++) s = _mm512_add_epi32(s, acc[j]);
    /* one lane keeps every chain alive (s sums them all); the header's horizontal sum adds the
     * lanes as signed ints, whose wrap-around UBSan rightly calls overflow */
    volatile int sink = _mm_cvtsi128_si32(_mm512_castsi512_si128(s));
    (void)sink;
    return (double)iters * 12 * 64 * 2;
}

const quant_kernels quant_kernels_avx512vnni = {
    .path = QUANT_PATH_AVX512VNNI,
    .name = "avx512-vnni",
    .mr = MR,
    .ng = NG,
    .quantize_act = quantize_act_avx512,
    .tile = {tile_q8_0_avx512, tile_q4_0_avx512},
    .dot_loop = dot_loop_avx512,
};

#endif
