/* test_proc_table.c - local pids, creation check, names, links and monitors
 * indexed by peer so that a disconnect removes all of them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../../c_src/cnode/proc_table.h"

#define LOCAL "council@host"

static void pids_come_from_a_64_bit_counter(void **st)
{
    (void)st;
    cn_proc_table pt;
    assert_int_equal(cn_pt_init(&pt, LOCAL, 77, 0), 0);
    cn_proc *a = cn_pt_spawn(&pt), *b = cn_pt_spawn(&pt);
    assert_true(b->id == a->id + 1);
    cn_wpid w;
    cn_pt_proc_wpid(&pt, b, &w);
    assert_int_equal(w.num, (uint32_t)b->id);
    assert_int_equal(w.serial, 0);
    assert_int_equal(w.creation, 77);
    /* past 2^32: num wraps, serial counts up, no reuse */
    pt.next_id = 0xffffffffull;
    cn_proc *c = cn_pt_spawn(&pt), *d = cn_pt_spawn(&pt);
    cn_pt_proc_wpid(&pt, c, &w);
    assert_int_equal(w.num, 0xffffffffu);
    assert_int_equal(w.serial, 0);
    cn_pt_proc_wpid(&pt, d, &w);
    assert_int_equal(w.num, 0);
    assert_int_equal(w.serial, 1);
    assert_ptr_equal(cn_pt_find_wire(&pt, &w), d);
    assert_int_equal(pt.nprocs, 4);
    /* many processes: the hash grows and every one is found */
    cn_proc *many[3000];
    for (int i = 0; i < 3000; i++)
        many[i] = cn_pt_spawn(&pt);
    for (int i = 0; i < 3000; i++)
        assert_ptr_equal(cn_pt_find_id(&pt, many[i]->id), many[i]);
    cn_pt_free(&pt);
}

static void other_creation_or_node_is_no_such_process(void **st)
{
    (void)st;
    cn_proc_table pt;
    cn_pt_init(&pt, LOCAL, 77, 0);
    cn_proc *p = cn_pt_spawn(&pt);
    cn_wpid w;
    cn_pt_proc_wpid(&pt, p, &w);
    assert_ptr_equal(cn_pt_find_wire(&pt, &w), p);
    w.creation = 78;
    assert_null(cn_pt_find_wire(&pt, &w));
    cn_pt_proc_wpid(&pt, p, &w);
    w.node = "council@other";
    w.node_len = strlen(w.node);
    assert_null(cn_pt_find_wire(&pt, &w));
    cn_pt_proc_wpid(&pt, p, &w);
    w.num += 1000;
    assert_null(cn_pt_find_wire(&pt, &w));
    /* a removed process is gone */
    cn_pt_proc_wpid(&pt, p, &w);
    cn_pt_remove(&pt, p);
    assert_null(cn_pt_find_wire(&pt, &w));
    cn_pt_release(p);
    cn_pt_free(&pt);
}

static void registered_names(void **st)
{
    (void)st;
    cn_proc_table pt;
    cn_pt_init(&pt, LOCAL, 5, 0);
    cn_proc *a = cn_pt_spawn(&pt), *b = cn_pt_spawn(&pt);
    assert_int_equal(cn_pt_register(&pt, a, "council_ex"), 0);
    assert_int_equal(cn_pt_register(&pt, b, "council_ex"), -1);
    assert_int_equal(cn_pt_register(&pt, a, "other"), -1);
    assert_ptr_equal(cn_pt_whereis(&pt, "council_ex", 10), a);
    assert_null(cn_pt_whereis(&pt, "council_e", 9));
    cn_pt_remove(&pt, a);
    assert_null(cn_pt_whereis(&pt, "council_ex", 10));
    assert_int_equal(cn_pt_register(&pt, b, "council_ex"), 0);
    cn_pt_release(a);
    cn_pt_free(&pt);
}

static void node_names_are_interned_and_bounded(void **st)
{
    (void)st;
    cn_proc_table pt;
    cn_pt_init(&pt, LOCAL, 5, 3);
    assert_int_equal(cn_pt_intern(&pt, LOCAL, strlen(LOCAL)), 0);
    uint32_t a = cn_pt_intern(&pt, "a@h", 3);
    assert_int_equal(a, 1);
    assert_int_equal(cn_pt_intern(&pt, "a@h", 3), a);
    assert_int_equal(cn_pt_intern(&pt, "b@h", 3), 2);
    assert_int_equal(cn_pt_intern(&pt, "c@h", 3), CN_NODE_NONE);
    assert_string_equal(cn_pt_node_name(&pt, a), "a@h");
    assert_int_equal(sizeof(cn_pid), 16);
    cn_pt_free(&pt);

    /* many names: ids stable, lookups exact (hash index grows) */
    cn_pt_init(&pt, LOCAL, 5, 0);
    char nm[32];
    for (int i = 1; i <= 20000; i++) {
        int len = snprintf(nm, sizeof nm, "n%d@host", i);
        assert_int_equal(cn_pt_intern(&pt, nm, (size_t)len), (uint32_t)i);
    }
    for (int i = 20000; i >= 1; i -= 7) {
        int len = snprintf(nm, sizeof nm, "n%d@host", i);
        assert_int_equal(cn_pt_intern(&pt, nm, (size_t)len), (uint32_t)i);
        assert_string_equal(cn_pt_node_name(&pt, (uint32_t)i), nm);
    }
    assert_int_equal(cn_pt_intern(&pt, "n1@hos", 6), 20001);
    cn_pt_free(&pt);
}

/* What node.c does on a disconnect: empty the peer's lists. */
static void drop_peer(cn_proc_table *pt, cn_peer *peer)
{
    while (!cn_dl_empty(&peer->links))
        cn_pt_link_del(pt, cn_dl_entry(peer->links.next, cn_link, by_peer));
    while (!cn_dl_empty(&peer->mons))
        cn_pt_mon_del(pt, cn_dl_entry(peer->mons.next, cn_mon, by_peer));
    cn_pt_peer_free(peer);
}

static void links_and_monitors_go_with_their_peer(void **st)
{
    (void)st;
    cn_proc_table pt;
    cn_pt_init(&pt, LOCAL, 5, 0);
    cn_proc *p = cn_pt_spawn(&pt), *q = cn_pt_spawn(&pt);
    uint32_t na = cn_pt_intern(&pt, "a@h", 3), nb = cn_pt_intern(&pt, "b@h", 3);
    cn_peer *pa = cn_pt_peer_new(&pt, na, NULL), *pb = cn_pt_peer_new(&pt, nb, NULL);
    cn_pid ra = {na, 10, 0, 1}, rb = {nb, 20, 0, 1};
    const unsigned char ref1[] = {90, 0, 1, 119, 3, 'a', '@', 'h', 0, 0, 0, 1, 0, 0, 0, 1};
    const unsigned char ref2[] = {90, 0, 1, 119, 3, 'a', '@', 'h', 0, 0, 0, 1, 0, 0, 0, 2};
    const unsigned char tgt[] = {119, 1, 'x'};

    assert_non_null(cn_pt_link_add(&pt, p, pa, &ra));
    assert_ptr_equal(cn_pt_link_add(&pt, p, pa, &ra), cn_pt_link_find(p, &ra)); /* no dup */
    assert_non_null(cn_pt_link_add(&pt, q, pa, &ra));
    assert_non_null(cn_pt_link_add(&pt, p, pb, &rb));
    assert_int_equal(pt.nlinks, 3);
    assert_non_null(cn_pt_mon_add(&pt, CN_MON_WATCHED_BY_REMOTE, p, pa, &ra,
                                  (cn_slice){ref1, sizeof ref1}, (cn_slice){tgt, sizeof tgt}));
    assert_non_null(cn_pt_mon_add(&pt, CN_MON_WATCHING_REMOTE, q, pa, &ra,
                                  (cn_slice){ref2, sizeof ref2}, (cn_slice){tgt, sizeof tgt}));
    assert_non_null(cn_pt_mon_add(&pt, CN_MON_WATCHED_BY_REMOTE, q, pb, &rb,
                                  (cn_slice){ref1, sizeof ref1}, (cn_slice){tgt, sizeof tgt}));
    assert_int_equal(pt.nmons, 3);
    assert_int_equal(pa->nlinks, 2);
    assert_int_equal(pa->nmons, 2);
    assert_int_equal(pb->nlinks, 1);
    assert_int_equal(pb->nmons, 1);
    /* lookups by ref are per peer and per kind */
    assert_non_null(cn_pt_mon_find(pa, CN_MON_WATCHED_BY_REMOTE, (cn_slice){ref1, sizeof ref1}));
    assert_null(cn_pt_mon_find(pa, CN_MON_WATCHED_BY_REMOTE, (cn_slice){ref2, sizeof ref2}));
    assert_non_null(cn_pt_mon_find(pa, CN_MON_WATCHING_REMOTE, (cn_slice){ref2, sizeof ref2}));

    drop_peer(&pt, pa);
    assert_int_equal(pt.nlinks, 1);
    assert_int_equal(pt.nmons, 1);
    assert_null(cn_pt_link_find(p, &ra));
    assert_null(cn_pt_link_find(q, &ra));
    assert_true(cn_dl_empty(&q->links));
    assert_true(cn_dl_empty(&q->watching));
    assert_true(cn_dl_empty(&p->watchers));
    assert_non_null(cn_pt_link_find(p, &rb));
    assert_false(cn_dl_empty(&q->watchers));

    drop_peer(&pt, pb);
    assert_int_equal(pt.nlinks, 0);
    assert_int_equal(pt.nmons, 0);
    cn_pt_free(&pt);
}

static void free_releases_everything_left(void **st)
{
    (void)st;
    cn_proc_table pt;
    cn_pt_init(&pt, LOCAL, 5, 0);
    cn_proc *p = cn_pt_spawn(&pt);
    cn_peer *peer = cn_pt_peer_new(&pt, cn_pt_intern(&pt, "a@h", 3), NULL);
    cn_pid r = {1, 1, 0, 1};
    const unsigned char ref[] = {90, 0, 1, 119, 1, 'a', 0, 0, 0, 1, 0, 0, 0, 1};
    cn_pt_link_add(&pt, p, peer, &r);
    cn_pt_mon_add(&pt, CN_MON_WATCHED_BY_REMOTE, p, peer, &r,
                  (cn_slice){ref, sizeof ref}, (cn_slice){ref, sizeof ref});
    cn_pt_free(&pt); /* leak checkers verify */
    assert_true(cn_dl_empty(&peer->links));
    assert_true(cn_dl_empty(&peer->mons));
    cn_pt_peer_free(peer);
}

/* dlist.h's cn_dl_take_all, which the NIF's shutdown and the C node's
 * end-of-run batch walk with: every entry moved in order, the source left
 * empty and usable, an empty source giving an empty list. */
struct item {
    int n;
    cn_dl link;
};

static void dlist_take_all_moves_every_entry_in_order(void **st)
{
    (void)st;
    struct item it[3] = {{.n = 1}, {.n = 2}, {.n = 3}};
    cn_dl from, to;
    cn_dl_init(&from);
    cn_dl_take_all(&to, &from);
    assert_true(cn_dl_empty(&to));
    assert_true(cn_dl_empty(&from));
    for (int i = 0; i < 3; i++)
        cn_dl_push(&from, &it[i].link);
    cn_dl_take_all(&to, &from);
    assert_true(cn_dl_empty(&from));
    int want = 1;
    for (cn_dl *e = to.next; e != &to; e = e->next)
        assert_int_equal(cn_dl_entry(e, struct item, link)->n, want++);
    assert_int_equal(want, 4);
    assert_ptr_equal(to.prev, &it[2].link);
    /* an entry taken off the batch and put back on the source */
    cn_dl_del(&it[0].link);
    cn_dl_push(&from, &it[0].link);
    assert_ptr_equal(from.next, &it[0].link);
    assert_ptr_equal(from.prev, &it[0].link);
    assert_ptr_equal(to.next, &it[1].link);
    assert_ptr_equal(it[1].link.prev, &to);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pids_come_from_a_64_bit_counter),
        cmocka_unit_test(other_creation_or_node_is_no_such_process),
        cmocka_unit_test(registered_names),
        cmocka_unit_test(node_names_are_interned_and_bounded),
        cmocka_unit_test(links_and_monitors_go_with_their_peer),
        cmocka_unit_test(free_releases_everything_left),
        cmocka_unit_test(dlist_take_all_moves_every_entry_in_order),
    };
    return cmocka_run_group_tests_name("proc_table", tests, NULL, NULL);
}
