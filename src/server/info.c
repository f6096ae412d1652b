/* The endpoints that describe rather than generate: /health for load balancers (ready, loading,
 * failed, draining), /metrics in Prometheus' text format, and the model lists of both APIs. All
 * read the engine's lock-free state and counters, so they answer at once while it works. */
#include <dirent.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/internal.h"
#include "text/template.h"

#define CONFIG_MAX_BYTES (1 << 20)

/* ---- facts about the checkpoint folder (read once at start) ---- */

void srv_model_facts(srv_server *s) {
    DIR *d = opendir(s->model_dir);
    if (d) {
        struct dirent *e;
        char path[4352];
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", s->model_dir, e->d_name);
            struct stat st;
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            s->model_bytes += (int64_t)st.st_size;
            if ((int64_t)st.st_mtime > s->model_mtime) s->model_mtime = (int64_t)st.st_mtime;
        }
        closedir(d);
    }
    /* a digest of config.json: clients use it to tell checkpoints apart, nothing more */
    uint64_t h = 0xcbf29ce484222325ull;
    char path[4352];
    snprintf(path, sizeof path, "%s/config.json", s->model_dir);
    /* non-blocking open: whatever sits there (a FIFO, a device) must not stall the start */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        unsigned char buf[4096];
        ssize_t got;
        size_t total = 0;
        while (total < CONFIG_MAX_BYTES && (got = read(fd, buf, sizeof buf)) > 0) {
            for (ssize_t i = 0; i < got; i++) {
                h ^= buf[i];
                h *= 0x100000001b3ull;
            }
            total += (size_t)got;
        }
    }
    if (fd >= 0) close(fd);
    snprintf(s->model_digest, sizeof s->model_digest, "%016llx", (unsigned long long)h);
    llava_error err;
    s->desc_ok = llava_model_describe(s->model_dir, &s->desc, &err) == LLAVA_OK;
}

/* ---- health ---- */

static char *status_json(const char *status, const char *error) {
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(status));
    if (error) json_object_set_new(o, "error", json_string(error));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

void srv_handle_health(srv_server *s, struct evhttp_request *req) {
    llava_error load;
    llava_load_state st = llava_engine_state(s->engine, &load);
    if (s->draining) srv_reply(s, req, 503, NULL, status_json("draining", NULL));
    else if (st == LLAVA_LOAD_READY) srv_reply(s, req, 200, NULL, status_json("ok", NULL));
    else if (st == LLAVA_LOAD_FAILED)
        srv_reply(s, req, 500, NULL, status_json("error", load.message));
    else srv_reply(s, req, 503, NULL, status_json("loading", NULL));
}

/* ---- metrics ---- */

static void histogram(struct evbuffer *b, const char *name, const char *help,
                      const llava_histogram *h) {
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < LLAVA_HISTOGRAM_BUCKETS - 1; i++) {
        cum += h->counts[i];
        evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->upper_ms[i] / 1000.0,
                            (unsigned long long)cum);
    }
    cum += h->counts[LLAVA_HISTOGRAM_BUCKETS - 1];
    evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    evbuffer_add_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, h->sum_ms / 1000.0, name,
                        (unsigned long long)h->count);
}

static void counter(struct evbuffer *b, const char *name, const char *type, const char *help,
                    uint64_t v) {
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
                        (unsigned long long)v);
}

void srv_handle_metrics(srv_server *s, struct evhttp_request *req) {
    llava_engine_metrics m;
    llava_engine_metrics_get(s->engine, &m);
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        srv_reply(s, req, 500, NULL, NULL);
        return;
    }
    static const char *const states[] = {"idle", "loading", "ready", "failed"};
    evbuffer_add_printf(b, "# HELP llava_model_state 1 for the engine's current load state\n"
                           "# TYPE llava_model_state gauge\n");
    for (int i = 0; i < 4; i++)
        evbuffer_add_printf(b, "llava_model_state{state=\"%s\"} %d\n", states[i],
                            (int)m.state == i);
    evbuffer_add_printf(b, "# HELP llava_requests_total Requests that ended, by outcome\n"
                           "# TYPE llava_requests_total counter\n"
                           "llava_requests_total{outcome=\"stop\"} %llu\n"
                           "llava_requests_total{outcome=\"length\"} %llu\n"
                           "llava_requests_total{outcome=\"cancelled\"} %llu\n"
                           "llava_requests_total{outcome=\"error\"} %llu\n",
                        (unsigned long long)m.done_stop, (unsigned long long)m.done_length,
                        (unsigned long long)m.cancelled, (unsigned long long)m.failed);
    evbuffer_add_printf(b, "# HELP llava_requests_rejected_total Requests the engine refused\n"
                           "# TYPE llava_requests_rejected_total counter\n"
                           "llava_requests_rejected_total{reason=\"queue_full\"} %llu\n"
                           "llava_requests_rejected_total{reason=\"invalid\"} %llu\n",
                        (unsigned long long)m.rejected_busy,
                        (unsigned long long)m.rejected_invalid);
    counter(b, "llava_requests_submitted_total", "counter", "Requests accepted by the engine",
            m.submitted);
    counter(b, "llava_queue_depth", "gauge", "Requests accepted and not yet running",
            m.queue_depth);
    counter(b, "llava_requests_running", "gauge", "Requests the worker is running", m.running);
    counter(b, "llava_prompt_tokens_total", "counter", "Prompt positions processed",
            m.prompt_tokens);
    counter(b, "llava_completion_tokens_total", "counter", "Tokens generated",
            m.completion_tokens);
    counter(b, "llava_images_encoded_total", "counter", "Images through the vision tower",
            m.images);
    histogram(b, "llava_time_to_first_token_seconds", "Submit to first token",
              &m.time_to_first_token);
    histogram(b, "llava_time_per_output_token_seconds", "Between consecutive tokens",
              &m.time_per_token);
    histogram(b, "llava_image_encode_seconds", "Vision tower and projector per request",
              &m.image_encode);

    const srv_stats *st = &s->stats;
    evbuffer_add_printf(b, "# HELP llava_http_responses_total HTTP answers by status class\n"
                           "# TYPE llava_http_responses_total counter\n"
                           "llava_http_responses_total{code=\"2xx\"} %llu\n"
                           "llava_http_responses_total{code=\"4xx\"} %llu\n"
                           "llava_http_responses_total{code=\"429\"} %llu\n"
                           "llava_http_responses_total{code=\"5xx\"} %llu\n",
                        (unsigned long long)st->http[SRV_HTTP_2XX],
                        (unsigned long long)st->http[SRV_HTTP_4XX],
                        (unsigned long long)st->http[SRV_HTTP_429],
                        (unsigned long long)st->http[SRV_HTTP_5XX]);
    evbuffer_add_printf(b, "# HELP llava_client_disconnects_total Clients that left before "
                           "their answer ended (their requests are cancelled)\n"
                           "# TYPE llava_client_disconnects_total counter\n"
                           "llava_client_disconnects_total{phase=\"before_first_token\"} %llu\n"
                           "llava_client_disconnects_total{phase=\"streaming\"} %llu\n",
                        (unsigned long long)st->disconnects_waiting,
                        (unsigned long long)st->disconnects_streaming);
    counter(b, "llava_http_active_requests", "gauge", "Generation requests in progress",
            s->n_calls);
    counter(b, "llava_accept_pauses_total", "counter",
            "Times accepting connections paused: accept() failed (out of descriptors or memory)",
            st->accept_pauses);
    counter(b, "llava_remote_fetches_total", "counter", "Remote images fetched or tried",
            st->fetches);
    counter(b, "llava_remote_fetch_failures_total", "counter", "Remote image fetches that failed",
            st->fetch_failures);
    static const char *const phases[] = {"queue", "prepare", "image", "prefill", "decode"};
    evbuffer_add_printf(b, "# HELP llava_request_phase_seconds Time of completed requests in "
                           "each phase\n# TYPE llava_request_phase_seconds summary\n");
    for (int i = 0; i < PHASE_COUNT; i++)
        evbuffer_add_printf(b, "llava_request_phase_seconds_sum{phase=\"%s\"} %.6f\n"
                               "llava_request_phase_seconds_count{phase=\"%s\"} %llu\n",
                            phases[i], st->phase_sum_ms[i] / 1000.0, phases[i],
                            (unsigned long long)st->phase_count);
    size_t len = evbuffer_get_length(b);
    char *body = malloc(len + 1);
    if (body) {
        evbuffer_remove(b, body, len);
        body[len] = '\0';
    }
    evbuffer_free(b);
    srv_reply(s, req, 200, "text/plain; version=0.0.4; charset=utf-8", body);
}

/* ---- model lists ---- */

static json_t *openai_model(const srv_server *s) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(s->model_name));
    json_object_set_new(o, "object", json_string("model"));
    json_object_set_new(o, "created", json_integer(s->model_mtime));
    json_object_set_new(o, "owned_by", json_string("llava.c"));
    return o;
}

static char *dump(json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

void srv_handle_openai_models(srv_server *s, struct evhttp_request *req, const char *id) {
    if (id) {
        char *decoded = evhttp_uridecode(id, 0, NULL);
        bool match = decoded && !strcmp(decoded, s->model_name);
        free(decoded);
        if (!match) {
            char msg[200];
            snprintf(msg, sizeof msg, "model '%.100s' not found (this server has '%.60s')", id,
                     s->model_name);
            srv_reply_error(s, req, true, 404, msg, "model");
            return;
        }
        srv_reply(s, req, 200, NULL, dump(openai_model(s)));
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "object", json_string("list"));
    json_t *data = json_array();
    json_array_append_new(data, openai_model(s));
    json_object_set_new(o, "data", data);
    srv_reply(s, req, 200, NULL, dump(o));
}

static void iso_time(int64_t t, char *out, size_t cap) {
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Ollama's "details" of a model: its family is the text model's type, the vision tower makes it
 * also "clip"; the size in billions as Ollama writes it ("7.1B"); the quantization level is the
 * format most weights are in, or the one `--quant` gives them at load. */
static json_t *ollama_details(const srv_server *s) {
    const llava_model_desc *d = &s->desc;
    char size[32] = "", level[16] = "";
    if (s->desc_ok) {
        double n = (double)d->n_params;
        if (n >= 1e9) snprintf(size, sizeof size, "%.1fB", n / 1e9);
        else snprintf(size, sizeof size, "%.0fM", n / 1e6);
        snprintf(level, sizeof level, "%s", d->dtype);
    }
    if (s->cfg.quant == LLAVA_QUANT_LOAD_Q8_0) snprintf(level, sizeof level, "Q8_0");
    if (s->cfg.quant == LLAVA_QUANT_LOAD_Q4_0) snprintf(level, sizeof level, "Q4_0");
    const char *family = s->desc_ok ? d->text_model_type : "llava";
    json_t *details = json_object();
    json_object_set_new(details, "parent_model", json_string(""));
    json_object_set_new(details, "format", json_string("safetensors"));
    json_object_set_new(details, "family", json_string(family));
    json_t *fam = json_array();
    json_array_append_new(fam, json_string(family));
    json_array_append_new(fam, json_string("clip"));
    json_object_set_new(details, "families", fam);
    json_object_set_new(details, "parameter_size", json_string(size));
    json_object_set_new(details, "quantization_level", json_string(level));
    return details;
}

/* One model of /api/tags and /api/ps. */
static json_t *ollama_model(const srv_server *s) {
    char when[40];
    iso_time(s->model_mtime, when, sizeof when);
    json_t *m = json_object();
    json_object_set_new(m, "name", json_string(s->model_name));
    json_object_set_new(m, "model", json_string(s->model_name));
    json_object_set_new(m, "modified_at", json_string(when));
    json_object_set_new(m, "size", json_integer(s->model_bytes));
    json_object_set_new(m, "digest", json_string(s->model_digest));
    json_object_set_new(m, "details", ollama_details(s));
    return m;
}

void srv_handle_ollama_tags(srv_server *s, struct evhttp_request *req) {
    json_t *list = json_array();
    json_array_append_new(list, ollama_model(s));
    json_t *o = json_object();
    json_object_set_new(o, "models", list);
    srv_reply(s, req, 200, NULL, dump(o));
}

/* The running models: this one once loaded, none before or after a failed load. It stays until
 * the server stops, so its "expires_at" is the last date of year 9999. */
void srv_handle_ollama_ps(srv_server *s, struct evhttp_request *req) {
    json_t *list = json_array();
    if (llava_engine_state(s->engine, NULL) == LLAVA_LOAD_READY) {
        json_t *m = ollama_model(s);
        json_object_del(m, "modified_at");
        json_object_set_new(m, "expires_at", json_string("9999-12-31T23:59:59Z"));
        json_object_set_new(m, "size_vram", json_integer(0));
        json_array_append_new(list, m);
    }
    json_t *o = json_object();
    json_object_set_new(o, "models", list);
    srv_reply(s, req, 200, NULL, dump(o));
}

/* Whether a client's model name is this server's: exactly, or with Ollama's default tag. */
static bool is_our_model(const srv_server *s, const char *name) {
    size_t n = strlen(s->model_name);
    return !strcmp(name, s->model_name) || (!strncmp(name, s->model_name, n) && !strcmp(name + n, ":latest"));
}

/* /api/show's body names a model: parsed here on the loop thread, so it is kept small (a large
 * body would stall every other client while it parses; generation bodies go to bodies.c). */
#define SHOW_MAX_BODY (64 * 1024)

void srv_handle_ollama_show(srv_server *s, struct evhttp_request *req) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > SHOW_MAX_BODY) {
        char msg[96];
        snprintf(msg, sizeof msg, "body of %zu bytes: /api/show takes at most %d", len, SHOW_MAX_BODY);
        srv_reply_error(s, req, false, 413, msg, NULL);
        return;
    }
    const char *body = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    json_error_t jerr;
    json_t *root = len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        char msg[256];
        if (!len) snprintf(msg, sizeof msg, "empty body: send {\"model\": NAME}");
        else if (!root) snprintf(msg, sizeof msg, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        else snprintf(msg, sizeof msg, "the body must be a JSON object");
        srv_reply_error(s, req, false, 400, msg, NULL);
        return;
    }
    /* "model", or the older "name" */
    const json_t *m = json_object_get(root, "model");
    if (!m) m = json_object_get(root, "name");
    if (!json_is_string(m)) {
        json_decref(root);
        srv_reply_error(s, req, false, 400, m ? "model: must be a string" : "model: required", NULL);
        return;
    }
    if (!is_our_model(s, json_string_value(m))) {
        char msg[300];
        snprintf(msg, sizeof msg, "model '%.100s' not found (this server has '%.100s')", json_string_value(m),
                 s->model_name);
        json_decref(root);
        srv_reply_error(s, req, false, 404, msg, NULL);
        return;
    }
    json_decref(root);
    if (!s->desc_ok) {
        srv_reply_error(s, req, false, 500, "the model folder could not be described (see /health)", NULL);
        return;
    }
    const llava_model_desc *d = &s->desc;
    char key[96], when[40], modelfile[4400];
    iso_time(s->model_mtime, when, sizeof when);
    snprintf(modelfile, sizeof modelfile, "# served by llava.c\nFROM %s\n", s->model_dir);
    json_t *info = json_object(), *proj = json_object();
    const char *arch = d->text_model_type;
    json_object_set_new(info, "general.architecture", json_string(arch));
    json_object_set_new(info, "general.parameter_count", json_integer(d->n_params));
#define INFO(field, value)                                            \
    do {                                                              \
        snprintf(key, sizeof key, "%s." field, arch);                 \
        json_object_set_new(info, key, json_integer(value));          \
    } while (0)
    INFO("context_length", d->context_length);
    INFO("embedding_length", d->hidden_size);
    INFO("block_count", d->num_layers);
    INFO("feed_forward_length", d->intermediate_size);
    INFO("attention.head_count", d->num_heads);
    INFO("attention.head_count_kv", d->num_kv_heads);
    INFO("vocab_size", d->vocab_size);
#undef INFO
    json_object_set_new(proj, "general.architecture", json_string("clip"));
    json_object_set_new(proj, "clip.has_vision_encoder", json_true());
    json_object_set_new(proj, "clip.vision.embedding_length", json_integer(d->vision_hidden_size));
    json_object_set_new(proj, "clip.vision.block_count", json_integer(d->vision_layers));
    json_object_set_new(proj, "clip.vision.image_size", json_integer(d->image_size));
    json_object_set_new(proj, "clip.vision.patch_size", json_integer(d->patch_size));
    json_object_set_new(proj, "clip.vision.image_tokens", json_integer(d->image_tokens));
    json_t *caps = json_array();
    json_array_append_new(caps, json_string("completion"));
    json_array_append_new(caps, json_string("vision"));
    json_t *o = json_object();
    json_object_set_new(o, "license", json_string(""));
    json_object_set_new(o, "modelfile", json_string(modelfile));
    /* the sampling defaults /api/chat and /api/generate apply (Ollama's) */
    json_object_set_new(o, "parameters", json_string("temperature 0.8\ntop_k 40\ntop_p 0.9"));
    /* the engine's template in Ollama's syntax: what a conversation becomes (text/template.c) */
    template_kind kind;
    json_object_set_new(o, "template",
                        json_string(template_from_name(d->chat_template, &kind) == 0 ? template_go_text(kind) : ""));
    json_object_set_new(o, "details", ollama_details(s));
    json_object_set_new(o, "model_info", info);
    json_object_set_new(o, "projector_info", proj);
    json_object_set_new(o, "capabilities", caps);
    json_object_set_new(o, "modified_at", json_string(when));
    srv_reply(s, req, 200, NULL, dump(o));
}

void srv_handle_ollama_version(srv_server *s, struct evhttp_request *req) {
    json_t *o = json_object();
    json_object_set_new(o, "version", json_string(llava_version()));
    srv_reply(s, req, 200, NULL, dump(o));
}
