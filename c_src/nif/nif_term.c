/* nif_term.c - term helpers of the NIF (see nif.h). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
    AT(council_pump, "$council_pump");
    AT(more, "more");
    AT(done, "done");
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

/* ------------------------------------------------------------ our own ETF
 *
 * The terms of our own encoders (event_term.h & co.) decoded in one walk,
 * with no enif_binary_to_term for what they are made of: containers from
 * the scratch stack below, leaves made directly, atoms from a cache (ERTS
 * takes its atom table's lock for every atom enif_binary_to_term decodes,
 * once per atom per term: most of a result's cost). Anything else (pids,
 * references, funs, large bignums, old float and atom forms of other
 * origins) goes through leaf_term. */

#define OWN_SLOTS 512          /* the atom table's slots (a power of two) */
#define OWN_ATOMS 256          /* entries kept at most: beyond, made each time */
#define OWN_ATOM_BYTES 48      /* longer atom texts are made each time */
#define OWN_DEPTH 256          /* deeper terms: the whole-term path (own stack
                                * frames on a scheduler's stack stay small) */

typedef struct own_atom {
    ERL_NIF_TERM t;            /* 0: a free slot */
    uint32_t hash;
    unsigned char utf8, len;
    char text[OWN_ATOM_BYTES];
} own_atom;

struct nif_etf_cache {
    own_atom slot[OWN_SLOTS];
    unsigned n;
    ERL_NIF_TERM *stk;         /* elements of the containers being built */
    size_t cap;
};

nif_etf_cache *nif_etf_cache_new(void)
{
    nif_etf_cache *c = enif_alloc(sizeof *c);
    if (c)
        memset(c, 0, sizeof *c);
    return c;
}

void nif_etf_cache_free(nif_etf_cache *c)
{
    if (c) {
        enif_free(c->stk);
        enif_free(c);
    }
}

typedef struct own_in {
    ErlNifEnv *env;
    nif_etf_cache *c;
    const unsigned char *p;
    size_t len, i;             /* i: the next byte to read */
    size_t top;                /* the scratch stack's height */
    int sched;                 /* on a scheduler: maps of any size in one go */
} own_in;

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A count of width bytes (1, 2 or 4, big-endian) into *n: 0 past the end. */
static int own_count(own_in *in, size_t width, size_t *n)
{
    if (in->len - in->i < width)
        return 0;
    const unsigned char *q = in->p + in->i;
    *n = width == 4 ? be32(q) : width == 2 ? (size_t)(q[0] << 8 | q[1]) : q[0];
    in->i += width;
    return 1;
}

/* n more slots on the scratch stack (their index in *at): 0 when out of
 * memory or n is more than the bytes left could fill (every element takes
 * one byte at least). */
static int own_reserve(own_in *in, size_t n, size_t *at)
{
    if (n > in->len - in->i)
        return 0;
    if (in->top + n > in->c->cap || !in->c->stk) { /* a stack even for n == 0 */
        size_t cap = in->c->cap ? in->c->cap : 64;
        while (cap < in->top + n)
            cap *= 2;
        ERL_NIF_TERM *s = enif_realloc(in->c->stk, cap * sizeof *s);
        if (!s)
            return 0;
        in->c->stk = s;
        in->c->cap = cap;
    }
    *at = in->top;
    in->top += n;
    return 1;
}

/* The atom of len bytes of text (UTF-8 when utf8, else Latin-1), made
 * with no lock when its characters are all Latin-1 (enif_make_atom_len),
 * else by enif_binary_to_term of its own bytes (from..to); 0 if invalid. */
static ERL_NIF_TERM own_make_atom(own_in *in, const unsigned char *s, size_t len, int utf8,
                                  size_t from, size_t to)
{
    char buf[256];
    long n = (long)len;
    if (utf8)
        n = utf8_to_latin1(s, len, buf, sizeof buf);
    else if (len < sizeof buf)
        memcpy(buf, s, len);
    else
        n = -1;
    if (n >= 0 && n <= 255)
        return enif_make_atom_len(in->env, buf, (size_t)n);
    return leaf_term(in->env, (const char *)in->p, (int)from, (int)to, 0);
}

static ERL_NIF_TERM own_atom_term(own_in *in, size_t len, int utf8, size_t from)
{
    if (len > in->len - in->i)
        return 0;
    const unsigned char *s = in->p + in->i;
    in->i += len;
    if (len > OWN_ATOM_BYTES)
        return own_make_atom(in, s, len, utf8, from, in->i);
    uint32_t h = 2166136261u ^ (uint32_t)utf8;
    for (size_t k = 0; k < len; k++)
        h = (h ^ s[k]) * 16777619u;
    for (unsigned k = h & (OWN_SLOTS - 1);; k = (k + 1) & (OWN_SLOTS - 1)) {
        own_atom *a = &in->c->slot[k];
        if (!a->t) {
            ERL_NIF_TERM t = own_make_atom(in, s, len, utf8, from, in->i);
            if (t && in->c->n < OWN_ATOMS) {
                a->t = t;
                a->hash = h;
                a->utf8 = (unsigned char)utf8;
                a->len = (unsigned char)len;
                memcpy(a->text, s, len);
                in->c->n++;
            }
            return t;
        }
        if (a->hash == h && a->len == len && a->utf8 == utf8 && memcmp(a->text, s, len) == 0)
            return a->t;
    }
}

static ERL_NIF_TERM own_term(own_in *in, int depth);

/* n terms into the scratch stack from slot at on. */
static int own_terms(own_in *in, size_t at, size_t n, int depth)
{
    for (size_t k = 0; k < n; k++) {
        ERL_NIF_TERM t = own_term(in, depth + 1);
        if (!t)
            return 0;
        in->c->stk[at + k] = t;
    }
    return 1;
}

static ERL_NIF_TERM own_term(own_in *in, int depth)
{
    ErlNifEnv *env = in->env;
    const unsigned char *p = in->p;
    size_t from = in->i, left = in->len - in->i, at, n;
    ERL_NIF_TERM out = 0;
    if (depth > OWN_DEPTH || left < 1)
        return 0;
    left--;
    in->i++;
    switch (p[from]) {
    case ERL_SMALL_INTEGER_EXT:
        if (left < 1)
            return 0;
        return enif_make_int(env, p[in->i++]);
    case ERL_INTEGER_EXT:
        if (!own_count(in, 4, &n))
            return 0;
        return enif_make_int(env, (int32_t)(uint32_t)n);
    case ERL_SMALL_BIG_EXT: {
        if (left < 2 || left - 2 < p[in->i])
            return 0;
        n = p[in->i];
        int neg = p[in->i + 1];
        const unsigned char *d = p + in->i + 2;
        in->i += 2 + n;
        if (n > 8 || neg > 1)
            break; /* the leaf path */
        uint64_t mag = 0;
        for (size_t k = n; k-- > 0;)
            mag = mag << 8 | d[k];
        if (!neg)
            return enif_make_uint64(env, mag);
        if (mag > (uint64_t)1 << 63)
            break;
        return enif_make_int64(env, mag == (uint64_t)1 << 63 ? INT64_MIN : -(int64_t)mag);
    }
    case NEW_FLOAT_EXT: {
        if (left < 8)
            return 0;
        uint64_t bits = (uint64_t)be32(p + in->i) << 32 | be32(p + in->i + 4);
        in->i += 8;
        double v;
        memcpy(&v, &bits, sizeof v);
        if (v != v || v - v != 0)
            return 0; /* NaN, infinities: no float term holds them */
        return enif_make_double(env, v);
    }
    case ERL_BINARY_EXT: {
        if (!own_count(in, 4, &n) || n > in->len - in->i)
            return 0;
        ERL_NIF_TERM t;
        unsigned char *d = enif_make_new_binary(env, n, &t);
        if (!d)
            return 0;
        if (n)
            memcpy(d, p + in->i, n);
        in->i += n;
        return t;
    }
    case ERL_NIL_EXT:
        return enif_make_list(env, 0);
    case ERL_STRING_EXT:
        if (!own_count(in, 2, &n) || n > in->len - in->i)
            return 0;
        in->i += n;
        return enif_make_string_len(env, (const char *)p + in->i - n, n, ERL_NIF_LATIN1);
    case ERL_SMALL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_ATOM_EXT: {
        int small = p[from] == ERL_SMALL_ATOM_UTF8_EXT || p[from] == ERL_SMALL_ATOM_EXT;
        if (!own_count(in, small ? 1 : 2, &n))
            return 0;
        return own_atom_term(in, n, p[from] == ERL_SMALL_ATOM_UTF8_EXT || p[from] == ERL_ATOM_UTF8_EXT,
                             from);
    }
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT:
        if (!own_count(in, p[from] == ERL_LARGE_TUPLE_EXT ? 4 : 1, &n) ||
            !own_reserve(in, n, &at))
            return 0;
        if (own_terms(in, at, n, depth))
            out = enif_make_tuple_from_array(env, in->c->stk + at, (unsigned)n);
        in->top = at;
        return out;
    case ERL_LIST_EXT: {
        if (!own_count(in, 4, &n) || !own_reserve(in, n, &at))
            return 0;
        ERL_NIF_TERM tail;
        if (own_terms(in, at, n, depth) && (tail = own_term(in, depth + 1))) {
            if (enif_is_empty_list(env, tail))
                out = enif_make_list_from_array(env, in->c->stk + at, (unsigned)n);
            else
                for (out = tail; n > 0; n--)
                    out = enif_make_list_cell(env, in->c->stk[at + n - 1], out);
        }
        in->top = at;
        return out;
    }
    case ERL_MAP_EXT: {
        if (!own_count(in, 4, &n) || n > (in->len - in->i) / 2 || !own_reserve(in, 2 * n, &at))
            return 0;
        /* keys at at.., values at at+n.. */
        int ok = 1;
        for (size_t k = 0; ok && k < n; k++) {
            ERL_NIF_TERM key = own_term(in, depth + 1), val = key ? own_term(in, depth + 1) : 0;
            ok = key && val;
            if (ok) {
                in->c->stk[at + k] = key;
                in->c->stk[at + n + k] = val;
            }
        }
        ERL_NIF_TERM *ks = in->c->stk + at;
        if (ok && !(in->sched ? enif_make_map_from_arrays(env, ks, ks + n, n, &out)
                              : nif_make_map(env, ks, ks + n, n, &out)))
            out = 0;
        in->top = at;
        return out;
    }
    default:
        break;
    }
    /* a leaf of another kind, whole: from its tag */
    int index = (int)from;
    if (in->len > INT32_MAX || ei_skip_term((const char *)p, &index) < 0 || (size_t)index > in->len)
        return 0;
    in->i = (size_t)index;
    return leaf_term(env, (const char *)p, (int)from, index, 0);
}

uint64_t nif_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Whether b is one whole ETF term whose atoms all exist already: the test
 * and bench NIFs take their bytes from a caller, and the walk (like
 * nif_etf_term with options 0) would make any atom they name. */
static int etf_safe(const ErlNifBinary *b)
{
    ErlNifEnv *scratch = enif_alloc_env();
    ERL_NIF_TERM t;
    int ok = scratch && enif_binary_to_term(scratch, b->data, b->size, &t,
                                            ERL_NIF_BIN2TERM_SAFE) == b->size;
    if (scratch)
        enif_free_env(scratch);
    return ok;
}

/* Self-check (etf_test_nif): each decode of ours also made the reference
 * way (nif_etf_term) and compared; counts by thread kind. */
static int own_check;
static uint64_t own_checked_loop, own_checked_sched, own_mismatched, own_fallbacks;

/* The fast walk alone: 0 when it cannot (the caller falls back). */
static ERL_NIF_TERM own_decode(ErlNifEnv *env, nif_etf_cache *c, const char *buf, size_t len)
{
    if (len < 2 || (unsigned char)buf[0] != 131)
        return 0;
    own_in in = {.env = env, .c = c, .p = (const unsigned char *)buf, .len = len, .i = 1,
                 .sched = enif_thread_type() != ERL_NIF_THR_UNDEFINED};
    ERL_NIF_TERM t = own_term(&in, 0);
    return t && in.i == len ? t : 0;
}

ERL_NIF_TERM nif_etf_own(ErlNifEnv *env, nif_etf_cache **cache, const char *buf, size_t len)
{
    if (!*cache && !(*cache = nif_etf_cache_new()))
        return nif_etf_term(env, buf, len, 0);
    ERL_NIF_TERM t = own_decode(env, *cache, buf, len);
    if (!t)
        __atomic_add_fetch(&own_fallbacks, 1, __ATOMIC_RELAXED);
    if (!__atomic_load_n(&own_check, __ATOMIC_RELAXED))
        return t ? t : nif_etf_term(env, buf, len, 0);
    ERL_NIF_TERM ref = nif_etf_term(env, buf, len, 0);
    __atomic_add_fetch(enif_thread_type() == ERL_NIF_THR_UNDEFINED ? &own_checked_loop
                                                                    : &own_checked_sched,
                       1, __ATOMIC_RELAXED);
    if (t && ref && enif_is_identical(t, ref))
        return t;
    if (t || ref) {
        __atomic_add_fetch(&own_mismatched, 1, __ATOMIC_RELAXED);
        enif_fprintf(stderr, "nif_etf_own: mismatch: %T, enif_binary_to_term: %T\n",
                     t ? t : A.error, ref ? ref : A.error);
    }
    return ref;
}

/* etf_test(Request), for the tests:
 *   {check, Bool}: self-check every decode of ours from now on (or not),
 *     counts reset -> ok
 *   counts -> #{loop, scheduler, mismatched, fallbacks}: decodes checked
 *     on the loop thread and on schedulers, mismatches, whole-term
 *     fallbacks of the fast walk (counted whether checking or not)
 *   {decode, Bin}: Bin (ETF) by nif_etf_own with a cache of its own ->
 *     {ok, Term, ok | whole} (whole: the fast walk could not, the
 *     whole-term path did) | error (also when Bin names an atom that
 *     does not exist: no atom is made from a caller's bytes) */
ERL_NIF_TERM nif_etf_test(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary b;
    if (enif_is_identical(argv[0], enif_make_atom(env, "counts"))) {
        ERL_NIF_TERM k[4] = {enif_make_atom(env, "loop"), enif_make_atom(env, "scheduler"),
                             enif_make_atom(env, "mismatched"), enif_make_atom(env, "fallbacks")};
        ERL_NIF_TERM v[4] = {
            enif_make_uint64(env, __atomic_load_n(&own_checked_loop, __ATOMIC_RELAXED)),
            enif_make_uint64(env, __atomic_load_n(&own_checked_sched, __ATOMIC_RELAXED)),
            enif_make_uint64(env, __atomic_load_n(&own_mismatched, __ATOMIC_RELAXED)),
            enif_make_uint64(env, __atomic_load_n(&own_fallbacks, __ATOMIC_RELAXED))};
        ERL_NIF_TERM m;
        return enif_make_map_from_arrays(env, k, v, 4, &m) ? m : enif_make_badarg(env);
    }
    if (!enif_get_tuple(env, argv[0], &arity, &el) || arity != 2)
        return enif_make_badarg(env);
    if (enif_is_identical(el[0], enif_make_atom(env, "check"))) {
        __atomic_store_n(&own_checked_loop, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&own_checked_sched, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&own_mismatched, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&own_fallbacks, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&own_check, enif_is_identical(el[1], A.true_), __ATOMIC_RELAXED);
        return A.ok;
    }
    if (enif_is_identical(el[0], enif_make_atom(env, "decode")) &&
        enif_inspect_binary(env, el[1], &b)) {
        if (!etf_safe(&b))
            return A.error; /* not one term, or an atom it would make */
        nif_etf_cache *c = nif_etf_cache_new();
        if (!c)
            return A.enomem;
        ERL_NIF_TERM t = own_decode(env, c, (const char *)b.data, b.size), how = A.ok;
        if (!t) {
            how = enif_make_atom(env, "whole");
            t = nif_etf_own(env, &c, (const char *)b.data, b.size);
        }
        nif_etf_cache_free(c);
        return t ? enif_make_tuple3(env, A.ok, t, how) : A.error;
    }
    return enif_make_badarg(env);
}

/* etf_bench(Bin, N) on a dirty CPU scheduler: Bin (ETF) decoded N times
 * by the fast walk (one cache, warm after the first) and N times by
 * nif_etf_term -> {FastNs, RefNs}, per decode; badarg if Bin names an
 * atom that does not exist. */

ERL_NIF_TERM nif_etf_bench(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary b;
    unsigned long n;
    if (!enif_inspect_binary(env, argv[0], &b) || !enif_get_ulong(env, argv[1], &n) || n == 0 ||
        n > 10000000 || !etf_safe(&b))
        return enif_make_badarg(env);
    nif_etf_cache *c = nif_etf_cache_new();
    ErlNifEnv *scratch = enif_alloc_env();
    uint64_t fast = 0, ref = 0;
    int ok = c && scratch;
    for (unsigned long k = 0; ok && k < n; k++) {
        uint64_t t0 = nif_mono_ns();
        ok = own_decode(scratch, c, (const char *)b.data, b.size) != 0;
        uint64_t t1 = nif_mono_ns();
        ok = ok && nif_etf_term(scratch, (const char *)b.data, b.size, 0) != 0;
        uint64_t t2 = nif_mono_ns();
        fast += t1 - t0;
        ref += t2 - t1;
        enif_clear_env(scratch);
    }
    nif_etf_cache_free(c);
    if (scratch)
        enif_free_env(scratch);
    if (!ok)
        return enif_make_badarg(env);
    return enif_make_tuple2(env, enif_make_double(env, (double)fast / (double)n),
                            enif_make_double(env, (double)ref / (double)n));
}
