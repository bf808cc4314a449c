/* gen_server.h - the gen_server protocol on top of node.h's processes.
 *
 * Owns: the cn_gen wrapper state of each gen_server process and the From
 * handles it gives out. Decodes what GenServer/gen/proc_lib/sys send:
 *   {'$gen_call', {Pid, Tag}, Request}   -> handle_call
 *   {'$gen_cast', Msg}                   -> handle_cast
 *   {system, From, {terminate, Reason}}  -> reply ok, then exit Reason (handle_stop)
 *   {system, From, get_state}            -> reply State (get_state cb), which
 *                                           sys:get_state/1 returns as is
 *   {system, From, Other}                -> reply {error, {unknown_system_msg, Summary}}
 *   anything else                        -> handle_info
 * Replies go out as {Tag, Reply}, the Tag's bytes copied exactly as
 * received. When Tag is [alias|Ref] or [[alias|Ref]|_] the reply is sent
 * with ALIAS_SEND to Ref (a late reply is then dropped by the VM, as for a
 * real GenServer); otherwise with SEND to Pid.
 *
 * Replying later: cn_gen_from_dup() the borrowed From, keep it (it is small:
 * a compact pid and the tag bytes), then cn_gen_reply() and
 * cn_gen_from_free(). A From stays usable after the caller died: the reply
 * is then dropped by BEAM.
 */
#ifndef CN_GEN_SERVER_H
#define CN_GEN_SERVER_H

#include <ei.h>

#include "node.h"

typedef struct cn_gen_from {
    cn_pid pid;          /* the caller */
    unsigned char *tag;  /* tag term bytes as received */
    size_t tag_len;
    size_t alias_off;    /* alias ref inside tag (alias_len 0: plain tag) */
    size_t alias_len;
} cn_gen_from;

typedef struct cn_gen_ops {
    /* A call. Reply with cn_gen_reply now, or dup `from` and reply later.
     * `from` and `request` are borrowed for the duration of the call. */
    void (*handle_call)(cn_node *n, cn_proc *p, const cn_gen_from *from,
                        cn_slice request);
    void (*handle_cast)(cn_node *n, cn_proc *p, cn_slice msg);
    void (*handle_info)(cn_node *n, cn_proc *p, cn_slice msg);
    /* Append the state term (no version byte) to x for :sys.get_state;
     * return 0, or -1 for "not available". May be NULL. */
    int (*get_state)(cn_node *n, cn_proc *p, ei_x_buff *x);
    /* Monitors this process holds (cn_node_monitor) firing. May be NULL. */
    void (*handle_down)(cn_node *n, cn_proc *p, cn_slice ref, const cn_pid *who,
                        cn_slice reason);
    /* The process ends; free the user state here. May be NULL. */
    void (*terminate)(cn_node *n, cn_proc *p, cn_slice reason);
    /* An exit signal for this process (node.h's on_exit_signal: an EXIT
     * over a link, an EXIT2, `noconnection` for a link whose connection
     * dropped). May be NULL: the GenServer-like default,
     * cn_node_exit_signal_default. */
    void (*handle_exit)(cn_node *n, cn_proc *p, const cn_pid *from, cn_slice reason,
                        int via_link);
    /* GenServer.stop/3 (sys:terminate), called once `ok` has been sent:
     * the process must end with reason, now (cn_node_exit) or soon. May
     * be NULL: it exits at once. */
    void (*handle_stop)(cn_node *n, cn_proc *p, cn_slice reason);
} cn_gen_ops;

/* Spawns a gen_server process (name may be NULL). NULL on failure. */
cn_proc *cn_gen_start(cn_node *n, const cn_gen_ops *ops, void *user_state,
                      const char *name);
/* The same with a user state of state_size bytes (zeroed) made in one
 * block with the gen_server's own record: *state gets it (set only when
 * the process was spawned). That state goes with the process: terminate
 * must not free it, and it is freed once terminate has returned. NULL on
 * failure (nothing is left allocated). */
cn_proc *cn_gen_start_with(cn_node *n, const cn_gen_ops *ops, size_t state_size,
                           void **state, const char *name);
/* The user state given to cn_gen_start (or made by cn_gen_start_with). */
void *cn_gen_state(const cn_proc *p);
/* 1 if p is a gen_server process started with these ops. */
int cn_gen_is(const cn_proc *p, const cn_gen_ops *ops);

/* Sends {Tag, Reply}. 0, or -1 if no connection to the caller's node. */
int cn_gen_reply(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice reply);
/* Reply given as an ei_x_buff made with ei_x_new (no version byte). */
int cn_gen_reply_x(cn_node *n, cn_proc *p, const cn_gen_from *from,
                   const ei_x_buff *reply);
/* Sends the reply a handler built in x (made with ei_x_new). built < 0
 * says building it failed (x may hold a partial term): {error, enomem} is
 * sent instead; when even that cannot be encoded, nothing is sent and a
 * line is logged (the caller's call times out). 0, or -1 when nothing was
 * sent. */
int cn_gen_reply_built(cn_node *n, cn_proc *p, const cn_gen_from *from, ei_x_buff *x,
                       int built);
/* Appends {error, Reason} with an atom reason (one of the node's fixed
 * atoms). 0 or -1 (ENOMEM). */
int cn_gen_encode_error(ei_x_buff *x, const char *reason);
/* Appends a bounded summary of a term a caller sent, for error replies
 * that name it (never the term itself: a reply stays small whatever the
 * request's size): the atom itself when the term is an atom, the first
 * element when the term is a tuple that starts with an atom, otherwise the
 * atom naming its kind (integer, float, binary, bitstring, tuple, list,
 * map, pid, port, reference, fun). An atom echoed is one the caller sent,
 * so its VM has it already. 0 or -1 (ENOMEM). */
int cn_gen_encode_summary(ei_x_buff *x, cn_slice term);
/* Appends {error, {unknown_call, Summary}} (cn_gen_encode_summary of the
 * request), the answer to a call a process does not know. 0 or -1. */
int cn_gen_encode_unknown_call(ei_x_buff *x, cn_slice request);

/* Table-driven calls. A row matches a request that is the bare atom `tag`
 * (arity 0) or a tuple of `arity` elements whose first is the atom `tag`.
 * Its handler gets the row (its arg: what the handler needs to know about
 * the request, NULL when nothing) and the request's elements (el[0] the
 * tag; for a bare atom, el[0] is the request itself), appends the reply to
 * x and returns CN_GEN_REPLY, CN_GEN_NOREPLY (it keeps `from` to answer
 * later, or has answered), or -1: the reply could not be encoded ({error,
 * enomem} is sent instead, see cn_gen_reply_built). */
enum { CN_GEN_REPLY = 0, CN_GEN_NOREPLY = 1 };
#define CN_GEN_MAX_ARITY 8
struct cn_gen_call;
typedef int (*cn_gen_call_fn)(cn_node *n, cn_proc *p, const cn_gen_from *from,
                              const struct cn_gen_call *row, const cn_slice *el,
                              ei_x_buff *x);
typedef struct cn_gen_call {
    const char *tag;
    int arity;         /* 0: the bare atom; else the tuple's size (<= 8) */
    cn_gen_call_fn fn;
    const void *arg;
} cn_gen_call;
/* Answers a call through the first row that matches it; a request that no
 * row matches gets {error, {unknown_call, Summary}}. */
void cn_gen_dispatch(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice request,
                     const cn_gen_call *rows, size_t nrows);

/* Keep a From for a later reply. NULL on ENOMEM. */
cn_gen_from *cn_gen_from_dup(const cn_gen_from *f);
void cn_gen_from_free(cn_gen_from *f);

/* Parses a From term ({Pid, Tag}) into a borrowed cn_gen_from whose tag
 * points into `term`. 0 or -1. (Exposed for tests.) */
int cn_gen_parse_from(cn_node *n, cn_slice term, cn_gen_from *out);
/* The From of a call whose message is given only in part: msg is the
 * start of {'$gen_call', From, Request} (enough bytes for the first two
 * elements; Request may be cut anywhere). Fills a borrowed cn_gen_from as
 * cn_gen_parse_from does; 0, or -1 when msg is not such a start. */
int cn_gen_parse_call_head(cn_node *n, cn_slice msg, cn_gen_from *out);
/* Finds the alias ref inside a tag: 0 and (off,len) or -1 if none. */
int cn_gen_tag_alias(cn_slice tag, size_t *off, size_t *len);

#endif
