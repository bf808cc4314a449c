/* net_kernel.c - see net_kernel.h. */
#include "net_kernel.h"

#include "gen_server.h"

/* {is_auth, Node} -> yes */
static int is_auth(cn_node *n, cn_proc *p, const cn_gen_from *from, const cn_gen_call *row, const cn_slice *el,
                    ei_x_buff *x)
{
    return ei_x_encode_atom(x, "yes");
}

static const cn_gen_call calls[] = {{"is_auth", 2, is_auth, NULL}};

static void handle_call(cn_node *n, cn_proc *p, const cn_gen_from *from,
                        cn_slice req)
{
    cn_gen_dispatch(n, p, from, req, calls, sizeof calls / sizeof calls[0]);
}

static const cn_gen_ops ops = {.handle_call = handle_call};

cn_proc *cn_net_kernel_start(cn_node *n)
{
    cn_proc *p = cn_gen_start(n, &ops, NULL, "net_kernel");
    if (p)
        p->trap_exit = 1; /* links from peers must not kill it */
    return p;
}
