/* node.h - the C node: listener, connections, dispatch of control messages
 * to local processes, and the process API that handlers use.
 *
 * Owns: the listening socket, every cn_conn, every cn_dial (outgoing
 * attempts), the epmd registration, the
 * cn_proc_table (processes, links, monitors, peers) and the cookie (wiped on
 * free). Runs on a uv_loop_t it is given and never owns: the core owns the
 * loop. Single-threaded: every function here is for the loop thread only.
 * Four files, by concept: node.c (the node's life, local processes),
 * node_peers.c (peers, sending, links and monitors), node_dispatch.c
 * (control messages from peers), node_listen.c (listener, epmd,
 * connections and dials coming up or down); node_internal.h is what they
 * share.
 *
 * Local processes
 * ---------------
 * A local process is a cn_proc with a cn_proc_ops table and a state pointer.
 * It has a real pid (<council@host.N.S> with our creation) that BEAM can
 * send to, link to and monitor, and optionally a registered name. What
 * arrives for it:
 *   on_message      every SEND/REG_SEND payload addressed to it (a term,
 *                   valid only during the call).
 *   on_exit_signal  an EXIT over a link, an EXIT2 (Process.exit/2), or
 *                   `noconnection` for each link whose connection dropped.
 *                   NULL = GenServer-like default (cn_node_exit_signal_default):
 *                   'kill' kills (reason killed), 'normal' over a link or
 *                   from another process is ignored, any other reason
 *                   exits the process with that reason; with p->trap_exit
 *                   it becomes the message {'EXIT', From, Reason} instead.
 *   on_down         a monitor it holds (cn_node_monitor) fired, or the
 *                   connection to the watched process dropped (noconnection).
 *   on_terminate    the process ends (reason given); links and monitors have
 *                   already been told. Free the state here.
 *   on_too_large    (may be NULL) a message to it was not delivered: its
 *                   frame was over conn.max_frame or its term over the
 *                   term limits. `head` is the start of the message (at
 *                   most CN_CONN_HEAD bytes, possibly cut in the middle of
 *                   a term: read it with cn_term_len), for answering the
 *                   sender (gen_server.c replies to a call).
 * Handlers may call any function below, including cn_node_exit on their
 * own process: the cn_proc stays allocated until the loop reaps it (next
 * loop iteration). Do not keep a cn_proc pointer past on_terminate: keep
 * its pid (cn_node_self) and look it up again (cn_pt_find_id).
 * cn_node_send to a LOCAL pid calls the target's on_message synchronously.
 *
 * Other nodes (dial.c): cn_node_send, cn_node_send_named, cn_node_link and
 * cn_node_monitor towards a node that is not connected start a connection
 * the way BEAM's auto-connect does (host from the node name, epmd
 * PORT_PLEASE2, initiator handshake, all within hs_timeout_ms) and return 0
 * at once: the frames are queued (bounded by max_outq) and sent in order
 * when the connection is up. If the attempt fails, the queued frames are
 * dropped and every link and monitor made towards that node fires as for a
 * lost connection: linked local processes get a `noconnection` exit signal,
 * monitors on_down with `noconnection` - always later, from the loop, never
 * inside the call. A queue overflow fails the attempt the same way (that
 * send returns -1). One attempt per node at a time; each counts against
 * max_connections. Simultaneous connects follow BEAM: the greater node name
 * keeps its attempt ("nok" to the other), the smaller answers
 * "ok_simultaneous" and the queue goes over the peer's connection.
 * cn_node_send_alias never dials (an alias only means something to a
 * connected caller). Still -1 at once: the node is stopping or not yet
 * registered (no creation), the node-name table is full, the connection
 * limit is reached.
 *
 * Dispatch rules (what BEAM sees):
 *   SEND/REG_SEND to a missing pid/name, or a pid of another creation: dropped.
 *   MONITOR_P on a missing pid/name: MONITOR_P_EXIT noproc, target as sent.
 *   LINK to a missing pid: EXIT noproc back.
 *   UNLINK_ID: link removed, UNLINK_ID_ACK sent at once.
 *   DEMONITOR_P: entry removed.
 *   A process exit with reason R: EXIT R to every link, MONITOR_P_EXIT R to
 *   every watcher, DEMONITOR_P for monitors it held, then removal.
 *   A disconnect: the peer's links fire `noconnection` exit signals into the
 *   linked local processes, its monitors are removed, monitors held on its
 *   processes fire on_down with noconnection.
 */
#ifndef CN_NODE_H
#define CN_NODE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <ei.h>

#include "conn.h"
#include "dist_ctl.h"
#include "handshake.h"
#include "proc_table.h"

typedef struct cn_node cn_node;

typedef struct cn_proc_ops {
    void (*on_message)(cn_node *n, cn_proc *p, cn_slice msg);
    void (*on_exit_signal)(cn_node *n, cn_proc *p, const cn_pid *from,
                           cn_slice reason, int via_link);
    void (*on_down)(cn_node *n, cn_proc *p, cn_slice ref, const cn_pid *who,
                    cn_slice reason);
    void (*on_terminate)(cn_node *n, cn_proc *p, cn_slice reason);
    void (*on_too_large)(cn_node *n, cn_proc *p, cn_slice head);
} cn_proc_ops;

typedef struct cn_node_config {
    const char *name;           /* full node name "alive@host" */
    const char *listen_addr;    /* default "127.0.0.1" */
    int port;                   /* 0 = ephemeral */
    size_t max_connections;     /* authenticated connections and dials
                                   [64]; a node connecting past it is
                                   refused (status not_allowed) */
    size_t max_handshakes;      /* accepted connections still in the
                                   handshake, apart from max_connections
                                   [256]; when full, the one with the least
                                   progress (the stalest of those, see
                                   node_listen.c's hs_before) is closed
                                   for the newcomer; one connection is
                                   accepted per millisecond at most */
    size_t max_handshakes_per_addr; /* the same, per source IP [128] */
    cn_conn_limits conn;        /* frame cap, queue bound, timeouts */
    cn_term_limits terms;       /* for every control tuple and payload */
    size_t max_signals_per_peer; /* links + monitors one peer may hold on
                                    our processes; above: connection closed
                                    [100000] */
    const char *capture_dir;    /* debug: write each received frame body
                                   (after 'p') to DIR/frame-N; NULL = off */
    int start_epmd;             /* no epmd answers: start one, as erl does
                                   (epmd.h, CN_EPMD_START) [0] */
} cn_node_config;

typedef struct cn_node_stats {
    size_t connections, handshakes, processes, links, monitors;
    uint64_t handshakes_evicted;
    int epmd_registered;        /* our name is in epmd now */
    uint64_t epmd_losses;       /* registrations lost since start */
    uint64_t frames_in, frames_dropped, bad_frames;
    uint64_t frames_too_large;  /* messages over the frame or term limits,
                                   refused (calls) or dropped */
} cn_node_stats;

/* Sets the defaults: 127.0.0.1, port 0, 64 connections, 256 pending
 * handshakes (128 per address), 16 MiB frames, 64 MiB output queue, 7 s
 * handshake (2 s for an accepted connection's first packet), 75 s
 * silence, 15 s ticks, 100000 links+monitors per peer. */
void cn_node_config_defaults(cn_node_config *cfg);

/* Creates a node on `loop`. The cookie is MOVED into the node (cookie is
 * zeroed). NULL on ENOMEM or bad config. */
cn_node *cn_node_new(uv_loop_t *loop, const cn_node_config *cfg, cn_cookie *cookie);

/* Ready callback: status 0 when listening and registered with epmd. */
typedef void (*cn_node_ready_cb)(cn_node *n, int status, void *ud);
/* Listens, then registers with epmd. Returns 0 or a negative libuv code
 * (listen failed: nothing to undo but cn_node_free). */
int cn_node_start(cn_node *n, cn_node_ready_cb cb, void *ud);
/* Clean stop: every process exits with `shutdown` (links/monitors told),
 * connections are flushed and closed, the listener and the epmd connection
 * closed. The loop then runs out of the node's handles. Idempotent. */
void cn_node_stop(cn_node *n);
/* Frees the node after the loop has finished closing its handles. */
void cn_node_free(cn_node *n);
/* Runs the node's loop until nothing keeps it alive (as uv_run with
 * UV_RUN_DEFAULT). With busy_poll_us > 0, a loop turn that received a
 * distribution frame is followed by non-blocking turns (epoll with a zero
 * timeout, then sched_yield: a thread with work on this core runs first)
 * until busy_poll_us have passed without another frame; only
 * then does the loop block again. A request arriving meanwhile is seen
 * without the wake-up of a sleeping thread (tens of microseconds on an
 * idle machine, the larger part of a loopback call). Costs CPU only right
 * after traffic: an idle node, and turns woken by timers alone, block at
 * once. busy_poll_us 0: plain uv_run.
 * pace_us > 0 (only with busy_poll_us > 0): once a frame follows the
 * previous one within pace_us (several callers), a poll that finds
 * nothing is followed by pace_us of yielding before the next one, so that
 * one turn reads the frames sent meanwhile and answers them in one write
 * (the callers' node then reads several replies at once); a poll after
 * such a wait that finds nothing returns to polling after every yield.
 * The window still ends busy_poll_us after the last frame. */
void cn_node_run(cn_node *n, uint64_t busy_poll_us, uint64_t pace_us);

uv_loop_t *cn_node_loop(cn_node *n);
const char *cn_node_name(const cn_node *n);
int cn_node_port(const cn_node *n);
uint32_t cn_node_creation(const cn_node *n);
void cn_node_stats_get(const cn_node *n, cn_node_stats *out);
cn_proc_table *cn_node_table(cn_node *n);

/* ------------------------------------------------------ process API */

/* Spawns a local process; `name` (may be NULL) is registered. NULL on
 * ENOMEM or name taken. */
cn_proc *cn_node_spawn(cn_node *n, const cn_proc_ops *ops, void *state,
                       const char *name);
/* Ends process p with `reason` (a term, e.g. cn_atom_normal()). Idempotent. */
void cn_node_exit(cn_node *n, cn_proc *p, cn_slice reason);
/* The pid of a local process. */
void cn_node_self(const cn_node *n, const cn_proc *p, cn_pid *out);
/* Appends a pid term (local or remote) to x. */
int cn_node_encode_pid(const cn_node *n, ei_x_buff *x, const cn_pid *pid);

/* Sends `msg` to a pid: a local process gets it through on_message; a
 * remote one as SEND over the connection to its node, dialing it first if
 * needed (see "Other nodes" above). 0, or -1 when there is no such local
 * process or the node cannot be reached. */
int cn_node_send(cn_node *n, const cn_pid *to, cn_slice msg);
/* Writes every connection's queued frames now (cn_conn_flush). */
void cn_node_flush(cn_node *n);
/* 1 when the connection to a remote pid's node holds more than its
 * max_backlog bytes not yet taken by the kernel, with `more` added (the
 * peer reads slower than we write; see conn.h), else 0: also for a local
 * pid and a node not connected (a dial's queue is bounded apart). */
int cn_node_backlogged(cn_node *n, const cn_pid *to, size_t more);
/* Sends `msg` to a registered name on a node (dialed if needed). */
int cn_node_send_named(cn_node *n, cn_proc *from, const char *node_name,
                       const char *name, cn_slice msg);
/* Sends `msg` through an alias ref (as in a gen_server reply) to the node
 * of `owner`. */
int cn_node_send_alias(cn_node *n, cn_proc *from, const cn_pid *owner,
                       cn_slice alias, cn_slice msg);
/* Links p to a remote pid (sends LINK; dials if needed: a failed dial is a
 * noconnection exit signal to p). 0 or -1 (unreachable/ENOMEM). */
int cn_node_link(cn_node *n, cn_proc *p, const cn_pid *remote);
/* Unlinks (sends UNLINK_ID; the entry goes when BEAM acks). */
int cn_node_unlink(cn_node *n, cn_proc *p, const cn_pid *remote);
/* The largest reference term cn_node_monitor makes: NEWER_REFERENCE_EXT
 * with our node name (up to CN_MAX_NODE_NAME bytes) and 3 words. */
#define CN_NODE_REF_MAX CN_TERM_REF_LEN(CN_MAX_NODE_NAME)

/* Monitors a remote pid (sends MONITOR_P; dials if needed: a failed dial
 * is on_down noconnection). The new ref's term bytes are written to
 * ref_out (up to *ref_len bytes, CN_NODE_REF_MAX always fits; *ref_len
 * updated). on_down reports the same bytes. 0 or -1 (also when the ref
 * does not fit: nothing is then sent or dialed). */
int cn_node_monitor(cn_node *n, cn_proc *p, const cn_pid *remote,
                    unsigned char *ref_out, size_t *ref_len);
int cn_node_demonitor(cn_node *n, cn_proc *p, cn_slice ref);
/* The default exit-signal behaviour described above. */
void cn_node_exit_signal_default(cn_node *n, cn_proc *p, const cn_pid *from,
                                 cn_slice reason, int via_link);


#endif
