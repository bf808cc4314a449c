/* nif_term.c - term helpers of the NIF (see nif.h). */
#include <jansson.h>
#include <string.h>

#include "nif.h"

nif_atoms A;

void nif_atoms_init(ErlNifEnv *env)
{
    for (int i = 0; i < CN_N_REASONS; i++)
        A.reasons[i] = enif_make_atom(env, cn_reason_name(i));
    for (int i = 0; i < (int)(sizeof A.statuses / sizeof A.statuses[0]); i++)
        A.statuses[i] = enif_make_atom(env, council_status_name((council_status)i));
#define AT(field, text) A.field = enif_make_atom(env, text)
    AT(ok, "ok");
    AT(error, "error");
    AT(nil, "nil");
    AT(true_, "true");
    AT(false_, "false");
    AT(normal, "normal");
    AT(shutdown, "shutdown");
    AT(cancelled, "cancelled");
    AT(failed, "failed");
    AT(undefined, "undefined");
    AT(badarg, "badarg");
    A.enomem = A.reasons[cn_reason_index(COUNCIL_ENOMEM)];
    A.limit = A.reasons[cn_reason_index(COUNCIL_ELIMIT)];
    A.not_found = A.reasons[cn_reason_index(COUNCIL_ENOTFOUND)];
    A.unknown_run = A.reasons[cn_reason_index(COUNCIL_EUNKNOWN_RUN)];
    A.runner_dead = A.reasons[cn_reason_index(COUNCIL_ERUNNER_DEAD)];
    AT(running, "running");
    A.already_started = A.reasons[cn_reason_index(COUNCIL_EEXIST)];
    AT(run_id_retained, "run_id_retained");
    AT(invalid_spec, "invalid_spec");
    AT(bad_option, "bad_option");
    AT(unknown_call, "unknown_call");
    AT(request_too_large, "request_too_large");
    AT(exec_allow, "exec_allow");
    AT(unavailable, "unavailable");
    AT(noproc, "noproc");
    AT(tagged, "tagged");
    AT(lib, "lib");
    AT(pong, "pong");
    AT(run_id, "run_id");
    AT(state, "state");
    AT(cancel, "cancel");
    AT(await, "await");
    AT(result, "result");
    AT(subscribe, "subscribe");
    AT(unsubscribe, "unsubscribe");
    AT(start, "start");
    AT(start_link, "start_link");
    AT(whereis, "whereis");
    AT(ping, "ping");
    AT(stats, "stats");
    AT(validate, "validate");
    AT(open, "open");
    AT(close, "close");
    AT(sys_state, "$sys_state");
    AT(subscribers, "subscribers");
    AT(setenv, "setenv");
    AT(unsetenv, "unsetenv");
    AT(council_ex_event, "council_ex_event");
    AT(council_ex_overflow, "council_ex_overflow");
    AT(council_member_call, "council_member_call");
    AT(council_member_token, "council_member_token");
    AT(council_member_reply, "council_member_reply");
    AT(council_tool_call, "council_tool_call");
    AT(council_tool_reply, "council_tool_reply");
    AT(council_route_call, "council_route_call");
    AT(council_route_reply, "council_route_reply");
    AT(council_run, "$council_run");
    AT(council_end, "$council_end");
    AT(council_reply, "$council_reply");
    AT(reply, "reply");
    AT(inline_, "inline");
    AT(down, "DOWN");
    AT(process, "process");
    AT(name, "name");
    AT(rounds, "rounds");
    AT(spec, "spec");
    AT(input, "input");
    AT(council, "council");
    AT(registry, "registry");
    AT(user_opts, "user_opts");
    AT(member_server, "member_server");
    AT(runs, "runs");
    AT(runs_alive, "runs_alive");
    AT(subscriptions, "subscriptions");
    AT(pids, "pids");
    AT(pending, "pending");
    AT(json, "json");
    AT(run_started, "run_started");
    AT(round_started, "round_started");
    AT(member_started, "member_started");
    AT(member_token, "member_token");
    AT(member_completed, "member_completed");
    AT(round_completed, "round_completed");
    AT(run_completed, "run_completed");
    AT(run_failed, "run_failed");
    AT(run_cancelled, "run_cancelled");
    AT(tool_call_request, "tool_call_request");
    AT(tool_call_result, "tool_call_result");
    AT(retention_ms, "retention_ms");
    AT(max_runs, "max_runs");
    AT(max_retained, "max_retained");
    AT(max_subscribers_per_topic, "max_subscribers_per_topic");
    AT(subscriber_queue_cap, "subscriber_queue_cap");
    AT(member_timeout_ms, "member_timeout_ms");
    AT(max_spec_bytes, "max_spec_bytes");
    AT(output_cap, "output_cap");
    AT(status_, "status");
    AT(current_round, "current_round");
    AT(rounds_completed, "rounds_completed");
    AT(struct_, "__struct__");
    AT(error_module, "Elixir.CouncilEx.Error");
    AT(kind, "kind");
    AT(message, "message");
    AT(member_id, "member_id");
    AT(round_name, "round_name");
    AT(reason, "reason");
    AT(context, "context");
    AT(stacktrace, "stacktrace");
    AT(error_info, "error_info");
    AT(errors, "errors");
    AT(members, "members");
    AT(error_kind, "error_kind");
    AT(attempts, "attempts");
    AT(started_at, "started_at");
    AT(idx, "idx");
    AT(miss, "miss");
#undef AT
}

ERL_NIF_TERM nif_ok(ErlNifEnv *env, ERL_NIF_TERM t) { return enif_make_tuple2(env, A.ok, t); }

ERL_NIF_TERM nif_error(ErlNifEnv *env, ERL_NIF_TERM reason)
{
    return enif_make_tuple2(env, A.error, reason);
}

ERL_NIF_TERM nif_error2(ErlNifEnv *env, ERL_NIF_TERM tag, ERL_NIF_TERM v)
{
    return enif_make_tuple2(env, A.error, enif_make_tuple2(env, tag, v));
}

ERL_NIF_TERM nif_summary(ErlNifEnv *env, ERL_NIF_TERM t)
{
    const ERL_NIF_TERM *el;
    int arity;
    if (enif_is_atom(env, t))
        return t; /* atoms are global: valid in any env */
    if (enif_get_tuple(env, t, &arity, &el) && arity > 0 && enif_is_atom(env, el[0]))
        return el[0];
    switch (enif_term_type(env, t)) {
    case ERL_NIF_TERM_TYPE_BITSTRING:
        return enif_make_atom(env, enif_is_binary(env, t) ? "binary" : "bitstring");
    case ERL_NIF_TERM_TYPE_FLOAT: return enif_make_atom(env, "float");
    case ERL_NIF_TERM_TYPE_FUN: return enif_make_atom(env, "fun");
    case ERL_NIF_TERM_TYPE_INTEGER: return enif_make_atom(env, "integer");
    case ERL_NIF_TERM_TYPE_LIST: return enif_make_atom(env, "list");
    case ERL_NIF_TERM_TYPE_MAP: return enif_make_atom(env, "map");
    case ERL_NIF_TERM_TYPE_PID: return enif_make_atom(env, "pid");
    case ERL_NIF_TERM_TYPE_PORT: return enif_make_atom(env, "port");
    case ERL_NIF_TERM_TYPE_REFERENCE: return enif_make_atom(env, "reference");
    case ERL_NIF_TERM_TYPE_TUPLE: return enif_make_atom(env, "tuple");
    default: return enif_make_atom(env, "term");
    }
}

ERL_NIF_TERM nif_binary(ErlNifEnv *env, const void *p, size_t len)
{
    ERL_NIF_TERM t;
    unsigned char *d = enif_make_new_binary(env, len, &t);
    if (!d)
        return A.enomem;
    if (len)
        memcpy(d, p, len);
    return t;
}

ERL_NIF_TERM nif_cstr(ErlNifEnv *env, const char *s)
{
    return s ? nif_binary(env, s, strlen(s)) : A.nil;
}

ERL_NIF_TERM nif_reason(int err, ERL_NIF_TERM otherwise)
{
    int i = cn_reason_index(err);
    return i < 0 ? otherwise : A.reasons[i];
}

int nif_name(ErlNifEnv *env, ERL_NIF_TERM t, char *buf, size_t n, int *absent)
{
    ErlNifBinary b;
    *absent = enif_is_identical(t, A.nil);
    if (*absent)
        return -1;
    if (enif_inspect_binary(env, t, &b)) {
        if (b.size >= n || memchr(b.data, 0, b.size))
            return -1;
        memcpy(buf, b.data, b.size);
        buf[b.size] = 0;
        return 0;
    }
    /* an atom's text (latin-1, as ei would give it) */
    if (enif_is_atom(env, t) && enif_get_atom(env, t, buf, (unsigned)n, ERL_NIF_LATIN1) > 0)
        return 0;
    return -1;
}

/* UTF-8 text as Latin-1 bytes in out (n bytes): its length, or -1 when a
 * character is beyond Latin-1 (no atom can be looked up for it through
 * this OTP's NIF API) or the text is not UTF-8. */
static long utf8_to_latin1(const unsigned char *s, size_t len, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < len; o++) {
        if (o >= n)
            return -1;
        unsigned c = s[i];
        if (c < 0x80) {
            out[o] = (char)c;
            i++;
        } else if ((c == 0xC2 || c == 0xC3) && i + 1 < len && (s[i + 1] & 0xC0) == 0x80) {
            out[o] = (char)(((c & 0x1F) << 6) | (s[i + 1] & 0x3F));
            i += 2;
        } else {
            return -1;
        }
    }
    return (long)o;
}

ERL_NIF_TERM nif_existing_atom_or_binary(ErlNifEnv *env, ERL_NIF_TERM bin)
{
    ErlNifBinary b;
    char buf[256];
    ERL_NIF_TERM atom;
    if (!enif_inspect_binary(env, bin, &b) || b.size > 255 * 2)
        return bin;
    long n = utf8_to_latin1(b.data, b.size, buf, sizeof buf);
    if (n < 0 || !enif_make_existing_atom_len(env, buf, (size_t)n, &atom, ERL_NIF_LATIN1))
        return bin;
    return atom;
}

ERL_NIF_TERM nif_json_term(ErlNifEnv *env, const json_t *j, int depth)
{
    if (!j || depth > 128)
        return A.nil;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(j), i = 0;
        ERL_NIF_TERM *keys = enif_alloc(sizeof *keys * (n ? n : 1));
        ERL_NIF_TERM *vals = enif_alloc(sizeof *vals * (n ? n : 1));
        ERL_NIF_TERM out = 0;
        if (keys && vals) {
            const char *k;
            json_t *v;
            json_object_foreach((json_t *)j, k, v) {
                keys[i] = nif_binary(env, k, strlen(k));
                vals[i] = nif_json_term(env, v, depth + 1);
                i++;
            }
            if (!nif_make_map(env, keys, vals, i, &out))
                out = 0;
        }
        enif_free(keys);
        enif_free(vals);
        return out ? out : enif_make_new_map(env);
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        ERL_NIF_TERM l = enif_make_list(env, 0);
        for (size_t i = n; i-- > 0;)
            l = enif_make_list_cell(env, nif_json_term(env, json_array_get(j, i), depth + 1), l);
        return l;
    }
    case JSON_STRING:
        return nif_binary(env, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return enif_make_int64(env, (ErlNifSInt64)json_integer_value(j));
    case JSON_REAL:
        return enif_make_double(env, json_real_value(j));
    case JSON_TRUE:
        return A.true_;
    case JSON_FALSE:
        return A.false_;
    default:
        return A.nil;
    }
}

void nif_term_text(ErlNifEnv *env, ERL_NIF_TERM t, char *buf, size_t n)
{
    ErlNifBinary b;
    if (enif_inspect_binary(env, t, &b)) {
        size_t k = b.size < n - 1 ? b.size : n - 1;
        memcpy(buf, b.data, k);
        buf[k] = 0;
        return;
    }
    if (enif_snprintf(buf, n, "%T", t) < 0)
        buf[0] = 0;
    buf[n - 1] = 0;
}

/* ------------------------------------------------------------ maps, ETF */

int nif_make_map(ErlNifEnv *env, ERL_NIF_TERM *keys, ERL_NIF_TERM *vals, size_t n,
                 ERL_NIF_TERM *out)
{
    if (n <= NIF_FLATMAP_MAX)
        return enif_make_map_from_arrays(env, keys, vals, n, out);
    ERL_NIF_TERM m = enif_make_new_map(env);
    for (size_t i = 0; i < n; i++)
        if (!enif_make_map_put(env, m, keys[i], vals[i], &m))
            return 0;
    *out = m;
    return 1;
}

/* Whether the term at buf+*index (ETF, no version byte) holds a map of
 * more than NIF_FLATMAP_MAX pairs. Iterative: a count of the terms still
 * to read stands in for a stack (every header says how many follow). -1
 * if the bytes are not whole terms. */
static int has_big_map(const char *buf, size_t len)
{
    int index = 1, type, size;
    unsigned long pending = 1;
    while (pending--) {
        if ((size_t)index >= len || ei_get_type(buf, &index, &type, &size) < 0)
            return -1;
        int arity;
        switch (type) {
        case ERL_SMALL_TUPLE_EXT:
        case ERL_LARGE_TUPLE_EXT:
            if (ei_decode_tuple_header(buf, &index, &arity) < 0)
                return -1;
            pending += (unsigned long)arity;
            break;
        case ERL_LIST_EXT:
            if (ei_decode_list_header(buf, &index, &arity) < 0)
                return -1;
            pending += (unsigned long)arity + 1; /* and the tail */
            break;
        case ERL_MAP_EXT:
            if (ei_decode_map_header(buf, &index, &arity) < 0)
                return -1;
            if (arity > NIF_FLATMAP_MAX)
                return 1;
            pending += 2 * (unsigned long)arity;
            break;
        default:
            if (ei_skip_term(buf, &index) < 0)
                return -1;
        }
        if ((size_t)index > len)
            return -1;
    }
    return 0;
}

/* A leaf (anything but a tuple, list or map) through enif_binary_to_term:
 * its bytes behind a version byte. */
static ERL_NIF_TERM leaf_term(ErlNifEnv *env, const char *buf, int from, int to,
                              ErlNifBinaryToTerm opts)
{
    size_t n = (size_t)(to - from);
    unsigned char small[256];
    unsigned char *b = n + 1 <= sizeof small ? small : enif_alloc(n + 1);
    if (!b)
        return 0;
    b[0] = 131;
    memcpy(b + 1, buf + from, n);
    ERL_NIF_TERM t;
    if (enif_binary_to_term(env, b, n + 1, &t, opts) == 0)
        t = 0;
    if (b != small)
        enif_free(b);
    return t;
}

#define ETF_MAX_DEPTH 4096

static ERL_NIF_TERM decode(ErlNifEnv *env, const char *buf, int *index, int depth,
                           ErlNifBinaryToTerm opts)
{
    int type, size, arity;
    if (depth > ETF_MAX_DEPTH || ei_get_type(buf, index, &type, &size) < 0)
        return 0;
    ERL_NIF_TERM *el = NULL, out = 0;
    switch (type) {
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT:
        if (ei_decode_tuple_header(buf, index, &arity) < 0 ||
            !(el = enif_alloc(sizeof *el * (arity ? (size_t)arity : 1))))
            return 0;
        for (int i = 0; i < arity; i++)
            if (!(el[i] = decode(env, buf, index, depth + 1, opts)))
                goto done;
        out = enif_make_tuple_from_array(env, el, (unsigned)arity);
        break;
    case ERL_LIST_EXT: {
        if (ei_decode_list_header(buf, index, &arity) < 0 ||
            !(el = enif_alloc(sizeof *el * (size_t)arity)))
            return 0;
        for (int i = 0; i < arity; i++)
            if (!(el[i] = decode(env, buf, index, depth + 1, opts)))
                goto done;
        ERL_NIF_TERM tail = decode(env, buf, index, depth + 1, opts);
        if (!tail)
            goto done;
        for (int i = arity; i > 0; i--)
            tail = enif_make_list_cell(env, el[i - 1], tail);
        out = tail;
        break;
    }
    case ERL_MAP_EXT: {
        if (ei_decode_map_header(buf, index, &arity) < 0 ||
            !(el = enif_alloc(sizeof *el * 2 * (arity ? (size_t)arity : 1))))
            return 0;
        for (int i = 0; i < 2 * arity; i++)
            if (!(el[i] = decode(env, buf, index, depth + 1, opts)))
                goto done;
        ERL_NIF_TERM m = enif_make_new_map(env);
        for (int i = 0; i < arity; i++)
            if (!enif_make_map_put(env, m, el[2 * i], el[2 * i + 1], &m))
                goto done;
        out = m;
        break;
    }
    default: {
        int from = *index;
        if (ei_skip_term(buf, index) < 0)
            return 0;
        return leaf_term(env, buf, from, *index, opts);
    }
    }
done:
    enif_free(el);
    return out;
}

/* Fewer bytes cannot hold a map of NIF_FLATMAP_MAX + 1 pairs: the version
 * byte, the map's 5-byte header, and per pair a key of 2 bytes at least
 * (distinct keys: a small integer or a short atom) and a value of 1 (nil).
 * Most events are shorter: they skip the scan. */
#define BIG_MAP_MIN_ETF (1 + 5 + (NIF_FLATMAP_MAX + 1) * 3)

ERL_NIF_TERM nif_etf_term(ErlNifEnv *env, const char *buf, size_t len, ErlNifBinaryToTerm opts)
{
    ERL_NIF_TERM t;
    /* a scheduler (a NIF call that drives the core inline) has the data
     * the sort needs: no scan */
    int big = len < 2 || (unsigned char)buf[0] != 131           ? -1
              : len < BIG_MAP_MIN_ETF ||
                        enif_thread_type() != ERL_NIF_THR_UNDEFINED ? 0
                                                                 : has_big_map(buf, len);
    if (big == 0)
        return enif_binary_to_term(env, (const unsigned char *)buf, len, &t, opts) == len ? t : 0;
    if (big < 0)
        return 0;
    int index = 1;
    t = decode(env, buf, &index, 0, opts);
    return t && (size_t)index == len ? t : 0;
}
