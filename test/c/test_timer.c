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

static void test_timers_fire_by_due_time_then_start_order(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    rec r = {0};
    tick ta = {&r, 'a', 0}, tb = {&r, 'b', 0}, tc = {&r, 'c', 0}, td = {&r, 'd', 0};
    cx_timer *a = cx_timer_new(ctx, on_tick, &ta), *b = cx_timer_new(ctx, on_tick, &tb);
    cx_timer *c = cx_timer_new(ctx, on_tick, &tc), *d = cx_timer_new(ctx, on_tick, &td);
    assert_non_null(a);
    assert_non_null(d);
    cx_timer_start(a, 30);
    cx_timer_start(b, 10);
    cx_timer_start(c, 10);
    cx_timer_start(d, 0);
    run_until_idle(ctx);
    assert_string_equal(r.order, "dbca");
    cx_timer_close(a);
    cx_timer_close(b);
    cx_timer_close(c);
    cx_timer_close(d);
    council_ctx_free(ctx);
}

static void test_a_timer_started_at_zero_from_a_callback_fires_in_the_same_pass(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    rec r = {0};
    tick ta = {&r, 'a', 1}, tb = {&r, 'b', 0};
    cx_timer *a = cx_timer_new(ctx, on_tick, &ta);
    r.other = cx_timer_new(ctx, on_tick, &tb);
    r.other_ms = 0;
    cx_timer_start(a, 0);
    council_ctx_step(ctx, 0);
    assert_string_equal(r.order, "ab");
    assert_int_equal(council_ctx_step(ctx, 0), 0); /* nothing armed: idle */
    cx_timer_close(a);
    cx_timer_close(r.other);
    council_ctx_free(ctx);
}

static void test_a_due_timer_closed_or_stopped_by_an_earlier_one_never_fires(void **state)
{
    (void)state;
    for (int action = 2; action <= 3; action++) {
        council_ctx *ctx = council_ctx_new(NULL);
        rec r = {0};
        tick ta = {&r, 'a', action}, tb = {&r, 'b', 0}, tc = {&r, 'c', 0};
        cx_timer *a = cx_timer_new(ctx, on_tick, &ta), *c = cx_timer_new(ctx, on_tick, &tc);
        r.other = cx_timer_new(ctx, on_tick, &tb);
        cx_timer_start(a, 5);
        cx_timer_start(r.other, 5);
        cx_timer_start(c, 5);
        run_until_idle(ctx);
        assert_string_equal(r.order, "ac");
        cx_timer_close(a);
        cx_timer_close(c);
        cx_timer_close(r.other); /* NULL after action 2 */
        council_ctx_free(ctx);
    }
}

static void test_restarting_moves_a_timer_and_stopping_the_last_leaves_the_loop_idle(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    rec r = {0};
    tick ta = {&r, 'a', 0}, tb = {&r, 'b', 0};
    cx_timer *a = cx_timer_new(ctx, on_tick, &ta), *b = cx_timer_new(ctx, on_tick, &tb);
    cx_timer_start(a, 0);
    cx_timer_start(b, 5);
    cx_timer_start(a, 20); /* moved behind b */
    run_until_idle(ctx);
    assert_string_equal(r.order, "ba");
    cx_timer_start(a, 3600000);
    cx_timer_start(b, 3600000);
    cx_timer_stop(b);
    cx_timer_stop(a);
    assert_int_equal(council_ctx_step(ctx, 0), 0);
    assert_string_equal(r.order, "ba");
    cx_timer_close(a);
    cx_timer_close(b);
    council_ctx_free(ctx);
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
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    rec r = {0};
    io_watch w;
    /* a (a timer of delay 0) defers b: the poll's 'i' comes in between,
     * where a timer started at 0 would have fired before it */
    tick ta = {&r, 'a', 4}, tb = {&r, 'b', 0};
    cx_timer *a = cx_timer_new(ctx, on_tick, &ta);
    r.other = cx_timer_new(ctx, on_tick, &tb);
    io_watch_start(ctx, &w, &r);
    cx_timer_start(a, 0);
    council_ctx_step(ctx, 1000);
    assert_string_equal(r.order, "aib");
    io_watch_close(ctx, &w);
    assert_int_equal(council_ctx_step(ctx, 0), 0); /* nothing deferred: idle */
    cx_timer_close(a);
    cx_timer_close(r.other);
    council_ctx_free(ctx);
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
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    rec r = {0};
    io_watch w;
    relay y = {&r, NULL, 3};
    y.self = cx_timer_new(ctx, on_relay, &y);
    io_watch_start(ctx, &w, &r);
    cx_timer_defer(y.self);
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 3; i++)
        council_ctx_step(ctx, -1); /* must not block: a deferral is pending */
    assert_true((uv_hrtime() - t0) / 1000000 < 500);
    assert_string_equal(r.order, "i3i2i1");
    io_watch_close(ctx, &w);
    assert_int_equal(council_ctx_step(ctx, 0), 0);
    cx_timer_close(y.self);
    council_ctx_free(ctx);
}

static void test_a_deferred_timer_stopped_moved_or_closed_fires_at_most_once(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    rec r = {0};
    tick ta = {&r, 'a', 0}, tb = {&r, 'b', 0}, tc = {&r, 'c', 0}, td = {&r, 'd', 0};
    cx_timer *a = cx_timer_new(ctx, on_tick, &ta), *b = cx_timer_new(ctx, on_tick, &tb);
    cx_timer *c = cx_timer_new(ctx, on_tick, &tc), *d = cx_timer_new(ctx, on_tick, &td);
    cx_timer_defer(a);
    cx_timer_defer(b);
    cx_timer_defer(c);
    cx_timer_defer(d);
    cx_timer_stop(a);      /* head */
    cx_timer_start(c, 0);  /* middle, moved to the heap: fires first */
    cx_timer_close(d);     /* tail */
    cx_timer_defer(b);     /* deferring again moves it to the end */
    run_until_idle(ctx);
    assert_string_equal(r.order, "cb");
    /* the last deferral stopped: the loop is idle at once */
    cx_timer_defer(a);
    cx_timer_stop(a);
    assert_int_equal(council_ctx_step(ctx, 0), 0);
    /* deferred in the check phase by an earlier deferred timer, then
     * stopped by it before its turn */
    tick te = {&r, 'e', 3};
    cx_timer *e = cx_timer_new(ctx, on_tick, &te);
    r.other = b;
    cx_timer_defer(e);
    cx_timer_defer(b);
    run_until_idle(ctx);
    assert_string_equal(r.order, "cbe");
    /* closed while deferred: the loop is idle at once */
    cx_timer_defer(a);
    cx_timer_close(a);
    assert_int_equal(council_ctx_step(ctx, 0), 0);
    assert_string_equal(r.order, "cbe");
    cx_timer_close(b);
    cx_timer_close(c);
    cx_timer_close(e);
    council_ctx_free(ctx);
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
        cmocka_unit_test(test_timers_fire_by_due_time_then_start_order),
        cmocka_unit_test(test_a_timer_started_at_zero_from_a_callback_fires_in_the_same_pass),
        cmocka_unit_test(test_a_due_timer_closed_or_stopped_by_an_earlier_one_never_fires),
        cmocka_unit_test(test_restarting_moves_a_timer_and_stopping_the_last_leaves_the_loop_idle),
        cmocka_unit_test(test_many_timers_fire_by_due_time_then_start_order),
        cmocka_unit_test(test_a_deferred_timer_fires_after_the_poll_not_in_the_same_pass),
        cmocka_unit_test(test_a_timer_deferred_from_the_check_phase_waits_for_the_next_poll),
        cmocka_unit_test(test_a_deferred_timer_stopped_moved_or_closed_fires_at_most_once),
        cmocka_unit_test(test_the_heap_gives_its_room_back_when_timers_go),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
