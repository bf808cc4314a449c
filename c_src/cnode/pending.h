/* pending.h - a table of entries by a 64-bit id, each with an item and an
 * owner: the requests of runs waiting for a BEAM reply, by the id sent
 * with each (the beam provider's member calls, beam_provider.c; the beam
 * tool handler's tool calls, beam_tools.c; one table per module), and the
 * index of ended runs' pids (retained.c).
 *
 * Owns its entries, not what they hold: an entry carries an `item` (whose
 * reference, if any, its user keeps) and an `owner` (for the requests: the
 * run's process record, whose replies they wait for). Ids are unique in a
 * table (the core numbers calls and tool calls per context; pids are never
 * reused). Chained buckets, a power of two of them, grown when there are
 * more entries than buckets; a table that cannot grow still takes entries.
 * Loop thread only.
 */
#ifndef CN_PENDING_H
#define CN_PENDING_H

#include <stddef.h>
#include <stdint.h>

typedef struct cn_pending cn_pending;

typedef struct cn_pending_entry {
    struct cn_pending_entry *next; /* bucket chain; then the detached list */
    uint64_t id;
    void *item;
    const void *owner;
} cn_pending_entry;

/* An empty table; NULL when out of memory. */
cn_pending *cn_pending_new(void);
/* Frees the table and the entries still in it (not their items: detach
 * them first to release those). NULL is a no-op. */
void cn_pending_free(cn_pending *t);

/* Adds (id, item, owner). 0, or -1 when out of memory (nothing added). */
int cn_pending_add(cn_pending *t, uint64_t id, void *item, const void *owner);
/* The entry of id, or NULL; it stays in the table. */
cn_pending_entry *cn_pending_find(const cn_pending *t, uint64_t id);
/* Removes the entry of id and returns its item (NULL when there is none). */
void *cn_pending_take(cn_pending *t, uint64_t id);
/* Removes every entry of owner (every entry when owner is NULL) and returns
 * them as a list linked by next, in the order of their ids. Free each with
 * cn_pending_entry_free once its item is dealt with: the table may change
 * meanwhile (an answer may make the core abandon other requests). */
cn_pending_entry *cn_pending_detach(cn_pending *t, const void *owner);
/* Frees a detached entry; returns the next one of its list. */
cn_pending_entry *cn_pending_entry_free(cn_pending_entry *e);

size_t cn_pending_count(const cn_pending *t);

#endif
