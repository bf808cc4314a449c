/* json_scan.h - reading a few values out of a small JSON text without
 * building it: a validating single-pass scanner for the stream events of
 * the model APIs, where building a jansson tree per token was most of the
 * CPU a streamed token cost.
 *
 * The whole text is checked against RFC 8259 (strings valid UTF-8 with
 * valid escapes, no control characters, numbers in JSON's grammar,
 * nesting at most JSCAN_MAX_DEPTH, nothing after the value but white
 * space), so a text the scanner accepts is one jansson accepts too. While
 * it checks, it records where the values of the wanted paths are. A path is
 * the keys and array indices from the root joined with '.', e.g.
 * "choices.0.delta.content". Duplicate keys: the last one wins, as jansson.
 * Not for: anything a caller needs as a tree (tool calls: use jansson).
 */
#ifndef COUNCIL_JSON_SCAN_H
#define COUNCIL_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSCAN_MAX_DEPTH 64

typedef enum jscan_type {
    JSCAN_NONE = 0, /* not found */
    JSCAN_STRING,
    JSCAN_NUMBER,
    JSCAN_OBJECT,
    JSCAN_ARRAY,
    JSCAN_TRUE,
    JSCAN_FALSE,
    JSCAN_NULL
} jscan_type;

/* One wanted path and, after jscan, what is there. For a string, p/len
 * are its contents between the quotes, still escaped (jscan_string gives
 * the text); for a number, its characters; for a container, from its
 * opening bracket to its closing one. */
typedef struct jscan_want {
    const char *path;
    jscan_type type;
    const char *p;
    size_t len;
    bool escaped; /* a string holding a backslash escape */
} jscan_want;

/* Scan text (len bytes). Returns 0 when it is valid JSON, -1 otherwise;
 * wants[i] filled for the paths found (type JSCAN_NONE for the others). */
int jscan(const char *text, size_t len, jscan_want *wants, size_t n);

/* The text of a found string (w->type JSCAN_STRING) into out, which has
 * room for w->len bytes (a string never grows when unescaped); returns
 * its length. */
size_t jscan_string(const jscan_want *w, char *out);

/* Length of the UTF-8 sequence at p (n > 0 bytes left), 0 when it is not
 * valid UTF-8 as JSON (and jansson) read it: no overlong forms, surrogates
 * or code points over U+10FFFF. The one such check of the core. */
size_t jscan_utf8_len(const unsigned char *p, size_t n);

/* A found number as an unsigned integer: 0 and *out, or -1 (not a
 * non-negative integer that fits). */
int jscan_u64(const jscan_want *w, uint64_t *out);
/* A found number as a double: 0 and *out, or -1. */
int jscan_double(const jscan_want *w, double *out);

#endif
