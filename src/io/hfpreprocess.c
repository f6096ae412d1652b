/* preprocessor_config.json of a CLIPImageProcessor: resize, crop, rescale and normalisation
 * settings, with the processor's defaults for absent keys and unknown keys ignored (real files
 * carry extras such as "_valid_processor_keys"). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "io/hfconfig.h"

#define HF_PREPROCESS_MAX_BYTES (1u << 20)
#define HF_IMAGE_SIDE_MAX 16384

/* CLIPImageProcessor.__init__ (transformers 4.40.2, models/clip/image_processing_clip.py) with
 * OPENAI_CLIP_MEAN / OPENAI_CLIP_STD from image_utils.py; do_pad is LLaVA's pad-to-square mode,
 * which CLIPImageProcessor does not have (off). */
void hf_preprocess_config_default(hf_preprocess_config *out) {
    memset(out, 0, sizeof *out);
    out->do_resize = true;
    out->shortest_edge = 224;
    out->resample = 3; /* PIL.Image.BICUBIC */
    out->do_center_crop = true;
    out->crop_height = out->crop_width = 224;
    out->do_rescale = true;
    out->rescale_factor = 1.0 / 255.0;
    out->do_normalize = true;
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    memcpy(out->image_mean, mean, sizeof mean);
    memcpy(out->image_std, std, sizeof std);
    out->do_convert_rgb = true;
    out->do_pad = false;
}

static llava_status side(const json_t *v, const char *what, const char *key, int *out,
                         llava_error *err) {
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > HF_IMAGE_SIDE_MAX)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be an integer in [1, %d]", what, key,
                               HF_IMAGE_SIDE_MAX);
    *out = (int)json_integer_value(v);
    return LLAVA_OK;
}

/* A size as get_size_dict accepts it: an int (shortest edge for "size", a square for
 * "crop_size"), [height, width], {"height", "width"} or (size only) {"shortest_edge"}. Sets
 * either *edge or *h and *w, zeroing the other form. */
static llava_status read_size(const json_t *root, const char *key, bool edge_allowed,
                              const char *what, int *edge, int *h, int *w, llava_error *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return LLAVA_OK;
    char name[64];
    if (json_is_integer(v)) {
        int n = 0;
        llava_status st = side(v, what, key, &n, err);
        if (st != LLAVA_OK) return st;
        if (edge_allowed) {
            *edge = n;
            *h = *w = 0;
        } else {
            *h = *w = n;
        }
        return LLAVA_OK;
    }
    if (json_is_array(v) && json_array_size(v) == 2) {
        llava_status st;
        snprintf(name, sizeof name, "%s[0]", key);
        if ((st = side(json_array_get(v, 0), what, name, h, err)) != LLAVA_OK) return st;
        snprintf(name, sizeof name, "%s[1]", key);
        if ((st = side(json_array_get(v, 1), what, name, w, err)) != LLAVA_OK) return st;
        if (edge) *edge = 0;
        return LLAVA_OK;
    }
    if (json_is_object(v)) {
        const json_t *se = json_object_get(v, "shortest_edge");
        const json_t *hv = json_object_get(v, "height"), *wv = json_object_get(v, "width");
        if (edge_allowed && se && !hv && !wv) {
            snprintf(name, sizeof name, "%s.shortest_edge", key);
            llava_status st = side(se, what, name, edge, err);
            if (st == LLAVA_OK) *h = *w = 0;
            return st;
        }
        if (hv && wv && !se) {
            llava_status st;
            snprintf(name, sizeof name, "%s.height", key);
            if ((st = side(hv, what, name, h, err)) != LLAVA_OK) return st;
            snprintf(name, sizeof name, "%s.width", key);
            if ((st = side(wv, what, name, w, err)) != LLAVA_OK) return st;
            if (edge) *edge = 0;
            return LLAVA_OK;
        }
    }
    return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be an integer, [height, width], %s"
                           "{\"height\", \"width\"}", what, key,
                           edge_allowed ? "{\"shortest_edge\"} or " : "or ");
}

/* image_mean / image_std: three numbers, or one for all channels. */
static llava_status read_triple(const json_t *root, const char *key, bool positive, const char *what,
                                float out[3], llava_error *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return LLAVA_OK;
    double d[3];
    if (json_is_number(v)) {
        d[0] = d[1] = d[2] = json_number_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 3) {
        for (size_t i = 0; i < 3; i++) {
            const json_t *e = json_array_get(v, i);
            if (!json_is_number(e))
                return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s[%zu]\" must be a number", what, key, i);
            d[i] = json_number_value(e);
        }
    } else {
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be an array of 3 numbers", what, key);
    }
    for (int i = 0; i < 3; i++) {
        if (!isfinite(d[i]) || fabs(d[i]) > 1e6 || (positive && !(d[i] > 0)))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s[%d]\" is %g, must be %s", what, key, i,
                                   d[i], positive ? "> 0" : "finite");
        out[i] = (float)d[i];
    }
    return LLAVA_OK;
}

static llava_status preprocess_from_json(const json_t *root, const char *what,
                                         hf_preprocess_config *out, llava_error *err) {
    hf_preprocess_config p;
    hf_preprocess_config_default(&p);
    llava_status st;
    if ((st = llava_json_get_bool(root, "do_resize", &p.do_resize, what, err)) != LLAVA_OK ||
        (st = llava_json_get_bool(root, "do_center_crop", &p.do_center_crop, what, err)) != LLAVA_OK ||
        (st = llava_json_get_bool(root, "do_rescale", &p.do_rescale, what, err)) != LLAVA_OK ||
        (st = llava_json_get_bool(root, "do_normalize", &p.do_normalize, what, err)) != LLAVA_OK ||
        (st = llava_json_get_bool(root, "do_convert_rgb", &p.do_convert_rgb, what, err)) != LLAVA_OK ||
        (st = llava_json_get_bool(root, "do_pad", &p.do_pad, what, err)) != LLAVA_OK ||
        (st = llava_json_get_double(root, "rescale_factor", &p.rescale_factor, what, err)) != LLAVA_OK ||
        (st = read_size(root, "size", true, what, &p.shortest_edge, &p.resize_height, &p.resize_width,
                        err)) != LLAVA_OK ||
        (st = read_size(root, "crop_size", false, what, NULL, &p.crop_height, &p.crop_width, err)) != LLAVA_OK ||
        (st = read_triple(root, "image_mean", false, what, p.image_mean, err)) != LLAVA_OK ||
        (st = read_triple(root, "image_std", true, what, p.image_std, err)) != LLAVA_OK)
        return st;
    /* PIL's filters: NEAREST 0, LANCZOS 1, BILINEAR 2, BICUBIC 3, BOX 4, HAMMING 5. */
    const json_t *resample = json_object_get(root, "resample");
    if (resample && !json_is_null(resample)) {
        if (!json_is_integer(resample) || json_integer_value(resample) < 0 || json_integer_value(resample) > 5)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"resample\" must be a PIL filter code in [0, 5]",
                                   what);
        p.resample = (int)json_integer_value(resample);
    }
    if (!(p.rescale_factor > 0 && p.rescale_factor <= 1))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"rescale_factor\" is %g, must be in (0, 1]", what,
                               p.rescale_factor);
    *out = p;
    return LLAVA_OK;
}

llava_status hf_preprocess_config_parse(const char *text, size_t len, const char *what,
                                        hf_preprocess_config *out, llava_error *err) {
    json_t *root = llava_json_load_buffer(text, len, what, err);
    if (!root) return err ? err->code : LLAVA_ERR_FORMAT;
    llava_status st = json_is_object(root)
                          ? preprocess_from_json(root, what, out, err)
                          : llava_error_set(err, LLAVA_ERR_FORMAT, "%s: the top level is not a JSON object", what);
    json_decref(root);
    return st;
}

llava_status hf_preprocess_config_load(const char *path, hf_preprocess_config *out,
                                       llava_error *err) {
    json_t *root = llava_json_load_file(path, HF_PREPROCESS_MAX_BYTES, true, err);
    if (!root) return err ? err->code : LLAVA_ERR_IO;
    llava_status st = preprocess_from_json(root, path, out, err);
    json_decref(root);
    return st;
}
