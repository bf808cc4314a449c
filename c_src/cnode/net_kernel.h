/* net_kernel.h - a registered `net_kernel` process, just enough for BEAM's
 * Node.ping/1 (net_adm:ping/1): gen_server call {is_auth, Node} -> yes.
 * Any other call gets {error, {unknown_call, Summary}} (gen_server.h).
 * Owns nothing else.
 */
#ifndef CN_NET_KERNEL_H
#define CN_NET_KERNEL_H

#include "node.h"

cn_proc *cn_net_kernel_start(cn_node *n);

#endif
