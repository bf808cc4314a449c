/* test_alloc.c - out of memory everywhere: each scenario runs again and
 * again with its Nth allocation failing (N = 1, 2, ... until a pass makes
 * fewer than N), and every pass must end in COUNCIL_OK or a clean error
 * code, never a crash, with every byte given back (LeakSanitizer checks at
 * exit under `make SAN=1`, valgrind under `make valgrind`). Scenarios:
 * spec parsing, run creation alone, subscribing alone (to a run and to its
 * topic), a whole mock run of every round type, and many runs with their
 * subscriptions.
 *
 * The core's malloc, calloc, realloc and strdup are wrapped at link time
 * (-Wl,--wrap, see the Makefile) and jansson is given the same counting
 * allocator, so the core's own allocations and those it makes through
 * jansson are all failure points. libuv's are not: libuv aborts on some
 * allocation failures by design, which is not the core's to handle.
 */
#include "core_test_util.h"

#include <stdbool.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t sz);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static bool armed;
static unsigned long count, fail_at, failed;

static bool fail_now(void)
{
    if (!armed)
        return false;
    if (++count == fail_at) {
        failed++;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t sz) { return fail_now() ? NULL : __real_calloc(n, sz); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fail_now() ? NULL : __real_strdup(s); }
static void *json_alloc(size_t n) { return __wrap_malloc(n); }

/* in single quotes (sq) */
static const char SPEC_SQ[] =
    "{'id':'oom','members':["
    "{'id':'a','provider':'mock','options':{'chunks':2}},"
    "{'id':'b','provider':'mock','options':{'vote':'A','fail_attempts':[1]}},"
    "{'id':'c','provider':'mock','options':{'ranking':'B>A'}}],"
    "'rounds':[{'type':'independent_analysis'},{'type':'critique'},"
    "{'type':'iterate','options':{'max_iterations':2,'until':'consensus',"
    "'rounds':[{'type':'peer_review'},{'type':'vote'}]}},"
    "{'type':'ranking'},{'type':'pairwise_elimination'}],"
    "'chair':'a','limits':{'max_attempts':2}}";
#define SPEC sq(SPEC_SQ)

/* Run scenario(N) for N = 1.. until a pass does not reach its Nth
 * allocation; returns how many passes had an allocation fail. jansson's
 * parser does not always report its own allocation failures: some read as
 * syntax errors, and a failed growth of its string buffer drops a byte and
 * goes on (seen: "independent_anlysis"), so a scenario that parses JSON
 * may also end in COUNCIL_EPARSE or COUNCIL_ESPEC. Those are still clean
 * errors: nothing is half made and nothing leaks. */
static unsigned long every_failure(int (*scenario)(void))
{
    unsigned long passes = 0;
    for (fail_at = 1;; fail_at++) {
        count = 0;
        failed = 0;
        armed = true;
        int rc = scenario();
        armed = false;
        if (rc != COUNCIL_OK && rc != COUNCIL_ENOMEM && rc != COUNCIL_EPARSE &&
            rc != COUNCIL_ESPEC)
            fail_msg("allocation %lu failing gave %s", fail_at, council_strerror(rc));
        if (!failed)
            break;
        passes++;
    }
    return passes;
}

static int parse_spec(void)
{
    council_spec *s = NULL;
    council_spec_error err;
    int rc = council_spec_from_json(SPEC, strlen(SPEC), &s, &err);
    if (rc == COUNCIL_OK) {
        char *back = council_spec_to_json(s);
        free(back);
    }
    council_spec_unref(s);
    return rc;
}

static size_t events_seen, terminal_seen;

static void count_event(const council_event *ev, void *arg)
{
    (void)arg;
    events_seen++;
    terminal_seen += council_event_is_terminal(ev) ? 1 : 0;
}

/* A context, a run of SPEC with a subscriber, to its end, and back. */
static int whole_run(void)
{
    council_ctx *ctx = council_ctx_new(NULL);
    if (!ctx)
        return COUNCIL_ENOMEM;
    council_spec *spec = NULL;
    council_spec_error err;
    int rc = council_ctx_spec_from_json(ctx, SPEC, strlen(SPEC), &spec, &err);
    council_run *run = NULL;
    if (rc == COUNCIL_OK) {
        council_start_opts o = {.spec = spec, .input = {.tag = "text", .data = "q", .len = 1},
                                .run_id = "r1", .run_id_len = 2};
        rc = council_run_create(ctx, &o, &run);
    }
    council_subscription *sub = NULL;
    if (rc == COUNCIL_OK)
        rc = council_run_subscribe(run, count_event, NULL, NULL, &sub);
    if (rc == COUNCIL_OK)
        rc = council_run_begin(run);
    if (rc == COUNCIL_OK) {
        council_ctx_run(ctx);
        /* a run that met an allocation failure may have failed; one that
         * did not completes, and its result reads as JSON */
        council_status st = council_run_status(run);
        if (st != COUNCIL_COMPLETED && st != COUNCIL_FAILED)
            fail_msg("allocation %lu failing left the run %s", fail_at,
                     council_status_name(st));
        char *j = council_run_result_json(run);
        free(j);
        council_summary sum;
        if (council_run_state(ctx, NULL, "r1", 2, &sum) != COUNCIL_OK)
            fail_msg("the finished run is not readable by id");
    }
    council_unsubscribe(ctx, sub);
    council_run_unref(run);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    return rc;
}

/* What a scenario builds unarmed (only its step under test counts
 * allocations): a context and SPEC parsed. */
static council_ctx *unarmed_ctx(council_spec **spec)
{
    bool was = armed;
    armed = false;
    council_ctx *ctx = council_ctx_new(NULL);
    council_spec_error err;
    if (!ctx || council_ctx_spec_from_json(ctx, SPEC, strlen(SPEC), spec, &err) != COUNCIL_OK)
        fail_msg("setup of the scenario failed");
    armed = was;
    return ctx;
}

/* Run creation alone: an allocation failing in it is COUNCIL_ENOMEM and
 * leaves nothing registered; a run created is whole (it begins and ends). */
static int run_creation(void)
{
    council_spec *spec = NULL;
    council_ctx *ctx = unarmed_ctx(&spec);
    council_start_opts o = {.spec = spec, .input = {.tag = "text", .data = "q", .len = 1},
                            .run_id = "c1", .run_id_len = 2, .user_opts = "uo",
                            .user_opts_len = 2};
    council_run *run = NULL;
    int rc = council_run_create(ctx, &o, &run);
    armed = false;
    if (rc != COUNCIL_OK && rc != COUNCIL_ENOMEM)
        fail_msg("allocation %lu failing: run_create gave %s", fail_at, council_strerror(rc));
    if (rc == COUNCIL_ENOMEM && (run || council_run_find(ctx, NULL, "c1", 2, NULL) == COUNCIL_OK))
        fail_msg("allocation %lu failing: a run was left by a failed create", fail_at);
    if (rc == COUNCIL_OK) {
        if (council_run_begin(run) != COUNCIL_OK)
            fail_msg("the run created cannot begin");
        council_ctx_run(ctx);
        if (council_run_status(run) != COUNCIL_COMPLETED)
            fail_msg("the run created did not complete");
    }
    council_run_unref(run);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    return rc;
}

/* Subscribing (to a run, and to its topic) alone: a failed subscription is
 * COUNCIL_ENOMEM and delivers nothing; one that succeeded gets the whole
 * run, its terminal event included. */
static int subscribe(void)
{
    council_spec *spec = NULL;
    council_ctx *ctx = unarmed_ctx(&spec);
    council_start_opts o = {.spec = spec, .input = {.tag = "text", .data = "q", .len = 1},
                            .run_id = "s1", .run_id_len = 2};
    council_run *run = NULL;
    armed = false;
    if (council_run_create(ctx, &o, &run) != COUNCIL_OK)
        fail_msg("setup of the scenario failed");
    armed = true;
    council_subscription *a = NULL, *b = NULL;
    const char *topic = COUNCIL_TOPIC_PREFIX "s1";
    int ra = council_run_subscribe(run, count_event, NULL, NULL, &a);
    int rb = council_subscribe(ctx, topic, strlen(topic), count_event, NULL, NULL, &b);
    armed = false;
    for (int rc = ra, k = 0; k < 2; rc = rb, k++)
        if (rc != COUNCIL_OK && rc != COUNCIL_ENOMEM)
            fail_msg("allocation %lu failing: subscribe gave %s", fail_at, council_strerror(rc));
    terminal_seen = 0;
    if (council_run_begin(run) != COUNCIL_OK)
        fail_msg("the run cannot begin");
    council_ctx_run(ctx);
    size_t want = (ra == COUNCIL_OK) + (rb == COUNCIL_OK);
    if (terminal_seen != want)
        fail_msg("allocation %lu failing: %zu terminal events for %zu subscriptions", fail_at,
                 terminal_seen, want);
    council_unsubscribe(ctx, a);
    council_unsubscribe(ctx, b);
    council_run_unref(run);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    return ra != COUNCIL_OK ? ra : rb;
}

/* Registry and pub/sub under pressure: many runs, lookups, subscriptions. */
static int many_runs(void)
{
    council_ctx *ctx = council_ctx_new(NULL);
    if (!ctx)
        return COUNCIL_ENOMEM;
    council_spec *spec = council_spec_new("many");
    int rc = spec ? COUNCIL_OK : COUNCIL_ENOMEM;
    if (!rc)
        rc = council_spec_add_member(spec, "a", "mock", NULL);
    if (!rc)
        rc = council_spec_add_round(spec, "independent_analysis", NULL, NULL);
    if (!rc)
        rc = council_spec_validate(spec, NULL);
    council_run *runs[40] = {0};
    for (int i = 0; !rc && i < 40; i++) {
        char id[16];
        int n = snprintf(id, sizeof id, "run-%d", i);
        council_start_opts o = {.spec = spec, .run_id = id, .run_id_len = (size_t)n,
                                .input = {.tag = "text", .data = "q", .len = 1}};
        rc = council_run_create(ctx, &o, &runs[i]);
        if (!rc)
            rc = council_run_subscribe(runs[i], count_event, NULL, NULL, NULL);
        if (!rc)
            rc = council_run_begin(runs[i]);
    }
    if (!rc)
        council_ctx_run(ctx);
    for (int i = 0; i < 40; i++)
        council_run_unref(runs[i]);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    return rc;
}

static void test_spec_parsing(void **state)
{
    (void)state;
    unsigned long n = every_failure(parse_spec);
    assert_true(n > 20);
    print_message("spec parsing: %lu allocations, each failed once\n", n);
}

static void test_run_creation(void **state)
{
    (void)state;
    unsigned long n = every_failure(run_creation);
    assert_true(n >= 3); /* the run, its copies, its registry entry */
    print_message("run creation: %lu allocations, each failed once\n", n);
}

static void test_subscribe(void **state)
{
    (void)state;
    unsigned long n = every_failure(subscribe);
    assert_true(n >= 2);
    print_message("subscribe: %lu allocations, each failed once\n", n);
}

static void test_a_whole_mock_run(void **state)
{
    (void)state;
    unsigned long n = every_failure(whole_run);
    assert_true(n > 100);
    print_message("whole run: %lu allocations, each failed once\n", n);
}

static void test_many_runs_and_subscriptions(void **state)
{
    (void)state;
    unsigned long n = every_failure(many_runs);
    assert_true(n > 100);
    print_message("many runs: %lu allocations, each failed once\n", n);
}

static int setup(void **state)
{
    (void)state;
    json_set_alloc_funcs(json_alloc, free);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parsing),
        cmocka_unit_test(test_run_creation),
        cmocka_unit_test(test_subscribe),
        cmocka_unit_test(test_a_whole_mock_run),
        cmocka_unit_test(test_many_runs_and_subscriptions),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
