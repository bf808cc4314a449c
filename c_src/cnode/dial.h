/* dial.h - outgoing connections: how the node reaches a node it is not
 * connected to, the way BEAM's auto-connect does.
 *
 * Owns: one cn_dial per node being dialed, with everything the attempt
 * needs on the loop - the host lookup (uv_getaddrinfo on the part of the
 * node name after '@'), the epmd PORT_PLEASE2 lookup (epmd.c), the
 * outgoing cn_conn until its handshake completes (conn.c, initiator side
 * of handshake.c), one deadline timer for the whole attempt - and the
 * queue of frames the node wants sent once the connection is up (copied,
 * in order, bounded by the connection's output-queue byte limit).
 *
 * Does not own: processes, links, monitors or peers (node.c). The node
 * keeps its per-peer record in `peer` and decides what a failure means
 * (node.h: noconnection for links and monitors).
 *
 * Outcome: exactly one of on_up / on_fail runs, unless the node calls
 * cn_dial_abort first (then neither). After the callback returns, the dial
 * releases itself: the node must forget the pointer.
 *   on_up(d, c)  our outgoing connection is authenticated; the node takes
 *                over `c` (its callbacks, its peer) and sends the queue
 *                with cn_dial_flush before returning.
 *   on_fail(d)   resolve, epmd, connect, handshake or deadline failed, or
 *                the queue overflowed; the queued frames are dropped.
 * Simultaneous connect: a "nok" from the peer (it wins, node.h) or
 * cn_dial_yield (we answered "ok_simultaneous" to its connection) ends our
 * own attempt but keeps the dial, its queue and a fresh deadline: the
 * node then completes it with the peer's incoming connection (cn_dial_flush
 * onto that connection, then cn_dial_abort), or the deadline fails it.
 *
 * Single-threaded: loop thread only.
 */
#ifndef CN_DIAL_H
#define CN_DIAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conn.h"
#include "handshake.h"

typedef struct cn_dial cn_dial;

typedef struct cn_dial_cbs {
    int (*on_up)(cn_dial *d, cn_conn *c, void *ud); /* <0: refuse (fails) */
    void (*on_fail)(cn_dial *d, const char *why, void *ud);
    /* "alive" from the peer: is there a connection to it already? */
    int (*connected)(cn_dial *d, void *ud);
} cn_dial_cbs;

/* What every dial of a node shares (borrowed; lives as long as the node). */
typedef struct cn_dial_env {
    uv_loop_t *loop;
    const char *our_name;
    uint32_t our_creation;
    const cn_cookie *cookie;
    const cn_conn_limits *lim; /* hs_timeout_ms is the whole attempt's deadline;
                                  max_outq bounds the queue */
    cn_dial_cbs cbs;
    void *ud;
} cn_dial_env;

typedef struct cn_dial_frame {
    struct cn_dial_frame *next;
    size_t len;
    unsigned char data[];
} cn_dial_frame;

enum { CN_DIAL_RESOLVING, CN_DIAL_EPMD, CN_DIAL_CONNECTING, CN_DIAL_YIELDED,
       CN_DIAL_DONE };

struct cn_dial {
    const cn_dial_env *env;
    int state;
    uint32_t node;   /* the node's interned id of peer_name */
    void *peer;      /* the node's per-peer record (cn_peer *) */
    char peer_name[CN_MAX_NODE_NAME + 1];
    char alive[CN_MAX_NODE_NAME + 1]; /* before '@': the epmd name */
    char host[CN_MAX_NODE_NAME + 1];  /* after '@': resolved */
    const char *fail_why;             /* a deferred failure (overflow) */
    struct sockaddr_storage addr;
    uv_getaddrinfo_t *gai;         /* pending lookup (frees itself) */
    struct cn_epmd_lookup *epmd;   /* pending PORT_PLEASE2 */
    cn_conn *conn;                 /* our outgoing connection, until up */
    uv_timer_t timer;
    cn_dial_frame *head, *tail;
    size_t qbytes, qframes;
};

/* Starts dialing `peer_name` ("alive@host"). NULL on a bad name or ENOMEM
 * (nothing started). The first step runs from the loop, never inside this
 * call, so no callback runs before it returns. */
cn_dial *cn_dial_start(const cn_dial_env *env, const char *peer_name,
                       uint32_t node, void *peer);
/* Queues one frame (copied) for sending once up. 0, or -1 when the queue
 * would pass max_outq or memory ran out: the dial then fails (on_fail runs
 * from the loop, not inside this call), as an overflowing connection
 * closes. */
int cn_dial_queue(cn_dial *d, const void *frame, size_t len);
/* Sends the queued frames in order over an authenticated connection and
 * empties the queue. 0, or -1 if a send failed (the connection closed). */
int cn_dial_flush(cn_dial *d, cn_conn *c);
/* Ends our own attempt (simultaneous connect lost), keeps the queue and
 * waits for the peer's connection until a fresh deadline. */
void cn_dial_yield(cn_dial *d);
/* Cancels: no callback, queued frames dropped, resources released from the
 * loop. */
void cn_dial_abort(cn_dial *d);

#endif
