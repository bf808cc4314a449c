/* hashtab.c - see hashtab.h. */
#include "hashtab.h"

#include <stdlib.h>

uint64_t cn_fnv1a(const void *p, size_t len, uint64_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int cn_htab_init(cn_htab *t, size_t nbuckets)
{
    t->n = 0;
    t->nb = nbuckets;
    t->b = calloc(nbuckets, sizeof *t->b);
    if (!t->b) {
        t->nb = 0;
        return -1;
    }
    return 0;
}

void cn_htab_fini(cn_htab *t)
{
    free(t->b);
    t->b = NULL;
    t->nb = t->n = 0;
}

static void grow(cn_htab *t)
{
    size_t nn = t->nb * 2;
    cn_hlink **nb = calloc(nn, sizeof *nb);
    if (!nb)
        return; /* only slower */
    for (size_t i = 0; i < t->nb; i++) {
        for (cn_hlink *l = t->b[i], *next; l; l = next) {
            next = l->next;
            size_t k = cn_htab_bucket_(l->hash, nn);
            l->next = nb[k];
            nb[k] = l;
        }
    }
    free(t->b);
    t->b = nb;
    t->nb = nn;
}

void cn_htab_add(cn_htab *t, cn_hlink *l, uint64_t hash)
{
    size_t k = cn_htab_bucket_(hash, t->nb);
    l->hash = hash;
    l->next = t->b[k];
    t->b[k] = l;
    if (++t->n >= t->nb)
        grow(t);
}

void cn_htab_del(cn_htab *t, cn_hlink *l)
{
    for (cn_hlink **pp = &t->b[cn_htab_bucket_(l->hash, t->nb)]; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            l->next = NULL;
            t->n--;
            return;
        }
    }
}

cn_hlink *cn_htab_take_all(cn_htab *t)
{
    cn_hlink *all = NULL;
    for (size_t i = 0; i < t->nb; i++) {
        for (cn_hlink *l = t->b[i], *next; l; l = next) {
            next = l->next;
            l->next = all;
            all = l;
        }
        t->b[i] = NULL;
    }
    t->n = 0;
    return all;
}
