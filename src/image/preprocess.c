/* CLIPImageProcessor.preprocess of transformers 4.40 on one RGB8 image: optional pad to a square
 * (LLaVA's expand2square), Pillow resize, center crop with zero fill, rescale and normalize to
 * float32 CHW. The resize only computes the pixels the crop keeps (each output pixel of Pillow's
 * separable passes depends on its own row and column alone, so this changes no value). */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "image/plan.h"
#include "image/resample.h"

llava_status image_plan_make(const hf_preprocess_config *cfg, int width, int height,
                             image_plan *p, llava_error *err) {
    memset(p, 0, sizeof *p);
    if (width <= 0 || height <= 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "preprocess: invalid image size "
                               "%dx%d", width, height);
    int w = width, h = height;
    if (cfg->do_pad && w != h) {
        p->pad_size = w > h ? w : h;
        w = h = p->pad_size;
        /* the square is materialised: a 16384 x 1 image would make it 805 MB */
        if ((int64_t)w * h > ((int64_t)64 << 20))
            return llava_error_set(err, LLAVA_ERR_LIMIT, "preprocess: padding %dx%d to a square "
                                   "of %d pixels a side is too large", width, height, w);
    }
    if (cfg->do_resize) {
        if (cfg->shortest_edge > 0) {
            /* get_resize_output_image_size(default_to_square=False): the long side is
             * int(S * long / short), computed in double and truncated */
            int s = cfg->shortest_edge;
            int shorter = w <= h ? w : h, longer = w <= h ? h : w;
            if (shorter != s) {
                double nl = (double)s * longer / shorter;
                if (nl > 1e6)
                    return llava_error_set(err, LLAVA_ERR_LIMIT, "preprocess: resizing %dx%d to "
                                           "shortest edge %d gives a side of %.0f pixels",
                                           width, height, s, nl);
                int l = (int)nl;
                if (l < 1) l = 1;
                if (w <= h) {
                    w = s;
                    h = l;
                } else {
                    h = s;
                    w = l;
                }
            }
        } else if (cfg->resize_height > 0 && cfg->resize_width > 0) {
            w = cfg->resize_width;
            h = cfg->resize_height;
        } else {
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "preprocess: do_resize without a size (shortest_edge or "
                                   "height/width)");
        }
    }
    p->rw = w;
    p->rh = h;
    p->out_w = w;
    p->out_h = h;
    if (cfg->do_center_crop) {
        if (cfg->crop_width <= 0 || cfg->crop_height <= 0)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "preprocess: invalid crop size %dx%d", cfg->crop_width,
                                   cfg->crop_height);
        /* transformers' center_crop: top = (h - ch) // 2 (floor); a side smaller than the crop
         * is zero-padded with the image at ceil((ch - h) / 2), which is the same offset. */
        int dy = h - cfg->crop_height, dx = w - cfg->crop_width;
        p->crop_y = dy >= 0 ? dy / 2 : -((-dy + 1) / 2);
        p->crop_x = dx >= 0 ? dx / 2 : -((-dx + 1) / 2);
        p->out_w = cfg->crop_width;
        p->out_h = cfg->crop_height;
    }
    if ((int64_t)p->out_w * p->out_h > ((int64_t)64 << 20))
        return llava_error_set(err, LLAVA_ERR_LIMIT, "preprocess: output of %dx%d pixels is too "
                               "large", p->out_w, p->out_h);
    p->x0 = p->crop_x < 0 ? -p->crop_x : 0;
    p->y0 = p->crop_y < 0 ? -p->crop_y : 0;
    p->x1 = p->rw - p->crop_x < p->out_w ? p->rw - p->crop_x : p->out_w;
    p->y1 = p->rh - p->crop_y < p->out_h ? p->rh - p->crop_y : p->out_h;
    return LLAVA_OK;
}

llava_status image_preprocess_size(const hf_preprocess_config *cfg, int width, int height,
                                   int *out_height, int *out_width, llava_error *err) {
    image_plan p;
    llava_status st = image_plan_make(cfg, width, height, &p, err);
    if (st != LLAVA_OK) return st;
    *out_height = p.out_h;
    *out_width = p.out_w;
    return LLAVA_OK;
}

/* expand2square: a square of the mean colour, tuple(int(255 * m) for m in image_mean), with
 * the image pasted at ((side - w) // 2, (side - h) // 2). */
static uint8_t *pad_square(const uint8_t *rgb, int w, int h, int side,
                           const hf_preprocess_config *cfg) {
    uint8_t *sq = image_alloc_rgb(side, side);
    if (!sq) return NULL;
    uint8_t bg[3];
    for (int c = 0; c < 3; c++) {
        double v = 255.0 * (double)cfg->image_mean[c];
        bg[c] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : (int)v);
    }
    size_t n = (size_t)side * side;
    for (size_t i = 0; i < n; i++) memcpy(sq + 3 * i, bg, 3);
    int ox = (side - w) / 2, oy = (side - h) / 2;
    for (int y = 0; y < h; y++)
        memcpy(sq + ((size_t)(oy + y) * side + ox) * 3, rgb + (size_t)y * w * 3, (size_t)w * 3);
    return sq;
}

llava_status image_preprocess_u8(const uint8_t *rgb, int width, int height,
                                 const hf_preprocess_config *cfg, image_rgb *out,
                                 llava_error *err) {
    memset(out, 0, sizeof *out);
    if (!rgb || !cfg)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "preprocess: no image or config");
    image_plan p;
    llava_status st = image_plan_make(cfg, width, height, &p, err);
    if (st != LLAVA_OK) return st;
    uint8_t *padded = NULL;
    const uint8_t *src = rgb;
    int sw = width, sh = height;
    if (p.pad_size) {
        padded = pad_square(rgb, width, height, p.pad_size, cfg);
        if (!padded) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "preprocess: out of memory");
        src = padded;
        sw = sh = p.pad_size;
    }
    uint8_t *dst = image_alloc_rgb(p.out_w, p.out_h);
    if (!dst) {
        free(padded);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "preprocess: out of memory");
    }
    size_t stride = (size_t)p.out_w * 3;
    if (p.x0 > 0 || p.y0 > 0 || p.x1 < p.out_w || p.y1 < p.out_h) memset(dst, 0, stride * p.out_h);
    st = resample_region(src, sw, sh, p.rw, p.rh, cfg->do_resize ? cfg->resample : 0,
                         p.crop_x + p.x0, p.crop_y + p.y0, p.x1 - p.x0, p.y1 - p.y0,
                         dst + (size_t)p.y0 * stride + (size_t)p.x0 * 3, stride, err);
    free(padded);
    if (st != LLAVA_OK) {
        free(dst);
        return llava_error_prefix(err, "preprocess");
    }
    out->width = p.out_w;
    out->height = p.out_h;
    out->rgb = dst;
    out->orientation = 1;
    return LLAVA_OK;
}

void image_normalize_chw(const uint8_t *rgb, size_t n, const hf_preprocess_config *cfg,
                         float *out) {
    /* rescale: float32(double(u8) * factor); normalize: (x - mean) / std in float32. Both
     * depend on the byte alone, so a table per channel holds every possible value. */
    float table[3][256];
    for (int c = 0; c < 3; c++) {
        float mean = cfg->image_mean[c], std = cfg->image_std[c];
        for (int v = 0; v < 256; v++) {
            float x = cfg->do_rescale ? (float)((double)v * cfg->rescale_factor) : (float)v;
            if (cfg->do_normalize) x = (x - mean) / std;
            table[c][v] = x;
        }
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = table[0][rgb[3 * i]];
        out[n + i] = table[1][rgb[3 * i + 1]];
        out[2 * n + i] = table[2][rgb[3 * i + 2]];
    }
}

llava_status image_preprocess(const uint8_t *rgb, int width, int height,
                              const hf_preprocess_config *cfg, float *out, size_t out_cap,
                              int *out_height, int *out_width, llava_error *err) {
    int oh, ow;
    llava_status st = image_preprocess_size(cfg, width, height, &oh, &ow, err);
    if (st != LLAVA_OK) return st;
    size_t plane = (size_t)oh * ow;
    if (!out || out_cap < 3 * plane)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "preprocess: output holds %zu floats, %zu needed", out_cap,
                               3 * plane);
    image_rgb u8;
    st = image_preprocess_u8(rgb, width, height, cfg, &u8, err);
    if (st != LLAVA_OK) return st;
    image_normalize_chw(u8.rgb, plane, cfg, out);
    image_free(&u8);
    if (out_height) *out_height = oh;
    if (out_width) *out_width = ow;
    return LLAVA_OK;
}
