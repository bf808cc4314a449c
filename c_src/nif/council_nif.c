/* council_nif.c - the core inside the VM: the NIF library behind
 * `config :council_ex, backend: :nif` (lib/council_ex/nif.ex), answering
 * the requests of docs/protocol.md as the C node does, with no node and no
 * distribution (see nif.h for the threads and the files).
 *
 * This file: load/upgrade/unload, the shards and the routing of requests
 * to them, the NIF functions (each carries its request out itself when it
 * can take its shard's drive lock, at once or within SPIN_NS, else copies
 * it into a command, queues it and returns: no scheduler waits for the
 * core longer), the command queue, the loop thread and the inline path.
 *
 * Life: load makes the shards (nif.h) and starts their loop threads, with
 * no context yet; {open, Config} to each shard (CouncilEx.Nif.Server,
 * when the application starts) makes its context and close (the
 * application's stop) cancels every run, as the C node's SIGTERM does,
 * and frees it. An upgrade (a new version of the module loads the
 * library again) hands the running shards to the new instance, which
 * takes the resource types over; the old instance's unload then only
 * drops its count. The unload of the last instance stops every loop
 * (runs still going cancelled and their pids told, subscriptions
 * dropped) and joins their threads. ERTS calls unload once the module is
 * purged and no object of the library's resource types is left: at once
 * after the application's stop; while runs go on (their pids hold one
 * each) or pids stay subscribed, the loop serves them until they are
 * gone, and while the context is open (its pump's monitor holds one:
 * nif_outbox.c). The state is freed with the last of the instances and the
 * resource objects that point at it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "nif.h"

ErlNifResourceType *nif_run_type;
ErlNifResourceType *nif_pid_type;

/* ------------------------------------------------------------ state */

static void lib_free(nif_lib *lib)
{
    council_run_quota_free(lib->quota);
    enif_free(lib);
}

static void state_free(nif_state *st)
{
    /* commands queued by down callbacks after the loop ended */
    for (nif_cmd *c = st->head, *n; c; c = n) {
        n = c->next;
        if (c->obj)
            enif_release_resource(c->obj);
        if (c->env)
            enif_free_env(c->env);
        enif_free(c);
    }
    nif_runs_reap_left(st);
    if (st->wake_r >= 0)
        close(st->wake_r);
    if (st->wake_w >= 0)
        close(st->wake_w);
    if (st->mu)
        enif_mutex_destroy(st->mu);
    if (st->drive)
        enif_mutex_destroy(st->drive);
    if (st->ob_send)
        enif_mutex_destroy(st->ob_send);
    if (st->out)
        enif_free_env(st->out);
    nif_index_free(st);
    ei_x_free(&st->x);
    nif_etf_cache_free(st->etf);
    nif_lib *lib = st->lib;
    enif_free(st);
    if (lib && __atomic_sub_fetch(&lib->refs, 1, __ATOMIC_ACQ_REL) == 0)
        lib_free(lib);
}

void nif_state_ref(nif_state *st) { __atomic_add_fetch(&st->refs, 1, __ATOMIC_ACQ_REL); }

void nif_state_unref(nif_state *st)
{
    if (__atomic_sub_fetch(&st->refs, 1, __ATOMIC_ACQ_REL) == 0)
        state_free(st);
}

/* ------------------------------------------------------------ shards */

#define SUB_MARK ":sub:"
#define SUB_MARK_LEN (sizeof SUB_MARK - 1)
#define PREFIX_LEN (sizeof COUNCIL_TOPIC_PREFIX - 1)

/* A shard from a hash: its high half scaled to n. The low bits of
 * nif_hash_bytes depend on few of the last bytes (a product's low bits
 * depend only on its factors' low bits): with the low bits, two
 * characters varied near the end of an id (shard_run_id) reached only
 * some shards, and a start for another drew 4,096 ids in vain. */
static unsigned shard_of_hash(uint64_t h, unsigned n)
{
    return (unsigned)(((h >> 32) * n) >> 32);
}

unsigned nif_key_shard(unsigned n, const void *id, size_t len)
{
    if (n <= 1)
        return 0;
    const unsigned char *s = id;
    /* most ids have no ':' at all (generated ones never) */
    const unsigned char *sub = memchr(s, ':', len) ? memmem(s, len, SUB_MARK, SUB_MARK_LEN) : NULL;
    if (sub)
        len = (size_t)(sub - s);
    return shard_of_hash(nif_hash_bytes(s, len, NIF_HASH_SEED), n);
}

unsigned nif_topic_shard(unsigned n, const void *topic, size_t len)
{
    if (n <= 1)
        return 0;
    if (len >= PREFIX_LEN && memcmp(topic, COUNCIL_TOPIC_PREFIX, PREFIX_LEN) == 0)
        return nif_key_shard(n, (const char *)topic + PREFIX_LEN, len - PREFIX_LEN);
    return shard_of_hash(nif_hash_bytes(topic, len, NIF_HASH_SEED), n);
}

/* ------------------------------------------------------------ sending */

int nif_send(nif_state *st, const ErlNifPid *pid, ERL_NIF_TERM t)
{
    int sent = nif_ob_post(st, pid, t, NULL, 0) || enif_send(st->cur, pid, st->out, t);
    enif_clear_env(st->out);
    return sent;
}

int nif_send_now(nif_state *st, const ErlNifPid *pid, ERL_NIF_TERM t)
{
    if (!st->cur)
        nif_ob_flush(st);
    int sent = enif_send(st->cur, pid, st->out, t);
    enif_clear_env(st->out);
    return sent;
}

void nif_x_reset(nif_state *st)
{
    st->x.index = 0;
    ei_x_encode_version(&st->x);
}

ERL_NIF_TERM nif_x_term(nif_state *st, ErlNifEnv *env)
{
    return nif_etf_own(env, &st->etf, st->x.buff, (size_t)st->x.index);
}

/* ------------------------------------------------------------ waking */

void nif_wake_loop(nif_state *st)
{
    if (st->wake_pending)
        return;
    st->wake_pending = 1;
    ssize_t n;
    do
        n = write(st->wake_w, "w", 1);
    while (n < 0 && errno == EINTR);
}

/* The loop thread, after a sleep: takes the wake-up (what was queued
 * before it is in the queue now; what comes later writes again). */
static void wake_drain(nif_state *st)
{
    enif_mutex_lock(st->mu);
    if (st->wake_pending) {
        char buf[16];
        while (read(st->wake_r, buf, sizeof buf) > 0)
            ;
        st->wake_pending = 0;
    }
    enif_mutex_unlock(st->mu);
}

/* ------------------------------------------------------------ queue */

int nif_queue(nif_state *st, nif_cmd *c)
{
    c->next = NULL;
    enif_mutex_lock(st->mu);
    if (st->stopping) {
        enif_mutex_unlock(st->mu);
        return -1;
    }
    int was_empty = st->head == NULL;
    if (st->tail)
        st->tail->next = c;
    else
        st->head = c;
    st->tail = c;
    /* one wake-up per batch: the loop takes the whole queue at once */
    if (was_empty)
        nif_wake_loop(st);
    enif_mutex_unlock(st->mu);
    return 0;
}

void nif_queue_down(nif_state *st, int kind, void *obj, const ErlNifMonitor *mon)
{
    nif_cmd *c = enif_alloc(sizeof *c);
    if (!c)
        return;
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->obj = obj;
    c->mon = *mon;
    enif_keep_resource(obj);
    if (nif_queue(st, c) != 0) {
        enif_release_resource(obj);
        enif_free(c);
    }
}

static nif_cmd *take_all(nif_state *st, int *stopping)
{
    enif_mutex_lock(st->mu);
    nif_cmd *c = st->head;
    st->head = st->tail = NULL;
    *stopping = st->stopping;
    enif_mutex_unlock(st->mu);
    return c;
}

static void carry_out(nif_state *st, nif_cmd *c);

static void run_cmds(nif_state *st, nif_cmd *c)
{
    while (c) {
        nif_cmd *n = c->next;
        carry_out(st, c);
        if (c->obj)
            enif_release_resource(c->obj);
        if (c->env)
            enif_free_env(c->env);
        enif_free(c);
        c = n;
    }
}

/* ------------------------------------------------------------ the loop */

/* Whether libuv holds I/O watchers started since its last poll and not
 * yet given to epoll: it adds them at the start of its next poll, so the
 * loop thread's poll(2) on the backend fd would not see their descriptors
 * (a socket curl opened or an exec child's pipe, started by a step on a
 * scheduler or by a step's later phases) and only a timer or another
 * descriptor would wake it. The queue is uv/unix.h's watcher_queue in
 * uv_loop_t; empty, it points at itself. */
static int watchers_pending(const uv_loop_t *loop)
{
    return loop->watcher_queue[0] != (const void *)&loop->watcher_queue;
}

/* Whether the context has work ready now (deferred timers, events to
 * deliver, due timers, handles closing, watchers to register): a step
 * would not wait. Watchers count only while the loop is alive: a step of
 * a loop with no active handle returns before polling, so it would not
 * register them and the loop thread would step in vain. */
static int work_ready(council_ctx *ctx)
{
    const uv_loop_t *loop = council_ctx_uv_loop(ctx);
    return uv_backend_timeout(loop) == 0 || (watchers_pending(loop) && uv_loop_alive(loop));
}

/* The loop thread, holding the drive lock, with nothing ready: sleeps
 * until the loop's next timer, its I/O or a wake-up, without the lock (so
 * that schedulers may drive meanwhile), then steps once. With no context,
 * until a wake-up. */
static void loop_sleep(nif_state *st)
{
    council_ctx *ctx = st->ctx;
    struct pollfd p[2] = {{.fd = st->wake_r, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    int timeout = -1;
    if (ctx) {
        uv_loop_t *loop = council_ctx_uv_loop(ctx);
        uv_update_time(loop);
        timeout = uv_backend_timeout(loop);
        st->wake_at = timeout < 0 ? UINT64_MAX : uv_now(loop) + (uint64_t)timeout;
        p[1].fd = council_ctx_backend_fd(ctx); /* -1 (none): poll skips it */
    }
    nif_ob_seal(st); /* before a scheduler may drive */
    enif_mutex_unlock(st->drive);
    (void)poll(p, 2, timeout); /* EINTR: round again */
    __atomic_store_n(&st->loop_wants, 1, __ATOMIC_RELAXED);
    enif_mutex_lock(st->drive);
    __atomic_store_n(&st->loop_wants, 0, __ATOMIC_RELAXED);
    st->wake_at = 0;
    wake_drain(st);
    if (ctx)
        council_ctx_step(ctx, 0);
    nif_ob_seal(st);
}

static void *loop_main(void *arg)
{
    nif_state *st = arg;
    int stopping = 0;
    enif_mutex_lock(st->drive);
    for (;;) {
        /* (nif_runs_finish, below, frees the records of pids gone) */
        run_cmds(st, take_all(st, &stopping));
        if (stopping)
            break;
        nif_pump_check(st);
        nif_runs_finish(st);
        if (st->ctx && work_ready(st->ctx)) {
            council_ctx_step(st->ctx, 0);
            nif_ob_seal(st);
        } else {
            loop_sleep(st);
        }
    }
    /* the outbox is sent (the module's code, the pump's, is going), the
     * runs are cancelled and their pids told, then the context goes */
    nif_pump_drop(st);
    nif_ob_flush(st);
    nif_ctx_close(st);
    enif_mutex_unlock(st->drive);
    return NULL;
}

/* ------------------------------------------------------------ NIFs */

static nif_lib *lib_of(ErlNifEnv *env) { return enif_priv_data(env); }

/* The shard a normal scheduler tries first for a request free to go to
 * any shard (a start without a run id, above all): the schedulers are
 * numbered in the order of their first such request, and scheduler i
 * takes the shards i, i + S, i + 2S, ... (S: the scheduler threads) in
 * turn, one request after the other. So the runs of id-less starts spread
 * over every shard (each shard keeps only its share of max_retained), and
 * two schedulers do not take the same shards first. Other threads (dirty
 * schedulers) take shard 0. */
static __thread int sched_no = -1;
static __thread unsigned sched_turn;

static unsigned preferred(nif_lib *lib)
{
    if (sched_no < 0) {
        if (enif_thread_type() != ERL_NIF_THR_NORMAL_SCHEDULER)
            return 0;
        sched_no = (int)__atomic_fetch_add(&lib->next_pref, 1, __ATOMIC_RELAXED);
    }
    unsigned s = lib->nsched ? lib->nsched : 1;
    return ((unsigned)sched_no % s + s * sched_turn++) % lib->n;
}

/* Copying a request (enif_make_copy) costs time in proportion to its
 * size, and a scheduler thread must not be held for more than ~100 us: a
 * request is walked first, at most COPY_BUDGET terms deep into it, and one
 * that is larger (a big input given as a list or map, a deep term) is
 * copied on a dirty CPU scheduler instead. Binaries count as one term:
 * the copy of a reference-counted binary shares its bytes. A request is
 * carried out on the calling scheduler (inline, below) only when its
 * binaries hold at most INLINE_BYTES in all: the core reads a spec's JSON
 * and copies an input's bytes. */
#define COPY_BUDGET 2048
#define COPY_DEPTH 128
#define INLINE_BYTES (16 * 1024)

static int small_term(ErlNifEnv *env, ERL_NIF_TERM t, int *budget, size_t *bytes, int depth)
{
    if (--*budget < 0 || depth > COPY_DEPTH)
        return 0;
    switch (enif_term_type(env, t)) {
    case ERL_NIF_TERM_TYPE_LIST: {
        ERL_NIF_TERM head;
        while (enif_get_list_cell(env, t, &head, &t))
            if (--*budget < 0 || !small_term(env, head, budget, bytes, depth + 1))
                return 0;
        return 1;
    }
    case ERL_NIF_TERM_TYPE_TUPLE: {
        const ERL_NIF_TERM *el;
        int arity;
        if (!enif_get_tuple(env, t, &arity, &el) || arity > *budget)
            return 0;
        for (int i = 0; i < arity; i++)
            if (!small_term(env, el[i], budget, bytes, depth + 1))
                return 0;
        return 1;
    }
    case ERL_NIF_TERM_TYPE_MAP: {
        size_t n;
        ErlNifMapIterator it;
        ERL_NIF_TERM k, v;
        if (!enif_get_map_size(env, t, &n) || n > (size_t)*budget ||
            !enif_map_iterator_create(env, t, &it, ERL_NIF_MAP_ITERATOR_FIRST))
            return 0;
        int ok = 1;
        while (ok && enif_map_iterator_get_pair(env, &it, &k, &v)) {
            ok = small_term(env, k, budget, bytes, depth + 1) &&
                 small_term(env, v, budget, bytes, depth + 1);
            enif_map_iterator_next(env, &it);
        }
        enif_map_iterator_destroy(env, &it);
        return ok;
    }
    case ERL_NIF_TERM_TYPE_BITSTRING: {
        ErlNifBinary b;
        if (enif_inspect_binary(env, t, &b))
            *bytes += b.size;
        return 1;
    }
    default:
        return 1;
    }
}

/* What a NIF call may do with the request argv[from..argc): carry it out
 * inline (only on a normal scheduler), queue a copy made here, or run
 * again on a dirty scheduler to copy it there. */
enum { REQ_INLINE, REQ_QUEUE, REQ_DIRTY };

static int request_class(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[], int from)
{
    if (enif_thread_type() != ERL_NIF_THR_NORMAL_SCHEDULER)
        return REQ_QUEUE;
    int budget = COPY_BUDGET;
    size_t bytes = 0;
    for (int i = from; i < argc; i++)
        if (!small_term(env, argv[i], &budget, &bytes, 0))
            return REQ_DIRTY;
    return bytes <= INLINE_BYTES ? REQ_INLINE : REQ_QUEUE;
}

#define CLASS_OR_DIRTY(cls, name, from)                                                   \
    int cls = request_class(env, argc, argv, from);                                      \
    if (cls == REQ_DIRTY)                                                                \
        return enif_schedule_nif(env, #name, ERL_NIF_DIRTY_JOB_CPU_BOUND, name, argc, argv)

/* ------------------------------------------------------------ inline */

/* How long a scheduler that carries its request out steps the context
 * after it (the core's work that the request made ready: a run's rounds,
 * its end). A step is short (one round at most when members answer at
 * once), so a NIF call stays well under ~100 us; work left at the end
 * goes to the loop thread. */
#define INLINE_BUDGET_NS 40000
#define MAX_SUBS_GROWTH 64 /* a start's subscribers at most (nif_service.c) */

/* How long a NIF call whose shard is held by another thread (a scheduler
 * driving it, or its loop thread) waits for it, trying again, before it
 * queues its request instead: a drive is short (a request and at most
 * INLINE_BUDGET_NS of steps), and a queued request costs far more (the
 * loop thread woken, the reply sent through the outbox and a receive),
 * and makes the next callers meet a busy shard too. */
#define SPIN_NS 20000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The drive lock, if it is free or (spin) becomes free before t0 +
 * SPIN_NS, while the loop thread does not ask for it. */
static int drive_take(nif_state *st, uint64_t t0, int spin)
{
    for (;;) {
        if (__atomic_load_n(&st->loop_wants, __ATOMIC_RELAXED))
            return 0;
        if (enif_mutex_trylock(st->drive) == 0)
            return 1;
        if (!spin || nif_mono_ns() - t0 >= SPIN_NS)
            return 0;
        cpu_relax();
    }
}

/* The calling scheduler takes the drive lock if it is free (or frees
 * within SPIN_NS, when spin), the context open, no command queued (those
 * come first, and are the loop thread's) and the outbox empty (it sends what is there itself if it can before
 * INLINE_BUDGET_NS from t0): 1 when it drives from now on, with its env
 * as st->cur. */
static int drive_begin(nif_state *st, ErlNifEnv *env, uint64_t t0, int spin)
{
    if (!drive_take(st, t0, spin))
        return 0;
    /* a large table of ours about to grow (its rehash takes ms at a few
     * 100k entries) is left to the loop thread: a start adds one run to
     * the index and up to MAX_SUBS_GROWTH subscriptions */
    int ok = st->ctx != NULL && !st->no_inline &&
             !nif_htab_near_growth(&st->runs, 1) &&
             !nif_subs_near_growth(st->subs, MAX_SUBS_GROWTH);
    if (ok) {
        enif_mutex_lock(st->mu);
        ok = !st->head && !st->stopping;
        enif_mutex_unlock(st->mu);
    }
    /* what the loop thread left in the outbox goes first: this scheduler
     * sends it, if it can within the budget (the loop thread, which
     * fills the outbox, waits for the drive lock meanwhile) */
    if (ok && __atomic_load_n(&st->ob_head, __ATOMIC_ACQUIRE))
        ok = nif_ob_help(st, env, t0);
    if (!ok) {
        enif_mutex_unlock(st->drive);
        return 0;
    }
    st->cur = env;
    /* the loop's clock as a step would see it: timers started by the
     * request count from now, not from the loop thread's last turn */
    uv_update_time(council_ctx_uv_loop(st->ctx));
    return 1;
}

/* Whether the loop's backend fd has events: I/O is the loop thread's (it
 * sleeps on that fd), so a scheduler does not step into it. */
static int io_ready(council_ctx *ctx)
{
    struct pollfd p = {.fd = council_ctx_backend_fd(ctx), .events = POLLIN};
    return p.fd >= 0 && poll(&p, 1, 0) > 0;
}

/* Steps the context while work is ready, the budget from t0 lasts and
 * nothing is the loop thread's: no I/O waiting, and the timer it sleeps
 * until not due yet (due timers may be many runs' at once: one step would
 * fire them all); then lets go of the drive lock, waking the loop thread
 * when it must: work left ready, or a timer now due before the loop
 * thread's sleep ends (commands queued meanwhile woke it themselves). */
static void drive_end(nif_state *st, uint64_t t0)
{
    council_ctx *ctx = st->ctx;
    uv_loop_t *loop = council_ctx_uv_loop(ctx);
    nif_runs_finish(st);
    while (work_ready(ctx) && nif_mono_ns() - t0 < INLINE_BUDGET_NS && uv_now(loop) < st->wake_at &&
           !io_ready(ctx)) {
        council_ctx_step(ctx, 0);
        nif_runs_finish(st);
    }
    int timeout = uv_backend_timeout(loop);
    int wake = work_ready(ctx) ||
               (timeout > 0 && uv_now(loop) + (uint64_t)timeout < st->wake_at);
    st->cur = NULL;
    if (wake) {
        enif_mutex_lock(st->mu);
        nif_wake_loop(st);
        enif_mutex_unlock(st->mu);
    }
    enif_mutex_unlock(st->drive);
}

int nif_reply_inline(nif_state *st, nif_cmd *c, ERL_NIF_TERM rep)
{
    if (!c->is_inline)
        return 0;
    c->reply = enif_make_copy(c->env, rep);
    enif_clear_env(st->out);
    return 1;
}

/* Carries out one command (queued or inline); the loop thread's and an
 * inline caller's. */
static void carry_out(nif_state *st, nif_cmd *c)
{
    switch (c->kind) {
    case CMD_CALL:
        nif_service_call(st, c);
        break;
    case CMD_PID_DOWN:
        nif_subs_pid_down(st->subs, c->obj, &c->mon);
        break;
    case CMD_PUMP:
        nif_pump_set(st, c->env, c->a);
        break;
    default:
        nif_run_cmd(st, c);
        break;
    }
}

/* The request carried out by the calling scheduler, if it drives now:
 * 1 with what the NIF returns in *ret ({reply, Reply} when the answer is
 * known, else ok), 0 when it must be queued. */
static int try_inline(nif_state *st, int spin, ErlNifEnv *env, nif_cmd_kind kind, void *obj,
                      int n, const ERL_NIF_TERM *argv, ERL_NIF_TERM *ret)
{
    nif_cmd c;
    memset(&c, 0, sizeof c);
    if (!enif_self(env, &c.caller))
        return 0;
    uint64_t t0 = nif_mono_ns();
    if (!drive_begin(st, env, t0, spin))
        return 0;
    st->inlined++;
    c.kind = kind;
    c.env = env;
    c.is_inline = 1;
    c.obj = obj;
    c.a = n > 0 ? argv[0] : 0;
    c.b = n > 1 ? argv[1] : 0;
    carry_out(st, &c);
    drive_end(st, t0);
    *ret = c.reply ? enif_make_tuple2(env, A.reply, c.reply) : A.ok;
    return 1;
}

/* A command of kind with n terms of argv copied (a, b); obj kept. */
static ERL_NIF_TERM submit(nif_state *st, ErlNifEnv *env, nif_cmd_kind kind, void *obj, int n,
                           const ERL_NIF_TERM *argv, ERL_NIF_TERM ret)
{
    nif_cmd *c = enif_alloc(sizeof *c);
    if (!c)
        return enif_raise_exception(env, A.enomem);
    memset(c, 0, sizeof *c);
    c->kind = kind;
    if (!(c->env = enif_alloc_env())) {
        enif_free(c);
        return enif_raise_exception(env, A.enomem);
    }
    if (!enif_self(env, &c->caller)) {
        enif_free_env(c->env);
        enif_free(c);
        return enif_make_badarg(env);
    }
    if (n > 0)
        c->a = enif_make_copy(c->env, argv[0]);
    if (n > 1)
        c->b = enif_make_copy(c->env, argv[1]);
    if (kind == CMD_CALL)
        c->ref = enif_make_copy(c->env, ret);
    if (obj) {
        c->obj = obj;
        enif_keep_resource(obj);
    }
    if (nif_queue(st, c) != 0) {
        if (obj)
            enif_release_resource(obj);
        enif_free_env(c->env);
        enif_free(c);
        return enif_raise_exception(env, enif_make_atom(env, "unloading"));
    }
    return ret;
}

/* Requests that are always the loop thread's: close (it ends the loop
 * that thread sleeps on) and {subscribers, Topic} (a scan of every
 * subscription). */
static int loop_only(ErlNifEnv *env, ERL_NIF_TERM req)
{
    const ERL_NIF_TERM *el;
    int arity;
    return enif_is_identical(req, A.close) ||
           (enif_get_tuple(env, req, &arity, &el) && arity == 2 &&
            enif_is_identical(el[0], A.subscribers));
}

/* The shard of a service request: the run's for a start that names its
 * run id, a request by id and a topic's (subscribe, unsubscribe,
 * subscribers); -1 for one free to go to any (a start without a run id,
 * whose id is then made for the shard that takes it, ping, validate, and
 * requests that are refused whatever the shard). */
static int route(nif_lib *lib, ErlNifEnv *env, ERL_NIF_TERM req)
{
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary b;
    ERL_NIF_TERM v;
    if (lib->n <= 1 || !enif_get_tuple(env, req, &arity, &el) || arity < 2)
        return -1;
    if (arity == 3 && (enif_is_identical(el[0], A.start) || enif_is_identical(el[0], A.start_link)))
        return enif_get_map_value(env, el[1], A.run_id, &v) && enif_inspect_binary(env, v, &b) &&
                       b.size > 0
                   ? (int)nif_key_shard(lib->n, b.data, b.size)
                   : -1;
    if (arity == 3 && (enif_is_identical(el[0], A.whereis) || enif_is_identical(el[0], A.state) ||
                       enif_is_identical(el[0], A.result) || enif_is_identical(el[0], A.cancel)))
        return enif_inspect_binary(env, el[2], &b) ? (int)nif_key_shard(lib->n, b.data, b.size)
                                                   : -1;
    if (((arity == 3 || arity == 4) &&
         (enif_is_identical(el[0], A.subscribe) || enif_is_identical(el[0], A.unsubscribe))) ||
        (arity == 2 && enif_is_identical(el[0], A.subscribers)))
        return enif_inspect_binary(env, el[1], &b) ? (int)nif_topic_shard(lib->n, b.data, b.size)
                                                   : -1;
    return -1;
}

/* A service request on shard st: carried out here when this scheduler
 * may drive it (cls), else queued for its loop thread. */
static ERL_NIF_TERM call_on(nif_state *st, ErlNifEnv *env, int cls, const ERL_NIF_TERM argv[])
{
    ERL_NIF_TERM ret;
    if (cls == REQ_INLINE && !loop_only(env, argv[0]) &&
        try_inline(st, 1, env, CMD_CALL, NULL, 1, argv, &ret))
        return ret;
    return submit(st, env, CMD_CALL, NULL, 1, argv, enif_make_ref(env));
}

/* call(Request) -> {reply, Reply} | Ref: the reply, when this call
 * carried the request out itself, else the caller gets {Ref, Reply}.
 * The request goes to its shard (route); one free to go anywhere to the
 * first shard, from this scheduler's own, that is free to drive now, or
 * queued on this scheduler's own when none is. */
static ERL_NIF_TERM call_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    CLASS_OR_DIRTY(cls, call_nif, 0);
    nif_lib *lib = lib_of(env);
    int to = route(lib, env, argv[0]);
    if (to >= 0)
        return call_on(lib->sh[to], env, cls, argv);
    unsigned first = preferred(lib);
    ERL_NIF_TERM ret;
    if (cls == REQ_INLINE && !loop_only(env, argv[0])) {
        /* a first pass that waits for no lock and sends no shard's
         * outbox (which may take 40 us a shard) */
        for (unsigned k = 0; k < lib->n; k++) {
            nif_state *st = lib->sh[(first + k) % lib->n];
            if (!__atomic_load_n(&st->ob_head, __ATOMIC_ACQUIRE) &&
                try_inline(st, 0, env, CMD_CALL, NULL, 1, argv, &ret))
                return ret;
        }
        if (try_inline(lib->sh[first], 1, env, CMD_CALL, NULL, 1, argv, &ret))
            return ret;
    }
    return submit(lib->sh[first], env, CMD_CALL, NULL, 1, argv, enif_make_ref(env));
}

/* call_on(Shard, Request): as call/1 on shard Shard (0-based) whatever
 * the request: for those the library sends to every shard (open, close,
 * stats, ...). */
static ERL_NIF_TERM call_on_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    CLASS_OR_DIRTY(cls, call_on_nif, 1);
    nif_lib *lib = lib_of(env);
    unsigned k;
    if (!enif_get_uint(env, argv[0], &k) || k >= lib->n)
        return enif_make_badarg(env);
    return call_on(lib->sh[k], env, cls, argv + 1);
}

/* shards() -> N: how many shards the library has. */
static ERL_NIF_TERM shards_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    return enif_make_uint(env, lib_of(env)->n);
}

/* shard_of(RunId) -> Shard: the shard a run of that id lives in (tests). */
static ERL_NIF_TERM shard_of_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifBinary b;
    if (!enif_inspect_binary(env, argv[0], &b))
        return enif_make_badarg(env);
    return enif_make_uint(env, nif_key_shard(lib_of(env)->n, b.data, b.size));
}

static int get_run(ErlNifEnv *env, ERL_NIF_TERM t, void **obj)
{
    return enif_get_resource(env, t, nif_run_type, obj);
}

/* A command on a run pid (kind, n terms from argv[1]): carried out here
 * when the calling scheduler may drive, else queued. */
static ERL_NIF_TERM run_cmd(ErlNifEnv *env, int cls, nif_cmd_kind kind, int n,
                            const ERL_NIF_TERM argv[])
{
    void *obj;
    ERL_NIF_TERM ret;
    if (!get_run(env, argv[0], &obj))
        return enif_make_badarg(env);
    nif_state *st = nif_run_shard(obj);
    if (cls == REQ_INLINE && try_inline(st, 1, env, kind, obj, n, argv + 1, &ret))
        return ret;
    return submit(st, env, kind, obj, n, argv + 1, A.ok);
}

/* run_call(Run, From | nil, Request) -> ok | {reply, Reply}: the reply
 * when this call carried the request out itself and has it, else the run
 * pid gets {'$council_reply', From, Reply} (nothing for a cast, From nil). */
static ERL_NIF_TERM run_call_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    CLASS_OR_DIRTY(cls, run_call_nif, 1);
    return run_cmd(env, cls, CMD_RUN_CALL, 2, argv);
}

/* run_info(Run, Message) -> ok: a message to the run pid (member and tool
 * replies, the member server's DOWN; others are dropped). */
static ERL_NIF_TERM run_info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    CLASS_OR_DIRTY(cls, run_info_nif, 1);
    return run_cmd(env, cls, CMD_RUN_INFO, 1, argv);
}

/* run_stop(Run, Reason) -> ok: cancels the run, which ends with Reason. */
static ERL_NIF_TERM run_stop_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    CLASS_OR_DIRTY(cls, run_stop_nif, 1);
    return run_cmd(env, cls, CMD_RUN_STOP, 1, argv);
}

/* pump_set(Pid) -> ok: Pid is every shard's pump from now on
 * (nif_outbox.c), when their loop threads take the command. */
static ERL_NIF_TERM pump_set_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_lib *lib = lib_of(env);
    ErlNifPid pid;
    if (!enif_get_local_pid(env, argv[0], &pid))
        return enif_make_badarg(env);
    ERL_NIF_TERM ret = A.ok;
    for (unsigned k = 0; k < lib->n && enif_is_identical(ret, A.ok); k++)
        ret = submit(lib->sh[k], env, CMD_PUMP, NULL, 1, argv, A.ok);
    return ret;
}

/* run_id(Run) -> binary, read at once (it never changes). */
static ERL_NIF_TERM run_id_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    void *obj;
    ERL_NIF_TERM id;
    if (!get_run(env, argv[0], &obj) || !nif_run_id_of(env, obj, &id))
        return enif_make_badarg(env);
    return id;
}

/* run_state(Run, Cached) -> {Version, {ok, Summary}} | miss: a run pid's
 * :state from the run's snapshot, at once (Cached, the pid's last answer
 * or nil, itself while still current); miss when the loop must answer. */
static ERL_NIF_TERM run_state_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    void *obj;
    ERL_NIF_TERM out;
    if (!get_run(env, argv[0], &obj))
        return enif_make_badarg(env);
    return nif_run_state_of(env, obj, argv[1], &out) ? out : A.miss;
}

/* fast({whereis | state, Registry, RunId}) -> Reply | miss: the answer of
 * the index of live runs, on this scheduler; miss for anything else (the
 * loop answers: ended and unknown runs, bad arguments). */
static ERL_NIF_TERM fast_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    nif_lib *lib = lib_of(env);
    const ERL_NIF_TERM *el;
    int arity, absent, op;
    char registry[256];
    ErlNifBinary id;
    ERL_NIF_TERM out;
    if (!enif_get_tuple(env, argv[0], &arity, &el) || arity != 3)
        return A.miss;
    if (enif_is_identical(el[0], A.whereis))
        op = NIF_FAST_WHEREIS;
    else if (enif_is_identical(el[0], A.state))
        op = NIF_FAST_STATE;
    else
        return A.miss;
    int named = nif_name(env, el[1], registry, sizeof registry, &absent) == 0;
    if ((!named && !absent) || !enif_inspect_binary(env, el[2], &id))
        return A.miss;
    nif_state *st = lib->sh[nif_key_shard(lib->n, id.data, id.size)];
    return nif_runs_fast(st, env, op, named ? registry : NULL, id.data, id.size, &out) ? out
                                                                                        : A.miss;
}

/* ------------------------------------------------------------ load */

static int open_types(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    /* a run's handle needs no monitor: its pid's exit ends it */
    ErlNifResourceTypeInit run_init = {.dtor = nif_run_dtor};
    ErlNifResourceTypeInit pid_init = {.dtor = nif_pid_dtor, .down = nif_pid_down};
    nif_run_type = enif_open_resource_type_x(env, "council_run", &run_init, flags, NULL);
    nif_pid_type = enif_open_resource_type_x(env, "council_subscriber", &pid_init, flags, NULL);
    return nif_run_type && nif_pid_type && nif_pump_open_type(env, flags) == 0 ? 0 : -1;
}

/* One shard and its loop thread: 0, or -1 (what was made is freed). */
static int shard_new(nif_lib *lib, unsigned k)
{
    nif_state *st = enif_alloc(sizeof *st);
    if (!st)
        return -1;
    memset(st, 0, sizeof *st);
    st->lib = lib;
    st->shard = k;
    __atomic_add_fetch(&lib->refs, 1, __ATOMIC_ACQ_REL);
    st->wake_r = st->wake_w = -1;
    st->refs = 1;
    cn_dl_init(&st->live);
    cn_dl_init(&st->ending);
    st->mu = enif_mutex_create("council_nif.queue");
    st->drive = enif_mutex_create("council_nif.drive");
    st->ob_send = enif_mutex_create("council_nif.outbox");
    st->out = enif_alloc_env();
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0) {
        st->wake_r = fds[0];
        st->wake_w = fds[1];
    }
    if (!st->mu || st->wake_r < 0 || !st->drive || !st->ob_send || !st->out ||
        ei_x_new_with_version(&st->x) != 0 || nif_index_init(st) != 0) {
        state_free(st);
        return -1;
    }
    /* The loop thread decodes whole terms (enif_binary_to_term of a run's
     * input, which for a large map sorts on the stack), runs libcurl and
     * jansson: ERTS's default stack for a thread it creates is far too
     * small for that (a 500-key map input overflowed it). 8 MB, as a
     * process's main thread has (the size is in kilowords). */
    ErlNifThreadOpts *topts = enif_thread_opts_create("council_loop_opts");
    if (!topts) {
        state_free(st);
        return -1;
    }
    topts->suggested_stack_size = (int)(8 * 1024 * 1024 / sizeof(void *) / 1024);
    int trc = enif_thread_create("council_loop", &st->tid, loop_main, st, topts);
    enif_thread_opts_destroy(topts);
    if (trc != 0) {
        state_free(st);
        return -1;
    }
    st->thread_running = 1;
    lib->sh[k] = st;
    return 0;
}

/* Stops every shard's loop thread and drops the library's reference on
 * each (a shard is freed once its resources are gone too; the library
 * with the last shard). */
static void lib_stop(nif_lib *lib)
{
    unsigned n = lib->n;
    nif_state *sh[NIF_MAX_SHARDS];
    memcpy(sh, lib->sh, sizeof sh); /* lib may go with the last shard */
    for (unsigned k = 0; k < n; k++) {
        nif_state *st = sh[k];
        if (!st || !st->thread_running)
            continue;
        enif_mutex_lock(st->mu);
        st->stopping = 1;
        nif_wake_loop(st);
        enif_mutex_unlock(st->mu);
    }
    for (unsigned k = 0; k < n; k++)
        if (sh[k] && sh[k]->thread_running) {
            enif_thread_join(sh[k]->tid, NULL);
            sh[k]->thread_running = 0;
        }
    for (unsigned k = 0; k < n; k++)
        if (sh[k])
            nif_state_unref(sh[k]);
}

static int scheduler_threads(void)
{
    ErlNifSysInfo info;
    enif_system_info(&info, sizeof info);
    return info.scheduler_threads;
}

/* How many shards: COUNCIL_NIF_SHARDS when set (1..NIF_MAX_SHARDS), else
 * NIF_SHARDS_PER_SCHEDULER per scheduler thread, at most NIF_MAX_SHARDS. */
static unsigned shard_count(int sched)
{
    char buf[16];
    size_t len = sizeof buf;
    if (enif_getenv("COUNCIL_NIF_SHARDS", buf, &len) == 0) {
        long v = strtol(buf, NULL, 10);
        if (v >= 1 && v <= NIF_MAX_SHARDS)
            return (unsigned)v;
    }
    long n = (long)sched * NIF_SHARDS_PER_SCHEDULER;
    return n < 1 ? 1 : n > NIF_MAX_SHARDS ? NIF_MAX_SHARDS : (unsigned)n;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)info;
    nif_atoms_init(env);
    if (open_types(env, ERL_NIF_RT_CREATE))
        return 1;
    nif_lib *lib = enif_alloc(sizeof *lib);
    if (!lib)
        return 1;
    memset(lib, 0, sizeof *lib);
    lib->instances = 1;
    lib->refs = 1; /* ours while the shards are made */
    if (!(lib->quota = council_run_quota_new(0))) {
        lib_free(lib);
        return 1;
    }
    int sched = scheduler_threads();
    unsigned n = shard_count(sched);
    lib->nsched = sched < 1 ? 1 : (unsigned)sched;
    int ok = 1;
    for (unsigned k = 0; ok && k < n; k++)
        if (shard_new(lib, k) == 0)
            lib->n = k + 1;
        else
            ok = 0;
    int last = __atomic_sub_fetch(&lib->refs, 1, __ATOMIC_ACQ_REL) == 0;
    if (!ok) {
        if (last)
            lib_free(lib);
        else
            lib_stop(lib);
        return 1;
    }
    *priv = lib;
    return 0;
}

/* A new instance of the module takes the running shards over. */
static int upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info)
{
    (void)info;
    nif_atoms_init(env);
    if (open_types(env, ERL_NIF_RT_TAKEOVER))
        return 1;
    nif_lib *lib = *old_priv;
    __atomic_add_fetch(&lib->instances, 1, __ATOMIC_ACQ_REL);
    *priv = lib;
    return 0;
}

static void unload(ErlNifEnv *env, void *priv)
{
    (void)env;
    nif_lib *lib = priv;
    if (__atomic_sub_fetch(&lib->instances, 1, __ATOMIC_ACQ_REL) == 0)
        lib_stop(lib);
}

static ErlNifFunc funcs[] = {
    {"call_nif", 1, call_nif, 0},
    {"call_on_nif", 2, call_on_nif, 0},
    {"shards_nif", 0, shards_nif, 0},
    {"shard_of_nif", 1, shard_of_nif, 0},
    {"run_call_nif", 3, run_call_nif, 0},
    {"run_info_nif", 2, run_info_nif, 0},
    {"run_stop_nif", 2, run_stop_nif, 0},
    {"run_id_nif", 1, run_id_nif, 0},
    {"run_state_nif", 2, run_state_nif, 0},
    {"fast_nif", 1, fast_nif, 0},
    {"pump_nif", 0, nif_pump_nif, 0},
    {"pump_set_nif", 1, pump_set_nif, 0},
    {"etf_test_nif", 1, nif_etf_test, 0},
    {"etf_bench_nif", 2, nif_etf_bench, ERL_NIF_DIRTY_JOB_CPU_BOUND},
};

ERL_NIF_INIT(Elixir.CouncilEx.Nif, funcs, load, NULL, upgrade, unload)
