/* fuzz_term.c - libFuzzer target for the ETF validator and the control
 * message decoder. The input is a frame body as it follows the 'p' byte:
 * 131 ControlTuple [131 Payload]. Everything the node does with such a
 * frame before dispatch is exercised: validation, parsing, element
 * accessors, gen_server message classification, From/alias-tag parsing and
 * ei decoding of validated terms.
 *
 *   clang -fsanitize=fuzzer,address,undefined ... (see scripts/fuzz)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "../../c_src/cnode/dist_ctl.h"
#include "../../c_src/cnode/gen_server.h"
#include "../../c_src/cnode/term.h"

/* Decodes a validated term with ei, iteratively enough for our limits:
 * ei_skip_term recursion is bounded by the validator's depth cap. */
static void ei_walk(cn_slice s)
{
    if (s.len == 0 || s.len > INT32_MAX)
        return;
    int idx = 0, type = 0, size = 0;
    const char *b = (const char *)s.p;
    if (ei_get_type(b, &idx, &type, &size) < 0)
        return;
    idx = 0;
    char atom[MAXATOMLEN_UTF8];
    erlang_pid pid;
    erlang_ref ref;
    long l;
    double d;
    int arity;
    switch (s.p[0]) {
    case 100: case 115: case 118: case 119:
        ei_decode_atom_as(b, &idx, atom, sizeof atom, ERLANG_UTF8, NULL, NULL);
        break;
    case 88: case 103:
        ei_decode_pid(b, &idx, &pid);
        break;
    case 90: case 114:
        ei_decode_ref(b, &idx, &ref);
        break;
    case 97: case 98:
        ei_decode_long(b, &idx, &l);
        break;
    case 70: case 99:
        ei_decode_double(b, &idx, &d);
        break;
    case 104: case 105:
        ei_decode_tuple_header(b, &idx, &arity);
        break;
    default:
        break;
    }
    idx = 0;
    ei_skip_term(b, &idx);
    if (idx < 0 || (size_t)idx > s.len)
        abort(); /* the validator let through something ei reads past */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. the validator alone, on the raw input */
    size_t used = 0;
    if (cn_term_check(data, size, NULL, &used) == CN_TERM_OK) {
        if (used > size)
            abort();
        ei_walk((cn_slice){data, used});
    }

    /* 2. the control message of a frame kept only in part (over the
     * limits): the payload is the unchecked rest, inside the input */
    cn_ctl h;
    if (cn_ctl_parse_head(data, size, NULL, &h) == CN_CTL_OK && h.payload.len &&
        (h.payload.p < data || h.payload.p + h.payload.len > data + size))
        abort();

    /* 3. the control message parser */
    cn_ctl m;
    if (cn_ctl_parse(data, size, NULL, &m) != CN_CTL_OK)
        return 0;
    cn_slice parts[5] = {m.from, m.to, m.ref, m.reason, m.payload};
    for (int i = 0; i < 5; i++) {
        if (!parts[i].len)
            continue;
        if (parts[i].p < data || parts[i].p + parts[i].len > data + size)
            abort();
        cn_wpid w;
        const char *name;
        size_t nl;
        cn_term_pid(parts[i], &w);
        cn_term_atom(parts[i], &name, &nl);
        ei_walk(parts[i]);
    }

    /* 4. what the gen_server layer does with the payload */
    if (m.payload.len) {
        cn_slice el[3];
        int ar = cn_term_tuple(m.payload, el, 3);
        if (ar == 3 && cn_term_is_atom(el[0], "$gen_call")) {
            cn_slice from[2];
            if (cn_term_tuple(el[1], from, 2) == 2) {
                size_t off, len;
                if (cn_gen_tag_alias(from[1], &off, &len) == 0 &&
                    off + len > from[1].len)
                    abort();
            }
        }
        for (int i = 0; i < ar; i++)
            ei_walk(el[i]);
    }
    return 0;
}
