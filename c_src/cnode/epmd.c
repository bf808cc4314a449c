/* epmd.c - see epmd.h. */
#include "epmd.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

#define ALIVE2_REQ 120
#define ALIVE2_X_RESP 118
#define ALIVE2_RESP 121

int cn_epmd_port(void)
{
    const char *s = getenv("ERL_EPMD_PORT");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == 0 && v > 0 && v < 65536)
            return (int)v;
    }
    return 4369;
}

static void finish(cn_epmd *e, int status)
{
    if (e->done)
        return;
    e->done = 1;
    e->cb(e, status, e->creation, e->ud);
}

static void on_closed(uv_handle_t *h)
{
    cn_epmd *e = h->data;
    e->open = 0;
}

void cn_epmd_close(cn_epmd *e)
{
    if (e->open && !e->closing) {
        e->closing = 1;
        uv_close((uv_handle_t *)&e->tcp, on_closed);
    }
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    cn_epmd *e = h->data;
    static char sink[64];
    if (e->done) {
        *b = uv_buf_init(sink, sizeof sink);
        return;
    }
    *b = uv_buf_init((char *)e->resp + e->resp_len,
                     (unsigned)(sizeof e->resp - e->resp_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    cn_epmd *e = s->data;
    if (n < 0) {
        if (e->done)
            cn_log_error("epmd closed our registration connection (%s)",
                         uv_strerror((int)n));
        else
            cn_log_error("epmd: %s before reply", uv_strerror((int)n));
        cn_epmd_close(e);
        finish(e, (int)n);
        return;
    }
    if (e->done)
        return;
    e->resp_len += (size_t)n;
    if (e->resp_len < 2)
        return;
    if (e->resp[0] == ALIVE2_X_RESP && e->resp_len >= 6) {
        e->creation = (uint32_t)e->resp[2] << 24 | (uint32_t)e->resp[3] << 16 |
                      (uint32_t)e->resp[4] << 8 | e->resp[5];
    } else if (e->resp[0] == ALIVE2_RESP && e->resp_len >= 4) {
        e->creation = (uint32_t)e->resp[2] << 8 | e->resp[3];
    } else if (e->resp[0] != ALIVE2_X_RESP && e->resp[0] != ALIVE2_RESP) {
        cn_log_error("epmd: unexpected reply tag %u", e->resp[0]);
        cn_epmd_close(e);
        finish(e, UV_EPROTO);
        return;
    } else {
        return; /* wait for the rest */
    }
    if (e->resp[1] != 0) {
        cn_log_error("epmd refused the registration (result %u): name in use?",
                     e->resp[1]);
        cn_epmd_close(e);
        finish(e, UV_EADDRINUSE);
        return;
    }
    finish(e, 0);
}

static void on_written(uv_write_t *w, int status)
{
    cn_epmd *e = w->data;
    if (status < 0) {
        cn_epmd_close(e);
        finish(e, status);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    cn_epmd *e = req->data;
    if (status < 0) {
        cn_log_error("cannot reach epmd on 127.0.0.1:%d: %s", cn_epmd_port(),
                     uv_strerror(status));
        cn_epmd_close(e);
        finish(e, status);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)e->req, (unsigned)e->req_len);
    e->write_req.data = e;
    int rc = uv_write(&e->write_req, (uv_stream_t *)&e->tcp, &b, 1, on_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&e->tcp, on_alloc, on_read);
    if (rc < 0) {
        cn_epmd_close(e);
        finish(e, rc);
    }
}

int cn_epmd_register(cn_epmd *e, uv_loop_t *loop, const char *alive,
                     int port, cn_epmd_cb cb, void *ud)
{
    size_t alen = strlen(alive);
    if (alen == 0 || alen > 255 || port <= 0 || port > 65535)
        return UV_EINVAL;
    memset(e, 0, sizeof *e);
    e->cb = cb;
    e->ud = ud;
    unsigned char *p = e->req + 2;
    *p++ = ALIVE2_REQ;
    *p++ = (unsigned char)(port >> 8);
    *p++ = (unsigned char)port;
    *p++ = 'h'; /* hidden node: see epmd.h */
    *p++ = 0;   /* protocol: tcp/ipv4 */
    *p++ = 0;
    *p++ = 6; /* highest version */
    *p++ = 0;
    *p++ = 6; /* lowest version */
    *p++ = (unsigned char)(alen >> 8);
    *p++ = (unsigned char)alen;
    memcpy(p, alive, alen);
    p += alen;
    *p++ = 0; /* no extra */
    *p++ = 0;
    size_t body = (size_t)(p - e->req) - 2;
    e->req[0] = (unsigned char)(body >> 8);
    e->req[1] = (unsigned char)body;
    e->req_len = body + 2;

    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", cn_epmd_port(), &a);
    int rc = uv_tcp_init(loop, &e->tcp);
    if (rc)
        return rc;
    e->tcp.data = e;
    e->open = 1;
    e->connect_req.data = e;
    rc = uv_tcp_connect(&e->connect_req, &e->tcp, (struct sockaddr *)&a, on_connect);
    if (rc) {
        e->done = 1;
        cn_epmd_close(e);
        return rc;
    }
    return 0;
}
