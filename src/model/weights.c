/* Finding every tensor of a llava-hf checkpoint by name, in either naming layout, checking its
 * dtype and shape against the config, and binding it: big matrices in place, small vectors (norms,
 * biases, embeddings of the vision tower) converted once to f32. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/error.h"
#include "model/internal.h"

/* Where each part lives: the hub layout (what llava-hf publishes) or the layout newer
 * transformers versions write (LlavaModel inside LlavaForConditionalGeneration). */
typedef struct layout {
    const char *text;     /* decoder layers, embed_tokens, norm */
    const char *head;     /* lm_head.weight, full name */
    const char *vision;   /* CLIP vision_model */
    const char *proj;     /* multi_modal_projector */
} layout;

static const layout HUB = {"language_model.model.", "language_model.lm_head.weight",
                           "vision_tower.vision_model.", "multi_modal_projector."};
static const layout NEW = {"model.language_model.", "lm_head.weight",
                           "model.vision_tower.vision_model.", "model.multi_modal_projector."};

typedef struct binder {
    llava_model *m;
    const layout *lay;
    float *small;          /* next free f32 slot */
    float *small_end;
    llava_error *err;
} binder;

static void shape_str(char *out, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

/* The tensor `prefix + name` with exactly the given shape and a float dtype, or NULL with the
 * error set (naming the tensor, its shape and the expected one). */
static const st_tensor *find(binder *b, const char *prefix, const char *name, int ndim,
                             const int64_t *shape) {
    char full[256], want[96], have[96];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    shape_str(want, sizeof want, ndim, shape);
    const st_tensor *t = st_set_find(b->m->weights, full);
    if (!t) {
        llava_error_set(b->err, LLAVA_ERR_FORMAT, "%s: tensor '%s' is missing (expected shape %s)",
                        b->m->dir, full, want);
        return NULL;
    }
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        shape_str(have, sizeof have, t->ndim, t->shape);
        llava_error_set(b->err, LLAVA_ERR_FORMAT,
                        "%s: tensor '%s' has shape %s, expected %s from config.json", t->file, full,
                        have, want);
        return NULL;
    }
    if (t->dtype != LLAVA_DTYPE_F32 && t->dtype != LLAVA_DTYPE_F16 && t->dtype != LLAVA_DTYPE_BF16) {
        llava_error_set(b->err, LLAVA_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has dtype %s (F32, F16 or BF16 supported)", t->file, full,
                        llava_dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

/* A matrix stored in the blocks of `llava quantize`: U8 [ceil(rows/16), cols/32, block bytes],
 * the block size telling the format. */
static bool quant_matrix(binder *b, const st_tensor *t, const char *full, int rows, int cols,
                         llava_matrix *out) {
    int64_t groups = (rows + TENSOR_QROWS - 1) / TENSOR_QROWS;
    for (int q = 0; q < TENSOR_QTYPE_COUNT; q++) {
        if (!tensor_quant_shape_ok(rows, cols) || t->ndim != 3 || t->shape[0] != groups ||
            t->shape[1] != cols / TENSOR_QK || t->shape[2] != (int64_t)tensor_qtype_block_bytes((tensor_qtype)q))
            continue;
        *out = (llava_matrix){.data = t->data, .type = t->dtype, .rows = rows, .cols = cols, .quant = 1 + q};
        return true;
    }
    char have[96];
    shape_str(have, sizeof have, t->ndim, t->shape);
    llava_error_set(b->err, LLAVA_ERR_FORMAT,
                    "%s: tensor '%s' is U8 %s, not the Q8_0 or Q4_0 blocks of a [%d, %d] matrix "
                    "([%lld, %d, 544] or [%lld, %d, 288])", t->file, full, have, rows, cols,
                    (long long)groups, cols / TENSOR_QK, (long long)groups, cols / TENSOR_QK);
    return false;
}

static bool matrix(binder *b, const char *prefix, const char *name, int rows, int cols,
                   llava_matrix *out) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const st_tensor *qt = st_set_find(b->m->weights, full);
    if (qt && qt->dtype == LLAVA_DTYPE_U8) return quant_matrix(b, qt, full, rows, cols, out);
    int64_t shape[2] = {rows, cols};
    const st_tensor *t = find(b, prefix, name, 2, shape);
    if (!t) return false;
    *out = (llava_matrix){.data = t->data, .type = t->dtype, .rows = rows, .cols = cols};
    return true;
}

/* A vector or small table converted to f32 into the model's small-weights block. */
static bool small_f32(binder *b, const char *prefix, const char *name, int ndim,
                      const int64_t *shape, const float **out) {
    const st_tensor *t = find(b, prefix, name, ndim, shape);
    if (!t) return false;
    if ((size_t)(b->small_end - b->small) < (size_t)t->numel) {
        llava_error_set(b->err, LLAVA_ERR_INTERNAL, "weights: small-tensor block too small at '%s'",
                        name);
        return false;
    }
    tensor_to_f32(b->small, t->data, t->dtype, (size_t)t->numel);
    *out = b->small;
    b->small += t->numel;
    return true;
}

static bool vec(binder *b, const char *prefix, const char *name, int n, const float **out) {
    int64_t shape[1] = {n};
    return small_f32(b, prefix, name, 1, shape, out);
}

/* Floats of every small tensor small_f32 will copy, from the config. */
static size_t small_count(const hf_llava_config *c) {
    const hf_vision_config *v = &c->vision;
    const hf_text_config *t = &c->text;
    size_t dv = (size_t)v->hidden_size, dt = (size_t)t->hidden_size;
    size_t grid = (size_t)(v->image_size / v->patch_size);
    size_t n = dv + (grid * grid + 1) * dv + 2 * dv;
    n += (size_t)v->num_hidden_layers * (8 * dv + (size_t)v->intermediate_size + dv);
    n += 2 * dt;
    size_t qd = (size_t)t->num_attention_heads * (size_t)t->head_dim;
    size_t kvd = (size_t)t->num_key_value_heads * (size_t)t->head_dim;
    n += (size_t)t->num_hidden_layers * (2 * dt + (t->attention_bias ? qd + 2 * kvd + dt : 0));
    return n + dt;
}

static bool bind_vision(binder *b) {
    const hf_vision_config *v = &b->m->cfg.vision;
    const char *P = b->lay->vision;
    int dv = v->hidden_size, fv = v->intermediate_size, p = v->patch_size;
    int grid = v->image_size / p;
    clip_weights *w = &b->m->clip;
    char name[128];

    int64_t conv[4] = {dv, v->num_channels, p, p};
    const st_tensor *t = find(b, P, "embeddings.patch_embedding.weight", 4, conv);
    if (!t) return false;
    w->patch = (llava_matrix){.data = t->data, .type = t->dtype, .rows = dv, .cols = v->num_channels * p * p};
    int64_t pos[2] = {(int64_t)grid * grid + 1, dv};
    if (!vec(b, P, "embeddings.class_embedding", dv, &w->class_emb) ||
        !small_f32(b, P, "embeddings.position_embedding.weight", 2, pos, &w->pos_emb) ||
        !vec(b, P, "pre_layrnorm.weight", dv, &w->pre_ln_w) ||
        !vec(b, P, "pre_layrnorm.bias", dv, &w->pre_ln_b))
        return false;
    for (int i = 0; i < v->num_hidden_layers; i++) {
        clip_layer *L = &w->layers[i];
#define N(s) (snprintf(name, sizeof name, "encoder.layers.%d.%s", i, s), name)
        if (!vec(b, P, N("layer_norm1.weight"), dv, &L->ln1_w) ||
            !vec(b, P, N("layer_norm1.bias"), dv, &L->ln1_b) ||
            !matrix(b, P, N("self_attn.q_proj.weight"), dv, dv, &L->q) ||
            !vec(b, P, N("self_attn.q_proj.bias"), dv, &L->q_b) ||
            !matrix(b, P, N("self_attn.k_proj.weight"), dv, dv, &L->k) ||
            !vec(b, P, N("self_attn.k_proj.bias"), dv, &L->k_b) ||
            !matrix(b, P, N("self_attn.v_proj.weight"), dv, dv, &L->v) ||
            !vec(b, P, N("self_attn.v_proj.bias"), dv, &L->v_b) ||
            !matrix(b, P, N("self_attn.out_proj.weight"), dv, dv, &L->o) ||
            !vec(b, P, N("self_attn.out_proj.bias"), dv, &L->o_b) ||
            !vec(b, P, N("layer_norm2.weight"), dv, &L->ln2_w) ||
            !vec(b, P, N("layer_norm2.bias"), dv, &L->ln2_b) ||
            !matrix(b, P, N("mlp.fc1.weight"), fv, dv, &L->fc1) ||
            !vec(b, P, N("mlp.fc1.bias"), fv, &L->fc1_b) ||
            !matrix(b, P, N("mlp.fc2.weight"), dv, fv, &L->fc2) ||
            !vec(b, P, N("mlp.fc2.bias"), dv, &L->fc2_b))
            return false;
#undef N
    }
    int dt = b->m->cfg.text.hidden_size;
    const char *J = b->lay->proj;
    return matrix(b, J, "linear_1.weight", dt, dv, &w->proj1) &&
           vec(b, J, "linear_1.bias", dt, &w->proj1_b) &&
           matrix(b, J, "linear_2.weight", dt, dt, &w->proj2) &&
           vec(b, J, "linear_2.bias", dt, &w->proj2_b);
}

static bool bind_text(binder *b) {
    const hf_text_config *t = &b->m->cfg.text;
    const char *P = b->lay->text;
    int dt = t->hidden_size, f = t->intermediate_size, V = t->vocab_size;
    int qd = t->num_attention_heads * t->head_dim, kvd = t->num_key_value_heads * t->head_dim;
    decoder_weights *w = &b->m->dec;
    char name[128];
    if (!matrix(b, P, "embed_tokens.weight", V, dt, &w->embed)) return false;
    for (int i = 0; i < t->num_hidden_layers; i++) {
        decoder_layer *L = &w->layers[i];
#define N(s) (snprintf(name, sizeof name, "layers.%d.%s", i, s), name)
        if (!vec(b, P, N("input_layernorm.weight"), dt, &L->attn_norm) ||
            !matrix(b, P, N("self_attn.q_proj.weight"), qd, dt, &L->q) ||
            !matrix(b, P, N("self_attn.k_proj.weight"), kvd, dt, &L->k) ||
            !matrix(b, P, N("self_attn.v_proj.weight"), kvd, dt, &L->v) ||
            !matrix(b, P, N("self_attn.o_proj.weight"), dt, qd, &L->o) ||
            !vec(b, P, N("post_attention_layernorm.weight"), dt, &L->mlp_norm) ||
            !matrix(b, P, N("mlp.gate_proj.weight"), f, dt, &L->gate) ||
            !matrix(b, P, N("mlp.up_proj.weight"), f, dt, &L->up) ||
            !matrix(b, P, N("mlp.down_proj.weight"), dt, f, &L->down))
            return false;
        if (t->attention_bias &&
            (!vec(b, P, N("self_attn.q_proj.bias"), qd, &L->q_b) ||
             !vec(b, P, N("self_attn.k_proj.bias"), kvd, &L->k_b) ||
             !vec(b, P, N("self_attn.v_proj.bias"), kvd, &L->v_b) ||
             !vec(b, P, N("self_attn.o_proj.bias"), dt, &L->o_b)))
            return false;
#undef N
    }
    if (!vec(b, P, "norm.weight", dt, &w->norm)) return false;
    /* A tied checkpoint may leave lm_head out: the output projection is then embed_tokens. */
    if (!st_set_find(b->m->weights, b->lay->head) &&
        (b->m->cfg.tie_word_embeddings || b->m->cfg.text.tie_word_embeddings)) {
        w->lm_head = w->embed;
        return true;
    }
    return matrix(b, "", b->lay->head, V, dt, &w->lm_head);
}

llava_status llava_weights_bind(llava_model *m, llava_error *err) {
    const layout *lay = &HUB;
    if (st_set_find(m->weights, "lm_head.weight") ||
        st_set_find(m->weights, "model.language_model.embed_tokens.weight"))
        lay = &NEW;
    size_t n_small = small_count(&m->cfg);
    m->small = malloc(n_small * sizeof *m->small);
    m->clip.layers = calloc((size_t)m->cfg.vision.num_hidden_layers, sizeof *m->clip.layers);
    m->dec.layers = calloc((size_t)m->cfg.text.num_hidden_layers, sizeof *m->dec.layers);
    if (!m->small || !m->clip.layers || !m->dec.layers)
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory binding weights",
                               m->dir);
    binder b = {m, lay, m->small, m->small + n_small, err};
    if (!bind_vision(&b) || !bind_text(&b)) return err ? err->code : LLAVA_ERR_FORMAT;
    return LLAVA_OK;
}

/* ---- quantization at load ---- */

/* A buffer of bytes the model owns (freed with it), or NULL. */
static void *model_buffer(llava_model *m, size_t bytes) {
    void *buf = tensor_alloc(bytes);
    void **list = realloc(m->weight_bufs, (size_t)(m->n_weight_bufs + 1) * sizeof *list);
    if (list) m->weight_bufs = list;
    if (!buf || !list) {
        free(buf);
        return NULL;
    }
    m->weight_bufs[m->n_weight_bufs++] = buf;
    return buf;
}

/* Drops w's source pages from this process once a copy made at load replaces them: they are
 * file pages of a read-only private mapping, re-read on demand, so peak memory stays near the
 * copy's size instead of source + copy. Not when the files were read into memory (no_mmap):
 * there the pages are the only copy (decode may still read them, or a tied matrix), and
 * dropping them would leave zeros. */
static void drop_source(const llava_model *m, const llava_matrix *w) {
    if (m->opt.no_mmap) return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)w->data + page - 1) / page * page;
    uintptr_t hi = ((uintptr_t)w->data + (size_t)w->rows * w->cols * llava_dtype_size(w->type)) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Quantizes *w in place of its binding (a new block owned by the model) unless it is already
 * quantized or its shape does not take blocks. */
static llava_status quantize_one(llava_model *m, llava_matrix *w, tensor_qtype qt, llava_error *err) {
    if (w->quant || !tensor_quant_shape_ok(w->rows, w->cols)) return LLAVA_OK;
    void *buf = model_buffer(m, tensor_quant_bytes(qt, w->rows, w->cols));
    if (!buf)
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory quantizing a [%d, %d] matrix",
                               m->dir, w->rows, w->cols);
    if (tensor_quantize(m->pool, buf, qt, w->data, w->type, w->rows, w->cols) != 0)
        return llava_error_set(err, LLAVA_ERR_INTERNAL, "quantizing a [%d, %d] %s matrix failed", w->rows,
                               w->cols, llava_dtype_name(w->type));
    drop_source(m, w);
    *w = (llava_matrix){.data = buf, .type = LLAVA_DTYPE_U8, .rows = w->rows, .cols = w->cols, .quant = 1 + (int)qt};
    return LLAVA_OK;
}

/* The matrices of the parts (LLAVA_PART_* bits) in load order: the lists quantization and half
 * precision apply to. Embeddings and the patch convolution are in none. Returns the count;
 * out (if not NULL) gets up to cap pointers. */
static int part_matrices(llava_model *m, unsigned parts, llava_matrix **out, int cap) {
    llava_matrix *one[2];
    int n = 0;
    if (parts & LLAVA_PART_VISION)
        for (int i = 0; i < m->cfg.vision.num_hidden_layers; i++) {
            clip_layer *L = &m->clip.layers[i];
            llava_matrix *ws[6] = {&L->q, &L->k, &L->v, &L->o, &L->fc1, &L->fc2};
            for (int j = 0; j < 6; j++, n++)
                if (out && n < cap) out[n] = ws[j];
        }
    if (parts & LLAVA_PART_PROJECTOR) {
        one[0] = &m->clip.proj1;
        one[1] = &m->clip.proj2;
        for (int j = 0; j < 2; j++, n++)
            if (out && n < cap) out[n] = one[j];
    }
    if (parts & LLAVA_PART_TEXT)
        for (int i = 0; i < m->cfg.text.num_hidden_layers; i++) {
            decoder_layer *L = &m->dec.layers[i];
            llava_matrix *ws[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
            for (int j = 0; j < 7; j++, n++)
                if (out && n < cap) out[n] = ws[j];
        }
    /* a tied head shares embed_tokens' data: quantizing makes a separate copy, and the embedding
     * re-reads from the file the rows whose pages were dropped */
    if (parts & LLAVA_PART_LM_HEAD) {
        if (out && n < cap) out[n] = &m->dec.lm_head;
        n++;
    }
    return n;
}

/* The part list in an array the caller frees, or NULL (out of memory). */
static llava_matrix **part_list(llava_model *m, unsigned parts, int *n) {
    *n = part_matrices(m, parts, NULL, 0);
    llava_matrix **list = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *list);
    if (list) part_matrices(m, parts, list, *n);
    return list;
}

llava_status llava_weights_quantize(llava_model *m, llava_error *err) {
    tensor_qtype qt = m->opt.quant == LLAVA_QUANT_Q4_0 ? TENSOR_Q4_0 : TENSOR_Q8_0;
    int n;
    llava_matrix **list = part_list(m, m->opt.quant_parts ? m->opt.quant_parts : 0xf, &n);
    if (!list) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", m->dir);
    llava_status st = LLAVA_OK;
    for (int i = 0; i < n && st == LLAVA_OK; i++) st = quantize_one(m, list[i], qt, err);
    free(list);
    return st;
}

static void absmax_item(void *ctx, int item, int ith) {
    (void)ith;
    llava_matrix *w = ((llava_matrix **)ctx)[item];
    w->absmax = tensor_absmax(w->data, w->type, (size_t)w->rows * (size_t)w->cols);
}

/* The tower's and projector's matrices get their f16 panels made once here (every image uses
 * them with 577 rows; the source pages are dropped). The text model's keep being packed per
 * product: decode reads them as stored, one row at a time. */
llava_status llava_weights_half(llava_model *m, llava_error *err) {
    if (!m->opt.half_parts || !tensor_half_available()) return LLAVA_OK;
    int n;
    llava_matrix **list = part_list(m, m->opt.half_parts, &n);
    if (!list) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", m->dir);
    /* quantized matrices keep their int8 products */
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!list[i]->quant) list[k++] = list[i];
    tensor_pool_for(m->pool, k, absmax_item, list);
    for (int i = 0; i < k; i++) list[i]->half = 1;
    free(list);
    list = part_list(m, m->opt.half_parts & (LLAVA_PART_VISION | LLAVA_PART_PROJECTOR), &n);
    if (!list) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory", m->dir);
    llava_status st = LLAVA_OK;
    for (int i = 0; i < n && st == LLAVA_OK; i++) {
        llava_matrix *w = list[i];
        if (w->quant || !(w->absmax <= 65504.0f)) continue; /* no f16 form: stays exact */
        uint16_t *panels = model_buffer(m, tensor_half_packed_bytes(w->rows, w->cols));
        if (!panels)
            st = llava_error_set(err, LLAVA_ERR_NO_MEMORY, "%s: out of memory for the f16 panels of a [%d, %d] matrix",
                                 m->dir, w->rows, w->cols);
        else if (tensor_half_pack(m->pool, panels, w->data, w->type, w->rows, w->cols) != 0)
            st = llava_error_set(err, LLAVA_ERR_INTERNAL, "packing a [%d, %d] %s matrix failed", w->rows, w->cols,
                                 llava_dtype_name(w->type));
        else {
            w->panels = panels;
            drop_source(m, w);
        }
    }
    free(list);
    return st;
}
