/* node_peers.c - peers and what goes to them (see node.h, "Other nodes").
 *
 * Owns: the lookup of a peer by node (its connection, or the dial that
 * will connect it), starting a dial for a node we are not connected to
 * (BEAM's auto-connect), the node's one frame buffer, and every frame a
 * local process sends: messages (to a pid, a registered name, an alias),
 * links, unlinks, monitors and demonitors; and what a lost peer means for
 * the links and monitors made over it (noconnection).
 */
#include "node_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

cn_conn *cn_node_conn_of(cn_node *n, uint32_t node)
{
    for (size_t i = 0; i < n->nconns; i++) {
        cn_conn *c = n->conns[i];
        if (c->up && !c->closing && c->peer && ((cn_peer *)c->peer)->node == node)
            return c;
    }
    return NULL;
}

cn_dial *cn_node_dial_of(cn_node *n, uint32_t node)
{
    for (size_t i = 0; i < n->ndials; i++)
        if (n->dials[i]->node == node)
            return n->dials[i];
    return NULL;
}

/* Takes a dial out of the table (idempotent). */
void cn_node_dial_remove(cn_node *n, cn_dial *d)
{
    for (size_t i = 0; i < n->ndials; i++)
        if (n->dials[i] == d) {
            n->dials[i] = n->dials[--n->ndials];
            return;
        }
}

int cn_node_conns_reserve(cn_node *n)
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

ei_x_buff *cn_node_scratch(cn_node *n)
{
    n->scratch.index = 0;
    return &n->scratch;
}

int cn_node_flush_to(cn_node *n, cn_conn *c, int built)
{
    if (built < 0) {
        cn_log_error("could not encode a frame for %s", c->hs.peer_name);
        return -1;
    }
    return cn_conn_send(c, n->scratch.buff, (size_t)n->scratch.index);
}

/* Sends the frame in scratch to a peer: over its connection, or into the
 * queue of the dial that will connect it. -1 for a peer being dropped. */
int cn_node_peer_send(cn_node *n, cn_peer *peer, int built)
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

/* The peer record for a remote node id: its connection's, or the pending
 * dial's; with `dial`, a node not connected is dialed (BEAM's auto-connect).
 * NULL: not reachable (stopping, no creation yet, connection limit, bad
 * name, ENOMEM). */
static cn_peer *peer_for(cn_node *n, uint32_t node, int dial)
{
    if (node == 0 || node == CN_NODE_NONE)
        return NULL;
    cn_conn *c = cn_node_conn_of(n, node);
    if (c)
        return c->peer;
    cn_dial *d = cn_node_dial_of(n, node);
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

/* ----------------------------------------------------------- sending */

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
    return cn_node_peer_send(n, peer, cn_frame_send(cn_node_scratch(n), &w, msg));
}

void cn_node_flush(cn_node *n)
{
    for (size_t i = 0; i < n->nconns; i++)
        cn_conn_flush(n->conns[i]);
}

int cn_node_backlogged(cn_node *n, const cn_pid *to, size_t more)
{
    if (to->node == 0)
        return 0;
    cn_conn *c = cn_node_conn_of(n, to->node);
    return c ? cn_conn_backlogged(c, more) : 0;
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
    return cn_node_peer_send(n, peer, cn_frame_reg_send(cn_node_scratch(n), &me, name, msg));
}

int cn_node_send_alias(cn_node *n, cn_proc *from, const cn_pid *owner,
                       cn_slice alias, cn_slice msg)
{
    /* An alias belongs to a connected caller: never worth a dial. */
    cn_conn *c = cn_node_conn_of(n, owner->node);
    if (!c)
        return -1;
    cn_wpid me;
    cn_pt_proc_wpid(&n->pt, from, &me);
    return cn_node_flush_to(n, c, cn_frame_alias_send(cn_node_scratch(n), &me, alias, msg));
}

/* ----------------------------------------------- links and monitors */

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
    return cn_node_peer_send(n, peer, cn_frame_link(cn_node_scratch(n), &me, &them));
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
    return cn_node_peer_send(n, l->peer, cn_frame_unlink_id(cn_node_scratch(n), id, &me, &them));
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
    ei_x_buff *x = cn_node_scratch(n);
    if (cn_node_encode_pid(n, x, remote))
        return -1;
    cn_slice target = cn_x_slice(x);
    cn_mon *m = cn_pt_mon_add(&n->pt, CN_MON_WATCHING_REMOTE, p, peer, remote, ref, target);
    if (!m)
        return -1;
    cn_wpid me;
    cn_pt_proc_wpid(&n->pt, p, &me);
    int rc = cn_node_peer_send(n, peer, cn_frame_monitor_p(cn_node_scratch(n), &me,
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
            int rc = cn_node_peer_send(n, m->peer, cn_frame_demonitor_p(cn_node_scratch(n), &me,
                                   (cn_slice){m->target, m->target_len},
                                   (cn_slice){m->ref, m->ref_len}));
            cn_pt_mon_del(&n->pt, m);
            return rc;
        }
    }
    return -1;
}

void cn_node_mon_fire(cn_node *n, cn_mon *m, cn_slice reason)
{
    cn_proc *owner = m->proc;
    cn_pid who = m->remote;
    unsigned char ref[CN_NODE_REF_MAX]; /* the entry goes before the call */
    size_t rl = m->ref_len < sizeof ref ? m->ref_len : sizeof ref;
    memcpy(ref, m->ref, rl);
    cn_pt_mon_del(&n->pt, m);
    if (!owner->dead && owner->ops->on_down)
        owner->ops->on_down(n, owner, (cn_slice){ref, rl}, &who, reason);
}

void cn_node_drop_peer(cn_node *n, cn_peer *peer)
{
    while (!cn_dl_empty(&peer->mons)) {
        cn_mon *m = cn_dl_entry(peer->mons.next, cn_mon, by_peer);
        if (m->kind == CN_MON_WATCHING_REMOTE)
            cn_node_mon_fire(n, m, cn_atom_noconnection());
        else
            cn_pt_mon_del(&n->pt, m);
    }
    while (!cn_dl_empty(&peer->links)) {
        cn_link *l = cn_dl_entry(peer->links.next, cn_link, by_peer);
        cn_proc *p = l->proc;
        cn_pid who = l->remote;
        int pending = l->unlink_id != 0;
        cn_pt_link_del(&n->pt, l);
        if (!pending)
            cn_node_deliver_exit(n, p, &who, cn_atom_noconnection(), 1);
    }
    cn_pt_peer_free(peer);
}
