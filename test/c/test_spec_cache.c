/* test_spec_cache.c - the C node's cache of parsed specs (spec_cache.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../../c_src/cnode/spec_cache.h"

static const char *spec_text(char *buf, size_t cap, int n)
{
    snprintf(buf, cap,
             "{\"id\":\"c%d\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\"}],"
             "\"rounds\":[{\"type\":\"independent_analysis\"}]}", n);
    return buf;
}

static void test_the_same_text_gives_the_same_spec(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    cn_spec_cache *c = cn_spec_cache_new(ctx);
    char buf[256];
    const char *j = spec_text(buf, sizeof buf, 1);
    council_spec *a = NULL, *b = NULL, *d = NULL;
    assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &a, NULL), COUNCIL_OK);
    assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &b, NULL), COUNCIL_OK);
    assert_ptr_equal(a, b);
    j = spec_text(buf, sizeof buf, 2);
    assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &d, NULL), COUNCIL_OK);
    assert_ptr_not_equal(a, d);
    assert_string_equal(council_spec_id(d), "c2");
    council_spec_unref(a);
    council_spec_unref(b);
    council_spec_unref(d);
    cn_spec_cache_free(c);
    council_ctx_free(ctx);
}

static void test_an_invalid_spec_is_an_error_and_not_cached(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    cn_spec_cache *c = cn_spec_cache_new(ctx);
    const char *bad = "{\"id\":\"x\",\"members\":[],\"rounds\":[{\"type\":\"dance\"}]}";
    council_spec *s = NULL;
    council_spec_error err;
    assert_int_equal(cn_spec_cache_get(c, bad, strlen(bad), &s, &err), COUNCIL_ESPEC);
    assert_null(s);
    assert_true(err.field[0] != 0);
    /* the same bad text again is parsed (and refused) again */
    assert_int_equal(cn_spec_cache_get(c, bad, strlen(bad), &s, &err), COUNCIL_ESPEC);
    cn_spec_cache_free(c);
    council_ctx_free(ctx);
}

/* More distinct specs than slots: the least recently used leaves, the one
 * kept warm stays, and every spec handed out stays valid after eviction. */
static void test_least_recently_used_specs_leave_first(void **state)
{
    (void)state;
    council_ctx *ctx = council_ctx_new(NULL);
    cn_spec_cache *c = cn_spec_cache_new(ctx);
    char buf[256];
    council_spec *warm = NULL, *again = NULL, *first = NULL, *first_again = NULL, *s;
    const char *j = spec_text(buf, sizeof buf, 0);
    assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &warm, NULL), COUNCIL_OK);
    j = spec_text(buf, sizeof buf, 1);
    assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &first, NULL), COUNCIL_OK);
    for (int i = 2; i < 100; i++) {
        j = spec_text(buf, sizeof buf, i);
        assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &s, NULL), COUNCIL_OK);
        council_spec_unref(s);
        j = spec_text(buf, sizeof buf, 0); /* keep c0 warm */
        assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &s, NULL), COUNCIL_OK);
        council_spec_unref(s);
    }
    j = spec_text(buf, sizeof buf, 0);
    assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &again, NULL), COUNCIL_OK);
    assert_ptr_equal(warm, again);
    j = spec_text(buf, sizeof buf, 1);
    assert_int_equal(cn_spec_cache_get(c, j, strlen(j), &first_again, NULL), COUNCIL_OK);
    assert_ptr_not_equal(first, first_again);          /* evicted, parsed anew */
    assert_string_equal(council_spec_id(first), "c1"); /* still valid */
    council_spec_unref(warm);
    council_spec_unref(again);
    council_spec_unref(first);
    council_spec_unref(first_again);
    cn_spec_cache_free(c);
    council_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_same_text_gives_the_same_spec),
        cmocka_unit_test(test_an_invalid_spec_is_an_error_and_not_cached),
        cmocka_unit_test(test_least_recently_used_specs_leave_first),
    };
    return cmocka_run_group_tests_name("spec_cache", tests, NULL, NULL);
}
