/* loop_io.h - for suites that talk to a node over a real socket while the
 * node's libuv loop runs in the same thread (through dist_peer.h). */
#ifndef TEST_LOOP_IO_H
#define TEST_LOOP_IO_H

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <uv.h>

/* Reads exactly n bytes from fd, turning the loop between tries (0.5 ms
 * apart, at most max_spins tries). 0, -1 on EOF or error, -2 on timeout. */
static inline int loop_read_exact(uv_loop_t *loop, int fd, void *buf, size_t n,
                                  int max_spins)
{
    size_t got = 0;
    for (int spins = 0; got < n && spins < max_spins; spins++) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t r = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
        if (r == 0)
            return -1;
        if (r > 0)
            got += (size_t)r;
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        else
            usleep(500);
    }
    return got == n ? 0 : -2;
}

#endif
