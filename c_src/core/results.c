/* results.c - member, round and run results, and their JSON views.
 *
 * What it is for: the records the engine fills and events carry, kept in
 * two forms that never disagree: the public structs of council.h and the
 * json_t shapes of docs/protocol.md (built on demand).
 * Not for: deciding anything (engine.c) or publishing (run.c).
 */
#include "council_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* A pointer to a result is a pointer to its public view, and back: the run's
 * result lists its rres as council_round_result pointers, and the JSON views
 * and rres_member cast the other way. */
_Static_assert(offsetof(mres, pub) == 0, "mres starts with its public view");
_Static_assert(offsetof(rres, pub) == 0, "rres starts with its public view");

static void mres_clear(mres *m)
{
    free((char *)m->pub.text);
    free((char *)m->pub.error);
    free((char *)m->pub.parsed_json);
    json_decref(m->parsed);
}

void mres_set_text(mres *m, const char *text, size_t len)
{
    free((char *)m->pub.text);
    m->pub.text = text ? cx_memdup(text, len) : NULL;
    m->pub.text_len = m->pub.text ? len : 0;
}

void mres_set_error(mres *m, const char *msg)
{
    free((char *)m->pub.error);
    m->pub.error = msg ? cx_strdup(msg) : NULL;
    m->pub.ok = msg == NULL;
    m->pub.error_kind = NULL; /* the engine names the kind after setting */
}

void mres_set_parsed(mres *m, json_t *parsed)
{
    json_decref(m->parsed);
    free((char *)m->pub.parsed_json);
    m->parsed = parsed;
    m->pub.parsed_json = parsed ? json_dumps(parsed, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

rres *rres_new(const char *name, unsigned idx, const char *type, size_t n)
{
    size_t each = sizeof(mres *) + sizeof(mres);
    if (!name || n > (SIZE_MAX - sizeof(rres)) / each)
        return NULL;
    rres *r = calloc(1, sizeof *r + n * each);
    if (!r)
        return NULL;
    mres **members = (mres **)(r + 1);
    mres *m = (mres *)(members + n);
    for (size_t i = 0; i < n; i++)
        members[i] = &m[i];
    r->pub.name = name;
    r->pub.idx = idx;
    r->pub.type = type;
    r->pub.n_members = n;
    r->pub.members = (const council_member_result *const *)members;
    return r;
}

void rres_set_member_id(rres *r, size_t i, const char *member_id)
{
    rres_member(r, i)->pub.member_id = member_id;
}

void rres_free(rres *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->pub.n_members; i++)
        mres_clear(rres_member(r, i));
    free((char *)r->pub.text);
    free((char *)r->pub.aggregate_json);
    json_decref(r->aggregate);
    free(r);
}

void rres_set_aggregate(rres *r, json_t *agg)
{
    json_decref(r->aggregate);
    free((char *)r->pub.aggregate_json);
    r->aggregate = agg;
    r->pub.aggregate_json = agg ? json_dumps(agg, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

void rres_set_text(rres *r, const char *text, size_t len)
{
    free((char *)r->pub.text);
    r->pub.text = text ? cx_memdup(text, len) : NULL;
    r->pub.text_len = r->pub.text ? len : 0;
}

/* ------------------------------------------------------------ JSON views */

static json_t *bytes_or_null(const char *s, size_t len)
{
    return s ? json_stringn_nocheck(s, len) : json_null();
}

json_t *council_member_result_json(const council_member_result *p)
{
    if (!p)
        return NULL;
    const mres *m = (const mres *)p;
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "member_id", json_string_nocheck(p->member_id));
    const char *status = council_member_status_name(p->status);
    bad |= json_object_set_new(o, "status", json_string(status ? status : "error"));
    bad |= json_object_set_new(o, "text", bytes_or_null(p->text, p->text_len));
    bad |= json_object_set_new(o, "attempts", json_integer(p->attempts));
    bad |= json_object_set_new(o, "error",
                               p->error ? json_string_nocheck(p->error) : json_null());
    bad |= json_object_set_new(o, "parsed",
                               m->parsed ? json_deep_copy(m->parsed) : json_null());
    bad |= json_object_set_new(o, "error_kind", p->error_kind
                                                    ? json_string(p->error_kind)
                                                    : json_null());
    bad |= json_object_set_new(o, "usage", council_usage_json(&p->usage));
    bad |= json_object_set_new(o, "duration_us", json_integer((json_int_t)p->duration_us));
    bad |= json_object_set_new(o, "provider_us", json_integer((json_int_t)p->provider_us));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *council_tool_event_json(council_event_type type, const council_tool_event *t)
{
    if (!t)
        return NULL;
    json_t *o = json_pack("{s:s,s:s,s:o}", "id", t->id, "name", t->name, "arguments",
                          json_stringn_nocheck(t->arguments, t->arguments_len));
    if (o && type == COUNCIL_EV_TOOL_CALL_RESULT &&
        (json_object_set_new(o, "result", json_stringn_nocheck(t->result, t->result_len)) ||
         json_object_set_new(o, "status", json_string(t->ok ? "ok" : "error")))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *council_usage_json(const council_usage *u)
{
    return json_pack("{s:I,s:I,s:o}", "input_tokens", (json_int_t)u->input_tokens,
                     "output_tokens", (json_int_t)u->output_tokens, "cost",
                     u->has_cost ? json_real(u->cost) : json_null());
}

json_t *council_round_result_json(const council_round_result *p)
{
    if (!p)
        return NULL;
    const rres *r = (const rres *)p;
    json_t *o = json_object(), *ms = json_array();
    if (!o || !ms) {
        json_decref(o);
        json_decref(ms);
        return NULL;
    }
    int bad = 0;
    for (size_t i = 0; i < p->n_members; i++)
        bad |= json_array_append_new(ms, council_member_result_json(p->members[i]));
    bad |= json_object_set_new(o, "name", json_string_nocheck(p->name));
    bad |= json_object_set_new(o, "idx", json_integer(p->idx));
    bad |= json_object_set_new(o, "type", json_string(p->type));
    bad |= json_object_set_new(o, "members", ms);
    bad |= json_object_set_new(o, "aggregate",
                               r->aggregate ? json_deep_copy(r->aggregate) : json_null());
    bad |= json_object_set_new(o, "text", bytes_or_null(p->text, p->text_len));
    bad |= json_object_set_new(o, "usage", council_usage_json(&p->usage));
    bad |= json_object_set_new(o, "duration_us", json_integer((json_int_t)p->duration_us));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *council_result_errors_json(const council_result *res)
{
    json_t *a = json_array();
    if (!a || !res)
        return a;
    for (size_t i = 0; i < res->n_errors; i++)
        if (json_array_append_new(a, json_string_nocheck(res->errors[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* [{kind, member_id, round_name}], one per error (council_error_info) */
static json_t *error_info_json(const council_result *res)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < res->n_errors; i++) {
        const council_error_info *e = council_result_error_info(res, i);
        json_t *o = json_pack("{s:s,s:o,s:o}", "kind", e->kind, "member_id",
                              e->member_id ? json_string_nocheck(e->member_id) : json_null(),
                              "round_name",
                              e->round_name ? json_string_nocheck(e->round_name) : json_null());
        if (json_array_append_new(a, o)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *council_result_json(const council_result *res)
{
    if (!res)
        return NULL;
    json_t *o = json_object(), *rs = json_array();
    if (!o || !rs) {
        json_decref(o);
        json_decref(rs);
        return NULL;
    }
    int bad = 0;
    for (size_t i = 0; i < res->n_rounds; i++)
        bad |= json_array_append_new(rs, council_round_result_json(res->rounds[i]));
    bad |= json_object_set_new(o, "final", bytes_or_null(res->final_text, res->final_len));
    bad |= json_object_set_new(o, "rounds", rs);
    bad |= json_object_set_new(o, "errors", council_result_errors_json(res));
    bad |= json_object_set_new(o, "error_info", error_info_json(res));
    bad |= json_object_set_new(o, "usage", council_usage_json(&res->usage));
    bad |= json_object_set_new(o, "duration_us", json_integer((json_int_t)res->duration_us));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *council_summary_json(const council_summary *s)
{
    if (!s)
        return NULL;
    json_t *cur = s->current_round
                      ? json_pack("{s:o,s:I}", "name", json_string_nocheck(s->current_round),
                                  "idx", (json_int_t)s->current_round_idx)
                      : json_null();
    return json_pack("{s:o,s:o,s:o,s:s,s:o,s:I,s:I}",
                     "run_id", json_stringn_nocheck(s->run_id, s->run_id_len),
                     "council", json_string_nocheck(s->council ? s->council : ""),
                     "registry", json_string_nocheck(s->registry ? s->registry : ""),
                     "status", council_status_name(s->status),
                     "current_round", cur,
                     "rounds_completed", (json_int_t)s->rounds_completed,
                     "started_at", (json_int_t)s->started_at_us);
}

json_t *council_event_payload_json(const council_event *ev)
{
    if (!ev)
        return NULL;
    switch (ev->type) {
    case COUNCIL_EV_MEMBER_COMPLETED:
        return council_member_result_json(ev->member_result);
    case COUNCIL_EV_ROUND_COMPLETED:
        return council_round_result_json(ev->round_result);
    case COUNCIL_EV_RUN_COMPLETED:
    case COUNCIL_EV_RUN_FAILED:
    case COUNCIL_EV_RUN_CANCELLED:
        return council_result_json(ev->result);
    case COUNCIL_EV_TOOL_CALL_REQUEST:
    case COUNCIL_EV_TOOL_CALL_RESULT:
        return council_tool_event_json(ev->type, ev->tool);
    default:
        return NULL;
    }
}
