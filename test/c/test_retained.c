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
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = spec;
    o.run_id = run_id;
    o.run_id_len = strlen(run_id);
    o.input.data = "q";
    o.input.len = 1;
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

static void found_while_retained_then_gone(void **st)
{
    (void)st;
    council_ctx *ctx = new_ctx(300, 0);
    cn_retained *r = cn_retained_new(ctx, 0);
    assert_non_null(r);
    council_run *a = ended(ctx, "a"), *b = ended(ctx, "b");
    cn_retained_add(r, 11, a);
    cn_retained_add(r, 12, b);
    assert_int_equal(cn_retained_count(r), 2);
    assert_ptr_equal(cn_retained_find(r, 11), a);
    assert_ptr_equal(cn_retained_find(r, 12), b);
    assert_null(cn_retained_find(r, 13));
    council_run_unref(a);
    council_run_unref(b);
    /* retention passes: found no more, and the entries go */
    spin(ctx, 600);
    assert_null(cn_retained_find(r, 11));
    assert_int_equal(cn_retained_count(r), 1);
    council_run *c = ended(ctx, "c");
    cn_retained_add(r, 14, c); /* an end checks the oldest entries */
    assert_int_equal(cn_retained_count(r), 1);
    assert_ptr_equal(cn_retained_find(r, 14), c);
    council_run_unref(c);
    cn_retained_free(r);
    council_ctx_free(ctx);
}

static void bounded_by_the_core_and_by_max(void **st)
{
    (void)st;
    /* the core keeps two finished runs: the first leaves with its pid */
    council_ctx *ctx = new_ctx(60000, 2);
    cn_retained *r = cn_retained_new(ctx, 0);
    for (uint64_t i = 1; i <= 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%u", (unsigned)i);
        council_run *run = ended(ctx, id);
        cn_retained_add(r, i, run);
        council_run_unref(run);
    }
    assert_null(cn_retained_find(r, 1));
    assert_non_null(cn_retained_find(r, 2));
    assert_non_null(cn_retained_find(r, 3));
    assert_int_equal(cn_retained_count(r), 2);
    cn_retained_free(r);

    /* the table's own bound: at most max entries, the oldest leave */
    r = cn_retained_new(ctx, 1);
    council_run *x = ended(ctx, "x"), *y = ended(ctx, "y");
    cn_retained_add(r, 7, x);
    cn_retained_add(r, 8, y);
    assert_int_equal(cn_retained_count(r), 1);
    assert_null(cn_retained_find(r, 7));
    assert_ptr_equal(cn_retained_find(r, 8), y);
    council_run_unref(x);
    council_run_unref(y);
    cn_retained_free(r);
    council_ctx_free(ctx);
}

static void a_later_run_under_the_same_id_is_not_the_pids(void **st)
{
    (void)st;
    council_ctx *ctx = new_ctx(100, 0);
    cn_retained *r = cn_retained_new(ctx, 0);
    council_run *old = ended(ctx, "same");
    cn_retained_add(r, 21, old);
    council_run_unref(old); /* only the core holds it now */
    spin(ctx, 300);         /* ... until retention ends: it is freed */
    council_run *later = ended(ctx, "same");
    assert_null(cn_retained_find(r, 21));
    cn_retained_add(r, 22, later);
    assert_ptr_equal(cn_retained_find(r, 22), later);
    council_run_unref(later);
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
