/* Engine metrics: one bucket ladder (0.5 ms to 60 s) serves every histogram, from per-token
 * latency of a tiny model to the first token of a 7B model with an image on a small CPU. */
#include <string.h>

#include "engine/metrics.h"

static const double BOUNDS_MS[LLAVA_HISTOGRAM_BUCKETS - 1] = {
    0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000};

void eng_metrics_init(eng_metrics *m) {
    atomic_uint_fast64_t *all[] = {&m->queue_depth, &m->running, &m->submitted,
                                   &m->rejected_busy, &m->rejected_invalid, &m->done_stop,
                                   &m->done_length, &m->cancelled, &m->failed,
                                   &m->prompt_tokens, &m->completion_tokens, &m->images};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) atomic_init(all[i], 0);
    eng_histogram *h[] = {&m->ttft, &m->per_token, &m->image_encode};
    for (size_t k = 0; k < 3; k++) {
        for (int i = 0; i < LLAVA_HISTOGRAM_BUCKETS; i++) atomic_init(&h[k]->counts[i], 0);
        atomic_init(&h[k]->sum_us, 0);
    }
}

void eng_histogram_observe(eng_histogram *h, double ms) {
    if (!(ms >= 0)) ms = 0; /* a clock step backwards, or NaN */
    int i = 0;
    while (i < LLAVA_HISTOGRAM_BUCKETS - 1 && ms > BOUNDS_MS[i]) i++;
    eng_count(&h->counts[i], 1);
    eng_count(&h->sum_us, (uint64_t)(ms * 1000.0 + 0.5));
}

static uint64_t load(const atomic_uint_fast64_t *c) {
    return atomic_load_explicit((atomic_uint_fast64_t *)c, memory_order_relaxed);
}

static void read_histogram(const eng_histogram *h, llava_histogram *out) {
    memcpy(out->upper_ms, BOUNDS_MS, sizeof BOUNDS_MS);
    out->count = 0;
    for (int i = 0; i < LLAVA_HISTOGRAM_BUCKETS; i++) {
        out->counts[i] = load(&h->counts[i]);
        out->count += out->counts[i];
    }
    out->sum_ms = (double)load(&h->sum_us) / 1000.0;
}

void eng_metrics_read(const eng_metrics *m, llava_engine_metrics *out) {
    out->queue_depth = load(&m->queue_depth);
    out->running = load(&m->running);
    out->submitted = load(&m->submitted);
    out->rejected_busy = load(&m->rejected_busy);
    out->rejected_invalid = load(&m->rejected_invalid);
    out->done_stop = load(&m->done_stop);
    out->done_length = load(&m->done_length);
    out->cancelled = load(&m->cancelled);
    out->failed = load(&m->failed);
    out->prompt_tokens = load(&m->prompt_tokens);
    out->completion_tokens = load(&m->completion_tokens);
    out->images = load(&m->images);
    read_histogram(&m->ttft, &out->time_to_first_token);
    read_histogram(&m->per_token, &out->time_per_token);
    read_histogram(&m->image_encode, &out->image_encode);
}
