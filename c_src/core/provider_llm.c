/* provider_llm.c - the model providers: openai, openrouter, ollama,
 * anthropic and gemini members (see llm.h for how the work is split).
 *
 * One member call is one llm_call: the key is read from the environment
 * when the call starts, the prompt is made from the core's request, then
 * requests go out until the model answers with text: each response is
 * streamed (SSE, every text delta a member_token) or read whole; when the
 * model asks for tools, they run (tools.c) and their results go back in the
 * next request, up to max_tool_turns. Every failure gets a kind; the engine
 * retries the transient ones. The call's outcome is always reported from
 * outside curl's callbacks, so that what the engine does next (a retry, the
 * next round) may start transfers of its own.
 */
#include "llm.h"

#include "tools.h"

#include <ctype.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_BODY (8u << 20)
#define DEFAULT_MAX_TOOL_TURNS 8
#define DEFAULT_MAX_PARALLEL_TOOLS 8
#define DEFAULT_TOOL_TIMEOUT_MS 30000
#define ERROR_BODY_CAP (64u << 10)
#define QUOTE_MAX 200

typedef struct llm_provider_def {
    const char *name;
    const llm_api *api;
    const char *base_url;
    const char *key_env;     /* NULL: no key unless the options name one */
} llm_provider_def;

static const llm_provider_def defs[] = {
    {"openai", &llm_openai_api, "https://api.openai.com/v1", "OPENAI_API_KEY"},
    {"openrouter", &llm_openai_api, "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"},
    {"ollama", &llm_openai_api, "http://127.0.0.1:11434/v1", NULL},
    {"anthropic", &llm_anthropic_api, "https://api.anthropic.com", "ANTHROPIC_API_KEY"},
    {"gemini", &llm_gemini_api, "https://generativelanguage.googleapis.com/v1beta",
     "GEMINI_API_KEY"},
};

static const llm_provider_def *def_find(const char *name)
{
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (strcmp(defs[i].name, name) == 0)
            return &defs[i];
    return NULL;
}

bool llm_is_provider(const char *name)
{
    return name && def_find(name) != NULL;
}

/* ---------------------------------------------------------------- buffers */

int llm_buf_add(llm_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p)
            return COUNCIL_ENOMEM;
        b->p = p;
        b->cap = nc;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

void llm_buf_free(llm_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

const char *llm_json_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int llm_json_merge(json_t *dst, json_t *src)
{
    if (!src)
        return 0;
    return json_object_update(dst, src) ? COUNCIL_ENOMEM : 0;
}

/* ---------------------------------------------------------------- options */

static uint64_t opt_uint(json_t *o, const char *k, uint64_t def)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v)
                                                            : def;
}

static void opts_read(llm_opts *o, const llm_provider_def *d, json_t *m)
{
    memset(o, 0, sizeof *o);
    o->model = llm_json_str(m, "model");
    o->base_url = llm_json_str(m, "base_url");
    if (!o->base_url)
        o->base_url = d->base_url;
    o->key_env = llm_json_str(m, "api_key_env");
    o->key_env_explicit = o->key_env != NULL;
    if (!o->key_env)
        o->key_env = d->key_env;
    o->system = llm_json_str(m, "system");
    o->headers = json_object_get(m, "headers");
    o->extra = json_object_get(m, "extra");
    o->tools = json_object_get(m, "tools");
    if (o->tools && json_array_size(o->tools) == 0)
        o->tools = NULL;
    o->ca_file = llm_json_str(m, "ca_file");
    json_t *mt = json_object_get(m, "max_tokens");
    o->max_tokens = json_is_integer(mt) ? json_integer_value(mt) : -1;
    json_t *t = json_object_get(m, "temperature");
    o->has_temperature = json_is_number(t);
    o->temperature = o->has_temperature ? json_number_value(t) : 0;
    json_t *st = json_object_get(m, "stream");
    o->stream = st ? json_is_true(st) : true;
    o->connect_timeout_ms = opt_uint(m, "connect_timeout_ms", 10000);
    o->idle_timeout_ms = opt_uint(m, "idle_timeout_ms", 0);
    o->max_tool_turns = (unsigned)opt_uint(m, "max_tool_turns", DEFAULT_MAX_TOOL_TURNS);
    o->max_parallel_tools =
        (unsigned)opt_uint(m, "max_parallel_tools", DEFAULT_MAX_PARALLEL_TOOLS);
    if (o->max_parallel_tools == 0)
        o->max_parallel_tools = 1;
    o->tool_timeout_ms = opt_uint(m, "tool_timeout_ms", DEFAULT_TOOL_TIMEOUT_MS);
    o->max_body = (size_t)opt_uint(m, "max_body_bytes", DEFAULT_MAX_BODY);
}

static int ofail(council_spec_error *err, size_t i, const char *key, const char *msg)
{
    if (err) {
        snprintf(err->field, sizeof err->field, "members[%zu].options%s%s", i,
                 key ? "." : "", key ? key : "");
        snprintf(err->message, sizeof err->message, "%s", msg);
    }
    return COUNCIL_ESPEC;
}

static bool header_text_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n' || (unsigned char)*s < 0x20)
            return false;
    return true;
}

static bool tool_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return false;
    return true;
}

int llm_check_options(const char *prov, json_t *m, size_t i, council_spec_error *err)
{
    (void)prov;
    json_t *v = json_object_get(m, "model");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return ofail(err, i, "model", "is required: the model's name (a non-empty string)");
    for (const char *c = json_string_value(v); *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '#' || *c == '?')
            return ofail(err, i, "model", "must not hold spaces, control characters, '#' or '?'");
    static const char *const strs[] = {"base_url", "api_key_env", "system", "ca_file"};
    for (size_t k = 0; k < sizeof strs / sizeof strs[0]; k++) {
        v = json_object_get(m, strs[k]);
        if (v && (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)))
            return ofail(err, i, strs[k], "must be a string");
    }
    v = json_object_get(m, "base_url");
    if (v && strncmp(json_string_value(v), "http://", 7) != 0 &&
        strncmp(json_string_value(v), "https://", 8) != 0)
        return ofail(err, i, "base_url", "must be an http:// or https:// URL");
    v = json_object_get(m, "api_key_env");
    if (v && json_string_length(v) == 0)
        return ofail(err, i, "api_key_env", "must name an environment variable");
    if (json_object_get(m, "api_key"))
        return ofail(err, i, "api_key",
                     "keys are not put in specs: name the environment variable "
                     "that holds it with api_key_env");
    static const char *const uints[] = {"max_tokens",     "connect_timeout_ms",
                                        "idle_timeout_ms", "max_tool_turns",
                                        "max_parallel_tools", "tool_timeout_ms",
                                        "max_body_bytes"};
    for (size_t k = 0; k < sizeof uints / sizeof uints[0]; k++) {
        v = json_object_get(m, uints[k]);
        if (v && (!json_is_integer(v) || json_integer_value(v) < 0 ||
                  json_integer_value(v) > 1000000000))
            return ofail(err, i, uints[k], "must be an integer from 0 to 1000000000");
    }
    v = json_object_get(m, "temperature");
    if (v && !json_is_number(v))
        return ofail(err, i, "temperature", "must be a number");
    v = json_object_get(m, "stream");
    if (v && !json_is_boolean(v))
        return ofail(err, i, "stream", "must be true or false");
    v = json_object_get(m, "extra");
    if (v && !json_is_object(v))
        return ofail(err, i, "extra", "must be an object (merged into the request body)");
    v = json_object_get(m, "headers");
    if (v) {
        if (!json_is_object(v))
            return ofail(err, i, "headers", "must be an object of strings");
        const char *k;
        json_t *hv;
        json_object_foreach(v, k, hv) {
            if (!json_is_string(hv) || !header_text_ok(json_string_value(hv)) ||
                !tool_name_ok(k))
                return ofail(err, i, "headers",
                             "must be an object of strings (token names, no line breaks)");
        }
    }
    v = json_object_get(m, "tools");
    if (v) {
        if (!json_is_array(v) || json_array_size(v) > 128)
            return ofail(err, i, "tools", "must be an array of at most 128 tools");
        size_t k;
        json_t *t;
        json_array_foreach(v, k, t) {
            char key[48];
            snprintf(key, sizeof key, "tools[%zu]", k);
            if (!json_is_object(t))
                return ofail(err, i, key, "must be an object");
            const char *name = llm_json_str(t, "name");
            snprintf(key, sizeof key, "tools[%zu].name", k);
            if (!name || !tool_name_ok(name))
                return ofail(err, i, key,
                             "is required: 1 to 64 letters, digits, '_' or '-'");
            json_t *p = json_object_get(t, "parameters");
            snprintf(key, sizeof key, "tools[%zu].parameters", k);
            if (p && !json_is_object(p))
                return ofail(err, i, key, "must be a JSON schema object");
            json_t *d = json_object_get(t, "description");
            snprintf(key, sizeof key, "tools[%zu].description", k);
            if (d && !json_is_string(d))
                return ofail(err, i, key, "must be a string");
            json_t *ex = json_object_get(t, "exec"), *h = json_object_get(t, "handler");
            snprintf(key, sizeof key, "tools[%zu].exec", k);
            if (ex && h)
                return ofail(err, i, key, "give either exec or handler, not both");
            if (ex) {
                if (!json_is_array(ex) || json_array_size(ex) == 0 ||
                    json_array_size(ex) > 256)
                    return ofail(err, i, key, "must be an array of 1 to 256 strings");
                size_t a;
                json_t *av;
                json_array_foreach(ex, a, av) {
                    if (!json_is_string(av) ||
                        strlen(json_string_value(av)) != json_string_length(av))
                        return ofail(err, i, key, "must be an array of 1 to 256 strings");
                }
            }
            snprintf(key, sizeof key, "tools[%zu].handler", k);
            if (h && (!json_is_string(h) || json_string_length(h) == 0))
                return ofail(err, i, key, "must name a registered tool handler");
        }
    }
    return 0;
}

/* ----------------------------------------------------------------- prompt */

static int add_str(llm_buf *b, const char *s)
{
    return llm_buf_add(b, s, strlen(s));
}

static int add_json_text(llm_buf *b, json_t *v)
{
    return json_is_string(v) ? llm_buf_add(b, json_string_value(v), json_string_length(v))
                             : 0;
}

static int add_items(llm_buf *b, const char *title, json_t *items)
{
    if (json_array_size(items) == 0)
        return 0;
    int rc = add_str(b, "\n\n") || add_str(b, title) || add_str(b, ":");
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        const char *who = llm_json_str(it, "label");
        if (!who)
            who = llm_json_str(it, "member_id");
        rc = rc || add_str(b, "\n\n[") || add_str(b, who ? who : "?") || add_str(b, "]\n") ||
             add_json_text(b, json_object_get(it, "text"));
    }
    return rc;
}

char *llm_prompt(council_call *call)
{
    json_t *req = council_call_request_json(call);
    if (!req)
        return NULL;
    /* the material first, the task last */
    llm_buf b = {0};
    int rc = 0;
    json_t *in = json_object_get(req, "input");
    if (json_is_string(in))
        rc = add_str(&b, "Input:\n") || add_json_text(&b, in);
    json_t *prev = json_object_get(req, "previous_answer");
    if (json_is_string(prev))
        rc = rc || add_str(&b, "\n\nYour previous answer:\n") || add_json_text(&b, prev);
    rc = rc || add_items(&b, "Answers", json_object_get(req, "answers"));
    rc = rc || add_items(&b, "Critiques", json_object_get(req, "critiques"));
    json_t *ins = json_object_get(req, "instructions");
    if (json_string_length(ins))
        rc = rc || add_str(&b, b.len ? "\n\n" : "") || add_json_text(&b, ins);
    if (rc || llm_buf_add(&b, "", 0)) {
        llm_buf_free(&b);
        return NULL;
    }
    return b.p;
}

/* -------------------------------------------------------------- the call */

static void send_request(llm_call *lc);
static void report(llm_call *lc);

static void tools_clear(llm_call *lc)
{
    for (size_t i = 0; i < lc->n_tools; i++) {
        llm_tool *t = &lc->tools[i];
        tools_abandon(t->tc);
        free(t->id);
        free(t->name);
        llm_buf_free(&t->args);
        free(t->result);
    }
    lc->n_tools = lc->tools_running = lc->tools_done = 0;
}

static void lc_destroy(llm_call *lc)
{
    cx_http_cancel(lc->http);
    tools_clear(lc);
    free(lc->tools);
    sse_free(&lc->sse);
    if (lc->key) {
        sodium_memzero(lc->key, strlen(lc->key));
        free(lc->key);
    }
    json_decref(lc->conv);
    llm_buf_free(&lc->body);
    llm_buf_free(&lc->text);
    free(lc->err);
    free(lc->prompt);
    if (lc->call) {
        lc->call->prov_state = NULL;
        council_call_unref(lc->call);
    }
    free(lc);
}

/* Callbacks that may lead the core to abandon the call (a token over the
 * output cap) hold the call busy: released then, it is freed on the way
 * out, and the callback stops as soon as it sees lc->dead. */
static void lc_enter(llm_call *lc)
{
    lc->busy++;
}

static void lc_leave(llm_call *lc)
{
    if (--lc->busy == 0 && lc->dead)
        lc_destroy(lc);
}

static void lc_free(llm_call *lc)
{
    if (lc->busy == 0) {
        lc_destroy(lc);
        return;
    }
    lc->dead = true;
    lc->failed = true; /* nothing more is read */
    cx_http_cancel(lc->http);
    lc->http = NULL;
    tools_clear(lc);
}

int llm_fail(llm_call *lc, council_fail_kind kind, const char *fmt, ...)
{
    if (lc->failed)
        return -1;
    lc->failed = true;
    lc->fail_kind = kind;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* never a key in a message, whatever a server echoed */
    if (lc->key && lc->key[0]) {
        char *at;
        while ((at = strstr(msg, lc->key)))
            memset(at, '*', strlen(lc->key));
    }
    lc->err = cx_strdup(msg);
    return -1;
}

/* At most QUOTE_MAX bytes of data, printable, cut on a UTF-8 boundary. */
static void quote(char *out, size_t outsz, const char *data, size_t len)
{
    size_t n = len > QUOTE_MAX ? QUOTE_MAX : len;
    while (n > 0 && n < len && ((unsigned char)data[n] & 0xC0) == 0x80)
        n--;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 2 < outsz; i++) {
        unsigned char c = (unsigned char)data[i];
        out[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    out[o] = 0;
    if (n < len && o + 4 < outsz)
        strcpy(out + o, "...");
}

int llm_bad(llm_call *lc, const char *what, const char *data, size_t len)
{
    char q[QUOTE_MAX + 8];
    quote(q, sizeof q, data, len);
    return llm_fail(lc, COUNCIL_FAIL_VALIDATION, "%s API: %s: \"%s\"", lc->api->name, what, q);
}

int llm_bad_json(llm_call *lc, const char *what, const json_t *body)
{
    char *t = json_dumps(body, JSON_COMPACT);
    int rc = llm_bad(lc, what, t ? t : "", t ? strlen(t) : 0);
    free(t);
    return rc;
}

json_t *llm_event_json(llm_call *lc, const char *data, size_t len)
{
    json_t *j = json_loadb(data, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        llm_bad(lc, "a stream event that is not a JSON object", data, len);
        return NULL;
    }
    return j;
}

int llm_text_scanned(llm_call *lc, const jscan_want *w)
{
    char stack[512];
    char *text = w->len <= sizeof stack ? stack : malloc(w->len);
    if (!text)
        return llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
    llm_text(lc, text, jscan_string(w, text));
    if (text != stack)
        free(text);
    return 0;
}

char *llm_url(const llm_call *lc, const char *path_fmt, ...)
{
    const char *base = lc->o.base_url;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    va_list ap;
    va_start(ap, path_fmt);
    int plen = vsnprintf(NULL, 0, path_fmt, ap);
    va_end(ap);
    char *url = plen < 0 ? NULL : malloc(n + (size_t)plen + 1);
    if (!url)
        return NULL;
    memcpy(url, base, n);
    va_start(ap, path_fmt);
    vsnprintf(url + n, (size_t)plen + 1, path_fmt, ap);
    va_end(ap);
    return url;
}

void llm_text(llm_call *lc, const char *s, size_t n)
{
    if (lc->failed || n == 0)
        return;
    if (llm_buf_add(&lc->text, s, n)) {
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
        return;
    }
    if (council_call_token(lc->call, s, n) == COUNCIL_ETOOBIG)
        lc->failed = true; /* the core failed the call (output cap) */
}

int llm_tool_begin(llm_call *lc, const char *id, const char *name)
{
    if (lc->failed)
        return -1;
    if (lc->n_tools >= 128)
        return llm_fail(lc, COUNCIL_FAIL_PERMANENT, "%s API: over 128 tool calls in one turn",
                        lc->api->name);
    size_t index = lc->n_tools;
    if (lc->n_tools == lc->cap_tools) {
        size_t nc = lc->cap_tools ? lc->cap_tools * 2 : 4;
        llm_tool *n = realloc(lc->tools, nc * sizeof *n);
        if (!n)
            return llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
        lc->tools = n;
        lc->cap_tools = nc;
    }
    llm_tool *t = &lc->tools[lc->n_tools];
    memset(t, 0, sizeof *t);
    char made[32];
    if (!id || !*id) {
        snprintf(made, sizeof made, "call_%u_%zu", lc->turn, index + 1);
        id = made;
    }
    t->id = cx_strdup(id);
    t->name = cx_strdup(name ? name : "");
    t->started = true;
    lc->n_tools++;
    t->lc = lc;
    if (!t->id || !t->name)
        return llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
    return (int)index;
}

int llm_tool_args(llm_call *lc, size_t index, const char *s, size_t n)
{
    if (lc->failed)
        return -1;
    llm_tool *t = index < lc->n_tools ? &lc->tools[index] : NULL;
    if (!t)
        return llm_fail(lc, COUNCIL_FAIL_VALIDATION,
                        "%s API: arguments for tool call %zu that never began",
                        lc->api->name, index);
    if (t->args.len + n > (1u << 20))
        return llm_fail(lc, COUNCIL_FAIL_PERMANENT, "tool call arguments over 1 MiB");
    if (llm_buf_add(&t->args, s, n))
        return llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
    return 0;
}

void llm_usage(llm_call *lc, uint64_t in, uint64_t out, double cost, bool has_cost)
{
    /* APIs report a response's running totals: keep the latest */
    if (in)
        lc->usage.input_tokens = in;
    if (out)
        lc->usage.output_tokens = out;
    if (has_cost) {
        lc->usage.cost = cost;
        lc->usage.has_cost = 1;
    }
    lc->usage.reports = 1;
}

static void flush_usage(llm_call *lc)
{
    if (lc->usage.reports && council_call_active(lc->call))
        council_call_add_usage(lc->call, &lc->usage);
    memset(&lc->usage, 0, sizeof lc->usage);
}

/* Report the outcome to the core and free the call. */
static void report(llm_call *lc)
{
    council_call *call = council_call_ref(lc->call);
    flush_usage(lc);
    if (council_call_active(call)) {
        if (lc->failed)
            council_call_fail_kind(call, lc->fail_kind, lc->retry_after_ms,
                                   lc->err ? lc->err : "failed");
        else
            council_call_complete(call, lc->text.p ? lc->text.p : "", lc->text.len);
    }
    lc_free(lc);
    council_call_unref(call);
}

/* ------------------------------------------------------------- tool turn */

static json_t *tool_spec(llm_call *lc, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(lc->o.tools, i, t) {
        const char *n = llm_json_str(t, "name");
        if (n && strcmp(n, name) == 0)
            return t;
    }
    return NULL;
}

static void start_tools(llm_call *lc);

static void tool_done_in(llm_tool *t, int ok, const char *result, size_t len);

/* A tool answered. Held busy: a handler started next may cancel the run. */
static void tool_done(void *arg, int ok, const char *result, size_t len)
{
    llm_tool *t = arg;
    llm_call *lc = t->lc;
    lc_enter(lc);
    tool_done_in(t, ok, result, len);
    lc_leave(lc);
}

static void tool_done_in(llm_tool *t, int ok, const char *result, size_t len)
{
    llm_call *lc = t->lc;
    t->tc = NULL; /* tools.c is done with it */
    t->done = true;
    t->ok = ok != 0;
    t->result = cx_memdup(result ? result : "", result ? len : 0);
    t->result_len = t->result ? len : 0;
    lc->tools_running--;
    lc->tools_done++;
    if (!t->result) {
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
    } else {
        council_tool_event te = {.id = t->id, .name = t->name, .arguments = t->args.p,
                                 .arguments_len = t->args.len, .result = t->result,
                                 .result_len = t->result_len, .ok = t->ok};
        council_call_publish_tool(lc->call, COUNCIL_EV_TOOL_CALL_RESULT, &te);
    }
    if (lc->failed) {
        report(lc);
        return;
    }
    if (!council_call_active(lc->call))
        return; /* abandoned from inside a callback: cancel frees lc */
    start_tools(lc);
}

/* Start the tools not started yet, up to max_parallel_tools at once; when
 * every one has answered, send the next request. */
static void start_tools(llm_call *lc)
{
    for (size_t i = 0; i < lc->n_tools && lc->tools_running < lc->o.max_parallel_tools;
         i++) {
        llm_tool *t = &lc->tools[i];
        if (t->tc || t->done)
            continue;
        if (t->args.len == 0 && llm_buf_add(&t->args, "{}", 2)) {
            llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
            report(lc);
            return;
        }
        council_tool_event te = {.id = t->id, .name = t->name, .arguments = t->args.p,
                                 .arguments_len = t->args.len};
        council_call_publish_tool(lc->call, COUNCIL_EV_TOOL_CALL_REQUEST, &te);
        lc->tools_running++;
        /* t->tc is set before the handler starts, so that a release of lc
         * from inside it abandons this call too */
        int rc = tools_start(council_run_ctx(council_call_run(lc->call)), lc->call,
                             tool_spec(lc, t->name), t->name, t->args.p, t->args.len,
                             lc->o.tool_timeout_ms, tool_done, t, &t->tc);
        if (rc) {
            lc->tools_running--;
            llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
            report(lc);
            return;
        }
        if (lc->dead)
            return; /* the handler's start cancelled the run */
    }
    if (lc->tools_done < lc->n_tools)
        return;
    /* every tool answered: the turn and its results join the conversation */
    if (lc->api->add_tool_turn(lc)) {
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
        report(lc);
        return;
    }
    tools_clear(lc);
    send_request(lc);
}

/* The model's response is complete. */
static void turn_end(llm_call *lc)
{
    flush_usage(lc);
    if (lc->n_tools == 0) {
        report(lc);
        return;
    }
    if (!lc->o.tools) {
        llm_fail(lc, COUNCIL_FAIL_VALIDATION,
                 "%s API: the model asked for a tool, but the member has none",
                 lc->api->name);
        report(lc);
        return;
    }
    if (lc->turn >= lc->o.max_tool_turns) {
        llm_fail(lc, COUNCIL_FAIL_PERMANENT,
                 "the model still asked for tools after %u turns (max_tool_turns)",
                 lc->turn);
        report(lc);
        return;
    }
    start_tools(lc);
}

/* ------------------------------------------------------------------ HTTP */

static int on_sse(const char *type, const char *data, size_t len, void *arg)
{
    llm_call *lc = arg;
    if (lc->ended)
        return 0; /* after the end: nothing more counts */
    return lc->api->on_event(lc, type, data, len) ? -1 : (lc->failed ? -1 : 0);
}

static void on_headers(cx_http_req *r, long status, uint64_t retry_after_ms, void *arg)
{
    llm_call *lc = arg;
    (void)r;
    lc->status = status;
    lc->retry_after_ms = retry_after_ms;
}

static int feed(llm_call *lc, const char *buf, size_t len);

static int on_body(cx_http_req *r, const char *buf, size_t len, void *arg)
{
    llm_call *lc = arg;
    (void)r;
    lc_enter(lc);
    int stop = feed(lc, buf, len) != 0 || lc->failed || lc->dead;
    lc_leave(lc);
    return stop;
}

static int feed(llm_call *lc, const char *buf, size_t len)
{
    lc->received += len;
    if (lc->received > lc->o.max_body) {
        llm_fail(lc, COUNCIL_FAIL_PERMANENT, "%s API: response over %zu bytes (max_body_bytes)",
                 lc->api->name, lc->o.max_body);
        return 1;
    }
    if (lc->failed)
        return 1;
    bool ok_status = lc->status >= 200 && lc->status < 300;
    if (ok_status && lc->o.stream) {
        int rc = sse_feed(&lc->sse, buf, len);
        if (rc == COUNCIL_ETOOBIG)
            llm_fail(lc, COUNCIL_FAIL_PERMANENT, "%s API: a stream event over %zu bytes",
                     lc->api->name, lc->o.max_body);
        else if (rc == COUNCIL_ENOMEM)
            llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
        return lc->failed ? 1 : 0;
    }
    if (!ok_status && lc->body.len >= ERROR_BODY_CAP)
        return 0; /* enough of an error body to say what it is */
    if (llm_buf_add(&lc->body, buf, len)) {
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
        return 1;
    }
    return 0;
}

/* An HTTP error status: its kind, and what to tell the user. */
static void status_fail(llm_call *lc)
{
    long st = lc->status;
    const char *member = council_call_member_id(lc->call);
    json_t *j = json_loadb(lc->body.p ? lc->body.p : "", lc->body.len, 0, NULL);
    const char *api_msg = j ? lc->api->error_message(j) : NULL;
    char q[QUOTE_MAX + 8];
    if (api_msg)
        quote(q, sizeof q, api_msg, strlen(api_msg));
    else
        quote(q, sizeof q, lc->body.p ? lc->body.p : "", lc->body.len);
    if (st == 401 || st == 403) {
        /* the server's words are left out: some echo part of the key */
        if (lc->key)
            llm_fail(lc, COUNCIL_FAIL_PERMANENT,
                     "member %s: %s API refused the key (HTTP %ld): check the "
                     "environment variable %s",
                     member, lc->api->name, st, lc->o.key_env ? lc->o.key_env : "?");
        else
            llm_fail(lc, COUNCIL_FAIL_PERMANENT,
                     "member %s: %s API wants a key (HTTP %ld): set api_key_env and that "
                     "variable",
                     member, lc->api->name, st);
    } else if (st == 404) {
        llm_fail(lc, COUNCIL_FAIL_PERMANENT,
                 "member %s: unknown model \"%s\" or wrong base_url (HTTP 404): %s", member,
                 lc->o.model, q);
    } else if (st == 408 || st == 409 || st == 425 || st == 429 || st >= 500) {
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "member %s: %s API: HTTP %ld%s: %s", member,
                 lc->api->name, st, st == 429 ? " (rate limited)" : "", q);
    } else {
        llm_fail(lc, COUNCIL_FAIL_PERMANENT, "member %s: %s API: HTTP %ld: %s", member,
                 lc->api->name, st, q);
    }
    json_decref(j);
}

static void on_done_in(llm_call *lc, cx_http_fail fail, long status, const char *message);

/* Held busy: a token over the output cap, or a tool handler, may make the
 * core abandon the call on the way. */
static void on_done(cx_http_req *r, cx_http_fail fail, long status, const char *message,
                    void *arg)
{
    llm_call *lc = arg;
    (void)r;
    lc->http = NULL;
    lc_enter(lc);
    on_done_in(lc, fail, status, message);
    lc_leave(lc);
}

static void on_done_in(llm_call *lc, cx_http_fail fail, long status, const char *message)
{
    if (status)
        lc->status = status;
    if (lc->failed) {
        report(lc);
        return;
    }
    if (!council_call_active(lc->call))
        return; /* abandoned meanwhile: its cancel frees lc */
    switch (fail) {
    case CX_HTTP_OK:
        break;
    case CX_HTTP_TLS:
        llm_fail(lc, COUNCIL_FAIL_PERMANENT, "%s API: TLS verification failed (ca_file?): %s",
                 lc->api->name, message);
        report(lc);
        return;
    case CX_HTTP_CONNECT:
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "%s API: cannot connect: %s", lc->api->name,
                 message);
        report(lc);
        return;
    case CX_HTTP_TIMEOUT:
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "%s API: timeout: %s", lc->api->name, message);
        report(lc);
        return;
    default:
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "%s API: the response was cut: %s",
                 lc->api->name, message);
        report(lc);
        return;
    }
    if (lc->status < 200 || lc->status >= 300) {
        status_fail(lc);
        report(lc);
        return;
    }
    if (lc->o.stream) {
        sse_finish(&lc->sse);
        if (!lc->ended)
            llm_fail(lc, COUNCIL_FAIL_TRANSIENT,
                     "%s API: the stream ended before its last event", lc->api->name);
    } else {
        json_error_t je;
        json_t *j = json_loadb(lc->body.p ? lc->body.p : "", lc->body.len, 0, &je);
        if (!j)
            llm_bad(lc, "a response that is not JSON", lc->body.p ? lc->body.p : "",
                    lc->body.len);
        else
            lc->api->on_response(lc, j);
        json_decref(j);
    }
    if (lc->failed) {
        report(lc);
        return;
    }
    turn_end(lc);
}

static const cx_http_cbs http_cbs = {on_headers, on_body, on_done};

/* "Name: value" into list (a malloc'ed string). */
static int header_add(char ***list, size_t *n, const char *name, const char *value)
{
    size_t len = strlen(name) + strlen(value) + 3;
    char *h = malloc(len);
    char **nl = realloc(*list, (*n + 2) * sizeof *nl);
    if (!h || !nl) {
        free(h);
        if (nl)
            *list = nl;
        return COUNCIL_ENOMEM;
    }
    snprintf(h, len, "%s: %s", name, value);
    nl[(*n)++] = h;
    nl[*n] = NULL;
    *list = nl;
    return 0;
}

static void headers_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sodium_memzero(list[i], strlen(list[i]));
        free(list[i]);
    }
    free(list);
}

static void send_request(llm_call *lc)
{
    lc->turn++;
    lc->status = 0;
    lc->retry_after_ms = 0;
    lc->received = 0;
    lc->ended = false;
    lc->body.len = 0;
    lc->turn_text_from = lc->text.len;
    sse_free(&lc->sse);
    sse_init(&lc->sse, lc->o.max_body, on_sse, lc);
    char *url = NULL;
    json_t *body = NULL;
    char **hs = NULL;
    size_t nh = 0;
    char *text = NULL;
    int rc = lc->api->build(lc, &url, &body);
    if (!rc)
        rc = llm_json_merge(body, lc->o.extra);
    if (!rc && !(text = json_dumps(body, JSON_COMPACT)))
        rc = COUNCIL_ENOMEM;
    if (!rc)
        rc = header_add(&hs, &nh, "Content-Type", "application/json");
    if (!rc && lc->o.stream)
        rc = header_add(&hs, &nh, "Accept", "text/event-stream");
    for (const char *const *f = lc->api->fixed_headers; !rc && f && *f; f += 2)
        rc = header_add(&hs, &nh, f[0], f[1]);
    if (!rc && lc->key) {
        char *v = malloc(strlen(lc->api->key_header) + strlen(lc->key) + 1);
        if (!v) {
            rc = COUNCIL_ENOMEM;
        } else {
            const char *pfx = strchr(lc->api->key_header, ':');
            /* key_header is "Name:prefix" (prefix may be empty) */
            size_t nlen = (size_t)(pfx - lc->api->key_header);
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)nlen, lc->api->key_header);
            sprintf(v, "%s%s", pfx + 1, lc->key);
            rc = header_add(&hs, &nh, name, v);
            sodium_memzero(v, strlen(v));
            free(v);
        }
    }
    if (lc->o.headers) {
        const char *k;
        json_t *v;
        json_object_foreach(lc->o.headers, k, v) {
            if (!rc)
                rc = header_add(&hs, &nh, k, json_string_value(v));
        }
    }
    if (!rc) {
        cx_http_opts ho = {.url = url,
                           .headers = (const char *const *)hs,
                           .body = text,
                           .body_len = text ? strlen(text) : 0,
                           .connect_timeout_ms = lc->o.connect_timeout_ms,
                           .idle_timeout_ms = lc->o.idle_timeout_ms,
                           .ca_file = lc->o.ca_file};
        rc = cx_http_start(council_run_ctx(council_call_run(lc->call)), &ho, &http_cbs, lc,
                           &lc->http);
    }
    free(url);
    json_decref(body);
    free(text);
    headers_free(hs, nh);
    if (rc) {
        llm_fail(lc, rc == COUNCIL_ENOMEM ? COUNCIL_FAIL_TRANSIENT : COUNCIL_FAIL_PERMANENT,
                 "%s API: cannot make the request: %s", lc->api->name, council_strerror(rc));
        report(lc);
    }
}

/* ------------------------------------------------------------ provider */

static int llm_start(council_call *call, void *arg)
{
    const llm_provider_def *d = arg;
    llm_call *lc = calloc(1, sizeof *lc);
    if (!lc)
        return COUNCIL_ENOMEM;
    lc->call = council_call_ref(call);
    lc->api = d->api;
    lc->provider = d->name;
    call->prov_state = lc;
    opts_read(&lc->o, d, call->member->options);
    if (lc->o.key_env) {
        const char *k = cx_env_get(council_run_ctx(call->run), lc->o.key_env);
        if (k && *k) {
            lc->key = cx_strdup(k);
            if (!lc->key)
                llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
        } else if (lc->o.key_env_explicit ||
                   lc->o.base_url == d->base_url /* the vendor's own API */) {
            llm_fail(lc, COUNCIL_FAIL_PERMANENT,
                     "member %s: no API key: the environment variable %s is not set",
                     council_call_member_id(call), lc->o.key_env);
        }
    }
    if (!lc->failed && !(lc->prompt = llm_prompt(call)))
        llm_fail(lc, COUNCIL_FAIL_TRANSIENT, "out of memory");
    if (lc->failed) {
        report(lc);
        return 0;
    }
    send_request(lc);
    return 0;
}

static void llm_cancel(council_call *call, void *arg)
{
    (void)arg;
    llm_call *lc = call->prov_state;
    if (lc)
        lc_free(lc);
}

int provider_llm_register_all(council_ctx *ctx)
{
    council_provider_ops ops = {.start = llm_start, .cancel = llm_cancel};
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        int rc = council_provider_register(ctx, defs[i].name, &ops, (void *)&defs[i]);
        if (rc)
            return rc;
    }
    return COUNCIL_OK;
}
