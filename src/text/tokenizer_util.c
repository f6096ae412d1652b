/* Small pieces the tokenizer files share: the hash maps over pieces and merge pairs, UTF-8
 * validation, and the growable id and text buffers of the public API. */
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_internal.h"

/* ---------------------------------------------------------------------------------------- */
/* Hashing                                                                                    */

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

uint64_t tok_hash_bytes(const char *s, size_t len) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)len;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001B3ull;
        h ^= h >> 29;
        s += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, len);
    return mix64(h ^ w);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---------------------------------------------------------------------------------------- */
/* String map                                                                                 */

int tok_strmap_init(tok_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 1);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->lens = calloc(m->cap, sizeof *m->lens);
    m->vals = calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->lens || !m->vals) {
        tok_strmap_free(m);
        return -1;
    }
    return 0;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(tok_strmap *m) {
    tok_strmap bigger;
    if (tok_strmap_init(&bigger, m->cap) != 0) return -1; /* capacity doubles */
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) tok_strmap_put(&bigger, m->keys[i], m->lens[i], m->vals[i]);
    tok_strmap_free(m);
    *m = bigger;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) != 0) return -1;
    size_t mask = m->cap - 1, i = (size_t)tok_hash_bytes(key, len) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) {
            m->vals[i] = val;
            return 0;
        }
        i = (i + 1) & mask;
    }
    m->keys[i] = key;
    m->lens[i] = (uint32_t)len;
    m->vals[i] = val;
    m->n++;
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    size_t mask = m->cap - 1, i = (size_t)tok_hash_bytes(key, len) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) return m->vals[i];
        i = (i + 1) & mask;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Merge map                                                                                  */

int tok_mergemap_init(tok_mergemap *m, size_t expected) {
    m->n = 0;
    m->cap = pow2_at_least(expected * 2 + 1);
    m->slots = malloc(m->cap * sizeof *m->slots);
    if (!m->slots) return -1;
    for (size_t i = 0; i < m->cap; i++) m->slots[i].key = UINT64_MAX;
    return 0;
}

void tok_mergemap_free(tok_mergemap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static inline size_t merge_slot(const tok_mergemap *m, uint64_t key) {
    return (size_t)mix64(key) & (m->cap - 1);
}

int tok_mergemap_put(tok_mergemap *m, int32_t left, int32_t right, int32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) {
        tok_mergemap bigger;
        if (tok_mergemap_init(&bigger, m->cap) != 0) return -1;
        for (size_t i = 0; i < m->cap; i++) {
            const tok_merge *s = &m->slots[i];
            if (s->key != UINT64_MAX)
                tok_mergemap_put(&bigger, (int32_t)(s->key >> 32), (int32_t)(uint32_t)s->key,
                                 s->rank, s->id);
        }
        tok_mergemap_free(m);
        *m = bigger;
    }
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = merge_slot(m, key);
    while (m->slots[i].key != UINT64_MAX) {
        if (m->slots[i].key == key) return 0;
        i = (i + 1) & (m->cap - 1);
    }
    m->slots[i] = (tok_merge){key, rank, id};
    m->n++;
    return 0;
}

const tok_merge *tok_mergemap_get(const tok_mergemap *m, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = merge_slot(m, key);
    while (m->slots[i].key != UINT64_MAX) {
        if (m->slots[i].key == key) return &m->slots[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* UTF-8                                                                                      */

size_t tok_utf8_check(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t min, cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2, min = 0x80, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3, min = 0x800, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4, min = 0x10000, cp = c & 0x07;
        } else {
            return i;
        }
        if (len - i < n) return i;
        for (size_t k = 1; k < n; k++) {
            if ((u[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (u[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += n;
    }
    return len;
}

/* ---------------------------------------------------------------------------------------- */
/* Buffers of the API                                                                         */

int tok_text_append(tokenizer_text *t, const char *s, size_t len) {
    if (t->len + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->len + len + 1) cap *= 2;
        char *p = realloc(t->data, cap);
        if (!p) return -1;
        t->data = p;
        t->cap = cap;
    }
    if (len) memcpy(t->data + t->len, s, len);
    t->len += len;
    t->data[t->len] = '\0';
    return 0;
}

int tok_ids_reserve(tokenizer_ids *ids, size_t more) {
    if (ids->n + more <= ids->cap) return 0;
    size_t cap = ids->cap ? ids->cap : 64;
    while (cap < ids->n + more) cap *= 2;
    int32_t *p = realloc(ids->ids, cap * sizeof *p);
    if (!p) return -1;
    ids->ids = p;
    ids->cap = cap;
    return 0;
}

void tokenizer_ids_free(tokenizer_ids *ids) {
    if (!ids) return;
    free(ids->ids);
    memset(ids, 0, sizeof *ids);
}

void tokenizer_text_free(tokenizer_text *text) {
    if (!text) return;
    free(text->data);
    memset(text, 0, sizeof *text);
}
