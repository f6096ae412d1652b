/* The generation endpoints: a "call" follows one request from its body to its last byte. Parse,
 * fetch remote images, submit to the engine, then turn the engine's events into an SSE stream
 * (OpenAI), NDJSON lines (Ollama) or one JSON answer, and cancel in the engine as soon as the
 * client's connection closes. The status line waits for the first token, so errors found while
 * preparing the request (an undecodable image) still get their 4xx. */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "base/clock.h"
#include "server/internal.h"

/* ---- the call's life ---- */

static srv_call *call_new(srv_server *s, struct evhttp_request *req, srv_api api) {
    srv_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    c->req = req;
    c->api = api;
    /* until the body says otherwise: Ollama streams by default */
    c->stream = api != SRV_API_OPENAI_CHAT;
    if (!(c->text = evbuffer_new())) {
        free(c);
        return NULL;
    }
    snprintf(c->model, sizeof c->model, "%s", s->model_name);
    snprintf(c->id_str, sizeof c->id_str, "chatcmpl-%llx%llx", (unsigned long long)++s->n_ids,
             (unsigned long long)(srv_next_seed(s) & 0xffffffffffull));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    c->created = (int64_t)tv.tv_sec;
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(c->created_at, sizeof c->created_at, "%s.%06ldZ", day, (long)tv.tv_usec);
    c->t_start = llava_now_ms();
    c->next = s->calls;
    if (s->calls) s->calls->prev = c;
    s->calls = c;
    s->n_calls++;
    return c;
}

/* Takes what the call needs from its parsed body (which it then owns). */
static int call_adopt(srv_call *c, srv_parsed *p) {
    if (p->n_images) {
        c->image_fields = calloc(p->n_images, sizeof *c->image_fields);
        c->fetches = calloc(p->n_images, sizeof *c->fetches);
        c->fetched = calloc(p->n_images, sizeof *c->fetched);
        if (!c->image_fields || !c->fetches || !c->fetched) return -1;
    }
    c->parsed = p;
    c->stream = p->stream;
    c->include_usage = p->include_usage;
    c->n_images = p->n_images;
    for (size_t i = 0; i < p->n_images; i++)
        snprintf(c->image_fields[i], sizeof c->image_fields[i], "%s", p->sources[i].field);
    if (p->model && p->model[0]) snprintf(c->model, sizeof c->model, "%s", p->model);
    return 0;
}

static const char *path_of(srv_api api) {
    switch (api) {
    case SRV_API_OPENAI_CHAT: return "/v1/chat/completions";
    case SRV_API_OLLAMA_CHAT: return "/api/chat";
    default: return "/api/generate";
    }
}

void srv_call_free(srv_call *c) {
    srv_server *s = c->srv;
    double ms = llava_now_ms() - c->t_start;
    if (c->gone)
        srv_log(s, "POST %s: client left after %d tokens, %.0f ms", path_of(c->api), c->tokens, ms);
    else
        srv_log(s, "POST %s %d%s: %d tokens, %.0f ms", path_of(c->api), c->status,
                c->stream ? " (stream)" : "", c->tokens, ms);
    if (c->req) {
        struct evhttp_connection *conn = evhttp_request_get_connection(c->req);
        if (conn) evhttp_connection_set_closecb(conn, NULL, NULL);
    }
    for (size_t i = 0; c->fetches && i < c->n_images; i++) {
        if (c->fetches[i]) srv_fetch_cancel(c->fetches[i]);
        free(c->fetched[i]);
    }
    srv_parsed_free(c->parsed);
    evbuffer_free(c->text);
    free(c->image_fields);
    free(c->fetches);
    free(c->fetched);
    if (c->prev) c->prev->next = c->next;
    else s->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_calls--;
    free(c);
    srv_calls_changed(s);
}

static srv_answer answer_of(const srv_call *c) {
    return (srv_answer){.id = c->id_str, .created = c->created, .created_at = c->created_at,
                        .model = c->model};
}

static bool is_openai(const srv_call *c) { return c->api == SRV_API_OPENAI_CHAT; }

/* Before the last bytes of an answer: the connection goes back to plain keep-alive handling
 * (no close callback to this call, the idle timeout again). */
static void release_connection(srv_call *c) {
    struct evhttp_connection *conn = evhttp_request_get_connection(c->req);
    if (!conn) return;
    evhttp_connection_set_closecb(conn, NULL, NULL);
    evhttp_connection_set_timeout(conn, c->srv->cfg.idle_timeout_s);
}

/* Answers with an error (if the client is still there) and ends the call. */
static void call_fail(srv_call *c, int status, const char *message, const char *param) {
    if (c->req && !c->gone) {
        release_connection(c);
        srv_reply_error(c->srv, c->req, is_openai(c), status, message, param);
        c->status = status;
    }
    c->req = NULL;
    srv_call_free(c);
}

/* ---- noticing that the client left ---- */

static void on_connection_closed(struct evhttp_connection *conn, void *arg) {
    srv_call *c = arg;
    srv_server *s = c->srv;
    /* libevent detaches a request that was not answered yet and leaves it to us to free */
    if (c->req && !evhttp_request_get_connection(c->req)) evhttp_request_free(c->req);
    c->req = NULL;
    c->gone = true;
    if (c->tokens > 0) s->stats.disconnects_streaming++;
    else s->stats.disconnects_waiting++;
    if (c->parsing) return; /* freed when the parsing thread hands its body back */
    if (c->id) {
        /* the call ends with its terminal event; cancel may lose a race with DONE: harmless */
        llava_engine_cancel(s->engine, c->id);
        return;
    }
    srv_call_free(c); /* still fetching images, or waiting for the model to load */
}

/* libevent stops reading a connection while its request is being handled, so a client that
 * leaves is not seen until something is written. Reading is turned back on without a read
 * callback (as libevent itself does while it writes an answer): bytes a client sends are kept
 * for its next request, and end-of-file or an error closes the connection and tells us. No read
 * timeout while the engine works; the write timeout still catches clients that stop reading. */
static void watch_connection(srv_call *c) {
    struct evhttp_connection *conn = evhttp_request_get_connection(c->req);
    if (!conn) return;
    evhttp_connection_set_closecb(conn, on_connection_closed, c);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    bufferevent_data_cb rcb, wcb;
    bufferevent_event_cb ecb;
    void *arg;
    bufferevent_getcb(bev, &rcb, &wcb, &ecb, &arg);
    bufferevent_setcb(bev, NULL, wcb, ecb, arg);
    struct timeval wt = {c->srv->cfg.idle_timeout_s, 0};
    bufferevent_set_timeouts(bev, NULL, &wt);
    bufferevent_enable(bev, EV_READ);
    /* tokens go out as small writes: without this, Nagle's algorithm holds each one back until
     * the previous is acknowledged (up to a delayed-ACK timeout on real networks) */
    int one = 1;
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- streaming ---- */

static void start_stream(srv_call *c) {
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
    evhttp_add_header(h, "Content-Type",
                      is_openai(c) ? "text/event-stream" : "application/x-ndjson");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_send_reply_start(c->req, 200, "OK");
    c->started = true;
    c->status = 200;
    c->srv->stats.http[SRV_HTTP_2XX]++;
    if (is_openai(c)) {
        srv_answer a = answer_of(c);
        char *chunk = srv_openai_chunk(&a, "assistant", "", 0, NULL, c->include_usage);
        if (chunk) evbuffer_add_printf(c->text, "data: %s\n\n", chunk);
        free(chunk);
        evhttp_send_reply_chunk(c->req, c->text);
    }
}

/* Sends json as one SSE event or NDJSON line; takes json. */
static void send_piece(srv_call *c, char *json) {
    if (!json) return;
    if (is_openai(c)) evbuffer_add_printf(c->text, "data: %s\n\n", json);
    else evbuffer_add_printf(c->text, "%s\n", json);
    free(json);
    evhttp_send_reply_chunk(c->req, c->text);
}

static void on_stream_written(struct evhttp_request *req, void *arg) {
    srv_server *s = arg;
    if (s->replies_in_flight > 0) s->replies_in_flight--;
    if (s->engine_closed && s->replies_in_flight == 0) event_base_loopexit(s->base, NULL);
}

static void end_stream(srv_call *c) {
    release_connection(c);
    evhttp_request_set_on_complete_cb(c->req, on_stream_written, c->srv);
    c->srv->replies_in_flight++;
    evhttp_send_reply_end(c->req);
    c->req = NULL;
}

/* ---- engine events ---- */

/* "image 3 (...): ..." from the engine becomes "messages[1].content[2].image_url.url: image 3
 * (...): ...", naming the request's field. */
static const char *image_field_of(const srv_call *c, const char *msg) {
    if (strncmp(msg, "image ", 6) != 0 || !isdigit((unsigned char)msg[6])) return NULL;
    char *end;
    unsigned long k = strtoul(msg + 6, &end, 10);
    if ((*end != ' ' && *end != ':') || k >= c->n_images) return NULL;
    return c->image_fields[k];
}

static void on_error_event(srv_call *c, const llava_event *ev) {
    srv_server *s = c->srv;
    const char *msg = ev->text ? ev->text : "request failed";
    int status = 500;
    llava_error load;
    bool load_failed = llava_engine_state(s->engine, &load) == LLAVA_LOAD_FAILED &&
                       !strcmp(load.message, msg);
    /* once tokens flow the request was fine: a failure then is the server's (500) */
    if (!load_failed && c->tokens == 0) {
        switch (ev->status) {
        case LLAVA_ERR_INVALID_ARGUMENT:
        case LLAVA_ERR_FORMAT:
        case LLAVA_ERR_UNSUPPORTED:
        case LLAVA_ERR_LIMIT:
        case LLAVA_ERR_IO: /* a file:// image the engine could not read */
            status = 400;
            break;
        default: break;
        }
    }
    char text[800];
    const char *field = image_field_of(c, msg);
    if (load_failed) snprintf(text, sizeof text, "the model failed to load: %s", msg);
    else if (field) snprintf(text, sizeof text, "%s: %s", field, msg);
    else snprintf(text, sizeof text, "%s", msg);
    if (!c->started) {
        call_fail(c, status, text, field);
        return;
    }
    send_piece(c, is_openai(c) ? srv_openai_error(status, text, field) : srv_ollama_error(text));
    end_stream(c);
    srv_call_free(c);
}

static void on_done_event(srv_call *c, const llava_event *ev) {
    srv_server *s = c->srv;
    const llava_timings *t = &ev->timings;
    s->stats.phase_sum_ms[PHASE_QUEUE] += t->queue_ms;
    s->stats.phase_sum_ms[PHASE_PREPARE] += t->prepare_ms;
    s->stats.phase_sum_ms[PHASE_IMAGE] += t->image_ms;
    s->stats.phase_sum_ms[PHASE_PREFILL] += t->prefill_ms;
    s->stats.phase_sum_ms[PHASE_DECODE] += t->decode_ms;
    s->stats.phase_count++;
    if (c->gone) {
        srv_call_free(c);
        return;
    }
    srv_answer a = answer_of(c);
    const char *reason = srv_finish_reason(ev->reason);
    bool chat = c->api != SRV_API_OLLAMA_GENERATE;
    if (c->stream) {
        if (!c->started) start_stream(c);
        if (is_openai(c)) {
            send_piece(c, srv_openai_chunk(&a, NULL, NULL, 0, reason, c->include_usage));
            if (c->include_usage) send_piece(c, srv_openai_usage_chunk(&a, &ev->usage));
            evbuffer_add_printf(c->text, "data: [DONE]\n\n");
            evhttp_send_reply_chunk(c->req, c->text);
        } else {
            send_piece(c, srv_ollama_final(&a, chat, "", 0, reason, &ev->usage, t));
        }
        end_stream(c);
        srv_call_free(c);
        return;
    }
    size_t len = evbuffer_get_length(c->text);
    const char *text = len ? (const char *)evbuffer_pullup(c->text, -1) : "";
    char *body = is_openai(c) ? srv_openai_completion(&a, text, len, reason, &ev->usage)
                              : srv_ollama_final(&a, chat, text, len, reason, &ev->usage, t);
    release_connection(c);
    srv_reply(s, c->req, 200, NULL, body);
    c->status = 200;
    c->req = NULL;
    srv_call_free(c);
}

void srv_call_event(srv_call *c, const llava_event *ev) {
    switch (ev->kind) {
    case LLAVA_EVENT_TOKEN:
        c->tokens++;
        if (c->gone) return;
        if (!c->stream) {
            evbuffer_add(c->text, ev->text, ev->text_len);
            return;
        }
        if (!c->started) start_stream(c);
        if (ev->text_len == 0) return; /* text held back (a partial character or stop string) */
        {
            srv_answer a = answer_of(c);
            send_piece(c, is_openai(c) ? srv_openai_chunk(&a, NULL, ev->text, ev->text_len, NULL,
                                                          c->include_usage)
                                       : srv_ollama_chunk(&a, c->api == SRV_API_OLLAMA_CHAT,
                                                          ev->text, ev->text_len));
        }
        return;
    case LLAVA_EVENT_DONE: on_done_event(c, ev); return;
    case LLAVA_EVENT_ERROR:
        if (c->gone) {
            srv_call_free(c);
            return;
        }
        on_error_event(c, ev);
        return;
    case LLAVA_EVENT_CANCELLED:
        if (c->gone) {
            srv_call_free(c);
            return;
        }
        /* cancelled while the client waits: only the end of a shutdown's grace period does it */
        if (!c->started) {
            call_fail(c, 503, "cancelled: the server is shutting down", NULL);
            return;
        }
        send_piece(c, is_openai(c)
                          ? srv_openai_error(503, "cancelled: the server is shutting down", NULL)
                          : srv_ollama_error("cancelled: the server is shutting down"));
        end_stream(c);
        srv_call_free(c);
        return;
    default: return;
    }
}

/* ---- submitting ---- */

static void call_submit(srv_call *c) {
    srv_server *s = c->srv;
    srv_parsed *p = c->parsed;
    p->req.user = c;
    llava_error err;
    llava_status st = llava_engine_submit(s->engine, &p->req, &c->id, &err);
    /* the engine copied everything: the body's images can go now */
    srv_parsed_free(p);
    c->parsed = NULL;
    for (size_t i = 0; i < c->n_images; i++) {
        free(c->fetched[i]);
        c->fetched[i] = NULL;
    }
    if (st == LLAVA_OK) return;
    c->id = 0;
    int status = 500;
    if (st == LLAVA_ERR_BUSY) status = 429;
    else if (st == LLAVA_ERR_INVALID_ARGUMENT) status = 400;
    else if (st == LLAVA_ERR_STATE && s->draining) status = 503;
    else if (st == LLAVA_ERR_NO_MEMORY) status = 503;
    call_fail(c, status, err.message, NULL);
}

static void on_fetched(void *user, size_t index, unsigned char *bytes, size_t size,
                       const char *error) {
    srv_call *c = user;
    srv_server *s = c->srv;
    c->fetches[index] = NULL;
    c->fetches_left--;
    s->stats.fetches++;
    char msg[512];
    if (!error && !srv_image_format(bytes, size)) {
        free(bytes);
        bytes = NULL;
        error = "the fetched data is not a JPEG, PNG, WebP, GIF or BMP image";
    }
    if (error) {
        s->stats.fetch_failures++;
        snprintf(msg, sizeof msg, "%s: could not fetch the image: %s", c->image_fields[index],
                 error);
        call_fail(c, 400, msg, c->image_fields[index]); /* cancels the other fetches */
        return;
    }
    c->fetched[index] = bytes;
    c->parsed->images[index].data = bytes;
    c->parsed->images[index].size = size;
    if (c->fetches_left == 0) call_submit(c);
}

static void start_fetches(srv_call *c) {
    srv_parsed *p = c->parsed;
    for (size_t i = 0; i < p->n_images; i++) {
        if (!p->sources[i].url) continue;
        char msg[256], text[512];
        c->fetches[i] = srv_fetch_start(c->srv->fetcher, p->sources[i].url, on_fetched, c, i, msg,
                                        sizeof msg);
        if (!c->fetches[i]) {
            snprintf(text, sizeof text, "%s: could not fetch the image: %s", p->sources[i].field,
                     msg);
            call_fail(c, 400, text, c->image_fields[i]);
            return;
        }
        c->fetches_left++;
    }
}

/* ---- Ollama's load-only requests ---- */

static void answer_load(srv_call *c) {
    srv_answer a = answer_of(c);
    char *obj = srv_ollama_final(&a, c->api == SRV_API_OLLAMA_CHAT, "", 0, "load", NULL, NULL);
    char *body = NULL;
    if (obj && (body = malloc(strlen(obj) + 2))) sprintf(body, "%s\n", obj);
    free(obj);
    release_connection(c);
    srv_reply(c->srv, c->req, 200, c->stream ? "application/x-ndjson" : NULL, body);
    c->status = 200;
    c->req = NULL;
    srv_call_free(c);
}

void srv_calls_model_state(srv_server *s) {
    llava_error load;
    llava_load_state st = llava_engine_state(s->engine, &load);
    srv_call *c = s->calls;
    while (c) {
        srv_call *next = c->next;
        if (c->wait_load && !c->gone) {
            if (st == LLAVA_LOAD_READY) {
                answer_load(c);
            } else if (st == LLAVA_LOAD_FAILED) {
                char msg[600];
                snprintf(msg, sizeof msg, "the model failed to load: %s", load.message);
                call_fail(c, 500, msg, NULL);
            }
        }
        c = next;
    }
}

/* ---- the handler ---- */

/* Bodies up to this size are parsed on the loop (well under a millisecond); larger ones, image
 * uploads mostly, on the parsing thread. */
#define INLINE_PARSE_MAX (256 * 1024)

void srv_call_parsed(srv_call *c, srv_parsed *p, const srv_parse_error *err) {
    srv_server *s = c->srv;
    c->parsing = false;
    if (c->gone) {
        srv_parsed_free(p);
        srv_call_free(c);
        return;
    }
    if (!p) {
        call_fail(c, err->status, err->message, err->param);
        return;
    }
    llava_error load;
    llava_load_state state = llava_engine_state(s->engine, &load);
    if (state == LLAVA_LOAD_FAILED) {
        char msg[600];
        snprintf(msg, sizeof msg, "the model failed to load: %s", load.message);
        srv_parsed_free(p);
        call_fail(c, 500, msg, NULL);
        return;
    }
    if (call_adopt(c, p) != 0) {
        srv_parsed_free(p);
        call_fail(c, 503, "out of memory", NULL);
        return;
    }
    if (!p->seed_given) p->req.sampling.seed = srv_next_seed(s);
    if (p->load_only) {
        if (state == LLAVA_LOAD_READY) answer_load(c);
        else c->wait_load = true;
        return;
    }
    if (p->n_remote > 0) start_fetches(c);
    else call_submit(c);
}

void srv_handle_generate(srv_server *s, struct evhttp_request *req, srv_api api) {
    srv_call *c = call_new(s, req, api);
    if (!c) {
        srv_reply_error(s, req, api == SRV_API_OPENAI_CHAT, 503, "out of memory", NULL);
        return;
    }
    watch_connection(c);
    srv_parse_options po = {.allow_local_files = s->cfg.allow_local_files,
                            .allow_remote_images = s->cfg.allow_remote_images,
                            .max_images = s->cfg.max_images};
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > INLINE_PARSE_MAX && srv_bodies_post(s->bodies, c, api, &po, in)) {
        c->parsing = true;
        return;
    }
    srv_parse_error pe;
    memset(&pe, 0, sizeof pe);
    srv_parsed *p = NULL;
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (body) {
        p = srv_parse_request(api, body, len, &po, &pe);
    } else {
        pe.status = 500;
        snprintf(pe.message, sizeof pe.message, "out of memory reading the body");
    }
    evbuffer_drain(in, len); /* parsed (or refused): the raw body is not needed any more */
    srv_call_parsed(c, p, &pe);
}
