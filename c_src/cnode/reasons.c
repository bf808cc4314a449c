/* reasons.c - see reasons.h. */
#include "reasons.h"

#include <stdio.h>

#include "council.h"

/* A lost node: what COUNCIL_EIO is, and what a call's {nodedown, _} reads as. */
#define NOCONNECTION "noconnection"

static const struct {
    int err;
    const char *reason;
} reasons[CN_N_REASONS] = {
    {COUNCIL_ELIMIT, "limit"},
    {COUNCIL_ENOMEM, "enomem"},
    {COUNCIL_EIO, NOCONNECTION},
    {COUNCIL_EEXIST, "already_started"},
    {COUNCIL_ENOTFOUND, "not_found"},
    {COUNCIL_EUNKNOWN_RUN, "unknown_run"},
    {COUNCIL_ERUNNER_DEAD, "runner_dead"},
};

static const cn_call_exit call_exits[CN_N_CALL_EXITS] = {
    {"normal", 0, "noproc"},
    {"nodedown", 2, NOCONNECTION},
};

int cn_reason_index(int err)
{
    for (int i = 0; i < CN_N_REASONS; i++)
        if (reasons[i].err == err)
            return i;
    return -1;
}

const char *cn_reason_name(int index)
{
    return reasons[index].reason;
}

const cn_call_exit *cn_call_exit_at(int index)
{
    return &call_exits[index];
}

static const char *const beam_who[] = {
    [CN_BEAM_PROVIDER] = "beam provider",
    [CN_BEAM_TOOL] = "beam tool",
    [CN_BEAM_ROUTER] = "beam router",
};

static const char *const beam_texts[][CN_N_BEAM_FAILURES] = {
    [CN_BEAM_PROVIDER] = {
        [CN_BEAM_NO_PROCESS] = "beam provider: the run has no process on this node",
        [CN_BEAM_NO_SERVER] = "beam provider: this run has no member server (none was given "
                              "at start, or it went down)",
        [CN_BEAM_UNREACHABLE] = "beam provider: member server not reachable",
        [CN_BEAM_MALFORMED] = "beam provider: malformed reply from the member server",
    },
    [CN_BEAM_TOOL] = {
        [CN_BEAM_NO_PROCESS] = "beam tool: the run has no process on this node (Elixir "
                               "function tools are served for runs the library starts, not "
                               "inside a sub-council)",
        [CN_BEAM_NO_SERVER] = "beam tool: this run has no member server (none was given at "
                              "start, or it went down)",
        [CN_BEAM_UNREACHABLE] = "beam tool: member server not reachable",
        [CN_BEAM_MALFORMED] = "beam tool: malformed reply from the member server",
    },
    [CN_BEAM_ROUTER] = {
        [CN_BEAM_NO_PROCESS] = "beam router: the run has no process on this node (Elixir "
                               "routers are served for runs the library starts, not inside "
                               "a sub-council)",
        [CN_BEAM_NO_SERVER] = "beam router: this run has no member server (none was given "
                              "at start, or it went down)",
        [CN_BEAM_UNREACHABLE] = "beam router: member server not reachable",
        [CN_BEAM_MALFORMED] = "beam router: malformed reply from the member server",
        [CN_BEAM_NOT_IDS] = "beam router: the reply is not {ok, [MemberId]}",
        [CN_BEAM_TOO_MANY_IDS] = "beam router: more member ids than a council has",
        [CN_BEAM_IDS_NOT_BINARIES] = "beam router: member ids must be binaries",
    },
};

const char *cn_beam_failure_text(cn_beam_kind kind, cn_beam_failure failure)
{
    return beam_texts[kind][failure];
}

void cn_beam_server_down_text(char *msg, size_t n, cn_beam_kind kind, const char *why)
{
    snprintf(msg, n, "%s: member server down: %s", beam_who[kind], why);
}
