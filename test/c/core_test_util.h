/* core_test_util.h - shared by the core's cmocka suites: a context with
 * small limits, an event recorder, and "run until done" with a deadline.
 */
#ifndef CORE_TEST_UTIL_H
#define CORE_TEST_UTIL_H

#include <council.h>
#include <council_json.h>
#include <jansson.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct recorder {
    const council_event *ev[4096];
    size_t n;
    size_t overflowed;
} recorder;

static inline void rec_cb(const council_event *ev, void *arg)
{
    recorder *r = arg;
    if (r->n < 4096)
        r->ev[r->n++] = council_event_ref(ev);
}

static inline void rec_overflow(size_t dropped, void *arg)
{
    ((recorder *)arg)->overflowed = dropped;
}

static inline void rec_clear(recorder *r)
{
    for (size_t i = 0; i < r->n; i++)
        council_event_unref(r->ev[i]);
    r->n = 0;
}

static inline size_t rec_count(const recorder *r, council_event_type t)
{
    size_t c = 0;
    for (size_t i = 0; i < r->n; i++)
        c += r->ev[i]->type == t;
    return c;
}

static inline size_t rec_terminal(const recorder *r)
{
    size_t c = 0;
    for (size_t i = 0; i < r->n; i++)
        c += council_event_is_terminal(r->ev[i]) ? 1 : 0;
    return c;
}

static inline council_ctx *test_ctx(uint64_t retention_ms)
{
    council_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retention_ms = retention_ms ? retention_ms : 60000;
    cfg.member_timeout_ms = 5000;
    council_ctx *ctx = council_ctx_new(&cfg);
    assert_non_null(ctx);
    return ctx;
}

/* JSON written with single quotes, so that tests need no escaping: every
 * ' becomes " (test JSON holds no apostrophes). The result lives in one
 * of 8 rotating buffers, until the 8th call after. */
static inline const char *sq(const char *single_quoted)
{
    static char bufs[8][16384];
    static unsigned next;
    char *out = bufs[next++ % 8];
    size_t n = strlen(single_quoted);
    assert_true(n < sizeof bufs[0]);
    for (size_t i = 0; i <= n; i++)
        out[i] = single_quoted[i] == '\'' ? '"' : single_quoted[i];
    return out;
}

static inline council_spec *spec_json(const char *json)
{
    council_spec *s = NULL;
    council_spec_error err;
    int rc = council_spec_from_json(json, strlen(json), &s, &err);
    if (rc)
        fprintf(stderr, "spec error %s: %s: %s\n", council_strerror(rc), err.field,
                err.message);
    assert_int_equal(rc, COUNCIL_OK);
    return s;
}

/* Create (not begin) a run of spec_text under run_id (NULL: a generated
 * id) on text input (NULL: no input at all), with rec subscribed unless
 * NULL. */
static inline council_run *create_rec(council_ctx *ctx, const char *spec_text,
                                      const char *run_id, const char *input, recorder *rec)
{
    council_spec *spec = spec_json(spec_text);
    council_start_opts o = {.spec = spec, .run_id = run_id,
                            .run_id_len = run_id ? strlen(run_id) : 0};
    if (input)
        o.input = (council_input){.tag = "text", .data = input, .len = strlen(input)};
    council_run *run = NULL;
    assert_int_equal(council_run_create(ctx, &o, &run), COUNCIL_OK);
    council_spec_unref(spec);
    if (rec)
        assert_int_equal(council_run_subscribe(run, rec_cb, rec_overflow, rec, NULL),
                         COUNCIL_OK);
    return run;
}

/* Start a run of spec on text input, with a recorder subscribed first. */
static inline council_run *start_rec(council_ctx *ctx, const char *spec_text,
                                     const char *input, recorder *rec)
{
    council_run *run = create_rec(ctx, spec_text, NULL, input, rec);
    assert_int_equal(council_run_begin(run), COUNCIL_OK);
    return run;
}

/* rec subscribed to a topic (a run's, or a sub-council's below it). */
static inline void subscribe_rec(council_ctx *ctx, const char *topic, recorder *rec)
{
    assert_int_equal(council_subscribe(ctx, topic, strlen(topic), rec_cb, NULL, rec, NULL),
                     COUNCIL_OK);
}

static inline int is_done(const council_run *run)
{
    council_status s = council_run_status(run);
    return s == COUNCIL_COMPLETED || s == COUNCIL_FAILED || s == COUNCIL_CANCELLED;
}

/* Step the loop until the run ends (then deliver queued events). Fails the
 * test after max_ms. */
static inline void wait_done(council_ctx *ctx, council_run *run, uint64_t max_ms)
{
    uint64_t t0 = uv_hrtime();
    while (!is_done(run)) {
        council_ctx_step(ctx, 10);
        if ((uv_hrtime() - t0) / 1000000 > max_ms)
            fail_msg("run did not end within %llu ms", (unsigned long long)max_ms);
    }
    council_ctx_flush(ctx);
}

/* Step the loop for ms milliseconds. */
static inline void spin(council_ctx *ctx, uint64_t ms)
{
    uint64_t t0 = uv_hrtime();
    while ((uv_hrtime() - t0) / 1000000 < ms)
        council_ctx_step(ctx, 5);
    council_ctx_flush(ctx);
}

static inline const council_round_result *round_named(const council_run *run, const char *name)
{
    const council_result *res = council_run_result(run);
    for (size_t i = 0; i < res->n_rounds; i++)
        if (strcmp(res->rounds[i]->name, name) == 0)
            return res->rounds[i];
    return NULL;
}

static inline const council_member_result *member_in(const council_round_result *r,
                                              const char *id)
{
    for (size_t i = 0; r && i < r->n_members; i++)
        if (strcmp(r->members[i]->member_id, id) == 0)
            return r->members[i];
    return NULL;
}

/* The fixture of most core tests: a context, two recorders (rec for the
 * run, sub for another topic), one run and room for a few more, released
 * by fx_teardown whether
 * the test passed or an assertion jumped out of it (cmocka then skips the
 * test's own tail):
 *   fx_test(test_x)                 a context with test_ctx(0)'s limits
 *   fx_test_with(test_x, &config)   one made with this council_config
 * and in the test: fx *f = *state; f->run = start_rec(f->ctx, ..., &f->rec). */
typedef struct fx {
    council_ctx *ctx;
    recorder rec, sub;
    council_run *run;
    council_run *runs[4]; /* a test's other runs */
} fx;

#define fx_test(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)
#define fx_test_with(t, cfg) \
    cmocka_unit_test_prestate_setup_teardown(t, fx_setup, fx_teardown, (void *)(cfg))

/* *state on entry: the council_config of fx_test_with, or NULL. */
static inline int fx_setup(void **state)
{
    const council_config *cfg = *state;
    fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->ctx = cfg ? council_ctx_new(cfg) : test_ctx(0);
    if (!f->ctx) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static inline int fx_teardown(void **state)
{
    fx *f = *state;
    rec_clear(&f->rec);
    rec_clear(&f->sub);
    if (f->run)
        council_run_unref(f->run);
    for (size_t i = 0; i < sizeof f->runs / sizeof f->runs[0]; i++)
        if (f->runs[i])
            council_run_unref(f->runs[i]);
    council_ctx_free(f->ctx);
    free(f);
    return 0;
}

/* The fixture's run of spec_text on input, recorded in f->rec, to its end
 * (at most max_ms). */
static inline council_run *fx_run(fx *f, const char *spec_text, const char *input,
                                  uint64_t max_ms)
{
    f->run = start_rec(f->ctx, spec_text, input, &f->rec);
    wait_done(f->ctx, f->run, max_ms);
    return f->run;
}

static inline const char *helpers_dir(void)
{
    const char *d = getenv("COUNCIL_TEST_HELPERS");
    return d && *d ? d : "build/release/test/helpers";
}

#endif
