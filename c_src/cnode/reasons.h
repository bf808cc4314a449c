/* reasons.h - the reason a core error becomes for a BEAM caller
 * ({error, Reason}): one table for the C node (bridge.c) and the NIF
 * (c_src/nif), so both backends answer alike. The names are fixed atoms of
 * docs/protocol.md, never user data. Both tables are also emitted into
 * priv/schema.json and include/council_schema.hrl (c_src/tools/schema_dump.c)
 * for lib/ and src/, which read them there instead of keeping copies. */
#ifndef CN_REASONS_H
#define CN_REASONS_H

/* How many errors have a reason of their own. */
#define CN_N_REASONS 4

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

#endif
