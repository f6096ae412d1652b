/* Images from outside bytes to model input: decoding (JPEG, PNG, WebP, GIF, BMP, detected from the
 * bytes) to 8-bit RGB exactly as Pillow's Image.open + ImageOps.exif_transpose + convert("RGB")
 * gives it, and CLIPImageProcessor's preprocessing (Pillow bicubic resize, crop, normalize). */
#ifndef LLAVA_IMAGE_H
#define LLAVA_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "io/hfconfig.h"

typedef enum image_format {
    IMAGE_FORMAT_UNKNOWN,
    IMAGE_FORMAT_JPEG,
    IMAGE_FORMAT_PNG,
    IMAGE_FORMAT_WEBP,
    IMAGE_FORMAT_GIF,
    IMAGE_FORMAT_BMP
} image_format;

/* Checked from the headers before any pixel is decoded, so a decompression bomb costs nothing. */
typedef struct image_limits {
    int max_width;      /* pixels; default 16384 */
    int max_height;     /* pixels; default 16384 */
    int64_t max_pixels; /* width * height; default 64 Mi (8192 x 8192) */
} image_limits;

/* A decoded image: 8-bit RGB, rows top to bottom, 3 bytes per pixel, no padding between rows. */
typedef struct image_rgb {
    int width, height;
    uint8_t *rgb;        /* [height][width][3], owned (image_free) */
    image_format format; /* the container it came from */
    int orientation;     /* the EXIF orientation that was applied (1..8; 1 = none) */
} image_rgb;

void image_limits_default(image_limits *out);

/* The format from the first bytes (magic numbers), never from a file name. */
image_format image_detect_format(const void *bytes, size_t len);
/* "JPEG", "PNG", "WebP", "GIF", "BMP" or "unknown". */
const char *image_format_name(image_format f);

/* Decodes an encoded image to RGB8 with the EXIF orientation applied (ImageOps.exif_transpose)
 * and the colour conversion of Pillow's convert("RGB"): alpha dropped (not composited), gray
 * replicated, palette looked up, CMYK converted as Pillow does, 16-bit samples reduced as Pillow
 * reduces them. limits NULL = defaults. On failure *out is left empty and err names the format
 * and the problem (LLAVA_ERR_FORMAT malformed or truncated, LLAVA_ERR_LIMIT too large,
 * LLAVA_ERR_UNSUPPORTED unknown format). Thread-safe: any number of threads may decode at once.
 * The caller frees *out with image_free. */
llava_status image_decode_memory(const void *bytes, size_t len, const image_limits *limits,
                                 image_rgb *out, llava_error *err);
/* Same from a file (read whole, at most 256 MiB); errors are prefixed with the path. */
llava_status image_decode_file(const char *path, const image_limits *limits, image_rgb *out,
                               llava_error *err);
void image_free(image_rgb *img);

/* ---- preprocessing (CLIPImageProcessor, transformers 4.40) ----
 * The steps, in order, each only when the config asks for it:
 *   cfg->do_pad          expand to a square filled with tuple(int(255*m) for m in image_mean),
 *                        the image centred (LLaVA's "pad" aspect mode; llava-hf does not pad)
 *   cfg->do_resize       shortest_edge S: short side -> S, long side -> int(S * long / short);
 *                        or resize_height x resize_width; Pillow's filter cfg->resample on uint8
 *   cfg->do_center_crop  crop_height x crop_width at ((h - ch) // 2, (w - cw) // 2), zero-padded
 *                        where the image is smaller (as transformers' center_crop does)
 *   cfg->do_rescale      float32(uint8 * rescale_factor computed in double)
 *   cfg->do_normalize    (x - mean) / std in float32
 * To turn on pad mode for one call, pass a copy of the config with do_pad set. */

/* The output size (height, width) of preprocessing an image of width x height. */
llava_status image_preprocess_size(const hf_preprocess_config *cfg, int width, int height,
                                   int *out_height, int *out_width, llava_error *err);

/* Pad, resize and crop, stopping before rescale: the 8-bit image that transformers rescales
 * (what tests compare with Pillow). rgb is [height][width][3]. The caller frees *out. */
llava_status image_preprocess_u8(const uint8_t *rgb, int width, int height,
                                 const hf_preprocess_config *cfg, image_rgb *out,
                                 llava_error *err);

/* The whole pipeline: pixel_values as float32 [3][out_h][out_w] (CHW) into out, which holds
 * out_cap floats (LLAVA_ERR_INVALID_ARGUMENT if too small; image_preprocess_size tells how many).
 * Thread-safe; allocates only temporaries. */
llava_status image_preprocess(const uint8_t *rgb, int width, int height,
                              const hf_preprocess_config *cfg, float *out, size_t out_cap,
                              int *out_height, int *out_width, llava_error *err);

/* image_decode_memory + image_preprocess in one call, with the same result, for bytes from
 * outside. JPEGs that need no rotation are resized as they are decoded (rows go through the
 * horizontal pass straight from the decoder), so the full-size image is never held: less
 * memory and time for large photos. limits NULL = defaults. */
llava_status image_decode_preprocess(const void *bytes, size_t len, const image_limits *limits,
                                     const hf_preprocess_config *cfg, float *out, size_t out_cap,
                                     int *out_height, int *out_width, llava_error *err);

/* Pillow's Image.resize(size, resample) of an RGB8 image (resample: 0 nearest, 1 lanczos,
 * 2 bilinear, 3 bicubic, 4 box, 5 hamming), bit-exact with Pillow 9.4's 8-bit fixed-point path. */
llava_status image_resize(const uint8_t *rgb, int width, int height, int new_width,
                          int new_height, int resample, image_rgb *out, llava_error *err);

#endif
