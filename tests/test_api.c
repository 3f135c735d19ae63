/* SPDX-License-Identifier: MIT */
/* Version, errors and configuration checks of the public API. */
#include <errno.h>
#include <string.h>

#include "common.h"

static void version_matches_header(void **state)
{
    (void)state;
    assert_int_equal(zc_version(), ZCOPY_VERSION_NUMBER);
    assert_string_equal(zc_version_string(), ZCOPY_VERSION_STRING);
    assert_int_equal(ZCOPY_VERSION_NUMBER,
                     ZCOPY_VERSION_MAJOR * 10000 + ZCOPY_VERSION_MINOR * 100 + ZCOPY_VERSION_PATCH);
}

static void strerror_takes_both_signs(void **state)
{
    (void)state;
    assert_string_equal(zc_strerror(-EINVAL), zc_strerror(EINVAL));
    assert_string_equal(zc_strerror(ENOENT), strerror(ENOENT));
    assert_string_equal(zc_strerror(0), "Success");
    assert_non_null(zc_strerror(99999));
}

static void config_init_sets_size(void **state)
{
    (void)state;
    struct zc_pool_config cfg;
    memset(&cfg, 0xff, sizeof(cfg));
    zc_pool_config_init(&cfg);
    assert_int_equal(cfg.struct_size, sizeof(cfg));
    assert_null(cfg.backend);
    assert_int_equal(cfg.arena_capacity, 0);
    assert_int_equal(cfg.flags, 0);
}

static int create_with(struct zc_pool_config *cfg)
{
    zc_pool *pool = (zc_pool *)0x1;
    int rc = zc_pool_create(&pool, cfg);
    if (rc == 0)
        zc_pool_destroy(pool);
    else
        assert_null(pool);
    return rc;
}

static void bad_configs_are_rejected(void **state)
{
    (void)state;
    struct zc_pool_config cfg;
    assert_int_equal(zc_pool_create(NULL, NULL), -EINVAL);
    assert_int_equal(errno, EINVAL);

    zc_pool_config_init(&cfg);
    cfg.flags = ZC_POOL_IGNORE_ENV | (1u << 30);
    assert_int_equal(create_with(&cfg), -EINVAL);

    zc_pool_config_init(&cfg);
    cfg.flags = ZC_POOL_IGNORE_ENV;
    cfg.pageblock_size = 12345;
    assert_int_equal(create_with(&cfg), -EINVAL);
    cfg.pageblock_size = 8192;
    assert_int_equal(create_with(&cfg), -EINVAL);
    cfg.pageblock_size = (4u << 20) + 4096;
    assert_int_equal(create_with(&cfg), -EINVAL);

    zc_pool_config_init(&cfg);
    cfg.flags = ZC_POOL_IGNORE_ENV;
    cfg.arena_capacity = 4096;
    assert_int_equal(create_with(&cfg), -EINVAL);
    cfg.arena_capacity = (64u << 20) + 1;
    assert_int_equal(create_with(&cfg), -EINVAL);

    zc_pool_config_init(&cfg);
    cfg.struct_size = 3;
    assert_int_equal(create_with(&cfg), -EINVAL);

    zc_pool_config_init(&cfg);
    cfg.flags = ZC_POOL_IGNORE_ENV;
    cfg.arena_capacity = 64u << 20;
    cfg.pageblock_size = 128u << 10;
    assert_int_equal(create_with(&cfg), 0);
    cfg.pageblock_size = 4u << 20;
    assert_int_equal(create_with(&cfg), 0);
}

static void null_pool_is_einval(void **state)
{
    (void)state;
    char buf[8];
    struct zc_stats st;
    errno = 0;
    assert_null(zc_alloc(NULL, 8));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(zc_free(NULL, buf), -EINVAL);
    assert_int_equal(zc_free(NULL, NULL), 0);
    assert_int_equal(zc_seal(NULL, buf), -EINVAL);
    assert_false(zc_owns(NULL, buf));
    errno = 0;
    assert_int_equal(zc_send(NULL, 0, buf, 1, 0), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(zc_sendmsg(NULL, 0, NULL, 0), -1);
    assert_int_equal(zc_poll(NULL, 0), -EINVAL);
    assert_null(zc_backend_name(NULL));
    assert_int_equal(zc_stats(NULL, &st), -EINVAL);
    assert_int_equal(zc_pool_destroy(NULL), 0);

    zc_pool *pool = test_pool("copy", 0, 0);
    assert_int_equal(zc_stats(pool, NULL), -EINVAL);
    assert_int_equal(zc_poll(pool, -1), -EINVAL);
    assert_int_equal(zc_poll(pool, 0), 0);
    errno = 0;
    assert_null(zc_alloc(pool, 0));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(zc_sendmsg(pool, 0, NULL, 0), -1);
    assert_int_equal(errno, EINVAL);
    zc_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(version_matches_header),
        cmocka_unit_test(strerror_takes_both_signs),
        cmocka_unit_test(config_init_sets_size),
        cmocka_unit_test(bad_configs_are_rejected),
        cmocka_unit_test(null_pool_is_einval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
