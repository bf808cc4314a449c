/* handshake.c - see handshake.h. */
#include "handshake.h"

#include <stdbool.h>

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "md5.h"
#include "term.h"

int cn_cookie_set(cn_cookie *c, const void *bytes, size_t len)
{
    if (len == 0 || len > CN_MAX_COOKIE)
        return -1;
    c->bytes = sodium_malloc(len);
    if (!c->bytes)
        return -1;
    memcpy(c->bytes, bytes, len);
    c->len = len;
    return 0;
}

void cn_cookie_free(cn_cookie *c)
{
    if (c->bytes) {
        sodium_memzero(c->bytes, c->len);
        sodium_free(c->bytes);
    }
    c->bytes = NULL;
    c->len = 0;
}

void cn_cookie_digest(const cn_cookie *c, uint32_t challenge,
                      unsigned char out[16])
{
    char dec[16];
    int n = snprintf(dec, sizeof dec, "%u", (unsigned)challenge);
    cn_md5_ctx m;
    cn_md5_init(&m);
    cn_md5_update(&m, c->bytes, c->len);
    cn_md5_update(&m, dec, (size_t)n);
    cn_md5_final(&m, out);
    sodium_memzero(dec, sizeof dec);
}

static void put(cn_hs *hs, const void *b, size_t n)
{
    memcpy(hs->out + hs->out_len, b, n);
    hs->out_len += n;
}
static void put8(cn_hs *hs, unsigned v)
{
    hs->out[hs->out_len++] = (unsigned char)v;
}
static void put16(cn_hs *hs, unsigned v)
{
    cn_wr16(hs->out + hs->out_len, (uint16_t)v);
    hs->out_len += 2;
}
static void put32(cn_hs *hs, uint32_t v)
{
    cn_wr32(hs->out + hs->out_len, v);
    hs->out_len += 4;
}
static void put64(cn_hs *hs, uint64_t v)
{
    cn_wr64(hs->out + hs->out_len, v);
    hs->out_len += 8;
}

void cn_hs_init(cn_hs *hs, const char *our_name, uint32_t our_creation,
                const cn_cookie *cookie)
{
    memset(hs, 0, sizeof *hs);
    hs->state = CN_HS_WAIT_NAME;
    hs->our_name = our_name;
    hs->our_creation = our_creation;
    hs->cookie = cookie;
}

void cn_hs_clear(cn_hs *hs) { sodium_memzero(&hs->challenge, sizeof hs->challenge); }

/* Whether a peer's flags hold what OTP 25 makes mandatory: each flag, or
 * DFLAG_MANDATORY_25_DIGEST, which stands for all of them (OTP 25 and later
 * accept a peer that sends the digest alone); *flags then gets them all. */
static bool mandatory_ok(uint64_t *flags)
{
    if (*flags & CN_DFLAG_MANDATORY_25_DIGEST)
        *flags |= CN_PEER_MANDATORY;
    return (*flags & CN_PEER_MANDATORY) == CN_PEER_MANDATORY;
}

static int fail(cn_hs *hs, int err)
{
    hs->state = CN_HS_FAILED;
    hs->out_len = 0;
    cn_hs_clear(hs);
    return err;
}

/* The peer's proof that it knows the cookie: MD5(cookie ++ our challenge),
 * compared in constant time; the expected digest is wiped after. */
static int digest_ok(const cn_hs *hs, const unsigned char got[16])
{
    unsigned char want[16];
    cn_cookie_digest(hs->cookie, hs->challenge, want);
    int ok = sodium_memcmp(want, got, 16) == 0;
    sodium_memzero(want, sizeof want);
    return ok;
}

/* A plausible node name: name@host, printable, no spaces. */
static int name_ok(const unsigned char *n, size_t len)
{
    if (len < 3 || len > CN_MAX_NODE_NAME)
        return 0;
    const unsigned char *at = memchr(n, '@', len);
    if (!at || at == n || at == n + len - 1)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (n[i] <= ' ' || n[i] == 127)
            return 0;
    return 1;
}

int cn_hs_init_connect(cn_hs *hs, const char *our_name, uint32_t our_creation,
                       const cn_cookie *cookie, const char *peer_name)
{
    cn_hs_init(hs, our_name, our_creation, cookie);
    hs->initiator = 1;
    size_t plen = strlen(peer_name);
    if (!name_ok((const unsigned char *)peer_name, plen))
        return fail(hs, -1);
    memcpy(hs->peer_name, peer_name, plen + 1);
    /* 'N' flags:64 creation:32 nlen:16 name */
    size_t our_len = strlen(our_name);
    put16(hs, (unsigned)(1 + 8 + 4 + 2 + our_len));
    put8(hs, 'N');
    put64(hs, CN_OUR_FLAGS);
    put32(hs, our_creation);
    put16(hs, (unsigned)our_len);
    put(hs, our_name, our_len);
    hs->state = CN_HS_I_WAIT_STATUS;
    return 0;
}

/* Adds a status packet 's' ++ text. */
static void put_status(cn_hs *hs, const char *text)
{
    size_t n = strlen(text);
    put16(hs, (unsigned)(1 + n));
    put8(hs, 's');
    put(hs, text, n);
}

/* Fails but keeps hs->out (a status packet to send before closing). */
static int fail_keep(cn_hs *hs, int err)
{
    hs->state = CN_HS_FAILED;
    cn_hs_clear(hs);
    return err;
}

static int status_is(const unsigned char *p, size_t len, const char *text)
{
    size_t n = strlen(text);
    return len == 1 + n && memcmp(p + 1, text, n) == 0;
}

int cn_hs_decide(cn_hs *hs, int status)
{
    hs->out_len = 0;
    if (hs->state != CN_HS_DECIDING)
        return fail(hs, CN_HS_EPROTO);
    if (hs->initiator) {
        if (status == CN_HS_ST_TRUE) {
            put_status(hs, "true");
            hs->state = CN_HS_I_WAIT_CHALLENGE;
            return CN_HS_CONTINUE;
        }
        put_status(hs, "false");
        return fail_keep(hs, CN_HS_EALIVE);
    }
    switch (status) {
    case CN_HS_ST_OK:
    case CN_HS_ST_OK_SIMULTANEOUS:
        break;
    case CN_HS_ST_NOK:
        put_status(hs, "nok");
        return fail_keep(hs, CN_HS_ENOK);
    default:
        put_status(hs, "not_allowed");
        return fail_keep(hs, CN_HS_ENOTALLOWED);
    }
    randombytes_buf(&hs->challenge, sizeof hs->challenge);
    put_status(hs, status == CN_HS_ST_OK ? "ok" : "ok_simultaneous");
    size_t our_len = strlen(hs->our_name);
    put16(hs, (unsigned)(1 + 8 + 4 + 4 + 2 + our_len));
    put8(hs, 'N');
    put64(hs, CN_OUR_FLAGS);
    put32(hs, hs->challenge);
    put32(hs, hs->our_creation);
    put16(hs, (unsigned)our_len);
    put(hs, hs->our_name, our_len);
    hs->state = CN_HS_WAIT_REPLY;
    return CN_HS_CONTINUE;
}

int cn_hs_packet(cn_hs *hs, const unsigned char *p, size_t len)
{
    hs->out_len = 0;
    switch (hs->state) {
    case CN_HS_WAIT_NAME: {
        /* 'N' flags:64 creation:32 nlen:16 name */
        if (len < 15 || p[0] != 'N')
            return fail(hs, CN_HS_EPROTO);
        hs->peer_flags = cn_rd64(p + 1);
        hs->peer_creation = cn_rd32(p + 9);
        size_t nlen = cn_rd16(p + 13);
        if (15 + nlen != len)
            return fail(hs, CN_HS_EPROTO);
        if (!name_ok(p + 15, nlen))
            return fail(hs, CN_HS_ENAME);
        if (!mandatory_ok(&hs->peer_flags)) {
            /* as BEAM: the peer is told before the connection closes */
            hs->out_len = 0;
            put_status(hs, "not_allowed");
            return fail_keep(hs, CN_HS_EFLAGS);
        }
        memcpy(hs->peer_name, p + 15, nlen);
        hs->peer_name[nlen] = 0;
        hs->state = CN_HS_DECIDING;
        return CN_HS_DECIDE;
    }
    case CN_HS_WAIT_REPLY: {
        /* 'r' peer_challenge:32 digest:16 */
        if (len != 21 || p[0] != 'r')
            return fail(hs, CN_HS_EPROTO);
        if (!digest_ok(hs, p + 5))
            return fail(hs, CN_HS_ECOOKIE);
        unsigned char ack[16];
        cn_cookie_digest(hs->cookie, cn_rd32(p + 1), ack);
        put16(hs, 17);
        put8(hs, 'a');
        put(hs, ack, 16);
        sodium_memzero(ack, sizeof ack);
        cn_hs_clear(hs);
        hs->state = CN_HS_DONE;
        return CN_HS_UP;
    }
    case CN_HS_I_WAIT_STATUS:
        if (len < 2 || p[0] != 's')
            return fail(hs, CN_HS_EPROTO);
        if (status_is(p, len, "ok") || status_is(p, len, "ok_simultaneous")) {
            hs->state = CN_HS_I_WAIT_CHALLENGE;
            return CN_HS_CONTINUE;
        }
        if (status_is(p, len, "nok"))
            return fail(hs, CN_HS_ENOK);
        if (status_is(p, len, "not_allowed"))
            return fail(hs, CN_HS_ENOTALLOWED);
        if (status_is(p, len, "alive")) {
            hs->state = CN_HS_DECIDING;
            return CN_HS_DECIDE;
        }
        return fail(hs, CN_HS_EPROTO); /* "named:" is for dynamic names: not ours */
    case CN_HS_I_WAIT_CHALLENGE: {
        /* 'N' flags:64 challenge:32 creation:32 nlen:16 name */
        if (len < 19 || p[0] != 'N')
            return fail(hs, CN_HS_EPROTO);
        uint64_t flags = cn_rd64(p + 1);
        uint32_t peer_challenge = cn_rd32(p + 9);
        uint32_t creation = cn_rd32(p + 13);
        size_t nlen = cn_rd16(p + 17);
        if (19 + nlen != len)
            return fail(hs, CN_HS_EPROTO);
        if (nlen != strlen(hs->peer_name) || memcmp(p + 19, hs->peer_name, nlen) != 0)
            return fail(hs, CN_HS_ENAME);
        if (!mandatory_ok(&flags))
            return fail(hs, CN_HS_EFLAGS);
        hs->peer_flags = flags;
        hs->peer_creation = creation;
        randombytes_buf(&hs->challenge, sizeof hs->challenge);
        unsigned char digest[16];
        cn_cookie_digest(hs->cookie, peer_challenge, digest);
        put16(hs, 21);
        put8(hs, 'r');
        put32(hs, hs->challenge);
        put(hs, digest, 16);
        sodium_memzero(digest, sizeof digest);
        hs->state = CN_HS_I_WAIT_ACK;
        return CN_HS_CONTINUE;
    }
    case CN_HS_I_WAIT_ACK: {
        /* 'a' digest:16 */
        if (len != 17 || p[0] != 'a')
            return fail(hs, CN_HS_EPROTO);
        if (!digest_ok(hs, p + 1))
            return fail(hs, CN_HS_ECOOKIE);
        cn_hs_clear(hs);
        hs->state = CN_HS_DONE;
        return CN_HS_UP;
    }
    default:
        return fail(hs, CN_HS_EPROTO);
    }
}

const char *cn_hs_strerror(int err)
{
    switch (err) {
    case CN_HS_EPROTO: return "handshake protocol error";
    case CN_HS_EFLAGS: return "peer lacks mandatory distribution flags";
    case CN_HS_ENAME: return "bad peer node name";
    case CN_HS_ECOOKIE: return "wrong cookie (digest mismatch)";
    case CN_HS_ENOK: return "simultaneous connect: the other attempt wins";
    case CN_HS_ENOTALLOWED: return "connection not allowed";
    case CN_HS_EALIVE: return "peer still has a connection from us";
    }
    return "ok";
}
