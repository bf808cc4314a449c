/* child.c - see child.h. */
#include "child.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cx_child {
    cx_child *prev, *next;
    cx_child **list;
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_write_t wreq;
    int open_handles;
    bool spawned, exited, out_eof, err_eof, done_called, attached;
    int64_t exit_status;
    int term_signal;
    bool over_cap, kill_over_cap;
    char *kill_reason;
    char *input;
    char *buf;
    size_t len, cap, buf_cap;
    char errtail[CX_CHILD_ERR_TAIL]; /* the end of stderr (cx_tail_keep) */
    size_t err_len;
    void (*output)(void *arg, const char *p, size_t n);
    void (*done)(void *arg, const cx_child_end *end);
    void *arg;
    char rd[65536];
};

static void child_free(cx_child *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *c->list = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->input);
    free(c->buf);
    free(c->kill_reason);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    cx_child *c = h->data;
    if (--c->open_handles == 0)
        child_free(c);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, handle_closed);
}

void cx_child_detach(cx_child *c)
{
    c->attached = false;
}

void cx_child_kill(cx_child *c, const char *reason)
{
    if (reason && !c->kill_reason)
        c->kill_reason = cx_strdup(reason);
    if (c->spawned && !c->exited)
        uv_process_kill(&c->proc, SIGKILL);
}

/* The end, once the program has exited and its outputs are read. */
static void maybe_done(cx_child *c)
{
    if (c->done_called || !c->exited || !c->out_eof || !c->err_eof)
        return;
    c->done_called = true;
    if (!c->attached)
        return;
    c->attached = false;
    cx_child_end end = {c->kill_reason, c->term_signal, c->exit_status, c->over_cap,
                        c->buf ? c->buf : "", c->len, c->errtail, c->err_len};
    c->done(c->arg, &end);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    cx_child *c = p->data;
    c->exited = true;
    c->exit_status = status;
    c->term_signal = sig;
    close_handle((uv_handle_t *)&c->proc);
    maybe_done(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    cx_child *c = h->data;
    (void)suggested;
    b->base = c->rd;
    b->len = sizeof c->rd;
}

/* A read of n bytes ended that stream (EOF or an error): it is closed. */
static bool ended(cx_child *c, uv_stream_t *s, ssize_t n, bool *eof)
{
    if (n >= 0)
        return false;
    *eof = true;
    close_handle((uv_handle_t *)s);
    maybe_done(c);
    return true;
}

/* Past the cap, or no memory to keep more. */
static void overflow(cx_child *c, const char *kill_msg)
{
    if (c->kill_over_cap)
        cx_child_kill(c, kill_msg);
    else
        c->over_cap = true;
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    cx_child *c = s->data;
    if (ended(c, s, n, &c->out_eof))
        return;
    if (n == 0 || c->over_cap || (c->kill_over_cap && c->kill_reason))
        return;
    if (c->len + (size_t)n > c->cap) {
        char msg[96];
        snprintf(msg, sizeof msg, "output exceeds %zu bytes", c->cap);
        overflow(c, msg);
        return;
    }
    if (c->len + (size_t)n + 1 > c->buf_cap) {
        size_t nc = c->buf_cap ? c->buf_cap * 2 : 4096;
        while (nc < c->len + (size_t)n + 1)
            nc *= 2;
        char *nb = realloc(c->buf, nc);
        if (!nb) {
            overflow(c, "out of memory");
            return;
        }
        c->buf = nb;
        c->buf_cap = nc;
    }
    memcpy(c->buf + c->len, b->base, (size_t)n);
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (c->attached && c->output)
        c->output(c->arg, b->base, (size_t)n);
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    cx_child *c = s->data;
    if (!ended(c, s, n, &c->err_eof))
        cx_tail_keep(c->errtail, sizeof c->errtail, &c->err_len, b->base, (size_t)n);
}

static void on_written(uv_write_t *w, int status)
{
    cx_child *c = w->data;
    (void)status; /* EPIPE: the program did not read its stdin; fine */
    close_handle((uv_handle_t *)&c->in);
}

int cx_child_spawn(council_ctx *ctx, cx_child **list, const cx_child_opts *o, cx_child **out,
                   int *uv_err)
{
    cx_child *c = calloc(1, sizeof *c);
    if (!c || !(c->input = malloc(o->input_len ? o->input_len : 1))) {
        free(c);
        return COUNCIL_ENOMEM;
    }
    memcpy(c->input, o->input, o->input_len);
    c->list = list;
    c->cap = o->out_cap;
    c->kill_over_cap = o->kill_over_cap;
    c->output = o->output;
    c->done = o->done;
    c->arg = o->arg;
    uv_loop_t *loop = &ctx->loop;
    uv_pipe_init(loop, &c->in, 0);
    uv_pipe_init(loop, &c->out, 0);
    uv_pipe_init(loop, &c->err, 0);
    c->in.data = c->out.data = c->err.data = c->proc.data = c;
    c->wreq.data = c;
    uv_stdio_container_t io[3] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&c->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->err},
    };
    uv_process_options_t po = {.exit_cb = on_exit_cb, .file = o->file ? o->file : o->argv[0],
                               .args = o->argv, .cwd = o->cwd, .stdio_count = 3,
                               .stdio = io};
    /* linked before anything can close */
    c->next = *list;
    if (c->next)
        c->next->prev = c;
    *list = c;
    c->open_handles = 4;
    int rc = uv_spawn(loop, &c->proc, &po);
    if (rc != 0) {
        *uv_err = rc;
        c->done_called = true;
        close_handle((uv_handle_t *)&c->proc);
        close_handle((uv_handle_t *)&c->in);
        close_handle((uv_handle_t *)&c->out);
        close_handle((uv_handle_t *)&c->err);
        return COUNCIL_EIO;
    }
    c->spawned = true;
    c->attached = true;
    uv_buf_t b = uv_buf_init(c->input, (unsigned)o->input_len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->in, &b, 1, on_written) != 0)
        close_handle((uv_handle_t *)&c->in);
    uv_read_start((uv_stream_t *)&c->out, alloc_cb, on_out);
    uv_read_start((uv_stream_t *)&c->err, alloc_cb, on_err);
    *out = c;
    return COUNCIL_OK;
}

size_t cx_child_unreaped(const cx_child *list)
{
    size_t n = 0;
    for (const cx_child *c = list; c; c = c->next)
        n += c->spawned && !c->exited;
    return n;
}

static void let_go_of(cx_child *c, void (*let_go)(void *arg))
{
    if (let_go && c->attached) {
        cx_child_detach(c);
        let_go(c->arg);
    }
}

void cx_child_kill_all(cx_child *list, const char *reason, void (*let_go)(void *arg))
{
    for (cx_child *c = list; c; c = c->next) {
        let_go_of(c, let_go);
        cx_child_kill(c, reason);
    }
}

void cx_child_close_all(cx_child *list, void (*let_go)(void *arg))
{
    while (list) {
        /* closing frees a child in a later callback, not here */
        cx_child *next = list->next;
        let_go_of(list, let_go);
        cx_child_detach(list);
        close_handle((uv_handle_t *)&list->in);
        close_handle((uv_handle_t *)&list->out);
        close_handle((uv_handle_t *)&list->err);
        close_handle((uv_handle_t *)&list->proc);
        list = next;
    }
}
