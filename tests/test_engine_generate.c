/* Requests through the engine on the tiny-f32 fixture: greedy output equals the reference ids
 * (raw prompt with an image file, a conversation with image bytes, the blocking calls); errors of
 * one request (bad image, too many <image> markers, too long) leave the worker serving the next;
 * cancel while running; stop strings; seeded sampling; a full queue; submit's checks; the event
 * fd's readiness; drain on close; metrics. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_engine_util.h"

#define WAIT_MS 60000

static llava_engine *ready_engine(event_log *l, int capacity) {
    llava_error err;
    llava_engine *e = open_engine(TINY_MODEL, capacity, &err);
    assert_non_null(e);
    log_init(l, 64);
    assert_int_equal(log_until(e, l, until_loaded, NULL, WAIT_MS), 0);
    if (l->load_failed) fail_msg("load failed: %s", l->load_message);
    return e;
}

static void close_engine(llava_engine *e, event_log *l) {
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(log_until(e, l, until_closed, NULL, WAIT_MS), 0);
    assert_int_equal(l->after_closed, 0);
    assert_int_equal(l->unknown, 0);
    llava_engine_free(e);
    log_free(l);
}

/* Submits and waits for the terminal event; returns the record. */
static req_record *run(llava_engine *e, event_log *l, const llava_request *req) {
    llava_error err;
    llava_request_id id;
    if (llava_engine_submit(e, req, &id, &err) != LLAVA_OK) fail_msg("submit: %s", err.message);
    assert_int_not_equal(id, 0);
    assert_int_equal(log_until(e, l, until_finished, &id, WAIT_MS), 0);
    req_record *r = log_find(l, id, 0);
    assert_int_equal(r->terminals, 1);
    return r;
}

static void expect_reference(const req_record *r) {
    if (r->kind != LLAVA_EVENT_DONE) fail_msg("ended with %d: %s", r->kind, r->message);
    assert_int_equal(r->reason, LLAVA_DONE_LENGTH);
    assert_int_equal(r->tokens, 16);
    assert_memory_equal(r->ids, TINY_IDS, sizeof TINY_IDS);
    assert_int_equal(r->usage.prompt_tokens, 35); /* 20 ids, the image id -> 16 patches */
    assert_int_equal(r->usage.completion_tokens, 16);
}

static void test_greedy_raw_prompt(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    llava_image img = {.path = TINY "/image.png"};
    llava_request req = raw_request(TINY_PROMPT, &img, 1, 16);
    req_record *r = run(e, &l, &req);
    expect_reference(r);
    assert_non_null(strstr(r->text, "constraint"));
    close_engine(e, &l);
}

static void test_conversation_with_bytes(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    size_t n = 0;
    char *png = read_all(TINY "/image.png", &n);
    assert_non_null(png);
    llava_image img = {.data = png, .size = n};
    llava_message msg = {.role = "user", .content = "What is shown in this image?",
                         .images = &img, .n_images = 1};
    llava_request req;
    memset(&req, 0, sizeof req);
    req.messages = &msg;
    req.n_messages = 1;
    req.template_name = "llava";
    req.max_tokens = 16;
    llava_request_id id;
    llava_error err;
    assert_int_equal(llava_engine_submit(e, &req, &id, &err), LLAVA_OK);
    /* submit copied everything: the caller's buffer can go at once */
    memset(png, 0, n);
    free(png);
    assert_int_equal(log_until(e, &l, until_finished, &id, WAIT_MS), 0);
    expect_reference(log_find(&l, id, 0));
    close_engine(e, &l);
}

static void test_bad_requests_do_not_stop_the_worker(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    llava_image good = {.path = TINY "/image.png"};
    llava_image bad = {.data = "\x89PNG\r\n\x1a\nnot really", .size = 18};
    llava_request req = raw_request(TINY_PROMPT, &bad, 1, 16);
    req_record *r = run(e, &l, &req);
    assert_int_equal(r->kind, LLAVA_EVENT_ERROR);
    assert_int_equal(r->tokens, 0);
    assert_non_null(strstr(r->message, "image 0"));

    llava_image two[2] = {good, good};
    req = raw_request("USER: <image><image>\n<image> hi ASSISTANT:", two, 2, 4);
    r = run(e, &l, &req);
    assert_int_equal(r->kind, LLAVA_EVENT_ERROR);
    assert_int_equal(r->status, LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(r->message, "3 <image> markers"));

    /* a message whose text has markers: its images must fill them exactly */
    llava_message msg = {.role = "user", .content = "<image> hi", .images = two, .n_images = 2};
    memset(&req, 0, sizeof req);
    req.messages = &msg;
    req.n_messages = 1;
    r = run(e, &l, &req);
    assert_int_equal(r->kind, LLAVA_EVENT_ERROR);
    assert_non_null(strstr(r->message, "1 <image> marker but 2 images"));

    req = raw_request(TINY_PROMPT, &good, 1, 1000000); /* beyond the context */
    r = run(e, &l, &req);
    assert_int_equal(r->kind, LLAVA_EVENT_ERROR);
    assert_int_equal(r->status, LLAVA_ERR_LIMIT);

    req = raw_request(TINY_PROMPT, &(llava_image){.path = "/nonexistent.png"}, 1, 4);
    r = run(e, &l, &req);
    assert_int_equal(r->kind, LLAVA_EVENT_ERROR);
    assert_non_null(strstr(r->message, "/nonexistent.png"));

    req = raw_request(TINY_PROMPT, &good, 1, 16);
    expect_reference(run(e, &l, &req));
    llava_engine_metrics m;
    llava_engine_metrics_get(e, &m);
    assert_int_equal(m.failed, 5);
    assert_int_equal(m.done_length, 1);
    close_engine(e, &l);
}

typedef struct check_case {
    llava_request req;
    const char *want; /* in the error message */
} check_case;

static void test_submit_checks(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    llava_error err;
    llava_image img = {.path = TINY "/image.png"};
    llava_message msg = {.role = "tool", .content = "hi"};
    llava_request req;
    check_case cases[9];
    int n = 0;
    memset(&req, 0, sizeof req);
    cases[n++] = (check_case){req, "neither messages nor prompt"};
    req.messages = &msg;
    req.n_messages = 1;
    cases[n++] = (check_case){req, "messages[0].role"};
    req.prompt = "x";
    cases[n++] = (check_case){req, "both prompt"};
    req = raw_request("x", &(llava_image){.size = 3}, 1, 4);
    cases[n++] = (check_case){req, "images[0]"};
    req = raw_request("x", &img, 1, 4);
    req.sampling.temperature = NAN;
    cases[n++] = (check_case){req, "sampling.temperature"};
    req = raw_request("x", &img, 1, -2);
    cases[n++] = (check_case){req, "max_tokens"};
    req = raw_request("x", &img, 1, 4);
    req.stop = (const char *const[]){"ok", ""};
    req.n_stop = 2;
    cases[n++] = (check_case){req, "stop[1]"};
    req = raw_request("x", &img, 1, 4);
    req.template_name = "alpaca";
    cases[n++] = (check_case){req, "template_name"};
    req.template_name = NULL;
    req.sampling.top_p = 1.5f;
    cases[n++] = (check_case){req, "sampling.top_p"};
    for (int i = 0; i < n; i++) {
        llava_request_id id = 1;
        assert_int_equal(llava_engine_submit(e, &cases[i].req, &id, &err),
                         LLAVA_ERR_INVALID_ARGUMENT);
        assert_int_equal(id, 0);
        if (!strstr(err.message, cases[i].want))
            fail_msg("case %d: '%s' lacks '%s'", i, err.message, cases[i].want);
    }
    assert_int_equal(llava_engine_submit(e, NULL, NULL, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_int_equal(llava_engine_cancel(e, 0), LLAVA_ERR_INVALID_ARGUMENT);
    assert_int_equal(llava_engine_cancel(e, 12345), LLAVA_ERR_STATE);
    llava_engine_metrics m;
    llava_engine_metrics_get(e, &m);
    assert_int_equal(m.rejected_invalid, (uint64_t)n);
    assert_int_equal(m.submitted, 0);
    close_engine(e, &l);
}

static void test_cancel_running(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    llava_image img = {.path = TINY "/image.png"};
    llava_request req = raw_request(TINY_PROMPT, &img, 1, 3000);
    req.ignore_eos = true;
    llava_request_id id;
    llava_error err;
    assert_int_equal(llava_engine_submit(e, &req, &id, &err), LLAVA_OK);
    /* wait for its first token, then cancel */
    llava_event ev[16];
    bool running = false;
    double end = now_ms() + WAIT_MS;
    while (!running && now_ms() < end) {
        struct pollfd p = {.fd = llava_engine_fd(e), .events = POLLIN};
        poll(&p, 1, 100);
        size_t n = llava_engine_poll(e, ev, 16);
        for (size_t i = 0; i < n; i++) {
            log_event(&l, &ev[i]);
            running |= ev[i].kind == LLAVA_EVENT_TOKEN;
        }
    }
    assert_true(running);
    assert_int_equal(llava_engine_cancel(e, id), LLAVA_OK);
    assert_int_equal(log_until(e, &l, until_finished, &id, WAIT_MS), 0);
    req_record *r = log_find(&l, id, 0);
    assert_int_equal(r->kind, LLAVA_EVENT_CANCELLED);
    assert_true(r->tokens < 3000);
    assert_int_equal(r->usage.completion_tokens >= r->tokens, 1);
    assert_int_equal(llava_engine_cancel(e, id), LLAVA_ERR_STATE); /* already over */

    /* the session is fine for the next request */
    req = raw_request(TINY_PROMPT, &img, 1, 16);
    expect_reference(run(e, &l, &req));
    close_engine(e, &l);
}

static void test_stop_string_and_seed(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    llava_image img = {.path = TINY "/image.png"};
    llava_request req = raw_request(TINY_PROMPT, &img, 1, 16);
    req_record *full = run(e, &l, &req);
    const char *cut = strstr(full->text, " Buffer");
    assert_non_null(cut);
    size_t before = (size_t)(cut - full->text);
    char want[2048];
    memcpy(want, full->text, before);
    want[before] = '\0';

    req.stop = (const char *const[]){" Buff"};
    req.n_stop = 1;
    req_record *r = run(e, &l, &req);
    assert_int_equal(r->kind, LLAVA_EVENT_DONE);
    assert_int_equal(r->reason, LLAVA_DONE_STOP);
    assert_string_equal(r->text, want);

    /* the same seed gives the same tokens, through the pool and the worker */
    req = raw_request(TINY_PROMPT, &img, 1, 12);
    req.sampling.temperature = 1.0f;
    req.sampling.seed = 1234;
    req_record *a = run(e, &l, &req);
    req_record *b = run(e, &l, &req);
    assert_int_equal(a->kind, LLAVA_EVENT_DONE);
    assert_int_equal(a->tokens, b->tokens);
    assert_memory_equal(a->ids, b->ids, (size_t)a->tokens * sizeof(int32_t));
    close_engine(e, &l);
}

static int fd_readable(llava_engine *e) {
    struct pollfd p = {.fd = llava_engine_fd(e), .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void test_fd_and_small_polls(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    assert_false(fd_readable(e));
    llava_image img = {.path = TINY "/image.png"};
    llava_request req = raw_request(TINY_PROMPT, &img, 1, 16);
    llava_request_id id;
    llava_error err;
    assert_int_equal(llava_engine_submit(e, &req, &id, &err), LLAVA_OK);
    /* one event per call: the fd stays readable while any is left */
    llava_event ev;
    double end = now_ms() + WAIT_MS;
    while (!until_finished(&l, &id)) {
        assert_true(now_ms() < end);
        struct pollfd p = {.fd = llava_engine_fd(e), .events = POLLIN};
        assert_int_equal(poll(&p, 1, WAIT_MS), 1);
        size_t n = llava_engine_poll(e, &ev, 1);
        if (n == 1) log_event(&l, &ev);
    }
    assert_int_equal(llava_engine_poll(e, &ev, 1), 0);
    assert_false(fd_readable(e));
    expect_reference(log_find(&l, id, 0));
    assert_int_equal(llava_engine_poll(e, NULL, 4), 0);
    close_engine(e, &l);
}

static void test_queue_full(void **state) {
    (void)state;
    char fifo[1200];
    char *dir = fifo_model(fifo, sizeof fifo); /* requests stay queued while it "loads" */
    assert_non_null(dir);
    llava_error err;
    llava_engine *e = open_engine(dir, 2, &err);
    assert_non_null(e);
    event_log l;
    log_init(&l, 8);
    llava_request req = raw_request("hello", NULL, 0, 4);
    llava_request_id a, b, c;
    assert_int_equal(llava_engine_submit(e, &req, &a, &err), LLAVA_OK);
    assert_int_equal(llava_engine_submit(e, &req, &b, &err), LLAVA_OK);
    assert_int_equal(llava_engine_submit(e, &req, &c, &err), LLAVA_ERR_BUSY);
    assert_non_null(strstr(err.message, "full"));
    assert_true(a < b);
    llava_engine_metrics m;
    llava_engine_metrics_get(e, &m);
    assert_int_equal(m.queue_depth, 2);
    assert_int_equal(m.rejected_busy, 1);
    assert_int_equal(llava_engine_cancel(e, a), LLAVA_OK);
    assert_int_equal(llava_engine_submit(e, &req, &c, &err), LLAVA_OK);
    assert_true(c > b);
    assert_int_equal(release_fifo(fifo, WAIT_MS), 0);
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    assert_int_equal(log_find(&l, a, 0)->kind, LLAVA_EVENT_CANCELLED);
    assert_int_equal(log_find(&l, b, 0)->kind, LLAVA_EVENT_ERROR);
    assert_int_equal(log_find(&l, c, 0)->kind, LLAVA_EVENT_ERROR);
    llava_engine_free(e);
    log_free(&l);
    remove_dir(dir);
}

static void test_drain_and_metrics(void **state) {
    (void)state;
    event_log l;
    llava_engine *e = ready_engine(&l, 8);
    llava_image img = {.path = TINY "/image.png"};
    llava_request req = raw_request(TINY_PROMPT, &img, 1, 16);
    llava_request_id ids[3];
    llava_error err;
    for (int i = 0; i < 3; i++) assert_int_equal(llava_engine_submit(e, &req, &ids[i], &err), 0);
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(llava_engine_submit(e, &req, NULL, &err), LLAVA_ERR_STATE);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    for (int i = 0; i < 3; i++) expect_reference(log_find(&l, ids[i], 0));
    llava_engine_metrics m;
    llava_engine_metrics_get(e, &m);
    assert_int_equal(m.submitted, 3);
    assert_int_equal(m.done_length, 3);
    assert_int_equal(m.queue_depth + m.running, 0);
    assert_int_equal(m.completion_tokens, 48);
    assert_int_equal(m.prompt_tokens, 3 * 35);
    assert_int_equal(m.images, 3);
    assert_int_equal(m.time_to_first_token.count, 3);
    assert_int_equal(m.time_per_token.count, 3 * 15);
    assert_int_equal(m.image_encode.count, 3);
    assert_true(m.time_to_first_token.sum_ms > 0);
    llava_engine_free(e);
    log_free(&l);
}

typedef struct collect {
    int32_t ids[64];
    int n, stop_after;
} collect;

static int collect_token(void *user, int32_t token, const char *text, size_t len) {
    collect *c = user;
    (void)text;
    (void)len;
    if (token >= 0 && c->n < 64) c->ids[c->n++] = token;
    return c->stop_after && c->n >= c->stop_after;
}

static void test_blocking_calls(void **state) {
    (void)state;
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    cfg.model_dir = TINY_MODEL;
    cfg.n_threads = 2;
    llava_image img = {.path = TINY "/image.png"};
    llava_request req = raw_request(TINY_PROMPT, &img, 1, 16);
    collect c = {.n = 0};
    llava_result res;
    llava_error err;
    if (llava_generate_simple(&cfg, &req, collect_token, &c, &res, &err) != LLAVA_OK)
        fail_msg("%s", err.message);
    assert_int_equal(res.reason, LLAVA_DONE_LENGTH);
    assert_int_equal(c.n, 16);
    assert_memory_equal(c.ids, TINY_IDS, sizeof TINY_IDS);
    assert_int_equal(res.usage.completion_tokens, 16);

    /* stopped by the callback: the request is cancelled */
    llava_engine *e;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_OK);
    req.max_tokens = 2000;
    req.ignore_eos = true;
    c = (collect){.stop_after = 3};
    assert_int_equal(llava_engine_run(e, &req, collect_token, &c, &res, &err), LLAVA_OK);
    assert_int_equal(res.reason, LLAVA_DONE_CANCELLED);
    assert_int_equal(c.n, 3);
    assert_memory_equal(c.ids, TINY_IDS, 3 * sizeof(int32_t));
    /* the same engine serves the next one */
    req.max_tokens = 16;
    req.ignore_eos = false;
    c = (collect){.n = 0};
    assert_int_equal(llava_engine_run(e, &req, collect_token, &c, &res, &err), LLAVA_OK);
    assert_memory_equal(c.ids, TINY_IDS, sizeof TINY_IDS);
    llava_engine_free(e);

    cfg.model_dir = "/nonexistent/model";
    assert_int_equal(llava_generate_simple(&cfg, &req, NULL, NULL, &res, &err), LLAVA_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/model"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_raw_prompt),
        cmocka_unit_test(test_conversation_with_bytes),
        cmocka_unit_test(test_bad_requests_do_not_stop_the_worker),
        cmocka_unit_test(test_submit_checks),
        cmocka_unit_test(test_cancel_running),
        cmocka_unit_test(test_stop_string_and_seed),
        cmocka_unit_test(test_fd_and_small_polls),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_drain_and_metrics),
        cmocka_unit_test(test_blocking_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
