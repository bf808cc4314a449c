/* nif_outbox.c - messages of the loop thread sent by a scheduler (see
 * nif.h, "Outbox").
 *
 * What it is for: an enif_send from the loop thread, which is not a
 * scheduler, costs about twice the VM's CPU of one from a scheduler (the
 * receiver's lookup and locks, its heap allocated across threads, the
 * wake-ups between that thread and the schedulers), and a run's events
 * are most of what the NIF sends. So, while a pump process is given, the
 * loop thread does not send its events itself: it copies each message
 * (its term, made once per event for all its subscribers) into the
 * outbox, a FIFO of segments, and tells the pump (one message per batch);
 * the pump calls pump/0 on its scheduler, which sends for at most
 * PUMP_BUDGET_NS per call and is called again while messages are left.
 * The core's steps stay on the loop thread (one step may take
 * milliseconds: a burst of events published or delivered at once), so no
 * NIF call holds a scheduler longer than that.
 *
 * Order: every message the loop thread sends while the outbox is not
 * empty goes into it too, and whoever sends from it (the pump, or the
 * loop thread when it flushes) holds the send lock (st->ob_send) and takes
 * the messages from its head: the messages leave in the order they were
 * made, as when the loop thread sent them itself. A scheduler drives the
 * core inline only while the outbox is empty (council_nif.c's
 * drive_begin), so what it sends directly comes after all of it.
 * The loop thread flushes (sends what is left itself) when the outbox
 * holds more than OB_MAX messages (a pump that cannot keep up bounds the
 * memory), before a send whose result it needs (a beam member call), and
 * when the pump goes (its monitor), is replaced, or the loop ends.
 */
#include <string.h>

#include "nif.h"

#define SEG_MIN 64u
#define SEG_MAX 4096u
#define OB_MAX (64u * 1024u)
#define PUMP_BUDGET_NS 40000

typedef struct ob_item {
    ErlNifPid pid;
    ERL_NIF_TERM t; /* in its segment's env */
} ob_item;

struct nif_seg {
    nif_seg *next;
    ErlNifEnv *env;
    size_t n, cap, sent; /* sent: under st->ob_send */
    uint64_t gen;         /* this segment's number (nif_ob_memo) */
    ob_item *it;
};

typedef struct nif_pump {
    nif_state *st;
    ErlNifMonitor mon;
} nif_pump;

ErlNifResourceType *nif_pump_type;

static void seg_free(nif_seg *g)
{
    enif_free_env(g->env);
    enif_free(g->it);
    enif_free(g);
}

static nif_seg *seg_new(nif_state *st)
{
    nif_seg *g = enif_alloc(sizeof *g);
    if (!g)
        return NULL;
    memset(g, 0, sizeof *g);
    g->env = enif_alloc_env();
    g->it = enif_alloc(SEG_MIN * sizeof *g->it);
    if (!g->env || !g->it) {
        if (g->env)
            enif_free_env(g->env);
        enif_free(g->it);
        enif_free(g);
        return NULL;
    }
    g->cap = SEG_MIN;
    g->gen = ++st->ob_gen;
    return g;
}

/* Whether the loop thread must put what it sends into the outbox: a pump
 * is given and (for a message that is not an event) the outbox is not
 * empty. Loop thread (st->cur NULL), drive lock held. */
static int ob_pending(nif_state *st)
{
    return (st->ob_cur && st->ob_cur->n > 0) ||
           __atomic_load_n(&st->ob_head, __ATOMIC_ACQUIRE) != NULL;
}

void nif_ob_seal(nif_state *st)
{
    nif_seg *g = st->ob_cur;
    if (!g || g->n == 0)
        return;
    st->ob_cur = NULL;
    g->next = NULL;
    enif_mutex_lock(st->mu);
    if (st->ob_tail)
        st->ob_tail->next = g;
    else
        __atomic_store_n(&st->ob_head, g, __ATOMIC_RELEASE);
    st->ob_tail = g;
    __atomic_add_fetch(&st->ob_items, g->n, __ATOMIC_RELAXED);
    int signal = !st->pump_signalled;
    st->pump_signalled = 1;
    enif_mutex_unlock(st->mu);
    /* (not built in st->out: a nif_send's message may be there). A dead
     * pump: its monitor's DOWN makes the loop thread flush. */
    if (signal)
        enif_send(NULL, &st->pump, NULL, A.council_pump);
}

/* Sends the outbox's messages from its head, holding the send lock,
 * until it is empty or (budget) the time from t0 is spent: 1 if empty. */
static int ob_send_some(nif_state *st, ErlNifEnv *env, uint64_t t0, int budget)
{
    for (;;) {
        nif_seg *g = __atomic_load_n(&st->ob_head, __ATOMIC_ACQUIRE);
        if (!g)
            return 1;
        while (g->sent < g->n) {
            enif_send(env, &g->it[g->sent].pid, NULL, g->it[g->sent].t);
            g->sent++;
            if (budget && (g->sent & 15) == 0 && nif_mono_ns() - t0 > PUMP_BUDGET_NS)
                return 0;
        }
        enif_mutex_lock(st->mu);
        __atomic_store_n(&st->ob_head, g->next, __ATOMIC_RELEASE);
        if (!g->next)
            st->ob_tail = NULL;
        __atomic_sub_fetch(&st->ob_items, g->n, __ATOMIC_RELAXED);
        enif_mutex_unlock(st->mu);
        seg_free(g);
    }
}

void nif_ob_flush(nif_state *st)
{
    nif_ob_seal(st);
    if (!__atomic_load_n(&st->ob_head, __ATOMIC_ACQUIRE))
        return;
    enif_mutex_lock(st->ob_send);
    ob_send_some(st, NULL, 0, 0);
    enif_mutex_unlock(st->ob_send);
}

int nif_ob_post(nif_state *st, const ErlNifPid *pid, ERL_NIF_TERM t, nif_ob_memo *memo,
                int event)
{
    if (st->cur || !st->pump_obj || (!event && !ob_pending(st)))
        return 0;
    nif_seg *g = st->ob_cur;
    if (g && g->n == SEG_MAX) {
        nif_ob_seal(st);
        g = NULL;
    }
    /* the pump is behind: help it */
    if (!g && __atomic_load_n(&st->ob_items, __ATOMIC_RELAXED) >= OB_MAX)
        nif_ob_flush(st);
    if (!g && !(g = st->ob_cur = seg_new(st)))
        goto direct;
    if (g->n == g->cap) {
        ob_item *it = enif_realloc(g->it, 2 * g->cap * sizeof *it);
        if (!it)
            goto direct;
        g->it = it;
        g->cap *= 2;
    }
    ERL_NIF_TERM c;
    if (memo && memo->gen == g->gen) {
        c = memo->t;
    } else {
        c = enif_make_copy(g->env, t);
        if (memo) {
            memo->gen = g->gen;
            memo->t = c;
        }
    }
    g->it[g->n].pid = *pid;
    g->it[g->n].t = c;
    g->n++;
    return 1;
direct:
    /* out of memory: what is queued goes first, then this one */
    nif_ob_flush(st);
    return 0;
}

int nif_ob_help(nif_state *st, ErlNifEnv *env, uint64_t t0)
{
    if (enif_mutex_trylock(st->ob_send) != 0)
        return 0; /* the pump is at it */
    int empty = ob_send_some(st, env, t0, 1);
    enif_mutex_unlock(st->ob_send);
    return empty;
}

/* ------------------------------------------------------------ the pump */

/* One shard's part of a pump/0 call: 1 while messages are left. */
static int pump_shard(nif_state *st, ErlNifEnv *env, uint64_t t0)
{
    int sending = enif_mutex_trylock(st->ob_send) == 0;
    if (sending) {
        int empty = ob_send_some(st, env, t0, 1);
        enif_mutex_unlock(st->ob_send);
        if (!empty)
            return 1;
    }
    /* Else the loop thread is flushing: it sends all that is sealed, and
     * what it seals later is signalled again. After all sent: a segment
     * sealed meanwhile was not signalled, so go on. */
    enif_mutex_lock(st->mu);
    int more = sending && st->ob_head != NULL;
    if (!more)
        st->pump_signalled = 0;
    enif_mutex_unlock(st->mu);
    return more;
}

/* The pump serves every shard: each shard's outbox in turn, from the one
 * after the last it served, until the time is spent (checked before each
 * shard too, so a call does not send 16 more messages per shard past it). */
ERL_NIF_TERM nif_pump_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    static unsigned next; /* the pump is one process: one caller at a time */
    nif_lib *lib = enif_priv_data(env);
    uint64_t t0 = nif_mono_ns();
    int more = 0;
    unsigned first = next % lib->n;
    for (unsigned k = 0; k < lib->n; k++) {
        unsigned i = (first + k) % lib->n;
        if (nif_mono_ns() - t0 >= PUMP_BUDGET_NS) {
            next = i; /* the rest at the next call */
            return A.more;
        }
        if (pump_shard(lib->sh[i], env, t0))
            more = 1;
        next = i + 1;
    }
    return more ? A.more : A.done;
}

/* The pump given (pump_set/1, after each open): the loop thread flushes
 * what the previous one left and watches the new one; none while the
 * context is closed (the close drops it). Loop thread. */
void nif_pump_set(nif_state *st, ErlNifEnv *env, ERL_NIF_TERM pid_term)
{
    ErlNifPid pid;
    if (!st->ctx || !enif_get_local_pid(env, pid_term, &pid))
        return; /* closed meanwhile: the next open gives it again */
    nif_pump_drop(st);
    nif_pump *p = enif_alloc_resource(nif_pump_type, sizeof *p);
    if (!p)
        return;
    p->st = st;
    nif_state_ref(st);
    if (enif_monitor_process(st->cur, p, &pid, &p->mon) != 0) {
        enif_release_resource(p); /* not alive */
        return;
    }
    st->pump = pid;
    st->pump_obj = p;
}

void nif_pump_drop(nif_state *st)
{
    nif_pump *p = st->pump_obj;
    if (!p)
        return;
    nif_ob_flush(st);
    st->pump_obj = NULL;
    enif_mutex_lock(st->mu);
    st->pump_signalled = 0;
    if (st->pump_down == p)
        st->pump_down = NULL;
    enif_mutex_unlock(st->mu);
    enif_demonitor_process(st->cur, p, &p->mon);
    enif_release_resource(p);
}

void nif_pump_check(nif_state *st)
{
    enif_mutex_lock(st->mu);
    int down = st->pump_down != NULL && st->pump_down == st->pump_obj;
    enif_mutex_unlock(st->mu);
    if (down)
        nif_pump_drop(st);
}

static void pump_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_state_unref(((nif_pump *)obj)->st);
}

/* Any thread: the loop thread drops the pump at its next turn. */
static void pump_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    (void)env;
    (void)pid;
    (void)mon;
    nif_state *st = ((nif_pump *)obj)->st;
    enif_mutex_lock(st->mu);
    st->pump_down = obj;
    nif_wake_loop(st);
    enif_mutex_unlock(st->mu);
}

int nif_pump_open_type(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {.dtor = pump_dtor, .down = pump_down};
    nif_pump_type = enif_open_resource_type_x(env, "council_pump", &init, flags, NULL);
    return nif_pump_type ? 0 : -1;
}
