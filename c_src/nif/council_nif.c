/* council_nif.c - the core inside the VM: a NIF library hosting one
 * council context, for `config :council_ex, backend: :nif` (the first
 * slice: start, await, cancel, state and subscriptions; see
 * lib/council_ex/nif.ex).
 *
 * Threads. The core is not thread-safe (council.h): it lives on one thread
 * of its own (enif_thread_create), which runs the context's loop. A NIF
 * call never touches the context: it copies its arguments into a command,
 * queues it, wakes the loop (council_ctx_wakeup) and returns a reference at
 * once; the loop thread carries the command out and answers the calling
 * process with {Ref, Reply} through enif_send. Events go straight from the
 * loop thread to subscriber pids, as the same terms the C node sends
 * (c_src/cnode/event_term.c writes them; docs/protocol.md lists them), so
 * the library decodes both backends alike. No scheduler ever waits for the
 * core.
 *
 * Uses only the core's public header.
 */
#include <council.h>
#include <ei.h>
#include <erl_nif.h>
#include <string.h>

#include "event_term.h"

typedef enum cmd_kind { CMD_START, CMD_AWAIT, CMD_CANCEL, CMD_STATE, CMD_SUBSCRIBE } cmd_kind;

/* A request waiting for the loop thread; its terms live in its own env. */
typedef struct cmd {
    struct cmd *next;
    cmd_kind kind;
    ErlNifPid caller;
    ErlNifEnv *env;
    ERL_NIF_TERM ref;
    ERL_NIF_TERM args[5];
} cmd;

typedef struct nif_state {
    council_ctx *ctx;
    ErlNifTid tid;
    ErlNifMutex *mu;
    ErlNifCond *cv;
    cmd *head, *tail;
    int stopping;
} nif_state;

/* A subscriber pid; freed when its subscription ends. */
typedef struct sub_target {
    ErlNifPid pid;
    nif_state *st;
    council_subscription *sub;
} sub_target;

/* A process awaiting a run's end. */
typedef struct waiter {
    ErlNifPid pid;
    ErlNifEnv *env;
    ERL_NIF_TERM ref;
} waiter;

/* ------------------------------------------------------------- sending */

/* Send {Ref, Term} (ref NULL: Term) where Term is the ETF in x (with its
 * version byte). A message that cannot be built is dropped. */
static void send_etf(const ErlNifPid *to, ErlNifEnv *ref_env, ERL_NIF_TERM ref,
                     const ei_x_buff *x)
{
    ErlNifEnv *env = enif_alloc_env();
    if (!env)
        return;
    ERL_NIF_TERM t;
    if (enif_binary_to_term(env, (const unsigned char *)x->buff, (size_t)x->index, &t, 0) ==
        0) {
        enif_free_env(env);
        return;
    }
    if (ref_env)
        t = enif_make_tuple2(env, enif_make_copy(env, ref), t);
    enif_send(NULL, to, env, t);
    enif_free_env(env);
}

/* Reply {Ref, Term} where Term is built in the reply's env. */
static void reply(cmd *c, ERL_NIF_TERM (*build)(ErlNifEnv *, void *), void *arg)
{
    ErlNifEnv *env = enif_alloc_env();
    if (!env)
        return;
    ERL_NIF_TERM t = enif_make_tuple2(env, enif_make_copy(env, c->ref), build(env, arg));
    enif_send(NULL, &c->caller, env, t);
    enif_free_env(env);
}

static ERL_NIF_TERM atom_term(ErlNifEnv *env, void *name)
{
    return enif_make_atom(env, name);
}

/* {error, Reason} for a core error code. */
static ERL_NIF_TERM error_term(ErlNifEnv *env, void *code)
{
    int rc = *(int *)code;
    const char *a = rc == COUNCIL_ESPEC         ? "invalid_spec"
                    : rc == COUNCIL_EEXIST      ? "already_started"
                    : rc == COUNCIL_ENOTFOUND   ? "not_found"
                    : rc == COUNCIL_ELIMIT      ? "limit"
                    : rc == COUNCIL_EPROVIDER   ? "unknown_provider"
                    : rc == COUNCIL_ETOOBIG     ? "too_big"
                    : rc == COUNCIL_EPARSE      ? "invalid_spec"
                    : rc == COUNCIL_ENOMEM      ? "nomem"
                                                : "badarg";
    return enif_make_tuple2(env, enif_make_atom(env, "error"), enif_make_atom(env, a));
}

static void reply_error(cmd *c, int rc)
{
    reply(c, error_term, &rc);
}

/* ------------------------------------------------------------- events */

static void on_event(const council_event *ev, void *arg)
{
    sub_target *s = arg;
    ei_x_buff x;
    if (ei_x_new_with_version(&x) != 0)
        return;
    if (cn_event_term(&x, ev) == 0)
        send_etf(&s->pid, NULL, 0, &x);
    ei_x_free(&x);
    if (council_event_is_terminal(ev)) {
        /* the run's last event: the subscription ends with it (a later
         * run under the same id is a new topic for its own subscribers) */
        council_unsubscribe(s->st->ctx, s->sub);
        enif_free(s);
    }
}

static void on_overflow(size_t dropped, void *arg)
{
    sub_target *s = arg;
    ErlNifEnv *env = enif_alloc_env();
    if (env) {
        enif_send(NULL, &s->pid, env,
                  enif_make_tuple2(env, enif_make_atom(env, "council_ex_overflow"),
                                   enif_make_uint64(env, dropped)));
        enif_free_env(env);
    }
    enif_free(s);
}

static int subscribe_pid(nif_state *st, council_run *run, const ErlNifPid *pid)
{
    sub_target *s = enif_alloc(sizeof *s);
    if (!s)
        return COUNCIL_ENOMEM;
    s->pid = *pid;
    s->st = st;
    int rc = council_run_subscribe(run, on_event, on_overflow, s, &s->sub);
    if (rc)
        enif_free(s);
    return rc;
}

/* ------------------------------------------------------------- commands */

static int bin_arg(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifBinary *b)
{
    return enif_inspect_binary(env, t, b) || enif_inspect_iolist_as_binary(env, t, b);
}

/* registry: a binary, or the atom nil for the default. NUL-terminated copy
 * in buf (NULL when default or not text). */
static const char *registry_arg(ErlNifEnv *env, ERL_NIF_TERM t, char *buf, size_t n, int *ok)
{
    ErlNifBinary b;
    *ok = 1;
    if (enif_is_atom(env, t))
        return NULL;
    if (!bin_arg(env, t, &b) || b.size >= n || memchr(b.data, 0, b.size)) {
        *ok = 0;
        return NULL;
    }
    memcpy(buf, b.data, b.size);
    buf[b.size] = 0;
    return buf;
}

typedef struct outcome_arg {
    const council_run *run;
} outcome_arg;

static ERL_NIF_TERM run_id_term(ErlNifEnv *env, void *arg)
{
    council_run *run = arg;
    size_t len;
    const char *id = council_run_id(run, &len);
    ERL_NIF_TERM bin;
    unsigned char *p = enif_make_new_binary(env, len, &bin);
    if (p)
        memcpy(p, id, len);
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), bin);
}

static void do_start(nif_state *st, cmd *c)
{
    ErlNifEnv *env = c->env;
    ErlNifBinary spec_json, input_etf, id;
    char regbuf[256];
    int ok;
    const char *registry = registry_arg(env, c->args[3], regbuf, sizeof regbuf, &ok);
    if (!bin_arg(env, c->args[0], &spec_json) || !ok) {
        reply_error(c, COUNCIL_EINVAL);
        return;
    }
    council_spec *spec = NULL;
    council_spec_error err;
    int rc = council_ctx_spec_from_json(st->ctx, (const char *)spec_json.data, spec_json.size,
                                        &spec, &err);
    if (rc) {
        reply_error(c, rc);
        return;
    }
    /* the input travels as ETF (handed back untouched in run_started);
     * a binary input is also the text members see */
    if (!enif_term_to_binary(env, c->args[1], &input_etf)) {
        council_spec_unref(spec);
        reply_error(c, COUNCIL_ENOMEM);
        return;
    }
    ErlNifBinary text;
    int is_text = enif_inspect_binary(env, c->args[1], &text);
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = spec;
    o.registry = registry;
    o.input.tag = "etf";
    o.input.data = input_etf.data + 1; /* without the version byte */
    o.input.len = input_etf.size - 1;
    o.input.text = is_text ? (const char *)text.data : NULL;
    o.input.text_len = is_text ? text.size : 0;
    if (bin_arg(env, c->args[2], &id) && id.size > 0) {
        o.run_id = id.data;
        o.run_id_len = id.size;
    }
    /* the subscribers are read before the run is made: a bad list makes
     * no run at all */
    unsigned n_subs = 0;
    if (!enif_get_list_length(env, c->args[4], &n_subs) || n_subs > 4096) {
        enif_release_binary(&input_etf);
        council_spec_unref(spec);
        reply_error(c, n_subs > 4096 ? COUNCIL_ELIMIT : COUNCIL_EINVAL);
        return;
    }
    ErlNifPid *pids = enif_alloc(sizeof *pids * (n_subs ? n_subs : 1));
    ERL_NIF_TERM list = c->args[4], head;
    unsigned k = 0;
    while (pids && enif_get_list_cell(env, list, &head, &list) &&
           enif_get_local_pid(env, head, &pids[k]))
        k++;
    if (!pids || k != n_subs) {
        enif_free(pids);
        enif_release_binary(&input_etf);
        council_spec_unref(spec);
        reply_error(c, pids ? COUNCIL_EINVAL : COUNCIL_ENOMEM);
        return;
    }
    council_run *run = NULL;
    rc = council_run_create(st->ctx, &o, &run);
    enif_release_binary(&input_etf);
    council_spec_unref(spec);
    /* subscribers first, then begin: no event is missed */
    for (unsigned i = 0; rc == 0 && i < n_subs; i++)
        rc = subscribe_pid(st, run, &pids[i]);
    enif_free(pids);
    if (rc) {
        if (run) {
            council_run_cancel(run); /* a subscription did not fit */
            council_run_unref(run);
        }
        reply_error(c, rc);
        return;
    }
    council_run_begin(run);
    reply(c, run_id_term, run);
    council_run_unref(run);
}

static void send_outcome(const ErlNifPid *pid, ErlNifEnv *ref_env, ERL_NIF_TERM ref,
                         const council_run *run)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x) != 0)
        return;
    if (cn_outcome_term(&x, run) == 0)
        send_etf(pid, ref_env, ref, &x);
    ei_x_free(&x);
}

static void on_run_end(council_run *run, void *arg)
{
    waiter *w = arg;
    send_outcome(&w->pid, w->env, w->ref, run);
    enif_free_env(w->env);
    enif_free(w);
}

static council_run *find_run(nif_state *st, cmd *c)
{
    ErlNifBinary id;
    char regbuf[256];
    int ok;
    const char *registry = registry_arg(c->env, c->args[1], regbuf, sizeof regbuf, &ok);
    council_run *run = NULL;
    if (!ok || !bin_arg(c->env, c->args[0], &id) ||
        council_run_find(st->ctx, registry, id.data, id.size, &run) != COUNCIL_OK)
        return NULL;
    return run;
}

static void do_await(nif_state *st, cmd *c)
{
    council_run *run = find_run(st, c);
    if (!run) {
        reply_error(c, COUNCIL_ENOTFOUND);
        return;
    }
    waiter *w = enif_alloc(sizeof *w);
    if (!w) {
        reply_error(c, COUNCIL_ENOMEM);
        return;
    }
    w->pid = c->caller;
    w->env = c->env; /* the command's env now belongs to the waiter */
    w->ref = c->ref;
    c->env = NULL;
    if (council_run_watch(run, on_run_end, w) != COUNCIL_OK)
        on_run_end(run, w); /* already over (or no memory): answer now */
}

static ERL_NIF_TERM summary_term(ErlNifEnv *env, void *arg)
{
    council_summary *s = arg;
    ei_x_buff x;
    ERL_NIF_TERM t = enif_make_atom(env, "error");
    if (ei_x_new_with_version(&x) != 0)
        return t;
    if (cn_summary_term(&x, s) == 0 &&
        enif_binary_to_term(env, (const unsigned char *)x.buff, (size_t)x.index, &t, 0) > 0)
        t = enif_make_tuple2(env, enif_make_atom(env, "ok"), t);
    ei_x_free(&x);
    return t;
}

static void do_state(nif_state *st, cmd *c)
{
    council_run *run = find_run(st, c);
    if (!run) {
        reply_error(c, COUNCIL_ENOTFOUND);
        return;
    }
    council_summary s;
    council_run_summary(run, &s);
    reply(c, summary_term, &s);
}

static void do_cancel(nif_state *st, cmd *c)
{
    council_run *run = find_run(st, c);
    if (!run) {
        reply_error(c, COUNCIL_ENOTFOUND);
        return;
    }
    council_run_cancel(run);
    reply(c, atom_term, "ok");
}

static void do_subscribe(nif_state *st, cmd *c)
{
    council_run *run = find_run(st, c);
    if (!run) {
        reply_error(c, COUNCIL_ENOTFOUND);
        return;
    }
    int rc = subscribe_pid(st, run, &c->caller);
    if (rc)
        reply_error(c, rc);
    else
        reply(c, atom_term, "ok");
}

/* ------------------------------------------------------------ the loop */

static cmd *take_all(nif_state *st)
{
    enif_mutex_lock(st->mu);
    cmd *c = st->head;
    st->head = st->tail = NULL;
    enif_mutex_unlock(st->mu);
    return c;
}

static void run_cmds(nif_state *st, cmd *c)
{
    while (c) {
        cmd *n = c->next;
        switch (c->kind) {
        case CMD_START: do_start(st, c); break;
        case CMD_AWAIT: do_await(st, c); break;
        case CMD_CANCEL: do_cancel(st, c); break;
        case CMD_STATE: do_state(st, c); break;
        case CMD_SUBSCRIBE: do_subscribe(st, c); break;
        }
        if (c->env)
            enif_free_env(c->env);
        enif_free(c);
        c = n;
    }
}

static void *loop_main(void *arg)
{
    nif_state *st = arg;
    for (;;) {
        enif_mutex_lock(st->mu);
        int stopping = st->stopping;
        enif_mutex_unlock(st->mu);
        if (stopping)
            break;
        run_cmds(st, take_all(st));
        int busy = council_ctx_step(st->ctx, -1);
        if (busy == 1)
            continue;
        /* idle: nothing on the loop would wake a step, so wait for a
         * command (or the end) here */
        enif_mutex_lock(st->mu);
        while (!st->head && !st->stopping)
            enif_cond_wait(st->cv, st->mu);
        enif_mutex_unlock(st->mu);
    }
    /* unfinished runs are cancelled; awaiting processes get that outcome */
    run_cmds(st, take_all(st));
    council_ctx_free(st->ctx);
    st->ctx = NULL;
    return NULL;
}

static int queue(nif_state *st, cmd *c)
{
    enif_mutex_lock(st->mu);
    int stopping = st->stopping;
    if (!stopping) {
        if (st->tail)
            st->tail->next = c;
        else
            st->head = c;
        st->tail = c;
        enif_cond_signal(st->cv);
    }
    enif_mutex_unlock(st->mu);
    if (!stopping)
        council_ctx_wakeup(st->ctx);
    return !stopping;
}

/* ------------------------------------------------------------- NIF API */

/* A command of kind with argv copied; returns its reference, or badarg. */
static ERL_NIF_TERM submit(ErlNifEnv *env, cmd_kind kind, int argc, const ERL_NIF_TERM argv[])
{
    nif_state *st = enif_priv_data(env);
    cmd *c = enif_alloc(sizeof *c);
    if (!c)
        return enif_raise_exception(env, enif_make_atom(env, "nomem"));
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->env = enif_alloc_env();
    if (!c->env || !enif_self(env, &c->caller)) {
        if (c->env)
            enif_free_env(c->env);
        enif_free(c);
        return enif_make_badarg(env);
    }
    ERL_NIF_TERM ref = enif_make_ref(env);
    c->ref = enif_make_copy(c->env, ref);
    for (int i = 0; i < argc && i < 5; i++)
        c->args[i] = enif_make_copy(c->env, argv[i]);
    if (!queue(st, c)) {
        enif_free_env(c->env);
        enif_free(c);
        return enif_raise_exception(env, enif_make_atom(env, "unloading"));
    }
    return ref;
}

/* start(SpecJson, Input, RunId | <<>>, Registry | nil, [Subscriber]) -> Ref;
 * the caller gets {Ref, {ok, RunId} | {error, Reason}}. */
static ERL_NIF_TERM start_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return submit(env, CMD_START, argc, argv);
}

/* await(RunId, Registry) -> Ref; {Ref, Outcome} when the run has ended
 * (Outcome as the C node's await: {ok, Result} | {error, ...}). */
static ERL_NIF_TERM await_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return submit(env, CMD_AWAIT, argc, argv);
}

static ERL_NIF_TERM cancel_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return submit(env, CMD_CANCEL, argc, argv);
}

static ERL_NIF_TERM state_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return submit(env, CMD_STATE, argc, argv);
}

static ERL_NIF_TERM subscribe_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return submit(env, CMD_SUBSCRIBE, argc, argv);
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)env;
    (void)info;
    nif_state *st = enif_alloc(sizeof *st);
    if (!st)
        return 1;
    memset(st, 0, sizeof *st);
    st->mu = enif_mutex_create("council_nif.queue");
    st->cv = enif_cond_create("council_nif.wake");
    st->ctx = council_ctx_new(NULL);
    if (!st->mu || !st->cv || !st->ctx)
        goto fail;
    /* created here, used only by the loop thread from now on */
    if (enif_thread_create("council_loop", &st->tid, loop_main, st, NULL) != 0)
        goto fail;
    *priv = st;
    return 0;
fail:
    council_ctx_free(st->ctx);
    if (st->cv)
        enif_cond_destroy(st->cv);
    if (st->mu)
        enif_mutex_destroy(st->mu);
    enif_free(st);
    return 1;
}

static void unload(ErlNifEnv *env, void *priv)
{
    (void)env;
    nif_state *st = priv;
    enif_mutex_lock(st->mu);
    st->stopping = 1;
    enif_cond_signal(st->cv);
    enif_mutex_unlock(st->mu);
    council_ctx_stop(st->ctx);
    council_ctx_wakeup(st->ctx);
    enif_thread_join(st->tid, NULL);
    enif_cond_destroy(st->cv);
    enif_mutex_destroy(st->mu);
    enif_free(st);
}

static ErlNifFunc funcs[] = {
    {"start_nif", 5, start_nif, 0},
    {"await_nif", 2, await_nif, 0},
    {"cancel_nif", 2, cancel_nif, 0},
    {"state_nif", 2, state_nif, 0},
    {"subscribe_nif", 2, subscribe_nif, 0},
};

ERL_NIF_INIT(Elixir.CouncilEx.Nif, funcs, load, NULL, NULL, unload)
