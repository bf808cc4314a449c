/* test_spec.c - the council spec: JSON and C builders, validation errors
 * that name the field, limits, labels, the ballot parsing rule, and the
 * specs of council members compiled with their parent. */
#include "core_test_util.h"
/* white-box suite (reads the compiled spec): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

/* Specs in single quotes (sq). */
static const char GOOD_SQ[] =
    "{'id':'c1','members':["
    "{'id':'a','provider':'mock','options':{'latency_ms':5}},"
    "{'id':'b','provider':'mock'},"
    "{'id':'c','provider':'exec','options':{'argv':['/bin/cat']}}],"
    "'rounds':[{'type':'independent_analysis'},"
    "{'type':'iterate','name':'loop','options':{'max_iterations':4,"
    "'until':'consensus','rounds':[{'type':'critique'},{'type':'vote',"
    "'options':{'members':['b','a']}}]}},"
    "{'type':'synthesis','options':{'member':'b'}}],"
    "'chair':'a',"
    "'limits':{'member_timeout_ms':1000,'max_attempts':3,'backoff_ms':10,"
    "'concurrency':2}}";
#define GOOD sq(GOOD_SQ)

static void test_valid_spec_compiles_into_the_model(void **state)
{
    (void)state;
    council_spec *s = spec_json(GOOD);
    assert_string_equal(council_spec_id(s), "c1");
    assert_int_equal(council_spec_member_count(s), 3);
    assert_int_equal(s->n_rounds, 3);
    assert_string_equal(s->rounds[0].name, "independent_analysis");
    assert_int_equal(s->rounds[1].type, RT_ITERATE);
    assert_int_equal(s->rounds[1].n_children, 2);
    assert_int_equal(s->rounds[1].max_iterations, 4);
    assert_int_equal(s->rounds[1].until, STOP_CONSENSUS);
    /* gate kept in spec order whatever the list order */
    assert_true(s->rounds[1].children[1].gated);
    assert_int_equal(s->rounds[1].children[1].gate[0], 0);
    assert_int_equal(s->rounds[1].children[1].gate[1], 1);
    assert_int_equal(s->rounds[2].synth_member, 1);
    assert_int_equal(s->chair, 0);
    assert_int_equal(s->limits.max_attempts, 3);
    assert_int_equal(s->limits.concurrency, 2);
    assert_string_equal(s->members[2].label, "C");
    char *j = council_spec_to_json(s);
    assert_non_null(j);
    council_spec *s2 = spec_json(j);
    assert_int_equal(s2->n_rounds, 3);
    free(j);
    council_spec_unref(s2);
    council_spec_unref(s);
}

/* The spec (single quotes) is refused with code, naming field (and
 * msg_part in its message unless NULL). */
static void expect_error(const char *json, int code, const char *field,
                         const char *msg_part)
{
    council_spec *s = NULL;
    council_spec_error err;
    memset(&err, 0, sizeof err);
    json = sq(json);
    int rc = council_spec_from_json(json, strlen(json), &s, &err);
    if (rc != code || strcmp(err.field, field) != 0 ||
        (msg_part && !strstr(err.message, msg_part)))
        fail_msg("spec %s: got %s field '%s' message '%s'", json, council_strerror(rc),
                 err.field, err.message);
    assert_null(s);
}

#define M2 "'members':[{'id':'a','provider':'mock'},{'id':'b','provider':'mock'}]"

static void test_spec_errors_name_the_field(void **state)
{
    (void)state;
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'vote'},{'type':'vote'},"
                 "{'type':'telepathy'}]}",
                 COUNCIL_ESPEC, "rounds[2].type", "telepathy");
    expect_error("{'id':'x','members':[{'id':'a','provider':'mock'},"
                 "{'id':'a','provider':'mock'}],'rounds':[{'type':'vote'}]}",
                 COUNCIL_ESPEC, "members[1].id", "duplicate");
    expect_error("{'id':'x','members':[{'id':'a'}],'rounds':[{'type':'vote'}]}",
                 COUNCIL_ESPEC, "members[0].provider", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'vote'}],'chair':'z'}",
                 COUNCIL_ESPEC, "chair", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'vote','options':"
                 "{'members':['a','q']}}]}",
                 COUNCIL_ESPEC, "rounds[0].options.members[1]", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'vote'},{'type':'iterate'}]}",
                 COUNCIL_ESPEC, "rounds[1].options.rounds", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'iterate','options':{"
                 "'max_iterations':0,'rounds':[{'type':'vote'}]}}]}",
                 COUNCIL_ESPEC, "rounds[0].options.max_iterations", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'iterate','options':{"
                 "'rounds':[{'type':'bogus'}]}}]}",
                 COUNCIL_ESPEC, "rounds[0].options.rounds[0].type", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'vote'}],'limits':"
                 "{'max_attempts':-1}}",
                 COUNCIL_ESPEC, "limits.max_attempts", NULL);
    expect_error("{'id':'x','members':[{'id':'a','provider':'exec'}],"
                 "'rounds':[{'type':'vote'}]}",
                 COUNCIL_ESPEC, "members[0].options.argv", NULL);
    expect_error("{'members':[],'rounds':[]}", COUNCIL_ESPEC, "id", NULL);
    expect_error("{'id':'x','members':[],'rounds':[]}", COUNCIL_ESPEC, "members", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[]}", COUNCIL_ESPEC, "rounds", NULL);
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'vote','name':''}]}",
                 COUNCIL_ESPEC, "rounds[0].name", NULL);
    /* 1 + 100 * (1 + 100 * (1 + 100)) rounds: refused, not run for days */
    expect_error("{'id':'x'," M2 ",'rounds':[{'type':'iterate','options':{"
                 "'max_iterations':100,'rounds':[{'type':'iterate','options':{"
                 "'max_iterations':100,'rounds':[{'type':'iterate','options':{"
                 "'max_iterations':100,'rounds':[{'type':'vote'}]}}]}}]}}]}",
                 COUNCIL_ESPEC, "rounds", "more than 10000 rounds");
    expect_error("[1,2]", COUNCIL_ESPEC, "$", NULL);
    expect_error("{'id':", COUNCIL_EPARSE, "$", "invalid JSON");
}

static const council_config SPEC64 = {.max_spec_bytes = 64};

/* in a context of SPEC64 */
static void test_spec_size_limit_is_etoobig(void **state)
{
    fx *f = *state;
    council_spec *s = NULL;
    council_spec_error err;
    const char *good = GOOD;
    assert_int_equal(council_ctx_spec_from_json(f->ctx, good, strlen(good), &s, &err),
                     COUNCIL_ETOOBIG);
    assert_string_equal(err.field, "$");
    assert_null(s);
}

static void test_c_builders_build_and_freeze(void **state)
{
    (void)state;
    council_spec *s = council_spec_new("built");
    assert_int_equal(council_spec_add_member(s, "a", "mock", NULL), 0);
    assert_int_equal(council_spec_add_member(s, "b", "mock", "{\"latency_ms\":1}"), 0);
    assert_int_equal(council_spec_add_member(s, "c", "mock", "[1]"), COUNCIL_EPARSE);
    assert_int_equal(council_spec_add_round(s, "independent_analysis", NULL, NULL), 0);
    assert_int_equal(council_spec_add_round(s, "vote", "ballot", "{\"members\":[\"a\"]}"), 0);
    assert_int_equal(council_spec_set_chair(s, "b"), 0);
    council_limits l = {100, 2, 5, 1};
    assert_int_equal(council_spec_set_limits(s, &l), 0);
    council_spec_error err;
    assert_int_equal(council_spec_validate(s, &err), 0);
    assert_int_equal(s->n_members, 2);
    assert_string_equal(s->rounds[1].name, "ballot");
    assert_int_equal(s->chair, 1);
    assert_int_equal(s->limits.member_timeout_ms, 100);
    assert_int_equal(council_spec_add_member(s, "d", "mock", NULL), COUNCIL_ESTATE);
    assert_int_equal(council_spec_validate(s, &err), 0);
    council_spec_unref(s);

    s = council_spec_new("bad");
    council_spec_add_member(s, "a", "mock", NULL);
    council_spec_add_round(s, "vote", NULL, "{\"members\":[\"zz\"]}");
    assert_int_equal(council_spec_validate(s, &err), COUNCIL_ESPEC);
    assert_string_equal(err.field, "rounds[0].options.members[0]");
    council_spec_unref(s);
}

static void test_labels_follow_spec_order(void **state)
{
    (void)state;
    char l[8];
    cx_label(0, l);
    assert_string_equal(l, "A");
    cx_label(25, l);
    assert_string_equal(l, "Z");
    cx_label(26, l);
    assert_string_equal(l, "A2");
    cx_label(53, l);
    assert_string_equal(l, "B3");
}

static const char *LABELS[] = {"A", "B", "C"};

static void test_vote_parsing_takes_first_valid_marker(void **state)
{
    (void)state;
    /* the text, what it parses to, the label chosen */
    static const struct {
        const char *text;
        int rc;
        const char *label;
    } cases[] = {
        {"I think VOTE: b because. VOTE: A", COUNCIL_OK, "B"},
        {"VOTE:\tC", COUNCIL_OK, "C"},
        {"VOTE: D", COUNCIL_EPARSE, NULL},
        {"vote: A", COUNCIL_EPARSE, NULL},
        {"VOTE: AB", COUNCIL_EPARSE, NULL},
    };
    char out[8];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = cases[i].text;
        int rc = council_parse_vote(t, strlen(t), LABELS, 3, out, sizeof out);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": %s", t, council_strerror(rc));
        if (cases[i].label)
            assert_string_equal(out, cases[i].label);
    }
    assert_int_equal(council_parse_vote("VOTE: A", 6, LABELS, 3, out, sizeof out),
                     COUNCIL_EPARSE); /* length respected */
}

static void test_ranking_parsing(void **state)
{
    (void)state;
    /* the text, what it parses to, how many labels, their order */
    static const struct {
        const char *text;
        int rc;
        size_t n, order[3];
    } cases[] = {
        {"blah\nRANKING: C > a, B\nmore", COUNCIL_OK, 3, {2, 0, 1}},
        {"RANKING: B", COUNCIL_OK, 1, {1}},
        {"RANKING: A > A", COUNCIL_EPARSE, 0, {0}},
        {"RANKING: A > Q", COUNCIL_EPARSE, 0, {0}},
        {"RANKING: A ; B", COUNCIL_EPARSE, 0, {0}},
        {"no ranking here", COUNCIL_EPARSE, 0, {0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = cases[i].text;
        size_t order[3], n = 0;
        int rc = council_parse_ranking(t, strlen(t), LABELS, 3, order, &n);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": %s", t, council_strerror(rc));
        if (rc != COUNCIL_OK)
            continue;
        assert_int_equal(n, cases[i].n);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(order[k], cases[i].order[k]);
    }
}

static void test_strerror_names_every_code(void **state)
{
    (void)state;
    for (int c = 0; c >= COUNCIL_ERUNNING; c--)
        assert_string_not_equal(council_strerror(c), "unknown error");
    assert_string_equal(council_strerror(12345), "unknown error");
    assert_string_equal(council_strerror(COUNCIL_ERUNNER_DEAD), "runner dead");
}

/* A council of a mock and a council member "sub" of spec `inner`
 * (single quotes). */
#define WITH_SUB(id, inner)                                                     \
    "{'id':'" id "','members':[{'id':'a','provider':'mock'},"       \
    "{'id':'sub','provider':'council','options':{'spec':" inner       \
    "}}],'rounds':[{'type':'vote'}]}"

static void test_council_member_specs_are_compiled_with_their_parent(void **state)
{
    (void)state;
    /* valid: compiled and frozen once, with its own council members too */
    council_spec *s = spec_json(sq(WITH_SUB("p", WITH_SUB("c1", WITH_SUB("c2", "{'id':'x'}")))));
    const council_spec *c1 = s->members[1].sub;
    assert_non_null(c1);
    assert_null(s->members[1].sub_error);
    assert_null(s->members[0].sub);
    assert_true(c1->frozen);
    assert_int_equal(c1->refs, 1);
    assert_string_equal(council_spec_id(c1), "c1");
    assert_int_equal(c1->n_members, 2);
    const council_spec *c2 = c1->members[1].sub;
    assert_non_null(c2);
    assert_string_equal(council_spec_id(c2), "c2");
    /* the third level is invalid: a member error of its calls, not an
     * error of the specs above it */
    assert_null(c2->members[1].sub);
    assert_string_equal(c2->members[1].sub_error,
                        "sub-council: spec members: must be a non-empty array");
    /* the JSON form is the document as given */
    char *json = council_spec_to_json(s);
    assert_non_null(strstr(json, "\"id\":\"c2\""));
    free(json);
    council_spec_unref(s);

    /* nested deeper than a sub-council may run: left alone */
    s = spec_json(sq(WITH_SUB("p", WITH_SUB("c1", WITH_SUB("c2", WITH_SUB("c3", "{'id':'x'}"))))));
    const council_spec *c3 = s->members[1].sub->members[1].sub->members[1].sub;
    assert_non_null(c3);
    assert_null(c3->members[1].sub);
    assert_null(c3->members[1].sub_error);
    council_spec_unref(s);

    /* the C builders: compiled when the parent is validated */
    s = council_spec_new("b");
    assert_int_equal(council_spec_add_member(s, "a", "mock", NULL), 0);
    assert_int_equal(council_spec_add_member(s, "sub", "council",
                                             sq("{'spec':" WITH_SUB("inner", "{}") "}")),
                     0);
    assert_int_equal(council_spec_add_round(s, "vote", NULL, NULL), 0);
    assert_int_equal(council_spec_validate(s, NULL), 0);
    assert_non_null(s->members[1].sub);
    assert_string_equal(council_spec_id(s->members[1].sub), "inner");
    assert_string_equal(s->members[1].sub->members[1].sub_error,
                        "sub-council: spec id: is required and must be a non-empty string");
    council_spec_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_spec_compiles_into_the_model),
        cmocka_unit_test(test_spec_errors_name_the_field),
        fx_test_with(test_spec_size_limit_is_etoobig, &SPEC64),
        cmocka_unit_test(test_c_builders_build_and_freeze),
        cmocka_unit_test(test_labels_follow_spec_order),
        cmocka_unit_test(test_vote_parsing_takes_first_valid_marker),
        cmocka_unit_test(test_ranking_parsing),
        cmocka_unit_test(test_strerror_names_every_code),
        cmocka_unit_test(test_council_member_specs_are_compiled_with_their_parent),
    };
    return cmocka_run_group_tests_name("spec", tests, NULL, NULL);
}
