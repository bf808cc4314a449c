/* proc_table.h - the C node's local processes and the signals tying them to
 * remote processes.
 *
 * Owns: every cn_proc (allocation, pid, registered name), every link and
 * monitor entry, the peer records (one per connected node) and the table of
 * interned node names. Does NOT send anything and calls no callback: node.c
 * decides what to tell whom and then removes entries here.
 *
 * Pids: a local process gets id = a 64-bit counter (starting at 1, never
 * reused within an incarnation) split into num = low 32 bits and serial =
 * high 32 bits (V4_NC lets both be 32-bit). The creation is the node's,
 * from epmd. Remote pids are stored as cn_pid: an interned node id plus
 * num/serial/creation, 16 bytes (never an erlang_pid).
 *
 * Every link and monitor is on two lists: its local process's and its
 * peer's (the connection it came over / goes over), so both a process exit
 * and a disconnect find all of their entries without a scan.
 *
 * Single-threaded: call from the loop thread only.
 */
#ifndef CN_PROC_TABLE_H
#define CN_PROC_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "dlist.h"
#include "term.h"


/* Compact pid: node is an interned node-name id (0 = this node). */
typedef struct cn_pid {
    uint32_t node;
    uint32_t num, serial, creation;
} cn_pid;

#define CN_NODE_NONE UINT32_MAX

struct cn_proc_ops; /* defined by node.h */

typedef struct cn_proc {
    uint64_t id;                    /* num | serial << 32 */
    char *name;                     /* registered name or NULL */
    const struct cn_proc_ops *ops;  /* handler table (node.h) */
    void *state;                    /* the handler's data */
    int trap_exit;                  /* deliver exit signals as messages */
    int dead;                       /* exited; freed when the loop reaps */
    cn_dl links;                    /* cn_link.by_proc */
    cn_dl watchers;                 /* cn_mon.by_proc, remote watches us */
    cn_dl watching;                 /* cn_mon.by_proc, we watch a remote */
    struct cn_proc *hnext;          /* hash chain; once out of the table
                                       (cn_pt_remove), node.c's reap list */
} cn_proc;

/* One peer node; node.c keeps one per authenticated connection, and one
 * per node it is dialing (links and monitors made meanwhile hang on it). */
typedef struct cn_peer {
    uint32_t node;  /* interned name of the peer node */
    void *conn;     /* the connection (opaque here); NULL while dialing */
    void *dial;     /* the outgoing attempt (opaque here) while dialing */
    size_t nlinks, nmons; /* entries on the lists below */
    cn_dl links;    /* cn_link.by_peer */
    cn_dl mons;     /* cn_mon.by_peer, both kinds */
} cn_peer;

typedef struct cn_link {
    cn_dl by_proc, by_peer;
    cn_proc *proc;
    cn_peer *peer;
    cn_pid remote;
    uint64_t unlink_id; /* nonzero: we sent UNLINK_ID and await the ack */
} cn_link;

enum { CN_MON_WATCHED_BY_REMOTE = 1, CN_MON_WATCHING_REMOTE = 2 };

typedef struct cn_mon {
    cn_dl by_proc, by_peer;
    int kind;
    cn_proc *proc;       /* the local end */
    cn_peer *peer;
    cn_pid remote;       /* watcher (WATCHED_BY_REMOTE) or watched pid */
    unsigned char *ref;  /* reference term bytes as received / sent */
    size_t ref_len;
    unsigned char *target; /* target as received: pid or atom term bytes */
    size_t target_len;
} cn_mon;

typedef struct cn_proc_table {
    char *local_name;      /* node name, e.g. "council@host" */
    uint32_t creation;
    uint64_t next_id;
    cn_proc **buckets;
    size_t nbuckets, nprocs;
    size_t nlinks, nmons;
    char **names;          /* interned node names; [0] = local; ids are
                              never reused (callers keep cn_pids) */
    size_t nnames, cap_names, max_names;
    uint32_t *name_index;  /* open-addressing hash: id + 1, 0 = empty */
    size_t index_cap;      /* power of two, > 2 * nnames */
    struct cn_regname { char *name; cn_proc *proc; } *reg;
    size_t nreg, cap_reg;
} cn_proc_table;

/* 0 or -1 (ENOMEM). max_names bounds the node-name table. */
int cn_pt_init(cn_proc_table *pt, const char *local_name, uint32_t creation,
               size_t max_names);
/* Frees everything still in the table (procs, links, monitors). Peers are
 * the caller's to drop before. */
void cn_pt_free(cn_proc_table *pt);

/* Interns a node name; returns its id or CN_NODE_NONE if the table is full
 * or memory ran out. */
uint32_t cn_pt_intern(cn_proc_table *pt, const char *name, size_t len);
const char *cn_pt_node_name(const cn_proc_table *pt, uint32_t id);

/* Wire <-> compact pid. from_wire: -1 if the name table is full. */
int cn_pt_pid_from_wire(cn_proc_table *pt, const cn_wpid *w, cn_pid *out);
void cn_pt_pid_to_wire(const cn_proc_table *pt, const cn_pid *p, cn_wpid *out);
void cn_pt_proc_wpid(const cn_proc_table *pt, const cn_proc *p, cn_wpid *out);
int cn_pid_eq(const cn_pid *a, const cn_pid *b);

/* New live process with a fresh pid; NULL on ENOMEM. */
cn_proc *cn_pt_spawn(cn_proc_table *pt);
/* Live process for a wire pid: NULL if the pid is not ours (other node
 * name, OTHER CREATION) or no such live process. */
cn_proc *cn_pt_find_wire(const cn_proc_table *pt, const cn_wpid *w);
cn_proc *cn_pt_find_id(const cn_proc_table *pt, uint64_t id);
/* Registers a name: 0, -1 (taken or proc already named), -2 ENOMEM. */
int cn_pt_register(cn_proc_table *pt, cn_proc *p, const char *name);
cn_proc *cn_pt_whereis(const cn_proc_table *pt, const char *name, size_t len);
/* Takes a process out of the pid index and the name index (it must have no
 * links/monitors left); memory stays until cn_pt_release. */
void cn_pt_remove(cn_proc_table *pt, cn_proc *p);
void cn_pt_release(cn_proc *p);

/* Peers. */
cn_peer *cn_pt_peer_new(cn_proc_table *pt, uint32_t node, void *conn);
/* Frees a peer whose lists are empty (node.c empties them first). */
void cn_pt_peer_free(cn_peer *peer);

/* Links: add returns the existing entry if (proc, remote) is linked. */
cn_link *cn_pt_link_add(cn_proc_table *pt, cn_proc *p, cn_peer *peer,
                        const cn_pid *remote);
cn_link *cn_pt_link_find(const cn_proc *p, const cn_pid *remote);
void cn_pt_link_del(cn_proc_table *pt, cn_link *l);

/* Monitors; ref and target bytes are copied. NULL on ENOMEM. */
cn_mon *cn_pt_mon_add(cn_proc_table *pt, int kind, cn_proc *p, cn_peer *peer,
                      const cn_pid *remote, cn_slice ref, cn_slice target);
/* The monitor with this ref on this peer (any kind), or NULL. */
cn_mon *cn_pt_mon_find(const cn_peer *peer, int kind, cn_slice ref);
void cn_pt_mon_del(cn_proc_table *pt, cn_mon *m);

#endif
