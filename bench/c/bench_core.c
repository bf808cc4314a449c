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
 *   bench_core [--quick]     --quick: 100k instead of 1M (for smoke runs)
 *   bench_core --memory N [own]   only the heap/RSS per running run (N
 *                                 runs; shared spec, or one parsed per run)
 *
 * Besides the table, lines "@ key value" (ns, bytes) are printed for
 * bench/run to collect.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "council.h"
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

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
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
    heap1 = heap_in_use();

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

/* n pending runs (created, registered, never begun: no timers, no
 * events), then by id in random order: council_whereis, council_run_state;
 * and council_run_summary on handles. Each figure is timed over batches of
 * 1000 operations; the median and the 99th percentile of the batch means
 * are printed with the overall mean. */
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
    char *ids = malloc(n * ID_LEN);
    size_t *order = malloc(n * sizeof *order);
    size_t i, k, reps, nb, heap0, heap1;
    double *bw, *bs, *bm, t0, mw = 0, ms = 0, mm = 0;
    volatile uintptr_t sink = 0;

    memset(&cfg, 0, sizeof cfg);
    cfg.max_runs = n + 16;
    cfg.max_retained = n + 16;
    ctx = council_ctx_new(&cfg);
    if (ctx == NULL || runs == NULL || ids == NULL || order == NULL ||
        council_spec_from_json(spec_json, sizeof spec_json - 1, &spec, &serr) != 0) {
        fprintf(stderr, "api: setup failed\n");
        exit(1);
    }
    heap0 = heap_in_use();
    for (i = 0; i < n; i++) {
        council_start_opts o;
        int rc;

        make_id(ids + i * ID_LEN, i);
        memset(&o, 0, sizeof o);
        o.run_id = ids + i * ID_LEN;
        o.run_id_len = ID_LEN;
        o.spec = spec;
        o.input.tag = "text";
        o.input.data = "x";
        o.input.len = 1;
        rc = council_run_create(ctx, &o, &runs[i]);
        if (rc != 0) {
            fprintf(stderr, "api: run_create %zu: %s\n", i, council_strerror(rc));
            exit(1);
        }
        order[i] = i;
    }
    heap1 = heap_in_use();
    shuffle(order, n);

    reps = n >= 1000000 ? 1 : 1000000 / n;
    nb = (n * reps) / BATCH;
    bw = malloc(nb * sizeof *bw);
    bs = malloc(nb * sizeof *bs);
    bm = malloc(nb * sizeof *bm);
    if (bw == NULL || bs == NULL || bm == NULL)
        exit(1);
    for (k = 0; k < nb; k++) {
        council_run *out;

        t0 = now_ns();
        for (i = 0; i < BATCH; i++) {
            size_t j = order[(k * BATCH + i) % n];

            sink += (uintptr_t)council_whereis(ctx, NULL, ids + j * ID_LEN,
                                               ID_LEN, &out);
            sink += (uintptr_t)out;
        }
        bw[k] = (now_ns() - t0) / BATCH;
        mw += bw[k];
    }
    for (k = 0; k < nb; k++) {
        council_summary sm;

        t0 = now_ns();
        for (i = 0; i < BATCH; i++) {
            size_t j = order[(k * BATCH + i) % n];

            sink += (uintptr_t)council_run_state(ctx, NULL, ids + j * ID_LEN,
                                                 ID_LEN, &sm);
            sink += sm.rounds_completed;
        }
        bs[k] = (now_ns() - t0) / BATCH;
        ms += bs[k];
    }
    for (k = 0; k < nb; k++) {
        council_summary sm;

        t0 = now_ns();
        for (i = 0; i < BATCH; i++) {
            council_run_summary(runs[order[(k * BATCH + i) % n]], &sm);
            sink += sm.status;
        }
        bm[k] = (now_ns() - t0) / BATCH;
        mm += bm[k];
    }
    (void)sink;
    qsort(bw, nb, sizeof *bw, cmp_double);
    qsort(bs, nb, sizeof *bs, cmp_double);
    qsort(bm, nb, sizeof *bm, cmp_double);
#define MED(a) (a)[nb / 2]
#define P99(a) (a)[(size_t)(0.99 * (double)(nb - 1) + 0.5)]
    printf("api      %8zu runs      whereis %6.1f ns (p99 %6.1f)   "
           "state by id %6.1f ns (p99 %6.1f)   summary %6.1f ns   "
           "%6.0f bytes/pending run\n",
           n, MED(bw), P99(bw), MED(bs), P99(bs), MED(bm),
           (double)(heap1 - heap0) / (double)n);
    printf("@ api_whereis_ns_%zu %.1f\n@ api_whereis_p99_ns_%zu %.1f\n"
           "@ api_whereis_mean_ns_%zu %.1f\n"
           "@ api_state_ns_%zu %.1f\n@ api_state_p99_ns_%zu %.1f\n"
           "@ api_state_mean_ns_%zu %.1f\n"
           "@ api_summary_ns_%zu %.1f\n@ api_bytes_per_pending_run_%zu %.0f\n",
           n, MED(bw), n, P99(bw), n, mw / (double)nb, n, MED(bs), n, P99(bs),
           n, ms / (double)nb, n, MED(bm), n,
           (double)(heap1 - heap0) / (double)n);
#undef MED
#undef P99
    for (i = 0; i < n; i++)
        council_run_unref(runs[i]);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    free(bw);
    free(bs);
    free(bm);
    free(runs);
    free(ids);
    free(order);
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
    heap0 = heap_in_use();
    rss0 = rss_bytes();
    for (i = 0; i < n; i++) {
        council_start_opts o;
        council_spec *spec = shared;
        council_run *run;
        int rc;

        if (spec_per_run &&
            council_spec_from_json(spec_json, sizeof spec_json - 1, &spec, &serr) != 0) {
            fprintf(stderr, "api memory: spec %zu\n", i);
            exit(1);
        }
        make_id(id, i);
        memset(&o, 0, sizeof o);
        o.run_id = id;
        o.run_id_len = ID_LEN;
        o.spec = spec;
        o.input.tag = "text";
        o.input.data = "x";
        o.input.len = 1;
        rc = council_run_start(ctx, &o, &run);
        if (rc != 0) {
            fprintf(stderr, "api memory: run_start %zu: %s\n", i, council_strerror(rc));
            exit(1);
        }
        council_run_unref(run); /* the registry keeps it */
        if (spec_per_run)
            council_spec_unref(spec);
    }
    /* let every run begin: the first round and its member call start */
    council_ctx_step(ctx, 0);
    council_ctx_step(ctx, 0);
    heap1 = heap_in_use();
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

/* Dependent random loads over `bytes` of memory: the floor under any
 * lookup that misses the cache, to read the registry figures against. */
static void bench_memory_latency(size_t bytes)
{
    size_t n = bytes / sizeof(size_t), i, p = 0, steps = 2000000;
    size_t *next = malloc(n * sizeof *next), *perm = malloc(n * sizeof *perm);
    double t0;

    if (next == NULL || perm == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (i = 0; i < n; i++)
        perm[i] = i;
    shuffle(perm, n);
    for (i = 0; i < n; i++)
        next[perm[i]] = perm[(i + 1) % n];
    t0 = now_ns();
    for (i = 0; i < steps; i++)
        p = next[p];
    t0 = (now_ns() - t0) / (double)steps;
    printf("memory   %6zu MiB random dependent load %6.1f ns  (context)%s\n",
           bytes >> 20, t0, p == n ? " " : "");
    printf("@ memory_random_load_ns %.1f\n", t0);
    free(next);
    free(perm);
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
    bench_memory_latency((size_t)64 << 20);
    return 0;
}
