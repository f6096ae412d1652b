/* Running a prepared request on the model's thread: images through the vision tower, the merge of
 * image rows into the token embeddings, the prompt through the decoder in chunks, then the token
 * loop (sample, detokenize, hold back what may become a stop string, decode one row). Every buffer
 * is sized before the loop starts. */
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

struct llava_session {
    llava_model *m;
    clip_state clip;
    decoder_state dec;
    sampler *smp;
    tokenizer_stream *stream;
    tokenizer_text piece;      /* text one token releases */
    char *pending;             /* released text not yet emitted (may begin a stop string) */
    size_t pending_len, pending_cap;
    float *logits;             /* [V] */
    float *embeds;             /* [embeds_rows, Dt] merged prompt */
    size_t embeds_rows;
    float *features;           /* [feature_rows, Dt] projected images */
    size_t feature_rows;
};

#define TEXT_RESERVE 4096

void llava_generate_params_default(llava_generate_params *p) {
    memset(p, 0, sizeof *p);
    sampler_params_default(&p->sampling);
}

void llava_session_free(llava_session *s) {
    if (!s) return;
    clip_state_free(&s->clip);
    decoder_state_free(&s->dec);
    sampler_free(s->smp);
    tokenizer_stream_free(s->stream);
    tokenizer_text_free(&s->piece);
    free(s->pending);
    free(s->logits);
    free(s->embeds);
    free(s->features);
    free(s);
}

llava_status llava_session_create(llava_model *m, llava_session **out, llava_error *err) {
    *out = NULL;
    llava_session *s = calloc(1, sizeof *s);
    if (!s) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for a session");
    s->m = m;
    llava_status st = clip_state_init(&s->clip, m, err);
    if (st != LLAVA_OK) {
        free(s);
        return st;
    }
    s->smp = sampler_new(m->info.vocab_size);
    s->stream = tokenizer_stream_new(m->tok, TOKENIZER_SKIP_SPECIAL);
    s->logits = tensor_alloc((size_t)m->info.vocab_size * sizeof(float));
    s->piece.data = malloc(TEXT_RESERVE);
    s->piece.cap = TEXT_RESERVE;
    s->pending = malloc(TEXT_RESERVE);
    s->pending_cap = TEXT_RESERVE;
    if (!s->smp || !s->stream || !s->logits || !s->piece.data || !s->pending) {
        llava_session_free(s);
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for a session");
    }
    s->piece.data[0] = '\0';
    *out = s;
    return LLAVA_OK;
}

/* The rows are written before they are read: their content is not kept. */
static bool grow_rows(float **p, size_t *have, size_t rows, size_t width) {
    if (rows <= *have) return true;
    free(*p);
    *have = 0;
    *p = tensor_alloc(rows * width * sizeof(float));
    if (!*p) return false;
    *have = rows;
    return true;
}

static bool cancelled(const llava_callbacks *cb) {
    return cb && cb->cancelled && cb->cancelled(cb->user);
}

/* Checks a prepared request against this model (it is a public struct: it may be anything). */
static llava_status check_prepared(const llava_model *m, const llava_prepared *p,
                                   llava_error *err) {
    const llava_model_info *i = &m->info;
    if (!p || !p->ids || p->n_ids <= 0 || p->n_images < 0 ||
        (p->n_images > 0 && (!p->pixel_values || p->image_size != i->image_size)))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "malformed prepared request");
    int images = 0;
    for (int k = 0; k < p->n_ids; k++) {
        if (p->ids[k] < 0 || p->ids[k] >= i->vocab_size)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "token %d of the prompt is %d, outside the vocabulary [0, %d)",
                                   k, (int)p->ids[k], i->vocab_size);
        images += p->ids[k] == i->image_token_id;
    }
    int positions = p->n_ids - images + images * i->tokens_per_image;
    if (images != p->n_images || positions != p->n_positions)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "prepared request: %d image tokens for %d images", images,
                               p->n_images);
    return LLAVA_OK;
}

/* Vision tower, merge and decoder over the whole prompt; leaves the last row's logits in
 * s->logits. cap is the number of positions the cache must hold. */
/* Each image through the tower and projector: vision_features (if not NULL) and features
 * [n_images, N, Dt]. */
static llava_status encode_images(llava_session *s, const llava_prepared *p, float *vision_features,
                                  float *features, const llava_callbacks *cb, llava_error *err) {
    const llava_model_info *info = &s->m->info;
    size_t dt = (size_t)info->text_hidden, rows = (size_t)info->tokens_per_image;
    size_t pix = (size_t)3 * info->image_size * info->image_size;
    for (int i = 0; i < p->n_images; i++) {
        float *vf = vision_features ? vision_features + (size_t)i * rows * (size_t)info->vision_hidden : NULL;
        llava_status st = clip_encode(s->m, &s->clip, p->pixel_values + (size_t)i * pix, vf,
                                      features + (size_t)i * rows * dt, cb, err);
        if (st != LLAVA_OK) return st;
    }
    return LLAVA_OK;
}

static llava_status encode_images_entry(llava_session *s, const llava_prepared *p, float *image_features,
                                         const llava_callbacks *cb, llava_error *err) {
    size_t dt = (size_t)s->m->info.text_hidden, rows = (size_t)s->m->info.tokens_per_image;
    if (p->n_images < 0 || (p->n_images > 0 && !p->pixel_values) || p->image_size != s->m->info.image_size)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "encode: %d images of %d px for a model of %d px",
                               p->n_images, p->image_size, s->m->info.image_size);
    if (!grow_rows(&s->features, &s->feature_rows, (size_t)p->n_images * rows, dt))
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for %d images' features", p->n_images);
    llava_status st = encode_images(s, p, NULL, s->features, cb, err);
    if (st == LLAVA_OK && image_features)
        memcpy(image_features, s->features, (size_t)p->n_images * rows * dt * sizeof(float));
    return st;
}

llava_status llava_encode_images(llava_session *s, const llava_prepared *p, float *image_features,
                                 const llava_callbacks *cb, llava_error *err) {
    unsigned fp = tensor_fp_enter();
    llava_status st = encode_images_entry(s, p, image_features, cb, err);
    tensor_fp_leave(fp);
    return st;
}

static llava_status prompt_pass(llava_session *s, const llava_prepared *p, int cap,
                                llava_trace *trace, const llava_callbacks *cb,
                                llava_generate_result *r, llava_error *err) {
    llava_model *m = s->m;
    const llava_model_info *info = &m->info;
    size_t dt = (size_t)info->text_hidden, rows = (size_t)info->tokens_per_image;
    int chunk = m->opt.prefill_chunk < p->n_positions ? m->opt.prefill_chunk : p->n_positions;
    llava_status st = decoder_state_reserve(&s->dec, m, cap, chunk, err);
    if (st != LLAVA_OK) return st;
    if (!grow_rows(&s->embeds, &s->embeds_rows, (size_t)p->n_positions, dt) ||
        !grow_rows(&s->features, &s->feature_rows, (size_t)p->n_images * rows, dt))
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for a prompt of %d "
                               "positions", p->n_positions);
    decoder_state_reset(&s->dec);

    double t0 = llava_now_ms();
    st = encode_images(s, p, trace ? trace->vision_features : NULL, s->features, cb, err);
    if (st != LLAVA_OK) return st;
    if (trace && trace->image_features)
        memcpy(trace->image_features, s->features, (size_t)p->n_images * rows * dt * sizeof(float));
    double t1 = llava_now_ms();

    /* the k-th image id becomes the k-th image's rows, as LlavaForConditionalGeneration merges */
    size_t at = 0;
    int image = 0;
    for (int k = 0; k < p->n_ids; k++) {
        if (p->ids[k] == info->image_token_id) {
            memcpy(s->embeds + at * dt, s->features + (size_t)image * rows * dt,
                   rows * dt * sizeof(float));
            for (size_t j = 0; trace && trace->expanded_ids && j < rows; j++)
                trace->expanded_ids[at + j] = info->image_token_id;
            at += rows;
            image++;
        } else {
            decoder_embed(m, p->ids[k], s->embeds + at * dt);
            if (trace && trace->expanded_ids) trace->expanded_ids[at] = p->ids[k];
            at++;
        }
    }
    if (trace && trace->inputs_embeds)
        memcpy(trace->inputs_embeds, s->embeds, (size_t)p->n_positions * dt * sizeof(float));

    for (int start = 0; start < p->n_positions; start += chunk) {
        if (cancelled(cb))
            return llava_error_set(err, LLAVA_ERR_CANCELLED, "cancelled at prompt position %d",
                                   start);
        int n = p->n_positions - start < chunk ? p->n_positions - start : chunk;
        bool last = start + n == p->n_positions;
        int stopped = decoder_forward(m, &s->dec, s->embeds + (size_t)start * dt, n, p->n_positions,
                                      last ? s->logits : NULL, cb);
        if (stopped >= 0)
            return llava_error_set(err, LLAVA_ERR_CANCELLED,
                                   "cancelled in decoder layer %d of prompt positions %d..%d", stopped,
                                   start, start + n - 1);
    }
    if (trace && trace->last_logits)
        memcpy(trace->last_logits, s->logits, (size_t)info->vocab_size * sizeof(float));
    if (r) {
        r->image_ms = t1 - t0;
        r->prefill_ms = llava_now_ms() - t1;
        r->prompt_tokens = p->n_positions;
    }
    return LLAVA_OK;
}

static llava_status evaluate_prompt_entry(llava_session *s, const llava_prepared *p, llava_trace *trace,
                                           const llava_callbacks *cb, llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    llava_status st = check_prepared(s->m, p, err);
    if (st != LLAVA_OK) return st;
    return prompt_pass(s, p, p->n_positions, trace, cb, NULL, err);
}

llava_status llava_evaluate_prompt(llava_session *s, const llava_prepared *p, llava_trace *trace,
                                   const llava_callbacks *cb, llava_error *err) {
    unsigned fp = tensor_fp_enter();
    llava_status st = evaluate_prompt_entry(s, p, trace, cb, err);
    tensor_fp_leave(fp);
    return st;
}

/* ---- streaming text with stop strings ---- */

static bool pending_append(llava_session *s, const char *text, size_t len) {
    if (s->pending_len + len + 1 > s->pending_cap) { /* only for tokens longer than the reserve */
        size_t cap = (s->pending_len + len + 1) * 2;
        char *q = realloc(s->pending, cap);
        if (!q) return false;
        s->pending = q;
        s->pending_cap = cap;
    }
    memcpy(s->pending + s->pending_len, text, len);
    s->pending_len += len;
    return true;
}

/* Where the first stop string starts in the pending text, or -1. */
static long find_stop(const llava_session *s, const llava_generate_params *gp) {
    long best = -1;
    for (int k = 0; k < gp->n_stop; k++) {
        size_t n = strlen(gp->stop[k]);
        if (n == 0 || n > s->pending_len) continue;
        for (size_t i = 0; i + n <= s->pending_len && (best < 0 || (long)i < best); i++)
            if (!memcmp(s->pending + i, gp->stop[k], n)) {
                best = (long)i;
                break;
            }
    }
    return best;
}

/* Bytes at the end of the pending text that are the beginning of some stop string. */
static size_t stop_prefix_tail(const llava_session *s, const llava_generate_params *gp) {
    size_t keep = 0;
    for (int k = 0; k < gp->n_stop; k++) {
        size_t n = strlen(gp->stop[k]);
        for (size_t len = n > 0 ? n - 1 : 0; len > keep; len--)
            if (len <= s->pending_len &&
                !memcmp(s->pending + s->pending_len - len, gp->stop[k], len)) {
                keep = len;
                break;
            }
    }
    return keep;
}

typedef enum { EMIT_GO_ON, EMIT_STOP_STRING, EMIT_CALLER_STOP } emit_result;

/* Emits what is safe of the pending text with the token id (-1 for the final flush). */
static emit_result emit(llava_session *s, int32_t id, const llava_generate_params *gp,
                        const llava_callbacks *cb, bool final) {
    long stop = find_stop(s, gp);
    size_t out = stop >= 0 ? (size_t)stop : s->pending_len - (final ? 0 : stop_prefix_tail(s, gp));
    int rc = 0;
    if (cb && cb->on_token && (id >= 0 || out > 0)) rc = cb->on_token(cb->user, id, s->pending, out);
    memmove(s->pending, s->pending + out, s->pending_len - out);
    s->pending_len -= out;
    if (stop >= 0) return EMIT_STOP_STRING;
    return rc ? EMIT_CALLER_STOP : EMIT_GO_ON;
}

static bool is_eos(const llava_model_info *i, int32_t id) {
    for (int k = 0; k < i->n_eos; k++)
        if (i->eos_ids[k] == id) return true;
    return false;
}

static llava_status generate_entry(llava_session *s, const llava_prepared *p,
                                    const llava_generate_params *params, const llava_callbacks *cb,
                                    llava_generate_result *result, llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    llava_model *m = s->m;
    const llava_model_info *info = &m->info;
    llava_generate_params defaults;
    if (!params) {
        llava_generate_params_default(&defaults);
        params = &defaults;
    }
    llava_generate_result r;
    memset(&r, 0, sizeof r);
    llava_status st = check_prepared(m, p, err);
    if (st != LLAVA_OK) return st;
    int max_tokens = params->max_tokens > 0 ? params->max_tokens : p->max_tokens;
    if (max_tokens <= 0) max_tokens = info->n_ctx - p->n_positions;
    if (p->n_positions + max_tokens > info->n_ctx)
        return llava_error_set(err, LLAVA_ERR_LIMIT,
                               "prompt too long: %d positions + %d new tokens exceed the context "
                               "of %d", p->n_positions, max_tokens, info->n_ctx);
    for (int k = 0; k < params->n_stop; k++)
        if (!params->stop || !params->stop[k])
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "stop string %d is NULL", k);

    double t_start = llava_now_ms();
    sampler_reset(s->smp, &params->sampling, p->ids, p->n_ids);
    tokenizer_text scrap = s->piece;
    scrap.len = 0;
    tokenizer_stream_finish(s->stream, &scrap, NULL); /* a fresh stream: drop any leftover */
    s->piece = scrap;
    s->pending_len = 0;

    st = prompt_pass(s, p, p->n_positions + max_tokens, NULL, cb, &r, err);
    if (st == LLAVA_ERR_CANCELLED) {
        r.finish_reason = LLAVA_FINISH_CANCELLED;
        if (result) *result = r;
        return LLAVA_OK;
    }
    if (st != LLAVA_OK) return st;

    double t_loop = llava_now_ms();
    float *row = s->embeds; /* the prompt's rows are no longer needed */
    bool flush = true;
    for (;;) {
        if (cancelled(cb)) {
            r.finish_reason = LLAVA_FINISH_CANCELLED;
            flush = false;
            break;
        }
        int32_t id = sampler_sample(s->smp, s->logits);
        if (r.completion_tokens++ == 0) r.first_token_ms = llava_now_ms() - t_start;
        if (is_eos(info, id) && !params->ignore_eos) {
            r.finish_reason = LLAVA_FINISH_STOP;
            break;
        }
        s->piece.len = 0;
        /* ids of a padded vocabulary (32002..32063 of llava-1.5) have logits but no token:
         * Hugging Face decodes them to nothing, and so does this */
        if (tokenizer_token_text(m->tok, id) &&
            (st = tokenizer_stream_push(s->stream, id, &s->piece, err)) != LLAVA_OK)
            return st;
        if (!pending_append(s, s->piece.data, s->piece.len))
            return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for output text");
        emit_result e = emit(s, id, params, cb, false);
        if (e != EMIT_GO_ON) {
            r.finish_reason = LLAVA_FINISH_STOP;
            flush = false;
            break;
        }
        if (r.completion_tokens >= max_tokens) {
            r.finish_reason = LLAVA_FINISH_LENGTH;
            break;
        }
        decoder_embed(m, id, row);
        decoder_forward(m, &s->dec, row, 1, s->dec.n_past + 1, s->logits, NULL);
    }
    if (flush) {
        s->piece.len = 0;
        if ((st = tokenizer_stream_finish(s->stream, &s->piece, err)) != LLAVA_OK) return st;
        if (!pending_append(s, s->piece.data, s->piece.len))
            return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for output text");
        if (emit(s, -1, params, cb, true) == EMIT_STOP_STRING) r.finish_reason = LLAVA_FINISH_STOP;
    }
    r.decode_ms = llava_now_ms() - t_loop;
    if (result) *result = r;
    return LLAVA_OK;
}

/* The model's entry points compute in tensor_fp_enter's mode (subnormals flushed: tensor.h),
 * callbacks included, and give the caller's thread its own mode back. */
llava_status llava_generate(llava_session *s, const llava_prepared *p,
                            const llava_generate_params *params, const llava_callbacks *cb,
                            llava_generate_result *result, llava_error *err) {
    unsigned fp = tensor_fp_enter();
    llava_status st = generate_entry(s, p, params, cb, result, err);
    tensor_fp_leave(fp);
    return st;
}
