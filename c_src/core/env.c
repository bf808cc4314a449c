/* env.c - the context's own environment variables (council_ctx_setenv):
 * what the core reads in place of getenv(3) for API keys and proxies, so
 * that a host inside a threaded VM never has to call setenv(3). A short
 * array searched linearly: a host sets a few dozen names at most. Values
 * are secrets (API keys): wiped before their memory is given back. */
#include "council_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct cx_var {
    char *name;
    char *value;
} cx_var;

struct cx_env {
    cx_var *v;
    size_t n, cap;
};

#define NAME_MAX_BYTES 255
#define VALUE_MAX_BYTES 65535

static void wipe_free(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

static cx_var *find(const struct cx_env *e, const char *name)
{
    for (size_t i = 0; e && i < e->n; i++)
        if (strcmp(e->v[i].name, name) == 0)
            return &e->v[i];
    return NULL;
}

int council_ctx_setenv(council_ctx *ctx, const char *name, const char *value)
{
    if (!ctx || !name || !*name || strchr(name, '=') || strlen(name) > NAME_MAX_BYTES ||
        (value && strlen(value) > VALUE_MAX_BYTES))
        return COUNCIL_EINVAL;
    cx_var *var = find(ctx->env, name);
    if (!value) {
        if (var) {
            wipe_free(var->value);
            free(var->name);
            *var = ctx->env->v[--ctx->env->n];
        }
        return COUNCIL_OK;
    }
    char *copy = cx_strdup(value);
    if (!copy)
        return COUNCIL_ENOMEM;
    if (var) {
        wipe_free(var->value);
        var->value = copy;
        return COUNCIL_OK;
    }
    if (!ctx->env && !(ctx->env = calloc(1, sizeof *ctx->env)))
        goto nomem;
    struct cx_env *e = ctx->env;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        cx_var *v = realloc(e->v, cap * sizeof *v);
        if (!v)
            goto nomem;
        e->v = v;
        e->cap = cap;
    }
    char *n = cx_strdup(name);
    if (!n)
        goto nomem;
    e->v[e->n++] = (cx_var){n, copy};
    return COUNCIL_OK;
nomem:
    wipe_free(copy);
    return COUNCIL_ENOMEM;
}

const char *cx_env_get(const council_ctx *ctx, const char *name)
{
    const cx_var *var = find(ctx->env, name);
    return var ? var->value : getenv(name);
}

const char *cx_env_own(const council_ctx *ctx, const char *name)
{
    const cx_var *var = find(ctx->env, name);
    return var ? var->value : NULL;
}

void cx_env_free(council_ctx *ctx)
{
    struct cx_env *e = ctx->env;
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++) {
        wipe_free(e->v[i].value);
        free(e->v[i].name);
    }
    free(e->v);
    free(e);
    ctx->env = NULL;
}
