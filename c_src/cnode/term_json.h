/* term_json.h - conversion between Erlang terms (ETF, via ei) and JSON
 * values (jansson), in both directions.
 *
 * What it is for: the core speaks JSON (specs in, results and event
 * payloads out); BEAM speaks terms. This module is the one place that maps
 * one onto the other, so specs sent as Elixir maps and results sent back as
 * maps follow a single documented rule.
 * What it is not for: validating ETF. Every buffer handed to
 * term_json_decode must already have passed term_check (the bounds-checked
 * validator); ei's decoders do not know the buffer length.
 *
 * Term -> JSON (term_json_decode):
 *   map -> object (keys: atom or binary, UTF-8), list -> array,
 *   binary -> string (must be UTF-8), integer -> integer (64-bit),
 *   float -> real, true/false -> boolean, nil/null/undefined -> null,
 *   any other atom -> string. Tuples, pids, refs, funs, bitstrings,
 *   improper lists and integers beyond 64 bits are refused.
 * JSON -> term (term_json_encode):
 *   object -> map with binary keys, strings -> binaries, integers, floats,
 *   true/false atoms, null -> nil, arrays -> lists. So no atom is ever
 *   created from user data (the result shapes with their atom keys are
 *   written by event_term.c, not through JSON).
 */
#ifndef COUNCIL_TERM_JSON_H
#define COUNCIL_TERM_JSON_H

#include <ei.h>
#include <jansson.h>

/* Append the term for j to x. Returns 0, or -1 when ei fails to grow the
 * buffer. */
int term_json_encode(ei_x_buff *x, const json_t *j);

/* Decode the term at buf[*index] (already validated) into a new JSON value.
 * On success returns 0, *out owns a new reference and *index is past the
 * term. On failure returns -1 and writes a short static reason to *why.
 * max_depth bounds nesting (the validator bounds it too). */
int term_json_decode(const char *buf, int *index, int max_depth, json_t **out,
                     const char **why);

#endif
