/* How soon a cancel stops a running request, in each phase of its work: the vision tower (checked
 * between layers), the prompt pass (between decoder layers) and decoding (between tokens). A first run of
 * the request to its end gives the length of each phase; then, for each phase, the request is
 * submitted again and cancelled at a random moment inside that phase, and the time from the
 * cancel call to the CANCELLED event is compared with one unit of the phase (one vision layer,
 * one decoder layer over a prompt chunk, one decode step). Meant for a 7B-shaped checkpoint; a
 * benchmark, not a test.
 *
 *   engine_cancel -m MODEL_DIR -i IMAGE [-V VISION_LAYERS_RUN] [-L DECODER_LAYERS] [-c PREFILL_CHUNK]
 *                 [-r REPEATS] [-t THREADS] [-n DECODE_TOKENS]
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "llava.h"

typedef struct trial {
    llava_request_id id;
    int tokens;
    double first_token_at, last_token_at, cancelled_at, ended_at;
    llava_event_kind end;
    llava_timings timings;
    llava_usage usage;
} trial;

/* Drains events for the trial until `until` (ms) or its end; returns 1 once it ended. */
static int pump(llava_engine *e, trial *t, double until, int stop_after_tokens) {
    llava_event ev[64];
    for (;;) {
        size_t n = llava_engine_poll(e, ev, 64);
        for (size_t i = 0; i < n; i++) {
            if (ev[i].request != t->id) continue;
            double now = llava_now_ms();
            if (ev[i].kind == LLAVA_EVENT_TOKEN && ev[i].token >= 0) {
                if (t->tokens++ == 0) t->first_token_at = now;
                t->last_token_at = now;
            } else if (ev[i].kind == LLAVA_EVENT_DONE || ev[i].kind == LLAVA_EVENT_CANCELLED ||
                       ev[i].kind == LLAVA_EVENT_ERROR) {
                t->end = ev[i].kind;
                t->ended_at = now;
                t->timings = ev[i].timings;
                t->usage = ev[i].usage;
                if (ev[i].kind == LLAVA_EVENT_ERROR) fprintf(stderr, "error: %s\n", ev[i].text);
                return 1;
            }
        }
        if (stop_after_tokens > 0 && t->tokens >= stop_after_tokens) return 0;
        double left = until - llava_now_ms();
        if (n == 0 && left <= 0) return 0;
        struct pollfd p = {.fd = llava_engine_fd(e), .events = POLLIN};
        if (n == 0) poll(&p, 1, left > 1000 ? 1000 : (int)left + 1);
    }
}

/* Waits until the worker has taken a request (the running gauge), busy-polling the metrics. */
static double wait_running(llava_engine *e) {
    llava_engine_metrics m;
    do {
        llava_engine_metrics_get(e, &m);
        if (!m.running) usleep(200);
    } while (!m.running);
    return llava_now_ms();
}

static double uniform(unsigned *seed, double lo, double hi) {
    return lo + (hi - lo) * (double)rand_r(seed) / (double)RAND_MAX;
}

int main(int argc, char **argv) {
    const char *model = NULL, *image = NULL;
    int layers = 3, text_layers = 2, chunk = 1024, repeats = 5, threads = 0, decode_tokens = 16, opt;
    while ((opt = getopt(argc, argv, "m:i:V:L:c:r:t:n:")) != -1) {
        if (opt == 'm') model = optarg;
        else if (opt == 'i') image = optarg;
        else if (opt == 'V') layers = atoi(optarg);
        else if (opt == 'L') text_layers = atoi(optarg);
        else if (opt == 'c') chunk = atoi(optarg);
        else if (opt == 'r') repeats = atoi(optarg);
        else if (opt == 't') threads = atoi(optarg);
        else if (opt == 'n') decode_tokens = atoi(optarg);
        else return 2;
    }
    if (!model || !image || layers <= 0 || text_layers <= 0 || chunk <= 0 || repeats <= 0 || decode_tokens < 4) {
        fprintf(stderr, "usage: engine_cancel -m MODEL_DIR -i IMAGE [-V VISION_LAYERS_RUN] [-L DECODER_LAYERS] "
                        "[-c PREFILL_CHUNK] [-r REPEATS] [-t THREADS] [-n DECODE_TOKENS]\n");
        return 2;
    }
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    cfg.model_dir = model;
    cfg.n_threads = threads;
    cfg.prefill_chunk = chunk;
    llava_engine *e;
    llava_error err;
    if (llava_engine_open(&cfg, &e, &err) != LLAVA_OK) {
        fprintf(stderr, "engine_cancel: %s\n", err.message);
        return 1;
    }
    llava_image img = {.path = image};
    llava_request req;
    memset(&req, 0, sizeof req);
    req.prompt = "USER: <image>\nDescribe the image in detail. ASSISTANT:";
    req.images = &img;
    req.n_images = 1;
    req.max_tokens = decode_tokens;
    req.ignore_eos = true;

    /* the baseline: every phase to its end */
    trial base = {0};
    if (llava_engine_submit(e, &req, &base.id, &err) != LLAVA_OK) {
        fprintf(stderr, "engine_cancel: %s\n", err.message);
        return 1;
    }
    while (!pump(e, &base, llava_now_ms() + 1000, 0)) {
    }
    if (base.end != LLAVA_EVENT_DONE) return 1;
    double image_ms = base.timings.image_ms, prefill_ms = base.timings.prefill_ms;
    double step_ms = (base.last_token_at - base.first_token_at) / (base.tokens - 1);
    /* a full chunk's share of the prompt pass (the last chunk may be shorter) */
    int positions = base.usage.prompt_tokens;
    double chunk_ms = prefill_ms * (positions < chunk ? 1.0 : (double)chunk / positions);
    double layer_ms = chunk_ms / text_layers;
    printf("engine_cancel: baseline: vision %.1f ms (%d layers run: %.1f ms each), prompt pass "
           "%.1f ms (%d positions, chunks of %d: %.1f ms each, %.1f ms per decoder layer), decode "
           "%.1f ms per token\n",
           image_ms, layers, image_ms / layers, prefill_ms, positions, chunk, chunk_ms, layer_ms, step_ms);

    const char *phase_name[3] = {"vision", "prefill", "decode"};
    unsigned seed = 7;
    for (int phase = 0; phase < 3; phase++) {
        double worst = 0, sum = 0;
        for (int r = 0; r < repeats; r++) {
            trial t = {0};
            if (llava_engine_submit(e, &req, &t.id, &err) != LLAVA_OK) return 1;
            double start = wait_running(e), at;
            if (phase == 0) {
                at = start + uniform(&seed, 0.1, 0.9) * image_ms;
            } else if (phase == 1) {
                at = start + image_ms + uniform(&seed, 0.1, 0.9) * prefill_ms;
            } else {
                /* some tokens in, then somewhere inside a step */
                pump(e, &t, llava_now_ms() + 600000, 2 + rand_r(&seed) % 3);
                at = t.last_token_at + uniform(&seed, 0.05, 0.95) * step_ms;
            }
            if (pump(e, &t, at, 0)) {
                printf("  %s trial %d: ended before the cancel\n", phase_name[phase], r);
                continue;
            }
            double c0 = llava_now_ms();
            llava_engine_cancel(e, t.id);
            while (!pump(e, &t, llava_now_ms() + 1000, 0)) {
            }
            double lat = t.ended_at - c0;
            if (t.end != LLAVA_EVENT_CANCELLED) {
                printf("  %s trial %d: ended with %d, not CANCELLED\n", phase_name[phase], r, t.end);
                continue;
            }
            worst = lat > worst ? lat : worst;
            sum += lat;
            printf("  %-7s trial %d: cancel at +%.0f ms into the request -> CANCELLED after %.1f ms "
                   "(%d tokens streamed)\n",
                   phase_name[phase], r, c0 - start, lat, t.tokens);
        }
        double unit = phase == 0 ? image_ms / layers : phase == 1 ? layer_ms : step_ms;
        printf("%-7s cancel to CANCELLED: mean %.1f ms, worst %.1f ms; one %s: %.1f ms\n",
               phase_name[phase], sum / repeats, worst,
               phase == 0 ? "vision layer" : phase == 1 ? "decoder layer" : "decode step", unit);
    }
    llava_engine_close(e, LLAVA_CLOSE_ABORT);
    llava_engine_free(e);
    return 0;
}
