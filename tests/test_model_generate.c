/* The model's request path end to end on the tiny-f32 fixture: preparing from a template and an
 * image file gives the reference tokens; bad requests fail with clear errors and leave the model
 * usable; stop strings, caller stop, cancel, max tokens, seeded sampling; no allocation in the
 * token loop; the newer tensor layout; missing and mis-shaped tensors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include "io/safetensors.h"
#include "model/model.h"
#include "text/tokenizer.h"

#define FIXTURE LLAVA_FIXTURES "/tiny-f32"
static const int32_t REF_IDS[16] = {26992, 7276,  25007, 16534, 6083,  8904, 31411, 6444,
                                    5982,  18715, 19306, 21806, 13851, 30010, 29309, 9089};

/* ---- counting allocations (the whole process; not with sanitizers, which own malloc) ---- */
#ifndef LLAVA_SANITIZED
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static atomic_long n_allocs;
void *malloc(size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    atomic_fetch_add(&n_allocs, 1);
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t al, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __libc_memalign(al, n);
}
int posix_memalign(void **out, size_t al, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    *out = __libc_memalign(al, n);
    return *out ? 0 : 12;
}
#endif

typedef struct collected {
    int32_t ids[256];
    int n;
    char text[4096];
    size_t len;
    int stop_after;       /* on_token returns 1 after this many tokens (0: never) */
    int cancel_after;     /* the cancel check says yes from this poll on (0: never) */
    int polls;
    int flushes;
} collected;

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    collected *c = user;
    if (id >= 0) c->ids[c->n++] = id;
    else c->flushes++;
    memcpy(c->text + c->len, text, len);
    c->len += len;
    c->text[c->len] = '\0';
    return c->stop_after && c->n >= c->stop_after;
}

static int is_cancelled(void *user) {
    collected *c = user;
    return c->cancel_after && ++c->polls >= c->cancel_after;
}

static llava_model *load(const char *dir) {
    llava_model_options opt;
    llava_model_options_default(&opt);
    opt.n_threads = 2;
    llava_model *m = NULL;
    llava_error err;
    if (llava_model_load(dir, &opt, &m, &err) != LLAVA_OK) fail_msg("%s", err.message);
    return m;
}

static llava_status prepare(llava_model *m, const char *prompt, int n_msg_images, const char **paths,
                            int n_images, const char *tmpl, int max_tokens, llava_prepared **p,
                            llava_error *err) {
    template_message msg = {"user", prompt, n_msg_images};
    llava_image_input in[4];
    memset(in, 0, sizeof in);
    for (int i = 0; i < n_images; i++) in[i].path = paths[i];
    llava_prepare_options o = {.template_name = tmpl, .max_tokens = max_tokens};
    return llava_prepare(m, &msg, 1, in, n_images, &o, p, err);
}

static llava_status run(llava_session *s, const llava_prepared *p,
                        const llava_generate_params *gp, collected *c, llava_generate_result *r) {
    llava_callbacks cb = {.user = c, .on_token = on_token, .cancelled = is_cancelled};
    llava_error err;
#if defined(__x86_64__)
    unsigned csr = _mm_getcsr();
#endif
    llava_status st = llava_generate(s, p, gp, &cb, r, &err);
    if (st != LLAVA_OK) print_message("generate: %s\n", err.message);
#if defined(__x86_64__)
    /* the model computes with subnormals flushed, then gives the caller its own mode back (the
     * low six bits are sticky exception flags, which arithmetic sets) */
    assert_int_equal(_mm_getcsr() & ~0x3fu, csr & ~0x3fu);
#endif
    return st;
}

static const char *IMAGE[] = {FIXTURE "/image.png", FIXTURE "/image.png"};

static void expect_reference(llava_model *m, llava_session *s) {
    llava_prepared *p = NULL;
    llava_error err;
    if (prepare(m, "What is shown in this image?", 1, IMAGE, 1, NULL, 16, &p, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_string_equal(p->prompt, "USER: <image>\nWhat is shown in this image? ASSISTANT:");
    assert_int_equal(p->n_ids, 20);
    assert_int_equal(p->n_positions, 35);
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    collected c = {0};
    llava_generate_result r;
    assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_OK);
    assert_int_equal(c.n, 16);
    assert_memory_equal(c.ids, REF_IDS, sizeof REF_IDS);
    assert_int_equal(r.finish_reason, LLAVA_FINISH_LENGTH);
    assert_int_equal(r.prompt_tokens, 35);
    assert_int_equal(r.completion_tokens, 16);
    llava_prepared_free(p);
}

static void test_bad_requests(void **state) {
    (void)state;
    llava_model *m = load(FIXTURE "/model");
    llava_session *s = NULL;
    llava_error err;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    llava_prepared *p = NULL;

    /* a marker without an image */
    assert_int_equal(prepare(m, "<image>\nWhat?", 0, NULL, 0, NULL, 16, &p, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    assert_null(p);
    assert_non_null(strstr(err.message, "1 <image> marker but 0 images"));
    /* an image without a marker (raw mode places none) */
    template_message raw = {"user", "no marker here", 0};
    llava_image_input one = {.path = IMAGE[0]};
    llava_prepare_options ro = {.raw = true, .max_tokens = 4};
    assert_int_equal(llava_prepare(m, &raw, 1, &one, 1, &ro, &p, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "0 <image> markers but 1 image was given"));
    /* two images, one marker */
    assert_int_equal(prepare(m, "<image> twice?", 0, IMAGE, 2, NULL, 16, &p, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    /* an unreadable image file and undecodable bytes */
    const char *missing[] = {"/nonexistent/cat.jpg"};
    assert_int_not_equal(prepare(m, "What?", 1, missing, 1, NULL, 16, &p, &err), LLAVA_OK);
    assert_non_null(strstr(err.message, "/nonexistent/cat.jpg"));
    assert_non_null(strstr(err.message, "image 0"));
    template_message msg = {"user", "What?", 1};
    llava_image_input junk = {.bytes = "this is not an image", .len = 20};
    llava_prepare_options po = {.max_tokens = 16};
    assert_int_not_equal(llava_prepare(m, &msg, 1, &junk, 1, &po, &p, &err), LLAVA_OK);
    assert_non_null(strstr(err.message, "image 0"));
    /* prompt + max tokens beyond the context (4096) */
    assert_int_equal(prepare(m, "What?", 1, IMAGE, 1, NULL, 4070, &p, &err), LLAVA_ERR_LIMIT);
    assert_non_null(strstr(err.message, "prompt too long"));
    assert_non_null(strstr(err.message, "4096"));
    /* an unknown template */
    assert_int_equal(prepare(m, "What?", 1, IMAGE, 1, "alpaca", 16, &p, &err),
                     LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "unknown template 'alpaca'"));
    /* a prepared request tampered with: caught before any work */
    assert_int_equal(prepare(m, "What?", 1, IMAGE, 1, NULL, 16, &p, &err), LLAVA_OK);
    p->ids[3] = 999999;
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    collected c = {0};
    llava_generate_result r;
    assert_int_equal(llava_generate(s, p, &gp, NULL, &r, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "outside the vocabulary"));
    p->ids[3] = 1;
    gp.max_tokens = 5000; /* more than the context allows */
    assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_ERR_LIMIT);
    llava_prepared_free(p);

    /* after all that, the same model and session answer correctly */
    expect_reference(m, s);
    llava_session_free(s);
    llava_model_free(m);
}

static void test_stops_and_cancel(void **state) {
    (void)state;
    llava_model *m = load(FIXTURE "/model");
    llava_session *s = NULL;
    llava_error err;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    llava_prepared *p = NULL;
    assert_int_equal(prepare(m, "What is shown in this image?", 1, IMAGE, 1, NULL, 16, &p, &err),
                     LLAVA_OK);
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    llava_generate_result r;
    collected full = {0};
    assert_int_equal(run(s, p, &gp, &full, &r), LLAVA_OK);
    assert_true(full.len > 12);

    /* a stop string from the middle of the text: output ends right before it */
    char stop[8];
    memcpy(stop, full.text + full.len / 2, 5);
    stop[5] = '\0';
    size_t at = (size_t)(strstr(full.text, stop) - full.text);
    const char *stops[] = {"\x01never", stop};
    gp.stop = stops;
    gp.n_stop = 2;
    collected c = {0};
    assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_OK);
    assert_int_equal(r.finish_reason, LLAVA_FINISH_STOP);
    assert_int_equal(c.len, at);
    assert_memory_equal(c.text, full.text, at);
    assert_int_equal(c.flushes, 0);

    /* a stop string that only begins like the text: held back, then released at the end */
    char near[16];
    snprintf(near, sizeof near, "%.3s\x02", full.text + full.len - 3);
    const char *near_stops[] = {near};
    gp.stop = near_stops;
    gp.n_stop = 1;
    memset(&c, 0, sizeof c);
    assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_OK);
    assert_int_equal(r.finish_reason, LLAVA_FINISH_LENGTH);
    assert_string_equal(c.text, full.text);
    assert_int_equal(c.flushes, 1);
    gp.n_stop = 0;

    /* the caller stops after 3 tokens */
    memset(&c, 0, sizeof c);
    c.stop_after = 3;
    assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_OK);
    assert_int_equal(r.finish_reason, LLAVA_FINISH_STOP);
    assert_int_equal(c.n, 3);
    assert_memory_equal(c.ids, full.ids, 3 * sizeof(int32_t));

    /* cancel: in the vision tower (first poll), in the prompt, and in the token loop */
    for (int when = 1; when <= 8; when++) {
        memset(&c, 0, sizeof c);
        c.cancel_after = when;
        assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_OK);
        assert_int_equal(r.finish_reason, LLAVA_FINISH_CANCELLED);
        assert_true(c.n < 8);
    }

    /* max tokens */
    gp.max_tokens = 4;
    memset(&c, 0, sizeof c);
    assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_OK);
    assert_int_equal(r.finish_reason, LLAVA_FINISH_LENGTH);
    assert_int_equal(c.n, 4);
    assert_memory_equal(c.ids, full.ids, 4 * sizeof(int32_t));
    llava_prepared_free(p);

    expect_reference(m, s);
    llava_session_free(s);
    llava_model_free(m);
}

static void test_sampling_seed(void **state) {
    (void)state;
    llava_model *m = load(FIXTURE "/model");
    llava_session *s = NULL;
    llava_error err;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    llava_prepared *p = NULL;
    assert_int_equal(prepare(m, "What is shown in this image?", 1, IMAGE, 1, NULL, 24, &p, &err),
                     LLAVA_OK);
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    gp.sampling.temperature = 1.5f;
    gp.sampling.top_k = 100;
    gp.sampling.top_p = 0.95f;
    gp.sampling.seed = 1234;
    gp.ignore_eos = true;
    llava_generate_result r;
    collected a = {0}, b = {0}, c = {0};
    assert_int_equal(run(s, p, &gp, &a, &r), LLAVA_OK);
    assert_int_equal(run(s, p, &gp, &b, &r), LLAVA_OK);
    gp.sampling.seed = 1235;
    assert_int_equal(run(s, p, &gp, &c, &r), LLAVA_OK);
    assert_int_equal(a.n, 24);
    assert_memory_equal(a.ids, b.ids, sizeof a.ids);
    assert_memory_not_equal(a.ids, c.ids, sizeof a.ids);
    assert_memory_not_equal(a.ids, REF_IDS, sizeof REF_IDS);
    llava_prepared_free(p);
    llava_session_free(s);
    llava_model_free(m);
}

/* small-f16 pads its vocabulary to 32064 while the tokenizer has 32002 ids: sampling may pick a
 * padding id, which must release no text (as Hugging Face decodes it) instead of failing. */
typedef struct padded_count {
    int tokens, padded;
} padded_count;

static int count_padded(void *user, int32_t id, const char *text, size_t len) {
    padded_count *c = user;
    if (id >= 0) c->tokens++;
    if (id >= 32002) {
        c->padded++;
        assert_int_equal(len, 0);
    }
    (void)text;
    return 0;
}

static void test_padded_vocabulary_ids(void **state) {
    (void)state;
    llava_model *m = load(LLAVA_FIXTURES "/small-f16/model");
    llava_session *s = NULL;
    llava_error err;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    const char *img[] = {LLAVA_FIXTURES "/small-f16/image.png"};
    llava_prepared *p = NULL;
    assert_int_equal(prepare(m, "What is unusual about this image?", 1, img, 1, NULL, 1500, &p, &err),
                     LLAVA_OK);
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    gp.sampling.temperature = 1000.0f; /* about uniform over the 32064 logits */
    gp.sampling.seed = 7;
    gp.ignore_eos = true;
    padded_count c = {0};
    llava_callbacks cb = {.user = &c, .on_token = count_padded};
    llava_generate_result r;
    assert_int_equal(llava_generate(s, p, &gp, &cb, &r, &err), LLAVA_OK);
    assert_int_equal(r.finish_reason, LLAVA_FINISH_LENGTH);
    assert_int_equal(c.tokens, 1500);
    assert_true(c.padded > 0); /* the seed picks some: the case is exercised */
    llava_prepared_free(p);
    llava_session_free(s);
    llava_model_free(m);
}

#ifndef LLAVA_SANITIZED
/* Allocations of one request with max_tokens n (after a warm-up that sized every buffer). */
static long allocations(llava_session *s, const llava_prepared *p, int n, collected *c) {
    llava_generate_params gp;
    llava_generate_params_default(&gp);
    gp.max_tokens = n;
    gp.ignore_eos = true;
    const char *stops[] = {"zzzz"};
    gp.stop = stops;
    gp.n_stop = 1;
    memset(c, 0, sizeof *c);
    llava_generate_result r;
    long before = atomic_load(&n_allocs);
    assert_int_equal(run(s, p, &gp, c, &r), LLAVA_OK);
    long used = atomic_load(&n_allocs) - before;
    assert_int_equal(c->n, n);
    return used;
}

/* Allocations the streaming detokenizer itself makes for these ids (the text layer's share of
 * the token loop), replayed the way a session uses its stream: one stream, reset between runs. */
static long stream_allocations(tokenizer_stream *st, const int32_t *ids, int n) {
    tokenizer_text t = {0};
    t.data = malloc(4096);
    t.cap = 4096;
    long before = atomic_load(&n_allocs);
    for (int i = 0; i < n; i++) {
        t.len = 0;
        assert_int_equal(tokenizer_stream_push(st, ids[i], &t, NULL), LLAVA_OK);
    }
    t.len = 0;
    assert_int_equal(tokenizer_stream_finish(st, &t, NULL), LLAVA_OK);
    long used = atomic_load(&n_allocs) - before;
    tokenizer_text_free(&t);
    return used;
}
#endif

static void test_no_allocation_per_token(void **state) {
    (void)state;
#ifdef LLAVA_SANITIZED
    skip(); /* the sanitizers own malloc */
#else
    llava_model *m = load(FIXTURE "/model");
    llava_session *s = NULL;
    llava_error err;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    llava_prepared *p = NULL;
    assert_int_equal(prepare(m, "What is shown in this image?", 1, IMAGE, 1, NULL, 64, &p, &err),
                     LLAVA_OK);
    static collected warm, few_ids, many_ids;
    allocations(s, p, 64, &warm); /* warm-up: the session grows to this request */
    long few = allocations(s, p, 2, &few_ids), many = allocations(s, p, 64, &many_ids);

    tokenizer *tok = NULL;
    assert_int_equal(tokenizer_load(FIXTURE "/model", &tok, &err), LLAVA_OK);
    tokenizer_stream *st = tokenizer_stream_new(tok, TOKENIZER_SKIP_SPECIAL);
    stream_allocations(st, warm.ids, warm.n);
    long text_few = stream_allocations(st, few_ids.ids, few_ids.n);
    long text_many = stream_allocations(st, many_ids.ids, many_ids.n);
    print_message("allocations: %ld for 2 tokens, %ld for 64 tokens; of which the detokenizer "
                  "%ld and %ld\n", few, many, text_few, text_many);
    /* the 62 extra tokens cost no allocation: the stream works in buffers sized when it is made */
    assert_int_equal(many, few);
    assert_int_equal(text_few, 0);
    assert_int_equal(text_many, 0);
    tokenizer_stream_free(st);
    tokenizer_free(tok);
    llava_prepared_free(p);
    llava_session_free(s);
    llava_model_free(m);
#endif
}

/* ---- checkpoints rewritten: new layout, a tensor missing, a tensor mis-shaped ---- */

typedef enum { REWRITE_NEW_LAYOUT, REWRITE_DROP, REWRITE_RESHAPE } rewrite;

static void write_variant(const char *dir, rewrite how, const char *victim) {
    static const char *files[] = {"config.json", "generation_config.json",
                                  "preprocessor_config.json", "tokenizer.json",
                                  "tokenizer_config.json", "special_tokens_map.json",
                                  "added_tokens.json", "chat_template.json"};
    char src[512], dst[512];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(src, sizeof src, "%s/model/%s", FIXTURE, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        char *real = realpath(src, NULL);
        if (!real) continue; /* optional files */
        assert_int_equal(symlink(real, dst), 0);
        free(real);
    }
    llava_error err;
    st_file *f = NULL;
    assert_int_equal(st_file_open(FIXTURE "/model/model.safetensors", &f, &err), LLAVA_OK);
    st_writer *w = st_writer_new();
    char names[512][160];
    for (size_t i = 0; i < st_file_count(f); i++) {
        const st_tensor *t = st_file_tensor(f, i);
        const char *name = t->name;
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (how == REWRITE_NEW_LAYOUT) {
            static const char *map[][2] = {{"language_model.model.", "model.language_model."},
                                           {"language_model.lm_head.", "lm_head."},
                                           {"vision_tower.", "model.vision_tower."},
                                           {"multi_modal_projector.", "model.multi_modal_projector."}};
            for (int k = 0; k < 4; k++)
                if (!strncmp(name, map[k][0], strlen(map[k][0]))) {
                    snprintf(names[i], sizeof names[i], "%s%s", map[k][1], name + strlen(map[k][0]));
                    name = names[i];
                    break;
                }
        } else if (!strcmp(name, victim)) {
            if (how == REWRITE_DROP) continue;
            shape[0] = t->shape[1]; /* a transposed matrix: same bytes, wrong shape */
            shape[1] = t->shape[0];
        }
        assert_int_equal(st_writer_add(w, name, t->dtype, t->ndim, shape, t->data, &err), LLAVA_OK);
    }
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    assert_int_equal(st_writer_save(w, dst, &err), LLAVA_OK);
    st_writer_free(w);
    st_file_close(f);
}

static void remove_dir(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_new_layout(void **state) {
    (void)state;
    char dir[] = "/tmp/llava-test-layout-XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_variant(dir, REWRITE_NEW_LAYOUT, NULL);
    llava_model *m = load(dir);
    llava_session *s = NULL;
    llava_error err;
    assert_int_equal(llava_session_create(m, &s, &err), LLAVA_OK);
    expect_reference(m, s);
    llava_session_free(s);
    llava_model_free(m);
    remove_dir(dir);
}

static void expect_load_error(rewrite how, const char *victim, const char *want1,
                              const char *want2) {
    char dir[] = "/tmp/llava-test-bad-XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_variant(dir, how, victim);
    llava_model *m = NULL;
    llava_error err;
    assert_int_equal(llava_model_load(dir, NULL, &m, &err), LLAVA_ERR_FORMAT);
    assert_null(m);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, want1));
    assert_non_null(strstr(err.message, want2));
    remove_dir(dir);
}

static void test_bad_checkpoints(void **state) {
    (void)state;
    expect_load_error(REWRITE_DROP, "language_model.model.layers.1.mlp.up_proj.weight",
                      "'language_model.model.layers.1.mlp.up_proj.weight' is missing",
                      "[172, 64]");
    expect_load_error(REWRITE_DROP, "multi_modal_projector.linear_2.bias",
                      "'multi_modal_projector.linear_2.bias' is missing", "[64]");
    expect_load_error(REWRITE_RESHAPE, "vision_tower.vision_model.encoder.layers.2.mlp.fc1.weight",
                      "has shape [64, 256]", "expected [256, 64]");
    llava_model *m = NULL;
    llava_error err;
    assert_int_equal(llava_model_load("/nonexistent/model", NULL, &m, &err), LLAVA_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/model"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_requests),  cmocka_unit_test(test_stops_and_cancel),
        cmocka_unit_test(test_sampling_seed), cmocka_unit_test(test_padded_vocabulary_ids),
        cmocka_unit_test(test_no_allocation_per_token),
        cmocka_unit_test(test_new_layout),    cmocka_unit_test(test_bad_checkpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
