/* The OpenAI half of the request parser: POST /v1/chat/completions bodies (messages with string
 * or part-array content, sampling fields, stop, stream options). Fields this engine cannot honour
 * (tools, n > 1, logprobs, JSON response formats, ...) are refused by name rather than ignored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/parse_internal.h"

/* Fields that change what a client gets back; accepting them silently would be a lie. */
static const char *const unsupported[] = {"tools", "functions", "tool_choice", "function_call",
                                          "audio", "prediction", "web_search_options"};

static int check_unsupported(pctx *c, const json_t *root) {
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        const json_t *v = pget(root, unsupported[i]);
        /* an empty tools list is what some SDKs send by default */
        if (v && !(json_is_array(v) && json_array_size(v) == 0) &&
            !(json_is_string(v) && !strcmp(json_string_value(v), "none")))
            return pfail(c, unsupported[i], "not supported by this server");
    }
    bool logprobs = false;
    if (pget_bool(c, root, "logprobs", "logprobs", &logprobs) != 0) return -1;
    if (logprobs) return pfail(c, "logprobs", "log probabilities are not supported");
    if (pget(root, "top_logprobs")) return pfail(c, "top_logprobs", "not supported");
    const json_t *bias = pget(root, "logit_bias");
    if (bias && !(json_is_object(bias) && json_object_size(bias) == 0))
        return pfail(c, "logit_bias", "not supported");
    const json_t *rf = pget(root, "response_format");
    if (rf) {
        const char *type = NULL;
        if (!json_is_object(rf)) return pfail(c, "response_format", "expected an object");
        if (pget_string(c, rf, "type", "response_format.type", &type) != 0) return -1;
        if (!type || strcmp(type, "text") != 0)
            return pfail(c, "response_format.type", "only \"text\" is supported, got \"%s\"",
                         type ? type : "(none)");
    }
    const json_t *mod = pget(root, "modalities");
    if (mod) {
        if (!json_is_array(mod)) return pfail(c, "modalities", "expected an array");
        size_t i;
        const json_t *m;
        json_array_foreach(mod, i, m) {
            if (!json_is_string(m) || strcmp(json_string_value(m), "text") != 0)
                return pfail(c, "modalities", "only [\"text\"] is supported");
        }
    }
    int64_t n = 1;
    if (pget_int(c, root, "n", "n", INT64_MIN, INT64_MAX, &n, NULL) != 0) return -1;
    if (n != 1) return pfail(c, "n", "only n = 1 is supported, got %lld", (long long)n);
    return 0;
}

/* Appends text to a growing buffer, parts separated by one space (as llava-hf's chat template
 * writes each text part followed by a space). */
static int append_text(pctx *c, char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    size_t need = *len + n + 2;
    if (need > *cap) {
        size_t nc = need * 2;
        char *b = realloc(*buf, nc);
        if (!b) return pfail_oom(c);
        *buf = b;
        *cap = nc;
    }
    if (*len > 0) (*buf)[(*len)++] = ' ';
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static int parse_part(pctx *c, const json_t *part, const char *field, bool images_ok, char **text,
                      size_t *len, size_t *cap) {
    char f[192];
    if (!json_is_object(part)) return pfail(c, field, "expected a content part object");
    const char *type = NULL;
    snprintf(f, sizeof f, "%s.type", field);
    if (pget_string(c, part, "type", f, &type) != 0) return -1;
    if (!type) return pfail(c, f, "missing (text or image_url)");
    if (!strcmp(type, "text")) {
        snprintf(f, sizeof f, "%s.text", field);
        const json_t *t = pget(part, "text");
        if (!t) return pfail(c, f, "missing");
        if (!json_is_string(t)) return pfail(c, f, "expected a string");
        return append_text(c, text, len, cap, json_string_value(t), json_string_length(t));
    }
    if (!strcmp(type, "image_url")) {
        if (!images_ok) return pfail(c, f, "image_url parts are only allowed in user messages");
        const json_t *iu = pget(part, "image_url");
        snprintf(f, sizeof f, "%s.image_url", field);
        if (!iu) return pfail(c, f, "missing");
        const json_t *url = iu;
        if (json_is_object(iu)) {
            const char *detail = NULL;
            char fd[224];
            snprintf(fd, sizeof fd, "%s.detail", f);
            if (pget_string(c, iu, "detail", fd, &detail) != 0) return -1;
            if (detail && strcmp(detail, "auto") && strcmp(detail, "low") && strcmp(detail, "high"))
                return pfail(c, fd, "expected auto, low or high, got '%.32s'", detail);
            snprintf(f, sizeof f, "%s.image_url.url", field);
            url = pget(iu, "url");
            if (!url) return pfail(c, f, "missing");
        }
        if (!json_is_string(url)) return pfail(c, f, "expected a string");
        return padd_image(c, json_string_value(url), json_string_length(url), f, true);
    }
    return pfail(c, f, "unsupported content part type '%.40s' (text or image_url)", type);
}

static int parse_message(pctx *c, const json_t *m, size_t i) {
    char field[64], f[96];
    snprintf(field, sizeof field, "messages[%zu]", i);
    if (!json_is_object(m)) return pfail(c, field, "expected a message object");
    const char *role = NULL;
    snprintf(f, sizeof f, "%s.role", field);
    if (pget_string(c, m, "role", f, &role) != 0) return -1;
    if (!role) return pfail(c, f, "missing");
    if (!strcmp(role, "developer")) role = "system"; /* OpenAI's newer name for system */
    if (!strcmp(role, "tool") || !strcmp(role, "function"))
        return pfail(c, f, "'%s' messages are not supported (no tool use)", role);
    if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
        return pfail(c, f, "unknown role '%.40s' (system, developer, user or assistant)", role);
    const json_t *calls = pget(m, "tool_calls");
    if (calls && !(json_is_array(calls) && json_array_size(calls) == 0)) {
        snprintf(f, sizeof f, "%s.tool_calls", field);
        return pfail(c, f, "tool calls are not supported");
    }
    snprintf(f, sizeof f, "%s.content", field);
    const json_t *content = pget(m, "content");
    if (!content) return pfail(c, f, "missing");
    if (json_is_string(content)) {
        if (padd_message(c, role, json_string_value(content), json_string_length(content)) < 0)
            return -1;
    } else if (json_is_array(content)) {
        if (padd_message(c, role, "", 0) < 0) return -1;
        char *text = NULL;
        size_t len = 0, cap = 0;
        size_t j;
        const json_t *part;
        json_array_foreach(content, j, part) {
            char pf[128];
            snprintf(pf, sizeof pf, "%s.content[%zu]", field, j);
            if (parse_part(c, part, pf, !strcmp(role, "user"), &text, &len, &cap) != 0) {
                free(text);
                return -1;
            }
        }
        const char *t = srv_arena_strdup(c->p->arena, text ? text : "", len);
        free(text);
        if (!t) return pfail_oom(c);
        c->msgs[c->n_msgs - 1].content = t;
    } else {
        return pfail(c, f, "expected a string or an array of content parts");
    }
    pmsg *pm = &c->msgs[c->n_msgs - 1];
    size_t markers = pcount_markers(pm->content);
    if (markers > pm->n_images)
        return pfail(c, f, "%zu <image> marker%s in the text but %zu image%s", markers,
                     markers == 1 ? "" : "s", pm->n_images, pm->n_images == 1 ? "" : "s");
    return 0;
}

int parse_openai_chat(pctx *c, const json_t *root) {
    srv_parsed *p = c->p;
    llava_request *r = &p->req;
    if (check_unsupported(c, root) != 0) return -1;
    if (pget_string(c, root, "model", "model", &p->model) != 0) return -1;

    const json_t *msgs = pget(root, "messages");
    if (!msgs) return pfail(c, "messages", "missing");
    if (!json_is_array(msgs)) return pfail(c, "messages", "expected an array of messages");
    if (json_array_size(msgs) == 0) return pfail(c, "messages", "at least one message is needed");
    if (json_array_size(msgs) > SRV_MAX_MESSAGES)
        return pfail(c, "messages", "more than %d messages", SRV_MAX_MESSAGES);
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m) {
        if (parse_message(c, m, i) != 0) return -1;
    }

    if (pget_bool(c, root, "stream", "stream", &p->stream) != 0) return -1;
    const json_t *so = pget(root, "stream_options");
    if (so) {
        if (!json_is_object(so)) return pfail(c, "stream_options", "expected an object");
        if (!p->stream) return pfail(c, "stream_options", "only allowed when stream is true");
        if (pget_bool(c, so, "include_usage", "stream_options.include_usage",
                      &p->include_usage) != 0)
            return -1;
    }

    int64_t mt = 0, mct = 0;
    bool has_mt = false, has_mct = false;
    if (pget_int(c, root, "max_tokens", "max_tokens", 1, SRV_MAX_TOKENS_LIMIT, &mt, &has_mt) ||
        pget_int(c, root, "max_completion_tokens", "max_completion_tokens", 1,
                 SRV_MAX_TOKENS_LIMIT, &mct, &has_mct))
        return -1;
    if (has_mt && has_mct && mt != mct)
        return pfail(c, "max_completion_tokens", "differs from max_tokens (set only one)");
    r->max_tokens = (int)(has_mct ? mct : mt);

    llava_sampling *s = &r->sampling;
    double v;
    bool has;
    /* OpenAI's defaults: temperature 1, top_p 1 (off) */
    s->temperature = 1.0f;
    if (pget_number(c, root, "temperature", "temperature", 0, 2, &v, &has)) return -1;
    if (has) s->temperature = (float)v;
    if (pget_number(c, root, "top_p", "top_p", 0, 1, &v, &has)) return -1;
    if (has) s->top_p = (float)v;
    if (pget_number(c, root, "frequency_penalty", "frequency_penalty", -2, 2, &v, &has)) return -1;
    if (has) s->frequency_penalty = (float)v;
    if (pget_number(c, root, "presence_penalty", "presence_penalty", -2, 2, &v, &has)) return -1;
    if (has) s->presence_penalty = (float)v;
    /* common extensions of OpenAI-compatible servers (llama.cpp, vLLM) */
    int64_t k = 0;
    if (pget_int(c, root, "top_k", "top_k", 0, 1 << 20, &k, &has)) return -1;
    if (has) s->top_k = (int)k;
    if (pget_number(c, root, "min_p", "min_p", 0, 1, &v, &has)) return -1;
    if (has) s->min_p = (float)v;
    if (pget_number(c, root, "repetition_penalty", "repetition_penalty", 0.01, 100, &v, &has))
        return -1;
    if (has) s->repetition_penalty = (float)v;
    int64_t seed = 0;
    if (pget_int(c, root, "seed", "seed", INT64_MIN, INT64_MAX, &seed, &has)) return -1;
    if (has) {
        s->seed = (uint64_t)seed;
        p->seed_given = true;
    }
    return pparse_stop(c, pget(root, "stop"), "stop");
}
