/* test_hashtab.c - the hosts' intrusive hash table (hashtab.c), behind
 * the C node's subscriptions and the NIF's subscriptions, run index and
 * beam calls: add, look up by hash and key, remove, keys whose hashes
 * collide, growth past many buckets (every record still found), walking
 * every link, emptying with take_all, and FNV-1a's known values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../c_src/cnode/hashtab.h"

typedef struct rec {
    int key;
    cn_hlink hl;
    int seen;
} rec;

static uint64_t key_hash(int key)
{
    return cn_fnv1a(&key, sizeof key, CN_FNV_BASIS);
}

static rec *find(const cn_htab *t, int key, uint64_t hash)
{
    for (cn_hlink *l = cn_htab_first(t, hash); l; l = cn_htab_next(l)) {
        rec *r = CN_HTAB_ENTRY(l, rec, hl);
        if (r->key == key)
            return r;
    }
    return NULL;
}

static void fnv1a_known_values(void **st)
{
    (void)st;
    /* the published FNV-1a 64-bit test vectors */
    assert_true(cn_fnv1a("", 0, CN_FNV_BASIS) == 0xcbf29ce484222325ULL);
    assert_true(cn_fnv1a("a", 1, CN_FNV_BASIS) == 0xaf63dc4c8601ec8cULL);
    assert_true(cn_fnv1a("foobar", 6, CN_FNV_BASIS) == 0x85944171f73967e8ULL);
    /* chained parts hash as their concatenation */
    assert_true(cn_fnv1a("bar", 3, cn_fnv1a("foo", 3, CN_FNV_BASIS)) ==
                cn_fnv1a("foobar", 6, CN_FNV_BASIS));
}

static void add_find_del(void **st)
{
    (void)st;
    cn_htab t;
    assert_int_equal(cn_htab_init(&t, 4), 0);
    rec a = {.key = 1}, b = {.key = 2};
    assert_null(cn_htab_first(&t, key_hash(1)));
    cn_htab_add(&t, &a.hl, key_hash(1));
    cn_htab_add(&t, &b.hl, key_hash(2));
    assert_int_equal(t.n, 2);
    assert_ptr_equal(find(&t, 1, key_hash(1)), &a);
    assert_ptr_equal(find(&t, 2, key_hash(2)), &b);
    assert_null(find(&t, 3, key_hash(3)));
    cn_htab_del(&t, &a.hl);
    assert_int_equal(t.n, 1);
    assert_null(find(&t, 1, key_hash(1)));
    assert_ptr_equal(find(&t, 2, key_hash(2)), &b);
    cn_htab_del(&t, &b.hl);
    assert_int_equal(t.n, 0);
    assert_null(cn_htab_first(&t, key_hash(2)));
    cn_htab_fini(&t);
    cn_htab_fini(&t); /* finished twice: a no-op */
    cn_htab zero = {0};
    cn_htab_fini(&zero);
    assert_null(cn_htab_first(&zero, 1)); /* no buckets: nothing found */
}

/* Several keys under one hash: each found by its key, the latest first,
 * and a link of another hash in the same bucket is skipped. */
static void colliding_hashes(void **st)
{
    (void)st;
    cn_htab t;
    assert_int_equal(cn_htab_init(&t, 8), 0);
    rec r[3] = {{.key = 10}, {.key = 11}, {.key = 12}};
    rec other = {.key = 99};
    for (int i = 0; i < 3; i++)
        cn_htab_add(&t, &r[i].hl, 5);
    cn_htab_add(&t, &other.hl, 5 + 8 * 2); /* same bucket of 8, another hash */
    cn_hlink *l = cn_htab_first(&t, 5);
    assert_ptr_equal(l, &r[2].hl);
    assert_ptr_equal(l = cn_htab_next(l), &r[1].hl);
    assert_ptr_equal(l = cn_htab_next(l), &r[0].hl);
    assert_null(cn_htab_next(l));
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(find(&t, 10 + i, 5), &r[i]);
    assert_null(find(&t, 99, 5));
    assert_ptr_equal(find(&t, 99, 5 + 8 * 2), &other);
    cn_htab_del(&t, &r[1].hl); /* from the middle of the chain */
    assert_null(find(&t, 11, 5));
    assert_ptr_equal(find(&t, 10, 5), &r[0]);
    assert_ptr_equal(find(&t, 12, 5), &r[2]);
    assert_int_equal(t.n, 3);
    cn_htab_take_all(&t);
    cn_htab_fini(&t);
}

static void grows_and_keeps_every_record(void **st)
{
    (void)st;
    enum { N = 5000 };
    rec *r = calloc(N, sizeof *r);
    assert_non_null(r);
    cn_htab t;
    assert_int_equal(cn_htab_init(&t, 1), 0);
    for (int i = 0; i < N; i++) {
        r[i].key = i;
        cn_htab_add(&t, &r[i].hl, key_hash(i));
    }
    assert_int_equal(t.n, N);
    assert_true(t.nb > N);                 /* doubled at a load of 1 */
    assert_int_equal(t.nb & (t.nb - 1), 0); /* still a power of two */
    for (int i = 0; i < N; i++)
        assert_ptr_equal(find(&t, i, key_hash(i)), &r[i]);
    /* every link once in a walk */
    size_t walked = 0;
    CN_HTAB_EACH(&t, l) {
        rec *x = CN_HTAB_ENTRY(l, rec, hl);
        assert_int_equal(x->seen, 0);
        x->seen = 1;
        walked++;
    }
    assert_int_equal(walked, N);
    /* every third out; the others still found */
    for (int i = 0; i < N; i += 3)
        cn_htab_del(&t, &r[i].hl);
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0)
            assert_null(find(&t, i, key_hash(i)));
        else
            assert_ptr_equal(find(&t, i, key_hash(i)), &r[i]);
    }
    assert_int_equal(t.n, N - (N + 2) / 3);
    cn_htab_fini(&t);
    free(r);
}

static void take_all_empties(void **st)
{
    (void)st;
    cn_htab t;
    assert_int_equal(cn_htab_init(&t, 2), 0);
    assert_null(cn_htab_take_all(&t));
    rec r[10];
    for (int i = 0; i < 10; i++) {
        r[i] = (rec){.key = i};
        cn_htab_add(&t, &r[i].hl, key_hash(i));
    }
    int seen[10] = {0};
    size_t n = 0;
    for (cn_hlink *l = cn_htab_take_all(&t); l; l = l->next) {
        seen[CN_HTAB_ENTRY(l, rec, hl)->key]++;
        n++;
    }
    assert_int_equal(n, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(t.n, 0);
    for (int i = 0; i < 10; i++)
        assert_null(find(&t, i, key_hash(i)));
    /* still usable */
    cn_htab_add(&t, &r[3].hl, key_hash(3));
    assert_ptr_equal(find(&t, 3, key_hash(3)), &r[3]);
    cn_htab_del(&t, &r[3].hl);
    cn_htab_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fnv1a_known_values),
        cmocka_unit_test(add_find_del),
        cmocka_unit_test(colliding_hashes),
        cmocka_unit_test(grows_and_keeps_every_record),
        cmocka_unit_test(take_all_empties),
    };
    return cmocka_run_group_tests_name("hashtab", tests, NULL, NULL);
}
