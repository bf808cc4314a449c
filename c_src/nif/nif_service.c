/* nif_service.c - the service requests of the NIF (see nif.h): what the C
 * node's registered process answers (docs/protocol.md, "The registered
 * service"), in the same terms, plus the context's life (open/close).
 *
 * Requests: {start, Opts, RunPid} and {start_link, Opts, RunPid} (RunPid:
 * the process CouncilEx.Nif spawned, and linked for start_link, to stand
 * for the run), {whereis | state | result | cancel, Registry, RunId},
 * {subscribe, Topic, Pid[, tagged | lib]}, {unsubscribe, Topic, Pid},
 * {validate, Spec}, stats, ping, {open, Config}, close, {setenv, [{Name, Value}]}
 * and {unsetenv, [Name]} (the context's own variables), {subscribers, Topic} (the pids
 * subscribed to a topic, as CouncilEx.PubSub.Relay.subscribers/1 tells
 * for the C node), {inline, true | false} (whether NIF calls may
 * carry requests out themselves, council_nif.c: on by default; off,
 * every request goes through the loop thread, for tests and
 * measurements) and inline ({ok, N}: how many requests NIF calls have
 * carried out themselves since the library loaded). The reply goes to the caller as {Ref, Reply}, or back
 * from the NIF call that carried the request out. Under the drive lock.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "event_term.h"
#include "nif.h"
#include "run_topic.h"
#include "spec_cache.h"
#include "term_json.h"

#define MAX_START_SUBS 64

/* ------------------------------------------------------------ helpers */

static ERL_NIF_TERM invalid_spec(ErlNifEnv *env, const char *field, const char *msg)
{
    return nif_error(env, enif_make_tuple3(env, A.invalid_spec, nif_cstr(env, field),
                                           nif_cstr(env, msg)));
}

static ERL_NIF_TERM bad_option(ErlNifEnv *env, ERL_NIF_TERM key)
{
    return nif_error2(env, A.bad_option, key);
}

/* ------------------------------------------------------------ start */

typedef struct start_req {
    ERL_NIF_TERM spec, input, run_id, council, registry, user_opts, subscribe, server;
    int has_spec, has_input;
    /* parsed */
    council_start_opts so;
    char registry_s[256], council_s[256];
    char *json;
    char *printed;
    council_spec *spec_p;
    char gen_id[23];
    ErlNifBinary input_etf, uo_etf;
    int has_input_etf, has_uo_etf;
    ErlNifPid server_pid, subs[MAX_START_SUBS];
    int has_server, sub_mode[MAX_START_SUBS];
    size_t nsubs;
    /* made (taken back when refused) */
    char *topic;
    size_t topic_len, nmade;
    int made[MAX_START_SUBS];
    council_run *run;
} start_req;

static int given(ERL_NIF_TERM t) { return t && !enif_is_identical(t, A.nil); }

/* The options map into r; an unknown key in *bad. */
static int split_opts(ErlNifEnv *env, ERL_NIF_TERM opts, start_req *r, ERL_NIF_TERM *bad)
{
    ErlNifMapIterator it;
    ERL_NIF_TERM k, v;
    *bad = 0;
    if (!enif_is_map(env, opts) || !enif_map_iterator_create(env, opts, &it, ERL_NIF_MAP_ITERATOR_FIRST))
        return -1;
    while (enif_map_iterator_get_pair(env, &it, &k, &v)) {
        if (enif_is_identical(k, A.spec))
            r->spec = v, r->has_spec = 1;
        else if (enif_is_identical(k, A.input))
            r->input = v, r->has_input = 1;
        else if (enif_is_identical(k, A.run_id))
            r->run_id = v;
        else if (enif_is_identical(k, A.council))
            r->council = v;
        else if (enif_is_identical(k, A.registry))
            r->registry = v;
        else if (enif_is_identical(k, A.user_opts))
            r->user_opts = v;
        else if (enif_is_identical(k, A.subscribe))
            r->subscribe = v;
        else if (enif_is_identical(k, A.member_server))
            r->server = v;
        else if (!*bad)
            *bad = k;
        enif_map_iterator_next(env, &it);
    }
    enif_map_iterator_destroy(env, &it);
    return 0;
}

/* The spec as JSON text: a binary, {json, Binary}, or a JSON-like term
 * (converted as the C node converts it, term_json.h). NULL with *why. */
static char *spec_json(ErlNifEnv *env, ERL_NIF_TERM s, size_t *len, const char **why)
{
    ErlNifBinary b;
    const ERL_NIF_TERM *el;
    int arity;
    if (enif_get_tuple(env, s, &arity, &el) && arity == 2 && enif_is_identical(el[0], A.json))
        s = el[1];
    if (enif_inspect_binary(env, s, &b)) {
        char *out = malloc(b.size + 1);
        if (!out) {
            *why = "out of memory";
            return NULL;
        }
        memcpy(out, b.data, b.size);
        out[b.size] = 0;
        *len = b.size;
        return out;
    }
    ErlNifBinary etf;
    if (!enif_term_to_binary(env, s, &etf)) {
        *why = "out of memory";
        return NULL;
    }
    json_t *j = NULL;
    int index = 1; /* after the version byte */
    char *out = NULL;
    if (etf.size > 1 && term_json_decode((const char *)etf.data, &index, 64, &j, why) == 0) {
        out = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!out)
            *why = "out of memory";
        else
            *len = strlen(out);
    }
    enif_release_binary(&etf);
    return out;
}

/* No run id given: one made for this shard (an id's key names its shard,
 * nif_key_shard, so 1 in n ids fits). A generated id is 22 base64url
 * characters; rather than drawing new ids until one fits (each a few
 * hundred ns), two of its characters (6 random bits each, not the last,
 * which holds padding bits) are tried with every value of the alphabet,
 * 4,096 ids of which one fits but with odds of (1 - 1/n)^4096. */
static void shard_run_id(nif_state *st, start_req *r)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned n = st->lib->n;
    for (;;) {
        council_run_id_generate(r->gen_id);
        size_t len = strlen(r->gen_id);
        if (len < 3 || nif_key_shard(n, r->gen_id, len) == st->shard)
            break;
        int fits = 0;
        for (unsigned i = 0; !fits && i < 64 * 64; i++) {
            r->gen_id[len - 3] = b64[i / 64];
            r->gen_id[len - 2] = b64[i % 64];
            fits = nif_key_shard(n, r->gen_id, len) == st->shard;
        }
        if (fits)
            break;
    }
    r->so.run_id = r->gen_id;
    r->so.run_id_len = strlen(r->gen_id);
}

static ERL_NIF_TERM start_parse(nif_state *st, ErlNifEnv *env, ERL_NIF_TERM opts,
                                start_req *r)
{
    ErlNifEnv *out = st->out;
    ERL_NIF_TERM bad;
    int absent;
    if (split_opts(env, opts, r, &bad))
        return nif_error(out, A.badarg);
    if (bad)
        return bad_option(out, nif_summary(env, bad));
    if (!r->has_spec)
        return bad_option(out, A.spec);
    if (!r->has_input)
        return bad_option(out, A.input);
    if (r->registry && nif_name(env, r->registry, r->registry_s, sizeof r->registry_s, &absent)) {
        if (!absent)
            return bad_option(out, A.registry);
    } else if (r->registry) {
        r->so.registry = r->registry_s;
    }
    if (r->council && nif_name(env, r->council, r->council_s, sizeof r->council_s, &absent)) {
        if (!absent)
            return bad_option(out, A.council);
    } else if (r->council) {
        r->so.council = r->council_s;
    }
    if (given(r->run_id)) {
        ErlNifBinary id;
        if (!enif_inspect_binary(env, r->run_id, &id) || id.size == 0)
            return bad_option(out, A.run_id);
        r->so.run_id = id.data;
        r->so.run_id_len = id.size;
    }
    if (given(r->server)) {
        if (!enif_get_local_pid(env, r->server, &r->server_pid))
            return bad_option(out, A.member_server);
        r->has_server = 1;
    }
    if (given(r->subscribe)) {
        ERL_NIF_TERM list = r->subscribe, head;
        unsigned n;
        if (!enif_get_list_length(env, list, &n) || n > MAX_START_SUBS)
            return bad_option(out, A.subscribe);
        while (enif_get_list_cell(env, list, &head, &list)) {
            const ERL_NIF_TERM *el;
            int arity, mode = NIF_SUB_PLAIN;
            if (enif_get_tuple(env, head, &arity, &el) && arity == 2) {
                if (enif_is_identical(el[1], A.tagged))
                    mode = NIF_SUB_TAGGED;
                else if (enif_is_identical(el[1], A.lib))
                    mode = NIF_SUB_LIB;
                else
                    return bad_option(out, A.subscribe);
                head = el[0];
            }
            if (!enif_get_local_pid(env, head, &r->subs[r->nsubs]))
                return bad_option(out, A.subscribe);
            r->sub_mode[r->nsubs++] = mode;
        }
    }
    /* the spec, parsed once per JSON text */
    const char *why = NULL;
    size_t json_len = 0;
    if (!(r->json = spec_json(env, r->spec, &json_len, &why)))
        return invalid_spec(out, "spec", why ? why : "not JSON");
    council_spec_error serr;
    memset(&serr, 0, sizeof serr);
    int rc = cn_spec_cache_get(st->specs, r->json, json_len, &r->spec_p, &serr);
    if (rc == COUNCIL_ETOOBIG) /* over the context's max_spec_bytes */
        return nif_error(out, A.request_too_large);
    if (rc == COUNCIL_ENOMEM)
        return nif_error(out, A.enomem);
    if (rc != 0)
        return invalid_spec(out, serr.field[0] ? serr.field : "spec",
                            serr.message[0] ? serr.message : council_strerror(rc));
    r->so.spec = r->spec_p;
    /* the input: kept as ETF (handed back in run_started); members see a
     * binary as it is, another term printed in Erlang syntax */
    if (!enif_term_to_binary(env, r->input, &r->input_etf))
        return nif_error(out, A.enomem);
    r->has_input_etf = 1;
    r->so.input.tag = "etf";
    r->so.input.data = r->input_etf.data + 1;
    r->so.input.len = r->input_etf.size - 1;
    ErlNifBinary text;
    if (enif_inspect_binary(env, r->input, &text)) {
        r->so.input.text = (const char *)text.data;
        r->so.input.text_len = text.size;
    } else {
        int index = 0;
        if (ei_s_print_term(&r->printed, (const char *)r->so.input.data, &index) < 0)
            return bad_option(out, A.input);
        r->so.input.text = r->printed;
        r->so.input.text_len = strlen(r->printed);
    }
    /* user_opts: kept as ETF with its version byte (nif_beam.c reads it) */
    if (r->user_opts && !enif_is_identical(r->user_opts, A.nil)) {
        if (!enif_term_to_binary(env, r->user_opts, &r->uo_etf))
            return nif_error(out, A.enomem);
        r->has_uo_etf = 1;
        r->so.user_opts = r->uo_etf.data;
        r->so.user_opts_len = r->uo_etf.size;
    }
    if (!r->so.run_id)
        shard_run_id(st, r);
    return 0;
}

/* Subscriptions before the run exists, all or nothing (as the C node). */
static ERL_NIF_TERM start_subscribe(nif_state *st, start_req *r)
{
    if (!r->nsubs)
        return 0;
    if (!(r->topic = cn_run_topic(r->so.run_id, r->so.run_id_len, &r->topic_len)))
        return nif_error(st->out, A.enomem);
    for (; r->nmade < r->nsubs; r->nmade++) {
        size_t i = r->nmade;
        r->made[i] = !nif_subs_has(st->subs, r->topic, r->topic_len, &r->subs[i]);
        int rc = nif_subs_add(st->subs, r->topic, r->topic_len, &r->subs[i], r->sub_mode[i]);
        if (rc != 0) {
            r->made[i] = 0;
            return nif_error(st->out, nif_reason(rc, A.badarg));
        }
    }
    return 0;
}

/* A start whose run id is taken (as the C node): {error, {already_started,
 * Pid}} with the pid of the running run that has it, or {error,
 * run_id_retained} when that run has ended and is still retained. */
static ERL_NIF_TERM already_started(nif_state *st, const start_req *r)
{
    council_run *run = NULL;
    if (council_run_find(st->ctx, r->so.registry, r->so.run_id, r->so.run_id_len, &run) == 0)
        nif_run_settle(st, run); /* a pid that has exited: its run ends now */
    nif_run *owner = council_whereis(st->ctx, r->so.registry, r->so.run_id, r->so.run_id_len,
                                     &run) == 0
                         ? nif_run_of(run)
                         : NULL;
    if (!owner)
        return nif_error(st->out, A.run_id_retained);
    return nif_error2(st->out, A.already_started, enif_make_pid(st->out, nif_run_pid(owner)));
}

static ERL_NIF_TERM start_create(nif_state *st, start_req *r)
{
    int rc = council_run_create(st->ctx, &r->so, &r->run);
    if (rc == COUNCIL_EPROVIDER) {
        council_spec_error perr;
        memset(&perr, 0, sizeof perr);
        council_ctx_check_providers(st->ctx, r->spec_p, &perr);
        return invalid_spec(st->out, perr.field[0] ? perr.field : "members",
                            perr.message[0] ? perr.message : "unknown provider");
    }
    if (rc == COUNCIL_ESPEC)
        return invalid_spec(st->out, "spec", "invalid spec");
    if (rc == COUNCIL_EEXIST)
        return already_started(st, r);
    if (rc != 0)
        return nif_error(st->out, nif_reason(rc, A.enomem));
    return 0;
}

static void start_undo(nif_state *st, start_req *r)
{
    for (size_t k = 0; k < r->nmade; k++)
        if (r->made[k])
            nif_subs_remove(st->subs, r->topic, r->topic_len, &r->subs[k]);
    if (r->run)
        council_run_cancel(r->run);
}

static void start_free(start_req *r)
{
    free(r->topic);
    council_run_unref(r->run);
    council_spec_unref(r->spec_p);
    free(r->json);
    free(r->printed);
    if (r->has_input_etf)
        enif_release_binary(&r->input_etf);
    if (r->has_uo_etf)
        enif_release_binary(&r->uo_etf);
}

/* {start, Opts, RunPid} of command c: the reply term (built in st->out)
 * when the start is refused; 0 when the run began: RunPid then answers
 * the caller, {Ref, {ok, RunPid}}, once it has its resource (see
 * nif_run_announce); {ok, RunPid} when c is inline (the NIF call returns
 * it, and RunPid only gets its resource). */
static ERL_NIF_TERM do_start(nif_state *st, const nif_cmd *c, ERL_NIF_TERM opts,
                             const ErlNifPid *pid)
{
    ErlNifEnv *env = c->env;
    start_req *r = calloc(1, sizeof *r);
    if (!r)
        return nif_error(st->out, A.enomem);
    ERL_NIF_TERM err = start_parse(st, env, opts, r);
    if (!err)
        err = start_subscribe(st, r);
    if (!err)
        err = start_create(st, r);
    nif_run *run = NULL;
    if (!err) {
        int dead = 0;
        run = nif_run_new(st, r->run, pid, r->has_server ? &r->server_pid : NULL, &dead);
        if (!run)
            err = nif_error(st->out, dead ? A.noproc : A.enomem);
    }
    if (err) {
        /* err lives in st->out: keep it apart while the pid is told */
        ErlNifEnv *keep = enif_alloc_env();
        ERL_NIF_TERM kept = keep ? enif_make_copy(keep, err) : 0;
        enif_clear_env(st->out);
        start_undo(st, r);
        start_free(r);
        free(r);
        nif_send(st, pid, enif_make_tuple3(st->out, A.council_run, A.nil, A.nil));
        if (!keep)
            return nif_error(st->out, A.enomem);
        ERL_NIF_TERM back = enif_make_copy(st->out, kept);
        enif_free_env(keep);
        return back;
    }
    council_run_begin(r->run);
    nif_run_begun(st, run);
    /* inline, the starter is answered here, and the pid only told */
    nif_run_announce(st, run, c->is_inline ? NULL : &c->caller, c->ref);
    start_free(r);
    free(r);
    return c->is_inline ? nif_ok(st->out, enif_make_pid(st->out, pid)) : 0;
}

/* ------------------------------------------------------------ by id */

typedef struct by_id {
    char registry[256];
    const char *reg; /* NULL: the default */
    ErlNifBinary id;
} by_id;

static int id_args(ErlNifEnv *env, const ERL_NIF_TERM *el, by_id *a)
{
    int absent;
    a->reg = NULL;
    if (nif_name(env, el[1], a->registry, sizeof a->registry, &absent) == 0)
        a->reg = a->registry;
    else if (!absent)
        return -1;
    return enif_inspect_binary(env, el[2], &a->id) ? 0 : -1;
}

static ERL_NIF_TERM summary_term(nif_state *st, const council_summary *s)
{
    nif_x_reset(st);
    ERL_NIF_TERM t = 0;
    if (cn_summary_term(&st->x, s) == 0)
        t = nif_x_term(st, st->out);
    return t ? nif_ok(st->out, t) : nif_error(st->out, A.enomem);
}

static ERL_NIF_TERM by_id_call(nif_state *st, nif_cmd *c, ERL_NIF_TERM op,
                               const ERL_NIF_TERM *el)
{
    ErlNifEnv *env = c->env, *out = st->out;
    by_id a;
    council_run *run = NULL;
    if (id_args(env, el, &a))
        return nif_error(out, A.badarg);
    if (council_run_find(st->ctx, a.reg, a.id.data, a.id.size, &run) == 0)
        nif_run_settle(st, run);
    run = NULL;
    if (enif_is_identical(op, A.whereis)) {
        /* as the C node: a run that has ended is unknown_run from then on
         * (still readable by state and result); runner_dead only for a
         * running run whose pid is gone */
        if (council_whereis(st->ctx, a.reg, a.id.data, a.id.size, &run) != 0)
            return nif_error(out, A.unknown_run);
        nif_run *r = nif_run_of(run);
        return r ? nif_ok(out, enif_make_pid(out, nif_run_pid(r))) : nif_error(out, A.runner_dead);
    }
    if (enif_is_identical(op, A.state)) {
        council_summary s;
        if (council_run_state(st->ctx, a.reg, a.id.data, a.id.size, &s) != 0)
            return nif_error(out, A.not_found);
        return summary_term(st, &s);
    }
    if (council_run_find(st->ctx, a.reg, a.id.data, a.id.size, &run) != 0)
        return nif_error(out, A.not_found);
    if (enif_is_identical(op, A.result)) {
        nif_x_reset(st);
        ERL_NIF_TERM t = 0;
        /* the largest reply there is (a whole result): an inline call's
         * is made in the caller's env, where it is returned, not copied
         * there from st->out (the reply is c->reply then, none returned) */
        ErlNifEnv *in = c->is_inline ? env : out;
        if (cn_outcome_term(&st->x, run) == 0)
            t = nif_x_term(st, in);
        if (t && c->is_inline) {
            c->reply = t;
            return 0;
        }
        return t ? t : nif_error(out, A.enomem);
    }
    council_run_cancel(run);
    return A.ok;
}

/* ------------------------------------------------------------ subscriptions */

static ERL_NIF_TERM subscription(nif_state *st, ErlNifEnv *env, const ERL_NIF_TERM *el,
                                 int arity, int subscribe)
{
    ErlNifEnv *out = st->out;
    int mode = NIF_SUB_PLAIN;
    if (arity == 4) {
        if (!subscribe)
            return nif_error(out, A.badarg);
        if (enif_is_identical(el[3], A.tagged))
            mode = NIF_SUB_TAGGED;
        else if (enif_is_identical(el[3], A.lib))
            mode = NIF_SUB_LIB;
        else
            return nif_error(out, A.badarg);
    }
    ErlNifBinary topic;
    ErlNifPid pid;
    if (!enif_inspect_binary(env, el[1], &topic) || topic.size == 0 ||
        !enif_get_local_pid(env, el[2], &pid))
        return nif_error(out, A.badarg);
    if (!subscribe) {
        nif_subs_remove(st->subs, (const char *)topic.data, topic.size, &pid);
        return A.ok;
    }
    int rc = nif_subs_add(st->subs, (const char *)topic.data, topic.size, &pid, mode);
    return rc == 0 ? A.ok : nif_error(out, nif_reason(rc, A.badarg));
}

/* ------------------------------------------------------------ context */

static int cfg_u64(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key, uint64_t *out)
{
    ERL_NIF_TERM v;
    ErlNifUInt64 n;
    if (!enif_get_map_value(env, map, key, &v))
        return 0;
    if (!enif_get_uint64(env, v, &n))
        return -1;
    *out = n;
    return 0;
}

static int cfg_size(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key, size_t *out)
{
    uint64_t v = *out;
    if (cfg_u64(env, map, key, &v))
        return -1;
    *out = (size_t)v;
    return 0;
}

static void on_wake(uv_async_t *h) { (void)h; }

/* The config's exec_allow (a list of binaries, absent: none) into the
 * context: exec is opt-in, as on the C node. */
static int set_exec_allow(council_ctx *ctx, ErlNifEnv *env, ERL_NIF_TERM config)
{
    ERL_NIF_TERM list, head;
    unsigned n = 0;
    if (!enif_get_map_value(env, config, A.exec_allow, &list))
        list = enif_make_list(env, 0);
    if (!enif_get_list_length(env, list, &n) || n > 256)
        return COUNCIL_EINVAL;
    char **paths = enif_alloc((n ? n : 1) * sizeof *paths);
    if (!paths)
        return COUNCIL_ENOMEM;
    unsigned got = 0;
    int rc = COUNCIL_OK;
    ErlNifBinary b;
    while (rc == COUNCIL_OK && enif_get_list_cell(env, list, &head, &list)) {
        if (!enif_inspect_binary(env, head, &b) || memchr(b.data, 0, b.size))
            rc = COUNCIL_EINVAL;
        else if (!(paths[got] = enif_alloc(b.size + 1)))
            rc = COUNCIL_ENOMEM;
        else {
            memcpy(paths[got], b.data, b.size);
            paths[got++][b.size] = 0;
        }
    }
    if (rc == COUNCIL_OK)
        rc = council_ctx_set_exec_allow(ctx, (const char *const *)paths, got);
    for (unsigned i = 0; i < got; i++)
        enif_free(paths[i]);
    enif_free(paths);
    return rc;
}

int nif_ctx_open(nif_state *st, ErlNifEnv *env, ERL_NIF_TERM config)
{
    if (st->ctx)
        return 0;
    council_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (!enif_is_map(env, config) || cfg_u64(env, config, A.retention_ms, &cfg.retention_ms) ||
        cfg_size(env, config, A.max_runs, &cfg.max_runs) ||
        cfg_size(env, config, A.max_retained, &cfg.max_retained) ||
        cfg_size(env, config, A.max_subscribers_per_topic, &cfg.max_subscribers_per_topic) ||
        cfg_size(env, config, A.subscriber_queue_cap, &cfg.subscriber_queue_cap) ||
        cfg_u64(env, config, A.member_timeout_ms, &cfg.member_timeout_ms) ||
        cfg_size(env, config, A.max_spec_bytes, &cfg.max_spec_bytes) ||
        cfg_size(env, config, A.output_cap, &cfg.output_cap))
        return COUNCIL_EINVAL;
    /* max_runs is the library's: every shard's context counts its runs
     * (sub-councils' too) against the library's quota; max_retained is
     * split between them (each keeps its share, the oldest of its own
     * leaving early when that is full) */
    council_config_defaults(&cfg);
    cfg.max_retained = (cfg.max_retained + st->lib->n - 1) / st->lib->n;
    council_ctx *ctx = council_ctx_new(&cfg);
    if (!ctx)
        return COUNCIL_ENOMEM;
    council_run_quota_set_max(st->lib->quota, cfg.max_runs);
    council_ctx_set_run_quota(ctx, st->lib->quota); /* no run yet: cannot fail */
    st->ctx = ctx;
    int rc = set_exec_allow(ctx, env, config);
    if (rc != COUNCIL_OK) {
        nif_ctx_close(st);
        return rc;
    }
    rc = COUNCIL_ENOMEM;
    if ((st->specs = cn_spec_cache_new(ctx)) && (st->subs = nif_subs_new(st, 0)))
        st->beam = nif_beam_register(st, &rc);
    if (!st->beam) {
        nif_ctx_close(st);
        return rc ? rc : COUNCIL_ENOMEM;
    }
    /* keeps the loop alive (see nif.h); never sent */
    if (uv_async_init(council_ctx_uv_loop(ctx), &st->keepalive, on_wake) != 0) {
        nif_ctx_close(st);
        return COUNCIL_ENOMEM;
    }
    st->keepalive_open = 1;
    return 0;
}

void nif_ctx_close(nif_state *st)
{
    if (!st->ctx)
        return;
    nif_runs_shutdown(st);
    if (st->keepalive_open)
        uv_close((uv_handle_t *)&st->keepalive, NULL); /* before the loop goes */
    st->keepalive_open = 0;
    nif_subs_free(st->subs);
    st->subs = NULL;
    cn_spec_cache_free(st->specs);
    st->specs = NULL;
    council_ctx_free(st->ctx); /* releases the beam registrations */
    st->ctx = NULL;
    st->beam = NULL;
    /* what the close sent goes, and the pump's resource with it: the
     * library can unload once the module is purged */
    nif_pump_drop(st);
}

/* ------------------------------------------------------------ environment */

/* {setenv, [{Name, Value}]} and {unsetenv, [Name]}: the context's own
 * variables (council_ctx_setenv), where the core looks for API keys and
 * proxies before the process environment. Nothing here calls setenv(3):
 * other threads of the VM may be in getenv(3) at any time, and the two
 * must not run at once. Names: no '=' and no NUL; values: no NUL. Needs an
 * open context; {error, badarg} for a bad entry (those before it are set). */
static char *env_text(ErlNifEnv *env, ERL_NIF_TERM t, int name)
{
    ErlNifBinary b;
    if (!enif_inspect_binary(env, t, &b) || memchr(b.data, 0, b.size) ||
        (name && (b.size == 0 || b.size > 255 || memchr(b.data, '=', b.size))))
        return NULL;
    char *s = enif_alloc(b.size + 1);
    if (s) {
        memcpy(s, b.data, b.size);
        s[b.size] = 0;
    }
    return s;
}

static void env_text_free(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        enif_free(s);
    }
}

static ERL_NIF_TERM set_env(nif_state *st, ErlNifEnv *env, ERL_NIF_TERM list, int set)
{
    ERL_NIF_TERM head;
    while (enif_get_list_cell(env, list, &head, &list)) {
        const ERL_NIF_TERM *el;
        int arity;
        char *name = NULL, *value = NULL;
        int rc = COUNCIL_EINVAL;
        if (!set)
            name = env_text(env, head, 1);
        else if (enif_get_tuple(env, head, &arity, &el) && arity == 2 &&
                 (name = env_text(env, el[0], 1)))
            value = env_text(env, el[1], 0);
        if (name && (value || !set))
            rc = council_ctx_setenv(st->ctx, name, value);
        env_text_free(name);
        env_text_free(value);
        if (rc != COUNCIL_OK)
            return nif_error(st->out, rc == COUNCIL_ENOMEM ? A.enomem : A.badarg);
    }
    return enif_is_empty_list(env, list) ? A.ok : nif_error(st->out, A.badarg);
}

/* ------------------------------------------------------------ dispatch */

static ERL_NIF_TERM stats(nif_state *st)
{
    ErlNifEnv *out = st->out;
    council_stats cs;
    council_ctx_stats(st->ctx, &cs);
    ERL_NIF_TERM keys[5] = {A.runs, A.runs_alive, A.subscriptions, A.pids, A.pending};
    ERL_NIF_TERM vals[5] = {
        enif_make_uint64(out, cs.runs_registered),
        enif_make_uint64(out, st->runs_alive),
        enif_make_uint64(out, nif_subs_count(st->subs)),
        enif_make_uint64(out, nif_subs_pids(st->subs)),
        enif_make_uint64(out, nif_beam_pending(st->beam)),
    };
    ERL_NIF_TERM map;
    if (!enif_make_map_from_arrays(out, keys, vals, 5, &map))
        return nif_error(out, A.enomem);
    return nif_ok(out, map);
}

/* {validate, Spec}: ok, or the refusal a start with that spec would get */
static ERL_NIF_TERM validate(nif_state *st, ErlNifEnv *env, ERL_NIF_TERM spec)
{
    const char *why = NULL;
    size_t len = 0;
    char *json = spec_json(env, spec, &len, &why);
    if (!json)
        return invalid_spec(st->out, "spec", why ? why : "not JSON");
    council_spec_error err;
    int rc = cn_spec_cache_check(st->specs, json, len, &err);
    free(json);
    if (rc == COUNCIL_ETOOBIG) /* over max_spec_bytes: as a start answers it */
        return nif_error(st->out, A.request_too_large);
    return rc == COUNCIL_OK ? A.ok : invalid_spec(st->out, err.field, err.message);
}

/* c's reply, or 0 when another process gives it (a start that began). */
static ERL_NIF_TERM dispatch(nif_state *st, nif_cmd *c)
{
    ErlNifEnv *env = c->env, *out = st->out;
    ERL_NIF_TERM req = c->a;
    const ERL_NIF_TERM *el;
    int arity = 0;
    if (enif_is_identical(req, A.ping))
        return A.pong;
    if (enif_is_identical(req, A.close)) {
        nif_ctx_close(st);
        return A.ok;
    }
    int tuple = enif_get_tuple(env, req, &arity, &el);
    if (tuple && arity == 2 && enif_is_identical(el[0], A.open)) {
        int rc = nif_ctx_open(st, env, el[1]);
        return rc == 0 ? A.ok : nif_error(out, rc == COUNCIL_EINVAL ? A.badarg : A.enomem);
    }
    if (!st->ctx)
        return nif_error(out, A.unavailable);
    if (tuple && arity == 2 &&
        (enif_is_identical(el[0], A.setenv) || enif_is_identical(el[0], A.unsetenv)))
        return set_env(st, env, el[1], enif_is_identical(el[0], A.setenv));
    if (enif_is_identical(req, A.stats))
        return stats(st);
    if (tuple && arity == 2 && enif_is_identical(el[0], A.validate))
        return validate(st, env, el[1]);
    if (enif_is_identical(req, A.inline_))
        return nif_ok(out, enif_make_uint64(out, st->inlined));
    if (tuple && arity == 2 && enif_is_identical(el[0], A.inline_) &&
        (enif_is_identical(el[1], A.true_) || enif_is_identical(el[1], A.false_))) {
        st->no_inline = enif_is_identical(el[1], A.false_);
        return A.ok;
    }
    if (tuple && arity == 3 &&
        (enif_is_identical(el[0], A.start) || enif_is_identical(el[0], A.start_link))) {
        ErlNifPid pid;
        if (!enif_get_local_pid(env, el[2], &pid))
            return nif_error(out, A.badarg);
        return do_start(st, c, el[1], &pid);
    }
    if (tuple && arity == 3 &&
        (enif_is_identical(el[0], A.whereis) || enif_is_identical(el[0], A.state) ||
         enif_is_identical(el[0], A.result) || enif_is_identical(el[0], A.cancel)))
        return by_id_call(st, c, el[0], el);
    if (tuple && arity == 2 && enif_is_identical(el[0], A.subscribers)) {
        ErlNifBinary topic;
        if (!enif_inspect_binary(env, el[1], &topic))
            return nif_error(out, A.badarg);
        return nif_subs_of(st->subs, out, (const char *)topic.data, topic.size);
    }
    if (tuple && (arity == 3 || arity == 4) && enif_is_identical(el[0], A.subscribe))
        return subscription(st, env, el, arity, 1);
    if (tuple && (arity == 3 || arity == 4) && enif_is_identical(el[0], A.unsubscribe))
        return subscription(st, env, el, arity, 0);
    return nif_error2(out, A.unknown_call, nif_summary(env, req));
}

void nif_service_call(nif_state *st, nif_cmd *c)
{
    ERL_NIF_TERM rep = dispatch(st, c);
    ErlNifEnv *out = st->out;
    if (rep && !nif_reply_inline(st, c, rep))
        nif_send(st, &c->caller, enif_make_tuple2(out, enif_make_copy(out, c->ref), rep));
}
