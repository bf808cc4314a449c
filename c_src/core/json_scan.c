/* json_scan.c - see json_scan.h. */
#include "json_scan.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct scan {
    const char *p, *end;
    jscan_want *w;
    size_t n;
    char path[256];
    size_t plen;
    bool path_ok;  /* path fits in the buffer (else nothing below matches) */
    int depth;
} scan;

static void skip_ws(scan *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

size_t jscan_utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t k;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        k = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if ((k == 3 && v < 0x800) || (k == 4 && (v < 0x10000 || v > 0x10FFFF)) ||
        (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    return k;
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9')
            v |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f')
            v |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F')
            v |= (uint32_t)(h - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* A string at c->p (its opening quote): its contents are *start, *len. */
static int string(scan *c, const char **start, size_t *len, bool *escaped)
{
    c->p++;
    *start = c->p;
    *escaped = false;
    while (c->p < c->end) {
        unsigned char b = (unsigned char)*c->p;
        if (b == '"') {
            *len = (size_t)(c->p - *start);
            c->p++;
            return 0;
        }
        if (b < 0x20)
            return -1;
        if (b == '\\') {
            *escaped = true;
            if (c->end - c->p < 2)
                return -1;
            char e = c->p[1];
            if (e == 'u') {
                uint32_t u;
                if (c->end - c->p < 6 || hex4(c->p + 2, &u))
                    return -1;
                c->p += 6;
                if (u == 0)
                    return -1; /* jansson refuses NUL without JSON_ALLOW_NUL */
                if (u >= 0xDC00 && u <= 0xDFFF)
                    return -1; /* a lone low surrogate */
                if (u >= 0xD800 && u <= 0xDBFF) {
                    uint32_t lo;
                    if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' ||
                        hex4(c->p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    c->p += 6;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0)
                return -1;
            c->p += 2;
            continue;
        }
        if (b < 0x80) {
            c->p++;
            continue;
        }
        size_t k = jscan_utf8_len((const unsigned char *)c->p, (size_t)(c->end - c->p));
        if (!k)
            return -1;
        c->p += k;
    }
    return -1;
}

static bool digit(scan *c)
{
    return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

/* A number in JSON's grammar, refused where jansson refuses it: an
 * integer that does not fit in 64 bits, a real that overflows. */
static int number(scan *c)
{
    const char *s = c->p;
    bool is_real = false;
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (!digit(c))
        return -1;
    if (*c->p == '0')
        c->p++;
    else
        while (digit(c))
            c->p++;
    if (c->p < c->end && *c->p == '.') {
        is_real = true;
        c->p++;
        if (!digit(c))
            return -1;
        while (digit(c))
            c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        is_real = true;
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!digit(c))
            return -1;
        while (digit(c))
            c->p++;
    }
    char small[64];
    size_t n = (size_t)(c->p - s);
    if (!is_real && n >= sizeof small)
        return -1; /* a 64-character integer cannot fit */
    char *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    errno = 0;
    int rc;
    if (is_real) {
        double d = strtod(buf, NULL);
        rc = (errno == ERANGE && isinf(d)) ? -1 : 0;
    } else {
        (void)strtoll(buf, NULL, 10);
        rc = errno == ERANGE ? -1 : 0;
    }
    if (buf != small)
        free(buf);
    return rc;
}

static int literal(scan *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return -1;
    c->p += n;
    return 0;
}

/* The want for the current path, or NULL. */
static jscan_want *wanted(scan *c)
{
    if (!c->path_ok)
        return NULL;
    c->path[c->plen] = 0;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->w[i].path, c->path) == 0)
            return &c->w[i];
    return NULL;
}

/* Append ".seg" (or "seg" at the root) to the path; returns the length to
 * restore. */
static size_t push(scan *c, const char *seg, size_t n)
{
    size_t was = c->plen;
    size_t need = c->plen + (c->plen ? 1 : 0) + n;
    /* an empty key has no place in a dotted path: nothing there matches */
    if (!c->path_ok || n == 0 || need >= sizeof c->path) {
        c->path_ok = false;
        return was;
    }
    if (c->plen)
        c->path[c->plen++] = '.';
    memcpy(c->path + c->plen, seg, n);
    c->plen += n;
    return was;
}

static void pop(scan *c, size_t was, bool ok_before)
{
    c->plen = was;
    c->path_ok = ok_before;
}

static int value(scan *c);

/* Skips white space; takes ch when it comes next. */
static bool take(scan *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* After a container's member or element: 1 when a comma says another
 * follows, 0 when close ends the container, -1 for anything else. */
static int next_item(scan *c, char close)
{
    if (take(c, ','))
        return 1;
    return take(c, close) ? 0 : -1;
}

static int object(scan *c)
{
    c->p++;
    if (take(c, '}'))
        return 0;
    for (;;) {
        skip_ws(c);
        if (c->p >= c->end || *c->p != '"')
            return -1;
        const char *k;
        size_t klen;
        bool esc;
        if (string(c, &k, &klen, &esc))
            return -1;
        if (!take(c, ':'))
            return -1;
        bool ok_before = c->path_ok;
        size_t was;
        if (esc) {
            /* a key with escapes: compare its text */
            char *t = malloc(klen ? klen : 1);
            if (!t)
                return -1;
            jscan_want tmp = {.type = JSCAN_STRING, .p = k, .len = klen, .escaped = true};
            size_t tl = jscan_string(&tmp, t);
            was = memchr(t, '.', tl) ? (c->path_ok = false, c->plen) : push(c, t, tl);
            free(t);
        } else {
            was = memchr(k, '.', klen) ? (c->path_ok = false, c->plen) : push(c, k, klen);
        }
        int rc = value(c);
        pop(c, was, ok_before);
        if (rc || (rc = next_item(c, '}')) <= 0)
            return rc;
    }
}

static int array(scan *c)
{
    c->p++;
    if (take(c, ']'))
        return 0;
    for (size_t i = 0;; i++) {
        char idx[24];
        int n = snprintf(idx, sizeof idx, "%zu", i);
        bool ok_before = c->path_ok;
        size_t was = push(c, idx, (size_t)n);
        int rc = value(c);
        pop(c, was, ok_before);
        if (rc || (rc = next_item(c, ']')) <= 0)
            return rc;
    }
}

static int value(scan *c)
{
    skip_ws(c);
    if (c->p >= c->end)
        return -1;
    jscan_want *w = wanted(c);
    const char *start = c->p;
    jscan_type t;
    int rc;
    switch (*c->p) {
    case '{':
    case '[':
        if (++c->depth > JSCAN_MAX_DEPTH)
            return -1;
        t = *c->p == '{' ? JSCAN_OBJECT : JSCAN_ARRAY;
        rc = t == JSCAN_OBJECT ? object(c) : array(c);
        c->depth--;
        break;
    case '"': {
        const char *s;
        size_t len;
        bool esc;
        rc = string(c, &s, &len, &esc);
        if (!rc && w) {
            w->type = JSCAN_STRING;
            w->p = s;
            w->len = len;
            w->escaped = esc;
        }
        return rc;
    }
    case 't':
        t = JSCAN_TRUE;
        rc = literal(c, "true");
        break;
    case 'f':
        t = JSCAN_FALSE;
        rc = literal(c, "false");
        break;
    case 'n':
        t = JSCAN_NULL;
        rc = literal(c, "null");
        break;
    default:
        t = JSCAN_NUMBER;
        rc = number(c);
        break;
    }
    if (!rc && w) {
        w->type = t;
        w->p = start;
        w->len = (size_t)(c->p - start);
        w->escaped = false;
    }
    return rc;
}

int jscan(const char *text, size_t len, jscan_want *wants, size_t n)
{
    scan c = {.p = text, .end = text + len, .w = wants, .n = n, .path_ok = true};
    for (size_t i = 0; i < n; i++) {
        wants[i].type = JSCAN_NONE;
        wants[i].p = NULL;
        wants[i].len = 0;
        wants[i].escaped = false;
    }
    skip_ws(&c);
    /* a document is an object or an array (jansson without JSON_DECODE_ANY) */
    if (c.p >= c.end || (*c.p != '{' && *c.p != '['))
        return -1;
    if (value(&c))
        return -1;
    skip_ws(&c);
    return c.p == c.end ? 0 : -1;
}

static size_t put_utf8(char *out, uint32_t u)
{
    if (u < 0x80) {
        out[0] = (char)u;
        return 1;
    }
    if (u < 0x800) {
        out[0] = (char)(0xC0 | (u >> 6));
        out[1] = (char)(0x80 | (u & 0x3F));
        return 2;
    }
    if (u < 0x10000) {
        out[0] = (char)(0xE0 | (u >> 12));
        out[1] = (char)(0x80 | ((u >> 6) & 0x3F));
        out[2] = (char)(0x80 | (u & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (u >> 18));
    out[1] = (char)(0x80 | ((u >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((u >> 6) & 0x3F));
    out[3] = (char)(0x80 | (u & 0x3F));
    return 4;
}

size_t jscan_string(const jscan_want *w, char *out)
{
    if (!w->escaped) {
        memcpy(out, w->p, w->len);
        return w->len;
    }
    size_t o = 0;
    for (size_t i = 0; i < w->len;) {
        char ch = w->p[i];
        if (ch != '\\') {
            out[o++] = ch;
            i++;
            continue;
        }
        char e = w->p[i + 1];
        i += 2;
        switch (e) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            uint32_t u = 0, lo = 0;
            hex4(w->p + i, &u); /* checked by the scan */
            i += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                hex4(w->p + i + 2, &lo);
                i += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            o += put_utf8(out + o, u);
            break;
        }
        default: out[o++] = e; break; /* " \ / */
        }
    }
    return o;
}

int jscan_u64(const jscan_want *w, uint64_t *out)
{
    if (w->type != JSCAN_NUMBER || w->len == 0 || w->len > 20 || w->p[0] == '-')
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < w->len; i++) {
        char ch = w->p[i];
        if (ch < '0' || ch > '9')
            return -1;
        if (v > (UINT64_MAX - (uint64_t)(ch - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(ch - '0');
    }
    *out = v;
    return 0;
}

int jscan_double(const jscan_want *w, double *out)
{
    char buf[64];
    if (w->type != JSCAN_NUMBER || w->len >= sizeof buf)
        return -1;
    memcpy(buf, w->p, w->len);
    buf[w->len] = 0;
    *out = strtod(buf, NULL);
    return 0;
}
