/* Embedding the engine in a libevent loop, through include/llava.h only: the engine's fd is one
 * more event of the loop, and its events are drained on the loop's thread. Two requests are in
 * flight at once; the first is cancelled after a few streamed tokens while the second waits its
 * turn, then the second streams to its end. Exit status 0 when exactly that happened.
 *
 *   libevent_chat MODEL_DIR IMAGE [QUESTION]
 */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llava.h"

#define CANCEL_AFTER 4      /* tokens of the first request before it is cancelled */
#define TIMEOUT_S 300       /* give up (exit 1) rather than hang */

/* What the loop knows about one request. */
typedef struct chat {
    const char *name;
    llava_request_id id;
    int tokens;
    llava_event_kind end;   /* its terminal event kind, 0 until then */
    llava_done_reason reason;
    double first_token_ms;
} chat;

typedef struct app {
    llava_engine *engine;
    struct event_base *base;
    chat req[2];
    int ended;
    int closed;
} app;

static chat *find(app *a, llava_request_id id) {
    for (int i = 0; i < 2; i++)
        if (a->req[i].id == id) return &a->req[i];
    return NULL;
}

static void on_event(app *a, const llava_event *ev) {
    chat *c = find(a, ev->request);
    if (ev->request && !c) return; /* not ours: there are none in this program */
    switch (ev->kind) {
    case LLAVA_EVENT_READY: printf("-- model loaded\n"); break;
    case LLAVA_EVENT_LOAD_FAILED: fprintf(stderr, "-- load failed: %s\n", ev->text); break;
    case LLAVA_EVENT_TOKEN:
        /* the text of one token, as it is released; a real program would write it to a client */
        printf("[%s] %.*s\n", c->name, (int)ev->text_len, ev->text);
        if (ev->token >= 0 && ++c->tokens == CANCEL_AFTER && c == &a->req[0])
            llava_engine_cancel(a->engine, c->id); /* as a server does when a client goes */
        break;
    case LLAVA_EVENT_DONE:
    case LLAVA_EVENT_ERROR:
    case LLAVA_EVENT_CANCELLED:
        c->end = ev->kind;
        c->reason = ev->reason;
        c->first_token_ms = ev->timings.first_token_ms;
        if (ev->kind == LLAVA_EVENT_ERROR) fprintf(stderr, "[%s] error: %s\n", c->name, ev->text);
        /* both over: close; CLOSED will be the last event */
        if (++a->ended == 2) llava_engine_close(a->engine, LLAVA_CLOSE_DRAIN);
        break;
    case LLAVA_EVENT_CLOSED:
        a->closed = 1;
        event_base_loopbreak(a->base);
        break;
    }
}

/* The engine's fd is readable: drain what is there, without blocking the loop. */
static void on_engine_fd(evutil_socket_t fd, short what, void *arg) {
    app *a = arg;
    llava_event ev[32];
    size_t n;
    while ((n = llava_engine_poll(a->engine, ev, 32)) > 0)
        for (size_t i = 0; i < n; i++) on_event(a, &ev[i]);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    app *a = arg;
    llava_engine_close(a->engine, LLAVA_CLOSE_ABORT); /* every request ends CANCELLED, then CLOSED */
}

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
    app *a = arg;
    fprintf(stderr, "libevent_chat: no end after %d s\n", TIMEOUT_S);
    event_base_loopbreak(a->base);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = n > 0 ? (size_t)n : 0;
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: libevent_chat MODEL_DIR IMAGE [QUESTION]\n");
        return 2;
    }
    const char *question = argc > 3 ? argv[3] : "What is shown in this image?";
    size_t image_len = 0;
    char *image = read_file(argv[2], &image_len); /* as a server has it: bytes in memory */
    if (!image) {
        fprintf(stderr, "libevent_chat: cannot read %s\n", argv[2]);
        return 1;
    }

    app a;
    memset(&a, 0, sizeof a);
    a.req[0].name = "A";
    a.req[1].name = "B";
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    cfg.model_dir = argv[1];
    llava_error err;
    if (llava_engine_open(&cfg, &a.engine, &err) != LLAVA_OK) { /* returns at once */
        fprintf(stderr, "libevent_chat: %s\n", err.message);
        return 1;
    }
    a.base = event_base_new();
    struct event *engine_ev = event_new(a.base, llava_engine_fd(a.engine), EV_READ | EV_PERSIST,
                                        on_engine_fd, &a);
    struct event *sig_ev = evsignal_new(a.base, SIGINT, on_signal, &a);
    struct event *timer = evtimer_new(a.base, on_timeout, &a);
    struct timeval limit = {TIMEOUT_S, 0};
    event_add(engine_ev, NULL);
    event_add(sig_ev, NULL);
    event_add(timer, &limit);

    /* Both requests go in now, while the model is still loading: they wait in the queue. A asks
     * for far more tokens than it will get; B is an ordinary short answer. The engine copies
     * everything, so the image buffer is ours again as soon as submit returns. */
    llava_image img = {.data = image, .size = image_len};
    llava_message msg = {.role = "user", .content = question, .images = &img, .n_images = 1};
    llava_request r;
    memset(&r, 0, sizeof r);
    r.messages = &msg;
    r.n_messages = 1;
    r.max_tokens = 1000;
    r.ignore_eos = true;
    int rc = 1;
    llava_status st = llava_engine_submit(a.engine, &r, &a.req[0].id, &err);
    r.max_tokens = 16;
    r.ignore_eos = false;
    if (st == LLAVA_OK) st = llava_engine_submit(a.engine, &r, &a.req[1].id, &err);
    if (st != LLAVA_OK) {
        fprintf(stderr, "libevent_chat: %s\n", err.message);
        goto out;
    }
    free(image);
    image = NULL;

    event_base_dispatch(a.base);

    for (int i = 0; i < 2; i++) {
        const chat *c = &a.req[i];
        const char *how = c->end == LLAVA_EVENT_DONE        ? "done"
                          : c->end == LLAVA_EVENT_CANCELLED ? "cancelled"
                          : c->end == LLAVA_EVENT_ERROR     ? "failed"
                                                            : "unfinished";
        printf("%s: %s after %d tokens (first token at %.1f ms)\n", c->name, how, c->tokens,
               c->first_token_ms);
    }
    rc = a.closed && a.req[0].end == LLAVA_EVENT_CANCELLED && a.req[1].end == LLAVA_EVENT_DONE
             ? 0
             : 1;
out:
    event_free(engine_ev);
    event_free(sig_ev);
    event_free(timer);
    event_base_free(a.base);
    llava_engine_free(a.engine); /* joins the engine's threads (at once: CLOSED was seen) */
    free(image);
    return rc;
}
