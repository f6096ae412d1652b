/* Internal: the two separable passes of Pillow's 8-bit resampling (Resample.c), with the
 * fixed-point coefficients it uses, shared by the scalar reference (resize.c) and the AVX2
 * kernels (resize_avx2.c), which must give identical bytes. */
#ifndef LLAVA_IMAGE_RESAMPLE_H
#define LLAVA_IMAGE_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* Pillow's PRECISION_BITS = 32 - 8 - 2: coefficients are fixed point with 22 fractional bits,
 * sums start at half an 8-bit step and are shifted back and clamped to 0..255. */
#define RESAMPLE_PRECISION_BITS 22

/* Coefficients of one direction: output i reads `count[i]` inputs from `first[i]`, weighted by
 * kk[i * ksize + j] (j < count[i]; the rest are 0). */
typedef struct resample_coeffs {
    int out_size;
    int ksize;
    int *first;  /* [out_size] */
    int *count;  /* [out_size] */
    int32_t *kk; /* [out_size][ksize] */
    int16_t *kc; /* kk rearranged for resample_h_avx2 (resample_h_avx2_prepare), or NULL */
} resample_coeffs;

/* One horizontal pass over rows [y0, y1) of src (src_w pixels wide, rows of src_stride bytes)
 * into dst rows 0..y1-y0 (c->out_size pixels wide, rows of dst_stride bytes). src_end bounds
 * what may be read (vector loads stop before it). */
typedef void (*resample_h_fn)(const uint8_t *src, size_t src_stride, const uint8_t *src_end,
                              int y0, int y1, const resample_coeffs *c, uint8_t *dst,
                              size_t dst_stride);
/* One vertical pass: every dst row i mixes src rows first[i].. (width bytes per row). */
typedef void (*resample_v_fn)(const uint8_t *src, size_t src_stride, int width_bytes,
                              const resample_coeffs *c, uint8_t *dst, size_t dst_stride);

void resample_h_scalar(const uint8_t *src, size_t src_stride, const uint8_t *src_end, int y0,
                       int y1, const resample_coeffs *c, uint8_t *dst, size_t dst_stride);
void resample_v_scalar(const uint8_t *src, size_t src_stride, int width_bytes,
                       const resample_coeffs *c, uint8_t *dst, size_t dst_stride);
void resample_h_avx2(const uint8_t *src, size_t src_stride, const uint8_t *src_end, int y0,
                     int y1, const resample_coeffs *c, uint8_t *dst, size_t dst_stride);
void resample_v_avx2(const uint8_t *src, size_t src_stride, int width_bytes,
                     const resample_coeffs *c, uint8_t *dst, size_t dst_stride);
/* Builds c->kc once, for coefficients used over many calls (else each call builds its own);
 * returns 0, or -1 when out of memory (calls then fall back to building their own). */
int resample_h_avx2_prepare(resample_coeffs *c);

/* Outputs [rx, rx + rw) x [ry, ry + rh) of Pillow's resize of rgb (width x height) to
 * new_width x new_height with filter `resample` (Pillow codes 0..5), written to dst rows of
 * dst_stride bytes. Each output pixel is what the full resize gives there: the passes only skip
 * work outside the window. */
llava_status resample_region(const uint8_t *rgb, int width, int height, int new_width,
                             int new_height, int resample, int rx, int ry, int rw, int rh,
                             uint8_t *dst, size_t dst_stride, llava_error *err);

/* Pillow's two passes fed with source rows as they arrive (from a decoder), for a resize that
 * changes both width and height with a convolution filter (resample 1..5): only the window
 * [rx, rx + rw) x [ry, ry + rh) of the resized image is computed, and only the horizontal results
 * of the source rows [y_first, y_last) that the vertical pass reads are kept. */
typedef struct resample_stream {
    resample_coeffs ch, cv;  /* window coefficients; cv.first relative to y_first */
    int src_w, y_first, y_last;
    uint8_t *tmp;            /* [y_last - y_first][rw * 3]: horizontal pass results */
    size_t tmp_stride;
    resample_h_fn hpass;
    resample_v_fn vpass;
} resample_stream;

llava_status resample_stream_init(resample_stream *s, int width, int height, int new_width,
                                  int new_height, int resample, int rx, int ry, int rw, int rh,
                                  llava_error *err);
/* Source rows [y, y + n) at rows (stride width * 3; reads stop before end). Rows may come in any
 * batches, in order; those outside [y_first, y_last) are ignored. */
void resample_stream_rows(resample_stream *s, const uint8_t *rows, const uint8_t *end, int y,
                          int n);
/* The vertical pass, once every row in [y_first, y_last) has been given: rh rows of rw pixels. */
void resample_stream_finish(resample_stream *s, uint8_t *dst, size_t dst_stride);
void resample_stream_free(resample_stream *s);

/* Pillow's clip8: the fixed-point sum back to a byte. */
static inline uint8_t resample_clip8(int32_t v) {
    v >>= RESAMPLE_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

#endif
