/* Tests of src/image resizing and preprocessing: Pillow 9.4's output for small images with every
 * filter (values printed by Image.resize), the AVX2 passes against the scalar ones on random data
 * and coefficients (including reads that end at the buffer's edge), output sizes of the size
 * forms, pad mode and zero-filled crops, normalisation, and argument errors. Whole images against
 * Pillow are in test_image_pillow.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"
#include "image/resample.h"

/* A 5x3 RGB image and what Pillow's resize gives for it (see the file comment). */
static const uint8_t src5x3[45] = {0,   255, 0,   61,  205, 7,   122, 155, 14,  183, 105, 21,
                                   244, 55,  28,  17,  255, 120, 78,  205, 127, 139, 155, 134,
                                   200, 105, 141, 5,   55,  148, 34,  255, 240, 95,  205, 247,
                                   156, 155, 254, 217, 105, 5,   22,  55,  12};

typedef struct pillow_case {
    int resample, w, h;
    uint8_t px[120];
} pillow_case;

static const pillow_case pillow_cases[] = {
    {3, 3, 2, {27, 237, 39, 131, 155, 53, 175, 73, 74, 51, 237, 210, 161, 155, 182, 96, 73, 57}},
    {3, 8, 5, {0,   255, 0,   20,  238, 0,   64,  202, 0,   102, 171, 3,   139, 139, 7,   177,
               108, 12,  233, 72,  17,  255, 51,  20,  4,   255, 36,  26,  238, 39,  70,  202,
               44,  108, 171, 49,  149, 139, 56,  187, 108, 69,  174, 72,  75,  161, 51,  77,
               13,  255, 119, 38,  238, 122, 82,  202, 127, 120, 171, 132, 167, 139, 136, 203,
               108, 141, 85,  72,  146, 0,   51,  149, 25,  255, 202, 50,  238, 205, 94,  202,
               211, 132, 171, 217, 179, 139, 174, 215, 108, 64,  90,  72,  57,  0,   51,  66,
               31,  255, 248, 56,  238, 251, 100, 202, 255, 138, 171, 255, 185, 139, 191, 221,
               108, 4,   103, 72,  0,   9,   51,  3}},
    {2, 4, 2, {21, 243, 47, 92, 184, 55, 164, 126, 63, 163, 68, 71,
               43, 243, 197, 114, 184, 205, 186, 126, 120, 65, 68, 61}},
    {1, 7, 4, {0,   255, 0,   27,  232, 0,   81,  188, 3,   121, 155, 8,   159, 122,
               9,   224, 78,  13,  255, 52,  17,  6,   255, 53,  36,  232, 57,  88,
               188, 62,  130, 155, 67,  191, 122, 99,  154, 78,  115, 102, 52,  116,
               23,  255, 187, 54,  232, 187, 105, 188, 198, 148, 155, 201, 231, 122,
               126, 107, 78,  102, 0,   52,  111, 32,  255, 246, 63,  232, 242, 114,
               188, 255, 157, 155, 255, 233, 122, 60,  135, 78,  0,   11,  52,  7}},
    {4, 2, 2, {70, 205, 67, 159, 80, 85, 95, 205, 247, 120, 80, 9}},
    {5, 6, 2, {5,  255, 33,  61,  209, 39,  108, 171, 45,  146, 139, 49,
               187, 101, 55, 178, 55, 61, 29, 255, 207, 85, 209, 213,
               132, 171, 219, 170, 139, 165, 197, 101, 44, 17, 55, 50}},
    {0, 3, 5, {0,   255, 0,   122, 155, 14,  244, 55,  28,  0,   255, 0,   122, 155, 14,
               244, 55,  28,  17,  255, 120, 139, 155, 134, 5,   55,  148, 34,  255, 240,
               156, 155, 254, 22,  55,  12,  34,  255, 240, 156, 155, 254, 22,  55,  12}},
};

static void test_pillow_values(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof pillow_cases / sizeof pillow_cases[0]; i++) {
        const pillow_case *c = &pillow_cases[i];
        image_rgb out;
        llava_error err;
        if (image_resize(src5x3, 5, 3, c->w, c->h, c->resample, &out, &err) != LLAVA_OK)
            fail_msg("%s", err.message);
        for (int k = 0; k < c->w * c->h * 3; k++)
            if (out.rgb[k] != c->px[k])
                fail_msg("filter %d to %dx%d: byte %d is %d, Pillow %d", c->resample, c->w, c->h,
                         k, out.rgb[k], c->px[k]);
        image_free(&out);
    }
}

/* ---- AVX2 against scalar ---- */

static uint32_t rng_next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* Random coefficients with sum |k| <= 2^23, as for Pillow's (they sum to 2^22 with small negative
 * lobes), so that 255 * sum + 2^21 fits in int32 as it does in Pillow. */
static resample_coeffs random_coeffs(uint64_t *s, int in_size, int out_size, int ksize) {
    resample_coeffs c = {out_size, ksize, malloc(sizeof(int) * out_size),
                         malloc(sizeof(int) * out_size), calloc((size_t)out_size * ksize, 4),
                         NULL};
    for (int i = 0; i < out_size; i++) {
        int n = 1 + (int)(rng_next(s) % (uint32_t)ksize);
        if (n > in_size) n = in_size;
        c.first[i] = (int)(rng_next(s) % (uint32_t)(in_size - n + 1));
        c.count[i] = n;
        for (int j = 0; j < n; j++)
            c.kk[(size_t)i * ksize + j] =
                (int32_t)(rng_next(s) % (uint32_t)((1 << 23) / n + 1)) - (1 << 22) / n;
    }
    return c;
}

static void free_coeffs(resample_coeffs *c) {
    free(c->first);
    free(c->count);
    free(c->kk);
    free(c->kc);
}

static void test_avx2_matches_scalar(void **state) {
    (void)state;
#if defined(__x86_64__) || defined(__i386__)
    if (!__builtin_cpu_supports("avx2")) skip();
#endif
    uint64_t s = 42;
    for (int round = 0; round < 200; round++) {
        int w = 1 + (int)(rng_next(&s) % 300), h = 1 + (int)(rng_next(&s) % 40);
        int ow = 1 + (int)(rng_next(&s) % 200), ksize = 1 + (int)(rng_next(&s) % 60);
        size_t n = (size_t)w * h * 3;
        /* exactly n bytes, so that reads near the end must take the careful path */
        uint8_t *src = malloc(n);
        for (size_t i = 0; i < n; i++) src[i] = (uint8_t)rng_next(&s);
        resample_coeffs c = random_coeffs(&s, w, ow, ksize);
        uint8_t *a = malloc((size_t)ow * 3 * h), *b = malloc((size_t)ow * 3 * h);
        resample_h_scalar(src, (size_t)w * 3, src + n, 0, h, &c, a, (size_t)ow * 3);
        resample_h_avx2(src, (size_t)w * 3, src + n, 0, h, &c, b, (size_t)ow * 3);
        if (memcmp(a, b, (size_t)ow * 3 * h)) fail_msg("horizontal pass differs, round %d", round);
        assert_int_equal(resample_h_avx2_prepare(&c), 0); /* the table built once */
        memset(b, 0, (size_t)ow * 3 * h);
        resample_h_avx2(src, (size_t)w * 3, src + n, 0, h, &c, b, (size_t)ow * 3);
        if (memcmp(a, b, (size_t)ow * 3 * h)) fail_msg("prepared pass differs, round %d", round);
        free_coeffs(&c);
        int oh = 1 + (int)(rng_next(&s) % 50);
        c = random_coeffs(&s, h, oh, ksize);
        free(a);
        free(b);
        a = malloc((size_t)w * 3 * oh);
        b = malloc((size_t)w * 3 * oh);
        resample_v_scalar(src, (size_t)w * 3, w * 3, &c, a, (size_t)w * 3);
        resample_v_avx2(src, (size_t)w * 3, w * 3, &c, b, (size_t)w * 3);
        if (memcmp(a, b, (size_t)w * 3 * oh)) fail_msg("vertical pass differs, round %d", round);
        free_coeffs(&c);
        free(a);
        free(b);
        free(src);
    }
}

/* ---- preprocessing ---- */

static hf_preprocess_config clip336(void) {
    hf_preprocess_config c;
    hf_preprocess_config_default(&c);
    c.shortest_edge = 336;
    c.crop_height = c.crop_width = 336;
    return c;
}

static void expect_size(const hf_preprocess_config *c, int w, int h, int eh, int ew) {
    int oh = 0, ow = 0;
    llava_error err;
    if (image_preprocess_size(c, w, h, &oh, &ow, &err) != LLAVA_OK) fail_msg("%s", err.message);
    if (oh != eh || ow != ew) fail_msg("%dx%d -> %dx%d, expected %dx%d", w, h, ow, oh, ew, eh);
}

static void test_sizes(void **state) {
    (void)state;
    hf_preprocess_config c = clip336();
    expect_size(&c, 570, 380, 336, 336);
    c.do_center_crop = false;
    expect_size(&c, 570, 380, 336, 504);  /* int(336 * 570 / 380) = 504 */
    expect_size(&c, 380, 571, 504, 336);  /* int(336 * 571 / 380) = 504.88 -> 504 */
    expect_size(&c, 3, 1000, 112000, 336);
    expect_size(&c, 336, 1000, 1000, 336); /* short side already 336: untouched */
    c.do_pad = true;
    expect_size(&c, 570, 380, 336, 336);
    c.do_pad = false;
    c.shortest_edge = 0;
    c.resize_height = 200;
    c.resize_width = 150;
    expect_size(&c, 570, 380, 200, 150);
    c.do_resize = false;
    expect_size(&c, 570, 380, 380, 570);
}

static void test_crop_zero_fill_and_normalize(void **state) {
    (void)state;
    /* 4x2 image of one colour, no resize, crop 7x5: rows 2..3 (ceil(3/2) = 2) and columns 2..5
     * (ceil(3/2) = 2) hold the image, the rest is 0 before normalisation. */
    uint8_t img[4 * 2 * 3];
    for (int i = 0; i < 8; i++) {
        img[3 * i] = 10;
        img[3 * i + 1] = 128;
        img[3 * i + 2] = 255;
    }
    hf_preprocess_config c;
    hf_preprocess_config_default(&c);
    c.do_resize = false;
    c.crop_height = 5;
    c.crop_width = 7;
    float out[3 * 5 * 7];
    int oh, ow;
    llava_error err;
    if (image_preprocess(img, 4, 2, &c, out, 3 * 35, &oh, &ow, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(oh, 5);
    assert_int_equal(ow, 7);
    const uint8_t vals[3] = {10, 128, 255};
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 7; x++) {
                int inside = y >= 2 && y < 4 && x >= 2 && x < 6;
                uint8_t v = inside ? vals[ch] : 0;
                float x01 = (float)((double)v * (1.0 / 255.0));
                float want = (x01 - c.image_mean[ch]) / c.image_std[ch];
                float got = out[ch * 35 + y * 7 + x];
                if (got != want) fail_msg("c%d y%d x%d: %.9g, expected %.9g", ch, y, x, got, want);
            }
}

static void test_pad_colour(void **state) {
    (void)state;
    /* 1x3 image padded to 3x3 with tuple(int(255 * m)) = (122, 116, 104) for the CLIP mean */
    const uint8_t img[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    hf_preprocess_config c;
    hf_preprocess_config_default(&c);
    c.do_resize = c.do_center_crop = false;
    c.do_pad = true;
    image_rgb out;
    llava_error err;
    if (image_preprocess_u8(img, 1, 3, &c, &out, &err) != LLAVA_OK) fail_msg("%s", err.message);
    assert_int_equal(out.width, 3);
    assert_int_equal(out.height, 3);
    const uint8_t bg[3] = {122, 116, 104};
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 3; x++)
            for (int ch = 0; ch < 3; ch++) {
                uint8_t want = x == 1 ? img[y * 3 + ch] : bg[ch];
                assert_int_equal(out.rgb[(y * 3 + x) * 3 + ch], want);
            }
    image_free(&out);
}

static void test_errors(void **state) {
    (void)state;
    uint8_t img[12] = {0};
    hf_preprocess_config c = clip336();
    float out[16];
    llava_error err;
    assert_int_equal(image_preprocess(img, 2, 2, &c, out, 16, NULL, NULL, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "338688 needed"));
    image_rgb r;
    assert_int_equal(image_resize(img, 2, 2, 3, 3, 7, &r, &err), LLAVA_ERR_UNSUPPORTED);
    assert_null(r.rgb);
    assert_int_equal(image_resize(img, 2, 2, 0, 3, 3, &r, &err), LLAVA_ERR_INVALID_ARGUMENT);
    c.shortest_edge = 0;
    int oh, ow;
    assert_int_equal(image_preprocess_size(&c, 2, 2, &oh, &ow, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "without a size"));
    c = clip336();
    c.do_center_crop = false;
    assert_int_equal(image_preprocess_size(&c, 1, 16384, &oh, &ow, &err), LLAVA_ERR_LIMIT);
    assert_int_equal(image_preprocess_size(&c, 0, 5, &oh, &ow, &err), LLAVA_ERR_INVALID_ARGUMENT);
    c = clip336();
    c.do_pad = true;
    assert_int_equal(image_preprocess_size(&c, 16384, 1, &oh, &ow, &err), LLAVA_ERR_LIMIT);
    assert_non_null(strstr(err.message, "padding 16384x1"));
    assert_int_equal(image_preprocess_size(&c, 4000, 3000, &oh, &ow, &err), LLAVA_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pillow_values),
        cmocka_unit_test(test_avx2_matches_scalar),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_crop_zero_fill_and_normalize),
        cmocka_unit_test(test_pad_colour),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
