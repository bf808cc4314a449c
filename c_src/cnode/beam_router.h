/* beam_router.h - the router "beam": routers answered by a BEAM process
 * (the Elixir library's member server, which runs the Elixir function or
 * CouncilEx.Router module the spec's router stands for).
 *
 * A spec names it as {"name": "beam", ...} (the Elixir library adds a
 * "ref" saying which of the run's routers it is). When a round with that
 * router is about to start, the run's process sends
 *   {council_route_call, RunPid, RouteId, Request}
 * to the run's member server (RouteId: an integer, council_route_id;
 * Request: the route's request, council_route_request_object, as a map with
 * binary keys). The server answers the run pid with
 *   {council_route_reply, RouteId, {ok, [MemberId]} | {error, Reason}}
 * (MemberId: binaries). No member server, a dead server (monitored), a
 * lost connection, a malformed reply or an id that is not one of the
 * round's members fail the route, and so the run, with a message saying
 * which. A reply for a route no longer waiting (timed out, run cancelled)
 * is dropped.
 *
 * Owns: the table of routes waiting for their reply (one reference on
 * each), made at registration and freed with the context; the run
 * processes reach it through the module's hook (bridge.h). Loop thread
 * only.
 */
#ifndef CN_BEAM_ROUTER_H
#define CN_BEAM_ROUTER_H

#include "bridge.h"

/* Register the router "beam" with b->ctx and its hook with b. council_err
 * (COUNCIL_EEXIST when registered already). */
int cn_beam_router_register(cn_bridge *b);

#endif
