/* test_pending.c - the table of requests waiting for a BEAM reply
 * (pending.c), behind the beam provider and the beam tool handler: add,
 * find and take by id, detach a run's entries (in id order) or all of
 * them, growth past many buckets, and freeing with entries still in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "../../c_src/cnode/pending.h"

static int run_a, run_b; /* two owners */
static int items[4];

static void add_find_take(void **st)
{
    (void)st;
    cn_pending *t = cn_pending_new();
    assert_non_null(t);
    assert_null(cn_pending_find(t, 1));
    assert_null(cn_pending_take(t, 1));
    assert_int_equal(cn_pending_add(t, 7, &items[0], &run_a), 0);
    assert_int_equal(cn_pending_add(t, 9, &items[1], &run_b), 0);
    assert_int_equal(cn_pending_count(t), 2);
    cn_pending_entry *e = cn_pending_find(t, 7);
    assert_non_null(e);
    assert_ptr_equal(e->item, &items[0]);
    assert_ptr_equal(e->owner, &run_a);
    assert_int_equal(cn_pending_count(t), 2); /* find leaves it in */
    assert_ptr_equal(cn_pending_take(t, 7), &items[0]);
    assert_null(cn_pending_take(t, 7));
    assert_null(cn_pending_find(t, 7));
    assert_int_equal(cn_pending_count(t), 1);
    cn_pending_free(t); /* one entry still in: freed, its item untouched */
    cn_pending_free(NULL);
    assert_int_equal(cn_pending_count(NULL), 0);
}

static void detach_by_owner_in_id_order(void **st)
{
    (void)st;
    cn_pending *t = cn_pending_new();
    const uint64_t ids[] = {40, 3, 17, 1000, 5};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(cn_pending_add(t, ids[i], &items[i % 4], i % 2 ? &run_b : &run_a), 0);
    /* run_a: 40, 17, 5 -> 5, 17, 40 */
    cn_pending_entry *e = cn_pending_detach(t, &run_a);
    uint64_t want[] = {5, 17, 40};
    for (size_t i = 0; i < 3; i++) {
        assert_non_null(e);
        assert_int_equal(e->id, want[i]);
        assert_ptr_equal(e->owner, &run_a);
        e = cn_pending_entry_free(e);
    }
    assert_null(e);
    assert_int_equal(cn_pending_count(t), 2);
    assert_null(cn_pending_detach(t, &run_a)); /* none left */
    e = cn_pending_detach(t, NULL);          /* every entry */
    assert_int_equal(e->id, 3);
    assert_int_equal(e->next->id, 1000);
    assert_null(e->next->next);
    while (e)
        e = cn_pending_entry_free(e);
    assert_int_equal(cn_pending_count(t), 0);
    cn_pending_free(t);
}

static void many_entries_grow_the_table(void **st)
{
    (void)st;
    cn_pending *t = cn_pending_new();
    for (uint64_t id = 1; id <= 5000; id++)
        assert_int_equal(cn_pending_add(t, id * 7919, &items[id % 4], id % 3 ? &run_a : &run_b),
                         0);
    assert_int_equal(cn_pending_count(t), 5000);
    for (uint64_t id = 1; id <= 5000; id += 37) {
        cn_pending_entry *e = cn_pending_find(t, id * 7919);
        assert_non_null(e);
        assert_ptr_equal(e->item, &items[id % 4]);
    }
    size_t n = 0;
    uint64_t last = 0;
    for (cn_pending_entry *e = cn_pending_detach(t, &run_b); e; n++) {
        assert_true(e->id > last);
        last = e->id;
        e = cn_pending_entry_free(e);
    }
    assert_int_equal(n, 5000 / 3);
    assert_int_equal(cn_pending_count(t), 5000 - 5000 / 3);
    cn_pending_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_find_take),
        cmocka_unit_test(detach_by_owner_in_id_order),
        cmocka_unit_test(many_entries_grow_the_table),
    };
    return cmocka_run_group_tests_name("pending", tests, NULL, NULL);
}
