/* event_term.h - council events and run data as Erlang terms.
 *
 * What it is for: the one place that turns the core's events, summaries
 * and results into the terms of docs/protocol.md ("Shapes" and "Events").
 * Only fixed atoms go out (tags, map keys of the result schema, statuses);
 * ids, names and texts are binaries.
 * What it is not for: sending. Callers put the encoded bytes in frames.
 *
 * All encoders append one term WITHOUT a version byte to x (ei_x_new) and
 * return 0, or -1 when out of memory.
 */
#ifndef CN_EVENT_TERM_H
#define CN_EVENT_TERM_H

#include <ei.h>

#include "council.h"

/* The event tuple, e.g. {round_started, RunId, RoundName, Idx}. The input
 * of run_started is spliced back as received when its tag is "etf". */
int cn_event_term(ei_x_buff *x, const council_event *ev);

/* The terminal event of a run that has ended (run_completed, run_failed
 * or run_cancelled as its status says), made from the run itself: for a
 * subscriber cut off after the core's queue had dropped that event. */
int cn_terminal_event_term(ei_x_buff *x, council_run *run);

/* The summary map (status as an atom, started_at in UTC microseconds,
 * current_round nil or #{name => Bin, idx => N}). */
int cn_summary_term(ei_x_buff *x, const council_summary *s);

/* The result map #{final, rounds, errors}. */
int cn_result_term(ei_x_buff *x, const council_result *r);

/* The errors list of a result: [Bin]. */
int cn_errors_term(ei_x_buff *x, const council_result *r);

/* What await/result answer for a run: {ok, Result} (completed),
 * {error, {failed, Errors, Result}}, {error, {cancelled, Result}}, or
 * {error, running} while it runs. */
int cn_outcome_term(ei_x_buff *x, const council_run *run);

/* A run's input as a term: the ETF bytes for tag "etf", else a binary. */
int cn_input_term(ei_x_buff *x, const council_input *in);

#endif
