/* test_term.c - the C node's term module (term.c, term.h): byte order,
 * tag kinds, the readers on terms BEAM and ei wrote (tuples, lists with
 * and without a proper tail, atoms in all four forms, pids, binaries,
 * integers up to 2^64 - 1, a term as text), and the writers read back by
 * ei (atoms, pids, references, the exit-reason atoms). The validator has
 * its own suite (test_term_check). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../c_src/cnode/term.h"
#include "cnode_terms.h"

#define SL(a) ((cn_slice){(a), sizeof(a)})

/* x reset to empty */
static ei_x_buff *fresh(ei_x_buff *x)
{
    x->index = 0;
    return x;
}

static void byte_order_round_trips(void **st)
{
    (void)st;
    unsigned char b[8];
    cn_wr16(b, 0xBEEF);
    assert_int_equal(b[0], 0xBE);
    assert_int_equal(b[1], 0xEF);
    assert_int_equal(cn_rd16(b), 0xBEEF);
    cn_wr32(b, 0x01020304u);
    assert_memory_equal(b, ((unsigned char[]){1, 2, 3, 4}), 4);
    assert_int_equal(cn_rd32(b), 0x01020304u);
    cn_wr32(b, 0xFFFFFFFFu);
    assert_int_equal(cn_rd32(b), 0xFFFFFFFFu);
    cn_wr64(b, 0x0102030405060708ull);
    assert_memory_equal(b, ((unsigned char[]){1, 2, 3, 4, 5, 6, 7, 8}), 8);
    assert_true(cn_rd64(b) == 0x0102030405060708ull);
    cn_wr64(b, UINT64_MAX);
    assert_true(cn_rd64(b) == UINT64_MAX);
}

static void tags_have_kinds(void **st)
{
    (void)st;
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_long(fresh(&x), 5);
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_INTEGER);
    ei_x_encode_long(fresh(&x), -100000);
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_INTEGER);
    ei_x_encode_ulonglong(fresh(&x), UINT64_MAX);
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_INTEGER);
    ei_x_encode_double(fresh(&x), 1.5);
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_FLOAT);
    ei_x_encode_atom(fresh(&x), "ok");
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_ATOM);
    ei_x_encode_binary(fresh(&x), "ab", 2);
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_BINARY);
    ei_x_encode_tuple_header(fresh(&x), 0);
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_TUPLE);
    ei_x_encode_empty_list(fresh(&x));
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_NIL);
    ei_x_encode_string(fresh(&x), "abc");
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_STRING);
    ei_x_encode_map_header(fresh(&x), 0);
    assert_int_equal(cn_term_kind(cn_x_slice(&x)), CN_KIND_MAP);
    ei_x_free(&x);

    assert_int_equal(cn_term_kind(SL(T_PID)), CN_KIND_PID);
    assert_int_equal(cn_term_kind(SL(T_REF)), CN_KIND_REF);
    assert_int_equal(cn_term_kind(SL(T_PORT)), CN_KIND_PORT);
    assert_int_equal(cn_term_kind(SL(T_BITS)), CN_KIND_BITSTRING);
    assert_int_equal(cn_term_kind(SL(T_FUN)), CN_KIND_FUN);
    assert_int_equal(cn_term_kind(SL(T_EXPORT)), CN_KIND_FUN);
    assert_int_equal(cn_term_kind(SL(T_IMPROPER)), CN_KIND_LIST);
    assert_int_equal(cn_term_kind(SL(T_BIG)), CN_KIND_INTEGER);
    assert_int_equal(cn_tag_kind(CN_ETF_ATOM_CACHE_REF), CN_KIND_OTHER);
    assert_int_equal(cn_tag_kind(CN_ETF_FUN), CN_KIND_OTHER);
    assert_int_equal(cn_tag_kind(CN_ETF_LOCAL), CN_KIND_OTHER);
    assert_int_equal(cn_tag_kind(0), CN_KIND_OTHER);
    assert_int_equal(cn_term_kind((cn_slice){NULL, 0}), CN_KIND_OTHER);
}

static void term_len_is_the_first_term(void **st)
{
    (void)st;
    unsigned char b[sizeof T_MAP + 1];
    memcpy(b, T_MAP, sizeof T_MAP);
    b[sizeof T_MAP] = CN_ETF_NIL; /* a second term after it */
    assert_int_equal(cn_term_len(b, sizeof b), sizeof T_MAP);
    assert_int_equal(cn_term_len(b, sizeof T_MAP - 1), 0); /* cut short */
    assert_int_equal(cn_term_len(b, 0), 0);
}

static void tuples_split_into_elements(void **st)
{
    (void)st;
    cn_slice el[9];
    /* BEAM's {ok, <<"binary">>, "chars", [], {}, 2.5, ...} */
    assert_int_equal(cn_term_tuple(SL(T_MISC), el, 9), 9);
    assert_true(cn_term_is_atom(el[0], "ok"));
    assert_int_equal(cn_term_kind(el[1]), CN_KIND_BINARY);
    assert_int_equal(cn_term_kind(el[2]), CN_KIND_STRING);
    assert_int_equal(cn_term_kind(el[3]), CN_KIND_NIL);
    assert_int_equal(cn_term_tuple(SL(T_MISC), el, 8), -1); /* more than max */
    assert_int_equal(cn_term_tuple(SL(T_PID), el, 9), -1);  /* not a tuple */

    /* a large tuple of 300 integers; and {} */
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 300);
    for (long i = 0; i < 300; i++)
        ei_x_encode_long(&x, i);
    cn_slice *many = calloc(300, sizeof *many);
    assert_int_equal(cn_term_tuple(cn_x_slice(&x), many, 300), 300);
    uint64_t v;
    assert_int_equal(cn_term_u64(many[299], &v), 0);
    assert_int_equal(v, 299);
    free(many);
    ei_x_encode_tuple_header(fresh(&x), 0);
    assert_int_equal(cn_term_tuple(cn_x_slice(&x), el, 0), 0);
    /* an element cut short */
    ei_x_encode_tuple_header(fresh(&x), 2);
    ei_x_encode_atom(&x, "a");
    ei_x_encode_binary(&x, "xyz", 3);
    cn_slice cut = cn_x_slice(&x);
    cut.len--;
    assert_int_equal(cn_term_tuple(cut, el, 2), -1);
    ei_x_free(&x);
}

static void lists_give_elements_and_tail(void **st)
{
    (void)st;
    cn_slice el[4], tail;
    ei_x_buff x;
    ei_x_new(&x);
    /* [] */
    ei_x_encode_empty_list(&x);
    assert_int_equal(cn_term_list(cn_x_slice(&x), el, 4, &tail), 0);
    assert_int_equal(tail.len, 0);
    /* [a, b, c]: a proper list, tail [] */
    ei_x_encode_list_header(fresh(&x), 3);
    ei_x_encode_atom(&x, "a");
    ei_x_encode_atom(&x, "b");
    ei_x_encode_atom(&x, "c");
    ei_x_encode_empty_list(&x);
    assert_int_equal(cn_term_list(cn_x_slice(&x), el, 4, &tail), 3);
    assert_true(cn_term_is_atom(el[0], "a"));
    assert_true(cn_term_is_atom(el[2], "c"));
    assert_int_equal(cn_term_kind(tail), CN_KIND_NIL);
    /* only the first max are filled; the count is the list's */
    memset(el, 0, sizeof el);
    assert_int_equal(cn_term_list(cn_x_slice(&x), el, 1, NULL), 3);
    assert_true(cn_term_is_atom(el[0], "b") == 0 && cn_term_is_atom(el[0], "a"));
    assert_null(el[1].p);
    /* BEAM's [alias | Ref]: improper, the tail is the reference */
    assert_int_equal(cn_term_list(SL(T_IMPROPER), el, 4, &tail), 1);
    assert_true(cn_term_is_atom(el[0], "alias"));
    assert_int_equal(cn_term_kind(tail), CN_KIND_REF);
    assert_ptr_equal(tail.p + tail.len, T_IMPROPER + sizeof T_IMPROPER);
    /* not lists: a STRING_EXT, an atom */
    ei_x_encode_string(fresh(&x), "abc");
    assert_int_equal(cn_term_list(cn_x_slice(&x), el, 4, NULL), -1);
    assert_int_equal(cn_term_list(cn_atom_normal(), el, 4, NULL), -1);
    ei_x_free(&x);
}

static void atoms_in_every_form(void **st)
{
    (void)st;
    const unsigned char atom_ext[] = {CN_ETF_ATOM, 0, 2, 'o', 'k'};
    const unsigned char small_atom[] = {CN_ETF_SMALL_ATOM, 2, 'o', 'k'};
    const unsigned char utf8[] = {CN_ETF_ATOM_UTF8, 0, 2, 'o', 'k'};
    const unsigned char small_utf8[] = {CN_ETF_SMALL_ATOM_UTF8, 2, 'o', 'k'};
    const unsigned char *forms[] = {atom_ext, small_atom, utf8, small_utf8};
    const size_t lens[] = {sizeof atom_ext, sizeof small_atom, sizeof utf8, sizeof small_utf8};
    for (int i = 0; i < 4; i++) {
        cn_slice s = {forms[i], lens[i]};
        const char *a;
        size_t n;
        assert_int_equal(cn_term_atom(s, &a, &n), 0);
        assert_int_equal(n, 2);
        assert_memory_equal(a, "ok", 2);
        assert_true(cn_term_is_atom(s, "ok"));
        assert_false(cn_term_is_atom(s, "o"));
        assert_false(cn_term_is_atom(s, "okay"));
        s.len--; /* the text cut short */
        assert_int_equal(cn_term_atom(s, &a, &n), -1);
        assert_false(cn_term_is_atom(s, "ok"));
    }
    const unsigned char empty[] = {CN_ETF_SMALL_ATOM_UTF8, 0};
    const char *a;
    size_t n;
    assert_int_equal(cn_term_atom(SL(empty), &a, &n), 0);
    assert_int_equal(n, 0);
    assert_true(cn_term_is_atom(SL(empty), ""));
    assert_int_equal(cn_term_atom(SL(T_PID), &a, &n), -1);
}

static void pids_binaries_and_integers(void **st)
{
    (void)st;
    /* BEAM's NEW_PID_EXT */
    cn_wpid w;
    assert_int_equal(cn_term_pid(SL(T_PID), &w), 0);
    assert_int_equal(w.node_len, strlen("gen3341@vm"));
    assert_memory_equal(w.node, "gen3341@vm", w.node_len);
    assert_int_equal(w.num, 102);
    assert_int_equal(w.serial, 0);
    assert_int_equal(w.creation, 0x6b09eb51u);
    /* the old PID_EXT: an 8-bit creation */
    const unsigned char old_pid[] = {CN_ETF_PID, CN_ETF_SMALL_ATOM_UTF8, 3, 'a', '@', 'b',
                                     0, 0, 0, 7, 0, 0, 0, 1, 3};
    assert_int_equal(cn_term_pid(SL(old_pid), &w), 0);
    assert_int_equal(w.num, 7);
    assert_int_equal(w.serial, 1);
    assert_int_equal(w.creation, 3);
    assert_int_equal(cn_term_pid((cn_slice){old_pid, sizeof old_pid - 1}, &w), -1);
    assert_int_equal(cn_term_pid(SL(T_REF), &w), -1);

    ei_x_buff x;
    ei_x_new(&x);
    const char *p;
    size_t len;
    ei_x_encode_binary(&x, "hello", 5);
    assert_int_equal(cn_term_binary(cn_x_slice(&x), &p, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(p, "hello", 5);
    cn_slice longer = cn_x_slice(&x);
    longer.len++; /* must fill the slice */
    assert_int_equal(cn_term_binary(longer, &p, &len), -1);
    ei_x_encode_atom(fresh(&x), "hello");
    assert_int_equal(cn_term_binary(cn_x_slice(&x), &p, &len), -1);

    uint64_t v;
    const unsigned long long ok[] = {0, 255, 256, 0x7fffffff, 0x80000000ull, UINT64_MAX};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ei_x_encode_ulonglong(fresh(&x), ok[i]);
        assert_int_equal(cn_term_u64(cn_x_slice(&x), &v), 0);
        assert_true(v == ok[i]);
    }
    ei_x_encode_long(fresh(&x), -1);
    assert_int_equal(cn_term_u64(cn_x_slice(&x), &v), -1);
    ei_x_encode_longlong(fresh(&x), -5000000000ll); /* a negative big */
    assert_int_equal(cn_term_u64(cn_x_slice(&x), &v), -1);
    assert_int_equal(cn_term_u64(SL(T_BIG), &v), -1); /* 13 digits: > 2^64 */
    ei_x_encode_atom(fresh(&x), "one");
    assert_int_equal(cn_term_u64(cn_x_slice(&x), &v), -1);
    ei_x_free(&x);
}

static void terms_as_text(void **st)
{
    (void)st;
    char buf[16];
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_binary(&x, "as it is", 8);
    cn_term_text(cn_x_slice(&x), buf, sizeof buf);
    assert_string_equal(buf, "as it is");
    ei_x_encode_binary(fresh(&x), "a binary longer than the buffer", 31);
    cn_term_text(cn_x_slice(&x), buf, sizeof buf);
    assert_string_equal(buf, "a binary longer");
    ei_x_encode_tuple_header(fresh(&x), 2);
    ei_x_encode_atom(&x, "error");
    ei_x_encode_long(&x, 42);
    cn_term_text(cn_x_slice(&x), buf, sizeof buf);
    assert_string_equal(buf, "{error, 42}");
    char big[64];
    cn_term_text(cn_atom_noconnection(), big, sizeof big);
    assert_string_equal(big, "noconnection");
    ei_x_free(&x);
}

static void writers_read_back(void **st)
{
    (void)st;
    ei_x_buff x;
    ei_x_new(&x);
    char atom[MAXATOMLEN_UTF8];
    int index = 0;
    /* atoms: small and long forms */
    assert_int_equal(cn_enc_atom(&x, "council_ex", 10), 0);
    assert_int_equal(x.buff[0], CN_ETF_SMALL_ATOM_UTF8);
    assert_int_equal(ei_decode_atom(x.buff, &index, atom), 0);
    assert_string_equal(atom, "council_ex");
    char name[300];
    memset(name, 'n', sizeof name);
    assert_int_equal(cn_enc_atom(fresh(&x), name, sizeof name), 0);
    assert_int_equal((unsigned char)x.buff[0], CN_ETF_ATOM_UTF8);
    const char *a;
    size_t n;
    assert_int_equal(cn_term_atom(cn_x_slice(&x), &a, &n), 0);
    assert_int_equal(n, sizeof name);
    assert_int_equal(cn_enc_atom(fresh(&x), name, 1021), -1); /* too long */
    assert_int_equal(cn_enc_atom(fresh(&x), "", 0), 0);
    assert_true(cn_term_is_atom(cn_x_slice(&x), ""));

    /* a pid, read back by us and by ei */
    const cn_wpid pid = {"council@host", 12, 12, 7, 0x12345678u};
    assert_int_equal(cn_enc_pid(fresh(&x), &pid), 0);
    cn_wpid w;
    assert_int_equal(cn_term_pid(cn_x_slice(&x), &w), 0);
    assert_int_equal(w.num, 12);
    assert_int_equal(w.serial, 7);
    assert_int_equal(w.creation, 0x12345678u);
    erlang_pid ep;
    index = 0;
    assert_int_equal(ei_decode_pid(x.buff, &index, &ep), 0);
    assert_int_equal(index, x.index);
    assert_string_equal(ep.node, "council@host");
    assert_int_equal(ep.num, 12);

    /* a reference, read by ei */
    unsigned char ref[CN_TERM_REF_LEN(12)];
    const uint32_t id[3] = {1, 2, 3};
    assert_int_equal(cn_term_ref(ref, sizeof ref, "council@host", 12, 9, id), sizeof ref);
    assert_int_equal(cn_term_kind(SL(ref)), CN_KIND_REF);
    assert_int_equal(cn_term_check_exact(ref, sizeof ref, NULL), CN_TERM_OK);
    erlang_ref er;
    index = 0;
    assert_int_equal(ei_decode_ref((const char *)ref, &index, &er), 0);
    assert_string_equal(er.node, "council@host");
    assert_int_equal(er.len, 3);
    assert_int_equal(er.n[2], 3);
    assert_int_equal(er.creation, 9);
    assert_int_equal(cn_term_ref(ref, sizeof ref - 1, "council@host", 12, 9, id), 0);

    /* the exit-reason atoms */
    struct { cn_slice s; const char *name; } atoms[] = {
        {cn_atom_normal(), "normal"}, {cn_atom_shutdown(), "shutdown"},
        {cn_atom_noproc(), "noproc"}, {cn_atom_noconnection(), "noconnection"},
        {cn_atom_killed(), "killed"},
    };
    for (size_t i = 0; i < sizeof atoms / sizeof atoms[0]; i++) {
        assert_int_equal(cn_term_check_exact(atoms[i].s.p, atoms[i].s.len, NULL), CN_TERM_OK);
        assert_true(cn_term_is_atom(atoms[i].s, atoms[i].name));
    }
    ei_x_free(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(byte_order_round_trips),
        cmocka_unit_test(tags_have_kinds),
        cmocka_unit_test(term_len_is_the_first_term),
        cmocka_unit_test(tuples_split_into_elements),
        cmocka_unit_test(lists_give_elements_and_tail),
        cmocka_unit_test(atoms_in_every_form),
        cmocka_unit_test(pids_binaries_and_integers),
        cmocka_unit_test(terms_as_text),
        cmocka_unit_test(writers_read_back),
    };
    return cmocka_run_group_tests_name("term", tests, NULL, NULL);
}
