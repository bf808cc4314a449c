/* run_quota.c - a limit on runs in progress shared by several contexts
 * (council.h, council_run_quota): an atomic count and max, taken when a
 * run is created and given back when it ends, whatever thread its
 * context runs on. */
#include "council_internal.h"

#include <stdint.h>
#include <stdlib.h>

struct council_run_quota {
    size_t max; /* atomic; SIZE_MAX: no limit */
    size_t used; /* atomic */
};

council_run_quota *council_run_quota_new(size_t max)
{
    council_run_quota *q = calloc(1, sizeof *q);
    if (q)
        council_run_quota_set_max(q, max);
    return q;
}

void council_run_quota_set_max(council_run_quota *q, size_t max)
{
    if (q)
        __atomic_store_n(&q->max, max ? max : SIZE_MAX, __ATOMIC_RELAXED);
}

size_t council_run_quota_used(const council_run_quota *q)
{
    return q ? __atomic_load_n(&q->used, __ATOMIC_RELAXED) : 0;
}

void council_run_quota_free(council_run_quota *q) { free(q); }

bool run_quota_take(council_run_quota *q)
{
    if (!q)
        return true;
    size_t used = __atomic_load_n(&q->used, __ATOMIC_RELAXED);
    /* a compare-and-swap, so that a take that fails leaves the count as it
     * was (an add then an undo would make a concurrent take fail too) */
    do {
        if (used >= __atomic_load_n(&q->max, __ATOMIC_RELAXED))
            return false;
    } while (!__atomic_compare_exchange_n(&q->used, &used, used + 1, true, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    return true;
}

void run_quota_give(council_run_quota *q)
{
    if (q)
        __atomic_sub_fetch(&q->used, 1, __ATOMIC_ACQ_REL);
}

int council_ctx_set_run_quota(council_ctx *ctx, council_run_quota *q)
{
    if (!ctx)
        return COUNCIL_EINVAL;
    if (ctx->runs_active)
        return COUNCIL_ESTATE;
    ctx->quota = q;
    return COUNCIL_OK;
}
