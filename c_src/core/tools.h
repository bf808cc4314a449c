/* tools.h - running the tools a model member asks for.
 *
 * What it is for: one tool call from start to answer, whatever serves it:
 * a handler registered with council_tool_register (a C callback, or the C
 * node's BEAM bridge), or an "exec" program (the arguments JSON on stdin,
 * the result from stdout). Each call has a timeout; an abandoned call's
 * program is killed. The answer comes back through the done callback,
 * exactly once, never from inside tools_start.
 * Not for: deciding which tools to call or what the model is told
 * (provider_llm.c).
 */
#ifndef COUNCIL_TOOLS_H
#define COUNCIL_TOOLS_H

#include "council_internal.h"

/* ok 1: result is the tool's answer; ok 0: result says what went wrong.
 * result is borrowed for the callback. */
typedef void (*tools_done_fn)(void *arg, int ok, const char *result, size_t len);

/* Start a tool call for member call `call`. spec is the tool's entry in
 * the member's options.tools (NULL: the model named a tool that is not
 * there, answered as an error). name and the arguments (len bytes) are
 * copied. On COUNCIL_OK *out is the call, owned by the caller until done
 * fires or tools_abandon; errors: COUNCIL_ENOMEM. */
int tools_start(council_ctx *ctx, council_call *call, json_t *spec, const char *name,
                const char *args, size_t len, uint64_t timeout_ms, tools_done_fn done,
                void *arg, council_tool_call **out);

/* Abandon a call: done never fires, its handler's cancel runs, its program
 * is killed. NULL is a no-op. */
void tools_abandon(council_tool_call *tc);

/* Context free: unregister the handlers (release), kill programs still
 * running; tools_unreaped counts those not yet reaped; close_all closes
 * their handles. */
void tools_shutdown(council_ctx *ctx);
size_t tools_unreaped(council_ctx *ctx);
void tools_close_all(council_ctx *ctx);
/* The last step, once the loop has run the close callbacks. */
void tools_free_state(council_ctx *ctx);

#endif
