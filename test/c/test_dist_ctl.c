/* test_dist_ctl.c - control messages: parsing BEAM's tuples, encode/parse
 * round trips of every frame we send, the improper alias tag kept byte for
 * byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../c_src/cnode/dist_ctl.h"
#include "../../c_src/cnode/gen_server.h"
#include "cnode_terms.h"

/* 131 ++ term, optionally ++ 131 ++ payload */
static size_t with_version(unsigned char *out, const unsigned char *ctl, size_t n,
                           const unsigned char *pl, size_t pn)
{
    out[0] = 131;
    memcpy(out + 1, ctl, n);
    if (!pl)
        return n + 1;
    out[n + 1] = 131;
    memcpy(out + n + 2, pl, pn);
    return n + 2 + pn;
}

static const cn_wpid ME = {"council@host", 12, 7, 3, 0x1234567};
static const cn_wpid THEM = {"beam@host", 9, 90, 0, 42};

static void parses_beam_control_tuples(void **st)
{
    (void)st;
    unsigned char b[512];
    cn_ctl m;
    size_t n = with_version(b, T_CTL_SEND, sizeof T_CTL_SEND, T_GENCALL, sizeof T_GENCALL);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_SEND);
    assert_int_equal(m.payload.len, sizeof T_GENCALL);
    assert_memory_equal(m.payload.p, T_GENCALL, sizeof T_GENCALL);
    cn_wpid w;
    assert_int_equal(cn_term_pid(m.to, &w), 0);
    assert_int_equal(w.num, 102);

    n = with_version(b, T_CTL_REG, sizeof T_CTL_REG, T_MISC, sizeof T_MISC);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_REG_SEND);
    assert_true(cn_term_is_atom(m.to, "council_ex"));

    n = with_version(b, T_CTL_MON, sizeof T_CTL_MON, NULL, 0);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_MONITOR_P);
    assert_true(cn_term_is_atom(m.to, "council_ex"));
    assert_int_equal(m.ref.p[0], 90);

    n = with_version(b, T_CTL_UNLINK, sizeof T_CTL_UNLINK, NULL, 0);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_OK);
    assert_int_equal(m.op, CN_DOP_UNLINK_ID);
    assert_true(m.id == 123456789012ull);
}

static void rejects_bad_control_messages(void **st)
{
    (void)st;
    unsigned char b[512];
    cn_ctl m;
    /* MONITOR_P without payload is fine; SEND without payload is not */
    size_t n = with_version(b, T_CTL_SEND, sizeof T_CTL_SEND, NULL, 0);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_EPAYLOAD);
    n = with_version(b, T_CTL_MON, sizeof T_CTL_MON, T_BIG, sizeof T_BIG);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_EPAYLOAD);
    /* payload with trailing garbage */
    n = with_version(b, T_CTL_SEND, sizeof T_CTL_SEND, T_BIG, sizeof T_BIG);
    b[n++] = 106;
    assert_int_not_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_OK);
    /* no version byte */
    assert_int_equal(cn_ctl_parse(T_CTL_SEND, sizeof T_CTL_SEND, NULL, &m), CN_CTL_EVERSION);
    /* not a tuple, wrong arity, unknown op */
    n = with_version(b, T_BIG, sizeof T_BIG, NULL, 0);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_ESHAPE);
    const unsigned char op99[] = {104, 3, 97, 99, 106, 106};
    n = with_version(b, op99, sizeof op99, NULL, 0);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_EOP);
    const unsigned char link_arity[] = {104, 4, 97, 1, 106, 106, 106};
    n = with_version(b, link_arity, sizeof link_arity, NULL, 0);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_ESHAPE);
    /* UNLINK_ID with id 0 or a negative id */
    unsigned char u[sizeof T_CTL_UNLINK + 8];
    size_t un = sizeof T_CTL_UNLINK;
    memcpy(u, T_CTL_UNLINK, un);
    /* replace the small big (110,5,0,...) by small int 0 */
    unsigned char z[256];
    z[0] = 104; z[1] = 4; z[2] = 97; z[3] = 35; z[4] = 97; z[5] = 0;
    memcpy(z + 6, u + 4 + 8, un - 12);
    n = with_version(b, z, 6 + un - 12, NULL, 0);
    assert_int_equal(cn_ctl_parse(b, n, NULL, &m), CN_CTL_ESHAPE);
}

static void pid_eq(const cn_slice *s, const cn_wpid *want);

/* One control tuple {Op, Elements...} built from a description: 'p' a
 * pid (ME for the first, THEM after), 'a' an atom, 'r' a reference, 't' a
 * trace token or reason (an atom), '0' the empty atom. Parsed with the
 * given payload (NULL: none); m's slices stay valid until the next call. */
static int parse_built(int op, const char *els, const unsigned char *pl, size_t pn, cn_ctl *m)
{
    ei_x_buff x;
    assert_int_equal(ei_x_new(&x), 0);
    assert_int_equal(ei_x_encode_tuple_header(&x, 1 + (int)strlen(els)), 0);
    assert_int_equal(ei_x_encode_long(&x, op), 0);
    int pids = 0;
    for (const char *e = els; *e; e++) {
        int rc = *e == 'p'   ? cn_enc_pid(&x, pids++ ? &THEM : &ME)
                 : *e == 'a' ? ei_x_encode_atom(&x, "council_ex")
                 : *e == 'r' ? ei_x_append_buf(&x, (const char *)T_REF, sizeof T_REF)
                 : *e == 't' ? ei_x_encode_atom(&x, "tok")
                             : ei_x_encode_atom(&x, "");
        assert_int_equal(rc, 0);
    }
    /* static: m's slices are views into it, read after the return (until
     * the next call) */
    static unsigned char b[1024];
    size_t n = with_version(b, (const unsigned char *)x.buff, (size_t)x.index, pl, pn);
    ei_x_free(&x);
    return cn_ctl_parse(b, n, NULL, m);
}

/* The _TT variants read as their plain op, traced, the token left out;
 * SEND_SENDER as SEND with its sender; each element's kind is checked. */
static void every_operation_and_its_traced_variant(void **st)
{
    (void)st;
    cn_ctl m;
    const unsigned char *pl = T_MISC;
    size_t pn = sizeof T_MISC;
    static const struct {
        int op;
        const char *els;
        int payload, as_op, traced;
        const char *fields; /* f from, t to, r ref, e reason, in that order */
    } ok[] = {
        {CN_DOP_LINK, "pp", 0, CN_DOP_LINK, 0, "ft"},
        {CN_DOP_UNLINK, "pp", 0, CN_DOP_UNLINK, 0, "ft"},
        {CN_DOP_GROUP_LEADER, "pp", 0, CN_DOP_GROUP_LEADER, 0, "ft"},
        {CN_DOP_SEND, "0p", 1, CN_DOP_SEND, 0, "t"},
        {CN_DOP_SEND_TT, "0pt", 1, CN_DOP_SEND, 1, "t"},
        {CN_DOP_SEND_SENDER, "pp", 1, CN_DOP_SEND, 0, "ft"},
        {CN_DOP_SEND_SENDER_TT, "ppt", 1, CN_DOP_SEND, 1, "ft"},
        {CN_DOP_REG_SEND, "p0a", 1, CN_DOP_REG_SEND, 0, "ft"},
        {CN_DOP_REG_SEND_TT, "p0at", 1, CN_DOP_REG_SEND, 1, "ft"},
        {CN_DOP_EXIT, "ppt", 0, CN_DOP_EXIT, 0, "fte"},
        {CN_DOP_EXIT2, "ppt", 0, CN_DOP_EXIT2, 0, "fte"},
        {CN_DOP_EXIT_TT, "pptt", 0, CN_DOP_EXIT, 1, "fte"},
        {CN_DOP_EXIT2_TT, "pptt", 0, CN_DOP_EXIT2, 1, "fte"},
        {CN_DOP_MONITOR_P, "par", 0, CN_DOP_MONITOR_P, 0, "ftr"},
        {CN_DOP_MONITOR_P, "ppr", 0, CN_DOP_MONITOR_P, 0, "ftr"},
        {CN_DOP_DEMONITOR_P, "par", 0, CN_DOP_DEMONITOR_P, 0, "ftr"},
        {CN_DOP_MONITOR_P_EXIT, "aprt", 0, CN_DOP_MONITOR_P_EXIT, 0, "ftre"},
        {CN_DOP_MONITOR_P_EXIT, "pprt", 0, CN_DOP_MONITOR_P_EXIT, 0, "ftre"},
        {CN_DOP_ALIAS_SEND, "pr", 1, CN_DOP_ALIAS_SEND, 0, "fr"},
        {CN_DOP_ALIAS_SEND_TT, "prt", 1, CN_DOP_ALIAS_SEND, 1, "fr"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int rc = parse_built(ok[i].op, ok[i].els, ok[i].payload ? pl : NULL, pn, &m);
        if (rc != CN_CTL_OK)
            fail_msg("op %d (%s): %d", ok[i].op, ok[i].els, rc);
        assert_int_equal(m.op, ok[i].as_op);
        assert_int_equal(m.traced, ok[i].traced);
        assert_int_equal(m.payload.len, ok[i].payload ? pn : 0);
        assert_int_equal(m.from.len != 0, strchr(ok[i].fields, 'f') != NULL);
        assert_int_equal(m.to.len != 0, strchr(ok[i].fields, 't') != NULL);
        assert_int_equal(m.ref.len != 0, strchr(ok[i].fields, 'r') != NULL);
        assert_int_equal(m.reason.len != 0, strchr(ok[i].fields, 'e') != NULL);
    }
    assert_int_equal(parse_built(CN_DOP_SEND_SENDER_TT, "ppt", pl, pn, &m), CN_CTL_OK);
    pid_eq(&m.from, &ME);
    pid_eq(&m.to, &THEM);

    /* a wrong kind, arity or payload in each family */
    static const struct {
        int op;
        const char *els;
        int payload, rc;
    } bad[] = {
        {CN_DOP_LINK, "pa", 0, CN_CTL_ESHAPE},
        {CN_DOP_SEND, "0a", 1, CN_CTL_ESHAPE},
        {CN_DOP_SEND_TT, "0p", 1, CN_CTL_ESHAPE},
        {CN_DOP_SEND_TT, "0pt", 0, CN_CTL_EPAYLOAD},
        {CN_DOP_SEND_SENDER, "ap", 1, CN_CTL_ESHAPE},
        {CN_DOP_REG_SEND, "p0p", 1, CN_CTL_ESHAPE},
        {CN_DOP_REG_SEND_TT, "p0a", 1, CN_CTL_ESHAPE},
        {CN_DOP_EXIT, "apt", 0, CN_CTL_ESHAPE},
        {CN_DOP_EXIT, "ppt", 1, CN_CTL_EPAYLOAD},
        {CN_DOP_EXIT2_TT, "ppt", 0, CN_CTL_ESHAPE},
        {CN_DOP_MONITOR_P, "pap", 0, CN_CTL_ESHAPE},
        {CN_DOP_MONITOR_P, "aar", 0, CN_CTL_ESHAPE},
        {CN_DOP_MONITOR_P_EXIT, "aart", 0, CN_CTL_ESHAPE},
        {CN_DOP_ALIAS_SEND, "pp", 1, CN_CTL_ESHAPE},
        {CN_DOP_ALIAS_SEND_TT, "pr", 1, CN_CTL_ESHAPE},
        {CN_DOP_UNLINK_ID, "app", 0, CN_CTL_ESHAPE},
        {5, "pp", 0, CN_CTL_EOP},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse_built(bad[i].op, bad[i].els, bad[i].payload ? pl : NULL, pn, &m);
        if (rc != bad[i].rc)
            fail_msg("op %d (%s): %d, not %d", bad[i].op, bad[i].els, rc, bad[i].rc);
    }
}

/* Parses the first frame in x: checks the length prefix and 'p'. */
static void parse_frame(const ei_x_buff *x, int start, cn_ctl *m)
{
    const unsigned char *f = (const unsigned char *)x->buff + start;
    uint32_t len = (uint32_t)f[0] << 24 | (uint32_t)f[1] << 16 | (uint32_t)f[2] << 8 | f[3];
    assert_int_equal(len + 4, (uint32_t)(x->index - start));
    assert_int_equal(f[4], 'p');
    assert_int_equal(cn_ctl_parse(f + 5, len - 1, NULL, m), CN_CTL_OK);
}

static void pid_eq(const cn_slice *s, const cn_wpid *want)
{
    cn_wpid w;
    assert_int_equal(cn_term_pid(*s, &w), 0);
    assert_int_equal(w.node_len, strlen(want->node));
    assert_memory_equal(w.node, want->node, w.node_len);
    assert_int_equal(w.num, want->num);
    assert_int_equal(w.serial, want->serial);
    assert_int_equal(w.creation, want->creation);
}

static void every_encoder_round_trips(void **st)
{
    (void)st;
    ei_x_buff x;
    cn_ctl m;
    cn_slice payload = {T_MAP, sizeof T_MAP};
    cn_slice reason = {T_MISC, sizeof T_MISC};
    cn_slice ref = {T_REF, sizeof T_REF};
    const unsigned char name_atom[] = {119, 5, 'g', 'h', 'o', 's', 't'};
    cn_slice target = {name_atom, sizeof name_atom};

    ei_x_new(&x);
    assert_int_equal(cn_frame_send(&x, &THEM, payload), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_SEND);
    pid_eq(&m.to, &THEM);
    assert_memory_equal(m.payload.p, T_MAP, sizeof T_MAP);

    x.index = 0;
    assert_int_equal(cn_frame_reg_send(&x, &ME, "net_kernel", payload), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_REG_SEND);
    pid_eq(&m.from, &ME);
    assert_true(cn_term_is_atom(m.to, "net_kernel"));

    x.index = 0;
    assert_int_equal(cn_frame_link(&x, &ME, &THEM), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_LINK);
    pid_eq(&m.from, &ME);
    pid_eq(&m.to, &THEM);

    x.index = 0;
    assert_int_equal(cn_frame_exit(&x, &ME, &THEM, reason), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_EXIT);
    assert_memory_equal(m.reason.p, T_MISC, sizeof T_MISC);

    x.index = 0;
    assert_int_equal(cn_frame_exit2(&x, &ME, &THEM, reason), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_EXIT2);

    x.index = 0;
    assert_int_equal(cn_frame_monitor_p(&x, &ME, target, ref), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_MONITOR_P);
    assert_true(cn_term_is_atom(m.to, "ghost"));
    assert_memory_equal(m.ref.p, T_REF, sizeof T_REF);

    x.index = 0;
    assert_int_equal(cn_frame_demonitor_p(&x, &ME, target, ref), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_DEMONITOR_P);

    x.index = 0;
    assert_int_equal(cn_frame_monitor_p_exit(&x, target, &THEM, ref, reason), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_MONITOR_P_EXIT);
    assert_true(cn_term_is_atom(m.from, "ghost"));
    pid_eq(&m.to, &THEM);
    assert_memory_equal(m.reason.p, T_MISC, sizeof T_MISC);

    x.index = 0;
    assert_int_equal(cn_frame_unlink_id(&x, UINT64_MAX, &ME, &THEM), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_UNLINK_ID);
    assert_true(m.id == UINT64_MAX);

    x.index = 0;
    assert_int_equal(cn_frame_unlink_id_ack(&x, 5, &ME, &THEM), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_UNLINK_ID_ACK);
    assert_true(m.id == 5);

    x.index = 0;
    assert_int_equal(cn_frame_alias_send(&x, &ME, ref, payload), 0);
    parse_frame(&x, 0, &m);
    assert_int_equal(m.op, CN_DOP_ALIAS_SEND);
    assert_memory_equal(m.ref.p, T_REF, sizeof T_REF);
    assert_memory_equal(m.payload.p, T_MAP, sizeof T_MAP);

    /* two frames back to back in one buffer */
    x.index = 0;
    cn_frame_link(&x, &ME, &THEM);
    int second = x.index;
    cn_frame_send(&x, &THEM, payload);
    parse_frame(&x, second, &m);
    assert_int_equal(m.op, CN_DOP_SEND);
    ei_x_free(&x);
}

static void alias_tag_is_found_and_kept_byte_for_byte(void **st)
{
    (void)st;
    size_t off, len;
    cn_slice tag = {T_IMPROPER, sizeof T_IMPROPER};
    assert_int_equal(cn_gen_tag_alias(tag, &off, &len), 0);
    assert_int_equal(T_IMPROPER[off], 90);
    assert_int_equal(off + len, sizeof T_IMPROPER);

    /* [[alias | Ref] | extra]: LIST_EXT 1, inner, tail nil */
    unsigned char multi[128];
    multi[0] = 108; multi[1] = 0; multi[2] = 0; multi[3] = 0; multi[4] = 1;
    memcpy(multi + 5, T_IMPROPER, sizeof T_IMPROPER);
    multi[5 + sizeof T_IMPROPER] = 106;
    cn_slice mt = {multi, 6 + sizeof T_IMPROPER};
    assert_int_equal(cn_gen_tag_alias(mt, &off, &len), 0);
    assert_int_equal(multi[off], 90);

    /* a plain ref tag has no alias */
    cn_slice plain = {T_REF, sizeof T_REF};
    assert_int_equal(cn_gen_tag_alias(plain, &off, &len), -1);
    /* [alias, Ref] (proper list) is not the alias form */
    unsigned char proper[128];
    proper[0] = 108; proper[1] = 0; proper[2] = 0; proper[3] = 0; proper[4] = 2;
    memcpy(proper + 5, T_IMPROPER + 5, sizeof T_IMPROPER - 5);
    proper[sizeof T_IMPROPER] = 106;
    cn_slice pt = {proper, sizeof T_IMPROPER + 1};
    assert_int_equal(cn_gen_tag_alias(pt, &off, &len), -1);

    /* The reply {Tag, Reply} built as the gen_server does keeps the
     * improper tag exactly. */
    ei_x_buff reply, frame;
    ei_x_new(&reply);
    ei_x_encode_tuple_header(&reply, 2);
    ei_x_append_buf(&reply, (const char *)T_IMPROPER, sizeof T_IMPROPER);
    ei_x_encode_atom(&reply, "pong");
    ei_x_new(&frame);
    cn_gen_tag_alias(tag, &off, &len);
    assert_int_equal(cn_frame_alias_send(&frame, &ME, (cn_slice){T_IMPROPER + off, len},
                                         (cn_slice){(unsigned char *)reply.buff, (size_t)reply.index}), 0);
    cn_ctl m;
    parse_frame(&frame, 0, &m);
    assert_int_equal(m.payload.p[0], 104);
    assert_memory_equal(m.payload.p + 2, T_IMPROPER, sizeof T_IMPROPER);
    assert_memory_equal(m.ref.p, T_IMPROPER + off, len);
    ei_x_free(&reply);
    ei_x_free(&frame);
}

static void tuple_splitting(void **st)
{
    (void)st;
    cn_slice el[3];
    cn_slice gc = {T_GENCALL, sizeof T_GENCALL};
    assert_int_equal(cn_term_tuple(gc, el, 3), 3);
    assert_true(cn_term_is_atom(el[0], "$gen_call"));
    assert_int_equal(cn_term_tuple(gc, el, 2), -1);
    cn_slice notuple = {T_BIG, sizeof T_BIG};
    assert_int_equal(cn_term_tuple(notuple, el, 3), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_beam_control_tuples),
        cmocka_unit_test(rejects_bad_control_messages),
        cmocka_unit_test(every_operation_and_its_traced_variant),
        cmocka_unit_test(every_encoder_round_trips),
        cmocka_unit_test(alias_tag_is_found_and_kept_byte_for_byte),
        cmocka_unit_test(tuple_splitting),
    };
    return cmocka_run_group_tests_name("dist_ctl", tests, NULL, NULL);
}
