/* beam_tools.c - see beam_tools.h. */
#include "beam_tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen_server.h"
#include "log.h"
#include "pending.h"
#include "run_proc.h"

/* The module's state (the tool handler's and the hook's arg) is a
 * cn_hooked: its table holds the tool calls waiting, by tool call id, one
 * reference each. */
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
    cn_hooked *bt = arg;
    cn_bridge *b = bt->b;
    council_call *call = council_tool_call_member_call(tc);
    cn_run_proc *rp;
    const cn_pid *server = cn_run_proc_served(bt, call ? council_call_run(call) : NULL, tc, &rp);
    if (!server)
        return 0;
    ei_x_buff x;
    if (ei_x_new(&x) != 0)
        return COUNCIL_ENOMEM;
    int rc = COUNCIL_ENOMEM;
    if (encode_call(b, &x, rp, tc, council_call_member_id(call)) == 0)
        rc = cn_hooked_send(bt, rp, server, council_tool_call_id(tc), tc, &x);
    ei_x_free(&x);
    return rc;
}

static void bt_cancel(council_tool_call *tc, void *arg)
{
    cn_hooked *bt = arg;
    cn_pending_entry *e = cn_pending_find(bt->calls, council_tool_call_id(tc));
    if (e && e->item == tc)
        council_tool_call_unref(cn_pending_take(bt->calls, e->id));
}

static void ref_tool_call(void *tc)
{
    council_tool_call_ref(tc);
}

static void unref_tool_call(void *tc)
{
    council_tool_call_unref(tc);
}

static void fail_tool_call(void *tc, const char *msg)
{
    answer_error(tc, msg);
}

/* A member server going down gives its run's waiting tool calls an error
 * result; all of them are out of the table first: an answer may make the
 * core abandon others (their cancel then finds nothing to drop). */
static const cn_hooked_kind kind = {CN_BEAM_TOOL, ref_tool_call, unref_tool_call, fail_tool_call};

int cn_beam_tools_register(cn_bridge *b)
{
    int rc;
    cn_hooked *bt = cn_hooked_new(b, &hook, &kind, &rc);
    council_tool_ops ops = {.start = bt_start, .cancel = bt_cancel, .release = cn_hooked_release};
    if (bt && (rc = council_tool_register(b->ctx, "beam", &ops, bt)) != 0)
        cn_hooked_free(bt);
    return rc;
}

size_t cn_beam_tools_pending(const cn_bridge *b)
{
    return cn_hooked_count(b, &hook);
}

/* ------------------------------------------------------------ the hook */

/* {council_tool_reply, Id, Result} */
static int on_info(cn_bridge *b, void *arg, cn_run_proc *rp, cn_slice msg)
{
    cn_hooked *bt = arg;
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
        answer_error(tc, cn_beam_failure_text(CN_BEAM_TOOL, CN_BEAM_MALFORMED));
    }
    council_tool_call_unref(tc);
    return 1;
}

static const cn_run_hook hook = {on_info, cn_hooked_server_down, cn_hooked_gone};
