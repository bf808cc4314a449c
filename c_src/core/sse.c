/* sse.c - see sse.h. */
#include "sse.h"

#include "council.h"

#include <stdlib.h>
#include <string.h>

void sse_init(sse_parser *p, size_t max_event, sse_event_cb cb, void *arg)
{
    memset(p, 0, sizeof *p);
    p->max_event = max_event ? max_event : (1u << 20);
    p->cb = cb;
    p->arg = arg;
}

void sse_free(sse_parser *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *n = realloc(*buf, nc);
    if (!n)
        return COUNCIL_ENOMEM;
    *buf = n;
    *cap = nc;
    return 0;
}

static void reset_event(sse_parser *p)
{
    p->data_len = 0;
    p->has_data = false;
    p->type[0] = 0;
}

/* A blank line: dispatch the event, if it has data (the SSE rule). */
static int dispatch(sse_parser *p)
{
    if (!p->has_data) {
        reset_event(p);
        return 0;
    }
    if (reserve(&p->data, &p->data_cap, p->data_len + 1))
        return COUNCIL_ENOMEM;
    p->data[p->data_len] = 0;
    int rc = p->cb(p->type[0] ? p->type : "message", p->data, p->data_len, p->arg);
    reset_event(p);
    return rc;
}

static int field(sse_parser *p, const char *line, size_t len)
{
    if (len == 0)
        return dispatch(p);
    if (line[0] == ':')
        return 0; /* comment */
    const char *colon = memchr(line, ':', len);
    size_t nlen = colon ? (size_t)(colon - line) : len;
    const char *v = colon ? colon + 1 : line + len;
    size_t vlen = colon ? len - nlen - 1 : 0;
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (nlen == 4 && memcmp(line, "data", 4) == 0) {
        size_t need = p->data_len + (p->has_data ? 1 : 0) + vlen + 1;
        if (need > p->max_event)
            return COUNCIL_ETOOBIG;
        if (reserve(&p->data, &p->data_cap, need))
            return COUNCIL_ENOMEM;
        if (p->has_data)
            p->data[p->data_len++] = '\n';
        memcpy(p->data + p->data_len, v, vlen);
        p->data_len += vlen;
        p->has_data = true;
    } else if (nlen == 5 && memcmp(line, "event", 5) == 0) {
        size_t n = vlen < sizeof p->type - 1 ? vlen : sizeof p->type - 1;
        memcpy(p->type, v, n);
        p->type[n] = 0;
    }
    return 0;
}

int sse_feed(sse_parser *p, const char *buf, size_t len)
{
    size_t i = 0;
    if (p->after_cr && len && buf[0] == '\n')
        i = 1;
    p->after_cr = false;
    while (i < len) {
        const char *start = buf + i;
        size_t rest = len - i, n = 0;
        while (n < rest && start[n] != '\n' && start[n] != '\r')
            n++;
        if (n == rest) { /* no end of line yet: keep the piece */
            if (p->line_len + n > p->max_event)
                return COUNCIL_ETOOBIG;
            if (reserve(&p->line, &p->line_cap, p->line_len + n))
                return COUNCIL_ENOMEM;
            memcpy(p->line + p->line_len, start, n);
            p->line_len += n;
            return 0;
        }
        int rc;
        if (p->line_len) { /* the line began in an earlier piece */
            if (p->line_len + n > p->max_event)
                return COUNCIL_ETOOBIG;
            if (reserve(&p->line, &p->line_cap, p->line_len + n))
                return COUNCIL_ENOMEM;
            memcpy(p->line + p->line_len, start, n);
            size_t ll = p->line_len + n;
            p->line_len = 0;
            rc = field(p, p->line, ll);
        } else {
            rc = field(p, start, n);
        }
        if (rc)
            return rc;
        i += n + 1;
        if (start[n] == '\r') {
            if (i < len && buf[i] == '\n')
                i++;
            else if (i == len)
                p->after_cr = true;
        }
    }
    return 0;
}

int sse_finish(sse_parser *p)
{
    int pending = p->has_data || p->line_len > 0;
    reset_event(p);
    p->line_len = 0;
    return pending;
}
