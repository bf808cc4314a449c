/* registry.c - run_id -> value maps, one namespace per named registry.
 *
 * What it is for: the lookup of runs by id that must stay O(1) at a million
 * entries, within one memory latency. What it is not for: knowing what a
 * value is or when it expires.
 *
 * Layout. One open-addressing table (linear probing) holds the entries of
 * every namespace; an entry is keyed by (namespace id, key bytes).
 * Namespace names are interned in a small table of their own, so an entry
 * carries no name. The table is two arrays of the same number of slots:
 *
 *   meta[i]  one 64-bit word: the top 46 bits of the entry's hash, the key
 *            length - 1 (16 bits), and two flags (live; key copied).
 *            0 = empty.
 *   kv[i]    one cache line: the value, the caller's mark word
 *            (registry_set_mark) and the key: its bytes when it has at
 *            most KEY_INLINE of them (a generated run id has 22, a UUID
 *            36), else a pointer to them.
 *
 * A lookup hashes the key, then reads meta from the home slot on: a slot
 * whose word differs is passed over without touching the entry, so a miss
 * is decided in the meta array alone (at 8 words per cache line), and a hit
 * compares the key bytes once. The home slot's kv line is asked for with
 * its meta word (both addresses come from the hash), so a hit on its home
 * slot costs one memory latency and two cache lines: the value, the key
 * and the mark are all in the kv line, and the value itself (a run) is not
 * read. An entry displaced from its home slot by a collision costs a
 * second latency (its kv line is known once meta is read); at the table's
 * loads (2/5 to 4/5) most hits are on their home slot.
 * Tables of 1 MiB and more are mapped on their own (munmap'ed when a
 * resize is done with them, so their memory goes back at once); their
 * meta array asks for huge pages (see table_init).
 *
 * Sizes are powers of two; the table grows at a load of 4/5 (to 2/5) and
 * shrinks when the load drops under 1/8 (to at most 2/5). Resizing a table
 * of more than 1024 slots is incremental, in the manner of Redis's dict.c
 * (a smaller one moves at once, in microseconds): while a resize is in
 * progress two tables exist; new entries go to the new one, every
 * put/remove moves a few slots' entries over, and lookups search both. In
 * the old table a moved or removed entry leaves a MOVED mark (its probe
 * chains stay intact); in the current table a removal shifts the entries
 * after it back (no marks ever). No single insert pays for a whole rehash.
 *
 * Hashing. Keys go through crypto_shorthash (SipHash-2-4) under a key drawn
 * from randombytes_buf once per registry object; the namespace id is then
 * mixed into the 64-bit result such that its top 16 bits differ for every
 * namespace (ns_mix). Ids chosen by a client cannot be made to collide
 * without knowing the key. Two entries with equal meta words and equal key
 * bytes have equal key hashes, hence equal top 16 bits of ns_mix, hence the
 * same namespace: the namespace needs no room in the slot, and foreach
 * recovers it from the key's hash. The first namespace mixes in nothing,
 * so a test can choose the hashes of its keys (registry_set_test_hash).
 *
 * Memory. 72 bytes per slot: 90 to 180 bytes per entry at loads of 4/5 to
 * 2/5 (the price of a one-latency lookup: with a pointer to the key in the
 * slot instead of the key, 24 bytes per slot, a hit read the key in the
 * run's block, a second latency and on 4 KiB pages a page-table walk).
 * A key longer than KEY_INLINE costs, for registry_put (which copies it),
 * the copy; registry_put_ref points at the caller's bytes.
 */
#include "registry.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <sodium.h>

#include "council.h"

#define REGISTRY_MAX_KEY ((size_t)64 * 1024)
#define REGISTRY_MAX_NS 65536u          /* distinct namespace names */
#define MIN_SLOTS 16u
#define MOVE_ENTRIES 16u                /* entries moved per put/remove */
#define MOVE_SCAN 64u                   /* old slots visited per put/remove */
#define MOVE_AT_ONCE 1024u              /* a table this small moves at once */
#define NS_SCAN_MAX 4u                  /* namespaces found by a plain scan */
#define MAP_MIN ((size_t)1 << 20)       /* tables this large are mmap'ed */
#define PAGE ((size_t)4096)
#define LINE 64u
#define KEY_INLINE 48u                  /* longer keys are pointed at */

/* meta word: [63..18] hash top 46 bits | [17..2] key_len - 1 | [1] copied
 * (a key longer than KEY_INLINE, malloc'ed by registry_put) | [0] live.
 * MOVED (old table only): an entry was here. */
#define M_LIVE ((uint64_t)1)
#define M_OWNED ((uint64_t)2)
#define M_MOVED ((uint64_t)2)
#define M_HASH_SHIFT 18
#define M_HASH_MASK (~(uint64_t)0 << M_HASH_SHIFT)

typedef struct kv {
    void *value;
    uint64_t mark;              /* registry_set_mark's; 0 when put */
    union {
        unsigned char bytes[KEY_INLINE];  /* key_len <= KEY_INLINE */
        const unsigned char *ptr; /* longer: a malloc'ed copy (M_OWNED) or
                                     the caller's bytes */
    } key;
} kv;

_Static_assert(sizeof(kv) == LINE, "a slot's entry is one cache line");

typedef struct table {
    uint64_t *meta;     /* NULL: no table */
    kv *kv;             /* LINE-aligned */
    size_t mask;        /* slots - 1 */
    unsigned shift;     /* 64 - log2(slots): home = meta >> shift */
    size_t live;        /* entries */
    size_t bytes;       /* of the block meta and kv are in */
    bool mapped;        /* mmap'ed rather than calloc'ed */
} table;

typedef struct ns_name {
    char *name;
    size_t len;
    uint64_t hash;
} ns_name;

struct registry {
    table cur;              /* where entries are put */
    table old;              /* draining into cur while a resize runs */
    size_t move_idx;        /* next slot of old to move */
    size_t count;
    size_t max_entries;
    size_t key_bytes;       /* of the copied keys */
    unsigned char hash_key[crypto_shorthash_KEYBYTES];

    /* Interned namespaces: names[id]; ns_index is open addressing over
     * ids + 1 (0 = empty slot), size a power of two, load <= 1/2. */
    ns_name *names;
    uint32_t ns_count, ns_cap;
    uint32_t *ns_index;
    uint32_t ns_index_mask;

    uint64_t (*test_hash)(const void *key, size_t len); /* tests only */
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

/* What a namespace id mixes into a key hash. Top 16 bits: ns times an
 * odd constant mod 2^16, a bijection on 16 bits that spreads neighbouring
 * ids over the table; below, more of the same product. Namespace 0 (the
 * first one named) mixes in nothing. */
#define NS_MUL16 0x9E37u
static uint64_t ns_mix(uint32_t ns)
{
    uint64_t top = (uint64_t)((ns * NS_MUL16) & 0xFFFFu);

    return top << 48 | ((uint64_t)ns * 0x9E3779B97F4A7C15ull) >> 16;
}

/* The namespace id whose ns_mix has these top 16 bits. */
static uint32_t ns_unmix(uint64_t top16)
{
    uint32_t inv = NS_MUL16, i;

    for (i = 0; i < 4; i++) /* Newton: inverse of NS_MUL16 mod 2^16 */
        inv = (inv * (2u - NS_MUL16 * inv)) & 0xFFFFu;
    return (uint32_t)((top16 * inv) & 0xFFFFu);
}

/* The hash of a key (before its namespace is mixed in). */
static uint64_t key_hash(const registry *r, const void *key, size_t len)
{
    return r->test_hash ? r->test_hash(key, len) : hash_bytes(r, key, len);
}

static uint64_t entry_hash(uint64_t kh, uint32_t ns)
{
    return kh ^ ns_mix(ns);
}

/* The meta word of a live entry, without the copied flag. */
static uint64_t meta_of(uint64_t h, size_t key_len)
{
    return (h & M_HASH_MASK) | (uint64_t)(key_len - 1) << 2 | M_LIVE;
}

static size_t meta_key_len(uint64_t m)
{
    return (size_t)((m >> 2) & 0xFFFFu) + 1;
}

static bool live(uint64_t m)
{
    return (m & M_LIVE) != 0;
}

static bool resizing(const registry *r)
{
    return r->old.meta != NULL;
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

static int table_init(table *t, size_t slots)
{
    size_t bytes = slots * (sizeof *t->meta + sizeof *t->kv);
    void *mem;
    unsigned bits = 0;

    while (((size_t)1 << bits) < slots)
        bits++;
    t->mapped = bytes >= MAP_MIN;
    if (t->mapped) {
        bytes = (bytes + PAGE - 1) & ~(PAGE - 1);
        mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
        if (mem == MAP_FAILED)
            return COUNCIL_ENOMEM;
#ifdef MADV_HUGEPAGE
        /* a lookup's first load lands anywhere in the meta array: with
         * 4 KiB pages it also misses the TLB (a page walk of its own); 2
         * MiB pages where the system gives them on request (THP
         * "madvise"). Not for kv, 8 times larger: the puts that move
         * entries into a new table would touch fresh huge pages, each
         * zeroed (and perhaps compacted for) on the spot, which made a
         * put's worst case at 1M entries 5-21 ms instead of 3 (bench_core);
         * a lookup's kv line costs a page walk through tables that stay
         * cached (council_whereis 230 ns with kv on huge pages, 290-345
         * without, against 690-720 ns with the key in the run) */
        if (slots * sizeof *t->meta >= ((size_t)2 << 20))
            (void)madvise(mem, slots * sizeof *t->meta, MADV_HUGEPAGE);
#endif
    } else {
        /* slots >= 16: the meta array is a whole number of lines, so kv
         * starts on a line too */
        mem = aligned_alloc(LINE, bytes);
        if (mem == NULL)
            return COUNCIL_ENOMEM;
        memset(mem, 0, bytes);
    }
    t->meta = mem;
    t->kv = (kv *)(t->meta + slots);
    t->mask = slots - 1;
    t->shift = 64 - bits;
    t->live = 0;
    t->bytes = bytes;
    return 0;
}

static void table_fini(table *t)
{
    if (t->meta == NULL)
        return;
    if (t->mapped)
        munmap(t->meta, t->bytes);
    else
        free(t->meta);
    memset(t, 0, sizeof *t);
}

static size_t table_slots(const table *t)
{
    return t->meta ? t->mask + 1 : 0;
}

static size_t home(const table *t, uint64_t h)
{
    return (size_t)(h >> t->shift);
}

/* The key bytes of an entry whose key is key_len long. */
static const unsigned char *kv_key(const kv *e, size_t key_len)
{
    return key_len <= KEY_INLINE ? e->key.bytes : e->key.ptr;
}

/* Slot of the live entry (want, key) in t, or SIZE_MAX. */
static size_t table_find(const table *t, uint64_t want, const void *key,
                         size_t key_len)
{
    size_t i;

    for (i = home(t, want);; i = (i + 1) & t->mask) {
        uint64_t m = t->meta[i];

        if (m == 0)
            return SIZE_MAX;
        if ((m & ~M_OWNED) == want && memcmp(kv_key(&t->kv[i], key_len), key, key_len) == 0)
            return i;
    }
}

/* Put an entry known to be absent into t, which has room. */
static void table_insert(table *t, uint64_t m, kv e)
{
    size_t i = home(t, m);

    while (t->meta[i] != 0)
        i = (i + 1) & t->mask;
    t->meta[i] = m;
    t->kv[i] = e;
    t->live++;
}

/* Empty slot i of t (the current table): the entries after it in its
 * cluster whose home is not between the hole and them move back, so every
 * entry stays reachable from its home without marks. */
static void table_delete(table *t, size_t i)
{
    size_t j = i;

    for (;;) {
        uint64_t m;
        size_t k;

        j = (j + 1) & t->mask;
        m = t->meta[j];
        if (m == 0)
            break;
        k = home(t, m);
        /* j stays when its home k lies cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        t->meta[i] = m;
        t->kv[i] = t->kv[j];
        i = j;
    }
    t->meta[i] = 0;
    memset(&t->kv[i], 0, sizeof t->kv[i]);
    t->live--;
}

/* Move the entries of old's slots up to the end into cur: at most
 * max_entries of them, visiting at most max_scan slots. Ends the resize
 * when old is empty. */
static void move_some(registry *r, size_t max_entries, size_t max_scan)
{
    table *old = &r->old;

    if (!resizing(r))
        return;
    while (old->live > 0 && max_entries > 0 && max_scan-- > 0) {
        size_t i = r->move_idx++;
        uint64_t m = old->meta[i];

        if (!live(m))
            continue;
        table_insert(&r->cur, m, old->kv[i]);
        old->meta[i] = M_MOVED;
        old->live--;
        max_entries--;
    }
    if (old->live == 0)
        table_fini(old);
}

/* Start a resize to `slots` when none is in progress. A failed allocation
 * only postpones it: the table keeps working, fuller. */
static void resize_start(registry *r, size_t slots)
{
    table t;

    if (resizing(r) || slots == table_slots(&r->cur))
        return;
    if (table_init(&t, slots) != 0)
        return;
    r->old = r->cur;
    r->cur = t;
    r->move_idx = 0;
    if (r->old.live == 0)
        table_fini(&r->old);
    else if (table_slots(&r->old) <= MOVE_AT_ONCE)
        move_some(r, SIZE_MAX, SIZE_MAX); /* a few microseconds: done now */
}

/* Would cur pass a load of 4/5 with n entries? */
static bool over_load(const table *t, size_t n)
{
    return n * 5 > table_slots(t) * 4;
}

static void maybe_resize(registry *r)
{
    size_t slots = table_slots(&r->cur);

    if (resizing(r))
        return;
    if (over_load(&r->cur, r->count) && slots <= SIZE_MAX / 4 / sizeof(kv))
        resize_start(r, slots * 2);
    else if (slots > MIN_SLOTS && r->count < slots / 8) {
        /* straight to a load of at most 2/5: a bulk removal shrinks in one
         * resize, not in a cascade of halvings */
        size_t target = MIN_SLOTS;

        while (target * 2 < r->count * 5)
            target *= 2;
        resize_start(r, target);
    }
}

/* Room in cur for one more entry. During a resize cur holds the moved
 * entries and the new ones; should it fill before old is drained (a
 * shrink followed by many puts), old is drained now, into a larger table
 * when cur cannot take it all. COUNCIL_ENOMEM when neither can be had. */
static int make_room(registry *r)
{
    table t;
    size_t i;

    if (!resizing(r)) {
        if (!over_load(&r->cur, r->cur.live + 1))
            return 0;
        /* growth was postponed by a failed allocation: try again */
        if (table_init(&t, table_slots(&r->cur) * 2) != 0)
            return r->cur.live + 1 < table_slots(&r->cur) ? 0 : COUNCIL_ENOMEM;
        r->old = r->cur;
        r->cur = t;
        r->move_idx = 0;
    }
    if (!over_load(&r->cur, r->cur.live + r->old.live + 1)) {
        return 0;
    }
    if (!over_load(&r->cur, r->cur.live + r->old.live)) {
        move_some(r, SIZE_MAX, SIZE_MAX);
        return r->cur.live + 1 < table_slots(&r->cur) ? 0 : COUNCIL_ENOMEM;
    }
    /* everything into a table sized for it at a load of at most 2/5 */
    {
        size_t slots = MIN_SLOTS, n = r->cur.live + r->old.live + 1;

        while (slots * 2 < n * 5)
            slots *= 2;
        if (table_init(&t, slots) != 0)
            return r->cur.live + r->old.live + 1 < table_slots(&r->cur) ? 0
                                                                       : COUNCIL_ENOMEM;
        for (i = 0; i < table_slots(&r->cur); i++)
            if (live(r->cur.meta[i]))
                table_insert(&t, r->cur.meta[i], r->cur.kv[i]);
        for (i = 0; i < table_slots(&r->old); i++)
            if (live(r->old.meta[i]))
                table_insert(&t, r->old.meta[i], r->old.kv[i]);
        table_fini(&r->cur);
        table_fini(&r->old);
        r->cur = t;
    }
    return 0;
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
    if (table_init(&r->cur, MIN_SLOTS) != 0) {
        free(r);
        return NULL;
    }
    r->max_entries = max_entries;
    randombytes_buf(r->hash_key, sizeof r->hash_key);
    return r;
}

static void table_free_keys(table *t)
{
    size_t i;

    for (i = 0; i < table_slots(t); i++)
        if (live(t->meta[i]) && (t->meta[i] & M_OWNED))
            free((void *)t->kv[i].key.ptr);
}

void registry_free(registry *r)
{
    uint32_t n;

    if (r == NULL)
        return;
    table_free_keys(&r->cur);
    table_free_keys(&r->old);
    table_fini(&r->cur);
    table_fini(&r->old);
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

/* Where (ns, key) is: *t and its slot, or false. Both tables' home lines
 * are asked for before either is read. */
static bool find(const registry *r, uint64_t want, const void *key,
                 size_t key_len, table **where, size_t *slot)
{
    const table *tables[2] = {&r->cur, &r->old};
    int n = resizing(r) ? 2 : 1, i;

    for (i = 0; i < n; i++) {
        size_t h = home(tables[i], want);

        __builtin_prefetch(&tables[i]->meta[h]);
        __builtin_prefetch(&tables[i]->kv[h]);
    }
    for (i = 0; i < n; i++) {
        size_t s = table_find(tables[i], want, key, key_len);

        if (s != SIZE_MAX) {
            if (where != NULL)
                *where = (table *)tables[i];
            if (slot != NULL)
                *slot = s;
            return true;
        }
    }
    return false;
}

static int put(registry *r, const char *ns, size_t ns_len, const void *key,
               size_t key_len, void *value, int copy_key)
{
    int64_t ns_id;
    uint64_t m;
    kv e;
    int rc;

    if (r == NULL || !args_ok(&ns, ns_len, key, key_len))
        return COUNCIL_EINVAL;

    move_some(r, MOVE_ENTRIES, MOVE_SCAN);

    ns_id = ns_intern(r, ns, ns_len);
    if (ns_id < 0)
        return (int)ns_id;
    m = meta_of(entry_hash(key_hash(r, key, key_len), (uint32_t)ns_id), key_len);
    if (find(r, m, key, key_len, NULL, NULL))
        return COUNCIL_EEXIST;
    if (r->max_entries != 0 && r->count >= r->max_entries)
        return COUNCIL_ELIMIT;
    if ((rc = make_room(r)) != 0)
        return rc;

    memset(&e, 0, sizeof e);
    e.value = value;
    if (key_len <= KEY_INLINE) {
        memcpy(e.key.bytes, key, key_len);
    } else if (copy_key) {
        unsigned char *copy = malloc(key_len);

        if (copy == NULL)
            return COUNCIL_ENOMEM;
        memcpy(copy, key, key_len);
        e.key.ptr = copy;
        m |= M_OWNED;
        r->key_bytes += key_len;
    } else {
        e.key.ptr = key;
    }
    table_insert(&r->cur, m, e);
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

/* The entry (ns, key), or NULL. */
static kv *get_entry(const registry *r, const char *ns, size_t ns_len,
                     const void *key, size_t key_len)
{
    int64_t ns_id;
    uint64_t want;
    table *t;
    size_t slot;

    if (r == NULL || !args_ok(&ns, ns_len, key, key_len) || r->count == 0)
        return NULL;
    ns_id = ns_lookup(r, ns, ns_len);
    if (ns_id < 0)
        return NULL;
    want = meta_of(entry_hash(key_hash(r, key, key_len), (uint32_t)ns_id), key_len);
    return find(r, want, key, key_len, &t, &slot) ? &t->kv[slot] : NULL;
}

void *registry_get(const registry *r, const char *ns, size_t ns_len,
                   const void *key, size_t key_len)
{
    const kv *e = get_entry(r, ns, ns_len, key, key_len);

    return e ? e->value : NULL;
}

void *registry_get_mark(const registry *r, const char *ns, size_t ns_len,
                        const void *key, size_t key_len, uint64_t *mark)
{
    const kv *e = get_entry(r, ns, ns_len, key, key_len);

    *mark = e ? e->mark : 0;
    return e ? e->value : NULL;
}

int registry_set_mark(registry *r, const char *ns, size_t ns_len,
                      const void *key, size_t key_len, uint64_t mark)
{
    kv *e;

    if (r == NULL || !args_ok(&ns, ns_len, key, key_len))
        return COUNCIL_EINVAL;
    e = get_entry(r, ns, ns_len, key, key_len);
    if (e == NULL)
        return COUNCIL_ENOTFOUND;
    e->mark = mark;
    return 0;
}

void *registry_remove(registry *r, const char *ns, size_t ns_len,
                      const void *key, size_t key_len)
{
    int64_t ns_id;
    uint64_t want, m;
    table *t;
    size_t slot;
    void *value;

    if (r == NULL || !args_ok(&ns, ns_len, key, key_len) || r->count == 0)
        return NULL;
    move_some(r, MOVE_ENTRIES, MOVE_SCAN);
    ns_id = ns_lookup(r, ns, ns_len);
    if (ns_id < 0)
        return NULL;
    want = meta_of(entry_hash(key_hash(r, key, key_len), (uint32_t)ns_id), key_len);
    if (!find(r, want, key, key_len, &t, &slot))
        return NULL;

    m = t->meta[slot];
    value = t->kv[slot].value;
    if (m & M_OWNED) {
        free((void *)t->kv[slot].key.ptr);
        r->key_bytes -= key_len;
    }
    if (t == &r->cur) {
        table_delete(t, slot);
    } else {
        t->meta[slot] = M_MOVED;
        memset(&t->kv[slot], 0, sizeof t->kv[slot]);
        t->live--;
        if (t->live == 0)
            table_fini(t);
    }
    r->count--;
    maybe_resize(r);
    return value;
}

void registry_set_test_hash(registry *r, uint64_t (*fn)(const void *key, size_t len))
{
    r->test_hash = fn;
}

size_t registry_count(const registry *r)
{
    return r ? r->count : 0;
}

size_t registry_bytes(const registry *r)
{
    if (r == NULL)
        return 0;
    return sizeof *r + r->cur.bytes + r->old.bytes + r->key_bytes +
           (size_t)r->ns_cap * sizeof *r->names +
           (r->ns_index ? ((size_t)r->ns_index_mask + 1) * sizeof *r->ns_index : 0);
}

size_t registry_mapped_bytes(const registry *r)
{
    if (r == NULL)
        return 0;
    return (r->cur.mapped ? r->cur.bytes : 0) + (r->old.mapped ? r->old.bytes : 0);
}

static int table_foreach(const registry *r, const table *t,
                         int (*fn)(const char *ns, size_t ns_len,
                                   const void *key, size_t key_len,
                                   void *value, void *arg),
                         void *arg)
{
    size_t i;

    for (i = 0; i < table_slots(t); i++) {
        uint64_t m = t->meta[i];
        size_t len;
        uint64_t top16;
        const ns_name *n;
        const unsigned char *key;

        if (!live(m))
            continue;
        len = meta_key_len(m);
        /* the namespace: the top 16 bits of its mix, from the hashes */
        key = kv_key(&t->kv[i], len);
        top16 = ((m ^ key_hash(r, key, len)) >> 48) & 0xFFFFu;
        n = &r->names[ns_unmix(top16)];
        if (fn(n->name, n->len, key, len, t->kv[i].value, arg))
            return 1;
    }
    return 0;
}

void registry_foreach(const registry *r,
                      int (*fn)(const char *ns, size_t ns_len,
                                const void *key, size_t key_len,
                                void *value, void *arg),
                      void *arg)
{
    if (r == NULL || fn == NULL)
        return;
    if (table_foreach(r, &r->old, fn, arg))
        return;
    table_foreach(r, &r->cur, fn, arg);
}
