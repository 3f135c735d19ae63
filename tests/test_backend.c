/* SPDX-License-Identifier: MIT */
/* Backend selection: ZC_BACKEND in every form, the config field, the
 * environment options and their size suffixes, setuid programs. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"

static int create_env(const char *env_backend, const char *cfg_backend, uint32_t flags,
                      const char **chosen)
{
    if (env_backend)
        setenv("ZC_BACKEND", env_backend, 1);
    else
        unsetenv("ZC_BACKEND");
    struct zc_pool_config cfg;
    zc_pool_config_init(&cfg);
    cfg.backend = cfg_backend;
    cfg.flags = flags;
    cfg.arena_capacity = 64u << 20;
    zc_pool *pool = NULL;
    int rc = zc_pool_create(&pool, &cfg);
    *chosen = rc == 0 ? zc_backend_name(pool) : NULL;
    if (rc == 0)
        zc_pool_destroy(pool);
    else
        assert_null(pool);
    unsetenv("ZC_BACKEND");
    return rc;
}

static bool in_list(const char *name)
{
    for (const char *const *n = zc_backend_list(); *n; n++)
        if (strcmp(*n, name) == 0)
            return true;
    return false;
}

static const char *first_available(void)
{
    for (const char *const *n = zc_backend_list(); *n; n++)
        if (zc_backend_probe(*n, NULL, 0) == 0)
            return *n;
    return NULL;
}

static void auto_picks_first_available(void **state)
{
    (void)state;
    const char *chosen;
    assert_int_equal(create_env(NULL, NULL, 0, &chosen), 0);
    assert_string_equal(chosen, first_available());
    assert_int_equal(create_env("auto", NULL, 0, &chosen), 0);
    assert_string_equal(chosen, first_available());
    assert_int_equal(create_env("", NULL, 0, &chosen), 0);
    assert_string_equal(chosen, first_available());
    /* copy is always built and last in line */
    const char *const *list = zc_backend_list();
    size_t n = 0;
    while (list[n])
        n++;
    assert_string_equal(list[n - 1], "copy");
}

static void named_backend_is_that_or_an_error(void **state)
{
    (void)state;
    const char *chosen;
    for (const char *const *n = zc_backend_list(); *n; n++) {
        char why[256];
        int probe = zc_backend_probe(*n, why, sizeof(why));
        int rc = create_env(*n, NULL, 0, &chosen);
        if (probe == 0) {
            assert_int_equal(rc, 0);
            assert_string_equal(chosen, *n);
            assert_string_equal(why, "ok");
        } else {
            /* never a silent switch to another backend */
            assert_int_equal(rc, -ENOTSUP);
            assert_true(strlen(why) > 0);
            printf("note: backend %s unavailable here: %s\n", *n, why);
        }
    }
}

static void unknown_and_malformed_names_fail(void **state)
{
    (void)state;
    const char *chosen;
    assert_int_equal(create_env("bogus", NULL, 0, &chosen), -ENOENT);
    assert_int_equal(create_env("bogus,copy", NULL, 0, &chosen), -ENOENT);
    assert_int_equal(create_env("copy,bogus", NULL, 0, &chosen), -ENOENT);
    assert_int_equal(create_env("copy,", NULL, 0, &chosen), -EINVAL);
    assert_int_equal(create_env(",copy", NULL, 0, &chosen), -EINVAL);
    assert_int_equal(create_env("copy,,copy", NULL, 0, &chosen), -EINVAL);
    assert_int_equal(create_env("auto,copy", NULL, 0, &chosen), -EINVAL);
    assert_int_equal(create_env("a-very-long-backend-name-that-is-not-real", NULL, 0, &chosen),
                     -EINVAL);
    assert_int_equal(zc_backend_probe("bogus", NULL, 0), -ENOENT);
    assert_int_equal(zc_backend_probe(NULL, NULL, 0), -EINVAL);
}

static void lists_are_tried_in_order(void **state)
{
    (void)state;
    const char *chosen;
    for (const char *const *n = zc_backend_list(); *n; n++) {
        char spec[64];
        snprintf(spec, sizeof(spec), "%s,copy", *n);
        assert_int_equal(create_env(spec, NULL, 0, &chosen), 0);
        assert_string_equal(chosen, zc_backend_probe(*n, NULL, 0) == 0 ? *n : "copy");
    }
    assert_int_equal(create_env("copy,copy", NULL, 0, &chosen), 0);
    assert_string_equal(chosen, "copy");
}

static void config_field_and_ignore_env(void **state)
{
    (void)state;
    const char *chosen;
    /* the config field wins over the environment */
    assert_int_equal(create_env("bogus", "copy", 0, &chosen), 0);
    assert_string_equal(chosen, "copy");
    assert_int_equal(create_env("copy", "bogus", 0, &chosen), -ENOENT);
    /* ZC_POOL_IGNORE_ENV: a bad ZC_BACKEND is not even read */
    assert_int_equal(create_env("bogus", NULL, ZC_POOL_IGNORE_ENV, &chosen), 0);
    assert_true(in_list(chosen));
}

static void size_options_accept_suffixes(void **state)
{
    (void)state;
    size_t v = 0;
    assert_int_equal(zc__parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(zc__parse_size("64k", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(zc__parse_size("64KiB", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(zc__parse_size("3M", &v), 0);
    assert_int_equal(v, 3u << 20);
    assert_int_equal(zc__parse_size("2g", &v), 0);
    assert_int_equal(v, (size_t)2 << 30);
    assert_int_equal(zc__parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(zc__parse_size("", &v), -EINVAL);
    assert_int_equal(zc__parse_size("k", &v), -EINVAL);
    assert_int_equal(zc__parse_size("-5", &v), -EINVAL);
    assert_int_equal(zc__parse_size("12x", &v), -EINVAL);
    assert_int_equal(zc__parse_size("12 k", &v), -EINVAL);
    assert_int_equal(zc__parse_size("99999999999999999999", &v), -EINVAL);
    assert_int_equal(zc__parse_size("17179869184g", &v), -EINVAL);

    setenv("ZC_ARENA_SIZE", "64m", 1);
    setenv("ZC_PAGEBLOCK_SIZE", "128k", 1);
    setenv("ZC_COPY_THRESHOLD", "16k", 1);
    zc_pool *pool = NULL;
    assert_int_equal(zc_pool_create(&pool, NULL), 0);
    assert_int_equal(pool->arena_size, 64u << 20);
    assert_int_equal(pool->cfg.pageblock_size, 128u << 10);
    assert_int_equal(pool->copy_threshold, 16u << 10);
    zc_pool_destroy(pool);
    setenv("ZC_ARENA_SIZE", "64q", 1);
    assert_int_equal(zc_pool_create(&pool, NULL), -EINVAL);
    assert_null(pool);
    unsetenv("ZC_ARENA_SIZE");
    unsetenv("ZC_PAGEBLOCK_SIZE");
    unsetenv("ZC_COPY_THRESHOLD");
}

/* Run as a setuid program: the environment must be ignored. */
static int child_main(void)
{
    zc_pool *pool = NULL;
    int rc = zc_pool_create(&pool, NULL);
    printf("secure=%lu rc=%d backend=%s\n", getauxval(AT_SECURE), rc,
           rc == 0 ? zc_backend_name(pool) : "-");
    zc_pool_destroy(pool);
    fflush(stdout);
    /* no atexit work: leak checkers cannot run in a setuid process */
    _exit(rc == 0 ? 0 : 1);
}

static char self_path[4096];

static void setuid_programs_ignore_environment(void **state)
{
    (void)state;
    struct passwd *nobody = getpwnam("nobody");
    if (geteuid() != 0 || !nobody) {
        printf("SKIP: needs root and a 'nobody' user to make a setuid copy\n");
        skip();
    }
    char dir[] = "/tmp/zc-setuid-XXXXXX";
    assert_non_null(mkdtemp(dir));
    chmod(dir, 0755);
    char exe[512], cmd[4096 + 1024];
    snprintf(exe, sizeof(exe), "%s/test_backend", dir);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", self_path, exe);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(chown(exe, nobody->pw_uid, nobody->pw_gid), 0);
    assert_int_equal(chmod(exe, 04755), 0);
    snprintf(cmd, sizeof(cmd),
             "ZC_BACKEND=bogus ZC_ARENA_SIZE=junk ASAN_OPTIONS=detect_leaks=0 '%s' --child", exe);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char line[256] = "";
    char *got = fgets(line, sizeof(line), f);
    int status = pclose(f);
    unlink(exe);
    rmdir(dir);
    assert_non_null(got);
    if (strncmp(line, "secure=1", 8) != 0) {
        printf("SKIP: setuid bit not honoured here (%s)\n", line);
        skip();
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_non_null(strstr(line, "rc=0"));
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--child") == 0)
        return child_main();
    if (!realpath(argv[0], self_path))
        return 2;
    unsetenv("ZC_ARENA_SIZE");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auto_picks_first_available),
        cmocka_unit_test(named_backend_is_that_or_an_error),
        cmocka_unit_test(unknown_and_malformed_names_fail),
        cmocka_unit_test(lists_are_tried_in_order),
        cmocka_unit_test(config_field_and_ignore_env),
        cmocka_unit_test(size_options_accept_suffixes),
        cmocka_unit_test(setuid_programs_ignore_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
