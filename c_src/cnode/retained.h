/* retained.h - the pids of run processes that have ended, for the runs the
 * core still retains: what answers {outcome_by_pid, Pid} (service.c), so a
 * caller whose call to a run pid met noproc can still read the outcome.
 *
 * Owns: one entry per ended run process (its pid's id, the run's registry
 * and id, and what tells that run from a later one under the same id),
 * never a reference on the run: the core alone decides how long a run is
 * retained. Bounded like retention itself: entries whose run the core no
 * longer retains leave (the oldest are checked at every new end, any entry
 * when it is looked up), and at most `max` are kept (the oldest leave
 * first; the node passes its --max-retained). Loop thread only.
 */
#ifndef CN_RETAINED_H
#define CN_RETAINED_H

#include <stddef.h>
#include <stdint.h>

#include "council.h"

typedef struct cn_retained cn_retained;

/* max 0 = 100000 (the core's default max_retained). NULL when out of
 * memory. */
cn_retained *cn_retained_new(council_ctx *ctx, size_t max);
/* NULL is a no-op. */
void cn_retained_free(cn_retained *r);

/* The process with this pid id (a local pid's num | serial << 32) ended;
 * its run is run. Out of memory: not remembered (logged). */
void cn_retained_add(cn_retained *r, uint64_t pid_id, const council_run *run);

/* The run whose process had this pid id, while the core retains it
 * (borrowed as council_run_find's); NULL otherwise. */
council_run *cn_retained_find(cn_retained *r, uint64_t pid_id);

size_t cn_retained_count(const cn_retained *r);

#endif
