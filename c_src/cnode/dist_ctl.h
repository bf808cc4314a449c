/* dist_ctl.h - distribution control messages: parse what BEAM sends, build
 * what we send.
 *
 * Owns nothing: parsed messages are views (pointers into the caller's frame
 * buffer), valid while that buffer is. A "term" here is encoded external
 * term format WITHOUT the 131 version byte. Parsing runs cn_term_check on the
 * control tuple and on the payload before any ei_decode_* call; the element
 * shapes of each control tuple are checked too (pids where pids belong,
 * atoms where names belong, references or pids/atoms where the protocol
 * allows them). Encoders append one whole frame (4-byte length, 'p', 131
 * control tuple, optional 131 payload) to an ei_x_buff, so a frame can be
 * queued atomically.
 */
#ifndef CN_DIST_CTL_H
#define CN_DIST_CTL_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "term.h"

/* Control operation codes (erl_dist_protocol). */
enum {
    CN_DOP_LINK = 1,
    CN_DOP_SEND = 2,
    CN_DOP_EXIT = 3,
    CN_DOP_UNLINK = 4,
    CN_DOP_REG_SEND = 6,
    CN_DOP_GROUP_LEADER = 7,
    CN_DOP_EXIT2 = 8,
    CN_DOP_SEND_TT = 12,
    CN_DOP_EXIT_TT = 13,
    CN_DOP_REG_SEND_TT = 16,
    CN_DOP_EXIT2_TT = 18,
    CN_DOP_MONITOR_P = 19,
    CN_DOP_DEMONITOR_P = 20,
    CN_DOP_MONITOR_P_EXIT = 21,
    CN_DOP_SEND_SENDER = 22,
    CN_DOP_SEND_SENDER_TT = 23,
    CN_DOP_ALIAS_SEND = 33,
    CN_DOP_ALIAS_SEND_TT = 34,
    CN_DOP_UNLINK_ID = 35,
    CN_DOP_UNLINK_ID_ACK = 36
};

/* A parsed control message. `op` is the base operation (the _TT variants
 * are folded into their plain op, with `traced` set and the token ignored).
 * Which fields are set depends on op:
 *   LINK, UNLINK       from, to (pids)
 *   SEND               to (pid), payload      [SEND_SENDER: from too]
 *   REG_SEND           from (pid), to (atom), payload
 *   EXIT, EXIT2        from, to (pids), reason
 *   MONITOR_P, DEMONITOR_P  from (pid), to (pid or atom), ref
 *   MONITOR_P_EXIT     from (pid or atom: the watched), to (pid), ref, reason
 *   ALIAS_SEND         from (pid), ref (the alias), payload
 *   UNLINK_ID(_ACK)    id, from, to (pids)
 *   GROUP_LEADER       from, to (ignored by the node)
 */
typedef struct cn_ctl {
    int op;
    int traced;
    cn_slice from, to, ref, reason, payload;
    uint64_t id;
} cn_ctl;

enum {
    CN_CTL_OK = 0,
    CN_CTL_EVERSION = -20,  /* missing 131 version byte */
    CN_CTL_ESHAPE = -21,    /* not a tuple, wrong arity or element types */
    CN_CTL_EOP = -22,       /* unknown operation */
    CN_CTL_EPAYLOAD = -23,  /* payload missing, unexpected or trailing bytes */
    /* plus the CN_TERM_* codes of term.h for invalid terms */
};

/* Parses the bytes that follow the 'p' pass-through byte of a frame.
 * Returns CN_CTL_OK or a negative code; `out` is only valid on success. */
int cn_ctl_parse(const unsigned char *buf, size_t len,
                 const cn_term_limits *lim, cn_ctl *out);
/* As cn_ctl_parse, for the start of a frame that is not kept whole (over
 * the frame limit) or whose message is over the term limits: the control
 * message must be whole and valid, the payload is only the bytes after it
 * (after its 131), unchecked: read it with readers that stop at its end
 * (cn_term_len). */
int cn_ctl_parse_head(const unsigned char *buf, size_t len,
                      const cn_term_limits *lim, cn_ctl *out);

/* Frame encoders: each appends ONE whole frame to x (which the caller made
 * with ei_x_new). Terms (payload, reason, ref, target) are raw term bytes
 * without a version byte. Return 0, or -1 if the frame could not be built
 * (x may then hold a partial frame: discard it). */
int cn_frame_send(ei_x_buff *x, const cn_wpid *to, cn_slice payload);
int cn_frame_reg_send(ei_x_buff *x, const cn_wpid *from, const char *name,
                      cn_slice payload);
int cn_frame_link(ei_x_buff *x, const cn_wpid *from, const cn_wpid *to);
int cn_frame_exit(ei_x_buff *x, const cn_wpid *from, const cn_wpid *to,
                  cn_slice reason);
int cn_frame_exit2(ei_x_buff *x, const cn_wpid *from, const cn_wpid *to,
                   cn_slice reason);
int cn_frame_monitor_p(ei_x_buff *x, const cn_wpid *watcher, cn_slice target,
                       cn_slice ref);
int cn_frame_demonitor_p(ei_x_buff *x, const cn_wpid *watcher,
                         cn_slice target, cn_slice ref);
/* target as received in the MONITOR_P (pid or atom), watcher = their pid. */
int cn_frame_monitor_p_exit(ei_x_buff *x, cn_slice target,
                            const cn_wpid *watcher, cn_slice ref,
                            cn_slice reason);
int cn_frame_unlink_id(ei_x_buff *x, uint64_t id, const cn_wpid *from,
                       const cn_wpid *to);
int cn_frame_unlink_id_ack(ei_x_buff *x, uint64_t id, const cn_wpid *from,
                           const cn_wpid *to);
int cn_frame_alias_send(ei_x_buff *x, const cn_wpid *from, cn_slice alias,
                        cn_slice payload);

#endif
