/* test_rounds.c - the round engine: every round type's yield on fixed mock
 * inputs (exact tallies, Borda scores, brackets), what each member sees,
 * gating, iterate stop rules, the chair and round failure. */
#include "core_test_util.h"
/* white-box suite (tests the core's JSON text helper): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

/* Specs and expected JSON are written with single quotes (sq). */
#define MEMBERS3(a, b, c)                                                    \
    "'members':[{'id':'a','provider':'mock','options':{" a "}},"   \
    "{'id':'b','provider':'mock','options':{" b "}},"                \
    "{'id':'c','provider':'mock','options':{" c "}}]"

static council_run *run_spec(council_ctx *ctx, const char *spec, recorder *rec)
{
    council_run *run = start_rec(ctx, sq(spec), "q", rec);
    wait_done(ctx, run, 5000);
    return run;
}

/* The fixture's run of spec (single quotes), to its end. */
static council_run *ran(void **state, const char *spec)
{
    fx *f = *state;
    return f->run = run_spec(f->ctx, spec, NULL);
}

/* ran(state, spec), which completes, and its round named `round` (there
 * is one) into *r. */
static council_run *completed(void **state, const char *spec, const char *round,
                              const council_round_result **r)
{
    council_run *run = ran(state, spec);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    *r = round_named(run, round);
    assert_non_null(*r);
    return run;
}

static void assert_agg(const council_round_result *r, const char *expect)
{
    assert_non_null(r);
    assert_non_null(r->aggregate_json);
    expect = sq(expect);
    if (strcmp(r->aggregate_json, expect) != 0)
        fail_msg("aggregate %s\n  expected %s", r->aggregate_json, expect);
}

/* The spec (single quotes) is refused, naming field. */
static void assert_refused(const char *spec, const char *field)
{
    council_spec *s = NULL;
    council_spec_error err;
    const char *json = sq(spec);
    assert_int_equal(council_spec_from_json(json, strlen(json), &s, &err), COUNCIL_ESPEC);
    assert_string_equal(err.field, field);
}

static void test_independent_analysis_gives_one_answer_per_member(void **state)
{
    const council_round_result *r;
    council_run *run = completed(
        state, "{'id':'t'," MEMBERS3("", "", "") ",'rounds':[{'type':"
               "'independent_analysis'}]}",
        "independent_analysis", &r);
    assert_int_equal(r->n_members, 3);
    assert_string_equal(member_in(r, "b")->text,
                        "b: independent_analysis #0 attempt 1 on \"q\"");
    assert_int_equal(member_in(r, "b")->attempts, 1);
    assert_null(r->aggregate_json);
    /* no chair: the round's text (first successful answer) is final */
    assert_string_equal(council_run_result(run)->final_text,
                        "a: independent_analysis #0 attempt 1 on \"q\"");
}

static void test_vote_tally_and_winner(void **state)
{
    const council_round_result *r;
    council_run *run = completed(
        state, "{'id':'t'," MEMBERS3("'vote':'B'", "'vote':'B'", "'vote':'C'")
               ",'rounds':[{'type':'independent_analysis'},{'type':'vote',"
               "'name':'final_vote'}]}",
        "final_vote", &r);
    assert_agg(r, "{'tally':{'A':0,'B':2,'C':1},'unanimous':false,"
                  "'valid_votes':3,'winner':'B','winner_member':'b'}");
    assert_string_equal(member_in(r, "c")->parsed_json, sq("{'vote':'C'}"));
    assert_string_equal(r->text, "b: independent_analysis #0 attempt 1 on \"q\"");
    assert_string_equal(council_run_result(run)->final_text, r->text);
}

static void test_vote_tie_goes_to_lowest_label(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = run_spec(
        ctx, "{'id':'t'," MEMBERS3("'vote':'C'", "'vote':'B'", "'vote':'A'")
             ",'rounds':[{'type':'independent_analysis'},{'type':'vote'}]}",
        NULL);
    assert_agg(round_named(run, "vote"),
               "{'tally':{'A':1,'B':1,'C':1},'unanimous':false,"
               "'valid_votes':3,'winner':'A','winner_member':'a'}");
}

static void test_ranking_borda_count(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = run_spec(
        ctx, "{'id':'t'," MEMBERS3("'ranking':'B>A>C'", "'ranking':['B','C','A']",
                                       "'ranking':'A>B>C'")
             ",'rounds':[{'type':'independent_analysis'},{'type':'ranking'}]}",
        NULL);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "ranking");
    assert_agg(r, "{'ranking':['B','A','C'],'scores':{'A':3,'B':5,'C':1},"
                  "'winner':'B','winner_member':'b'}");
    assert_string_equal(member_in(r, "b")->parsed_json, sq("{'ranking':['B','C','A']}"));
    assert_string_equal(r->text, "b: independent_analysis #0 attempt 1 on \"q\"");
}

/* A mock "ranking" list is copied nowhere fixed-size: long entries (here
 * 254 and 300 bytes, which once overran a 256-byte stack buffer) are just
 * names that match no label. */
static void test_mock_ranking_list_with_long_entries_is_safe(void **state)
{
    char x[255], y[301], spec[2048];
    memset(x, 'X', sizeof x - 1);
    x[sizeof x - 1] = '\0';
    memset(y, 'Y', sizeof y - 1);
    y[sizeof y - 1] = '\0';
    snprintf(spec, sizeof spec,
             "{'id':'t'," MEMBERS3("'ranking':['%s','B','%s','C']", "", "")
             ",'rounds':[{'type':'independent_analysis'},{'type':'ranking'}]}",
             x, y);
    council_run *run = ran(state, spec);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "ranking");
    assert_non_null(r);
    assert_string_equal(member_in(r, "a")->parsed_json, sq("{'ranking':['B','C','A']}"));
}

/* A member may answer with any bytes. Requests are JSON, so the next
 * round's requests show such an answer with each invalid byte as U+FFFD
 * instead of failing every call (as "out of memory"). */
static int latin1_start(council_call *call, void *arg)
{
    json_t **seen = arg;
    if (strcmp(council_call_round_type(call), "peer_review") == 0) {
        size_t len;
        const char *req = council_call_request(call, &len);
        assert_non_null(req);
        json_decref(*seen);
        *seen = json_loadb(req, len, 0, NULL);
    }
    return council_call_complete(call, "caf\xe9 \xc3\xa9", 7);
}

static void test_non_utf8_answers_reach_later_requests_as_replacement_chars(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    static json_t *seen; /* the provider's, until the test takes it */
    seen = NULL;
    council_provider_ops ops = {latin1_start, NULL, NULL};
    assert_int_equal(council_provider_register(ctx, "latin1", &ops, &seen), 0);
    council_run *run = f->run = run_spec(
        ctx, "{'id':'t','members':[{'id':'a','provider':'latin1'},"
             "{'id':'b','provider':'mock'}],'rounds':[{'type':"
             "'independent_analysis'},{'type':'peer_review'}]}",
        NULL);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "peer_review");
    assert_true(member_in(r, "a")->ok);
    assert_true(member_in(r, "b")->ok);
    assert_non_null(seen);
    assert_string_equal(json_string_value(json_object_get(seen, "previous_answer")),
                        "caf\xef\xbf\xbd \xc3\xa9");
    /* the result keeps the bytes as given */
    assert_memory_equal(member_in(r, "a")->text, "caf\xe9 \xc3\xa9", 7);
    json_decref(seen);
    seen = NULL;
    /* the same rule as jansson's: overlong, surrogate, truncated and over
     * U+10FFFF sequences are invalid bytes; a 4-byte emoji is kept */
    json_t *j = cx_json_text("\xc0\xaf|\xed\xa0\x80|\xe2\x82|\xf4\x90\x80\x80|"
                             "\xf0\x9f\x98\x80", 19);
    assert_non_null(j);
    assert_string_equal(json_string_value(j),
                        "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                        "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                        "\xef\xbf\xbd|\xf0\x9f\x98\x80");
    json_decref(j);
}

static void test_pairwise_elimination_bracket_with_bye(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = run_spec(
        ctx, "{'id':'t'," MEMBERS3("'vote':'C'", "'vote':'B'", "'vote':'C'")
             ",'rounds':[{'type':'independent_analysis'},"
             "{'type':'pairwise_elimination','name':'bracket'}]}", rec);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "bracket");
    assert_agg(r, "{'bracket':[[{'pair':['A','B'],'votes':{'A':2,'B':1},"
                  "'winner':'A'},{'bye':'C'}],[{'pair':['A','C'],'votes':"
                  "{'A':1,'C':2},'winner':'C'}]],'winner':'C',"
                  "'winner_member':'c'}");
    const council_member_result *mb = member_in(r, "b");
    assert_true(mb->ok);
    /* a and b voted and their answers lost a match; c's won */
    assert_int_equal(mb->status, COUNCIL_MEMBER_ELIMINATED);
    assert_int_equal(member_in(r, "a")->status, COUNCIL_MEMBER_ELIMINATED);
    assert_int_equal(member_in(r, "c")->status, COUNCIL_MEMBER_OK);
    assert_int_equal(mb->attempts, 2); /* one call per match */
    assert_string_equal(mb->parsed_json,
                        sq("{'votes':[{'pair':['A','B'],'vote':'B'},"
                        "{'pair':['A','C'],'vote':'A'}]}"));
    assert_string_equal(r->text, "c: independent_analysis #0 attempt 1 on \"q\"");
    /* one member_started / member_completed per member in the round */
    size_t started = 0, completed = 0;
    for (size_t i = 0; i < rec->n; i++) {
        const council_event *e = rec->ev[i];
        if (e->round_name && strcmp(e->round_name, "bracket") == 0) {
            started += e->type == COUNCIL_EV_MEMBER_STARTED;
            completed += e->type == COUNCIL_EV_MEMBER_COMPLETED;
        }
    }
    assert_int_equal(started, 3);
    assert_int_equal(completed, 3);
}

static void test_iterate_stops_on_unanimous_vote(void **state)
{
    const council_round_result *it;
    council_run *run = completed(
        state, "{'id':'t'," MEMBERS3("", "", "")
               ",'rounds':[{'type':'independent_analysis'},{'type':'iterate',"
               "'name':'loop','options':{'until':'consensus','max_iterations':5,"
               "'rounds':[{'type':'peer_review'},{'type':'vote'}]}}]}",
        "loop", &it);
    assert_agg(it, "{'consensus':true,'iterations':1,'stopped_by':'consensus'}");
    assert_int_equal(it->idx, 1);
    assert_int_equal(council_run_result(run)->n_rounds, 4);
}

static void test_iterate_runs_to_max_iterations_without_consensus(void **state)
{
    council_run *run = ran(
        state, "{'id':'t'," MEMBERS3("'vote':'B'", "'vote':'A'", "")
               ",'rounds':[{'type':'independent_analysis'},{'type':'iterate',"
               "'name':'loop','until':'consensus','max_iterations':3,"
               "'rounds':[{'type':'vote'}]}]}");
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_result *res = council_run_result(run);
    assert_int_equal(res->n_rounds, 5); /* analysis, 3 votes, the iterate */
    assert_string_equal(res->rounds[1]->type, "vote");
    assert_int_equal(res->rounds[1]->idx, 2);
    assert_int_equal(res->rounds[3]->idx, 4);
    assert_agg(res->rounds[4], "{'consensus':false,'iterations':3,"
                               "'stopped_by':'max_iterations'}");
    council_summary s;
    council_run_summary(run, &s);
    assert_int_equal(s.rounds_completed, 5);
}

static void test_iterate_stops_when_answers_are_equal(void **state)
{
    council_run *run = ran(
        state, "{'id':'t'," MEMBERS3("'answer':'42'", "'answer':'42'",
                                       "'answer':'42'")
               ",'rounds':[{'type':'iterate','options':{'until':'consensus',"
               "'rounds':[{'type':'peer_review'}]}}]}");
    assert_agg(round_named(run, "iterate"),
               "{'consensus':true,'iterations':1,'stopped_by':'consensus'}");
    assert_string_equal(council_run_result(run)->final_text, "42");
}

static void test_synthesis_member_and_chair(void **state)
{
    const council_round_result *sy;
    council_run *run = completed(
        state, "{'id':'t'," MEMBERS3("", "", "")
               ",'rounds':[{'type':'independent_analysis'},{'type':'synthesis',"
               "'options':{'member':'b'}}],'chair':'c'}",
        "synthesis", &sy);
    assert_int_equal(sy->n_members, 1);
    assert_string_equal(sy->members[0]->member_id, "b");
    assert_string_equal(sy->text, "b: synthesis #1 attempt 1 on \"q\" having read 3 answers");
    const council_round_result *ch = round_named(run, "chair");
    assert_non_null(ch);
    assert_int_equal(ch->idx, 2);
    assert_string_equal(ch->members[0]->member_id, "c");
    assert_string_equal(council_run_result(run)->final_text, ch->text);
}

static void test_members_option_gates_a_round(void **state)
{
    council_run *run = ran(
        state, "{'id':'t'," MEMBERS3("", "", "")
               ",'rounds':[{'type':'independent_analysis','options':{'members':"
               "['c','b']}},{'type':'vote','options':{'members':['a']}}]}");
    const council_round_result *r = round_named(run, "independent_analysis");
    /* the members called, then those left out, as skipped */
    assert_int_equal(r->n_members, 3);
    assert_string_equal(r->members[0]->member_id, "b");
    assert_string_equal(r->members[1]->member_id, "c");
    assert_int_equal(r->members[1]->status, COUNCIL_MEMBER_OK);
    const council_member_result *ma = r->members[2];
    assert_string_equal(ma->member_id, "a");
    assert_int_equal(ma->status, COUNCIL_MEMBER_SKIPPED);
    assert_false(ma->ok);
    assert_int_equal(ma->attempts, 0);
    assert_null(ma->error);
    assert_null(ma->error_kind);
    const council_round_result *v = round_named(run, "vote");
    assert_int_equal(v->n_members, 3);
    assert_int_equal(member_in(v, "a")->status, COUNCIL_MEMBER_OK);
    assert_int_equal(member_in(v, "b")->status, COUNCIL_MEMBER_SKIPPED);
    /* only b and c answered, so they are the candidates */
    assert_agg(v, "{'tally':{'B':1,'C':0},'unanimous':true,'valid_votes':1,"
                  "'winner':'B','winner_member':'b'}");
}

static void test_unparsable_vote_is_a_counted_member_error(void **state)
{
    const council_round_result *v;
    council_run *run = completed(
        state, "{'id':'t'," MEMBERS3("", "", "'text':'I like them all'")
               ",'rounds':[{'type':'independent_analysis'},{'type':'vote'}]}",
        "vote", &v);
    const council_member_result *mc = member_in(v, "c");
    assert_false(mc->ok);
    assert_int_equal(mc->status, COUNCIL_MEMBER_INVALID_OUTPUT);
    assert_string_equal(mc->error_kind, "validation");
    assert_int_equal(mc->attempts, 1);
    assert_non_null(strstr(mc->error, "unparsable vote"));
    assert_string_equal(mc->text, "I like them all");
    assert_agg(v, "{'tally':{'A':2,'B':0,'C':0},'unanimous':true,"
                  "'valid_votes':2,'winner':'A','winner_member':'a'}");
    const council_result *res = council_run_result(run);
    assert_int_equal(res->n_errors, 1);
    assert_non_null(strstr(res->errors[0], "member c in round vote"));
    /* the same error as data */
    const council_error_info *ei = council_result_error_info(res, 0);
    assert_string_equal(ei->kind, "validation");
    assert_string_equal(ei->member_id, "c");
    assert_string_equal(ei->round_name, "vote");
    assert_null(council_result_error_info(res, 1));
    assert_null(council_result_error_info(NULL, 0));
}

static void test_round_with_no_success_fails_the_run(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = run_spec(
        ctx, "{'id':'t'," MEMBERS3("'fail_attempts':[1]", "'fail_attempts':[1]",
                                       "'fail_attempts':[1]")
             ",'rounds':[{'type':'independent_analysis'},{'type':'vote'}]}", rec);
    assert_int_equal(council_run_status(run), COUNCIL_FAILED);
    const council_result *res = council_run_result(run);
    assert_int_equal(res->n_errors, 4);
    assert_non_null(strstr(res->errors[3], "round independent_analysis failed"));
    /* every member failure in it transient: so is the round's */
    assert_string_equal(council_result_error_info(res, 3)->kind, "transient");
    assert_null(council_result_error_info(res, 3)->member_id);
    assert_string_equal(council_result_error_info(res, 3)->round_name, "independent_analysis");
    assert_string_equal(council_result_error_info(res, 0)->member_id, "a");
    assert_null(res->final_text);
    assert_int_equal(rec_count(rec, COUNCIL_EV_RUN_FAILED), 1);
    assert_int_equal(rec_terminal(rec), 1);
    assert_int_equal(rec_count(rec, COUNCIL_EV_ROUND_COMPLETED), 0);
    assert_int_equal(rec_count(rec, COUNCIL_EV_MEMBER_COMPLETED), 3);
}

static void test_vote_without_answers_fails(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = run_spec(ctx, "{'id':'t'," MEMBERS3("", "", "")
                                     ",'rounds':[{'type':'vote'}]}", NULL);
    assert_int_equal(council_run_status(run), COUNCIL_FAILED);
    assert_non_null(strstr(council_run_result(run)->errors[0], "no answers"));
}

/* ---- what members see: a native provider that records requests */

typedef struct seen {
    json_t *reqs; /* array of request objects */
} seen;

static int rec_start(council_call *call, void *arg)
{
    seen *s = arg;
    json_array_append(s->reqs, council_call_request_json(call));
    char buf[128];
    snprintf(buf, sizeof buf, "%s@%s", council_call_member_id(call),
             council_call_round_name(call));
    if (strcmp(council_call_round_type(call), "vote") == 0)
        snprintf(buf, sizeof buf, "VOTE: A");
    council_call_complete(call, buf, strlen(buf));
    return 0;
}

static json_t *req_of(seen *s, const char *member, const char *round)
{
    size_t i;
    json_t *r;
    json_array_foreach(s->reqs, i, r) {
        if (strcmp(json_string_value(json_object_get(r, "member_id")), member) == 0 &&
            strcmp(json_string_value(json_object_get(json_object_get(r, "round"), "name")),
                   round) == 0)
            return r;
    }
    fail_msg("no request for %s in %s", member, round);
    return NULL;
}

static char *answers_str(json_t *req)
{
    return json_dumps(json_object_get(req, "answers"), JSON_COMPACT | JSON_SORT_KEYS);
}

static void expect_answers(json_t *req, const char *expect)
{
    char *s = answers_str(req);
    expect = sq(expect);
    if (strcmp(s, expect) != 0)
        fail_msg("answers %s\n expected %s", s, expect);
    free(s);
}

static void test_each_round_type_grants_what_it_should(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    seen s = {json_array()};
    council_provider_ops ops = {rec_start, NULL, NULL};
    assert_int_equal(council_provider_register(ctx, "rec", &ops, &s), 0);
    assert_int_equal(council_provider_register(ctx, "rec", &ops, &s), COUNCIL_EEXIST);
    const char *spec =
        "{'id':'see','members':[{'id':'x','provider':'rec'},"
        "{'id':'y','provider':'rec'}],'rounds':["
        "{'type':'independent_analysis','name':'r0'},"
        "{'type':'peer_review','name':'r1'},"
        "{'type':'anonymized_peer_review','name':'r2'},"
        "{'type':'critique','name':'r3'},"
        "{'type':'vote','name':'r4','options':{'instructions':'pick'}},"
        "{'type':'independent_analysis','name':'r5'}]}";
    council_run *run = f->run = run_spec(ctx, spec, NULL);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    json_t *r = req_of(&s, "x", "r0");
    expect_answers(r, "[]");
    assert_string_equal(json_string_value(json_object_get(r, "input")), "q");
    assert_string_equal(json_string_value(json_object_get(r, "council")), "see");
    assert_int_equal(json_integer_value(json_object_get(r, "attempt")), 1);
    assert_non_null(json_object_get(r, "instructions"));
    expect_answers(req_of(&s, "x", "r1"), "[{'member_id':'y','text':'y@r0'}]");
    assert_string_equal(json_string_value(json_object_get(req_of(&s, "x", "r1"),
                                                          "previous_answer")), "x@r0");
    expect_answers(req_of(&s, "y", "r2"), "[{'label':'A','text':'x@r1'}]");
    expect_answers(req_of(&s, "x", "r3"), "[{'member_id':'x','text':'x@r2'},"
                                          "{'member_id':'y','text':'y@r2'}]");
    json_t *v = req_of(&s, "y", "r4");
    /* critiques do not replace answers; the next round sees them */
    expect_answers(v, "[{'label':'A','text':'x@r2'},{'label':'B','text':'y@r2'}]");
    char *cr = json_dumps(json_object_get(v, "critiques"), JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(cr, sq("[{'member_id':'x','text':'x@r3'},"
                               "{'member_id':'y','text':'y@r3'}]"));
    free(cr);
    assert_string_equal(json_string_value(json_object_get(v, "instructions")), "pick");
    assert_null(json_object_get(req_of(&s, "x", "r5"), "critiques"));
    expect_answers(req_of(&s, "x", "r5"), "[]");
    json_decref(s.reqs);
}

/* failure_mode: "continue" (the default) lets a round go on without a
 * failed member; "fail_fast" fails the run as soon as one fails for good. */
static void test_failure_mode_fail_fast_and_continue(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    const char *members = MEMBERS3("'fail_attempts':[1,2]", "'latency_ms':200", "");
    char spec[1024];
    snprintf(spec, sizeof spec,
             "{'id':'t',%s,'rounds':[{'type':'independent_analysis',"
             "'options':{'failure_mode':'fail_fast'}},{'type':'vote'}],"
             "'limits':{'max_attempts':2}}",
             members);
    council_run *run = f->run = run_spec(ctx, spec, NULL);
    assert_int_equal(council_run_status(run), COUNCIL_FAILED);
    const council_result *res = council_run_result(run);
    assert_int_equal(res->n_rounds, 1); /* the partial round, then nothing */
    assert_int_equal(member_in(res->rounds[0], "a")->attempts, 2);
    assert_false(member_in(res->rounds[0], "a")->ok);
    assert_int_equal(member_in(res->rounds[0], "a")->status, COUNCIL_MEMBER_ERROR);
    /* b's call was abandoned when the round failed, and c's never made
     * (a's attempts fail at once, before c is launched) */
    assert_int_equal(member_in(res->rounds[0], "b")->status, COUNCIL_MEMBER_SKIPPED);
    assert_null(member_in(res->rounds[0], "b")->error);
    assert_int_equal(member_in(res->rounds[0], "c")->status, COUNCIL_MEMBER_SKIPPED);
    assert_int_equal(member_in(res->rounds[0], "c")->attempts, 0);
    assert_non_null(strstr(res->errors[res->n_errors - 1], "failure_mode fail_fast"));
    /* a's failures are transient (mock), so is the round's that they failed */
    const council_error_info *ei = council_result_error_info(res, res->n_errors - 1);
    assert_string_equal(ei->kind, "transient");
    assert_string_equal(ei->member_id, "a");
    assert_string_equal(ei->round_name, "independent_analysis");
    snprintf(spec, sizeof spec,
             "{'id':'t',%s,'rounds':[{'type':'independent_analysis',"
             "'options':{'failure_mode':'continue'}}],'limits':{'max_attempts':2}}",
             members);
    run = f->runs[0] = run_spec(ctx, spec, NULL);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    assert_refused("{'id':'t','members':[{'id':'a','provider':'mock'}],"
                   "'rounds':[{'type':'vote','options':{'failure_mode':'maybe'}}]}",
                   "rounds[0].options.failure_mode");
}

/* A member's own max_attempts / backoff_ms win over the limits'; a
 * timed-out last attempt is the status timeout. */
static void test_member_retry_options_and_timeout_status(void **state)
{
    fx *f = *state;
    council_run *run = f->run = run_spec(
        f->ctx, "{'id':'t'," MEMBERS3("'fail_attempts':[1,2]",
                                   "'fail_attempts':[1,2],'max_attempts':3,'backoff_ms':1",
                                   "'hang_attempts':[1],'timeout_ms':50")
             ",'rounds':[{'type':'independent_analysis'}],'limits':{'max_attempts':1}}",
        NULL);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "independent_analysis");
    assert_int_equal(member_in(r, "a")->attempts, 1);
    assert_int_equal(member_in(r, "a")->status, COUNCIL_MEMBER_ERROR);
    assert_int_equal(member_in(r, "b")->attempts, 3);
    assert_int_equal(member_in(r, "b")->status, COUNCIL_MEMBER_OK);
    const council_member_result *mc = member_in(r, "c");
    assert_int_equal(mc->attempts, 1);
    assert_int_equal(mc->status, COUNCIL_MEMBER_TIMEOUT);
    assert_string_equal(mc->error_kind, "transient");
    assert_non_null(strstr(mc->error, "timeout after 50 ms"));
    /* the options' ranges are the limits' */
    assert_refused("{'id':'t','members':[{'id':'a','provider':'mock',"
                   "'options':{'max_attempts':11}}],'rounds':[{'type':'vote'}]}",
                   "members[0].options.max_attempts");
    assert_refused("{'id':'t','members':[{'id':'a','provider':'mock',"
                   "'options':{'backoff_ms':-1}}],'rounds':[{'type':'vote'}]}",
                   "members[0].options.backoff_ms");
    assert_string_equal(council_member_status_name(COUNCIL_MEMBER_INVALID_OUTPUT),
                        "invalid_output");
    assert_null(council_member_status_name((council_member_status)99));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        fx_test(test_failure_mode_fail_fast_and_continue),
        fx_test(test_member_retry_options_and_timeout_status),
        fx_test(test_independent_analysis_gives_one_answer_per_member),
        fx_test(test_vote_tally_and_winner),
        fx_test(test_vote_tie_goes_to_lowest_label),
        fx_test(test_ranking_borda_count),
        fx_test(test_mock_ranking_list_with_long_entries_is_safe),
        fx_test(test_pairwise_elimination_bracket_with_bye),
        fx_test(test_iterate_stops_on_unanimous_vote),
        fx_test(test_iterate_runs_to_max_iterations_without_consensus),
        fx_test(test_iterate_stops_when_answers_are_equal),
        fx_test(test_synthesis_member_and_chair),
        fx_test(test_members_option_gates_a_round),
        fx_test(test_unparsable_vote_is_a_counted_member_error),
        fx_test(test_round_with_no_success_fails_the_run),
        fx_test(test_vote_without_answers_fails),
        fx_test(test_each_round_type_grants_what_it_should),
        fx_test(test_non_utf8_answers_reach_later_requests_as_replacement_chars),
    };
    return cmocka_run_group_tests_name("rounds", tests, NULL, NULL);
}
