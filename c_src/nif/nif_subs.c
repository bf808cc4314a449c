/* nif_subs.c - run events to local pids (see nif.h).
 *
 * What it is for: the NIF's side of docs/protocol.md "Events": one core
 * subscription per (topic, pid), the event sent to the pid with enif_send
 * straight from whoever drives the core, and the subscriber watched with a
 * resource monitor (one per pid) so that a subscriber that dies is
 * unsubscribed from everything at once.
 * Modes: plain (the C node's tuple, names as binaries), tagged
 * ({council_ex_event, Topic, Event}, as the C node's tagged subscribers
 * get them) and lib (what the library's subscribers get from its relay
 * over distribution: round names and councils as existing atoms, see
 * CouncilEx.Wire.event/1), so no relay process is needed.
 * A subscription to a run's own topic ends after that run's terminal event;
 * a sub-council topic stays until unsubscribed or the pid goes. A
 * subscriber that falls more than the core's queue bound behind is cut off
 * and told once: {council_ex_overflow, Topic, Dropped}; then it gets only
 * terminal events (the run's own, rebuilt from the run if the core's queue
 * had dropped it), as the C node's subscribers do.
 *
 * Two hash tables (hashtab.h), as the C node's remote_sub.c: entries by
 * (topic, pid), pid records by pid. A pid record is a resource object (it holds
 * the monitor); the table keeps one reference on it while it has entries.
 * Under the drive lock only (nif.h), except the monitor's down callback (which queues).
 * An event's term is made once and copied to each pid (enif_send with no
 * message env copies): see the cache below.
 */
#include <string.h>

#include "event_term.h"
#include "hashtab.h"
#include "nif.h"
#include "run_topic.h"

typedef struct pidrec pidrec;

typedef struct entry {
    cn_hlink hl;               /* in s->entries */
    cn_dl by_pid;              /* in pidrec.entries */
    nif_subs *s;
    pidrec *pr;
    council_subscription *sub; /* NULL once the core ended it */
    council_run *run;          /* the topic's own run, once an event named it */
    int mode;
    int cut;                   /* told of an overflow: terminal events only */
    size_t topic_len;
    char topic[];
} entry;

struct pidrec {
    nif_state *st;             /* for the down callback */
    cn_hlink hl;               /* in s->pids */
    ErlNifPid pid;
    cn_dl entries;
    ErlNifMonitor mon;
    int monitored;
    int in_table;
};

/* The terms of one event, made once for all the subscribers it goes to.
 * The core delivers in turns of up to 256 events per subscriber, one
 * subscriber after the other, so the cache holds many events: a slot per
 * (run, seq), direct-mapped; a slot's event is referenced while it is
 * cached. The terms live in one of two envs taken in turn ("generations"
 * of NCACHE / 2 events made): a new generation clears the env of the one
 * before last, whose slots are stale from then on, so a term lives for
 * at least NCACHE / 2 events made after it and the cache keeps two envs
 * whatever it has held (an env per slot kept ~3 KB per slot used: 3 MB a
 * shard). */
#define NCACHE 1024
typedef struct cslot {
    const council_event *ev;
    uint64_t gen;      /* the generation its terms were made in */
    ERL_NIF_TERM plain, lib;
    nif_ob_memo ob[2]; /* the outbox's copies of plain and lib */
} cslot;

struct nif_subs {
    nif_state *st;
    size_t max;
    cn_htab entries;           /* entry by (topic, pid) */
    cn_htab pids;              /* pidrec by pid */
    ErlNifEnv *genv[2];        /* generation g's terms: genv[g & 1] */
    uint64_t gen;              /* the current generation (from 2) */
    unsigned made;             /* events made in it */
    cslot cache[NCACHE];
};

/* A local pid is an immediate term: its bits name it. */
static uint64_t pid_hash(const ErlNifPid *pid)
{
    uint64_t v = (uint64_t)pid->pid;
    return cn_fnv1a(&v, sizeof v, CN_FNV_BASIS);
}

static uint64_t entry_hash(const char *topic, size_t len, const ErlNifPid *pid)
{
    return cn_fnv1a(topic, len, pid_hash(pid));
}

static int same_pid(const ErlNifPid *a, const ErlNifPid *b)
{
    return enif_compare_pids(a, b) == 0;
}

nif_subs *nif_subs_new(nif_state *st, size_t max)
{
    nif_subs *s = enif_alloc(sizeof *s);
    if (!s)
        return NULL;
    memset(s, 0, sizeof *s);
    s->st = st;
    s->max = max ? max : 1000000;
    s->gen = 2; /* a slot never used (gen 0) is stale */
    if (cn_htab_init(&s->entries, 64) || cn_htab_init(&s->pids, 64) ||
        !(s->genv[0] = enif_alloc_env()) || !(s->genv[1] = enif_alloc_env())) {
        nif_subs_free(s);
        return NULL;
    }
    return s;
}

static entry *entry_find(const nif_subs *s, const char *topic, size_t len,
                         const ErlNifPid *pid)
{
    uint64_t h = entry_hash(topic, len, pid);
    for (cn_hlink *l = cn_htab_first(&s->entries, h); l; l = cn_htab_next(l)) {
        entry *e = CN_HTAB_ENTRY(l, entry, hl);
        if (e->topic_len == len && same_pid(&e->pr->pid, pid) &&
            memcmp(e->topic, topic, len) == 0)
            return e;
    }
    return NULL;
}

static pidrec *pidrec_find(const nif_subs *s, const ErlNifPid *pid)
{
    for (cn_hlink *l = cn_htab_first(&s->pids, pid_hash(pid)); l; l = cn_htab_next(l)) {
        pidrec *pr = CN_HTAB_ENTRY(l, pidrec, hl);
        if (same_pid(&pr->pid, pid))
            return pr;
    }
    return NULL;
}

/* The pid record leaves the table: its monitor goes (when demonitor), and
 * the table's reference with it. */
static void pidrec_drop(nif_subs *s, pidrec *pr, int demonitor)
{
    cn_htab_del(&s->pids, &pr->hl);
    pr->in_table = 0;
    if (demonitor && pr->monitored)
        enif_demonitor_process(s->st->cur, pr, &pr->mon);
    pr->monitored = 0;
    enif_release_resource(pr);
}

/* Frees e, out of s->entries already (its core subscription too, unless
 * the core ended it). */
static void entry_release(nif_subs *s, entry *e, int demonitor)
{
    if (e->sub && s->st->ctx)
        council_unsubscribe(s->st->ctx, e->sub);
    pidrec *pr = e->pr;
    cn_dl_del(&e->by_pid);
    council_run_unref(e->run);
    enif_free(e);
    if (cn_dl_empty(&pr->entries))
        pidrec_drop(s, pr, demonitor);
}

/* Removes e and frees it. */
static void entry_drop(nif_subs *s, entry *e, int demonitor)
{
    cn_htab_del(&s->entries, &e->hl);
    entry_release(s, e, demonitor);
}

void nif_subs_free(nif_subs *s)
{
    if (!s)
        return;
    for (cn_hlink *l = cn_htab_take_all(&s->entries), *next; l; l = next) {
        next = l->next;
        entry_release(s, CN_HTAB_ENTRY(l, entry, hl), 1);
    }
    for (size_t i = 0; i < NCACHE; i++)
        council_event_unref(s->cache[i].ev);
    for (int i = 0; i < 2; i++)
        if (s->genv[i])
            enif_free_env(s->genv[i]);
    cn_htab_fini(&s->entries);
    cn_htab_fini(&s->pids);
    enif_free(s);
}

/* ------------------------------------------------------------ events */

/* The value of key in map, or nil. */
static ERL_NIF_TERM get_or_nil(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key)
{
    ERL_NIF_TERM v;
    return enif_get_map_value(env, map, key, &v) ? v : A.nil;
}

/* %CouncilEx.Error{} (lib/council_ex/error.ex), as CouncilEx.Wire makes it. */
static ERL_NIF_TERM error_struct(ErlNifEnv *env, ERL_NIF_TERM kind, ERL_NIF_TERM message,
                                 ERL_NIF_TERM member_id, ERL_NIF_TERM round_name,
                                 ERL_NIF_TERM context)
{
    ERL_NIF_TERM keys[] = {A.struct_,    A.kind,   A.message, A.member_id,
                           A.round_name, A.reason, A.context, A.stacktrace};
    ERL_NIF_TERM vals[] = {A.error_module, kind,  message, member_id,
                           round_name,     A.nil, context, A.nil};
    ERL_NIF_TERM out;
    return enif_make_map_from_arrays(env, keys, vals, 8, &out) ? out : A.nil;
}

/* A member result of round round_name with its error (a binary) as a
 * %CouncilEx.Error{} (CouncilEx.Wire.member_result/2). */
static ERL_NIF_TERM lib_member(ErlNifEnv *env, ERL_NIF_TERM m, ERL_NIF_TERM round_name)
{
    ERL_NIF_TERM message, context, out;
    if (!enif_get_map_value(env, m, A.error, &message) || !enif_is_binary(env, message))
        return m;
    ERL_NIF_TERM keys[] = {A.status_, A.attempts};
    ERL_NIF_TERM vals[] = {get_or_nil(env, m, A.status_), get_or_nil(env, m, A.attempts)};
    if (!enif_make_map_from_arrays(env, keys, vals, 2, &context))
        return m;
    ERL_NIF_TERM e = error_struct(env, get_or_nil(env, m, A.error_kind), message,
                                  get_or_nil(env, m, A.member_id), round_name, context);
    return enif_make_map_update(env, m, A.error, e, &out) ? out : m;
}

/* The items of a list, each through f(env, item, arg), as a new list
 * (the list itself when it is not one or out of memory). */
static ERL_NIF_TERM map_list(ErlNifEnv *env, ERL_NIF_TERM list,
                             ERL_NIF_TERM (*f)(ErlNifEnv *, ERL_NIF_TERM, ERL_NIF_TERM),
                             ERL_NIF_TERM arg)
{
    ERL_NIF_TERM head, tail;
    unsigned n;
    if (!enif_get_list_length(env, list, &n))
        return list;
    ERL_NIF_TERM *items = enif_alloc(sizeof *items * (n ? n : 1));
    if (!items)
        return list;
    unsigned k = 0;
    for (tail = list; k < n && enif_get_list_cell(env, tail, &head, &tail); k++)
        items[k] = f(env, head, arg);
    ERL_NIF_TERM out = enif_make_list_from_array(env, items, k);
    enif_free(items);
    return out;
}

/* A round result with its name as an atom and its members' errors as
 * data. */
static ERL_NIF_TERM lib_round(ErlNifEnv *env, ERL_NIF_TERM rr, ERL_NIF_TERM unused)
{
    (void)unused;
    ERL_NIF_TERM name, members, out;
    if (!enif_get_map_value(env, rr, A.name, &name))
        return rr;
    name = nif_existing_atom_or_binary(env, name);
    if (!enif_make_map_update(env, rr, A.name, name, &out))
        return rr;
    if (enif_get_map_value(env, out, A.members, &members) &&
        !enif_make_map_update(env, out, A.members, map_list(env, members, lib_member, name),
                              &out))
        return rr;
    return out;
}

/* The run's errors as data: each binary of errors with its error_info
 * entry (CouncilEx.Wire.result/1). */
static ERL_NIF_TERM lib_errors(ErlNifEnv *env, ERL_NIF_TERM errors, ERL_NIF_TERM info)
{
    ERL_NIF_TERM e, i, out = enif_make_list(env, 0);
    unsigned n, ni;
    if (!enif_get_list_length(env, errors, &n) || !enif_get_list_length(env, info, &ni) ||
        n != ni)
        return errors;
    ERL_NIF_TERM *items = enif_alloc(sizeof *items * (n ? n : 1));
    if (!items)
        return errors;
    for (unsigned k = 0; k < n; k++) {
        enif_get_list_cell(env, errors, &e, &errors);
        enif_get_list_cell(env, info, &i, &info);
        ERL_NIF_TERM round = get_or_nil(env, i, A.round_name);
        if (!enif_is_identical(round, A.nil))
            round = nif_existing_atom_or_binary(env, round);
        items[k] = error_struct(env, get_or_nil(env, i, A.kind), e,
                                get_or_nil(env, i, A.member_id), round, enif_make_new_map(env));
    }
    out = enif_make_list_from_array(env, items, n);
    enif_free(items);
    return out;
}

/* A result as CouncilEx.Wire.result/1 makes it: rounds converted, the
 * errors as data (error_info dropped). */
static ERL_NIF_TERM lib_result(ErlNifEnv *env, ERL_NIF_TERM r)
{
    ERL_NIF_TERM rounds, errors, info, out;
    if (!enif_get_map_value(env, r, A.rounds, &rounds) ||
        !enif_make_map_update(env, r, A.rounds, map_list(env, rounds, lib_round, A.nil), &out))
        return r;
    if (enif_get_map_value(env, out, A.errors, &errors) &&
        enif_get_map_value(env, out, A.error_info, &info) &&
        enif_make_map_update(env, out, A.errors, lib_errors(env, errors, info), &out))
        enif_make_map_remove(env, out, A.error_info, &out);
    return out;
}

/* The library's form of an event (CouncilEx.Wire.event/1). */
static ERL_NIF_TERM lib_event(ErlNifEnv *env, ERL_NIF_TERM ev)
{
    const ERL_NIF_TERM *el;
    int n;
    if (!enif_get_tuple(env, ev, &n, &el) || n < 3 || n > 5)
        return ev;
    ERL_NIF_TERM t[5];
    memcpy(t, el, sizeof *t * (size_t)n);
    ERL_NIF_TERM tag = t[0];
    if (enif_is_identical(tag, A.run_started) && n == 4) {
        ErlNifBinary b;
        if (enif_inspect_binary(env, t[2], &b) && b.size > 7 && memcmp(b.data, "Elixir.", 7) == 0)
            t[2] = nif_existing_atom_or_binary(env, t[2]);
    } else if (enif_is_identical(tag, A.round_completed) && n == 4) {
        t[2] = nif_existing_atom_or_binary(env, t[2]);
        t[3] = lib_round(env, t[3], A.nil);
    } else if (enif_is_identical(tag, A.run_completed) || enif_is_identical(tag, A.run_cancelled)) {
        t[n - 1] = lib_result(env, t[n - 1]);
    } else if (enif_is_identical(tag, A.run_failed) && n == 4) {
        ERL_NIF_TERM errors;
        t[3] = lib_result(env, t[3]);
        if (enif_get_map_value(env, t[3], A.errors, &errors))
            t[2] = errors; /* the same list, as data */
    } else if (enif_is_identical(tag, A.member_completed) && n == 5) {
        t[2] = nif_existing_atom_or_binary(env, t[2]);
        t[4] = lib_member(env, t[4], t[2]);
    } else if (enif_is_identical(tag, A.round_started) ||
               enif_is_identical(tag, A.member_started) ||
               enif_is_identical(tag, A.member_token) ||
               enif_is_identical(tag, A.tool_call_request) ||
               enif_is_identical(tag, A.tool_call_result)) {
        t[2] = nif_existing_atom_or_binary(env, t[2]);
    } else {
        return ev;
    }
    return enif_make_tuple_from_array(env, t, (unsigned)n);
}

/* The env of a slot's terms. */
static ErlNifEnv *slot_env(nif_subs *s, const cslot *c) { return s->genv[c->gen & 1]; }

/* The event's slot, with its term in mode built once per event; NULL
 * when out of memory. */
static cslot *event_slot(nif_subs *s, const council_event *ev, int mode)
{
    uintptr_t run = (uintptr_t)ev->run;
    cslot *c = &s->cache[(ev->seq + (run >> 4) * 0x9E3779B1u) & (NCACHE - 1)];
    if (c->ev != ev || c->gen + 1 < s->gen) {
        council_event_unref(c->ev);
        c->ev = NULL;
        c->plain = c->lib = 0;
        memset(c->ob, 0, sizeof c->ob);
        if (++s->made > NCACHE / 2) {
            /* a new generation, in the env of the one before last */
            s->gen++;
            s->made = 1;
            enif_clear_env(s->genv[s->gen & 1]);
        }
        c->gen = s->gen;
        nif_x_reset(s->st);
        if (cn_event_term(&s->st->x, ev) != 0 ||
            !(c->plain = nif_x_term(s->st, slot_env(s, c))))
            return NULL;
        c->ev = council_event_ref(ev);
    }
    if (mode == NIF_SUB_LIB && !c->lib)
        c->lib = lib_event(slot_env(s, c), c->plain);
    return c;
}

static void on_overflow(size_t dropped, void *arg);
static void on_event(const council_event *ev, void *arg);

/* Out of memory while preparing an event: cut off with the notice rather
 * than skip an event mid-stream. */
static void cut_off(entry *e)
{
    if (e->sub && e->s->st->ctx)
        council_unsubscribe(e->s->st->ctx, e->sub);
    e->sub = NULL;
    on_overflow(1, e);
}

static int is_own_run(const entry *e, const council_event *ev)
{
    return cn_is_run_topic(e->topic, e->topic_len, ev->run_id, ev->run_id_len);
}

/* An event's term as a subscriber of e's mode gets it, in env. */
static ERL_NIF_TERM mode_term(const entry *e, ErlNifEnv *env, ERL_NIF_TERM plain)
{
    ERL_NIF_TERM t = e->mode == NIF_SUB_LIB ? lib_event(env, plain) : plain;
    if (e->mode == NIF_SUB_TAGGED)
        t = enif_make_tuple3(env, A.council_ex_event, nif_binary(env, e->topic, e->topic_len), t);
    return t;
}

static int run_ended(const council_run *run)
{
    council_status st = council_run_status(run);
    return st == COUNCIL_COMPLETED || st == COUNCIL_FAILED || st == COUNCIL_CANCELLED;
}

/* The terminal event of e's run, made from the run itself: the core's
 * queue dropped it with the subscription, after the notice. */
static void send_late_terminal(entry *e)
{
    nif_state *st = e->s->st;
    nif_x_reset(st);
    ERL_NIF_TERM plain = cn_terminal_event_term(&st->x, e->run) == 0 ? nif_x_term(st, st->out) : 0;
    if (plain)
        nif_send(st, &e->pr->pid, mode_term(e, st->out, plain));
    else
        enif_clear_env(st->out);
}

/* A cut-off entry whose core subscription has ended: subscribe again for
 * the terminal event, or send it now if the run has ended already. */
static void keep_terminal(entry *e)
{
    nif_subs *s = e->s;
    if (e->sub)
        return;
    if (e->run && run_ended(e->run)) {
        send_late_terminal(e);
        entry_drop(s, e, 1);
        return;
    }
    if (!s->st->ctx ||
        council_subscribe(s->st->ctx, e->topic, e->topic_len, on_event, on_overflow, e,
                          &e->sub) != 0) {
        e->sub = NULL;
        entry_drop(s, e, 1);
    }
}

static void on_event(const council_event *ev, void *arg)
{
    entry *e = arg;
    nif_subs *s = e->s;
    int own = is_own_run(e, ev);
    if (own && !e->run)
        e->run = council_run_ref(ev->run);
    if (e->cut && !council_event_is_terminal(ev))
        return;
    cslot *c = event_slot(s, ev, e->mode);
    if (!c) {
        cut_off(e);
        return;
    }
    ERL_NIF_TERM t = e->mode == NIF_SUB_LIB ? c->lib : c->plain;
    if (e->mode == NIF_SUB_TAGGED)
        t = enif_make_tuple3(slot_env(s, c), A.council_ex_event,
                             nif_binary(slot_env(s, c), e->topic, e->topic_len), t);
    /* a dead pid: its monitor cleans up. From the loop thread, through
     * the outbox (the pump sends it) */
    nif_ob_memo *memo = e->mode == NIF_SUB_TAGGED ? NULL : &c->ob[e->mode == NIF_SUB_LIB];
    if (!nif_ob_post(s->st, &e->pr->pid, t, memo, 1))
        enif_send(s->st->cur, &e->pr->pid, NULL, t);
    if (council_event_is_terminal(ev) && own)
        entry_drop(s, e, 1);
}

static void on_overflow(size_t dropped, void *arg)
{
    entry *e = arg;
    nif_subs *s = e->s;
    e->sub = NULL; /* the core ended it */
    if (!e->cut) {
        ErlNifEnv *env = s->st->out;
        nif_send(s->st, &e->pr->pid,
                 enif_make_tuple3(env, A.council_ex_overflow,
                                  nif_binary(env, e->topic, e->topic_len),
                                  enif_make_uint64(env, dropped)));
        e->cut = 1;
    }
    keep_terminal(e);
}

/* ------------------------------------------------------------ API */

int nif_subs_has(nif_subs *s, const char *topic, size_t len, const ErlNifPid *pid)
{
    return topic && entry_find(s, topic, len, pid) != NULL;
}

int nif_subs_add(nif_subs *s, const char *topic, size_t len, const ErlNifPid *pid, int mode)
{
    if (!topic || len == 0 || !s->st->ctx)
        return COUNCIL_EINVAL;
    if (entry_find(s, topic, len, pid))
        return 0; /* one subscription per (topic, pid); the first mode stays */
    if (s->entries.n >= s->max)
        return COUNCIL_ELIMIT;
    pidrec *pr = pidrec_find(s, pid);
    int new_pr = 0;
    if (!pr) {
        pr = enif_alloc_resource(nif_pid_type, sizeof *pr);
        if (!pr)
            return COUNCIL_ENOMEM;
        memset(pr, 0, sizeof *pr);
        pr->st = s->st;
        nif_state_ref(s->st);
        pr->pid = *pid;
        cn_dl_init(&pr->entries);
        /* A pid that is not alive is not subscribed: its events would go
         * nowhere and no DOWN would clean up. Not an error (the C node
         * takes a dead pid too, and drops it at its DOWN). */
        if (enif_monitor_process(s->st->cur, pr, pid, &pr->mon) != 0) {
            enif_release_resource(pr);
            return 0;
        }
        pr->monitored = 1;
        new_pr = 1;
    }
    entry *e = enif_alloc(sizeof *e + len + 1);
    int rc = COUNCIL_ENOMEM;
    if (e) {
        memset(e, 0, sizeof *e);
        e->s = s;
        e->pr = pr;
        e->mode = mode;
        e->topic_len = len;
        memcpy(e->topic, topic, len);
        e->topic[len] = 0;
        rc = council_subscribe(s->st->ctx, topic, len, on_event, on_overflow, e, &e->sub);
    }
    if (rc != 0) {
        enif_free(e);
        if (new_pr) {
            enif_demonitor_process(s->st->cur, pr, &pr->mon);
            enif_release_resource(pr);
        }
        return rc;
    }
    if (new_pr) {
        cn_htab_add(&s->pids, &pr->hl, pid_hash(pid));
        pr->in_table = 1;
    }
    cn_dl_push(&pr->entries, &e->by_pid);
    cn_htab_add(&s->entries, &e->hl, entry_hash(topic, len, pid));
    return 0;
}

int nif_subs_remove(nif_subs *s, const char *topic, size_t len, const ErlNifPid *pid)
{
    entry *e = topic ? entry_find(s, topic, len, pid) : NULL;
    if (!e)
        return COUNCIL_ENOTFOUND;
    entry_drop(s, e, 1);
    return 0;
}

ERL_NIF_TERM nif_subs_of(nif_subs *s, ErlNifEnv *env, const char *topic, size_t len)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    if (!s)
        return list;
    CN_HTAB_EACH(&s->entries, l) {
        entry *e = CN_HTAB_ENTRY(l, entry, hl);
        if (e->topic_len == len && memcmp(e->topic, topic, len) == 0)
            list = enif_make_list_cell(env, enif_make_pid(env, &e->pr->pid), list);
    }
    return list;
}

int nif_subs_near_growth(const nif_subs *s, size_t k)
{
    return s && (nif_htab_near_growth(&s->entries, k) || nif_htab_near_growth(&s->pids, k));
}

size_t nif_subs_count(const nif_subs *s) { return s ? s->entries.n : 0; }
size_t nif_subs_pids(const nif_subs *s) { return s ? s->pids.n : 0; }

void nif_subs_pid_down(nif_subs *s, void *obj, const ErlNifMonitor *mon)
{
    pidrec *pr = obj;
    if (!s || !pr->in_table || !pr->monitored || enif_compare_monitors(&pr->mon, mon) != 0)
        return; /* left the table before its DOWN was carried out */
    pr->monitored = 0;
    /* the last entry's drop takes the record out of the table */
    while (pr->in_table && !cn_dl_empty(&pr->entries))
        entry_drop(s, cn_dl_entry(pr->entries.next, entry, by_pid), 0);
}

/* ------------------------------------------------------------ resource */

void nif_pid_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    pidrec *pr = obj;
    nif_state_unref(pr->st);
}

/* A scheduler (or the exiting process's) thread: only queue. */
void nif_pid_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    (void)env;
    (void)pid;
    pidrec *pr = obj;
    /* dropped when out of memory: the subscription stays until its run ends */
    nif_queue_down(pr->st, CMD_PID_DOWN, obj, mon);
}
