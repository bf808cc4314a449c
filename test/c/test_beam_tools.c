/* test_beam_tools.c - the C node's "beam" tool handler (beam_tools.c):
 * tool calls of a run answered by a BEAM member server. An in-process
 * client does the distribution handshake and plays the member server; a
 * native provider of the test starts one tool call ("lookup", handler
 * "beam") per member call through the core's tool machinery and answers
 * the member with the tool's result ("ok:<text>" or "error:<text>").
 * Checks the {council_tool_call, ...} message, ok and error replies, a
 * reply that is malformed or for another id, the member server going down,
 * a run without a member server, cancel and timeout (the waiting call is
 * dropped, a late reply ignored). */
#include "dist_peer.h"

#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>
#include <sodium.h>

#include "../../c_src/cnode/beam_tools.h"
#include "../../c_src/cnode/gen_server.h"
#include "../../c_src/cnode/log.h"
#include "../../c_src/cnode/node.h"
#include "../../c_src/cnode/run_proc.h"
/* white-box suite (drives the core's tool machinery directly): built with -Ic_src/core, see the Makefile */
#include "tools.h"

#define COOKIE "test-cookie"
#define CLIENT "client@host"

/* The member server: a pid of the client node. */
static const cn_wpid SERVER = {CLIENT, 11, 42, 0, 9};

typedef struct fixture {
    council_ctx *ctx;
    uv_loop_t *loop;
    cn_node *n;
    cn_bridge b;
    int fd;
    council_run *run;
} fixture;

/* ------------------------------------------------ the tool-using member */

static uint64_t g_tool_timeout_ms = 10000;
static council_tool_call *g_tc; /* the tool call in flight, until done or abandoned */

static void on_tool_done(void *arg, int ok, const char *result, size_t len)
{
    council_call *call = arg;
    g_tc = NULL;
    char text[700];
    snprintf(text, sizeof text, "%s:%.*s", ok ? "ok" : "error", (int)len, result);
    council_call_complete(call, text, strlen(text));
}

static int toolish_start(council_call *call, void *arg)
{
    (void)arg;
    json_t *spec = json_pack("{s:s, s:s}", "name", "lookup", "handler", "beam");
    const char *args = "{\"query\":\"q1\"}";
    int rc = tools_start(council_run_ctx(council_call_run(call)), call, spec, "lookup", args,
                         strlen(args), g_tool_timeout_ms, on_tool_done, call, &g_tc);
    json_decref(spec);
    return rc;
}

static void toolish_cancel(council_call *call, void *arg)
{
    (void)call;
    (void)arg;
    council_tool_call *tc = g_tc;
    g_tc = NULL;
    tools_abandon(tc);
}

/* ----------------------------------------------------------- plumbing */

static void spin(fixture *f, int ms)
{
    dp_spin(f->loop, ms);
}

static void send_x(fixture *f, ei_x_buff *x)
{
    dp_send(f->fd, x->buff, (size_t)x->index);
    spin(f, 5);
    x->index = 0;
}

/* Connects and does the initiator side of the handshake as CLIENT. */
static int handshake(fixture *f)
{
    f->fd = dp_connect(cn_node_port(f->n));
    return dp_initiate(f->loop, f->fd, CLIENT, COOKIE, NULL);
}

/* Reads frames until one with operation op; parsed into m (views into buf). */
static void expect_op(fixture *f, int op, unsigned char *buf, size_t cap, cn_ctl *m)
{
    do
        assert_int_equal(dp_next_frame(f->loop, f->fd, buf, cap, m), CN_CTL_OK);
    while (m->op != op);
}

/* What the member server got: the tool call message, checked. */
typedef struct tool_msg {
    unsigned char buf[4096];
    cn_ctl m;
    cn_wpid run_pid;   /* views into buf */
    uint64_t id;
} tool_msg;

static void expect_tool_call(fixture *f, tool_msg *t)
{
    expect_op(f, CN_DOP_SEND, t->buf, sizeof t->buf, &t->m);
    cn_slice el[6];
    assert_int_equal(cn_term_tuple(t->m.payload, el, 6), 6);
    assert_true(cn_term_is_atom(el[0], "council_tool_call"));
    assert_int_equal(cn_term_pid(el[1], &t->run_pid), 0);
    assert_memory_equal(t->run_pid.node, "council@host", 12);
    int idx = 0;
    unsigned long long id;
    assert_int_equal(ei_decode_ulonglong((const char *)el[2].p, &idx, &id), 0);
    t->id = id;
    assert_true(id >= 1);
    char text[128];
    long len;
    idx = 0;
    assert_int_equal(ei_decode_binary((const char *)el[3].p, &idx, text, &len), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(text, "m", 1);
    idx = 0;
    assert_int_equal(ei_decode_binary((const char *)el[4].p, &idx, text, &len), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(text, "lookup", 6);
    idx = 0;
    assert_int_equal(ei_decode_binary((const char *)el[5].p, &idx, text, &len), 0);
    assert_int_equal(len, 14);
    assert_memory_equal(text, "{\"query\":\"q1\"}", 14);
}

/* Sends {council_tool_reply, id, Result} to the run: result "ok:<text>"
 * and "error:<text>" are {ok | error, <<text>>}, "error_term" is
 * {error, {badarg, 7}}, anything else the atom bogus. */
static void reply(fixture *f, const tool_msg *t, uint64_t id, const char *result)
{
    ei_x_buff p, x;
    ei_x_new(&p);
    ei_x_new(&x);
    ei_x_encode_tuple_header(&p, 3);
    ei_x_encode_atom(&p, "council_tool_reply");
    ei_x_encode_ulonglong(&p, id);
    if (strncmp(result, "ok:", 3) == 0 || strncmp(result, "error:", 6) == 0) {
        const char *colon = strchr(result, ':');
        ei_x_encode_tuple_header(&p, 2);
        ei_x_encode_atom_len(&p, result, (int)(colon - result));
        ei_x_encode_binary(&p, colon + 1, (long)strlen(colon + 1));
    } else if (strcmp(result, "error_term") == 0) {
        ei_x_encode_tuple_header(&p, 2);
        ei_x_encode_atom(&p, "error");
        ei_x_encode_tuple_header(&p, 2);
        ei_x_encode_atom(&p, "badarg");
        ei_x_encode_long(&p, 7);
    } else {
        ei_x_encode_atom(&p, "bogus");
    }
    cn_slice payload = {(const unsigned char *)p.buff, (size_t)p.index};
    assert_int_equal(cn_frame_send(&x, &t->run_pid, payload), 0);
    send_x(f, &x);
    ei_x_free(&p);
    ei_x_free(&x);
}

static const council_member_result *member_result(fixture *f)
{
    const council_result *r = council_run_result(f->run);
    assert_int_equal(r->n_rounds, 1);
    return r->rounds[0]->members[0];
}

static int terminal(const council_run *run)
{
    council_status s = council_run_status(run);
    return s != COUNCIL_PENDING && s != COUNCIL_RUNNING;
}

static void wait_end(fixture *f)
{
    for (int i = 0; i < 8000 && !terminal(f->run); i++) {
        uv_run(f->loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    assert_true(terminal(f->run));
    spin(f, 5);
}

/* ------------------------------------------------------------ fixture */

static int setup(void **st)
{
    fixture *f = calloc(1, sizeof *f);
    assert_true(sodium_init() >= 0);
    cn_log_set_level(getenv("TEST_NODE_DEBUG") ? CN_LOG_DEBUG : -1);
    f->ctx = council_ctx_new(NULL);
    assert_non_null(f->ctx);
    f->loop = council_ctx_uv_loop(f->ctx);
    council_provider_ops ops = {.start = toolish_start, .cancel = toolish_cancel};
    assert_int_equal(council_provider_register(f->ctx, "toolish", &ops, NULL), 0);

    cn_node_config cfg;
    cn_node_config_defaults(&cfg);
    cfg.name = "council@host";
    setenv("ERL_EPMD_PORT", "1", 1); /* no epmd: registration fails, fine */
    f->n = dp_node_start(f->loop, &cfg, COOKIE);
    cn_node_table(f->n)->creation = 77;
    f->b.node = f->n;
    f->b.ctx = f->ctx;
    assert_int_equal(cn_beam_tools_register(&f->b), 0);
    assert_int_equal(cn_beam_tools_register(&f->b), COUNCIL_EEXIST);
    f->fd = -1;
    g_tc = NULL;
    g_tool_timeout_ms = 10000;
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fixture *f = *st;
    if (f->fd >= 0)
        close(f->fd);
    dp_node_stop(f->loop, f->n, 0); /* the loop is the context's */
    if (f->run)
        council_run_unref(f->run);
    council_ctx_free(f->ctx);
    free(f);
    return 0;
}

/* A run of one "toolish" member, its process on the node with `server` as
 * member server (NULL: none), begun. */
static void start_run(fixture *f, const cn_wpid *server)
{
    const char *json = "{\"id\":\"t\",\"members\":[{\"id\":\"m\",\"provider\":\"toolish\"}],"
                       "\"rounds\":[{\"type\":\"independent_analysis\"}],"
                       "\"limits\":{\"member_timeout_ms\":20000}}";
    council_spec *spec;
    council_spec_error err;
    assert_int_equal(council_spec_from_json(json, strlen(json), &spec, &err), 0);
    council_start_opts o = {.spec = spec, .input = {.tag = "text", .data = "q", .len = 1}};
    assert_int_equal(council_run_create(f->ctx, &o, &f->run), 0);
    council_spec_unref(spec);
    cn_pid pid;
    if (server)
        assert_int_equal(cn_pt_pid_from_wire(cn_node_table(f->n), server, &pid), 0);
    assert_non_null(cn_run_proc_spawn(&f->b, f->run, server ? &pid : NULL));
    assert_int_equal(council_run_begin(f->run), 0);
}

/* The member server connected, a run with it begun, its tool call read. */
static void run_to_tool_call(fixture *f, tool_msg *t)
{
    assert_int_equal(handshake(f), 0);
    start_run(f, &SERVER);
    expect_tool_call(f, t);
}

/* ----------------------------------------------------------------- tests */

static void an_ok_reply_is_the_tool_result(void **st)
{
    fixture *f = *st;
    static tool_msg t;
    run_to_tool_call(f, &t);
    assert_int_equal(cn_beam_tools_pending(&f->b), 1);
    reply(f, &t, t.id, "ok:r1");
    wait_end(f);
    assert_int_equal(council_run_status(f->run), COUNCIL_COMPLETED);
    assert_string_equal(member_result(f)->text, "ok:r1");
    assert_int_equal(cn_beam_tools_pending(&f->b), 0);
    /* a second reply for the same id is dropped */
    reply(f, &t, t.id, "ok:again");
    spin(f, 10);
    assert_string_equal(member_result(f)->text, "ok:r1");
}

static void error_replies_and_malformed_ones_are_error_results(void **st)
{
    fixture *f = *st;
    assert_int_equal(handshake(f), 0);
    static tool_msg t;
    const char *cases[][2] = {
        {"error:no such thing", "error:no such thing"},
        {"error_term", "error:{badarg, 7}"},
        {"bogus", "error:beam tool: malformed reply from the member server"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (f->run) {
            council_run_unref(f->run);
            f->run = NULL;
        }
        start_run(f, &SERVER);
        expect_tool_call(f, &t);
        /* a reply for an id nobody waits for is dropped: still waiting */
        reply(f, &t, t.id + 1000, "ok:not mine");
        spin(f, 10);
        assert_int_equal(cn_beam_tools_pending(&f->b), 1);
        assert_false(terminal(f->run));
        reply(f, &t, t.id, cases[i][0]);
        wait_end(f);
        assert_string_equal(member_result(f)->text, cases[i][1]);
        assert_int_equal(cn_beam_tools_pending(&f->b), 0);
    }
}

static void a_server_that_goes_down_gives_an_error_result(void **st)
{
    fixture *f = *st;
    assert_int_equal(handshake(f), 0);
    start_run(f, &SERVER);
    /* the run's monitor on the server, then the tool call */
    static unsigned char mbuf[1024];
    cn_ctl mon;
    expect_op(f, CN_DOP_MONITOR_P, mbuf, sizeof mbuf, &mon);
    static tool_msg t;
    expect_tool_call(f, &t);
    cn_wpid run_pid;
    assert_int_equal(cn_term_pid(mon.from, &run_pid), 0);
    ei_x_buff x;
    ei_x_new(&x);
    const unsigned char killed[] = {119, 6, 'k', 'i', 'l', 'l', 'e', 'd'};
    assert_int_equal(cn_frame_monitor_p_exit(&x, mon.to, &run_pid, mon.ref,
                                             (cn_slice){killed, sizeof killed}),
                     0);
    send_x(f, &x);
    ei_x_free(&x);
    wait_end(f);
    assert_string_equal(member_result(f)->text, "error:beam tool: member server down: killed");
    assert_int_equal(cn_beam_tools_pending(&f->b), 0);
}

static void a_run_without_member_server_gets_an_error_at_once(void **st)
{
    fixture *f = *st;
    start_run(f, NULL);
    wait_end(f);
    assert_int_equal(council_run_status(f->run), COUNCIL_COMPLETED);
    assert_non_null(strstr(member_result(f)->text, "error:beam tool: this run has no member server"));
    assert_int_equal(cn_beam_tools_pending(&f->b), 0);
}

static void cancel_drops_the_waiting_call_and_a_late_reply_is_ignored(void **st)
{
    fixture *f = *st;
    static tool_msg t;
    run_to_tool_call(f, &t);
    assert_int_equal(cn_beam_tools_pending(&f->b), 1);
    council_run_cancel(f->run);
    assert_int_equal(cn_beam_tools_pending(&f->b), 0);
    wait_end(f);
    assert_int_equal(council_run_status(f->run), COUNCIL_CANCELLED);
    /* the run's process is gone by now: the reply goes nowhere */
    reply(f, &t, t.id, "ok:late");
    spin(f, 10);
    assert_int_equal(cn_beam_tools_pending(&f->b), 0);
}

static void a_timeout_drops_the_waiting_call(void **st)
{
    fixture *f = *st;
    g_tool_timeout_ms = 50;
    static tool_msg t;
    run_to_tool_call(f, &t);
    wait_end(f);
    assert_string_equal(member_result(f)->text, "error:tool lookup timed out after 50 ms");
    assert_int_equal(cn_beam_tools_pending(&f->b), 0);
}

#define tools_test(t) cmocka_unit_test_setup_teardown(t, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        tools_test(an_ok_reply_is_the_tool_result),
        tools_test(error_replies_and_malformed_ones_are_error_results),
        tools_test(a_server_that_goes_down_gives_an_error_result),
        tools_test(a_run_without_member_server_gets_an_error_at_once),
        tools_test(cancel_drops_the_waiting_call_and_a_late_reply_is_ignored),
        tools_test(a_timeout_drops_the_waiting_call),
    };
    return cmocka_run_group_tests_name("beam_tools", tests, NULL, NULL);
}
