/* test_registry.c - registry.c: run_id -> value maps per namespace. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "council.h"
/* white-box suite (tests the core's registry module itself): built with -Ic_src/core, see the Makefile */
#include "registry.h"

#define NS "CouncilEx.Runner.Registry"
#define NSL (sizeof NS - 1)

static void *val(uintptr_t v)
{
    return (void *)v;
}

static void put_get_remove_roundtrip(void **state)
{
    registry *r = registry_new(0);
    int x = 1, y = 2;

    assert_non_null(r);
    assert_int_equal(registry_count(r), 0);
    assert_null(registry_get(r, NS, NSL, "run-1", 5));
    assert_int_equal(registry_put(r, NS, NSL, "run-1", 5, &x), 0);
    assert_int_equal(registry_put(r, NS, NSL, "run-2", 5, &y), 0);
    assert_int_equal(registry_count(r), 2);
    assert_ptr_equal(registry_get(r, NS, NSL, "run-1", 5), &x);
    assert_ptr_equal(registry_get(r, NS, NSL, "run-2", 5), &y);
    assert_null(registry_get(r, NS, NSL, "run-3", 5));
    assert_null(registry_get(r, NS, NSL, "run-1", 4));

    assert_ptr_equal(registry_remove(r, NS, NSL, "run-1", 5), &x);
    assert_null(registry_remove(r, NS, NSL, "run-1", 5));
    assert_null(registry_get(r, NS, NSL, "run-1", 5));
    assert_ptr_equal(registry_get(r, NS, NSL, "run-2", 5), &y);
    assert_int_equal(registry_count(r), 1);

    /* a removed key can be put again */
    assert_int_equal(registry_put(r, NS, NSL, "run-1", 5, &y), 0);
    assert_ptr_equal(registry_get(r, NS, NSL, "run-1", 5), &y);
    registry_free(r);
}

static void null_value_is_storable(void **state)
{
    registry *r = registry_new(0);

    assert_int_equal(registry_put(r, NS, NSL, "k", 1, NULL), 0);
    assert_int_equal(registry_count(r), 1);
    assert_int_equal(registry_put(r, NS, NSL, "k", 1, val(1)), COUNCIL_EEXIST);
    registry_free(r);
}

static void duplicate_key_is_eexist_and_changes_nothing(void **state)
{
    registry *r = registry_new(0);

    assert_int_equal(registry_put(r, NS, NSL, "abc", 3, val(1)), 0);
    assert_int_equal(registry_put(r, NS, NSL, "abc", 3, val(2)), COUNCIL_EEXIST);
    assert_ptr_equal(registry_get(r, NS, NSL, "abc", 3), val(1));
    assert_int_equal(registry_count(r), 1);
    registry_free(r);
}

static void namespaces_are_separate(void **state)
{
    registry *r = registry_new(0);

    assert_int_equal(registry_put(r, "a", 1, "id", 2, val(1)), 0);
    assert_int_equal(registry_put(r, "b", 1, "id", 2, val(2)), 0);
    assert_int_equal(registry_put(r, "ab", 2, "id", 2, val(3)), 0);
    assert_int_equal(registry_put(r, NULL, 0, "id", 2, val(4)), 0);
    assert_int_equal(registry_count(r), 4);
    assert_ptr_equal(registry_get(r, "a", 1, "id", 2), val(1));
    assert_ptr_equal(registry_get(r, "b", 1, "id", 2), val(2));
    assert_ptr_equal(registry_get(r, "ab", 2, "id", 2), val(3));
    assert_ptr_equal(registry_get(r, "", 0, "id", 2), val(4));
    assert_null(registry_get(r, "c", 1, "id", 2));
    /* the namespace name is compared by its full length */
    assert_null(registry_get(r, "abc", 3, "id", 2));
    assert_ptr_equal(registry_get(r, "abc", 2, "id", 2), val(3));

    assert_ptr_equal(registry_remove(r, "a", 1, "id", 2), val(1));
    assert_null(registry_get(r, "a", 1, "id", 2));
    assert_ptr_equal(registry_get(r, "b", 1, "id", 2), val(2));
    assert_null(registry_remove(r, "zzz", 3, "id", 2));
    registry_free(r);
}

static void many_namespaces(void **state)
{
    registry *r = registry_new(0);
    char ns[32];
    int i;

    for (i = 0; i < 1000; i++) {
        int n = snprintf(ns, sizeof ns, "reg.%d", i);
        assert_int_equal(registry_put(r, ns, (size_t)n, "same-id", 7,
                                      val((uintptr_t)i + 1)), 0);
    }
    for (i = 0; i < 1000; i++) {
        int n = snprintf(ns, sizeof ns, "reg.%d", i);
        assert_ptr_equal(registry_get(r, ns, (size_t)n, "same-id", 7),
                         val((uintptr_t)i + 1));
    }
    registry_free(r);
}

static void max_entries_is_elimit_over_all_namespaces(void **state)
{
    registry *r = registry_new(3);

    assert_int_equal(registry_put(r, "a", 1, "1", 1, val(1)), 0);
    assert_int_equal(registry_put(r, "b", 1, "1", 1, val(1)), 0);
    assert_int_equal(registry_put(r, "a", 1, "2", 1, val(1)), 0);
    assert_int_equal(registry_put(r, "c", 1, "1", 1, val(1)), COUNCIL_ELIMIT);
    assert_int_equal(registry_put(r, "a", 1, "3", 1, val(1)), COUNCIL_ELIMIT);
    /* a duplicate is still named a duplicate when full */
    assert_int_equal(registry_put(r, "a", 1, "1", 1, val(1)), COUNCIL_EEXIST);
    assert_int_equal(registry_count(r), 3);
    assert_null(registry_get(r, "c", 1, "1", 1));
    /* removing frees a place */
    assert_non_null(registry_remove(r, "b", 1, "1", 1));
    assert_int_equal(registry_put(r, "c", 1, "1", 1, val(7)), 0);
    assert_ptr_equal(registry_get(r, "c", 1, "1", 1), val(7));
    registry_free(r);
}

static void bad_arguments_are_einval(void **state)
{
    registry *r = registry_new(0);
    size_t big = 64 * 1024 + 1;
    char *k = calloc(1, big);

    assert_non_null(k);
    assert_int_equal(registry_put(r, NS, NSL, "x", 0, val(1)), COUNCIL_EINVAL);
    assert_int_equal(registry_put(r, NS, NSL, NULL, 3, val(1)), COUNCIL_EINVAL);
    assert_int_equal(registry_put(r, NULL, 3, "x", 1, val(1)), COUNCIL_EINVAL);
    assert_int_equal(registry_put(NULL, NS, NSL, "x", 1, val(1)),
                     COUNCIL_EINVAL);
    assert_int_equal(registry_put(r, NS, NSL, k, big, val(1)), COUNCIL_EINVAL);
    assert_int_equal(registry_put(r, k, big, "x", 1, val(1)), COUNCIL_EINVAL);
    /* exactly 64 KiB is accepted, for key and namespace */
    assert_int_equal(registry_put(r, NS, NSL, k, big - 1, val(1)), 0);
    assert_int_equal(registry_put(r, k, big - 1, "x", 1, val(2)), 0);
    assert_ptr_equal(registry_get(r, NS, NSL, k, big - 1), val(1));
    assert_ptr_equal(registry_get(r, k, big - 1, "x", 1), val(2));
    assert_null(registry_get(r, NS, NSL, "x", 0));
    assert_null(registry_get(NULL, NS, NSL, "x", 1));
    assert_null(registry_remove(r, NS, NSL, NULL, 1));
    assert_int_equal(registry_count(r), 2);
    assert_int_equal(registry_count(NULL), 0);
    registry_free(NULL);
    registry_free(r);
    free(k);
}

/* Ids built to look alike: long common prefixes, equal length, a difference
 * only in the last byte, embedded NUL bytes, prefixes of each other. */
static void lookalike_and_binary_ids_stay_distinct(void **state)
{
    registry *r = registry_new(0);
    unsigned char key[80];
    int i, j;

    memset(key, 'r', sizeof key);
    for (i = 0; i < 256; i++) {
        key[sizeof key - 1] = (unsigned char)i;
        assert_int_equal(registry_put(r, NS, NSL, key, sizeof key,
                                      val((uintptr_t)i + 1)), 0);
    }
    /* prefixes of the same bytes: lengths 1..79 */
    for (j = 1; j < (int)sizeof key; j++)
        assert_int_equal(registry_put(r, NS, NSL, key, (size_t)j,
                                      val(1000 + (uintptr_t)j)), 0);
    /* all-NUL keys of growing length are different keys */
    memset(key, 0, sizeof key);
    for (j = 1; j <= 16; j++)
        assert_int_equal(registry_put(r, "bin", 3, key, (size_t)j,
                                      val(2000 + (uintptr_t)j)), 0);
    /* NUL in the middle */
    assert_int_equal(registry_put(r, "bin", 3, "a\0b", 3, val(3001)), 0);
    assert_int_equal(registry_put(r, "bin", 3, "a\0c", 3, val(3002)), 0);
    assert_int_equal(registry_put(r, "bin", 3, "a", 1, val(3003)), 0);
    assert_int_equal(registry_put(r, "bin", 3, "a\0b", 3, val(9)),
                     COUNCIL_EEXIST);

    memset(key, 'r', sizeof key);
    for (i = 0; i < 256; i++) {
        key[sizeof key - 1] = (unsigned char)i;
        assert_ptr_equal(registry_get(r, NS, NSL, key, sizeof key),
                         val((uintptr_t)i + 1));
    }
    key[sizeof key - 1] = 'r';
    for (j = 1; j < (int)sizeof key; j++)
        assert_ptr_equal(registry_get(r, NS, NSL, key, (size_t)j),
                         val(1000 + (uintptr_t)j));
    memset(key, 0, sizeof key);
    for (j = 1; j <= 16; j++)
        assert_ptr_equal(registry_get(r, "bin", 3, key, (size_t)j),
                         val(2000 + (uintptr_t)j));
    assert_null(registry_get(r, "bin", 3, key, 17));
    assert_ptr_equal(registry_get(r, "bin", 3, "a\0b", 3), val(3001));
    assert_ptr_equal(registry_get(r, "bin", 3, "a\0c", 3), val(3002));
    assert_ptr_equal(registry_get(r, "bin", 3, "a", 1), val(3003));
    assert_null(registry_get(r, "bin", 3, "a\0", 2));
    assert_int_equal(registry_count(r), 256 + 79 + 16 + 3);
    registry_free(r);
}

/* Two registry objects hash under different keys but behave the same. */
static void two_registries_are_independent(void **state)
{
    registry *a = registry_new(0), *b = registry_new(0);

    assert_int_equal(registry_put(a, NS, NSL, "x", 1, val(1)), 0);
    assert_null(registry_get(b, NS, NSL, "x", 1));
    assert_int_equal(registry_put(b, NS, NSL, "x", 1, val(2)), 0);
    assert_ptr_equal(registry_get(a, NS, NSL, "x", 1), val(1));
    assert_ptr_equal(registry_get(b, NS, NSL, "x", 1), val(2));
    registry_free(a);
    registry_free(b);
}

typedef struct walk {
    size_t n;
    uintptr_t sum;
    size_t in_b;
    size_t stop_after;
} walk;

static int walk_fn(const char *ns, size_t ns_len, const void *key,
                   size_t key_len, void *value, void *arg)
{
    walk *w = arg;
    uintptr_t v = (uintptr_t)value;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "k%lu", (unsigned long)(v % 1000000));

    /* the key handed out is the key stored for that value */
    assert_int_equal(key_len, (size_t)n);
    assert_memory_equal(key, buf, key_len);
    if (ns_len == 1 && ns[0] == 'b')
        w->in_b++;
    w->n++;
    w->sum += v;
    return w->stop_after != 0 && w->n >= w->stop_after;
}

static void foreach_visits_every_entry_once(void **state)
{
    registry *r = registry_new(0);
    walk w = {0, 0, 0, 0};
    uintptr_t expect = 0;
    char key[32];
    int i;

    registry_foreach(r, walk_fn, &w);
    assert_int_equal(w.n, 0);
    for (i = 1; i <= 5000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        const char *ns = (i % 3 == 0) ? "b" : "a";

        assert_int_equal(registry_put(r, ns, 1, key, (size_t)n,
                                      val((uintptr_t)i)), 0);
        expect += (uintptr_t)i;
    }
    registry_foreach(r, walk_fn, &w);
    assert_int_equal(w.n, 5000);
    assert_int_equal(w.in_b, 1666);
    assert_int_equal(w.sum, expect);

    w = (walk){0, 0, 0, 10};
    registry_foreach(r, walk_fn, &w);
    assert_int_equal(w.n, 10);

    /* removal through collected values after the walk */
    for (i = 1; i <= 5000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        const char *ns = (i % 3 == 0) ? "b" : "a";

        assert_ptr_equal(registry_remove(r, ns, 1, key, (size_t)n),
                         val((uintptr_t)i));
    }
    w = (walk){0, 0, 0, 0};
    registry_foreach(r, walk_fn, &w);
    assert_int_equal(w.n, 0);
    assert_int_equal(registry_count(r), 0);
    registry_free(r);
}

static int make_id(char *buf, size_t n, size_t i)
{
    /* UUID-like ids sharing a long prefix, as run ids do */
    return snprintf(buf, n, "run-0000-4000-8000-%012zx", i);
}

/* A million entries: put, get, get-miss, interleaved removal and re-put
 * while the table resizes, then remove all (the table shrinks back). */
static void a_million_entries(void **state)
{
    /* under valgrind (scripts/run-c-tests sets COUNCIL_UNDER_VALGRIND) a
     * tenth, to keep the suite within seconds; the logic is the same */
    const size_t N = getenv("COUNCIL_UNDER_VALGRIND") ? 100000 : 1000000;
    registry *r = registry_new(0);
    char id[64];
    size_t i;

    for (i = 0; i < N; i++) {
        int n = make_id(id, sizeof id, i);
        assert_int_equal(registry_put(r, NS, NSL, id, (size_t)n,
                                      val(i + 1)), 0);
    }
    assert_int_equal(registry_count(r), N);
    for (i = 0; i < N; i++) {
        int n = make_id(id, sizeof id, i);
        if (registry_get(r, NS, NSL, id, (size_t)n) != val(i + 1))
            fail_msg("lookup %zu", i);
    }
    for (i = N; i < N + 1000; i++) {
        int n = make_id(id, sizeof id, i);
        assert_null(registry_get(r, NS, NSL, id, (size_t)n));
    }
    /* remove odd ones, check even ones */
    for (i = 1; i < N; i += 2) {
        int n = make_id(id, sizeof id, i);
        if (registry_remove(r, NS, NSL, id, (size_t)n) != val(i + 1))
            fail_msg("remove %zu", i);
    }
    assert_int_equal(registry_count(r), N / 2);
    for (i = 0; i < N; i++) {
        int n = make_id(id, sizeof id, i);
        void *v = registry_get(r, NS, NSL, id, (size_t)n);
        if (v != ((i & 1) ? NULL : val(i + 1)))
            fail_msg("after removal %zu", i);
    }
    for (i = 0; i < N; i += 2) {
        int n = make_id(id, sizeof id, i);
        if (registry_remove(r, NS, NSL, id, (size_t)n) != val(i + 1))
            fail_msg("remove %zu", i);
    }
    assert_int_equal(registry_count(r), 0);
    /* still usable after shrinking */
    assert_int_equal(registry_put(r, NS, NSL, "again", 5, val(5)), 0);
    assert_ptr_equal(registry_get(r, NS, NSL, "again", 5), val(5));
    registry_free(r);
}

/* Grow/shrink cycles with lookups in between: every put/remove may land in
 * the middle of an incremental resize. */
static void churn_across_resizes(void **state)
{
    registry *r = registry_new(0);
    char id[64];
    size_t round, i, live_lo = 0, live_hi = 0;

    for (round = 0; round < 20; round++) {
        size_t add = 3000 + round * 517;

        for (i = live_hi; i < live_hi + add; i++) {
            int n = make_id(id, sizeof id, i);
            assert_int_equal(registry_put(r, "c", 1, id, (size_t)n,
                                          val(i + 1)), 0);
        }
        live_hi += add;
        /* drop most of the oldest */
        while (live_hi - live_lo > 500) {
            int n = make_id(id, sizeof id, live_lo);
            if (registry_remove(r, "c", 1, id, (size_t)n) != val(live_lo + 1))
                fail_msg("remove %zu", live_lo);
            live_lo++;
            if (live_lo % 97 == 0) {
                size_t k = live_lo + (live_hi - live_lo) / 2;
                n = make_id(id, sizeof id, k);
                if (registry_get(r, "c", 1, id, (size_t)n) != val(k + 1))
                    fail_msg("get %zu", k);
            }
        }
        assert_int_equal(registry_count(r), live_hi - live_lo);
    }
    registry_free(r);
}

static int count_fn(const char *ns, size_t ns_len, const void *key,
                    size_t key_len, void *value, void *arg)
{
    (*(size_t *)arg)++;
    return 0;
}

/* The table doubles at 4096 entries and moves its buckets over the next
 * few hundred puts; then halves again as entries go. Every step of the way
 * foreach sees each entry once and every entry is found. */
static void foreach_and_get_during_incremental_resize(void **state)
{
    registry *r = registry_new(0);
    char id[64];
    size_t i, k, seen;

    for (i = 0; i < 4600; i++) {
        int n = make_id(id, sizeof id, i);

        assert_int_equal(registry_put(r, NS, NSL, id, (size_t)n,
                                      val(i + 1)), 0);
        if (i >= 4080 && i < 4500) {
            seen = 0;
            registry_foreach(r, count_fn, &seen);
            assert_int_equal(seen, i + 1);
            for (k = 0; k <= i; k += 37) {
                n = make_id(id, sizeof id, k);
                assert_ptr_equal(registry_get(r, NS, NSL, id, (size_t)n),
                                 val(k + 1));
            }
        }
    }
    for (i = 0; i < 4600; i++) {
        int n = make_id(id, sizeof id, i);

        assert_ptr_equal(registry_remove(r, NS, NSL, id, (size_t)n),
                         val(i + 1));
        if (i % 7 == 0) {
            seen = 0;
            registry_foreach(r, count_fn, &seen);
            assert_int_equal(seen, 4600 - i - 1);
            if (i + 1 < 4600) {
                n = make_id(id, sizeof id, 4599);
                assert_ptr_equal(registry_get(r, NS, NSL, id, (size_t)n),
                                 val(4600));
            }
        }
    }
    assert_int_equal(registry_count(r), 0);
    registry_free(r);
}

typedef struct seen_key {
    const void *key;
    size_t len;
} seen_key;

static int foreach_key_is(const char *ns, size_t ns_len, const void *key,
                          size_t key_len, void *value, void *arg)
{
    (void)ns;
    (void)ns_len;
    (void)value;
    ((seen_key *)arg)->key = key;
    ((seen_key *)arg)->len = key_len;
    return 0;
}

/* Marks: 0 when put, set per entry, kept through resizes (the entry moves
 * whole), gone with the entry; keys of 48 and 49 bytes (in the slot and
 * pointed at) alike. */
static void marks_live_with_their_entries(void **state)
{
    registry *r = registry_new(0);
    char id[64];
    uint64_t mk = 7;
    size_t i;

    (void)state;
    assert_null(registry_get_mark(r, NS, NSL, "none", 4, &mk));
    assert_int_equal(mk, 0);
    assert_int_equal(registry_set_mark(r, NS, NSL, "none", 4, 1), COUNCIL_ENOTFOUND);
    assert_int_equal(registry_set_mark(r, NS, NSL, NULL, 4, 1), COUNCIL_EINVAL);
    for (i = 0; i < 3000; i++) {
        size_t len = 47 + i % 3; /* 47, 48, 49 */
        memset(id, 'm', sizeof id);
        snprintf(id, sizeof id, "%zu", i);
        id[strlen(id)] = 'm';
        assert_int_equal(registry_put(r, NS, NSL, id, len, val(i + 1)), 0);
        if (i % 2)
            assert_int_equal(registry_set_mark(r, NS, NSL, id, len, i), 0);
    }
    for (i = 0; i < 3000; i++) {
        size_t len = 47 + i % 3;
        memset(id, 'm', sizeof id);
        snprintf(id, sizeof id, "%zu", i);
        id[strlen(id)] = 'm';
        assert_ptr_equal(registry_get_mark(r, NS, NSL, id, len, &mk), val(i + 1));
        assert_int_equal(mk, i % 2 ? i : 0);
        if (i % 3 == 0) {
            assert_ptr_equal(registry_remove(r, NS, NSL, id, len), val(i + 1));
            assert_null(registry_get_mark(r, NS, NSL, id, len, &mk));
            assert_int_equal(mk, 0);
            assert_int_equal(registry_put(r, NS, NSL, id, len, val(i + 2)), 0);
            assert_ptr_equal(registry_get_mark(r, NS, NSL, id, len, &mk), val(i + 2));
            assert_int_equal(mk, 0);
        }
    }
    registry_free(r);
}

static void put_ref_borrows_the_key_bytes_and_acts_like_put(void **state)
{
    registry *r = registry_new(0);
    char key[] = "ab01", other[] = "ab01";
    char long_key[50], long_other[50];
    seen_key seen = {NULL, 0};

    assert_non_null(r);
    assert_int_equal(registry_put_ref(r, NS, NSL, key, 4, val(1)), 0);
    /* duplicates are refused whichever way either was put */
    assert_int_equal(registry_put(r, NS, NSL, other, 4, val(2)), COUNCIL_EEXIST);
    assert_int_equal(registry_put_ref(r, NS, NSL, other, 4, val(2)), COUNCIL_EEXIST);
    assert_int_equal(registry_put_ref(r, NS, NSL, NULL, 4, val(2)), COUNCIL_EINVAL);
    assert_ptr_equal(registry_get(r, NS, NSL, other, 4), val(1));
    /* a short key is held in the table: the caller's bytes may change */
    registry_foreach(r, foreach_key_is, &seen);
    assert_int_equal(seen.len, 4);
    assert_ptr_not_equal(seen.key, key);
    assert_memory_equal(seen.key, "ab01", 4);
    key[0] = 'x';
    assert_ptr_equal(registry_get(r, NS, NSL, "ab01", 4), val(1));
    key[0] = 'a';
    assert_ptr_equal(registry_remove(r, NS, NSL, other, 4), val(1));
    assert_int_equal(registry_count(r), 0);
    /* a key over 48 bytes is the caller's bytes, not a copy */
    memset(long_key, 'L', sizeof long_key);
    memcpy(long_other, long_key, sizeof long_key);
    assert_int_equal(registry_put_ref(r, NS, NSL, long_key, sizeof long_key, val(5)), 0);
    assert_int_equal(registry_put(r, NS, NSL, long_other, sizeof long_key, val(6)),
                     COUNCIL_EEXIST);
    registry_foreach(r, foreach_key_is, &seen);
    assert_int_equal(seen.len, sizeof long_key);
    assert_ptr_equal(seen.key, long_key);
    assert_ptr_equal(registry_remove(r, NS, NSL, long_other, sizeof long_key), val(5));
    assert_int_equal(registry_count(r), 0);
    /* copied and borrowed keys side by side */
    assert_int_equal(registry_put(r, NS, NSL, "ab02", 4, val(3)), 0);
    assert_int_equal(registry_put_ref(r, NS, NSL, key, 4, val(4)), 0);
    assert_ptr_equal(registry_get(r, NS, NSL, "ab02", 4), val(3));
    assert_ptr_equal(registry_get(r, NS, NSL, "ab01", 4), val(4));
    registry_free(r);
}


/* ------------------------------------------------ the table's own layout */

/* Test hashes (registry_set_test_hash): the top bits choose the home slot;
 * equal hashes and equal lengths give equal fingerprints, so only the key
 * bytes tell the entries apart. */
static uint64_t hash_all_last_slot(const void *key, size_t len)
{
    (void)key;
    (void)len;
    return ~(uint64_t)0; /* every key's home is the table's last slot */
}

static uint64_t hash_first_byte(const void *key, size_t len)
{
    (void)len;
    /* 256 values, spread over the top bits: clusters everywhere, wrapping
     * around the end when the table is small */
    return (uint64_t)((const unsigned char *)key)[0] * 0x0101010101010101ull;
}

static uint64_t hash_constant(const void *key, size_t len)
{
    (void)key;
    (void)len;
    return 0x8000000000000000ull;
}

static int cluster_key(char *buf, size_t n, size_t i)
{
    return snprintf(buf, n, "same-home-%05zu", i);
}

/* One cluster that starts at the last slot and wraps to slot 0: every
 * entry is found, removals at its start, middle and end (which shift the
 * rest back across the wrap) keep the others reachable, and removed keys
 * are gone for good. The table grows and shrinks around the cluster. */
static void one_cluster_wrapping_around_the_end(void **state)
{
    registry *r = registry_new(0);
    enum { N = 600 };
    char id[32];
    bool in[N];
    size_t i, seen;
    /* removal orders: from the start of the cluster, from its end, from
     * the middle outwards */
    size_t order[N];

    registry_set_test_hash(r, hash_all_last_slot);
    for (i = 0; i < N; i++) {
        int n = cluster_key(id, sizeof id, i);
        assert_int_equal(registry_put(r, NS, NSL, id, (size_t)n, val(i + 1)), 0);
        in[i] = true;
    }
    for (i = 0; i < N; i++) {
        int n = cluster_key(id, sizeof id, i);
        assert_ptr_equal(registry_get(r, NS, NSL, id, (size_t)n), val(i + 1));
    }
    for (i = 0; i < N; i++)
        order[i] = (i % 3 == 0) ? i / 3 : (i % 3 == 1) ? N - 1 - i / 3 : N / 2 + (i / 3) % (N / 6);
    for (i = 0; i < N; i++) {
        size_t k = order[i], j;
        int n = cluster_key(id, sizeof id, k);

        if (!in[k])
            continue;
        assert_ptr_equal(registry_remove(r, NS, NSL, id, (size_t)n), val(k + 1));
        in[k] = false;
        if (i % 25 == 0)
            for (j = 0; j < N; j++) {
                n = cluster_key(id, sizeof id, j);
                assert_ptr_equal(registry_get(r, NS, NSL, id, (size_t)n),
                                 in[j] ? val(j + 1) : NULL);
            }
    }
    for (i = 0; i < N; i++) {
        int n = cluster_key(id, sizeof id, i);

        if (in[i])
            assert_ptr_equal(registry_remove(r, NS, NSL, id, (size_t)n), val(i + 1));
        assert_null(registry_get(r, NS, NSL, id, (size_t)n));
    }
    assert_int_equal(registry_count(r), 0);
    seen = 0;
    registry_foreach(r, count_fn, &seen);
    assert_int_equal(seen, 0);
    registry_free(r);
}

/* Keys with one hash and one length share their whole fingerprint: the
 * key bytes decide, whatever they share (a long prefix, all but the last
 * byte, NUL bytes), and keys of other lengths never match. */
static void equal_fingerprints_are_told_apart_by_the_bytes(void **state)
{
    registry *r = registry_new(0);
    unsigned char key[40], (*held)[40] = malloc(256 * sizeof *held);
    int i, len;

    assert_non_null(held);
    registry_set_test_hash(r, hash_constant);
    memset(key, 'p', sizeof key);
    for (i = 0; i < 256; i++) {
        key[sizeof key - 1] = (unsigned char)i;
        memcpy(held[i], key, sizeof key);
        assert_int_equal(registry_put_ref(r, NS, NSL, held[i], sizeof key,
                                          val((uintptr_t)i + 1)), 0);
    }
    for (len = 1; len < (int)sizeof key; len++)
        assert_int_equal(registry_put(r, NS, NSL, key, (size_t)len, val(1000 + (uintptr_t)len)),
                         0);
    for (i = 0; i < 256; i++) {
        key[sizeof key - 1] = (unsigned char)i;
        assert_ptr_equal(registry_get(r, NS, NSL, key, sizeof key), val((uintptr_t)i + 1));
        assert_int_equal(registry_put(r, NS, NSL, key, sizeof key, val(7)), COUNCIL_EEXIST);
    }
    for (len = 1; len < (int)sizeof key; len++)
        assert_ptr_equal(registry_get(r, NS, NSL, key, (size_t)len), val(1000 + (uintptr_t)len));
    key[0] = 'q';
    assert_null(registry_get(r, NS, NSL, key, sizeof key));
    /* remove the borrowed ones (the bytes they point at stay until then) */
    for (i = 0; i < 256; i++) {
        key[0] = 'p';
        key[sizeof key - 1] = (unsigned char)i;
        assert_ptr_equal(registry_remove(r, NS, NSL, key, sizeof key), val((uintptr_t)i + 1));
    }
    assert_int_equal(registry_count(r), sizeof key - 1);
    registry_free(r);
    free(held);
}

typedef struct model {
    char key[64];
    size_t len;
    bool in;
    bool ref;
    uintptr_t v;
} model;

static uint64_t model_rng = 0x9E3779B97F4A7C15ull;
static uint64_t mrand(void)
{
    model_rng ^= model_rng << 13;
    model_rng ^= model_rng >> 7;
    model_rng ^= model_rng << 17;
    return model_rng;
}

/* Random puts (copied and borrowed keys), gets and removes against a plain
 * array, under a weak hash (256 clusters), through grow and shrink cycles:
 * the registry and the model agree after every step, and foreach sees
 * exactly the model's entries. */
static void random_operations_match_a_model(void **state)
{
    enum { KEYS = 4000, STEPS = 200000 };
    registry *r = registry_new(0);
    model *m = calloc(KEYS, sizeof *m);
    size_t i, step, live = 0;

    assert_non_null(m);
    registry_set_test_hash(r, hash_first_byte);
    for (i = 0; i < KEYS; i++) {
        /* lengths 1..20 and, every third key, 40..59 (held in the slot up
         * to 48 bytes, pointed at beyond); many keys share their first
         * byte (one cluster) and long prefixes */
        m[i].len = i % 3 == 2 ? 40 + i % 20 : 1 + i % 20;
        memset(m[i].key, 'a' + (int)(i % 7), sizeof m[i].key);
        snprintf(m[i].key + 1, sizeof m[i].key - 1, "%zu", i);
        m[i].key[strlen(m[i].key)] = 'z';
        if (m[i].len < 6) {
            /* short keys: make them distinct by their bytes */
            m[i].key[0] = (char)('A' + i % 50);
            m[i].key[1 % m[i].len] = (char)i;
            m[i].len = 1 + (i % 5);
        }
    }
    /* drop duplicates the construction above may have made */
    for (i = 0; i < KEYS; i++) {
        size_t j;
        for (j = 0; j < i; j++)
            if (m[j].len == m[i].len && memcmp(m[j].key, m[i].key, m[i].len) == 0) {
                m[i].len = 0;
                break;
            }
    }
    for (step = 0; step < STEPS; step++) {
        /* phases: fill (mostly puts), drain (mostly removes) */
        bool filling = (step / 20000) % 2 == 0;
        size_t k = (size_t)(mrand() % KEYS);
        unsigned op = (unsigned)(mrand() % 10);
        model *e = &m[k];

        if (e->len == 0)
            continue;
        if (op < (filling ? 6u : 2u)) {
            bool ref = mrand() % 2;
            uintptr_t v = (uintptr_t)step + 1;
            int rc = ref ? registry_put_ref(r, "ns", 2, e->key, e->len, val(v))
                         : registry_put(r, "ns", 2, e->key, e->len, val(v));
            if (e->in) {
                assert_int_equal(rc, COUNCIL_EEXIST);
            } else {
                assert_int_equal(rc, 0);
                e->in = true;
                e->ref = ref;
                e->v = v;
                live++;
            }
        } else if (op < 8) {
            void *got = registry_remove(r, "ns", 2, e->key, e->len);
            assert_ptr_equal(got, e->in ? val(e->v) : NULL);
            if (e->in) {
                e->in = false;
                live--;
            }
        } else {
            assert_ptr_equal(registry_get(r, "ns", 2, e->key, e->len), e->in ? val(e->v) : NULL);
        }
        if (step % 5000 == 0) {
            size_t seen = 0;
            assert_int_equal(registry_count(r), live);
            registry_foreach(r, count_fn, &seen);
            assert_int_equal(seen, live);
            for (i = 0; i < KEYS; i++)
                if (m[i].len)
                    assert_ptr_equal(registry_get(r, "ns", 2, m[i].key, m[i].len),
                                     m[i].in ? val(m[i].v) : NULL);
        }
    }
    registry_free(r);
    free(m);
}

/* A mass removal shrinks the table (incrementally); a burst of puts right
 * after must not overfill the small table while the old one drains. */
static void shrink_then_burst_of_puts(void **state)
{
    registry *r = registry_new(0);
    char id[64];
    size_t i, round;

    for (round = 0; round < 3; round++) {
        for (i = 0; i < 20000; i++) {
            int n = make_id(id, sizeof id, round * 100000 + i);
            assert_int_equal(registry_put(r, NS, NSL, id, (size_t)n, val(i + 1)), 0);
        }
        /* all but 10: the next removal starts a shrink to a tiny table */
        for (i = 10; i < 20000; i++) {
            int n = make_id(id, sizeof id, round * 100000 + i);
            assert_ptr_equal(registry_remove(r, NS, NSL, id, (size_t)n), val(i + 1));
        }
        for (i = 20000; i < 30000; i++) {
            int n = make_id(id, sizeof id, round * 100000 + i);
            assert_int_equal(registry_put(r, NS, NSL, id, (size_t)n, val(i + 1)), 0);
        }
        for (i = 0; i < 30000; i++) {
            int n = make_id(id, sizeof id, round * 100000 + i);
            void *want = (i < 10 || i >= 20000) ? val(i + 1) : NULL;
            assert_ptr_equal(registry_get(r, NS, NSL, id, (size_t)n), want);
            if (want)
                assert_ptr_equal(registry_remove(r, NS, NSL, id, (size_t)n), want);
        }
        assert_int_equal(registry_count(r), 0);
    }
    registry_free(r);
}

/* Namespaces need no room in a slot: foreach recovers each entry's from
 * its key; with many namespaces and one key in each, and ids past the
 * plain-scan limit. */
static int ns_check_fn(const char *ns, size_t ns_len, const void *key,
                       size_t key_len, void *value, void *arg)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "reg.%lu", (unsigned long)(uintptr_t)value - 1);

    (void)key;
    (void)key_len;
    assert_int_equal(ns_len, (size_t)n);
    assert_memory_equal(ns, buf, ns_len);
    (*(size_t *)arg)++;
    return 0;
}

static void foreach_names_each_entrys_namespace(void **state)
{
    registry *r = registry_new(0);
    char ns[32];
    size_t i, seen = 0;

    for (i = 0; i < 3000; i++) {
        int n = snprintf(ns, sizeof ns, "reg.%zu", i);
        assert_int_equal(registry_put(r, ns, (size_t)n, "same-id", 7, val(i + 1)), 0);
    }
    registry_foreach(r, ns_check_fn, &seen);
    assert_int_equal(seen, 3000);
    assert_true(registry_bytes(r) > 3000 * 24);
    registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_get_remove_roundtrip),
        cmocka_unit_test(null_value_is_storable),
        cmocka_unit_test(duplicate_key_is_eexist_and_changes_nothing),
        cmocka_unit_test(namespaces_are_separate),
        cmocka_unit_test(many_namespaces),
        cmocka_unit_test(max_entries_is_elimit_over_all_namespaces),
        cmocka_unit_test(bad_arguments_are_einval),
        cmocka_unit_test(lookalike_and_binary_ids_stay_distinct),
        cmocka_unit_test(two_registries_are_independent),
        cmocka_unit_test(foreach_visits_every_entry_once),
        cmocka_unit_test(a_million_entries),
        cmocka_unit_test(churn_across_resizes),
        cmocka_unit_test(foreach_and_get_during_incremental_resize),
        cmocka_unit_test(put_ref_borrows_the_key_bytes_and_acts_like_put),
        cmocka_unit_test(marks_live_with_their_entries),
        cmocka_unit_test(one_cluster_wrapping_around_the_end),
        cmocka_unit_test(equal_fingerprints_are_told_apart_by_the_bytes),
        cmocka_unit_test(random_operations_match_a_model),
        cmocka_unit_test(shrink_then_burst_of_puts),
        cmocka_unit_test(foreach_names_each_entrys_namespace),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
