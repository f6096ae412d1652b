/* Strict base64 decoding: a table lookup per character, CR/LF skipped, padding only at the end,
 * and no leftover bits set, so that two different strings never decode to the same image. */
#include "server/base64.h"

#include <stdint.h>
#include <stdio.h>

/* 0..63 for the alphabet, 64 for '=', 65 for CR/LF, 255 for anything else */
static const uint8_t table[256] = {
    ['A'] = 0,  ['B'] = 1,  ['C'] = 2,  ['D'] = 3,  ['E'] = 4,  ['F'] = 5,  ['G'] = 6,
    ['H'] = 7,  ['I'] = 8,  ['J'] = 9,  ['K'] = 10, ['L'] = 11, ['M'] = 12, ['N'] = 13,
    ['O'] = 14, ['P'] = 15, ['Q'] = 16, ['R'] = 17, ['S'] = 18, ['T'] = 19, ['U'] = 20,
    ['V'] = 21, ['W'] = 22, ['X'] = 23, ['Y'] = 24, ['Z'] = 25, ['a'] = 26, ['b'] = 27,
    ['c'] = 28, ['d'] = 29, ['e'] = 30, ['f'] = 31, ['g'] = 32, ['h'] = 33, ['i'] = 34,
    ['j'] = 35, ['k'] = 36, ['l'] = 37, ['m'] = 38, ['n'] = 39, ['o'] = 40, ['p'] = 41,
    ['q'] = 42, ['r'] = 43, ['s'] = 44, ['t'] = 45, ['u'] = 46, ['v'] = 47, ['w'] = 48,
    ['x'] = 49, ['y'] = 50, ['z'] = 51, ['0'] = 52, ['1'] = 53, ['2'] = 54, ['3'] = 55,
    ['4'] = 56, ['5'] = 57, ['6'] = 58, ['7'] = 59, ['8'] = 60, ['9'] = 61, ['+'] = 62,
    ['/'] = 63, ['='] = 64, ['\r'] = 65, ['\n'] = 65,
};

/* table[] is zero for unlisted characters, and 'A' is also 0: tell them apart here */
static uint8_t class_of(unsigned char c) { return c == 'A' || table[c] ? table[c] : 255; }

size_t srv_base64_max_decoded(size_t len) { return len / 4 * 3 + 3; }

int srv_base64_decode(const char *src, size_t len, unsigned char *out, size_t *out_len, char *msg,
                      size_t cap) {
    uint32_t acc = 0;
    int have = 0;     /* characters in acc (0..3) */
    size_t n = 0;     /* bytes written */
    size_t pad = 0;   /* '=' seen */
    size_t pad_at = 0;
    size_t data = 0;  /* alphabet characters seen */
    for (size_t i = 0; i < len; i++) {
        uint8_t v = class_of((unsigned char)src[i]);
        if (v == 65) continue;
        if (v == 255) {
            unsigned char c = (unsigned char)src[i];
            if (c >= 0x20 && c < 0x7f)
                snprintf(msg, cap, "invalid base64 character '%c' at offset %zu", c, i);
            else
                snprintf(msg, cap, "invalid base64 byte 0x%02x at offset %zu", c, i);
            return -1;
        }
        if (v == 64) {
            if (pad == 0) pad_at = i;
            pad++;
            continue;
        }
        if (pad > 0) {
            snprintf(msg, cap, "base64 data after '=' padding (offset %zu)", pad_at);
            return -1;
        }
        data++;
        acc = acc << 6 | v;
        if (++have == 4) {
            out[n++] = (unsigned char)(acc >> 16);
            out[n++] = (unsigned char)(acc >> 8);
            out[n++] = (unsigned char)acc;
            acc = 0;
            have = 0;
        }
    }
    if (data == 0) {
        snprintf(msg, cap, "empty base64 data");
        return -1;
    }
    if (have == 1) {
        snprintf(msg, cap, "truncated base64 data (%zu characters, one too many for whole bytes)",
                 data);
        return -1;
    }
    /* padding, when present, must complete the last group of 4 exactly */
    if (pad > 0 && (have == 0 || (size_t)have + pad != 4)) {
        snprintf(msg, cap, "wrong base64 padding (%zu '=' after %zu characters)", pad, data);
        return -1;
    }
    if (have == 2) {
        if (acc & 0xf) {
            snprintf(msg, cap, "non-canonical base64 ending (unused bits set)");
            return -1;
        }
        out[n++] = (unsigned char)(acc >> 4);
    } else if (have == 3) {
        if (acc & 0x3) {
            snprintf(msg, cap, "non-canonical base64 ending (unused bits set)");
            return -1;
        }
        out[n++] = (unsigned char)(acc >> 10);
        out[n++] = (unsigned char)(acc >> 2);
    }
    *out_len = n;
    return 0;
}
