/* fuzz_spec.c - libFuzzer target for council specs as JSON, through what
 * every host calls with a spec it was sent: council_ctx_spec_from_json
 * (parse, validation, compiling rounds and sub-councils) and
 * council_ctx_check_providers (providers, the exec allowlist: one program
 * allowed, the rest resolved and refused). A spec that is accepted must
 * print (council_spec_to_json) as JSON that is accepted again and prints
 * the same (the normal form is stable).
 *
 * Seeds: test/fuzz/corpus_spec (test/fuzz/service_seeds.exs). See scripts/fuzz.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "council.h"

static council_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) {
        council_config cc = {.max_spec_bytes = 1u << 20};
        const char *allow[] = {"/bin/cat"};
        if (!(ctx = council_ctx_new(&cc)) || council_ctx_set_exec_allow(ctx, allow, 1))
            abort();
    }
    council_spec *spec = NULL;
    council_spec_error err;
    if (council_ctx_spec_from_json(ctx, (const char *)data, size, &spec, &err) != COUNCIL_OK)
        return 0;
    council_ctx_check_providers(ctx, spec, &err);
    if (!council_spec_id(spec) && council_spec_member_count(spec) == 0)
        abort(); /* a valid spec has an id and members */
    char *json = council_spec_to_json(spec);
    council_spec_unref(spec);
    if (!json)
        return 0; /* out of memory */
    council_spec *again = NULL;
    int rc = council_spec_from_json(json, strlen(json), &again, &err);
    if (rc == COUNCIL_ENOMEM) {
        free(json);
        return 0;
    }
    if (rc != COUNCIL_OK)
        abort(); /* the printed form of an accepted spec is refused */
    char *json2 = council_spec_to_json(again);
    if (json2 && strcmp(json, json2) != 0)
        abort(); /* the normal form is not stable */
    free(json2);
    free(json);
    council_spec_unref(again);
    return 0;
}
