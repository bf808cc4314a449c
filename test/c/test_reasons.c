/* test_reasons.c - the hosts' shared reasons and texts (reasons.c): the
 * error reasons, and the texts a "beam" request fails with, which the C
 * node and the NIF both take from here (the ExUnit suites check a few of
 * them as a caller sees them, on both backends). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "council.h"
#include "../../c_src/cnode/reasons.h"

static void error_reasons(void **st)
{
    (void)st;
    assert_string_equal(cn_reason_name(cn_reason_index(COUNCIL_ELIMIT)), "limit");
    assert_string_equal(cn_reason_name(cn_reason_index(COUNCIL_EIO)), "noconnection");
    assert_string_equal(cn_reason_name(cn_reason_index(COUNCIL_EUNKNOWN_RUN)), "unknown_run");
    assert_int_equal(cn_reason_index(COUNCIL_EINVAL), -1);
    /* every reason is a distinct atom */
    for (int i = 0; i < CN_N_REASONS; i++)
        for (int j = i + 1; j < CN_N_REASONS; j++)
            assert_string_not_equal(cn_reason_name(i), cn_reason_name(j));
    /* how a call's exit reads: the run ended, the node lost */
    assert_string_equal(cn_call_exit_at(0)->exit, "normal");
    assert_string_equal(cn_call_exit_at(0)->reason, "noproc");
    assert_int_equal(cn_call_exit_at(1)->arity, 2);
    assert_string_equal(cn_call_exit_at(1)->reason,
                        cn_reason_name(cn_reason_index(COUNCIL_EIO)));
}

static const char *const who[] = {"beam provider: ", "beam tool: ", "beam router: "};

/* Each kind has each common failure, named for the kind; only the router
 * has the router's own. */
static void beam_failure_texts(void **st)
{
    (void)st;
    for (int k = CN_BEAM_PROVIDER; k <= CN_BEAM_ROUTER; k++) {
        for (int f = 0; f < CN_N_BEAM_FAILURES; f++) {
            const char *t = cn_beam_failure_text((cn_beam_kind)k, (cn_beam_failure)f);
            if (f >= CN_BEAM_NOT_IDS && k != CN_BEAM_ROUTER) {
                assert_null(t);
                continue;
            }
            assert_non_null(t);
            assert_memory_equal(t, who[k], strlen(who[k]));
        }
    }
    assert_string_equal(cn_beam_failure_text(CN_BEAM_TOOL, CN_BEAM_NO_SERVER),
                        "beam tool: this run has no member server (none was given at "
                        "start, or it went down)");
    assert_string_equal(cn_beam_failure_text(CN_BEAM_PROVIDER, CN_BEAM_NO_PROCESS),
                        "beam provider: the run has no process on this node");
}

static void server_down_text(void **st)
{
    (void)st;
    char msg[64];
    cn_beam_server_down_text(msg, sizeof msg, CN_BEAM_ROUTER, "killed");
    assert_string_equal(msg, "beam router: member server down: killed");
    /* cut to fit, terminated */
    char small[20];
    cn_beam_server_down_text(small, sizeof small, CN_BEAM_TOOL, "killed");
    assert_string_equal(small, "beam tool: member s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_reasons),
        cmocka_unit_test(beam_failure_texts),
        cmocka_unit_test(server_down_text),
    };
    return cmocka_run_group_tests_name("reasons", tests, NULL, NULL);
}
