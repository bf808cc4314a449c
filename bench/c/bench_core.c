/* bench_core.c - microbenchmark of the registry and the pub/sub.
 *
 * Prints one table: registry insert/lookup/remove ns per operation at 1k
 * and 1M entries (UUID-like run ids, looked up in random order), heap bytes
 * per registry entry, and pub/sub publish cost to 1 and 100 subscribers
 * (enqueue alone, and enqueue + delivery). Then the same questions through
 * the public API (council.h) on real pending runs: council_whereis and
 * council_run_state by id, council_run_summary on a handle, at 1k and 1M
 * runs. Figures only; nothing asserted.
 *
 * The lookups by id are read against the machine's own memory latency: a
 * chain of dependent loads at random cache lines of a 64 MiB array, and at
 * 1M runs also over an array as large as the runs and their table (the
 * same page size, so the same cost of address translation), measured in
 * turn with the lookups. Repetitions go on until the lookups' medians
 * agree within 10% (at most LOOKUP_MAX_REPS); every repetition's figures
 * are printed (keys ending _rN) for results.json.
 *
 *   bench_core [--quick]     --quick: 100k instead of 1M (for smoke runs)
 *   bench_core --memory N [own]   only the heap/RSS per running run (N
 *                                 runs; shared spec, or one parsed per run)
 *   bench_core --retention N [live L [mixed]]   RSS when idle, with L idle
 *                                 runs (default 1000), at the peak of N
 *                                 more mock runs, and after their retention
 *                                 window freed them (run in a fresh
 *                                 process); mixed: the L runs started
 *                                 among the N
 *
 * Besides the table, lines "@ key value" (ns, bytes) are printed for
 * bench/run to collect.
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "council.h"
#include "council_internal.h" /* the context's registry, for its mapped tables */
#include "pubsub.h"
#include "registry.h"

#define NS "CouncilEx.Runner.Registry"
#define NSL (sizeof NS - 1)
#define ID_LEN 36

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rng(void)
{
    /* xorshift64*: deterministic, good enough for shuffling */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* UUID v4-looking run ids: 36 characters. */
static void make_id(char *out, size_t i)
{
    uint64_t a = rng(), b = rng();
    char tmp[ID_LEN + 1];

    snprintf(tmp, sizeof tmp, "%08x-%04x-4%03x-8%03x-%012llx",
             (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
             (unsigned)a & 0xfff, (unsigned)(b >> 48) & 0xfff,
             (unsigned long long)((b & 0xffffffffffull) ^ i) & 0xffffffffffffull);
    memcpy(out, tmp, ID_LEN);
}

/* Starts the i-th run of a case (`what`, for the message) under a fresh id
 * written to `id` (ID_LEN bytes), with `spec` and the text `input`, and
 * leaves it to the registry; with create_only it is only created and its
 * reference returned. Exits with a message when the core refuses. */
static council_run *bench_run(council_ctx *ctx, council_spec *spec, char *id, size_t i,
                              const char *input, bool create_only, const char *what)
{
    council_start_opts o;
    council_run *run;
    int rc;

    make_id(id, i);
    memset(&o, 0, sizeof o);
    o.run_id = id;
    o.run_id_len = ID_LEN;
    o.spec = spec;
    o.input.tag = "text";
    o.input.data = input;
    o.input.len = strlen(input);
    rc = create_only ? council_run_create(ctx, &o, &run) : council_run_start(ctx, &o, &run);
    if (rc != 0) {
        fprintf(stderr, "%s: %s %zu: %s\n", what, create_only ? "run_create" : "run_start", i,
                council_strerror(rc));
        exit(1);
    }
    if (create_only)
        return run;
    council_run_unref(run); /* the registry keeps it */
    return NULL;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

/* What a context holds: malloc's figure and the registry's tables that
 * are mmap'ed outside malloc. */
static size_t ctx_heap(council_ctx *ctx)
{
    return heap_in_use() + registry_mapped_bytes(ctx->reg);
}

static void shuffle(size_t *idx, size_t n)
{
    size_t i;

    for (i = n - 1; i > 0; i--) {
        size_t j = (size_t)(rng() % (i + 1)), t = idx[i];

        idx[i] = idx[j];
        idx[j] = t;
    }
}

static void bench_registry(size_t n)
{
    char *ids = malloc(n * ID_LEN);
    char *shuffled = malloc(n * ID_LEN);
    size_t *order = malloc(n * sizeof *order);
    size_t i, reps, r, heap0, heap1;
    double t0, t1, t_put, t_get, t_miss, t_del, t_put_max = 0;
    registry *reg;
    volatile uintptr_t sink = 0;

    if (ids == NULL || shuffled == NULL || order == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (i = 0; i < n; i++) {
        make_id(ids + i * ID_LEN, i);
        order[i] = i;
    }
    shuffle(order, n);
    /* the ids in lookup order, laid out sequentially: the loop's own reads
     * stay cheap and the time is the table's */
    for (i = 0; i < n; i++)
        memcpy(shuffled + i * ID_LEN, ids + order[i] * ID_LEN, ID_LEN);

    heap0 = heap_in_use();
    reg = registry_new(0);
    t_put = 0;
    for (i = 0; i < n; i++) {
        int rc;

        t0 = now_ns();
        rc = registry_put(reg, NS, NSL, ids + i * ID_LEN, ID_LEN,
                          (void *)(i + 1));
        t1 = now_ns();
        if (rc != 0) {
            fprintf(stderr, "put failed at %zu\n", i);
            exit(1);
        }
        t_put += t1 - t0;
        if (t1 - t0 > t_put_max)
            t_put_max = t1 - t0;
    }
    t_put /= (double)n;
    heap1 = heap_in_use() + registry_mapped_bytes(reg);

    /* at least 1M lookups so small tables are timed long enough */
    reps = n >= 1000000 ? 1 : 1000000 / n;
    t0 = now_ns();
    for (r = 0; r < reps; r++)
        for (i = 0; i < n; i++)
            sink += (uintptr_t)registry_get(reg, NS, NSL,
                                            shuffled + i * ID_LEN, ID_LEN);
    t_get = (now_ns() - t0) / (double)(n * reps);

    /* misses: same ids with the first character changed */
    t0 = now_ns();
    for (r = 0; r < reps; r++)
        for (i = 0; i < n; i++) {
            char miss[ID_LEN];

            memcpy(miss, shuffled + i * ID_LEN, ID_LEN);
            miss[0] = 'z';
            sink += (uintptr_t)registry_get(reg, NS, NSL, miss, ID_LEN);
        }
    t_miss = (now_ns() - t0) / (double)(n * reps);

    t0 = now_ns();
    for (i = 0; i < n; i++)
        sink += (uintptr_t)registry_remove(reg, NS, NSL,
                                           shuffled + i * ID_LEN, ID_LEN);
    t_del = (now_ns() - t0) / (double)n;
    registry_free(reg);
    (void)sink;

    printf("registry %8zu entries   put %6.1f ns (max %6.1f us)   "
           "get %6.1f ns   miss %6.1f ns   remove %6.1f ns   "
           "%5.1f bytes/entry\n",
           n, t_put, t_put_max / 1000.0, t_get, t_miss, t_del,
           (double)(heap1 - heap0) / (double)n);
    printf("@ registry_get_ns_%zu %.1f\n@ registry_miss_ns_%zu %.1f\n"
           "@ registry_put_ns_%zu %.1f\n@ registry_bytes_per_entry_%zu %.1f\n",
           n, t_get, n, t_miss, n, t_put, n, (double)(heap1 - heap0) / (double)n);
    free(ids);
    free(shuffled);
    free(order);
}

/* ------------------------------------------------------------ pub/sub */

typedef struct bmsg {
    long refs;
} bmsg;

static void bref(void *m)
{
    ((bmsg *)m)->refs++;
}

static void bunref(void *m)
{
    ((bmsg *)m)->refs--;
}

static size_t delivered;

static void bdeliver(void *m, void *arg)
{
    (void)m;
    (void)arg;
    delivered++;
}

static const pubsub_msg_ops BMSG_OPS = {bref, bunref};
static const pubsub_sub_ops BSUB_OPS = {bdeliver, NULL, NULL};

static void bench_pubsub(size_t nsubs, size_t nmsgs)
{
    enum { BATCH = 1000 };
    uv_loop_t loop;
    pubsub *ps;
    bmsg m = {1};
    const char *topic = "council_ex:run:0b7e8f4c-1d2a-4c3b-9e8f-7a6b5c4d3e2f";
    size_t tl = strlen(topic), i, b;
    double t0, t_pub = 0, t_all;

    uv_loop_init(&loop);
    ps = pubsub_new(&loop, &BMSG_OPS, 0);
    for (i = 0; i < nsubs; i++) {
        pubsub_sub *s;

        if (pubsub_subscribe(ps, topic, tl, &BSUB_OPS, (void *)(i + 1),
                             BATCH, &s) != 0) {
            fprintf(stderr, "subscribe failed\n");
            exit(1);
        }
    }

    /* enqueue alone (timed), delivery through flush (not timed) */
    delivered = 0;
    for (b = 0; b < nmsgs / BATCH; b++) {
        t0 = now_ns();
        for (i = 0; i < BATCH; i++)
            pubsub_publish(ps, topic, tl, &m);
        t_pub += now_ns() - t0;
        pubsub_flush(ps);
    }
    t_pub /= (double)nmsgs;

    /* publish + delivery drained by the loop, as in production */
    t0 = now_ns();
    for (b = 0; b < nmsgs / BATCH; b++) {
        for (i = 0; i < BATCH; i++)
            pubsub_publish(ps, topic, tl, &m);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    t_all = (now_ns() - t0) / (double)nmsgs;

    if (delivered != 2 * nmsgs * nsubs || m.refs != 1) {
        fprintf(stderr, "pubsub: delivered %zu of %zu, refs %ld\n",
                delivered, 2 * nmsgs * nsubs, m.refs);
        exit(1);
    }
    printf("pubsub   %4zu subscriber%s        publish %6.1f ns   "
           "publish+deliver %7.1f ns/msg   %6.1f ns/delivery\n",
           nsubs, nsubs == 1 ? " " : "s", t_pub, t_all,
           t_all / (double)nsubs);
    printf("@ pubsub_publish_ns_%zu %.1f\n@ pubsub_publish_deliver_ns_%zu %.1f\n",
           nsubs, t_pub, nsubs, t_all);
    pubsub_free(ps);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

/* ------------------------------------------------------- public API */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;

    if (f != NULL) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (size_t)res * 4096;
}

/* A chain of dependent loads at random cache lines of `bytes` of memory
 * (plain malloc: the page size the runs' own memory gets). One load can
 * only start when the one before has returned, so the time per step is
 * the latency of one load that misses every cache, address translation
 * included. */
typedef struct chase {
    size_t *mem;
    size_t lines;
    size_t bytes;
} chase;

#define LINE_WORDS (64 / sizeof(size_t))

static void chase_init(chase *c, size_t bytes)
{
    size_t *perm, i;

    c->lines = bytes / 64;
    c->bytes = c->lines * 64;
    c->mem = malloc(c->bytes);
    perm = malloc(c->lines * sizeof *perm);
    if (c->mem == NULL || perm == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (i = 0; i < c->lines; i++)
        perm[i] = i;
    shuffle(perm, c->lines);
    for (i = 0; i < c->lines; i++)
        c->mem[perm[i] * LINE_WORDS] = perm[(i + 1) % c->lines] * LINE_WORDS;
    free(perm);
}

static double chase_ns(const chase *c, size_t steps)
{
    size_t i, p = 0;
    double t0 = now_ns();

    for (i = 0; i < steps; i++)
        p = c->mem[p];
    t0 = (now_ns() - t0) / (double)steps;
    if (p == (size_t)-1)
        printf(" "); /* keeps p alive */
    return t0;
}

/* The same through runs: each one's user data is the next. */
static double runs_chase_ns(council_run *first, size_t steps)
{
    council_run *p = first;
    size_t i;
    double t0 = now_ns();

    for (i = 0; i < steps; i++)
        p = council_run_get_user_data(p);
    t0 = (now_ns() - t0) / (double)steps;
    if (p == NULL)
        printf(" "); /* keeps p alive */
    return t0;
}

static void chase_free(chase *c)
{
    free(c->mem);
    c->mem = NULL;
}

static double median_of(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double spread_of(const double *v, size_t n, double med)
{
    double lo = v[0], hi = v[0];
    size_t i;

    for (i = 1; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    return med > 0 ? (hi - lo) / med : 0;
}

#define LOOKUP_MIN_REPS 3
#define LOOKUP_MAX_REPS 9
#define LOOKUP_SPREAD 0.10

/* n pending runs (created, registered, never begun: no timers, no
 * events), then by id in random order: council_whereis, council_run_state;
 * and council_run_summary on handles. Each figure is timed over batches of
 * 1000 operations; a repetition's figure is the median of its batch means
 * (its p99 alongside). The ids are read in lookup order from an array laid
 * out in that order, as a host holds the id it just received: the time is
 * the registry's and the run's, not the benchmark's own reads. */
static void bench_api(size_t n)
{
    enum { BATCH = 1000 };
    static const char spec_json[] =
        "{\"id\":\"bench\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\","
        "\"options\":{\"latency_ms\":600000}}],"
        "\"rounds\":[{\"type\":\"independent_analysis\"}]}";
    council_config cfg;
    council_ctx *ctx;
    council_spec *spec = NULL;
    council_spec_error serr;
    council_run **runs = malloc(n * sizeof *runs);
    char *ids = malloc(n * ID_LEN), *probe = malloc(n * ID_LEN);
    size_t *order = malloc(n * sizeof *order);
    size_t i, k, reps, nb, heap0, heap1, rss0, rss1, rep, nrep = 0;
    double *bw, *bs, *bm, t0;
    double w_med[LOOKUP_MAX_REPS], w_p99[LOOKUP_MAX_REPS], s_med[LOOKUP_MAX_REPS],
        s_p99[LOOKUP_MAX_REPS], m_med[LOOKUP_MAX_REPS], d_small[LOOKUP_MAX_REPS],
        d_ws[LOOKUP_MAX_REPS], d_runs[LOOKUP_MAX_REPS], tmp[LOOKUP_MAX_REPS];
    double wm, sm_, mm, ds, dw = 0, dr, spread = 0;
    chase small, ws;
    int big = n >= 100000;
    volatile uintptr_t sink = 0;

    memset(&cfg, 0, sizeof cfg);
    cfg.max_runs = n + 16;
    cfg.max_retained = n + 16;
    ctx = council_ctx_new(&cfg);
    if (ctx == NULL || runs == NULL || ids == NULL || probe == NULL || order == NULL ||
        council_spec_from_json(spec_json, sizeof spec_json - 1, &spec, &serr) != 0) {
        fprintf(stderr, "api: setup failed\n");
        exit(1);
    }
    heap0 = ctx_heap(ctx);
    rss0 = rss_bytes();
    for (i = 0; i < n; i++) {
        runs[i] = bench_run(ctx, spec, ids + i * ID_LEN, i, "x", true, "api");
        order[i] = i;
    }
    heap1 = ctx_heap(ctx);
    rss1 = rss_bytes();
    shuffle(order, n);
    for (i = 0; i < n; i++)
        memcpy(probe + i * ID_LEN, ids + order[i] * ID_LEN, ID_LEN);

    /* the memory latency in the same process, measured in turn with the
     * lookups: over 64 MiB, and at the large size over as much memory as
     * the runs and their table took (what the lookups range over) */
    chase_init(&small, (size_t)64 << 20);
    memset(&ws, 0, sizeof ws);
    if (big)
        chase_init(&ws, rss1 - rss0 > ((size_t)64 << 20) ? rss1 - rss0 : (size_t)64 << 20);
    /* and through the runs themselves: each run's user data (a public
     * field) names the next run of a random cycle, so one step is one
     * dependent load of a line of a run, where the lookups' second load
     * goes */
    for (i = 0; i < n; i++)
        council_run_set_user_data(runs[order[i]], runs[order[(i + 1) % n]]);

    reps = n >= 1000000 ? 1 : 1000000 / n;
    nb = (n * reps) / BATCH;
    bw = malloc(nb * sizeof *bw);
    bs = malloc(nb * sizeof *bs);
    bm = malloc(nb * sizeof *bm);
    if (bw == NULL || bs == NULL || bm == NULL)
        exit(1);
    for (rep = 0; rep < LOOKUP_MAX_REPS; rep++) {
        d_small[rep] = chase_ns(&small, 1000000);
        d_ws[rep] = big ? chase_ns(&ws, 1000000) : 0;
        d_runs[rep] = runs_chase_ns(runs[0], 1000000);
        for (k = 0; k < nb; k++) {
            council_run *out;
            const char *p = probe + ((k * BATCH) % n) * ID_LEN;

            t0 = now_ns();
            for (i = 0; i < BATCH; i++, p += ID_LEN) {
                sink += (uintptr_t)council_whereis(ctx, NULL, p, ID_LEN, &out);
                sink += (uintptr_t)out;
            }
            bw[k] = (now_ns() - t0) / BATCH;
        }
        for (k = 0; k < nb; k++) {
            council_summary sm;
            const char *p = probe + ((k * BATCH) % n) * ID_LEN;

            t0 = now_ns();
            for (i = 0; i < BATCH; i++, p += ID_LEN) {
                sink += (uintptr_t)council_run_state(ctx, NULL, p, ID_LEN, &sm);
                sink += sm.rounds_completed;
            }
            bs[k] = (now_ns() - t0) / BATCH;
        }
        for (k = 0; k < nb; k++) {
            council_summary sm;

            t0 = now_ns();
            for (i = 0; i < BATCH; i++) {
                council_run_summary(runs[order[(k * BATCH + i) % n]], &sm);
                sink += sm.status;
            }
            bm[k] = (now_ns() - t0) / BATCH;
        }
        qsort(bw, nb, sizeof *bw, cmp_double);
        qsort(bs, nb, sizeof *bs, cmp_double);
        qsort(bm, nb, sizeof *bm, cmp_double);
#define MED(a) (a)[nb / 2]
#define P99(a) (a)[(size_t)(0.99 * (double)(nb - 1) + 0.5)]
        w_med[rep] = MED(bw);
        w_p99[rep] = P99(bw);
        s_med[rep] = MED(bs);
        s_p99[rep] = P99(bs);
        m_med[rep] = MED(bm);
#undef MED
#undef P99
        nrep = rep + 1;
        memcpy(tmp, w_med, nrep * sizeof *tmp);
        spread = spread_of(w_med, nrep, median_of(tmp, nrep));
        if (nrep >= LOOKUP_MIN_REPS && spread < LOOKUP_SPREAD)
            break;
    }
    (void)sink;
    for (rep = 0; rep < nrep; rep++)
        printf("@ api_whereis_ns_%zu_r%zu %.1f\n@ api_whereis_p99_ns_%zu_r%zu %.1f\n"
               "@ api_state_ns_%zu_r%zu %.1f\n@ dram_64m_ns_%zu_r%zu %.1f\n"
               "@ dram_ws_ns_%zu_r%zu %.1f\n@ dram_runs_ns_%zu_r%zu %.1f\n",
               n, rep, w_med[rep], n, rep, w_p99[rep], n, rep, s_med[rep], n, rep,
               d_small[rep], n, rep, d_ws[rep], n, rep, d_runs[rep]);
    memcpy(tmp, w_med, nrep * sizeof *tmp);
    wm = median_of(tmp, nrep);
    memcpy(tmp, s_med, nrep * sizeof *tmp);
    sm_ = median_of(tmp, nrep);
    memcpy(tmp, m_med, nrep * sizeof *tmp);
    mm = median_of(tmp, nrep);
    memcpy(tmp, d_small, nrep * sizeof *tmp);
    ds = median_of(tmp, nrep);
    memcpy(tmp, d_runs, nrep * sizeof *tmp);
    dr = median_of(tmp, nrep);
    if (big) {
        memcpy(tmp, d_ws, nrep * sizeof *tmp);
        dw = median_of(tmp, nrep);
    }
    memcpy(tmp, w_p99, nrep * sizeof *tmp);
    printf("api      %8zu runs      whereis %6.1f ns (p99 %6.1f; spread %.0f%% over %zu reps)   "
           "state by id %6.1f ns   summary %6.1f ns   %6.0f bytes/pending run\n",
           n, wm, median_of(tmp, nrep), spread * 100, nrep, sm_, mm,
           (double)(heap1 - heap0) / (double)n);
    if (big)
        printf("         one dependent load: %.1f ns over 64 MiB, %.1f ns over %zu MiB "
               "(as much as the runs took), %.1f ns into the runs themselves: "
               "whereis = %.2fx / %.2fx / %.2fx one load\n",
               ds, dw, ws.bytes >> 20, dr, wm / ds, wm / dw, wm / dr);
    printf("@ api_whereis_ns_%zu %.1f\n@ api_whereis_p99_ns_%zu %.1f\n"
           "@ api_whereis_spread_%zu %.3f\n@ api_whereis_reps_%zu %zu\n"
           "@ api_state_ns_%zu %.1f\n@ api_summary_ns_%zu %.1f\n"
           "@ api_bytes_per_pending_run_%zu %.0f\n@ api_rss_per_pending_run_%zu %.0f\n"
           "@ dram_64m_ns_%zu %.1f\n@ dram_runs_ns_%zu %.1f\n",
           n, wm, n, median_of(tmp, nrep), n, spread, n, nrep, n, sm_, n, mm, n,
           (double)(heap1 - heap0) / (double)n, n, (double)(rss1 - rss0) / (double)n,
           n, ds, n, dr);
    memcpy(tmp, s_p99, nrep * sizeof *tmp);
    printf("@ api_state_p99_ns_%zu %.1f\n", n, median_of(tmp, nrep));
    if (big)
        printf("@ dram_ws_ns_%zu %.1f\n@ dram_ws_mib_%zu %zu\n", n, dw, n, ws.bytes >> 20);
    chase_free(&small);
    chase_free(&ws);
    for (i = 0; i < n; i++)
        council_run_unref(runs[i]);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    free(bw);
    free(bs);
    free(bm);
    free(runs);
    free(ids);
    free(probe);
    free(order);
}

/* Memory of n idle *running* runs through the public API (one mock member
 * waiting on a long timer, as the C node's benchmark runs are): heap and RSS
 * growth per run, with one spec shared by all runs and with a spec parsed
 * from JSON for every run (what a start over distribution does). */
static void bench_api_memory(size_t n, int spec_per_run)
{
    static const char spec_json[] =
        "{\"id\":\"bench\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\","
        "\"options\":{\"latency_ms\":600000}}],"
        "\"rounds\":[{\"type\":\"independent_analysis\"}],"
        "\"limits\":{\"member_timeout_ms\":3600000}}";
    council_config cfg;
    council_ctx *ctx;
    council_spec *shared = NULL;
    council_spec_error serr;
    size_t i, heap0, heap1, rss0, rss1;
    char id[ID_LEN];

    memset(&cfg, 0, sizeof cfg);
    cfg.max_runs = n + 16;
    cfg.max_retained = n + 16;
    ctx = council_ctx_new(&cfg);
    if (ctx == NULL ||
        council_spec_from_json(spec_json, sizeof spec_json - 1, &shared, &serr) != 0) {
        fprintf(stderr, "api memory: setup failed\n");
        exit(1);
    }
    heap0 = ctx_heap(ctx);
    rss0 = rss_bytes();
    for (i = 0; i < n; i++) {
        council_spec *spec = shared;

        if (spec_per_run &&
            council_spec_from_json(spec_json, sizeof spec_json - 1, &spec, &serr) != 0) {
            fprintf(stderr, "api memory: spec %zu\n", i);
            exit(1);
        }
        bench_run(ctx, spec, id, i, "x", false, "api memory");
        if (spec_per_run)
            council_spec_unref(spec);
    }
    /* let every run begin: the first round and its member call start */
    council_ctx_step(ctx, 0);
    council_ctx_step(ctx, 0);
    heap1 = ctx_heap(ctx);
    rss1 = rss_bytes();
    printf("api      %8zu running runs (%s spec)   %6.0f heap bytes/run   "
           "%6.0f RSS bytes/run\n", n, spec_per_run ? "own" : "shared",
           (double)(heap1 - heap0) / (double)n, (double)(rss1 - rss0) / (double)n);
    printf("@ api_heap_bytes_per_running_run_%s %.0f\n@ api_rss_bytes_per_running_run_%s %.0f\n",
           spec_per_run ? "own_spec" : "shared_spec", (double)(heap1 - heap0) / (double)n,
           spec_per_run ? "own_spec" : "shared_spec", (double)(rss1 - rss0) / (double)n);
    council_spec_unref(shared);
    council_ctx_free(ctx);
}

/* RSS after the retention window: a fresh process (nothing measured
 * before in it) holding `live` idle runs starts n mock runs that answer
 * at once, lets them finish and their retention (3 s, long enough for all
 * of them to be finished and retained together) end, and reads its RSS:
 * idle (context only), with the live runs, at the peak, and 1.5 s after
 * the last of them left the registry. "After" should come back near
 * "with the live runs". mixed: the live runs are started among the others
 * (one every (n + live) / live), so their memory lies between theirs;
 * "with the live runs" is then idle RSS plus the heap they hold. */
static void bench_retention(size_t n, size_t live, int mixed)
{
    static const char idle_json[] =
        "{\"id\":\"bench\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\","
        "\"options\":{\"latency_ms\":600000}}],"
        "\"rounds\":[{\"type\":\"independent_analysis\"}],"
        "\"limits\":{\"member_timeout_ms\":3600000}}";
    static const char quick_json[] =
        "{\"id\":\"quick\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\"},"
        "{\"id\":\"b\",\"provider\":\"mock\"}],"
        "\"rounds\":[{\"type\":\"independent_analysis\"},{\"type\":\"vote\"}]}";
    enum { WAVE = 10000 };
    council_config cfg;
    council_ctx *ctx;
    council_spec *idle = NULL, *quick = NULL;
    council_spec_error serr;
    council_stats st;
    size_t i, rss_idle, rss_live = 0, rss_peak = 0, rss_after, heap_idle, heap_live = 0,
        heap_after, heap_peak, reg_peak, n_idle = 0, n_quick = 0;
    size_t stride = live ? (n + live) / live : n + 1;
    char id[ID_LEN];
    double t0, t_sweep;

    memset(&cfg, 0, sizeof cfg);
    cfg.max_runs = n + live + 16;
    cfg.max_retained = n + live + 16;
    cfg.retention_ms = 3000;
    ctx = council_ctx_new(&cfg);
    if (ctx == NULL ||
        council_spec_from_json(idle_json, sizeof idle_json - 1, &idle, &serr) != 0 ||
        council_spec_from_json(quick_json, sizeof quick_json - 1, &quick, &serr) != 0) {
        fprintf(stderr, "retention: setup failed\n");
        exit(1);
    }
    council_ctx_step(ctx, 0);
    rss_idle = rss_bytes();
    heap_idle = ctx_heap(ctx);
    for (i = 0; i < live + n; i++) {
        bool is_idle = mixed ? (i % stride == 0 && n_idle < live) || n_quick == n
                             : i < live;

        bench_run(ctx, is_idle ? idle : quick, id, i, "a question", false, "retention");
        if (is_idle)
            n_idle++;
        else
            n_quick++;
        if (!mixed && n_idle == live && n_quick == 0 && is_idle) {
            council_ctx_step(ctx, 0);
            council_ctx_step(ctx, 0);
            rss_live = rss_bytes();
            heap_live = ctx_heap(ctx);
        }
        if (!is_idle && n_quick % WAVE == 0) {
            /* the wave answers and finishes; its runs wait in retention */
            do
                council_ctx_step(ctx, 0);
            while (council_ctx_stats(ctx, &st), st.runs_active > n_idle);
            if (rss_bytes() > rss_peak)
                rss_peak = rss_bytes();
        }
    }
    do
        council_ctx_step(ctx, 0);
    while (council_ctx_stats(ctx, &st), st.runs_active > live);
    if (rss_bytes() > rss_peak)
        rss_peak = rss_bytes();
    heap_peak = ctx_heap(ctx);
    reg_peak = st.runs_registered;
    /* every finished run leaves when its window ends */
    t0 = now_ns();
    do
        council_ctx_step(ctx, 50);
    while (council_ctx_stats(ctx, &st), st.runs_registered > live &&
                                            now_ns() - t0 < 60e9);
    t_sweep = (now_ns() - t0) / 1e6;
    /* the process goes on: its loop runs 1.5 s more (the core gives freed
     * memory back at most once a second) */
    t0 = now_ns();
    while (now_ns() - t0 < 1.5e9)
        council_ctx_step(ctx, 100);
    rss_after = rss_bytes();
    heap_after = ctx_heap(ctx);
    if (mixed || live == 0) {
        rss_live = rss_idle + (heap_after - heap_idle);
        heap_live = heap_after;
    }
    printf("retention %7zu runs expired, %zu live%s   RSS idle %zu KiB, with the live runs %zu KiB%s, "
           "peak %zu KiB (%zu runs registered), after %zu KiB (%.2fx idle + live; heap %zu -> "
           "%zu -> %zu KiB; %zu still registered %.0f ms later)\n",
           n, live, mixed ? " (started among the others)" : "", rss_idle >> 10, rss_live >> 10,
           mixed ? " (idle + the heap they hold)" : "", rss_peak >> 10, reg_peak,
           rss_after >> 10, (double)rss_after / (double)rss_live, heap_live >> 10,
           heap_peak >> 10, heap_after >> 10, st.runs_registered, t_sweep);
    printf("@ ret_runs %zu\n@ ret_live %zu\n@ ret_mixed %d\n@ ret_rss_idle_kib %zu\n"
           "@ ret_rss_live_kib %zu\n@ ret_rss_peak_kib %zu\n@ ret_registered_at_peak %zu\n"
           "@ ret_rss_after_kib %zu\n@ ret_heap_live_kib %zu\n@ ret_heap_peak_kib %zu\n"
           "@ ret_heap_after_kib %zu\n@ ret_left %zu\n",
           n, live, mixed, rss_idle >> 10, rss_live >> 10, rss_peak >> 10, reg_peak,
           rss_after >> 10, heap_live >> 10, heap_peak >> 10, heap_after >> 10,
           st.runs_registered);
    council_spec_unref(idle);
    council_spec_unref(quick);
    council_ctx_free(ctx);
}

int main(int argc, char **argv)
{
    /* --memory N [own]: only the running-run memory figure, one shared
     * spec (or a spec parsed per run); for a heap profiler:
     * valgrind --tool=massif bench_core --memory 2000 */
    if (argc > 2 && strcmp(argv[1], "--memory") == 0) {
        bench_api_memory((size_t)atol(argv[2]),
                         argc > 3 && strcmp(argv[3], "own") == 0);
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "--retention") == 0) {
        bench_retention((size_t)atol(argv[2]),
                        argc > 4 && strcmp(argv[3], "live") == 0 ? (size_t)atol(argv[4])
                                                                 : 1000,
                        argc > 5 && strcmp(argv[5], "mixed") == 0);
        return 0;
    }
    size_t big = (argc > 1 && strcmp(argv[1], "--quick") == 0) ? 100000
                                                                : 1000000;

    printf("bench_core (registry: %d-byte ids, random-order lookups)\n",
           ID_LEN);
    bench_registry(1000);
    bench_registry(big);
    bench_pubsub(1, 1000000);
    bench_pubsub(100, 100000);
    bench_api(1000);
    bench_api(big);
    bench_api_memory(100000, 0);
    bench_api_memory(100000, 1);
    return 0;
}
