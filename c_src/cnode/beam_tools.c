/* beam_tools.c - see beam_tools.h. */
#include "beam_tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen_server.h"
#include "log.h"

/* One tool call waiting for its reply. */
typedef struct tool_entry {
    struct tool_entry *next;   /* bucket chain, or a detached list */
    uint64_t id;               /* council_tool_call_id: the ToolCallId sent */
    council_tool_call *tc;     /* one reference */
    cn_run_proc *rp;           /* the run whose process gets the reply */
} tool_entry;

/* Waiting tool calls by id: chained buckets, a power of two of them,
 * grown when there are more entries than buckets. */
struct cn_beam_tools {
    tool_entry **buckets;
    size_t nbuckets;           /* 0 until the first entry */
    size_t count;
};

/* ------------------------------------------------------------ the table */

static size_t slot(const struct cn_beam_tools *t, uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (t->nbuckets - 1);
}

static int table_grow(struct cn_beam_tools *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 16;
    tool_entry **nb = calloc(n, sizeof *nb);
    if (!nb)
        return -1;
    struct cn_beam_tools grown = {nb, n, t->count};
    for (size_t i = 0; i < t->nbuckets; i++) {
        tool_entry *e = t->buckets[i];
        while (e) {
            tool_entry *next = e->next;
            size_t s = slot(&grown, e->id);
            e->next = nb[s];
            nb[s] = e;
            e = next;
        }
    }
    free(t->buckets);
    *t = grown;
    return 0;
}

/* Adds e (its id set). 0 or -1 (ENOMEM: e not added). */
static int table_add(struct cn_beam_tools *t, tool_entry *e)
{
    if (t->count >= t->nbuckets && table_grow(t) != 0 && t->nbuckets == 0)
        return -1; /* a full table that cannot grow still takes entries */
    size_t s = slot(t, e->id);
    e->next = t->buckets[s];
    t->buckets[s] = e;
    t->count++;
    return 0;
}

/* Removes and returns the entry of id, or NULL. */
static tool_entry *table_take(struct cn_beam_tools *t, uint64_t id)
{
    if (!t || t->count == 0)
        return NULL;
    for (tool_entry **pp = &t->buckets[slot(t, id)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            tool_entry *e = *pp;
            *pp = e->next;
            e->next = NULL;
            t->count--;
            return e;
        }
    }
    return NULL;
}

static tool_entry *table_find(const struct cn_beam_tools *t, uint64_t id)
{
    if (!t || t->count == 0)
        return NULL;
    for (tool_entry *e = t->buckets[slot(t, id)]; e; e = e->next)
        if (e->id == id)
            return e;
    return NULL;
}

/* Removes every entry of rp (every entry when rp is NULL) and returns
 * them as a list linked through next. */
static tool_entry *table_take_run(struct cn_beam_tools *t, const cn_run_proc *rp)
{
    tool_entry *out = NULL;
    if (!t || t->count == 0)
        return NULL;
    for (size_t i = 0; i < t->nbuckets; i++) {
        tool_entry **pp = &t->buckets[i];
        while (*pp) {
            tool_entry *e = *pp;
            if (rp && e->rp != rp) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            t->count--;
            e->next = out;
            out = e;
        }
    }
    return out;
}

static void entry_free(tool_entry *e)
{
    council_tool_call_unref(e->tc);
    free(e);
}

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
    cn_bridge *b = arg;
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
    if (!b->tools)
        return COUNCIL_ESTATE;

    tool_entry *e = calloc(1, sizeof *e);
    ei_x_buff x;
    if (!e || ei_x_new(&x) != 0) {
        free(e);
        return COUNCIL_ENOMEM;
    }
    int rc = COUNCIL_ENOMEM;
    if (encode_call(b, &x, rp, tc, council_call_member_id(call)) == 0) {
        e->id = council_tool_call_id(tc);
        e->rp = rp;
        e->tc = council_tool_call_ref(tc);
        if (table_add(b->tools, e) != 0) {
            entry_free(e);
        } else {
            rc = 0;
            if (cn_node_send(b->node, server, cn_x_slice(&x)) != 0) {
                entry_free(table_take(b->tools, e->id));
                answer_error(tc, "beam tool: member server not reachable");
            }
        }
        e = NULL;
    }
    free(e);
    ei_x_free(&x);
    return rc;
}

static void bt_cancel(council_tool_call *tc, void *arg)
{
    cn_bridge *b = arg;
    tool_entry *e = table_find(b->tools, council_tool_call_id(tc));
    if (e && e->tc == tc)
        entry_free(table_take(b->tools, e->id));
}

static void bt_release(void *arg)
{
    cn_bridge *b = arg;
    struct cn_beam_tools *t = b->tools;
    if (!t)
        return;
    tool_entry *e = table_take_run(t, NULL);
    while (e) {
        tool_entry *next = e->next;
        entry_free(e);
        e = next;
    }
    free(t->buckets);
    free(t);
    b->tools = NULL;
}

int cn_beam_tools_register(cn_bridge *b)
{
    if (b->tools)
        return COUNCIL_EEXIST;
    b->tools = calloc(1, sizeof *b->tools);
    if (!b->tools)
        return COUNCIL_ENOMEM;
    council_tool_ops ops = {.start = bt_start, .cancel = bt_cancel, .release = bt_release};
    int rc = council_tool_register(b->ctx, "beam", &ops, b);
    if (rc != 0) {
        free(b->tools);
        b->tools = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------ replies */

int cn_beam_tools_handle_info(cn_bridge *b, cn_run_proc *rp, cn_slice msg)
{
    cn_slice el[3];
    if (cn_term_tuple(msg, el, 3) != 3 || !cn_term_is_atom(el[0], "council_tool_reply"))
        return 0;
    uint64_t id;
    if (cn_term_u64(el[1], &id) != 0) {
        cn_log_debug("run process: tool reply with a bad id dropped");
        return 1;
    }
    tool_entry *e = table_find(b->tools, id);
    if (!e || e->rp != rp)
        return 1; /* late (abandoned call) or not this run's: dropped */
    e = table_take(b->tools, id);

    council_tool_call *tc = e->tc;
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
    entry_free(e);
    return 1;
}

void cn_beam_tools_server_down(cn_bridge *b, cn_run_proc *rp, cn_slice reason)
{
    tool_entry *e = table_take_run(b->tools, rp);
    if (!e)
        return;
    char why[512], msg[600];
    cn_term_text(reason, why, sizeof why);
    snprintf(msg, sizeof msg, "beam tool: member server down: %s", why);
    /* All of them are out of the table first: an answer may make the core
     * abandon others (their cancel then finds nothing to drop). */
    while (e) {
        tool_entry *next = e->next;
        answer_error(e->tc, msg);
        entry_free(e);
        e = next;
    }
}

void cn_beam_tools_run_gone(cn_bridge *b, cn_run_proc *rp)
{
    tool_entry *e = table_take_run(b->tools, rp);
    while (e) {
        tool_entry *next = e->next;
        entry_free(e);
        e = next;
    }
}

size_t cn_beam_tools_pending(const cn_bridge *b)
{
    return b->tools ? b->tools->count : 0;
}
