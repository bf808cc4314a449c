/* registry.c - run_id -> value maps, one namespace per named registry.
 *
 * What it is for: the lookup of runs by id that must stay O(1) at a million
 * entries. What it is not for: knowing what a value is or when it expires.
 *
 * Layout. One chained hash table holds the entries of every namespace; an
 * entry is keyed by (namespace id, key bytes). Namespace names are interned
 * in a small table of their own, so an entry carries a 32-bit id instead of
 * the name. The table size is a power of two; it doubles when the load
 * reaches 1 and shrinks (to a load of 1/4..1/2) when the load drops under
 * 1/8. Resizing is incremental, in the manner of Redis's dict.c: while a
 * resize is in progress two tables exist, every put/remove moves a few
 * buckets from the old to the new one, and lookups search both. No single
 * insert pays for a whole rehash.
 *
 * Hashing. Keys go through crypto_shorthash (SipHash-2-4) under a key drawn
 * from randombytes_buf once per registry object; the namespace id is then
 * mixed into the 64-bit result. Ids chosen by a client cannot be made to
 * collide without knowing the key.
 *
 * Memory. Per entry: one allocation of 40 bytes of header, plus the key
 * bytes when they are copied (registry_put: one malloc chunk of 80 bytes
 * for a 36-byte UUID; registry_put_ref, which points at the caller's bytes:
 * 48), and 8 to 16 bytes of bucket array while growing (load 1/2..1).
 */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "council.h"

#define REGISTRY_MAX_KEY ((size_t)64 * 1024)
#define REGISTRY_MAX_NS 65536u          /* distinct namespace names */
#define REGISTRY_MIN_BUCKETS 16u
#define REHASH_STEP 16u                 /* buckets moved per put/remove */
#define NS_SCAN_MAX 4u                  /* namespaces found by a plain scan */

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    void *value;
    const unsigned char *key;   /* copy[] or the caller's bytes */
    uint32_t ns;
    uint32_t key_len;
    unsigned char copy[];       /* the key, when registry_put copied it */
} entry;

typedef struct table {
    entry **buckets;
    size_t mask;        /* size - 1; size is 0 when buckets is NULL */
    size_t used;
} table;

typedef struct ns_name {
    char *name;
    size_t len;
    uint64_t hash;
} ns_name;

struct registry {
    table t[2];             /* t[1] is live only while resizing */
    size_t rehash_idx;      /* next bucket of t[0] to move; SIZE_MAX = idle */
    size_t count;
    size_t max_entries;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];

    /* Interned namespaces: names[id]; ns_index is open addressing over
     * ids + 1 (0 = empty slot), size a power of two, load <= 1/2. */
    ns_name *names;
    uint32_t ns_count, ns_cap;
    uint32_t *ns_index;
    uint32_t ns_index_mask;
};

static uint64_t hash_bytes(const registry *r, const void *p, size_t n)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h;

    crypto_shorthash(out, (const unsigned char *)p, (unsigned long long)n,
                     r->hash_key);
    memcpy(&h, out, sizeof h);
    return h;
}

/* Mix the namespace id into a key hash: a bijection of h for a fixed ns, so
 * the keyed hash's collision resistance is kept within a namespace. */
static uint64_t entry_hash(uint64_t key_hash, uint32_t ns)
{
    uint64_t m = ((uint64_t)ns + 1) * 0x9E3779B97F4A7C15ull;
    return key_hash ^ m ^ (m >> 29);
}

static int rehashing(const registry *r)
{
    return r->rehash_idx != SIZE_MAX;
}

/* ------------------------------------------------------------ namespaces */

/* Namespace id for (name, len), or -1 when it was never interned. With a
 * handful of namespaces (the usual case: one) a scan of the names is
 * cheaper than hashing the name on every lookup. */
static int64_t ns_lookup(const registry *r, const char *name, size_t len)
{
    uint64_t h;
    size_t i;

    if (r->ns_count <= NS_SCAN_MAX) {
        for (i = 0; i < r->ns_count; i++) {
            const ns_name *n = &r->names[i];

            if (n->len == len && memcmp(n->name, name, len) == 0)
                return (int64_t)i;
        }
        return -1;
    }
    h = hash_bytes(r, name, len);
    for (i = (size_t)h & r->ns_index_mask;; i = (i + 1) & r->ns_index_mask) {
        uint32_t slot = r->ns_index[i];
        const ns_name *n;

        if (slot == 0)
            return -1;
        n = &r->names[slot - 1];
        if (n->hash == h && n->len == len && memcmp(n->name, name, len) == 0)
            return (int64_t)(slot - 1);
    }
}

static void ns_index_insert(uint32_t *index, uint32_t mask, uint64_t h,
                            uint32_t id)
{
    size_t i = (size_t)h & mask;

    while (index[i] != 0)
        i = (i + 1) & mask;
    index[i] = id + 1;
}

/* Intern a namespace name. Returns its id, or a negative council_err. */
static int64_t ns_intern(registry *r, const char *name, size_t len)
{
    int64_t id = ns_lookup(r, name, len);
    uint64_t h;
    ns_name *n;

    if (id >= 0)
        return id;
    h = hash_bytes(r, name, len);
    if (r->ns_count >= REGISTRY_MAX_NS)
        return COUNCIL_ELIMIT;

    if (r->ns_count == r->ns_cap) {
        uint32_t cap = r->ns_cap ? r->ns_cap * 2 : 4;
        ns_name *names = realloc(r->names, cap * sizeof *names);

        if (names == NULL)
            return COUNCIL_ENOMEM;
        r->names = names;
        r->ns_cap = cap;
    }
    if ((size_t)(r->ns_count + 1) * 2 > (size_t)r->ns_index_mask + 1 ||
        r->ns_index == NULL) {
        uint32_t size = r->ns_index ? (r->ns_index_mask + 1) * 2 : 8;
        uint32_t *index = calloc(size, sizeof *index);
        uint32_t i;

        if (index == NULL)
            return COUNCIL_ENOMEM;
        for (i = 0; i < r->ns_count; i++)
            ns_index_insert(index, size - 1, r->names[i].hash, i);
        free(r->ns_index);
        r->ns_index = index;
        r->ns_index_mask = size - 1;
    }

    n = &r->names[r->ns_count];
    n->name = malloc(len ? len : 1);
    if (n->name == NULL)
        return COUNCIL_ENOMEM;
    memcpy(n->name, name, len);
    n->len = len;
    n->hash = h;
    ns_index_insert(r->ns_index, r->ns_index_mask, h, r->ns_count);
    return (int64_t)r->ns_count++;
}

/* ------------------------------------------------------------ tables */

static int table_init(table *t, size_t size)
{
    t->buckets = calloc(size, sizeof *t->buckets);
    if (t->buckets == NULL)
        return COUNCIL_ENOMEM;
    t->mask = size - 1;
    t->used = 0;
    return 0;
}

static size_t table_size(const table *t)
{
    return t->buckets ? t->mask + 1 : 0;
}

/* Move up to n non-empty buckets of t[0] into t[1] (visiting at most 10n
 * empty ones); finish the resize when t[0] is empty. */
static void rehash_step(registry *r, size_t n)
{
    size_t empty_visits = n * 10;

    if (!rehashing(r))
        return;
    while (n-- > 0 && r->t[0].used > 0) {
        entry *e, *next;

        while (r->t[0].buckets[r->rehash_idx] == NULL) {
            r->rehash_idx++;
            if (--empty_visits == 0)
                return;
        }
        for (e = r->t[0].buckets[r->rehash_idx]; e != NULL; e = next) {
            size_t b = (size_t)e->hash & r->t[1].mask;

            next = e->next;
            e->next = r->t[1].buckets[b];
            r->t[1].buckets[b] = e;
            r->t[0].used--;
            r->t[1].used++;
        }
        r->t[0].buckets[r->rehash_idx] = NULL;
        r->rehash_idx++;
    }
    if (r->t[0].used == 0) {
        free(r->t[0].buckets);
        r->t[0] = r->t[1];
        memset(&r->t[1], 0, sizeof r->t[1]);
        r->rehash_idx = SIZE_MAX;
    }
}

/* Start a resize to `size` buckets when none is in progress. A failed
 * allocation only postpones growth: the table keeps working, longer chains. */
static void resize_start(registry *r, size_t size)
{
    if (rehashing(r) || size == table_size(&r->t[0]))
        return;
    if (table_init(&r->t[1], size) != 0)
        return;
    r->rehash_idx = 0;
}

static void maybe_resize(registry *r)
{
    size_t size = table_size(&r->t[0]);

    if (rehashing(r))
        return;
    if (r->count >= size && size <= SIZE_MAX / 2 / sizeof(entry *))
        resize_start(r, size * 2);
    else if (size > REGISTRY_MIN_BUCKETS && r->count < size / 8) {
        /* straight to a load of 1/4..1/2: a bulk removal shrinks in one
         * resize, not in a cascade of halvings */
        size_t target = REGISTRY_MIN_BUCKETS;

        while (target < r->count * 2)
            target *= 2;
        resize_start(r, target);
    }
}

/* Link pointing at the entry (ns, key), or NULL. *which gets the index of
 * the table it lies in. */
static entry **find_link(const registry *r, uint64_t h, uint32_t ns,
                         const void *key, size_t key_len, int *which)
{
    int i;

    for (i = 0; i < 2; i++) {
        const table *t = &r->t[i];
        entry **link;

        if (t->buckets == NULL)
            continue;
        for (link = &t->buckets[(size_t)h & t->mask]; *link != NULL;
             link = &(*link)->next) {
            const entry *e = *link;

            if (e->hash == h && e->ns == ns && e->key_len == key_len &&
                memcmp(e->key, key, key_len) == 0) {
                if (which != NULL)
                    *which = i;
                return link;
            }
        }
        if (!rehashing(r))
            break;
    }
    return NULL;
}

/* ------------------------------------------------------------ public API */

registry *registry_new(size_t max_entries)
{
    registry *r;

    if (sodium_init() < 0)
        return NULL;
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    if (table_init(&r->t[0], REGISTRY_MIN_BUCKETS) != 0) {
        free(r);
        return NULL;
    }
    r->rehash_idx = SIZE_MAX;
    r->max_entries = max_entries;
    randombytes_buf(r->hash_key, sizeof r->hash_key);
    return r;
}

void registry_free(registry *r)
{
    int i;
    uint32_t n;

    if (r == NULL)
        return;
    for (i = 0; i < 2; i++) {
        size_t b, size = table_size(&r->t[i]);

        for (b = 0; b < size; b++) {
            entry *e = r->t[i].buckets[b], *next;

            for (; e != NULL; e = next) {
                next = e->next;
                free(e);
            }
        }
        free(r->t[i].buckets);
    }
    for (n = 0; n < r->ns_count; n++)
        free(r->names[n].name);
    free(r->names);
    free(r->ns_index);
    sodium_memzero(r->hash_key, sizeof r->hash_key);
    free(r);
}

/* Checks the arguments and maps a NULL, empty namespace to "". */
static int args_ok(const char **ns, size_t ns_len, const void *key,
                   size_t key_len)
{
    if (key == NULL || key_len == 0 || key_len > REGISTRY_MAX_KEY ||
        ns_len > REGISTRY_MAX_KEY)
        return 0;
    if (*ns == NULL) {
        if (ns_len != 0)
            return 0;
        *ns = "";
    }
    return 1;
}

static int put(registry *r, const char *ns, size_t ns_len, const void *key,
               size_t key_len, void *value, int copy_key)
{
    int64_t ns_id;
    uint64_t h;
    entry *e;
    table *t;
    size_t b;

    if (r == NULL || !args_ok(&ns, ns_len, key, key_len))
        return COUNCIL_EINVAL;

    rehash_step(r, REHASH_STEP);

    ns_id = ns_intern(r, ns, ns_len);
    if (ns_id < 0)
        return (int)ns_id;
    h = entry_hash(hash_bytes(r, key, key_len), (uint32_t)ns_id);
    if (find_link(r, h, (uint32_t)ns_id, key, key_len, NULL) != NULL)
        return COUNCIL_EEXIST;
    if (r->max_entries != 0 && r->count >= r->max_entries)
        return COUNCIL_ELIMIT;

    e = malloc(sizeof *e + (copy_key ? key_len : 0));
    if (e == NULL)
        return COUNCIL_ENOMEM;
    e->hash = h;
    e->value = value;
    e->ns = (uint32_t)ns_id;
    e->key_len = (uint32_t)key_len;
    if (copy_key) {
        memcpy(e->copy, key, key_len);
        e->key = e->copy;
    } else {
        e->key = key;
    }

    t = rehashing(r) ? &r->t[1] : &r->t[0];
    b = (size_t)h & t->mask;
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->used++;
    r->count++;
    maybe_resize(r);
    return 0;
}

int registry_put(registry *r, const char *ns, size_t ns_len,
                 const void *key, size_t key_len, void *value)
{
    return put(r, ns, ns_len, key, key_len, value, 1);
}

int registry_put_ref(registry *r, const char *ns, size_t ns_len,
                     const void *key, size_t key_len, void *value)
{
    return put(r, ns, ns_len, key, key_len, value, 0);
}

void *registry_get(const registry *r, const char *ns, size_t ns_len,
                   const void *key, size_t key_len)
{
    int64_t ns_id;
    uint64_t h;
    entry **link;

    if (r == NULL || !args_ok(&ns, ns_len, key, key_len) || r->count == 0)
        return NULL;
    ns_id = ns_lookup(r, ns, ns_len);
    if (ns_id < 0)
        return NULL;
    h = entry_hash(hash_bytes(r, key, key_len), (uint32_t)ns_id);
    link = find_link(r, h, (uint32_t)ns_id, key, key_len, NULL);
    return link ? (*link)->value : NULL;
}

void *registry_remove(registry *r, const char *ns, size_t ns_len,
                      const void *key, size_t key_len)
{
    int64_t ns_id;
    uint64_t h;
    entry **link, *e;
    void *value;
    int which = 0;

    if (r == NULL || !args_ok(&ns, ns_len, key, key_len) || r->count == 0)
        return NULL;
    rehash_step(r, REHASH_STEP);
    ns_id = ns_lookup(r, ns, ns_len);
    if (ns_id < 0)
        return NULL;
    h = entry_hash(hash_bytes(r, key, key_len), (uint32_t)ns_id);
    link = find_link(r, h, (uint32_t)ns_id, key, key_len, &which);
    if (link == NULL)
        return NULL;

    e = *link;
    *link = e->next;
    value = e->value;
    free(e);
    r->t[which].used--;
    r->count--;
    maybe_resize(r);
    return value;
}

size_t registry_count(const registry *r)
{
    return r ? r->count : 0;
}

void registry_foreach(const registry *r,
                      int (*fn)(const char *ns, size_t ns_len,
                                const void *key, size_t key_len,
                                void *value, void *arg),
                      void *arg)
{
    int i;

    if (r == NULL || fn == NULL)
        return;
    for (i = 0; i < 2; i++) {
        size_t b, size = table_size(&r->t[i]);

        for (b = 0; b < size; b++) {
            const entry *e;

            for (e = r->t[i].buckets[b]; e != NULL; e = e->next) {
                const ns_name *n = &r->names[e->ns];

                if (fn(n->name, n->len, e->key, e->key_len, e->value, arg))
                    return;
            }
        }
    }
}
