/* provider_council.c - the built-in provider whose member is a council.
 *
 * A member {"provider": "council", "options": {"spec": {...}}} answers with
 * the final answer of a nested run of that spec on the parent's input text.
 * The nested spec is compiled once, with the parent's (spec.c,
 * compile_sub), and every nested run shares it by reference.
 * The nested run is not registered; its events are published on
 * "council_ex:run:" <parent_id> ":sub:" <member_id>. A failed or cancelled
 * nested run is a member error; cancelling the call cancels the nested run.
 * Nesting is bounded (SUB_COUNCIL_MAX_DEPTH).
 * Not for: anything the round engine does not already do for a member.
 */
#include "council_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sub_call {
    council_call *call;  /* ref */
    council_run *sub;    /* ref */
} sub_call;

static void sub_free(sub_call *sc)
{
    council_run_unref(sc->sub);
    council_call_unref(sc->call);
    free(sc);
}

static void sub_ended(council_run *sub, void *arg)
{
    sub_call *sc = arg;
    council_call *call = sc->call;
    call->prov_state = NULL;
    const council_result *res = council_run_result(sub);
    char msg[256];
    switch (council_run_status(sub)) {
    case COUNCIL_COMPLETED:
        council_call_complete(call, res->final_text ? res->final_text : "",
                              res->final_text ? res->final_len : 0);
        break;
    case COUNCIL_FAILED:
        snprintf(msg, sizeof msg, "sub-council failed: %s",
                 res->n_errors ? res->errors[res->n_errors - 1] : "no reason");
        council_call_fail(call, msg);
        break;
    default:
        council_call_fail(call, "sub-council cancelled");
        break;
    }
    sub_free(sc);
}

static int council_start(council_call *call, void *arg)
{
    council_ctx *ctx = arg;
    council_run *parent = council_call_run(call);
    char msg[512];
    if (parent->depth + 1 > SUB_COUNCIL_MAX_DEPTH) {
        council_call_fail(call, "sub-council: nested too deep");
        return 0;
    }
    json_t *req = council_call_request_json(call);
    if (!req)
        return COUNCIL_ENOMEM;
    /* compiled with the parent's spec, shared by every call */
    council_spec *spec = call->member->sub;
    if (!spec) {
        council_call_fail(call, call->member->sub_error ? call->member->sub_error
                                                        : "sub-council: nested too deep");
        return 0;
    }
    /* topic: council_ex:run:<parent_id>:sub:<member_id> */
    size_t plen;
    const char *ptopic = run_topic(parent, &plen);
    const char *mid = council_call_member_id(call);
    size_t tlen = plen + 5 + strlen(mid);
    char *topic = malloc(tlen + 1);
    if (!topic)
        return COUNCIL_ENOMEM;
    snprintf(topic, tlen + 1, "%.*s:sub:%s", (int)plen, ptopic, mid);
    json_t *in = json_object_get(req, "input");
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = spec;
    o.input.tag = "text";
    o.input.data = json_is_string(in) ? json_string_value(in) : "";
    o.input.len = json_is_string(in) ? json_string_length(in) : 0;
    council_run *sub = NULL;
    int rc = run_create_sub(ctx, &o, topic, tlen, &sub);
    free(topic);
    if (rc) {
        snprintf(msg, sizeof msg, "sub-council: %s", council_strerror(rc));
        council_call_fail(call, msg);
        return 0;
    }
    sub->depth = parent->depth + 1;
    sub_call *sc = calloc(1, sizeof *sc);
    if (!sc || council_run_watch(sub, sub_ended, sc) != 0) {
        free(sc);
        council_run_cancel(sub);
        council_run_unref(sub);
        return COUNCIL_ENOMEM;
    }
    sc->call = council_call_ref(call);
    sc->sub = sub;
    call->prov_state = sc;
    council_run_begin(sub);
    return 0;
}

static void council_cancel(council_call *call, void *arg)
{
    (void)arg;
    sub_call *sc = call->prov_state;
    if (!sc)
        return;
    call->prov_state = NULL;
    council_run_unwatch(sc->sub, sub_ended, sc);
    council_run_cancel(sc->sub);
    sub_free(sc);
}

void provider_council_ops(council_provider_ops *ops)
{
    memset(ops, 0, sizeof *ops);
    ops->start = council_start;
    ops->cancel = council_cancel;
}
