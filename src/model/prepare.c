/* Turning a request into model input off the model's thread: the chat template (or the raw
 * prompt), tokens with one image id per <image>, the checks that must fail before any model
 * work (marker and image counts, context), and the decoded, CLIP-preprocessed images. Reads only
 * immutable parts of the model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "image/image.h"
#include "model/internal.h"

void llava_prepared_free(llava_prepared *p) {
    if (!p) return;
    free(p->prompt);
    free(p->ids);
    free(p->pixel_values);
    free(p);
}

static llava_status render(const llava_model *m, const template_message *msgs, size_t n,
                           const llava_prepare_options *opt, char **out, llava_error *err) {
    if (opt && opt->raw) {
        if (n != 1 || !msgs[0].text)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "raw prompt: expected exactly one message with text, got %zu",
                                   n);
        if (msgs[0].n_images != 0)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "raw prompt: images must be placed with %s markers in the text",
                                   TEMPLATE_IMAGE_MARKER);
        *out = strdup(msgs[0].text);
        if (!*out) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
        return LLAVA_OK;
    }
    template_kind kind = m->info.chat_template;
    if (opt && opt->template_name && template_from_name(opt->template_name, &kind) != 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "unknown template '%s' (llava, vicuna, mistral or chatml)",
                               opt->template_name);
    if (n == 0)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "the request has no messages");
    return template_render(kind, msgs, n, true, out, err);
}

/* Encoded images (bytes or a file) go through image_decode_preprocess, which resizes JPEG rows
 * as they are decoded instead of holding the full-size photo; decoded pixels are preprocessed. */
static llava_status load_image(const llava_model *m, const llava_image_input *in, int index,
                               float *pixels, llava_error *err) {
    int S = m->info.image_size, oh = 0, ow = 0;
    size_t cap = (size_t)3 * S * S;
    llava_status st;
    if (in->bytes || in->path) {
        char *file = NULL;
        size_t len = in->len;
        const void *bytes = in->bytes;
        if (!bytes) {
            /* the same cap as image_decode_file */
            st = llava_read_file(in->path, (size_t)256 << 20, &file, &len, err);
            if (st != LLAVA_OK) return llava_error_prefix(err, "image %d", index);
            bytes = file;
        }
        st = image_decode_preprocess(bytes, len, NULL, &m->pre, pixels, cap, &oh, &ow, err);
        free(file);
        if (st != LLAVA_OK) {
            if (in->path) return llava_error_prefix(err, "image %d (%s)", index, in->path);
            return llava_error_prefix(err, "image %d (%zu bytes)", index, in->len);
        }
    } else {
        if (!in->rgb || in->width <= 0 || in->height <= 0)
            return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                                   "image %d: no bytes, path or pixels given", index);
        st = image_preprocess(in->rgb, in->width, in->height, &m->pre, pixels, cap, &oh, &ow, err);
        if (st != LLAVA_OK) return llava_error_prefix(err, "image %d", index);
    }
    if (oh != S || ow != S)
        return llava_error_set(err, LLAVA_ERR_UNSUPPORTED,
                               "image %d: preprocessing gave %dx%d, the vision tower takes %dx%d",
                               index, ow, oh, S, S);
    return LLAVA_OK;
}

static llava_status prepare(const llava_model *m, const template_message *msgs, size_t n_msgs,
                            const llava_image_input *images, int n_images,
                            const llava_prepare_options *opt, llava_prepared *p,
                            llava_error *err) {
    const llava_model_info *info = &m->info;
    if (n_images < 0 || (n_images > 0 && !images))
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "bad image list (%d images)",
                               n_images);
    if (n_msgs > 0 && !msgs)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT, "no messages");
    llava_status st = render(m, msgs, n_msgs, opt, &p->prompt, err);
    if (st != LLAVA_OK) return st;

    int markers = template_count_images(p->prompt);
    if (markers != n_images)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "the prompt has %d %s marker%s but %d image%s given", markers,
                               TEMPLATE_IMAGE_MARKER, markers == 1 ? "" : "s", n_images,
                               n_images == 1 ? " was" : "s were");

    tokenizer_ids ids = {0};
    st = tokenizer_encode(m->tok, p->prompt, strlen(p->prompt), TOKENIZER_ADD_SPECIAL, &ids, err);
    if (st != LLAVA_OK) {
        tokenizer_ids_free(&ids);
        return llava_error_prefix(err, "prompt");
    }
    p->ids = ids.ids;
    p->n_ids = (int)ids.n;
    int image_ids = 0;
    for (int i = 0; i < p->n_ids; i++) image_ids += p->ids[i] == info->image_token_id;
    if (image_ids != n_images)
        return llava_error_set(err, LLAVA_ERR_INVALID_ARGUMENT,
                               "the prompt tokenizes to %d image tokens (id %d) for %d images",
                               image_ids, info->image_token_id, n_images);

    p->n_images = n_images;
    p->image_size = info->image_size;
    p->n_positions = p->n_ids - n_images + n_images * info->tokens_per_image;
    int room = info->n_ctx - p->n_positions;
    int want = opt && opt->max_tokens > 0 ? opt->max_tokens : 0;
    if (room < (want > 0 ? want : 1))
        return llava_error_set(err, LLAVA_ERR_LIMIT,
                               "prompt too long: %d positions (%d tokens, %d image%s of %d) + "
                               "%d new tokens exceed the context of %d", p->n_positions,
                               p->n_ids - n_images, n_images, n_images == 1 ? "" : "s",
                               info->tokens_per_image, want > 0 ? want : 1, info->n_ctx);
    p->max_tokens = want > 0 ? want : room;

    if (n_images > 0) {
        size_t per = (size_t)3 * info->image_size * info->image_size;
        p->pixel_values = malloc((size_t)n_images * per * sizeof(float));
        if (!p->pixel_values)
            return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory for %d images",
                                   n_images);
        for (int i = 0; i < n_images; i++)
            if ((st = load_image(m, &images[i], i, p->pixel_values + (size_t)i * per, err)) !=
                LLAVA_OK)
                return st;
    }
    return LLAVA_OK;
}

llava_status llava_prepare(const llava_model *m, const template_message *messages,
                           size_t n_messages, const llava_image_input *images, int n_images,
                           const llava_prepare_options *opt, llava_prepared **out,
                           llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    *out = NULL;
    llava_prepared *p = calloc(1, sizeof *p);
    if (!p) return llava_error_set(err, LLAVA_ERR_NO_MEMORY, "out of memory");
    llava_status st = prepare(m, messages, n_messages, images, n_images, opt, p, err);
    if (st != LLAVA_OK) {
        llava_prepared_free(p);
        return st;
    }
    *out = p;
    return LLAVA_OK;
}
