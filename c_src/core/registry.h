/* registry.h - run_id -> value maps, one per named registry (namespace).
 *
 * What it is for: O(1) lookup of runs by id at a million entries (one
 * memory latency for a hit on its home slot: two cache lines of the table,
 * asked for together, hold the key, the value and a mark word; the value
 * is not read; see registry.c), with keys
 * hashed by libsodium's crypto_shorthash (SipHash-2-4) under a random key
 * drawn once per registry object, so chosen ids cannot force collisions.
 * What it is not for: knowing what a run is. Values are opaque pointers; the
 * caller owns them. Retention of finished runs is the run engine's job: it
 * calls registry_remove when the window ends.
 *
 * Not thread-safe: used from the loop thread only.
 */
#ifndef COUNCIL_REGISTRY_H
#define COUNCIL_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

typedef struct registry registry;

/* Create an empty registry set. max_entries bounds the total over all
 * namespaces (0 = no bound). Returns NULL when out of memory. */
registry *registry_new(size_t max_entries);

/* Free the set and its tables. Values are not touched: remove and free them
 * first (see registry_foreach). NULL is a no-op. */
void registry_free(registry *r);

/* Insert key -> value in namespace ns. Key bytes are copied; value is
 * borrowed. Returns 0, or a negative council_err:
 *   COUNCIL_EEXIST  key already present in that namespace (nothing changed)
 *   COUNCIL_ELIMIT  max_entries reached
 *   COUNCIL_ENOMEM  allocation failed (nothing changed)
 *   COUNCIL_EINVAL  empty key, or key/ns longer than 64 KiB */
int registry_put(registry *r, const char *ns, size_t ns_len,
                 const void *key, size_t key_len, void *value);

/* registry_put without the copy of a long key: a key of up to 48 bytes is
 * held in the table either way; a longer one is not copied, the entry
 * points at the caller's bytes, which must stay unchanged until the entry
 * is removed or the registry freed (the run engine passes the run's own
 * id, which outlives its registration). Same returns as registry_put. */
int registry_put_ref(registry *r, const char *ns, size_t ns_len,
                     const void *key, size_t key_len, void *value);

/* Value for key in ns, or NULL when absent. O(1) expected. */
void *registry_get(const registry *r, const char *ns, size_t ns_len,
                   const void *key, size_t key_len);

/* registry_get that also gives the entry's mark (*mark = 0 when absent).
 * The mark is read from the table, not from the value. */
void *registry_get_mark(const registry *r, const char *ns, size_t ns_len,
                        const void *key, size_t key_len, uint64_t *mark);

/* Sets the mark of the entry (ns, key): a word of the caller's kept in the
 * entry's slot (0 when put), for what a lookup must answer without reading
 * the value (the run engine: whether the run has ended). Returns 0,
 * COUNCIL_ENOTFOUND (no such entry) or COUNCIL_EINVAL (bad arguments). */
int registry_set_mark(registry *r, const char *ns, size_t ns_len,
                      const void *key, size_t key_len, uint64_t mark);

/* Remove key from ns and return its value (NULL when absent). */
void *registry_remove(registry *r, const char *ns, size_t ns_len,
                      const void *key, size_t key_len);

/* Number of entries, all namespaces together. */
size_t registry_count(const registry *r);

/* Bytes the registry holds: its tables (some mmap'ed, which malloc's
 * statistics do not see), copied keys and namespace names. For benchmarks
 * and monitoring. */
size_t registry_bytes(const registry *r);
/* The part of registry_bytes that is mmap'ed (large tables). */
size_t registry_mapped_bytes(const registry *r);

/* Tests only: fn replaces the keyed hash of every key (set it while the
 * registry is empty). In the first namespace named, an entry's hash is
 * then exactly fn's (its top bits choose the home slot), so a test can make
 * keys collide, share a fingerprint or wrap around the table's end. */
void registry_set_test_hash(registry *r, uint64_t (*fn)(const void *key, size_t len));

/* Call fn(ns, ns_len, key, key_len, value, arg) for every entry; fn may not
 * modify the registry. Stops early when fn returns non-zero. */
void registry_foreach(const registry *r,
                      int (*fn)(const char *ns, size_t ns_len,
                                const void *key, size_t key_len,
                                void *value, void *arg),
                      void *arg);

#endif
