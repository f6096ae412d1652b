/* Bytes to pixel_values in one call. For the common case (a JPEG without EXIF rotation, resized
 * with a convolution filter, no pad) the decoder's rows go straight through Pillow's horizontal
 * pass as they come out, so the full-size image is never stored: a 12-MP photo needs 3 MB of
 * intermediate rows instead of 36 MB. The arithmetic is the same code on the same rows, so the
 * result is identical to image_decode_memory + image_preprocess, which every other case uses. */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "image/plan.h"
#include "image/resample.h"

typedef struct pipeline {
    const hf_preprocess_config *cfg;
    size_t out_cap;
    image_plan plan;
    resample_stream rs;
    int have_rs;
} pipeline;

static llava_status on_begin(void *user, int width, int height, int orientation, bool *take,
                             llava_error *err) {
    pipeline *p = user;
    *take = false;
    if (orientation >= 2 && orientation <= 8) return LLAVA_OK; /* rotate first: whole image */
    llava_status st = image_plan_make(p->cfg, width, height, &p->plan, err);
    if (st != LLAVA_OK) return st;
    const image_plan *pl = &p->plan;
    size_t need = 3 * (size_t)pl->out_w * pl->out_h;
    if (p->out_cap < need) /* before decoding anything */
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "preprocess: output holds %zu floats, %zu needed", p->out_cap, need);
    if (pl->pad_size || !p->cfg->do_resize || p->cfg->resample < 1 || p->cfg->resample > 5 ||
        pl->rw == width || pl->rh == height)
        return LLAVA_OK; /* not the two-pass case: the general path */
    st = resample_stream_init(&p->rs, width, height, pl->rw, pl->rh, p->cfg->resample,
                              pl->crop_x + pl->x0, pl->crop_y + pl->y0, pl->x1 - pl->x0,
                              pl->y1 - pl->y0, err);
    if (st != LLAVA_OK) return st;
    p->have_rs = 1;
    *take = true;
    return LLAVA_OK;
}

static void on_rows(void *user, const uint8_t *rgb, const uint8_t *end, int y, int n) {
    pipeline *p = user;
    resample_stream_rows(&p->rs, rgb, end, y, n);
}

/* What image_preprocess writes, from the finished row stream. */
static llava_status finish(pipeline *p, float *out, llava_error *err) {
    const image_plan *pl = &p->plan;
    size_t stride = (size_t)pl->out_w * 3;
    uint8_t *u8 = image_alloc_rgb(pl->out_w, pl->out_h);
    if (!u8) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "preprocess: out of memory");
    if (pl->x0 > 0 || pl->y0 > 0 || pl->x1 < pl->out_w || pl->y1 < pl->out_h)
        memset(u8, 0, stride * pl->out_h);
    resample_stream_finish(&p->rs, u8 + (size_t)pl->y0 * stride + (size_t)pl->x0 * 3, stride);
    image_normalize_chw(u8, (size_t)pl->out_w * pl->out_h, p->cfg, out);
    free(u8);
    return LLAVA_OK;
}

llava_status image_decode_preprocess(const void *bytes, size_t len, const image_limits *limits,
                                     const hf_preprocess_config *cfg, float *out, size_t out_cap,
                                     int *out_height, int *out_width, llava_error *err) {
    if (!cfg || !out)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "preprocess: no config or output");
    image_limits lim;
    if (limits)
        lim = *limits;
    else
        image_limits_default(&lim);
    if (image_detect_format(bytes, len) == IMAGE_FORMAT_JPEG) {
        pipeline p;
        memset(&p, 0, sizeof p);
        p.cfg = cfg;
        p.out_cap = out_cap;
        image_row_sink sink = {on_begin, on_rows, &p};
        int streamed = 0;
        llava_status st = image_decode_jpeg_stream(bytes, len, &lim, &sink, &streamed, err);
        if (st == LLAVA_OK && streamed) {
            st = finish(&p, out, err);
            if (st == LLAVA_OK) {
                if (out_height) *out_height = p.plan.out_h;
                if (out_width) *out_width = p.plan.out_w;
            }
        }
        if (p.have_rs) resample_stream_free(&p.rs);
        if (st != LLAVA_OK || streamed) return st;
    }
    image_rgb img;
    llava_status st = image_decode_memory(bytes, len, &lim, &img, err);
    if (st != LLAVA_OK) return st;
    st = image_preprocess(img.rgb, img.width, img.height, cfg, out, out_cap, out_height,
                          out_width, err);
    image_free(&img);
    return st;
}
