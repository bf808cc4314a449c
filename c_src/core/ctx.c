/* ctx.c - the context: one libuv loop with the registry, the pub/sub and
 * the providers of one core instance, and the ways to drive that loop.
 *
 * Not for: runs (run.c) or the rounds they go through (engine.c).
 */
#include "council_internal.h"
#include "http.h"
#include "llm.h"
#include "tools.h"

#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* Takes the queued cancel requests (all of them, in order). Every step
 * calls this: with nothing queued it reads one flag and takes no lock (the
 * flag is set and cleared under the lock, so a request is never missed). */
static cancel_req *take_cancels(council_ctx *ctx)
{
    if (!__atomic_load_n(&ctx->cancels_queued, __ATOMIC_ACQUIRE))
        return NULL;
    uv_mutex_lock(&ctx->cancel_lock);
    cancel_req *list = ctx->cancel_head;
    ctx->cancel_head = ctx->cancel_tail = NULL;
    __atomic_store_n(&ctx->cancels_queued, 0, __ATOMIC_RELEASE);
    uv_mutex_unlock(&ctx->cancel_lock);
    return list;
}

static void free_cancels(cancel_req *r)
{
    while (r) {
        cancel_req *next = r->next;
        free(r->registry);
        free(r);
        r = next;
    }
}

/* Carries out the queued cancel requests, in order (loop thread). */
static void do_cancels(council_ctx *ctx)
{
    cancel_req *list = take_cancels(ctx);
    for (cancel_req *r = list; r; r = r->next) {
        council_run *run;
        if (council_run_find(ctx, r->registry, r->id, r->len, &run) == COUNCIL_OK)
            council_run_cancel(run);
    }
    free_cancels(list);
}

static void async_cb(uv_async_t *h)
{
    council_ctx *ctx = h->data;
    do_cancels(ctx);
    if (__atomic_load_n(&ctx->stop_flag, __ATOMIC_SEQ_CST))
        uv_stop(&ctx->loop);
}

void council_config_defaults(council_config *c)
{
    if (!c->max_runs)
        c->max_runs = 10000;
    if (!c->max_retained)
        c->max_retained = 100000;
    if (!c->max_subscribers_per_topic)
        c->max_subscribers_per_topic = 1024;
    if (!c->max_spec_bytes)
        c->max_spec_bytes = 1u << 20;
    if (!c->retention_ms)
        c->retention_ms = 300000;
    if (!c->subscriber_queue_cap)
        c->subscriber_queue_cap = 4096;
    if (!c->member_timeout_ms)
        c->member_timeout_ms = 60000;
    if (!c->output_cap)
        c->output_cap = 1u << 20;
}

static int register_builtin(council_ctx *ctx)
{
    council_provider_ops ops;
    provider_mock_ops(&ops);
    int rc = council_provider_register(ctx, "mock", &ops, ctx);
    if (rc)
        return rc;
    provider_exec_ops(&ops);
    rc = council_provider_register(ctx, "exec", &ops, ctx);
    if (rc)
        return rc;
    provider_council_ops(&ops);
    rc = council_provider_register(ctx, "council", &ops, ctx);
    if (rc)
        return rc;
    /* they read the request only while their calls are active */
    ctx_provider_find(ctx, "mock")->request_on_demand = true;
    ctx_provider_find(ctx, "council")->request_on_demand = true;
    return provider_llm_register_all(ctx);
}

council_ctx *council_ctx_new(const council_config *cfg)
{
    if (sodium_init() < 0)
        return NULL;
    council_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    if (cfg)
        ctx->cfg = *cfg;
    council_config_defaults(&ctx->cfg);
    if (uv_loop_init(&ctx->loop) != 0) {
        free(ctx);
        return NULL;
    }
    if (uv_mutex_init(&ctx->cancel_lock) != 0) {
        uv_loop_close(&ctx->loop);
        free(ctx);
        return NULL;
    }
    uv_async_init(&ctx->loop, &ctx->async, async_cb);
    ctx->async.data = ctx;
    uv_unref((uv_handle_t *)&ctx->async);
    uv_timer_init(&ctx->loop, &ctx->step_timer);
    uv_unref((uv_handle_t *)&ctx->step_timer);
    uv_timer_init(&ctx->loop, &ctx->ret_timer); /* retention keeps no loop alive */
    uv_unref((uv_handle_t *)&ctx->ret_timer);
    cx_timers_init(&ctx->timers, &ctx->loop);
    ctx->reg = registry_new(0);
    ctx->ps = pubsub_new(&ctx->loop, council_event_pubsub_ops(),
                         ctx->cfg.max_subscribers_per_topic);
    if (!ctx->reg || !ctx->ps || register_builtin(ctx) != 0) {
        council_ctx_free(ctx);
        return NULL;
    }
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
    return ctx;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void council_ctx_free(council_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->freeing = true;
    run_detach_all(ctx);          /* cancels, unregisters, detaches runs */
    provider_exec_shutdown(ctx);  /* SIGKILL to every child still alive */
    tools_shutdown(ctx);          /* the same for tool programs */
    pubsub_free(ctx->ps);
    ctx->ps = NULL;
    /* wait for the killed children to be reaped (SIGKILL: soon), then close
     * their pipes even if a grandchild still holds them */
    while (provider_exec_unreaped(ctx) > 0 || tools_unreaped(ctx) > 0)
        uv_run(&ctx->loop, UV_RUN_ONCE);
    provider_exec_close_all(ctx);
    tools_close_all(ctx);
    provider *p = ctx->providers;
    while (p) {
        provider *n = p->next;
        if (p->ops.release)
            p->ops.release(p->arg);
        free(p->name);
        free(p);
        p = n;
    }
    ctx->providers = NULL;
    routers_release(ctx);
    cx_http_shutdown(ctx);        /* transfers were cancelled with their runs */
    uv_run(&ctx->loop, UV_RUN_NOWAIT); /* close callbacks of our handles */
    registry_free(ctx->reg);
    uv_close((uv_handle_t *)&ctx->async, NULL);
    uv_close((uv_handle_t *)&ctx->step_timer, NULL);
    uv_close((uv_handle_t *)&ctx->ret_timer, NULL);
    cx_timers_close(&ctx->timers);
    /* anything a host left on the loop is closed too (without callback) */
    uv_walk(&ctx->loop, close_any, NULL);
    uv_run(&ctx->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctx->loop);
    tools_free_state(ctx);
    cx_env_free(ctx);
    cx_exec_allow_free(ctx);
    free_cancels(take_cancels(ctx)); /* made too late: nothing left to cancel */
    uv_mutex_destroy(&ctx->cancel_lock);
    free(ctx);
}

int council_ctx_run(council_ctx *ctx)
{
    if (!ctx)
        return COUNCIL_EINVAL;
    if (ctx->running)
        return COUNCIL_ESTATE;
    ctx->running = 1;
    do_cancels(ctx); /* the async handle keeps no loop alive: take them now */
    if (!__atomic_exchange_n(&ctx->stop_flag, 0, __ATOMIC_SEQ_CST)) {
        uv_run(&ctx->loop, UV_RUN_DEFAULT);
        if (!__atomic_load_n(&ctx->stop_flag, __ATOMIC_SEQ_CST) && ctx->ps)
            pubsub_flush(ctx->ps);
        __atomic_store_n(&ctx->stop_flag, 0, __ATOMIC_SEQ_CST);
    }
    ctx->running = 0;
    return COUNCIL_OK;
}

static void step_timeout(uv_timer_t *h)
{
    (void)h; /* only there to bound UV_RUN_ONCE */
}

int council_ctx_step(council_ctx *ctx, int timeout_ms)
{
    if (!ctx)
        return COUNCIL_EINVAL;
    if (ctx->running)
        return COUNCIL_ESTATE;
    ctx->running = 1;
    do_cancels(ctx);
    int alive;
    if (timeout_ms == 0) {
        alive = uv_run(&ctx->loop, UV_RUN_NOWAIT);
    } else {
        if (timeout_ms > 0) {
            /* from now: the loop's clock is as old as its last turn, and a
             * timer due at once would no longer bound the wait */
            uv_update_time(&ctx->loop);
            uv_ref((uv_handle_t *)&ctx->step_timer);
            uv_timer_start(&ctx->step_timer, step_timeout, (uint64_t)timeout_ms, 0);
        }
        uv_run(&ctx->loop, UV_RUN_ONCE);
        uv_timer_stop(&ctx->step_timer);
        uv_unref((uv_handle_t *)&ctx->step_timer);
        alive = uv_loop_alive(&ctx->loop);
    }
    __atomic_store_n(&ctx->stop_flag, 0, __ATOMIC_SEQ_CST);
    ctx->running = 0;
    return alive ? 1 : 0;
}

int council_ctx_backend_fd(council_ctx *ctx)
{
    return ctx ? uv_backend_fd(&ctx->loop) : -1;
}

void *council_ctx_uv_loop(council_ctx *ctx)
{
    return ctx ? &ctx->loop : NULL;
}

void council_ctx_stop(council_ctx *ctx)
{
    if (!ctx)
        return;
    __atomic_store_n(&ctx->stop_flag, 1, __ATOMIC_SEQ_CST);
    uv_async_send(&ctx->async);
}

void council_ctx_wakeup(council_ctx *ctx)
{
    if (ctx)
        uv_async_send(&ctx->async);
}

int council_ctx_cancel_async(council_ctx *ctx, const char *reg_name,
                             const void *run_id, size_t len)
{
    if (!ctx || !run_id || len == 0 || len > 65536)
        return COUNCIL_EINVAL;
    cancel_req *r = malloc(sizeof *r + len);
    if (!r)
        return COUNCIL_ENOMEM;
    r->next = NULL;
    r->len = len;
    memcpy(r->id, run_id, len);
    r->registry = NULL;
    if (reg_name && !(r->registry = strdup(reg_name))) {
        free(r);
        return COUNCIL_ENOMEM;
    }
    uv_mutex_lock(&ctx->cancel_lock);
    if (ctx->cancel_tail)
        ctx->cancel_tail->next = r;
    else
        ctx->cancel_head = r;
    ctx->cancel_tail = r;
    __atomic_store_n(&ctx->cancels_queued, 1, __ATOMIC_RELEASE);
    uv_mutex_unlock(&ctx->cancel_lock);
    uv_async_send(&ctx->async);
    return COUNCIL_OK;
}

void council_ctx_stats(const council_ctx *ctx, council_stats *out)
{
    if (!ctx || !out)
        return;
    out->runs_registered = registry_count(ctx->reg);
    out->runs_active = ctx->runs_active;
    out->subscriptions = ctx->ps ? pubsub_total_subscriptions(ctx->ps) : 0;
}

pubsub *council_ctx_pubsub(council_ctx *ctx)
{
    return ctx ? ctx->ps : NULL;
}

void council_ctx_flush(council_ctx *ctx)
{
    if (ctx && ctx->ps)
        pubsub_flush(ctx->ps);
}

/* ------------------------------------------------------------ providers */

provider *ctx_provider_find(council_ctx *ctx, const char *name)
{
    for (provider *p = ctx->providers; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

int council_provider_register(council_ctx *ctx, const char *name,
                              const council_provider_ops *ops, void *arg)
{
    if (!ctx || !name || !*name || !ops || !ops->start)
        return COUNCIL_EINVAL;
    if (ctx_provider_find(ctx, name))
        return COUNCIL_EEXIST;
    provider *p = calloc(1, sizeof *p);
    if (!p || !(p->name = cx_strdup(name))) {
        free(p);
        return COUNCIL_ENOMEM;
    }
    p->ops = *ops;
    p->arg = arg;
    p->next = ctx->providers;
    ctx->providers = p;
    return COUNCIL_OK;
}

/* ----------------------------------------------------------- subscribing */

struct council_subscription {
    pubsub_sub *sub;
    council_event_cb cb;
    council_overflow_cb overflow;
    void *arg;
};

static void sub_deliver(void *msg, void *arg)
{
    council_subscription *s = arg;
    s->cb(msg, s->arg);
}

static void sub_overflow(size_t dropped, void *arg)
{
    council_subscription *s = arg;
    if (s->overflow)
        s->overflow(dropped, s->arg);
}

static void sub_closed(void *arg)
{
    free(arg);
}

static const pubsub_sub_ops sub_ops = {sub_deliver, sub_overflow, sub_closed};

int council_subscribe(council_ctx *ctx, const char *topic, size_t len,
                      council_event_cb cb, council_overflow_cb overflow_cb,
                      void *arg, council_subscription **out)
{
    if (!ctx || !topic || !len || !cb || !ctx->ps)
        return COUNCIL_EINVAL;
    council_subscription *s = calloc(1, sizeof *s);
    if (!s)
        return COUNCIL_ENOMEM;
    s->cb = cb;
    s->overflow = overflow_cb;
    s->arg = arg;
    int rc = pubsub_subscribe(ctx->ps, topic, len, &sub_ops, s,
                              ctx->cfg.subscriber_queue_cap, &s->sub);
    if (rc) {
        free(s);
        return rc;
    }
    if (out)
        *out = s;
    return COUNCIL_OK;
}

void council_unsubscribe(council_ctx *ctx, council_subscription *sub)
{
    if (!ctx || !sub || !ctx->ps)
        return;
    pubsub_unsubscribe(ctx->ps, sub->sub);
}
