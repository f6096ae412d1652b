/* How long the engine's caller-side calls take while the worker generates at full speed: one
 * thread calls submit, cancel and poll in turn N times (default 10,000) and reports each call's
 * latency distribution. The proof that no call waits for the worker is in the tail (p99.9, max).
 * The calls are spread out by a pause (-p microseconds, default 200), as an event loop's are, so
 * that they meet the worker in every phase of its work. Each call is bracketed by the thread's
 * context-switch counts: a voluntary switch inside a call means it blocked (waited for another
 * thread), an involuntary one that the scheduler took the CPU away (a loaded machine), which
 * tells a slow call's cause. A benchmark, not a test: figures depend on the machine and its load.
 *
 *   engine_latency -m MODEL_DIR [-i IMAGE] [-n CALLS] [-t COMPUTE_THREADS] [-p PAUSE_US]
 */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "bench_util.h"
#include "llava.h"

/* One call's latency and whether the thread blocked or was preempted during it. */
typedef struct sample {
    double us;
    long blocked, preempted;
} sample;

static void switches(long *vol, long *invol) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    *vol = ru.ru_nvcsw;
    *invol = ru.ru_nivcsw;
}

static void report(const char *name, const sample *s, size_t n) {
    double *v = malloc(n * sizeof *v), *q = malloc(n * sizeof *q);
    if (!v || !q) exit(1);
    size_t nq = 0, blocked = 0, preempted = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = s[i].us;
        sum += v[i];
        blocked += s[i].blocked > 0;
        preempted += s[i].preempted > 0;
        if (!s[i].preempted) q[nq++] = s[i].us;
    }
    qsort(v, n, sizeof *v, cmp_double);
    qsort(q, nq, sizeof *q, cmp_double);
#define PCT(a, m, p) a[(size_t)fmin((double)(m) - 1, ceil((p) / 100.0 * (double)(m)) - 1)]
    printf("%-7s %6zu calls  mean %7.2f  p50 %7.2f  p99 %8.2f  p99.9 %8.2f  max %8.2f  (us)\n",
           name, n, sum / (double)n, PCT(v, n, 50), PCT(v, n, 99), PCT(v, n, 99.9), v[n - 1]);
    printf("        blocked in %zu calls, preempted in %zu; without the preempted ones: p99.9 "
           "%.2f  max %.2f (us)\n", blocked, preempted, nq ? PCT(q, nq, 99.9) : 0.0,
           nq ? q[nq - 1] : 0.0);
#undef PCT
    free(v);
    free(q);
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
    sample *t_submit = malloc((size_t)calls * sizeof(sample));
    sample *t_cancel = malloc((size_t)calls * sizeof(sample));
    sample *t_poll = malloc((size_t)calls * sizeof(sample));
    if (!t_submit || !t_cancel || !t_poll) return 1;
    int busy = 0, tokens_before = s.gen_tokens;
    double start = 1e3 * llava_now_ms();
    for (int i = 0; i < calls; i++) {
        llava_request_id id = 0;
        long v0, i0, v1, i1, v2, i2, v3, i3;
        switches(&v0, &i0);
        double t0 = 1e3 * llava_now_ms();
        llava_status st = llava_engine_submit(s.e, &small, &id, &err);
        double t1 = 1e3 * llava_now_ms();
        switches(&v1, &i1);
        if (st != LLAVA_OK) busy++;
        double t2 = 1e3 * llava_now_ms();
        llava_engine_cancel(s.e, id);
        double t3 = 1e3 * llava_now_ms();
        switches(&v2, &i2);
        double t4 = 1e3 * llava_now_ms();
        size_t n = llava_engine_poll(s.e, ev, 64);
        double t5 = 1e3 * llava_now_ms();
        switches(&v3, &i3);
        t_submit[i] = (sample){t1 - t0, v1 - v0, i1 - i0};
        t_cancel[i] = (sample){t3 - t2, v2 - v1, i2 - i1};
        t_poll[i] = (sample){t5 - t4, v3 - v2, i3 - i2};
        handle(&s, ev, n);
        if (!s.gen_id) llava_engine_submit(s.e, &s.gen, &s.gen_id, &err); /* keep it busy */
        if (pause_us > 0) usleep((useconds_t)pause_us);
    }
    double secs = (1e3 * llava_now_ms() - start) / 1e6;
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
