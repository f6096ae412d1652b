/* Tests of image_decode_preprocess: the streamed JPEG path (rows resized as they are decoded)
 * and every fallback give exactly what image_decode_memory + image_preprocess give, for real
 * files (baseline, progressive, arithmetic, gray, CMYK, tall, wide, rotated, PNG, WebP) under
 * several configurations; and failures (truncated data, a too small output) are reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "image/image.h"

static const char *data_dir(void) {
    const char *d = getenv("LLAVA_TEST_DATA");
    return d ? d : LLAVA_TEST_DATA;
}

static char *load(const char *name, size_t *n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/images/%s", data_dir(), name);
    char *data = NULL;
    llava_error err;
    if (llava_read_file(path, (size_t)64 << 20, &data, n, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    return data;
}

static void compare(const char *name, const hf_preprocess_config *cfg, const char *what) {
    size_t n;
    char *data = load(name, &n);
    image_rgb img;
    llava_error err;
    if (image_decode_memory(data, n, NULL, &img, &err) != LLAVA_OK)
        fail_msg("%s: %s", name, err.message);
    int oh, ow;
    if (image_preprocess_size(cfg, img.width, img.height, &oh, &ow, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    size_t cap = 3 * (size_t)oh * ow;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    int ah, aw, bh, bw;
    if (image_preprocess(img.rgb, img.width, img.height, cfg, a, cap, &ah, &aw, &err) != LLAVA_OK)
        fail_msg("%s: %s", name, err.message);
    if (image_decode_preprocess(data, n, NULL, cfg, b, cap, &bh, &bw, &err) != LLAVA_OK)
        fail_msg("%s (%s): %s", name, what, err.message);
    if (ah != bh || aw != bw) fail_msg("%s (%s): %dx%d vs %dx%d", name, what, aw, ah, bw, bh);
    for (size_t i = 0; i < cap; i++)
        if (memcmp(&a[i], &b[i], sizeof a[i]))
            fail_msg("%s (%s): value %zu is %.9g, separate steps give %.9g", name, what, i, b[i],
                     a[i]);
    free(a);
    free(b);
    image_free(&img);
    free(data);
}

static const char *files[] = {
    "llava_extreme_ironing.jpg",      "llava_waterview.jpg",
    "derived_flower_progressive.jpg", "derived_flower_restart1.jpg",
    "derived_waterview_tall_96x667.jpg", "derived_waterview_wide_1000x144.jpg",
    "ljt_testimgari.jpg",             "pillow_hopper_gray.jpg",
    "pillow_pil_sample_cmyk.jpg",     "pillow_hopper_orientation_6.jpg",
    "pillow_flower.webp",             "pillow_transparent.png",
};

static void test_same_as_separate_steps(void **state) {
    (void)state;
    hf_preprocess_config clip;
    hf_preprocess_config_default(&clip);
    clip.shortest_edge = clip.crop_height = clip.crop_width = 336;
    hf_preprocess_config small = clip; /* downscaling, crop inside */
    small.shortest_edge = small.crop_height = small.crop_width = 56;
    hf_preprocess_config nocrop = clip; /* the whole resized image */
    nocrop.do_center_crop = false;
    nocrop.shortest_edge = 100;
    hf_preprocess_config wide = clip; /* crop wider than the image: zero fill */
    wide.do_resize = true;
    wide.shortest_edge = 0;
    wide.resize_height = 120;
    wide.resize_width = 90;
    wide.crop_height = 100;
    wide.crop_width = 128;
    hf_preprocess_config lanczos = clip;
    lanczos.resample = 1;
    hf_preprocess_config nearest = clip; /* not streamed */
    nearest.resample = 0;
    hf_preprocess_config pad = clip; /* not streamed */
    pad.do_pad = true;
    const struct {
        const hf_preprocess_config *cfg;
        const char *name;
    } cfgs[] = {{&clip, "clip 336"}, {&small, "56"},       {&nocrop, "no crop"},
                {&wide, "zero fill"}, {&lanczos, "lanczos"}, {&nearest, "nearest"},
                {&pad, "pad"}};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++)
        for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++)
            compare(files[f], cfgs[c].cfg, cfgs[c].name);
}

static void test_failures(void **state) {
    (void)state;
    size_t n;
    char *data = load("llava_extreme_ironing.jpg", &n);
    hf_preprocess_config cfg;
    hf_preprocess_config_default(&cfg);
    float out[3 * 224 * 224];
    llava_error err;
    /* cut in the middle: the streamed path fails like the decoder does */
    assert_int_equal(image_decode_preprocess(data, n / 2, NULL, &cfg, out, 3 * 224 * 224, NULL,
                                             NULL, &err),
                     LLAVA_ERR_FORMAT);
    assert_non_null(strstr(err.message, "JPEG: truncated"));
    /* too small an output is refused from the header, before decoding */
    assert_int_equal(image_decode_preprocess(data, n, NULL, &cfg, out, 100, NULL, NULL, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "150528 needed"));
    image_limits lim = {100, 100, 10000};
    assert_int_equal(image_decode_preprocess(data, n, &lim, &cfg, out, 3 * 224 * 224, NULL, NULL,
                                             &err),
                     LLAVA_ERR_LIMIT);
    assert_int_equal(image_decode_preprocess("nope", 4, NULL, &cfg, out, 3 * 224 * 224, NULL,
                                             NULL, &err),
                     LLAVA_ERR_UNSUPPORTED);
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_separate_steps),
        cmocka_unit_test(test_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
