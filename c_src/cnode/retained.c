/* retained.c - see retained.h. Entries sit on a list in the order their
 * processes ended (the order the core retains their runs in), indexed by
 * pid id in a pending.h table. */
#include "retained.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pending.h"
#include "proc_table.h"

typedef struct entry {
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
    size_t max;
    cn_dl order;
    cn_pending *index;    /* pid id -> entry */
};

cn_retained *cn_retained_new(council_ctx *ctx, size_t max)
{
    cn_retained *r = calloc(1, sizeof *r);
    if (!r || !(r->index = cn_pending_new())) {
        free(r);
        return NULL;
    }
    r->ctx = ctx;
    r->max = max ? max : 100000;
    cn_dl_init(&r->order);
    return r;
}

static void drop(cn_retained *r, entry *e)
{
    cn_pending_take(r->index, e->pid_id);
    cn_dl_del(&e->order);
    free(e);
}

void cn_retained_free(cn_retained *r)
{
    if (!r)
        return;
    while (!cn_dl_empty(&r->order))
        drop(r, cn_dl_entry(r->order.next, entry, order));
    cn_pending_free(r->index);
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

void cn_retained_add(cn_retained *r, uint64_t pid_id, const council_run *run)
{
    /* the oldest whose runs have left retention, and beyond max */
    while (!cn_dl_empty(&r->order)) {
        entry *old = cn_dl_entry(r->order.next, entry, order);
        if (cn_pending_count(r->index) < r->max && still_retained(r, old))
            break;
        drop(r, old);
    }
    size_t id_len;
    const char *id = council_run_id(run, &id_len);
    const char *registry = council_run_registry(run);
    size_t reg_len = strlen(registry);
    entry *e = malloc(sizeof *e + id_len + 1 + reg_len + 1);
    if (e) {
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
    }
    if (!e || cn_pending_add(r->index, pid_id, e, NULL) != 0) {
        free(e);
        cn_log_error("out of memory: an ended run's pid is not remembered");
        return;
    }
    cn_dl_push(&r->order, &e->order);
}

council_run *cn_retained_find(cn_retained *r, uint64_t pid_id)
{
    cn_pending_entry *i = cn_pending_find(r->index, pid_id);
    if (!i)
        return NULL;
    council_run *run = still_retained(r, i->item);
    if (!run)
        drop(r, i->item);
    return run;
}

size_t cn_retained_count(const cn_retained *r)
{
    return r ? cn_pending_count(r->index) : 0;
}
