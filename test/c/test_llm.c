/* test_llm.c - the model providers (openai, anthropic, gemini and the
 * openai presets) through the native API, against the fake model server
 * speaking each API's wire format on 127.0.0.1: streamed answers, usage,
 * retries and their kinds, timeouts, caps, TLS, tools, cancellation, and a
 * key that never shows. */
#include "core_test_util.h"
/* white-box suite (checks every event payload (as JSON) for the API key): built with -Ic_src/core, see the Makefile */
#include "council_internal.h"

#include "fake_llm_client.h"

#include <sys/stat.h>
#include <time.h>

#define KEY "sk-test-7f3a9c1e5b2d-SECRET"
#define KEY_ENV "COUNCIL_TEST_LLM_KEY"

static fake_llm plain, tls;
static char certdir[256];
static char ca_file[300];
static unsigned nonce;

static int group_setup(void **state)
{
    (void)state;
    setenv(KEY_ENV, KEY, 1);
    unsetenv("COUNCIL_TEST_UNSET_KEY");
    const char *args[] = {"--require-key", KEY, NULL};
    if (fake_llm_start(&plain, helpers_dir(), args))
        return -1;
    snprintf(certdir, sizeof certdir, "/tmp/council-llm-certs-%d", (int)getpid());
    mkdir(certdir, 0700);
    if (fake_llm_make_certs(certdir))
        return -1;
    snprintf(ca_file, sizeof ca_file, "%s/ca.pem", certdir);
    char cert[300], key[300];
    snprintf(cert, sizeof cert, "%s/server.pem", certdir);
    snprintf(key, sizeof key, "%s/server.key", certdir);
    const char *targs[] = {"--require-key", KEY, "--tls-cert", cert, "--tls-key", key, NULL};
    return fake_llm_start(&tls, helpers_dir(), targs);
}

static int group_teardown(void **state)
{
    (void)state;
    fake_llm_stop(&plain);
    fake_llm_stop(&tls);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A model name unique to this test: scenario~n. */
static const char *model(const char *scenario, char *buf, size_t n)
{
    snprintf(buf, n, "%s~%u-%d", scenario, ++nonce, (int)getpid());
    return buf;
}

static const char *base_for(const char *prov, const fake_llm *f, char *buf, size_t n)
{
    if (strcmp(prov, "anthropic") == 0)
        snprintf(buf, n, "%s", f->base);
    else if (strcmp(prov, "gemini") == 0)
        snprintf(buf, n, "%s/v1beta", f->base);
    else
        snprintf(buf, n, "%s/v1", f->base);
    return buf;
}

/* One member of provider on the plain server, independent_analysis. */
static char *one_member_spec(const char *prov, const char *mdl, const char *more_options,
                             const char *limits)
{
    char base[160];
    char *s = NULL;
    if (asprintf(&s,
                 "{'id':'llm','members':[{'id':'m','provider':'%s','options':"
                 "{'model':'%s','base_url':'%s','api_key_env':'" KEY_ENV "'%s%s}}],"
                 "'rounds':[{'type':'independent_analysis','name':'draft'}]%s%s}",
                 prov, mdl, base_for(prov, &plain, base, sizeof base),
                 more_options ? "," : "", more_options ? more_options : "",
                 limits ? ",'limits':" : "", limits ? limits : "") < 0)
        return NULL;
    return s;
}

/* The run's errors on stderr, for a failing assertion's context. */
static void dump_errors(const council_run *run)
{
    const council_result *res = council_run_result(run);
    for (size_t i = 0; i < res->n_errors; i++)
        fprintf(stderr, "  run error: %s\n", res->errors[i]);
}

static council_run *run_spec(council_ctx *ctx, char *spec, const char *input, recorder *rec)
{
    council_run *run = start_rec(ctx, sq(spec), input, rec);
    free(spec);
    return run;
}

static const council_member_result *only_member(const council_run *run)
{
    const council_result *res = council_run_result(run);
    assert_true(res->n_rounds >= 1);
    assert_int_equal(res->rounds[0]->n_members, 1);
    return res->rounds[0]->members[0];
}

/* Every event payload and the result, as JSON, must not hold the key. */
static void assert_no_key(const recorder *rec, const council_run *run)
{
    for (size_t i = 0; i < rec->n; i++) {
        const council_event *ev = rec->ev[i];
        json_t *p = council_event_payload_json(ev);
        char *t = p ? json_dumps(p, JSON_COMPACT) : NULL;
        if (t)
            assert_null(strstr(t, KEY));
        if (ev->chunk)
            assert_null(memmem(ev->chunk, ev->chunk_len, KEY, strlen(KEY)));
        free(t);
        json_decref(p);
    }
    char *r = council_run_result_json(run);
    assert_non_null(r);
    assert_null(strstr(r, KEY));
    free(r);
}

static void concat_tokens(const recorder *rec, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < rec->n; i++)
        if (rec->ev[i]->type == COUNCIL_EV_MEMBER_TOKEN) {
            assert_true(o + rec->ev[i]->chunk_len < n);
            memcpy(out + o, rec->ev[i]->chunk, rec->ev[i]->chunk_len);
            o += rec->ev[i]->chunk_len;
        }
    out[o] = 0;
}

/* ------------------------------------------------------------ streaming */

/* in the fixture */
static void streamed_answer(void **state, const char *prov, bool stream)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    char m[64];
    model("hello", m, sizeof m);
    council_run *run = f->run = run_spec(
        ctx,
        one_member_spec(prov, m,
                        stream ? "'system':'Be brief.','temperature':0.5"
                               : "'system':'Be brief.','stream':false",
                        NULL),
        "What is 2+2?", rec);
    wait_done(ctx, run, 10000);
    dump_errors(run);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_member_result *mr = only_member(run);
    assert_true(mr->ok);
    assert_int_equal(mr->attempts, 1);
    /* the fake answers "Hello from MODEL. You said: <start of the prompt>
     * [system: ...]" with multi-byte characters */
    assert_non_null(strstr(mr->text, "Hello from hello."));
    assert_non_null(strstr(mr->text, "[system: Be brief.]"));
    assert_non_null(strstr(mr->text, "✓ é 日本"));
    char toks[8192];
    concat_tokens(rec, toks, sizeof toks);
    assert_string_equal(toks, mr->text); /* the answer is what was streamed */
    if (stream)
        assert_true(rec_count(rec, COUNCIL_EV_MEMBER_TOKEN) > 3);
    assert_true(mr->usage.input_tokens > 0);
    assert_true(mr->usage.output_tokens > 0);
    assert_int_equal(mr->usage.reports, 1);
    const council_result *res = council_run_result(run);
    assert_int_equal(res->usage.input_tokens, mr->usage.input_tokens);
    assert_int_equal(res->usage.output_tokens, mr->usage.output_tokens);
    assert_int_equal(res->rounds[0]->usage.output_tokens, mr->usage.output_tokens);
    /* the key went in its header, and nowhere a user can see */
    json_t *reqs = fake_llm_requests_for(&plain, m, NULL);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *h = json_object_get(json_array_get(reqs, 0), "headers");
    /* the server checks the key (--require-key) and shows it redacted */
    const char *key_header = strcmp(prov, "anthropic") == 0 ? "x-api-key"
                             : strcmp(prov, "gemini") == 0  ? "x-goog-api-key"
                                                            : "authorization";
    assert_non_null(json_string_value(json_object_get(h, key_header)));
    if (strcmp(prov, "anthropic") == 0)
        assert_string_equal(json_string_value(json_object_get(h, "anthropic-version")),
                            "2023-06-01");
    json_decref(reqs);
    assert_no_key(rec, run);
}

static void test_openai_streams(void **s) { streamed_answer(s, "openai", true); }
static void test_openai_whole(void **s) { streamed_answer(s, "openai", false); }
static void test_anthropic_streams(void **s) { streamed_answer(s, "anthropic", true); }
static void test_anthropic_whole(void **s) { streamed_answer(s, "anthropic", false); }
static void test_gemini_streams(void **s) { streamed_answer(s, "gemini", true); }
static void test_gemini_whole(void **s) { streamed_answer(s, "gemini", false); }
static void test_openrouter_preset(void **s) { streamed_answer(s, "openrouter", true); }

/* The request bodies follow each API: roles, system placement, max_tokens
 * only where required or asked, extra fields merged. */
static void test_request_bodies(void **state)
{
    (void)state;
    static const char *const providers[] = {"openai", "anthropic", "gemini"};
    for (size_t p = 0; p < 3; p++) {
        council_ctx *ctx = test_ctx(0);
        char m[64];
        model("hello", m, sizeof m);
        council_run *run = run_spec(
            ctx,
            one_member_spec(providers[p], m,
                            "'system':'SYS','extra':{'seed':7},"
                            "'headers':{'X-Trace':'t1'}",
                            NULL),
            "Q", NULL);
        wait_done(ctx, run, 10000);
        assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
        json_t *reqs = fake_llm_requests_for(&plain, m, NULL);
        json_t *r = json_array_get(reqs, 0);
        json_t *body = json_loads(json_string_value(json_object_get(r, "body")), 0, NULL);
        assert_non_null(body);
        assert_int_equal(json_integer_value(json_object_get(body, "seed")), 7);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(r, "headers"), "x-trace")),
            "t1");
        if (p == 0) {
            json_t *msgs = json_object_get(body, "messages");
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "system");
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(msgs, 1), "role")), "user");
            assert_null(json_object_get(body, "max_tokens")); /* not asked for */
            assert_true(json_is_true(json_object_get(
                json_object_get(body, "stream_options"), "include_usage")));
        } else if (p == 1) {
            assert_string_equal(json_string_value(json_object_get(body, "system")), "SYS");
            assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 1024);
        } else {
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(json_object_get(
                    json_object_get(body, "systemInstruction"), "parts"), 0), "text")),
                "SYS");
            assert_non_null(strstr(json_string_value(json_object_get(r, "path")),
                                   ":streamGenerateContent"));
        }
        json_decref(body);
        json_decref(reqs);
        council_run_unref(run);
        council_ctx_free(ctx);
    }
}

/* ------------------------------------------------------------ failures */

typedef struct outcome {
    int ok;
    unsigned attempts;
    char error[600];
    char kind[16];
    uint64_t ms;
    size_t requests;
} outcome;

/* The member failed after `attempts` attempts with an error of `kind`
 * whose text holds `part` (unless NULL). */
static void assert_failed(const outcome *o, unsigned attempts, const char *kind,
                          const char *part)
{
    assert_false(o->ok);
    assert_int_equal(o->attempts, attempts);
    assert_string_equal(o->kind, kind);
    if (part && !strstr(o->error, part))
        fail_msg("error \"%s\" does not hold \"%s\"", o->error, part);
}

static void run_one(const char *prov, const char *scenario, const char *opts,
                    const char *limits, outcome *out)
{
    council_ctx *ctx = test_ctx(0);
    recorder rec = {0};
    char m[64];
    model(scenario, m, sizeof m);
    uint64_t t0 = uv_hrtime();
    council_run *run = run_spec(ctx, one_member_spec(prov, m, opts, limits), "Q", &rec);
    wait_done(ctx, run, 20000);
    out->ms = (uv_hrtime() - t0) / 1000000;
    const council_member_result *mr = only_member(run);
    out->ok = mr->ok;
    out->attempts = mr->attempts;
    snprintf(out->error, sizeof out->error, "%s", mr->error ? mr->error : "");
    snprintf(out->kind, sizeof out->kind, "%s", mr->error_kind ? mr->error_kind : "");
    json_t *reqs = fake_llm_requests_for(&plain, m, NULL);
    out->requests = json_array_size(reqs);
    json_decref(reqs);
    assert_no_key(&rec, run);
    rec_clear(&rec);
    council_run_unref(run);
    council_ctx_free(ctx);
}

static void test_rate_limit_waits_for_retry_after(void **state)
{
    (void)state;
    static const char *const providers[] = {"openai", "anthropic", "gemini"};
    for (size_t p = 0; p < 3; p++) {
        outcome o;
        run_one(providers[p], "status-429", NULL, "{'max_attempts':3,'backoff_ms':1}", &o);
        if (!o.ok)
            fprintf(stderr, "  %s: %s\n", providers[p], o.error);
        assert_true(o.ok);
        assert_int_equal(o.attempts, 2);
        assert_int_equal(o.requests, 2);
        assert_true(o.ms >= 950); /* Retry-After: 1, though backoff_ms is 1 */
    }
    outcome o;
    run_one("openai", "status-429-date", NULL, "{'max_attempts':2,'backoff_ms':1}", &o);
    assert_true(o.ok);
    assert_true(o.ms >= 900); /* an HTTP date about 2 s ahead, to the second */
}

static void test_server_errors_are_retried(void **state)
{
    (void)state;
    outcome o;
    run_one("openai", "status-500x2", NULL, "{'max_attempts':3,'backoff_ms':5}", &o);
    assert_true(o.ok);
    assert_int_equal(o.attempts, 3);
    run_one("anthropic", "status-500x2", NULL, "{'max_attempts':2,'backoff_ms':5}", &o);
    assert_failed(&o, 2, "transient", "HTTP 500");
}

static void test_wrong_key_is_permanent_and_names_the_variable(void **state)
{
    (void)state;
    static const char *const providers[] = {"openai", "anthropic", "gemini"};
    for (size_t p = 0; p < 3; p++) {
        outcome o;
        run_one(providers[p], "status-401", NULL, "{'max_attempts':3}", &o);
        assert_failed(&o, 1, "permanent", "member m");
        assert_non_null(strstr(o.error, KEY_ENV));
        assert_null(strstr(o.error, KEY));
    }
}

static void test_unset_key_variable_is_a_clear_error(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    char m[64];
    char spec[512];
    snprintf(spec, sizeof spec,
             "{'id':'k','members':[{'id':'m','provider':'openai','options':"
             "{'model':'%s','base_url':'%s/v1','api_key_env':'COUNCIL_TEST_UNSET_KEY'}}],"
             "'rounds':[{'type':'independent_analysis'}],'limits':{'max_attempts':3}}",
             model("hello", m, sizeof m), plain.base);
    council_run *run = f->run = start_rec(ctx, sq(spec), "Q", NULL);
    wait_done(ctx, run, 5000);
    const council_member_result *mr = only_member(run);
    assert_false(mr->ok);
    assert_int_equal(mr->attempts, 1);
    assert_string_equal(mr->error_kind, "permanent");
    assert_non_null(strstr(mr->error, "COUNCIL_TEST_UNSET_KEY is not set"));
}

/* One openai member on base_url reading its key from key_env; the run's
 * single member result. */
static const council_member_result *run_with_key_env(fx *f, const char *base_url,
                                                     const char *key_env, char *m, size_t mn)
{
    char spec[512];
    snprintf(spec, sizeof spec,
             sq("{'id':'k','members':[{'id':'m','provider':'openai','options':"
                "{'model':'%s','base_url':'%s','api_key_env':'%s'}}],"
                "'rounds':[{'type':'independent_analysis'}]}"),
             model("hello", m, mn), base_url, key_env);
    if (f->run)
        council_run_unref(f->run);
    f->run = start_rec(f->ctx, sq(spec), "Q", NULL);
    wait_done(f->ctx, f->run, 5000);
    return only_member(f->run);
}

static void test_context_variables_win_over_the_environment(void **state)
{
    fx *f = *state;
    char m[64], base[160];
    snprintf(base, sizeof base, "%s/v1", plain.base);
    /* a key only the context has */
    assert_int_equal(council_ctx_setenv(f->ctx, "COUNCIL_TEST_CTX_ONLY_KEY", KEY), COUNCIL_OK);
    assert_null(getenv("COUNCIL_TEST_CTX_ONLY_KEY"));
    assert_true(run_with_key_env(f, base, "COUNCIL_TEST_CTX_ONLY_KEY", m, sizeof m)->ok);
    /* the context's value wins over the process's (the server refuses it) */
    assert_int_equal(council_ctx_setenv(f->ctx, KEY_ENV, "sk-not-the-right-one"), COUNCIL_OK);
    const council_member_result *mr = run_with_key_env(f, base, KEY_ENV, m, sizeof m);
    assert_false(mr->ok);
    assert_string_equal(mr->error_kind, "permanent");
    assert_null(strstr(mr->error, "sk-not-the-right-one"));
    /* removed: the process environment answers again */
    assert_int_equal(council_ctx_setenv(f->ctx, KEY_ENV, NULL), COUNCIL_OK);
    assert_true(run_with_key_env(f, base, KEY_ENV, m, sizeof m)->ok);
    assert_int_equal(council_ctx_setenv(f->ctx, "COUNCIL_TEST_CTX_ONLY_KEY", NULL), COUNCIL_OK);
    mr = run_with_key_env(f, base, "COUNCIL_TEST_CTX_ONLY_KEY", m, sizeof m);
    assert_false(mr->ok);
    assert_non_null(strstr(mr->error, "COUNCIL_TEST_CTX_ONLY_KEY is not set"));
    /* bad names and sizes change nothing */
    char big[70000];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(council_ctx_setenv(f->ctx, "", "x"), COUNCIL_EINVAL);
    assert_int_equal(council_ctx_setenv(f->ctx, NULL, "x"), COUNCIL_EINVAL);
    assert_int_equal(council_ctx_setenv(f->ctx, "A=B", "x"), COUNCIL_EINVAL);
    assert_int_equal(council_ctx_setenv(f->ctx, "BIG", big), COUNCIL_EINVAL);
    assert_int_equal(council_ctx_setenv(f->ctx, "NEVER_SET", NULL), COUNCIL_OK);
}

/* http_proxy given to the context sends the request through the proxy: the
 * fake server, asked in absolute form for a host that does not resolve. */
static void test_context_proxy_variable_is_used(void **state)
{
    fx *f = *state;
    char m[64];
    assert_int_equal(council_ctx_setenv(f->ctx, "COUNCIL_TEST_CTX_ONLY_KEY", KEY), COUNCIL_OK);
    assert_int_equal(council_ctx_setenv(f->ctx, "http_proxy", plain.base), COUNCIL_OK);
    const council_member_result *mr =
        run_with_key_env(f, "http://model.invalid/v1", "COUNCIL_TEST_CTX_ONLY_KEY", m, sizeof m);
    if (!mr->ok)
        dump_errors(f->run);
    assert_true(mr->ok);
    json_t *reqs = fake_llm_requests_for(&plain, m, NULL);
    assert_int_equal(json_array_size(reqs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(reqs, 0), "path")),
                        "http://model.invalid/v1/chat/completions");
    json_decref(reqs);
    /* no_proxy naming the host: a direct attempt, which cannot resolve */
    assert_int_equal(council_ctx_setenv(f->ctx, "no_proxy", "model.invalid"), COUNCIL_OK);
    mr = run_with_key_env(f, "http://model.invalid/v1", "COUNCIL_TEST_CTX_ONLY_KEY", m, sizeof m);
    assert_false(mr->ok);
    reqs = fake_llm_requests_for(&plain, m, NULL);
    assert_int_equal(json_array_size(reqs), 0);
    json_decref(reqs);
}

static void test_unknown_model_and_bad_request_are_permanent(void **state)
{
    (void)state;
    outcome o;
    run_one("openai", "unknown-model", NULL, "{'max_attempts':3}", &o);
    assert_failed(&o, 1, "permanent", "unknown model");
    run_one("gemini", "status-400", NULL, "{'max_attempts':3}", &o);
    assert_failed(&o, 1, "permanent", "HTTP 400");
}

static void test_cut_stream_is_transient(void **state)
{
    (void)state;
    static const char *const providers[] = {"openai", "anthropic", "gemini"};
    for (size_t p = 0; p < 3; p++) {
        outcome o;
        run_one(providers[p], "cut", NULL, "{'max_attempts':2,'backoff_ms':1}", &o);
        assert_false(o.ok);
        assert_int_equal(o.attempts, 2);
        assert_int_equal(o.requests, 2);
        assert_string_equal(o.kind, "transient");
    }
}

static void test_malformed_stream_is_a_validation_error(void **state)
{
    (void)state;
    static const char *const providers[] = {"openai", "anthropic", "gemini"};
    for (size_t p = 0; p < 3; p++) {
        outcome o;
        run_one(providers[p], "malformed", NULL, "{'max_attempts':3}", &o);
        assert_failed(&o, 1, "validation", "not a JSON object");
        assert_true(strlen(o.error) < 400); /* at most 200 bytes quoted */
    }
    outcome o;
    run_one("openai", "malformed", "'stream':false", "{'max_attempts':3}", &o);
    assert_string_equal(o.kind, "validation");
    assert_non_null(strstr(o.error, "<html>"));
    run_one("openai", "wrongshape", "'stream':false", NULL, &o);
    assert_string_equal(o.kind, "validation");
    assert_non_null(strstr(o.error, "hello"));
}

/* An API's own error event in the middle of a stream (OpenAI's error
 * chunk, Anthropic's overloaded_error event, Gemini's error object) is a
 * transient failure: retried, then reported with the API's words. */
static void test_error_event_in_the_stream_is_transient(void **state)
{
    (void)state;
    static const char *const providers[] = {"openai", "anthropic", "gemini"};
    for (size_t p = 0; p < 3; p++) {
        outcome o;
        run_one(providers[p], "stream-error", NULL, "{'max_attempts':2,'backoff_ms':1}", &o);
        assert_failed(&o, 2, "transient", "error in the stream");
    }
}

static void test_idle_timeout_ends_a_stalled_stream(void **state)
{
    (void)state;
    outcome o;
    run_one("anthropic", "slow", "'idle_timeout_ms':300",
            "{'max_attempts':1,'member_timeout_ms':10000}", &o);
    assert_false(o.ok);
    assert_string_equal(o.kind, "transient");
    assert_non_null(strstr(o.error, "no data for 300 ms"));
    assert_true(o.ms < 5000);
}

static void test_oversized_body_is_permanent(void **state)
{
    (void)state;
    outcome o;
    run_one("openai", "huge", "'stream':false,'max_body_bytes':1048576",
            "{'max_attempts':3}", &o);
    assert_failed(&o, 1, "permanent", "over 1048576 bytes");
}

static void test_refused_connection_is_transient(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    /* a port nobody listens on: bind one, close it */
    char spec[512];
    snprintf(spec, sizeof spec,
             "{'id':'c','members':[{'id':'m','provider':'ollama','options':"
             "{'model':'x','base_url':'http://127.0.0.1:1/v1'}}],"
             "'rounds':[{'type':'independent_analysis'}],"
             "'limits':{'max_attempts':2,'backoff_ms':1}}");
    council_run *run = f->run = start_rec(ctx, sq(spec), "Q", NULL);
    wait_done(ctx, run, 5000);
    const council_member_result *mr = only_member(run);
    assert_false(mr->ok);
    assert_int_equal(mr->attempts, 2);
    assert_string_equal(mr->error_kind, "transient");
    assert_non_null(strstr(mr->error, "cannot connect"));
}

/* ------------------------------------------------------------------ TLS */

static void tls_run(const char *ca, outcome *o)
{
    council_ctx *ctx = test_ctx(0);
    char m[64], spec[1024], extra[400] = "";
    if (ca)
        snprintf(extra, sizeof extra, ",'ca_file':'%s'", ca);
    snprintf(spec, sizeof spec,
             "{'id':'t','members':[{'id':'m','provider':'openai','options':"
             "{'model':'%s','base_url':'%s/v1','api_key_env':'" KEY_ENV "'%s}}],"
             "'rounds':[{'type':'independent_analysis'}],'limits':{'max_attempts':2}}",
             model("hello", m, sizeof m), tls.base, extra);
    council_run *run = start_rec(ctx, sq(spec), "Q", NULL);
    wait_done(ctx, run, 10000);
    const council_member_result *mr = only_member(run);
    o->ok = mr->ok;
    o->attempts = mr->attempts;
    snprintf(o->kind, sizeof o->kind, "%s", mr->error_kind ? mr->error_kind : "");
    snprintf(o->error, sizeof o->error, "%s", mr->error ? mr->error : "");
    council_run_unref(run);
    council_ctx_free(ctx);
}

static void test_tls_with_the_ca_given_and_refused_without(void **state)
{
    (void)state;
    outcome o;
    tls_run(ca_file, &o);
    assert_true(o.ok);
    tls_run(NULL, &o);
    assert_failed(&o, 1, "permanent", "TLS");
}

/* ---------------------------------------------------------------- tools */

static int native_tool_start(council_tool_call *tc, void *arg)
{
    int *calls = arg;
    (*calls)++;
    size_t len;
    const char *a = council_tool_call_arguments(tc, &len);
    char out[256];
    int n = snprintf(out, sizeof out, "native(%.*s)", (int)len, a);
    return council_tool_call_return(tc, 1, out, (size_t)n);
}

/* in the fixture */
static void tools_for(void **state, const char *prov)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    static int native_calls; /* the tool's, as long as the context lives */
    native_calls = 0;
    council_tool_ops ops = {.start = native_tool_start};
    assert_int_equal(council_tool_register(ctx, "native_lookup", &ops, &native_calls),
                     COUNCIL_OK);
    assert_int_equal(council_tool_register(ctx, "native_lookup", &ops, &native_calls),
                     COUNCIL_EEXIST);
    char m[64], opts[1024];
    snprintf(opts, sizeof opts,
             "'tools':[{'name':'lookup','description':'Look a key up',"
             "'parameters':{'type':'object','properties':{'query':{'type':'string'}}},"
             "'handler':'native_lookup'},"
             "{'name':'shout','exec':['/bin/sh','-c','tr a-z A-Z']},"
             "{'name':'broken','exec':['/bin/sh','-c','echo boom >&2; exit 3']}]");
    council_run *run = f->run =
        run_spec(ctx, one_member_spec(prov, model("tools", m, sizeof m), opts, NULL),
                 "Use the tools", rec);
    wait_done(ctx, run, 15000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_member_result *mr = only_member(run);
    assert_true(mr->ok);
    assert_int_equal(native_calls, 1);
    /* "Tool results: " then each tool's content in order */
    assert_non_null(strstr(mr->text, "Tool results: "));
    assert_non_null(strstr(mr->text, "native(")); /* gemini quotes it inside JSON */
    assert_non_null(strstr(mr->text, "q1"));
    assert_non_null(strstr(mr->text, "{\"QUERY\":\"Q2\"}"));
    assert_non_null(strstr(mr->text, "exit status 3: boom"));
    assert_int_equal(rec_count(rec, COUNCIL_EV_TOOL_CALL_REQUEST), 3);
    assert_int_equal(rec_count(rec, COUNCIL_EV_TOOL_CALL_RESULT), 3);
    size_t errors = 0;
    for (size_t i = 0; i < rec->n; i++) {
        const council_event *ev = rec->ev[i];
        if (ev->type != COUNCIL_EV_TOOL_CALL_RESULT)
            continue;
        assert_string_equal(ev->member_id, "m");
        assert_string_equal(ev->round_name, "draft");
        assert_non_null(ev->tool->id);
        errors += ev->tool->ok ? 0 : 1;
    }
    assert_int_equal(errors, 1);
    assert_int_equal(mr->usage.reports, 2); /* two responses, both counted */
    json_t *reqs = fake_llm_requests_for(&plain, m, NULL);
    assert_int_equal(json_array_size(reqs), 2);
    json_decref(reqs);
}

static void test_openai_tools(void **s) { tools_for(s, "openai"); }
static void test_anthropic_tools(void **s) { tools_for(s, "anthropic"); }
static void test_gemini_tools(void **s) { tools_for(s, "gemini"); }

/* A handler that cancels the run from inside its start: nothing of the
 * member call is left (ASan), the run ends cancelled. */
static int cancelling_start(council_tool_call *tc, void *arg)
{
    (void)arg;
    council_call *call = council_tool_call_member_call(tc);
    assert_non_null(call);
    return council_run_cancel(council_call_run(call));
}

/* A handler that answers later, from a timer of the host's own. */
typedef struct later {
    uv_timer_t timer;
    council_tool_call *tc;
    int cancels;
} later;

static void later_fire(uv_timer_t *t)
{
    later *l = t->data;
    council_tool_call *tc = l->tc;
    if (!tc)
        return;
    l->tc = NULL;
    assert_int_equal(council_tool_call_return(tc, 1, "later", 5), COUNCIL_OK);
    assert_int_equal(council_tool_call_return(tc, 1, "twice", 5), COUNCIL_ESTATE);
    council_tool_call_unref(tc);
}

static int later_start(council_tool_call *tc, void *arg)
{
    later *l = arg;
    l->tc = council_tool_call_ref(tc);
    uv_timer_start(&l->timer, later_fire, 20, 0);
    return 0;
}

static void later_cancel(council_tool_call *tc, void *arg)
{
    later *l = arg;
    (void)tc;
    l->cancels++;
}

static void test_tool_handlers_answering_later_or_cancelling(void **state)
{
    (void)state;
    council_ctx *ctx = test_ctx(0);
    later l = {0};
    uv_timer_init(council_ctx_uv_loop(ctx), &l.timer);
    l.timer.data = &l;
    council_tool_ops lops = {.start = later_start, .cancel = later_cancel};
    council_tool_ops cops = {.start = cancelling_start};
    assert_int_equal(council_tool_register(ctx, "later", &lops, &l), COUNCIL_OK);
    assert_int_equal(council_tool_register(ctx, "canceller", &cops, NULL), COUNCIL_OK);
    char m[64];
    council_run *run = run_spec(
        ctx,
        one_member_spec("anthropic", model("tools", m, sizeof m),
                        "'tools':[{'name':'slowpoke','handler':'later'}]", NULL),
        "Q", NULL);
    wait_done(ctx, run, 10000);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    assert_non_null(strstr(only_member(run)->text, "Tool results: later"));
    assert_int_equal(l.cancels, 0);
    council_run_unref(run);

    run = run_spec(ctx,
                   one_member_spec("openai", model("tools", m, sizeof m),
                                   "'tools':[{'name':'a','handler':'later'},"
                                   "{'name':'b','handler':'canceller'}]",
                                   NULL),
                   "Q", NULL);
    wait_done(ctx, run, 10000);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    assert_int_equal(l.cancels, 1); /* tool a, abandoned with the run */
    council_tool_call_unref(l.tc); /* the host still held it */
    l.tc = NULL;
    council_run_unref(run);
    uv_close((uv_handle_t *)&l.timer, NULL);
    council_ctx_free(ctx);
}

static void test_tool_turns_are_bounded(void **state)
{
    (void)state;
    outcome o;
    run_one("openai", "tools-loop",
            "'max_tool_turns':3,'tools':[{'name':'t','exec':['/bin/echo','x']}]",
            "{'max_attempts':3}", &o);
    assert_failed(&o, 1, "permanent", "after 3 turns");
    assert_int_equal(o.requests, 3);
}

/* --------------------------------------------------------- cancellation */

static void test_cancel_mid_stream_closes_the_connection(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    char m[64];
    council_run *run = f->run = run_spec(ctx, one_member_spec("openai", model("slow", m, sizeof m), NULL, NULL),
                                "Q", rec);
    uint64_t t0 = uv_hrtime();
    while (rec_count(rec, COUNCIL_EV_MEMBER_TOKEN) == 0) {
        council_ctx_step(ctx, 10);
        council_ctx_flush(ctx);
        if ((uv_hrtime() - t0) / 1000000 > 10000)
            fail_msg("no token came");
    }
    assert_int_equal(council_run_cancel(run), COUNCIL_OK);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    /* the server sees the disconnect */
    int closed = 0;
    for (int i = 0; i < 200 && !closed; i++) {
        json_t *reqs = fake_llm_requests_for(&plain, m, NULL);
        json_t *r = json_array_get(reqs, 0);
        closed = r && json_is_false(json_object_get(r, "complete"));
        json_decref(reqs);
        if (!closed)
            usleep(10000);
    }
    assert_true(closed);
}

/* Freeing the context with streams and a tool program in flight leaves
 * nothing behind (ASan and valgrind check the memory and handles). */
static void test_context_freed_mid_stream(void **state)
{
    (void)state;
    council_ctx *ctx = test_ctx(0);
    recorder rec = {0};
    char m1[64], m2[64], spec[1024];
    snprintf(spec, sizeof spec,
             "{'id':'f','members':["
             "{'id':'s','provider':'anthropic','options':{'model':'%s',"
             "'base_url':'%s','api_key_env':'" KEY_ENV "'}},"
             "{'id':'t','provider':'openai','options':{'model':'%s',"
             "'base_url':'%s/v1','api_key_env':'" KEY_ENV "',"
             "'tools':[{'name':'nap','exec':['/bin/sleep','30']}]}}],"
             "'rounds':[{'type':'independent_analysis'}]}",
             model("slow", m1, sizeof m1), plain.base, model("tools", m2, sizeof m2), plain.base);
    council_run *run = start_rec(ctx, sq(spec), "Q", &rec);
    uint64_t t0 = uv_hrtime();
    while (rec_count(&rec, COUNCIL_EV_MEMBER_TOKEN) == 0 ||
           rec_count(&rec, COUNCIL_EV_TOOL_CALL_REQUEST) == 0) {
        council_ctx_step(ctx, 10);
        council_ctx_flush(ctx);
        if ((uv_hrtime() - t0) / 1000000 > 10000)
            fail_msg("the stream and the tool did not both start");
    }
    council_ctx_free(ctx);
    assert_int_equal(council_run_status(run), COUNCIL_CANCELLED);
    rec_clear(&rec);
    council_run_unref(run);
}

/* ------------------------------------------------------------- a council */

static void test_a_council_of_three_apis_votes(void **state)
{
    fx *f = *state;
    council_ctx *ctx = f->ctx;
    recorder *rec = &f->rec;
    char spec[2048], a[64], b[64], c[64];
    snprintf(spec, sizeof spec,
             "{'id':'mixed','members':["
             "{'id':'gpt','provider':'openai','options':{'model':'%s',"
             "'base_url':'%s/v1','api_key_env':'" KEY_ENV "'}},"
             "{'id':'claude','provider':'anthropic','options':{'model':'%s',"
             "'base_url':'%s','api_key_env':'" KEY_ENV "'}},"
             "{'id':'gem','provider':'gemini','options':{'model':'%s',"
             "'base_url':'%s/v1beta','api_key_env':'" KEY_ENV "'}}],"
             "'rounds':[{'type':'independent_analysis'},"
             "{'type':'anonymized_peer_review'},{'type':'vote'}],'chair':'claude'}",
             model("a", a, sizeof a), plain.base, model("b", b, sizeof b), plain.base,
             model("c", c, sizeof c), plain.base);
    council_run *run = f->run = start_rec(ctx, sq(spec), "Name a prime.", rec);
    wait_done(ctx, run, 20000);
    dump_errors(run);
    assert_int_equal(council_run_status(run), COUNCIL_COMPLETED);
    const council_result *res = council_run_result(run);
    assert_int_equal(res->n_errors, 0);
    assert_non_null(res->final_text);
    const council_round_result *vote = round_named(run, "vote");
    assert_non_null(vote);
    assert_non_null(vote->aggregate_json);
    for (size_t i = 0; i < vote->n_members; i++)
        assert_true(vote->members[i]->ok);
    /* 3 members x 3 rounds + the chair: 10 responses' usage */
    assert_int_equal(res->usage.reports, 10);
    assert_true(res->usage.output_tokens > 0);
    assert_no_key(rec, run);
}

/* -------------------------------------------------------------- options */

static void test_options_are_checked_with_their_field(void **state)
{
    (void)state;
    static const struct {
        const char *options, *field;
    } cases[] = {
        {"{}", "members[0].options.model"},
        {"{'model':''}", "members[0].options.model"},
        {"{'model':'a b'}", "members[0].options.model"},
        {"{'model':'m','api_key':'sk-1'}", "members[0].options.api_key"},
        {"{'model':'m','base_url':'ftp://x'}", "members[0].options.base_url"},
        {"{'model':'m','max_tokens':-1}", "members[0].options.max_tokens"},
        {"{'model':'m','stream':1}", "members[0].options.stream"},
        {"{'model':'m','extra':[]}", "members[0].options.extra"},
        {"{'model':'m','headers':{'X':'a\\nb'}}", "members[0].options.headers"},
        {"{'model':'m','tools':[{'name':'bad name'}]}",
         "members[0].options.tools[0].name"},
        {"{'model':'m','tools':[{'name':'t','exec':[]}]}",
         "members[0].options.tools[0].exec"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char spec[512];
        snprintf(spec, sizeof spec,
                 "{'id':'x','members':[{'id':'m','provider':'gemini','options':%s}],"
                 "'rounds':[{'type':'independent_analysis'}]}",
                 cases[i].options);
        council_spec *s = NULL;
        council_spec_error err;
        const char *json = sq(spec);
        assert_int_equal(council_spec_from_json(json, strlen(json), &s, &err), COUNCIL_ESPEC);
        assert_string_equal(err.field, cases[i].field);
        assert_null(strstr(err.message, "sk-1"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        fx_test(test_openai_streams),
        fx_test(test_openai_whole),
        fx_test(test_anthropic_streams),
        fx_test(test_anthropic_whole),
        fx_test(test_gemini_streams),
        fx_test(test_gemini_whole),
        fx_test(test_openrouter_preset),
        cmocka_unit_test(test_request_bodies),
        cmocka_unit_test(test_rate_limit_waits_for_retry_after),
        cmocka_unit_test(test_server_errors_are_retried),
        cmocka_unit_test(test_wrong_key_is_permanent_and_names_the_variable),
        fx_test(test_unset_key_variable_is_a_clear_error),
        cmocka_unit_test(test_unknown_model_and_bad_request_are_permanent),
        cmocka_unit_test(test_cut_stream_is_transient),
        cmocka_unit_test(test_malformed_stream_is_a_validation_error),
        cmocka_unit_test(test_error_event_in_the_stream_is_transient),
        cmocka_unit_test(test_idle_timeout_ends_a_stalled_stream),
        cmocka_unit_test(test_oversized_body_is_permanent),
        fx_test(test_refused_connection_is_transient),
        cmocka_unit_test(test_tls_with_the_ca_given_and_refused_without),
        fx_test(test_openai_tools),
        fx_test(test_anthropic_tools),
        fx_test(test_gemini_tools),
        cmocka_unit_test(test_tool_handlers_answering_later_or_cancelling),
        cmocka_unit_test(test_tool_turns_are_bounded),
        fx_test(test_cancel_mid_stream_closes_the_connection),
        cmocka_unit_test(test_context_freed_mid_stream),
        fx_test(test_a_council_of_three_apis_votes),
        cmocka_unit_test(test_options_are_checked_with_their_field),
        cmocka_unit_test_setup_teardown(test_context_variables_win_over_the_environment,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_context_proxy_variable_is_used, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
