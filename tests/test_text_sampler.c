/* Sampler: greedy, seeded determinism, the distribution of draws, each filter (top-k, top-p,
 * min-p) and each penalty (repetition over prompt + output, presence, frequency). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "text/sampler.h"

#define V 8

static void fill(float *l, const double *p) {
    for (int i = 0; i < V; i++) l[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

static const double PROBS[V] = {0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02, 0.0};

static void count_draws(sampler_params *sp, int n, int *counts) {
    sampler *s = sampler_new(V);
    assert_non_null(s);
    sampler_reset(s, sp, NULL, 0);
    memset(counts, 0, V * sizeof *counts);
    float l[V];
    for (int i = 0; i < n; i++) {
        fill(l, PROBS);
        int32_t id = sampler_sample(s, l);
        assert_in_range(id, 0, V - 1);
        counts[id]++;
    }
    sampler_free(s);
}

static void test_greedy(void **state) {
    (void)state;
    sampler *s = sampler_new(V);
    sampler_params p;
    sampler_params_default(&p);
    sampler_reset(s, &p, NULL, 0);
    float l[V] = {0.1f, 3.0f, -2.0f, 3.0f, 1.0f, 0, 0, 0};
    assert_int_equal(sampler_sample(s, l), 1); /* the first of equal maxima, as torch.argmax */
    float m[V] = {-5, -4, -3, -2, -1, -0.5f, -9, -0.25f};
    assert_int_equal(sampler_sample(s, m), 7);
    sampler_free(s);
}

static void test_seed(void **state) {
    (void)state;
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 43 : 42;
        sampler *s = sampler_new(V);
        sampler_reset(s, &p, NULL, 0);
        int32_t *out = run == 0 ? a : run == 1 ? b : c;
        float l[V];
        for (int i = 0; i < 64; i++) {
            fill(l, PROBS);
            out[i] = sampler_sample(s, l);
        }
        sampler_free(s);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
}

static void test_uniform(void **state) {
    (void)state;
    sampler *s = sampler_new(4);
    sampler_params p;
    sampler_params_default(&p);
    p.seed = 7;
    sampler_reset(s, &p, NULL, 0);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = sampler_uniform(s);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
    }
    assert_true(fabs(sum / 100000 - 0.5) < 0.01);
    sampler_free(s);
}

static void test_distribution(void **state) {
    (void)state;
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.seed = 1;
    int counts[V];
    const int n = 40000;
    count_draws(&p, n, counts);
    for (int i = 0; i < V; i++) assert_true(fabs((double)counts[i] / n - PROBS[i]) < 0.01);
    assert_int_equal(counts[7], 0); /* probability 0 (logit -inf) is never drawn */

    /* temperature 0.5 squares and renormalises the probabilities */
    p.temperature = 0.5f;
    count_draws(&p, n, counts);
    double z = 0;
    for (int i = 0; i < V; i++) z += PROBS[i] * PROBS[i];
    for (int i = 0; i < V; i++)
        assert_true(fabs((double)counts[i] / n - PROBS[i] * PROBS[i] / z) < 0.01);
}

static void test_top_k(void **state) {
    (void)state;
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.top_k = 2;
    int counts[V];
    count_draws(&p, 20000, counts);
    for (int i = 2; i < V; i++) assert_int_equal(counts[i], 0);
    assert_true(fabs(counts[0] / 20000.0 - 0.4 / 0.65) < 0.015);
    p.top_k = 1;
    count_draws(&p, 1000, counts);
    assert_int_equal(counts[0], 1000);
}

static void test_top_p(void **state) {
    (void)state;
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.top_p = 0.7f; /* 0.4 + 0.25 = 0.65 < 0.7, so the third (0.15) is kept too */
    int counts[V];
    count_draws(&p, 20000, counts);
    assert_true(counts[2] > 0);
    for (int i = 3; i < V; i++) assert_int_equal(counts[i], 0);
    p.top_p = 0.3f;
    count_draws(&p, 1000, counts);
    assert_int_equal(counts[0], 1000);
}

static void test_min_p(void **state) {
    (void)state;
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.min_p = 0.3f; /* keeps p >= 0.12: ids 0, 1, 2 */
    int counts[V];
    count_draws(&p, 20000, counts);
    assert_true(counts[2] > 0);
    for (int i = 3; i < V; i++) assert_int_equal(counts[i], 0);
}

static void test_repetition(void **state) {
    (void)state;
    sampler *s = sampler_new(V);
    sampler_params p;
    sampler_params_default(&p);
    p.repetition_penalty = 1.25f;
    int32_t prompt[] = {0, 5, 99, -1}; /* out-of-range ids are ignored */
    sampler_reset(s, &p, prompt, 4);
    float l[V] = {2.0f, 1.7f, 0, 0, 0, -1.0f, -1.1f, 0};
    /* 2.0 / 1.25 = 1.6 < 1.7; -1 * 1.25 = -1.25 < -1.1 */
    assert_int_equal(sampler_sample(s, l), 1);
    assert_true(fabsf(l[0] - 1.6f) < 1e-6f);
    assert_true(fabsf(l[5] + 1.25f) < 1e-6f);
    assert_true(fabsf(l[6] + 1.1f) < 1e-6f);
    /* id 1 is now in the output: penalised on the next step */
    float m[V] = {0, 1.2f, 1.0f, 0, 0, 0, 0, 0};
    assert_int_equal(sampler_sample(s, m), 2);
    sampler_free(s);
}

static void test_presence_frequency(void **state) {
    (void)state;
    sampler *s = sampler_new(V);
    sampler_params p;
    sampler_params_default(&p);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    int32_t prompt[] = {3};
    sampler_reset(s, &p, prompt, 1); /* prompt ids are not penalised by presence/frequency */
    float a[V] = {0, 0, 0, 1.0f, 0, 0, 0, 0};
    assert_int_equal(sampler_sample(s, a), 3);
    float b[V] = {0, 0, 0, 1.0f, 0.3f, 0, 0, 0}; /* 3: 1 - 0.5 - 0.25 = 0.25 < 0.3 */
    assert_int_equal(sampler_sample(s, b), 4);
    assert_true(fabsf(b[3] - 0.25f) < 1e-6f);
    float c[V] = {0, 0, 0, 1.0f, 0.9f, 0, 0, 0}; /* 4: 0.9 - 0.75 = 0.15; 3: 0.25 */
    assert_int_equal(sampler_sample(s, c), 3);
    float d[V] = {0, 0, 0, 1.0f, 0.0f, 0.1f, 0, 0}; /* 3 twice: 1 - 0.5 - 0.5 = 0 < 0.1 */
    assert_int_equal(sampler_sample(s, d), 5);
    /* a reset forgets the history */
    sampler_reset(s, &p, NULL, 0);
    float e[V] = {0, 0, 0, 1.0f, 0.9f, 0, 0, 0};
    assert_int_equal(sampler_sample(s, e), 3);
    assert_true(e[3] == 1.0f);
    sampler_free(s);
}

static void test_bad_vocab(void **state) {
    (void)state;
    assert_null(sampler_new(0));
    assert_null(sampler_new(-3));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),     cmocka_unit_test(test_seed),
        cmocka_unit_test(test_uniform),    cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_top_k),      cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),      cmocka_unit_test(test_repetition),
        cmocka_unit_test(test_presence_frequency), cmocka_unit_test(test_bad_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
