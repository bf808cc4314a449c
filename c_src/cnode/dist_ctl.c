/* dist_ctl.c - see dist_ctl.h. */
#include "dist_ctl.h"

#include <string.h>

static int is_pid(cn_slice s) { return cn_term_kind(s) == CN_KIND_PID; }
static int is_atom(cn_slice s) { return cn_term_kind(s) == CN_KIND_ATOM; }
static int is_ref(cn_slice s) { return cn_term_kind(s) == CN_KIND_REF; }

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
    size_t arity = (size_t)ar;

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
    int op = (int)op64;
    int want_payload = 0;
    out->op = op;
#define ARITY(n) do { if (arity != (n)) return CN_CTL_ESHAPE; } while (0)
    switch (op) {
    case CN_DOP_LINK:
    case CN_DOP_UNLINK:
    case CN_DOP_GROUP_LEADER:
        ARITY(3);
        out->from = el[1];
        out->to = el[2];
        if (!is_pid(out->from) || !is_pid(out->to))
            return CN_CTL_ESHAPE;
        break;
    case CN_DOP_SEND_TT:
        out->traced = 1;
        ARITY(4);
        /* fallthrough */
    case CN_DOP_SEND:
        if (op == CN_DOP_SEND)
            ARITY(3);
        out->op = CN_DOP_SEND;
        out->to = el[2];
        if (!is_pid(out->to))
            return CN_CTL_ESHAPE;
        want_payload = 1;
        break;
    case CN_DOP_SEND_SENDER_TT:
        out->traced = 1;
        ARITY(4);
        /* fallthrough */
    case CN_DOP_SEND_SENDER:
        if (op == CN_DOP_SEND_SENDER)
            ARITY(3);
        out->op = CN_DOP_SEND;
        out->from = el[1];
        out->to = el[2];
        if (!is_pid(out->from) || !is_pid(out->to))
            return CN_CTL_ESHAPE;
        want_payload = 1;
        break;
    case CN_DOP_REG_SEND_TT:
        out->traced = 1;
        ARITY(5);
        /* fallthrough */
    case CN_DOP_REG_SEND:
        if (op == CN_DOP_REG_SEND)
            ARITY(4);
        out->op = CN_DOP_REG_SEND;
        out->from = el[1];
        out->to = el[3];
        if (!is_pid(out->from) || !is_atom(out->to))
            return CN_CTL_ESHAPE;
        want_payload = 1;
        break;
    case CN_DOP_EXIT:
    case CN_DOP_EXIT2:
        ARITY(4);
        out->from = el[1];
        out->to = el[2];
        out->reason = el[3];
        if (!is_pid(out->from) || !is_pid(out->to))
            return CN_CTL_ESHAPE;
        break;
    case CN_DOP_EXIT_TT:
    case CN_DOP_EXIT2_TT:
        ARITY(5);
        out->op = op == CN_DOP_EXIT_TT ? CN_DOP_EXIT : CN_DOP_EXIT2;
        out->traced = 1;
        out->from = el[1];
        out->to = el[2];
        out->reason = el[4];
        if (!is_pid(out->from) || !is_pid(out->to))
            return CN_CTL_ESHAPE;
        break;
    case CN_DOP_MONITOR_P:
    case CN_DOP_DEMONITOR_P:
        ARITY(4);
        out->from = el[1];
        out->to = el[2];
        out->ref = el[3];
        if (!is_pid(out->from) || !(is_pid(out->to) || is_atom(out->to)) ||
            !is_ref(out->ref))
            return CN_CTL_ESHAPE;
        break;
    case CN_DOP_MONITOR_P_EXIT:
        ARITY(5);
        out->from = el[1];
        out->to = el[2];
        out->ref = el[3];
        out->reason = el[4];
        if (!(is_pid(out->from) || is_atom(out->from)) || !is_pid(out->to) ||
            !is_ref(out->ref))
            return CN_CTL_ESHAPE;
        break;
    case CN_DOP_ALIAS_SEND_TT:
        out->traced = 1;
        ARITY(4);
        /* fallthrough */
    case CN_DOP_ALIAS_SEND:
        if (op == CN_DOP_ALIAS_SEND)
            ARITY(3);
        out->op = CN_DOP_ALIAS_SEND;
        out->from = el[1];
        out->ref = el[2];
        if (!is_pid(out->from) || !is_ref(out->ref))
            return CN_CTL_ESHAPE;
        want_payload = 1;
        break;
    case CN_DOP_UNLINK_ID:
    case CN_DOP_UNLINK_ID_ACK:
        ARITY(4);
        if (cn_term_u64(el[1], &out->id) || out->id == 0)
            return CN_CTL_ESHAPE;
        out->from = el[2];
        out->to = el[3];
        if (!is_pid(out->from) || !is_pid(out->to))
            return CN_CTL_ESHAPE;
        break;
    default:
        return CN_CTL_EOP;
    }
#undef ARITY
    if (want_payload != (payload.len > 0))
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
