/* fuzz_handshake.c - libFuzzer target for the handshake, the only code a
 * peer reaches before authentication. The input is a byte stream cut into
 * packets by 2-byte lengths, as conn.c does; each packet goes to
 * cn_hs_packet until the state machine fails or completes. Byte 0 of the
 * input: bit 0 patches the digest in an 'r' packet to the right value (so
 * the fuzzer also reaches the post-challenge path); bit 1 runs the
 * initiator side (dialing peer@host) instead of the accept side; bits 2-4
 * pick the answer to CN_HS_DECIDE.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "../../c_src/cnode/handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cn_cookie cookie;
    if (!cookie.bytes) {
        if (sodium_init() < 0 || cn_cookie_set(&cookie, "fuzz-cookie", 11))
            abort();
    }
    if (size < 1)
        return 0;
    int fix_digest = data[0] & 1;
    int initiator = data[0] & 2;
    int decision = (data[0] >> 2) % 6;
    data++;
    size--;
    cn_hs hs;
    if (initiator) {
        if (cn_hs_init_connect(&hs, "council@host", 7, &cookie, "peer@host"))
            abort();
    } else {
        cn_hs_init(&hs, "council@host", 7, &cookie);
    }
    size_t pos = 0;
    while (pos + 2 <= size) {
        size_t n = (size_t)data[pos] << 8 | data[pos + 1];
        if (n == 0 || n > 1024 || pos + 2 + n > size)
            break;
        unsigned char pkt[1024];
        memcpy(pkt, data + pos + 2, n);
        pos += 2 + n;
        if (fix_digest && hs.state == CN_HS_WAIT_REPLY && n == 21 && pkt[0] == 'r')
            cn_cookie_digest(&cookie, hs.challenge, pkt + 5);
        int rc = cn_hs_packet(&hs, pkt, n);
        if (rc == CN_HS_DECIDE)
            rc = cn_hs_decide(&hs, decision);
        if (hs.out_len > sizeof hs.out)
            abort();
        if (rc < 0 || rc == CN_HS_UP)
            break;
    }
    cn_hs_clear(&hs);
    return 0;
}
