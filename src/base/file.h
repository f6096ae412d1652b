/* Reading whole files and joining paths, with sizes checked and errors that name the file. */
#ifndef LLAVA_BASE_FILE_H
#define LLAVA_BASE_FILE_H

#include <stddef.h>

#include "base/error.h"

/* Reads all of path into a new NUL-terminated buffer (*out, *len excludes the NUL).
 * Files larger than max_bytes are rejected with LLAVA_ERR_LIMIT. The caller frees *out. */
llava_status llava_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                             llava_error *err);

/* Writes len bytes to path atomically enough for tools (write then rename). */
llava_status llava_write_file(const char *path, const void *data, size_t len, llava_error *err);

/* dir + "/" + name into out (size cap); returns 0, or -1 if it does not fit. */
int llava_path_join(char *out, size_t cap, const char *dir, const char *name);

/* 1 if path names an existing regular file, else 0. */
int llava_file_exists(const char *path);

#endif
