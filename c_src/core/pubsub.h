/* pubsub.h - topic-based publish/subscribe with bounded per-subscriber
 * queues, drained on the libuv loop.
 *
 * What it is for: fan-out of run events to any number of subscribers, in
 * publish order, without a slow subscriber ever stalling the publisher.
 * Messages are opaque refcounted objects: the publisher hands one message,
 * each subscriber queue takes a reference (msg_ref), delivery drops it
 * (msg_unref). Nothing is copied per subscriber.
 *
 * Delivery is asynchronous: pubsub_publish only enqueues; the queues are
 * drained from the loop (an idle/check handle), so a deliver callback may
 * call any API, including publish, subscribe and unsubscribe.
 *
 * Overflow policy: when a subscriber's queue holds queue_cap undelivered
 * messages and another arrives, that subscriber is cut off: its queued
 * messages are still delivered in order, then overflow(dropped, arg) is
 * called once and the subscription is removed. No message is skipped
 * in the middle of a stream. `dropped` counts every message published to the
 * topic from the one that did not fit until the report. Until overflow() is
 * called the subscription still exists (pubsub_find, pubsub_topic_count and
 * the per-topic limit see it); unsubscribing it before then drops the queue
 * and calls closed() without overflow().
 *
 * Callbacks may not call pubsub_free. pubsub_flush from inside a callback
 * returns at once (the drain already running continues).
 *
 * Not thread-safe: loop thread only.
 */
#ifndef COUNCIL_PUBSUB_H
#define COUNCIL_PUBSUB_H

#include <stddef.h>
#include <uv.h>

typedef struct pubsub pubsub;
typedef struct pubsub_sub pubsub_sub;

typedef struct pubsub_msg_ops {
    void (*ref)(void *msg);
    void (*unref)(void *msg);
} pubsub_msg_ops;

typedef struct pubsub_sub_ops {
    /* One message, in publish order. The message is borrowed for the call. */
    void (*deliver)(void *msg, void *arg);
    /* The subscription was cut off after `dropped` messages did not fit.
     * Called once; the subscription no longer exists afterwards. May be NULL. */
    void (*overflow)(size_t dropped, void *arg);
    /* The subscription is gone (unsubscribe, overflow, pubsub_free):
     * release arg here. May be NULL. */
    void (*closed)(void *arg);
} pubsub_sub_ops;

/* New pub/sub on loop. max_subs_per_topic: 0 = no bound.
 * Returns NULL when out of memory. */
pubsub *pubsub_new(uv_loop_t *loop, const pubsub_msg_ops *msg_ops,
                   size_t max_subs_per_topic);

/* Drop every subscription (closed() called for each, queued messages
 * unref'd without delivery) and free. The idle handle is closed on the loop;
 * run the loop once more before closing it. NULL is a no-op. */
void pubsub_free(pubsub *ps);

/* Subscribe to topic (bytes copied). queue_cap: maximum undelivered
 * messages (0 = default 4096). *out receives the handle (owned by pubsub,
 * valid until closed() is called). Returns 0 or a negative council_err:
 * COUNCIL_ELIMIT (too many subscribers on the topic), COUNCIL_ENOMEM,
 * COUNCIL_EINVAL (empty topic). */
int pubsub_subscribe(pubsub *ps, const char *topic, size_t topic_len,
                     const pubsub_sub_ops *ops, void *arg, size_t queue_cap,
                     pubsub_sub **out);

/* Remove a subscription. Undelivered messages are dropped; closed() is
 * called (possibly later, from the loop, if called during delivery: when
 * the subscription's own callback returns). The subscription leaves its
 * topic at once. While closed() is pending (inside the subscription's own
 * deliver or overflow callback) a further call is a no-op; after closed()
 * the handle is gone. */
void pubsub_unsubscribe(pubsub *ps, pubsub_sub *sub);

/* Find the subscription of (topic, arg), for callers that key by arg. */
pubsub_sub *pubsub_find(pubsub *ps, const char *topic, size_t topic_len,
                        const void *arg);

/* Enqueue msg for every current subscriber of topic. Returns the number of
 * subscribers it was queued for (>= 0) or COUNCIL_ENOMEM. */
int pubsub_publish(pubsub *ps, const char *topic, size_t topic_len, void *msg);

/* Deliver everything queued now, synchronously (used by tests and by
 * council_ctx_run before returning), including what callbacks publish
 * meanwhile: it returns when no queue holds anything, so callbacks that
 * republish to themselves forever make it loop forever. */
void pubsub_flush(pubsub *ps);

size_t pubsub_topic_count(const pubsub *ps, const char *topic, size_t topic_len);
size_t pubsub_total_subscriptions(const pubsub *ps);

#endif
