/* Choosing the next token from logits: greedy, or temperature with top-k, top-p and min-p
 * filtering, after repetition (HF), presence and frequency (OpenAI) penalties; a seeded PRNG of
 * its own so that the same seed gives the same tokens. All buffers are allocated once in
 * sampler_new; sampling never allocates. */
#ifndef LLAVA_TEXT_SAMPLER_H
#define LLAVA_TEXT_SAMPLER_H

#include <stdint.h>

typedef struct sampler_params {
    float temperature;         /* <= 0: greedy (argmax after penalties) */
    int top_k;                 /* <= 0: off */
    float top_p;               /* >= 1: off */
    float min_p;               /* <= 0: off; keeps p >= min_p * p_max */
    float repetition_penalty;  /* 1: off; HF: logit/r if > 0 else logit*r, over prompt + output */
    float presence_penalty;    /* 0: off; OpenAI: -= presence if the token was generated */
    float frequency_penalty;   /* 0: off; OpenAI: -= frequency * times generated */
    uint64_t seed;
} sampler_params;

/* Greedy, every filter and penalty off, seed 0. */
void sampler_params_default(sampler_params *p);

typedef struct sampler sampler;

/* vocab: number of logits. NULL on allocation failure. */
sampler *sampler_new(int vocab);
void sampler_free(sampler *s);

/* Starts a request: sets params, reseeds, clears the history and counts the prompt's ids (ids
 * outside [0, vocab) are ignored) for the repetition penalty. */
void sampler_reset(sampler *s, const sampler_params *p, const int32_t *prompt, int n_prompt);

/* Picks a token from logits[vocab] (modified in place by the penalties and temperature) and
 * records it in the history. */
int32_t sampler_sample(sampler *s, float *logits);

/* The PRNG (xoshiro256**), exposed for tests: uniform in [0, 1). */
double sampler_uniform(sampler *s);

#endif
