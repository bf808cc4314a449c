/* reasons.c - see reasons.h. */
#include "reasons.h"

#include "council.h"

static const struct {
    int err;
    const char *reason;
} reasons[CN_N_REASONS] = {
    {COUNCIL_ELIMIT, "limit"},
    {COUNCIL_ENOMEM, "enomem"},
    {COUNCIL_EIO, "noconnection"},
    {COUNCIL_EEXIST, "already_started"},
};

static const cn_call_exit call_exits[CN_N_CALL_EXITS] = {
    {"normal", 0, "noproc"},
    {"nodedown", 2, "noconnection"},
};

int cn_reason_index(int err)
{
    for (int i = 0; i < CN_N_REASONS; i++)
        if (reasons[i].err == err)
            return i;
    return -1;
}

const char *cn_reason_name(int index)
{
    return reasons[index].reason;
}

const cn_call_exit *cn_call_exit_at(int index)
{
    return &call_exits[index];
}
