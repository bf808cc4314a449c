/* test_term_json.c - the ETF <-> JSON mapping of c_src/cnode/term_json. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../c_src/cnode/term_json.h"

static json_t *decode_buf(ei_x_buff *x, const char **why)
{
    int index = 0, version = 0;
    json_t *out = NULL;
    assert_int_equal(ei_decode_version(x->buff, &index, &version), 0);
    if (term_json_decode(x->buff, &index, 64, &out, why) < 0) return NULL;
    assert_int_equal(index, x->index);
    return out;
}

static void test_elixir_spec_map_becomes_json_object(void **state)
{
    (void)state;
    ei_x_buff x;
    ei_x_new_with_version(&x);
    /* %{id: "c1", members: [%{id: "a", provider: "mock"}], limits: %{max_attempts: 2},
     *   flag: true, none: nil, ratio: 0.5, big: 1 <<< 40} */
    ei_x_encode_map_header(&x, 7);
    ei_x_encode_atom(&x, "id"); ei_x_encode_binary(&x, "c1", 2);
    ei_x_encode_atom(&x, "members");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_atom(&x, "id"); ei_x_encode_binary(&x, "a", 1);
    ei_x_encode_binary(&x, "provider", 8); ei_x_encode_atom(&x, "mock");
    ei_x_encode_empty_list(&x);
    ei_x_encode_atom(&x, "limits");
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_atom(&x, "max_attempts"); ei_x_encode_long(&x, 2);
    ei_x_encode_atom(&x, "flag"); ei_x_encode_atom(&x, "true");
    ei_x_encode_atom(&x, "none"); ei_x_encode_atom(&x, "nil");
    ei_x_encode_atom(&x, "ratio"); ei_x_encode_double(&x, 0.5);
    ei_x_encode_atom(&x, "big"); ei_x_encode_longlong(&x, 1LL << 40);

    const char *why = NULL;
    json_t *j = decode_buf(&x, &why);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(s,
        "{\"big\":1099511627776,\"flag\":true,\"id\":\"c1\",\"limits\":{\"max_attempts\":2},"
        "\"members\":[{\"id\":\"a\",\"provider\":\"mock\"}],\"none\":null,\"ratio\":0.5}");
    free(s);
    json_decref(j);
    ei_x_free(&x);
}

static void test_tuples_pids_and_bad_utf8_are_refused_with_a_reason(void **state)
{
    (void)state;
    ei_x_buff x;
    const char *why = NULL;

    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "json"); ei_x_encode_binary(&x, "{}", 2);
    assert_null(decode_buf(&x, &why));
    assert_non_null(why);
    ei_x_free(&x);

    ei_x_new_with_version(&x);
    ei_x_encode_binary(&x, "\xff\xfe", 2);
    assert_null(decode_buf(&x, &why));
    assert_string_equal(why, "binary is not valid UTF-8");
    ei_x_free(&x);

    ei_x_new_with_version(&x);
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_long(&x, 1); ei_x_encode_long(&x, 2);
    assert_null(decode_buf(&x, &why));
    assert_string_equal(why, "map key is neither atom nor binary");
    ei_x_free(&x);
}

static void test_nesting_beyond_the_depth_bound_is_refused(void **state)
{
    (void)state;
    ei_x_buff x;
    ei_x_new_with_version(&x);
    for (int i = 0; i < 100; i++) ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 1);
    for (int i = 0; i < 100; i++) ei_x_encode_empty_list(&x);
    const char *why = NULL;
    assert_null(decode_buf(&x, &why));
    assert_string_equal(why, "nesting too deep");
    ei_x_free(&x);
}

/* Every key is a binary and every string stays a binary, whatever it says:
 * no atom is ever made from JSON. */
static void test_encode_makes_no_atoms(void **state)
{
    (void)state;
    json_t *j = json_pack("{s:s, s:s, s:{s:i}, s:[s,n,b]}", "member_id", "m1", "status", "ok",
                          "aggregate", "status", 3, "list", "error", 1);
    ei_x_buff x;
    ei_x_new(&x);
    assert_int_equal(term_json_encode(&x, j), 0);
    char *printed = NULL;
    int index = 0;
    assert_true(ei_s_print_term(&printed, x.buff, &index) > 0);
    /* jansson keeps insertion order; ei prints binaries as byte lists:
     * m1 = 109,49; ok = 111,107; status = 115,116,97,116,117,115 */
    assert_string_equal(printed,
        "#{#Bin<109,101,109,98,101,114,95,105,100> => #Bin<109,49>, "
        "#Bin<115,116,97,116,117,115> => #Bin<111,107>, "
        "#Bin<97,103,103,114,101,103,97,116,101> => #{#Bin<115,116,97,116,117,115> => 3}, "
        "#Bin<108,105,115,116> => [#Bin<101,114,114,111,114>, nil, true]}");
    free(printed);
    ei_x_free(&x);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elixir_spec_map_becomes_json_object),
        cmocka_unit_test(test_tuples_pids_and_bad_utf8_are_refused_with_a_reason),
        cmocka_unit_test(test_nesting_beyond_the_depth_bound_is_refused),
        cmocka_unit_test(test_encode_makes_no_atoms),
    };
    return cmocka_run_group_tests_name("term_json", tests, NULL, NULL);
}
