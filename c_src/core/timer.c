/* timer.c - the core's one-shot timers: many light timers on one uv timer.
 *
 * Every run, member call and mock answer waits on a timer; a uv_timer_t
 * apiece (152 bytes, plus its close round trip) was the largest part of an
 * idle run. Here a timer is a small record in a binary min-heap kept by
 * the context, and one uv timer is armed for the earliest. Timers fire in
 * the order libuv would fire them: by due time, then by start order, and a
 * timer started from a callback with a delay of 0 fires in the same pass.
 * Not for: repeating timers or timers of other subsystems (the C node's
 * sockets keep their own uv handles).
 */
#include "council_internal.h"

#include <stdint.h>
#include <stdlib.h>

#define NOT_ARMED SIZE_MAX

static bool before(const cx_timer *a, const cx_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(cx_timers *ts, size_t i, cx_timer *t)
{
    ts->heap[i] = t;
    t->slot = i;
}

static void sift_up(cx_timers *ts, size_t i)
{
    cx_timer *t = ts->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(t, ts->heap[p]))
            break;
        place(ts, i, ts->heap[p]);
        i = p;
    }
    place(ts, i, t);
}

static void sift_down(cx_timers *ts, size_t i)
{
    cx_timer *t = ts->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ts->n)
            break;
        if (c + 1 < ts->n && before(ts->heap[c + 1], ts->heap[c]))
            c++;
        if (!before(ts->heap[c], t))
            break;
        place(ts, i, ts->heap[c]);
        i = c;
    }
    place(ts, i, t);
}

static void heap_remove(cx_timers *ts, cx_timer *t)
{
    size_t i = t->slot;
    t->slot = NOT_ARMED;
    ts->n--;
    if (i == ts->n)
        return;
    place(ts, i, ts->heap[ts->n]);
    if (i > 0 && before(ts->heap[i], ts->heap[(i - 1) / 2]))
        sift_up(ts, i);
    else
        sift_down(ts, i);
}

static void driver_fire(uv_timer_t *h);

/* Arm the uv timer for the earliest timer, or stop it when none is armed
 * (so that an idle context keeps no loop alive). Not while firing: the
 * pass re-arms once at its end. */
static void driver_arm(cx_timers *ts)
{
    if (ts->firing)
        return;
    if (ts->n == 0) {
        uv_timer_stop(&ts->driver);
        return;
    }
    uint64_t now = uv_now(ts->driver.loop), due = ts->heap[0]->due;
    uv_timer_start(&ts->driver, driver_fire, due > now ? due - now : 0, 0);
}

static void driver_fire(uv_timer_t *h)
{
    cx_timers *ts = h->data;
    uint64_t now = uv_now(h->loop);
    ts->firing = true;
    while (ts->n > 0 && ts->heap[0]->due <= now) {
        cx_timer *t = ts->heap[0];
        heap_remove(ts, t);
        t->cb(t->arg); /* may start, stop or close any timer, t included */
    }
    ts->firing = false;
    driver_arm(ts);
}

void cx_timers_init(cx_timers *ts, uv_loop_t *loop)
{
    ts->heap = NULL;
    ts->n = ts->cap = ts->n_timers = 0;
    ts->seq = 0;
    ts->firing = false;
    uv_timer_init(loop, &ts->driver);
    ts->driver.data = ts;
}

void cx_timers_close(cx_timers *ts)
{
    /* every timer should be closed by now (runs, calls and providers are
     * gone); any still armed is cut loose rather than left pointing here */
    for (size_t i = 0; i < ts->n; i++) {
        ts->heap[i]->owner = NULL;
        ts->heap[i]->slot = NOT_ARMED;
    }
    free(ts->heap);
    ts->heap = NULL;
    ts->n = ts->cap = ts->n_timers = 0;
    uv_close((uv_handle_t *)&ts->driver, NULL);
}

int cx_timer_init(council_ctx *ctx, cx_timer *t, cx_timer_cb cb, void *arg)
{
    cx_timers *ts = &ctx->timers;
    if (ts->n_timers == ts->cap) {
        /* a slot in the heap for every timer, so starting one never fails */
        size_t nc = ts->cap ? ts->cap * 2 : 64;
        cx_timer **nh = realloc(ts->heap, nc * sizeof *nh);
        if (!nh)
            return COUNCIL_ENOMEM;
        ts->heap = nh;
        ts->cap = nc;
    }
    ts->n_timers++;
    t->owner = ts;
    t->due = t->seq = 0;
    t->slot = NOT_ARMED;
    t->cb = cb;
    t->arg = arg;
    return COUNCIL_OK;
}

cx_timer *cx_timer_new(council_ctx *ctx, cx_timer_cb cb, void *arg)
{
    cx_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (cx_timer_init(ctx, t, cb, arg) != COUNCIL_OK) {
        free(t);
        return NULL;
    }
    return t;
}

void cx_timer_start(cx_timer *t, uint64_t ms)
{
    cx_timers *ts = t->owner;
    if (!ts)
        return;
    bool was_first = t->slot == 0;
    if (t->slot != NOT_ARMED)
        heap_remove(ts, t);
    uint64_t now = uv_now(ts->driver.loop);
    t->due = ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
    t->seq = ++ts->seq;
    place(ts, ts->n++, t);
    sift_up(ts, t->slot);
    if (t->slot == 0 || was_first)
        driver_arm(ts);
}

void cx_timer_stop(cx_timer *t)
{
    cx_timers *ts = t->owner;
    if (!ts || t->slot == NOT_ARMED)
        return;
    bool was_first = t->slot == 0;
    heap_remove(ts, t);
    if (was_first)
        driver_arm(ts);
}

void cx_timer_fini(cx_timer *t)
{
    if (!t->owner)
        return;
    cx_timer_stop(t);
    t->owner->n_timers--;
    t->owner = NULL;
}

void cx_timer_close(cx_timer *t)
{
    if (!t)
        return;
    cx_timer_fini(t);
    free(t);
}
