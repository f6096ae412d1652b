/* PNG through libpng, reduced to RGB as Pillow 9.4 reduces each PNG mode: 16-bit samples keep
 * their high byte, except 16-bit gray without alpha (Pillow's mode I) which is clipped to 255;
 * palettes are looked up with Pillow's gray ramp for missing entries; alpha and tRNS are dropped;
 * no gamma or colour management. libpng reports errors by longjmp: everything it may skip over
 * lives in one heap context freed on both paths. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"

typedef struct png_ctx {
    png_structp png;
    png_infop info;
    jmp_buf jmp;
    char message[200];
    const uint8_t *data;
    size_t len, pos;
    uint8_t *rgb;       /* output, w*h*3 */
    png_bytep *rows;    /* row pointers into rgb */
    int in_end;         /* reading the chunks after the image data */
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
    png_ctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->message, sizeof ctx->message, "%s", msg);
    longjmp(ctx->jmp, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void on_read(png_structp png, png_bytep dst, png_size_t n) {
    png_ctx *ctx = png_get_io_ptr(png);
    if (ctx->len - ctx->pos < n) {
        snprintf(ctx->message, sizeof ctx->message,
                 "truncated data (needed %zu bytes at offset %zu, %zu left)", (size_t)n, ctx->pos,
                 ctx->len - ctx->pos);
        longjmp(ctx->jmp, 1);
    }
    memcpy(dst, ctx->data + ctx->pos, n);
    ctx->pos += n;
}

/* The hex dump of an ImageMagick "Raw profile type exif" text: three header lines, then hex
 * digits (whitespace ignored), as Pillow's getexif reads it. 0 when it is not valid hex. */
static int raw_profile_orientation(const char *text, size_t len) {
    size_t i = 0;
    for (int lines = 0; lines < 3 && i < len; i++)
        if (text[i] == '\n') lines++;
    uint8_t *bin = malloc(len / 2 + 1);
    if (!bin) return 0;
    size_t n = 0;
    int hi = -1;
    for (; i < len; i++) {
        char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0) {
            if (c == '\n' || c == ' ' || c == '\t' || c == '\r') continue;
            free(bin);
            return 0; /* Pillow's bytes.fromhex raises */
        }
        if (hi < 0) {
            hi = v;
        } else {
            bin[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    int o = hi < 0 ? image_exif_orientation(bin, n) : 0;
    free(bin);
    return o;
}

/* EXIF from an eXIf chunk, else from a "Raw profile type exif" text, else Pillow's fallback to
 * the XMP text "XML:com.adobe.xmp". */
static int png_orientation(png_ctx *ctx) {
    png_uint_32 n = 0;
    png_bytep exif = NULL;
    png_textp text = NULL;
    int nt = 0;
    png_get_text(ctx->png, ctx->info, &text, &nt);
    int o = 0;
    if (png_get_eXIf_1(ctx->png, ctx->info, &n, &exif) && exif && n) {
        o = image_exif_orientation(exif, n);
    } else {
        for (int i = 0; i < nt; i++)
            if (text[i].key && !strcmp(text[i].key, "Raw profile type exif") && text[i].text) {
                o = raw_profile_orientation(text[i].text, strlen(text[i].text));
                break;
            }
    }
    if (o) return o;
    for (int i = 0; i < nt; i++)
        if (text[i].key && !strcmp(text[i].key, "XML:com.adobe.xmp") && text[i].text)
            return image_xmp_orientation(text[i].text, strlen(text[i].text));
    return 0;
}

/* Rows come out of libpng in their reduced form at the start of each RGB row; these widen them
 * in place, right to left so that no source byte is overwritten before it is read. */
static void widen_gray8(uint8_t *row, int w) {
    for (int x = w - 1; x >= 0; x--) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = row[x];
}

static void widen_gray16_clip(uint8_t *row, int w) {
    for (int x = w - 1; x >= 0; x--) {
        unsigned v = (unsigned)row[2 * x] << 8 | row[2 * x + 1];
        row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = (uint8_t)(v > 255 ? 255 : v);
    }
}

static void widen_palette(uint8_t *row, int w, const uint8_t pal[256][3]) {
    for (int x = w - 1; x >= 0; x--) {
        const uint8_t *c = pal[row[x]];
        row[3 * x] = c[0];
        row[3 * x + 1] = c[1];
        row[3 * x + 2] = c[2];
    }
}

typedef enum { WIDEN_NONE, WIDEN_GRAY8, WIDEN_GRAY16, WIDEN_PALETTE } widen_kind;

static llava_status decode(png_ctx *ctx, const image_limits *lim, image_decoded *out,
                           llava_error *err) {
    png_structp png = ctx->png;
    png_infop info = ctx->info;
    png_set_read_fn(png, ctx, on_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    llava_status st = image_check_limits(lim, "PNG", w, h, err);
    if (st != LLAVA_OK) return st;
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);

    widen_kind widen = WIDEN_NONE;
    uint8_t pal[256][3];
    if (type == PNG_COLOR_TYPE_PALETTE) {
        /* Pillow's palette starts as a gray ramp; PLTE overwrites its first entries. */
        for (int i = 0; i < 256; i++) pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
        png_colorp plte = NULL;
        int n = 0;
        if (png_get_PLTE(png, info, &plte, &n))
            for (int i = 0; i < n && i < 256; i++) {
                pal[i][0] = plte[i].red;
                pal[i][1] = plte[i].green;
                pal[i][2] = plte[i].blue;
            }
        if (depth < 8) png_set_packing(png);
        widen = WIDEN_PALETTE;
    } else if (type == PNG_COLOR_TYPE_GRAY && depth == 16) {
        widen = WIDEN_GRAY16;
    } else {
        if (depth == 16) png_set_strip_16(png);
        if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
        if (!(type & PNG_COLOR_MASK_COLOR)) {
            /* 1, 2, 4 bits scale to 0..255 like Pillow's "1", L;2 and L;4 unpackers */
            if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
            widen = WIDEN_GRAY8;
        }
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t stride = (size_t)w * 3;
    if (png_get_rowbytes(png, info) > stride)
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "PNG: unexpected row size %zu",
                               (size_t)png_get_rowbytes(png, info));

    ctx->rgb = image_alloc_rgb((int)w, (int)h);
    ctx->rows = malloc(sizeof *ctx->rows * h);
    if (!ctx->rgb || !ctx->rows)
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "PNG: out of memory for %ux%u pixels",
                               (unsigned)w, (unsigned)h);
    for (png_uint_32 y = 0; y < h; y++) ctx->rows[y] = ctx->rgb + y * stride;
    png_read_image(png, ctx->rows);
    for (png_uint_32 y = 0; y < h; y++) {
        if (widen == WIDEN_GRAY8) widen_gray8(ctx->rows[y], (int)w);
        if (widen == WIDEN_GRAY16) widen_gray16_clip(ctx->rows[y], (int)w);
        if (widen == WIDEN_PALETTE) widen_palette(ctx->rows[y], (int)w, (const uint8_t(*)[3])pal);
    }
    out->width = (int)w;
    out->height = (int)h;
    out->rgb = ctx->rgb;
    ctx->rgb = NULL;
    return LLAVA_OK;
}

llava_status image_decode_png(const uint8_t *bytes, size_t len, const image_limits *lim,
                              image_decoded *out, llava_error *err) {
    memset(out, 0, sizeof *out);
    png_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "PNG: out of memory");
    ctx->data = bytes;
    ctx->len = len;
    llava_status st = LLAVA_OK;
    ctx->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning);
    if (ctx->png) ctx->info = png_create_info_struct(ctx->png);
    if (!ctx->png || !ctx->info) {
        st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "PNG: out of memory");
    } else if (setjmp(ctx->jmp)) {
        if (ctx->in_end) {
            /* Pillow stops reading the chunks after the image data at the first problem and
             * keeps the image; so do we, with the metadata read so far. (st is assigned again:
             * locals changed after setjmp are indeterminate after the longjmp.) */
            st = LLAVA_OK;
            out->orientation = png_orientation(ctx);
        } else {
            free(out->rgb);
            memset(out, 0, sizeof *out);
            st = llava_error_set(err, LLAVA_ERR_FORMAT, "PNG: %s", ctx->message);
        }
    } else {
        st = decode(ctx, lim, out, err);
        if (st == LLAVA_OK) {
            /* An eXIf chunk may follow the image data (Pillow then reads it on load). */
            ctx->in_end = 1;
            png_read_end(ctx->png, ctx->info);
            out->orientation = png_orientation(ctx);
        }
    }
    png_destroy_read_struct(ctx->png ? &ctx->png : NULL, ctx->info ? &ctx->info : NULL, NULL);
    free(ctx->rgb);
    free(ctx->rows);
    free(ctx);
    return st;
}
