/* test_event_term.c - the result shapes the C node writes straight from the
 * core's structs (event_term.c) say exactly what the core's JSON views say
 * (results.c, docs/protocol.md "Shapes"): decoded back to JSON, each term
 * equals its view. Atoms only where the protocol has them.
 */
#include "core_test_util.h"
/* white-box suite (compares the C node's terms with the core's own JSON of each event): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

#include <ei.h>

#include "../../c_src/cnode/event_term.h"
#include "../../c_src/cnode/term_json.h"

/* A council with every kind of payload: answers, a vote (parsed ballots and
 * an aggregate), a member error (one member always fails) and the chair. */
static const char *SPEC =
    "{'id':'shapes','members':["
    "{'id':'a','provider':'mock'},"
    "{'id':'b','provider':'mock','options':{'chunks':3}},"
    "{'id':'c','provider':'mock','options':{'fail_attempts':[1,2,3]}}],"
    "'rounds':[{'type':'independent_analysis'},{'type':'vote'}],"
    "'chair':'a','limits':{'retry':{'max_attempts':1}}}";

/* The JSON of the term in x (no version byte). */
static json_t *decoded(const ei_x_buff *x)
{
    int index = 0;
    json_t *j = NULL;
    const char *why = NULL;
    if (term_json_decode(x->buff, &index, 32, &j, &why) != 0)
        fail_msg("term does not decode: %s", why);
    assert_int_equal(index, x->index);
    return j;
}

static void assert_same(json_t *from_term, json_t *view)
{
    if (!json_equal(from_term, view)) {
        char *a = json_dumps(from_term, JSON_SORT_KEYS), *b = json_dumps(view, JSON_SORT_KEYS);
        fprintf(stderr, "term: %s\nview: %s\n", a, b);
        free(a);
        free(b);
        fail_msg("the term and the JSON view differ");
    }
    json_decref(from_term);
    json_decref(view);
}

/* The last element of an event tuple, decoded to JSON. */
static json_t *event_payload(const council_event *ev)
{
    ei_x_buff x;
    ei_x_new(&x);
    assert_int_equal(cn_event_term(&x, ev), 0);
    int index = 0, arity = 0;
    assert_int_equal(ei_decode_tuple_header(x.buff, &index, &arity), 0);
    for (int i = 0; i < arity - 1; i++)
        assert_int_equal(ei_skip_term(x.buff, &index), 0);
    json_t *j = NULL;
    const char *why = NULL;
    assert_int_equal(term_json_decode(x.buff, &index, 32, &j, &why), 0);
    assert_int_equal(index, x.index); /* the tuple ends with the payload */
    ei_x_free(&x);
    return j;
}

/* Every result-carrying event of rec, and the run's result, against the
 * JSON views; returns how many were compared. */
static size_t check_all(const council_run *run, const recorder *rec)
{
    size_t checked = 0;
    for (size_t i = 0; i < rec->n; i++) {
        const council_event *ev = rec->ev[i];
        if (ev->type == COUNCIL_EV_MEMBER_COMPLETED)
            assert_same(event_payload(ev), council_member_result_json(ev->member_result));
        else if (ev->type == COUNCIL_EV_ROUND_COMPLETED)
            assert_same(event_payload(ev), council_round_result_json(ev->round_result));
        else if (council_event_is_terminal(ev))
            assert_same(event_payload(ev), council_result_json(ev->result));
        else
            continue;
        checked++;
    }
    ei_x_buff x;
    ei_x_new(&x);
    assert_int_equal(cn_result_term(&x, council_run_result(run)), 0);
    assert_same(decoded(&x), council_result_json(council_run_result(run)));
    x.index = 0;
    assert_int_equal(cn_outcome_term(&x, run), 0);
    int index = 0;
    assert_int_equal(ei_skip_term(x.buff, &index), 0);
    assert_int_equal(index, x.index);
    ei_x_free(&x);
    return checked;
}

/* The term in x, as ei prints it, holds each of the strings (up to NULL). */
static void assert_printed(const ei_x_buff *x, ...)
{
    char *printed = NULL;
    int index = 0;
    assert_true(ei_s_print_term(&printed, x->buff, &index) > 0);
    va_list ap;
    va_start(ap, x);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL;)
        if (strstr(printed, want) == NULL)
            fail_msg("\"%s\" is not in %s", want, printed);
    va_end(ap);
    free(printed);
}

/* Empty lists (no errors, a round with no members, a run with no rounds)
 * are the empty list, once. */
static void test_empty_lists_in_results(void **state)
{
    fx *f = *state;
    /* no errors; the iterate round's own result has no members */
    f->run = start_rec(
        f->ctx, sq("{'id':'it','members':[{'id':'a','provider':'mock'},"
                   "{'id':'b','provider':'mock'}],'rounds':[{'type':'iterate',"
                   "'options':{'max_iterations':2,'rounds':[{'type':'independent_analysis'}]}}]}"),
        "q", &f->rec);
    wait_done(f->ctx, f->run, 5000);
    assert_int_equal(council_run_status(f->run), COUNCIL_COMPLETED);
    const council_result *r = council_run_result(f->run);
    assert_int_equal(r->n_errors, 0);
    int empty_round = 0;
    for (size_t i = 0; i < r->n_rounds; i++)
        empty_round |= r->rounds[i]->n_members == 0;
    assert_true(empty_round);
    assert_true(check_all(f->run, &f->rec) >= 4);
    ei_x_buff x;
    ei_x_new(&x);
    assert_int_equal(cn_result_term(&x, r), 0);
    assert_printed(&x, "errors => []", "members => []", NULL);
    rec_clear(&f->rec);
    council_run_unref(f->run);
    f->run = NULL;

    /* cancelled before any round: no rounds, no errors */
    council_spec *spec = spec_json(sq(SPEC));
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = spec;
    o.input.data = "q";
    o.input.len = 1;
    assert_int_equal(council_run_create(f->ctx, &o, &f->run), 0);
    council_spec_unref(spec);
    assert_int_equal(council_run_subscribe(f->run, rec_cb, NULL, &f->rec, NULL), 0);
    assert_int_equal(council_run_cancel(f->run), 0);
    council_ctx_flush(f->ctx);
    assert_int_equal(f->rec.n, 1);
    assert_int_equal(check_all(f->run, &f->rec), 1);
    x.index = 0;
    assert_int_equal(cn_outcome_term(&x, f->run), 0);
    assert_printed(&x, "rounds => []", "errors => []", NULL);
    ei_x_free(&x);
}

/* A summary's term decodes to its JSON view. */
static void assert_summary_matches(const council_summary *s)
{
    ei_x_buff x;
    ei_x_new(&x);
    assert_int_equal(cn_summary_term(&x, s), 0);
    assert_same(decoded(&x), council_summary_json(s));
    ei_x_free(&x);
}

static void test_result_summary_and_payloads_match_the_json_views(void **state)
{
    fx *f = *state;
    f->run = start_rec(f->ctx, sq(SPEC), "what is 2+2?", &f->rec);
    wait_done(f->ctx, f->run, 5000);
    assert_int_equal(council_run_status(f->run), COUNCIL_COMPLETED);

    const council_result *r = council_run_result(f->run);
    ei_x_buff x;
    ei_x_new(&x);
    assert_int_equal(cn_result_term(&x, r), 0);
    assert_same(decoded(&x), council_result_json(r));

    /* the vote round has an aggregate and parsed ballots; c has an error */
    const council_round_result *vote = round_named(f->run, "vote");
    assert_non_null(vote);
    assert_non_null(vote->aggregate_json);
    int saw_error = 0, saw_parsed = 0;
    for (size_t i = 0; i < vote->n_members; i++) {
        saw_error |= vote->members[i]->error != NULL;
        saw_parsed |= vote->members[i]->parsed_json != NULL;
    }
    assert_true(saw_error && saw_parsed);

    size_t checked = check_all(f->run, &f->rec);
    assert_true(checked >= 7);

    council_summary s;
    council_run_summary(f->run, &s);
    assert_summary_matches(&s);

    /* atoms where the protocol has them: keys and the status */
    x.index = 0;
    assert_int_equal(cn_summary_term(&x, &s), 0);
    assert_printed(&x, "status => completed", "current_round => nil", NULL);
    ei_x_free(&x);
}

static void test_summary_of_a_running_run_has_its_round(void **state)
{
    fx *f = *state;
    f->run = start_rec(f->ctx,
                       sq("{'id':'slow','members':[{'id':'a','provider':'mock',"
                          "'options':{'latency_ms':60000}}],"
                          "'rounds':[{'type':'independent_analysis'}]}"),
                       "q", NULL);
    spin(f->ctx, 30);
    council_summary s;
    council_run_summary(f->run, &s);
    assert_non_null(s.current_round);
    assert_summary_matches(&s);
    council_run_cancel(f->run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_result_summary_and_payloads_match_the_json_views,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_summary_of_a_running_run_has_its_round, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_empty_lists_in_results, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests_name("event_term", tests, NULL, NULL);
}
