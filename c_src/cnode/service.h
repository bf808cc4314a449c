/* service.h - the registered service process (default name council_ex):
 * the door through which BEAM callers start and find runs.
 *
 * Owns: the service's process, the remote subscriptions table and the
 * pids of ended runs (retained.h), both created at start and freed when the
 * service exits, and the translation of the requests
 * of docs/protocol.md into core calls:
 *   {start, Opts} / {start_link, Opts}  -> {ok, RunPid} | {error, Reason}, with
 *                                          {error, {already_started, RunPid}}
 *                                          for an id a running run has
 *   {whereis, Registry, RunId}          -> {ok, RunPid} | {error, unknown_run}
 *                                          (also once the run has ended) |
 *                                          {error, runner_dead} (a stale entry)
 *   {state, Registry, RunId}            -> {ok, Summary} | {error, not_found}
 *   {result, Registry, RunId}           -> as a run pid's :result, also for
 *                                          finished runs in retention;
 *                                          {error, not_found} otherwise
 *   {cancel, Registry, RunId}           -> ok | {error, not_found}
 *   {outcome_by_pid, Pid}               -> the outcome of the run whose
 *                                          process Pid is or was, as a run
 *                                          pid's :result, while the run is
 *                                          retained; {error, not_found}
 *   {subscribe | unsubscribe, Topic, Pid} -> ok | {error, limit | ...}
 *   {subscribe, Topic, Pid, tagged}     -> as subscribe, but each event
 *                                          arrives as {council_ex_event, Topic, Event}
 *   stats -> {ok, #{connections, processes, links, monitors, runs,
 *                   runs_alive, subscriptions}}
 *   ping  -> pong
 *   other -> {error, {unknown_call, Summary}} (gen_server.h)
 * The process traps exits: a linked client's death or EXIT2 (other than
 * kill) arrives as an ignored {'EXIT', From, Reason} message. The monitors
 * on subscriber pids are held by this process.
 */
#ifndef CN_SERVICE_H
#define CN_SERVICE_H

#include <stddef.h>

#include "bridge.h"
#include "node.h"

typedef struct cn_service_config {
    const char *name;   /* registered name */
    size_t max_runs;    /* informational; the core enforces it */
    size_t max_subscriptions; /* remote subscriptions in all (0 = 1000000) */
    size_t max_retained;  /* pids of ended runs kept: the core's max_retained
                             (0 = its default, 100000) */
    cn_bridge *bridge;  /* node + core; b->service and b->subs are set here */
} cn_service_config;

/* Spawns the service process; NULL on ENOMEM or name taken. */
cn_proc *cn_service_start(cn_node *n, const cn_service_config *cfg);

#endif
