/* service.c - see service.h. */
#include "service.h"

#include <stdlib.h>

#include "gen_server.h"

typedef struct service {
    cn_service_config cfg;
} service;

static void put_count(ei_x_buff *x, const char *key, size_t v)
{
    ei_x_encode_atom(x, key);
    ei_x_encode_ulong(x, (unsigned long)v);
}

static void handle_call(cn_node *n, cn_proc *p, const cn_gen_from *from,
                        cn_slice req)
{
    ei_x_buff x;
    if (ei_x_new(&x))
        return;
    if (cn_ctl_is_atom(&req, "ping")) {
        ei_x_encode_atom(&x, "pong");
    } else if (cn_ctl_is_atom(&req, "stats")) {
        cn_node_stats st;
        cn_node_stats_get(n, &st);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_encode_map_header(&x, 6);
        put_count(&x, "connections", st.connections);
        put_count(&x, "processes", st.processes);
        put_count(&x, "links", st.links);
        put_count(&x, "monitors", st.monitors);
        put_count(&x, "runs", 0);
        put_count(&x, "subscriptions", 0);
    } else {
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "error");
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "unknown_call");
        ei_x_append_buf(&x, (const char *)req.p, (int)req.len);
    }
    cn_gen_reply_x(n, p, from, &x);
    ei_x_free(&x);
}

static void terminate(cn_node *n, cn_proc *p, cn_slice reason)
{
    (void)n;
    (void)reason;
    free(cn_gen_state(p));
}

static const cn_gen_ops ops = {.handle_call = handle_call, .terminate = terminate};

cn_proc *cn_service_start(cn_node *n, const cn_service_config *cfg)
{
    service *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->cfg = *cfg;
    cn_proc *p = cn_gen_start(n, &ops, s, cfg->name);
    if (!p) {
        free(s);
        return NULL;
    }
    /* A client linking to the service must not be able to take it down:
     * exit signals become {'EXIT', From, Reason} messages (ignored). */
    p->trap_exit = 1;
    return p;
}
