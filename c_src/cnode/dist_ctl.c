/* dist_ctl.c - see dist_ctl.h. */
#include "dist_ctl.h"

#include <string.h>

/* What each element of a control tuple is: where it goes in a cn_ctl and
 * which kinds of term it may be. */
enum { F_SKIP, F_FROM, F_TO, F_REF, F_REASON, F_ID };
enum { K_ANY = 0, K_PID = 1, K_ATOM = 2, K_REF = 4 };

typedef struct el_rule {
    unsigned char field; /* F_* */
    unsigned char kinds; /* K_* allowed (K_ANY: any term; F_ID: an integer > 0) */
} el_rule;

/* One control operation: its tuple's arity, the op it is read as (the _TT
 * variants fold into their plain op, traced, the token ignored), whether
 * a payload follows, and elements 1.. (element 0 is the op). */
typedef struct ctl_shape {
    unsigned char op, arity, as_op, traced, payload;
    el_rule el[5];
} ctl_shape;

#define PID_FROM {F_FROM, K_PID}
#define PID_TO {F_TO, K_PID}
#define SKIP {F_SKIP, K_ANY}

static const ctl_shape shapes[] = {
    {CN_DOP_LINK, 3, CN_DOP_LINK, 0, 0, {PID_FROM, PID_TO}},
    {CN_DOP_UNLINK, 3, CN_DOP_UNLINK, 0, 0, {PID_FROM, PID_TO}},
    {CN_DOP_GROUP_LEADER, 3, CN_DOP_GROUP_LEADER, 0, 0, {PID_FROM, PID_TO}},
    {CN_DOP_SEND, 3, CN_DOP_SEND, 0, 1, {SKIP, PID_TO}},
    {CN_DOP_SEND_TT, 4, CN_DOP_SEND, 1, 1, {SKIP, PID_TO}},
    {CN_DOP_SEND_SENDER, 3, CN_DOP_SEND, 0, 1, {PID_FROM, PID_TO}},
    {CN_DOP_SEND_SENDER_TT, 4, CN_DOP_SEND, 1, 1, {PID_FROM, PID_TO}},
    {CN_DOP_REG_SEND, 4, CN_DOP_REG_SEND, 0, 1, {PID_FROM, SKIP, {F_TO, K_ATOM}}},
    {CN_DOP_REG_SEND_TT, 5, CN_DOP_REG_SEND, 1, 1, {PID_FROM, SKIP, {F_TO, K_ATOM}}},
    {CN_DOP_EXIT, 4, CN_DOP_EXIT, 0, 0, {PID_FROM, PID_TO, {F_REASON, K_ANY}}},
    {CN_DOP_EXIT2, 4, CN_DOP_EXIT2, 0, 0, {PID_FROM, PID_TO, {F_REASON, K_ANY}}},
    {CN_DOP_EXIT_TT, 5, CN_DOP_EXIT, 1, 0, {PID_FROM, PID_TO, SKIP, {F_REASON, K_ANY}}},
    {CN_DOP_EXIT2_TT, 5, CN_DOP_EXIT2, 1, 0, {PID_FROM, PID_TO, SKIP, {F_REASON, K_ANY}}},
    {CN_DOP_MONITOR_P, 4, CN_DOP_MONITOR_P, 0, 0,
     {PID_FROM, {F_TO, K_PID | K_ATOM}, {F_REF, K_REF}}},
    {CN_DOP_DEMONITOR_P, 4, CN_DOP_DEMONITOR_P, 0, 0,
     {PID_FROM, {F_TO, K_PID | K_ATOM}, {F_REF, K_REF}}},
    {CN_DOP_MONITOR_P_EXIT, 5, CN_DOP_MONITOR_P_EXIT, 0, 0,
     {{F_FROM, K_PID | K_ATOM}, PID_TO, {F_REF, K_REF}, {F_REASON, K_ANY}}},
    {CN_DOP_ALIAS_SEND, 3, CN_DOP_ALIAS_SEND, 0, 1, {PID_FROM, {F_REF, K_REF}}},
    {CN_DOP_ALIAS_SEND_TT, 4, CN_DOP_ALIAS_SEND, 1, 1, {PID_FROM, {F_REF, K_REF}}},
    {CN_DOP_UNLINK_ID, 4, CN_DOP_UNLINK_ID, 0, 0, {{F_ID, K_ANY}, PID_FROM, PID_TO}},
    {CN_DOP_UNLINK_ID_ACK, 4, CN_DOP_UNLINK_ID_ACK, 0, 0, {{F_ID, K_ANY}, PID_FROM, PID_TO}},
};

static int kind_ok(cn_slice s, unsigned kinds)
{
    if (kinds == K_ANY)
        return 1;
    switch (cn_term_kind(s)) {
    case CN_KIND_PID:
        return (kinds & K_PID) != 0;
    case CN_KIND_ATOM:
        return (kinds & K_ATOM) != 0;
    case CN_KIND_REF:
        return (kinds & K_REF) != 0;
    default:
        return 0;
    }
}

/* The elements of a control tuple of shape sh into out. */
static int read_elements(const ctl_shape *sh, const cn_slice *el, cn_ctl *out)
{
    out->op = sh->as_op;
    out->traced = sh->traced;
    for (size_t i = 1; i < sh->arity; i++) {
        el_rule r = sh->el[i - 1];
        cn_slice *to = r.field == F_FROM     ? &out->from
                       : r.field == F_TO     ? &out->to
                       : r.field == F_REF    ? &out->ref
                       : r.field == F_REASON ? &out->reason
                                             : NULL;
        if (r.field == F_ID) {
            if (cn_term_u64(el[i], &out->id) || out->id == 0)
                return CN_CTL_ESHAPE;
        } else if (to) {
            if (!kind_ok(el[i], r.kinds))
                return CN_CTL_ESHAPE;
            *to = el[i];
        }
    }
    return CN_CTL_OK;
}

/* head: buf is only the start of a frame; the payload is not checked. */
static int parse(const unsigned char *buf, size_t len, const cn_term_limits *lim,
                 cn_ctl *out, int head)
{
    memset(out, 0, sizeof *out);
    if (len < 1 || buf[0] != CN_ETF_VERSION)
        return CN_CTL_EVERSION;
    size_t used = 0;
    int rc = cn_term_check(buf + 1, len - 1, lim, &used);
    if (rc)
        return rc;
    cn_slice el[6];
    int ar = cn_term_tuple((cn_slice){buf + 1, used}, el, 6);
    if (ar < 3)
        return CN_CTL_ESHAPE;

    /* The payload, if any. */
    const unsigned char *rest = buf + 1 + used;
    size_t rest_len = len - 1 - used;
    cn_slice payload = {NULL, 0};
    if (rest_len > 0) {
        if (rest[0] != CN_ETF_VERSION)
            return CN_CTL_EPAYLOAD;
        if (!head && (rc = cn_term_check_exact(rest + 1, rest_len - 1, lim)))
            return rc;
        payload.p = rest + 1;
        payload.len = rest_len - 1;
    }

    uint64_t op64;
    if (cn_term_u64(el[0], &op64) || op64 > 255)
        return CN_CTL_ESHAPE;
    const ctl_shape *sh = NULL;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0] && !sh; i++)
        if (shapes[i].op == op64)
            sh = &shapes[i];
    out->op = (int)op64;
    if (!sh)
        return CN_CTL_EOP;
    if ((size_t)ar != sh->arity)
        return CN_CTL_ESHAPE;
    if ((rc = read_elements(sh, el, out)) != CN_CTL_OK)
        return rc;
    if (sh->payload != (payload.len > 0))
        return CN_CTL_EPAYLOAD;
    out->payload = payload;
    return CN_CTL_OK;
}

int cn_ctl_parse(const unsigned char *buf, size_t len,
                 const cn_term_limits *lim, cn_ctl *out)
{
    return parse(buf, len, lim, out, 0);
}

int cn_ctl_parse_head(const unsigned char *buf, size_t len,
                      const cn_term_limits *lim, cn_ctl *out)
{
    return parse(buf, len, lim, out, 1);
}

/* ------------------------------------------------------------ encoding */

static int raw(ei_x_buff *x, cn_slice s)
{
    if (s.len == 0 || s.len > INT32_MAX)
        return -1;
    return ei_x_append_buf(x, (const char *)s.p, (int)s.len);
}

/* Starts a frame: 4 length bytes (patched by end), 'p', 131, tuple header,
 * op. Returns the frame's start index or -1. */
static int begin(ei_x_buff *x, int arity, long op)
{
    int start = x->index;
    static const char head[6] = {0, 0, 0, 0, 'p', (char)CN_ETF_VERSION};
    if (ei_x_append_buf(x, head, 6) || ei_x_encode_tuple_header(x, arity) ||
        ei_x_encode_long(x, op))
        return -1;
    return start;
}

static int payload(ei_x_buff *x, cn_slice p)
{
    static const char v = (char)CN_ETF_VERSION;
    if (ei_x_append_buf(x, &v, 1))
        return -1;
    return raw(x, p);
}

static int end(ei_x_buff *x, int start)
{
    if (start < 0)
        return -1;
    size_t n = (size_t)(x->index - start - 4);
    if (n > UINT32_MAX)
        return -1;
    cn_wr32((unsigned char *)x->buff + start, (uint32_t)n);
    return 0;
}

int cn_frame_send(ei_x_buff *x, const cn_wpid *to, cn_slice pl)
{
    int s = begin(x, 3, CN_DOP_SEND);
    if (s < 0 || ei_x_encode_atom(x, "") || cn_enc_pid(x, to) || payload(x, pl))
        return -1;
    return end(x, s);
}

int cn_frame_reg_send(ei_x_buff *x, const cn_wpid *from, const char *name,
                      cn_slice pl)
{
    int s = begin(x, 4, CN_DOP_REG_SEND);
    if (s < 0 || cn_enc_pid(x, from) || ei_x_encode_atom(x, "") ||
        cn_enc_atom(x, name, strlen(name)) || payload(x, pl))
        return -1;
    return end(x, s);
}

static int two_pids(ei_x_buff *x, long op, const cn_wpid *a, const cn_wpid *b)
{
    int s = begin(x, 3, op);
    if (s < 0 || cn_enc_pid(x, a) || cn_enc_pid(x, b))
        return -1;
    return end(x, s);
}

int cn_frame_link(ei_x_buff *x, const cn_wpid *from, const cn_wpid *to)
{
    return two_pids(x, CN_DOP_LINK, from, to);
}

static int exit_like(ei_x_buff *x, long op, const cn_wpid *from,
                     const cn_wpid *to, cn_slice reason)
{
    int s = begin(x, 4, op);
    if (s < 0 || cn_enc_pid(x, from) || cn_enc_pid(x, to) || raw(x, reason))
        return -1;
    return end(x, s);
}

int cn_frame_exit(ei_x_buff *x, const cn_wpid *from, const cn_wpid *to,
                  cn_slice reason)
{
    return exit_like(x, CN_DOP_EXIT, from, to, reason);
}

int cn_frame_exit2(ei_x_buff *x, const cn_wpid *from, const cn_wpid *to,
                   cn_slice reason)
{
    return exit_like(x, CN_DOP_EXIT2, from, to, reason);
}

static int mon(ei_x_buff *x, long op, const cn_wpid *watcher, cn_slice target,
               cn_slice ref)
{
    int s = begin(x, 4, op);
    if (s < 0 || cn_enc_pid(x, watcher) || raw(x, target) || raw(x, ref))
        return -1;
    return end(x, s);
}

int cn_frame_monitor_p(ei_x_buff *x, const cn_wpid *watcher, cn_slice target,
                       cn_slice ref)
{
    return mon(x, CN_DOP_MONITOR_P, watcher, target, ref);
}

int cn_frame_demonitor_p(ei_x_buff *x, const cn_wpid *watcher,
                         cn_slice target, cn_slice ref)
{
    return mon(x, CN_DOP_DEMONITOR_P, watcher, target, ref);
}

int cn_frame_monitor_p_exit(ei_x_buff *x, cn_slice target,
                            const cn_wpid *watcher, cn_slice ref,
                            cn_slice reason)
{
    int s = begin(x, 5, CN_DOP_MONITOR_P_EXIT);
    if (s < 0 || raw(x, target) || cn_enc_pid(x, watcher) || raw(x, ref) ||
        raw(x, reason))
        return -1;
    return end(x, s);
}

static int unlink_like(ei_x_buff *x, long op, uint64_t id, const cn_wpid *from,
                       const cn_wpid *to)
{
    int s = begin(x, 4, op);
    if (s < 0 || ei_x_encode_ulonglong(x, (unsigned long long)id) ||
        cn_enc_pid(x, from) || cn_enc_pid(x, to))
        return -1;
    return end(x, s);
}

int cn_frame_unlink_id(ei_x_buff *x, uint64_t id, const cn_wpid *from,
                       const cn_wpid *to)
{
    return unlink_like(x, CN_DOP_UNLINK_ID, id, from, to);
}

int cn_frame_unlink_id_ack(ei_x_buff *x, uint64_t id, const cn_wpid *from,
                           const cn_wpid *to)
{
    return unlink_like(x, CN_DOP_UNLINK_ID_ACK, id, from, to);
}

int cn_frame_alias_send(ei_x_buff *x, const cn_wpid *from, cn_slice alias,
                        cn_slice pl)
{
    int s = begin(x, 3, CN_DOP_ALIAS_SEND);
    if (s < 0 || cn_enc_pid(x, from) || raw(x, alias) || payload(x, pl))
        return -1;
    return end(x, s);
}
