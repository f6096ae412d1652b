/* Multi-head attention, the same code for the vision tower (bidirectional) and the decoder
 * (causal, over the KV cache, optional sliding window). Heads are spread over the pool; each
 * head runs on one thread. Many queries (the image, the prompt): tensor_attention_head, a block
 * of queries at a time. Few (decode): S = Q·Kᵀ with K as the "weight" of tensor_matmul (each key
 * read once), a masked softmax per row, then S·V with tensor_matmul_nn. */
#include <string.h>

#include "model/internal.h"

/* From this many queries on, blocks of queries (whole microkernel tiles) beat per-query
 * products; the threshold of tensor_matmul's own switch to its blocked GEMM. */
#define BLOCKED_MIN_Q 24

size_t attention_scratch_floats(int n_q, int n_keys, int hd, bool half) {
    /* a call with fewer queries than n_q may take the other path */
    int few = n_q < BLOCKED_MIN_Q ? n_q : BLOCKED_MIN_Q - 1;
    /* scores [few, n_keys], the head's queries [few, hd], its keys [n_keys, hd] when strided */
    size_t need = (size_t)few * (size_t)n_keys + (size_t)few * (size_t)hd + (size_t)n_keys * (size_t)hd;
    if (n_q >= BLOCKED_MIN_Q && tensor_attention_scratch_floats(n_keys, hd) > need)
        need = tensor_attention_scratch_floats(n_keys, hd);
    if (half && n_q >= BLOCKED_MIN_Q && tensor_attention_half_scratch_floats(n_keys, hd) > need)
        need = tensor_attention_half_scratch_floats(n_keys, hd);
    return need;
}

static void one_head(const attention_args *a, int h, float *scratch) {
    int hd = a->hd, nq = a->n_q, nk = a->n_keys;
    int g = h / (a->n_heads / a->n_kv_heads);
    size_t esize = llava_dtype_size(a->kv_type);
    const char *K = (const char *)a->k + (size_t)g * a->kv_head_stride * esize;
    const char *V = (const char *)a->v + (size_t)g * a->kv_head_stride * esize;
    if (nq >= BLOCKED_MIN_Q && a->half && !a->causal && a->kv_type == LLAVA_DTYPE_F32) {
        tensor_attention_head_half(a->out + (size_t)h * hd, (size_t)a->ldo, a->q + (size_t)h * hd, (size_t)a->ldq, nq,
                                   (const float *)(const void *)K, (size_t)a->ldk, (const float *)(const void *)V,
                                   (size_t)a->ldk, nk, hd, a->scale, scratch);
        return;
    }
    if (nq >= BLOCKED_MIN_Q) {
        tensor_attention_head(a->out + (size_t)h * hd, (size_t)a->ldo, a->q + (size_t)h * hd, (size_t)a->ldq,
                              nq, K, (size_t)a->ldk, V, (size_t)a->ldk, a->kv_type, nk, hd, a->scale,
                              a->causal ? a->q_pos0 : -1, a->causal ? a->window : 0, scratch);
        return;
    }
    float *S = scratch;
    float *Q = S + (size_t)nq * nk;
    float *Kc = Q + (size_t)nq * hd; /* room for nk rows of hd floats: more than any kv_type needs */

    for (int r = 0; r < nq; r++)
        memcpy(Q + (size_t)r * hd, a->q + (size_t)r * a->ldq + (size_t)h * hd, (size_t)hd * sizeof(float));
    if (a->ldk != hd) { /* tensor_matmul wants the keys as rows of exactly hd elements */
        size_t row_bytes = (size_t)hd * esize;
        for (int j = 0; j < nk; j++) memcpy((char *)Kc + (size_t)j * row_bytes, K + (size_t)j * a->ldk * esize, row_bytes);
        K = (const char *)Kc;
    }
    tensor_matmul(NULL, S, Q, K, a->kv_type, NULL, nq, nk, hd);

    for (int r = 0; r < nq; r++) {
        float *row = S + (size_t)r * nk;
        int lo = 0, hi = nk - 1;
        if (a->causal) {
            int p = a->q_pos0 + r;
            if (p < hi) hi = p;
            if (a->window > 0 && p - a->window > lo) lo = p - a->window;
        }
        for (int j = lo; j <= hi; j++) row[j] *= a->scale;
        tensor_softmax(row + lo, 1, hi - lo + 1);
        if (lo > 0) memset(row, 0, (size_t)lo * sizeof *row);
        if (hi < nk - 1) memset(row + hi + 1, 0, (size_t)(nk - 1 - hi) * sizeof *row);
    }
    tensor_matmul_nn(NULL, a->out + (size_t)h * hd, a->ldo, S, nk, V, a->kv_type, a->ldk, nq, hd, nk);
}

/* Heads are taken in turn rather than split in advance: on a shared machine one thread can run
 * slower for a while, and a fixed half of the heads would leave the other waiting at the end
 * (decode attention over a 7B's f16 cache, in one process against the fixed split: 0.947 of
 * the time at a busy moment, 0.99-1.01 at quiet ones). */
static void head_item(void *ctx, int h, int ith) {
    const attention_args *a = ctx;
    one_head(a, h, a->scratch + (size_t)ith * a->scratch_per_thread);
}

void attention_run(tensor_pool *pool, const attention_args *a) {
    tensor_pool_for(pool, a->n_heads, head_item, (void *)a);
}
