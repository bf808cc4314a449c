/* council.h - the public C API of the CouncilEx native core.
 *
 * What it is for: defining councils (a spec), starting runs of them,
 * reading their state and results, subscribing to their events, and
 * plugging in member providers written in C. The same core serves the C
 * node (Erlang distribution) and C/C++ hosts that have no BEAM at all.
 *
 * Model in one paragraph. A council_ctx owns one libuv loop, the run
 * registry and the pub/sub. Everything happens on the thread that drives
 * that loop (council_ctx_run or council_ctx_step); only council_ctx_stop,
 * council_ctx_wakeup and council_ctx_cancel_async may be called from other
 * threads. A council_spec says
 * who the members are and which rounds they go through. A council_run is
 * one execution of a spec on an input; it moves pending -> running ->
 * completed | failed | cancelled and publishes council_event objects on the
 * topic "council_ex:run:" <run_id> as it goes.
 *
 * Conventions.
 *  - Every function that can fail returns 0 (COUNCIL_OK) or a negative
 *    council_err; nothing is half done when an error is returned.
 *  - Handles are opaque and reference counted where several owners make
 *    sense (spec, run, event, call); *_ref adds one, *_unref drops one.
 *  - Strings are NUL-terminated UTF-8 unless a length parameter comes with
 *    them; byte strings (run ids, chunks, texts) always carry a length and
 *    are also NUL-terminated for convenience.
 *  - Pointers returned by accessors are borrowed from their handle and stay
 *    valid while the caller holds a reference to that handle (for a run:
 *    results of finished rounds never change; the in-progress parts may be
 *    replaced when the loop runs again).
 *
 * The council spec JSON format is described in docs/spec-format.md.
 */
#ifndef COUNCIL_H
#define COUNCIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions of this header: the only symbols the shared library
 * exports (the core is built with -fvisibility=hidden). */
#if defined(__GNUC__) || defined(__clang__)
#define COUNCIL_API __attribute__((visibility("default")))
#else
#define COUNCIL_API
#endif

/* ------------------------------------------------------------------ errors */

/* Error codes. Every function that can fail returns 0 (COUNCIL_OK) or one of
 * these negative values; council_strerror() names them. */
typedef enum council_err {
    COUNCIL_OK = 0,
    COUNCIL_EINVAL = -1,        /* bad argument */
    COUNCIL_ENOMEM = -2,        /* allocation failed; nothing changed */
    COUNCIL_ELIMIT = -3,        /* a configured limit was reached */
    COUNCIL_EEXIST = -4,        /* run_id already registered */
    COUNCIL_ENOTFOUND = -5,     /* no such run (or it left retention) */
    COUNCIL_EUNKNOWN_RUN = -6,  /* whereis: nothing registered */
    COUNCIL_ERUNNER_DEAD = -7,  /* whereis: entry remains, run has ended */
    COUNCIL_ESPEC = -8,         /* invalid council spec (see error detail) */
    COUNCIL_ESTATE = -9,        /* operation not valid in the run's state */
    COUNCIL_EPROVIDER = -10,    /* unknown provider or provider failure */
    COUNCIL_ETIMEOUT = -11,     /* member call timed out */
    COUNCIL_ECANCELLED = -12,   /* run or call cancelled */
    COUNCIL_EPARSE = -13,       /* unparsable JSON / vote / ranking */
    COUNCIL_ETOOBIG = -14,      /* size limit (spec, output, frame) */
    COUNCIL_EIO = -15,          /* system call failed */
    COUNCIL_ERUNNING = -16      /* result asked for while still running */
} council_err;

/* Static, never NULL, for any int (unknown codes give "unknown error").
 * Any thread. */
COUNCIL_API const char *council_strerror(int err);

/* ----------------------------------------------------------------- context */

typedef struct council_ctx council_ctx;

/* Limits and defaults of a context. A zero field means "use the default"
 * (shown in brackets). Every limit, when reached, makes the call that hit
 * it return COUNCIL_ELIMIT or COUNCIL_ETOOBIG; nothing aborts. */
typedef struct council_config {
    size_t max_runs;                  /* runs pending or running at once [10000] */
    size_t max_retained;              /* finished runs kept readable [100000];
                                         the oldest leaves early when full */
    size_t max_subscribers_per_topic; /* [1024] */
    size_t max_spec_bytes;            /* JSON spec size [1 MiB] */
    uint64_t retention_ms;            /* how long a finished run stays readable [300000] */
    size_t subscriber_queue_cap;      /* undelivered events per subscriber [4096] */
    uint64_t member_timeout_ms;       /* default per member call [60000]; a
                                         call's timeout is at most 2^32-1 ms
                                         (49 days), longer ones are cut */
    size_t output_cap;                /* bytes of answer per member call [1 MiB];
                                         streamed tokens stop at 4 GiB
                                         whatever the cap */
} council_config;

/* Fills every zero field of cfg with its default (the values in brackets
 * above), as council_ctx_new does with the config it is given: what a
 * context made from cfg would use. A host that shares a limit out between
 * contexts (council_run_quota) reads the defaults here. cfg not NULL. Any
 * thread. */
COUNCIL_API void council_config_defaults(council_config *cfg);

/* Create a context with its own libuv loop, registry and pub/sub. cfg may be
 * NULL (all defaults); it is copied. The built-in providers "mock", "exec"
 * and "council" (a member that is itself a council, run as a sub-council
 * publishing on "council_ex:run:" <parent_id> ":sub:" <member_id>) are
 * registered. SIGPIPE is set to ignored if it was at its default
 * disposition (exec children closing their stdin early must not kill the
 * host). Returns NULL when out of memory or when libuv cannot create the
 * loop. The returned context belongs to the caller: council_ctx_free. */
COUNCIL_API council_ctx *council_ctx_new(const council_config *cfg);

/* Cancel every unfinished run (their terminal events are published but not
 * delivered), kill exec children (and wait until they are reaped), drop
 * every subscription and registry entry, close the loop and free the
 * context. Handles a host put on the loop should be closed first; any left
 * are closed without their close callback. Run handles the caller still
 * holds stay readable and must still be released with council_run_unref;
 * they are cancelled, so council_run_cancel returns COUNCIL_OK; every other
 * operation on them returns COUNCIL_ESTATE. Loop thread only;
 * not from inside a callback of this context. NULL is a no-op. */
COUNCIL_API void council_ctx_free(council_ctx *ctx);

/* Run the loop until council_ctx_stop is called or nothing is left to do
 * (no run in progress, no event waiting for delivery). Finished runs in
 * retention do not keep it running. Returns COUNCIL_OK, or COUNCIL_ESTATE
 * when called re-entrantly from a callback. */
COUNCIL_API int council_ctx_run(council_ctx *ctx);

/* One step for hosts embedding the context in their own loop: process what
 * is ready, waiting at most timeout_ms for something to happen (0 = do not
 * wait, -1 = wait until something happens). Returns 1 if work remains, 0 if
 * the loop is idle, COUNCIL_ESTATE when called re-entrantly. Poll
 * council_ctx_backend_fd for readability to know when to step again. A run
 * goes at most one round further per step when its members answer at once
 * (the loop polls for I/O between rounds), so keep stepping while this
 * returns 1; such a step does not wait for timeout_ms. */
COUNCIL_API int council_ctx_step(council_ctx *ctx, int timeout_ms);

/* The loop's backend file descriptor (epoll), readable when a step has work.
 * Returns -1 when the platform has none. */
COUNCIL_API int council_ctx_backend_fd(council_ctx *ctx);

/* The context's uv_loop_t * (as void * so this header needs no uv.h). The
 * C node puts its sockets on it. Borrowed; valid until council_ctx_free. */
COUNCIL_API void *council_ctx_uv_loop(council_ctx *ctx);

/* Ask council_ctx_run to return soon (runs keep their state; a later
 * council_ctx_run or council_ctx_step continues them). Any thread, and
 * async-signal-safe (an atomic store and uv_async_send). A stop requested
 * while the loop is not running makes the next council_ctx_run return at
 * once (a council_ctx_step in between consumes it). */
COUNCIL_API void council_ctx_stop(council_ctx *ctx);

/* Wake the loop up (e.g. after a host queued work for it). Any thread;
 * async-signal-safe. */
COUNCIL_API void council_ctx_wakeup(council_ctx *ctx);

/* Cancel a run from any thread: the request (registry NULL = default, and
 * run_id's len bytes, both copied) is queued and carried out on the loop
 * thread at its next iteration, or at the start of the next
 * council_ctx_run / council_ctx_step, exactly as council_run_cancel would (a run
 * that is unknown or already finished then is left as it is). Requests are
 * carried out in the order they were made. Returns COUNCIL_OK once queued,
 * COUNCIL_EINVAL (NULL ctx or run_id, len 0 or over 64 KiB), COUNCIL_ENOMEM.
 * Any thread, but not async-signal-safe (it allocates and takes a mutex);
 * the context must not be freed while the call is in progress. */
COUNCIL_API int council_ctx_cancel_async(council_ctx *ctx, const char *registry,
                             const void *run_id, size_t len);

/* The context's own environment variables, read by the core in place of
 * the process environment's: the API key variables that members name
 * (api_key_env, or a provider's default) and the proxy variables
 * (https_proxy, http_proxy, all_proxy, no_proxy, lower or upper case, read
 * as curl reads them). A name set here wins; one not set here is looked up
 * with getenv(3). For hosts that must not call setenv(3) while other
 * threads may call getenv(3) (a NIF inside the VM), and to give one
 * context keys that the process as a whole does not see.
 * value NULL removes name from the context (getenv answers for it again).
 * Values are copied; the copies are wiped when replaced, removed, or at
 * council_ctx_free. A change applies to member calls started after it.
 * Loop thread. Returns COUNCIL_OK; COUNCIL_EINVAL if name is NULL, empty,
 * holds '=' or is over 255 bytes, or value is over 65535 bytes;
 * COUNCIL_ENOMEM (nothing changed). */
COUNCIL_API int council_ctx_setenv(council_ctx *ctx, const char *name, const char *value);

/* A limit on runs in progress shared by several contexts (a host that
 * drives contexts side by side on different threads and wants one
 * max_runs over all of them). A context given a quota counts every run it
 * creates, sub-council runs included, against the quota's max as well as
 * against its own max_runs, and gives the slot back when the run ends (or
 * its creation fails); council_run_create answers COUNCIL_ELIMIT when
 * either is full. The count is atomic: contexts on different threads may
 * share one quota. */
typedef struct council_run_quota council_run_quota;

/* A quota of max runs in progress (0: no limit). NULL when out of memory.
 * The caller frees it with council_run_quota_free once no context uses it
 * (every context given it has been freed). Any thread. */
COUNCIL_API council_run_quota *council_run_quota_new(size_t max);

/* Changes the quota's max (0: no limit); runs already counted stay (a
 * max below the count refuses new runs until enough have ended). Any
 * thread. */
COUNCIL_API void council_run_quota_set_max(council_run_quota *q, size_t max);

/* The runs counted against the quota now. Any thread. */
COUNCIL_API size_t council_run_quota_used(const council_run_quota *q);

/* Frees q. NULL is a no-op. */
COUNCIL_API void council_run_quota_free(council_run_quota *q);

/* Makes ctx count its runs against q from now on (NULL: none). Only while
 * ctx has no run in progress (else COUNCIL_ESTATE); q must outlive ctx's
 * use of it. Loop thread. COUNCIL_OK, COUNCIL_EINVAL (ctx NULL),
 * COUNCIL_ESTATE. */
COUNCIL_API int council_ctx_set_run_quota(council_ctx *ctx, council_run_quota *q);

/* Counts for monitoring: runs registered (including retained ones), runs in
 * progress, subscriptions. Loop thread. */
typedef struct council_stats {
    size_t runs_registered;
    size_t runs_active;
    size_t subscriptions;
} council_stats;
COUNCIL_API void council_ctx_stats(const council_ctx *ctx, council_stats *out);

/* -------------------------------------------------------------------- spec */

typedef struct council_spec council_spec;

/* Where a spec is wrong: field is a path such as "rounds[2].type" or
 * "members[0].options.argv", message says what is wrong with it. */
typedef struct council_spec_error {
    char field[128];
    char message[192];
} council_spec_error;

/* Per-spec limits. Zero = default. */
typedef struct council_limits {
    uint64_t member_timeout_ms; /* per call attempt [context member_timeout_ms] */
    unsigned max_attempts;      /* attempts per member call [1] */
    uint64_t backoff_ms;        /* wait before attempt n+1: backoff_ms * n [0] */
    unsigned concurrency;       /* member calls in flight per run [unbounded] */
} council_limits;

/* New empty spec with the given id (copied; NULL or "" is refused later by
 * validation). The caller owns the one reference. Returns NULL when out of
 * memory. A spec is built with the council_spec_add_* calls, then frozen by
 * council_spec_validate or by its first use in a run; a frozen spec is
 * immutable and may be shared by any number of runs. */
COUNCIL_API council_spec *council_spec_new(const char *id);

/* Add a member. id and provider are copied. options_json is a JSON object
 * text (NULL = {}), parsed and copied. Returns COUNCIL_EINVAL (NULL spec,
 * id or provider; id or provider not UTF-8), COUNCIL_EPARSE (options not a JSON object), COUNCIL_ESTATE
 * (spec frozen), COUNCIL_ENOMEM. Duplicates are reported by validation. */
COUNCIL_API int council_spec_add_member(council_spec *spec, const char *id,
                            const char *provider, const char *options_json);

/* Add a round at the end. type is one of the names in docs/spec-format.md;
 * name may be NULL (the type is the name); options_json as for members.
 * An "iterate" round takes its nested rounds in options: {"rounds": [...],
 * "max_iterations": n, "until": "consensus"}. Errors as for add_member. */
COUNCIL_API int council_spec_add_round(council_spec *spec, const char *type,
                           const char *name, const char *options_json);

/* Set the chair (a member id, copied; NULL removes it). Errors:
 * COUNCIL_ESTATE (frozen), COUNCIL_ENOMEM. */
COUNCIL_API int council_spec_set_chair(council_spec *spec, const char *member_id);

/* Set the council's router (docs/spec-format.md "Routers"; council.h
 * "routers"): router_json is its JSON value as text, e.g. "\"by_topic\""
 * or "{\"rules\": [...]}" (parsed and copied; checked by validation);
 * NULL removes it. A round's router goes in its options ("router").
 * Errors: COUNCIL_EINVAL (NULL spec), COUNCIL_EPARSE (not JSON),
 * COUNCIL_ESTATE (frozen), COUNCIL_ENOMEM. */
COUNCIL_API int council_spec_set_router(council_spec *spec, const char *router_json);

/* Set the limits (copied; checked by validation). Errors: COUNCIL_ESTATE
 * (frozen), COUNCIL_EINVAL (NULL spec or limits), COUNCIL_ENOMEM. */
COUNCIL_API int council_spec_set_limits(council_spec *spec, const council_limits *limits);

/* Check the spec and freeze it. On COUNCIL_ESPEC, *err (if not NULL) names
 * the field and the problem. Validating a frozen spec returns COUNCIL_OK.
 * Also COUNCIL_ENOMEM. */
COUNCIL_API int council_spec_validate(council_spec *spec, council_spec_error *err);

/* Parse and validate a JSON spec of len bytes (need not be NUL-terminated).
 * On success *out receives a frozen spec with one reference for the caller.
 * Errors: COUNCIL_EPARSE (not JSON; err->field is "$" and the message has
 * the position), COUNCIL_ESPEC (err names the field), COUNCIL_ETOOBIG
 * (len over 16 MiB), COUNCIL_EINVAL (NULL json or out), COUNCIL_ENOMEM.
 * err may be NULL. Any thread (touches no context). */
COUNCIL_API int council_spec_from_json(const char *json, size_t len, council_spec **out,
                           council_spec_error *err);

/* As council_spec_from_json, but len over the context's max_spec_bytes is
 * COUNCIL_ETOOBIG (err->field "$"). */
COUNCIL_API int council_ctx_spec_from_json(council_ctx *ctx, const char *json, size_t len,
                               council_spec **out, council_spec_error *err);

/* The spec as JSON text (the format of docs/spec-format.md, normalised).
 * Returns a malloc'ed string the caller frees with free(), or NULL when
 * out of memory. */
COUNCIL_API char *council_spec_to_json(const council_spec *spec);

/* The spec's id (borrowed from the spec; NULL if none was given) and its
 * number of members. Never fail. */
COUNCIL_API const char *council_spec_id(const council_spec *spec);
COUNCIL_API size_t council_spec_member_count(const council_spec *spec);

/* Add a reference (returns spec) / drop one; the last drop frees the spec.
 * Runs hold their own reference, so a caller may drop its reference right
 * after council_run_create. NULL is a no-op for both. Not thread-safe: a
 * spec is used from one thread (the loop's) at a time. */
COUNCIL_API council_spec *council_spec_ref(council_spec *spec);
COUNCIL_API void council_spec_unref(council_spec *spec);

/* -------------------------------------------------------------------- runs */

typedef struct council_run council_run;

typedef enum council_status {
    COUNCIL_PENDING = 0,
    COUNCIL_RUNNING,
    COUNCIL_COMPLETED,
    COUNCIL_FAILED,
    COUNCIL_CANCELLED
} council_status;

/* "pending", "running", "completed", "failed", "cancelled". Static. */
COUNCIL_API const char *council_status_name(council_status s);

/* The run's input: opaque bytes with a tag saying what they are (e.g.
 * "text", "etf"), and an optional text view that providers see as the
 * request's "input". If text is NULL and tag is "text", the bytes are the
 * text. */
typedef struct council_input {
    const char *tag;
    const void *data;
    size_t len;
    const char *text;
    size_t text_len;
} council_input;

#define COUNCIL_DEFAULT_REGISTRY "CouncilEx.Runner.Registry"
#define COUNCIL_TOPIC_PREFIX "council_ex:run:"

typedef struct council_start_opts {
    const char *registry;   /* NULL = COUNCIL_DEFAULT_REGISTRY */
    const void *run_id;     /* NULL = generated: 16 random bytes, base64url */
    size_t run_id_len;
    const char *council;    /* NULL = the spec's id */
    council_spec *spec;     /* required; borrowed (the run takes a reference) */
    council_input input;    /* copied */
    const void *user_opts;  /* opaque bytes, copied; may be NULL */
    size_t user_opts_len;
} council_start_opts;

/* Create a PENDING run and register it under (registry, run_id), so that a
 * caller can subscribe to its topic before it starts. Everything in opts is
 * copied; the spec is validated (frozen) if it was not. *out receives a run
 * with one reference for the caller (the registry holds its own).
 * Errors: COUNCIL_EINVAL (NULL ctx/opts/spec/out, empty run_id, context
 * being freed), COUNCIL_ETOOBIG (run_id over 64 KiB, user_opts of 4 GiB
 * or more), COUNCIL_ESPEC
 * (spec invalid), COUNCIL_EPROVIDER (a member names an unregistered
 * provider, or a program council_ctx_set_exec_allow does not allow), COUNCIL_EEXIST (run_id taken in that registry; covers retained
 * runs), COUNCIL_ELIMIT (max_runs), COUNCIL_ENOMEM. Loop thread. */
COUNCIL_API int council_run_create(council_ctx *ctx, const council_start_opts *opts,
                       council_run **out);

/* Whether the spec can run in ctx: every member names a provider
 * registered there, and every program it names is allowed
 * (council_ctx_set_exec_allow). COUNCIL_OK, or COUNCIL_EPROVIDER with err
 * (may be NULL) naming the first bad field and what is wrong with it:
 * "members[2].provider" and the provider, or "members[0].options.argv"
 * (also "members[1].options.tools[0].exec", and the fields of a
 * sub-council under "members[3].options.spec.") and "program not
 * allowed"; every router it names must be registered too
 * (council_router_register): "router", "rounds[1].options.router" and
 * the name. The spec is validated first (council_spec_validate, which
 * freezes it; an invalid one gives its COUNCIL_ESPEC and err).
 * COUNCIL_EINVAL for NULL ctx or spec. council_run_create makes the same
 * check. Loop thread. */
COUNCIL_API int council_ctx_check_providers(council_ctx *ctx, council_spec *spec,
                                council_spec_error *err);

/* Which programs exec members and exec tools may run in ctx. A new
 * context runs any program (paths NULL, n 0 restores that). Otherwise only
 * those under paths: n entries, each a program (that file) or a directory
 * (any program below it, at any depth); n 0 allows none. Each entry is
 * resolved once, here, with realpath (symlinks, "..", relative to the
 * current directory). A program a spec names is resolved the way it will
 * be run: a bare name on PATH (as execvp finds it), a relative path from
 * the member's options.cwd when it has one, then realpath; the program
 * started is that real path, so a link changed after the check cannot lead
 * elsewhere. A spec naming another program is refused when a run is
 * created (COUNCIL_EPROVIDER, see council_ctx_check_providers); a call that
 * gets past that anyway (a sub-council's spec) fails with "exec: program
 * not allowed". Returns COUNCIL_OK, COUNCIL_EINVAL (NULL ctx, paths NULL
 * with n > 0, an entry that is empty, does not exist or is neither a
 * regular file nor a directory: nothing changed), COUNCIL_ENOMEM. Loop
 * thread; runs already created keep running their programs. */
COUNCIL_API int council_ctx_set_exec_allow(council_ctx *ctx, const char *const *paths,
                                           size_t n);

/* Start a pending run: publishes run_started and schedules the first round
 * on the loop (nothing is called synchronously). Errors: COUNCIL_ESTATE
 * (not pending). Loop thread. */
COUNCIL_API int council_run_begin(council_run *run);

/* council_run_create then council_run_begin. Same errors as create. */
COUNCIL_API int council_run_start(council_ctx *ctx, const council_start_opts *opts,
                      council_run **out);

/* Cancel the run at once, in any state: running calls are abandoned
 * (native providers get their cancel callback, exec children are killed
 * with SIGKILL), the status becomes cancelled and run_cancelled is
 * published; watchers fire. Idempotent: a finished run is left as it is and
 * COUNCIL_OK is returned. COUNCIL_EINVAL for NULL. Loop thread. */
COUNCIL_API int council_run_cancel(council_run *run);

/* Add a reference (returns run) / drop one. The run is freed when the last
 * reference goes: the caller's, the registry's (held until retention ends),
 * events' and calls' in flight. NULL is a no-op. Loop thread. */
COUNCIL_API council_run *council_run_ref(council_run *run);
COUNCIL_API void council_run_unref(council_run *run);

/* Look up a run by id (len bytes) in a registry (NULL = default).
 *   council_whereis: COUNCIL_OK and *out (borrowed; council_run_ref to keep)
 *     when the run is pending or running; COUNCIL_ERUNNER_DEAD when the entry
 *     is still retained but the run has ended (*out is still set);
 *     COUNCIL_EUNKNOWN_RUN when nothing is registered.
 *   council_run_find: COUNCIL_OK for any registered run, including finished
 *     ones in retention; COUNCIL_ENOTFOUND otherwise.
 * out may be NULL. Loop thread. */
COUNCIL_API int council_whereis(council_ctx *ctx, const char *registry,
                    const void *run_id, size_t len, council_run **out);
COUNCIL_API int council_run_find(council_ctx *ctx, const char *registry,
                     const void *run_id, size_t len, council_run **out);

/* The curated state of a run. Strings are borrowed from the run. */
typedef struct council_summary {
    const char *run_id;
    size_t run_id_len;
    const char *council;
    const char *registry;
    council_status status;
    const char *current_round;  /* NULL when no round is running */
    unsigned current_round_idx;
    unsigned rounds_completed;
    int64_t started_at_us;      /* UTC microseconds; 0 while pending */
} council_summary;

/* Fill *out (strings borrowed from the run). current_round is the
 * innermost round in progress (an iterate round between its nested
 * rounds). Never fails. Loop thread. */
COUNCIL_API void council_run_summary(const council_run *run, council_summary *out);

/* state by id: COUNCIL_OK and *out filled (strings borrowed until the loop
 * runs again; out may be NULL), or COUNCIL_ENOTFOUND. Loop thread. */
COUNCIL_API int council_run_state(council_ctx *ctx, const char *registry,
                      const void *run_id, size_t len, council_summary *out);

/* Read-only accessors. Pointers are borrowed from the run and valid while
 * the caller holds a reference; none of them fails. council_run_id gives
 * the id bytes (NUL-terminated too) and their length in *len (if len is
 * not NULL); council_run_user_opts likewise (NULL when none was given).
 * Loop thread (or any thread while the loop is not running). */
COUNCIL_API council_status council_run_status(const council_run *run);
COUNCIL_API const char *council_run_id(const council_run *run, size_t *len);
COUNCIL_API const char *council_run_council(const council_run *run);
COUNCIL_API const char *council_run_registry(const council_run *run);
COUNCIL_API const council_spec *council_run_spec(const council_run *run);
COUNCIL_API const council_input *council_run_input(const council_run *run);
COUNCIL_API const void *council_run_user_opts(const council_run *run, size_t *len);
COUNCIL_API council_ctx *council_run_ctx(const council_run *run); /* NULL after ctx free */

/* Host data: an opaque pointer the core never touches (the C node keeps
 * its process record here). Never fails. Loop thread. */
COUNCIL_API void council_run_set_user_data(council_run *run, void *data);
COUNCIL_API void *council_run_get_user_data(const council_run *run);

/* Watch for the end of a run: cb(run, arg) is called once, synchronously,
 * right after the terminal event was published (it may not yet be
 * delivered). Several watchers fire in registration order. Errors:
 * COUNCIL_EINVAL (NULL run or cb), COUNCIL_ESTATE (already terminal: cb is
 * not registered; the caller acts at once), COUNCIL_ENOMEM. council_run_unwatch removes the first watcher
 * with this (cb, arg); COUNCIL_ENOTFOUND if none. Loop thread; a watcher may
 * call any API except council_ctx_free. */
typedef void (*council_run_end_cb)(council_run *run, void *arg);
COUNCIL_API int council_run_watch(council_run *run, council_run_end_cb cb, void *arg);
COUNCIL_API int council_run_unwatch(council_run *run, council_run_end_cb cb, void *arg);

/* Watch a run's summary (council_run_summary) change: cb(run, arg) is
 * called synchronously right after the run begins and each time a round
 * starts or completes (the summary already says so; the event is being
 * published and may not be delivered yet), until the run ends: the end is
 * for the end watchers (council_run_watch), and the change watchers are
 * dropped then. A host that answers summary reads away from the loop
 * keeps its copy fresh this way without a subscription. cb may only read
 * the run (council_run_summary, council_run_status, ...). Errors as
 * council_run_watch's. council_run_unwatch_changes removes the first one
 * with this (cb, arg): COUNCIL_OK, or COUNCIL_ENOTFOUND (none, or the run
 * has ended). Loop thread. */
COUNCIL_API int council_run_watch_changes(council_run *run, council_run_end_cb cb, void *arg);
COUNCIL_API int council_run_unwatch_changes(council_run *run, council_run_end_cb cb, void *arg);

/* ----------------------------------------------------------------- results */

/* Token usage as model APIs report it. A member result sums the usage of
 * every attempt and tool turn of its call(s); a round result sums its
 * members'; a run result sums everything the run used (failed attempts,
 * retries and sub-councils' members included). */
typedef struct council_usage {
    uint64_t input_tokens;
    uint64_t output_tokens;
    double cost;             /* as the API reports it (OpenRouter: USD); 0 if none */
    unsigned reports;        /* responses that reported usage (0: none known) */
    int has_cost;            /* 1 when at least one response gave a cost */
} council_usage;

/* How a member call failed. Transient failures are retried (exponential
 * backoff with jitter from limits.backoff_ms, or the server's Retry-After
 * when longer) while limits.max_attempts allows; the others never are. */
typedef enum council_fail_kind {
    COUNCIL_FAIL_TRANSIENT = 0, /* refused/reset connection, timeout, 408/409/425/429/5xx, cut stream */
    COUNCIL_FAIL_PERMANENT,     /* 401/403, unknown model, other 4xx, body over the cap */
    COUNCIL_FAIL_VALIDATION,    /* the response is not in the API's format */
    COUNCIL_FAIL_CANCELLED      /* the run was cancelled */
} council_fail_kind;

/* "transient", "permanent", "validation", "cancelled". Static. */
COUNCIL_API const char *council_fail_kind_name(council_fail_kind k);

/* What became of a member in a round (a member result's status). */
typedef enum council_member_status {
    COUNCIL_MEMBER_OK = 0,         /* it answered (in a ballot round: a valid ballot) */
    COUNCIL_MEMBER_ERROR,          /* it failed for good: error and error_kind say why */
    COUNCIL_MEMBER_TIMEOUT,        /* as ERROR, its last attempt timed out (error_kind
                                      "transient") */
    COUNCIL_MEMBER_SKIPPED,        /* not called: left out of the round by its
                                      options.members or its router (attempts 0;
                                      see "routers" below), or its call was
                                      abandoned or never made because the round ended
                                      first (failure_mode fail_fast); no error */
    COUNCIL_MEMBER_INVALID_OUTPUT, /* as ERROR, its answer was not usable: a ballot that
                                      does not parse, a response not in the API's
                                      format (error_kind "validation") */
    COUNCIL_MEMBER_ELIMINATED      /* pairwise_elimination: it voted, and its own answer
                                      lost a match (ok is 1; a member that failed to
                                      vote has its failure's status instead) */
} council_member_status;

/* "ok", "error", "timeout", "skipped", "invalid_output", "eliminated".
 * Static; NULL for a value out of range. */
COUNCIL_API const char *council_member_status_name(council_member_status s);

/* One member's result in one round. A round's members are those it called,
 * in spec order, then those its options.members or its router left out
 * (SKIPPED), in spec order. */
typedef struct council_member_result {
    const char *member_id;
    int ok;                  /* 1: status OK or ELIMINATED; 0: another status */
    const char *text;        /* the answer (NULL if none) */
    size_t text_len;
    unsigned attempts;       /* attempts made (>= 1 once called) */
    const char *error;       /* NULL when ok */
    const char *parsed_json; /* vote/ranking/pairwise: JSON object; else NULL */
    const char *error_kind;  /* NULL when ok; else council_fail_kind_name() of
                                the last failure */
    council_usage usage;
    council_member_status status;
    uint64_t duration_us;    /* member_started to this result (backoff
                                waits included); 0 when skipped */
    uint64_t provider_us;    /* the time its attempts were with the provider,
                                summed (started to answered or failed) */
} council_member_result;

typedef struct council_round_result {
    const char *name;
    unsigned idx;
    const char *type;
    size_t n_members;
    const council_member_result *const *members;
    const char *aggregate_json; /* vote, ranking, pairwise, iterate; else NULL */
    const char *text;           /* the round's text; NULL if none */
    size_t text_len;
    council_usage usage;        /* the sum of its members' */
    uint64_t duration_us;       /* round_started to round_completed (for an
                                   iterate round: all its iterations) */
} council_round_result;

typedef struct council_result {
    const char *final_text;     /* NULL until the run completes with one */
    size_t final_len;
    size_t n_rounds;
    const council_round_result *const *rounds;
    size_t n_errors;
    const char *const *errors;
    council_usage usage;        /* everything the run used so far */
    uint64_t duration_us;       /* run_started to the terminal event (set
                                   when the run ends; 0 before) */
} council_result;

/* What one of a result's errors is about, as data (errors[i] says it in
 * words). kind is council_fail_kind_name() of the failure behind it: a
 * member's error has its member's error_kind; a round that failed has the
 * kind of the member failure that failed it (failure_mode fail_fast), or,
 * when no member succeeded, "transient" if every member failure in it was
 * transient and "permanent" otherwise; any other error of the run (a
 * ballot round with no answers to choose from, out of memory) is
 * "permanent". member_id and round_name are NULL when it is about no
 * member or no round. Strings are borrowed like the result's. */
typedef struct council_error_info {
    const char *kind;
    const char *member_id;
    const char *round_name;
} council_error_info;

/* The data of res->errors[i], for a result of council_run_result (or an
 * event's); NULL when i >= res->n_errors or res is NULL. Borrowed like the
 * result. Loop thread (as the result). */
COUNCIL_API const council_error_info *council_result_error_info(const council_result *res,
                                                               size_t i);

/* The run's result so far (complete once the run is terminal). Borrowed
 * from the run: valid while the caller holds a reference and, while the run
 * is in progress, until the loop runs again. Never NULL. */
COUNCIL_API const council_result *council_run_result(const council_run *run);

/* The result as JSON text {"final","rounds","errors"} (docs/protocol.md
 * "Shapes"). Malloc'ed; the caller frees. NULL when out of memory. */
COUNCIL_API char *council_run_result_json(const council_run *run);

/* ------------------------------------------------------------------ events */

typedef enum council_event_type {
    COUNCIL_EV_RUN_STARTED = 1,
    COUNCIL_EV_ROUND_STARTED,
    COUNCIL_EV_MEMBER_STARTED,
    COUNCIL_EV_MEMBER_TOKEN,
    COUNCIL_EV_MEMBER_COMPLETED,
    COUNCIL_EV_ROUND_COMPLETED,
    COUNCIL_EV_RUN_COMPLETED,
    COUNCIL_EV_RUN_FAILED,
    COUNCIL_EV_RUN_CANCELLED,
    COUNCIL_EV_TOOL_CALL_REQUEST,  /* a model asked for a tool call */
    COUNCIL_EV_TOOL_CALL_RESULT    /* what the tool answered (given back to the model) */
} council_event_type;

/* A tool call as events show it: the model's id for the call, the tool's
 * name, the arguments (JSON text as the model wrote them) and, in
 * tool_call_result, the result text and whether the tool succeeded. */
typedef struct council_tool_event {
    const char *id;
    const char *name;
    const char *arguments;
    size_t arguments_len;
    const char *result;      /* tool_call_result only; else NULL */
    size_t result_len;
    int ok;                  /* tool_call_result: 1 ok, 0 the tool failed */
} council_tool_event;

/* "run_started", ... "run_cancelled" (the Erlang tag names). Static. */
COUNCIL_API const char *council_event_type_name(council_event_type t);

/* One event. Published once and shared by all subscribers (refcounted).
 * Fields that do not apply to the type are NULL / 0 / -1. All pointers are
 * borrowed from the event and valid while it is referenced. */
typedef struct council_event {
    council_event_type type;
    uint64_t seq;                  /* per run, from 1, no gaps */
    const char *run_id;
    size_t run_id_len;
    const char *council;
    council_run *run;              /* the run (borrowed) */
    const char *round_name;        /* round_*, member_* */
    int round_idx;                 /* -1 when no round */
    const char *round_type;
    const char *member_id;         /* member_* */
    const char *chunk;             /* member_token */
    size_t chunk_len;
    const council_input *input;    /* run_started */
    const council_member_result *member_result; /* member_completed */
    const council_round_result *round_result;   /* round_completed */
    const council_result *result;  /* run_completed / failed / cancelled */
    const council_tool_event *tool; /* tool_call_request / tool_call_result */
} council_event;

/* 1 for run_completed, run_failed and run_cancelled, else 0. */
COUNCIL_API int council_event_is_terminal(const council_event *ev);
/* Keep an event beyond its callback (returns ev) / release it. An event
 * holds a reference on its run, so its payload stays readable. NULL is a
 * no-op. Loop thread. */
COUNCIL_API const council_event *council_event_ref(const council_event *ev);
COUNCIL_API void council_event_unref(const council_event *ev);

/* Subscriptions. cb(ev, arg) gets every event published on topic after
 * the subscription, in publish order; ev is borrowed for the call
 * (council_event_ref to keep it). Delivery happens on the loop, never inside
 * the publishing call. If more than subscriber_queue_cap events wait, the
 * queued ones are delivered, then overflow_cb(dropped, arg) is called once
 * and the subscription ends (the handle is then invalid). overflow_cb may
 * be NULL. topic: len bytes, copied. Errors: COUNCIL_EINVAL (empty topic,
 * NULL cb), COUNCIL_ELIMIT (max_subscribers_per_topic), COUNCIL_ENOMEM.
 * Loop thread. */
typedef struct council_subscription council_subscription;
typedef void (*council_event_cb)(const council_event *ev, void *arg);
typedef void (*council_overflow_cb)(size_t dropped, void *arg);
COUNCIL_API int council_subscribe(council_ctx *ctx, const char *topic, size_t len,
                      council_event_cb cb, council_overflow_cb overflow_cb,
                      void *arg, council_subscription **out);

/* Subscribe to a run's topic ("council_ex:run:" <run_id>). Same contract;
 * also COUNCIL_ESTATE (NULL run, or its context was freed). */
COUNCIL_API int council_run_subscribe(council_run *run, council_event_cb cb,
                          council_overflow_cb overflow_cb, void *arg,
                          council_subscription **out);

/* End a subscription; undelivered events are dropped. The handle is invalid
 * afterwards. NULL is a no-op. Loop thread (may be called from cb). */
COUNCIL_API void council_unsubscribe(council_ctx *ctx, council_subscription *sub);

/* Deliver every queued event now (tests, shutdown). Loop thread, not from
 * a callback. */
COUNCIL_API void council_ctx_flush(council_ctx *ctx);

/* --------------------------------------------------------------- providers */

/* A member call: one attempt of one member in one round (or match of a
 * pairwise round). Owned by the core. A provider may use it from start()
 * until it completes or fails it, or until its cancel() returns; to keep it
 * longer (e.g. a table of calls waiting for replies), take a reference:
 * calls on a finished call then return COUNCIL_ESTATE and do nothing. */
typedef struct council_call council_call;

typedef struct council_provider_ops {
    /* Begin the call. Complete it now or later with council_call_complete /
     * council_call_fail (council_call_token before, any number of times).
     * Return 0, or an error code to fail the attempt at once (message: the
     * code's name). */
    int (*start)(council_call *call, void *arg);
    /* The core abandons the call (timeout, output over the cap, run
     * cancelled, context freed): stop working on it. No completion is
     * expected afterwards (the call is already finished when this runs).
     * May call back into the API, e.g. cancel the run. May be NULL. Never
     * called for a call already completed or failed. */
    void (*cancel)(council_call *call, void *arg);
    /* The provider is being unregistered (context freed): release arg and
     * drop any call reference still held. May be NULL. */
    void (*release)(void *arg);
} council_provider_ops;

/* Register a provider under name (copied). ops is copied. Members whose
 * "provider" is name are served by it. Errors: COUNCIL_EEXIST (name taken;
 * "mock", "exec" and "council" are built in), COUNCIL_EINVAL, COUNCIL_ENOMEM. */
COUNCIL_API int council_provider_register(council_ctx *ctx, const char *name,
                              const council_provider_ops *ops, void *arg);

/* Stream a chunk of the answer (published as member_token; bytes copied).
 * The chunks are informative: the answer is what council_call_complete
 * gives. Errors: COUNCIL_EINVAL (NULL call, or NULL chunk with len > 0),
 * COUNCIL_ESTATE (call finished), COUNCIL_ETOOBIG (more than output_cap
 * bytes streamed: the call is failed and the provider's cancel() is called
 * before this returns). Out of memory loses the token event, not the call. */
COUNCIL_API int council_call_token(council_call *call, const char *chunk, size_t len);

/* Finish the attempt with the answer text (copied). Errors: COUNCIL_EINVAL
 * (NULL call, or NULL text with len > 0), COUNCIL_ESTATE (already finished
 * or abandoned: nothing happens), COUNCIL_ETOOBIG (len over output_cap: the
 * attempt fails instead). */
COUNCIL_API int council_call_complete(council_call *call, const char *text, size_t len);

/* Finish the attempt with an error message (copied; NULL = "failed").
 * A retry follows if attempts remain. COUNCIL_ESTATE if finished,
 * COUNCIL_EINVAL for a NULL call. */
COUNCIL_API int council_call_fail(council_call *call, const char *message);

/* As council_call_fail, with the failure's kind and, for a transient
 * failure, the least wait the server asked for before the next attempt
 * (retry_after_ms, 0 = none; capped at 10 minutes). Only transient failures
 * are retried. COUNCIL_ESTATE if finished, COUNCIL_EINVAL for a NULL call
 * or an unknown kind. */
COUNCIL_API int council_call_fail_kind(council_call *call, council_fail_kind kind,
                           uint64_t retry_after_ms, const char *message);

/* Add what one response used to the member's result (and so to its round's
 * and the run's totals), at once, whatever the attempt's outcome. u is
 * copied. COUNCIL_EINVAL (NULL argument), COUNCIL_ESTATE (call finished). */
COUNCIL_API int council_call_add_usage(council_call *call, const council_usage *u);

/* Publish a tool_call_request or tool_call_result event for this call's
 * member in its round (type says which; t's strings are copied).
 * COUNCIL_EINVAL (NULL argument or another type), COUNCIL_ESTATE (call
 * finished). Out of memory loses the event, not the call. */
COUNCIL_API int council_call_publish_tool(council_call *call, council_event_type type,
                              const council_tool_event *t);

/* Keep a call beyond its start()/cancel() callbacks (returns call) / drop
 * the reference. NULL is a no-op. Loop thread. */
COUNCIL_API council_call *council_call_ref(council_call *call);
COUNCIL_API void council_call_unref(council_call *call);

/* 1 while the call may still be completed, 0 once finished or abandoned. */
COUNCIL_API int council_call_active(const council_call *call);

/* A number unique among the calls of the context (from 1), e.g. the
 * call_id the C node sends to BEAM member servers. */
COUNCIL_API uint64_t council_call_id(const council_call *call);

/* Call accessors: borrowed, valid while the call is referenced; they never
 * fail. council_call_member_options is the member's options as compact
 * JSON text. Loop thread. */
COUNCIL_API council_run *council_call_run(const council_call *call);
COUNCIL_API const char *council_call_run_id(const council_call *call, size_t *len);
COUNCIL_API const char *council_call_member_id(const council_call *call);
COUNCIL_API const char *council_call_member_options(const council_call *call); /* JSON */
COUNCIL_API const char *council_call_round_name(const council_call *call);
COUNCIL_API unsigned council_call_round_idx(const council_call *call);
COUNCIL_API const char *council_call_round_type(const council_call *call);
COUNCIL_API unsigned council_call_attempt(const council_call *call);      /* from 1 */
COUNCIL_API uint64_t council_call_timeout_ms(const council_call *call);
/* The request: the JSON object the exec provider writes on stdin:
 * {"run_id","council","member_id","round":{"name","idx","type"},"attempt",
 *  "input","answers":[{"label"|"member_id","text"}],"instructions", ...}
 * The text is made on the first call and kept with the call (borrowed, as
 * above); *len (if len is not NULL) receives its length. Returns NULL (and
 * *len 0) when out of memory; a later call tries again. */
COUNCIL_API const char *council_call_request(const council_call *call, size_t *len);

/* ----------------------------------------------------------------- routers */

/* A router chooses, when a round is about to start, which of its members
 * take part. A spec names one for the whole council ("router" at the top
 * level) or for one round (options.router, which wins over the council's):
 *   "router": "name"                  a router registered below, or
 *   "router": {"name": "name", ...}   the same, the object given to it as
 *                                     its request's "options", or
 *   "router": {"rules": [{"when": {...}, "members": [ids]}, ...],
 *              "default": [ids]}      built in: the first rule whose
 *                                     conditions all hold gives the
 *                                     members (docs/spec-format.md lists
 *                                     the conditions); none: "default",
 *                                     else every member.
 * It applies to every round that has members of its own and more than one
 * (not iterate, synthesis or the chair's round), choosing among the round's
 * members (its options.members, else the council's). Members left out are
 * in the round's result as skipped (after those who took part); a round
 * whose router chooses nobody is skipped: round_started and
 * round_completed are published, every member skipped, and the run goes on
 * with what earlier rounds said. A router that fails, names a member that
 * is not among the round's, or does not answer within the member timeout
 * of the spec (limits.member_timeout_ms, else the context's) fails the run
 * with an error naming the round and the router (council_error_info: the
 * round, kind "transient" for a router that did not answer in time, else
 * "permanent"). */
typedef struct council_route council_route;

typedef struct council_router_ops {
    /* Choose: answer now or later with council_route_select or
     * council_route_fail. Return 0, or an error code to fail the route at
     * once. */
    int (*start)(council_route *rt, void *arg);
    /* The route is abandoned (run cancelled or ended, timeout, context
     * freed): no answer is expected. May be NULL. Never called once
     * answered. */
    void (*cancel)(council_route *rt, void *arg);
    /* Context freed: release arg. May be NULL. */
    void (*release)(void *arg);
} council_router_ops;

/* Register a router under name (copied; ops copied). Runs of specs that
 * name a router must find it here: council_run_create and
 * council_ctx_check_providers refuse them otherwise (COUNCIL_EPROVIDER,
 * err->field "router" or "rounds[i].options.router"). Errors:
 * COUNCIL_EEXIST (name taken), COUNCIL_EINVAL (NULL or empty name, no
 * start), COUNCIL_ENOMEM. Loop thread. */
COUNCIL_API int council_router_register(council_ctx *ctx, const char *name,
                                        const council_router_ops *ops, void *arg);

/* Answer a route with the ids of the members that take part (n of them,
 * any order, duplicates ignored; n 0 skips the round). Returns COUNCIL_OK;
 * COUNCIL_ESTATE when already answered or abandoned (nothing happens);
 * COUNCIL_EINVAL for a NULL rt, NULL ids with n > 0, or an id that is not
 * one of the round's members: the route then fails (the run fails with
 * an error naming that id). Loop thread. */
COUNCIL_API int council_route_select(council_route *rt, const char *const *member_ids,
                                     size_t n);

/* Fail a route with a message (copied; NULL = "failed"): the run fails.
 * COUNCIL_ESTATE when already answered or abandoned, COUNCIL_EINVAL for
 * NULL rt. Loop thread. */
COUNCIL_API int council_route_fail(council_route *rt, const char *message);

/* The request, a JSON object:
 *   {"run_id", "council", "router": name, "options": the spec's router
 *    object or null, "round": {"name", "idx", "type"}, "input": text or
 *    null, "members": [the ids to choose among, spec order],
 *    "rounds": [the run's completed rounds, as in a result]}
 * Borrowed (made on first call, kept with the route); *len (if not NULL)
 * gets its length. NULL (and *len 0) when out of memory. */
COUNCIL_API const char *council_route_request(const council_route *rt, size_t *len);

/* Accessors, borrowed while rt is referenced; never fail. id is unique in
 * the context (from 1). council_route_active: 1 until answered or
 * abandoned. Loop thread. */
COUNCIL_API const char *council_route_router(const council_route *rt);
COUNCIL_API council_run *council_route_run(const council_route *rt);
COUNCIL_API uint64_t council_route_id(const council_route *rt);
COUNCIL_API int council_route_active(const council_route *rt);

/* Keep a route beyond start()/cancel() (returns rt) / release it. NULL is
 * a no-op. Loop thread. */
COUNCIL_API council_route *council_route_ref(council_route *rt);
COUNCIL_API void council_route_unref(council_route *rt);

/* ------------------------------------------------------------------- tools */

/* Tools a model member may call. A member of a model provider (openai,
 * openrouter, ollama, anthropic, gemini) lists them in options.tools:
 *   [{"name": "lookup", "description": "...", "parameters": {JSON schema},
 *     "handler": "lookup"}]          a handler registered below (default:
 *                                    the tool's own name), or
 *   [{"name": ..., "exec": ["prog", "arg"]}]   a program: the arguments
 *                                    JSON on stdin, the result from stdout
 *                                    (exit status 0 = ok).
 * When the model asks for tools, the calls of one turn run in parallel (at
 * most options.max_parallel_tools [8] at once), each announced by a
 * tool_call_request event and reported by a tool_call_result event; their
 * results go back to the model, until it answers with text or
 * options.max_tool_turns [8] turns were made. A tool that fails, is
 * unknown or takes longer than options.tool_timeout_ms [30000] gives the
 * model an error result; the member call goes on. */
typedef struct council_tool_call council_tool_call;

typedef struct council_tool_ops {
    /* Begin a tool call; answer now or later with council_tool_call_return.
     * Return 0, or an error code to fail it at once. */
    int (*start)(council_tool_call *tc, void *arg);
    /* The call is abandoned (member call over, timeout, run cancelled); no
     * answer is expected. May be NULL. Never called once answered. */
    void (*cancel)(council_tool_call *tc, void *arg);
    /* Context freed: release arg. May be NULL. */
    void (*release)(void *arg);
} council_tool_ops;

/* Register a tool handler under name (copied; ops copied). Errors:
 * COUNCIL_EEXIST (name taken), COUNCIL_EINVAL (NULL or empty name, no
 * start), COUNCIL_ENOMEM. Loop thread. */
COUNCIL_API int council_tool_register(council_ctx *ctx, const char *name,
                          const council_tool_ops *ops, void *arg);

/* Answer a tool call: ok 1 with the result text (given to the model as
 * is), or ok 0 with an error text (given to the model as an error). Bytes
 * copied. COUNCIL_ESTATE if already answered or abandoned (nothing
 * happens), COUNCIL_EINVAL (NULL tc, or NULL text with len > 0). */
COUNCIL_API int council_tool_call_return(council_tool_call *tc, int ok, const char *text,
                             size_t len);

/* Accessors, borrowed while tc is referenced; never fail. The name is the
 * tool's (as the model called it), the arguments the JSON text the model
 * wrote, member_call the member call that asked (NULL once that call is
 * finished). id is unique in the context (from 1). Loop thread. */
COUNCIL_API const char *council_tool_call_name(const council_tool_call *tc);
COUNCIL_API const char *council_tool_call_arguments(const council_tool_call *tc, size_t *len);
COUNCIL_API council_call *council_tool_call_member_call(const council_tool_call *tc);
COUNCIL_API uint64_t council_tool_call_id(const council_tool_call *tc);

/* Keep a tool call beyond start()/cancel() (returns tc) / release it;
 * an answer after it was abandoned returns COUNCIL_ESTATE. NULL is a
 * no-op. Loop thread. */
COUNCIL_API council_tool_call *council_tool_call_ref(council_tool_call *tc);
COUNCIL_API void council_tool_call_unref(council_tool_call *tc);

/* ------------------------------------------------------ vote/rank parsing */

/* How a member's text becomes a ballot (fixed; documented here so prompts
 * can ask for it):
 *  - vote: the first occurrence of "VOTE:" (upper case), optional spaces or
 *    tabs, then a label: letters and digits, compared case-insensitively
 *    with the labels the member was shown. Anything else is a parse error.
 *  - ranking: the first occurrence of "RANKING:", then labels separated by
 *    '>' or ',' (spaces allowed) up to the end of the line or a '.'; every
 *    label must be one shown, none twice, at least one. Unranked labels
 *    score 0.
 * Labels are "A".."Z" for members 0..25 in spec order, then "A2".."Z2", ...
 * A parse error makes that member's result an error (no retry). */

/* Parse a vote: on success copies the label (upper case) into out (size
 * outsz) and returns COUNCIL_OK; COUNCIL_EPARSE if no valid label among
 * labels[0..n) follows the first "VOTE:" (or it does not fit outsz);
 * COUNCIL_EINVAL for NULL text, labels or out, or outsz 0. Any thread. */
COUNCIL_API int council_parse_vote(const char *text, size_t len, const char *const *labels,
                       size_t n, char *out, size_t outsz);

/* Parse a ranking: on success order[0..*count) holds indices into labels,
 * best first. COUNCIL_EPARSE otherwise; COUNCIL_EINVAL for a NULL
 * argument. order has room for n entries. Any thread. */
COUNCIL_API int council_parse_ranking(const char *text, size_t len,
                          const char *const *labels, size_t n,
                          size_t *order, size_t *count);

/* ------------------------------------------------------------------ misc */

/* The rules a client of the core checks against, as one JSON object, so
 * that other languages read them instead of copying them (the Elixir
 * library reads the file `make` writes, priv/schema.json):
 *   {"version", "topic_prefix", "default_registry",
 *    "round_types": [names], "providers": [built-in provider names],
 *    "model_providers": [...], "limits": {key: {"max": n}},
 *    "spec": {"max_members", "max_rounds", "max_depth", "max_iterations",
 *             "max_run_rounds", "max_bytes", "min_members", "min_rounds",
 *             "min_name_bytes", "max_name_bytes" (a member id, a round name),
 *             "unique_member_key", "keys": {top-level key: its kind: "name",
 *             "members", "rounds", "member_id", "limits" or "router"}},
 *    "round_options": {"*" (every round) or a type: {option: {"kind", ...}}}
 *             (kinds: "member_ids", "member_id", "rounds" (nested rounds),
 *             "integer" with "min"/"max", "enum" with "values", "string",
 *             "router"; "default" where the core has one),
 *    "statuses", "event_types", "fail_kinds", "router_conditions": [names],
 *    "errors": {name: {"code": n, "message": text}}}
 * Malloc'ed (the caller frees), NULL when out of memory. Any thread. */
COUNCIL_API char *council_schema_json(void);

/* UTC microseconds since the epoch (CLOCK_REALTIME). Any thread. */
COUNCIL_API int64_t council_now_us(void);

/* Generate a run id: 16 random bytes (libsodium), base64url without padding
 * (22 characters) into out, which must hold 23 bytes. Any thread, after
 * council_ctx_new (which initialises libsodium) or sodium_init. The bytes
 * are drawn from the system for 32 ids at a time and kept per thread; a
 * process forked after a call never repeats its parent's ids. */
COUNCIL_API void council_run_id_generate(char out[23]);

#ifdef __cplusplus
}
#endif
#endif
