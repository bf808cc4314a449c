/* test_node.c - the node's dispatch over a real loopback connection: an
 * in-process client does the handshake and sends control frames; the node
 * runs on its own uv loop, pumped by the test. Checks noproc answers, link
 * and monitor signals on a local exit, noconnection on disconnect, UNLINK_ID
 * acks, the frame cap (an oversized call answered) and a wrong cookie. */
#include "dist_peer.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

#include <sodium.h>

#include "../../c_src/cnode/gen_server.h"
#include "../../c_src/cnode/log.h"
#include "../../c_src/cnode/node.h"

#define COOKIE "test-cookie"
#define CLIENT "client@host"

/* ---------------------------------------------------- a local process */

typedef struct probe {
    int terminated;
    int messages;
    char reason[64];
} probe;

typedef struct fixture {
    uv_loop_t loop;
    cn_node *n;
    int fd;
    probe pr[2]; /* spawn_probe's (teardown's stop still calls on_terminate) */
} fixture;

static void probe_msg(cn_node *n, cn_proc *p, cn_slice m)
{
    (void)n;
    (void)m;
    ((probe *)p->state)->messages++;
}

static void probe_term(cn_node *n, cn_proc *p, cn_slice reason)
{
    (void)n;
    probe *pr = p->state;
    pr->terminated++;
    const char *a;
    size_t l;
    if (cn_term_atom(reason, &a, &l) == 0 && l < sizeof pr->reason) {
        memcpy(pr->reason, a, l);
        pr->reason[l] = 0;
    } else {
        strcpy(pr->reason, "<term>");
    }
}

static const cn_proc_ops probe_ops = {.on_message = probe_msg, .on_terminate = probe_term};

/* ----------------------------------------------------------- plumbing */

static void spin(fixture *f, int ms)
{
    dp_spin(&f->loop, ms);
}

/* Turns the loop until the client's socket has something to read (at
 * most about ms milliseconds). */
static void pump(fixture *f, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        struct pollfd p = {f->fd, POLLIN, 0};
        if (f->fd >= 0 && poll(&p, 1, 1) > 0)
            return;
    }
}

static int rd(fixture *f, void *buf, size_t n)
{
    return dp_read(&f->loop, f->fd, buf, n);
}

static void wr(fixture *f, const void *b, size_t n)
{
    dp_send(f->fd, b, n);
    pump(f, 5);
}

static int connect_client(fixture *f)
{
    return dp_connect(cn_node_port(f->n));
}

/* The initiator side of the handshake as CLIENT, checking the flags the
 * node offers. Returns 0 when authenticated. */
static int handshake(fixture *f, const char *cookie)
{
    uint64_t their = 0;
    int rc = dp_initiate(&f->loop, f->fd, CLIENT, cookie, &their);
    assert_true(their & CN_DFLAG_DIST_MONITOR_NAME);
    assert_true(their & CN_DFLAG_DIST_MONITOR);
    assert_true(their & CN_DFLAG_UNLINK_ID);
    assert_true(their & CN_DFLAG_V4_NC);
    assert_false(their & CN_DFLAG_PUBLISHED);
    return rc;
}

static int next_frame(fixture *f, unsigned char *buf, size_t cap, cn_ctl *m)
{
    return dp_next_frame(&f->loop, f->fd, buf, cap, m);
}

static void send_x(fixture *f, ei_x_buff *x)
{
    wr(f, x->buff, (size_t)x->index);
    x->index = 0;
}

static const cn_wpid ME = {CLIENT, 11, 0, 9, 9};

static void local_wpid(fixture *f, cn_proc *p, cn_wpid *w)
{
    cn_pt_proc_wpid(cn_node_table(f->n), p, w);
}

/* A connection from CLIENT, authenticated. */
static void connected(fixture *f)
{
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
}

/* A local process with the fixture's k-th probe as its state, registered
 * as `name` unless NULL; its wire pid into *w. */
static cn_proc *spawn_probe(fixture *f, int k, const char *name, cn_wpid *w)
{
    cn_proc *p = cn_node_spawn(f->n, &probe_ops, &f->pr[k], name);
    assert_non_null(p);
    local_wpid(f, p, w);
    return p;
}

/* Turns the loop until the probe's process has exited (at most about
 * 200 ms), which it must have. */
static void wait_terminated(fixture *f, const probe *pr)
{
    for (int i = 0; i < 200 && pr->terminated == 0; i++)
        spin(f, 1);
    assert_int_equal(pr->terminated, 1);
}

static size_t g_max_signals; /* 0 = default */
static size_t g_max_outq;    /* 0 = default */

static int setup(void **st)
{
    fixture *f = calloc(1, sizeof *f);
    assert_int_equal(sodium_init() >= 0, 1);
    uv_loop_init(&f->loop);
    cn_node_config cfg;
    cn_node_config_defaults(&cfg);
    cfg.name = "council@host";
    cfg.conn.max_frame = 4096;
    if (g_max_signals)
        cfg.max_signals_per_peer = g_max_signals;
    if (g_max_outq)
        cfg.conn.max_outq = g_max_outq;
    setenv("ERL_EPMD_PORT", "1", 1); /* no epmd: registration fails, fine */
    /* quiet (the expected epmd and cookie errors) unless asked */
    cn_log_set_level(getenv("TEST_NODE_DEBUG") ? CN_LOG_DEBUG : -1);
    f->n = dp_node_start(&f->loop, &cfg, COOKIE);
    cn_node_table(f->n)->creation = 77;
    f->fd = -1;
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fixture *f = *st;
    if (f->fd >= 0)
        close(f->fd);
    dp_node_stop(&f->loop, f->n, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ----------------------------------------------------------------- tests */

static void wrong_cookie_is_refused(void **st)
{
    fixture *f = *st;
    f->fd = connect_client(f);
    assert_int_not_equal(handshake(f, "nope"), 0);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.connections, 0);
    close(f->fd);
    connected(f);
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.connections, 1);
}

static void noproc_answers(void **st)
{
    fixture *f = *st;
    connected(f);
    ei_x_buff x;
    ei_x_new(&x);
    unsigned char buf[4096];
    cn_ctl m;
    const unsigned char ghost[] = {119, 5, 'g', 'h', 'o', 's', 't'};
    const unsigned char ref[] = {90, 0, 1, 119, 11, 'c', 'l', 'i', 'e', 'n', 't', '@', 'h', 'o', 's', 't',
                                 0, 0, 0, 9, 0, 0, 0, 5};
    cn_frame_monitor_p(&x, &ME, (cn_slice){ghost, sizeof ghost}, (cn_slice){ref, sizeof ref});
    send_x(f, &x);
    assert_int_equal(next_frame(f, buf, sizeof buf, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_MONITOR_P_EXIT);
    assert_true(cn_term_is_atom(m.from, "ghost"));
    assert_memory_equal(m.ref.p, ref, sizeof ref);
    assert_true(cn_term_is_atom(m.reason, "noproc"));

    /* LINK to a missing pid, and to a pid of another creation */
    cn_wpid dead = {"council@host", 12, 4242, 0, 77};
    cn_frame_link(&x, &ME, &dead);
    send_x(f, &x);
    assert_int_equal(next_frame(f, buf, sizeof buf, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_EXIT);
    assert_true(cn_term_is_atom(m.reason, "noproc"));
    cn_wpid good, other;
    spawn_probe(f, 0, NULL, &good);
    other = good;
    other.creation = 76;
    cn_frame_link(&x, &ME, &other);
    send_x(f, &x);
    assert_int_equal(next_frame(f, buf, sizeof buf, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_EXIT);
    /* a SEND to another creation is not delivered */
    const unsigned char hello[] = {119, 2, 'h', 'i'};
    cn_frame_send(&x, &other, (cn_slice){hello, sizeof hello});
    send_x(f, &x);
    cn_frame_send(&x, &good, (cn_slice){hello, sizeof hello});
    send_x(f, &x);
    spin(f, 50);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(f->pr[0].messages, 1);
    assert_int_equal(s.frames_dropped, 1);
    ei_x_free(&x);
}

static void local_exit_tells_links_and_monitors(void **st)
{
    fixture *f = *st;
    connected(f);
    cn_wpid pw;
    cn_proc *p = spawn_probe(f, 0, "probe", &pw);
    ei_x_buff x;
    ei_x_new(&x);
    const unsigned char ref[] = {90, 0, 1, 119, 11, 'c', 'l', 'i', 'e', 'n', 't', '@', 'h', 'o', 's', 't',
                                 0, 0, 0, 9, 0, 0, 0, 6};
    const unsigned char name[] = {119, 5, 'p', 'r', 'o', 'b', 'e'};
    cn_frame_link(&x, &ME, &pw);
    cn_frame_monitor_p(&x, &ME, (cn_slice){name, sizeof name}, (cn_slice){ref, sizeof ref});
    send_x(f, &x);
    spin(f, 30);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 1);
    assert_int_equal(s.monitors, 1);

    /* exit with {shutdown, cancelled} */
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "shutdown");
    ei_x_encode_atom(&x, "cancelled");
    cn_node_exit(f->n, p, cn_x_slice(&x));
    x.index = 0;
    assert_int_equal(f->pr[0].terminated, 1);
    unsigned char buf[4096];
    cn_ctl m;
    assert_int_equal(next_frame(f, buf, sizeof buf, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_EXIT);
    assert_int_equal(m.reason.p[0], 104);
    unsigned char buf2[4096];
    cn_ctl m2;
    assert_int_equal(next_frame(f, buf2, sizeof buf2, &m2), CN_CTL_OK);
    assert_int_equal(m2.op, CN_DOP_MONITOR_P_EXIT);
    assert_true(cn_term_is_atom(m2.from, "probe")); /* target as received */
    assert_memory_equal(m2.ref.p, ref, sizeof ref);
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.monitors, 0);
    /* the name is free again, the pid is dead */
    assert_null(cn_pt_whereis(cn_node_table(f->n), "probe", 5));
    ei_x_free(&x);
}

static void disconnect_sends_noconnection_and_cleans_up(void **st)
{
    fixture *f = *st;
    connected(f);
    probe *pr = &f->pr[0], *trapper = &f->pr[1];
    cn_wpid pw, tw;
    spawn_probe(f, 0, NULL, &pw);
    cn_proc *t = spawn_probe(f, 1, NULL, &tw);
    t->trap_exit = 1;
    ei_x_buff x;
    ei_x_new(&x);
    cn_frame_link(&x, &ME, &pw);
    cn_frame_link(&x, &ME, &tw);
    send_x(f, &x);
    /* and a monitor we hold on the client's pid */
    cn_pid client_pid;
    cn_pt_pid_from_wire(cn_node_table(f->n), &ME, &client_pid);
    spin(f, 30);
    unsigned char r[300];
    size_t rl = sizeof r;
    assert_int_equal(cn_node_monitor(f->n, t, &client_pid, r, &rl), 0);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 2);
    assert_int_equal(s.monitors, 1);

    close(f->fd);
    f->fd = -1;
    wait_terminated(f, pr);
    assert_string_equal(pr->reason, "noconnection");
    assert_int_equal(trapper->terminated, 0);
    assert_int_equal(trapper->messages, 1); /* {'EXIT', Client, noconnection} */
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.monitors, 0);
    assert_int_equal(s.connections, 0);
    ei_x_free(&x);
}

static void unlink_id_is_acked_and_frame_cap_enforced(void **st)
{
    fixture *f = *st;
    connected(f);
    cn_wpid pw;
    spawn_probe(f, 0, NULL, &pw);
    ei_x_buff x;
    ei_x_new(&x);
    cn_frame_link(&x, &ME, &pw);
    cn_frame_unlink_id(&x, 99, &ME, &pw);
    send_x(f, &x);
    unsigned char buf[4096];
    cn_ctl m;
    assert_int_equal(next_frame(f, buf, sizeof buf, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_UNLINK_ID_ACK);
    assert_true(m.id == 99);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 0);

    /* a tick is echoed */
    const unsigned char tick[4] = {0, 0, 0, 0};
    wr(f, tick, 4);
    unsigned char back[4];
    assert_int_equal(rd(f, back, 4), 0);
    assert_memory_equal(back, tick, 4);

    /* a frame over the 4096-byte cap is read and dropped: the connection
     * stays (the tick after it is answered) */
    unsigned char big[8 + 10000] = {0, 0, (10004 >> 8) & 0xff, 10004 & 0xff, 'p', 131, 106};
    wr(f, big, sizeof big);
    wr(f, tick, 4);
    assert_int_equal(rd(f, back, 4), 0);
    assert_memory_equal(back, tick, 4);
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.frames_too_large, 1);

    /* a header over 1 GiB closes the connection */
    const unsigned char absurd[8] = {0x40, 0, 0, 1, 'p', 131, 106, 0};
    wr(f, absurd, sizeof absurd);
    unsigned char junk[16];
    assert_int_equal(rd(f, junk, 1), -1);
    ei_x_free(&x);
}

static void gen_noop(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice req)
{
    (void)n, (void)p, (void)from, (void)req;
    fail_msg("a call over the limits reached handle_call");
}

/* {'$gen_call', {ME, 42}, Big}: its frame over the cap; the reply {42,
 * {error, request_too_large}} comes back, then the same connection serves
 * a deep term the same way. */
static void an_oversized_call_is_answered_on_the_same_connection(void **st)
{
    fixture *f = *st;
    connected(f);
    static const cn_gen_ops ops = {.handle_call = gen_noop};
    cn_proc *p = cn_gen_start(f->n, &ops, NULL, NULL);
    cn_wpid gw;
    local_wpid(f, p, &gw);
    erlang_pid me = {.num = ME.num, .serial = ME.serial, .creation = ME.creation};
    strcpy(me.node, CLIENT);
    for (int round = 0; round < 2; round++) {
        ei_x_buff pl, x;
        ei_x_new(&pl);
        ei_x_new(&x);
        ei_x_encode_tuple_header(&pl, 3);
        ei_x_encode_atom(&pl, "$gen_call");
        ei_x_encode_tuple_header(&pl, 2);
        ei_x_encode_pid(&pl, &me);
        ei_x_encode_long(&pl, 42);
        if (round == 0) { /* 10 KB: over the frame cap */
            static char blob[10000];
            ei_x_encode_binary(&pl, blob, sizeof blob);
        } else { /* 300 nested lists: over the depth limit */
            for (int d = 0; d < 300; d++)
                ei_x_encode_list_header(&pl, 1);
            ei_x_encode_atom(&pl, "x");
            for (int d = 0; d < 300; d++)
                ei_x_encode_empty_list(&pl);
        }
        cn_frame_send(&x, &gw, cn_x_slice(&pl));
        send_x(f, &x);
        unsigned char buf[4096];
        cn_ctl m;
        assert_int_equal(next_frame(f, buf, sizeof buf, &m), CN_CTL_OK);
        assert_int_equal(m.op, CN_DOP_SEND);
        cn_slice el[2], err[2];
        uint64_t tag;
        assert_int_equal(cn_term_tuple(m.payload, el, 2), 2);
        assert_int_equal(cn_term_u64(el[0], &tag), 0);
        assert_true(tag == 42);
        assert_int_equal(cn_term_tuple(el[1], err, 2), 2);
        assert_true(cn_term_is_atom(err[0], "error"));
        assert_true(cn_term_is_atom(err[1], "request_too_large"));
        ei_x_free(&pl);
        ei_x_free(&x);
    }
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.frames_too_large, 2);
    assert_int_equal(s.connections, 1);
}

static int setup_small(void **st)
{
    g_max_signals = 3;
    int rc = setup(st);
    g_max_signals = 0;
    return rc;
}

static void a_peer_over_its_signal_cap_is_cut_off(void **st)
{
    fixture *f = *st;
    connected(f);
    cn_wpid pw;
    cn_proc *p = spawn_probe(f, 0, "capped", &pw);
    p->trap_exit = 1;
    ei_x_buff x;
    ei_x_new(&x);
    const unsigned char name[] = {119, 6, 'c', 'a', 'p', 'p', 'e', 'd'};
    for (unsigned i = 0; i < 3; i++) {
        unsigned char ref[] = {90, 0, 1, 119, 1, 'c', 0, 0, 0, 9, 0, 0, 0, (unsigned char)i};
        cn_frame_monitor_p(&x, &ME, (cn_slice){name, sizeof name}, (cn_slice){ref, sizeof ref});
    }
    send_x(f, &x);
    spin(f, 30);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.monitors, 3);
    assert_int_equal(s.connections, 1);
    cn_frame_link(&x, &ME, &pw); /* the 4th entry */
    send_x(f, &x);
    unsigned char junk[16];
    assert_int_equal(rd(f, junk, 1), -1);
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.monitors, 0);
    assert_int_equal(s.connections, 0);
    assert_int_equal(f->pr[0].terminated, 0);
    ei_x_free(&x);
}

static int setup_small_outq(void **st)
{
    g_max_outq = 4096;
    int rc = setup(st);
    g_max_outq = 0;
    return rc;
}

/* A send that overflows the output queue must not run the disconnect
 * (links firing, processes exiting, their state freed) inside the call:
 * callers are often in the middle of delivering to that very process. */
static void an_output_overflow_closes_from_the_loop_not_inside_the_send(void **st)
{
    fixture *f = *st;
    connected(f);
    probe *pr = &f->pr[0];
    cn_wpid pw;
    spawn_probe(f, 0, NULL, &pw);
    ei_x_buff x;
    ei_x_new(&x);
    cn_frame_link(&x, &ME, &pw);
    send_x(f, &x);
    spin(f, 30);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 1);

    cn_pid client;
    cn_pt_pid_from_wire(cn_node_table(f->n), &ME, &client);
    static char big[8000];
    ei_x_encode_binary(&x, big, sizeof big);
    assert_int_equal(cn_node_send(f->n, &client, cn_x_slice(&x)), -1);
    assert_int_equal(pr->terminated, 0); /* nothing ran inside the call */
    assert_int_equal(cn_node_send(f->n, &client, cn_x_slice(&x)), -1);
    /* a monitor that cannot be sent now fails and leaves nothing behind */
    cn_wpid ww;
    cn_proc *w = spawn_probe(f, 1, NULL, &ww);
    unsigned char ref[CN_NODE_REF_MAX];
    size_t rl = sizeof ref;
    assert_int_equal(cn_node_monitor(f->n, w, &client, ref, &rl), -1);
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.monitors, 0);

    wait_terminated(f, pr);
    assert_string_equal(pr->reason, "noconnection");
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.connections, 0);
    ei_x_free(&x);
}

#define node_test(t, setup) cmocka_unit_test_setup_teardown(t, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        node_test(wrong_cookie_is_refused, setup),
        node_test(noproc_answers, setup),
        node_test(local_exit_tells_links_and_monitors, setup),
        node_test(disconnect_sends_noconnection_and_cleans_up, setup),
        node_test(unlink_id_is_acked_and_frame_cap_enforced, setup),
        node_test(an_oversized_call_is_answered_on_the_same_connection, setup),
        node_test(a_peer_over_its_signal_cap_is_cut_off, setup_small),
        node_test(an_output_overflow_closes_from_the_loop_not_inside_the_send, setup_small_outq),
    };
    return cmocka_run_group_tests_name("node", tests, NULL, NULL);
}
