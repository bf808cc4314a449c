/* spec.c - the council spec: building it from C calls or JSON, checking it
 * and compiling it into the model the round engine walks.
 *
 * Both ways of building end in the same place: a JSON document (the C
 * builders append to one) that spec_compile checks field by field, naming
 * the path of the first bad field. A compiled spec is frozen and shared.
 * Not for: running anything; providers are resolved when a run is created.
 */
#include "council_internal.h"
#include "llm.h"
#include "rounds.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ---------------------------------------------------------------- errors */

static int fail(council_spec_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(council_spec_error *err, const char *field, const char *fmt, ...)
{
    if (err) {
        snprintf(err->field, sizeof err->field, "%s", field);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return COUNCIL_ESPEC;
}

static void pathf(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void pathf(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------- lifecycle */

council_spec *council_spec_new(const char *id)
{
    council_spec *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->refs = 1;
    s->chair = -1;
    s->doc = json_pack("{s:[],s:[]}", "members", "rounds");
    if (!s->doc) {
        free(s);
        return NULL;
    }
    if (id && json_object_set_new(s->doc, "id", json_string(id)) != 0) {
        json_decref(s->doc);
        free(s);
        return NULL;
    }
    return s;
}

static void round_clear(spec_round *r)
{
    for (size_t i = 0; i < r->n_children; i++)
        round_clear(&r->children[i]);
    free(r->children);
    free(r->name);
    free(r->gate);
    free(r->instructions);
    router_free(r->router);
    json_decref(r->options);
}

static void model_clear(council_spec *s)
{
    for (size_t i = 0; i < s->n_members; i++) {
        free(s->members[i].id);
        free(s->members[i].provider);
        free(s->members[i].options_text);
        json_decref(s->members[i].options);
        council_spec_unref(s->members[i].sub);
        free(s->members[i].sub_error);
    }
    free(s->members);
    for (size_t i = 0; i < s->n_rounds; i++)
        round_clear(&s->rounds[i]);
    free(s->rounds);
    free(s->id);
    router_free(s->router);
    s->router = NULL;
    s->members = NULL;
    s->rounds = NULL;
    s->id = NULL;
    s->n_members = s->n_rounds = 0;
    s->chair = -1;
}

council_spec *council_spec_ref(council_spec *spec)
{
    if (spec)
        spec->refs++;
    return spec;
}

void council_spec_unref(council_spec *spec)
{
    if (!spec || --spec->refs > 0)
        return;
    model_clear(spec);
    json_decref(spec->doc);
    free(spec);
}

const char *const spec_until_names[2] = {[STOP_NONE] = "none", [STOP_CONSENSUS] = "consensus"};
const char *const spec_failure_modes[2] = {"continue", "fail_fast"};

const char *council_spec_id(const council_spec *spec)
{
    if (!spec)
        return NULL;
    if (spec->frozen)
        return spec->id;
    return json_string_value(json_object_get(spec->doc, "id"));
}

size_t council_spec_member_count(const council_spec *spec)
{
    if (!spec)
        return 0;
    if (spec->frozen)
        return spec->n_members;
    return json_array_size(json_object_get(spec->doc, "members"));
}

int spec_member_index(const council_spec *spec, const char *id)
{
    for (size_t i = 0; i < spec->n_members; i++)
        if (strcmp(spec->members[i].id, id) == 0)
            return (int)i;
    return -1;
}

/* -------------------------------------------------------------- builders */

/* Every builder's first check: COUNCIL_EINVAL for a NULL spec or bad
 * arguments (bad), then COUNCIL_ESTATE once the spec is frozen; else 0. */
static int editable(const council_spec *spec, bool bad)
{
    return !spec || bad ? COUNCIL_EINVAL : spec->frozen ? COUNCIL_ESTATE : COUNCIL_OK;
}

/* Into the document: v (a new reference; NULL when making it ran out of
 * memory) appended to the array at key (append), or set as key; or, when
 * !given, key removed. */
static int doc_put(council_spec *spec, const char *key, bool given, json_t *v, bool append)
{
    if (!given) {
        json_object_del(spec->doc, key);
        return COUNCIL_OK;
    }
    if (!v)
        return COUNCIL_ENOMEM;
    int bad = append ? json_array_append_new(json_object_get(spec->doc, key), v)
                     : json_object_set_new(spec->doc, key, v);
    return bad ? COUNCIL_ENOMEM : COUNCIL_OK;
}

static int parse_options(const char *options_json, json_t **out)
{
    if (!options_json) {
        *out = json_object();
        return *out ? 0 : COUNCIL_ENOMEM;
    }
    json_error_t je;
    memset(&je, 0, sizeof je); /* jansson leaves it unset on some allocation failures */
    json_t *o = json_loads(options_json, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        return CX_JSON_ERR(je, COUNCIL_EPARSE);
    if (!json_is_object(o)) {
        json_decref(o);
        return COUNCIL_EPARSE;
    }
    *out = o;
    return 0;
}

int council_spec_add_member(council_spec *spec, const char *id,
                            const char *provider_name, const char *options_json)
{
    json_t *opts;
    int rc = editable(spec, !id || !provider_name || !cx_utf8_valid(id, strlen(id)) ||
                                !cx_utf8_valid(provider_name, strlen(provider_name)));
    if (rc || (rc = parse_options(options_json, &opts)))
        return rc;
    return doc_put(spec, "members", true,
                   json_pack("{s:s,s:s,s:o}", "id", id, "provider", provider_name, "options",
                             opts),
                   true);
}

int council_spec_add_round(council_spec *spec, const char *type,
                           const char *name, const char *options_json)
{
    json_t *opts;
    int rc = editable(spec, !type || !cx_utf8_valid(type, strlen(type)) ||
                                (name && !cx_utf8_valid(name, strlen(name))));
    if (rc || (rc = parse_options(options_json, &opts)))
        return rc;
    json_t *r = json_pack("{s:s,s:o}", "type", type, "options", opts);
    if (r && name && json_object_set_new(r, "name", json_string(name))) {
        json_decref(r);
        return COUNCIL_ENOMEM;
    }
    return doc_put(spec, "rounds", true, r, true);
}

int council_spec_set_chair(council_spec *spec, const char *member_id)
{
    int rc = editable(spec, false);
    if (rc || !member_id)
        return rc ? rc : doc_put(spec, "chair", false, NULL, false);
    if (!cx_utf8_valid(member_id, strlen(member_id)))
        return COUNCIL_EINVAL;
    return doc_put(spec, "chair", true, json_string(member_id), false);
}

int council_spec_set_router(council_spec *spec, const char *router_json)
{
    int rc = editable(spec, false);
    if (rc || !router_json)
        return rc ? rc : doc_put(spec, "router", false, NULL, false);
    json_error_t je;
    memset(&je, 0, sizeof je);
    json_t *r = json_loads(router_json, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!r)
        return CX_JSON_ERR(je, COUNCIL_EPARSE);
    return doc_put(spec, "router", true, r, false);
}

int council_spec_set_limits(council_spec *spec, const council_limits *limits)
{
    int rc = editable(spec, !limits);
    if (rc)
        return rc;
    json_t *l = json_pack("{s:I,s:I,s:I,s:I}",
                          "member_timeout_ms", (json_int_t)limits->member_timeout_ms,
                          "max_attempts", (json_int_t)limits->max_attempts,
                          "backoff_ms", (json_int_t)limits->backoff_ms,
                          "concurrency", (json_int_t)limits->concurrency);
    return doc_put(spec, "limits", true, l, false);
}

/* ------------------------------------------------------------- compiling */

/* Read an optional non-negative integer field. */
static int get_uint(json_t *obj, const char *key, uint64_t max, uint64_t *out,
                    const char *path, council_spec_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    char f[128];
    pathf(f, sizeof f, "%s%s%s", path, *path ? "." : "", key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max)
        return fail(err, f, "must be an integer from 0 to %llu",
                    (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int compile_rounds(council_spec *s, json_t *arr, const char *path,
                          int depth, spec_round **out, size_t *n_out,
                          council_spec_error *err);

/* Look a key up in the round's options, then on the round itself. */
static json_t *round_get(json_t *round, json_t *opts, const char *key)
{
    json_t *v = json_object_get(opts, key);
    return v ? v : json_object_get(round, key);
}

static int compile_round(council_spec *s, json_t *jr, const char *path,
                         int depth, spec_round *r, council_spec_error *err)
{
    char f[128];
    int rc;
    r->synth_member = -1;
    if (!json_is_object(jr))
        return fail(err, path, "must be an object");
    json_t *jt = json_object_get(jr, "type");
    pathf(f, sizeof f, "%s.type", path);
    if (!json_is_string(jt))
        return fail(err, f, "is required and must be a string");
    if (round_type_parse(json_string_value(jt), &r->type))
        return fail(err, f, "unknown round type \"%.60s\"", json_string_value(jt));
    json_t *jn = json_object_get(jr, "name");
    pathf(f, sizeof f, "%s.name", path);
    if (jn && !json_is_null(jn)) {
        if (!json_is_string(jn) || json_string_length(jn) == 0 ||
            json_string_length(jn) > SPEC_MAX_NAME_BYTES ||
            strlen(json_string_value(jn)) != json_string_length(jn))
            return fail(err, f, "must be a non-empty string of at most %d bytes",
                        SPEC_MAX_NAME_BYTES);
        r->name = cx_strdup(json_string_value(jn));
    } else {
        r->name = cx_strdup(round_type_name(r->type));
    }
    if (!r->name)
        return COUNCIL_ENOMEM;
    json_t *jo = json_object_get(jr, "options");
    pathf(f, sizeof f, "%s.options", path);
    if (jo && !json_is_null(jo) && !json_is_object(jo))
        return fail(err, f, "must be an object");
    r->options = (jo && json_is_object(jo)) ? json_deep_copy(jo) : json_object();
    if (!r->options)
        return COUNCIL_ENOMEM;
    jo = r->options;

    json_t *jm = json_object_get(jo, "members");
    if (jm && !json_is_null(jm)) {
        pathf(f, sizeof f, "%s.options.members", path);
        if (!json_is_array(jm) || json_array_size(jm) == 0)
            return fail(err, f, "must be a non-empty array of member ids");
        r->gated = true;
        r->gate = calloc(json_array_size(jm), sizeof *r->gate);
        if (!r->gate)
            return COUNCIL_ENOMEM;
        size_t i;
        json_t *v;
        json_array_foreach(jm, i, v) {
            pathf(f, sizeof f, "%s.options.members[%zu]", path, i);
            int mi = json_is_string(v) ? spec_member_index(s, json_string_value(v)) : -1;
            if (mi < 0)
                return fail(err, f, "is not a member id of this council");
            for (size_t k = 0; k < r->n_gate; k++)
                if (r->gate[k] == (size_t)mi)
                    return fail(err, f, "names a member twice");
            r->gate[r->n_gate++] = (size_t)mi;
        }
        /* keep spec order: labels and fairness do not depend on the list */
        for (size_t a = 1; a < r->n_gate; a++)
            for (size_t b = a; b > 0 && r->gate[b - 1] > r->gate[b]; b--) {
                size_t t = r->gate[b];
                r->gate[b] = r->gate[b - 1];
                r->gate[b - 1] = t;
            }
    }
    json_t *jfm = json_object_get(jo, "failure_mode");
    if (jfm && !json_is_null(jfm)) {
        pathf(f, sizeof f, "%s.options.failure_mode", path);
        const char *fm = json_string_value(jfm);
        if (!fm || (strcmp(fm, spec_failure_modes[0]) != 0 &&
                    strcmp(fm, spec_failure_modes[1]) != 0))
            return fail(err, f, "must be \"%s\" or \"%s\"", spec_failure_modes[0],
                        spec_failure_modes[1]);
        r->fail_fast = strcmp(fm, spec_failure_modes[1]) == 0;
    }
    pathf(f, sizeof f, "%s.options.router", path);
    if ((rc = router_compile(s, json_object_get(jo, "router"), f, &r->router, err)))
        return rc;
    json_t *ji = json_object_get(jo, "instructions");
    if (ji && !json_is_null(ji)) {
        pathf(f, sizeof f, "%s.options.instructions", path);
        if (!json_is_string(ji))
            return fail(err, f, "must be a string");
        if (!(r->instructions = cx_strdup(json_string_value(ji))))
            return COUNCIL_ENOMEM;
    }
    if (r->type == RT_SYNTHESIS) {
        json_t *jmem = json_object_get(jo, "member");
        if (jmem && !json_is_null(jmem)) {
            pathf(f, sizeof f, "%s.options.member", path);
            int mi = json_is_string(jmem) ? spec_member_index(s, json_string_value(jmem)) : -1;
            if (mi < 0)
                return fail(err, f, "is not a member id of this council");
            r->synth_member = mi;
        }
    }
    if (r->type == RT_ITERATE) {
        if (depth + 1 >= SPEC_MAX_DEPTH) {
            return fail(err, path, "iterate rounds nest at most %d deep",
                        SPEC_MAX_DEPTH - 1);
        }
        json_t *jc = round_get(jr, jo, "rounds");
        pathf(f, sizeof f, "%s.options.rounds", path);
        if (!json_is_array(jc) || json_array_size(jc) < SPEC_MIN_ROUNDS)
            return fail(err, f, "iterate needs a non-empty array of rounds");
        rc = compile_rounds(s, jc, f, depth + 1, &r->children, &r->n_children, err);
        if (rc)
            return rc;
        json_t *jx = round_get(jr, jo, "max_iterations");
        pathf(f, sizeof f, "%s.options.max_iterations", path);
        r->max_iterations = SPEC_DEFAULT_ITERATIONS;
        if (jx && !json_is_null(jx)) {
            if (!json_is_integer(jx) || json_integer_value(jx) < 1 ||
                json_integer_value(jx) > SPEC_MAX_ITERATIONS)
                return fail(err, f, "must be an integer from 1 to %d",
                            SPEC_MAX_ITERATIONS);
            r->max_iterations = (unsigned)json_integer_value(jx);
        }
        json_t *ju = round_get(jr, jo, "until");
        pathf(f, sizeof f, "%s.options.until", path);
        r->until = STOP_NONE;
        if (ju && !json_is_null(ju)) {
            const char *u = json_string_value(ju);
            if (u && strcmp(u, spec_until_names[STOP_CONSENSUS]) == 0)
                r->until = STOP_CONSENSUS;
            else if (!u || strcmp(u, spec_until_names[STOP_NONE]) != 0)
                return fail(err, f, "must be \"%s\" or \"%s\"", spec_until_names[STOP_CONSENSUS],
                            spec_until_names[STOP_NONE]);
        }
    }
    return 0;
}

static int compile_rounds(council_spec *s, json_t *arr, const char *path,
                          int depth, spec_round **out, size_t *n_out,
                          council_spec_error *err)
{
    size_t n = json_array_size(arr);
    if (n > SPEC_MAX_ROUNDS)
        return fail(err, path, "at most %d rounds", SPEC_MAX_ROUNDS);
    spec_round *rs = cx_calloc(n, sizeof *rs);
    if (!rs)
        return COUNCIL_ENOMEM;
    *out = rs;
    for (size_t i = 0; i < n; i++) {
        char f[128];
        pathf(f, sizeof f, "%s[%zu]", path, i);
        *n_out = i + 1;
        int rc = compile_round(s, json_array_get(arr, i), f, depth, &rs[i], err);
        if (rc)
            return rc;
    }
    return 0;
}

static int spec_freeze(council_spec *s, unsigned level, council_spec_error *err);

/* A council member's spec, compiled once with the spec that holds it (at
 * nesting level `level`) rather than at every call. One nested deeper than
 * a sub-council may run is left alone: its calls fail on the depth before
 * they need it. An invalid one does not make its parent invalid: it is
 * kept as the member error of each call. Returns 0 or COUNCIL_ENOMEM. */
static int compile_sub(spec_member *m, unsigned level)
{
    if (level > SUB_COUNCIL_MAX_DEPTH)
        return 0;
    council_spec *sub = calloc(1, sizeof *sub);
    if (!sub)
        return COUNCIL_ENOMEM;
    sub->refs = 1;
    sub->chair = -1;
    sub->doc = json_incref(json_object_get(m->options, "spec")); /* never changed */
    council_spec_error err;
    int rc = spec_freeze(sub, level, &err);
    if (rc == 0) {
        m->sub = sub;
        return 0;
    }
    council_spec_unref(sub);
    if (rc != COUNCIL_ESPEC)
        return rc;
    char msg[512];
    snprintf(msg, sizeof msg, "sub-council: spec %s: %s", err.field, err.message);
    m->sub_error = cx_strdup(msg);
    return m->sub_error ? 0 : COUNCIL_ENOMEM;
}

static int compile_member(council_spec *s, json_t *jm, size_t i, unsigned level,
                          council_spec_error *err)
{
    char f[128];
    spec_member *m = &s->members[i];
    pathf(f, sizeof f, "members[%zu]", i);
    if (!json_is_object(jm))
        return fail(err, f, "must be an object");
    json_t *ji = json_object_get(jm, "id");
    pathf(f, sizeof f, "members[%zu].id", i);
    if (!json_is_string(ji) || json_string_length(ji) == 0 ||
        json_string_length(ji) > SPEC_MAX_NAME_BYTES ||
        strlen(json_string_value(ji)) != json_string_length(ji))
        return fail(err, f, "is required: a non-empty string of at most %d bytes",
                    SPEC_MAX_NAME_BYTES);
    if (spec_member_index(s, json_string_value(ji)) >= 0)
        return fail(err, f, "duplicate member id \"%.60s\"", json_string_value(ji));
    json_t *jp = json_object_get(jm, "provider");
    pathf(f, sizeof f, "members[%zu].provider", i);
    if (!json_is_string(jp) || json_string_length(jp) == 0)
        return fail(err, f, "is required and must be a non-empty string");
    json_t *jo = json_object_get(jm, "options");
    pathf(f, sizeof f, "members[%zu].options", i);
    if (jo && !json_is_null(jo) && !json_is_object(jo))
        return fail(err, f, "must be an object");
    m->id = cx_strdup(json_string_value(ji));
    m->provider = cx_strdup(json_string_value(jp));
    m->options = (jo && json_is_object(jo)) ? json_deep_copy(jo) : json_object();
    cx_label(i, m->label);
    s->n_members = i + 1;
    if (!m->id || !m->provider || !m->options)
        return COUNCIL_ENOMEM;
    m->options_text = json_dumps(m->options, JSON_COMPACT);
    if (!m->options_text)
        return COUNCIL_ENOMEM;
    /* options every provider honours: the member's own timeout and retry
     * policy, within the limits' ranges */
    uint64_t u = 0;
    pathf(f, sizeof f, "members[%zu].options", i);
    int rc = get_uint(m->options, "timeout_ms", SPEC_LIMIT_MAX_MEMBER_TIMEOUT_MS, &u, f, err);
    if (!rc && !(rc = get_uint(m->options, "max_attempts", SPEC_LIMIT_MAX_ATTEMPTS, &u, f, err)))
        m->max_attempts = json_object_get(m->options, "max_attempts") && u ? (unsigned)u : 0;
    u = 0;
    if (!rc && !(rc = get_uint(m->options, "backoff_ms", SPEC_LIMIT_MAX_BACKOFF_MS, &u, f, err)))
        m->backoff_ms = json_is_integer(json_object_get(m->options, "backoff_ms")) ? (int64_t)u : -1;
    if (rc)
        return rc;
    if (strcmp(m->provider, "exec") == 0) {
        json_t *argv = json_object_get(m->options, "argv");
        pathf(f, sizeof f, "members[%zu].options.argv", i);
        if (!json_is_array(argv) || json_array_size(argv) == 0 ||
            json_array_size(argv) > 256)
            return fail(err, f, "exec needs an array of 1 to 256 strings");
        size_t k;
        json_t *a;
        json_array_foreach(argv, k, a) {
            if (!json_is_string(a) ||
                strlen(json_string_value(a)) != json_string_length(a))
                return fail(err, f, "element %zu is not a string", k);
        }
    }
    if (llm_is_provider(m->provider)) {
        rc = llm_check_options(m->provider, m->options, i, err);
        if (rc)
            return rc;
    }
    if (strcmp(m->provider, "council") == 0 &&
        !json_is_object(json_object_get(m->options, "spec"))) {
        pathf(f, sizeof f, "members[%zu].options.spec", i);
        return fail(err, f, "a council member needs its council spec (an object)");
    }
    if (strcmp(m->provider, "council") == 0) {
        rc = compile_sub(m, level + 1);
        if (rc)
            return rc;
    }
    if (strcmp(m->provider, "mock") == 0) {
        static const char *const list_keys[] = {"fail_attempts", "hang_attempts"};
        for (size_t k = 0; k < 2; k++) {
            json_t *l = json_object_get(m->options, list_keys[k]);
            pathf(f, sizeof f, "members[%zu].options.%s", i, list_keys[k]);
            if (l && !json_is_array(l))
                return fail(err, f, "must be an array of attempt numbers");
        }
        pathf(f, sizeof f, "members[%zu].options", i);
        rc = get_uint(m->options, "latency_ms", 3600000, &u, f, err);
        if (!rc)
            rc = get_uint(m->options, "chunks", 10000, &u, f, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* How many rounds a list of rounds may run at most: an iterate round counts
 * once plus max_iterations times its nested rounds. Saturates above limit. */
static uint64_t rounds_bound(const spec_round *rs, size_t n, uint64_t limit)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n && total <= limit; i++) {
        total++;
        if (rs[i].type == RT_ITERATE) {
            uint64_t per = rounds_bound(rs[i].children, rs[i].n_children, limit);
            total += per > limit ? limit + 1 : per * rs[i].max_iterations;
        }
    }
    return total;
}

/* level: 0 for a spec of its own, n for one nested n deep in council
 * members (see compile_sub). */
static int spec_compile(council_spec *s, unsigned level, council_spec_error *err)
{
    json_t *d = s->doc;
    if (!json_is_object(d))
        return fail(err, "$", "a spec must be a JSON object");
    json_t *ji = json_object_get(d, "id");
    if (!json_is_string(ji) || json_string_length(ji) == 0 ||
        strlen(json_string_value(ji)) != json_string_length(ji))
        return fail(err, "id", "is required and must be a non-empty string");
    if (!(s->id = cx_strdup(json_string_value(ji))))
        return COUNCIL_ENOMEM;

    json_t *jm = json_object_get(d, "members");
    if (!json_is_array(jm) || json_array_size(jm) < SPEC_MIN_MEMBERS)
        return fail(err, "members", "must be a non-empty array");
    if (json_array_size(jm) > SPEC_MAX_MEMBERS)
        return fail(err, "members", "at most %d members", SPEC_MAX_MEMBERS);
    s->members = calloc(json_array_size(jm), sizeof *s->members);
    if (!s->members)
        return COUNCIL_ENOMEM;
    for (size_t i = 0; i < json_array_size(jm); i++) {
        int rc = compile_member(s, json_array_get(jm, i), i, level, err);
        if (rc)
            return rc;
    }

    json_t *jc = json_object_get(d, "chair");
    if (jc && !json_is_null(jc)) {
        int mi = json_is_string(jc) ? spec_member_index(s, json_string_value(jc)) : -1;
        if (mi < 0)
            return fail(err, "chair", "is not a member id of this council");
        s->chair = mi;
    }

    int rc = router_compile(s, json_object_get(d, "router"), "router", &s->router, err);
    if (rc)
        return rc;
    json_t *jr = json_object_get(d, "rounds");
    if (!json_is_array(jr) || json_array_size(jr) < SPEC_MIN_ROUNDS)
        return fail(err, "rounds", "must be a non-empty array");
    rc = compile_rounds(s, jr, "rounds", 0, &s->rounds, &s->n_rounds, err);
    if (rc)
        return rc;
    if (rounds_bound(s->rounds, s->n_rounds, SPEC_MAX_RUN_ROUNDS) > SPEC_MAX_RUN_ROUNDS)
        return fail(err, "rounds",
                    "iterate rounds could run more than %d rounds in all",
                    SPEC_MAX_RUN_ROUNDS);

    memset(&s->limits, 0, sizeof s->limits);
    s->limits.max_attempts = 1;
    json_t *jl = json_object_get(d, "limits");
    if (jl && !json_is_null(jl)) {
        if (!json_is_object(jl))
            return fail(err, "limits", "must be an object");
        uint64_t v;
        v = 0;
        if ((rc = get_uint(jl, "member_timeout_ms", SPEC_LIMIT_MAX_MEMBER_TIMEOUT_MS, &v, "limits", err)))
            return rc;
        s->limits.member_timeout_ms = v;
        v = 1;
        if ((rc = get_uint(jl, "max_attempts", SPEC_LIMIT_MAX_ATTEMPTS, &v, "limits", err)))
            return rc;
        s->limits.max_attempts = v ? (unsigned)v : 1;
        v = 0;
        if ((rc = get_uint(jl, "backoff_ms", SPEC_LIMIT_MAX_BACKOFF_MS, &v, "limits", err)))
            return rc;
        s->limits.backoff_ms = v;
        v = 0;
        if ((rc = get_uint(jl, "concurrency", SPEC_LIMIT_MAX_CONCURRENCY, &v, "limits", err)))
            return rc;
        s->limits.concurrency = (unsigned)v;
    }
    return 0;
}

static int spec_freeze(council_spec *s, unsigned level, council_spec_error *err)
{
    int rc = spec_compile(s, level, err);
    if (rc) {
        model_clear(s);
        return rc;
    }
    s->frozen = true;
    return COUNCIL_OK;
}

int council_spec_validate(council_spec *spec, council_spec_error *err)
{
    if (!spec)
        return COUNCIL_EINVAL;
    if (spec->frozen)
        return COUNCIL_OK;
    return spec_freeze(spec, 0, err);
}

int council_spec_from_json(const char *json, size_t len, council_spec **out,
                           council_spec_error *err)
{
    if (!json || !out)
        return COUNCIL_EINVAL;
    if (len > SPEC_HARD_MAX_BYTES) {
        fail(err, "$", "spec is %zu bytes, more than %u", len, SPEC_HARD_MAX_BYTES);
        return COUNCIL_ETOOBIG;
    }
    json_error_t je;
    memset(&je, 0, sizeof je); /* jansson leaves it unset on some allocation failures */
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        if (CX_JSON_ERR(je, COUNCIL_EPARSE) == COUNCIL_ENOMEM)
            return COUNCIL_ENOMEM;
        fail(err, "$", "invalid JSON at line %d column %d: %.120s", je.line,
             je.column, je.text);
        return COUNCIL_EPARSE;
    }
    council_spec *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(doc);
        return COUNCIL_ENOMEM;
    }
    s->refs = 1;
    s->chair = -1;
    s->doc = doc;
    int rc = council_spec_validate(s, err);
    if (rc) {
        council_spec_unref(s);
        return rc;
    }
    *out = s;
    return COUNCIL_OK;
}

int council_ctx_spec_from_json(council_ctx *ctx, const char *json, size_t len,
                               council_spec **out, council_spec_error *err)
{
    if (!ctx)
        return COUNCIL_EINVAL;
    if (len > ctx->cfg.max_spec_bytes) {
        fail(err, "$", "spec is %zu bytes, more than the limit of %zu", len,
             ctx->cfg.max_spec_bytes);
        return COUNCIL_ETOOBIG;
    }
    return council_spec_from_json(json, len, out, err);
}

char *council_spec_to_json(const council_spec *spec)
{
    if (!spec)
        return NULL;
    return json_dumps(spec->doc, JSON_COMPACT | JSON_SORT_KEYS);
}
