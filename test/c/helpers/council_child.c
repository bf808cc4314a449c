/* council_child.c - a child program for the exec provider tests.
 *
 *   council_child answer N   read the request, then print N chunks 20 ms
 *                            apart: "part<i>;" and finally the request size
 *   council_child echo       copy stdin to stdout
 *   council_child sleep      print "pid:<pid>\n" and sleep 30 s
 *   council_child big N      print N bytes of 'x'
 *   council_child exit3      print "bad things" on stderr, exit 3
 *   council_child crash      print "boom" on stderr, die by SIGABRT
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static size_t slurp(void)
{
    char buf[4096];
    size_t total = 0;
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0)
        total += (size_t)n;
    return total;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "echo";
    if (strcmp(mode, "answer") == 0) {
        int n = argc > 2 ? atoi(argv[2]) : 3;
        size_t req = slurp();
        for (int i = 0; i < n; i++) {
            printf("part%d;", i);
            fflush(stdout);
            nap_ms(20);
        }
        printf("%zu", req);
        return 0;
    }
    if (strcmp(mode, "echo") == 0) {
        char buf[4096];
        ssize_t n;
        while ((n = read(0, buf, sizeof buf)) > 0)
            if (write(1, buf, (size_t)n) != n)
                return 1;
        return 0;
    }
    if (strcmp(mode, "sleep") == 0) {
        printf("pid:%d\n", (int)getpid());
        fflush(stdout);
        nap_ms(30000);
        return 0;
    }
    if (strcmp(mode, "big") == 0) {
        long n = argc > 2 ? atol(argv[2]) : 100000;
        char buf[4096];
        memset(buf, 'x', sizeof buf);
        while (n > 0) {
            size_t k = n > (long)sizeof buf ? sizeof buf : (size_t)n;
            if (write(1, buf, k) < 0)
                return 1;
            n -= (long)k;
        }
        return 0;
    }
    if (strcmp(mode, "exit3") == 0) {
        fprintf(stderr, "bad things");
        return 3;
    }
    if (strcmp(mode, "crash") == 0) {
        fprintf(stderr, "boom");
        fflush(stderr);
        signal(SIGABRT, SIG_DFL);
        raise(SIGABRT);
        return 0;
    }
    return 2;
}
