/* schema_dump.c - writes council_schema_json() to stdout: `make` puts it
 * in priv/schema.json for the Elixir library to read at compile time. */
#include <council.h>

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    char *s = council_schema_json();
    if (!s) {
        fprintf(stderr, "schema_dump: out of memory\n");
        return 1;
    }
    int ok = puts(s) >= 0;
    free(s);
    return ok ? 0 : 1;
}
