/* The LLaMA / Mistral decoder with its KV cache: a pass over a chunk of rows (the prompt, as
 * matrix-matrix products) or over one row (a new token), appending keys and values to the cache.
 * RMSNorm, rotate-half RoPE (linear and dynamic scaling), grouped-query attention with an optional
 * sliding window, SwiGLU MLP, final norm and lm_head on the last row only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

void decoder_state_free(decoder_state *s) {
    free(s->k_cache);
    free(s->v_cache);
    free(s->x);
    free(s->t);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->gate);
    free(s->up);
    free(s->inv_freq);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

void decoder_state_reset(decoder_state *s) { s->n_past = 0; }

/* The buffers' content is not kept (it is written before it is read at every step). */
static bool grow(float **p, size_t n) {
    free(*p);
    *p = tensor_alloc(n * sizeof(float));
    return *p != NULL;
}

llava_status decoder_state_reserve(decoder_state *s, const llava_model *m, int cap, int chunk,
                                   llava_error *err) {
    const hf_text_config *t = &m->cfg.text;
    if (cap <= s->cap && chunk <= s->chunk) return LLAVA_OK;
    if (cap < s->cap) cap = s->cap;
    if (chunk < s->chunk) chunk = s->chunk;
    size_t hd = (size_t)t->head_dim, dt = (size_t)t->hidden_size;
    size_t qd = (size_t)t->num_attention_heads * hd, kvd = (size_t)t->num_key_value_heads * hd;
    size_t cache = (size_t)t->num_hidden_layers * kvd * (size_t)cap;
    size_t rows = (size_t)chunk;
    int threads = m->pool ? tensor_pool_threads(m->pool) : 1;
    size_t per_thread = attention_scratch_floats(chunk, cap, (int)hd, false);
    /* the cache content is not kept: the caller resets after reserving */
    free(s->k_cache);
    free(s->v_cache);
    s->kv_type = m->opt.kv_cache == LLAVA_KV_F16 ? LLAVA_DTYPE_F16 : LLAVA_DTYPE_F32;
    size_t cache_bytes = cache * llava_dtype_size(s->kv_type);
    s->k_cache = tensor_alloc(cache_bytes);
    s->v_cache = tensor_alloc(cache_bytes);
    s->cap = s->chunk = 0;
    if (!s->k_cache || !s->v_cache || !grow(&s->x, rows * dt) ||
        !grow(&s->t, rows * dt) || !grow(&s->q, rows * qd) || !grow(&s->k, rows * kvd) ||
        !grow(&s->v, rows * kvd) || !grow(&s->att, rows * qd) ||
        !grow(&s->gate, rows * (size_t)t->intermediate_size) ||
        !grow(&s->up, rows * (size_t)t->intermediate_size) || !grow(&s->inv_freq, hd / 2) ||
        !grow(&s->scratch, (size_t)threads * per_thread)) {
        decoder_state_free(s);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY,
                               "decoder: out of memory for a KV cache of %d positions (%.1f MiB)",
                               cap, 2.0 * (double)cache_bytes / (1024.0 * 1024.0));
    }
    s->cap = cap;
    s->chunk = chunk;
    s->n_threads = threads;
    s->scratch_per_thread = per_thread;
    s->n_past = 0;
    return LLAVA_OK;
}

void decoder_embed(const llava_model *m, int32_t id, float *out) {
    const llava_matrix *e = &m->dec.embed;
    size_t row_bytes = (size_t)e->cols * llava_dtype_size(e->type);
    tensor_to_f32(out, (const char *)e->data + (size_t)id * row_bytes, e->type, (size_t)e->cols);
}

/* inv_freq for this pass. "dynamic" NTK scaling recomputes the base from the longest position of
 * the pass once it exceeds max_position_embeddings, as transformers 4.40 does (in float32). */
static void rope_frequencies(const llava_model *m, float *inv_freq, int seq_len) {
    const hf_text_config *t = &m->cfg.text;
    double theta = t->rope_theta;
    if (t->rope_scaling_type == HF_ROPE_DYNAMIC && seq_len > t->max_position_embeddings) {
        float f = (float)t->rope_scaling_factor;
        float ratio = f * (float)seq_len / (float)t->max_position_embeddings - (f - 1.0f);
        theta = (double)((float)theta *
                         powf(ratio, (float)t->head_dim / (float)(t->head_dim - 2)));
    }
    tensor_rope_inv_freq(inv_freq, t->head_dim, theta);
}

/* RoPE on a chunk's query and key rows, then its keys and values into the cache (converted to
 * the cache's type): rows are independent, so they are split across the pool (a first request
 * also takes the cache's first-touch page faults here). */
typedef struct rope_store_ctx {
    const decoder_state *s;
    char *kc, *vc; /* this layer's cache */
    int n, p0, H, KV, hd;
    float pos_div;
    size_t head_stride;
} rope_store_ctx;

#define ROPE_STORE_ROWS 16

static void rope_store_item(void *ctx, int item, int ith) {
    (void)ith;
    const rope_store_ctx *c = ctx;
    const decoder_state *s = c->s;
    int n = c->n, r1 = (item + 1) * ROPE_STORE_ROWS < n ? (item + 1) * ROPE_STORE_ROWS : n;
    int qd = c->H * c->hd, kvd = c->KV * c->hd;
    size_t esize = llava_dtype_size(s->kv_type);
    for (int r = item * ROPE_STORE_ROWS; r < r1; r++) {
        float pos = (float)(c->p0 + r) / c->pos_div;
        tensor_rope(s->q + (size_t)r * qd, c->H, c->hd, pos, s->inv_freq);
        tensor_rope(s->k + (size_t)r * kvd, c->KV, c->hd, pos, s->inv_freq);
        for (int g = 0; g < c->KV; g++) {
            size_t at = ((size_t)g * c->head_stride + (size_t)(c->p0 + r) * c->hd) * esize;
            const float *kr = s->k + (size_t)r * kvd + (size_t)g * c->hd, *vr = s->v + (size_t)r * kvd + (size_t)g * c->hd;
            if (s->kv_type == LLAVA_DTYPE_F16) {
                tensor_to_f16((uint16_t *)(void *)(c->kc + at), kr, (size_t)c->hd);
                tensor_to_f16((uint16_t *)(void *)(c->vc + at), vr, (size_t)c->hd);
            } else {
                memcpy(c->kc + at, kr, (size_t)c->hd * sizeof(float));
                memcpy(c->vc + at, vr, (size_t)c->hd * sizeof(float));
            }
        }
    }
}

int decoder_forward(llava_model *m, decoder_state *s, const float *embeds, int n, int seq_len,
                    float *logits, const llava_callbacks *cb) {
    const hf_text_config *t = &m->cfg.text;
    tensor_pool *pool = m->pool;
    int dt = t->hidden_size, H = t->num_attention_heads, KV = t->num_key_value_heads;
    int hd = t->head_dim, F = t->intermediate_size, p0 = s->n_past;
    int qd = H * hd;
    float eps = (float)t->rms_norm_eps;
    float pos_div = t->rope_scaling_type == HF_ROPE_LINEAR ? (float)t->rope_scaling_factor : 1.0f;
    size_t head_stride = (size_t)s->cap * hd; /* cache: [layer][kv head][position][hd] */
    size_t layer_stride = (size_t)KV * head_stride;

    rope_frequencies(m, s->inv_freq, seq_len);
    memcpy(s->x, embeds, (size_t)n * dt * sizeof(float));
    for (int l = 0; l < t->num_hidden_layers; l++) {
        if (cb && cb->cancelled && cb->cancelled(cb->user)) return l;
        const decoder_layer *L = &m->dec.layers[l];
        size_t layer_bytes = layer_stride * llava_dtype_size(s->kv_type);
        char *kc = (char *)s->k_cache + (size_t)l * layer_bytes;
        char *vc = (char *)s->v_cache + (size_t)l * layer_bytes;

        llava_rmsnorm(pool, s->t, s->x, L->attn_norm, n, dt, eps);
        llava_linear(pool, s->q, s->t, &L->q, L->q_b, n);
        llava_linear(pool, s->k, s->t, &L->k, L->k_b, n);
        llava_linear(pool, s->v, s->t, &L->v, L->v_b, n);
        rope_store_ctx rs = {.s = s, .kc = kc, .vc = vc, .n = n, .p0 = p0, .H = H, .KV = KV, .hd = hd,
                             .pos_div = pos_div, .head_stride = head_stride};
        tensor_pool_for(pool, (n + ROPE_STORE_ROWS - 1) / ROPE_STORE_ROWS, rope_store_item, &rs);
        attention_args a = {
            .q = s->q, .ldq = qd, .k = kc, .v = vc, .kv_type = s->kv_type, .ldk = hd, .kv_head_stride = head_stride,
            .out = s->att, .ldo = qd, .n_q = n, .n_keys = p0 + n, .n_heads = H, .n_kv_heads = KV,
            .hd = hd, .scale = 1.0f / sqrtf((float)hd), .causal = true, .q_pos0 = p0,
            .window = t->sliding_window, .scratch = s->scratch,
            .scratch_per_thread = s->scratch_per_thread,
        };
        attention_run(pool, &a);
        llava_linear(pool, s->t, s->att, &L->o, L->o_b, n);
        llava_add_rows(pool, s->x, s->t, (size_t)n * dt);

        /* x += down(act(gate(t)) * up(t)), t = post_attention_layernorm(x) */
        llava_rmsnorm(pool, s->t, s->x, L->mlp_norm, n, dt, eps);
        llava_linear(pool, s->gate, s->t, &L->gate, NULL, n);
        llava_linear(pool, s->up, s->t, &L->up, NULL, n);
        size_t ff = (size_t)n * F;
        if (t->hidden_act == HF_ACT_SILU) {
            llava_silu_mul(pool, s->gate, s->up, ff);
        } else {
            llava_apply_act(pool, t->hidden_act, s->gate, ff);
            for (size_t i = 0; i < ff; i++) s->gate[i] *= s->up[i];
        }
        llava_linear(pool, s->t, s->gate, &L->down, NULL, n);
        llava_add_rows(pool, s->x, s->t, (size_t)n * dt);
    }
    s->n_past = p0 + n;
    if (logits) {
        const float *last = s->x + (size_t)(n - 1) * dt;
        tensor_rmsnorm(s->t, last, m->dec.norm, 1, dt, eps);
        llava_linear(pool, logits, s->t, &m->dec.lm_head, NULL, 1);
    }
    return -1;
}
