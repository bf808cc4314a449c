/* test_timer.c - timer.c: the context's light timers fire in libuv's
 * order, survive being stopped, moved and closed from callbacks, and keep
 * the loop alive only while one is armed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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
    int action;           /* 0 none, 1 start other, 2 close other, 3 stop other */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_by_due_time_then_start_order),
        cmocka_unit_test(test_a_timer_started_at_zero_from_a_callback_fires_in_the_same_pass),
        cmocka_unit_test(test_a_due_timer_closed_or_stopped_by_an_earlier_one_never_fires),
        cmocka_unit_test(test_restarting_moves_a_timer_and_stopping_the_last_leaves_the_loop_idle),
        cmocka_unit_test(test_many_timers_fire_by_due_time_then_start_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
