/* test_sse.c - the SSE parser (sse.c) and the Retry-After reader (http.c):
 * every event comes out whole and once however the bytes are cut. */
#include "core_test_util.h"

/* white-box suite (tests the core's SSE parser and Retry-After reader): built with -Ic_src/core, see the Makefile */
#include "http.h"
#include "sse.h"

typedef struct got {
    char types[16][64];
    char data[16][256];
    size_t n;
    int stop_at; /* return non-zero at this event (1-based); 0 never */
} got;

static int on_ev(const char *type, const char *data, size_t len, void *arg)
{
    got *g = arg;
    assert_true(g->n < 16);
    assert_int_equal(strlen(data), len); /* NUL-terminated at len */
    snprintf(g->types[g->n], sizeof g->types[0], "%s", type);
    snprintf(g->data[g->n], sizeof g->data[0], "%s", data);
    g->n++;
    return g->stop_at && (int)g->n == g->stop_at ? 42 : 0;
}

static const char STREAM[] = ": keep-alive\r\n"
                             "event: message_start\r\n"
                             "data: {\"a\":1}\r\n"
                             "\r\n"
                             "data: first\n"
                             "data: second\n"
                             "id: 7\n"
                             "retry: 10\n"
                             "unknown: x\n"
                             "\n"
                             "data:no-space\r"
                             "\r"
                             "event: only-type\n"
                             "\n"
                             "data: ✓ é 日本\n\n"
                             "data: [DONE]\n\n";

static void check_stream(const got *g)
{
    assert_int_equal(g->n, 5);
    assert_string_equal(g->types[0], "message_start");
    assert_string_equal(g->data[0], "{\"a\":1}");
    assert_string_equal(g->types[1], "message");
    assert_string_equal(g->data[1], "first\nsecond");
    assert_string_equal(g->data[2], "no-space");
    assert_string_equal(g->data[3], "✓ é 日本");
    assert_string_equal(g->data[4], "[DONE]");
}

static void test_whole_stream(void **state)
{
    (void)state;
    got g = {0};
    sse_parser p;
    sse_init(&p, 0, on_ev, &g);
    assert_int_equal(sse_feed(&p, STREAM, strlen(STREAM)), 0);
    assert_int_equal(sse_finish(&p), 0);
    check_stream(&g);
    sse_free(&p);
}

/* Every way of cutting the stream in two, and byte by byte. */
static void test_any_cut_gives_the_same_events(void **state)
{
    (void)state;
    size_t len = strlen(STREAM);
    for (size_t cut = 0; cut <= len; cut++) {
        got g = {0};
        sse_parser p;
        sse_init(&p, 0, on_ev, &g);
        assert_int_equal(sse_feed(&p, STREAM, cut), 0);
        assert_int_equal(sse_feed(&p, STREAM + cut, len - cut), 0);
        check_stream(&g);
        sse_free(&p);
    }
    got g = {0};
    sse_parser p;
    sse_init(&p, 0, on_ev, &g);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(sse_feed(&p, STREAM + i, 1), 0);
    check_stream(&g);
    sse_free(&p);
}

static void test_partial_event_at_end_is_dropped(void **state)
{
    (void)state;
    got g = {0};
    sse_parser p;
    sse_init(&p, 0, on_ev, &g);
    const char s[] = "data: done\n\ndata: cut before its blank line\n";
    assert_int_equal(sse_feed(&p, s, strlen(s)), 0);
    assert_int_equal(sse_finish(&p), 1);
    assert_int_equal(g.n, 1);
    sse_free(&p);
}

static void test_callback_stops_the_parser(void **state)
{
    (void)state;
    got g = {.stop_at = 2};
    sse_parser p;
    sse_init(&p, 0, on_ev, &g);
    assert_int_equal(sse_feed(&p, STREAM, strlen(STREAM)), 42);
    assert_int_equal(g.n, 2);
    sse_free(&p);
}

static void test_oversized_line_or_event_is_refused(void **state)
{
    (void)state;
    got g = {0};
    sse_parser p;
    sse_init(&p, 64, on_ev, &g);
    char big[200];
    memset(big, 'x', sizeof big);
    assert_int_equal(sse_feed(&p, "data: ", 6), 0);
    assert_int_equal(sse_feed(&p, big, sizeof big), COUNCIL_ETOOBIG);
    sse_free(&p);
    /* many short data lines that add up */
    sse_init(&p, 64, on_ev, &g);
    int rc = 0;
    for (int i = 0; i < 40 && rc == 0; i++)
        rc = sse_feed(&p, "data: 0123456789\n", 17);
    assert_int_equal(rc, COUNCIL_ETOOBIG);
    assert_int_equal(g.n, 0);
    sse_free(&p);
}

static void test_retry_after_seconds_and_dates(void **state)
{
    (void)state;
    assert_int_equal(cx_http_parse_retry_after(" 3\r\n", 4, 0), 3000);
    assert_int_equal(cx_http_parse_retry_after("0", 1, 0), 0);
    assert_int_equal(cx_http_parse_retry_after("soon", 4, 0), 0);
    assert_int_equal(cx_http_parse_retry_after("-1", 2, 0), 0);
    assert_int_equal(cx_http_parse_retry_after("99999999", 8, 0), 86400000);
    /* Sun, 06 Nov 1994 08:49:37 GMT is 784111777 */
    const char *d = " Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    assert_int_equal(cx_http_parse_retry_after(d, strlen(d), 784111770), 7000);
    assert_int_equal(cx_http_parse_retry_after(d, strlen(d), 784111800), 0); /* past */
    assert_int_equal(cx_http_parse_retry_after("Sun, 06 Nov 1994", 16, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_stream),
        cmocka_unit_test(test_any_cut_gives_the_same_events),
        cmocka_unit_test(test_partial_event_at_end_is_dropped),
        cmocka_unit_test(test_callback_stops_the_parser),
        cmocka_unit_test(test_oversized_line_or_event_is_refused),
        cmocka_unit_test(test_retry_after_seconds_and_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
