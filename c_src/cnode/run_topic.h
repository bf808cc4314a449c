/* run_topic.h - a run's own topic as the hosts make and read it: the C
 * node (service.c, run_proc.c, remote_sub.c) and the NIF (nif_service.c,
 * nif_run.c, nif_subs.c), which both build it.
 *
 * A run's events go to COUNCIL_TOPIC_PREFIX <> run_id (council.h). A start
 * that subscribes pids for its caller does so before the run exists, so
 * it fixes the run id first (cn_run_id_fix) and subscribes to the topic
 * of that id; a subscription to a run's own topic ends after that run's
 * terminal event (cn_is_run_topic tells it from a sub-council's topic).
 */
#ifndef CN_RUN_TOPIC_H
#define CN_RUN_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#include "council.h"

/* The topic of run id (id_len bytes): malloc'ed, NUL-terminated (the
 * caller frees); *len gets its length. NULL when out of memory. */
char *cn_run_topic(const char *run_id, size_t id_len, size_t *len);

/* Whether topic (len bytes) is the own topic of run id. */
bool cn_is_run_topic(const char *topic, size_t len, const char *run_id, size_t id_len);

/* A start's run id, when so gives none: one generated into gen_id, which
 * must outlive so's use. */
void cn_run_id_fix(council_start_opts *so, char gen_id[23]);

#endif
