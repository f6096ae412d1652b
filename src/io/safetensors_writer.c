/* Writing .safetensors files in the canonical form of the safetensors library: 8-byte
 * little-endian header length, a JSON header (__metadata__ first, then tensors sorted by name)
 * padded with spaces to a multiple of 8, then the data ordered by element size (largest first)
 * and name, so that every tensor is aligned to its element size. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

typedef struct st_entry {
    char *name;
    llava_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
    uint64_t begin; /* offset in the data section, set when saving */
} st_entry;

struct st_writer {
    st_entry *entries;
    size_t count, cap;
    char **meta_keys, **meta_values;
    size_t meta_count, meta_cap;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) free(w->entries[i].name);
    for (size_t i = 0; i < w->meta_count; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->entries);
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

llava_status st_writer_add(st_writer *w, const char *name, llava_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, llava_error *err) {
    if (!w || !name || !name[0])
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "safetensors writer: a tensor needs a name");
    if (!strcmp(name, "__metadata__"))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "safetensors writer: \"__metadata__\" is reserved, not a tensor name");
    if ((unsigned)dtype >= LLAVA_DTYPE_COUNT)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "safetensors writer: tensor \"%s\": bad dtype %d",
                               name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "safetensors writer: tensor \"%s\": %d dimensions (0 to %d)", name, ndim,
                               ST_MAX_DIMS);
    size_t nbytes = llava_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && nbytes > SIZE_MAX / (uint64_t)shape[i]))
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "safetensors writer: tensor \"%s\": bad dimension %d = %lld", name, i,
                                   (long long)shape[i]);
        nbytes *= (size_t)shape[i];
    }
    if (nbytes > 0 && !data)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "safetensors writer: tensor \"%s\" has no data",
                               name);
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        st_entry *e = realloc(w->entries, cap * sizeof *e);
        if (!e) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
        w->entries = e;
        w->cap = cap;
    }
    st_entry *e = &w->entries[w->count];
    memset(e, 0, sizeof *e);
    if (!(e->name = dup_string(name)))
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    if (ndim > 0) memcpy(e->shape, shape, (size_t)ndim * sizeof shape[0]);
    e->data = data;
    e->nbytes = nbytes;
    w->count++;
    return LLAVA_OK;
}

llava_status st_writer_set_metadata(st_writer *w, const char *key, const char *value,
                                    llava_error *err) {
    if (!w || !key || !value)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "safetensors writer: metadata needs a key and value");
    for (size_t i = 0; i < w->meta_count; i++) {
        if (!strcmp(w->meta_keys[i], key)) {
            char *v = dup_string(value);
            if (!v) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return LLAVA_OK;
        }
    }
    if (w->meta_count == w->meta_cap) {
        size_t cap = w->meta_cap ? 2 * w->meta_cap : 4;
        char **k = realloc(w->meta_keys, cap * sizeof *k);
        if (k) w->meta_keys = k;
        char **v = realloc(w->meta_values, cap * sizeof *v);
        if (v) w->meta_values = v;
        if (!k || !v) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
        w->meta_cap = cap;
    }
    char *k = dup_string(key), *v = dup_string(value);
    if (!k || !v) {
        free(k);
        free(v);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
    }
    w->meta_keys[w->meta_count] = k;
    w->meta_values[w->meta_count] = v;
    w->meta_count++;
    return LLAVA_OK;
}

/* A growing text buffer; `failed` sticks after the first allocation failure. */
typedef struct text_buf {
    char *s;
    size_t len, cap;
    int failed;
} text_buf;

static void buf_put(text_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void buf_str(text_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* A JSON string literal: quotes, backslashes and control bytes escaped, other bytes as they are. */
static void buf_json_string(text_buf *b, const char *s) {
    buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            buf_put(b, esc, 6);
        } else {
            buf_put(b, (const char *)p, 1);
        }
    }
    buf_put(b, "\"", 1);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int by_key(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Data order: larger elements first, then by name. */
static int by_layout(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    size_t sx = llava_dtype_size(x->dtype), sy = llava_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static llava_status build_header(st_writer *w, const st_entry **order, text_buf *b, llava_error *err) {
    qsort(w->entries, w->count, sizeof *w->entries, by_name);
    for (size_t i = 1; i < w->count; i++)
        if (!strcmp(w->entries[i - 1].name, w->entries[i].name))
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "safetensors writer: tensor \"%s\" was added twice", w->entries[i].name);
    for (size_t i = 0; i < w->count; i++) order[i] = &w->entries[i];
    qsort(order, w->count, sizeof *order, by_layout);
    uint64_t at = 0;
    for (size_t i = 0; i < w->count; i++) {
        ((st_entry *)order[i])->begin = at;
        at += order[i]->nbytes;
    }

    buf_str(b, "{");
    if (w->meta_count > 0) {
        /* sort key and value pointers together: sort an index of keys, carry values along */
        char **pairs = malloc(2 * w->meta_count * sizeof *pairs);
        if (!pairs) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
        for (size_t i = 0; i < w->meta_count; i++) {
            pairs[2 * i] = w->meta_keys[i];
            pairs[2 * i + 1] = w->meta_values[i];
        }
        qsort(pairs, w->meta_count, 2 * sizeof *pairs, by_key);
        buf_str(b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->meta_count; i++) {
            if (i) buf_str(b, ",");
            buf_json_string(b, pairs[2 * i]);
            buf_str(b, ":");
            buf_json_string(b, pairs[2 * i + 1]);
        }
        buf_str(b, "}");
        free(pairs);
    }
    for (size_t i = 0; i < w->count; i++) {
        const st_entry *e = &w->entries[i];
        char num[64];
        if (i || w->meta_count) buf_str(b, ",");
        buf_json_string(b, e->name);
        buf_str(b, ":{\"dtype\":\"");
        buf_str(b, llava_dtype_name(e->dtype));
        buf_str(b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)e->shape[d]);
            buf_str(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)e->begin,
                 (unsigned long long)(e->begin + e->nbytes));
        buf_str(b, num);
    }
    buf_str(b, "}");
    while (b->len % 8 != 0) buf_str(b, " ");
    if (b->failed) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
    if (b->len > ST_MAX_HEADER_BYTES)
        return llava_error_set(err, LLAVA_ERR_LIMIT, "safetensors writer: header of %zu bytes exceeds %u",
                               b->len, ST_MAX_HEADER_BYTES);
    return LLAVA_OK;
}

llava_status st_writer_save(st_writer *w, const char *path, llava_error *err) {
    if (!w || !path) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "safetensors writer: no path");
    const st_entry **order = malloc((w->count ? w->count : 1) * sizeof *order);
    if (!order) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "safetensors writer: out of memory");
    text_buf b = {0};
    llava_status st = build_header(w, order, &b, err);
    if (st != LLAVA_OK) {
        free(order);
        free(b.s);
        return st;
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(order);
        free(b.s);
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = llava_error_set(err, LLAVA_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
        int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(b.s, 1, b.len, f) == b.len;
        for (size_t i = 0; ok && i < w->count; i++)
            if (order[i]->nbytes) ok = fwrite(order[i]->data, 1, order[i]->nbytes, f) == order[i]->nbytes;
        int saved_errno = errno;
        if (fclose(f) != 0) ok = 0;
        if (!ok || rename(tmp, path) != 0) {
            if (ok) saved_errno = errno;
            remove(tmp);
            st = llava_error_set(err, LLAVA_ERR_IO, "%s: write failed: %s", path, strerror(saved_errno));
        }
    }
    free(order);
    free(b.s);
    return st;
}
