/* hashtab.h - an intrusive chained hash table, for the hosts of the core
 * (the C node and the NIF build it: see the Makefile's NIF_CNODE_OBJ).
 *
 * A record that lives in a table embeds a cn_hlink; the table keeps the
 * links, chained per bucket, with each one's hash, and never allocates or
 * frees a record. Keys are the caller's: a lookup walks the links whose
 * hash matches (cn_htab_first / cn_htab_next) and compares the record's
 * own key. The bucket array doubles once the table holds as many links as
 * it has buckets; when that allocation fails the table stays as it is
 * (only slower), so adding never fails.
 * Not thread-safe: a table shared between threads is the caller's to lock.
 */
#ifndef CN_HASHTAB_H
#define CN_HASHTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct cn_hlink {
    struct cn_hlink *next; /* in its bucket; in cn_htab_take_all's list */
    uint64_t hash;
} cn_hlink;

typedef struct cn_htab {
    cn_hlink **b;
    size_t nb;             /* buckets: a power of two */
    size_t n;              /* links in the table */
} cn_htab;

/* The record that holds link l as its member field. */
#define CN_HTAB_ENTRY(l, type, field) ((type *)(void *)((char *)(l)-offsetof(type, field)))

/* FNV-1a over len bytes of p, continuing from h (CN_FNV_BASIS to start):
 * chain calls to hash a key made of several parts. */
#define CN_FNV_BASIS 0xcbf29ce484222325ULL
uint64_t cn_fnv1a(const void *p, size_t len, uint64_t h);

/* An empty table of nbuckets buckets (a power of two, at least 1).
 * 0, or -1 when out of memory (then t owns nothing). */
int cn_htab_init(cn_htab *t, size_t nbuckets);
/* Frees the bucket array, not the records (empty the table first, e.g.
 * with cn_htab_take_all). A zeroed or already finished t is a no-op. */
void cn_htab_fini(cn_htab *t);

/* Adds l under hash (l must not be in a table). A key may be added twice;
 * lookups then see the later one first. */
void cn_htab_add(cn_htab *t, cn_hlink *l, uint64_t hash);
/* Removes l, which must be in t. */
void cn_htab_del(cn_htab *t, cn_hlink *l);

/* The first link added under hash still in t (the latest added first),
 * or NULL; cn_htab_next gives the one after l with l's hash. Only the
 * hash is matched: compare the record's key. Adding to or removing from t
 * while walking ends the walk's validity (remove the link found, then
 * stop). */
static inline cn_hlink *cn_htab_first(const cn_htab *t, uint64_t hash);
static inline cn_hlink *cn_htab_next(const cn_hlink *l);

/* Empties t and returns all its links chained through next (NULL when t
 * was empty), in no particular order: for freeing every record. t keeps
 * its buckets and stays usable. */
cn_hlink *cn_htab_take_all(cn_htab *t);

/* Every link of t in turn, in no particular order, as l (a cn_hlink *):
 * t must not change during the walk, and `break` leaves only the walk of
 * the current bucket. */
#define CN_HTAB_EACH(t, l)                                           \
    for (size_t cn_htab_i_ = 0; cn_htab_i_ < (t)->nb; cn_htab_i_++) \
        for (cn_hlink *l = (t)->b[cn_htab_i_]; l; l = l->next)

/* ---- inline, as lookups run on hot paths (the NIF's schedulers) ---- */

/* The bucket of hash among nb: both halves of the hash choose it (FNV
 * mixes into the low bits, a multiplicative hash into the high ones). */
static inline size_t cn_htab_bucket_(uint64_t hash, size_t nb)
{
    return (size_t)(hash ^ (hash >> 32)) & (nb - 1);
}

static inline cn_hlink *cn_htab_same_hash_(cn_hlink *l, uint64_t hash)
{
    while (l && l->hash != hash)
        l = l->next;
    return l;
}

static inline cn_hlink *cn_htab_first(const cn_htab *t, uint64_t hash)
{
    return t->nb ? cn_htab_same_hash_(t->b[cn_htab_bucket_(hash, t->nb)], hash) : NULL;
}

static inline cn_hlink *cn_htab_next(const cn_hlink *l)
{
    return cn_htab_same_hash_(l->next, l->hash);
}

#endif
