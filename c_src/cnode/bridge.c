/* bridge.c - see bridge.h: what the service, the run processes and the
 * beam modules share about the protocol. */
#include "bridge.h"

#include <stdlib.h>
#include <string.h>

#include "gen_server.h"

static const struct {
    int err;
    const char *reason;
} reasons[] = {
    {COUNCIL_ELIMIT, "limit"},
    {COUNCIL_ENOMEM, "enomem"},
    {COUNCIL_EIO, "noconnection"},
    {COUNCIL_EEXIST, "already_started"},
};

const char *cn_bridge_reason(int err, const char *otherwise)
{
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].err == err)
            return reasons[i].reason;
    return otherwise;
}

int cn_bridge_encode_error(ei_x_buff *x, int err, const char *otherwise)
{
    return cn_gen_encode_error(x, cn_bridge_reason(err, otherwise));
}

char *cn_bridge_topic(const char *run_id, size_t id_len, size_t *len)
{
    size_t plen = sizeof COUNCIL_TOPIC_PREFIX - 1;
    char *t = malloc(plen + id_len + 1);
    if (!t)
        return NULL;
    memcpy(t, COUNCIL_TOPIC_PREFIX, plen);
    memcpy(t + plen, run_id, id_len);
    t[plen + id_len] = 0;
    *len = plen + id_len;
    return t;
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
