/* Blocking calls for simple programs (`llava run`, scripts), written on the public asynchronous
 * API exactly as an embedding program would: submit, then poll(2) on the engine's fd and drain
 * its events until the request's terminal event. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "base/error.h"
#include "engine/internal.h"

#define BATCH 64

/* Waits until the engine's fd is readable (EINTR: try again). */
static void wait_readable(llava_engine *e) {
    struct pollfd p = {.fd = llava_engine_fd(e), .events = POLLIN};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
}

llava_status llava_engine_run(llava_engine *e, const llava_request *req, llava_token_fn on_token,
                              void *user, llava_result *result, llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    llava_result res;
    memset(&res, 0, sizeof res);
    llava_request_id id;
    llava_status st = llava_engine_submit(e, req, &id, err);
    /* a failed load says what is wrong itself, whether the request came before it or after */
    if (st == LLAVA_ERR_STATE && llava_engine_state(e, err) == LLAVA_LOAD_FAILED) return err->code;
    if (st != LLAVA_OK) return st;
    bool stopped = false;
    llava_event ev[BATCH];
    for (;;) {
        size_t n = llava_engine_poll(e, ev, BATCH);
        if (n == 0) {
            wait_readable(e);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (ev[i].request != id) continue; /* READY, and nothing else on an engine of ours */
            switch (ev[i].kind) {
            case LLAVA_EVENT_TOKEN:
                if (!stopped && on_token &&
                    on_token(user, ev[i].token, ev[i].text, ev[i].text_len) != 0) {
                    stopped = true; /* the tokens still queued are not passed on */
                    llava_engine_cancel(e, id);
                }
                break;
            case LLAVA_EVENT_DONE:
            case LLAVA_EVENT_CANCELLED:
                res.reason = ev[i].kind == LLAVA_EVENT_DONE && !stopped ? ev[i].reason
                                                                        : LLAVA_DONE_CANCELLED;
                res.usage = ev[i].usage;
                res.timings = ev[i].timings;
                if (result) *result = res;
                /* cancelled by someone else than on_token (an abort): say so */
                if (ev[i].kind == LLAVA_EVENT_CANCELLED && !stopped)
                    return llava_error_set(err, LLAVA_ERR_CANCELLED, "the request was cancelled");
                return LLAVA_OK;
            case LLAVA_EVENT_ERROR:
                return llava_error_set(err, ev[i].status, "%s", ev[i].text);
            default:
                break;
            }
        }
    }
}

llava_status llava_generate_simple(const llava_engine_config *cfg, const llava_request *req,
                                   llava_token_fn on_token, void *user, llava_result *result,
                                   llava_error *err) {
    llava_error local;
    if (!err) err = &local;
    llava_engine *e;
    llava_status st = llava_engine_open(cfg, &e, err);
    if (st != LLAVA_OK) return st;
    st = llava_engine_run(e, req, on_token, user, result, err);
    /* every event up to CLOSED, so that the worker has freed the model on its own thread */
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    llava_event ev[BATCH];
    for (bool closed = false; !closed;) {
        size_t n = llava_engine_poll(e, ev, BATCH);
        if (n == 0) wait_readable(e);
        for (size_t i = 0; i < n; i++) closed |= ev[i].kind == LLAVA_EVENT_CLOSED;
    }
    llava_engine_free(e);
    return st;
}
