/* bridge.h - what ties the C node to the core: one record shared by the
 * service process, the run processes, remote subscriptions and the beam
 * provider.
 *
 * The core (council_ctx) knows nothing of pids; the node (cn_node) knows
 * nothing of runs. Everything that maps one onto the other lives in the
 * files that include this header: service.c (the registered council_ex
 * process), run_proc.c (a process per run), remote_sub.c (events to BEAM
 * pids), beam_provider.c (member calls served by BEAM processes) and
 * beam_tools.c (tool calls served by BEAM processes). bridge.c holds what
 * those files share about the protocol: the reason atom each council_err
 * is reported as, and a run's topic.
 * Single-threaded: the loop thread only.
 */
#ifndef CN_BRIDGE_H
#define CN_BRIDGE_H

#include <stddef.h>

#include "council.h"
#include "node.h"

struct cn_rsubs;
struct cn_beam_tools;

typedef struct cn_bridge {
    cn_node *node;
    council_ctx *ctx;
    cn_proc *service;        /* holds the monitors on remote subscribers */
    struct cn_rsubs *subs;   /* remote subscriptions */
    size_t runs_alive;       /* run processes alive */
    /* Runs whose end the core reported, finished from one zero timer after
     * their events are flushed (run_proc.c; set up on the first run). */
    uv_timer_t end_timer;
    int end_timer_ready;
    cn_dl ending;
    cn_dl live;              /* every run process alive (run_proc.c) */
    struct cn_beam_tools *tools; /* tool calls waiting for BEAM replies
                                    (beam_tools.c; NULL until registered) */
} cn_bridge;

/* The reason atom the node reports (as {error, Reason}) for a council_err:
 * limit (COUNCIL_ELIMIT), enomem (COUNCIL_ENOMEM), noconnection
 * (COUNCIL_EIO: a pid's node cannot be reached), already_started
 * (COUNCIL_EEXIST), and `otherwise` for any other code (each request says
 * what the rest means to it, e.g. badarg for a subscription). */
const char *cn_bridge_reason(int err, const char *otherwise);

/* Appends {error, cn_bridge_reason(err, otherwise)} to x. 0 or -1
 * (ENOMEM). */
int cn_bridge_encode_error(ei_x_buff *x, int err, const char *otherwise);

/* The topic of a run id: "council_ex:run:" <> run_id, NUL-terminated and
 * malloc'ed (the caller frees); *len gets its length. NULL when out of
 * memory. */
char *cn_bridge_topic(const char *run_id, size_t id_len, size_t *len);

#endif
