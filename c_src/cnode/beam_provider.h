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

/* Term helpers shared with beam_tools.c. s is one whole term (no version
 * byte). term_u64: an integer that fits 64 bits unsigned (0, or -1 for
 * anything else). term_binary: a binary; *p points into s (0 or -1).
 * reason_text: a reason term as text for an error message, into buf (cap
 * bytes, always terminated; a binary is copied as is, any other term is
 * printed, cut at cap - 1 bytes). */
int cn_beam_term_u64(cn_slice s, uint64_t *out);
int cn_beam_term_binary(cn_slice s, const char **p, size_t *len);
void cn_beam_reason_text(cn_slice r, char *buf, size_t cap);

#endif
