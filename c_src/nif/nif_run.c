/* nif_run.c - a run and the pid that stands for it (see nif.h).
 *
 * What it is for: the NIF's side of docs/protocol.md "Calls on a run pid".
 * A run's pid is a tiny BEAM process (CouncilEx.Nif.Run) that holds this
 * record's resource and hands every call, cast, system message and other
 * message to the core (the loop thread, or the NIF call itself when it
 * drives the core, nif.h); calls are answered through the pid
 * ({'$council_reply', From, Reply}, or the NIF call's return when it
 * carried the call out; the pid passes it on with gen:reply, so a caller
 * whose call has ended, e.g. by the pid's exit, never gets a stray
 * reply), and tells the pid when the run has ended:
 *   {'$council_end', Reason}                      (no awaiters), or
 *   {'$council_end', Reason, [From], Outcome}     (answer them, then exit)
 * The pid then exits with Reason, so links and monitors see what the C
 * node's run processes give: normal (completed), {shutdown, cancelled},
 * {shutdown, {failed, Errors}}, the reason of GenServer.stop, shutdown
 * (the library's stop cancels every run). A pid that dies first (a linked
 * process's exit, a kill) drops its handle: the run is cancelled and its
 * awaiters (who got the pid's DOWN) are dropped.
 * The end is finished like the C node's: the run's events (its terminal
 * one last) are handed out first, then awaiters are answered, then the
 * pid exits, so subscribers see the terminal event before the DOWN.
 *
 * Memory. The record is the loop's (malloc'ed, with the run id in its
 * block); the pid holds its handle, a resource object with nothing but a
 * pointer to it. The handle's destructor is how the loop learns that the
 * pid is gone: the pid's exit drops the only term that holds it (the loop
 * keeps no reference once the pid has it), so no monitor is needed (a
 * resource monitor costs ~220 bytes a run: ERTS's monitor record and the
 * resource's monitor block). The record is "released" (no longer the
 * run's: out of the index and the lists, the run let go) when the pid is
 * told to exit or is found gone, and freed once its handle has ended too
 * (st->gone, nif_runs_reap), so a handle never points at freed memory.
 *
 * Reads without the loop: while a record is held by the loop it is in the
 * index (st->runs, by registry and run id, under the rwlock st->idx) with a
 * snapshot of the run's summary, which the loop refreshes when the run
 * begins, when a round starts or completes (the core's change watch,
 * called as the change is published: no subscription, so a run nobody
 * subscribed to builds no events) and when it ends (its end watcher, at
 * once, so that a cancel's caller reads the new status right after).
 * :state on a run pid
 * and whereis / state by id are answered from there on the calling
 * scheduler, in the C node's terms; a run no longer in the index (ended)
 * is the loop's to answer.
 * Under the drive lock only (nif.h), except nif_run_id_of (immutable id),
 * the readers of the index and the handle's destructor (which hands the
 * record over).
 */
#include <stdlib.h>
#include <string.h>

#include "event_term.h"
#include "nif.h"
#include "run_topic.h"

/* Callers waiting in :await on one run (as the C node). */
#define MAX_AWAITERS 10000

struct nif_run {
    nif_state *st;          /* the shard the run lives in */
    council_run *run;       /* one reference; NULL once released */
    ErlNifPid pid;
    ErlNifPid server;
    struct nif_run_x *x;    /* awaiters, the stop reason, beam calls (NULL:
                               none yet) */
    union {
        void *handle;       /* the loop's reference on the handle until the
                               pid has it (nif_run_announce) */
        nif_run *gone_next; /* then, once the handle has ended: in st->gone
                               (under st->mu) */
    };
    cn_dl link;             /* in st->live; in st->ending once the end is reported */
    /* the index's link (under st->idx, as everything below but the flags
     * and the id) */
    cn_hlink hl;            /* in st->runs */
    /* the summary as of its last refresh; the strings are borrowed from the
     * run (its spec's round names, its council and registry), valid while
     * the record holds the run, which it does while it is in the index:
     * they are read only there */
    int64_t s_started;
    const char *s_round;    /* NULL: no round running */
    const char *council, *registry;
    unsigned s_round_idx, s_rounds;
    uint32_t s_ver;         /* counts the refreshes (a run pid's cached :state) */
    uint32_t id_len;
    uint8_t s_status;       /* a council_status */
    uint8_t indexed;
    uint8_t snap_ok;        /* 0: not kept (no change watch): ask the loop */
    uint8_t s_ended;        /* the core reported the end: whereis is the loop's */
    uint8_t settled;        /* atomic: released (read by the handle's destructor) */
    /* under the drive lock only */
    uint8_t has_server : 1 /* cleared when it goes down */, watching : 1, ending : 1,
        released : 1;
    /* immutable: the run id, followed by a NUL, in one block with the
     * record (read by run_id after the record has let the run go) */
    char id[];
};

/* What only some runs need, made on first use: callers waiting in :await
 * (their From terms, newest first) and the exit reason chosen by a stop,
 * in an env made with the first of them; the beam provider's calls of the
 * run (nif_beam.c's entries). */
typedef struct nif_run_x {
    ErlNifEnv *env;         /* NULL until an awaiter or a reason is kept */
    ERL_NIF_TERM awaiters;
    ERL_NIF_TERM reason;
    unsigned n_await;
    int has_reason;
    cn_dl calls;
} nif_run_x;

/* The handle (the resource object a run pid holds): the record. */
typedef struct run_handle {
    nif_run *r;
} run_handle;

static nif_run *of_handle(void *obj) { return ((run_handle *)obj)->r; }

nif_state *nif_run_shard(void *obj) { return of_handle(obj)->st; }

nif_run *nif_run_of(const council_run *run)
{
    nif_run *r = run ? council_run_get_user_data(run) : NULL;
    return r && !r->released ? r : NULL;
}

const ErlNifPid *nif_run_pid(const nif_run *r) { return &r->pid; }
const ErlNifPid *nif_run_server(const nif_run *r) { return r->has_server ? &r->server : NULL; }
void nif_run_server_gone(nif_run *r) { r->has_server = 0; }
static nif_run_x *run_x(nif_run *r);

cn_dl *nif_run_calls(nif_run *r) { return r->x ? &r->x->calls : NULL; }

cn_dl *nif_run_calls_make(nif_run *r)
{
    nif_run_x *x = run_x(r);
    return x ? &x->calls : NULL;
}

int nif_run_id_of(ErlNifEnv *env, void *obj, ERL_NIF_TERM *out)
{
    nif_run *r = of_handle(obj); /* a record handed out always has its id */
    *out = nif_binary(env, r->id, r->id_len);
    return 1;
}

static nif_run_x *run_x(nif_run *r)
{
    if (r->x)
        return r->x;
    nif_run_x *x = enif_alloc(sizeof *x);
    if (!x)
        return NULL;
    memset(x, 0, sizeof *x);
    cn_dl_init(&x->calls);
    return r->x = x;
}

/* run_x with its env (NULL when out of memory). */
static nif_run_x *run_x_env(nif_run *r)
{
    nif_run_x *x = run_x(r);
    if (!x || x->env)
        return x;
    if (!(x->env = enif_alloc_env()))
        return NULL;
    x->awaiters = enif_make_list(x->env, 0);
    return x;
}

/* ------------------------------------------------------------ the index */

static uint64_t key_hash(const char *registry, const void *id, size_t len)
{
    return nif_hash_bytes(id, len, nif_hash_bytes(registry, strlen(registry), NIF_HASH_SEED));
}

int nif_index_init(nif_state *st)
{
    if (cn_htab_init(&st->runs, 256) || !(st->idx = enif_rwlock_create("council_nif.index")))
        return -1;
    return 0;
}

void nif_index_free(nif_state *st)
{
    if (st->idx)
        enif_rwlock_destroy(st->idx);
    cn_htab_fini(&st->runs);
}

static void index_add(nif_state *st, nif_run *r)
{
    uint64_t h = key_hash(r->registry, r->id, r->id_len);
    enif_rwlock_rwlock(st->idx);
    cn_htab_add(&st->runs, &r->hl, h);
    r->indexed = 1;
    enif_rwlock_rwunlock(st->idx);
}

static void index_remove(nif_state *st, nif_run *r)
{
    if (!r->indexed)
        return;
    enif_rwlock_rwlock(st->idx);
    cn_htab_del(&st->runs, &r->hl);
    r->indexed = 0;
    enif_rwlock_rwunlock(st->idx);
}

/* The summary into the snapshot (under the drive lock). */
static void snap_refresh(nif_state *st, nif_run *r)
{
    council_summary s;
    council_run_summary(r->run, &s);
    enif_rwlock_rwlock(st->idx);
    r->s_ended = s.status != COUNCIL_PENDING && s.status != COUNCIL_RUNNING;
    r->s_status = (uint8_t)s.status;
    r->s_round = s.current_round; /* the spec's name (or a static one) */
    r->s_round_idx = s.current_round_idx;
    r->s_rounds = s.rounds_completed;
    r->s_started = s.started_at_us;
    r->s_ver++;
    enif_rwlock_rwunlock(st->idx);
}

/* The core's change watch (council_run_watch_changes): the run has begun,
 * or a round has started or completed. Called as the change is published,
 * so the snapshot is new before any subscriber can see the event. */
static void snap_changed(council_run *run, void *arg)
{
    (void)run;
    nif_run *r = arg;
    if (!r->released)
        snap_refresh(r->st, r);
}

void nif_run_begun(nif_state *st, nif_run *r) { snap_refresh(st, r); }

/* The C node's summary map. Keys in term order (atoms by their text):
 * enif_make_map_from_arrays sorts them, and already sorted keys are the
 * cheapest to sort (this is on every state read by id). */
static ERL_NIF_TERM summary_of(ErlNifEnv *env, const nif_run *r)
{
    ERL_NIF_TERM keys[7] = {A.council, A.current_round, A.registry, A.rounds_completed,
                            A.run_id,  A.started_at,    A.status_};
    ERL_NIF_TERM round = A.nil;
    if (r->s_round) {
        ERL_NIF_TERM rk[2] = {A.idx, A.name}, rv[2];
        rv[0] = enif_make_uint(env, r->s_round_idx);
        rv[1] = nif_binary(env, r->s_round, strlen(r->s_round));
        if (!enif_make_map_from_arrays(env, rk, rv, 2, &round))
            return 0;
    }
    ERL_NIF_TERM vals[7] = {
        nif_binary(env, r->council, strlen(r->council)),
        round,
        nif_binary(env, r->registry, strlen(r->registry)),
        enif_make_uint(env, r->s_rounds),
        nif_binary(env, r->id, r->id_len),
        enif_make_int64(env, r->s_started),
        (unsigned)r->s_status < sizeof A.statuses / sizeof A.statuses[0]
            ? A.statuses[r->s_status]
            : enif_make_atom(env, council_status_name((council_status)r->s_status)),
    };
    ERL_NIF_TERM map;
    return enif_make_map_from_arrays(env, keys, vals, 7, &map) ? map : 0;
}

int nif_run_state_of(ErlNifEnv *env, void *obj, ERL_NIF_TERM cached, ERL_NIF_TERM *out)
{
    nif_run *r = of_handle(obj);
    const ERL_NIF_TERM *el;
    int arity, ok = 0;
    unsigned ver;
    int has_cached = enif_get_tuple(env, cached, &arity, &el) && arity == 2 &&
                     enif_get_uint(env, el[0], &ver);
    enif_rwlock_rlock(r->st->idx);
    if (r->indexed && r->snap_ok) {
        if (has_cached && ver == r->s_ver) {
            *out = cached;
            ok = 1;
        } else {
            ERL_NIF_TERM s = summary_of(env, r);
            if (s) {
                *out = enif_make_tuple2(env, enif_make_uint(env, r->s_ver), nif_ok(env, s));
                ok = 1;
            }
        }
    }
    enif_rwlock_runlock(r->st->idx);
    return ok;
}

int nif_runs_fast(nif_state *st, ErlNifEnv *env, int op, const char *registry,
                  const unsigned char *id, size_t len, ERL_NIF_TERM *out)
{
    if (!registry)
        registry = COUNCIL_DEFAULT_REGISTRY;
    uint64_t h = key_hash(registry, id, len);
    int ok = 0;
    enif_rwlock_rlock(st->idx);
    for (cn_hlink *l = cn_htab_first(&st->runs, h); l; l = cn_htab_next(l)) {
        nif_run *r = CN_HTAB_ENTRY(l, nif_run, hl);
        if (r->id_len != len || memcmp(r->id, id, len) != 0 ||
            strcmp(r->registry, registry) != 0)
            continue;
        /* a pid that has exited (its monitor's DOWN may not be carried
         * out yet): the loop answers, as for a run that has ended */
        if (!enif_is_process_alive(env, &r->pid))
            break;
        if (op == NIF_FAST_WHEREIS) {
            /* a run that has ended is no longer anyone's (its events may
             * be out already, its pid not gone yet): unknown_run, from
             * the loop */
            if (r->s_ended)
                break;
            *out = nif_ok(env, enif_make_pid(env, &r->pid));
            ok = 1;
        } else if (r->snap_ok) {
            ERL_NIF_TERM s = summary_of(env, r);
            if (s) {
                *out = nif_ok(env, s);
                ok = 1;
            }
        }
        break;
    }
    enif_rwlock_runlock(st->idx);
    return ok;
}

/* Keeps reason as the exit reason, unless one was chosen before. */
static void keep_reason(nif_run *r, ErlNifEnv *src, ERL_NIF_TERM reason)
{
    nif_run_x *x = r->x && r->x->has_reason ? NULL : run_x_env(r);
    if (!x)
        return;
    x->reason = src ? enif_make_copy(x->env, reason) : reason;
    x->has_reason = 1;
}

/* ------------------------------------------------------------ the end */

static void on_run_end(council_run *run, void *arg)
{
    (void)run;
    nif_run *r = arg;
    r->watching = 0;
    if (r->released || r->ending)
        return;
    r->ending = 1;
    cn_dl_del(&r->link);
    cn_dl_push(&r->st->ending, &r->link);
    snap_refresh(r->st, r); /* the end's status, before any reply goes out */
    /* finished outside the core's callbacks: whoever drives calls
     * nif_runs_finish after each command and each step */
}

/* The record leaves the loop: whatever still waits for the pid is dropped
 * and the run goes. The record itself stays until its handle is gone
 * (nif_runs_reap). */
static void release(nif_state *st, nif_run *r)
{
    if (r->released)
        return;
    r->released = 1;
    __atomic_store_n(&r->settled, 1, __ATOMIC_RELEASE);
    index_remove(st, r);
    if (r->snap_ok)
        council_run_unwatch_changes(r->run, snap_changed, r); /* gone at the end */
    r->snap_ok = 0;
    if (r->watching)
        council_run_unwatch(r->run, on_run_end, r);
    r->watching = 0;
    r->ending = 0;
    cn_dl_del(&r->link);
    nif_beam_gone(st, r);
    if (r->x) {
        if (r->x->env)
            enif_free_env(r->x->env);
        enif_free(r->x);
        r->x = NULL;
    }
    council_run_set_user_data(r->run, NULL);
    council_run_unref(r->run);
    r->run = NULL;
    st->runs_alive--;
}

/* The exit reason: the one chosen before (a stop, the library's stop),
 * else what the run's end says. Built in env. */
static ERL_NIF_TERM exit_reason(nif_state *st, nif_run *r, ErlNifEnv *env)
{
    if (r->x && r->x->has_reason)
        return enif_make_copy(env, r->x->reason);
    switch (council_run_status(r->run)) {
    case COUNCIL_COMPLETED:
        return A.normal;
    case COUNCIL_FAILED: {
        nif_x_reset(st);
        ERL_NIF_TERM errors = 0;
        if (cn_errors_term(&st->x, council_run_result(r->run)) == 0)
            errors = nif_x_term(st, env);
        return enif_make_tuple2(env, A.shutdown,
                                errors ? enif_make_tuple2(env, A.failed, errors) : A.failed);
    }
    default:
        return enif_make_tuple2(env, A.shutdown, A.cancelled);
    }
}

static ERL_NIF_TERM outcome_term(nif_state *st, const council_run *run, ErlNifEnv *env)
{
    nif_x_reset(st);
    ERL_NIF_TERM t = 0;
    if (cn_outcome_term(&st->x, run) == 0)
        t = nif_x_term(st, env);
    return t ? t : nif_error(env, A.enomem);
}

static void finish(nif_state *st, nif_run *r)
{
    ErlNifEnv *env = st->out;
    ERL_NIF_TERM reason = exit_reason(st, r, env), msg;
    if (r->x && r->x->n_await)
        msg = enif_make_tuple4(env, A.council_end, reason, enif_make_copy(env, r->x->awaiters),
                               outcome_term(st, r->run, env));
    else
        msg = enif_make_tuple2(env, A.council_end, reason);
    nif_send(st, &r->pid, msg);
    release(st, r);
}

void nif_runs_finish(nif_state *st)
{
    if (!st->ctx)
        return;
    /* records of pids gone: freed (or, a run still going, cancelled) by
     * whoever drives, so that the handles of ended runs need not wake the
     * loop thread (see nif_run_dtor) */
    if (__atomic_load_n(&st->gone, __ATOMIC_RELAXED))
        nif_runs_reap(st);
    if (cn_dl_empty(&st->ending))
        return;
    council_ctx_flush(st->ctx);
    while (!cn_dl_empty(&st->ending)) {
        nif_run *r = cn_dl_entry(st->ending.next, nif_run, link);
        cn_dl_del(&r->link);
        cn_dl_init(&r->link);
        r->ending = 0;
        finish(st, r);
    }
}

void nif_runs_shutdown(nif_state *st)
{
    /* the live runs are taken out first: a cancel moves its run to
     * st->ending (or releases it), which a walk of st->live would not
     * survive */
    cn_dl todo;
    cn_dl_take_all(&todo, &st->live);
    while (!cn_dl_empty(&todo)) {
        nif_run *r = cn_dl_entry(todo.next, nif_run, link);
        cn_dl_del(&r->link);
        cn_dl_push(&st->live, &r->link);
        council_status s = council_run_status(r->run);
        if (s == COUNCIL_PENDING || s == COUNCIL_RUNNING) {
            keep_reason(r, NULL, A.shutdown);
            council_run_cancel(r->run);
        }
    }
    nif_runs_finish(st);
}

int nif_run_settle(nif_state *st, council_run *run)
{
    nif_run *r = nif_run_of(run);
    if (!r || enif_is_process_alive(st->cur, &r->pid))
        return 0;
    /* as the end of its handle will: the run is cancelled, the record
     * released (its handle's end then only frees it) */
    council_run_cancel(r->run);
    release(st, r);
    return 1;
}

/* ------------------------------------------------------------ the handle's end */

/* Released records whose handles have ended, kept for whoever drives next
 * before the loop thread is woken to free them. */
#define GONE_BATCH 64

/* The handle is gone (its destructor, any thread): the pid that held it
 * has exited (or never got it), so nothing can reach the record but the
 * loop, which is told here. A record the loop released already (its run
 * ended and the pid was told to exit: the usual end) only needs freeing:
 * that waits for the next drive (nif_runs_finish) or a batch, so that a
 * run pid's exit does not wake the loop thread (which would then hold the
 * drive lock just as the next request could have been carried out
 * inline). A record not released (the pid died first) wakes it at once:
 * its run is to be cancelled. */
void nif_run_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_run *r = of_handle(obj);
    if (!r)
        return; /* made, then given up (out of memory) */
    nif_state *st = r->st;
    int settled = __atomic_load_n(&r->settled, __ATOMIC_ACQUIRE);
    enif_mutex_lock(st->mu);
    r->gone_next = st->gone;
    __atomic_store_n(&st->gone, r, __ATOMIC_RELAXED);
    if (!settled || ++st->n_gone >= GONE_BATCH)
        nif_wake_loop(st);
    enif_mutex_unlock(st->mu);
    nif_state_unref(st); /* the handle's */
}

static void run_free(nif_run *r) { free(r); }

void nif_runs_reap(nif_state *st)
{
    enif_mutex_lock(st->mu);
    nif_run *r = st->gone;
    __atomic_store_n(&st->gone, NULL, __ATOMIC_RELAXED);
    st->n_gone = 0;
    enif_mutex_unlock(st->mu);
    while (r) {
        nif_run *n = r->gone_next;
        if (!r->released) {
            /* the pid is gone (a linked process's exit, a kill): the run
             * is cancelled; its awaiters had the pid's DOWN already */
            if (r->run)
                council_run_cancel(r->run);
            release(st, r);
        }
        run_free(r);
        r = n;
    }
}

void nif_runs_reap_left(nif_state *st)
{
    /* after the loop: every record was released by then */
    for (nif_run *r = st->gone, *n; r; r = n) {
        n = r->gone_next;
        run_free(r);
    }
    st->gone = NULL;
}

/* ------------------------------------------------------------ making */

nif_run *nif_run_new(nif_state *st, council_run *run, const ErlNifPid *pid,
                     const ErlNifPid *server, int *dead)
{
    *dead = 0;
    if (!enif_is_process_alive(st->cur, (ErlNifPid *)pid)) {
        *dead = 1;
        return NULL;
    }
    size_t len;
    const char *id = council_run_id(run, &len);
    /* the id in the record's own block: no allocation of its own */
    nif_run *r = malloc(offsetof(nif_run, id) + len + 1);
    run_handle *h = enif_alloc_resource(nif_run_type, sizeof *h);
    if (!r || !h) {
        free(r);
        if (h) {
            h->r = NULL;
            enif_release_resource(h);
        }
        return NULL;
    }
    memset(r, 0, offsetof(nif_run, id));
    r->st = st;
    h->r = r;
    r->handle = h;
    nif_state_ref(st); /* the handle's */
    cn_dl_init(&r->link);
    memcpy(r->id, id, len);
    r->id[len] = 0;
    r->id_len = (uint32_t)len;
    r->council = council_run_council(run);
    r->registry = council_run_registry(run);
    if (!r->council)
        r->council = "";
    if (!r->registry)
        r->registry = COUNCIL_DEFAULT_REGISTRY;
    r->pid = *pid;
    if (server) {
        r->server = *server;
        r->has_server = 1;
    }
    r->run = council_run_ref(run);
    council_run_set_user_data(run, r);
    if (council_run_watch(run, on_run_end, r) == 0)
        r->watching = 1;
    cn_dl_push(&st->live, &r->link);
    st->runs_alive++;
    /* the snapshot, then the index: reads no longer need the loop */
    r->snap_ok = council_run_watch_changes(run, snap_changed, r) == 0;
    snap_refresh(st, r);
    index_add(st, r);
    return r;
}

void nif_run_announce(nif_state *st, nif_run *r, const ErlNifPid *caller, ERL_NIF_TERM ref)
{
    ErlNifEnv *env = st->out;
    void *h = r->handle;
    r->handle = NULL;
    nif_send(st, &r->pid,
             enif_make_tuple4(env, A.council_run, enif_make_resource(env, h),
                              r->has_server ? enif_make_pid(env, &r->server) : A.nil,
                              caller ? enif_make_tuple2(env, enif_make_pid(env, caller),
                                                        enif_make_copy(env, ref))
                                     : A.nil));
    /* from now on the pid's term holds the handle (a pid that has exited
     * dropped it with the message: its destructor tells the loop) */
    enif_release_resource(h);
}

/* ------------------------------------------------------------ calls */

static void reply(nif_state *st, nif_run *r, nif_cmd *c, ERL_NIF_TERM from, ERL_NIF_TERM rep)
{
    if (enif_is_identical(from, A.nil) || nif_reply_inline(st, c, rep))
        return; /* a cast, or the pid has it back from the NIF call */
    ErlNifEnv *env = st->out;
    nif_send(st, &r->pid,
             enif_make_tuple3(env, A.council_reply, enif_make_copy(env, from), rep));
}

static ERL_NIF_TERM summary(nif_state *st, nif_run *r, ErlNifEnv *env)
{
    council_summary s;
    council_run_summary(r->run, &s);
    nif_x_reset(st);
    ERL_NIF_TERM t = 0;
    if (cn_summary_term(&st->x, &s) == 0)
        t = nif_x_term(st, env);
    return t;
}

static ERL_NIF_TERM subscription(nif_state *st, nif_run *r, ErlNifEnv *cenv,
                                 ERL_NIF_TERM pid_term, int subscribe)
{
    ErlNifPid pid;
    char *topic;
    size_t len;
    if (!enif_get_local_pid(cenv, pid_term, &pid) || !st->subs)
        return nif_error(st->out, A.badarg);
    if (!(topic = cn_run_topic(r->id, r->id_len, &len)))
        return nif_error(st->out, A.enomem);
    int rc = 0;
    if (subscribe)
        rc = nif_subs_add(st->subs, topic, len, &pid, NIF_SUB_PLAIN);
    else
        nif_subs_remove(st->subs, topic, len, &pid);
    free(topic);
    return rc == 0 ? A.ok : nif_error(st->out, nif_reason(rc, A.badarg));
}

static void run_call(nif_state *st, nif_run *r, nif_cmd *c)
{
    ErlNifEnv *cenv = c->env, *env = st->out;
    ERL_NIF_TERM from = c->a, req = c->b, rep = 0;
    const ERL_NIF_TERM *el;
    int arity;
    if (enif_is_identical(req, A.cancel)) {
        reply(st, r, c, from, A.ok); /* ok first, then the cancel */
        council_run_cancel(r->run);
        return;
    }
    if (enif_is_identical(from, A.nil))
        return; /* other casts are ignored */
    if (enif_is_identical(req, A.run_id)) {
        rep = nif_binary(env, r->id, r->id_len);
    } else if (enif_is_identical(req, A.state)) {
        ERL_NIF_TERM s = summary(st, r, env);
        rep = s ? nif_ok(env, s) : nif_error(env, A.enomem);
    } else if (enif_is_identical(req, A.sys_state)) {
        ERL_NIF_TERM s = summary(st, r, env);
        rep = s ? s : nif_error(env, A.enomem);
    } else if (enif_is_identical(req, A.result)) {
        rep = outcome_term(st, r->run, env);
    } else if (enif_is_identical(req, A.await)) {
        nif_run_x *x = run_x_env(r);
        if (!x) {
            rep = nif_error(env, A.enomem);
        } else if (x->n_await >= MAX_AWAITERS) {
            rep = nif_error(env, A.limit);
        } else {
            /* answered at the end */
            x->awaiters = enif_make_list_cell(x->env, enif_make_copy(x->env, from), x->awaiters);
            x->n_await++;
            return;
        }
    } else if (enif_get_tuple(cenv, req, &arity, &el) && arity == 2 &&
               (enif_is_identical(el[0], A.subscribe) ||
                enif_is_identical(el[0], A.unsubscribe))) {
        rep = subscription(st, r, cenv, el[1], enif_is_identical(el[0], A.subscribe));
    } else {
        rep = nif_error2(env, A.unknown_call, nif_summary(cenv, req));
    }
    reply(st, r, c, from, rep);
}

void nif_run_cmd(nif_state *st, nif_cmd *c)
{
    nif_run *r = of_handle(c->obj);
    if (r->released || !st->ctx)
        return; /* told to exit, or gone: nothing to answer */
    switch (c->kind) {
    case CMD_RUN_CALL:
        run_call(st, r, c);
        break;
    case CMD_RUN_INFO:
        nif_beam_info(st, r, c->env, c->a); /* anything else is dropped */
        break;
    case CMD_RUN_STOP: {
        council_status s = council_run_status(r->run);
        if (s == COUNCIL_PENDING || s == COUNCIL_RUNNING) {
            keep_reason(r, c->env, c->a);
            council_run_cancel(r->run);
        }
        break;
    }
    default:
        break;
    }
}
