/* test_log.c - the rate-limited log kinds of log.h: at most CN_LOG_BURST
 * lines a second per kind, the rest counted and summarised once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../c_src/cnode/log.h"

/* Runs fn with stderr going to a temporary file; returns what it wrote. */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)len, 0), len);
    close(fd);
    unlink(path);
    return buf;
}

static size_t count_lines(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void flood(void)
{
    for (int i = 0; i < 1000; i++)
        cn_log_limited(CN_LOGK_REFUSED, CN_LOG_WARN, "connection %d refused", i);
    cn_log_limited(CN_LOGK_HANDSHAKE, CN_LOG_WARN, "another kind");
    usleep(1100 * 1000);
    cn_log_flush();
}

static void a_burst_then_one_summary(void **st)
{
    (void)st;
    cn_log_set_level(CN_LOG_WARN);
    unsigned long long before = cn_log_suppressed_total();
    char *out = capture(flood);
    assert_int_equal(count_lines(out, " refused\n"), CN_LOG_BURST);
    assert_non_null(strstr(out, "connection 0 refused"));   /* the first appears */
    assert_int_equal(count_lines(out, "another kind"), 1);  /* kinds apart */
    assert_int_equal(count_lines(out, "suppressed"), 1);
    assert_non_null(strstr(out, "(995 more connection refused messages suppressed"));
    assert_int_equal(cn_log_suppressed_total() - before, 995);
    free(out);
}

static void quiet_levels_count_nothing(void **st)
{
    (void)st;
    cn_log_set_level(CN_LOG_ERROR);
    unsigned long long before = cn_log_suppressed_total();
    for (int i = 0; i < 100; i++)
        cn_log_limited(CN_LOGK_FRAME, CN_LOG_WARN, "x");
    assert_int_equal(cn_log_suppressed_total(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_burst_then_one_summary),
        cmocka_unit_test(quiet_levels_count_nothing),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
