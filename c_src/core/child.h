/* child.h - a program the core runs with a pipe on each of its stdin,
 * stdout and stderr: an exec member's program (provider_exec.c) and an
 * exec tool's (tools.c).
 *
 * The input is written to stdin, which is then closed; stdout is kept (up
 * to a cap) and handed out chunk by chunk; the end of stderr is kept. Once
 * the program has exited and both outputs are read, `done` is called once
 * with all of it, unless the child was detached. A killed program (SIGKILL)
 * is reaped by libuv like any other, so none is left a zombie. A child is
 * on its owner's list from spawn until its handles are closed, when it
 * frees itself; the owner kills and closes what is left when the context
 * goes (cx_child_kill, cx_child_unreaped, cx_child_close_all).
 * Loop thread only.
 */
#ifndef CX_CHILD_H
#define CX_CHILD_H

#include "council_internal.h"

typedef struct cx_child cx_child;

/* Bytes of the end of stderr kept. */
#define CX_CHILD_ERR_TAIL 512

/* What a program left, for `done`: all borrowed for the call. */
typedef struct cx_child_end {
    const char *kill_reason;   /* the reason given to cx_child_kill, or NULL */
    int term_signal;           /* the signal that ended it, or 0 */
    int64_t exit_status;
    bool over_cap;             /* stdout passed the cap (not when killed for it) */
    const char *out;           /* stdout, NUL-terminated ("" when none) */
    size_t out_len;
    const char *err_tail;      /* the end of stderr */
    size_t err_len;
} cx_child_end;

typedef struct cx_child_opts {
    char **argv;               /* NULL-terminated; argv[0] names the program */
    const char *file;          /* the program to run (NULL: argv[0]) */
    const char *cwd;           /* NULL: the context's */
    const char *input;         /* copied */
    size_t input_len;
    size_t out_cap;            /* bytes of stdout kept at most */
    bool kill_over_cap;        /* past the cap (or out of memory): killed with
                                  "output exceeds N bytes" ("out of memory");
                                  else the rest is dropped, over_cap set */
    /* a chunk of stdout as it is kept (NULL: not wanted) */
    void (*output)(void *arg, const char *p, size_t n);
    /* the end (see above) */
    void (*done)(void *arg, const cx_child_end *end);
    void *arg;
} cx_child_opts;

/* Starts o's program, linked on *list: COUNCIL_OK with *out set;
 * COUNCIL_ENOMEM (nothing started); or COUNCIL_EIO when the program could
 * not be started, *uv_err then libuv's error (uv_strerror): the child
 * closes and frees itself, and no callback comes. */
int cx_child_spawn(council_ctx *ctx, cx_child **list, const cx_child_opts *o, cx_child **out,
                   int *uv_err);

/* No more callbacks for c (its owner is gone). */
void cx_child_detach(cx_child *c);
/* SIGKILL to c's program while it runs; reason (copied; NULL: none) is
 * what `done` reports as the kill_reason (the first one given). */
void cx_child_kill(cx_child *c, const char *reason);

/* For the context's shutdown. kill_all: cx_child_kill(c, reason) for
 * every child on list. unreaped: how many of them still run. close_all:
 * closes every child on list (each frees itself in a close callback).
 * With a let_go (not NULL), each child still attached is detached first
 * and let_go gets its arg (its owner lets go of it). */
void cx_child_kill_all(cx_child *list, const char *reason, void (*let_go)(void *arg));
size_t cx_child_unreaped(const cx_child *list);
void cx_child_close_all(cx_child *list, void (*let_go)(void *arg));

#endif
