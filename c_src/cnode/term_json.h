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
 *   object -> map whose keys become atoms only when they are in the
 *   caller's fixed key set and the object sits on an "atomized" path (see
 *   term_json_schema); every other key is a binary. strings -> binaries
 *   (or atoms for the values the schema lists, e.g. status), integers,
 *   floats, true/false atoms, null -> nil, arrays -> lists.
 * So no atom is ever created from user data.
 */
#ifndef COUNCIL_TERM_JSON_H
#define COUNCIL_TERM_JSON_H

#include <ei.h>
#include <jansson.h>

/* Which keys (and which string values) may become atoms. All arrays are
 * NULL-terminated lists of static strings. opaque_keys: the values under
 * these keys keep binary keys all the way down (user data, e.g. "aggregate",
 * "options"). atom_values: string values that turn into atoms when equal to
 * one of them and found under key value_key (e.g. "status"). */
typedef struct term_json_schema {
    const char *const *atom_keys;
    const char *const *opaque_keys;
    const char *value_key;
    const char *const *atom_values;
} term_json_schema;

/* The schema for results, summaries and event payloads of docs/protocol.md. */
extern const term_json_schema term_json_result_schema;

/* Append the term for j to x. schema may be NULL (every key a binary).
 * Returns 0, or -1 when ei fails to grow the buffer. */
int term_json_encode(ei_x_buff *x, const json_t *j, const term_json_schema *schema);

/* Decode the term at buf[*index] (already validated) into a new JSON value.
 * On success returns 0, *out owns a new reference and *index is past the
 * term. On failure returns -1 and writes a short static reason to *why.
 * max_depth bounds nesting (the validator bounds it too). */
int term_json_decode(const char *buf, int *index, int max_depth, json_t **out,
                     const char **why);

#endif
