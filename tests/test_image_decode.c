/* Tests of src/image decoding: real files decode to their sizes, malformed and oversized inputs
 * (truncations at several offsets, wrong magic, patched headers, corrupt data) fail with a clear
 * message and leave nothing allocated, EXIF orientation parsing follows Pillow's rules, and
 * several threads decode at once with identical results. Pixel equality with Pillow is checked by
 * test_image_pillow.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "image/codec.h"
#include "image/image.h"

static const char *data_dir(void) {
    const char *d = getenv("LLAVA_TEST_DATA");
    return d ? d : LLAVA_TEST_DATA;
}

typedef struct blob {
    uint8_t *p;
    size_t n;
} blob;

static blob load(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/images/%s", data_dir(), name);
    char *data = NULL;
    size_t n = 0;
    llava_error err;
    if (llava_read_file(path, (size_t)64 << 20, &data, &n, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    return (blob){(uint8_t *)data, n};
}

/* Decodes expecting failure with `code` and a message containing both fragments. */
static void expect_fail(const void *p, size_t n, const image_limits *lim, llava_status code,
                        const char *frag1, const char *frag2, const char *what) {
    image_rgb img;
    llava_error err;
    llava_error_clear(&err);
    llava_status st = image_decode_memory(p, n, lim, &img, &err);
    if (st == LLAVA_OK) fail_msg("%s: accepted (%dx%d)", what, img.width, img.height);
    if (img.rgb) fail_msg("%s: pixels left after failure", what);
    if (st != code)
        fail_msg("%s: status %s, expected %s (%s)", what, llava_status_name(st),
                 llava_status_name(code), err.message);
    if (!strstr(err.message, frag1) || (frag2 && !strstr(err.message, frag2)))
        fail_msg("%s: message \"%s\" lacks \"%s\" / \"%s\"", what, err.message, frag1,
                 frag2 ? frag2 : "");
}

static void expect_size(const char *name, int w, int h, image_format f) {
    blob b = load(name);
    image_rgb img;
    llava_error err;
    if (image_decode_memory(b.p, b.n, NULL, &img, &err) != LLAVA_OK)
        fail_msg("%s: %s", name, err.message);
    if (img.width != w || img.height != h || img.format != f || !img.rgb)
        fail_msg("%s: %dx%d %s, expected %dx%d %s", name, img.width, img.height,
                 image_format_name(img.format), w, h, image_format_name(f));
    image_free(&img);
    free(b.p);
}

static void test_real_files(void **state) {
    (void)state;
    expect_size("llava_extreme_ironing.jpg", 570, 380, IMAGE_FORMAT_JPEG);
    expect_size("derived_flower_progressive.jpg", 480, 360, IMAGE_FORMAT_JPEG);
    expect_size("ljt_testimgari.jpg", 227, 149, IMAGE_FORMAT_JPEG);
    expect_size("pillow_pil_sample_cmyk.jpg", 100, 100, IMAGE_FORMAT_JPEG);
    expect_size("pillow_hopper_gray.jpg", 128, 128, IMAGE_FORMAT_JPEG);
    expect_size("pngsuite_basn0g16.png", 32, 32, IMAGE_FORMAT_PNG);
    expect_size("pngsuite_ibasn2c08.png", 32, 32, IMAGE_FORMAT_PNG);
    expect_size("pngsuite_basn3p08.png", 32, 32, IMAGE_FORMAT_PNG);
    expect_size("libpng_pngtest.png", 69, 91, IMAGE_FORMAT_PNG);
    expect_size("libwebptestdata_lossy_alpha1.webp", 1000, 307, IMAGE_FORMAT_WEBP);
    expect_size("libwebptestdata_small_1x13.webp", 1, 13, IMAGE_FORMAT_WEBP);
    /* 16-bit gray is Pillow's mode I, clipped to 255 (not scaled): basn0g16 is a ramp from 0 to
     * 65535, so most of it is white and the first pixel is black. */
    blob b = load("pngsuite_basn0g16.png");
    image_rgb img;
    llava_error err;
    assert_int_equal(image_decode_memory(b.p, b.n, NULL, &img, &err), LLAVA_OK);
    assert_int_equal(img.rgb[0], 0);
    assert_int_equal(img.rgb[(32 * 31 + 31) * 3], 255);
    image_free(&img);
    free(b.p);
}

static void test_orientation_applied(void **state) {
    (void)state;
    /* 6 = ROTATE_270: the decoded image is the stored one turned clockwise */
    blob b = load("pillow_hopper_orientation_6.jpg");
    image_rgb img;
    llava_error err;
    assert_int_equal(image_decode_memory(b.p, b.n, NULL, &img, &err), LLAVA_OK);
    assert_int_equal(img.orientation, 6);
    image_free(&img);
    free(b.p);
    b = load("pillow_hopper_orientation_6.webp");
    assert_int_equal(image_decode_memory(b.p, b.n, NULL, &img, &err), LLAVA_OK);
    assert_int_equal(img.orientation, 6);
    image_free(&img);
    free(b.p);
    b = load("pillow_hopper.jpg");
    assert_int_equal(image_decode_memory(b.p, b.n, NULL, &img, &err), LLAVA_OK);
    assert_int_equal(img.orientation, 1);
    image_free(&img);
    free(b.p);
}

/* ---- malformed inputs ---- */

static size_t find_marker(const blob *b, uint8_t m) {
    for (size_t i = 2; i + 1 < b->n; i++)
        if (b->p[i] == 0xFF && b->p[i + 1] == m) return i;
    fail_msg("marker %02x not found", m);
    return 0;
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Rewrites IHDR's width, height, depth and colour type and fixes its CRC. */
static void png_patch_ihdr(blob *b, uint32_t w, uint32_t h, int depth, int type) {
    put_be32(b->p + 16, w);
    put_be32(b->p + 20, h);
    if (depth >= 0) b->p[24] = (uint8_t)depth;
    if (type >= 0) b->p[25] = (uint8_t)type;
    put_be32(b->p + 29, crc32_png(b->p + 12, 17));
}

static void test_malformed_generic(void **state) {
    (void)state;
    expect_fail("", 0, NULL, LLAVA_ERR_FORMAT, "empty", NULL, "empty");
    expect_fail("hello, world", 12, NULL, LLAVA_ERR_UNSUPPORTED, "unknown format", "68 65 6c 6c",
                "text");
    expect_fail("\x89PNX\r\n\x1a\n0000", 12, NULL, LLAVA_ERR_UNSUPPORTED, "unknown format", NULL,
                "PNG magic off by one byte");
    expect_fail("RIFF\0\0\0\0WEBX", 12, NULL, LLAVA_ERR_UNSUPPORTED, "unknown format", NULL,
                "RIFF that is not WebP");
    image_rgb img;
    llava_error err;
    assert_int_equal(image_decode_file("/nonexistent/x.jpg", NULL, &img, &err), LLAVA_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/x.jpg"));
}

static void test_malformed_jpeg(void **state) {
    (void)state;
    blob b = load("llava_extreme_ironing.jpg");
    expect_fail(b.p, 3, NULL, LLAVA_ERR_FORMAT, "JPEG: ", NULL, "JPEG: SOI only");
    expect_fail(b.p, 100, NULL, LLAVA_ERR_FORMAT, "JPEG: ", "truncated", "JPEG: cut in the header");
    size_t sos = find_marker(&b, 0xDA);
    expect_fail(b.p, sos + 20, NULL, LLAVA_ERR_FORMAT, "JPEG: truncated", NULL,
                "JPEG: cut after the scan header");
    expect_fail(b.p, b.n / 2, NULL, LLAVA_ERR_FORMAT, "JPEG: truncated", NULL,
                "JPEG: cut in the middle");
    expect_fail(b.p, b.n - 40, NULL, LLAVA_ERR_FORMAT, "JPEG: truncated", NULL,
                "JPEG: cut near the end");
    image_limits small = {100, 100, 10000};
    expect_fail(b.p, b.n, &small, LLAVA_ERR_LIMIT, "JPEG: image of 570x380", "exceeds the limit",
                "JPEG: over the caller's limit");

    blob m = {malloc(b.n), b.n};
    size_t sof = find_marker(&b, 0xC0);
    /* SOF0: FF C0 len(2) precision(1) height(2) width(2) ncomp(1) */
    memcpy(m.p, b.p, b.n);
    m.p[sof + 5] = m.p[sof + 7] = 0xEA; /* 60000 x 60000 */
    m.p[sof + 6] = m.p[sof + 8] = 0x60;
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_LIMIT, "JPEG: image of 60000x60000", "exceeds the limit",
                "JPEG: huge declared size");
    m.p[sof + 5] = m.p[sof + 6] = m.p[sof + 7] = m.p[sof + 8] = 0xFF;
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "JPEG: ", "65500", "JPEG: size past libjpeg's");
    memcpy(m.p, b.p, b.n);
    m.p[sof + 7] = m.p[sof + 8] = 0;
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "JPEG: ", NULL, "JPEG: zero width");
    memcpy(m.p, b.p, b.n);
    m.p[sof + 4] = 12;
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "JPEG: ", "precision", "JPEG: 12-bit precision");
    memcpy(m.p, b.p, b.n);
    m.p[sof + 9] = 2;
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "JPEG: ", NULL, "JPEG: SOF length vs components");
    memcpy(m.p, b.p, b.n);
    size_t dht = find_marker(&b, 0xC4);
    memset(m.p + dht + 4, 0xFF, 17); /* Huffman counts that overflow the table */
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "JPEG: ", NULL, "JPEG: bad Huffman table");
    free(m.p);
    free(b.p);

    b = load("derived_flower_progressive.jpg");
    expect_fail(b.p, b.n * 2 / 3, NULL, LLAVA_ERR_FORMAT, "JPEG: truncated", NULL,
                "JPEG: progressive cut between scans");
    /* The last scan repeated 250 times (libjpeg only warns about the bogus progression): a
     * small file that would make the decoder walk the whole image per scan. */
    size_t last_sos = 0;
    for (size_t i = 0; i + 1 < b.n; i++)
        if (b.p[i] == 0xFF && b.p[i + 1] == 0xDA) last_sos = i;
    size_t scan = b.n - 2 - last_sos, big = b.n + 250 * scan;
    uint8_t *many = malloc(big);
    memcpy(many, b.p, b.n - 2);
    for (int k = 0; k < 250; k++) memcpy(many + b.n - 2 + k * scan, b.p + last_sos, scan);
    many[big - 2] = 0xFF;
    many[big - 1] = 0xD9;
    expect_fail(many, big, NULL, LLAVA_ERR_FORMAT, "JPEG: more than 200 scans", NULL,
                "JPEG: 260 scans");
    free(many);
    free(b.p);
}

static void test_malformed_png(void **state) {
    (void)state;
    blob b = load("pngsuite_basn2c08.png");
    expect_fail(b.p, 8, NULL, LLAVA_ERR_FORMAT, "PNG: truncated", NULL, "PNG: signature only");
    expect_fail(b.p, 20, NULL, LLAVA_ERR_FORMAT, "PNG: truncated", NULL, "PNG: cut in IHDR");
    expect_fail(b.p, b.n - 30, NULL, LLAVA_ERR_FORMAT, "PNG: ", NULL, "PNG: cut in IDAT");
    blob m = {malloc(b.n), b.n};
    memcpy(m.p, b.p, b.n);
    m.p[29] ^= 0x55;
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "PNG: ", "CRC", "PNG: IHDR CRC");
    memcpy(m.p, b.p, b.n);
    png_patch_ihdr(&m, 100000, 100000, -1, -1);
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_LIMIT, "PNG: image of 100000x100000", NULL,
                "PNG: huge declared size");
    memcpy(m.p, b.p, b.n);
    png_patch_ihdr(&m, 0, 32, -1, -1);
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "PNG: ", NULL, "PNG: zero width");
    memcpy(m.p, b.p, b.n);
    png_patch_ihdr(&m, 32, 32, 3, -1);
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "PNG: ", NULL, "PNG: bit depth 3");
    memcpy(m.p, b.p, b.n);
    png_patch_ihdr(&m, 32, 32, -1, 5);
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "PNG: ", NULL, "PNG: colour type 5");
    memcpy(m.p, b.p, b.n);
    png_patch_ihdr(&m, 32, 4000, -1, -1); /* more rows declared than the data holds */
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "PNG: ", NULL, "PNG: rows missing");
    /* corrupt the zlib stream inside IDAT, with its CRC fixed so that zlib sees it */
    memcpy(m.p, b.p, b.n);
    for (size_t i = 8; i + 12 <= m.n;) {
        uint32_t len = (uint32_t)m.p[i] << 24 | m.p[i + 1] << 16 | m.p[i + 2] << 8 | m.p[i + 3];
        if (!memcmp(m.p + i + 4, "IDAT", 4)) {
            memset(m.p + i + 8 + 2, 0xFF, len > 12 ? 10 : len - 2);
            put_be32(m.p + i + 8 + len, crc32_png(m.p + i + 4, len + 4));
            break;
        }
        i += 12 + len;
    }
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "PNG: ", NULL, "PNG: corrupt zlib data");
    free(m.p);

    /* Without IEND (cut right after the image data) Pillow keeps the image, and so do we. */
    image_rgb img;
    llava_error err;
    if (image_decode_memory(b.p, b.n - 12, NULL, &img, &err) != LLAVA_OK)
        fail_msg("PNG without IEND: %s", err.message);
    assert_int_equal(img.width, 32);
    image_free(&img);
    free(b.p);

    b = load("pngsuite_ibasn2c08.png");
    expect_fail(b.p, b.n / 2, NULL, LLAVA_ERR_FORMAT, "PNG: truncated", NULL,
                "PNG: interlaced, cut in IDAT");
    free(b.p);
}

static void test_malformed_webp(void **state) {
    (void)state;
    blob b = load("pillow_hopper.webp");
    expect_fail(b.p, 12, NULL, LLAVA_ERR_FORMAT, "WebP: ", NULL, "WebP: RIFF header only");
    expect_fail(b.p, 30, NULL, LLAVA_ERR_FORMAT, "WebP: ", NULL, "WebP: cut in the VP8 header");
    expect_fail(b.p, b.n / 2, NULL, LLAVA_ERR_FORMAT, "WebP: truncated", NULL,
                "WebP: cut in the bitstream");
    blob m = {malloc(b.n), b.n};
    memcpy(m.p, b.p, b.n);
    memcpy(m.p + 12, "XXXX", 4); /* unknown first chunk */
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "WebP: ", NULL, "WebP: unknown chunk");
    memcpy(m.p, b.p, b.n);
    memset(m.p + 20, 0, 10); /* VP8 frame tag and start code */
    expect_fail(m.p, m.n, NULL, LLAVA_ERR_FORMAT, "WebP: ", NULL, "WebP: VP8 start code");
    free(m.p);
    free(b.p);

    /* The VP8 frame header declaring 16383 x 16383: rejected from the header. */
    b = load("pillow_hopper.webp");
    b.p[26] = b.p[28] = 0xFF;
    b.p[27] = b.p[29] = 0x3F;
    image_limits lim;
    image_limits_default(&lim);
    lim.max_pixels = 1 << 20;
    expect_fail(b.p, b.n, &lim, LLAVA_ERR_LIMIT, "WebP: image of 16383x16383", NULL,
                "WebP: huge declared size");
    free(b.p);
}

/* A 3x2 GIF: 4-entry global palette (red, green, blue, gray), LZW code size 2, every pixel a
 * literal code; pixels 0 1 1 / 0 1 0. Bytes 36.. are the data sub-block. */
static const uint8_t gif3x2[43] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x03, 0x00, 0x02, 0x00, 0x81, 0x00, 0x00, 0xff, 0x00,
    0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0xff, 0x09, 0x09, 0x09, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x03, 0x00, 0x02, 0x00, 0x00, 0x02, 0x04, 0x44, 0x02, 0x01, 0x05, 0x00, 0x3b};

static void test_gif(void **state) {
    (void)state;
    image_rgb img;
    llava_error err;
    if (image_decode_memory(gif3x2, sizeof gif3x2, NULL, &img, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(img.width, 3);
    assert_int_equal(img.height, 2);
    assert_int_equal(img.format, IMAGE_FORMAT_GIF);
    const uint8_t want[18] = {255, 0, 0, 0, 255, 0, 0, 255, 0, 255, 0, 0, 0, 255, 0, 255, 0, 0};
    assert_memory_equal(img.rgb, want, 18);
    image_free(&img);

    uint8_t m[sizeof gif3x2];
    expect_fail(gif3x2, 10, NULL, LLAVA_ERR_FORMAT, "GIF: truncated header", NULL,
                "GIF: header cut");
    expect_fail(gif3x2, 20, NULL, LLAVA_ERR_FORMAT, "GIF: truncated global palette", NULL,
                "GIF: palette cut");
    expect_fail(gif3x2, 25, NULL, LLAVA_ERR_FORMAT, "GIF: no image", NULL, "GIF: no descriptor");
    expect_fail(gif3x2, 30, NULL, LLAVA_ERR_FORMAT, "GIF: truncated image descriptor", NULL,
                "GIF: descriptor cut");
    expect_fail(gif3x2, 39, NULL, LLAVA_ERR_FORMAT, "GIF: truncated data", NULL,
                "GIF: LZW data cut");
    memcpy(m, gif3x2, sizeof m);
    m[35] = 13;
    expect_fail(m, sizeof m, NULL, LLAVA_ERR_FORMAT, "GIF: LZW code size 13", NULL,
                "GIF: code size past 12");
    memcpy(m, gif3x2, sizeof m);
    m[37] = 0x2C; /* clear (4), then end (5): no pixel at all */
    expect_fail(m, sizeof m, NULL, LLAVA_ERR_FORMAT, "GIF: image data ends before", NULL,
                "GIF: end code first");
    memcpy(m, gif3x2, sizeof m);
    m[37] = 0x3C; /* clear (4), then 7: not a literal */
    expect_fail(m, sizeof m, NULL, LLAVA_ERR_FORMAT, "GIF: broken LZW data", NULL,
                "GIF: first code not a literal");
    memcpy(m, gif3x2, sizeof m);
    m[6] = m[7] = m[8] = m[9] = 0xFF;
    expect_fail(m, sizeof m, NULL, LLAVA_ERR_LIMIT, "GIF: image of 65535x65535", NULL,
                "GIF: huge screen");
    memcpy(m, gif3x2, sizeof m);
    m[30] = 0;
    expect_fail(m, sizeof m, NULL, LLAVA_ERR_FORMAT, "GIF: empty frame", NULL,
                "GIF: zero-width frame");
}

/* A 2x2 24-bit BMP, bottom-up, rows padded to 8 bytes. */
static size_t make_bmp(uint8_t *b, int32_t w, int32_t h, uint16_t bits, uint32_t compression) {
    memset(b, 0, 70);
    b[0] = 'B';
    b[1] = 'M';
    b[10] = 54;   /* pixel offset */
    b[14] = 40;   /* info header size */
    memcpy(b + 18, &w, 4);
    memcpy(b + 22, &h, 4);
    b[26] = 1;
    memcpy(b + 28, &bits, 2);
    memcpy(b + 30, &compression, 4);
    for (int i = 0; i < 16; i++) b[54 + i] = (uint8_t)(i * 16);
    return 70;
}

static void test_bmp(void **state) {
    (void)state;
    uint8_t b[70];
    size_t n = make_bmp(b, 2, 2, 24, 0);
    image_rgb img;
    llava_error err;
    if (image_decode_memory(b, n, NULL, &img, &err) != LLAVA_OK) fail_msg("%s", err.message);
    /* the last row in the file is the top one; BGR -> RGB */
    const uint8_t want[12] = {160, 144, 128, 208, 192, 176, 32, 16, 0, 80, 64, 48};
    assert_memory_equal(img.rgb, want, 12);
    image_free(&img);
    expect_fail(b, 16, NULL, LLAVA_ERR_FORMAT, "BMP: truncated file header", NULL,
                "BMP: header cut");
    expect_fail(b, 40, NULL, LLAVA_ERR_FORMAT, "BMP: truncated info header", NULL, "BMP: info cut");
    expect_fail(b, 65, NULL, LLAVA_ERR_FORMAT, "BMP: truncated pixel data", NULL,
                "BMP: pixels cut");
    n = make_bmp(b, 100000, 2, 24, 0);
    expect_fail(b, n, NULL, LLAVA_ERR_LIMIT, "BMP: image of 100000x2", NULL, "BMP: huge width");
    n = make_bmp(b, 2, 2, 8, 1);
    expect_fail(b, n, NULL, LLAVA_ERR_UNSUPPORTED, "BMP: RLE", NULL, "BMP: RLE8");
    n = make_bmp(b, 2, 2, 7, 0);
    expect_fail(b, n, NULL, LLAVA_ERR_UNSUPPORTED, "BMP: unsupported pixel depth 7", NULL,
                "BMP: 7 bits");
    n = make_bmp(b, 2, 2, 16, 3);
    b[54] = 0xFF; /* masks read after the 40-byte header: not a layout Pillow knows */
    expect_fail(b, n, NULL, LLAVA_ERR_UNSUPPORTED, "BMP: unsupported bit field", NULL,
                "BMP: odd bit fields");
    n = make_bmp(b, 2, 2, 24, 0);
    b[14] = 20;
    expect_fail(b, n, NULL, LLAVA_ERR_UNSUPPORTED, "BMP: unsupported header size 20", NULL,
                "BMP: header size");
}

/* ---- EXIF orientation (Pillow's Exif rules) ---- */

static size_t make_tiff(uint8_t *p, int big_endian, uint16_t type, uint32_t count, uint32_t value,
                        int with_prefix) {
    size_t o = 0;
    if (with_prefix) {
        memcpy(p, "Exif\0\0", 6);
        o = 6;
    }
    uint8_t *t = p + o;
#define W16(at, v)                                                                                 \
    do {                                                                                           \
        if (big_endian) {                                                                          \
            t[at] = (uint8_t)((v) >> 8);                                                           \
            t[(at) + 1] = (uint8_t)(v);                                                            \
        } else {                                                                                   \
            t[at] = (uint8_t)(v);                                                                  \
            t[(at) + 1] = (uint8_t)((v) >> 8);                                                     \
        }                                                                                          \
    } while (0)
#define W32(at, v)                                                                                 \
    do {                                                                                           \
        if (big_endian) {                                                                          \
            W16(at, (v) >> 16);                                                                    \
            W16((at) + 2, (v)&0xFFFF);                                                             \
        } else {                                                                                   \
            W16(at, (v)&0xFFFF);                                                                   \
            W16((at) + 2, (v) >> 16);                                                              \
        }                                                                                          \
    } while (0)
    memcpy(t, big_endian ? "MM\0*" : "II*\0", 4);
    W32(4, 8);
    W16(8, 1);          /* one entry */
    W16(10, 0x0112);    /* Orientation */
    W16(12, type);
    W32(14, count);
    memset(t + 18, 0, 4);
    if (type == 3)
        W16(18, value);
    else
        W32(18, value);
    W32(22, 0); /* next IFD */
    return o + 26;
#undef W16
#undef W32
}

static void test_exif_orientation(void **state) {
    (void)state;
    uint8_t buf[64];
    size_t n = make_tiff(buf, 0, 3, 1, 6, 1);
    assert_int_equal(image_exif_orientation(buf, n), 6);
    n = make_tiff(buf, 1, 3, 1, 8, 0);
    assert_int_equal(image_exif_orientation(buf, n), 8);
    n = make_tiff(buf, 0, 4, 1, 3, 0); /* LONG */
    assert_int_equal(image_exif_orientation(buf, n), 3);
    n = make_tiff(buf, 0, 3, 1, 9, 0); /* out of range: no transpose */
    assert_int_equal(image_exif_orientation(buf, n), 0);
    n = make_tiff(buf, 0, 1, 1, 6, 0); /* BYTE: Pillow returns bytes, which never match */
    assert_int_equal(image_exif_orientation(buf, n), 0);
    n = make_tiff(buf, 0, 3, 3, 5, 0); /* count 3 at an offset past the end: tag skipped */
    assert_int_equal(image_exif_orientation(buf, n), 0);
    n = make_tiff(buf, 0, 3, 1, 6, 0);
    assert_int_equal(image_exif_orientation(buf, n - 10), 0); /* entry cut off */
    memcpy(buf, "XX*\0", 4);
    assert_int_equal(image_exif_orientation(buf, n), 0); /* not a TIFF header */
    assert_int_equal(image_exif_orientation(NULL, 0), 0);
    assert_int_equal(image_xmp_orientation("<x tiff:Orientation=\"6\"/>", 25), 6);
    assert_int_equal(image_xmp_orientation("<tiff:Orientation>3</tiff:Orientation>", 38), 3);
    assert_int_equal(image_xmp_orientation("tiff:Orientation=x tiff:Orientation>7<", 38), 7);
    assert_int_equal(image_xmp_orientation("tiff:Orientation", 16), 0);
}

static void test_detect(void **state) {
    (void)state;
    assert_int_equal(image_detect_format("\xFF\xD8\xFF\xE0", 4), IMAGE_FORMAT_JPEG);
    assert_int_equal(image_detect_format("\x89PNG\r\n\x1a\n", 8), IMAGE_FORMAT_PNG);
    assert_int_equal(image_detect_format("RIFF\0\0\0\0WEBPVP8 ", 16), IMAGE_FORMAT_WEBP);
    assert_int_equal(image_detect_format("GIF89a", 6), IMAGE_FORMAT_GIF);
    assert_int_equal(image_detect_format("BM", 2), IMAGE_FORMAT_BMP);
    assert_int_equal(image_detect_format("\xFF\xD8", 2), IMAGE_FORMAT_UNKNOWN);
    assert_int_equal(image_detect_format(NULL, 0), IMAGE_FORMAT_UNKNOWN);
}

/* ---- threads ---- */

typedef struct thread_job {
    const blob *files;
    int n_files;
    uint64_t sums[8];
    int failed;
} thread_job;

static uint64_t checksum(const image_rgb *img) {
    uint64_t h = 1469598103934665603ull;
    size_t n = (size_t)img->width * img->height * 3;
    for (size_t i = 0; i < n; i++) h = (h ^ img->rgb[i]) * 1099511628211ull;
    return h;
}

static void *decode_all(void *arg) {
    thread_job *job = arg;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < job->n_files; i++) {
            image_rgb img;
            llava_error err;
            if (image_decode_memory(job->files[i].p, job->files[i].n, NULL, &img, &err) !=
                LLAVA_OK) {
                job->failed = 1;
                continue;
            }
            job->sums[i] = checksum(&img);
            image_free(&img);
            /* a failing decode in between must not disturb the others */
            image_decode_memory(job->files[i].p, job->files[i].n / 2, NULL, &img, &err);
        }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    const char *names[4] = {"llava_extreme_ironing.jpg", "pillow_transparent.png",
                            "pillow_flower.webp", "derived_flower_progressive.jpg"};
    blob files[4];
    for (int i = 0; i < 4; i++) files[i] = load(names[i]);
    thread_job single = {files, 4, {0}, 0};
    decode_all(&single);
    assert_false(single.failed);
    thread_job jobs[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (thread_job){files, 4, {0}, 0};
        assert_int_equal(pthread_create(&th[t], NULL, decode_all, &jobs[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_false(jobs[t].failed);
        assert_memory_equal(jobs[t].sums, single.sums, sizeof single.sums);
    }
    for (int i = 0; i < 4; i++) free(files[i].p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_files),        cmocka_unit_test(test_orientation_applied),
        cmocka_unit_test(test_malformed_generic), cmocka_unit_test(test_malformed_jpeg),
        cmocka_unit_test(test_malformed_png),     cmocka_unit_test(test_malformed_webp),
        cmocka_unit_test(test_gif),               cmocka_unit_test(test_bmp),
        cmocka_unit_test(test_exif_orientation),  cmocka_unit_test(test_detect),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
