/* node_internal.h - what the files of the node (node.c, node_peers.c,
 * node_dispatch.c, node_listen.c) share: the cn_node record and the few
 * functions one of them offers the others. Not for anything outside the
 * node: node.h is its interface.
 */
#ifndef CN_NODE_INTERNAL_H
#define CN_NODE_INTERNAL_H

#include "dial.h"
#include "epmd.h"
#include "node.h"

struct cn_node {
    uv_loop_t *loop;
    cn_node_config cfg;
    char *name;
    char *listen_addr;
    cn_cookie cookie;
    uv_tcp_t listener;
    int listener_open;
    int port;
    cn_epmd *epmd;             /* the registration (NULL between attempts) */
    char alive[256];           /* the name part registered */
    uv_timer_t epmd_timer;     /* the next registration attempt */
    int epmd_timer_open;
    uint64_t epmd_backoff_ms, epmd_lost_at;
    unsigned epmd_attempts;
    uint64_t epmd_losses;      /* registrations lost (stats) */
    int epmd_registered;
    int stopping;
    cn_node_ready_cb ready_cb;
    void *ready_ud;
    uv_check_t reaper;
    int reaper_open;
    cn_proc *zombies;           /* exited, to be freed (through hnext) */
    cn_proc_table pt;
    cn_conn **conns;
    size_t nconns, cap_conns;  /* authenticated (and dialed, once up) */
    cn_conn **hs;              /* accepted, still in the handshake, oldest first */
    size_t nhs, cap_hs;
    uint64_t hs_evicted;
    uv_timer_t accept_timer;   /* the next accept, ACCEPT_EVERY_MS after one */
    int accept_timer_open;
    uint64_t accepted_at;      /* loop time of the last accept */
    int accepted_any;
    uv_timer_t logtick;        /* cn_log_flush once a second */
    int logtick_open;
    cn_dial **dials;         /* outgoing attempts, one per node at most */
    size_t ndials, cap_dials;
    cn_dial_env dial_env;
    ei_x_buff scratch; /* frames are built here, then copied by the conn */
    uint64_t ref_counter;
    uint64_t frames_in, frames_dropped, bad_frames, frames_too_large;
};

/* node.c: an exit signal reaches a local process (its on_exit_signal, or
 * the default of node.h). */
void cn_node_deliver_exit(cn_node *n, cn_proc *p, const cn_pid *from, cn_slice reason,
                          int via_link);

/* node_peers.c: peers and sending. */
/* The up connection to a node, or NULL. */
cn_conn *cn_node_conn_of(cn_node *n, uint32_t node);
/* The dial in progress towards a node, or NULL. */
cn_dial *cn_node_dial_of(cn_node *n, uint32_t node);
/* Takes a dial out of the table (idempotent). */
void cn_node_dial_remove(cn_node *n, cn_dial *d);
/* Room for one more connection in n->conns: 0 or -1 (ENOMEM). */
int cn_node_conns_reserve(cn_node *n);
/* The node's frame buffer, emptied: build one frame, then send it with one
 * of the two below (built: the encoder's result; < 0 sends nothing, logged). */
ei_x_buff *cn_node_scratch(cn_node *n);
int cn_node_flush_to(cn_node *n, cn_conn *c, int built);
/* To a peer: over its connection, or into the queue of the dial that will
 * connect it. -1 for a peer being dropped. */
int cn_node_peer_send(cn_node *n, cn_peer *peer, int built);
/* A peer is gone (disconnected, or its dial failed): its links fire
 * noconnection exit signals into the linked local processes, its monitors
 * are removed, monitors held on its processes fire on_down with
 * noconnection; then the record is freed. */
void cn_node_drop_peer(cn_node *n, cn_peer *peer);
/* A monitor this node holds fires: the entry goes, then its process's
 * on_down with reason (unless that process has exited). */
void cn_node_mon_fire(cn_node *n, cn_mon *m, cn_slice reason);

/* node_dispatch.c: one frame body (after the length) from a connection
 * that is up; <0 closes the connection. cn_node_on_oversize: the head of
 * a frame over the frame limit (conn.h's on_oversize). */
int cn_node_on_frame(cn_conn *c, const unsigned char *body, size_t len, void *ud);
int cn_node_on_oversize(cn_conn *c, const unsigned char *head, size_t len, size_t frame_len,
                        void *ud);

/* node_listen.c: connections and dials coming up or going away. */
extern const cn_dial_cbs cn_node_dial_cbs;
/* A dial failed (or is given up at stop): what was queued is lost and the
 * peer is dropped. */
void cn_node_dial_failed(cn_dial *d, const char *why, void *ud);

#endif
