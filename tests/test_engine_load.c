/* Loading through the engine: READY for a good checkpoint, LOAD_FAILED with a message naming the
 * file and the fault for a missing folder, a corrupt safetensors file and a bad config.json;
 * requests queued before a failed load each get an ERROR with that message; lazy loading; close
 * while loading; argument checks of open. A FIFO standing in for a shard holds the loader inside
 * open(2) until the test lets it go, which makes "queued while loading" deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_engine_util.h"

#define WAIT_MS 30000

static void expect_load_failure(const char *dir, llava_status code, const char *want1,
                                const char *want2) {
    llava_error err;
    llava_engine *e = open_engine(dir, 4, &err);
    assert_non_null(e);
    event_log l;
    log_init(&l, 4);
    assert_int_equal(log_until(e, &l, until_loaded, NULL, WAIT_MS), 0);
    assert_int_equal(l.load_failed, 1);
    assert_int_equal(l.ready, 0);
    assert_int_equal(l.load_status, code);
    if (!strstr(l.load_message, want1) || (want2 && !strstr(l.load_message, want2)))
        fail_msg("load message '%s' lacks '%s' / '%s'", l.load_message, want1, want2 ? want2 : "");

    /* the state says the same, for health checks */
    llava_error le;
    assert_int_equal(llava_engine_state(e, &le), LLAVA_LOAD_FAILED);
    assert_int_equal(le.code, code);
    assert_string_equal(le.message, l.load_message);

    /* a request after the failure is refused at once with the load message */
    llava_request req = raw_request("hello", NULL, 0, 4);
    llava_request_id id = 7;
    assert_int_equal(llava_engine_submit(e, &req, &id, &err), LLAVA_ERR_STATE);
    assert_int_equal(id, 0);
    assert_non_null(strstr(err.message, want1));

    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    assert_int_equal(l.after_closed, 0);
    llava_engine_free(e);
    log_free(&l);
}

static void test_ready(void **state) {
    (void)state;
    llava_error err;
    llava_engine *e = open_engine(TINY_MODEL, 4, &err);
    assert_non_null(e);
    event_log l;
    log_init(&l, 4);
    assert_int_equal(log_until(e, &l, until_loaded, NULL, WAIT_MS), 0);
    if (l.load_failed) fail_msg("load failed: %s", l.load_message);
    assert_int_equal(l.ready, 1);
    assert_int_equal(llava_engine_state(e, NULL), LLAVA_LOAD_READY);
    llava_engine_metrics m;
    llava_engine_metrics_get(e, &m);
    assert_int_equal(m.state, LLAVA_LOAD_READY);
    assert_false(m.closing);
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    llava_engine_metrics_get(e, &m);
    assert_true(m.closing);
    assert_int_equal(l.ready, 1);
    assert_int_equal(l.closed, 1);
    llava_engine_free(e);
    log_free(&l);
}

static void test_missing_folder(void **state) {
    (void)state;
    expect_load_failure("/nonexistent/llava-model", LLAVA_ERR_IO, "/nonexistent/llava-model",
                        "No such file");
}

static void test_corrupt_safetensors(void **state) {
    (void)state;
    char *dir = copy_tiny_model(NULL);
    assert_non_null(dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t n = 0;
    char *data = read_all(path, &n);
    assert_non_null(data);
    /* a header length far beyond the file: what a truncated download looks like */
    uint64_t huge = (uint64_t)n * 4;
    memcpy(data, &huge, 8);
    assert_int_equal(write_all(path, data, n), 0);
    free(data);
    expect_load_failure(dir, LLAVA_ERR_FORMAT, "model.safetensors", NULL);

    /* cut in the middle of the tensor data */
    data = read_all(TINY_MODEL "/model.safetensors", &n);
    assert_non_null(data);
    assert_int_equal(write_all(path, data, n / 2), 0);
    free(data);
    expect_load_failure(dir, LLAVA_ERR_FORMAT, "model.safetensors", NULL);
    remove_dir(dir);
}

static void test_bad_config(void **state) {
    (void)state;
    char *dir = copy_tiny_model(NULL);
    assert_non_null(dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *broken = "{\"model_type\": \"llava\", \"text_config\": {";
    assert_int_equal(write_all(path, broken, strlen(broken)), 0);
    expect_load_failure(dir, LLAVA_ERR_FORMAT, "config.json", NULL);
    remove_dir(dir);

    dir = copy_tiny_model("config.json");
    assert_non_null(dir);
    expect_load_failure(dir, LLAVA_ERR_IO, "config.json", NULL);
    remove_dir(dir);
}

static void test_queued_before_failure(void **state) {
    (void)state;
    char fifo[1200];
    char *dir = fifo_model(fifo, sizeof fifo);
    assert_non_null(dir);
    llava_error err;
    llava_engine *e = open_engine(dir, 8, &err);
    assert_non_null(e);
    event_log l;
    log_init(&l, 8);
    llava_image img = {.path = TINY "/image.png"};
    llava_request req = raw_request(TINY_PROMPT, &img, 1, 4);
    llava_request_id ids[5];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(llava_engine_submit(e, &req, &ids[i], &err), LLAVA_OK);
        log_find(&l, ids[i], 1);
    }
    assert_int_equal(llava_engine_state(e, NULL), LLAVA_LOAD_LOADING);
    /* cancel while loading: at once, without waiting for the load */
    assert_int_equal(llava_engine_cancel(e, ids[4]), LLAVA_OK);
    assert_int_equal(log_until(e, &l, until_finished, &ids[4], WAIT_MS), 0);
    assert_int_equal(log_find(&l, ids[4], 0)->kind, LLAVA_EVENT_CANCELLED);
    assert_int_equal(l.load_failed, 0);

    assert_int_equal(release_fifo(fifo, WAIT_MS), 0);
    assert_int_equal(log_until(e, &l, until_loaded, NULL, WAIT_MS), 0);
    assert_int_equal(l.load_failed, 1);
    assert_non_null(strstr(l.load_message, "model-00001-of-00001.safetensors"));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(log_until(e, &l, until_finished, &ids[i], WAIT_MS), 0);
        req_record *r = log_find(&l, ids[i], 0);
        assert_int_equal(r->kind, LLAVA_EVENT_ERROR);
        assert_int_equal(r->terminals, 1);
        assert_int_equal(r->tokens, 0);
        assert_string_equal(r->message, l.load_message);
    }
    llava_engine_metrics m;
    llava_engine_metrics_get(e, &m);
    assert_int_equal(m.failed, 4);
    assert_int_equal(m.cancelled, 1);
    assert_int_equal(m.queue_depth, 0);
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    assert_int_equal(log_find(&l, ids[0], 0)->after_terminal, 0);
    llava_engine_free(e);
    log_free(&l);
    remove_dir(dir);
}

static void test_close_while_loading(void **state) {
    (void)state;
    char fifo[1200];
    char *dir = fifo_model(fifo, sizeof fifo);
    assert_non_null(dir);
    llava_error err;
    llava_request req = raw_request("hello", NULL, 0, 4);
    llava_request_id ids[3];

    /* drain: the requests keep the loader going; they get the load error, then CLOSED */
    llava_engine *e = open_engine(dir, 8, &err);
    assert_non_null(e);
    event_log l;
    log_init(&l, 8);
    for (int i = 0; i < 3; i++) assert_int_equal(llava_engine_submit(e, &req, &ids[i], &err), 0);
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(llava_engine_submit(e, &req, NULL, &err), LLAVA_ERR_STATE);
    assert_non_null(strstr(err.message, "closing"));
    assert_int_equal(release_fifo(fifo, WAIT_MS), 0);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    assert_int_equal(l.load_failed, 1);
    for (int i = 0; i < 3; i++) {
        req_record *r = log_find(&l, ids[i], 0);
        assert_int_equal(r->kind, LLAVA_EVENT_ERROR);
        assert_int_equal(r->terminals, 1);
    }
    llava_engine_free(e);
    log_free(&l);

    /* abort: the queued requests end at once, whether or not the load has begun; CLOSED comes
     * once the loader is done (let go here), or at once if it never started */
    e = open_engine(dir, 8, &err);
    assert_non_null(e);
    log_init(&l, 8);
    for (int i = 0; i < 3; i++) assert_int_equal(llava_engine_submit(e, &req, &ids[i], &err), 0);
    llava_engine_close(e, LLAVA_CLOSE_ABORT);
    llava_event ev[8];
    size_t n = llava_engine_poll(e, ev, 8);
    for (size_t i = 0; i < n; i++) log_event(&l, &ev[i]);
    for (int i = 0; i < 3; i++) {
        req_record *r = log_find(&l, ids[i], 0);
        assert_non_null(r);
        assert_int_equal(r->kind, LLAVA_EVENT_CANCELLED);
    }
    double end = now_ms() + WAIT_MS;
    while (!l.closed) {
        assert_true(now_ms() < end);
        int fd = open(fifo, O_WRONLY | O_NONBLOCK); /* lets a blocked loader go */
        if (fd >= 0) close(fd);
        log_until(e, &l, until_closed, NULL, 10);
    }
    assert_true(l.load_failed <= 1);
    assert_int_equal(l.ready, 0);
    llava_engine_free(e);
    log_free(&l);
    remove_dir(dir);
}

static void test_lazy(void **state) {
    (void)state;
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    cfg.model_dir = TINY_MODEL;
    cfg.n_threads = 1;
    cfg.lazy_load = true;
    llava_engine *e;
    llava_error err;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_OK);
    event_log l;
    log_init(&l, 4);
    /* nothing is loaded until a request comes */
    usleep(20000);
    assert_int_equal(llava_engine_state(e, NULL), LLAVA_LOAD_IDLE);
    assert_int_equal(llava_engine_poll(e, (llava_event[1]){0}, 1), 0);
    llava_request req = raw_request("USER: hello ASSISTANT:", NULL, 0, 2);
    llava_request_id id;
    assert_int_equal(llava_engine_submit(e, &req, &id, &err), LLAVA_OK);
    assert_int_equal(log_until(e, &l, until_finished, &id, WAIT_MS), 0);
    assert_int_equal(l.ready, 1);
    req_record *r = log_find(&l, id, 0);
    if (r->kind != LLAVA_EVENT_DONE) fail_msg("not done: %s", r->message);
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    llava_engine_free(e);
    log_free(&l);

    /* closed before any request: never loads */
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_OK);
    log_init(&l, 4);
    llava_engine_close(e, LLAVA_CLOSE_DRAIN);
    assert_int_equal(log_until(e, &l, until_closed, NULL, WAIT_MS), 0);
    assert_int_equal(l.ready + l.load_failed, 0);
    assert_int_equal(llava_engine_state(e, NULL), LLAVA_LOAD_IDLE);
    llava_engine_free(e);
    log_free(&l);
}

static void test_open_arguments(void **state) {
    (void)state;
    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    llava_engine *e = (llava_engine *)&cfg;
    llava_error err;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_null(e);
    assert_non_null(strstr(err.message, "model_dir"));
    cfg.model_dir = TINY_MODEL;
    cfg.prep_threads = 3;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "prep_threads"));
    cfg.prep_threads = 2;
    cfg.queue_capacity = 1 << 20;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "queue_capacity"));
    cfg.queue_capacity = 0;
    cfg.half_parts = 0x10;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "half_parts"));
    cfg.half_parts = LLAVA_HALF_VISION | LLAVA_HALF_PROJECTOR; /* opened below */
    cfg.quant = 3;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "quant"));
    cfg.quant = LLAVA_QUANT_LOAD_NONE;
    cfg.kv_cache = 2;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "kv_cache"));
    cfg.kv_cache = LLAVA_KV_CACHE_F16; /* opened below */
    cfg.n_ctx = -1;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_int_equal(llava_engine_open(NULL, &e, &err), LLAVA_ERR_INVALID_ARGUMENT);
    assert_int_equal(llava_engine_open(&cfg, NULL, &err), LLAVA_ERR_INVALID_ARGUMENT);
    /* free without close: aborts and joins */
    cfg.n_ctx = 0;
    assert_int_equal(llava_engine_open(&cfg, &e, &err), LLAVA_OK);
    llava_engine_free(e);
    llava_engine_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_missing_folder),
        cmocka_unit_test(test_corrupt_safetensors),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_queued_before_failure),
        cmocka_unit_test(test_close_while_loading),
        cmocka_unit_test(test_lazy),
        cmocka_unit_test(test_open_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
