/* Shared body of the image decoder fuzz targets: decode with small limits (so that a large
 * declared size is rejected rather than slow), then preprocess the result with sizes taken from
 * the input, so that resize, crop and pad see odd shapes too. */
#ifndef LLAVA_FUZZ_IMAGE_COMMON_H
#define LLAVA_FUZZ_IMAGE_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "image/image.h"

typedef llava_status (*fuzz_decoder)(const uint8_t *, size_t, const image_limits *,
                                     image_decoded *, llava_error *);

static void fuzz_image_decode(fuzz_decoder dec, const uint8_t *data, size_t size) {
    image_limits lim = {4096, 4096, (int64_t)4 << 20};
    image_decoded d = {0};
    llava_error err;
    if (dec(data, size, &lim, &d, &err) != LLAVA_OK) {
        if (d.rgb || !err.message[0]) abort(); /* failure leaves nothing and says why */
        return;
    }
    if (d.width < 1 || d.height < 1 || d.width > lim.max_width || d.height > lim.max_height) abort();
    /* every pixel must have been written: reading them all lets MSan/valgrind catch gaps */
    unsigned sum = 0;
    for (size_t i = 0; i < (size_t)d.width * d.height * 3; i++) sum += d.rgb[i];
    (void)sum;
    hf_preprocess_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.do_resize = true;
    cfg.shortest_edge = 1 + (int)(size % 61);
    cfg.resample = (int)(size % 6);
    cfg.do_center_crop = (size & 2) != 0;
    cfg.crop_height = 1 + (int)(size * 7 % 67);
    cfg.crop_width = 1 + (int)(size * 13 % 59);
    cfg.do_rescale = cfg.do_normalize = true;
    cfg.rescale_factor = 1.0 / 255.0;
    for (int c = 0; c < 3; c++) cfg.image_mean[c] = cfg.image_std[c] = 0.5f;
    cfg.do_pad = (size & 1) != 0;
    int oh, ow;
    if (image_preprocess_size(&cfg, d.width, d.height, &oh, &ow, &err) == LLAVA_OK &&
        (int64_t)oh * ow <= (1 << 20)) {
        size_t n = 3 * (size_t)oh * ow;
        float *px = malloc(n * sizeof *px);
        if (px && image_preprocess(d.rgb, d.width, d.height, &cfg, px, n, &oh, &ow, &err) != LLAVA_OK)
            abort(); /* a decoded image with a valid plan must preprocess */
        free(px);
    }
    free(d.rgb);
}

#endif
