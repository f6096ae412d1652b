/* A checkpoint as a set of tensors looked up by name: one .safetensors file, or the shards that
 * model.safetensors.index.json lists, each validated and cross-checked against the index's
 * weight_map so that a tensor is never silently taken from the wrong file. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file.h"
#include "base/json.h"
#include "io/safetensors.h"

#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"
#define ST_INDEX_MAX_BYTES (64u << 20)
#define ST_PATH_MAX 4096

struct st_set {
    st_file **files;
    size_t nfiles;
    st_tensor *tensors;  /* copies of every file's entries, sorted by name */
    size_t count;
    size_t *slots;       /* open addressing: index into tensors + 1, 0 = empty */
    size_t nslots;       /* a power of two, at least twice count */
    uint64_t total_bytes;
    st_load_mode mode;
};

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

const st_tensor *st_set_find(const st_set *s, const char *name) {
    if (!s || !name || !s->nslots) return NULL;
    size_t mask = s->nslots - 1;
    for (size_t i = (size_t)name_hash(name) & mask;; i = (i + 1) & mask) {
        size_t slot = s->slots[i];
        if (!slot) return NULL;
        if (!strcmp(s->tensors[slot - 1].name, name)) return &s->tensors[slot - 1];
    }
}

size_t st_set_count(const st_set *s) { return s->count; }
const st_tensor *st_set_tensor(const st_set *s, size_t i) { return i < s->count ? &s->tensors[i] : NULL; }
uint64_t st_set_total_bytes(const st_set *s) { return s->total_bytes; }
size_t st_set_file_count(const st_set *s) { return s->nfiles; }

void st_set_close(st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->nfiles; i++) st_file_close(s->files[i]);
    free(s->files);
    free(s->tensors);
    free(s->slots);
    free(s);
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Gathers the tensors of every opened file, sorts them and builds the name table. Names are
 * unique within a file; across files a repeated name is an error naming both files. */
static llava_status build_table(st_set *s, const char *what, llava_error *err) {
    size_t n = 0;
    for (size_t f = 0; f < s->nfiles; f++) n += st_file_count(s->files[f]);
    s->tensors = malloc((n ? n : 1) * sizeof *s->tensors);
    size_t nslots = 16;
    while (nslots < 2 * n) nslots *= 2;
    s->slots = calloc(nslots, sizeof *s->slots);
    if (!s->tensors || !s->slots)
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory for %zu tensors", what, n);
    s->nslots = nslots;
    for (size_t f = 0; f < s->nfiles; f++)
        for (size_t i = 0; i < st_file_count(s->files[f]); i++) s->tensors[s->count++] = *st_file_tensor(s->files[f], i);
    qsort(s->tensors, s->count, sizeof *s->tensors, tensor_name_cmp);
    for (size_t i = 0; i < s->count; i++) {
        if (i && !strcmp(s->tensors[i - 1].name, s->tensors[i].name))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: tensor \"%.200s\" is in both %s and %s", what,
                                   s->tensors[i].name, s->tensors[i - 1].file, s->tensors[i].file);
        size_t mask = nslots - 1, j = (size_t)name_hash(s->tensors[i].name) & mask;
        while (s->slots[j]) j = (j + 1) & mask;
        s->slots[j] = i + 1;
        s->total_bytes += s->tensors[i].nbytes;
    }
    return LLAVA_OK;
}

static llava_status add_file(st_set *s, const char *path, llava_error *err) {
    st_file **files = realloc(s->files, (s->nfiles + 1) * sizeof *files);
    if (!files) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", path);
    s->files = files;
    return st_file_open_mode(path, s->mode, &s->files[s->nfiles++], err) == LLAVA_OK
               ? LLAVA_OK
               : (s->nfiles--, err ? err->code : LLAVA_ERR_FORMAT);
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard name from the index must be a plain file name in the index's folder. */
static int plain_file_name(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Opens the shards of an index and checks the weight_map both ways: every tensor of a shard is
 * mapped to that shard, and every mapped tensor is in the shard it is mapped to. */
static llava_status open_index(st_set *s, const char *index_path, const char *dir, llava_error *err) {
    json_t *root = llava_json_load_file(index_path, ST_INDEX_MAX_BYTES, true, err);
    if (!root) return err ? err->code : LLAVA_ERR_FORMAT;
    llava_status st = LLAVA_OK;
    const char **shards = NULL;
    const json_t *map = json_object_get(root, "weight_map");
    if (!map || !json_is_object(map)) {
        st = llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"weight_map\" must be an object", index_path);
        goto done;
    }
    size_t n = json_object_size(map), nshards = 0;
    if (n == 0) {
        st = llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto done;
    }
    shards = malloc(n * sizeof *shards);
    if (!shards) {
        st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", index_path);
        goto done;
    }
    const char *name;
    const json_t *file;
    json_object_foreach((json_t *)map, name, file) {
        if (!json_is_string(file) || !plain_file_name(json_string_value(file))) {
            st = llava_error_set(err, LLAVA_ERR_FORMAT,
                                 "%s: weight_map entry of tensor \"%.200s\" must be a file name in the same folder",
                                 index_path, name);
            goto done;
        }
        shards[nshards++] = json_string_value(file);
    }
    qsort(shards, nshards, sizeof *shards, str_cmp);
    size_t unique = 0;
    for (size_t i = 0; i < nshards; i++)
        if (!unique || strcmp(shards[unique - 1], shards[i]) != 0) shards[unique++] = shards[i];

    for (size_t i = 0; i < unique; i++) {
        char path[ST_PATH_MAX];
        if (llava_path_join(path, sizeof path, dir, shards[i]) != 0) {
            st = llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "%s: shard path too long", index_path);
            goto done;
        }
        if ((st = add_file(s, path, err)) != LLAVA_OK) {
            llava_error_prefix(err, "%s: shard \"%s\" named by the weight_map", index_path, shards[i]);
            goto done;
        }
        const st_file *f = s->files[s->nfiles - 1];
        for (size_t t = 0; t < st_file_count(f); t++) {
            const char *tname = st_file_tensor(f, t)->name;
            const json_t *mapped = json_object_get(map, tname);
            if (!mapped) {
                st = llava_error_set(err, LLAVA_ERR_FORMAT,
                                     "%s: tensor \"%.200s\" is in shard \"%s\" but not in the weight_map",
                                     index_path, tname, shards[i]);
                goto done;
            }
            if (strcmp(json_string_value(mapped), shards[i]) != 0) {
                st = llava_error_set(err, LLAVA_ERR_FORMAT,
                                     "%s: tensor \"%.200s\" is in shard \"%s\" but the weight_map puts it in \"%s\"",
                                     index_path, tname, shards[i], json_string_value(mapped));
                goto done;
            }
        }
    }
    if ((st = build_table(s, index_path, err)) != LLAVA_OK) goto done;
    json_object_foreach((json_t *)map, name, file) {
        if (!st_set_find(s, name)) {
            st = llava_error_set(err, LLAVA_ERR_FORMAT,
                                 "%s: the weight_map names tensor \"%.200s\" in shard \"%s\", which does not hold it",
                                 index_path, name, json_string_value(file));
            goto done;
        }
    }
done:
    free(shards);
    json_decref(root);
    return st;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* The one *.safetensors file of a folder that has neither an index nor model.safetensors. */
static llava_status find_single(const char *dir, char *out, size_t cap, llava_error *err) {
    DIR *d = opendir(dir);
    if (!d) return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    int found = 0;
    char first[512] = "", second[512] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".safetensors")) continue;
        char path[ST_PATH_MAX];
        if (llava_path_join(path, sizeof path, dir, e->d_name) != 0 || !llava_file_exists(path)) continue;
        if (found == 0) snprintf(first, sizeof first, "%s", e->d_name);
        if (found == 1) snprintf(second, sizeof second, "%s", e->d_name);
        found++;
    }
    closedir(d);
    if (found == 0)
        return llava_error_set(err, LLAVA_ERR_IO, "%s: no %s, %s or other .safetensors file", dir, ST_INDEX_NAME,
                               ST_SINGLE_NAME);
    if (found > 1)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: %d .safetensors files (%s, %s, ...) but no %s saying which to use", dir,
                               found, first, second, ST_INDEX_NAME);
    if (llava_path_join(out, cap, dir, first) != 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
    return LLAVA_OK;
}

llava_status st_set_open(const char *path, st_set **out, llava_error *err) {
    return st_set_open_mode(path, ST_MAP, out, err);
}

llava_status st_set_open_mode(const char *path, st_load_mode mode, st_set **out, llava_error *err) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return llava_error_set(err, LLAVA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    st_set *s = calloc(1, sizeof *s);
    if (!s) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", path);
    s->mode = mode;
    llava_status st;
    char file[ST_PATH_MAX];
    if (S_ISDIR(sb.st_mode)) {
        if (llava_path_join(file, sizeof file, path, ST_INDEX_NAME) != 0) {
            st = llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "%s: path too long", path);
        } else if (llava_file_exists(file)) {
            st = open_index(s, file, path, err);
        } else {
            llava_path_join(file, sizeof file, path, ST_SINGLE_NAME);
            st = llava_file_exists(file) ? LLAVA_OK : find_single(path, file, sizeof file, err);
            if (st == LLAVA_OK && (st = add_file(s, file, err)) == LLAVA_OK) st = build_table(s, file, err);
        }
    } else if (has_suffix(path, ".index.json")) {
        /* the folder of the index holds its shards */
        const char *slash = strrchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : 0;
        if (n >= sizeof file) {
            st = llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "%s: path too long", path);
        } else {
            memcpy(file, path, n);
            file[n] = '\0';
            if (slash && n == 0) snprintf(file, sizeof file, "/");
            st = open_index(s, path, file, err);
        }
    } else {
        st = add_file(s, path, err);
        if (st == LLAVA_OK) st = build_table(s, path, err);
    }
    if (st != LLAVA_OK) {
        st_set_close(s);
        return st;
    }
    *out = s;
    return LLAVA_OK;
}
