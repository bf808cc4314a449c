/* conn.h - one distribution connection on the libuv loop.
 *
 * Owns: the uv_tcp_t, the input buffer, the handshake state (cn_hs) during
 * authentication (accept side for cn_conn_accept, initiator side for
 * cn_conn_connect, which also owns the TCP connect request), the output queue and one timer (handshake deadline, then
 * tick/silence checks). Knows nothing of processes: after the handshake it
 * hands each non-tick frame body to on_frame and nothing else.
 *
 * Framing: 2-byte length packets during the handshake (max 1024 bytes),
 * then 4-byte length frames. A frame longer than limits.max_frame is not
 * kept: its first CN_CONN_HEAD bytes (enough for the control message and
 * the head of the message: who sent it, the call's reply tag) go to
 * on_oversize, the rest is read and dropped as it arrives, and the
 * connection stays up. Only a frame over CN_CONN_DISCARD_CAP (1 GiB: no
 * request is that big; reading it would only keep the socket busy) closes
 * the connection. The input buffer grows only as bytes actually arrive,
 * never to the claimed size. A zero-length frame is a tick and is answered
 * with a tick. A peer silent for silent_ms is dropped.
 * We also send a tick if we wrote nothing for tick_ms.
 *
 * Output: cn_conn_send queues one whole frame (copied) with uv_write; the
 * bytes not yet written are bounded by max_outq: overflow logs and closes.
 * Once up, the socket keeps at most CN_CONN_NOTSENT_LOWAT bytes not yet
 * sent in the kernel (TCP_NOTSENT_LOWAT, Linux): the rest of a backlog
 * waits in libuv's write queue, where it is seen, instead of in a send
 * buffer that autotunes to megabytes (a peer that stops reading is then
 * visible to cn_conn_backlogged, which the node uses to cut off its
 * subscribers).
 * A failed send (overflow, out of memory, write error) never calls back
 * into the node inside cn_conn_send: reading stops, later sends fail, and
 * the connection closes from the loop (its timer), so a sender in the
 * middle of a delivery never sees processes exit under it.
 *
 * Lifetime: on_close runs exactly once, synchronously, when the connection
 * starts closing (read error, peer EOF, frame limit, timer, cn_conn_close);
 * after that sends are dropped. The memory goes away later, in uv_close's callback, so a
 * cn_conn pointer stays valid until the current callback returns.
 */
#ifndef CN_CONN_H
#define CN_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "handshake.h"

/* Unsent bytes the kernel may hold for an authenticated connection. */
#define CN_CONN_NOTSENT_LOWAT (128u * 1024)

typedef struct cn_conn cn_conn;

/* Bytes of an oversized frame handed to on_oversize (or the whole frame,
 * when it is shorter). */
#define CN_CONN_HEAD 8192
/* A frame longer than this closes the connection instead of being read
 * and dropped. */
#define CN_CONN_DISCARD_CAP (1u << 30)

typedef struct cn_conn_limits {
    size_t max_frame;       /* bytes of one frame body */
    size_t max_outq;        /* bytes queued for writing */
    size_t max_backlog;     /* cn_conn_backlogged's bound (< max_outq) */
    uint64_t hs_timeout_ms; /* whole handshake */
    uint64_t first_packet_ms; /* accept side: the peer's first handshake
                                 packet must be complete this soon (0: only
                                 hs_timeout_ms) */
    uint64_t silent_ms;     /* drop a peer silent this long */
    uint64_t tick_ms;       /* send a tick after this long without writing */
} cn_conn_limits;

typedef struct cn_conn_cbs {
    /* Authenticated; hs->peer_name etc. are valid. Return <0 to refuse. */
    int (*on_up)(cn_conn *c, void *ud);
    /* One frame body (len > 0). Return <0 to close the connection. */
    int (*on_frame)(cn_conn *c, const unsigned char *body, size_t len, void *ud);
    /* A frame of frame_len bytes over limits.max_frame, of which only the
     * first head_len (min(frame_len, CN_CONN_HEAD)) are given; the rest is
     * dropped as it arrives. Return <0 to close the connection. May be
     * NULL (the frame is dropped). */
    int (*on_oversize)(cn_conn *c, const unsigned char *head, size_t head_len,
                       size_t frame_len, void *ud);
    /* Closing (once). `was_up`: the handshake had completed. c->hs_error
     * says why a handshake failed (a CN_HS_E*, 0 for I/O or timeout). */
    void (*on_close)(cn_conn *c, int was_up, void *ud);
    /* The handshake asks for a decision (cn_hs_decide): accept side, the
     * status for hs.peer_name; initiator, the answer to "alive". Returns a
     * CN_HS_ST_*. NULL: "ok" / "true". */
    int (*on_status)(cn_conn *c, void *ud);
} cn_conn_cbs;

struct cn_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    int up, closing, handles_open, tcp_closed, timer_closed;
    int outgoing;      /* we dialed (cn_conn_connect) */
    int hs_error;      /* the CN_HS_E* that ended the handshake, or 0 */
    const char *close_why; /* a send failed: closes from the loop (timer) */
    uv_connect_t connect_req;
    cn_hs hs;
    unsigned char *in;
    size_t in_len, in_cap;
    size_t outq_bytes;     /* pending + handed to libuv, not yet written */
    uv_check_t flusher;    /* writes `pend` after the poll phase ... */
    uv_prepare_t preflush; /* ... and before it, so nothing waits on poll */
    unsigned char *pend;   /* frames queued since the last flush */
    size_t pend_len, pend_cap;
    uint64_t last_read, last_write;
    cn_conn_limits lim;
    cn_conn_cbs cbs;
    void *ud;          /* callbacks' data */
    void *peer;        /* the node's per-peer data (cn_peer *) */
    char addr[64];     /* remote address for logs */
    char ip[48];       /* remote IP alone (the node's per-address bound) */
    unsigned hs_packets; /* handshake packets accepted so far (progress) */
    uint64_t hs_at;      /* loop time (ms) of the last of them, or of the
                            accept: how long the peer has kept us waiting */
    size_t discard;    /* bytes of an oversized frame still to drop */
    uint64_t frames_in, frames_out, frames_discarded;
};

/* Accepts a pending connection on `server` and starts the handshake.
 * Returns the connection or NULL (logged; the pending socket is dropped). */
cn_conn *cn_conn_accept(uv_stream_t *server, const cn_conn_limits *lim,
                        const char *our_name, uint32_t our_creation,
                        const cn_cookie *cookie, const cn_conn_cbs *cbs,
                        void *ud);
/* Dials `addr` (port set) and runs the initiator handshake towards
 * `peer_name` within lim->hs_timeout_ms. Returns the connection, or NULL
 * when the connect cannot even start (no callback then). Later failures
 * (refused, timeout, handshake) go through on_close with was_up = 0. */
cn_conn *cn_conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
                         const cn_conn_limits *lim, const char *our_name,
                         uint32_t our_creation, const cn_cookie *cookie,
                         const char *peer_name, const cn_conn_cbs *cbs, void *ud);
/* Accept side: reads at once what the peer has already sent (a BEAM node
 * sends its name packet right after connecting), without waiting for the
 * next poll, so that a real peer shows progress (hs_packets) before more
 * connections are accepted. May close c (on_close runs). */
void cn_conn_read_now(cn_conn *c);
/* Queues one whole frame (copied). Frames queued during one loop iteration
 * go out together in one write at the end of it (a reply, an event fanned
 * out to many pids of one node: one syscall), or in writes of about 256 KiB
 * when the turn queues more. 0, or -1 if closing or the
 * queue overflowed (the connection then closes from the loop, not in here). */
int cn_conn_send(cn_conn *c, const void *frame, size_t len);
/* Writes what is queued now instead of at the end of the turn: for a
 * sender that queues from the loop's prepare phase, after the connection's
 * own prepare handle may have run (it would then wait for the poll). */
void cn_conn_flush(cn_conn *c);
/* 1 when the bytes the kernel has refused so far (written in an earlier
 * flush, still waiting here), plus `more`, exceed lim.max_backlog: the
 * peer reads slower than we write. Frames queued in the current loop turn
 * do not count (not tried yet). Else 0. */
int cn_conn_backlogged(const cn_conn *c, size_t more);
/* Closes now; queued output is dropped. `why` goes to the log. */
void cn_conn_close(cn_conn *c, const char *why);
/* Stops reading, flushes queued output, then closes (for a clean stop);
 * a peer that does not read gets 3 s before the socket is closed anyway. */
void cn_conn_close_flush(cn_conn *c);

#endif
