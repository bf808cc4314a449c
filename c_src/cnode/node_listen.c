/* node_listen.c - the listener, the epmd registration and the
 * connections of the node (see node.h).
 *
 * Owns: starting the node (listen, then register with epmd), accepting
 * connections (refused while stopping or before the node has a creation),
 * the bound on connections still in the handshake (n->hs: max_handshakes
 * in all, max_handshakes_per_addr per source IP; a newcomer over either
 * closes the pending one with the least progress, the oldest of those, so
 * junk sockets that never send a valid packet cannot keep a real node out;
 * the connection limit applies once a node has named itself, and an
 * authenticated peer is never refused for unauthenticated ones), the
 * handshake decisions (a node connecting
 * while we dial it: BEAM's rule for simultaneous connects), a connection
 * or an outgoing dial coming up (it becomes the peer's) and going away
 * (the peer is dropped).
 */
#include "node_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void hs_remove(cn_node *n, cn_conn *c)
{
    for (size_t i = 0; i < n->nhs; i++)
        if (n->hs[i] == c) {
            memmove(&n->hs[i], &n->hs[i + 1], (n->nhs - i - 1) * sizeof *n->hs);
            n->nhs--;
            return;
        }
}

static int at_conn_limit(const cn_node *n)
{
    return n->nconns + n->ndials >= n->cfg.max_connections;
}

static int on_up(cn_conn *c, void *ud)
{
    cn_node *n = ud;
    hs_remove(n, c);
    if (n->stopping)
        return -1;
    uint32_t id = cn_pt_intern(&n->pt, c->hs.peer_name, strlen(c->hs.peer_name));
    if (id == CN_NODE_NONE || id == 0)
        return -1;
    cn_conn *old = cn_node_conn_of(n, id);
    cn_dial *d = cn_node_dial_of(n, id);
    /* A node that replaces its own connection or completes our dial takes
     * no new slot. */
    if ((!old && !d && at_conn_limit(n)) || cn_node_conns_reserve(n) < 0) {
        cn_log_limited(CN_LOGK_REFUSED, CN_LOG_WARN,
                       "connection %s from %s refused: connection limit (%zu)",
                       c->addr, c->hs.peer_name, n->cfg.max_connections);
        return -1;
    }
    n->conns[n->nconns++] = c;
    /* The same node again: its old connection is dead to it. */
    if (old)
        cn_conn_close(old, "replaced by a new connection from the same node");
    if (d) {
        /* We were dialing it too: this connection carries what we queued
         * (and the links and monitors made meanwhile). */
        cn_node_dial_remove(n, d);
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
    int dialing = 0;
    for (size_t i = 0; i < n->ndials; i++)
        dialing |= strcmp(n->dials[i]->peer_name, c->hs.peer_name) == 0;
    for (size_t i = 0; i < n->nconns; i++) /* a node replacing its connection */
        dialing |= n->conns[i]->up && strcmp(n->conns[i]->hs.peer_name, c->hs.peer_name) == 0;
    if (!dialing && at_conn_limit(n)) {
        cn_log_limited(CN_LOGK_REFUSED, CN_LOG_WARN,
                       "connection %s from %s refused: connection limit (%zu)",
                       c->addr, c->hs.peer_name, n->cfg.max_connections);
        return CN_HS_ST_NOT_ALLOWED;
    }
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

static void on_close(cn_conn *c, int was_up, void *ud)
{
    cn_node *n = ud;
    hs_remove(n, c);
    for (size_t i = 0; i < n->nconns; i++)
        if (n->conns[i] == c) {
            n->conns[i] = n->conns[--n->nconns];
            break;
        }
    if (c->peer) {
        cn_peer *peer = c->peer;
        c->peer = NULL;
        cn_log_info("node %s disconnected", c->hs.peer_name);
        cn_node_drop_peer(n, peer);
    }
    (void)was_up;
}

static const cn_conn_cbs conn_cbs = {.on_up = on_up,
                                     .on_frame = cn_node_on_frame,
                                     .on_oversize = cn_node_on_oversize,
                                     .on_close = on_close,
                                     .on_status = on_status};

/* ---------------------------------------------------------- dialing */

/* Our outgoing connection is up: it becomes an ordinary connection. */
static int on_dial_up(cn_dial *d, cn_conn *c, void *ud)
{
    cn_node *n = ud;
    if (n->stopping || cn_node_conns_reserve(n) < 0)
        return -1; /* the dial fails: noconnection */
    cn_node_dial_remove(n, d);
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
void cn_node_dial_failed(cn_dial *d, const char *why, void *ud)
{
    (void)why;
    cn_node *n = ud;
    cn_node_dial_remove(n, d);
    cn_peer *peer = d->peer;
    d->peer = NULL;
    if (peer) {
        peer->dial = NULL; /* sends to it now fail (no re-queueing) */
        cn_node_drop_peer(n, peer);
    }
}

static int dial_connected(cn_dial *d, void *ud)
{
    return cn_node_conn_of(ud, d->node) != NULL;
}

const cn_dial_cbs cn_node_dial_cbs = {on_dial_up, cn_node_dial_failed, dial_connected};

/* ------------------------------------------------ listener and epmd */

/* Whether pending handshake a should be closed before b: less progress
 * first; then one that has had a turn of the loop to show progress (a
 * connection accepted or answered in this turn has not: in a burst of
 * accepts its packet may be waiting unread); then the one that has kept us
 * waiting longest since its last packet (or its accept). A real node
 * answers within a round trip, so it is never the stalest for long; junk
 * that stops is. */
static int hs_before(const cn_conn *a, const cn_conn *b, uint64_t now)
{
    if (a->hs_packets != b->hs_packets)
        return a->hs_packets < b->hs_packets;
    int a_had = a->hs_at < now, b_had = b->hs_at < now;
    if (a_had != b_had)
        return a_had;
    return a->hs_at < b->hs_at;
}

/* The pending handshake to close for a newcomer: among those of `ip` (all
 * when NULL), the first by hs_before. */
static cn_conn *hs_victim(cn_node *n, const char *ip)
{
    uint64_t now = uv_now(n->loop);
    cn_conn *v = NULL;
    for (size_t i = 0; i < n->nhs; i++) {
        cn_conn *c = n->hs[i];
        if (ip && strcmp(c->ip, ip) != 0)
            continue;
        if (!v || hs_before(c, v, now))
            v = c;
    }
    return v;
}

static void hs_evict(cn_node *n, cn_conn *v, const char *why)
{
    n->hs_evicted++;
    cn_log_limited(CN_LOGK_REFUSED, CN_LOG_WARN, "connection %s closed in the handshake: %s",
                   v->addr, why);
    cn_conn_close(v, NULL); /* on_close takes it out of n->hs */
}

/* One connection accepted per millisecond at most (1,000 a second: far
 * more than nodes ever connect at). Under a flood each accept evicts a
 * pending handshake; libuv would accept every connection waiting in the
 * kernel's queue in one go, and with junk reconnecting at once a pending
 * handshake then lasted a few milliseconds of CPU before enough newcomers
 * pushed it out - less than a loaded real node needs to send its name
 * packet and answer the challenge. Capped, a whole budget of 128 pending
 * handshakes from one address takes 128 ms to turn over, and the
 * connections not yet accepted wait in the kernel's queue (their packets
 * with them: a real node's name is there to read when it is accepted). */
#define ACCEPT_EVERY_MS 1
/* The kernel's queue of connections not yet accepted (capped by
 * net.core.somaxconn): deep enough that a flood does not make the kernel
 * drop a real node's SYN (its connect would wait a 1 s retransmission). */
#define LISTEN_BACKLOG 1024

static void accept_one(cn_node *n)
{
    uv_stream_t *server = (uv_stream_t *)&n->listener;
    int refuse = n->stopping || n->pt.creation == 0;
    if (!refuse && n->nhs == n->cap_hs) {
        size_t cap = n->cap_hs ? n->cap_hs * 2 : 16;
        cn_conn **a = realloc(n->hs, cap * sizeof *a);
        if (a) {
            n->hs = a;
            n->cap_hs = cap;
        } else {
            refuse = 1;
        }
    }
    cn_conn *c = cn_conn_accept(server, &n->cfg.conn, n->name, n->pt.creation,
                                &n->cookie, &conn_cbs, n);
    if (!c)
        return;
    if (refuse) {
        cn_log_limited(CN_LOGK_REFUSED, CN_LOG_WARN, "connection %s refused: %s", c->addr,
                       n->stopping ? "stopping" : n->pt.creation == 0 ? "not registered yet"
                                                                       : "out of memory");
        cn_conn_close(c, NULL);
        return;
    }
    size_t same = 0;
    for (size_t i = 0; i < n->nhs; i++)
        same += strcmp(n->hs[i]->ip, c->ip) == 0;
    if (same >= n->cfg.max_handshakes_per_addr) {
        cn_conn *v = hs_victim(n, c->ip);
        if (v)
            hs_evict(n, v, "too many pending handshakes from that address");
    }
    if (n->nhs >= n->cfg.max_handshakes) {
        cn_conn *v = hs_victim(n, NULL);
        if (v)
            hs_evict(n, v, "too many pending handshakes");
    }
    n->hs[n->nhs++] = c;
    cn_conn_read_now(c); /* may close it: on_close takes it out again */
}

/* A millisecond later: the connection left waiting (libuv watches the
 * listener again once it is accepted). */
static void on_accept_timer(uv_timer_t *t)
{
    cn_node *n = t->data;
    n->accepted_at = uv_now(n->loop);
    if (n->listener_open)
        accept_one(n);
}

static void on_connection(uv_stream_t *server, int status)
{
    cn_node *n = server->data;
    if (status < 0) {
        cn_log_limited(CN_LOGK_REFUSED, CN_LOG_WARN, "accept: %s", uv_strerror(status));
        return;
    }
    uint64_t now = uv_now(n->loop);
    if (n->accepted_any && now - n->accepted_at < ACCEPT_EVERY_MS && n->accept_timer_open) {
        /* not accepted: libuv stops reading the listener until it is */
        uv_timer_start(&n->accept_timer, on_accept_timer, ACCEPT_EVERY_MS, 0);
        return;
    }
    n->accepted_any = 1;
    n->accepted_at = now;
    accept_one(n);
}

static void on_logtick(uv_timer_t *t)
{
    (void)t;
    cn_log_flush();
}

static void on_epmd(cn_epmd *e, int status, uint32_t creation, void *ud);

#define EPMD_BACKOFF_FIRST_MS 100
#define EPMD_BACKOFF_MAX_MS 5000

static int epmd_register(cn_node *n, int flags)
{
    cn_epmd *e = calloc(1, sizeof *e);
    if (!e)
        return UV_ENOMEM;
    int rc = cn_epmd_register(e, n->loop, n->alive, n->port, flags, on_epmd, n);
    if (rc) {
        cn_epmd_close_free(e);
        return rc;
    }
    n->epmd = e;
    return 0;
}

static void epmd_retry_later(cn_node *n);

static void on_epmd_timer(uv_timer_t *t)
{
    cn_node *n = t->data;
    if (n->stopping || n->epmd)
        return;
    n->epmd_attempts++;
    if (epmd_register(n, CN_EPMD_QUIET) != 0)
        epmd_retry_later(n);
}

/* Registration lost (epmd stopped or restarted) or an attempt failed:
 * again after a backoff, 100 ms doubling to 5 s. */
static void epmd_retry_later(cn_node *n)
{
    if (n->stopping)
        return;
    if (!n->epmd_timer_open) {
        if (uv_timer_init(n->loop, &n->epmd_timer) != 0)
            return;
        n->epmd_timer.data = n;
        n->epmd_timer_open = 1;
    }
    uint64_t ms = n->epmd_backoff_ms ? n->epmd_backoff_ms : EPMD_BACKOFF_FIRST_MS;
    n->epmd_backoff_ms = ms * 2 > EPMD_BACKOFF_MAX_MS ? EPMD_BACKOFF_MAX_MS : ms * 2;
    uv_timer_start(&n->epmd_timer, on_epmd_timer, ms, 0);
}

/* The creation is the node's for its whole life, as in BEAM: every pid
 * and handshake carries it, and pids callers hold must stay ours. A
 * re-registration keeps it; the creation the new epmd offers is ignored
 * (docs/otp-compat.md, "epmd"). */
static void on_epmd(cn_epmd *e, int status, uint32_t creation, void *ud)
{
    cn_node *n = ud;
    int first = n->pt.creation == 0;
    if (e == n->epmd && status != 0) {
        cn_epmd_close_free(e);
        n->epmd = NULL;
    }
    if (status == 0) {
        n->epmd_registered = 1;
        if (first) {
            if (creation == 0) { /* epmd gave none: random >= 4 */
                randombytes_buf(&creation, sizeof creation);
                creation |= 4;
            }
            n->pt.creation = creation;
            cn_log_info("registered with epmd as %s, creation %u", n->name, creation);
        } else {
            uint64_t ms = uv_now(n->loop) - n->epmd_lost_at;
            cn_log_warn("registered with epmd again as %s after %llu.%llu s (%u attempts); "
                        "creation %u kept (epmd offered %u)", n->name,
                        (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000 / 100),
                        n->epmd_attempts, n->pt.creation, creation);
            n->epmd_backoff_ms = 0;
            n->epmd_attempts = 0;
            return;
        }
    } else if (!first) {
        if (n->epmd_registered) {
            /* lost after registration: keep serving, register again */
            n->epmd_registered = 0;
            n->epmd_losses++;
            n->epmd_lost_at = uv_now(n->loop);
            cn_log_warn("epmd registration of %s lost; registering again (backoff up to %d s)",
                        n->name, EPMD_BACKOFF_MAX_MS / 1000);
        }
        epmd_retry_later(n);
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
        (rc = uv_listen((uv_stream_t *)&n->listener, LISTEN_BACKLOG, on_connection)))
        return rc;
    int sl = sizeof ss;
    if ((rc = uv_tcp_getsockname(&n->listener, (struct sockaddr *)&ss, &sl)))
        return rc;
    n->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    n->ready_cb = cb;
    n->ready_ud = ud;
    if (!n->accept_timer_open && uv_timer_init(n->loop, &n->accept_timer) == 0) {
        n->accept_timer.data = n;
        n->accept_timer_open = 1;
    }
    if (!n->logtick_open && uv_timer_init(n->loop, &n->logtick) == 0) {
        n->logtick_open = 1;
        uv_timer_start(&n->logtick, on_logtick, 1000, 1000);
        uv_unref((uv_handle_t *)&n->logtick);
    }
    size_t al = (size_t)(strchr(n->name, '@') - n->name);
    if (al >= sizeof n->alive)
        return UV_EINVAL;
    memcpy(n->alive, n->name, al);
    n->alive[al] = 0;
    rc = epmd_register(n, n->cfg.start_epmd ? CN_EPMD_START : 0);
    if (rc)
        n->ready_cb = NULL;
    return rc;
}
