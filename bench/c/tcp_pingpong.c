/* tcp_pingpong.c - the floor under every remote call: two C processes
 * exchanging 64-byte messages over loopback TCP, one round trip at a time.
 *
 * A forked child echoes; the parent times each round trip (write 64 bytes,
 * read 64 bytes back) with CLOCK_MONOTONIC. Blocking sockets, TCP_NODELAY on
 * both ends: the cheapest request/response a process can do over loopback,
 * which a distribution call (framing, term codec, event loop, scheduler
 * wake-ups) can only approach.
 *
 *   tcp_pingpong [round_trips [reps]]      default 20000 x 5
 *
 * Prints a human line per repetition and, for bench/run, machine lines
 * "@ key value" (nanoseconds): floor_median_ns, floor_p99_ns, floor_min_ns,
 * floor_rep_median_min_ns, floor_rep_median_max_ns, floor_samples.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int full_io(int fd, char *buf, size_t n, int writing)
{
    size_t done = 0;

    while (done < n) {
        ssize_t r = writing ? write(fd, buf + done, n - done)
                            : read(fd, buf + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

static void nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);

    return sorted[i < n ? i : n - 1];
}

int main(int argc, char **argv)
{
    long per_rep = argc > 1 ? atol(argv[1]) : 20000;
    long reps = argc > 2 ? atol(argv[2]) : 5;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int lfd, fd, one = 1;
    pid_t child;
    char buf[MSG];
    double *all, *rep, rmin = 1e30, rmax = 0;
    long r, i, n;

    if (per_rep < 1 || reps < 1) {
        fprintf(stderr, "usage: tcp_pingpong [round_trips [reps]]\n");
        return 2;
    }
    n = per_rep * reps;
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("listen");
        return 1;
    }
    child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        int c = accept(lfd, NULL, NULL);

        if (c < 0)
            _exit(1);
        nodelay(c);
        while (full_io(c, buf, MSG, 0) == 0)
            if (full_io(c, buf, MSG, 1) != 0)
                break;
        _exit(0);
    }
    close(lfd);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        kill(child, SIGKILL);
        return 1;
    }
    nodelay(fd);
    memset(buf, 'x', sizeof buf);

    /* warm-up: a tenth of a repetition, at least 1000 round trips */
    for (i = 0; i < (per_rep / 10 > 1000 ? per_rep / 10 : 1000); i++)
        if (full_io(fd, buf, MSG, 1) || full_io(fd, buf, MSG, 0)) {
            fprintf(stderr, "warm-up failed\n");
            return 1;
        }

    all = malloc((size_t)n * sizeof *all);
    rep = malloc((size_t)per_rep * sizeof *rep);
    if (all == NULL || rep == NULL)
        return 1;
    for (r = 0; r < reps; r++) {
        double med;

        for (i = 0; i < per_rep; i++) {
            double t0 = now_ns();

            if (full_io(fd, buf, MSG, 1) || full_io(fd, buf, MSG, 0)) {
                fprintf(stderr, "round trip failed\n");
                return 1;
            }
            rep[i] = all[r * per_rep + i] = now_ns() - t0;
        }
        qsort(rep, (size_t)per_rep, sizeof *rep, cmp_double);
        med = pct(rep, (size_t)per_rep, 0.5);
        if (med < rmin)
            rmin = med;
        if (med > rmax)
            rmax = med;
        printf("floor rep %ld: %ld round trips of %d bytes, median %.0f ns, "
               "p99 %.0f ns\n", r + 1, per_rep, MSG, med,
               pct(rep, (size_t)per_rep, 0.99));
    }
    close(fd);
    waitpid(child, NULL, 0);

    qsort(all, (size_t)n, sizeof *all, cmp_double);
    printf("floor: %ld round trips, median %.0f ns, p99 %.0f ns, min %.0f ns\n",
           n, pct(all, (size_t)n, 0.5), pct(all, (size_t)n, 0.99), all[0]);
    printf("@ floor_median_ns %.0f\n@ floor_p99_ns %.0f\n@ floor_min_ns %.0f\n"
           "@ floor_rep_median_min_ns %.0f\n@ floor_rep_median_max_ns %.0f\n"
           "@ floor_samples %ld\n",
           pct(all, (size_t)n, 0.5), pct(all, (size_t)n, 0.99), all[0], rmin,
           rmax, n);
    free(all);
    free(rep);
    return 0;
}
