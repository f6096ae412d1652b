/* Pillow 9.4's Image.resize for RGB8, bit for bit: the convolution filters and coefficient
 * precomputation of Resample.c (in double, then 22-bit fixed point), a horizontal pass then a
 * vertical pass with rounding and clamping to 8 bits after each, and the affine nearest-neighbour
 * path of Geometry.c for NEAREST. The scalar passes here are the reference the AVX2 ones match. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "image/resample.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ---- filters (Resample.c) ---- */

static double box_filter(double x) {
    if (x > -0.5 && x <= 0.5) return 1.0;
    return 0.0;
}

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

static double hamming_filter(double x) {
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    return sin(x) / x * (0.54f + 0.46f * cos(x)); /* float constants, as in Pillow */
}

static double bicubic_filter(double x) {
    /* Keys' cubic convolution with a = -0.5 */
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc_filter(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos_filter(double x) {
    /* truncated sinc: -3 <= x < 3 */
    if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
    return 0.0;
}

typedef struct filter_def {
    double (*fn)(double);
    double support;
} filter_def;

/* Indexed by Pillow's resample codes: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING. */
static const filter_def filters[6] = {
    {NULL, 0}, {lanczos_filter, 3.0}, {bilinear_filter, 1.0}, {bicubic_filter, 2.0},
    {box_filter, 0.5}, {hamming_filter, 1.0},
};

static void coeffs_free(resample_coeffs *c) {
    free(c->first);
    free(c->count);
    free(c->kk);
    free(c->kc);
    memset(c, 0, sizeof *c);
}

/* precompute_coeffs + normalize_coeffs_8bpc of Resample.c for the box [0, in_size) scaled to
 * out_size, for outputs [from, from + n) only. */
static llava_status coeffs_make(int in_size, int out_size, int from, int n, const filter_def *f,
                                resample_coeffs *c, llava_error *err) {
    memset(c, 0, sizeof *c);
    double in0 = 0.0, in1 = (double)(float)in_size;
    double scale, filterscale;
    filterscale = scale = (in1 - in0) / out_size;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = f->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *k = malloc(sizeof *k * (size_t)ksize);
    c->first = malloc(sizeof *c->first * (size_t)n);
    c->count = malloc(sizeof *c->count * (size_t)n);
    c->kk = calloc((size_t)n * (size_t)ksize, sizeof *c->kk);
    if (!k || !c->first || !c->count || !c->kk) {
        free(k);
        coeffs_free(c);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "resize: out of memory for filters");
    }
    c->out_size = n;
    c->ksize = ksize;
    for (int xx = from; xx < from + n; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5); /* rounds, as Pillow does */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double w = f->fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        int32_t *kk = c->kk + (size_t)(xx - from) * ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? k[x] / ww : k[x];
            kk[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << RESAMPLE_PRECISION_BITS))
                          : (int32_t)(0.5 + v * (1 << RESAMPLE_PRECISION_BITS));
        }
        c->first[xx - from] = xmin;
        c->count[xx - from] = xmax;
    }
    free(k);
    return LLAVA_OK;
}

/* ---- scalar passes (ImagingResampleHorizontal_8bpc / Vertical_8bpc) ---- */

void resample_h_scalar(const uint8_t *src, size_t src_stride, const uint8_t *src_end, int y0,
                       int y1, const resample_coeffs *c, uint8_t *dst, size_t dst_stride) {
    (void)src_end;
    const int32_t half = 1 << (RESAMPLE_PRECISION_BITS - 1);
    for (int y = y0; y < y1; y++) {
        const uint8_t *in = src + (size_t)y * src_stride;
        uint8_t *out = dst + (size_t)(y - y0) * dst_stride;
        for (int xx = 0; xx < c->out_size; xx++) {
            const int32_t *k = c->kk + (size_t)xx * c->ksize;
            const uint8_t *p = in + (size_t)c->first[xx] * 3;
            int32_t s0 = half, s1 = half, s2 = half;
            for (int x = 0; x < c->count[xx]; x++) {
                s0 += p[3 * x] * k[x];
                s1 += p[3 * x + 1] * k[x];
                s2 += p[3 * x + 2] * k[x];
            }
            out[3 * xx] = resample_clip8(s0);
            out[3 * xx + 1] = resample_clip8(s1);
            out[3 * xx + 2] = resample_clip8(s2);
        }
    }
}

void resample_v_scalar(const uint8_t *src, size_t src_stride, int width_bytes,
                       const resample_coeffs *c, uint8_t *dst, size_t dst_stride) {
    const int32_t half = 1 << (RESAMPLE_PRECISION_BITS - 1);
    for (int yy = 0; yy < c->out_size; yy++) {
        const int32_t *k = c->kk + (size_t)yy * c->ksize;
        const uint8_t *in = src + (size_t)c->first[yy] * src_stride;
        uint8_t *out = dst + (size_t)yy * dst_stride;
        for (int i = 0; i < width_bytes; i++) {
            int32_t s = half;
            for (int y = 0; y < c->count[yy]; y++) s += in[(size_t)y * src_stride + i] * k[y];
            out[i] = resample_clip8(s);
        }
    }
}

/* ---- NEAREST: ImagingScaleAffine with Pillow's incremental coordinates ---- */

static int nearest_coord(double v) { return v < 0.0 ? -1 : (int)v; }

static llava_status region_nearest(const uint8_t *rgb, int w, int h, int nw, int nh, int rx,
                                   int ry, int rw, int rh, uint8_t *dst, size_t dst_stride,
                                   llava_error *err) {
    double a0 = (double)w / nw, a4 = (double)h / nh;
    int *xin = malloc(sizeof *xin * (size_t)nw);
    if (!xin) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "resize: out of memory");
    double xo = a0 * 0.5;
    for (int x = 0; x < nw; x++) {
        int xi = nearest_coord(xo);
        xin[x] = xi < 0 ? 0 : xi >= w ? w - 1 : xi;
        xo += a0;
    }
    double yo = a4 * 0.5;
    for (int y = 0; y < ry + rh; y++, yo += a4) {
        if (y < ry) continue;
        int yi = nearest_coord(yo);
        yi = yi < 0 ? 0 : yi >= h ? h - 1 : yi;
        const uint8_t *in = rgb + (size_t)yi * w * 3;
        uint8_t *out = dst + (size_t)(y - ry) * dst_stride;
        for (int x = 0; x < rw; x++) memcpy(out + 3 * x, in + 3 * xin[rx + x], 3);
    }
    free(xin);
    return LLAVA_OK;
}

/* ---- Image.resize ---- */

static int have_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

llava_status resample_region(const uint8_t *rgb, int width, int height, int new_width,
                             int new_height, int resample, int rx, int ry, int rw, int rh,
                             uint8_t *dst, size_t dst_stride, llava_error *err) {
    if (!rgb || width <= 0 || height <= 0 || new_width <= 0 || new_height <= 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "resize: invalid sizes %dx%d -> %dx%d", width, height, new_width,
                               new_height);
    if (resample < 0 || resample > 5)
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED,
                               "resize: unknown resample filter %d (Pillow codes 0..5)", resample);
    if (rx < 0 || ry < 0 || rw <= 0 || rh <= 0 || rx > new_width - rw || ry > new_height - rh)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "resize: region out of bounds");
    size_t in_stride = (size_t)width * 3;
    const uint8_t *in_end = rgb + in_stride * height;
    bool need_h = new_width != width, need_v = new_height != height;
    if (!need_h && !need_v) { /* Pillow returns a copy */
        for (int y = 0; y < rh; y++)
            memcpy(dst + (size_t)y * dst_stride, rgb + (size_t)(ry + y) * in_stride + rx * 3,
                   (size_t)rw * 3);
        return LLAVA_OK;
    }
    if (resample == 0)
        return region_nearest(rgb, width, height, new_width, new_height, rx, ry, rw, rh, dst,
                              dst_stride, err);
    if (need_h && need_v) { /* the two-pass case, through the row stream */
        resample_stream rs;
        llava_status st = resample_stream_init(&rs, width, height, new_width, new_height,
                                               resample, rx, ry, rw, rh, err);
        if (st != LLAVA_OK) return st;
        resample_stream_rows(&rs, rgb, in_end, 0, height);
        resample_stream_finish(&rs, dst, dst_stride);
        resample_stream_free(&rs);
        return LLAVA_OK;
    }
    int avx2 = have_avx2();
    resample_coeffs c = {0};
    llava_status st;
    if (need_h) {
        st = coeffs_make(width, new_width, rx, rw, &filters[resample], &c, err);
        if (st != LLAVA_OK) return st;
        (avx2 ? resample_h_avx2 : resample_h_scalar)(rgb, in_stride, in_end, ry, ry + rh, &c, dst,
                                                     dst_stride);
    } else {
        st = coeffs_make(height, new_height, ry, rh, &filters[resample], &c, err);
        if (st != LLAVA_OK) return st;
        (avx2 ? resample_v_avx2 : resample_v_scalar)(rgb + (size_t)rx * 3, in_stride, rw * 3, &c,
                                                     dst, dst_stride);
    }
    coeffs_free(&c);
    return LLAVA_OK;
}

/* ---- the two passes fed row by row ---- */

llava_status resample_stream_init(resample_stream *s, int width, int height, int new_width,
                                  int new_height, int resample, int rx, int ry, int rw, int rh,
                                  llava_error *err) {
    memset(s, 0, sizeof *s);
    if (resample < 1 || resample > 5)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "resize: filter %d cannot stream",
                               resample);
    int avx2 = have_avx2();
    s->hpass = avx2 ? resample_h_avx2 : resample_h_scalar;
    s->vpass = avx2 ? resample_v_avx2 : resample_v_scalar;
    s->src_w = width;
    llava_status st = coeffs_make(width, new_width, rx, rw, &filters[resample], &s->ch, err);
    if (st == LLAVA_OK)
        st = coeffs_make(height, new_height, ry, rh, &filters[resample], &s->cv, err);
    if (st != LLAVA_OK) {
        resample_stream_free(s);
        return st;
    }
    if (avx2) resample_h_avx2_prepare(&s->ch); /* once, not per batch of rows */
    s->y_first = s->cv.first[0];
    s->y_last = s->cv.first[rh - 1] + s->cv.count[rh - 1];
    for (int i = 0; i < rh; i++) s->cv.first[i] -= s->y_first;
    s->tmp_stride = (size_t)rw * 3;
    s->tmp = image_alloc_rgb(rw, s->y_last - s->y_first);
    if (!s->tmp) {
        resample_stream_free(s);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "resize: out of memory");
    }
    return LLAVA_OK;
}

void resample_stream_rows(resample_stream *s, const uint8_t *rows, const uint8_t *end, int y,
                          int n) {
    int a = y > s->y_first ? y : s->y_first, b = y + n < s->y_last ? y + n : s->y_last;
    if (a >= b) return;
    s->hpass(rows, (size_t)s->src_w * 3, end, a - y, b - y, &s->ch,
             s->tmp + (size_t)(a - s->y_first) * s->tmp_stride, s->tmp_stride);
}

void resample_stream_finish(resample_stream *s, uint8_t *dst, size_t dst_stride) {
    s->vpass(s->tmp, s->tmp_stride, (int)s->tmp_stride, &s->cv, dst, dst_stride);
}

void resample_stream_free(resample_stream *s) {
    coeffs_free(&s->ch);
    coeffs_free(&s->cv);
    free(s->tmp);
    s->tmp = NULL;
}

llava_status image_resize(const uint8_t *rgb, int width, int height, int new_width,
                          int new_height, int resample, image_rgb *out, llava_error *err) {
    memset(out, 0, sizeof *out);
    if (new_width <= 0 || new_height <= 0 || (int64_t)new_width * new_height > ((int64_t)1 << 31))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "resize: invalid size %dx%d",
                               new_width, new_height);
    uint8_t *dst = image_alloc_rgb(new_width, new_height);
    if (!dst) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "resize: out of memory");
    llava_status st = resample_region(rgb, width, height, new_width, new_height, resample, 0, 0,
                                      new_width, new_height, dst, (size_t)new_width * 3, err);
    if (st != LLAVA_OK) {
        free(dst);
        return st;
    }
    out->width = new_width;
    out->height = new_height;
    out->rgb = dst;
    out->orientation = 1;
    return LLAVA_OK;
}
