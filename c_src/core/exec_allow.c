/* exec_allow.c - which programs exec members and exec tools may run in a
 * context (council_ctx_set_exec_allow): the list, resolving a program
 * the way it will be run, and the check of a spec against the list. */
#include "council_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void free_list(council_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_exec_allow; i++)
        free(ctx->exec_allow[i]);
    free(ctx->exec_allow);
    ctx->exec_allow = NULL;
    ctx->n_exec_allow = 0;
}

void cx_exec_allow_free(council_ctx *ctx)
{
    free_list(ctx);
    ctx->exec_restricted = false;
}

int council_ctx_set_exec_allow(council_ctx *ctx, const char *const *paths, size_t n)
{
    if (!ctx || (n && !paths))
        return COUNCIL_EINVAL;
    if (!paths) {
        cx_exec_allow_free(ctx);
        return COUNCIL_OK;
    }
    char **list = n ? calloc(n, sizeof *list) : NULL;
    if (n && !list)
        return COUNCIL_ENOMEM;
    int rc = COUNCIL_OK;
    for (size_t i = 0; i < n && rc == COUNCIL_OK; i++) {
        struct stat st;
        if (!paths[i] || !paths[i][0]) {
            rc = COUNCIL_EINVAL;
        } else if (!(list[i] = realpath(paths[i], NULL))) {
            rc = errno == ENOMEM ? COUNCIL_ENOMEM : COUNCIL_EINVAL;
        } else if (stat(list[i], &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
            rc = COUNCIL_EINVAL;
        }
    }
    if (rc != COUNCIL_OK) {
        for (size_t i = 0; i < n; i++)
            free(list[i]);
        free(list);
        return rc;
    }
    free_list(ctx);
    ctx->exec_allow = list;
    ctx->n_exec_allow = n;
    ctx->exec_restricted = true;
    return COUNCIL_OK;
}

/* A bare name (no '/') found on PATH as execvp finds it: the first
 * executable regular file. 0 with the path in out, or -1. */
static int search_path(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t dl = end ? (size_t)(end - path) : strlen(path);
        /* an empty entry is the current directory, as for execvp */
        int w = dl ? snprintf(out, cap, "%.*s/%s", (int)dl, path, name)
                   : snprintf(out, cap, "./%s", name);
        struct stat st;
        if (w > 0 && (size_t)w < cap && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
            access(out, X_OK) == 0)
            return 0;
        path += dl + (end ? 1 : 0);
    }
    return -1;
}

/* Whether a resolved (real) path is in the list: the program itself, or
 * under a directory of it (at any depth). */
static bool listed(const council_ctx *ctx, const char *real)
{
    for (size_t i = 0; i < ctx->n_exec_allow; i++) {
        const char *a = ctx->exec_allow[i];
        size_t al = strlen(a);
        if (strcmp(real, a) == 0)
            return true;
        /* a directory: "/" itself, or a prefix followed by '/' */
        if (strncmp(real, a, al) == 0 && (a[al - 1] == '/' || real[al] == '/'))
            return true;
    }
    return false;
}

int cx_exec_resolve(const council_ctx *ctx, const char *prog, const char *cwd, char **out)
{
    *out = NULL;
    if (!prog || !*prog)
        return COUNCIL_EINVAL;
    if (!ctx->exec_restricted)
        return COUNCIL_OK; /* run as given */
    char buf[PATH_MAX];
    int w;
    if (!strchr(prog, '/')) {
        if (search_path(prog, buf, sizeof buf))
            return COUNCIL_EPROVIDER;
    } else if (prog[0] != '/' && cwd && *cwd) {
        /* relative to the child's working directory, where it will be run */
        if ((w = snprintf(buf, sizeof buf, "%s/%s", cwd, prog)) < 0 || (size_t)w >= sizeof buf)
            return COUNCIL_EPROVIDER;
    } else if ((w = snprintf(buf, sizeof buf, "%s", prog)) < 0 || (size_t)w >= sizeof buf) {
        return COUNCIL_EPROVIDER;
    }
    char *real = realpath(buf, NULL);
    if (!real)
        return errno == ENOMEM ? COUNCIL_ENOMEM : COUNCIL_EPROVIDER;
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode) || !listed(ctx, real)) {
        free(real);
        return COUNCIL_EPROVIDER;
    }
    *out = real;
    return COUNCIL_OK;
}

/* One program named by a spec: allowed, or err filled. */
static int check_prog(const council_ctx *ctx, json_t *argv, const char *cwd,
                      const char *prefix, const char *field, council_spec_error *err)
{
    char *real = NULL;
    int rc = cx_exec_resolve(ctx, json_string_value(json_array_get(argv, 0)), cwd, &real);
    free(real);
    if (rc == COUNCIL_OK || rc == COUNCIL_ENOMEM)
        return rc;
    if (err) {
        snprintf(err->field, sizeof err->field, "%s%s", prefix, field);
        snprintf(err->message, sizeof err->message, "program not allowed");
    }
    return COUNCIL_EPROVIDER;
}

/* The members of spec (and of its sub-councils, their fields under
 * prefix): exec argv[0] and every tool's exec[0]. */
static int check_spec(const council_ctx *ctx, const council_spec *spec, const char *prefix,
                      unsigned depth, council_spec_error *err)
{
    char field[128];
    int rc;
    for (size_t i = 0; i < spec->n_members; i++) {
        const spec_member *m = &spec->members[i];
        json_t *cwd = json_object_get(m->options, "cwd");
        const char *cwd_s = json_is_string(cwd) ? json_string_value(cwd) : NULL;
        if (strcmp(m->provider, "exec") == 0) {
            snprintf(field, sizeof field, "members[%zu].options.argv", i);
            if ((rc = check_prog(ctx, json_object_get(m->options, "argv"), cwd_s, prefix,
                                 field, err)))
                return rc;
        }
        json_t *tools = json_object_get(m->options, "tools"), *t;
        size_t k;
        json_array_foreach(tools, k, t) {
            json_t *ex = json_object_get(t, "exec");
            if (!json_is_array(ex) || !json_array_size(ex))
                continue;
            snprintf(field, sizeof field, "members[%zu].options.tools[%zu].exec", i, k);
            if ((rc = check_prog(ctx, ex, NULL, prefix, field, err)))
                return rc;
        }
        if (m->sub && depth < 8) {
            char sub[128];
            snprintf(sub, sizeof sub, "%smembers[%zu].options.spec.", prefix, i);
            if ((rc = check_spec(ctx, m->sub, sub, depth + 1, err)))
                return rc;
        }
    }
    return COUNCIL_OK;
}

int cx_exec_check_spec(const council_ctx *ctx, const council_spec *spec,
                       council_spec_error *err)
{
    return ctx->exec_restricted ? check_spec(ctx, spec, "", 0, err) : COUNCIL_OK;
}
