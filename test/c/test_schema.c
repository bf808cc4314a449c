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

/* A spec's verdict and, when refused, the field it names. */
static int verdict(const char *json, char *field, size_t cap)
{
    council_spec *s = NULL;
    council_spec_error err;
    int rc = council_spec_from_json(json, strlen(json), &s, &err);
    council_spec_unref(s);
    snprintf(field, cap, "%s", rc ? err.field : "");
    return rc;
}

/* One round of type with options (JSON text, single quotes). */
static int round_rc(const char *type, const char *options, char *field, size_t cap)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{'id':'s','members':[{'id':'a','provider':'mock'}],"
             "'rounds':[{'type':'%s','options':{'rounds':[{'type':'vote'}]%s%s}}]}",
             type, *options ? "," : "", options);
    return verdict(sq(buf), field, cap);
}

static void test_spec_rules_are_the_cores(void **state)
{
    (void)state;
    json_t *j = schema();
    json_t *sp = json_object_get(j, "spec");
    char field[128], buf[1024];
    /* the fewest members and rounds */
    assert_int_equal(json_integer_value(json_object_get(sp, "min_members")), 1);
    assert_int_equal(json_integer_value(json_object_get(sp, "min_rounds")), 1);
    assert_int_equal(verdict(sq("{'id':'s','members':[],'rounds':[{'type':'vote'}]}"), field,
                             sizeof field),
                     COUNCIL_ESPEC);
    assert_string_equal(field, "members");
    assert_int_equal(verdict(sq("{'id':'s','members':[{'id':'a','provider':'mock'}],"
                                "'rounds':[]}"),
                             field, sizeof field),
                     COUNCIL_ESPEC);
    assert_string_equal(field, "rounds");
    /* the unique member key, the bytes of a name */
    assert_int_equal(verdict(sq("{'id':'s','members':[{'id':'a','provider':'mock'},"
                                "{'id':'a','provider':'mock'}],'rounds':[{'type':'vote'}]}"),
                             field, sizeof field),
                     COUNCIL_ESPEC);
    snprintf(buf, sizeof buf, "members[1].%s",
             json_string_value(json_object_get(sp, "unique_member_key")));
    assert_string_equal(field, buf);
    size_t max = (size_t)json_integer_value(json_object_get(sp, "max_name_bytes"));
    for (size_t n = max; n <= max + 1; n++) {
        char name[300];
        assert_true(n < sizeof name);
        memset(name, 'x', n);
        name[n] = 0;
        snprintf(buf, sizeof buf,
                 "{'id':'s','members':[{'id':'%s','provider':'mock'}],"
                 "'rounds':[{'type':'vote','name':'%s'}]}",
                 name, name);
        assert_int_equal(verdict(sq(buf), field, sizeof field), n == max ? 0 : COUNCIL_ESPEC);
    }
    /* the top-level keys: a spec with each, the core reads them */
    const char *key;
    json_t *v;
    size_t nkeys = 0;
    json_object_foreach(json_object_get(sp, "keys"), key, v) nkeys++;
    assert_int_equal(nkeys, 6);
    assert_string_equal(json_string_value(json_object_get(json_object_get(sp, "keys"), "chair")),
                        "member_id");
    assert_int_equal(verdict(sq("{'id':'s','members':[{'id':'a','provider':'mock'}],"
                                "'rounds':[{'type':'vote'}],'chair':'z'}"),
                             field, sizeof field),
                     COUNCIL_ESPEC);
    assert_string_equal(field, "chair");
    /* each type's options: every enum value and integer bound accepted,
     * one outside refused at the option's path; member references checked */
    const char *type;
    json_t *opts;
    json_object_foreach(json_object_get(j, "round_options"), type, opts) {
        const char *t = strcmp(type, "*") == 0 ? "iterate" : type;
        const char *name;
        json_t *rule;
        json_object_foreach(opts, name, rule) {
            const char *kind = json_string_value(json_object_get(rule, "kind"));
            char o[256], path[128];
            snprintf(path, sizeof path, "rounds[0].options.%s", name);
            if (strcmp(kind, "enum") == 0) {
                size_t i;
                json_t *val;
                json_array_foreach(json_object_get(rule, "values"), i, val) {
                    snprintf(o, sizeof o, "'%s':'%s'", name, json_string_value(val));
                    assert_int_equal(round_rc(t, o, field, sizeof field), COUNCIL_OK);
                }
                snprintf(o, sizeof o, "'%s':'no_such_value'", name);
                assert_int_equal(round_rc(t, o, field, sizeof field), COUNCIL_ESPEC);
                assert_string_equal(field, path);
            } else if (strcmp(kind, "integer") == 0) {
                json_int_t lo = json_integer_value(json_object_get(rule, "min"));
                json_int_t hi = json_integer_value(json_object_get(rule, "max"));
                for (json_int_t x = lo - 1; x <= hi + 1; x += (x == lo ? hi - lo : 1)) {
                    snprintf(o, sizeof o, "'%s':%lld", name, (long long)x);
                    assert_int_equal(round_rc(t, o, field, sizeof field),
                                     x >= lo && x <= hi ? COUNCIL_OK : COUNCIL_ESPEC);
                }
            } else if (strcmp(kind, "member_ids") == 0 || strcmp(kind, "member_id") == 0) {
                int list = strcmp(kind, "member_ids") == 0;
                snprintf(o, sizeof o, "'%s':%s'a'%s", name, list ? "[" : "", list ? "]" : "");
                assert_int_equal(round_rc(t, o, field, sizeof field), COUNCIL_OK);
                snprintf(o, sizeof o, "'%s':%s'z'%s", name, list ? "[" : "", list ? "]" : "");
                assert_int_equal(round_rc(t, o, field, sizeof field), COUNCIL_ESPEC);
                if (list)
                    strcat(path, "[0]");
                assert_string_equal(field, path);
            } else if (strcmp(kind, "rounds") == 0) {
                assert_int_equal(round_rc(t, "", field, sizeof field), COUNCIL_OK);
                snprintf(buf, sizeof buf,
                         "{'id':'s','members':[{'id':'a','provider':'mock'}],"
                         "'rounds':[{'type':'%s'}]}",
                         t);
                assert_int_equal(verdict(sq(buf), field, sizeof field), COUNCIL_ESPEC);
                assert_string_equal(field, path);
            }
        }
    }
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_types_and_providers_are_accepted),
        cmocka_unit_test(test_limit_maxima_are_the_largest_accepted),
        cmocka_unit_test(test_errors_statuses_and_prefix),
        cmocka_unit_test(test_spec_rules_are_the_cores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
