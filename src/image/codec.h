/* Internal interface between decode.c (format detection, limits, EXIF transpose) and the one file
 * per container format that turns bytes into RGB8 the way Pillow 9.4 does for that format. */
#ifndef LLAVA_IMAGE_CODEC_H
#define LLAVA_IMAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

/* What a format decoder hands back: pixels (w*h*3 bytes from image_alloc_rgb) and the
 * orientation found in its metadata (0 or 1 = none). */
typedef struct image_decoded {
    int width, height;
    uint8_t *rgb;
    int orientation;
} image_decoded;

/* Each fills *out on success; on failure leaves out->rgb NULL (nothing to free) and names the
 * format and the problem in err. They check the declared size against lim before decoding. */
llava_status image_decode_jpeg(const uint8_t *bytes, size_t len, const image_limits *lim,
                               image_decoded *out, llava_error *err);
llava_status image_decode_png(const uint8_t *bytes, size_t len, const image_limits *lim,
                              image_decoded *out, llava_error *err);
llava_status image_decode_webp(const uint8_t *bytes, size_t len, const image_limits *lim,
                               image_decoded *out, llava_error *err);
llava_status image_decode_gif(const uint8_t *bytes, size_t len, const image_limits *lim,
                              image_decoded *out, llava_error *err);
llava_status image_decode_bmp(const uint8_t *bytes, size_t len, const image_limits *lim,
                              image_decoded *out, llava_error *err);

/* Rows as the JPEG decoder produces them, for pipelines that never need the whole image.
 * begin() learns the size and the EXIF orientation from the header and sets *take to receive
 * the rows (else nothing more is decoded); rows() then gets every row in order, in batches of
 * up to 16 (rgb holds n rows of width * 3 bytes; vector loads may read up to `end`). */
typedef struct image_row_sink {
    llava_status (*begin)(void *user, int width, int height, int orientation, bool *take,
                          llava_error *err);
    void (*rows)(void *user, const uint8_t *rgb, const uint8_t *end, int y, int n);
    void *user;
} image_row_sink;

/* *streamed tells whether the sink took the rows (on success). */
llava_status image_decode_jpeg_stream(const uint8_t *bytes, size_t len, const image_limits *lim,
                                      const image_row_sink *sink, int *streamed,
                                      llava_error *err);

/* LLAVA_ERR_FORMAT for a zero size, LLAVA_ERR_LIMIT past lim; messages start with `format`. */
llava_status image_check_limits(const image_limits *lim, const char *format, int64_t width,
                                int64_t height, llava_error *err);

/* width*height*3 bytes (plus slack so vector loops may read a few bytes past the end); NULL if
 * out of memory. Release with free(). */
uint8_t *image_alloc_rgb(int width, int height);

/* The Orientation tag (0x0112) of EXIF data (a TIFF structure, with or without the leading
 * "Exif\0\0"), read as Pillow's Exif class reads it: 1..8, or 0 when absent or unreadable. */
int image_exif_orientation(const uint8_t *data, size_t len);

/* The orientation Pillow takes from XMP text when EXIF has none: the first match of
 * `tiff:Orientation(="|>)([0-9])`; 0 when there is none. */
int image_xmp_orientation(const char *xmp, size_t len);

#endif
