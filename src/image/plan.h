/* Internal: the geometry of one CLIPImageProcessor run (pad, resize, center crop) and its final
 * rescale + normalize, shared by preprocess.c (from decoded pixels) and pipeline.c (from rows
 * streamed out of the JPEG decoder). */
#ifndef LLAVA_IMAGE_PLAN_H
#define LLAVA_IMAGE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

typedef struct image_plan {
    int pad_size;       /* side of the padded square; 0 = no padding */
    int rw, rh;         /* size after resize (= input or padded size without resize) */
    int out_w, out_h;   /* after the crop */
    int crop_x, crop_y; /* where the output's (0, 0) falls in the resized image; may be < 0 */
    /* the part of the output the resized image covers, [x0, x1) x [y0, y1); the rest is the
     * crop's zero fill */
    int x0, y0, x1, y1;
} image_plan;

llava_status image_plan_make(const hf_preprocess_config *cfg, int width, int height,
                             image_plan *p, llava_error *err);

/* rescale and normalize of an RGB8 image of n pixels into float32 CHW planes of n each. */
void image_normalize_chw(const uint8_t *rgb, size_t n, const hf_preprocess_config *cfg,
                         float *out);

#endif
