/* llm_openai.c - the Chat Completions wire format (OpenAI, and every
 * server compatible with it: OpenRouter, Ollama, vLLM, llama.cpp...).
 *
 * Request: POST {base_url}/chat/completions, "Authorization: Bearer KEY",
 * {"model", "messages": [{"role":"system"}?, {"role":"user"}, ...],
 *  "stream", "stream_options": {"include_usage": true}, "max_tokens"?,
 *  "temperature"?, "tools"?: [{"type":"function","function":{...}}]}.
 * max_tokens is sent only when the member sets it (newer reasoning models
 * refuse it). Stream: "data: {chat.completion.chunk}" events, text in
 * choices[0].delta.content, tool calls in choices[0].delta.tool_calls
 * (by index, arguments in pieces), usage in a last chunk with no choices,
 * then "data: [DONE]". A tool turn is the assistant message with its
 * tool_calls, then one {"role":"tool","tool_call_id","content"} per call.
 */
#include "json_scan.h"
#include "llm.h"

#include <stdlib.h>
#include <string.h>

static json_t *tool_defs(json_t *tools)
{
    json_t *a = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_pack("{s:O}", "name", json_object_get(t, "name"));
        if (!fn)
            break;
        json_t *d = json_object_get(t, "description"), *p = json_object_get(t, "parameters");
        if (d)
            json_object_set(fn, "description", d);
        json_object_set_new(fn, "parameters",
                            p ? json_incref(p) : json_pack("{s:s,s:{}}", "type", "object",
                                                           "properties"));
        json_array_append_new(a, json_pack("{s:s,s:o}", "type", "function", "function", fn));
    }
    return a;
}

static int build(llm_call *lc, char **url, json_t **out)
{
    if (!lc->conv) {
        lc->conv = json_array();
        if (!lc->conv)
            return COUNCIL_ENOMEM;
        if (lc->o.system)
            json_array_append_new(lc->conv, json_pack("{s:s,s:s}", "role", "system",
                                                      "content", lc->o.system));
        json_array_append_new(lc->conv,
                              json_pack("{s:s,s:s}", "role", "user", "content", lc->prompt));
    }
    *url = llm_url(lc, "/chat/completions");
    json_t *b = json_pack("{s:s,s:O,s:b}", "model", lc->o.model, "messages", lc->conv,
                          "stream", lc->o.stream);
    if (!*url || !b) {
        json_decref(b);
        return COUNCIL_ENOMEM;
    }
    if (lc->o.stream)
        json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (lc->o.max_tokens >= 0)
        json_object_set_new(b, "max_tokens", json_integer(lc->o.max_tokens));
    if (lc->o.has_temperature)
        json_object_set_new(b, "temperature", json_real(lc->o.temperature));
    if (lc->o.tools)
        json_object_set_new(b, "tools", tool_defs(lc->o.tools));
    *out = b;
    return 0;
}

static void read_usage(llm_call *lc, json_t *u)
{
    if (!json_is_object(u))
        return;
    json_t *c = json_object_get(u, "cost");
    llm_usage(lc, (uint64_t)json_integer_value(json_object_get(u, "prompt_tokens")),
              (uint64_t)json_integer_value(json_object_get(u, "completion_tokens")),
              json_number_value(c), json_is_number(c));
}

/* A tool_calls array, streamed (pieces by index) or whole. */
static int read_tool_calls(llm_call *lc, json_t *calls)
{
    size_t i;
    json_t *tc;
    json_array_foreach(calls, i, tc) {
        json_t *ji = json_object_get(tc, "index");
        size_t idx = json_is_integer(ji) ? (size_t)json_integer_value(ji) : i;
        json_t *fn = json_object_get(tc, "function");
        if (!json_is_object(fn))
            continue;
        if (idx >= lc->n_tools) {
            if (idx != lc->n_tools)
                return llm_fail(lc, COUNCIL_FAIL_VALIDATION,
                                "openai API: tool call index %zu out of order", idx);
            const char *name = llm_json_str(fn, "name");
            if (!name)
                return llm_bad(lc, "a tool call without a name", "", 0);
            if (llm_tool_begin(lc, llm_json_str(tc, "id"), name) < 0)
                return -1;
        }
        const char *args = llm_json_str(fn, "arguments");
        if (args && llm_tool_args(lc, idx, args, strlen(args)))
            return -1;
    }
    return 0;
}

/* The common chunk, read without building it (json_scan.h): a text delta
 * and usage. Returns 1 when the chunk was handled, 0 when it needs the full
 * reading below (tool calls, an error, anything unusual), -1 after llm_fail. */
static int fast_chunk(llm_call *lc, const char *data, size_t len)
{
    enum { CHOICES, DELTA, CONTENT, TOOLS, ERROR, USAGE, PROMPT, COMPLETION, COST, N };
    jscan_want w[N] = {
        [CHOICES] = {.path = "choices"},
        [DELTA] = {.path = "choices.0.delta"},
        [CONTENT] = {.path = "choices.0.delta.content"},
        [TOOLS] = {.path = "choices.0.delta.tool_calls"},
        [ERROR] = {.path = "error"},
        [USAGE] = {.path = "usage"},
        [PROMPT] = {.path = "usage.prompt_tokens"},
        [COMPLETION] = {.path = "usage.completion_tokens"},
        [COST] = {.path = "usage.cost"},
    };
    if (jscan(data, len, w, N) != 0 || data[0] != '{')
        return llm_bad(lc, "a stream event that is not a JSON object", data, len);
    if (w[CHOICES].type != JSCAN_ARRAY || w[TOOLS].type != JSCAN_NONE ||
        w[ERROR].type != JSCAN_NONE ||
        (w[USAGE].type != JSCAN_NONE && w[USAGE].type != JSCAN_NULL &&
         w[USAGE].type != JSCAN_OBJECT))
        return 0;
    bool has_choice = w[CHOICES].len > 2; /* more than "[]" (white space aside) */
    if (has_choice && w[DELTA].type != JSCAN_OBJECT)
        return 0; /* let the full reading say what is wrong */
    if (w[USAGE].type == JSCAN_OBJECT) {
        uint64_t in = 0, out = 0;
        double cost = 0;
        jscan_u64(&w[PROMPT], &in);
        jscan_u64(&w[COMPLETION], &out);
        bool has_cost = jscan_double(&w[COST], &cost) == 0;
        llm_usage(lc, in, out, cost, has_cost);
    }
    if (w[CONTENT].type == JSCAN_STRING && w[CONTENT].len && llm_text_scanned(lc, &w[CONTENT]))
        return -1;
    return 1;
}

static int on_event(llm_call *lc, const char *type, const char *data, size_t len)
{
    (void)type;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        lc->ended = true;
        return 0;
    }
    int fast = fast_chunk(lc, data, len);
    if (fast != 0)
        return fast < 0 ? -1 : 0;
    json_t *j = llm_event_json(lc, data, len);
    if (!j)
        return -1;
    int rc = 0;
    json_t *err = json_object_get(j, "error");
    json_t *choices = json_object_get(j, "choices");
    if (json_is_object(err)) {
        const char *m = llm_json_str(err, "message");
        rc = llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "openai API: error in the stream: %.200s",
                      m ? m : "(no message)");
    } else if (!json_is_array(choices)) {
        rc = llm_bad(lc, "a stream chunk without choices", data, len);
    } else {
        read_usage(lc, json_object_get(j, "usage"));
        json_t *c0 = json_array_get(choices, 0);
        json_t *delta = json_object_get(c0, "delta");
        if (json_is_object(delta)) {
            json_t *content = json_object_get(delta, "content");
            if (json_is_string(content))
                llm_text(lc, json_string_value(content), json_string_length(content));
            json_t *calls = json_object_get(delta, "tool_calls");
            if (json_is_array(calls))
                rc = read_tool_calls(lc, calls);
        } else if (c0) {
            rc = llm_bad(lc, "a stream choice without a delta", data, len);
        }
    }
    json_decref(j);
    return rc;
}

static int on_response(llm_call *lc, json_t *body)
{
    json_t *msg = json_object_get(json_array_get(json_object_get(body, "choices"), 0), "message");
    if (!json_is_object(msg))
        return llm_bad_json(lc, "a response without choices[0].message", body);
    read_usage(lc, json_object_get(body, "usage"));
    json_t *content = json_object_get(msg, "content");
    if (json_is_string(content))
        llm_text(lc, json_string_value(content), json_string_length(content));
    json_t *calls = json_object_get(msg, "tool_calls");
    lc->ended = true;
    return json_is_array(calls) ? read_tool_calls(lc, calls) : 0;
}

static const char *error_message(json_t *body)
{
    json_t *e = json_object_get(body, "error");
    if (json_is_string(e))
        return json_string_value(e);
    return llm_json_str(e, "message");
}

static int add_tool_turn(llm_call *lc)
{
    json_t *calls = json_array();
    const char *text = lc->text.p ? lc->text.p + lc->turn_text_from : "";
    size_t tlen = lc->text.len - lc->turn_text_from;
    json_t *asst = json_pack("{s:s,s:o,s:o}", "role", "assistant", "content",
                             tlen ? cx_json_text(text, tlen) : json_null(), "tool_calls",
                             calls);
    if (!asst || json_array_append_new(lc->conv, asst))
        return COUNCIL_ENOMEM;
    for (size_t i = 0; i < lc->n_tools; i++) {
        llm_tool *t = &lc->tools[i];
        /* no error flag in this API: a failed tool says so in its content */
        llm_buf content = {0};
        if ((!t->ok && llm_buf_add(&content, "Error: ", 7)) ||
            llm_buf_add(&content, t->result, t->result_len))
            return COUNCIL_ENOMEM;
        int bad = json_array_append_new(
                      calls, json_pack("{s:s,s:s,s:{s:s,s:o}}", "id", t->id, "type",
                                       "function", "function", "name", t->name, "arguments",
                                       cx_json_text(t->args.p, t->args.len))) ||
                  json_array_append_new(
                      lc->conv, json_pack("{s:s,s:s,s:o}", "role", "tool", "tool_call_id",
                                          t->id, "content",
                                          cx_json_text(content.p, content.len)));
        llm_buf_free(&content);
        if (bad)
            return COUNCIL_ENOMEM;
    }
    return 0;
}

const llm_api llm_openai_api = {
    .name = "openai",
    .build = build,
    .key_header = "Authorization:Bearer ",
    .fixed_headers = NULL,
    .on_event = on_event,
    .on_response = on_response,
    .error_message = error_message,
    .add_tool_turn = add_tool_turn,
};
