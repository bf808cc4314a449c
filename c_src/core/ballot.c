/* ballot.c - ballots: turning a member's text into a vote or a ranking,
 * and counting them (plurality, Borda count, a pairwise match).
 *
 * The parsing rule is fixed and documented in council.h ("vote/rank
 * parsing"): "VOTE:" then one label; "RANKING:" then labels separated by
 * '>' or ','. Ties always go to the lower label (the earlier member in the
 * spec), so a tally never depends on the order ballots arrived in.
 * Not for: which ballots a round collects or what its aggregate looks like
 * (rounds.h, engine.c).
 */
#include "council_internal.h"

#include <ctype.h>
#include <string.h>

static const char *find_bytes(const char *hay, size_t len, const char *needle)
{
    size_t nl = strlen(needle);
    if (nl > len)
        return NULL;
    for (size_t i = 0; i + nl <= len; i++)
        if (memcmp(hay + i, needle, nl) == 0)
            return hay + i;
    return NULL;
}

/* Read one label token at *p (letters and digits) and map it to an index of
 * labels, case-insensitively. Returns the index or -1. */
static long read_label(const char **p, const char *end, const char *const *labels,
                       size_t n)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    const char *t = s;
    while (t < end && isalnum((unsigned char)*t))
        t++;
    *p = t;
    size_t tl = (size_t)(t - s);
    if (tl == 0 || tl > 7)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (strlen(labels[i]) != tl)
            continue;
        size_t k = 0;
        while (k < tl && toupper((unsigned char)s[k]) == labels[i][k])
            k++;
        if (k == tl)
            return (long)i;
    }
    return -1;
}

int council_parse_vote(const char *text, size_t len, const char *const *labels,
                       size_t n, char *out, size_t outsz)
{
    if (!text || !labels || !out || outsz == 0)
        return COUNCIL_EINVAL;
    const char *v = find_bytes(text, len, "VOTE:");
    if (!v)
        return COUNCIL_EPARSE;
    const char *p = v + 5, *end = text + len;
    long i = read_label(&p, end, labels, n);
    if (i < 0 || strlen(labels[i]) >= outsz)
        return COUNCIL_EPARSE;
    strcpy(out, labels[i]);
    return COUNCIL_OK;
}

int council_parse_ranking(const char *text, size_t len,
                          const char *const *labels, size_t n, size_t *order,
                          size_t *count)
{
    if (!text || !labels || !order || !count)
        return COUNCIL_EINVAL;
    const char *r = find_bytes(text, len, "RANKING:");
    if (!r)
        return COUNCIL_EPARSE;
    const char *p = r + 8, *end = text + len;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol)
        end = eol;
    size_t c = 0;
    for (;;) {
        long i = read_label(&p, end, labels, n);
        if (i < 0)
            return COUNCIL_EPARSE;
        for (size_t k = 0; k < c; k++)
            if (order[k] == (size_t)i)
                return COUNCIL_EPARSE;
        order[c++] = (size_t)i;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
            p++;
        if (p >= end || *p == '.')
            break;
        if (*p != '>' && *p != ',')
            return COUNCIL_EPARSE;
        p++;
        if (c == n)
            return COUNCIL_EPARSE;
    }
    *count = c;
    return COUNCIL_OK;
}

/* ---------------------------------------------------------------- tallies */

size_t ballot_plurality(const long *choices, size_t n, size_t n_cand, int64_t *tally)
{
    for (size_t c = 0; c < n_cand; c++)
        tally[c] = 0;
    for (size_t i = 0; i < n; i++)
        if (choices[i] >= 0 && (size_t)choices[i] < n_cand)
            tally[choices[i]]++;
    size_t w = 0;
    for (size_t c = 1; c < n_cand; c++)
        if (tally[c] > tally[w])
            w = c;
    return w;
}

void ballot_borda(const size_t *const *orders, const size_t *lens, size_t n, size_t n_cand,
                  int64_t *score, size_t *order)
{
    for (size_t c = 0; c < n_cand; c++) {
        score[c] = 0;
        order[c] = c;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t p = 0; p < lens[i] && p < n_cand; p++)
            if (orders[i][p] < n_cand)
                score[orders[i][p]] += (int64_t)(n_cand - 1 - p);
    /* stable insertion sort: higher score first, ties keep label order */
    for (size_t a = 1; a < n_cand; a++)
        for (size_t b = a; b > 0 && score[order[b]] > score[order[b - 1]]; b--) {
            size_t tmp = order[b];
            order[b] = order[b - 1];
            order[b - 1] = tmp;
        }
}

size_t ballot_match(const long *choices, size_t n, size_t a, size_t b, int64_t *va,
                    int64_t *vb)
{
    *va = *vb = 0;
    for (size_t i = 0; i < n; i++) {
        if (choices[i] == (long)a)
            (*va)++;
        else if (choices[i] == (long)b)
            (*vb)++;
    }
    return *vb > *va ? b : a;
}
