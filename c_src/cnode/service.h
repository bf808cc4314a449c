/* service.h - the registered service process (default name council_ex).
 *
 * Owns only its small state (the limits it reports). Calls it answers now:
 *   :ping   -> :pong
 *   :stats  -> {:ok, %{connections:, processes:, links:, monitors:,
 *                     runs: 0, subscriptions: 0}}
 *   other   -> {:error, {:unknown_call, request}}
 * The process traps exits: a linked client's death or EXIT2 (other than
 * kill) arrives as an ignored {'EXIT', From, Reason} message.
 * The integrator adds start/whereis/state/cancel/subscribe here by
 * extending handle_call in service.c; the process API is node.h and
 * gen_server.h.
 */
#ifndef CN_SERVICE_H
#define CN_SERVICE_H

#include <stddef.h>

#include "node.h"

typedef struct cn_service_config {
    const char *name;  /* registered name */
    size_t max_runs;   /* limit passed on to the core (unused so far) */
} cn_service_config;

cn_proc *cn_service_start(cn_node *n, const cn_service_config *cfg);

#endif
