/* beam_tools.c - see beam_tools.h. */
#include "beam_tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen_server.h"
#include "log.h"
#include "pending.h"
#include "run_proc.h"

/* The module's state: the tool handler's and the hook's arg. */
typedef struct beam_tools {
    cn_bridge *b;
    cn_pending *calls; /* tool calls waiting, by tool call id, one reference each */
} beam_tools;

static const cn_run_hook hook;

/* ------------------------------------------------------------ handler */

static int answer_error(council_tool_call *tc, const char *msg)
{
    council_tool_call_return(tc, 0, msg, strlen(msg));
    return 0;
}

/* {council_tool_call, RunPid, ToolCallId, MemberId, Name, Arguments} */
static int encode_call(cn_bridge *b, ei_x_buff *x, cn_run_proc *rp, council_tool_call *tc,
                       const char *member_id)
{
    size_t alen = 0;
    const char *args = council_tool_call_arguments(tc, &alen);
    const char *name = council_tool_call_name(tc);
    cn_pid me;
    cn_node_self(b->node, cn_run_proc_proc(rp), &me);
    return ei_x_encode_tuple_header(x, 6) < 0 ||
           ei_x_encode_atom(x, "council_tool_call") < 0 ||
           cn_node_encode_pid(b->node, x, &me) != 0 ||
           ei_x_encode_ulonglong(x, council_tool_call_id(tc)) < 0 ||
           ei_x_encode_binary(x, member_id, (long)strlen(member_id)) < 0 ||
           ei_x_encode_binary(x, name, (long)strlen(name)) < 0 ||
           ei_x_encode_binary(x, args ? args : "", (long)(args ? alen : 0)) < 0
               ? -1
               : 0;
}

static int bt_start(council_tool_call *tc, void *arg)
{
    beam_tools *bt = arg;
    cn_bridge *b = bt->b;
    council_call *call = council_tool_call_member_call(tc);
    cn_run_proc *rp = call ? cn_run_proc_from_run(council_call_run(call)) : NULL;
    if (!rp || !cn_run_proc_proc(rp))
        return answer_error(tc, "beam tool: the run has no process on this node (Elixir "
                                "function tools are served for runs the library starts, "
                                "not inside a sub-council)");
    const cn_pid *server = cn_run_proc_member_server(rp);
    if (!server)
        return answer_error(tc, "beam tool: this run has no member server (none was given "
                                "at start, or it went down)");

    ei_x_buff x;
    if (ei_x_new(&x) != 0)
        return COUNCIL_ENOMEM;
    int rc = COUNCIL_ENOMEM;
    uint64_t id = council_tool_call_id(tc);
    if (encode_call(b, &x, rp, tc, council_call_member_id(call)) == 0 &&
        cn_pending_add(bt->calls, id, tc, rp) == 0) {
        council_tool_call_ref(tc); /* the table's */
        rc = 0;
        if (cn_node_send(b->node, server, cn_x_slice(&x)) != 0) {
            council_tool_call_unref(cn_pending_take(bt->calls, id));
            answer_error(tc, "beam tool: member server not reachable");
        }
    }
    ei_x_free(&x);
    return rc;
}

static void bt_cancel(council_tool_call *tc, void *arg)
{
    beam_tools *bt = arg;
    cn_pending_entry *e = cn_pending_find(bt->calls, council_tool_call_id(tc));
    if (e && e->item == tc)
        council_tool_call_unref(cn_pending_take(bt->calls, e->id));
}

/* Drops the calls of a detached list. */
static void drop(cn_pending_entry *e)
{
    while (e) {
        council_tool_call_unref(e->item);
        e = cn_pending_entry_free(e);
    }
}

static void bt_release(void *arg)
{
    beam_tools *bt = arg;
    drop(cn_pending_detach(bt->calls, NULL));
    cn_pending_free(bt->calls);
    cn_bridge_hook_remove(bt->b, &hook);
    free(bt);
}

int cn_beam_tools_register(cn_bridge *b)
{
    if (cn_bridge_hook_arg(b, &hook))
        return COUNCIL_EEXIST;
    beam_tools *bt = calloc(1, sizeof *bt);
    if (!bt || !(bt->calls = cn_pending_new())) {
        free(bt);
        return COUNCIL_ENOMEM;
    }
    bt->b = b;
    int rc = cn_bridge_hook_add(b, &hook, bt);
    council_tool_ops ops = {.start = bt_start, .cancel = bt_cancel, .release = bt_release};
    if (rc == 0 && (rc = council_tool_register(b->ctx, "beam", &ops, bt)) != 0)
        cn_bridge_hook_remove(b, &hook);
    if (rc != 0) {
        cn_pending_free(bt->calls);
        free(bt);
    }
    return rc;
}

size_t cn_beam_tools_pending(const cn_bridge *b)
{
    const beam_tools *bt = cn_bridge_hook_arg(b, &hook);
    return bt ? cn_pending_count(bt->calls) : 0;
}

/* ------------------------------------------------------------ the hook */

/* {council_tool_reply, Id, Result} */
static int on_info(cn_bridge *b, void *arg, cn_run_proc *rp, cn_slice msg)
{
    beam_tools *bt = arg;
    cn_slice el[3];
    if (cn_term_tuple(msg, el, 3) != 3 || !cn_term_is_atom(el[0], "council_tool_reply"))
        return 0;
    uint64_t id;
    if (cn_term_u64(el[1], &id) != 0) {
        cn_log_debug("run process: tool reply with a bad id dropped");
        return 1;
    }
    cn_pending_entry *e = cn_pending_find(bt->calls, id);
    if (!e || e->owner != rp)
        return 1; /* late (abandoned call) or not this run's: dropped */
    council_tool_call *tc = cn_pending_take(bt->calls, id);
    cn_slice res[2];
    const char *p;
    size_t len;
    int ar = cn_term_tuple(el[2], res, 2);
    if (ar == 2 && cn_term_is_atom(res[0], "ok") && cn_term_binary(res[1], &p, &len) == 0) {
        council_tool_call_return(tc, 1, p, len);
    } else if (ar == 2 && cn_term_is_atom(res[0], "error")) {
        if (cn_term_binary(res[1], &p, &len) == 0) {
            council_tool_call_return(tc, 0, p, len);
        } else {
            char why[512];
            cn_term_text(res[1], why, sizeof why);
            answer_error(tc, why);
        }
    } else {
        answer_error(tc, "beam tool: malformed reply from the member server");
    }
    council_tool_call_unref(tc);
    return 1;
}

/* Every tool call of rp still waiting gets an error result. All of them
 * are out of the table first: an answer may make the core abandon others
 * (their cancel then finds nothing to drop). */
static void on_server_down(cn_bridge *b, void *arg, cn_run_proc *rp, cn_slice reason)
{
    beam_tools *bt = arg;
    cn_pending_entry *e = cn_pending_detach(bt->calls, rp);
    if (!e)
        return;
    char why[512], msg[600];
    cn_term_text(reason, why, sizeof why);
    snprintf(msg, sizeof msg, "beam tool: member server down: %s", why);
    for (cn_pending_entry *i = e; i; i = i->next)
        answer_error(i->item, msg);
    drop(e);
}

/* rp's process ends: forget its tool calls still in the table (normally
 * none: cancelling the run abandons them first). */
static void on_gone(cn_bridge *b, void *arg, cn_run_proc *rp)
{
    beam_tools *bt = arg;
    drop(cn_pending_detach(bt->calls, rp));
}

static const cn_run_hook hook = {on_info, on_server_down, on_gone};
