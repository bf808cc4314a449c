/* term.h - the Erlang external term format (ETF) at the byte level: the one
 * place of the C node that knows tags, byte order and the layout of terms.
 *
 * What it is for: validating what BEAM sends (cn_term_check), reading the
 * terms of a validated frame as views (tuples, lists, atoms, binaries,
 * integers, pids), and writing the few terms ei does not write the way
 * distribution needs them (pids, atoms, references). Every other file of
 * the C node reads and writes terms through this header or through ei's
 * encoders, and names no tag; the big-endian helpers here are also the
 * ones the handshake, the framing and the epmd client use.
 * What it is not for: mapping terms to JSON (term_json.c), to the
 * protocol's shapes (event_term.c) or to control messages (dist_ctl.c).
 *
 * A "term" here is encoded ETF WITHOUT the 131 version byte. A cn_slice is a
 * view (pointer + length), valid while the bytes it points into are. Owns
 * nothing; no function here allocates but ei's buffer growth in the
 * writers.
 *
 * Two files implement it: term_check.c (the validator, fuzzed) and term.c
 * (readers and writers).
 */
#ifndef CN_TERM_H
#define CN_TERM_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

/* ------------------------------------------------------------------ tags */

/* The tags of erl_ext_dist (ei.h's ERL_*_EXT have the same values). */
enum {
    CN_ETF_VERSION = 131,         /* before a whole term on the wire */
    CN_ETF_NEW_FLOAT = 70,
    CN_ETF_BIT_BINARY = 77,
    CN_ETF_ATOM_CACHE_REF = 82,   /* never negotiated: refused */
    CN_ETF_NEW_PID = 88,
    CN_ETF_NEW_PORT = 89,
    CN_ETF_NEWER_REFERENCE = 90,
    CN_ETF_SMALL_INTEGER = 97,
    CN_ETF_INTEGER = 98,
    CN_ETF_FLOAT = 99,
    CN_ETF_ATOM = 100,
    CN_ETF_REFERENCE = 101,
    CN_ETF_PORT = 102,
    CN_ETF_PID = 103,
    CN_ETF_SMALL_TUPLE = 104,
    CN_ETF_LARGE_TUPLE = 105,
    CN_ETF_NIL = 106,
    CN_ETF_STRING = 107,
    CN_ETF_LIST = 108,
    CN_ETF_BINARY = 109,
    CN_ETF_SMALL_BIG = 110,
    CN_ETF_LARGE_BIG = 111,
    CN_ETF_NEW_FUN = 112,
    CN_ETF_EXPORT = 113,
    CN_ETF_NEW_REFERENCE = 114,
    CN_ETF_SMALL_ATOM = 115,
    CN_ETF_MAP = 116,
    CN_ETF_FUN = 117,             /* removed from OTP: refused */
    CN_ETF_ATOM_UTF8 = 118,
    CN_ETF_SMALL_ATOM_UTF8 = 119,
    CN_ETF_V4_PORT = 120,
    CN_ETF_LOCAL = 121,           /* refused */
};

/* What a term is, by its tag. */
typedef enum cn_kind {
    CN_KIND_OTHER = 0,  /* an unknown or refused tag, or no term */
    CN_KIND_INTEGER,    /* small, 32-bit and big integers */
    CN_KIND_FLOAT,
    CN_KIND_ATOM,       /* any of the four atom encodings */
    CN_KIND_BINARY,
    CN_KIND_BITSTRING,
    CN_KIND_TUPLE,
    CN_KIND_NIL,        /* [] */
    CN_KIND_LIST,       /* a non-empty list (LIST_EXT) */
    CN_KIND_STRING,     /* a list of bytes packed as STRING_EXT */
    CN_KIND_MAP,
    CN_KIND_PID,
    CN_KIND_PORT,
    CN_KIND_REF,
    CN_KIND_FUN,        /* NEW_FUN and EXPORT */
} cn_kind;

cn_kind cn_tag_kind(unsigned char tag);

/* ------------------------------------------------------------ byte order */

/* Big-endian (network order) integers, as ETF, the handshake, the framing
 * and epmd write them. p must hold the bytes. */
static inline uint16_t cn_rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t cn_rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t cn_rd64(const unsigned char *p)
{
    return (uint64_t)cn_rd32(p) << 32 | cn_rd32(p + 4);
}
static inline void cn_wr16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}
static inline void cn_wr32(unsigned char *p, uint32_t v)
{
    cn_wr16(p, (uint16_t)(v >> 16));
    cn_wr16(p + 2, (uint16_t)v);
}
static inline void cn_wr64(unsigned char *p, uint64_t v)
{
    cn_wr32(p, (uint32_t)(v >> 32));
    cn_wr32(p + 4, (uint32_t)v);
}

/* ---------------------------------------------------------------- views */

/* A slice of encoded term bytes (no version byte). len 0 = absent. */
typedef struct cn_slice {
    const unsigned char *p;
    size_t len;
} cn_slice;

/* A pid as it travels: node name bytes (a view, or our own string) and the
 * numbers of NEW_PID_EXT. */
typedef struct cn_wpid {
    const char *node;
    size_t node_len;
    uint32_t num, serial, creation;
} cn_wpid;

/* The kind of the term s starts with (CN_KIND_OTHER for an empty slice). */
static inline cn_kind cn_term_kind(cn_slice s)
{
    return s.len ? cn_tag_kind(s.p[0]) : CN_KIND_OTHER;
}

/* ------------------------------------------------------------- validator */

/* term_check.c: a bounds-checked validator of ONE encoded term. It walks
 * the term iteratively with an explicit stack and checks every length
 * against the bytes that remain, the nesting depth, the number of terms,
 * the total size and atom lengths. Every tag BEAM can send over
 * distribution is understood: integers, floats (old and new), atoms (all
 * four forms), pids (PID/NEW_PID), ports (PORT/NEW_PORT/V4_PORT),
 * references (NEW/NEWER and the old form), tuples, lists, strings,
 * binaries, bitstrings, bigs, maps, NEW_FUN and EXPORT. ATOM_CACHE_REF,
 * the removed FUN_EXT and LOCAL_EXT are refused (we never negotiate the
 * atom cache). A term that passes is safe to hand to the readers below and
 * to ei's decoders: none reads past its length, and atoms fit
 * MAXATOMLEN_UTF8. */

#define CN_TERM_DEPTH_CAP 512 /* hard cap on max_depth (stack array size) */

typedef struct cn_term_limits {
    uint32_t max_depth;      /* nesting of containers, <= CN_TERM_DEPTH_CAP */
    uint64_t max_terms;      /* number of terms (nodes) in the whole term */
    size_t max_bytes;        /* encoded size of the whole term */
    uint32_t max_atom_bytes; /* bytes of one atom's text, <= 1020 */
} cn_term_limits;

/* Defaults: depth 256, 10M terms, 16 MiB, 1020-byte atoms. */
extern const cn_term_limits cn_term_default_limits;

enum {
    CN_TERM_OK = 0,
    CN_TERM_ETRUNC = -1,   /* a length runs past the end of the buffer */
    CN_TERM_ETAG = -2,     /* unknown or unsupported tag */
    CN_TERM_EDEPTH = -3,   /* nesting too deep */
    CN_TERM_ECOUNT = -4,   /* too many terms */
    CN_TERM_ESIZE = -5,    /* term larger than max_bytes */
    CN_TERM_EATOM = -6,    /* atom too long */
    CN_TERM_EFORM = -7     /* structurally wrong (bad bits, bad fun size...) */
};

/* Validates the term at buf[0..len). On success returns CN_TERM_OK and, if
 * `used` is not NULL, stores the term's encoded size there (which may be
 * less than len: the caller decides whether trailing bytes are allowed).
 * `lim` NULL means the defaults. Never reads outside buf[0..len). */
int cn_term_check(const unsigned char *buf, size_t len,
                  const cn_term_limits *lim, size_t *used);

/* As cn_term_check, but the term must fill buf exactly. */
int cn_term_check_exact(const unsigned char *buf, size_t len,
                        const cn_term_limits *lim);

const char *cn_term_strerror(int err);

/* --------------------------------------------------------------- readers */

/* Readers take a slice holding exactly one term (a frame's payload, an
 * element of a tuple...) and return 0, or -1 when it is not what they read;
 * they never read outside the slice. */

/* Length of the first term in buf[0..len) (validated with the default
 * limits), or 0 if there is none. */
size_t cn_term_len(const unsigned char *buf, size_t len);

/* A tuple's elements: returns the arity (<= max) and fills el, or -1 if t
 * is not a tuple or has more than max elements. */
int cn_term_tuple(cn_slice t, cn_slice *el, int max);

/* A list's elements: [] has none; a LIST_EXT gives its first elements (up
 * to max) in el. Returns the number of elements the list has (it may be
 * more than max: only max are filled), or -1 if s is not [] or a LIST_EXT
 * (a STRING_EXT is not read) or an element is malformed. With tail not
 * NULL, every element is walked and *tail is the term after the last one
 * ([] for a proper list; an empty slice for []). */
long cn_term_list(cn_slice s, cn_slice *el, size_t max, cn_slice *tail);

/* An atom's text (a view; not NUL-terminated). */
int cn_term_atom(cn_slice s, const char **name, size_t *len);
/* 1 if s is exactly the atom `name`, else 0. */
int cn_term_is_atom(cn_slice s, const char *name);
/* A pid (PID_EXT or NEW_PID_EXT); the node name is a view into s. */
int cn_term_pid(cn_slice s, cn_wpid *out);
/* A binary that fills s; *p points into s. */
int cn_term_binary(cn_slice s, const char **p, size_t *len);
/* A non-negative integer below 2^64 that fills s. */
int cn_term_u64(cn_slice s, uint64_t *out);
/* A term as text for a message, into buf (cap >= 1 bytes, always
 * terminated): a binary as it is, any other term printed in Erlang syntax,
 * either cut at cap - 1 bytes. */
void cn_term_text(cn_slice s, char *buf, size_t cap);

/* --------------------------------------------------------------- writers */

/* Append one term to x (made with ei_x_new); 0, or -1 when x cannot grow
 * or the term cannot be written. cn_enc_atom writes SMALL_ATOM_UTF8_EXT or
 * ATOM_UTF8_EXT (len <= 1020); cn_enc_pid writes NEW_PID_EXT. */
int cn_enc_atom(ei_x_buff *x, const char *name, size_t len);
int cn_enc_pid(ei_x_buff *x, const cn_wpid *p);

/* The bytes cn_term_ref writes for a node name of nlen bytes. */
#define CN_TERM_REF_LEN(nlen) (1 + 2 + 2 + (nlen) + 4 + 12)
/* A NEWER_REFERENCE_EXT of the node (nlen < 256 bytes) with creation and
 * three id words, into out[0..cap): its length, or 0 when it does not fit. */
size_t cn_term_ref(unsigned char *out, size_t cap, const char *node, size_t nlen,
                   uint32_t creation, const uint32_t id[3]);

/* The term in an ei_x_buff made with ei_x_new (no version byte). */
cn_slice cn_x_slice(const ei_x_buff *x);

/* Atom terms the node uses as exit reasons (static storage). */
cn_slice cn_atom_normal(void);
cn_slice cn_atom_shutdown(void);
cn_slice cn_atom_noproc(void);
cn_slice cn_atom_noconnection(void);
cn_slice cn_atom_killed(void);

#endif
