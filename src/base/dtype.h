/* Element types of tensors as stored in checkpoints, and exact scalar conversions of the 16-bit
 * float formats. Shared by io/ (which reads them) and tensor/ (which computes on them). */
#ifndef LLAVA_BASE_DTYPE_H
#define LLAVA_BASE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum llava_dtype {
    LLAVA_DTYPE_F64,
    LLAVA_DTYPE_F32,
    LLAVA_DTYPE_F16,
    LLAVA_DTYPE_BF16,
    LLAVA_DTYPE_I64,
    LLAVA_DTYPE_I32,
    LLAVA_DTYPE_I16,
    LLAVA_DTYPE_I8,
    LLAVA_DTYPE_U8,
    LLAVA_DTYPE_BOOL,
    LLAVA_DTYPE_COUNT
} llava_dtype;

/* Bytes per element. */
size_t llava_dtype_size(llava_dtype t);
/* The safetensors spelling ("F32", "BF16", ...). */
const char *llava_dtype_name(llava_dtype t);
/* Parses a safetensors dtype name; returns 0 and sets *out, or -1 if unknown. */
int llava_dtype_parse(const char *name, llava_dtype *out);

/* IEEE half -> float, exact for every value including subnormals, inf and NaN. */
static inline float llava_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> IEEE half, round to nearest even (as torch's .half()). */
static inline uint16_t llava_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                  /* below the smallest normal half */
        if (ax < 0x33000000u) return (uint16_t)sign;        /* rounds to zero */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t lsb = (r >> 13) & 1;
    r += 0xfff + lsb;
    return (uint16_t)(sign | (r >> 13));
}

/* bfloat16 -> float: exact (the top 16 bits of a float). */
static inline float llava_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> bfloat16, round to nearest even; NaN stays NaN. */
static inline uint16_t llava_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

#endif
