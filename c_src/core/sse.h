/* sse.h - an incremental parser for Server-Sent Events (the text/event-stream
 * format the model APIs stream in).
 *
 * Bytes go in as they arrive, cut anywhere (mid-line, between CR and LF,
 * mid-UTF-8); each complete event comes out once its blank line has been
 * read: its type ("message" unless an "event:" field said otherwise) and
 * its data (the "data:" lines joined with "\n"). Lines end with LF, CRLF or
 * CR; comment lines (":...") and unknown fields are skipped; "id:" and
 * "retry:" are ignored (a model stream is never resumed). A line or an
 * event over max_event bytes is an error, so a hostile stream cannot grow
 * memory without bound. Loop-agnostic; one parser per response.
 */
#ifndef COUNCIL_SSE_H
#define COUNCIL_SSE_H

#include <stdbool.h>
#include <stddef.h>

/* One event. Return 0 to go on, non-zero to stop parsing (sse_feed then
 * returns that value). data is NUL-terminated at data[len]. */
typedef int (*sse_event_cb)(const char *type, const char *data, size_t len, void *arg);

typedef struct sse_parser {
    char *line;          /* the line being read */
    size_t line_len, line_cap;
    char *data;          /* the event's data so far */
    size_t data_len, data_cap;
    char type[64];
    bool has_data;
    bool after_cr;       /* the last byte was a CR: skip one LF */
    size_t max_event;
    sse_event_cb cb;
    void *arg;
} sse_parser;

/* A parser with no buffers yet (they grow as needed). max_event 0 = 1 MiB. */
void sse_init(sse_parser *p, size_t max_event, sse_event_cb cb, void *arg);

/* Feed len bytes. Returns 0, the callback's non-zero value, COUNCIL_ETOOBIG
 * (a line or event over max_event) or COUNCIL_ENOMEM; after an error the
 * parser must not be fed again. */
int sse_feed(sse_parser *p, const char *buf, size_t len);

/* The stream ended: an event whose blank line never came is dropped (the
 * SSE rule). Returns 1 when such a partial event was pending, else 0. */
int sse_finish(sse_parser *p);

/* Free the buffers (the parser may be re-initialised). */
void sse_free(sse_parser *p);

#endif
