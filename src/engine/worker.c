/* The engine's threads: the worker, which alone loads, runs and frees the model, and the
 * preprocessing pool, which turns requests into model input (llava_prepare) while the worker
 * generates. Both hand finished requests to the event channel; neither ever waits for a caller. */
#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "engine/internal.h"

/* ---- the model, behind checks that it is only touched by its owner ---- */

/* The model is not thread-safe: debug builds check that every call that uses its compute pool
 * or its caches runs on the worker, and that the pool's llava_prepare never does. */
#define ON_WORKER(e) assert(pthread_equal(pthread_self(), (e)->owner))
#define OFF_WORKER(e) assert(!pthread_equal(pthread_self(), (e)->owner))

static llava_status model_load(llava_engine *e, llava_model **m, llava_session **s,
                               llava_error *err) {
    ON_WORKER(e);
    *m = NULL;
    *s = NULL;
    struct stat sb;
    if (stat(e->model_dir, &sb) != 0)
        return llava_error_set(err, LLAVA_ERR_IO, "model folder %s: %s", e->model_dir,
                               strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return llava_error_set(err, LLAVA_ERR_IO, "model folder %s: not a folder", e->model_dir);
    llava_status st = llava_model_load(e->model_dir, &e->mopt, m, err);
    if (st != LLAVA_OK) return st;
    if ((st = llava_session_create(*m, s, err)) != LLAVA_OK) {
        llava_model_free(*m);
        *m = NULL;
    }
    return st;
}

static void model_free(llava_engine *e, llava_model *m, llava_session *s) {
    ON_WORKER(e);
    llava_session_free(s);
    llava_model_free(m);
}

static llava_status model_generate(llava_engine *e, llava_session *s, eng_request *r,
                                   const llava_callbacks *cb, llava_generate_result *res) {
    ON_WORKER(e);
    return llava_generate(s, r->prepared, &r->in->gen, cb, res, &r->err);
}

static llava_status model_prepare(llava_engine *e, const llava_model *m, eng_request *r) {
    OFF_WORKER(e);
    const eng_input *in = r->in;
    return llava_prepare(m, in->msgs, in->n_msgs, in->images, in->n_images, &in->popt,
                         &r->prepared, &r->err);
}

/* The engine's threads (and the compute threads the worker starts, which inherit it) run as
 * SCHED_BATCH: same share of the CPU, but waking one of them never preempts the thread that
 * woke it. Without it, on a loaded machine a submit that wakes the pool could lose its CPU for a
 * whole scheduling period (milliseconds) inside the call. Not fatal if refused. */
static void batch_scheduling(void) {
    struct sched_param sp = {.sched_priority = 0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
}

/* ---- the preprocessing pool ---- */

/* Ends a request that failed or was cancelled before running; frees its input first (outside
 * the lock: image bytes may be large). Called and returns with e->mu held. */
static void finish_early(llava_engine *e, eng_request *r, llava_event *ev) {
    pthread_mutex_unlock(&e->mu);
    eng_input_free(r->in);
    llava_prepared_free(r->prepared);
    r->in = NULL;
    r->prepared = NULL;
    pthread_mutex_lock(&e->mu);
    eng_finish_locked(e, r, ev);
}

void *eng_pool_main(void *arg) {
    llava_engine *e = arg;
    batch_scheduling();
    pthread_mutex_lock(&e->mu);
    for (;;) {
        /* prepare ahead of the worker by at most one request per pool thread, so that prepared
         * pixels do not pile up in memory while the worker is busy */
        while (!e->pool_stop &&
               !(e->model && e->prep_q.n > 0 && e->run_q.n + e->preparing < (size_t)e->n_pool + 1))
            pthread_cond_wait(&e->pool_cv, &e->mu);
        if (e->pool_stop) break; /* only once nothing is left to prepare */
        eng_request *r = eng_queue_pop(&e->prep_q);
        r->stage = STAGE_PREPARING;
        e->preparing++;
        const llava_model *m = e->model;
        pthread_mutex_unlock(&e->mu);

        r->t_prep_start = llava_now_ms();
        llava_status st = LLAVA_OK;
        if (!atomic_load_explicit(&r->cancel, memory_order_relaxed)) st = model_prepare(e, m, r);
        r->t_prep_end = llava_now_ms();

        pthread_mutex_lock(&e->mu);
        e->preparing--;
        if (atomic_load_explicit(&r->cancel, memory_order_relaxed)) {
            llava_event ev = {.kind = LLAVA_EVENT_CANCELLED};
            finish_early(e, r, &ev);
        } else if (st != LLAVA_OK) {
            llava_event ev = {.kind = LLAVA_EVENT_ERROR, .status = st, .text = r->err.message,
                              .text_len = strlen(r->err.message)};
            finish_early(e, r, &ev);
        } else {
            r->stage = STAGE_WAIT_RUN;
            eng_queue_push(&e->run_q, r);
            pthread_cond_signal(&e->work_cv);
        }
        /* a slot ahead of the worker may be free again for the other pool thread */
        if (e->n_pool > 1) pthread_cond_signal(&e->pool_cv);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- the worker ---- */

/* Signalled without the lock: the submit that asked for it changed prep_q under e->mu, so a pool
 * thread is either waiting already or will see prep_q when it next takes the lock. Holding the
 * lock across the wake-up syscall would let the scheduler park the worker with the lock held,
 * and the next submit would wait for it. */
void eng_wake_pool_deferred(llava_engine *e) {
    if (!atomic_load_explicit(&e->pool_wake, memory_order_relaxed)) return;
    if (atomic_exchange_explicit(&e->pool_wake, false, memory_order_relaxed))
        pthread_cond_signal(&e->pool_cv);
}

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    eng_request *r = user;
    llava_engine *e = r->e;
    eng_wake_pool_deferred(e);
    llava_event ev = {.kind = LLAVA_EVENT_TOKEN, .request = r->id, .user = r->user, .token = id};
    if (!ev_push_copy(&e->ch, &ev, text, len)) {
        r->token_oom = true; /* stop: the request ends with an ERROR rather than lose text */
        return 1;
    }
    if (id >= 0) {
        double now = llava_now_ms();
        if (r->t_first_token == 0) {
            r->t_first_token = now;
            eng_histogram_observe(&e->metrics.ttft, now - r->t_submit);
        } else {
            eng_histogram_observe(&e->metrics.per_token, now - r->t_last_token);
        }
        r->t_last_token = now;
    }
    return 0;
}

static int is_cancelled(void *user) {
    eng_request *r = user;
    eng_wake_pool_deferred(r->e);
    return atomic_load_explicit(&r->cancel, memory_order_relaxed);
}

/* Runs one request to its terminal event. */
static void run_request(llava_engine *e, llava_session *s, eng_request *r) {
    r->t_run_start = llava_now_ms();
    llava_generate_result res;
    memset(&res, 0, sizeof res);
    llava_status st = LLAVA_OK;
    bool cancelled = atomic_load_explicit(&r->cancel, memory_order_relaxed);
    if (!cancelled) {
        llava_callbacks cb = {.user = r, .on_token = on_token, .cancelled = is_cancelled};
        st = model_generate(e, s, r, &cb, &res);
        cancelled = st == LLAVA_OK && res.finish_reason == LLAVA_FINISH_CANCELLED;
    }
    llava_event ev = {.kind = LLAVA_EVENT_DONE};
    if (r->token_oom) {
        llava_error_set(&r->err, LLAVA_ERR_NO_MEMORY, "out of memory queueing a token event");
        st = LLAVA_ERR_NO_MEMORY;
    }
    if (st != LLAVA_OK) {
        ev.kind = LLAVA_EVENT_ERROR;
        ev.status = st;
        ev.text = r->err.message;
        ev.text_len = strlen(r->err.message);
    } else if (cancelled) {
        ev.kind = LLAVA_EVENT_CANCELLED;
    } else {
        ev.reason = res.finish_reason == LLAVA_FINISH_LENGTH ? LLAVA_DONE_LENGTH : LLAVA_DONE_STOP;
    }
    ev.timings.image_ms = res.image_ms; /* the rest is filled from the request's clock */
    ev.timings.prefill_ms = res.prefill_ms;
    ev.timings.decode_ms = res.decode_ms;
    ev.usage.prompt_tokens = res.prompt_tokens;
    ev.usage.completion_tokens = res.completion_tokens;
    eng_count(&e->metrics.prompt_tokens, (uint64_t)res.prompt_tokens);
    eng_count(&e->metrics.completion_tokens, (uint64_t)res.completion_tokens);
    if (r->prepared && r->prepared->n_images > 0 && res.image_ms > 0) {
        eng_count(&e->metrics.images, (uint64_t)r->prepared->n_images);
        eng_histogram_observe(&e->metrics.image_encode, res.image_ms);
    }

    eng_input *in = r->in;
    llava_prepared *p = r->prepared;
    r->in = NULL;
    r->prepared = NULL;
    pthread_mutex_lock(&e->mu);
    eng_finish_locked(e, r, &ev);
    pthread_mutex_unlock(&e->mu);
    eng_input_free(in);
    llava_prepared_free(p);
}

/* Loading failed: every request waiting for the model ends with the load error. */
static void fail_waiting_locked(llava_engine *e) {
    eng_request *r;
    while ((r = eng_queue_pop(&e->prep_q))) {
        r->err = e->load_error;
        llava_event ev = {.kind = LLAVA_EVENT_ERROR, .status = r->err.code, .text = r->err.message,
                          .text_len = strlen(r->err.message)};
        eng_finish_locked(e, r, &ev);
    }
}

/* Loads the model (the lock is not held meanwhile), then announces READY or LOAD_FAILED. */
static llava_session *load_locked(llava_engine *e) {
    atomic_store_explicit(&e->state, LLAVA_LOAD_LOADING, memory_order_release);
    pthread_mutex_unlock(&e->mu);
    llava_model *m;
    llava_session *s;
    llava_error err;
    llava_error_clear(&err);
    llava_status st = model_load(e, &m, &s, &err);
    pthread_mutex_lock(&e->mu);
    if (st == LLAVA_OK) {
        e->model = m;
        atomic_store_explicit(&e->state, LLAVA_LOAD_READY, memory_order_release);
        llava_event ev = {.kind = LLAVA_EVENT_READY};
        ev_push_reserved(&e->ch, &ev, NULL);
        pthread_cond_broadcast(&e->pool_cv);
        return s;
    }
    if (err.code == LLAVA_OK) err.code = st;
    e->load_error = err;
    atomic_store_explicit(&e->state, LLAVA_LOAD_FAILED, memory_order_release);
    llava_event ev = {.kind = LLAVA_EVENT_LOAD_FAILED, .status = err.code,
                      .text = e->load_error.message, .text_len = strlen(e->load_error.message)};
    ev_push_reserved(&e->ch, &ev, NULL);
    fail_waiting_locked(e);
    return NULL;
}

void *eng_worker_main(void *arg) {
    llava_engine *e = arg;
    e->owner = pthread_self();
    batch_scheduling();
    llava_session *s = NULL;
    pthread_mutex_lock(&e->mu);
    while (e->lazy && !e->load_wanted && !e->closing) pthread_cond_wait(&e->work_cv, &e->mu);
    if (e->closing && e->outstanding == 0) {
        /* closed before anything needed the model: do not load it at all */
        atomic_store_explicit(&e->state, LLAVA_LOAD_IDLE, memory_order_release);
    } else {
        s = load_locked(e);
    }
    for (;;) {
        while (e->run_q.n == 0 && !(e->closing && e->outstanding == 0))
            pthread_cond_wait(&e->work_cv, &e->mu);
        eng_request *r = eng_queue_pop(&e->run_q);
        if (!r) break; /* closing, and every request has had its terminal event */
        e->worker_running = true;
        r->stage = STAGE_RUNNING;
        e->waiting--;
        eng_uncount(&e->metrics.queue_depth, 1);
        eng_count(&e->metrics.running, 1);
        if (e->prep_q.n > 0) pthread_cond_signal(&e->pool_cv); /* room to prepare ahead */
        pthread_mutex_unlock(&e->mu);
        run_request(e, s, r);
        pthread_mutex_lock(&e->mu);
        e->worker_running = false;
        pthread_mutex_unlock(&e->mu);
        eng_wake_pool_deferred(e); /* asked for by a submit during the very last check */
        pthread_mutex_lock(&e->mu);
    }
    e->pool_stop = true;
    pthread_cond_broadcast(&e->pool_cv);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->n_pool_started; i++) pthread_join(e->pool[i], NULL);
    if (e->model) model_free(e, e->model, s);
    e->model = NULL;
    llava_event ev = {.kind = LLAVA_EVENT_CLOSED};
    ev_push_reserved(&e->ch, &ev, NULL);
    return NULL;
}
