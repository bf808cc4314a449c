/* dlist.h - an intrusive doubly linked list with a head node, for the hosts
 * of the core (the C node's process table and subscriptions, the NIF's
 * runs and beam calls). A record embeds a cn_dl; a head is a cn_dl whose
 * neighbours are itself when empty. Header only; not thread-safe. */
#ifndef CN_DLIST_H
#define CN_DLIST_H

#include <stddef.h>

typedef struct cn_dl {
    struct cn_dl *prev, *next;
} cn_dl;

/* An empty list (or an unlinked node, which cn_dl_del leaves as one). */
static inline void cn_dl_init(cn_dl *h) { h->prev = h->next = h; }
static inline int cn_dl_empty(const cn_dl *h) { return h->next == h; }
/* e at the end of h. */
static inline void cn_dl_push(cn_dl *h, cn_dl *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}
/* e out of its list, left unlinked. */
static inline void cn_dl_del(cn_dl *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
}
/* Every entry of from, in order, moved to to, which becomes a list of
 * them (what it held is dropped: pass an unused head); from is left
 * empty. For walks whose steps may put entries back on from. */
static inline void cn_dl_take_all(cn_dl *to, cn_dl *from)
{
    if (cn_dl_empty(from)) {
        cn_dl_init(to);
        return;
    }
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    cn_dl_init(from);
}
/* The record of type that holds ptr as its member. */
#define cn_dl_entry(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
