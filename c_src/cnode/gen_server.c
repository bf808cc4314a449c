/* gen_server.c - see gen_server.h. */
#include "gen_server.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "council.h"
#include "log.h"
#include "reasons.h"

typedef struct cn_gen {
    const cn_gen_ops *ops;
    void *user;
} cn_gen;

/* [alias | Ref]: a list of one element, the atom alias, whose tail is a
 * reference; (off, len): where the reference is in t. */
static int alias_cons(cn_slice t, size_t *off, size_t *len)
{
    cn_slice head, tail;
    if (cn_term_list(t, &head, 1, &tail) != 1 || !cn_term_is_atom(head, "alias") ||
        cn_term_kind(tail) != CN_KIND_REF)
        return -1;
    *off = (size_t)(tail.p - t.p);
    *len = tail.len;
    return 0;
}

int cn_gen_tag_alias(cn_slice tag, size_t *off, size_t *len)
{
    if (alias_cons(tag, off, len) == 0)
        return 0;
    /* [[alias | Ref] | _] */
    cn_slice first;
    size_t o, l;
    if (cn_term_list(tag, &first, 1, NULL) < 1 || alias_cons(first, &o, &l))
        return -1;
    *off = (size_t)(first.p - tag.p) + o;
    *len = l;
    return 0;
}

int cn_gen_parse_from(cn_node *n, cn_slice term, cn_gen_from *out)
{
    cn_slice el[2];
    cn_wpid w;
    if (cn_term_tuple(term, el, 2) != 2 || cn_term_pid(el[0], &w) ||
        cn_pt_pid_from_wire(cn_node_table(n), &w, &out->pid))
        return -1;
    out->tag = (unsigned char *)el[1].p;
    out->tag_len = el[1].len;
    if (cn_gen_tag_alias(el[1], &out->alias_off, &out->alias_len)) {
        out->alias_off = 0;
        out->alias_len = 0;
    }
    return 0;
}

int cn_gen_parse_call_head(cn_node *n, cn_slice msg, cn_gen_from *out)
{
    int index = 0, arity = 0;
    if (msg.len < 8 || cn_term_kind(msg) != CN_KIND_TUPLE ||
        ei_decode_tuple_header((const char *)msg.p, &index, &arity) || arity != 3)
        return -1;
    cn_slice tag = {msg.p + index, 0}, from = {0};
    tag.len = cn_term_len(tag.p, msg.len - (size_t)index);
    if (!tag.len || !cn_term_is_atom(tag, "$gen_call"))
        return -1;
    from.p = tag.p + tag.len;
    from.len = cn_term_len(from.p, msg.len - (size_t)(from.p - msg.p));
    return from.len ? cn_gen_parse_from(n, from, out) : -1;
}

cn_gen_from *cn_gen_from_dup(const cn_gen_from *f)
{
    cn_gen_from *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    *d = *f;
    d->tag = malloc(f->tag_len);
    if (!d->tag) {
        free(d);
        return NULL;
    }
    memcpy(d->tag, f->tag, f->tag_len);
    return d;
}

void cn_gen_from_free(cn_gen_from *f)
{
    if (f) {
        free(f->tag);
        free(f);
    }
}

int cn_gen_reply(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice reply)
{
    ei_x_buff x;
    if (ei_x_new(&x))
        return -1;
    int rc = -1;
    if (!ei_x_encode_tuple_header(&x, 2) &&
        !ei_x_append_buf(&x, (const char *)from->tag, (int)from->tag_len) &&
        !ei_x_append_buf(&x, (const char *)reply.p, (int)reply.len)) {
        if (from->alias_len)
            rc = cn_node_send_alias(n, p, &from->pid,
                                    (cn_slice){from->tag + from->alias_off, from->alias_len},
                                    cn_x_slice(&x));
        else
            rc = cn_node_send(n, &from->pid, cn_x_slice(&x));
    }
    ei_x_free(&x);
    return rc;
}

int cn_gen_reply_x(cn_node *n, cn_proc *p, const cn_gen_from *from,
                   const ei_x_buff *reply)
{
    return cn_gen_reply(n, p, from, cn_x_slice(reply));
}

int cn_gen_reply_built(cn_node *n, cn_proc *p, const cn_gen_from *from, ei_x_buff *x,
                       int built)
{
    if (built < 0) {
        x->index = 0;
        if (cn_gen_encode_error(x, cn_reason_name(cn_reason_index(COUNCIL_ENOMEM)))) {
            cn_log_error("out of memory: a call to %s is not answered",
                         p->name ? p->name : "a process");
            return -1;
        }
    }
    return cn_gen_reply_x(n, p, from, x);
}

int cn_gen_encode_error(ei_x_buff *x, const char *reason)
{
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
                   ei_x_encode_atom(x, reason)
               ? -1
               : 0;
}

/* The fixed atom naming a kind of term, for a summary. */
static const char *kind_name(cn_kind k)
{
    switch (k) {
    case CN_KIND_INTEGER: return "integer";
    case CN_KIND_FLOAT: return "float";
    case CN_KIND_BINARY: return "binary";
    case CN_KIND_BITSTRING: return "bitstring";
    case CN_KIND_TUPLE: return "tuple";
    case CN_KIND_NIL:
    case CN_KIND_LIST:
    case CN_KIND_STRING: return "list";
    case CN_KIND_MAP: return "map";
    case CN_KIND_PID: return "pid";
    case CN_KIND_PORT: return "port";
    case CN_KIND_REF: return "reference";
    case CN_KIND_FUN: return "fun";
    default: return "term";
    }
}

int cn_gen_encode_summary(ei_x_buff *x, cn_slice term)
{
    if (cn_term_kind(term) == CN_KIND_ATOM)
        return ei_x_append_buf(x, (const char *)term.p, (int)term.len) ? -1 : 0;
    if (cn_term_kind(term) == CN_KIND_TUPLE) {
        int index = 0, arity = 0;
        if (ei_decode_tuple_header((const char *)term.p, &index, &arity) == 0 && arity > 0) {
            cn_slice first = {term.p + index, 0};
            first.len = cn_term_len(first.p, term.len - (size_t)index);
            if (first.len && cn_term_kind(first) == CN_KIND_ATOM)
                return ei_x_append_buf(x, (const char *)first.p, (int)first.len) ? -1 : 0;
        }
    }
    return ei_x_encode_atom(x, kind_name(cn_term_kind(term))) ? -1 : 0;
}

/* {error, {Tag, Summary}} */
static int encode_error_about(ei_x_buff *x, const char *tag, cn_slice term)
{
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
                   ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, tag) ||
                   cn_gen_encode_summary(x, term)
               ? -1
               : 0;
}

int cn_gen_encode_unknown_call(ei_x_buff *x, cn_slice request)
{
    return encode_error_about(x, "unknown_call", request);
}

void cn_gen_dispatch(cn_node *n, cn_proc *p, const cn_gen_from *from, cn_slice request,
                     const cn_gen_call *rows, size_t nrows)
{
    cn_slice el[CN_GEN_MAX_ARITY];
    int arity = cn_term_tuple(request, el, CN_GEN_MAX_ARITY);
    if (arity < 1) { /* a bare term: an atom matches an arity-0 row */
        arity = 0;
        el[0] = request;
    }
    const cn_gen_call *row = NULL;
    for (size_t i = 0; i < nrows && !row; i++)
        if (rows[i].arity == arity && cn_term_is_atom(el[0], rows[i].tag))
            row = &rows[i];
    ei_x_buff x;
    if (ei_x_new(&x)) {
        cn_log_error("out of memory: a call to %s is not answered",
                     p->name ? p->name : "a process");
        return;
    }
    int rc = row ? row->fn(n, p, from, row, el, &x) : cn_gen_encode_unknown_call(&x, request);
    if (rc != CN_GEN_NOREPLY)
        cn_gen_reply_built(n, p, from, &x, rc);
    ei_x_free(&x);
}

static void system_msg(cn_node *n, cn_proc *p, cn_gen *g, const cn_gen_from *f,
                       cn_slice req)
{
    cn_slice el[2];
    ei_x_buff x;
    if (ei_x_new(&x)) {
        cn_log_error("out of memory: a system message to %s is not answered",
                     p->name ? p->name : "a process");
        return;
    }
    if (cn_term_tuple(req, el, 2) == 2 && cn_term_is_atom(el[0], "terminate")) {
        cn_gen_reply_built(n, p, f, &x, ei_x_encode_atom(&x, "ok"));
        ei_x_free(&x);
        if (g->ops->handle_stop)
            g->ops->handle_stop(n, p, el[1]);
        else
            cn_node_exit(n, p, el[1]);
        return;
    }
    if (cn_term_is_atom(req, "get_state") && g->ops->get_state &&
        g->ops->get_state(n, p, &x) == 0) {
        /* sys:get_state/1 returns the reply as it is: the bare state. */
        cn_gen_reply_x(n, p, f, &x);
    } else {
        x.index = 0;
        cn_gen_reply_built(n, p, f, &x, encode_error_about(&x, "unknown_system_msg", req));
    }
    ei_x_free(&x);
}

static void on_message(cn_node *n, cn_proc *p, cn_slice msg)
{
    cn_gen *g = p->state;
    cn_slice el[3];
    int ar = cn_term_tuple(msg, el, 3);
    cn_gen_from from;
    if (ar == 3 && cn_term_is_atom(el[0], "$gen_call")) {
        if (cn_gen_parse_from(n, el[1], &from)) {
            cn_log_debug("malformed $gen_call From dropped");
            return;
        }
        if (g->ops->handle_call)
            g->ops->handle_call(n, p, &from, el[2]);
        return;
    }
    if (ar == 2 && cn_term_is_atom(el[0], "$gen_cast")) {
        if (g->ops->handle_cast)
            g->ops->handle_cast(n, p, el[1]);
        return;
    }
    if (ar == 3 && cn_term_is_atom(el[0], "system") &&
        cn_gen_parse_from(n, el[1], &from) == 0) {
        system_msg(n, p, g, &from, el[2]);
        return;
    }
    if (g->ops->handle_info)
        g->ops->handle_info(n, p, msg);
}

static void on_down(cn_node *n, cn_proc *p, cn_slice ref, const cn_pid *who,
                    cn_slice reason)
{
    cn_gen *g = p->state;
    if (g->ops->handle_down)
        g->ops->handle_down(n, p, ref, who, reason);
}

static void on_terminate(cn_node *n, cn_proc *p, cn_slice reason)
{
    cn_gen *g = p->state;
    if (g->ops->terminate)
        g->ops->terminate(n, p, reason);
    free(g);
    p->state = NULL;
}

static void on_exit_signal(cn_node *n, cn_proc *p, const cn_pid *from, cn_slice reason,
                           int via_link)
{
    cn_gen *g = p->state;
    if (g->ops->handle_exit)
        g->ops->handle_exit(n, p, from, reason, via_link);
    else
        cn_node_exit_signal_default(n, p, from, reason, via_link);
}

/* A call too large to be read gets {error, request_too_large}; other
 * messages are dropped (counted by the node). */
static void on_too_large(cn_node *n, cn_proc *p, cn_slice head)
{
    cn_gen_from from;
    ei_x_buff x;
    if (cn_gen_parse_call_head(n, head, &from) || ei_x_new(&x))
        return;
    cn_gen_reply_built(n, p, &from, &x, cn_gen_encode_error(&x, "request_too_large"));
    ei_x_free(&x);
}

static const cn_proc_ops gen_proc_ops = {
    .on_too_large = on_too_large,
    .on_message = on_message,
    .on_exit_signal = on_exit_signal,
    .on_down = on_down,
    .on_terminate = on_terminate,
};

/* g made with malloc: it is freed when the process ends, or now when it
 * cannot be spawned. */
static cn_proc *start(cn_node *n, cn_gen *g, const cn_gen_ops *ops, void *user_state,
                      const char *name)
{
    g->ops = ops;
    g->user = user_state;
    cn_proc *p = cn_node_spawn(n, &gen_proc_ops, g, name);
    if (!p)
        free(g);
    return p;
}

cn_proc *cn_gen_start(cn_node *n, const cn_gen_ops *ops, void *user_state,
                      const char *name)
{
    cn_gen *g = malloc(sizeof *g);
    return g ? start(n, g, ops, user_state, name) : NULL;
}

_Static_assert(sizeof(cn_gen) % _Alignof(max_align_t) == 0,
               "a state right after the cn_gen is aligned for any type");

cn_proc *cn_gen_start_with(cn_node *n, const cn_gen_ops *ops, size_t state_size,
                           void **state, const char *name)
{
    if (state_size > SIZE_MAX - sizeof(cn_gen))
        return NULL;
    cn_gen *g = calloc(1, sizeof *g + state_size);
    if (!g)
        return NULL;
    cn_proc *p = start(n, g, ops, g + 1, name);
    if (p)
        *state = g + 1;
    return p;
}

void *cn_gen_state(const cn_proc *p)
{
    const cn_gen *g = p->state;
    return g ? g->user : NULL;
}

int cn_gen_is(const cn_proc *p, const cn_gen_ops *ops)
{
    return p && p->ops == &gen_proc_ops && p->state && ((const cn_gen *)p->state)->ops == ops;
}
