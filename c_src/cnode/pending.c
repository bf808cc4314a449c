/* pending.c - see pending.h. */
#include "pending.h"

#include <stdlib.h>

struct cn_pending {
    cn_pending_entry **buckets;
    size_t nbuckets; /* 0 until the first entry */
    size_t count;
};

static size_t slot(size_t nbuckets, uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (nbuckets - 1);
}

cn_pending *cn_pending_new(void)
{
    return calloc(1, sizeof(cn_pending));
}

void cn_pending_free(cn_pending *t)
{
    if (!t)
        return;
    for (cn_pending_entry *e = cn_pending_detach(t, NULL); e;)
        e = cn_pending_entry_free(e);
    free(t->buckets);
    free(t);
}

static int grow(cn_pending *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 16;
    cn_pending_entry **nb = calloc(n, sizeof *nb);
    if (!nb)
        return -1;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (cn_pending_entry *e = t->buckets[i], *next; e; e = next) {
            next = e->next;
            size_t s = slot(n, e->id);
            e->next = nb[s];
            nb[s] = e;
        }
    }
    free(t->buckets);
    t->buckets = nb;
    t->nbuckets = n;
    return 0;
}

int cn_pending_add(cn_pending *t, uint64_t id, void *item, const void *owner)
{
    if (t->count >= t->nbuckets && grow(t) != 0 && t->nbuckets == 0)
        return -1; /* a full table that cannot grow still takes entries */
    cn_pending_entry *e = malloc(sizeof *e);
    if (!e)
        return -1;
    *e = (cn_pending_entry){NULL, id, item, owner};
    size_t s = slot(t->nbuckets, id);
    e->next = t->buckets[s];
    t->buckets[s] = e;
    t->count++;
    return 0;
}

cn_pending_entry *cn_pending_find(const cn_pending *t, uint64_t id)
{
    if (!t || t->count == 0)
        return NULL;
    for (cn_pending_entry *e = t->buckets[slot(t->nbuckets, id)]; e; e = e->next)
        if (e->id == id)
            return e;
    return NULL;
}

void *cn_pending_take(cn_pending *t, uint64_t id)
{
    if (!t || t->count == 0)
        return NULL;
    for (cn_pending_entry **pp = &t->buckets[slot(t->nbuckets, id)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            cn_pending_entry *e = *pp;
            void *item = e->item;
            *pp = e->next;
            t->count--;
            free(e);
            return item;
        }
    }
    return NULL;
}

/* Inserts e into the list *head kept in ascending id order. */
static void insert_by_id(cn_pending_entry **head, cn_pending_entry *e)
{
    while (*head && (*head)->id < e->id)
        head = &(*head)->next;
    e->next = *head;
    *head = e;
}

cn_pending_entry *cn_pending_detach(cn_pending *t, const void *owner)
{
    cn_pending_entry *out = NULL;
    if (!t || t->count == 0)
        return NULL;
    for (size_t i = 0; i < t->nbuckets; i++) {
        cn_pending_entry **pp = &t->buckets[i];
        while (*pp) {
            cn_pending_entry *e = *pp;
            if (owner && e->owner != owner) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            t->count--;
            insert_by_id(&out, e);
        }
    }
    return out;
}

cn_pending_entry *cn_pending_entry_free(cn_pending_entry *e)
{
    cn_pending_entry *next = e->next;
    free(e);
    return next;
}

size_t cn_pending_count(const cn_pending *t)
{
    return t ? t->count : 0;
}
