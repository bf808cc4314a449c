/* service.c - see service.h. */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_term.h"
#include "gen_server.h"
#include "log.h"
#include "remote_sub.h"
#include "run_proc.h"
#include "spec_cache.h"
#include "term_json.h"

typedef struct service {
    cn_service_config cfg;
    cn_bridge *b;
    cn_spec_cache *specs; /* the same JSON spec is parsed once */
} service;

/* ------------------------------------------------------------- helpers */

static void put_count(ei_x_buff *x, const char *key, size_t v)
{
    ei_x_encode_atom(x, key);
    ei_x_encode_ulong(x, (unsigned long)v);
}


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

static void encode_self_pid(cn_bridge *b, ei_x_buff *x, cn_proc *p)
{
    cn_pid pid;
    cn_node_self(b->node, p, &pid);
    cn_node_encode_pid(b->node, x, &pid);
}

/* ----------------------------------------------------------- start */

typedef struct start_req {
    cn_slice spec, input, run_id, council, registry, user_opts, subscribe;
    cn_slice member_server;
    cn_slice bad_key;
} start_req;

/* Splits the options map; unknown keys are reported in bad_key. */
static int parse_start_opts(cn_slice opts, start_req *r)
{
    memset(r, 0, sizeof *r);
    const char *buf = (const char *)opts.p;
    int index = 0, arity = 0;
    if (ei_decode_map_header(buf, &index, &arity) < 0)
        return -1;
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

static void bad_option(ei_x_buff *x, cn_slice key)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "bad_option");
    ei_x_append_buf(x, (const char *)key.p, (int)key.len);
}

static void bad_option_named(ei_x_buff *x, const char *key)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "bad_option");
    ei_x_encode_atom(x, key);
}

static void invalid_spec(ei_x_buff *x, const char *field, const char *msg)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "invalid_spec");
    ei_x_encode_binary(x, field, (long)strlen(field));
    ei_x_encode_binary(x, msg, (long)strlen(msg));
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

static void do_start(service *s, cn_proc *self, const cn_gen_from *from, cn_slice opts,
                     int link, ei_x_buff *x)
{
    cn_bridge *b = s->b;
    start_req r;
    if (parse_start_opts(opts, &r)) {
        cn_gen_encode_error(x, "badarg");
        return;
    }
    if (r.bad_key.len) {
        bad_option(x, r.bad_key);
        return;
    }
    if (!r.spec.len) {
        bad_option_named(x, "spec");
        return;
    }
    if (!r.input.len) {
        bad_option_named(x, "input");
        return;
    }

    council_start_opts so = {0};
    char *registry = NULL, *council = NULL, *printed = NULL, *json = NULL, *topic = NULL;
    council_spec *spec = NULL;
    council_run *run = NULL;
    cn_pid server, subs[64];
    int sub_flags[64];
    size_t nsubs = 0;
    int absent;

    if (r.registry.len) {
        registry = dup_name(r.registry, &absent);
        if (!registry && !absent) {
            bad_option_named(x, "registry");
            goto out;
        }
    }
    if (r.council.len) {
        council = dup_name(r.council, &absent);
        if (!council && !absent) {
            bad_option_named(x, "council");
            goto out;
        }
    }
    if (r.run_id.len && !cn_term_is_atom(r.run_id, "nil")) {
        const char *p;
        size_t n;
        if (cn_term_binary(r.run_id, &p, &n) || n == 0) {
            bad_option_named(x, "run_id");
            goto out;
        }
        so.run_id = p;
        so.run_id_len = n;
    }
    if (r.member_server.len && !cn_term_is_atom(r.member_server, "nil") &&
        get_pid(b, r.member_server, &server)) {
        bad_option_named(x, "member_server");
        goto out;
    }
    if (r.subscribe.len && !cn_term_is_atom(r.subscribe, "nil")) {
        /* a list of pids, at most 64 */
        cn_slice items[64], el[2];
        long n = cn_term_list(r.subscribe, items, 64, NULL);
        if (n < 0 || n > 64) {
            bad_option_named(x, "subscribe");
            goto out;
        }
        for (long i = 0; i < n; i++) {
            cn_slice item = items[i];
            sub_flags[nsubs] = 0;
            if (cn_term_tuple(item, el, 2) == 2 && cn_term_is_atom(el[1], "tagged")) {
                item = el[0]; /* {Pid, tagged} */
                sub_flags[nsubs] = CN_RSUB_TAGGED;
            }
            if (get_pid(b, item, &subs[nsubs])) {
                bad_option_named(x, "subscribe");
                goto out;
            }
            nsubs++;
        }
    }

    const char *why = NULL;
    size_t json_len = 0;
    json = spec_json(r.spec, &json_len, &why);
    if (!json) {
        invalid_spec(x, "spec", why ? why : "not JSON");
        goto out;
    }
    council_spec_error serr = {{0}, {0}};
    int rc = cn_spec_cache_get(s->specs, json, json_len, &spec, &serr);
    if (rc != 0) {
        if (rc == COUNCIL_ETOOBIG)
            invalid_spec(x, "spec", "spec larger than the configured limit");
        else
            invalid_spec(x, serr.field[0] ? serr.field : "spec",
                         serr.message[0] ? serr.message : council_strerror(rc));
        goto out;
    }
    if (input_of(r.input, &so.input, &printed)) {
        bad_option_named(x, "input");
        goto out;
    }
    so.registry = registry;
    so.council = council;
    so.spec = spec;
    if (r.user_opts.len) {
        so.user_opts = r.user_opts.p;
        so.user_opts_len = r.user_opts.len;
    }
    /* A generated id is made here rather than by the core, so that the
     * subscriptions can come first. */
    char gen[23];
    if (!so.run_id) {
        council_run_id_generate(gen);
        so.run_id = gen;
        so.run_id_len = strlen(gen);
    }
    /* Subscriptions before the run exists, all or nothing: a start refused
     * at any point takes back the (topic, pid) pairs it made (not those
     * subscribed before it), so a subscription refused (limit of the table
     * or of the topic, a node that cannot be reached) leaves no run. */
    size_t tlen = 0, nmade = 0;
    bool made[64];
    if (nsubs && b->subs) {
        size_t plen = sizeof COUNCIL_TOPIC_PREFIX - 1;
        if (!(topic = malloc(plen + so.run_id_len))) {
            cn_gen_encode_error(x, "enomem");
            goto out;
        }
        memcpy(topic, COUNCIL_TOPIC_PREFIX, plen);
        memcpy(topic + plen, so.run_id, so.run_id_len);
        tlen = plen + so.run_id_len;
        for (; nmade < nsubs; nmade++) {
            made[nmade] = !cn_rsubs_has(b->subs, topic, tlen, &subs[nmade]);
            rc = cn_rsubs_add(b->subs, topic, tlen, &subs[nmade], sub_flags[nmade]);
            if (rc != 0) {
                cn_gen_encode_error(x, cn_gen_error_reason(rc));
                goto undo;
            }
        }
    }
    rc = council_run_create(b->ctx, &so, &run);
    if (rc != 0) {
        if (rc == COUNCIL_EEXIST)
            cn_gen_encode_error(x, "already_started");
        else if (rc == COUNCIL_ELIMIT)
            cn_gen_encode_error(x, "limit");
        else if (rc == COUNCIL_EPROVIDER) {
            council_spec_error perr = {{0}, {0}};
            council_ctx_check_providers(b->ctx, spec, &perr);
            invalid_spec(x, perr.field[0] ? perr.field : "members",
                         perr.message[0] ? perr.message : "unknown provider");
        }
        else if (rc == COUNCIL_ESPEC)
            invalid_spec(x, "spec", "invalid spec");
        else
            cn_gen_encode_error(x, "enomem");
        goto undo;
    }
    cn_proc *rp = cn_run_proc_spawn(b, run, r.member_server.len &&
                                               !cn_term_is_atom(r.member_server, "nil")
                                           ? &server : NULL);
    if (!rp) {
        cn_gen_encode_error(x, "enomem");
        goto undo;
    }
    /* Order matters: LINK and subscriptions before the run begins and
     * before the reply, so the caller misses nothing. */
    if (link && cn_node_link(b->node, rp, &from->pid) != 0) {
        cn_gen_encode_error(x, "noconnection");
        goto undo;
    }
    council_run_begin(run);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "ok");
    encode_self_pid(b, x, rp);
    (void)self;
    goto out;
undo:
    /* the pairs go first, so that they do not get the run's end; run is
     * NULL when it was never made */
    for (size_t k = 0; k < nmade; k++)
        if (made[k])
            cn_rsubs_remove(b->subs, topic, tlen, &subs[k]);
    if (run)
        cn_run_proc_cancel(run, NULL);
out:
    free(topic);
    council_run_unref(run);
    council_spec_unref(spec);
    free(json);
    free(printed);
    free(registry);
    free(council);
}

/* ---------------------------------------------------- lookups by id */

/* {Op, Registry, RunId}: registry name (nil = default) and id bytes. */
static int id_args(cn_slice *el, char **registry, const char **id, size_t *len)
{
    int absent;
    *registry = dup_name(el[1], &absent);
    if (!*registry && !absent)
        return -1;
    if (cn_term_binary(el[2], id, len)) {
        free(*registry);
        *registry = NULL;
        return -1;
    }
    return 0;
}

static void do_by_id(service *s, cn_slice op, cn_slice *el, ei_x_buff *x)
{
    cn_bridge *b = s->b;
    char *registry;
    const char *id;
    size_t len;
    if (id_args(el, &registry, &id, &len)) {
        cn_gen_encode_error(x, "badarg");
        return;
    }
    council_run *run = NULL;
    if (cn_term_is_atom(op, "whereis")) {
        int rc = council_whereis(b->ctx, registry, id, len, &run);
        cn_proc *p = rc == 0 ? cn_run_proc_of(run) : NULL;
        if (p) {
            ei_x_encode_tuple_header(x, 2);
            ei_x_encode_atom(x, "ok");
            encode_self_pid(b, x, p);
        } else {
            cn_gen_encode_error(x, rc == COUNCIL_EUNKNOWN_RUN ? "unknown_run" : "runner_dead");
        }
    } else if (cn_term_is_atom(op, "state")) {
        council_summary sum;
        if (council_run_state(b->ctx, registry, id, len, &sum) == 0) {
            ei_x_encode_tuple_header(x, 2);
            ei_x_encode_atom(x, "ok");
            cn_summary_term(x, &sum);
        } else {
            cn_gen_encode_error(x, "not_found");
        }
    } else if (cn_term_is_atom(op, "result")) {
        if (council_run_find(b->ctx, registry, id, len, &run) == 0)
            cn_outcome_term(x, run);
        else
            cn_gen_encode_error(x, "not_found");
    } else { /* cancel */
        if (council_run_find(b->ctx, registry, id, len, &run) == 0) {
            cn_run_proc_cancel(run, NULL);
            ei_x_encode_atom(x, "ok");
        } else {
            cn_gen_encode_error(x, "not_found");
        }
    }
    free(registry);
}

static void do_subscribe(service *s, cn_slice *el, int arity, int subscribe, ei_x_buff *x)
{
    int flags = 0;
    if (arity == 4) {
        if (!subscribe || !cn_term_is_atom(el[3], "tagged")) {
            cn_gen_encode_error(x, "badarg");
            return;
        }
        flags = CN_RSUB_TAGGED;
    }
    cn_bridge *b = s->b;
    const char *topic;
    size_t len;
    cn_pid pid;
    if (cn_term_binary(el[1], &topic, &len) ||
        len == 0 || get_pid(b, el[2], &pid) || !b->subs) {
        cn_gen_encode_error(x, "badarg");
        return;
    }
    if (!subscribe) {
        cn_rsubs_remove(b->subs, topic, len, &pid);
        ei_x_encode_atom(x, "ok");
        return;
    }
    int rc = cn_rsubs_add(b->subs, topic, len, &pid, flags);
    if (rc == 0)
        ei_x_encode_atom(x, "ok");
    else
        cn_gen_encode_error(x, cn_gen_error_reason(rc));
}

/* ---------------------------------------------------------- gen_server */

static void handle_call(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice req)
{
    service *s = cn_gen_state(p);
    ei_x_buff x;
    if (ei_x_new(&x))
        return;
    cn_slice el[4];
    int ar = cn_term_tuple(req, el, 4);
    if (cn_term_is_atom(req, "ping")) {
        ei_x_encode_atom(&x, "pong");
    } else if (cn_term_is_atom(req, "stats")) {
        cn_node_stats st;
        council_stats cs;
        cn_node_stats_get(n, &st);
        council_ctx_stats(s->b->ctx, &cs);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_encode_map_header(&x, 7);
        put_count(&x, "connections", st.connections);
        put_count(&x, "processes", st.processes);
        put_count(&x, "links", st.links);
        put_count(&x, "monitors", st.monitors);
        put_count(&x, "runs", cs.runs_registered);
        put_count(&x, "runs_alive", s->b->runs_alive);
        put_count(&x, "subscriptions", s->b->subs ? cn_rsubs_count(s->b->subs) : 0);
    } else if (ar == 2 && (cn_term_is_atom(el[0], "start") ||
                           cn_term_is_atom(el[0], "start_link"))) {
        do_start(s, p, from, el[1], cn_term_is_atom(el[0], "start_link"), &x);
    } else if (ar == 3 && (cn_term_is_atom(el[0], "whereis") ||
                           cn_term_is_atom(el[0], "state") ||
                           cn_term_is_atom(el[0], "result") ||
                           cn_term_is_atom(el[0], "cancel"))) {
        do_by_id(s, el[0], el, &x);
    } else if ((ar == 3 || ar == 4) && (cn_term_is_atom(el[0], "subscribe") ||
                                        cn_term_is_atom(el[0], "unsubscribe"))) {
        do_subscribe(s, el, ar, cn_term_is_atom(el[0], "subscribe"), &x);
    } else {
        cn_gen_encode_unknown_call(&x, req);
    }
    cn_gen_reply_x(n, p, from, &x);
    ei_x_free(&x);
}

static void handle_down(cn_node *n, cn_proc *p, cn_slice ref, const cn_pid *who,
                        cn_slice reason)
{
    (void)n;
    (void)ref;
    (void)reason;
    service *s = cn_gen_state(p);
    if (s->b->subs && who)
        cn_rsubs_pid_down(s->b->subs, who);
}

static void terminate(cn_node *n, cn_proc *p, cn_slice reason)
{
    (void)n;
    (void)reason;
    service *s = cn_gen_state(p);
    cn_spec_cache_free(s->specs);
    cn_rsubs_free(s->b->subs);
    s->b->subs = NULL;
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
    if (!s->b->subs || !s->specs) {
        cn_rsubs_free(s->b->subs);
        s->b->subs = NULL;
        cn_spec_cache_free(s->specs);
        free(s);
        return NULL;
    }
    cn_proc *p = cn_gen_start(n, &ops, s, cfg->name);
    if (!p) {
        cn_rsubs_free(s->b->subs);
        s->b->subs = NULL;
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
