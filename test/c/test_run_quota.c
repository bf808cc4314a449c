/* test_run_quota.c - a limit on runs in progress shared by contexts
 * (council_run_quota): runs of every context sharing it count, sub-council
 * runs too; failed creations and ended runs give their slot back; contexts
 * on two threads at once never pass it. */
#include "core_test_util.h"

#include <pthread.h>

#define SLOW                                                                      \
    sq("{'id':'slow','members':[{'id':'a','provider':'mock','options':"          \
       "{'latency_ms':60000}}],'rounds':[{'type':'independent_analysis'}],"       \
       "'limits':{'member_timeout_ms':120000}}")

/* a parent whose only member is a sub-council with a slow member */
#define NESTED                                                                    \
    sq("{'id':'outer','members':[{'id':'inner','provider':'council','options':"  \
       "{'spec':{'id':'in','members':[{'id':'x','provider':'mock','options':"    \
       "{'latency_ms':60000}}],'rounds':[{'type':'independent_analysis'}],"     \
       "'limits':{'member_timeout_ms':120000}}}}],'rounds':[{'type':"            \
       "'independent_analysis'}],'limits':{'member_timeout_ms':120000}}")

/* council_run_create of spec_text under id (NULL: generated): the code. */
static int create(council_ctx *ctx, const char *spec_text, const char *id, council_run **out)
{
    council_spec *spec = spec_json(spec_text);
    council_start_opts o = {.spec = spec, .run_id = id, .run_id_len = id ? strlen(id) : 0};
    *out = NULL;
    int rc = council_run_create(ctx, &o, out);
    council_spec_unref(spec);
    return rc;
}

static void test_contexts_share_the_quota(void **state)
{
    (void)state;
    council_run_quota *q = council_run_quota_new(2);
    assert_non_null(q);
    council_ctx *c1 = test_ctx(0), *c2 = test_ctx(0);
    assert_int_equal(council_ctx_set_run_quota(c1, q), COUNCIL_OK);
    assert_int_equal(council_ctx_set_run_quota(c2, q), COUNCIL_OK);
    council_run *a, *b, *c;
    assert_int_equal(create(c1, SLOW, "a", &a), COUNCIL_OK);
    assert_int_equal(create(c2, SLOW, "b", &b), COUNCIL_OK);
    assert_int_equal(council_run_quota_used(q), 2);
    /* full for both, though each context has room of its own */
    assert_int_equal(create(c1, SLOW, "c", &c), COUNCIL_ELIMIT);
    assert_int_equal(create(c2, SLOW, "c", &c), COUNCIL_ELIMIT);
    assert_null(c);
    /* a run that ends gives its slot back, to either context */
    assert_int_equal(council_run_cancel(a), COUNCIL_OK);
    assert_int_equal(council_run_quota_used(q), 1);
    assert_int_equal(create(c2, SLOW, "c", &c), COUNCIL_OK);
    assert_int_equal(council_run_quota_used(q), 2);
    /* a larger max: room again; a context with runs keeps its quota */
    council_run_quota_set_max(q, 3);
    council_run *d;
    assert_int_equal(create(c1, SLOW, "d", &d), COUNCIL_OK);
    assert_int_equal(council_ctx_set_run_quota(c1, NULL), COUNCIL_ESTATE);
    council_run_unref(a);
    council_run_unref(b);
    council_run_unref(c);
    council_run_unref(d);
    /* freeing a context cancels its runs: their slots come back (d's;
     * b and c are c2's) */
    assert_int_equal(council_run_quota_used(q), 3);
    council_ctx_free(c1);
    assert_int_equal(council_run_quota_used(q), 2);
    council_ctx_free(c2);
    assert_int_equal(council_run_quota_used(q), 0);
    council_run_quota_free(q);
}

static void test_refused_creations_give_the_slot_back(void **state)
{
    (void)state;
    council_run_quota *q = council_run_quota_new(1);
    council_ctx *ctx = test_ctx(0);
    assert_int_equal(council_ctx_set_run_quota(ctx, q), COUNCIL_OK);
    council_run *a, *b;
    assert_int_equal(create(ctx, SLOW, "a", &a), COUNCIL_OK);
    assert_int_equal(council_run_cancel(a), COUNCIL_OK);
    assert_int_equal(council_run_quota_used(q), 0);
    /* a is retained: its id is taken (COUNCIL_EEXIST after the quota was
     * taken, so it must come back) */
    assert_int_equal(create(ctx, SLOW, "a", &b), COUNCIL_EEXIST);
    assert_int_equal(council_run_quota_used(q), 0);
    /* an unknown provider is refused before the quota is looked at */
    assert_int_equal(create(ctx, sq("{'id':'x','members':[{'id':'a','provider':'nope'}],"
                                     "'rounds':[{'type':'vote'}]}"),
                            "x", &b),
                     COUNCIL_EPROVIDER);
    assert_int_equal(council_run_quota_used(q), 0);
    assert_int_equal(create(ctx, SLOW, "b", &b), COUNCIL_OK);
    assert_int_equal(council_run_quota_used(q), 1);
    council_run_unref(a);
    council_run_unref(b);
    council_ctx_free(ctx);
    assert_int_equal(council_run_quota_used(q), 0);
    council_run_quota_free(q);
}

static void test_sub_council_runs_count(void **state)
{
    (void)state;
    council_run_quota *q = council_run_quota_new(2);
    council_ctx *c1 = test_ctx(0), *c2 = test_ctx(0);
    council_ctx_set_run_quota(c1, q);
    council_ctx_set_run_quota(c2, q);
    council_run *parent, *other;
    assert_int_equal(create(c1, NESTED, "p", &parent), COUNCIL_OK);
    assert_int_equal(council_run_begin(parent), COUNCIL_OK);
    /* its sub-council's run starts with the member's call */
    uint64_t t0 = uv_hrtime();
    while (council_run_quota_used(q) < 2) {
        council_ctx_step(c1, 5);
        if ((uv_hrtime() - t0) / 1000000 > 3000)
            fail_msg("the sub-council's run did not start");
    }
    assert_int_equal(create(c2, SLOW, "o", &other), COUNCIL_ELIMIT);
    /* the parent's end ends its sub-council's run: both slots back */
    assert_int_equal(council_run_cancel(parent), COUNCIL_OK);
    council_ctx_flush(c1);
    assert_int_equal(council_run_quota_used(q), 0);
    council_run_unref(parent);
    council_ctx_free(c1);
    council_ctx_free(c2);
    council_run_quota_free(q);
}

/* Two threads, each with its own context, create and cancel runs against
 * one quota of 8 as fast as they can: the count never passes 8, and is 0
 * at the end. */
typedef struct hammer {
    council_run_quota *q;
    size_t created, refused, seen_max;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    /* a spec of its own: a spec's references are a loop thread's (not
     * atomic), and only the quota is shared */
    council_spec *spec = NULL;
    council_spec_error err;
    const char *json = "{\"id\":\"slow\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\","
                       "\"options\":{\"latency_ms\":60000}}],\"rounds\":[{\"type\":"
                       "\"independent_analysis\"}]}";
    if (council_spec_from_json(json, strlen(json), &spec, &err) != COUNCIL_OK)
        return NULL;
    council_ctx *ctx = council_ctx_new(&(council_config){.retention_ms = 1, .max_retained = 16});
    assert_non_null(ctx);
    council_ctx_set_run_quota(ctx, h->q);
    council_run *held[6] = {0};
    for (unsigned i = 0; i < 20000; i++) {
        council_run **slot = &held[i % 6];
        if (*slot) {
            council_run_cancel(*slot);
            council_run_unref(*slot);
            *slot = NULL;
        }
        council_start_opts o = {.spec = spec};
        if (council_run_create(ctx, &o, slot) == COUNCIL_OK)
            h->created++;
        else
            h->refused++;
        size_t used = council_run_quota_used(h->q);
        if (used > h->seen_max)
            h->seen_max = used;
        if (i % 64 == 0)
            council_ctx_step(ctx, 0);
    }
    for (int k = 0; k < 6; k++)
        if (held[k]) {
            council_run_cancel(held[k]);
            council_run_unref(held[k]);
        }
    council_ctx_free(ctx);
    council_spec_unref(spec);
    return NULL;
}

static void test_contexts_on_two_threads_never_pass_the_quota(void **state)
{
    (void)state;
    council_run_quota *q = council_run_quota_new(8);
    hammer h[2] = {{.q = q}, {.q = q}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_true(h[0].seen_max <= 8 && h[1].seen_max <= 8);
    /* 6 held at most per thread, 12 wanted: some were refused, most made */
    assert_true(h[0].created + h[1].created > 20000);
    assert_true(h[0].refused + h[1].refused > 0);
    assert_int_equal(council_run_quota_used(q), 0);
    council_run_quota_free(q);
}

/* the defaults a host shares out between contexts are the context's */
static void test_config_defaults_fill_zero_fields(void **state)
{
    (void)state;
    council_config cfg = {.max_runs = 7};
    council_config_defaults(&cfg);
    assert_int_equal(cfg.max_runs, 7);
    assert_int_equal(cfg.max_retained, 100000);
    assert_int_equal(cfg.max_subscribers_per_topic, 1024);
    assert_int_equal(cfg.retention_ms, 300000);
    council_config zero = {0};
    council_config_defaults(&zero);
    assert_int_equal(zero.max_runs, 10000);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(council_ctx_set_run_quota(NULL, NULL), COUNCIL_EINVAL);
    assert_int_equal(council_run_quota_used(NULL), 0);
    council_run_quota_set_max(NULL, 3);
    council_run_quota_free(NULL);
    /* max 0: no limit */
    council_run_quota *q = council_run_quota_new(0);
    council_ctx *ctx = test_ctx(0);
    council_ctx_set_run_quota(ctx, q);
    council_run *r[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(create(ctx, SLOW, NULL, &r[i]), COUNCIL_OK);
    assert_int_equal(council_run_quota_used(q), 3);
    for (int i = 0; i < 3; i++)
        council_run_unref(r[i]);
    council_ctx_free(ctx);
    council_run_quota_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contexts_share_the_quota),
        cmocka_unit_test(test_refused_creations_give_the_slot_back),
        cmocka_unit_test(test_sub_council_runs_count),
        cmocka_unit_test(test_contexts_on_two_threads_never_pass_the_quota),
        cmocka_unit_test(test_config_defaults_fill_zero_fields),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("run_quota", tests, NULL, NULL);
}
