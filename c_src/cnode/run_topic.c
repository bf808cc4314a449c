/* run_topic.c - see run_topic.h. */
#include "run_topic.h"

#include <stdlib.h>
#include <string.h>

#define PREFIX_LEN (sizeof COUNCIL_TOPIC_PREFIX - 1)

char *cn_run_topic(const char *run_id, size_t id_len, size_t *len)
{
    char *t = malloc(PREFIX_LEN + id_len + 1);
    if (!t)
        return NULL;
    memcpy(t, COUNCIL_TOPIC_PREFIX, PREFIX_LEN);
    memcpy(t + PREFIX_LEN, run_id, id_len);
    t[PREFIX_LEN + id_len] = 0;
    *len = PREFIX_LEN + id_len;
    return t;
}

bool cn_is_run_topic(const char *topic, size_t len, const char *run_id, size_t id_len)
{
    return len == PREFIX_LEN + id_len && memcmp(topic, COUNCIL_TOPIC_PREFIX, PREFIX_LEN) == 0 &&
           memcmp(topic + PREFIX_LEN, run_id, id_len) == 0;
}

void cn_run_id_fix(council_start_opts *so, char gen_id[23])
{
    if (so->run_id)
        return;
    council_run_id_generate(gen_id);
    so->run_id = gen_id;
    so->run_id_len = strlen(gen_id);
}
