/* bench_llm.c - issue 8's benchmark, the native side: many concurrent
 * streaming member calls of the "openai" provider against a local server,
 * through the public API (council.h) only.
 *
 * One run per stream, each with one openai member, all on one council_ctx
 * and begun at once: N independent member calls, each with its own topic
 * and subscriber, as N concurrent councils have (a spec takes at most 64
 * members, so one run could not hold 1,000 streams anyway). A run's own
 * events (6 per run) are about 1% of the events of a 500-token stream.
 *
 *   bench_llm stream --base URL --streams N --tokens T
 *       model "tokens-T~bench" (test/c/helpers/fake_llm streams T deltas
 *       as fast as it can). A subscriber per run records each member_token
 *       event. Prints the process's CPU time (getrusage, user + system)
 *       over the whole burst (run creation to the last run's end) per token
 *       received, time to first token (from council_run_begin) and the gaps
 *       between consecutive tokens of one stream, as the subscriber sees
 *       them.
 *   bench_llm open --base URL --streams N
 *       N runs whose member's model is "slow~bench" (one delta, then the
 *       server waits for the client to hang up): once every stream has
 *       delivered its first token, the growth of the resident set (VmRSS)
 *       and of malloc'ed bytes (mallinfo2) per open stream; then cancels.
 *   bench_llm idle --streams N
 *       the same figures for N runs whose mock member waits on a long timer
 *       (what a run costs without a stream: the part of "open" that is not
 *       the HTTP transfer).
 *   bench_llm paced --base URL --streams N --tokens T --interval-us I [--samples F]
 *       against `bench_llm serve`, model "paced-T-I~bench": every delta's
 *       text is the server's
 *       CLOCK_REALTIME in ns taken just before the write(); the subscriber
 *       subtracts it from its own clock when the member_token event fires:
 *       the latency the client adds to each token (loopback and wake-up
 *       included), over all tokens and in the steady state (tokens written
 *       after every stream had its first one). --samples F: every token's
 *       latency also goes to F, a line "<ns> <1 if steady, else 0>" each.
 *   bench_llm serve [--port P] --tokens T --interval-us I
 *       a minimal OpenAI-format streaming server (one epoll thread): each
 *       POST .../chat/completions gets T deltas, one every I µs (a model
 *       named "paced-T2-I2~..." asks for T2 deltas every I2 µs), the first
 *       after a random fraction of I so streams do not write in lockstep),
 *       then the finish chunk and [DONE]. Prints "bench_llm serve ready
 *       port=P"; exits when its stdin closes.
 *
 * Every client mode raises RLIMIT_NOFILE to its hard limit and prints
 * "@ key value" lines (ns, µs, bytes, counts) for bench/driver.exs. Exit
 * status 0 iff every stream did what it should (figures are never checked).
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "council.h"

#define KEY_ENV "BENCH_LLM_KEY"
#define KEY_DEFAULT "sk-bench"

/* serve: deltas per stream and their interval; paced: the interval asked for */
static size_t srv_tokens = 100;
static int64_t srv_interval_ns = 20000000;

/* ------------------------------------------------------------ utilities */

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_us(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
}

/* A "Vm...:" line of /proc/self/status in KiB (field "VmRSS" or "VmHWM"),
 * -1 when it cannot be read */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t flen = strlen(field);
    long kb = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, flen) == 0 && line[flen] == ':' &&
            sscanf(line + flen + 1, " %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static long rss_kb(void)
{
    return status_kb("VmRSS");
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        printf("@ nofile_limit %llu\n", (unsigned long long)rl.rlim_cur);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* sorts v; prints @ <name>_p50/_p99/_max/_mean/_n */
static void print_pcts(const char *name, double *v, size_t n)
{
    double sum = 0;
    size_t i;

    printf("@ %s_n %zu\n", name, n);
    if (n == 0)
        return;
    qsort(v, n, sizeof *v, cmp_double);
    for (i = 0; i < n; i++)
        sum += v[i];
    printf("@ %s_p50 %.1f\n", name, v[(size_t)(0.50 * (double)(n - 1) + 0.5)]);
    printf("@ %s_p90 %.1f\n", name, v[(size_t)(0.90 * (double)(n - 1) + 0.5)]);
    printf("@ %s_p99 %.1f\n", name, v[(size_t)(0.99 * (double)(n - 1) + 0.5)]);
    printf("@ %s_max %.1f\n", name, v[n - 1]);
    printf("@ %s_mean %.1f\n", name, sum / (double)n);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);

    if (p == NULL) {
        fprintf(stderr, "bench_llm: out of memory\n");
        exit(2);
    }
    return p;
}

/* --------------------------------------------------------------- client */

typedef struct stream {
    double t_begin;
    double t_last;
    double ttft;
    double t_started;  /* member_started delivered, from t_begin */
    double t_done;     /* member_completed delivered, from t_begin */
    size_t ntok;
    size_t bytes;
    int done;
    int ok;
} stream;

static struct {
    council_ctx *ctx;
    stream *s;
    size_t n;          /* streams */
    size_t done;       /* runs finished */
    size_t first;      /* streams with at least one token */
    size_t tokens;     /* member_token events, all streams */
    size_t empty;      /* member_token events with no bytes */
    double *gaps;      /* ns between consecutive tokens of a stream */
    size_t ngaps, capgaps;
    double *lat;       /* paced: ns from the server's write to this event */
    int64_t *sent;     /* paced: the server's timestamp of each of those */
    size_t nlat, caplat;
    int64_t all_first_real; /* CLOCK_REALTIME when the last stream got its first token */
    int paced;
    size_t runs_total; /* terminal events expected */
    size_t failed;
    char err[256];
} B;

static void on_event(const council_event *ev, void *arg)
{
    stream *s = arg;
    double t;

    switch (ev->type) {
    case COUNCIL_EV_MEMBER_TOKEN:
        if (s == NULL)
            return;
        if (ev->chunk_len == 0) {
            B.empty++;
            return;
        }
        t = now_ns();
        if (B.paced) {
            int64_t sent = strtoll(ev->chunk, NULL, 10);

            if (B.nlat < B.caplat && sent > 0) {
                B.sent[B.nlat] = sent;
                B.lat[B.nlat++] = (double)(real_ns() - sent);
            }
        }
        if (s->ntok == 0) {
            s->ttft = t - s->t_begin;
            if (++B.first == B.n)
                B.all_first_real = real_ns();
        } else if (B.ngaps < B.capgaps) {
            B.gaps[B.ngaps++] = t - s->t_last;
        }
        s->t_last = t;
        s->ntok++;
        s->bytes += ev->chunk_len;
        B.tokens++;
        break;
    case COUNCIL_EV_MEMBER_STARTED:
        if (s != NULL)
            s->t_started = now_ns() - s->t_begin;
        break;
    case COUNCIL_EV_MEMBER_COMPLETED:
        if (s == NULL || ev->member_result == NULL)
            return;
        s->t_done = now_ns() - s->t_begin;
        s->done = 1;
        s->ok = ev->member_result->ok;
        if (!s->ok && B.err[0] == 0 && ev->member_result->error)
            snprintf(B.err, sizeof B.err, "%s", ev->member_result->error);
        break;
    case COUNCIL_EV_RUN_COMPLETED:
    case COUNCIL_EV_RUN_FAILED:
    case COUNCIL_EV_RUN_CANCELLED:
        if (ev->type != COUNCIL_EV_RUN_COMPLETED)
            B.failed++;
        B.done++;
        break;
    default:
        break;
    }
}

static char *member_json(char *buf, size_t n, const char *id, const char *provider,
                         const char *model, const char *base)
{
    if (strcmp(provider, "mock") == 0)
        snprintf(buf, n, "{\"id\":\"%s\",\"provider\":\"mock\",\"options\":{\"latency_ms\":600000}}",
                 id);
    else
        snprintf(buf, n,
                 "{\"id\":\"%s\",\"provider\":\"openai\",\"options\":{\"model\":\"%s\","
                 "\"base_url\":\"%s/v1\",\"api_key_env\":\"" KEY_ENV "\"}}",
                 id, model, base);
    return buf;
}

static council_spec *make_spec(const char *provider, const char *model, const char *base,
                               size_t members)
{
    size_t cap = 256 + members * (strlen(base) + strlen(model) + 160), len = 0, i;
    char *json = xcalloc(cap, 1), m[1024];
    council_spec *spec;
    council_spec_error err;
    int rc;

    len += (size_t)snprintf(json + len, cap - len, "{\"id\":\"llm_bench\",\"members\":[");
    for (i = 0; i < members; i++) {
        char id[32];

        snprintf(id, sizeof id, members == 1 ? "m" : "m%zu", i);
        len += (size_t)snprintf(json + len, cap - len, "%s%s", i ? "," : "",
                                member_json(m, sizeof m, id, provider, model, base));
    }
    snprintf(json + len, cap - len,
             "],\"rounds\":[{\"type\":\"independent_analysis\"}],"
             "\"limits\":{\"member_timeout_ms\":600000}}");
    rc = council_spec_from_json(json, strlen(json), &spec, &err);
    free(json);
    if (rc != 0) {
        fprintf(stderr, "bench_llm: spec: %s: %s %s\n", council_strerror(rc), err.field,
                err.message);
        exit(2);
    }
    return spec;
}

static council_run **create_runs(council_spec *spec, size_t nruns)
{
    council_run **runs = xcalloc(nruns, sizeof *runs);
    static const char q[] = "Say something, token by token.";
    size_t i;

    for (i = 0; i < nruns; i++) {
        council_start_opts o = {.spec = spec,
                                .input = {.tag = "text", .data = q, .len = sizeof q - 1}};
        int rc = council_run_create(B.ctx, &o, &runs[i]);

        if (rc == 0)
            rc = council_run_subscribe(runs[i], on_event, NULL, &B.s[i], NULL);
        if (rc != 0) {
            fprintf(stderr, "bench_llm: run %zu: %s\n", i, council_strerror(rc));
            exit(2);
        }
    }
    return runs;
}

static void begin_runs(council_run **runs, size_t nruns)
{
    size_t i;

    for (i = 0; i < nruns; i++) {
        B.s[i].t_begin = now_ns();
        if (council_run_begin(runs[i]) != 0) {
            fprintf(stderr, "bench_llm: council_run_begin failed\n");
            exit(2);
        }
    }
}

/* steps the loop until cond() or timeout; 0 on cond */
static int step_until(int (*cond)(void), double timeout_s)
{
    double deadline = now_ns() + timeout_s * 1e9;

    while (!cond()) {
        if (now_ns() > deadline)
            return -1;
        council_ctx_step(B.ctx, 50);
    }
    return 0;
}

static int all_done(void) { return B.done >= B.runs_total; }
static int all_first(void) { return B.first >= B.n || B.done >= B.runs_total; }

static void client_init(size_t n, size_t gaps_cap, size_t lat_cap)
{
    council_config cfg = {.max_runs = n + 16, .max_retained = n + 16};

    raise_nofile();
    if (getenv(KEY_ENV) == NULL)
        setenv(KEY_ENV, KEY_DEFAULT, 1);
    memset(&B, 0, sizeof B);
    B.n = n;
    B.runs_total = n;
    B.s = xcalloc(n, sizeof *B.s);
    B.capgaps = gaps_cap;
    B.gaps = xcalloc(gaps_cap, sizeof *B.gaps);
    B.caplat = lat_cap;
    B.lat = xcalloc(lat_cap, sizeof *B.lat);
    B.sent = xcalloc(lat_cap, sizeof *B.sent);
    B.ctx = council_ctx_new(&cfg);
    if (B.ctx == NULL) {
        fprintf(stderr, "bench_llm: council_ctx_new failed\n");
        exit(2);
    }
}

/* The end of a measurement: its runs, its spec, the context and the
 * samples kept in B. */
static void release_all(council_run **runs, size_t nruns, council_spec *spec)
{
    for (size_t i = 0; i < nruns; i++)
        council_run_unref(runs[i]);
    free(runs);
    council_spec_unref(spec);
    council_ctx_free(B.ctx);
    free(B.s);
    free(B.gaps);
    free(B.lat);
    free(B.sent);
}

/* stream / paced */
static const char *samples_path;

static int mode_stream(const char *base, size_t n, size_t tokens, int paced)
{
    char model[64];
    size_t nruns = n, short_streams = 0, i;
    council_spec *spec, *warm_spec;
    council_run **runs;
    double c0, c1, t0, t1, *ttft;
    long rss0, rss1;
    int rc = 0;

    client_init(n, n * (tokens + 1), paced ? n * (tokens + 1) : 1);
    B.paced = paced;

    /* warm-up: one stream, so that libcurl's first-use costs (and the
     * connection-independent ones) are not in the figures */
    warm_spec = make_spec("openai", paced ? "paced-2-1000~warm" : "tokens-20~warm", base, 1);
    if (paced)
        snprintf(model, sizeof model, "paced-%zu-%lld~bench", tokens,
                 (long long)(srv_interval_ns / 1000));
    else
        snprintf(model, sizeof model, "tokens-%zu~bench", tokens);
    {
        stream ws = {0};
        council_run *wr;
        council_start_opts o = {.spec = warm_spec, .input = {.tag = "text", .data = "w", .len = 1}};

        B.runs_total = 1;
        if (council_run_create(B.ctx, &o, &wr) != 0 ||
            council_run_subscribe(wr, on_event, NULL, &ws, NULL) != 0 ||
            council_run_begin(wr) != 0 || step_until(all_done, 60) != 0 || !ws.ok) {
            fprintf(stderr, "bench_llm: the warm-up stream failed: %s\n",
                    B.err[0] ? B.err : "(no error text; timeout?)");
            return 1;
        }
        council_run_unref(wr);
        B.done = B.first = B.tokens = B.empty = B.ngaps = B.nlat = B.failed = 0;
        B.runs_total = n;
    }
    council_spec_unref(warm_spec);

    spec = make_spec("openai", model, base, 1);
    rss0 = rss_kb();
    c0 = cpu_us();
    t0 = now_ns();
    runs = create_runs(spec, nruns);
    begin_runs(runs, nruns);
    /* the loop as an application runs it: until no run is left */
    council_ctx_run(B.ctx);
    if (!all_done()) {
        fprintf(stderr, "bench_llm: timeout: %zu of %zu streams done\n", B.done, n);
        rc = 1;
    }
    t1 = now_ns();
    c1 = cpu_us();
    rss1 = rss_kb();

    ttft = xcalloc(n, sizeof *ttft);
    for (i = 0; i < n; i++)
        ttft[i] = B.s[i].t_started;
    print_pcts("started_ns", ttft, n);
    for (i = 0; i < n; i++)
        ttft[i] = B.s[i].t_done;
    print_pcts("done_ns", ttft, n);
    for (i = 0; i < n; i++) {
        ttft[i] = B.s[i].ttft;
        if (!B.s[i].ok || (!paced && B.s[i].ntok != tokens) || (paced && B.s[i].ntok != tokens))
            short_streams++;
    }
    if (short_streams || B.failed) {
        fprintf(stderr, "bench_llm: %zu streams short or failed, %zu runs failed; first error: %s\n",
                short_streams, B.failed, B.err[0] ? B.err : "-");
        rc = 1;
    }
    printf("@ streams %zu\n@ tokens_per_stream %zu\n@ runs %zu\n", n, tokens, nruns);
    printf("@ tokens %zu\n@ empty_token_events %zu\n", B.tokens, B.empty);
    printf("@ short_streams %zu\n@ failed_runs %zu\n", short_streams, B.failed);
    printf("@ wall_ns %.0f\n@ cpu_us %.0f\n", t1 - t0, c1 - c0);
    printf("@ cpu_ns_per_token %.1f\n", B.tokens ? (c1 - c0) * 1000.0 / (double)B.tokens : 0.0);
    printf("@ tokens_per_cpu_s %.0f\n", c1 > c0 ? (double)B.tokens / ((c1 - c0) / 1e6) : 0.0);
    printf("@ tokens_per_wall_s %.0f\n", (double)B.tokens / ((t1 - t0) / 1e9));
    printf("@ rss_kb_before %ld\n@ rss_kb_after %ld\n", rss0, rss1);
    printf("@ rss_kb_peak %ld\n", status_kb("VmHWM"));
    printf("@ heap_kb_after %.0f\n", (double)heap_in_use() / 1024.0);
    print_pcts("ttft_ns", ttft, n);
    print_pcts("gap_ns", B.gaps, B.ngaps);
    if (paced) {
        /* steady state: tokens the server wrote once every stream had its
         * first token (the start-up storm of N connections is TTFT's) */
        double *st = xcalloc(B.nlat, sizeof *st);
        size_t ns = 0;

        for (i = 0; i < B.nlat; i++)
            if (B.sent[i] >= B.all_first_real)
                st[ns++] = B.lat[i];
        print_pcts("steady_lat_ns", st, ns);
        free(st);
        if (samples_path != NULL) {
            FILE *f = fopen(samples_path, "w");

            if (f == NULL) {
                perror(samples_path);
                rc = 1;
            } else {
                for (i = 0; i < B.nlat; i++)
                    fprintf(f, "%.0f %d\n", B.lat[i], B.sent[i] >= B.all_first_real);
                if (fclose(f) != 0)
                    rc = 1;
            }
        }
        print_pcts("lat_ns", B.lat, B.nlat);
    }
    free(ttft);
    release_all(runs, nruns, spec);
    return rc;
}

/* open (slow streams) / idle (mock members waiting) */
static int mode_open(const char *base, size_t n, int idle)
{
    council_spec *spec, *warm_spec;
    council_run **runs, *wr;
    size_t heap0, heap1, i, started = 0;
    long rss0, rss1;
    int rc = 0;
    stream ws = {0};

    client_init(n, 16, 1);
    /* warm-up: one run of the same kind, opened and cancelled */
    warm_spec = make_spec(idle ? "mock" : "openai", "slow~bench", base, 1);
    {
        council_start_opts o = {.spec = warm_spec, .input = {.tag = "text", .data = "w", .len = 1}};

        B.runs_total = 1;
        B.n = 1;
        if (council_run_create(B.ctx, &o, &wr) != 0 ||
            council_run_subscribe(wr, on_event, NULL, &ws, NULL) != 0 ||
            council_run_begin(wr) != 0) {
            fprintf(stderr, "bench_llm: warm-up run failed\n");
            return 1;
        }
        if (idle)
            council_ctx_step(B.ctx, 10);
        else if (step_until(all_first, 30) != 0 || ws.ntok == 0) {
            fprintf(stderr, "bench_llm: the warm-up stream got no token: %s\n",
                    B.err[0] ? B.err : "(timeout?)");
            return 1;
        }
        council_run_cancel(wr);
        step_until(all_done, 10);
        council_run_unref(wr);
        B.n = n;
        B.done = B.first = B.tokens = B.failed = 0;
        B.runs_total = n;
    }
    council_spec_unref(warm_spec);

    spec = make_spec(idle ? "mock" : "openai", "slow~bench", base, 1);
    rss0 = rss_kb();
    heap0 = heap_in_use();
    runs = create_runs(spec, n);
    begin_runs(runs, n);
    if (idle) {
        /* a few steps: every run starts its round and its mock call */
        for (i = 0; i < 20; i++)
            council_ctx_step(B.ctx, 5);
    } else if (step_until(all_first, 120) != 0 || B.first < n) {
        fprintf(stderr, "bench_llm: only %zu of %zu slow streams delivered a token (%s)\n",
                B.first, n, B.err[0] ? B.err : "-");
        rc = 1;
    }
    /* let the loop settle (nothing more should arrive) */
    for (i = 0; i < 5; i++)
        council_ctx_step(B.ctx, 10);
    heap1 = heap_in_use();
    rss1 = rss_kb();
    for (i = 0; i < n; i++)
        started += council_run_status(runs[i]) == COUNCIL_RUNNING;
    printf("@ streams %zu\n@ open_streams %zu\n@ running_runs %zu\n", n, B.first, started);
    printf("@ rss_kb_before %ld\n@ rss_kb_after %ld\n", rss0, rss1);
    printf("@ rss_bytes_per_stream %.1f\n", (double)(rss1 - rss0) * 1024.0 / (double)n);
    printf("@ heap_bytes_per_stream %.1f\n", ((double)heap1 - (double)heap0) / (double)n);
    for (i = 0; i < n; i++)
        council_run_cancel(runs[i]);
    step_until(all_done, 30);
    release_all(runs, n, spec);
    return rc;
}

/* --------------------------------------------------------- paced server */

typedef struct conn {
    int fd;
    char *in;
    size_t inlen, incap;
    int state;        /* 0 reading the request, 1 streaming, 2 closing */
    size_t sent;      /* deltas sent */
    size_t tokens;    /* deltas to send: "paced-T" in the body, else --tokens */
    int64_t due;      /* next write, CLOCK_MONOTONIC ns */
    int64_t interval; /* ns between deltas */
    char *out;        /* unsent bytes (the socket was full) */
    size_t outlen, outoff;
} conn;

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int srv_ep;

static void conn_close(conn *c)
{
    epoll_ctl(srv_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* write or queue; -1 when the peer is gone */
static int conn_send(conn *c, const char *p, size_t n)
{
    if (c->outlen > c->outoff) {
        c->out = realloc(c->out, c->outlen + n);
        memcpy(c->out + c->outlen, p, n);
        c->outlen += n;
        return 0;
    }
    while (n > 0) {
        ssize_t w = write(c->fd, p, n);

        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            free(c->out);
            c->out = malloc(n);
            memcpy(c->out, p, n);
            c->outlen = n;
            c->outoff = 0;
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

/* one HTTP chunk holding one SSE event */
static int send_event(conn *c, const char *data)
{
    char ev[512], ch[600];
    int n = snprintf(ev, sizeof ev, "data: %s\n\n", data);
    int m = snprintf(ch, sizeof ch, "%x\r\n%s\r\n", n, ev);

    return conn_send(c, ch, (size_t)m);
}

static int send_delta(conn *c)
{
    char data[256];

    snprintf(data, sizeof data,
             "{\"id\":\"chatcmpl-paced\",\"object\":\"chat.completion.chunk\",\"model\":\"paced\","
             "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%lld \"},\"finish_reason\":null}]}",
             (long long)real_ns());
    return send_event(c, data);
}

static int send_end(conn *c)
{
    static const char last[] = "0\r\n\r\n";

    if (send_event(c, "{\"id\":\"chatcmpl-paced\",\"object\":\"chat.completion.chunk\","
                      "\"model\":\"paced\",\"choices\":[{\"index\":0,\"delta\":{},"
                      "\"finish_reason\":\"stop\"}]}") ||
        send_event(c, "[DONE]"))
        return -1;
    return conn_send(c, last, sizeof last - 1);
}

/* the request is whole once the head and Content-Length bytes are in */
static int request_complete(conn *c)
{
    char *end, *cl;
    size_t head, len = 0;

    if (c->inlen == 0)
        return 0;
    c->in[c->inlen] = 0;
    end = strstr(c->in, "\r\n\r\n");
    if (end == NULL)
        return 0;
    head = (size_t)(end - c->in) + 4;
    cl = strcasestr(c->in, "\ncontent-length:");
    if (cl != NULL && cl < end)
        len = (size_t)strtoul(cl + 16, NULL, 10);
    return c->inlen >= head + len;
}

static int serve(const char *port_s)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port_s)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    struct epoll_event evs[256], ev;
    conn **live = NULL;
    size_t nlive = 0, caplive = 0;
    uint64_t rnd = (uint64_t)real_ns() | 1;

    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("bench_llm serve");
        return 1;
    }
    srv_ep = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(srv_ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.events = EPOLLIN;
    ev.data.ptr = &live; /* stdin marker */
    epoll_ctl(srv_ep, EPOLL_CTL_ADD, 0, &ev);
    printf("bench_llm serve ready port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);

    for (;;) {
        int64_t now = mono_ns(), next = now + 1000000000;
        size_t i;
        int n, timeout_ms;

        /* writes that are due */
        for (i = 0; i < nlive; i++) {
            conn *c = live[i];

            if (c->state != 1 || c->outlen > c->outoff)
                continue;
            if (c->due <= now) {
                int bad;

                if (c->sent < c->tokens) {
                    bad = send_delta(c);
                    c->sent++;
                    c->due += c->interval;
                } else {
                    bad = send_end(c);
                    c->state = 2;
                }
                if (bad)
                    c->state = 2;
            }
            if (c->state == 1 && c->due < next)
                next = c->due;
        }
        /* finished or dead connections whose output is out */
        for (i = 0; i < nlive;) {
            conn *c = live[i];

            if (c->state == 2 && c->outlen <= c->outoff) {
                conn_close(c);
                live[i] = live[--nlive];
            } else {
                i++;
            }
        }
        now = mono_ns();
        /* rounded up to the millisecond: a write may go out up to 1 ms
         * after its schedule (the timestamp in it is taken at the write,
         * so the latency measured is not affected); no spinning */
        timeout_ms = next <= now ? 0 : (int)((next - now + 999999) / 1000000);
        n = epoll_wait(srv_ep, evs, 256, timeout_ms);
        for (int k = 0; k < n; k++) {
            if (evs[k].data.ptr == NULL) {
                int fd;

                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    conn *c = calloc(1, sizeof *c);

                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c->fd = fd;
                    c->incap = 8192;
                    c->in = malloc(c->incap + 1);
                    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
                    ev.data.ptr = c;
                    epoll_ctl(srv_ep, EPOLL_CTL_ADD, fd, &ev);
                    if (nlive == caplive) {
                        caplive = caplive ? caplive * 2 : 1024;
                        live = realloc(live, caplive * sizeof *live);
                    }
                    live[nlive++] = c;
                }
            } else if (evs[k].data.ptr == &live) {
                char b[256];

                if (read(0, b, sizeof b) <= 0)
                    return 0;
            } else {
                conn *c = evs[k].data.ptr;

                if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                    for (;;) {
                        ssize_t r;

                        if (c->inlen == c->incap) {
                            c->incap *= 2;
                            c->in = realloc(c->in, c->incap + 1);
                        }
                        r = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
                        if (r > 0) {
                            if (c->state == 0)
                                c->inlen += (size_t)r;
                        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                            c->state = 2;
                            c->outlen = c->outoff = 0;
                            break;
                        } else if (errno == EAGAIN) {
                            break;
                        }
                    }
                    if (c->state == 0 && request_complete(c)) {
                        static const char head[] =
                            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                            "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                            "Connection: close\r\n\r\n";

                        char *m = strstr(c->in, "\"paced-");

                        char *e = NULL;

                        c->tokens = m ? (size_t)strtoul(m + 7, &e, 10) : srv_tokens;
                        c->interval = e && *e == '-' ? strtoll(e + 1, NULL, 10) * 1000
                                                     : srv_interval_ns;
                        if (c->interval <= 0)
                            c->interval = srv_interval_ns;
                        rnd ^= rnd << 13;
                        rnd ^= rnd >> 7;
                        rnd ^= rnd << 17;
                        c->state = conn_send(c, head, sizeof head - 1) ? 2 : 1;
                        c->due = mono_ns() + (int64_t)(rnd % (uint64_t)c->interval);
                    }
                }
                if ((evs[k].events & EPOLLOUT) && c->outlen > c->outoff) {
                    while (c->outoff < c->outlen) {
                        ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);

                        if (w > 0)
                            c->outoff += (size_t)w;
                        else
                            break;
                    }
                    if (c->outoff == c->outlen)
                        c->outlen = c->outoff = 0;
                }
            }
        }
    }
}

/* ----------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_llm stream --base URL --streams N --tokens T\n"
            "       bench_llm paced --base URL --streams N --tokens T --interval-us I"
            " [--samples F]\n"
            "       bench_llm open --base URL --streams N\n"
            "       bench_llm idle --streams N\n"
            "       bench_llm serve [--port P] --tokens T --interval-us I\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *mode, *base = "http://127.0.0.1:1", *port = "0";
    size_t streams = 10, tokens = 20;
    int i, rc;

    if (argc < 2)
        usage();
    mode = argv[1];
    for (i = 2; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        else if (strcmp(argv[i], "--base") == 0)
            base = argv[++i];
        else if (strcmp(argv[i], "--streams") == 0)
            streams = (size_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--tokens") == 0)
            tokens = (size_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--port") == 0)
            port = argv[++i];
        else if (strcmp(argv[i], "--samples") == 0)
            samples_path = argv[++i];
        else if (strcmp(argv[i], "--interval-us") == 0)
            srv_interval_ns = (int64_t)strtoll(argv[++i], NULL, 10) * 1000;
        else
            usage();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (streams == 0 || srv_interval_ns <= 0)
        usage();
    if (strcmp(mode, "serve") == 0) {
        srv_tokens = tokens;
        return serve(port);
    }
    if (strcmp(mode, "stream") == 0)
        rc = mode_stream(base, streams, tokens, 0);
    else if (strcmp(mode, "paced") == 0)
        rc = mode_stream(base, streams, tokens, 1);
    else if (strcmp(mode, "open") == 0)
        rc = mode_open(base, streams, 0);
    else if (strcmp(mode, "idle") == 0)
        rc = mode_open(base, streams, 1);
    else
        usage();
    printf("@ exit %d\n", rc);
    return rc;
}
