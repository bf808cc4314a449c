/* net_kernel.c - see net_kernel.h. */
#include "net_kernel.h"

#include "gen_server.h"

static void handle_call(cn_node *n, cn_proc *p, const cn_gen_from *from,
                        cn_slice req)
{
    cn_slice el[2];
    ei_x_buff x;
    if (ei_x_new(&x))
        return;
    if (cn_term_tuple(req, el, 2) == 2 && cn_term_is_atom(el[0], "is_auth")) {
        ei_x_encode_atom(&x, "yes");
    } else {
        cn_gen_encode_unknown_call(&x, req);
    }
    cn_gen_reply_x(n, p, from, &x);
    ei_x_free(&x);
}

static const cn_gen_ops ops = {.handle_call = handle_call};

cn_proc *cn_net_kernel_start(cn_node *n)
{
    cn_proc *p = cn_gen_start(n, &ops, NULL, "net_kernel");
    if (p)
        p->trap_exit = 1; /* links from peers must not kill it */
    return p;
}
