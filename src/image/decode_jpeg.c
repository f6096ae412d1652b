/* JPEG through libjpeg-turbo with the settings Pillow 9.4 uses (default DCT, fancy upsampling,
 * libjpeg's colour-space guess), so pixels match Pillow exactly; 4-component files are read as
 * Adobe-inverted CMYK and converted with Pillow's cmyk2rgb. libjpeg reports errors by longjmp:
 * everything it may skip over lives in one heap context freed on both paths. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "image/codec.h"

/* Legitimate progressive files have about ten scans; thousands of tiny scans are a known way to
 * make a small file cost minutes of CPU. */
#define JPEG_MAX_SCANS 200

typedef struct jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    char message[JMSG_LENGTH_MAX];
    uint8_t *rgb;    /* output, w*h*3 */
    uint8_t *row;    /* one CMYK row */
    int started;     /* jpeg_create_decompress done */
} jpeg_ctx;

static void on_error(j_common_ptr c) {
    jpeg_ctx *ctx = (jpeg_ctx *)c->client_data;
    c->err->format_message(c, ctx->message);
    longjmp(ctx->jmp, 1);
}

/* Warnings are ignored as Pillow ignores them (corrupt entropy data still decodes), except the
 * end of the data before the image is complete: Pillow fails with "image file is truncated". */
static void on_message(j_common_ptr c, int level) {
    if (level == -1 && c->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_ctx *ctx = (jpeg_ctx *)c->client_data;
        snprintf(ctx->message, sizeof ctx->message, "truncated data (the file ends before the "
                 "image is complete)");
        longjmp(ctx->jmp, 1);
    }
    if (level == -1) c->err->num_warnings++;
}

static void on_progress(j_common_ptr c) {
    struct jpeg_decompress_struct *d = (struct jpeg_decompress_struct *)c;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_ctx *ctx = (jpeg_ctx *)c->client_data;
        snprintf(ctx->message, sizeof ctx->message, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(ctx->jmp, 1);
    }
}

/* Pillow's CMYK;I unpacker (255 - v) then Convert.c cmyk2rgb, with MULDIV255 rounding. */
static void cmyk_row_to_rgb(const uint8_t *in, uint8_t *out, int width) {
    for (int x = 0; x < width; x++, in += 4, out += 3) {
        int nk = in[3]; /* 255 - (255 - k) */
        for (int c = 0; c < 3; c++) {
            int t = (255 - in[c]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* The first APP1 segment that starts with "Exif\0" (Pillow keeps the first one). */
static int exif_orientation(struct jpeg_decompress_struct *cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 5 && !memcmp(m->data, "Exif\0", 5))
            return image_exif_orientation(m->data, m->data_length);
    return 0;
}

#define JPEG_BATCH 16 /* rows per jpeg_read_scanlines call (an MCU row is 8 or 16) */

/* Decodes into ctx->rgb (whole image), or, with a sink that takes them, through a buffer of
 * JPEG_BATCH rows handed to the sink (out then stays empty). */
static llava_status decode(jpeg_ctx *ctx, const uint8_t *bytes, size_t len,
                           const image_limits *lim, const image_row_sink *sink, int *streamed,
                           image_decoded *out, llava_error *err) {
    struct jpeg_decompress_struct *cinfo = &ctx->cinfo;
    jpeg_mem_src(cinfo, bytes, (unsigned long)len);
    jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
    if (jpeg_read_header(cinfo, TRUE) != JPEG_HEADER_OK)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "JPEG: no image in the data");
    llava_status st = image_check_limits(lim, "JPEG", cinfo->image_width, cinfo->image_height,
                                         err);
    if (st != LLAVA_OK) return st;
    int comps = cinfo->num_components;
    if (comps == 1 || comps == 3)
        cinfo->out_color_space = JCS_RGB; /* gray is replicated, as Pillow's L -> RGB */
    else if (comps == 4)
        cinfo->out_color_space = JCS_CMYK;
    else
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED,
                               "JPEG: cannot handle %d-component images", comps);
    out->orientation = exif_orientation(cinfo);
    if (sink) {
        bool take = false;
        st = sink->begin(sink->user, (int)cinfo->image_width, (int)cinfo->image_height,
                         out->orientation, &take, err);
        if (st != LLAVA_OK || !take) return st;
        *streamed = 1;
    }
    jpeg_start_decompress(cinfo);
    int w = (int)cinfo->output_width, h = (int)cinfo->output_height;
    size_t stride = (size_t)w * 3;
    uint8_t *base = ctx->rgb = image_alloc_rgb(w, sink ? JPEG_BATCH : h);
    if (comps == 4) ctx->row = malloc((size_t)w * 4);
    if (!ctx->rgb || (comps == 4 && !ctx->row))
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "JPEG: out of memory for %dx%d pixels", w,
                               h);
    const uint8_t *end = base + stride * (sink ? JPEG_BATCH : h);
    /* Several rows per call; CMYK goes through one row buffer at a time. */
    while (cinfo->output_scanline < cinfo->output_height) {
        JDIMENSION y = cinfo->output_scanline;
        uint8_t *dst = sink ? base : base + (size_t)y * stride;
        JSAMPROW rows[JPEG_BATCH];
        int n = 1;
        if (comps == 4) {
            rows[0] = ctx->row;
        } else {
            JDIMENSION left = cinfo->output_height - y;
            n = (int)(left < JPEG_BATCH ? left : JPEG_BATCH);
            for (int i = 0; i < n; i++) rows[i] = dst + (size_t)i * stride;
        }
        JDIMENSION got = jpeg_read_scanlines(cinfo, rows, (JDIMENSION)n);
        if (got == 0)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "JPEG: decoding stopped at row %u", y);
        if (comps == 4) cmyk_row_to_rgb(ctx->row, dst, w);
        if (sink) sink->rows(sink->user, base, end, (int)y, (int)got);
    }
    /* Trailing data after the last row is not read: Pillow does not read it either. */
    jpeg_abort_decompress(cinfo);
    if (sink) return LLAVA_OK; /* ctx->rgb, the batch buffer, is freed with the context */
    out->width = w;
    out->height = h;
    out->rgb = ctx->rgb;
    ctx->rgb = NULL;
    return LLAVA_OK;
}

static llava_status run(const uint8_t *bytes, size_t len, const image_limits *lim,
                        const image_row_sink *sink, int *streamed, image_decoded *out,
                        llava_error *err) {
    memset(out, 0, sizeof *out);
    jpeg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "JPEG: out of memory");
    llava_status st;
    if (setjmp(ctx->jmp)) {
        st = llava_error_set(err, LLAVA_ERR_FORMAT, "JPEG: %s", ctx->message);
    } else {
        ctx->cinfo.err = jpeg_std_error(&ctx->jerr);
        ctx->jerr.error_exit = on_error;
        ctx->jerr.emit_message = on_message;
        ctx->cinfo.client_data = ctx;
        jpeg_create_decompress(&ctx->cinfo);
        ctx->started = 1;
        ctx->progress.progress_monitor = on_progress;
        ctx->cinfo.progress = &ctx->progress;
        st = decode(ctx, bytes, len, lim, sink, streamed, out, err);
    }
    if (ctx->started) jpeg_destroy_decompress(&ctx->cinfo);
    free(ctx->rgb);
    free(ctx->row);
    free(ctx);
    return st;
}

llava_status image_decode_jpeg_stream(const uint8_t *bytes, size_t len, const image_limits *lim,
                                      const image_row_sink *sink, int *streamed,
                                      llava_error *err) {
    image_decoded unused;
    *streamed = 0;
    return run(bytes, len, lim, sink, streamed, &unused, err);
}

llava_status image_decode_jpeg(const uint8_t *bytes, size_t len, const image_limits *lim,
                               image_decoded *out, llava_error *err) {
    int streamed = 0;
    llava_status st = run(bytes, len, lim, NULL, &streamed, out, err);
    if (st != LLAVA_OK) memset(out, 0, sizeof *out);
    return st;
}
