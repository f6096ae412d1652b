/* BMP as Pillow 9.4's BmpImagePlugin reads it, for the uncompressed layouts: OS/2 v1 (12-byte
 * header) and Windows v3/v4/v5 headers (40, 64, 108, 124 bytes); 1/4/8-bit palettes (indices past
 * the palette are gray, Pillow's default ramp), 16-bit 555/565, 24-bit, 32-bit with the channel
 * masks Pillow accepts; bottom-up or top-down rows. RLE compression is refused (Pillow decodes it
 * with its own Python codec, whose quirks are not reproduced here). */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Byte order of the colour channels in a 24/32-bit pixel (Pillow's raw modes). */
typedef enum { PX_BGR, PX_BGRX, PX_XBGR, PX_RGBA, PX_BGR15, PX_BGR16, PX_PALETTE } px_layout;

static void unpack_row(const uint8_t *in, uint8_t *out, int w, int bits, px_layout lay,
                       const uint8_t pal[256][3]) {
    for (int x = 0; x < w; x++, out += 3) {
        switch (lay) {
        case PX_PALETTE: {
            int v;
            if (bits == 8) v = in[x];
            else if (bits == 4) v = (in[x >> 1] >> (x & 1 ? 0 : 4)) & 15;
            else v = (in[x >> 3] >> (7 - (x & 7))) & 1;
            memcpy(out, pal[v], 3);
            break;
        }
        case PX_BGR:
            out[0] = in[3 * x + 2];
            out[1] = in[3 * x + 1];
            out[2] = in[3 * x];
            break;
        case PX_BGRX:
            out[0] = in[4 * x + 2];
            out[1] = in[4 * x + 1];
            out[2] = in[4 * x];
            break;
        case PX_XBGR:
            out[0] = in[4 * x + 3];
            out[1] = in[4 * x + 2];
            out[2] = in[4 * x + 1];
            break;
        case PX_RGBA:
            memcpy(out, in + 4 * x, 3);
            break;
        case PX_BGR15: { /* Pillow's unpackers scale with v * 255 / max, truncating */
            unsigned p = le16(in + 2 * x);
            out[0] = (uint8_t)(((p >> 10) & 31) * 255 / 31);
            out[1] = (uint8_t)(((p >> 5) & 31) * 255 / 31);
            out[2] = (uint8_t)((p & 31) * 255 / 31);
            break;
        }
        case PX_BGR16: {
            unsigned p = le16(in + 2 * x);
            out[0] = (uint8_t)(((p >> 11) & 31) * 255 / 31);
            out[1] = (uint8_t)(((p >> 5) & 63) * 255 / 63);
            out[2] = (uint8_t)((p & 31) * 255 / 31);
            break;
        }
        }
    }
}

llava_status image_decode_bmp(const uint8_t *b, size_t len, const image_limits *lim,
                              image_decoded *out, llava_error *err) {
    memset(out, 0, sizeof *out);
    if (len < 18) return llava_error_set(err, LLAVA_ERR_FORMAT, "BMP: truncated file header");
    uint32_t offset = le32(b + 10), hsize = le32(b + 14);
    if (hsize != 12 && hsize != 40 && hsize != 64 && hsize != 108 && hsize != 124)
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED, "BMP: unsupported header size %u",
                               hsize);
    if (len - 14 < hsize)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "BMP: truncated info header");
    const uint8_t *h = b + 18; /* header after its size field */
    int64_t w, ht;
    uint32_t bits, compression = 0, colors = 0;
    int top_down = 0, pal_entry = 4;
    size_t pos = 14 + hsize;
    uint32_t masks[4] = {0, 0, 0, 0};
    if (hsize == 12) {
        w = le16(h);
        ht = le16(h + 2);
        bits = le16(h + 6);
        pal_entry = 3;
    } else {
        w = le32(h);
        top_down = h[7] == 0xFF; /* Pillow's test for a negative height */
        ht = top_down ? (int64_t)4294967296 - le32(h + 4) : le32(h + 4);
        bits = le16(h + 10);
        compression = le32(h + 12);
        colors = le32(h + 28);
        if (compression == 3) { /* BI_BITFIELDS */
            if (hsize >= 52) {
                for (int i = 0; i < 4; i++) masks[i] = le32(h + 36 + 4 * i);
            } else {
                if (len - pos < 12)
                    return llava_error_set(err, LLAVA_ERR_FORMAT, "BMP: truncated bit masks");
                for (int i = 0; i < 3; i++) masks[i] = le32(b + pos + 4 * i);
                pos += 12;
            }
        }
    }
    px_layout lay;
    switch (bits) {
    case 1: case 4: case 8: lay = PX_PALETTE; break;
    case 16: lay = PX_BGR15; break;
    case 24: lay = PX_BGR; break;
    case 32: lay = PX_BGRX; break;
    default:
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED, "BMP: unsupported pixel depth %u", bits);
    }
    if (compression == 1 || compression == 2)
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED, "BMP: RLE compression is not supported");
    if (compression == 3) {
        const uint32_t *m = masks;
#define MASKS(r, g, bl, a) (m[0] == (r) && m[1] == (g) && m[2] == (bl) && m[3] == (a))
        if (bits == 32 && (MASKS(0xFF0000, 0xFF00, 0xFF, 0) ||
                           MASKS(0xFF0000, 0xFF00, 0xFF, 0xFF000000u) || MASKS(0, 0, 0, 0)))
            lay = PX_BGRX;
        else if (bits == 32 && (MASKS(0xFF000000u, 0xFF0000, 0xFF00, 0) ||
                                MASKS(0xFF000000u, 0xFF0000, 0xFF00, 0xFF)))
            lay = PX_XBGR;
        else if (bits == 32 && MASKS(0xFF, 0xFF00, 0xFF0000, 0xFF000000u))
            lay = PX_RGBA;
        else if (bits == 24 && m[0] == 0xFF0000 && m[1] == 0xFF00 && m[2] == 0xFF)
            lay = PX_BGR;
        else if (bits == 16 && m[0] == 0xF800 && m[1] == 0x7E0 && m[2] == 0x1F)
            lay = PX_BGR16;
        else if (bits == 16 && m[0] == 0x7C00 && m[1] == 0x3E0 && m[2] == 0x1F)
            lay = PX_BGR15;
        else
            return llava_error_set(err, LLAVA_ERR_UNSUPPORTED, "BMP: unsupported bit field layout");
#undef MASKS
    } else if (compression != 0) {
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED, "BMP: unsupported compression %u",
                               compression);
    }
    llava_status st = image_check_limits(lim, "BMP", w, ht, err);
    if (st != LLAVA_OK) return st;

    uint8_t pal[256][3];
    for (int i = 0; i < 256; i++) pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
    if (lay == PX_PALETTE) {
        if (colors == 0) colors = 1u << bits;
        if (colors > 65536)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "BMP: palette of %u colours", colors);
        /* a palette right after the header moves the pixel offset past it (Pillow's rule) */
        if (offset == 14 + hsize) offset += 4 * colors;
        if (offset == 0) offset = (uint32_t)(pos + (size_t)pal_entry * colors);
        size_t n = len - pos < (size_t)pal_entry * colors ? (len - pos) / pal_entry : colors;
        for (size_t i = 0; i < n && i < 256; i++) {
            const uint8_t *e = b + pos + i * pal_entry;
            pal[i][0] = e[2];
            pal[i][1] = e[1];
            pal[i][2] = e[0];
        }
    }
    if (offset == 0) offset = (uint32_t)pos; /* Pillow: no offset means "right here" */
    size_t stride = (((size_t)w * bits + 31) >> 3) & ~(size_t)3;
    if (offset > len || (len - offset) / stride < (size_t)ht)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "BMP: truncated pixel data (%zu bytes from offset %u, %zu needed)",
                               offset > len ? 0 : len - offset, offset, stride * (size_t)ht);
    uint8_t *rgb = image_alloc_rgb((int)w, (int)ht);
    if (!rgb) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "BMP: out of memory");
    for (int64_t y = 0; y < ht; y++) {
        int64_t src_row = top_down ? y : ht - 1 - y;
        unpack_row(b + offset + (size_t)src_row * stride, rgb + (size_t)y * w * 3, (int)w,
                   (int)bits, lay, (const uint8_t(*)[3])pal);
    }
    out->width = (int)w;
    out->height = (int)ht;
    out->rgb = rgb;
    return LLAVA_OK;
}
