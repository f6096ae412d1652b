/* Loading a llava-hf checkpoint folder into a llava_model: the three config files, the tokenizer
 * and its chat template, the mapped weights, the compute pool, and the sizes derived from them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/file.h"
#include "image/image.h"
#include "model/internal.h"

/* ---- element-wise and row work on the compute pool ----
 *
 * Between the products every thread but one would otherwise wait: the tower's activation alone
 * (577 × 4096 values through an exp per layer) took about 3 % of its two-thread time. Chunks are
 * whole vectors, so each element meets the same code as in one call: the same bits. */

#define EW_CHUNK 16384 /* elements per item: a multiple of every vector width */
#define ROWS_ITEM 8    /* rows per norm item */

enum { EW_ACT, EW_ADD, EW_SILU_MUL, EW_LAYERNORM, EW_RMSNORM };

typedef struct ew_ctx {
    int op;
    hf_act act;
    float *x;          /* in place, or the output of a norm */
    const float *y;    /* the other operand, or a norm's input */
    const float *w, *b;
    size_t n;          /* elements, or rows of a norm */
    int cols;
    float eps;
} ew_ctx;

static void apply_act(hf_act act, float *x, size_t n) {
    switch (act) {
    case HF_ACT_SILU: tensor_silu(x, n); break;
    case HF_ACT_GELU: tensor_gelu(x, n); break;
    case HF_ACT_GELU_TANH: tensor_gelu_tanh(x, n); break;
    case HF_ACT_QUICK_GELU: tensor_quick_gelu(x, n); break;
    case HF_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    }
}

static void ew_item(void *ctx, int item, int ith) {
    (void)ith;
    const ew_ctx *c = ctx;
    size_t per = c->op >= EW_LAYERNORM ? ROWS_ITEM : EW_CHUNK, i0 = (size_t)item * per;
    size_t len = c->n - i0 < per ? c->n - i0 : per;
    size_t off = c->op >= EW_LAYERNORM ? i0 * (size_t)c->cols : i0;
    switch (c->op) {
    case EW_ACT: apply_act(c->act, c->x + off, len); break;
    case EW_ADD:
        for (size_t i = 0; i < len; i++) c->x[off + i] += c->y[off + i];
        break;
    case EW_SILU_MUL: tensor_silu_mul(c->x + off, c->y + off, len); break;
    case EW_LAYERNORM: tensor_layernorm(c->x + off, c->y + off, c->w, c->b, (int)len, c->cols, c->eps); break;
    case EW_RMSNORM: tensor_rmsnorm(c->x + off, c->y + off, c->w, (int)len, c->cols, c->eps); break;
    default: break;
    }
}

static void ew_run(tensor_pool *pool, ew_ctx *c) {
    size_t per = c->op >= EW_LAYERNORM ? ROWS_ITEM : EW_CHUNK, items = (c->n + per - 1) / per;
    if (items == 1) ew_item(c, 0, 0);
    else if (items > 1) tensor_pool_for(pool, (int)items, ew_item, c);
}

void llava_apply_act(tensor_pool *pool, hf_act act, float *x, size_t n) {
    ew_run(pool, &(ew_ctx){.op = EW_ACT, .act = act, .x = x, .n = n});
}

void llava_add_rows(tensor_pool *pool, float *x, const float *y, size_t n) {
    ew_run(pool, &(ew_ctx){.op = EW_ADD, .x = x, .y = y, .n = n});
}

void llava_silu_mul(tensor_pool *pool, float *gate, const float *up, size_t n) {
    ew_run(pool, &(ew_ctx){.op = EW_SILU_MUL, .x = gate, .y = up, .n = n});
}

void llava_layernorm(tensor_pool *pool, float *y, const float *x, const float *w, const float *b, int rows,
                     int n, float eps) {
    ew_run(pool, &(ew_ctx){.op = EW_LAYERNORM, .x = y, .y = x, .w = w, .b = b, .n = (size_t)rows, .cols = n, .eps = eps});
}

void llava_rmsnorm(tensor_pool *pool, float *y, const float *x, const float *w, int rows, int n, float eps) {
    ew_run(pool, &(ew_ctx){.op = EW_RMSNORM, .x = y, .y = x, .w = w, .n = (size_t)rows, .cols = n, .eps = eps});
}

void llava_model_options_default(llava_model_options *opt) { memset(opt, 0, sizeof *opt); }

static llava_status load_configs(llava_model *m, llava_error *err) {
    char path[1200];
    llava_status st;
    if (llava_path_join(path, sizeof path, m->dir, "config.json") != 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "model path too long: %s", m->dir);
    if (!llava_file_exists(path))
        return llava_error_set(err, LLAVA_ERR_IO, "%s: no config.json (not a llava-hf checkpoint "
                               "folder)", m->dir);
    if ((st = hf_llava_config_load(path, &m->cfg, err)) != LLAVA_OK) return st;

    memset(&m->gen, 0, sizeof m->gen);
    m->gen.bos_token_id = m->gen.pad_token_id = -1;
    llava_path_join(path, sizeof path, m->dir, "generation_config.json");
    if (llava_file_exists(path) && (st = hf_generation_config_load(path, &m->gen, err)) != LLAVA_OK)
        return st;

    /* without preprocessor_config.json: CLIP's pipeline at the tower's own size */
    int S = m->cfg.vision.image_size;
    hf_preprocess_config_default(&m->pre);
    m->pre.shortest_edge = S;
    m->pre.crop_height = m->pre.crop_width = S;
    llava_path_join(path, sizeof path, m->dir, "preprocessor_config.json");
    if (llava_file_exists(path) && (st = hf_preprocess_config_load(path, &m->pre, err)) != LLAVA_OK)
        return st;
    int h = 0, w = 0;
    if ((st = image_preprocess_size(&m->pre, S, S, &h, &w, err)) != LLAVA_OK)
        return llava_error_prefix(err, "%s", path);
    if (h != S || w != S)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: preprocessing gives %dx%d images but vision_config.image_size "
                               "is %d", path, w, h, S);
    return LLAVA_OK;
}

static llava_status load_tokenizer(llava_model *m, llava_error *err) {
    llava_status st = tokenizer_load(m->dir, &m->tok, err);
    if (st != LLAVA_OK) return st;
    int32_t image_id = tokenizer_token_id(m->tok, TEMPLATE_IMAGE_MARKER);
    if (image_id != m->cfg.image_token_index)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: the tokenizer's %s token is %d but config.json's "
                               "image_token_index is %d", m->dir, TEMPLATE_IMAGE_MARKER,
                               (int)image_id, m->cfg.image_token_index);
    if (image_id >= m->cfg.text.vocab_size || tokenizer_vocab_size(m->tok) > m->cfg.text.vocab_size)
        return llava_error_set(err, LLAVA_ERR_FORMAT,
                               "%s: the tokenizer has %d ids but text_config.vocab_size is %d",
                               m->dir, (int)tokenizer_vocab_size(m->tok), m->cfg.text.vocab_size);
    return LLAVA_OK;
}

static void fill_info(llava_model *m) {
    const hf_llava_config *c = &m->cfg;
    llava_model_info *i = &m->info;
    int grid = c->vision.image_size / c->vision.patch_size;
    int layers = c->vision.num_hidden_layers;
    m->vision_layers_run = c->vision_feature_layer >= 0 ? c->vision_feature_layer
                                                        : layers + 1 + c->vision_feature_layer;
    m->image_tokens = grid * grid + (c->select_full ? 1 : 0);

    memset(i, 0, sizeof *i);
    i->image_size = c->vision.image_size;
    i->tokens_per_image = m->image_tokens;
    i->vision_hidden = c->vision.hidden_size;
    i->text_hidden = c->text.hidden_size;
    i->vocab_size = c->text.vocab_size;
    /* rope scaling stretches the trained context by its factor (e.g. 4096 x 4 for "16k" models) */
    double max_pos = c->text.max_position_embeddings;
    if (c->text.rope_scaling_type != HF_ROPE_NONE && c->text.rope_scaling_factor > 1.0)
        max_pos *= c->text.rope_scaling_factor;
    if (max_pos > 1 << 24) max_pos = 1 << 24;
    i->n_ctx = m->opt.n_ctx > 0 && m->opt.n_ctx < max_pos ? m->opt.n_ctx : (int)max_pos;
    i->image_token_id = c->image_token_index;
    i->bos_id = tokenizer_adds_bos(m->tok) ? tokenizer_bos_id(m->tok) : -1;
    for (int k = 0; k < m->gen.n_eos && i->n_eos < 8; k++)
        if (m->gen.eos_token_ids[k] >= 0) i->eos_ids[i->n_eos++] = m->gen.eos_token_ids[k];
    if (i->n_eos == 0 && tokenizer_eos_id(m->tok) >= 0) i->eos_ids[i->n_eos++] = tokenizer_eos_id(m->tok);
    i->chat_template = template_detect(tokenizer_chat_template(m->tok), c->text.model_type);
    i->n_threads = m->pool ? tensor_pool_threads(m->pool) : 1;
}

llava_status llava_model_load(const char *dir, const llava_model_options *opt, llava_model **out,
                              llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    *out = NULL;
    if (!dir || !*dir)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "no model folder given");
    llava_model *m = calloc(1, sizeof *m);
    if (!m) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory loading %s", dir);
    if (opt) m->opt = *opt;
    if (m->opt.prefill_chunk <= 0) m->opt.prefill_chunk = 1024;
    if (m->opt.kv_cache != LLAVA_KV_F32 && m->opt.kv_cache != LLAVA_KV_F16) {
        int v = (int)m->opt.kv_cache;
        free(m);
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "options.kv_cache: %d is not f32 (0) or f16 (1)", v);
    }
    if (strlen(dir) >= sizeof m->dir) {
        free(m);
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "model path too long: %.100s...",
                               dir);
    }
    snprintf(m->dir, sizeof m->dir, "%s", dir);

    llava_status st = load_configs(m, err);
    if (st == LLAVA_OK) st = load_tokenizer(m, err);
    if (st == LLAVA_OK) st = st_set_open_mode(dir, m->opt.no_mmap ? ST_READ : ST_MAP, &m->weights, err);
    if (st == LLAVA_OK) st = llava_weights_bind(m, err);
    if (st == LLAVA_OK) {
        m->pool = tensor_pool_create(m->opt.n_threads);
        if (!m->pool)
            st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "could not start %d compute threads",
                                 m->opt.n_threads);
    }
    if (st == LLAVA_OK) {
        /* The weights made at load in the mode the pool's workers run in (tensor.h), so that an
         * item's bytes do not depend on which thread took it. */
        unsigned fp = tensor_fp_enter();
        if (m->opt.quant != LLAVA_QUANT_NONE) st = llava_weights_quantize(m, err);
        if (st == LLAVA_OK) st = llava_weights_half(m, err);
        tensor_fp_leave(fp);
    }
    if (st != LLAVA_OK) {
        llava_model_free(m);
        return st;
    }
    fill_info(m);
    *out = m;
    return LLAVA_OK;
}

void llava_model_free(llava_model *m) {
    if (!m) return;
    tensor_pool_destroy(m->pool);
    st_set_close(m->weights);
    tokenizer_free(m->tok);
    free(m->small);
    free(m->clip.layers);
    free(m->dec.layers);
    for (int i = 0; i < m->n_weight_bufs; i++) free(m->weight_bufs[i]);
    free(m->weight_bufs);
    free(m);
}

void llava_model_get_info(const llava_model *m, llava_model_info *out) { *out = m->info; }

const hf_llava_config *llava_model_config(const llava_model *m) { return &m->cfg; }

int llava_model_feature_rows(const llava_model *m) { return m->image_tokens; }
