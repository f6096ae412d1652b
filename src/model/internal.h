/* What the files of src/model/ share and nothing outside sees: the weights (pointers into the
 * mapping, shapes in comments), the model value, a session's buffers, and the stage functions
 * (vision tower, projector, decoder) that llava_generate and llava_evaluate_prompt chain. */
#ifndef LLAVA_MODEL_INTERNAL_H
#define LLAVA_MODEL_INTERNAL_H

#include "base/clock.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "tensor/quant.h"
#include "tensor/tensor.h"
#include "text/tokenizer.h"

/* A matrix used in place from the checkpoint, row-major [rows, cols] as PyTorch stores it. */
typedef struct llava_matrix {
    const void *data;
    llava_dtype type;
    int rows, cols;
    int quant;          /* 1 + tensor_qtype when data holds quantized blocks; 0: type */
    int half;           /* products with many rows in half precision (options.half_parts) */
    float absmax;       /* max |W| when half (tensor_matmul_half's overflow bound) */
    const uint16_t *panels; /* when half: W's f16 panels made at load (tensor_half_pack), or NULL */
} llava_matrix;

typedef struct clip_layer {
    const float *ln1_w, *ln1_b;                /* [Dv] */
    llava_matrix q, k, v, o;                   /* [Dv, Dv] */
    const float *q_b, *k_b, *v_b, *o_b;        /* [Dv] */
    const float *ln2_w, *ln2_b;                /* [Dv] */
    llava_matrix fc1;                          /* [Fv, Dv] */
    const float *fc1_b;                        /* [Fv] */
    llava_matrix fc2;                          /* [Dv, Fv] */
    const float *fc2_b;                        /* [Dv] */
} clip_layer;

typedef struct clip_weights {
    llava_matrix patch;                        /* [Dv, 3·p·p]: the conv kernel flattened (c, y, x) */
    const float *class_emb;                    /* [Dv] */
    const float *pos_emb;                      /* [N + 1, Dv] */
    const float *pre_ln_w, *pre_ln_b;          /* [Dv] */
    clip_layer *layers;                        /* [n_layers] */
    llava_matrix proj1;                        /* [Dt, Dv] projector linear_1 */
    const float *proj1_b;                      /* [Dt] */
    llava_matrix proj2;                        /* [Dt, Dt] projector linear_2 */
    const float *proj2_b;                      /* [Dt] */
} clip_weights;

typedef struct decoder_layer {
    const float *attn_norm;                    /* [Dt] input_layernorm */
    llava_matrix q, k, v, o;                   /* [H·hd, Dt], [KV·hd, Dt] x2, [Dt, H·hd] */
    const float *q_b, *k_b, *v_b, *o_b;        /* biases when attention_bias, else NULL */
    const float *mlp_norm;                     /* [Dt] post_attention_layernorm */
    llava_matrix gate, up;                     /* [F, Dt] */
    llava_matrix down;                         /* [Dt, F] */
} decoder_layer;

typedef struct decoder_weights {
    llava_matrix embed;                        /* [V, Dt] embed_tokens */
    decoder_layer *layers;                     /* [n_layers] */
    const float *norm;                         /* [Dt] */
    llava_matrix lm_head;                      /* [V, Dt] (embed when tied) */
} decoder_weights;

struct llava_model {
    char dir[1024];
    hf_llava_config cfg;
    hf_generation_config gen;
    hf_preprocess_config pre;
    tokenizer *tok;
    st_set *weights;
    tensor_pool *pool;
    llava_model_options opt;
    llava_model_info info;
    clip_weights clip;
    decoder_weights dec;
    float *small;                              /* every f32 copy above, one allocation */
    int vision_layers_run;                     /* encoder layers up to the selected one */
    int image_tokens;                          /* positions per image (N, or N + 1 for "full") */
    void **weight_bufs;                        /* matrices made at load (quantized, f16 panels) */
    int n_weight_bufs;
};

/* ---- loading (weights.c) ---- */

llava_status llava_weights_bind(llava_model *m, llava_error *err);
/* Quantizes the bound matrices the options ask for (after the pool exists: it does the work). */
llava_status llava_weights_quantize(llava_model *m, llava_error *err);
/* Marks the matrices of options.half_parts for half-precision products and finds their max |W|
 * (only where tensor_half_available: elsewhere they stay exact). */
llava_status llava_weights_half(llava_model *m, llava_error *err);

/* ---- the vision tower and projector (clip.c) ---- */

/* Scratch of one image pass, sized for the model; owned by a session. */
typedef struct clip_state {
    int tokens;            /* T = N + 1 */
    float *h;              /* [T, Dv] residual stream */
    float *t;              /* [T, Dv] normed input */
    float *q, *k, *v, *o;  /* [T, Dv] */
    float *mlp;            /* [T, Fv] */
    float *patches;        /* [N, 3·p·p] im2col */
    float *proj;           /* [rows, Dt] projector hidden */
    float *scratch;        /* per pool thread: attention_scratch_floats */
    size_t scratch_per_thread;
    int n_threads;
    bool half_attention;   /* the tower's products are half precision: its attention too */
} clip_state;

llava_status clip_state_init(clip_state *s, const llava_model *m, llava_error *err);
void clip_state_free(clip_state *s);

/* One image: pixels [3, S, S] -> features [rows, Dv] (the selected layer after the select
 * strategy; rows = image_tokens) and projected [rows, Dt]. Returns LLAVA_ERR_CANCELLED when
 * cb->cancelled says so between layers. */
llava_status clip_encode(llava_model *m, clip_state *s, const float *pixels, float *features,
                         float *projected, const llava_callbacks *cb, llava_error *err);

/* ---- the decoder (decoder.c) ---- */

/* KV cache and activations for up to `cap` positions and chunks of up to `chunk` rows. */
typedef struct decoder_state {
    int cap, chunk;
    int n_past;            /* positions in the cache */
    void *k_cache;         /* [layers][KV][cap][hd] of kv_type */
    void *v_cache;         /* [layers][KV][cap][hd] of kv_type */
    llava_dtype kv_type;   /* F32 or F16 (options.kv_cache) */
    float *x;              /* [chunk, Dt] residual stream */
    float *t;              /* [chunk, Dt] normed */
    float *q;              /* [chunk, H·hd] */
    float *k, *v;          /* [chunk, KV·hd] */
    float *att;            /* [chunk, H·hd] */
    float *gate, *up;      /* [chunk, F] */
    float *inv_freq;       /* [hd / 2] for the current pass */
    float *scratch;        /* per pool thread: scores [chunk, cap] + q head [chunk, hd] */
    size_t scratch_per_thread;
    int n_threads;
} decoder_state;

/* Grows the state to hold cap positions and chunks of `chunk` rows (never shrinks). Keeps no
 * cache content: call before a request, then decoder_reset. */
llava_status decoder_state_reserve(decoder_state *s, const llava_model *m, int cap, int chunk,
                                   llava_error *err);
void decoder_state_free(decoder_state *s);
void decoder_state_reset(decoder_state *s);

/* Runs rows embeddings [n, Dt] (n <= chunk) at positions n_past.. through every layer, appending
 * to the cache. If logits is not NULL, writes the logits of the last row [V]. seq_len is the
 * sequence length the rope scaling sees ("dynamic": HF recomputes the base per forward call).
 * cb (may be NULL) is polled before each layer: if it cancels, returns the index of the layer
 * not run (>= 0) with n_past unchanged, the rows written so far ignored. Returns -1 when done. */
int decoder_forward(llava_model *m, decoder_state *s, const float *embeds, int n, int seq_len,
                    float *logits, const llava_callbacks *cb);

/* Embedding row of token id into out [Dt] (converted to f32). */
void decoder_embed(const llava_model *m, int32_t id, float *out);

/* ---- attention (attention.c) ---- */

/* softmax(Q·Kᵀ·scale + mask)·V for every query head, heads split over the pool. Row r of Q is
 * query position q_pos0 + r; keys are positions 0..n_keys-1. Head h reads kv head
 * h / (n_heads / n_kv_heads). */
typedef struct attention_args {
    const float *q;          /* [n_q, ldq]: head h at column h·hd */
    int ldq;
    const void *k, *v;       /* key / value row j of kv head g at k + g·kv_head_stride + j·ldk */
    llava_dtype kv_type;     /* of k and v (elements; strides count elements): F32 or F16 */
    int ldk;
    size_t kv_head_stride;
    float *out;              /* [n_q, ldo]: head h written at column h·hd */
    int ldo;
    int n_q, n_keys, n_heads, n_kv_heads, hd;
    float scale;
    bool causal;             /* query at position p sees keys <= p */
    int q_pos0;
    int window;              /* > 0: query at p sees keys j with p - j <= window (HF Mistral) */
    bool half;               /* no mask, f32 keys and values: half-precision products */
    float *scratch;          /* per pool thread: attention_scratch_floats() floats */
    size_t scratch_per_thread;
} attention_args;

/* Floats of scratch one pool thread needs for n_q queries over n_keys keys of head size hd
 * (half: attention_args.half will be set). */
size_t attention_scratch_floats(int n_q, int n_keys, int hd, bool half);
void attention_run(tensor_pool *pool, const attention_args *a);

/* ---- shared helpers ---- */

/* Element-wise and row work split across the compute pool (pool may be NULL), each with the
 * bits of one tensor/ call: an activation in place by its config name; x += y; gate =
 * silu(gate) · up; LayerNorm and RMSNorm over rows of n (tensor.h). */
void llava_apply_act(tensor_pool *pool, hf_act act, float *x, size_t n);
void llava_add_rows(tensor_pool *pool, float *x, const float *y, size_t n);
void llava_silu_mul(tensor_pool *pool, float *gate, const float *up, size_t n);
void llava_layernorm(tensor_pool *pool, float *y, const float *x, const float *w, const float *b, int rows,
                     int n, float eps);
void llava_rmsnorm(tensor_pool *pool, float *y, const float *x, const float *w, int rows, int n, float eps);
/* y[M, N] = x[M, K] · Wᵀ + bias, checking nothing (shapes are checked at load). */
static inline void llava_linear(tensor_pool *pool, float *y, const float *x, const llava_matrix *w,
                                const float *bias, int M) {
    if (w->quant)
        tensor_matmul_q(pool, y, x, w->data, (tensor_qtype)(w->quant - 1), bias, M, w->rows, w->cols);
    else if (w->half && w->panels)
        tensor_matmul_half_packed(pool, y, x, w->data, w->type, w->panels, w->absmax, bias, M, w->rows, w->cols);
    else if (w->half)
        tensor_matmul_half(pool, y, x, w->data, w->type, w->absmax, bias, M, w->rows, w->cols);
    else
        tensor_matmul(pool, y, x, w->data, w->type, bias, M, w->rows, w->cols);
}

#endif
