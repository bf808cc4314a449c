/* epmd.h - the node's epmd client: ALIVE2_REQ / ALIVE2_X_RESP (our
 * registration) and PORT_PLEASE2_REQ / PORT2_RESP (the port of another
 * node, for outgoing connections).
 *
 * Registration owns the TCP connection to epmd. When that connection closes
 * after the registration (epmd stopped or restarted), the callback runs
 * again with the error; the node (node_listen.c) then registers anew.
 * Registration owns the TCP connection to epmd. epmd keeps our name registered exactly as
 * long as that connection is open, so it stays open for the node's life and
 * cn_epmd_close() is the unregistration. The creation epmd returns is handed
 * to the callback (ei throws it away; we use it for every pid).
 *
 * epmd is reached on 127.0.0.1 at $ERL_EPMD_PORT (default 4369). With
 * CN_EPMD_START, a registration that finds no epmd there (connection
 * refused) starts one the way `erl -sname` does: it runs `epmd -daemon`
 * (the epmd on PATH, else the one next to the `erl` on PATH), which
 * listens on $ERL_EPMD_PORT too, and tries again every 100 ms for 5 s.
 *
 * Node type: 'h' (hidden, 104). The node does not set DFLAG_PUBLISHED and
 * implements neither `global` nor the full net_kernel protocol, so it must
 * not be a normal node: BEAM would then try to sync `global` with it and
 * connect it transitively to the rest of the cluster. Hidden nodes are still
 * reachable by name ({name, node} calls, Node.ping/1) and are listed in
 * Node.list(:hidden).
 */
#ifndef CN_EPMD_H
#define CN_EPMD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cn_epmd cn_epmd;

/* status 0: registered, `creation` valid. status < 0: failed (a libuv code,
 * or UV_EADDRINUSE when epmd refused the name). */
typedef void (*cn_epmd_cb)(cn_epmd *e, int status, uint32_t creation, void *ud);

struct cn_epmd {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_timer_t retry;      /* the next attempt, after epmd was started */
    uv_process_t daemon;   /* `epmd -daemon` until it has forked */
    unsigned char req[512];
    size_t req_len;
    unsigned char resp[8];
    size_t resp_len;
    int done, open, closing;
    int handles;           /* open among tcp, retry, daemon */
    int flags;             /* CN_EPMD_* */
    int free_when_closed;  /* cn_epmd_close_free: free(e) at handles == 0 */
    int started;           /* we ran `epmd -daemon` */
    unsigned attempts;     /* connects since then */
    cn_epmd_cb cb;
    void *ud;
    uint32_t creation;
};

/* flags for cn_epmd_register */
enum {
    CN_EPMD_START = 1, /* start epmd when none answers */
    CN_EPMD_QUIET = 2, /* an unreachable epmd is not logged (the caller
                          retries and logs the outage once) */
};

/* epmd's port from ERL_EPMD_PORT, default 4369. */
int cn_epmd_port(void);
/* Starts registration of `alive` (the part before '@') with our listen
 * `port`; flags: CN_EPMD_START or 0. 0 or a negative libuv code (cb is then
 * never called). */
int cn_epmd_register(cn_epmd *e, uv_loop_t *loop, const char *alive,
                     int port, int flags, cn_epmd_cb cb, void *ud);
/* Closes the epmd connection (the name is unregistered) and the handles
 * of a pending attempt. Idempotent; the loop then runs out of them. */
void cn_epmd_close(cn_epmd *e);
/* The same for a malloc'd cn_epmd, freed once its handles have closed (no
 * callback after this). */
void cn_epmd_close_free(cn_epmd *e);

/* The epmd program: "epmd" in a directory of PATH, else next to the `erl`
 * found on PATH (its directory, or the erts-VSN/bin of its installation, as
 * symlinks resolve). Into out (cap bytes); 0, or -1 when there is none. */
int cn_epmd_program(char *out, size_t cap);

/* PORT_PLEASE2: asks the epmd at `host` (an IPv4/IPv6 address; the port
 * is replaced by cn_epmd_port()) for the distribution port of `alive`. One
 * short TCP connection, non-blocking on the loop, with its own deadline.
 * The lookup allocates and frees itself.
 * cb runs exactly once unless cancelled first: status 0 and the port;
 * UV_ENOENT: no such name registered there; UV_ETIMEDOUT: the deadline
 * passed; UV_EPROTO: bad reply or no common protocol version (we speak 6);
 * another negative libuv code: epmd not reachable. */
typedef struct cn_epmd_lookup cn_epmd_lookup;
typedef void (*cn_epmd_port_cb)(int status, int port, void *ud);
/* NULL on a bad argument or ENOMEM (cb is then never called). */
cn_epmd_lookup *cn_epmd_port_please(uv_loop_t *loop, const struct sockaddr *host,
                                    const char *alive, uint64_t timeout_ms,
                                    cn_epmd_port_cb cb, void *ud);
/* No callback after this; the lookup frees itself once its handles close. */
void cn_epmd_lookup_cancel(cn_epmd_lookup *q);

#endif
