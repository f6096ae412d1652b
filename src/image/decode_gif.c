/* GIF, first frame, as Pillow 9.4 loads it: the canvas is the logical screen grown to hold the
 * frame, filled with the frame's transparency index (else 0) and overwritten by the frame;
 * colours come from the local palette, else the global one, and indices past the palette (or
 * without one) are gray (i, i, i) as in Pillow's default palette ramp. The LZW decoder follows
 * Pillow's GifDecode.c: a frame that is not completely filled (end code, broken code or data
 * running out first) is an error, data after the last pixel is ignored. */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"

#define GIF_TABLE 4096 /* LZW codes, 12 bits */

typedef struct gif_reader {
    const uint8_t *p;
    size_t len, pos;
} gif_reader;

static int rd_byte(gif_reader *r, int *v) {
    if (r->pos >= r->len) return 0;
    *v = r->p[r->pos++];
    return 1;
}

/* Skips data sub-blocks up to and including the zero-length terminator. */
static int skip_blocks(gif_reader *r) {
    for (;;) {
        int n;
        if (!rd_byte(r, &n)) return 0;
        if (n == 0) return 1;
        if (r->len - r->pos < (size_t)n) return 0;
        r->pos += (size_t)n;
    }
}

/* Where the frame's pixels go, in Pillow's interlaced or straight row order. */
typedef struct frame_writer {
    uint8_t *idx; /* canvas indices, cw per row */
    int cw;
    int x0, y0, w, h;
    int x, y, step, pass; /* pass 0: not interlaced; 1..4: Adam-like GIF passes */
    int done;
} frame_writer;

static void put_pixel(frame_writer *f, uint8_t v) {
    f->idx[(size_t)(f->y0 + f->y) * f->cw + f->x0 + f->x] = v;
    if (++f->x < f->w) return;
    f->x = 0;
    f->y += f->step;
    while (f->y >= f->h) {
        switch (f->pass) {
        case 1: f->y = 4; f->pass = 2; break;
        case 2: f->y = 2; f->step = 4; f->pass = 3; break;
        case 3: f->y = 1; f->step = 2; f->pass = 4; break;
        default: f->done = 1; return;
        }
    }
}

/* LZW data in sub-blocks from r into f until the frame is full. */
static llava_status lzw_decode(gif_reader *r, int bits, frame_writer *f, llava_error *err) {
    if (bits < 0 || bits > 12)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: LZW code size %d (must be 0..12)",
                               bits);
    uint16_t *link = malloc(sizeof *link * GIF_TABLE);
    uint8_t *suffix = malloc(GIF_TABLE), *stack = malloc(GIF_TABLE + 1);
    if (!link || !suffix || !stack) {
        free(link);
        free(suffix);
        free(stack);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "GIF: out of memory");
    }
    const int clear = 1 << bits, end = clear + 1;
    int next = clear + 2, size = bits + 1, mask = (1 << size) - 1;
    int first = 1, last = 0, lastdata = 0;
    uint32_t acc = 0;
    int nbits = 0, block = 0;
    const char *problem = NULL;
    while (!f->done) {
        while (nbits < size) {
            if (block == 0) {
                if (!rd_byte(r, &block)) {
                    problem = "truncated data (the file ends before the image is complete)";
                    goto out;
                }
                continue; /* a zero-length block is just skipped, as Pillow does */
            }
            int c;
            if (!rd_byte(r, &c)) {
                problem = "truncated data (the file ends before the image is complete)";
                goto out;
            }
            block--;
            acc |= (uint32_t)c << nbits;
            nbits += 8;
        }
        int code = (int)(acc & (uint32_t)mask);
        acc >>= size;
        nbits -= size;
        if (code == clear) {
            next = clear + 2;
            size = bits + 1;
            mask = (1 << size) - 1;
            first = 1;
            continue;
        }
        if (code == end) {
            problem = "image data ends before the image is complete";
            goto out;
        }
        if (first) {
            if (code > clear) {
                problem = "broken LZW data (first code after a clear is not a literal)";
                goto out;
            }
            last = lastdata = code;
            first = 0;
            put_pixel(f, (uint8_t)code);
            continue;
        }
        if (code > next) {
            problem = "broken LZW data (code past the table)";
            goto out;
        }
        int n = 0, c = code;
        if (code == next) { /* the string just being defined: last string + its first byte */
            stack[n++] = (uint8_t)lastdata;
            c = last;
        }
        while (c >= clear) {
            if (n >= GIF_TABLE || c >= GIF_TABLE) {
                problem = "broken LZW data";
                goto out;
            }
            stack[n++] = suffix[c];
            c = link[c];
        }
        lastdata = c;
        if (next < GIF_TABLE) {
            suffix[next] = (uint8_t)c;
            link[next] = (uint16_t)last;
            if (next == mask && size < 12) {
                size++;
                mask = (1 << size) - 1;
            }
            next++;
        }
        last = code;
        put_pixel(f, (uint8_t)c);
        while (n > 0 && !f->done) put_pixel(f, stack[--n]);
    }
out:
    free(link);
    free(suffix);
    free(stack);
    if (problem) return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: %s", problem);
    return LLAVA_OK;
}

llava_status image_decode_gif(const uint8_t *bytes, size_t len, const image_limits *lim,
                              image_decoded *out, llava_error *err) {
    memset(out, 0, sizeof *out);
    gif_reader r = {bytes, len, 0};
    if (len < 13) return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: truncated header");
    int sw = bytes[6] | bytes[7] << 8, sh = bytes[8] | bytes[9] << 8;
    int flags = bytes[10];
    r.pos = 13;
    const uint8_t *global = NULL, *local = NULL;
    int n_global = 0, n_local = 0;
    if (flags & 0x80) {
        n_global = 1 << ((flags & 7) + 1);
        if (len - r.pos < (size_t)n_global * 3)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: truncated global palette");
        global = bytes + r.pos;
        r.pos += (size_t)n_global * 3;
    }
    int transparency = -1;
    /* Blocks up to the first image descriptor: extensions (of which only the graphic control
     * extension's transparency matters) and bytes Pillow ignores. */
    for (;;) {
        int b;
        if (!rd_byte(&r, &b) || b == ';')
            return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: no image in the file");
        if (b == '!') {
            int label, n;
            if (!rd_byte(&r, &label) || !rd_byte(&r, &n) || r.len - r.pos < (size_t)n)
                return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: truncated extension at "
                                       "offset %zu", r.pos);
            if (label == 0xF9 && n > 0) {
                if (n < 4)
                    return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: graphic control extension "
                                           "of %d bytes (needs 4) at offset %zu", n, r.pos);
                if (bytes[r.pos] & 1) transparency = bytes[r.pos + 3];
            }
            r.pos += (size_t)n;
            if (n > 0 && !skip_blocks(&r))
                return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: truncated extension");
            continue;
        }
        if (b == ',') break;
    }
    if (r.len - r.pos < 9)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: truncated image descriptor");
    const uint8_t *d = bytes + r.pos;
    int x0 = d[0] | d[1] << 8, y0 = d[2] | d[3] << 8, fw = d[4] | d[5] << 8, fh = d[6] | d[7] << 8;
    int fflags = d[8];
    r.pos += 9;
    if (fflags & 0x80) {
        n_local = 1 << ((fflags & 7) + 1);
        if (r.len - r.pos < (size_t)n_local * 3)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: truncated local palette");
        local = bytes + r.pos;
        r.pos += (size_t)n_local * 3;
    }
    int lzw_bits;
    if (!rd_byte(&r, &lzw_bits))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: truncated image data");
    if (fw == 0 || fh == 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "GIF: empty frame (%dx%d)", fw, fh);
    int cw = x0 + fw > sw ? x0 + fw : sw, ch = y0 + fh > sh ? y0 + fh : sh;
    llava_status st = image_check_limits(lim, "GIF", cw, ch, err);
    if (st != LLAVA_OK) return st;

    size_t npx = (size_t)cw * ch;
    uint8_t *idx = malloc(npx);
    if (!idx)
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "GIF: out of memory for %dx%d pixels", cw,
                               ch);
    memset(idx, transparency >= 0 ? transparency : 0, npx);
    frame_writer f = {
        idx, cw, x0, y0, fw, fh, 0, 0, (fflags & 0x40) ? 8 : 1, (fflags & 0x40) ? 1 : 0, 0};
    st = lzw_decode(&r, lzw_bits, &f, err);
    if (st != LLAVA_OK) {
        free(idx);
        return st;
    }
    uint8_t *rgb = image_alloc_rgb(cw, ch); /* only once the frame decoded */
    if (!rgb) {
        free(idx);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "GIF: out of memory for %dx%d pixels", cw,
                               ch);
    }
    const uint8_t *pal = local ? local : global;
    int n_pal = local ? n_local : n_global;
    for (size_t i = 0; i < npx; i++) {
        int v = idx[i];
        if (v < n_pal) {
            memcpy(rgb + 3 * i, pal + 3 * v, 3);
        } else {
            rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = (uint8_t)v;
        }
    }
    free(idx);
    out->width = cw;
    out->height = ch;
    out->rgb = rgb;
    return LLAVA_OK;
}
