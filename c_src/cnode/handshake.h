/* handshake.h - accept side of the Erlang distribution handshake (version 6,
 * the OTP 23+ 'N' form), as a pure state machine: packets in, packets out,
 * no I/O. conn.c frames the packets (2-byte length prefix), runs the
 * deadline timer and closes the socket on failure.
 *
 *   peer -> 'N' flags:64 creation:32 nlen:16 name
 *   us   -> 's' "ok"
 *   us   -> 'N' our_flags:64 challenge:32 our_creation:32 nlen:16 our_name
 *   peer -> 'r' peer_challenge:32 digest:16   (checked with sodium_memcmp)
 *   us   -> 'a' MD5(cookie ++ decimal(peer_challenge))
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

enum { CN_HS_WAIT_NAME = 0, CN_HS_WAIT_REPLY = 1, CN_HS_DONE = 2, CN_HS_FAILED = 3 };

enum {
    CN_HS_CONTINUE = 0,  /* send `out`, wait for the next packet */
    CN_HS_UP = 1,        /* send `out`; the connection is authenticated */
    CN_HS_EPROTO = -1,   /* malformed or unexpected packet */
    CN_HS_EFLAGS = -2,   /* peer lacks mandatory flags */
    CN_HS_ENAME = -3,    /* bad peer node name */
    CN_HS_ECOOKIE = -4,  /* digest mismatch: wrong cookie */
};

typedef struct cn_hs {
    int state;
    const char *our_name;     /* borrowed, lives as long as the node */
    uint32_t our_creation;
    const cn_cookie *cookie;  /* borrowed */
    uint32_t challenge;       /* ours, from randombytes_buf */
    uint64_t peer_flags;
    uint32_t peer_creation;
    char peer_name[CN_MAX_NODE_NAME + 1];
    unsigned char out[1024];  /* packets to send, with length prefixes */
    size_t out_len;
} cn_hs;

void cn_hs_init(cn_hs *hs, const char *our_name, uint32_t our_creation,
                const cn_cookie *cookie);
/* Feeds one handshake packet (the bytes after its 2-byte length). Resets
 * hs->out and fills it with what must be sent. Returns CN_HS_CONTINUE,
 * CN_HS_UP, or a negative CN_HS_E* (state becomes FAILED; send nothing). */
int cn_hs_packet(cn_hs *hs, const unsigned char *pkt, size_t len);
/* Wipes the challenge. */
void cn_hs_clear(cn_hs *hs);
const char *cn_hs_strerror(int err);

#endif
