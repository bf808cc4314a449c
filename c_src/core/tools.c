/* tools.c - see tools.h; the tool handler API of council.h. */
#include "tools.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOL_OUTPUT_CAP (1u << 20)
#define TOOL_ERR_TAIL 512

typedef struct tool_handler {
    struct tool_handler *next;
    char *name;
    council_tool_ops ops;
    void *arg;
} tool_handler;

struct tool_proc;

typedef struct tools_state {
    tool_handler *handlers;
    struct tool_proc *procs;   /* programs not yet closed */
    uint64_t next_id;
} tools_state;

struct council_tool_call {
    int refs;
    council_ctx *ctx;
    council_call *call;        /* ref until answered or abandoned */
    char *name;
    char *args;
    size_t args_len;
    uint64_t id;
    uint64_t timeout_ms;
    tool_handler *h;           /* NULL: exec, or no handler (answered at once) */
    tools_done_fn done;
    void *done_arg;
    cx_timer timer;            /* the timeout, or the deferred answer */
    bool in_start, answered, abandoned, delivered;
    int ok;
    char *result;
    size_t result_len;
    struct tool_proc *proc;
};

/* An exec tool's program. It outlives its call until it is reaped. */
typedef struct tool_proc {
    struct tool_proc *prev, *next;
    tools_state *ts;
    council_tool_call *tc;     /* ref; NULL once detached */
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_write_t wreq;
    int open_handles;
    bool exited, out_eof, err_eof, spawned;
    int64_t status;
    int signal;
    char *out_buf;
    size_t out_len, out_cap;
    bool over_cap;
    char errtail[TOOL_ERR_TAIL];
    size_t err_len;
} tool_proc;

static tools_state *state(council_ctx *ctx, bool make)
{
    if (!ctx->tools && make)
        ctx->tools = calloc(1, sizeof(tools_state));
    return ctx->tools;
}

/* ------------------------------------------------------------ handlers */

int council_tool_register(council_ctx *ctx, const char *name, const council_tool_ops *ops,
                          void *arg)
{
    if (!ctx || !name || !*name || !ops || !ops->start)
        return COUNCIL_EINVAL;
    tools_state *ts = state(ctx, true);
    if (!ts)
        return COUNCIL_ENOMEM;
    for (tool_handler *h = ts->handlers; h; h = h->next)
        if (strcmp(h->name, name) == 0)
            return COUNCIL_EEXIST;
    tool_handler *h = calloc(1, sizeof *h);
    if (!h || !(h->name = cx_strdup(name))) {
        free(h);
        return COUNCIL_ENOMEM;
    }
    h->ops = *ops;
    h->arg = arg;
    h->next = ts->handlers;
    ts->handlers = h;
    return COUNCIL_OK;
}

static tool_handler *handler_find(tools_state *ts, const char *name)
{
    for (tool_handler *h = ts ? ts->handlers : NULL; h; h = h->next)
        if (strcmp(h->name, name) == 0)
            return h;
    return NULL;
}

/* ------------------------------------------------------------ tool calls */

council_tool_call *council_tool_call_ref(council_tool_call *tc)
{
    if (tc)
        tc->refs++;
    return tc;
}

void council_tool_call_unref(council_tool_call *tc)
{
    if (!tc || --tc->refs > 0)
        return;
    cx_timer_fini(&tc->timer);
    council_call_unref(tc->call);
    free(tc->name);
    free(tc->args);
    free(tc->result);
    free(tc);
}

const char *council_tool_call_name(const council_tool_call *tc) { return tc->name; }
uint64_t council_tool_call_id(const council_tool_call *tc) { return tc->id; }

const char *council_tool_call_arguments(const council_tool_call *tc, size_t *len)
{
    if (len)
        *len = tc->args_len;
    return tc->args;
}

council_call *council_tool_call_member_call(const council_tool_call *tc)
{
    return council_call_active(tc->call) ? tc->call : NULL;
}

static void proc_detach(tool_proc *p);

/* Give the answer to the member call: once, never inside tools_start. */
static void deliver(council_tool_call *tc)
{
    if (tc->delivered || tc->abandoned || !tc->answered || tc->in_start)
        return;
    tc->delivered = true;
    cx_timer_stop(&tc->timer);
    if (tc->proc)
        proc_detach(tc->proc);
    tc->done(tc->done_arg, tc->ok, tc->result, tc->result_len);
    council_tool_call_unref(tc); /* the member call's reference */
}

static int answer(council_tool_call *tc, int ok, const char *text, size_t len)
{
    if (tc->answered || tc->abandoned)
        return COUNCIL_ESTATE;
    tc->result = cx_memdup(text ? text : "", text ? len : 0);
    if (!tc->result) { /* still an answer: the model hears of the failure */
        ok = 0;
        tc->result = cx_strdup("");
        len = 0;
    }
    tc->answered = true;
    tc->ok = ok != 0;
    tc->result_len = tc->result ? len : 0;
    if (tc->in_start)
        cx_timer_start(&tc->timer, 0); /* delivered once tools_start returned */
    else
        deliver(tc);
    return COUNCIL_OK;
}

int council_tool_call_return(council_tool_call *tc, int ok, const char *text, size_t len)
{
    if (!tc || (!text && len))
        return COUNCIL_EINVAL;
    return answer(tc, ok, text, len);
}

static void on_timer(void *arg)
{
    council_tool_call *tc = arg;
    if (tc->answered) {
        deliver(tc);
        return;
    }
    /* the timeout: the handler or program is told, the model gets an error */
    council_tool_call_ref(tc);
    if (tc->h && tc->h->ops.cancel)
        tc->h->ops.cancel(tc, tc->h->arg);
    char msg[96];
    snprintf(msg, sizeof msg, "tool %s timed out after %llu ms", tc->name,
             (unsigned long long)tc->timeout_ms);
    if (tc->proc)
        uv_process_kill(&tc->proc->proc, SIGKILL);
    answer(tc, 0, msg, strlen(msg));
    council_tool_call_unref(tc);
}

void tools_abandon(council_tool_call *tc)
{
    if (!tc || tc->abandoned || tc->delivered)
        return;
    tc->abandoned = true;
    cx_timer_stop(&tc->timer);
    if (!tc->answered && tc->h && tc->h->ops.cancel)
        tc->h->ops.cancel(tc, tc->h->arg);
    if (tc->proc) {
        if (tc->proc->spawned && !tc->proc->exited)
            uv_process_kill(&tc->proc->proc, SIGKILL);
        proc_detach(tc->proc);
    }
    council_tool_call_unref(tc);
}

/* ------------------------------------------------------------ programs */

static void proc_free(tool_proc *p)
{
    tools_state *ts = p->ts;
    if (p->prev)
        p->prev->next = p->next;
    else
        ts->procs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p->out_buf);
    free(p);
}

static void proc_handle_closed(uv_handle_t *h)
{
    tool_proc *p = h->data;
    if (--p->open_handles == 0)
        proc_free(p);
}

static void proc_close(tool_proc *p, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, proc_handle_closed);
}

static void proc_detach(tool_proc *p)
{
    council_tool_call *tc = p->tc;
    if (!tc)
        return;
    p->tc = NULL;
    tc->proc = NULL;
    council_tool_call_unref(tc);
}

static void proc_maybe_done(tool_proc *p)
{
    if (!p->exited || !p->out_eof || !p->err_eof)
        return;
    council_tool_call *tc = p->tc;
    if (!tc)
        return;
    council_tool_call_ref(tc);
    if (p->over_cap) {
        answer(tc, 0, "tool output over 1 MiB", 22);
    } else if (p->signal || p->status != 0) {
        char msg[TOOL_ERR_TAIL + 64];
        size_t n = p->err_len;
        int w = p->signal ? snprintf(msg, sizeof msg, "killed by signal %d", p->signal)
                          : snprintf(msg, sizeof msg, "exit status %lld", (long long)p->status);
        if (n)
            snprintf(msg + w, sizeof msg - (size_t)w, ": %.*s", (int)n, p->errtail);
        answer(tc, 0, msg, strlen(msg));
    } else {
        answer(tc, 1, p->out_buf ? p->out_buf : "", p->out_len);
    }
    council_tool_call_unref(tc);
}

static void on_exit_cb(uv_process_t *pr, int64_t status, int sig)
{
    tool_proc *p = pr->data;
    p->exited = true;
    p->status = status;
    p->signal = sig;
    proc_close(p, (uv_handle_t *)&p->proc);
    proc_maybe_done(p);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[65536]; /* loop thread only; consumed before the next read */
    (void)h;
    (void)suggested;
    buf->base = slab;
    buf->len = sizeof slab;
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    tool_proc *p = s->data;
    if (n < 0) {
        p->out_eof = true;
        proc_close(p, (uv_handle_t *)s);
        proc_maybe_done(p);
        return;
    }
    size_t len = (size_t)n;
    if (p->over_cap || p->out_len + len > TOOL_OUTPUT_CAP) {
        p->over_cap = true;
        return;
    }
    if (p->out_len + len + 1 > p->out_cap) {
        size_t nc = p->out_cap ? p->out_cap : 4096;
        while (nc < p->out_len + len + 1)
            nc *= 2;
        char *nb = realloc(p->out_buf, nc);
        if (!nb) {
            p->over_cap = true;
            return;
        }
        p->out_buf = nb;
        p->out_cap = nc;
    }
    memcpy(p->out_buf + p->out_len, buf->base, len);
    p->out_len += len;
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    tool_proc *p = s->data;
    if (n < 0) {
        p->err_eof = true;
        proc_close(p, (uv_handle_t *)s);
        proc_maybe_done(p);
        return;
    }
    cx_tail_keep(p->errtail, sizeof p->errtail, &p->err_len, buf->base, (size_t)n);
}

static void on_written(uv_write_t *w, int status)
{
    tool_proc *p = w->data;
    (void)status;
    proc_close(p, (uv_handle_t *)&p->in);
}

/* COUNCIL_OK (started or answered), COUNCIL_EPROVIDER (a program the
 * context does not allow: nothing started), COUNCIL_ENOMEM. */
static int exec_start(council_tool_call *tc, json_t *argv)
{
    tools_state *ts = state(tc->ctx, true);
    size_t argc = json_array_size(argv);
    char **av = calloc(argc + 1, sizeof *av);
    tool_proc *p = calloc(1, sizeof *p);
    char *real = NULL;
    int rc = ts && av && p ? cx_exec_resolve(tc->ctx, json_string_value(json_array_get(argv, 0)),
                                             NULL, &real)
                           : COUNCIL_ENOMEM;
    if (rc != COUNCIL_OK) {
        free(av);
        free(p);
        return rc;
    }
    for (size_t i = 0; i < argc; i++)
        av[i] = (char *)json_string_value(json_array_get(argv, i));
    uv_loop_t *loop = &tc->ctx->loop;
    p->ts = ts;
    uv_pipe_init(loop, &p->in, 0);
    uv_pipe_init(loop, &p->out, 0);
    uv_pipe_init(loop, &p->err, 0);
    p->in.data = p->out.data = p->err.data = p->proc.data = p;
    p->open_handles = 4;
    uv_stdio_container_t io[3] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&p->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->err},
    };
    uv_process_options_t po = {.exit_cb = on_exit_cb, .file = real ? real : av[0], .args = av,
                               .stdio_count = 3, .stdio = io};
    p->next = ts->procs;
    if (ts->procs)
        ts->procs->prev = p;
    ts->procs = p;
    rc = uv_spawn(loop, &p->proc, &po);
    free(av);
    free(real);
    p->tc = council_tool_call_ref(tc);
    tc->proc = p;
    if (rc != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "cannot run the tool's program: %s", uv_strerror(rc));
        proc_detach(p);
        proc_close(p, (uv_handle_t *)&p->proc);
        proc_close(p, (uv_handle_t *)&p->in);
        proc_close(p, (uv_handle_t *)&p->out);
        proc_close(p, (uv_handle_t *)&p->err);
        answer(tc, 0, msg, strlen(msg));
        return COUNCIL_OK;
    }
    p->spawned = true;
    uv_read_start((uv_stream_t *)&p->out, on_alloc, on_out);
    uv_read_start((uv_stream_t *)&p->err, on_alloc, on_err);
    uv_buf_t b = uv_buf_init(tc->args, (unsigned)tc->args_len);
    p->wreq.data = p;
    if (uv_write(&p->wreq, (uv_stream_t *)&p->in, &b, 1, on_written) != 0)
        proc_close(p, (uv_handle_t *)&p->in);
    return COUNCIL_OK;
}

/* ------------------------------------------------------------ start */

int tools_start(council_ctx *ctx, council_call *call, json_t *spec, const char *name,
                const char *args, size_t len, uint64_t timeout_ms, tools_done_fn done,
                void *arg, council_tool_call **out)
{
    tools_state *ts = state(ctx, true);
    council_tool_call *tc = calloc(1, sizeof *tc);
    if (!ts || !tc)
        goto nomem;
    tc->refs = 1;
    tc->ctx = ctx;
    tc->call = council_call_ref(call);
    tc->id = ++ts->next_id;
    tc->timeout_ms = timeout_ms ? timeout_ms : 30000;
    tc->done = done;
    tc->done_arg = arg;
    tc->name = cx_strdup(name);
    tc->args = cx_memdup(args, len);
    tc->args_len = len;
    if (!tc->name || !tc->args || cx_timer_init(ctx, &tc->timer, on_timer, tc) != COUNCIL_OK)
        goto nomem;
    *out = tc;
    /* held across the start: a handler may abandon the call (by cancelling
     * the run) before it returns */
    council_tool_call_ref(tc);
    tc->in_start = true;
    cx_timer_start(&tc->timer, tc->timeout_ms);
    json_t *argv = json_object_get(spec, "exec");
    char msg[160];
    if (!spec) {
        snprintf(msg, sizeof msg, "unknown tool \"%.64s\"", name);
        answer(tc, 0, msg, strlen(msg));
    } else if (argv) {
        int rc = exec_start(tc, argv);
        if (rc == COUNCIL_EPROVIDER)
            answer(tc, 0, "program not allowed", 19);
        else if (rc != COUNCIL_OK)
            answer(tc, 0, "out of memory", 13);
    } else {
        const char *hn = json_string_value(json_object_get(spec, "handler"));
        tc->h = handler_find(ts, hn ? hn : name);
        if (!tc->h) {
            snprintf(msg, sizeof msg, "no tool handler named \"%.64s\" is registered",
                     hn ? hn : name);
            answer(tc, 0, msg, strlen(msg));
        } else {
            int rc = tc->h->ops.start(tc, tc->h->arg);
            if (rc != 0 && !tc->answered && !tc->abandoned) {
                snprintf(msg, sizeof msg, "tool handler failed: %s", council_strerror(rc));
                answer(tc, 0, msg, strlen(msg));
            }
        }
    }
    tc->in_start = false;
    council_tool_call_unref(tc);
    return COUNCIL_OK;
nomem:
    if (tc) {
        tc->refs = 1;
        council_tool_call_unref(tc);
    }
    return COUNCIL_ENOMEM;
}

/* ------------------------------------------------------------ shutdown */

void tools_shutdown(council_ctx *ctx)
{
    tools_state *ts = ctx->tools;
    if (!ts)
        return;
    for (tool_proc *p = ts->procs; p; p = p->next)
        if (p->spawned && !p->exited)
            uv_process_kill(&p->proc, SIGKILL);
    tool_handler *h = ts->handlers;
    while (h) {
        tool_handler *n = h->next;
        if (h->ops.release)
            h->ops.release(h->arg);
        free(h->name);
        free(h);
        h = n;
    }
    ts->handlers = NULL;
}

size_t tools_unreaped(council_ctx *ctx)
{
    tools_state *ts = ctx->tools;
    size_t n = 0;
    for (tool_proc *p = ts ? ts->procs : NULL; p; p = p->next)
        if (p->spawned && !p->exited)
            n++;
    return n;
}

void tools_close_all(council_ctx *ctx)
{
    tools_state *ts = ctx->tools;
    if (!ts)
        return;
    for (tool_proc *p = ts->procs; p; p = p->next) {
        proc_detach(p);
        proc_close(p, (uv_handle_t *)&p->in);
        proc_close(p, (uv_handle_t *)&p->out);
        proc_close(p, (uv_handle_t *)&p->err);
        proc_close(p, (uv_handle_t *)&p->proc);
    }
    /* the close callbacks free them: the loop runs once more in ctx free;
     * the state goes once they are all gone */
}

void tools_free_state(council_ctx *ctx)
{
    free(ctx->tools);
    ctx->tools = NULL;
}
