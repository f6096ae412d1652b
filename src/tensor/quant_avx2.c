/* The 256-bit int8 paths of quant.h: AVX2 (pmaddubsw + pmaddwd) and AVX-VNNI (vpdpbusd on YMM
 * registers). One YMM register holds 8 rows × 4 columns of a block, so a row group is two
 * halves. Both paths share the tile code below; every function carries its own target
 * attribute, so the file builds for the baseline CPU and runs only after quant.c checked CPUID. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "tensor/quant_kernels.h"

#define TGT2 __attribute__((target("avx2,fma,f16c")))
#define TGTV __attribute__((target("avx2,fma,f16c,avxvnni")))

#define MR 2 /* rows of x per tile: 2 rows × 2 halves of float and int accumulators fit 16 YMM */

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- activations: one row into int8 blocks (same bits as the scalar reference) ---- */

static TGT2 void quantize_act_avx2(int8_t *qs, float *d, int32_t *s, const float *x, int K) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < K / 32; b++) {
        const float *xb = x + (size_t)b * 32;
        __m256 v[4], m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int i = 0; i < 4; i++) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid)); /* nearest even */
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        /* packs work per 128-bit lane: the permute puts the 32 bytes back in order */
        __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(qs + (size_t)b * 32), p8);
        d[b] = db;
        s[b] = _mm_cvtsi128_si32(s4);
    }
}

/* ---- tiles ---- */

/* One 4-column step of 8 rows: acc += Σ_{i<4} w[r][i] · a[i] per row lane. w unsigned bytes
 * (Q8_0: weight + 128, Q4_0: nibble), a 4 signed bytes broadcast. */
static inline __attribute__((always_inline)) TGTV __m256i step_vnni(__m256i acc, __m256i w, __m256i a) {
    return _mm256_dpbusd_avx_epi32(acc, w, a);
}

/* The same without VNNI. pmaddubsw saturates 16-bit pair sums, which Q8_0's unsigned range
 * (up to 2·255·127) would hit, so Q8_0 goes back to signed weights and moves the sign onto them
 * (|a| · sign(w, a), at most 2·127·127): the sum is then Σ w·a with no offset to remove. Q4_0
 * nibbles (at most 2·15·127) go in directly. */
static inline __attribute__((always_inline)) TGT2 __m256i step_q4_avx2(__m256i acc, __m256i w, __m256i a) {
    __m256i p = _mm256_maddubs_epi16(w, a);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

static inline __attribute__((always_inline)) TGT2 __m256i step_q8_avx2(__m256i acc, __m256i w_signed, __m256i a,
                                                                      __m256i a_abs) {
    __m256i p = _mm256_maddubs_epi16(a_abs, _mm256_sign_epi8(w_signed, a));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

/* The tile bodies, one per instruction form (see quant_avx2_tile.h). */
#define TILE_BODY tile_body_avx2
#define TILE_TGT TGT2
#define TILE_VNNI 0
#include "tensor/quant_avx2_tile.h"
#undef TILE_BODY
#undef TILE_TGT
#undef TILE_VNNI
#define TILE_BODY tile_body_vnni
#define TILE_TGT TGTV
#define TILE_VNNI 1
#include "tensor/quant_avx2_tile.h"
#undef TILE_BODY
#undef TILE_TGT
#undef TILE_VNNI

/* Instances per (format, instruction form), dispatching mr to constant bodies. */
#define TILE_FN(name, tgt, body, q4)                                                                    \
    static tgt void name(float *y, size_t ldy, const quant_act *a, int m0, int mr, const uint8_t *w,      \
                         size_t gstride, int ng, int b0, int b1, int accumulate) {                          \
        for (int g = 0; g < ng; g++) {                                                                     \
            float *yg = y + g * TENSOR_QROWS;                                                              \
            const uint8_t *wg = w + g * gstride;                                                           \
            if (mr == 2) body(yg, ldy, a, m0, 2, wg, b0, b1, accumulate, q4);                           \
            else body(yg, ldy, a, m0, 1, wg, b0, b1, accumulate, q4);                                   \
        }                                                                                                  \
    }

TILE_FN(tile_q8_0_avx2, TGT2, tile_body_avx2, 0)
TILE_FN(tile_q4_0_avx2, TGT2, tile_body_avx2, 1)
TILE_FN(tile_q8_0_avxvnni, TGTV, tile_body_vnni, 0)
TILE_FN(tile_q4_0_avxvnni, TGTV, tile_body_vnni, 1)

/* Register-only loops of each form's dot step, 12 independent chains, unrolled so that they stay
 * in registers; AVX-VNNI's in asm as in dot_loop_avx512 (quant_avx512.c). */
static TGT2 double dot_loop_avx2(long iters) {
    __m256i acc[12];
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
#pragma GCC unroll 12
    for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_epi32(j);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) acc[j] = step_q4_avx2(acc[j], a, b);
    }
    __m256i s = acc[0];
#pragma GCC unroll 12
    for (int j = 1; j < 12; j++) s = _mm256_add_epi32(s, acc[j]);
    volatile int sink = _mm256_extract_epi32(s, 0);
    (void)sink;
    return (double)iters * 12 * 32 * 2;
}

static TGTV double dot_loop_vnni(long iters) {
    __m256i acc[12];
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
#pragma GCC unroll 12
    for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_epi32(j);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc[j]) : "x"(a), "x"(b));
    }
    __m256i s = acc[0];
#pragma GCC unroll 12
    for (int j = 1; j < 12; j++) s = _mm256_add_epi32(s, acc[j]);
    volatile int sink = _mm256_extract_epi32(s, 0);
    (void)sink;
    return (double)iters * 12 * 32 * 2;
}

const quant_kernels quant_kernels_avx2 = {
    .path = QUANT_PATH_AVX2,
    .name = "avx2",
    .mr = MR,
    .ng = 1,
    .quantize_act = quantize_act_avx2,
    .tile = {tile_q8_0_avx2, tile_q4_0_avx2},
    .dot_loop = dot_loop_avx2,
};

const quant_kernels quant_kernels_avxvnni = {
    .path = QUANT_PATH_AVXVNNI,
    .name = "avx-vnni",
    .mr = MR,
    .ng = 1,
    .quantize_act = quantize_act_avx2,
    .tile = {tile_q8_0_avxvnni, tile_q4_0_avxvnni},
    .dot_loop = dot_loop_vnni,
};

#endif
