/* AVX2 versions of the two resampling passes, chosen at run time by resize.c. Integer sums are
 * exact in any order, so these give the same bytes as the scalar passes: the horizontal pass
 * takes each output pixel's source bytes (RGB interleaved) 24 at a time against coefficients
 * repeated per channel, then folds the lanes back to R, G and B; the vertical pass runs across
 * a row, 8 bytes per vector, one broadcast coefficient per source row. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "image/resample.h"

#if defined(__x86_64__) || defined(__i386__)

#define TARGET __attribute__((target("avx2")))

/* One output pixel of the horizontal pass: n3 = 3 * count bytes from p, coefficients k3
 * (each repeated 3 times, zero past n3, padded to a multiple of 24). */
TARGET static inline void h_pixel(const uint8_t *p, const int32_t *k3, int n3, uint8_t *out) {
    const int32_t half = 1 << (RESAMPLE_PRECISION_BITS - 1);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0;
    for (int j = 0; j < n3; j += 24) {
        __m256i p0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + j)));
        __m256i p1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + j + 8)));
        __m256i p2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + j + 16)));
        a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(p0, _mm256_loadu_si256((const __m256i *)(k3 + j))));
        a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(p1, _mm256_loadu_si256((const __m256i *)(k3 + j + 8))));
        a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(p2, _mm256_loadu_si256((const __m256i *)(k3 + j + 16))));
    }
    /* Lane l of a0/a1/a2 holds byte positions l, 8 + l, 16 + l (mod 24): channels l % 3,
     * (l + 2) % 3, (l + 1) % 3. */
    int32_t t[24];
    _mm256_storeu_si256((__m256i *)t, a0);
    _mm256_storeu_si256((__m256i *)(t + 8), a1);
    _mm256_storeu_si256((__m256i *)(t + 16), a2);
    int32_t s0 = half + t[0] + t[3] + t[6] + t[9] + t[12] + t[15] + t[18] + t[21];
    int32_t s1 = half + t[1] + t[4] + t[7] + t[10] + t[13] + t[16] + t[19] + t[22];
    int32_t s2 = half + t[2] + t[5] + t[8] + t[11] + t[14] + t[17] + t[20] + t[23];
    out[0] = resample_clip8(s0);
    out[1] = resample_clip8(s1);
    out[2] = resample_clip8(s2);
}

TARGET void resample_h_avx2(const uint8_t *src, size_t src_stride, const uint8_t *src_end,
                            int y0, int y1, const resample_coeffs *c, uint8_t *dst,
                            size_t dst_stride) {
    const int out_w = c->out_size;
    const int k3size = (3 * c->ksize + 23) / 24 * 24;
    int32_t *k3 = malloc(sizeof *k3 * (size_t)out_w * (size_t)k3size);
    if (!k3) { /* no room for the widened table: the scalar pass gives the same bytes */
        resample_h_scalar(src, src_stride, src_end, y0, y1, c, dst, dst_stride);
        return;
    }
    for (int xx = 0; xx < out_w; xx++) {
        int32_t *row = k3 + (size_t)xx * k3size;
        const int32_t *k = c->kk + (size_t)xx * c->ksize;
        memset(row, 0, sizeof *row * (size_t)k3size);
        for (int x = 0; x < c->count[xx]; x++) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = k[x];
    }
    const int32_t half = 1 << (RESAMPLE_PRECISION_BITS - 1);
    for (int y = y0; y < y1; y++) {
        const uint8_t *in = src + (size_t)y * src_stride;
        uint8_t *out = dst + (size_t)(y - y0) * dst_stride;
        for (int xx = 0; xx < out_w; xx++) {
            const uint8_t *p = in + (size_t)c->first[xx] * 3;
            int n3 = 3 * c->count[xx];
            int padded = (n3 + 23) / 24 * 24;
            if ((size_t)(src_end - p) >= (size_t)padded) {
                h_pixel(p, k3 + (size_t)xx * k3size, n3, out + 3 * xx);
                continue;
            }
            /* Too close to the end of the buffer for 24-byte loads. */
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
    free(k3);
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

void resample_h_avx2(const uint8_t *src, size_t src_stride, const uint8_t *src_end, int y0,
                     int y1, const resample_coeffs *c, uint8_t *dst, size_t dst_stride) {
    resample_h_scalar(src, src_stride, src_end, y0, y1, c, dst, dst_stride);
}

void resample_v_avx2(const uint8_t *src, size_t src_stride, int width_bytes,
                     const resample_coeffs *c, uint8_t *dst, size_t dst_stride) {
    resample_v_scalar(src, src_stride, width_bytes, c, dst, dst_stride);
}

#endif
