/* libFuzzer target for the server's request-body parser. The first input byte picks the API
 * (OpenAI chat, Ollama chat, Ollama generate) and the options (local files, remote images, image
 * limit); the rest is the body. An accepted body must give a request whose pointers stay inside
 * what the parser owns and whose values the engine accepts; a refused one a 400/500 with a
 * message that starts with the field it names. The same bytes also go through base64. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/base64.h"
#include "server/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const srv_parsed *p, const srv_parse_options *o) {
    const llava_request *r = &p->req;
    if (p->n_images > o->max_images || p->n_remote > p->n_images) abort();
    if (r->n_stop > 16 || (r->n_stop && !r->stop)) abort();
    for (size_t i = 0; i < r->n_stop; i++) {
        size_t n = strlen(r->stop[i]);
        if (n == 0 || n > 256) abort();
    }
    if (r->max_tokens < 0) abort();
    if (p->load_only) return;
    size_t images = 0;
    if (r->prompt) {
        if (r->n_messages || r->n_images != p->n_images) abort();
        images = r->n_images;
    }
    for (size_t i = 0; i < r->n_messages; i++) {
        const llava_message *m = &r->messages[i];
        if (!m->role || !m->content) abort();
        if (strcmp(m->role, "system") && strcmp(m->role, "user") && strcmp(m->role, "assistant"))
            abort();
        if (m->n_images && (m->images < p->images || m->images + m->n_images > p->images +
                                                                           p->n_images))
            abort();
        images += m->n_images;
    }
    if (images != p->n_images) abort();
    for (size_t i = 0; i < p->n_images; i++) {
        const llava_image *im = &p->images[i];
        int forms = (im->data != NULL) + (im->path != NULL) + (p->sources[i].url != NULL);
        if (forms != 1) abort();
        if (im->data && (im->size == 0 || !srv_image_format(im->data, im->size))) abort();
        if (im->path && im->path[0] != '/') abort();
        if (!p->sources[i].field[0]) abort();
        if (p->sources[i].url && !o->allow_remote_images) abort();
        if (im->path && !o->allow_local_files) abort();
    }
    const llava_sampling *s = &r->sampling;
    if (!(s->temperature >= 0 && s->temperature <= 100) || !(s->top_p >= 0 && s->top_p <= 1) ||
        !(s->min_p >= 0 && s->min_p <= 1) || s->top_k < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t sel = data[0];
    srv_api api = (srv_api)(sel % 3);
    srv_parse_options o = {.allow_local_files = (sel & 4) != 0,
                           .allow_remote_images = (sel & 8) != 0,
                           .max_images = (size_t)(sel >> 4)};
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    srv_parse_error e;
    srv_parsed *p = srv_parse_request(api, body, len, &o, &e);
    if (p) {
        check_request(p, &o);
        srv_parsed_free(p);
    } else {
        if (e.status != 400 && e.status != 500) abort();
        if (!e.message[0]) abort();
        size_t n = strlen(e.param);
        if (n && (strncmp(e.message, e.param, n) != 0 || e.message[n] != ':')) abort();
    }

    unsigned char *out = malloc(srv_base64_max_decoded(len));
    if (!out) return 0;
    size_t got = 0;
    char msg[160];
    if (srv_base64_decode(body, len, out, &got, msg, sizeof msg) == 0 &&
        got > srv_base64_max_decoded(len))
        abort();
    free(out);
    return 0;
}
