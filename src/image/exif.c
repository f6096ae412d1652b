/* The one piece of image metadata preprocessing depends on: the EXIF (or XMP) orientation, read
 * with the same leniency as Pillow 9.4's Exif class, so that exif_transpose decisions match. */
#include <string.h>

#include "image/codec.h"

typedef struct tiff_reader {
    const uint8_t *p;
    size_t len;
    int big_endian;
} tiff_reader;

static int tiff_u16(const tiff_reader *t, size_t off, uint32_t *v) {
    if (off > t->len || t->len - off < 2) return 0;
    const uint8_t *b = t->p + off;
    *v = t->big_endian ? (uint32_t)(b[0] << 8 | b[1]) : (uint32_t)(b[1] << 8 | b[0]);
    return 1;
}

static int tiff_u32(const tiff_reader *t, size_t off, uint32_t *v) {
    if (off > t->len || t->len - off < 4) return 0;
    const uint8_t *b = t->p + off;
    *v = t->big_endian ? (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]
                       : (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
    return 1;
}

/* The first value of an entry as Pillow would compare it with 1..8 in a dict lookup: integer
 * types give ints, FLOAT/DOUBLE and RATIONAL compare equal when they hold an integer; BYTE,
 * ASCII and UNDEFINED come back as bytes/str and never match. Returns 0 when no match. */
static int entry_orientation(const tiff_reader *t, uint32_t type, const uint8_t *v) {
    tiff_reader e = {v, 8, t->big_endian};
    uint32_t a = 0, b = 0;
    switch (type) {
    case 3: /* SHORT */
        tiff_u16(&e, 0, &a);
        return a >= 1 && a <= 8 ? (int)a : 0;
    case 8: /* SSHORT */
        tiff_u16(&e, 0, &a);
        return a >= 1 && a <= 8 ? (int)a : 0;
    case 4: /* LONG */
    case 9: /* SLONG */
        tiff_u32(&e, 0, &a);
        return a >= 1 && a <= 8 ? (int)a : 0;
    case 6: /* SBYTE */
        return v[0] >= 1 && v[0] <= 8 ? v[0] : 0;
    case 5:  /* RATIONAL */
    case 10: /* SRATIONAL */
        tiff_u32(&e, 0, &a);
        tiff_u32(&e, 4, &b);
        if (type == 10 && ((a | b) & 0x80000000u)) {
            int32_t sa = (int32_t)a, sb = (int32_t)b;
            if (sb == 0 || sa % sb != 0) return 0;
            int32_t q = sa / sb;
            return q >= 1 && q <= 8 ? q : 0;
        }
        if (b == 0 || a % b != 0) return 0;
        return a / b >= 1 && a / b <= 8 ? (int)(a / b) : 0;
    case 11: { /* FLOAT */
        tiff_u32(&e, 0, &a);
        float f;
        memcpy(&f, &a, 4);
        for (int k = 1; k <= 8; k++)
            if (f == (float)k) return k;
        return 0;
    }
    case 12: { /* DOUBLE */
        uint32_t hi, lo;
        tiff_u32(&e, t->big_endian ? 0 : 4, &hi);
        tiff_u32(&e, t->big_endian ? 4 : 0, &lo);
        uint64_t bits = (uint64_t)hi << 32 | lo;
        double d;
        memcpy(&d, &bits, 8);
        for (int k = 1; k <= 8; k++)
            if (d == (double)k) return k;
        return 0;
    }
    default:
        return 0;
    }
}

/* Bytes per value of the TIFF types Pillow's ImageFileDirectory_v2 loads; 0 = a type it skips. */
static size_t tiff_unit(uint32_t type) {
    static const uint8_t units[17] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8};
    return type < 17 ? units[type] : 0;
}

int image_exif_orientation(const uint8_t *data, size_t len) {
    if (!data) return 0;
    if (len >= 6 && !memcmp(data, "Exif\0\0", 6)) {
        data += 6;
        len -= 6;
    }
    if (len < 8) return 0;
    tiff_reader t = {data, len, 0};
    if (!memcmp(data, "MM\0*", 4) || !memcmp(data, "MM*\0", 4))
        t.big_endian = 1;
    else if (memcmp(data, "II*\0", 4) && memcmp(data, "II\0*", 4))
        return 0; /* Pillow raises "not a TIFF file"; no orientation */
    uint32_t ifd = 0, count = 0;
    tiff_u32(&t, 4, &ifd);
    if (!tiff_u16(&t, ifd, &count)) return 0;
    int orientation = 0;
    /* Entries are read until the data runs out, keeping those already read (Pillow warns and
     * keeps them); a later duplicate tag replaces an earlier one. */
    for (uint32_t i = 0; i < count; i++) {
        size_t at = (size_t)ifd + 2 + (size_t)i * 12;
        uint32_t tag, type, n;
        if (!tiff_u16(&t, at, &tag) || !tiff_u16(&t, at + 2, &type) || !tiff_u32(&t, at + 4, &n) ||
            at + 12 > t.len)
            break;
        size_t unit = tiff_unit(type);
        if (tag != 0x0112 || unit == 0 || n == 0) continue;
        uint64_t size = (uint64_t)n * unit;
        uint8_t v[8] = {0};
        if (size <= 4) {
            memcpy(v, t.p + at + 8, 4);
        } else {
            uint32_t off;
            tiff_u32(&t, at + 8, &off);
            if (off > t.len || t.len - off < size) continue; /* short read: tag skipped */
            memcpy(v, t.p + off, unit);
        }
        orientation = entry_orientation(&t, type, v);
    }
    return orientation;
}

int image_xmp_orientation(const char *xmp, size_t len) {
    static const char key[] = "tiff:Orientation";
    const size_t klen = sizeof key - 1;
    for (size_t i = 0; i + klen < len; i++) {
        if (memcmp(xmp + i, key, klen)) continue;
        size_t j = i + klen;
        if (j + 2 < len && xmp[j] == '=' && xmp[j + 1] == '"' && xmp[j + 2] >= '0' &&
            xmp[j + 2] <= '9')
            return xmp[j + 2] - '0';
        if (j + 1 < len && xmp[j] == '>' && xmp[j + 1] >= '0' && xmp[j + 1] <= '9')
            return xmp[j + 1] - '0';
    }
    return 0;
}
