/* run_proc.c - see run_proc.h. */
#include "run_proc.h"

#include <stdlib.h>
#include <string.h>

#include "event_term.h"
#include "gen_server.h"
#include "log.h"
#include "remote_sub.h"
#include "retained.h"
#include "run_topic.h"

/* Callers waiting in :await on one run. A raw '$gen_call' needs no monitor,
 * so the per-peer cap on links and monitors does not bound these. */
#define MAX_AWAITERS 10000

/* The pid serving the run's beam members and our monitor on it. */
struct member_server {
    cn_pid pid;
    size_t ref_len;
    unsigned char ref[];
};

/* What only some runs' processes need: callers in :await, an exit reason
 * chosen before the end, a member server. Made on first need (rp_more). */
struct rp_more {
    cn_gen_from **awaiters;
    size_t n_await, cap_await;
    ei_x_buff reason;          /* exit reason chosen before the end */
    int has_reason;
    struct member_server *server; /* NULL: none given, or it went down */
};

/* In one block with its gen_server record (cn_gen_start_with): freed with
 * it once terminate() has returned. */
struct cn_run_proc {
    cn_bridge *b;
    council_run *run;          /* one reference */
    cn_proc *proc;             /* NULL once the process has exited */
    cn_dl end_link;            /* in b->ending once the core reported the end */
    cn_dl live_link;           /* in b->live while the process is alive */
    struct rp_more *more;      /* NULL until needed */
    unsigned ending : 1;
    unsigned watching : 1;
};

/* rp->more, made now if need be; NULL when out of memory. */
static struct rp_more *rp_more(cn_run_proc *rp)
{
    if (!rp->more)
        rp->more = calloc(1, sizeof *rp->more);
    return rp->more;
}

static size_t n_awaiters(const cn_run_proc *rp)
{
    return rp->more ? rp->more->n_await : 0;
}

static int has_reason(const cn_run_proc *rp)
{
    return rp->more && rp->more->has_reason;
}

/* ------------------------------------------------------------ replies */

/* The exit reason the run's process ends with: the one chosen before (a
 * stop, a linked process, a shutdown), else what the run's end says. */
static int encode_exit_reason(cn_run_proc *rp, ei_x_buff *x)
{
    if (has_reason(rp))
        return ei_x_append_buf(x, rp->more->reason.buff, rp->more->reason.index);
    switch (council_run_status(rp->run)) {
    case COUNCIL_COMPLETED:
        return ei_x_encode_atom(x, "normal");
    case COUNCIL_FAILED:
        return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "shutdown") ||
                       ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "failed") ||
                       cn_errors_term(x, council_run_result(rp->run))
                   ? -1
                   : 0;
    default:
        return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "shutdown") ||
                       ei_x_encode_atom(x, "cancelled")
                   ? -1
                   : 0;
    }
}

/* Keeps reason (a term) as the exit reason, unless one was chosen before. */
static void keep_reason(cn_run_proc *rp, cn_slice reason)
{
    if (has_reason(rp))
        return;
    struct rp_more *m = rp_more(rp);
    if (m && ei_x_new(&m->reason) == 0) {
        if (ei_x_append_buf(&m->reason, (const char *)reason.p, (int)reason.len) == 0) {
            m->has_reason = 1;
            return;
        }
        ei_x_free(&m->reason);
    }
    cn_log_error("out of memory: a run's process keeps its default exit reason");
}

static void free_awaiters(cn_run_proc *rp)
{
    struct rp_more *m = rp->more;
    if (!m)
        return;
    for (size_t i = 0; i < m->n_await; i++)
        cn_gen_from_free(m->awaiters[i]);
    free(m->awaiters);
    m->awaiters = NULL;
    m->n_await = m->cap_await = 0;
}

/* ---------------------------------------------------------- the end */

/* Answers the awaiters and ends the process (terminate() frees rp: nothing
 * of rp may be used after cn_node_exit). Out of memory, the awaiters get
 * {error, enomem} (or no answer, logged) and the process still exits, with
 * the reason's bare atom. */
static void finish(cn_run_proc *rp)
{
    cn_node *n = rp->b->node;
    cn_proc *proc = rp->proc;
    cn_slice plain = council_run_status(rp->run) == COUNCIL_COMPLETED ? cn_atom_normal()
                                                                      : cn_atom_shutdown();
    ei_x_buff x;
    int have_x = ei_x_new(&x) == 0, reason_built = -1;
    if (have_x) {
        int built = cn_outcome_term(&x, rp->run);
        for (size_t i = 0; i < n_awaiters(rp); i++)
            cn_gen_reply_built(n, proc, rp->more->awaiters[i], &x, built);
        x.index = 0;
        reason_built = encode_exit_reason(rp, &x);
    } else if (n_awaiters(rp)) {
        cn_log_error("out of memory: %zu awaiters of a run are not answered", n_awaiters(rp));
    }
    free_awaiters(rp);
    if (reason_built != 0)
        cn_log_error("out of memory: a run's process exits with a bare reason");
    cn_node_exit(n, proc, reason_built == 0 ? cn_x_slice(&x) : plain);
    if (have_x)
        ei_x_free(&x);
}

/* After the core's end: hand every queued event to the connections first,
 * so subscribers see the terminal event before the DOWN / EXIT / reply.
 * A process that ends meanwhile leaves the list in terminate(). */
static void end_fire(uv_timer_t *t)
{
    cn_bridge *b = t->data;
    while (!cn_dl_empty(&b->ending)) {
        council_ctx_flush(b->ctx);
        cn_dl batch;
        cn_dl_take_all(&batch, &b->ending);
        while (!cn_dl_empty(&batch)) {
            cn_run_proc *rp = cn_dl_entry(batch.next, cn_run_proc, end_link);
            cn_dl_del(&rp->end_link);
            rp->ending = 0;
            if (rp->proc)
                finish(rp);
        }
    }
}

static void on_run_end(council_run *run, void *arg)
{
    (void)run;
    cn_run_proc *rp = arg;
    rp->watching = 0;
    if (!rp->proc || rp->ending)
        return;
    rp->ending = 1;
    cn_dl_push(&rp->b->ending, &rp->end_link);
    uv_timer_start(&rp->b->end_timer, end_fire, 0, 0);
}

/* ------------------------------------------------------------ gen_server */

static int sub_request(cn_run_proc *rp, cn_slice pid_term, int subscribe)
{
    cn_wpid w;
    cn_pid pid;
    if (!rp->b->subs)
        return COUNCIL_EINVAL;
    if (cn_term_pid(pid_term, &w) ||
        cn_pt_pid_from_wire(cn_node_table(rp->b->node), &w, &pid))
        return COUNCIL_EINVAL;
    size_t id_len, len;
    const char *id = council_run_id(rp->run, &id_len);
    char *topic = cn_run_topic(id, id_len, &len);
    if (!topic)
        return COUNCIL_ENOMEM;
    int rc = subscribe ? cn_rsubs_add(rp->b->subs, topic, len, &pid, 0)
                       : cn_rsubs_remove(rp->b->subs, topic, len, &pid);
    free(topic);
    return subscribe ? rc : 0;
}

/* The calls of docs/protocol.md ("Calls on a run pid"). */

static int call_run_id(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row, const cn_slice *el,
                    ei_x_buff *x)
{
    cn_run_proc *rp = cn_gen_state(p);
    size_t len;
    const char *id = council_run_id(rp->run, &len);
    return ei_x_encode_binary(x, id, (long)len);
}

static int call_state(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row, const cn_slice *el,
                    ei_x_buff *x)
{
    cn_run_proc *rp = cn_gen_state(p);
    council_summary s;
    council_run_summary(rp->run, &s);
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
                   cn_summary_term(x, &s)
               ? -1
               : 0;
}

/* ok first, then the cancel (whose end may follow at once) */
static int call_cancel(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row, const cn_slice *el,
                    ei_x_buff *x)
{
    cn_run_proc *rp = cn_gen_state(p);
    cn_gen_reply_built(n, p, from, x, ei_x_encode_atom(x, "ok"));
    cn_run_proc_cancel(rp->run, NULL);
    return CN_GEN_NOREPLY;
}

/* Held until the run ends (finish()). */
static int call_await(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row, const cn_slice *el,
                    ei_x_buff *x)
{
    cn_run_proc *rp = cn_gen_state(p);
    if (n_awaiters(rp) >= MAX_AWAITERS)
        return cn_bridge_encode_error(x, COUNCIL_ELIMIT, NULL);
    struct rp_more *m = rp_more(rp);
    if (!m)
        return cn_bridge_encode_error(x, COUNCIL_ENOMEM, NULL);
    if (m->n_await == m->cap_await) {
        size_t cap = m->cap_await ? m->cap_await * 2 : 2;
        cn_gen_from **a = realloc(m->awaiters, cap * sizeof *a);
        if (a) {
            m->awaiters = a;
            m->cap_await = cap;
        }
    }
    cn_gen_from *keep;
    if (m->n_await < m->cap_await && (keep = cn_gen_from_dup(from))) {
        m->awaiters[m->n_await++] = keep;
        return CN_GEN_NOREPLY; /* answered at the end */
    }
    return cn_bridge_encode_error(x, COUNCIL_ENOMEM, NULL);
}

static int call_result(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row, const cn_slice *el,
                    ei_x_buff *x)
{
    cn_run_proc *rp = cn_gen_state(p);
    return cn_outcome_term(x, rp->run);
}

/* {subscribe, Pid} and {unsubscribe, Pid}: to the run's own topic */
static int call_subscription(cn_node *n, cn_proc *p, const cn_gen_from *from,
                             const cn_gen_call *row, const cn_slice *el, ei_x_buff *x)
{
    int rc = sub_request(cn_gen_state(p), el[1], cn_term_is_atom(el[0], "subscribe"));
    return rc == 0 ? ei_x_encode_atom(x, "ok") : cn_bridge_encode_error(x, rc, "badarg");
}

static const cn_gen_call calls[] = {
    {"run_id", 0, call_run_id, NULL},
    {"state", 0, call_state, NULL},
    {"cancel", 0, call_cancel, NULL},
    {"await", 0, call_await, NULL},
    {"result", 0, call_result, NULL},
    {"subscribe", 2, call_subscription, NULL},
    {"unsubscribe", 2, call_subscription, NULL},
};

static void handle_call(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice req)
{
    cn_gen_dispatch(n, p, from, req, calls, sizeof calls / sizeof calls[0]);
}

static void handle_cast(cn_node *n, cn_proc *p, cn_slice msg)
{
    (void)n;
    cn_run_proc *rp = cn_gen_state(p);
    if (cn_term_is_atom(msg, "cancel"))
        cn_run_proc_cancel(rp->run, NULL);
}

static void handle_info(cn_node *n, cn_proc *p, cn_slice msg)
{
    (void)n;
    cn_run_proc *rp = cn_gen_state(p);
    cn_bridge *b = rp->b;
    for (size_t i = 0; i < b->nhooks; i++)
        if (b->hooks[i].ops->info(b, b->hooks[i].arg, rp, msg))
            return;
    cn_log_debug("run process: unexpected message dropped");
}

static void handle_down(cn_node *n, cn_proc *p, cn_slice ref, const cn_pid *who,
                        cn_slice reason)
{
    (void)n;
    (void)who;
    cn_run_proc *rp = cn_gen_state(p);
    struct member_server *server = rp->more ? rp->more->server : NULL;
    if (server && ref.len == server->ref_len && memcmp(ref.p, server->ref, ref.len) == 0) {
        free(server);
        rp->more->server = NULL;
        cn_bridge *b = rp->b;
        for (size_t i = 0; i < b->nhooks; i++)
            b->hooks[i].ops->server_down(b, b->hooks[i].arg, rp, reason);
    }
}

/* GenServer.stop (its `ok` sent) and exit signals end the run the way a
 * GenServer's terminate/2 runs before its exit: the run is cancelled with
 * the reason, so that subscribers get run_cancelled and awaiters their
 * answer before the process exits with that reason (finish(), as for
 * every end). A run that has ended already exits with the reason once its
 * events are out; one whose end cannot be watched (out of memory) exits
 * now. */
static void handle_stop(cn_node *n, cn_proc *p, cn_slice reason)
{
    cn_run_proc *rp = cn_gen_state(p);
    keep_reason(rp, reason);
    council_status st = council_run_status(rp->run);
    if (st == COUNCIL_PENDING || st == COUNCIL_RUNNING)
        council_run_cancel(rp->run); /* its end queues finish() */
    if (!rp->ending)
        cn_node_exit(n, p, reason);
}

/* An exit signal, honoured as by a GenServer that stops in terminate/2:
 * `kill` ends the process at once (terminate() then cancels the run);
 * `normal` means nothing; any other reason (a supervisor's `shutdown` in
 * terminate_child or its own shutdown, a linked caller's exit,
 * Process.exit/2, `noconnection`) stops it as above. */
static void handle_exit(cn_node *n, cn_proc *p, const cn_pid *from, cn_slice reason,
                        int via_link)
{
    (void)from;
    if (!via_link && cn_term_is_atom(reason, "kill"))
        cn_node_exit(n, p, cn_atom_killed());
    else if (!cn_term_is_atom(reason, "normal"))
        handle_stop(n, p, reason);
}

static int get_state(cn_node *n, cn_proc *p, ei_x_buff *x)
{
    (void)n;
    cn_run_proc *rp = cn_gen_state(p);
    council_summary s;
    council_run_summary(rp->run, &s);
    return cn_summary_term(x, &s);
}

static void terminate(cn_node *n, cn_proc *p, cn_slice reason)
{
    cn_run_proc *rp = cn_gen_state(p);
    rp->proc = NULL;
    if (rp->b->retained) /* its outcome stays readable by this pid */
        cn_retained_add(rp->b->retained, p->id, rp->run);
    council_status st = council_run_status(rp->run);
    if (st == COUNCIL_PENDING || st == COUNCIL_RUNNING) {
        /* Stopped from outside (GenServer.stop, a linked process, node
         * shutdown): the run is cancelled with the process's reason. */
        keep_reason(rp, reason);
        council_run_cancel(rp->run);
    }
    if (rp->watching)
        council_run_unwatch(rp->run, on_run_end, rp);
    /* What still waits for the process (none after a cancel) is dropped. */
    for (size_t i = 0; i < rp->b->nhooks; i++)
        rp->b->hooks[i].ops->gone(rp->b, rp->b->hooks[i].arg, rp);
    free_awaiters(rp);
    if (rp->ending)
        cn_dl_del(&rp->end_link);
    cn_dl_del(&rp->live_link);
    council_run_set_user_data(rp->run, NULL);
    council_run_unref(rp->run);
    if (rp->more) {
        free(rp->more->server);
        if (rp->more->has_reason)
            ei_x_free(&rp->more->reason);
        free(rp->more);
    }
    rp->b->runs_alive--;
    /* rp goes with the process's record */
}

static const cn_gen_ops run_ops = {
    .handle_call = handle_call,
    .handle_cast = handle_cast,
    .handle_info = handle_info,
    .get_state = get_state,
    .handle_down = handle_down,
    .terminate = terminate,
    .handle_exit = handle_exit,
    .handle_stop = handle_stop,
};

/* -------------------------------------------------------------- API */

cn_proc *cn_run_proc_spawn(cn_bridge *b, council_run *run, const cn_pid *member_server)
{
    if (!b->end_timer_ready) {
        uv_timer_init(cn_node_loop(b->node), &b->end_timer);
        uv_unref((uv_handle_t *)&b->end_timer); /* runs keep the loop busy, not it */
        b->end_timer.data = b;
        cn_dl_init(&b->ending);
        cn_dl_init(&b->live);
        b->end_timer_ready = 1;
    }
    void *state;
    cn_proc *proc = cn_gen_start_with(b->node, &run_ops, sizeof(cn_run_proc), &state, NULL);
    if (!proc)
        return NULL;
    /* nothing reaches the process before this returns */
    cn_run_proc *rp = state;
    rp->b = b;
    rp->proc = proc;
    cn_dl_init(&rp->end_link);
    rp->run = council_run_ref(run);
    if (council_run_watch(run, on_run_end, rp) == 0)
        rp->watching = 1;
    b->runs_alive++;
    council_run_set_user_data(run, rp);
    cn_dl_push(&b->live, &rp->live_link);
    struct rp_more *m;
    if (member_server && (m = rp_more(rp)) != NULL) {
        /* Without a monitor a dead server could not be noticed: then the
         * run has none, and its beam members fail with a clear error. */
        unsigned char ref[CN_NODE_REF_MAX];
        size_t len = sizeof ref;
        if (cn_node_monitor(b->node, proc, member_server, ref, &len) == 0 &&
            (m->server = malloc(sizeof *m->server + len)) != NULL) {
            m->server->pid = *member_server;
            m->server->ref_len = len;
            memcpy(m->server->ref, ref, len);
        }
    }
    return proc;
}

cn_run_proc *cn_run_proc_from_run(const council_run *run)
{
    return run ? council_run_get_user_data(run) : NULL;
}

cn_proc *cn_run_proc_of(const council_run *run)
{
    cn_run_proc *rp = cn_run_proc_from_run(run);
    return rp ? rp->proc : NULL;
}

void cn_run_proc_cancel(council_run *run, const cn_slice *reason)
{
    cn_run_proc *rp = cn_run_proc_from_run(run);
    if (rp && reason)
        keep_reason(rp, *reason);
    council_run_cancel(run);
}

void cn_run_proc_shutdown_all(cn_bridge *b, cn_slice reason)
{
    if (!b->end_timer_ready)
        return; /* no run was ever started */
    /* Cancelling publishes each run's terminal event and queues its
     * process for the end; nothing leaves the live list until end_fire. */
    for (cn_dl *e = b->live.next; e != &b->live; e = e->next) {
        cn_run_proc *rp = cn_dl_entry(e, cn_run_proc, live_link);
        council_status st = council_run_status(rp->run);
        if (st == COUNCIL_PENDING || st == COUNCIL_RUNNING) /* an ended run keeps its reason */
            cn_run_proc_cancel(rp->run, &reason);
    }
    /* Now, not from the loop: the node's connections close next. */
    uv_timer_stop(&b->end_timer);
    end_fire(&b->end_timer);
}

const cn_pid *cn_run_proc_member_server(const cn_run_proc *rp)
{
    return rp->more && rp->more->server ? &rp->more->server->pid : NULL;
}

const cn_pid *cn_run_proc_served(cn_hooked *h, const council_run *run, void *item,
                                 cn_run_proc **rp)
{
    *rp = cn_run_proc_from_run(run);
    int has_proc = *rp && (*rp)->proc;
    const cn_pid *server = has_proc ? cn_run_proc_member_server(*rp) : NULL;
    if (!server)
        h->kind->fail(item, cn_beam_failure_text(h->kind->beam, has_proc ? CN_BEAM_NO_SERVER
                                                                         : CN_BEAM_NO_PROCESS));
    return server;
}

cn_proc *cn_run_proc_proc(const cn_run_proc *rp)
{
    return rp->proc;
}

council_run *cn_run_proc_run_of_pid(cn_bridge *b, const cn_pid *pid)
{
    if (pid->node != 0 || pid->creation != cn_node_creation(b->node))
        return NULL;
    uint64_t id = (uint64_t)pid->serial << 32 | pid->num;
    cn_proc *p = cn_pt_find_id(cn_node_table(b->node), id);
    if (p && cn_gen_is(p, &run_ops))
        return ((cn_run_proc *)cn_gen_state(p))->run;
    return b->retained ? cn_retained_find(b->retained, id) : NULL;
}
