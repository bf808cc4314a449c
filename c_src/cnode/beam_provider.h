/* beam_provider.h - the "beam" member provider: member calls served by a
 * BEAM process (the Elixir library's member server).
 *
 * For each attempt the run's process sends
 *   {council_member_call, RunPid, CallId, Request}
 * to the run's member server (Request: the member request map with binary
 * keys, plus "options", the member's options). The server answers the run
 * pid with {council_member_token, CallId, Chunk} (any number) and
 * {council_member_reply, CallId, {ok, Text} | {error, Reason}}.
 * No server, a dead server (monitored) or a lost connection fail the
 * attempt; the core's timeout and retries apply as for any provider.
 */
#ifndef CN_BEAM_PROVIDER_H
#define CN_BEAM_PROVIDER_H

#include "bridge.h"
#include "run_proc.h"

/* Register the provider "beam" with b->ctx. council_err. */
int cn_beam_provider_register(cn_bridge *b);

/* A message that arrived at a run process: handles the two reply shapes
 * above and returns 1, or returns 0 when msg is not one of them. */
int cn_beam_provider_handle_info(cn_bridge *b, cn_run_proc *rp, cn_slice msg);

/* The member server of rp went down: fail every call in flight. */
void cn_beam_provider_server_down(cn_run_proc *rp, cn_slice reason);

#endif
