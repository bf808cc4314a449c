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
 * each), made at registration and freed with the context; the run
 * processes reach it through the module's hook (bridge.h). Loop thread
 * only.
 */
#ifndef CN_BEAM_TOOLS_H
#define CN_BEAM_TOOLS_H

#include "bridge.h"

/* Register the tool handler "beam" with b->ctx and its hook with b.
 * council_err (COUNCIL_EEXIST when registered already). */
int cn_beam_tools_register(cn_bridge *b);

/* Tool calls waiting for a reply (tests, stats). */
size_t cn_beam_tools_pending(const cn_bridge *b);

#endif
