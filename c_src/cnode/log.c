/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int g_level = CN_LOG_WARN;
static const char *const names[] = {"error", "warn", "info", "debug"};

void cn_log_set_level(int level) { g_level = level; }
int cn_log_level(void) { return g_level; }

int cn_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

static void vlog(int level, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    fprintf(stderr, "council_node %s: %s\n", names[level], line);
}

void cn_log(int level, const char *fmt, ...)
{
    if (level > g_level || level < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

static const char *const kind_names[CN_LOGK_N] = {"connection refused", "handshake",
                                                  "oversized frame"};
static struct {
    uint64_t window_ms; /* start of the current second */
    unsigned printed;   /* lines printed in it */
    unsigned long long suppressed; /* since the last summary */
    uint64_t since_ms;  /* the first suppressed one */
    int level;
} g_kinds[CN_LOGK_N];
static unsigned long long g_suppressed_total;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void summarise(int kind, uint64_t now)
{
    if (g_kinds[kind].suppressed == 0)
        return;
    uint64_t ms = now - g_kinds[kind].since_ms;
    cn_log(g_kinds[kind].level, "(%llu more %s messages suppressed in the last %llu.%llu s)",
           g_kinds[kind].suppressed, kind_names[kind],
           (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000 / 100));
    g_kinds[kind].suppressed = 0;
}

void cn_log_limited(int kind, int level, const char *fmt, ...)
{
    if (level > g_level || level < 0 || kind < 0 || kind >= CN_LOGK_N)
        return;
    uint64_t now = now_ms();
    if (now - g_kinds[kind].window_ms >= 1000) {
        summarise(kind, now);
        g_kinds[kind].window_ms = now;
        g_kinds[kind].printed = 0;
    }
    if (g_kinds[kind].printed >= CN_LOG_BURST) {
        if (g_kinds[kind].suppressed++ == 0) {
            g_kinds[kind].since_ms = now;
            g_kinds[kind].level = level;
        }
        g_suppressed_total++;
        return;
    }
    g_kinds[kind].printed++;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void cn_log_flush(void)
{
    uint64_t now = now_ms();
    for (int k = 0; k < CN_LOGK_N; k++)
        if (g_kinds[k].suppressed && now - g_kinds[k].window_ms >= 1000)
            summarise(k, now);
}

unsigned long long cn_log_suppressed_total(void) { return g_suppressed_total; }
