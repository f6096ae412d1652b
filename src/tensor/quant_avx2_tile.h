/* The body of the 256-bit tiles (mr rows of x, a compile-time constant once inlined, by one
 * row group; q4 picks the block format), included twice by quant_avx2.c: once for AVX2 and once
 * for AVX-VNNI, because a function may inline only code built for a subset of its own target and
 * the AVX2 instance must hold no VNNI instruction. Define TILE_BODY (the function's name),
 * TILE_TGT (its target attribute) and TILE_VNNI (0 or 1) before including. No include guard. */
static inline __attribute__((always_inline)) TILE_TGT void TILE_BODY(float *y, size_t ldy, const quant_act *a, int m0,
                                                                const int mr, const uint8_t *w, int b0, int b1,
                                                                int accumulate, const int q4) {
    const int vnni = TILE_VNNI;
    const size_t bsize = q4 ? sizeof(tensor_block_q4_0) : sizeof(tensor_block_q8_0);
    const int off = q4 ? 8 : 128;
    __m256 acc[MR][2];
    for (int m = 0; m < mr; m++)
        for (int h = 0; h < 2; h++)
            acc[m][h] = accumulate ? _mm256_loadu_ps(y + (size_t)m * ldy + 8 * h) : _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(15), flip = _mm256_set1_epi8((char)0x80);
    for (int b = b0; b < b1; b++) {
        const uint8_t *blk = w + (size_t)(b - b0) * bsize;
        const uint8_t *qv = blk + 32; /* past the 16 f16 scales */
        __m256i iacc[MR][2];
        for (int m = 0; m < mr; m++) {
            /* Q8_0 on AVX2 sums signed weights directly (no offset); every other form
             * multiplies unsigned stored values and removes off · Σa here */
            int32_t init = (!q4 && !vnni) ? 0 : -off * a->s[(size_t)(m0 + m) * a->nb + b];
            iacc[m][0] = iacc[m][1] = _mm256_set1_epi32(init);
        }
        const int steps = q4 ? 4 : 8;
        for (int j = 0; j < steps; j++) {
            for (int h = 0; h < 2; h++) {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(qv + (size_t)j * 64 + 32 * h));
                if (q4) {
                    __m256i lo = _mm256_and_si256(wv, low4);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low4);
                    for (int m = 0; m < mr; m++) {
                        const int8_t *ab = a->qs + (size_t)(m0 + m) * a->K + (size_t)b * 32;
                        __m256i alo = _mm256_set1_epi32(load_i32(ab + 4 * j));
                        __m256i ahi = _mm256_set1_epi32(load_i32(ab + 16 + 4 * j));
#if TILE_VNNI
                        iacc[m][h] = step_vnni(iacc[m][h], lo, alo);
                        iacc[m][h] = step_vnni(iacc[m][h], hi, ahi);
#else
                        iacc[m][h] = step_q4_avx2(iacc[m][h], lo, alo);
                        iacc[m][h] = step_q4_avx2(iacc[m][h], hi, ahi);
#endif
                    }
                } else {
                    __m256i ws = vnni ? wv : _mm256_xor_si256(wv, flip);
                    for (int m = 0; m < mr; m++) {
                        const int8_t *ab = a->qs + (size_t)(m0 + m) * a->K + (size_t)b * 32;
                        __m256i av = _mm256_set1_epi32(load_i32(ab + 4 * j));
#if TILE_VNNI
                        iacc[m][h] = step_vnni(iacc[m][h], ws, av);
#else
                        iacc[m][h] = step_q8_avx2(iacc[m][h], ws, av, _mm256_abs_epi8(av));
#endif
                    }
                }
            }
        }
        for (int h = 0; h < 2; h++) {
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
            for (int m = 0; m < mr; m++) {
                __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(a->d[(size_t)(m0 + m) * a->nb + b]));
                acc[m][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[m][h]), sc, acc[m][h]);
            }
        }
    }
    for (int m = 0; m < mr; m++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(y + (size_t)m * ldy + 8 * h, acc[m][h]);
}
