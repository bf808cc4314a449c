/* term.c - see term.h: the readers and writers (the validator is
 * term_check.c). */
#include "term.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cn_kind cn_tag_kind(unsigned char tag)
{
    switch (tag) {
    case CN_ETF_SMALL_INTEGER: case CN_ETF_INTEGER:
    case CN_ETF_SMALL_BIG: case CN_ETF_LARGE_BIG:
        return CN_KIND_INTEGER;
    case CN_ETF_NEW_FLOAT: case CN_ETF_FLOAT:
        return CN_KIND_FLOAT;
    case CN_ETF_ATOM: case CN_ETF_SMALL_ATOM:
    case CN_ETF_ATOM_UTF8: case CN_ETF_SMALL_ATOM_UTF8:
        return CN_KIND_ATOM;
    case CN_ETF_BINARY:
        return CN_KIND_BINARY;
    case CN_ETF_BIT_BINARY:
        return CN_KIND_BITSTRING;
    case CN_ETF_SMALL_TUPLE: case CN_ETF_LARGE_TUPLE:
        return CN_KIND_TUPLE;
    case CN_ETF_NIL:
        return CN_KIND_NIL;
    case CN_ETF_LIST:
        return CN_KIND_LIST;
    case CN_ETF_STRING:
        return CN_KIND_STRING;
    case CN_ETF_MAP:
        return CN_KIND_MAP;
    case CN_ETF_NEW_PID: case CN_ETF_PID:
        return CN_KIND_PID;
    case CN_ETF_NEW_PORT: case CN_ETF_PORT: case CN_ETF_V4_PORT:
        return CN_KIND_PORT;
    case CN_ETF_NEWER_REFERENCE: case CN_ETF_NEW_REFERENCE: case CN_ETF_REFERENCE:
        return CN_KIND_REF;
    case CN_ETF_NEW_FUN: case CN_ETF_EXPORT:
        return CN_KIND_FUN;
    default:
        return CN_KIND_OTHER;
    }
}

/* --------------------------------------------------------------- readers */

size_t cn_term_len(const unsigned char *buf, size_t len)
{
    size_t used = 0;
    if (cn_term_check(buf, len, NULL, &used) != CN_TERM_OK)
        return 0;
    return used;
}

/* The terms that follow a container's header: n of them from s.p + pos,
 * the first max into el. The position after the last one walked, or 0 if
 * one is malformed. */
static size_t elements(cn_slice s, size_t pos, size_t n, cn_slice *el, size_t max)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = cn_term_len(s.p + pos, s.len - pos);
        if (!len)
            return 0;
        if (i < max)
            el[i] = (cn_slice){s.p + pos, len};
        pos += len;
    }
    return pos;
}

int cn_term_tuple(cn_slice t, cn_slice *el, int max)
{
    size_t pos, arity;
    if (t.len >= 2 && t.p[0] == CN_ETF_SMALL_TUPLE) {
        arity = t.p[1];
        pos = 2;
    } else if (t.len >= 5 && t.p[0] == CN_ETF_LARGE_TUPLE) {
        arity = cn_rd32(t.p + 1);
        pos = 5;
    } else {
        return -1;
    }
    if (max < 0 || arity > (size_t)max)
        return -1;
    return arity == 0 || elements(t, pos, arity, el, arity) ? (int)arity : -1;
}

long cn_term_list(cn_slice s, cn_slice *el, size_t max, cn_slice *tail)
{
    if (cn_term_kind(s) == CN_KIND_NIL) {
        if (tail)
            *tail = (cn_slice){NULL, 0};
        return 0;
    }
    if (cn_term_kind(s) != CN_KIND_LIST || s.len < 5)
        return -1;
    size_t n = cn_rd32(s.p + 1);
    size_t pos = elements(s, 5, tail ? n : (n < max ? n : max), el, max);
    if (!pos)
        return -1;
    if (tail) {
        size_t len = cn_term_len(s.p + pos, s.len - pos);
        if (!len)
            return -1;
        *tail = (cn_slice){s.p + pos, len};
    }
    return (long)n;
}

int cn_term_atom(cn_slice s, const char **name, size_t *len)
{
    if (cn_term_kind(s) != CN_KIND_ATOM)
        return -1;
    size_t n, hdr;
    if (s.p[0] == CN_ETF_ATOM || s.p[0] == CN_ETF_ATOM_UTF8) {
        if (s.len < 3)
            return -1;
        n = cn_rd16(s.p + 1);
        hdr = 3;
    } else {
        if (s.len < 2)
            return -1;
        n = s.p[1];
        hdr = 2;
    }
    if (hdr + n > s.len)
        return -1;
    *name = (const char *)s.p + hdr;
    *len = n;
    return 0;
}

int cn_term_is_atom(cn_slice s, const char *name)
{
    const char *a;
    size_t n;
    if (cn_term_atom(s, &a, &n))
        return 0;
    return n == strlen(name) && memcmp(a, name, n) == 0;
}

int cn_term_pid(cn_slice s, cn_wpid *out)
{
    if (cn_term_kind(s) != CN_KIND_PID)
        return -1;
    cn_slice node = {s.p + 1, s.len - 1};
    if (cn_term_atom(node, &out->node, &out->node_len))
        return -1;
    size_t off = 1 + (size_t)((const unsigned char *)out->node - node.p) + out->node_len;
    int is_new = s.p[0] == CN_ETF_NEW_PID; /* 32-bit creation, else 8-bit */
    if (off + (is_new ? 12 : 9) > s.len)
        return -1;
    out->num = cn_rd32(s.p + off);
    out->serial = cn_rd32(s.p + off + 4);
    out->creation = is_new ? cn_rd32(s.p + off + 8) : s.p[off + 8];
    return 0;
}

int cn_term_binary(cn_slice s, const char **p, size_t *len)
{
    if (s.len < 5 || s.p[0] != CN_ETF_BINARY)
        return -1;
    size_t n = cn_rd32(s.p + 1);
    if (n + 5 != s.len)
        return -1;
    *p = (const char *)s.p + 5;
    *len = n;
    return 0;
}

int cn_term_u64(cn_slice s, uint64_t *out)
{
    if (s.len == 2 && s.p[0] == CN_ETF_SMALL_INTEGER) {
        *out = s.p[1];
        return 0;
    }
    if (s.len == 5 && s.p[0] == CN_ETF_INTEGER) {
        int32_t i = (int32_t)cn_rd32(s.p + 1);
        if (i < 0)
            return -1;
        *out = (uint64_t)i;
        return 0;
    }
    if (s.len >= 3 && s.p[0] == CN_ETF_SMALL_BIG) {
        size_t n = s.p[1]; /* digits, little-endian; then the sign byte */
        if (n > 8 || s.p[2] != 0 || s.len != 3 + n)
            return -1;
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++)
            v |= (uint64_t)s.p[3 + i] << (8 * i);
        *out = v;
        return 0;
    }
    return -1;
}

void cn_term_text(cn_slice s, char *buf, size_t cap)
{
    const char *p;
    size_t len;
    if (cn_term_binary(s, &p, &len) == 0) {
        snprintf(buf, cap, "%.*s", (int)(len < cap ? len : cap - 1), p);
        return;
    }
    char *printed = NULL;
    int index = 0;
    if (ei_s_print_term(&printed, (const char *)s.p, &index) >= 0 && printed)
        snprintf(buf, cap, "%s", printed);
    else
        snprintf(buf, cap, "unprintable term");
    free(printed);
}

/* --------------------------------------------------------------- writers */

int cn_enc_atom(ei_x_buff *x, const char *name, size_t len)
{
    unsigned char h[3];
    if (len > 1020)
        return -1;
    if (len < 64) {
        /* the usual atom: one append */
        char b[2 + 64];
        b[0] = (char)CN_ETF_SMALL_ATOM_UTF8;
        b[1] = (char)len;
        memcpy(b + 2, name, len);
        return ei_x_append_buf(x, b, (int)len + 2) ? -1 : 0;
    }
    if (len < 256) {
        h[0] = CN_ETF_SMALL_ATOM_UTF8;
        h[1] = (unsigned char)len;
        if (ei_x_append_buf(x, (const char *)h, 2))
            return -1;
    } else {
        h[0] = CN_ETF_ATOM_UTF8;
        cn_wr16(h + 1, (uint16_t)len);
        if (ei_x_append_buf(x, (const char *)h, 3))
            return -1;
    }
    return len ? ei_x_append_buf(x, name, (int)len) : 0;
}

int cn_enc_pid(ei_x_buff *x, const cn_wpid *p)
{
    unsigned char tag = CN_ETF_NEW_PID, nums[12];
    if (ei_x_append_buf(x, (const char *)&tag, 1) ||
        cn_enc_atom(x, p->node, p->node_len))
        return -1;
    cn_wr32(nums, p->num);
    cn_wr32(nums + 4, p->serial);
    cn_wr32(nums + 8, p->creation);
    return ei_x_append_buf(x, (const char *)nums, 12);
}

size_t cn_term_ref(unsigned char *out, size_t cap, const char *node, size_t nlen,
                   uint32_t creation, const uint32_t id[3])
{
    size_t need = CN_TERM_REF_LEN(nlen);
    if (nlen > 255 || cap < need)
        return 0;
    unsigned char *p = out;
    *p++ = CN_ETF_NEWER_REFERENCE;
    cn_wr16(p, 3); /* id words */
    p += 2;
    *p++ = CN_ETF_SMALL_ATOM_UTF8;
    *p++ = (unsigned char)nlen;
    memcpy(p, node, nlen);
    p += nlen;
    cn_wr32(p, creation);
    for (int i = 0; i < 3; i++)
        cn_wr32(p + 4 + 4 * i, id[i]);
    return need;
}

cn_slice cn_x_slice(const ei_x_buff *x)
{
    return (cn_slice){(const unsigned char *)x->buff, (size_t)x->index};
}

/* ----------------------------------------------------------------- atoms */

#define SA CN_ETF_SMALL_ATOM_UTF8
static const unsigned char A_NORMAL[] = {SA, 6, 'n', 'o', 'r', 'm', 'a', 'l'};
static const unsigned char A_SHUTDOWN[] = {SA, 8, 's', 'h', 'u', 't', 'd', 'o', 'w', 'n'};
static const unsigned char A_NOPROC[] = {SA, 6, 'n', 'o', 'p', 'r', 'o', 'c'};
static const unsigned char A_NOCONN[] = {SA, 12, 'n', 'o', 'c', 'o', 'n', 'n',
                                         'e', 'c', 't', 'i', 'o', 'n'};
static const unsigned char A_KILLED[] = {SA, 6, 'k', 'i', 'l', 'l', 'e', 'd'};
#undef SA

cn_slice cn_atom_normal(void) { return (cn_slice){A_NORMAL, sizeof A_NORMAL}; }
cn_slice cn_atom_shutdown(void) { return (cn_slice){A_SHUTDOWN, sizeof A_SHUTDOWN}; }
cn_slice cn_atom_noproc(void) { return (cn_slice){A_NOPROC, sizeof A_NOPROC}; }
cn_slice cn_atom_noconnection(void) { return (cn_slice){A_NOCONN, sizeof A_NOCONN}; }
cn_slice cn_atom_killed(void) { return (cn_slice){A_KILLED, sizeof A_KILLED}; }
