/* libFuzzer target: image_decode_preprocess (format detection, the streamed JPEG path and the
 * fallbacks) on arbitrary bytes, with sizes taken from the input; the result must equal decoding
 * then preprocessing. */
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    image_limits lim = {4096, 4096, (int64_t)4 << 20};
    hf_preprocess_config cfg;
    hf_preprocess_config_default(&cfg);
    cfg.shortest_edge = 1 + (int)(size % 53);
    cfg.crop_height = 1 + (int)(size * 7 % 61);
    cfg.crop_width = 1 + (int)(size * 13 % 47);
    cfg.do_center_crop = (size & 4) == 0;
    cfg.resample = (int)(size % 6);
    size_t cap = 3 * 64 * 64;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    llava_error err;
    int ah = 0, aw = 0;
    llava_status st = image_decode_preprocess(data, size, &lim, &cfg, a, cap, &ah, &aw, &err);
    if (st == LLAVA_OK) {
        image_rgb img;
        if (image_decode_memory(data, size, &lim, &img, &err) != LLAVA_OK) abort();
        int bh = 0, bw = 0;
        if (image_preprocess(img.rgb, img.width, img.height, &cfg, b, cap, &bh, &bw, &err) !=
                LLAVA_OK ||
            bh != ah || bw != aw || memcmp(a, b, sizeof *a * 3 * (size_t)ah * aw))
            abort(); /* the one-call path must equal the two steps */
        image_free(&img);
    } else if (!err.message[0]) {
        abort();
    }
    free(a);
    free(b);
    return 0;
}
