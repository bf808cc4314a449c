/* test_term_check.c - the ETF validator: real BEAM terms accepted; truncated,
 * malformed, deep, oversized and unsupported terms rejected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../c_src/cnode/term.h"
#include "cnode_terms.h"

typedef struct sample {
    const char *name;
    const unsigned char *b;
    size_t n;
} sample;

#define S(x) {#x, x, sizeof x}
static const sample samples[] = {
    S(T_PID), S(T_REF), S(T_PORT), S(T_MAP), S(T_BIG), S(T_NEGBIG),
    S(T_BITS), S(T_FUN), S(T_EXPORT), S(T_IMPROPER), S(T_MISC),
    S(T_GENCALL), S(T_CTL_SEND), S(T_CTL_REG), S(T_CTL_MON), S(T_CTL_UNLINK),
};
#define NSAMPLES (sizeof samples / sizeof samples[0])

static void real_terms_are_accepted(void **st)
{
    (void)st;
    for (size_t i = 0; i < NSAMPLES; i++) {
        size_t used = 0;
        int rc = cn_term_check(samples[i].b, samples[i].n, NULL, &used);
        if (rc != CN_TERM_OK)
            fail_msg("%s rejected: %s", samples[i].name, cn_term_strerror(rc));
        assert_int_equal(used, samples[i].n);
    }
}

static void every_truncation_is_rejected(void **st)
{
    (void)st;
    for (size_t i = 0; i < NSAMPLES; i++)
        for (size_t len = 0; len < samples[i].n; len++) {
            /* copy into an exact-size heap block so ASan sees overreads */
            unsigned char *b = malloc(len ? len : 1);
            memcpy(b, samples[i].b, len);
            int rc = cn_term_check_exact(b, len, NULL);
            free(b);
            if (rc == CN_TERM_OK)
                fail_msg("%s truncated to %zu accepted", samples[i].name, len);
        }
}

static void trailing_bytes_fail_exact_only(void **st)
{
    (void)st;
    unsigned char b[64];
    memcpy(b, T_BIG, sizeof T_BIG);
    b[sizeof T_BIG] = 106;
    size_t used;
    assert_int_equal(cn_term_check(b, sizeof T_BIG + 1, NULL, &used), CN_TERM_OK);
    assert_int_equal(used, sizeof T_BIG);
    assert_int_equal(cn_term_check_exact(b, sizeof T_BIG + 1, NULL), CN_TERM_EFORM);
}

static void deep_nesting_is_rejected(void **st)
{
    (void)st;
    size_t depth = 100000;
    unsigned char *b = malloc(depth * 2 + 1);
    for (size_t i = 0; i < depth; i++) {
        b[2 * i] = 104; /* {{{{...}}}} */
        b[2 * i + 1] = 1;
    }
    b[depth * 2] = 106;
    assert_int_equal(cn_term_check_exact(b, depth * 2 + 1, NULL), CN_TERM_EDEPTH);
    cn_term_limits lim = cn_term_default_limits;
    lim.max_depth = 10;
    /* depth 10 ok, 11 not */
    unsigned char ok[21];
    for (int i = 0; i < 10; i++) {
        ok[2 * i] = 104;
        ok[2 * i + 1] = 1;
    }
    ok[20] = 106;
    assert_int_equal(cn_term_check_exact(ok, 21, &lim), CN_TERM_OK);
    lim.max_depth = 9;
    assert_int_equal(cn_term_check_exact(ok, 21, &lim), CN_TERM_EDEPTH);
    free(b);
}

/* A term cn_term_check_exact must refuse, and with which error. */
typedef struct bad_term {
    const char *name;
    const unsigned char *b;
    size_t n;
    int want;
} bad_term;

#define BAD(x, rc) {#x, x, sizeof x, rc}

static void expect_refused(const bad_term *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = cn_term_check_exact(t[i].b, t[i].n, NULL);
        if (rc != t[i].want)
            fail_msg("%s: %s, not %s", t[i].name, cn_term_strerror(rc),
                     cn_term_strerror(t[i].want));
    }
}

static void lying_lengths_are_rejected(void **st)
{
    (void)st;
    static const unsigned char list4g[] = {108, 255, 255, 255, 255, 106};
    static const unsigned char tuple4g[] = {105, 255, 255, 255, 255, 97, 1};
    static const unsigned char map4g[] = {116, 127, 255, 255, 255, 97, 1, 97, 2};
    static const unsigned char bin[] = {109, 0, 0, 1, 0, 1, 2, 3};
    static const unsigned char str[] = {107, 0, 10, 'a', 'b'};
    static const unsigned char bigbig[] = {111, 255, 255, 255, 255, 0, 1};
    static const unsigned char atom[] = {118, 0, 50, 'x'};
    static const bad_term t[] = {
        BAD(list4g, CN_TERM_ETRUNC), BAD(tuple4g, CN_TERM_ETRUNC), BAD(map4g, CN_TERM_ETRUNC),
        BAD(bin, CN_TERM_ETRUNC),    BAD(str, CN_TERM_ETRUNC),     BAD(bigbig, CN_TERM_ETRUNC),
        BAD(atom, CN_TERM_ETRUNC),
    };
    expect_refused(t, sizeof t / sizeof t[0]);
}

static void limits_are_enforced(void **st)
{
    (void)st;
    cn_term_limits lim = cn_term_default_limits;
    lim.max_bytes = 10;
    assert_int_equal(cn_term_check_exact(T_MAP, sizeof T_MAP, &lim), CN_TERM_ESIZE);
    lim = cn_term_default_limits;
    lim.max_terms = 3;
    assert_int_equal(cn_term_check_exact(T_MISC, sizeof T_MISC, &lim), CN_TERM_ECOUNT);
    /* atom longer than the limit */
    unsigned char a[3 + 1100];
    a[0] = 118;
    a[1] = 1100 >> 8;
    a[2] = 1100 & 0xff;
    memset(a + 3, 'z', 1100);
    assert_int_equal(cn_term_check_exact(a, sizeof a, NULL), CN_TERM_EATOM);
    lim = cn_term_default_limits;
    lim.max_atom_bytes = 3;
    const unsigned char ab[] = {119, 4, 'a', 'b', 'c', 'd'};
    assert_int_equal(cn_term_check_exact(ab, sizeof ab, &lim), CN_TERM_EATOM);
}

static void unsupported_and_malformed_tags(void **st)
{
    (void)st;
    static const unsigned char cache[] = {82, 0};
    static const unsigned char oldfun[] = {117, 0, 0, 0, 0};
    static const unsigned char local[] = {121, 0};
    static const unsigned char unknown[] = {200};
    static const unsigned char bits0[] = {77, 0, 0, 0, 1, 0, 0xff};
    static const unsigned char bits9[] = {77, 0, 0, 0, 1, 9, 0xff};
    static const unsigned char badsign[] = {110, 1, 7, 1};
    static const unsigned char ref0[] = {90, 0, 0, 119, 1, 'a', 0, 0, 0, 1};
    static const unsigned char pid_badnode[] = {88, 97, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char export_badarity[] = {113, 119, 1, 'm', 119, 1, 'f', 98, 0, 0, 0, 2};
    static const bad_term t[] = {
        BAD(cache, CN_TERM_ETAG),          BAD(oldfun, CN_TERM_ETAG),
        BAD(local, CN_TERM_ETAG),          BAD(unknown, CN_TERM_ETAG),
        BAD(bits0, CN_TERM_EFORM),         BAD(bits9, CN_TERM_EFORM),
        BAD(badsign, CN_TERM_EFORM),       BAD(ref0, CN_TERM_EFORM),
        BAD(pid_badnode, CN_TERM_ETAG),    BAD(export_badarity, CN_TERM_EFORM),
    };
    expect_refused(t, sizeof t / sizeof t[0]);
}

static void fun_size_must_match(void **st)
{
    (void)st;
    unsigned char f[sizeof T_FUN];
    memcpy(f, T_FUN, sizeof f);
    f[4] ^= 1; /* size field off by one */
    assert_int_not_equal(cn_term_check_exact(f, sizeof f, NULL), CN_TERM_OK);
}

static void mutations_never_crash(void **st)
{
    (void)st;
    /* Deterministic byte flips over every sample: the validator must
     * return without reading outside the buffer (ASan build checks). */
    uint32_t seed = 12345;
    for (size_t i = 0; i < NSAMPLES; i++)
        for (int k = 0; k < 2000; k++) {
            unsigned char *b = malloc(samples[i].n);
            memcpy(b, samples[i].b, samples[i].n);
            for (int m = 0; m < 3; m++) {
                seed = seed * 1103515245u + 12345u;
                b[(seed >> 8) % samples[i].n] = (unsigned char)(seed >> 16);
            }
            size_t used = 0;
            int rc = cn_term_check(b, samples[i].n, NULL, &used);
            if (rc == CN_TERM_OK)
                assert_true(used <= samples[i].n);
            free(b);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(real_terms_are_accepted),
        cmocka_unit_test(every_truncation_is_rejected),
        cmocka_unit_test(trailing_bytes_fail_exact_only),
        cmocka_unit_test(deep_nesting_is_rejected),
        cmocka_unit_test(lying_lengths_are_rejected),
        cmocka_unit_test(limits_are_enforced),
        cmocka_unit_test(unsupported_and_malformed_tags),
        cmocka_unit_test(fun_size_must_match),
        cmocka_unit_test(mutations_never_crash),
    };
    return cmocka_run_group_tests_name("term_check", tests, NULL, NULL);
}
