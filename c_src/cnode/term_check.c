/* term_check.c - see term_check.h. Iterative: a stack of "terms still to
 * read" counters replaces recursion, so hostile nesting costs no C stack. */
#include "term_check.h"

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

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

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
    if (tag == 100 || tag == 118) { /* ATOM_EXT, ATOM_UTF8_EXT: len16 */
        if (need(w, 3))
            return CN_TERM_ETRUNC;
        n = rd16(w->b + w->pos + 1);
        w->pos += 3;
    } else if (tag == 115 || tag == 119) { /* SMALL_ATOM(_UTF8)_EXT: len8 */
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
    if (tag != 88 && tag != 103)
        return CN_TERM_ETAG;
    int rc = atom(w);
    if (rc)
        return rc;
    if ((rc = skip(w, tag == 88 ? 12 : 9)))
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
    if (tag == 97)
        rc = skip(w, 1);
    else if (tag == 98)
        rc = skip(w, 4);
    else
        return CN_TERM_ETAG;
    return rc ? rc : count(w);
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
    uint32_t max_depth = lim->max_depth;
    if (max_depth > CN_TERM_DEPTH_CAP)
        max_depth = CN_TERM_DEPTH_CAP;

    frame stack[CN_TERM_DEPTH_CAP + 1];
    uint32_t depth = 0;
    stack[0].left = 1; /* the top-level term */
    stack[0].end = 0;
    int rc = 0;

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
            return size_capped ? CN_TERM_ESIZE : CN_TERM_ETRUNC;
        size_t start = w.pos;
        unsigned char tag = w.b[w.pos];
        uint64_t children = 0; /* terms to push for containers */
        size_t end = 0;

        switch (tag) {
        case 97: /* SMALL_INTEGER_EXT */
            rc = skip(&w, 2);
            break;
        case 98: /* INTEGER_EXT */
            rc = skip(&w, 5);
            break;
        case 70: /* NEW_FLOAT_EXT */
            rc = skip(&w, 9);
            break;
        case 99: /* FLOAT_EXT, 31 bytes of text */
            rc = skip(&w, 32);
            break;
        case 100: case 115: case 118: case 119:
            rc = atom(&w);
            w.terms--; /* counted below */
            break;
        case 88: case 103:
            rc = pid(&w);
            w.terms--;
            break;
        case 102: /* PORT_EXT: node, id4, creation1 */
        case 89:  /* NEW_PORT_EXT: node, id4, creation4 */
        case 120: /* V4_PORT_EXT: node, id8, creation4 */
            w.pos++;
            if (!(rc = atom(&w)))
                rc = skip(&w, tag == 102 ? 5 : tag == 89 ? 8 : 12);
            break;
        case 114: /* NEW_REFERENCE_EXT: len16 node creation1 id(4*len) */
        case 90: { /* NEWER_REFERENCE_EXT: len16 node creation4 id(4*len) */
            if (need(&w, 3)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            uint32_t n = rd16(w.b + w.pos + 1);
            if (n == 0 || n > 5) {
                rc = CN_TERM_EFORM;
                break;
            }
            w.pos += 3;
            if (!(rc = atom(&w)))
                rc = skip(&w, (tag == 114 ? 1 : 4) + 4 * (uint64_t)n);
            break;
        }
        case 101: /* REFERENCE_EXT (old): node id4 creation1 */
            w.pos++;
            if (!(rc = atom(&w)))
                rc = skip(&w, 5);
            break;
        case 104: /* SMALL_TUPLE_EXT */
            if (need(&w, 2)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            children = w.b[w.pos + 1];
            w.pos += 2;
            break;
        case 105: /* LARGE_TUPLE_EXT */
            if (need(&w, 5)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            children = rd32(w.b + w.pos + 1);
            w.pos += 5;
            break;
        case 116: /* MAP_EXT: arity32, then key/value pairs */
            if (need(&w, 5)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            children = 2 * (uint64_t)rd32(w.b + w.pos + 1);
            w.pos += 5;
            break;
        case 106: /* NIL_EXT */
            w.pos++;
            break;
        case 107: /* STRING_EXT: len16 bytes */
            if (need(&w, 3)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            rc = skip(&w, 3 + (uint64_t)rd16(w.b + w.pos + 1));
            break;
        case 108: /* LIST_EXT: len32 elements then tail */
            if (need(&w, 5)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            children = (uint64_t)rd32(w.b + w.pos + 1) + 1;
            w.pos += 5;
            break;
        case 109: /* BINARY_EXT: len32 bytes */
            if (need(&w, 5)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            rc = skip(&w, 5 + (uint64_t)rd32(w.b + w.pos + 1));
            break;
        case 77: { /* BIT_BINARY_EXT: len32 bits8 bytes */
            if (need(&w, 6)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            uint32_t n = rd32(w.b + w.pos + 1);
            unsigned bits = w.b[w.pos + 5];
            if (bits < 1 || bits > 8 || (n == 0 && bits != 8)) {
                rc = CN_TERM_EFORM;
                break;
            }
            rc = skip(&w, 6 + (uint64_t)n);
            break;
        }
        case 110: /* SMALL_BIG_EXT: n8 sign8 digits */
            if (need(&w, 3)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            if (w.b[w.pos + 2] > 1) {
                rc = CN_TERM_EFORM;
                break;
            }
            rc = skip(&w, 3 + (uint64_t)w.b[w.pos + 1]);
            break;
        case 111: /* LARGE_BIG_EXT: n32 sign8 digits */
            if (need(&w, 6)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            if (w.b[w.pos + 5] > 1) {
                rc = CN_TERM_EFORM;
                break;
            }
            rc = skip(&w, 6 + (uint64_t)rd32(w.b + w.pos + 1));
            break;
        case 113: /* EXPORT_EXT: module atom, function atom, arity small int */
            w.pos++;
            if (!(rc = atom(&w)) && !(rc = atom(&w))) {
                if (need(&w, 2))
                    rc = CN_TERM_ETRUNC;
                else if (w.b[w.pos] != 97)
                    rc = CN_TERM_EFORM;
                else
                    rc = count(&w), w.pos += 2;
            }
            break;
        case 112: { /* NEW_FUN_EXT: size32 arity8 uniq16 index32 numfree32
                       module oldindex olduniq pid freevars... */
            if (need(&w, 1 + 4 + 1 + 16 + 4 + 4)) {
                rc = CN_TERM_ETRUNC;
                break;
            }
            uint32_t size = rd32(w.b + w.pos + 1);
            uint32_t numfree = rd32(w.b + w.pos + 26);
            if (size < 29 || need(&w, (uint64_t)size + 1)) {
                rc = size < 29 ? CN_TERM_EFORM : CN_TERM_ETRUNC;
                break;
            }
            end = start + 1 + size + 1; /* "end + 1" convention */
            w.pos += 30;
            if ((rc = atom(&w)) || (rc = small_int(&w)) ||
                (rc = small_int(&w)) || (rc = pid(&w)))
                break;
            children = numfree;
            if (children == 0 && w.pos != start + 1 + size)
                rc = CN_TERM_EFORM;
            if (children == 0)
                end = 0;
            break;
        }
        default: /* 82 ATOM_CACHE_REF, 117 FUN_EXT, 121 LOCAL_EXT, others */
            rc = CN_TERM_ETAG;
            break;
        }
        if (rc)
            return (rc == CN_TERM_ETRUNC && size_capped) ? CN_TERM_ESIZE : rc;
        if ((rc = count(&w)))
            return rc;
        if (children > 0) {
            /* every child needs at least one byte: never trust the count */
            if (children > (uint64_t)(w.len - w.pos))
                return size_capped ? CN_TERM_ESIZE : CN_TERM_ETRUNC;
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
