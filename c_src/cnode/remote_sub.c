/* remote_sub.c - see remote_sub.h.
 *
 * Two hash tables (hashtab.h): entries by (topic, pid) and pid records by
 * pid. A pid record holds the monitor on that pid and the list of its
 * entries, so a DOWN removes everything of the pid without a scan.
 */
#include "remote_sub.h"

#include <stdlib.h>
#include <string.h>

#include "event_term.h"
#include "hashtab.h"
#include "log.h"
#include "run_topic.h"

typedef struct pidrec pidrec;

typedef struct entry {
    cn_hlink hl;               /* in rs->entries */
    cn_dl by_pid;              /* in pidrec.entries */
    cn_rsubs *rs;
    pidrec *pr;
    council_subscription *sub; /* NULL once the core ended it */
    council_run *run;          /* the topic's own run, referenced from its
                                  first event (NULL: none seen, or a
                                  sub-council topic) */
    int flags;                 /* CN_RSUB_* */
    int cut;                   /* cut off: only terminal events go out */
    /* CN_RSUB_BATCHED: the events of this loop turn, encoded one after
     * the other, sent as one list at its end (rs->pending) */
    cn_dl in_pending;          /* linked while nbatch > 0 */
    unsigned char *batch;
    size_t batch_len, batch_cap;
    unsigned nbatch;
    size_t topic_len;
    char topic[];
} entry;

struct pidrec {
    cn_hlink hl;               /* in rs->pids */
    cn_pid pid;
    cn_dl entries;
    unsigned char ref[CN_NODE_REF_MAX];
    size_t ref_len;            /* 0: no monitor held */
};

struct cn_rsubs {
    cn_bridge *b;
    size_t max;                     /* entries in all */
    cn_htab entries;                /* entry by (topic, pid) */
    cn_htab pids;                   /* pidrec by pid */
    const council_event *cached_ev; /* referenced while cached */
    ei_x_buff cached;
    ei_x_buff tagged;               /* scratch for tagged sends */
    cn_dl pending;                  /* entries with a batch to send */
    struct flusher *fl;             /* sends them at the end of the turn */
};

/* The handles that send pending batches: after the poll phase (events
 * made by replies and I/O) and before it (events made by timers and idle
 * work), as the connections flush theirs. Allocated apart: they outlive
 * the table until their close callbacks. */
typedef struct flusher {
    uv_check_t check;
    uv_prepare_t prepare;
    cn_rsubs *rs;   /* NULL once the table is freed */
    int open;       /* handles not yet closed */
} flusher;

/* One batch message carries at most this many bytes of events (a turn
 * that makes more sends several, in order). */
#define BATCH_MAX_BYTES (64u * 1024)

static uint64_t pid_hash(const cn_pid *pid)
{
    return cn_fnv1a(pid, sizeof *pid, CN_FNV_BASIS);
}

static uint64_t entry_hash(const char *topic, size_t len, const cn_pid *pid)
{
    return cn_fnv1a(topic, len, pid_hash(pid));
}

cn_rsubs *cn_rsubs_new(cn_bridge *b, size_t max)
{
    cn_rsubs *rs = calloc(1, sizeof *rs);
    if (!rs)
        return NULL;
    rs->b = b;
    rs->max = max ? max : 1000000;
    if (cn_htab_init(&rs->entries, 64) || cn_htab_init(&rs->pids, 64) ||
        ei_x_new(&rs->cached)) {
        cn_htab_fini(&rs->entries);
        cn_htab_fini(&rs->pids);
        free(rs);
        return NULL;
    }
    rs->fl = calloc(1, sizeof *rs->fl);
    if (!rs->fl || ei_x_new(&rs->tagged)) {
        free(rs->fl);
        ei_x_free(&rs->cached);
        cn_htab_fini(&rs->entries);
        cn_htab_fini(&rs->pids);
        free(rs);
        return NULL;
    }
    uv_loop_t *loop = cn_node_loop(b->node);
    uv_check_init(loop, &rs->fl->check);
    uv_prepare_init(loop, &rs->fl->prepare);
    rs->fl->check.data = rs->fl->prepare.data = rs->fl;
    rs->fl->rs = rs;
    rs->fl->open = 2;
    cn_dl_init(&rs->pending);
    return rs;
}

static entry *entry_find(const cn_rsubs *rs, const char *topic, size_t len,
                         const cn_pid *pid)
{
    uint64_t h = entry_hash(topic, len, pid);
    for (cn_hlink *l = cn_htab_first(&rs->entries, h); l; l = cn_htab_next(l)) {
        entry *e = CN_HTAB_ENTRY(l, entry, hl);
        if (e->topic_len == len && cn_pid_eq(&e->pr->pid, pid) &&
            memcmp(e->topic, topic, len) == 0)
            return e;
    }
    return NULL;
}

static pidrec *pidrec_find(const cn_rsubs *rs, const cn_pid *pid)
{
    for (cn_hlink *l = cn_htab_first(&rs->pids, pid_hash(pid)); l; l = cn_htab_next(l)) {
        pidrec *pr = CN_HTAB_ENTRY(l, pidrec, hl);
        if (cn_pid_eq(&pr->pid, pid))
            return pr;
    }
    return NULL;
}

/* Unlink e from both tables and free it; ends the core subscription if it
 * is still live. Drops the pid record (and its monitor, if demonitor) when
 * it was the last entry. */
static void entry_drop(cn_rsubs *rs, entry *e, int demonitor)
{
    cn_htab_del(&rs->entries, &e->hl);
    if (e->sub)
        council_unsubscribe(rs->b->ctx, e->sub);
    council_run_unref(e->run);
    if (e->nbatch)
        cn_dl_del(&e->in_pending);
    free(e->batch);
    pidrec *pr = e->pr;
    cn_dl_del(&e->by_pid);
    free(e);
    if (cn_dl_empty(&pr->entries)) {
        cn_htab_del(&rs->pids, &pr->hl);
        if (demonitor && pr->ref_len && rs->b->service)
            cn_node_demonitor(rs->b->node, rs->b->service,
                              (cn_slice){pr->ref, pr->ref_len});
        free(pr);
    }
}

static const unsigned char *encoded(cn_rsubs *rs, const council_event *ev, size_t *len)
{
    if (rs->cached_ev != ev) {
        council_event_unref(rs->cached_ev);
        rs->cached_ev = NULL;
        rs->cached.index = 0;
        if (cn_event_term(&rs->cached, ev) != 0)
            return NULL;
        rs->cached_ev = council_event_ref(ev);
    }
    *len = (size_t)rs->cached.index;
    return (const unsigned char *)rs->cached.buff;
}

static void on_event(const council_event *ev, void *arg);
static void on_overflow(size_t dropped, void *arg);
static void keep_terminal(entry *e);

/* The topic is "council_ex:run:" <> the event's own run_id. */
static int is_own_run(const entry *e, const council_event *ev)
{
    return cn_is_run_topic(e->topic, e->topic_len, ev->run_id, ev->run_id_len);
}

static void cut_off(entry *e, size_t dropped);

/* Sends e's batch: {council_ex_events, Topic, [Event, ...]} in the order
 * the events came. */
static void flush_batch(entry *e)
{
    if (!e->nbatch)
        return;
    cn_dl_del(&e->in_pending);
    unsigned failed = 0;
    ei_x_buff *t = &e->rs->tagged;
    t->index = 0;
    if (ei_x_encode_tuple_header(t, 3) || ei_x_encode_atom(t, "council_ex_events") ||
        ei_x_encode_binary(t, e->topic, (long)e->topic_len) ||
        ei_x_encode_list_header(t, (long)e->nbatch) ||
        ei_x_append_buf(t, (const char *)e->batch, (int)e->batch_len) ||
        ei_x_encode_empty_list(t))
        failed = e->nbatch;
    else
        cn_node_send(e->rs->b->node, &e->pr->pid, cn_x_slice(t));
    e->nbatch = 0;
    e->batch_len = 0;
    if (e->batch_cap > BATCH_MAX_BYTES) { /* a large event: give it back */
        free(e->batch);
        e->batch = NULL;
        e->batch_cap = 0;
    }
    if (failed && !e->cut)  /* out of memory: never a silent gap */
        cut_off(e, failed);
}

static void flush_all(cn_rsubs *rs)
{
    uv_check_stop(&rs->fl->check);
    uv_prepare_stop(&rs->fl->prepare);
    while (!cn_dl_empty(&rs->pending))
        flush_batch(cn_dl_entry(rs->pending.next, entry, in_pending));
}

static void on_check(uv_check_t *h) { flush_all(((flusher *)h->data)->rs); }

/* In the prepare phase the connections' own prepare handles may have run
 * already: what the batches queued is written now, not after the poll. */
static void on_prepare(uv_prepare_t *h)
{
    cn_rsubs *rs = ((flusher *)h->data)->rs;
    flush_all(rs);
    cn_node_flush(rs->b->node);
}

/* Adds an encoded event to e's batch; -1 when out of memory. */
static int batch_add(entry *e, const unsigned char *p, size_t len)
{
    if (e->nbatch && e->batch_len + len > BATCH_MAX_BYTES)
        flush_batch(e);
    if (e->batch_len + len > e->batch_cap) {
        size_t cap = e->batch_cap ? e->batch_cap : 4096;
        while (cap < e->batch_len + len)
            cap *= 2;
        unsigned char *nb = realloc(e->batch, cap);
        if (!nb)
            return -1;
        e->batch = nb;
        e->batch_cap = cap;
    }
    memcpy(e->batch + e->batch_len, p, len);
    e->batch_len += len;
    if (e->nbatch++ == 0) {
        cn_rsubs *rs = e->rs;
        if (cn_dl_empty(&rs->pending)) {
            uv_check_start(&rs->fl->check, on_check);
            uv_prepare_start(&rs->fl->prepare, on_prepare);
        }
        cn_dl_push(&rs->pending, &e->in_pending);
    }
    return 0;
}

/* Sends an encoded event to e's pid: plain, wrapped for a tagged
 * subscriber, or into the batch of a batched one. -1 when out of memory. */
static int send_event(entry *e, const unsigned char *p, size_t len)
{
    if (e->flags & CN_RSUB_BATCHED)
        return batch_add(e, p, len);
    if (e->flags & CN_RSUB_TAGGED) {
        ei_x_buff *t = &e->rs->tagged;
        t->index = 0;
        if (ei_x_encode_tuple_header(t, 3) || ei_x_encode_atom(t, "council_ex_event") ||
            ei_x_encode_binary(t, e->topic, (long)e->topic_len) ||
            ei_x_append_buf(t, (const char *)p, (int)len))
            return -1;
        p = (const unsigned char *)t->buff;
        len = (size_t)t->index;
    }
    /* No connection to the pid's node: its monitor fires and cleans up. */
    cn_node_send(e->rs->b->node, &e->pr->pid, (cn_slice){p, len});
    return 0;
}

/* The terminal event of a run that has ended, made from the run itself:
 * the core dropped the published one with the events past the queue bound. */
static void send_late_terminal(entry *e)
{
    ei_x_buff x;
    if (ei_x_new(&x) != 0)
        return;
    if (cn_terminal_event_term(&x, e->run) != 0 ||
        send_event(e, (const unsigned char *)x.buff, (size_t)x.index) != 0)
        cn_log_error("the terminal event of a run could not be encoded");
    ei_x_free(&x);
}

static int run_ended(const council_run *run)
{
    council_status st = council_run_status(run);
    return st == COUNCIL_COMPLETED || st == COUNCIL_FAILED || st == COUNCIL_CANCELLED;
}

/* The subscriber is cut off (it fell behind, or memory ran out while an
 * event was prepared): it gets {council_ex_overflow, Topic, Dropped} once,
 * then only terminal events, so it still learns how the topic's run ends.
 * The subscription ends as before after the terminal event of the topic's
 * own run; a sub-council topic's lasts until unsubscribed. When the core
 * has ended the subscription already (its queue bound), it is made again;
 * if the run ended meanwhile, its terminal event is sent now. */
static void cut_off(entry *e, size_t dropped)
{
    cn_rsubs *rs = e->rs;
    cn_log_warn("subscriber fell %zu events behind on %.*s: cut off", dropped,
                (int)e->topic_len, e->topic);
    flush_batch(e); /* what went before the notice */
    ei_x_buff x;
    if (ei_x_new(&x) == 0) {
        if (ei_x_encode_tuple_header(&x, 3) == 0 &&
            ei_x_encode_atom(&x, "council_ex_overflow") == 0 &&
            ei_x_encode_binary(&x, e->topic, (long)e->topic_len) == 0 &&
            ei_x_encode_ulonglong(&x, dropped) == 0)
            cn_node_send(rs->b->node, &e->pr->pid, cn_x_slice(&x));
        ei_x_free(&x);
    }
    e->cut = 1;
    keep_terminal(e);
}

/* A cut-off entry whose core subscription may have ended: subscribe again
 * for the terminal event, or send it now if the run has ended already. */
static void keep_terminal(entry *e)
{
    cn_rsubs *rs = e->rs;
    if (e->sub)
        return;
    if (e->run && run_ended(e->run)) {
        send_late_terminal(e);
        flush_batch(e);
        entry_drop(rs, e, 1);
        return;
    }
    if (council_subscribe(rs->b->ctx, e->topic, e->topic_len, on_event, on_overflow, e,
                          &e->sub) != 0) {
        e->sub = NULL;
        entry_drop(rs, e, 1);
    }
}

static void on_event(const council_event *ev, void *arg)
{
    entry *e = arg;
    int own = is_own_run(e, ev);
    if (own && !e->run)
        e->run = council_run_ref(ev->run);
    int terminal = council_event_is_terminal(ev);
    if (e->cut && !terminal)
        return;
    size_t len;
    const unsigned char *p = encoded(e->rs, ev, &len);
    /* A subscriber whose connection holds more than its bound is cut off;
     * terminal events always go (max_outq bounds the connection). */
    if (p && !terminal && cn_node_backlogged(e->rs->b->node, &e->pr->pid, len)) {
        cut_off(e, 1);
        return;
    }
    if (!p || send_event(e, p, len) != 0) {
        cn_log_error("event %s of a run could not be encoded",
                     council_event_type_name(ev->type));
        if (!e->cut)
            cut_off(e, 1); /* rather than skip an event in mid-stream */
        else if (terminal && own)
            entry_drop(e->rs, e, 1);
        return;
    }
    /* Nothing follows the terminal event of the topic's own run: end the
     * subscription so long-lived subscribers do not pile up entries. A
     * sub-council topic sees one nested run per member call, so it stays. */
    if (terminal && own) {
        flush_batch(e);
        entry_drop(e->rs, e, 1);
    }
}

static void on_overflow(size_t dropped, void *arg)
{
    entry *e = arg;
    e->sub = NULL; /* the core already ended it */
    if (e->cut)    /* told already: only the terminal event is awaited */
        keep_terminal(e);
    else
        cut_off(e, dropped);
}

bool cn_rsubs_has(const cn_rsubs *rs, const char *topic, size_t len, const cn_pid *pid)
{
    return topic && entry_find(rs, topic, len, pid) != NULL;
}

int cn_rsubs_add(cn_rsubs *rs, const char *topic, size_t len, const cn_pid *pid,
                 int flags)
{
    if (!topic || len == 0)
        return COUNCIL_EINVAL;
    if (entry_find(rs, topic, len, pid))
        return 0;
    if (rs->entries.n >= rs->max)
        return COUNCIL_ELIMIT;
    pidrec *pr = pidrec_find(rs, pid);
    int new_pr = 0;
    if (!pr) {
        pr = calloc(1, sizeof *pr);
        if (!pr)
            return COUNCIL_ENOMEM;
        pr->pid = *pid;
        cn_dl_init(&pr->entries);
        if (pid->node != 0) { /* a remote pid: watch it */
            pr->ref_len = sizeof pr->ref;
            if (cn_node_monitor(rs->b->node, rs->b->service, pid, pr->ref, &pr->ref_len)) {
                free(pr);
                return COUNCIL_EIO;
            }
        }
        new_pr = 1;
    }
    entry *e = calloc(1, sizeof *e + len + 1);
    int rc = COUNCIL_ENOMEM;
    if (e) {
        e->rs = rs;
        e->pr = pr;
        e->flags = flags;
        e->topic_len = len;
        memcpy(e->topic, topic, len);
        rc = council_subscribe(rs->b->ctx, topic, len, on_event, on_overflow, e, &e->sub);
    }
    if (rc != 0) {
        free(e);
        if (new_pr) {
            if (pr->ref_len)
                cn_node_demonitor(rs->b->node, rs->b->service, (cn_slice){pr->ref, pr->ref_len});
            free(pr);
        }
        return rc;
    }
    if (new_pr)
        cn_htab_add(&rs->pids, &pr->hl, pid_hash(pid));
    cn_dl_push(&pr->entries, &e->by_pid);
    cn_htab_add(&rs->entries, &e->hl, entry_hash(topic, len, pid));
    return 0;
}

int cn_rsubs_remove(cn_rsubs *rs, const char *topic, size_t len, const cn_pid *pid)
{
    entry *e = entry_find(rs, topic, len, pid);
    if (!e)
        return COUNCIL_ENOTFOUND;
    entry_drop(rs, e, 1);
    return 0;
}

void cn_rsubs_pid_down(cn_rsubs *rs, const cn_pid *pid)
{
    pidrec *pr = pidrec_find(rs, pid);
    if (!pr)
        return;
    pr->ref_len = 0; /* the monitor is gone already */
    while (!cn_dl_empty(&pr->entries)) {
        entry *e = cn_dl_entry(pr->entries.next, entry, by_pid);
        int last = e->by_pid.next == &pr->entries;
        entry_drop(rs, e, 0);
        if (last)
            break; /* pr was freed with its last entry */
    }
}

size_t cn_rsubs_count(const cn_rsubs *rs)
{
    return rs->entries.n;
}

static void on_flusher_closed(uv_handle_t *h)
{
    flusher *fl = h->data;
    if (--fl->open == 0)
        free(fl);
}

void cn_rsubs_free(cn_rsubs *rs)
{
    if (!rs)
        return;
    flush_all(rs); /* the node's connections are flushed after this */
    for (cn_hlink *l = cn_htab_take_all(&rs->entries), *next; l; l = next) {
        next = l->next;
        entry *e = CN_HTAB_ENTRY(l, entry, hl);
        if (e->sub)
            council_unsubscribe(rs->b->ctx, e->sub);
        council_run_unref(e->run);
        free(e->batch); /* unsent: the table goes with the service */
        free(e);
    }
    for (cn_hlink *l = cn_htab_take_all(&rs->pids), *next; l; l = next) {
        next = l->next;
        free(CN_HTAB_ENTRY(l, pidrec, hl));
    }
    council_event_unref(rs->cached_ev);
    ei_x_free(&rs->cached);
    ei_x_free(&rs->tagged);
    rs->fl->rs = NULL;
    uv_close((uv_handle_t *)&rs->fl->check, on_flusher_closed);
    uv_close((uv_handle_t *)&rs->fl->prepare, on_flusher_closed);
    cn_htab_fini(&rs->entries);
    cn_htab_fini(&rs->pids);
    free(rs);
}
