/* epmd.c - see epmd.h. */
#include "epmd.h"

#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "term.h"

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
    if (e->done || e->free_when_closed)
        return;
    e->done = 1;
    e->cb(e, status, e->creation, e->ud);
}

/* ------------------------------------------------------- finding epmd */

static int executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* dir/name into out if it is an executable file: 0, else -1. */
static int candidate(const char *dir, size_t dlen, const char *name, char *out, size_t cap)
{
    if (dlen == 0) { /* an empty PATH entry is the current directory */
        dir = ".";
        dlen = 1;
    }
    int n = snprintf(out, cap, "%.*s/%s", (int)dlen, dir, name);
    return n > 0 && (size_t)n < cap && executable(out) ? 0 : -1;
}

int cn_epmd_program(char *out, size_t cap)
{
    const char *path = getenv("PATH");
    char erl[PATH_MAX] = "";
    for (const char *p = path; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        if (candidate(p, len, "epmd", out, cap) == 0)
            return 0;
        if (!erl[0] && candidate(p, len, "erl", erl, sizeof erl) != 0)
            erl[0] = 0;
        p = colon ? colon + 1 : p + len;
    }
    /* next to erl: its own directory (a release's bin/), then the
     * erts-VSN/bin of the installation it belongs to */
    char real[PATH_MAX];
    if (!erl[0] || !realpath(erl, real) || !strrchr(real, '/'))
        return -1;
    *strrchr(real, '/') = 0;
    if (candidate(real, strlen(real), "epmd", out, cap) == 0)
        return 0;
    char pattern[PATH_MAX + 32];
    snprintf(pattern, sizeof pattern, "%s/../erts-*/bin/epmd", real);
    glob_t g;
    int rc = -1;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && rc != 0; i++) /* an installation has one */
            if (executable(g.gl_pathv[i]) && strlen(g.gl_pathv[i]) < cap) {
                strcpy(out, g.gl_pathv[i]);
                rc = 0;
            }
        globfree(&g);
    }
    return rc;
}

/* -------------------------------------------------------- registration */

static void on_retry(uv_timer_t *t);

static void on_handle_closed(uv_handle_t *h)
{
    cn_epmd *e = h->data;
    e->handles--;
    if (e->free_when_closed && e->handles == 0) {
        free(e);
        return;
    }
    if (h != (uv_handle_t *)&e->tcp)
        return;
    e->open = 0;
    if (!e->closing) /* closed for another attempt */
        uv_timer_start(&e->retry, on_retry, 100, 0);
}

void cn_epmd_close(cn_epmd *e)
{
    if (e->closing)
        return;
    e->closing = 1;
    if (e->open && !uv_is_closing((uv_handle_t *)&e->tcp))
        uv_close((uv_handle_t *)&e->tcp, on_handle_closed);
    if (e->loop && !uv_is_closing((uv_handle_t *)&e->retry))
        uv_close((uv_handle_t *)&e->retry, on_handle_closed);
    if (e->started && !uv_is_closing((uv_handle_t *)&e->daemon))
        uv_close((uv_handle_t *)&e->daemon, on_handle_closed); /* it goes on */
}

void cn_epmd_close_free(cn_epmd *e)
{
    e->free_when_closed = 1;
    cn_epmd_close(e);
    if (e->handles == 0)
        free(e);
}

/* `epmd -daemon` returns once the daemon has forked (it goes on). */
static void on_daemon_exit(uv_process_t *p, int64_t status, int sig)
{
    if (status != 0 || sig != 0)
        cn_log_warn("epmd -daemon exited with status %lld (signal %d)",
                    (long long)status, sig);
    if (!uv_is_closing((uv_handle_t *)p))
        uv_close((uv_handle_t *)p, on_handle_closed);
}

/* Runs `epmd -daemon`, as erl does for a distributed node: it listens on
 * $ERL_EPMD_PORT (our environment is its). 0, or -1 (logged). */
static int start_epmd(cn_epmd *e)
{
    char prog[PATH_MAX];
    if (cn_epmd_program(prog, sizeof prog) != 0) {
        cn_log_error("no epmd on 127.0.0.1:%d, and no epmd program on PATH or next "
                     "to erl to start one", cn_epmd_port());
        return -1;
    }
    char *args[] = {prog, "-daemon", NULL};
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE}, {.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = prog;
    o.args = args;
    o.exit_cb = on_daemon_exit;
    o.stdio = stdio;
    o.stdio_count = 3;
    e->daemon.data = e;
    int rc = uv_spawn(e->loop, &e->daemon, &o);
    e->started = 1;
    e->handles++;
    if (rc != 0) {
        cn_log_error("cannot start %s -daemon: %s", prog, uv_strerror(rc));
        uv_close((uv_handle_t *)&e->daemon, on_handle_closed);
        return -1;
    }
    cn_log_info("no epmd on 127.0.0.1:%d: started %s -daemon", cn_epmd_port(), prog);
    return 0;
}

/* Whether a refused connect is worth another attempt: CN_EPMD_START
 * starts epmd once, then 50 attempts 100 ms apart. */
static int try_again(cn_epmd *e, int status)
{
    if (status != UV_ECONNREFUSED || !(e->flags & CN_EPMD_START) || e->closing)
        return 0;
    if (!e->started && start_epmd(e) != 0)
        return 0;
    return ++e->attempts <= 50;
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
        if (e->done) {
            cn_log_error("epmd closed our registration connection (%s)",
                         uv_strerror((int)n));
            cn_epmd_close(e);
            e->done = 0; /* the callback hears of the loss too */
            finish(e, (int)n);
            return;
        }
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
        e->creation = cn_rd32(e->resp + 2);
    } else if (e->resp[0] == ALIVE2_RESP && e->resp_len >= 4) {
        e->creation = cn_rd16(e->resp + 2);
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
        if (try_again(e, status)) {
            uv_close((uv_handle_t *)&e->tcp, on_handle_closed); /* then the timer */
            return;
        }
        if (!(e->flags & CN_EPMD_QUIET))
            cn_log_error("cannot reach epmd on 127.0.0.1:%d: %s%s", cn_epmd_port(),
                         uv_strerror(status), e->started ? " (after starting one)" : "");
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

/* A fresh TCP handle connecting to epmd. 0 or a libuv code. */
static int open_tcp(cn_epmd *e)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", cn_epmd_port(), &a);
    int rc = uv_tcp_init(e->loop, &e->tcp);
    if (rc)
        return rc;
    e->tcp.data = e;
    e->open = 1;
    e->handles++;
    e->connect_req.data = e;
    return uv_tcp_connect(&e->connect_req, &e->tcp, (struct sockaddr *)&a, on_connect);
}

/* Another attempt, after epmd was started. */
static void on_retry(uv_timer_t *t)
{
    cn_epmd *e = t->data;
    int rc = e->closing ? 0 : open_tcp(e);
    if (rc != 0) {
        cn_log_error("cannot reach epmd on 127.0.0.1:%d: %s", cn_epmd_port(), uv_strerror(rc));
        cn_epmd_close(e);
        finish(e, rc);
    }
}

int cn_epmd_register(cn_epmd *e, uv_loop_t *loop, const char *alive,
                     int port, int flags, cn_epmd_cb cb, void *ud)
{
    size_t alen = strlen(alive);
    if (alen == 0 || alen > 255 || port <= 0 || port > 65535)
        return UV_EINVAL;
    memset(e, 0, sizeof *e);
    e->cb = cb;
    e->ud = ud;
    e->flags = flags;
    unsigned char *p = e->req + 2;
    *p++ = ALIVE2_REQ;
    cn_wr16(p, (uint16_t)port);
    p += 2;
    *p++ = 'h'; /* hidden node: see epmd.h */
    *p++ = 0;   /* protocol: tcp/ipv4 */
    *p++ = 0;
    *p++ = 6; /* highest version */
    *p++ = 0;
    *p++ = 6; /* lowest version */
    cn_wr16(p, (uint16_t)alen);
    p += 2;
    memcpy(p, alive, alen);
    p += alen;
    *p++ = 0; /* no extra */
    *p++ = 0;
    size_t body = (size_t)(p - e->req) - 2;
    cn_wr16(e->req, (uint16_t)body);
    e->req_len = body + 2;

    int rc = uv_timer_init(loop, &e->retry);
    if (rc)
        return rc;
    e->loop = loop;
    e->retry.data = e;
    e->handles++;
    if ((rc = open_tcp(e)) != 0) {
        e->done = 1;
        cn_epmd_close(e);
        return rc;
    }
    return 0;
}

/* ------------------------------------------------- PORT_PLEASE2 lookups */

#define PORT_PLEASE2_REQ 122
#define PORT2_RESP 119

struct cn_epmd_lookup {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    int handles; /* open handles; freed at 0 */
    int done;    /* cb ran or was cancelled */
    cn_epmd_port_cb cb;
    void *ud;
    unsigned char req[2 + 1 + 255];
    size_t req_len;
    unsigned char resp[10]; /* tag result port:16 type proto high:16 low:16 */
    size_t resp_len;
};

static void lookup_handle_closed(uv_handle_t *h)
{
    cn_epmd_lookup *q = h->data;
    if (--q->handles == 0)
        free(q);
}

static void lookup_end(cn_epmd_lookup *q, int status, int port)
{
    if (!q->done) {
        q->done = 1;
        if (q->cb)
            q->cb(status, port, q->ud);
    }
    if (!uv_is_closing((uv_handle_t *)&q->tcp))
        uv_close((uv_handle_t *)&q->tcp, lookup_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&q->timer))
        uv_close((uv_handle_t *)&q->timer, lookup_handle_closed);
}

void cn_epmd_lookup_cancel(cn_epmd_lookup *q)
{
    q->cb = NULL;
    lookup_end(q, 0, 0);
}

static void lookup_timeout(uv_timer_t *t)
{
    lookup_end(t->data, UV_ETIMEDOUT, 0);
}

static void lookup_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    cn_epmd_lookup *q = h->data;
    static char sink[64];
    if (q->resp_len == sizeof q->resp)
        *b = uv_buf_init(sink, sizeof sink); /* name and extra: not needed */
    else
        *b = uv_buf_init((char *)q->resp + q->resp_len,
                         (unsigned)(sizeof q->resp - q->resp_len));
}

/* PORT2_RESP: 119 result:8, then when result is 0: port:16 type:8
 * proto:8 highest:16 lowest:16 nlen:16 name elen:16 extra. epmd closes the
 * connection after it. */
static void lookup_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    cn_epmd_lookup *q = s->data;
    if (q->done)
        return;
    if (n > 0 && b->base != (char *)q->resp + q->resp_len)
        return; /* sink */
    if (n > 0)
        q->resp_len += (size_t)n;
    if (q->resp_len >= 1 && q->resp[0] != PORT2_RESP) {
        lookup_end(q, UV_EPROTO, 0);
        return;
    }
    if (q->resp_len >= 2 && q->resp[1] != 0) {
        lookup_end(q, UV_ENOENT, 0);
        return;
    }
    if (q->resp_len >= 10) {
        int port = cn_rd16(q->resp + 2);
        unsigned high = cn_rd16(q->resp + 6);
        unsigned low = cn_rd16(q->resp + 8);
        if (q->resp[5] != 0 || high < 6 || low > 6 || port == 0)
            lookup_end(q, UV_EPROTO, 0); /* not tcp, or no version 6 */
        else
            lookup_end(q, 0, port);
        return;
    }
    if (n < 0) /* closed before a whole reply */
        lookup_end(q, q->resp_len ? UV_EPROTO : (int)n, 0);
}

static void lookup_written(uv_write_t *w, int status)
{
    cn_epmd_lookup *q = w->data;
    if (status < 0 && status != UV_ECANCELED)
        lookup_end(q, status, 0);
}

static void lookup_connected(uv_connect_t *req, int status)
{
    cn_epmd_lookup *q = req->data;
    if (q->done)
        return;
    if (status < 0) {
        lookup_end(q, status, 0);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)q->req, (unsigned)q->req_len);
    q->write_req.data = q;
    int rc = uv_write(&q->write_req, (uv_stream_t *)&q->tcp, &b, 1, lookup_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&q->tcp, lookup_alloc, lookup_read);
    if (rc < 0)
        lookup_end(q, rc, 0);
}

cn_epmd_lookup *cn_epmd_port_please(uv_loop_t *loop, const struct sockaddr *host,
                                    const char *alive, uint64_t timeout_ms,
                                    cn_epmd_port_cb cb, void *ud)
{
    size_t alen = strlen(alive);
    if (alen == 0 || alen > 255)
        return NULL;
    struct sockaddr_storage a;
    if (host->sa_family == AF_INET) {
        memcpy(&a, host, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)cn_epmd_port());
    } else if (host->sa_family == AF_INET6) {
        memcpy(&a, host, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)cn_epmd_port());
    } else {
        return NULL;
    }
    cn_epmd_lookup *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->cb = cb;
    q->ud = ud;
    cn_wr16(q->req, (uint16_t)(1 + alen));
    q->req[2] = PORT_PLEASE2_REQ;
    memcpy(q->req + 3, alive, alen);
    q->req_len = 3 + alen;
    if (uv_tcp_init(loop, &q->tcp) != 0) {
        free(q);
        return NULL;
    }
    q->tcp.data = q;
    uv_timer_init(loop, &q->timer);
    q->timer.data = q;
    q->handles = 2;
    q->connect_req.data = q;
    if (uv_tcp_connect(&q->connect_req, &q->tcp, (struct sockaddr *)&a,
                       lookup_connected) != 0 ||
        uv_timer_start(&q->timer, lookup_timeout, timeout_ms, 0) != 0) {
        q->cb = NULL;
        lookup_end(q, 0, 0);
        return NULL;
    }
    return q;
}
