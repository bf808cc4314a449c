/* node.c - see node.h. */
#include "node.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dial.h"
#include "epmd.h"
#include "log.h"

struct cn_node {
    uv_loop_t *loop;
    cn_node_config cfg;
    char *name;
    char *listen_addr;
    cn_cookie cookie;
    uv_tcp_t listener;
    int listener_open;
    int port;
    cn_epmd epmd;
    int stopping;
    cn_node_ready_cb ready_cb;
    void *ready_ud;
    uv_check_t reaper;
    int reaper_open;
    cn_dl zombies;
    cn_proc_table pt;
    cn_conn **conns;
    size_t nconns, cap_conns;
    cn_dial **dials;         /* outgoing attempts, one per node at most */
    size_t ndials, cap_dials;
    cn_dial_env dial_env;
    ei_x_buff scratch; /* frames are built here, then copied by the conn */
    uint64_t ref_counter;
    uint64_t frames_in, frames_dropped, bad_frames;
};

static int on_dial_up(cn_dial *d, cn_conn *c, void *ud);
static void on_dial_fail(cn_dial *d, const char *why, void *ud);
static int dial_connected(cn_dial *d, void *ud);

void cn_node_config_defaults(cn_node_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_addr = "127.0.0.1";
    cfg->port = 0;
    cfg->max_connections = 64;
    cfg->conn.max_frame = 16u * 1024 * 1024;
    cfg->conn.max_outq = 64u * 1024 * 1024;
    cfg->conn.hs_timeout_ms = 7000;
    cfg->conn.silent_ms = 75000;
    cfg->conn.tick_ms = 15000;
    cfg->terms = cn_term_default_limits;
    cfg->max_signals_per_peer = 100000;
}

/* A peer holding too many links + monitors on our processes is cut off
 * (they would otherwise grow without bound). */
static int peer_full(cn_node *n, cn_conn *c, cn_peer *peer)
{
    if (peer->nlinks + peer->nmons < n->cfg.max_signals_per_peer)
        return 0;
    cn_log_warn("connection %s (%s): over %zu links+monitors, closing", c->addr,
                c->hs.peer_name, n->cfg.max_signals_per_peer);
    return 1;
}

/* ---------------------------------------------------------- lifecycle */

static void reap(uv_check_t *h)
{
    cn_node *n = h->data;
    while (!cn_dl_empty(&n->zombies)) {
        cn_proc *p = cn_dl_entry(n->zombies.next, cn_proc, zombie);
        cn_dl_del(&p->zombie);
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
    cn_dl_init(&n->zombies);
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
    n->dial_env.cbs = (cn_dial_cbs){on_dial_up, on_dial_fail, dial_connected};
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
    out->processes = n->pt.nprocs;
    out->links = n->pt.nlinks;
    out->monitors = n->pt.nmons;
    out->frames_in = n->frames_in;
    out->frames_dropped = n->frames_dropped;
    out->bad_frames = n->bad_frames;
}

/* ----------------------------------------------------------- sending */

static cn_conn *conn_for_node(cn_node *n, uint32_t node)
{
    for (size_t i = 0; i < n->nconns; i++) {
        cn_conn *c = n->conns[i];
        if (c->up && !c->closing && c->peer && ((cn_peer *)c->peer)->node == node)
            return c;
    }
    return NULL;
}

static cn_dial *dial_for_node(cn_node *n, uint32_t node)
{
    for (size_t i = 0; i < n->ndials; i++)
        if (n->dials[i]->node == node)
            return n->dials[i];
    return NULL;
}

/* Takes a dial out of the table (idempotent). */
static void dial_remove(cn_node *n, cn_dial *d)
{
    for (size_t i = 0; i < n->ndials; i++)
        if (n->dials[i] == d) {
            n->dials[i] = n->dials[--n->ndials];
            return;
        }
}

static ei_x_buff *scratch(cn_node *n)
{
    n->scratch.index = 0;
    return &n->scratch;
}

static int flush_scratch(cn_node *n, cn_conn *c, int built)
{
    if (built < 0) {
        cn_log_error("could not encode a frame for %s", c->hs.peer_name);
        return -1;
    }
    return cn_conn_send(c, n->scratch.buff, (size_t)n->scratch.index);
}

/* Sends the frame in scratch to a peer: over its connection, or into the
 * queue of the dial that will connect it. -1 for a peer being dropped. */
static int peer_send(cn_node *n, cn_peer *peer, int built)
{
    if (built < 0) {
        cn_log_error("could not encode a frame for node %s",
                     cn_pt_node_name(&n->pt, peer->node));
        return -1;
    }
    if (peer->conn)
        return cn_conn_send(peer->conn, n->scratch.buff, (size_t)n->scratch.index);
    if (peer->dial)
        return cn_dial_queue(peer->dial, n->scratch.buff, (size_t)n->scratch.index);
    return -1;
}

static int conns_reserve(cn_node *n)
{
    if (n->nconns < n->cap_conns)
        return 0;
    size_t cap = n->cap_conns ? n->cap_conns * 2 : 8;
    cn_conn **a = realloc(n->conns, cap * sizeof *a);
    if (!a)
        return -1;
    n->conns = a;
    n->cap_conns = cap;
    return 0;
}

/* The peer record for a remote node id: its connection's, or the pending
 * dial's; with `dial`, a node not connected is dialed (BEAM's auto-connect).
 * NULL: not reachable (stopping, no creation yet, connection limit, bad
 * name, ENOMEM). */
static cn_peer *peer_for(cn_node *n, uint32_t node, int dial)
{
    if (node == 0 || node == CN_NODE_NONE)
        return NULL;
    cn_conn *c = conn_for_node(n, node);
    if (c)
        return c->peer;
    cn_dial *d = dial_for_node(n, node);
    if (d)
        return d->peer;
    if (!dial || n->stopping || n->pt.creation == 0)
        return NULL;
    const char *name = cn_pt_node_name(&n->pt, node);
    if (!name)
        return NULL;
    if (n->nconns + n->ndials >= n->cfg.max_connections) {
        cn_log_warn("not dialing %s: connection limit (%zu) reached", name,
                    n->cfg.max_connections);
        return NULL;
    }
    if (n->ndials == n->cap_dials) {
        size_t cap = n->cap_dials ? n->cap_dials * 2 : 4;
        cn_dial **a = realloc(n->dials, cap * sizeof *a);
        if (!a)
            return NULL;
        n->dials = a;
        n->cap_dials = cap;
    }
    cn_peer *peer = cn_pt_peer_new(&n->pt, node, NULL);
    if (!peer)
        return NULL;
    n->dial_env.our_creation = n->pt.creation;
    d = cn_dial_start(&n->dial_env, name, node, peer);
    if (!d) {
        cn_pt_peer_free(peer);
        return NULL;
    }
    peer->dial = d;
    n->dials[n->ndials++] = d;
    return peer;
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

int cn_node_send(cn_node *n, const cn_pid *to, cn_slice msg)
{
    if (to->node == 0) {
        if (to->creation != n->pt.creation)
            return -1;
        cn_proc *p = cn_pt_find_id(&n->pt, (uint64_t)to->serial << 32 | to->num);
        if (!p || !p->ops->on_message)
            return -1;
        p->ops->on_message(n, p, msg);
        return 0;
    }
    cn_peer *peer = peer_for(n, to->node, 1);
    if (!peer)
        return -1;
    cn_wpid w;
    cn_pt_pid_to_wire(&n->pt, to, &w);
    return peer_send(n, peer, cn_frame_send(scratch(n), &w, msg));
}

int cn_node_send_named(cn_node *n, cn_proc *from, const char *node_name,
                       const char *name, cn_slice msg)
{
    uint32_t id = cn_pt_intern(&n->pt, node_name, strlen(node_name));
    cn_peer *peer = peer_for(n, id, 1);
    if (!peer)
        return -1;
    cn_wpid me;
    cn_pt_proc_wpid(&n->pt, from, &me);
    return peer_send(n, peer, cn_frame_reg_send(scratch(n), &me, name, msg));
}

int cn_node_send_alias(cn_node *n, cn_proc *from, const cn_pid *owner,
                       cn_slice alias, cn_slice msg)
{
    /* An alias belongs to a connected caller: never worth a dial. */
    cn_conn *c = conn_for_node(n, owner->node);
    if (!c)
        return -1;
    cn_wpid me;
    cn_pt_proc_wpid(&n->pt, from, &me);
    return flush_scratch(n, c, cn_frame_alias_send(scratch(n), &me, alias, msg));
}

int cn_node_link(cn_node *n, cn_proc *p, const cn_pid *remote)
{
    if (p->dead)
        return -1;
    cn_peer *peer = peer_for(n, remote->node, 1);
    if (!peer)
        return -1;
    cn_link *l = cn_pt_link_add(&n->pt, p, peer, remote);
    if (!l)
        return -1;
    l->unlink_id = 0;
    cn_wpid me, them;
    cn_pt_proc_wpid(&n->pt, p, &me);
    cn_pt_pid_to_wire(&n->pt, remote, &them);
    return peer_send(n, peer, cn_frame_link(scratch(n), &me, &them));
}

int cn_node_unlink(cn_node *n, cn_proc *p, const cn_pid *remote)
{
    cn_link *l = cn_pt_link_find(p, remote);
    if (!l)
        return 0;
    uint64_t id;
    do
        randombytes_buf(&id, sizeof id);
    while (id == 0);
    l->unlink_id = id;
    cn_wpid me, them;
    cn_pt_proc_wpid(&n->pt, p, &me);
    cn_pt_pid_to_wire(&n->pt, remote, &them);
    return peer_send(n, l->peer, cn_frame_unlink_id(scratch(n), id, &me, &them));
}

/* A fresh reference of this node (3 id words). */
static size_t make_ref(cn_node *n, unsigned char *out, size_t cap)
{
    uint64_t c = ++n->ref_counter;
    uint32_t w[3] = {(uint32_t)(c & 0x3ffff), (uint32_t)(c >> 18), 0};
    randombytes_buf(&w[2], sizeof w[2]);
    return cn_term_ref(out, cap, n->name, strlen(n->name), n->pt.creation, w);
}

int cn_node_monitor(cn_node *n, cn_proc *p, const cn_pid *remote,
                    unsigned char *ref_out, size_t *ref_len)
{
    if (p->dead)
        return -1;
    size_t rl = make_ref(n, ref_out, *ref_len);
    if (!rl)
        return -1;
    cn_peer *peer = peer_for(n, remote->node, 1);
    if (!peer)
        return -1;
    *ref_len = rl;
    cn_slice ref = {ref_out, rl};
    /* the target as we send it: the remote pid's term */
    ei_x_buff *x = scratch(n);
    if (cn_node_encode_pid(n, x, remote))
        return -1;
    cn_slice target = cn_x_slice(x);
    cn_mon *m = cn_pt_mon_add(&n->pt, CN_MON_WATCHING_REMOTE, p, peer, remote, ref, target);
    if (!m)
        return -1;
    cn_wpid me;
    cn_pt_proc_wpid(&n->pt, p, &me);
    int rc = peer_send(n, peer, cn_frame_monitor_p(scratch(n), &me,
                                                   (cn_slice){m->target, m->target_len}, ref));
    /* Not sent: the caller hears -1, so no DOWN may follow later. (A send
     * never closes the connection inside the call: m is still ours.) */
    if (rc)
        cn_pt_mon_del(&n->pt, m);
    return rc;
}

int cn_node_demonitor(cn_node *n, cn_proc *p, cn_slice ref)
{
    for (cn_dl *e = p->watching.next; e != &p->watching; e = e->next) {
        cn_mon *m = cn_dl_entry(e, cn_mon, by_proc);
        if (m->ref_len == ref.len && memcmp(m->ref, ref.p, ref.len) == 0) {
            cn_wpid me;
            cn_pt_proc_wpid(&n->pt, p, &me);
            int rc = peer_send(n, m->peer, cn_frame_demonitor_p(scratch(n), &me,
                                   (cn_slice){m->target, m->target_len},
                                   (cn_slice){m->ref, m->ref_len}));
            cn_pt_mon_del(&n->pt, m);
            return rc;
        }
    }
    return -1;
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
            peer_send(n, l->peer, cn_frame_exit(scratch(n), &me, &them, reason));
        cn_pt_link_del(&n->pt, l);
    }
    while (!cn_dl_empty(&p->watchers)) {
        cn_mon *m = cn_dl_entry(p->watchers.next, cn_mon, by_proc);
        cn_wpid them;
        cn_pt_pid_to_wire(&n->pt, &m->remote, &them);
        peer_send(n, m->peer,
                  cn_frame_monitor_p_exit(scratch(n), (cn_slice){m->target, m->target_len},
                                              &them, (cn_slice){m->ref, m->ref_len}, reason));
        cn_pt_mon_del(&n->pt, m);
    }
    while (!cn_dl_empty(&p->watching)) {
        cn_mon *m = cn_dl_entry(p->watching.next, cn_mon, by_proc);
        peer_send(n, m->peer,
                  cn_frame_demonitor_p(scratch(n), &me, (cn_slice){m->target, m->target_len},
                                           (cn_slice){m->ref, m->ref_len}));
        cn_pt_mon_del(&n->pt, m);
    }
    if (p->ops && p->ops->on_terminate)
        p->ops->on_terminate(n, p, reason);
    cn_pt_remove(&n->pt, p);
    cn_dl_push(&n->zombies, &p->zombie);
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

static void deliver_exit(cn_node *n, cn_proc *p, const cn_pid *from,
                         cn_slice reason, int via_link)
{
    if (p->dead)
        return;
    if (p->ops->on_exit_signal)
        p->ops->on_exit_signal(n, p, from, reason, via_link);
    else
        cn_node_exit_signal_default(n, p, from, reason, via_link);
}

/* ----------------------------------------------------------- dispatch */

/* Resolves a target: pid term (ours, this creation) or registered name. */
static cn_proc *resolve(cn_node *n, const cn_slice *target)
{
    cn_wpid w;
    if (cn_term_pid(*target, &w) == 0)
        return cn_pt_find_wire(&n->pt, &w);
    const char *name;
    size_t len;
    if (cn_term_atom(*target, &name, &len) == 0)
        return cn_pt_whereis(&n->pt, name, len);
    return NULL;
}

static int dispatch(cn_node *n, cn_conn *c, const cn_ctl *m)
{
    cn_peer *peer = c->peer;
    cn_wpid from_w, to_w;
    cn_pid from;
    cn_proc *p;

    switch (m->op) {
    case CN_DOP_SEND:
    case CN_DOP_REG_SEND:
        p = resolve(n, &m->to);
        if (!p || !p->ops->on_message) {
            n->frames_dropped++;
            cn_log_debug("message to an unknown process dropped");
            return 0;
        }
        p->ops->on_message(n, p, m->payload);
        return 0;

    case CN_DOP_LINK:
        cn_term_pid(m->from, &from_w);
        cn_term_pid(m->to, &to_w);
        if (cn_pt_pid_from_wire(&n->pt, &from_w, &from))
            return 0;
        if (from.node != peer->node)
            return -1; /* BEAM itself treats this as an invalid message */
        if (peer_full(n, c, peer))
            return -1;
        p = cn_pt_find_wire(&n->pt, &to_w);
        if (!p) {
            flush_scratch(n, c, cn_frame_exit(scratch(n), &to_w, &from_w, cn_atom_noproc()));
            return 0;
        }
        {
            cn_link *l = cn_pt_link_add(&n->pt, p, peer, &from);
            if (!l)
                cn_log_error("out of memory adding a link");
            else
                l->unlink_id = 0; /* linked again: a pending unlink is moot */
        }
        return 0;

    case CN_DOP_UNLINK:
    case CN_DOP_UNLINK_ID:
        cn_term_pid(m->from, &from_w);
        cn_term_pid(m->to, &to_w);
        if (m->op == CN_DOP_UNLINK_ID)
            flush_scratch(n, c, cn_frame_unlink_id_ack(scratch(n), m->id, &to_w, &from_w));
        if (cn_pt_pid_from_wire(&n->pt, &from_w, &from))
            return 0;
        if ((p = cn_pt_find_wire(&n->pt, &to_w))) {
            cn_link *l = cn_pt_link_find(p, &from);
            if (l)
                cn_pt_link_del(&n->pt, l);
        }
        return 0;

    case CN_DOP_UNLINK_ID_ACK:
        cn_term_pid(m->from, &from_w);
        cn_term_pid(m->to, &to_w);
        if (cn_pt_pid_from_wire(&n->pt, &from_w, &from))
            return 0;
        if ((p = cn_pt_find_wire(&n->pt, &to_w))) {
            cn_link *l = cn_pt_link_find(p, &from);
            if (l && l->unlink_id == m->id)
                cn_pt_link_del(&n->pt, l);
        }
        return 0;

    case CN_DOP_EXIT:
    case CN_DOP_EXIT2:
        cn_term_pid(m->from, &from_w);
        cn_term_pid(m->to, &to_w);
        if (cn_pt_pid_from_wire(&n->pt, &from_w, &from))
            return 0;
        if (!(p = cn_pt_find_wire(&n->pt, &to_w)))
            return 0;
        if (m->op == CN_DOP_EXIT) {
            cn_link *l = cn_pt_link_find(p, &from);
            if (!l)
                return 0; /* no link: the signal means nothing */
            int pending = l->unlink_id != 0;
            cn_pt_link_del(&n->pt, l);
            if (pending)
                return 0;
        }
        deliver_exit(n, p, &from, m->reason, m->op == CN_DOP_EXIT);
        return 0;

    case CN_DOP_MONITOR_P:
        cn_term_pid(m->from, &from_w);
        if (cn_pt_pid_from_wire(&n->pt, &from_w, &from))
            return 0;
        p = resolve(n, &m->to);
        if (!p) {
            flush_scratch(n, c, cn_frame_monitor_p_exit(scratch(n), m->to, &from_w,
                                                        m->ref, cn_atom_noproc()));
            return 0;
        }
        if (peer_full(n, c, peer))
            return -1;
        if (!cn_pt_mon_add(&n->pt, CN_MON_WATCHED_BY_REMOTE, p, peer, &from, m->ref, m->to))
            cn_log_error("out of memory adding a monitor");
        return 0;

    case CN_DOP_DEMONITOR_P: {
        cn_mon *mon = cn_pt_mon_find(peer, CN_MON_WATCHED_BY_REMOTE, m->ref);
        if (mon)
            cn_pt_mon_del(&n->pt, mon);
        return 0;
    }

    case CN_DOP_MONITOR_P_EXIT: {
        cn_mon *mon = cn_pt_mon_find(peer, CN_MON_WATCHING_REMOTE, m->ref);
        if (!mon)
            return 0;
        cn_proc *owner = mon->proc;
        cn_pid who = mon->remote;
        unsigned char ref[300];
        size_t rl = mon->ref_len < sizeof ref ? mon->ref_len : sizeof ref;
        memcpy(ref, mon->ref, rl);
        cn_pt_mon_del(&n->pt, mon);
        if (!owner->dead && owner->ops->on_down)
            owner->ops->on_down(n, owner, (cn_slice){ref, rl}, &who, m->reason);
        return 0;
    }

    default: /* ALIAS_SEND (we have no aliases), GROUP_LEADER */
        n->frames_dropped++;
        return 0;
    }
}

/* ------------------------------------------------------- connections */

static int on_up(cn_conn *c, void *ud)
{
    cn_node *n = ud;
    if (n->stopping)
        return -1;
    uint32_t id = cn_pt_intern(&n->pt, c->hs.peer_name, strlen(c->hs.peer_name));
    if (id == CN_NODE_NONE || id == 0)
        return -1;
    /* The same node again: its old connection is dead to it. */
    cn_conn *old = conn_for_node(n, id);
    if (old)
        cn_conn_close(old, "replaced by a new connection from the same node");
    cn_dial *d = dial_for_node(n, id);
    if (d) {
        /* We were dialing it too: this connection carries what we queued
         * (and the links and monitors made meanwhile). */
        dial_remove(n, d);
        cn_peer *peer = d->peer;
        peer->dial = NULL;
        peer->conn = c;
        c->peer = peer;
        cn_dial_flush(d, c); /* a failure closes c: on_close drops the peer */
        cn_dial_abort(d);
        return 0;
    }
    c->peer = cn_pt_peer_new(&n->pt, id, c);
    return c->peer ? 0 : -1;
}

/* Accept side: the status for a node that is connecting to us. While we
 * dial it too, BEAM's rule for simultaneous connects: the greater node name
 * keeps its own attempt ("nok" to the other), the smaller gives its own up
 * ("ok_simultaneous") and waits for this connection. */
static int on_status(cn_conn *c, void *ud)
{
    cn_node *n = ud;
    if (n->stopping)
        return CN_HS_ST_NOT_ALLOWED;
    for (size_t i = 0; i < n->ndials; i++) {
        cn_dial *d = n->dials[i];
        if (strcmp(d->peer_name, c->hs.peer_name) != 0)
            continue;
        if (d->state == CN_DIAL_YIELDED)
            return CN_HS_ST_OK; /* the connection we wait for */
        if (strcmp(n->name, c->hs.peer_name) > 0)
            return CN_HS_ST_NOK;
        cn_dial_yield(d);
        return CN_HS_ST_OK_SIMULTANEOUS;
    }
    return CN_HS_ST_OK;
}

static int on_frame(cn_conn *c, const unsigned char *body, size_t len, void *ud)
{
    cn_node *n = ud;
    n->frames_in++;
    if (body[0] != 'p') {
        n->bad_frames++;
        cn_log_warn("connection %s (%s): frame type %u not supported, closing",
                    c->addr, c->hs.peer_name, body[0]);
        return -1;
    }
    if (n->cfg.capture_dir && n->frames_in <= 100000) {
        char path[4096];
        snprintf(path, sizeof path, "%s/frame-%llu", n->cfg.capture_dir,
                 (unsigned long long)n->frames_in);
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(body + 1, 1, len - 1, f);
            fclose(f);
        }
    }
    cn_ctl m;
    int rc = cn_ctl_parse(body + 1, len - 1, &n->cfg.terms, &m);
    if (rc) {
        n->bad_frames++;
        cn_log_warn("connection %s (%s): bad control message (%d), closing",
                    c->addr, c->hs.peer_name, rc);
        return -1;
    }
    return dispatch(n, c, &m);
}

static void drop_peer(cn_node *n, cn_peer *peer)
{
    cn_pid noone = {0};
    while (!cn_dl_empty(&peer->mons)) {
        cn_mon *m = cn_dl_entry(peer->mons.next, cn_mon, by_peer);
        if (m->kind == CN_MON_WATCHING_REMOTE) {
            cn_proc *owner = m->proc;
            cn_pid who = m->remote;
            unsigned char ref[300];
            size_t rl = m->ref_len < sizeof ref ? m->ref_len : sizeof ref;
            memcpy(ref, m->ref, rl);
            cn_pt_mon_del(&n->pt, m);
            if (!owner->dead && owner->ops->on_down)
                owner->ops->on_down(n, owner, (cn_slice){ref, rl}, &who,
                                    cn_atom_noconnection());
        } else {
            cn_pt_mon_del(&n->pt, m);
        }
    }
    while (!cn_dl_empty(&peer->links)) {
        cn_link *l = cn_dl_entry(peer->links.next, cn_link, by_peer);
        cn_proc *p = l->proc;
        cn_pid who = l->remote;
        int pending = l->unlink_id != 0;
        cn_pt_link_del(&n->pt, l);
        if (!pending)
            deliver_exit(n, p, &who, cn_atom_noconnection(), 1);
    }
    (void)noone;
    cn_pt_peer_free(peer);
}

static void on_close(cn_conn *c, int was_up, void *ud)
{
    cn_node *n = ud;
    for (size_t i = 0; i < n->nconns; i++)
        if (n->conns[i] == c) {
            n->conns[i] = n->conns[--n->nconns];
            break;
        }
    if (c->peer) {
        cn_peer *peer = c->peer;
        c->peer = NULL;
        cn_log_info("node %s disconnected", c->hs.peer_name);
        drop_peer(n, peer);
    }
    (void)was_up;
}

static const cn_conn_cbs conn_cbs = {on_up, on_frame, on_close, on_status};

/* ---------------------------------------------------------- dialing */

/* Our outgoing connection is up: it becomes an ordinary connection. */
static int on_dial_up(cn_dial *d, cn_conn *c, void *ud)
{
    cn_node *n = ud;
    if (n->stopping || conns_reserve(n) < 0)
        return -1; /* the dial fails: noconnection */
    dial_remove(n, d);
    cn_peer *peer = d->peer;
    peer->dial = NULL;
    peer->conn = c;
    c->peer = peer;
    c->cbs = conn_cbs;
    c->ud = n;
    n->conns[n->nconns++] = c;
    cn_dial_flush(d, c); /* a failure closes c: on_close drops the peer */
    return 0;
}

/* The attempt failed: what was queued is lost, and as in BEAM every link
 * and monitor made towards that node fires with noconnection. */
static void on_dial_fail(cn_dial *d, const char *why, void *ud)
{
    (void)why;
    cn_node *n = ud;
    dial_remove(n, d);
    cn_peer *peer = d->peer;
    d->peer = NULL;
    if (peer) {
        peer->dial = NULL; /* sends to it now fail (no re-queueing) */
        drop_peer(n, peer);
    }
}

static int dial_connected(cn_dial *d, void *ud)
{
    return conn_for_node(ud, d->node) != NULL;
}

static void on_connection(uv_stream_t *server, int status)
{
    cn_node *n = server->data;
    if (status < 0) {
        cn_log_warn("accept: %s", uv_strerror(status));
        return;
    }
    conns_reserve(n);
    int refuse = n->stopping || n->nconns + n->ndials >= n->cfg.max_connections ||
                 n->nconns == n->cap_conns || n->pt.creation == 0;
    cn_conn *c = cn_conn_accept(server, &n->cfg.conn, n->name, n->pt.creation,
                                &n->cookie, &conn_cbs, n);
    if (!c)
        return;
    if (refuse) {
        cn_log_warn("connection %s refused: %s", c->addr,
                    n->stopping ? "stopping" : "connection limit");
        cn_conn_close(c, NULL);
        return;
    }
    n->conns[n->nconns++] = c;
}

static void on_epmd(cn_epmd *e, int status, uint32_t creation, void *ud)
{
    cn_node *n = ud;
    (void)e;
    if (status == 0) {
        if (creation == 0) { /* epmd gave none: random >= 4 */
            randombytes_buf(&creation, sizeof creation);
            creation |= 4;
        }
        n->pt.creation = creation;
        cn_log_info("registered with epmd as %s, creation %u", n->name, creation);
    } else if (n->ready_cb == NULL) {
        /* lost epmd after registration: keep serving, already logged */
        return;
    }
    cn_node_ready_cb cb = n->ready_cb;
    n->ready_cb = NULL;
    if (cb)
        cb(n, status, n->ready_ud);
}

int cn_node_start(cn_node *n, cn_node_ready_cb cb, void *ud)
{
    struct sockaddr_storage ss;
    int rc;
    if (strchr(n->listen_addr, ':'))
        rc = uv_ip6_addr(n->listen_addr, n->cfg.port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(n->listen_addr, n->cfg.port, (struct sockaddr_in *)&ss);
    if (rc)
        return rc;
    if ((rc = uv_tcp_init(n->loop, &n->listener)))
        return rc;
    n->listener.data = n;
    n->listener_open = 1;
    if ((rc = uv_tcp_bind(&n->listener, (struct sockaddr *)&ss, 0)) ||
        (rc = uv_listen((uv_stream_t *)&n->listener, 128, on_connection)))
        return rc;
    int sl = sizeof ss;
    if ((rc = uv_tcp_getsockname(&n->listener, (struct sockaddr *)&ss, &sl)))
        return rc;
    n->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    n->ready_cb = cb;
    n->ready_ud = ud;
    char alive[256];
    size_t al = (size_t)(strchr(n->name, '@') - n->name);
    memcpy(alive, n->name, al);
    alive[al] = 0;
    rc = cn_epmd_register(&n->epmd, n->loop, alive, n->port, on_epmd, n);
    if (rc)
        n->ready_cb = NULL;
    return rc;
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
    while (n->nconns > 0)
        cn_conn_close_flush(n->conns[n->nconns - 1]); /* on_close removes it */
    while (n->ndials > 0) {
        cn_dial *d = n->dials[n->ndials - 1];
        on_dial_fail(d, "stopping", n);
        cn_dial_abort(d);
    }
    cn_epmd_close(&n->epmd);
    if (n->reaper_open) {
        n->reaper_open = 0;
        uv_close((uv_handle_t *)&n->reaper, NULL);
    }
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
    free(n->dials);
    free((char *)n->cfg.capture_dir);
    free(n->name);
    free(n->listen_addr);
    free(n);
}
