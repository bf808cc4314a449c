/* node.c - see node.h. This file owns the node's life (config, creation,
 * stop, free, the reaper of exited processes, stats) and its local
 * processes (spawn, exit, exit signals). Peers and sending are
 * node_peers.c, control messages node_dispatch.c, the listener and the
 * connections node_listen.c.
 */
#include "node_internal.h"

#include <sched.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void cn_node_config_defaults(cn_node_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_addr = "127.0.0.1";
    cfg->port = 0;
    cfg->max_connections = 64;
    cfg->max_handshakes = 256;
    cfg->max_handshakes_per_addr = 128;
    cfg->conn.first_packet_ms = 2000;
    cfg->conn.max_frame = 16u * 1024 * 1024;
    cfg->conn.max_outq = 64u * 1024 * 1024;
    cfg->conn.max_backlog = 8u * 1024 * 1024;
    cfg->conn.hs_timeout_ms = 7000;
    cfg->conn.silent_ms = 75000;
    cfg->conn.tick_ms = 15000;
    cfg->terms = cn_term_default_limits;
    cfg->max_signals_per_peer = 100000;
}

/* ---------------------------------------------------------- lifecycle */

static void reap(uv_check_t *h)
{
    cn_node *n = h->data;
    while (n->zombies) {
        cn_proc *p = n->zombies;
        n->zombies = p->hnext;
        cn_pt_release(p);
    }
}

cn_node *cn_node_new(uv_loop_t *loop, const cn_node_config *cfg, cn_cookie *cookie)
{
    if (!cfg->name || !strchr(cfg->name, '@') || strlen(cfg->name) > CN_MAX_NODE_NAME)
        return NULL;
    cn_node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->loop = loop;
    n->cfg = *cfg;
    n->name = strdup(cfg->name);
    n->cfg.capture_dir = cfg->capture_dir ? strdup(cfg->capture_dir) : NULL;
    n->listen_addr = strdup(cfg->listen_addr ? cfg->listen_addr : "127.0.0.1");
    if (!n->name || !n->listen_addr || cn_pt_init(&n->pt, n->name, 0, 0) ||
        ei_x_new(&n->scratch)) {
        free((char *)n->cfg.capture_dir);
        free(n->name);
        free(n->listen_addr);
        free(n);
        return NULL;
    }
    n->cfg.name = n->name;
    n->cfg.listen_addr = n->listen_addr;
    n->cookie = *cookie;
    memset(cookie, 0, sizeof *cookie);
    n->dial_env.loop = loop;
    n->dial_env.our_name = n->name;
    n->dial_env.cookie = &n->cookie;
    n->dial_env.lim = &n->cfg.conn;
    n->dial_env.cbs = cn_node_dial_cbs;
    n->dial_env.ud = n;
    randombytes_buf(&n->ref_counter, sizeof n->ref_counter);
    n->ref_counter &= 0xffffffffull;
    uv_check_init(loop, &n->reaper);
    n->reaper.data = n;
    n->reaper_open = 1;
    uv_check_start(&n->reaper, reap);
    uv_unref((uv_handle_t *)&n->reaper);
    return n;
}

/* Yields the core until `ns` have passed since `from`: a thread with work
 * on this core runs first (the callers' node, on a small machine), as
 * BEAM's spinning schedulers let it. At least one yield. */
static void yield_until(uint64_t from, uint64_t ns)
{
    sched_yield();
    while (ns && uv_hrtime() - from < ns)
        sched_yield();
}

void cn_node_run(cn_node *n, uint64_t busy_poll_us, uint64_t pace_us)
{
    uv_loop_t *loop = n->loop;
    if (busy_poll_us == 0) {
        uv_run(loop, UV_RUN_DEFAULT);
        return;
    }
    uint64_t window = busy_poll_us * 1000, pace = pace_us * 1000; /* ns */
    for (;;) {
        uint64_t seen = n->frames_in;
        if (!uv_run(loop, UV_RUN_ONCE))
            return;
        if (n->frames_in == seen)
            continue; /* a timer, a child, a signal: sleep again */
        uint64_t last = uv_hrtime(); /* the last turn that read frames */
        uint64_t until = last + window;
        int dense = 0; /* frames come less than `pace` apart */
        int paced = 0; /* the poll just made followed a paced wait */
        for (;;) {
            seen = n->frames_in;
            if (!uv_run(loop, UV_RUN_NOWAIT))
                return;
            uint64_t now = uv_hrtime();
            if (n->frames_in != seen) {
                dense = dense || (pace && now - last <= pace);
                last = now;
                until = now + window;
                paced = 0;
                continue; /* poll again at once: what came during the turn */
            }
            if (now >= until)
                break;
            if (dense && !paced) {
                /* the frames of several callers: wait before the next
                 * poll so that it reads (and the turn answers in one
                 * write) what they send meanwhile */
                yield_until(now, pace < until - now ? pace : until - now);
                paced = 1;
                continue;
            }
            dense = 0; /* a paced poll found nothing: poll at every yield */
            paced = 0;
            yield_until(now, 0);
        }
    }
}

uv_loop_t *cn_node_loop(cn_node *n) { return n->loop; }
const char *cn_node_name(const cn_node *n) { return n->name; }
int cn_node_port(const cn_node *n) { return n->port; }
uint32_t cn_node_creation(const cn_node *n) { return n->pt.creation; }
cn_proc_table *cn_node_table(cn_node *n) { return &n->pt; }

void cn_node_stats_get(const cn_node *n, cn_node_stats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n->nconns; i++)
        if (n->conns[i]->up && !n->conns[i]->closing)
            out->connections++;
    out->handshakes = n->nhs;
    out->epmd_registered = n->epmd_registered;
    out->epmd_losses = n->epmd_losses;
    out->handshakes_evicted = n->hs_evicted;
    out->processes = n->pt.nprocs;
    out->links = n->pt.nlinks;
    out->monitors = n->pt.nmons;
    out->frames_in = n->frames_in;
    out->frames_dropped = n->frames_dropped;
    out->bad_frames = n->bad_frames;
    out->frames_too_large = n->frames_too_large;
}

void cn_node_stop(cn_node *n)
{
    if (n->stopping)
        return;
    n->stopping = 1;
    if (n->listener_open) {
        n->listener_open = 0;
        uv_close((uv_handle_t *)&n->listener, NULL);
    }
    /* Every process exits with `shutdown`: links and monitors are told. */
    for (;;) {
        cn_proc *victim = NULL;
        for (size_t b = 0; b < n->pt.nbuckets && !victim; b++)
            for (cn_proc *p = n->pt.buckets[b]; p && !victim; p = p->hnext)
                if (!p->dead)
                    victim = p;
        if (!victim)
            break;
        cn_node_exit(n, victim, cn_atom_shutdown());
    }
    while (n->nhs > 0)
        cn_conn_close(n->hs[n->nhs - 1], NULL); /* on_close removes it */
    while (n->nconns > 0)
        cn_conn_close_flush(n->conns[n->nconns - 1]); /* on_close removes it */
    while (n->ndials > 0) {
        cn_dial *d = n->dials[n->ndials - 1];
        cn_node_dial_failed(d, "stopping", n);
        cn_dial_abort(d);
    }
    if (n->epmd) {
        cn_epmd_close_free(n->epmd);
        n->epmd = NULL;
    }
    n->epmd_registered = 0;
    if (n->epmd_timer_open) {
        n->epmd_timer_open = 0;
        uv_close((uv_handle_t *)&n->epmd_timer, NULL);
    }
    if (n->reaper_open) {
        n->reaper_open = 0;
        uv_close((uv_handle_t *)&n->reaper, NULL);
    }
    if (n->logtick_open) {
        n->logtick_open = 0;
        uv_close((uv_handle_t *)&n->logtick, NULL);
    }
    if (n->accept_timer_open) {
        n->accept_timer_open = 0;
        uv_close((uv_handle_t *)&n->accept_timer, NULL);
    }
    cn_log_flush();
}

void cn_node_free(cn_node *n)
{
    if (!n)
        return;
    reap(&n->reaper);
    cn_pt_free(&n->pt);
    ei_x_free(&n->scratch);
    cn_cookie_free(&n->cookie);
    free(n->conns);
    free(n->hs);
    free(n->dials);
    free((char *)n->cfg.capture_dir);
    free(n->name);
    free(n->listen_addr);
    free(n);
}

/* ---------------------------------------------------------- processes */

cn_proc *cn_node_spawn(cn_node *n, const cn_proc_ops *ops, void *state,
                       const char *name)
{
    if (n->stopping)
        return NULL;
    if (name && cn_pt_whereis(&n->pt, name, strlen(name)))
        return NULL;
    cn_proc *p = cn_pt_spawn(&n->pt);
    if (!p)
        return NULL;
    p->ops = ops;
    p->state = state;
    if (name && cn_pt_register(&n->pt, p, name)) {
        cn_pt_remove(&n->pt, p);
        cn_pt_release(p);
        return NULL;
    }
    return p;
}

void cn_node_self(const cn_node *n, const cn_proc *p, cn_pid *out)
{
    (void)n;
    out->node = 0;
    out->num = (uint32_t)p->id;
    out->serial = (uint32_t)(p->id >> 32);
    out->creation = n->pt.creation;
}

int cn_node_encode_pid(const cn_node *n, ei_x_buff *x, const cn_pid *pid)
{
    cn_wpid w;
    cn_pt_pid_to_wire(&n->pt, pid, &w);
    return cn_enc_pid(x, &w);
}

void cn_node_exit(cn_node *n, cn_proc *p, cn_slice reason)
{
    if (p->dead)
        return;
    p->dead = 1; /* no more deliveries */
    if (cn_log_level() >= CN_LOG_DEBUG) {
        const char *a;
        size_t al;
        if (cn_term_atom(reason, &a, &al) == 0)
            cn_log_debug("process %s<%u.%u> exits: %.*s", p->name ? p->name : "",
                         (unsigned)p->id, (unsigned)(p->id >> 32), (int)al, a);
        else
            cn_log_debug("process %s<%u.%u> exits (non-atom reason)",
                         p->name ? p->name : "", (unsigned)p->id,
                         (unsigned)(p->id >> 32));
    }
    cn_wpid me;
    cn_pt_proc_wpid(&n->pt, p, &me);
    while (!cn_dl_empty(&p->links)) {
        cn_link *l = cn_dl_entry(p->links.next, cn_link, by_proc);
        cn_wpid them;
        cn_pt_pid_to_wire(&n->pt, &l->remote, &them);
        if (l->unlink_id == 0)
            cn_node_peer_send(n, l->peer, cn_frame_exit(cn_node_scratch(n), &me, &them, reason));
        cn_pt_link_del(&n->pt, l);
    }
    while (!cn_dl_empty(&p->watchers)) {
        cn_mon *m = cn_dl_entry(p->watchers.next, cn_mon, by_proc);
        cn_wpid them;
        cn_pt_pid_to_wire(&n->pt, &m->remote, &them);
        cn_node_peer_send(n, m->peer,
                  cn_frame_monitor_p_exit(cn_node_scratch(n), (cn_slice){m->target, m->target_len},
                                              &them, (cn_slice){m->ref, m->ref_len}, reason));
        cn_pt_mon_del(&n->pt, m);
    }
    while (!cn_dl_empty(&p->watching)) {
        cn_mon *m = cn_dl_entry(p->watching.next, cn_mon, by_proc);
        cn_node_peer_send(n, m->peer,
                  cn_frame_demonitor_p(cn_node_scratch(n), &me, (cn_slice){m->target, m->target_len},
                                           (cn_slice){m->ref, m->ref_len}));
        cn_pt_mon_del(&n->pt, m);
    }
    if (p->ops && p->ops->on_terminate)
        p->ops->on_terminate(n, p, reason);
    cn_pt_remove(&n->pt, p); /* out of the hash: hnext is free for the reap list */
    p->hnext = n->zombies;
    n->zombies = p;
}

static int reason_is(cn_slice r, const char *atom)
{
    return cn_term_is_atom(r, atom);
}

void cn_node_exit_signal_default(cn_node *n, cn_proc *p, const cn_pid *from,
                                 cn_slice reason, int via_link)
{
    if (!via_link && reason_is(reason, "kill")) {
        cn_node_exit(n, p, cn_atom_killed());
        return;
    }
    if (p->trap_exit) {
        ei_x_buff x;
        if (ei_x_new(&x))
            return;
        if (!ei_x_encode_tuple_header(&x, 3) && !ei_x_encode_atom(&x, "EXIT") &&
            !cn_node_encode_pid(n, &x, from) &&
            !ei_x_append_buf(&x, (const char *)reason.p, (int)reason.len) &&
            p->ops->on_message)
            p->ops->on_message(n, p, cn_x_slice(&x));
        ei_x_free(&x);
        return;
    }
    if (reason_is(reason, "normal"))
        return;
    cn_node_exit(n, p, reason);
}

void cn_node_deliver_exit(cn_node *n, cn_proc *p, const cn_pid *from,
                         cn_slice reason, int via_link)
{
    if (p->dead)
        return;
    if (p->ops->on_exit_signal)
        p->ops->on_exit_signal(n, p, from, reason, via_link);
    else
        cn_node_exit_signal_default(n, p, from, reason, via_link);
}
