/* run_proc.h - a council run as a process of the C node.
 *
 * Owns: the pid of each run and the GenServer face of it: calls (:run_id,
 * :state, :cancel, :await, :result, {:subscribe, Pid}, {:unsubscribe, Pid}),
 * the cast :cancel, :sys.get_state, GenServer.stop, the awaiters waiting
 * for the end (at most 10000 per run; more get {error, limit}), the beam
 * provider calls in flight for the run, and the exit reason the run ends
 * with. Messages to the run pid that are beam provider or beam tool
 * replies go to beam_provider.c / beam_tools.c; a DOWN of the member
 * server fails the member calls and tool calls waiting on it.
 * When the core reports the end of a run, the process waits until the
 * run's events have been handed to the connections (a zero timer, then a
 * pub/sub flush), then answers its awaiters and exits: linked processes
 * get the exit signal and monitors their DOWN, after the last event.
 * Reasons: normal (completed), {shutdown, cancelled} (cancelled through the
 * API), the reason of GenServer.stop or of a linked process that died, and
 * {shutdown, {failed, Errors}} (failed).
 */
#ifndef CN_RUN_PROC_H
#define CN_RUN_PROC_H

#include "bridge.h"

typedef struct cn_run_proc cn_run_proc;

/* Spawn the process of a (pending) run. The process takes a reference on
 * the run and sets itself as the run's user data. member_server may be
 * NULL (then beam members fail with a clear error). NULL on ENOMEM. */
cn_proc *cn_run_proc_spawn(cn_bridge *b, council_run *run, const cn_pid *member_server);

/* The process of a run, or NULL once it has exited. */
cn_proc *cn_run_proc_of(const council_run *run);

/* Cancel the run, ending its process with reason (a term; NULL = the
 * default {shutdown, cancelled}). Idempotent. */
void cn_run_proc_cancel(council_run *run, const cn_slice *reason);

/* Node shutdown: cancels every unfinished run with reason (a term), hands
 * each run's queued events (run_cancelled last) to the connections, then
 * answers its awaiters and ends its process with reason, so subscribers,
 * links and monitors learn it in that order before the connections close.
 * Call before cn_node_stop. */
void cn_run_proc_shutdown_all(cn_bridge *b, cn_slice reason);

/* For the beam provider: the record of the run that owns call, or NULL. */
cn_run_proc *cn_run_proc_from_run(const council_run *run);

/* Beam provider support (beam_provider.c): the run's member server, and the
 * table of calls in flight that replies are matched against. */
const cn_pid *cn_run_proc_member_server(const cn_run_proc *rp);
cn_proc *cn_run_proc_proc(const cn_run_proc *rp);
/* call_add takes a reference; call_take removes the entry and hands that
 * reference to the caller (NULL when absent); call_find only looks;
 * call_take_any takes some entry (NULL when the table is empty). */
int cn_run_proc_call_add(cn_run_proc *rp, council_call *call);
council_call *cn_run_proc_call_take(cn_run_proc *rp, uint64_t id);
council_call *cn_run_proc_call_find(cn_run_proc *rp, uint64_t id);
council_call *cn_run_proc_call_take_any(cn_run_proc *rp);

#endif
