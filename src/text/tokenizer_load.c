/* The loader's shared helpers: the pool of piece strings and the per-id tables, and typed
 * lookups into jansson values whose errors name the file and the field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_load.h"

int tl_oom(loader *L) {
    llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", L->what);
    return -1;
}

/* Copies s into the pool; returns its offset, or UINT32_MAX when out of memory/limit. The pool
 * is sized before any map points into it (see reserve_pool), so it never moves afterwards. */
uint32_t tl_pool_add(tokenizer *tok, const char *s, size_t len) {
    if (tok->pool_len + len + 1 > tok->pool_cap) return UINT32_MAX;
    uint32_t off = (uint32_t)tok->pool_len;
    memcpy(tok->pool + off, s, len);
    tok->pool[off + len] = '\0';
    tok->pool_len += len + 1;
    return off;
}

int tl_ensure_ids(tokenizer *tok, int32_t n) {
    if (n <= tok->n_ids) return 0;
    uint32_t *off = realloc(tok->piece_off, (size_t)n * sizeof *off);
    if (!off) return -1;
    tok->piece_off = off;
    uint32_t *len = realloc(tok->piece_len, (size_t)n * sizeof *len);
    if (!len) return -1;
    tok->piece_len = len;
    uint8_t *flags = realloc(tok->id_flags, (size_t)n);
    if (!flags) return -1;
    tok->id_flags = flags;
    uint8_t *byte = realloc(tok->id_byte, (size_t)n);
    if (!byte) return -1;
    tok->id_byte = byte;
    for (int32_t i = tok->n_ids; i < n; i++) {
        off[i] = 0;
        len[i] = 0;
        flags[i] = 0;
        byte[i] = 0;
    }
    tok->n_ids = n;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* ByteFallback's test: exactly "<0x" + two hex digits + ">". */
static int byte_piece_value(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

/* Gives id the piece at pool offset off. */
void tl_set_piece(tokenizer *tok, int32_t id, uint32_t off, size_t len, uint8_t flags) {
    tok->piece_off[id] = off;
    tok->piece_len[id] = (uint32_t)len;
    int b = byte_piece_value(tok->pool + off, len);
    tok->id_flags[id] = (uint8_t)(flags | TOK_ID_PRESENT | (b >= 0 ? TOK_ID_BYTE : 0));
    tok->id_byte[id] = (uint8_t)(b >= 0 ? b : 0);
}

/* ---------------------------------------------------------------------------------------- */
/* JSON helpers                                                                               */

/* A string member that must be present. */
const char *tl_need_string(loader *L, const json_t *obj, const char *key, const char *where,
                               size_t *len) {
    const json_t *v = json_object_get(obj, key);
    if (!v || !json_is_string(v)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.%s must be a string", L->what, where,
                        key);
        return NULL;
    }
    if (len) *len = json_string_length(v);
    return json_string_value(v);
}

/* A string of exactly one character (Metaspace replacement, Strip content). */
int tl_need_char(loader *L, const json_t *obj, const char *key, const char *where,
                     uint32_t *cp) {
    size_t len;
    const char *s = tl_need_string(L, obj, key, where, &len);
    if (!s) return -1;
    if (len == 0 || tok_utf8_len((unsigned char)s[0]) != len) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.%s must be a single character",
                        L->what, where, key);
        return -1;
    }
    tok_utf8_decode(s, len, cp);
    return 0;
}

/* An optional boolean member; `file` names the file in errors, `where` the object (NULL: the
 * top level). */
int tl_get_bool_in(loader *L, const char *file, const json_t *obj, const char *key,
                   const char *where, bool *out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s%s%s must be true or false", file,
                        where ? where : "", where ? "." : "", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

int tl_get_bool(loader *L, const json_t *obj, const char *key, const char *where, bool *out) {
    return tl_get_bool_in(L, L->what, obj, key, where, out);
}

/* A pattern object of Replace: {"String": s}; {"Regex": r} is not supported. */
int tl_get_pattern(loader *L, const json_t *obj, const char *where, char **pat, size_t *len) {
    const json_t *p = json_object_get(obj, "pattern");
    const json_t *s = p ? json_object_get(p, "String") : NULL;
    if (p && json_object_get(p, "Regex")) {
        llava_error_set(L->err, LLAVA_ERR_UNSUPPORTED, "%s: %s: Regex patterns are not supported",
                        L->what, where);
        return -1;
    }
    if (!s || !json_is_string(s)) {
        llava_error_set(L->err, LLAVA_ERR_FORMAT, "%s: %s.pattern must be {\"String\": ...}",
                        L->what, where);
        return -1;
    }
    *len = json_string_length(s);
    *pat = malloc(*len + 1);
    if (!*pat) return llava_error_set(L->err, LLAVA_ERR_NO_MEMORY, "out of memory"), -1;
    memcpy(*pat, json_string_value(s), *len + 1);
    return 0;
}

char *tl_dup_bytes(const char *s, size_t len) {
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

int tl_type_is(const json_t *obj, const char *type) {
    const json_t *t = json_object_get(obj, "type");
    return t && json_is_string(t) && !strcmp(json_string_value(t), type);
}

const char *tl_type_of(const json_t *obj) {
    const json_t *t = json_object_get(obj, "type");
    return t && json_is_string(t) ? json_string_value(t) : "(no type)";
}

