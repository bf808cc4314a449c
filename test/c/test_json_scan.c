/* test_json_scan.c - the scanner accepts exactly what jansson accepts (a
 * corpus, then every one-byte mutation and truncation of it), finds the
 * wanted paths, and gives strings and numbers as jansson reads them. */
#include "core_test_util.h"

/* white-box suite (tests the core's JSON scanner): built with -Ic_src/core, see the Makefile */
#include "json_scan.h"

static const char *const corpus[] = {
    "{}", "[]", " [1, 2.5, -3e2, 0, -0.0, 1E+2] ", "{\"a\":{\"b\":[true,false,null]}}",
    "{\"s\":\"plain\",\"e\":\"q\\\"b\\\\s\\/n\\nt\\tu\\u00e9\\ud83d\\ude00\"}",
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hel\\u006co \\u2713 \xe6\x97\xa5\"},\"finish_reason\":null}],"
    "\"usage\":null}",
    "{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":345,\"cost\":0.00042}}",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}",
    "{\"a\":1,\"a\":2}", "[[[[[[[[[[]]]]]]]]]]", "{\"k.dot\":1,\"k\\u002edot\":2}",
    "{\"big\":12345678901234567890}", "{\"huge\":1e999}", "{\"nul\":\"a\\u0000b\"}",
    "{\"lone\":\"\\udc00\"}", "{\"hi\":\"\\ud800x\"}", "{\"ctl\":\"a\tb\"}", "{\"bad\":\"\xc3\x28\"}",
    "{\"over\":\"\xe0\x80\x80\"}", "{\"x\":01}", "{\"x\":.5}", "{\"x\":1.}", "{\"x\":-}",
    "{\"x\":tru}", "{\"x\":1,}", "[1,]", "{\"x\" 1}", "\"top string\"", "42", "", "{} x",
    /* found by fuzz_json_scan: a real longer than 64 characters that
     * overflows; an empty key above a wanted name */
    "{\"\":5e92222333333333333333333333333333333333333333333333333333333333333333333222}",
    "{\"\":{\"a\":\"\"}}",
};

static int jansson_ok(const char *s, size_t n)
{
    json_t *j = json_loadb(s, n, 0, NULL);
    json_decref(j);
    return j != NULL;
}

static void test_accepts_what_jansson_accepts(void **state)
{
    (void)state;
    size_t checked = 0;
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        const char *s = corpus[i];
        size_t n = strlen(s);
        if ((jscan(s, n, NULL, 0) == 0) != jansson_ok(s, n))
            fail_msg("disagree on %s", s);
        char buf[512];
        assert_true(n < sizeof buf);
        static const char subs[] = "\"\\{}[],:.-+eE0u\x80\xff 1a\n";
        for (size_t k = 0; k <= n; k++) {
            /* truncated at k */
            if ((jscan(s, k, NULL, 0) == 0) != jansson_ok(s, k))
                fail_msg("disagree on %.*s (truncated)", (int)k, s);
            for (size_t m = 0; k < n && m < sizeof subs - 1; m++) {
                memcpy(buf, s, n);
                buf[k] = subs[m];
                if ((jscan(buf, n, NULL, 0) == 0) != jansson_ok(buf, n))
                    fail_msg("disagree on %.*s", (int)n, buf);
                checked++;
            }
        }
    }
    print_message("%zu mutations checked against jansson\n", checked);
}

static void test_finds_paths_and_reads_values(void **state)
{
    (void)state;
    const char *s = corpus[5];
    jscan_want w[] = {{.path = "choices.0.delta.content"}, {.path = "choices"},
                      {.path = "usage"}, {.path = "choices.0.delta.tool_calls"},
                      {.path = "choices.0.index"}};
    assert_int_equal(jscan(s, strlen(s), w, 5), 0);
    assert_int_equal(w[0].type, JSCAN_STRING);
    char out[64];
    size_t n = jscan_string(&w[0], out);
    json_t *j = json_loads(s, 0, NULL);
    json_t *c = json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"), "content");
    assert_int_equal(n, json_string_length(c));
    assert_memory_equal(out, json_string_value(c), n);
    json_decref(j);
    assert_int_equal(w[1].type, JSCAN_ARRAY);
    assert_true(w[1].p[0] == '[' && w[1].p[w[1].len - 1] == ']');
    assert_int_equal(w[2].type, JSCAN_NULL);
    assert_int_equal(w[3].type, JSCAN_NONE);
    uint64_t u;
    assert_int_equal(jscan_u64(&w[4], &u), 0);
    assert_int_equal(u, 0);

    s = corpus[6];
    jscan_want v[] = {{.path = "usage.prompt_tokens"}, {.path = "usage.completion_tokens"},
                      {.path = "usage.cost"}};
    assert_int_equal(jscan(s, strlen(s), v, 3), 0);
    assert_int_equal(jscan_u64(&v[0], &u), 0);
    assert_int_equal(u, 12);
    assert_int_equal(jscan_u64(&v[1], &u), 0);
    assert_int_equal(u, 345);
    double d;
    assert_int_equal(jscan_double(&v[2], &d), 0);
    assert_true(d > 0.00041 && d < 0.00043);
    assert_int_equal(jscan_u64(&v[2], &u), -1); /* not an integer */

    /* duplicate keys: the last wins; escaped keys compare by their text */
    s = "{\"a\":1,\"a\":2,\"b\\u0063\":3}";
    jscan_want x[] = {{.path = "a"}, {.path = "bc"}};
    assert_int_equal(jscan(s, strlen(s), x, 2), 0);
    assert_int_equal(jscan_u64(&x[0], &u), 0);
    assert_int_equal(u, 2);
    assert_int_equal(jscan_u64(&x[1], &u), 0);
    assert_int_equal(u, 3);

    /* the "a" under an empty key is not the path "a" */
    s = "{\"\":{\"a\":\"inner\"}}";
    jscan_want y[] = {{.path = "a"}};
    assert_int_equal(jscan(s, strlen(s), y, 1), 0);
    assert_int_equal(y[0].type, JSCAN_NONE);
}

static void test_depth_is_bounded(void **state)
{
    (void)state;
    char deep[2 * (JSCAN_MAX_DEPTH + 2) + 1];
    size_t n = 0;
    for (int i = 0; i < JSCAN_MAX_DEPTH + 1; i++)
        deep[n++] = '[';
    for (int i = 0; i < JSCAN_MAX_DEPTH + 1; i++)
        deep[n++] = ']';
    assert_int_equal(jscan(deep, n, NULL, 0), -1);
    assert_int_equal(jscan(deep + 1, n - 2, NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_what_jansson_accepts),
        cmocka_unit_test(test_finds_paths_and_reads_values),
        cmocka_unit_test(test_depth_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
