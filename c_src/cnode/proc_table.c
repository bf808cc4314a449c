/* proc_table.c - see proc_table.h. */
#include "proc_table.h"

#include <stdlib.h>
#include <string.h>

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

int cn_pt_init(cn_proc_table *pt, const char *local_name, uint32_t creation,
               size_t max_names)
{
    memset(pt, 0, sizeof *pt);
    pt->creation = creation;
    pt->next_id = 1;
    pt->max_names = max_names ? max_names : 65536;
    pt->nbuckets = 256;
    pt->buckets = calloc(pt->nbuckets, sizeof *pt->buckets);
    pt->local_name = strdup(local_name);
    if (!pt->buckets || !pt->local_name ||
        cn_pt_intern(pt, local_name, strlen(local_name)) != 0) {
        cn_pt_free(pt);
        return -1;
    }
    return 0;
}

static void free_mon(cn_mon *m)
{
    free(m->ref);
    free(m->target);
    free(m);
}

void cn_pt_free(cn_proc_table *pt)
{
    for (size_t b = 0; pt->buckets && b < pt->nbuckets; b++) {
        cn_proc *p = pt->buckets[b];
        while (p) {
            cn_proc *n = p->hnext;
            while (!cn_dl_empty(&p->links))
                cn_pt_link_del(pt, cn_dl_entry(p->links.next, cn_link, by_proc));
            while (!cn_dl_empty(&p->watchers))
                cn_pt_mon_del(pt, cn_dl_entry(p->watchers.next, cn_mon, by_proc));
            while (!cn_dl_empty(&p->watching))
                cn_pt_mon_del(pt, cn_dl_entry(p->watching.next, cn_mon, by_proc));
            cn_pt_release(p);
            p = n;
        }
    }
    free(pt->buckets);
    for (size_t i = 0; i < pt->nnames; i++)
        free(pt->names[i]);
    free(pt->names);
    free(pt->name_index);
    for (size_t i = 0; i < pt->nreg; i++)
        free(pt->reg[i].name);
    free(pt->reg);
    free(pt->local_name);
    memset(pt, 0, sizeof *pt);
}

static uint64_t name_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* (Re)builds the name index with `cap` slots. 0 or -1. */
static int index_build(cn_proc_table *pt, size_t cap)
{
    uint32_t *idx = calloc(cap, sizeof *idx);
    if (!idx)
        return -1;
    for (size_t i = 0; i < pt->nnames; i++) {
        size_t k = (size_t)name_hash(pt->names[i], strlen(pt->names[i])) & (cap - 1);
        while (idx[k])
            k = (k + 1) & (cap - 1);
        idx[k] = (uint32_t)i + 1;
    }
    free(pt->name_index);
    pt->name_index = idx;
    pt->index_cap = cap;
    return 0;
}

uint32_t cn_pt_intern(cn_proc_table *pt, const char *name, size_t len)
{
    if (pt->index_cap) {
        size_t k = (size_t)name_hash(name, len) & (pt->index_cap - 1);
        for (; pt->name_index[k]; k = (k + 1) & (pt->index_cap - 1)) {
            const char *n = pt->names[pt->name_index[k] - 1];
            if (strlen(n) == len && memcmp(n, name, len) == 0)
                return pt->name_index[k] - 1;
        }
    }
    if (pt->nnames >= pt->max_names || memchr(name, 0, len))
        return CN_NODE_NONE;
    if (2 * (pt->nnames + 1) >= pt->index_cap &&
        index_build(pt, pt->index_cap ? pt->index_cap * 2 : 64))
        return CN_NODE_NONE;
    if (pt->nnames == pt->cap_names) {
        size_t cap = pt->cap_names ? pt->cap_names * 2 : 16;
        char **n = realloc(pt->names, cap * sizeof *n);
        if (!n)
            return CN_NODE_NONE;
        pt->names = n;
        pt->cap_names = cap;
    }
    char *d = dupn(name, len);
    if (!d)
        return CN_NODE_NONE;
    uint32_t id = (uint32_t)pt->nnames;
    pt->names[pt->nnames++] = d;
    size_t k = (size_t)name_hash(name, len) & (pt->index_cap - 1);
    while (pt->name_index[k])
        k = (k + 1) & (pt->index_cap - 1);
    pt->name_index[k] = id + 1;
    return id;
}

const char *cn_pt_node_name(const cn_proc_table *pt, uint32_t id)
{
    return id < pt->nnames ? pt->names[id] : "";
}

int cn_pt_pid_from_wire(cn_proc_table *pt, const cn_wpid *w, cn_pid *out)
{
    uint32_t id = cn_pt_intern(pt, w->node, w->node_len);
    if (id == CN_NODE_NONE)
        return -1;
    out->node = id;
    out->num = w->num;
    out->serial = w->serial;
    out->creation = w->creation;
    return 0;
}

void cn_pt_pid_to_wire(const cn_proc_table *pt, const cn_pid *p, cn_wpid *out)
{
    out->node = cn_pt_node_name(pt, p->node);
    out->node_len = strlen(out->node);
    out->num = p->num;
    out->serial = p->serial;
    out->creation = p->creation;
}

void cn_pt_proc_wpid(const cn_proc_table *pt, const cn_proc *p, cn_wpid *out)
{
    out->node = pt->local_name;
    out->node_len = strlen(pt->local_name);
    out->num = (uint32_t)p->id;
    out->serial = (uint32_t)(p->id >> 32);
    out->creation = pt->creation;
}

int cn_pid_eq(const cn_pid *a, const cn_pid *b)
{
    return a->node == b->node && a->num == b->num && a->serial == b->serial &&
           a->creation == b->creation;
}

static size_t bucket(const cn_proc_table *pt, uint64_t id)
{
    uint64_t h = id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (pt->nbuckets - 1);
}

static void grow(cn_proc_table *pt)
{
    size_t nb = pt->nbuckets * 2;
    cn_proc **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* keep the old, longer chains */
    cn_proc **old = pt->buckets;
    size_t on = pt->nbuckets;
    pt->buckets = b;
    pt->nbuckets = nb;
    for (size_t i = 0; i < on; i++) {
        cn_proc *p = old[i];
        while (p) {
            cn_proc *n = p->hnext;
            size_t k = bucket(pt, p->id);
            p->hnext = b[k];
            b[k] = p;
            p = n;
        }
    }
    free(old);
}

cn_proc *cn_pt_spawn(cn_proc_table *pt)
{
    cn_proc *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->id = pt->next_id++;
    cn_dl_init(&p->links);
    cn_dl_init(&p->watchers);
    cn_dl_init(&p->watching);
    if (pt->nprocs + 1 > pt->nbuckets)
        grow(pt);
    size_t k = bucket(pt, p->id);
    p->hnext = pt->buckets[k];
    pt->buckets[k] = p;
    pt->nprocs++;
    return p;
}

cn_proc *cn_pt_find_id(const cn_proc_table *pt, uint64_t id)
{
    for (cn_proc *p = pt->buckets[bucket(pt, id)]; p; p = p->hnext)
        if (p->id == id)
            return p->dead ? NULL : p;
    return NULL;
}

cn_proc *cn_pt_find_wire(const cn_proc_table *pt, const cn_wpid *w)
{
    if (w->creation != pt->creation || w->node_len != strlen(pt->local_name) ||
        memcmp(w->node, pt->local_name, w->node_len) != 0)
        return NULL;
    return cn_pt_find_id(pt, (uint64_t)w->serial << 32 | w->num);
}

int cn_pt_register(cn_proc_table *pt, cn_proc *p, const char *name)
{
    if (p->name || cn_pt_whereis(pt, name, strlen(name)))
        return -1;
    if (pt->nreg == pt->cap_reg) {
        size_t cap = pt->cap_reg ? pt->cap_reg * 2 : 8;
        struct cn_regname *r = realloc(pt->reg, cap * sizeof *r);
        if (!r)
            return -2;
        pt->reg = r;
        pt->cap_reg = cap;
    }
    char *n = strdup(name);
    if (!n)
        return -2;
    pt->reg[pt->nreg].name = n;
    pt->reg[pt->nreg].proc = p;
    pt->nreg++;
    p->name = n;
    return 0;
}

cn_proc *cn_pt_whereis(const cn_proc_table *pt, const char *name, size_t len)
{
    for (size_t i = 0; i < pt->nreg; i++)
        if (strlen(pt->reg[i].name) == len && memcmp(pt->reg[i].name, name, len) == 0)
            return pt->reg[i].proc->dead ? NULL : pt->reg[i].proc;
    return NULL;
}

void cn_pt_remove(cn_proc_table *pt, cn_proc *p)
{
    for (size_t i = 0; i < pt->nreg; i++)
        if (pt->reg[i].proc == p) {
            free(pt->reg[i].name);
            pt->reg[i] = pt->reg[--pt->nreg];
            break;
        }
    p->name = NULL;
    cn_proc **pp = &pt->buckets[bucket(pt, p->id)];
    while (*pp && *pp != p)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = p->hnext;
        pt->nprocs--;
    }
    p->hnext = NULL;
    p->dead = 1;
}

void cn_pt_release(cn_proc *p) { free(p); }

cn_peer *cn_pt_peer_new(cn_proc_table *pt, uint32_t node, void *conn)
{
    (void)pt;
    cn_peer *peer = calloc(1, sizeof *peer);
    if (!peer)
        return NULL;
    peer->node = node;
    peer->conn = conn;
    cn_dl_init(&peer->links);
    cn_dl_init(&peer->mons);
    return peer;
}

void cn_pt_peer_free(cn_peer *peer) { free(peer); }

cn_link *cn_pt_link_find(const cn_proc *p, const cn_pid *remote)
{
    for (cn_dl *e = p->links.next; e != &p->links; e = e->next) {
        cn_link *l = cn_dl_entry(e, cn_link, by_proc);
        if (cn_pid_eq(&l->remote, remote))
            return l;
    }
    return NULL;
}

cn_link *cn_pt_link_add(cn_proc_table *pt, cn_proc *p, cn_peer *peer,
                        const cn_pid *remote)
{
    cn_link *l = cn_pt_link_find(p, remote);
    if (l)
        return l;
    l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->proc = p;
    l->peer = peer;
    l->remote = *remote;
    cn_dl_push(&p->links, &l->by_proc);
    cn_dl_push(&peer->links, &l->by_peer);
    peer->nlinks++;
    pt->nlinks++;
    return l;
}

void cn_pt_link_del(cn_proc_table *pt, cn_link *l)
{
    cn_dl_del(&l->by_proc);
    cn_dl_del(&l->by_peer);
    l->peer->nlinks--;
    pt->nlinks--;
    free(l);
}

cn_mon *cn_pt_mon_add(cn_proc_table *pt, int kind, cn_proc *p, cn_peer *peer,
                      const cn_pid *remote, cn_slice ref, cn_slice target)
{
    cn_mon *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->ref = malloc(ref.len ? ref.len : 1);
    m->target = malloc(target.len ? target.len : 1);
    if (!m->ref || !m->target) {
        free_mon(m);
        return NULL;
    }
    memcpy(m->ref, ref.p, ref.len);
    m->ref_len = ref.len;
    if (target.len)
        memcpy(m->target, target.p, target.len);
    m->target_len = target.len;
    m->kind = kind;
    m->proc = p;
    m->peer = peer;
    m->remote = *remote;
    cn_dl_push(kind == CN_MON_WATCHED_BY_REMOTE ? &p->watchers : &p->watching,
               &m->by_proc);
    cn_dl_push(&peer->mons, &m->by_peer);
    peer->nmons++;
    pt->nmons++;
    return m;
}

cn_mon *cn_pt_mon_find(const cn_peer *peer, int kind, cn_slice ref)
{
    /* newest first: a call's monitor is usually the last one added */
    for (cn_dl *e = peer->mons.prev; e != &peer->mons; e = e->prev) {
        cn_mon *m = cn_dl_entry(e, cn_mon, by_peer);
        if (m->kind == kind && m->ref_len == ref.len &&
            memcmp(m->ref, ref.p, ref.len) == 0)
            return m;
    }
    return NULL;
}

void cn_pt_mon_del(cn_proc_table *pt, cn_mon *m)
{
    cn_dl_del(&m->by_proc);
    cn_dl_del(&m->by_peer);
    m->peer->nmons--;
    pt->nmons--;
    free_mon(m);
}
