/* provider_exec.c - the built-in provider that runs a program per call.
 *
 * argv comes from the member's options.argv (options.cwd optional). The
 * request JSON (plus a newline) is written to the child's stdin, which is
 * then closed; stdout is streamed as member_token chunks and is the answer
 * once the child exits with status 0. A non-zero status or a signal is a
 * member error carrying the tail of stderr. Timeout, output over the cap
 * and cancel kill the child with SIGKILL; libuv reaps every child, so none
 * is left a zombie. A child outlives its call only until it is reaped.
 * The program itself is run by child.c (as exec tools' are).
 * Not for: retries or timeouts themselves (call.c arms the timer).
 */
#include "child.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The child of a call in flight is call->prov_state; it holds a reference
 * on the call until the end is delivered or the call lets go of it. */
static void let_go(void *arg)
{
    council_call *call = arg;
    call->prov_state = NULL;
    council_call_unref(call);
}

static void on_output(void *arg, const char *p, size_t n)
{
    council_call_token(arg, p, n);
}

/* The outcome, once the child has exited and its output is read. */
static void on_done(void *arg, const cx_child_end *e)
{
    council_call *call = arg;
    call->prov_state = NULL;
    char msg[CX_CHILD_ERR_TAIL + 96];
    size_t tail_len = e->err_len;
    const char *tail = e->err_tail;
    if (e->kill_reason) {
        council_call_fail(call, e->kill_reason);
    } else if (e->term_signal) {
        snprintf(msg, sizeof msg, "killed by signal %d%s%.*s", e->term_signal,
                 tail_len ? ": " : "", (int)tail_len, tail);
        council_call_fail(call, msg);
    } else if (e->exit_status != 0) {
        snprintf(msg, sizeof msg, "exit status %lld%s%.*s", (long long)e->exit_status,
                 tail_len ? ": " : "", (int)tail_len, tail);
        council_call_fail(call, msg);
    } else {
        council_call_complete(call, e->out, e->out_len);
    }
    council_call_unref(call); /* the child's */
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
    size_t rlen;
    const char *req = council_call_request(call, &rlen);
    char *input = req ? malloc(rlen + 1) : NULL;
    if (!argv || !input) {
        free(argv);
        free(input);
        return COUNCIL_ENOMEM;
    }
    memcpy(input, req, rlen);
    input[rlen] = '\n';
    for (size_t i = 0; i < argc; i++)
        argv[i] = (char *)json_string_value(json_array_get(jargv, i));
    json_t *cwd = json_object_get(opts, "cwd");
    const char *dir = json_is_string(cwd) ? json_string_value(cwd) : NULL;
    char *real = NULL;
    int rc = cx_exec_resolve(ctx, argv[0], dir, &real);
    if (rc != COUNCIL_OK) {
        free(argv);
        free(input);
        if (rc == COUNCIL_ENOMEM)
            return COUNCIL_ENOMEM;
        council_call_fail(call, "exec: program not allowed");
        return 0;
    }
    cx_child_opts o = {.argv = argv, .file = real, /* the program checked, not a name */
                       .cwd = dir, .input = input, .input_len = rlen + 1,
                       .out_cap = ctx->cfg.output_cap, .kill_over_cap = true,
                       .output = on_output, .done = on_done, .arg = call};
    cx_child *c = NULL;
    int uv_err = 0;
    rc = cx_child_spawn(ctx, &ctx->exec_children, &o, &c, &uv_err);
    if (rc == COUNCIL_EIO) {
        char msg[200];
        snprintf(msg, sizeof msg, "exec: cannot start %.100s: %s", argv[0],
                 uv_strerror(uv_err));
        council_call_fail(call, msg);
        rc = 0;
    } else if (rc == COUNCIL_OK) {
        call->prov_state = c;
        council_call_ref(call); /* the child's */
    }
    free(argv);
    free(real);
    free(input);
    return rc;
}

static void exec_cancel(council_call *call, void *arg)
{
    (void)arg;
    cx_child *c = call->prov_state;
    if (!c)
        return;
    cx_child_detach(c);
    let_go(call);
    cx_child_kill(c, "cancelled");
}

void provider_exec_ops(council_provider_ops *ops)
{
    memset(ops, 0, sizeof *ops);
    ops->start = exec_start;
    ops->cancel = exec_cancel;
}

void provider_exec_shutdown(council_ctx *ctx)
{
    cx_child_kill_all(ctx->exec_children, "shutdown", let_go);
}

size_t provider_exec_unreaped(council_ctx *ctx)
{
    return cx_child_unreaped(ctx->exec_children);
}

void provider_exec_close_all(council_ctx *ctx)
{
    cx_child_close_all(ctx->exec_children, let_go);
}
