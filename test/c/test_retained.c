/* test_retained.c - the pids of ended run processes (retained.c), which
 * answer {outcome_by_pid, Pid}: found while the core retains the very run,
 * gone when retention passes, when the core evicts the run
 * (max_retained) or beyond the table's own bound, and never mistaken for a
 * later run under the same id. Only the public API of the core is used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "../../c_src/cnode/retained.h"

static const char SPEC[] = "{\"id\":\"r\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\"}],"
                           "\"rounds\":[{\"type\":\"independent_analysis\"}]}";

static council_ctx *new_ctx(uint64_t retention_ms, size_t max_retained)
{
    council_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retention_ms = retention_ms;
    cfg.max_retained = max_retained;
    council_ctx *ctx = council_ctx_new(&cfg);
    assert_non_null(ctx);
    return ctx;
}

static void spin(council_ctx *ctx, uint64_t ms)
{
    uint64_t t0 = uv_hrtime();
    while ((uv_hrtime() - t0) / 1000000 < ms)
        council_ctx_step(ctx, 5);
}

/* A run of SPEC under run_id, run to its end; returned with one reference. */
static council_run *ended(council_ctx *ctx, const char *run_id)
{
    council_spec *spec = NULL;
    council_spec_error err;
    assert_int_equal(council_spec_from_json(SPEC, strlen(SPEC), &spec, &err), 0);
    council_start_opts o = {.spec = spec, .run_id = run_id, .run_id_len = strlen(run_id),
                            .input = {.data = "q", .len = 1}};
    council_run *run = NULL;
    assert_int_equal(council_run_start(ctx, &o, &run), 0);
    council_spec_unref(spec);
    uint64_t t0 = uv_hrtime();
    while (council_run_status(run) == COUNCIL_PENDING ||
           council_run_status(run) == COUNCIL_RUNNING) {
        council_ctx_step(ctx, 10);
        assert_true((uv_hrtime() - t0) / 1000000 < 5000);
    }
    return run;
}

/* A run ended under run_id and remembered for pid; the run stays the
 * core's alone (valid while it retains it). */
static council_run *add_ended(council_ctx *ctx, cn_retained *r, const char *run_id,
                              uint64_t pid)
{
    council_run *run = ended(ctx, run_id);
    cn_retained_add(r, pid, run);
    council_run_unref(run);
    return run;
}

static void found_while_retained_then_gone(void **st)
{
    (void)st;
    council_ctx *ctx = new_ctx(300, 0);
    cn_retained *r = cn_retained_new(ctx, 0);
    assert_non_null(r);
    council_run *a = add_ended(ctx, r, "a", 11), *b = add_ended(ctx, r, "b", 12);
    assert_int_equal(cn_retained_count(r), 2);
    assert_ptr_equal(cn_retained_find(r, 11), a);
    assert_ptr_equal(cn_retained_find(r, 12), b);
    assert_null(cn_retained_find(r, 13));
    /* retention passes: found no more, and the entries go */
    spin(ctx, 600);
    assert_null(cn_retained_find(r, 11));
    assert_int_equal(cn_retained_count(r), 1);
    council_run *c = add_ended(ctx, r, "c", 14); /* an end checks the oldest */
    assert_int_equal(cn_retained_count(r), 1);
    assert_ptr_equal(cn_retained_find(r, 14), c);
    cn_retained_free(r);
    council_ctx_free(ctx);
}

static void bounded_by_the_core_and_by_max(void **st)
{
    (void)st;
    /* the core keeps two finished runs: the first leaves with its pid */
    council_ctx *ctx = new_ctx(60000, 2);
    cn_retained *r = cn_retained_new(ctx, 0);
    add_ended(ctx, r, "r1", 1);
    add_ended(ctx, r, "r2", 2);
    add_ended(ctx, r, "r3", 3);
    assert_null(cn_retained_find(r, 1));
    assert_non_null(cn_retained_find(r, 2));
    assert_non_null(cn_retained_find(r, 3));
    assert_int_equal(cn_retained_count(r), 2);
    cn_retained_free(r);

    /* the table's own bound: at most max entries, the oldest leave */
    r = cn_retained_new(ctx, 1);
    add_ended(ctx, r, "x", 7);
    council_run *y = add_ended(ctx, r, "y", 8);
    assert_int_equal(cn_retained_count(r), 1);
    assert_null(cn_retained_find(r, 7));
    assert_ptr_equal(cn_retained_find(r, 8), y);
    cn_retained_free(r);
    council_ctx_free(ctx);
}

static void a_later_run_under_the_same_id_is_not_the_pids(void **st)
{
    (void)st;
    council_ctx *ctx = new_ctx(100, 0);
    cn_retained *r = cn_retained_new(ctx, 0);
    add_ended(ctx, r, "same", 21);
    spin(ctx, 300); /* retention ends: the core frees it */
    council_run *later = add_ended(ctx, r, "same", 22);
    assert_null(cn_retained_find(r, 21));
    assert_ptr_equal(cn_retained_find(r, 22), later);
    cn_retained_free(r);
    cn_retained_free(NULL);
    council_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(found_while_retained_then_gone),
        cmocka_unit_test(bounded_by_the_core_and_by_max),
        cmocka_unit_test(a_later_run_under_the_same_id_is_not_the_pids),
    };
    return cmocka_run_group_tests_name("retained", tests, NULL, NULL);
}
