/* event_term.c - see event_term.h. */
#include "event_term.h"

#include <stdbool.h>
#include <string.h>

#include "council_json.h"
#include "term.h"
#include "term_json.h"

static int bin(ei_x_buff *x, const char *s, size_t len)
{
    return ei_x_encode_binary(x, s ? s : "", (long)(s ? len : 0));
}

static int cstr_bin(ei_x_buff *x, const char *s)
{
    return bin(x, s, s ? strlen(s) : 0);
}

/* An atom of ASCII name (every atom these terms hold): the bytes ei's
 * encoder gives for it (SMALL_ATOM_UTF8_EXT), without its Latin-1 to
 * UTF-8 pass over the name. */
static int atom(ei_x_buff *x, const char *name)
{
    return cn_enc_atom(x, name, strlen(name));
}

/* Every map's keys are written in the order the VM keeps them (atoms
 * sort by their text): a decoder that builds small maps from them (the
 * NIF's, binary_to_term) finds them in order already. */

/* The result shapes are written straight from the core's structs (no JSON
 * built on the way: results go out on every await and terminal event).
 * Only the user data inside them, a round's aggregate and a member's parsed
 * ballot, is JSON: its keys stay binaries (term_json with no schema). */

static int bytes_or_nil(ei_x_buff *x, const char *s, size_t len)
{
    return s ? ei_x_encode_binary(x, s, (long)len) : atom(x, "nil");
}

static int json_or_nil(ei_x_buff *x, const json_t *j)
{
    return j ? term_json_encode(x, j) : atom(x, "nil");
}

/* A list of n elements is a header, the elements and a tail; an empty one
 * is the empty list alone (ei writes that for a header of 0 already). */
static int list_open(ei_x_buff *x, size_t n)
{
    return n ? ei_x_encode_list_header(x, (long)n) : 0;
}

static int list_close(ei_x_buff *x)
{
    return ei_x_encode_empty_list(x);
}

static int key(ei_x_buff *x, const char *k)
{
    return atom(x, k);
}

/* %{input_tokens, output_tokens, cost: float | nil} */
static int usage_term(ei_x_buff *x, const council_usage *u)
{
    return ei_x_encode_map_header(x, 3) ||
           key(x, "cost") ||
           (u->has_cost ? ei_x_encode_double(x, u->cost) : atom(x, "nil")) ||
           key(x, "input_tokens") || ei_x_encode_ulonglong(x, u->input_tokens) ||
           key(x, "output_tokens") || ei_x_encode_ulonglong(x, u->output_tokens)
               ? -1
               : 0;
}

/* %{id, name, arguments} and, for a result, result and status */
static int tool_term(ei_x_buff *x, council_event_type type, const council_tool_event *t)
{
    bool res = type == COUNCIL_EV_TOOL_CALL_RESULT;
    if (ei_x_encode_map_header(x, res ? 5 : 3) ||
        key(x, "arguments") || bin(x, t->arguments, t->arguments_len) ||
        key(x, "id") || cstr_bin(x, t->id) ||
        key(x, "name") || cstr_bin(x, t->name))
        return -1;
    if (!res)
        return 0;
    return key(x, "result") || bin(x, t->result, t->result_len) ||
           key(x, "status") || atom(x, t->ok ? "ok" : "error")
               ? -1
               : 0;
}

/* One of the six status atoms of docs/protocol.md ("error" for a value
 * out of range: no other atom is ever sent). */
static const char *member_status(const council_member_result *p)
{
    const char *name = council_member_status_name(p->status);
    return name ? name : "error";
}

static int member_result_term(ei_x_buff *x, const council_member_result *p)
{
    return ei_x_encode_map_header(x, 10) ||
           key(x, "attempts") || ei_x_encode_ulong(x, p->attempts) ||
           key(x, "duration_us") || ei_x_encode_ulonglong(x, p->duration_us) ||
           key(x, "error") || bytes_or_nil(x, p->error, p->error ? strlen(p->error) : 0) ||
           key(x, "error_kind") ||
           (p->error_kind ? atom(x, p->error_kind) : atom(x, "nil")) ||
           key(x, "member_id") || cstr_bin(x, p->member_id) ||
           key(x, "parsed") || json_or_nil(x, council_member_result_parsed(p)) ||
           key(x, "provider_us") || ei_x_encode_ulonglong(x, p->provider_us) ||
           key(x, "status") || atom(x, member_status(p)) ||
           key(x, "text") || bytes_or_nil(x, p->text, p->text_len) ||
           key(x, "usage") || usage_term(x, &p->usage)
               ? -1
               : 0;
}

static int round_result_term(ei_x_buff *x, const council_round_result *p)
{
    if (ei_x_encode_map_header(x, 8) ||
        key(x, "aggregate") || json_or_nil(x, council_round_result_aggregate(p)) ||
        key(x, "duration_us") || ei_x_encode_ulonglong(x, p->duration_us) ||
        key(x, "idx") || ei_x_encode_ulong(x, p->idx) ||
        key(x, "members") || list_open(x, p->n_members))
        return -1;
    for (size_t i = 0; i < p->n_members; i++)
        if (member_result_term(x, p->members[i]))
            return -1;
    return list_close(x) ||
           key(x, "name") || cstr_bin(x, p->name) ||
           key(x, "text") || bytes_or_nil(x, p->text, p->text_len) ||
           key(x, "type") || cstr_bin(x, p->type) ||
           key(x, "usage") || usage_term(x, &p->usage)
               ? -1
               : 0;
}

/* [%{kind, member_id, round_name}], one per error (council_error_info) */
static int error_info_term(ei_x_buff *x, const council_result *r)
{
    if (list_open(x, r->n_errors))
        return -1;
    for (size_t i = 0; i < r->n_errors; i++) {
        const council_error_info *e = council_result_error_info(r, i);
        if (ei_x_encode_map_header(x, 3) ||
            key(x, "kind") || atom(x, e->kind) ||
            key(x, "member_id") ||
            bytes_or_nil(x, e->member_id, e->member_id ? strlen(e->member_id) : 0) ||
            key(x, "round_name") ||
            bytes_or_nil(x, e->round_name, e->round_name ? strlen(e->round_name) : 0))
            return -1;
    }
    return list_close(x) ? -1 : 0;
}

int cn_result_term(ei_x_buff *x, const council_result *r)
{
    if (ei_x_encode_map_header(x, 6) ||
        key(x, "duration_us") || ei_x_encode_ulonglong(x, r->duration_us) ||
        key(x, "error_info") || error_info_term(x, r) ||
        key(x, "errors") || cn_errors_term(x, r) ||
        key(x, "final") || bytes_or_nil(x, r->final_text, r->final_len) ||
        key(x, "rounds") || list_open(x, r->n_rounds))
        return -1;
    for (size_t i = 0; i < r->n_rounds; i++)
        if (round_result_term(x, r->rounds[i]))
            return -1;
    return list_close(x) || key(x, "usage") || usage_term(x, &r->usage) ? -1 : 0;
}

int cn_errors_term(ei_x_buff *x, const council_result *r)
{
    if (list_open(x, r->n_errors))
        return -1;
    for (size_t i = 0; i < r->n_errors; i++)
        if (cstr_bin(x, r->errors[i]))
            return -1;
    return list_close(x) ? -1 : 0;
}

int cn_input_term(ei_x_buff *x, const council_input *in)
{
    if (in->tag && strcmp(in->tag, "etf") == 0 && in->len > 0)
        return ei_x_append_buf(x, in->data, (int)in->len);
    return bin(x, in->data, in->len);
}

int cn_outcome_term(ei_x_buff *x, const council_run *run)
{
    const council_result *r = council_run_result(run);
    switch (council_run_status(run)) {
    case COUNCIL_COMPLETED:
        return ei_x_encode_tuple_header(x, 2) || atom(x, "ok") ||
               cn_result_term(x, r);
    case COUNCIL_FAILED:
        return ei_x_encode_tuple_header(x, 2) || atom(x, "error") ||
               ei_x_encode_tuple_header(x, 3) || atom(x, "failed") ||
               cn_errors_term(x, r) || cn_result_term(x, r);
    case COUNCIL_CANCELLED:
        return ei_x_encode_tuple_header(x, 2) || atom(x, "error") ||
               ei_x_encode_tuple_header(x, 2) || atom(x, "cancelled") ||
               cn_result_term(x, r);
    default:
        return ei_x_encode_tuple_header(x, 2) || atom(x, "error") ||
               atom(x, "running");
    }
}

int cn_summary_term(ei_x_buff *x, const council_summary *s)
{
    if (ei_x_encode_map_header(x, 7) ||
        key(x, "council") || cstr_bin(x, s->council) ||
        key(x, "current_round"))
        return -1;
    if (s->current_round ? ei_x_encode_map_header(x, 2) || key(x, "idx") ||
                               ei_x_encode_ulong(x, s->current_round_idx) ||
                               key(x, "name") || cstr_bin(x, s->current_round)
                         : atom(x, "nil"))
        return -1;
    return key(x, "registry") || cstr_bin(x, s->registry) ||
           key(x, "rounds_completed") || ei_x_encode_ulong(x, s->rounds_completed) ||
           key(x, "run_id") || bin(x, s->run_id, s->run_id_len) ||
           key(x, "started_at") || ei_x_encode_longlong(x, s->started_at_us) ||
           key(x, "status") || atom(x, council_status_name(s->status))
               ? -1
               : 0;
}

int cn_event_term(ei_x_buff *x, const council_event *ev)
{
    static const int arity[] = {
        [COUNCIL_EV_RUN_STARTED] = 4,      [COUNCIL_EV_ROUND_STARTED] = 4,
        [COUNCIL_EV_MEMBER_STARTED] = 4,   [COUNCIL_EV_MEMBER_TOKEN] = 5,
        [COUNCIL_EV_MEMBER_COMPLETED] = 5, [COUNCIL_EV_ROUND_COMPLETED] = 4,
        [COUNCIL_EV_RUN_COMPLETED] = 3,    [COUNCIL_EV_RUN_FAILED] = 4,
        [COUNCIL_EV_RUN_CANCELLED] = 3,    [COUNCIL_EV_TOOL_CALL_REQUEST] = 5,
        [COUNCIL_EV_TOOL_CALL_RESULT] = 5,
    };
    if (ev->type < COUNCIL_EV_RUN_STARTED || ev->type > COUNCIL_EV_TOOL_CALL_RESULT)
        return -1;
    if (ei_x_encode_tuple_header(x, arity[ev->type]) < 0 ||
        atom(x, council_event_type_name(ev->type)) < 0 ||
        bin(x, ev->run_id, ev->run_id_len) < 0)
        return -1;

    switch (ev->type) {
    case COUNCIL_EV_RUN_STARTED:
        if (cstr_bin(x, ev->council) < 0) return -1;
        return cn_input_term(x, ev->input);
    case COUNCIL_EV_ROUND_STARTED:
        if (cstr_bin(x, ev->round_name) < 0) return -1;
        return ei_x_encode_long(x, ev->round_idx);
    case COUNCIL_EV_MEMBER_STARTED:
        if (cstr_bin(x, ev->round_name) < 0) return -1;
        return cstr_bin(x, ev->member_id);
    case COUNCIL_EV_MEMBER_TOKEN:
        if (cstr_bin(x, ev->round_name) < 0 || cstr_bin(x, ev->member_id) < 0)
            return -1;
        return bin(x, ev->chunk, ev->chunk_len);
    case COUNCIL_EV_MEMBER_COMPLETED:
        if (cstr_bin(x, ev->round_name) < 0 || cstr_bin(x, ev->member_id) < 0)
            return -1;
        return member_result_term(x, ev->member_result);
    case COUNCIL_EV_ROUND_COMPLETED:
        if (cstr_bin(x, ev->round_name) < 0) return -1;
        return round_result_term(x, ev->round_result);
    case COUNCIL_EV_TOOL_CALL_REQUEST:
    case COUNCIL_EV_TOOL_CALL_RESULT:
        if (cstr_bin(x, ev->round_name) < 0 || cstr_bin(x, ev->member_id) < 0)
            return -1;
        return tool_term(x, ev->type, ev->tool);
    case COUNCIL_EV_RUN_FAILED:
        if (cn_errors_term(x, ev->result) < 0) return -1;
        return cn_result_term(x, ev->result);
    case COUNCIL_EV_RUN_COMPLETED:
    case COUNCIL_EV_RUN_CANCELLED:
    default:
        return cn_result_term(x, ev->result);
    }
}

int cn_terminal_event_term(ei_x_buff *x, council_run *run)
{
    council_status st = council_run_status(run);
    council_event ev = {.run = run, .round_idx = -1};
    ev.type = st == COUNCIL_COMPLETED ? COUNCIL_EV_RUN_COMPLETED
              : st == COUNCIL_FAILED  ? COUNCIL_EV_RUN_FAILED
                                      : COUNCIL_EV_RUN_CANCELLED;
    ev.run_id = council_run_id(run, &ev.run_id_len);
    ev.council = council_run_council(run);
    ev.result = council_run_result(run);
    return cn_event_term(x, &ev);
}
