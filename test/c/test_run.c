/* test_run.c - a run's life: creation and registration, events and their
 * order, exactly one terminal event, cancel at each phase, watchers,
 * whereis/state with retention, run ids, limits, JSON views, driving the
 * loop (run, step, stop from another thread), and runs of synchronous
 * rounds yielding the loop between rounds. */
#include "core_test_util.h"
/* white-box suite (reads a run's event counter inside a watcher, and event payloads): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

#include <pthread.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Specs in single quotes (sq). */
static const char SLOW_SQ[] =
    "{'id':'slow','members':[{'id':'a','provider':'mock','options':"
    "{'latency_ms':200,'chunks':4}},{'id':'b','provider':'mock','options':"
    "{'latency_ms':200}}],'rounds':[{'type':'independent_analysis','name':"
    "'draft'},{'type':'vote'}]}";

static const char FAST_SQ[] =
    "{'id':'fast','members':[{'id':'a','provider':'mock','options':"
    "{'chunks':2}},{'id':'b','provider':'mock'}],'rounds':[{'type':"
    "'independent_analysis'},{'type':'vote'}],'chair':'b'}";

#define SLOW sq(SLOW_SQ)
#define FAST sq(FAST_SQ)

/* A run whose only member hangs on its first attempt. */
#define HANGING                                                                     \
    sq("{'id':'h','members':[{'id':'a','provider':'mock','options':"                 \
       "{'hang_attempts':[1]}}],'rounds':[{'type':'independent_analysis'}]}")

static council_run *create_only(council_ctx *ctx, const char *spec_text,
                                const char *reg, const char *id, int *rc)
{
    council_spec *spec = spec_json(spec_text);
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = spec;
    o.registry = reg;
    o.run_id = id;
    o.run_id_len = id ? strlen(id) : 0;
    o.input.tag = "text";
    o.input.data = "q";
    o.input.len = 1;
    council_run *run = NULL;
    *rc = council_run_create(ctx, &o, &run);
    council_spec_unref(spec);
    return run;
}

static void test_events_in_order_with_one_terminal(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(ctx, FAST, "hello", rec);
    wait_done(ctx, run, 3000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    assert_true(rec->n > 10);
    for (size_t i = 0; i < rec->n; i++)
        assert_int_equal(rec->ev[i]->seq, i + 1);
    assert_int_equal(rec->ev[0]->type, COUNCIL_EV_RUN_STARTED);
    assert_string_equal(rec->ev[0]->input->text, "hello");
    assert_string_equal(rec->ev[0]->council, "fast");
    assert_int_equal(rec->ev[1]->type, COUNCIL_EV_ROUND_STARTED);
    assert_int_equal(rec->ev[rec->n - 1]->type, COUNCIL_EV_RUN_COMPLETED);
    assert_int_equal(rec_terminal(rec), 1);
    assert_int_equal(rec_count(rec, COUNCIL_EV_ROUND_STARTED), 3);
    assert_int_equal(rec_count(rec, COUNCIL_EV_ROUND_COMPLETED), 3);
    assert_int_equal(rec_count(rec, COUNCIL_EV_MEMBER_STARTED), 5);
    assert_int_equal(rec_count(rec, COUNCIL_EV_MEMBER_COMPLETED), 5);
    assert_int_equal(rec_count(rec, COUNCIL_EV_MEMBER_TOKEN), 4);
    /* rounds strictly ordered; each member: started, tokens, completed */
    int round = -1;
    int phase[2] = {0, 0};
    for (size_t i = 0; i < rec->n; i++) {
        const council_event *e = rec->ev[i];
        if (e->type == COUNCIL_EV_ROUND_STARTED) {
            assert_true(e->round_idx > round);
            round = e->round_idx;
            phase[0] = phase[1] = 0;
        } else if (e->member_id) {
            assert_int_equal(e->round_idx, round);
            int m = e->member_id[0] - 'a';
            if (e->type == COUNCIL_EV_MEMBER_STARTED) {
                assert_int_equal(phase[m], 0);
                phase[m] = 1;
            } else if (e->type == COUNCIL_EV_MEMBER_TOKEN) {
                assert_int_equal(phase[m], 1);
            } else {
                assert_int_equal(phase[m], 1);
                phase[m] = 2;
                assert_non_null(e->member_result);
            }
        } else if (e->type == COUNCIL_EV_ROUND_COMPLETED) {
            assert_int_equal(e->round_idx, round);
            assert_non_null(e->round_result);
        }
    }
    assert_string_equal(rec->ev[rec->n - 1]->result->final_text,
                        "b: chair #2 attempt 1 on \"hello\" having read 2 answers");
}

static void test_generated_run_ids_are_base64url_and_unique(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    int rc;
    council_run *r1 = create_only(ctx, FAST, NULL, NULL, &rc);
    assert_int_equal(rc, 0);
    council_run *r2 = create_only(ctx, FAST, NULL, NULL, &rc);
    size_t l1, l2;
    const char *id1 = council_run_id(r1, &l1), *id2 = council_run_id(r2, &l2);
    assert_int_equal(l1, 22);
    assert_int_equal(l2, 22);
    assert_string_not_equal(id1, id2);
    for (size_t i = 0; i < l1; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                               "0123456789-_", id1[i]));
    assert_string_equal(council_run_registry(r1), COUNCIL_DEFAULT_REGISTRY);
    council_run_unref(r1);
    council_run_unref(r2);
}

#define NIDS 200 /* several of the blocks ids are cut from (32 each) */

static int id_cmp(const void *a, const void *b) { return strcmp(a, b); }

/* Ids cut from the per-thread block of random bytes: all distinct across
 * blocks and threads, and a child forked after one id does not repeat the
 * ids its parent hands out next (it drops the parent's block). */
static void *ids_of_thread(void *out)
{
    for (size_t i = 0; i < NIDS; i++)
        council_run_id_generate((char *)out + i * 23);
    return NULL;
}

static void test_generated_run_ids_distinct_across_threads_and_fork(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    /* [0]: before the fork; then NIDS each: the child's, this thread's
     * after the fork, another thread's */
    static char ids[1 + 3 * NIDS][23];
    council_run_id_generate(ids[0]); /* this thread's block is drawn */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char mine[NIDS][23];
        ids_of_thread(mine);
        ssize_t w = write(fds[1], mine, sizeof mine);
        _exit(w == (ssize_t)sizeof mine ? 0 : 1);
    }
    close(fds[1]);
    size_t got = 0, want = sizeof ids[0] * NIDS;
    for (ssize_t n; got < want && (n = read(fds[0], (char *)ids[1] + got, want - got)) > 0;)
        got += (size_t)n;
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(got, want);
    ids_of_thread(ids[1 + NIDS]);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, ids_of_thread, ids[1 + 2 * NIDS]), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    qsort(ids, 1 + 3 * NIDS, sizeof ids[0], id_cmp);
    for (size_t i = 0; i < 1 + 3 * NIDS; i++) {
        assert_int_equal(strlen(ids[i]), 22);
        if (i)
            assert_string_not_equal(ids[i - 1], ids[i]);
    }
}

static void test_duplicate_run_id_is_eexist_per_registry(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    int rc;
    council_run *r1 = create_only(ctx, FAST, NULL, "run-1", &rc);
    assert_int_equal(rc, 0);
    council_run *r2 = create_only(ctx, FAST, NULL, "run-1", &rc);
    assert_int_equal(rc, COUNCIL_EEXIST);
    assert_null(r2);
    council_run *r3 = create_only(ctx, FAST, "Other.Registry", "run-1", &rc);
    assert_int_equal(rc, 0);
    council_run *found;
    assert_int_equal(council_run_find(ctx, "Other.Registry", "run-1", 5, &found), 0);
    assert_ptr_equal(found, r3);
    assert_int_equal(council_run_find(ctx, NULL, "run-1", 5, &found), 0);
    assert_ptr_equal(found, r1);
    council_run_unref(r1);
    council_run_unref(r3);
}

static const council_config RETAIN60 = {.retention_ms = 60, .member_timeout_ms = 5000};

/* in a context of RETAIN60 */
static void test_whereis_and_state_through_retention(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    int rc;
    council_run *run = f->run = create_only(ctx, FAST, "R", "id-7", &rc);
    council_run *w = NULL;
    council_summary s;
    assert_int_equal(council_whereis(ctx, "R", "id-7", 4, &w), COUNCIL_OK);
    assert_ptr_equal(w, run);
    assert_int_equal(council_run_state(ctx, "R", "id-7", 4, &s), 0);
    assert_int_equal(s.status, COUNCIL_PENDING);
    assert_int_equal(s.started_at_us, 0);
    assert_null(s.current_round);
    assert_int_equal(council_run_begin(run), 0);
    assert_int_equal(council_run_begin(run), COUNCIL_ESTATE);
    assert_int_equal(council_whereis(ctx, "R", "id-7", 4, NULL), COUNCIL_OK);
    wait_done(ctx, run, 3000);
    assert_int_equal(council_whereis(ctx, "R", "id-7", 4, &w), COUNCIL_ERUNNER_DEAD);
    assert_int_equal(council_run_state(ctx, "R", "id-7", 4, &s), 0);
    assert_int_equal(s.status, COUNCIL_COMPLETED);
    assert_int_equal(s.rounds_completed, 3);
    assert_true(s.started_at_us > 1600000000000000LL);
    assert_string_equal(s.council, "fast");
    assert_string_equal(s.registry, "R");
    council_stats st;
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_registered, 1);
    assert_int_equal(st.runs_active, 0);
    spin(ctx, 150);
    assert_int_equal(council_whereis(ctx, "R", "id-7", 4, &w), COUNCIL_EUNKNOWN_RUN);
    assert_null(w);
    assert_int_equal(council_run_state(ctx, "R", "id-7", 4, &s), COUNCIL_ENOTFOUND);
    assert_int_equal(council_run_find(ctx, "R", "id-7", 4, NULL), COUNCIL_ENOTFOUND);
    /* our handle is still readable */
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_registered, 0);
    /* the id is free again */
    f->runs[0] = create_only(ctx, FAST, "R", "id-7", &rc);
    assert_int_equal(rc, 0);
}

static void test_cancel_pending_run(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    int rc;
    council_run *run = f->run = create_only(ctx, FAST, NULL, "p", &rc);
    council_run_subscribe(run, rec_cb, NULL, rec, NULL);
    assert_int_equal(council_run_cancel(run), 0);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    assert_int_equal(council_run_begin(run), COUNCIL_ESTATE);
    assert_int_equal(council_run_cancel(run), 0);
    spin(ctx, 20);
    assert_int_equal(rec->n, 1);
    assert_int_equal(rec->ev[0]->type, COUNCIL_EV_RUN_CANCELLED);
    assert_int_equal(rec->ev[0]->result->n_rounds, 0);
}

static void test_cancel_mid_round_stops_at_once(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(ctx, SLOW, "q", rec);
    spin(ctx, 80);
    council_summary s;
    council_run_summary(run, &s);
    assert_int_equal(s.status, COUNCIL_RUNNING);
    assert_string_equal(s.current_round, "draft");
    assert_int_equal(s.current_round_idx, 0);
    assert_int_equal(rec_count(rec, COUNCIL_EV_MEMBER_COMPLETED), 0);
    assert_int_equal(council_run_cancel(run), 0);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    council_run_summary(run, &s);
    assert_null(s.current_round);
    spin(ctx, 300);
    assert_int_equal(rec_count(rec, COUNCIL_EV_MEMBER_COMPLETED), 0);
    assert_int_equal(rec_count(rec, COUNCIL_EV_RUN_CANCELLED), 1);
    assert_int_equal(rec_terminal(rec), 1);
    assert_int_equal(rec->ev[rec->n - 1]->type, COUNCIL_EV_RUN_CANCELLED);
    council_stats st;
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_active, 0);
}

/* Cancel at each phase of a run: the run is held at that phase by a member
 * that answers after a minute (or a retry waiting a minute), the test steps
 * the loop until the summary shows the phase, then cancels. Every time:
 * exactly one terminal event, run_cancelled, nothing after it, no member
 * completing after the cancel, and the loop idle again (timers, children,
 * deferred pumps all gone). */
static const struct phase_case {
    const char *what;
    const char *spec; /* single quotes */
    const char *round; /* the summary's current_round at that phase */
} phases[] = {
    {"waiting for a retry's backoff",
     "{'id':'p','members':[{'id':'a','provider':'mock','options':"
     "{'fail_attempts':[1]}}],'rounds':[{'type':'independent_analysis',"
     "'name':'draft'}],'limits':{'max_attempts':2,'backoff_ms':60000}}",
     "draft"},
    {"in the chair's synthesis",
     "{'id':'p','members':[{'id':'a','provider':'mock'},"
     "{'id':'c','provider':'mock','options':{'latency_ms':60000}}],"
     "'rounds':[{'type':'independent_analysis','options':{'members':['a']}}],"
     "'chair':'c'}",
     "chair"},
    {"inside an iterate round",
     "{'id':'p','members':[{'id':'a','provider':'mock','options':"
     "{'latency_ms':60000}}],'rounds':[{'type':'iterate','name':'loop',"
     "'options':{'rounds':[{'type':'independent_analysis','name':'inner'}]}}]}",
     "inner"},
    {"in a pairwise bracket",
     "{'id':'p','members':[{'id':'a','provider':'mock'},"
     "{'id':'b','provider':'mock'},{'id':'c','provider':'mock',"
     "'options':{'latency_ms':60000}}],'rounds':[{'type':'independent_analysis',"
     "'options':{'members':['a','b']}},{'type':'pairwise_elimination',"
     "'name':'bracket'}]}",
     "bracket"},
};

static void test_cancel_at_each_phase(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof phases / sizeof phases[0]; k++) {
        const struct phase_case *pc = &phases[k];
        council_ctx *ctx = test_ctx(0);
        recorder rec = {0};
        council_run *run = start_rec(ctx, sq(pc->spec), "q", &rec);
        council_summary s;
        uint64_t t0 = uv_hrtime();
        for (;;) {
            council_ctx_step(ctx, 5);
            council_run_summary(run, &s);
            if (s.current_round && strcmp(s.current_round, pc->round) == 0)
                break;
            if ((uv_hrtime() - t0) / 1000000 > 3000)
                fail_msg("%s: never reached round %s", pc->what, pc->round);
        }
        spin(ctx, 30); /* settle into the wait */
        size_t completed = rec_count(&rec, COUNCIL_EV_MEMBER_COMPLETED);
        assert_int_equal(council_run_cancel(run), 0);
        council_ctx_flush(ctx);
        size_t n = rec.n;
        if (rec.ev[n - 1]->type != COUNCIL_EV_RUN_CANCELLED || rec_terminal(&rec) != 1)
            fail_msg("%s: the last event is not the only terminal one", pc->what);
        /* the loop is idle: nothing left to fire (a live timer or child
         * would make the step report more work) */
        if (council_ctx_step(ctx, 0) != 0)
            fail_msg("%s: the loop still has work after the cancel", pc->what);
        spin(ctx, 20);
        assert_int_equal(rec.n, n);
        assert_int_equal(rec_count(&rec, COUNCIL_EV_MEMBER_COMPLETED), completed);
        council_stats st;
        council_ctx_stats(ctx, &st);
        assert_int_equal(st.runs_active, 0);
        assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
        rec_clear(&rec);
        council_run_unref(run);
        council_ctx_free(ctx);
    }
}

static void test_cancel_after_completion_changes_nothing(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(ctx, FAST, "q", rec);
    wait_done(ctx, run, 3000);
    size_t n = rec->n;
    assert_int_equal(council_run_cancel(run), 0);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    spin(ctx, 10);
    assert_int_equal(rec->n, n);
    assert_int_equal(rec_terminal(rec), 1);
}

typedef struct watch_log {
    int calls;
    council_status seen;
    uint64_t seq_at_call;
} watch_log;

static void on_end(council_run *run, void *arg)
{
    watch_log *w = arg;
    w->calls++;
    w->seen = council_run_status(run);
    w->seq_at_call = run->seq;
}

static void test_watchers_fire_once_after_the_terminal_event(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    watch_log w1 = {0}, w2 = {0};
    int rc;
    council_run *run = f->run = create_only(ctx, FAST, NULL, "w", &rc);
    council_run_subscribe(run, rec_cb, NULL, rec, NULL);
    assert_int_equal(council_run_watch(run, on_end, &w1), 0);
    assert_int_equal(council_run_watch(run, on_end, &w2), 0);
    assert_int_equal(council_run_unwatch(run, on_end, &w2), 0);
    assert_int_equal(council_run_unwatch(run, on_end, &w2), COUNCIL_ENOTFOUND);
    council_run_begin(run);
    wait_done(ctx, run, 3000);
    assert_int_equal(w1.calls, 1);
    assert_int_equal(w2.calls, 0);
    assert_int_equal(w1.seen, COUNCIL_COMPLETED);
    assert_int_equal(w1.seq_at_call, rec->ev[rec->n - 1]->seq); /* after publish */
    assert_int_equal(council_run_watch(run, on_end, &w2), COUNCIL_ESTATE);
    spin(ctx, 10);
    assert_int_equal(w1.calls, 1);
}

/* The first watcher is kept in the run, the others in a list: they fire
 * in registration order whatever is unwatched in between, unwatch finds
 * the first match wherever it is, and a watcher may unwatch one not yet
 * called. */
static char order_log[16];
static size_t order_n;
static council_run *order_run;

static void on_order(council_run *run, void *arg)
{
    (void)run;
    char c = (char)(uintptr_t)arg;
    order_log[order_n++] = c;
    if (c == 'b') /* b drops d, not called yet */
        assert_int_equal(council_run_unwatch(order_run, on_order, (void *)(uintptr_t)'d'), 0);
}

static void test_watchers_fire_in_order_whatever_was_unwatched(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    int rc;
    council_run *run = f->run = create_only(ctx, FAST, NULL, "order", &rc);
    order_run = run;
    order_n = 0;
#define W(c) ((void *)(uintptr_t)(c))
    assert_int_equal(council_run_watch(run, on_order, W('a')), 0);
    assert_int_equal(council_run_watch(run, on_order, W('b')), 0);
    /* the first one goes: a later watcher still comes after b */
    assert_int_equal(council_run_unwatch(run, on_order, W('a')), 0);
    assert_int_equal(council_run_unwatch(run, on_order, W('a')), COUNCIL_ENOTFOUND);
    assert_int_equal(council_run_watch(run, on_order, W('c')), 0);
    assert_int_equal(council_run_watch(run, on_order, W('d')), 0);
    /* the same (cb, arg) twice: unwatch takes the first */
    assert_int_equal(council_run_watch(run, on_order, W('c')), 0);
    assert_int_equal(council_run_unwatch(run, on_order, W('c')), 0);
    assert_int_equal(council_run_watch(run, on_order, W('e')), 0);
    council_run_begin(run);
    wait_done(ctx, run, 3000);
    /* b, then d dropped by b, c (the second one), e */
    assert_int_equal(order_n, 3);
    assert_memory_equal(order_log, "bce", 3);
    /* a run with one watcher, unwatched: nothing fires */
    run = f->runs[0] = create_only(ctx, FAST, NULL, "order2", &rc);
    order_n = 0;
    assert_int_equal(council_run_watch(run, on_order, W('a')), 0);
    assert_int_equal(council_run_unwatch(run, on_order, W('a')), 0);
    council_run_begin(run);
    wait_done(ctx, run, 3000);
    assert_int_equal(order_n, 0);
#undef W
}

/* Change watchers: called as the run begins and as each round starts or
 * completes, with the summary already saying so, also when nobody has
 * subscribed to anything (no event is built then); never at the end, where
 * the end watchers fire and the change watchers are dropped. */
typedef struct change_log {
    int calls, ends;
    council_summary at[16];
} change_log;

static void on_change(council_run *run, void *arg)
{
    change_log *l = arg;
    if (l->calls < 16)
        council_run_summary(run, &l->at[l->calls]);
    l->calls++;
}

static void on_change_end(council_run *run, void *arg)
{
    (void)run;
    ((change_log *)arg)->ends++;
}

static void test_change_watchers_follow_rounds_without_subscribers(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    change_log l, dropped;
    memset(&l, 0, sizeof l);
    memset(&dropped, 0, sizeof dropped);
    int rc;
    council_run *run = f->run = create_only(ctx, FAST, NULL, "changes", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(council_run_watch(run, on_change_end, &l), 0);
    assert_int_equal(council_run_watch_changes(run, on_change, &l), 0);
    assert_int_equal(council_run_watch_changes(run, on_change, &dropped), 0);
    assert_int_equal(council_run_unwatch_changes(run, on_change, &dropped), 0);
    assert_int_equal(council_run_unwatch_changes(run, on_change, &dropped), COUNCIL_ENOTFOUND);
    /* an end watcher is not a change watcher, nor the other way round */
    assert_int_equal(council_run_unwatch_changes(run, on_change_end, &l), COUNCIL_ENOTFOUND);
    assert_int_equal(council_run_unwatch(run, on_change, &l), COUNCIL_ENOTFOUND);
    council_run_begin(run);
    wait_done(ctx, run, 3000);
    council_summary end;
    council_run_summary(run, &end);
    assert_int_equal(end.status, COUNCIL_COMPLETED);
    assert_true(end.rounds_completed >= 2);
    /* begun, then a start and a completion per round; nothing at the end */
    assert_int_equal(l.calls, 1 + 2 * (int)end.rounds_completed);
    assert_int_equal(dropped.calls, 0);
    assert_int_equal(l.ends, 1);
    assert_int_equal(l.at[0].status, COUNCIL_RUNNING);
    assert_null(l.at[0].current_round);
    for (unsigned r = 0; r < end.rounds_completed && 2 + 2 * r < 16; r++) {
        const council_summary *started = &l.at[1 + 2 * r], *completed = &l.at[2 + 2 * r];
        assert_non_null(started->current_round);
        assert_int_equal(started->current_round_idx, r);
        assert_int_equal(started->rounds_completed, r);
        assert_null(completed->current_round);
        assert_int_equal(completed->rounds_completed, r + 1);
    }
    assert_int_equal(council_run_watch_changes(run, on_change, &l), COUNCIL_ESTATE);
    assert_int_equal(council_run_unwatch_changes(run, on_change, &l), COUNCIL_ENOTFOUND);
    assert_int_equal(council_run_watch_changes(NULL, on_change, &l), COUNCIL_EINVAL);
    assert_int_equal(council_run_watch_changes(run, NULL, &l), COUNCIL_EINVAL);
}

/* The first change watcher is kept in the run, the others in a list:
 * either way they fire in the order they were added (a watcher added
 * while one is listed is listed after it, even when the run's own slot is
 * free again), and a watcher removed from either place fires no more. */
typedef struct change_tags {
    char seen[32];
    size_t n;
} change_tags;

static change_tags tags_seen;

static void on_change_tag(council_run *run, void *arg)
{
    (void)run;
    if (tags_seen.n < sizeof tags_seen.seen - 1)
        tags_seen.seen[tags_seen.n++] = *(const char *)arg;
}

static void test_change_watchers_fire_in_the_order_added(void **state)
{
    fx *f = *state;
    static const char a = 'a', b = 'b', c = 'c', d = 'd';
    int rc;
    memset(&tags_seen, 0, sizeof tags_seen);
    council_run *run = f->run = create_only(f->ctx, FAST, NULL, "order", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(council_run_watch_changes(run, on_change_tag, (void *)&a), 0); /* in the run */
    assert_int_equal(council_run_watch_changes(run, on_change_tag, (void *)&b), 0); /* listed */
    assert_int_equal(council_run_unwatch_changes(run, on_change_tag, (void *)&a), 0);
    assert_int_equal(council_run_watch_changes(run, on_change_tag, (void *)&c), 0); /* after b */
    assert_int_equal(council_run_watch_changes(run, on_change_tag, (void *)&d), 0);
    assert_int_equal(council_run_unwatch_changes(run, on_change_tag, (void *)&d), 0);
    assert_int_equal(council_run_unwatch_changes(run, on_change_tag, (void *)&a), COUNCIL_ENOTFOUND);
    council_run_begin(run);
    wait_done(f->ctx, run, 3000);
    /* each change: b then c, never a nor d */
    assert_true(tags_seen.n >= 2 && tags_seen.n % 2 == 0);
    for (size_t i = 0; i < tags_seen.n; i += 2) {
        assert_int_equal(tags_seen.seen[i], 'b');
        assert_int_equal(tags_seen.seen[i + 1], 'c');
    }
}

static const council_config MAX_RUNS2 = {.max_runs = 2};

/* in a context of MAX_RUNS2 (freeing it cancels b and c) */
static void test_max_runs_limit(void **state)
{
    fx *f = *state;
    int rc;
    council_run **a = &f->runs[0], **b = &f->runs[1], **c = &f->runs[2];
    *a = create_only(f->ctx, SLOW, NULL, NULL, &rc);
    *b = create_only(f->ctx, SLOW, NULL, NULL, &rc);
    *c = create_only(f->ctx, SLOW, NULL, NULL, &rc);
    assert_int_equal(rc, COUNCIL_ELIMIT);
    assert_null(*c);
    council_run_cancel(*a);
    *c = create_only(f->ctx, SLOW, NULL, NULL, &rc);
    assert_int_equal(rc, 0);
}

/* Runs that finish at different times leave retention each at its own
 * time: a, finished first, is gone while b, finished 150 ms later, stays. */
/* Steps the loop until the run id leaves the registry; fails after max_ms. */
static void wait_gone(council_ctx *ctx, const char *id, uint64_t max_ms)
{
    uint64_t t0 = uv_hrtime();
    while (council_run_find(ctx, NULL, id, strlen(id), NULL) == COUNCIL_OK) {
        council_ctx_step(ctx, 10);
        if ((uv_hrtime() - t0) / 1000000 > max_ms)
            fail_msg("run %s still retained after %llu ms", id, (unsigned long long)max_ms);
    }
}

/* Retention 2 s, b ending about 1 s after a: when a leaves, b has been
 * retained for about 1 s less, so it is still there however late the loop
 * noticed a's time (by less than a second); then b leaves in its turn. */
static const council_config RETAIN2000 = {.retention_ms = 2000, .member_timeout_ms = 5000};

/* in a context of RETAIN2000 */
static void test_each_retained_run_leaves_at_its_own_time(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    int rc;
    council_run *a = f->runs[0] = create_only(ctx, FAST, NULL, "a", &rc);
    council_run_begin(a);
    wait_done(ctx, a, 3000);
    uint64_t a_end = uv_hrtime();
    spin(ctx, 1000);
    council_run *b = f->runs[1] = create_only(ctx, FAST, NULL, "b", &rc);
    council_run_begin(b);
    wait_done(ctx, b, 3000);
    assert_int_equal(council_run_find(ctx, NULL, "a", 1, NULL), COUNCIL_OK);
    wait_gone(ctx, "a", 5000);
    /* not before its time (a_end is taken a little after the run ended) */
    assert_true((uv_hrtime() - a_end) / 1000000 >= 1900);
    assert_int_equal(council_run_find(ctx, NULL, "b", 1, NULL), COUNCIL_OK);
    wait_gone(ctx, "b", 5000);
}

static const council_config RETAINED1 = {.max_retained = 1};

/* in a context of RETAINED1 */
static void test_oldest_retained_run_leaves_when_retention_is_full(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    int rc;
    council_run *a = f->runs[0] = create_only(ctx, FAST, NULL, "a", &rc);
    council_run *b = f->runs[1] = create_only(ctx, FAST, NULL, "b", &rc);
    council_run_begin(a);
    council_run_begin(b);
    wait_done(ctx, a, 3000);
    wait_done(ctx, b, 3000);
    assert_int_equal(council_run_find(ctx, NULL, "a", 1, NULL), COUNCIL_ENOTFOUND);
    assert_int_equal(council_run_find(ctx, NULL, "b", 1, NULL), COUNCIL_OK);
}

/* Thousands of runs leave retention in sweeps (and, with retention full,
 * by eviction), which makes the core give freed memory back: the runs
 * still leave at their time, the loop is not kept running by it (the
 * retention timer is due for the trim too), and the context goes on. */
static void start_fast(council_ctx *ctx, const council_spec *spec, size_t i)
{
    char id[32];
    council_start_opts o;
    council_run *run;
    memset(&o, 0, sizeof o);
    snprintf(id, sizeof id, "many-%zu", i);
    o.spec = (council_spec *)spec;
    o.run_id = id;
    o.run_id_len = strlen(id);
    o.input.tag = "text";
    o.input.data = "q";
    o.input.len = 1;
    assert_int_equal(council_run_start(ctx, &o, &run), COUNCIL_OK);
    council_run_unref(run);
}

static const council_config MANY = {.retention_ms = 100, .max_runs = 5000, .max_retained = 2500};

/* in a context of MANY */
static void test_many_runs_leave_retention_and_the_loop_stays_free(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_spec *spec = spec_json(FAST);
    council_stats st;
    size_t i;
    /* 3000 runs: 500 evicted when they finish (retention full), 2500
     * expire together */
    for (i = 0; i < 3000; i++)
        start_fast(ctx, spec, i);
    assert_int_equal(council_ctx_run(ctx), COUNCIL_OK); /* returns: all done */
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_active, 0);
    assert_true(st.runs_registered <= 2500);
    spin(ctx, 400);
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_registered, 0);
    assert_int_equal(council_run_find(ctx, NULL, "many-2999", 9, NULL), COUNCIL_ENOTFOUND);
    /* a second wave right after (a trim may be due within the second) */
    for (i = 3000; i < 4500; i++)
        start_fast(ctx, spec, i);
    assert_int_equal(council_ctx_run(ctx), COUNCIL_OK);
    assert_int_equal(council_run_find(ctx, NULL, "many-4499", 9, NULL), COUNCIL_OK);
    spin(ctx, 400);
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_registered, 0);
    council_spec_unref(spec);
    /* and the context goes on */
    council_run *run = fx_run(f, FAST, "again", 3000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    assert_int_equal(rec_terminal(&f->rec), 1);
}

static const council_config SUBS2 = {.max_subscribers_per_topic = 2};

/* in a context of SUBS2 */
static void test_subscriber_limit_per_topic(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder r1 = {0}, r2 = {0}, r3 = {0};
    council_subscription *s1;
    assert_int_equal(council_subscribe(ctx, "council_ex:run:x", 16, rec_cb, NULL, &r1, &s1), 0);
    assert_int_equal(council_subscribe(ctx, "council_ex:run:x", 16, rec_cb, NULL, &r2, NULL), 0);
    assert_int_equal(council_subscribe(ctx, "council_ex:run:x", 16, rec_cb, NULL, &r3, NULL),
                     COUNCIL_ELIMIT);
    council_stats st;
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.subscriptions, 2);
    council_unsubscribe(ctx, s1);
    assert_int_equal(council_subscribe(ctx, "council_ex:run:x", 16, rec_cb, NULL, &r3, NULL), 0);
}

static void test_summary_inside_iterate(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = start_rec(
        ctx, sq("{'id':'i','members':[{'id':'a','provider':'mock','options':"
                "{'latency_ms':300}}],'rounds':[{'type':'iterate','name':'loop',"
                "'options':{'rounds':[{'type':'independent_analysis','name':'inner'}]}}]}"),
        "q", NULL);
    spin(ctx, 40);
    council_summary s;
    council_run_summary(run, &s);
    assert_string_equal(s.current_round, "inner");
    assert_int_equal(s.current_round_idx, 1);
    assert_int_equal(s.rounds_completed, 0);
    wait_done(ctx, run, 3000);
    council_run_summary(run, &s);
    assert_int_equal(s.rounds_completed, 4); /* 3 iterations + the iterate */
}

/* The fixture's run of HANGING, its member already called, its events so
 * far delivered to f->rec (none waits: the loop has nothing to do but the
 * member's timeout). */
static council_run *start_hanging_member(fx *f)
{
    council_run *run = f->run = start_rec(f->ctx, HANGING, "q", &f->rec);
    council_ctx_step(f->ctx, 0); /* starts the member */
    council_ctx_flush(f->ctx);
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_MEMBER_STARTED), 1);
    return run;
}

/* A step of 30 ms with nothing to do returns "work remains" because its own
 * timer fell due: the loop's clock (libuv's, which may lag uv_hrtime by its
 * coarse clock's 1 ms tick) reached 30 ms past the step's call, and it did
 * not sleep on until the next event (the member's 5 s timeout): the member
 * is still waiting, the run still running. Then the run is cancelled. */
static void assert_step_bounded(fx *f, council_run *run)
{
    uint64_t called_ms = uv_hrtime() / 1000000;
    assert_int_equal(council_ctx_step(f->ctx, 30), 1);
    uint64_t loop_ms = uv_now(council_ctx_uv_loop(f->ctx));
    if (loop_ms + 1 < called_ms + 30)
        fail_msg("the step returned before its timer was due (loop clock %llu, due %llu)",
                 (unsigned long long)loop_ms, (unsigned long long)called_ms + 30);
    council_ctx_flush(f->ctx);
    assert_int_equal(rec_count(&f->rec, COUNCIL_EV_MEMBER_COMPLETED), 0);
    assert_int_equal(council_run_status(run), COUNCIL_RUNNING);
    council_run_cancel(run);
}

static void test_step_waits_at_most_the_timeout(void **state)
{
    fx *f = *state;
    assert_step_bounded(f, start_hanging_member(f));
}

/* The bound holds when the host kept the loop waiting (its own work between
 * steps): the step's timer counts from now, not from the loop's last look
 * at the clock, else it is already due and the step sleeps until the next
 * event (here the member's 5 s timeout). */
static void test_step_waits_at_most_the_timeout_after_host_work(void **state)
{
    fx *f = *state;
    council_run *run = start_hanging_member(f);
    uint64_t t0 = uv_hrtime();
    while (uv_hrtime() - t0 < 100 * 1000000ull)
        ; /* the host is busy for 100 ms */
    assert_step_bounded(f, run);
}

static void test_concurrency_limit_serialises_members(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(
        ctx, sq("{'id':'c','members':[{'id':'a','provider':'mock','options':"
                "{'latency_ms':20}},{'id':'b','provider':'mock','options':"
                "{'latency_ms':20}},{'id':'c','provider':'mock','options':"
                "{'latency_ms':20}}],'rounds':[{'type':'independent_analysis'}],"
                "'limits':{'concurrency':1}}"), "q", rec);
    wait_done(ctx, run, 3000);
    int in_flight = 0;
    for (size_t i = 0; i < rec->n; i++) {
        if (rec->ev[i]->type == COUNCIL_EV_MEMBER_STARTED)
            in_flight++;
        if (rec->ev[i]->type == COUNCIL_EV_MEMBER_COMPLETED)
            in_flight--;
        assert_true(in_flight <= 1);
    }
}

/* Members that answer at once (mock, latency 0): every round ends inside
 * the pump that started it. 1 + 40 x 2 + the iterate + the chair = 83
 * rounds. */
static const char SYNC_MANY_SQ[] =
    "{'id':'many','members':[{'id':'a','provider':'mock','options':"
    "{'chunks':2}},{'id':'b','provider':'mock'},{'id':'c','provider':"
    "'mock'}],'rounds':[{'type':'independent_analysis'},{'type':'iterate',"
    "'name':'loop','options':{'max_iterations':40,'rounds':[{'type':"
    "'peer_review'},{'type':'vote'}]}}],'chair':'a'}";
#define SYNC_MANY sq(SYNC_MANY_SQ)
#define SYNC_MANY_ROUNDS 83

/* A socket kept readable: its callback runs in every poll phase of the
 * loop and notes how far the run had got. */
typedef struct io_probe {
    uv_poll_t poll;
    int fds[2];
    council_run *run;
    unsigned calls_while_running;
    bool seen[SYNC_MANY_ROUNDS + 1]; /* rounds_completed values seen running */
} io_probe;

static void probe_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    io_probe *p = h->data;
    if (council_run_status(p->run) != COUNCIL_RUNNING)
        return;
    council_summary s;
    council_run_summary(p->run, &s);
    p->calls_while_running++;
    if (s.rounds_completed <= SYNC_MANY_ROUNDS)
        p->seen[s.rounds_completed] = true;
}

static void probe_start(council_ctx *ctx, io_probe *p, council_run *run)
{
    memset(p, 0, sizeof *p);
    p->run = run;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fds), 0);
    assert_int_equal(write(p->fds[1], "x", 1), 1);
    assert_int_equal(uv_poll_init(council_ctx_uv_loop(ctx), &p->poll, p->fds[0]), 0);
    p->poll.data = p;
    uv_poll_start(&p->poll, UV_READABLE, probe_cb);
}

static void probe_stop(council_ctx *ctx, io_probe *p)
{
    uv_close((uv_handle_t *)&p->poll, NULL);
    council_ctx_step(ctx, 0);
    close(p->fds[0]);
    close(p->fds[1]);
}

static void test_synchronous_rounds_yield_to_io_between_rounds(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(ctx, SYNC_MANY, "q", rec);
    io_probe p;
    probe_start(ctx, &p, run);
    wait_done(ctx, run, 10000);
    probe_stop(ctx, &p);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    /* the socket had its turn after every round but the last, with the
     * run still going (the iterate round, 82nd, ends with its last nested
     * round, the 81st: no round of members in between) */
    for (unsigned k = 1; k < SYNC_MANY_ROUNDS; k++)
        if (!p.seen[k] && k != SYNC_MANY_ROUNDS - 2)
            fail_msg("no I/O turn after %u rounds", k);
    assert_true(p.calls_while_running >= SYNC_MANY_ROUNDS - 2);
    /* the run itself is unchanged: every event in order, one terminal */
    for (size_t i = 0; i < rec->n; i++)
        assert_int_equal(rec->ev[i]->seq, i + 1);
    assert_int_equal(rec->ev[0]->type, COUNCIL_EV_RUN_STARTED);
    assert_int_equal(rec->ev[rec->n - 1]->type, COUNCIL_EV_RUN_COMPLETED);
    assert_int_equal(rec_terminal(rec), 1);
    assert_int_equal(rec_count(rec, COUNCIL_EV_ROUND_STARTED), SYNC_MANY_ROUNDS);
    assert_int_equal(rec_count(rec, COUNCIL_EV_ROUND_COMPLETED), SYNC_MANY_ROUNDS);
    assert_int_equal(rec_count(rec, COUNCIL_EV_MEMBER_COMPLETED), 3 * 81 + 1);
    assert_int_equal(council_run_result(run)->n_rounds, SYNC_MANY_ROUNDS);
    int idx = -1;
    for (size_t i = 0; i < rec->n; i++)
        if (rec->ev[i]->type == COUNCIL_EV_ROUND_STARTED) {
            assert_int_equal(rec->ev[i]->round_idx, idx + 1);
            idx = rec->ev[i]->round_idx;
        }
    assert_string_equal(council_run_result(run)->final_text,
                        "a: chair #82 attempt 1 on \"q\" having read 3 answers");
}

typedef struct turns {
    council_run *other;
    unsigned other_rounds_at_end;
    int ended;
} turns;

static void note_other(council_run *run, void *arg)
{
    (void)run;
    turns *t = arg;
    council_summary s;
    council_run_summary(t->other, &s);
    t->other_rounds_at_end = s.rounds_completed;
    t->ended++;
}

static void test_two_synchronous_runs_take_turns_round_by_round(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *a = start_rec(ctx, SYNC_MANY, "q", NULL);
    council_run *b = start_rec(ctx, SYNC_MANY, "q", NULL);
    turns ta = {b, 0, 0}, tb = {a, 0, 0};
    assert_int_equal(council_run_watch(a, note_other, &ta), 0);
    assert_int_equal(council_run_watch(b, note_other, &tb), 0);
    wait_done(ctx, a, 10000);
    wait_done(ctx, b, 10000);
    assert_int_equal(council_run_status(a), COUNCIL_COMPLETED);
    assert_int_equal(council_run_status(b), COUNCIL_COMPLETED);
    assert_int_equal(ta.ended, 1);
    assert_int_equal(tb.ended, 1);
    /* when the first ended the second was a round behind at most; the
     * second ended with the first's rounds all done */
    assert_true(ta.other_rounds_at_end >= SYNC_MANY_ROUNDS - 1);
    assert_int_equal(tb.other_rounds_at_end, SYNC_MANY_ROUNDS);
    council_run_unref(a);
    council_run_unref(b);
}

static void test_cancel_between_synchronous_rounds(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(ctx, SYNC_MANY, "q", rec);
    for (int i = 0; i < 4; i++)
        council_ctx_step(ctx, 0);
    council_summary s;
    council_run_summary(run, &s);
    assert_int_equal(s.status, COUNCIL_RUNNING);
    assert_true(s.rounds_completed >= 2 && s.rounds_completed < 10);
    assert_string_equal(s.current_round, "loop"); /* between its rounds */
    assert_int_equal(council_run_cancel(run), 0);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    council_ctx_flush(ctx);
    size_t n = rec->n;
    assert_int_equal(rec->ev[n - 1]->type, COUNCIL_EV_RUN_CANCELLED);
    assert_int_equal(rec_terminal(rec), 1);
    /* nothing was mid-way but the iterate round */
    assert_int_equal(rec_count(rec, COUNCIL_EV_ROUND_STARTED),
                     rec_count(rec, COUNCIL_EV_ROUND_COMPLETED) + 1);
    assert_int_equal(council_run_result(run)->n_rounds, s.rounds_completed);
    /* the deferred pump is gone with the run: the loop is idle */
    assert_int_equal(council_ctx_step(ctx, 0), 0);
    spin(ctx, 20);
    assert_int_equal(rec->n, n);
    council_stats st;
    council_ctx_stats(ctx, &st);
    assert_int_equal(st.runs_active, 0);
}

static const council_config QUEUE4 = {.subscriber_queue_cap = 4};

/* in a context of QUEUE4 */
static void test_slow_subscriber_is_cut_off_not_the_run(void **state)
{
    fx *f = *state;
    council_run *run = fx_run(f,
                              sq("{'id':'o','members':[{'id':'a','provider':'mock','options':"
                                 "{'chunks':50}}],'rounds':[{'type':'independent_analysis'}]}"),
                              "q", 3000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    assert_true(f->rec.overflowed > 0);
    assert_true(f->rec.n <= 5);
    for (size_t i = 0; i < f->rec.n; i++)
        assert_int_equal(f->rec.ev[i]->seq, i + 1); /* nothing skipped before the cut */
}

static void test_json_views_have_the_protocol_shapes(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(ctx, FAST, "q", rec);
    wait_done(ctx, run, 3000);
    for (size_t i = 0; i < rec->n; i++) {
        json_t *p = council_event_payload_json(rec->ev[i]);
        switch (rec->ev[i]->type) {
        case COUNCIL_EV_MEMBER_COMPLETED:
            assert_int_equal(json_object_size(p), 10);
            assert_string_equal(json_string_value(json_object_get(p, "status")), "ok");
            assert_true(json_is_integer(json_object_get(p, "duration_us")));
            assert_true(json_is_integer(json_object_get(p, "provider_us")));
            assert_true(json_is_null(json_object_get(p, "error_kind")));
            assert_true(json_is_object(json_object_get(p, "usage")));
            assert_true(json_is_null(json_object_get(p, "error")));
            assert_int_equal(json_integer_value(json_object_get(p, "attempts")), 1);
            assert_non_null(json_object_get(p, "parsed"));
            assert_non_null(json_object_get(p, "text"));
            assert_non_null(json_object_get(p, "member_id"));
            break;
        case COUNCIL_EV_ROUND_COMPLETED:
            assert_int_equal(json_object_size(p), 8);
            assert_true(json_is_integer(json_object_get(p, "duration_us")));
            assert_true(json_is_object(json_object_get(p, "usage")));
            assert_true(json_is_array(json_object_get(p, "members")));
            assert_non_null(json_object_get(p, "aggregate"));
            assert_non_null(json_object_get(p, "idx"));
            assert_non_null(json_object_get(p, "type"));
            break;
        case COUNCIL_EV_RUN_COMPLETED:
            assert_int_equal(json_object_size(p), 6);
            assert_true(json_is_integer(json_object_get(p, "duration_us")));
            assert_true(json_is_object(json_object_get(p, "usage")));
            assert_int_equal(json_array_size(json_object_get(p, "rounds")), 3);
            assert_true(json_is_string(json_object_get(p, "final")));
            assert_int_equal(json_array_size(json_object_get(p, "errors")), 0);
            assert_int_equal(json_array_size(json_object_get(p, "error_info")), 0);
            break;
        default:
            assert_null(p);
        }
        json_decref(p);
    }
    char *txt = council_run_result_json(run);
    json_t *r = json_loads(txt, 0, NULL);
    assert_non_null(r);
    json_t *vote = json_array_get(json_object_get(r, "rounds"), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(vote, "aggregate"), "winner")), "A");
    json_decref(r);
    free(txt);
    council_summary s;
    council_run_summary(run, &s);
    json_t *sj = council_summary_json(&s);
    assert_int_equal(json_object_size(sj), 7);
    assert_string_equal(json_string_value(json_object_get(sj, "status")), "completed");
    assert_true(json_is_null(json_object_get(sj, "current_round")));
    json_decref(sj);
}

static void test_input_and_user_opts_are_opaque_copies(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_spec *spec = spec_json(FAST);
    unsigned char bytes[] = {131, 0, 1, 2, 0};
    unsigned char uo[] = {9, 0, 9};
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = spec;
    o.council = "Elixir.MyCouncil";
    o.input.tag = "etf";
    o.input.data = bytes;
    o.input.len = sizeof bytes;
    o.input.text = "view";
    o.input.text_len = 4;
    o.user_opts = uo;
    o.user_opts_len = sizeof uo;
    assert_int_equal(council_run_start(ctx, &o, &f->run), 0);
    council_run *run = f->run;
    council_spec_unref(spec);
    bytes[0] = 0;
    const council_input *in = council_run_input(run);
    assert_string_equal(in->tag, "etf");
    assert_int_equal(in->len, 5);
    assert_int_equal(((const unsigned char *)in->data)[0], 131);
    assert_string_equal(in->text, "view");
    size_t ul;
    const unsigned char *u = council_run_user_opts(run, &ul);
    assert_int_equal(ul, 3);
    assert_int_equal(u[2], 9);
    assert_string_equal(council_run_council(run), "Elixir.MyCouncil");
    int tag = 7;
    council_run_set_user_data(run, &tag);
    assert_ptr_equal(council_run_get_user_data(run), &tag);
    assert_ptr_equal(council_run_ctx(run), ctx);
    wait_done(ctx, run, 3000);
    assert_non_null(strstr(council_run_result(run)->final_text, "\"view\""));
}

static void test_bad_arguments(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_start_opts o;
    memset(&o, 0, sizeof o);
    council_run *run = NULL;
    assert_int_equal(council_run_create(ctx, &o, &run), COUNCIL_EINVAL);
    assert_int_equal(council_run_create(ctx, NULL, &run), COUNCIL_EINVAL);
    council_spec *spec = spec_json(FAST);
    o.spec = spec;
    o.run_id = "x";
    o.run_id_len = 0;
    assert_int_equal(council_run_create(ctx, &o, &run), COUNCIL_EINVAL);
    council_spec *bad = council_spec_new(NULL);
    o.spec = bad;
    o.run_id = NULL;
    assert_int_equal(council_run_create(ctx, &o, &run), COUNCIL_ESPEC);
    assert_int_equal(council_subscribe(ctx, "", 0, rec_cb, NULL, NULL, NULL), COUNCIL_EINVAL);
    assert_int_equal(council_whereis(ctx, NULL, "nope", 4, NULL), COUNCIL_EUNKNOWN_RUN);
    council_spec_unref(bad);
    council_spec_unref(spec);
    council_ctx_free(NULL);
}

static void test_unknown_provider_names_the_member_field(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_spec *spec = spec_json(
        sq("{'id':'p','members':[{'id':'a','provider':'mock'},"
           "{'id':'b','provider':'gpt-9'}],"
           "'rounds':[{'type':'independent_analysis'}]}"));
    council_spec_error err = {{0}, {0}};
    assert_int_equal(council_ctx_check_providers(ctx, spec, &err), COUNCIL_EPROVIDER);
    assert_string_equal(err.field, "members[1].provider");
    assert_non_null(strstr(err.message, "\"gpt-9\""));
    assert_int_equal(council_ctx_check_providers(ctx, spec, NULL), COUNCIL_EPROVIDER);
    assert_int_equal(council_ctx_check_providers(NULL, spec, &err), COUNCIL_EINVAL);
    council_start_opts o;
    memset(&o, 0, sizeof o);
    o.spec = spec;
    o.input.data = "q";
    o.input.len = 1;
    council_run *run = f->run = NULL;
    assert_int_equal(council_run_create(ctx, &o, &run), COUNCIL_EPROVIDER);
    assert_null(run);
    council_spec *ok = spec_json(FAST);
    assert_int_equal(council_ctx_check_providers(ctx, ok, &err), COUNCIL_OK);
    council_spec_unref(ok);
    council_spec_unref(spec);
}

static void test_cancel_async_reaches_an_idle_loop(void **state)
{
    /* only a pending run: nothing keeps the loop alive, yet the next step
     * (even one that does not wait) carries the request out */
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    int rc;
    council_run *run = f->run = create_only(ctx, FAST, NULL, "idle-1", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(council_ctx_cancel_async(ctx, NULL, "idle-1", 6), COUNCIL_OK);
    assert_int_equal(council_run_status(run), COUNCIL_PENDING);
    council_ctx_step(ctx, 0);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    /* and through council_ctx_run */
    council_run *run2 = f->runs[0] = create_only(ctx, FAST, NULL, "idle-2", &rc);
    assert_int_equal(council_ctx_cancel_async(ctx, NULL, "idle-2", 6), COUNCIL_OK);
    assert_int_equal(council_ctx_run(ctx), 0);
    assert_int_equal(council_run_status(run2), COUNCIL_CANCELLED);
}

static void test_check_providers_validates_a_built_spec(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_spec *spec = council_spec_new("built");
    assert_int_equal(council_spec_add_member(spec, "a", "mock", NULL), 0);
    assert_int_equal(council_spec_add_member(spec, "b", "nope", NULL), 0);
    assert_int_equal(council_spec_add_round(spec, "independent_analysis", NULL, NULL), 0);
    council_spec_error err = {{0}, {0}};
    assert_int_equal(council_ctx_check_providers(ctx, spec, &err), COUNCIL_EPROVIDER);
    assert_string_equal(err.field, "members[1].provider");
    council_spec *empty = council_spec_new("empty");
    assert_int_equal(council_ctx_check_providers(ctx, empty, &err), COUNCIL_ESPEC);
    council_spec_unref(empty);
    council_spec_unref(spec);
}

static void test_ctx_run_returns_when_idle(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    council_run *run = f->run = start_rec(ctx, FAST, "q", rec);
    assert_true(council_ctx_backend_fd(ctx) >= 0);
    assert_int_equal(council_ctx_run(ctx), 0);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    /* everything was delivered before council_ctx_run returned */
    assert_int_equal(rec->ev[rec->n - 1]->type, COUNCIL_EV_RUN_COMPLETED);
    assert_int_equal(council_ctx_step(ctx, 0), 0);
}

static void *stopper(void *arg)
{
    usleep(50000);
    council_ctx_stop(arg);
    return NULL;
}

/* (the fixture's teardown frees the context, which cancels the hanging run) */
static void test_stop_from_another_thread(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    council_run *run = f->run = start_rec(ctx, HANGING, "q", NULL);
    pthread_t t;
    pthread_create(&t, NULL, stopper, ctx);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(council_ctx_run(ctx), 0);
    pthread_join(t, NULL);
    assert_true((uv_hrtime() - t0) / 1000000 < 2000);
    assert_int_equal(council_run_status(run), COUNCIL_RUNNING);
    council_ctx_wakeup(ctx);
}

typedef struct canceller {
    council_ctx *ctx;
    int rc_bad, rc_unknown, rc_ok;
} canceller;

static void *cancel_thread(void *arg)
{
    canceller *c = arg;
    usleep(50000);
    c->rc_bad = council_ctx_cancel_async(c->ctx, "R", "", 0);
    c->rc_unknown = council_ctx_cancel_async(c->ctx, "R", "nobody", 6);
    c->rc_ok = council_ctx_cancel_async(c->ctx, "R", "t-1", 3);
    return NULL;
}

typedef struct watchdog_arg {
    council_ctx *ctx;
    int done; /* atomic */
} watchdog_arg;

static void *watchdog(void *arg)
{
    /* only if the cancel never comes: lets the test fail instead of hang */
    watchdog_arg *w = arg;
    for (int i = 0; i < 100 && !__atomic_load_n(&w->done, __ATOMIC_SEQ_CST); i++)
        usleep(50000);
    if (!__atomic_load_n(&w->done, __ATOMIC_SEQ_CST))
        council_ctx_stop(w->ctx);
    return NULL;
}

static void test_cancel_from_another_thread(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    int rc;
    council_run *run = f->run = create_only(ctx, HANGING, "R", "t-1", &rc);
    assert_int_equal(rc, 0);
    council_run_subscribe(run, rec_cb, NULL, rec, NULL);
    assert_int_equal(council_run_begin(run), 0);
    canceller c = {.ctx = ctx};
    watchdog_arg w = {.ctx = ctx};
    pthread_t t, wd;
    pthread_create(&t, NULL, cancel_thread, &c);
    pthread_create(&wd, NULL, watchdog, &w);
    /* returns once the hanging run is cancelled and the loop goes idle */
    assert_int_equal(council_ctx_run(ctx), 0);
    __atomic_store_n(&w.done, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    pthread_join(wd, NULL);
    assert_int_equal(c.rc_bad, COUNCIL_EINVAL);
    assert_int_equal(c.rc_unknown, COUNCIL_OK);
    assert_int_equal(c.rc_ok, COUNCIL_OK);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    council_ctx_flush(ctx);
    assert_int_equal(rec_terminal(rec), 1);
    assert_int_equal(rec->ev[rec->n - 1]->type, COUNCIL_EV_RUN_CANCELLED);
    /* a request for a finished run changes nothing; one queued while the
     * context is freed is dropped with it */
    assert_int_equal(council_ctx_cancel_async(ctx, "R", "t-1", 3), COUNCIL_OK);
    council_ctx_step(ctx, 10);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    assert_int_equal(council_ctx_cancel_async(ctx, NULL, "t-1", 3), COUNCIL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        fx_test(test_events_in_order_with_one_terminal),
        fx_test(test_generated_run_ids_are_base64url_and_unique),
        cmocka_unit_test(test_generated_run_ids_distinct_across_threads_and_fork),
        fx_test(test_duplicate_run_id_is_eexist_per_registry),
        fx_test_with(test_whereis_and_state_through_retention, &RETAIN60),
        fx_test(test_cancel_pending_run),
        fx_test(test_cancel_mid_round_stops_at_once),
        fx_test(test_cancel_after_completion_changes_nothing),
        cmocka_unit_test(test_cancel_at_each_phase),
        fx_test(test_watchers_fire_once_after_the_terminal_event),
        fx_test(test_watchers_fire_in_order_whatever_was_unwatched),
        fx_test(test_change_watchers_follow_rounds_without_subscribers),
        fx_test(test_change_watchers_fire_in_the_order_added),
        fx_test_with(test_max_runs_limit, &MAX_RUNS2),
        fx_test_with(test_oldest_retained_run_leaves_when_retention_is_full, &RETAINED1),
        fx_test_with(test_many_runs_leave_retention_and_the_loop_stays_free, &MANY),
        fx_test_with(test_each_retained_run_leaves_at_its_own_time, &RETAIN2000),
        fx_test_with(test_subscriber_limit_per_topic, &SUBS2),
        fx_test(test_summary_inside_iterate),
        fx_test(test_step_waits_at_most_the_timeout),
        fx_test(test_step_waits_at_most_the_timeout_after_host_work),
        fx_test(test_concurrency_limit_serialises_members),
        fx_test(test_synchronous_rounds_yield_to_io_between_rounds),
        fx_test(test_two_synchronous_runs_take_turns_round_by_round),
        fx_test(test_cancel_between_synchronous_rounds),
        fx_test_with(test_slow_subscriber_is_cut_off_not_the_run, &QUEUE4),
        fx_test(test_json_views_have_the_protocol_shapes),
        fx_test(test_input_and_user_opts_are_opaque_copies),
        fx_test(test_bad_arguments),
        fx_test(test_unknown_provider_names_the_member_field),
        fx_test(test_ctx_run_returns_when_idle),
        fx_test(test_stop_from_another_thread),
        fx_test(test_cancel_from_another_thread),
        fx_test(test_cancel_async_reaches_an_idle_loop),
        fx_test(test_check_providers_validates_a_built_spec),
    };
    return cmocka_run_group_tests_name("run", tests, NULL, NULL);
}
