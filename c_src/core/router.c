/* router.c - routers: who takes part in a round, decided when it starts.
 *
 * What it is for: the registry of routers (council_router_register), the
 * "router" values of a spec compiled into spec_router, the built-in rules
 * evaluated against the run, and the council_route handle a registered
 * router answers (at once or later, like a member call). The engine asks
 * (route_begin) and reads the outcome (route_outcome) before it sets a
 * round up. Not for: what a round does with the members chosen (engine.c).
 */
#include "council_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct router_reg {
    struct router_reg *next;
    char *name;
    council_router_ops ops;
    void *arg;
} router_reg;

enum { ROUTE_WAITING = 0, ROUTE_CHOSEN, ROUTE_FAILED, ROUTE_ABANDONED };

struct council_route {
    int refs;
    int state;
    council_run *run;           /* reference held */
    router_reg *reg;            /* NULL for the built-in rules */
    const spec_router *sr;      /* the run's spec keeps it */
    uint64_t cand, chosen;
    char *error;
    bool timed_out;             /* failed because its router did not answer */
    const char *round_name;     /* the spec's: outlive the route */
    const char *round_type;
    unsigned round_idx;
    json_t *request;            /* made on first use, kept */
    char *request_text;         /* its text, likewise */
    size_t request_len;
    uint64_t id;
    cx_timer timer;             /* the router's time to answer */
};

/* ------------------------------------------------------------ registry */

static router_reg *find_reg(council_ctx *ctx, const char *name)
{
    for (router_reg *r = ctx->routers; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

bool ctx_router_known(council_ctx *ctx, const char *name)
{
    return find_reg(ctx, name) != NULL;
}

int council_router_register(council_ctx *ctx, const char *name,
                            const council_router_ops *ops, void *arg)
{
    if (!ctx || !name || !*name || !ops || !ops->start)
        return COUNCIL_EINVAL;
    if (find_reg(ctx, name))
        return COUNCIL_EEXIST;
    router_reg *r = calloc(1, sizeof *r);
    if (!r || !(r->name = cx_strdup(name))) {
        free(r);
        return COUNCIL_ENOMEM;
    }
    r->ops = *ops;
    r->arg = arg;
    r->next = ctx->routers;
    ctx->routers = r;
    return COUNCIL_OK;
}

void routers_release(council_ctx *ctx)
{
    router_reg *r = ctx->routers;
    ctx->routers = NULL;
    while (r) {
        router_reg *n = r->next;
        if (r->ops.release)
            r->ops.release(r->arg);
        free(r->name);
        free(r);
        r = n;
    }
}

/* ------------------------------------------------------------- compile */

static int bad(council_spec_error *err, const char *field, const char *msg)
{
    if (err) {
        snprintf(err->field, sizeof err->field, "%s", field);
        snprintf(err->message, sizeof err->message, "%s", msg);
    }
    return COUNCIL_ESPEC;
}

/* An array of member ids into a mask. */
static int member_mask(council_spec *s, json_t *a, const char *field, uint64_t *out,
                       council_spec_error *err)
{
    *out = 0;
    if (!json_is_array(a))
        return bad(err, field, "must be an array of member ids");
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        int mi = json_is_string(v) ? spec_member_index(s, json_string_value(v)) : -1;
        if (mi < 0)
            return bad(err, field, "names something that is not a member id of this council");
        *out |= (uint64_t)1 << mi;
    }
    return 0;
}

static bool texts(json_t *v)
{
    if (json_is_string(v))
        return true;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return false;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) if (!json_is_string(e)) return false;
    return true;
}

const char *const router_conditions[ROUTER_N_CONDITIONS] = {
    "input_contains", "previous_text_contains", "previous_winner"};

static int compile_when(council_spec *s, json_t *w, const char *field,
                        council_spec_error *err)
{
    if (!json_is_object(w))
        return bad(err, field, "must be an object of conditions");
    const char *k;
    json_t *v;
    json_object_foreach(w, k, v) {
        if (strcmp(k, router_conditions[0]) == 0 || strcmp(k, router_conditions[1]) == 0) {
            if (!texts(v))
                return bad(err, field, "text conditions take a string or a non-empty "
                                       "array of strings");
        } else if (strcmp(k, router_conditions[2]) == 0) {
            if (!json_is_string(v) || spec_member_index(s, json_string_value(v)) < 0)
                return bad(err, field, "previous_winner must be a member id of this council");
        } else {
            return bad(err, field, "unknown condition (input_contains, "
                                   "previous_text_contains, previous_winner)");
        }
    }
    return 0;
}

static int compile_rules(council_spec *s, spec_router *r, const char *path,
                         council_spec_error *err)
{
    char f[128];
    json_t *jr = json_object_get(r->options, "rules");
    snprintf(f, sizeof f, "%s.rules", path);
    if (!json_is_array(jr) || json_array_size(jr) == 0)
        return bad(err, f, "must be a non-empty array of {\"when\", \"members\"}");
    if (json_array_size(jr) > 256)
        return bad(err, f, "at most 256 rules");
    r->rules = cx_calloc(json_array_size(jr), sizeof *r->rules);
    if (!r->rules)
        return COUNCIL_ENOMEM;
    size_t i;
    json_t *rule;
    json_array_foreach(jr, i, rule) {
        snprintf(f, sizeof f, "%s.rules[%zu]", path, i);
        if (!json_is_object(rule))
            return bad(err, f, "must be an object {\"when\", \"members\"}");
        json_t *w = json_object_get(rule, "when");
        snprintf(f, sizeof f, "%s.rules[%zu].when", path, i);
        int rc = w ? compile_when(s, w, f, err) : 0;
        snprintf(f, sizeof f, "%s.rules[%zu].members", path, i);
        if (rc || (rc = member_mask(s, json_object_get(rule, "members"), f,
                                    &r->rules[i].members, err)))
            return rc;
        r->rules[i].when = w;
        r->n_rules = i + 1;
    }
    json_t *jd = json_object_get(r->options, "default");
    if (jd && !json_is_null(jd)) {
        snprintf(f, sizeof f, "%s.default", path);
        int rc = member_mask(s, jd, f, &r->deflt, err);
        if (rc)
            return rc;
        r->has_default = true;
    }
    return 0;
}

int router_compile(council_spec *s, json_t *v, const char *path, spec_router **out,
                   council_spec_error *err)
{
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    json_t *jn = json_is_object(v) ? json_object_get(v, "name") : v;
    bool rules = json_is_object(v) && json_object_get(v, "rules");
    if (!rules && (!json_is_string(jn) || json_string_length(jn) == 0 ||
                   json_string_length(jn) > 255 ||
                   strlen(json_string_value(jn)) != json_string_length(jn)))
        return bad(err, path, "must be a router's name, {\"name\": name, ...} or "
                              "{\"rules\": [...], \"default\": [...]}");
    if (rules && jn)
        return bad(err, path, "names a router and gives rules: one or the other");
    spec_router *r = calloc(1, sizeof *r);
    if (!r)
        return COUNCIL_ENOMEM;
    *out = r;
    if (json_is_object(v) && !(r->options = json_deep_copy(v)))
        return COUNCIL_ENOMEM;
    if (!rules)
        return (r->name = cx_strdup(json_string_value(jn))) ? 0 : COUNCIL_ENOMEM;
    return compile_rules(s, r, path, err);
}

void router_free(spec_router *r)
{
    if (!r)
        return;
    free(r->name);
    free(r->rules);
    json_decref(r->options);
    free(r);
}

/* --------------------------------------------------------------- rules */

/* Whether hay (n bytes) holds needle, ASCII letters compared case
 * insensitively. */
static bool contains(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (!hay || m > n)
        return false;
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m) {
            char a = hay[i + j], b = needle[j];
            if (a >= 'A' && a <= 'Z')
                a = (char)(a - 'A' + 'a');
            if (b >= 'A' && b <= 'Z')
                b = (char)(b - 'A' + 'a');
            if (a != b)
                break;
            j++;
        }
        if (j == m)
            return true;
    }
    return false;
}

static bool contains_any(const char *hay, size_t n, json_t *v)
{
    if (json_is_string(v))
        return contains(hay, n, json_string_value(v));
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) if (contains(hay, n, json_string_value(e))) return true;
    return false;
}

/* The member id that won the latest round with a winner (vote, ranking,
 * pairwise), or NULL. */
static const char *previous_winner(const council_run *run)
{
    for (size_t i = run_n_rounds(run); i-- > 0;) {
        json_t *w = json_object_get(run_round(run, i)->aggregate, "winner_member");
        if (json_is_string(w))
            return json_string_value(w);
    }
    return NULL;
}

static bool rule_holds(const council_run *run, json_t *when)
{
    const rres *last = run_last_round(run);
    const char *k;
    json_t *v;
    json_object_foreach(when, k, v) {
        if (strcmp(k, "input_contains") == 0) {
            if (!contains_any(run->input.text, run->input.text_len, v))
                return false;
        } else if (strcmp(k, "previous_text_contains") == 0) {
            if (!last || !contains_any(last->pub.text, last->pub.text_len, v))
                return false;
        } else if (strcmp(k, "previous_winner") == 0) {
            const char *w = previous_winner(run);
            if (!w || strcmp(w, json_string_value(v)) != 0)
                return false;
        }
    }
    return true;
}

static uint64_t rules_choose(const council_run *run, const spec_router *r, uint64_t cand)
{
    for (size_t i = 0; i < r->n_rules; i++)
        if (!r->rules[i].when || rule_holds(run, r->rules[i].when))
            return r->rules[i].members & cand;
    return r->has_default ? r->deflt & cand : cand;
}

/* --------------------------------------------------------------- routes */

council_route *council_route_ref(council_route *rt)
{
    if (rt)
        rt->refs++;
    return rt;
}

void council_route_unref(council_route *rt)
{
    if (!rt || --rt->refs > 0)
        return;
    cx_timer_fini(&rt->timer);
    free(rt->error);
    json_decref(rt->request);
    free(rt->request_text);
    council_run_unref(rt->run);
    free(rt);
}

/* Leave WAITING with an outcome; the engine reads it on its next pump. */
static void settle(council_route *rt, int state, const char *error)
{
    rt->state = state;
    cx_timer_stop(&rt->timer);
    if (error && !rt->error)
        rt->error = cx_strdup(error);
    if (rt->run->ctx && rt->run->status == COUNCIL_RUNNING)
        run_kick(rt->run);
}

static void on_timeout(void *arg)
{
    council_route *rt = arg;
    if (rt->state != ROUTE_WAITING)
        return;
    const council_run *run = rt->run;
    uint64_t ms = run->spec->limits.member_timeout_ms;
    if (!ms && run->ctx)
        ms = run->ctx->cfg.member_timeout_ms;
    char msg[96];
    snprintf(msg, sizeof msg, "no answer within %llu ms", (unsigned long long)ms);
    council_route_ref(rt);
    rt->timed_out = true;
    settle(rt, ROUTE_FAILED, msg);
    if (rt->reg->ops.cancel)
        rt->reg->ops.cancel(rt, rt->reg->arg);
    council_route_unref(rt);
}

int route_begin(council_run *run, const spec_router *r, uint64_t cand,
                const char *round_name, unsigned round_idx, const char *type_name,
                council_route **slot)
{
    council_route *rt = calloc(1, sizeof *rt);
    if (!rt)
        return COUNCIL_ENOMEM;
    rt->refs = 1;
    rt->run = council_run_ref(run);
    rt->sr = r;
    rt->cand = cand;
    rt->round_name = round_name;
    rt->round_idx = round_idx;
    rt->round_type = type_name;
    rt->id = ++run->ctx->next_call_id;
    if (!r->name) {
        rt->chosen = rules_choose(run, r, cand);
        rt->state = ROUTE_CHOSEN;
        *slot = rt;
        return 0;
    }
    if (cx_timer_init(run->ctx, &rt->timer, on_timeout, rt) != COUNCIL_OK) {
        council_route_unref(rt);
        return COUNCIL_ENOMEM;
    }
    *slot = rt;
    rt->reg = find_reg(run->ctx, r->name);
    if (!rt->reg) { /* checked at create; a host cannot unregister, but be safe */
        rt->state = ROUTE_FAILED;
        rt->error = cx_strdup("no router of that name is registered");
        return 0;
    }
    uint64_t ms = run->spec->limits.member_timeout_ms ? run->spec->limits.member_timeout_ms
                                                       : run->ctx->cfg.member_timeout_ms;
    cx_timer_start(&rt->timer, ms);
    council_route_ref(rt);
    int rc = rt->reg->ops.start(rt, rt->reg->arg);
    if (rc != 0 && rt->state == ROUTE_WAITING)
        settle(rt, ROUTE_FAILED, council_strerror(rc));
    council_route_unref(rt);
    return 0;
}

int route_outcome(const council_route *rt, uint64_t *members, const char **error,
                  council_fail_kind *kind)
{
    *kind = rt->timed_out ? COUNCIL_FAIL_TRANSIENT : COUNCIL_FAIL_PERMANENT;
    if (rt->state == ROUTE_CHOSEN) {
        *members = rt->chosen;
        return 1;
    }
    if (rt->state == ROUTE_FAILED) {
        *error = rt->error ? rt->error : "failed";
        return -1;
    }
    return 0;
}

void route_end(council_route *rt)
{
    if (!rt)
        return;
    if (rt->state == ROUTE_WAITING) {
        rt->state = ROUTE_ABANDONED;
        cx_timer_stop(&rt->timer);
        if (rt->reg->ops.cancel)
            rt->reg->ops.cancel(rt, rt->reg->arg);
    }
    cx_timer_fini(&rt->timer);
    council_route_unref(rt);
}

int council_route_select(council_route *rt, const char *const *member_ids, size_t n)
{
    if (!rt || (n > 0 && !member_ids))
        return COUNCIL_EINVAL;
    if (rt->state != ROUTE_WAITING)
        return COUNCIL_ESTATE;
    const council_spec *spec = rt->run->spec;
    uint64_t chosen = 0;
    for (size_t i = 0; i < n; i++) {
        int mi = member_ids[i] ? spec_member_index(spec, member_ids[i]) : -1;
        if (mi < 0 || !(rt->cand & ((uint64_t)1 << mi))) {
            char msg[192];
            snprintf(msg, sizeof msg, "chose \"%.100s\", which is not one of the round's "
                                      "members", member_ids[i] ? member_ids[i] : "(null)");
            settle(rt, ROUTE_FAILED, msg);
            return COUNCIL_EINVAL;
        }
        chosen |= (uint64_t)1 << mi;
    }
    rt->chosen = chosen;
    settle(rt, ROUTE_CHOSEN, NULL);
    return COUNCIL_OK;
}

int council_route_fail(council_route *rt, const char *message)
{
    if (!rt)
        return COUNCIL_EINVAL;
    if (rt->state != ROUTE_WAITING)
        return COUNCIL_ESTATE;
    settle(rt, ROUTE_FAILED, message ? message : "failed");
    return COUNCIL_OK;
}

json_t *council_route_request_json(const council_route *rt)
{
    if (!rt->request) {
        council_route *m = (council_route *)rt; /* made once, kept */
        council_run *run = rt->run;
        const council_spec *spec = run->spec;
        json_t *members = json_array(), *rounds = json_array();
        for (size_t i = 0; members && i < spec->n_members; i++)
            if (rt->cand & ((uint64_t)1 << i))
                json_array_append_new(members, json_string(spec->members[i].id));
        for (size_t i = 0; rounds && i < run_n_rounds(run); i++)
            json_array_append_new(rounds, council_round_result_json(&run_round(run, i)->pub));
        json_t *req = json_pack(
            "{s:o,s:o,s:s,s:O?,s:{s:s,s:I,s:s},s:o,s:o,s:o}",
            "run_id", cx_json_text(run->run_id, run->run_id_len),
            "council", cx_json_text(run->council, strlen(run->council)),
            "router", rt->sr->name ? rt->sr->name : "rules",
            "options", rt->sr->options,
            "round", "name", rt->round_name, "idx", (json_int_t)rt->round_idx, "type",
            rt->round_type,
            "input", run->input.text ? cx_json_text(run->input.text, run->input.text_len)
                                     : json_null(),
            "members", members, "rounds", rounds);
        m->request = req; /* NULL when out of memory: tried again next time */
    }
    return rt->request;
}

const char *council_route_request(const council_route *rt, size_t *len)
{
    if (len)
        *len = 0;
    if (!rt)
        return NULL;
    if (!rt->request_text) {
        council_route *m = (council_route *)rt; /* made once, kept */
        const json_t *req = council_route_request_json(rt);
        if (!req || !(m->request_text = json_dumps(req, JSON_COMPACT)))
            return NULL;
        m->request_len = strlen(m->request_text);
    }
    if (len)
        *len = rt->request_len;
    return rt->request_text;
}

const char *council_route_router(const council_route *rt)
{
    return rt && rt->sr->name ? rt->sr->name : "rules";
}

council_run *council_route_run(const council_route *rt) { return rt ? rt->run : NULL; }
uint64_t council_route_id(const council_route *rt) { return rt ? rt->id : 0; }
int council_route_active(const council_route *rt)
{
    return rt && rt->state == ROUTE_WAITING;
}
