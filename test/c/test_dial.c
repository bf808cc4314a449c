/* test_dial.c - the node dialing out, against a fake epmd and a fake remote
 * node run by the test itself over loopback (the node runs on its own uv
 * loop, pumped by the test). Checks the PORT_PLEASE2 request, our 'N'
 * packet (flags, creation, name), our 'r' digest, the refusal of a wrong
 * 'a' (wrong cookie: links get noconnection exit signals, monitors
 * on_down noconnection, nothing left), frames queued while dialing sent in
 * order once up, a name epmd does not know, "alive" answered "true", and
 * both outcomes of a simultaneous connect. */
#include "dist_peer.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <sodium.h>

#include "../../c_src/cnode/gen_server.h"
#include "../../c_src/cnode/log.h"
#include "../../c_src/cnode/node.h"

#define COOKIE "dial-cookie"
#define OUR_NAME "council@localhost"
#define PEER "peer@localhost"

static uint64_t g_hs_timeout = 3000; /* per test, set before setup */
static size_t g_max_outq;            /* 0 = default */

/* ------------------------------------------------------------ probes */

typedef struct probe {
    int messages, downs, terminated;
    char last_exit[64], down_reason[64];
} probe;

typedef struct fixture {
    uv_loop_t loop;
    cn_node *n;
    int epmd_l, peer_l; /* listening sockets: fake epmd, fake peer node */
    int epmd_reg;       /* the node's registration connection */
    uint32_t peer_node; /* interned id of PEER */
    /* signals_to_peer's probes (a test's first and second round): the
     * node's stop still reaches them in teardown */
    probe lp[2], mp[2];
    cn_pid remote;
} fixture;

static void atom_text(cn_slice s, char *out, size_t cap)
{
    const char *a;
    size_t l;
    if (cn_term_atom(s, &a, &l) == 0 && l < cap) {
        memcpy(out, a, l);
        out[l] = 0;
    } else {
        snprintf(out, cap, "<term>");
    }
}

static void probe_msg(cn_node *n, cn_proc *p, cn_slice m)
{
    (void)n;
    probe *pr = p->state;
    pr->messages++;
    /* {'EXIT', From, Reason} from the default exit handling */
    cn_slice el[3];
    if (cn_term_tuple(m, el, 3) == 3 && cn_term_is_atom(el[0], "EXIT"))
        atom_text(el[2], pr->last_exit, sizeof pr->last_exit);
}

static void probe_down(cn_node *n, cn_proc *p, cn_slice ref, const cn_pid *who,
                       cn_slice reason)
{
    (void)n;
    (void)ref;
    (void)who;
    probe *pr = p->state;
    pr->downs++;
    atom_text(reason, pr->down_reason, sizeof pr->down_reason);
}

static void probe_term(cn_node *n, cn_proc *p, cn_slice reason)
{
    (void)n;
    (void)reason;
    ((probe *)p->state)->terminated++;
}

static const cn_proc_ops probe_ops = {
    .on_message = probe_msg, .on_down = probe_down, .on_terminate = probe_term};

/* ----------------------------------------------------------- plumbing */

static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    *port = ntohs(a.sin_port);
    return fd;
}

static void spin(fixture *f, int ms)
{
    dp_spin(&f->loop, ms);
}

/* Accepts on a listening socket, pumping the node meanwhile. -1 if none. */
static int accept_pump(fixture *f, int lfd, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        struct pollfd p = {lfd, POLLIN, 0};
        if (poll(&p, 1, 1) > 0) {
            int fd = accept(lfd, NULL, NULL);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return fd;
        }
    }
    return -1;
}

/* Reads exactly n bytes. 0, -1 on EOF, -2 on timeout. */
static int rd(fixture *f, int fd, void *buf, size_t n)
{
    return dp_read(&f->loop, fd, buf, n);
}

static void wr(fixture *f, int fd, const void *b, size_t n)
{
    dp_send(fd, b, n);
    spin(f, 2);
}

static int rd_pkt(fixture *f, int fd, unsigned char *buf, size_t cap)
{
    return dp_read_pkt(&f->loop, fd, buf, cap);
}

static void wr_pkt(fixture *f, int fd, const void *body, size_t n)
{
    dp_send_pkt(fd, body, n);
    spin(f, 2);
}

/* The fake epmd answers one PORT_PLEASE2 (checking the name asked for):
 * with our peer's port, or "not found" when port is 0. */
static void epmd_answer(fixture *f, const char *alive, int port)
{
    int fd = accept_pump(f, f->epmd_l, 3000);
    assert_true(fd >= 0);
    unsigned char req[300];
    int n = rd_pkt(f, fd, req, sizeof req);
    assert_int_equal(n, 1 + (int)strlen(alive));
    assert_int_equal(req[0], 122);
    assert_memory_equal(req + 1, alive, strlen(alive));
    if (port == 0) {
        const unsigned char no[2] = {119, 1};
        wr(f, fd, no, 2);
    } else {
        unsigned char r[64];
        size_t al = strlen(alive), i = 0;
        r[i++] = 119;
        r[i++] = 0;
        r[i++] = (unsigned char)(port >> 8);
        r[i++] = (unsigned char)port;
        r[i++] = 77;  /* normal node */
        r[i++] = 0;   /* tcp */
        r[i++] = 0;
        r[i++] = 6;   /* highest */
        r[i++] = 0;
        r[i++] = 6;   /* lowest */
        r[i++] = 0;
        r[i++] = (unsigned char)al;
        memcpy(r + i, alive, al);
        i += al;
        r[i++] = 0;
        r[i++] = 0;
        wr(f, fd, r, i);
    }
    close(fd);
}

/* Reads the node's 'N' on a dialed connection and checks it. */
static void expect_our_name(fixture *f, int fd)
{
    unsigned char p[300];
    int n = rd_pkt(f, fd, p, sizeof p);
    assert_int_equal(n, 15 + (int)strlen(OUR_NAME));
    assert_int_equal(p[0], 'N');
    uint64_t flags = 0;
    for (int i = 0; i < 8; i++)
        flags = flags << 8 | p[1 + i];
    assert_true(flags & CN_DFLAG_DIST_MONITOR_NAME);
    assert_true(flags & CN_DFLAG_DIST_MONITOR);
    assert_true((flags & CN_PEER_MANDATORY) == CN_PEER_MANDATORY);
    assert_false(flags & CN_DFLAG_PUBLISHED);
    assert_int_equal(dp_get32(p + 9), cn_node_creation(f->n));
    assert_memory_equal(p + 15, OUR_NAME, strlen(OUR_NAME));
}

/* The acceptor's side after 's' ok, as node `name`: challenge, check the
 * node's 'r', answer 'a' computed with `cookie`. Returns 0 when the node's
 * digest was right. */
static int accept_rest(fixture *f, int fd, const char *name, const char *cookie)
{
    const uint32_t ch = 0xC0FFEE;
    dp_send_n(fd, name, &ch, 1234);
    spin(f, 2);
    unsigned char r[64];
    assert_int_equal(rd_pkt(f, fd, r, sizeof r), 21);
    assert_int_equal(r[0], 'r');
    cn_cookie c = {0};
    cn_cookie_set(&c, cookie, strlen(cookie));
    unsigned char want[16];
    cn_cookie_digest(&c, ch, want);
    int ok = memcmp(want, r + 5, 16) == 0;
    unsigned char a[17];
    a[0] = 'a';
    cn_cookie_digest(&c, dp_get32(r + 1), a + 1);
    wr_pkt(f, fd, a, sizeof a);
    cn_cookie_free(&c);
    return ok ? 0 : -1;
}

static int next_frame(fixture *f, int fd, unsigned char *buf, size_t cap, cn_ctl *m)
{
    return dp_next_frame(&f->loop, fd, buf, cap, m);
}

static int setup(void **st)
{
    fixture *f = calloc(1, sizeof *f);
    assert_int_equal(sodium_init() >= 0, 1);
    signal(SIGPIPE, SIG_IGN); /* as main.c: the node writes to closed peers */
    cn_log_set_level(getenv("TEST_NODE_DEBUG") ? CN_LOG_DEBUG : -1);
    int eport, pport;
    f->epmd_l = listen_local(&eport);
    f->peer_l = listen_local(&pport);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", eport);
    setenv("ERL_EPMD_PORT", ps, 1);
    uv_loop_init(&f->loop);
    cn_node_config cfg;
    cn_node_config_defaults(&cfg);
    cfg.name = OUR_NAME;
    cfg.conn.hs_timeout_ms = g_hs_timeout;
    if (g_max_outq)
        cfg.conn.max_outq = g_max_outq;
    f->n = dp_node_start(&f->loop, &cfg, COOKIE);
    /* our registration: ALIVE2_X_RESP, creation 77 */
    f->epmd_reg = accept_pump(f, f->epmd_l, 3000);
    assert_true(f->epmd_reg >= 0);
    unsigned char req[300];
    assert_true(rd_pkt(f, f->epmd_reg, req, sizeof req) > 0);
    assert_int_equal(req[0], 120);
    const unsigned char resp[6] = {118, 0, 0, 0, 0, 77};
    wr(f, f->epmd_reg, resp, sizeof resp);
    spin(f, 10);
    assert_int_equal(cn_node_creation(f->n), 77);
    f->peer_node = cn_pt_intern(cn_node_table(f->n), PEER, strlen(PEER));
    *st = f;
    (void)pport;
    return 0;
}

static int peer_port(fixture *f)
{
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    getsockname(f->peer_l, (struct sockaddr *)&a, &sl);
    return ntohs(a.sin_port);
}

static int teardown(void **st)
{
    fixture *f = *st;
    dp_node_stop(&f->loop, f->n, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    close(f->epmd_reg);
    close(f->epmd_l);
    close(f->peer_l);
    free(f);
    return 0;
}

/* Two probes (round k's of the fixture): one links (trapping exits), one
 * monitors; plus a message. All to f->remote, a pid of PEER, which is not
 * connected: they start a dial. */
static void signals_to_peer(fixture *f, int k)
{
    static const unsigned char hello[] = {119, 5, 'h', 'e', 'l', 'l', 'o'};
    cn_proc *l = cn_node_spawn(f->n, &probe_ops, &f->lp[k], NULL);
    cn_proc *m = cn_node_spawn(f->n, &probe_ops, &f->mp[k], NULL);
    l->trap_exit = 1;
    f->remote = (cn_pid){f->peer_node, 5, 0, 1234};
    assert_int_equal(cn_node_link(f->n, l, &f->remote), 0);
    unsigned char ref[300];
    size_t rl = sizeof ref;
    assert_int_equal(cn_node_monitor(f->n, m, &f->remote, ref, &rl), 0);
    assert_int_equal(cn_node_send(f->n, &f->remote, (cn_slice){hello, sizeof hello}), 0);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 1);
    assert_int_equal(s.monitors, 1);
    assert_int_equal(s.connections, 0);
}

/* Round k's probes got noconnection, and nothing is left of them. */
static void wait_noconnection(fixture *f, int k)
{
    probe *lp = &f->lp[k], *mp = &f->mp[k];
    for (int i = 0; i < 4000 && (lp->messages == 0 || mp->downs == 0); i++)
        spin(f, 1);
    assert_int_equal(lp->messages, 1);
    assert_string_equal(lp->last_exit, "noconnection");
    assert_int_equal(lp->terminated, 0);
    assert_int_equal(mp->downs, 1);
    assert_string_equal(mp->down_reason, "noconnection");
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.monitors, 0);
    assert_int_equal(s.connections, 0);
}

/* The node's dial of node `alive`: epmd gives it the fake peer's port, the
 * peer accepts and checks the node's 'N'. The peer's end of it. */
static int dialed(fixture *f, const char *alive)
{
    epmd_answer(f, alive, peer_port(f));
    int fd = accept_pump(f, f->peer_l, 3000);
    assert_true(fd >= 0);
    expect_our_name(f, fd);
    return fd;
}

/* PEER-side connection to the node's own listener (a dial the other way). */
static int dial_the_node(fixture *f, const char *name)
{
    int in = dp_connect(cn_node_port(f->n));
    dp_send_n(in, name, NULL, 1234);
    spin(f, 2);
    return in;
}

/* The queued LINK, MONITOR_P and SEND arrive in that order. */
static void expect_queued_frames(fixture *f, int fd)
{
    unsigned char b1[1024], b2[1024], b3[1024];
    cn_ctl m;
    assert_int_equal(next_frame(f, fd, b1, sizeof b1, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_LINK);
    assert_int_equal(next_frame(f, fd, b2, sizeof b2, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_MONITOR_P);
    assert_int_equal(next_frame(f, fd, b3, sizeof b3, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_SEND);
    assert_true(cn_term_is_atom(m.payload, "hello"));
}

/* The node's status packet on fd is `status` ('s' and its word). */
static void expect_status(fixture *f, int fd, const char *status)
{
    unsigned char p[64];
    assert_int_equal(rd_pkt(f, fd, p, sizeof p), (int)strlen(status));
    assert_memory_equal(p, status, strlen(status));
}

/* The node closed fd without a byte more. */
static void expect_closed(fixture *f, int fd)
{
    unsigned char junk[8];
    assert_int_equal(rd(f, fd, junk, 1), -1);
}

/* ----------------------------------------------------------------- tests */

static void wrong_cookie_is_refused_cleanly(void **st)
{
    fixture *f = *st;
    signals_to_peer(f, 0);
    int fd = dialed(f, "peer");
    wr_pkt(f, fd, "sok", 3);
    /* our 'a' is made with another cookie: the node must refuse it */
    assert_int_not_equal(accept_rest(f, fd, PEER, "another-cookie"), 0);
    expect_closed(f, fd); /* nothing sent */
    close(fd);
    wait_noconnection(f, 0);

    /* the node keeps working: the next dial, with the right cookie, comes
     * up and carries what was queued meanwhile */
    signals_to_peer(f, 1);
    fd = dialed(f, "peer");
    wr_pkt(f, fd, "sok", 3);
    assert_int_equal(accept_rest(f, fd, PEER, COOKIE), 0);
    expect_queued_frames(f, fd);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.connections, 1);
    /* once up, a send goes straight out */
    static const unsigned char again[] = {119, 5, 'a', 'g', 'a', 'i', 'n'};
    assert_int_equal(cn_node_send(f->n, &f->remote, (cn_slice){again, sizeof again}), 0);
    unsigned char b[1024];
    cn_ctl m;
    assert_int_equal(next_frame(f, fd, b, sizeof b, &m), CN_CTL_OK);
    assert_true(cn_term_is_atom(m.payload, "again"));
    close(fd);
    for (int i = 0; i < 2000 && f->lp[1].messages == 0; i++)
        spin(f, 1);
    assert_string_equal(f->lp[1].last_exit, "noconnection");
}

static void unknown_node_is_noconnection(void **st)
{
    fixture *f = *st;
    signals_to_peer(f, 0);
    epmd_answer(f, "peer", 0);
    wait_noconnection(f, 0);
}

static void alive_is_answered_true(void **st)
{
    fixture *f = *st;
    signals_to_peer(f, 0);
    int fd = dialed(f, "peer");
    wr_pkt(f, fd, "salive", 6);
    expect_status(f, fd, "strue");
    assert_int_equal(accept_rest(f, fd, PEER, COOKIE), 0);
    expect_queued_frames(f, fd);
    close(fd);
}

/* Both dial each other; PEER's name is greater than ours, so PEER keeps
 * its attempt: our acceptor says "ok_simultaneous", our own attempt ends
 * and PEER's connection carries the queue. */
static void simultaneous_connect_greater_peer_wins(void **st)
{
    fixture *f = *st;
    signals_to_peer(f, 0);
    int out = dialed(f, "peer");
    /* PEER dials the node meanwhile */
    int in = dial_the_node(f, PEER);
    expect_status(f, in, "sok_simultaneous");
    /* the node gave up its own attempt */
    expect_closed(f, out);
    close(out);
    /* finish the handshake as the initiator (the node's 'a' checked) */
    assert_int_equal(dp_initiator_finish(&f->loop, in, COOKIE, NULL), 0);
    expect_queued_frames(f, in);
    cn_node_stats s;
    cn_node_stats_get(f->n, &s);
    assert_int_equal(s.connections, 1);
    assert_int_equal(s.links, 1);
    assert_int_equal(s.monitors, 1);
    close(in);
}

/* "alpha@localhost" is smaller than our name: we keep our attempt and
 * answer its connection "nok". */
static void simultaneous_connect_smaller_peer_gets_nok(void **st)
{
    fixture *f = *st;
    probe *lp = &f->lp[0];
    cn_proc *l = cn_node_spawn(f->n, &probe_ops, lp, NULL);
    const char *alpha = "alpha@localhost";
    cn_pid remote = {cn_pt_intern(cn_node_table(f->n), alpha, strlen(alpha)), 5, 0, 1234};
    assert_int_equal(cn_node_link(f->n, l, &remote), 0);
    int out = dialed(f, "alpha");
    int in = dial_the_node(f, alpha);
    expect_status(f, in, "snok");
    expect_closed(f, in);
    close(in);
    /* our own attempt goes on and comes up */
    wr_pkt(f, out, "sok", 3);
    assert_int_equal(accept_rest(f, out, alpha, COOKIE), 0);
    unsigned char b[1024];
    cn_ctl m;
    assert_int_equal(next_frame(f, out, b, sizeof b, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_LINK);
    close(out);
    for (int i = 0; i < 2000 && lp->terminated == 0; i++)
        spin(f, 1);
    assert_int_equal(lp->terminated, 1); /* not trapping: noconnection kills */
}

static int setup_short(void **st)
{
    g_hs_timeout = 300;
    g_max_outq = 4096;
    int rc = setup(st);
    g_hs_timeout = 3000;
    g_max_outq = 0;
    return rc;
}

/* A peer that accepts the TCP connection and then says nothing: the dial's
 * deadline ends it as noconnection. */
static void silent_peer_hits_the_deadline(void **st)
{
    fixture *f = *st;
    signals_to_peer(f, 0);
    int fd = dialed(f, "peer");
    wait_noconnection(f, 0);
    expect_closed(f, fd);
    close(fd);
}

/* More than max_outq bytes queued while dialing: the send is refused and
 * the attempt fails as an overflowing connection would. */
static void queue_overflow_while_dialing_fails_the_dial(void **st)
{
    fixture *f = *st;
    signals_to_peer(f, 0);
    static unsigned char big[5000];
    big[0] = 109; /* BINARY_EXT */
    dp_put32(big + 1, sizeof big - 5);
    assert_int_equal(cn_node_send(f->n, &f->remote, (cn_slice){big, sizeof big}), -1);
    wait_noconnection(f, 0);
    /* a later send dials again */
    static const unsigned char hi[] = {119, 2, 'h', 'i'};
    assert_int_equal(cn_node_send(f->n, &f->remote, (cn_slice){hi, sizeof hi}), 0);
}

#define dial_test(t, setup) cmocka_unit_test_setup_teardown(t, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        dial_test(wrong_cookie_is_refused_cleanly, setup),
        dial_test(unknown_node_is_noconnection, setup),
        dial_test(alive_is_answered_true, setup),
        dial_test(simultaneous_connect_greater_peer_wins, setup),
        dial_test(simultaneous_connect_smaller_peer_gets_nok, setup),
        dial_test(silent_peer_hits_the_deadline, setup_short),
        dial_test(queue_overflow_while_dialing_fails_the_dial, setup_short),
    };
    return cmocka_run_group_tests_name("dial", tests, NULL, NULL);
}
