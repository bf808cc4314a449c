/* llm.h - what the model providers share: one member call to a model API
 * (provider_llm.c) and the three wire formats it speaks (llm_openai.c,
 * llm_anthropic.c, llm_gemini.c).
 *
 * provider_llm.c owns everything that is the same for every API: the
 * member's options, the API key, the prompt made from the core's request,
 * the HTTP transfer and its SSE stream, the body cap, what a failure is
 * (transient, permanent, validation), usage, and the tool-call loop. An API
 * file only knows its own JSON: how to write a request (and a tool turn)
 * and how to read a stream event or a whole response, reporting what it
 * reads through the llm_* functions below.
 * Not for: retries (engine.c) or running tools (tools.c).
 */
#ifndef COUNCIL_LLM_H
#define COUNCIL_LLM_H

#include "council_internal.h"
#include "http.h"
#include "json_scan.h"
#include "sse.h"

#include <jansson.h>
#include <stdbool.h>

/* A growable byte buffer. */
typedef struct llm_buf {
    char *p;
    size_t len, cap;
} llm_buf;
int llm_buf_add(llm_buf *b, const char *s, size_t n); /* 0 or COUNCIL_ENOMEM */
void llm_buf_free(llm_buf *b);

/* A member's options, read from its spec (see docs/spec-format.md). */
typedef struct llm_opts {
    const char *model;           /* borrowed from the spec's options */
    const char *base_url;        /* the option, or the API's default */
    const char *key_env;         /* variable to read the key from; NULL = none */
    bool key_env_explicit;       /* named in the options (unset is an error) */
    const char *system;
    json_t *headers;             /* object of strings, or NULL */
    json_t *extra;               /* object merged into the body, or NULL */
    json_t *tools;               /* array, or NULL */
    const char *ca_file;
    json_int_t max_tokens;       /* -1: not given */
    double temperature;
    bool has_temperature;
    bool stream;
    uint64_t connect_timeout_ms;
    uint64_t idle_timeout_ms;
    unsigned max_tool_turns;
    unsigned max_parallel_tools;
    uint64_t tool_timeout_ms;
    size_t max_body;
} llm_opts;

/* One tool call the model asked for in the current turn. */
typedef struct llm_tool {
    struct llm_call *lc;
    char *id;                    /* the model's id (Gemini has none: made up) */
    char *name;
    llm_buf args;                /* JSON text, as streamed */
    char *result;                /* what goes back to the model */
    size_t result_len;
    bool ok, started, done;
    struct council_tool_call *tc; /* tools.c's, while running */
} llm_tool;

struct llm_api;

typedef struct llm_call {
    council_call *call;          /* ref held while the call is ours */
    const struct llm_api *api;
    const char *provider;        /* "openai", "openrouter", ... (static) */
    llm_opts o;
    char *key;                   /* wiped and freed with the call */
    json_t *conv;                /* the conversation so far, API-shaped */
    cx_http_req *http;
    sse_parser sse;
    long status;
    uint64_t retry_after_ms;
    llm_buf body;                /* a non-stream or error body */
    size_t received;             /* body bytes of this response */
    llm_buf text;                /* every text delta of every turn */
    size_t turn_text_from;       /* where this turn's text begins in text */
    llm_tool *tools;             /* this turn's tool calls */
    size_t n_tools, cap_tools;
    size_t tools_running, tools_done;
    unsigned turn;               /* 1 for the first request */
    bool ended;                  /* the API said the response is complete */
    bool failed;                 /* a failure was reported: ignore the rest */
    council_fail_kind fail_kind; /* with err: the failure, once failed */
    char *err;
    char *prompt;                /* the first user message */
    council_usage usage;         /* this response's, reported at its end */
    int busy;                    /* inside a callback of ours */
    bool dead;                   /* released while busy: freed on the way out */
} llm_call;

typedef struct llm_api {
    const char *name;
    /* The URL (malloc'ed) and the body (json, new reference) of the next
     * request; headers other than the key's and content-type go through
     * llm_header. 0 or a council_err. */
    int (*build)(llm_call *lc, char **url, json_t **body);
    /* The header that carries the key, e.g. "Authorization: Bearer %s". */
    const char *key_header;
    /* Extra fixed headers (NULL-terminated), e.g. anthropic-version. */
    const char *const *fixed_headers;
    /* One SSE event of a streamed response; 0, or non-zero after llm_fail. */
    int (*on_event)(llm_call *lc, const char *type, const char *data, size_t len);
    /* A whole (non-streamed) response body, parsed; 0 or non-zero after
     * llm_fail. */
    int (*on_response)(llm_call *lc, json_t *body);
    /* The message of an API error body (borrowed from body), or NULL. */
    const char *(*error_message)(json_t *body);
    /* Append the turn the model just made (its text and tool calls) and the
     * tools' results to lc->conv. 0 or COUNCIL_ENOMEM. */
    int (*add_tool_turn)(llm_call *lc);
} llm_api;

extern const llm_api llm_openai_api;
extern const llm_api llm_anthropic_api;
extern const llm_api llm_gemini_api;

/* What an adapter reports while reading a response. */
void llm_text(llm_call *lc, const char *s, size_t n);          /* a text delta */
/* A tool call starts: returns its index in this turn (from 0), or -1
 * after llm_fail. id may be NULL (one is made up). */
int llm_tool_begin(llm_call *lc, const char *id, const char *name);
/* A piece of the arguments of tool call index; 0 or -1 after llm_fail. */
int llm_tool_args(llm_call *lc, size_t index, const char *s, size_t n);
void llm_usage(llm_call *lc, uint64_t in, uint64_t out, double cost, bool has_cost);
/* Fail the call (once; later reports are ignored). Returns -1. The message
 * is formatted; it must never contain the key. */
int llm_fail(llm_call *lc, council_fail_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A response that is not in the API's format: a validation failure quoting
 * at most 200 bytes of what came. Returns -1. */
int llm_bad(llm_call *lc, const char *what, const char *data, size_t len);
/* The same for a whole response, quoted as compact JSON. Returns -1. */
int llm_bad_json(llm_call *lc, const char *what, const json_t *body);
/* A stream event's data as a JSON object (new reference); NULL after
 * llm_bad when it is not one. */
json_t *llm_event_json(llm_call *lc, const char *data, size_t len);
/* A text delta that json_scan found as a string (w->type JSCAN_STRING),
 * unescaped into llm_text: 0, or -1 after llm_fail (out of memory). */
int llm_text_scanned(llm_call *lc, const jscan_want *w);
/* The URL of a request: lc's base_url without its trailing slashes, then
 * the formatted path; malloc'ed, NULL when out of memory. */
char *llm_url(const llm_call *lc, const char *path_fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The prompt made from the core's request (instructions, input, answers
 * shown to this member, critiques...), malloc'ed; NULL when out of memory. */
char *llm_prompt(council_call *call);

/* JSON helpers for the API files. */
const char *llm_json_str(json_t *o, const char *key);       /* NULL if not a string */
/* Merge src's keys into dst (src's win). 0 or COUNCIL_ENOMEM. */
int llm_json_merge(json_t *dst, json_t *src);

/* provider_llm.c: is name one of the model providers? Their option check
 * for spec validation (field path "members[i].options..."). */
bool llm_is_provider(const char *name);
int llm_check_options(const char *provider, json_t *options, size_t member_idx,
                      council_spec_error *err);
int provider_llm_register_all(council_ctx *ctx);

#endif
