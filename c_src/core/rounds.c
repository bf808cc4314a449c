/* rounds.c - the round kinds table (see rounds.h). */
#include "rounds.h"

#include <string.h>

static const round_kind kinds[RT__COUNT] = {
    [RT_INDEPENDENT] = {"independent_analysis", "Answer the input.", VIEW_INPUT, false,
                        YIELD_ANSWER},
    [RT_PEER_REVIEW] = {"peer_review",
                        "Review the other members' answers, then give your improved answer.",
                        VIEW_OTHERS, false, YIELD_ANSWER},
    [RT_ANON_PEER_REVIEW] = {"anonymized_peer_review",
                             "Review the other answers (labelled), then give your improved "
                             "answer.",
                             VIEW_OTHERS, true, YIELD_ANSWER},
    [RT_CRITIQUE] = {"critique",
                     "Critique the answers: point out errors, gaps and weak reasoning.",
                     VIEW_ALL, false, YIELD_CRITIQUE},
    [RT_RANKING] = {"ranking",
                    "Rank the answers from best to worst. End with a line "
                    "'RANKING: <label> > <label> > ...'.",
                    VIEW_CANDIDATES, true, YIELD_RANKING},
    [RT_VOTE] = {"vote", "Vote for the best answer. End with a line 'VOTE: <label>'.",
                 VIEW_CANDIDATES, true, YIELD_VOTE},
    [RT_ITERATE] = {"iterate", "", VIEW_NESTED, false, YIELD_NESTED},
    [RT_PAIRWISE] = {"pairwise_elimination",
                     "Two answers compete. Reply with 'VOTE: <label>' for the better one.",
                     VIEW_MATCH, true, YIELD_BRACKET},
    [RT_SYNTHESIS] = {"synthesis", "Write the final answer from the answers given.", VIEW_ALL,
                      false, YIELD_ANSWER, true, true},
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
