/* AVX2 versions of the two resampling passes, chosen at run time by resize.c. Integer sums are
 * exact in any order, so these give the same bytes as the scalar passes: the horizontal pass
 * multiplies 4 taps of R, G and B at a time with pmaddwd on 11-bit halves of the coefficients;
 * the vertical pass runs across a row, 16 bytes per step, one broadcast coefficient per row. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "image/resample.h"

#if defined(__x86_64__) || defined(__i386__)

#define TARGET __attribute__((target("avx2")))

/* Coefficients of one output pixel for h_pixel: per group of 4 taps, 16 int16 of the high parts
 * (k >> 11) then 16 of the low parts (k & 2047), each laid out as
 * [k0 k1 k0 k1 k0 k1 0 0 | k2 k3 k2 k3 k2 k3 0 0] to meet the pixel bytes' shuffle below. */
#define TAPS_PER_GROUP 4
#define GROUP_INT16 32

/* One output pixel: 4 taps (12 source bytes) per step. The bytes of taps 0,1 go to the low
 * 128-bit lane as 16-bit [R0 R1 G0 G1 B0 B1 0 0] and those of taps 2,3 to the high lane, so that
 * pmaddwd adds the two taps of each channel. k = hi * 2048 + lo with both parts in int16 range,
 * so the 22-bit products are exact: sum = (sum_hi << 11) + sum_lo (mod 2^32, and the true value
 * fits in int32 as in Pillow). */
TARGET static inline void h_pixel(const uint8_t *p, const int16_t *kc, int groups, uint8_t *out) {
    const __m256i shuf =
        _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1, 6, -1, 9, -1, 7,
                         -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
    __m256i hi = _mm256_setzero_si256(), lo = hi;
    for (int g = 0; g < groups; g++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)(p + 12 * g));
        __m256i px = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(raw), shuf);
        const __m256i *k = (const __m256i *)(kc + (size_t)g * GROUP_INT16);
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(px, _mm256_loadu_si256(k)));
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(px, _mm256_loadu_si256(k + 1)));
    }
    __m256i s = _mm256_add_epi32(_mm256_slli_epi32(hi, 11), lo);
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_set1_epi32(1 << (RESAMPLE_PRECISION_BITS - 1)));
    t = _mm_srai_epi32(t, RESAMPLE_PRECISION_BITS);
    t = _mm_packus_epi16(_mm_packs_epi32(t, t), t); /* clamp to 0..255 */
    uint32_t v = (uint32_t)_mm_cvtsi128_si32(t);
    out[0] = (uint8_t)v;
    out[1] = (uint8_t)(v >> 8);
    out[2] = (uint8_t)(v >> 16);
}

static int16_t *build_kc(const resample_coeffs *c) {
    const int max_groups = (c->ksize + TAPS_PER_GROUP - 1) / TAPS_PER_GROUP;
    int16_t *kc = calloc((size_t)c->out_size * max_groups * GROUP_INT16, sizeof *kc);
    if (!kc) return NULL;
    for (int xx = 0; xx < c->out_size; xx++) {
        const int32_t *k = c->kk + (size_t)xx * c->ksize;
        int16_t *row = kc + (size_t)xx * max_groups * GROUP_INT16;
        for (int j = 0; j < c->count[xx]; j++) {
            int16_t *g = row + (size_t)(j / TAPS_PER_GROUP) * GROUP_INT16;
            int slot = (j % 4 >= 2 ? 8 : 0) + (j % 2); /* lane half, then tap within the pair */
            int16_t h = (int16_t)(k[j] >> 11), l = (int16_t)(k[j] & 2047);
            for (int ch = 0; ch < 3; ch++) {
                g[slot + 2 * ch] = h;
                g[16 + slot + 2 * ch] = l;
            }
        }
    }
    return kc;
}

int resample_h_avx2_prepare(resample_coeffs *c) {
    if (!c->kc) c->kc = build_kc(c);
    return c->kc ? 0 : -1;
}

TARGET void resample_h_avx2(const uint8_t *src, size_t src_stride, const uint8_t *src_end,
                            int y0, int y1, const resample_coeffs *c, uint8_t *dst,
                            size_t dst_stride) {
    const int out_w = c->out_size;
    const int max_groups = (c->ksize + TAPS_PER_GROUP - 1) / TAPS_PER_GROUP;
    int16_t *own = c->kc ? NULL : build_kc(c);
    const int16_t *kc = c->kc ? c->kc : own;
    if (!kc) { /* no room for the rearranged table: the scalar pass gives the same bytes */
        resample_h_scalar(src, src_stride, src_end, y0, y1, c, dst, dst_stride);
        return;
    }
    const int32_t half = 1 << (RESAMPLE_PRECISION_BITS - 1);
    for (int y = y0; y < y1; y++) {
        const uint8_t *in = src + (size_t)y * src_stride;
        uint8_t *out = dst + (size_t)(y - y0) * dst_stride;
        for (int xx = 0; xx < out_w; xx++) {
            const uint8_t *p = in + (size_t)c->first[xx] * 3;
            int groups = (c->count[xx] + TAPS_PER_GROUP - 1) / TAPS_PER_GROUP;
            /* the last group loads 16 bytes from p + 12 * (groups - 1) */
            if ((size_t)(src_end - p) >= (size_t)12 * groups + 4) {
                h_pixel(p, kc + (size_t)xx * max_groups * GROUP_INT16, groups, out + 3 * xx);
                continue;
            }
            /* Too close to the end of the buffer for 16-byte loads. */
            const int32_t *k = c->kk + (size_t)xx * c->ksize;
            int32_t s0 = half, s1 = half, s2 = half;
            for (int x = 0; x < c->count[xx]; x++) {
                s0 += p[3 * x] * k[x];
                s1 += p[3 * x + 1] * k[x];
                s2 += p[3 * x + 2] * k[x];
            }
            out[3 * xx] = resample_clip8(s0);
            out[3 * xx + 1] = resample_clip8(s1);
            out[3 * xx + 2] = resample_clip8(s2);
        }
    }
    free(own);
}

TARGET void resample_v_avx2(const uint8_t *src, size_t src_stride, int width_bytes,
                            const resample_coeffs *c, uint8_t *dst, size_t dst_stride) {
    const __m256i half = _mm256_set1_epi32(1 << (RESAMPLE_PRECISION_BITS - 1));
    const __m256i zero = _mm256_setzero_si256(), max = _mm256_set1_epi32(255);
    for (int yy = 0; yy < c->out_size; yy++) {
        const int32_t *k = c->kk + (size_t)yy * c->ksize;
        const uint8_t *in = src + (size_t)c->first[yy] * src_stride;
        uint8_t *out = dst + (size_t)yy * dst_stride;
        int n = c->count[yy];
        int i = 0;
        for (; i + 16 <= width_bytes; i += 16) {
            __m256i s0 = half, s1 = half;
            for (int y = 0; y < n; y++) {
                __m256i kv = _mm256_set1_epi32(k[y]);
                const uint8_t *p = in + (size_t)y * src_stride + i;
                __m256i p0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
                __m256i p1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
                s0 = _mm256_add_epi32(s0, _mm256_mullo_epi32(p0, kv));
                s1 = _mm256_add_epi32(s1, _mm256_mullo_epi32(p1, kv));
            }
            s0 = _mm256_srai_epi32(s0, RESAMPLE_PRECISION_BITS);
            s1 = _mm256_srai_epi32(s1, RESAMPLE_PRECISION_BITS);
            s0 = _mm256_min_epi32(_mm256_max_epi32(s0, zero), max);
            s1 = _mm256_min_epi32(_mm256_max_epi32(s1, zero), max);
            /* 16 int32 in 0..255 -> 16 bytes (packs work per 128-bit lane: fix the order) */
            __m256i w16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(s0, s1), 0xD8);
            __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w16),
                                         _mm256_extracti128_si256(w16, 1));
            _mm_storeu_si128((__m128i *)(out + i), b);
        }
        for (; i < width_bytes; i++) {
            int32_t s = 1 << (RESAMPLE_PRECISION_BITS - 1);
            for (int y = 0; y < n; y++) s += in[(size_t)y * src_stride + i] * k[y];
            out[i] = resample_clip8(s);
        }
    }
}

#else

int resample_h_avx2_prepare(resample_coeffs *c) {
    (void)c;
    return 0;
}

void resample_h_avx2(const uint8_t *src, size_t src_stride, const uint8_t *src_end, int y0,
                     int y1, const resample_coeffs *c, uint8_t *dst, size_t dst_stride) {
    resample_h_scalar(src, src_stride, src_end, y0, y1, c, dst, dst_stride);
}

void resample_v_avx2(const uint8_t *src, size_t src_stride, int width_bytes,
                     const resample_coeffs *c, uint8_t *dst, size_t dst_stride) {
    resample_v_scalar(src, src_stride, width_bytes, c, dst, dst_stride);
}

#endif
