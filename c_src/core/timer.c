/* timer.c - the core's one-shot timers: many light timers on one uv timer.
 *
 * Every run, member call and mock answer waits on a timer; a uv_timer_t
 * apiece (152 bytes, plus its close round trip) was the largest part of an
 * idle run. Here a timer is a small record in a binary min-heap kept by
 * the context, and one uv timer is armed for the earliest. Timers fire in
 * the order libuv would fire them: by due time, then by start order, and a
 * timer started from a callback with a delay of 0 fires in the same pass.
 *
 * That same pass never lets the loop poll for I/O, so work that chains
 * itself (a run whose members answer at once goes round after round) is
 * deferred instead: cx_timer_defer puts the timer on a list fired by a
 * uv_check handle, after the loop's poll phase, while a uv_idle handle
 * keeps that poll from blocking. A timer deferred while the list is being
 * fired goes on a fresh list for the next check phase.
 * Not for: repeating timers or timers of other subsystems (the C node's
 * sockets keep their own uv handles).
 */
#include "council_internal.h"

#include <stdint.h>
#include <stdlib.h>

#define HEAP_MIN 64 /* heap slots: the first allocation, and the least kept */

/* t->slot: an index in the heap, or one of these (far above any index) */
#define NOT_ARMED SIZE_MAX
#define DEFERRED (SIZE_MAX - 1)   /* in ts->deferred */
#define FIRING (SIZE_MAX - 2)     /* in ts->now */

static bool in_heap(const cx_timer *t)
{
    return t->slot < FIRING;
}

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

static void list_push(cx_timer_list *l, cx_timer *t)
{
    t->prev = l->tail;
    t->next = NULL;
    if (l->tail)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
}

static void list_remove(cx_timer_list *l, cx_timer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    t->prev = t->next = NULL;
}

/* Nothing deferred: let the loop block in poll and exit when idle again. */
static void deferred_idle(cx_timers *ts)
{
    uv_check_stop(&ts->checker);
    uv_idle_stop(&ts->spinner);
}

static void driver_fire(uv_timer_t *h);
static void driver_arm(cx_timers *ts);

/* Take t out of the heap or list it is armed in. */
static void disarm(cx_timers *ts, cx_timer *t)
{
    if (in_heap(t)) {
        bool was_first = t->slot == 0;
        heap_remove(ts, t);
        if (was_first)
            driver_arm(ts);
        return;
    }
    if (t->slot == DEFERRED) {
        list_remove(&ts->deferred, t);
        if (!ts->deferred.head)
            deferred_idle(ts);
    } else if (t->slot == FIRING) {
        list_remove(&ts->now, t);
    }
    t->slot = NOT_ARMED;
}

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

static void deferred_fire(uv_check_t *h)
{
    cx_timers *ts = h->data;
    /* the timers deferred until now; those deferred from here on wait for
     * the next check phase */
    ts->now = ts->deferred;
    ts->deferred.head = ts->deferred.tail = NULL;
    for (cx_timer *t = ts->now.head; t; t = t->next)
        t->slot = FIRING;
    cx_timer *t;
    while ((t = ts->now.head)) {
        list_remove(&ts->now, t);
        t->slot = NOT_ARMED;
        t->cb(t->arg); /* may start, defer, stop or close any timer */
    }
    if (!ts->deferred.head)
        deferred_idle(ts);
}

static void spin(uv_idle_t *h)
{
    (void)h; /* only there to keep the poll phase from blocking */
}

void cx_timers_init(cx_timers *ts, uv_loop_t *loop)
{
    ts->heap = NULL;
    ts->n = ts->cap = ts->n_timers = 0;
    ts->seq = 0;
    ts->firing = false;
    uv_timer_init(loop, &ts->driver);
    ts->driver.data = ts;
    ts->deferred.head = ts->deferred.tail = NULL;
    ts->now.head = ts->now.tail = NULL;
    uv_check_init(loop, &ts->checker);
    ts->checker.data = ts;
    uv_idle_init(loop, &ts->spinner);
}

static void cut_loose(cx_timer_list *l)
{
    cx_timer *t = l->head;
    while (t) {
        cx_timer *next = t->next;
        t->owner = NULL;
        t->prev = t->next = NULL;
        t->slot = NOT_ARMED;
        t = next;
    }
    l->head = l->tail = NULL;
}

void cx_timers_close(cx_timers *ts)
{
    /* every timer should be closed by now (runs, calls and providers are
     * gone); any still armed is cut loose rather than left pointing here */
    for (size_t i = 0; i < ts->n; i++) {
        ts->heap[i]->owner = NULL;
        ts->heap[i]->slot = NOT_ARMED;
    }
    cut_loose(&ts->deferred);
    cut_loose(&ts->now);
    free(ts->heap);
    ts->heap = NULL;
    ts->n = ts->cap = ts->n_timers = 0;
    uv_close((uv_handle_t *)&ts->driver, NULL);
    uv_close((uv_handle_t *)&ts->checker, NULL);
    uv_close((uv_handle_t *)&ts->spinner, NULL);
}

int cx_timer_init(council_ctx *ctx, cx_timer *t, cx_timer_cb cb, void *arg)
{
    cx_timers *ts = &ctx->timers;
    if (ts->n_timers == ts->cap) {
        /* a slot in the heap for every timer, so starting one never fails;
         * grown by half (every idle run holds three timers: doubling left
         * up to 8 bytes of room per timer unused) */
        size_t nc = ts->cap ? ts->cap + ts->cap / 2 : HEAP_MIN;
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
    if (in_heap(t))
        heap_remove(ts, t);
    else if (t->slot != NOT_ARMED)
        disarm(ts, t);
    uint64_t now = uv_now(ts->driver.loop);
    t->due = ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
    t->seq = ++ts->seq;
    place(ts, ts->n++, t);
    sift_up(ts, t->slot);
    if (t->slot == 0 || was_first)
        driver_arm(ts);
}

void cx_timer_defer(cx_timer *t)
{
    cx_timers *ts = t->owner;
    if (!ts)
        return;
    if (t->slot != NOT_ARMED)
        disarm(ts, t);
    list_push(&ts->deferred, t);
    t->slot = DEFERRED;
    uv_check_start(&ts->checker, deferred_fire); /* no-ops when active */
    uv_idle_start(&ts->spinner, spin);
}

void cx_timer_stop(cx_timer *t)
{
    cx_timers *ts = t->owner;
    if (!ts || t->slot == NOT_ARMED)
        return;
    disarm(ts, t);
}

/* Many timers are gone (the runs of a burst ended): halve the heap's
 * room while it is under a quarter used, so its memory goes back. */
static void heap_shrink(cx_timers *ts)
{
    size_t nc = ts->cap / 2;
    cx_timer **nh;

    if (ts->cap <= HEAP_MIN || ts->n_timers >= ts->cap / 4)
        return;
    nh = realloc(ts->heap, nc * sizeof *nh); /* n <= n_timers < nc */
    if (!nh)
        return;                             /* keep the larger one */
    ts->heap = nh;
    ts->cap = nc;
}

void cx_timer_fini(cx_timer *t)
{
    if (!t->owner)
        return;
    cx_timer_stop(t);
    t->owner->n_timers--;
    heap_shrink(t->owner);
    t->owner = NULL;
}

void cx_timer_close(cx_timer *t)
{
    if (!t)
        return;
    cx_timer_fini(t);
    free(t);
}
