/* dial.c - see dial.h. */
#include "dial.h"

#include <stdlib.h>
#include <string.h>

#include "epmd.h"
#include "log.h"

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Stops the attempt in flight: name lookup, epmd query or connection. */
static void stop_attempt(cn_dial *d)
{
    if (d->gai) {
        d->gai->data = NULL; /* the callback only frees the request */
        uv_cancel((uv_req_t *)d->gai);
        d->gai = NULL;
    }
    if (d->epmd) {
        cn_epmd_lookup_cancel(d->epmd);
        d->epmd = NULL;
    }
    if (d->conn) {
        cn_conn *c = d->conn;
        d->conn = NULL;
        memset(&c->cbs, 0, sizeof c->cbs);
        c->ud = NULL;
        cn_conn_close(c, NULL);
    }
}

/* Drops everything the dial holds; the memory goes with the timer. */
static void release(cn_dial *d)
{
    d->state = CN_DIAL_DONE;
    stop_attempt(d);
    while (d->head) {
        cn_dial_frame *f = d->head;
        d->head = f->next;
        free(f);
    }
    d->tail = NULL;
    d->qbytes = d->qframes = 0;
    uv_timer_stop(&d->timer);
    if (!uv_is_closing((uv_handle_t *)&d->timer))
        uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

static void fail(cn_dial *d, const char *why)
{
    if (d->state == CN_DIAL_DONE)
        return;
    cn_log_warn("cannot connect to node %s: %s", d->peer_name, why);
    d->state = CN_DIAL_DONE;
    d->env->cbs.on_fail(d, why, d->env->ud);
    release(d);
}

static void on_deadline(uv_timer_t *t)
{
    cn_dial *d = t->data;
    fail(d, d->fail_why ? d->fail_why
                        : d->state == CN_DIAL_YIELDED
                              ? "simultaneous connect: the peer's connection did not come"
                              : "deadline passed");
}

/* ------------------------------------------------ the outgoing connection */

static int conn_up(cn_conn *c, void *ud)
{
    cn_dial *d = ud;
    if (d->env->cbs.on_up(d, c, d->env->ud) < 0)
        return -1; /* conn.c closes it: conn_closed fails the dial */
    d->conn = NULL; /* the node's now */
    d->state = CN_DIAL_DONE;
    release(d);
    return 0;
}

static void conn_closed(cn_conn *c, int was_up, void *ud)
{
    (void)was_up;
    cn_dial *d = ud;
    d->conn = NULL;
    if (c->hs_error == CN_HS_ENOK) {
        /* The peer dials us too and its name is greater: its connection
         * to us will carry the queue. */
        cn_dial_yield(d);
        return;
    }
    fail(d, c->hs_error ? cn_hs_strerror(c->hs_error) : "connection failed or closed");
}

static int conn_status(cn_conn *c, void *ud)
{
    (void)c;
    cn_dial *d = ud;
    /* "alive": the peer still has a connection from us. Go on (it drops
     * the old one) unless we really have one. */
    if (d->env->cbs.connected && d->env->cbs.connected(d, d->env->ud))
        return CN_HS_ST_FALSE;
    return CN_HS_ST_TRUE;
}

static const cn_conn_cbs dial_conn_cbs = {
    .on_up = conn_up, .on_frame = NULL, .on_close = conn_closed, .on_status = conn_status,
};

/* ------------------------------------------------------------ the steps */

static void on_port(int status, int port, void *ud)
{
    cn_dial *d = ud;
    d->epmd = NULL;
    if (d->state != CN_DIAL_EPMD)
        return;
    if (status < 0) {
        fail(d, status == UV_ENOENT      ? "not registered with epmd"
                : status == UV_ETIMEDOUT ? "epmd did not answer in time"
                : status == UV_EPROTO    ? "bad epmd reply or no common protocol version"
                                         : "epmd not reachable");
        return;
    }
    if (d->addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&d->addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&d->addr)->sin6_port = htons((uint16_t)port);
    const cn_dial_env *e = d->env;
    d->state = CN_DIAL_CONNECTING;
    d->conn = cn_conn_connect(e->loop, (struct sockaddr *)&d->addr, e->lim, e->our_name,
                              e->our_creation, e->cookie, d->peer_name, &dial_conn_cbs, d);
    if (!d->conn)
        fail(d, "connect failed");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cn_dial *d = req->data;
    const struct addrinfo *pick = NULL;
    if (d && status == 0) {
        /* IPv4 first, as BEAM's default inet_tcp_dist; else what there is */
        for (const struct addrinfo *a = res; a && !pick; a = a->ai_next)
            if (a->ai_family == AF_INET)
                pick = a;
        for (const struct addrinfo *a = res; a && !pick; a = a->ai_next)
            if (a->ai_family == AF_INET6)
                pick = a;
        if (pick)
            memcpy(&d->addr, pick->ai_addr, pick->ai_addrlen);
    }
    uv_freeaddrinfo(res);
    free(req);
    if (!d)
        return; /* abandoned */
    d->gai = NULL;
    if (d->state != CN_DIAL_RESOLVING)
        return;
    if (status < 0 || !pick) {
        cn_log_info("resolving host %s: %s", d->host,
                    status < 0 ? uv_strerror(status) : "no address");
        fail(d, "host name not resolved");
        return;
    }
    d->state = CN_DIAL_EPMD;
    d->epmd = cn_epmd_port_please(d->env->loop, (struct sockaddr *)&d->addr, d->alive,
                                  d->env->lim->hs_timeout_ms, on_port, d);
    if (!d->epmd)
        fail(d, "epmd lookup failed to start");
}

/* ------------------------------------------------------------------ API */

cn_dial *cn_dial_start(const cn_dial_env *env, const char *peer_name,
                       uint32_t node, void *peer)
{
    size_t len = strlen(peer_name);
    const char *at = strchr(peer_name, '@');
    if (!at || at == peer_name || !at[1] || len > CN_MAX_NODE_NAME)
        return NULL;
    cn_dial *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->env = env;
    d->node = node;
    d->peer = peer;
    memcpy(d->peer_name, peer_name, len + 1);
    memcpy(d->alive, peer_name, (size_t)(at - peer_name));
    strcpy(d->host, at + 1);
    d->gai = malloc(sizeof *d->gai);
    if (!d->gai) {
        free(d);
        return NULL;
    }
    d->gai->data = d;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    d->state = CN_DIAL_RESOLVING;
    if (uv_getaddrinfo(env->loop, d->gai, on_resolved, d->host, NULL, &hints) != 0) {
        free(d->gai);
        free(d);
        return NULL;
    }
    uv_timer_init(env->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, on_deadline, env->lim->hs_timeout_ms, 0);
    cn_log_info("dialing node %s", peer_name);
    return d;
}

int cn_dial_queue(cn_dial *d, const void *frame, size_t len)
{
    if (d->state == CN_DIAL_DONE || d->fail_why)
        return -1;
    cn_dial_frame *f = NULL;
    if (d->qbytes + len <= d->env->lim->max_outq)
        f = malloc(sizeof *f + len);
    if (!f) {
        /* As an overflowing connection closes: the attempt fails, from the
         * loop (the caller may be in the middle of something). */
        d->fail_why = d->qbytes + len > d->env->lim->max_outq
                          ? "output queue overflow while connecting"
                          : "out of memory";
        uv_timer_start(&d->timer, on_deadline, 0, 0);
        return -1;
    }
    f->next = NULL;
    f->len = len;
    memcpy(f->data, frame, len);
    if (d->tail)
        d->tail->next = f;
    else
        d->head = f;
    d->tail = f;
    d->qbytes += len;
    d->qframes++;
    return 0;
}

int cn_dial_flush(cn_dial *d, cn_conn *c)
{
    int rc = 0;
    while (d->head) {
        cn_dial_frame *f = d->head;
        d->head = f->next;
        if (rc == 0 && cn_conn_send(c, f->data, f->len) < 0)
            rc = -1; /* closed: drop the rest */
        free(f);
    }
    d->tail = NULL;
    d->qbytes = d->qframes = 0;
    return rc;
}

void cn_dial_yield(cn_dial *d)
{
    if (d->state == CN_DIAL_DONE || d->state == CN_DIAL_YIELDED)
        return;
    cn_log_info("simultaneous connect with %s: waiting for its connection",
                d->peer_name);
    d->state = CN_DIAL_YIELDED;
    stop_attempt(d);
    if (!d->fail_why)
        uv_timer_start(&d->timer, on_deadline, d->env->lim->hs_timeout_ms, 0);
}

void cn_dial_abort(cn_dial *d)
{
    if (d->state == CN_DIAL_DONE)
        return;
    release(d);
}
