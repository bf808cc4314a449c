/* rounds.h - the round kinds: one entry per round type saying what a
 * member of that round is shown, what it is asked, and what its replies
 * become. The engine (engine.c) walks rounds and calls members; the table
 * below decides everything that differs from one type to another.
 *
 * Adding a round type: a value in round_type (council_internal.h), its row
 * in rounds.c (name, instructions, view, yield), and, when its yield is new,
 * the tally in ballot.c and the branch of engine.c's round_yield that turns
 * the tally into the round's aggregate; docs/spec-format.md describes it.
 */
#ifndef COUNCIL_ROUNDS_H
#define COUNCIL_ROUNDS_H

#include "council_internal.h"

/* What a member of the round sees besides the input. */
typedef enum round_view {
    VIEW_INPUT,       /* the input only */
    VIEW_OTHERS,      /* the other members' latest answers, and its own previous one */
    VIEW_ALL,         /* every latest answer, by member id */
    VIEW_CANDIDATES,  /* every latest answer, by label (the ballot's candidates) */
    VIEW_MATCH,       /* the two answers of its match, by label */
    VIEW_NESTED       /* iterate: no members of its own */
} round_view;

/* What the replies become. */
typedef enum round_yield {
    YIELD_ANSWER,     /* each member's latest answer; the round's text is the first */
    YIELD_CRITIQUE,   /* critiques, shown to the next round */
    YIELD_VOTE,       /* a "VOTE:" ballot each, tallied by plurality */
    YIELD_RANKING,    /* a "RANKING:" ballot each, tallied by Borda count */
    YIELD_BRACKET,    /* "VOTE:" ballots per match, winners meet until one is left */
    YIELD_NESTED      /* iterate: its rounds' */
} round_yield;

typedef struct round_kind {
    const char *name;          /* the spec's "type" */
    const char *instructions;  /* unless the round's options give its own */
    round_view view;
    bool by_label;             /* answers shown by label instead of member id */
    round_yield yield;
    bool one_member;           /* only the chair (or the named member) takes part */
    bool shows_previous_round; /* the last round's name, type and aggregate too */
} round_kind;

/* The kind of a type (never NULL for a valid type). */
const round_kind *round_kind_of(round_type t);
/* The type named s: 0 and *out, or -1. */
int round_type_parse(const char *s, round_type *out);

#endif
