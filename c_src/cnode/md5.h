/* md5.h - MD5 (RFC 1321), only for the distribution handshake digest.
 *
 * Owns nothing but the context struct. Not for any security purpose beyond
 * what the Erlang handshake demands (MD5(cookie ++ decimal challenge)).
 */
#ifndef CN_MD5_H
#define CN_MD5_H

#include <stddef.h>
#include <stdint.h>

typedef struct cn_md5_ctx {
    uint32_t state[4];
    uint64_t nbytes;          /* total bytes fed so far */
    unsigned char buf[64];    /* pending partial block */
    size_t buflen;
} cn_md5_ctx;

void cn_md5_init(cn_md5_ctx *c);
void cn_md5_update(cn_md5_ctx *c, const void *data, size_t len);
/* Writes the 16-byte digest and wipes the context. */
void cn_md5_final(cn_md5_ctx *c, unsigned char out[16]);
/* One-shot helper. */
void cn_md5(const void *data, size_t len, unsigned char out[16]);

#endif
