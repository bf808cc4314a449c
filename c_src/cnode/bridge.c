/* bridge.c - see bridge.h: what the service, the run processes and the
 * beam modules share about the protocol. */
#include "bridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen_server.h"
#include "pending.h"
#include "reasons.h"

const char *cn_bridge_reason(int err, const char *otherwise)
{
    int i = cn_reason_index(err);
    return i < 0 ? otherwise : cn_reason_name(i);
}

int cn_bridge_encode_error(ei_x_buff *x, int err, const char *otherwise)
{
    return cn_gen_encode_error(x, cn_bridge_reason(err, otherwise));
}

int cn_bridge_hook_add(cn_bridge *b, const cn_run_hook *ops, void *arg)
{
    if (cn_bridge_hook_arg(b, ops))
        return COUNCIL_EEXIST;
    if (b->nhooks == CN_RUN_HOOKS_MAX)
        return COUNCIL_ELIMIT;
    b->hooks[b->nhooks].ops = ops;
    b->hooks[b->nhooks].arg = arg;
    b->nhooks++;
    return 0;
}

void *cn_bridge_hook_arg(const cn_bridge *b, const cn_run_hook *ops)
{
    for (size_t i = 0; i < b->nhooks; i++)
        if (b->hooks[i].ops == ops)
            return b->hooks[i].arg;
    return NULL;
}

void cn_bridge_hook_remove(cn_bridge *b, const cn_run_hook *ops)
{
    for (size_t i = 0; i < b->nhooks; i++) {
        if (b->hooks[i].ops == ops) {
            for (size_t j = i + 1; j < b->nhooks; j++)
                b->hooks[j - 1] = b->hooks[j];
            b->nhooks--;
            return;
        }
    }
}

cn_hooked *cn_hooked_new(cn_bridge *b, const cn_run_hook *ops, const cn_hooked_kind *kind,
                         int *rc)
{
    *rc = COUNCIL_EEXIST;
    if (cn_bridge_hook_arg(b, ops))
        return NULL;
    *rc = COUNCIL_ENOMEM;
    cn_hooked *h = calloc(1, sizeof *h);
    if (!h || !(h->calls = cn_pending_new())) {
        free(h);
        return NULL;
    }
    *h = (cn_hooked){b, ops, kind, h->calls};
    if ((*rc = cn_bridge_hook_add(b, ops, h)) != 0) {
        cn_pending_free(h->calls);
        free(h);
        return NULL;
    }
    return h;
}

size_t cn_hooked_count(const cn_bridge *b, const cn_run_hook *ops)
{
    const cn_hooked *h = cn_bridge_hook_arg(b, ops);
    return h ? cn_pending_count(h->calls) : 0;
}

/* Drops (unrefs) the requests of owner, every one for NULL. */
static void drop(cn_hooked *h, const void *owner)
{
    for (cn_pending_entry *e = cn_pending_detach(h->calls, owner); e;) {
        h->kind->unref(e->item);
        e = cn_pending_entry_free(e);
    }
}

void cn_hooked_server_down(cn_bridge *b, void *arg, struct cn_run_proc *rp, cn_slice reason)
{
    cn_hooked *h = arg;
    cn_pending_entry *e = cn_pending_detach(h->calls, rp);
    if (!e)
        return;
    char why[512], msg[600];
    cn_term_text(reason, why, sizeof why);
    cn_beam_server_down_text(msg, sizeof msg, h->kind->beam, why);
    while (e) {
        h->kind->fail(e->item, msg);
        h->kind->unref(e->item);
        e = cn_pending_entry_free(e);
    }
}

int cn_hooked_send(cn_hooked *h, struct cn_run_proc *rp, const cn_pid *server, uint64_t id,
                   void *item, const ei_x_buff *x)
{
    if (cn_pending_add(h->calls, id, item, rp) != 0)
        return COUNCIL_ENOMEM;
    h->kind->ref(item);
    if (cn_node_send(h->b->node, server, cn_x_slice(x)) != 0) {
        h->kind->unref(cn_pending_take(h->calls, id));
        h->kind->fail(item, cn_beam_failure_text(h->kind->beam, CN_BEAM_UNREACHABLE));
    }
    return 0;
}

void cn_hooked_gone(cn_bridge *b, void *arg, struct cn_run_proc *rp)
{
    drop(arg, rp);
}

void cn_hooked_free(cn_hooked *h)
{
    if (!h)
        return;
    drop(h, NULL);
    cn_pending_free(h->calls);
    cn_bridge_hook_remove(h->b, h->ops);
    free(h);
}

void cn_hooked_release(void *arg)
{
    cn_hooked_free(arg);
}
