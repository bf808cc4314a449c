/* council_json.h - the core's JSON values as jansson values, for hosts that
 * use jansson (the C node does).
 *
 * What it is for: council.h gives results and requests as JSON text
 * (parsed_json, aggregate_json, council_call_request,
 * council_route_request); a host that works
 * with jansson values anyway would parse that text again. These accessors
 * hand out the values the core already holds instead. They add nothing
 * else: every value here has its text form in council.h.
 * What it is not for: changing the core's data. Every value is borrowed and
 * must not be modified (json_copy or json_deep_copy it first), nor kept past
 * the lifetime given below unless the caller takes its own reference
 * (json_incref).
 *
 * This header includes council.h and <jansson.h>; link jansson (pkg-config
 * jansson) besides libcouncil. Same thread rule as council.h's accessors:
 * the loop thread, or any thread while the loop is not running.
 */
#ifndef COUNCIL_JSON_H
#define COUNCIL_JSON_H

#include <jansson.h>

#include "council.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The parsed ballot of a member result (vote, ranking, pairwise rounds),
 * the value whose text is mr->parsed_json; NULL when parsed_json is NULL
 * (or mr is NULL). Borrowed from the result: valid as long as mr is (see
 * council_run_result and council_event). Never fails. */
COUNCIL_API const json_t *council_member_result_parsed(const council_member_result *mr);

/* The aggregate of a round result (vote, ranking, pairwise, iterate), the
 * value whose text is rr->aggregate_json; NULL when aggregate_json is NULL
 * (or rr is NULL). Borrowed from the result, as above. Never fails. */
COUNCIL_API const json_t *council_round_result_aggregate(const council_round_result *rr);

/* The request of a member call as a JSON object: the value whose text
 * council_call_request gives ({"run_id", "council", "member_id", "round",
 * "attempt", "input", "answers", "instructions", ...}). Made on the first
 * call and kept with the call: borrowed, valid while the caller holds a
 * reference to call (for a provider: from start() until it answers or its
 * cancel() returns). Do not modify it: json_copy it to add keys. NULL
 * when out of memory (a later call tries again) or call is NULL. */
COUNCIL_API json_t *council_call_request_object(const council_call *call);

/* The request of a route as a JSON object: the value whose text
 * council_route_request gives ({"run_id", "council", "router", "options",
 * "round", "input", "members", "rounds"}). Made on the first call and kept
 * with the route: borrowed, valid while the caller holds a reference to rt
 * (for a router: from start() until it answers or its cancel() returns).
 * Do not modify it. NULL when out of memory (a later call tries again) or
 * rt is NULL. */
COUNCIL_API const json_t *council_route_request_object(const council_route *rt);

#ifdef __cplusplus
}
#endif

#endif
