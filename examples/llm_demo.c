/* llm_demo.c - a council of real models through the native C API.
 *
 *   llm_demo [--spec FILE] [QUESTION]
 *
 * With --spec, the council is the JSON spec in FILE (docs/spec-format.md).
 * Without it, one member per provider whose key is in the environment:
 *   OPENAI_API_KEY      openai     model $OPENAI_MODEL     (gpt-4o-mini)
 *   ANTHROPIC_API_KEY   anthropic  model $ANTHROPIC_MODEL  (claude-3-5-haiku-latest)
 *   GEMINI_API_KEY      gemini     model $GEMINI_MODEL     (gemini-2.0-flash)
 *   OPENROUTER_API_KEY  openrouter model $OPENROUTER_MODEL (openai/gpt-4o-mini)
 *   OLLAMA_BASE_URL     ollama     model $OLLAMA_MODEL     (llama3.2), e.g.
 *                       http://127.0.0.1:11434/v1
 * and $<PROVIDER>_BASE_URL (OPENAI_BASE_URL, ...) for a proxy or a
 * compatible server.
 * Several members answer, review each other anonymously and vote; the
 * first is the chair. Tokens are printed as they stream in, then each
 * member's usage and the final answer. The keys stay in the environment:
 * the spec only names the variables.
 */
#include <council.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct preset {
    const char *id, *provider, *key_env, *model_env, *model, *base_env;
} preset;

static const preset presets[] = {
    {"gpt", "openai", "OPENAI_API_KEY", "OPENAI_MODEL", "gpt-4o-mini", "OPENAI_BASE_URL"},
    {"claude", "anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "claude-3-5-haiku-latest",
     "ANTHROPIC_BASE_URL"},
    {"gemini", "gemini", "GEMINI_API_KEY", "GEMINI_MODEL", "gemini-2.0-flash",
     "GEMINI_BASE_URL"},
    {"router", "openrouter", "OPENROUTER_API_KEY", "OPENROUTER_MODEL", "openai/gpt-4o-mini",
     "OPENROUTER_BASE_URL"},
    {"local", "ollama", "OLLAMA_BASE_URL", "OLLAMA_MODEL", "llama3.2", "OLLAMA_BASE_URL"},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A spec with a member per provider present; NULL when none is. The text
 * values come from the environment, so they go through the JSON builder. */
static council_spec *spec_from_env(int *n_members)
{
    council_spec *spec = council_spec_new("demo:real_models");
    *n_members = 0;
    const char *chair = NULL;
    for (size_t i = 0; spec && i < N_PRESETS; i++) {
        const preset *p = &presets[i];
        if (!env(p->key_env))
            continue;
        const char *model = env(p->model_env) ? env(p->model_env) : p->model;
        const char *base = env(p->base_env);
        char opts[1024];
        int n = snprintf(opts, sizeof opts, "{\"model\":\"%s\"", model);
        if (base)
            n += snprintf(opts + n, sizeof opts - (size_t)n, ",\"base_url\":\"%s\"", base);
        if (strcmp(p->provider, "ollama") != 0)
            n += snprintf(opts + n, sizeof opts - (size_t)n, ",\"api_key_env\":\"%s\"",
                          p->key_env);
        n += snprintf(opts + n, sizeof opts - (size_t)n, "}");
        if ((size_t)n >= sizeof opts || strpbrk(model, "\"\\") ||
            (base && strpbrk(base, "\"\\"))) {
            fprintf(stderr, "llm_demo: %s or %s not usable here\n", p->model_env, p->base_env);
            continue;
        }
        if (council_spec_add_member(spec, p->id, p->provider, opts) == COUNCIL_OK) {
            (*n_members)++;
            if (!chair)
                chair = p->id;
        }
    }
    if (!spec || *n_members == 0) {
        council_spec_unref(spec);
        return NULL;
    }
    council_spec_add_round(spec, "independent_analysis", "answer", NULL);
    if (*n_members > 1) {
        council_spec_add_round(spec, "anonymized_peer_review", "review", NULL);
        council_spec_add_round(spec, "vote", "vote", NULL);
        council_spec_set_chair(spec, chair);
    }
    council_limits lim = {.member_timeout_ms = 120000, .max_attempts = 3, .backoff_ms = 1000};
    council_spec_set_limits(spec, &lim);
    return spec;
}

static council_spec *spec_from_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[65536];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n > cap) {
            cap = (len + n) * 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    council_spec *spec = NULL;
    council_spec_error err;
    int rc = council_spec_from_json(buf ? buf : "", len, &spec, &err);
    free(buf);
    if (rc) {
        fprintf(stderr, "llm_demo: %s: %s: %s: %s\n", path, council_strerror(rc), err.field,
                err.message);
        return NULL;
    }
    return spec;
}

/* Interleaved streams stay readable: a member's tokens run on, and a
 * prefix marks each switch from one member to another. */
static char last_member[64];

static void usage_line(const council_usage *u)
{
    printf("%llu in / %llu out tokens", (unsigned long long)u->input_tokens,
           (unsigned long long)u->output_tokens);
    if (u->has_cost)
        printf(", cost %.6f", u->cost);
}

static void on_event(const council_event *ev, void *arg)
{
    (void)arg;
    switch (ev->type) {
    case COUNCIL_EV_ROUND_STARTED:
        printf("%s== round %s (%s)\n", last_member[0] ? "\n" : "", ev->round_name,
               ev->round_type);
        last_member[0] = 0;
        break;
    case COUNCIL_EV_MEMBER_TOKEN:
        if (strcmp(last_member, ev->member_id) != 0) {
            printf("%s  %s> ", last_member[0] ? "\n" : "", ev->member_id);
            snprintf(last_member, sizeof last_member, "%s", ev->member_id);
        }
        fwrite(ev->chunk, 1, ev->chunk_len, stdout);
        break;
    case COUNCIL_EV_TOOL_CALL_REQUEST:
        printf("\n  %s calls %s(%.*s)\n", ev->member_id, ev->tool->name,
               (int)ev->tool->arguments_len, ev->tool->arguments);
        last_member[0] = 0;
        break;
    case COUNCIL_EV_MEMBER_COMPLETED: {
        const council_member_result *m = ev->member_result;
        printf("%s  [%s done: ", last_member[0] ? "\n" : "", ev->member_id);
        if (m->ok)
            usage_line(&m->usage);
        else
            printf("%s error: %s", m->error_kind ? m->error_kind : "", m->error);
        printf("]\n");
        last_member[0] = 0;
        break;
    }
    case COUNCIL_EV_ROUND_COMPLETED:
        if (ev->round_result->aggregate_json)
            printf("  tally: %s\n", ev->round_result->aggregate_json);
        break;
    case COUNCIL_EV_RUN_COMPLETED:
        printf("\n== final answer\n%.*s\n\n== usage: ", (int)ev->result->final_len,
               ev->result->final_text ? ev->result->final_text : "");
        usage_line(&ev->result->usage);
        printf("\n");
        break;
    case COUNCIL_EV_RUN_FAILED:
    case COUNCIL_EV_RUN_CANCELLED:
        printf("\n== run %s\n", council_event_type_name(ev->type));
        for (size_t i = 0; i < ev->result->n_errors; i++)
            printf("  %s\n", ev->result->errors[i]);
        break;
    default:
        break;
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *spec_path = NULL;
    const char *question = "In two sentences: why is the sky blue?";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--spec") == 0 && i + 1 < argc)
            spec_path = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: llm_demo [--spec FILE] [QUESTION]\n");
            return 0;
        } else
            question = argv[i];
    }
    int n_members = 0;
    council_spec *spec = spec_path ? spec_from_file(spec_path) : spec_from_env(&n_members);
    if (!spec) {
        if (spec_path)
            return 1;
        printf("llm_demo: no model provider is configured. Set one or more of:\n");
        for (size_t i = 0; i < N_PRESETS; i++)
            printf("  %-19s (%s member; model from %s, default %s)\n", presets[i].key_env,
                   presets[i].provider, presets[i].model_env, presets[i].model);
        printf("then run `make demo-llm` again. `make demo` runs a council of mock "
               "members with no key.\n");
        return 0;
    }
    council_ctx *ctx = council_ctx_new(NULL);
    council_spec_error err;
    int rc = ctx ? council_spec_validate(spec, &err) : COUNCIL_ENOMEM;
    if (rc) {
        fprintf(stderr, "llm_demo: %s: %s %s\n", council_strerror(rc), err.field, err.message);
        council_spec_unref(spec);
        council_ctx_free(ctx);
        return 1;
    }
    printf("council %s, %zu member(s); question: %s\n", council_spec_id(spec),
           council_spec_member_count(spec), question);
    council_start_opts o = {.spec = spec,
                            .input = {.tag = "text", .data = question, .len = strlen(question)}};
    council_run *run = NULL;
    rc = council_run_create(ctx, &o, &run);
    if (!rc)
        rc = council_run_subscribe(run, on_event, NULL, NULL, NULL);
    if (!rc)
        rc = council_run_begin(run);
    if (rc) {
        fprintf(stderr, "llm_demo: %s\n", council_strerror(rc));
        council_run_unref(run);
        council_spec_unref(spec);
        council_ctx_free(ctx);
        return 1;
    }
    council_ctx_run(ctx);
    council_status st = council_run_status(run);
    council_run_unref(run);
    council_spec_unref(spec);
    council_ctx_free(ctx);
    return st == COUNCIL_COMPLETED ? 0 : 1;
}
