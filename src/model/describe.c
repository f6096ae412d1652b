/* llava_model_describe: what a checkpoint folder holds, from its config, safetensors headers and
 * chat template (the files are opened, their headers validated, no weight is read). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/hfconfig.h"
#include "io/safetensors.h"
#include "llava.h"
#include "model/model.h"
#include "tensor/quant.h"
#include "text/template.h"
#include "text/tokenizer.h"

/* The weights a tensor holds, and under which name its format goes: a U8 [G, B, S] tensor is a
 * matrix of 16·G rows and 32·B columns in the blocks of `llava quantize` (S tells which). */
static int64_t tensor_params(const st_tensor *t, const char **format) {
    if (t->dtype == LLAVA_DTYPE_U8 && t->ndim == 3) {
        for (int q = 0; q < TENSOR_QTYPE_COUNT; q++)
            if (t->shape[2] == (int64_t)tensor_qtype_block_bytes((tensor_qtype)q)) {
                *format = q == TENSOR_Q8_0 ? "Q8_0" : "Q4_0";
                return (int64_t)TENSOR_QROWS * t->shape[0] * (int64_t)TENSOR_QK * t->shape[1];
            }
    }
    *format = llava_dtype_name(t->dtype);
    return t->numel;
}

void llava_model_describe_open(const hf_llava_config *c, const st_set *s, const char *chat_template,
                               const char *chat_template_source, llava_model_desc *out) {
    memset(out, 0, sizeof *out);
    /* the format holding the most weights names the checkpoint's */
    static const char *const formats[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0"};
    enum { N_FORMATS = sizeof formats / sizeof formats[0] };
    int64_t by_format[N_FORMATS] = {0};
    for (size_t i = 0; i < st_set_count(s); i++) {
        const char *f = NULL;
        int64_t n = tensor_params(st_set_tensor(s, i), &f);
        out->n_params += n;
        for (int k = 0; k < N_FORMATS; k++)
            if (!strcmp(f, formats[k])) by_format[k] += n;
    }
    int best = 1;
    for (int k = 0; k < N_FORMATS; k++)
        if (by_format[k] > by_format[best]) best = k;
    snprintf(out->dtype, sizeof out->dtype, "%s", formats[best]);

    const hf_text_config *t = &c->text;
    const hf_vision_config *v = &c->vision;
    snprintf(out->text_model_type, sizeof out->text_model_type, "%s", t->model_type);
    out->context_length = t->max_position_embeddings;
    out->hidden_size = t->hidden_size;
    out->num_layers = t->num_hidden_layers;
    out->num_heads = t->num_attention_heads;
    out->num_kv_heads = t->num_key_value_heads;
    out->intermediate_size = t->intermediate_size;
    out->vocab_size = t->vocab_size;
    out->vision_hidden_size = v->hidden_size;
    out->vision_layers = v->num_hidden_layers;
    out->image_size = v->image_size;
    out->patch_size = v->patch_size;
    int side = v->image_size / v->patch_size;
    out->image_tokens = side * side + (c->select_full ? 1 : 0);
    /* the engine's own choice (model.c), from the same text */
    snprintf(out->chat_template, sizeof out->chat_template, "%s",
             template_name(template_detect(chat_template, t->model_type)));
    snprintf(out->chat_template_source, sizeof out->chat_template_source, "%s",
             chat_template && chat_template_source ? chat_template_source : "");
}

llava_status llava_model_describe(const char *model_dir, llava_model_desc *out, llava_error *err) {
    memset(out, 0, sizeof *out);
    if (!model_dir || !model_dir[0]) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "model folder: not set");
    char config_path[4096];
    if (snprintf(config_path, sizeof config_path, "%s/config.json", model_dir) >= (int)sizeof config_path)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "model folder: path too long");
    hf_llava_config c;
    llava_status st = hf_llava_config_load(config_path, &c, err);
    if (st != LLAVA_OK) return st;
    char *tmpl = NULL;
    const char *source = NULL;
    if ((st = tokenizer_find_chat_template(model_dir, &tmpl, &source, err)) != LLAVA_OK) return st;
    st_set *s = NULL;
    if ((st = st_set_open(model_dir, &s, err)) != LLAVA_OK) {
        free(tmpl);
        return st;
    }
    llava_model_describe_open(&c, s, tmpl, source, out);
    st_set_close(s);
    free(tmpl);
    return LLAVA_OK;
}
