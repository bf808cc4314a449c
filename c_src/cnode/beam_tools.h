/* beam_tools.h - the tool handler "beam": tools of model members answered
 * by a BEAM process (the Elixir library's member server, which runs an
 * Elixir function per tool).
 *
 * A member of a model provider lists a tool with "handler": "beam". When
 * the model asks for it, the run's process sends
 *   {council_tool_call, RunPid, ToolCallId, MemberId, Name, Arguments}
 * to the run's member server (ToolCallId: an integer, council_tool_call_id;
 * MemberId, Name: binaries; Arguments: the JSON text the model wrote, a
 * binary). The server answers the run pid with
 *   {council_tool_reply, ToolCallId, {ok, Text} | {error, Text}}
 * (Text a binary; an {error, Reason} with another term is printed). The
 * text goes back to the model as the tool's result or error.
 * No member server, a dead server (monitored), a lost connection or a
 * malformed reply give the model an error result; the member call goes on.
 * A reply for a tool call that is no longer waiting (abandoned: timeout,
 * member call over, run cancelled) is dropped.
 *
 * Owns: the table of tool calls waiting for their reply (one reference on
 * each), kept in the bridge. Loop thread only.
 */
#ifndef CN_BEAM_TOOLS_H
#define CN_BEAM_TOOLS_H

#include "bridge.h"
#include "run_proc.h"

/* Register the tool handler "beam" with b->ctx and make the table (freed
 * when the context is freed). council_err (COUNCIL_EEXIST when registered
 * already). */
int cn_beam_tools_register(cn_bridge *b);

/* A message that arrived at rp's process: handles a
 * {council_tool_reply, Id, Result} and returns 1 (also when it is dropped:
 * unknown id, another run's call, a late reply), or returns 0 when msg is
 * not a tool reply. */
int cn_beam_tools_handle_info(cn_bridge *b, cn_run_proc *rp, cn_slice msg);

/* The member server of rp went down with reason (a term): every tool call
 * of rp still waiting gets an error result. */
void cn_beam_tools_server_down(cn_bridge *b, cn_run_proc *rp, cn_slice reason);

/* rp's process ends: forget its tool calls still in the table (normally
 * none: cancelling the run abandons them first). */
void cn_beam_tools_run_gone(cn_bridge *b, cn_run_proc *rp);

/* Tool calls waiting for a reply (tests, stats). */
size_t cn_beam_tools_pending(const cn_bridge *b);

#endif
