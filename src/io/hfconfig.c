/* config.json of LlavaForConditionalGeneration: every key read through one table that also holds
 * the transformers defaults (which save_pretrained relies on by omitting them) and the accepted
 * range, so that defaults, types and validation cannot drift apart. */
#include "io/hfconfig.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"

/* Config files are a few KB; anything near this is not a config. */
#define HF_CONFIG_MAX_BYTES (4u << 20)

typedef enum {
    SEC_LLAVA,        /* the top level: LlavaConfig (+ PretrainedConfig's pad_token_id, tie_word_embeddings) */
    SEC_LLAMA,        /* text_config of model_type "llama": LlamaConfig */
    SEC_MISTRAL,      /* text_config of model_type "mistral": MistralConfig */
    SEC_CLIP,         /* vision_config: CLIPVisionConfig */
    SEC_LLAVA_VISION, /* what LlavaConfig puts in place of an ABSENT vision_config (CLIP ViT-L/14-336),
                       * applied over the CLIP defaults */
} hf_section;

typedef enum { KIND_INT, KIND_DOUBLE, KIND_BOOL, KIND_ACT } hf_kind;

typedef struct hf_key {
    hf_section section;
    const char *key;
    hf_kind kind;
    size_t offset;        /* into hf_llava_config */
    double def;           /* default; bools as 0/1, activations as hf_act */
    double lo, hi;        /* accepted range of numbers */
    bool lo_open;         /* lo itself is excluded (eps, theta: must be > 0) */
} hf_key;

#define AT(field) offsetof(hf_llava_config, field)
#define SIZE_MAX_ (1 << 24) /* generous bound on any size, so products stay far from overflow */

/* The defaults of transformers 4.40.2: src/transformers/models/llava/configuration_llava.py,
 * llama/configuration_llama.py, mistral/configuration_mistral.py, clip/configuration_clip.py
 * (CLIPVisionConfig), and configuration_utils.py (PretrainedConfig). num_key_value_heads -1 means
 * "absent or null: = num_attention_heads" (LlamaConfig); MistralConfig's absent value is 8. */
static const hf_key hf_keys[] = {
    /* LlavaConfig */
    {SEC_LLAVA, "image_token_index", KIND_INT, AT(image_token_index), 32000, 0, SIZE_MAX_, false},
    {SEC_LLAVA, "projector_hidden_act", KIND_ACT, AT(projector_hidden_act), HF_ACT_GELU, 0, 0, false},
    {SEC_LLAVA, "vision_feature_layer", KIND_INT, AT(vision_feature_layer), -2, -1024, 1024, false},
    /* PretrainedConfig (LlavaConfig does not set them; the language model's own tie flag decides
     * whether lm_head is tied) */
    {SEC_LLAVA, "pad_token_id", KIND_INT, AT(pad_token_id), -1, -1, SIZE_MAX_, false},
    {SEC_LLAVA, "tie_word_embeddings", KIND_BOOL, AT(tie_word_embeddings), 1, 0, 1, false},

    /* LlamaConfig */
    {SEC_LLAMA, "vocab_size", KIND_INT, AT(text.vocab_size), 32000, 1, SIZE_MAX_, false},
    {SEC_LLAMA, "hidden_size", KIND_INT, AT(text.hidden_size), 4096, 1, SIZE_MAX_, false},
    {SEC_LLAMA, "intermediate_size", KIND_INT, AT(text.intermediate_size), 11008, 1, SIZE_MAX_, false},
    {SEC_LLAMA, "num_hidden_layers", KIND_INT, AT(text.num_hidden_layers), 32, 1, 1024, false},
    {SEC_LLAMA, "num_attention_heads", KIND_INT, AT(text.num_attention_heads), 32, 1, 4096, false},
    {SEC_LLAMA, "num_key_value_heads", KIND_INT, AT(text.num_key_value_heads), -1, 1, 4096, false},
    {SEC_LLAMA, "max_position_embeddings", KIND_INT, AT(text.max_position_embeddings), 2048, 1, SIZE_MAX_, false},
    {SEC_LLAMA, "rms_norm_eps", KIND_DOUBLE, AT(text.rms_norm_eps), 1e-6, 0, 1, true},
    {SEC_LLAMA, "rope_theta", KIND_DOUBLE, AT(text.rope_theta), 10000.0, 0, 1e12, true},
    {SEC_LLAMA, "hidden_act", KIND_ACT, AT(text.hidden_act), HF_ACT_SILU, 0, 0, false},
    {SEC_LLAMA, "tie_word_embeddings", KIND_BOOL, AT(text.tie_word_embeddings), 0, 0, 1, false},
    {SEC_LLAMA, "attention_bias", KIND_BOOL, AT(text.attention_bias), 0, 0, 1, false},

    /* MistralConfig (no attention_bias; sliding_window null means none) */
    {SEC_MISTRAL, "vocab_size", KIND_INT, AT(text.vocab_size), 32000, 1, SIZE_MAX_, false},
    {SEC_MISTRAL, "hidden_size", KIND_INT, AT(text.hidden_size), 4096, 1, SIZE_MAX_, false},
    {SEC_MISTRAL, "intermediate_size", KIND_INT, AT(text.intermediate_size), 14336, 1, SIZE_MAX_, false},
    {SEC_MISTRAL, "num_hidden_layers", KIND_INT, AT(text.num_hidden_layers), 32, 1, 1024, false},
    {SEC_MISTRAL, "num_attention_heads", KIND_INT, AT(text.num_attention_heads), 32, 1, 4096, false},
    {SEC_MISTRAL, "num_key_value_heads", KIND_INT, AT(text.num_key_value_heads), 8, 1, 4096, false},
    {SEC_MISTRAL, "max_position_embeddings", KIND_INT, AT(text.max_position_embeddings), 4096 * 32, 1, SIZE_MAX_, false},
    {SEC_MISTRAL, "rms_norm_eps", KIND_DOUBLE, AT(text.rms_norm_eps), 1e-6, 0, 1, true},
    {SEC_MISTRAL, "rope_theta", KIND_DOUBLE, AT(text.rope_theta), 10000.0, 0, 1e12, true},
    {SEC_MISTRAL, "sliding_window", KIND_INT, AT(text.sliding_window), 4096, 0, SIZE_MAX_, false},
    {SEC_MISTRAL, "hidden_act", KIND_ACT, AT(text.hidden_act), HF_ACT_SILU, 0, 0, false},
    {SEC_MISTRAL, "tie_word_embeddings", KIND_BOOL, AT(text.tie_word_embeddings), 0, 0, 1, false},

    /* CLIPVisionConfig */
    {SEC_CLIP, "hidden_size", KIND_INT, AT(vision.hidden_size), 768, 1, SIZE_MAX_, false},
    {SEC_CLIP, "intermediate_size", KIND_INT, AT(vision.intermediate_size), 3072, 1, SIZE_MAX_, false},
    {SEC_CLIP, "num_hidden_layers", KIND_INT, AT(vision.num_hidden_layers), 12, 1, 1024, false},
    {SEC_CLIP, "num_attention_heads", KIND_INT, AT(vision.num_attention_heads), 12, 1, 4096, false},
    {SEC_CLIP, "num_channels", KIND_INT, AT(vision.num_channels), 3, 3, 3, false}, /* RGB only */
    {SEC_CLIP, "image_size", KIND_INT, AT(vision.image_size), 224, 1, 16384, false},
    {SEC_CLIP, "patch_size", KIND_INT, AT(vision.patch_size), 32, 1, 16384, false},
    {SEC_CLIP, "layer_norm_eps", KIND_DOUBLE, AT(vision.layer_norm_eps), 1e-5, 0, 1, true},
    {SEC_CLIP, "hidden_act", KIND_ACT, AT(vision.hidden_act), HF_ACT_QUICK_GELU, 0, 0, false},

    /* LlavaConfig.__init__ when vision_config is None */
    {SEC_LLAVA_VISION, "hidden_size", KIND_INT, AT(vision.hidden_size), 1024, 0, 0, false},
    {SEC_LLAVA_VISION, "intermediate_size", KIND_INT, AT(vision.intermediate_size), 4096, 0, 0, false},
    {SEC_LLAVA_VISION, "num_hidden_layers", KIND_INT, AT(vision.num_hidden_layers), 24, 0, 0, false},
    {SEC_LLAVA_VISION, "num_attention_heads", KIND_INT, AT(vision.num_attention_heads), 16, 0, 0, false},
    {SEC_LLAVA_VISION, "image_size", KIND_INT, AT(vision.image_size), 336, 0, 0, false},
    {SEC_LLAVA_VISION, "patch_size", KIND_INT, AT(vision.patch_size), 14, 0, 0, false},
};

/* Names transformers' ACT2FN knows, mapped onto the functions they compute. */
static const struct {
    const char *name;
    hf_act act;
} hf_act_names[] = {
    {"silu", HF_ACT_SILU},           {"swish", HF_ACT_SILU},
    {"gelu", HF_ACT_GELU},           {"gelu_pytorch_tanh", HF_ACT_GELU_TANH},
    {"gelu_new", HF_ACT_GELU_TANH},  {"gelu_fast", HF_ACT_GELU_TANH},
    {"quick_gelu", HF_ACT_QUICK_GELU}, {"relu", HF_ACT_RELU},
};

const char *hf_act_name(hf_act act) {
    switch (act) {
    case HF_ACT_SILU: return "silu";
    case HF_ACT_GELU: return "gelu";
    case HF_ACT_GELU_TANH: return "gelu_pytorch_tanh";
    case HF_ACT_QUICK_GELU: return "quick_gelu";
    case HF_ACT_RELU: return "relu";
    }
    return "?";
}

static void *field_at(hf_llava_config *c, size_t offset) { return (char *)c + offset; }

static void set_default(hf_llava_config *c, const hf_key *k) {
    void *p = field_at(c, k->offset);
    switch (k->kind) {
    case KIND_INT: *(int *)p = (int)k->def; break;
    case KIND_DOUBLE: *(double *)p = k->def; break;
    case KIND_BOOL: *(bool *)p = k->def != 0; break;
    case KIND_ACT: *(hf_act *)p = (hf_act)(int)k->def; break;
    }
}

/* The value of obj[key] for a JSON object that may be NULL; JSON null counts as absent, as it
 * does for transformers (a None argument takes the default). */
static const json_t *get(const json_t *obj, const char *key) {
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    return (v && !json_is_null(v)) ? v : NULL;
}

/* Reads one table row from obj (prefix names the nested object in errors, "" at the top). */
static llava_status read_key(const json_t *obj, const hf_key *k, const char *what,
                             const char *prefix, hf_llava_config *c, llava_error *err) {
    const json_t *v = get(obj, k->key);
    if (!v) return LLAVA_OK;
    void *p = field_at(c, k->offset);
    if (k->kind == KIND_BOOL) {
        if (!json_is_boolean(v))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s%s\" must be true or false", what,
                                   prefix, k->key);
        *(bool *)p = json_is_true(v);
        return LLAVA_OK;
    }
    if (k->kind == KIND_ACT) {
        if (!json_is_string(v))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s%s\" must be a string", what,
                                   prefix, k->key);
        const char *s = json_string_value(v);
        for (size_t i = 0; i < sizeof hf_act_names / sizeof hf_act_names[0]; i++) {
            if (!strcmp(s, hf_act_names[i].name)) {
                *(hf_act *)p = hf_act_names[i].act;
                return LLAVA_OK;
            }
        }
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED, "%s: \"%s%s\": unknown activation \"%.64s\"",
                               what, prefix, k->key, s);
    }
    double d;
    if (k->kind == KIND_INT) {
        /* 4096.0 is an integer written as a float by some exporters; 4096.5 is not. */
        if (json_is_integer(v)) {
            json_int_t i = json_integer_value(v);
            if (i < (json_int_t)k->lo || i > (json_int_t)k->hi)
                return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s%s\" is %lld, must be in [%.0f, %.0f]",
                                       what, prefix, k->key, (long long)i, k->lo, k->hi);
            *(int *)p = (int)i;
            return LLAVA_OK;
        }
        if (!json_is_real(v) || json_real_value(v) != floor(json_real_value(v)))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s%s\" must be an integer", what,
                                   prefix, k->key);
        d = json_real_value(v);
    } else {
        if (!json_is_number(v))
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s%s\" must be a number", what,
                                   prefix, k->key);
        d = json_number_value(v);
    }
    bool low = k->lo_open ? !(d > k->lo) : !(d >= k->lo);
    if (low || !(d <= k->hi))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s%s\" is %g, must be %s %g and <= %g",
                               what, prefix, k->key, d, k->lo_open ? ">" : ">=", k->lo, k->hi);
    if (k->kind == KIND_INT)
        *(int *)p = (int)d;
    else
        *(double *)p = d;
    return LLAVA_OK;
}

/* Applies the defaults of one section, then (when obj is given) the values it holds. */
static llava_status read_section(const json_t *obj, hf_section sec, const char *what,
                                 const char *prefix, hf_llava_config *c, llava_error *err) {
    for (size_t i = 0; i < sizeof hf_keys / sizeof hf_keys[0]; i++) {
        if (hf_keys[i].section != sec) continue;
        set_default(c, &hf_keys[i]);
        llava_status st = read_key(obj, &hf_keys[i], what, prefix, c, err);
        if (st != LLAVA_OK) return st;
    }
    return LLAVA_OK;
}

/* A nested config object (text_config / vision_config): absent or null gives NULL. */
static llava_status sub_object(const json_t *root, const char *key, const char *what,
                               const json_t **out, llava_error *err) {
    *out = get(root, key);
    if (*out && !json_is_object(*out))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s\" must be an object", what, key);
    return LLAVA_OK;
}

static llava_status string_key(const json_t *obj, const char *key, const char *what,
                               const char *prefix, const char **out, llava_error *err) {
    const json_t *v = get(obj, key);
    if (!v) return LLAVA_OK;
    if (!json_is_string(v))
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"%s%s\" must be a string", what, prefix,
                               key);
    *out = json_string_value(v);
    return LLAVA_OK;
}

/* rope_scaling: null, or {"type" (or "rope_type"): "linear" | "dynamic", "factor": > 1}, as
 * LlamaConfig._rope_scaling_validation accepts it. */
static llava_status read_rope_scaling(const json_t *text, const char *what, hf_text_config *t,
                                      llava_error *err) {
    t->rope_scaling_type = HF_ROPE_NONE;
    t->rope_scaling_factor = 1.0;
    const json_t *rs = get(text, "rope_scaling");
    if (!rs) return LLAVA_OK;
    if (!json_is_object(rs))
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"text_config.rope_scaling\" must be an object or null", what);
    const json_t *type = get(rs, "type");
    if (!type) type = get(rs, "rope_type");
    if (!type || !json_is_string(type))
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"text_config.rope_scaling.type\" must be a string", what);
    const char *s = json_string_value(type);
    if (!strcmp(s, "linear"))
        t->rope_scaling_type = HF_ROPE_LINEAR;
    else if (!strcmp(s, "dynamic"))
        t->rope_scaling_type = HF_ROPE_DYNAMIC;
    else
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED,
                               "%s: \"text_config.rope_scaling.type\": unsupported \"%.64s\" "
                               "(linear or dynamic)", what, s);
    const json_t *f = get(rs, "factor");
    if (!f || !json_is_number(f) || !(json_number_value(f) > 1.0) || !(json_number_value(f) < 1e6))
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"text_config.rope_scaling.factor\" must be a number > 1", what);
    t->rope_scaling_factor = json_number_value(f);
    return LLAVA_OK;
}

static llava_status read_text(const json_t *root, const char *what, hf_llava_config *c,
                              llava_error *err) {
    const json_t *text;
    llava_status st = sub_object(root, "text_config", what, &text, err);
    if (st != LLAVA_OK) return st;
    const char *type = "llama"; /* LlavaConfig: a text_config without model_type is LLaMA */
    if ((st = string_key(text, "model_type", what, "text_config.", &type, err)) != LLAVA_OK) return st;
    hf_section sec;
    if (!strcmp(type, "llama"))
        sec = SEC_LLAMA;
    else if (!strcmp(type, "mistral"))
        sec = SEC_MISTRAL;
    else
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED,
                               "%s: \"text_config.model_type\": unsupported \"%.64s\" (llama or mistral)",
                               what, type);
    hf_text_config *t = &c->text;
    snprintf(t->model_type, sizeof t->model_type, "%s", type);
    t->sliding_window = 0;
    t->attention_bias = false;
    if ((st = read_section(text, sec, what, "text_config.", c, err)) != LLAVA_OK) return st;
    /* An explicit null means: kv heads = heads (both classes); no sliding window (Mistral). */
    const json_t *kv = text ? json_object_get(text, "num_key_value_heads") : NULL;
    if (t->num_key_value_heads < 0 || (kv && json_is_null(kv)))
        t->num_key_value_heads = t->num_attention_heads;
    const json_t *sw = text ? json_object_get(text, "sliding_window") : NULL;
    if (sw && json_is_null(sw)) t->sliding_window = 0;
    if ((st = read_rope_scaling(text, what, t, err)) != LLAVA_OK) return st;

    /* The top-level vocab_size is an older spelling of text_config.vocab_size (LlavaConfig before
     * 4.40 wrote both): taken when text_config lacks it, and must agree when both are given. */
    const json_t *top = get(root, "vocab_size");
    if (top) {
        if (!json_is_integer(top) || json_integer_value(top) < 1 || json_integer_value(top) > SIZE_MAX_)
            return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"vocab_size\" must be an integer in [1, %d]",
                                   what, SIZE_MAX_);
        long long top_vocab = json_integer_value(top);
        if (!get(text, "vocab_size")) {
            t->vocab_size = (int)top_vocab;
        } else if (top_vocab != t->vocab_size) {
            return llava_error_set(err, LLAVA_ERR_FORMAT,
                                   "%s: \"vocab_size\" %lld disagrees with \"text_config.vocab_size\" %d",
                                   what, top_vocab, t->vocab_size);
        }
    }

    if (t->hidden_size % t->num_attention_heads != 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"text_config.hidden_size\" %d is not divisible by "
                               "\"text_config.num_attention_heads\" %d", what, t->hidden_size,
                               t->num_attention_heads);
    if (t->num_attention_heads % t->num_key_value_heads != 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"text_config.num_key_value_heads\" %d does not divide "
                               "\"text_config.num_attention_heads\" %d", what, t->num_key_value_heads,
                               t->num_attention_heads);
    t->head_dim = t->hidden_size / t->num_attention_heads;
    if (t->head_dim % 2 != 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"text_config.hidden_size\" / \"text_config.num_attention_heads\" = %d, "
                               "must be even for rotary embeddings", what, t->head_dim);
    return LLAVA_OK;
}

static llava_status read_vision(const json_t *root, const char *what, hf_llava_config *c,
                                llava_error *err) {
    const json_t *vision;
    llava_status st = sub_object(root, "vision_config", what, &vision, err);
    if (st != LLAVA_OK) return st;
    const char *type = "clip_vision_model";
    if ((st = string_key(vision, "model_type", what, "vision_config.", &type, err)) != LLAVA_OK)
        return st;
    if (strcmp(type, "clip_vision_model") != 0)
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED,
                               "%s: \"vision_config.model_type\": unsupported \"%.64s\" (clip_vision_model)",
                               what, type);
    if ((st = read_section(vision, SEC_CLIP, what, "vision_config.", c, err)) != LLAVA_OK) return st;
    if (!vision) read_section(NULL, SEC_LLAVA_VISION, what, "", c, err);
    hf_vision_config *v = &c->vision;
    if (v->hidden_size % v->num_attention_heads != 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"vision_config.hidden_size\" %d is not divisible by "
                               "\"vision_config.num_attention_heads\" %d", what, v->hidden_size,
                               v->num_attention_heads);
    if (v->image_size % v->patch_size != 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"vision_config.image_size\" %d is not divisible by "
                               "\"vision_config.patch_size\" %d", what, v->image_size, v->patch_size);
    return LLAVA_OK;
}

static llava_status llava_config_from_json(const json_t *root, const char *what,
                                           hf_llava_config *out, llava_error *err) {
    hf_llava_config c;
    memset(&c, 0, sizeof c);
    const char *type = NULL;
    llava_status st = string_key(root, "model_type", what, "", &type, err);
    if (st != LLAVA_OK) return st;
    if (!type)
        return llava_error_set(err, LLAVA_ERR_FORMAT, "%s: \"model_type\" is missing (expected \"llava\")",
                               what);
    if (strcmp(type, "llava") != 0)
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED,
                               "%s: \"model_type\": unsupported \"%.64s\" (llava)", what, type);
    snprintf(c.model_type, sizeof c.model_type, "%s", type);
    if ((st = read_section(root, SEC_LLAVA, what, "", &c, err)) != LLAVA_OK) return st;

    const char *strategy = "default";
    if ((st = string_key(root, "vision_feature_select_strategy", what, "", &strategy, err)) != LLAVA_OK)
        return st;
    if (!strcmp(strategy, "full"))
        c.select_full = true;
    else if (strcmp(strategy, "default") != 0)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"vision_feature_select_strategy\" must be \"default\" or \"full\", "
                               "not \"%.64s\"", what, strategy);

    if ((st = read_text(root, what, &c, err)) != LLAVA_OK) return st;
    if ((st = read_vision(root, what, &c, err)) != LLAVA_OK) return st;

    /* hidden_states holds the embeddings plus one entry per layer: indices 0..L, or -(L+1)..-1. */
    int layers = c.vision.num_hidden_layers;
    if (c.vision_feature_layer > layers || c.vision_feature_layer < -(layers + 1))
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: \"vision_feature_layer\" %d is out of range for %d vision layers "
                               "(must be in [%d, %d])", what, c.vision_feature_layer, layers,
                               -(layers + 1), layers);
    *out = c;
    return LLAVA_OK;
}

llava_status hf_llava_config_parse(const char *text, size_t len, const char *what,
                                   hf_llava_config *out, llava_error *err) {
    json_t *root = llava_json_load_buffer(text, len, what, err);
    if (!root) return err ? err->code : LLAVA_ERR_FORMAT;
    llava_status st = json_is_object(root)
                          ? llava_config_from_json(root, what, out, err)
                          : llava_error_set(err, LLAVA_ERR_FORMAT, "%s: the top level is not a JSON object", what);
    json_decref(root);
    return st;
}

llava_status hf_llava_config_load(const char *path, hf_llava_config *out, llava_error *err) {
    json_t *root = llava_json_load_file(path, HF_CONFIG_MAX_BYTES, true, err);
    if (!root) return err ? err->code : LLAVA_ERR_IO;
    llava_status st = llava_config_from_json(root, path, out, err);
    json_decref(root);
    return st;
}
