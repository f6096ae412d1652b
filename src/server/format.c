/* Building the OpenAI and Ollama answer objects with jansson, field for field as those APIs
 * document them, so that their official clients parse them unchanged. */
#include "server/format.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    unsigned min;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000, cp = c & 0x07;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

char *srv_utf8_clean(const char *s, size_t len, size_t *out_len) {
    char *out = malloc(len * 3 + 1); /* each bad byte may become 3 bytes of U+FFFD */
    if (!out) return NULL;
    size_t k = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(u + i, len - i);
        if (n == 0 || (n == 1 && u[i] == 0)) {
            memcpy(out + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
        } else {
            memcpy(out + k, u + i, n);
            k += n;
            i += n;
        }
    }
    out[k] = '\0';
    if (out_len) *out_len = k;
    return out;
}

/* A JSON string from model text, cleaned first. */
static json_t *text_value(const char *s, size_t len) {
    size_t n;
    char *clean = srv_utf8_clean(s ? s : "", s ? len : 0, &n);
    if (!clean) return NULL;
    json_t *v = json_stringn_nocheck(clean, n);
    free(clean);
    return v;
}

/* json_dumps and drops the reference; NULL stays NULL. */
static char *dump(json_t *root) {
    if (!root) return NULL;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

/* ---- OpenAI ---- */

const char *srv_finish_reason(llava_done_reason reason) {
    return reason == LLAVA_DONE_LENGTH ? "length" : "stop";
}

static json_t *openai_head(const srv_answer *a, const char *object) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(a->id));
    json_object_set_new(o, "object", json_string(object));
    json_object_set_new(o, "created", json_integer(a->created));
    json_object_set_new(o, "model", json_string(a->model));
    json_object_set_new(o, "system_fingerprint", json_null());
    return o;
}

static json_t *usage_value(const llava_usage *u) {
    json_t *o = json_object();
    json_object_set_new(o, "prompt_tokens", json_integer(u->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(u->completion_tokens));
    json_object_set_new(o, "total_tokens", json_integer(u->prompt_tokens + u->completion_tokens));
    return o;
}

char *srv_openai_chunk(const srv_answer *a, const char *role, const char *content, size_t len,
                       const char *finish_reason, bool usage_null) {
    json_t *o = openai_head(a, "chat.completion.chunk");
    json_t *delta = json_object();
    if (role) json_object_set_new(delta, "role", json_string(role));
    if (content) json_object_set_new(delta, "content", text_value(content, len));
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(0));
    json_object_set_new(choice, "delta", delta);
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason",
                        finish_reason ? json_string(finish_reason) : json_null());
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(o, "choices", choices);
    if (usage_null) json_object_set_new(o, "usage", json_null());
    return dump(o);
}

char *srv_openai_usage_chunk(const srv_answer *a, const llava_usage *u) {
    json_t *o = openai_head(a, "chat.completion.chunk");
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage_value(u));
    return dump(o);
}

char *srv_openai_completion(const srv_answer *a, const char *text, size_t len,
                            const char *finish_reason, const llava_usage *u) {
    json_t *o = openai_head(a, "chat.completion");
    json_t *msg = json_object();
    json_object_set_new(msg, "role", json_string("assistant"));
    json_object_set_new(msg, "content", text_value(text, len));
    json_object_set_new(msg, "refusal", json_null());
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(0));
    json_object_set_new(choice, "message", msg);
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", json_string(finish_reason));
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", usage_value(u));
    return dump(o);
}

/* OpenAI's error type and code for an HTTP status. */
static void openai_kind(int status, const char **type, const char **code) {
    *code = NULL;
    switch (status) {
    case 401: *type = "authentication_error"; *code = "invalid_api_key"; break;
    case 404: *type = "invalid_request_error"; *code = "not_found"; break;
    case 413: *type = "invalid_request_error"; *code = "request_too_large"; break;
    case 429: *type = "rate_limit_error"; *code = "rate_limit_exceeded"; break;
    case 503: *type = "server_error"; *code = "service_unavailable"; break;
    default: *type = status >= 500 ? "server_error" : "invalid_request_error"; break;
    }
}

char *srv_openai_error(int status, const char *message, const char *param) {
    const char *type, *code;
    openai_kind(status, &type, &code);
    json_t *e = json_object();
    json_object_set_new(e, "message", text_value(message, strlen(message)));
    json_object_set_new(e, "type", json_string(type));
    json_object_set_new(e, "param", param && param[0] ? text_value(param, strlen(param))
                                                      : json_null());
    json_object_set_new(e, "code", code ? json_string(code) : json_null());
    json_t *o = json_object();
    json_object_set_new(o, "error", e);
    return dump(o);
}

/* ---- Ollama ---- */

static json_t *ollama_head(const srv_answer *a) {
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(a->model));
    json_object_set_new(o, "created_at", json_string(a->created_at));
    return o;
}

static void ollama_text(json_t *o, bool chat, const char *text, size_t len) {
    if (chat) {
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string("assistant"));
        json_object_set_new(m, "content", text_value(text, len));
        json_object_set_new(o, "message", m);
    } else {
        json_object_set_new(o, "response", text_value(text, len));
    }
}

char *srv_ollama_chunk(const srv_answer *a, bool chat, const char *text, size_t len) {
    json_t *o = ollama_head(a);
    ollama_text(o, chat, text, len);
    json_object_set_new(o, "done", json_false());
    return dump(o);
}

static json_int_t ns(double ms) { return (json_int_t)(ms * 1e6); }

char *srv_ollama_final(const srv_answer *a, bool chat, const char *text, size_t len,
                       const char *done_reason, const llava_usage *u, const llava_timings *t) {
    json_t *o = ollama_head(a);
    ollama_text(o, chat, text, len);
    json_object_set_new(o, "done_reason", json_string(done_reason));
    json_object_set_new(o, "done", json_true());
    if (u && t) {
        json_object_set_new(o, "total_duration", json_integer(ns(t->total_ms)));
        json_object_set_new(o, "load_duration", json_integer(0));
        json_object_set_new(o, "prompt_eval_count", json_integer(u->prompt_tokens));
        /* the image encoder runs as part of reading the prompt */
        json_object_set_new(o, "prompt_eval_duration",
                            json_integer(ns(t->image_ms + t->prefill_ms)));
        json_object_set_new(o, "eval_count", json_integer(u->completion_tokens));
        json_object_set_new(o, "eval_duration", json_integer(ns(t->decode_ms)));
    }
    return dump(o);
}

char *srv_ollama_error(const char *message) {
    json_t *o = json_object();
    json_object_set_new(o, "error", text_value(message, strlen(message)));
    return dump(o);
}
