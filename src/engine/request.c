/* Checking a caller's llava_request on the caller's thread and copying it, in the shape
 * llava_prepare and llava_generate take, into one allocation that the engine owns. Only cheap
 * shape checks happen here; the template, the tokenizer and the images are the pool's work. */
#include <math.h>
#include <stdio.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define MAX_MESSAGES 4096
#define MAX_IMAGES 256
#define MAX_STOP 16
#define MAX_STOP_LEN 256
#define MAX_PATH_LEN 4096
#define MAX_IMAGE_BYTES ((size_t)1 << 30)
#define MAX_IMAGE_SIDE 32768

static bool known_role(const char *role) {
    return !strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant");
}

static llava_status check_image(const llava_image *im, const char *where, size_t i,
                                llava_error *err) {
    if (im->data) {
        if (im->size == 0 || im->size > MAX_IMAGE_BYTES)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "%s[%zu].size: %zu bytes (1 byte to 1 GiB)", where, i, im->size);
    } else if (im->path) {
        size_t n = strlen(im->path);
        if (n == 0 || n > MAX_PATH_LEN)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "%s[%zu].path: empty or longer than %d bytes", where, i,
                                   MAX_PATH_LEN);
    } else if (im->rgb) {
        if (im->width <= 0 || im->height <= 0 || im->width > MAX_IMAGE_SIDE ||
            im->height > MAX_IMAGE_SIDE)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "%s[%zu]: %dx%d pixels (1 to %d a side)", where, i, im->width,
                                   im->height, MAX_IMAGE_SIDE);
    } else {
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "%s[%zu]: none of data, path or rgb is set", where, i);
    }
    return LLAVA_OK;
}

static llava_status check_images(const llava_image *images, size_t n, const char *where,
                                 llava_error *err) {
    if (n > 0 && !images)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "%s: NULL with %zu images",
                               where, n);
    for (size_t i = 0; i < n; i++) {
        llava_status st = check_image(&images[i], where, i, err);
        if (st != LLAVA_OK) return st;
    }
    return LLAVA_OK;
}

static bool finite_in(float v, float lo, float hi) { return isfinite(v) && v >= lo && v <= hi; }

static llava_status check_sampling(const llava_sampling *s, llava_error *err) {
    const char *bad = NULL;
    if (!finite_in(s->temperature, 0.0f, 100.0f)) bad = "temperature: a number in [0, 100]";
    else if (s->top_k < 0) bad = "top_k: >= 0";
    else if (!finite_in(s->top_p, 0.0f, 1.0f)) bad = "top_p: a number in [0, 1]";
    else if (!finite_in(s->min_p, 0.0f, 1.0f)) bad = "min_p: a number in [0, 1]";
    else if (!finite_in(s->repetition_penalty, 0.0f, 100.0f))
        bad = "repetition_penalty: a number in [0, 100]";
    else if (!finite_in(s->presence_penalty, -100.0f, 100.0f))
        bad = "presence_penalty: a number in [-100, 100]";
    else if (!finite_in(s->frequency_penalty, -100.0f, 100.0f))
        bad = "frequency_penalty: a number in [-100, 100]";
    if (bad) return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "sampling.%s", bad);
    return LLAVA_OK;
}

static llava_status check_request(const llava_request *r, llava_error *err) {
    if (r->prompt && r->n_messages > 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "request: both prompt (raw mode) and messages are set");
    if (!r->prompt && r->n_messages == 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "request: neither messages nor prompt is set");
    if (r->n_messages > MAX_MESSAGES || (r->n_messages > 0 && !r->messages))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "messages: %zu messages (at most %d, array not NULL)",
                               r->n_messages, MAX_MESSAGES);
    if (!r->prompt && r->n_images > 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "images: only for a raw prompt; a conversation's images belong "
                               "to its messages");
    size_t images = r->n_images;
    llava_status st = check_images(r->images, r->n_images, "images", err);
    if (st != LLAVA_OK) return st;
    for (size_t i = 0; i < r->n_messages; i++) {
        const llava_message *m = &r->messages[i];
        if (!m->role || !known_role(m->role))
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "messages[%zu].role: '%s' is not system, user or assistant", i,
                                   m->role ? m->role : "(null)");
        char where[48];
        snprintf(where, sizeof where, "messages[%zu].images", i);
        if ((st = check_images(m->images, m->n_images, where, err)) != LLAVA_OK) return st;
        images += m->n_images;
    }
    if (images > MAX_IMAGES)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "images: %zu images in one request (at most %d)", images,
                               MAX_IMAGES);
    if (r->template_name) {
        template_kind kind;
        if (template_from_name(r->template_name, &kind) != 0)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "template_name: unknown template '%.64s' (llava, vicuna, "
                                   "mistral or chatml)", r->template_name);
    }
    if (r->max_tokens < 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "max_tokens: %d is negative",
                               r->max_tokens);
    if (r->n_stop > MAX_STOP || (r->n_stop > 0 && !r->stop))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "stop: %zu stop strings (at most %d, array not NULL)", r->n_stop,
                               MAX_STOP);
    for (size_t i = 0; i < r->n_stop; i++) {
        size_t n = r->stop[i] ? strlen(r->stop[i]) : 0;
        if (n == 0 || n > MAX_STOP_LEN)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "stop[%zu]: NULL, empty or longer than %d bytes", i,
                                   MAX_STOP_LEN);
    }
    return check_sampling(&r->sampling, err);
}

/* ---- the copy: one layout function run twice, first to size the block, then to fill it ---- */

typedef struct bump {
    char *base; /* NULL while sizing */
    size_t off;
} bump;

static void *take(bump *b, size_t size, size_t align) {
    b->off = (b->off + align - 1) & ~(align - 1);
    void *p = b->base ? b->base + b->off : NULL;
    b->off += size;
    return p;
}

static const void *copy_bytes(bump *b, const void *src, size_t n) {
    void *p = take(b, n, 1);
    if (p) memcpy(p, src, n);
    return p;
}

static const char *copy_str(bump *b, const char *s) { return copy_bytes(b, s, strlen(s) + 1); }

static void copy_image(bump *b, const llava_image *src, llava_image_input *dst) {
    llava_image_input v = {0};
    if (src->data) {
        v.bytes = copy_bytes(b, src->data, src->size);
        v.len = src->size;
    } else if (src->path) {
        v.path = copy_str(b, src->path);
    } else {
        v.rgb = copy_bytes(b, src->rgb, (size_t)src->width * (size_t)src->height * 3);
        v.width = src->width;
        v.height = src->height;
    }
    if (dst) *dst = v;
}

static eng_input *layout(const llava_request *r, bump *b) {
    eng_input *in = take(b, sizeof *in, alignof(eng_input));
    size_t n_msgs = r->prompt ? 1 : r->n_messages;
    size_t n_images = r->n_images;
    for (size_t i = 0; i < r->n_messages; i++) n_images += r->messages[i].n_images;
    template_message *msgs = take(b, n_msgs * sizeof *msgs, alignof(template_message));
    llava_image_input *images = take(b, n_images * sizeof *images, alignof(llava_image_input));
    const char **stop = take(b, r->n_stop * sizeof *stop, alignof(const char *));

    size_t k = 0;
    if (r->prompt) {
        const char *text = copy_str(b, r->prompt);
        if (msgs) msgs[0] = (template_message){.role = "user", .text = text, .n_images = 0};
        for (size_t j = 0; j < r->n_images; j++, k++)
            copy_image(b, &r->images[j], images ? &images[k] : NULL);
    }
    for (size_t i = 0; i < r->n_messages; i++) {
        const llava_message *m = &r->messages[i];
        const char *content = m->content ? m->content : "";
        /* a text without markers gets one per image before it, as llava-hf renders image
         * parts; a text with markers must have as many as images (llava_prepare checks) */
        bool marked = template_count_images(content) > 0;
        template_message v = {.role = copy_str(b, m->role), .text = copy_str(b, content),
                              .n_images = marked ? 0 : (int)m->n_images};
        if (msgs) msgs[i] = v;
        for (size_t j = 0; j < m->n_images; j++, k++)
            copy_image(b, &m->images[j], images ? &images[k] : NULL);
    }
    for (size_t i = 0; i < r->n_stop; i++) {
        const char *s = copy_str(b, r->stop[i]);
        if (stop) stop[i] = s;
    }
    const char *tname = r->template_name ? copy_str(b, r->template_name) : NULL;
    if (!in) return NULL;

    in->msgs = msgs;
    in->n_msgs = n_msgs;
    in->images = images;
    in->n_images = (int)n_images;
    in->popt = (llava_prepare_options){.template_name = tname, .raw = r->prompt != NULL,
                                       .max_tokens = r->max_tokens};
    llava_generate_params_default(&in->gen);
    sampler_params *sp = &in->gen.sampling;
    const llava_sampling *s = &r->sampling;
    sp->temperature = s->temperature;
    sp->top_k = s->top_k;
    sp->top_p = s->top_p > 0.0f ? s->top_p : 1.0f;
    sp->min_p = s->min_p;
    sp->repetition_penalty = s->repetition_penalty > 0.0f ? s->repetition_penalty : 1.0f;
    sp->presence_penalty = s->presence_penalty;
    sp->frequency_penalty = s->frequency_penalty;
    sp->seed = s->seed;
    in->gen.max_tokens = r->max_tokens;
    in->gen.stop = stop;
    in->gen.n_stop = (int)r->n_stop;
    in->gen.ignore_eos = r->ignore_eos;
    return in;
}

llava_status eng_input_copy(const llava_request *req, eng_input **out, llava_error *err) {
    *out = NULL;
    llava_status st = check_request(req, err);
    if (st != LLAVA_OK) return st;
    bump sizing = {NULL, 0};
    layout(req, &sizing);
    char *block = malloc(sizing.off);
    if (!block)
        return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory copying a request of %zu "
                               "bytes", sizing.off);
    bump fill = {block, 0};
    *out = layout(req, &fill);
    return LLAVA_OK;
}

void eng_input_free(eng_input *in) { free(in); }
