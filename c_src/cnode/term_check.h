/* term_check.h - bounds-checked validator for Erlang external term format.
 *
 * Owns nothing. Walks ONE encoded term (without the 131 version byte)
 * iteratively with an explicit stack and checks every length against the
 * bytes that remain, nesting depth, the number of terms, the total size and
 * atom lengths. Every tag BEAM can send over distribution is understood:
 * integers, floats (old and new), atoms (all four forms), pids (PID/NEW_PID),
 * ports (PORT/NEW_PORT/V4_PORT), references (NEW/NEWER), tuples, lists,
 * strings, binaries, bitstrings, bigs, maps, NEW_FUN and EXPORT.
 * ATOM_CACHE_REF, the removed FUN_EXT and LOCAL_EXT are rejected (we never
 * negotiate the atom cache). A term that passes is safe to hand to the
 * ei_decode_* functions: no decoder will read past `len`, and atoms fit
 * MAXATOMLEN_UTF8.
 */
#ifndef CN_TERM_CHECK_H
#define CN_TERM_CHECK_H

#include <stddef.h>
#include <stdint.h>

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

#endif
