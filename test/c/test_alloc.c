/* test_alloc.c - out of memory everywhere: each scenario runs again and
 * again with its Nth allocation failing (N = 1, 2, ... until a pass makes
 * fewer than N), and every pass must end in COUNCIL_OK or a clean error
 * code, never a crash, with every byte given back (LeakSanitizer checks at
 * exit under `make SAN=1`, valgrind under `make valgrind`).
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

static const char SPEC[] =
    "{\"id\":\"oom\",\"members\":["
    "{\"id\":\"a\",\"provider\":\"mock\",\"options\":{\"chunks\":2}},"
    "{\"id\":\"b\",\"provider\":\"mock\",\"options\":{\"vote\":\"A\",\"fail_attempts\":[1]}},"
    "{\"id\":\"c\",\"provider\":\"mock\",\"options\":{\"ranking\":\"B>A\"}}],"
    "\"rounds\":[{\"type\":\"independent_analysis\"},{\"type\":\"critique\"},"
    "{\"type\":\"iterate\",\"options\":{\"max_iterations\":2,\"until\":\"consensus\","
    "\"rounds\":[{\"type\":\"peer_review\"},{\"type\":\"vote\"}]}},"
    "{\"type\":\"ranking\"},{\"type\":\"pairwise_elimination\"}],"
    "\"chair\":\"a\",\"limits\":{\"max_attempts\":2}}";

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

static size_t events_seen;

static void count_event(const council_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    events_seen++;
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
        cmocka_unit_test(test_a_whole_mock_run),
        cmocka_unit_test(test_many_runs_and_subscriptions),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
