/* The CLIP vision tower of LLaVA (CLIPVisionModel up to vision_feature_layer) and the projector:
 * patch embedding as one product over im2col rows, [CLS] + position embeddings, pre-LayerNorm,
 * pre-LN encoder layers, then linear_2(act(linear_1(features))). One image at a time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

llava_status clip_state_init(clip_state *s, const llava_model *m, llava_error *err) {
    const hf_vision_config *v = &m->cfg.vision;
    int grid = v->image_size / v->patch_size, n = grid * grid, T = n + 1;
    size_t dv = (size_t)v->hidden_size, hd = dv / (size_t)v->num_attention_heads;
    memset(s, 0, sizeof *s);
    s->tokens = T;
    s->n_threads = m->pool ? tensor_pool_threads(m->pool) : 1;
    /* --half vision: the tower's attention in half precision with its products */
    s->half_attention = m->vision_layers_run > 0 && m->clip.layers[0].q.half;
    s->scratch_per_thread = attention_scratch_floats(T, T, (int)hd, s->half_attention);
    s->h = tensor_alloc((size_t)T * dv * sizeof(float));
    s->t = tensor_alloc((size_t)T * dv * sizeof(float));
    s->q = tensor_alloc((size_t)T * dv * sizeof(float));
    s->k = tensor_alloc((size_t)T * dv * sizeof(float));
    s->v = tensor_alloc((size_t)T * dv * sizeof(float));
    s->o = tensor_alloc((size_t)T * dv * sizeof(float));
    s->mlp = tensor_alloc((size_t)T * (size_t)v->intermediate_size * sizeof(float));
    s->patches = tensor_alloc((size_t)n * (size_t)(v->num_channels * v->patch_size * v->patch_size) *
                        sizeof(float));
    s->proj = tensor_alloc((size_t)T * (size_t)m->cfg.text.hidden_size * sizeof(float));
    s->scratch = tensor_alloc((size_t)s->n_threads * s->scratch_per_thread * sizeof(float));
    if (!s->h || !s->t || !s->q || !s->k || !s->v || !s->o || !s->mlp || !s->patches || !s->proj ||
        !s->scratch) {
        clip_state_free(s);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "vision tower: out of memory for buffers");
    }
    return LLAVA_OK;
}

void clip_state_free(clip_state *s) {
    free(s->h);
    free(s->t);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->o);
    free(s->mlp);
    free(s->patches);
    free(s->proj);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

/* The conv's input rows: patch n = (gy, gx) row-major, features ordered (c, ky, kx) as the conv
 * kernel [Dv, C, p, p] is flattened. */
static void im2col(float *out, const float *pixels, int channels, int size, int p) {
    int grid = size / p;
    for (int gy = 0; gy < grid; gy++)
        for (int gx = 0; gx < grid; gx++) {
            float *row = out + ((size_t)gy * grid + gx) * (size_t)(channels * p * p);
            for (int c = 0; c < channels; c++)
                for (int ky = 0; ky < p; ky++) {
                    const float *src = pixels + ((size_t)c * size + (size_t)gy * p + ky) * size +
                                       (size_t)gx * p;
                    memcpy(row + ((size_t)c * p + ky) * p, src, (size_t)p * sizeof(float));
                }
        }
}

static void encoder_layer(llava_model *m, clip_state *s, const clip_layer *L) {
    const hf_vision_config *v = &m->cfg.vision;
    int T = s->tokens, dv = v->hidden_size, nh = v->num_attention_heads, hd = dv / nh;
    float eps = (float)v->layer_norm_eps;
    tensor_pool *pool = m->pool;

    /* h += out_proj(attention(layer_norm1(h))) */
    llava_layernorm(pool, s->t, s->h, L->ln1_w, L->ln1_b, T, dv, eps);
    llava_linear(pool, s->q, s->t, &L->q, L->q_b, T);
    llava_linear(pool, s->k, s->t, &L->k, L->k_b, T);
    llava_linear(pool, s->v, s->t, &L->v, L->v_b, T);
    attention_args a = {
        .q = s->q, .ldq = dv, .k = s->k, .v = s->v, .kv_type = LLAVA_DTYPE_F32, .ldk = dv, .kv_head_stride = (size_t)hd,
        .out = s->o, .ldo = dv, .n_q = T, .n_keys = T, .n_heads = nh, .n_kv_heads = nh, .hd = hd,
        .scale = 1.0f / sqrtf((float)hd), .causal = false, .half = s->half_attention,
        .scratch = s->scratch, .scratch_per_thread = s->scratch_per_thread,
    };
    attention_run(pool, &a);
    llava_linear(pool, s->t, s->o, &L->o, L->o_b, T);
    llava_add_rows(pool, s->h, s->t, (size_t)T * dv);

    /* h += fc2(act(fc1(layer_norm2(h)))) */
    llava_layernorm(pool, s->t, s->h, L->ln2_w, L->ln2_b, T, dv, eps);
    llava_linear(pool, s->mlp, s->t, &L->fc1, L->fc1_b, T);
    llava_apply_act(pool, v->hidden_act, s->mlp, (size_t)T * (size_t)v->intermediate_size);
    llava_linear(pool, s->t, s->mlp, &L->fc2, L->fc2_b, T);
    llava_add_rows(pool, s->h, s->t, (size_t)T * dv);
}

llava_status clip_encode(llava_model *m, clip_state *s, const float *pixels, float *features,
                         float *projected, const llava_callbacks *cb, llava_error *err) {
    const hf_vision_config *v = &m->cfg.vision;
    const clip_weights *w = &m->clip;
    int T = s->tokens, n = T - 1, dv = v->hidden_size, p = v->patch_size;
    size_t row = (size_t)dv * sizeof(float);

    im2col(s->patches, pixels, v->num_channels, v->image_size, p);
    /* the conv has no bias; row 0 is the class embedding */
    llava_linear(m->pool, s->t + dv, s->patches, &w->patch, NULL, n);
    memcpy(s->t, w->class_emb, row);
    llava_add_rows(m->pool, s->t, w->pos_emb, (size_t)T * dv);
    llava_layernorm(m->pool, s->h, s->t, w->pre_ln_w, w->pre_ln_b, T, dv, (float)v->layer_norm_eps);

    for (int i = 0; i < m->vision_layers_run; i++) {
        if (cb && cb->cancelled && cb->cancelled(cb->user))
            return llava_error_set(err, LLAVA_ERR_CANCELLED, "cancelled in vision layer %d", i);
        encoder_layer(m, s, &w->layers[i]);
    }

    /* "default" drops the CLS row; "full" keeps it */
    const float *feat = m->cfg.select_full ? s->h : s->h + dv;
    int rows = m->image_tokens;
    if (features) memcpy(features, feat, (size_t)rows * row);
    if (projected) {
        /* each projector product costs about as much as a vision layer at 7B sizes: check
         * before each so that a cancel waits for at most one of them */
        if (cb && cb->cancelled && cb->cancelled(cb->user))
            return llava_error_set(err, LLAVA_ERR_CANCELLED, "cancelled before the projector");
        llava_linear(m->pool, s->proj, feat, &w->proj1, w->proj1_b, rows);
        llava_apply_act(m->pool, m->cfg.projector_hidden_act, s->proj,
                        (size_t)rows * (size_t)m->cfg.text.hidden_size);
        if (cb && cb->cancelled && cb->cancelled(cb->user))
            return llava_error_set(err, LLAVA_ERR_CANCELLED, "cancelled in the projector");
        llava_linear(m->pool, projected, s->proj, &w->proj2, w->proj2_b, rows);
    }
    return LLAVA_OK;
}
