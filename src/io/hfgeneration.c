/* generation_config.json: the token ids and sampling settings a checkpoint ships with, with the
 * defaults of transformers' GenerationConfig for absent keys. */
#include <string.h>

#include "base/json.h"
#include "io/hfconfig.h"

#define HF_GENERATION_MAX_BYTES (1u << 20)
#define HF_TOKEN_ID_MAX ((1 << 24) - 1)

void hf_generation_config_default(hf_generation_config *out) {
    memset(out, 0, sizeof *out);
    out->bos_token_id = -1;
    out->pad_token_id = -1;
    out->temperature = 1.0;
    out->top_p = 1.0;
    out->top_k = 50;
    out->repetition_penalty = 1.0;
}

static llava_status token_id(const json_t *v, const char *what, const char *key, int *out,
                             llava_error *err) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > HF_TOKEN_ID_MAX)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be a token id (an integer in [0, %d])",
                               what, key, HF_TOKEN_ID_MAX);
    *out = (int)json_integer_value(v);
    return LLAVA_OK;
}

/* An id key that may be absent or null (-1). */
static llava_status optional_id(const json_t *root, const char *key, const char *what, int *out,
                                llava_error *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return LLAVA_OK;
    return token_id(v, what, key, out, err);
}

static llava_status read_eos(const json_t *root, const char *what, hf_generation_config *g,
                             llava_error *err) {
    const json_t *v = json_object_get(root, "eos_token_id");
    if (!v || json_is_null(v)) return LLAVA_OK;
    if (!json_is_array(v)) {
        g->n_eos = 1;
        return token_id(v, what, "eos_token_id", &g->eos_token_ids[0], err);
    }
    size_t n = json_array_size(v);
    if (n > sizeof g->eos_token_ids / sizeof g->eos_token_ids[0])
        return llava_error_set(err, LLAVA_ERR_LIMIT, "%s: \"eos_token_id\" lists %zu ids, at most %zu are supported",
                               what, n, sizeof g->eos_token_ids / sizeof g->eos_token_ids[0]);
    for (size_t i = 0; i < n; i++) {
        llava_status st = token_id(json_array_get(v, i), what, "eos_token_id", &g->eos_token_ids[i], err);
        if (st != LLAVA_OK) return st;
    }
    g->n_eos = (int)n;
    return LLAVA_OK;
}

static llava_status number_in(const json_t *root, const char *key, double lo, double hi,
                              const char *what, double *out, llava_error *err) {
    llava_status st = llava_json_get_double(root, key, out, what, err);
    if (st != LLAVA_OK) return st;
    if (!(*out >= lo && *out <= hi))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" is %g, must be in [%g, %g]", what, key,
                               *out, lo, hi);
    return LLAVA_OK;
}

/* Integers only: a count written as 1.5 or 1e300 is a mistake, not something to round. */
static llava_status int_in(const json_t *root, const char *key, int64_t lo, int64_t hi,
                           const char *what, int *out, llava_error *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return LLAVA_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be an integer in [%lld, %lld]", what,
                               key, (long long)lo, (long long)hi);
    *out = (int)json_integer_value(v);
    return LLAVA_OK;
}

static llava_status generation_from_json(const json_t *root, const char *what,
                                         hf_generation_config *out, llava_error *err) {
    hf_generation_config g;
    hf_generation_config_default(&g);
    llava_status st;
    if ((st = optional_id(root, "bos_token_id", what, &g.bos_token_id, err)) != LLAVA_OK ||
        (st = optional_id(root, "pad_token_id", what, &g.pad_token_id, err)) != LLAVA_OK ||
        (st = read_eos(root, what, &g, err)) != LLAVA_OK ||
        (st = int_in(root, "max_new_tokens", 0, 1 << 30, what, &g.max_new_tokens, err)) != LLAVA_OK ||
        (st = llava_json_get_bool(root, "do_sample", &g.do_sample, what, err)) != LLAVA_OK ||
        (st = number_in(root, "temperature", 0.0, 1e6, what, &g.temperature, err)) != LLAVA_OK ||
        (st = number_in(root, "top_p", 0.0, 1.0, what, &g.top_p, err)) != LLAVA_OK ||
        (st = int_in(root, "top_k", 0, 1 << 30, what, &g.top_k, err)) != LLAVA_OK ||
        (st = number_in(root, "repetition_penalty", 1e-6, 1e6, what, &g.repetition_penalty, err)) != LLAVA_OK)
        return st;
    *out = g;
    return LLAVA_OK;
}

llava_status hf_generation_config_parse(const char *text, size_t len, const char *what,
                                        hf_generation_config *out, llava_error *err) {
    json_t *root = llava_json_load_buffer(text, len, what, err);
    if (!root) return err ? err->code : LLAVA_ERR_FORMAT;
    llava_status st = json_is_object(root)
                          ? generation_from_json(root, what, out, err)
                          : llava_error_set(err, LLAVA_ERR_FORMAT, "%s: the top level is not a JSON object", what);
    json_decref(root);
    return st;
}

llava_status hf_generation_config_load(const char *path, hf_generation_config *out,
                                       llava_error *err) {
    json_t *root = llava_json_load_file(path, HF_GENERATION_MAX_BYTES, true, err);
    if (!root) return err ? err->code : LLAVA_ERR_IO;
    llava_status st = generation_from_json(root, path, out, err);
    json_decref(root);
    return st;
}
