/* nif_beam.c - the "beam" provider and the "beam" tool handler in the NIF
 * (see nif.h; the C node's beam_provider.c and beam_tools.c do the same
 * over distribution, docs/protocol.md gives the messages).
 *
 * A member with "provider": "beam" is served by the run's member server
 * (a local pid given at start): for each attempt the core's driver sends
 *   {council_member_call, RunPid, CallId, Request}
 * and the server answers the run pid with {council_member_token, CallId,
 * Chunk} and {council_member_reply, CallId, {ok, Text} | {error, Reason}},
 * which the pid hands to the loop (nif_beam_info). A tool with
 * "handler": "beam" is sent as {council_tool_call, RunPid, ToolCallId,
 * MemberId, Name, Arguments} and answered with {council_tool_reply,
 * ToolCallId, {ok, Text} | {error, Text}}. The run pid monitors the server
 * and hands its DOWN over too: its calls then fail (member calls) or get
 * an error result (tool calls), with the reason.
 *
 * Owns: one table of the calls waiting for a reply (one reference on each
 * call), by (kind, id), each entry also on its run's list so that a run
 * whose pid goes or whose server goes down finds its own at once. Made
 * with the context, freed when the core releases both registrations.
 * Under the drive lock only (nif.h).
 */
#include <council_json.h>
#include <stdio.h>
#include <string.h>

#include "nif.h"

/* An entry's kind: which of the three it serves (reasons.h names them). */
enum { K_MEMBER = CN_BEAM_PROVIDER, K_TOOL = CN_BEAM_TOOL, K_ROUTE = CN_BEAM_ROUTER };

typedef struct bentry {
    cn_hlink hl;    /* in bm->calls */
    cn_dl by_run;   /* in the run's calls list */
    int kind;
    uint64_t id;
    void *item;     /* council_call *, council_tool_call * or council_route *,
                       one reference */
    nif_run *owner;
} bentry;

struct nif_beam {
    nif_state *st;
    cn_htab calls;  /* bentry by (kind, id) */
    int regs;       /* registrations not yet released by the core */
};

static uint64_t key_hash(int kind, uint64_t id)
{
    return (id ^ ((uint64_t)kind << 62)) * 0x9E3779B97F4A7C15ULL;
}

static bentry *find(const nif_beam *bm, int kind, uint64_t id)
{
    uint64_t h = key_hash(kind, id);
    for (cn_hlink *l = cn_htab_first(&bm->calls, h); l; l = cn_htab_next(l)) {
        bentry *e = CN_HTAB_ENTRY(l, bentry, hl);
        if (e->kind == kind && e->id == id)
            return e;
    }
    return NULL;
}

static int add(nif_beam *bm, int kind, uint64_t id, void *item, nif_run *owner)
{
    cn_dl *by_run = nif_run_calls_make(owner);
    bentry *e = by_run ? enif_alloc(sizeof *e) : NULL;
    if (!e)
        return -1;
    e->kind = kind;
    e->id = id;
    e->item = item;
    e->owner = owner;
    cn_htab_add(&bm->calls, &e->hl, key_hash(kind, id));
    cn_dl_push(by_run, &e->by_run);
    return 0;
}

/* Out of the table; returns its item (NULL when there is none). */
static void *take(nif_beam *bm, int kind, uint64_t id)
{
    bentry *e = find(bm, kind, id);
    if (!e)
        return NULL;
    cn_htab_del(&bm->calls, &e->hl);
    cn_dl_del(&e->by_run);
    void *item = e->item;
    enif_free(e);
    return item;
}

static void ref_item(int kind, void *item)
{
    if (kind == K_MEMBER)
        council_call_ref(item);
    else if (kind == K_TOOL)
        council_tool_call_ref(item);
    else
        council_route_ref(item);
}

static void unref_item(int kind, void *item)
{
    if (kind == K_MEMBER)
        council_call_unref(item);
    else if (kind == K_TOOL)
        council_tool_call_unref(item);
    else
        council_route_unref(item);
}

/* A tool call's failure is its error result, which the model reads. */
static int answer_error(council_tool_call *tc, const char *msg)
{
    council_tool_call_return(tc, 0, msg, strlen(msg));
    return 0;
}

/* Fails item (a member call, a tool call or a route) with msg. */
static void fail_item(int kind, void *item, const char *msg)
{
    if (kind == K_MEMBER)
        council_call_fail(item, msg);
    else if (kind == K_TOOL)
        answer_error(item, msg);
    else
        council_route_fail(item, msg);
}

/* Every entry of r out of the table, as a list (by_run) in arrival order. */
static void detach(nif_beam *bm, nif_run *r, cn_dl *out)
{
    cn_dl_init(out);
    cn_dl *calls = nif_run_calls(r);
    while (calls && !cn_dl_empty(calls)) {
        bentry *e = cn_dl_entry(calls->next, bentry, by_run);
        cn_htab_del(&bm->calls, &e->hl);
        cn_dl_del(&e->by_run);
        cn_dl_push(out, &e->by_run);
    }
}

static void release_arg(void *arg)
{
    nif_beam *bm = arg;
    if (--bm->regs > 0)
        return;
    /* the context is going: drop what still waits */
    for (cn_hlink *l = cn_htab_take_all(&bm->calls), *next; l; l = next) {
        next = l->next;
        bentry *e = CN_HTAB_ENTRY(l, bentry, hl);
        cn_dl_del(&e->by_run);
        unref_item(e->kind, e->item);
        enif_free(e);
    }
    if (bm->st->beam == bm)
        bm->st->beam = NULL;
    cn_htab_fini(&bm->calls);
    enif_free(bm);
}

/* The run of item (of kind) when it has a member server to serve it;
 * else NULL, item failed with the reason (reasons.h). */
static nif_run *served(const council_run *run, int kind, void *item)
{
    nif_run *r = nif_run_of(run);
    if (!r || !nif_run_server(r)) {
        fail_item(kind, item, cn_beam_failure_text(kind, r ? CN_BEAM_NO_SERVER
                                                           : CN_BEAM_NO_PROCESS));
        return NULL;
    }
    return r;
}

/* Put item in the table (taking a reference on it) and send
 * {tag, RunPid, Id, rest...} to r's member server: 0 (item failed when
 * the server is not reachable, and out of the table again), or
 * COUNCIL_ENOMEM (a term of rest 0, or no room: nothing done). */
static int dispatch(nif_beam *bm, nif_run *r, int kind, uint64_t id, void *item,
                    ERL_NIF_TERM tag, const ERL_NIF_TERM *rest, size_t nrest)
{
    ErlNifEnv *env = bm->st->out;
    ERL_NIF_TERM items[6] = {tag, enif_make_pid(env, nif_run_pid(r)),
                             enif_make_uint64(env, id)};
    int ok = nrest <= 3;
    for (size_t i = 0; ok && i < nrest; i++)
        ok = (items[3 + i] = rest[i]) != 0;
    if (!ok || add(bm, kind, id, item, r) != 0) {
        enif_clear_env(env);
        return COUNCIL_ENOMEM;
    }
    ref_item(kind, item); /* the table's reference */
    if (!nif_send_now(bm->st, nif_run_server(r),
                      enif_make_tuple_from_array(env, items, 3 + nrest))) {
        unref_item(kind, take(bm, kind, id));
        fail_item(kind, item, cn_beam_failure_text(kind, CN_BEAM_UNREACHABLE));
    }
    return 0;
}

/* ------------------------------------------------------------ provider */

/* The request map: the JSON request's keys (binaries) and "options" (the
 * member's options), plus "user_opts": the run's :user_opts term as sent
 * (kept as ETF), or nil. */
static ERL_NIF_TERM request_term(ErlNifEnv *env, council_call *call)
{
    const json_t *req = council_call_request_object(call);
    const char *opts = council_call_member_options(call);
    json_t *jopts = opts ? json_loads(opts, 0, NULL) : NULL;
    if (!req) {
        json_decref(jopts);
        return 0;
    }
    size_t n = json_object_size(req) + 2, i = 0;
    ERL_NIF_TERM *keys = enif_alloc(sizeof *keys * n), *vals = enif_alloc(sizeof *vals * n);
    ERL_NIF_TERM out = 0;
    if (keys && vals) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)req, k, v) {
            if (strcmp(k, "options") == 0 || strcmp(k, "user_opts") == 0)
                continue;
            keys[i] = nif_binary(env, k, strlen(k));
            vals[i++] = nif_json_term(env, v, 0);
        }
        keys[i] = nif_binary(env, "options", 7);
        vals[i++] = jopts ? nif_json_term(env, jopts, 0) : enif_make_new_map(env);
        size_t uo_len = 0;
        const void *uo = council_run_user_opts(council_call_run(call), &uo_len);
        ERL_NIF_TERM uot = A.nil;
        if (uo && uo_len && !(uot = nif_etf_term(env, uo, uo_len, ERL_NIF_BIN2TERM_SAFE)))
            uot = A.nil;
        keys[i] = nif_binary(env, "user_opts", 9);
        vals[i++] = uot;
        if (!nif_make_map(env, keys, vals, i, &out))
            out = 0;
    }
    enif_free(keys);
    enif_free(vals);
    json_decref(jopts);
    return out;
}

static int beam_start(council_call *call, void *arg)
{
    nif_beam *bm = arg;
    nif_run *r = served(council_call_run(call), K_MEMBER, call);
    ERL_NIF_TERM req = r ? request_term(bm->st->out, call) : 0;
    return r ? dispatch(bm, r, K_MEMBER, council_call_id(call), call, A.council_member_call,
                        &req, 1)
             : 0;
}

static void beam_cancel(council_call *call, void *arg)
{
    nif_beam *bm = arg;
    void *item = take(bm, K_MEMBER, council_call_id(call));
    if (item)
        council_call_unref(item);
}

/* ------------------------------------------------------------ tools */

/* {council_tool_call, RunPid, ToolCallId, MemberId, Name, Arguments} */
static int tool_start(council_tool_call *tc, void *arg)
{
    nif_beam *bm = arg;
    council_call *call = council_tool_call_member_call(tc);
    nif_run *r = served(call ? council_call_run(call) : NULL, K_TOOL, tc);
    if (!r)
        return 0;
    size_t alen = 0;
    const char *args = council_tool_call_arguments(tc, &alen);
    const char *name = council_tool_call_name(tc);
    const char *member = council_call_member_id(call);
    ErlNifEnv *env = bm->st->out;
    ERL_NIF_TERM rest[3] = {
        nif_binary(env, member, strlen(member)),
        nif_binary(env, name ? name : "", name ? strlen(name) : 0),
        nif_binary(env, args ? args : "", args ? alen : 0),
    };
    return dispatch(bm, r, K_TOOL, council_tool_call_id(tc), tc, A.council_tool_call, rest, 3);
}

static void tool_cancel(council_tool_call *tc, void *arg)
{
    nif_beam *bm = arg;
    bentry *e = find(bm, K_TOOL, council_tool_call_id(tc));
    if (e && e->item == tc)
        council_tool_call_unref(take(bm, K_TOOL, e->id));
}

/* ------------------------------------------------------------ routers */

static int route_fail(council_route *rt, const char *msg)
{
    council_route_fail(rt, msg);
    return 0;
}

/* {council_route_call, RunPid, RouteId, Request}: the request as a map
 * with binary keys. */
static int route_start(council_route *rt, void *arg)
{
    nif_beam *bm = arg;
    nif_run *r = served(council_route_run(rt), K_ROUTE, rt);
    const json_t *req = r ? council_route_request_object(rt) : NULL;
    ERL_NIF_TERM reqt = req ? nif_json_term(bm->st->out, req, 0) : 0;
    return r ? dispatch(bm, r, K_ROUTE, council_route_id(rt), rt, A.council_route_call, &reqt, 1)
             : 0;
}

static void route_cancel(council_route *rt, void *arg)
{
    nif_beam *bm = arg;
    bentry *e = find(bm, K_ROUTE, council_route_id(rt));
    if (e && e->item == rt)
        council_route_unref(take(bm, K_ROUTE, e->id));
}

#define MAX_CHOSEN 64 /* SPEC_MAX_MEMBERS: more ids than that cannot all be members */

/* {ok, [Bin]} selects those members; {error, Reason} and anything else
 * fail the route. */
static void route_reply(council_route *rt, ErlNifEnv *env, ERL_NIF_TERM res)
{
    const ERL_NIF_TERM *el;
    int arity;
    unsigned n;
    char why[512];
    if (!enif_get_tuple(env, res, &arity, &el) || arity != 2) {
        route_fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_MALFORMED));
    } else if (enif_is_identical(el[0], A.error)) {
        ErlNifBinary b;
        if (enif_inspect_binary(env, el[1], &b))
            snprintf(why, sizeof why, "%.*s", (int)(b.size < sizeof why ? b.size : sizeof why - 1),
                     (const char *)b.data);
        else
            nif_term_text(env, el[1], why, sizeof why);
        route_fail(rt, why);
    } else if (!enif_is_identical(el[0], A.ok) || !enif_get_list_length(env, el[1], &n)) {
        route_fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_NOT_IDS));
    } else if (n > MAX_CHOSEN) {
        route_fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_TOO_MANY_IDS));
    } else {
        char *names[MAX_CHOSEN];
        size_t k = 0;
        ERL_NIF_TERM head, tail = el[1];
        int ok = 1;
        while (ok && enif_get_list_cell(env, tail, &head, &tail)) {
            ErlNifBinary b;
            ok = enif_inspect_binary(env, head, &b) && !memchr(b.data, 0, b.size) &&
                 (names[k] = enif_alloc(b.size + 1)) != NULL;
            if (ok) {
                memcpy(names[k], b.data, b.size);
                names[k++][b.size] = 0;
            }
        }
        if (ok)
            council_route_select(rt, (const char *const *)names, k);
        else
            route_fail(rt, cn_beam_failure_text(CN_BEAM_ROUTER, CN_BEAM_IDS_NOT_BINARIES));
        for (size_t i = 0; i < k; i++)
            enif_free(names[i]);
    }
}

nif_beam *nif_beam_register(nif_state *st, int *rc)
{
    nif_beam *bm = enif_alloc(sizeof *bm);
    *rc = COUNCIL_ENOMEM;
    if (!bm)
        return NULL;
    memset(bm, 0, sizeof *bm);
    bm->st = st;
    if (cn_htab_init(&bm->calls, 64)) {
        enif_free(bm);
        return NULL;
    }
    council_provider_ops pops = {.start = beam_start, .cancel = beam_cancel,
                                 .release = release_arg};
    council_tool_ops tops = {.start = tool_start, .cancel = tool_cancel,
                             .release = release_arg};
    council_router_ops rops = {.start = route_start, .cancel = route_cancel,
                               .release = release_arg};
    bm->regs = 3;
    if ((*rc = council_provider_register(st->ctx, "beam", &pops, bm)) != 0) {
        cn_htab_fini(&bm->calls);
        enif_free(bm);
        return NULL;
    }
    /* from here the core owns the provider's registration (released with
     * the context); without the tool handler, beam tools are unknown */
    if ((*rc = council_tool_register(st->ctx, "beam", &tops, bm)) != 0)
        bm->regs--;
    int rrc = council_router_register(st->ctx, "beam", &rops, bm);
    if (rrc != 0) {
        bm->regs--;
        if (*rc == 0)
            *rc = rrc;
    }
    return bm;
}

size_t nif_beam_pending(const nif_beam *bm) { return bm ? bm->calls.n : 0; }

/* ------------------------------------------------------------ replies */

/* {ok, Bin} / {error, Reason}: 1 ok (text set), 0 error (text is the
 * reason: a binary's bytes, else the term printed), -1 malformed. */
static int result_of(ErlNifEnv *env, ERL_NIF_TERM res, ErlNifBinary *text, char *why,
                     size_t n, int *why_is_bin)
{
    const ERL_NIF_TERM *el;
    int arity;
    *why_is_bin = 0;
    if (!enif_get_tuple(env, res, &arity, &el) || arity != 2)
        return -1;
    if (enif_is_identical(el[0], A.ok))
        return enif_inspect_binary(env, el[1], text) ? 1 : -1;
    if (!enif_is_identical(el[0], A.error))
        return -1;
    if (enif_inspect_binary(env, el[1], text)) {
        *why_is_bin = 1;
        return 0;
    }
    nif_term_text(env, el[1], why, n);
    return 0;
}

static void member_reply(council_call *c, ErlNifEnv *env, ERL_NIF_TERM res)
{
    ErlNifBinary text;
    char why[512];
    int is_bin;
    switch (result_of(env, res, &text, why, sizeof why, &is_bin)) {
    case 1:
        council_call_complete(c, (const char *)text.data, text.size);
        break;
    case 0:
        if (is_bin)
            snprintf(why, sizeof why, "%.*s",
                     (int)(text.size < sizeof why ? text.size : sizeof why - 1),
                     (const char *)text.data);
        council_call_fail(c, why);
        break;
    default:
        council_call_fail(c, cn_beam_failure_text(CN_BEAM_PROVIDER, CN_BEAM_MALFORMED));
    }
}

static void tool_reply(council_tool_call *tc, ErlNifEnv *env, ERL_NIF_TERM res)
{
    ErlNifBinary text;
    char why[512];
    int is_bin;
    switch (result_of(env, res, &text, why, sizeof why, &is_bin)) {
    case 1:
        council_tool_call_return(tc, 1, (const char *)text.data, text.size);
        break;
    case 0:
        if (is_bin)
            council_tool_call_return(tc, 0, (const char *)text.data, text.size);
        else
            answer_error(tc, why);
        break;
    default:
        answer_error(tc, cn_beam_failure_text(CN_BEAM_TOOL, CN_BEAM_MALFORMED));
    }
}

int nif_beam_info(nif_state *st, nif_run *r, ErlNifEnv *env, ERL_NIF_TERM msg)
{
    nif_beam *bm = st->beam;
    const ERL_NIF_TERM *el;
    int arity;
    if (!enif_get_tuple(env, msg, &arity, &el))
        return 0;
    if (arity == 5 && enif_is_identical(el[0], A.down) &&
        enif_is_identical(el[2], A.process)) {
        ErlNifPid pid;
        const ErlNifPid *server = nif_run_server(r);
        if (!server || !enif_get_local_pid(env, el[3], &pid) ||
            enif_compare_pids(&pid, server) != 0)
            return 0;
        nif_beam_server_down(st, r, env, el[4]);
        return 1;
    }
    if (arity != 3)
        return 0;
    int kind = enif_is_identical(el[0], A.council_member_token)   ? K_MEMBER
               : enif_is_identical(el[0], A.council_member_reply) ? K_MEMBER
               : enif_is_identical(el[0], A.council_tool_reply)   ? K_TOOL
               : enif_is_identical(el[0], A.council_route_reply)  ? K_ROUTE
                                                                  : -1;
    ErlNifUInt64 id;
    if (kind < 0)
        return 0;
    if (!bm || !enif_get_uint64(env, el[1], &id))
        return 1; /* a bad id: dropped */
    bentry *e = find(bm, kind, id);
    if (!e || e->owner != r)
        return 1; /* late (timed out, cancelled) or another run's: dropped */
    if (enif_is_identical(el[0], A.council_member_token)) {
        ErlNifBinary chunk;
        if (enif_inspect_iolist_as_binary(env, el[2], &chunk))
            council_call_token(e->item, (const char *)chunk.data, chunk.size);
        return 1;
    }
    void *item = take(bm, kind, id);
    if (kind == K_MEMBER)
        member_reply(item, env, el[2]);
    else if (kind == K_TOOL)
        tool_reply(item, env, el[2]);
    else
        route_reply(item, env, el[2]);
    unref_item(kind, item);
    return 1;
}

void nif_beam_server_down(nif_state *st, nif_run *r, ErlNifEnv *env, ERL_NIF_TERM reason)
{
    nif_run_server_gone(r);
    nif_beam *bm = st->beam;
    if (!bm)
        return;
    cn_dl list;
    detach(bm, r, &list);
    if (cn_dl_empty(&list))
        return;
    char why[400], msg[512];
    nif_term_text(env, reason, why, sizeof why);
    while (!cn_dl_empty(&list)) {
        bentry *e = cn_dl_entry(list.next, bentry, by_run);
        cn_dl_del(&e->by_run);
        cn_beam_server_down_text(msg, sizeof msg, e->kind, why);
        fail_item(e->kind, e->item, msg);
        unref_item(e->kind, e->item);
        enif_free(e);
    }
}

void nif_beam_gone(nif_state *st, nif_run *r)
{
    nif_beam *bm = st->beam;
    cn_dl list;
    if (!bm) {
        cn_dl *calls = nif_run_calls(r);
        if (calls)
            cn_dl_init(calls);
        return;
    }
    detach(bm, r, &list);
    while (!cn_dl_empty(&list)) {
        bentry *e = cn_dl_entry(list.next, bentry, by_run);
        cn_dl_del(&e->by_run);
        unref_item(e->kind, e->item);
        enif_free(e);
    }
}
