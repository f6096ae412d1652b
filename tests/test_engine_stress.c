/* Many threads against one engine: 8 threads submit 2,000 requests (good ones with and without
 * an image, long ones, bad image bytes, too many <image> markers, malformed requests) from the
 * moment the engine opens, cancel some at once and hand others to a thread that cancels them
 * later, at whatever stage they are; the engine is closed (drain, then abort) in the middle.
 * Every accepted request must get exactly one terminal event and nothing after it; nothing
 * must hang. Meant to run under TSan and ASan/LSan as well (ctest -L engine). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_engine_util.h"

#define THREADS 8
#define PER_THREAD 250
#define CLOSE_DRAIN_AT 900
#define CLOSE_ABORT_AT 1400
#define WAIT_MS 120000
#define LATE_RING 256

typedef struct shared {
    llava_engine *e;
    const char *png;
    size_t png_len;
    atomic_int attempts;
    atomic_bool stop_canceller;
    atomic_bool drain_closed;
    atomic_int cancel_unexpected;
    /* ids handed to the canceller thread */
    pthread_mutex_t mu;
    llava_request_id late[LATE_RING];
    size_t n_late;
} shared;

typedef struct submitter {
    shared *s;
    unsigned seed;
    llava_request_id accepted[PER_THREAD];
    int n_accepted;
    int busy, refused_state, refused_invalid;
    char unexpected[600]; /* cmocka's checks belong to the main thread: failures are noted */
} submitter;

/* The close waits until requests have ended in every way, or until everything accepted so far
 * has ended (the other submitters wait for the close), because slow builds such as TSan's fall
 * far behind the submitters and the close should come in the middle of real work. */
static void wait_progress(shared *s) {
    double end = now_ms() + WAIT_MS / 2;
    llava_engine_metrics m;
    do {
        usleep(2000);
        llava_engine_metrics_get(s->e, &m);
    } while ((m.done_stop + m.done_length < 20 || m.failed < 3 || m.cancelled < 3) &&
             m.queue_depth + m.running > 0 && now_ms() < end);
}

static void *submit_main(void *arg) {
    submitter *t = arg;
    shared *s = t->s;
    llava_image png = {.data = s->png, .size = s->png_len};
    llava_image garbage = {.data = "\xff\xd8\xff\xe0 definitely not a JPEG", .size = 26};
    for (int i = 0; i < PER_THREAD; i++) {
        int attempt = atomic_fetch_add(&s->attempts, 1);
        if (attempt == CLOSE_DRAIN_AT) {
            wait_progress(s);
            llava_engine_close(s->e, LLAVA_CLOSE_DRAIN);
            atomic_store(&s->drain_closed, true);
        } else if (attempt > CLOSE_DRAIN_AT) {
            while (!atomic_load(&s->drain_closed)) usleep(1000); /* the close comes first */
        }
        if (attempt == CLOSE_ABORT_AT) llava_engine_close(s->e, LLAVA_CLOSE_ABORT);

        /* each thread's first three: a bad image, a good request and an immediate cancel, left
         * alone otherwise, so that every outcome occurs whatever the timing */
        int kind = i == 0 ? 70 : i == 1 ? 0 : (int)(rand_r(&t->seed) % 100);
        llava_request req = raw_request("USER: hi ASSISTANT:", NULL, 0, 1 + kind % 3);
        llava_message bad_msg = {.role = NULL, .content = "x"};
        if (kind < 45) {
            /* a short text request */
        } else if (kind < 60) {
            req = raw_request("USER: <image>\nWhat is it? ASSISTANT:", &png, 1, 2);
        } else if (kind < 68) {
            req.max_tokens = 40; /* long enough to be cancelled while running */
            req.ignore_eos = true;
        } else if (kind < 78) {
            req = raw_request("USER: <image>\nWhat is it? ASSISTANT:", &garbage, 1, 2);
        } else if (kind < 88) {
            req = raw_request("USER: <image><image>\nWhat is it? ASSISTANT:", &png, 1, 2);
        } else if (kind < 94) {
            req.sampling.temperature = 0.8f;
            req.sampling.seed = (uint64_t)kind;
        } else {
            memset(&req, 0, sizeof req);
            req.messages = &bad_msg;
            req.n_messages = 1;
        }
        llava_request_id id;
        llava_error err;
        llava_status st = llava_engine_submit(s->e, &req, &id, &err);
        if (st == LLAVA_ERR_BUSY) t->busy++;
        else if (st == LLAVA_ERR_STATE) t->refused_state++;
        else if (st == LLAVA_ERR_INVALID_ARGUMENT) t->refused_invalid++;
        else if (st != LLAVA_OK) snprintf(t->unexpected, sizeof t->unexpected, "submit: %s", err.message);
        if (st == LLAVA_OK) {
            t->accepted[t->n_accepted++] = id;
            int what = i == 2 ? 0 : i < 2 ? 99 : (int)(rand_r(&t->seed) % 100);
            if (what < 15) {
                llava_engine_cancel(s->e, id); /* mostly while still queued */
            } else if (what < 40) {
                pthread_mutex_lock(&s->mu);
                s->late[s->n_late++ % LATE_RING] = id;
                pthread_mutex_unlock(&s->mu);
            }
        }
        /* back off while the queue is full, so that most requests are accepted and found in
         * every stage rather than refused as busy */
        usleep(st == LLAVA_ERR_BUSY ? 4000 + rand_r(&t->seed) % 8000 : rand_r(&t->seed) % 1000);
    }
    return NULL;
}

/* Cancels ids handed over by the submitters a little later: preparing, running, or done. */
static void *cancel_main(void *arg) {
    shared *s = arg;
    unsigned seed = 99;
    while (!atomic_load(&s->stop_canceller)) {
        llava_request_id id = 0;
        pthread_mutex_lock(&s->mu);
        if (s->n_late > 0) id = s->late[rand_r(&seed) % (s->n_late < LATE_RING ? s->n_late : LATE_RING)];
        pthread_mutex_unlock(&s->mu);
        if (id) {
            llava_status st = llava_engine_cancel(s->e, id);
            if (st != LLAVA_OK && st != LLAVA_ERR_STATE) atomic_fetch_add(&s->cancel_unexpected, 1);
        }
        usleep(300 + rand_r(&seed) % 2000);
    }
    return NULL;
}

static void test_stress(void **state) {
    (void)state;
    shared s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    s.png = read_all(LLAVA_TEST_DATA "/images/pngsuite_basn2c08.png", &s.png_len);
    assert_non_null(s.png);

    llava_engine_config cfg;
    llava_engine_config_default(&cfg);
    cfg.model_dir = TINY_MODEL;
    cfg.n_threads = 1;
    cfg.prep_threads = 2;
    cfg.queue_capacity = 24;
    llava_error err;
    assert_int_equal(llava_engine_open(&cfg, &s.e, &err), LLAVA_OK);

    /* submitters start at once: the first requests wait for the load */
    submitter t[THREADS];
    pthread_t th[THREADS], canceller;
    for (int i = 0; i < THREADS; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].s = &s;
        t[i].seed = 1000u + (unsigned)i;
        assert_int_equal(pthread_create(&th[i], NULL, submit_main, &t[i]), 0);
    }
    assert_int_equal(pthread_create(&canceller, NULL, cancel_main, &s), 0);

    /* this thread is the event loop until CLOSED */
    event_log l;
    log_init(&l, THREADS * PER_THREAD);
    assert_int_equal(log_until(s.e, &l, until_closed, NULL, WAIT_MS), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    atomic_store(&s.stop_canceller, true);
    pthread_join(canceller, NULL);
    if (l.load_failed) fail_msg("load failed: %s", l.load_message);
    assert_int_equal(l.ready, 1);
    assert_int_equal(l.closed, 1);
    assert_int_equal(l.after_closed, 0);
    /* nothing more after CLOSED, even a little later */
    usleep(10000);
    llava_event ev[4];
    assert_int_equal(llava_engine_poll(s.e, ev, 4), 0);

    assert_int_equal(atomic_load(&s.cancel_unexpected), 0);
    for (int i = 0; i < THREADS; i++)
        if (t[i].unexpected[0]) fail_msg("thread %d: %s", i, t[i].unexpected);
    int accepted = 0, done = 0, cancelled = 0, errors = 0, busy = 0, state_refused = 0;
    for (int i = 0; i < THREADS; i++) {
        busy += t[i].busy;
        state_refused += t[i].refused_state;
        for (int k = 0; k < t[i].n_accepted; k++) {
            req_record *r = log_find(&l, t[i].accepted[k], 0);
            if (!r) fail_msg("request %llu: no event at all", (unsigned long long)t[i].accepted[k]);
            if (r->terminals != 1 || r->after_terminal != 0)
                fail_msg("request %llu: %d terminal events, %d events after the terminal one",
                         (unsigned long long)r->id, r->terminals, r->after_terminal);
            accepted++;
            done += r->kind == LLAVA_EVENT_DONE;
            cancelled += r->kind == LLAVA_EVENT_CANCELLED;
            errors += r->kind == LLAVA_EVENT_ERROR;
            if (r->kind == LLAVA_EVENT_ERROR && r->status != LLAVA_ERR_FORMAT &&
                r->status != LLAVA_ERR_INVALID_ARGUMENT)
                fail_msg("request %llu: unexpected error %d: %s", (unsigned long long)r->id,
                         r->status, r->message);
        }
    }
    /* no event for a request that was not accepted */
    size_t records = 0;
    for (size_t i = 0; i < l.cap; i++) records += l.recs[i].id != 0;
    assert_int_equal(records, (size_t)accepted);

    llava_engine_metrics m;
    llava_engine_metrics_get(s.e, &m);
    assert_int_equal(m.submitted, (uint64_t)accepted);
    assert_int_equal(m.done_stop + m.done_length, (uint64_t)done);
    assert_int_equal(m.cancelled, (uint64_t)cancelled);
    assert_int_equal(m.failed, (uint64_t)errors);
    assert_int_equal(m.queue_depth, 0);
    assert_int_equal(m.running, 0);
    assert_int_equal(m.rejected_busy, (uint64_t)busy);
    print_message("accepted %d: done %d, cancelled %d, errors %d; refused: busy %d, closing %d\n",
                  accepted, done, cancelled, errors, busy, state_refused);
    /* every path was taken */
    assert_true(done > 0 && cancelled > 0 && errors > 0 && state_refused > 0);

    llava_engine_free(s.e);
    log_free(&l);
    free((void *)s.png);
    pthread_mutex_destroy(&s.mu);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_stress)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
