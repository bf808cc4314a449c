/* native_demo.c - a live council run through the native C API, no BEAM.
 *
 * Three mock members with some latency and streamed chunks go through
 * independent_analysis, anonymized_peer_review and a vote; the chair then
 * synthesises the final answer. Every event is printed as it happens.
 */
#include <council.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SPEC[] =
    "{\"id\": \"demo:three_wise_mocks\","
    " \"members\": ["
    "  {\"id\": \"ada\",   \"provider\": \"mock\", \"options\": {\"latency_ms\": 120, \"chunks\": 4}},"
    "  {\"id\": \"blaise\",\"provider\": \"mock\", \"options\": {\"latency_ms\": 200, \"chunks\": 3, \"vote\": \"A\"}},"
    "  {\"id\": \"carl\",  \"provider\": \"mock\", \"options\": {\"latency_ms\": 80,  \"chunks\": 2, \"vote\": \"B\"}}],"
    " \"rounds\": ["
    "  {\"type\": \"independent_analysis\", \"name\": \"draft\"},"
    "  {\"type\": \"anonymized_peer_review\", \"name\": \"review\"},"
    "  {\"type\": \"vote\", \"name\": \"final_vote\"}],"
    " \"chair\": \"ada\","
    " \"limits\": {\"member_timeout_ms\": 5000, \"max_attempts\": 2, \"backoff_ms\": 50}}";

static void on_event(const council_event *ev, void *arg)
{
    (void)arg;
    printf("%3llu %-17s", (unsigned long long)ev->seq, council_event_type_name(ev->type));
    switch (ev->type) {
    case COUNCIL_EV_RUN_STARTED:
        printf(" run %.*s council %s input \"%.*s\"\n", (int)ev->run_id_len, ev->run_id,
               ev->council, (int)ev->input->text_len, ev->input->text);
        break;
    case COUNCIL_EV_ROUND_STARTED:
        printf(" %s #%d (%s)\n", ev->round_name, ev->round_idx, ev->round_type);
        break;
    case COUNCIL_EV_MEMBER_STARTED:
        printf(" %s / %s\n", ev->round_name, ev->member_id);
        break;
    case COUNCIL_EV_MEMBER_TOKEN:
        printf(" %s / %s: \"%.*s\"\n", ev->round_name, ev->member_id, (int)ev->chunk_len,
               ev->chunk);
        break;
    case COUNCIL_EV_MEMBER_COMPLETED: {
        const council_member_result *m = ev->member_result;
        printf(" %s / %s: %s after %u attempt(s)%s%s\n", ev->round_name, ev->member_id,
               m->ok ? "ok" : "error", m->attempts, m->ok ? "" : ": ",
               m->ok ? "" : m->error);
        break;
    }
    case COUNCIL_EV_TOOL_CALL_REQUEST:
    case COUNCIL_EV_TOOL_CALL_RESULT:
        printf(" %s / %s: %s(%.*s)%s%.*s\n", ev->round_name, ev->member_id, ev->tool->name,
               (int)ev->tool->arguments_len, ev->tool->arguments,
               ev->type == COUNCIL_EV_TOOL_CALL_RESULT ? " -> " : "",
               (int)ev->tool->result_len, ev->tool->result ? ev->tool->result : "");
        break;
    case COUNCIL_EV_ROUND_COMPLETED: {
        const council_round_result *r = ev->round_result;
        printf(" %s #%u", r->name, r->idx);
        if (r->aggregate_json)
            printf(" aggregate %s", r->aggregate_json);
        printf("\n");
        break;
    }
    case COUNCIL_EV_RUN_COMPLETED:
        printf(" final answer: %.*s\n", (int)ev->result->final_len, ev->result->final_text);
        break;
    case COUNCIL_EV_RUN_FAILED:
    case COUNCIL_EV_RUN_CANCELLED:
        for (size_t i = 0; i < ev->result->n_errors; i++)
            printf(" error: %s", ev->result->errors[i]);
        printf("\n");
        break;
    }
    fflush(stdout);
}

int main(void)
{
    council_ctx *ctx = council_ctx_new(NULL);
    if (!ctx) {
        fprintf(stderr, "native_demo: cannot create a context\n");
        return 1;
    }
    council_spec *spec;
    council_spec_error err;
    int rc = council_ctx_spec_from_json(ctx, SPEC, strlen(SPEC), &spec, &err);
    if (rc) {
        fprintf(stderr, "native_demo: spec: %s: %s: %s\n", council_strerror(rc),
                err.field, err.message);
        council_ctx_free(ctx);
        return 1;
    }
    const char *question = "Is a hot dog a sandwich?";
    council_start_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.spec = spec;
    opts.input.tag = "text";
    opts.input.data = question;
    opts.input.len = strlen(question);
    council_run *run;
    /* create, subscribe, then begin: no event can be missed */
    rc = council_run_create(ctx, &opts, &run);
    if (rc == 0)
        rc = council_run_subscribe(run, on_event, NULL, NULL, NULL);
    if (rc == 0)
        rc = council_run_begin(run);
    if (rc) {
        fprintf(stderr, "native_demo: %s\n", council_strerror(rc));
        council_spec_unref(spec);
        council_ctx_free(ctx);
        return 1;
    }
    council_ctx_run(ctx);
    council_status st = council_run_status(run);
    printf("status: %s\n", council_status_name(st));
    council_run_unref(run);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    return st == COUNCIL_COMPLETED ? 0 : 1;
}
