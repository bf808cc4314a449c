/* bridge.h - what ties the C node to the core: one record shared by the
 * service process, the run processes, remote subscriptions and the modules
 * that serve runs with BEAM processes.
 *
 * The core (council_ctx) knows nothing of pids; the node (cn_node) knows
 * nothing of runs. Everything that maps one onto the other lives in the
 * files that include this header: service.c (the registered council_ex
 * process), run_proc.c (a process per run), remote_sub.c (events to BEAM
 * pids), beam_provider.c (member calls served by BEAM processes) and
 * beam_tools.c (tool calls served by BEAM processes). Those last two hang
 * on the run processes through hooks (below), each with its own table.
 * bridge.c holds what these files share: the hooks and the state of the
 * modules behind them (cn_hooked), and the reason atom each council_err
 * is reported as.
 * Single-threaded: the loop thread only.
 */
#ifndef CN_BRIDGE_H
#define CN_BRIDGE_H

#include <stddef.h>

#include "council.h"
#include "node.h"
#include "reasons.h"

struct cn_rsubs;
struct cn_retained;
struct cn_run_proc;
typedef struct cn_bridge cn_bridge;

/* A module that serves a run's requests with BEAM processes (the beam
 * provider, the beam tool handler) hears of the run's process through one
 * hook: run_proc.c calls the hooks in the order they were added, knowing
 * nothing of the modules, so the modules depend on run_proc.h and not the
 * other way round. arg is the module's own (its table of requests). */
typedef struct cn_run_hook {
    /* A message to the run's process: 1 if it is this module's (handled or
     * dropped), 0 if not. */
    int (*info)(cn_bridge *b, void *arg, struct cn_run_proc *rp, cn_slice msg);
    /* The run's member server went down with reason (a term). */
    void (*server_down)(cn_bridge *b, void *arg, struct cn_run_proc *rp, cn_slice reason);
    /* The run's process ends: forget what still waits for it. */
    void (*gone)(cn_bridge *b, void *arg, struct cn_run_proc *rp);
} cn_run_hook;

#define CN_RUN_HOOKS_MAX 4

struct cn_bridge {
    cn_node *node;
    council_ctx *ctx;
    cn_proc *service;        /* holds the monitors on remote subscribers */
    struct cn_rsubs *subs;   /* remote subscriptions */
    struct cn_retained *retained; /* pids of ended run processes (retained.c;
                                     made and freed with the service) */
    size_t runs_alive;       /* run processes alive */
    /* Runs whose end the core reported, finished from one zero timer after
     * their events are flushed (run_proc.c; set up on the first run). */
    uv_timer_t end_timer;
    int end_timer_ready;
    cn_dl ending;
    cn_dl live;              /* every run process alive (run_proc.c) */
    struct {
        const cn_run_hook *ops;
        void *arg;
    } hooks[CN_RUN_HOOKS_MAX];
    size_t nhooks;
};

/* A module behind a run hook that keeps a table of requests waiting for
 * BEAM replies (pending.h), each holding one reference: what tells its
 * requests apart. */
typedef struct cn_hooked_kind {
    cn_beam_kind beam;                         /* which it is (its texts) */
    void (*ref)(void *item);                   /* takes the table's reference */
    void (*unref)(void *item);                 /* drops the table's reference */
    void (*fail)(void *item, const char *msg); /* answers a request with an error */
} cn_hooked_kind;

/* Its state: the hook's arg. */
typedef struct cn_hooked {
    cn_bridge *b;
    const cn_run_hook *ops;
    const cn_hooked_kind *kind;
    struct cn_pending *calls;
} cn_hooked;

/* Makes the state with an empty table and adds the hook. NULL with *rc:
 * COUNCIL_EEXIST (ops is there already), COUNCIL_ENOMEM, COUNCIL_ELIMIT. */
cn_hooked *cn_hooked_new(cn_bridge *b, const cn_run_hook *ops, const cn_hooked_kind *kind,
                         int *rc);
/* Drops every request, removes the hook and frees h (the module is going
 * away with the context). NULL is a no-op. cn_hooked_release is the same
 * as the `release` of a provider's or a tool handler's ops (arg: h). */
void cn_hooked_free(cn_hooked *h);
void cn_hooked_release(void *arg);
/* The requests waiting in the table of the module with the hook ops (0
 * when there is none): tests, stats. */
size_t cn_hooked_count(const cn_bridge *b, const cn_run_hook *ops);
/* Hook functions for such a module (arg: its cn_hooked). server_down: each
 * of rp's requests is taken out of the table first, then answered with
 * fail(item, "<who>: member server down: <reason>") and dropped. gone: rp's
 * requests still waiting (normally none: cancelling a run abandons them)
 * are dropped. */
void cn_hooked_server_down(cn_bridge *b, void *arg, struct cn_run_proc *rp, cn_slice reason);
/* Sends a request's message (x) to its member server, item waiting in h's
 * table under id for rp's reply (the table takes a reference): 0, or
 * COUNCIL_ENOMEM (nothing done). When the server cannot be reached, item
 * is out of the table again and failed (reasons.h, CN_BEAM_UNREACHABLE). */
int cn_hooked_send(cn_hooked *h, struct cn_run_proc *rp, const cn_pid *server, uint64_t id,
                   void *item, const ei_x_buff *x);
void cn_hooked_gone(cn_bridge *b, void *arg, struct cn_run_proc *rp);

/* Adds a hook (ops static, arg the module's): 0, COUNCIL_EEXIST (ops is
 * there already), COUNCIL_ELIMIT (CN_RUN_HOOKS_MAX). */
int cn_bridge_hook_add(cn_bridge *b, const cn_run_hook *ops, void *arg);
/* The arg of the hook with these ops, or NULL. */
void *cn_bridge_hook_arg(const cn_bridge *b, const cn_run_hook *ops);
/* Removes the hook with these ops (the module is going away). */
void cn_bridge_hook_remove(cn_bridge *b, const cn_run_hook *ops);

/* The reason atom the node reports (as {error, Reason}) for a council_err:
 * limit (COUNCIL_ELIMIT), enomem (COUNCIL_ENOMEM), noconnection
 * (COUNCIL_EIO: a pid's node cannot be reached), already_started
 * (COUNCIL_EEXIST), and `otherwise` for any other code (each request says
 * what the rest means to it, e.g. badarg for a subscription). */
const char *cn_bridge_reason(int err, const char *otherwise);

/* Appends {error, cn_bridge_reason(err, otherwise)} to x. 0 or -1
 * (ENOMEM). */
int cn_bridge_encode_error(ei_x_buff *x, int err, const char *otherwise);

#endif
