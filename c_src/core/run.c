/* run.c - a run's life: creation and registration, start, cancel, the
 * terminal transition, retention, lookups, events and watchers.
 *
 * The order of the terminal transition is a contract: status set, calls
 * abandoned, terminal event published, watchers fired, retention started.
 * Not for: what happens inside rounds (engine.c).
 */
#include "council_internal.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The retention fields share the kick timer's place (the kick is fini'd
 * when the run ends, before retention starts); the timer's owner, NULL
 * from then on, stays where it is, so a later fini still does nothing. */
_Static_assert(offsetof(cx_timer, owner) == 0, "kick_owner aliases the kick's owner");
_Static_assert(offsetof(council_run, kick_owner) == offsetof(council_run, kick),
               "kick_owner aliases the kick's owner");

/* The registry's mark of a registered run that has ended (run_finish). */
#define RUN_MARK_ENDED 1u

static bool is_terminal(council_status s)
{
    return s == COUNCIL_COMPLETED || s == COUNCIL_FAILED || s == COUNCIL_CANCELLED;
}

/* ---------------------------------------------------------------- events */

typedef struct event_obj {
    council_event pub;   /* first: the public view */
    int refs;
    char *chunk;
    council_tool_event tool; /* tool_call_*: its strings are owned */
} event_obj;

const council_event *council_event_ref(const council_event *ev)
{
    if (ev)
        ((event_obj *)ev)->refs++;
    return ev;
}

void council_event_unref(const council_event *ev)
{
    if (!ev)
        return;
    event_obj *e = (event_obj *)ev;
    if (--e->refs > 0)
        return;
    free(e->chunk);
    free((char *)e->tool.id);
    free((char *)e->tool.name);
    free((char *)e->tool.arguments);
    free((char *)e->tool.result);
    council_run_unref(e->pub.run);
    free(e);
}

int council_event_is_terminal(const council_event *ev)
{
    return ev && (ev->type == COUNCIL_EV_RUN_COMPLETED ||
                  ev->type == COUNCIL_EV_RUN_FAILED ||
                  ev->type == COUNCIL_EV_RUN_CANCELLED);
}

static void msg_ref(void *m) { council_event_ref(m); }
static void msg_unref(void *m) { council_event_unref(m); }
static const pubsub_msg_ops event_msg_ops = {msg_ref, msg_unref};

const pubsub_msg_ops *council_event_pubsub_ops(void)
{
    return &event_msg_ops;
}

/* round, rtype and member are borrowed by the event: they must live as long
 * as the run (names from its spec or its results, or static), which the
 * event keeps a reference on. The chunk is copied. */
static void changed(council_run *run);

void run_publish(council_run *run, council_event_type type, const char *round,
                 int idx, const char *rtype, const char *member,
                 const char *chunk, size_t chunk_len, const void *payload)
{
    if (type == COUNCIL_EV_RUN_STARTED || type == COUNCIL_EV_ROUND_STARTED ||
        type == COUNCIL_EV_ROUND_COMPLETED)
        changed(run);
    pubsub *ps = run->ctx ? run->ctx->ps : NULL;
    if (!ps || pubsub_total_subscriptions(ps) == 0) {
        run->seq++; /* nobody subscribed anywhere: no event to build */
        return;
    }
    event_obj *e = calloc(1, sizeof *e);
    if (!e)
        return; /* out of memory: the event is lost, the run goes on */
    e->refs = 1;
    e->chunk = chunk ? cx_memdup(chunk, chunk_len) : NULL;
    council_event *p = &e->pub;
    p->type = type;
    p->seq = ++run->seq;
    p->run = council_run_ref(run);
    p->run_id = run->run_id;
    p->run_id_len = run->run_id_len;
    p->council = run->council;
    p->round_name = round;
    p->round_idx = round ? idx : -1;
    p->round_type = rtype;
    p->member_id = member;
    p->chunk = e->chunk;
    p->chunk_len = e->chunk ? chunk_len : 0;
    switch (type) {
    case COUNCIL_EV_RUN_STARTED:
        p->input = &run->input;
        break;
    case COUNCIL_EV_MEMBER_COMPLETED:
        p->member_result = payload;
        break;
    case COUNCIL_EV_ROUND_COMPLETED:
        p->round_result = payload;
        break;
    case COUNCIL_EV_RUN_COMPLETED:
    case COUNCIL_EV_RUN_FAILED:
    case COUNCIL_EV_RUN_CANCELLED:
        p->result = council_run_result(run);
        break;
    case COUNCIL_EV_TOOL_CALL_REQUEST:
    case COUNCIL_EV_TOOL_CALL_RESULT: {
        const council_tool_event *t = payload;
        e->tool.id = cx_strdup(t->id ? t->id : "");
        e->tool.name = cx_strdup(t->name ? t->name : "");
        e->tool.arguments = cx_memdup(t->arguments ? t->arguments : "",
                                      t->arguments ? t->arguments_len : 0);
        e->tool.arguments_len = t->arguments ? t->arguments_len : 0;
        if (type == COUNCIL_EV_TOOL_CALL_RESULT) {
            e->tool.result = cx_memdup(t->result ? t->result : "",
                                       t->result ? t->result_len : 0);
            e->tool.result_len = t->result ? t->result_len : 0;
            e->tool.ok = t->ok;
        }
        if (!e->tool.id || !e->tool.name || !e->tool.arguments ||
            (type == COUNCIL_EV_TOOL_CALL_RESULT && !e->tool.result)) {
            run->seq--; /* lost to out of memory: no gap in seq */
            council_event_unref(p);
            return;
        }
        p->tool = &e->tool;
        break;
    }
    default:
        break;
    }
    size_t topic_len;
    const char *topic = run_topic(run, &topic_len);
    pubsub_publish(ps, topic, topic_len, e);
    council_event_unref(p);
}

/* --------------------------------------------------------------- results */

/* Room for need elements. Starts small: most runs have a few rounds and
 * no errors, and every running run holds these arrays. need is bounded
 * (SPEC_MAX_RUN_ROUNDS rounds, 1000 errors). */
static int grow(void **arr, uint32_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? (size_t)*cap * 2 : 2;
    while (nc < need)
        nc *= 2;
    if (nc > UINT32_MAX)
        return COUNCIL_ENOMEM;
    void *n = realloc(*arr, nc * elem);
    if (!n)
        return COUNCIL_ENOMEM;
    *arr = n;
    *cap = (uint32_t)nc;
    return 0;
}

/* The result of a run that has produced nothing. */
static const council_result no_result;

run_out *run_out_make(council_run *run)
{
    if (run->out || is_terminal(run->status))
        return run->out;
    size_t nm = run->spec->n_members;
    run->out = calloc(1, sizeof *run->out + nm * sizeof(member_said));
    return run->out;
}

size_t run_n_rounds(const council_run *run)
{
    return council_run_result(run)->n_rounds;
}

rres *run_round(const council_run *run, size_t i)
{
    /* an rres starts with its public view */
    return (rres *)(void *)council_run_result(run)->rounds[i];
}

rres *run_last_round(const council_run *run)
{
    size_t n = run_n_rounds(run);
    return n ? run_round(run, n - 1) : NULL;
}

int run_push_round(council_run *run, rres *rr)
{
    run_out *o = run->out; /* made when rr was owned */
    council_round_result **rounds = (council_round_result **)o->result.rounds;
    if (grow((void **)&rounds, &o->cap_rounds, o->result.n_rounds + 1, sizeof *rounds))
        return COUNCIL_ENOMEM;
    rounds[o->result.n_rounds++] = &rr->pub;
    o->result.rounds = (const council_round_result *const *)rounds;
    return 0;
}

int run_own_round(council_run *run, rres *rr)
{
    run_out *o = run_out_make(run);
    if (!o)
        return COUNCIL_ENOMEM;
    rr->owned_next = o->owned;
    o->owned = rr;
    return 0;
}

/* An error of a result: its data, then its text, which result.errors
 * points at (so the data needs no room in the result itself). */
typedef struct run_error {
    council_error_info info;
    char text[];
} run_error;

static run_error *run_error_of(const char *text)
{
    return (run_error *)(void *)(text - offsetof(run_error, text));
}

void run_add_error(council_run *run, council_fail_kind kind, const char *member,
                   const char *round, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof buf ? sizeof buf - 1 : (size_t)n;
    run_out *o = run_out_make(run);
    if (!o || o->result.n_errors >= 1000)
        return; /* bounded: a pathological run does not grow without end */
    char **errors = (char **)o->result.errors; /* the run's own */
    if (grow((void **)&errors, &o->cap_errors, o->result.n_errors + 1, sizeof *errors))
        return;
    o->result.errors = (const char *const *)errors;
    run_error *e = malloc(sizeof *e + len + 1);
    if (!e)
        return;
    e->info = (council_error_info){council_fail_kind_name(kind), member, round};
    memcpy(e->text, buf, len);
    e->text[len] = 0;
    errors[o->result.n_errors++] = e->text;
}

const council_error_info *council_result_error_info(const council_result *res, size_t i)
{
    if (!res || i >= res->n_errors)
        return NULL;
    return &run_error_of(res->errors[i])->info;
}

const council_result *council_run_result(const council_run *run)
{
    return run->out ? &run->out->result : &no_result;
}

char *council_run_result_json(const council_run *run)
{
    json_t *j = council_result_json(council_run_result(run));
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* ------------------------------------------------------------- lifetime */

council_run *council_run_ref(council_run *run)
{
    if (run)
        run->refs++;
    return run;
}

static void run_free(council_run *run)
{
    engine_free(run);
    if (run->ctx) {
        if (run->prev)
            run->prev->next = run->next;
        else
            run->ctx->runs = run->next;
        if (run->next)
            run->next->prev = run->prev;
    }
    cx_timer_fini(&run->kick);
    run_out *o = run->out;
    if (o) {
        while (o->owned) {
            rres *rr = o->owned;
            o->owned = rr->owned_next;
            rres_free(rr);
        }
        free((void *)o->result.rounds);
        for (size_t i = 0; i < o->result.n_errors; i++)
            free(run_error_of(o->result.errors[i]));
        free((void *)o->result.errors);
        free((char *)o->result.final_text);
        for (size_t i = 0; i < run->spec->n_members; i++) {
            free(o->said[i].latest);
            free(o->said[i].critique);
        }
        free(o);
    }
    /* the strings are in the run's block */
    watcher *w = run->watchers;
    while (w) {
        watcher *n = w->next;
        free(w);
        w = n;
    }
    council_spec_unref(run->spec);
    free(run);
}

void council_run_unref(council_run *run)
{
    if (run && --run->refs == 0)
        run_free(run);
}

static void kick_cb(void *arg)
{
    council_run *run = arg;
    council_run_ref(run);
    engine_pump(run);
    council_run_unref(run);
}

void run_kick(council_run *run)
{
    if (!is_terminal(run->status))
        cx_timer_start(&run->kick, 0); /* nothing once fini'd */
}

void run_yield(council_run *run)
{
    if (!is_terminal(run->status))
        cx_timer_defer(&run->kick); /* the same timer: a kick moves it back */
}

/* ------------------------------------------------------------- creating */

/* A router the spec names by name must be registered: -1 (err set) when
 * it is not. */
static int check_routers(council_ctx *ctx, const spec_router *r, const char *field,
                         council_spec_error *err)
{
    if (!r || !r->name || ctx_router_known(ctx, r->name))
        return 0;
    if (err) {
        snprintf(err->field, sizeof err->field, "%s", field);
        snprintf(err->message, sizeof err->message, "no router named \"%.120s\" here",
                 r->name);
    }
    return -1;
}

static int check_round_routers(council_ctx *ctx, const spec_round *rs, size_t n,
                               const char *path, council_spec_error *err)
{
    for (size_t i = 0; i < n; i++) {
        char f[128];
        snprintf(f, sizeof f, "%s[%zu].options.router", path, i);
        if (check_routers(ctx, rs[i].router, f, err))
            return -1;
        snprintf(f, sizeof f, "%s[%zu].options.rounds", path, i);
        if (check_round_routers(ctx, rs[i].children, rs[i].n_children, f, err))
            return -1;
    }
    return 0;
}

int council_ctx_check_providers(council_ctx *ctx, council_spec *spec,
                                council_spec_error *err)
{
    if (!ctx || !spec)
        return COUNCIL_EINVAL;
    int rc = council_spec_validate(spec, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < spec->n_members; i++) {
        const char *name = spec->members[i].provider;
        if (ctx_provider_find(ctx, name))
            continue;
        if (err) {
            snprintf(err->field, sizeof err->field, "members[%zu].provider", i);
            snprintf(err->message, sizeof err->message,
                     "no provider named \"%.120s\" here", name ? name : "");
        }
        return COUNCIL_EPROVIDER;
    }
    if (check_routers(ctx, spec->router, "router", err) ||
        check_round_routers(ctx, spec->rounds, spec->n_rounds, "rounds", err))
        return COUNCIL_EPROVIDER;
    return cx_exec_check_spec(ctx, spec, err);
}

/* A place in the run's block of strings: n bytes and a NUL. */
static bool reserve(size_t *total, size_t n)
{
    if (n >= SIZE_MAX - *total)
        return false;
    *total += n + 1;
    return true;
}

static char *put(char **at, const void *p, size_t n)
{
    char *d = *at;
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    *at += n + 1;
    return d;
}

/* A name the run can point at rather than copy: same when s equals it (same
 * lives as long as the run: the spec's id, the run holding its spec, or a
 * static default); NULL when s must be copied. */
static const char *lasting(const char *s, const char *same)
{
    return strcmp(s, same) == 0 ? same : NULL;
}

/* The name: the lasting one when there is one, else a copy at *at. */
static const char *put_name(char **at, const char *s, const char *same)
{
    const char *keep = lasting(s, same);
    return keep ? keep : put(at, s, strlen(s));
}

/* Room for the run's names, input and user_opts (see copy_strings), added
 * to *total; false when it overflows. */
static bool strings_size(size_t *total, const council_start_opts *opts, size_t id_len,
                         const char *topic, size_t topic_len, const char *council,
                         const char *reg)
{
    const council_input *in = &opts->input;
    const char *tag = in->tag ? in->tag : "text";
    return (!topic || reserve(total, id_len)) && reserve(total, topic_len) &&
           (lasting(council, opts->spec->id) || reserve(total, strlen(council))) &&
           (lasting(reg, COUNCIL_DEFAULT_REGISTRY) || reserve(total, strlen(reg))) &&
           (lasting(tag, "text") || reserve(total, strlen(tag))) &&
           reserve(total, in->data ? in->len : 0) &&
           (!in->text || reserve(total, in->text_len)) &&
           (!opts->user_opts || reserve(total, opts->user_opts_len));
}

/* Copy the run's names, input and user_opts to at, which has the room
 * strings_size counted. A run with its own topic ("council:run:<id>")
 * keeps its id as the topic's tail rather than twice; a council named as
 * its spec, the default registry and the "text" tag are not copied. */
static void copy_strings(council_run *run, char *at, const council_start_opts *opts,
                         const void *id, size_t id_len, const char *topic,
                         size_t topic_len, const char *council, const char *reg)
{
    const council_input *in = &opts->input;
    const char *tag = in->tag ? in->tag : "text";
    size_t data_len = in->data ? in->len : 0;
    if (topic) {
        run->run_id = put(&at, id, id_len);
        put(&at, topic, topic_len); /* right after the id: run_topic */
    } else {
        size_t pl = strlen(COUNCIL_TOPIC_PREFIX);
        memcpy(at, COUNCIL_TOPIC_PREFIX, pl);
        at += pl;
        run->run_id = put(&at, id, id_len);
        run->own_topic = true;
    }
    run->run_id_len = (uint32_t)id_len;
    run->topic_len = (uint32_t)topic_len;
    run->council = put_name(&at, council, opts->spec->id);
    run->registry = put_name(&at, reg, COUNCIL_DEFAULT_REGISTRY);
    run->input.tag = put_name(&at, tag, "text");
    run->input.data = put(&at, in->data ? in->data : "", data_len);
    run->input.len = data_len;
    if (in->text) {
        run->input.text = put(&at, in->text, in->text_len);
        run->input.text_len = in->text_len;
    } else if (strcmp(tag, "text") == 0) {
        run->input.text = run->input.data;
        run->input.text_len = run->input.len;
    }
    if (opts->user_opts) {
        run->user_opts = put(&at, opts->user_opts, opts->user_opts_len);
        run->user_opts_len = (uint32_t)opts->user_opts_len; /* checked above */
    }
}

/* Create a run. topic NULL: the run's own topic, and the run is
 * registered; otherwise it publishes on topic and is not registered (a
 * sub-council's run, reachable only through its parent's call). */
static int run_create(council_ctx *ctx, const council_start_opts *opts,
                      const char *topic, size_t topic_len, council_run **out)
{
    if (!ctx || !opts || !opts->spec || !out || ctx->freeing)
        return COUNCIL_EINVAL;
    if (opts->run_id && opts->run_id_len == 0)
        return COUNCIL_EINVAL;
    if (opts->run_id_len > 65536 || topic_len > UINT32_MAX ||
        (opts->user_opts && opts->user_opts_len > UINT32_MAX))
        return COUNCIL_ETOOBIG;
    int rc = council_spec_validate(opts->spec, NULL);
    if (rc)
        return rc;
    if ((rc = council_ctx_check_providers(ctx, opts->spec, NULL)))
        return rc;
    if (ctx->runs_active >= ctx->cfg.max_runs || !run_quota_take(ctx->quota))
        return COUNCIL_ELIMIT;
    const char *reg = opts->registry ? opts->registry : COUNCIL_DEFAULT_REGISTRY;
    char gen[23];
    const void *id = opts->run_id;
    size_t id_len = opts->run_id_len;
    if (!id) {
        council_run_id_generate(gen);
        id = gen;
        id_len = strlen(gen);
    }
    if (!topic && registry_get(ctx->reg, reg, strlen(reg), id, id_len)) {
        rc = COUNCIL_EEXIST;
        goto refused;
    }

    /* one zeroed block: the run and its strings */
    const char *council = opts->council ? opts->council : opts->spec->id;
    if (!topic)
        topic_len = strlen(COUNCIL_TOPIC_PREFIX) + id_len;
    size_t total = sizeof(council_run);
    council_run *run = strings_size(&total, opts, id_len, topic, topic_len, council, reg)
                           ? calloc(1, total)
                           : NULL;
    if (!run) {
        rc = COUNCIL_ENOMEM;
        goto refused;
    }
    run->refs = 1;
    run->spec = council_spec_ref(opts->spec);
    copy_strings(run, (char *)(run + 1), opts, id, id_len, topic, topic_len,
                 council, reg);
    rc = COUNCIL_ENOMEM;
    if (cx_timer_init(ctx, &run->kick, kick_cb, run) != COUNCIL_OK)
        goto fail;
    if (!topic) {
        /* the key is the run's own copy of its id: it outlives the entry
         * (run_unregister removes it before the run can be freed) */
        rc = registry_put_ref(ctx->reg, reg, strlen(reg), run->run_id, run->run_id_len,
                              run);
        if (rc)
            goto fail;
        run->registered = true;
        run->refs++; /* the registry's */
    }
    run->ctx = ctx;
    run->status = COUNCIL_PENDING;
    run->next = ctx->runs;
    if (ctx->runs)
        ctx->runs->prev = run;
    ctx->runs = run;
    ctx->runs_active++;
    *out = run;
    return COUNCIL_OK;
fail:
    run->ctx = NULL;
    run_free(run);
refused: /* the quota's slot, taken with the limit's check, goes back */
    run_quota_give(ctx->quota);
    return rc;
}

int council_run_create(council_ctx *ctx, const council_start_opts *opts,
                       council_run **out)
{
    return run_create(ctx, opts, NULL, 0, out);
}

int run_create_sub(council_ctx *ctx, const council_start_opts *opts,
                   const char *topic, size_t topic_len, council_run **out)
{
    if (!topic || !topic_len)
        return COUNCIL_EINVAL;
    return run_create(ctx, opts, topic, topic_len, out);
}

int council_run_begin(council_run *run)
{
    if (!run || !run->ctx)
        return COUNCIL_ESTATE;
    if (run->status != COUNCIL_PENDING)
        return COUNCIL_ESTATE;
    run->status = COUNCIL_RUNNING;
    run->started_at = council_now_us();
    run_publish(run, COUNCIL_EV_RUN_STARTED, NULL, -1, NULL, NULL, NULL, 0, NULL);
    run_kick(run);
    return COUNCIL_OK;
}

int council_run_start(council_ctx *ctx, const council_start_opts *opts,
                      council_run **out)
{
    council_run *run;
    int rc = council_run_create(ctx, opts, &run);
    if (rc)
        return rc;
    council_run_begin(run);
    *out = run;
    return COUNCIL_OK;
}

/* ------------------------------------------------------------ finishing */

static void retained_unlink(council_ctx *ctx, council_run *run)
{
    if (!run->in_ret_list)
        return;
    if (run->ret_prev)
        run->ret_prev->ret_next = run->ret_next;
    else
        ctx->ret_head = run->ret_next;
    if (run->ret_next)
        run->ret_next->ret_prev = run->ret_prev;
    else
        ctx->ret_tail = run->ret_prev;
    run->ret_prev = run->ret_next = NULL;
    run->in_ret_list = false;
    ctx->n_retained--;
}

/* Remove the run from its registry and drop the registry's reference. */
static void run_unregister(council_run *run)
{
    council_ctx *ctx = run->ctx;
    if (!ctx || !run->registered)
        return;
    retained_unlink(ctx, run);
    registry_remove(ctx->reg, run->registry, strlen(run->registry), run->run_id,
                    run->run_id_len);
    run->registered = false;
    ctx->trim_pending++;
    council_run_unref(run);
}

/* Giving memory back. A run that leaves the registry is usually freed
 * with it, and glibc keeps what it freed in its free lists, where the
 * process's RSS still counts it: 100k finished runs are some 400 MB that
 * no later run of a smaller burst reuses. Once a sweep has let go of
 * TRIM_MIN_RUNS runs, malloc_trim hands the free pages back to the kernel
 * (21 ms for 400 MB here); at most once per TRIM_INTERVAL_MS, so a steady
 * stream of expiring runs pays for it a few times a minute at most. */
#define TRIM_MIN_RUNS 1024u
#define TRIM_INTERVAL_MS 1000u

static bool trim_wanted(const council_ctx *ctx)
{
#ifdef __GLIBC__
    return ctx->trim_pending >= TRIM_MIN_RUNS && !ctx->freeing;
#else
    (void)ctx;
    return false;
#endif
}

/* The loop time a wanted trim may be made at. */
static uint64_t trim_at(const council_ctx *ctx, uint64_t now)
{
    return ctx->trimmed && ctx->last_trim + TRIM_INTERVAL_MS > now
               ? ctx->last_trim + TRIM_INTERVAL_MS
               : now;
}

static void maybe_trim(council_ctx *ctx, uint64_t now)
{
    if (!trim_wanted(ctx) || trim_at(ctx, now) > now)
        return;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    ctx->trim_pending = 0;
    ctx->last_trim = now;
    ctx->trimmed = true;
}

/* One timer serves every retained run: they all stay retention_ms and the
 * list is in finishing order, so it is due when the head expires. Removing
 * the head early leaves it due too soon, which is harmless: the callback
 * re-arms it. It is also due when a trim is wanted and allowed. */
static void retention_arm(council_ctx *ctx);

static void retention_cb(uv_timer_t *h)
{
    council_ctx *ctx = h->data;
    uint64_t now = uv_now(&ctx->loop);
    while (ctx->ret_head && ctx->ret_head->ret_expires <= now)
        run_unregister(ctx->ret_head);
    maybe_trim(ctx, now);
    retention_arm(ctx);
}

static void retention_arm(council_ctx *ctx)
{
    uint64_t now = uv_now(&ctx->loop), due = 0;
    bool armed = false;
    if (ctx->ret_head) {
        due = ctx->ret_head->ret_expires;
        armed = true;
    }
    if (trim_wanted(ctx) && (!armed || trim_at(ctx, now) < due)) {
        due = trim_at(ctx, now);
        armed = true;
    }
    if (!armed) {
        uv_timer_stop(&ctx->ret_timer);
        return;
    }
    ctx->ret_timer.data = ctx;
    uv_timer_start(&ctx->ret_timer, retention_cb, due > now ? due - now : 0, 0);
}

static void start_retention(council_run *run)
{
    council_ctx *ctx = run->ctx;
    if (!ctx || !run->registered || ctx->freeing)
        return;
    uint64_t now = uv_now(&ctx->loop);
    run->ret_expires = now + ctx->cfg.retention_ms;
    if (run->ret_expires < now)
        run->ret_expires = UINT64_MAX;
    run->in_ret_list = true;
    run->ret_next = NULL; /* the kick's old bytes until now */
    run->ret_prev = ctx->ret_tail;
    if (ctx->ret_tail)
        ctx->ret_tail->ret_next = run;
    else
        ctx->ret_head = run;
    ctx->ret_tail = run;
    ctx->n_retained++;
    bool evicted = false;
    while (ctx->n_retained > ctx->cfg.max_retained && ctx->ret_head) {
        run_unregister(ctx->ret_head);
        evicted = true;
    }
    if (ctx->ret_head == run || !uv_is_active((uv_handle_t *)&ctx->ret_timer) ||
        (evicted && trim_wanted(ctx)))
        retention_arm(ctx);
}

void run_finish(council_run *run, council_status status)
{
    if (is_terminal(run->status))
        return;
    council_run_ref(run);
    /* made before the end: an ended run's result stays where it is (out of
     * memory, the empty one, without its duration) */
    run_out *o = run_out_make(run);
    run->status = status;
    if (run->registered && run->ctx) /* council_whereis reads this, not the run */
        (void)registry_set_mark(run->ctx->reg, run->registry, strlen(run->registry),
                                run->run_id, run->run_id_len, RUN_MARK_ENDED);
    if (run->started_at == 0)
        run->started_at = council_now_us();
    int64_t took = council_now_us() - run->started_at;
    if (o)
        o->result.duration_us = took > 0 ? (uint64_t)took : 0;
    engine_cancel(run);
    if (run->ctx) {
        run->ctx->runs_active--;
        run_quota_give(run->ctx->quota);
    }
    cx_timer_fini(&run->kick);
    council_event_type t = status == COUNCIL_COMPLETED ? COUNCIL_EV_RUN_COMPLETED
                         : status == COUNCIL_FAILED    ? COUNCIL_EV_RUN_FAILED
                                                       : COUNCIL_EV_RUN_CANCELLED;
    run_publish(run, t, NULL, -1, NULL, NULL, NULL, 0, NULL);
    /* the first watcher, then the others, in order; a callback may unwatch
     * those not called yet (change watchers are dropped at the end) */
    run->change_cb = NULL;
    for (;;) {
        if (run->end_cb) {
            council_run_end_cb cb = run->end_cb;
            run->end_cb = NULL;
            cb(run, run->end_arg);
            continue;
        }
        watcher *w = run->watchers;
        if (!w)
            break;
        run->watchers = w->next;
        if (!w->changes) /* change watchers are dropped at the end */
            w->cb(run, w->arg);
        free(w);
    }
    start_retention(run);
    council_run_unref(run);
}

int council_run_cancel(council_run *run)
{
    if (!run)
        return COUNCIL_EINVAL;
    if (!run->ctx && !is_terminal(run->status))
        return COUNCIL_ESTATE;
    run_finish(run, COUNCIL_CANCELLED);
    return COUNCIL_OK;
}

void run_detach_all(council_ctx *ctx)
{
    /* cancel every unfinished run, then drop the registry's references */
    for (council_run *r = ctx->runs; r; r = r->next)
        council_run_ref(r);
    council_run *r = ctx->runs;
    while (r) {
        run_finish(r, COUNCIL_CANCELLED);
        r = r->next;
    }
    r = ctx->runs;
    while (r) {
        council_run *next = r->next;
        run_unregister(r);
        r = next;
    }
    /* detach whatever the caller still holds; drop our temporary refs */
    r = ctx->runs;
    ctx->runs = NULL;
    while (r) {
        council_run *next = r->next;
        cx_timer_fini(&r->kick);
        r->ctx = NULL;
        r->prev = r->next = NULL;
        council_run_unref(r);
        r = next;
    }
}

/* ------------------------------------------------------------- watchers */

static bool listed(const council_run *run, int changes)
{
    for (const watcher *w = run->watchers; w; w = w->next)
        if (w->changes == changes)
            return true;
    return false;
}

/* A watcher at the end of the list (end and change watchers share it;
 * the first watcher of each kind lives in the run, when none of its kind
 * is listed: the order of each kind is kept). */
static int add_watcher(council_run *run, council_run_end_cb cb, void *arg, int changes)
{
    if (!run || !cb)
        return COUNCIL_EINVAL;
    if (is_terminal(run->status))
        return COUNCIL_ESTATE;
    council_run_end_cb *slot = changes ? &run->change_cb : &run->end_cb;
    if (!*slot && !listed(run, changes)) {
        /* the usual one watcher of each kind (the C node's end watcher,
         * the NIF's two): in the run */
        *slot = cb;
        if (changes)
            run->change_arg = arg;
        else
            run->end_arg = arg;
        return COUNCIL_OK;
    }
    watcher *w = calloc(1, sizeof *w);
    if (!w)
        return COUNCIL_ENOMEM;
    w->cb = cb;
    w->arg = arg;
    w->changes = changes;
    watcher **pp = &run->watchers;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    return COUNCIL_OK;
}

static int remove_watcher(council_run *run, council_run_end_cb cb, void *arg, int changes)
{
    if (!run)
        return COUNCIL_EINVAL;
    if (!changes && run->end_cb && run->end_cb == cb && run->end_arg == arg) {
        run->end_cb = NULL;
        return COUNCIL_OK;
    }
    if (changes && run->change_cb && run->change_cb == cb && run->change_arg == arg) {
        run->change_cb = NULL;
        return COUNCIL_OK;
    }
    for (watcher **pp = &run->watchers; *pp; pp = &(*pp)->next)
        if ((*pp)->cb == cb && (*pp)->arg == arg && (*pp)->changes == changes) {
            watcher *w = *pp;
            *pp = w->next;
            free(w);
            return COUNCIL_OK;
        }
    return COUNCIL_ENOTFOUND;
}

int council_run_watch(council_run *run, council_run_end_cb cb, void *arg)
{
    return add_watcher(run, cb, arg, 0);
}

int council_run_unwatch(council_run *run, council_run_end_cb cb, void *arg)
{
    return remove_watcher(run, cb, arg, 0);
}

int council_run_watch_changes(council_run *run, council_run_end_cb cb, void *arg)
{
    return add_watcher(run, cb, arg, 1);
}

int council_run_unwatch_changes(council_run *run, council_run_end_cb cb, void *arg)
{
    return remove_watcher(run, cb, arg, 1);
}

/* The summary changed (run_publish): the change watchers, in order. */
static void changed(council_run *run)
{
    if (run->change_cb)
        run->change_cb(run, run->change_arg);
    for (watcher *w = run->watchers; w; w = w->next)
        if (w->changes)
            w->cb(run, w->arg);
}

/* -------------------------------------------------------------- lookups */

static council_run *lookup(council_ctx *ctx, const char *registry_name,
                           const void *id, size_t len)
{
    if (!ctx || !id || !len)
        return NULL;
    const char *reg = registry_name ? registry_name : COUNCIL_DEFAULT_REGISTRY;
    return registry_get(ctx->reg, reg, strlen(reg), id, len);
}

int council_whereis(council_ctx *ctx, const char *registry_name, const void *run_id,
                    size_t len, council_run **out)
{
    council_run *run = NULL;
    uint64_t mark = 0;
    if (ctx && run_id && len) {
        const char *reg = registry_name ? registry_name : COUNCIL_DEFAULT_REGISTRY;
        /* from the registry's slot alone: the run's memory is not read */
        run = registry_get_mark(ctx->reg, reg, strlen(reg), run_id, len, &mark);
    }
    if (out)
        *out = run;
    if (!run)
        return COUNCIL_EUNKNOWN_RUN;
    return (mark & RUN_MARK_ENDED) ? COUNCIL_ERUNNER_DEAD : COUNCIL_OK;
}

int council_run_find(council_ctx *ctx, const char *registry_name, const void *run_id,
                     size_t len, council_run **out)
{
    council_run *run = lookup(ctx, registry_name, run_id, len);
    if (out)
        *out = run;
    return run ? COUNCIL_OK : COUNCIL_ENOTFOUND;
}

int council_run_state(council_ctx *ctx, const char *registry_name, const void *run_id,
                      size_t len, council_summary *out)
{
    council_run *run = lookup(ctx, registry_name, run_id, len);
    if (!run)
        return COUNCIL_ENOTFOUND;
    if (out)
        council_run_summary(run, out);
    return COUNCIL_OK;
}

/* ------------------------------------------------------------ accessors */

council_status council_run_status(const council_run *run) { return run->status; }

const char *run_topic(const council_run *run, size_t *len)
{
    *len = run->topic_len;
    return run->own_topic ? run->run_id - strlen(COUNCIL_TOPIC_PREFIX)
                          : run->run_id + run->run_id_len + 1;
}

const char *council_run_id(const council_run *run, size_t *len)
{
    if (len)
        *len = run->run_id_len;
    return run->run_id;
}

const char *council_run_council(const council_run *run) { return run->council; }
const char *council_run_registry(const council_run *run) { return run->registry; }
const council_spec *council_run_spec(const council_run *run) { return run->spec; }
const council_input *council_run_input(const council_run *run) { return &run->input; }
council_ctx *council_run_ctx(const council_run *run) { return run->ctx; }
void council_run_set_user_data(council_run *run, void *data) { run->user_data = data; }
void *council_run_get_user_data(const council_run *run) { return run->user_data; }

const void *council_run_user_opts(const council_run *run, size_t *len)
{
    if (len)
        *len = run->user_opts_len;
    return run->user_opts;
}

int council_run_subscribe(council_run *run, council_event_cb cb,
                          council_overflow_cb overflow_cb, void *arg,
                          council_subscription **out)
{
    if (!run || !run->ctx)
        return COUNCIL_ESTATE;
    size_t topic_len;
    const char *topic = run_topic(run, &topic_len);
    return council_subscribe(run->ctx, topic, topic_len, cb,
                             overflow_cb, arg, out);
}

/* engine.c knows what round is current */
void engine_current_round(const council_run *run, const char **name, unsigned *idx);

void council_run_summary(const council_run *run, council_summary *out)
{
    memset(out, 0, sizeof *out);
    out->run_id = run->run_id;
    out->run_id_len = run->run_id_len;
    out->council = run->council;
    out->registry = run->registry;
    out->status = run->status;
    out->rounds_completed = run->rounds_completed;
    out->started_at_us = run->started_at;
    if (run->status == COUNCIL_RUNNING)
        engine_current_round(run, &out->current_round, &out->current_round_idx);
}
