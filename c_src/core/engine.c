/* engine.c - the round engine: walks a run through its rounds, starts the
 * member calls each round needs, retries them, and computes what each round
 * yields (answers, critiques, tallies, Borda scores, brackets, syntheses).
 *
 * Everything here runs from engine_pump, which the run schedules on the
 * loop (run_kick) whenever something changed; providers only record their
 * outcome, so a provider that completes synchronously cannot re-enter the
 * engine in the middle of a step. One pump starts at most one round: when
 * members answer at once and a round ends inside the pump that started it,
 * the next round waits for the loop to poll for I/O (run_yield), so a long
 * run of synchronous rounds never holds the loop, and the sockets and runs
 * that share it, for more than a round. Not for: publishing mechanics and
 * the run lifecycle (run.c), call timers and provider plumbing (call.c).
 *
 * What members see (the "answers" of a request):
 *   independent_analysis  nothing but the input
 *   peer_review           the other members' latest answers, by member_id
 *   anonymized_peer_review the same, by label (A, B, ... in spec order)
 *   critique / synthesis  all latest answers, by member_id
 *   vote / ranking        all latest answers, by label
 *   pairwise_elimination  the two answers of a match, by label
 * "Latest answer" = the member's text from the last answer-producing round
 * (independent_analysis, peer_review, anonymized_peer_review, synthesis).
 * Critiques do not replace answers; the round right after a critique round
 * gets them as "critiques". Ballot rounds never change answers.
 */
#include "council_internal.h"
#include "rounds.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fields packed small: a running run holds its round's tasks. Positions
 * and matches are bounded by SPEC_MAX_MEMBERS. */
typedef struct task {
    struct round_state *rs;
    size_t *order;       /* ranking: candidate indices, best first */
    uint64_t started_us; /* its first attempt (monotonic clock) */
    uint16_t pos;        /* participant position */
    uint16_t match;      /* pairwise: match index in the current level */
    uint16_t attempt;    /* at most SPEC_LIMIT_MAX_ATTEMPTS */
    uint8_t fail_kind;   /* council_fail_kind of the last failed attempt */
    bool timed_out : 1;  /* the last failed attempt timed out */
    bool ok : 1;
    int32_t choice;      /* vote / pairwise: candidate index, -1 none */
    uint32_t n_order;
} task;
_Static_assert(SPEC_MAX_MEMBERS <= UINT16_MAX && SPEC_LIMIT_MAX_ATTEMPTS <= UINT16_MAX,
               "a task's positions and attempts fit its fields");

/* What only a pairwise_elimination round needs: one block with its two
 * arrays. */
typedef struct pairwise {
    size_t *alive;          /* candidate indices still in */
    size_t n_alive;
    size_t (*pairs)[2];
    size_t n_pairs;
    json_t *bracket;
    bool any_vote;
} pairwise;

/* A round in progress, allocated in one block with its tasks (except a
 * pairwise round's, made per level) and its per-member arrays. */
typedef struct round_state {
    council_run *run;
    const round_kind *kind; /* its name is the round's type */
    const char *name;       /* the spec's (or "chair"): outlives the round */
    rres *res;              /* made when first needed (round_res): a round
                               whose calls only wait holds none */
    const char *instructions;
    json_t *prev_round;     /* synthesis: {name,type,aggregate} of the last round */
    task *tasks;            /* in the block, or a pairwise level's own */
    pairwise *pw;           /* pairwise_elimination only */
    uint64_t started_us;    /* monotonic clock */
    unsigned idx;
    /* counts bounded by SPEC_MAX_MEMBERS (tasks: members x matches);
     * n_res: result slots of the members called (those of the members
     * gated out follow) */
    uint16_t n_part, n_cand, n_res;
    uint16_t n_tasks, next, done, active;
    bool show_crit;
    bool fail_fast;         /* the spec round's failure_mode */
    /* the member indices taking part (RS_PART), then those with an answer,
     * in spec order (RS_CAND), one byte each per member of the spec; the
     * candidates' labels are their members' (RS_LABEL) */
    uint8_t mem[];
} round_state;
#define RS_PART(rs) ((rs)->mem)
#define RS_CAND(rs) ((rs)->mem + (rs)->run->spec->n_members)
#define RS_LABEL(rs, c) ((rs)->run->spec->members[RS_CAND(rs)[c]].label)
_Static_assert(SPEC_MAX_MEMBERS <= UINT8_MAX &&
                   SPEC_MAX_MEMBERS * SPEC_MAX_MEMBERS <= UINT16_MAX,
               "member indices and task counts fit a round's fields");

/* An iterate round being walked (its children). The spec's top level
 * needs no frame: its position is the run's top_pc. */
typedef struct frame {
    struct frame *next;
    const spec_round *iter;
    rres *res;
    unsigned pc;              /* at most SPEC_MAX_ROUNDS */
    int vote_unanimous;       /* -1 no vote this iteration, 0/1 */
    unsigned iteration, idx;
    uint64_t started_us;      /* its start (monotonic clock) */
} frame;

/* The candidates' labels, in candidate order, into ls (SPEC_MAX_MEMBERS). */
static void cand_labels(const round_state *rs, const char **ls)
{
    for (size_t c = 0; c < rs->n_cand; c++)
        ls[c] = RS_LABEL(rs, c);
}

static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000;
}

/* --------------------------------------------------------------- state */

static void round_state_free(round_state *rs)
{
    if (!rs)
        return;
    for (size_t i = 0; i < rs->n_tasks; i++)
        free(rs->tasks[i].order);
    if (rs->pw) {
        free(rs->tasks); /* a level's, never the block's */
        json_decref(rs->pw->bracket);
        free(rs->pw);
    }
    json_decref(rs->prev_round);
    free(rs);
}

void engine_cancel(council_run *run)
{
    while (run->calls)
        call_abandon(run->calls, "cancelled");
    round_state_free(run->round);
    run->round = NULL;
    route_end(run->route);
    run->route = NULL;
    while (run->frames) {
        frame *f = run->frames;
        run->frames = f->next;
        free(f);
    }
}

void engine_free(council_run *run)
{
    engine_cancel(run);
}

void engine_current_round(const council_run *run, const char **name, unsigned *idx)
{
    if (run->round) {
        *name = run->round->name;
        *idx = run->round->idx;
    } else if (run->frames) {
        *name = run->frames->iter->name;
        *idx = run->frames->idx;
    } else {
        *name = NULL;
        *idx = 0;
    }
}

/* -------------------------------------------------------------- request */

static uint64_t member_timeout(council_run *run, const spec_member *m)
{
    json_t *t = json_object_get(m->options, "timeout_ms");
    if (json_is_integer(t) && json_integer_value(t) > 0)
        return (uint64_t)json_integer_value(t);
    if (run->spec->limits.member_timeout_ms)
        return run->spec->limits.member_timeout_ms;
    return run->ctx->cfg.member_timeout_ms;
}

static json_t *answer_item(const char *key, const char *who, const char *text,
                           size_t len)
{
    return json_pack("{s:s,s:o}", key, who, "text", cx_json_text(text, len));
}

/* A member's latest answer as an item of "answers". */
static json_t *latest_item(const char *key, const char *who, const member_said *said)
{
    return answer_item(key, who, said->latest, said->latest_len);
}

/* The answers a task's request shows, in the order of its "answers"
 * array: for each, cb(key, who, said, arg), key "label" or "member_id"
 * and who the label or id. One walk for the JSON request and for the
 * labels alone (engine_answer_labels). */
typedef void (*shown_cb)(const char *key, const char *who, const member_said *said,
                         void *arg);

static void shown_answers(round_state *rs, const task *t, shown_cb cb, void *arg)
{
    council_run *run = rs->run;
    const council_spec *spec = run->spec;
    size_t me = RS_PART(rs)[t->pos];
    const round_kind *k = rs->kind;
    switch (k->view) {
    case VIEW_OTHERS:
        for (size_t i = 0; i < spec->n_members; i++)
            if (i != me && run_said(run, i)->latest)
                cb(k->by_label ? "label" : "member_id",
                   k->by_label ? spec->members[i].label : spec->members[i].id, run_said(run, i),
                   arg);
        break;
    case VIEW_ALL:
        for (size_t i = 0; i < spec->n_members; i++)
            if (run_said(run, i)->latest)
                cb("member_id", spec->members[i].id, run_said(run, i), arg);
        break;
    case VIEW_CANDIDATES:
        for (size_t c = 0; c < rs->n_cand; c++) {
            size_t i = RS_CAND(rs)[c];
            cb("label", spec->members[i].label, run_said(run, i), arg);
        }
        break;
    case VIEW_MATCH:
        for (int j = 0; j < 2; j++) {
            size_t i = RS_CAND(rs)[rs->pw->pairs[t->match][j]];
            cb("label", spec->members[i].label, run_said(run, i), arg);
        }
        break;
    default:
        break;
    }
}

static void append_item(const char *key, const char *who, const member_said *said, void *arg)
{
    json_array_append_new(arg, latest_item(key, who, said));
}

static json_t *build_request(round_state *rs, task *t, unsigned attempt)
{
    council_run *run = rs->run;
    const council_spec *spec = run->spec;
    size_t me = RS_PART(rs)[t->pos];
    const spec_member *m = &spec->members[me];
    json_t *answers = json_array();
    json_t *req = json_pack(
        "{s:o,s:o,s:s,s:{s:s,s:I,s:s},s:I,s:o,s:s}",
        "run_id", cx_json_text(run->run_id, run->run_id_len),
        "council", cx_json_text(run->council, strlen(run->council)), "member_id", m->id,
        "round", "name", rs->name, "idx", (json_int_t)rs->idx, "type", rs->kind->name,
        "attempt", (json_int_t)attempt,
        "input", run->input.text ? cx_json_text(run->input.text, run->input.text_len)
                                 : json_null(),
        "instructions", rs->instructions);
    if (!req || !answers) {
        json_decref(req);
        json_decref(answers);
        return NULL;
    }
    const round_kind *k = rs->kind;
    shown_answers(rs, t, append_item, answers);
    if (k->view == VIEW_OTHERS && run_said(run, me)->latest)
        json_object_set_new(req, "previous_answer",
                            cx_json_text(run_said(run, me)->latest, run_said(run, me)->latest_len));
    if (k->shows_previous_round && rs->prev_round)
        json_object_set(req, "previous_round", rs->prev_round);
    json_object_set_new(req, "answers", answers);
    if (rs->show_crit) {
        json_t *cr = json_array();
        for (size_t i = 0; cr && i < spec->n_members; i++) {
            const member_said *said = run_said(run, i);
            if (said->critique)
                json_array_append_new(cr, answer_item("member_id", spec->members[i].id,
                                                      said->critique, said->critique_len));
        }
        json_object_set_new(req, "critiques", cr);
    }
    return req;
}

/* ---------------------------------------------------------------- tasks */

static void task_complete(task *t, bool ok, const char *text, size_t len,
                          const char *error);
static void fail_run(council_run *run, council_fail_kind kind, const char *fmt,
                     const char *name, bool round);

/* The attempts made so far for participant pos in this round. Until the
 * round's result exists every attempt is in the current tasks (a pairwise
 * level ends only once each of its tasks completed, which makes it). */
static unsigned member_attempts(const round_state *rs, size_t pos)
{
    if (rs->res)
        return rres_member(rs->res, pos)->pub.attempts;
    unsigned n = 0;
    for (size_t i = 0; i < rs->n_tasks; i++)
        if (rs->tasks[i].pos == pos)
            n += rs->tasks[i].attempt;
    return n;
}

/* The round's result with its n_res members called (still "skipped" until
 * each ends, the attempts made so far) and n_skip members a gate left out
 * (skipped, in spec order). NULL when out of memory. */
static rres *make_res(round_state *rs, size_t n_skip)
{
    council_run *run = rs->run;
    const council_spec *spec = run->spec;
    rres *rr = rres_new(rs->name, rs->idx, rs->kind->name, rs->n_res + n_skip);
    if (!rr || run_own_round(run, rr)) {
        rres_free(rr);
        return NULL;
    }
    for (size_t i = 0; i < rs->n_res; i++) {
        rres_set_member_id(rr, i, spec->members[RS_PART(rs)[i]].id);
        rres_member(rr, i)->pub.status = COUNCIL_MEMBER_SKIPPED; /* until it ends */
        rres_member(rr, i)->pub.attempts = member_attempts(rs, i);
    }
    for (size_t i = 0, k = rs->n_res, p = 0; n_skip && i < spec->n_members; i++) {
        if (p < rs->n_part && RS_PART(rs)[p] == i) { /* part is in spec order */
            p++;
            continue;
        }
        rres_set_member_id(rr, k, spec->members[i].id);
        rres_member(rr, k++)->pub.status = COUNCIL_MEMBER_SKIPPED;
    }
    rs->res = rr;
    return rr;
}

/* The round's result, made now if it was not (a round with members gated
 * out made it at its start). NULL when out of memory. */
static rres *round_res(round_state *rs)
{
    return rs->res ? rs->res : make_res(rs, 0);
}

static void task_launch(round_state *rs, task *t, uint64_t delay)
{
    council_run *run = rs->run;
    size_t me = RS_PART(rs)[t->pos];
    const spec_member *m = &run->spec->members[me];
    if (t->attempt == 0)
        t->started_us = mono_us();
    if (member_attempts(rs, t->pos) == 0) /* the member's first call in this round */
        run_publish(run, COUNCIL_EV_MEMBER_STARTED, rs->name, (int)rs->idx,
                    rs->kind->name, m->id, NULL, 0, NULL);
    t->attempt++;
    if (rs->res)
        rres_member(rs->res, t->pos)->pub.attempts++;
    provider *prov = ctx_provider_find(run->ctx, m->provider);
    if (!prov) { /* checked at create; a host cannot unregister, but be safe */
        task_complete(t, false, NULL, 0, "unknown provider");
        return;
    }
    council_call *c = call_new(run, t, prov, m, rs->name, rs->idx, rs->kind->name,
                               t->attempt, member_timeout(run, m));
    if (!c) {
        task_complete(t, false, NULL, 0, "out of memory");
        return;
    }
    call_launch(c, delay);
}

json_t *engine_request(task *t, const council_call *call)
{
    return build_request(t->rs, t, council_call_attempt(call));
}

typedef struct label_list {
    const char **labels;
    size_t n, max;
} label_list;

static void add_label(const char *key, const char *who, const member_said *said, void *arg)
{
    label_list *l = arg;
    (void)said;
    if (l->n < l->max)
        l->labels[l->n] = strcmp(key, "label") == 0 ? who : NULL;
    l->n++;
}

size_t engine_answer_labels(const task *t, const char **labels, size_t max)
{
    label_list l = {labels, 0, max};
    shown_answers(t->rs, t, add_label, &l);
    return l.n;
}

void engine_call_token(task *t, council_call *call, const char *chunk, size_t len)
{
    round_state *rs = t->rs;
    (void)call;
    run_publish(rs->run, COUNCIL_EV_MEMBER_TOKEN, rs->name, (int)rs->idx,
                rs->kind->name, rs->run->spec->members[RS_PART(rs)[t->pos]].id, chunk,
                len, NULL);
}

void engine_call_usage(task *t, const council_usage *u)
{
    round_state *rs = t->rs;
    council_run *run = rs->run;
    rres *rr = round_res(rs); /* out of memory: only the run's total counts it */
    if (rr) {
        cx_usage_add(&rres_member(rr, t->pos)->pub.usage, u);
        cx_usage_add(&rr->pub.usage, u);
    }
    run_out *o = run_out_make(run); /* out of memory: the usage is not counted */
    if (o)
        cx_usage_add(&o->result.usage, u);
}

void engine_call_tool(task *t, council_event_type type, const council_tool_event *te)
{
    round_state *rs = t->rs;
    run_publish(rs->run, type, rs->name, (int)rs->idx, rs->kind->name,
                rs->run->spec->members[RS_PART(rs)[t->pos]].id, NULL, 0, te);
}

/* The wait before attempt n+1 after n attempts: backoff_ms * 2^(n-1), plus
 * up to a quarter more at random (so that members retrying together do not
 * hit a rate-limited API in step), never less than what the server asked
 * for; at most CALL_MAX_RETRY_AFTER_MS. */
static uint64_t retry_delay(const council_run *run, const spec_member *m, unsigned n,
                            uint64_t retry_after)
{
    uint64_t base = m->backoff_ms >= 0 ? (uint64_t)m->backoff_ms : run->spec->limits.backoff_ms;
    for (unsigned i = 1; i < n && base < CALL_MAX_RETRY_AFTER_MS; i++)
        base *= 2;
    if (base > CALL_MAX_RETRY_AFTER_MS)
        base = CALL_MAX_RETRY_AFTER_MS;
    if (base >= 4)
        base += randombytes_uniform((uint32_t)(base / 4) + 1);
    if (base < retry_after)
        base = retry_after;
    return base > CALL_MAX_RETRY_AFTER_MS ? CALL_MAX_RETRY_AFTER_MS : base;
}

void engine_call_done(task *t, council_call *call, bool ok, const char *text,
                      size_t len, const char *error)
{
    round_state *rs = t->rs;
    council_run *run = rs->run;
    const spec_member *m = &run->spec->members[RS_PART(rs)[t->pos]];
    unsigned max_attempts = m->max_attempts ? m->max_attempts : run->spec->limits.max_attempts;
    rres *rr = round_res(rs);
    if (!rr) {
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", rs->name, true);
        return;
    }
    if (call->began_us)
        rres_member(rr, t->pos)->pub.provider_us += mono_us() - call->began_us;
    t->fail_kind = ok ? COUNCIL_FAIL_TRANSIENT : call->fail_kind;
    t->timed_out = !ok && call->timed_out;
    if (!ok && call->fail_kind == COUNCIL_FAIL_TRANSIENT && t->attempt < max_attempts &&
        run->ctx) {
        task_launch(rs, t, retry_delay(run, m, t->attempt, call->retry_after_ms));
        return;
    }
    task_complete(t, ok, text, len, error);
}

static json_t *labels_json(round_state *rs, const size_t *order, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(RS_LABEL(rs, order[i])));
    return a;
}

/* The status of a member whose call failed for good with kind. */
static council_member_status failed_status(const task *t, council_fail_kind kind)
{
    if (kind == COUNCIL_FAIL_VALIDATION)
        return COUNCIL_MEMBER_INVALID_OUTPUT;
    return t->timed_out ? COUNCIL_MEMBER_TIMEOUT : COUNCIL_MEMBER_ERROR;
}

static void task_complete(task *t, bool ok, const char *text, size_t len,
                          const char *error)
{
    round_state *rs = t->rs;
    council_run *run = rs->run;
    rres *rr = round_res(rs);
    if (!rr) {
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", rs->name, true);
        return;
    }
    mres *mr = rres_member(rr, t->pos);
    const char *mid = run->spec->members[RS_PART(rs)[t->pos]].id;
    char why[1024]; /* bounds a provider's message; fits an exec error with its stderr tail */
    council_fail_kind fk = ok ? COUNCIL_FAIL_VALIDATION /* if unparsable */ : t->fail_kind;
    const char *kind = council_fail_kind_name(fk);
    rs->done++;
    rs->active--;
    mr->pub.duration_us = mono_us() - (rs->pw ? rs->started_us : t->started_us);
    if (ok) {
        mres_set_text(mr, text, len);
        mres_set_error(mr, NULL);
        round_yield y = rs->kind->yield;
        if (y == YIELD_VOTE || y == YIELD_BRACKET) {
            const char *ls[SPEC_MAX_MEMBERS];
            size_t n = rs->n_cand;
            if (y == YIELD_BRACKET) {
                ls[0] = RS_LABEL(rs, rs->pw->pairs[t->match][0]);
                ls[1] = RS_LABEL(rs, rs->pw->pairs[t->match][1]);
                n = 2;
            } else {
                cand_labels(rs, ls);
            }
            char lab[8];
            if (council_parse_vote(text, len, ls, n, lab, sizeof lab) == COUNCIL_OK) {
                for (size_t c = 0; c < rs->n_cand; c++)
                    if (strcmp(RS_LABEL(rs, c), lab) == 0)
                        t->choice = (int32_t)c;
                t->ok = true;
            } else {
                ok = false;
                error = "unparsable vote: expected 'VOTE: <label>' with a label shown";
            }
        } else if (y == YIELD_RANKING) {
            size_t n_order;
            const char *ls[SPEC_MAX_MEMBERS];
            cand_labels(rs, ls);
            t->order = cx_calloc(rs->n_cand, sizeof *t->order);
            if (t->order && council_parse_ranking(text, len, ls, rs->n_cand,
                                                  t->order, &n_order) == COUNCIL_OK) {
                t->n_order = (uint32_t)n_order;
                t->ok = true;
            } else {
                ok = false;
                error = "unparsable ranking: expected 'RANKING: <label> > <label> ...'";
            }
        } else {
            t->ok = true;
        }
    }
    if (rs->kind->yield == YIELD_BRACKET) {
        if (t->ok) {
            rs->pw->any_vote = true;
            if (!mr->parsed)
                mres_set_parsed(mr, json_pack("{s:[]}", "votes"));
            json_t *votes = json_object_get(mr->parsed, "votes");
            json_array_append_new(
                votes, json_pack("{s:[s,s],s:s}", "pair",
                                 RS_LABEL(rs, rs->pw->pairs[t->match][0]),
                                 RS_LABEL(rs, rs->pw->pairs[t->match][1]), "vote",
                                 RS_LABEL(rs, t->choice)));
            mres_set_parsed(mr, json_incref(mr->parsed)); /* re-render text */
        } else {
            snprintf(why, sizeof why, "%s", error ? error : "failed");
            if (!mr->pub.error) {
                mres_set_error(mr, why);
                mr->pub.error_kind = kind;
                mr->pub.status = failed_status(t, fk);
            }
            run_add_error(run, fk, mid, rs->name, "member %s in round %s: %s", mid, rs->name,
                          why);
        }
        run_kick(run);
        return;
    }
    if (ok) {
        mr->pub.status = COUNCIL_MEMBER_OK;
        if (rs->kind->yield == YIELD_VOTE)
            mres_set_parsed(mr, json_pack("{s:s}", "vote", RS_LABEL(rs, t->choice)));
        else if (rs->kind->yield == YIELD_RANKING)
            mres_set_parsed(mr, json_pack("{s:o}", "ranking",
                                          labels_json(rs, t->order, t->n_order)));
    } else {
        snprintf(why, sizeof why, "%s", error ? error : "failed");
        mres_set_error(mr, why);
        mr->pub.error_kind = kind;
        mr->pub.status = failed_status(t, fk);
        run_add_error(run, fk, mid, rs->name, "member %s in round %s: %s", mid, rs->name, why);
    }
    run_publish(run, COUNCIL_EV_MEMBER_COMPLETED, rs->name, (int)rs->idx,
                rs->kind->name, mid, NULL, 0, &mr->pub);
    if (!ok && rs->fail_fast) {
        /* failure_mode fail_fast: the round, partial as it is, goes into the
         * result and the run fails now (its other calls are abandoned) */
        run_push_round(run, rs->res);
        run_add_error(run, fk, mid, rs->name,
                      "round %s failed: member %s failed (failure_mode fail_fast)", rs->name,
                      mid);
        run_finish(run, COUNCIL_FAILED);
        return;
    }
    run_kick(run);
}

/* --------------------------------------------------------------- rounds */

/* The run fails over its round name (NULL: over no round). */
static void fail_run(council_run *run, council_fail_kind kind, const char *fmt,
                     const char *name, bool round)
{
    run_add_error(run, kind, NULL, round ? name : NULL, fmt, name);
    run_finish(run, COUNCIL_FAILED);
}

/* The kind of a round where no member succeeded: transient when every
 * member failure in it was (trying the run again may do), else permanent. */
static council_fail_kind round_fail_kind(const rres *rr)
{
    const char *transient = council_fail_kind_name(COUNCIL_FAIL_TRANSIENT);
    bool any = false;
    for (size_t i = 0; i < rr->pub.n_members; i++) {
        const char *k = rr->pub.members[i]->error_kind;
        if (!k)
            continue;
        if (strcmp(k, transient) != 0)
            return COUNCIL_FAIL_PERMANENT;
        any = true;
    }
    return any ? COUNCIL_FAIL_TRANSIENT : COUNCIL_FAIL_PERMANENT;
}

static int pairwise_level(round_state *rs);

/* The members a round of the spec may have (its options.members, else
 * every member), as a mask. */
static uint64_t round_members(const council_spec *spec, const spec_round *sr)
{
    uint64_t m = 0;
    if (sr->gated)
        for (size_t i = 0; i < sr->n_gate; i++)
            m |= (uint64_t)1 << sr->gate[i];
    else
        m = spec->n_members >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << spec->n_members) - 1);
    return m;
}

/* The router that chooses a round's members: its own, else the council's;
 * none for rounds of one member (synthesis) and iterate rounds. */
static const spec_router *round_router(const council_spec *spec, const spec_round *sr)
{
    const round_kind *k = round_kind_of(sr->type);
    if (k->one_member || k->yield == YIELD_NESTED)
        return NULL;
    return sr->router ? sr->router : spec->router;
}

/* The round's result into the run's, round_completed published, the
 * round's state freed. */
static void complete_round(council_run *run, round_state *rs)
{
    rres *rr = rs->res;
    rr->pub.duration_us = mono_us() - rs->started_us;
    run->rounds_completed++;
    run_push_round(run, rr);
    run->round = NULL;
    run_publish(run, COUNCIL_EV_ROUND_COMPLETED, rs->name, (int)rs->idx, rs->kind->name,
                NULL, NULL, 0, &rr->pub);
    round_state_free(rs);
}

/* Set up and announce a round with the members of chosen (a router's
 * choice; all ones when there is none). Returns 0, or -1 when the run
 * ended. */
static int start_round(council_run *run, const spec_round *sr, round_type type,
                       const char *name, int synth, uint64_t chosen)
{
    const council_spec *spec = run->spec;
    size_t nm = spec->n_members;
    /* the state with its part and cand bytes, then the tasks: one zeroed
     * block (a pairwise round makes its tasks per level) */
    const round_kind *kind = round_kind_of(type);
    bool bracket = kind->yield == YIELD_BRACKET;
    size_t n_block_tasks = bracket ? 0 : nm;
    size_t tasks_at = (offsetof(round_state, mem) + 2 * nm + _Alignof(task) - 1) &
                      ~(_Alignof(task) - 1);
    round_state *rs = cx_calloc(1, tasks_at + n_block_tasks * sizeof(task));
    if (!rs) {
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", name, true);
        return -1;
    }
    task *block_tasks = (task *)(void *)((char *)rs + tasks_at);
    rs->run = run;
    rs->kind = kind;
    rs->name = name;
    rs->idx = run->next_round_idx++;
    rs->instructions = sr && sr->instructions ? sr->instructions : kind->instructions;
    rs->fail_fast = sr && sr->fail_fast;
    rs->show_crit = run->critiques_fresh;
    rs->started_us = mono_us();
    run->round = rs;
    if (kind->one_member) {
        int who = synth >= 0 ? synth : spec->chair >= 0 ? spec->chair
                  : sr && sr->gated ? (int)sr->gate[0] : 0;
        RS_PART(rs)[rs->n_part++] = (uint8_t)who;
    } else {
        uint64_t may = sr ? round_members(spec, sr) : ~(uint64_t)0;
        for (size_t i = 0; i < nm; i++) {
            if (!(may & ((uint64_t)1 << i)))
                continue;
            if (chosen & ((uint64_t)1 << i))
                RS_PART(rs)[rs->n_part++] = (uint8_t)i;
        }
    }
    if (rs->n_part > 0)
        run->critiques_fresh = false; /* a round the router skips passes them on */
    if (kind->shows_previous_round) {
        rres *last = run_last_round(run);
        if (last) {
            rs->prev_round = json_pack("{s:s,s:s,s:O?}", "name", last->pub.name, "type",
                                       last->pub.type, "aggregate", last->aggregate);
        }
    }
    for (size_t i = 0; i < nm; i++)
        if (run_said(run, i)->latest) {
            RS_CAND(rs)[rs->n_cand++] = (uint8_t)i;
        }
    bool ballot = kind->yield == YIELD_VOTE || kind->yield == YIELD_RANKING || bracket;
    size_t n_res = (bracket && rs->n_cand < 2) ? 0 : rs->n_part;
    /* the members a gate or the router leaves out are in the result too,
     * as skipped */
    size_t n_skip = kind->one_member ? 0 : nm - rs->n_part;
    rs->n_res = (uint16_t)n_res;
    /* the result waits for its first use, unless skipped members are
     * announced now */
    if (n_skip && !make_res(rs, n_skip)) {
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", name, true);
        return -1;
    }
    run_publish(run, COUNCIL_EV_ROUND_STARTED, rs->name, (int)rs->idx, rs->kind->name,
                NULL, NULL, 0, NULL);
    for (size_t k = n_res; k < n_res + n_skip; k++) {
        mres *mr = rres_member(rs->res, k);
        run_publish(run, COUNCIL_EV_MEMBER_COMPLETED, rs->name, (int)rs->idx, rs->kind->name,
                    mr->pub.member_id, NULL, 0, &mr->pub);
    }
    if (rs->n_part == 0) { /* the router chose nobody: the round is skipped */
        complete_round(run, rs);
        return 0;
    }
    if (ballot && rs->n_cand == 0) {
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s failed: no answers to choose from", name,
                 true);
        return -1;
    }
    if (bracket) {
        pairwise *pw = cx_calloc(1, sizeof *pw + rs->n_cand * (sizeof *pw->alive +
                                                               sizeof *pw->pairs));
        if (!pw) {
            fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", name, true);
            return -1;
        }
        rs->pw = pw;
        pw->pairs = (size_t (*)[2])(pw + 1);
        pw->alive = (size_t *)(pw->pairs + rs->n_cand);
        pw->bracket = json_array();
        if (!pw->bracket) {
            fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", name, true);
            return -1;
        }
        for (size_t c = 0; c < rs->n_cand; c++)
            pw->alive[pw->n_alive++] = c;
        return pairwise_level(rs);
    }
    rs->tasks = block_tasks;
    rs->n_tasks = rs->n_part;
    for (size_t i = 0; i < rs->n_part; i++) {
        rs->tasks[i].rs = rs;
        rs->tasks[i].pos = (uint16_t)i;
        rs->tasks[i].choice = -1;
    }
    return 0;
}

/* Build the tasks of the next pairwise level (every member votes on every
 * match of the level). With one answer left there is nothing to do. */
static int pairwise_level(round_state *rs)
{
    pairwise *pw = rs->pw;
    for (size_t i = 0; i < rs->n_tasks; i++)
        free(rs->tasks[i].order);
    free(rs->tasks);
    rs->tasks = NULL;
    rs->n_tasks = rs->next = rs->done = rs->active = 0;
    pw->n_pairs = 0;
    if (pw->n_alive < 2)
        return 0;
    for (size_t i = 0; i + 1 < pw->n_alive; i += 2) {
        pw->pairs[pw->n_pairs][0] = pw->alive[i];
        pw->pairs[pw->n_pairs][1] = pw->alive[i + 1];
        pw->n_pairs++;
    }
    rs->tasks = cx_calloc(pw->n_pairs * rs->n_part, sizeof *rs->tasks);
    if (!rs->tasks) {
        fail_run(rs->run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", rs->name, true);
        return -1;
    }
    rs->n_tasks = (uint16_t)(pw->n_pairs * rs->n_part);
    for (size_t k = 0; k < rs->n_tasks; k++) {
        rs->tasks[k].rs = rs;
        rs->tasks[k].match = (uint16_t)(k / rs->n_part);
        rs->tasks[k].pos = (uint16_t)(k % rs->n_part);
        rs->tasks[k].choice = -1;
    }
    return 0;
}

/* The ballots of the round's valid tasks: their choices (vote, match) or
 * their orders (ranking), in task order. NULL when out of memory. */
static long *valid_choices(round_state *rs, size_t match, bool by_match, size_t *n)
{
    long *c = cx_calloc(rs->n_tasks ? rs->n_tasks : 1, sizeof *c);
    *n = 0;
    for (size_t i = 0; c && i < rs->n_tasks; i++) {
        task *t = &rs->tasks[i];
        if (t->ok && (!by_match || t->match == match))
            c[(*n)++] = t->choice;
    }
    return c;
}

/* Decide the matches of the level just finished. */
static void pairwise_decide(round_state *rs)
{
    pairwise *pw = rs->pw;
    json_t *level = json_array();
    size_t n_new = 0;
    for (size_t p = 0; p < pw->n_pairs; p++) {
        size_t a = pw->pairs[p][0], b = pw->pairs[p][1], n;
        int64_t va = 0, vb = 0;
        long *choices = valid_choices(rs, p, true, &n);
        size_t w = choices ? ballot_match(choices, n, a, b, &va, &vb) : a;
        free(choices);
        json_array_append_new(
            level, json_pack("{s:[s,s],s:{s:I,s:I},s:s}", "pair", RS_LABEL(rs, a),
                             RS_LABEL(rs, b), "votes", RS_LABEL(rs, a), (json_int_t)va,
                             RS_LABEL(rs, b), (json_int_t)vb, "winner",
                             RS_LABEL(rs, w)));
        pw->alive[n_new++] = w;
    }
    if (pw->n_alive % 2) {
        size_t bye = pw->alive[pw->n_alive - 1];
        json_array_append_new(level, json_pack("{s:s}", "bye", RS_LABEL(rs, bye)));
        pw->alive[n_new++] = bye;
    }
    pw->n_alive = n_new;
    json_array_append_new(pw->bracket, level);
}

static bool answers_equal(council_run *run)
{
    const char *first = NULL;
    size_t flen = 0;
    for (size_t i = 0; i < run->spec->n_members; i++) {
        const member_said *said = run_said(run, i);
        if (!said->latest)
            continue;
        if (!first) {
            first = said->latest;
            flen = said->latest_len;
        } else if (flen != said->latest_len || memcmp(first, said->latest, flen)) {
            return false;
        }
    }
    return first != NULL;
}

static void set_latest(char **slot, size_t *lenp, const char *text, size_t len)
{
    char *n = cx_memdup(text, len);
    if (!n)
        return;
    free(*slot);
    *slot = n;
    *lenp = len;
}

static json_t *winner_json(council_run *run, round_state *rs, size_t w)
{
    (void)run;
    return json_string(run->spec->members[RS_CAND(rs)[w]].id);
}

/* The round's aggregate and text from its tally (rounds.h: its kind's
 * yield). */
static void yield_round(council_run *run, round_state *rs, long first_ok)
{
    rres *rr = rs->res;
    frame *it = run->frames; /* the innermost iterate round, if any */
    switch (rs->kind->yield) {
    case YIELD_ANSWER:
    case YIELD_CRITIQUE:
        for (size_t i = 0; i < rs->n_tasks; i++) {
            task *t = &rs->tasks[i];
            if (!t->ok)
                continue;
            size_t m = RS_PART(rs)[t->pos];
            mres *mr = rres_member(rr, t->pos);
            member_said *said = &run->out->said[m]; /* made with rr */
            if (rs->kind->yield == YIELD_ANSWER)
                set_latest(&said->latest, &said->latest_len, mr->pub.text, mr->pub.text_len);
            else
                set_latest(&said->critique, &said->critique_len, mr->pub.text,
                           mr->pub.text_len);
        }
        if (rs->kind->yield == YIELD_CRITIQUE)
            run->critiques_fresh = true;
        rres_set_text(rr, rres_member(rr, first_ok)->pub.text,
                      rres_member(rr, first_ok)->pub.text_len);
        break;
    case YIELD_VOTE: {
        size_t n;
        long *choices = valid_choices(rs, 0, false, &n);
        int64_t *tally = cx_calloc(rs->n_cand, sizeof *tally);
        if (!choices || !tally) {
            free(choices);
            free(tally);
            break;
        }
        size_t w = ballot_plurality(choices, n, rs->n_cand, tally);
        json_t *tj = json_object();
        for (size_t c = 0; c < rs->n_cand; c++)
            json_object_set_new(tj, RS_LABEL(rs, c), json_integer(tally[c]));
        bool unanimous = n > 0 && (size_t)tally[w] == n;
        rres_set_aggregate(rr, json_pack("{s:o,s:s,s:o,s:I,s:b}", "tally", tj, "winner",
                                         RS_LABEL(rs, w), "winner_member",
                                         winner_json(run, rs, w), "valid_votes",
                                         (json_int_t)n, "unanimous", unanimous));
        size_t m = RS_CAND(rs)[w];
        rres_set_text(rr, run_said(run, m)->latest, run_said(run, m)->latest_len);
        if (it) /* the last vote of the iteration decides */
            it->vote_unanimous = unanimous ? 1 : 0;
        free(choices);
        free(tally);
        break;
    }
    case YIELD_RANKING: {
        int64_t *score = cx_calloc(rs->n_cand, sizeof *score);
        size_t *order = cx_calloc(rs->n_cand, sizeof *order);
        const size_t **orders = cx_calloc(rs->n_tasks ? rs->n_tasks : 1, sizeof *orders);
        size_t *lens = cx_calloc(rs->n_tasks ? rs->n_tasks : 1, sizeof *lens);
        if (score && order && orders && lens) {
            size_t n = 0;
            for (size_t i = 0; i < rs->n_tasks; i++)
                if (rs->tasks[i].ok) {
                    orders[n] = rs->tasks[i].order;
                    lens[n++] = rs->tasks[i].n_order;
                }
            ballot_borda(orders, lens, n, rs->n_cand, score, order);
            json_t *sj = json_object();
            for (size_t c = 0; c < rs->n_cand; c++)
                json_object_set_new(sj, RS_LABEL(rs, c), json_integer(score[c]));
            rres_set_aggregate(rr, json_pack("{s:o,s:o,s:s,s:o}", "scores", sj, "ranking",
                                             labels_json(rs, order, rs->n_cand), "winner",
                                             RS_LABEL(rs, order[0]), "winner_member",
                                             winner_json(run, rs, order[0])));
            size_t m = RS_CAND(rs)[order[0]];
            rres_set_text(rr, run_said(run, m)->latest, run_said(run, m)->latest_len);
        }
        free(score);
        free(order);
        free(orders);
        free(lens);
        break;
    }
    case YIELD_BRACKET: {
        size_t w = rs->pw->alive[0];
        rres_set_aggregate(rr, json_pack("{s:O,s:s,s:o}", "bracket", rs->pw->bracket,
                                         "winner", RS_LABEL(rs, w), "winner_member",
                                         winner_json(run, rs, w)));
        size_t m = RS_CAND(rs)[w];
        rres_set_text(rr, run_said(run, m)->latest, run_said(run, m)->latest_len);
        break;
    }
    case YIELD_NESTED:
        break;
    }
}

/* Compute the round's yield, publish round_completed, and clear the round.
 * Returns -1 when the run failed. */
static int finish_round(council_run *run)
{
    round_state *rs = run->round;
    rres *rr = round_res(rs); /* none yet when no member was called */
    if (!rr) {
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", rs->name, true);
        return -1;
    }
    bool bracket = rs->kind->yield == YIELD_BRACKET;
    size_t n_ok = 0;
    long first_ok = -1;
    for (size_t i = 0; i < rs->n_tasks && !bracket; i++)
        if (rs->tasks[i].ok) {
            n_ok++;
            if (first_ok < 0)
                first_ok = (long)i;
        }
    if (bracket) {
        /* members whose calls all failed are errors; the others voted, and
         * those whose own answer lost a match are eliminated */
        size_t winner = rs->pw->n_alive ? RS_CAND(rs)[rs->pw->alive[0]] : SIZE_MAX;
        for (size_t i = 0; i < rs->n_res; i++) {
            mres *mr = rres_member(rr, i);
            if (mr->parsed) {
                mres_set_error(mr, NULL);
                mr->pub.status = COUNCIL_MEMBER_OK;
                for (size_t c = 0; c < rs->n_cand; c++)
                    if (RS_CAND(rs)[c] == RS_PART(rs)[i] && RS_PART(rs)[i] != winner)
                        mr->pub.status = COUNCIL_MEMBER_ELIMINATED;
            } else if (!mr->pub.error) {
                mres_set_error(mr, "no valid vote");
                mr->pub.error_kind = council_fail_kind_name(COUNCIL_FAIL_VALIDATION);
                mr->pub.status = COUNCIL_MEMBER_INVALID_OUTPUT;
            }
            run_publish(run, COUNCIL_EV_MEMBER_COMPLETED, rs->name, (int)rs->idx,
                        rs->kind->name, mr->pub.member_id, NULL, 0, &mr->pub);
        }
        if (rs->n_res > 0 && !rs->pw->any_vote) {
            run_push_round(run, rr);
            fail_run(run, round_fail_kind(rr), "round %s failed: no member succeeded", rs->name,
                     true);
            return -1;
        }
    } else if (n_ok == 0) {
        run_push_round(run, rr);
        fail_run(run, round_fail_kind(rr), "round %s failed: no member succeeded", rs->name,
                     true);
        return -1;
    }
    yield_round(run, rs, first_ok);
    complete_round(run, rs);
    return 0;
}

/* ---------------------------------------------------------------- frames */

static int push_iterate(council_run *run, const spec_round *sr)
{
    frame *f = calloc(1, sizeof *f);
    if (!f) {
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", sr->name, true);
        return -1;
    }
    f->iter = sr;
    f->iteration = 0;
    f->vote_unanimous = -1;
    f->idx = run->next_round_idx++;
    f->started_us = mono_us();
    f->res = rres_new(sr->name, f->idx, round_type_name(sr->type), 0);
    if (!f->res || run_own_round(run, f->res)) {
        rres_free(f->res);
        free(f);
        fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", sr->name, true);
        return -1;
    }
    f->next = run->frames;
    run->frames = f;
    run_publish(run, COUNCIL_EV_ROUND_STARTED, sr->name, (int)f->idx,
                round_type_name(sr->type), NULL, NULL, 0, NULL);
    return 0;
}

/* One iteration ended: go again, or close the iterate round. */
static void end_iteration(council_run *run, frame *f)
{
    f->iteration++;
    bool consensus = f->vote_unanimous == 1 || answers_equal(run);
    bool stop = (f->iter->until == STOP_CONSENSUS && consensus) ||
                f->iteration >= f->iter->max_iterations;
    if (!stop) {
        f->pc = 0;
        f->vote_unanimous = -1;
        return;
    }
    rres *rr = f->res;
    rres_set_aggregate(rr, json_pack("{s:I,s:s,s:b}", "iterations",
                                     (json_int_t)f->iteration, "stopped_by",
                                     (f->iter->until == STOP_CONSENSUS && consensus)
                                         ? "consensus" : "max_iterations",
                                     "consensus", consensus));
    rres *last = run_last_round(run);
    if (last)
        rres_set_text(rr, last->pub.text, last->pub.text_len);
    rr->pub.duration_us = mono_us() - f->started_us;
    run->frames = f->next;
    free(f);
    run->rounds_completed++;
    run_push_round(run, rr);
    run_publish(run, COUNCIL_EV_ROUND_COMPLETED, rr->pub.name, (int)rr->pub.idx,
                rr->pub.type, NULL, NULL, 0, &rr->pub);
}

static void complete_run(council_run *run)
{
    /* final: the chair's answer (it ran last), else the last round's text
     * (of the last round that ran: a round a router skipped has none) */
    council_result *r = run->out ? &run->out->result : NULL; /* none: no round */
    size_t n = r ? r->n_rounds : 0;
    while (n > 0 && !r->rounds[n - 1]->text && r->rounds[n - 1]->n_members > 0 &&
           r->rounds[n - 1]->members[0]->status == COUNCIL_MEMBER_SKIPPED)
        n--;
    if (n > 0 && r->rounds[n - 1]->text) {
        const council_round_result *last = r->rounds[n - 1];
        r->final_text = cx_memdup(last->text, last->text_len);
        r->final_len = r->final_text ? last->text_len : 0;
    }
    run_finish(run, COUNCIL_COMPLETED);
}

/* ------------------------------------------------------------------ pump */

/* Ask the round's router, if it has one, which members take part (the
 * question stays with the run while the router thinks: the run waits at
 * that round, so it has one at most). 1: *chosen is set (all ones without
 * a router); 0: waiting; -1: the run failed. */
static int choose_members(council_run *run, const spec_round *sr, uint64_t *chosen)
{
    const spec_router *r = round_router(run->spec, sr);
    if (!r)
        return 1;
    if (!run->route) {
        if (route_begin(run, r, round_members(run->spec, sr), sr->name,
                        run->next_round_idx, round_type_name(sr->type), &run->route)) {
            fail_run(run, COUNCIL_FAIL_PERMANENT, "round %s: out of memory", sr->name, true);
            return -1;
        }
        if (run->status != COUNCIL_RUNNING)
            return -1; /* the router's start() ended the run (and the route) */
    }
    const char *why = NULL;
    council_fail_kind kind;
    int o = route_outcome(run->route, chosen, &why, &kind);
    if (o == 0)
        return 0;
    if (o < 0)
        run_add_error(run, kind, NULL, sr->name,
                      "round %s: router %s failed: %s", sr->name,
                      council_route_router(run->route), why);
    route_end(run->route);
    run->route = NULL;
    if (o < 0) {
        run_finish(run, COUNCIL_FAILED);
        return -1;
    }
    return 1;
}

_Static_assert(SPEC_MAX_ROUNDS <= UINT8_MAX, "a top-level position fits top_pc");

/* Move past the next round of the level f walks (NULL: the top level). */
static void pass_round(council_run *run, frame *f)
{
    if (f)
        f->pc++;
    else
        run->top_pc++;
}

/* Whether the pump may start a round now: not when it already started one
 * (it ended at once); then the run yields and the next pump starts it. */
static bool may_start(council_run *run, bool started)
{
    if (started)
        run_yield(run);
    return !started;
}

void engine_pump(council_run *run)
{
    bool started = false; /* a round was started by this pump */
    while (run->status == COUNCIL_RUNNING && run->ctx) {
        round_state *rs = run->round;
        if (rs) {
            unsigned limit = run->spec->limits.concurrency;
            /* a provider may end the run from start(): check that first */
            while (run->status == COUNCIL_RUNNING && run->round == rs &&
                   rs->next < rs->n_tasks && (limit == 0 || rs->active < limit)) {
                task *t = &rs->tasks[rs->next++];
                rs->active++;
                task_launch(rs, t, 0);
            }
            if (run->round != rs || run->status != COUNCIL_RUNNING)
                return;
            if (rs->done < rs->n_tasks)
                return; /* wait for calls */
            if (rs->kind->yield == YIELD_BRACKET && rs->n_tasks > 0) {
                pairwise_decide(rs);
                if (pairwise_level(rs) < 0)
                    return;
                if (rs->n_tasks > 0)
                    continue;
            }
            if (finish_round(run) < 0)
                return;
            continue;
        }
        frame *f = run->frames; /* NULL: the top level */
        const spec_round *rounds = f ? f->iter->children : run->spec->rounds;
        size_t n = f ? f->iter->n_children : run->spec->n_rounds;
        size_t pc = f ? f->pc : run->top_pc;
        if (pc < n) {
            const spec_round *sr = &rounds[pc];
            if (round_kind_of(sr->type)->yield == YIELD_NESTED) {
                pass_round(run, f);
                if (push_iterate(run, sr) < 0)
                    return;
                continue;
            }
            if (!may_start(run, started))
                return;
            uint64_t chosen = ~(uint64_t)0;
            int routed = choose_members(run, sr, &chosen);
            if (routed <= 0)
                return; /* waiting for the router (it kicks the run), or failed */
            pass_round(run, f);
            if (start_round(run, sr, sr->type, sr->name, sr->synth_member, chosen) < 0)
                return;
            started = true;
            continue;
        }
        if (f) {
            end_iteration(run, f);
            continue;
        }
        if (run->spec->chair >= 0 && !run->chair_done) {
            if (!may_start(run, started))
                return;
            run->chair_done = true;
            if (start_round(run, NULL, RT_SYNTHESIS, "chair", run->spec->chair,
                            ~(uint64_t)0) < 0)
                return;
            started = true;
            continue;
        }
        complete_run(run);
        return;
    }
}
