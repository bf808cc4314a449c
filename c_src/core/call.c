/* call.c - one member call attempt: its timers, its provider, and the
 * handle native providers complete.
 *
 * A call is WAITING (backoff delay), then ACTIVE (provider working, timeout
 * armed), then DONE (completed, failed, timed out or abandoned). Only the
 * first transition to DONE counts; everything a provider does afterwards is
 * refused with COUNCIL_ESTATE. Not for: retries and what a result means
 * (engine.c).
 */
#include "council_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void call_free(council_call *c)
{
    cx_timer_fini(&c->timer);
    json_decref(c->request);
    free(c->request_text);
    council_run_unref(c->run);
    free(c);
}

council_call *council_call_ref(council_call *call)
{
    if (call)
        call->refs++;
    return call;
}

void council_call_unref(council_call *call)
{
    if (call && --call->refs == 0)
        call_free(call);
}

static void unlink_call(council_call *c)
{
    council_run *run = c->run;
    if (c->prev)
        c->prev->next = c->next;
    else if (run->calls == c)
        run->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* DONE: out of the run's list, timer stopped. Returns the task to report
 * the outcome to (NULL when there is none). */
static struct task *call_end(council_call *c)
{
    struct task *task = c->task;
    c->state = CALL_DONE;
    c->task = NULL;
    c->wake = NULL;
    cx_timer_stop(&c->timer);
    unlink_call(c);
    return task;
}

/* The one way to DONE with a result for the engine. */
static void finish(council_call *c, bool ok, const char *text, size_t len,
                   const char *error)
{
    struct task *task = call_end(c);
    if (task)
        engine_call_done(task, c, ok, text, len, error);
    council_call_unref(c); /* the core's reference */
}

/* The core fails an active call itself (timeout, too much output). The
 * call is ended before the provider's cancel() runs, so that cancel() may
 * cancel the run (which abandons the run's listed calls and frees the
 * round); the engine hears of the failure only if the run still goes on. */
static void abort_call(council_call *c, const char *error)
{
    council_call_ref(c);
    struct task *task = call_end(c);
    if (c->prov->ops.cancel)
        c->prov->ops.cancel(c, c->prov->arg);
    if (task && c->run->status == COUNCIL_RUNNING)
        engine_call_done(task, c, false, NULL, 0, error);
    council_call_unref(c); /* the core's reference */
    council_call_unref(c);
}

static void begin(council_call *c)
{
    if (!c->prov->request_on_demand && !council_call_request_json(c)) {
        c->state = CALL_ACTIVE;
        finish(c, false, NULL, 0, council_strerror(COUNCIL_ENOMEM));
        return;
    }
    c->state = CALL_ACTIVE;
    c->began_us = uv_hrtime() / 1000;
    cx_timer_start(&c->timer, c->timeout_ms);
    council_call_ref(c);
    int rc = c->prov->ops.start(c, c->prov->arg);
    if (rc != 0 && c->state == CALL_ACTIVE)
        finish(c, false, NULL, 0, council_strerror(rc));
    council_call_unref(c);
}

/* The call's one timer: the backoff delay while WAITING, then the timeout
 * once ACTIVE. */
static void on_timer(void *arg)
{
    council_call *c = arg;
    if (c->state == CALL_WAITING) {
        begin(c);
    } else if (c->state == CALL_ACTIVE && c->wake) {
        void (*cb)(council_call *) = c->wake;
        c->wake = NULL;
        council_call_ref(c);
        cb(c);
        if (c->state == CALL_ACTIVE) {
            /* the rest of the timeout */
            uint64_t spent_ms = (uv_hrtime() / 1000 - c->began_us) / 1000;
            cx_timer_start(&c->timer, spent_ms < c->timeout_ms ? c->timeout_ms - spent_ms : 0);
        }
        council_call_unref(c);
    } else if (c->state == CALL_ACTIVE) {
        char msg[64];
        snprintf(msg, sizeof msg, "timeout after %llu ms",
                 (unsigned long long)c->timeout_ms);
        c->timed_out = true;
        abort_call(c, msg);
    }
}

council_call *call_new(council_run *run, struct task *task, provider *prov,
                       const spec_member *m, const char *round_name,
                       unsigned round_idx, const char *rtype,
                       unsigned attempt, uint64_t timeout_ms)
{
    council_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->refs = 1;
    c->id = ++run->ctx->next_call_id;
    c->run = council_run_ref(run);
    c->task = task;
    c->prov = prov;
    c->member = m;
    c->round_name = round_name;
    c->round_idx = round_idx;
    c->round_type = rtype;
    c->attempt = (uint16_t)attempt;
    c->timeout_ms = timeout_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)timeout_ms;
    if (cx_timer_init(run->ctx, &c->timer, on_timer, c) != COUNCIL_OK) {
        call_free(c);
        return NULL;
    }
    c->next = run->calls;
    if (run->calls)
        run->calls->prev = c;
    run->calls = c;
    return c;
}

void call_launch(council_call *c, uint64_t delay_ms)
{
    if (delay_ms == 0)
        begin(c);
    else
        cx_timer_start(&c->timer, delay_ms);
}

bool call_wake_after(council_call *c, uint64_t ms, void (*cb)(council_call *))
{
    if (c->state != CALL_ACTIVE || c->wake || ms >= c->timeout_ms)
        return false;
    c->wake = cb;
    cx_timer_start(&c->timer, ms); /* the timeout's timer, started just before */
    return true;
}

void call_abandon(council_call *c, const char *why)
{
    (void)why;
    call_state was = c->state;
    if (was == CALL_DONE)
        return;
    call_end(c);
    if (was == CALL_ACTIVE && c->prov->ops.cancel)
        c->prov->ops.cancel(c, c->prov->arg);
    council_call_unref(c);
}

/* ------------------------------------------------------ provider side */

int council_call_token(council_call *call, const char *chunk, size_t len)
{
    if (!call || (!chunk && len))
        return COUNCIL_EINVAL;
    if (call->state != CALL_ACTIVE)
        return COUNCIL_ESTATE;
    council_ctx *ctx = call->run->ctx;
    /* past 4 GiB the count stays there: over any cap up to it */
    uint64_t total = (uint64_t)call->streamed + len;
    call->streamed = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
    if (ctx && (total > ctx->cfg.output_cap || total >= UINT32_MAX)) {
        char msg[96];
        snprintf(msg, sizeof msg, "output exceeds %zu bytes", ctx->cfg.output_cap);
        abort_call(call, msg);
        return COUNCIL_ETOOBIG;
    }
    if (len && call->task)
        engine_call_token(call->task, call, chunk, len);
    return COUNCIL_OK;
}

int council_call_complete(council_call *call, const char *text, size_t len)
{
    if (!call || (!text && len))
        return COUNCIL_EINVAL;
    if (call->state != CALL_ACTIVE)
        return COUNCIL_ESTATE;
    council_ctx *ctx = call->run->ctx;
    if (ctx && len > ctx->cfg.output_cap) {
        char msg[96];
        snprintf(msg, sizeof msg, "output exceeds %zu bytes", ctx->cfg.output_cap);
        finish(call, false, NULL, 0, msg);
        return COUNCIL_ETOOBIG;
    }
    finish(call, true, text ? text : "", len, NULL);
    return COUNCIL_OK;
}

int council_call_fail(council_call *call, const char *message)
{
    if (!call)
        return COUNCIL_EINVAL;
    if (call->state != CALL_ACTIVE)
        return COUNCIL_ESTATE;
    finish(call, false, NULL, 0, message ? message : "failed");
    return COUNCIL_OK;
}

int council_call_fail_kind(council_call *call, council_fail_kind kind,
                           uint64_t retry_after_ms, const char *message)
{
    if (!call || kind < COUNCIL_FAIL_TRANSIENT || kind > COUNCIL_FAIL_CANCELLED)
        return COUNCIL_EINVAL;
    if (call->state != CALL_ACTIVE)
        return COUNCIL_ESTATE;
    call->fail_kind = kind;
    call->retry_after_ms = retry_after_ms > CALL_MAX_RETRY_AFTER_MS
                               ? CALL_MAX_RETRY_AFTER_MS
                               : (uint32_t)retry_after_ms;
    finish(call, false, NULL, 0, message ? message : "failed");
    return COUNCIL_OK;
}

int council_call_add_usage(council_call *call, const council_usage *u)
{
    if (!call || !u)
        return COUNCIL_EINVAL;
    if (call->state != CALL_ACTIVE)
        return COUNCIL_ESTATE;
    if (call->task)
        engine_call_usage(call->task, u);
    return COUNCIL_OK;
}

int council_call_publish_tool(council_call *call, council_event_type type,
                              const council_tool_event *t)
{
    if (!call || !t ||
        (type != COUNCIL_EV_TOOL_CALL_REQUEST && type != COUNCIL_EV_TOOL_CALL_RESULT))
        return COUNCIL_EINVAL;
    if (call->state != CALL_ACTIVE)
        return COUNCIL_ESTATE;
    if (call->task)
        engine_call_tool(call->task, type, t);
    return COUNCIL_OK;
}

int council_call_active(const council_call *call)
{
    return call && call->state == CALL_ACTIVE;
}

council_run *council_call_run(const council_call *call) { return call->run; }
uint64_t council_call_id(const council_call *call) { return call->id; }

const char *council_call_run_id(const council_call *call, size_t *len)
{
    return council_run_id(call->run, len);
}

const char *council_call_member_id(const council_call *call) { return call->member->id; }
const char *council_call_member_options(const council_call *call)
{
    return call->member->options_text;
}
const char *council_call_round_name(const council_call *call) { return call->round_name; }
unsigned council_call_round_idx(const council_call *call) { return call->round_idx; }
const char *council_call_round_type(const council_call *call) { return call->round_type; }
unsigned council_call_attempt(const council_call *call) { return call->attempt; }
uint64_t council_call_timeout_ms(const council_call *call) { return call->timeout_ms; }
/* Both forms are made on first use: a call that only waits (a mock with
 * latency) carries neither, and the mock and BEAM providers never need
 * the text. The task, and so what the request shows, stays as it was
 * until the call is finished. */
json_t *council_call_request_json(const council_call *call)
{
    council_call *c = (council_call *)call; /* the request is a cache */
    if (!c->request && c->task)
        c->request = engine_request(c->task, c);
    return c->request;
}

const char *council_call_request(const council_call *call, size_t *len)
{
    council_call *c = (council_call *)call; /* the text is a cache */
    if (!c->request_text && council_call_request_json(c))
        c->request_text = json_dumps(c->request, JSON_COMPACT);
    if (len) /* JSON text: no NUL inside */
        *len = c->request_text ? strlen(c->request_text) : 0;
    return c->request_text;
}
