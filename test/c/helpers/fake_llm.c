/* fake_llm.c - a local stand-in for the OpenAI, Anthropic and Gemini model
 * APIs, speaking their wire formats, for the provider tests (the test
 * machines have no network).
 *
 *   fake_llm [--host 127.0.0.1] [--port N] [--tls-cert C --tls-key K]
 *            [--require-key KEY]
 *
 * Prints "fake_llm ready port=<N>" once listening (--port 0: any free port).
 * Exits 0 on SIGTERM or SIGINT, and when its stdin reaches EOF, so a test
 * that dies cannot leak it: give it a pipe as stdin. With --tls-cert and
 * --tls-key it speaks HTTPS only (TLS 1.2+, ALPN http/1.1).
 *
 * HTTP/1.1 with keep-alive, a thread per connection. Request bodies need a
 * Content-Length (chunked ones get 411); bodies over 16 MiB get 413.
 *
 * Routes (the path prefix is free: /v1, /api/v1, ...):
 *   POST .../chat/completions                  OpenAI; key "Authorization:
 *        Bearer K"; streams when "stream": true; a usage chunk when
 *        "stream_options": {"include_usage": true}
 *   POST .../v1/messages                       Anthropic; key "x-api-key";
 *        needs the anthropic-version header and max_tokens
 *   POST .../models/{model}:generateContent    Gemini; key "x-goog-api-key"
 *   POST .../models/{model}:streamGenerateContent?alt=sse
 *   GET  /_requests   every other request so far, as a JSON array of
 *        {"seq","method","path","query","headers","body","model","complete"}
 *        ("complete" is false while, or if, the response was not all sent)
 *   POST /_reset      empties that log and the per-model counters (204)
 *   anything else     404
 * With --require-key, a missing or wrong key gets the API's own answer:
 * 401 (OpenAI, Anthropic); for Gemini, like the real service, 400
 * INVALID_ARGUMENT API_KEY_INVALID for a wrong key and 403 PERMISSION_DENIED
 * for none. Keys are never echoed: the log shows them as "[redacted]".
 *
 * The model (body "model"; Gemini: the path) chooses the behaviour by
 * prefix. Whatever follows a '#' or '~' is a nonce, ignored for that, but
 * the per-model counters key on the whole string.
 *   status-429       the first request: 429, "Retry-After: 1"
 *   status-429-date  the same with an HTTP-date 2 s ahead
 *   status-500xN     the first N requests: 500
 *   status-400, status-401, status-403, unknown-model (404): always
 *   cut              stream: 3 deltas, then the connection closes
 *                    (no last chunk); else: Content-Length 1000, less sent
 *   malformed        stream: an event with truncated JSON after the first
 *                    delta, then the rest; else: 200 "<html>not json</html>"
 *   wrongshape       200 with {"hello":"world"} (stream: such events, then
 *                    the usual end, with no text)
 *   slow             the headers and one delta (or a few bytes of the
 *                    body), then silence until the client hangs up
 *   stall-headers    no answer at all until the client hangs up
 *   stream-error     stream: one delta, then the API's in-stream error
 *   huge             a 10 MiB answer of 'x' (stream: 16 KiB deltas)
 *   tokens-N         "tok " N times, as N deltas, with no pauses
 *   tools            one call per declared tool, {"query":"q<i>"}, ids
 *                    call_<i> / toolu_<i>; once the request holds tool
 *                    results: "Tool results: r1 | r2 ..."
 *   tools-loop       tool calls every time
 *   anything else    "Hello from <model>. You said: <the first 60 bytes of
 *                    the last user message>" + " [system: <first 30 bytes>]"
 *                    when there is a system prompt + " ✓ é 日本"; then
 *                    "\nVOTE: <L>" if the body holds "VOTE:" and
 *                    "\nRANKING: <L>" if it holds "RANKING:", L being the
 *                    first "[X]" label of the user message (default A), so
 *                    those lines come last and alone. <model> is without
 *                    its nonce; prefixes are cut back to whole UTF-8
 *                    characters. "Tool results: ..." answers get no tail.
 * Message text: a string, or the text blocks (OpenAI, Anthropic) or text
 * parts (Gemini) of a message, concatenated. The system prompt: OpenAI's
 * first "system" (or "developer") message, Anthropic's "system", Gemini's
 * "systemInstruction". Tool results: OpenAI "tool" messages, Anthropic
 * "tool_result" blocks (string or text blocks), Gemini "functionResponse"
 * parts (their "response" as compact JSON).
 * Usage: input tokens = body bytes / 4 (at least 1), output tokens = the
 * number of deltas (3 per tool call). A model starting with "or-" adds
 * "cost" to OpenAI usage, like OpenRouter.
 *
 * Streams are cut in awkward places on purpose: each SSE event of a normal
 * answer goes out in two or three writes, split mid-line and before its
 * last byte (between CR and LF where the API uses CRLF: Anthropic and
 * Gemini; OpenAI uses LF), with short pauses; one ": keep-alive" comment
 * per stream, and OpenAI's first chunk spans two "data:" lines.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_BODY      ((size_t)16 << 20)
#define MAX_HEAD      ((size_t)64 << 10)   /* request line and headers */
#define MAX_HEADERS   100
#define MAX_DEPTH     64                   /* JSON nesting */
#define THREAD_STACK  ((size_t)64 << 10)
#define HUGE_SIZE     ((size_t)10 << 20)
#define HUGE_PIECE    ((size_t)16 << 10)
#define MAX_TOKENS    10000000UL           /* tokens-N is capped there */
#define TEXT_PIECE    7                    /* bytes per delta of an answer */
#define PAUSE_US      200                  /* between pieces of one event */
#define MULTIBYTE     " \u2713 \u00e9 \u65e5\u672c"

/* ------------------------------------------------------------ utilities */

__attribute__((noreturn))
static void die(const char *what)
{
    fprintf(stderr, "fake_llm: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("fake_llm: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = xrealloc(NULL, n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

/* A growable byte string, always NUL-terminated once anything was added. */
struct buf {
    char *p;
    size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra < b->cap)
        return;
    size_t cap = b->cap ? b->cap : 128;
    while (cap <= b->len + extra)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_add(struct buf *b, const void *data, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void buf_addf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static const char *buf_str(const struct buf *b)
{
    return b->p ? b->p : "";
}

static void buf_clear(struct buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

static void buf_free(struct buf *b)
{
    free(b->p);
    *b = (struct buf){0};
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp, min;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1f, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, cp = s[0] & 0x0f, min = 0x800;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* The longest prefix of s, at most max bytes, that ends on a character. */
static size_t utf8_prefix(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

static void buf_add_utf8(struct buf *b, uint32_t cp)
{
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        out[0] = (char)(0xf0 | cp >> 18);
        out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_add(b, out, n);
}

/* Appends s as a JSON string; bytes that are not UTF-8 become U+FFFD. */
static void buf_add_json(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n + 2);
    buf_add(b, "\"", 1);
    size_t start = 0, i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = 1;
        const char *esc = NULL;
        char hex[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(hex, sizeof hex, "\\u%04x", c);
                esc = hex;
            } else if (c >= 0x80 && !(len = utf8_len((const unsigned char *)s + i, n - i))) {
                esc = "\\ufffd";
                len = 1;
            }
        }
        if (esc) {
            buf_add(b, s + start, i - start);
            buf_adds(b, esc);
            start = i + len;
        }
        i += len;
    }
    if (n)
        buf_add(b, s + start, n - start);
    buf_add(b, "\"", 1);
}

static void buf_add_jsons(struct buf *b, const char *s)
{
    buf_add_json(b, s, strlen(s));
}

/* ---------------------------------------------------------- JSON reading
 *
 * Request bodies are validated once, then read in place: a value is the
 * span of its text. Object keys are compared as written (no escapes).
 */

struct jval {
    const char *s, *e;   /* s == NULL: absent */
};

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *scan_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c != '\\')
            continue;
        if (++p >= end)
            return NULL;
        if (*p == 'u') {
            if (end - p < 5)
                return NULL;
            for (int i = 1; i <= 4; i++)
                if (!isxdigit((unsigned char)p[i]))
                    return NULL;
            p += 4;
        } else if (!memchr("\"\\/bfnrt", *p, 8)) {
            return NULL;
        }
    }
    return NULL;
}

static const char *scan_digits(const char *p, const char *end)
{
    const char *start = p;
    while (p < end && isdigit((unsigned char)*p))
        p++;
    return p > start ? p : NULL;
}

static const char *scan_number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (!(p = scan_digits(p, end)))
        return NULL;
    if (p < end && *p == '.' && !(p = scan_digits(p + 1, end)))
        return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        p = scan_digits(p, end);
    }
    return p;
}

static const char *scan_word(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* The end of the JSON value at p (after blanks), or NULL if malformed. */
static const char *scan_value(const char *p, const char *end, int depth)
{
    p = skip_ws(p, end);
    if (p >= end || depth > MAX_DEPTH)
        return NULL;
    switch (*p) {
    case '"':
        return scan_string(p, end);
    case 't':
        return scan_word(p, end, "true");
    case 'f':
        return scan_word(p, end, "false");
    case 'n':
        return scan_word(p, end, "null");
    case '{':
    case '[': {
        bool object = *p == '{';
        char close = object ? '}' : ']';
        p = skip_ws(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (object) {
                if (p >= end || *p != '"' || !(p = scan_string(p, end)))
                    return NULL;
                p = skip_ws(p, end);
                if (p >= end || *p != ':')
                    return NULL;
                p++;
            }
            if (!(p = scan_value(p, end, depth + 1)))
                return NULL;
            p = skip_ws(p, end);
            if (p >= end)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p != ',')
                return NULL;
            p = skip_ws(p + 1, end);
        }
    }
    default:
        return scan_number(p, end);
    }
}

struct jiter {
    const char *p, *end;
    char close;
};

static bool jiter_open(struct jiter *it, struct jval v, char open)
{
    if (!v.s || *v.s != open)
        return false;
    it->p = v.s + 1;
    it->end = v.e;
    it->close = open == '{' ? '}' : ']';
    return true;
}

/* The next element of an array, or member of an object (then key is set). */
static bool jiter_next(struct jiter *it, struct jval *key, struct jval *val)
{
    const char *p = skip_ws(it->p, it->end);
    if (p < it->end && *p == ',')
        p = skip_ws(p + 1, it->end);
    if (p >= it->end || *p == it->close)
        return false;
    if (key) {
        key->s = p;
        if (!(key->e = scan_string(p, it->end)))
            return false;
        p = skip_ws(key->e, it->end);
        if (p >= it->end || *p != ':')
            return false;
        p = skip_ws(p + 1, it->end);
    }
    val->s = p;
    if (!(val->e = scan_value(p, it->end, 0)))
        return false;
    it->p = val->e;
    return true;
}

static struct jval jget(struct jval obj, const char *name)
{
    struct jiter it;
    struct jval key, val;
    size_t n = strlen(name);
    if (jiter_open(&it, obj, '{'))
        while (jiter_next(&it, &key, &val))
            if ((size_t)(key.e - key.s) == n + 2 && memcmp(key.s + 1, name, n) == 0)
                return val;
    return (struct jval){NULL, NULL};
}

static bool jis_str(struct jval v, const char *lit)
{
    size_t n = strlen(lit);
    return v.s && *v.s == '"' && (size_t)(v.e - v.s) == n + 2 && memcmp(v.s + 1, lit, n) == 0;
}

static bool jis_array(struct jval v)
{
    return v.s && *v.s == '[';
}

static bool jis_true(struct jval v)
{
    return v.s && v.e - v.s == 4 && memcmp(v.s, "true", 4) == 0;
}

static uint32_t hex4(const char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int c = tolower((unsigned char)p[i]);
        v = v << 4 | (uint32_t)(isdigit(c) ? c - '0' : c - 'a' + 10);
    }
    return v;
}

/* Appends the text of a JSON string, unescaped; false if v is no string. */
static bool jstr(struct jval v, struct buf *out)
{
    if (!v.s || *v.s != '"')
        return false;
    const char *p = v.s + 1, *end = v.e - 1;
    while (p < end) {
        const char *q = memchr(p, '\\', (size_t)(end - p));
        if (!q)
            q = end;
        buf_add(out, p, (size_t)(q - p));
        if (q == end)
            break;
        p = q + 2;
        switch (q[1]) {
        case 'n': buf_add(out, "\n", 1); break;
        case 'r': buf_add(out, "\r", 1); break;
        case 't': buf_add(out, "\t", 1); break;
        case 'b': buf_add(out, "\b", 1); break;
        case 'f': buf_add(out, "\f", 1); break;
        case 'u': {
            uint32_t cp = hex4(p);
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t low = hex4(p + 2);
                if (low >= 0xdc00 && low <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                    p += 6;
                }
            }
            buf_add_utf8(out, cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp);
            break;
        }
        default: /* \" \\ \/ */
            buf_add(out, q + 1, 1);
        }
    }
    return true;
}

/* Appends the JSON text of v without the blanks between tokens. */
static void jcompact(struct jval v, struct buf *out)
{
    const char *p = v.s;
    while (p && p < v.e) {
        if (*p == '"') {
            const char *q = scan_string(p, v.e);
            buf_add(out, p, (size_t)(q - p));
            p = q;
        } else {
            if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
                buf_add(out, p, 1);
            p++;
        }
    }
}

/* ---------------------------------------------------- request log, state */

struct log_entry {
    char *method, *path, *query, *headers, *body, *model;
    size_t body_len;
    bool complete;
};

/* Where a request sits in the log; the generation changes on /_reset, so
 * a request older than that cannot touch a newer entry. */
struct ticket {
    unsigned gen;
    size_t index;
    bool valid;
};

struct model_count {
    char *model;
    unsigned long n;
};

static struct {
    pthread_mutex_t lock;
    struct log_entry *log;
    size_t nlog, caplog;
    unsigned gen;
    struct model_count *counts;
    size_t ncounts, capcounts;
} state = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct header {
    const char *name;    /* lower case */
    const char *value;
};

struct request {
    char *head;          /* request line and headers, split in place */
    const char *method, *path, *query;
    struct header hdr[MAX_HEADERS];
    size_t nhdr;
    size_t content_length;
    bool chunked, expect_continue, keep_alive;
    char *body;
    size_t body_len;
};

static const char *header(const struct request *req, const char *name)
{
    for (size_t i = 0; i < req->nhdr; i++)
        if (strcmp(req->hdr[i].name, name) == 0)
            return req->hdr[i].value;
    return NULL;
}

static bool is_secret_header(const char *name)
{
    return strcmp(name, "authorization") == 0 || strcmp(name, "x-api-key") == 0 ||
           strcmp(name, "x-goog-api-key") == 0 || strcmp(name, "api-key") == 0;
}

/* The headers as a JSON object; repeated ones joined by ", ". */
static char *headers_json(const struct request *req)
{
    struct buf b = {0};
    buf_adds(&b, "{");
    for (size_t i = 0; i < req->nhdr; i++) {
        const char *name = req->hdr[i].name;
        if (header(req, name) != req->hdr[i].value)
            continue;   /* joined to the first one */
        if (b.len > 1)
            buf_adds(&b, ",");
        buf_add_jsons(&b, name);
        buf_adds(&b, ":");
        if (is_secret_header(name)) {
            const char *v = req->hdr[i].value;
            bool bearer = strncasecmp(v, "Bearer ", 7) == 0;
            buf_add_jsons(&b, bearer ? "Bearer [redacted]" : "[redacted]");
            continue;
        }
        struct buf v = {0};
        for (size_t j = i; j < req->nhdr; j++) {
            if (strcmp(req->hdr[j].name, name) != 0)
                continue;
            if (v.len)
                buf_adds(&v, ", ");
            buf_adds(&v, req->hdr[j].value);
        }
        buf_add_json(&b, buf_str(&v), v.len);
        buf_free(&v);
    }
    buf_adds(&b, "}");
    return b.p;
}

/* The query string with the value of any key= parameter hidden. */
static char *redacted_query(const char *query)
{
    struct buf b = {0};
    buf_adds(&b, "");
    for (const char *p = query; *p;) {
        size_t n = strcspn(p, "&");
        if (n >= 4 && strncmp(p, "key=", 4) == 0)
            buf_adds(&b, "key=[redacted]");
        else
            buf_add(&b, p, n);
        p += n;
        if (*p == '&')
            buf_add(&b, p++, 1);
    }
    return b.p;
}

static struct ticket log_add(const struct request *req, const char *model)
{
    struct log_entry e = {
        .method = xstrdup(req->method),
        .path = xstrdup(req->path),
        .query = redacted_query(req->query),
        .headers = headers_json(req),
        .body = xstrndup(req->body ? req->body : "", req->body_len),
        .body_len = req->body_len,
        .model = xstrdup(model),
    };
    pthread_mutex_lock(&state.lock);
    if (state.nlog == state.caplog) {
        state.caplog = state.caplog ? state.caplog * 2 : 64;
        state.log = xrealloc(state.log, state.caplog * sizeof *state.log);
    }
    state.log[state.nlog] = e;
    struct ticket t = {state.gen, state.nlog++, true};
    pthread_mutex_unlock(&state.lock);
    return t;
}

static void log_complete(const struct ticket *t, bool complete)
{
    if (!t->valid)
        return;
    pthread_mutex_lock(&state.lock);
    if (t->gen == state.gen && t->index < state.nlog)
        state.log[t->index].complete = complete;
    pthread_mutex_unlock(&state.lock);
}

static void log_render(struct buf *b)
{
    pthread_mutex_lock(&state.lock);
    buf_adds(b, "[");
    for (size_t i = 0; i < state.nlog; i++) {
        const struct log_entry *e = &state.log[i];
        buf_addf(b, "%s{\"seq\":%zu,\"method\":", i ? "," : "", i + 1);
        buf_add_jsons(b, e->method);
        buf_adds(b, ",\"path\":");
        buf_add_jsons(b, e->path);
        buf_adds(b, ",\"query\":");
        buf_add_jsons(b, e->query);
        buf_addf(b, ",\"headers\":%s,\"body\":", e->headers);
        buf_add_json(b, e->body, e->body_len);
        buf_adds(b, ",\"model\":");
        buf_add_jsons(b, e->model);
        buf_addf(b, ",\"complete\":%s}", e->complete ? "true" : "false");
    }
    buf_adds(b, "]");
    pthread_mutex_unlock(&state.lock);
}

/* Counts one more request for this exact model string; returns the count. */
static unsigned long model_hit(const char *model)
{
    unsigned long n = 0;
    pthread_mutex_lock(&state.lock);
    for (size_t i = 0; i < state.ncounts && !n; i++)
        if (strcmp(state.counts[i].model, model) == 0)
            n = ++state.counts[i].n;
    if (!n) {
        if (state.ncounts == state.capcounts) {
            state.capcounts = state.capcounts ? state.capcounts * 2 : 32;
            state.counts = xrealloc(state.counts, state.capcounts * sizeof *state.counts);
        }
        state.counts[state.ncounts++] = (struct model_count){xstrdup(model), 1};
        n = 1;
    }
    pthread_mutex_unlock(&state.lock);
    return n;
}

/* Empties the log and the counters; with free_all, releases their arrays. */
static void state_reset(bool free_all)
{
    pthread_mutex_lock(&state.lock);
    for (size_t i = 0; i < state.nlog; i++) {
        struct log_entry *e = &state.log[i];
        free(e->method);
        free(e->path);
        free(e->query);
        free(e->headers);
        free(e->body);
        free(e->model);
    }
    for (size_t i = 0; i < state.ncounts; i++)
        free(state.counts[i].model);
    state.nlog = state.ncounts = 0;
    state.gen++;
    if (free_all) {
        free(state.log);
        free(state.counts);
        state.log = NULL;
        state.counts = NULL;
        state.caplog = state.capcounts = 0;
    }
    pthread_mutex_unlock(&state.lock);
}

/* ----------------------------------------------------------- connections */

struct conn {
    int fd;
    SSL *ssl;
    bool dead;               /* failed, or cut on purpose: no more I/O */
    char *in;                /* bytes read but not used yet */
    size_t in_len, in_cap;
    struct conn *prev, *next;
};

/* Open connections, so that shutdown can wake them, and the number of
 * connection threads still running, so that it can wait for them. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t idle;
    struct conn *head;
    size_t threads;
} conns = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0};

static atomic_bool stopping;
static atomic_ulong next_id;
static int wake_pipe[2] = {-1, -1};
static pthread_attr_t small_stack;
static SSL_CTX *tls_ctx;            /* NULL: plain HTTP */
static const char *required_key;

/* Registers a connection and the thread about to serve it. */
static void registry_add(struct conn *c)
{
    pthread_mutex_lock(&conns.lock);
    c->next = conns.head;
    if (conns.head)
        conns.head->prev = c;
    conns.head = c;
    conns.threads++;
    pthread_mutex_unlock(&conns.lock);
}

static void registry_remove(struct conn *c)
{
    pthread_mutex_lock(&conns.lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns.head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&conns.lock);
}

static void thread_finished(void)
{
    pthread_mutex_lock(&conns.lock);
    if (--conns.threads == 0)
        pthread_cond_broadcast(&conns.idle);
    pthread_mutex_unlock(&conns.lock);
}

static void conn_free(struct conn *c)
{
    if (c->ssl) {
        if (!c->dead) {
            ERR_clear_error();
            SSL_shutdown(c->ssl);
        }
        SSL_free(c->ssl);
    }
    close(c->fd);
    free(c->in);
    free(c);
}

/* Reads some bytes; <= 0 when the peer is gone. */
static ssize_t conn_read(struct conn *c, void *p, size_t n)
{
    ssize_t r;
    if (c->dead)
        return -1;
    if (c->ssl) {
        ERR_clear_error();
        int got = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
        r = got > 0 ? got : -1;
    } else {
        do
            r = recv(c->fd, p, n, 0);
        while (r < 0 && errno == EINTR);
    }
    if (r <= 0)
        c->dead = true;
    return r;
}

static bool conn_write(struct conn *c, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0 && !c->dead) {
        size_t chunk = n < (size_t)INT_MAX ? n : (size_t)INT_MAX;
        ssize_t r;
        if (c->ssl) {
            ERR_clear_error();
            int put = SSL_write(c->ssl, p, (int)chunk);
            r = put > 0 ? put : -1;
        } else {
            r = send(c->fd, p, chunk, MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR)
                continue;
        }
        if (r <= 0)
            c->dead = true;
        else
            p += r, n -= (size_t)r;
    }
    return !c->dead;
}

static bool conn_readable(struct conn *c, int timeout_ms)
{
    if (c->ssl && SSL_pending(c->ssl) > 0)
        return true;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) > 0;
}

/* Reads more into the input buffer; <= 0 when the peer is gone. */
static ssize_t conn_fill(struct conn *c)
{
    if (c->in_cap - c->in_len < 4096) {
        c->in_cap = c->in_cap ? c->in_cap * 2 : 16384;
        c->in = xrealloc(c->in, c->in_cap);
    }
    ssize_t n = conn_read(c, c->in + c->in_len, c->in_cap - c->in_len);
    if (n > 0)
        c->in_len += (size_t)n;
    return n;
}

static void conn_consume(struct conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* Drops up to limit bytes of a body we will not read, so that closing the
 * socket does not reset the connection before the client has our answer. */
static void drain(struct conn *c, size_t limit)
{
    size_t got = c->in_len;
    c->in_len = 0;
    while (got < limit && conn_readable(c, 1000)) {
        ssize_t n = conn_fill(c);
        if (n <= 0)
            break;
        got += (size_t)n;
        c->in_len = 0;
    }
}

/* Waits, reading and dropping anything sent, until the client hangs up. */
static void wait_for_hangup(struct conn *c)
{
    char scratch[256];
    while (!c->dead && !atomic_load(&stopping))
        if (conn_readable(c, 250) && conn_read(c, scratch, sizeof scratch) <= 0)
            break;
    c->dead = true;
}

/* ------------------------------------------------------------------ HTTP */

enum { READ_GONE = -1 };

/* Splits the request line and headers; 0, or the status to refuse with. */
static int parse_head(struct request *req)
{
    char *line = req->head;
    char *eol = strstr(line, "\r\n");
    if (!eol)
        return 400;
    *eol = '\0';
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' '))
        return 400;
    *sp1 = *sp2 = '\0';
    char *target = sp1 + 1, *version = sp2 + 1;
    /* origin form, or absolute form as a client sends it to a proxy (kept
     * whole in path, so that a test can see the request came that way) */
    if (strncmp(version, "HTTP/1.", 7) != 0 ||
        (target[0] != '/' && strncmp(target, "http://", 7) != 0))
        return 400;
    req->method = line;
    req->keep_alive = strcmp(version, "HTTP/1.1") == 0;
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    req->path = target;
    req->query = query ? query : "";

    for (line = eol + 2; *line; line = eol + 2) {
        if (!(eol = strstr(line, "\r\n")))
            return 400;
        *eol = '\0';
        char *colon = strchr(line, ':');
        char *blank = strpbrk(line, " \t");
        if (!colon || colon == line || (blank && blank < colon))
            return 400;   /* no name, or blanks in it (or obsolete folding) */
        if (req->nhdr == MAX_HEADERS)
            return 431;
        *colon = '\0';
        for (char *p = line; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        char *value = colon + 1, *end = eol;
        while (*value == ' ' || *value == '\t')
            value++;
        while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        req->hdr[req->nhdr++] = (struct header){line, value};
    }

    const char *v;
    req->chunked = header(req, "transfer-encoding") != NULL;
    if ((v = header(req, "content-length"))) {
        if (!*v)
            return 400;
        for (; *v; v++) {
            if (!isdigit((unsigned char)*v))
                return 400;
            size_t digit = (size_t)(*v - '0');
            req->content_length = req->content_length > (SIZE_MAX - digit) / 10
                                      ? SIZE_MAX
                                      : req->content_length * 10 + digit;
        }
    }
    if ((v = header(req, "connection"))) {
        if (strcasestr(v, "close"))
            req->keep_alive = false;
        else if (strcasestr(v, "keep-alive"))
            req->keep_alive = true;
    }
    v = header(req, "expect");
    req->expect_continue = v && strcasecmp(v, "100-continue") == 0;
    return 0;
}

/* Reads a request head; 0, READ_GONE, or the status to refuse with. */
static int read_head(struct conn *c, struct request *req)
{
    const char *eoh;
    for (;;) {
        while (c->in_len >= 2 && c->in[0] == '\r' && c->in[1] == '\n')
            conn_consume(c, 2);   /* blank lines before a request are allowed */
        eoh = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
        if (eoh)
            break;
        if (c->in_len > MAX_HEAD)
            return 431;
        if (conn_fill(c) <= 0)
            return READ_GONE;
    }
    size_t len = (size_t)(eoh - c->in) + 2;   /* through the last header's CRLF */
    if (len > MAX_HEAD)
        return 431;
    req->head = xstrndup(c->in, len);
    conn_consume(c, len + 2);
    return parse_head(req);
}

static bool read_body(struct conn *c, struct request *req)
{
    size_t want = req->content_length;
    req->body = xrealloc(NULL, want + 1);
    size_t have = c->in_len < want ? c->in_len : want;
    if (have)
        memcpy(req->body, c->in, have);
    conn_consume(c, have);
    while (have < want) {
        ssize_t n = conn_read(c, req->body + have, want - have);
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
    req->body[want] = '\0';
    req->body_len = want;
    return true;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Unknown";
    }
}

enum { NO_BODY = -2, CHUNKED = -1 };

/* Sends a status line and headers; length: bytes, CHUNKED or NO_BODY. */
static bool send_head(struct conn *c, int status, const char *type, long long length,
                      const char *extra, bool close)
{
    struct buf h = {0};
    buf_addf(&h, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (type)
        buf_addf(&h, "Content-Type: %s\r\n", type);
    if (length >= 0)
        buf_addf(&h, "Content-Length: %lld\r\n", length);
    else if (length == CHUNKED)
        buf_adds(&h, "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n");
    if (extra)
        buf_adds(&h, extra);
    if (close)
        buf_adds(&h, "Connection: close\r\n");
    buf_adds(&h, "\r\n");
    bool ok = conn_write(c, h.p, h.len);
    buf_free(&h);
    return ok;
}

/* ------------------------------------------------------------- exchanges */

enum api { API_NONE, API_OPENAI, API_ANTHROPIC, API_GEMINI };

/* One request and what is known of it. */
struct exchange {
    struct conn *c;
    const struct request *req;
    enum api api;
    char *model;          /* as sent (Gemini: from the path, decoded) */
    char *base;           /* the model up to its nonce: the behaviour */
    struct jval json;     /* the body */
    bool stream, include_usage;
    size_t in_tokens;
    unsigned long id;
    long long created;
    struct ticket ticket;
    bool keep_alive;      /* the connection may serve another request */
};

/* Sends a whole response; the log entry is complete unless that fails
 * (marked before the last write, so a client never sees it pending). */
static void respond(struct exchange *x, int status, const char *type, const char *extra,
                    const char *body, size_t len)
{
    log_complete(&x->ticket, true);
    if (!send_head(x->c, status, type, (long long)len, extra, !x->keep_alive) ||
        !conn_write(x->c, body, len))
        log_complete(&x->ticket, false);
}

enum err {
    E_BAD_REQUEST, E_NO_KEY, E_BAD_KEY, E_UNAUTHORIZED, E_FORBIDDEN, E_NOT_FOUND,
    E_LENGTH_REQUIRED, E_TOO_LARGE, E_RATE_LIMIT, E_SERVER,
};

/* How each API reports each error. NULL messages are given by the caller. */
static const struct {
    int status;
    const char *openai_type, *openai_code, *openai_msg;
    const char *anthropic_type, *anthropic_msg;
    int gemini_status;
    const char *gemini_code, *gemini_msg;
} errors[] = {
    [E_BAD_REQUEST] = {400, "invalid_request_error", NULL, NULL,
                       "invalid_request_error", NULL,
                       400, "INVALID_ARGUMENT", NULL},
    [E_NO_KEY] = {401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided",
                  "authentication_error", "x-api-key header is required",
                  403, "PERMISSION_DENIED",
                  "Method doesn't allow unregistered callers (callers without established "
                  "identity). Please use API Key or other form of API consumer identity to "
                  "call this API."},
    [E_BAD_KEY] = {401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided",
                   "authentication_error", "invalid x-api-key",
                   400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."},
    [E_UNAUTHORIZED] = {401, "invalid_request_error", "invalid_api_key",
                        "Incorrect API key provided",
                        "authentication_error", "invalid x-api-key",
                        401, "UNAUTHENTICATED",
                        "Request had invalid authentication credentials. Expected OAuth 2 "
                        "access token, login cookie or other valid authentication credential."},
    [E_FORBIDDEN] = {403, "invalid_request_error", NULL,
                     "You are not allowed to sample from this model",
                     "permission_error",
                     "Your API key does not have permission to use the specified resource.",
                     403, "PERMISSION_DENIED", "The caller does not have permission"},
    [E_NOT_FOUND] = {404, "invalid_request_error", "model_not_found", NULL,
                     "not_found_error", NULL,
                     404, "NOT_FOUND", NULL},
    [E_LENGTH_REQUIRED] = {411, "invalid_request_error", NULL,
                           "Chunked request bodies are not supported; send Content-Length.",
                           "invalid_request_error",
                           "Chunked request bodies are not supported; send Content-Length.",
                           411, "INVALID_ARGUMENT",
                           "Chunked request bodies are not supported; send Content-Length."},
    [E_TOO_LARGE] = {413, "invalid_request_error", NULL,
                     "Request body too large (limit 16 MiB).",
                     "request_too_large", "Request exceeds the maximum allowed number of bytes.",
                     413, "INVALID_ARGUMENT", "Request payload size exceeds the limit."},
    [E_RATE_LIMIT] = {429, "requests", "rate_limit_exceeded",
                      "Rate limit reached for requests. Please try again in 1s.",
                      "rate_limit_error", "Number of requests has exceeded your rate limit.",
                      429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."},
    [E_SERVER] = {500, "server_error", NULL,
                  "The server had an error while processing your request. Sorry about that!",
                  "api_error", "Internal server error",
                  500, "INTERNAL", "An internal error has occurred. Please retry."},
};

static void error_body(struct buf *b, enum api api, enum err e, const char *msg)
{
    switch (api) {
    case API_ANTHROPIC:
        buf_addf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":",
                 errors[e].anthropic_type);
        buf_add_jsons(b, msg ? msg : errors[e].anthropic_msg);
        buf_adds(b, "}}");
        break;
    case API_GEMINI:
        buf_addf(b, "{\"error\":{\"code\":%d,\"message\":", errors[e].gemini_status);
        buf_add_jsons(b, msg ? msg : errors[e].gemini_msg);
        buf_addf(b, ",\"status\":\"%s\"", errors[e].gemini_code);
        if (e == E_BAD_KEY)
            buf_adds(b, ",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\","
                        "\"reason\":\"API_KEY_INVALID\",\"domain\":\"googleapis.com\","
                        "\"metadata\":{\"service\":\"generativelanguage.googleapis.com\"}}]");
        buf_adds(b, "}}");
        break;
    case API_OPENAI:
    case API_NONE:
        buf_adds(b, "{\"error\":{\"message\":");
        buf_add_jsons(b, msg ? msg : errors[e].openai_msg);
        buf_addf(b, ",\"type\":\"%s\",\"param\":null,\"code\":", errors[e].openai_type);
        if (errors[e].openai_code)
            buf_addf(b, "\"%s\"}}", errors[e].openai_code);
        else
            buf_adds(b, "null}}");
        break;
    }
}

static void send_error(struct exchange *x, enum err e, const char *msg, const char *extra)
{
    struct buf body = {0};
    error_body(&body, x->api, e, msg);
    int status = x->api == API_GEMINI ? errors[e].gemini_status : errors[e].status;
    respond(x, status, "application/json", extra, body.p, body.len);
    buf_free(&body);
}

static void send_not_found(struct exchange *x)
{
    struct buf msg = {0};
    switch (x->api) {
    case API_OPENAI:
        buf_addf(&msg, "The model `%s` does not exist or you do not have access to it.", x->model);
        break;
    case API_ANTHROPIC:
        buf_addf(&msg, "model: %s", x->model);
        break;
    case API_GEMINI:
        buf_addf(&msg, "models/%s is not found for API version v1beta, or is not supported "
                       "for generateContent.", x->model);
        break;
    case API_NONE:
        buf_addf(&msg, "No route for %s %s", x->req->method, x->req->path);
        break;
    }
    send_error(x, E_NOT_FOUND, msg.p, NULL);
    buf_free(&msg);
}

/* ------------------------------------------------------------- scenarios */

enum scenario {
    SC_NORMAL, SC_429, SC_429_DATE, SC_500, SC_400, SC_401, SC_403, SC_404,
    SC_CUT, SC_MALFORMED, SC_WRONGSHAPE, SC_SLOW, SC_STALL, SC_STREAM_ERROR,
    SC_HUGE, SC_TOKENS, SC_TOOLS, SC_TOOLS_LOOP,
};

/* Longer prefixes before the ones they extend. */
static const struct {
    const char *prefix;
    enum scenario kind;
} scenarios[] = {
    {"status-429-date", SC_429_DATE}, {"status-429", SC_429}, {"status-500x", SC_500},
    {"status-400", SC_400}, {"status-401", SC_401}, {"status-403", SC_403},
    {"unknown-model", SC_404}, {"cut", SC_CUT}, {"malformed", SC_MALFORMED},
    {"wrongshape", SC_WRONGSHAPE}, {"slow", SC_SLOW}, {"stall-headers", SC_STALL},
    {"stream-error", SC_STREAM_ERROR}, {"huge", SC_HUGE}, {"tokens-", SC_TOKENS},
    {"tools-loop", SC_TOOLS_LOOP}, {"tools", SC_TOOLS},
};

/* The behaviour a model asks for, and its number (status-500xN, tokens-N). */
static enum scenario scenario_of(const char *base, unsigned long *n)
{
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        size_t len = strlen(scenarios[i].prefix);
        if (strncmp(base, scenarios[i].prefix, len) != 0)
            continue;
        *n = isdigit((unsigned char)base[len]) ? strtoul(base + len, NULL, 10) : 1;
        return scenarios[i].kind;
    }
    *n = 0;
    return SC_NORMAL;
}

/* ---------------------------------------------------------------- prompts */

/* What the answer depends on, taken from the request body. */
struct prompt {
    struct buf user;       /* text of the last user message */
    struct buf system;
    bool has_system;
    struct buf results;    /* tool results, joined by " | " */
    size_t nresults;
    char **tools;          /* names of the declared tools */
    size_t ntools;
};

static void add_result(struct prompt *p, const struct buf *text)
{
    if (p->nresults++)
        buf_adds(&p->results, " | ");
    buf_add(&p->results, buf_str(text), text->len);
}

static void add_tool(struct prompt *p, struct jval name)
{
    struct buf b = {0};
    if (!jstr(name, &b))
        return;
    p->tools = xrealloc(p->tools, (p->ntools + 1) * sizeof *p->tools);
    p->tools[p->ntools++] = xstrdup(buf_str(&b));
    buf_free(&b);
}

static void prompt_free(struct prompt *p)
{
    buf_free(&p->user);
    buf_free(&p->system);
    buf_free(&p->results);
    for (size_t i = 0; i < p->ntools; i++)
        free(p->tools[i]);
    free(p->tools);
}

/* Text of OpenAI or Anthropic content: a string, or the text blocks of an
 * array of blocks, concatenated. */
static void content_text(struct jval content, struct buf *out)
{
    struct jiter it;
    struct jval block;
    if (jstr(content, out) || !jiter_open(&it, content, '['))
        return;
    while (jiter_next(&it, NULL, &block))
        if (jis_str(jget(block, "type"), "text"))
            jstr(jget(block, "text"), out);
}

/* Text of Gemini parts, concatenated. */
static void parts_text(struct jval parts, struct buf *out)
{
    struct jiter it;
    struct jval part;
    if (jiter_open(&it, parts, '['))
        while (jiter_next(&it, NULL, &part))
            jstr(jget(part, "text"), out);
}

static void openai_prompt(struct jval body, struct prompt *p)
{
    struct jiter it;
    struct jval m;
    if (jiter_open(&it, jget(body, "messages"), '['))
        while (jiter_next(&it, NULL, &m)) {
            struct jval role = jget(m, "role"), content = jget(m, "content");
            if (jis_str(role, "user")) {
                buf_clear(&p->user);
                content_text(content, &p->user);
            } else if ((jis_str(role, "system") || jis_str(role, "developer")) &&
                       !p->has_system) {
                p->has_system = true;
                content_text(content, &p->system);
            } else if (jis_str(role, "tool")) {
                struct buf text = {0};
                content_text(content, &text);
                add_result(p, &text);
                buf_free(&text);
            }
        }
    if (jiter_open(&it, jget(body, "tools"), '['))
        while (jiter_next(&it, NULL, &m))
            add_tool(p, jget(jget(m, "function"), "name"));
}

static void anthropic_prompt(struct jval body, struct prompt *p)
{
    struct jiter it, blocks;
    struct jval m, block;
    struct jval system = jget(body, "system");
    if (system.s) {
        p->has_system = true;
        content_text(system, &p->system);
    }
    if (jiter_open(&it, jget(body, "messages"), '['))
        while (jiter_next(&it, NULL, &m)) {
            if (!jis_str(jget(m, "role"), "user"))
                continue;
            struct jval content = jget(m, "content");
            buf_clear(&p->user);
            if (jstr(content, &p->user) || !jiter_open(&blocks, content, '['))
                continue;
            while (jiter_next(&blocks, NULL, &block)) {
                struct jval type = jget(block, "type");
                if (jis_str(type, "text")) {
                    jstr(jget(block, "text"), &p->user);
                } else if (jis_str(type, "tool_result")) {
                    struct buf text = {0};
                    content_text(jget(block, "content"), &text);
                    add_result(p, &text);
                    buf_free(&text);
                }
            }
        }
    if (jiter_open(&it, jget(body, "tools"), '['))
        while (jiter_next(&it, NULL, &m))
            add_tool(p, jget(m, "name"));
}

static struct jval jget2(struct jval obj, const char *camel, const char *snake)
{
    struct jval v = jget(obj, camel);
    return v.s ? v : jget(obj, snake);
}

static void gemini_prompt(struct jval body, struct prompt *p)
{
    struct jiter it, parts;
    struct jval c, part;
    struct jval system = jget2(body, "systemInstruction", "system_instruction");
    if (system.s) {
        p->has_system = true;
        parts_text(jget(system, "parts"), &p->system);
    }
    if (jiter_open(&it, jget(body, "contents"), '['))
        while (jiter_next(&it, NULL, &c)) {
            struct jval role = jget(c, "role");
            if (!role.s || jis_str(role, "user")) {
                buf_clear(&p->user);
                parts_text(jget(c, "parts"), &p->user);
            }
            if (!jiter_open(&parts, jget(c, "parts"), '['))
                continue;
            while (jiter_next(&parts, NULL, &part)) {
                struct jval response = jget2(part, "functionResponse", "function_response");
                if (!response.s)
                    continue;
                struct buf text = {0};
                jcompact(jget(response, "response"), &text);
                add_result(p, &text);
                buf_free(&text);
            }
        }
    if (jiter_open(&it, jget(body, "tools"), '['))
        while (jiter_next(&it, NULL, &c)) {
            struct jval decl;
            if (!jiter_open(&parts, jget2(c, "functionDeclarations", "function_declarations"), '['))
                continue;
            while (jiter_next(&parts, NULL, &decl))
                add_tool(p, jget(decl, "name"));
        }
}

/* ---------------------------------------------------------------- answers */

struct tool_call {
    const char *name;
    char id[32];
    char args[48];
};

struct answer {
    struct buf text;
    struct tool_call *calls;
    size_t ncalls;
    size_t piece;         /* bytes per streamed delta */
    bool realistic;       /* events split over several writes, with pauses */
    size_t out_tokens;
};

/* The end of the delta that starts at off: a whole number of characters. */
static size_t piece_end(const struct answer *a, size_t off)
{
    size_t end = off + a->piece < a->text.len ? off + a->piece : a->text.len;
    while (end < a->text.len && ((unsigned char)a->text.p[end] & 0xc0) == 0x80)
        end++;
    return end;
}

/* The first "[X]" label of the text (X: a capital letter, then digits). */
static void first_label(const struct buf *text, char *label, size_t size)
{
    const char *s = buf_str(text);
    for (const char *p = strchr(s, '['); p; p = strchr(p + 1, '[')) {
        size_t n = 1;
        if (!isupper((unsigned char)p[1]))
            continue;
        while (isdigit((unsigned char)p[1 + n]))
            n++;
        if (p[1 + n] == ']' && n < size) {
            memcpy(label, p + 1, n);
            label[n] = '\0';
            return;
        }
    }
    snprintf(label, size, "A");
}

static void normal_text(const struct exchange *x, const struct prompt *p, struct buf *out)
{
    const struct request *req = x->req;
    buf_addf(out, "Hello from %s. You said: ", x->base);
    buf_add(out, buf_str(&p->user), utf8_prefix(buf_str(&p->user), p->user.len, 60));
    if (p->has_system) {
        buf_adds(out, " [system: ");
        buf_add(out, buf_str(&p->system), utf8_prefix(buf_str(&p->system), p->system.len, 30));
        buf_adds(out, "]");
    }
    buf_adds(out, MULTIBYTE);
    char label[16];
    first_label(&p->user, label, sizeof label);
    if (memmem(req->body, req->body_len, "VOTE:", 5))
        buf_addf(out, "\nVOTE: %s", label);
    if (memmem(req->body, req->body_len, "RANKING:", 8))
        buf_addf(out, "\nRANKING: %s", label);
}

/* Takes the prompt's tool names: they live as long as the answer. */
static void tool_calls(const struct exchange *x, struct prompt *p, struct answer *a)
{
    a->calls = xrealloc(NULL, p->ntools * sizeof *a->calls);
    for (size_t i = 0; i < p->ntools; i++) {
        struct tool_call *call = &a->calls[i];
        call->name = p->tools[i];
        snprintf(call->id, sizeof call->id, "%s_%zu", x->api == API_ANTHROPIC ? "toolu" : "call",
                 i + 1);
        snprintf(call->args, sizeof call->args, "{\"query\":\"q%zu\"}", i + 1);
    }
    a->ncalls = p->ntools;
    a->out_tokens = 3 * a->ncalls;
}

static void build_answer(const struct exchange *x, enum scenario sc, unsigned long n,
                         struct prompt *p, struct answer *a)
{
    a->piece = TEXT_PIECE;
    a->realistic = true;
    switch (sc) {
    case SC_TOKENS:
        for (unsigned long i = 0; i < n && i < MAX_TOKENS; i++)
            buf_adds(&a->text, "tok ");
        a->piece = 4;
        a->realistic = false;
        break;
    case SC_HUGE:
        buf_reserve(&a->text, HUGE_SIZE);
        memset(a->text.p, 'x', HUGE_SIZE);
        a->text.len = HUGE_SIZE;
        a->text.p[HUGE_SIZE] = '\0';
        a->piece = HUGE_PIECE;
        a->realistic = false;
        break;
    case SC_TOOLS:
    case SC_TOOLS_LOOP:
        if (p->ntools && (sc == SC_TOOLS_LOOP || !p->nresults)) {
            tool_calls(x, p, a);
            return;
        }
        if (p->nresults) {
            buf_adds(&a->text, "Tool results: ");
            buf_add(&a->text, buf_str(&p->results), p->results.len);
            break;
        }
        normal_text(x, p, &a->text);
        break;
    default:
        normal_text(x, p, &a->text);
    }
    for (size_t off = 0; off < a->text.len; off = piece_end(a, off))
        a->out_tokens++;
}

static void answer_free(struct answer *a)
{
    buf_free(&a->text);
    free(a->calls);
}

/* -------------------------------------------------- non-streamed replies */

static void openai_usage(const struct exchange *x, size_t out, struct buf *b)
{
    buf_addf(b, "{\"prompt_tokens\":%zu,\"completion_tokens\":%zu,\"total_tokens\":%zu",
             x->in_tokens, out, x->in_tokens + out);
    if (strncmp(x->base, "or-", 3) == 0)
        buf_adds(b, ",\"cost\":0.00042");
    buf_adds(b, "}");
}

static void gemini_usage(const struct exchange *x, size_t out, struct buf *b)
{
    buf_addf(b, "{\"promptTokenCount\":%zu,\"candidatesTokenCount\":%zu,\"totalTokenCount\":%zu}",
             x->in_tokens, out, x->in_tokens + out);
}

static void openai_body(const struct exchange *x, const struct answer *a, struct buf *b)
{
    buf_addf(b, "{\"id\":\"chatcmpl-fake%lu\",\"object\":\"chat.completion\",\"created\":%lld,"
                "\"model\":", x->id, x->created);
    buf_add_jsons(b, x->model);
    buf_adds(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (a->ncalls) {
        buf_adds(b, "null,\"tool_calls\":[");
        for (size_t i = 0; i < a->ncalls; i++) {
            buf_addf(b, "%s{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":",
                     i ? "," : "", a->calls[i].id);
            buf_add_jsons(b, a->calls[i].name);
            buf_adds(b, ",\"arguments\":");
            buf_add_jsons(b, a->calls[i].args);
            buf_adds(b, "}}");
        }
        buf_adds(b, "]");
    } else {
        buf_add_json(b, buf_str(&a->text), a->text.len);
    }
    buf_addf(b, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"%s\"}],\"usage\":",
             a->ncalls ? "tool_calls" : "stop");
    openai_usage(x, a->out_tokens, b);
    buf_adds(b, ",\"system_fingerprint\":\"fp_fake\"}");
}

static void anthropic_body(const struct exchange *x, const struct answer *a, struct buf *b)
{
    buf_addf(b, "{\"id\":\"msg_fake%lu\",\"type\":\"message\",\"role\":\"assistant\",\"model\":",
             x->id);
    buf_add_jsons(b, x->model);
    buf_adds(b, ",\"content\":[");
    if (a->ncalls) {
        for (size_t i = 0; i < a->ncalls; i++) {
            buf_addf(b, "%s{\"type\":\"tool_use\",\"id\":\"%s\",\"name\":", i ? "," : "",
                     a->calls[i].id);
            buf_add_jsons(b, a->calls[i].name);
            buf_addf(b, ",\"input\":%s}", a->calls[i].args);
        }
    } else {
        buf_adds(b, "{\"type\":\"text\",\"text\":");
        buf_add_json(b, buf_str(&a->text), a->text.len);
        buf_adds(b, "}");
    }
    buf_addf(b, "],\"stop_reason\":\"%s\",\"stop_sequence\":null,"
                "\"usage\":{\"input_tokens\":%zu,\"output_tokens\":%zu}}",
             a->ncalls ? "tool_use" : "end_turn", x->in_tokens, a->out_tokens);
}

/* Gemini parts: the text, or one functionCall per call. */
static void gemini_parts(const struct answer *a, const char *text, size_t len, struct buf *b)
{
    buf_adds(b, "[");
    if (a->ncalls) {
        for (size_t i = 0; i < a->ncalls; i++) {
            buf_addf(b, "%s{\"functionCall\":{\"name\":", i ? "," : "");
            buf_add_jsons(b, a->calls[i].name);
            buf_addf(b, ",\"args\":%s}}", a->calls[i].args);
        }
    } else {
        buf_adds(b, "{\"text\":");
        buf_add_json(b, text, len);
        buf_adds(b, "}");
    }
    buf_adds(b, "]");
}

/* A GenerateContentResponse; the last one has finishReason and usage. */
static void gemini_response(const struct exchange *x, const struct answer *a, const char *text,
                            size_t len, bool last, struct buf *b)
{
    buf_adds(b, "{\"candidates\":[{\"content\":{\"parts\":");
    gemini_parts(a, text, len, b);
    buf_adds(b, ",\"role\":\"model\"},");
    if (last)
        buf_adds(b, "\"finishReason\":\"STOP\",");
    buf_adds(b, "\"index\":0}],");
    if (last) {
        buf_adds(b, "\"usageMetadata\":");
        gemini_usage(x, a->out_tokens, b);
        buf_adds(b, ",");
    }
    buf_adds(b, "\"modelVersion\":");
    buf_add_jsons(b, x->model);
    buf_addf(b, ",\"responseId\":\"fake%lu\"}", x->id);
}

static void reply(struct exchange *x, enum scenario sc, const struct answer *a)
{
    struct buf body = {0};
    if (sc == SC_MALFORMED)
        buf_adds(&body, "<html>not json</html>");
    else if (sc == SC_WRONGSHAPE)
        buf_adds(&body, "{\"hello\":\"world\"}");
    else if (x->api == API_OPENAI)
        openai_body(x, a, &body);
    else if (x->api == API_ANTHROPIC)
        anthropic_body(x, a, &body);
    else
        gemini_response(x, a, buf_str(&a->text), a->text.len, true, &body);

    if (sc == SC_CUT || sc == SC_SLOW) {
        /* Part of the body only; the log entry stays incomplete. */
        long long length = sc == SC_CUT ? 1000 : (long long)body.len;
        size_t part = sc == SC_CUT ? (body.len < 1000 ? body.len : 999) / 2 : 16;
        x->keep_alive = false;
        if (send_head(x->c, 200, "application/json", length, NULL, true) &&
            conn_write(x->c, body.p, part)) {
            if (sc == SC_SLOW)
                wait_for_hangup(x->c);
        }
        x->c->dead = true;
    } else {
        respond(x, 200, "application/json", NULL, body.p, body.len);
    }
    buf_free(&body);
}

/* --------------------------------------------------------------- streams */

struct sse {
    struct exchange *x;
    const struct answer *a;
    bool crlf;           /* line ends: CRLF or LF */
    bool failed;         /* a write failed: the client is gone */
    bool done;           /* the last event went out */
    bool block_open;     /* Anthropic: content block 0 is open */
    unsigned events;
};

static void pause_briefly(void)
{
    struct timespec ts = {0, PAUSE_US * 1000L};
    nanosleep(&ts, NULL);
}

/* Sends the bytes of one event as HTTP chunks. Answers sent "realistically"
 * go out in up to three writes: split somewhere mid-line (between CR and
 * LF every other time, where lines end in CRLF) and before the last byte.
 * The last event also ends the chunked body; the log entry is marked
 * complete just before it goes. */
static void sse_send(struct sse *s, const char *bytes, size_t len, bool last)
{
    size_t cuts[2], ncuts = 0;
    if (s->failed)
        return;
    if (s->a->realistic && len >= 8) {
        /* Never an empty piece: a chunk of size 0 would end the body. */
        const char *cr = s->crlf ? memchr(bytes, '\r', len) : NULL;
        size_t mid = cr && s->events % 2 == 0 ? (size_t)(cr - bytes) + 1
                                              : 1 + (s->events * 7 + 3) % (len / 2);
        if (mid < len - 1)
            cuts[ncuts++] = mid;
        cuts[ncuts++] = len - 1;
    }
    if (last)
        log_complete(&s->x->ticket, true);
    struct buf out = {0};
    size_t from = 0;
    for (size_t i = 0; i <= ncuts && !s->failed; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        buf_clear(&out);
        buf_addf(&out, "%zx\r\n", to - from);
        buf_add(&out, bytes + from, to - from);
        buf_adds(&out, "\r\n");
        if (last && i == ncuts)
            buf_adds(&out, "0\r\n\r\n");
        if (!conn_write(s->x->c, out.p, out.len))
            s->failed = true;
        else if (i < ncuts)
            pause_briefly();
        from = to;
    }
    buf_free(&out);
    s->events++;
    if (last && s->failed)
        log_complete(&s->x->ticket, false);
    else if (last)
        s->done = true;
}

/* An event; each line of data becomes a "data:" line. */
static void sse_event(struct sse *s, const char *name, const char *data, size_t len, bool last)
{
    const char *eol = s->crlf ? "\r\n" : "\n";
    struct buf ev = {0};
    if (name)
        buf_addf(&ev, "event: %s%s", name, eol);
    const char *p = data, *end = data + len;
    do {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        buf_adds(&ev, "data: ");
        buf_add(&ev, p, (size_t)(stop - p));
        buf_adds(&ev, eol);
        p = nl ? nl + 1 : end;
    } while (p < end);
    buf_adds(&ev, eol);
    sse_send(s, ev.p, ev.len, last);
    buf_free(&ev);
}

static void sse_buf(struct sse *s, const char *name, const struct buf *data, bool last)
{
    sse_event(s, name, buf_str(data), data->len, last);
}

static void sse_str(struct sse *s, const char *name, const char *data, bool last)
{
    sse_event(s, name, data, strlen(data), last);
}

static void sse_comment(struct sse *s)
{
    const char *comment = s->crlf ? ": keep-alive\r\n\r\n" : ": keep-alive\n\n";
    sse_send(s, comment, strlen(comment), false);
}

/* The members of an OpenAI chunk before "choices". */
static void openai_chunk_head(const struct exchange *x, struct buf *b)
{
    buf_addf(b, "{\"id\":\"chatcmpl-fake%lu\",\"object\":\"chat.completion.chunk\","
                "\"created\":%lld,\"model\":", x->id, x->created);
    buf_add_jsons(b, x->model);
    buf_adds(b, ",\"system_fingerprint\":\"fp_fake\",");
}

/* An OpenAI chunk. With split, its data spans two "data:" lines (the JSON
 * text then holds a newline between two members). */
static void openai_chunk(struct sse *s, const char *delta, const char *finish, bool split)
{
    const struct exchange *x = s->x;
    struct buf b = {0};
    openai_chunk_head(x, &b);
    if (split)
        buf_adds(&b, "\n");
    buf_addf(&b, "\"choices\":[{\"index\":0,\"delta\":%s,\"logprobs\":null,\"finish_reason\":",
             delta);
    if (finish)
        buf_addf(&b, "\"%s\"}]", finish);
    else
        buf_adds(&b, "null}]");
    if (x->include_usage)
        buf_adds(&b, ",\"usage\":null");
    buf_adds(&b, "}");
    sse_buf(s, NULL, &b, false);
    buf_free(&b);
}

static void anthropic_block_start(struct sse *s, size_t block, const char *content_block)
{
    struct buf b = {0};
    buf_addf(&b, "{\"type\":\"content_block_start\",\"index\":%zu,\"content_block\":%s}",
             block, content_block);
    sse_buf(s, "content_block_start", &b, false);
    buf_free(&b);
}

static void anthropic_block_stop(struct sse *s, size_t block)
{
    struct buf b = {0};
    buf_addf(&b, "{\"type\":\"content_block_stop\",\"index\":%zu}", block);
    sse_buf(s, "content_block_stop", &b, false);
    buf_free(&b);
}

/* A delta of a content block: {"type": type, field: text}. */
static void anthropic_delta(struct sse *s, size_t block, const char *type, const char *field,
                            const char *text, size_t len)
{
    struct buf b = {0};
    buf_addf(&b, "{\"type\":\"content_block_delta\",\"index\":%zu,"
                 "\"delta\":{\"type\":\"%s\",\"%s\":", block, type, field);
    buf_add_json(&b, text, len);
    buf_adds(&b, "}}");
    sse_buf(s, "content_block_delta", &b, false);
    buf_free(&b);
}

static void stream_open(struct sse *s)
{
    const struct exchange *x = s->x;
    struct buf b = {0};
    switch (x->api) {
    case API_OPENAI:
        openai_chunk(s, s->a->ncalls ? "{\"role\":\"assistant\",\"content\":null}"
                                     : "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}",
                     NULL, true);
        break;
    case API_ANTHROPIC:
        buf_addf(&b, "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_fake%lu\","
                     "\"type\":\"message\",\"role\":\"assistant\",\"model\":", x->id);
        buf_add_jsons(&b, x->model);
        buf_addf(&b, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                     "\"usage\":{\"input_tokens\":%zu,\"output_tokens\":1}}}", x->in_tokens);
        sse_buf(s, "message_start", &b, false);
        if (!s->a->ncalls) {
            anthropic_block_start(s, 0, "{\"type\":\"text\",\"text\":\"\"}");
            s->block_open = true;
        }
        sse_str(s, "ping", "{\"type\": \"ping\"}", false);
        break;
    case API_GEMINI:
    case API_NONE:
        break;
    }
    buf_free(&b);
    sse_comment(s);
}

static void stream_text(struct sse *s, const char *text, size_t len, bool last)
{
    struct buf b = {0};
    switch (s->x->api) {
    case API_OPENAI:
        buf_adds(&b, "{\"content\":");
        buf_add_json(&b, text, len);
        buf_adds(&b, "}");
        openai_chunk(s, b.p, NULL, false);
        break;
    case API_ANTHROPIC:
        anthropic_delta(s, 0, "text_delta", "text", text, len);
        break;
    case API_GEMINI:
        gemini_response(s->x, s->a, text, len, last, &b);
        sse_buf(s, NULL, &b, last);
        break;
    case API_NONE:
        break;
    }
    buf_free(&b);
}

/* Tool calls, the arguments of each in three fragments (Gemini sends whole
 * calls, in one last response). */
static void stream_tools(struct sse *s)
{
    const struct answer *a = s->a;
    struct buf b = {0};
    if (s->x->api == API_GEMINI) {
        gemini_response(s->x, a, NULL, 0, true, &b);
        sse_buf(s, NULL, &b, true);
        buf_free(&b);
        return;
    }
    for (size_t i = 0; i < a->ncalls; i++) {
        const struct tool_call *call = &a->calls[i];
        size_t len = strlen(call->args), cuts[4] = {0, len / 3, 2 * len / 3, len};
        if (s->x->api == API_OPENAI) {
            buf_clear(&b);
            buf_addf(&b, "{\"tool_calls\":[{\"index\":%zu,\"id\":\"%s\",\"type\":\"function\","
                         "\"function\":{\"name\":", i, call->id);
            buf_add_jsons(&b, call->name);
            buf_adds(&b, ",\"arguments\":\"\"}}]}");
            openai_chunk(s, b.p, NULL, false);
            for (int k = 0; k < 3; k++) {
                buf_clear(&b);
                buf_addf(&b, "{\"tool_calls\":[{\"index\":%zu,\"function\":{\"arguments\":", i);
                buf_add_json(&b, call->args + cuts[k], cuts[k + 1] - cuts[k]);
                buf_adds(&b, "}}]}");
                openai_chunk(s, b.p, NULL, false);
            }
        } else {
            buf_clear(&b);
            buf_addf(&b, "{\"type\":\"tool_use\",\"id\":\"%s\",\"name\":", call->id);
            buf_add_jsons(&b, call->name);
            buf_adds(&b, ",\"input\":{}}");
            anthropic_block_start(s, i, b.p);
            anthropic_delta(s, i, "input_json_delta", "partial_json", "", 0);
            for (int k = 0; k < 3; k++)
                anthropic_delta(s, i, "input_json_delta", "partial_json", call->args + cuts[k],
                                cuts[k + 1] - cuts[k]);
            anthropic_block_stop(s, i);
        }
    }
    buf_free(&b);
}

static void stream_close(struct sse *s)
{
    const struct exchange *x = s->x;
    const struct answer *a = s->a;
    struct buf b = {0};
    switch (x->api) {
    case API_OPENAI:
        openai_chunk(s, "{}", a->ncalls ? "tool_calls" : "stop", false);
        if (x->include_usage) {
            openai_chunk_head(x, &b);
            buf_adds(&b, "\"choices\":[],\"usage\":");
            openai_usage(x, a->out_tokens, &b);
            buf_adds(&b, "}");
            sse_buf(s, NULL, &b, false);
        }
        sse_str(s, NULL, "[DONE]", true);
        break;
    case API_ANTHROPIC:
        if (s->block_open)
            anthropic_block_stop(s, 0);
        buf_addf(&b, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
                     "\"stop_sequence\":null},\"usage\":{\"output_tokens\":%zu}}",
                 a->ncalls ? "tool_use" : "end_turn", a->out_tokens);
        sse_buf(s, "message_delta", &b, false);
        sse_str(s, "message_stop", "{\"type\":\"message_stop\"}", true);
        break;
    case API_GEMINI:
        if (!s->done) {
            gemini_response(x, a, "", 0, true, &b);
            sse_buf(s, NULL, &b, true);
        }
        break;
    case API_NONE:
        break;
    }
    buf_free(&b);
}

/* The API's way of failing in the middle of a stream. */
static void stream_error(struct sse *s)
{
    switch (s->x->api) {
    case API_OPENAI: {
        sse_str(s, NULL,
                "{\"error\":{\"message\":\"The server had an error while "
                "processing your request. Sorry about that!\",\"type\":"
                "\"server_error\",\"param\":null,\"code\":null}}",
                true);
        break;
    }
    case API_ANTHROPIC: {
        sse_str(s, "error",
                "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                "\"message\":\"Overloaded\"}}",
                true);
        break;
    }
    case API_GEMINI: {
        sse_str(s, NULL,
                "{\"error\":{\"code\":500,\"message\":\"An internal error has "
                "occurred. Please retry.\",\"status\":\"INTERNAL\"}}",
                true);
        break;
    }
    case API_NONE:
        break;
    }
}

static void stream_reply(struct exchange *x, enum scenario sc, const struct answer *a)
{
    static const char *const malformed[] = {
        [API_OPENAI] = "{\"choices\": [ {\"delta\": ",
        [API_ANTHROPIC] = "{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": ",
        [API_GEMINI] = "{\"candidates\": [ {\"content\": ",
    };
    const char *event_name = x->api == API_ANTHROPIC ? "content_block_delta" : NULL;
    struct sse s = {.x = x, .a = a, .crlf = x->api != API_OPENAI};
    const char *extra = x->api == API_ANTHROPIC ? "request-id: req_fake\r\n" : NULL;

    if (!send_head(x->c, 200, "text/event-stream", CHUNKED, extra, !x->keep_alive))
        return;
    if (sc == SC_WRONGSHAPE) {
        for (int i = 0; i < 2; i++)
            sse_str(&s, event_name, "{\"hello\":\"world\"}", false);
        stream_close(&s);
        return;
    }
    stream_open(&s);
    if (a->ncalls) {
        stream_tools(&s);
    } else {
        size_t i = 0;
        for (size_t off = 0, end; off < a->text.len && !s.failed; off = end, i++) {
            if (sc == SC_CUT && i == 3) {
                x->c->dead = true;   /* close without ending the body */
                return;
            }
            end = piece_end(a, off);
            stream_text(&s, a->text.p + off, end - off, end == a->text.len);
            if (i > 0)
                continue;
            if (sc == SC_MALFORMED) {
                sse_str(&s, event_name, malformed[x->api], false);
            } else if (sc == SC_SLOW) {
                wait_for_hangup(x->c);
                return;
            } else if (sc == SC_STREAM_ERROR) {
                stream_error(&s);
                return;
            }
        }
    }
    stream_close(&s);
}

/* ------------------------------------------------------------ API routes */

static void percent_decode(const char *s, struct buf *out)
{
    buf_adds(out, "");
    while (*s) {
        if (s[0] == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
            char hex[3] = {s[1], s[2], '\0'};
            char c = (char)strtol(hex, NULL, 16);
            buf_add(out, &c, 1);
            s += 3;
        } else {
            buf_add(out, s++, 1);
        }
    }
}

/* ".../models/{model}:generateContent" or ":streamGenerateContent". */
static bool gemini_target(const char *path, char **model, bool *stream)
{
    const char *m = NULL;
    for (const char *p = strstr(path, "/models/"); p; p = strstr(p + 1, "/models/"))
        m = p + strlen("/models/");
    if (!m || strchr(m, '/'))
        return false;
    struct buf seg = {0};
    percent_decode(m, &seg);
    char *colon = strrchr(seg.p, ':');
    if (colon && colon > seg.p && strcmp(colon + 1, "generateContent") == 0)
        *stream = false;
    else if (colon && colon > seg.p && strcmp(colon + 1, "streamGenerateContent") == 0)
        *stream = true;
    else {
        buf_free(&seg);
        return false;
    }
    *colon = '\0';
    *model = seg.p;
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Whether the query string holds exactly this "name=value" parameter. */
static bool query_has(const char *query, const char *param)
{
    size_t k = strlen(param);
    for (const char *p = query;;) {
        size_t n = strcspn(p, "&");
        if (n == k && strncmp(p, param, k) == 0)
            return true;
        if (!p[n])
            return false;
        p += n + 1;
    }
}

/* E_NO_KEY, E_BAD_KEY, or -1 when the request carries the right key. */
static int check_key(const struct exchange *x)
{
    const char *v = NULL;
    switch (x->api) {
    case API_OPENAI:
        if ((v = header(x->req, "authorization"))) {
            if (strncasecmp(v, "Bearer ", 7) != 0)
                return E_BAD_KEY;
            for (v += 7; *v == ' '; v++) {}
        }
        break;
    case API_ANTHROPIC:
        v = header(x->req, "x-api-key");
        break;
    case API_GEMINI:
        v = header(x->req, "x-goog-api-key");
        break;
    case API_NONE:
        return -1;
    }
    if (!v || !*v)
        return E_NO_KEY;
    return strcmp(v, required_key) == 0 ? -1 : E_BAD_KEY;
}

/* The API's own checks of a request; false once it has been refused. */
static bool validate(struct exchange *x)
{
    const struct request *req = x->req;
    struct jval body = x->json;
    switch (x->api) {
    case API_OPENAI:
        if (!*x->model) {
            send_error(x, E_BAD_REQUEST, "you must provide a model parameter", NULL);
            return false;
        }
        if (!jis_array(jget(body, "messages"))) {
            send_error(x, E_BAD_REQUEST, "Missing required parameter: 'messages'.", NULL);
            return false;
        }
        x->stream = jis_true(jget(body, "stream"));
        x->include_usage = jis_true(jget(jget(body, "stream_options"), "include_usage"));
        return true;
    case API_ANTHROPIC: {
        const char *missing = NULL;
        if (!*x->model)
            missing = "model: Field required";
        else if (!jget(body, "max_tokens").s)
            missing = "max_tokens: Field required";
        else if (!jis_array(jget(body, "messages")))
            missing = "messages: Field required";
        if (missing) {
            send_error(x, E_BAD_REQUEST, missing, NULL);
            return false;
        }
        x->stream = jis_true(jget(body, "stream"));
        return true;
    }
    case API_GEMINI:
        if (x->stream && !query_has(req->query, "alt=sse")) {
            send_error(x, E_BAD_REQUEST, "fake_llm serves streamGenerateContent with alt=sse only",
                       NULL);
            return false;
        }
        if (!jis_array(jget(body, "contents"))) {
            send_error(x, E_BAD_REQUEST,
                       "* GenerateContentRequest.contents: contents is not specified", NULL);
            return false;
        }
        return true;
    case API_NONE:
        break;
    }
    return false;
}

static void handle_api(struct exchange *x)
{
    const struct request *req = x->req;
    const char *start = skip_ws(req->body, req->body + req->body_len);
    const char *end = scan_value(start, req->body + req->body_len, 0);
    bool json_ok = end && *start == '{' && skip_ws(end, req->body + req->body_len) ==
                                               req->body + req->body_len;
    if (json_ok)
        x->json = (struct jval){start, end};
    if (!x->model) {
        struct buf model = {0};
        buf_adds(&model, "");
        if (json_ok)
            jstr(jget(x->json, "model"), &model);
        x->model = model.p;
    }
    x->base = xstrndup(x->model, strcspn(x->model, "#~"));
    x->ticket = log_add(req, x->model);
    x->id = atomic_fetch_add(&next_id, 1) + 1;
    x->created = (long long)time(NULL);
    x->in_tokens = req->body_len / 4 ? req->body_len / 4 : 1;

    if (x->api == API_NONE) {
        send_not_found(x);
        return;
    }
    int key_error = required_key ? check_key(x) : -1;
    if (key_error >= 0) {
        send_error(x, (enum err)key_error, NULL, NULL);
        return;
    }
    if (x->api == API_ANTHROPIC && !header(req, "anthropic-version")) {
        send_error(x, E_BAD_REQUEST, "anthropic-version: header is required", NULL);
        return;
    }
    if (!json_ok) {
        send_error(x, E_BAD_REQUEST, "The request body is not valid JSON.", NULL);
        return;
    }
    if (!validate(x))
        return;

    unsigned long n;
    enum scenario sc = scenario_of(x->base, &n);
    unsigned long hits = model_hit(x->model);
    char retry[80];
    switch (sc) {
    case SC_429:
    case SC_429_DATE:
        if (hits > 1)
            break;
        if (sc == SC_429) {
            snprintf(retry, sizeof retry, "Retry-After: 1\r\n");
        } else {
            time_t at = time(NULL) + 2;
            struct tm tm;
            gmtime_r(&at, &tm);
            strftime(retry, sizeof retry, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        }
        send_error(x, E_RATE_LIMIT, NULL, retry);
        return;
    case SC_500:
        if (hits > n)
            break;
        send_error(x, E_SERVER, NULL, NULL);
        return;
    case SC_400:
        send_error(x, E_BAD_REQUEST, "Invalid request (scenario status-400).", NULL);
        return;
    case SC_401:
        send_error(x, E_UNAUTHORIZED, NULL, NULL);
        return;
    case SC_403:
        send_error(x, E_FORBIDDEN, NULL, NULL);
        return;
    case SC_404:
        send_not_found(x);
        return;
    case SC_STALL:
        x->keep_alive = false;
        wait_for_hangup(x->c);
        return;
    default:
        break;
    }

    struct prompt p = {0};
    struct answer a = {0};
    if (x->api == API_OPENAI)
        openai_prompt(x->json, &p);
    else if (x->api == API_ANTHROPIC)
        anthropic_prompt(x->json, &p);
    else
        gemini_prompt(x->json, &p);
    build_answer(x, sc, n, &p, &a);
    if (x->stream)
        stream_reply(x, sc, &a);
    else
        reply(x, sc, &a);
    answer_free(&a);
    prompt_free(&p);
}

/* --------------------------------------------------------------- serving */

static void send_log(struct exchange *x)
{
    struct buf body = {0};
    log_render(&body);
    respond(x, 200, "application/json", NULL, body.p, body.len);
    buf_free(&body);
}

/* Serves one request; false when the connection is done. */
static bool serve_one(struct conn *c)
{
    static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct request req = {0};
    int status = read_head(c, &req);
    if (status != 0) {
        if (status != READ_GONE) {
            static const char body[] = "{\"error\":{\"message\":\"Malformed request\","
                                       "\"type\":\"invalid_request_error\"}}";
            if (send_head(c, status, "application/json", sizeof body - 1, NULL, true))
                conn_write(c, body, sizeof body - 1);
        }
        free(req.head);
        return false;
    }

    struct exchange x = {.c = c, .req = &req, .keep_alive = req.keep_alive};
    bool control = false, stream = false;
    if (strcmp(req.path, "/_requests") == 0 || strcmp(req.path, "/_reset") == 0)
        control = true;
    else if (strcmp(req.method, "POST") != 0)
        x.api = API_NONE;
    else if (ends_with(req.path, "/chat/completions"))
        x.api = API_OPENAI;
    else if (ends_with(req.path, "/v1/messages"))
        x.api = API_ANTHROPIC;
    else if (gemini_target(req.path, &x.model, &stream))
        x.api = API_GEMINI;
    x.stream = stream;

    if (req.chunked || req.content_length > MAX_BODY) {
        x.keep_alive = false;
        if (!control)
            x.ticket = log_add(&req, x.model ? x.model : "");
        send_error(&x, req.chunked ? E_LENGTH_REQUIRED : E_TOO_LARGE, NULL, NULL);
        drain(c, req.chunked ? SIZE_MAX : req.content_length);
    } else if (req.expect_continue && req.content_length > 0 &&
               !conn_write(c, go_on, sizeof go_on - 1)) {
        /* gone */
    } else if (!read_body(c, &req)) {
        /* gone */
    } else if (control && strcmp(req.method, "GET") == 0 && strcmp(req.path, "/_requests") == 0) {
        send_log(&x);
    } else if (control && strcmp(req.method, "POST") == 0 && strcmp(req.path, "/_reset") == 0) {
        state_reset(false);
        send_head(c, 204, NULL, NO_BODY, NULL, !x.keep_alive);
    } else if (control) {
        send_not_found(&x);
    } else {
        handle_api(&x);
    }

    bool keep = x.keep_alive && !c->dead;
    free(x.model);
    free(x.base);
    free(req.head);
    free(req.body);
    return keep;
}

static void *connection_main(void *arg)
{
    struct conn *c = arg;
    if (c->ssl) {
        ERR_clear_error();
        if (SSL_accept(c->ssl) != 1)
            c->dead = true;
    }
    while (!c->dead && !atomic_load(&stopping) && serve_one(c)) {}
    registry_remove(c);
    conn_free(c);
    /* Free OpenSSL's state for this thread now, not at thread exit, so that
     * once shutdown has seen every thread finish, nothing is left behind. */
    OPENSSL_thread_stop();
    thread_finished();
    return NULL;
}

static void start_connection(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = xrealloc(NULL, sizeof *c);
    *c = (struct conn){.fd = fd};
    if (tls_ctx && (!(c->ssl = SSL_new(tls_ctx)) || SSL_set_fd(c->ssl, fd) != 1)) {
        c->dead = true;
        conn_free(c);
        return;
    }
    registry_add(c);
    pthread_t thread;
    if (pthread_create(&thread, &small_stack, connection_main, c) != 0) {
        fputs("fake_llm: cannot start a thread for a connection\n", stderr);
        registry_remove(c);
        c->dead = true;
        conn_free(c);
        thread_finished();
    }
}

/* ------------------------------------------------------------------ main */

static void wake_main(void)
{
    int saved = errno;
    ssize_t r = write(wake_pipe[1], "", 1);
    (void)r;
    errno = saved;
}

static void on_signal(int sig)
{
    wake_main();
}

static void *watch_stdin(void *arg)
{
    char scratch[256];
    ssize_t n;
    while ((n = read(STDIN_FILENO, scratch, sizeof scratch)) > 0 || (n < 0 && errno == EINTR)) {}
    wake_main();
    return NULL;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *chosen;
    if (SSL_select_next_proto(&chosen, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *tls_setup(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fputs("fake_llm: cannot set up TLS:\n", stderr);
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return ctx;
}

static int open_listener(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "fake_llm: %s port %s: %s\n", host, port, gai_strerror(rc));
        exit(1);
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        die("cannot listen");
    return fd;
}

static int bound_port(int fd)
{
    union {
        struct sockaddr any;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } addr = {0};
    socklen_t len = sizeof addr;
    if (getsockname(fd, &addr.any, &len) != 0)
        die("getsockname");
    return ntohs(addr.any.sa_family == AF_INET6 ? addr.v6.sin6_port : addr.v4.sin_port);
}

static void accept_loop(int lfd)
{
    for (;;) {
        struct pollfd fds[2] = {{.fd = lfd, .events = POLLIN},
                                {.fd = wake_pipe[0], .events = POLLIN}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (fds[1].revents)
            return;
        if (!(fds[0].revents & POLLIN))
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            start_connection(fd);
        } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);   /* out of descriptors: let connections end */
        }
    }
}

/* Wakes every connection and waits (a while) for their threads to end. */
static bool stop_connections(void)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    atomic_store(&stopping, true);
    pthread_mutex_lock(&conns.lock);
    for (struct conn *c = conns.head; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    while (conns.threads > 0)
        if (pthread_cond_timedwait(&conns.idle, &conns.lock, &deadline) == ETIMEDOUT)
            break;
    bool idle = conns.threads == 0;
    pthread_mutex_unlock(&conns.lock);
    return idle;
}

static void usage(FILE *to)
{
    fputs("usage: fake_llm [--host H] [--port N] [--tls-cert PEM --tls-key PEM]"
          " [--require-key KEY]\n", to);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = "0", *cert = NULL, *key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 == argc) {
            usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "--host") == 0)
            host = val;
        else if (strcmp(opt, "--port") == 0 && *val && strspn(val, "0123456789") == strlen(val))
            port = val;
        else if (strcmp(opt, "--tls-cert") == 0)
            cert = val;
        else if (strcmp(opt, "--tls-key") == 0)
            key = val;
        else if (strcmp(opt, "--require-key") == 0)
            required_key = val;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!cert != !key) {
        fputs("fake_llm: --tls-cert and --tls-key go together\n", stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    if (pipe2(wake_pipe, O_CLOEXEC) != 0)
        die("pipe");
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, THREAD_STACK);
    pthread_attr_setdetachstate(&small_stack, PTHREAD_CREATE_DETACHED);

    if (cert)
        tls_ctx = tls_setup(cert, key);
    int lfd = open_listener(host, port);
    pthread_t watcher;
    if (pthread_create(&watcher, &small_stack, watch_stdin, NULL) != 0)
        die("pthread_create");
    printf("fake_llm ready port=%d\n", bound_port(lfd));
    fflush(stdout);

    accept_loop(lfd);
    close(lfd);
    if (stop_connections()) {
        /* Every connection is gone: free what they might have used. */
        SSL_CTX_free(tls_ctx);
        state_reset(true);
    }
    pthread_attr_destroy(&small_stack);
    return 0;
}
