/* main.c - priv/council_node: the standalone C node.
 *
 * Parses options, reads the cookie, starts the node on a libuv loop,
 * registers net_kernel and the service process, prints one readiness line
 * to stdout after epmd registration, and stops cleanly on SIGTERM/SIGINT
 * (runs cancelled and their terminal events sent, then processes exit with
 * `shutdown`, connections flushed, epmd entry gone, exit status 0).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ei.h>
#include <sodium.h>
#include <uv.h>

#include "beam_provider.h"
#include "beam_router.h"
#include "beam_tools.h"
#include "bridge.h"
#include "council.h"
#include "log.h"
#include "net_kernel.h"
#include "node.h"
#include "run_proc.h"
#include "service.h"

/* --busy-poll-us's default (see cn_node_run). A caller that answers a
 * reply with its next request does so after its own wake-up and work: on
 * the idle 2-core development machine a loopback call took 43 us of wall
 * time, 11 us of it the node's CPU (bench/RESULTS.md, "Where a call's time
 * goes"), so the next request comes some 30-45 us after the reply; 100 us
 * catches it with room to spare and costs at most that much CPU after the
 * last frame. */
#define BUSY_POLL_US 100
/* --busy-poll-pace-us's default: with 8 concurrent callers a frame came
 * every 10-13 us on the 2-core development machine; waiting 20 us between
 * polls while frames come that close reads about two per turn, and one
 * write answers them (bench/RESULTS.md, "8 callers on 2 cores"). */
#define BUSY_POLL_PACE_US 20
#define STR_(x) #x
#define STR(x) STR_(x)
#define BUSY_POLL_STR STR(BUSY_POLL_US)
#define BUSY_POLL_PACE_STR STR(BUSY_POLL_PACE_US)

static const char usage[] =
    "usage: council_node (--sname NAME | --name NAME@HOST) [options]\n"
    "\n"
    "  --sname NAME            short node name; the host part is this host's\n"
    "                          name up to the first dot\n"
    "  --name NAME@HOST        full node name\n"
    "  --cookie-file PATH      read the cookie from PATH (first line); the file\n"
    "                          must be owned by us and not readable by group or\n"
    "                          others (mode 0400 or 0600)\n"
    "  --cookie COOKIE         the cookie itself (visible in ps: prefer\n"
    "                          --cookie-file)\n"
    "                          Without either, as BEAM does: $HOME/.erlang.cookie\n"
    "                          (the same owner and mode rule), created with a\n"
    "                          random cookie and mode 0400 if it does not exist\n"
    "  --listen ADDR           address to listen on [127.0.0.1]\n"
    "  --port N                port to listen on; 0 = ephemeral [0]\n"
    "  --registered-name NAME  name of the service process [council_ex]\n"
    "  --max-connections N     concurrent authenticated BEAM connections\n"
    "                          (and our own dials) [64]\n"
    "  --max-handshakes N      accepted connections still in the handshake,\n"
    "                          counted apart; when full, the one with the least\n"
    "                          progress (the one silent longest first) is\n"
    "                          closed [256]\n"
    "  --max-handshakes-per-address N  the same, per source IP [128]\n"
    "  --first-packet-ms N     an accepted connection's first handshake packet\n"
    "                          must arrive this soon [2000] (the whole handshake:\n"
    "                          7000)\n"
    "  --max-frame-bytes N     largest accepted distribution frame; a bigger\n"
    "                          one is read and dropped, a call in it answered\n"
    "                          {error, request_too_large} [16777216]\n"
    "  --max-runs N            runs at once, passed on to the core [10000]\n"
    "  --max-subscriptions N   event subscriptions of BEAM pids, all topics\n"
    "                          together [1000000]\n"
    "  --max-subscriber-backlog N  bytes waiting to be written to one connection\n"
    "                          past which its subscribers are cut off (the\n"
    "                          overflow notice, then only terminal events)\n"
    "                          [8388608]\n"
    "  --exec-allow PATH       a program, or a directory of programs, that exec\n"
    "                          members and exec tools may run; repeat for more\n"
    "                          (at most 256). Without it no exec runs: a spec\n"
    "                          naming a program gets {invalid_spec, Field,\n"
    "                          <<\"program not allowed\">>}. Paths are resolved\n"
    "                          with realpath at start (symlinks followed); a\n"
    "                          spec's program is resolved the way it will be\n"
    "                          run (a bare name on PATH, a relative path from\n"
    "                          options.cwd) and must be one of them or below one\n"
    "  --busy-poll-us N        after receiving a frame, keep polling without\n"
    "                          sleeping until N microseconds pass with no\n"
    "                          other frame (as BEAM's schedulers spin before\n"
    "                          they sleep): a request that follows soon is\n"
    "                          seen without a thread wake-up (between polls\n"
    "                          other work on the core goes first). Uses CPU\n"
    "                          only right after traffic, none when idle; 0 =\n"
    "                          always sleep in epoll [" BUSY_POLL_STR "] (at most\n"
    "                          1000000)\n"
    "  --busy-poll-pace-us N   while polling, once frames come less than N\n"
    "                          microseconds apart (several callers), wait N\n"
    "                          (yielding) before the next poll instead of\n"
    "                          polling at once, so that one turn reads and\n"
    "                          answers the frames that came meanwhile; a wait\n"
    "                          that finds nothing returns to polling at once;\n"
    "                          0 = never wait [" BUSY_POLL_PACE_STR "] (at most 1000000)\n"
    "  --log-level LEVEL       error|warn|info|debug, to stderr [warn]\n"
    "  --help                  this text\n"
    "Limits of the core (each N >= 1; see README \"Limits\"):\n"
    "  --retention-ms N        how long a finished run stays readable [300000]\n"
    "  --max-retained N        finished runs kept; the oldest leaves early when\n"
    "                          full [100000]\n"
    "  --max-spec-bytes N      largest spec, as JSON [1048576]\n"
    "  --member-timeout-ms N   default timeout of a member call [60000]\n"
    "  --output-cap N          bytes of answer kept per member call [1048576]\n"
    "  --subscriber-queue N    undelivered events per subscriber before it is\n"
    "                          cut off [4096]\n"
    "  --max-subscribers-per-topic N  [1024]\n"
    "\n"
    "Prints \"council_node ready NAME@HOST port=P creation=C\" on stdout once\n"
    "registered with epmd (at 127.0.0.1:$ERL_EPMD_PORT, default 4369). When no\n"
    "epmd answers there, it starts one as `erl -sname` does (`epmd -daemon`:\n"
    "the epmd on PATH, else the one next to erl; it listens on\n"
    "$ERL_EPMD_PORT and outlives the node) and registers with it.\n"
    "SIGTERM or SIGINT stops it cleanly with exit status 0.\n"
    "Debug aid: COUNCIL_NODE_CAPTURE_DIR=DIR writes every received frame body\n"
    "(the bytes after 'p') to DIR/frame-N (the fuzzer's seed corpus).\n";

typedef struct opts {
    const char *sname, *name, *cookie_file, *cookie, *listen, *reg_name;
    long port;
    size_t max_conns, max_frame, max_runs, max_subs, max_backlog;
    size_t max_hs, max_hs_addr, first_packet_ms;
    unsigned long busy_poll_us, busy_poll_pace_us;
    int log_level;
    council_config core; /* 0 = the core's default */
    const char *exec_allow[256];
    size_t n_exec_allow;
} opts;



static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || s[0] == '-' || v == 0)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* Options that set a limit of the core, by field. */
static const struct core_opt {
    const char *flag;
    size_t size_off;   /* size_t field, or */
    size_t ms_off;     /* uint64_t field (the other is SIZE_MAX) */
} core_opts[] = {
    {"--retention-ms", SIZE_MAX, offsetof(council_config, retention_ms)},
    {"--max-retained", offsetof(council_config, max_retained), SIZE_MAX},
    {"--max-spec-bytes", offsetof(council_config, max_spec_bytes), SIZE_MAX},
    {"--member-timeout-ms", SIZE_MAX, offsetof(council_config, member_timeout_ms)},
    {"--output-cap", offsetof(council_config, output_cap), SIZE_MAX},
    {"--subscriber-queue", offsetof(council_config, subscriber_queue_cap), SIZE_MAX},
    {"--max-subscribers-per-topic", offsetof(council_config, max_subscribers_per_topic),
     SIZE_MAX},
};

/* 1 if a is a core option (set, or -1 on a bad value), 0 if not one. */
static int core_option(const char *a, const char *v, council_config *c)
{
    for (size_t k = 0; k < sizeof core_opts / sizeof core_opts[0]; k++) {
        const struct core_opt *co = &core_opts[k];
        if (strcmp(a, co->flag) != 0)
            continue;
        size_t n;
        if (parse_size(v, &n)) {
            fprintf(stderr, "council_node: bad %s %s\n", a, v);
            return -1;
        }
        if (co->size_off != SIZE_MAX)
            *(size_t *)((char *)c + co->size_off) = n;
        else
            *(uint64_t *)((char *)c + co->ms_off) = n;
        return 1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1";
    o->reg_name = "council_ex";
    o->max_conns = 64;
    o->max_hs = 256;
    o->max_hs_addr = 128;
    o->first_packet_ms = 2000;
    o->max_frame = 16u * 1024 * 1024;
    o->max_runs = 10000;
    o->max_subs = 1000000;
    o->log_level = CN_LOG_WARN;
    o->busy_poll_us = BUSY_POLL_US;
    o->busy_poll_pace_us = BUSY_POLL_PACE_US;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "council_node: %s needs a value (see --help)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        int rc;
        if (strcmp(a, "--sname") == 0)
            o->sname = v;
        else if (strcmp(a, "--name") == 0)
            o->name = v;
        else if (strcmp(a, "--cookie-file") == 0)
            o->cookie_file = v;
        else if (strcmp(a, "--cookie") == 0)
            o->cookie = v;
        else if (strcmp(a, "--listen") == 0)
            o->listen = v;
        else if (strcmp(a, "--registered-name") == 0)
            o->reg_name = v;
        else if (strcmp(a, "--port") == 0) {
            char *end;
            o->port = strtol(v, &end, 10);
            if (*end || end == v || o->port < 0 || o->port > 65535) {
                fprintf(stderr, "council_node: bad --port %s\n", v);
                return -1;
            }
        } else if (strcmp(a, "--max-connections") == 0) {
            if (parse_size(v, &o->max_conns)) {
                fprintf(stderr, "council_node: bad --max-connections %s\n", v);
                return -1;
            }
        } else if (strcmp(a, "--max-handshakes") == 0 ||
                   strcmp(a, "--max-handshakes-per-address") == 0 ||
                   strcmp(a, "--first-packet-ms") == 0) {
            size_t *dst = strcmp(a, "--max-handshakes") == 0 ? &o->max_hs
                          : strcmp(a, "--first-packet-ms") == 0 ? &o->first_packet_ms
                                                                 : &o->max_hs_addr;
            if (parse_size(v, dst)) {
                fprintf(stderr, "council_node: bad %s %s\n", a, v);
                return -1;
            }
        } else if (strcmp(a, "--max-frame-bytes") == 0) {
            if (parse_size(v, &o->max_frame) || o->max_frame < 64 ||
                o->max_frame > 0x7fffffffu) {
                fprintf(stderr, "council_node: bad --max-frame-bytes %s\n", v);
                return -1;
            }
        } else if (strcmp(a, "--max-subscriptions") == 0) {
            if (parse_size(v, &o->max_subs) || o->max_subs == 0) {
                fprintf(stderr, "council_node: bad --max-subscriptions %s\n", v);
                return -1;
            }
        } else if (strcmp(a, "--max-subscriber-backlog") == 0) {
            if (parse_size(v, &o->max_backlog)) {
                fprintf(stderr, "council_node: bad --max-subscriber-backlog %s\n", v);
                return -1;
            }
        } else if (strcmp(a, "--max-runs") == 0) {
            if (parse_size(v, &o->max_runs)) {
                fprintf(stderr, "council_node: bad --max-runs %s\n", v);
                return -1;
            }
        } else if ((rc = core_option(a, v, &o->core)) != 0) {
            if (rc < 0)
                return -1;
        } else if (strcmp(a, "--exec-allow") == 0) {
            if (!*v || o->n_exec_allow == sizeof o->exec_allow / sizeof o->exec_allow[0]) {
                fprintf(stderr, "council_node: bad --exec-allow %s\n", v);
                return -1;
            }
            o->exec_allow[o->n_exec_allow++] = v;
        } else if (strcmp(a, "--busy-poll-us") == 0 || strcmp(a, "--busy-poll-pace-us") == 0) {
            char *end;
            errno = 0;
            unsigned long us = strtoul(v, &end, 10);
            if (errno || *end || end == v || v[0] == '-' || us > 1000000) {
                fprintf(stderr, "council_node: bad %s %s\n", a, v);
                return -1;
            }
            if (strcmp(a, "--busy-poll-us") == 0)
                o->busy_poll_us = us;
            else
                o->busy_poll_pace_us = us;
        } else if (strcmp(a, "--log-level") == 0) {
            if ((o->log_level = cn_log_parse_level(v)) < 0) {
                fprintf(stderr, "council_node: bad --log-level %s\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "council_node: unknown option %s (see --help)\n", a);
            return -1;
        }
    }
    if (!!o->sname == !!o->name) {
        fprintf(stderr, "council_node: give exactly one of --sname or --name\n");
        return -1;
    }
    return 0;
}

/* Builds the full node name into buf. */
static int node_name(const opts *o, char *buf, size_t cap)
{
    const char *alive = o->sname ? o->sname : o->name;
    if (o->name) {
        const char *at = strchr(o->name, '@');
        if (!at || at == o->name || !at[1] || strchr(at + 1, '@')) {
            fprintf(stderr, "council_node: --name must be NAME@HOST\n");
            return -1;
        }
        if (strlen(o->name) >= cap)
            return -1;
        strcpy(buf, o->name);
    } else {
        if (strchr(alive, '@') || !*alive) {
            fprintf(stderr, "council_node: --sname takes a name without @HOST\n");
            return -1;
        }
        char host[256];
        if (gethostname(host, sizeof host) != 0)
            return -1;
        host[sizeof host - 1] = 0;
        char *dot = strchr(host, '.');
        if (dot)
            *dot = 0;
        if ((size_t)snprintf(buf, cap, "%s@%s", alive, host) >= cap)
            return -1;
    }
    for (const char *p = buf; *p != '@'; p++)
        if (!(*p == '_' || *p == '-' || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
            fprintf(stderr, "council_node: bad character in node name\n");
            return -1;
        }
    if (strlen(buf) > CN_MAX_NODE_NAME) {
        fprintf(stderr, "council_node: node name too long\n");
        return -1;
    }
    return 0;
}

/* Reads the cookie's first line from a file only we can read. */
static int read_cookie_file(const char *path, cn_cookie *out, int strict)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        fprintf(stderr, "council_node: cannot open cookie file %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "council_node: cookie file %s is not a regular file\n", path);
        close(fd);
        return -1;
    }
    if (strict && (st.st_uid != geteuid() || (st.st_mode & 077) != 0)) {
        fprintf(stderr, "council_node: refusing cookie file %s: it must be owned "
                        "by us and have mode 0400 or 0600 (chmod 600 %s)\n", path, path);
        close(fd);
        return -1;
    }
    unsigned char buf[CN_MAX_COOKIE + 2];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0) {
        fprintf(stderr, "council_node: cannot read cookie file %s\n", path);
        return -1;
    }
    size_t len = 0;
    while (len < (size_t)n && buf[len] != '\n' && buf[len] != '\r')
        len++;
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        len--;
    int rc = 0;
    if (len == 0 || len > CN_MAX_COOKIE) {
        fprintf(stderr, "council_node: cookie file %s: empty or too long cookie\n", path);
        rc = -1;
    } else if (cn_cookie_set(out, buf, len)) {
        rc = -1;
    }
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* A new cookie file at path, as BEAM makes one: 20 random capital letters,
 * mode 0400. Written to a temporary name and linked into place, so that a
 * node or VM starting at the same time reads either nothing or the whole
 * cookie; one that won the race keeps its cookie. 0 (created, or made by
 * another meanwhile) or -1 (logged). */
static int create_cookie_file(const char *path)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >= sizeof tmp)
        return -1;
    char cookie[20];
    for (size_t i = 0; i < sizeof cookie; i++)
        cookie[i] = (char)('A' + randombytes_uniform(26));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0400);
    int ok = fd >= 0 && write(fd, cookie, sizeof cookie) == (ssize_t)sizeof cookie &&
             fsync(fd) == 0;
    sodium_memzero(cookie, sizeof cookie);
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (ok && link(tmp, path) != 0 && errno != EEXIST)
        ok = 0;
    int saved = errno;
    if (fd >= 0)
        unlink(tmp);
    if (!ok) {
        fprintf(stderr, "council_node: cannot create the cookie file %s: %s\n", path,
                strerror(saved));
        return -1;
    }
    cn_log_info("created the cookie file %s", path);
    return 0;
}

/* The cookie BEAM would use: $HOME/.erlang.cookie, created if absent. */
static int home_cookie(cn_cookie *out)
{
    const char *home = getenv("HOME");
    char path[PATH_MAX];
    if (!home || !*home) {
        fprintf(stderr, "council_node: HOME is not set: no ~/.erlang.cookie\n");
        return -1;
    }
    if ((size_t)snprintf(path, sizeof path, "%s/.erlang.cookie", home) >= sizeof path)
        return -1;
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT && create_cookie_file(path) != 0)
        return -1;
    return read_cookie_file(path, out, 1);
}

typedef struct app {
    cn_node *node;
    council_ctx *ctx;
    cn_bridge bridge;
    opts o;
    uv_signal_t sigterm, sigint;
    int exit_code;
} app;

static void stop_app(app *a)
{
    if (a->bridge.node) /* the service is up: end the runs, events first */
        cn_run_proc_shutdown_all(&a->bridge, cn_atom_shutdown());
    cn_node_stop(a->node);
    if (!uv_is_closing((uv_handle_t *)&a->sigterm))
        uv_close((uv_handle_t *)&a->sigterm, NULL);
    if (!uv_is_closing((uv_handle_t *)&a->sigint))
        uv_close((uv_handle_t *)&a->sigint, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    app *a = s->data;
    cn_log_info("signal %d: stopping", signum);
    stop_app(a);
}

static void on_ready(cn_node *n, int status, void *ud)
{
    app *a = ud;
    if (status != 0) {
        cn_log_error("epmd registration failed: %s", uv_strerror(status));
        a->exit_code = 1;
        stop_app(a);
        return;
    }
    a->bridge.node = n;
    a->bridge.ctx = a->ctx;
    cn_service_config sc = {.name = a->o.reg_name, .max_runs = a->o.max_runs,
                            .max_subscriptions = a->o.max_subs,
                            .max_retained = a->o.core.max_retained,
                            .bridge = &a->bridge};
    if (!cn_net_kernel_start(n) || !cn_service_start(n, &sc) ||
        cn_beam_provider_register(&a->bridge) != 0 ||
        cn_beam_tools_register(&a->bridge) != 0 ||
        cn_beam_router_register(&a->bridge) != 0) {
        cn_log_error("cannot start the service processes");
        a->exit_code = 1;
        stop_app(a);
        return;
    }
    printf("council_node ready %s port=%d creation=%u\n", cn_node_name(n),
           cn_node_port(n), (unsigned)cn_node_creation(n));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    app a;
    memset(&a, 0, sizeof a);
    if (parse_args(argc, argv, &a.o))
        return 2;
    cn_log_set_level(a.o.log_level);
    char name[CN_MAX_NODE_NAME + 2];
    if (node_name(&a.o, name, sizeof name))
        return 2;
    if (sodium_init() < 0 || ei_init() != 0) {
        fprintf(stderr, "council_node: cannot initialise libsodium/ei\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    cn_cookie cookie = {0};
    if (a.o.cookie_file) {
        if (read_cookie_file(a.o.cookie_file, &cookie, 1))
            return 2;
    } else if (a.o.cookie) {
        cn_log_warn("--cookie is visible to other users in the process list; "
                    "prefer --cookie-file");
        if (cn_cookie_set(&cookie, a.o.cookie, strlen(a.o.cookie))) {
            fprintf(stderr, "council_node: bad --cookie\n");
            return 2;
        }
    } else if (home_cookie(&cookie)) {
        fprintf(stderr, "council_node: no cookie (use --cookie-file)\n");
        return 2;
    }

    /* One loop for everything: the core's. */
    council_config ccfg = a.o.core;
    ccfg.max_runs = a.o.max_runs;
    a.ctx = council_ctx_new(&ccfg);
    if (!a.ctx) {
        cn_cookie_free(&cookie);
        fprintf(stderr, "council_node: cannot create the council context\n");
        return 1;
    }
    /* exec is opt-in: only the programs listed (none by default) */
    int xrc = council_ctx_set_exec_allow(a.ctx, a.o.exec_allow, a.o.n_exec_allow);
    if (xrc != COUNCIL_OK) {
        for (size_t i = 0; i < a.o.n_exec_allow; i++)
            if (council_ctx_set_exec_allow(a.ctx, &a.o.exec_allow[i], 1) != COUNCIL_OK)
                fprintf(stderr, "council_node: bad --exec-allow %s: not a program or a "
                                "directory here\n", a.o.exec_allow[i]);
        council_ctx_free(a.ctx);
        cn_cookie_free(&cookie);
        return 2;
    }
    uv_loop_t *loop = council_ctx_uv_loop(a.ctx);

    cn_node_config cfg;
    cn_node_config_defaults(&cfg);
    cfg.name = name;
    cfg.listen_addr = a.o.listen;
    cfg.port = (int)a.o.port;
    cfg.max_connections = a.o.max_conns;
    cfg.max_handshakes = a.o.max_hs;
    cfg.max_handshakes_per_addr = a.o.max_hs_addr;
    cfg.conn.first_packet_ms = a.o.first_packet_ms;
    cfg.conn.max_frame = a.o.max_frame;
    cfg.terms.max_bytes = a.o.max_frame;
    cfg.capture_dir = getenv("COUNCIL_NODE_CAPTURE_DIR");
    cfg.start_epmd = 1;
    if (cfg.conn.max_outq < 2 * a.o.max_frame)
        cfg.conn.max_outq = 2 * a.o.max_frame;
    if (a.o.max_backlog)
        cfg.conn.max_backlog = a.o.max_backlog;
    if (cfg.conn.max_backlog > cfg.conn.max_outq / 2)
        cfg.conn.max_backlog = cfg.conn.max_outq / 2;
    a.node = cn_node_new(loop, &cfg, &cookie);
    cn_cookie_free(&cookie); /* no-op unless cn_node_new failed */
    if (!a.node) {
        fprintf(stderr, "council_node: cannot create the node\n");
        council_ctx_free(a.ctx);
        return 1;
    }
    uv_signal_init(loop, &a.sigterm);
    uv_signal_init(loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);

    int rc = cn_node_start(a.node, on_ready, &a);
    if (rc) {
        cn_log_error("cannot listen on %s:%ld: %s", a.o.listen, a.o.port, uv_strerror(rc));
        a.exit_code = 1;
        stop_app(&a);
    }
    /* Returns once the node's handles are closed (cn_node_stop); the
     * core's own handles do not keep the loop alive. */
    cn_node_run(a.node, a.o.busy_poll_us, a.o.busy_poll_pace_us);
    cn_node_free(a.node);
    council_ctx_free(a.ctx); /* cancels what is left, reaps children */
    cn_log_info("stopped");
    return a.exit_code;
}
