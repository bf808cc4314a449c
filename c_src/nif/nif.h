/* nif.h - the NIF backend's shared record (the files of c_src/nif).
 *
 * Shards. The library (nif_lib, below) runs several nif_states side by
 * side, each a core context with everything described here: its own
 * locks, loop thread, queue, index, subscriptions and outbox. A run and
 * all that concerns it (its pid's calls, requests by its id, its topics)
 * belong to one shard; what follows is about one shard.
 *
 * Threads. The core is not thread-safe (council.h): whoever holds the
 * drive lock (st->drive) drives the context and owns everything below
 * marked "loop". A thread of our own (enif_thread_create, "the loop
 * thread") holds it except while it sleeps; resource monitors
 * (subscribers) queue a command from their down callback (st->mu) for it,
 * and so do run handles' destructors (st->gone),
 * and schedulers queue the requests they do not carry out themselves.
 * Messages go out with enif_send: a scheduler that drives sends its own;
 * what the loop thread sends goes through the outbox (nif_outbox.c) to
 * the pump, a process that sends it on its scheduler, in order, while a
 * pump is given (after each open; none: the loop thread sends itself).
 * Waking: while the context is open the loop thread steps it without
 * waiting (council_ctx_step(ctx, 0)) while work is ready, then records
 * when the loop's next timer falls due (st->wake_at), lets go of the
 * drive lock and sleeps in poll(2) on the loop's backend fd and a pipe of
 * ours until then (on the pipe alone while the context is closed). I/O
 * and the core's own wake-ups end the sleep through the backend fd; a
 * queued command, the unload and a scheduler that leaves work through the
 * pipe (st->wake_w, one byte per sleep: st->wake_pending), which only the
 * loop thread reads, so no step taken by a scheduler can take a wake-up
 * meant for the loop thread. A uv_async_t of ours on the loop (never sent)
 * keeps the loop alive, as the C node's sockets do, so that the wait is
 * until the next timer even when no run is going (a finished run's
 * retention timer keeps no loop alive).
 * Inline: a NIF call on a normal scheduler that gets the drive lock
 * (trylock, again for up to 20 us while another thread holds it), with no
 * command queued, carries its request out itself
 * with the caller's env (st->cur) and steps the context for a bounded
 * time (council_nif.c); it wakes the loop thread when it leaves work
 * ready, or a timer due before st->wake_at (a command queued meanwhile
 * woke it itself).
 * enif_* calls that take a caller env get st->cur: NULL on the loop
 * thread, the calling process's env while a scheduler drives.
 *
 * Files: council_nif.c (load/upgrade/unload, the NIF functions, the queue
 * and the loop), nif_outbox.c (the loop thread's messages, sent by the
 * pump), nif_service.c (the service requests of docs/protocol.md:
 * start, whereis, state, result, cancel, subscribe, stats), nif_run.c (a
 * run and its pid: calls, awaiters, the end), nif_subs.c (subscriptions of
 * local pids, events as terms), nif_beam.c (the beam provider and the beam
 * tool handler), nif_term.c (term helpers).
 *
 * Uses only the core's public headers (council.h, council_json.h) and the
 * C node's term encoders (event_term.h, spec_cache.h), its error reasons
 * (reasons.h), its hash table (hashtab.h) and a run's topic
 * (run_topic.h).
 */
#ifndef COUNCIL_NIF_H
#define COUNCIL_NIF_H

#include <council.h>
#include <ei.h>
#include <erl_nif.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>
#include "dlist.h"
#include "hashtab.h"
#include "reasons.h"

/* ------------------------------------------------------------ atoms */

/* Made once at load (atoms are global); the names in docs/protocol.md. */
typedef struct nif_atoms {
    ERL_NIF_TERM ok, error, nil, true_, false_, normal, shutdown, cancelled, failed,
        undefined, badarg, enomem, limit, not_found, unknown_run, runner_dead, running,
        already_started, run_id_retained, invalid_spec, bad_option, unknown_call,
        request_too_large, unavailable, noproc, exec_allow,
        tagged, lib, pong, run_id, state, cancel, await, result, subscribe, unsubscribe,
        start, start_link, whereis, ping, stats, validate, open, close, sys_state, subscribers, setenv,
        unsetenv,
        council_ex_event,
        council_ex_overflow, council_member_call, council_member_token,
        council_member_reply, council_tool_call, council_tool_reply, council_route_call,
        council_route_reply, council_run,
        council_end, council_reply, council_pump, more, done,
        reply, inline_, down, process, name, rounds, spec, input, council,
        registry, user_opts, member_server, runs, runs_alive, subscriptions, pids,
        pending, json, run_started, round_started, member_started, member_token,
        member_completed, round_completed, run_completed, run_failed, run_cancelled,
        tool_call_request, tool_call_result, retention_ms, max_runs, max_retained,
        max_subscribers_per_topic, subscriber_queue_cap, member_timeout_ms, max_spec_bytes,
        output_cap, status_, current_round, rounds_completed, started_at, idx, miss,
        /* the library's %CouncilEx.Error{} (nif_subs.c) */
        struct_, error_module, kind, message, member_id, round_name, reason, context,
        stacktrace, error_info, errors, members, error_kind, attempts;
    ERL_NIF_TERM reasons[CN_N_REASONS]; /* c_src/cnode/reasons.h, as atoms */
    ERL_NIF_TERM statuses[COUNCIL_CANCELLED + 1]; /* council_status_name of each status */
} nif_atoms;

extern nif_atoms A;
void nif_atoms_init(ErlNifEnv *env);

/* ------------------------------------------------------------ state */

typedef struct nif_cmd nif_cmd;
typedef struct nif_run nif_run;
typedef struct nif_subs nif_subs;
typedef struct nif_beam nif_beam;
typedef struct nif_etf_cache nif_etf_cache;
typedef struct nif_seg nif_seg;
typedef struct nif_pump nif_pump;
struct cn_spec_cache;

typedef struct nif_lib nif_lib;

typedef struct nif_state {
    nif_lib *lib;              /* the library instance this shard is one of */
    unsigned shard;            /* its number in lib->sh */
    /* shared with the schedulers: under mu */
    ErlNifMutex *mu;
    nif_cmd *head, *tail;
    int stopping;              /* unload: the loop ends */
    nif_run *gone;             /* records whose handle has ended (nif_run.c;
                                * stored atomically: whoever drives reads it
                                * without mu to see whether to reap) */
    unsigned n_gone;           /* of them, released ones since the loop was
                                * last woken for them */
    int wake_r, wake_w;        /* the loop thread's wake-up pipe (see above) */
    int wake_pending;          /* a byte is in it, not read yet */
    ErlNifMutex *drive;        /* held by whoever drives the context (see above) */
    int loop_wants;            /* atomic: the loop thread waits for the drive
                                * lock (schedulers leave it alone meanwhile) */
    int refs;                  /* the library's + live resources (st freed at 0) */
    ErlNifTid tid;
    int thread_running;
    /* the outbox (nif_outbox.c): sealed segments, their messages in all
     * (atomic reads), whether the pump has been told and not answered
     * done yet, a pump whose monitor fired */
    nif_seg *ob_head, *ob_tail;
    size_t ob_items;
    int pump_signalled;
    nif_pump *pump_down;
    ErlNifMutex *ob_send;      /* held by whoever sends from the outbox */

    /* the index of live runs by (registry, run id), with their summaries
     * as of their last round change: written under the drive lock, read by
     * any scheduler under idx (nif_run.c) */
    ErlNifRWLock *idx;
    cn_htab runs;

    /* loop */
    council_ctx *ctx;          /* NULL while closed (before open, after close) */
    struct cn_spec_cache *specs;
    nif_subs *subs;
    nif_beam *beam;
    cn_dl live;                /* run records with a pid (nif_run.c) */
    cn_dl ending;              /* runs whose end the core reported, to finish */
    size_t runs_alive;
    ErlNifEnv *out;            /* scratch env for messages (cleared after each) */
    ei_x_buff x;               /* scratch ETF buffer */
    nif_etf_cache *etf;        /* its decoder's atoms and scratch (nif_etf_own) */
    uv_async_t keepalive;      /* on the context's loop while it is open */
    int keepalive_open;
    ErlNifEnv *cur;            /* the caller env of enif_send, enif_monitor_process
                                * and the like: NULL on the loop thread, the NIF
                                * call's env while a scheduler drives */
    nif_seg *ob_cur;           /* the outbox's open segment (sealed at each turn's end) */
    uint64_t ob_gen;           /* segments made so far (their numbers) */
    nif_pump *pump_obj;        /* the pump (its monitor), NULL: none */
    ErlNifPid pump;
    int no_inline;             /* {inline, false}: every request is queued */
    uint64_t inlined;          /* requests carried out by their NIF call so far */
    uint64_t wake_at;          /* the loop's time (ms) at which the loop thread's
                                * sleep ends (UINT64_MAX: none); 0 while it is
                                * awake (it looks at the loop before sleeping) */
} nif_state;

/* ------------------------------------------------------------ shards */

/* The library: several nif_states (NIF_SHARDS_PER_SCHEDULER per scheduler
 * thread by default, COUNCIL_NIF_SHARDS when set),
 * "shards", each a core context with its own drive lock, loop thread,
 * index, subscriptions and outbox, so that schedulers drive the core side
 * by side instead of queueing behind one lock. A run lives in the shard
 * its run id's key names (nif_key_shard), and so do its topic and its
 * sub-councils' topics (nif_topic_shard): everything about one run is one
 * shard's. Requests that concern every shard (open, close, stats, the
 * environment, the inline switch) are sent to each by the library
 * (CouncilEx.Nif), which combines the answers. max_runs holds for the
 * whole library (the contexts share a council_run_quota, which counts
 * sub-council runs too); max_retained is split between the shards.
 * Freed when the last shard is. */
#define NIF_MAX_SHARDS 64
/* Shards per scheduler thread by default. A run's shard is named by its
 * id, not by who calls, so a call meets a shard that another scheduler
 * drives at the odds of 1 in the shard count: more shards, fewer such
 * meetings (each a wait, or a request queued for the loop thread). A
 * shard that sleeps costs a thread blocked in poll(2) and an empty
 * context. bench/RESULTS.md has the 8-caller council at 2 to 32 shards. */
#define NIF_SHARDS_PER_SCHEDULER 4
struct nif_lib {
    unsigned n;                /* shards */
    nif_state *sh[NIF_MAX_SHARDS];
    int refs;                  /* shards not freed yet */
    int instances;             /* module instances (load/upgrade; unload) */
    council_run_quota *quota;  /* max_runs for all the shards' contexts */
    unsigned next_pref;        /* atomic: schedulers numbered so far (preferred()) */
    unsigned nsched;           /* scheduler threads */
};

/* The hash of the NIF's tables and shards, read by every request by id
 * on a scheduler: 8 bytes per step (a byte-wise FNV over a registry name
 * and a run id, ~50 bytes, was a chain of ~50 dependent multiplications).
 * Any thread. */
#define NIF_HASH_SEED 0xcbf29ce484222325ULL
static inline uint64_t nif_hash_mix(uint64_t h, uint64_t v)
{
    h = (h ^ v) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static inline uint64_t nif_hash_bytes(const void *p, size_t len, uint64_t h)
{
    const unsigned char *s = p;
    for (; len >= 8; s += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = nif_hash_mix(h, v);
    }
    uint64_t v = 0;
    memcpy(&v, s, len);
    return nif_hash_mix(h ^ len, v);
}

/* The shard of a run id (len bytes): its key is the id up to the first
 * ":sub:" (the whole id when none), so that a sub-council's topic, which
 * extends its parent's with ":sub:" <member>, names the parent's shard. */
unsigned nif_key_shard(unsigned n, const void *id, size_t len);
/* The shard of a topic: a run's topic ("council_ex:run:" <id> ...) the
 * shard of the id's key, any other topic the shard of its whole text. */
unsigned nif_topic_shard(unsigned n, const void *topic, size_t len);

/* Resource types (opened at load, taken over at upgrade). */
extern ErlNifResourceType *nif_run_type;
extern ErlNifResourceType *nif_pid_type;

/* A reference on st for a resource object: taken when it is made,
 * dropped by its destructor; st is freed with the last one. */
void nif_state_ref(nif_state *st);
void nif_state_unref(nif_state *st);

/* ------------------------------------------------------------ commands */

typedef enum nif_cmd_kind {
    CMD_CALL,      /* service request: a = request; reply {ref, Reply} to caller */
    CMD_RUN_CALL,  /* on a run pid: obj = run, a = from | nil, b = request */
    CMD_RUN_INFO,  /* a message to a run pid: obj = run, a = message */
    CMD_RUN_STOP,  /* GenServer.stop: obj = run, a = reason */
    CMD_PID_DOWN,  /* a subscriber is gone: obj = its pid record */
    CMD_PUMP,      /* the pump: a = its pid */
} nif_cmd_kind;

struct nif_cmd {
    nif_cmd *next;
    nif_cmd_kind kind;
    ErlNifPid caller;
    ErlNifEnv *env; /* the copied terms (NULL for the DOWN kinds) */
    ERL_NIF_TERM ref, a, b;
    void *obj;      /* a kept resource, released after the command */
    ErlNifMonitor mon;
    /* carried out by the NIF call that made it (env: the caller's, terms
     * not copied, obj not kept, nothing to free): its answer goes to
     * reply (in env) instead of a message, when the caller is who gets it */
    int is_inline;
    ERL_NIF_TERM reply;
};

/* Queues c (the loop thread owns it from then on). 0, or -1 when the
 * library is unloading (c is not taken). Any thread. */
int nif_queue(nif_state *st, nif_cmd *c);
/* Ends the loop thread's sleep, or its next one (one byte down its pipe
 * per sleep). st->mu held; any thread. */
void nif_wake_loop(nif_state *st);
/* From a resource monitor's down callback (any thread): queues a command
 * of kind for the loop with obj (kept until the loop has carried it out)
 * and mon. Dropped when out of memory or unloading. */
void nif_queue_down(nif_state *st, int kind, void *obj, const ErlNifMonitor *mon);

/* An inline command's answer rep (built in st->out, which is cleared)
 * into c->reply: 1, or 0 when c is a queued one (the caller sends it). */
int nif_reply_inline(nif_state *st, nif_cmd *c, ERL_NIF_TERM rep);

/* ------------------------------------------------------------ sending */

/* Sends t (built in st->out) to pid and clears st->out. 1 if sent, 0 if
 * the pid is not alive. Under the drive lock (st->cur is the caller env). */
int nif_send(nif_state *st, const ErlNifPid *pid, ERL_NIF_TERM t);

/* As nif_send, for a send whose result the caller needs: the outbox is
 * flushed first (so the order stays). */
int nif_send_now(nif_state *st, const ErlNifPid *pid, ERL_NIF_TERM t);

/* ------------------------------------------------------------ outbox */

/* Outbox: while a pump process is given ({pump, Pid}, CouncilEx.Nif's
 * pump), what the loop thread sends goes through a FIFO that the pump
 * empties on its scheduler (nif_outbox.c says why and how the order is
 * kept). Loop thread unless said. */
extern ErlNifResourceType *nif_pump_type;
int nif_pump_open_type(ErlNifEnv *env, ErlNifResourceFlags flags);
/* Where the outbox keeps its copy of a term sent to many pids (an
 * event's): the segment it is in (by number: 0, none) and the copy. */
typedef struct nif_ob_memo {
    uint64_t gen;
    ERL_NIF_TERM t;
} nif_ob_memo;
/* Takes t (in any env) for pid into the outbox: 1, or 0 when the caller
 * must send it itself (on a scheduler, no pump, or for a message not an
 * event (event 0) while the outbox is empty; out of memory: after a
 * flush). t is copied into the open segment, once per segment for the
 * same memo (NULL: each time; a memo is for one term). */
int nif_ob_post(nif_state *st, const ErlNifPid *pid, ERL_NIF_TERM t, nif_ob_memo *memo,
                int event);
/* The open segment to the pump (told when it has not been). */
void nif_ob_seal(nif_state *st);
/* Sends all that the outbox holds from this thread. */
void nif_ob_flush(nif_state *st);
/* A scheduler about to drive inline (drive lock held, so nothing is
 * added meanwhile) sends what the outbox holds, until t0 + 40 us: 1 when
 * it is empty. */
int nif_ob_help(nif_state *st, ErlNifEnv *env, uint64_t t0);
/* pump() -> more | done: sends from the outbox for at most 40 us on the
 * calling scheduler; more while messages are left. */
ERL_NIF_TERM nif_pump_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
/* CMD_PUMP: the pump from now on (a pid that is not alive: none). */
void nif_pump_set(nif_state *st, ErlNifEnv *env, ERL_NIF_TERM pid);
/* No pump from now on: the outbox is flushed, the monitor dropped. */
void nif_pump_drop(nif_state *st);
/* Drops the pump if its monitor fired. */
void nif_pump_check(nif_state *st);

/* The term of the ETF in st->x (with its version byte), in env, or 0 when
 * it cannot be decoded. */
ERL_NIF_TERM nif_x_term(nif_state *st, ErlNifEnv *env);
/* Resets st->x to hold only the version byte. */
void nif_x_reset(nif_state *st);

/* ------------------------------------------------------------ terms */

ERL_NIF_TERM nif_ok(ErlNifEnv *env, ERL_NIF_TERM t);
ERL_NIF_TERM nif_error(ErlNifEnv *env, ERL_NIF_TERM reason);
ERL_NIF_TERM nif_error2(ErlNifEnv *env, ERL_NIF_TERM tag, ERL_NIF_TERM v);
/* A bounded summary of a term a caller sent, for error replies that name
 * it (unknown_call, bad_option), as the C node's cn_gen_encode_summary: the
 * atom itself, the first element of a tuple that starts with an atom, or
 * the atom naming the term's kind. Valid in any env (only atoms). */
ERL_NIF_TERM nif_summary(ErlNifEnv *env, ERL_NIF_TERM t);
ERL_NIF_TERM nif_binary(ErlNifEnv *env, const void *p, size_t len);
ERL_NIF_TERM nif_cstr(ErlNifEnv *env, const char *s);
/* The reason atom of a council_err as the C node reports it (bridge.c):
 * limit, enomem, already_started, else `otherwise`. */
ERL_NIF_TERM nif_reason(int err, ERL_NIF_TERM otherwise);
/* A binary's or an atom's text, NUL-terminated in buf (size n): 0, or -1
 * (not a name, too long, or holding a NUL). nil gives -1 with *absent. */
int nif_name(ErlNifEnv *env, ERL_NIF_TERM t, char *buf, size_t n, int *absent);
/* An existing atom for a name (UTF-8 bytes) when one exists, else the
 * binary: what CouncilEx.Wire does for round names. */
ERL_NIF_TERM nif_existing_atom_or_binary(ErlNifEnv *env, ERL_NIF_TERM bin);
/* A JSON value as the C node's term_json.h maps it (objects: maps with
 * binary keys; null: nil). 0 when out of memory. */
struct json_t;
ERL_NIF_TERM nif_json_term(ErlNifEnv *env, const struct json_t *j, int depth);
/* Maps and ETF on the loop thread. ERTS crashes when a thread that is not
 * a scheduler builds a map of more than 32 pairs in one go: both
 * enif_make_map_from_arrays and enif_binary_to_term sort the pairs with
 * scheduler data such a thread does not have (erlang/otp#8208, in OTP
 * 25.1 and later until its fix). These two build such maps pair by pair
 * (enif_make_map_put), which does not sort, and are what the NIF uses. */
#define NIF_FLATMAP_MAX 32
/* A map of n pairs (keys distinct) in *out: 1, or 0 (out of memory, or a
 * key repeated where n <= NIF_FLATMAP_MAX). */
int nif_make_map(ErlNifEnv *env, ERL_NIF_TERM *keys, ERL_NIF_TERM *vals, size_t n,
                 ERL_NIF_TERM *out);
/* The term of len bytes of ETF at buf (version byte first), in env, or 0
 * when they are not one whole term. Terms without a map of more than
 * NIF_FLATMAP_MAX pairs, and every term on a scheduler thread (an inline
 * caller), go to enif_binary_to_term whole; others are
 * decoded here down to their leaves (nesting bounded: 0 past it). opts as
 * enif_binary_to_term's: ERL_NIF_BIN2TERM_SAFE for bytes that came from
 * outside (no atom is made). */
ERL_NIF_TERM nif_etf_term(ErlNifEnv *env, const char *buf, size_t len, ErlNifBinaryToTerm opts);
/* Our own ETF (what the encoders of event_term.h and the like made in
 * st->x), decoded in one walk: containers built from a scratch stack,
 * integers, floats, binaries, strings made directly, atoms through a
 * cache that maps their text to the term made once (atoms are global:
 * valid in every env); other leaves (pids, references, funs, bignums past
 * 64 bits) through enif_binary_to_term. *cache (made on first use) is the
 * driver's: whoever holds the drive lock. Terms it cannot walk (nesting
 * past 256, a repeated map key, bytes that are not one whole term) go to
 * nif_etf_term whole; 0 when that fails too. The same term as
 * nif_etf_term(env, buf, len, 0) (the tests check it: nif_etf_test). */
ERL_NIF_TERM nif_etf_own(ErlNifEnv *env, nif_etf_cache **cache, const char *buf, size_t len);
nif_etf_cache *nif_etf_cache_new(void);
void nif_etf_cache_free(nif_etf_cache *c);
/* The NIFs etf_test/1 (self-check of nif_etf_own against nif_etf_term,
 * counts, a fast walk of a given binary) and etf_bench/2 (dirty CPU: ns
 * per decode, the two ways) of CouncilEx.Nif, for tests and benchmarks
 * (nif_term.c says what they answer). */
ERL_NIF_TERM nif_etf_test(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_etf_bench(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
/* CLOCK_MONOTONIC in nanoseconds. Any thread. */
uint64_t nif_mono_ns(void);
/* Text of a term (enif_snprintf %T), NUL-terminated, clipped to n. */
void nif_term_text(ErlNifEnv *env, ERL_NIF_TERM t, char *buf, size_t n);

/* ------------------------------------------------------------ runs */

/* The shard of a run handle (resource object): where its run lives. */
nif_state *nif_run_shard(void *obj);
/* Carries out a call/cast/message/stop of a run pid (CMD_RUN_*). */
void nif_run_cmd(nif_state *st, nif_cmd *c);
/* Makes the record of a new (pending) run served by pid, and its handle:
 * the resource object the pid will hold (nif_run_announce hands it over),
 * whose destructor tells the loop that the pid is gone (no monitor: the
 * pid's exit drops its term). The record lives until then. NULL when out
 * of memory or pid is not alive (*dead set). */
nif_run *nif_run_new(nif_state *st, council_run *run, const ErlNifPid *pid,
                     const ErlNifPid *server, int *dead);
/* Sends the pid its handle and the start's answer to pass on:
 * {'$council_run', Res, Server | nil, {Caller, Ref}}; the pid sends Caller
 * {Ref, {ok, Pid}} (the start's reply, so the loop sends one message per
 * start, not two). ref is copied. caller NULL (an inline start, whose NIF
 * call answers): {'$council_run', Res, Server | nil, nil}. */
void nif_run_announce(nif_state *st, nif_run *r, const ErlNifPid *caller, ERL_NIF_TERM ref);
/* The record of a run (NULL: none, or its pid is gone). */
nif_run *nif_run_of(const council_run *run);
const ErlNifPid *nif_run_pid(const nif_run *r);
/* The member server (NULL: none given, or it went down). */
const ErlNifPid *nif_run_server(const nif_run *r);
/* The member server went down: the run has none from now on. */
void nif_run_server_gone(nif_run *r);
/* The run's beam calls waiting for a reply (nif_beam.c's entries). */
cn_dl *nif_run_calls(nif_run *r); /* NULL: none yet */
/* The same, made if need be (NULL: out of memory). */
cn_dl *nif_run_calls_make(nif_run *r);
/* Cancels every run (the library's stop, unload) with reason `shutdown`. */
void nif_runs_shutdown(nif_state *st);
/* Finishes the runs whose end the core reported: their events go out
 * first (council_ctx_flush), then awaiters' answers and the pid's end.
 * Under the drive lock, outside core callbacks. */
void nif_runs_finish(nif_state *st);
/* A run whose pid has exited while its DOWN is still on its way is treated
 * as down now (cancelled, record released), so that what a caller reads
 * after seeing the pid's DOWN agrees with it, as over distribution. 1 if
 * it was. */
int nif_run_settle(nif_state *st, council_run *run);
/* The id of a run resource, read by any thread (immutable). */
int nif_run_id_of(ErlNifEnv *env, void *obj, ERL_NIF_TERM *out);
/* A run pid's :state from the snapshot, read by any thread: 1 with
 * {Version, {ok, Summary}} in *out (cached itself when it is such a pair
 * of the snapshot's current version: the pid keeps the last one, so a
 * summary is built once per change), 0 when the loop must answer (the run
 * has ended, or its snapshot is not kept). */
int nif_run_state_of(ErlNifEnv *env, void *obj, ERL_NIF_TERM cached, ERL_NIF_TERM *out);
/* whereis / state by id from the index, any thread: 1 with the reply in
 * *out (what the loop would answer), 0 for a run not in the index (ended,
 * unknown: the loop answers). */
enum { NIF_FAST_WHEREIS = 1, NIF_FAST_STATE = 2 };
int nif_runs_fast(nif_state *st, ErlNifEnv *env, int op, const char *registry,
                  const unsigned char *id, size_t len, ERL_NIF_TERM *out);
/* The index's table (load) and its end (the state's end). */
int nif_index_init(nif_state *st);
void nif_index_free(nif_state *st);
/* The summary of a run that has just begun (its status is running now). */
void nif_run_begun(nif_state *st, nif_run *r);
/* The destructor of a run's handle (its resource object): the loop is
 * told (st->gone) that the pid that held it is gone. Any thread. */
void nif_run_dtor(ErlNifEnv *env, void *obj);
/* Carries out the ends of handles: a run whose pid went before the run
 * ended is cancelled, and the records are freed. Loop thread, outside
 * core callbacks. */
void nif_runs_reap(nif_state *st);
/* Frees the records of handles that ended after the loop did (every
 * record is released by then). The state's end. */
void nif_runs_reap_left(nif_state *st);

/* ------------------------------------------------------------ subscriptions */

enum { NIF_SUB_PLAIN = 0, NIF_SUB_TAGGED = 1, NIF_SUB_LIB = 2 };

nif_subs *nif_subs_new(nif_state *st, size_t max);
/* Ends every subscription without a message, drops the monitors. */
void nif_subs_free(nif_subs *s);
int nif_subs_add(nif_subs *s, const char *topic, size_t len, const ErlNifPid *pid, int mode);
int nif_subs_has(nif_subs *s, const char *topic, size_t len, const ErlNifPid *pid);
int nif_subs_remove(nif_subs *s, const char *topic, size_t len, const ErlNifPid *pid);
size_t nif_subs_count(const nif_subs *s);
/* Whether k more entries could make t, of NIF_HTAB_BIG buckets or more,
 * grow (a rehash of the whole table, about 25-50 ns per entry:
 * milliseconds at a few 100k entries): such a growth is left to the loop
 * thread. */
#define NIF_HTAB_BIG 4096
static inline int nif_htab_near_growth(const cn_htab *t, size_t k)
{
    return t->nb >= NIF_HTAB_BIG && t->n + k >= t->nb;
}
/* nif_htab_near_growth for either table of s, with k more subscriptions. */
int nif_subs_near_growth(const nif_subs *s, size_t k);
/* The pids subscribed to a topic (introspection: scans the table). */
ERL_NIF_TERM nif_subs_of(nif_subs *s, ErlNifEnv *env, const char *topic, size_t len);
size_t nif_subs_pids(const nif_subs *s);
/* CMD_PID_DOWN */
void nif_subs_pid_down(nif_subs *s, void *obj, const ErlNifMonitor *mon);
void nif_pid_dtor(ErlNifEnv *env, void *obj);
void nif_pid_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon);

/* ------------------------------------------------------------ beam */

nif_beam *nif_beam_register(nif_state *st, int *rc);
/* A message to a run pid that may be a member/tool reply or the member
 * server's DOWN: 1 if it was (handled or dropped), 0 if not. */
int nif_beam_info(nif_state *st, nif_run *r, ErlNifEnv *env, ERL_NIF_TERM msg);
/* The run's member server went down with reason: its calls fail. */
void nif_beam_server_down(nif_state *st, nif_run *r, ErlNifEnv *env, ERL_NIF_TERM reason);
/* The run's pid is gone: forget its calls. */
void nif_beam_gone(nif_state *st, nif_run *r);
size_t nif_beam_pending(const nif_beam *b);

/* ------------------------------------------------------------ service */

/* Carries out a CMD_CALL and answers {Ref, Reply} (a start that began is
 * answered by the run's pid). */
void nif_service_call(nif_state *st, nif_cmd *c);
/* Opens the context (config from a map), or keeps the open one. */
int nif_ctx_open(nif_state *st, ErlNifEnv *env, ERL_NIF_TERM config);
/* Cancels the runs, drops subscriptions, frees the context. */
void nif_ctx_close(nif_state *st);

#endif
