/* Typed JSON access with errors that name the file and key. */
#include "base/json.h"

#include <stdlib.h>

#include "base/file.h"

json_t *llava_json_load_buffer(const char *buf, size_t len, const char *what, llava_error *err) {
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        llava_error_set(err, LLAVA_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", what,
                        je.line, je.column, je.text);
    }
    return root;
}

json_t *llava_json_load_file(const char *path, size_t max_bytes, bool want_object, llava_error *err) {
    char *buf;
    size_t len;
    if (llava_read_file(path, max_bytes, &buf, &len, err) != LLAVA_OK) return NULL;
    json_t *root = llava_json_load_buffer(buf, len, path, err);
    free(buf);
    if (root && want_object && !json_is_object(root)) {
        json_decref(root);
        llava_error_set(err, LLAVA_ERR_FORMAT, "%s: the top level is not a JSON object", path);
        return NULL;
    }
    return root;
}

static const json_t *lookup(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

llava_status llava_json_get_int(const json_t *obj, const char *key, int64_t *out, const char *what,
                                llava_error *err) {
    const json_t *v = lookup(obj, key);
    if (!v) return LLAVA_OK;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return LLAVA_OK;
    }
    /* 4096.0 is an integer written as a float by some exporters; 4096.5 is not. */
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* range first: casting an out-of-range double to int64_t is undefined */
        if (d >= -9.2e18 && d <= 9.2e18 && d == (double)(int64_t)d) {
            *out = (int64_t)d;
            return LLAVA_OK;
        }
    }
    return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be an integer", what, key);
}

llava_status llava_json_get_double(const json_t *obj, const char *key, double *out,
                                   const char *what, llava_error *err) {
    const json_t *v = lookup(obj, key);
    if (!v) return LLAVA_OK;
    if (!json_is_number(v))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be a number", what, key);
    *out = json_number_value(v);
    return LLAVA_OK;
}

llava_status llava_json_get_bool(const json_t *obj, const char *key, bool *out, const char *what,
                                 llava_error *err) {
    const json_t *v = lookup(obj, key);
    if (!v) return LLAVA_OK;
    if (!json_is_boolean(v))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be true or false", what, key);
    *out = json_is_true(v);
    return LLAVA_OK;
}

llava_status llava_json_get_string(const json_t *obj, const char *key, const char **out,
                                   const char *what, llava_error *err) {
    const json_t *v = lookup(obj, key);
    if (!v) return LLAVA_OK;
    if (!json_is_string(v))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be a string", what, key);
    *out = json_string_value(v);
    return LLAVA_OK;
}
