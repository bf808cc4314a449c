/* run_proc.h - a council run as a process of the C node.
 *
 * Owns: the pid of each run and the GenServer face of it: calls (:run_id,
 * :state, :cancel, :await, :result, {:subscribe, Pid}, {:unsubscribe, Pid}),
 * the cast :cancel, :sys.get_state, GenServer.stop, the awaiters waiting
 * for the end (at most 10000 per run; more get {error, limit}), the monitor
 * on the run's member server and the exit reason the run ends with. Other
 * messages to the run pid, the member server's DOWN and the process's end
 * go to the run hooks (bridge.h: the beam provider's member calls and the
 * beam tools' calls are theirs, not this file's).
 * When the core reports the end of a run, the process waits until the
 * run's events have been handed to the connections (a zero timer, then a
 * pub/sub flush), then answers its awaiters and exits: linked processes
 * get the exit signal and monitors their DOWN, after the last event.
 * GenServer.stop and an exit signal (a supervisor's shutdown,
 * Process.exit/2, a linked process's exit) other than kill and normal
 * cancel the run with their reason and end the process the same way,
 * after the run's events: a
 * supervisor that terminates a run sees it exit with `shutdown` after its
 * subscribers got run_cancelled.
 * Reasons: normal (completed), {shutdown, cancelled} (cancelled through the
 * API), the reason of GenServer.stop or of an exit signal (a supervisor's
 * shutdown, a linked process that died), and {shutdown, {failed, Errors}}
 * (failed).
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

/* The run whose process pid is, or was while the run is retained (the
 * core's retention; retained.h); NULL for any other pid. Borrowed as
 * council_run_find's. */
council_run *cn_run_proc_run_of_pid(cn_bridge *b, const cn_pid *pid);

/* Cancel the run, ending its process with reason (a term; NULL = the
 * default {shutdown, cancelled}). Idempotent. */
void cn_run_proc_cancel(council_run *run, const cn_slice *reason);

/* Node shutdown: cancels every unfinished run with reason (a term), hands
 * each run's queued events (run_cancelled last) to the connections, then
 * answers its awaiters and ends its process with reason, so subscribers,
 * links and monitors learn it in that order before the connections close.
 * Call before cn_node_stop. */
void cn_run_proc_shutdown_all(cn_bridge *b, cn_slice reason);

/* For the modules behind the run hooks (bridge.h): the record of a run's
 * process (NULL for a run without one, e.g. a sub-council's), its process
 * (NULL once exited) and its member server (NULL: none given, or it went
 * down). */
cn_run_proc *cn_run_proc_from_run(const council_run *run);
cn_proc *cn_run_proc_proc(const cn_run_proc *rp);
const cn_pid *cn_run_proc_member_server(const cn_run_proc *rp);
/* The member server that serves item, a request of h's kind in run, and
 * the run's record in *rp; NULL when there is none (the run has no process
 * here, or no member server), item then failed with the reason
 * (reasons.h). */
const cn_pid *cn_run_proc_served(cn_hooked *h, const council_run *run, void *item,
                                 cn_run_proc **rp);

#endif
