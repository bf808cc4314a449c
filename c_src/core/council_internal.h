/* council_internal.h - what the core's files share, and the json_t views
 * the C node uses to turn results and events into Erlang terms.
 *
 * What it is for: the data structures behind the opaque handles of
 * council.h (ctx, spec, run, call, event), and the few functions one core
 * file calls in another. What it is not for: anything a C host needs; that
 * is council.h. Nothing here knows about BEAM.
 *
 * JSON accessors (for the C node): each returns a NEW reference the caller
 * json_decref()s, or NULL when out of memory. Shapes are exactly those of
 * docs/protocol.md "Shapes":
 *   member_result {member_id, status: "ok"|"error", text|null, attempts,
 *                  error|null, parsed|null}
 *   round_result  {name, idx, type, members: [member_result],
 *                  aggregate|null, text|null}
 *   result        {final|null, rounds: [round_result], errors: [string]}
 *   summary       {run_id, council, registry, status, current_round:
 *                  null|{name, idx}, rounds_completed, started_at}
 * Texts may hold any bytes: strings are made with json_stringn_nocheck, so
 * read them with json_string_value + json_string_length, never as C strings.
 * "status" values are strings; the C node maps them to its fixed atoms.
 */
#ifndef COUNCIL_INTERNAL_H
#define COUNCIL_INTERNAL_H

#include "council.h"
#include "pubsub.h"
#include "registry.h"

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

/* ------------------------------------------------------ json accessors */

json_t *council_member_result_json(const council_member_result *mr);
json_t *council_round_result_json(const council_round_result *rr);
json_t *council_result_json(const council_result *res);
json_t *council_result_errors_json(const council_result *res);
json_t *council_summary_json(const council_summary *s);
/* usage {input_tokens, output_tokens, cost|null}; tool event {id, name,
 * arguments (the JSON text as a string), and for a result: result, status} */
json_t *council_usage_json(const council_usage *u);
json_t *council_tool_event_json(council_event_type type, const council_tool_event *t);
/* The payload of an event: member_result, round_result or result for the
 * types that carry one; NULL (not an error) for the others. */
json_t *council_event_payload_json(const council_event *ev);
/* The request of a call as a json_t (borrowed; do not modify). NULL when
 * out of memory. Built before start() except for the built-in providers
 * that ask for it while the call is active. */
json_t *council_call_request_json(const council_call *call);
/* The request of a route, likewise (made on first use, kept with the
 * route; NULL when out of memory). */
json_t *council_route_request_json(const council_route *rt);
/* The pubsub message ops for council_event objects (ref/unref), for code
 * that subscribes through pubsub.h directly, and the context's pubsub. */
const pubsub_msg_ops *council_event_pubsub_ops(void);
pubsub *council_ctx_pubsub(council_ctx *ctx);

/* ------------------------------------------------------------ env.c */

/* A variable of the context's environment (council_ctx_setenv) if set
 * there, else getenv(3)'s. Borrowed: valid until the next change of that
 * name or the context's end; copy it before the loop turns. Loop thread. */
const char *cx_env_get(const council_ctx *ctx, const char *name);
/* The same, but only what council_ctx_setenv set (NULL otherwise). */
const char *cx_env_own(const council_ctx *ctx, const char *name);
/* Wipes and frees the context's variables (council_ctx_free). */
void cx_env_free(council_ctx *ctx);

/* ------------------------------------------------------------ helpers */

char *cx_strdup(const char *s);
void cx_usage_add(council_usage *to, const council_usage *u);
/* Keep the last cap bytes of a stream in buf (*len of them so far): n
 * more bytes at p are added, the oldest dropped (a child's stderr tail). */
void cx_tail_keep(char *buf, size_t cap, size_t *len, const char *p, size_t n);
/* len bytes of s are valid UTF-8 (as jansson checks it) */
bool cx_utf8_valid(const char *s, size_t len);
/* a jansson parse failure: COUNCIL_ENOMEM when it says it ran out of
 * memory (or gives no reason, which it does for some of those), else bad.
 * Some of its allocation failures read as syntax errors: those stay bad. */
#define CX_JSON_ERR(je, bad)                                                  \
    ((json_error_code(&(je)) == json_error_out_of_memory ||                  \
      ((je).text[0] == 0 && json_error_code(&(je)) == json_error_unknown))   \
         ? COUNCIL_ENOMEM                                                     \
         : (bad))
char *cx_memdup(const void *p, size_t len); /* len bytes + NUL */
void *cx_calloc(size_t n, size_t sz);
/* A JSON string for text that goes out as JSON (requests): the bytes as
 * they are when valid UTF-8, else each invalid byte as U+FFFD. NULL when
 * out of memory. */
json_t *cx_json_text(const char *s, size_t len);

/* timer.c: one-shot timers of a context, kept in a heap under one uv
 * timer (fired in libuv's order: due time, then start order). A timer is
 * either allocated (cx_timer_new, NULL when out of memory; cx_timer_close
 * stops and frees it) or embedded in its owner's struct (cx_timer_init,
 * COUNCIL_ENOMEM when out of memory; cx_timer_fini stops it and releases
 * its place, after which starting it does nothing; fini is idempotent and
 * safe on a zeroed timer). Starting never fails; starting an armed timer
 * moves it. Close or fini every timer before the context is freed.
 *
 * cx_timer_defer arms a timer for the loop's check phase instead, after
 * the loop has polled for I/O: a timer of delay 0 fires in the pass that
 * started it, a deferred one only once sockets and other handles had their
 * turn. Deferred timers fire in the order they were deferred; one deferred
 * from a check-phase callback waits for the next check phase (so a chain
 * of deferrals yields to I/O at every link). Starting, deferring, stopping
 * and fini move or disarm a timer wherever it is armed. */
typedef struct cx_timers cx_timers;
typedef void (*cx_timer_cb)(void *arg);
typedef struct cx_timer {
    cx_timers *owner;     /* NULL before init, after fini, or once the
                             context is gone */
    union {
        struct {          /* in the heap */
            uint64_t due; /* loop time, ms */
            uint64_t seq; /* start order, ties between equal due times */
        };
        struct {          /* deferred: in one of the owner's lists */
            struct cx_timer *prev, *next;
        };
    };
    size_t slot;          /* index in owner->heap, a mark of the list it is
                             in (timer.c), or SIZE_MAX: not armed */
    cx_timer_cb cb;
    void *arg;
} cx_timer;
typedef struct cx_timer_list {
    cx_timer *head, *tail;
} cx_timer_list;
struct cx_timers {
    uv_timer_t driver;        /* armed for the earliest timer, if any */
    cx_timer **heap;          /* armed timers, min-heap on (due, seq) */
    size_t n, cap;            /* cap >= n_timers: starting needs no memory */
    size_t n_timers;          /* timers not yet closed */
    uint64_t seq;
    bool firing;
    uv_check_t checker;       /* fires the deferred timers after the poll */
    uv_idle_t spinner;        /* keeps that poll from blocking meanwhile */
    cx_timer_list deferred;   /* for the next check phase */
    cx_timer_list now;        /* being fired in this check phase */
};
struct council_ctx;
void cx_timers_init(cx_timers *ts, uv_loop_t *loop);
void cx_timers_close(cx_timers *ts); /* closes the uv handles */
cx_timer *cx_timer_new(struct council_ctx *ctx, cx_timer_cb cb, void *arg);
int cx_timer_init(struct council_ctx *ctx, cx_timer *t, cx_timer_cb cb, void *arg);
void cx_timer_fini(cx_timer *t);
void cx_timer_start(cx_timer *t, uint64_t ms);
void cx_timer_defer(cx_timer *t);
void cx_timer_stop(cx_timer *t);
void cx_timer_close(cx_timer *t);   /* stop and free; NULL ok */

/* ballot.c: tallies over candidate indices 0..n_cand-1 (ties: the lower
 * index wins). Plurality: choices[i] is ballot i's candidate (others are
 * ignored); tally[c] counts; returns the winner. Borda: ballot i ranks
 * orders[i][0..lens[i]) best first, position p scoring n_cand-1-p;
 * order[] gets the candidates by score. A match of a against b: the
 * winner, and the votes of each. */
size_t ballot_plurality(const long *choices, size_t n, size_t n_cand, int64_t *tally);
void ballot_borda(const size_t *const *orders, const size_t *lens, size_t n, size_t n_cand,
                  int64_t *score, size_t *order);
size_t ballot_match(const long *choices, size_t n, size_t a, size_t b, int64_t *va,
                    int64_t *vb);

/* Labels: "A".."Z", then "A2".."Z2", ... for member index i. out >= 8. */
void cx_label(size_t i, char out[8]);

/* ---------------------------------------------------------------- spec */

typedef enum round_type {
    RT_INDEPENDENT = 0,
    RT_PEER_REVIEW,
    RT_ANON_PEER_REVIEW,
    RT_CRITIQUE,
    RT_RANKING,
    RT_VOTE,
    RT_ITERATE,
    RT_PAIRWISE,
    RT_SYNTHESIS,
    RT__COUNT
} round_type;

const char *round_type_name(round_type t);

typedef enum stop_rule { STOP_NONE = 0, STOP_CONSENSUS } stop_rule;

typedef struct spec_member {
    char *id;
    char *provider;
    json_t *options;       /* object */
    char *options_text;    /* compact JSON of options */
    char label[8];
    /* provider "council": options.spec compiled with this spec, shared by
     * every call (each nested run takes a reference); NULL when invalid
     * (sub_error: what each call fails with) or nested deeper than a
     * sub-council may run (SUB_COUNCIL_MAX_DEPTH; its calls fail first) */
    struct council_spec *sub;
    char *sub_error;
    /* options.max_attempts / options.backoff_ms: this member's retry
     * policy over the spec's limits (0 / -1: the limits') */
    unsigned max_attempts;
    int64_t backoff_ms;
} spec_member;

/* A router as the spec names it (council.h "routers"): a registered one
 * by name, or the built-in rules. Member sets are bit masks over spec
 * indices (SPEC_MAX_MEMBERS is 64). */
typedef struct route_rule {
    json_t *when;          /* the conditions (borrowed from options) */
    uint64_t members;
} route_rule;

typedef struct spec_router {
    char *name;            /* registered router; NULL: the rules below */
    json_t *options;       /* the spec's router object (owned), or NULL */
    route_rule *rules;
    size_t n_rules;
    bool has_default;
    uint64_t deflt;
} spec_router;

typedef struct spec_round {
    round_type type;
    char *name;
    json_t *options;       /* object (owned) */
    bool gated;
    bool fail_fast;        /* options.failure_mode "fail_fast": a member's
                              error fails the run at once */
    size_t n_gate;
    size_t *gate;          /* member indices, spec order */
    int synth_member;      /* synthesis: member index, -1 = chair/first */
    spec_router *router;   /* options.router, or NULL */
    char *instructions;    /* options.instructions or NULL */
    /* iterate */
    struct spec_round *children;
    size_t n_children;
    unsigned max_iterations;
    stop_rule until;
} spec_round;

struct council_spec {
    int refs;
    bool frozen;
    json_t *doc;           /* the document being built / parsed */
    char *id;
    spec_member *members;
    size_t n_members;
    spec_round *rounds;
    size_t n_rounds;
    int chair;             /* member index or -1 */
    council_limits limits;
    spec_router *router;   /* the council's "router", or NULL */
};

#define SPEC_MAX_MEMBERS 64
#define SPEC_MIN_MEMBERS 1
#define SPEC_MIN_ROUNDS 1         /* of a spec, of an iterate round */
#define SPEC_MAX_NAME_BYTES 255   /* a member id, a round name */
#define SPEC_DEFAULT_ITERATIONS 3 /* an iterate round without max_iterations */
/* The values of an iterate round's "until", by stop_rule, and of a round's
 * "failure_mode" (continue, fail_fast): spec.c reads them, schema.c
 * publishes them. */
extern const char *const spec_until_names[2];
extern const char *const spec_failure_modes[2];
#define SPEC_MAX_ROUNDS 64
#define SPEC_MAX_DEPTH 4
#define SPEC_MAX_ITERATIONS 100
#define SPEC_MAX_RUN_ROUNDS 10000 /* rounds one run may go through, iterations counted */
#define SPEC_HARD_MAX_BYTES (16u << 20)
/* The maxima of a spec's "limits" (schema.c publishes them) */
#define SPEC_LIMIT_MAX_MEMBER_TIMEOUT_MS 86400000u
#define SPEC_LIMIT_MAX_ATTEMPTS 10u
#define SPEC_LIMIT_MAX_BACKOFF_MS 600000u
#define SPEC_LIMIT_MAX_CONCURRENCY 4096u

int spec_member_index(const council_spec *spec, const char *id);

/* ---------------------------------------------------------- providers */

typedef struct provider {
    struct provider *next;
    char *name;
    council_provider_ops ops;
    void *arg;
    /* built in, reads the request only while its call is active (mock,
     * council): the request is built on first use; for every other
     * provider it is built before start() */
    bool request_on_demand;
} provider;

provider *ctx_provider_find(council_ctx *ctx, const char *name);
void provider_mock_ops(council_provider_ops *ops);
void provider_exec_ops(council_provider_ops *ops);
void provider_council_ops(council_provider_ops *ops);
#define SUB_COUNCIL_MAX_DEPTH 3
/* ctx free: kill every exec child still alive; count those not yet
 * reaped; close every child's handles (frees them once closed). */
void provider_exec_shutdown(council_ctx *ctx);
size_t provider_exec_unreaped(council_ctx *ctx);
void provider_exec_close_all(council_ctx *ctx);

/* ----------------------------------------------------------------- ctx */

/* A council_ctx_cancel_async request, waiting for the loop thread. */
typedef struct cancel_req {
    struct cancel_req *next;
    char *registry;           /* NULL: the default registry */
    size_t len;
    char id[];
} cancel_req;

struct council_ctx {
    uv_loop_t loop;
    uv_async_t async;
    uv_mutex_t cancel_lock;   /* guards cancel_head/tail (any thread) */
    cancel_req *cancel_head, *cancel_tail;
    int cancels_queued;       /* atomic; set/cleared under cancel_lock */
    uv_timer_t step_timer;
    int stop_flag;            /* atomic via __atomic builtins */
    int running;              /* inside uv_run */
    bool freeing;
    council_config cfg;
    registry *reg;
    pubsub *ps;
    provider *providers;
    struct council_run *runs; /* every run not yet freed (list) */
    size_t runs_active;
    council_run_quota *quota;     /* shared max of runs in progress, or NULL */
    size_t n_retained;
    struct council_run *ret_head, *ret_tail; /* retained, oldest first */
    uv_timer_t ret_timer;     /* due when the oldest retained run expires
                                 (or a trim of malloc's free memory is due) */
    size_t trim_pending;      /* runs unregistered since the last trim */
    uint64_t last_trim;       /* loop time (ms) of the last trim */
    bool trimmed;             /* a trim was made (last_trim is set) */
    cx_timers timers;         /* kicks, call timeouts, mock answers */
    struct cx_child *exec_children; /* provider_exec's programs (child.h) */
    struct cx_http *http;     /* http.c: the curl multi, made on first use */
    struct tools_state *tools; /* tools.c: handlers and tool programs */
    struct cx_env *env;       /* env.c: council_ctx_setenv's variables */
    struct router_reg *routers; /* router.c: registered routers */
    uint64_t next_call_id;
    bool exec_restricted;     /* exec_allow.c: only these programs run */
    char **exec_allow;        /* real paths: programs and directories */
    size_t n_exec_allow;
};

/* exec_allow.c. The program an exec member or tool names, as it will be
 * run: with no list set (council_ctx_set_exec_allow), COUNCIL_OK and *out
 * NULL (run prog as given); else *out (malloc'ed) is its real path (a bare
 * name looked up on PATH, a relative one from cwd when given, symlinks
 * resolved) and COUNCIL_OK when that is a listed program or under a listed
 * directory, COUNCIL_EPROVIDER when not (or not found), COUNCIL_ENOMEM. */
int cx_exec_resolve(const council_ctx *ctx, const char *prog, const char *cwd, char **out);
/* Every program the spec names (exec members' argv[0], tools' exec[0],
 * those of its sub-councils) against the list: COUNCIL_OK, or
 * COUNCIL_EPROVIDER with err naming the field and "program not allowed". */
int cx_exec_check_spec(const council_ctx *ctx, const council_spec *spec,
                       council_spec_error *err);
/* Drops the list (council_ctx_free). */
void cx_exec_allow_free(council_ctx *ctx);

/* ----------------------------------------------------------------- runs */

/* The public views hold the results' own fields: mres and rres own the
 * pub's text, error, parsed_json and aggregate_json (freed through them);
 * member_id, name and type are borrowed (the run's spec, or static). */
typedef struct mres {
    council_member_result pub;
    json_t *parsed;
} mres;

typedef struct rres {
    council_round_result pub;   /* pub.members: in the rres's block, as the
                                   mres are (see rres_member) */
    json_t *aggregate;
    struct rres *owned_next;    /* the run's list of every result made */
} rres;

static inline mres *rres_member(const rres *r, size_t i)
{
    return (mres *)r->pub.members[i];
}

typedef struct watcher {
    struct watcher *next;
    council_run_end_cb cb;
    void *arg;
    int changes;                /* a council_run_watch_changes watcher */
} watcher;

/* What a member has said: its latest answer and its latest critique
 * (owned; NULL when none). */
typedef struct member_said {
    char *latest;
    size_t latest_len;
    char *critique;
    size_t critique_len;
} member_said;

struct round_state;  /* engine.c */
struct frame;        /* engine.c */

/* What a run has produced, in one block made when it first produces
 * something (run_out_make): a round result, an error, usage, an answer. A
 * run whose first round only waits holds none of it. */
typedef struct run_out {
    council_result result;      /* the public view: result.rounds (the
                                   completed rres, in order; each starts with
                                   its council_round_result) has cap_rounds
                                   of room, result.errors cap_errors;
                                   final_text, the errors and each of their
                                   strings are owned */
    rres *owned;                /* every round result made, newest first
                                   (list through owned_next; freed with run) */
    uint32_t cap_rounds, cap_errors;
    member_said said[];         /* per member, in spec order */
} run_out;

struct council_run {
    int refs;
    uint32_t user_opts_len;     /* at most UINT32_MAX (run_create) */
    council_ctx *ctx;           /* NULL once detached by ctx free */
    struct council_run *prev, *next;        /* ctx->runs */
    bool registered, in_ret_list;
    bool own_topic;             /* its topic is COUNCIL_TOPIC_PREFIX + run_id */
    bool critiques_fresh;       /* set by a critique round, for the next one */
    bool chair_done;            /* engine: the chair's round has started */
    uint8_t depth;              /* 0; a sub-council's run: parent's + 1 (at
                                   most SUB_COUNCIL_MAX_DEPTH) */
    uint8_t top_pc;             /* engine: the spec's next top-level round
                                   (at most SPEC_MAX_ROUNDS) */
    uint8_t status;             /* a council_status */
    unsigned rounds_completed;
    unsigned next_round_idx;
    /* run_id, topic, council, registry, the input's tag, data and text,
     * and user_opts are NUL-terminated copies in the run's own block (a
     * run with its own topic has its id as that topic's tail, a
     * sub-council's run its topic right after its id: see run_topic);
     * council, registry and the tag point at the spec's id or a static
     * default instead when they are the same */
    uint32_t run_id_len;        /* at most 65536 */
    uint32_t topic_len;
    char *run_id;
    const char *council;
    const char *registry;
    council_spec *spec;
    council_input input;        /* points into strings */
    void *user_opts;            /* NULL when none was given */
    void *user_data;
    int64_t started_at;
    uint64_t seq;
    run_out *out;               /* NULL until it produced something */
    /* engine */
    struct frame *frames;       /* iterate rounds being walked, innermost
                                   first */
    struct round_state *round;  /* the round in progress, NULL between */
    struct council_route *route; /* engine: the router asked who takes part
                                   in the next round, while it decides */
    union {
        cx_timer kick;          /* schedules engine_pump (run_kick, or
                                   deferred by run_yield); fini once ended */
        struct {                /* once ended (the kick fini'd): retention */
            void *kick_owner;   /* the kick's owner: NULL since its fini */
            struct council_run *ret_prev, *ret_next; /* ctx retained list */
            uint64_t ret_expires; /* loop time (ms) its retention ends */
        };
    };
    council_run_end_cb end_cb;  /* the first end watcher (NULL: none), */
    void *end_arg;
    council_run_end_cb change_cb; /* the first change watcher (NULL: none;
                                     the NIF keeps one per run), */
    void *change_arg;
    watcher *watchers;          /* then any others, in order */
    struct council_call *calls; /* live calls of this run (list) */
};

/* What member i has said so far (nothing before the run's out exists). */
static inline const member_said *run_said(const council_run *run, size_t i)
{
    static const member_said nothing;
    return run->out ? &run->out->said[i] : &nothing;
}

/* run.c */
/* round, rtype and member are borrowed: names that live as long as the run. */
void run_publish(council_run *run, council_event_type type, const char *round,
                 int idx, const char *rtype, const char *member,
                 const char *chunk, size_t chunk_len, const void *payload);
/* Add an error to the run's result: its words from fmt, and its data
 * (council_error_info; kind, member and round borrowed: static or names
 * that live as long as the run; member and round may be NULL). */
void run_add_error(council_run *run, council_fail_kind kind, const char *member,
                   const char *round, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void run_finish(council_run *run, council_status status);
void run_kick(council_run *run);    /* schedule engine_pump on the loop */
/* schedule engine_pump after the loop has polled for I/O (cx_timer_defer):
 * how the engine yields between rounds */
void run_yield(council_run *run);
int run_push_round(council_run *run, rres *rr);  /* completed list (rr owned) */
int run_own_round(council_run *run, rres *rr);   /* owned list; COUNCIL_ENOMEM */
/* The run's out, made now if need be; NULL when out of memory, and for an
 * ended run that has none (its result stays the empty one it ended with). */
run_out *run_out_make(council_run *run);
/* The completed rounds: how many, round i (i < that), the last (NULL
 * when none). */
size_t run_n_rounds(const council_run *run);
rres *run_round(const council_run *run, size_t i);
rres *run_last_round(const council_run *run);
void run_detach_all(council_ctx *ctx);
/* A run that publishes on topic and is not registered (sub-councils). */
int run_create_sub(council_ctx *ctx, const council_start_opts *opts,
                   const char *topic, size_t topic_len, council_run **out);
const char *run_topic(const council_run *run, size_t *len);

/* results.c */
void mres_set_text(mres *m, const char *text, size_t len);
void mres_set_error(mres *m, const char *msg);
void mres_set_parsed(mres *m, json_t *parsed); /* steals */
/* A round result with n member results, in one block. name, type and the
 * member ids (rres_set_member_id, before the result is read) are borrowed:
 * they must live as long as the run (its spec's names, or static). NULL
 * when out of memory. */
rres *rres_new(const char *name, unsigned idx, const char *type, size_t n);
void rres_set_member_id(rres *r, size_t i, const char *member_id);
void rres_free(rres *r);
void rres_set_aggregate(rres *r, json_t *agg); /* steals */
void rres_set_text(rres *r, const char *text, size_t len);

/* -------------------------------------------------------------- calls */

typedef enum call_state { CALL_WAITING = 0, CALL_ACTIVE, CALL_DONE } call_state;

struct task; /* engine.c */

struct council_call {
    int refs;
    uint32_t retry_after_ms;   /* the server's wish, 0 = none (at most
                                  CALL_MAX_RETRY_AFTER_MS) */
    unsigned round_idx;
    uint16_t attempt;          /* at most SPEC_LIMIT_MAX_ATTEMPTS */
    uint8_t fail_kind;         /* council_fail_kind of the failure reported
                                  (transient unless the provider said
                                  otherwise) */
    uint8_t state : 2;         /* call_state */
    bool timed_out : 1;        /* the core ended it at its timeout */
    uint32_t timeout_ms;       /* at most UINT32_MAX (49 days): longer ones
                                  are cut to that */
    uint32_t streamed;         /* bytes of tokens so far (at most
                                  UINT32_MAX: more is over any cap, see
                                  council_call_token) */
    council_run *run;          /* ref held */
    struct council_call *prev, *next;
    struct task *task;         /* NULL once finished/abandoned */
    provider *prov;
    const spec_member *member; /* the spec's (id, options as text and
                                  parsed); the run keeps it alive */
    const char *round_name;    /* the spec's (or "chair") */
    const char *round_type;
    json_t *request;           /* before start(), or on first use */
    char *request_text;        /* made on first council_call_request */
    uint64_t id;
    cx_timer timer;            /* backoff, then timeout (or first a wake,
                                  call_wake_after) */
    void (*wake)(struct council_call *); /* armed on timer: call_wake_after */
    void *prov_state;          /* for built-in providers */
    uint64_t began_us;         /* when start() was called (uv_hrtime in
                                  us), 0 before */
};

/* call.c */
#define CALL_MAX_RETRY_AFTER_MS 600000u
/* A new call (state WAITING) with one reference for the core. Its
 * request is built from the task (engine_request) when needed, while the
 * call is not finished. NULL when out of memory. */
council_call *call_new(council_run *run, struct task *task, provider *prov,
                       const spec_member *m, const char *round_name,
                       unsigned round_idx, const char *round_type,
                       unsigned attempt, uint64_t timeout_ms);
/* Start the call after delay_ms (0: now, synchronously). */
void call_launch(council_call *call, uint64_t delay_ms);
void call_abandon(council_call *call, const char *why); /* cancel, no result */
/* For the core's own providers: cb(call) runs ms from now on the call's
 * own timer, instead of a timer of the provider's (an idle run's mock
 * member waiting for its latency then holds nothing but its call). cb
 * should end the call (complete or fail it); if it does not, the timeout
 * is armed again for what is left of it. From the provider's start() (the
 * call ACTIVE), once per call. false, with nothing armed, when ms is not
 * below the call's timeout: the timeout would come first. */
bool call_wake_after(council_call *call, uint64_t ms, void (*cb)(council_call *));

/* router.c. The conditions a rule's "when" may hold (schema.c lists them). */
#define ROUTER_N_CONDITIONS 3
extern const char *const router_conditions[ROUTER_N_CONDITIONS];
/* spec: compile a "router" value at path (field names for
 * errors) into *out; free one. */
int router_compile(council_spec *s, json_t *v, const char *path, spec_router **out,
                   council_spec_error *err);
void router_free(spec_router *r);
/* whether a registered router of that name exists */
bool ctx_router_known(council_ctx *ctx, const char *name);
void routers_release(council_ctx *ctx); /* ctx free */
/* engine: begin choosing the members of a round among cand (a mask): a
 * route, put in *slot before its router is asked (the router may end the
 * run, whose engine_cancel then ends the route through *slot), decided at
 * once (rules) or when the router answers (the run is kicked then).
 * COUNCIL_ENOMEM (nothing made) or 0. */
int route_begin(council_run *run, const spec_router *r, uint64_t cand,
                const char *round_name, unsigned round_idx, const char *type_name,
                struct council_route **slot);
/* 0: waiting; 1: chosen (*members); -1: failed (*error, borrowed from
 * the route; *kind: transient when the router did not answer in time,
 * else permanent) */
int route_outcome(const struct council_route *rt, uint64_t *members, const char **error,
                  council_fail_kind *kind);
/* abandon (cancel() if still waiting) and drop the engine's reference */
void route_end(struct council_route *rt);

/* engine.c: the request a task's call sees (new reference; NULL when out
 * of memory). Only while the call's round is in progress. */
json_t *engine_request(struct task *task, const council_call *call);
/* engine.c: what the "answers" of that request would list, without
 * making it: labels[i] is item i's "label", NULL for an item keyed by
 * "member_id" (at most max written). Returns how many items there are.
 * Same lifetime rule as engine_request. */
size_t engine_answer_labels(const struct task *task, const char **labels, size_t max);
/* engine.c: the call reports its outcome. ok=true: text; else error. */
void engine_call_done(struct task *task, council_call *call, bool ok,
                      const char *text, size_t len, const char *error);
void engine_call_token(struct task *task, council_call *call,
                       const char *chunk, size_t len);
void engine_call_usage(struct task *task, const council_usage *u);
void engine_call_tool(struct task *task, council_event_type type,
                      const council_tool_event *t);
void engine_pump(council_run *run);
void engine_cancel(council_run *run); /* abandon every call, free state */
void engine_free(council_run *run);

/* run_quota.c: a slot of q for a new run (true; q NULL: always), or
 * false when q is full; and the slot back. Any thread. */
bool run_quota_take(council_run_quota *q);
void run_quota_give(council_run_quota *q);

#endif
