/* How long the engine's caller-side calls take while the worker generates at full speed: one
 * thread calls submit, cancel and poll in turn N times (default 10,000) and reports each call's
 * latency distribution. The proof that no call waits for the worker is in the tail (p99.9, max).
 * The calls are spread out by a pause (-p microseconds, default 200), as an event loop's are, so
 * that they meet the worker in every phase of its work. A benchmark, not a test: figures depend
 * on the machine and its load.
 *
 *   engine_latency -m MODEL_DIR [-i IMAGE] [-n CALLS] [-t COMPUTE_THREADS] [-p PAUSE_US]
 */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llava.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
#define PCT(p) v[(size_t)fmin((double)n - 1, ceil((p) / 100.0 * (double)n) - 1)]
    printf("%-7s %6zu calls  mean %7.2f  p50 %7.2f  p99 %7.2f  p99.9 %8.2f  max %8.2f  (us)\n",
           name, n, sum / (double)n, PCT(50), PCT(99), PCT(99.9), v[n - 1]);
#undef PCT
}

typedef struct state {
    llava_engine *e;
    llava_request gen;        /* the long request that keeps the worker busy */
    llava_request_id gen_id;
    int gen_tokens, gens_done, ready, failed, closed;
} state;

static void handle(state *s, const llava_event *ev, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (ev[i].kind) {
        case LLAVA_EVENT_READY: s->ready = 1; break;
        case LLAVA_EVENT_LOAD_FAILED:
            fprintf(stderr, "engine_latency: %s\n", ev[i].text);
            s->failed = 1;
            break;
        case LLAVA_EVENT_TOKEN:
            if (ev[i].request == s->gen_id) s->gen_tokens++;
            break;
        case LLAVA_EVENT_DONE:
        case LLAVA_EVENT_ERROR:
        case LLAVA_EVENT_CANCELLED:
            if (ev[i].request == s->gen_id) {
                if (ev[i].kind == LLAVA_EVENT_ERROR) fprintf(stderr, "generator: %s\n", ev[i].text);
                s->gen_id = 0;
                s->gens_done++;
            }
            break;
        case LLAVA_EVENT_CLOSED: s->closed = 1; break;
        }
    }
}

static void wait_fd(llava_engine *e, int ms) {
    struct pollfd p = {.fd = llava_engine_fd(e), .events = POLLIN};
    poll(&p, 1, ms);
}

int main(int argc, char **argv) {
    const char *model = NULL, *image = NULL;
    int calls = 10000, threads = 0, pause_us = 200, opt;
    while ((opt = getopt(argc, argv, "m:i:n:t:p:")) != -1) {
        if (opt == 'm') model = optarg;
        else if (opt == 'i') image = optarg;
        else if (opt == 'n') calls = atoi(optarg);
        else if (opt == 't') threads = atoi(optarg);
        else if (opt == 'p') pause_us = atoi(optarg);
        else return 2;
    }
    if (!model || calls <= 0) {
        fprintf(stderr, "usage: engine_latency -m MODEL_DIR [-i IMAGE] [-n CALLS] [-t THREADS] "
                        "[-p PAUSE_US]\n");
        return 2;
    }
    if (threads <= 0) { /* leave a core to the calling thread */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 1 ? (int)cores - 1 : 1;
    }
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    cfg.model_dir = model;
    cfg.n_threads = threads;
    state s;
    memset(&s, 0, sizeof s);
    llava_error err;
    if (llava_engine_open(&cfg, &s.e, &err) != LLAVA_OK) {
        fprintf(stderr, "engine_latency: %s\n", err.message);
        return 1;
    }
    llava_event ev[64];
    while (!s.ready && !s.failed) {
        wait_fd(s.e, 1000);
        handle(&s, ev, llava_engine_poll(s.e, ev, 64));
    }
    if (s.failed) return 1;

    /* the generator: as long as the context allows, past end-of-sequence */
    llava_image img = {.path = image};
    memset(&s.gen, 0, sizeof s.gen);
    s.gen.prompt = image ? "USER: <image>\nDescribe the image in detail. ASSISTANT:"
                         : "USER: Tell me a long story. ASSISTANT:";
    s.gen.images = image ? &img : NULL;
    s.gen.n_images = image ? 1 : 0;
    s.gen.ignore_eos = true;
    s.gen.max_tokens = 0;
    if (llava_engine_submit(s.e, &s.gen, &s.gen_id, &err) != LLAVA_OK) {
        fprintf(stderr, "engine_latency: %s\n", err.message);
        return 1;
    }
    while (s.gen_tokens == 0) { /* measure only once it generates */
        wait_fd(s.e, 1000);
        handle(&s, ev, llava_engine_poll(s.e, ev, 64));
    }

    llava_request small;
    memset(&small, 0, sizeof small);
    small.prompt = "USER: hi ASSISTANT:";
    small.max_tokens = 4;
    double *t_submit = malloc((size_t)calls * sizeof(double));
    double *t_cancel = malloc((size_t)calls * sizeof(double));
    double *t_poll = malloc((size_t)calls * sizeof(double));
    if (!t_submit || !t_cancel || !t_poll) return 1;
    int busy = 0, tokens_before = s.gen_tokens;
    double start = now_us();
    for (int i = 0; i < calls; i++) {
        llava_request_id id = 0;
        double t0 = now_us();
        llava_status st = llava_engine_submit(s.e, &small, &id, &err);
        double t1 = now_us();
        if (st != LLAVA_OK) busy++;
        llava_engine_cancel(s.e, id);
        double t2 = now_us();
        size_t n = llava_engine_poll(s.e, ev, 64);
        double t3 = now_us();
        t_submit[i] = t1 - t0;
        t_cancel[i] = t2 - t1;
        t_poll[i] = t3 - t2;
        handle(&s, ev, n);
        if (!s.gen_id) llava_engine_submit(s.e, &s.gen, &s.gen_id, &err); /* keep it busy */
        if (pause_us > 0) usleep((useconds_t)pause_us);
    }
    double secs = (now_us() - start) / 1e6;
    int tokens = s.gen_tokens - tokens_before;

    printf("engine_latency: %d x (submit, cancel, poll) in %.3f s while the worker generated %d "
           "tokens (%.1f tokens/s, %d compute threads)%s\n",
           calls, secs, tokens, tokens / secs, threads, busy ? " -- some submits were busy" : "");
    printf("(submits refused: %d)\n", busy);
    report("submit", t_submit, (size_t)calls);
    report("cancel", t_cancel, (size_t)calls);
    report("poll", t_poll, (size_t)calls);

    llava_engine_close(s.e, LLAVA_CLOSE_ABORT);
    while (!s.closed) {
        wait_fd(s.e, 1000);
        handle(&s, ev, llava_engine_poll(s.e, ev, 64));
    }
    llava_engine_free(s.e);
    free(t_submit);
    free(t_cancel);
    free(t_poll);
    return 0;
}
