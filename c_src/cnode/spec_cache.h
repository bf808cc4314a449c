/* spec_cache.h - parsed council specs shared between runs started with the
 * same JSON text.
 *
 * What it is for: a BEAM caller sends the whole spec with every start; the
 * Elixir library sends the same JSON for every run of a council. Parsing it
 * once and sharing the (immutable, refcounted) council_spec saves the parse
 * and, above all, the per-run copy of the spec's memory.
 * What it is not for: validation rules (council_ctx_spec_from_json decides)
 * or errors (a text that fails to parse is not cached).
 *
 * A small fixed number of slots, least recently used replaced; a lookup
 * compares a 64-bit hash, then the text. Loop thread only.
 */
#ifndef CN_SPEC_CACHE_H
#define CN_SPEC_CACHE_H

#include <stddef.h>

#include "council.h"

typedef struct cn_spec_cache cn_spec_cache;

/* NULL when out of memory. */
cn_spec_cache *cn_spec_cache_new(council_ctx *ctx);
/* Drops the cache's references. NULL is a no-op. */
void cn_spec_cache_free(cn_spec_cache *c);

/* The spec for json[0..len): from the cache (a new reference for the
 * caller), or parsed with council_ctx_spec_from_json and then cached.
 * Returns what council_ctx_spec_from_json returns; err as there. */
int cn_spec_cache_get(cn_spec_cache *c, const char *json, size_t len,
                      council_spec **out, council_spec_error *err);

/* Whether a run could be started with the spec json[0..len), as far as
 * the spec goes: parsed and validated (through the cache, as
 * cn_spec_cache_get) and every member's provider registered in the
 * context (council_ctx_check_providers). Returns COUNCIL_OK, or the error
 * with err filled: COUNCIL_EPARSE, COUNCIL_ESPEC, COUNCIL_EPROVIDER (err
 * as those calls fill it), COUNCIL_ETOOBIG (err->field "spec"; a start
 * answers it request_too_large), COUNCIL_ENOMEM (err->field "spec"). Keeps no reference. What the
 * {validate, Spec} request of both the C node and the NIF answers from.
 * Loop thread only. */
int cn_spec_cache_check(cn_spec_cache *c, const char *json, size_t len,
                        council_spec_error *err);

#endif
