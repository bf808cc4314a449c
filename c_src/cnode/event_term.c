/* event_term.c - see event_term.h. */
#include "event_term.h"

#include <string.h>

#include "council_internal.h"
#include "term_json.h"

static int bin(ei_x_buff *x, const char *s, size_t len)
{
    return ei_x_encode_binary(x, s ? s : "", (long)(s ? len : 0));
}

static int cstr_bin(ei_x_buff *x, const char *s)
{
    return bin(x, s, s ? strlen(s) : 0);
}

static int json_term(ei_x_buff *x, json_t *j)
{
    if (!j) return -1;
    int r = term_json_encode(x, j, &term_json_result_schema);
    json_decref(j);
    return r;
}

int cn_input_term(ei_x_buff *x, const council_input *in)
{
    if (in->tag && strcmp(in->tag, "etf") == 0 && in->len > 0)
        return ei_x_append_buf(x, in->data, (int)in->len);
    return bin(x, in->data, in->len);
}

int cn_result_term(ei_x_buff *x, const council_result *r)
{
    return json_term(x, council_result_json(r));
}

int cn_errors_term(ei_x_buff *x, const council_result *r)
{
    return json_term(x, council_result_errors_json(r));
}

int cn_outcome_term(ei_x_buff *x, const council_run *run)
{
    const council_result *r = council_run_result(run);
    switch (council_run_status(run)) {
    case COUNCIL_COMPLETED:
        return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
               cn_result_term(x, r);
    case COUNCIL_FAILED:
        return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
               ei_x_encode_tuple_header(x, 3) || ei_x_encode_atom(x, "failed") ||
               cn_errors_term(x, r) || cn_result_term(x, r);
    case COUNCIL_CANCELLED:
        return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
               ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "cancelled") ||
               cn_result_term(x, r);
    default:
        return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
               ei_x_encode_atom(x, "running");
    }
}

int cn_summary_term(ei_x_buff *x, const council_summary *s)
{
    return json_term(x, council_summary_json(s));
}

int cn_event_term(ei_x_buff *x, const council_event *ev)
{
    static const int arity[] = {
        [COUNCIL_EV_RUN_STARTED] = 4,      [COUNCIL_EV_ROUND_STARTED] = 4,
        [COUNCIL_EV_MEMBER_STARTED] = 4,   [COUNCIL_EV_MEMBER_TOKEN] = 5,
        [COUNCIL_EV_MEMBER_COMPLETED] = 5, [COUNCIL_EV_ROUND_COMPLETED] = 4,
        [COUNCIL_EV_RUN_COMPLETED] = 3,    [COUNCIL_EV_RUN_FAILED] = 4,
        [COUNCIL_EV_RUN_CANCELLED] = 3,
    };
    if (ev->type < COUNCIL_EV_RUN_STARTED || ev->type > COUNCIL_EV_RUN_CANCELLED)
        return -1;
    if (ei_x_encode_tuple_header(x, arity[ev->type]) < 0 ||
        ei_x_encode_atom(x, council_event_type_name(ev->type)) < 0 ||
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
        return json_term(x, council_member_result_json(ev->member_result));
    case COUNCIL_EV_ROUND_COMPLETED:
        if (cstr_bin(x, ev->round_name) < 0) return -1;
        return json_term(x, council_round_result_json(ev->round_result));
    case COUNCIL_EV_RUN_FAILED:
        if (cn_errors_term(x, ev->result) < 0) return -1;
        return cn_result_term(x, ev->result);
    case COUNCIL_EV_RUN_COMPLETED:
    case COUNCIL_EV_RUN_CANCELLED:
    default:
        return cn_result_term(x, ev->result);
    }
}
