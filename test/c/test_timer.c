/* test_timer.c - timer.c: the context's light timers fire in libuv's
 * order, survive being stopped, moved and closed from callbacks, and keep
 * the loop alive only while one is armed; deferred timers fire only after
 * the loop has polled for I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>

/* white-box suite (tests the core's timers): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

typedef struct rec {
    char order[32];
    size_t n;
    cx_timer *other;      /* what a callback acts on */
    uint64_t other_ms;
} rec;

typedef struct tick {
    rec *r;
    char name;
    int action;           /* 0 none, 1 start other, 2 close other, 3 stop other,
                             4 defer other */
} tick;

static void on_tick(void *arg)
{
    tick *t = arg;
    rec *r = t->r;
    r->order[r->n++] = t->name;
    if (t->action == 1)
        cx_timer_start(r->other, r->other_ms);
    else if (t->action == 2) {
        cx_timer_close(r->other);
        r->other = NULL;
    } else if (t->action == 3)
        cx_timer_stop(r->other);
    else if (t->action == 4)
        cx_timer_defer(r->other);
}

static void run_until_idle(council_ctx *ctx)
{
    for (int i = 0; i < 200 && council_ctx_step(ctx, -1) == 1; i++)
        ;
}

/* The fixture of the ordering tests: a context and timers a..e, each
 * writing its name into r when it fires (what else it does is its tick's
 * action, set by the test); teardown closes those still in tm[] (a test
 * that closes one clears its slot). */
typedef struct tfx {
    council_ctx *ctx;
    rec r;
    tick t[5];
    cx_timer *tm[5];
} tfx;

enum { A, B, C, D, E };

static int tfx_setup(void **state)
{
    tfx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->ctx = council_ctx_new(NULL);
    assert_non_null(f->ctx);
    for (int i = A; i <= E; i++) {
        f->t[i] = (tick){&f->r, (char)('a' + i), 0};
        f->tm[i] = cx_timer_new(f->ctx, on_tick, &f->t[i]);
        assert_non_null(f->tm[i]);
    }
    *state = f;
    return 0;
}

static int tfx_teardown(void **state)
{
    tfx *f = *state;
    for (int i = A; i <= E; i++)
        if (f->tm[i])
            cx_timer_close(f->tm[i]);
    council_ctx_free(f->ctx);
    free(f);
    return 0;
}

#define timer_test(t) cmocka_unit_test_setup_teardown(t, tfx_setup, tfx_teardown)

static void test_timers_fire_by_due_time_then_start_order(void **state)
{
    tfx *f = *state;
    cx_timer_start(f->tm[A], 30);
    cx_timer_start(f->tm[B], 10);
    cx_timer_start(f->tm[C], 10);
    cx_timer_start(f->tm[D], 0);
    run_until_idle(f->ctx);
    assert_string_equal(f->r.order, "dbca");
}

static void test_a_timer_started_at_zero_from_a_callback_fires_in_the_same_pass(void **state)
{
    tfx *f = *state;
    f->t[A].action = 1;
    f->r.other = f->tm[B];
    f->r.other_ms = 0;
    cx_timer_start(f->tm[A], 0);
    council_ctx_step(f->ctx, 0);
    assert_string_equal(f->r.order, "ab");
    assert_int_equal(council_ctx_step(f->ctx, 0), 0); /* nothing armed: idle */
}

/* a, due with b and c, closes (action 2) or stops (action 3) b first */
static void due_timer_acted_on_by_an_earlier_one(void **state, int action)
{
    tfx *f = *state;
    f->t[A].action = action;
    f->r.other = f->tm[B];
    cx_timer_start(f->tm[A], 5);
    cx_timer_start(f->tm[B], 5);
    cx_timer_start(f->tm[C], 5);
    run_until_idle(f->ctx);
    assert_string_equal(f->r.order, "ac");
    if (action == 2) {
        assert_null(f->r.other);
        f->tm[B] = NULL; /* closed by a */
    }
}

static void test_a_due_timer_closed_by_an_earlier_one_never_fires(void **state)
{
    due_timer_acted_on_by_an_earlier_one(state, 2);
}

static void test_a_due_timer_stopped_by_an_earlier_one_never_fires(void **state)
{
    due_timer_acted_on_by_an_earlier_one(state, 3);
}

static void test_restarting_moves_a_timer_and_stopping_the_last_leaves_the_loop_idle(void **state)
{
    tfx *f = *state;
    cx_timer *a = f->tm[A], *b = f->tm[B];
    cx_timer_start(a, 0);
    cx_timer_start(b, 5);
    cx_timer_start(a, 20); /* moved behind b */
    run_until_idle(f->ctx);
    assert_string_equal(f->r.order, "ba");
    cx_timer_start(a, 3600000);
    cx_timer_start(b, 3600000);
    cx_timer_stop(b);
    cx_timer_stop(a);
    assert_int_equal(council_ctx_step(f->ctx, 0), 0);
    assert_string_equal(f->r.order, "ba");
}

/* A socket that stays readable: its poll callback runs once per loop
 * iteration, in the poll phase, and writes 'i'. */
typedef struct io_watch {
    uv_poll_t poll;
    int fds[2];
    rec *r;
} io_watch;

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    io_watch *w = h->data;
    w->r->order[w->r->n++] = 'i';
}

static void io_watch_start(council_ctx *ctx, io_watch *w, rec *r)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, w->fds), 0);
    assert_int_equal(write(w->fds[1], "x", 1), 1);
    w->r = r;
    assert_int_equal(uv_poll_init(council_ctx_uv_loop(ctx), &w->poll, w->fds[0]), 0);
    w->poll.data = w;
    uv_poll_start(&w->poll, UV_READABLE, on_readable);
}

static void io_watch_close(council_ctx *ctx, io_watch *w)
{
    uv_close((uv_handle_t *)&w->poll, NULL);
    council_ctx_step(ctx, 0);
    close(w->fds[0]);
    close(w->fds[1]);
}

static void test_a_deferred_timer_fires_after_the_poll_not_in_the_same_pass(void **state)
{
    tfx *f = *state;
    io_watch w;
    /* a (a timer of delay 0) defers b: the poll's 'i' comes in between,
     * where a timer started at 0 would have fired before it */
    f->t[A].action = 4;
    f->r.other = f->tm[B];
    io_watch_start(f->ctx, &w, &f->r);
    cx_timer_start(f->tm[A], 0);
    council_ctx_step(f->ctx, 1000);
    assert_string_equal(f->r.order, "aib");
    io_watch_close(f->ctx, &w);
    assert_int_equal(council_ctx_step(f->ctx, 0), 0); /* nothing deferred: idle */
}

/* A deferred timer that defers itself again from its callback. */
typedef struct relay {
    rec *r;
    cx_timer *self;
    int left;
} relay;

static void on_relay(void *arg)
{
    relay *y = arg;
    y->r->order[y->r->n++] = (char)('0' + y->left);
    if (--y->left > 0)
        cx_timer_defer(y->self);
}

static void test_a_timer_deferred_from_the_check_phase_waits_for_the_next_poll(void **state)
{
    tfx *f = *state;
    io_watch w;
    static relay y;
    y = (relay){&f->r, NULL, 3};
    cx_timer_close(f->tm[E]); /* a relay in place of e */
    y.self = f->tm[E] = cx_timer_new(f->ctx, on_relay, &y);
    io_watch_start(f->ctx, &w, &f->r);
    cx_timer_defer(y.self);
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 3; i++)
        council_ctx_step(f->ctx, -1); /* must not block: a deferral is pending */
    assert_true((uv_hrtime() - t0) / 1000000 < 500);
    assert_string_equal(f->r.order, "i3i2i1");
    io_watch_close(f->ctx, &w);
    assert_int_equal(council_ctx_step(f->ctx, 0), 0);
}

static void test_a_deferred_timer_stopped_moved_or_closed_fires_at_most_once(void **state)
{
    tfx *f = *state;
    cx_timer *a = f->tm[A], *b = f->tm[B], *c = f->tm[C], *d = f->tm[D], *e = f->tm[E];
    cx_timer_defer(a);
    cx_timer_defer(b);
    cx_timer_defer(c);
    cx_timer_defer(d);
    cx_timer_stop(a);      /* head */
    cx_timer_start(c, 0);  /* middle, moved to the heap: fires first */
    cx_timer_close(d);     /* tail */
    f->tm[D] = NULL;
    cx_timer_defer(b);     /* deferring again moves it to the end */
    run_until_idle(f->ctx);
    assert_string_equal(f->r.order, "cb");
    /* the last deferral stopped: the loop is idle at once */
    cx_timer_defer(a);
    cx_timer_stop(a);
    assert_int_equal(council_ctx_step(f->ctx, 0), 0);
    /* deferred in the check phase by an earlier deferred timer, then
     * stopped by it before its turn */
    f->t[E].action = 3;
    f->r.other = b;
    cx_timer_defer(e);
    cx_timer_defer(b);
    run_until_idle(f->ctx);
    assert_string_equal(f->r.order, "cbe");
    /* closed while deferred: the loop is idle at once */
    cx_timer_defer(a);
    cx_timer_close(a);
    f->tm[A] = NULL;
    assert_int_equal(council_ctx_step(f->ctx, 0), 0);
    assert_string_equal(f->r.order, "cbe");
}

enum { MANY = 300 };
static size_t many_fired[MANY], many_n;

static void on_many(void *arg)
{
    many_fired[many_n++] = (size_t)(uintptr_t)arg;
}

static void test_many_timers_fire_by_due_time_then_start_order(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    static cx_timer *ts[MANY];
    many_n = 0;
    for (size_t i = 0; i < MANY; i++) {
        ts[i] = cx_timer_new(ctx, on_many, (void *)(uintptr_t)i);
        assert_non_null(ts[i]);
    }
    for (size_t i = 0; i < MANY; i++)
        cx_timer_start(ts[i], (i * 7) % 10);
    for (size_t i = 0; i < MANY; i += 3)
        cx_timer_stop(ts[i]);
    run_until_idle(ctx);
    assert_int_equal(many_n, MANY - MANY / 3);
    for (size_t k = 1; k < many_n; k++) {
        size_t p = many_fired[k - 1], q = many_fired[k];
        size_t dp = (p * 7) % 10, dq = (q * 7) % 10;
        assert_true(dp < dq || (dp == dq && p < q));
    }
    for (size_t i = 0; i < MANY; i++)
        cx_timer_close(ts[i]);
    council_ctx_free(ctx);
}

/* The heap keeps room for every timer, so starting never fails; once most
 * timers are gone it gives that room back (halving while under a quarter
 * used), and the timers left, armed among them, still fire in order,
 * including when timers close from inside a firing callback. */
static size_t shrink_fired[64], shrink_n;
static cx_timer *shrink_ts[4096];

static void on_shrink(void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    shrink_fired[shrink_n++] = i;
    if (i == 0) /* the first to fire closes most of the others */
        for (size_t k = 64; k < 4096; k++) {
            cx_timer_close(shrink_ts[k]);
            shrink_ts[k] = NULL;
        }
}

static void test_the_heap_gives_its_room_back_when_timers_go(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    shrink_n = 0;
    for (size_t i = 0; i < 4096; i++) {
        shrink_ts[i] = cx_timer_new(ctx, on_shrink, (void *)(uintptr_t)i);
        assert_non_null(shrink_ts[i]);
        cx_timer_start(shrink_ts[i], 5 + (i % 64) * 2 + (i >= 64 ? 1000 : 0));
    }
    assert_true(ctx->timers.cap >= 4096);
    run_until_idle(ctx);
    /* 64 timers left: the room went down with them */
    assert_int_equal(ctx->timers.n_timers, 64);
    assert_true(ctx->timers.cap <= 256);
    assert_int_equal(shrink_n, 64);
    for (size_t k = 0; k < 64; k++)
        assert_int_equal(shrink_fired[k], k);
    /* and grows again as needed */
    for (size_t i = 64; i < 1000; i++) {
        shrink_ts[i] = cx_timer_new(ctx, on_shrink, (void *)(uintptr_t)i);
        assert_non_null(shrink_ts[i]);
    }
    assert_true(ctx->timers.cap >= 1000);
    for (size_t i = 0; i < 1000; i++)
        cx_timer_close(shrink_ts[i]);
    assert_true(ctx->timers.cap <= 64);
    council_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        timer_test(test_timers_fire_by_due_time_then_start_order),
        timer_test(test_a_timer_started_at_zero_from_a_callback_fires_in_the_same_pass),
        timer_test(test_a_due_timer_closed_by_an_earlier_one_never_fires),
        timer_test(test_a_due_timer_stopped_by_an_earlier_one_never_fires),
        timer_test(test_restarting_moves_a_timer_and_stopping_the_last_leaves_the_loop_idle),
        cmocka_unit_test(test_many_timers_fire_by_due_time_then_start_order),
        timer_test(test_a_deferred_timer_fires_after_the_poll_not_in_the_same_pass),
        timer_test(test_a_timer_deferred_from_the_check_phase_waits_for_the_next_poll),
        timer_test(test_a_deferred_timer_stopped_moved_or_closed_fires_at_most_once),
        cmocka_unit_test(test_the_heap_gives_its_room_back_when_timers_go),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
