/* Decoding entry points: the format is detected from the magic bytes, the format's decoder
 * (decode_<format>.c) yields RGB8, and the EXIF orientation is applied as ImageOps.exif_transpose
 * applies it (Pillow's Image.transpose methods). */
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "image/codec.h"

/* Decoders' vector loops may over-read the end of a pixel buffer by up to this many bytes. */
#define IMAGE_SLACK 64

void image_limits_default(image_limits *out) {
    out->max_width = 16384;
    out->max_height = 16384;
    out->max_pixels = (int64_t)64 << 20;
}

image_format image_detect_format(const void *bytes, size_t len) {
    const uint8_t *b = bytes;
    if (!b) return IMAGE_FORMAT_UNKNOWN;
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return IMAGE_FORMAT_JPEG;
    if (len >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return IMAGE_FORMAT_PNG;
    if (len >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return IMAGE_FORMAT_WEBP;
    if (len >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) return IMAGE_FORMAT_GIF;
    if (len >= 2 && b[0] == 'B' && b[1] == 'M') return IMAGE_FORMAT_BMP;
    return IMAGE_FORMAT_UNKNOWN;
}

const char *image_format_name(image_format f) {
    switch (f) {
    case IMAGE_FORMAT_JPEG: return "JPEG";
    case IMAGE_FORMAT_PNG: return "PNG";
    case IMAGE_FORMAT_WEBP: return "WebP";
    case IMAGE_FORMAT_GIF: return "GIF";
    case IMAGE_FORMAT_BMP: return "BMP";
    default: return "unknown";
    }
}

llava_status image_check_limits(const image_limits *lim, const char *format, int64_t width,
                                int64_t height, llava_error *err) {
    if (width <= 0 || height <= 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: invalid image size %lldx%lld", format,
                               (long long)width, (long long)height);
    if (width > lim->max_width || height > lim->max_height || width * height > lim->max_pixels)
        return llava_error_set(err, LLAVA_ERR_LIMIT,
                               "%s: image of %lldx%lld pixels exceeds the limit (%dx%d, %lld "
                               "pixels)",
                               format, (long long)width, (long long)height, lim->max_width,
                               lim->max_height, (long long)lim->max_pixels);
    return LLAVA_OK;
}

uint8_t *image_alloc_rgb(int width, int height) {
    size_t n = (size_t)width * (size_t)height * 3;
    uint8_t *p = malloc(n + IMAGE_SLACK);
    if (p) memset(p + n, 0, IMAGE_SLACK); /* read (times a zero weight) by vector loops */
    return p;
}

/* Pillow's transpose methods, by EXIF orientation (ImageOps.exif_transpose's table):
 * 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE,
 * 8 ROTATE_90. For each output pixel (x, y) of the W'xH' result, the source pixel in the WxH
 * input. */
static void orient_source(int orientation, int w, int h, int x, int y, int *sx, int *sy) {
    switch (orientation) {
    case 2: *sx = w - 1 - x; *sy = y; break;
    case 3: *sx = w - 1 - x; *sy = h - 1 - y; break;
    case 4: *sx = x; *sy = h - 1 - y; break;
    case 5: *sx = y; *sy = x; break;
    case 6: *sx = y; *sy = h - 1 - x; break;
    case 7: *sx = w - 1 - y; *sy = h - 1 - x; break;
    case 8: *sx = w - 1 - y; *sy = x; break;
    default: *sx = x; *sy = y; break;
    }
}

static llava_status apply_orientation(image_decoded *d, llava_error *err) {
    int o = d->orientation;
    if (o < 2 || o > 8) return LLAVA_OK;
    int w = d->width, h = d->height;
    int ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
    uint8_t *dst = image_alloc_rgb(ow, oh);
    if (!dst) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "image: out of memory rotating");
    for (int y = 0; y < oh; y++) {
        uint8_t *row = dst + (size_t)y * ow * 3;
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            orient_source(o, w, h, x, y, &sx, &sy);
            memcpy(row + (size_t)x * 3, d->rgb + ((size_t)sy * w + sx) * 3, 3);
        }
    }
    free(d->rgb);
    d->rgb = dst;
    d->width = ow;
    d->height = oh;
    return LLAVA_OK;
}

llava_status image_decode_memory(const void *bytes, size_t len, const image_limits *limits,
                                 image_rgb *out, llava_error *err) {
    if (!out) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "image: no output");
    memset(out, 0, sizeof *out);
    if (!bytes && len) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "image: no data");
    image_limits lim;
    if (limits)
        lim = *limits;
    else
        image_limits_default(&lim);
    image_format f = image_detect_format(bytes, len);
    image_decoded d = {0};
    llava_status st;
    switch (f) {
    case IMAGE_FORMAT_JPEG: st = image_decode_jpeg(bytes, len, &lim, &d, err); break;
    case IMAGE_FORMAT_PNG: st = image_decode_png(bytes, len, &lim, &d, err); break;
    case IMAGE_FORMAT_WEBP: st = image_decode_webp(bytes, len, &lim, &d, err); break;
    case IMAGE_FORMAT_GIF: st = image_decode_gif(bytes, len, &lim, &d, err); break;
    case IMAGE_FORMAT_BMP: st = image_decode_bmp(bytes, len, &lim, &d, err); break;
    default:
        if (len == 0) return llava_error_set(err, LLAVA_ERR_FORMAT, "image: empty data");
        return llava_error_set(
            err, LLAVA_ERR_UNSUPPORTED,
            "image: unknown format (first bytes %02x %02x %02x %02x; expected "
            "JPEG, PNG, WebP, GIF or BMP)",
            ((const uint8_t *)bytes)[0], len > 1 ? ((const uint8_t *)bytes)[1] : 0,
            len > 2 ? ((const uint8_t *)bytes)[2] : 0, len > 3 ? ((const uint8_t *)bytes)[3] : 0);
    }
    if (st != LLAVA_OK) return st;
    st = apply_orientation(&d, err);
    if (st != LLAVA_OK) {
        free(d.rgb);
        return st;
    }
    out->width = d.width;
    out->height = d.height;
    out->rgb = d.rgb;
    out->format = f;
    out->orientation = d.orientation >= 2 && d.orientation <= 8 ? d.orientation : 1;
    return LLAVA_OK;
}

llava_status image_decode_file(const char *path, const image_limits *limits, image_rgb *out,
                               llava_error *err) {
    if (out) memset(out, 0, sizeof *out);
    char *data = NULL;
    size_t len = 0;
    llava_status st = llava_read_file(path, (size_t)256 << 20, &data, &len, err);
    if (st != LLAVA_OK) return st;
    st = image_decode_memory(data, len, limits, out, err);
    free(data);
    if (st != LLAVA_OK) llava_error_prefix(err, "%s", path);
    return st;
}

void image_free(image_rgb *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}
