/* fuzz_service.c - libFuzzer target for the C node's request handlers: the
 * input is one request term (ETF without the 131), as a BEAM caller's
 * GenServer.call would carry it. It is checked with the node's term limits
 * (as dist_ctl.c checks every payload) and handed, wrapped in
 * {'$gen_call', {Sink, Tag}, Request}, to the real service process (start
 * options, spec terms and JSON, whereis/state/result/cancel, subscribe,
 * stats...), to the process of a run kept waiting and to that of the last
 * run a request started (their calls), and cut short to the service's
 * on_too_large (the head of a call over the limits), on a real node, bridge and core context with no
 * network: the node is never started (no listener, no epmd, creation 0,
 * so nothing dials out), callers are a local sink process that takes the
 * replies, exec is allowed no program. Runs are cancelled every 64 inputs
 * and the loop is stepped after each input, so run processes end, events
 * go out and retention sweeps.
 *
 * Seeds: test/fuzz/corpus_service (requests written by
 * test/fuzz/service_seeds.exs). See scripts/fuzz.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "../../c_src/cnode/beam_provider.h"
#include "../../c_src/cnode/beam_tools.h"
#include "../../c_src/cnode/bridge.h"
#include "../../c_src/cnode/log.h"
#include "../../c_src/cnode/node.h"
#include "../../c_src/cnode/run_proc.h"
#include "../../c_src/cnode/service.h"
#include "../../c_src/cnode/term.h"

static council_ctx *ctx;
static cn_node *node;
static cn_bridge bridge;
static cn_proc *sink;
static cn_pid sink_pid, last_run, long_run;
static int have_run, have_long;
static unsigned long inputs;

/* The sink keeps the pid of a run a start answered with ({Tag, {ok, Pid}}). */
static void sink_msg(cn_node *n, cn_proc *p, cn_slice msg)
{
    (void)p;
    cn_slice el[2], ok[2];
    cn_wpid w;
    if (cn_term_tuple(msg, el, 2) == 2 && cn_term_tuple(el[1], ok, 2) == 2 &&
        cn_term_is_atom(ok[0], "ok") && cn_term_pid(ok[1], &w) == 0 &&
        cn_pt_pid_from_wire(cn_node_table(n), &w, &last_run) == 0)
        have_run = 1;
}

/* The sink outlives what it is linked to (a start_link links it to the
 * run): exit signals are ignored, as by a process trapping exits. */
static void sink_exit(cn_node *n, cn_proc *p, const cn_pid *from, cn_slice reason, int via_link)
{
    (void)n, (void)p, (void)from, (void)reason, (void)via_link;
}

static const cn_proc_ops sink_ops = {.on_message = sink_msg, .on_exit_signal = sink_exit};

static void setup(void)
{
    cn_log_set_level(-1); /* quiet: the logs are not what is tested */
    council_config cc = {.max_runs = 32, .max_retained = 64, .retention_ms = 50,
                         .member_timeout_ms = 200, .output_cap = 65536};
    ctx = council_ctx_new(&cc);
    const char *none[1] = {NULL};
    if (!ctx || council_ctx_set_exec_allow(ctx, none, 0) != COUNCIL_OK)
        abort();
    cn_node_config cfg;
    cn_node_config_defaults(&cfg);
    cfg.name = "fuzz@localhost";
    cn_cookie cookie;
    if (cn_cookie_set(&cookie, "fuzz", 4))
        abort();
    node = cn_node_new(council_ctx_uv_loop(ctx), &cfg, &cookie);
    if (!node)
        abort();
    bridge.node = node;
    bridge.ctx = ctx;
    cn_service_config sc = {.name = "council_ex", .max_runs = 32, .max_retained = 64,
                            .bridge = &bridge};
    if (!cn_service_start(node, &sc) || cn_beam_provider_register(&bridge) ||
        cn_beam_tools_register(&bridge) || !(sink = cn_node_spawn(node, &sink_ops, NULL, "sink")))
        abort();
    cn_node_self(node, sink, &sink_pid);
}

/* {'$gen_call', {Sink, 42}, Request} to p; with cut > 0, only its first
 * cut bytes, as the head of a message over the limits (on_too_large). */
static void call_cut(cn_proc *p, const uint8_t *req, size_t len, size_t cut)
{
    ei_x_buff x;
    if (ei_x_new(&x))
        return;
    if (!ei_x_encode_tuple_header(&x, 3) && !ei_x_encode_atom(&x, "$gen_call") &&
        !ei_x_encode_tuple_header(&x, 2) && !cn_node_encode_pid(node, &x, &sink_pid) &&
        !ei_x_encode_long(&x, 42) && !ei_x_append_buf(&x, (const char *)req, (int)len)) {
        cn_slice msg = cn_x_slice(&x);
        if (!cut)
            p->ops->on_message(node, p, msg);
        else if (p->ops->on_too_large)
            p->ops->on_too_large(node, p, (cn_slice){msg.p, cut < msg.len ? cut : msg.len});
    }
    ei_x_free(&x);
}

static void call(cn_proc *p, const uint8_t *req, size_t len)
{
    call_cut(p, req, len, 0);
}

/* A live run's process, or NULL. */
static cn_proc *live_run(const cn_pid *pid)
{
    cn_proc *p = cn_pt_find_id(cn_node_table(node), pid->num | (uint64_t)pid->serial << 32);
    return p && !p->dead && p != bridge.service && p != sink ? p : NULL;
}

/* A run that waits (its member answers in 10 minutes), so that every
 * input meets at least one running run's process. */
static void start_long_run(void)
{
    static const char spec[] =
        "{\"id\":\"long\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\","
        "\"options\":{\"latency_ms\":600000}}],\"rounds\":[{\"type\":\"independent_analysis\"}]}";
    ei_x_buff x;
    if (ei_x_new(&x))
        return;
    if (!ei_x_encode_tuple_header(&x, 2) && !ei_x_encode_atom(&x, "start") &&
        !ei_x_encode_map_header(&x, 2) && !ei_x_encode_atom(&x, "spec") &&
        !ei_x_encode_binary(&x, spec, sizeof spec - 1) && !ei_x_encode_atom(&x, "input") &&
        !ei_x_encode_binary(&x, "q", 1)) {
        have_run = 0;
        call(bridge.service, (const uint8_t *)x.buff, (size_t)x.index);
        long_run = last_run;
        have_long = have_run;
    }
    ei_x_free(&x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx)
        setup();
    cn_term_limits lim = cn_term_default_limits;
    lim.max_bytes = 1u << 20;
    if (size > lim.max_bytes || cn_term_check_exact(data, size, &lim) != CN_TERM_OK)
        return 0;
    if (!sink || sink->dead || !bridge.service || bridge.service->dead)
        abort(); /* the harness lost a process it needs */
    /* the service, then a waiting run's process and the last run's */
    if (!have_long || !live_run(&long_run))
        start_long_run();
    call(bridge.service, data, size);
    cn_proc *run;
    if (have_long && (run = live_run(&long_run)))
        call(run, data, size);
    if (have_run && (run = live_run(&last_run)) && !cn_pid_eq(&last_run, &long_run))
        call(run, data, size);
    /* the same call cut short, as a frame over the limits is kept */
    call_cut(bridge.service, data, size, 1 + (size ? data[0] : 0) % 64);
    uv_loop_t *loop = council_ctx_uv_loop(ctx);
    uv_run(loop, UV_RUN_NOWAIT);
    if (++inputs % 64 == 0) {
        cn_run_proc_shutdown_all(&bridge, cn_atom_shutdown());
        for (int i = 0; i < 4; i++)
            uv_run(loop, UV_RUN_NOWAIT);
    }
    return 0;
}
