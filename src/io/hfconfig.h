/* The Hugging Face configuration files of a LLaVA checkpoint, read into plain structs with the
 * transformers defaults applied for every absent key (save_pretrained omits keys equal to the
 * defaults, so the real llava-1.5 config.json leaves out most text-model sizes). */
#ifndef LLAVA_IO_HFCONFIG_H
#define LLAVA_IO_HFCONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef enum { HF_ACT_SILU, HF_ACT_GELU, HF_ACT_GELU_TANH, HF_ACT_QUICK_GELU, HF_ACT_RELU } hf_act;

typedef enum { HF_ROPE_NONE, HF_ROPE_LINEAR, HF_ROPE_DYNAMIC } hf_rope_scaling;

typedef struct hf_text_config {
    char model_type[16];          /* "llama" or "mistral" */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim;                 /* hidden_size / num_attention_heads */
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    hf_rope_scaling rope_scaling_type;
    double rope_scaling_factor;
    int sliding_window;           /* 0 = none */
    hf_act hidden_act;
    bool tie_word_embeddings;
    bool attention_bias;
} hf_text_config;

typedef struct hf_vision_config {
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_channels;
    int image_size;
    int patch_size;
    double layer_norm_eps;
    hf_act hidden_act;
} hf_vision_config;

typedef struct hf_llava_config {
    char model_type[16];          /* "llava" */
    int image_token_index;
    int pad_token_id;             /* -1 if absent */
    hf_act projector_hidden_act;
    int vision_feature_layer;     /* as written (negative counts from the end) */
    bool select_full;             /* vision_feature_select_strategy "full" (else "default") */
    bool tie_word_embeddings;     /* as written (PretrainedConfig default true); whether lm_head is
                                   * tied to the embeddings is text.tie_word_embeddings */
    hf_text_config text;
    hf_vision_config vision;
} hf_llava_config;

/* config.json of LlavaForConditionalGeneration. Errors name the file and key. */
llava_status hf_llava_config_load(const char *path, hf_llava_config *out, llava_error *err);
/* The same from JSON text in memory; `what` names it in errors. */
llava_status hf_llava_config_parse(const char *text, size_t len, const char *what,
                                   hf_llava_config *out, llava_error *err);
/* The transformers spelling of an activation ("silu", "gelu", "quick_gelu", ...). */
const char *hf_act_name(hf_act act);

typedef struct hf_generation_config {
    int bos_token_id;             /* -1 if absent */
    int eos_token_ids[8];
    int n_eos;
    int pad_token_id;             /* -1 if absent */
    int max_new_tokens;           /* 0 if absent */
    bool do_sample;
    double temperature, top_p;    /* HF defaults 1.0 */
    int top_k;                    /* HF default 50 */
    double repetition_penalty;    /* 1.0 */
} hf_generation_config;

/* generation_config.json (eos_token_id may be an int or a list). */
llava_status hf_generation_config_load(const char *path, hf_generation_config *out,
                                       llava_error *err);
llava_status hf_generation_config_parse(const char *text, size_t len, const char *what,
                                        hf_generation_config *out, llava_error *err);
/* What GenerationConfig() holds with no file (ids -1, no eos). */
void hf_generation_config_default(hf_generation_config *out);

typedef struct hf_preprocess_config {
    bool do_resize;
    int shortest_edge;            /* size.shortest_edge; 0 when size is height/width */
    int resize_height, resize_width; /* size.height/width form; 0 when shortest_edge */
    int resample;                 /* PIL code; 3 = bicubic */
    bool do_center_crop;
    int crop_height, crop_width;
    bool do_rescale;
    double rescale_factor;
    bool do_normalize;
    float image_mean[3], image_std[3];
    bool do_convert_rgb;
    bool do_pad;                  /* pad to square with the mean colour (LLaVA's "pad" mode) */
} hf_preprocess_config;

/* preprocessor_config.json (CLIPImageProcessor keys; unknown keys ignored). */
llava_status hf_preprocess_config_load(const char *path, hf_preprocess_config *out,
                                       llava_error *err);
llava_status hf_preprocess_config_parse(const char *text, size_t len, const char *what,
                                        hf_preprocess_config *out, llava_error *err);
/* CLIPImageProcessor's defaults (224 crop, OpenAI CLIP mean/std). */
void hf_preprocess_config_default(hf_preprocess_config *out);

#endif
