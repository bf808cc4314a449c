/* test_schema.c - council_schema_json says what the core does: every
 * round type and provider it lists is accepted, each limit's maximum is
 * the largest value a spec may give, and every error name maps to its
 * code's message. */
#include "core_test_util.h"

static json_t *schema(void)
{
    char *s = council_schema_json();
    assert_non_null(s);
    json_t *j = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(j);
    return j;
}

static int spec_rc(const char *member_provider, const char *rtype, const char *limits)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"id\":\"s\",\"members\":[{\"id\":\"a\",\"provider\":\"%s\",\"options\":"
             "{\"model\":\"m\",\"argv\":[\"x\"],\"spec\":{\"id\":\"n\",\"members\":[{\"id\":\"z\","
             "\"provider\":\"mock\"}],\"rounds\":[{\"type\":\"vote\"}]}}}],"
             "\"rounds\":[{\"type\":\"%s\"%s}],\"limits\":%s}",
             member_provider, rtype,
             strcmp(rtype, "iterate") == 0
                 ? ",\"options\":{\"rounds\":[{\"type\":\"vote\"}]}"
                 : "",
             limits);
    council_spec *s = NULL;
    council_spec_error err;
    int rc = council_spec_from_json(buf, strlen(buf), &s, &err);
    council_spec_unref(s);
    return rc;
}

static void test_round_types_and_providers_are_accepted(void **state)
{
    (void)state;
    json_t *j = schema();
    size_t i;
    json_t *v;
    council_ctx *ctx = test_ctx(0);
    json_array_foreach(json_object_get(j, "round_types"), i, v)
        assert_int_equal(spec_rc("mock", json_string_value(v), "{}"), COUNCIL_OK);
    assert_int_equal(spec_rc("mock", "no_such_type", "{}"), COUNCIL_ESPEC);
    json_array_foreach(json_object_get(j, "providers"), i, v) {
        assert_int_equal(spec_rc(json_string_value(v), "vote", "{}"), COUNCIL_OK);
        /* and registered in every context */
        char buf[512];
        snprintf(buf, sizeof buf,
                 "{\"id\":\"s\",\"members\":[{\"id\":\"a\",\"provider\":\"%s\",\"options\":"
                 "{\"model\":\"m\",\"argv\":[\"x\"],\"spec\":{\"id\":\"n\",\"members\":[{\"id\":"
                 "\"z\",\"provider\":\"mock\"}],\"rounds\":[{\"type\":\"vote\"}]}}}],"
                 "\"rounds\":[{\"type\":\"vote\"}]}",
                 json_string_value(v));
        council_spec *s = spec_json(buf);
        assert_int_equal(council_ctx_check_providers(ctx, s, NULL), COUNCIL_OK);
        council_spec_unref(s);
    }
    council_ctx_free(ctx);
    json_decref(j);
}

static void test_limit_maxima_are_the_largest_accepted(void **state)
{
    (void)state;
    json_t *j = schema();
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(j, "limits"), key, v) {
        json_int_t max = json_integer_value(json_object_get(v, "max"));
        assert_true(max > 0);
        char lim[128];
        snprintf(lim, sizeof lim, "{\"%s\":%lld}", key, (long long)max);
        assert_int_equal(spec_rc("mock", "vote", lim), COUNCIL_OK);
        snprintf(lim, sizeof lim, "{\"%s\":%lld}", key, (long long)max + 1);
        assert_int_equal(spec_rc("mock", "vote", lim), COUNCIL_ESPEC);
    }
    json_decref(j);
}

static void test_errors_statuses_and_prefix(void **state)
{
    (void)state;
    json_t *j = schema();
    const char *name;
    json_t *v;
    size_t n = 0;
    json_object_foreach(json_object_get(j, "errors"), name, v) {
        int code = (int)json_integer_value(json_object_get(v, "code"));
        assert_string_equal(json_string_value(json_object_get(v, "message")),
                            council_strerror(code));
        n++;
    }
    assert_int_equal(n, 16); /* every council_err but COUNCIL_OK */
    assert_string_equal(json_string_value(json_object_get(j, "topic_prefix")),
                        COUNCIL_TOPIC_PREFIX);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "statuses"), 4)),
                        "cancelled");
    assert_int_equal(json_array_size(json_object_get(j, "event_types")),
                     COUNCIL_EV_TOOL_CALL_RESULT);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_types_and_providers_are_accepted),
        cmocka_unit_test(test_limit_maxima_are_the_largest_accepted),
        cmocka_unit_test(test_errors_statuses_and_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
