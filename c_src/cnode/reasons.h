/* reasons.h - the reason a core error becomes for a BEAM caller
 * ({error, Reason}): one table for the C node (bridge.c) and the NIF
 * (c_src/nif), so both backends answer alike, and the only place these
 * names are written: code that replies with one of these errors looks it
 * up here by its council_err. The names are fixed atoms of
 * docs/protocol.md, never user data. This table and the call exits' are
 * also emitted into priv/schema.json and include/council_schema.hrl
 * (c_src/tools/schema_dump.c) for lib/ and src/, which read them there
 * instead of keeping copies. Last, the texts a "beam" request fails with
 * in either host. */
#ifndef CN_REASONS_H
#define CN_REASONS_H

#include <stddef.h>

/* How many errors have a reason of their own. */
#define CN_N_REASONS 7

/* The table index of err's reason, or -1 when err has none (the caller
 * then says what the error means where it happened). */
int cn_reason_index(int err);

/* The reason at index (0 <= index < CN_N_REASONS). */
const char *cn_reason_name(int index);

/* How a BEAM caller reads the exit that ends its gen_server call to a run
 * pid or to the service: the exit (the atom, or the first element of a
 * tuple of `arity` when arity > 0) and the reason it stands for. A run's
 * process exits `normal` when its run has ended (docs/protocol.md, "Calls
 * on a run pid"), so a call that meets it reads noproc; a call to a lost
 * node exits {nodedown, Node}, read noconnection. Any other exit reads as
 * itself. */
typedef struct cn_call_exit {
    const char *exit;
    int arity;
    const char *reason;
} cn_call_exit;

#define CN_N_CALL_EXITS 2

/* The entry at index (0 <= index < CN_N_CALL_EXITS). */
const cn_call_exit *cn_call_exit_at(int index);

/* The "beam" provider, tool handler and router: a run's requests served
 * by its member server (a BEAM process given at start), in the C node
 * (beam_provider.c, beam_tools.c, beam_router.c) and in the NIF
 * (nif_beam.c). When a request cannot be served it fails (a tool call:
 * its error result) with one of these texts, the same in both hosts. */
typedef enum cn_beam_kind { CN_BEAM_PROVIDER, CN_BEAM_TOOL, CN_BEAM_ROUTER } cn_beam_kind;

typedef enum cn_beam_failure {
    CN_BEAM_NO_PROCESS,   /* the run has no process on this node (a run
                             inside a sub-council) */
    CN_BEAM_NO_SERVER,    /* no member server: none given at start, or it
                             went down */
    CN_BEAM_UNREACHABLE,  /* the request could not be sent to the server */
    CN_BEAM_MALFORMED,    /* the server's reply is not of the reply's shape */
    /* the router's own (NULL for the other kinds): */
    CN_BEAM_NOT_IDS,      /* the reply is not {ok, [MemberId]} */
    CN_BEAM_TOO_MANY_IDS, /* more ids than a council has members */
    CN_BEAM_IDS_NOT_BINARIES,
    CN_N_BEAM_FAILURES
} cn_beam_failure;

/* The text a request of kind fails with for failure: a fixed string, or
 * NULL for a router's failure of another kind. */
const char *cn_beam_failure_text(cn_beam_kind kind, cn_beam_failure failure);

/* Into msg (n bytes, always terminated, cut to fit): "<kind>: member server
 * down: <why>", what each of a run's waiting requests fails with when its
 * member server goes down (why: the exit reason as text). */
void cn_beam_server_down_text(char *msg, size_t n, cn_beam_kind kind, const char *why);

#endif
