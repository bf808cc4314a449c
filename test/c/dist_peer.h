/* dist_peer.h - the BEAM end of a distribution connection, played by the C
 * node's socket suites (test_node, test_dial, test_beam_tools) over
 * loopback while the node runs on a uv loop of the same thread: the node
 * under test started and stopped, the loop pumped, exact reads, handshake
 * packets of both roles (the initiator's whole handshake included) and
 * frames read and parsed. Every read pumps the node's loop while it waits. */
#ifndef TEST_DIST_PEER_H
#define TEST_DIST_PEER_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop_io.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../c_src/cnode/dist_ctl.h"
#include "../../c_src/cnode/handshake.h"
#include "../../c_src/cnode/node.h"

/* The challenge this peer sends as initiator (in its 'r' packet). */
#define DP_OUR_CHALLENGE 42u

static inline void dp_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t dp_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Turns the loop about every millisecond for ms milliseconds. */
static inline void dp_spin(uv_loop_t *loop, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

/* The node under test: cfg's, with cookie, started on loop. */
static inline cn_node *dp_node_start(uv_loop_t *loop, const cn_node_config *cfg,
                                     const char *cookie)
{
    cn_cookie c = {0};
    cn_cookie_set(&c, cookie, strlen(cookie));
    cn_node *n = cn_node_new(loop, cfg, &c);
    assert_non_null(n);
    assert_int_equal(cn_node_start(n, NULL, NULL), 0);
    return n;
}

/* Stops the node, turns the loop while its handles close (at most about
 * 200 ms; with drain, then until the loop has nothing left) and frees it. */
static inline void dp_node_stop(uv_loop_t *loop, cn_node *n, int drain)
{
    cn_node_stop(n);
    for (int i = 0; i < 200 && uv_run(loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    if (drain)
        uv_run(loop, UV_RUN_DEFAULT);
    cn_node_free(n);
}

/* Reads exactly n bytes: 0, -1 on EOF or error, -2 after about 4 s. */
static inline int dp_read(uv_loop_t *loop, int fd, void *buf, size_t n)
{
    return loop_read_exact(loop, fd, buf, n, 8000);
}

/* Writes all n bytes (the test fails otherwise). */
static inline void dp_send(int fd, const void *b, size_t n)
{
    assert_int_equal(send(fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* A TCP connection (no Nagle) to the node's listening port on 127.0.0.1. */
static inline int dp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* One handshake packet (2-byte length) into buf; its length, or -1. */
static inline int dp_read_pkt(uv_loop_t *loop, int fd, unsigned char *buf, size_t cap)
{
    unsigned char h[2];
    if (dp_read(loop, fd, h, 2))
        return -1;
    size_t n = (size_t)h[0] << 8 | h[1];
    if (n > cap || dp_read(loop, fd, buf, n))
        return -1;
    return (int)n;
}

static inline void dp_send_pkt(int fd, const void *body, size_t n)
{
    unsigned char b[600];
    assert_true(n <= sizeof b - 2);
    b[0] = (unsigned char)(n >> 8);
    b[1] = (unsigned char)n;
    memcpy(b + 2, body, n);
    dp_send(fd, b, n + 2);
}

/* The 'N' packet with our flags, then (acceptor) the challenge and the
 * creation or (initiator, challenge NULL) the creation alone, then name. */
static inline void dp_send_n(int fd, const char *name, const uint32_t *challenge,
                             uint32_t creation)
{
    unsigned char p[300];
    size_t nl = strlen(name), i = 0;
    uint64_t flags = CN_OUR_FLAGS;
    p[i++] = 'N';
    for (int k = 0; k < 8; k++)
        p[i++] = (unsigned char)(flags >> (56 - 8 * k));
    if (challenge) {
        dp_put32(p + i, *challenge);
        i += 4;
    }
    dp_put32(p + i, creation);
    i += 4;
    p[i++] = (unsigned char)(nl >> 8);
    p[i++] = (unsigned char)nl;
    memcpy(p + i, name, nl);
    dp_send_pkt(fd, p, i + nl);
}

/* The initiator's handshake after the node's status: reads the node's
 * challenge 'N' (its flags into *their_flags when not NULL), answers 'r'
 * with the digest made with `cookie` and DP_OUR_CHALLENGE, and reads the
 * node's 'a', whose digest must be right. 0 when the node accepted, -1
 * when it closed instead. */
static inline int dp_initiator_finish(uv_loop_t *loop, int fd, const char *cookie,
                                      uint64_t *their_flags)
{
    unsigned char ch[300];
    int n = dp_read_pkt(loop, fd, ch, sizeof ch);
    if (n <= 19 || ch[0] != 'N')
        return -1;
    if (their_flags) {
        *their_flags = 0;
        for (int i = 0; i < 8; i++)
            *their_flags = *their_flags << 8 | ch[1 + i];
    }
    cn_cookie c = {0};
    cn_cookie_set(&c, cookie, strlen(cookie));
    unsigned char r[21];
    r[0] = 'r';
    dp_put32(r + 1, DP_OUR_CHALLENGE);
    cn_cookie_digest(&c, dp_get32(ch + 9), r + 5);
    dp_send_pkt(fd, r, sizeof r);
    unsigned char ack[17];
    int rc = dp_read_pkt(loop, fd, ack, sizeof ack) == 17 ? 0 : -1;
    if (rc == 0) {
        unsigned char want[16];
        cn_cookie_digest(&c, DP_OUR_CHALLENGE, want);
        assert_int_equal(ack[0], 'a');
        assert_memory_equal(ack + 1, want, 16);
    }
    cn_cookie_free(&c);
    return rc;
}

/* The whole initiator's handshake as `name` (creation 9): 0 when the node
 * said "ok" and accepted our digest, -1 otherwise. */
static inline int dp_initiate(uv_loop_t *loop, int fd, const char *name, const char *cookie,
                              uint64_t *their_flags)
{
    dp_send_n(fd, name, NULL, 9);
    unsigned char st[8];
    if (dp_read_pkt(loop, fd, st, sizeof st) != 3 || memcmp(st, "sok", 3) != 0)
        return -1;
    return dp_initiator_finish(loop, fd, cookie, their_flags);
}

/* Reads one frame that is not a tick into buf and parses it into m (views
 * into buf): cn_ctl_parse's result, -1 when the connection closed. */
static inline int dp_next_frame(uv_loop_t *loop, int fd, unsigned char *buf, size_t cap,
                                cn_ctl *m)
{
    for (;;) {
        unsigned char h[4];
        if (dp_read(loop, fd, h, 4))
            return -1;
        size_t n = dp_get32(h);
        if (n == 0)
            continue;
        assert_true(n <= cap);
        if (dp_read(loop, fd, buf, n))
            return -1;
        assert_int_equal(buf[0], 'p');
        return cn_ctl_parse(buf + 1, n - 1, NULL, m);
    }
}

#endif
