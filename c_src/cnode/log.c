/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void cn_log(int level, const char *fmt, ...)
{
    if (level > g_level || level < 0)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "council_node %s: %s\n", names[level], line);
}
