/* node_dispatch.c - control messages from peers (see node.h, "Dispatch
 * rules").
 *
 * Owns: the reading of each frame a connection hands over (its type, the
 * debug capture, cn_ctl_parse) and what each control message does to the
 * local processes, links and monitors, with the answers BEAM expects
 * (EXIT noproc for a LINK to no one, MONITOR_P_EXIT noproc, UNLINK_ID_ACK)
 * and the bound on what one peer may hold (max_signals_per_peer).
 */
#include "node_internal.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

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

/* The two pids of a signal between a remote process (from) and a local one
 * (to): from as ours (-1 when the node-name table is full) and the local
 * process (*to NULL when there is none); the wire forms are filled
 * either way. */
static int pids_of(cn_node *n, const cn_ctl *m, cn_wpid *from_w, cn_wpid *to_w, cn_pid *from,
                   cn_proc **to)
{
    cn_term_pid(m->from, from_w);
    cn_term_pid(m->to, to_w);
    *to = cn_pt_find_wire(&n->pt, to_w);
    return cn_pt_pid_from_wire(&n->pt, from_w, from);
}

static int dispatch(cn_node *n, cn_conn *c, const cn_ctl *m)
{
    cn_peer *peer = c->peer;
    cn_wpid from_w, to_w;
    cn_pid from;
    cn_proc *p;
    cn_link *l;
    int bad_from;

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
        if (pids_of(n, m, &from_w, &to_w, &from, &p))
            return 0;
        if (from.node != peer->node)
            return -1; /* BEAM itself treats this as an invalid message */
        if (peer_full(n, c, peer))
            return -1;
        if (!p) {
            cn_node_flush_to(n, c, cn_frame_exit(cn_node_scratch(n), &to_w, &from_w, cn_atom_noproc()));
            return 0;
        }
        if (!(l = cn_pt_link_add(&n->pt, p, peer, &from)))
            cn_log_error("out of memory adding a link");
        else
            l->unlink_id = 0; /* linked again: a pending unlink is moot */
        return 0;

    case CN_DOP_UNLINK:
    case CN_DOP_UNLINK_ID:
    case CN_DOP_UNLINK_ID_ACK:
        bad_from = pids_of(n, m, &from_w, &to_w, &from, &p);
        if (m->op == CN_DOP_UNLINK_ID)
            cn_node_flush_to(n, c, cn_frame_unlink_id_ack(cn_node_scratch(n), m->id, &to_w, &from_w));
        /* an ack removes only the link whose unlink it answers */
        if (!bad_from && p && (l = cn_pt_link_find(p, &from)) &&
            (m->op != CN_DOP_UNLINK_ID_ACK || l->unlink_id == m->id))
            cn_pt_link_del(&n->pt, l);
        return 0;

    case CN_DOP_EXIT:
    case CN_DOP_EXIT2:
        if (pids_of(n, m, &from_w, &to_w, &from, &p) || !p)
            return 0;
        if (m->op == CN_DOP_EXIT) {
            if (!(l = cn_pt_link_find(p, &from)))
                return 0; /* no link: the signal means nothing */
            int pending = l->unlink_id != 0;
            cn_pt_link_del(&n->pt, l);
            if (pending)
                return 0;
        }
        cn_node_deliver_exit(n, p, &from, m->reason, m->op == CN_DOP_EXIT);
        return 0;

    case CN_DOP_MONITOR_P:
        cn_term_pid(m->from, &from_w);
        if (cn_pt_pid_from_wire(&n->pt, &from_w, &from))
            return 0;
        p = resolve(n, &m->to);
        if (!p) {
            cn_node_flush_to(n, c, cn_frame_monitor_p_exit(cn_node_scratch(n), m->to, &from_w,
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
        if (mon)
            cn_node_mon_fire(n, mon, m->reason);
        return 0;
    }

    default: /* ALIAS_SEND (we have no aliases), GROUP_LEADER */
        n->frames_dropped++;
        return 0;
    }
}

/* A message that cannot be delivered whole (a frame over the limit, a
 * term over the term limits): its target may answer the sender from the
 * start of it (gen_server.c: a call gets {error, request_too_large}); the
 * connection stays up. head: the frame's start, from after the 'p'. */
static void too_large(cn_node *n, cn_conn *c, const unsigned char *head, size_t len,
                      size_t frame_len)
{
    n->frames_too_large++;
    cn_ctl m;
    cn_proc *p = NULL;
    if (cn_ctl_parse_head(head, len, &n->cfg.terms, &m) == 0 &&
        (m.op == CN_DOP_SEND || m.op == CN_DOP_REG_SEND))
        p = resolve(n, &m.to);
    cn_log_limited(CN_LOGK_FRAME, CN_LOG_WARN,
                   "connection %s (%s): a message of %zu bytes over the limits %s",
                   c->addr, c->hs.peer_name, frame_len,
                   p && p->ops->on_too_large ? "refused" : "dropped");
    if (p && p->ops->on_too_large)
        p->ops->on_too_large(n, p, m.payload);
}

/* Counts a frame; 0 for a pass-through frame ('p'), else -1 (logged: the
 * connection closes). */
static int frame_in(cn_node *n, cn_conn *c, unsigned char type)
{
    n->frames_in++;
    if (type == 'p')
        return 0;
    n->bad_frames++;
    cn_log_warn("connection %s (%s): frame type %u not supported, closing", c->addr,
                c->hs.peer_name, type);
    return -1;
}

int cn_node_on_oversize(cn_conn *c, const unsigned char *head, size_t len, size_t frame_len,
                        void *ud)
{
    cn_node *n = ud;
    if (frame_in(n, c, head[0]))
        return -1;
    too_large(n, c, head + 1, len - 1, frame_len);
    return 0;
}

int cn_node_on_frame(cn_conn *c, const unsigned char *body, size_t len, void *ud)
{
    cn_node *n = ud;
    if (frame_in(n, c, body[0]))
        return -1;
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
    if ((rc == CN_TERM_EDEPTH || rc == CN_TERM_ECOUNT || rc == CN_TERM_ESIZE) &&
        cn_ctl_parse_head(body + 1, len - 1, &n->cfg.terms, &m) == 0) {
        /* a well-formed message, only too big to take */
        too_large(n, c, body + 1, len - 1, len);
        return 0;
    }
    if (rc) {
        n->bad_frames++;
        cn_log_warn("connection %s (%s): bad control message (%d), closing",
                    c->addr, c->hs.peer_name, rc);
        return -1;
    }
    return dispatch(n, c, &m);
}
