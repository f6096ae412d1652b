/* The Ollama half of the request parser: POST /api/chat and /api/generate bodies (messages or
 * prompt, base64 images, options, raw mode). Ollama's option defaults apply where the body is
 * silent; features that need Ollama's own machinery (format, templates, context arrays, tools)
 * are refused by name. */
#include <stdio.h>
#include <string.h>

#include "server/parse_internal.h"

static int parse_images(pctx *c, const json_t *imgs, const char *field) {
    if (!imgs) return 0;
    if (!json_is_array(imgs)) return pfail(c, field, "expected an array of base64 strings");
    size_t i;
    const json_t *im;
    json_array_foreach(imgs, i, im) {
        char f[96];
        snprintf(f, sizeof f, "%s[%zu]", field, i);
        if (!json_is_string(im)) return pfail(c, f, "expected a base64 string");
        if (padd_image(c, json_string_value(im), json_string_length(im), f, false) != 0)
            return -1;
    }
    return 0;
}

static int parse_message(pctx *c, const json_t *m, size_t i) {
    char field[64], f[96];
    snprintf(field, sizeof field, "messages[%zu]", i);
    if (!json_is_object(m)) return pfail(c, field, "expected a message object");
    const char *role = NULL, *content = NULL;
    snprintf(f, sizeof f, "%s.role", field);
    if (pget_string(c, m, "role", f, &role) != 0) return -1;
    if (!role) return pfail(c, f, "missing");
    if (!strcmp(role, "tool"))
        return pfail(c, f, "'tool' messages are not supported (no tool use)");
    if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
        return pfail(c, f, "unknown role '%.40s' (system, user or assistant)", role);
    const json_t *calls = pget(m, "tool_calls");
    if (calls && !(json_is_array(calls) && json_array_size(calls) == 0)) {
        snprintf(f, sizeof f, "%s.tool_calls", field);
        return pfail(c, f, "tool calls are not supported");
    }
    snprintf(f, sizeof f, "%s.content", field);
    if (pget_string(c, m, "content", f, &content) != 0) return -1;
    const json_t *cv = pget(m, "content");
    if (padd_message(c, role, content ? content : "", content ? json_string_length(cv) : 0) < 0)
        return -1;
    char fi[96];
    snprintf(fi, sizeof fi, "%s.images", field);
    const json_t *imgs = pget(m, "images");
    if (imgs && strcmp(role, "user") != 0 && json_is_array(imgs) && json_array_size(imgs) > 0)
        return pfail(c, fi, "images are only allowed in user messages");
    if (parse_images(c, imgs, fi) != 0) return -1;
    const pmsg *pm = &c->msgs[c->n_msgs - 1];
    size_t markers = pcount_markers(pm->content);
    if (markers > pm->n_images)
        return pfail(c, f, "%zu <image> marker%s in the text but %zu image%s", markers,
                     markers == 1 ? "" : "s", pm->n_images, pm->n_images == 1 ? "" : "s");
    return 0;
}

/* options: Ollama's sampling knobs. Unknown options are ignored, as Ollama does. */
static int parse_options(pctx *c, const json_t *o) {
    llava_request *r = &c->p->req;
    llava_sampling *s = &r->sampling;
    /* Ollama's defaults; its repeat_penalty (1.1 over the last 64 tokens) is left off because
     * this engine's penalty is Hugging Face's, over the whole prompt and output */
    s->temperature = 0.8f;
    s->top_k = 40;
    s->top_p = 0.9f;
    if (!o) return 0;
    if (!json_is_object(o)) return pfail(c, "options", "expected an object");
    double v;
    bool has;
    int64_t k;
    if (pget_number(c, o, "temperature", "options.temperature", 0, 100, &v, &has)) return -1;
    if (has) s->temperature = (float)v;
    if (pget_int(c, o, "top_k", "options.top_k", 0, 1 << 20, &k, &has)) return -1;
    if (has) s->top_k = (int)k;
    if (pget_number(c, o, "top_p", "options.top_p", 0, 1, &v, &has)) return -1;
    if (has) s->top_p = (float)v;
    if (pget_number(c, o, "min_p", "options.min_p", 0, 1, &v, &has)) return -1;
    if (has) s->min_p = (float)v;
    if (pget_number(c, o, "repeat_penalty", "options.repeat_penalty", 0.01, 100, &v, &has))
        return -1;
    if (has) s->repetition_penalty = (float)v;
    if (pget_number(c, o, "presence_penalty", "options.presence_penalty", -100, 100, &v, &has))
        return -1;
    if (has) s->presence_penalty = (float)v;
    if (pget_number(c, o, "frequency_penalty", "options.frequency_penalty", -100, 100, &v, &has))
        return -1;
    if (has) s->frequency_penalty = (float)v;
    if (pget_int(c, o, "seed", "options.seed", INT64_MIN, INT64_MAX, &k, &has)) return -1;
    /* Ollama's seed -1 means "random" */
    if (has && k != -1) {
        s->seed = (uint64_t)k;
        c->p->seed_given = true;
    }
    if (pget_int(c, o, "num_predict", "options.num_predict", -2, SRV_MAX_TOKENS_LIMIT, &k, &has))
        return -1;
    if (has && k == 0) return pfail(c, "options.num_predict", "must be -1, -2 or at least 1");
    if (has) r->max_tokens = k > 0 ? (int)k : 0; /* -1 infinite, -2 fill the context */
    return pparse_stop(c, pget(o, "stop"), "options.stop");
}

static int parse_common(pctx *c, const json_t *root) {
    srv_parsed *p = c->p;
    if (pget_string(c, root, "model", "model", &p->model) != 0) return -1;
    if (!p->model || !p->model[0]) return pfail(c, "model", "missing (the model name is required)");
    p->stream = true; /* Ollama streams unless told not to */
    if (pget_bool(c, root, "stream", "stream", &p->stream) != 0) return -1;
    const json_t *fmt = pget(root, "format");
    if (fmt && !(json_is_string(fmt) && json_string_length(fmt) == 0))
        return pfail(c, "format", "structured output (format) is not supported");
    const json_t *tools = pget(root, "tools");
    if (tools && !(json_is_array(tools) && json_array_size(tools) == 0))
        return pfail(c, "tools", "not supported by this server");
    bool think = false;
    if (pget(root, "think") && json_is_string(pget(root, "think")))
        return pfail(c, "think", "not supported by this model");
    if (pget_bool(c, root, "think", "think", &think) != 0) return -1;
    if (think) return pfail(c, "think", "not supported by this model");
    return parse_options(c, pget(root, "options"));
}

static int parse_generate(pctx *c, const json_t *root) {
    srv_parsed *p = c->p;
    const char *prompt = NULL, *system = NULL, *s = NULL;
    bool raw = false;
    if (pget_string(c, root, "prompt", "prompt", &prompt) != 0 ||
        pget_string(c, root, "system", "system", &system) != 0 ||
        pget_bool(c, root, "raw", "raw", &raw) != 0)
        return -1;
    if (pget_string(c, root, "suffix", "suffix", &s) != 0) return -1;
    if (s && s[0]) return pfail(c, "suffix", "fill-in-the-middle is not supported");
    s = NULL;
    if (pget_string(c, root, "template", "template", &s) != 0) return -1;
    if (s && s[0]) return pfail(c, "template", "custom prompt templates are not supported");
    const json_t *ctx = pget(root, "context");
    if (ctx && !(json_is_array(ctx) && json_array_size(ctx) == 0))
        return pfail(c, "context", "not supported; send the conversation to /api/chat instead");
    const json_t *imgs = pget(root, "images");
    size_t plen = prompt ? json_string_length(pget(root, "prompt")) : 0;

    if (raw) {
        if (system && system[0]) return pfail(c, "system", "not allowed with raw: true");
        if (padd_message(c, "user", prompt ? prompt : "", plen) < 0) return -1;
        if (parse_images(c, imgs, "images") != 0) return -1;
        const pmsg *m = &c->msgs[0];
        size_t markers = pcount_markers(m->content);
        if (markers != m->n_images)
            return pfail(c, "images", "%zu image%s for %zu <image> marker%s in the raw prompt",
                         m->n_images, m->n_images == 1 ? "" : "s", markers,
                         markers == 1 ? "" : "s");
        if (plen == 0) return pfail(c, "prompt", "empty (raw mode needs the whole prompt)");
        p->req.prompt = m->content;
        c->n_msgs = 0;
        return 0;
    }
    if (system && system[0] &&
        padd_message(c, "system", system, json_string_length(pget(root, "system"))) < 0)
        return -1;
    if (padd_message(c, "user", prompt ? prompt : "", plen) < 0) return -1;
    if (parse_images(c, imgs, "images") != 0) return -1;
    const pmsg *m = &c->msgs[c->n_msgs - 1];
    size_t markers = pcount_markers(m->content);
    if (markers > m->n_images)
        return pfail(c, "prompt", "%zu <image> marker%s in the prompt but %zu image%s", markers,
                     markers == 1 ? "" : "s", m->n_images, m->n_images == 1 ? "" : "s");
    /* Ollama answers an empty prompt by loading the model and generating nothing */
    if (plen == 0 && m->n_images == 0) p->load_only = true;
    return 0;
}

int parse_ollama(pctx *c, const json_t *root, bool chat) {
    if (parse_common(c, root) != 0) return -1;
    if (!chat) return parse_generate(c, root);
    const json_t *msgs = pget(root, "messages");
    if (msgs && !json_is_array(msgs)) return pfail(c, "messages", "expected an array of messages");
    if (!msgs || json_array_size(msgs) == 0) {
        c->p->load_only = true; /* as Ollama: no messages loads the model and returns */
        return 0;
    }
    if (json_array_size(msgs) > SRV_MAX_MESSAGES)
        return pfail(c, "messages", "more than %d messages", SRV_MAX_MESSAGES);
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m) {
        if (parse_message(c, m, i) != 0) return -1;
    }
    return 0;
}
