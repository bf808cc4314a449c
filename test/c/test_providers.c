/* test_providers.c - member providers: exec with real child programs
 * (streamed answer, timeout, kill on cancel, output cap, crash, exit
 * status), native providers (sync, async, cancel callbacks, output cap),
 * retries, backoff and timeouts. */
#include "core_test_util.h"
/* white-box suite (looks at the compiled spec of a sub-council): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

#include <errno.h>
#include <signal.h>
#include <sys/types.h>

static char child_path[512];

static const char *child(void)
{
    snprintf(child_path, sizeof child_path, "%s/council_child", helpers_dir());
    return child_path;
}

/* One exec member running council_child with the given arguments (JSON
 * strings in single quotes, as limits). */
static council_run *exec_run(council_ctx *ctx, const char *args, const char *limits,
                             recorder *rec)
{
    char spec[2048];
    snprintf(spec, sizeof spec,
             "{'id':'x','members':[{'id':'e','provider':'exec',"
             "'options':{'argv':['%s',%s]}}],'rounds':[{'type':"
             "'independent_analysis'}],'limits':{%s}}",
             child(), args, limits ? limits : "");
    return start_rec(ctx, sq(spec), "question", rec);
}

static const council_member_result *only_member(council_run *run)
{
    const council_result *res = council_run_result(run);
    if (res->n_rounds == 0)
        return NULL;
    return res->rounds[0]->members[0];
}

static void test_exec_streams_chunks_and_answers_with_stdout(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = exec_run(ctx, "'answer','3'", NULL, rec);
    wait_done(ctx, run, 5000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_member_result *m = only_member(run);
    assert_true(m->ok);
    assert_memory_equal(m->text, "part0;part1;part2;", 18);
    assert_true(rec_count(rec, COUNCIL_EV_MEMBER_TOKEN) >= 2);
    /* the chunks add up to the answer */
    char all[256] = "";
    for (size_t i = 0; i < rec->n; i++)
        if (rec->ev[i]->type == COUNCIL_EV_MEMBER_TOKEN)
            strncat(all, rec->ev[i]->chunk, rec->ev[i]->chunk_len);
    assert_string_equal(all, m->text);
}

/* council_ctx_set_exec_allow: only the listed program (or what is under a
 * listed directory) runs; another is refused at create with the field. */
static void test_exec_runs_only_allowed_programs(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    const char *none[] = {"/nonexistent/program"};
    assert_int_equal(council_ctx_set_exec_allow(ctx, none, 1), COUNCIL_EINVAL);
    assert_int_equal(council_ctx_set_exec_allow(ctx, NULL, 1), COUNCIL_EINVAL);
    const char *dir[] = {helpers_dir()};
    assert_int_equal(council_ctx_set_exec_allow(ctx, dir, 1), COUNCIL_OK);
    council_run *run = f->run = exec_run(ctx, "'answer','1'", NULL, NULL);
    wait_done(ctx, run, 5000);
    assert_true(only_member(run)->ok);

    char json[1024];
    council_spec *sh = spec_json(sq("{'id':'x','members':[{'id':'m','provider':'mock'},"
                                    "{'id':'e','provider':'exec','options':{'argv':['sh']}}],"
                                    "'rounds':[{'type':'independent_analysis'}]}"));
    snprintf(json, sizeof json,
             "{'id':'x','members':[{'id':'e','provider':'exec',"
             "'options':{'argv':['%s']}}],'rounds':[{'type':"
             "'independent_analysis'}]}", child());
    council_spec *own = spec_json(sq(json));
    council_spec_error err;
    assert_int_equal(council_ctx_check_providers(ctx, sh, &err), COUNCIL_EPROVIDER);
    assert_string_equal(err.field, "members[1].options.argv");
    assert_string_equal(err.message, "program not allowed");
    council_start_opts so = {.spec = sh, .input = {.data = "q", .len = 1}};
    council_run *refused = NULL;
    assert_int_equal(council_run_create(ctx, &so, &refused), COUNCIL_EPROVIDER);
    assert_int_equal(council_ctx_check_providers(ctx, own, &err), COUNCIL_OK);
    /* none allowed at all; then any again */
    assert_int_equal(council_ctx_set_exec_allow(ctx, dir, 0), COUNCIL_OK);
    assert_int_equal(council_ctx_check_providers(ctx, own, &err), COUNCIL_EPROVIDER);
    assert_string_equal(err.field, "members[0].options.argv");
    assert_int_equal(council_ctx_set_exec_allow(ctx, NULL, 0), COUNCIL_OK);
    assert_int_equal(council_ctx_check_providers(ctx, sh, &err), COUNCIL_OK);
    council_spec_unref(sh);
    council_spec_unref(own);
}

static void test_exec_gets_the_request_json_on_stdin(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = exec_run(ctx, "'echo'", NULL, NULL);
    wait_done(ctx, run, 5000);
    const council_member_result *m = only_member(run);
    assert_true(m->ok);
    json_t *req = json_loadb(m->text, m->text_len, 0, NULL);
    assert_non_null(req);
    size_t idl;
    const char *id = council_run_id(run, &idl);
    assert_string_equal(json_string_value(json_object_get(req, "run_id")), id);
    assert_string_equal(json_string_value(json_object_get(req, "member_id")), "e");
    assert_string_equal(json_string_value(json_object_get(req, "input")), "question");
    json_t *round = json_object_get(req, "round");
    assert_string_equal(json_string_value(json_object_get(round, "name")),
                        "independent_analysis");
    assert_int_equal(json_integer_value(json_object_get(round, "idx")), 0);
    assert_int_equal(json_integer_value(json_object_get(req, "attempt")), 1);
    json_decref(req);
}

static pid_t pid_from_tokens(recorder *rec)
{
    for (size_t i = 0; i < rec->n; i++)
        if (rec->ev[i]->type == COUNCIL_EV_MEMBER_TOKEN &&
            strncmp(rec->ev[i]->chunk, "pid:", 4) == 0)
            return (pid_t)atoi(rec->ev[i]->chunk + 4);
    return 0;
}

static void wait_pid_gone(council_ctx *ctx, pid_t pid)
{
    uint64_t t0 = uv_hrtime();
    /* kill(pid, 0) succeeds on a zombie: ESRCH means killed AND reaped */
    while (kill(pid, 0) == 0) {
        council_ctx_step(ctx, 10);
        if ((uv_hrtime() - t0) / 1000000 > 3000)
            fail_msg("child %d still exists", (int)pid);
    }
    assert_int_equal(errno, ESRCH);
}

static void test_exec_timeout_kills_the_child(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = exec_run(ctx, "'sleep'", "'member_timeout_ms':300", rec);
    wait_done(ctx, run, 5000);
    assert_int_equal(council_run_status(run), COUNCIL_FAILED);
    const council_member_result *m = only_member(run);
    assert_false(m->ok);
    assert_string_equal(m->error, "timeout after 300 ms");
    pid_t pid = pid_from_tokens(rec);
    assert_true(pid > 0);
    wait_pid_gone(ctx, pid);
}

static void test_exec_cancel_kills_and_reaps_the_child(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = exec_run(ctx, "'sleep'", NULL, rec);
    uint64_t t0 = uv_hrtime();
    pid_t pid = 0;
    while (!(pid = pid_from_tokens(rec))) {
        council_ctx_step(ctx, 10);
        council_ctx_flush(ctx);
        if ((uv_hrtime() - t0) / 1000000 > 3000)
            fail_msg("child never said its pid");
    }
    assert_int_equal(kill(pid, 0), 0);
    assert_int_equal(council_run_cancel(run), COUNCIL_OK);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    wait_pid_gone(ctx, pid);
    council_ctx_flush(ctx);
    assert_int_equal(rec_count(rec, COUNCIL_EV_RUN_CANCELLED), 1);
    assert_int_equal(rec_terminal(rec), 1);
}

static const council_config CAP1000 = {.output_cap = 1000};

/* in a context of CAP1000 */
static void test_exec_output_over_cap_is_a_member_error(void **state)
{
    fx *f = *state;
    council_run *run = f->run = exec_run(f->ctx, "'big','100000'", NULL, NULL);
    wait_done(f->ctx, run, 5000);
    const council_member_result *m = only_member(run);
    assert_false(m->ok);
    assert_string_equal(m->error, "output exceeds 1000 bytes");
}

static void test_exec_crash_and_exit_status_carry_stderr(void **state)
{
    fx *f = *state;
    council_run *run = f->run = exec_run(f->ctx, "'crash'", NULL, NULL);
    wait_done(f->ctx, run, 5000);
    assert_string_equal(only_member(run)->error, "killed by signal 6: boom");
    council_run_unref(run);
    f->run = NULL;
    run = f->run = exec_run(f->ctx, "'exit3'", NULL, NULL);
    wait_done(f->ctx, run, 5000);
    assert_string_equal(only_member(run)->error, "exit status 3: bad things");
    assert_int_equal(council_run_status(run), COUNCIL_FAILED);
}

/* Over 512 bytes of stderr in several writes: the error carries the last
 * 512 bytes (the end, where the reason usually is), not the first ones. */
static void test_exec_error_carries_the_end_of_stderr(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = start_rec(
        ctx, "{\"id\":\"x\",\"members\":[{\"id\":\"e\",\"provider\":\"exec\",\"options\":"
             "{\"argv\":[\"/bin/sh\",\"-c\",\"cat >/dev/null; "
             "head -c 500 /dev/zero | tr '\\\\0' a >&2; sleep 0.05; "
             "head -c 500 /dev/zero | tr '\\\\0' b >&2; sleep 0.05; "
             "echo END >&2; exit 1\"]}}],"
             "\"rounds\":[{\"type\":\"independent_analysis\"}]}",
        "q", NULL);
    wait_done(ctx, run, 5000);
    const char *e = only_member(run)->error;
    assert_non_null(e);
    size_t head = strlen("exit status 1: ");
    assert_int_equal(strlen(e), head + 512);
    /* the last 512 of 1004 bytes: 8 'a', 500 'b', "END\n" */
    assert_memory_equal(e, "exit status 1: aaaaaaaab", head + 9);
    assert_string_equal(e + strlen(e) - 4, "END\n");
}

static void test_exec_missing_program_is_a_member_error(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = start_rec(
        ctx, sq("{'id':'x','members':[{'id':'e','provider':'exec','options':"
                "{'argv':['/nonexistent/prog']}}],'rounds':[{'type':'critique'}]}"),
        "q", NULL);
    wait_done(ctx, run, 5000);
    assert_non_null(strstr(only_member(run)->error, "exec: cannot start /nonexistent/prog"));
}

static void test_ctx_free_kills_running_children(void **state)
{
    (void)state;
    council_ctx *ctx = test_ctx(0);
    recorder rec = {0};
    council_run *run = exec_run(ctx, "'sleep'", NULL, &rec);
    pid_t pid = 0;
    while (!(pid = pid_from_tokens(&rec))) {
        council_ctx_step(ctx, 10);
        council_ctx_flush(ctx);
    }
    rec_clear(&rec);
    council_ctx_free(ctx);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    assert_int_equal(council_run_cancel(run), COUNCIL_OK);
    assert_int_equal(kill(pid, 0), -1);
    council_run_unref(run);
}

/* ---------------------------------------------------------- native */

typedef struct native {
    int starts, cancels;
    int mode;              /* 0 sync, 1 async, 2 never, 3 too big, 4 cancel run,
                              5 never (cancel() cancels the run), 6 streams too
                              much (cancel() cancels the run), 7 fails its first
                              two attempts (see backoff_fail) */
    council_call *held;
    uint64_t next_due;     /* mode 7: the loop time the next attempt's backoff
                              timer was armed for */
    uint64_t delays[2];    /* mode 7: the backoff armed after attempts 1, 2 */
    uv_timer_t timer;
    bool timer_init;
} native;

static void async_done(uv_timer_t *t)
{
    native *n = t->data;
    if (n->held) {
        council_call_token(n->held, "as", 2);
        council_call_token(n->held, "ync", 3);
        assert_int_equal(council_call_complete(n->held, "async", 5), COUNCIL_OK);
        council_call_unref(n->held);
        n->held = NULL;
    }
}

/* Mode 7: attempt n (from 1) must not begin before the backoff timer the
 * core armed for it is due; the first two fail (transiently) at once, and
 * each failure's successor is found in the run's calls, waiting with its
 * timer armed: its due time less the loop time of the failure is the
 * backoff the core chose. The third answers. */
static void backoff_fail(native *n, council_call *call)
{
    uv_loop_t *loop = n->timer.loop;
    unsigned a = council_call_attempt(call);
    assert_int_equal(a, n->starts);
    if (a > 1 && uv_now(loop) < n->next_due)
        fail_msg("attempt %u began at %llu, its backoff timer is due at %llu", a,
                 (unsigned long long)uv_now(loop), (unsigned long long)n->next_due);
    if (a > 2) {
        assert_int_equal(council_call_complete(call, "third", 5), COUNCIL_OK);
        return;
    }
    uint64_t now = uv_now(loop);
    assert_int_equal(council_call_fail(call, "busy"), COUNCIL_OK);
    const council_call *next = council_call_run(call)->calls;
    while (next && !(next->attempt == a + 1 && next->state == CALL_WAITING))
        next = next->next;
    assert_non_null(next);
    n->next_due = next->timer.due;
    n->delays[a - 1] = next->timer.due - now;
}

static int n_start(council_call *call, void *arg)
{
    native *n = arg;
    n->starts++;
    size_t len;
    assert_non_null(council_call_run_id(call, &len));
    assert_true(len > 0);
    assert_string_equal(council_call_member_options(call), "{\"k\":1}");
    assert_string_equal(council_call_round_type(call), "independent_analysis");
    assert_int_equal(council_call_round_idx(call), 0);
    assert_non_null(council_call_run(call));
    assert_true(council_call_id(call) > 0);
    assert_non_null(council_call_request(call, &len));
    switch (n->mode) {
    case 0:
        council_call_token(call, "s", 1);
        council_call_complete(call, "sync", 4);
        break;
    case 1:
        n->held = council_call_ref(call);
        uv_timer_start(&n->timer, async_done, 30, 0);
        break;
    case 2:
    case 5:
        n->held = council_call_ref(call);
        break;
    case 6: {
        char *big = calloc(1, 5000);
        assert_int_equal(council_call_token(call, big, 5000), COUNCIL_ETOOBIG);
        free(big);
        break;
    }
    case 4:
        assert_int_equal(council_run_cancel(council_call_run(call)), COUNCIL_OK);
        assert_false(council_call_active(call));
        return COUNCIL_EPROVIDER; /* ignored: the call is already over */
    case 7:
        backoff_fail(n, call);
        break;
    case 3: {
        char *big = calloc(1, 5000);
        assert_int_equal(council_call_complete(call, big, 5000), COUNCIL_ETOOBIG);
        free(big);
        break;
    }
    }
    return 0;
}

static void n_cancel(council_call *call, void *arg)
{
    native *n = arg;
    n->cancels++;
    if (n->mode == 5 || n->mode == 6)
        assert_int_equal(council_run_cancel(council_call_run(call)), COUNCIL_OK);
}

/* The native suite's fixture: a context with "nat" registered over n,
 * its recorder and run. The mode comes as the test's prestate. */
typedef struct nfx {
    native n;
    council_ctx *ctx;
    recorder rec;
    council_run *run;
} nfx;

#define nat_test(t, mode) \
    cmocka_unit_test_prestate_setup_teardown(t, nat_setup, nat_teardown, (void *)&MODES[mode])
static const int MODES[] = {0, 1, 2, 3, 4, 5, 6, 7};

static int nat_setup(void **state)
{
    const int *mode = *state;
    nfx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    council_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.output_cap = 4096;
    f->ctx = council_ctx_new(&cfg);
    if (!f->ctx) {
        free(f);
        return -1;
    }
    f->n.mode = *mode;
    uv_timer_init(council_ctx_uv_loop(f->ctx), &f->n.timer);
    f->n.timer.data = &f->n;
    council_provider_ops ops = {n_start, n_cancel, NULL};
    assert_int_equal(council_provider_register(f->ctx, "nat", &ops, &f->n), 0);
    *state = f;
    return 0;
}

/* the call a mode kept (when the test did not let it go), then the run */
static int nat_teardown(void **state)
{
    nfx *f = *state;
    rec_clear(&f->rec);
    if (f->n.held)
        council_call_unref(f->n.held);
    if (f->run)
        council_run_unref(f->run);
    uv_close((uv_handle_t *)&f->n.timer, NULL);
    council_ctx_free(f->ctx);
    free(f);
    return 0;
}

static const char NSPEC[] =
    "{'id':'n','members':[{'id':'m','provider':'nat','options':{'k':1}}],"
    "'rounds':[{'type':'independent_analysis'}],"
    "'limits':{'member_timeout_ms':100}}";

/* The fixture's run of NSPEC (with rec recording it unless NULL), to its end. */
static council_run *nat_run(nfx *f, recorder *rec)
{
    f->run = start_rec(f->ctx, sq(NSPEC), "q", rec);
    wait_done(f->ctx, f->run, 2000);
    return f->run;
}

/* mode 0, then 1 */
static void test_native_provider_sync_and_async(void **state)
{
    nfx *f = *state;
    council_run *run = nat_run(f, &f->rec);
    assert_string_equal(only_member(run)->text, "sync");
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_MEMBER_TOKEN), 1);
    rec_clear(&f->rec);
    council_run_unref(run);
    f->run = NULL;
    f->n.mode = 1;
    run = nat_run(f, &f->rec);
    assert_string_equal(only_member(run)->text, "async");
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_MEMBER_TOKEN), 2);
    assert_int_equal(f->n.cancels, 0);
}

/* mode 2 */
static void test_native_timeout_calls_cancel_and_refuses_late_answers(void **state)
{
    nfx *f = *state;
    council_run *run = nat_run(f, NULL);
    assert_int_equal(f->n.cancels, 1);
    assert_string_equal(only_member(run)->error, "timeout after 100 ms");
    assert_false(council_call_active(f->n.held));
    assert_int_equal(council_call_complete(f->n.held, "late", 4), COUNCIL_ESTATE);
    assert_int_equal(council_call_token(f->n.held, "late", 4), COUNCIL_ESTATE);
}

/* mode 2 */
static void test_native_cancel_on_run_cancel(void **state)
{
    nfx *f = *state;
    f->run = start_rec(f->ctx, sq(NSPEC), "q", NULL);
    while (f->n.starts == 0)
        council_ctx_step(f->ctx, 5);
    council_run_cancel(f->run);
    assert_int_equal(f->n.cancels, 1);
    assert_int_equal(council_call_fail(f->n.held, "x"), COUNCIL_ESTATE);
}

/* mode 4 */
static void test_native_provider_may_cancel_the_run_from_start(void **state)
{
    nfx *f = *state;
    council_run *run = f->run = start_rec(
        f->ctx, sq("{'id':'n','members':[{'id':'m','provider':'nat','options':"
                   "{'k':1}},{'id':'m2','provider':'nat','options':{'k':1}}],"
                   "'rounds':[{'type':'independent_analysis'}]}"), "q", &f->rec);
    wait_done(f->ctx, run, 2000);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    assert_int_equal(f->n.starts, 1);
    assert_int_equal(f->n.cancels, 1);
    assert_int_equal(rec_terminal(&f->rec), 1);
}

/* A provider's cancel() may cancel the whole run, also when the core ends
 * the call itself (timeout: mode 5, too much streamed output: mode 6): the
 * run ends cancelled once, and nothing touches the freed round afterwards. */
static void test_native_cancel_callback_may_cancel_the_run(void **state)
{
    nfx *f = *state;
    council_run *run = nat_run(f, &f->rec);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    assert_int_equal(f->n.cancels, 1);
    assert_int_equal(rec_terminal(&f->rec), 1);
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_MEMBER_COMPLETED), 0);
}

/* mode 3 */
static void test_native_answer_over_cap_fails_the_attempt(void **state)
{
    nfx *f = *state;
    council_run *run = nat_run(f, NULL);
    assert_string_equal(only_member(run)->error, "output exceeds 4096 bytes");
}

/* mode 7: with backoff_ms 30, the core arms 30 ms after the first failure
 * and 60 after the second, each plus at most a quarter of jitter, and no
 * attempt begins before its timer is due (backoff_fail) */
static void test_native_retries_wait_for_their_backoff(void **state)
{
    nfx *f = *state;
    council_run *run = f->run = start_rec(
        f->ctx, sq("{'id':'n','members':[{'id':'m','provider':'nat','options':{'k':1}}],"
                   "'rounds':[{'type':'independent_analysis'}],"
                   "'limits':{'max_attempts':3,'backoff_ms':30}}"), "q", NULL);
    wait_done(f->ctx, run, 3000);
    const council_member_result *m = only_member(run);
    assert_true(m->ok);
    assert_int_equal(m->attempts, 3);
    assert_int_equal(f->n.starts, 3);
    assert_in_range(f->n.delays[0], 30, 30 + 30 / 4);
    assert_in_range(f->n.delays[1], 60, 60 + 60 / 4);
}

/* ------------------------------------------------- retries and timeouts */

/* A mock member "m" failing its first two attempts, under `limits`. */
#define FAILING_TWICE(limits)                                                       \
    "{'id':'r','members':[{'id':'m','provider':'mock','options':"                    \
    "{'fail_attempts':[1,2]}}],'rounds':[{'type':'independent_analysis'}],"          \
    "'limits':{" limits "}}"

/* (the wait between attempts: test_native_retries_wait_for_their_backoff) */
static void test_retries_count_attempts(void **state)
{
    fx *f = *state;
    council_run *run = f->run =
        start_rec(f->ctx, sq(FAILING_TWICE("'max_attempts':3,'backoff_ms':30")), "q", NULL);
    wait_done(f->ctx, run, 3000);
    const council_member_result *m = only_member(run);
    assert_true(m->ok);
    assert_int_equal(m->attempts, 3);
    assert_string_equal(m->text, "m: independent_analysis #0 attempt 3 on \"q\"");
    council_run_unref(run);
    f->run = NULL;

    run = f->run = start_rec(f->ctx, sq(FAILING_TWICE("'max_attempts':2")), "q", NULL);
    wait_done(f->ctx, run, 3000);
    m = only_member(run);
    assert_false(m->ok);
    assert_int_equal(m->attempts, 2);
    assert_string_equal(m->error, "mock failure on attempt 2");
}

static void test_timeout_then_retry_succeeds(void **state)
{
    fx *f = *state;
    council_run *run = fx_run(
        f, sq("{'id':'r','members':[{'id':'m','provider':'mock','options':"
              "{'hang_attempts':[1],'latency_ms':5}}],'rounds':[{'type':"
              "'independent_analysis'}],'limits':{'max_attempts':2,"
              "'member_timeout_ms':50}}"), "q", 3000);
    const council_member_result *m = only_member(run);
    assert_true(m->ok);
    assert_int_equal(m->attempts, 2);
    assert_int_equal(council_run_result(run)->n_errors, 0);
}

/* A mock quotes at most 200 bytes of the input as a model's request would
 * show it: never half a UTF-8 character (the answer, and so the result's
 * JSON, stays valid text), and each byte that is not UTF-8 as U+FFFD. */
static void test_mock_quotes_the_input_as_text(void **state)
{
    fx *f = *state;
    const char *spec = sq("{'id':'r','members':[{'id':'m','provider':'mock'}],"
                          "'rounds':[{'type':'independent_analysis'}]}");
    char in[400], want[300];
    memset(in, 'x', sizeof in);
    memcpy(in + 198, "\xe2\x82\xac", 3); /* a euro sign over byte 200 */
    in[sizeof in - 1] = '\0';
    council_run *run = fx_run(f, spec, in, 3000);
    snprintf(want, sizeof want, "m: independent_analysis #0 attempt 1 on \"%.198s\"", in);
    assert_string_equal(only_member(run)->text, want);
    char *json = council_run_result_json(run);
    assert_non_null(json);
    free(json);
    council_run_unref(run);

    f->run = NULL;
    run = fx_run(f, spec, "a\xff" "b", 3000);
    assert_string_equal(only_member(run)->text,
                        "m: independent_analysis #0 attempt 1 on \"a\xef\xbf\xbd" "b\"");
}

/* A mock's own timeout option; and a mock that only waits (a latency, no
 * chunks) answers on its call's own timer (call_wake_after), with no state
 * of its own: its answer or its failure after the latency, the timeout
 * when the latency is not below it (as when each had a timer: the
 * timeout's is the older); a run cancelled while it waits ends at once,
 * leaving nothing (ASan). */
static void test_mock_timeout_option_per_member(void **state)
{
    fx *f = *state;
    council_run *run = fx_run(
        f, sq("{'id':'r','members':[{'id':'m','provider':'mock','options':"
              "{'latency_ms':500,'timeout_ms':40}},{'id':'k','provider':'mock'},"
              "{'id':'a','provider':'mock','options':{'latency_ms':20}},"
              "{'id':'b','provider':'mock','options':{'latency_ms':20,'fail_attempts':[1]}},"
              "{'id':'c','provider':'mock','options':{'latency_ms':40,'timeout_ms':40}}],"
              "'rounds':[{'type':'independent_analysis'}],'limits':{'max_attempts':1}}"),
        "q", 3000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_round_result *r = council_run_result(run)->rounds[0];
    assert_string_equal(member_in(r, "m")->error, "timeout after 40 ms");
    assert_true(member_in(r, "k")->ok);
    assert_true(member_in(r, "a")->ok);
    assert_string_equal(member_in(r, "a")->text, "a: independent_analysis #0 attempt 1 on \"q\"");
    assert_false(member_in(r, "b")->ok);
    assert_string_equal(member_in(r, "b")->error, "mock failure on attempt 1");
    assert_false(member_in(r, "c")->ok);
    assert_string_equal(member_in(r, "c")->error, "timeout after 40 ms");
    council_run_unref(run);
    f->run = NULL;

    rec_clear(&f->rec);
    run = f->run = start_rec(f->ctx,
                             sq("{'id':'w','members':[{'id':'a','provider':'mock','options':"
                                "{'latency_ms':600000}}],'rounds':[{'type':'independent_analysis'}]}"),
                             "q", &f->rec);
    while (rec_count(&f->rec, COUNCIL_EV_MEMBER_STARTED) == 0)
        council_ctx_step(f->ctx, 50);
    assert_int_equal(council_run_cancel(run), 0);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    spin(f->ctx, 20);
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_RUN_CANCELLED), 1);
}

/* A council with a mock and a council member "inner" of two mocks, two
 * rounds and a chair (its member x with the mock options `extra`), in
 * `rounds` of the outer council. Single quotes. */
#define SUB_SPEC(extra, rounds)                                                   \
    "{'id':'parent','members':[{'id':'solo','provider':'mock'},"                    \
    "{'id':'inner','provider':'council','options':{'spec':"                         \
    "{'id':'child','members':[{'id':'x','provider':'mock','options':"               \
    "{" extra "}},{'id':'y','provider':'mock'}],'rounds':[{'type':"                \
    "'independent_analysis'},{'type':'vote'}],'chair':'y'}}}],"                     \
    "'rounds':[" rounds "]}"
#define ONE_ROUND "{'type':'independent_analysis'}"
#define CHAIR_ANSWER "y: chair #2 attempt 1 on \"why\" having read 2 answers"

static void test_council_member_runs_a_sub_council(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = create_rec(ctx, sq(SUB_SPEC("", ONE_ROUND)), "P1", "why", &f->rec);
    subscribe_rec(ctx, "council_ex:run:P1:sub:inner", &f->sub);
    council_run_begin(run);
    wait_done(ctx, run, 3000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_member_result *m = member_in(council_run_result(run)->rounds[0], "inner");
    assert_true(m->ok);
    assert_string_equal(m->text, CHAIR_ANSWER);
    assert_int_equal(rec_count(&f->sub, COUNCIL_EV_RUN_STARTED), 1);
    assert_string_equal(f->sub.ev[0]->council, "child");
    assert_int_equal(rec_count(&f->sub, COUNCIL_EV_RUN_COMPLETED), 1);
    assert_int_equal(rec_terminal(&f->rec), 1);
    /* the nested run is not registered */
    council_stats st;
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_registered, 1);
}

static void test_cancel_reaches_the_sub_council(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run =
        create_rec(ctx, sq(SUB_SPEC("'latency_ms':300", ONE_ROUND)), "P2", NULL, NULL);
    subscribe_rec(ctx, "council_ex:run:P2:sub:inner", &f->sub);
    council_run_begin(run);
    spin(ctx, 50);
    assert_int_equal(rec_count(&f->sub, COUNCIL_EV_RUN_STARTED), 1);
    council_run_cancel(run);
    spin(ctx, 20);
    assert_int_equal(rec_count(&f->sub, COUNCIL_EV_RUN_CANCELLED), 1);
    council_stats st;
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_active, 0);
}

/* The fixture's run of a mock "solo" and a council member "inner" of
 * `inner` (a spec), in `rounds`, to its end; it completes. */
static council_run *with_inner(fx *f, const char *inner, const char *rounds)
{
    char spec[1024];
    snprintf(spec, sizeof spec,
             "{'id':'p','members':[{'id':'solo','provider':'mock'},"
             "{'id':'inner','provider':'council','options':{'spec':%s}}],'rounds':[%s]}",
             inner, rounds);
    council_run *run = f->run = start_rec(f->ctx, sq(spec), "q", NULL);
    wait_done(f->ctx, run, 3000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    return run;
}

static void test_failed_sub_council_is_a_member_error(void **state)
{
    council_run *run = with_inner(*state,
                                  "{'id':'c','members':[{'id':'x','provider':'mock'}],"
                                  "'rounds':[{'type':'vote'}]}",
                                  "{'type':'critique'}");
    const council_member_result *m = member_in(council_run_result(run)->rounds[0], "inner");
    assert_false(m->ok);
    assert_non_null(strstr(m->error, "sub-council failed: round vote failed"));
}

static void test_invalid_sub_council_spec_is_a_member_error_at_call_time(void **state)
{
    council_run *run = with_inner(*state,
                                  "{'id':'c','members':[{'id':'x','provider':'mock'}],"
                                  "'rounds':[{'type':'bogus'}]}",
                                  "{'type':'independent_analysis'},{'type':'peer_review'}");
    for (size_t r = 0; r < 2; r++) {
        const council_member_result *m = member_in(council_run_result(run)->rounds[r], "inner");
        assert_false(m->ok);
        assert_string_equal(m->error,
                            "sub-council: spec rounds[0].type: unknown round type \"bogus\"");
        assert_true(member_in(council_run_result(run)->rounds[r], "solo")->ok);
    }
}

/* A council of a mock and a council member of spec `inner` (single quotes). */
#define LEVEL(id, sub, inner)                                                   \
    "{'id':'" id "','members':[{'id':'a','provider':'mock'},"                    \
    "{'id':'" sub "','provider':'council','options':{'spec':" inner              \
    "}}],'rounds':[{'type':'independent_analysis'}]}"

static void test_sub_councils_nest_three_deep_and_no_deeper(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *deepest = &f->sub;
    /* the fourth level is never run, so never checked: it may be invalid */
    council_run *run = f->run = create_rec(
        ctx,
        sq(LEVEL("top", "m1",
                 LEVEL("l1", "m2", LEVEL("l2", "m3", LEVEL("l3", "m4", "{'id':'never'}"))))),
        "N", "q", NULL);
    subscribe_rec(ctx, "council_ex:run:N:sub:m1:sub:m2:sub:m3", deepest);
    council_run_begin(run);
    wait_done(ctx, run, 3000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    assert_true(member_in(council_run_result(run)->rounds[0], "m1")->ok);
    assert_int_equal(rec_count(deepest, COUNCIL_EV_RUN_COMPLETED), 1);
    const council_event *end = deepest->ev[deepest->n - 1];
    assert_string_equal(end->council, "l3");
    const council_member_result *m4 = member_in(end->result->rounds[0], "m4");
    assert_false(m4->ok);
    assert_string_equal(m4->error, "sub-council: nested too deep");
}

/* Not in the fixture: the spec's references are read after the context
 * is gone. */
static void test_every_call_shares_the_sub_council_spec_compiled_once(void **state)
{
    (void)state;
    council_ctx *ctx = test_ctx(0);
    recorder sub = {0};
    council_spec *spec = spec_json(
        sq(SUB_SPEC("", "{'type':'independent_analysis'},{'type':'peer_review'}")));
    const council_spec *child = spec->members[1].sub;
    assert_non_null(child);
    council_run *runs[2];
    for (int i = 0; i < 2; i++) {
        char id[4];
        snprintf(id, sizeof id, "S%d", i);
        council_start_opts o = {.spec = spec, .run_id = id, .run_id_len = strlen(id),
                                .input = {.data = "why", .len = 3}};
        assert_int_equal(council_run_create(ctx, &o, &runs[i]), 0);
        char t[64];
        snprintf(t, sizeof t, "council_ex:run:%s:sub:inner", id);
        subscribe_rec(ctx, t, &sub);
        council_run_begin(runs[i]);
    }
    for (int i = 0; i < 2; i++) {
        wait_done(ctx, runs[i], 3000);
        assert_int_equal(council_run_status(runs[i]), COUNCIL_COMPLETED);
        for (size_t r = 0; r < 2; r++) {
            const council_member_result *m =
                member_in(council_run_result(runs[i])->rounds[r], "inner");
            assert_true(m->ok);
            assert_string_equal(m->text, CHAIR_ANSWER);
        }
    }
    /* four nested runs (two rounds of two runs), one spec */
    assert_int_equal(rec_count(&sub, COUNCIL_EV_RUN_STARTED), 4);
    assert_int_equal(rec_count(&sub, COUNCIL_EV_RUN_COMPLETED), 4);
    for (size_t i = 0; i < sub.n; i++)
        assert_ptr_equal(council_run_spec(sub.ev[i]->run), child);
    /* each nested run dropped its reference: only the parent's is left */
    rec_clear(&sub);
    for (int i = 0; i < 2; i++)
        council_run_unref(runs[i]);
    council_ctx_free(ctx);
    assert_int_equal(child->refs, 1);
    council_spec_unref(spec);
}

static void test_unknown_provider_refused_at_create(void **state)
{
    fx *f = *state;
    council_spec *s =
        spec_json(sq("{'id':'u','members':[{'id':'m','provider':'gpt'}],'rounds':[{'type':'vote'}]}"));
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = s;
    council_run *run = NULL;
    assert_int_equal(council_run_create(f->ctx, &o, &run), COUNCIL_EPROVIDER);
    assert_null(run);
    council_spec_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        fx_test(test_exec_streams_chunks_and_answers_with_stdout),
        fx_test(test_exec_gets_the_request_json_on_stdin),
        fx_test(test_exec_runs_only_allowed_programs),
        fx_test(test_exec_timeout_kills_the_child),
        fx_test(test_exec_cancel_kills_and_reaps_the_child),
        fx_test_with(test_exec_output_over_cap_is_a_member_error, &CAP1000),
        fx_test(test_exec_crash_and_exit_status_carry_stderr),
        fx_test(test_exec_error_carries_the_end_of_stderr),
        fx_test(test_exec_missing_program_is_a_member_error),
        cmocka_unit_test(test_ctx_free_kills_running_children),
        fx_test(test_mock_quotes_the_input_as_text),
        nat_test(test_native_provider_sync_and_async, 0),
        nat_test(test_native_timeout_calls_cancel_and_refuses_late_answers, 2),
        nat_test(test_native_cancel_on_run_cancel, 2),
        nat_test(test_native_provider_may_cancel_the_run_from_start, 4),
        nat_test(test_native_answer_over_cap_fails_the_attempt, 3),
        nat_test(test_native_cancel_callback_may_cancel_the_run, 5),
        nat_test(test_native_cancel_callback_may_cancel_the_run, 6),
        nat_test(test_native_retries_wait_for_their_backoff, 7),
        fx_test(test_retries_count_attempts),
        fx_test(test_timeout_then_retry_succeeds),
        fx_test(test_mock_timeout_option_per_member),
        fx_test(test_council_member_runs_a_sub_council),
        fx_test(test_cancel_reaches_the_sub_council),
        fx_test(test_failed_sub_council_is_a_member_error),
        fx_test(test_invalid_sub_council_spec_is_a_member_error_at_call_time),
        fx_test(test_sub_councils_nest_three_deep_and_no_deeper),
        cmocka_unit_test(test_every_call_shares_the_sub_council_spec_compiled_once),
        fx_test(test_unknown_provider_refused_at_create),
    };
    return cmocka_run_group_tests_name("providers", tests, NULL, NULL);
}
