/* llm_anthropic.c - the Messages API wire format.
 *
 * Request: POST {base_url}/v1/messages, "x-api-key: KEY",
 * "anthropic-version: 2023-06-01", {"model", "max_tokens" (required by the
 * API: 1024 unless the member sets it), "system"?, "messages", "stream",
 * "temperature"?, "tools"?: [{"name","description","input_schema"}]}.
 * Stream: typed events - message_start (usage.input_tokens),
 * content_block_start (a text block, or a tool_use block with id and name),
 * content_block_delta (text_delta.text, or input_json_delta.partial_json),
 * content_block_stop, message_delta (stop_reason, usage.output_tokens),
 * message_stop (the end), ping, and error. A tool turn is the assistant
 * message with its text and tool_use blocks, then a user message of
 * tool_result blocks (is_error for a failed tool).
 */
#include "json_scan.h"
#include "llm.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_TOKENS 1024

static int build(llm_call *lc, char **url, json_t **out)
{
    if (!lc->conv) {
        lc->conv = json_pack("[{s:s,s:s}]", "role", "user", "content", lc->prompt);
        if (!lc->conv)
            return COUNCIL_ENOMEM;
    }
    *url = llm_url(lc, "/v1/messages");
    json_t *b = json_pack("{s:s,s:I,s:O,s:b}", "model", lc->o.model, "max_tokens",
                          (json_int_t)(lc->o.max_tokens >= 0 ? lc->o.max_tokens
                                                             : DEFAULT_MAX_TOKENS),
                          "messages", lc->conv, "stream", lc->o.stream);
    if (!*url || !b) {
        json_decref(b);
        return COUNCIL_ENOMEM;
    }
    if (lc->o.system)
        json_object_set_new(b, "system", json_string(lc->o.system));
    if (lc->o.has_temperature)
        json_object_set_new(b, "temperature", json_real(lc->o.temperature));
    if (lc->o.tools) {
        json_t *a = json_array();
        size_t i;
        json_t *t;
        json_array_foreach(lc->o.tools, i, t) {
            json_t *p = json_object_get(t, "parameters");
            json_t *d = json_pack("{s:O,s:o}", "name", json_object_get(t, "name"),
                                  "input_schema",
                                  p ? json_incref(p)
                                    : json_pack("{s:s,s:{}}", "type", "object", "properties"));
            if (d && json_object_get(t, "description"))
                json_object_set(d, "description", json_object_get(t, "description"));
            json_array_append_new(a, d);
        }
        json_object_set_new(b, "tools", a);
    }
    *out = b;
    return 0;
}

static void read_usage(llm_call *lc, json_t *u)
{
    if (json_is_object(u))
        llm_usage(lc, (uint64_t)json_integer_value(json_object_get(u, "input_tokens")),
                  (uint64_t)json_integer_value(json_object_get(u, "output_tokens")), 0, false);
}

/* The event that carries the answer, a text_delta, read without building
 * it (json_scan.h): 1 when handled, 0 for the full reading below, -1 after
 * llm_fail. */
static int fast_text_delta(llm_call *lc, const char *data, size_t len)
{
    enum { TYPE, DTYPE, TEXT, N };
    jscan_want w[N] = {[TYPE] = {.path = "type"},
                       [DTYPE] = {.path = "delta.type"},
                       [TEXT] = {.path = "delta.text"}};
    if (jscan(data, len, w, N) != 0 || data[0] != '{')
        return llm_bad(lc, "a stream event that is not a JSON object", data, len);
    static const char cbd[] = "content_block_delta", td[] = "text_delta";
    if (w[TYPE].type != JSCAN_STRING || w[TYPE].escaped || w[TYPE].len != sizeof cbd - 1 ||
        memcmp(w[TYPE].p, cbd, sizeof cbd - 1) != 0 || w[DTYPE].type != JSCAN_STRING ||
        w[DTYPE].escaped || w[DTYPE].len != sizeof td - 1 ||
        memcmp(w[DTYPE].p, td, sizeof td - 1) != 0 || w[TEXT].type != JSCAN_STRING)
        return 0;
    return llm_text_scanned(lc, &w[TEXT]) ? -1 : 1;
}

static int on_event(llm_call *lc, const char *type, const char *data, size_t len)
{
    if (strcmp(type, "ping") == 0)
        return 0;
    int fast = fast_text_delta(lc, data, len);
    if (fast != 0)
        return fast < 0 ? -1 : 0;
    json_t *j = llm_event_json(lc, data, len);
    if (!j)
        return -1;
    /* the event's type is in its data too; the data's wins */
    const char *t = llm_json_str(j, "type");
    if (!t)
        t = type;
    int rc = 0;
    if (strcmp(t, "message_start") == 0) {
        read_usage(lc, json_object_get(json_object_get(j, "message"), "usage"));
    } else if (strcmp(t, "content_block_start") == 0) {
        json_t *cb = json_object_get(j, "content_block");
        const char *bt = llm_json_str(cb, "type");
        if (bt && strcmp(bt, "tool_use") == 0) {
            const char *name = llm_json_str(cb, "name");
            if (!name)
                rc = llm_bad(lc, "a tool_use block without a name", data, len);
            else if (llm_tool_begin(lc, llm_json_str(cb, "id"), name) < 0)
                rc = -1;
        } else if (bt && strcmp(bt, "text") == 0) {
            json_t *tx = json_object_get(cb, "text");
            if (json_is_string(tx))
                llm_text(lc, json_string_value(tx), json_string_length(tx));
        }
    } else if (strcmp(t, "content_block_delta") == 0) {
        json_t *d = json_object_get(j, "delta");
        const char *dt = llm_json_str(d, "type");
        if (!dt) {
            rc = llm_bad(lc, "a content_block_delta without a delta type", data, len);
        } else if (strcmp(dt, "text_delta") == 0) {
            json_t *tx = json_object_get(d, "text");
            if (json_is_string(tx))
                llm_text(lc, json_string_value(tx), json_string_length(tx));
        } else if (strcmp(dt, "input_json_delta") == 0) {
            json_t *pj = json_object_get(d, "partial_json");
            if (lc->n_tools == 0)
                rc = llm_bad(lc, "input_json_delta outside a tool_use block", data, len);
            else if (json_is_string(pj))
                rc = llm_tool_args(lc, lc->n_tools - 1, json_string_value(pj),
                                   json_string_length(pj));
        } /* thinking and other delta types carry no answer text */
    } else if (strcmp(t, "message_delta") == 0) {
        read_usage(lc, json_object_get(j, "usage"));
    } else if (strcmp(t, "message_stop") == 0) {
        lc->ended = true;
    } else if (strcmp(t, "error") == 0) {
        json_t *e = json_object_get(j, "error");
        const char *et = llm_json_str(e, "type"), *m = llm_json_str(e, "message");
        /* overloaded_error, api_error: the server's trouble, worth a retry */
        bool transient = !et || strcmp(et, "overloaded_error") == 0 ||
                         strcmp(et, "api_error") == 0 || strcmp(et, "rate_limit_error") == 0;
        rc = llm_fail(lc, transient ? COUNCIL_FAIL_TRANSIENT : COUNCIL_FAIL_PERMANENT,
                      "anthropic API: error in the stream: %.40s: %.200s", et ? et : "error",
                      m ? m : "(no message)");
    } /* content_block_stop, and event types added later: nothing to do */
    json_decref(j);
    return rc;
}

static int on_response(llm_call *lc, json_t *body)
{
    json_t *content = json_object_get(body, "content");
    if (!json_is_array(content))
        return llm_bad_json(lc, "a response without a content array", body);
    read_usage(lc, json_object_get(body, "usage"));
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b) {
        const char *bt = llm_json_str(b, "type");
        if (!bt)
            continue;
        if (strcmp(bt, "text") == 0) {
            json_t *tx = json_object_get(b, "text");
            if (json_is_string(tx))
                llm_text(lc, json_string_value(tx), json_string_length(tx));
        } else if (strcmp(bt, "tool_use") == 0) {
            const char *name = llm_json_str(b, "name");
            if (!name)
                return llm_bad(lc, "a tool_use block without a name", "", 0);
            int idx = llm_tool_begin(lc, llm_json_str(b, "id"), name);
            if (idx < 0)
                return -1;
            char *args = json_dumps(json_object_get(b, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
            int rc = llm_tool_args(lc, (size_t)idx, args ? args : "{}",
                                   args ? strlen(args) : 2);
            free(args);
            if (rc)
                return -1;
        }
    }
    lc->ended = true;
    return 0;
}

static const char *error_message(json_t *body)
{
    return llm_json_str(json_object_get(body, "error"), "message");
}

static int add_tool_turn(llm_call *lc)
{
    json_t *blocks = json_array(), *results = json_array();
    size_t tlen = lc->text.len - lc->turn_text_from;
    if (!blocks || !results) {
        json_decref(blocks);
        json_decref(results);
        return COUNCIL_ENOMEM;
    }
    int bad = 0;
    if (tlen)
        bad |= json_array_append_new(
            blocks, json_pack("{s:s,s:o}", "type", "text", "text",
                              cx_json_text(lc->text.p + lc->turn_text_from, tlen)));
    for (size_t i = 0; i < lc->n_tools; i++) {
        llm_tool *t = &lc->tools[i];
        json_t *input = json_loadb(t->args.p, t->args.len, 0, NULL);
        if (!json_is_object(input)) { /* the model wrote bad JSON: send it as it was */
            json_decref(input);
            input = json_pack("{s:o}", "_raw", cx_json_text(t->args.p, t->args.len));
        }
        bad |= json_array_append_new(blocks, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use",
                                                       "id", t->id, "name", t->name, "input",
                                                       input));
        json_t *r = json_pack("{s:s,s:s,s:o}", "type", "tool_result", "tool_use_id", t->id,
                              "content", cx_json_text(t->result, t->result_len));
        if (r && !t->ok)
            json_object_set_new(r, "is_error", json_true());
        bad |= json_array_append_new(results, r);
    }
    bad |= json_array_append_new(lc->conv, json_pack("{s:s,s:o}", "role", "assistant",
                                                     "content", blocks));
    bad |= json_array_append_new(lc->conv, json_pack("{s:s,s:o}", "role", "user", "content",
                                                     results));
    return bad ? COUNCIL_ENOMEM : 0;
}

static const char *const fixed_headers[] = {"anthropic-version", "2023-06-01", NULL};

const llm_api llm_anthropic_api = {
    .name = "anthropic",
    .build = build,
    .key_header = "x-api-key:",
    .fixed_headers = fixed_headers,
    .on_event = on_event,
    .on_response = on_response,
    .error_message = error_message,
    .add_tool_turn = add_tool_turn,
};
