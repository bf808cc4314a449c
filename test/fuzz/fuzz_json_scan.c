/* fuzz_json_scan.c - libFuzzer, differential: json_scan must accept
 * exactly what jansson accepts, and every string it finds must read as
 * jansson reads it. Any disagreement aborts. Inputs with a raw NUL byte
 * are left out: jansson 2.14 drops a NUL that follows a number (it accepts
 * {"n":7<NUL>}), which no JSON grammar allows; the scanner refuses it. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memchr(data, 0, size))
        return 0;
    jscan_want w[] = {{.path = "a"}, {.path = "choices.0.delta.content"}, {.path = "0"}};
    int ours = jscan((const char *)data, size, w, 3);
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if ((ours == 0) != (j != NULL))
        abort();
    if (j && json_is_object(j) && w[0].type == JSCAN_STRING) {
        json_t *a = json_object_get(j, "a");
        char *buf = malloc(w[0].len + 1);
        size_t n = jscan_string(&w[0], buf);
        if (!json_is_string(a) || n != json_string_length(a) ||
            memcmp(buf, json_string_value(a), n) != 0)
            abort();
        free(buf);
    }
    json_decref(j);
    return 0;
}
