/* service.c - see service.h. */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_term.h"
#include "gen_server.h"
#include "log.h"
#include "remote_sub.h"
#include "retained.h"
#include "run_proc.h"
#include "run_topic.h"
#include "spec_cache.h"
#include "term_json.h"

typedef struct service {
    cn_service_config cfg;
    cn_bridge *b;
    cn_spec_cache *specs; /* the same JSON spec is parsed once */
} service;

/* ------------------------------------------------------------- helpers */

/* A binary or an atom, as text (view into the slice). 0 or -1. */
static int get_name(cn_slice s, const char **p, size_t *len)
{
    return cn_term_binary(s, p, len) == 0 ? 0 : cn_term_atom(s, p, len);
}

/* NUL-terminated copy of a name term (registry, council); NULL if not a
 * name, or for the atom nil (then *absent = 1). */
static char *dup_name(cn_slice s, int *absent)
{
    const char *p;
    size_t len;
    *absent = cn_term_is_atom(s, "nil");
    if (*absent || get_name(s, &p, &len) || memchr(p, 0, len))
        return NULL;
    char *out = malloc(len + 1);
    if (out) {
        memcpy(out, p, len);
        out[len] = 0;
    }
    return out;
}

static int get_pid(cn_bridge *b, cn_slice s, cn_pid *out)
{
    cn_wpid w;
    return cn_term_pid(s, &w) || cn_pt_pid_from_wire(cn_node_table(b->node), &w, out);
}

/* {ok, Pid} for a local process. */
static int ok_pid(cn_bridge *b, ei_x_buff *x, cn_proc *p)
{
    cn_pid pid;
    cn_node_self(b->node, p, &pid);
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
                   cn_node_encode_pid(b->node, x, &pid)
               ? -1
               : 0;
}

/* {ok, Term} where the term is encoded by one of event_term.c's functions */
#define OK_TERM(x, encode) \
    (ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") || (encode) ? -1 : 0)

/* {error, {bad_option, Key}} for a key as sent (its summary: an atom key
 * as it is) / a key we name */
static int bad_option(ei_x_buff *x, cn_slice key)
{
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
                   ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "bad_option") ||
                   cn_gen_encode_summary(x, key)
               ? -1
               : 0;
}

static int bad_option_named(ei_x_buff *x, const char *key)
{
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
                   ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "bad_option") ||
                   ei_x_encode_atom(x, key)
               ? -1
               : 0;
}

/* {error, {invalid_spec, Field, Message}} */
static int invalid_spec(ei_x_buff *x, const char *field, const char *msg)
{
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
                   ei_x_encode_tuple_header(x, 3) || ei_x_encode_atom(x, "invalid_spec") ||
                   ei_x_encode_binary(x, field, (long)strlen(field)) ||
                   ei_x_encode_binary(x, msg, (long)strlen(msg))
               ? -1
               : 0;
}

/* ----------------------------------------------------------- start */

/* A start goes through four steps: parse (the options into core terms),
 * subscribe (the :subscribe pids, before the run exists), create (the run
 * and its process, the link) and reply. Each step returns 0 to go on, or
 * REFUSED with the error reply in x, or -1 when even that could not be
 * encoded; a refused start takes back what the steps before made. */
enum { REFUSED = 1 };
static int refuse(int encoded) { return encoded ? -1 : REFUSED; }

#define MAX_START_SUBS 64

typedef struct start_req {
    /* the options as sent */
    cn_slice spec, input, run_id, council, registry, user_opts, subscribe;
    cn_slice member_server;
    cn_slice bad_key;
    /* parsed (owned) */
    council_start_opts so;
    char *registry_s, *council_s, *json, *printed;
    council_spec *spec_p;
    char gen_id[23];
    cn_pid server, subs[MAX_START_SUBS];
    int has_server, sub_flags[MAX_START_SUBS];
    size_t nsubs;
    /* made (taken back when refused) */
    char *topic;
    size_t topic_len, nmade;
    bool made[MAX_START_SUBS];
    council_run *run;
} start_req;

/* Splits the options map; unknown keys are reported in bad_key. */
static int split_opts(cn_slice opts, start_req *r)
{
    const char *buf = (const char *)opts.p;
    int index = 0, arity = 0;
    if (ei_decode_map_header(buf, &index, &arity) < 0)
        return -1;
    static const struct { const char *name; size_t off; } keys[] = {
        {"spec", offsetof(start_req, spec)},
        {"input", offsetof(start_req, input)},
        {"run_id", offsetof(start_req, run_id)},
        {"council", offsetof(start_req, council)},
        {"registry", offsetof(start_req, registry)},
        {"user_opts", offsetof(start_req, user_opts)},
        {"subscribe", offsetof(start_req, subscribe)},
        {"member_server", offsetof(start_req, member_server)},
    };
    for (int i = 0; i < arity; i++) {
        size_t klen = cn_term_len(opts.p + index, opts.len - (size_t)index);
        if (!klen)
            return -1;
        cn_slice key = {opts.p + index, klen};
        index += (int)klen;
        size_t vlen = cn_term_len(opts.p + index, opts.len - (size_t)index);
        if (!vlen)
            return -1;
        cn_slice val = {opts.p + index, vlen};
        index += (int)vlen;
        size_t k = 0;
        for (; k < sizeof keys / sizeof keys[0]; k++) {
            if (cn_term_is_atom(key, keys[k].name)) {
                *(cn_slice *)((char *)r + keys[k].off) = val;
                break;
            }
        }
        if (k == sizeof keys / sizeof keys[0] && !r->bad_key.len)
            r->bad_key = key;
    }
    return 0;
}

/* An option given and not nil. */
static int given(cn_slice v) { return v.len && !cn_term_is_atom(v, "nil"); }

/* registry, council, run_id, member_server */
static int parse_names(service *s, start_req *r, ei_x_buff *x)
{
    int absent;
    if (r->registry.len && !(r->registry_s = dup_name(r->registry, &absent)) && !absent)
        return refuse(bad_option_named(x, "registry"));
    if (r->council.len && !(r->council_s = dup_name(r->council, &absent)) && !absent)
        return refuse(bad_option_named(x, "council"));
    if (given(r->run_id)) {
        const char *id;
        size_t len;
        if (cn_term_binary(r->run_id, &id, &len) || len == 0)
            return refuse(bad_option_named(x, "run_id"));
        r->so.run_id = id;
        r->so.run_id_len = len;
    }
    if (given(r->member_server)) {
        if (get_pid(s->b, r->member_server, &r->server))
            return refuse(bad_option_named(x, "member_server"));
        r->has_server = 1;
    }
    return 0;
}

/* The delivery a subscription names: tagged or batched (CN_RSUB_*), 0 for
 * anything else. */
static int sub_mode(cn_slice atom)
{
    return cn_term_is_atom(atom, "tagged")    ? CN_RSUB_TAGGED
           : cn_term_is_atom(atom, "batched") ? CN_RSUB_BATCHED
                                              : 0;
}

/* subscribe: a list of at most 64 pids, {Pid, tagged} or {Pid, batched} */
static int parse_subscribe(service *s, start_req *r, ei_x_buff *x)
{
    if (!given(r->subscribe))
        return 0;
    cn_slice items[MAX_START_SUBS], el[2];
    long n = cn_term_list(r->subscribe, items, MAX_START_SUBS, NULL);
    if (n < 0 || n > MAX_START_SUBS)
        return refuse(bad_option_named(x, "subscribe"));
    for (long i = 0; i < n; i++) {
        cn_slice item = items[i];
        int mode = cn_term_tuple(item, el, 2) == 2 ? sub_mode(el[1]) : 0;
        if (mode)
            item = el[0];
        r->sub_flags[r->nsubs] = mode;
        if (get_pid(s->b, item, &r->subs[r->nsubs]))
            return refuse(bad_option_named(x, "subscribe"));
        r->nsubs++;
    }
    return 0;
}

/* The spec as JSON text: a binary, {json, Binary}, or a JSON-like term. */
static char *spec_json(cn_slice s, size_t *len, const char **why)
{
    const char *p;
    size_t n;
    cn_slice el[2];
    if (cn_term_tuple(s, el, 2) == 2 && cn_term_is_atom(el[0], "json"))
        s = el[1];
    if (cn_term_binary(s, &p, &n) == 0) {
        char *out = malloc(n + 1);
        if (!out) {
            *why = "out of memory";
            return NULL;
        }
        memcpy(out, p, n);
        out[n] = 0;
        *len = n;
        return out;
    }
    json_t *j = NULL;
    int index = 0;
    if (term_json_decode((const char *)s.p, &index, 64, &j, why) < 0)
        return NULL;
    char *out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!out) {
        *why = "out of memory";
        return NULL;
    }
    *len = strlen(out);
    return out;
}

/* The spec, parsed once per JSON text (the cache). */
static int parse_spec(service *s, start_req *r, ei_x_buff *x)
{
    const char *why = NULL;
    size_t json_len = 0;
    if (!(r->json = spec_json(r->spec, &json_len, &why)))
        return refuse(invalid_spec(x, "spec", why ? why : "not JSON"));
    council_spec_error serr = {{0}, {0}};
    int rc = cn_spec_cache_get(s->specs, r->json, json_len, &r->spec_p, &serr);
    if (rc == COUNCIL_ETOOBIG) /* over --max-spec-bytes */
        return refuse(cn_gen_encode_error(x, "request_too_large"));
    if (rc != 0)
        return refuse(invalid_spec(x, serr.field[0] ? serr.field : "spec",
                                   serr.message[0] ? serr.message : council_strerror(rc)));
    return 0;
}

/* The input: kept as its ETF bytes; providers see the binary itself, or
 * the term printed in Erlang syntax. */
static int input_of(cn_slice in, council_input *out, char **printed)
{
    const char *p;
    size_t n;
    memset(out, 0, sizeof *out);
    out->tag = "etf";
    out->data = in.p;
    out->len = in.len;
    *printed = NULL;
    if (cn_term_binary(in, &p, &n) == 0) {
        out->text = p;
        out->text_len = n;
        return 0;
    }
    int index = 0;
    if (ei_s_print_term(printed, (const char *)in.p, &index) < 0)
        return -1;
    out->text = *printed;
    out->text_len = strlen(*printed);
    return 0;
}

/* Step 1: the options into core terms (r->so complete). */
static int start_parse(service *s, cn_slice opts, start_req *r, ei_x_buff *x)
{
    int rc;
    if (split_opts(opts, r))
        return refuse(cn_gen_encode_error(x, "badarg"));
    if (r->bad_key.len)
        return refuse(bad_option(x, r->bad_key));
    if (!r->spec.len)
        return refuse(bad_option_named(x, "spec"));
    if (!r->input.len)
        return refuse(bad_option_named(x, "input"));
    if ((rc = parse_names(s, r, x)) || (rc = parse_subscribe(s, r, x)) ||
        (rc = parse_spec(s, r, x)))
        return rc;
    if (input_of(r->input, &r->so.input, &r->printed))
        return refuse(bad_option_named(x, "input"));
    r->so.registry = r->registry_s;
    r->so.council = r->council_s;
    r->so.spec = r->spec_p;
    if (r->user_opts.len) {
        r->so.user_opts = r->user_opts.p;
        r->so.user_opts_len = r->user_opts.len;
    }
    /* A generated id is made here rather than by the core, so that the
     * subscriptions can come first. */
    cn_run_id_fix(&r->so, r->gen_id);
    return 0;
}

/* Step 2: subscriptions before the run exists, all or nothing: a start
 * refused at any point takes back the (topic, pid) pairs it made (not those
 * subscribed before it), so a subscription refused (limit of the table or
 * of the topic, a node that cannot be reached) leaves no run. */
static int start_subscribe(service *s, start_req *r, ei_x_buff *x)
{
    cn_bridge *b = s->b;
    if (!r->nsubs || !b->subs)
        return 0;
    if (!(r->topic = cn_run_topic(r->so.run_id, r->so.run_id_len, &r->topic_len)))
        return refuse(cn_bridge_encode_error(x, COUNCIL_ENOMEM, NULL));
    for (; r->nmade < r->nsubs; r->nmade++) {
        size_t i = r->nmade;
        r->made[i] = !cn_rsubs_has(b->subs, r->topic, r->topic_len, &r->subs[i]);
        int rc = cn_rsubs_add(b->subs, r->topic, r->topic_len, &r->subs[i], r->sub_flags[i]);
        if (rc != 0)
            return refuse(cn_bridge_encode_error(x, rc, "badarg"));
    }
    return 0;
}

/* A start whose run id is taken: {error, {already_started, Pid}} with the
 * pid of the run that has it (GenServer.on_start()), or {error,
 * run_id_retained} when that run has ended and its outcome is still
 * retained (no process to give). */
static int already_started(service *s, const start_req *r, ei_x_buff *x)
{
    council_run *run = NULL;
    cn_proc *p = council_whereis(s->b->ctx, r->so.registry, r->so.run_id, r->so.run_id_len,
                                 &run) == 0
                     ? cn_run_proc_of(run)
                     : NULL;
    if (!p)
        return cn_gen_encode_error(x, "run_id_retained");
    cn_pid pid;
    cn_node_self(s->b->node, p, &pid);
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
                   ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, cn_bridge_reason(COUNCIL_EEXIST, NULL)) ||
                   cn_node_encode_pid(s->b->node, x, &pid)
               ? -1
               : 0;
}

/* Step 3: the run, its process, and the LINK of start_link (before the run
 * begins and before the reply, so the caller misses nothing). */
static int start_create(service *s, start_req *r, const cn_gen_from *from, int link,
                        ei_x_buff *x, cn_proc **proc)
{
    cn_bridge *b = s->b;
    int rc = council_run_create(b->ctx, &r->so, &r->run);
    if (rc == COUNCIL_EPROVIDER) {
        council_spec_error perr = {{0}, {0}};
        council_ctx_check_providers(b->ctx, r->spec_p, &perr);
        return refuse(invalid_spec(x, perr.field[0] ? perr.field : "members",
                                   perr.message[0] ? perr.message : "unknown provider"));
    }
    if (rc == COUNCIL_ESPEC)
        return refuse(invalid_spec(x, "spec", "invalid spec"));
    if (rc == COUNCIL_EEXIST)
        return refuse(already_started(s, r, x));
    if (rc != 0)
        return refuse(cn_bridge_encode_error(x, rc, cn_bridge_reason(COUNCIL_ENOMEM, NULL)));
    if (!(*proc = cn_run_proc_spawn(b, r->run, r->has_server ? &r->server : NULL)))
        return refuse(cn_bridge_encode_error(x, COUNCIL_ENOMEM, NULL));
    if (link && cn_node_link(b->node, *proc, &from->pid) != 0)
        return refuse(cn_bridge_encode_error(x, COUNCIL_EIO, NULL));
    return 0;
}

/* Takes back what the steps made: the pairs first, so that they do not get
 * the run's end; then the run (NULL when it was never made). */
static void start_undo(service *s, start_req *r)
{
    for (size_t k = 0; k < r->nmade; k++)
        if (r->made[k])
            cn_rsubs_remove(s->b->subs, r->topic, r->topic_len, &r->subs[k]);
    if (r->run)
        cn_run_proc_cancel(r->run, NULL);
}

static void start_free(start_req *r)
{
    free(r->topic);
    council_run_unref(r->run);
    council_spec_unref(r->spec_p);
    free(r->json);
    free(r->printed);
    free(r->registry_s);
    free(r->council_s);
}

/* {start, Opts} and {start_link, Opts} */
static int call_start(cn_node *n, cn_proc *p, const cn_gen_from *from,
                      const cn_gen_call *row, const cn_slice *el, ei_x_buff *x)
{
    service *s = cn_gen_state(p);
    int link = cn_term_is_atom(el[0], "start_link");
    start_req r;
    memset(&r, 0, sizeof r);
    cn_proc *proc = NULL;
    int rc = start_parse(s, el[1], &r, x);
    if (!rc)
        rc = start_subscribe(s, &r, x);
    if (!rc)
        rc = start_create(s, &r, from, link, x, &proc);
    /* Step 4: the reply is encoded before the run begins: a reply that
     * cannot be made leaves no run behind. */
    if (!rc && ok_pid(s->b, x, proc))
        rc = -1;
    if (rc)
        start_undo(s, &r);
    else
        council_run_begin(r.run);
    start_free(&r);
    return rc < 0 ? -1 : CN_GEN_REPLY;
}

/* ---------------------------------------------------- lookups by id */

/* What answers a lookup {Op, Registry, RunId} (the row's arg), given the
 * registry's name (NULL: the default) and the id's bytes. */
typedef struct by_id_op {
    int (*answer)(service *s, const char *registry, const char *id, size_t len,
                  ei_x_buff *x);
} by_id_op;

static int call_by_id(cn_node *n, cn_proc *p, const cn_gen_from *from,
                      const cn_gen_call *row, const cn_slice *el, ei_x_buff *x)
{
    const by_id_op *op = row->arg;
    int absent;
    const char *id;
    size_t len;
    char *registry = dup_name(el[1], &absent); /* nil: the default */
    int rc = (!registry && !absent) || cn_term_binary(el[2], &id, &len)
                 ? cn_gen_encode_error(x, "badarg")
                 : op->answer(cn_gen_state(p), registry, id, len, x);
    free(registry);
    return rc;
}

/* A run that has ended is no one's from that moment (the core's
 * COUNCIL_ERUNNER_DEAD: retained, readable by state and result), as a
 * GenServer's name goes with it: unknown_run. runner_dead is left for a
 * running run without a process (a stale entry). */
static int by_whereis(service *s, const char *registry, const char *id, size_t len,
                   ei_x_buff *x)
{
    council_run *run = NULL;
    if (council_whereis(s->b->ctx, registry, id, len, &run) != 0)
        return cn_bridge_encode_error(x, COUNCIL_EUNKNOWN_RUN, NULL);
    cn_proc *rp = cn_run_proc_of(run);
    return rp ? ok_pid(s->b, x, rp) : cn_bridge_encode_error(x, COUNCIL_ERUNNER_DEAD, NULL);
}

static int by_state(service *s, const char *registry, const char *id, size_t len, ei_x_buff *x)
{
    council_summary sum;
    if (council_run_state(s->b->ctx, registry, id, len, &sum) != 0)
        return cn_bridge_encode_error(x, COUNCIL_ENOTFOUND, NULL);
    return OK_TERM(x, cn_summary_term(x, &sum));
}

/* The outcome of a run by id (also a finished one in retention). */
static int by_result(service *s, const char *registry, const char *id, size_t len,
                  ei_x_buff *x)
{
    council_run *run = NULL;
    if (council_run_find(s->b->ctx, registry, id, len, &run) != 0)
        return cn_bridge_encode_error(x, COUNCIL_ENOTFOUND, NULL);
    return cn_outcome_term(x, run);
}

static int by_cancel(service *s, const char *registry, const char *id, size_t len,
                  ei_x_buff *x)
{
    council_run *run = NULL;
    if (council_run_find(s->b->ctx, registry, id, len, &run) != 0)
        return cn_bridge_encode_error(x, COUNCIL_ENOTFOUND, NULL);
    cn_run_proc_cancel(run, NULL);
    return ei_x_encode_atom(x, "ok");
}

static const by_id_op op_whereis = {by_whereis}, op_state = {by_state},
                      op_result = {by_result}, op_cancel = {by_cancel};

/* {outcome_by_pid, Pid}: the outcome of the run whose process Pid is (as
 * its :result) or was, while the run is retained. */
static int call_outcome_by_pid(cn_node *n, cn_proc *p, const cn_gen_from *from,
                               const cn_gen_call *row, const cn_slice *el, ei_x_buff *x)
{
    service *s = cn_gen_state(p);
    cn_pid pid;
    if (get_pid(s->b, el[1], &pid))
        return cn_gen_encode_error(x, "badarg");
    council_run *run = cn_run_proc_run_of_pid(s->b, &pid);
    return run ? cn_outcome_term(x, run) : cn_bridge_encode_error(x, COUNCIL_ENOTFOUND, NULL);
}

/* ------------------------------------------------------ subscriptions */

/* {subscribe, Topic, Pid[, tagged | batched]} and {unsubscribe, Topic, Pid} */
static int call_subscription(cn_node *n, cn_proc *p, const cn_gen_from *from,
                             const cn_gen_call *row, const cn_slice *el, ei_x_buff *x)
{
    service *s = cn_gen_state(p);
    int subscribe = cn_term_is_atom(el[0], "subscribe"), flags = 0;
    if (row->arity == 4 && (!subscribe || !(flags = sub_mode(el[3]))))
        return cn_gen_encode_error(x, "badarg");
    cn_bridge *b = s->b;
    const char *topic;
    size_t len;
    cn_pid pid;
    if (cn_term_binary(el[1], &topic, &len) || len == 0 || get_pid(b, el[2], &pid) || !b->subs)
        return cn_gen_encode_error(x, "badarg");
    if (!subscribe) {
        cn_rsubs_remove(b->subs, topic, len, &pid);
        return ei_x_encode_atom(x, "ok");
    }
    int rc = cn_rsubs_add(b->subs, topic, len, &pid, flags);
    return rc == 0 ? ei_x_encode_atom(x, "ok") : cn_bridge_encode_error(x, rc, "badarg");
}

/* ------------------------------------------------------------- others */

static int call_ping(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row,
                     const cn_slice *el, ei_x_buff *x)
{
    return ei_x_encode_atom(x, "pong");
}

static int count(ei_x_buff *x, const char *key, size_t v)
{
    return ei_x_encode_atom(x, key) || ei_x_encode_ulong(x, (unsigned long)v) ? -1 : 0;
}

static int call_stats(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row,
                      const cn_slice *el, ei_x_buff *x)
{
    service *s = cn_gen_state(p);
    cn_node_stats st;
    council_stats cs;
    cn_node_stats_get(n, &st);
    council_ctx_stats(s->b->ctx, &cs);
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
                   ei_x_encode_map_header(x, 12) ||
                   count(x, "connections", st.connections) ||
                   count(x, "handshakes", st.handshakes) ||
                   count(x, "handshakes_evicted", (size_t)st.handshakes_evicted) ||
                   count(x, "epmd_registered", (size_t)st.epmd_registered) ||
                   count(x, "epmd_losses", (size_t)st.epmd_losses) ||
                   count(x, "too_large", (size_t)st.frames_too_large) ||
                   count(x, "processes", st.processes) ||
                   count(x, "links", st.links) ||
                   count(x, "monitors", st.monitors) ||
                   count(x, "runs", cs.runs_registered) ||
                   count(x, "runs_alive", s->b->runs_alive) ||
                   count(x, "subscriptions", s->b->subs ? cn_rsubs_count(s->b->subs) : 0)
               ? -1
               : 0;
}

/* {validate, Spec}: ok, or the refusal a start with that spec would get */
static int call_validate(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row,
                         const cn_slice *el, ei_x_buff *x)
{
    service *s = cn_gen_state(p);
    const char *why = NULL;
    size_t len = 0;
    char *json = spec_json(el[1], &len, &why);
    if (!json)
        return invalid_spec(x, "spec", why ? why : "not JSON");
    council_spec_error err;
    int rc = cn_spec_cache_check(s->specs, json, len, &err);
    free(json);
    if (rc == COUNCIL_ETOOBIG) /* over --max-spec-bytes: as a start answers it */
        return cn_gen_encode_error(x, "request_too_large");
    return rc == COUNCIL_OK ? ei_x_encode_atom(x, "ok") : invalid_spec(x, err.field, err.message);
}

/* ---------------------------------------------------------- gen_server */

/* The requests of docs/protocol.md ("The registered service"). */
static const cn_gen_call calls[] = {
    {"ping", 0, call_ping, NULL},
    {"stats", 0, call_stats, NULL},
    {"validate", 2, call_validate, NULL},
    {"start", 2, call_start, NULL},
    {"start_link", 2, call_start, NULL},
    {"whereis", 3, call_by_id, &op_whereis},
    {"state", 3, call_by_id, &op_state},
    {"result", 3, call_by_id, &op_result},
    {"cancel", 3, call_by_id, &op_cancel},
    {"outcome_by_pid", 2, call_outcome_by_pid, NULL},
    {"subscribe", 3, call_subscription, NULL},
    {"subscribe", 4, call_subscription, NULL},
    {"unsubscribe", 3, call_subscription, NULL},
    {"unsubscribe", 4, call_subscription, NULL}, /* badarg: only subscribe is tagged */
};

static void handle_call(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice req)
{
    cn_gen_dispatch(n, p, from, req, calls, sizeof calls / sizeof calls[0]);
}

static void handle_down(cn_node *n, cn_proc *p, cn_slice ref, const cn_pid *who,
                        cn_slice reason)
{
    service *s = cn_gen_state(p);
    if (s->b->subs && who)
        cn_rsubs_pid_down(s->b->subs, who);
}

static void terminate(cn_node *n, cn_proc *p, cn_slice reason)
{
    service *s = cn_gen_state(p);
    cn_spec_cache_free(s->specs);
    cn_rsubs_free(s->b->subs);
    s->b->subs = NULL;
    cn_retained_free(s->b->retained);
    s->b->retained = NULL;
    s->b->service = NULL;
    free(s);
}

static const cn_gen_ops ops = {
    .handle_call = handle_call,
    .handle_down = handle_down,
    .terminate = terminate,
};

cn_proc *cn_service_start(cn_node *n, const cn_service_config *cfg)
{
    service *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->cfg = *cfg;
    s->b = cfg->bridge;
    s->specs = cn_spec_cache_new(s->b->ctx);
    s->b->subs = cn_rsubs_new(s->b, cfg->max_subscriptions);
    s->b->retained = cn_retained_new(s->b->ctx, cfg->max_retained);
    cn_proc *p = s->b->subs && s->b->retained && s->specs
                     ? cn_gen_start(n, &ops, s, cfg->name)
                     : NULL;
    if (!p) {
        cn_rsubs_free(s->b->subs);
        s->b->subs = NULL;
        cn_retained_free(s->b->retained);
        s->b->retained = NULL;
        cn_spec_cache_free(s->specs);
        free(s);
        return NULL;
    }
    s->b->service = p;
    /* A client linking to the service must not be able to take it down:
     * exit signals become {'EXIT', From, Reason} messages (ignored). */
    p->trap_exit = 1;
    return p;
}
