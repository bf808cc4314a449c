/* handshake.h - both sides of the Erlang distribution handshake (version 6,
 * the OTP 23+ 'N' form), as a pure state machine: packets in, packets out,
 * no I/O. conn.c frames the packets (2-byte length prefix), runs the
 * deadline timer and closes the socket on failure.
 *
 * Accept side (cn_hs_init):
 *   peer -> 'N' flags:64 creation:32 nlen:16 name
 *           (CN_HS_DECIDE: the node picks the status, cn_hs_decide)
 *   us   -> 's' "ok" | "ok_simultaneous"   ("nok" / "not_allowed": then close)
 *   us   -> 'N' our_flags:64 challenge:32 our_creation:32 nlen:16 our_name
 *   peer -> 'r' peer_challenge:32 digest:16   (checked with sodium_memcmp)
 *   us   -> 'a' MD5(cookie ++ decimal(peer_challenge))
 *
 * Initiator side (cn_hs_init_connect; hs->out holds our 'N' at once):
 *   us   -> 'N' our_flags:64 our_creation:32 nlen:16 our_name
 *   peer -> 's' "ok" | "ok_simultaneous" | "nok" | "not_allowed" | "alive"
 *           ("alive": CN_HS_DECIDE, the node answers 's' "true"/"false")
 *   peer -> 'N' flags:64 challenge:32 creation:32 nlen:16 name
 *           (the name must be the node we dialed)
 *   us   -> 'r' our_challenge:32 MD5(cookie ++ decimal(peer challenge))
 *   peer -> 'a' digest:16  (== MD5(cookie ++ decimal(our_challenge)),
 *                           checked with sodium_memcmp)
 *
 * Simultaneous connect (both nodes dial each other): the acceptor whose
 * own attempt is still pending answers "nok" if its name is greater (its
 * own attempt goes on) and "ok_simultaneous" otherwise (it drops its own
 * attempt). The node makes that choice (cn_hs_decide); a "nok" we receive
 * is CN_HS_ENOK, which tells the dialer to wait for the peer's connection.
 *
 * Owns: the cn_cookie secret (held in sodium_malloc'd memory, wiped with
 * sodium_memzero on free) and the per-connection cn_hs state. Our flags
 * include DIST_MONITOR and DIST_MONITOR_NAME (0x8|0x20: without them BEAM
 * sends no monitor signals) plus every flag OTP 25..27 makes mandatory.
 * The node is hidden (no DFLAG_PUBLISHED), matching epmd node type 'h'.
 */
#ifndef CN_HANDSHAKE_H
#define CN_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#define CN_DFLAG_PUBLISHED 0x1ull
#define CN_DFLAG_EXTENDED_REFERENCES 0x4ull
#define CN_DFLAG_DIST_MONITOR 0x8ull
#define CN_DFLAG_FUN_TAGS 0x10ull
#define CN_DFLAG_DIST_MONITOR_NAME 0x20ull
#define CN_DFLAG_NEW_FUN_TAGS 0x80ull
#define CN_DFLAG_EXTENDED_PIDS_PORTS 0x100ull
#define CN_DFLAG_EXPORT_PTR_TAG 0x200ull
#define CN_DFLAG_BIT_BINARIES 0x400ull
#define CN_DFLAG_NEW_FLOATS 0x800ull
#define CN_DFLAG_SMALL_ATOM_TAGS 0x4000ull
#define CN_DFLAG_UTF8_ATOMS 0x10000ull
#define CN_DFLAG_MAP_TAG 0x20000ull
#define CN_DFLAG_BIG_CREATION 0x40000ull
#define CN_DFLAG_HANDSHAKE_23 0x1000000ull
#define CN_DFLAG_UNLINK_ID 0x2000000ull
#define CN_DFLAG_MANDATORY_25_DIGEST 0x4000000ull
#define CN_DFLAG_V4_NC (0x4ull << 32)

/* What we advertise. */
#define CN_OUR_FLAGS                                                        \
    (CN_DFLAG_EXTENDED_REFERENCES | CN_DFLAG_DIST_MONITOR |                 \
     CN_DFLAG_FUN_TAGS | CN_DFLAG_DIST_MONITOR_NAME | CN_DFLAG_NEW_FUN_TAGS | \
     CN_DFLAG_EXTENDED_PIDS_PORTS | CN_DFLAG_EXPORT_PTR_TAG |                \
     CN_DFLAG_BIT_BINARIES | CN_DFLAG_NEW_FLOATS | CN_DFLAG_SMALL_ATOM_TAGS | \
     CN_DFLAG_UTF8_ATOMS | CN_DFLAG_MAP_TAG | CN_DFLAG_BIG_CREATION |       \
     CN_DFLAG_HANDSHAKE_23 | CN_DFLAG_UNLINK_ID |                            \
     CN_DFLAG_MANDATORY_25_DIGEST | CN_DFLAG_V4_NC)

/* What the peer must have (OTP 25's DFLAG_DIST_MANDATORY). */
#define CN_PEER_MANDATORY                                                    \
    (CN_DFLAG_EXTENDED_REFERENCES | CN_DFLAG_FUN_TAGS |                      \
     CN_DFLAG_EXTENDED_PIDS_PORTS | CN_DFLAG_UTF8_ATOMS |                    \
     CN_DFLAG_NEW_FUN_TAGS | CN_DFLAG_BIG_CREATION | CN_DFLAG_NEW_FLOATS |  \
     CN_DFLAG_MAP_TAG | CN_DFLAG_EXPORT_PTR_TAG | CN_DFLAG_BIT_BINARIES |   \
     CN_DFLAG_HANDSHAKE_23)

#define CN_MAX_COOKIE 1024
#define CN_MAX_NODE_NAME 255

/* The cookie secret. */
typedef struct cn_cookie {
    unsigned char *bytes; /* sodium_malloc'd */
    size_t len;
} cn_cookie;

/* Copies len bytes (1..CN_MAX_COOKIE). 0, or -1 (bad length / ENOMEM). */
int cn_cookie_set(cn_cookie *c, const void *bytes, size_t len);
/* Wipes and frees; safe on a zeroed struct. */
void cn_cookie_free(cn_cookie *c);
/* MD5(cookie ++ decimal(challenge)). */
void cn_cookie_digest(const cn_cookie *c, uint32_t challenge,
                      unsigned char out[16]);

enum {
    CN_HS_WAIT_NAME = 0, CN_HS_WAIT_REPLY = 1, CN_HS_DONE = 2, CN_HS_FAILED = 3,
    CN_HS_DECIDING = 4,         /* waiting for cn_hs_decide (either side) */
    CN_HS_I_WAIT_STATUS = 5,    /* initiator states */
    CN_HS_I_WAIT_CHALLENGE = 6,
    CN_HS_I_WAIT_ACK = 7,
};

enum {
    CN_HS_CONTINUE = 0,  /* send `out`, wait for the next packet */
    CN_HS_UP = 1,        /* send `out`; the connection is authenticated */
    CN_HS_DECIDE = 2,    /* call cn_hs_decide (nothing to send yet) */
    CN_HS_EPROTO = -1,   /* malformed or unexpected packet */
    CN_HS_EFLAGS = -2,   /* peer lacks mandatory flags */
    CN_HS_ENAME = -3,    /* bad peer node name (or not the node dialed) */
    CN_HS_ECOOKIE = -4,  /* digest mismatch: wrong cookie */
    CN_HS_ENOK = -5,     /* simultaneous connect: the other attempt goes on */
    CN_HS_ENOTALLOWED = -6, /* not allowed (by the peer or by us) */
    CN_HS_EALIVE = -7,   /* peer still has a connection we know of ("false") */
};

/* Decisions for cn_hs_decide. Accept side: OK, OK_SIMULTANEOUS, NOK,
 * NOT_ALLOWED. Initiator side, after "alive": TRUE (go on, the peer drops
 * its old connection) or FALSE. */
enum {
    CN_HS_ST_OK = 0, CN_HS_ST_OK_SIMULTANEOUS, CN_HS_ST_NOK,
    CN_HS_ST_NOT_ALLOWED, CN_HS_ST_TRUE, CN_HS_ST_FALSE,
};

typedef struct cn_hs {
    int state;
    int initiator;            /* we dialed */
    const char *our_name;     /* borrowed, lives as long as the node */
    uint32_t our_creation;
    const cn_cookie *cookie;  /* borrowed */
    uint32_t challenge;       /* ours, from randombytes_buf */
    uint64_t peer_flags;
    uint32_t peer_creation;
    char peer_name[CN_MAX_NODE_NAME + 1]; /* initiator: the node dialed */
    unsigned char out[1024];  /* packets to send, with length prefixes */
    size_t out_len;
} cn_hs;

/* Accept side. */
void cn_hs_init(cn_hs *hs, const char *our_name, uint32_t our_creation,
                const cn_cookie *cookie);
/* Initiator side, dialing `peer_name` ("alive@host"): hs->out holds our 'N'
 * packet, to be sent once connected. -1 if the name is not plausible. */
int cn_hs_init_connect(cn_hs *hs, const char *our_name, uint32_t our_creation,
                       const cn_cookie *cookie, const char *peer_name);
/* Feeds one handshake packet (the bytes after its 2-byte length). Resets
 * hs->out and fills it with what must be sent. Returns CN_HS_CONTINUE,
 * CN_HS_UP, CN_HS_DECIDE, or a negative CN_HS_E* (state becomes FAILED;
 * hs->out is empty). */
int cn_hs_packet(cn_hs *hs, const unsigned char *pkt, size_t len);
/* Answers CN_HS_DECIDE with a CN_HS_ST_* (accept side: the status for the
 * peer's 'N'; initiator: the answer to "alive"). Resets and fills hs->out.
 * CN_HS_CONTINUE, or a negative CN_HS_E* when the status ends the
 * handshake: hs->out then still holds the status packet ("nok",
 * "not_allowed", "false"), to be sent before closing. */
int cn_hs_decide(cn_hs *hs, int status);
/* Wipes the challenge. */
void cn_hs_clear(cn_hs *hs);
const char *cn_hs_strerror(int err);

#endif
