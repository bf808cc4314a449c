/* provider_exec.c - the built-in provider that runs a program per call.
 *
 * argv comes from the member's options.argv (options.cwd optional). The
 * request JSON (plus a newline) is written to the child's stdin, which is
 * then closed; stdout is streamed as member_token chunks and is the answer
 * once the child exits with status 0. A non-zero status or a signal is a
 * member error carrying the tail of stderr. Timeout, output over the cap
 * and cancel kill the child with SIGKILL; libuv reaps every child, so none
 * is left a zombie. A child outlives its call only until it is reaped.
 * Not for: retries or timeouts themselves (call.c arms the timer).
 */
#include "council_internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR_TAIL 512

typedef struct exec_child {
    struct exec_child *prev, *next;
    council_ctx *ctx;
    council_call *call;     /* ref; NULL once detached */
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_write_t wreq;
    char *req;
    int open_handles;
    bool spawned, exited, out_eof, err_eof, delivered;
    int64_t exit_status;
    int term_signal;
    char *kill_reason;
    char *buf;
    size_t len, cap_bytes, buf_cap;
    char errtail[ERR_TAIL];     /* the end of stderr (cx_tail_keep) */
    size_t err_len;
    char rd[65536];
} exec_child;

static void child_unlink_free(exec_child *c)
{
    council_ctx *ctx = c->ctx;
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->exec_children = c->next;
    if (c->next)
        c->next->prev = c->prev;
    council_call_unref(c->call);
    free(c->req);
    free(c->buf);
    free(c->kill_reason);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    exec_child *c = h->data;
    if (--c->open_handles == 0)
        child_unlink_free(c);
}

static void close_handle(exec_child *c, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, handle_closed);
    (void)c;
}

static void child_kill(exec_child *c, const char *reason)
{
    if (reason && !c->kill_reason)
        c->kill_reason = cx_strdup(reason);
    if (c->spawned && !c->exited)
        uv_process_kill(&c->proc, SIGKILL);
}

static void detach(exec_child *c)
{
    if (!c->call)
        return;
    c->call->prov_state = NULL;
    council_call_unref(c->call);
    c->call = NULL;
}

/* Report the outcome once the child has exited and its output is read. */
static void maybe_deliver(exec_child *c)
{
    if (c->delivered || !c->exited || !c->out_eof || !c->err_eof)
        return;
    c->delivered = true;
    council_call *call = c->call;
    if (!call)
        return;
    council_call_ref(call);
    detach(c);
    char msg[ERR_TAIL + 96];
    size_t tail_len = c->err_len;
    const char *tail = c->errtail;
    if (c->kill_reason) {
        council_call_fail(call, c->kill_reason);
    } else if (c->term_signal) {
        snprintf(msg, sizeof msg, "killed by signal %d%s%.*s", c->term_signal,
                 tail_len ? ": " : "", (int)tail_len, tail);
        council_call_fail(call, msg);
    } else if (c->exit_status != 0) {
        snprintf(msg, sizeof msg, "exit status %lld%s%.*s", (long long)c->exit_status,
                 tail_len ? ": " : "", (int)tail_len, tail);
        council_call_fail(call, msg);
    } else {
        council_call_complete(call, c->buf ? c->buf : "", c->len);
    }
    council_call_unref(call);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    exec_child *c = p->data;
    c->exited = true;
    c->exit_status = status;
    c->term_signal = sig;
    close_handle(c, (uv_handle_t *)&c->proc);
    maybe_deliver(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    exec_child *c = h->data;
    (void)suggested;
    b->base = c->rd;
    b->len = sizeof c->rd;
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    exec_child *c = s->data;
    if (n < 0) {
        c->out_eof = true;
        close_handle(c, (uv_handle_t *)s);
        maybe_deliver(c);
        return;
    }
    if (n == 0 || c->kill_reason)
        return;
    if (c->len + (size_t)n > c->cap_bytes) {
        char msg[96];
        snprintf(msg, sizeof msg, "output exceeds %zu bytes", c->cap_bytes);
        child_kill(c, msg);
        return;
    }
    if (c->len + (size_t)n + 1 > c->buf_cap) {
        size_t nc = c->buf_cap ? c->buf_cap * 2 : 4096;
        while (nc < c->len + (size_t)n + 1)
            nc *= 2;
        char *nb = realloc(c->buf, nc);
        if (!nb) {
            child_kill(c, "out of memory");
            return;
        }
        c->buf = nb;
        c->buf_cap = nc;
    }
    memcpy(c->buf + c->len, b->base, (size_t)n);
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (c->call)
        council_call_token(c->call, b->base, (size_t)n);
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    exec_child *c = s->data;
    if (n < 0) {
        c->err_eof = true;
        close_handle(c, (uv_handle_t *)s);
        maybe_deliver(c);
        return;
    }
    cx_tail_keep(c->errtail, sizeof c->errtail, &c->err_len, b->base, (size_t)n);
}

static void on_written(uv_write_t *w, int status)
{
    exec_child *c = w->data;
    (void)status; /* EPIPE: the child did not read its stdin; fine */
    close_handle(c, (uv_handle_t *)&c->in);
}

static int exec_start(council_call *call, void *arg)
{
    council_ctx *ctx = arg;
    json_t *opts = call->member->options; /* borrowed */
    json_t *jargv = json_object_get(opts, "argv");
    size_t argc = json_array_size(jargv);
    if (argc == 0) {
        council_call_fail(call, "exec: options.argv missing");
        return 0;
    }
    char **argv = cx_calloc(argc + 1, sizeof *argv);
    exec_child *c = calloc(1, sizeof *c);
    size_t rlen;
    const char *req = council_call_request(call, &rlen);
    if (!argv || !c || !req || !(c->req = malloc(rlen + 1))) {
        free(argv);
        free(c);
        return COUNCIL_ENOMEM;
    }
    memcpy(c->req, req, rlen);
    c->req[rlen] = '\n';
    for (size_t i = 0; i < argc; i++)
        argv[i] = (char *)json_string_value(json_array_get(jargv, i));
    json_t *cwd = json_object_get(opts, "cwd");
    char *real = NULL;
    int allowed = cx_exec_resolve(ctx, argv[0], json_is_string(cwd) ? json_string_value(cwd)
                                                                  : NULL, &real);
    if (allowed != COUNCIL_OK) {
        free(argv);
        free(c->req);
        free(c);
        if (allowed == COUNCIL_ENOMEM)
            return COUNCIL_ENOMEM;
        council_call_fail(call, "exec: program not allowed");
        return 0;
    }
    c->ctx = ctx;
    c->cap_bytes = ctx->cfg.output_cap;
    uv_loop_t *loop = &ctx->loop;
    uv_pipe_init(loop, &c->in, 0);
    uv_pipe_init(loop, &c->out, 0);
    uv_pipe_init(loop, &c->err, 0);
    c->in.data = c->out.data = c->err.data = c->proc.data = c;
    c->wreq.data = c;
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&c->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&c->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&c->err;
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = real ? real : argv[0]; /* the program checked, not a name */
    po.args = argv;
    po.exit_cb = on_exit_cb;
    po.stdio_count = 3;
    po.stdio = stdio;
    if (json_is_string(cwd))
        po.cwd = json_string_value(cwd);
    /* link before anything can close */
    c->next = ctx->exec_children;
    if (c->next)
        ((exec_child *)c->next)->prev = c;
    ctx->exec_children = c;
    c->open_handles = 4;
    int rc = uv_spawn(loop, &c->proc, &po);
    char msg[200];
    if (rc != 0)
        snprintf(msg, sizeof msg, "exec: cannot start %.100s: %s", argv[0],
                 uv_strerror(rc));
    free(argv);
    free(real);
    if (rc != 0) {
        c->delivered = true;
        close_handle(c, (uv_handle_t *)&c->proc);
        close_handle(c, (uv_handle_t *)&c->in);
        close_handle(c, (uv_handle_t *)&c->out);
        close_handle(c, (uv_handle_t *)&c->err);
        council_call_fail(call, msg);
        return 0;
    }
    c->spawned = true;
    c->call = council_call_ref(call);
    call->prov_state = c;
    uv_buf_t b = uv_buf_init(c->req, (unsigned)(rlen + 1));
    if (uv_write(&c->wreq, (uv_stream_t *)&c->in, &b, 1, on_written) != 0)
        close_handle(c, (uv_handle_t *)&c->in);
    uv_read_start((uv_stream_t *)&c->out, alloc_cb, on_out);
    uv_read_start((uv_stream_t *)&c->err, alloc_cb, on_err);
    return 0;
}

static void exec_cancel(council_call *call, void *arg)
{
    (void)arg;
    exec_child *c = call->prov_state;
    if (!c)
        return;
    detach(c);
    child_kill(c, "cancelled");
}

void provider_exec_ops(council_provider_ops *ops)
{
    memset(ops, 0, sizeof *ops);
    ops->start = exec_start;
    ops->cancel = exec_cancel;
}

void provider_exec_shutdown(council_ctx *ctx)
{
    for (exec_child *c = ctx->exec_children; c; c = c->next) {
        detach(c);
        child_kill(c, "shutdown");
    }
}

size_t provider_exec_unreaped(council_ctx *ctx)
{
    size_t n = 0;
    for (exec_child *c = ctx->exec_children; c; c = c->next)
        n += c->spawned && !c->exited;
    return n;
}

void provider_exec_close_all(council_ctx *ctx)
{
    exec_child *c = ctx->exec_children;
    while (c) {
        /* closing may free c (in a later callback, not here) */
        exec_child *next = c->next;
        close_handle(c, (uv_handle_t *)&c->in);
        close_handle(c, (uv_handle_t *)&c->out);
        close_handle(c, (uv_handle_t *)&c->err);
        close_handle(c, (uv_handle_t *)&c->proc);
        c = next;
    }
}
