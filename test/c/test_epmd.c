/* test_epmd.c - finding the epmd program to start when none answers
 * (cn_epmd_program, epmd.c): the epmd on PATH first, else the one next to
 * the erl on PATH (its own directory, or the erts-VSN/bin of its
 * installation, through symlinks), never a file that is not executable.
 * Starting it and registering is tested against a real epmd
 * (test/cnode/standalone_test.exs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../c_src/cnode/epmd.h"

static char root[PATH_MAX];

/* root/rel as a file with mode (parents made). */
static void make_file(const char *rel, mode_t mode)
{
    char path[PATH_MAX * 2], dir[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = 0;
        mkdir(dir, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void set_path(const char *rels)
{
    char path[PATH_MAX * 4] = "";
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", rels);
    for (char *tok = strtok(copy, ":"); tok; tok = strtok(NULL, ":")) {
        size_t n = strlen(path);
        snprintf(path + n, sizeof path - n, "%s%s/%s", n ? ":" : "", root, tok);
    }
    setenv("PATH", path, 1);
}

/* The program found, resolved (".." and symlinks), relative to root. */
static const char *found(void)
{
    static char out[PATH_MAX], real[PATH_MAX], realroot[PATH_MAX];
    if (cn_epmd_program(out, sizeof out) != 0)
        return NULL;
    assert_non_null(realpath(out, real));
    assert_non_null(realpath(root, realroot));
    assert_memory_equal(real, realroot, strlen(realroot));
    return real + strlen(realroot) + 1;
}

static int setup(void **st)
{
    (void)st;
    snprintf(root, sizeof root, "%s/test_epmd.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(root));
    return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **st)
{
    (void)st;
    assert_int_equal(nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
    return 0;
}

static void the_epmd_on_path_first(void **st)
{
    (void)st;
    make_file("a/epmd", 0644); /* not executable: skipped */
    make_file("b/epmd", 0755);
    make_file("c/epmd", 0755);
    set_path("none:a:b:c");
    assert_string_equal(found(), "b/epmd");
}

static void else_next_to_erl_through_its_symlink(void **st)
{
    (void)st;
    /* an installation: lib/erlang/bin/erl, epmd only in its erts-VSN/bin;
     * on PATH a symlink to that erl, as /usr/bin/erl is on Debian */
    make_file("lib/erlang/bin/erl", 0755);
    make_file("lib/erlang/erts-13.1.5/bin/epmd", 0755);
    char link_dir[PATH_MAX * 2], link[PATH_MAX * 3], target[PATH_MAX * 3];
    snprintf(link_dir, sizeof link_dir, "%s/usr-bin", root);
    assert_int_equal(mkdir(link_dir, 0700), 0);
    snprintf(link, sizeof link, "%s/erl", link_dir);
    snprintf(target, sizeof target, "%s/lib/erlang/bin/erl", root);
    assert_int_equal(symlink(target, link), 0);
    set_path("usr-bin");
    assert_string_equal(found(), "lib/erlang/erts-13.1.5/bin/epmd");

    /* an epmd in erl's own directory comes first */
    make_file("lib/erlang/bin/epmd", 0755);
    assert_string_equal(found(), "lib/erlang/bin/epmd");
}

static void none_at_all(void **st)
{
    (void)st;
    make_file("x/erl", 0644); /* an erl that is not executable is no erl */
    set_path("x:y");
    char out[PATH_MAX];
    assert_int_equal(cn_epmd_program(out, sizeof out), -1);
    unsetenv("PATH");
    assert_int_equal(cn_epmd_program(out, sizeof out), -1);
}

int main(void)
{
    char *saved = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(the_epmd_on_path_first, setup, teardown),
        cmocka_unit_test_setup_teardown(else_next_to_erl_through_its_symlink, setup, teardown),
        cmocka_unit_test_setup_teardown(none_at_all, setup, teardown),
    };
    int rc = cmocka_run_group_tests_name("epmd", tests, NULL, NULL);
    if (saved)
        setenv("PATH", saved, 1);
    free(saved);
    return rc;
}
