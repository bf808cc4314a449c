/* conn.c - see conn.h. */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "log.h"
#include "term.h"

#define HS_MAX_PACKET 1024
#define IN_INITIAL 65536
/* A connection still in the handshake needs one packet's room at most:
 * pending handshakes are many and cheap; the buffer grows when it is up. */
#define IN_HANDSHAKE (HS_MAX_PACKET + 2)
/* Bytes queued in one turn above which they are written at once. */
#define FLUSH_CAP (256u * 1024)

typedef struct wreq {
    uv_write_t req;
    cn_conn *c;
    size_t len;
    unsigned char *data; /* owned */
} wreq;

static void on_handle_closed(uv_handle_t *h)
{
    cn_conn *c = h->data;
    if (--c->handles_open == 0) {
        free(c->pend);
        free(c->in);
        cn_hs_clear(&c->hs);
        free(c);
    }
}

#define FLUSH_DEADLINE_MS 3000

static void close_tcp(cn_conn *c)
{
    if (!c->tcp_closed) {
        c->tcp_closed = 1;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    }
}

/* Closes the timer and the flusher (they live and die together). */
static void close_timer(cn_conn *c)
{
    if (!c->timer_closed) {
        c->timer_closed = 1;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->flusher, on_handle_closed);
        uv_close((uv_handle_t *)&c->preflush, on_handle_closed);
    }
}

static void fail_send(cn_conn *c, const char *why);
static void on_written(uv_write_t *req, int status);

/* Writes everything queued since the last flush: one uv_try_write (one
 * write syscall) while libuv's queue is empty, and whatever the kernel did
 * not take goes through a write request. uv_write alone would cost an
 * epoll_ctl per flush on top: a finished request makes libuv re-arm the
 * socket's watcher in the next poll, even with nothing left to write. */
static void flush_pending(cn_conn *c)
{
    if (c->pend_len == 0 || c->tcp_closed)
        return;
    uv_check_stop(&c->flusher);
    uv_prepare_stop(&c->preflush);
    uv_buf_t b = uv_buf_init((char *)c->pend, (unsigned)c->pend_len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        c->outq_bytes -= c->pend_len;
        c->pend_len = 0;
        fail_send(c, uv_strerror(n));
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    c->outq_bytes -= done;
    if (done == c->pend_len) {
        c->pend_len = 0;
        if (c->pend_cap > FLUSH_CAP) { /* keep a small buffer for the next turn */
            free(c->pend);
            c->pend = NULL;
            c->pend_cap = 0;
        }
        return;
    }
    wreq *w = malloc(sizeof *w);
    if (!w) {
        c->outq_bytes -= c->pend_len - done;
        c->pend_len = 0;
        fail_send(c, "out of memory");
        return;
    }
    w->c = c;
    w->len = c->pend_len - done;
    w->data = c->pend;
    c->pend = NULL;
    c->pend_len = c->pend_cap = 0;
    b = uv_buf_init((char *)w->data + done, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        c->outq_bytes -= w->len;
        free(w->data);
        free(w);
        fail_send(c, uv_strerror(rc));
    }
}

/* Frames queued by poll callbacks (replies) leave in the check phase of
 * the same iteration; frames queued by timers and idle work (events) leave
 * in the prepare phase, before the loop blocks in poll. */
static void on_flush(uv_check_t *h)
{
    flush_pending(h->data);
}

static void on_preflush(uv_prepare_t *h)
{
    flush_pending(h->data);
}

static void begin_close(cn_conn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (why)
        cn_log_info("connection %s (%s) closed: %s", c->addr,
                    c->up ? c->hs.peer_name : "handshake", why);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    if (c->cbs.on_close)
        c->cbs.on_close(c, c->up, c->ud);
    /* What was queued still gets its one try (e.g. a refusing status): as
     * before batching, libuv attempts the write at once. */
    flush_pending(c);
    close_timer(c);
    close_tcp(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    cn_conn *c = req->data;
    close_tcp(c);
    close_timer(c);
}

/* A peer that does not read cannot hold a clean stop forever. */
static void on_flush_deadline(uv_timer_t *t)
{
    cn_conn *c = t->data;
    cn_log_warn("connection %s: output not flushed in time, closing", c->addr);
    close_tcp(c);
    close_timer(c);
}

void cn_conn_close(cn_conn *c, const char *why) { begin_close(c, why); }

/* Closing, reads stopped, the owner told (up: whether the link was up);
 * then what is queued goes out and the socket shuts down, closed at the
 * end of that or at the flush deadline. */
static void close_when_flushed(cn_conn *c, int up)
{
    c->closing = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    if (c->cbs.on_close)
        c->cbs.on_close(c, up, c->ud);
    flush_pending(c);
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        close_timer(c);
        close_tcp(c);
        return;
    }
    uv_timer_start(&c->timer, on_flush_deadline, FLUSH_DEADLINE_MS, 0);
}

void cn_conn_close_flush(cn_conn *c)
{
    if (c->closing)
        return;
    cn_log_info("connection %s closing (flush)", c->addr);
    close_when_flushed(c, c->up);
}

static void on_written(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    cn_conn *c = w->c;
    c->outq_bytes -= w->len;
    free(w->data);
    free(w);
    if (status < 0 && status != UV_ECANCELED && !c->closing)
        begin_close(c, uv_strerror(status));
}

static void on_timer(uv_timer_t *t);

/* A failed send on an authenticated connection: stop reading and close from
 * the loop (the timer), never inside the send. The sender may be in the
 * middle of delivering to a process that on_close would make exit. During
 * the handshake nothing above the connection is involved: close now. */
static void fail_send(cn_conn *c, const char *why)
{
    if (!c->up) {
        begin_close(c, why);
        return;
    }
    if (c->close_why)
        return;
    c->close_why = why;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

/* Writes without the closing check: used for the handshake too. */
static int send_raw(cn_conn *c, const void *data, size_t len)
{
    if (c->close_why)
        return -1;
    if (c->outq_bytes + len > c->lim.max_outq) {
        cn_log_warn("connection %s (%s): output queue over %zu bytes, closing",
                    c->addr, c->hs.peer_name, c->lim.max_outq);
        fail_send(c, "output queue overflow");
        return -1;
    }
    /* A turn that queues a lot writes it in pieces of about FLUSH_CAP:
     * the kernel takes little more at once (CN_CONN_NOTSENT_LOWAT), and
     * pend need not grow to the size of the whole turn. */
    if (c->pend_len && c->pend_len + len > FLUSH_CAP) {
        flush_pending(c);
        if (c->close_why || c->tcp_closed)
            return -1;
    }
    if (c->pend_len + len > c->pend_cap) {
        size_t cap = c->pend_cap ? c->pend_cap : 4096;
        while (cap < c->pend_len + len)
            cap *= 2;
        unsigned char *np = realloc(c->pend, cap);
        if (!np) {
            fail_send(c, "out of memory");
            return -1;
        }
        c->pend = np;
        c->pend_cap = cap;
    }
    memcpy(c->pend + c->pend_len, data, len);
    if (c->pend_len == 0) {
        uv_check_start(&c->flusher, on_flush);
        uv_prepare_start(&c->preflush, on_preflush);
    }
    c->pend_len += len;
    c->outq_bytes += len;
    c->last_write = uv_now(c->tcp.loop);
    c->frames_out++;
    return 0;
}

void cn_conn_flush(cn_conn *c)
{
    if (!c->closing)
        flush_pending(c);
}

int cn_conn_backlogged(const cn_conn *c, size_t more)
{
    /* What the kernel refused so far: libuv's write queue. The frames of
     * the current turn (pend) are not counted: they have not been tried. */
    return c->tcp.write_queue_size + more > c->lim.max_backlog;
}

int cn_conn_send(cn_conn *c, const void *frame, size_t len)
{
    if (c->closing || !c->up)
        return -1;
    return send_raw(c, frame, len);
}

static void on_timer(uv_timer_t *t)
{
    cn_conn *c = t->data;
    if (c->closing)
        return;
    if (c->close_why) {
        begin_close(c, c->close_why);
        return;
    }
    if (!c->up) {
        if (c->hs_packets == 0 && !c->outgoing && c->lim.first_packet_ms &&
            c->lim.first_packet_ms < c->lim.hs_timeout_ms) {
            /* the first deadline: nothing complete yet */
            cn_log_limited(CN_LOGK_HANDSHAKE, CN_LOG_WARN,
                           "connection %s: no handshake packet within %llu ms",
                           c->addr, (unsigned long long)c->lim.first_packet_ms);
            begin_close(c, "no handshake packet");
            return;
        }
        cn_log_limited(CN_LOGK_HANDSHAKE, CN_LOG_WARN,
                       "connection %s: handshake deadline passed", c->addr);
        begin_close(c, "handshake timeout");
        return;
    }
    uint64_t now = uv_now(c->tcp.loop);
    if (now - c->last_read > c->lim.silent_ms) {
        cn_log_warn("connection %s (%s): peer silent, closing", c->addr,
                    c->hs.peer_name);
        begin_close(c, "peer silent");
        return;
    }
    if (now - c->last_write >= c->lim.tick_ms) {
        static const unsigned char tick[4] = {0, 0, 0, 0};
        send_raw(c, tick, 4);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    cn_conn *c = h->data;
    if (c->in_len == c->in_cap) {
        /* Only reached when a frame (already known to be under the cap) is
         * incomplete: grow by doubling as data arrives. */
        size_t cap = c->in_cap * 2;
        size_t hard = (c->lim.max_frame > CN_CONN_HEAD ? c->lim.max_frame : CN_CONN_HEAD) + 4;
        if (hard < HS_MAX_PACKET + 2)
            hard = HS_MAX_PACKET + 2;
        if (cap > hard)
            cap = hard;
        if (cap > c->in_cap) {
            unsigned char *n = realloc(c->in, cap);
            if (n) {
                c->in = n;
                c->in_cap = cap;
            }
        }
    }
    buf->base = (char *)c->in + c->in_len;
    buf->len = c->in_cap - c->in_len;
}

/* Sends the status packet a failed handshake left in hs.out, then closes
 * once it is written (or at the flush deadline). */
static void close_after_status(cn_conn *c, const char *why)
{
    if (send_raw(c, c->hs.out, c->hs.out_len) < 0)
        return; /* closed */
    cn_log_info("connection %s (%s) closed: %s", c->addr, c->hs.peer_name, why);
    close_when_flushed(c, 0);
}

/* The kernel keeps little unsent data (see conn.h): without this, a peer
 * that stops reading parks megabytes in an autotuned send buffer where
 * outq_bytes cannot see them. Best effort: where the option is missing the
 * backlog bound counts only what waits here. */
static void limit_unsent(cn_conn *c)
{
#ifdef TCP_NOTSENT_LOWAT
    uv_os_fd_t fd;
    int v = (int)CN_CONN_NOTSENT_LOWAT;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof v);
#else
    (void)c;
#endif
}

static void hs_step(cn_conn *c, const unsigned char *pkt, size_t len)
{
    int rc = cn_hs_packet(&c->hs, pkt, len);
    if (rc == CN_HS_DECIDE) {
        int st = c->cbs.on_status ? c->cbs.on_status(c, c->ud)
                                  : (c->hs.initiator ? CN_HS_ST_TRUE : CN_HS_ST_OK);
        if (c->closing)
            return;
        rc = cn_hs_decide(&c->hs, st);
    }
    if (rc < 0) {
        c->hs_error = rc;
        if (rc == CN_HS_ECOOKIE)
            cn_log_limited(CN_LOGK_HANDSHAKE, CN_LOG_WARN, "connection %s %s %s refused: %s", c->addr,
                        c->outgoing ? "to" : "from", c->hs.peer_name,
                        cn_hs_strerror(rc));
        else if (rc == CN_HS_ENOK)
            cn_log_info("connection %s (%s): %s", c->addr, c->hs.peer_name,
                        cn_hs_strerror(rc));
        else
            cn_log_limited(CN_LOGK_HANDSHAKE, CN_LOG_WARN,
                        "connection %s%s%s refused: %s", c->addr,
                        c->outgoing ? " to " : "", c->outgoing ? c->hs.peer_name : "",
                        cn_hs_strerror(rc));
        if (c->hs.out_len)
            close_after_status(c, cn_hs_strerror(rc));
        else
            begin_close(c, cn_hs_strerror(rc));
        return;
    }
    if (c->hs.out_len && send_raw(c, c->hs.out, c->hs.out_len) < 0)
        return;
    c->hs_packets++;
    c->hs_at = uv_now(c->tcp.loop);
    if (c->hs_packets == 1 && !c->outgoing && !c->up && c->lim.first_packet_ms &&
        c->lim.first_packet_ms < c->lim.hs_timeout_ms)
        /* the rest of the handshake gets the rest of the whole deadline */
        uv_timer_start(&c->timer, on_timer,
                       c->lim.hs_timeout_ms - c->lim.first_packet_ms, 0);
    if (rc == CN_HS_UP) {
        c->up = 1;
        limit_unsent(c);
        if (c->in_cap < IN_INITIAL) {
            unsigned char *nb = realloc(c->in, IN_INITIAL);
            if (nb) {
                c->in = nb;
                c->in_cap = IN_INITIAL;
            }
        }
        if (c->cbs.on_up && c->cbs.on_up(c, c->ud) < 0) {
            begin_close(c, "refused by node");
            return;
        }
        if (c->closing)
            return;
        cn_log_info("connection %s: node %s up%s", c->addr, c->hs.peer_name,
                    c->outgoing ? " (dialed)" : "");
        uint64_t every = c->lim.tick_ms < c->lim.silent_ms / 4 ? c->lim.tick_ms
                                                               : c->lim.silent_ms / 4;
        if (every == 0)
            every = 1000;
        uv_timer_start(&c->timer, on_timer, every, every);
    }
}

/* Consumes every complete packet/frame in the input buffer. */
static void process_input(cn_conn *c)
{
    size_t pos = 0;
    while (!c->closing && !c->close_why) {
        size_t avail = c->in_len - pos;
        const unsigned char *p = c->in + pos;
        if (!c->up) {
            if (avail < 2)
                break;
            size_t n = cn_rd16(p);
            if (n == 0 || n > HS_MAX_PACKET) {
                cn_log_limited(CN_LOGK_HANDSHAKE, CN_LOG_WARN, "connection %s: bad handshake packet length %zu",
                            c->addr, n);
                begin_close(c, "bad handshake packet");
                break;
            }
            if (avail < 2 + n)
                break;
            pos += 2 + n;
            hs_step(c, p + 2, n);
            continue;
        }
        if (c->discard) { /* the rest of a frame over the limit */
            size_t k = avail < c->discard ? avail : c->discard;
            pos += k;
            c->discard -= k;
            if (c->discard)
                break;
            continue;
        }
        if (avail < 4)
            break;
        size_t n = cn_rd32(p);
        if (n > c->lim.max_frame) {
            if (n > CN_CONN_DISCARD_CAP) {
                cn_log_limited(CN_LOGK_FRAME, CN_LOG_WARN,
                               "connection %s (%s): frame of %zu bytes over the "
                               "%u-byte cap, closing", c->addr, c->hs.peer_name, n,
                               (unsigned)CN_CONN_DISCARD_CAP);
                begin_close(c, "frame too large");
                break;
            }
            /* its head (the control message, the start of the message)
             * goes to the node, the rest is read and dropped as it comes */
            size_t head = n < CN_CONN_HEAD ? n : CN_CONN_HEAD;
            if (avail < 4 + head)
                break;
            pos += 4 + head;
            c->discard = n - head;
            c->frames_in++;
            c->frames_discarded++;
            if (c->cbs.on_oversize && c->cbs.on_oversize(c, p + 4, head, n, c->ud) < 0) {
                begin_close(c, "bad frame");
                break;
            }
            continue;
        }
        if (avail < 4 + n)
            break;
        pos += 4 + n;
        c->frames_in++;
        if (n == 0) {
            static const unsigned char tick[4] = {0, 0, 0, 0};
            send_raw(c, tick, 4);
            continue;
        }
        if (c->cbs.on_frame && c->cbs.on_frame(c, p + 4, n, c->ud) < 0) {
            begin_close(c, "bad frame");
            break;
        }
    }
    if (c->closing)
        return;
    if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    /* Give memory back after a big frame. */
    if (c->in_len < IN_INITIAL / 2 && c->in_cap > IN_INITIAL) {
        unsigned char *n = realloc(c->in, IN_INITIAL);
        if (n) {
            c->in = n;
            c->in_cap = IN_INITIAL;
        }
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    cn_conn *c = s->data;
    if (nread < 0) {
        begin_close(c, nread == UV_EOF ? "peer closed" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    c->last_read = uv_now(s->loop);
    c->in_len += (size_t)nread;
    process_input(c);
}

static void set_addr(cn_conn *c, const struct sockaddr *sa)
{
    char ip[48] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
    }
    snprintf(c->addr, sizeof c->addr, "%s:%d", ip, port);
    snprintf(c->ip, sizeof c->ip, "%s", ip);
}

static cn_conn *conn_new(uv_loop_t *loop, const cn_conn_limits *lim,
                         const cn_conn_cbs *cbs, void *ud)
{
    cn_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->in_cap = IN_HANDSHAKE;
    c->in = malloc(c->in_cap);
    if (!c->in || uv_tcp_init(loop, &c->tcp) != 0) {
        free(c->in);
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->handles_open = 1;
    c->lim = *lim;
    c->cbs = *cbs;
    c->ud = ud;
    strcpy(c->addr, "?");
    strcpy(c->ip, "?");
    return c;
}

static void start_timer(cn_conn *c, uv_loop_t *loop)
{
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_check_init(loop, &c->flusher);
    c->flusher.data = c;
    uv_prepare_init(loop, &c->preflush);
    c->preflush.data = c;
    c->handles_open = 4;
    c->last_read = c->last_write = c->hs_at = uv_now(loop);
    uint64_t first = c->lim.hs_timeout_ms;
    if (!c->outgoing && c->lim.first_packet_ms && c->lim.first_packet_ms < first)
        first = c->lim.first_packet_ms;
    uv_timer_start(&c->timer, on_timer, first, 0);
}

void cn_conn_read_now(cn_conn *c)
{
    uv_os_fd_t fd;
    if (c->closing || c->up || c->in_len == c->in_cap ||
        uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    ssize_t r;
    do
        r = recv(fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        begin_close(c, "peer closed");
        return;
    }
    if (r < 0)
        return; /* nothing yet (or an error libuv's read will report) */
    c->last_read = uv_now(c->tcp.loop);
    c->in_len += (size_t)r;
    process_input(c);
}

cn_conn *cn_conn_accept(uv_stream_t *server, const cn_conn_limits *lim,
                        const char *our_name, uint32_t our_creation,
                        const cn_cookie *cookie, const cn_conn_cbs *cbs,
                        void *ud)
{
    cn_conn *c = conn_new(server->loop, lim, cbs, ud);
    if (!c)
        return NULL;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return NULL;
    }
    cn_hs_init(&c->hs, our_name, our_creation, cookie);
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
        set_addr(c, (struct sockaddr *)&ss);
    start_timer(c, server->loop);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        begin_close(c, "read start failed");
        return NULL;
    }
    return c;
}

static void on_connected(uv_connect_t *req, int status)
{
    cn_conn *c = req->data;
    if (c->closing)
        return; /* closed while connecting (ECANCELED) */
    if (status < 0) {
        cn_log_info("connection to %s (%s) failed: %s", c->addr, c->hs.peer_name,
                    uv_strerror(status));
        begin_close(c, NULL);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    /* our 'N', prepared by cn_hs_init_connect */
    if (send_raw(c, c->hs.out, c->hs.out_len) < 0)
        return;
    c->hs.out_len = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        begin_close(c, "read start failed");
}

cn_conn *cn_conn_connect(uv_loop_t *loop, const struct sockaddr *addr,
                         const cn_conn_limits *lim, const char *our_name,
                         uint32_t our_creation, const cn_cookie *cookie,
                         const char *peer_name, const cn_conn_cbs *cbs, void *ud)
{
    cn_conn *c = conn_new(loop, lim, cbs, ud);
    if (!c)
        return NULL;
    c->outgoing = 1;
    set_addr(c, addr);
    if (cn_hs_init_connect(&c->hs, our_name, our_creation, cookie, peer_name) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return NULL;
    }
    c->connect_req.data = c;
    if (uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connected) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return NULL;
    }
    start_timer(c, loop);
    return c;
}
