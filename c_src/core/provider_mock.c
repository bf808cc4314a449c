/* provider_mock.c - the built-in deterministic provider.
 *
 * Its answer is a function of the member, the round, the attempt, the
 * input and the labels of the answers the request shows (read from the
 * call and the engine, not from a JSON request), so runs are reproducible. Ballot rounds
 * get parsable ballots. Options (member "options"):
 *   latency_ms     time until the answer (0: answer at once, synchronously)
 *   chunks         stream the answer as this many member_token events,
 *                  spread over the latency
 *   fail_attempts  [n, ...] attempts that fail ("mock failure on attempt n")
 *   hang_attempts  [n, ...] attempts that never answer (for timeouts)
 *   answer         fixed text for answer rounds
 *   text           fixed text for every round (e.g. to test bad ballots)
 *   vote           label to vote for when shown (else the first label)
 *   ranking        "C>A>B" or ["C","A","B"]: preferred order; labels not
 *                  named follow in label order
 * Not for: anything but tests, demos and benchmarks.
 */
#include "council_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mock_call {
    council_call *call;   /* ref held */
    cx_timer timer;       /* fini'd (zeroed) when the answer is synchronous */
    char *answer;
    size_t len;
    unsigned chunks, sent;
    uint64_t step_ms;
} mock_call;             /* a failing attempt's timer calls mock_fail */

static bool in_list(json_t *list, unsigned attempt)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        if (json_is_integer(v) && json_integer_value(v) == (json_int_t)attempt)
            return true;
    }
    return false;
}

/* Append s to a growing buffer: malloc'ed (p NULL at first), or a
 * caller's array until it is outgrown (heap 0). failed: a growth found no
 * memory (the text is short of what was added since). */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int heap, failed;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = (b->cap ? b->cap * 2 : 128);
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = b->heap ? realloc(b->p, nc) : malloc(nc);
        if (!np) {
            b->failed = 1;
            return;
        }
        if (!b->heap && b->len)
            memcpy(np, b->p, b->len);
        b->p = np;
        b->cap = nc;
        b->heap = 1;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_free(sbuf *b)
{
    if (b->heap)
        free(b->p);
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Put the shown label named tok (len bytes) next in order, once. */
static void rank_prefer(const char *const *labels, size_t n, const char *tok, size_t len,
                        const char **order, size_t *k)
{
    for (size_t i = 0; i < n && *k < SPEC_MAX_MEMBERS; i++) {
        const char *l = labels[i];
        if (strlen(l) != len || memcmp(l, tok, len) != 0)
            continue;
        for (size_t j = 0; j < *k; j++)
            if (order[j] == l)
                return;
        order[(*k)++] = l;
        return;
    }
}

/* At most max bytes of s (len bytes), not cutting a UTF-8 sequence in two. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* The first max bytes of the input's text as a request shows it (JSON
 * text: each byte that is not UTF-8 there is U+FFFD), cut between
 * characters; a valid prefix is the same bytes, so only an input with a
 * bad byte there makes the text. */
static void add_input(sbuf *b, const council_input *in, size_t max)
{
    size_t n = utf8_cut(in->text, in->text_len, max);
    if (cx_utf8_valid(in->text, n)) {
        sb_add(b, in->text, n);
        return;
    }
    json_t *j = cx_json_text(in->text, in->text_len);
    if (j)
        sb_add(b, json_string_value(j),
               utf8_cut(json_string_value(j), json_string_length(j), max));
    json_decref(j);
}

/* labels: those of the n answers the request shows (NULL: keyed by
 * member id). */
static void compose_from(council_call *call, const char *const *labels, size_t n, sbuf *b)
{
    const char *mid = council_call_member_id(call);
    const char *type = council_call_round_type(call);
    json_t *mo = call->member->options; /* borrowed */
    char line[512];
    json_t *fixed = json_object_get(mo, "text");
    if (json_is_string(fixed)) {
        sb_add(b, json_string_value(fixed), json_string_length(fixed));
        return;
    }
    if (strcmp(type, "vote") == 0 || strcmp(type, "pairwise_elimination") == 0) {
        const char *pick = n ? labels[0] : "?";
        json_t *pref = json_object_get(mo, "vote");
        for (size_t i = 0; json_is_string(pref) && i < n; i++)
            if (strcmp(labels[i], json_string_value(pref)) == 0)
                pick = labels[i];
        snprintf(line, sizeof line, "VOTE: %s\n(%s, %s #%u)", pick, mid,
                 council_call_round_name(call), council_call_round_idx(call));
        sb_str(b, line);
    } else if (strcmp(type, "ranking") == 0) {
        /* preferred labels first, then the rest in label order */
        const char *order[SPEC_MAX_MEMBERS];
        size_t k = 0;
        json_t *pref = json_object_get(mo, "ranking");
        if (json_is_string(pref)) {
            const char *p = json_string_value(pref), *end = p + json_string_length(pref);
            while (p < end) {
                size_t len = strcspn(p, ">, ");
                if (p + len > end)
                    len = (size_t)(end - p);
                rank_prefer(labels, n, p, len, order, &k);
                p += len + 1;
            }
        } else if (json_is_array(pref)) {
            size_t i;
            json_t *v;
            json_array_foreach(pref, i, v) if (json_is_string(v))
                rank_prefer(labels, n, json_string_value(v), json_string_length(v), order,
                            &k);
        }
        for (size_t i = 0; i < n; i++)
            rank_prefer(labels, n, labels[i], strlen(labels[i]), order, &k);
        sb_str(b, "RANKING: ");
        for (size_t i = 0; i < k; i++) {
            if (i)
                sb_str(b, " > ");
            sb_str(b, order[i]);
        }
        snprintf(line, sizeof line, "\n(%s, %s #%u)", mid,
                 council_call_round_name(call), council_call_round_idx(call));
        sb_str(b, line);
    } else {
        json_t *ans = json_object_get(mo, "answer");
        if (json_is_string(ans)) {
            sb_add(b, json_string_value(ans), json_string_length(ans));
        } else {
            const council_input *in = &call->run->input;
            snprintf(line, sizeof line, "%s: %s #%u attempt %u on \"", mid,
                     council_call_round_name(call), council_call_round_idx(call),
                     council_call_attempt(call));
            sb_str(b, line);
            if (in->text)
                add_input(b, in, 200);
            sb_str(b, "\"");
            if (n) {
                snprintf(line, sizeof line, " having read %zu answer%s", n,
                         n == 1 ? "" : "s");
                sb_str(b, line);
            }
        }
    }
}

/* The answer, from what the call's request shows (engine_answer_labels,
 * the run's input) without making the JSON request a model would get;
 * COUNCIL_ENOMEM when the text cannot be made or the call has no task
 * (finished: it has no request either). */
static int compose(council_call *call, sbuf *b)
{
    const char *labels[SPEC_MAX_MEMBERS];
    if (!call->task)
        return COUNCIL_ENOMEM;
    size_t n = engine_answer_labels(call->task, labels, SPEC_MAX_MEMBERS);
    if (n > SPEC_MAX_MEMBERS)
        n = SPEC_MAX_MEMBERS;
    compose_from(call, labels, n, b);
    return b->p && !b->failed ? COUNCIL_OK : COUNCIL_ENOMEM;
}

static void mock_free(mock_call *mc)
{
    cx_timer_fini(&mc->timer);
    council_call_unref(mc->call);
    free(mc->answer);
    free(mc);
}

static int compose_into(mock_call *mc)
{
    sbuf b = {0};
    int rc = compose(mc->call, &b);
    if (rc) {
        sb_free(&b);
        return rc;
    }
    mc->answer = b.p;
    mc->len = b.len;
    return COUNCIL_OK;
}

/* Send the next chunk. Returns false when mc is gone (the call ended). */
static bool send_chunk(mock_call *mc)
{
    council_call *call = council_call_ref(mc->call);
    size_t per = mc->len / mc->chunks, from = per * mc->sent;
    size_t n = mc->sent + 1 == mc->chunks ? mc->len - from : per;
    mc->sent++;
    if (n)
        council_call_token(call, mc->answer + from, n);
    bool alive = call->prov_state == mc; /* a cancel frees mc */
    if (alive && !council_call_active(call)) {
        call->prov_state = NULL;
        mock_free(mc);
        alive = false;
    }
    council_call_unref(call);
    return alive;
}

/* An answer given at once: composed in an array of the caller's (on
 * the stack) unless it outgrows it, and completed. */
#define ANSWER_STACK 512

static int answer_now(council_call *call)
{
    char room[ANSWER_STACK];
    sbuf b = {room, 0, sizeof room, 0, 0};
    int rc = compose(call, &b);
    if (rc == COUNCIL_OK)
        council_call_complete(call, b.p, b.len);
    sb_free(&b);
    return rc;
}

/* A waiting answer's end (no chunks): on the call's own timer
 * (call_wake_after), so that a mock that only waits holds nothing. */
static void wake_answer(council_call *call)
{
    if (answer_now(call) != COUNCIL_OK)
        council_call_fail(call, council_strerror(COUNCIL_ENOMEM));
}

static void wake_fail(council_call *call)
{
    char msg[64];
    snprintf(msg, sizeof msg, "mock failure on attempt %u", council_call_attempt(call));
    council_call_fail(call, msg);
}

/* A failing attempt's end: no chunk, the failure. */
static void mock_fail(void *arg)
{
    mock_call *mc = arg;
    mc->call->prov_state = NULL;
    wake_fail(mc->call);
    mock_free(mc);
}

/* Deliver the next chunk, or the end. */
static void mock_tick(void *arg)
{
    mock_call *mc = arg;
    council_call *call = mc->call;
    if (mc->sent < mc->chunks) {
        if (send_chunk(mc))
            cx_timer_start(&mc->timer, mc->step_ms);
        return;
    }
    call->prov_state = NULL;
    if (!mc->answer && compose_into(mc) != COUNCIL_OK) {
        council_call_fail(call, council_strerror(COUNCIL_ENOMEM));
    } else {
        council_call_complete(call, mc->answer, mc->len);
    }
    mock_free(mc);
}

static int mock_start(council_call *call, void *arg)
{
    (void)arg;
    json_t *mo = call->member->options; /* borrowed */
    unsigned attempt = council_call_attempt(call);
    bool hang = in_list(json_object_get(mo, "hang_attempts"), attempt);
    bool fail = in_list(json_object_get(mo, "fail_attempts"), attempt);
    json_int_t lat = json_integer_value(json_object_get(mo, "latency_ms"));
    json_int_t chunks = json_integer_value(json_object_get(mo, "chunks"));
    if (hang)
        return 0; /* the call's timeout (or a cancel) ends it */
    if (lat > 0 && chunks <= 0) {
        /* a latency at or past the timeout: the timeout ends it */
        call_wake_after(call, (uint64_t)lat, fail ? wake_fail : wake_answer);
        return 0;
    }
    if (lat <= 0 && chunks <= 0 && !fail)
        return answer_now(call); /* nothing to keep: no record, no timer */
    mock_call *mc = calloc(1, sizeof *mc);
    if (!mc)
        return COUNCIL_ENOMEM;
    mc->call = council_call_ref(call);
    /* An answer that is not streamed is made when it is due: a call that
     * only waits holds neither the answer nor the request. */
    if (!fail && (lat <= 0 || chunks > 0) && compose_into(mc) != COUNCIL_OK) {
        mock_free(mc);
        return COUNCIL_ENOMEM;
    }
    mc->chunks = (unsigned)(chunks > 0 ? chunks : 0);
    if (mc->chunks > mc->len)
        mc->chunks = (unsigned)mc->len;
    call->prov_state = mc;
    if (lat <= 0) {
        /* synchronous: every chunk, then the end */
        while (mc->sent < mc->chunks && !fail)
            if (!send_chunk(mc))
                return 0;
        if (fail)
            mock_fail(mc);
        else
            mock_tick(mc);
        return 0;
    }
    if (cx_timer_init(call->run->ctx, &mc->timer, fail ? mock_fail : mock_tick, mc) !=
        COUNCIL_OK) {
        call->prov_state = NULL;
        mock_free(mc);
        return COUNCIL_ENOMEM;
    }
    mc->step_ms = mc->chunks ? (uint64_t)lat / (mc->chunks + 1) : (uint64_t)lat;
    cx_timer_start(&mc->timer, mc->step_ms);
    return 0;
}

static void mock_cancel(council_call *call, void *arg)
{
    (void)arg;
    mock_call *mc = call->prov_state;
    if (!mc)
        return;
    call->prov_state = NULL;
    mock_free(mc);
}

void provider_mock_ops(council_provider_ops *ops)
{
    memset(ops, 0, sizeof *ops);
    ops->start = mock_start;
    ops->cancel = mock_cancel;
}
