/* libFuzzer target for the Hugging Face config readers. The first input byte picks the reader
 * (config.json, generation_config.json, preprocessor_config.json), the rest is the JSON text.
 * An accepted config must satisfy the invariants the model code relies on. */
#include <stdint.h>
#include <stdlib.h>

#include "io/hfconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_llava(const hf_llava_config *c) {
    const hf_text_config *t = &c->text;
    const hf_vision_config *v = &c->vision;
    if (t->hidden_size < 1 || t->num_attention_heads < 1 || t->num_key_value_heads < 1) abort();
    if (t->hidden_size % t->num_attention_heads || t->num_attention_heads % t->num_key_value_heads) abort();
    if (t->head_dim * t->num_attention_heads != t->hidden_size || t->head_dim % 2) abort();
    if (t->vocab_size < 1 || t->num_hidden_layers < 1 || t->intermediate_size < 1) abort();
    if (!(t->rms_norm_eps > 0) || !(t->rope_theta > 0)) abort();
    if (t->rope_scaling_type != HF_ROPE_NONE && !(t->rope_scaling_factor > 1)) abort();
    if (v->hidden_size % v->num_attention_heads || v->image_size % v->patch_size || v->num_channels != 3) abort();
    if (c->vision_feature_layer > v->num_hidden_layers || c->vision_feature_layer < -(v->num_hidden_layers + 1))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    llava_error err;
    llava_status st;
    switch (data[0] % 3) {
    case 0: {
        hf_llava_config c;
        st = hf_llava_config_parse(text, len, "config.json", &c, &err);
        if (st == LLAVA_OK) check_llava(&c);
        break;
    }
    case 1: {
        hf_generation_config g;
        st = hf_generation_config_parse(text, len, "generation_config.json", &g, &err);
        if (st == LLAVA_OK && (g.n_eos < 0 || g.n_eos > 8)) abort();
        break;
    }
    default: {
        hf_preprocess_config p;
        st = hf_preprocess_config_parse(text, len, "preprocessor_config.json", &p, &err);
        if (st == LLAVA_OK && (p.crop_height < 1 || p.crop_width < 1 || !(p.image_std[0] > 0))) abort();
        break;
    }
    }
    if (st != LLAVA_OK && !err.message[0]) abort();
    return 0;
}
