/* beam_provider.c - see beam_provider.h. */
#include "beam_provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "council_json.h"
#include "gen_server.h"
#include "log.h"
#include "pending.h"
#include "run_proc.h"
#include "term_json.h"

/* The module's state (the provider's and the hook's arg) is a cn_hooked:
 * its table holds the member calls in flight by call id, one reference
 * each. */
static const cn_run_hook hook;

/* The request map the member server gets: the JSON request's keys (all
 * binaries), plus "user_opts": the run's :user_opts term as the caller sent
 * it (ETF spliced back untouched), or nil. */
static int encode_request(ei_x_buff *x, const json_t *req, const council_run *run)
{
    size_t uo_len = 0;
    const void *uo = council_run_user_opts(run, &uo_len);
    if (ei_x_encode_map_header(x, (long)json_object_size(req) + 1) < 0)
        return -1;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)req, k, v) {
        if (ei_x_encode_binary(x, k, (long)strlen(k)) < 0 || term_json_encode(x, v) < 0)
            return -1;
    }
    if (ei_x_encode_binary(x, "user_opts", 9) < 0)
        return -1;
    return uo && uo_len ? ei_x_append_buf(x, uo, (int)uo_len) : ei_x_encode_atom(x, "nil");
}

static int beam_start(council_call *call, void *arg)
{
    cn_hooked *bp = arg;
    cn_bridge *b = bp->b;
    cn_run_proc *rp;
    const cn_pid *server = cn_run_proc_served(bp, council_call_run(call), call, &rp);
    if (!server)
        return 0;

    /* The request the member sees, plus the member's options (the Elixir
     * side needs e.g. the module that answers). */
    json_t *req = json_copy(council_call_request_object(call));
    const char *opts = council_call_member_options(call);
    json_t *jopts = opts ? json_loads(opts, 0, NULL) : NULL;
    if (!req) {
        json_decref(jopts);
        return COUNCIL_ENOMEM;
    }
    json_object_set_new(req, "options", jopts ? jopts : json_object());

    cn_proc *self = cn_run_proc_proc(rp);
    uint64_t id = council_call_id(call);
    ei_x_buff x;
    int rc = COUNCIL_ENOMEM;
    if (ei_x_new(&x) == 0) {
        cn_pid me;
        cn_node_self(b->node, self, &me);
        if (ei_x_encode_tuple_header(&x, 4) == 0 &&
            ei_x_encode_atom(&x, "council_member_call") == 0 &&
            cn_node_encode_pid(b->node, &x, &me) == 0 && ei_x_encode_ulonglong(&x, id) == 0 &&
            encode_request(&x, req, council_call_run(call)) == 0)
            rc = cn_hooked_send(bp, rp, server, id, call, &x);
        ei_x_free(&x);
    }
    json_decref(req);
    return rc;
}

static void beam_cancel(council_call *call, void *arg)
{
    cn_hooked *bp = arg;
    council_call_unref(cn_pending_take(bp->calls, council_call_id(call)));
}

static void ref_call(void *call)
{
    council_call_ref(call);
}

static void unref_call(void *call)
{
    council_call_unref(call);
}

static void fail_call(void *call, const char *msg)
{
    council_call_fail(call, msg);
}

/* A member server going down fails its run's calls in flight: it is
 * forgotten first (cn_run_proc_member_server gives NULL), so a retry that
 * a failure starts fails at once instead of being added. */
static const cn_hooked_kind kind = {CN_BEAM_PROVIDER, ref_call, unref_call, fail_call};

int cn_beam_provider_register(cn_bridge *b)
{
    int rc;
    cn_hooked *bp = cn_hooked_new(b, &hook, &kind, &rc);
    council_provider_ops ops = {.start = beam_start, .cancel = beam_cancel,
                                .release = cn_hooked_release};
    if (bp && (rc = council_provider_register(b->ctx, "beam", &ops, bp)) != 0)
        cn_hooked_free(bp);
    return rc;
}

/* ------------------------------------------------------------ the hook */

/* {council_member_token, Id, Chunk} and {council_member_reply, Id, Result} */
static int on_info(cn_bridge *b, void *arg, cn_run_proc *rp, cn_slice msg)
{
    cn_hooked *bp = arg;
    cn_slice el[3];
    if (cn_term_tuple(msg, el, 3) != 3)
        return 0;
    int token = cn_term_is_atom(el[0], "council_member_token");
    int reply = cn_term_is_atom(el[0], "council_member_reply");
    uint64_t id;
    if ((!token && !reply) || cn_term_u64(el[1], &id))
        return 0;
    cn_pending_entry *e = cn_pending_find(bp->calls, id);
    if (!e || e->owner != rp)
        return 1; /* late (after a timeout or cancel) or another run's: dropped */

    if (token) {
        const char *p;
        size_t len;
        if (cn_term_binary(el[2], &p, &len) == 0)
            council_call_token(e->item, p, len); /* the call stays in flight */
        return 1;
    }
    council_call *c = cn_pending_take(bp->calls, id);
    cn_slice res[2];
    const char *p;
    size_t len;
    char why[512];
    int ar = cn_term_tuple(el[2], res, 2);
    if (ar == 2 && cn_term_is_atom(res[0], "ok") && cn_term_binary(res[1], &p, &len) == 0) {
        council_call_complete(c, p, len);
    } else if (ar == 2 && cn_term_is_atom(res[0], "error")) {
        cn_term_text(res[1], why, sizeof why);
        council_call_fail(c, why);
    } else {
        council_call_fail(c, cn_beam_failure_text(CN_BEAM_PROVIDER, CN_BEAM_MALFORMED));
    }
    council_call_unref(c);
    return 1;
}

static const cn_run_hook hook = {on_info, cn_hooked_server_down, cn_hooked_gone};
