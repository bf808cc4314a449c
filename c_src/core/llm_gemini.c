/* llm_gemini.c - the Gemini generateContent wire format.
 *
 * Request: POST {base_url}/models/{model}:streamGenerateContent?alt=sse
 * (or :generateContent when not streaming), "x-goog-api-key: KEY",
 * {"contents": [{"role":"user","parts":[{"text"}]}, ...],
 *  "systemInstruction"?: {"parts":[{"text"}]},
 *  "generationConfig"?: {"maxOutputTokens", "temperature"},
 *  "tools"?: [{"functionDeclarations": [{"name","description","parameters"}]}]}.
 * Stream: SSE "data:" events, each a whole GenerateContentResponse:
 * candidates[0].content.parts[] of {"text"} or {"functionCall":{name,args}},
 * candidates[0].finishReason on the last one, usageMetadata
 * (promptTokenCount, candidatesTokenCount) as running totals; no [DONE]:
 * a finishReason marks the end. Function calls come whole and have no id
 * (one is made up). A tool turn is the model content with its
 * functionCall parts, then a user content of functionResponse parts.
 */
#include "llm.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int build(llm_call *lc, char **url, json_t **out)
{
    if (!lc->conv) {
        lc->conv = json_pack("[{s:s,s:[{s:s}]}]", "role", "user", "parts", "text", lc->prompt);
        if (!lc->conv)
            return COUNCIL_ENOMEM;
    }
    char *model = curl_easy_escape(NULL, lc->o.model, 0);
    if (!model)
        return COUNCIL_ENOMEM;
    const char *method = lc->o.stream ? ":streamGenerateContent?alt=sse" : ":generateContent";
    *url = llm_url(lc, "/models/%s%s", model, method);
    json_t *b = json_pack("{s:O}", "contents", lc->conv);
    if (!*url || !b) {
        curl_free(model);
        json_decref(b);
        return COUNCIL_ENOMEM;
    }
    curl_free(model);
    if (lc->o.system)
        json_object_set_new(b, "systemInstruction",
                            json_pack("{s:[{s:s}]}", "parts", "text", lc->o.system));
    if (lc->o.max_tokens >= 0 || lc->o.has_temperature) {
        json_t *gc = json_object();
        if (lc->o.max_tokens >= 0)
            json_object_set_new(gc, "maxOutputTokens", json_integer(lc->o.max_tokens));
        if (lc->o.has_temperature)
            json_object_set_new(gc, "temperature", json_real(lc->o.temperature));
        json_object_set_new(b, "generationConfig", gc);
    }
    if (lc->o.tools) {
        json_t *decls = json_array();
        size_t i;
        json_t *t;
        json_array_foreach(lc->o.tools, i, t) {
            json_t *d = json_pack("{s:O}", "name", json_object_get(t, "name"));
            if (d && json_object_get(t, "description"))
                json_object_set(d, "description", json_object_get(t, "description"));
            if (d && json_object_get(t, "parameters"))
                json_object_set(d, "parameters", json_object_get(t, "parameters"));
            json_array_append_new(decls, d);
        }
        json_object_set_new(b, "tools", json_pack("[{s:o}]", "functionDeclarations", decls));
    }
    *out = b;
    return 0;
}

/* One GenerateContentResponse, streamed or whole. */
static int read_response(llm_call *lc, json_t *j, const char *data, size_t len)
{
    json_t *u = json_object_get(j, "usageMetadata");
    if (json_is_object(u))
        llm_usage(lc, (uint64_t)json_integer_value(json_object_get(u, "promptTokenCount")),
                  (uint64_t)json_integer_value(json_object_get(u, "candidatesTokenCount")), 0,
                  false);
    json_t *cands = json_object_get(j, "candidates");
    if (!json_is_array(cands)) {
        /* a chunk of usage only is fine; anything else is not this API */
        if (json_is_object(u))
            return 0;
        return llm_bad(lc, "a response without candidates", data, len);
    }
    json_t *c0 = json_array_get(cands, 0);
    json_t *parts = json_object_get(json_object_get(c0, "content"), "parts");
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p) {
        json_t *tx = json_object_get(p, "text");
        json_t *fc = json_object_get(p, "functionCall");
        if (json_is_true(json_object_get(p, "thought")))
            continue; /* a thought summary is not the answer */
        if (json_is_string(tx)) {
            llm_text(lc, json_string_value(tx), json_string_length(tx));
        } else if (json_is_object(fc)) {
            const char *name = llm_json_str(fc, "name");
            if (!name)
                return llm_bad(lc, "a functionCall without a name", data, len);
            int idx = llm_tool_begin(lc, llm_json_str(fc, "id"), name);
            if (idx < 0)
                return -1;
            json_t *args = json_object_get(fc, "args");
            char *a = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            int rc = llm_tool_args(lc, (size_t)idx, a ? a : "{}", a ? strlen(a) : 2);
            free(a);
            if (rc)
                return -1;
        }
    }
    const char *fr = llm_json_str(c0, "finishReason");
    if (fr) {
        lc->ended = true;
        if (strcmp(fr, "SAFETY") == 0 || strcmp(fr, "PROHIBITED_CONTENT") == 0 ||
            strcmp(fr, "BLOCKLIST") == 0 || strcmp(fr, "SPII") == 0)
            if (lc->text.len == 0)
                return llm_fail(lc, COUNCIL_FAIL_PERMANENT,
                                "gemini API: the answer was blocked (finishReason %.40s)", fr);
    }
    return 0;
}

static int on_event(llm_call *lc, const char *type, const char *data, size_t len)
{
    (void)type;
    json_t *j = llm_event_json(lc, data, len);
    if (!j)
        return -1;
    int rc;
    json_t *e = json_object_get(j, "error");
    if (json_is_object(e)) {
        const char *m = llm_json_str(e, "message");
        rc = llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "gemini API: error in the stream: %.200s",
                      m ? m : "(no message)");
    } else {
        rc = read_response(lc, j, data, len);
    }
    json_decref(j);
    return rc;
}

static int on_response(llm_call *lc, json_t *body)
{
    char *t = json_dumps(body, JSON_COMPACT);
    int rc = read_response(lc, body, t ? t : "", t ? strlen(t) : 0);
    free(t);
    lc->ended = true;
    return rc;
}

static const char *error_message(json_t *body)
{
    return llm_json_str(json_object_get(body, "error"), "message");
}

static int add_tool_turn(llm_call *lc)
{
    json_t *calls = json_array(), *resps = json_array();
    if (!calls || !resps) {
        json_decref(calls);
        json_decref(resps);
        return COUNCIL_ENOMEM;
    }
    int bad = 0;
    size_t tlen = lc->text.len - lc->turn_text_from;
    if (tlen)
        bad |= json_array_append_new(
            calls, json_pack("{s:o}", "text", cx_json_text(lc->text.p + lc->turn_text_from, tlen)));
    for (size_t i = 0; i < lc->n_tools; i++) {
        llm_tool *t = &lc->tools[i];
        json_t *args = json_loadb(t->args.p, t->args.len, 0, NULL);
        if (!json_is_object(args)) {
            json_decref(args);
            args = json_object();
        }
        bad |= json_array_append_new(
            calls, json_pack("{s:{s:s,s:o}}", "functionCall", "name", t->name, "args", args));
        /* the response is an object: a tool's JSON object answer as it is,
         * anything else under "result" (or "error" when the tool failed) */
        json_t *res = t->ok ? json_loadb(t->result, t->result_len, 0, NULL) : NULL;
        if (!json_is_object(res)) {
            json_decref(res);
            res = json_pack("{s:o}", t->ok ? "result" : "error",
                            cx_json_text(t->result, t->result_len));
        }
        bad |= json_array_append_new(
            resps, json_pack("{s:{s:s,s:o}}", "functionResponse", "name", t->name, "response",
                             res));
    }
    bad |= json_array_append_new(lc->conv,
                                 json_pack("{s:s,s:o}", "role", "model", "parts", calls));
    bad |= json_array_append_new(lc->conv,
                                 json_pack("{s:s,s:o}", "role", "user", "parts", resps));
    return bad ? COUNCIL_ENOMEM : 0;
}

const llm_api llm_gemini_api = {
    .name = "gemini",
    .build = build,
    .key_header = "x-goog-api-key:",
    .fixed_headers = NULL,
    .on_event = on_event,
    .on_response = on_response,
    .error_message = error_message,
    .add_tool_turn = add_tool_turn,
};
