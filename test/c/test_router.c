/* test_router.c - routers: the built-in rules, registered routers answering
 * at once or later, a router choosing a branch (a round of nobody is
 * skipped), and every way a router can go wrong ending the run with an
 * error that names it. Also the timings results carry. */
#include "core_test_util.h"

#define MEMBERS3                                                              \
    "'members':[{'id':'a','provider':'mock'},{'id':'b','provider':'mock'},"  \
    "{'id':'c','provider':'mock'}]"

static council_run *run_spec(council_ctx *ctx, const char *spec, const char *input)
{
    council_run *run = start_rec(ctx, sq(spec), input, NULL);
    wait_done(ctx, run, 5000);
    return run;
}

static const char *status_of(const council_member_result *m)
{
    return council_member_status_name(m->status);
}

static void test_rules_choose_members_by_input(void **state)
{
    fx *f = *state;
    const char *spec =
        "{'id':'t'," MEMBERS3 ",'router':{'rules':["
        "{'when':{'input_contains':['TAX','invoice']},'members':['b']},"
        "{'when':{'input_contains':'code'},'members':['a','c']}],"
        "'default':['c']},'rounds':[{'type':'independent_analysis'}]}";
    council_run *run = f->run = run_spec(f->ctx, spec, "a question about tax");
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "independent_analysis");
    assert_int_equal(r->n_members, 3);
    /* who took part first, then those left out, each in spec order */
    assert_string_equal(r->members[0]->member_id, "b");
    assert_string_equal(status_of(r->members[0]), "ok");
    assert_string_equal(r->members[1]->member_id, "a");
    assert_string_equal(status_of(r->members[1]), "skipped");
    assert_null(r->members[1]->error);
    assert_int_equal(r->members[1]->attempts, 0);
    assert_string_equal(status_of(member_in(r, "c")), "skipped");

    /* the second rule, and no rule: the default; statuses of a, b, c */
    static const struct {
        const char *input, *a, *b, *c;
    } more[] = {{"review this code", "ok", "skipped", "ok"},
                {"nothing matches", "skipped", "skipped", "ok"}};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        run = f->runs[i] = run_spec(f->ctx, spec, more[i].input);
        r = round_named(run, "independent_analysis");
        assert_string_equal(status_of(member_in(r, "a")), more[i].a);
        assert_string_equal(status_of(member_in(r, "b")), more[i].b);
        assert_string_equal(status_of(member_in(r, "c")), more[i].c);
    }
}

/* Two branches: a router on each round picks the one that runs; the
 * other's members are all left out, so it is skipped, and the run
 * completes with the branch taken. */
static void test_rules_choose_a_branch_after_a_vote(void **state)
{
    fx *f = *state;
    const char *spec =
        "{'id':'t','members':[{'id':'a','provider':'mock','options':{'vote':'B'}},"
        "{'id':'b','provider':'mock','options':{'vote':'B'}},"
        "{'id':'c','provider':'mock','options':{'vote':'A'}}],"
        "'rounds':[{'type':'independent_analysis'},{'type':'vote'},"
        "{'type':'peer_review','name':'a_branch','options':{'router':{'rules':["
        "{'when':{'previous_winner':'a'},'members':['a','c']}],'default':[]}}},"
        "{'type':'peer_review','name':'b_branch','options':{'router':{'rules':["
        "{'when':{'previous_winner':'b'},'members':['b','c']}],'default':[]}}}]}";
    council_run *run = fx_run(f, sq(spec), "q", 5000);
    council_ctx_flush(f->ctx);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *skipped = round_named(run, "a_branch");
    assert_non_null(skipped);
    assert_int_equal(skipped->n_members, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(status_of(skipped->members[i]), "skipped");
    assert_null(skipped->text);
    const council_round_result *taken = round_named(run, "b_branch");
    assert_string_equal(status_of(member_in(taken, "b")), "ok");
    assert_string_equal(status_of(member_in(taken, "a")), "skipped");
    assert_string_equal(council_run_result(run)->final_text, taken->text);
    /* both rounds were announced and completed, with their indices */
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_ROUND_STARTED), 4);
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_ROUND_COMPLETED), 4);
    assert_int_equal(skipped->idx, 2);
    assert_int_equal(taken->idx, 3);
    /* nobody of the skipped round was started */
    for (size_t i = 0; i < f->rec.n; i++)
        if (f->rec.ev[i]->type == COUNCIL_EV_MEMBER_STARTED)
            assert_string_not_equal(f->rec.ev[i]->round_name, "a_branch");
}

/* ---------------------------------------------------- registered routers */

typedef struct later {
    council_route *pending;  /* answered by the test */
    const char *answer[3];
    size_t n;
    int mode;                /* 0 answer at once, 1 later, 2 fail, 3 bad id, 4 error code */
    int cancels;
    int released;
    char request[4096];
} later;

static int later_start(council_route *rt, void *arg)
{
    later *l = arg;
    size_t len;
    const char *req = council_route_request(rt, &len);
    assert_non_null(req);
    snprintf(l->request, sizeof l->request, "%s", req);
    /* the same request as a value (council_json.h): kept with the route,
     * and what its text says */
    const json_t *obj = council_route_request_object(rt);
    assert_true(json_is_object(obj));
    assert_ptr_equal(council_route_request_object(rt), obj);
    json_t *parsed = json_loadb(req, len, 0, NULL);
    assert_true(json_equal(parsed, (json_t *)obj));
    json_decref(parsed);
    assert_null(council_route_request_object(NULL));
    switch (l->mode) {
    case 0:
        assert_int_equal(council_route_select(rt, l->answer, l->n), COUNCIL_OK);
        assert_int_equal(council_route_select(rt, l->answer, l->n), COUNCIL_ESTATE);
        return 0;
    case 1:
        l->pending = council_route_ref(rt);
        return 0;
    case 2:
        return council_route_fail(rt, "no idea");
    case 3: {
        const char *bad[] = {"a", "zed"};
        assert_int_equal(council_route_select(rt, bad, 2), COUNCIL_EINVAL);
        return 0;
    }
    default:
        return COUNCIL_EPROVIDER;
    }
}

static void later_cancel(council_route *rt, void *arg)
{
    later *l = arg;
    l->cancels++;
    if (l->pending == rt) {
        council_route_unref(rt);
        l->pending = NULL;
    }
}

static void later_release(void *arg)
{
    ((later *)arg)->released++;
}

/* ctx with the router "pick" over l (which outlives ctx: its release
 * comes when ctx is freed). */
static council_ctx *ctx_with(council_ctx *ctx, later *l)
{
    council_router_ops ops = {later_start, later_cancel, later_release};
    assert_int_equal(council_router_register(ctx, "pick", &ops, l), COUNCIL_OK);
    assert_int_equal(council_router_register(ctx, "pick", &ops, l), COUNCIL_EEXIST);
    return ctx;
}

#define PICK_SPEC                                                             \
    "{'id':'t'," MEMBERS3 ",'router':{'name':'pick','k':1},'rounds':["        \
    "{'type':'independent_analysis'},{'type':'synthesis'}]}"

static void test_registered_router_answering_at_once(void **state)
{
    fx *f = *state;
    static later l;
    l = (later){.answer = {"c", "a", "c"}, .n = 3};
    council_run *run = f->run = run_spec(ctx_with(f->ctx, &l), PICK_SPEC, "q");
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "independent_analysis");
    assert_string_equal(r->members[0]->member_id, "a");
    assert_string_equal(r->members[1]->member_id, "c");
    assert_string_equal(status_of(r->members[2]), "skipped");
    /* the request: the round, the members to choose among, the options */
    json_t *req = json_loads(l.request, 0, NULL);
    assert_non_null(req);
    assert_string_equal(json_string_value(json_object_get(req, "router")), "pick");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(req, "options"),
                                                        "k")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(req, "round"), "name")),
                        "independent_analysis");
    assert_int_equal(json_array_size(json_object_get(req, "members")), 3);
    assert_string_equal(json_string_value(json_object_get(req, "input")), "q");
    json_decref(req);
    /* the synthesis round (one member) is not routed: one request only;
     * the router is released with the context */
    council_run_unref(run);
    f->run = NULL;
    council_ctx_free(f->ctx);
    f->ctx = NULL;
    assert_int_equal(l.released, 1);
}

static void test_registered_router_answering_later(void **state)
{
    fx *f = *state;
    static later l;
    l = (later){.answer = {"b"}, .n = 1, .mode = 1};
    council_ctx *ctx = ctx_with(f->ctx, &l);
    council_run *run = f->run = start_rec(ctx, sq(PICK_SPEC), "q", NULL);
    for (int i = 0; i < 200 && !l.pending; i++)
        council_ctx_step(ctx, 10);
    assert_non_null(l.pending);
    assert_int_equal(council_route_active(l.pending), 1);
    assert_ptr_equal(council_route_run(l.pending), run);
    assert_true(council_route_id(l.pending) > 0);
    /* nothing is started while the router thinks */
    assert_int_equal(council_run_result(run)->n_rounds, 0);
    assert_int_equal(council_route_select(l.pending, l.answer, 1), COUNCIL_OK);
    assert_int_equal(council_route_active(l.pending), 0);
    council_route_unref(l.pending);
    l.pending = NULL;
    wait_done(ctx, run, 5000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = round_named(run, "independent_analysis");
    assert_string_equal(status_of(member_in(r, "b")), "ok");
    assert_string_equal(status_of(member_in(r, "a")), "skipped");
}

/* A run of PICK_SPEC with router l, in a context of its own, fails with
 * an error that holds expect. */
static void assert_fails_with(later *l, const char *expect)
{
    council_ctx *ctx = ctx_with(test_ctx(0), l);
    council_run *run = run_spec(ctx, PICK_SPEC, "q");
    assert_int_equal(council_run_status(run), COUNCIL_FAILED);
    const council_result *res = council_run_result(run);
    assert_int_equal(res->n_errors, 1);
    if (!strstr(res->errors[0], expect))
        fail_msg("error %s\n  expected it to hold %s", res->errors[0], expect);
    const council_error_info *info = council_result_error_info(res, 0);
    assert_string_equal(info->kind, "permanent");
    assert_string_equal(info->round_name, "independent_analysis");
    assert_null(info->member_id);
    assert_int_equal(res->n_rounds, 0);
    council_run_unref(run);
    council_ctx_free(ctx);
}

static void test_router_failures_fail_the_run_naming_the_router(void **state)
{
    (void)state;
    later fail = {.mode = 2};
    assert_fails_with(&fail, "round independent_analysis: router pick failed: no idea");
    later bad_id = {.mode = 3};
    assert_fails_with(&bad_id, "router pick failed: chose \"zed\", which is not one of "
                               "the round's members");
    later code = {.mode = 4};
    assert_fails_with(&code, "router pick failed: ");
}

static void test_router_without_answer_times_out(void **state)
{
    fx *f = *state;
    static later l;
    l = (later){.mode = 1};
    council_run *run = f->run =
        run_spec(ctx_with(f->ctx, &l),
                 "{'id':'t'," MEMBERS3 ",'limits':{'member_timeout_ms':30},'router':'pick',"
                 "'rounds':[{'type':'independent_analysis'}]}",
                 "q");
    assert_int_equal(council_run_status(run), COUNCIL_FAILED);
    assert_non_null(strstr(council_run_result(run)->errors[0],
                           "router pick failed: no answer within 30 ms"));
    /* worth trying again, unlike a router's own failure */
    assert_string_equal(council_result_error_info(council_run_result(run), 0)->kind,
                        "transient");
    assert_int_equal(l.cancels, 1);
    assert_null(l.pending);
}

static void test_cancel_while_routing_abandons_the_route(void **state)
{
    fx *f = *state;
    static later l;
    l = (later){.mode = 1};
    council_ctx *ctx = ctx_with(f->ctx, &l);
    council_run *run = f->run = start_rec(ctx, sq(PICK_SPEC), "q", NULL);
    for (int i = 0; i < 200 && !l.pending; i++)
        council_ctx_step(ctx, 10);
    council_route *rt = council_route_ref(l.pending);
    assert_int_equal(council_run_cancel(run), COUNCIL_OK);
    assert_int_equal(l.cancels, 1);
    const char *ids[] = {"a"};
    assert_int_equal(council_route_select(rt, ids, 1), COUNCIL_ESTATE);
    council_route_unref(rt);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
}

static void test_unregistered_router_and_bad_specs_are_refused(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_spec *spec;
    council_spec_error err;
    const char *s = sq("{'id':'t'," MEMBERS3 ",'rounds':[{'type':'vote'},{'type':'iterate',"
                       "'options':{'rounds':[{'type':'critique','options':{'router':"
                       "'nobody'}}]}}]}");
    assert_int_equal(council_spec_from_json(s, strlen(s), &spec, &err), COUNCIL_OK);
    assert_int_equal(council_ctx_check_providers(ctx, spec, &err), COUNCIL_EPROVIDER);
    assert_string_equal(err.field, "rounds[1].options.rounds[0].options.router");
    council_start_opts o = {.spec = spec, .input = {.tag = "text", .data = "q", .len = 1}};
    council_run *run;
    assert_int_equal(council_run_create(ctx, &o, &run), COUNCIL_EPROVIDER);
    council_spec_unref(spec);

    static const struct {
        const char *router, *field;
    } bad[] = {
        {"3", "router"},
        {"''", "router"},
        {"{'rules':[]}", "router.rules"},
        {"{'rules':[{'members':['zed']}]}", "router.rules[0].members"},
        {"{'rules':[{'when':{'moon':'full'},'members':[]}]}", "router.rules[0].when"},
        {"{'rules':[{'when':{'previous_winner':'zed'},'members':[]}]}",
         "router.rules[0].when"},
        {"{'rules':[{'when':{'input_contains':[]},'members':[]}]}", "router.rules[0].when"},
        {"{'rules':[{'members':['a']}],'default':'a'}", "router.default"},
        {"{'name':'x','rules':[{'members':['a']}]}", "router"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "{'id':'t'," MEMBERS3 ",'router':%s,'rounds':[{'type':"
                                  "'independent_analysis'}]}", bad[i].router);
        s = sq(buf);
        memset(&err, 0, sizeof err);
        assert_int_equal(council_spec_from_json(s, strlen(s), &spec, &err), COUNCIL_ESPEC);
        if (strcmp(err.field, bad[i].field) != 0)
            fail_msg("router %s: field %s, expected %s", bad[i].router, err.field,
                     bad[i].field);
    }
}

static void test_a_built_spec_takes_a_router(void **state)
{
    fx *f = *state;
    council_spec *spec = council_spec_new("built");
    assert_int_equal(council_spec_add_member(spec, "a", "mock", NULL), COUNCIL_OK);
    assert_int_equal(council_spec_add_member(spec, "b", "mock", NULL), COUNCIL_OK);
    assert_int_equal(council_spec_add_round(spec, "independent_analysis", NULL, NULL), COUNCIL_OK);
    assert_int_equal(council_spec_set_router(spec, "{\"rules\""), COUNCIL_EPARSE);
    assert_int_equal(council_spec_set_router(spec, "\"x\""), COUNCIL_OK);
    assert_int_equal(council_spec_set_router(spec, NULL), COUNCIL_OK);
    assert_int_equal(council_spec_set_router(spec, sq("{'rules':[{'members':['b']}]}")),
                     COUNCIL_OK);
    council_start_opts o = {.spec = spec, .input = {.tag = "text", .data = "q", .len = 1}};
    assert_int_equal(council_run_start(f->ctx, &o, &f->run), COUNCIL_OK);
    council_run *run = f->run;
    assert_int_equal(council_spec_set_router(spec, NULL), COUNCIL_ESTATE);
    wait_done(f->ctx, run, 5000);
    const council_round_result *r = round_named(run, "independent_analysis");
    assert_string_equal(status_of(member_in(r, "a")), "skipped");
    assert_string_equal(status_of(member_in(r, "b")), "ok");
    council_spec_unref(spec);
}

/* ----------------------------------------------------------------- timings */

static void test_results_carry_durations(void **state)
{
    fx *f = *state;
    council_run *run = f->run = run_spec(f->ctx, "{'id':'t','members':[{'id':'a','provider':'mock',"
                                     "'options':{'latency_ms':20}}],'rounds':[{'type':"
                                     "'independent_analysis'}]}", "q");
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_result *res = council_run_result(run);
    const council_round_result *r = res->rounds[0];
    const council_member_result *m = r->members[0];
    /* what holds a span holds the spans inside it (no figure is checked:
     * timings belong in make bench) */
    assert_true(m->provider_us > 0);
    assert_true(m->duration_us >= m->provider_us);
    assert_true(r->duration_us >= m->duration_us);
    assert_true(res->duration_us > 0);
    char *json = council_run_result_json(run);
    assert_non_null(strstr(json, "\"duration_us\""));
    assert_non_null(strstr(json, "\"provider_us\""));
    free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        fx_test(test_rules_choose_members_by_input),
        fx_test(test_rules_choose_a_branch_after_a_vote),
        fx_test(test_registered_router_answering_at_once),
        fx_test(test_registered_router_answering_later),
        cmocka_unit_test(test_router_failures_fail_the_run_naming_the_router),
        fx_test(test_router_without_answer_times_out),
        fx_test(test_cancel_while_routing_abandons_the_route),
        fx_test(test_unregistered_router_and_bad_specs_are_refused),
        fx_test(test_a_built_spec_takes_a_router),
        fx_test(test_results_carry_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
