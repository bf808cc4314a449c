/* term_check.c - the ETF validator of term.h. Iterative: a stack of "terms
 * still to read" counters replaces recursion, so hostile nesting costs no C
 * stack. */
#include "term.h"

#include <string.h>

const cn_term_limits cn_term_default_limits = {
    .max_depth = 256,
    .max_terms = 10u * 1000 * 1000,
    .max_bytes = 16u * 1024 * 1024,
    .max_atom_bytes = 1020,
};

typedef struct frame {
    uint64_t left; /* terms still to read in this container */
    size_t end;    /* if nonzero: position where the container must end + 1 */
} frame;

typedef struct walker {
    const unsigned char *b;
    size_t len; /* effective length (min of buffer and max_bytes) */
    size_t pos;
    const cn_term_limits *lim;
    uint64_t terms;
} walker;

/* Makes sure n more bytes exist at pos. */
static int need(const walker *w, uint64_t n)
{
    return (uint64_t)(w->len - w->pos) >= n ? 0 : -1;
}

static int count(walker *w)
{
    if (++w->terms > w->lim->max_terms)
        return CN_TERM_ECOUNT;
    return 0;
}

/* Reads one atom at pos (any of the four atom tags). */
static int atom(walker *w)
{
    if (need(w, 1))
        return CN_TERM_ETRUNC;
    unsigned char tag = w->b[w->pos];
    uint32_t n;
    if (tag == CN_ETF_ATOM || tag == CN_ETF_ATOM_UTF8) { /* len16 */
        if (need(w, 3))
            return CN_TERM_ETRUNC;
        n = cn_rd16(w->b + w->pos + 1);
        w->pos += 3;
    } else if (tag == CN_ETF_SMALL_ATOM || tag == CN_ETF_SMALL_ATOM_UTF8) { /* len8 */
        if (need(w, 2))
            return CN_TERM_ETRUNC;
        n = w->b[w->pos + 1];
        w->pos += 2;
    } else {
        return CN_TERM_ETAG;
    }
    if (n > w->lim->max_atom_bytes || n > 1020)
        return CN_TERM_EATOM;
    if (need(w, n))
        return CN_TERM_ETRUNC;
    w->pos += n;
    return count(w);
}

static int skip(walker *w, uint64_t n)
{
    if (need(w, n))
        return CN_TERM_ETRUNC;
    w->pos += (size_t)n;
    return 0;
}

/* A pid at pos (PID_EXT or NEW_PID_EXT). */
static int pid(walker *w)
{
    if (need(w, 1))
        return CN_TERM_ETRUNC;
    unsigned char tag = w->b[w->pos++];
    if (tag != CN_ETF_NEW_PID && tag != CN_ETF_PID)
        return CN_TERM_ETAG;
    int rc = atom(w);
    if (rc)
        return rc;
    if ((rc = skip(w, tag == CN_ETF_NEW_PID ? 12 : 9)))
        return rc;
    return count(w);
}

/* An integer term at pos (SMALL_INTEGER or INTEGER), as NEW_FUN_EXT wants. */
static int small_int(walker *w)
{
    if (need(w, 1))
        return CN_TERM_ETRUNC;
    unsigned char tag = w->b[w->pos++];
    int rc;
    if (tag == CN_ETF_SMALL_INTEGER)
        rc = skip(w, 1);
    else if (tag == CN_ETF_INTEGER)
        rc = skip(w, 4);
    else
        return CN_TERM_ETAG;
    return rc ? rc : count(w);
}

/* A term whose size is in its header: hdr bytes (the tag, a length of
 * len_bytes big-endian bytes right after it, then what else the header
 * has), then that many bytes. When sign_at is nonzero, the header's byte
 * there is a bignum's sign: 0 or 1. */
static int sized(walker *w, size_t hdr, int len_bytes, size_t sign_at)
{
    if (need(w, hdr))
        return CN_TERM_ETRUNC;
    const unsigned char *h = w->b + w->pos;
    if (sign_at && h[sign_at] > 1)
        return CN_TERM_EFORM;
    uint64_t n = len_bytes == 1 ? h[1] : len_bytes == 2 ? cn_rd16(h + 1) : cn_rd32(h + 1);
    return skip(w, hdr + n);
}

/* A container's header: hdr bytes with the number of elements after the
 * tag (len_bytes of it), times per (2 for a map's key/value pairs), plus
 * extra (a list's tail). */
static int counted(walker *w, size_t hdr, int len_bytes, uint64_t per, uint64_t extra,
                   uint64_t *children)
{
    if (need(w, hdr))
        return CN_TERM_ETRUNC;
    const unsigned char *h = w->b + w->pos;
    *children = per * (len_bytes == 1 ? h[1] : cn_rd32(h + 1)) + extra;
    w->pos += hdr;
    return 0;
}

/* NEW_FUN_EXT: size32 arity8 uniq16 index32 numfree32 module oldindex
 * olduniq pid freevars...; the free variables are its children, and it
 * must end where size says (*end, "end + 1" convention). */
static int new_fun(walker *w, uint64_t *children, size_t *end)
{
    size_t start = w->pos;
    if (need(w, 1 + 4 + 1 + 16 + 4 + 4))
        return CN_TERM_ETRUNC;
    uint32_t size = cn_rd32(w->b + w->pos + 1);
    uint32_t numfree = cn_rd32(w->b + w->pos + 26);
    if (size < 29)
        return CN_TERM_EFORM;
    if (need(w, (uint64_t)size + 1))
        return CN_TERM_ETRUNC;
    w->pos += 30;
    int rc;
    if ((rc = atom(w)) || (rc = small_int(w)) || (rc = small_int(w)) || (rc = pid(w)))
        return rc;
    *children = numfree;
    *end = numfree ? start + 1 + size + 1 : 0;
    if (numfree == 0 && w->pos != start + 1 + size)
        return CN_TERM_EFORM;
    return 0;
}

/* EXPORT_EXT: module atom, function atom, arity small int. */
static int export_fun(walker *w)
{
    w->pos++;
    int rc;
    if ((rc = atom(w)) || (rc = atom(w)))
        return rc;
    if (need(w, 2))
        return CN_TERM_ETRUNC;
    if (w->b[w->pos] != CN_ETF_SMALL_INTEGER)
        return CN_TERM_EFORM;
    w->pos += 2;
    return count(w);
}

/* A port or reference: the tag, hdr - 1 more header bytes, the node atom,
 * then tail bytes. For the new references the header holds the number of
 * id words (1..5), each 4 bytes of the tail. */
static int node_term(walker *w, size_t hdr, uint64_t tail, uint64_t per_word)
{
    uint64_t words = 0;
    if (per_word) {
        if (need(w, hdr))
            return CN_TERM_ETRUNC;
        words = cn_rd16(w->b + w->pos + 1);
        if (words == 0 || words > 5)
            return CN_TERM_EFORM;
    }
    w->pos += hdr;
    int rc = atom(w);
    return rc ? rc : skip(w, tail + per_word * words);
}

/* Reads the term at w->pos: a whole scalar, or a container's header (its
 * children in *children, *end as for new_fun). The term itself is counted
 * by the caller. */
static int one_term(walker *w, uint64_t *children, size_t *end)
{
    int rc;
    switch (w->b[w->pos]) {
    case CN_ETF_SMALL_INTEGER: return skip(w, 2);
    case CN_ETF_INTEGER: return skip(w, 5);
    case CN_ETF_NEW_FLOAT: return skip(w, 9);
    case CN_ETF_FLOAT: return skip(w, 32); /* 31 bytes of text */
    case CN_ETF_ATOM: case CN_ETF_SMALL_ATOM:
    case CN_ETF_ATOM_UTF8: case CN_ETF_SMALL_ATOM_UTF8:
        rc = atom(w);
        w->terms--; /* counted by the caller */
        return rc;
    case CN_ETF_NEW_PID: case CN_ETF_PID:
        rc = pid(w);
        w->terms--;
        return rc;
    case CN_ETF_PORT: return node_term(w, 1, 5, 0);      /* id4 creation1 */
    case CN_ETF_NEW_PORT: return node_term(w, 1, 8, 0);  /* id4 creation4 */
    case CN_ETF_V4_PORT: return node_term(w, 1, 12, 0);  /* id8 creation4 */
    case CN_ETF_REFERENCE: return node_term(w, 1, 5, 0); /* id4 creation1 */
    case CN_ETF_NEW_REFERENCE: return node_term(w, 3, 1, 4);   /* creation1 */
    case CN_ETF_NEWER_REFERENCE: return node_term(w, 3, 4, 4); /* creation4 */
    case CN_ETF_SMALL_TUPLE: return counted(w, 2, 1, 1, 0, children);
    case CN_ETF_LARGE_TUPLE: return counted(w, 5, 4, 1, 0, children);
    case CN_ETF_MAP: return counted(w, 5, 4, 2, 0, children);
    case CN_ETF_LIST: return counted(w, 5, 4, 1, 1, children); /* + tail */
    case CN_ETF_NIL: return skip(w, 1);
    case CN_ETF_STRING: return sized(w, 3, 2, 0);
    case CN_ETF_BINARY: return sized(w, 5, 4, 0);
    case CN_ETF_SMALL_BIG: return sized(w, 3, 1, 2); /* n8 sign8 digits */
    case CN_ETF_LARGE_BIG: return sized(w, 6, 4, 5); /* n32 sign8 digits */
    case CN_ETF_BIT_BINARY: { /* len32 bits8 bytes */
        if (need(w, 6))
            return CN_TERM_ETRUNC;
        uint32_t n = cn_rd32(w->b + w->pos + 1);
        unsigned bits = w->b[w->pos + 5];
        if (bits < 1 || bits > 8 || (n == 0 && bits != 8))
            return CN_TERM_EFORM;
        return skip(w, 6 + (uint64_t)n);
    }
    case CN_ETF_EXPORT: return export_fun(w);
    case CN_ETF_NEW_FUN: return new_fun(w, children, end);
    default: /* ATOM_CACHE_REF, FUN_EXT, LOCAL_EXT, unknown */
        return CN_TERM_ETAG;
    }
}

int cn_term_check(const unsigned char *buf, size_t len,
                  const cn_term_limits *lim, size_t *used)
{
    if (!lim)
        lim = &cn_term_default_limits;
    walker w = {.b = buf, .len = len, .pos = 0, .lim = lim, .terms = 0};
    int size_capped = 0;
    if (w.len > lim->max_bytes) {
        w.len = lim->max_bytes;
        size_capped = 1;
    }
    /* running out of bytes that were cut off by max_bytes: too large */
    int etrunc = size_capped ? CN_TERM_ESIZE : CN_TERM_ETRUNC;
    uint32_t max_depth = lim->max_depth;
    if (max_depth > CN_TERM_DEPTH_CAP)
        max_depth = CN_TERM_DEPTH_CAP;

    frame stack[CN_TERM_DEPTH_CAP + 1];
    uint32_t depth = 0;
    stack[0].left = 1; /* the top-level term */
    stack[0].end = 0;

    for (;;) {
        /* Pop finished containers. */
        while (stack[depth].left == 0) {
            if (stack[depth].end && w.pos + 1 != stack[depth].end)
                return CN_TERM_EFORM;
            if (depth == 0) {
                if (used)
                    *used = w.pos;
                return CN_TERM_OK;
            }
            depth--;
        }
        stack[depth].left--;

        if (need(&w, 1))
            return etrunc;
        uint64_t children = 0; /* terms to push for containers */
        size_t end = 0;
        int rc = one_term(&w, &children, &end);
        if (rc)
            return rc == CN_TERM_ETRUNC ? etrunc : rc;
        if ((rc = count(&w)))
            return rc;
        if (children > 0) {
            /* every child needs at least one byte: never trust the count */
            if (children > (uint64_t)(w.len - w.pos))
                return etrunc;
            if (depth + 1 > max_depth)
                return CN_TERM_EDEPTH;
            depth++;
            stack[depth].left = children;
            stack[depth].end = end;
        }
    }
}

int cn_term_check_exact(const unsigned char *buf, size_t len,
                        const cn_term_limits *lim)
{
    size_t used = 0;
    int rc = cn_term_check(buf, len, lim, &used);
    if (rc)
        return rc;
    return used == len ? CN_TERM_OK : CN_TERM_EFORM;
}

const char *cn_term_strerror(int err)
{
    switch (err) {
    case CN_TERM_OK: return "ok";
    case CN_TERM_ETRUNC: return "truncated term";
    case CN_TERM_ETAG: return "unsupported tag";
    case CN_TERM_EDEPTH: return "term nested too deeply";
    case CN_TERM_ECOUNT: return "too many terms";
    case CN_TERM_ESIZE: return "term too large";
    case CN_TERM_EATOM: return "atom too long";
    case CN_TERM_EFORM: return "malformed term";
    }
    return "unknown term error";
}
