/* Reading one .safetensors file: the header is validated in full (types, shapes, byte ranges,
 * overlaps, metadata) before any tensor is handed out, and the data is used in place from a
 * read-only mapping. Sharded sets live in safetensors_set.c, writing in safetensors_writer.c. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct st_file {
    char *path;
    void *map;          /* the whole file */
    size_t map_len;
    st_header header;   /* tensors sorted by name, data pointers into map */
};

static char *dup_bytes(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

void st_header_free(st_header *h) {
    if (!h) return;
    for (size_t i = 0; i < h->count; i++) free((char *)h->tensors[i].name);
    for (size_t i = 0; i < h->meta_count; i++) {
        free(h->meta_keys[i]);
        free(h->meta_values[i]);
    }
    free(h->tensors);
    free(h->meta_keys);
    free(h->meta_values);
    memset(h, 0, sizeof *h);
}

static llava_status parse_metadata(const json_t *meta, const char *what, st_header *h,
                                   llava_error *err) {
    if (!json_is_object(meta))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"__metadata__\" must be an object of strings",
                               what);
    size_t n = json_object_size(meta);
    h->meta_keys = calloc(n ? n : 1, sizeof *h->meta_keys);
    h->meta_values = calloc(n ? n : 1, sizeof *h->meta_values);
    if (!h->meta_keys || !h->meta_values)
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory for the metadata", what);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)meta, key, value) {
        if (!json_is_string(value))
            return llava_error_set(err, LLAVA_ERR_FORMAT,
                                   "%s: \"__metadata__\" value of \"%.100s\" is not a string", what, key);
        char *k = dup_bytes(key, strlen(key));
        char *v = dup_bytes(json_string_value(value), json_string_length(value));
        if (!k || !v) {
            free(k);
            free(v);
            return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory for the metadata", what);
        }
        h->meta_keys[h->meta_count] = k;
        h->meta_values[h->meta_count] = v;
        h->meta_count++;
    }
    return LLAVA_OK;
}

/* Formats a shape as "[2, 3]" for messages. */
static void shape_text(const st_tensor *t, char *out, size_t cap) {
    size_t at = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < t->ndim && at < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (at < cap) snprintf(out + at, cap - at, "]");
}

/* One tensor entry: {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]} and nothing
 * else; the byte range must hold exactly the elements and lie inside the data section. Sets the
 * range in *begin and *end. */
static llava_status parse_tensor(const char *name, const json_t *entry, uint64_t data_len,
                                 const char *what, st_tensor *t, uint64_t *begin, uint64_t *end,
                                 llava_error *err) {
    if (!json_is_object(entry))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\": entry is not a JSON object",
                               what, name);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)entry, key, v) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 && strcmp(key, "data_offsets") != 0)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\": unknown key \"%.100s\"",
                                   what, name, key);
    }

    const json_t *dtype = json_object_get(entry, "dtype");
    if (!dtype)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\": \"dtype\" is missing", what, name);
    if (!json_is_string(dtype))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\": \"dtype\" must be a string", what,
                               name);
    if (llava_dtype_parse(json_string_value(dtype), &t->dtype) != 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: tensor \"%.200s\": unknown dtype \"%.32s\" (F64 F32 F16 BF16 I64 I32 I16 "
                               "I8 U8 BOOL)", what, name, json_string_value(dtype));

    const json_t *shape = json_object_get(entry, "shape");
    if (!shape || !json_is_array(shape))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\": \"shape\" must be an array", what,
                               name);
    size_t ndim = json_array_size(shape);
    if (ndim > ST_MAX_DIMS)
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED, "%s: tensor \"%.200s\": %zu dimensions, at most %d",
                               what, name, ndim, ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < ndim; i++) {
        const json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return llava_error_set(err, LLAVA_ERR_FORMAT,
                                   "%s: tensor \"%.200s\": shape[%zu] must be a non-negative integer", what,
                                   name, i);
        uint64_t n = (uint64_t)json_integer_value(d);
        t->shape[i] = (int64_t)n;
        if (n != 0 && numel > (uint64_t)INT64_MAX / n) overflow = true;
        numel *= n;
    }
    size_t esize = llava_dtype_size(t->dtype);
    if (overflow || numel > (uint64_t)INT64_MAX / esize) {
        char s[256];
        shape_text(t, s, sizeof s);
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\": shape %s is too large (its byte "
                               "size overflows)", what, name, s);
    }
    t->numel = (int64_t)numel;

    const json_t *offs = json_object_get(entry, "data_offsets");
    if (!offs || !json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)) ||
        json_integer_value(json_array_get(offs, 0)) < 0 || json_integer_value(json_array_get(offs, 1)) < 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: tensor \"%.200s\": \"data_offsets\" must be an array of two non-negative "
                               "integers", what, name);
    uint64_t b = (uint64_t)json_integer_value(json_array_get(offs, 0));
    uint64_t e = (uint64_t)json_integer_value(json_array_get(offs, 1));
    if (b > e)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: tensor \"%.200s\": data_offsets [%llu, %llu]: begin is after end", what, name,
                               (unsigned long long)b, (unsigned long long)e);
    if (e > data_len)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: tensor \"%.200s\": data_offsets [%llu, %llu] extend past the end of the data "
                               "section (%llu bytes; truncated file?)", what, name, (unsigned long long)b,
                               (unsigned long long)e, (unsigned long long)data_len);
    uint64_t need = numel * esize;
    if (e - b != need) {
        char s[256];
        shape_text(t, s, sizeof s);
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: tensor \"%.200s\": shape %s of %s needs %llu bytes but data_offsets [%llu, "
                               "%llu] span %llu", what, name, s, llava_dtype_name(t->dtype),
                               (unsigned long long)need, (unsigned long long)b, (unsigned long long)e,
                               (unsigned long long)(e - b));
    }
    if (need > SIZE_MAX)
        return llava_error_set(err, LLAVA_ERR_LIMIT, "%s: tensor \"%.200s\" is too large for this machine", what,
                               name);
    t->nbytes = (size_t)need;
    t->data = (const void *)(uintptr_t)b;
    *begin = b;
    *end = e;
    return LLAVA_OK;
}

typedef struct range {
    uint64_t begin, end;
    size_t tensor;
} range;

static int range_cmp(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* No byte belongs to two tensors: after sorting by begin, every non-empty range starts at or
 * after the furthest end seen so far. */
static llava_status check_overlaps(const st_header *h, range *r, const char *what, llava_error *err) {
    qsort(r, h->count, sizeof *r, range_cmp);
    uint64_t reach = 0;
    size_t reach_by = 0;
    for (size_t i = 0; i < h->count; i++) {
        if (r[i].begin == r[i].end) continue;
        if (r[i].begin < reach) {
            const range *o = NULL;
            for (size_t j = 0; j < i; j++)
                if (r[j].tensor == reach_by) o = &r[j];
            return llava_error_set(err, LLAVA_ERR_FORMAT,
                                   "%s: tensors \"%.150s\" [%llu, %llu] and \"%.150s\" [%llu, %llu] overlap", what,
                                   h->tensors[reach_by].name, (unsigned long long)(o ? o->begin : 0),
                                   (unsigned long long)reach, h->tensors[r[i].tensor].name,
                                   (unsigned long long)r[i].begin, (unsigned long long)r[i].end);
        }
        reach = r[i].end;
        reach_by = r[i].tensor;
    }
    return LLAVA_OK;
}

static llava_status parse_root(const json_t *root, uint64_t data_len, const char *what, st_header *h,
                               llava_error *err) {
    size_t n = json_object_size(root);
    h->tensors = calloc(n ? n : 1, sizeof *h->tensors);
    range *r = calloc(n ? n : 1, sizeof *r);
    if (!h->tensors || !r) {
        free(r);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory for %zu header entries", what, n);
    }
    llava_status st = LLAVA_OK;
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)root, key, value) {
        if (!strcmp(key, "__metadata__")) {
            st = parse_metadata(value, what, h, err);
        } else {
            st_tensor *t = &h->tensors[h->count];
            st = parse_tensor(key, value, data_len, what, t, &r[h->count].begin, &r[h->count].end, err);
            if (st == LLAVA_OK) {
                if (!(t->name = dup_bytes(key, strlen(key))))
                    st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", what);
                r[h->count].tensor = h->count;
                h->count++;
            }
        }
        if (st != LLAVA_OK) break;
    }
    if (st == LLAVA_OK) st = check_overlaps(h, r, what, err);
    free(r);
    if (st != LLAVA_OK) return st;
    qsort(h->tensors, h->count, sizeof *h->tensors, tensor_name_cmp);
    for (size_t i = 1; i < h->count; i++) /* the JSON parser already refuses duplicate keys */
        if (!strcmp(h->tensors[i - 1].name, h->tensors[i].name))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\" appears twice", what,
                                   h->tensors[i].name);
    return LLAVA_OK;
}

llava_status st_header_parse(const char *header, size_t header_len, uint64_t data_len,
                             const char *what, st_header *out, llava_error *err) {
    memset(out, 0, sizeof *out);
    if (header_len > ST_MAX_HEADER_BYTES)
        return llava_error_set(err, LLAVA_ERR_LIMIT, "%s: header of %zu bytes exceeds the limit of %u", what,
                               header_len, ST_MAX_HEADER_BYTES);
    json_error_t je;
    json_t *root = json_loadb(header, header_len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: header is not valid JSON (at file offset %llu): %s", what,
                               (unsigned long long)(8 + (uint64_t)je.position), je.text);
    llava_status st;
    if (!json_is_object(root))
        st = llava_error_set(err, LLAVA_ERR_FORMAT, "%s: header is not a JSON object", what);
    else
        st = parse_root(root, data_len, what, out, err);
    json_decref(root);
    if (st != LLAVA_OK) st_header_free(out);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* One file, mapped or read                                                                    */

/* Decode reads every weight once per token, a 4 KiB page at a time: each page is a TLB miss
 * (a two-level walk under a hypervisor). Asked for huge pages, Linux reads a mapped file into
 * 2 MiB page-cache folios and maps them whole, and backs memory a file is read into with 2 MiB
 * pages (bench/decode_parts: products 0-5 % faster through 2 MiB pages). Pages already cached
 * keep the size they were read in with; a kernel or file system without the feature ignores
 * the advice. */
static void advise_huge_pages(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    (void)madvise(p, n, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

/* The header length (the file's first 8 bytes, little-endian) against the limit and the file. */
static llava_status check_header_len(const char *path, const unsigned char *first8, uint64_t size,
                                     uint64_t *header_len, llava_error *err) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | first8[i];
    *header_len = n;
    if (n > ST_MAX_HEADER_BYTES)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: header length %llu exceeds the limit of %u bytes", path,
                               (unsigned long long)n, ST_MAX_HEADER_BYTES);
    if (n > size - 8)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: header length %llu runs past the end of the file (%llu bytes; truncated?)",
                               path, (unsigned long long)n, (unsigned long long)size);
    return LLAVA_OK;
}

/* Parses and validates the header of a file held at map (mapped or read: either way freed with
 * munmap), and on success hands the memory to a new st_file. */
static llava_status adopt(const char *path, void *map, uint64_t size, st_file **out, llava_error *err) {
    const unsigned char *bytes = map;
    uint64_t header_len = 0;
    llava_status st = check_header_len(path, bytes, size, &header_len, err);
    st_file *f = NULL;
    if (st == LLAVA_OK && (!(f = calloc(1, sizeof *f)) || !(f->path = dup_bytes(path, strlen(path)))))
        st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", path);
    if (st == LLAVA_OK)
        st = st_header_parse((const char *)bytes + 8, (size_t)header_len, size - 8 - header_len, path,
                             &f->header, err);
    if (st != LLAVA_OK) {
        if (f) free(f->path);
        free(f);
        munmap(map, (size_t)size);
        return st;
    }
    f->map = map;
    f->map_len = (size_t)size;
    const char *data = (const char *)bytes + 8 + header_len;
    for (size_t i = 0; i < f->header.count; i++) {
        st_tensor *t = &f->header.tensors[i];
        t->data = data + (uintptr_t)t->data;
        t->file = f->path;
    }
    *out = f;
    return LLAVA_OK;
}

/* Bytes per read() when a file is read whole. */
#define ST_READ_BLOCK ((size_t)64 << 20)

/* Reads n bytes at offset off into dst, retrying short reads and interruptions. Returns the
 * bytes read: n, or fewer where the file ended (errno 0) or a read failed (errno set). */
static uint64_t pread_full(int fd, void *dst, uint64_t n, uint64_t off) {
    uint64_t done = 0;
    while (done < n) {
        uint64_t want = n - done > ST_READ_BLOCK ? ST_READ_BLOCK : n - done;
        errno = 0;
        ssize_t got = pread(fd, (char *)dst + done, (size_t)want, (off_t)(off + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        done += (uint64_t)got;
    }
    return done;
}

/* ST_READ: the header alone, read and validated before the file is: a file that is not a
 * checkpoint fails at once, with the verdict and message the mapping gives, rather than after
 * gigabytes have been read (adopt then parses it again from memory: milliseconds). */
static llava_status check_header_first(int fd, const char *path, uint64_t size, llava_error *err) {
    unsigned char first8[8];
    if (pread_full(fd, first8, 8, 0) != 8)
        return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot read the header length: %s", path,
                               errno ? strerror(errno) : "the file ended");
    uint64_t header_len;
    llava_status st = check_header_len(path, first8, size, &header_len, err);
    if (st != LLAVA_OK) return st;
    char *header = malloc(header_len ? (size_t)header_len : 1);
    if (!header) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory for its header", path);
    if (pread_full(fd, header, header_len, 8) != header_len) {
        free(header);
        return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot read its header: %s", path,
                               errno ? strerror(errno) : "the file ended");
    }
    st_header h;
    st = st_header_parse(header, (size_t)header_len, size - 8 - header_len, path, &h, err);
    free(header);
    if (st == LLAVA_OK) st_header_free(&h);
    return st;
}

/* The whole file into anonymous memory (ST_READ): huge pages asked for, as for the mapping, and
 * read in blocks; a file that ends early (truncated while read) is an error, not zeros. */
static void *read_whole(int fd, const char *path, uint64_t size, llava_error *err, llava_status *st) {
    void *mem = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        *st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: cannot allocate %llu bytes to read it into: %s", path,
                              (unsigned long long)size, strerror(errno));
        return NULL;
    }
    advise_huge_pages(mem, (size_t)size);
    uint64_t done = pread_full(fd, mem, size, 0);
    if (done != size) {
        *st = errno ? llava_error_set(err, LLAVA_ERR_IO, "%s: read failed at byte %llu: %s", path,
                                      (unsigned long long)done, strerror(errno))
                    : llava_error_set(err, LLAVA_ERR_IO, "%s: ended at byte %llu of %llu while read "
                                      "(truncated meanwhile?)", path, (unsigned long long)done,
                                      (unsigned long long)size);
        munmap(mem, (size_t)size);
        return NULL;
    }
    mprotect(mem, (size_t)size, PROT_READ); /* as a mapping of the file: weights are never written */
    return mem;
}

llava_status st_file_open(const char *path, st_file **out, llava_error *err) {
    return st_file_open_mode(path, ST_MAP, out, err);
}

llava_status st_file_open_mode(const char *path, st_load_mode mode, st_file **out, llava_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return llava_error_set(err, LLAVA_ERR_IO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: file is %llu bytes, too short for the 8-byte header length (truncated?)",
                               path, (unsigned long long)size);
    }
    if (size > SIZE_MAX) {
        close(fd);
        return llava_error_set(err, LLAVA_ERR_LIMIT, "%s: too large to map", path);
    }
    if (mode == ST_READ) {
        llava_status rst = check_header_first(fd, path, size, err);
        if (rst != LLAVA_OK) {
            close(fd);
            return rst;
        }
        void *mem = read_whole(fd, path, size, err, &rst);
        close(fd);
        if (!mem) return rst;
        return adopt(path, mem, size, out, err);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    if (map != MAP_FAILED) advise_huge_pages(map, (size_t)size);
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED)
        return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot map %llu bytes: %s", path,
                               (unsigned long long)size, strerror(map_errno));

    return adopt(path, map, size, out, err);
}

void st_file_close(st_file *f) {
    if (!f) return;
    st_header_free(&f->header);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

size_t st_file_count(const st_file *f) { return f->header.count; }

const st_tensor *st_file_tensor(const st_file *f, size_t i) {
    return i < f->header.count ? &f->header.tensors[i] : NULL;
}

const char *st_file_metadata(const st_file *f, const char *key) {
    for (size_t i = 0; i < f->header.meta_count; i++)
        if (!strcmp(f->header.meta_keys[i], key)) return f->header.meta_values[i];
    return NULL;
}
