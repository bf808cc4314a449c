/* test_ballot.c - the tallies of ballot.c: plurality, Borda count and a
 * pairwise match, ties to the lower label, ballots out of range ignored. */
#include "core_test_util.h"
/* white-box suite (the tallies are internal to the core): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

static void test_plurality_counts_and_breaks_ties_low(void **state)
{
    (void)state;
    int64_t tally[3];
    const long a[] = {2, 1, 2, 1, 0};
    assert_int_equal(ballot_plurality(a, 5, 3, tally), 1); /* 1 and 2 tie: 1 */
    assert_int_equal(tally[0], 1);
    assert_int_equal(tally[1], 2);
    assert_int_equal(tally[2], 2);
    const long b[] = {2, 2, -1, 7};
    assert_int_equal(ballot_plurality(b, 4, 3, tally), 2);
    assert_int_equal(tally[2], 2);
    assert_int_equal(tally[0] + tally[1], 0); /* -1 and 7 are not candidates */
    assert_int_equal(ballot_plurality(NULL, 0, 3, tally), 0); /* no ballot: the first */
}

static void test_borda_scores_positions_and_keeps_label_order_on_ties(void **state)
{
    (void)state;
    /* 3 candidates: first place 2 points, second 1, unranked 0 */
    const size_t r1[] = {2, 0, 1}, r2[] = {0, 2}, r3[] = {1};
    const size_t *orders[] = {r1, r2, r3};
    const size_t lens[] = {3, 2, 1};
    int64_t score[3];
    size_t order[3];
    ballot_borda(orders, lens, 3, 3, score, order);
    assert_int_equal(score[0], 1 + 2);
    assert_int_equal(score[1], 0 + 0 + 2);
    assert_int_equal(score[2], 2 + 1);
    /* 0 and 2 tie at 3: label order, then 1 */
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
}

static void test_match_counts_both_sides(void **state)
{
    (void)state;
    int64_t va, vb;
    const long c[] = {4, 1, 4, 9};
    assert_int_equal(ballot_match(c, 4, 1, 4, &va, &vb), 4);
    assert_int_equal(va, 1);
    assert_int_equal(vb, 2);
    const long d[] = {1, 4};
    assert_int_equal(ballot_match(d, 2, 1, 4, &va, &vb), 1); /* a tie: a */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plurality_counts_and_breaks_ties_low),
        cmocka_unit_test(test_borda_scores_positions_and_keeps_label_order_on_ties),
        cmocka_unit_test(test_match_counts_both_sides),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
