/* http.h - HTTP transfers on a context's loop: libcurl's multi interface
 * driven by libuv (each socket curl wants watched is a uv_poll_t, curl's
 * timer is a uv_timer_t). No thread per request and no blocking call.
 *
 * What it is for: the model providers' requests (provider_llm.c). One
 * multi handle per context, made on first use, so connections are reused
 * per host (keep-alive, and HTTP/2 multiplexing where a TLS server offers
 * it). TLS verification is on, with the system CA store unless a ca_file
 * is given; curl reads the proxy environment (https_proxy, no_proxy...).
 * Not for: what the bytes mean (sse.c, the provider) or retries (engine).
 *
 * A transfer lives from cx_http_start until its on_done callback returns,
 * or until cx_http_cancel; no callback runs after either. Idle (no byte
 * received for idle_timeout_ms) and connect timeouts end it with an error.
 * Loop thread only.
 */
#ifndef COUNCIL_HTTP_H
#define COUNCIL_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct council_ctx;
typedef struct cx_http_req cx_http_req;

/* Why a transfer ended without a complete response. */
typedef enum cx_http_fail {
    CX_HTTP_OK = 0,
    CX_HTTP_CONNECT,   /* could not connect (refused, DNS, TLS handshake) */
    CX_HTTP_TLS,       /* certificate verification failed */
    CX_HTTP_TIMEOUT,   /* connect or idle timeout */
    CX_HTTP_CUT,       /* the connection broke before the response ended */
    CX_HTTP_ABORTED,   /* on_body asked to stop */
    CX_HTTP_OTHER
} cx_http_fail;

typedef struct cx_http_cbs {
    /* The status line and every header have arrived. status is the HTTP
     * code; retry_after_ms is the Retry-After header (seconds or an HTTP
     * date) in ms, 0 when absent. May be NULL. */
    void (*on_headers)(cx_http_req *r, long status, uint64_t retry_after_ms, void *arg);
    /* Body bytes as they arrive. Return 0 to go on; non-zero ends the
     * transfer (on_done then reports CX_HTTP_ABORTED). */
    int (*on_body)(cx_http_req *r, const char *buf, size_t len, void *arg);
    /* The transfer is over: fail is CX_HTTP_OK when the whole response was
     * read (whatever its status), else why not; message says it for a
     * human (never holds a header value). The request is freed after this
     * returns; it may start new transfers. */
    void (*on_done)(cx_http_req *r, cx_http_fail fail, long status, const char *message,
                    void *arg);
} cx_http_cbs;

typedef struct cx_http_opts {
    const char *url;
    /* "Name: value" lines, NULL-terminated; copied, and wiped from the
     * request's memory when it ends (they may hold a key). */
    const char *const *headers;
    const char *body;          /* POST body (copied); NULL = GET */
    size_t body_len;
    uint64_t connect_timeout_ms; /* 0 = 10 s */
    uint64_t idle_timeout_ms;    /* 0 = none */
    const char *ca_file;       /* PEM bundle to verify with; NULL = system */
} cx_http_opts;

/* Start a transfer. Returns COUNCIL_OK and *out, COUNCIL_EINVAL (no url),
 * COUNCIL_ENOMEM, or COUNCIL_EIO (curl refused the options). */
int cx_http_start(struct council_ctx *ctx, const cx_http_opts *o, const cx_http_cbs *cbs,
                  void *arg, cx_http_req **out);

/* End a transfer now: its connection is closed and no callback of it runs
 * again. Safe from inside its own callbacks (it is then removed as soon as
 * curl returns). NULL is a no-op. */
void cx_http_cancel(cx_http_req *r);

/* Transfers in progress on the context (tests, stats). */
size_t cx_http_active(const struct council_ctx *ctx);

/* Context free: every transfer must already be cancelled or done; closes
 * the multi handle's sockets and uv handles. */
void cx_http_shutdown(struct council_ctx *ctx);

/* Retry-After as ms from now: delta-seconds or an HTTP date. 0 when v is
 * not one (exposed for tests). */
uint64_t cx_http_parse_retry_after(const char *v, size_t len, int64_t now_s);

#endif
