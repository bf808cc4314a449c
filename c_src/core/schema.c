/* schema.c - council_schema_json: the core's rules as data (see council.h).
 * Each value comes from where the core itself defines it (the round kinds
 * table, the limits' maxima, the error names), so the schema cannot say
 * something the core does not do. */
#include "council_internal.h"
#include "llm.h"
#include "rounds.h"

#include <stdlib.h>

/* The errors' names for other languages: the enum's, lower case, without
 * the COUNCIL_E prefix. */
static const struct {
    int code;
    const char *name;
} errors[] = {
    {COUNCIL_EINVAL, "inval"},         {COUNCIL_ENOMEM, "nomem"},
    {COUNCIL_ELIMIT, "limit"},         {COUNCIL_EEXIST, "exist"},
    {COUNCIL_ENOTFOUND, "notfound"},   {COUNCIL_EUNKNOWN_RUN, "unknown_run"},
    {COUNCIL_ERUNNER_DEAD, "runner_dead"}, {COUNCIL_ESPEC, "spec"},
    {COUNCIL_ESTATE, "state"},         {COUNCIL_EPROVIDER, "provider"},
    {COUNCIL_ETIMEOUT, "timeout"},     {COUNCIL_ECANCELLED, "cancelled"},
    {COUNCIL_EPARSE, "parse"},         {COUNCIL_ETOOBIG, "toobig"},
    {COUNCIL_EIO, "io"},               {COUNCIL_ERUNNING, "running"},
};

static const char *const builtin_providers[] = {"mock", "exec", "council"};
static const char *const model_providers[] = {"openai", "openrouter", "ollama", "anthropic",
                                              "gemini"};

/* What a spec is made of, as far as hosts that build specs need it to
 * check or translate theirs before sending: under "spec", the keys the
 * core reads at the top ("keys": each with the kind of its value), the
 * fewest members and rounds, the member key that must be unique, the
 * bytes of a name (a member id, a round name); under "round_options", the
 * options the core reads in a round's "options", those of every round
 * ("*") and those of one type, each with its kind: "member_ids" (a
 * non-empty list of member ids), "member_id", "rounds" (nested rounds:
 * the type has them), "integer" with "min"/"max", "enum" with "values",
 * "string", "router". */
static int spec_rules(json_t *s)
{
    json_t *sp = json_object_get(s, "spec");
    json_t *ro = json_pack(
        "{s:{s:{s:s},s:{s:s,s:[s,s]},s:{s:s},s:{s:s}},"
        "s:{s:{s:s},s:{s:s,s:i,s:i,s:i},s:{s:s,s:[s,s],s:s}},"
        "s:{s:{s:s}}}",
        "*", "members", "kind", "member_ids", "failure_mode", "kind", "enum", "values",
        spec_failure_modes[0], spec_failure_modes[1], "instructions", "kind", "string", "router",
        "kind", "router",
        round_type_name(RT_ITERATE), "rounds", "kind", "rounds", "max_iterations", "kind",
        "integer", "min", 1, "max", SPEC_MAX_ITERATIONS, "default", SPEC_DEFAULT_ITERATIONS,
        "until", "kind", "enum", "values", spec_until_names[STOP_CONSENSUS],
        spec_until_names[STOP_NONE], "default", spec_until_names[STOP_NONE],
        round_type_name(RT_SYNTHESIS), "member", "kind", "member_id");
    json_t *keys = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", "name", "members", "members",
                             "rounds", "rounds", "chair", "member_id", "limits", "limits",
                             "router", "router");
    int bad = !sp || !ro || !keys;
    bad |= json_object_set_new(s, "round_options", ro);
    bad |= sp ? json_object_set_new(sp, "keys", keys) : (json_decref(keys), 1);
    if (!bad)
        bad |= json_object_set_new(sp, "min_members", json_integer(SPEC_MIN_MEMBERS)) ||
               json_object_set_new(sp, "min_rounds", json_integer(SPEC_MIN_ROUNDS)) ||
               json_object_set_new(sp, "unique_member_key", json_string("id")) ||
               json_object_set_new(sp, "min_name_bytes", json_integer(1)) ||
               json_object_set_new(sp, "max_name_bytes", json_integer(SPEC_MAX_NAME_BYTES));
    return bad;
}

char *council_schema_json(void)
{
    json_t *s = json_pack(
        "{s:s,s:s,s:s,s:[],s:[],s:[],s:{s:{s:I},s:{s:I},s:{s:I},s:{s:I}},"
        "s:{s:I,s:I,s:I,s:I,s:I,s:I},s:[],s:[],s:[],s:{}}",
        "version", "0.1.0", "topic_prefix", COUNCIL_TOPIC_PREFIX, "default_registry",
        COUNCIL_DEFAULT_REGISTRY, "round_types", "providers", "model_providers", "limits",
        "member_timeout_ms", "max", (json_int_t)SPEC_LIMIT_MAX_MEMBER_TIMEOUT_MS,
        "max_attempts", "max", (json_int_t)SPEC_LIMIT_MAX_ATTEMPTS, "backoff_ms", "max",
        (json_int_t)SPEC_LIMIT_MAX_BACKOFF_MS, "concurrency", "max",
        (json_int_t)SPEC_LIMIT_MAX_CONCURRENCY, "spec", "max_members",
        (json_int_t)SPEC_MAX_MEMBERS, "max_rounds", (json_int_t)SPEC_MAX_ROUNDS, "max_depth",
        (json_int_t)SPEC_MAX_DEPTH, "max_iterations", (json_int_t)SPEC_MAX_ITERATIONS,
        "max_run_rounds", (json_int_t)SPEC_MAX_RUN_ROUNDS, "max_bytes",
        (json_int_t)SPEC_HARD_MAX_BYTES, "statuses", "event_types", "fail_kinds", "errors");
    if (!s)
        return NULL;
    int bad = 0;
    json_t *a = json_object_get(s, "round_types");
    for (int t = 0; t < RT__COUNT; t++)
        bad |= json_array_append_new(a, json_string(round_type_name((round_type)t)));
    a = json_object_get(s, "providers");
    for (size_t i = 0; i < sizeof builtin_providers / sizeof *builtin_providers; i++)
        bad |= json_array_append_new(a, json_string(builtin_providers[i]));
    json_t *m = json_object_get(s, "model_providers");
    for (size_t i = 0; i < sizeof model_providers / sizeof *model_providers; i++) {
        bad |= !llm_is_provider(model_providers[i]); /* the table and llm's agree */
        bad |= json_array_append_new(a, json_string(model_providers[i]));
        bad |= json_array_append_new(m, json_string(model_providers[i]));
    }
    json_t *rc = json_array();
    for (size_t i = 0; rc && i < ROUTER_N_CONDITIONS; i++)
        bad |= json_array_append_new(rc, json_string(router_conditions[i]));
    bad |= json_object_set_new(s, "router_conditions", rc);
    a = json_object_get(s, "statuses");
    for (int st = COUNCIL_PENDING; st <= COUNCIL_CANCELLED; st++)
        bad |= json_array_append_new(a, json_string(council_status_name((council_status)st)));
    a = json_object_get(s, "event_types");
    for (int e = COUNCIL_EV_RUN_STARTED; e <= COUNCIL_EV_TOOL_CALL_RESULT; e++)
        bad |= json_array_append_new(
            a, json_string(council_event_type_name((council_event_type)e)));
    a = json_object_get(s, "fail_kinds");
    for (int k = COUNCIL_FAIL_TRANSIENT; k <= COUNCIL_FAIL_CANCELLED; k++)
        bad |= json_array_append_new(a, json_string(council_fail_kind_name((council_fail_kind)k)));
    json_t *e = json_object_get(s, "errors");
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
        bad |= json_object_set_new(e, errors[i].name,
                                   json_pack("{s:i,s:s}", "code", errors[i].code, "message",
                                             council_strerror(errors[i].code)));
    bad |= spec_rules(s);
    char *out = bad ? NULL : json_dumps(s, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(s);
    return out;
}
