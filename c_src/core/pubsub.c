/* pubsub.c - topic -> subscribers, bounded per-subscriber FIFOs, drained on
 * the libuv loop.
 *
 * What it is for: fan-out of run events in publish order without letting a
 * slow subscriber stall the publisher. What it is not for: knowing what a
 * message is (opaque, refcounted through pubsub_msg_ops) or who a
 * subscriber is (opaque arg).
 *
 * Structures.
 *   topic  - chained hash table keyed by crypto_shorthash of the name under a
 *            per-object random key; each topic holds a doubly linked list of
 *            its subscriptions. A topic is freed with its last subscription.
 *   sub    - a ring buffer of message pointers (power-of-two size, grown on
 *            demand up to queue_cap so idle subscribers cost little) and a
 *            place in the "ready" list when it has something to deliver or
 *            an overflow to report.
 *   ready  - FIFO of subscriptions with work; an idle handle is active only
 *            while the list is non-empty, so the loop neither spins nor
 *            exits early while events wait.
 *
 * Re-entrancy. Delivery never holds a pointer across a callback other than
 * the subscription being delivered to, which is marked `delivering`; an
 * unsubscribe of that subscription from inside its own callback unlinks it
 * at once but defers closed() and the free until the callback returns.
 * Everything else (subscribe, publish, unsubscribe of others) is immediate.
 */
#include "pubsub.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "council.h"

#define PUBSUB_DEFAULT_CAP 4096u
#define PUBSUB_MAX_TOPIC ((size_t)64 * 1024)
#define RING_MIN 8u
#define RING_KEEP 64u           /* larger rings are freed once empty */
#define TURN_BATCH 256u         /* messages per subscriber per turn */
#define IDLE_BUDGET 16384u      /* messages per idle callback */
#define TOPICS_MIN 16u

typedef struct topic topic;

struct pubsub_sub {
    topic *topic;                   /* NULL once unlinked */
    pubsub_sub *prev, *next;        /* in topic->subs */
    pubsub_sub *ready_prev, *ready_next;
    const pubsub_sub_ops *ops;
    void *arg;

    void **ring;
    size_t ring_mask;               /* ring size - 1; size 0 when ring NULL */
    size_t head, len;
    size_t cap;                     /* queue_cap */
    size_t dropped;

    unsigned in_ready : 1;
    unsigned cut_off : 1;           /* overflowed; report when drained */
    unsigned dead : 1;              /* unsubscribed; close when safe */
    unsigned delivering : 1;        /* inside one of its callbacks */
};

struct topic {
    topic *next;                    /* hash chain */
    uint64_t hash;
    pubsub_sub *subs, *subs_tail;
    size_t nsubs;
    size_t len;
    char name[];
};

struct pubsub {
    uv_loop_t *loop;
    uv_idle_t idle;
    pubsub_msg_ops msg_ops;
    size_t max_subs;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];

    topic **buckets;
    size_t mask;
    size_t ntopics;
    size_t nsubs;

    pubsub_sub *ready_head, *ready_tail;
    int draining;
};

/* ------------------------------------------------------------ topics */

static uint64_t topic_hash(const pubsub *ps, const char *name, size_t len)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h;

    crypto_shorthash(out, (const unsigned char *)name,
                     (unsigned long long)len, ps->hash_key);
    memcpy(&h, out, sizeof h);
    return h;
}

static topic **topic_link(const pubsub *ps, const char *name, size_t len,
                          uint64_t h)
{
    topic **link;

    for (link = &ps->buckets[h & ps->mask]; *link != NULL;
         link = &(*link)->next) {
        const topic *t = *link;

        if (t->hash == h && t->len == len && memcmp(t->name, name, len) == 0)
            return link;
    }
    return link;
}

static topic *topic_find(const pubsub *ps, const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > PUBSUB_MAX_TOPIC)
        return NULL;
    return *topic_link(ps, name, len, topic_hash(ps, name, len));
}

/* Rehash the topics into `size` buckets; on allocation failure keep the
 * old array (longer or emptier chains, nothing lost). */
static void topics_resize(pubsub *ps, size_t size)
{
    size_t i;
    topic **b = calloc(size, sizeof *b);

    if (b == NULL)
        return;
    for (i = 0; i <= ps->mask; i++) {
        topic *t = ps->buckets[i], *next;

        for (; t != NULL; t = next) {
            next = t->next;
            t->next = b[t->hash & (size - 1)];
            b[t->hash & (size - 1)] = t;
        }
    }
    free(ps->buckets);
    ps->buckets = b;
    ps->mask = size - 1;
}

static void topic_drop(pubsub *ps, topic *t)
{
    topic **link = &ps->buckets[t->hash & ps->mask];

    while (*link != t)
        link = &(*link)->next;
    *link = t->next;
    ps->ntopics--;
    free(t);
    /* the topics of many runs are gone: give the bucket array back, down
     * to a load of 1/2 (it doubles again at 1) */
    if (ps->mask + 1 > TOPICS_MIN && ps->ntopics < (ps->mask + 1) / 8) {
        size_t size = TOPICS_MIN;

        while (size < ps->ntopics * 2)
            size *= 2;
        topics_resize(ps, size);
    }
}

/* ------------------------------------------------------------ subscriptions */

static void ready_push(pubsub *ps, pubsub_sub *s)
{
    if (s->in_ready)
        return;
    s->in_ready = 1;
    s->ready_next = NULL;
    s->ready_prev = ps->ready_tail;
    if (ps->ready_tail)
        ps->ready_tail->ready_next = s;
    else
        ps->ready_head = s;
    ps->ready_tail = s;
}

static void ready_remove(pubsub *ps, pubsub_sub *s)
{
    if (!s->in_ready)
        return;
    if (s->ready_prev)
        s->ready_prev->ready_next = s->ready_next;
    else
        ps->ready_head = s->ready_next;
    if (s->ready_next)
        s->ready_next->ready_prev = s->ready_prev;
    else
        ps->ready_tail = s->ready_prev;
    s->ready_prev = s->ready_next = NULL;
    s->in_ready = 0;
}

/* Take s out of its topic (freeing the topic if it was the last one). */
static void sub_unlink(pubsub *ps, pubsub_sub *s)
{
    topic *t = s->topic;

    if (t == NULL)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        t->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        t->subs_tail = s->prev;
    s->prev = s->next = NULL;
    s->topic = NULL;
    ps->nsubs--;
    if (--t->nsubs == 0)
        topic_drop(ps, t);
}

/* Unref every queued message without delivering it. */
static void sub_drop_queue(pubsub *ps, pubsub_sub *s)
{
    while (s->len > 0) {
        void *msg = s->ring[s->head];

        s->head = (s->head + 1) & s->ring_mask;
        s->len--;
        ps->msg_ops.unref(msg);
    }
}

/* Last step of every subscription: closed(), then the memory. */
static void sub_close(pubsub *ps, pubsub_sub *s)
{
    const pubsub_sub_ops *ops = s->ops;
    void *arg = s->arg;

    ready_remove(ps, s);
    free(s->ring);
    free(s);
    if (ops->closed)
        ops->closed(arg);
}

/* Make room for one more message; 0 or COUNCIL_ENOMEM. */
static int sub_reserve(pubsub_sub *s)
{
    size_t size = s->ring ? s->ring_mask + 1 : 0, nsize, i;
    void **ring;

    if (s->len < size)
        return 0;
    nsize = size ? size * 2 : RING_MIN;
    ring = malloc(nsize * sizeof *ring);
    if (ring == NULL)
        return COUNCIL_ENOMEM;
    for (i = 0; i < s->len; i++)
        ring[i] = s->ring[(s->head + i) & s->ring_mask];
    free(s->ring);
    s->ring = ring;
    s->ring_mask = nsize - 1;
    s->head = 0;
    return 0;
}

/* ------------------------------------------------------------ delivery */

/* Deliver up to `budget` messages of s, then report the overflow if it is
 * drained and cut off. s is off the ready list on entry. Returns the number
 * of messages delivered. s may be freed when this returns. */
static size_t sub_turn(pubsub *ps, pubsub_sub *s, size_t budget)
{
    size_t done = 0;

    s->delivering = 1;
    while (done < budget && s->len > 0 && !s->dead) {
        void *msg = s->ring[s->head];

        s->head = (s->head + 1) & s->ring_mask;
        s->len--;
        s->ops->deliver(msg, s->arg);
        ps->msg_ops.unref(msg);
        done++;
    }
    if (!s->dead && s->len == 0 && s->cut_off) {
        /* The subscription ends here: out of the topic first, so that the
         * callback may subscribe again (and find no trace of this one). */
        sub_unlink(ps, s);
        s->dead = 1;
        if (s->ops->overflow)
            s->ops->overflow(s->dropped, s->arg);
    }
    s->delivering = 0;

    if (s->dead) {
        sub_drop_queue(ps, s);
        sub_close(ps, s);
    } else {
        /* A callback may have queued s again meanwhile; keep it listed
         * only if work is left. */
        ready_remove(ps, s);
        if (s->len > 0 || s->cut_off) {
            ready_push(ps, s);
        } else if (s->ring != NULL && s->ring_mask + 1 > RING_KEEP) {
            /* a burst is over: give its memory back */
            free(s->ring);
            s->ring = NULL;
            s->ring_mask = 0;
            s->head = 0;
        }
    }
    return done;
}

/* Run turns until the ready list is empty or `budget` messages went out
 * (budget 0 = no bound). */
static void drain(pubsub *ps, size_t budget)
{
    size_t sent = 0;

    ps->draining++;
    while (ps->ready_head != NULL && (budget == 0 || sent < budget)) {
        pubsub_sub *s = ps->ready_head;

        ready_remove(ps, s);
        sent += sub_turn(ps, s, TURN_BATCH);
    }
    ps->draining--;
}

static void idle_cb(uv_idle_t *h)
{
    pubsub *ps = h->data;

    drain(ps, IDLE_BUDGET);
    if (ps->ready_head == NULL)
        uv_idle_stop(&ps->idle);
}

static void wake(pubsub *ps)
{
    if (!uv_is_active((uv_handle_t *)&ps->idle))
        uv_idle_start(&ps->idle, idle_cb);
}

/* ------------------------------------------------------------ public API */

pubsub *pubsub_new(uv_loop_t *loop, const pubsub_msg_ops *msg_ops,
                   size_t max_subs_per_topic)
{
    pubsub *ps;

    if (loop == NULL || msg_ops == NULL || msg_ops->ref == NULL ||
        msg_ops->unref == NULL || sodium_init() < 0)
        return NULL;
    ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return NULL;
    ps->buckets = calloc(TOPICS_MIN, sizeof *ps->buckets);
    if (ps->buckets == NULL) {
        free(ps);
        return NULL;
    }
    ps->mask = TOPICS_MIN - 1;
    ps->loop = loop;
    ps->msg_ops = *msg_ops;
    ps->max_subs = max_subs_per_topic;
    randombytes_buf(ps->hash_key, sizeof ps->hash_key);
    uv_idle_init(loop, &ps->idle);
    ps->idle.data = ps;
    return ps;
}

static void free_on_close(uv_handle_t *h)
{
    free(h->data);
}

void pubsub_free(pubsub *ps)
{
    pubsub_sub *closing = NULL, *s;
    size_t i;

    if (ps == NULL)
        return;
    /* Detach everything first, then run the callbacks: closed() sees a
     * pubsub with no subscriptions left. */
    for (i = 0; i <= ps->mask; i++) {
        topic *t = ps->buckets[i], *tnext;

        for (; t != NULL; t = tnext) {
            pubsub_sub *snext;

            tnext = t->next;
            for (s = t->subs; s != NULL; s = snext) {
                snext = s->next;
                s->topic = NULL;
                s->in_ready = 0;
                s->next = closing;
                closing = s;
            }
            free(t);
        }
    }
    free(ps->buckets);
    ps->buckets = NULL;
    ps->ready_head = ps->ready_tail = NULL;
    ps->ntopics = ps->nsubs = 0;
    while (closing != NULL) {
        s = closing;
        closing = s->next;
        sub_drop_queue(ps, s);
        sub_close(ps, s);
    }
    sodium_memzero(ps->hash_key, sizeof ps->hash_key);
    uv_idle_stop(&ps->idle);
    uv_close((uv_handle_t *)&ps->idle, free_on_close);
}

int pubsub_subscribe(pubsub *ps, const char *topic_name, size_t topic_len,
                     const pubsub_sub_ops *ops, void *arg, size_t queue_cap,
                     pubsub_sub **out)
{
    uint64_t h;
    topic **link, *t;
    pubsub_sub *s;

    if (ps == NULL || topic_name == NULL || topic_len == 0 ||
        topic_len > PUBSUB_MAX_TOPIC || ops == NULL || ops->deliver == NULL)
        return COUNCIL_EINVAL;
    h = topic_hash(ps, topic_name, topic_len);
    link = topic_link(ps, topic_name, topic_len, h);
    t = *link;
    if (t != NULL && ps->max_subs != 0 && t->nsubs >= ps->max_subs)
        return COUNCIL_ELIMIT;

    s = calloc(1, sizeof *s);
    if (s == NULL)
        return COUNCIL_ENOMEM;
    if (t == NULL) {
        t = malloc(sizeof *t + topic_len);
        if (t == NULL) {
            free(s);
            return COUNCIL_ENOMEM;
        }
        t->next = NULL;
        t->hash = h;
        t->subs = t->subs_tail = NULL;
        t->nsubs = 0;
        t->len = topic_len;
        memcpy(t->name, topic_name, topic_len);
        *link = t;
        if (++ps->ntopics > ps->mask + 1)
            topics_resize(ps, (ps->mask + 1) * 2);
    }

    s->ops = ops;
    s->arg = arg;
    s->cap = queue_cap ? queue_cap : PUBSUB_DEFAULT_CAP;
    s->topic = t;
    s->prev = t->subs_tail;
    if (t->subs_tail)
        t->subs_tail->next = s;
    else
        t->subs = s;
    t->subs_tail = s;
    t->nsubs++;
    ps->nsubs++;
    if (out)
        *out = s;
    return 0;
}

void pubsub_unsubscribe(pubsub *ps, pubsub_sub *s)
{
    if (ps == NULL || s == NULL || s->dead)
        return;
    s->dead = 1;
    sub_unlink(ps, s);
    ready_remove(ps, s);
    sub_drop_queue(ps, s);
    if (!s->delivering)
        sub_close(ps, s);
    /* else sub_turn closes it when the callback returns */
}

pubsub_sub *pubsub_find(pubsub *ps, const char *topic_name, size_t topic_len,
                        const void *arg)
{
    topic *t;
    pubsub_sub *s;

    if (ps == NULL)
        return NULL;
    t = topic_find(ps, topic_name, topic_len);
    if (t == NULL)
        return NULL;
    for (s = t->subs; s != NULL; s = s->next)
        if (s->arg == arg)
            return s;
    return NULL;
}

int pubsub_publish(pubsub *ps, const char *topic_name, size_t topic_len,
                   void *msg)
{
    topic *t;
    pubsub_sub *s;
    size_t queued = 0;

    if (ps == NULL)
        return COUNCIL_EINVAL;
    t = topic_find(ps, topic_name, topic_len);
    if (t == NULL)
        return 0;

    /* Reserve first, so that an allocation failure leaves nothing queued. */
    for (s = t->subs; s != NULL; s = s->next)
        if (!s->cut_off && s->len < s->cap && sub_reserve(s) != 0)
            return COUNCIL_ENOMEM;

    for (s = t->subs; s != NULL; s = s->next) {
        if (s->cut_off) {
            s->dropped++;
            continue;
        }
        if (s->len >= s->cap) {
            s->cut_off = 1;
            s->dropped = 1;
            ready_push(ps, s);
            continue;
        }
        ps->msg_ops.ref(msg);
        s->ring[(s->head + s->len) & s->ring_mask] = msg;
        s->len++;
        queued++;
        ready_push(ps, s);
    }
    if (ps->ready_head != NULL)
        wake(ps);
    return queued > INT_MAX ? INT_MAX : (int)queued;
}

void pubsub_flush(pubsub *ps)
{
    if (ps == NULL || ps->draining)
        return;
    drain(ps, 0);
    if (ps->ready_head == NULL && uv_is_active((uv_handle_t *)&ps->idle))
        uv_idle_stop(&ps->idle);
}

size_t pubsub_topic_count(const pubsub *ps, const char *topic_name,
                          size_t topic_len)
{
    const topic *t;

    if (ps == NULL)
        return 0;
    t = topic_find(ps, topic_name, topic_len);
    return t ? t->nsubs : 0;
}

size_t pubsub_total_subscriptions(const pubsub *ps)
{
    return ps ? ps->nsubs : 0;
}
