/* Counters and latency histograms of an engine: written by its threads with relaxed atomic adds,
 * read by any thread (a metrics endpoint) without a lock. */
#ifndef LLAVA_ENGINE_METRICS_H
#define LLAVA_ENGINE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "llava.h"

typedef struct eng_histogram {
    atomic_uint_fast64_t counts[LLAVA_HISTOGRAM_BUCKETS];
    atomic_uint_fast64_t sum_us; /* microseconds: an integer sum can be added atomically */
} eng_histogram;

typedef struct eng_metrics {
    atomic_uint_fast64_t queue_depth, running;
    atomic_uint_fast64_t submitted, rejected_busy, rejected_invalid;
    atomic_uint_fast64_t done_stop, done_length, cancelled, failed;
    atomic_uint_fast64_t prompt_tokens, completion_tokens, images;
    eng_histogram ttft, per_token, image_encode;
} eng_metrics;

void eng_metrics_init(eng_metrics *m);
void eng_histogram_observe(eng_histogram *h, double ms);
void eng_metrics_read(const eng_metrics *m, llava_engine_metrics *out);

static inline void eng_count(atomic_uint_fast64_t *c, uint64_t n) {
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}
static inline void eng_uncount(atomic_uint_fast64_t *c, uint64_t n) {
    atomic_fetch_sub_explicit(c, n, memory_order_relaxed);
}

#endif
