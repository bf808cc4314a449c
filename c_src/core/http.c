/* http.c - see http.h. */
#include "http.h"

#include "council_internal.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct cx_http {
    council_ctx *ctx;
    CURLM *multi;
    uv_timer_t timer;        /* curl's timeout */
    uv_prepare_t keepalive;  /* active while transfers are: keeps the loop up */
    size_t active;
    size_t deferred;         /* cancelled inside a callback, not yet freed */
    int in_curl;             /* inside curl_multi_socket_action */
    cx_http_req *reqs;       /* every transfer not yet freed */
} cx_http;

/* One socket curl asked us to watch. */
typedef struct http_sock {
    uv_poll_t poll;
    cx_http *h;
    curl_socket_t fd;
} http_sock;

struct cx_http_req {
    cx_http *h;
    cx_http_req *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    cx_http_cbs cbs;
    void *arg;
    cx_timer idle;
    uint64_t idle_ms;
    long status;
    uint64_t retry_after_ms;
    bool headers_done, cancelled, aborted, idle_expired, deferred;
    char errbuf[CURL_ERROR_SIZE];
};

static void check_done(cx_http *h);

/* ------------------------------------------------------------ lifecycle */

static void keepalive_cb(uv_prepare_t *p)
{
    (void)p; /* only there to keep the loop running while transfers are */
}

static void set_active(cx_http *h, long delta)
{
    h->active = (size_t)((long)h->active + delta);
    if (h->active > 0)
        uv_prepare_start(&h->keepalive, keepalive_cb);
    else
        uv_prepare_stop(&h->keepalive);
}

static void wipe_headers(struct curl_slist *l)
{
    for (struct curl_slist *s = l; s; s = s->next)
        sodium_memzero(s->data, strlen(s->data));
    curl_slist_free_all(l);
}

/* Out of curl, out of the list, freed. No callback runs after. */
static void req_free(cx_http_req *r)
{
    cx_http *h = r->h;
    if (r->deferred)
        h->deferred--;
    if (r->easy) {
        curl_multi_remove_handle(h->multi, r->easy);
        curl_easy_cleanup(r->easy);
        set_active(h, -1);
    }
    cx_timer_fini(&r->idle);
    wipe_headers(r->headers);
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    free(r);
}

static void finish(cx_http_req *r, cx_http_fail fail, const char *msg)
{
    if (!r->cancelled && r->cbs.on_done) {
        r->cancelled = true; /* no further callback */
        r->cbs.on_done(r, fail, r->status, msg, r->arg);
    }
    req_free(r);
}

void cx_http_cancel(cx_http_req *r)
{
    if (!r || r->cancelled)
        return;
    r->cancelled = true;
    cx_timer_stop(&r->idle);
    if (!r->h->in_curl) {
        req_free(r);
    } else {
        /* check_done frees it once curl has returned (the write and header
         * callbacks refuse its data meanwhile) */
        r->deferred = true;
        r->h->deferred++;
    }
}

/* ------------------------------------------------------------ curl glue */

static void poll_closed(uv_handle_t *hd)
{
    free(hd->data);
}

static void socket_action(cx_http *h, curl_socket_t fd, int ev)
{
    int running;
    h->in_curl++;
    curl_multi_socket_action(h->multi, fd, ev, &running);
    h->in_curl--;
    check_done(h);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    http_sock *s = p->data;
    int ev = 0;
    if (status < 0)
        ev = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        ev |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        ev |= CURL_CSELECT_OUT;
    socket_action(s->h, s->fd, ev);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    cx_http *h = userp;
    http_sock *s = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, poll_closed);
            curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->h = h;
        s->fd = fd;
        if (uv_poll_init_socket(&h->ctx->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        uv_unref((uv_handle_t *)&s->poll); /* the keepalive handle decides */
        curl_multi_assign(h->multi, fd, s);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    cx_http *h = t->data;
    socket_action(h, CURL_SOCKET_TIMEOUT, 0);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    cx_http *h = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static cx_http_fail classify(CURLcode rc, const cx_http_req *r)
{
    if (r->aborted)
        return CX_HTTP_ABORTED;
    switch (rc) {
    case CURLE_OK:
        return CX_HTTP_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
        return CX_HTTP_CONNECT;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return CX_HTTP_TLS;
    case CURLE_OPERATION_TIMEDOUT:
        return CX_HTTP_TIMEOUT;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return CX_HTTP_CUT;
    default:
        return CX_HTTP_OTHER;
    }
}

/* Transfers curl has finished: report them (outside any curl call). */
static void check_done(cx_http *h)
{
    if (h->in_curl)
        return;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        cx_http_req *r = NULL;
        CURLcode rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (!r)
            continue;
        if (!r->status)
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        cx_http_fail fail = classify(rc, r);
        char msg[CURL_ERROR_SIZE + 64];
        if (fail == CX_HTTP_OK)
            msg[0] = 0;
        else
            snprintf(msg, sizeof msg, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        finish(r, fail, msg);
    }
    /* cancelled from inside a callback, and curl did not finish them; the
     * walk is taken only when there are some (not at every socket event) */
    for (cx_http_req *r = h->reqs, *n; h->deferred && r; r = n) {
        n = r->next;
        if (r->deferred)
            req_free(r);
    }
}

/* Bytes came (a header line or body): false when the transfer is being
 * cancelled (curl is then told to stop), else the idle timer restarts. */
static bool data_arrived(cx_http_req *r)
{
    if (r->cancelled)
        return false;
    if (r->idle_ms)
        cx_timer_start(&r->idle, r->idle_ms);
    return true;
}

static size_t header_cb(char *buf, size_t size, size_t n, void *userp)
{
    cx_http_req *r = userp;
    size_t len = size * n;
    if (!data_arrived(r))
        return 0;
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        r->retry_after_ms = 0; /* a new response (after a 1xx) */
        r->headers_done = false;
    } else if (len > 12 && strncasecmp(buf, "retry-after:", 12) == 0) {
        r->retry_after_ms = cx_http_parse_retry_after(buf + 12, len - 12, time(NULL));
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200 && !r->headers_done) {
            r->headers_done = true;
            r->status = code;
            if (r->cbs.on_headers)
                r->cbs.on_headers(r, code, r->retry_after_ms, r->arg);
            if (r->cancelled)
                return 0;
        }
    }
    return len;
}

static size_t write_cb(char *buf, size_t size, size_t n, void *userp)
{
    cx_http_req *r = userp;
    size_t len = size * n;
    if (!data_arrived(r))
        return 0;
    if (r->cbs.on_body && r->cbs.on_body(r, buf, len, r->arg) != 0) {
        r->aborted = true;
        return 0;
    }
    return r->cancelled ? 0 : len;
}

static void on_idle(void *arg)
{
    cx_http_req *r = arg;
    if (r->cancelled || !r->idle_ms)
        return;
    char msg[64];
    snprintf(msg, sizeof msg, "no data for %llu ms", (unsigned long long)r->idle_ms);
    finish(r, CX_HTTP_TIMEOUT, msg);
}

/* ------------------------------------------------------------ the multi */

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static cx_http *http_get(council_ctx *ctx)
{
    if (ctx->http)
        return ctx->http;
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, global_init);
    cx_http *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->ctx = ctx;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        return NULL;
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    uv_timer_init(&ctx->loop, &h->timer);
    h->timer.data = h;
    uv_unref((uv_handle_t *)&h->timer);
    uv_prepare_init(&ctx->loop, &h->keepalive);
    ctx->http = h;
    return h;
}

size_t cx_http_active(const council_ctx *ctx)
{
    const cx_http *h = ctx->http;
    return h ? h->active : 0;
}

void cx_http_shutdown(council_ctx *ctx)
{
    cx_http *h = ctx->http;
    if (!h)
        return;
    while (h->reqs) {
        h->reqs->cancelled = true;
        req_free(h->reqs);
    }
    curl_multi_cleanup(h->multi); /* closes cached connections: REMOVE callbacks */
    uv_close((uv_handle_t *)&h->timer, NULL);
    uv_close((uv_handle_t *)&h->keepalive, NULL);
    uv_run(&ctx->loop, UV_RUN_NOWAIT); /* the close callbacks, before h goes */
    free(h);
    ctx->http = NULL;
}

/* Proxy variables given to the context (council_ctx_setenv) apply as curl
 * applies the process environment's, which it reads itself: the scheme's
 * own variable (http_proxy only in lower case, as curl has it), then
 * all_proxy; no_proxy for the exceptions. Returns false if curl refused. */
static bool set_proxy(council_ctx *ctx, CURL *e, const char *url)
{
    static const char *const https[] = {"https_proxy", "HTTPS_PROXY", "all_proxy",
                                        "ALL_PROXY", NULL};
    static const char *const http[] = {"http_proxy", "all_proxy", "ALL_PROXY", NULL};
    const char *const *names = strncasecmp(url, "https:", 6) == 0 ? https : http;
    for (; *names; names++) {
        const char *v = cx_env_own(ctx, *names);
        if (v) {
            if (curl_easy_setopt(e, CURLOPT_PROXY, v) != CURLE_OK)
                return false;
            break;
        }
    }
    const char *no = cx_env_own(ctx, "no_proxy");
    if (!no)
        no = cx_env_own(ctx, "NO_PROXY");
    return !no || curl_easy_setopt(e, CURLOPT_NOPROXY, no) == CURLE_OK;
}

int cx_http_start(council_ctx *ctx, const cx_http_opts *o, const cx_http_cbs *cbs,
                  void *arg, cx_http_req **out)
{
    if (!o || !o->url || !cbs)
        return COUNCIL_EINVAL;
    cx_http *h = http_get(ctx);
    if (!h)
        return COUNCIL_ENOMEM;
    cx_http_req *r = calloc(1, sizeof *r);
    if (!r)
        return COUNCIL_ENOMEM;
    r->h = h;
    r->cbs = *cbs;
    r->arg = arg;
    r->idle_ms = o->idle_timeout_ms;
    if (cx_timer_init(ctx, &r->idle, on_idle, r) != COUNCIL_OK) {
        free(r);
        return COUNCIL_ENOMEM;
    }
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    int rc = COUNCIL_ENOMEM;
    /* no "Expect: 100-continue" round trip for large bodies */
    struct curl_slist *l = curl_slist_append(NULL, "Expect:");
    for (const char *const *hd = o->headers; l && hd && *hd; hd++) {
        struct curl_slist *nl = curl_slist_append(l, *hd);
        if (!nl) {
            wipe_headers(l);
            l = NULL;
        }
        l = nl;
    }
    r->headers = l;
    r->easy = l ? curl_easy_init() : NULL;
    if (!r->easy)
        goto fail;
    CURL *e = r->easy;
    rc = COUNCIL_EIO;
    if (curl_easy_setopt(e, CURLOPT_URL, o->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        !set_proxy(ctx, e, o->url))
        goto fail;
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(o->connect_timeout_ms ? o->connect_timeout_ms : 10000));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (o->ca_file && curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file) != CURLE_OK)
        goto fail;
    if (o->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        if (curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body) != CURLE_OK) {
            rc = COUNCIL_ENOMEM;
            goto fail;
        }
    }
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
        goto fail;
    set_active(h, +1);
    if (r->idle_ms)
        cx_timer_start(&r->idle, r->idle_ms);
    *out = r;
    return COUNCIL_OK;
fail:
    if (r->easy) {
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    r->cancelled = true;
    req_free(r);
    return rc;
}

/* ------------------------------------------------------------ Retry-After */

uint64_t cx_http_parse_retry_after(const char *v, size_t len, int64_t now_s)
{
    char buf[64];
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    if (len == 0 || len >= sizeof buf)
        return 0;
    memcpy(buf, v, len);
    buf[len] = 0;
    if (buf[0] >= '0' && buf[0] <= '9') {
        char *end;
        unsigned long long s = strtoull(buf, &end, 10);
        if (*end)
            return 0;
        return s > 86400 ? 86400000ull : (uint64_t)s * 1000;
    }
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return 0;
    int64_t at = (int64_t)timegm(&tm);
    return at > now_s ? (uint64_t)(at - now_s) * 1000 : 0;
}
