/* spec_cache.c - see spec_cache.h. */
#include "spec_cache.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashtab.h"

#define SLOTS 32

typedef struct slot {
    uint64_t hash;
    uint64_t used;   /* clock of the last hit; 0 = empty */
    char *json;
    size_t len;
    council_spec *spec;
} slot;

struct cn_spec_cache {
    council_ctx *ctx;
    uint64_t clock;
    slot slots[SLOTS];
};

cn_spec_cache *cn_spec_cache_new(council_ctx *ctx)
{
    cn_spec_cache *c = calloc(1, sizeof *c);
    if (c)
        c->ctx = ctx;
    return c;
}

void cn_spec_cache_free(cn_spec_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < SLOTS; i++) {
        council_spec_unref(c->slots[i].spec);
        free(c->slots[i].json);
    }
    free(c);
}

int cn_spec_cache_get(cn_spec_cache *c, const char *json, size_t len,
                      council_spec **out, council_spec_error *err)
{
    uint64_t h = cn_fnv1a(json, len, CN_FNV_BASIS);
    slot *victim = &c->slots[0];
    for (size_t i = 0; i < SLOTS; i++) {
        slot *s = &c->slots[i];
        if (s->used && s->hash == h && s->len == len && memcmp(s->json, json, len) == 0) {
            s->used = ++c->clock;
            *out = council_spec_ref(s->spec);
            return COUNCIL_OK;
        }
        if (s->used < victim->used)
            victim = s;
    }
    council_spec *spec = NULL;
    int rc = council_ctx_spec_from_json(c->ctx, json, len, &spec, err);
    if (rc != COUNCIL_OK)
        return rc;
    /* Validate now: the spec is frozen before it is shared. */
    rc = council_spec_validate(spec, err);
    if (rc != COUNCIL_OK) {
        council_spec_unref(spec);
        return rc;
    }
    char *copy = malloc(len ? len : 1);
    if (copy) {
        memcpy(copy, json, len);
        council_spec_unref(victim->spec);
        free(victim->json);
        *victim = (slot){.hash = h, .used = ++c->clock, .json = copy, .len = len,
                         .spec = council_spec_ref(spec)};
    }
    *out = spec; /* uncached when out of memory: still usable */
    return COUNCIL_OK;
}

int cn_spec_cache_check(cn_spec_cache *c, const char *json, size_t len,
                        council_spec_error *err)
{
    council_spec *spec = NULL;
    memset(err, 0, sizeof *err);
    int rc = cn_spec_cache_get(c, json, len, &spec, err);
    if (rc == COUNCIL_OK) {
        rc = council_ctx_check_providers(c->ctx, spec, err);
        council_spec_unref(spec);
    }
    /* as a start refuses them (docs/protocol.md) */
    if (rc == COUNCIL_ETOOBIG || (rc == COUNCIL_ENOMEM && !err->field[0])) {
        snprintf(err->field, sizeof err->field, "spec");
        snprintf(err->message, sizeof err->message, "%s",
                 rc == COUNCIL_ETOOBIG ? "spec larger than the configured limit"
                                       : council_strerror(rc));
    }
    return rc;
}
