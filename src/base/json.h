/* JSON helpers over jansson: load a file with a size cap and typed lookups whose errors name the
 * file and the key, so that every config and tokenizer reader reports problems the same way. */
#ifndef LLAVA_BASE_JSON_H
#define LLAVA_BASE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

/* Parses path (at most max_bytes) into a new reference; NULL and err set on failure, naming the
 * file, line and column. The root must be an object when want_object is true. */
json_t *llava_json_load_file(const char *path, size_t max_bytes, bool want_object, llava_error *err);

/* Parses a buffer; `what` names it in errors (a file name, "request body", ...). */
json_t *llava_json_load_buffer(const char *buf, size_t len, const char *what, llava_error *err);

/* Typed lookups of obj[key]. Absent key (or JSON null): returns LLAVA_OK and leaves *out as is,
 * so callers pre-load defaults. Present with the wrong type: LLAVA_ERR_FORMAT naming `what`
 * (usually the file) and the key. */
llava_status llava_json_get_int(const json_t *obj, const char *key, int64_t *out, const char *what,
                                llava_error *err);
llava_status llava_json_get_double(const json_t *obj, const char *key, double *out,
                                   const char *what, llava_error *err);
llava_status llava_json_get_bool(const json_t *obj, const char *key, bool *out, const char *what,
                                 llava_error *err);
/* *out points into obj (valid while obj lives). */
llava_status llava_json_get_string(const json_t *obj, const char *key, const char **out,
                                   const char *what, llava_error *err);

#endif
