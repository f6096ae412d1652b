/* Next-token choice: penalties, then greedy or temperature -> top-k -> top-p -> min-p (the order
 * of transformers' logits warpers) and a draw from xoshiro256** seeded through splitmix64. */
#include "text/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct candidate {
    float logit;
    int32_t id;
} candidate;

struct sampler {
    int vocab;
    sampler_params p;
    uint64_t rng[4];
    uint8_t *in_prompt;   /* [vocab] 1 if the id occurs in the prompt */
    int32_t *generated;   /* [vocab] times the id was sampled in this request */
    candidate *cand;      /* [vocab] scratch for filtering */
};

void sampler_params_default(sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

sampler *sampler_new(int vocab) {
    if (vocab <= 0) return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->vocab = vocab;
    s->in_prompt = calloc((size_t)vocab, 1);
    s->generated = calloc((size_t)vocab, sizeof *s->generated);
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    if (!s->in_prompt || !s->generated || !s->cand) {
        sampler_free(s);
        return NULL;
    }
    sampler_params_default(&s->p);
    return s;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->in_prompt);
    free(s->generated);
    free(s->cand);
    free(s);
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t *st) {
    uint64_t result = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return result;
}

double sampler_uniform(sampler *s) {
    return (double)(xoshiro_next(s->rng) >> 11) * (1.0 / 9007199254740992.0); /* 53 bits */
}

void sampler_reset(sampler *s, const sampler_params *p, const int32_t *prompt, int n_prompt) {
    s->p = *p;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    memset(s->in_prompt, 0, (size_t)s->vocab);
    memset(s->generated, 0, (size_t)s->vocab * sizeof *s->generated);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] >= 0 && prompt[i] < s->vocab) s->in_prompt[prompt[i]] = 1;
}

static void apply_penalties(sampler *s, float *logits) {
    const sampler_params *p = &s->p;
    bool rep = p->repetition_penalty > 0.0f && p->repetition_penalty != 1.0f;
    bool pres = p->presence_penalty != 0.0f, freq = p->frequency_penalty != 0.0f;
    if (!rep && !pres && !freq) return;
    for (int i = 0; i < s->vocab; i++) {
        int n = s->generated[i];
        if (rep && (n || s->in_prompt[i]))
            logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty
                                      : logits[i] * p->repetition_penalty;
        if (n) logits[i] -= (pres ? p->presence_penalty : 0.0f) + (float)n * p->frequency_penalty;
    }
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i; /* first maximum, as torch.argmax */
    return best;
}

/* Descending by logit, ties by id so that the order (and the draw) never depends on qsort. */
static int cand_cmp(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Moves the k largest candidates to the front (unordered) in O(n) on average. */
static void select_top(candidate *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        candidate pivot = c[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (cand_cmp(&c[i], &pivot) < 0) i++;
            while (cand_cmp(&c[j], &pivot) > 0) j--;
            if (i <= j) {
                candidate t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

int32_t sampler_sample(sampler *s, float *logits) {
    const sampler_params *p = &s->p;
    apply_penalties(s, logits);
    int32_t id;
    if (p->temperature <= 0.0f) {
        id = argmax(logits, s->vocab);
    } else {
        int n = 0;
        for (int i = 0; i < s->vocab; i++) {
            if (isnan(logits[i]) || logits[i] == -INFINITY) continue;
            s->cand[n].logit = logits[i] / p->temperature;
            s->cand[n].id = i;
            n++;
        }
        if (n == 0) {
            id = argmax(logits, s->vocab);
            goto done;
        }
        if (p->top_k > 0 && p->top_k < n) {
            select_top(s->cand, n, p->top_k);
            n = p->top_k;
        }
        /* only top-p needs the survivors in order; the rest works on them unordered */
        bool top_p = p->top_p > 0.0f && p->top_p < 1.0f;
        if (top_p) qsort(s->cand, (size_t)n, sizeof *s->cand, cand_cmp);
        float mx = s->cand[0].logit;
        for (int i = 1; i < n; i++)
            if (s->cand[i].logit > mx) mx = s->cand[i].logit;
        /* softmax over the survivors, in place of the logits */
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            s->cand[i].logit = (float)exp((double)s->cand[i].logit - mx);
            sum += s->cand[i].logit;
        }
        for (int i = 0; i < n; i++) s->cand[i].logit = (float)(s->cand[i].logit / sum);
        if (top_p) { /* smallest prefix with mass >= top_p */
            double cum = 0.0;
            int keep = n;
            for (int i = 0; i < n; i++) {
                cum += s->cand[i].logit;
                if (cum >= p->top_p) {
                    keep = i + 1;
                    break;
                }
            }
            n = keep;
        }
        if (p->min_p > 0.0f) { /* keep p >= min_p * p_max, in their order */
            float pmax = 0.0f;
            for (int i = 0; i < n; i++)
                if (s->cand[i].logit > pmax) pmax = s->cand[i].logit;
            float floor_p = p->min_p * pmax;
            int keep = 0;
            for (int i = 0; i < n; i++)
                if (s->cand[i].logit >= floor_p) s->cand[keep++] = s->cand[i];
            n = keep;
        }
        double total = 0.0;
        for (int i = 0; i < n; i++) total += s->cand[i].logit;
        double r = sampler_uniform(s) * total, acc = 0.0;
        id = s->cand[n - 1].id;
        for (int i = 0; i < n; i++) {
            acc += s->cand[i].logit;
            if (r < acc) {
                id = s->cand[i].id;
                break;
            }
        }
    }
done:
    if (id >= 0 && id < s->vocab) s->generated[id]++;
    return id;
}
