/* The monotonic clock every timing of the project reads (phases, benchmarks, the server's logs):
 * immune to changes of the wall clock, origin arbitrary. */
#ifndef LLAVA_BASE_CLOCK_H
#define LLAVA_BASE_CLOCK_H

#include <time.h>

static inline double llava_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double llava_now_ms(void) { return 1e3 * llava_now_s(); }

#endif
