/* tools.c - see tools.h; the tool handler API of council.h. */
#include "tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

#define TOOL_OUTPUT_CAP (1u << 20)

typedef struct tool_handler {
    struct tool_handler *next;
    char *name;
    council_tool_ops ops;
    void *arg;
} tool_handler;

typedef struct tools_state {
    tool_handler *handlers;
    cx_child *procs;           /* programs not yet closed (child.h) */
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
    cx_child *proc;            /* an exec tool's program while it is ours */
};

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

static void proc_detach(council_tool_call *tc);

/* Give the answer to the member call: once, never inside tools_start. */
static void deliver(council_tool_call *tc)
{
    if (tc->delivered || tc->abandoned || !tc->answered || tc->in_start)
        return;
    tc->delivered = true;
    cx_timer_stop(&tc->timer);
    proc_detach(tc);
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
        cx_child_kill(tc->proc, NULL);
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
        cx_child_kill(tc->proc, NULL);
        proc_detach(tc);
    }
    council_tool_call_unref(tc);
}

/* ------------------------------------------------------------ programs */

/* An exec tool's program holds a reference on its tool call until its end
 * is answered or the call lets go of it (tc->proc NULL). */
static void let_go(void *arg)
{
    council_tool_call *tc = arg;
    tc->proc = NULL;
    council_tool_call_unref(tc);
}

static void proc_detach(council_tool_call *tc)
{
    if (!tc->proc)
        return;
    cx_child_detach(tc->proc);
    let_go(tc);
}

static void proc_done(void *arg, const cx_child_end *e)
{
    council_tool_call *tc = arg;
    tc->proc = NULL;
    if (e->over_cap) {
        answer(tc, 0, "tool output over 1 MiB", 22);
    } else if (e->term_signal || e->exit_status != 0) {
        char msg[CX_CHILD_ERR_TAIL + 64];
        size_t n = e->err_len;
        int w = e->term_signal
                    ? snprintf(msg, sizeof msg, "killed by signal %d", e->term_signal)
                    : snprintf(msg, sizeof msg, "exit status %lld", (long long)e->exit_status);
        if (n)
            snprintf(msg + w, sizeof msg - (size_t)w, ": %.*s", (int)n, e->err_tail);
        answer(tc, 0, msg, strlen(msg));
    } else {
        answer(tc, 1, e->out, e->out_len);
    }
    council_tool_call_unref(tc); /* the program's */
}

/* COUNCIL_OK (started or answered), COUNCIL_EPROVIDER (a program the
 * context does not allow: nothing started), COUNCIL_ENOMEM. */
static int exec_start(council_tool_call *tc, json_t *argv)
{
    tools_state *ts = state(tc->ctx, true);
    size_t argc = json_array_size(argv);
    char **av = calloc(argc + 1, sizeof *av);
    char *real = NULL;
    int rc = ts && av ? cx_exec_resolve(tc->ctx, json_string_value(json_array_get(argv, 0)),
                                        NULL, &real)
                      : COUNCIL_ENOMEM;
    if (rc != COUNCIL_OK) {
        free(av);
        return rc;
    }
    for (size_t i = 0; i < argc; i++)
        av[i] = (char *)json_string_value(json_array_get(argv, i));
    cx_child_opts o = {.argv = av, .file = real, .input = tc->args,
                       .input_len = tc->args_len, .out_cap = TOOL_OUTPUT_CAP,
                       .kill_over_cap = false, .done = proc_done, .arg = tc};
    int uv_err = 0;
    rc = cx_child_spawn(tc->ctx, &ts->procs, &o, &tc->proc, &uv_err);
    free(av);
    free(real);
    if (rc == COUNCIL_EIO) {
        char msg[160];
        snprintf(msg, sizeof msg, "cannot run the tool's program: %s", uv_strerror(uv_err));
        answer(tc, 0, msg, strlen(msg));
        return COUNCIL_OK;
    }
    if (rc == COUNCIL_OK)
        council_tool_call_ref(tc); /* the program's */
    return rc;
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
    cx_child_kill_all(ts->procs, NULL, NULL);
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
    return ctx->tools ? cx_child_unreaped(ctx->tools->procs) : 0;
}

void tools_close_all(council_ctx *ctx)
{
    tools_state *ts = ctx->tools;
    if (!ts)
        return;
    cx_child_close_all(ts->procs, let_go);
    /* the close callbacks free them: the loop runs once more in ctx free;
     * the state goes once they are all gone */
}

void tools_free_state(council_ctx *ctx)
{
    free(ctx->tools);
    ctx->tools = NULL;
}
