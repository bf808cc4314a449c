/* remote_sub.h - run events delivered to BEAM pids.
 *
 * Owns: one core subscription per (topic, pid), a monitor per subscribed
 * pid (held by the service process) so a dead subscriber is removed, and a
 * one-event cache so an event going to many pids is encoded once.
 * Each event goes out as a plain SEND of the docs/protocol.md tuple. A
 * subscriber is cut off when it falls more than the core's queue bound
 * behind, when the connection to its node holds more than max_backlog bytes
 * not yet taken by the kernel (cn_node_backlogged: the peer stopped
 * reading), or when memory runs out while an event is prepared. It is then
 * sent {council_ex_overflow, Topic, Dropped} once (untagged, for tagged
 * subscribers too) and after that only terminal events: the run's terminal
 * event still reaches it (made from the run if the core had dropped it),
 * so nobody waits for an end that was cut away. A subscription to a run's
 * own topic ends by itself after that run's terminal event (nothing
 * follows it); a sub-council topic sees one nested run per member call, so
 * it lasts until unsubscribed or the subscriber goes.
 * The Elixir library subscribes one relay pid per node and topic (batched,
 * so the relay knows the topic of sub-council events whose run_id is the
 * sub-run's, and gets a turn's events in one message), so each event
 * crosses the wire once per node; a bare shell subscribes itself and gets
 * the plain tuples.
 */
#ifndef CN_REMOTE_SUB_H
#define CN_REMOTE_SUB_H

#include <stdbool.h>
#include <stddef.h>

#include "bridge.h"

typedef struct cn_rsubs cn_rsubs;

/* max: subscriptions in all, every topic and pid together (0 = 1000000),
 * so one peer cannot grow the table without bound by naming new topics.
 * NULL when out of memory. */
cn_rsubs *cn_rsubs_new(cn_bridge *b, size_t max);
/* Ends every subscription (no messages sent) and frees. NULL is a no-op. */
void cn_rsubs_free(cn_rsubs *rs);

/* flags for cn_rsubs_add */
enum {
    CN_RSUB_TAGGED = 1,  /* send {council_ex_event, Topic, Event} */
    CN_RSUB_BATCHED = 2, /* the events of one loop turn together, in order:
                            {council_ex_events, Topic, [Event, ...]} (at
                            most 64 KiB of events in one; a notice or the
                            run's terminal event sends what is held first) */
};

/* Subscribe pid (local or remote) to topic. Idempotent: an existing
 * (topic, pid) pair is left as it is. Returns 0, COUNCIL_ELIMIT (too many
 * subscribers on the topic, or the table's max reached), COUNCIL_EINVAL (empty topic), COUNCIL_ENOMEM,
 * or COUNCIL_EIO (the pid's node is not connected). */
int cn_rsubs_add(cn_rsubs *rs, const char *topic, size_t len, const cn_pid *pid,
                 int flags);
/* Whether (topic, pid) is subscribed now. */
bool cn_rsubs_has(const cn_rsubs *rs, const char *topic, size_t len, const cn_pid *pid);
/* Remove (topic, pid); 0, or COUNCIL_ENOTFOUND. */
int cn_rsubs_remove(cn_rsubs *rs, const char *topic, size_t len, const cn_pid *pid);
/* The pid is gone (its monitor fired): drop all of its subscriptions. */
void cn_rsubs_pid_down(cn_rsubs *rs, const cn_pid *pid);
size_t cn_rsubs_count(const cn_rsubs *rs);

#endif
