/* beam_router.c - see beam_router.h. */
#include "beam_router.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "council_json.h"
#include "gen_server.h"
#include "log.h"
#include "pending.h"
#include "run_proc.h"
#include "term_json.h"

/* The module's state (the router's and the hook's arg) is a cn_hooked:
 * its table holds the routes waiting, by route id, one reference each. */
static const cn_run_hook hook;

#define MAX_CHOSEN 64 /* SPEC_MAX_MEMBERS: more ids than that cannot all be members */

static int fail(council_route *rt, const char *msg)
{
    council_route_fail(rt, msg);
    return 0;
}

/* {council_route_call, RunPid, RouteId, Request} */
static int encode_call(cn_bridge *b, ei_x_buff *x, cn_run_proc *rp, council_route *rt,
                       const json_t *req)
{
    cn_pid me;
    cn_node_self(b->node, cn_run_proc_proc(rp), &me);
    return ei_x_encode_tuple_header(x, 4) < 0 ||
           ei_x_encode_atom(x, "council_route_call") < 0 ||
           cn_node_encode_pid(b->node, x, &me) != 0 ||
           ei_x_encode_ulonglong(x, council_route_id(rt)) < 0 || term_json_encode(x, req) < 0
               ? -1
               : 0;
}

static int br_start(council_route *rt, void *arg)
{
    cn_hooked *br = arg;
    cn_bridge *b = br->b;
    cn_run_proc *rp;
    const cn_pid *server = cn_run_proc_served(br, council_route_run(rt), rt, &rp);
    if (!server)
        return 0;
    const json_t *req = council_route_request_object(rt);
    if (!req)
        return COUNCIL_ENOMEM;
    ei_x_buff x;
    int rc = COUNCIL_ENOMEM;
    if (ei_x_new(&x) == 0) {
        if (encode_call(b, &x, rp, rt, req) == 0)
            rc = cn_hooked_send(br, rp, server, council_route_id(rt), rt, &x);
        ei_x_free(&x);
    }
    return rc;
}

static void br_cancel(council_route *rt, void *arg)
{
    cn_hooked *br = arg;
    cn_pending_entry *e = cn_pending_find(br->calls, council_route_id(rt));
    if (e && e->item == rt)
        council_route_unref(cn_pending_take(br->calls, e->id));
}

static void ref_route(void *rt)
{
    council_route_ref(rt);
}

static void unref_route(void *rt)
{
    council_route_unref(rt);
}

static void fail_route(void *rt, const char *msg)
{
    council_route_fail(rt, msg);
}

static const cn_hooked_kind kind = {CN_BEAM_ROUTER, ref_route, unref_route, fail_route};

int cn_beam_router_register(cn_bridge *b)
{
    int rc;
    cn_hooked *br = cn_hooked_new(b, &hook, &kind, &rc);
    council_router_ops ops = {.start = br_start, .cancel = br_cancel,
                              .release = cn_hooked_release};
    if (br && (rc = council_router_register(b->ctx, "beam", &ops, br)) != 0)
        cn_hooked_free(br);
    return rc;
}

/* ------------------------------------------------------------ the hook */

/* {ok, [Bin]}: the ids selected (the route fails on an id that is not a
 * member of the round); anything else fails the route. */
static void answer(council_route *rt, cn_slice res)
{
    cn_slice el[2], ids[MAX_CHOSEN], tail;
    char why[512], msg[600];
    int ar = cn_term_tuple(res, el, 2);
    if (ar == 2 && cn_term_is_atom(el[0], "ok")) {
        long n = cn_term_list(el[1], ids, MAX_CHOSEN, &tail);
        if (n < 0 || (tail.len && cn_term_list(tail, NULL, 0, NULL) != 0)) {
            fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_NOT_IDS));
            return;
        }
        if (n > MAX_CHOSEN) {
            fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_TOO_MANY_IDS));
            return;
        }
        char *names[MAX_CHOSEN];
        size_t k = 0;
        bool ok = true;
        for (long i = 0; i < n && ok; i++) {
            const char *p;
            size_t len;
            ok = cn_term_binary(ids[i], &p, &len) == 0 && memchr(p, 0, len) == NULL &&
                 (names[k] = malloc(len + 1)) != NULL;
            if (ok) {
                memcpy(names[k], p, len);
                names[k++][len] = 0;
            }
        }
        if (ok)
            council_route_select(rt, (const char *const *)names, k);
        else
            fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_IDS_NOT_BINARIES));
        for (size_t i = 0; i < k; i++)
            free(names[i]);
    } else if (ar == 2 && cn_term_is_atom(el[0], "error")) {
        cn_term_text(el[1], why, sizeof why);
        snprintf(msg, sizeof msg, "%s", why);
        fail(rt, msg);
    } else {
        fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_MALFORMED));
    }
}

/* {council_route_reply, Id, Result} */
static int on_info(cn_bridge *b, void *arg, cn_run_proc *rp, cn_slice msg)
{
    (void)b;
    cn_hooked *br = arg;
    cn_slice el[3];
    if (cn_term_tuple(msg, el, 3) != 3 || !cn_term_is_atom(el[0], "council_route_reply"))
        return 0;
    uint64_t id;
    if (cn_term_u64(el[1], &id) != 0) {
        cn_log_debug("run process: route reply with a bad id dropped");
        return 1;
    }
    cn_pending_entry *e = cn_pending_find(br->calls, id);
    if (!e || e->owner != rp)
        return 1; /* late (abandoned route) or not this run's: dropped */
    council_route *rt = cn_pending_take(br->calls, id);
    answer(rt, el[2]);
    council_route_unref(rt);
    return 1;
}

static const cn_run_hook hook = {on_info, cn_hooked_server_down, cn_hooked_gone};
