/* test_md5.c - MD5 against the RFC 1321 appendix A.5 test suite, plus the
 * distribution digest (cookie ++ decimal challenge). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../../c_src/cnode/md5.h"

static void hex(const unsigned char d[16], char out[33])
{
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void check(const char *in, const char *want)
{
    unsigned char d[16];
    char h[33];
    cn_md5(in, strlen(in), d);
    hex(d, h);
    assert_string_equal(h, want);
}

static void rfc1321_vectors(void **st)
{
    (void)st;
    check("", "d41d8cd98f00b204e9800998ecf8427e");
    check("a", "0cc175b9c0f1b6a831c399e269772661");
    check("abc", "900150983cd24fb0d6963f7d28e17f72");
    check("message digest", "f96b697d7cb7938d525a2f31aaf161d0");
    check("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b");
    check("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
          "d174ab98d277d9f5a5611c2c9f419d9f");
    check("12345678901234567890123456789012345678901234567890123456789012345678901234567890",
          "57edf4a22be3c955ac49da2e2107b67a");
}

static void incremental_updates_match_one_shot(void **st)
{
    (void)st;
    const char *msg = "12345678901234567890123456789012345678901234567890123456789012345678901234567890";
    for (size_t split = 0; split <= strlen(msg); split += 7) {
        cn_md5_ctx c;
        unsigned char a[16], b[16];
        cn_md5_init(&c);
        cn_md5_update(&c, msg, split);
        cn_md5_update(&c, msg + split, strlen(msg) - split);
        cn_md5_final(&c, a);
        cn_md5(msg, strlen(msg), b);
        assert_memory_equal(a, b, 16);
    }
}

static void block_boundaries(void **st)
{
    (void)st;
    /* 55, 56, 63, 64, 65 bytes: padding edge cases; compare incremental
     * byte-at-a-time against one shot. */
    char buf[130];
    memset(buf, 'q', sizeof buf);
    size_t lens[] = {55, 56, 57, 63, 64, 65, 119, 120, 128};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        unsigned char a[16], b[16];
        cn_md5_ctx c;
        cn_md5_init(&c);
        for (size_t i = 0; i < lens[k]; i++)
            cn_md5_update(&c, buf + i, 1);
        cn_md5_final(&c, a);
        cn_md5(buf, lens[k], b);
        assert_memory_equal(a, b, 16);
    }
    /* 64 x 'a' known value */
    char a64[65];
    memset(a64, 'a', 64);
    a64[64] = 0;
    check(a64, "014842d480b571495a4a0363793f7367");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc1321_vectors),
        cmocka_unit_test(incremental_updates_match_one_shot),
        cmocka_unit_test(block_boundaries),
    };
    return cmocka_run_group_tests_name("md5", tests, NULL, NULL);
}
