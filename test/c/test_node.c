/* test_node.c - the node's dispatch over a real loopback connection: an
 * in-process client does the handshake and sends control frames; the node
 * runs on its own uv loop, pumped by the test. Checks noproc answers, link
 * and monitor signals on a local exit, noconnection on disconnect, UNLINK_ID
 * acks, the frame cap (an oversized call answered) and a wrong cookie. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop_io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "../../c_src/cnode/dist_ctl.h"
#include "../../c_src/cnode/gen_server.h"
#include "../../c_src/cnode/handshake.h"
#include "../../c_src/cnode/log.h"
#include "../../c_src/cnode/node.h"

#define COOKIE "test-cookie"
#define CLIENT "client@host"

typedef struct fixture {
    uv_loop_t loop;
    cn_node *n;
    int fd;
} fixture;

/* ---------------------------------------------------- a local process
 * (probe states are static: teardown's stop still calls on_terminate) */

typedef struct probe {
    int terminated;
    int messages;
    char reason[64];
} probe;

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

/* Runs the node's loop for about ms milliseconds. */
static void spin(fixture *f, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static void pump(fixture *f, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        struct pollfd p = {f->fd, POLLIN, 0};
        if (f->fd >= 0 && poll(&p, 1, 1) > 0)
            return;
    }
}

/* Reads exactly n bytes, pumping the node's loop meanwhile. -1 on EOF. */
static int rd(fixture *f, void *buf, size_t n)
{
    return loop_read_exact(&f->loop, f->fd, buf, n, 4000);
}

static void wr(fixture *f, const void *b, size_t n)
{
    assert_int_equal(send(f->fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
    pump(f, 5);
}

static int connect_client(fixture *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)cn_node_port(f->n));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* The initiator side of the handshake. Returns 0 when authenticated. */
static int handshake(fixture *f, const char *cookie)
{
    unsigned char pkt[256];
    size_t nl = strlen(CLIENT);
    uint64_t flags = CN_OUR_FLAGS;
    size_t len = 1 + 8 + 4 + 2 + nl;
    pkt[0] = (unsigned char)(len >> 8);
    pkt[1] = (unsigned char)len;
    pkt[2] = 'N';
    for (int i = 0; i < 8; i++)
        pkt[3 + i] = (unsigned char)(flags >> (56 - 8 * i));
    memset(pkt + 11, 0, 4);
    pkt[14] = 9; /* creation */
    pkt[15] = (unsigned char)(nl >> 8);
    pkt[16] = (unsigned char)nl;
    memcpy(pkt + 17, CLIENT, nl);
    wr(f, pkt, 2 + len);
    unsigned char st[5];
    if (rd(f, st, 5) || memcmp(st, "\0\3sok", 5) != 0)
        return -1;
    unsigned char hdr[2];
    if (rd(f, hdr, 2))
        return -1;
    size_t clen = (size_t)hdr[0] << 8 | hdr[1];
    unsigned char ch[300];
    if (clen > sizeof ch || rd(f, ch, clen) || ch[0] != 'N')
        return -1;
    uint64_t their = 0;
    for (int i = 0; i < 8; i++)
        their = their << 8 | ch[1 + i];
    assert_true(their & CN_DFLAG_DIST_MONITOR_NAME);
    assert_true(their & CN_DFLAG_DIST_MONITOR);
    assert_true(their & CN_DFLAG_UNLINK_ID);
    assert_true(their & CN_DFLAG_V4_NC);
    assert_false(their & CN_DFLAG_PUBLISHED);
    uint32_t challenge = (uint32_t)ch[9] << 24 | (uint32_t)ch[10] << 16 |
                         (uint32_t)ch[11] << 8 | ch[12];
    cn_cookie c = {0};
    cn_cookie_set(&c, cookie, strlen(cookie));
    unsigned char reply[2 + 21];
    reply[0] = 0;
    reply[1] = 21;
    reply[2] = 'r';
    reply[3] = 0; reply[4] = 0; reply[5] = 0; reply[6] = 42; /* our challenge */
    cn_cookie_digest(&c, challenge, reply + 7);
    wr(f, reply, sizeof reply);
    unsigned char ack[2 + 17];
    int rc = rd(f, ack, sizeof ack);
    if (rc == 0) {
        unsigned char want[16];
        cn_cookie_digest(&c, 42, want);
        assert_int_equal(ack[2], 'a');
        assert_memory_equal(ack + 3, want, 16);
    }
    cn_cookie_free(&c);
    return rc;
}

/* Reads one non-tick frame and parses it into m (body kept in buf). */
static int next_frame(fixture *f, unsigned char *buf, size_t cap, cn_ctl *m)
{
    for (;;) {
        unsigned char h[4];
        if (rd(f, h, 4))
            return -1;
        size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (n == 0)
            continue;
        assert_true(n <= cap);
        if (rd(f, buf, n))
            return -1;
        assert_int_equal(buf[0], 'p');
        return cn_ctl_parse(buf + 1, n - 1, NULL, m);
    }
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
    cn_cookie c = {0};
    cn_cookie_set(&c, COOKIE, strlen(COOKIE));
    f->n = cn_node_new(&f->loop, &cfg, &c);
    assert_non_null(f->n);
    setenv("ERL_EPMD_PORT", "1", 1); /* no epmd: registration fails, fine */
    /* quiet (the expected epmd and cookie errors) unless asked */
    cn_log_set_level(getenv("TEST_NODE_DEBUG") ? CN_LOG_DEBUG : -1);
    assert_int_equal(cn_node_start(f->n, NULL, NULL), 0);
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
    cn_node_stop(f->n);
    for (int i = 0; i < 200 && uv_run(&f->loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cn_node_free(f->n);
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
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.connections, 1);
}

static void noproc_answers(void **st)
{
    fixture *f = *st;
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
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
    static probe pr;
    memset(&pr, 0, sizeof pr);
    cn_proc *p = cn_node_spawn(f->n, &probe_ops, &pr, NULL);
    cn_wpid other;
    local_wpid(f, p, &other);
    other.creation = 76;
    cn_frame_link(&x, &ME, &other);
    send_x(f, &x);
    assert_int_equal(next_frame(f, buf, sizeof buf, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_EXIT);
    /* a SEND to another creation is not delivered */
    const unsigned char hello[] = {119, 2, 'h', 'i'};
    cn_frame_send(&x, &other, (cn_slice){hello, sizeof hello});
    send_x(f, &x);
    cn_wpid good;
    local_wpid(f, p, &good);
    cn_frame_send(&x, &good, (cn_slice){hello, sizeof hello});
    send_x(f, &x);
    spin(f, 50);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(pr.messages, 1);
    assert_int_equal(s.frames_dropped, 1);
    ei_x_free(&x);
}

static void local_exit_tells_links_and_monitors(void **st)
{
    fixture *f = *st;
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
    static probe pr;
    memset(&pr, 0, sizeof pr);
    cn_proc *p = cn_node_spawn(f->n, &probe_ops, &pr, "probe");
    cn_wpid pw;
    local_wpid(f, p, &pw);
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
    assert_int_equal(pr.terminated, 1);
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
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
    static probe pr, trapper;
    memset(&pr, 0, sizeof pr);
    memset(&trapper, 0, sizeof trapper);
    cn_proc *p = cn_node_spawn(f->n, &probe_ops, &pr, NULL);
    cn_proc *t = cn_node_spawn(f->n, &probe_ops, &trapper, NULL);
    t->trap_exit = 1;
    cn_wpid pw, tw;
    local_wpid(f, p, &pw);
    local_wpid(f, t, &tw);
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
    for (int i = 0; i < 200 && pr.terminated == 0; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(pr.terminated, 1);
    assert_string_equal(pr.reason, "noconnection");
    assert_int_equal(trapper.terminated, 0);
    assert_int_equal(trapper.messages, 1); /* {'EXIT', Client, noconnection} */
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.monitors, 0);
    assert_int_equal(s.connections, 0);
    ei_x_free(&x);
}

static void unlink_id_is_acked_and_frame_cap_enforced(void **st)
{
    fixture *f = *st;
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
    static probe pr;
    memset(&pr, 0, sizeof pr);
    cn_proc *p = cn_node_spawn(f->n, &probe_ops, &pr, NULL);
    cn_wpid pw;
    local_wpid(f, p, &pw);
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
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
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
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
    static probe pr;
    memset(&pr, 0, sizeof pr);
    cn_proc *p = cn_node_spawn(f->n, &probe_ops, &pr, "capped");
    p->trap_exit = 1;
    cn_wpid pw;
    local_wpid(f, p, &pw);
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
    assert_int_equal(pr.terminated, 0);
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
    f->fd = connect_client(f);
    assert_int_equal(handshake(f, COOKIE), 0);
    static probe pr;
    memset(&pr, 0, sizeof pr);
    cn_proc *p = cn_node_spawn(f->n, &probe_ops, &pr, NULL);
    cn_wpid pw;
    local_wpid(f, p, &pw);
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
    assert_int_equal(pr.terminated, 0); /* nothing ran inside the call */
    assert_int_equal(cn_node_send(f->n, &client, cn_x_slice(&x)), -1);
    /* a monitor that cannot be sent now fails and leaves nothing behind */
    static probe watcher;
    memset(&watcher, 0, sizeof watcher);
    cn_proc *w = cn_node_spawn(f->n, &probe_ops, &watcher, NULL);
    unsigned char ref[CN_NODE_REF_MAX];
    size_t rl = sizeof ref;
    assert_int_equal(cn_node_monitor(f->n, w, &client, ref, &rl), -1);
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.monitors, 0);

    for (int i = 0; i < 200 && pr.terminated == 0; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(pr.terminated, 1);
    assert_string_equal(pr.reason, "noconnection");
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.connections, 0);
    ei_x_free(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(wrong_cookie_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(noproc_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(local_exit_tells_links_and_monitors, setup, teardown),
        cmocka_unit_test_setup_teardown(disconnect_sends_noconnection_and_cleans_up, setup, teardown),
        cmocka_unit_test_setup_teardown(unlink_id_is_acked_and_frame_cap_enforced, setup, teardown),
        cmocka_unit_test_setup_teardown(an_oversized_call_is_answered_on_the_same_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_peer_over_its_signal_cap_is_cut_off, setup_small, teardown),
        cmocka_unit_test_setup_teardown(an_output_overflow_closes_from_the_loop_not_inside_the_send,
                                        setup_small_outq, teardown),
    };
    return cmocka_run_group_tests_name("node", tests, NULL, NULL);
}
