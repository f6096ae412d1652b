/* safetensors checkpoints: one file or a sharded set (model.safetensors.index.json), mapped
 * read-only with mmap and validated strictly before any tensor is handed out, because the bytes
 * come from outside. Tensors are used in place from the mapping. */
#ifndef LLAVA_IO_SAFETENSORS_H
#define LLAVA_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/error.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)

/* One tensor of a checkpoint. All pointers stay valid until the owning st_set is closed. */
typedef struct st_tensor {
    const char *name;
    llava_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data;     /* into the read-only mapping; aligned to the element size in files of
                           * the safetensors library and st_writer, not guaranteed in others */
    size_t nbytes;
    const char *file;     /* path of the shard that holds it */
} st_tensor;

/* One validated .safetensors file, mapped or read into memory (st_load_mode). */
typedef struct st_file st_file;

/* Validates a header held in memory: `header` is the JSON text (header_len bytes), data_len the
 * size of the data section that follows it; `what` names the file in errors. On success *out_
 * receives the parsed tensors (data pointers are offsets from NULL: add the data section's base).
 * Exposed for the fuzz target and tests; st_file_open uses it. */
typedef struct st_header {
    st_tensor *tensors;
    size_t count;
    char **meta_keys, **meta_values; /* __metadata__, a map of strings */
    size_t meta_count;
} st_header;
llava_status st_header_parse(const char *header, size_t header_len, uint64_t data_len,
                             const char *what, st_header *out, llava_error *err);
void st_header_free(st_header *h);

/* How a file's bytes reach memory. ST_MAP: mapped from the page cache (nothing read until used;
 * pages shared with every process mapping the file and dropped under memory pressure). ST_READ:
 * read whole into memory of this process's own, as llama.cpp's --no-mmap: the load reads the
 * file at once, and the weights then sit in fresh anonymous memory, which decode streams faster
 * and more steadily on the machines measured (docs/PERFORMANCE.md). */
typedef enum st_load_mode { ST_MAP = 0, ST_READ = 1 } st_load_mode;

/* Opens and validates one file (ST_MAP). */
llava_status st_file_open(const char *path, st_file **out, llava_error *err);
llava_status st_file_open_mode(const char *path, st_load_mode mode, st_file **out, llava_error *err);
void st_file_close(st_file *f);
size_t st_file_count(const st_file *f);
const st_tensor *st_file_tensor(const st_file *f, size_t i);
/* __metadata__ value for key, or NULL. */
const char *st_file_metadata(const st_file *f, const char *key);

/* A checkpoint: every tensor of one file or of all shards, looked up by name. */
typedef struct st_set st_set;

/* Opens a model folder: model.safetensors.index.json if present (every shard validated, each
 * tensor must be in the shard the weight_map names, every mapped name must exist), else
 * model.safetensors, else the single *.safetensors file in the folder. A path to a .safetensors
 * file opens that file alone. */
llava_status st_set_open(const char *path, st_set **out, llava_error *err);
llava_status st_set_open_mode(const char *path, st_load_mode mode, st_set **out, llava_error *err);
void st_set_close(st_set *s);
/* NULL if absent. O(1) average. */
const st_tensor *st_set_find(const st_set *s, const char *name);
size_t st_set_count(const st_set *s);
const st_tensor *st_set_tensor(const st_set *s, size_t i); /* sorted by name */
uint64_t st_set_total_bytes(const st_set *s);
size_t st_set_file_count(const st_set *s);

/* Writing (for `llava dump`, `llava preprocess`, tools and tests): collects tensors, then writes
 * one file with the header in the canonical form (sorted names, padded to 8 bytes). */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
/* Copies the name and shape; `data` must stay valid until st_writer_save returns. */
llava_status st_writer_add(st_writer *w, const char *name, llava_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, llava_error *err);
llava_status st_writer_set_metadata(st_writer *w, const char *key, const char *value,
                                    llava_error *err);
llava_status st_writer_save(st_writer *w, const char *path, llava_error *err);
void st_writer_free(st_writer *w);

#endif
