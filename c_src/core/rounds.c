/* rounds.c - the round kinds table (see rounds.h). */
#include "rounds.h"

#include <string.h>

static const round_kind kinds[RT__COUNT] = {
    [RT_INDEPENDENT] = {.name = "independent_analysis",
                        .instructions = "Answer the input.",
                        .view = VIEW_INPUT,
                        .yield = YIELD_ANSWER},
    [RT_PEER_REVIEW] = {.name = "peer_review",
                        .instructions = "Review the other members' answers, then give your "
                                        "improved answer.",
                        .view = VIEW_OTHERS,
                        .yield = YIELD_ANSWER},
    [RT_ANON_PEER_REVIEW] = {.name = "anonymized_peer_review",
                             .instructions = "Review the other answers (labelled), then give "
                                             "your improved answer.",
                             .view = VIEW_OTHERS,
                             .by_label = true,
                             .yield = YIELD_ANSWER},
    [RT_CRITIQUE] = {.name = "critique",
                     .instructions = "Critique the answers: point out errors, gaps and weak "
                                     "reasoning.",
                     .view = VIEW_ALL,
                     .yield = YIELD_CRITIQUE},
    [RT_RANKING] = {.name = "ranking",
                    .instructions = "Rank the answers from best to worst. End with a line "
                                    "'RANKING: <label> > <label> > ...'.",
                    .view = VIEW_CANDIDATES,
                    .by_label = true,
                    .yield = YIELD_RANKING},
    [RT_VOTE] = {.name = "vote",
                 .instructions = "Vote for the best answer. End with a line 'VOTE: <label>'.",
                 .view = VIEW_CANDIDATES,
                 .by_label = true,
                 .yield = YIELD_VOTE},
    [RT_ITERATE] = {.name = "iterate", .instructions = "", .view = VIEW_NESTED,
                    .yield = YIELD_NESTED},
    [RT_PAIRWISE] = {.name = "pairwise_elimination",
                     .instructions = "Two answers compete. Reply with 'VOTE: <label>' for the "
                                     "better one.",
                     .view = VIEW_MATCH,
                     .by_label = true,
                     .yield = YIELD_BRACKET},
    [RT_SYNTHESIS] = {.name = "synthesis",
                      .instructions = "Write the final answer from the answers given.",
                      .view = VIEW_ALL,
                      .yield = YIELD_ANSWER,
                      .one_member = true,
                      .shows_previous_round = true},
};

const round_kind *round_kind_of(round_type t)
{
    return (unsigned)t < RT__COUNT ? &kinds[t] : NULL;
}

const char *round_type_name(round_type t)
{
    return (unsigned)t < RT__COUNT ? kinds[t].name : "unknown";
}

int round_type_parse(const char *s, round_type *out)
{
    for (int i = 0; i < RT__COUNT; i++)
        if (strcmp(s, kinds[i].name) == 0) {
            *out = (round_type)i;
            return 0;
        }
    return -1;
}
