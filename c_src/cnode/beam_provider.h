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
 *
 * Owns: the table of member calls in flight (one reference on each), made
 * at registration and freed with the context; the run processes reach it
 * through the module's hook (bridge.h). Loop thread only.
 */
#ifndef CN_BEAM_PROVIDER_H
#define CN_BEAM_PROVIDER_H

#include "bridge.h"

/* Register the provider "beam" with b->ctx and its hook with b. council_err
 * (COUNCIL_EEXIST when registered already). */
int cn_beam_provider_register(cn_bridge *b);

#endif
