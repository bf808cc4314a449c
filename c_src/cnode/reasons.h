/* reasons.h - the reason a core error becomes for a BEAM caller
 * ({error, Reason}): one table for the C node (bridge.c) and the NIF
 * (c_src/nif), so both backends answer alike. The names are fixed atoms of
 * docs/protocol.md, never user data. */
#ifndef CN_REASONS_H
#define CN_REASONS_H

/* How many errors have a reason of their own. */
#define CN_N_REASONS 4

/* The table index of err's reason, or -1 when err has none (the caller
 * then says what the error means where it happened). */
int cn_reason_index(int err);

/* The reason at index (0 <= index < CN_N_REASONS). */
const char *cn_reason_name(int index);

#endif
