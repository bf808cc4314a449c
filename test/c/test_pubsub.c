/* test_pubsub.c - pubsub.c: ordered fan-out, bounded queues, overflow,
 * re-entrant callbacks, refcount balance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "council.h"
/* white-box suite (tests the core's pub/sub module itself): built with -Ic_src/core, see the Makefile */
#include "pubsub.h"

/* ------------------------------------------------------------ messages */

typedef struct msg {
    long refs;
    size_t seq;
} msg;

static size_t n_refs, n_unrefs, n_live;

static void msg_ref(void *p)
{
    msg *m = p;

    assert_true(m->refs > 0);
    m->refs++;
    n_refs++;
}

static void msg_unref(void *p)
{
    msg *m = p;

    assert_true(m->refs > 0);
    n_unrefs++;
    if (--m->refs == 0) {
        n_live--;
        free(m);
    }
}

static const pubsub_msg_ops MSG_OPS = {msg_ref, msg_unref};

static msg *msg_new(size_t seq)
{
    msg *m = malloc(sizeof *m);

    assert_non_null(m);
    m->refs = 1;
    m->seq = seq;
    n_live++;
    return m;
}

/* Publish a fresh message the way the run engine will: one reference held
 * by the publisher for the call, dropped after. */
static int publish(pubsub *ps, const char *topic, size_t seq)
{
    msg *m = msg_new(seq);
    int n = pubsub_publish(ps, topic, strlen(topic), m);

    /* drop the publisher's own reference (not counted: n_refs/n_unrefs
     * count the queues' references only) */
    if (--m->refs == 0) {
        n_live--;
        free(m);
    }
    return n;
}

/* ------------------------------------------------------------ subscribers */

typedef struct rec {
    pubsub *ps;
    pubsub_sub *sub;
    size_t got;             /* messages delivered */
    size_t last;            /* seq of the last one */
    int in_order;
    size_t overflows, dropped;
    size_t closed;
    int in_callback;
    int closed_inside_callback;

    /* scripted behaviour */
    size_t unsub_self_at;           /* 0 = never */
    struct rec *unsub_other;
    size_t unsub_other_at;
    const char *pub_topic;          /* publish here when got == pub_at */
    size_t pub_at, pub_seq;
    struct rec *sub_new;            /* subscribe this one at sub_at */
    const char *sub_topic;
    size_t sub_at;
    int resubscribe_on_overflow;
    const char *topic;
} rec;

static const pubsub_sub_ops REC_OPS;

static void rec_init(rec *r, pubsub *ps)
{
    memset(r, 0, sizeof *r);
    r->ps = ps;
    r->in_order = 1;
}

static void rec_deliver(void *p, void *arg)
{
    const msg *m = p;
    rec *r = arg;

    assert_int_equal(r->closed, 0);
    assert_true(m->refs > 0);
    r->in_callback = 1;
    if (m->seq != r->last + 1)
        r->in_order = 0;
    r->last = m->seq;
    r->got++;
    if (r->unsub_self_at && r->got == r->unsub_self_at)
        pubsub_unsubscribe(r->ps, r->sub);
    if (r->unsub_other && r->got == r->unsub_other_at)
        pubsub_unsubscribe(r->ps, r->unsub_other->sub);
    if (r->pub_topic && r->got == r->pub_at)
        publish(r->ps, r->pub_topic, r->pub_seq);
    if (r->sub_new && r->got == r->sub_at)
        assert_int_equal(pubsub_subscribe(r->ps, r->sub_topic,
                                          strlen(r->sub_topic), &REC_OPS,
                                          r->sub_new, 0, &r->sub_new->sub), 0);
    r->in_callback = 0;
}

static void rec_overflow(size_t dropped, void *arg)
{
    rec *r = arg;

    assert_int_equal(r->closed, 0);
    r->overflows++;
    r->dropped = dropped;
    if (r->resubscribe_on_overflow) {
        r->resubscribe_on_overflow = 0;
        r->last = 0;
        assert_int_equal(pubsub_subscribe(r->ps, r->topic, strlen(r->topic),
                                          &REC_OPS, r, 1000, &r->sub), 0);
    }
}

static void rec_closed(void *arg)
{
    rec *r = arg;

    if (r->in_callback)
        r->closed_inside_callback = 1;
    r->closed++;
}

static const pubsub_sub_ops REC_OPS = {rec_deliver, rec_overflow, rec_closed};

static void sub(pubsub *ps, rec *r, const char *topic, size_t cap)
{
    r->topic = topic;
    assert_int_equal(pubsub_subscribe(ps, topic, strlen(topic), &REC_OPS, r,
                                      cap, &r->sub), 0);
}

/* ------------------------------------------------------------ fixtures */

typedef struct fx {
    uv_loop_t loop;
    pubsub *ps;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);

    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    f->ps = pubsub_new(&f->loop, &MSG_OPS, 0);
    if (f->ps == NULL)
        return -1;
    n_refs = n_unrefs = n_live = 0;
    *state = f;
    return 0;
}

/* Every test ends here: free, run the loop to close the handle, and check
 * that every queue reference was given back and no message is alive. */
static int teardown(void **state)
{
    fx *f = *state;

    pubsub_free(f->ps);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    assert_int_equal(n_refs, n_unrefs);
    assert_int_equal(n_live, 0);
    return 0;
}

/* Free the fixture's pubsub while the test's stack records still exist:
 * closed() writes into them. teardown's pubsub_free(NULL) is then a no-op. */
static void end(fx *f)
{
    pubsub_free(f->ps);
    f->ps = NULL;
}

/* ------------------------------------------------------------ tests */

static void delivery_is_asynchronous_and_loop_is_not_kept_alive(void **state)
{
    fx *f = *state;
    rec a;

    rec_init(&a, f->ps);
    assert_false(uv_loop_alive(&f->loop));
    sub(f->ps, &a, "t", 0);
    assert_false(uv_loop_alive(&f->loop));
    assert_int_equal(publish(f->ps, "t", 1), 1);
    assert_int_equal(a.got, 0);             /* nothing delivered inside */
    assert_true(uv_loop_alive(&f->loop));   /* pending work keeps it alive */
    uv_run(&f->loop, UV_RUN_DEFAULT);       /* returns once drained */
    assert_int_equal(a.got, 1);
    assert_false(uv_loop_alive(&f->loop));
    assert_int_equal(n_refs, 1);
    assert_int_equal(n_unrefs, 1);
    end(f);
    assert_int_equal(a.closed, 1);
}

static void subscribe_before_any_publish_misses_nothing(void **state)
{
    fx *f = *state;
    rec a;

    rec_init(&a, f->ps);
    assert_int_equal(publish(f->ps, "council_ex:run:r1", 1), 0);
    assert_int_equal(pubsub_topic_count(f->ps, "council_ex:run:r1", 17), 0);
    sub(f->ps, &a, "council_ex:run:r1", 0);
    assert_int_equal(pubsub_topic_count(f->ps, "council_ex:run:r1", 17), 1);
    a.last = 0;
    for (size_t i = 1; i <= 100; i++)
        assert_int_equal(publish(f->ps, "council_ex:run:r1", i), 1);
    pubsub_flush(f->ps);
    assert_int_equal(a.got, 100);
    assert_true(a.in_order);
    /* other topics, including prefixes, are not delivered */
    assert_int_equal(publish(f->ps, "council_ex:run:r", 1), 0);
    assert_int_equal(publish(f->ps, "council_ex:run:r1:sub:m", 1), 0);
    pubsub_flush(f->ps);
    assert_int_equal(a.got, 100);
    end(f);
    assert_int_equal(a.closed, 1);
}

/* 100 subscribers x 10k messages, drained by the loop in slices. */
static void many_subscribers_each_see_every_message_in_order(void **state)
{
    fx *f = *state;
    enum { SUBS = 100, N = 10000 };
    rec *r = calloc(SUBS, sizeof *r);
    size_t i;

    assert_non_null(r);
    for (i = 0; i < SUBS; i++) {
        rec_init(&r[i], f->ps);
        sub(f->ps, &r[i], "fan", i % 2 ? 0 : 1000);
    }
    for (i = 1; i <= N; i++) {
        assert_int_equal(publish(f->ps, "fan", i), SUBS);
        if (i % 100 == 0)       /* partial drains: one idle pass each */
            uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (i = 0; i < SUBS; i++) {
        assert_int_equal(r[i].got, N);
        assert_int_equal(r[i].last, N);
        assert_true(r[i].in_order);
        assert_int_equal(r[i].overflows, 0);
    }
    assert_int_equal(n_refs, (size_t)SUBS * N);
    assert_int_equal(n_unrefs, (size_t)SUBS * N);
    assert_int_equal(n_live, 0);
    for (i = 0; i < SUBS; i++)
        pubsub_unsubscribe(f->ps, r[i].sub);
    for (i = 0; i < SUBS; i++)
        assert_int_equal(r[i].closed, 1);
    assert_int_equal(pubsub_total_subscriptions(f->ps), 0);
    free(r);
}

static void flush_delivers_synchronously_including_what_callbacks_publish(
    void **state)
{
    fx *f = *state;
    rec a, b;

    rec_init(&a, f->ps);
    rec_init(&b, f->ps);
    sub(f->ps, &a, "x", 0);
    sub(f->ps, &b, "y", 0);
    a.pub_topic = "y";          /* a relays its 3rd message to y */
    a.pub_at = 3;
    a.pub_seq = 1;
    for (size_t i = 1; i <= 5; i++)
        publish(f->ps, "x", i);
    pubsub_flush(f->ps);
    assert_int_equal(a.got, 5);
    assert_int_equal(b.got, 1);
    assert_false(uv_loop_alive(&f->loop));
    end(f);
    assert_int_equal(a.closed + b.closed, 2);
}

static void unsubscribe_self_inside_deliver(void **state)
{
    fx *f = *state;
    rec a, b;

    rec_init(&a, f->ps);
    rec_init(&b, f->ps);
    sub(f->ps, &a, "t", 0);
    sub(f->ps, &b, "t", 0);
    a.unsub_self_at = 5;
    for (size_t i = 1; i <= 20; i++)
        publish(f->ps, "t", i);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.got, 5);             /* nothing after unsubscribe */
    assert_int_equal(a.closed, 1);
    assert_false(a.closed_inside_callback); /* closed after deliver returned */
    assert_int_equal(a.overflows, 0);
    assert_int_equal(b.got, 20);
    assert_true(b.in_order);
    assert_int_equal(pubsub_topic_count(f->ps, "t", 1), 1);
    assert_null(pubsub_find(f->ps, "t", 1, &a));
    assert_ptr_equal(pubsub_find(f->ps, "t", 1, &b), b.sub);
    /* the 15 messages queued for a were unref'd undelivered */
    assert_int_equal(n_refs, 40);
    assert_int_equal(n_unrefs, 40);
    end(f);
    assert_int_equal(a.closed + b.closed, 2);
}

static void unsubscribe_other_inside_deliver(void **state)
{
    fx *f = *state;
    rec a, b, c;

    rec_init(&a, f->ps);
    rec_init(&b, f->ps);
    rec_init(&c, f->ps);
    sub(f->ps, &a, "t", 0);
    sub(f->ps, &b, "t", 0);
    sub(f->ps, &c, "t", 0);
    a.unsub_other = &b;         /* a removes b before b saw anything */
    a.unsub_other_at = 1;
    c.unsub_other = &a;         /* c removes a in the middle */
    c.unsub_other_at = 300;
    for (size_t i = 1; i <= 1000; i++)
        publish(f->ps, "t", i);
    pubsub_flush(f->ps);
    assert_int_equal(b.got, 0);
    assert_int_equal(b.closed, 1);
    assert_true(a.got >= 300 && a.got < 1000);   /* cut mid-stream, in order */
    assert_true(a.in_order);
    assert_int_equal(a.closed, 1);
    assert_int_equal(c.got, 1000);
    assert_true(c.in_order);
    assert_int_equal(pubsub_total_subscriptions(f->ps), 1);
    end(f);
    assert_int_equal(a.closed + b.closed + c.closed, 3);
}

static void subscribe_and_publish_inside_deliver(void **state)
{
    fx *f = *state;
    rec a, late;

    rec_init(&a, f->ps);
    rec_init(&late, f->ps);
    sub(f->ps, &a, "t", 0);
    a.sub_new = &late;          /* a subscribes `late` to t at its 2nd msg */
    a.sub_topic = "t";
    a.sub_at = 2;
    a.pub_topic = "t";          /* and publishes seq 100 at its 3rd */
    a.pub_at = 3;
    a.pub_seq = 100;
    for (size_t i = 1; i <= 5; i++)
        publish(f->ps, "t", i);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.got, 6);
    assert_int_equal(a.last, 100);      /* after 5: publish order kept */
    assert_int_equal(late.got, 1);      /* only what came after it joined */
    assert_int_equal(late.last, 100);
    assert_int_equal(pubsub_topic_count(f->ps, "t", 1), 2);
    end(f);
    assert_int_equal(a.closed + late.closed, 2);
}

static void overflow_is_reported_once_and_others_keep_everything(void **state)
{
    fx *f = *state;
    rec slow, fast1, fast2;
    size_t i;

    rec_init(&slow, f->ps);
    rec_init(&fast1, f->ps);
    rec_init(&fast2, f->ps);
    sub(f->ps, &fast1, "t", 100);
    sub(f->ps, &slow, "t", 10);
    sub(f->ps, &fast2, "t", 0);
    for (i = 1; i <= 10; i++)
        assert_int_equal(publish(f->ps, "t", i), 3);
    for (; i <= 25; i++)
        assert_int_equal(publish(f->ps, "t", i), 2);
    /* until the overflow is reported the subscription still exists */
    assert_int_equal(pubsub_topic_count(f->ps, "t", 1), 3);
    assert_int_equal(slow.overflows, 0);
    pubsub_flush(f->ps);
    assert_int_equal(slow.got, 10);         /* what fitted, in order */
    assert_int_equal(slow.last, 10);
    assert_true(slow.in_order);
    assert_int_equal(slow.overflows, 1);
    assert_int_equal(slow.dropped, 15);
    assert_int_equal(slow.closed, 1);
    assert_null(pubsub_find(f->ps, "t", 1, &slow));
    assert_int_equal(pubsub_topic_count(f->ps, "t", 1), 2);

    for (; i <= 60; i++)
        assert_int_equal(publish(f->ps, "t", i), 2);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(fast1.got, 60);
    assert_int_equal(fast2.got, 60);
    assert_true(fast1.in_order && fast2.in_order);
    assert_int_equal(slow.got, 10);
    assert_int_equal(slow.overflows, 1);
    assert_int_equal(slow.closed, 1);
    /* queue refs: 10 for slow, 60 + 60 for the others */
    assert_int_equal(n_refs, 130);
    end(f);
    assert_int_equal(slow.closed + fast1.closed + fast2.closed, 3);
}

/* A queue_cap of 1 overflows on the second undelivered message; a
 * subscriber may subscribe again from its overflow callback. */
static void overflow_callback_may_resubscribe(void **state)
{
    fx *f = *state;
    rec a;

    rec_init(&a, f->ps);
    sub(f->ps, &a, "t", 1);
    a.resubscribe_on_overflow = 1;
    publish(f->ps, "t", 1);
    publish(f->ps, "t", 2);
    publish(f->ps, "t", 3);
    pubsub_flush(f->ps);
    assert_int_equal(a.got, 1);
    assert_int_equal(a.overflows, 1);
    assert_int_equal(a.dropped, 2);
    /* closed() of the old subscription came after the new one was made */
    assert_int_equal(a.closed, 1);
    assert_ptr_equal(pubsub_find(f->ps, "t", 1, &a), a.sub);
    a.closed = 0;                       /* the new subscription is live */
    publish(f->ps, "t", 1);
    pubsub_flush(f->ps);
    assert_int_equal(a.got, 2);
    pubsub_unsubscribe(f->ps, a.sub);
    assert_int_equal(a.closed, 1);
}

static void unsubscribing_a_cut_off_subscription_skips_overflow(void **state)
{
    fx *f = *state;
    rec a;

    rec_init(&a, f->ps);
    sub(f->ps, &a, "t", 2);
    for (size_t i = 1; i <= 5; i++)
        publish(f->ps, "t", i);
    pubsub_unsubscribe(f->ps, a.sub);
    assert_int_equal(a.closed, 1);
    pubsub_flush(f->ps);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.got, 0);
    assert_int_equal(a.overflows, 0);
    assert_int_equal(a.closed, 1);
}

static void max_subscribers_per_topic_is_elimit(void **state)
{
    fx *f = *state;
    pubsub *ps = pubsub_new(&f->loop, &MSG_OPS, 3);
    rec r[5];
    pubsub_sub *s;
    int i;

    assert_non_null(ps);
    for (i = 0; i < 5; i++)
        rec_init(&r[i], ps);
    for (i = 0; i < 3; i++)
        sub(ps, &r[i], "t", 0);
    assert_int_equal(pubsub_subscribe(ps, "t", 1, &REC_OPS, &r[3], 0, &s),
                     COUNCIL_ELIMIT);
    assert_int_equal(r[3].closed, 0);   /* never existed: no closed() */
    sub(ps, &r[4], "other", 0);         /* the bound is per topic */
    assert_int_equal(pubsub_topic_count(ps, "t", 1), 3);
    pubsub_unsubscribe(ps, r[0].sub);
    sub(ps, &r[3], "t", 0);
    assert_int_equal(pubsub_total_subscriptions(ps), 4);
    pubsub_free(ps);
    for (i = 1; i < 5; i++)
        assert_int_equal(r[i].closed, 1);
}

static void bad_arguments_are_einval(void **state)
{
    fx *f = *state;
    rec a;
    pubsub_sub *s = NULL;
    static const pubsub_sub_ops no_deliver = {NULL, NULL, NULL};

    rec_init(&a, f->ps);
    assert_int_equal(pubsub_subscribe(f->ps, "", 0, &REC_OPS, &a, 0, &s),
                     COUNCIL_EINVAL);
    assert_int_equal(pubsub_subscribe(f->ps, NULL, 3, &REC_OPS, &a, 0, &s),
                     COUNCIL_EINVAL);
    assert_int_equal(pubsub_subscribe(f->ps, "t", 1, NULL, &a, 0, &s),
                     COUNCIL_EINVAL);
    assert_int_equal(pubsub_subscribe(f->ps, "t", 1, &no_deliver, &a, 0, &s),
                     COUNCIL_EINVAL);
    assert_null(s);
    assert_int_equal(pubsub_publish(f->ps, "", 0, NULL), 0);
    assert_null(pubsub_find(f->ps, "t", 1, &a));
    assert_null(pubsub_new(&f->loop, NULL, 0));
    pubsub_free(NULL);
    pubsub_flush(NULL);
    pubsub_unsubscribe(f->ps, NULL);
    assert_int_equal(pubsub_total_subscriptions(NULL), 0);
}

static void find_and_counts(void **state)
{
    fx *f = *state;
    rec a, b, c;

    rec_init(&a, f->ps);
    rec_init(&b, f->ps);
    rec_init(&c, f->ps);
    sub(f->ps, &a, "t1", 0);
    sub(f->ps, &b, "t1", 0);
    sub(f->ps, &c, "t2", 0);
    assert_ptr_equal(pubsub_find(f->ps, "t1", 2, &a), a.sub);
    assert_ptr_equal(pubsub_find(f->ps, "t1", 2, &b), b.sub);
    assert_null(pubsub_find(f->ps, "t1", 2, &c));
    assert_ptr_equal(pubsub_find(f->ps, "t2", 2, &c), c.sub);
    assert_null(pubsub_find(f->ps, "t3", 2, &c));
    assert_int_equal(pubsub_topic_count(f->ps, "t1", 2), 2);
    assert_int_equal(pubsub_topic_count(f->ps, "t2", 2), 1);
    assert_int_equal(pubsub_total_subscriptions(f->ps), 3);
    pubsub_unsubscribe(f->ps, a.sub);
    pubsub_unsubscribe(f->ps, b.sub);
    assert_int_equal(pubsub_topic_count(f->ps, "t1", 2), 0);
    assert_int_equal(publish(f->ps, "t1", 1), 0);
    assert_int_equal(pubsub_total_subscriptions(f->ps), 1);
    end(f);
    assert_int_equal(a.closed + b.closed + c.closed, 3);
}

/* Many topics come and go (one per run): the topic table grows and every
 * topic stays separate. */
static void many_topics(void **state)
{
    fx *f = *state;
    enum { T = 5000 };
    rec *r = calloc(T, sizeof *r);
    char name[64];
    size_t i;

    assert_non_null(r);
    for (i = 0; i < T; i++) {
        snprintf(name, sizeof name, "council_ex:run:%zu", i);
        rec_init(&r[i], f->ps);
        assert_int_equal(pubsub_subscribe(f->ps, name, strlen(name), &REC_OPS,
                                          &r[i], 4, &r[i].sub), 0);
    }
    for (i = 0; i < T; i++) {
        snprintf(name, sizeof name, "council_ex:run:%zu", i);
        assert_int_equal(publish(f->ps, name, 1), 1);
        if (i % 2 == 0)
            assert_int_equal(publish(f->ps, name, 2), 1);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (i = 0; i < T; i++) {
        assert_int_equal(r[i].got, i % 2 == 0 ? 2 : 1);
        assert_true(r[i].in_order);
    }
    for (i = 0; i < T; i += 2)
        pubsub_unsubscribe(f->ps, r[i].sub);
    assert_int_equal(pubsub_total_subscriptions(f->ps), T / 2);
    for (i = 1; i < T; i += 2)
        pubsub_unsubscribe(f->ps, r[i].sub);
    for (i = 0; i < T; i++)
        assert_int_equal(r[i].closed, 1);
    assert_int_equal(pubsub_total_subscriptions(f->ps), 0);
    free(r);
}

/* Topics come and go in waves (the runs of a burst, then their end): the
 * bucket array grows with them and shrinks after them, and the topics left
 * between the waves, and new ones, keep their subscribers and get every
 * message, also when the last subscribers leave from inside a delivery. */
static void topics_come_and_go_in_waves(void **state)
{
    fx *f = *state;
    enum { T = 6000, KEEP = 7 };
    rec *r = calloc(T, sizeof *r), keep[KEEP];
    char name[64];
    size_t i, wave;

    assert_non_null(r);
    for (i = 0; i < KEEP; i++) {
        snprintf(name, sizeof name, "council_ex:run:keep-%zu", i);
        rec_init(&keep[i], f->ps);
        sub(f->ps, &keep[i], strdup(name), 0);
    }
    for (wave = 0; wave < 3; wave++) {
        memset(r, 0, T * sizeof *r);
        for (i = 0; i < T; i++) {
            snprintf(name, sizeof name, "council_ex:run:%zu-%zu", wave, i);
            rec_init(&r[i], f->ps);
            assert_int_equal(pubsub_subscribe(f->ps, name, strlen(name), &REC_OPS, &r[i], 4,
                                              &r[i].sub), 0);
            /* half of them leave from inside their one delivery */
            if (i % 2)
                r[i].unsub_self_at = 1;
        }
        for (i = 0; i < T; i++) {
            snprintf(name, sizeof name, "council_ex:run:%zu-%zu", wave, i);
            assert_int_equal(publish(f->ps, name, 1), 1);
        }
        for (i = 0; i < KEEP; i++)
            assert_int_equal(publish(f->ps, keep[i].topic, wave + 1), 1);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        for (i = 0; i < T; i += 2)
            pubsub_unsubscribe(f->ps, r[i].sub);
        for (i = 0; i < T; i++) {
            assert_int_equal(r[i].got, 1);
            assert_int_equal(r[i].closed, 1);
        }
        assert_int_equal(pubsub_total_subscriptions(f->ps), KEEP);
        for (i = 0; i < KEEP; i++) {
            assert_int_equal(pubsub_topic_count(f->ps, keep[i].topic, strlen(keep[i].topic)),
                             1);
            assert_int_equal(keep[i].got, wave + 1);
            assert_true(keep[i].in_order);
        }
    }
    for (i = 0; i < KEEP; i++) {
        pubsub_unsubscribe(f->ps, keep[i].sub);
        free((char *)keep[i].topic);
    }
    assert_int_equal(pubsub_total_subscriptions(f->ps), 0);
    free(r);
}

/* A long backlog is drained in slices: other handles of the loop (here a
 * timer armed by the first delivery) run before the backlog is through. */
typedef struct yield_probe {
    rec r;
    uv_timer_t timer;
    size_t got_at_timer;
    int fired;
} yield_probe;

static void probe_timer_cb(uv_timer_t *t)
{
    yield_probe *y = t->data;

    y->fired = 1;
    y->got_at_timer = y->r.got;
}

static void probe_deliver(void *m, void *arg)
{
    yield_probe *y = arg;

    rec_deliver(m, &y->r);
    if (y->r.got == 1)
        uv_timer_start(&y->timer, probe_timer_cb, 0, 0);
}

static void probe_closed(void *arg)
{
    rec_closed(&((yield_probe *)arg)->r);
}

static void drain_yields_to_the_loop_between_slices(void **state)
{
    fx *f = *state;
    static const pubsub_sub_ops ops = {probe_deliver, NULL, probe_closed};
    enum { N = 100000 };
    yield_probe y;
    size_t i;

    memset(&y, 0, sizeof y);
    rec_init(&y.r, f->ps);
    uv_timer_init(&f->loop, &y.timer);
    y.timer.data = &y;
    assert_int_equal(pubsub_subscribe(f->ps, "t", 1, &ops, &y, N, &y.r.sub),
                     0);
    for (i = 1; i <= N; i++)
        publish(f->ps, "t", i);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(y.r.got, N);
    assert_true(y.r.in_order);
    assert_true(y.fired);
    assert_true(y.got_at_timer > 0 && y.got_at_timer < N);
    uv_close((uv_handle_t *)&y.timer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    end(f);
    assert_int_equal(y.r.closed, 1);
}

/* Topics are byte strings: NUL bytes and shared prefixes do not mix them. */
static void binary_topics_are_distinct(void **state)
{
    fx *f = *state;
    rec a, b, c;
    msg *m = msg_new(1);

    rec_init(&a, f->ps);
    rec_init(&b, f->ps);
    rec_init(&c, f->ps);
    assert_int_equal(pubsub_subscribe(f->ps, "t\0a", 3, &REC_OPS, &a, 0,
                                      &a.sub), 0);
    assert_int_equal(pubsub_subscribe(f->ps, "t\0b", 3, &REC_OPS, &b, 0,
                                      &b.sub), 0);
    assert_int_equal(pubsub_subscribe(f->ps, "t", 1, &REC_OPS, &c, 0,
                                      &c.sub), 0);
    assert_int_equal(pubsub_publish(f->ps, "t\0a", 3, m), 1);
    assert_int_equal(pubsub_publish(f->ps, "t\0", 2, m), 0);
    assert_int_equal(pubsub_topic_count(f->ps, "t\0b", 3), 1);
    m->refs--;
    pubsub_flush(f->ps);
    assert_int_equal(a.got, 1);
    assert_int_equal(b.got + c.got, 0);
    end(f);
}

/* The last subscriber leaves from inside its callback and then publishes
 * to the topic it just emptied: nothing is queued, nothing breaks. */
static void last_subscriber_leaves_and_publishes_inside_deliver(void **state)
{
    fx *f = *state;
    rec a;

    rec_init(&a, f->ps);
    sub(f->ps, &a, "t", 0);
    a.unsub_self_at = 1;
    a.pub_topic = "t";
    a.pub_at = 1;
    a.pub_seq = 99;
    publish(f->ps, "t", 1);
    publish(f->ps, "t", 2);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.got, 1);
    assert_int_equal(a.closed, 1);
    assert_int_equal(pubsub_topic_count(f->ps, "t", 1), 0);
    assert_int_equal(pubsub_total_subscriptions(f->ps), 0);
    assert_false(uv_loop_alive(&f->loop));
}

/* pubsub_free with messages still queued: closed() once per subscription,
 * every queued reference dropped, no delivery. */
static void free_with_pending_messages_leaks_nothing(void **state)
{
    fx *f = *state;
    pubsub *ps = pubsub_new(&f->loop, &MSG_OPS, 0);
    rec r[4];
    int i;

    for (i = 0; i < 4; i++) {
        rec_init(&r[i], ps);
        sub(ps, &r[i], i < 2 ? "a" : "b", i == 3 ? 5 : 0);
    }
    for (i = 1; i <= 50; i++) {
        publish(ps, "a", (size_t)i);
        publish(ps, "b", (size_t)i);
    }
    assert_true(n_live > 0);
    assert_true(uv_loop_alive(&f->loop));
    pubsub_free(ps);
    for (i = 0; i < 4; i++) {
        assert_int_equal(r[i].got, 0);
        assert_int_equal(r[i].overflows, 0);
        assert_int_equal(r[i].closed, 1);
    }
    assert_int_equal(n_live, 0);
    assert_int_equal(n_refs, n_unrefs);
    /* teardown frees the fixture's own pubsub and runs the loop, which
     * closes both idle handles */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            delivery_is_asynchronous_and_loop_is_not_kept_alive, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            subscribe_before_any_publish_misses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(
            many_subscribers_each_see_every_message_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(
            flush_delivers_synchronously_including_what_callbacks_publish,
            setup, teardown),
        cmocka_unit_test_setup_teardown(unsubscribe_self_inside_deliver, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unsubscribe_other_inside_deliver,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(subscribe_and_publish_inside_deliver,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            overflow_is_reported_once_and_others_keep_everything, setup,
            teardown),
        cmocka_unit_test_setup_teardown(overflow_callback_may_resubscribe,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            unsubscribing_a_cut_off_subscription_skips_overflow, setup,
            teardown),
        cmocka_unit_test_setup_teardown(max_subscribers_per_topic_is_elimit,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(bad_arguments_are_einval, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(find_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(many_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(topics_come_and_go_in_waves, setup, teardown),
        cmocka_unit_test_setup_teardown(
            drain_yields_to_the_loop_between_slices, setup, teardown),
        cmocka_unit_test_setup_teardown(binary_topics_are_distinct, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            last_subscriber_leaves_and_publishes_inside_deliver, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            free_with_pending_messages_leaks_nothing, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
