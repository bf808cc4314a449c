/* dist_ctl.c - see dist_ctl.h. */
#include "dist_ctl.h"

#include <string.h>

static int is_pid(const cn_slice *s) { return s->len && (s->p[0] == 88 || s->p[0] == 103); }
static int is_atom(const cn_slice *s)
{
    return s->len && (s->p[0] == 100 || s->p[0] == 115 || s->p[0] == 118 || s->p[0] == 119);
}
static int is_ref(const cn_slice *s)
{
    return s->len && (s->p[0] == 90 || s->p[0] == 114 || s->p[0] == 101);
}
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

size_t cn_term_len(const unsigned char *buf, size_t len)
{
    size_t used = 0;
    if (cn_term_check(buf, len, NULL, &used) != CN_TERM_OK)
        return 0;
    return used;
}

int cn_ctl_get_atom(const cn_slice *s, const char **name, size_t *len)
{
    if (!is_atom(s))
        return -1;
    size_t n, hdr;
    if (s->p[0] == 100 || s->p[0] == 118) {
        if (s->len < 3)
            return -1;
        n = (size_t)s->p[1] << 8 | s->p[2];
        hdr = 3;
    } else {
        if (s->len < 2)
            return -1;
        n = s->p[1];
        hdr = 2;
    }
    if (hdr + n > s->len)
        return -1;
    *name = (const char *)s->p + hdr;
    *len = n;
    return 0;
}

int cn_ctl_is_atom(const cn_slice *s, const char *name)
{
    const char *a;
    size_t n;
    if (cn_ctl_get_atom(s, &a, &n))
        return 0;
    return n == strlen(name) && memcmp(a, name, n) == 0;
}

int cn_ctl_get_pid(const cn_slice *s, cn_wpid *out)
{
    if (!is_pid(s))
        return -1;
    cn_slice node = {s->p + 1, s->len - 1};
    if (cn_ctl_get_atom(&node, &out->node, &out->node_len))
        return -1;
    size_t off = 1 + (size_t)((const unsigned char *)out->node - node.p) + out->node_len;
    size_t need = s->p[0] == 88 ? 12 : 9;
    if (off + need > s->len)
        return -1;
    out->num = rd32(s->p + off);
    out->serial = rd32(s->p + off + 4);
    out->creation = s->p[0] == 88 ? rd32(s->p + off + 8) : s->p[off + 8];
    return 0;
}

/* Reads a non-negative integer term up to 2^64-1. */
static int get_u64(const cn_slice *s, uint64_t *v)
{
    if (s->len == 2 && s->p[0] == 97) {
        *v = s->p[1];
        return 0;
    }
    if (s->len == 5 && s->p[0] == 98) {
        int32_t i = (int32_t)rd32(s->p + 1);
        if (i < 0)
            return -1;
        *v = (uint64_t)i;
        return 0;
    }
    if (s->len >= 3 && s->p[0] == 110) {
        size_t n = s->p[1];
        if (n > 8 || s->p[2] != 0 || s->len != 3 + n)
            return -1;
        uint64_t r = 0;
        for (size_t i = 0; i < n; i++)
            r |= (uint64_t)s->p[3 + i] << (8 * i);
        *v = r;
        return 0;
    }
    return -1;
}

int cn_ctl_parse(const unsigned char *buf, size_t len,
                 const cn_term_limits *lim, cn_ctl *out)
{
    memset(out, 0, sizeof *out);
    if (len < 1 || buf[0] != 131)
        return CN_CTL_EVERSION;
    size_t used = 0;
    int rc = cn_term_check(buf + 1, len - 1, lim, &used);
    if (rc)
        return rc;
    const unsigned char *t = buf + 1;
    if (used < 2 || t[0] != 104)
        return CN_CTL_ESHAPE;
    size_t arity = t[1];
    if (arity < 3 || arity > 6)
        return CN_CTL_ESHAPE;
    cn_slice el[6];
    size_t pos = 2;
    for (size_t i = 0; i < arity; i++) {
        size_t n = cn_term_len(t + pos, used - pos);
        if (n == 0)
            return CN_CTL_ESHAPE;
        el[i].p = t + pos;
        el[i].len = n;
        pos += n;
    }
    if (pos != used)
        return CN_CTL_ESHAPE;

    /* The payload, if any. */
    const unsigned char *rest = buf + 1 + used;
    size_t rest_len = len - 1 - used;
    cn_slice payload = {NULL, 0};
    if (rest_len > 0) {
        if (rest[0] != 131)
            return CN_CTL_EPAYLOAD;
        if ((rc = cn_term_check_exact(rest + 1, rest_len - 1, lim)))
            return rc;
        payload.p = rest + 1;
        payload.len = rest_len - 1;
    }

    uint64_t op64;
    if (get_u64(&el[0], &op64) || op64 > 255)
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
        if (!is_pid(&out->from) || !is_pid(&out->to))
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
        if (!is_pid(&out->to))
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
        if (!is_pid(&out->from) || !is_pid(&out->to))
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
        if (!is_pid(&out->from) || !is_atom(&out->to))
            return CN_CTL_ESHAPE;
        want_payload = 1;
        break;
    case CN_DOP_EXIT:
    case CN_DOP_EXIT2:
        ARITY(4);
        out->from = el[1];
        out->to = el[2];
        out->reason = el[3];
        if (!is_pid(&out->from) || !is_pid(&out->to))
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
        if (!is_pid(&out->from) || !is_pid(&out->to))
            return CN_CTL_ESHAPE;
        break;
    case CN_DOP_MONITOR_P:
    case CN_DOP_DEMONITOR_P:
        ARITY(4);
        out->from = el[1];
        out->to = el[2];
        out->ref = el[3];
        if (!is_pid(&out->from) || !(is_pid(&out->to) || is_atom(&out->to)) ||
            !is_ref(&out->ref))
            return CN_CTL_ESHAPE;
        break;
    case CN_DOP_MONITOR_P_EXIT:
        ARITY(5);
        out->from = el[1];
        out->to = el[2];
        out->ref = el[3];
        out->reason = el[4];
        if (!(is_pid(&out->from) || is_atom(&out->from)) || !is_pid(&out->to) ||
            !is_ref(&out->ref))
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
        if (!is_pid(&out->from) || !is_ref(&out->ref))
            return CN_CTL_ESHAPE;
        want_payload = 1;
        break;
    case CN_DOP_UNLINK_ID:
    case CN_DOP_UNLINK_ID_ACK:
        ARITY(4);
        if (get_u64(&el[1], &out->id) || out->id == 0)
            return CN_CTL_ESHAPE;
        out->from = el[2];
        out->to = el[3];
        if (!is_pid(&out->from) || !is_pid(&out->to))
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

/* ------------------------------------------------------------ encoding */

int cn_enc_atom(ei_x_buff *x, const char *name, size_t len)
{
    unsigned char h[3];
    if (len > 1020)
        return -1;
    if (len < 256) {
        h[0] = 119;
        h[1] = (unsigned char)len;
        if (ei_x_append_buf(x, (const char *)h, 2))
            return -1;
    } else {
        h[0] = 118;
        h[1] = (unsigned char)(len >> 8);
        h[2] = (unsigned char)len;
        if (ei_x_append_buf(x, (const char *)h, 3))
            return -1;
    }
    return len ? ei_x_append_buf(x, name, (int)len) : 0;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

int cn_enc_pid(ei_x_buff *x, const cn_wpid *p)
{
    unsigned char tag = 88, nums[12];
    if (ei_x_append_buf(x, (const char *)&tag, 1) ||
        cn_enc_atom(x, p->node, p->node_len))
        return -1;
    put32(nums, p->num);
    put32(nums + 4, p->serial);
    put32(nums + 8, p->creation);
    return ei_x_append_buf(x, (const char *)nums, 12);
}

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
    static const char head[6] = {0, 0, 0, 0, 'p', (char)131};
    if (ei_x_append_buf(x, head, 6) || ei_x_encode_tuple_header(x, arity) ||
        ei_x_encode_long(x, op))
        return -1;
    return start;
}

static int payload(ei_x_buff *x, cn_slice p)
{
    static const char v = (char)131;
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
    put32((unsigned char *)x->buff + start, (uint32_t)n);
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
