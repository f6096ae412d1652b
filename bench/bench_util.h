/* What the benchmark programs share besides the project's clock (base/clock.h): an order for qsort. */
#ifndef LLAVA_BENCH_UTIL_H
#define LLAVA_BENCH_UTIL_H

/* Ascending order of doubles, for qsort. */
static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
