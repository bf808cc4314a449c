/* retained.c - see retained.h. Entries sit on a list in the order their
 * processes ended (the order the core retains their runs in) and in a
 * chained hash table by pid id. */
#include "retained.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proc_table.h"

typedef struct entry {
    struct entry *hnext;  /* hash chain */
    cn_dl order;          /* oldest first */
    uint64_t pid_id;
    uintptr_t run;        /* the run's address while it lived: identity only */
    int64_t started_at_us;
    char *registry;       /* points into id_and_registry */
    size_t id_len;
    char id_and_registry[]; /* run id bytes, NUL, registry, NUL */
} entry;

struct cn_retained {
    council_ctx *ctx;
    size_t max, count;
    cn_dl order;
    entry **buckets;
    size_t nbuckets;      /* a power of two */
};

static size_t slot_in(size_t nbuckets, uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (nbuckets - 1);
}

static size_t slot(const cn_retained *r, uint64_t id)
{
    return slot_in(r->nbuckets, id);
}

cn_retained *cn_retained_new(council_ctx *ctx, size_t max)
{
    cn_retained *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->ctx = ctx;
    r->max = max ? max : 100000;
    r->nbuckets = 64;
    r->buckets = calloc(r->nbuckets, sizeof *r->buckets);
    if (!r->buckets) {
        free(r);
        return NULL;
    }
    cn_dl_init(&r->order);
    return r;
}

static void unlink_entry(cn_retained *r, entry *e)
{
    for (entry **pp = &r->buckets[slot(r, e->pid_id)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    cn_dl_del(&e->order);
    r->count--;
    free(e);
}

void cn_retained_free(cn_retained *r)
{
    if (!r)
        return;
    while (!cn_dl_empty(&r->order))
        unlink_entry(r, cn_dl_entry(r->order.next, entry, order));
    free(r->buckets);
    free(r);
}

/* The run of e, if the core still retains that very run. */
static council_run *still_retained(cn_retained *r, const entry *e)
{
    council_run *run = NULL;
    if (council_run_find(r->ctx, e->registry, e->id_and_registry, e->id_len, &run) != 0 ||
        (uintptr_t)run != e->run)
        return NULL;
    council_summary s;
    council_run_summary(run, &s);
    return s.started_at_us == e->started_at_us ? run : NULL;
}

/* Doubles the buckets when the entries outnumber them (failure to grow
 * only costs speed). */
static void grow(cn_retained *r)
{
    if (r->count < r->nbuckets)
        return;
    size_t n = r->nbuckets * 2;
    entry **nb = calloc(n, sizeof *nb);
    if (!nb)
        return;
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (entry *e = r->buckets[i], *next; e; e = next) {
            next = e->hnext;
            size_t h = slot_in(n, e->pid_id);
            e->hnext = nb[h];
            nb[h] = e;
        }
    }
    free(r->buckets);
    r->buckets = nb;
    r->nbuckets = n;
}

void cn_retained_add(cn_retained *r, uint64_t pid_id, const council_run *run)
{
    /* the oldest whose runs have left retention, and beyond max */
    while (!cn_dl_empty(&r->order)) {
        entry *old = cn_dl_entry(r->order.next, entry, order);
        if (r->count < r->max && still_retained(r, old))
            break;
        unlink_entry(r, old);
    }
    size_t id_len;
    const char *id = council_run_id(run, &id_len);
    const char *registry = council_run_registry(run);
    size_t reg_len = strlen(registry);
    entry *e = malloc(sizeof *e + id_len + 1 + reg_len + 1);
    if (!e) {
        cn_log_error("out of memory: an ended run's pid is not remembered");
        return;
    }
    council_summary s;
    council_run_summary(run, &s);
    e->pid_id = pid_id;
    e->run = (uintptr_t)run;
    e->started_at_us = s.started_at_us;
    e->id_len = id_len;
    memcpy(e->id_and_registry, id, id_len);
    e->id_and_registry[id_len] = 0;
    e->registry = e->id_and_registry + id_len + 1;
    memcpy(e->registry, registry, reg_len + 1);
    size_t h = slot(r, pid_id);
    e->hnext = r->buckets[h];
    r->buckets[h] = e;
    cn_dl_push(&r->order, &e->order);
    r->count++;
    grow(r);
}

council_run *cn_retained_find(cn_retained *r, uint64_t pid_id)
{
    for (entry *e = r->buckets[slot(r, pid_id)]; e; e = e->hnext) {
        if (e->pid_id != pid_id)
            continue;
        council_run *run = still_retained(r, e);
        if (!run)
            unlink_entry(r, e);
        return run;
    }
    return NULL;
}

size_t cn_retained_count(const cn_retained *r)
{
    return r ? r->count : 0;
}
