/* util.c - small things every core file uses: error names, allocation
 * helpers, labels, the clock and run ids (timers: timer.c).
 *
 * Not for: anything with state of its own (there is no global state but
 * the per-thread block of random bytes run ids are cut from).
 */
#include "council_internal.h"
#include "json_scan.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *council_strerror(int err)
{
    switch (err) {
    case COUNCIL_OK: return "ok";
    case COUNCIL_EINVAL: return "invalid argument";
    case COUNCIL_ENOMEM: return "out of memory";
    case COUNCIL_ELIMIT: return "limit reached";
    case COUNCIL_EEXIST: return "already exists";
    case COUNCIL_ENOTFOUND: return "not found";
    case COUNCIL_EUNKNOWN_RUN: return "unknown run";
    case COUNCIL_ERUNNER_DEAD: return "runner dead";
    case COUNCIL_ESPEC: return "invalid spec";
    case COUNCIL_ESTATE: return "invalid state";
    case COUNCIL_EPROVIDER: return "provider error";
    case COUNCIL_ETIMEOUT: return "timeout";
    case COUNCIL_ECANCELLED: return "cancelled";
    case COUNCIL_EPARSE: return "parse error";
    case COUNCIL_ETOOBIG: return "too big";
    case COUNCIL_EIO: return "i/o error";
    case COUNCIL_ERUNNING: return "still running";
    default: return "unknown error";
    }
}

const char *council_status_name(council_status s)
{
    switch (s) {
    case COUNCIL_PENDING: return "pending";
    case COUNCIL_RUNNING: return "running";
    case COUNCIL_COMPLETED: return "completed";
    case COUNCIL_FAILED: return "failed";
    case COUNCIL_CANCELLED: return "cancelled";
    }
    return "unknown";
}

const char *council_event_type_name(council_event_type t)
{
    switch (t) {
    case COUNCIL_EV_RUN_STARTED: return "run_started";
    case COUNCIL_EV_ROUND_STARTED: return "round_started";
    case COUNCIL_EV_MEMBER_STARTED: return "member_started";
    case COUNCIL_EV_MEMBER_TOKEN: return "member_token";
    case COUNCIL_EV_MEMBER_COMPLETED: return "member_completed";
    case COUNCIL_EV_ROUND_COMPLETED: return "round_completed";
    case COUNCIL_EV_RUN_COMPLETED: return "run_completed";
    case COUNCIL_EV_RUN_FAILED: return "run_failed";
    case COUNCIL_EV_RUN_CANCELLED: return "run_cancelled";
    case COUNCIL_EV_TOOL_CALL_REQUEST: return "tool_call_request";
    case COUNCIL_EV_TOOL_CALL_RESULT: return "tool_call_result";
    }
    return "unknown";
}

const char *council_member_status_name(council_member_status s)
{
    static const char *const names[] = {"ok",      "error",          "timeout",
                                        "skipped", "invalid_output", "eliminated"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : NULL;
}

const char *council_fail_kind_name(council_fail_kind k)
{
    switch (k) {
    case COUNCIL_FAIL_TRANSIENT: return "transient";
    case COUNCIL_FAIL_PERMANENT: return "permanent";
    case COUNCIL_FAIL_VALIDATION: return "validation";
    case COUNCIL_FAIL_CANCELLED: return "cancelled";
    }
    return "unknown";
}

void cx_usage_add(council_usage *to, const council_usage *u)
{
    to->input_tokens += u->input_tokens;
    to->output_tokens += u->output_tokens;
    to->reports += u->reports;
    if (u->has_cost) {
        to->cost += u->cost;
        to->has_cost = 1;
    }
}

char *cx_strdup(const char *s)
{
    return s ? cx_memdup(s, strlen(s)) : NULL;
}

char *cx_memdup(const void *p, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *d = malloc(len + 1);
    if (!d)
        return NULL;
    if (len)
        memcpy(d, p, len);
    d[len] = '\0';
    return d;
}

void *cx_calloc(size_t n, size_t sz)
{
    return calloc(n ? n : 1, sz ? sz : 1);
}

void cx_tail_keep(char *buf, size_t cap, size_t *len, const char *p, size_t n)
{
    if (n >= cap) {
        memcpy(buf, p + n - cap, cap);
        *len = cap;
        return;
    }
    size_t keep = *len + n > cap ? cap - n : *len;
    memmove(buf, buf + *len - keep, keep);
    memcpy(buf + keep, p, n);
    *len = keep + n;
}

bool cx_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = jscan_utf8_len(p + i, len - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

json_t *cx_json_text(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j || !s || len > SIZE_MAX / 3)
        return j;
    /* not UTF-8 (or out of memory): each invalid byte becomes U+FFFD */
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t k = jscan_utf8_len(p + i, len - i);
        if (k) {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn_nocheck(out, o);
    free(out);
    return j;
}

int64_t council_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Run ids are cut from a block of random bytes drawn ID_BATCH ids at a
 * time: one getrandom() system call per ID_BATCH ids rather than one per
 * id (it was ~6% of the NIF loop thread's time per run start). The block
 * is per thread, so no lock; a bytes' slice is wiped once used. A forked
 * child drops what its (only) thread had drawn, so that parent and child
 * never hand out the same ids. */
#define ID_RAW 16
#define ID_BATCH 32
static _Thread_local unsigned char id_block[ID_RAW * ID_BATCH];
static _Thread_local size_t id_left;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;

static void id_forked(void)
{
    sodium_memzero(id_block, sizeof id_block);
    id_left = 0;
}

static void id_init(void) { (void)pthread_atfork(NULL, NULL, id_forked); }

void council_run_id_generate(char out[23])
{
    (void)pthread_once(&id_once, id_init);
    if (id_left == 0) {
        randombytes_buf(id_block, sizeof id_block);
        id_left = ID_BATCH;
    }
    unsigned char *raw = id_block + --id_left * ID_RAW;
    sodium_bin2base64(out, 23, raw, ID_RAW, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, ID_RAW);
}

void cx_label(size_t i, char out[8])
{
    char letter = (char)('A' + (i % 26));
    size_t gen = i / 26;
    if (gen == 0) {
        out[0] = letter;
        out[1] = '\0';
    } else {
        snprintf(out, 8, "%c%u", letter, (unsigned)((gen + 1) % 10000));
    }
}
