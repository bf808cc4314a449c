/* json_view.c - council_json.h: the jansson values the core already holds
 * for results and requests, handed to hosts that use jansson. Views only:
 * nothing here builds or changes a value. */
#include "council_internal.h"

#include "council_json.h"

const json_t *council_member_result_parsed(const council_member_result *mr)
{
    return mr ? ((const mres *)mr)->parsed : NULL; /* mres starts with its pub */
}

const json_t *council_round_result_aggregate(const council_round_result *rr)
{
    return rr ? ((const rres *)rr)->aggregate : NULL; /* rres starts with its pub */
}

json_t *council_call_request_object(const council_call *call)
{
    return call ? council_call_request_json(call) : NULL;
}

const json_t *council_route_request_object(const council_route *rt)
{
    return rt ? council_route_request_json(rt) : NULL;
}
